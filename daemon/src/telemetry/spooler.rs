//! Readings kept in groups, then their MQTT acknowledgements, in arrival order.
//!
//! Invariant: a message is acknowledged to the broker only once its reading is durable — in
//! InfluxDB (it answered 2xx for it) or on disk (the spool, synced) — and in the crash log, so a
//! crash before the next rule-state save judges it again; after a crash, the broker still holds
//! every reading the daemon had not secured and sends it again.
//!
//! With InfluxDB answering and nothing spooled, a group is written to it straight from memory
//! and appended to the crash log without a sync: the SD card sees a few bytes per reading, not a
//! transaction ([`crate::store`], docs/BENCHMARKS.md "Disk writes"). Otherwise (no InfluxDB, or
//! it is down, slow or has a backlog) the crash log is synced and the group spooled before the
//! acknowledgements go out. Groups are written one after another while earlier ones wait for
//! InfluxDB; acknowledgements leave in arrival order (MQTT 3.1.1 wants them in order). A
//! reading of a district's 4G sensor (feature `cluster`) is acknowledged the same way, by telling
//! its source, which then acks it to JetStream ([`crate::cluster::sensors`]).

use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::store::{NewPoint, Store};
use crate::telemetry::writer::TelemetryWriter;
use rumqttc::{AsyncClient, Publish};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Most readings committed in one transaction.
const GROUP_MAX: usize = 2000;
/// How long the first reading of a group waits for others before the group is kept. The broker
/// holds back what it has for this connection until earlier messages are acknowledged, so every
/// reading — an alarm's too — reaches the rules up to this much late: it is the alert latency's
/// floor (docs/BENCHMARKS.md: 100 ms gave p50 50 / p99 100 ms at 1,000 readings/s, 10 ms gives
/// 11 / 23 ms). Longer windows mean fewer, larger commits (or InfluxDB writes); a reading every
/// few seconds (a small community) is a group of one either way.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// A message on its way: the reading to keep (none for a rejected message) and the message to
/// acknowledge (none for readings that came over no broker: serial, GPIO).
#[derive(Debug)]
pub struct Spooled {
    pub sample: Option<(Arc<str>, Sample)>,
    pub ack: Option<Ack>,
}

/// How a message is acknowledged once its reading is kept.
#[derive(Debug)]
pub enum Ack {
    /// A QoS 1 publish of the box's MQTT broker: PUBACK on the ingest connection.
    Mqtt(Publish),
    /// A reading of a 4G sensor from the district's stream: its source is told, and acks it to
    /// JetStream (a message not kept is never told: it is delivered again).
    #[cfg(feature = "cluster")]
    Kept(tokio::sync::oneshot::Sender<()>),
}

/// A reading to keep: the sample with its sensor's id (the spool's key); `None` for a position
/// outside the inventory.
pub fn kept(sensors: &[crate::config::SensorConfig], sample: &Sample) -> Option<(Arc<str>, Sample)> {
    Some((sensors.get(sample.sensor)?.id.clone(), sample.clone()))
}

/// Where readings are kept before they are acknowledged.
#[derive(Debug, Clone)]
pub struct SpoolTarget {
    pub store: Store,
    /// Readings also go to InfluxDB: straight from memory when it keeps up, else through the spool.
    pub telemetry: Option<Arc<TelemetryWriter>>,
    pub max_points: u64,
    /// Woken after each spool commit, so the writer need not poll.
    pub written: Arc<Notify>,
    /// The district uplink's readings (`cluster::readings`, with `[cluster]`): each group is
    /// offered, never waited for.
    pub uplink: Option<mpsc::Sender<Arc<Vec<NewPoint>>>>,
}

/// Groups whose acknowledgements wait for InfluxDB at once; past that the spooler waits too.
const GROUPS_AWAITING_INFLUX: usize = 32;

