//! The standby evaluator of a box's sensors with their own 4G link: while the box is down, the
//! active hub judges them from the district's stream, so a dead box does not leave a house with
//! such a sensor unwatched (docs/district.md, "Sensors with their own 4G link").
//!
//! The box's side ([`offer`]): every copy of the rule state of its 4G sensors the pipeline
//! offers (`crate::pipeline::standby_copy`) goes into the KV bucket [`super::EVAL_BUCKET`] under
//! the box's id, as an [`EvalCopy`]: that state, the stream sequence it covers, the box's rule
//! files, the sensors (and the other boxes of their buildings, which agreement counts), the
//! payload limits, time zone and place names — everything the hub needs to judge as the box
//! would, and no secret.
//!
//! The hub's side ([`Standby`], run by `hub::standby`): the copy's rules compiled, its state
//! restored, then each reading after the covered sequence judged and each event made into the
//! same alert the box would send, marked `"standby": true` with its `key`
//! `<sensor>:<rule>:<event>:<at_ms>`. The box, once back, judges the same readings from its own
//! consumer (which did not move while it was down) and sends the same events: a receiver drops
//! the second by that key, made of fields both messages carry.
//!
//! Invariants: the engine is pure, so the same copy and the same readings give the same events
//! with the same keys, whichever hub judges them and however often; a copy never covers a
//! reading whose alerts the box had not journaled (the pipeline's invariant).

use crate::config::{Place, SensorConfig};
use crate::pipeline::standby_copy::JudgedCopy;
use crate::sources::mqtt::payload::{self, Limits};
use async_nats::jetstream;
use gridwatch_rules::snapshot::Snapshot;
use gridwatch_rules::{Engine, RuleSet, RuleSource, SubjectId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Largest copy put in KV (a NATS message is 1 MB by default): a box whose 4G sensors' state
/// deflates past it logs it, and the district judges them only when it is back.
const MAX_COPY_BYTES: usize = 900 * 1024;
/// Largest copy the hub inflates.
const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

/// What the box's pipeline offers and what goes with it into the copy.
#[derive(Debug)]
pub struct Source {
    pub copies: watch::Receiver<Option<Arc<JudgedCopy>>>,
    /// The rule files (`[rules] paths`) and whether the built-in packs come first.
    pub rule_paths: Vec<PathBuf>,
    pub builtin_packs: bool,
    pub time_zone: chrono_tz::Tz,
    pub places: crate::sinks::text::Places,
    /// The box's payload limits (`[mqtt] max_payload_bytes`, `[ingest]`).
    pub limits: Limits,
    /// The box's answers to devices' clocks (`[ingest]`).
    pub clocks: crate::config::IngestConfig,
    /// Where the ids of the sensors the copy in KV judged go, for the pipeline's next copy
    /// ([`crate::pipeline::standby_copy::StandbyTap::earlier`]).
    pub earlier: Arc<std::sync::Mutex<Vec<String>>>,
}

/// What the box puts in KV for the hub to judge its 4G sensors from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalCopy {
    pub box_id: String,
    pub district: String,
    /// The stream sequence of the last reading the state judged: the hub goes on after it.
    pub covered: u64,
    pub builtin_packs: bool,
    /// The box's rule files: name and text.
    pub rules: Vec<(String, String)>,
    pub sensors: Vec<CopiedSensor>,
    pub state: Snapshot,
    pub max_payload_bytes: usize,
    pub max_fields: usize,
    pub max_field_name_bytes: usize,
    /// A reading stamped further ahead of when the district stored it is refused.
    pub max_future_skew_ms: i64,
    /// A sensor whose readings come older than its last judged one this many times in a row…
    pub reanchor_after_readings: u32,
    /// …and for this long is judged again from its current time (its clock went back).
    pub reanchor_after_ms: u64,
    pub time_zone: String,
    /// Display names of the sites and buildings of [`EvalCopy::sensors`].
    pub places: BTreeMap<String, String>,
}

