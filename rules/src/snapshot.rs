//! The engine's state as plain data, so hold timers, windows, baselines and ladder positions
//! survive a restart (the daemon keeps the snapshot in its local store) and a rule reload (the
//! new engine takes over the old one's state).
//!
//! Invariant: state moves only to a rule with the same id *and* the same definition
//! ([`fingerprint`]); a changed rule starts fresh, so a new threshold never inherits a decision
//! made under the old one. Baselines belong to the sensor and always carry over.

use crate::engine::{CheckState, Engine, LearnedBaseline};
use crate::signal::StageState;
use crate::rule::{Millis, Rule};
use serde::{Deserialize, Serialize};

/// Bumped when the layout of the state changes; a snapshot of another version is ignored.
pub const SNAPSHOT_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub subjects: Vec<SubjectSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectSnapshot {
    pub id: String,
    pub last_at: Option<Millis>,
    pub calibrated: Vec<(String, f64)>,
    pub learned: Vec<LearnedBaseline>,
    pub stages: Vec<StageSnapshot>,
    pub checks: Vec<CheckSnapshot>,
}

/// The state of a shared signal stage (its smoothing window), keyed by what it computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {
    pub fingerprint: u64,
    pub state: StageState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSnapshot {
    pub rule: String,
    pub fingerprint: u64,
    pub state: CheckState,
}

/// What a restore carried over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// (rule, sensor) states taken over.
    pub checks: usize,
    /// States left behind because their rule changed or is gone.
    pub discarded: usize,
}

/// A stable hash of what a rule does (scope, signal, check), not of its title or place in a
/// file.
pub fn fingerprint(rule: &Rule) -> u64 {
    fnv1a(&format!("{:?}|{:?}|{:?}|{:?}|{}|{:?}", rule.scope, rule.signal, rule.check, rule.overrides, rule.device, rule.agree))
}

/// A stable hash of what a rule's signal stage computes (expression, baseline, smoothing).
fn stage_fingerprint(rule: &Rule) -> u64 {
    match &rule.signal {
        Some(signal) => fnv1a(&format!("{:?}|{:?}|{:?}|{:?}", signal.expr, signal.baseline, signal.relative, signal.smooth)),
        None => 0,
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A [`Snapshot`] that borrows the engine's state instead of copying it: serialized, it is the
/// same JSON as the snapshot, written as it goes (no copy of the state, no whole text in memory).
struct SnapshotView<'a> {
    engine: &'a Engine,
    /// Fingerprints of the engine's rules and of their signal stages, by rule index.
    checks: Vec<u64>,
    stages: Vec<u64>,
}

#[derive(Serialize)]
struct SubjectView<'a> {
    id: &'a str,
    last_at: Option<Millis>,
    calibrated: &'a [(String, f64)],
    learned: &'a [LearnedBaseline],
    stages: Vec<StageView<'a>>,
    checks: Vec<CheckView<'a>>,
}

#[derive(Serialize)]
struct StageView<'a> {
    fingerprint: u64,
    state: &'a StageState,
}

#[derive(Serialize)]
struct CheckView<'a> {
    rule: &'a str,
    fingerprint: u64,
    state: &'a CheckState,
}

impl Serialize for SnapshotView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Subjects<'b>(&'b SnapshotView<'b>);
        impl Serialize for Subjects<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let view = self.0;
                serializer.collect_seq(view.engine.sensors.iter().zip(&view.engine.slots).map(|(sensor, slot)| SubjectView {
                    id: &sensor.id,
                    last_at: slot.last_at,
                    calibrated: &slot.calibrated,
                    learned: &slot.learned,
                    stages: slot.stages.iter().map(|stage| StageView { fingerprint: view.stages[stage.rule()], state: &stage.state }).collect(),
                    checks: slot.checks.iter().map(|check| CheckView { rule: &view.engine.rules[check.rule()].id, fingerprint: view.checks[check.rule()], state: &check.state }).collect(),
                }))
            }
        }
        let mut snapshot = serializer.serialize_struct("Snapshot", 2)?;
        snapshot.serialize_field("version", &SNAPSHOT_VERSION)?;
        snapshot.serialize_field("subjects", &Subjects(self))?;
        snapshot.end()
    }
}

