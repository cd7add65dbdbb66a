//! The standby evaluator of a box's sensors with their own 4G link: while the box is down, the
//! active hub judges them from the district's stream, so a dead box does not leave a house with
//! such a sensor unwatched (docs/district.md, "While the box is down").
//!
//! The box's side ([`offer`]) keeps two values in the KV bucket [`super::EVAL_BUCKET`]: its
//! [`EvalSetup`] under [`setup_key`] (rule files, whole inventory, payload limits, clock
//! answers, time zone and place names — everything the hub needs to judge as the box would, and
//! no secret), put when it changes; and under the box's id an [`EvalCopy`]: the rule state of
//! the sensors it heard through the district (`crate::pipeline::standby_copy`) and the stream
//! sequence that state covers.
//!
//! The hub's side ([`Standby`], run by `hub::standby`): the setup's rules compiled, the copy's
//! state restored, the alarms the box reported open re-stated ([`Standby::restated`]), then
//! each reading after the covered sequence judged and each event made into the same alert the
//! box would send, marked `"standby": true` with its `key` `<box>:<sensor>:<rule>:<event>:<at_ms>`
//! (sensor ids are unique only within a box). The box, once back, judges the same readings
//! from its own consumer (which did not move while it was down) and sends the same events: a
//! receiver drops the second by that key, made of the box's id and fields both messages carry.
//!
//! Invariants: the engine is pure, so the same setup, copy and readings give the same events
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Largest setup or copy put in KV (a NATS message is 1 MB by default): a box whose setup or 4G
/// sensors' state deflates past it logs it, and the district judges them only when it is back.
const MAX_COPY_BYTES: usize = 900 * 1024;

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

/// What the hub needs to judge a box's sensors as the box would: its rules, its whole inventory
/// (a 4G sensor first heard while the box is down is judged too; the building's other sensors
/// count in agreements), payload limits, clock answers, time zone and places. Under
/// [`setup_key`]; put when it changes (at start, after a rule change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSetup {
    pub box_id: String,
    pub district: String,
    pub builtin_packs: bool,
    /// The box's rule files: name and text.
    pub rules: Vec<(String, String)>,
    pub sensors: Vec<CopiedSensor>,
    pub max_payload_bytes: usize,
    pub max_fields: usize,
    pub max_field_name_bytes: usize,
    /// A reading stamped further ahead of when the district stored it has its time refused: it
    /// is judged when the district stored it.
    pub max_future_skew_ms: i64,
    /// A sensor whose readings come older than its last judged one this many times in a row…
    pub reanchor_after_readings: u32,
    /// …and for this long is judged again from its current time (its clock went back).
    pub reanchor_after_ms: u64,
    pub time_zone: String,
    /// Display names of the sites and buildings.
    pub places: BTreeMap<String, String>,
}

/// The rule state of the sensors the box heard through the district, and how far into the
/// stream it goes. Under the box's id; put at most every `[cluster] standby_copy_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalCopy {
    /// The stream sequence of the last reading the state judged: the hub goes on after it.
    pub covered: u64,
    /// The ids of the sensors heard through the district (their silence is an alarm).
    pub judged: Vec<String>,
    pub state: Snapshot,
}

/// The KV key of a box's [`EvalSetup`] (box ids hold no dots).
pub fn setup_key(box_id: &str) -> String {
    format!("{box_id}.setup")
}