/// A sensor of the copy: as the inventory has it, and whether it reports through the district.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopiedSensor {
    pub id: String,
    pub kind: String,
    pub site: String,
    pub building: Option<String>,
    pub grid: Option<String>,
    pub structure: Option<String>,
    pub storeys: Option<u8>,
    pub tags: BTreeMap<String, String>,
    pub interval_ms: u64,
    pub baseline: BTreeMap<String, f64>,
    pub location: Option<[f64; 2]>,
    /// Heard through the district: judged by the standby (the others only count in their
    /// building).
    pub judged: bool,
}

impl CopiedSensor {
    fn of(sensor: &SensorConfig, judged: bool) -> CopiedSensor {
        CopiedSensor {
            id: sensor.id.to_string(),
            kind: sensor.kind.as_str().into(),
            site: sensor.place.site.to_string(),
            building: sensor.place.building.as_deref().map(Into::into),
            grid: sensor.place.grid.as_deref().map(Into::into),
            structure: sensor.place.structure.as_deref().map(Into::into),
            storeys: sensor.place.storeys,
            tags: sensor.tags.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
            interval_ms: sensor.interval.as_millis() as u64,
            baseline: sensor.baseline.clone(),
            location: sensor.location,
            judged,
        }
    }

    fn config(&self) -> Result<SensorConfig, String> {
        Ok(SensorConfig {
            id: self.id.as_str().into(),
            kind: self.kind.parse().map_err(|error| format!("sensor {}: {error}", self.id))?,
            place: Arc::new(Place {
                site: self.site.as_str().into(),
                building: self.building.as_deref().map(Into::into),
                grid: self.grid.as_deref().map(Into::into),
                structure: self.structure.as_deref().map(Into::into),
                storeys: self.storeys,
            }),
            tags: self.tags.clone().into(),
            interval: Duration::from_millis(self.interval_ms),
            baseline: self.baseline.clone(),
            location: self.location,
        })
    }
}

impl EvalCopy {
    /// The copy of `judged`: its sensors, and the other sensors of their buildings.
    fn new((box_id, district): (&str, &str), inventory: &[SensorConfig], judged: &JudgedCopy, rules: &[RuleSource], source: &Source) -> EvalCopy {
        let heard = |position: usize| judged.sensors.contains(&position);
        let houses: Vec<(&str, &str)> =
            judged.sensors.iter().filter_map(|&p| inventory.get(p)).filter_map(|s| Some((&*s.place.site, s.place.building.as_deref()?))).collect();
        let in_a_house = |s: &SensorConfig| s.place.building.as_deref().is_some_and(|b| houses.contains(&(&*s.place.site, b)));
        let sensors: Vec<CopiedSensor> =
            inventory.iter().enumerate().filter(|(p, s)| heard(*p) || in_a_house(s)).map(|(p, s)| CopiedSensor::of(s, heard(p))).collect();
        let mut places = BTreeMap::new();
        for sensor in &sensors {
            if let Some(name) = source.places.site(&sensor.site) {
                places.insert(sensor.site.clone(), name.to_string());
            }
            if let Some((building, name)) = sensor.building.as_deref().and_then(|b| Some((b, source.places.building(&sensor.site, b)?))) {
                places.insert(format!("{}/{building}", sensor.site), name.to_string());
            }
        }
        EvalCopy {
            box_id: box_id.into(),
            district: district.into(),
            covered: judged.covered,
            builtin_packs: source.builtin_packs,
            rules: rules.iter().map(|r| (r.name.clone(), r.text.clone())).collect(),
            sensors,
            state: judged.state.clone(),
            max_payload_bytes: source.limits.max_bytes,
            max_fields: source.limits.max_fields,
            max_field_name_bytes: source.limits.max_field_name_bytes,
            max_future_skew_ms: source.clocks.max_future_skew.as_millis() as i64,
            reanchor_after_readings: source.clocks.reanchor_after_readings,
            reanchor_after_ms: source.clocks.reanchor_after.as_millis() as u64,
            time_zone: source.time_zone.name().into(),
            places,
        }
    }

