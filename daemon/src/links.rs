//! Worker links: each notification carries a short link to the incident's page on this box.
//! No login — the link is the credential: it names the incident and an expiry and is signed
//! with HMAC-SHA256 under the box's link secret, so a forged, altered or expired link is
//! refused. A link made for one member of the roster also names that member (`m=<id>`, signed
//! with the rest): what is done through it is recorded as that member's action.
//!
//! Every link also has a short form for SMS, `/i/<incident>.<expiry, base 36>.<first 20 hex
//! digits of the signature>[.<member>]` (about 50 characters instead of 120: a Chinese SMS part
//! holds 70). It is the same link cut down — [`shorten`] needs no secret and no storage — and
//! `/i/…` checks the 80 signature bits it carries against the full signature before it
//! redirects to the full link ([`WorkerLinks::expand`]); 2^80 guesses over the network are out of
//! reach, so the shorter signature is no weaker in practice.
//!
//! Links are signed and checked by the same [`Signer`] as the actions on the MQTT ack topic
//! (`crate::sources::mqtt::incident_acks`), under their own purpose (`gridwatch-link-v2`), with the fields
//! incident, expiry and — on a member's link — the member id, each length-prefixed.
//! (Links signed by a gridwatch before the length-prefixed encoding no longer verify; they
//! expire within `link_valid_hours` anyway.)
//!
//! A link signed while the box's clock was not set carries an expiry on that clock; once NTP
//! steps it, the expiry is read through the step ([`crate::link_clock`]), so the first alarm's
//! links of a box booted at 1970 still open for their full life.

use crate::signing::Signer;
use std::time::Duration;

/// The purpose signed first: a link signature is no ack signature, even under the same secret.
const PURPOSE: &str = "gridwatch-link-v2";
/// The purpose of a district box's links, which sign the box's id too: every box of a district
/// shares the secret the hub holds, so a link to one box's incident 7 must not open another's.
const BOX_PURPOSE: &str = "gridwatch-box-link-v1";

#[derive(Clone)]
pub struct WorkerLinks {
    /// How workers' phones reach this box, e.g. `http://10.8.0.5:9181`.
    pub public_url: reqwest::Url,
    signer: Signer,
    /// The district box these links belong to (`[cluster] box_id`), signed with the rest; none
    /// on a box alone.
    box_id: Option<String>,
    pub valid: Duration,
    /// The steps of the box's clock, shared by every clone (the dispatcher signs, the web
    /// pages check).
    pub clock_steps: crate::link_clock::LinkClock,
}

impl std::fmt::Debug for WorkerLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLinks").field("public_url", &self.public_url.as_str()).field("valid", &self.valid).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link has expired; ask for a new one")]
    Expired,
    #[error("this link is not valid")]
    BadSignature,
}

impl WorkerLinks {
    pub fn new(public_url: reqwest::Url, secret: &str, valid: Duration) -> WorkerLinks {
        WorkerLinks { public_url, signer: Signer::new(secret), box_id: None, valid, clock_steps: Default::default() }
    }

    /// The same links for box `box_id` of a district: its id is signed with the rest (the hub
    /// checks them for every box under one secret, [`crate::cluster::hub`]).
    pub fn for_box(self, box_id: &str) -> WorkerLinks {
        WorkerLinks { box_id: Some(box_id.to_string()), ..self }
    }

    /// The signed fields of a link: with a member, one field more (a group link is never a
    /// member's link, nor the other way round); a district box's links under their own purpose,
    /// with the box's id second.
    fn fields<'a>(&'a self, incident: &'a str, member: Option<&'a str>, expires: &'a str) -> Vec<&'a [u8]> {
        let mut fields = match &self.box_id {
            Some(box_id) => vec![BOX_PURPOSE.as_bytes(), box_id.as_bytes()],
            None => vec![PURPOSE.as_bytes()],
        };
        fields.extend([incident.as_bytes(), expires.as_bytes()]);
        fields.extend(member.map(str::as_bytes));
        fields
    }