/// A sensor of the inventory as the hub needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl CopiedSensor {
    fn of(sensor: &SensorConfig) -> CopiedSensor {
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

impl EvalSetup {
    fn new((box_id, district): (&str, &str), inventory: &[SensorConfig], rules: &[RuleSource], source: &Source) -> EvalSetup {
        let sensors: Vec<CopiedSensor> = inventory.iter().map(CopiedSensor::of).collect();
        let mut places = BTreeMap::new();
        for sensor in &sensors {
            if let Some(name) = source.places.site(&sensor.site) {
                places.insert(sensor.site.clone(), name.to_string());
            }
            if let Some((building, name)) = sensor.building.as_deref().and_then(|b| Some((b, source.places.building(&sensor.site, b)?))) {
                places.insert(format!("{}/{building}", sensor.site), name.to_string());
            }
        }
        EvalSetup {
            box_id: box_id.into(),
            district: district.into(),
            builtin_packs: source.builtin_packs,
            rules: rules.iter().map(|r| (r.name.clone(), r.text.clone())).collect(),
            sensors,
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
}

impl EvalCopy {
    fn new(inventory: &[SensorConfig], judged: &JudgedCopy) -> EvalCopy {
        EvalCopy {
            covered: judged.covered,
            judged: judged.sensors.iter().filter_map(|&p| inventory.get(p)).map(|s| s.id.to_string()).collect(),
            state: judged.state.clone(),
        }
    }
}

/// Deflated JSON of what goes into KV.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    super::wire::deflate(&serde_json::to_vec(value)?)
}

/// What [`encode`] made.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(&super::wire::inflate(bytes)?).map_err(|error| error.to_string())
}

/// The rule sources the box runs, read again when a setup is made; the last that compiled is
/// kept (a file being edited does not reach the district).
fn rule_sources(source: &Source, last: &mut Option<Vec<RuleSource>>) {
    let read = match crate::rule_files::read_all(&source.rule_paths) {
        Ok(read) => read,
        Err(error) => {
            tracing::debug!(error = %error, "rule files not read for the district's standby; the last read goes");
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
            Ok(Ok(Some(bytes))) => return Some(decode::<EvalCopy>(&bytes).map(|copy| copy.judged.into_iter().collect()).unwrap_or_default()),
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Puts `bytes` under `key` in the standby bucket (opened on first use, again after a failure).
async fn put(js: &jetstream::Context, bucket: &mut Option<jetstream::kv::Store>, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let put = async {
        if bucket.is_none() {
            *bucket = Some(js.get_key_value(super::EVAL_BUCKET).await?);
        }
        let Some(kv) = bucket.as_ref() else { return anyhow::Ok(()) };
        kv.put(key, bytes.into()).await?;
        anyhow::Ok(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), put).await.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    if outcome.is_err() {
        *bucket = None;
    }
    outcome
}

/// Encoded within [`MAX_COPY_BYTES`], or why not (logged).
fn encoded<T: Serialize>(value: &T, what: &str) -> Option<Vec<u8>> {
    match encode(value) {
        Ok(bytes) if bytes.len() <= MAX_COPY_BYTES => Some(bytes),
        Ok(bytes) => {
            tracing::error!(
                bytes = bytes.len(),
                limit = MAX_COPY_BYTES,
                what,
                "too large for the district: its standby cannot judge this box's 4G sensors while it is down"
            );
            None
        }
        Err(error) => {
            tracing::error!(error = %error, what, "the district's standby copy cannot be encoded");
            None
        }
    }
}

/// Keeps the box's setup and the copies the pipeline offers in KV until `shutdown`: the setup
/// at start and whenever the rule files change (looked at every `standby_copy_secs`), every
/// copy as it comes (only the latest matters: one that cannot be put is replaced by the next).
/// The copy in KV from before a restart is read first: its sensors go into the pipeline's
/// copies, and no copy without them replaces it.
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
    let (mut rules, mut setup_put, mut bucket, mut failing) = (None, None::<EvalSetup>, None, false);
    let mut look = tokio::time::interval(cluster.standby_copy);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let copy = tokio::select! {
            changed = source.copies.changed() => {
                if changed.is_err() {
                    return;
                }
                source.copies.borrow_and_update().clone()
            }
            _ = look.tick() => None,
            () = shutdown.cancelled() => return,
        };
        rule_sources(&source, &mut rules);
        let Some(rules) = rules.as_deref() else {
            tracing::warn!("no rule files read: the district's standby cannot judge this box's 4G sensors");
            continue;
        };
        let setup = EvalSetup::new((&cluster.box_id, &cluster.district), &inventory, rules, &source);
        let mut outcome = Ok(());
        if setup_put.as_ref() != Some(&setup) {
            if let Some(bytes) = encoded(&setup, "the box's setup") {
                outcome = put(&js, &mut bucket, &setup_key(&cluster.box_id), bytes).await;
                if outcome.is_ok() {
                    setup_put = Some(setup);
                }
            }
        }
        // Made before the earlier sensors reached the pipeline: the next copy has them.
        let copy = copy.filter(|judged| before.iter().all(|id| judged.sensors.iter().any(|&p| inventory.get(p).is_some_and(|s| *s.id == **id))));
        if let (Some(judged), Ok(())) = (copy, &outcome) {
            before.clear();
            if let Some(bytes) = encoded(&EvalCopy::new(&inventory, &judged), "the 4G sensors' rule state") {
                outcome = put(&js, &mut bucket, &cluster.box_id, bytes).await;
            }
        }
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the district's standby copy of the 4G sensors is current again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), "the district's standby copy not put; the next is tried");
            }
            _ => {}
        }
    }
}

