//! Group commit of readings into the spool, then their MQTT acknowledgements, in arrival order.
//!
//! Invariant: a message is acknowledged to the broker only after its reading is committed to
//! disk — in the crash log (judged again after a crash, with or without InfluxDB) and the spool
//! for InfluxDB — so after a crash, the broker still holds every reading the daemon had not
//! secured and sends it again.

use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::store::Store;
use rumqttc::{AsyncClient, Publish};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Most readings committed in one transaction.
const GROUP_MAX: usize = 2000;
/// How long the first reading of a group waits for others before the group is committed. Each
/// commit writes whole pages to the SD card whatever it holds: readings a few at a time cost
/// kilobytes each, a group of dozens a few hundred bytes each (docs/BENCHMARKS.md, "Disk
/// writes"). The acknowledgements wait as long (the broker holds the messages meanwhile), and
/// so does an alert's journal entry behind a commit: longer windows cost alert latency.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// A message on its way: the reading to keep (none for a rejected message) and the message to
/// acknowledge (none for readings that did not come over MQTT).
#[derive(Debug)]
pub struct Spooled {
    pub sample: Option<(Arc<str>, Sample)>,
    pub ack: Option<Publish>,
}

/// A reading to keep: the sample with its sensor's id (the spool's key); `None` for a position
/// outside the inventory.
pub fn kept(sensors: &[crate::config::SensorConfig], sample: &Sample) -> Option<(Arc<str>, Sample)> {
    Some((sensors.get(sample.sensor)?.id.clone(), sample.clone()))
}

/// Where readings are kept before they are acknowledged: always in the crash log (judged again
/// if the daemon dies before its rule state is saved), and in the spool for InfluxDB when there
/// is one.
#[derive(Debug, Clone)]
pub struct SpoolTarget {
    pub store: Store,
    /// Readings also go to InfluxDB (through the spool).
    pub telemetry: bool,
    pub max_points: u64,
    /// Woken after each commit, so the writer need not poll.
    pub written: Arc<Notify>,
}

/// Runs until `input` is closed and everything received is committed and acknowledged.
pub async fn run(mut input: mpsc::Receiver<Spooled>, target: Option<SpoolTarget>, acks: AsyncClient, metrics: Arc<Metrics>) {
    // A group is what arrives within GROUP_WINDOW of its first reading (or queued up while the
    // previous group was being committed): a slow disk makes groups larger, not readings later.
    while let Some(first) = input.recv().await {
        let mut group = vec![first];
        let close = tokio::time::Instant::now() + GROUP_WINDOW;
        while group.len() < GROUP_MAX {
            match tokio::time::timeout_at(close, input.recv()).await {
                Ok(Some(item)) => group.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        commit(&mut group, target.as_ref(), &metrics).await;
        for item in group {
            if let Some(publish) = item.ack {
                match acks.ack(&publish).await {
                    Ok(()) => {
                        metrics.mqtt_messages_acknowledged.inc();
                    }
                    Err(error) => tracing::warn!(error = %error, "acknowledgement not queued; the broker will send the message again"),
                };
            }
        }
    }
}

async fn commit(group: &mut [Spooled], target: Option<&SpoolTarget>, metrics: &Metrics) {
    let Some(target) = target else { return };
    let points: Vec<_> = group.iter_mut().filter_map(|item| item.sample.take()).map(|(id, s)| (id, s.ts, s.fields)).collect();
    if points.is_empty() {
        return;
    }
    let count = points.len() as u64;
    if target.telemetry {
        metrics.telemetry_points_taken_on.inc_by(count);
    }
    // On a full disk the space left is for alarms: readings wait until the reserve is back.
    if target.store.disk_full() && !target.store.try_restore_reserve() {
        metrics.drop_telemetry("disk_full", count);
        return;
    }
    match target.store.spool_append(points, target.telemetry.then_some(target.max_points)).await {
        Ok(_) if !target.telemetry => {}
        Ok(dropped) => {
            metrics.telemetry_points_spooled.inc_by(count);
            if dropped > 0 {
                metrics.drop_telemetry("spool_full", dropped);
                tracing::error!(dropped, max_points = target.max_points, "spool full: oldest readings dropped (InfluxDB has been unreachable too long)");
            }
            target.written.notify_one();
        }
        Err(error) if crate::store::is_disk_full(&error) => {
            metrics.drop_telemetry("disk_full", count);
            tracing::error!(points = count, "disk full: readings were evaluated by the rules but are not stored until there is room again");
        }
        Err(error) => {
            metrics.drop_telemetry("spool_write_failed", count);
            // Logged (at most once a minute) and shown in /healthz by the store itself.
            tracing::debug!(points = count, error = %format!("{error:#}"), "readings not spooled; they were evaluated by the rules but will not be stored");
        }
    }
}
