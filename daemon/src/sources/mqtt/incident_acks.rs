//! Workers' actions relayed by a hub: a central hub that serves the workers' pages for boxes
//! behind 4G NAT publishes each action as a signed JSON message on this box's ack topic (or, in
//! a district, on the box's NATS work queue: [`crate::cluster`]), and the box applies it to the
//! incident like a press of the button on its own page ([`apply`], for both ways).
//!
//! ```json
//! {"incident": 12, "action": "accept", "by": "王芳 13800000001", "note": "on my way",
//!  "ts": 1795392000000, "sig": "<hex HMAC-SHA256>"}
//! ```
//!
//! `action` is accept, on-site, resolve or close; `sig` is the [`Signer`] signature (HMAC-SHA256
//! under the shared `ack_secret`, length-prefixed fields) of `gridwatch-ack-v2`, incident (decimal
//! text), action, by, note (empty when absent) and ts (decimal text).
//!
//! A district box (`[cluster]`, [`AckConfig::for_box`]) shares its secret with every box of the
//! district, so its actions name the box: `"box": "<box_id>"` in the JSON, signed under
//! `gridwatch-box-ack-v1` with the box id second (then incident, action, by, note, ts). It
//! refuses an action for another box (`other_box`) and one that names no box (`bad_signature`);
//! a box alone refuses one that names a box.
//!
//! A message with a wrong signature, older than a day or more than five minutes in the future is
//! refused; so is a signature already used ([`AckConfig::remember_until`] says how long the store
//! keeps it). The age is judged against the time the message was sent to the box: the box's
//! clock on the ack topic, the time JetStream stored it for an action relayed by the district
//! ([`crate::cluster::actions`]), so a box whose clock is off still takes it. Each refusal is
//! counted (`gridwatch_incident_acks_total{reason}`); the message is still acknowledged to the
//! broker so it does not come back.

use crate::dispatch::incident::Action;
use crate::signing::Signer;
use serde::Deserialize;

/// The purpose signed first: an ack signature is no link signature, even under the same secret.
pub const PURPOSE: &str = "gridwatch-ack-v2";
/// The purpose of a district box's actions, which sign the box's id too: every box of a district
/// shares the secret, so an action for one box's incident 7 must not apply to another's.
pub const BOX_PURPOSE: &str = "gridwatch-box-ack-v1";

/// Oldest message accepted (the hub may have queued it while the box was offline).
const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// Clock skew tolerated for messages "from the future".
const MAX_AHEAD_MS: i64 = 5 * 60 * 1000;

/// The ack topic and its key.
#[derive(Clone)]
pub struct AckConfig {
    /// None: the actions come only from the district hub (`[cluster]`), not over MQTT.
    pub topic: Option<String>,
    signer: Signer,
    /// The district box these actions are for (`[cluster] box_id`), named and signed in each;
    /// none on a box alone.
    box_id: Option<String>,
}

impl std::fmt::Debug for AckConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckConfig").field("topic", &self.topic).field("box_id", &self.box_id).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckMessage {
    /// The district box the action is for; none from a hub of a box alone.
    #[serde(default, rename = "box")]
    pub box_id: Option<String>,
    pub incident: i64,
    pub action: String,
    pub by: String,
    #[serde(default)]
    pub note: Option<String>,
    pub ts: i64,
    pub sig: String,
}

/// A verified action, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub incident: i64,
    pub action: Action,
    pub by: String,
    pub note: Option<String>,
    /// The message's signature (lower-case hex), to be remembered as used.
    pub signature: String,
    /// The hub's time for the message: the signature is remembered as long as the message could
    /// be accepted ([`AckConfig::remember_until`]).
    pub ts: i64,
}

/// Why a message was refused (the label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    BadSignature,
    Stale,
    UnknownAction,
    /// The signature was used before: the same message again.
    Replayed,
    /// A district's action signed for another box of the district.
    OtherBox,
}

impl Refusal {
    /// Every refusal, so `/metrics` can show each at 0 from start.
    pub const ALL: [Refusal; 6] = [Refusal::Malformed, Refusal::BadSignature, Refusal::Stale, Refusal::UnknownAction, Refusal::Replayed, Refusal::OtherBox];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::UnknownAction => "unknown_action",
            Refusal::Replayed => "replayed",
            Refusal::OtherBox => "other_box",
        }
    }
}

impl AckConfig {
    pub fn new(topic: String, secret: &str) -> AckConfig {
        AckConfig { topic: Some(topic), signer: Signer::new(secret), box_id: None }
    }