    /// Deflated JSON.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        serde_json::to_writer(&mut encoder, self)?;
        encoder.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<EvalCopy, String> {
        let mut json = Vec::new();
        flate2::read::ZlibDecoder::new(bytes).take(MAX_INFLATED_BYTES + 1).read_to_end(&mut json).map_err(|e| format!("does not inflate: {e}"))?;
        if json.len() as u64 > MAX_INFLATED_BYTES {
            return Err(format!("inflates past {MAX_INFLATED_BYTES} bytes"));
        }
        serde_json::from_slice(&json).map_err(|error| error.to_string())
    }
}

/// The rule sources the box runs, read again when a copy is made; the last that compiled is
/// kept (a file being edited does not reach the district).
fn rule_sources(source: &Source, last: &mut Option<Vec<RuleSource>>) {
    let read = match crate::rule_files::read_all(&source.rule_paths) {
        Ok(read) => read,
        Err(error) => {
            tracing::debug!(error = %error, "rule files not read for the district's standby copy; the last read goes");
            return;
        }
    };
    if last.as_ref().is_some_and(|l| l.iter().map(|r| &r.text).eq(read.iter().map(|r| &r.text))) {
        return;
    }
    let mut all = if source.builtin_packs { gridwatch_rules::builtin_packs() } else { Vec::new() };
    all.extend(read.iter().cloned());
    match RuleSet::compile(&all) {
        Ok(_) => *last = Some(read),
        Err(error) => tracing::warn!(error = %error, "rule files do not compile; the district's standby judges by the last that did"),
    }
}

/// The ids of the sensors the copy in KV judged (empty: no copy yet); waits for the bucket,
/// `None` at `shutdown`.
async fn judged_before(js: &jetstream::Context, box_id: &str, shutdown: &CancellationToken) -> Option<BTreeSet<String>> {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let read = async {
            let bucket = js.get_key_value(super::EVAL_BUCKET).await?;
            anyhow::Ok(bucket.get(box_id).await?)
        };
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(None)) => return Some(BTreeSet::new()),
            Ok(Ok(Some(bytes))) => {
                let ids = EvalCopy::decode(&bytes).map(|copy| copy.sensors.into_iter().filter(|s| s.judged).map(|s| s.id).collect());
                return Some(ids.unwrap_or_default());
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Puts every copy the pipeline offers into KV until `shutdown`; a copy that cannot be put is
/// replaced by the next (only the latest matters). The copy in KV from before a restart is read
/// first: its sensors go into the pipeline's copies, and no copy without them replaces it.
pub async fn offer(
    js: jetstream::Context,
    cluster: crate::config::ClusterConfig,
    inventory: Arc<[SensorConfig]>,
    mut source: Source,
    shutdown: CancellationToken,
) {
    let Some(mut before) = judged_before(&js, &cluster.box_id, &shutdown).await else { return };
    // Sensors no longer in the inventory are not waited for.
    before.retain(|id| inventory.iter().any(|s| *s.id == **id));
    if let Ok(mut earlier) = source.earlier.lock() {
        earlier.extend(before.iter().cloned());
    }
    let mut rules = None;
    let mut bucket: Option<jetstream::kv::Store> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            changed = source.copies.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let Some(judged) = source.copies.borrow_and_update().clone() else { continue };
        // Made before the earlier sensors reached the pipeline: the next copy has them.
        if before.iter().any(|id| !judged.sensors.iter().any(|&p| inventory.get(p).is_some_and(|s| *s.id == **id))) {
            continue;
        }
        before.clear();
        rule_sources(&source, &mut rules);
        let Some(rules) = rules.as_deref() else {
            tracing::warn!("no rule files read: the district's standby has no copy of this box's 4G sensors");
            continue;
        };
        let copy = EvalCopy::new((&cluster.box_id, &cluster.district), &inventory, &judged, rules, &source);
        let bytes = match copy.encode() {
            Ok(bytes) if bytes.len() <= MAX_COPY_BYTES => bytes,
            Ok(bytes) => {
                tracing::error!(
                    bytes = bytes.len(),
                    limit = MAX_COPY_BYTES,
                    "the 4G sensors' rule state is too large for the district: its standby cannot judge them while this box is down"
                );
                continue;
            }
            Err(error) => {
                tracing::error!(error = %error, "the district's standby copy cannot be encoded");
                continue;
            }
        };
        let put = async {
            if bucket.is_none() {
                bucket = Some(js.get_key_value(super::EVAL_BUCKET).await?);
            }
            let Some(kv) = bucket.as_ref() else { return anyhow::Ok(()) };
            kv.put(&cluster.box_id, bytes.into()).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), put).await.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(covered = copy.covered, "the district's standby copy of the 4G sensors is current again");
            }
            Ok(()) => tracing::debug!(covered = copy.covered, "standby copy put"),
            Err(error) if !failing => {
                failing = true;
                bucket = None;
                tracing::warn!(error = %format!("{error:#}"), "the district's standby copy not put; the next copy is tried");
            }
            Err(_) => bucket = None,
        }
    }
}

