//! The MQTT ingest connection: subscribes to the telemetry topics, turns each message into a
//! [`Sample`] (or a counted [`Rejection`]), hands samples to the pipeline (rules) and every
//! message to the spooler, which acknowledges it once its reading is on disk.
//!
//! One task owns `poll()`; it never publishes or acknowledges itself. Acknowledgements are
//! manual (rumqttc would otherwise PUBACK before we have the reading). The session is
//! persistent (fixed client id, `clean_session = false`); when the broker reports that it has
//! no session, the task subscribes again. Connection errors are retried with exponential
//! backoff and jitter. A packet over `max_packet_bytes` breaks the connection (rumqttc will not
//! read it) and would come back with every reconnect: it is cleared out of the session
//! ([`crate::sources::mqtt::drain`]), counted as `too_large`, and the connection is made again at once.
//! The MQTT bus counts as up only once a connection has held for [`Ingest::stable_after`]
//! (half of `bus_down_after_secs`, at most 10 s): a connection that keeps dropping is down, and
//! `bus-down` names its last error. Hand-offs block when the next stage is behind (readings are never
//! dropped here).
//!
//! Shutdown: stop taking messages (those not acknowledged are sent again by the broker next
//! time), keep polling until the spooler's last acknowledgements are out, then disconnect.

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{Config, SensorIndex};
use crate::metrics::Metrics;
use crate::sample::Sample;
use crate::sensor_clocks::{ClockProblem, SensorClocks};
use crate::sources::mqtt::payload::{self, Rejection};
use crate::sources::mqtt::topics::TopicRouter;
use crate::telemetry::spooler::{Ack, Spooled};
use gridwatch_rules::Millis;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, SubscribeFilter};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many recent readings per sensor are remembered to recognise one sent twice.
pub(crate) const RECENT_READINGS: usize = 16;

/// Turns messages into samples.
#[derive(Debug)]
pub struct Ingest {
    router: TopicRouter,
    /// Size, field count and field name limits of one payload.
    limits: payload::Limits,
    /// Distinct field names a sensor may use (`[ingest] max_field_names_per_sensor`).
    max_field_names: usize,
    /// The field names each sensor has used; never more than `max_field_names` per sensor.
    field_names: HashMap<usize, HashSet<Box<str>>>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Last `seq` seen per sensor, to count readings lost on the way.
    last_seq: HashMap<usize, u64>,
    /// The last few readings of each sensor that sent a `seq` (seq, own time, fields' hash), to
    /// refuse one that comes twice; at most [`RECENT_READINGS`] per sensor.
    recent: HashMap<usize, VecDeque<(u64, Option<Millis>, u64)>>,
    /// Copies of readings without `ts` or `seq` (a device's or broker's resend).
    timeless: super::copies::TimelessCopies,
    /// A reading stamped further ahead of our clock is refused (`[ingest] max_future_skew_secs`).
    max_future_skew_ms: Millis,
    /// Sensors whose clocks are off, for `/healthz` and one WARN each.
    clocks: Arc<SensorClocks>,
    /// The inventory (shared), to name a sensor in a warning.
    inventory: Arc<[crate::config::SensorConfig]>,
    /// The broker and session, for clearing oversized packets out of it.
    mqtt: crate::config::MqttConfig,
    /// How long a connection must hold before the bus counts as up again.
    stable_after: Duration,
    /// The furthest the wall clock has stood ahead of elapsed time this run: a device's time is
    /// checked for "ahead" against this track, which a backward step of the box's clock does not
    /// move — a synchronised box clock stepped back an hour (set by hand, a wrong time source)
    /// refused every device's correct time as ahead, and a tilting house raised nothing (an
    /// outside tester). The rules' timeline goes on along the same track (`crate::timeline`).
    furthest_offset_ms: Millis,
}

/// Longest a drain of oversized messages may take (a 256 MB packet over a slow link).
const DRAIN_BUDGET: Duration = Duration::from_secs(60);

impl Ingest {
    pub fn new(config: &Config, sensors: SensorIndex, clock: Clock, metrics: Arc<Metrics>, clocks: Arc<SensorClocks>) -> Ingest {
        let max_future_skew_ms = Millis::try_from(config.ingest.max_future_skew.as_millis()).unwrap_or(Millis::MAX / 2);
        let inventory = sensors.sensors().clone();
        let limits = payload::Limits {
            max_bytes: config.mqtt.max_payload_bytes,
            max_fields: config.ingest.max_fields_per_reading,
            max_field_name_bytes: config.ingest.max_field_name_bytes,
        };
        Ingest {
            inventory,
            router: TopicRouter::new(config, sensors),
            limits,
            max_field_names: config.ingest.max_field_names_per_sensor,
            field_names: HashMap::new(),
            clock,
            metrics,
            last_seq: HashMap::new(),
            recent: HashMap::new(),
            timeless: super::copies::TimelessCopies::default(),
            max_future_skew_ms,
            clocks,
            mqtt: config.mqtt.clone(),
            stable_after: (config.alerts.bus_down_after / 2).min(Duration::from_secs(10)),
            furthest_offset_ms: clock.now() - clock.elapsed_ms(),
        }
    }