    /// The key of actions relayed by the district hub only.
    pub fn without_topic(secret: &str) -> AckConfig {
        AckConfig { topic: None, signer: Signer::new(secret), box_id: None }
    }

    /// The same key for box `box_id` of a district: its actions name the box and sign its id
    /// (the hub signs them for every box under one secret, [`crate::cluster::hub`]).
    pub fn for_box(self, box_id: &str) -> AckConfig {
        AckConfig { box_id: Some(box_id.to_string()), ..self }
    }

    /// The district box these actions are for (the JSON's `box`); none on a box alone.
    pub fn box_id(&self) -> Option<&str> {
        self.box_id.as_deref()
    }

    /// The purpose its actions are signed under, and their signatures recorded as used under.
    pub fn purpose(&self) -> &'static str {
        if self.box_id.is_some() {
            BOX_PURPOSE
        } else {
            PURPOSE
        }
    }

    /// The signature of a message's fields (what a hub computes), for this config's box if any.
    pub fn sign(&self, incident: i64, action: &str, by: &str, note: Option<&str>, ts: i64) -> String {
        let (incident, ts) = (incident.to_string(), ts.to_string());
        self.signer.sign(&signed_fields(self.box_id.as_deref(), &incident, action, by, note, &ts))
    }

    /// Until when a message's signature must be remembered: past it the message is stale by
    /// either its own time or the time it was first seen (a box clock stepping back a little does
    /// not reopen the window).
    pub fn remember_until(ts: i64, now_ms: i64) -> i64 {
        ts.max(now_ms).saturating_add(MAX_AGE_MS + MAX_AHEAD_MS)
    }

    /// Parses and checks a message sent to this box at `sent_ms` (its age is judged against it;
    /// whether its signature was used before is for the store to say:
    /// [`crate::store::Store::use_signature`]).
    pub fn verify(&self, payload: &[u8], sent_ms: i64) -> Result<Verified, Refusal> {
        let message: AckMessage = serde_json::from_slice(payload).map_err(|_| Refusal::Malformed)?;
        // A district box takes only actions that name a box, a box alone only those that do not:
        // each format is signed under its own purpose.
        if message.box_id.is_some() != self.box_id.is_some() {
            return Err(Refusal::BadSignature);
        }
        let (incident, ts) = (message.incident.to_string(), message.ts.to_string());
        let fields = signed_fields(message.box_id.as_deref(), &incident, &message.action, &message.by, message.note.as_deref(), &ts);
        if !self.signer.verify(&fields, &message.sig) {
            return Err(Refusal::BadSignature);
        }
        // Signed by the district, for another of its boxes.
        if message.box_id != self.box_id {
            return Err(Refusal::OtherBox);
        }
        if message.ts < sent_ms.saturating_sub(MAX_AGE_MS) || message.ts > sent_ms.saturating_add(MAX_AHEAD_MS) {
            return Err(Refusal::Stale);
        }
        let action = match message.action.as_str() {
            "accept" => Action::Accept,
            "on-site" | "on_site" => Action::OnSite,
            "resolve" => Action::Resolve,
            "close" => Action::Close,
            _ => return Err(Refusal::UnknownAction),
        };
        let signature = message.sig.to_ascii_lowercase();
        Ok(Verified { incident: message.incident, action, by: message.by, note: message.note.filter(|n| !n.is_empty()), signature, ts: message.ts })
    }
}

/// How a relayed action ended (the `reason` label of `incident_acks`).
enum AckResult {
    Applied(i64, String),
    NotApplicable(String),
    Refused(Refusal),
    /// The store could not record the signature: nothing happened, the action may come again.
    Unrecorded(String),
}

/// Whether the store settled a relayed action (applied, refused or not applicable), so its
/// carrier may forget it; `false`: nothing was recorded, deliver it again.
pub type Settled = bool;

