//! The pipeline: samples in, alerts and telemetry out. It owns the rule engine, feeds it every
//! sample and a tick each second, turns rule events into [`Alert`]s and forwards samples to the
//! telemetry writer.
//!
//! Edges and their policies when full: samples -> pipeline blocks the source (readings wait);
//! pipeline -> alerts blocks (alerts are never dropped); pipeline -> telemetry drops the sample
//! for storage only and counts it (`telemetry_points_dropped{reason="queue_full"}`) — rules still
//! saw it.

use crate::alert::Alert;
use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::metrics::Metrics;
use crate::sample::Sample;
use gridwatch_rules::{Engine, Observed, RuleEvent, SubjectId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often time passes for the rules when no sample arrives (completes raise holds).
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Pipeline {
    pub engine: Engine,
    pub sensors: Arc<[SensorConfig]>,
    pub alerts: mpsc::Sender<Alert>,
    /// The telemetry writer's queue, when InfluxDB is configured.
    pub telemetry: Option<mpsc::Sender<Sample>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Pipeline {
    /// Runs until `samples` is closed and drained.
    pub async fn run(mut self, mut samples: mpsc::Receiver<Sample>) {
        let mut events = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                sample = samples.recv() => match sample {
                    Some(sample) => self.process(sample, &mut events).await,
                    None => break,
                },
                _ = tick.tick() => {
                    self.engine.tick(self.clock.now(), &mut events);
                    self.emit(&mut events).await;
                }
            }
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
        if let Some(telemetry) = &self.telemetry {
            if telemetry.try_send(sample).is_err() {
                self.metrics.drop_telemetry("queue_full", 1);
            }
        }
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