/// A box's sensors judged by the hub from its setup and latest copy.
#[derive(Debug)]
pub struct Standby {
    pub box_id: String,
    pub district: String,
    /// The stream sequence judged last.
    pub covered: u64,
    engine: Engine,
    sensors: Vec<SensorConfig>,
    /// Every sensor of the box, by id: its position in `sensors` (and the engine).
    positions: HashMap<String, usize>,
    /// Sensors heard through the district (by the box before the copy, or here): alerts are
    /// about them only.
    heard: BTreeSet<usize>,
    limits: Limits,
    max_future_skew_ms: i64,
    /// Runs of readings older than their sensor's last judged one (as on the box).
    out_of_order: crate::sensor_clocks::OutOfOrder,
    time_zone: chrono_tz::Tz,
    places: crate::sinks::text::Places,
}

/// A rule event of a box as the district holds it (`alert_events`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedEvent {
    pub sensor: String,
    pub rule: String,
    pub event: String,
    pub severity: String,
    pub value: f64,
    pub at_ms: i64,
}

/// What a reading judged by the standby gave.
#[derive(Debug, PartialEq)]
pub enum Judged {
    /// The alerts to post, in order (none: nothing happened).
    Alerts(Vec<serde_json::Value>),
    /// Not a reading of one of the box's sensors, or not a reading: why.
    Refused(String),
}

impl Standby {
    /// The setup's rules compiled (the built-in packs of this hub's build when the box uses
    /// them) and the copy's state restored; without a copy (the box never heard a 4G sensor,
    /// or its copy was lost) every sensor starts fresh and the stream is read from its start.
    pub fn new(setup: EvalSetup, copy: Option<EvalCopy>) -> Result<Standby, String> {
        let mut sources = if setup.builtin_packs { gridwatch_rules::builtin_packs() } else { Vec::new() };
        sources.extend(setup.rules.iter().map(|(name, text)| RuleSource { name: name.clone(), text: text.clone() }));
        let rules = RuleSet::compile(&sources).map_err(|error| format!("the box's rules do not compile here: {error}"))?;
        let sensors = setup.sensors.iter().map(CopiedSensor::config).collect::<Result<Vec<_>, _>>()?;
        let mut engine = Engine::new(rules, &crate::reload::subjects(&sensors));
        let positions: HashMap<String, usize> = setup.sensors.iter().enumerate().map(|(p, s)| (s.id.clone(), p)).collect();
        let (mut covered, mut heard) = (0, BTreeSet::new());
        if let Some(copy) = copy {
            engine.restore(&copy.state);
            covered = copy.covered;
            heard = copy.judged.iter().filter_map(|id| positions.get(id).copied()).collect();
        }
        Ok(Standby {
            box_id: setup.box_id,
            district: setup.district,
            covered,
            engine,
            sensors,
            positions,
            heard,
            limits: Limits { max_bytes: setup.max_payload_bytes, max_fields: setup.max_fields, max_field_name_bytes: setup.max_field_name_bytes },
            max_future_skew_ms: setup.max_future_skew_ms,
            out_of_order: crate::sensor_clocks::OutOfOrder::new(setup.reanchor_after_readings, Duration::from_millis(setup.reanchor_after_ms)),
            time_zone: setup.time_zone.parse().unwrap_or(crate::local_time::DEFAULT),
            places: crate::sinks::text::Places(Arc::new(setup.places)),
        })
    }

    /// The sensors heard through the district so far.
    pub fn sensor_count(&self) -> usize {
        self.heard.len()
    }

    /// The ids of the sensors heard through the district so far.
    pub fn heard_ids(&self) -> Vec<String> {
        self.heard.iter().filter_map(|&p| self.sensors.get(p)).map(|s| s.id.to_string()).collect()
    }