    /// The time a device's own time is checked against for "ahead": the wall clock `now`, or
    /// where it would be had it never stepped back this run.
    fn ahead_reference(&mut self, now: Millis) -> Millis {
        let elapsed = self.clock.elapsed_ms();
        self.furthest_offset_ms = self.furthest_offset_ms.max(now - elapsed);
        self.furthest_offset_ms + elapsed
    }

    /// Clears packets over `max_packet_bytes` out of the session after the connection broke on
    /// one; counts and logs each. False when there was none or the drain failed.
    async fn clear_oversized(&mut self, log: &mut crate::sources::mqtt::rejection_log::RejectionLog) -> bool {
        let limit = self.mqtt.max_packet_bytes;
        match crate::sources::mqtt::drain::drain(&self.mqtt, limit, DRAIN_BUDGET).await {
            Ok(dropped) => {
                for message in &dropped {
                    self.metrics.messages_received.inc();
                    let rejection = Rejection::TooLarge { size: message.size, limit };
                    self.metrics.reject(&rejection);
                    log.note(&message.topic, &rejection, tokio::time::Instant::now());
                }
                !dropped.is_empty()
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "could not clear an oversized message out of the MQTT session; retrying");
                false
            }
        }
    }

    /// The payload limits (the drain of oversized messages uses the size).
    pub fn limits(&self) -> payload::Limits {
        self.limits
    }

    fn sensor_id(&self, sensor: usize) -> String {
        self.inventory.get(sensor).map_or_else(|| sensor.to_string(), |s| s.id.to_string())
    }

    /// Refuses a reading that brings a sensor past its distinct field names, else takes its
    /// new names in.
    fn check_field_names(&mut self, sensor: usize, fields: &[(String, f64)]) -> Result<(), Rejection> {
        let known = self.field_names.entry(sensor).or_default();
        let new: HashSet<&str> = fields.iter().map(|(name, _)| name.as_str()).filter(|name| !known.contains(*name)).collect();
        if known.len() + new.len() > self.max_field_names {
            let field = new.iter().next().map_or_else(String::new, |name| name.chars().take(64).collect());
            let limit = self.max_field_names;
            return Err(Rejection::TooManyFieldNames { sensor: self.sensor_id(sensor), field, limit });
        }
        known.extend(new.into_iter().map(Box::from));
        Ok(())
    }

    /// Refuses a reading this sensor already sent: the same `seq`, own time and values (a
    /// broker's redelivery, or a device that repeats itself); without `seq` or `ts`, the same
    /// values again sooner than half its usual interval ([`super::copies`]).
    fn check_duplicate(&mut self, sample: &Sample, own_ts: Option<Millis>, now: Millis) -> Result<(), Rejection> {
        let Some(seq) = sample.seq else {
            // Without `seq` or its own time, a copy is told by its values and how soon it came.
            if own_ts.is_none() && self.timeless.is_copy(sample.sensor, fields_hash(&sample.fields), now) {
                return Err(Rejection::DuplicateCopy(self.sensor_id(sample.sensor)));
            }
            return Ok(());
        };
        let hash = fields_hash(&sample.fields);
        let recent = self.recent.entry(sample.sensor).or_default();
        if recent.contains(&(seq, own_ts, hash)) {
            return Err(Rejection::DuplicateSeq { sensor: self.sensor_id(sample.sensor), seq });
        }
        if recent.len() == RECENT_READINGS {
            recent.pop_front();
        }
        recent.push_back((seq, own_ts, hash));
        Ok(())
    }

    /// Decodes one message; a rejection is already counted when this returns it.
    pub fn sample(&mut self, topic: &str, payload: &[u8]) -> Result<Sample, Rejection> {
        self.metrics.messages_received.inc();
        let now = self.clock.now();
        let decoded = self.router.route(topic).and_then(|route| Ok((route.sensor, payload::decode(payload, &self.limits, route.payload)?)));
        self.judge(decoded, now, None, topic)
    }

    /// [`Ingest::sample`] of a message the broker delivered as retained (kept from before this
    /// subscription): refused when it carries no time of its own — it would be judged as a
    /// reading taken now, and a box's stale alarm value raised a false alarm at every new
    /// session (an outside tester).
    pub fn sample_retained(&mut self, topic: &str, payload: &[u8]) -> Result<Sample, Rejection> {
        match self.sample(topic, payload) {
            Ok(sample) if !sample.own_time => {
                let rejection = Rejection::RetainedWithoutTime(self.sensor_id(sample.sensor));
                self.metrics.reject(&rejection);
                Err(rejection)
            }
            other => other,
        }
    }

    /// [`Ingest::sample`] of a message that names its sensor by id rather than by topic (a
    /// district's 4G sensor, whose subject ends with its id): the default convention's payload.
    /// `stored_ms` is when the district's stream stored it, on the hub's clock: the reference
    /// its own time is judged against, and its time when it carries none — also while this
    /// box's clock is not set, and after the reading waited in the stream through a cut link.
    #[cfg(feature = "cluster")]
    pub fn sample_of(&mut self, sensor: &str, payload: &[u8], stored_ms: Millis) -> Result<Sample, Rejection> {
        self.metrics.messages_received.inc();
        let now = self.clock.now();
        let decoded = self.router.route_id(sensor).and_then(|route| Ok((route.sensor, payload::decode(payload, &self.limits, route.payload)?)));
        self.judge(decoded, now, Some(stored_ms), sensor)
    }

    /// The checks after decoding (skew, duplicate, field names), the gap count, and the
    /// rejection's count (`stored`: a synchronised clock's time of the message, judged against
    /// instead of this box's; `source`: the topic or sensor, for the debug log).
    fn judge(&mut self, decoded: Result<(usize, payload::Decoded), Rejection>, now: Millis, stored: Option<Millis>, source: &str) -> Result<Sample, Rejection> {
        let result = decoded.and_then(|(sensor, decoded)| {
            let synchronized = stored.is_some() || self.clock.synchronized();
            let reference = stored.unwrap_or(now);
            let ahead_reference = stored.unwrap_or_else(|| self.ahead_reference(now));
            // A time too far ahead is refused, not the reading: judged at its arrival, it cannot
            // become the time every later reading is "older" than, and a box whose clock runs 8
            // minutes fast is still judged (an outside tester: every reading refused, a real
            // jump never red).
            let ahead_secs = decoded.ts.and_then(|ts| payload::ahead_of_clock(ts, ahead_reference, synchronized, self.max_future_skew_ms));
            if let Some(ahead_secs) = ahead_secs {
                let refused = self.ahead_of_clock(sensor, ahead_secs);
                self.metrics.reject(&refused);
            }
            // So is a time before 2000 or years behind: a clock never set (seconds since the
            // device booted), or set years wrong.
            let never_set = decoded.ts.is_some_and(|ts| payload::clock_not_set(ts, reference, synchronized));
            if never_set {
                let refused = self.clock_not_set(sensor);
                self.metrics.reject(&refused);
            }
            let refused_stamp = decoded.ts.filter(|_| ahead_secs.is_some() || never_set);
            let own_ts = decoded.ts.filter(|_| refused_stamp.is_none());
            for rejection in &decoded.dropped {
                // The reading's other fields are judged; the field is counted and left out.
                self.metrics.reject(rejection);
                tracing::debug!(topic = source, reason = rejection.reason(), error = %rejection, "field left out of a reading");
            }
            let clock_untrusted = own_ts.is_none() && !synchronized;
            let sample = Sample {
                sensor,
                ts: own_ts.unwrap_or(reference),
                seq: decoded.seq,
                fields: decoded.fields,
                clock_untrusted,
                own_time: own_ts.is_some() || stored.is_some(),
                refused_stamp,
                hub_seq: None,
            };
            self.check_duplicate(&sample, decoded.ts, now)?;
            self.check_field_names(sensor, &sample.fields)?;
            Ok(sample)
        });
        match &result {
            Ok(sample) => self.count_gap(sample.sensor, sample.seq),
            Err(rejection) => {
                self.metrics.reject(rejection);
                tracing::debug!(topic = source, reason = rejection.reason(), error = %rejection, "message rejected");
            }
        }
        result
    }

    /// A reading stamped too far ahead: its time is refused (it would make every later reading
    /// of the sensor "out of order") and counted; the sensor is listed for `/healthz` and warned
    /// about once.
    fn ahead_of_clock(&self, sensor: usize, ahead_secs: i64) -> Rejection {
        let (id, news) = self.note_clock(sensor, ClockProblem::Ahead);
        if news {
            tracing::warn!(sensor = %id, ahead_secs, max_future_skew_ms = self.max_future_skew_ms, "sensor clock ahead of this box: its readings are judged at their arrival until it is set (or this box's clock is behind)");
        }
        Rejection::AheadOfClock { sensor: id.to_string(), ahead_secs }
    }

    /// A reading stamped before 2000 or years behind: its time is refused (a clock never set, or
    /// set years wrong) and counted; the sensor is listed for `/healthz` and warned about once.
    fn clock_not_set(&self, sensor: usize) -> Rejection {
        let (id, news) = self.note_clock(sensor, ClockProblem::NotSet);
        if news {
            tracing::warn!(sensor = %id, "sensor clock never set (it stamps its readings before 2000, or years behind): they are judged at their arrival until it is set (NTP, RTC battery, GPS firmware)");
        }
        Rejection::ClockNotSet { sensor: id.to_string() }
    }

    /// Lists the sensor's clock `problem` for `/healthz`: its id, and whether it is news (to be
    /// warned about).
    fn note_clock(&self, sensor: usize, problem: ClockProblem) -> (Arc<str>, bool) {
        let id: Arc<str> = self.inventory.get(sensor).map_or_else(|| Arc::from(sensor.to_string()), |s| s.id.clone());
        let news = self.clocks.note(sensor, &id, problem, tokio::time::Instant::now());
        (id, news)
    }

    /// A device's `seq` jumping forward means readings were lost before they reached us. A jump
    /// back (a restart of the device resets it) or forward by more than [`MAX_SEQUENCE_GAP`] (a
    /// wrapped or renumbered counter) is no gap: it is counted as a restart.
    fn count_gap(&mut self, sensor: usize, seq: Option<u64>) {
        let Some(seq) = seq else { return };
        let Some(last) = self.last_seq.insert(sensor, seq) else { return };
        let id = || self.inventory.get(sensor).map(|s| s.id.clone());
        match seq.checked_sub(last) {
            Some(0 | 1) => {}
            Some(step) if step - 1 <= MAX_SEQUENCE_GAP => {
                self.metrics.sequence_gaps.inc_by(step - 1);
                tracing::warn!(sensor = id().as_deref().unwrap_or("?"), from = last, to = seq, "readings missing (sequence gap)");
            }
            _ => {
                self.metrics.sequence_restarts.inc();
                tracing::info!(sensor = id().as_deref().unwrap_or("?"), from = last, to = seq, "device sequence restarted or renumbered (not counted as gaps)");
            }
        }
    }
}

