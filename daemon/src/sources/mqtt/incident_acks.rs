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
//! text), action, by, note (empty when absent) and ts (decimal text). A message with a wrong
//! signature, older than a day or more than five minutes in the future is refused; so is a
//! signature already used ([`AckConfig::remember_until`] says how long the store keeps it). Each
//! refusal is counted (`gridwatch_incident_acks_total{reason}`); the message is still
//! acknowledged to the broker so it does not come back.

use crate::dispatch::incident::Action;
use crate::signing::Signer;
use serde::Deserialize;

/// The purpose signed first: an ack signature is no link signature, even under the same secret.
pub const PURPOSE: &str = "gridwatch-ack-v2";

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
}

impl std::fmt::Debug for AckConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckConfig").field("topic", &self.topic).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckMessage {
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
}

impl Refusal {
    /// Every refusal, so `/metrics` can show each at 0 from start.
    pub const ALL: [Refusal; 5] = [Refusal::Malformed, Refusal::BadSignature, Refusal::Stale, Refusal::UnknownAction, Refusal::Replayed];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::UnknownAction => "unknown_action",
            Refusal::Replayed => "replayed",
        }
    }
}

impl AckConfig {
    pub fn new(topic: String, secret: &str) -> AckConfig {
        AckConfig { topic: Some(topic), signer: Signer::new(secret) }
    }

    /// The key of actions relayed by the district hub only.
    pub fn without_topic(secret: &str) -> AckConfig {
        AckConfig { topic: None, signer: Signer::new(secret) }
    }

    /// The signature of a message's fields (what a hub computes).
    pub fn sign(&self, incident: i64, action: &str, by: &str, note: Option<&str>, ts: i64) -> String {
        let (incident, ts) = (incident.to_string(), ts.to_string());
        self.signer.sign(&signed_fields(&incident, action, by, note, &ts))
    }

    /// Until when a message's signature must be remembered: past it the message is stale by
    /// either its own time or the time it was first seen (a box clock stepping back a little does
    /// not reopen the window).
    pub fn remember_until(ts: i64, now_ms: i64) -> i64 {
        ts.max(now_ms).saturating_add(MAX_AGE_MS + MAX_AHEAD_MS)
    }

    /// Parses and checks a message received at `now_ms` (whether its signature was used before
    /// is for the store to say: [`crate::store::Store::use_signature`]).
    pub fn verify(&self, payload: &[u8], now_ms: i64) -> Result<Verified, Refusal> {
        let message: AckMessage = serde_json::from_slice(payload).map_err(|_| Refusal::Malformed)?;
        let (incident, ts) = (message.incident.to_string(), message.ts.to_string());
        if !self.signer.verify(&signed_fields(&incident, &message.action, &message.by, message.note.as_deref(), &ts), &message.sig) {
            return Err(Refusal::BadSignature);
        }
        if message.ts < now_ms - MAX_AGE_MS || message.ts > now_ms + MAX_AHEAD_MS {
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

/// Verifies a worker's action relayed from a hub (`via` says how, for the log), records its
/// signature as used (a replay, also after a restart, is refused) and applies it to its incident
/// at `now`. Each outcome is counted.
pub async fn apply(acks: &AckConfig, store: &crate::store::Store, payload: &[u8], metrics: &crate::metrics::Metrics, now: i64, via: &str) -> Settled {
    let result = match acks.verify(payload, now) {
        Ok(verified) => {
            // A signature an earlier run used on a store copied into memory is used again first.
            store.wait_for_kept_steps().await;
            let store = store.clone();
            let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<AckResult> {
                // Used before it is applied: a crash between the two loses the action (the hub
                // sends it again with a new time) but never applies one twice.
                if !store.use_signature(PURPOSE, &verified.signature, AckConfig::remember_until(verified.ts, now), now)? {
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

/// The fields an ack signs, in order.
fn signed_fields<'a>(incident: &'a str, action: &'a str, by: &'a str, note: Option<&'a str>, ts: &'a str) -> [&'a [u8]; 6] {
    [PURPOSE.as_bytes(), incident.as_bytes(), action.as_bytes(), by.as_bytes(), note.unwrap_or("").as_bytes(), ts.as_bytes()]
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
}