/// Verifies a worker's action relayed from a hub (`via` says how, for the log), its age against
/// `sent_ms` (when it was sent to this box: see [`AckConfig::verify`]), records its signature as
/// used (a replay, also after a restart, is refused) and applies it to its incident at `now`, the
/// box's clock. Each outcome is counted.
pub async fn apply(
    acks: &AckConfig,
    store: &crate::store::Store,
    payload: &[u8],
    metrics: &crate::metrics::Metrics,
    now: i64,
    sent_ms: i64,
    via: &str,
) -> Settled {
    let purpose = acks.purpose();
    let result = match acks.verify(payload, sent_ms) {
        Ok(verified) => {
            // A signature an earlier run used on a store copied into memory is used again first.
            store.wait_for_kept_steps().await;
            let store = store.clone();
            let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<AckResult> {
                // Used before it is applied: a crash between the two loses the action (the hub
                // sends it again with a new time) but never applies one twice. Kept by the box's
                // clock, which the store purges by.
                if !store.use_signature(purpose, &verified.signature, AckConfig::remember_until(verified.ts, now), now)? {
                    return Ok(AckResult::Refused(Refusal::Replayed));
                }
                let actor = format!("{} (hub)", verified.by);
                Ok(match store.incident_action(verified.incident, verified.action, &actor, verified.note.as_deref(), now) {
                    Ok(state) => AckResult::Applied(verified.incident, state.to_string()),
                    Err(error) => AckResult::NotApplicable(format!("{error:#}")),
                })
            })
            .await;
            match applied {
                Ok(Ok(result)) => result,
                Ok(Err(error)) => AckResult::Unrecorded(format!("{error:#}")),
                Err(error) => AckResult::Unrecorded(error.to_string()),
            }
        }
        Err(refusal) => AckResult::Refused(refusal),
    };
    let (reason, settled) = match result {
        AckResult::Applied(incident, state) => {
            tracing::info!(incident, state = %state, via, "worker's action applied");
            ("applied", true)
        }
        AckResult::NotApplicable(error) => {
            tracing::warn!(error = %error, via, "worker's action not applied");
            ("not_applicable", true)
        }
        AckResult::Refused(refusal) => {
            tracing::warn!(reason = refusal.as_str(), via, "worker's action refused");
            (refusal.as_str(), true)
        }
        AckResult::Unrecorded(error) => {
            tracing::warn!(error = %error, via, "worker's action not recorded by the store");
            ("not_applicable", false)
        }
    };
    metrics.incident_acks.get_or_create(&crate::metrics::ReasonLabel { reason: reason.into() }).inc();
    settled
}