    /// Judges the reading of `sensor` at stream sequence `seq`, published at `published_ms`
    /// (its time when it carries none of its own). As on the box, a reading stamped too far
    /// ahead, or before 2000 or years behind (a clock never set), is judged when the district stored it (its clock checks see its own time), and a
    /// sensor whose clock went back is judged again from its current time once its readings
    /// have kept coming older (`[ingest] reanchor_after_*`): one bad time never silences a
    /// sensor.
    pub fn reading(&mut self, sensor: &str, payload: &[u8], seq: u64, published_ms: i64) -> Judged {
        self.covered = self.covered.max(seq);
        let Some(&position) = self.positions.get(sensor) else { return Judged::Refused(format!("sensor `{sensor}` is not in this box's inventory")) };
        let decoded = match payload::decode(payload, &self.limits, &Default::default()) {
            Ok(decoded) => decoded,
            Err(rejection) => return Judged::Refused(rejection.to_string()),
        };
        let stamped = decoded.ts.unwrap_or(published_ms);
        let refused = stamped.saturating_sub(published_ms) > self.max_future_skew_ms || payload::clock_not_set(stamped, published_ms, true);
        let at = if refused { published_ms } else { stamped };
        self.heard.insert(position);
        let (subject, mut events) = (SubjectId(position), Vec::new());
        self.engine.set_stamp_offset(subject, at - stamped);
        let mut observed = self.engine.observe(subject, at, &decoded.fields, &mut events);
        if observed == gridwatch_rules::Observed::OutOfOrder && self.out_of_order.refused(position, tokio::time::Instant::now(), ()).is_some() {
            self.engine.rewind(subject);
            observed = self.engine.observe(subject, at, &decoded.fields, &mut events);
        }
        if observed == gridwatch_rules::Observed::Evaluated {
            self.out_of_order.in_order(position);
        }
        Judged::Alerts(self.alerts(&events))
    }

