//! The pipeline: samples in, alerts out. It owns the rule engine, feeds it every sample and a
//! tick each second, and turns rule events into [`Alert`]s. (Telemetry takes its own path
//! through the spool, see [`crate::telemetry`].)
//!
//! It also swaps in reloaded rules (carrying over the state of unchanged rules) and saves the
//! engine's state to the store every `state_save_secs` (a large state only once enough readings
//! were judged to be worth its bytes, see [`SaveBudget`]) and when it stops.
//!
//! After a crash the saved state is older than the readings already acknowledged: before any
//! new reading, [`Pipeline::run`] judges again those the store kept for it
//! (the crash log, [`Store::logged_unsaved`]); the events this repeats are dropped by the dispatcher, which
//! holds the incidents. The state is saved only once every alert judged before it is journaled,
//! so a saved state never hides an alert that was lost with the process.
//!
//! A sensor whose readings keep coming older than its last judged one (its clock went back) is
//! re-anchored after a while instead of never being judged again (see [`crate::sensor_clocks`]).
//!
//! The engine is judged on the monotonic [`Timeline`], never on the wall clock: readings are
//! placed on it and ticks come at its time, so a step of the box's clock neither silences nor
//! bursts no-data and holds. Alerts are labelled in wall-clock time from it ("time unknown"
//! while neither the box's clock nor the device's own time can say).
//!
//! Edges and their policies when full: samples -> pipeline blocks the source (readings wait);
//! pipeline -> alerts blocks (alerts are never dropped).

pub mod alerts;
pub mod standby_copy;

use crate::alert::{Alert, UnsetClockStamp};
use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::sensor_clocks::{ClockProblem, Lags, OutOfOrder, SensorClocks};
use crate::store::Calibration;
use crate::store::Store;
use crate::timeline::Timeline;
use gridwatch_rules::{Engine, Observed, RuleEvent, RuleSet, SubjectId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often time passes for the rules when no sample arrives (completes raise holds).
const TICK: Duration = Duration::from_secs(1);
/// How often the store is asked for incidents people resolved while their rule waited out a
/// clear hold.
const RESOLVED_EVERY: Duration = Duration::from_secs(5);
/// Trend rows written per store transaction when the hourly trend is flushed.
const TREND_ROWS_PER_WRITE: usize = 2_000;
/// Stored readings judged again per store read at start.
const REJUDGE_BATCH: usize = 2_000;
/// How long a save waits for the dispatcher to journal the alerts judged before it; past that
/// the save is left for the next time (the readings since the last one are kept meanwhile).
const JOURNAL_WAIT: Duration = Duration::from_secs(10);

/// What the installer commands ask of the running pipeline.
#[derive(Debug)]
pub enum Command {
    /// Set a sensor's installation baseline; answers with each field's previous calibrated
    /// value.
    Calibrate { sensor: usize, baseline: Vec<(String, f64)>, author: String, readings: usize, reply: oneshot::Sender<Vec<Calibration>> },
}

#[derive(Debug)]
pub struct Pipeline {
    pub engine: Engine,
    /// Baselines set by `gridwatch calibrate` (re-applied after a rule reload).
    pub calibrations: Vec<Calibration>,
    /// Every sample's latest values (for the installer commands) and hourly trend (for the store).
    pub live: Arc<crate::live::LiveTable>,
    pub sensors: Arc<[SensorConfig]>,
    /// Where people read the alerts' times (`time_zone`).
    pub time_zone: chrono_tz::Tz,
    /// Display names of sites and buildings (`[names]`).
    pub places: crate::sinks::text::Places,
    pub alerts: mpsc::Sender<Alert>,
    /// How many of the alerts sent on `alerts` the dispatcher has journaled.
    pub journaled: watch::Receiver<u64>,
    /// How many alerts were sent on `alerts`.
    pub emitted: u64,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Where the engine's state is saved.
    pub store: Store,
    /// Beaten on every tick and sample, for the systemd watchdog.
    pub heartbeat: crate::supervision::Heartbeat,
    /// How often the engine's state is saved (`[rules] state_save_secs`).
    pub save_every: Duration,
    /// Whether the engine's state may differ from what was saved last (true at start: the first
    /// tick begins the no-data watches). An idle engine (no readings, nothing firing) is not
    /// written again: the state file is the largest thing the daemon writes to its SD card.
    pub unsaved: bool,
    /// Runs of out-of-order readings per sensor: when one means the sensor's clock went back.
    pub out_of_order: OutOfOrder<Sample>,
    /// Sensors whose readings come stamped behind this box's clock: when that means a clock
    /// behind, not a backlog.
    pub lags: Lags,
    /// Sensors whose clocks are off (shared with the MQTT source and `/healthz`).
    pub clocks: Arc<SensorClocks>,
    /// The time the engine is judged on.
    pub timeline: Timeline,
    /// Whether a due save is worth its bytes yet.
    pub budget: SaveBudget,
    /// Copies of the state of the sensors heard through the district, for its standby
    /// evaluator (`[cluster] sensors_via_hub`); none: not offered.
    pub standby: Option<standby_copy::StandbyTap>,
    /// (rule, sensor) of the incidents a changed rule held firing, whose rule started afresh: at
    /// their sensor's next readings they go on (the new definition fires too) or are judged
    /// afresh (it sees no problem). See [`Pipeline::settle_afresh`].
    pub afresh: std::collections::HashSet<(String, String)>,
}

/// Bytes of saved rule state a judged reading may cost: a due save of a large state waits until
/// enough readings were judged since the last one (the crash log holds them meanwhile), so a
/// quiet community does not rewrite its whole state every few minutes for a few hundred
/// readings. At 64 B a 200-sensor community saved its 154 KB every 13 minutes, a quarter of what
/// it wrote to its card (docs/BENCHMARKS.md).
const SAVE_BYTES_PER_READING: u64 = 16;
/// Readings judged since the last save that make a due save worth it whatever it costs: they
/// are judged again at start after a crash (a busy box reaches it within its save interval).
const REJUDGED_AT_MOST: u64 = 300_000;
/// A state smaller than this is saved whenever it is due: deferring it would spare little.
const SAVE_DEFER_FLOOR_BYTES: u64 = 64 * 1024;
/// Longest a due save is deferred (it bounds what is judged again at start), or one save
/// interval if that is longer. An hour of a 200-sensor community's readings is judged again at
/// start in well under a second.
const SAVE_DEFERRED_AT_MOST: Duration = Duration::from_secs(3600);

/// The size of the last saved rule state and what was judged since, to decide whether a due
/// save is worth its bytes.
#[derive(Debug, Default)]
pub struct SaveBudget {
    judged_since: u64,
    last_bytes: u64,
    last_at: Option<tokio::time::Instant>,
}

impl SaveBudget {
    fn worth_saving(&self, every: Duration, now: tokio::time::Instant) -> bool {
        self.last_bytes < SAVE_DEFER_FLOOR_BYTES
            || self.judged_since.saturating_mul(SAVE_BYTES_PER_READING) >= self.last_bytes
            || self.judged_since >= REJUDGED_AT_MOST
            || self.last_at.is_none_or(|at| now.duration_since(at) >= every.max(SAVE_DEFERRED_AT_MOST))
    }

    fn saved(&mut self, bytes: u64, now: tokio::time::Instant) {
        *self = SaveBudget { judged_since: 0, last_bytes: bytes, last_at: Some(now) };
    }
}

/// A writer that counts what passes through it.
struct Counting<'a> {
    inner: &'a mut dyn std::io::Write,
    bytes: u64,
}

