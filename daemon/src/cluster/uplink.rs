//! A box's uplink to its district (`[cluster]`): sends the rows of its local store that the hub
//! has not committed yet, one kind at a time, and renews its lease.
//!
//! End-to-end acknowledgement: a JetStream ack only says the cluster holds the batch in memory
//! on a quorum; the box moves on only when the hub's high-water mark for (box, kind) in KV has
//! reached the batch's last row, which the hub writes after its PostgreSQL commit. Until then
//! the same batch (same rows, same `Nats-Msg-Id`) is sent again after `commit_wait`. The box's
//! cursor *is* the hub's high-water mark, read back from KV: nothing is flagged locally, so a
//! restart, a lost link or a lost JetStream write all end in sending again from that mark.
//!
//! Readings go the same way, from `uplink_readings` (filled by [`super::readings`]), and so do
//! closed hours of the trend, from `uplink_trend` (filled by [`super::trend`]); the hub writes
//! them to the district's InfluxDB before it moves their mark, and the box forgets those rows
//! once the mark covers them. Its `/metrics` show per kind how many rows the mark
//! does not cover, batches sent again and how long since the last commit (`gridwatch_uplink_*`).
//!
//! Row ids count within the store's epoch ([`crate::store::StoreEpoch`]): a store that replaced
//! a corrupt one starts at 1 again under a new epoch, and its marks are its own (from 0), not
//! the old store's, which it would sit below in silence. A store restored from an older copy
//! has its old epoch but fewer rows than the hub's mark covers: its new rows would take ids the
//! hub already has and never go up. The uplink sees a mark above the store's newest id, or (once
//! the copy's new rows have passed the mark, e.g. after days offline) a mark whose row digest is
//! not that of the store's row under its id, gives the store a new epoch and sends all it holds
//! under it ([`Uplink::renew_epoch`]).
//!
//! Invariants: rows are sent in id order; a batch is not replaced by another of the same kind
//! before the hub committed it; the uplink writes nothing to the local store (the readings'
//! recorder forgets what the mark covers).

use super::link_pace::LinkPace;
use super::wire::{hwm_key, Batch, Kind, Lease, Mark, Place, Rows};
use crate::config::{ClusterConfig, SensorIndex};
use crate::metrics::{KindLabel, Metrics};
use crate::store::{Store, StoreEpoch};
use async_nats::connection::State;
use async_nats::jetstream;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the hub's high-water mark is read while waiting for a commit.
const COMMIT_POLL: Duration = Duration::from_millis(200);
/// The pause when there is nothing to send.
const IDLE: Duration = Duration::from_millis(500);
/// How often a failed uplink looks whether its client is connected again.
const RECONNECT_POLL: Duration = Duration::from_millis(100);
/// How many kinds of rows go up.
const KINDS: usize = Kind::ALL.len();

/// What the uplink reads and reports besides its link.
#[derive(Debug)]
pub struct Sources {
    pub store: Store,
    /// The inventory: the places a batch of readings names.
    pub sensors: SensorIndex,
    /// The hub's marks as last read (the readings' recorder forgets what its mark covers).
    pub progress: Arc<Progress>,
    pub metrics: Arc<Metrics>,
}

/// Per kind, the hub's high-water mark as the uplink last read it, and how many batches the
/// hub committed: shared with the readings' recorder, the trend's copier and the metrics'
/// reporter, which go on
/// while the uplink waits on a dead link.
#[derive(Debug, Default)]
pub struct Progress {
    marks: [AtomicI64; KINDS],
    commits: [AtomicU64; KINDS],
}

impl Progress {
    pub fn mark(&self, kind: Kind) -> i64 {
        self.marks[kind as usize].load(Ordering::Relaxed)
    }
}

/// Runs the uplink until `shutdown`.
pub async fn run(js: jetstream::Context, config: ClusterConfig, sources: Sources, shutdown: CancellationToken) {
    tracing::info!(box_id = %config.box_id, district = %config.district, "district uplink started");
    let lease = tokio::spawn(renew_lease(js.clone(), config.clone(), shutdown.clone()));
    let reporter = tokio::spawn(report(sources.store.clone(), sources.progress.clone(), sources.metrics.clone(), shutdown.clone()));
    if let Some(epoch) = read_epoch(&sources.store, &shutdown).await {
        tracing::info!(epoch = %epoch.id, "district uplink sends this store's rows");
        let mut uplink = Uplink {
            js,
            config,
            sources,
            epoch,
            pending: [None, None, None, None],
            known_committed: [None; KINDS],
            newest: [0; KINDS],
            compared: [0; KINDS],
            hwm: None,
            pace: LinkPace::default(),
        };
        uplink.send_until(&shutdown).await;
    }
    let _ = lease.await;
    let _ = reporter.await;
}