impl Engine {
    pub fn snapshot(&self) -> Snapshot {
        let checks: Vec<u64> = self.rules.iter().map(fingerprint).collect();
        let stages: Vec<u64> = self.rules.iter().map(stage_fingerprint).collect();
        let subjects = self
            .sensors
            .iter()
            .zip(&self.slots)
            .map(|(sensor, slot)| SubjectSnapshot {
                id: sensor.id.to_string(),
                last_at: slot.last_at,
                calibrated: slot.calibrated.clone(),
                learned: slot.learned.to_vec(),
                stages: slot.stages.iter().map(|stage| StageSnapshot { fingerprint: stages[stage.rule()], state: stage.state.clone() }).collect(),
                checks: slot
                    .checks
                    .iter()
                    .map(|check| CheckSnapshot { rule: self.rules[check.rule()].id.clone(), fingerprint: checks[check.rule()], state: check.state.clone() })
                    .collect(),
            })
            .collect();
        Snapshot { version: SNAPSHOT_VERSION, subjects }
    }

    /// The engine's state, serializable as a [`Snapshot`] (same fields, same order) straight
    /// from the engine, without copying the state first: what the daemon writes every minute,
    /// streamed, in little memory.
    pub fn snapshot_view(&self) -> impl Serialize + '_ {
        SnapshotView { engine: self, checks: self.rules.iter().map(fingerprint).collect(), stages: self.rules.iter().map(stage_fingerprint).collect() }
    }

    /// Takes over the state in `snapshot` for sensors and unchanged rules this engine has.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Restored {
        if snapshot.version != SNAPSHOT_VERSION {
            return Restored::default();
        }
        let mut restorer = Restorer::new(self);
        for saved in &snapshot.subjects {
            restorer.subject(saved.clone());
        }
        restorer.finish()
    }

    /// [`Engine::restore`] from the engine this one replaces (a rule reload), moving the state
    /// over sensor by sensor: the old engine is freed as it goes, and no snapshot of the whole
    /// state is made next to the two engines.
    pub fn take_over(&mut self, previous: Engine) -> Restored {
        let checks: Vec<u64> = previous.rules.iter().map(fingerprint).collect();
        let stages: Vec<u64> = previous.rules.iter().map(stage_fingerprint).collect();
        let Engine { rules, sensors, slots, .. } = previous;
        let mut restorer = Restorer::new(self);
        for (sensor, slot) in sensors.into_iter().zip(slots) {
            restorer.subject(SubjectSnapshot {
                id: sensor.id.into(),
                last_at: slot.last_at,
                calibrated: slot.calibrated,
                learned: slot.learned.into_vec(),
                stages: slot.stages.into_vec().into_iter().map(|stage| StageSnapshot { fingerprint: stages[stage.rule()], state: stage.state }).collect(),
                checks: slot.checks.into_vec().into_iter().map(|check| CheckSnapshot { rule: rules[check.rule()].id.clone(), fingerprint: checks[check.rule()], state: check.state }).collect(),
            });
        }
        restorer.finish()
    }

    /// [`Engine::restore`] straight from serialized snapshot data (e.g. a JSON reader), one
    /// sensor at a time: the whole snapshot is never in memory next to the engine. Data that
    /// breaks off is an error; the sensors read before the break keep their state (each
    /// sensor's state is whole on its own).
    pub fn restore_streamed<'de, D: serde::Deserializer<'de>>(&mut self, deserializer: D) -> Result<Restored, D::Error> {
        let result = deserializer.deserialize_map(SnapshotVisitor { restorer: Restorer::new(self) });
        if result.is_err() {
            self.recompute_agreements();
        }
        result
    }
}

/// Takes state over sensor by sensor, with the rules' fingerprints worked out once.
struct Restorer<'e> {
    engine: &'e mut Engine,
    index_of: std::collections::HashMap<String, usize>,
    checks: Vec<u64>,
    stages: Vec<u64>,
    restored: Restored,
}