/// A box's 4G sensors judged by the hub from a copy.
#[derive(Debug)]
pub struct Standby {
    pub box_id: String,
    pub district: String,
    /// The stream sequence judged last.
    pub covered: u64,
    engine: Engine,
    sensors: Vec<SensorConfig>,
    /// Sensors judged, by id: their position in `sensors` (and the engine).
    judged: HashMap<String, usize>,
    limits: Limits,
    max_future_skew_ms: i64,
    /// Runs of readings older than their sensor's last judged one (as on the box).
    out_of_order: crate::sensor_clocks::OutOfOrder,
    time_zone: chrono_tz::Tz,
    places: crate::sinks::text::Places,
}

/// What a reading judged by the standby gave.
#[derive(Debug, PartialEq)]
pub enum Judged {
    /// The alerts to post, in order (none: nothing happened).
    Alerts(Vec<serde_json::Value>),
    /// Not a reading of a judged sensor, or not a reading: why.
    Refused(String),
}

impl Standby {
    /// The copy's rules compiled (the built-in packs of this hub's build when the box uses
    /// them) and its state restored.
    pub fn from_copy(copy: EvalCopy) -> Result<Standby, String> {
        let mut sources = if copy.builtin_packs { gridwatch_rules::builtin_packs() } else { Vec::new() };
        sources.extend(copy.rules.iter().map(|(name, text)| RuleSource { name: name.clone(), text: text.clone() }));
        let rules = RuleSet::compile(&sources).map_err(|error| format!("the box's rules do not compile here: {error}"))?;
        let sensors = copy.sensors.iter().map(CopiedSensor::config).collect::<Result<Vec<_>, _>>()?;
        let mut engine = Engine::new(rules, &crate::reload::subjects(&sensors));
        engine.restore(&copy.state);
        let judged = copy.sensors.iter().enumerate().filter(|(_, s)| s.judged).map(|(p, s)| (s.id.clone(), p)).collect();
        Ok(Standby {
            box_id: copy.box_id,
            district: copy.district,
            covered: copy.covered,
            engine,
            sensors,
            judged,
            limits: Limits { max_bytes: copy.max_payload_bytes, max_fields: copy.max_fields, max_field_name_bytes: copy.max_field_name_bytes },
            max_future_skew_ms: copy.max_future_skew_ms,
            out_of_order: crate::sensor_clocks::OutOfOrder::new(copy.reanchor_after_readings, Duration::from_millis(copy.reanchor_after_ms)),
            time_zone: copy.time_zone.parse().unwrap_or(chrono_tz::Asia::Shanghai),
            places: crate::sinks::text::Places(Arc::new(copy.places)),
        })
    }

    /// The sensors judged, by id.
    pub fn sensor_count(&self) -> usize {
        self.judged.len()
    }

