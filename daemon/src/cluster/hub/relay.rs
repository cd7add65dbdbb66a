//! The hub's relay of workers' actions (`--listen`): `POST /act/<district>/<box>` takes the same
//! signed JSON a hub would publish on a box's MQTT ack topic
//! ([`crate::sources::mqtt::incident_acks`]) and queues it on the box's subject of the
//! work-queue stream [`crate::cluster::ACTIONS_STREAM`], answering 202 once JetStream has stored
//! it on a quorum. The hub holds no secret: the box verifies the signature and refuses a forged,
//! stale or replayed action ([`crate::cluster::actions`]). Whoever serves the workers' pages for
//! boxes behind NAT posts here.
//!
//! Answers: 202 queued (`{"sequence": N}`); 400 a district or box that cannot name a subject, or
//! a body that is not a signed action's JSON; 503 JetStream did not store it (post again: the
//! box takes a signature once).

use crate::cluster::actions::subject;
use crate::config::is_token;
use crate::sources::mqtt::incident_acks::AckMessage;
use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a POST waits for JetStream to store the action.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest action taken (a signed action is a few hundred bytes; its note is short).
const MAX_BODY: usize = 16 * 1024;

/// Serves the relay on `listen` until `shutdown`.
pub async fn serve(js: jetstream::Context, listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = Router::new().route("/act/{district}/{box_id}", post(relay)).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)).with_state(js);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("binding the hub's relay to {listen}: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "district hub relays workers' actions");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

async fn relay(State(js): State<jetstream::Context>, Path((district, box_id)): Path<(String, String)>, body: Bytes) -> (StatusCode, String) {
    if !is_token(&district) || !is_token(&box_id) {
        return (StatusCode::BAD_REQUEST, "district and box: 1 to 64 letters, digits, `-` or `_`\n".into());
    }
    if let Err(error) = serde_json::from_slice::<AckMessage>(&body) {
        return (StatusCode::BAD_REQUEST, format!("not a signed action: {error}\n"));
    }
    let stored = async {
        let ack = js.publish(subject(&district, &box_id), body).await?;
        anyhow::Ok(tokio::time::timeout(STORE_TIMEOUT, ack.into_future()).await??)
    };
    match stored.await {
        Ok(ack) => {
            tracing::info!(district = %district, box_id = %box_id, sequence = ack.sequence, "worker's action queued for its box");
            (StatusCode::ACCEPTED, format!("{{\"sequence\": {}}}\n", ack.sequence))
        }
        Err(error) => {
            tracing::warn!(district = %district, box_id = %box_id, error = %format!("{error:#}"), "worker's action not queued");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not queued: {error:#}\n"))
        }
    }
}
