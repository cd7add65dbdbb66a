//! The MQTT ingest connection: subscribes to the telemetry topics, turns each message into a
//! [`Sample`] (or a counted [`Rejection`]), hands samples to the pipeline (rules) and every
//! message to the spooler, which acknowledges it once its reading is on disk.
//!
//! One task owns `poll()`; it never publishes or acknowledges itself. Acknowledgements are
//! manual (rumqttc would otherwise PUBACK before we have the reading). The session is
//! persistent (fixed client id, `clean_session = false`); when the broker reports that it has
//! no session, the task subscribes again. Connection errors are retried with exponential
//! backoff and jitter. Hand-offs block when the next stage is behind (readings are never
//! dropped here).
//!
//! Shutdown: stop taking messages (those not acknowledged are sent again by the broker next
//! time), keep polling until the spooler's last acknowledgements are out, then disconnect.

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{Config, SensorIndex};
use crate::metrics::Metrics;
use crate::mqtt::payload::{self, Rejection};
use crate::mqtt::topics::TopicRouter;
use crate::sample::Sample;
use crate::sensor_clocks::{ClockProblem, SensorClocks};
use gridwatch_rules::Millis;
use crate::telemetry::spooler::Spooled;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, SubscribeFilter};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Turns messages into samples.
#[derive(Debug)]
pub struct Ingest {
    router: TopicRouter,
    max_payload_bytes: usize,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Last `seq` seen per sensor, to count readings lost on the way.
    last_seq: HashMap<usize, u64>,
    /// A reading stamped further ahead of our clock is refused (`[ingest] max_future_skew_secs`).
    max_future_skew_ms: Millis,
    /// Sensors whose clocks are off, for `/healthz` and one WARN each.
    clocks: Arc<SensorClocks>,
    /// The inventory (shared), to name a sensor in a warning.
    inventory: Arc<[crate::config::SensorConfig]>,
}

impl Ingest {
    pub fn new(config: &Config, sensors: SensorIndex, clock: Clock, metrics: Arc<Metrics>, clocks: Arc<SensorClocks>) -> Ingest {
        let max_future_skew_ms = Millis::try_from(config.ingest.max_future_skew.as_millis()).unwrap_or(Millis::MAX / 2);
        let inventory = sensors.sensors().clone();
        Ingest { inventory, router: TopicRouter::new(config, sensors), max_payload_bytes: config.mqtt.max_payload_bytes, clock, metrics, last_seq: HashMap::new(), max_future_skew_ms, clocks }
    }

    /// Decodes one message; a rejection is already counted when this returns it.
    pub fn sample(&mut self, topic: &str, payload: &[u8]) -> Result<Sample, Rejection> {
        self.metrics.messages_received.inc();
        let result = self.router.route(topic).and_then(|route| {
            let now = self.clock.now();
            let decoded = payload::decode(payload, self.max_payload_bytes, route.renames)?;
            if let Some(ahead_secs) = decoded.ts.and_then(|ts| payload::ahead_of_clock(ts, now, self.max_future_skew_ms)) {
                return Err(self.ahead_of_clock(route.sensor, ahead_secs));
            }
            let clock_untrusted = decoded.ts.is_none() && !self.clock.trusted();
            Ok(Sample { sensor: route.sensor, ts: decoded.ts.unwrap_or(now), seq: decoded.seq, fields: decoded.fields, clock_untrusted })
        });
        match &result {
            Ok(sample) => self.count_gap(sample),
            Err(rejection) => {
                self.metrics.reject(rejection);
                tracing::debug!(topic, reason = rejection.reason(), error = %rejection, "message rejected");
            }
        }
        result
    }

    /// A reading stamped too far ahead: refused before it is judged, stored or shown (it would
    /// make every later reading of the sensor "out of order"); the sensor is listed for
    /// `/healthz` and warned about once.
    fn ahead_of_clock(&self, sensor: usize, ahead_secs: i64) -> Rejection {
        let id: Arc<str> = self.inventory.get(sensor).map_or_else(|| Arc::from(sensor.to_string()), |s| s.id.clone());
        if self.clocks.note(sensor, &id, ClockProblem::Ahead, tokio::time::Instant::now()) {
            tracing::warn!(sensor = %id, ahead_secs, max_future_skew_ms = self.max_future_skew_ms, "sensor clock ahead of this box: its readings are refused until it is set (or this box's clock is behind)");
        }
        Rejection::AheadOfClock { sensor: id.to_string(), ahead_secs }
    }