    /// The signed path and query for an incident (for `member`, if given), valid from `now_secs`.
    pub fn path(&self, incident: i64, member: Option<&str>, now_secs: i64) -> String {
        self.path_until(incident, member, now_secs + self.valid_secs())
    }

    fn valid_secs(&self) -> i64 {
        i64::try_from(self.valid.as_secs()).unwrap_or(i64::MAX)
    }

    /// Links are about to be signed on `clock`: see [`crate::link_clock::LinkClock::signing`].
    pub fn signing_on(&self, clock: &crate::clock::Clock) {
        let now_secs = clock.now().div_euclid(1000);
        self.clock_steps.signing(clock, now_secs.saturating_add(self.valid_secs()), self.valid_secs());
    }

    /// Measures a step of `clock` since links were signed by it unset (before links are checked
    /// on it, and every second in the dispatcher, which keeps the steps in the store).
    pub fn measure_clock_step(&self, clock: &crate::clock::Clock) {
        self.clock_steps.measure(clock, self.valid_secs());
    }

    /// Whether a link that says `expires` has expired at `now_secs` (read through the clock's
    /// steps when an unset clock signed it).
    fn expired(&self, expires: i64, now_secs: i64) -> bool {
        now_secs > self.clock_steps.true_expiry(expires)
    }

    /// The full signed path of a short link's code (see [`shorten`]), once its signature bits
    /// and expiry check out.
    pub fn expand(&self, code: &str, now_secs: i64) -> Result<String, LinkError> {
        let mut parts = code.splitn(4, '.');
        let (Some(incident), Some(expires), Some(signature)) = (parts.next(), parts.next(), parts.next()) else { return Err(LinkError::BadSignature) };
        let member = parts.next();
        let (Ok(incident), Ok(expires)) = (incident.parse::<i64>(), i64::from_str_radix(expires, 36)) else { return Err(LinkError::BadSignature) };
        let full = self.signer.sign(&self.fields(&incident.to_string(), member, &expires.to_string()));
        let given = signature.to_ascii_lowercase();
        // Compared in constant time, like the full signature.
        let differs = full.bytes().take(SHORT_SIGNATURE_HEX).zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if given.len() != SHORT_SIGNATURE_HEX || differs != 0 {
            return Err(LinkError::BadSignature);
        }
        if self.expired(expires, now_secs) {
            return Err(LinkError::Expired);
        }
        Ok(self.path_until(incident, member, expires))
    }

    fn path_until(&self, incident: i64, member: Option<&str>, expires: i64) -> String {
        let signature = self.signer.sign(&self.fields(&incident.to_string(), member, &expires.to_string()));
        let mut query = reqwest::Url::parse("http://link/").expect("a valid base");
        {
            let mut pairs = query.query_pairs_mut();
            if let Some(member) = member {
                pairs.append_pair("m", member);
            }
            pairs.append_pair("exp", &expires.to_string()).append_pair("sig", &signature);
        }
        format!("/incident/{incident}?{}", query.query().unwrap_or_default())
    }

    /// The full link, bound to nobody (for operators and group channels without a roster).
    pub fn link(&self, incident: i64, now_secs: i64) -> String {
        self.full(&self.path(incident, None, now_secs))
    }

    /// The full link for one member of the roster, by member id.
    pub fn member_link(&self, incident: i64, member: &str, now_secs: i64) -> String {
        self.full(&self.path(incident, Some(member), now_secs))
    }