/// The fields an ack signs, in order: a district box's under their own purpose, with the box's
/// id second.
fn signed_fields<'a>(box_id: Option<&'a str>, incident: &'a str, action: &'a str, by: &'a str, note: Option<&'a str>, ts: &'a str) -> Vec<&'a [u8]> {
    let mut fields = match box_id {
        Some(box_id) => vec![BOX_PURPOSE.as_bytes(), box_id.as_bytes()],
        None => vec![PURPOSE.as_bytes()],
    };
    fields.extend([incident.as_bytes(), action.as_bytes(), by.as_bytes(), note.unwrap_or("").as_bytes(), ts.as_bytes()]);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_392_000_000;

    fn message(config: &AckConfig, action: &str, ts: i64) -> Vec<u8> {
        let sig = config.sign(12, action, "王芳", Some("on my way"), ts);
        serde_json::to_vec(&serde_json::json!({"incident": 12, "action": action, "by": "王芳", "note": "on my way", "ts": ts, "sig": sig})).unwrap()
    }

    #[test]
    fn a_signed_fresh_message_is_accepted() {
        let config = AckConfig::new("gridwatch/acks/box-1".into(), "shared-secret-123");
        let verified = config.verify(&message(&config, "accept", NOW - 1000), NOW).unwrap();
        let signature = config.sign(12, "accept", "王芳", Some("on my way"), NOW - 1000);
        assert_eq!(verified, Verified { incident: 12, action: Action::Accept, by: "王芳".into(), note: Some("on my way".into()), signature, ts: NOW - 1000 });
    }

    #[test]
    fn text_moved_between_by_and_note_does_not_verify() {
        let config = AckConfig::new("t".into(), "shared-secret-123");
        let sig = config.sign(12, "resolve", "王芳", Some("x"), NOW);
        let moved = serde_json::json!({"incident": 12, "action": "resolve", "by": "王芳\nx", "note": "", "ts": NOW, "sig": sig});
        assert_eq!(config.verify(&serde_json::to_vec(&moved).unwrap(), NOW), Err(Refusal::BadSignature));
        let old_format = crate::signing::hex(&crate::signing::hmac_sha256(b"shared-secret-123", format!("12\nresolve\n王芳\nx\n{NOW}").as_bytes()));
        let old = serde_json::json!({"incident": 12, "action": "resolve", "by": "王芳", "note": "x", "ts": NOW, "sig": old_format});
        assert_eq!(config.verify(&serde_json::to_vec(&old).unwrap(), NOW), Err(Refusal::BadSignature), "the ambiguous newline format is gone");
    }

    #[test]
    fn a_signature_is_remembered_while_its_message_could_be_accepted() {
        assert_eq!(AckConfig::remember_until(NOW, NOW), NOW + MAX_AGE_MS + MAX_AHEAD_MS);
        assert_eq!(AckConfig::remember_until(NOW - 1000, NOW), NOW + MAX_AGE_MS + MAX_AHEAD_MS, "from the later of its time and ours");
        assert_eq!(AckConfig::remember_until(NOW + MAX_AHEAD_MS, NOW), NOW + MAX_AGE_MS + 2 * MAX_AHEAD_MS);
    }

    #[test]
    fn forged_altered_stale_and_broken_messages_are_refused() {
        let config = AckConfig::new("t".into(), "shared-secret-123");
        let other = AckConfig::new("t".into(), "another-secret");
        assert_eq!(config.verify(&message(&other, "accept", NOW), NOW), Err(Refusal::BadSignature), "forged");
        let altered = String::from_utf8(message(&config, "accept", NOW)).unwrap().replace("\"incident\":12", "\"incident\":13");
        assert_eq!(config.verify(altered.as_bytes(), NOW), Err(Refusal::BadSignature), "altered");
        assert_eq!(config.verify(&message(&config, "accept", NOW - MAX_AGE_MS - 1), NOW), Err(Refusal::Stale));
        assert_eq!(config.verify(&message(&config, "accept", NOW + MAX_AHEAD_MS + 1), NOW), Err(Refusal::Stale));
        assert_eq!(config.verify(&message(&config, "dance", NOW), NOW), Err(Refusal::UnknownAction));
        assert_eq!(config.verify(b"{\"incident\": 1", NOW), Err(Refusal::Malformed));
    }

    /// A district box's action, as the hub's pages write it.
    fn boxed(config: &AckConfig, box_id: &str, ts: i64) -> Vec<u8> {
        let sig = config.sign(12, "accept", "王芳", Some("on my way"), ts);
        serde_json::to_vec(&serde_json::json!({"box": box_id, "incident": 12, "action": "accept", "by": "王芳", "note": "on my way", "ts": ts, "sig": sig}))
            .unwrap()
    }

    #[test]
    fn a_district_box_s_action_names_the_box_and_signs_its_id() {
        let east = AckConfig::without_topic("shared-secret-123").for_box("east");
        assert_eq!((east.box_id(), east.purpose()), (Some("east"), BOX_PURPOSE));
        let verified = east.verify(&boxed(&east, "east", NOW), NOW).unwrap();
        assert_eq!((verified.incident, verified.action), (12, Action::Accept));
        let by_hand = crate::signing::Signer::new("shared-secret-123").sign(&[
            b"gridwatch-box-ack-v1",
            b"east",
            b"12",
            b"accept",
            "王芳".as_bytes(),
            b"on my way",
            NOW.to_string().as_bytes(),
        ]);
        assert_eq!(verified.signature, by_hand, "the purpose, then the box's id, then the fields of a box alone");
        let renamed = String::from_utf8(boxed(&east, "east", NOW)).unwrap().replace("\"box\":\"east\"", "\"box\":\"west\"");
        let west = AckConfig::without_topic("shared-secret-123").for_box("west");
        assert_eq!(west.verify(renamed.as_bytes(), NOW), Err(Refusal::BadSignature), "the box's id is signed");
    }

    #[test]
    fn another_box_s_action_is_refused_as_other_box() {
        let (east, west) = (AckConfig::without_topic("shared-secret-123").for_box("east"), AckConfig::without_topic("shared-secret-123").for_box("west"));
        assert_eq!(west.verify(&boxed(&east, "east", NOW), NOW), Err(Refusal::OtherBox));
        let forged = AckConfig::without_topic("a-guess-at-the-secret").for_box("east");
        assert_eq!(west.verify(&boxed(&forged, "east", NOW), NOW), Err(Refusal::BadSignature), "only a genuine action counts as another box's");
        assert!(Refusal::ALL.map(Refusal::as_str).contains(&"other_box"), "shown at 0 from start");
    }

    #[test]
    fn a_district_box_refuses_the_format_of_a_box_alone_and_the_other_way_round() {
        let alone = AckConfig::without_topic("shared-secret-123");
        let east = alone.clone().for_box("east");
        assert_eq!(east.verify(&message(&alone, "accept", NOW), NOW), Err(Refusal::BadSignature), "an action that names no box");
        assert_eq!(alone.verify(&boxed(&east, "east", NOW), NOW), Err(Refusal::BadSignature), "a box alone takes no district action");
        let v2_with_a_box = String::from_utf8(message(&alone, "accept", NOW)).unwrap().replacen('{', "{\"box\":\"east\",", 1);
        assert_eq!(east.verify(v2_with_a_box.as_bytes(), NOW), Err(Refusal::BadSignature), "a box added to an old-format action");
    }

    #[test]
    fn a_box_alone_takes_the_v2_format_byte_for_byte() {
        // As an MQTT integrator's hub sends it (docs/incidents.md): the signature over
        // `gridwatch-ack-v2`, incident, action, by, note, ts, length-prefixed.
        let payload = format!(
            r#"{{"incident": 12, "action": "on-site", "by": "王芳 13800000001", "note": "on my way", "ts": {NOW}, "sig": "{}"}}"#,
            crate::signing::hex(&crate::signing::hmac_sha256(
                b"shared-secret-123",
                &crate::signing::encode(&[b"gridwatch-ack-v2", b"12", b"on-site", "王芳 13800000001".as_bytes(), b"on my way", NOW.to_string().as_bytes()])
            ))
        );
        let config = AckConfig::new("gridwatch/acks/box-1".into(), "shared-secret-123");
        assert_eq!(config.purpose(), PURPOSE);
        let verified = config.verify(payload.as_bytes(), NOW).unwrap();
        assert_eq!((verified.incident, verified.action, verified.by.as_str()), (12, Action::OnSite, "王芳 13800000001"));
        assert_eq!(
            config.sign(12, "accept", "王芳", Some("on my way"), NOW),
            "86323684cf3a8b85601ca39a50927a2e79333128507ceeeef7d708c701ae7808",
            "docs/incidents.md"
        );
        let district = AckConfig::without_topic("shared-secret-123").for_box("east-canal");
        assert_eq!(
            district.sign(12, "accept", "王芳", Some("on my way"), NOW),
            "7f8c3c4e4e8115a7d9d11aa295eda7a8162e2839ec0edd072ffddc095e7db2e4",
            "docs/incidents.md"
        );
    }

    #[test]
    fn the_age_is_judged_against_the_time_given_not_the_message() {
        let east = AckConfig::without_topic("shared-secret-123").for_box("east");
        let behind = NOW - 10 * 60 * 1000;
        assert_eq!(east.verify(&boxed(&east, "east", NOW), behind), Err(Refusal::Stale), "ten minutes ahead of the time given");
        assert!(east.verify(&boxed(&east, "east", NOW), NOW).is_ok(), "sent now by the time given");
        assert!(east.verify(&boxed(&east, "east", NOW - MAX_AGE_MS + 1000), NOW).is_ok(), "within a day of the time given");
        assert_eq!(east.verify(&boxed(&east, "east", NOW - MAX_AGE_MS - 1), NOW), Err(Refusal::Stale));
    }

    #[tokio::test]
    async fn a_box_whose_clock_is_behind_applies_an_action_sent_now_and_stamps_it_on_its_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut fired = crate::alert::tests::sample_alert("fired", 0.5);
        fired.at_ms = NOW - 3_600_000;
        let id = store.apply_alert(&fired, 600_000).await.unwrap().incident().unwrap();
        let metrics = crate::metrics::Metrics::new();
        let east = AckConfig::without_topic("shared-secret-123").for_box("east");
        let sig = east.sign(id, "accept", "王芳", None, NOW);
        let payload = serde_json::to_vec(&serde_json::json!({"box": "east", "incident": id, "action": "accept", "by": "王芳", "ts": NOW, "sig": sig})).unwrap();
        // The box's clock ten minutes behind the stream's.
        let behind = NOW - 10 * 60 * 1000;
        assert!(apply(&east, &store, &payload, &metrics, behind, behind, "test").await, "settled");
        assert_eq!(store.incidents(false).unwrap()[0].state, "open", "judged by the box's clock: stale");
        assert!(apply(&east, &store, &payload, &metrics, behind, NOW, "test").await);
        assert_eq!(store.incidents(false).unwrap()[0].state, "accepted", "judged by the time it was sent");
        let history = store.incident_history(id).unwrap();
        assert_eq!((history.last().unwrap().actor.as_str(), history.last().unwrap().at_ms), ("王芳 (hub)", behind), "stamped on the box's clock");
        assert!(apply(&east, &store, &payload, &metrics, behind, NOW, "test").await);
        let text = metrics.render();
        for series in ["reason=\"stale\"} 1", "reason=\"applied\"} 1", "reason=\"replayed\"} 1"] {
            assert!(text.contains(&format!("gridwatch_incident_acks_total{{{series}")), "{series}: {text}");
        }
    }
}