impl std::io::Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where a batch of rule events came from, to label them for people.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A reading stamped `ts` (believable: the device's own time, or a synchronised box's)
    /// placed on the timeline at `placed`.
    Reading { placed: gridwatch_rules::Millis, ts: gridwatch_rules::Millis },
    /// A tick, or a reading stamped by an unset clock: labelled from the timeline.
    Timeline,
    /// A reading judged again at start, from the crash log: placed and labelled at its own time.
    JudgedAgain,
}

impl Pipeline {
    /// Runs until `samples` is closed and drained, then saves the engine's state.
    pub async fn run(mut self, mut samples: mpsc::Receiver<Sample>, mut reloads: mpsc::Receiver<RuleSet>, mut commands: mpsc::Receiver<Command>) {
        let mut events = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(self.save_every);
        save.tick().await;
        let mut resolved = tokio::time::interval(RESOLVED_EVERY);
        resolved.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut offer = tokio::time::interval(self.standby.as_ref().map_or(Duration::from_secs(3600), |tap| tap.every));
        offer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.hear_readings_within_a_tick();
        self.judge_unsaved(&mut events).await;
        // A box that was down longer than a sensor's no-data time waits that long again before
        // calling it silent: its first reading may still be on its way.
        self.engine.watch_silences_from(self.timeline.now());
        let judged = (0..self.sensors.len()).filter_map(|position| self.engine.last_at(SubjectId(position))).max();
        self.timeline.go_on_after(judged);
        loop {
            tokio::select! {
                biased;
                sample = samples.recv() => match sample {
                    Some(sample) => {
                        self.heartbeat.beat();
                        self.process(sample, &mut events).await;
                    }
                    None => break,
                },
                Some(rules) = reloads.recv() => self.reload(rules),
                Some(command) = commands.recv() => self.command(command).await,
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    let synchronized = self.clock.synchronized();
                    self.metrics.clock_trusted.set(i64::from(synchronized));
                    self.lags.clock_set(synchronized);
                    self.engine.judge_lags(self.timeline.true_time());
                    self.engine.tick(self.timeline.now(), &mut events);
                    self.unsaved |= !events.is_empty();
                    self.emit(&mut events, Source::Timeline).await;
                }
                _ = resolved.tick() => self.end_clear_holds_of_resolved(&mut events).await,
                _ = offer.tick(), if self.standby.as_ref().is_some_and(standby_copy::StandbyTap::moved) => self.offer_standby_copy(),
                _ = save.tick() => {
                    if self.budget.worth_saving(self.save_every, tokio::time::Instant::now()) {
                        self.save().await;
                    }
                    if self.live.trend_due(self.clock.now()) {
                        self.save_trend(false).await;
                    }
                }
            }
        }
        self.save().await;
        self.save_trend(true).await;
    }

    /// Ends the clear holds of the incidents people resolved while their rule waited one out
    /// (a river back inside its class for less than the day its rules wait): the rule clears
    /// now, and a new breach fires again and is told instead of joining an incident a person
    /// closed the work on.
    async fn end_clear_holds_of_resolved(&mut self, events: &mut Vec<RuleEvent>) {
        if self.store.write_problem().is_some() {
            // A stalled or failing card: no read that could wait on its locks holds up the
            // readings; the holds end once it writes again.
            return;
        }
        let resolved = match self.store.resolved_while_firing().await {
            Ok(resolved) => resolved,
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "resolved incidents not read; their clear holds end at the next look");
                return;
            }
        };
        let now = self.timeline.now();
        for (rule, sensor) in resolved {
            if let Some(position) = self.sensors.iter().position(|s| *s.id == *sensor) {
                self.unsaved |= self.engine.end_clear_holds(SubjectId(position), &rule, now, events);
            }
        }
        if !events.is_empty() {
            self.emit(events, Source::Timeline).await;
        }
    }

    /// Merges the trend hours that are over into the store; `whole` also the hour being filled
    /// (at shutdown).
    async fn save_trend(&mut self, whole: bool) {
        let now = self.clock.now();
        let keep_from = now.div_euclid(3_600_000) - crate::trend::KEEP_HOURS;
        loop {
            let (rows, complete) = self.live.take_trend(now, TREND_ROWS_PER_WRITE, whole);
            if !rows.is_empty() {
                if let Err(error) = self.store.add_trend(rows, keep_from).await {
                    // The sensors not reached yet keep their hours for the next flush.
                    tracing::warn!(error = %format!("{error:#}"), "hourly trend not saved; the incident pages' sparklines miss these readings");
                    break;
                }
            }
            if complete {
                break;
            }
        }
    }

    /// A reading ends its sensor's silence at most a tick past the timeline's latest tick: one
    /// placed further ahead (an offset learned from a buffered reading puts a sensor's live
    /// readings ahead by the buffer's age) would make its no-data that much late.
    fn hear_readings_within_a_tick(&mut self) {
        self.engine.hear_readings_ahead_by((TICK.as_millis() as f64 * self.clock.speed().max(1.0)) as gridwatch_rules::Millis);
    }

    /// Whether the engine holds `rule` open on `sensor`: `None` for a building's incident, a
    /// sensor not in the inventory, a rule not in the set (the daemon's own alarms, or a rule
    /// that went) or a check that holds nothing open.
    fn holds_open(engine: &Engine, sensors: &[SensorConfig], rule: &str, sensor: &str) -> Option<bool> {
        let position = sensors.iter().position(|s| *s.id == *sensor)?;
        let rule = engine.rules().iter().position(|r| r.id == rule)?;
        engine.open(SubjectId(position), gridwatch_rules::RuleId(rule)).map(|(open, _)| open)
    }

    /// After a reload: the incidents whose rule the engine held open before (`held_before`, as
    /// (rule, sensor)) and no longer does — its definition changed and its state started afresh —
    /// are settled at their sensor's next readings ([`Pipeline::settle_afresh`]). An incident the
    /// engine did not hold open before (its state lost in a crash) is left as it is: its clear
    /// must still come.
    fn judge_afresh(&mut self, held_before: &std::collections::HashSet<(String, String)>) {
        let (engine, sensors) = (&self.engine, &self.sensors);
        let started_afresh: Vec<(String, String)> =
            held_before.iter().filter(|(rule, sensor)| Self::holds_open(engine, sensors, rule, sensor) == Some(false)).cloned().collect();
        if !started_afresh.is_empty() {
            tracing::info!(incidents = ?started_afresh, "rules changed: these incidents are settled at their sensors' next readings");
            if let Err(error) = self.store.keep_afresh(&started_afresh) {
                self.store.report_failure("keeping the incidents of changed rules (a restart before their next reading forgets them)", &error);
            }
        }
        self.afresh.extend(started_afresh);
    }

    /// After a reading of sensor `position`: each incident of it a changed rule held firing
    /// ([`Pipeline::afresh`]) goes on when the new definition holds it open too (its firing is
    /// the same alarm: not told again — an outside tester's accepted red was sent again as new
    /// after an edit of its orange threshold), and is judged afresh when the new definition sees
    /// no problem at all: its sensor is marked normal, so that its next alarm is told rather than
    /// taken for a repeat (an operator who lowered a firing rule's threshold had its next real
    /// breach told to nobody; [`crate::store::Store::judged_afresh`]). A breach waiting out a hold
    /// waits for the next reading.
    fn settle_afresh(&mut self, position: usize) {
        if self.afresh.is_empty() {
            return;
        }
        let Some(sensor) = self.sensors.get(position).map(|s| s.id.to_string()) else { return };
        let pending: Vec<(String, String)> = self.afresh.iter().filter(|(_, s)| *s == sensor).cloned().collect();
        for key in pending {
            let (rule, sensor) = (&key.0, &key.1);
            let at_rest =
                self.engine.rules().iter().position(|r| r.id == *rule).and_then(|r| self.engine.at_rest(SubjectId(position), gridwatch_rules::RuleId(r)));
            match (Self::holds_open(&self.engine, &self.sensors, rule, sensor), at_rest) {
                (Some(false), Some(false)) => continue,
                (Some(false), Some(true)) => {
                    let now = self.clock.now();
                    match self.store.judged_afresh(|r, s| !(r == rule && s == sensor), "rule changed: judged afresh", now) {
                        Ok(marked) if !marked.is_empty() => {
                            tracing::warn!(incidents = ?marked, rule = %rule, sensor = %sensor, "rule changed: its incident's sensor is judged afresh, and its next alarm is told")
                        }
                        Ok(_) => {}
                        Err(error) => self.store.report_failure("marking the incident of a changed rule (its next alarm may be taken for a repeat)", &error),
                    }
                }
                _ => {}
            }
            if let Err(error) = self.store.settled_afresh(rule, sensor) {
                self.store.report_failure("settling the incident of a changed rule (a restart judges it afresh again)", &error);
            }
            self.afresh.remove(&key);
        }
    }

    fn reload(&mut self, rules: RuleSet) {
        let count = rules.rules.len();
        let held_before = match self.store.firing_incidents() {
            Ok(firing) => firing.into_iter().filter(|(rule, sensor)| Self::holds_open(&self.engine, &self.sensors, rule, sensor) == Some(true)).collect(),
            Err(error) => {
                self.store.report_failure("reading the firing incidents before a reload", &error);
                std::collections::HashSet::new()
            }
        };
        let previous = std::mem::replace(&mut self.engine, Engine::new(RuleSet { rules: Vec::new() }, &[]));
        let (engine, restored) = crate::reload::build_engine(rules, &self.sensors, |engine| engine.take_over(previous), &self.calibrations);
        self.engine = engine;
        self.hear_readings_within_a_tick();
        self.unsaved = true;
        tracing::info!(rules = count, states_kept = restored.checks, states_reset = restored.discarded, "rules reloaded");
        settle_gone_rules(&self.store, &restored.gone_rules, self.clock.now());
        self.judge_afresh(&held_before);
    }

    /// Judges again, in the order they were acknowledged, the stored readings the restored
    /// state has not seen (the crash came before it was saved with them): an older store's
    /// table first, then the crash log.
    async fn judge_unsaved(&mut self, events: &mut Vec<RuleEvent>) {
        self.metrics.rejudging.set(1);
        self.judge_unsaved_readings(events).await;
        self.metrics.rejudging.set(0);
    }

    async fn judge_unsaved_readings(&mut self, events: &mut Vec<RuleEvent>) {
        let sensors = self.sensors.clone();
        let positions: std::collections::HashMap<&str, usize> = sensors.iter().enumerate().map(|(position, s)| (&*s.id, position)).collect();
        let (mut after, mut judged) = (0, 0u64);
        loop {
            let readings = match self.store.unsaved_readings(after, REJUDGE_BATCH).await {
                Ok(readings) => readings,
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "cannot read the readings acknowledged since the last saved rule state; they are not judged again");
                    break;
                }
            };
            let Some(last) = readings.last() else { break };
            after = last.id;
            for reading in readings {
                judged += self.judge_again(&positions, &reading.sensor, reading.ts, &reading.fields, events).await;
            }
            self.count_rejudged(&mut judged);
        }
        let (mut cursor, mut unreadable) = (crate::store::LogCursor::default(), 0);
        loop {
            let (readings, next, torn) = match self.store.logged_unsaved(cursor, REJUDGE_BATCH).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "cannot read the crash log; the readings acknowledged since the last saved rule state are not judged again");
                    break;
                }
            };
            unreadable += torn;
            if next == cursor {
                break;
            }
            cursor = next;
            for reading in readings {
                judged += self.judge_again(&positions, &reading.sensor, reading.ts, &reading.fields, events).await;
            }
            self.count_rejudged(&mut judged);
        }
        if unreadable > 0 {
            self.metrics.crash_log_unreadable_bytes.inc_by(unreadable);
            tracing::warn!(
                bytes = unreadable,
                "parts of the crash log that cannot be read were skipped (a write cut by a power loss, or a damaged card); the readings in them are not judged again"
            );
        }
        let judged = self.metrics.readings_rejudged.get();
        if judged > 0 {
            tracing::warn!(readings = judged, "judged again the readings acknowledged after the last saved rule state (the daemon stopped without saving it)");
        }
    }

    /// Adds a batch's readings judged again to `gridwatch_readings_rejudged_total` as it goes, so
    /// `/metrics` shows the progress of a long catch-up.
    fn count_rejudged(&mut self, judged: &mut u64) {
        if *judged > 0 {
            self.unsaved = true;
            self.metrics.readings_rejudged.inc_by(std::mem::take(judged));
        }
    }

    /// Judges one stored reading again unless the restored state has seen it; 1 if judged.
    async fn judge_again(
        &mut self,
        positions: &std::collections::HashMap<&str, usize>,
        sensor: &str,
        ts: gridwatch_rules::Millis,
        fields: &[(String, f64)],
        events: &mut Vec<RuleEvent>,
    ) -> u64 {
        self.heartbeat.beat();
        let Some(&position) = positions.get(sensor) else { return 0 };
        if self.engine.last_at(SubjectId(position)).is_some_and(|judged_at| ts <= judged_at) {
            return 0;
        }
        self.engine.observe(SubjectId(position), ts, fields, events);
        self.emit(events, Source::JudgedAgain).await;
        1
    }

    async fn save(&mut self) {
        if !self.unsaved {
            return;
        }
        // Not ahead of the journal: an alert judged before this state must be in the store, or a
        // crash right after the save would lose it for good.
        let emitted = self.emitted;
        match tokio::time::timeout(JOURNAL_WAIT, self.journaled.wait_for(|journaled| *journaled >= emitted)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                tracing::error!("alert dispatcher is gone; rule state not saved");
                return;
            }
            Err(_) => {
                tracing::warn!(wait_secs = JOURNAL_WAIT.as_secs(), "rule state not saved yet: alerts judged before it are not journaled yet");
                return;
            }
        }
        // Streamed from the engine into the file: no copy of the state, no whole text in memory.
        let mut bytes = 0;
        let saved = self
            .store
            .save_engine_state_with(|out| {
                let mut counted = Counting { inner: out, bytes: 0 };
                let written = serde_json::to_writer(&mut counted, &self.engine.snapshot_view()).map_err(std::io::Error::other);
                bytes = counted.bytes;
                written
            })
            .await;
        match saved {
            Ok(()) => {
                self.unsaved = false;
                self.budget.saved(bytes, tokio::time::Instant::now());
                self.metrics.rule_state_saves.inc();
                // Every sensor of the inventory, those never judged yet too (their readings stay).
                let judged_until = self
                    .sensors
                    .iter()
                    .enumerate()
                    .map(|(position, s)| (s.id.to_string(), self.engine.last_at(SubjectId(position)).unwrap_or(gridwatch_rules::Millis::MIN)))
                    .collect();
                if let Err(error) = self.store.forget_judged(judged_until).await {
                    tracing::warn!(error = %format!("{error:#}"), "readings judged by the saved rule state not forgotten; they are skipped if judged again");
                }
            }
            // Logged at most once a minute with the store's other failures (a read-only card fails
            // every save), and shown in /healthz.
            Err(error) => self.store.report_failure("saving the rule state (hold timers and baselines may restart after a reboot)", &error),
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Calibrate { sensor, baseline, author, readings, reply } => {
                let Some(id) = self.sensors.get(sensor).map(|config| config.id.clone()) else { return };
                let at_ms = self.clock.now();
                let mut done = Vec::new();
                // Temperature compensation measures from the temperature the box was zeroed at.
                let mut baseline = baseline;
                for (field, level) in self.engine.temperature_levels(SubjectId(sensor)) {
                    if !baseline.iter().any(|(name, _)| **name == *field) {
                        baseline.push((field.to_string(), level));
                    }
                }
                for (field, value) in baseline {
                    let previous = self.engine.baseline(SubjectId(sensor), &field, gridwatch_rules::signal::BaselineSpec::Calibrated);
                    self.engine.set_baseline(SubjectId(sensor), &field, value);
                    let calibration = Calibration { sensor: id.to_string(), field, value, previous, readings, author: author.clone(), at_ms };
                    self.calibrations.retain(|c| !(c.sensor == calibration.sensor && c.field == calibration.field));
                    self.calibrations.push(calibration.clone());
                    done.push(calibration);
                }
                // A box zeroed again is a new box to the rules (replaced, or re-seated): judged
                // against the old one's levels it was a jump, and the incidents the swap opened
                // stayed open on their clear holds (an outside tester).
                let mut events = Vec::new();
                self.engine.zeroed_again(SubjectId(sensor), self.timeline.now(), &mut events);
                self.emit(&mut events, Source::Timeline).await;
                if let Err(error) = self.store.record_calibrations(done.clone()).await {
                    tracing::error!(sensor = %id, error = %format!("{error:#}"), "calibration applied but not stored; it is lost at the next restart");
                }
                tracing::info!(sensor = %id, by = %author, baseline = ?done.iter().map(|c| (&c.field, c.value)).collect::<Vec<_>>(), "baseline calibrated");
                self.unsaved = true;
                self.save().await;
                let _ = reply.send(done);
            }
        }
    }

    async fn process(&mut self, sample: Sample, events: &mut Vec<RuleEvent>) {
        // A sensor re-anchored after its clock went back is shown at its arrival, not hours old
        // (`watch` showed a box reporting every 3 s as 10,802 s old).
        let shown_at = if sample.own_time && !self.timeline.believes(sample.sensor) && self.clock.synchronized() { self.clock.now() } else { sample.ts };
        self.live.record(sample.sensor, shown_at, &sample.fields, !sample.clock_untrusted);
        let started = std::time::Instant::now();
        let subject = SubjectId(sample.sensor);
        let mut placed = self.timeline.place(sample.sensor, sample.ts, sample.own_time);
        // Its clock went back less than the re-anchoring waits for, and its readings caught up
        // with the last judged one: the readings that came meanwhile are judged first (a DO drop
        // within a 3-minute step back was never judged).
        if self.out_of_order.in_run(sample.sensor) && self.engine.last_at(subject).is_none_or(|last| placed >= last) {
            if let Some(run) = self.out_of_order.caught_up(sample.sensor, tokio::time::Instant::now()) {
                // Its clock is right again (or has caught up): it stays where it is; only the
                // run is placed at when its readings came.
                self.judge_run(sample.sensor, run, None, events).await;
                placed = self.timeline.place(sample.sensor, sample.ts, sample.own_time);
            }
        }
        if let Some(stamp) = sample.refused_stamp {
            // Judged where it came; the clock checks see the device's time, ahead or unset.
            self.engine.set_stamp_offset(subject, placed.saturating_sub(stamp));
        } else if sample.own_time {
            self.engine.set_stamp_offset(subject, placed - sample.ts);
        }
        let mut observed = self.engine.observe(subject, placed, &sample.fields, events);
        if observed == Observed::OutOfOrder {
            self.metrics.samples_out_of_order.inc();
            self.engine.heard_unjudged(subject, events);
            if let Some(mut run) = self.out_of_order.refused(sample.sensor, tokio::time::Instant::now(), sample.clone()) {
                run.pop();
                self.judge_run(sample.sensor, run, Some(sample.ts), events).await;
                placed = self.timeline.place(sample.sensor, sample.ts, sample.own_time);
                if sample.own_time {
                    self.engine.set_stamp_offset(subject, placed - sample.ts);
                }
                observed = self.engine.observe(subject, placed, &sample.fields, events);
            }
        }
        self.metrics.rule_evaluation_seconds.observe(started.elapsed().as_secs_f64());
        if observed == Observed::Evaluated {
            self.settle_afresh(sample.sensor);
        }
        match observed {
            Observed::Evaluated => {
                self.metrics.samples_accepted.inc();
                self.budget.judged_since += 1;
                self.out_of_order.in_order(sample.sensor);
                self.unsaved = true;
                if sample.own_time {
                    self.judge_lag(sample.sensor, sample.ts);
                }
            }
            Observed::OutOfOrder => {}
            // A copy of the previous reading (same time, same values) without a `seq` to tell it.
            Observed::Repeat => {
                self.metrics.payloads_rejected.get_or_create(&crate::metrics::ReasonLabel { reason: "repeated_reading".into() }).inc();
            }
            Observed::UnknownSubject => {
                tracing::error!(sensor = sample.sensor, "sample for a sensor the engine does not know");
            }
        }
        if let (Some(tap), Some(seq)) = (self.standby.as_mut(), sample.hub_seq) {
            tap.judged(sample.sensor, seq);
        }
        // A sensor whose time this box learned (its clock went back, or was far ahead) is
        // labelled on this box's clock, not by its own.
        let source =
            if sample.clock_untrusted || !self.timeline.believes(sample.sensor) { Source::Timeline } else { Source::Reading { placed, ts: sample.ts } };
        self.emit(events, source).await;
    }

    /// Offers the district's standby evaluator a copy of the state of the sensors heard through
    /// it, once the alerts judged before it are journaled (else at the next offer).
    fn offer_standby_copy(&mut self) {
        if *self.journaled.borrow() < self.emitted {
            return;
        }
        if let Some(tap) = self.standby.as_mut() {
            tap.offer(&self.engine, &self.sensors);
        }
    }

    /// `sensor`'s clock went back. `run`, the readings that came older than its last judged
    /// one (oldest first, with when each came), is judged first, each placed at when it came as
    /// the run's own times space them; when `reanchor_at` gives the stamp of the reading now
    /// judged after them, the sensor is placed at its arrival from that reading on (its clock
    /// stays back), else it keeps its own time (its clock is right again: an outside re-tester's
    /// box stepped back and then forward was placed an hour back and blind). Its windows go on
    /// when the run lands after its last judged reading (a jump in the run's first readings is
    /// seen against the level before it), and start again when it does not (its clock had run
    /// ahead).
    async fn judge_run(
        &mut self,
        sensor: usize,
        run: Vec<(tokio::time::Instant, Sample)>,
        reanchor_at: Option<gridwatch_rules::Millis>,
        events: &mut Vec<RuleEvent>,
    ) {
        let subject = SubjectId(sensor);
        let now = tokio::time::Instant::now();
        let came = |at: tokio::time::Instant, timeline_now: gridwatch_rules::Millis| {
            timeline_now - now.saturating_duration_since(at).as_millis() as gridwatch_rules::Millis
        };
        let timeline_now = self.timeline.now();
        // The run's own clock against when its last reading came (the reading now judged's,
        // when it is the run's last).
        let offset = match (reanchor_at, run.last()) {
            (Some(ts), _) => timeline_now - ts,
            (None, Some((at, last))) => came(*at, timeline_now) - last.ts,
            (None, None) => return,
        };
        let first = run.first().map_or(timeline_now, |(_, earliest)| earliest.ts.saturating_add(offset));
        let windows_go_on = self.engine.last_at(subject).is_none_or(|last| first > last);
        self.reanchor(sensor, reanchor_at, !windows_go_on);
        for (_, earlier) in run {
            let at = earlier.ts.saturating_add(offset).min(timeline_now);
            if earlier.own_time {
                self.engine.set_stamp_offset(subject, at - earlier.ts);
            }
            if self.engine.observe(subject, at, &earlier.fields, events) == Observed::Evaluated {
                self.metrics.samples_accepted.inc();
                self.budget.judged_since += 1;
            }
            self.emit(events, Source::Timeline).await;
        }
    }

    /// The sensor's clock went back: it is placed at its arrival from its reading stamped `at`
    /// on, when given (baselines and incidents stay; its windows start again when `rewind`),
    /// counted, and warned of once.
    fn reanchor(&mut self, sensor: usize, at: Option<gridwatch_rules::Millis>, rewind: bool) {
        if rewind {
            self.engine.rewind(SubjectId(sensor));
        }
        if let Some(at) = at {
            self.timeline.reanchor(sensor, at);
        }
        self.metrics.sensor_clock_reanchors.inc();
        self.unsaved = true;
        let Some(id) = self.sensors.get(sensor).map(|s| s.id.clone()) else { return };
        if self.clocks.note(sensor, &id, ClockProblem::SteppedBack, tokio::time::Instant::now()) {
            match at {
                Some(at) => {
                    tracing::warn!(sensor = %id, reading_at = %crate::clock::rfc3339(at), "sensor clock went back: its readings came older than the last judged one; placed at their arrival from this reading on, the ones that came meanwhile judged first")
                }
                None => {
                    tracing::warn!(sensor = %id, "sensor clock went back and caught up (or was set right again): the readings that came older than the last judged one were judged at their arrival")
                }
            }
        }
    }

    /// A reading of `sensor` stamped `ts` by its own clock was judged: a sensor whose readings
    /// keep coming stamped hours behind this box's clock, not as a backlog, is listed for
    /// `/healthz`, warned about once, and placed at its arrival from its next reading on (its
    /// red alarm said it began 8 hours before it did: an outside tester). Set right, its clock
    /// lands its readings ahead of the timeline, and the timeline places them at their arrival
    /// again.
    fn judge_lag(&mut self, sensor: usize, ts: gridwatch_rules::Millis) {
        let Some(behind_ms) = self.lags.judged(sensor, ts, self.clock.now()) else { return };
        if self.timeline.believes(sensor) {
            self.timeline.reanchor(sensor, ts);
        }
        let Some(id) = self.sensors.get(sensor).map(|s| s.id.clone()) else { return };
        if self.clocks.note(sensor, &id, ClockProblem::Behind, tokio::time::Instant::now()) {
            tracing::warn!(
                sensor = %id,
                behind_secs = behind_ms / 1000,
                "sensor clock behind this box's: its readings keep coming stamped this far behind, not catching up as a backlog would; placed at their arrival from now on (check its clock)"
            );
        }
    }

    /// Whether an event judged again at start is older than what the store already holds for
    /// its rule and sensor: history (its first judging went out from memory and was lost with a
    /// reboot, or was refused then), which applied now would re-open an incident that closed
    /// after it, and the sensor's next real alarm would be taken for a repeat. Not sent. (A
    /// sensor whose clock went back before a crash loses such an event, the price of this.)
    async fn stale(&self, alert: &crate::alert::Alert) -> bool {
        match self.store.later_event_journaled(&alert.rule, &alert.sensor, alert.at_ms).await {
            Ok(false) => false,
            Ok(true) => {
                self.metrics.alert_repeats.inc();
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "an event judged again is older than what the store holds; not sent");
                true
            }
            // Unknown (the card stalls): sent, the store's own checks decide.
            Err(_) => false,
        }
    }

    async fn emit(&mut self, events: &mut Vec<RuleEvent>, source: Source) {
        worst_fired_first(events);
        for event in events.drain(..) {
            let rule = self.engine.rule(event.rule);
            let Some(sensor) = self.sensors.get(event.subject.0) else { continue };
            self.metrics.count_rule_event(event.kind.as_str());
            let label = match source {
                Source::Reading { placed, ts } => Some(ts + (event.at - placed)),
                Source::JudgedAgain => Some(event.at),
                Source::Timeline => self.timeline.label(event.subject.0, event.at),
            };
            let lasting_ms = event.at - event.since;
            let mut alert = alerts::alert_of(&event, rule, sensor, label.map(|at| at - lasting_ms), self.time_zone, &self.places);
            label_for_people(&mut alert, label.ok_or(UnsetClockStamp { elapsed_ms: self.timeline.elapsed_at(event.at), lasting_ms }), lasting_ms);
            if matches!(source, Source::JudgedAgain) && self.stale(&alert).await {
                continue;
            }
            match self.alerts.send(alert).await {
                Ok(()) => self.emitted += 1,
                Err(_) => tracing::error!(rule = %rule.id, sensor = %sensor.id, "alert dispatcher is gone; alert lost"),
            }
        }
    }
}

