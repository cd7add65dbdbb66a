//! The engine's state as plain data, so hold timers, windows, baselines and ladder positions
//! survive a restart (the daemon keeps the snapshot beside its store) and a rule reload (the new
//! engine takes over the old one's state).
//!
//! Invariant: state moves only to a rule with the same id *and* the same definition
//! ([`fingerprint`]); a changed rule starts fresh, so a new threshold never inherits a decision
//! made under the old one. Baselines belong to the sensor and always carry over.
//!
//! Format (version 3): the rules' ids and fingerprints once, at the top; per sensor only the
//! states that differ from a fresh engine's, each naming its rule by position in that list.
//! Ten thousand sensors are written every minute on an SD card: version 2 repeated every rule id
//! and fingerprint for every sensor and wrote every state at rest. Version 2 is still read.

use crate::engine::{initial_state, CheckState, Engine, Learned, LearnedBaseline, Plan, SlotStates, SubjectId};
use crate::last_value::LastValue;
use crate::rule::{Millis, Rule};
use crate::signal::Learner;
use crate::signal::StageState;
use crate::thermal::Thermal;
use serde::{Deserialize, Serialize};

/// Bumped when the layout of the state changes; a snapshot of an unknown version is ignored.
pub const SNAPSHOT_VERSION: u32 = 3;
/// The previous layout, still read (one rule id and fingerprint per sensor and check).
const SNAPSHOT_VERSION_2: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// The rules of the engine that wrote the snapshot, in its order.
    pub rules: Vec<RuleHeader>,
    pub subjects: Vec<SubjectSnapshot>,
}

/// What a saved state needs to know of its rule: which one, and whether it is still the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHeader {
    pub id: String,
    pub fingerprint: u64,
    /// The fingerprint of the rule's signal stage (0 without a signal).
    pub stage: u64,
}

/// One sensor's state; rules are named by their position in [`Snapshot::rules`], and states a
/// fresh engine would have are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectSnapshot {
    pub id: String,
    pub last_at: Option<Millis>,
    pub calibrated: Vec<(String, f64)>,
    pub learned: Vec<LearnedBaseline>,
    /// Signal stages, by the rule that defines each.
    pub stages: Vec<(usize, StageState)>,
    pub checks: Vec<(usize, CheckState)>,
    /// Temperature compensations being learned (left out when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thermal: Vec<SavedThermal>,
    /// The open levels of building rules found in doubt (`doubted_by`): (rule, when the level
    /// began). They stay in doubt after a restart though the doubt has cleared since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doubted: Vec<(usize, Millis)>,
}

/// A sensor's temperature compensation as saved: what it corrects, and what it learned. Like a
/// baseline it belongs to the sensor: it carries over to any rule that compensates the same
/// fields by the same temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedThermal {
    pub temperature: std::sync::Arc<str>,
    pub fields: Vec<std::sync::Arc<str>>,
    pub state: Thermal,
}

/// What a restore carried over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// (rule, sensor) states taken over.
    pub checks: usize,
    /// States left behind because their rule changed or is gone.
    pub discarded: usize,
    /// The rules (by id) whose definition changed since the state was saved: a sensor's state
    /// under them starts afresh, so an alarm it held open is no longer held.
    pub changed_rules: std::collections::BTreeSet<String>,
    /// The rules (by id) the state was saved with that the engine no longer has (removed or
    /// renamed): an alarm they held open is held by nothing.
    pub gone_rules: std::collections::BTreeSet<String>,
}

/// A stable hash of what a rule does (scope, signal, check), not of its title or place in a
/// file.
pub fn fingerprint(rule: &Rule) -> u64 {
    let mut text = format!("{:?}|{:?}|{:?}|{:?}|{}|{:?}", rule.scope, rule.signal, rule.check, rule.overrides, rule.device, rule.agree);
    // Only when set, so that the rules saved before `alone` existed keep their fingerprints.
    if let Some(alone) = rule.alone {
        text.push_str(&format!("|alone {alone:?}"));
    }
    if rule.peers {
        text.push_str("|peers building");
    }
    // `doubted_by` is left out: it changes the building's verdict, which is not saved but worked
    // out again from the boxes' checks, not what a box's check keeps.
    if let Some(floor) = rule.uncompensated {
        text.push_str(&format!("|uncompensated {floor:?}"));
    }
    fnv1a(&text)
}