    fn full(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.as_str().trim_end_matches('/'))
    }

    /// Checks a link's expiry and signature (in constant time); `member` is the link's `m`.
    pub fn verify(&self, incident: i64, member: Option<&str>, expires: i64, signature: &str, now_secs: i64) -> Result<(), LinkError> {
        if !self.signer.verify(&self.fields(&incident.to_string(), member, &expires.to_string()), signature) {
            return Err(LinkError::BadSignature);
        }
        if self.expired(expires, now_secs) {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// Hex digits of the signature a short link keeps (80 bits).
const SHORT_SIGNATURE_HEX: usize = 20;

/// The short form of a full link (`…/incident/42?m=wang&exp=…&sig=…` → `…/i/42.tq2abc.1a2b….wang`,
/// under the same base path);
/// a link it cannot read comes back as it was.
pub fn shorten(link: &str) -> String {
    let short = || -> Option<String> {
        let url = reqwest::Url::parse(link).ok()?;
        // A base with a path (a hub's `/b/<box>`) keeps it: `…/b/<box>/incident/7` → `…/b/<box>/i/…`.
        let (base, incident) = url.path().rsplit_once("/incident/")?;
        let incident: i64 = incident.parse().ok()?;
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let expires: u64 = query.get("exp")?.parse().ok()?;
        let signature = query.get("sig")?.get(..SHORT_SIGNATURE_HEX)?;
        let mut code = format!("{incident}.{}.{signature}", base36(expires));
        if let Some(member) = query.get("m") {
            code.push('.');
            code.push_str(member);
        }
        let mut short = url.clone();
        short.set_query(None);
        short.set_path(&format!("{base}/i/"));
        short.path_segments_mut().ok()?.pop().push(&code);
        Some(short.to_string())
    };
    short().unwrap_or_else(|| link.to_string())
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> WorkerLinks {
        WorkerLinks::new("http://10.8.0.5:9181/".parse().unwrap(), "s3cret", Duration::from_secs(3600))
    }

    fn parts(link: &str) -> (i64, i64, String) {
        let (id, _, exp, sig) = member_parts(link);
        (id, exp, sig)
    }

    fn member_parts(link: &str) -> (i64, Option<String>, i64, String) {
        let url: reqwest::Url = link.parse().unwrap();
        let id = url.path().rsplit('/').next().unwrap().parse().unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        (id, query.get("m").cloned(), query["exp"].parse().unwrap(), query["sig"].clone())
    }

    #[test]
    fn a_fresh_link_is_accepted() {
        let link = links().link(42, 1_000);
        assert!(link.starts_with("http://10.8.0.5:9181/incident/42?exp=4600&sig="), "{link}");
        let (id, exp, sig) = parts(&link);
        assert_eq!(links().verify(id, None, exp, &sig, 1_500), Ok(()));
    }

    #[test]
    fn expired_altered_or_forged_links_are_refused() {
        let (id, exp, sig) = parts(&links().link(42, 1_000));
        assert_eq!(links().verify(id, None, exp, &sig, 4_601), Err(LinkError::Expired));
        assert_eq!(links().verify(43, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "another incident");
        assert_eq!(links().verify(id, None, exp + 86_400, &sig, 1_500), Err(LinkError::BadSignature), "a longer life");
        assert_eq!(links().verify(id, None, exp, "zz", 1_500), Err(LinkError::BadSignature));
        let other = WorkerLinks::new("http://x/".parse().unwrap(), "another secret", Duration::from_secs(3600));
        assert_eq!(other.verify(id, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "another box's secret");
    }

    #[test]
    fn a_link_signature_is_no_ack_signature_under_the_same_secret() {
        let acks = crate::sources::mqtt::incident_acks::AckConfig::new("t".into(), "s3cret");
        let (id, exp, sig) = parts(&links().link(42, 1_000));
        let as_ack = serde_json::json!({"incident": id, "action": "resolve", "by": "x", "ts": exp, "sig": sig});
        assert_eq!(acks.verify(&serde_json::to_vec(&as_ack).unwrap(), exp * 1000).unwrap_err(), crate::sources::mqtt::incident_acks::Refusal::BadSignature);
    }

    #[test]
    fn a_short_link_expands_to_the_full_link_and_nothing_else() {
        let full = links().link(42, 1_000);
        let short = shorten(&full);
        assert_eq!(short.len(), "http://10.8.0.5:9181/i/42.3js.".len() + 20, "{short}");
        let code = short.rsplit('/').next().unwrap();
        assert_eq!(format!("http://10.8.0.5:9181{}", links().expand(code, 1_500).unwrap()), full);
        assert_eq!(links().expand(code, 4_601), Err(LinkError::Expired));
        let altered = code.replacen("42.", "43.", 1);
        assert_eq!(links().expand(&altered, 1_500), Err(LinkError::BadSignature), "another incident");
        let longer = code.replacen(".3js.", ".zzzz.", 1);
        assert_eq!(links().expand(&longer, 1_500), Err(LinkError::BadSignature), "a longer life");
        assert_eq!(links().expand(&code[..code.len() - 1], 1_500), Err(LinkError::BadSignature), "fewer signature bits");
        for junk in ["", "42", "42.x", "x.y.z", "42.3js.zz"] {
            assert_eq!(links().expand(junk, 1_500), Err(LinkError::BadSignature), "{junk}");
        }
        let member = links().member_link(42, "王芳", 1_000);
        let short = shorten(&member);
        let code = short.rsplit('/').next().unwrap();
        let code = percent_decode(code);
        assert_eq!(format!("http://10.8.0.5:9181{}", links().expand(&code, 1_500).unwrap()), member);
        assert_eq!(links().expand(&code.replace("王芳", "li"), 1_500), Err(LinkError::BadSignature), "another member");
        assert_eq!(shorten("http://box/incident/12?exp=1&sig=ab"), "http://box/incident/12?exp=1&sig=ab", "unreadable: as it was");
    }

    fn percent_decode(text: &str) -> String {
        let url = reqwest::Url::parse(&format!("http://x/?c={text}")).unwrap();
        url.query_pairs().next().unwrap().1.into_owned()
    }

    #[test]
    fn a_district_box_signs_its_id_into_its_links() {
        let east = links().for_box("east");
        let (id, exp, sig) = parts(&east.link(42, 1_000));
        assert_eq!(east.verify(id, None, exp, &sig, 1_500), Ok(()));
        assert_eq!(links().for_box("west").verify(id, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "another box of the district");
        assert_eq!(links().verify(id, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "a box alone");
        let (id, exp, sig) = parts(&links().link(42, 1_000));
        assert_eq!(east.verify(id, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "a box alone's link at a district box");
    }

    #[test]
    fn a_short_link_keeps_the_base_path_of_a_hub() {
        let hub = WorkerLinks::new("http://hub:8440/b/east/".parse().unwrap(), "s3cret", Duration::from_secs(3600)).for_box("east");
        let full = hub.link(42, 1_000);
        assert!(full.starts_with("http://hub:8440/b/east/incident/42?exp=4600&sig="), "{full}");
        let short = shorten(&full);
        assert!(short.starts_with("http://hub:8440/b/east/i/42.3js."), "{short}");
        let code = short.rsplit('/').next().unwrap();
        assert_eq!(format!("http://hub:8440/b/east{}", hub.expand(code, 1_500).unwrap()), full);
    }

    #[test]
    fn a_member_link_works_only_for_that_member() {
        let link = links().member_link(42, "wang", 1_000);
        assert!(link.starts_with("http://10.8.0.5:9181/incident/42?m=wang&exp=4600&sig="), "{link}");
        let (id, member, exp, sig) = member_parts(&link);
        assert_eq!(member.as_deref(), Some("wang"));
        assert_eq!(links().verify(id, Some("wang"), exp, &sig, 1_500), Ok(()));
        assert_eq!(links().verify(id, Some("li"), exp, &sig, 1_500), Err(LinkError::BadSignature), "another member");
        assert_eq!(links().verify(id, None, exp, &sig, 1_500), Err(LinkError::BadSignature), "the member cut off");
        let (_, _, group_exp, group_sig) = member_parts(&links().link(42, 1_000));
        assert_eq!(links().verify(42, Some("wang"), group_exp, &group_sig, 1_500), Err(LinkError::BadSignature), "a member added to a group link");
        let chinese = links().member_link(42, "王芳", 1_000);
        let (_, member, exp, sig) = member_parts(&chinese);
        assert_eq!(links().verify(42, member.as_deref(), exp, &sig, 1_500), Ok(()), "{chinese}");
    }
}