impl<'e> Restorer<'e> {
    fn new(engine: &'e mut Engine) -> Restorer<'e> {
        let index_of = engine.sensors.iter().enumerate().map(|(i, s)| (s.id.to_string(), i)).collect();
        let checks = engine.rules.iter().map(fingerprint).collect();
        let stages = engine.rules.iter().map(stage_fingerprint).collect();
        Restorer { engine, index_of, checks, stages, restored: Restored::default() }
    }

    fn subject(&mut self, saved: SubjectSnapshot) {
        let Some(&index) = self.index_of.get(saved.id.as_str()) else {
            self.restored.discarded += saved.checks.len();
            return;
        };
        let rules = &self.engine.rules;
        let slot = &mut self.engine.slots[index];
        slot.last_at = saved.last_at;
        slot.calibrated = saved.calibrated;
        let mut old_learned = saved.learned;
        for learned in slot.learned.iter_mut() {
            if let Some(position) = old_learned.iter().position(|old| old.field == learned.field && old.window_ms == learned.window_ms) {
                *learned = old_learned.swap_remove(position);
            }
        }
        let mut old_stages = saved.stages;
        for stage in slot.stages.iter_mut() {
            if let Some(position) = old_stages.iter().position(|old| old.fingerprint == self.stages[stage.rule()]) {
                stage.state = old_stages.swap_remove(position).state;
            }
        }
        for old in saved.checks {
            match slot.checks.iter_mut().find(|check| rules[check.rule()].id == old.rule && self.checks[check.rule()] == old.fingerprint) {
                Some(check) => {
                    check.state = old.state;
                    self.restored.checks += 1;
                }
                None => self.restored.discarded += 1,
            }
        }
    }

    fn finish(self) -> Restored {
        self.engine.recompute_agreements();
        self.restored
    }
}

/// Reads `{"version": …, "subjects": [ … ]}`, handing each subject to the restorer as it
/// arrives; a snapshot of another version (or without one first) is read past and ignored.
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
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => version = Some(map.next_value::<u32>()?),
                "subjects" => map.next_value_seed(SubjectsSeed { restorer: &mut self.restorer, apply: version == Some(SNAPSHOT_VERSION) })?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(self.restorer.finish())
    }
}

struct SubjectsSeed<'r, 'e> {
    restorer: &'r mut Restorer<'e>,
    apply: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for SubjectsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SubjectsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the snapshot's subjects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.apply {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while let Some(subject) = seq.next_element::<SubjectSnapshot>()? {
            self.restorer.subject(subject);
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
        let subject = Subject { id: "pond-1".into(), kind: SensorKind::Water, site: "s".into(), building: None, grid: None, tags: Default::default(), interval_ms: MIN };
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

    #[test]
    fn a_streamed_restore_takes_over_what_a_restore_does() {
        let before = six_minutes_into_the_hold();
        let json = serde_json::to_string(&before.snapshot_view()).unwrap();
        let mut after = engine(HELD);
        let restored = after.restore_streamed(&mut serde_json::Deserializer::from_str(&json)).unwrap();
        assert_eq!(restored.checks, 1);
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), json, "the same state");
        // Another version is read past and ignored.
        let old = json.replacen("\"version\":2", "\"version\":1", 1);
        let mut fresh = engine(HELD);
        assert_eq!(fresh.restore_streamed(&mut serde_json::Deserializer::from_str(&old)).unwrap().checks, 0);
        assert!(fresh.restore_streamed(&mut serde_json::Deserializer::from_str("{\"version\":2,\"subjects\":[{\"id\":")).is_err(), "a cut file is an error");
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
        assert!(copied.contains("\"rule\":\"do-low\""), "{copied}");
    }

    #[test]
    fn a_hold_survives_a_restart() {
        let before = six_minutes_into_the_hold();
        let mut events = Vec::new();
        let json = serde_json::to_string(&before.snapshot()).unwrap();

        let mut after = engine(HELD);
        let restored = after.restore(&serde_json::from_str(&json).unwrap());
        assert_eq!(restored.checks, 1);
        for m in 6..=10 {
            after.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        assert_eq!(events.len(), 1, "the 10-minute hold did not restart from zero");
        assert_eq!((events[0].kind, events[0].since), (EventKind::Fired, 0));
    }

    #[test]
    fn a_reload_takes_the_state_over_from_the_old_engine() {
        let before = six_minutes_into_the_hold();
        let mut events = Vec::new();
        let expected = serde_json::to_string(&before.snapshot_view()).unwrap();
        let mut after = engine(HELD);
        assert_eq!(after.take_over(before).checks, 1);
        assert_eq!(serde_json::to_string(&after.snapshot_view()).unwrap(), expected, "the same state, moved");
        for m in 6..=10 {
            after.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
        assert_eq!((events.len(), events[0].since), (1, 0), "the hold went on where it was");
        let mut reloaded = engine(&HELD.replace("below = 5", "below = 4.5"));
        let taken = reloaded.take_over(after);
        assert_eq!((taken.checks, taken.discarded), (0, 1), "a changed rule starts fresh");
    }

    #[test]
    fn a_changed_rule_starts_fresh() {
        let mut before = engine(HELD);
        let mut events = Vec::new();
        before.observe(SubjectId(0), 0, &[("do", 4.0)], &mut events);
        let mut after = engine(&HELD.replace("below = 5", "below = 4.5"));
        let restored = after.restore(&before.snapshot());
        assert_eq!((restored.checks, restored.discarded), (0, 1));
    }
}
