//! The hub's relay of workers' actions (on its listener, [`super::web`]):
//! `POST /act/<district>/<box>` takes the same signed JSON a hub would publish on a box's MQTT
//! ack topic ([`crate::sources::mqtt::incident_acks`]) and queues it on the box's subject of the
//! work-queue stream [`crate::cluster::ACTIONS_STREAM`], answering 202 once JetStream has stored
//! it on a quorum. The hub holds no secret: the box verifies the signature and refuses a forged,
//! stale or replayed action ([`crate::cluster::actions`]). Whoever serves the workers' pages for
//! boxes behind NAT posts here.
//!
//! Answers: 202 queued (`{"sequence": N}`); 400 a district or box that cannot name a subject, a
//! body that is not a signed action's JSON, or one that names another box (`"box"`: a district
//! box takes only actions signed for it, and would refuse it as `other_box`); 503 JetStream did
//! not store it (post again: the box takes a signature once).

use super::web::Listener;
use crate::cluster::actions::subject;
use crate::config::is_token;
use crate::sources::mqtt::incident_acks::AckMessage;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

/// How long a POST waits for JetStream to store the action.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /act/<district>/<box>` (counted in `gridwatch_hub_actions_total{result}`).
pub async fn relay(State(web): State<Arc<Listener>>, Path((district, box_id)): Path<(String, String)>, body: Bytes) -> (StatusCode, String) {
    if !is_token(&district) || !is_token(&box_id) {
        web.metrics.count_action("refused");
        return (StatusCode::BAD_REQUEST, "district and box: 1 to 64 letters, digits, `-` or `_`\n".into());
    }
    if let Err(why) = check_body(&box_id, &body) {
        web.metrics.count_action("refused");
        return (StatusCode::BAD_REQUEST, why);
    }
    match queue(&web, &district, &box_id, body).await {
        Ok(sequence) => (StatusCode::ACCEPTED, format!("{{\"sequence\": {sequence}}}\n")),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("not queued: {error:#}\n")),
    }
}

/// Why a body cannot go to box `box_id`: not a signed action's JSON, or one for another box.
fn check_body(box_id: &str, body: &[u8]) -> Result<(), String> {
    let action = serde_json::from_slice::<AckMessage>(body).map_err(|error| format!("not a signed action: {error}\n"))?;
    match action.box_id {
        Some(named) if named != box_id => Err(format!("the action is for box `{named}`, not `{box_id}`\n")),
        _ => Ok(()),
    }
}

/// Queues a signed action on the box's subject (counted `relayed` or `not_stored`); its stream
/// sequence once JetStream stored it on a quorum. The relay and the hub's own pages
/// ([`super::pages`]) both send through here.
pub async fn queue(web: &Listener, district: &str, box_id: &str, body: Bytes) -> anyhow::Result<u64> {
    let stored = async {
        let ack = web.js.publish(subject(district, box_id), body).await?;
        anyhow::Ok(tokio::time::timeout(STORE_TIMEOUT, ack.into_future()).await??)
    };
    match stored.await {
        Ok(ack) => {
            web.metrics.count_action("relayed");
            tracing::info!(district = %district, box_id = %box_id, sequence = ack.sequence, "worker's action queued for its box");
            Ok(ack.sequence)
        }
        Err(error) => {
            web.metrics.count_action("not_stored");
            tracing::warn!(district = %district, box_id = %box_id, error = %format!("{error:#}"), "worker's action not queued");
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_naming_another_box_is_refused() {
        let action = |named: &str| format!(r#"{{{named}"incident": 7, "action": "accept", "by": "王芳", "ts": 1795392000000, "sig": "00"}}"#);
        assert_eq!(check_body("east", action(r#""box": "east", "#).as_bytes()), Ok(()));
        assert_eq!(check_body("east", action("").as_bytes()), Ok(()), "a box alone's format: the box judges it");
        assert_eq!(check_body("west", action(r#""box": "east", "#).as_bytes()), Err("the action is for box `east`, not `west`\n".into()));
        assert!(check_body("east", b"{\"incident\": 1}").unwrap_err().starts_with("not a signed action"));
    }
}