    /// The alarms open on heard sensors when the hub takes over, as the box last reported
    /// them (`reported`: each rule and sensor's latest fired, changed or cleared event, from
    /// the district's copy of its journal): re-stated with the box's own key, so a receiver
    /// that got them from the box drops them, and people who did not (the box died while it
    /// held the alarm in a building's group window or a quiet hour) get it now. Only those the
    /// restored state still holds open (a clear the uplink had not carried yet is believed).
    pub fn restated(&self, reported: &[ReportedEvent]) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        for row in reported.iter().filter(|row| row.event == "fired" || row.event == "changed") {
            let Some(&position) = self.positions.get(&row.sensor).filter(|p| self.heard.contains(p)) else { continue };
            let Some(rule) = self.engine.rules().iter().position(|r| r.id == row.rule).map(gridwatch_rules::RuleId) else { continue };
            let Ok(severity) = row.severity.parse::<gridwatch_rules::Severity>() else { continue };
            let variant = match self.engine.open(SubjectId(position), rule) {
                Some((false, _)) => continue,
                Some((true, variant)) => variant,
                None => None,
            };
            events.push(gridwatch_rules::RuleEvent {
                rule,
                subject: SubjectId(position),
                kind: if row.event == "fired" { gridwatch_rules::EventKind::Fired } else { gridwatch_rules::EventKind::Changed },
                severity,
                previous: None,
                variant,
                value: row.value,
                at: row.at_ms,
                since: row.at_ms,
                agreement: None,
            });
        }
        let mut alerts = self.alerts(&events);
        for alert in &mut alerts {
            if let Some(object) = alert.as_object_mut() {
                object.insert("restated".into(), true.into());
            }
        }
        alerts
    }

    /// Time passes (no-data, holds) up to `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        self.engine.tick(now_ms, &mut events);
        self.alerts(&events)
    }

    /// The alerts of `events`, but none about sensors not heard through the district (the hub
    /// hears nothing of the box's own: their no-data would be a false alarm), unless a
    /// building's agreement names one.
    fn alerts(&self, events: &[gridwatch_rules::RuleEvent]) -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|event| event.agreement.is_some() || self.heard.contains(&event.subject.0))
            .filter_map(|event| {
                let sensor = self.sensors.get(event.subject.0)?;
                let rule = self.engine.rule(event.rule);
                let alert = crate::pipeline::alerts::alert_of(event, rule, sensor, Some(event.since), self.time_zone, &self.places);
                let key = format!("{}:{}:{}:{}:{}", self.box_id, alert.sensor, alert.rule, alert.event.as_str(), alert.at_ms);
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

    /// The hub's standby from `engine`'s state of the sensors `heard` (position, stream
    /// sequence), as the box would put it in KV (setup and copy, encoded and decoded).
    fn standby_of(inventory: &[SensorConfig], engine: &Engine, heard: &[(usize, u64)], source: &Source) -> (Standby, usize) {
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        for &(position, seq) in heard {
            tap.judged(position, seq);
        }
        tap.offer(engine, inventory);
        let mut rules = None;
        rule_sources(source, &mut rules);
        let setup = encode(&EvalSetup::new(("box-e", "old-town"), inventory, &rules.unwrap(), source)).unwrap();
        let copy = encode(&EvalCopy::new(inventory, &copies.borrow().clone().unwrap())).unwrap();
        (Standby::new(decode(&setup).unwrap(), Some(decode(&copy).unwrap())).unwrap(), copy.len())
    }

    fn rule_file(text: &str) -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, text).unwrap();
        let source = source(file);
        (dir, source)
    }

    /// A tilt box with a thermometer judged by the built-in packs for two days at one reading a
    /// minute (daily levels, compensation being learned): its copy deflates to a few KB, far
    /// below what a KV value may hold, and a standby restored from it holds the same state.
    #[test]
    fn a_tilt_box_s_copy_after_two_days_fits_many_times_in_a_kv_value() {
        let (_dir, mut source) = rule_file("");
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
        let (standby, bytes) = standby_of(&inventory, &engine, &[(0, 2880)], &source);
        eprintln!("a tilt box's standby copy after two days: {bytes} bytes deflated");
        assert!(bytes * 20 < MAX_COPY_BYTES, "{bytes} bytes");
        let restored = serde_json::to_value(standby.engine.snapshot()).unwrap();
        assert_eq!(restored, serde_json::to_value(engine.snapshot()).unwrap(), "the same state on the hub");
    }

    fn reading(x: f64, ts: i64) -> Vec<u8> {
        format!("{{\"x\": {x}, \"ts\": {ts}}}").into_bytes()
    }

    /// The box judges a 4G sensor one minute into a two-minute hold, copies its state; the
    /// standby restored from the copy fires at the same reading the box would, with the same
    /// alert and key.
    #[test]
    fn the_standby_goes_on_from_the_box_s_copy_and_fires_as_the_box_would() {
        let (_dir, source) = rule_file(RULES);
        let inventory = [sensor("local-1", Some("b7")), sensor("g4-1", Some("b7")), sensor("elsewhere", Some("b9"))];
        let rules = RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap();
        let mut engine = Engine::new(rules, &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        let mut events = Vec::new();
        engine.observe(SubjectId(1), t0, &[("x", 1.5)], &mut events);
        engine.observe(SubjectId(1), t0 + 60_000, &[("x", 1.5)], &mut events);
        assert!(events.is_empty());
        let (mut standby, _) = standby_of(&inventory, &engine, &[(1, 17)], &source);
        assert_eq!((standby.covered, standby.sensor_count()), (17, 1));
        assert!(matches!(standby.reading("stranger", &reading(2.0, t0 + 90_000), 18, t0 + 90_000), Judged::Refused(_)), "not in the inventory");
        assert!(matches!(standby.reading("g4-1", b"{\"x\": ", 19, 0), Judged::Refused(why) if why.contains("not JSON")));
        let Judged::Alerts(alerts) = standby.reading("g4-1", &reading(1.6, t0 + 120_000), 20, t0 + 120_500) else { panic!("refused") };
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = &alerts[0];
        assert_eq!(alert["key"], format!("box-e:g4-1:lean:fired:{}", t0 + 120_000));
        assert_eq!((alert["standby"].as_bool(), alert["box"].as_str(), alert["severity"].as_str()), (Some(true), Some("box-e"), Some("alarm")));
        assert!(alert["messages"]["en"].as_str().unwrap().contains("g4-1 leans"), "{alert}");
        assert_eq!(alert["building_name"], "七号楼");
        assert_eq!(standby.covered, 20);
        // The box itself, going on from the same state with the same reading: the same event.
        let mut events = Vec::new();
        engine.observe(SubjectId(1), t0 + 120_000, &[("x", 1.6)], &mut events);
        assert_eq!(events.iter().map(|e| e.at).collect::<Vec<_>>(), [t0 + 120_000]);
    }

    /// The box died while it held an alarm (a building's group window): the hub re-states what
    /// the box reported open, under the box's key; not what the state holds cleared, nor what
    /// was cleared, nor a sensor the district does not carry.
    #[test]
    fn open_alarms_are_restated_when_the_hub_takes_over() {
        let (_dir, source) = rule_file(RULES);
        let inventory = [sensor("g4-1", Some("b7")), sensor("g4-2", Some("b8")), sensor("local-1", Some("b7"))];
        let mut engine = Engine::new(RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap(), &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        let mut events = Vec::new();
        for minute in 0..=2 {
            engine.observe(SubjectId(0), t0 + minute * 60_000, &[("x", 1.5)], &mut events);
            engine.observe(SubjectId(1), t0 + minute * 60_000, &[("x", 0.1)], &mut events);
        }
        assert_eq!(events.len(), 1, "g4-1 fired");
        let (standby, _) = standby_of(&inventory, &engine, &[(0, 5), (1, 6)], &source);
        let row = |sensor: &str, event: &str| ReportedEvent {
            sensor: sensor.into(),
            rule: "lean".into(),
            event: event.into(),
            severity: "alarm".into(),
            value: 1.5,
            at_ms: t0 + 120_000,
        };
        let restated = standby.restated(&[row("g4-1", "fired"), row("g4-2", "fired"), row("local-1", "fired"), row("g4-9", "cleared")]);
        let keys: Vec<&str> = restated.iter().map(|a| a["key"].as_str().unwrap()).collect();
        assert_eq!(keys, [format!("box-e:g4-1:lean:fired:{}", t0 + 120_000)], "g4-2's state is not open, local-1 is not heard through the district");
        assert_eq!((restated[0]["restated"].as_bool(), restated[0]["severity"].as_str()), (Some(true), Some("alarm")));
    }

    /// A 4G sensor the box never heard (installed, or first reporting, while the box is down)
    /// is judged from the box's inventory: its alarm is not left for the box's return.
    #[test]
    fn a_sensor_first_heard_while_the_box_is_down_is_judged() {
        let (_dir, source) = rule_file(RULES);
        let inventory = [sensor("g4-1", Some("b7")), sensor("g4-new", Some("b9"))];
        let mut engine = Engine::new(RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap(), &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        engine.observe(SubjectId(0), t0, &[("x", 0.1)], &mut Vec::new());
        let (mut standby, _) = standby_of(&inventory, &engine, &[(0, 1)], &source);
        let mut posted = Vec::new();
        for minute in 0..=2 {
            let at = t0 + minute * 60_000;
            if let Judged::Alerts(alerts) = standby.reading("g4-new", &reading(1.5, at), 2 + minute as u64, at) {
                posted.extend(alerts);
            }
        }
        assert_eq!(posted.iter().map(|a| a["key"].as_str().unwrap().to_string()).collect::<Vec<_>>(), [format!("box-e:g4-new:lean:fired:{}", t0 + 120_000)]);
    }

    /// While the box is down a reading stamped a day ahead is judged when the district stored
    /// it, and a sensor whose clock went back is judged again after a few readings: no bad time
    /// silences it for good.
    #[test]
    fn a_device_clock_ahead_or_gone_back_does_not_silence_the_sensor_at_the_hub() {
        let (_dir, source) = rule_file(RULES);
        let inventory = [sensor("g4-1", Some("b7"))];
        let mut engine = Engine::new(RuleSet::compile(&[RuleSource { name: "r".into(), text: RULES.into() }]).unwrap(), &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        engine.observe(SubjectId(0), t0, &[("x", 0.1)], &mut Vec::new());
        let (mut standby, _) = standby_of(&inventory, &engine, &[(0, 1)], &source);
        let day = 86_400_000;
        let ahead = standby.reading("g4-1", &reading(0.1, t0 + 60_000 + day), 2, t0 + 60_000);
        assert!(matches!(&ahead, Judged::Alerts(alerts) if alerts.is_empty()), "judged, a quiet reading: {ahead:?}");
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

    /// The house's other box is in the setup (its building counts) but the hub hears nothing of
    /// it: its silence is no alarm; the 4G box's own silence is.
    #[test]
    fn only_the_4g_sensors_silence_is_an_alarm_at_the_hub() {
        const SILENT: &str = "[[rule]]\nid = \"silent\"\nno_data = \"3m\"\nseverity = \"warning\"\n";
        let (_dir, source) = rule_file(SILENT);
        let inventory = [sensor("local-1", Some("b7")), sensor("g4-1", Some("b7"))];
        let mut engine = Engine::new(RuleSet::compile(&[RuleSource { name: "r".into(), text: SILENT.into() }]).unwrap(), &crate::reload::subjects(&inventory));
        let t0 = 1_795_392_000_000;
        engine.observe(SubjectId(1), t0, &[("x", 0.1)], &mut Vec::new());
        let (mut standby, _) = standby_of(&inventory, &engine, &[(1, 3)], &source);
        let mut posted = Vec::new();
        for second in 1..=600 {
            posted.extend(standby.tick(t0 + second * 1000));
        }
        let sensors: Vec<&str> = posted.iter().map(|a| a["sensor"].as_str().unwrap()).collect();
        assert_eq!(sensors, ["g4-1"], "{posted:?}");
    }
}