/// The most readings a device's `seq` may skip and still count as readings lost: further is a
/// restart or a renumbering (a device sending every 10 s loses 10,000 readings in more than a day).
const MAX_SEQUENCE_GAP: u64 = 10_000;

/// A hash of a reading's names and values (bit for bit), to tell a repeat from a new reading
/// under a reused `seq`.
pub(crate) fn fields_hash(fields: &[(String, f64)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, value) in fields {
        name.hash(&mut hasher);
        value.to_bits().hash(&mut hasher);
    }
    hasher.finish()
}

/// What the ingest connection hands its messages to.
#[derive(Debug)]
pub struct Outputs {
    /// The pipeline (rules); readings only.
    pub samples: mpsc::Sender<Sample>,
    /// The spooler; every message, to be kept and acknowledged in order.
    pub spool: mpsc::Sender<Spooled>,
    /// The inventory, for the spool and the crash log (sensor ids by position); `None` when
    /// nothing is kept (the installer's live view). The crash log needs every acknowledged
    /// reading whether or not InfluxDB is configured: after a crash it is judged again.
    pub stored: Option<Arc<[crate::config::SensorConfig]>>,
    /// Workers' actions relayed on the ack topic, applied to incidents in the store.
    pub acks: Option<(crate::sources::mqtt::incident_acks::AckConfig, crate::store::Store)>,
    /// The MQTT bus: up while connected, down from the first connection error.
    pub bus: crate::sources::buses::BusHandle,
}