/// Puts the alarms that fired at one moment worst first, each in the place of one of them (the
/// clears and changes keep theirs): a house's red then goes out, and its orange of the same
/// reading folds into it, instead of the orange being told a moment before its red (the shipped
/// pack's `tilt-change` is judged before `tilt-sudden`). Left as they are when one rule fired
/// twice for a sensor in the batch (their order is their meaning).
fn worst_fired_first(events: &mut [RuleEvent]) {
    let fired: Vec<usize> = (0..events.len()).filter(|&i| events[i].kind == gridwatch_rules::EventKind::Fired).collect();
    let mut seen = std::collections::HashSet::new();
    if fired.len() < 2 || !fired.iter().all(|&i| seen.insert((events[i].rule, events[i].subject))) {
        return;
    }
    let mut worst_first: Vec<RuleEvent> = fired.iter().map(|&i| events[i]).collect();
    worst_first.sort_by_key(|event| std::cmp::Reverse(event.severity));
    for (slot, event) in fired.into_iter().zip(worst_first) {
        events[slot] = event;
    }
}

/// Stamps `alert` with the wall-clock time `label` (and its breach's start, `lasting_ms` before)
/// or, when that is unknown, says so: nothing stamped by an unset clock reaches a person. The
/// alert's `at_ms` then stays the timeline's (it orders the incident's events), and it keeps
/// its monotonic stamp, for the store to re-stamp it once the clock is set.
fn label_for_people(alert: &mut Alert, label: Result<gridwatch_rules::Millis, UnsetClockStamp>, lasting_ms: gridwatch_rules::Millis) {
    match label {
        Ok(at) => {
            alert.at_ms = at;
            alert.at = crate::clock::rfc3339(at);
            alert.since = crate::clock::rfc3339(at - lasting_ms);
        }
        Err(stamp) => {
            alert.stamped_by_unset_clock(stamp.elapsed_ms);
            alert.unset_clock = Some(stamp);
        }
    }
}