/// A stable hash of what a rule's signal stage computes (expression, baseline, smoothing).
fn stage_fingerprint(rule: &Rule) -> u64 {
    match &rule.signal {
        Some(signal) => {
            let mut text = format!("{:?}|{:?}|{:?}|{:?}", signal.expr, signal.baseline, signal.relative, signal.smooth);
            // Only when set, so that the stages saved before compensation existed keep theirs.
            if let Some(temperature) = &signal.compensate {
                text.push_str(&format!("|compensate {temperature}"));
            }
            fnv1a(&text)
        }
        None => 0,
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

fn headers(rules: &[Rule]) -> Vec<RuleHeader> {
    rules.iter().map(|rule| RuleHeader { id: rule.id.clone(), fingerprint: fingerprint(rule), stage: stage_fingerprint(rule) }).collect()
}

/// The states of a sensor worth saving: those a fresh engine would not have.
fn learned_to_save<'a>(plan: &'a Plan, states: &SlotStates<'a>) -> impl Iterator<Item = LearnedView<'a>> {
    plan.learned.iter().zip(states.learned).filter(|(_, l)| l.learner.is_some() || l.value.get().is_some()).map(|((field, window_ms), l)| LearnedView {
        field,
        window_ms: *window_ms,
        learner: l.learner.as_deref(),
        value: l.value,
    })
}

/// The compensations worth saving (those that have seen a reading).
fn thermal_to_save<'a>(plan: &'a Plan, states: &SlotStates<'a>) -> impl Iterator<Item = ThermalView<'a>> {
    plan.thermal.iter().zip(states.thermal).filter(|(_, state)| **state != Thermal::default()).map(|(spec, state)| ThermalView {
        temperature: &spec.temperature,
        fields: &spec.fields,
        state,
    })
}

/// A [`SavedThermal`] borrowed from the engine (same JSON).
#[derive(Serialize)]
struct ThermalView<'a> {
    temperature: &'a str,
    fields: &'a [std::sync::Arc<str>],
    state: &'a Thermal,
}

impl ThermalView<'_> {
    fn to_owned(&self) -> SavedThermal {
        SavedThermal { temperature: self.temperature.into(), fields: self.fields.to_vec(), state: self.state.clone() }
    }
}

/// The saved stages: (rule defining the stage, state).
fn stages_to_save<'a>(plan: &'a Plan, states: &SlotStates<'a>) -> impl Iterator<Item = (usize, &'a StageState)> {
    plan.stages.iter().zip(states.stages).filter(|(_, state)| **state != StageState::default()).map(|(&rule, state)| (usize::from(rule), state))
}

/// The saved checks: (rule, state).
fn checks_to_save<'a>(rules: &'a [Rule], plan: &'a Plan, states: &SlotStates<'a>) -> impl Iterator<Item = (usize, &'a CheckState)> {
    plan.checks
        .iter()
        .zip(states.checks)
        .filter(|(planned, state)| **state != initial_state(&rules[planned.rule()], planned.variant()))
        .map(|(planned, state)| (planned.rule(), state))
}

/// A [`LearnedBaseline`] borrowed from the engine (same fields, same JSON).
#[derive(Serialize)]
struct LearnedView<'a> {
    field: &'a str,
    window_ms: Millis,
    learner: Option<&'a Learner>,
    value: LastValue,
}

impl LearnedView<'_> {
    fn to_owned(&self) -> LearnedBaseline {
        LearnedBaseline { field: self.field.into(), window_ms: self.window_ms, learner: self.learner.map(|l| Box::new(l.clone())), value: self.value }
    }
}

/// A [`Snapshot`] that borrows the engine's state instead of copying it: serialized, it is the
/// same JSON as the snapshot, written as it goes (no copy of the state, no whole text in memory).
struct SnapshotView<'a> {
    engine: &'a Engine,
}