/// Where a decoded message goes: its sample to the rules, its reading (to keep) and its
/// acknowledgement to the spooler. Shared by the ingest connection and the district's 4G
/// sensors (`crate::cluster::sensors`), so both judge, keep and acknowledge alike.
#[derive(Debug)]
pub struct Handoff<'a> {
    pub samples: &'a mpsc::Sender<Sample>,
    pub spool: &'a mpsc::Sender<Spooled>,
    /// See [`Outputs::stored`].
    pub stored: Option<&'a Arc<[crate::config::SensorConfig]>>,
    pub metrics: &'a Metrics,
}

impl Handoff<'_> {
    /// Hands on one message as [`Ingest::sample`] decoded it (a rejection is counted and
    /// logged by then); `ack` goes out once the spooler has kept what there is to keep. False
    /// when the pipeline or the spooler is gone (stopping).
    pub async fn hand_on(&self, decoded: Result<Sample, Rejection>, ack: Ack) -> bool {
        let spooled = match decoded {
            Ok(sample) => {
                if sample.clock_untrusted && self.stored.is_some() {
                    self.metrics.drop_telemetry("clock_not_set", 1);
                }
                let keep = self.stored.filter(|_| !sample.clock_untrusted).and_then(|sensors| crate::telemetry::spooler::kept(sensors, &sample));
                if self.samples.send(sample).await.is_err() {
                    return false;
                }
                Spooled { sample: keep, ack: Some(ack) }
            }
            Err(_) => Spooled { sample: None, ack: Some(ack) },
        };
        self.spool.send(spooled).await.is_ok()
    }
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
    let mut filters: Vec<SubscribeFilter> = ingest.router.filters().into_iter().map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce)).collect();
    if let Some((acks, _)) = &outputs.acks {
        if let Some(topic) = &acks.topic {
            filters.push(SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce));
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    // When the current connection will have held long enough to call the bus up.
    let mut stable_at: Option<tokio::time::Instant> = None;
    let mut rejection_log = crate::sources::mqtt::rejection_log::RejectionLog::new(Duration::from_secs(60));
    let metrics = ingest.metrics.clone();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(stable_at.unwrap_or_else(tokio::time::Instant::now)), if stable_at.is_some() => {
                stable_at = None;
                outputs.bus.up();
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) if outputs.acks.as_ref().is_some_and(|(acks, _)| acks.topic.as_deref() == Some(&*publish.topic)) => {
                if let Some((acks, store)) = &outputs.acks {
                    // The age by the box's clock: MQTT says nothing of when the hub sent it.
                    let now = ingest.clock.now();
                    crate::sources::mqtt::incident_acks::apply(acks, store, &publish.payload, &metrics, now, now, "the ack topic").await;
                }
                if outputs.spool.send(Spooled { sample: None, ack: Some(Ack::Mqtt(publish)) }).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let decoded =
                    if publish.retain { ingest.sample_retained(&publish.topic, &publish.payload) } else { ingest.sample(&publish.topic, &publish.payload) };
                if let Err(rejection) = &decoded {
                    // Counted already; logged once per reason and minute: a broken device must not flood the log.
                    rejection_log.note(&publish.topic, rejection, tokio::time::Instant::now());
                }
                let handoff = Handoff { samples: &outputs.samples, spool: &outputs.spool, stored: outputs.stored.as_ref(), metrics: &metrics };
                if !handoff.hand_on(decoded, Ack::Mqtt(publish)).await {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                metrics.mqtt_connects.inc();
                metrics.mqtt_connected.set(1);
                stable_at = Some(tokio::time::Instant::now() + ingest.stable_after);
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
                stable_at = None;
                let oversized = oversized(&error);
                let reason = match oversized {
                    Some(size) => format!("a message of {size} bytes is over max_packet_bytes ({})", ingest.mqtt.max_packet_bytes),
                    None => error.to_string(),
                };
                outputs.bus.failed(ingest.clock.now(), &reason);
                if oversized.is_some() && ingest.clear_oversized(&mut rejection_log).await {
                    backoff.reset();
                    continue;
                }
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

/// The size of the packet the connection broke on, when it broke on one over the limit.
fn oversized(error: &rumqttc::ConnectionError) -> Option<usize> {
    match error {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(size))) => Some(*size),
        _ => None,
    }
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
        let config = Config::parse(
            "t.toml",
            "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let booted_at_1970 = Clock::starting_at(86_400_000, false);
        let sensors = SensorIndex::new(config.sensors.clone());
        let mut ingest = Ingest::new(&config, sensors.clone(), booted_at_1970, Arc::new(Metrics::new()), Arc::default());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        assert!(ingest.sample(topic, br#"{"x": 0.3}"#).unwrap().clock_untrusted, "stamped by an unset clock");
        let own_time = ingest.sample(topic, br#"{"x": 0.3, "ts": 1795392000000}"#).unwrap();
        assert!(!own_time.clock_untrusted, "the device's own time is kept");
        let mut ingest = Ingest::new(&config, sensors, Clock::accelerated(1.0), Arc::new(Metrics::new()), Arc::default());
        assert!(!ingest.sample(topic, br#"{"x": 0.3}"#).unwrap().clock_untrusted);
    }

    /// A 4G sensor's reading is judged against when the district stored it, whatever this
    /// box's clock says: a reading stamped 15 minutes ahead of that has its time refused even
    /// while the box's clock is not set (it would have blinded the sensor until re-anchored) and
    /// is judged when the district stored it, and one without a time takes the district's.
    #[cfg(feature = "cluster")]
    #[test]
    fn a_district_reading_is_judged_against_the_time_the_district_stored_it() {
        let config = Config::parse(
            "t.toml",
            "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"house-17\"\nkind = \"tilt\"\nsite = \"north-lane\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let unset = Clock::starting_at(1_795_392_000_000, false);
        let mut ingest = Ingest::new(&config, SensorIndex::new(config.sensors.clone()), unset, Arc::new(Metrics::new()), Arc::default());
        let stored = 1_795_392_000_000;
        let ahead = format!(r#"{{"x": 0.3, "ts": {}}}"#, stored + 900_000);
        let ahead = ingest.sample_of("house-17", ahead.as_bytes(), stored).unwrap();
        assert_eq!((ahead.ts, ahead.refused_stamp), (stored, Some(stored + 900_000)), "15 min ahead of the district's clock: judged when it was stored");
        let untimed = ingest.sample_of("house-17", br#"{"x": 0.3}"#, stored).unwrap();
        assert_eq!((untimed.ts, untimed.clock_untrusted, untimed.own_time), (stored, false, true));
        let timed = ingest.sample_of("house-17", format!(r#"{{"x": 0.3, "ts": {}}}"#, stored - 5_000).as_bytes(), stored).unwrap();
        assert_eq!(timed.ts, stored - 5_000);
    }

    #[tokio::test]
    async fn a_time_stamped_past_the_skew_is_refused_counted_and_its_reading_judged_at_its_arrival() {
        let config = Config::parse("t.toml", "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[ingest]\nmax_future_skew_secs = 60\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n", std::path::Path::new(".")).unwrap();
        let (metrics, clocks) = (Arc::new(Metrics::new()), Arc::new(SensorClocks::default()));
        let mut ingest = Ingest::new(&config, SensorIndex::new(config.sensors.clone()), Clock::accelerated(1.0), metrics.clone(), clocks.clone());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let now = Clock::System.now();
        let in_skew = ingest.sample(topic, format!(r#"{{"x": 0.3, "ts": {}}}"#, now + 50_000).as_bytes()).unwrap();
        assert_eq!((in_skew.ts, in_skew.own_time, in_skew.refused_stamp), (now + 50_000, true, None), "within the skew the device's time is kept");
        // An outside tester's box whose clock ran 8 minutes fast had every reading refused: a
        // real jump was never red. Its time is refused; the reading is judged at its arrival.
        let ahead = ingest.sample(topic, format!(r#"{{"x": 0.4, "ts": {}}}"#, now + 86_400_000).as_bytes()).unwrap();
        assert_eq!(ahead.refused_stamp, Some(now + 86_400_000), "{ahead:?}");
        assert!(!ahead.own_time && (ahead.ts - now).abs() < 10_000, "at its arrival: {ahead:?}");
        assert_eq!(ahead.fields, [("x".to_string(), 0.4)]);
        assert_eq!(metrics.rejected("ahead_of_clock"), 1);
        assert_eq!(clocks.current(tokio::time::Instant::now()), vec![("house-07".into(), ClockProblem::Ahead)]);
        assert!(ingest.sample(topic, br#"{"x": 0.3}"#).is_ok(), "the sensor's next reading is taken");

        // A box numbering its readings: those whose time was refused came, and are no gap (an
        // outside tester's log said "readings missing (sequence gap)" of every one of them).
        let numbered = |seq: u64, ts: Millis| format!(r#"{{"x": 0.3, "seq": {seq}, "ts": {ts}}}"#);
        assert!(ingest.sample(topic, numbered(1, now).as_bytes()).is_ok());
        assert!(ingest.sample(topic, numbered(2, now + 86_400_000).as_bytes()).is_ok());
        assert!(ingest.sample(topic, numbered(3, now + 86_400_000).as_bytes()).is_ok());
        assert!(ingest.sample(topic, numbered(4, now + 1_000).as_bytes()).is_ok());
        assert_eq!((metrics.rejected("ahead_of_clock"), metrics.sequence_gaps.get()), (3, 0));
        assert!(ingest.sample(topic, numbered(7, now + 2_000).as_bytes()).is_ok());
        assert_eq!(metrics.sequence_gaps.get(), 2, "5 and 6 never came");
    }

    #[tokio::test]
    async fn a_time_before_2000_is_a_clock_never_set_counted_and_its_reading_judged_at_its_arrival() {
        // An outside tester: boxes that stamp seconds since they booted, or 1970 dates, had every
        // reading refused as `bad_timestamp` — a real 0.2° jump never red, and installers told only
        // that the box "sent nothing" while it sent every 2 s.
        let config = Config::parse(
            "t.toml",
            "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let (metrics, clocks) = (Arc::new(Metrics::new()), Arc::new(SensorClocks::default()));
        let mut ingest = Ingest::new(&config, SensorIndex::new(config.sensors.clone()), Clock::accelerated(1.0), metrics.clone(), clocks.clone());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let now = Clock::System.now();
        for (i, ts) in [r#"3600"#, r#"3660"#, r#""1970-01-01T01:02:00Z""#].into_iter().enumerate() {
            let sample = ingest.sample(topic, format!(r#"{{"x": 0.4, "seq": {i}, "ts": {ts}}}"#).as_bytes()).unwrap_or_else(|e| panic!("{ts}: {e}"));
            assert!(!sample.own_time && (sample.ts - now).abs() < 10_000, "at its arrival: {sample:?}");
            assert_eq!(sample.refused_stamp, Some(3_600_000 + 60_000 * i as Millis), "the clock checks see the device's time");
            assert_eq!(sample.fields, [("x".to_string(), 0.4)]);
        }
        assert_eq!((metrics.rejected("clock_not_set"), metrics.rejected("bad_timestamp"), metrics.sequence_gaps.get()), (3, 0, 0));
        assert_eq!(clocks.current(tokio::time::Instant::now()), vec![("house-07".into(), ClockProblem::NotSet)]);
        let set = ingest.sample(topic, format!(r#"{{"x": 0.4, "seq": 3, "ts": {now}}}"#).as_bytes()).unwrap();
        assert_eq!((set.ts, set.own_time, set.refused_stamp), (now, true, None), "once set, its time is its own");
    }

    fn limited_ingest(metrics: Arc<Metrics>) -> Ingest {
        let text = "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[ingest]\nmax_field_names_per_sensor = 3\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n[[sensor]]\nid = \"house-08\"\nkind = \"tilt\"\nsite = \"north-lane\"\n";
        let config = Config::parse("t.toml", text, std::path::Path::new(".")).unwrap();
        Ingest::new(&config, SensorIndex::new(config.sensors.clone()), Clock::System, metrics, Arc::default())
    }

    #[test]
    fn a_sensor_past_its_distinct_field_names_is_refused_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let mut ingest = limited_ingest(metrics.clone());
        let (a, b) = ("gridwatch/north-lane/house-07/telemetry", "gridwatch/north-lane/house-08/telemetry");
        assert!(ingest.sample(a, br#"{"x": 1, "y": 2}"#).is_ok());
        assert!(ingest.sample(a, br#"{"x": 1, "t": 2}"#).is_ok(), "a third name is within the cap");
        let refused = ingest.sample(a, br#"{"x": 1, "u": 2}"#).unwrap_err();
        assert!(matches!(&refused, Rejection::TooManyFieldNames { sensor, field, limit: 3 } if sensor == "house-07" && field == "u"), "{refused:?}");
        assert!(ingest.sample(a, br#"{"y": 1, "t": 2, "x": 3}"#).is_ok(), "known names still pass");
        assert!(ingest.sample(b, br#"{"u": 1, "v": 2, "w": 3}"#).is_ok(), "each sensor has its own names");
        assert_eq!(metrics.rejected("too_many_field_names"), 1);
    }

    /// A box without `ts` or `seq` whose spike was sent twice (its broker's acknowledgement lost):
    /// the copy 40 s later is refused and counted, so two copies of one spike never look like
    /// two readings that agree (`tilt-sudden`'s red on a one-box house, an outside tester).
    #[tokio::test(start_paused = true)]
    async fn a_timeless_reading_sent_again_soon_is_refused_as_a_copy() {
        let metrics = Arc::new(Metrics::new());
        let text = "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n";
        let config = Config::parse("t.toml", text, std::path::Path::new(".")).unwrap();
        let clock = Clock::Accelerated { start: 1_795_392_000_000, started: tokio::time::Instant::now(), speed: 1.0, synchronized: true };
        let mut ingest = Ingest::new(&config, SensorIndex::new(config.sensors.clone()), clock, metrics.clone(), Arc::default());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        for _ in 0..4 {
            assert!(ingest.sample(topic, br#"{"x": 0.52, "y": -0.31}"#).is_ok());
            tokio::time::advance(Duration::from_secs(300)).await;
        }
        assert!(ingest.sample(topic, br#"{"x": 1.37, "y": -0.31}"#).is_ok(), "the spike");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(ingest.sample(topic, br#"{"x": 1.37, "y": -0.31}"#).unwrap_err(), Rejection::DuplicateCopy("house-07".into()));
        tokio::time::advance(Duration::from_secs(260)).await;
        assert!(ingest.sample(topic, br#"{"x": 0.52, "y": -0.31}"#).is_ok(), "the next reading");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(ingest.sample(topic, br#"{"x": 0.52, "y": -0.31}"#).is_ok(), "the same values a whole interval later: a quiet wall");
        assert_eq!(metrics.rejected("duplicate_copy"), 1);
    }

    #[test]
    fn a_reading_sent_twice_is_counted_once_as_a_duplicate() {
        let metrics = Arc::new(Metrics::new());
        let mut ingest = limited_ingest(metrics.clone());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let reading = br#"{"x": 0.25, "seq": 41, "ts": 1795392000000}"#;
        assert_eq!(ingest.sample(topic, reading).unwrap().seq, Some(41));
        let again = ingest.sample(topic, reading).unwrap_err();
        assert_eq!(again, Rejection::DuplicateSeq { sensor: "house-07".into(), seq: 41 });
        assert!(
            ingest.sample(topic, br#"{"x": 0.25, "seq": 41, "ts": 1795392060000}"#).is_ok(),
            "the same seq at another time is a new reading (device restarted)"
        );
        assert!(ingest.sample(topic, br#"{"x": 0.30, "seq": 42}"#).is_ok());
        assert!(ingest.sample(topic, br#"{"x": 0.30, "seq": 42}"#).is_err(), "without a time, the same seq and values repeat");
        assert!(ingest.sample(topic, br#"{"x": 0.30}"#).is_ok() && ingest.sample(topic, br#"{"x": 0.30}"#).is_ok(), "no seq, no pace yet: taken");
        assert_eq!((metrics.rejected("duplicate_seq"), metrics.sequence_gaps.get()), (2, 0));
        // A retained message (kept by the broker from before) is taken only with its own time.
        assert_eq!(ingest.sample_retained(topic, br#"{"x": 0.9}"#).unwrap_err().reason(), "retained_without_time");
        assert!(ingest.sample_retained(topic, br#"{"x": 0.9, "ts": 1795392120000}"#).is_ok());
        assert_eq!(metrics.rejected("retained_without_time"), 1);
    }

    #[test]
    fn a_sequence_that_jumps_back_or_far_ahead_is_a_restart_not_billions_of_gaps() {
        let metrics = Arc::new(Metrics::new());
        let mut ingest = limited_ingest(metrics.clone());
        let topic = "gridwatch/north-lane/house-07/telemetry";
        let mut send = |seq: u64| assert!(ingest.sample(topic, format!(r#"{{"x": 0.1, "seq": {seq}}}"#).as_bytes()).is_ok(), "{seq}");
        send(5);
        send(8);
        assert_eq!((metrics.sequence_gaps.get(), metrics.sequence_restarts.get()), (2, 0), "6 and 7 lost");
        send(4_000_000_000);
        assert_eq!((metrics.sequence_gaps.get(), metrics.sequence_restarts.get()), (2, 1), "a jump of billions is a renumbering");
        send(u64::MAX);
        send(0);
        send(1);
        assert_eq!((metrics.sequence_gaps.get(), metrics.sequence_restarts.get()), (2, 3), "a wrap is a restart, and no overflow");
        send(10_002);
        assert_eq!(metrics.sequence_gaps.get(), 2 + 10_000, "the largest gap still counted as one");
    }

    /// The ingest connection marks its bus down on the daemon's clock, the one `buses::watch`
    /// judges the grace time on: a box whose clock reads 2 January 1970 (paused tokio time, ten
    /// minutes on) sends its bus-down alarm saying so, instead of never (a wall-clock `since`
    /// would lie decades after the watcher's now).
    #[tokio::test(start_paused = true)]
    async fn the_bus_goes_down_on_the_daemons_clock() {
        let port = gridwatch_tests::free_port();
        let text =
            format!("state_dir = \"s\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n");
        let config = Config::parse("t.toml", &text, std::path::Path::new(".")).unwrap();
        let clock = Clock::starting_at(86_400_000, false);
        tokio::time::advance(Duration::from_secs(600)).await;
        let sensors = SensorIndex::new(config.sensors.clone());
        let buses = crate::sources::buses::Buses::new(sensors.clone(), &[]);
        let ingest = Ingest::new(&config, sensors, clock, Arc::new(Metrics::new()), Arc::default());
        let (client, eventloop) = AsyncClient::new(crate::sources::mqtt::options(&config.mqtt, "ingest"), 16);
        let ((samples, _samples), (spool, _spool)) = (mpsc::channel(1), mpsc::channel(1));
        let outputs = Outputs { samples, spool, stored: None, acks: None, bus: buses.mqtt() };
        let (shutdown, acks_flushed) = (CancellationToken::new(), CancellationToken::new());
        acks_flushed.cancel();
        tokio::spawn(run(client, eventloop, ingest, outputs, shutdown.clone(), acks_flushed));
        let (alerts, mut received) = mpsc::channel(4);
        tokio::spawn(crate::sources::buses::watch(buses, Duration::from_secs(30), alerts, clock, shutdown.clone()));
        let alert = tokio::time::timeout(Duration::from_secs(3600), received.recv()).await.expect("a bus-down alarm within the hour").unwrap();
        shutdown.cancel();
        assert_eq!((alert.rule.as_str(), alert.event), (crate::sources::buses::BUS_DOWN_RULE, crate::alert::Event::Fired));
        assert!(alert.since.starts_with("1970-01-02T00:10:0"), "down since the box's own time, ten minutes after it started: {}", alert.since);
        assert!((86_400_000 + 630_000..86_400_000 + 700_000).contains(&alert.at_ms), "sent after the 30 s grace on the same clock: {}", alert.at_ms);
    }
}
