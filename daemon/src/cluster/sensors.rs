//! Sensors with their own 4G link (`[cluster] sensors_via_hub = true`): out of reach of their
//! box's radio, they publish to the hub's MQTT listener (`gridwatch hub --mqtt-listen`,
//! [`super::hub`]) on topic `gw/s/<district>/<box>/<sensor>`, which stores each reading in the
//! stream [`super::SENSORS_STREAM`] as subject `gw.s.<district>.<box>.<sensor>` before it
//! acknowledges it. Their home box pulls its subjects with the durable consumer
//! `sensors-<box>` and hands each message to the same ingest as its own MQTT
//! ([`crate::sources::mqtt::source::Handoff`]): the same payload parser, rejections and their
//! counts, clock-skew filter, duplicate check, crash log, spool and rules.
//!
//! Invariants: a message is acked to JetStream only once the spooler has kept its reading
//! (the crash log, and the spool or InfluxDB), as the box's MQTT source sends its PUBACK; at
//! most one message is unacknowledged at a time (`max_ack_pending = 1`), so the rules see each
//! sensor's readings in the stream's order even when a delivery is lost in a dead link (it
//! comes again after [`ACK_WAIT`], before anything newer); a message delivered again that was
//! judged already is refused as a duplicate (same `seq`, time and values) or, after a restart,
//! is older than what the restored rule state judged and not judged again.

use crate::config::{ClusterConfig, SensorConfig};
use crate::sample::Sample;
use crate::sources::mqtt::rejection_log::RejectionLog;
use crate::sources::mqtt::source::{Handoff, Ingest};
use crate::telemetry::spooler::{Ack, Spooled};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the district keeps what 4G sensors publish: a box down longer misses the oldest.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// Readings the district keeps per 4G sensor at most (`max_msgs_per_subject` of the sensors'
/// stream): a week at one a minute. A sensor that publishes more (a leaked login, a firmware
/// loop) loses its own oldest readings, never another sensor's, and cannot fill the nodes'
/// disks that the boxes' uplink needs too.
pub const KEPT_PER_SENSOR: i64 = 10_080;
/// How long JetStream waits for the box's ack before delivering a reading again: a reading
/// pushed into a link that had silently died comes again this long after it was sent. A box
/// slower than this to keep a reading sees it again and refuses it as a duplicate.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// The subject prefix of a box's 4G sensors (`gw.s.<district>.<box>.`).
pub fn subject_prefix(district: &str, box_id: &str) -> String {
    format!("gw.s.{district}.{box_id}.")
}

/// The box's durable consumer on [`super::SENSORS_STREAM`].
pub fn consumer_name(box_id: &str) -> String {
    format!("sensors-{box_id}")
}

/// Where the box's 4G sensors' readings go: an ingest of their own (its duplicate and gap
/// memory per sensor), the pipeline and the spooler the box's MQTT uses.
#[derive(Debug)]
pub struct Feed {
    pub ingest: Ingest,
    pub samples: mpsc::Sender<Sample>,
    pub spool: mpsc::Sender<Spooled>,
    /// The inventory, for the spool and the crash log.
    pub stored: Arc<[SensorConfig]>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Why a round of pulling ended.
enum Ended {
    /// The pipeline or the spooler is gone: the daemon is stopping.
    Stopping,
    /// The link, the stream or the consumer failed: pull again.
    Failed(anyhow::Error),
}

/// Pulls and judges this box's 4G sensors until `shutdown`, starting again after any loss of
/// the link or of the stream.
pub async fn receive(js: jetstream::Context, config: ClusterConfig, mut feed: Feed, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let prefix = subject_prefix(&config.district, &config.box_id);
    let mut log = RejectionLog::new(Duration::from_secs(60));
    loop {
        let round = pull(&js, &config.box_id, &prefix, &mut feed, &mut log, &mut backoff);
        let ended = tokio::select! {
            ended = round => ended,
            () = shutdown.cancelled() => return,
        };
        match ended {
            Ended::Stopping => return,
            Ended::Failed(error) => tracing::debug!(error = %format!("{error:#}"), "cannot pull this box's 4G sensors from the district; trying again"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One round: the consumer, then each message judged and acked in turn.
async fn pull(js: &jetstream::Context, box_id: &str, prefix: &str, feed: &mut Feed, log: &mut RejectionLog, backoff: &mut crate::backoff::Backoff) -> Ended {
    let consumer = async {
        let stream = js.get_stream(super::SENSORS_STREAM).await?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &consumer_name(box_id),
                pull::Config {
                    durable_name: Some(consumer_name(box_id)),
                    filter_subject: format!("{prefix}>"),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 1,
                    ..Default::default()
                },
            )
            .await?;
        anyhow::Ok(consumer.messages().await?)
    };
    let mut messages = match consumer.await {
        Ok(messages) => messages,
        Err(error) => return Ended::Failed(error),
    };
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => return Ended::Failed(anyhow::anyhow!(error)),
        };
        backoff.reset();
        let sensor = message.subject.strip_prefix(prefix).unwrap_or_default();
        let info = message.info().map(|info| (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64)).ok();
        let stored_ms = info.map_or_else(|| crate::clock::Clock::System.now(), |(_, stored)| stored);
        let decoded = feed.ingest.sample_of(sensor, &message.payload, stored_ms).map(|sample| Sample { hub_seq: info.map(|(seq, _)| seq), ..sample });
        if let Err(rejection) = &decoded {
            log.note(&message.subject, rejection, tokio::time::Instant::now());
        }
        let (kept, is_kept) = oneshot::channel();
        let handoff = Handoff { samples: &feed.samples, spool: &feed.spool, stored: Some(&feed.stored), metrics: &feed.metrics };
        if !handoff.hand_on(decoded, Ack::Kept(kept)).await {
            return Ended::Stopping;
        }
        // Not kept (the spooler's task died): no ack, JetStream delivers it again.
        if is_kept.await.is_ok() {
            if let Err(error) = message.ack().await {
                return Ended::Failed(anyhow::anyhow!(error));
            }
        }
    }
    Ended::Failed(anyhow::anyhow!("the district ended the pull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_box_pulls_its_own_sensors_subjects() {
        assert_eq!(subject_prefix("old-town", "east-01"), "gw.s.old-town.east-01.");
        assert_eq!(consumer_name("east-01"), "sensors-east-01");
        assert!(crate::cluster::SENSORS_SUBJECTS.starts_with("gw.s."));
    }
}