/// Runs until `input` is closed and everything received is kept and acknowledged.
pub async fn run(mut input: mpsc::Receiver<Spooled>, target: Option<SpoolTarget>, acks: AsyncClient, metrics: Arc<Metrics>) {
    let (settling, settled) = mpsc::channel(GROUPS_AWAITING_INFLUX);
    let acknowledger = tokio::spawn(acknowledge(settled, acks, metrics.clone()));
    // A group is what arrives within GROUP_WINDOW of its first reading (or queued up while the
    // previous group was being kept): a slow disk makes groups larger, not readings later.
    while let Some(first) = input.recv().await {
        let mut group = vec![first];
        let close = tokio::time::Instant::now() + GROUP_WINDOW;
        while group.len() < GROUP_MAX {
            match tokio::time::timeout_at(close, input.recv()).await {
                Ok(Some(item)) => group.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let publishes: Vec<Ack> = group.iter_mut().filter_map(|item| item.ack.take()).collect();
        let kept = keep(group, target.as_ref(), &metrics).await;
        if settling.send((publishes, kept)).await.is_err() {
            break;
        }
    }
    drop(settling);
    let _ = acknowledger.await;
}

/// Acknowledges each group's messages, in order, once the group is kept.
async fn acknowledge(mut settled: mpsc::Receiver<(Vec<Ack>, Option<tokio::task::JoinHandle<()>>)>, acks: AsyncClient, metrics: Arc<Metrics>) {
    while let Some((publishes, kept)) = settled.recv().await {
        if let Some(kept) = kept {
            if kept.await.is_err() {
                // The task keeping them died: leave them to the broker, which sends them again.
                tracing::error!(messages = publishes.len(), "readings not kept; not acknowledged, the broker will send them again");
                continue;
            }
        }
        for ack in publishes {
            match ack {
                Ack::Mqtt(publish) => match acks.ack(&publish).await {
                    Ok(()) => {
                        metrics.mqtt_messages_acknowledged.inc();
                    }
                    Err(error) => tracing::warn!(error = %error, "acknowledgement not queued; the broker will send the message again"),
                },
                #[cfg(feature = "cluster")]
                Ack::Kept(kept) => {
                    // Its source gone (stopping): JetStream delivers the message again.
                    let _ = kept.send(());
                }
            }
        }
    }
}

/// Keeps a group's readings; returns the task to wait for when they go to InfluxDB from memory
/// (none: they are kept already, or dropped and counted).
async fn keep(group: Vec<Spooled>, target: Option<&SpoolTarget>, metrics: &Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    let target = target?;
    let points: Vec<NewPoint> = group.into_iter().filter_map(|item| item.sample).map(|(id, s)| (id, s.ts, s.fields)).collect();
    if points.is_empty() {
        return None;
    }
    let points = Arc::new(points);
    let count = points.len() as u64;
    if let Some(uplink) = &target.uplink {
        if uplink.try_send(points.clone()).is_err() {
            metrics.count_uplink_readings("queue_full", count);
        }
    }
    if target.telemetry.is_some() {
        metrics.telemetry_points_taken_on.inc_by(count);
    }
    // On a full disk the space left is for alarms: readings are not stored until the reserve is
    // back (InfluxDB may still take them).
    if target.store.disk_full() && !target.store.off_thread(|store| Ok(store.try_restore_reserve())).await.unwrap_or(false) {
        return past_the_card(points, "disk_full", target, metrics);
    }
    let straight = target.telemetry.as_ref().filter(|writer| writer.caught_up()).cloned();
    // Synced now only when no InfluxDB will have these readings before they are acknowledged.
    if let Err(error) = target.store.log_unsaved(points.clone(), straight.is_none()).await {
        // Logged (at most once a minute) and shown in /healthz by the store itself.
        tracing::debug!(points = count, error = %format!("{error:#}"), "readings not in the crash log; a crash before the next rule-state save would not judge them again");
    }
    let Some(writer) = straight else {
        return spool(points, target, metrics).await;
    };
    let (target, metrics) = (target.clone(), metrics.clone());
    Some(tokio::spawn(async move {
        let written = writer.write_now(&points).await;
        if written < points.len() {
            if let Err(error) = target.store.sync_unsaved().await {
                tracing::debug!(error = %format!("{error:#}"), "crash log not synced");
            }
            if let Some(past_the_card) = spool(Arc::new(points[written..].to_vec()), &target, &metrics).await {
                let _ = past_the_card.await;
            }
        }
    }))
}

/// Commits readings to the spool for InfluxDB (none without it). What the card cannot take
/// goes to InfluxDB straight from memory instead: the returned task, which their
/// acknowledgements wait for.
async fn spool(points: Arc<Vec<NewPoint>>, target: &SpoolTarget, metrics: &Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    target.telemetry.as_ref()?;
    let count = points.len() as u64;
    match target.store.spool_append(points.clone(), target.max_points).await {
        Ok(dropped) => {
            metrics.telemetry_points_spooled.inc_by(count);
            if dropped > 0 {
                metrics.drop_telemetry("spool_full", dropped);
                tracing::error!(dropped, max_points = target.max_points, "spool full: oldest readings dropped (InfluxDB has been unreachable too long)");
            }
            target.written.notify_one();
            None
        }
        Err(error) if crate::store::is_disk_full(&error) => past_the_card(points, "disk_full", target, metrics),
        Err(error) => {
            // Logged (at most once a minute) and shown in /healthz by the store itself.
            tracing::debug!(points = count, error = %format!("{error:#}"), "readings not spooled; they go to InfluxDB from memory if it takes them");
            past_the_card(points, "spool_write_failed", target, metrics)
        }
    }
}

/// Readings the card cannot keep (full, read-only, stalled): written to InfluxDB from memory,
/// whatever waits in the spool before them (InfluxDB orders points by time, not by arrival);
/// those it does not take are dropped and counted under `reason`. Judged by the rules they were
/// already.
fn past_the_card(points: Arc<Vec<NewPoint>>, reason: &'static str, target: &SpoolTarget, metrics: &Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    let writer = target.telemetry.clone()?;
    let metrics = metrics.clone();
    Some(tokio::spawn(async move {
        let written = writer.write_now(&points).await;
        let dropped = (points.len() - written) as u64;
        if dropped > 0 {
            // Counted; the card's state is in /healthz and logged by the store, at most once a minute.
            metrics.drop_telemetry(reason, dropped);
            tracing::debug!(
                points = dropped,
                reason,
                "readings neither kept on the card nor taken by InfluxDB; they were evaluated by the rules but will not be stored"
            );
        }
    }))
}
