//! The rule engine: fed samples in time order per sensor and a clock tick, it returns
//! [`RuleEvent`]s. It keeps one [`ThresholdState`] per (rule, sensor) that the rule applies to.
//!
//! Invariants: sensors are addressed by [`SubjectId`], their position in the list the engine
//! was built with; a sample older than the sensor's previous one is not evaluated (it would
//! rewind hold timers) and is reported as [`Observed::OutOfOrder`]; non-finite values are
//! treated as missing.

use crate::load::RuleSet;
use crate::rule::{Millis, Rule};
use crate::scope::Subject;
use crate::severity::Severity;
use crate::threshold::{ThresholdState, Transition};

/// Index of a sensor in the list given to [`Engine::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectId(pub usize);

/// Index of a rule in [`Engine::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// Whether an alert starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Fired,
    Cleared,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fired => "fired",
            EventKind::Cleared => "cleared",
        }
    }
}

/// One alert starting or ending for one rule on one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleEvent {
    pub rule: RuleId,
    pub subject: SubjectId,
    pub kind: EventKind,
    pub severity: Severity,
    /// The value that decided the transition.
    pub value: f64,
    /// When the transition happened (sample time, or tick time for a completed raise hold).
    pub at: Millis,
    /// When the breach began.
    pub since: Millis,
}

/// What happened to one observed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Evaluated,
    /// Older than the sensor's previous sample; not evaluated.
    OutOfOrder,
    /// The id is not one the engine was built with.
    UnknownSubject,
}

#[derive(Debug)]
struct Check {
    rule: RuleId,
    state: ThresholdState,
}

#[derive(Debug, Default)]
struct SubjectSlot {
    last_at: Option<Millis>,
    checks: Vec<Check>,
}

/// Evaluates a [`RuleSet`] over a fixed list of sensors.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    subjects: Vec<SubjectSlot>,
}

impl Engine {
    pub fn new(rules: RuleSet, subjects: &[Subject]) -> Engine {
        let rules = rules.rules;
        let subjects = subjects
            .iter()
            .map(|subject| SubjectSlot {
                last_at: None,
                checks: rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| rule.scope.matches(subject))
                    .map(|(index, _)| Check { rule: RuleId(index), state: ThresholdState::default() })
                    .collect(),
            })
            .collect();
        Engine { rules, subjects }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    /// Number of rules that apply to a sensor (0 for an unknown id).
    pub fn rules_for(&self, subject: SubjectId) -> usize {
        self.subjects.get(subject.0).map_or(0, |slot| slot.checks.len())
    }

    /// Evaluates one sample of `subject` taken at `at`, appending any events to `events`.
    pub fn observe<K: AsRef<str>>(
        &mut self,
        subject: SubjectId,
        at: Millis,
        fields: &[(K, f64)],
        events: &mut Vec<RuleEvent>,
    ) -> Observed {
        let Some(slot) = self.subjects.get_mut(subject.0) else { return Observed::UnknownSubject };
        if slot.last_at.is_some_and(|last| at < last) {
            return Observed::OutOfOrder;
        }
        slot.last_at = Some(at);
        for check in &mut slot.checks {
            let rule = &self.rules[check.rule.0];
            let Some(value) = rule.value.evaluate(fields).filter(|v| v.is_finite()) else { continue };
            if let Some(transition) = check.state.observe(&rule.threshold, value, at) {
                events.push(event(rule, check.rule, subject, transition, value, at));
            }
        }
        Observed::Evaluated
    }

    /// Lets time pass: completes raise holds whose time has come at `now`.
    pub fn tick(&mut self, now: Millis, events: &mut Vec<RuleEvent>) {
        for (index, slot) in self.subjects.iter_mut().enumerate() {
            for check in &mut slot.checks {
                let rule = &self.rules[check.rule.0];
                if let Some(transition) = check.state.tick(&rule.threshold, now) {
                    let value = check.state.last_value;
                    events.push(event(rule, check.rule, SubjectId(index), transition, value, now));
                }
            }
        }
    }
}

fn event(rule: &Rule, id: RuleId, subject: SubjectId, transition: Transition, value: f64, at: Millis) -> RuleEvent {
    let (kind, since) = match transition {
        Transition::Fired { since } => (EventKind::Fired, since),
        Transition::Cleared { since } => (EventKind::Cleared, since),
    };
    RuleEvent { rule: id, subject, kind, severity: rule.severity, value, at, since }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RuleSource;
    use crate::scope::SensorKind;

    const RULES: &str = r#"
[[rule]]
id = "tilt-danger"
kind = "tilt"
value = "hypot(x, y)"
above = 0.4
clear_below = 0.35
for = "1m"
severity = "danger"

[[rule]]
id = "do-low"
kind = "water"
value = "do"
below = 5
clear_above = 5.5
severity = "warning"
"#;

    fn subject(id: &str, kind: SensorKind) -> Subject {
        Subject { id: id.into(), kind, site: "s".into(), building: None, grid: None }
    }

    fn engine() -> Engine {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: RULES.into() }]).unwrap();
        Engine::new(rules, &[subject("house-1", SensorKind::Tilt), subject("pond-1", SensorKind::Water)])
    }

    #[test]
    fn rules_apply_by_kind() {
        let e = engine();
        assert_eq!(e.rules_for(SubjectId(0)), 1);
        assert_eq!(e.rule(RuleId(0)).id, "tilt-danger");
        assert_eq!(e.rules_for(SubjectId(1)), 1);
    }

    #[test]
    fn tilt_fires_after_hold_and_clears_once() {
        let mut e = engine();
        let mut events = Vec::new();
        for (at, x) in [(0, 0.1), (60_000, 0.5), (90_000, 0.6), (120_000, 0.55), (180_000, 0.3), (240_000, 0.2)] {
            e.observe(SubjectId(0), at, &[("x", x), ("y", 0.0)], &mut events);
        }
        let summary: Vec<_> = events.iter().map(|ev| (ev.kind, ev.at, ev.since, ev.value)).collect();
        assert_eq!(summary, vec![(EventKind::Fired, 120_000, 60_000, 0.55), (EventKind::Cleared, 180_000, 60_000, 0.3)]);
    }

    #[test]
    fn out_of_order_sample_is_not_evaluated() {
        let mut e = engine();
        let mut events = Vec::new();
        assert_eq!(e.observe(SubjectId(1), 1_000, &[("do", 6.0)], &mut events), Observed::Evaluated);
        assert_eq!(e.observe(SubjectId(1), 500, &[("do", 1.0)], &mut events), Observed::OutOfOrder);
        assert!(events.is_empty());
    }

    #[test]
    fn unknown_subject_is_reported() {
        let mut e = engine();
        assert_eq!(e.observe(SubjectId(7), 0, &[("do", 1.0)], &mut Vec::new()), Observed::UnknownSubject);
    }

    #[test]
    fn nan_value_is_treated_as_missing() {
        let mut e = engine();
        let mut events = Vec::new();
        e.observe(SubjectId(1), 0, &[("do", f64::NAN)], &mut events);
        assert!(events.is_empty());
        e.observe(SubjectId(1), 1, &[("do", 4.0)], &mut events);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn tick_fires_a_held_breach_with_the_last_value() {
        let mut e = engine();
        let mut events = Vec::new();
        e.observe(SubjectId(0), 0, &[("x", 0.5), ("y", 0.0)], &mut events);
        e.tick(59_999, &mut events);
        assert!(events.is_empty());
        e.tick(60_000, &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind, events[0].value, events[0].at), (EventKind::Fired, 0.5, 60_000));
    }
}