    /// A device's `seq` jumping forward means readings were lost before they reached us (a
    /// restart of the device resets it, which is not a gap).
    fn count_gap(&mut self, sample: &Sample) {
        let Some(seq) = sample.seq else { return };
        if let Some(last) = self.last_seq.insert(sample.sensor, seq) {
            if seq > last + 1 {
                self.metrics.sequence_gaps.inc_by(seq - last - 1);
                tracing::warn!(sensor = sample.sensor, from = last, to = seq, "readings missing (sequence gap)");
            }
        }
    }
}

/// What the ingest connection hands its messages to.
#[derive(Debug)]
pub struct Outputs {
    /// The pipeline (rules); readings only.
    pub samples: mpsc::Sender<Sample>,
    /// The spooler; every message, to be kept and acknowledged in order.
    pub spool: mpsc::Sender<Spooled>,
    /// The inventory, for the spool (sensor ids by position); `None` when nothing is stored
    /// (no InfluxDB), so readings are not copied for nothing.
    pub stored: Option<Arc<[crate::config::SensorConfig]>>,
    /// Workers' actions relayed on the ack topic, applied to incidents in the store.
    pub acks: Option<(crate::incident_acks::AckConfig, crate::store::Store)>,
    /// The MQTT bus: up while connected, down from the first connection error.
    pub bus: crate::buses::BusHandle,
}