/// The store's epoch, read again until it can be (or `shutdown`: none).
async fn read_epoch(store: &Store, shutdown: &CancellationToken) -> Option<StoreEpoch> {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match store.epoch().await {
            Ok(epoch) => return Some(epoch),
            Err(error) => tracing::error!(error = %format!("{error:#}"), "district uplink cannot read the store's epoch; nothing is sent until it can"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

struct Uplink {
    js: jetstream::Context,
    config: ClusterConfig,
    sources: Sources,
    /// The epoch the ids of the store's rows count in: part of every batch and mark.
    epoch: StoreEpoch,
    /// Per kind: the batch sent and not yet committed by the hub (sent again as it is).
    pending: [Option<Batch>; KINDS],
    /// Per kind: the hub's high-water mark as last read from KV (none: read it again). Kept so
    /// an idle box does not ask the hub over its 4G link twice a second.
    known_committed: [Option<i64>; KINDS],
    /// Per kind: the store's newest id as last read (only read again when a mark passes it).
    newest: [i64; KINDS],
    /// Per kind: the last mark whose digest was compared with the store's row under its id.
    compared: [i64; KINDS],
    hwm: Option<jetstream::kv::Store>,
    /// What the link has shown of its pace: how big a new batch is, how long its ack may take.
    pace: LinkPace,
}

impl Uplink {
    async fn send_until(&mut self, shutdown: &CancellationToken) {
        let mut failures = 0u32;
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            let mut sent = false;
            let mut failed = false;
            let connects = self.js.client().statistics().connects.load(Ordering::Relaxed);
            for kind in Kind::ALL {
                match self.step(kind).await {
                    Ok(step_sent) => sent |= step_sent,
                    Err(error) => {
                        failed = true;
                        // Once per outage at warn; the rest at debug.
                        if failures == 0 {
                            tracing::warn!(kind = kind.as_str(), error = %format!("{error:#}"), "district uplink cannot send; rows wait in the local store");
                        } else {
                            tracing::debug!(kind = kind.as_str(), error = %format!("{error:#}"), "district uplink still cannot send");
                        }
                    }
                }
            }
            failures = if failed { failures.saturating_add(1) } else { 0 };
            let pause = if failed {
                backoff.next_delay()
            } else {
                backoff.reset();
                if sent {
                    Duration::ZERO
                } else {
                    IDLE
                }
            };
            // After a failure, a reconnection of the client (during the round or the pause)
            // ends the backoff: the rows held through an outage go as soon as the link is back,
            // not up to a whole backoff (10 s) later.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = reconnected_since(&self.js, connects), if failed => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Sends one batch of `kind` (the pending one, or the next rows after the hub's mark) and
    /// waits for the hub to commit it; whether there was anything to send.
    async fn step(&mut self, kind: Kind) -> anyhow::Result<bool> {
        let slot = kind as usize;
        let committed = match self.known_committed[slot] {
            Some(committed) => committed,
            None => {
                // Only this box's batches move its mark: once read, it holds until the next
                // publish (an idle kind, e.g. readings never sent, is not asked for again).
                let committed = self.committed(kind).await?;
                self.known_committed[slot] = Some(committed);
                committed
            }
        };
        // A batch still pending from an earlier round goes again: it was not committed in time.
        let (batch, again) = match self.pending[slot].take() {
            Some(batch) if batch.range().is_some_and(|(_, last)| last > committed) => (batch, true),
            _ => match self.next_batch(kind, committed).await? {
                Some(batch) => (batch, false),
                None => return Ok(false),
            },
        };
        let Some((_, last)) = batch.range() else { return Ok(false) };
        if again {
            self.sources.metrics.uplink_batches_resent.get_or_create(&kind_label(kind)).inc();
        }
        self.pending[slot] = Some(batch.clone());
        self.known_committed[slot] = None;
        self.publish(kind, &batch).await?;
        let deadline = tokio::time::Instant::now() + self.config.commit_wait;
        while tokio::time::Instant::now() < deadline {
            let committed = self.committed(kind).await?;
            if batch.epoch != self.epoch.id {
                // The store took a new epoch meanwhile: this batch is sent again under it.
                return Ok(true);
            }
            if committed >= last {
                self.pending[slot] = None;
                self.known_committed[slot] = Some(committed);
                self.sources.progress.commits[slot].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = kind.as_str(), last, "district hub committed a batch");
                return Ok(true);
            }
            tokio::time::sleep(COMMIT_POLL).await;
        }
        tracing::info!(kind = kind.as_str(), last, wait_secs = self.config.commit_wait.as_secs(), "district hub has not committed a batch; sending it again");
        Ok(true)
    }

    async fn next_batch(&self, kind: Kind, after: i64) -> anyhow::Result<Option<Batch>> {
        let limit = self.pace.batch_rows(kind, self.config.batch_rows);
        let rows = self.rows_after(kind, after, limit).await?;
        let mut places = BTreeMap::new();
        match &rows {
            Rows::Reading(readings) => self.name_places(readings.iter().map(|r| r.sensor.as_str()), &mut places),
            Rows::Trend(hours) => self.name_places(hours.iter().map(|r| r.sensor.as_str()), &mut places),
            Rows::Alert(_) | Rows::Transition(_) => {}
        }
        let last_digest = rows.last_digest();
        let batch =
            Batch { box_id: self.config.box_id.clone(), district: self.config.district.clone(), epoch: self.epoch.id.clone(), rows, places, last_digest };
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Up to `limit` rows of `kind` with ids above `after`, oldest first.
    async fn rows_after(&self, kind: Kind, after: i64, limit: usize) -> anyhow::Result<Rows> {
        let store = &self.sources.store;
        Ok(match kind {
            Kind::Alert => Rows::Alert(store.alerts_after(after, limit).await?),
            Kind::Transition => Rows::Transition(store.transitions_after(after, limit).await?),
            Kind::Reading => Rows::Reading(store.uplink_readings_after(after, limit).await?),
            Kind::Trend => Rows::Trend(store.uplink_trend_after(after, limit).await?),
        })
    }

    /// Adds the place of each of `sensors` in the inventory (a sensor no longer in it has none).
    fn name_places<'a>(&self, sensors: impl Iterator<Item = &'a str>, places: &mut BTreeMap<String, Place>) {
        for id in sensors {
            if let Some(sensor) = self.sources.sensors.get(id) {
                places.entry(id.to_string()).or_insert_with(|| Place {
                    kind: sensor.kind.as_str().to_string(),
                    site: sensor.place.site.to_string(),
                    building: sensor.place.building.as_deref().map(str::to_string),
                    grid: sensor.place.grid.as_deref().map(str::to_string),
                });
            }
        }
    }

    async fn publish(&mut self, kind: Kind, batch: &Batch) -> anyhow::Result<()> {
        let (Some(id), (payload, encoding)) = (batch.message_id(), batch.encode()?) else { return Ok(()) };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        if let Some(encoding) = encoding {
            headers.insert(super::wire::ENCODING_HEADER, encoding);
        }
        let bytes = payload.len();
        let wait = LinkPace::ack_wait(bytes);
        // The ack of a batch that takes a slow link long to carry is worth waiting for: sent
        // again, it would cross the link again.
        let mut publisher = self.js.clone();
        publisher.set_timeout(wait);
        let started = Instant::now();
        let ack = publisher.publish_with_headers(batch.subject(), headers, payload.into()).await?;
        let ack = tokio::time::timeout(wait, ack.into_future()).await.map_err(|_| anyhow::anyhow!("no JetStream ack within {wait:?}"))??;
        self.pace.observed(kind, batch.len(), bytes, started.elapsed());
        tracing::debug!(id = %id, rows = batch.len(), bytes, duplicate = ack.duplicate, sequence = ack.sequence, "district batch stored by JetStream");
        Ok(())
    }

    /// The hub's high-water mark for this box, store epoch and `kind` (0 before the first
    /// commit). A mark this store cannot have given renews the epoch first (0 under the new one):
    /// one above the store's newest id, or one whose row digest is not that of the store's row
    /// under its id.
    async fn committed(&mut self, kind: Kind) -> anyhow::Result<i64> {
        if self.hwm.is_none() {
            self.hwm = Some(self.js.get_key_value(super::HWM_BUCKET).await?);
        }
        let Some(bucket) = &self.hwm else { return Ok(0) };
        let value = bucket.get(hwm_key(&self.config.box_id, &self.epoch.id, kind)).await?;
        let mark = Mark::parse(value.as_deref());
        let slot = kind as usize;
        if mark.id > self.newest[slot] {
            self.newest = self.sources.store.uplink_newest_ids().await?;
            if mark.id > self.newest[slot] {
                self.renew_epoch(kind, mark.id, "more rows than it has").await?;
                return Ok(0);
            }
        }
        if !self.holds_the_marked_row(kind, &mark).await? {
            self.renew_epoch(kind, mark.id, "another row under the id it has").await?;
            return Ok(0);
        }
        // Set only once checked: the readings' recorder forgets what the mark covers.
        self.sources.progress.marks[slot].store(mark.id, Ordering::Relaxed);
        Ok(mark.id)
    }

    /// Whether the store's row under the mark's id is the row the hub committed (its digest
    /// the mark's), as far as can be told: a mark without a digest (from a box of an older
    /// build) or whose row the store no longer holds (readings forgotten once committed) is
    /// taken as it is. Each mark is compared once.
    async fn holds_the_marked_row(&mut self, kind: Kind, mark: &Mark) -> anyhow::Result<bool> {
        let slot = kind as usize;
        let Some(digest) = &mark.digest else { return Ok(true) };
        if self.compared[slot] == mark.id {
            return Ok(true);
        }
        let rows = self.rows_after(kind, mark.id - 1, 1).await?;
        let held = match rows.last_digest() {
            Some(ours) if rows.range().is_some_and(|(first, _)| first == mark.id) => ours == *digest,
            _ => true,
        };
        if held {
            self.compared[slot] = mark.id;
        }
        Ok(held)
    }
    /// The hub has committed rows of this epoch up to `mark`, more than the store has of `kind`:
    /// the store is a copy restored from before (or another box sends under this box's id and
    /// epoch). Its next rows would take ids the hub already has and be skipped in silence, so the
    /// store takes a new epoch and everything it holds goes up again under it, marks from 0.
    async fn renew_epoch(&mut self, kind: Kind, mark: i64, seen: &str) -> anyhow::Result<()> {
        let epoch = self.sources.store.renew_epoch().await?;
        tracing::warn!(
            kind = kind.as_str(),
            hub_mark = mark,
            newest = self.newest[kind as usize],
            seen,
            old_epoch = %self.epoch.id,
            epoch = %epoch.id,
            "the district holds rows under this store's ids that it does not have (a copy restored from before?): \
             the store takes a new epoch and sends everything it holds again under it"
        );
        self.sources.metrics.uplink_epochs_renewed.inc();
        self.epoch = epoch;
        self.pending = [None, None, None, None];
        self.known_committed = [None; KINDS];
        self.compared = [0; KINDS];
        for mark in &self.sources.progress.marks {
            mark.store(0, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Returns once the client is connected on a connection made after it had made `connects`
/// (polled: its state and counters are local, nothing goes over the link).
async fn reconnected_since(js: &jetstream::Context, connects: u64) {
    let client = js.client();
    while client.connection_state() != State::Connected || client.statistics().connects.load(Ordering::Relaxed) <= connects {
        tokio::time::sleep(RECONNECT_POLL).await;
    }
}

/// Sets the `gridwatch_uplink_*` gauges every second from the store's newest ids and the hub's
/// marks, until `shutdown`.
async fn report(store: Store, progress: Arc<Progress>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut caught_up_at = [Instant::now(); KINDS];
    let mut commits_seen = [0; KINDS];
    loop {
        match store.uplink_newest_ids().await {
            Ok(newest) => {
                let now = Instant::now();
                for kind in Kind::ALL {
                    let slot = kind as usize;
                    let behind = (newest[slot] - progress.mark(kind)).max(0);
                    let commits = progress.commits[slot].load(Ordering::Relaxed);
                    if behind == 0 || commits != commits_seen[slot] {
                        caught_up_at[slot] = now;
                        commits_seen[slot] = commits;
                    }
                    let label = kind_label(kind);
                    metrics.uplink_rows_behind.get_or_create(&label).set(behind);
                    let age = i64::try_from(now.duration_since(caught_up_at[slot]).as_secs()).unwrap_or(i64::MAX);
                    metrics.uplink_last_commit_age_seconds.get_or_create(&label).set(age);
                }
            }
            Err(error) => tracing::debug!(error = %format!("{error:#}"), "cannot read the store's newest ids for the uplink's metrics"),
        }
        tokio::select! {
            () = tokio::time::sleep(REPORT_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// How often the uplink's gauges are set.
const REPORT_EVERY: Duration = Duration::from_secs(1);

fn kind_label(kind: Kind) -> KindLabel {
    KindLabel { kind: kind.as_str().to_string() }
}

/// Puts this box's lease every `lease_renew` (the hub's bucket lets it expire when it stops).
async fn renew_lease(js: jetstream::Context, config: ClusterConfig, shutdown: CancellationToken) {
    let mut bucket = None;
    let mut failing = false;
    let instance = format!("{}-{}", std::process::id(), crate::clock::Clock::System.now());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_string()).unwrap_or_default();
    loop {
        let renewed = async {
            if bucket.is_none() {
                bucket = Some(js.get_key_value(super::LEASE_BUCKET).await?);
            }
            let lease =
                Lease { district: config.district.clone(), renewed_ms: crate::clock::Clock::System.now(), instance: instance.clone(), host: host.clone() };
            if let Some(bucket) = &bucket {
                bucket.put(&config.box_id, serde_json::to_vec(&lease)?.into()).await?;
            }
            anyhow::Ok(())
        }
        .await;
        match renewed {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("district lease renewed again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), "cannot renew the district lease; the hub will report this box down");
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(config.lease_renew) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