#[derive(Serialize)]
struct SubjectView<'a> {
    id: &'a str,
    last_at: Option<Millis>,
    calibrated: &'a [(String, f64)],
    learned: Vec<LearnedView<'a>>,
    stages: Vec<(usize, &'a StageState)>,
    checks: Vec<(usize, &'a CheckState)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thermal: Vec<ThermalView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    doubted: Vec<(usize, Millis)>,
}

impl Serialize for SnapshotView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Subjects<'b>(&'b Engine);
        impl Serialize for Subjects<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let engine = self.0;
                let mut doubted = engine.doubted_levels();
                serializer.collect_seq(engine.sensors.iter().zip(&engine.slots).enumerate().map(|(position, (sensor, slot))| {
                    let plan = engine.plan_of(slot);
                    let states = engine.states.of(slot, plan);
                    SubjectView {
                        id: &sensor.id,
                        last_at: slot.last_at,
                        calibrated: &slot.calibrated,
                        learned: learned_to_save(plan, &states).collect(),
                        stages: stages_to_save(plan, &states).collect(),
                        checks: checks_to_save(&engine.rules, plan, &states).collect(),
                        thermal: thermal_to_save(plan, &states).collect(),
                        doubted: doubted.remove(&position).unwrap_or_default(),
                    }
                }))
            }
        }
        let mut snapshot = serializer.serialize_struct("Snapshot", 3)?;
        snapshot.serialize_field("version", &SNAPSHOT_VERSION)?;
        snapshot.serialize_field("rules", &headers(&self.engine.rules))?;
        snapshot.serialize_field("subjects", &Subjects(self.engine))?;
        snapshot.end()
    }
}

impl Engine {
    pub fn snapshot(&self) -> Snapshot {
        let mut doubted = self.doubted_levels();
        let subjects = (0..self.sensors.len()).map(|position| self.subject_snapshot(position, &mut doubted)).collect();
        Snapshot { version: SNAPSHOT_VERSION, rules: headers(&self.rules), subjects }
    }

    /// [`Engine::snapshot`] of some sensors only (those a district's standby evaluator judges
    /// while their box is down); positions past the inventory are left out.
    pub fn snapshot_of(&self, subjects: &[SubjectId]) -> Snapshot {
        let mut doubted = self.doubted_levels();
        let subjects = subjects.iter().filter(|s| s.0 < self.sensors.len()).map(|s| self.subject_snapshot(s.0, &mut doubted)).collect();
        Snapshot { version: SNAPSHOT_VERSION, rules: headers(&self.rules), subjects }
    }

    /// The open levels found in doubt, by sensor position: (rule, when the level began).
    fn doubted_levels(&self) -> std::collections::HashMap<usize, Vec<(usize, Millis)>> {
        let mut levels: std::collections::HashMap<usize, Vec<(usize, Millis)>> = std::collections::HashMap::new();
        for agreement in &self.agreements {
            for (&(position, _), since) in agreement.members.iter().zip(&agreement.doubted) {
                if let Some(since) = since {
                    levels.entry(position).or_default().push((agreement.rule, *since));
                }
            }
        }
        levels
    }

    fn subject_snapshot(&self, position: usize, doubted: &mut std::collections::HashMap<usize, Vec<(usize, Millis)>>) -> SubjectSnapshot {
        let (sensor, slot) = (&self.sensors[position], &self.slots[position]);
        let plan = self.plan_of(slot);
        let states = self.states.of(slot, plan);
        SubjectSnapshot {
            id: sensor.id.to_string(),
            last_at: slot.last_at,
            calibrated: slot.calibrated.to_vec(),
            learned: learned_to_save(plan, &states).map(|view| view.to_owned()).collect(),
            stages: stages_to_save(plan, &states).map(|(rule, state)| (rule, state.clone())).collect(),
            checks: checks_to_save(&self.rules, plan, &states).map(|(rule, state)| (rule, state.clone())).collect(),
            thermal: thermal_to_save(plan, &states).map(|view| view.to_owned()).collect(),
            doubted: doubted.remove(&position).unwrap_or_default(),
        }
    }

