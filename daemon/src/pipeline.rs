//! The pipeline: samples in, alerts out. It owns the rule engine, feeds it every sample and a
//! tick each second, and turns rule events into [`Alert`]s. (Telemetry takes its own path
//! through the spool, see [`crate::telemetry`].)
//!
//! It also swaps in reloaded rules (carrying over the state of unchanged rules) and saves the
//! engine's state to the store every minute and when it stops.
//!
//! Edges and their policies when full: samples -> pipeline blocks the source (readings wait);
//! pipeline -> alerts blocks (alerts are never dropped).

use crate::alert::Alert;
use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::store::Store;
use gridwatch_rules::{Engine, Observed, RuleEvent, RuleSet, SubjectId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often time passes for the rules when no sample arrives (completes raise holds).
const TICK: Duration = Duration::from_secs(1);
/// How often the engine's state is saved to the store.
const SAVE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Pipeline {
    pub engine: Engine,
    pub sensors: Arc<[SensorConfig]>,
    pub alerts: mpsc::Sender<Alert>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Where the engine's state is saved.
    pub store: Store,
    /// Beaten on every tick and sample, for the systemd watchdog.
    pub heartbeat: crate::supervision::Heartbeat,
}

impl Pipeline {
    /// Runs until `samples` is closed and drained, then saves the engine's state.
    pub async fn run(mut self, mut samples: mpsc::Receiver<Sample>, mut reloads: mpsc::Receiver<RuleSet>) {
        let mut events = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.tick().await;
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
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    self.engine.tick(self.clock.now(), &mut events);
                    self.emit(&mut events).await;
                }
                _ = save.tick() => self.save().await,
            }
        }
        self.save().await;
    }

    fn reload(&mut self, rules: RuleSet) {
        let count = rules.rules.len();
        let (engine, restored) = crate::reload::build_engine(rules, &self.sensors, Some(&self.engine.snapshot()));
        self.engine = engine;
        tracing::info!(rules = count, states_kept = restored.checks, states_reset = restored.discarded, "rules reloaded");
    }

    async fn save(&self) {
        let snapshot = self.engine.snapshot();
        let saved = match serde_json::to_string(&snapshot) {
            Ok(json) => self.store.save_engine_state(json, self.clock.now()).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = saved {
            tracing::error!(error = %format!("{error:#}"), "rule state not saved; hold timers and baselines may restart after a reboot");
        }
    }

    async fn process(&mut self, sample: Sample, events: &mut Vec<RuleEvent>) {
        match self.engine.observe(SubjectId(sample.sensor), sample.ts, &sample.fields, events) {
            Observed::Evaluated => {
                self.metrics.samples_accepted.inc();
            }
            Observed::OutOfOrder => {
                self.metrics.samples_out_of_order.inc();
            }
            Observed::UnknownSubject => {
                tracing::error!(sensor = sample.sensor, "sample for a sensor the engine does not know");
            }
        }
        self.emit(events).await;
    }

    async fn emit(&mut self, events: &mut Vec<RuleEvent>) {
        for event in events.drain(..) {
            let rule = self.engine.rule(event.rule);
            let Some(sensor) = self.sensors.get(event.subject.0) else { continue };
            self.metrics.count_rule_event(event.kind.as_str());
            let alert = Alert::new(&event, rule, sensor);
            if self.alerts.send(alert).await.is_err() {
                tracing::error!(rule = %rule.id, sensor = %sensor.id, "alert dispatcher is gone; alert lost");
            }
        }
    }
}