    /// Judges the reading of `sensor` at stream sequence `seq`, published at `published_ms`
    /// (its time when it carries none of its own). As on the box, a reading stamped too far
    /// ahead is refused, and a sensor whose clock went back is judged again from its current
    /// time once its readings have kept coming older (`[ingest] reanchor_after_*`): one bad
    /// time never silences a sensor.
    pub fn reading(&mut self, sensor: &str, payload: &[u8], seq: u64, published_ms: i64) -> Judged {
        self.covered = self.covered.max(seq);
        let Some(&position) = self.judged.get(sensor) else { return Judged::Refused(format!("sensor `{sensor}` is not one of this box's 4G sensors")) };
        let decoded = match payload::decode(payload, &self.limits, &Default::default()) {
            Ok(decoded) => decoded,
            Err(rejection) => return Judged::Refused(rejection.to_string()),
        };
        let at = decoded.ts.unwrap_or(published_ms);
        if at.saturating_sub(published_ms) > self.max_future_skew_ms {
            return Judged::Refused(format!("stamped {} s ahead of when the district stored it", (at - published_ms) / 1000));
        }
        let (subject, mut events) = (SubjectId(position), Vec::new());
        let mut observed = self.engine.observe(subject, at, &decoded.fields, &mut events);
        if observed == gridwatch_rules::Observed::OutOfOrder && self.out_of_order.refused(position, tokio::time::Instant::now()) {
            self.engine.rewind(subject);
            observed = self.engine.observe(subject, at, &decoded.fields, &mut events);
        }
        if observed == gridwatch_rules::Observed::Evaluated {
            self.out_of_order.in_order(position);
        }
        Judged::Alerts(self.alerts(&events))
    }