    /// The engine's state, serializable as a [`Snapshot`] (same fields, same order) straight
    /// from the engine, without copying the state first: what the daemon writes every minute,
    /// streamed, in little memory.
    pub fn snapshot_view(&self) -> impl Serialize + '_ {
        SnapshotView { engine: self }
    }

    /// Takes over the state in `snapshot` for sensors and unchanged rules this engine has.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Restored {
        if snapshot.version != SNAPSHOT_VERSION {
            return Restored::default();
        }
        let mut restorer = Restorer::new(self);
        for saved in &snapshot.subjects {
            restorer.subject(Saved::from_v3(saved.clone(), &snapshot.rules));
        }
        restorer.finish()
    }

    /// [`Engine::restore`] straight from serialized snapshot data (e.g. a JSON reader), one
    /// sensor at a time: the whole snapshot is never in memory next to the engine. Reads
    /// version 3 and version 2. Data that breaks off is an error; the sensors read before the
    /// break keep their state (each sensor's state is whole on its own).
    pub fn restore_streamed<'de, D: serde::Deserializer<'de>>(&mut self, deserializer: D) -> Result<Restored, D::Error> {
        let result = deserializer.deserialize_map(SnapshotVisitor { restorer: Restorer::new(self) });
        if result.is_err() {
            self.recompute_agreements();
        }
        result
    }

    /// [`Engine::restore`] from the engine this one replaces (a rule reload), moving the state
    /// over sensor by sensor: the old engine is freed as it goes, and no snapshot of the whole
    /// state is made next to the two engines.
    pub fn take_over(&mut self, previous: Engine) -> Restored {
        let headers = headers(&previous.rules);
        let mut doubted = previous.doubted_levels();
        let Engine { sensors, slots, plans, states, silences_watched_from, .. } = previous;
        self.silences_watched_from = silences_watched_from;
        // The slots' states lie in the lists sensor after sensor, in the slots' order.
        let (mut old_learned, mut old_stages, mut old_checks) = (states.learned.into_iter(), states.stages.into_iter(), states.checks.into_iter());
        let mut old_thermal = states.thermal.into_iter();
        let mut restorer = Restorer::new(self);
        for (position, (sensor, slot)) in sensors.into_iter().zip(slots).enumerate() {
            let plan = &plans[slot.plan as usize];
            let learned = plan.learned.iter().zip(old_learned.by_ref().take(plan.learned.len()));
            let stages = plan.stages.iter().zip(old_stages.by_ref().take(plan.stages.len()));
            let checks = plan.checks.iter().zip(old_checks.by_ref().take(plan.checks.len()));
            let thermal = plan.thermal.iter().zip(old_thermal.by_ref().take(plan.thermal.len()));
            restorer.subject(Saved {
                id: sensor.id.to_string(),
                last_at: slot.last_at,
                calibrated: slot.calibrated.into_vec(),
                learned: learned
                    .map(|((field, window_ms), l)| LearnedBaseline { field: field.clone(), window_ms: *window_ms, learner: l.learner, value: l.value })
                    .collect(),
                stages: stages.map(|(&rule, state)| (headers[usize::from(rule)].stage, state)).collect(),
                checks: checks.map(|(planned, state)| (headers[planned.rule()].id.as_str(), headers[planned.rule()].fingerprint, state)).collect(),
                thermal: thermal.map(|(spec, state)| SavedThermal { temperature: spec.temperature.clone(), fields: spec.fields.to_vec(), state }).collect(),
                doubted: doubted.remove(&position).unwrap_or_default().into_iter().map(|(rule, since)| (headers[rule].id.as_str(), since)).collect(),
            });
        }
        restorer.finish()
    }
}