/// Runs the ingest connection until `shutdown`; then stops handing on messages (dropping the
/// outputs lets the pipeline and spooler finish), keeps polling until `acks_flushed` so the last
/// acknowledgements go out, and disconnects.
pub async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut ingest: Ingest,
    outputs: Outputs,
    shutdown: CancellationToken,
    acks_flushed: CancellationToken,
) {
    let mut filters: Vec<SubscribeFilter> =
        ingest.router.filters().into_iter().map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce)).collect();
    if let Some((acks, _)) = &outputs.acks {
        filters.push(SubscribeFilter::new(acks.topic.clone(), QoS::AtLeastOnce));
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut warned_rejections = 0u64;
    let metrics = ingest.metrics.clone();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) if outputs.acks.as_ref().is_some_and(|(acks, _)| *publish.topic == *acks.topic) => {
                if let Some((acks, store)) = &outputs.acks {
                    apply_ack(acks, store, &publish.payload, &metrics).await;
                }
                if outputs.spool.send(Spooled { sample: None, ack: Some(publish) }).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let spooled = match ingest.sample(&publish.topic, &publish.payload) {
                    Ok(sample) => {
                        if sample.clock_untrusted && outputs.stored.is_some() {
                            metrics.drop_telemetry("clock_not_set", 1);
                        }
                        let keep = outputs.stored.as_ref().filter(|_| !sample.clock_untrusted).and_then(|sensors| crate::telemetry::spooler::kept(sensors, &sample));
                        if outputs.samples.send(sample).await.is_err() {
                            break;
                        }
                        Spooled { sample: keep, ack: Some(publish) }
                    }
                    Err(rejection) => {
                        // Warn for the first few, then only count: a broken device must not flood the log.
                        if warned_rejections < 20 {
                            warned_rejections += 1;
                            tracing::warn!(topic = %publish.topic, reason = rejection.reason(), error = %rejection, "message rejected");
                        }
                        Spooled { sample: None, ack: Some(publish) }
                    }
                };
                if outputs.spool.send(spooled).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                metrics.mqtt_connects.inc();
                metrics.mqtt_connected.set(1);
                outputs.bus.up();
                backoff.reset();
                tracing::info!(session_present = ack.session_present, "connected to MQTT broker");
                if !ack.session_present {
                    if let Err(error) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(error = %error, "could not queue the telemetry subscriptions");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack.return_codes.iter().filter(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure)).count();
                if refused > 0 {
                    tracing::error!(refused, "broker refused telemetry subscriptions; readings on those topics will not arrive");
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connection_errors.inc();
                metrics.mqtt_connected.set(0);
                outputs.bus.down(chrono::Utc::now().timestamp_millis());
                let delay = backoff.next_delay();
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    drop(outputs);
    // Messages arriving now are not acknowledged: the broker keeps them for next time.
    let flush = async {
        let mut flushed_at: Option<tokio::time::Instant> = None;
        loop {
            if acks_flushed.is_cancelled() && flushed_at.get_or_insert_with(tokio::time::Instant::now).elapsed() > Duration::from_millis(100) {
                break;
            }
            tokio::select! {
                _ = eventloop.poll() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
    disconnect(client, eventloop).await;
}

/// Verifies a worker's action from the ack topic and applies it to its incident.
async fn apply_ack(acks: &crate::incident_acks::AckConfig, store: &crate::store::Store, payload: &[u8], metrics: &Metrics) {
    let now = chrono::Utc::now().timestamp_millis();
    let result = match acks.verify(payload, now) {
        Ok(verified) => {
            let store = store.clone();
            let applied = tokio::task::spawn_blocking(move || {
                let actor = format!("{} (hub)", verified.by);
                store.incident_action(verified.incident, verified.action, &actor, verified.note.as_deref(), now).map(|state| (verified.incident, state))
            })
            .await;
            match applied {
                Ok(Ok((incident, state))) => {
                    tracing::info!(incident, state = %state, "worker's action applied from the ack topic");
                    "applied"
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "worker's action from the ack topic not applied");
                    "not_applicable"
                }
                Err(_) => "not_applicable",
            }
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.as_str(), "message on the ack topic refused");
            refusal.as_str()
        }
    };
    metrics.incident_acks.get_or_create(&crate::metrics::ReasonLabel { reason: result.into() }).inc();
}

/// Sends DISCONNECT and polls until it is out (at most a second).
async fn disconnect(client: AsyncClient, mut eventloop: EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let flush = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_without_its_own_time_is_marked_while_the_clock_is_unset() {
        let config = Config::parse("t.toml", "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n", std::path::Path::new(".")).unwrap();
        let booted_at_1970 = Clock::Accelerated { start: 86_400_000, started: std::time::Instant::now(), speed: 1.0 };
        let sensors = SensorIndex::new(config.sensors.clone());
        let mut ingest = Ingest::new(&config, sensors.clone(), booted_at_1970, Arc::new(Metrics::new()), Arc::default());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        assert!(ingest.sample(topic, br#"{"x": 0.3}"#).unwrap().clock_untrusted, "stamped by an unset clock");
        let own_time = ingest.sample(topic, br#"{"x": 0.3, "ts": 1795392000000}"#).unwrap();
        assert!(!own_time.clock_untrusted, "the device's own time is kept");
        let mut ingest = Ingest::new(&config, sensors, Clock::System, Arc::new(Metrics::new()), Arc::default());
        assert!(!ingest.sample(topic, br#"{"x": 0.3}"#).unwrap().clock_untrusted);
    }

    #[tokio::test]
    async fn a_reading_stamped_past_the_skew_is_refused_counted_and_its_sensor_listed() {
        let config = Config::parse("t.toml", "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[ingest]\nmax_future_skew_secs = 60\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n", std::path::Path::new(".")).unwrap();
        let (metrics, clocks) = (Arc::new(Metrics::new()), Arc::new(SensorClocks::default()));
        let mut ingest = Ingest::new(&config, SensorIndex::new(config.sensors.clone()), Clock::System, metrics.clone(), clocks.clone());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let now = Clock::System.now();
        let in_skew = ingest.sample(topic, format!(r#"{{"x": 0.3, "ts": {}}}"#, now + 50_000).as_bytes()).unwrap();
        assert_eq!(in_skew.ts, now + 50_000, "within the skew the device's time is kept");
        let refused = ingest.sample(topic, format!(r#"{{"x": 0.3, "ts": {}}}"#, now + 86_400_000).as_bytes()).unwrap_err();
        assert_eq!(refused.reason(), "ahead_of_clock");
        assert!(matches!(&refused, Rejection::AheadOfClock { sensor, ahead_secs } if sensor == "house-07" && (86_399..=86_400).contains(ahead_secs)), "{refused:?}");
        assert_eq!(metrics.rejected("ahead_of_clock"), 1);
        assert_eq!(clocks.current(tokio::time::Instant::now()), vec![("house-07".into(), ClockProblem::Ahead)]);
        assert!(ingest.sample(topic, br#"{"x": 0.3}"#).is_ok(), "the sensor's next reading is taken");
    }
}