    /// Time passes (no-data, holds) up to `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        self.engine.tick(now_ms, &mut events);
        self.alerts(&events)
    }

    /// The alerts of `events`, but none about the box's other sensors (the hub hears nothing of
    /// them: their no-data would be a false alarm), unless a building's agreement names one.
    fn alerts(&self, events: &[gridwatch_rules::RuleEvent]) -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|event| event.agreement.is_some() || self.judged.values().any(|&p| p == event.subject.0))
            .filter_map(|event| {
                let sensor = self.sensors.get(event.subject.0)?;
                let rule = self.engine.rule(event.rule);
                let alert = crate::pipeline::alerts::alert_of(event, rule, sensor, Some(event.since), self.time_zone, &self.places);
                let key = format!("{}:{}:{}:{}", alert.sensor, alert.rule, alert.event.as_str(), alert.at_ms);
                let mut json = serde_json::to_value(&alert).ok()?;
                let object = json.as_object_mut()?;
                object.insert("standby".into(), true.into());
                object.insert("box".into(), self.box_id.clone().into());
                object.insert("district".into(), self.district.clone().into());
                object.insert("key".into(), key.into());
                Some(json)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::standby_copy::StandbyTap;

    const RULES: &str =
        "[[rule]]\nid = \"lean\"\nvalue = \"x\"\nabove = 1\nfor = \"2m\"\nseverity = \"alarm\"\nmessage = { en = \"{sensor} leans {value}\" }\n";

    fn sensor(id: &str, building: Option<&str>) -> SensorConfig {
        let mut sensor = SensorConfig::test_tilt(id, "east");
        sensor.place = Arc::new(Place { site: "east".into(), building: building.map(Into::into), grid: None, structure: None, storeys: None });
        sensor
    }

    fn source(rule_file: PathBuf) -> Source {
        Source {
            copies: watch::channel(None).1,
            rule_paths: vec![rule_file],
            builtin_packs: false,
            time_zone: chrono_tz::Asia::Shanghai,
            places: crate::sinks::text::Places(Arc::new(BTreeMap::from([("east/b7".to_string(), "七号楼".to_string())]))),
            limits: Limits { max_bytes: 4096, max_fields: 32, max_field_name_bytes: 64 },
            clocks: crate::config::IngestConfig { reanchor_after: Duration::ZERO, ..Default::default() },
            earlier: Arc::default(),
        }
    }

    /// A tilt box with a thermometer judged by the built-in packs for two days at one reading a
    /// minute (daily levels, compensation being learned): its copy deflates to a few KB, far
    /// below what a KV value may hold, and a standby restored from it holds the same state.
    #[test]
    fn a_tilt_box_s_copy_after_two_days_fits_many_times_in_a_kv_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = source(dir.path().join("none.toml"));
        source.builtin_packs = true;
        source.rule_paths = Vec::new();
        let inventory = [sensor("g4-tilt", Some("b7"))];
        let mut engine = Engine::new(RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap(), &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        let mut events = Vec::new();
        for minute in 0..2 * 24 * 60 {
            let day = (minute as f64 / 1440.0 * std::f64::consts::TAU).sin();
            let fields = [("x", 0.31 + 0.01 * day), ("y", -0.12 + 0.005 * day), ("temperature", 18.0 + 6.0 * day)];
            engine.observe(SubjectId(0), t0 + minute * 60_000, &fields, &mut events);
        }
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        tap.judged(0, 2880);
        tap.offer(&engine, &inventory);
        let judged = copies.borrow().clone().unwrap();
        let mut rules = None;
        rule_sources(&source, &mut rules);
        let copy = EvalCopy::new(("box-e", "old-town"), &inventory, &judged, &rules.unwrap(), &source);
        let bytes = copy.encode().unwrap();
        eprintln!("a tilt box's standby copy after two days: {} bytes deflated", bytes.len());
        assert!(bytes.len() * 20 < MAX_COPY_BYTES, "{} bytes", bytes.len());
        let standby = Standby::from_copy(EvalCopy::decode(&bytes).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(standby.engine.snapshot()).unwrap(), serde_json::to_value(&judged.state).unwrap(), "the same state on the hub");
    }

    fn reading(x: f64, ts: i64) -> Vec<u8> {
        format!("{{\"x\": {x}, \"ts\": {ts}}}").into_bytes()
    }

    /// The box judges a 4G sensor one minute into a two-minute hold, copies its state; the
    /// standby restored from the copy fires at the same reading the box would, with the same
    /// alert and key.
    #[test]
    fn the_standby_goes_on_from_the_box_s_copy_and_fires_as_the_box_would() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, RULES).unwrap();
        let inventory = [sensor("local-1", Some("b7")), sensor("g4-1", Some("b7")), sensor("elsewhere", Some("b9"))];
        let rules = RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap();
        let mut engine = Engine::new(rules, &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        let mut events = Vec::new();
        engine.observe(SubjectId(1), t0, &[("x", 1.5)], &mut events);
        engine.observe(SubjectId(1), t0 + 60_000, &[("x", 1.5)], &mut events);
        assert!(events.is_empty());
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        tap.judged(1, 17);
        tap.offer(&engine, &inventory);
        let judged = copies.borrow().clone().unwrap();
        let source = source(file);
        let mut last = None;
        rule_sources(&source, &mut last);
        let copy = EvalCopy::new(("box-e", "old-town"), &inventory, &judged, &last.unwrap(), &source);
        assert_eq!(
            copy.sensors.iter().map(|s| (s.id.as_str(), s.judged)).collect::<Vec<_>>(),
            [("local-1", false), ("g4-1", true)],
            "the house's other box counts, another house does not"
        );
        let copy = EvalCopy::decode(&copy.encode().unwrap()).unwrap();
        let mut standby = Standby::from_copy(copy).unwrap();
        assert_eq!((standby.covered, standby.sensor_count()), (17, 1));
        assert!(matches!(standby.reading("local-1", &reading(2.0, t0 + 90_000), 18, 0), Judged::Refused(_)), "only the 4G sensors are judged");
        assert!(matches!(standby.reading("g4-1", b"{\"x\": ", 19, 0), Judged::Refused(why) if why.contains("not JSON")));
        let Judged::Alerts(alerts) = standby.reading("g4-1", &reading(1.6, t0 + 120_000), 20, t0 + 120_500) else { panic!("refused") };
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = &alerts[0];
        assert_eq!(alert["key"], format!("g4-1:lean:fired:{}", t0 + 120_000));
        assert_eq!((alert["standby"].as_bool(), alert["box"].as_str(), alert["severity"].as_str()), (Some(true), Some("box-e"), Some("alarm")));
        assert!(alert["messages"]["en"].as_str().unwrap().contains("g4-1 leans"), "{alert}");
        assert_eq!(alert["building_name"], "七号楼");
        assert_eq!(standby.covered, 20);
        // The box itself, going on from the same state with the same reading: the same event.
        let mut events = Vec::new();
        engine.observe(SubjectId(1), t0 + 120_000, &[("x", 1.6)], &mut events);
        assert_eq!(events.iter().map(|e| e.at).collect::<Vec<_>>(), [t0 + 120_000]);
    }

    /// While the box is down a reading stamped a day ahead is refused, and a sensor whose clock
    /// went back is judged again after a few readings: no bad time silences it for good.
    #[test]
    fn a_device_clock_ahead_or_gone_back_does_not_silence_the_sensor_at_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, RULES).unwrap();
        let inventory = [sensor("g4-1", Some("b7"))];
        let rules = RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap();
        let mut engine = Engine::new(rules, &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        engine.observe(SubjectId(0), t0, &[("x", 0.1)], &mut Vec::new());
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        tap.judged(0, 1);
        tap.offer(&engine, &inventory);
        let source = source(file);
        let mut rules = None;
        rule_sources(&source, &mut rules);
        let copy = EvalCopy::new(("box-e", "old-town"), &inventory, &copies.borrow().clone().unwrap(), &rules.unwrap(), &source);
        let mut standby = Standby::from_copy(copy).unwrap();
        let day = 86_400_000;
        let ahead = standby.reading("g4-1", &reading(0.1, t0 + 60_000 + day), 2, t0 + 60_000);
        assert!(matches!(&ahead, Judged::Refused(why) if why.contains("ahead")), "{ahead:?}");
        // The clock went back an hour: judged again from the third such reading on.
        let mut fired = Vec::new();
        for (index, minute) in (2..8).enumerate() {
            let at = t0 - 3_600_000 + minute * 60_000;
            if let Judged::Alerts(alerts) = standby.reading("g4-1", &reading(1.5, at), 3 + index as u64, t0 + minute * 60_000) {
                fired.extend(alerts);
            }
        }
        assert_eq!(fired.len(), 1, "the lean fires once the sensor is judged again: {fired:?}");
    }

    /// The house's other box is in the copy (its building counts) but the hub hears nothing of
    /// it: its silence is no alarm; the 4G box's own silence is.
    #[test]
    fn only_the_4g_sensors_silence_is_an_alarm_at_the_hub() {
        const SILENT: &str = "[[rule]]\nid = \"silent\"\nno_data = \"3m\"\nseverity = \"warning\"\n";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, SILENT).unwrap();
        let inventory = [sensor("local-1", Some("b7")), sensor("g4-1", Some("b7"))];
        let rules = RuleSet::compile(&[RuleSource { name: "r".into(), text: SILENT.into() }]).unwrap();
        let mut engine = Engine::new(rules, &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        engine.observe(SubjectId(1), t0, &[("x", 0.1)], &mut Vec::new());
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        tap.judged(1, 3);
        tap.offer(&engine, &inventory);
        let source = source(file);
        let mut rules = None;
        rule_sources(&source, &mut rules);
        let copy = EvalCopy::new(("box-e", "old-town"), &inventory, &copies.borrow().clone().unwrap(), &rules.unwrap(), &source);
        let mut standby = Standby::from_copy(copy).unwrap();
        let mut posted = Vec::new();
        for second in 1..=600 {
            posted.extend(standby.tick(t0 + second * 1000));
        }
        let sensors: Vec<&str> = posted.iter().map(|a| a["sensor"].as_str().unwrap()).collect();
        assert_eq!(sensors, ["g4-1"], "{posted:?}");
    }
}
