//! Worker links: each notification carries a short link to the incident's page on this box.
//! No login — the link is the credential: it names the incident and an expiry and is signed
//! with HMAC-SHA256 under the box's link secret, so a forged, altered or expired link is
//! refused. A link made for one member of the roster also names that member (`m=<id>`, signed
//! with the rest): what is done through it is recorded as that member's action.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

#[derive(Clone)]
pub struct WorkerLinks {
    /// How workers' phones reach this box, e.g. `http://10.8.0.5:9181`.
    pub public_url: reqwest::Url,
    secret: Vec<u8>,
    pub valid: Duration,
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
        WorkerLinks { public_url, secret: secret.as_bytes().to_vec(), valid }
    }

    fn mac(&self, incident: i64, member: Option<&str>, expires: i64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        match member {
            // The member id's length goes first, so no id and expiry can pass for another.
            Some(member) => mac.update(format!("incident:{incident}:member:{}:{member}:{expires}", member.len()).as_bytes()),
            None => mac.update(format!("incident:{incident}:{expires}").as_bytes()),
        }
        mac
    }

    /// The signed path and query for an incident (for `member`, if given), valid from `now_secs`.
    pub fn path(&self, incident: i64, member: Option<&str>, now_secs: i64) -> String {
        let expires = now_secs + self.valid.as_secs() as i64;
        let signature: String = self.mac(incident, member, expires).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
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
        let bytes: Option<Vec<u8>> = (0..signature.len())
            .step_by(2)
            .map(|i| signature.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        let bytes = bytes.ok_or(LinkError::BadSignature)?;
        self.mac(incident, member, expires).verify_slice(&bytes).map_err(|_| LinkError::BadSignature)?;
        if now_secs > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
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
