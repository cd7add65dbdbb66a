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

impl Engine {
    pub fn snapshot(&self) -> Snapshot {
        let subjects = self
            .sensors
            .iter()
            .zip(&self.slots)
            .map(|(sensor, slot)| SubjectSnapshot {
                id: sensor.id.to_string(),
                last_at: slot.last_at,
                calibrated: slot.calibrated.clone(),
                learned: slot.learned.clone(),
                stages: slot
                    .stages
                    .iter()
                    .map(|stage| StageSnapshot { fingerprint: stage_fingerprint(&self.rules[stage.rule]), state: stage.state.clone() })
                    .collect(),
                checks: slot
                    .checks
                    .iter()
                    .map(|check| {
                        let rule = &self.rules[check.rule];
                        CheckSnapshot { rule: rule.id.clone(), fingerprint: fingerprint(rule), state: check.state.clone() }
                    })
                    .collect(),
            })
            .collect();
        Snapshot { version: SNAPSHOT_VERSION, subjects }
    }

    /// Takes over the state in `snapshot` for sensors and unchanged rules this engine has.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Restored {
        let mut restored = Restored::default();
        if snapshot.version != SNAPSHOT_VERSION {
            return restored;
        }
        let index_of: std::collections::HashMap<&str, usize> = self.sensors.iter().enumerate().map(|(i, s)| (&*s.id, i)).collect();
        for saved in &snapshot.subjects {
            let Some(&index) = index_of.get(saved.id.as_str()) else {
                restored.discarded += saved.checks.len();
                continue;
            };
            let slot = &mut self.slots[index];
            slot.last_at = saved.last_at;
            slot.calibrated = saved.calibrated.clone();
            for learned in &mut slot.learned {
                if let Some(old) = saved.learned.iter().find(|old| old.field == learned.field && old.window_ms == learned.window_ms) {
                    *learned = old.clone();
                }
            }
            for stage in &mut slot.stages {
                let key = stage_fingerprint(&self.rules[stage.rule]);
                if let Some(old) = saved.stages.iter().find(|old| old.fingerprint == key) {
                    stage.state = old.state.clone();
                }
            }
            for old in &saved.checks {
                let current = slot.checks.iter_mut().find(|check| {
                    let rule = &self.rules[check.rule];
                    rule.id == old.rule && fingerprint(rule) == old.fingerprint
                });
                match current {
                    Some(check) => {
                        check.state = old.state.clone();
                        restored.checks += 1;
                    }
                    None => restored.discarded += 1,
                }
            }
        }
        self.recompute_agreements();
        restored
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, EventKind, SubjectId};
    use crate::load::{RuleSet, RuleSource};
    use crate::scope::{SensorKind, Subject};
    use std::collections::BTreeMap;

    const MIN: i64 = 60_000;

    fn engine(rules: &str) -> Engine {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: rules.into() }]).unwrap();
        let subject = Subject { id: "pond-1".into(), kind: SensorKind::Water, site: "s".into(), building: None, grid: None, tags: BTreeMap::new(), interval_ms: MIN };
        Engine::new(rules, &[subject])
    }

    const HELD: &str = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nfor = \"10m\"\nseverity = \"warning\"\n";

    #[test]
    fn a_hold_survives_a_restart() {
        let mut before = engine(HELD);
        let mut events = Vec::new();
        for m in 0..6 {
            before.observe(SubjectId(0), m * MIN, &[("do", 4.0)], &mut events);
        }
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
    fn a_changed_rule_starts_fresh() {
        let mut before = engine(HELD);
        let mut events = Vec::new();
        before.observe(SubjectId(0), 0, &[("do", 4.0)], &mut events);
        let mut after = engine(&HELD.replace("below = 5", "below = 4.5"));
        let restored = after.restore(&before.snapshot());
        assert_eq!((restored.checks, restored.discarded), (0, 1));
    }
}
