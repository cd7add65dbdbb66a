//! Workers' actions relayed over MQTT: a central hub that serves the workers' pages for boxes
//! behind 4G NAT publishes each action as a signed JSON message on this box's ack topic, and
//! the box applies it to the incident like a press of the button on its own page.
//!
//! ```json
//! {"incident": 12, "action": "accept", "by": "王芳 13800000001", "note": "on my way",
//!  "ts": 1795392000000, "sig": "<hex HMAC-SHA256>"}
//! ```
//!
//! `action` is accept, on-site, resolve or close; `sig` is HMAC-SHA256 under the shared
//! `ack_secret` of `incident \n action \n by \n note \n ts` (note empty when absent). A message
//! with a wrong signature, older than a day or more than five minutes in the future is refused
//! and counted (`gridwatch_incident_acks_total{result}`); it is still acknowledged to the broker
//! so it does not come back.

use crate::incident::Action;
use crate::signing::{hex, hmac_sha256};
use serde::Deserialize;

/// Oldest message accepted (the hub may have queued it while the box was offline).
const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// Clock skew tolerated for messages "from the future".
const MAX_AHEAD_MS: i64 = 5 * 60 * 1000;

/// The ack topic and its key.
#[derive(Clone)]
pub struct AckConfig {
    pub topic: String,
    secret: Vec<u8>,
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
}

/// Why a message was refused (the label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    BadSignature,
    Stale,
    UnknownAction,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::UnknownAction => "unknown_action",
        }
    }
}

impl AckConfig {
    pub fn new(topic: String, secret: &str) -> AckConfig {
        AckConfig { topic, secret: secret.as_bytes().to_vec() }
    }

    /// The signature of a message's fields (what a hub computes).
    pub fn sign(&self, incident: i64, action: &str, by: &str, note: Option<&str>, ts: i64) -> String {
        hex(&hmac_sha256(&self.secret, signing_text(incident, action, by, note, ts).as_bytes()))
    }

    /// Parses and checks a message received at `now_ms`.
    pub fn verify(&self, payload: &[u8], now_ms: i64) -> Result<Verified, Refusal> {
        let message: AckMessage = serde_json::from_slice(payload).map_err(|_| Refusal::Malformed)?;
        let expected = self.sign(message.incident, &message.action, &message.by, message.note.as_deref(), message.ts);
        if !constant_time_eq(expected.as_bytes(), message.sig.to_ascii_lowercase().as_bytes()) {
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
        Ok(Verified { incident: message.incident, action, by: message.by, note: message.note.filter(|n| !n.is_empty()) })
    }
}

fn signing_text(incident: i64, action: &str, by: &str, note: Option<&str>, ts: i64) -> String {
    format!("{incident}\n{action}\n{by}\n{}\n{ts}", note.unwrap_or(""))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        assert_eq!(verified, Verified { incident: 12, action: Action::Accept, by: "王芳".into(), note: Some("on my way".into()) });
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
