//! Workers' actions relayed to boxes behind NAT: the hub publishes each signed action it is
//! given (the JSON of the ack topic, [`crate::sources::mqtt::incident_acks`]) on the box's
//! subject `gw.act.<district>.<box>` of the work-queue stream [`super::ACTIONS_STREAM`]; the box
//! pulls them with its durable consumer `box-<box>`, applies each through the same verifier as
//! the ack topic (signature, the box's id, age, used signatures in its store), and acks the
//! message only once its store has settled it. A box offline gets its actions when it is back
//! (within the stream's day, after which they would be stale anyway).
//!
//! An action's age is judged against the time JetStream stored it ([`sent_ms`]), not the box's
//! clock: a box whose clock is minutes or days off would refuse every action as stale and ack
//! it, and the action would be lost. The box's clock still stamps the transition.
//!
//! Invariants: a message is acked only after the store recorded its signature (applied, refused
//! or not applicable), so an action is applied at most once and, unless the box dies between the
//! two, exactly once; a forged or replayed one is refused, counted and acked (never redelivered
//! forever); a message the store could not record is delivered again.

use crate::config::ClusterConfig;
use crate::sources::mqtt::incident_acks::{self, AckConfig};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long JetStream waits for the box's ack before delivering an action again. Short: an
/// action the server sent into a link that had silently died (4G) is lost with it, and comes
/// again only after this; a box slower than this to commit sees its own action again, refuses
/// it as replayed and acks it (applied once all the same).
const ACK_WAIT: Duration = Duration::from_secs(3);
/// When the store could not record an action: how long before it comes again.
const RETRY: Duration = Duration::from_secs(2);

/// The subject of a box's actions.
pub fn subject(district: &str, box_id: &str) -> String {
    format!("gw.act.{district}.{box_id}")
}

/// The box's durable consumer on [`super::ACTIONS_STREAM`].
pub fn consumer_name(box_id: &str) -> String {
    format!("box-{box_id}")
}

/// What a box needs to apply relayed actions.
#[derive(Debug)]
pub struct Receiver {
    pub config: ClusterConfig,
    pub acks: AckConfig,
    pub store: crate::store::Store,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub clock: crate::clock::Clock,
}

/// When JetStream stored `message` (ms since the Unix epoch), by the cluster's clock; `now` (the
/// box's clock) when its metadata cannot be read.
fn sent_ms(message: &jetstream::Message, now: i64) -> i64 {
    match message.info() {
        Ok(info) => published_ms(info.published.unix_timestamp_nanos()),
        Err(error) => {
            tracing::warn!(error = %error, "a relayed action without JetStream's metadata: its age is judged by this box's clock");
            now
        }
    }
}

/// Nanoseconds since the Unix epoch as milliseconds, saturated.
fn published_ms(nanos: i128) -> i64 {
    i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Pulls and applies this box's actions until `shutdown`, starting again after any loss of the
/// link or of the stream.
pub async fn receive(js: jetstream::Context, receiver: Receiver, shutdown: CancellationToken) {
    // Short: a box back on its link should not sleep long before it pulls again.
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let (district, box_id) = (&receiver.config.district, &receiver.config.box_id);
    loop {
        let round = async {
            let stream = js.get_stream(super::ACTIONS_STREAM).await?;
            let consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &consumer_name(box_id),
                    pull::Config {
                        durable_name: Some(consumer_name(box_id)),
                        filter_subject: subject(district, box_id),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        ..Default::default()
                    },
                )
                .await?;
            // The client's defaults (a pull every 30 s, heartbeats every 15 s; a new pull when
            // the link comes back) cost about 10 bytes/s idle.
            let mut messages = consumer.messages().await?;
            while let Some(message) = messages.next().await {
                let message = message?;
                backoff.reset();
                let now = receiver.clock.now();
                let sent = sent_ms(&message, now);
                let settled = incident_acks::apply(&receiver.acks, &receiver.store, &message.payload, &receiver.metrics, now, sent, "the district hub").await;
                let ack = if settled { AckKind::Ack } else { AckKind::Nak(Some(RETRY)) };
                message.ack_with(ack).await.map_err(|e| anyhow::anyhow!(e))?;
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            outcome = round => outcome,
            () = shutdown.cancelled() => return,
        };
        if let Err(error) = outcome {
            tracing::debug!(error = %format!("{error:#}"), "cannot pull workers' actions from the district; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_box_has_its_own_subject_and_consumer() {
        assert_eq!(subject("old-town", "east-01"), "gw.act.old-town.east-01");
        assert_eq!(consumer_name("east-01"), "box-east-01");
    }

    #[test]
    fn the_stream_s_time_is_read_in_milliseconds() {
        assert_eq!(published_ms(1_795_392_000_123_456_789), 1_795_392_000_123);
        assert_eq!(published_ms(-1), -1);
        assert_eq!(published_ms(i128::MAX), i64::MAX);
    }
}