/// Marks normal the sensor of each firing incident whose rule is gone (removed or renamed, at a
/// reload or while the daemon was stopped): nothing judges it any more, so nothing would ever
/// clear it — its reminders would go on saying it fires, next to the renamed rule's own incident
/// (an outside tester). A person still resolves it; the daemon's own alarms are no rules and are
/// left alone.
pub fn settle_gone_rules(store: &Store, gone: &std::collections::BTreeSet<String>, now_ms: i64) {
    if gone.is_empty() {
        return;
    }
    match store.judged_afresh(|rule, _| !gone.contains(rule), "rule removed or renamed: no longer judged by it", now_ms) {
        Ok(marked) if !marked.is_empty() => {
            tracing::warn!(incidents = ?marked, rules = ?gone, "rules gone: their incidents' sensors are no longer judged by them")
        }
        Ok(_) => {}
        Err(error) => store.report_failure("marking the incidents of rules that are gone (they keep saying they fire)", &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarms_of_one_moment_go_worst_first_and_clears_and_changes_keep_their_places() {
        use gridwatch_rules::{EventKind, RuleId, Severity, SubjectId};
        let event = |rule: usize, kind: EventKind, severity: Severity| RuleEvent {
            rule: RuleId(rule),
            subject: SubjectId(0),
            kind,
            severity,
            previous: None,
            variant: None,
            value: 1.0,
            at: 1_000,
            since: 1_000,
            agreement: None,
        };
        let order = |events: &[RuleEvent]| events.iter().map(|e| (e.rule.0, e.severity)).collect::<Vec<_>>();
        let mut batch = vec![
            event(0, EventKind::Fired, Severity::Alarm),
            event(1, EventKind::Cleared, Severity::Warning),
            event(2, EventKind::Fired, Severity::Danger),
            event(3, EventKind::Changed, Severity::Warning),
            event(4, EventKind::Fired, Severity::Warning),
        ];
        worst_fired_first(&mut batch);
        assert_eq!(order(&batch), vec![(2, Severity::Danger), (1, Severity::Warning), (0, Severity::Alarm), (3, Severity::Warning), (4, Severity::Warning)]);
        // One rule fired twice (a clear between): left as it is.
        let mut twice =
            vec![event(0, EventKind::Fired, Severity::Alarm), event(0, EventKind::Cleared, Severity::Alarm), event(0, EventKind::Fired, Severity::Danger)];
        worst_fired_first(&mut twice);
        assert_eq!(order(&twice), vec![(0, Severity::Alarm), (0, Severity::Alarm), (0, Severity::Danger)]);
    }

    #[test]
    fn a_large_state_is_saved_once_enough_readings_pay_for_it_or_it_waited_long_enough() {
        let every = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let mut budget = SaveBudget::default();
        assert!(budget.worth_saving(every, start), "never saved: save");
        budget.saved(200_000, start);
        budget.judged_since = 200;
        assert!(!budget.worth_saving(every, start + every), "200 readings do not pay for 200 kB");
        budget.judged_since = 200_000 / SAVE_BYTES_PER_READING;
        assert!(budget.worth_saving(every, start + every));
        budget.judged_since = 1;
        assert!(!budget.worth_saving(every, start + SAVE_DEFERRED_AT_MOST - every), "deferred up to an hour");
        assert!(budget.worth_saving(every, start + SAVE_DEFERRED_AT_MOST), "deferred at most this long");
        budget.saved(20_000_000, start);
        budget.judged_since = REJUDGED_AT_MOST;
        assert!(budget.worth_saving(every, start + every), "no more readings than this are judged again at start");
        budget.saved(4_000, start);
        assert!(budget.worth_saving(every, start + every), "a small state is saved whenever due");
    }
}