/// A sensor's saved state with its rules resolved to id and fingerprint, whichever version or
/// engine it came from.
struct Saved<'r> {
    id: String,
    last_at: Option<Millis>,
    calibrated: Vec<(String, f64)>,
    learned: Vec<LearnedBaseline>,
    /// (stage fingerprint, state)
    stages: Vec<(u64, StageState)>,
    /// (rule id, rule fingerprint, state)
    checks: Vec<(&'r str, u64, CheckState)>,
    thermal: Vec<SavedThermal>,
    /// (rule id, when its open level found in doubt began)
    doubted: Vec<(&'r str, Millis)>,
}

impl<'r> Saved<'r> {
    /// Entries naming a rule the header does not have are dropped (a damaged file).
    fn from_v3(saved: SubjectSnapshot, rules: &'r [RuleHeader]) -> Saved<'r> {
        Saved {
            id: saved.id,
            last_at: saved.last_at,
            calibrated: saved.calibrated,
            learned: saved.learned,
            stages: saved.stages.into_iter().filter_map(|(rule, state)| Some((rules.get(rule)?.stage, state))).collect(),
            checks: saved.checks.into_iter().filter_map(|(rule, state)| rules.get(rule).map(|r| (r.id.as_str(), r.fingerprint, state))).collect(),
            thermal: saved.thermal,
            doubted: saved.doubted.into_iter().filter_map(|(rule, since)| Some((rules.get(rule)?.id.as_str(), since))).collect(),
        }
    }

    fn from_v2(saved: &'r SubjectV2) -> Saved<'r> {
        Saved {
            id: saved.id.clone(),
            last_at: saved.last_at,
            calibrated: saved.calibrated.clone(),
            learned: saved.learned.clone(),
            stages: saved.stages.iter().map(|stage| (stage.fingerprint, stage.state.clone())).collect(),
            checks: saved.checks.iter().map(|check| (check.rule.as_str(), check.fingerprint, check.state.clone())).collect(),
            thermal: Vec::new(),
            doubted: Vec::new(),
        }
    }
}

/// A sensor in a version 2 snapshot.
#[derive(Deserialize)]
struct SubjectV2 {
    id: String,
    last_at: Option<Millis>,
    calibrated: Vec<(String, f64)>,
    learned: Vec<LearnedBaseline>,
    stages: Vec<StageV2>,
    checks: Vec<CheckV2>,
}

#[derive(Deserialize)]
struct StageV2 {
    fingerprint: u64,
    state: StageState,
}

#[derive(Deserialize)]
struct CheckV2 {
    rule: String,
    fingerprint: u64,
    state: CheckState,
}

/// Takes state over sensor by sensor, with the rules' fingerprints worked out once.
struct Restorer<'e> {
    engine: &'e mut Engine,
    index_of: std::collections::HashMap<std::sync::Arc<str>, usize>,
    /// The engine's own rules, by index.
    rules: Vec<RuleHeader>,
    restored: Restored,
    /// (sensor position, rule id, start of its open level found in doubt), set on the
    /// buildings' agreements once every sensor is restored.
    doubted: Vec<(usize, String, Millis)>,
}

impl<'e> Restorer<'e> {
    fn new(engine: &'e mut Engine) -> Restorer<'e> {
        let index_of = engine.sensors.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let rules = headers(&engine.rules);
        Restorer { engine, index_of, rules, restored: Restored::default(), doubted: Vec::new() }
    }

    fn subject(&mut self, saved: Saved<'_>) {
        let Some(&index) = self.index_of.get(saved.id.as_str()) else {
            self.restored.discarded += saved.checks.len();
            return;
        };
        self.doubted.extend(saved.doubted.iter().map(|&(rule, since)| (index, rule.to_string(), since)));
        let rules = &self.rules;
        let slot = &mut self.engine.slots[index];
        let plan = &self.engine.plans[slot.plan as usize];
        slot.last_at = saved.last_at;
        slot.calibrated = saved.calibrated.into_boxed_slice();
        let states = self.engine.states.of_mut(slot, plan);
        let mut old_learned = saved.learned;
        for (learned, (field, window_ms)) in states.learned.iter_mut().zip(&plan.learned) {
            if let Some(position) = old_learned.iter().position(|old| old.field == *field && old.window_ms == *window_ms) {
                let old = old_learned.swap_remove(position);
                *learned = Learned { learner: old.learner, value: old.value };
            }
        }
        for (state, spec) in states.thermal.iter_mut().zip(&plan.thermal) {
            if let Some(old) = saved.thermal.iter().find(|old| old.temperature == spec.temperature && *old.fields == *spec.fields) {
                *state = old.state.clone();
            }
        }
        let mut old_stages = saved.stages;
        for (state, &rule) in states.stages.iter_mut().zip(&plan.stages) {
            if let Some(position) = old_stages.iter().position(|&(fingerprint, _)| fingerprint == rules[usize::from(rule)].stage) {
                *state = old_stages.swap_remove(position).1;
            }
        }
        for (rule, fingerprint, state) in saved.checks {
            match plan.checks.iter().position(|planned| rules[planned.rule()].id == rule && rules[planned.rule()].fingerprint == fingerprint) {
                Some(position) => {
                    if let Some(check) = states.checks.get_mut(position) {
                        *check = state;
                        self.restored.checks += 1;
                    }
                }
                None => {
                    self.restored.discarded += 1;
                    if plan.checks.iter().any(|planned| rules[planned.rule()].id == rule) {
                        self.restored.changed_rules.insert(rule.to_string());
                    } else if !rules.iter().any(|header| header.id == rule) {
                        self.restored.gone_rules.insert(rule.to_string());
                    }
                }
            }
        }
    }

    fn finish(self) -> Restored {
        let engine = self.engine;
        for (position, rule, since) in self.doubted {
            let agreement = engine.agreements.iter_mut().find(|a| engine.rules[a.rule].id == rule && a.members.iter().any(|&(member, _)| member == position));
            if let Some(agreement) = agreement {
                agreement.doubted.resize(agreement.members.len(), None);
                if let Some(member) = agreement.members.iter().position(|&(member, _)| member == position) {
                    agreement.doubted[member] = Some(since);
                }
            }
        }
        engine.recompute_agreements();
        self.restored
    }
}

/// Reads `{"version": …, "rules": […], "subjects": [ … ]}` (version 3) or `{"version": 2,
/// "subjects": [ … ]}`, handing each subject to the restorer as it arrives; a snapshot of
/// another version (or without the version and rules before the subjects) is read past and
/// ignored.
struct SnapshotVisitor<'e> {
    restorer: Restorer<'e>,
}

impl<'de> serde::de::Visitor<'de> for SnapshotVisitor<'_> {
    type Value = Restored;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a rule engine snapshot")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<Restored, A::Error> {
        let mut version = None;
        let mut rules: Option<Vec<RuleHeader>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => version = Some(map.next_value::<u32>()?),
                "rules" => rules = Some(map.next_value()?),
                "subjects" => {
                    let layout = match (version, &rules) {
                        (Some(SNAPSHOT_VERSION), Some(rules)) => Layout::V3(rules),
                        (Some(SNAPSHOT_VERSION_2), _) => Layout::V2,
                        _ => Layout::Unknown,
                    };
                    map.next_value_seed(SubjectsSeed { restorer: &mut self.restorer, layout })?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(self.restorer.finish())
    }
}

/// How the subjects of the snapshot being read are laid out.
enum Layout<'h> {
    V3(&'h [RuleHeader]),
    V2,
    Unknown,
}

struct SubjectsSeed<'r, 'e, 'h> {
    restorer: &'r mut Restorer<'e>,
    layout: Layout<'h>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SubjectsSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SubjectsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the snapshot's subjects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.layout {
            Layout::V3(rules) => {
                while let Some(subject) = seq.next_element::<SubjectSnapshot>()? {
                    self.restorer.subject(Saved::from_v3(subject, rules));
                }
            }
            Layout::V2 => {
                while let Some(subject) = seq.next_element::<SubjectV2>()? {
                    self.restorer.subject(Saved::from_v2(&subject));
                }
            }
            Layout::Unknown => while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {},
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, EventKind, SubjectId};
    use crate::load::{RuleSet, RuleSource};
    use crate::scope::{SensorKind, Subject};

    const MIN: i64 = 60_000;

    fn engine(rules: &str) -> Engine {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
        let subject =
            Subject { id: "pond-1".into(), kind: SensorKind::Water, site: "s".into(), building: None, grid: None, tags: Default::default(), interval_ms: MIN };
        Engine::new(rules, &[subject])
    }

    const HELD: &str = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nfor = \"10m\"\nseverity = \"warning\"\n";

    /// An engine six minutes into the 10-minute hold of [`HELD`] (nothing fired yet).
    fn six_minutes_into_the_hold() -> Engine {
        let mut engine = engine(HELD);
        let mut events = Vec::new();
        for m in 0..6 {
            engine.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        assert!(events.is_empty());
        engine
    }

    /// Feeds minutes 6 to 10 of low oxygen: the hold completes once, dated from minute 0.
    fn the_hold_completes_from_minute_zero(engine: &mut Engine) {
        let mut events = Vec::new();
        for m in 6..=10 {
            engine.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        assert_eq!(events.len(), 1, "the 10-minute hold did not restart from zero");
        assert_eq!((events[0].kind, events[0].since), (EventKind::Fired, 0));
    }

    #[test]
    fn a_streamed_restore_takes_over_what_a_restore_does() {
        let before = six_minutes_into_the_hold();
        let json = serde_json::to_string(&before.snapshot_view()).unwrap();
        let mut after = engine(HELD);
        let restored = after.restore_streamed(&mut serde_json::Deserializer::from_str(&json)).unwrap();
        assert_eq!(restored.checks, 1);
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), json, "the same state");
        // Another version is read past and ignored.
        let old = json.replacen("\"version\":3", "\"version\":1", 1);
        let mut fresh = engine(HELD);
        assert_eq!(fresh.restore_streamed(&mut serde_json::Deserializer::from_str(&old)).unwrap().checks, 0);
        assert!(
            fresh.restore_streamed(&mut serde_json::Deserializer::from_str("{\"version\":3,\"rules\":[],\"subjects\":[{\"id\":")).is_err(),
            "a cut file is an error"
        );
    }

    #[test]
    fn the_streamed_view_is_the_same_json_as_the_snapshot() {
        let mut engine = engine(HELD);
        let mut events = Vec::new();
        for m in 0..3 {
            engine.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        let copied = serde_json::to_string(&engine.snapshot()).unwrap();
        let streamed = serde_json::to_string(&engine.snapshot_view()).unwrap();
        assert_eq!(streamed, copied);
        assert!(copied.contains(r#""rules":[{"id":"do-low","#) && copied.contains(r#""checks":[[0,{"Ladder""#), "{copied}");
    }

    #[test]
    fn states_at_rest_are_not_written() {
        let mut engine = engine(HELD);
        let json = serde_json::to_string(&engine.snapshot_view()).unwrap();
        assert!(json.contains(r#""learned":[],"stages":[],"checks":[]"#), "{json}");
        engine.observe(SubjectId(0), 0, &[("do", 8.0)], &mut Vec::new());
        let json = serde_json::to_string(&engine.snapshot_view()).unwrap();
        assert!(json.contains(r#""checks":[[0,{"Ladder":{"transform":"Empty","ladder":{"levels":[],"open":null},"last_value":8.0}}]]"#), "{json}");
    }

    /// What the previous release wrote, six minutes into the hold: an upgrade keeps the hold.
    const VERSION_2: &str = r#"{"version":2,"subjects":[{"id":"pond-1","last_at":300000,"calibrated":[],"learned":[],"stages":[{"fingerprint":16730295572573156526,"state":{"smooth":[]}}],"checks":[{"rule":"do-low","fingerprint":4445650150820573505,"state":{"Ladder":{"transform":"Empty","ladder":{"levels":[{"phase":{"Raising":{"since":0}},"recent":0}],"open":null},"last_value":4.0}}}]}]}"#;

    #[test]
    fn a_version_2_file_is_still_read() {
        let mut after = engine(HELD);
        let restored = after.restore_streamed(&mut serde_json::Deserializer::from_str(VERSION_2)).unwrap();
        assert_eq!(restored, super::Restored { checks: 1, ..Default::default() });
        // Its hold counted no readings; the next one is its second, as in the running engine.
        let mut before = six_minutes_into_the_hold();
        for engine in [&mut after, &mut before] {
            engine.observe(SubjectId(0), 6 * MIN, &[("do", 4.0)], &mut Vec::new());
        }
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), serde_json::to_string(&before.snapshot_view()).unwrap());
    }

    #[test]
    fn a_copy_of_some_sensors_carries_their_state_alone() {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: HELD.into() }]).unwrap();
        let subject = |id: &str| Subject {
            id: id.into(),
            kind: SensorKind::Water,
            site: "s".into(),
            building: None,
            grid: None,
            tags: Default::default(),
            interval_ms: MIN,
        };
        let mut engine = Engine::new(rules.clone(), &[subject("pond-1"), subject("pond-2")]);
        let mut events = Vec::new();
        for m in 0..6 {
            engine.observe(SubjectId(1), m * MIN, &[("do", 4.0)], &mut events);
        }
        let copy = engine.snapshot_of(&[SubjectId(1), SubjectId(7)]);
        assert_eq!(copy.subjects.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["pond-2"]);
        // Restored on an engine that knows only that sensor, the hold goes on from minute 0.
        let mut standby = Engine::new(rules, &[subject("pond-2")]);
        assert_eq!(standby.restore(&copy).checks, 1);
        let mut events = Vec::new();
        for m in 6..=10 {
            standby.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        assert_eq!(events.iter().map(|e| (e.kind, e.since)).collect::<Vec<_>>(), [(EventKind::Fired, 0)]);
    }

    #[test]
    fn a_hold_survives_a_restart() {
        let json = serde_json::to_string(&six_minutes_into_the_hold().snapshot()).unwrap();
        let mut after = engine(HELD);
        let restored = after.restore(&serde_json::from_str(&json).unwrap());
        assert_eq!(restored.checks, 1);
        the_hold_completes_from_minute_zero(&mut after);
    }

    #[test]
    fn a_reload_takes_the_state_over_from_the_old_engine() {
        let before = six_minutes_into_the_hold();
        let expected = serde_json::to_string(&before.snapshot_view()).unwrap();
        let mut after = engine(HELD);
        assert_eq!(after.take_over(before).checks, 1);
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), expected, "the same state, moved");
        the_hold_completes_from_minute_zero(&mut after);
        let mut reloaded = engine(&HELD.replace("below = 5", "below = 4.5"));
        let taken = reloaded.take_over(after);
        assert_eq!((taken.checks, taken.discarded), (0, 1), "a changed rule starts fresh");
    }

    /// Sensors of different kinds (plans of different lengths) under the default packs, each
    /// fed its own values: a reload hands every sensor its own states back.
    #[test]
    fn a_reload_of_many_sensors_hands_each_its_own_state() {
        let packs = || RuleSet::compile(&crate::packs::builtin_packs()).unwrap();
        // Water probes are surface water, as the daemon tags them by default.
        let subject = |id: &str, kind| {
            let tags = if kind == SensorKind::Water { [("use".to_string(), "surface".to_string())].into_iter().collect() } else { Default::default() };
            Subject { id: id.into(), kind, site: "s".into(), building: None, grid: None, tags, interval_ms: MIN }
        };
        let subjects = [
            subject("house-1", SensorKind::Tilt),
            subject("pond-1", SensorKind::Water),
            subject("house-2", SensorKind::Tilt),
            subject("pond-2", SensorKind::Water),
        ];
        let mut before = Engine::new(packs(), &subjects);
        let mut events = Vec::new();
        for m in 0..90 {
            let at = m * MIN;
            let wobble = (m % 7) as f64 * 0.01;
            before.observe(SubjectId(0), at, &[("x", 0.1 + wobble), ("y", 0.2), ("temperature", 21.5 + wobble)], &mut events);
            before.observe(SubjectId(1), at, &[("ph", 7.0 + wobble), ("do", 6.5), ("turbidity", 10.0 + wobble)], &mut events);
            before.observe(SubjectId(2), at, &[("x", 1.5 + wobble), ("y", -0.4)], &mut events);
            before.observe(SubjectId(3), at, &[("ph", 8.0 - wobble), ("do", 3.0)], &mut events);
        }
        // The first box's first two hours of temperatures end: its compensation has a level.
        before.observe(SubjectId(0), 121 * MIN, &[("x", 0.1), ("y", 0.2), ("temperature", 21.5)], &mut events);
        let expected = serde_json::to_string(&before.snapshot_view()).unwrap();
        assert_eq!(expected.matches("\"stages\":[[").count(), 4, "both tilt boxes and both probes (their pH jump) have smoothing windows to move: {expected}");
        assert_eq!(expected.matches("\"last_value\":7.95").count(), 1, "the second probe's own value: {expected}");
        assert_eq!(expected.matches("\"thermal\":[{\"temperature\":\"temperature\"").count(), 1, "the box that reports a temperature: {expected}");
        let levels = before.temperature_levels(SubjectId(0));
        assert_eq!(levels.len(), 1, "two hours of temperatures make a level");
        let mut restarted = Engine::new(packs(), &subjects);
        restarted.restore_streamed(&mut serde_json::Deserializer::from_str(&expected)).unwrap();
        assert_eq!(restarted.temperature_levels(SubjectId(0)), levels, "a restart keeps what compensation learned");
        let mut after = Engine::new(packs(), &subjects);
        let taken = after.take_over(before);
        assert_eq!(taken.discarded, 0);
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), expected, "each sensor got its own states back");
        assert_eq!(after.temperature_levels(SubjectId(0)), levels);
    }

    #[test]
    fn a_changed_rule_starts_fresh() {
        let mut before = engine(HELD);
        let mut events = Vec::new();
        before.observe(SubjectId(0), 0, &[("do", 4.0)], &mut events);
        let mut after = engine(&HELD.replace("below = 5", "below = 4.5"));
        let restored = after.restore(&before.snapshot());
        assert_eq!((restored.checks, restored.discarded), (0, 1));
        assert_eq!(restored.changed_rules.into_iter().collect::<Vec<_>>(), vec!["do-low".to_string()], "named, to judge its incidents afresh");
        let unchanged = engine(HELD).restore(&before.snapshot());
        assert!(unchanged.changed_rules.is_empty() && unchanged.gone_rules.is_empty());
        let renamed = engine(&HELD.replace("id = \"do-low\"", "id = \"do-low-canal\"")).restore(&before.snapshot());
        assert!(renamed.changed_rules.is_empty());
        assert_eq!(renamed.gone_rules.into_iter().collect::<Vec<_>>(), vec!["do-low".to_string()], "named, to settle its incidents");
    }
}
