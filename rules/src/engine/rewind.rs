//! Re-anchoring a sensor whose clock stepped back. The engine judges a sensor's samples in
//! time order and refuses one older than the last ([`Observed::OutOfOrder`]); a device whose
//! clock was reset (or was ahead and got corrected) would then never be judged again. The
//! daemon decides when a run of older samples means that (see its `sensor_clocks`) and calls
//! [`Engine::rewind`]; the next sample is judged whatever its time.
//!
//! What a rewind keeps: learned and calibrated baselines, every incident and level (an open
//! alarm stays open until real readings clear it), no-data watches and the last reported
//! values, and what temperature compensation learned. What starts again: the windows signals keep
//! in device time (smoothing, the history of `change_over`, the extremes of `swing_within`, the
//! hours of temperature compensation), since they hold times the sensor will not
//! reach again for as long as its clock went back.
//!
//! A box zeroed again (`gridwatch calibrate`: replaced, or re-seated) starts afresh the same way,
//! and its levels and incidents with it ([`Engine::zeroed_again`]).

use super::{event, initial_state, CheckState, Engine, EventKind, RuleEvent, RuleId, SubjectId};
use crate::signal::{StageState, TransformState};
use crate::time::Millis;

impl Engine {
    /// Lets `subject`'s next sample be judged whatever its time (see the module notes). `false`
    /// for an id the engine was not built with.
    pub fn rewind(&mut self, subject: SubjectId) -> bool {
        let Some(slot) = self.slots.get_mut(subject.0) else { return false };
        slot.last_at = None;
        let plan = &self.plans[slot.plan as usize];
        let states = self.states.of_mut(slot, plan);
        states.stages.fill_with(StageState::default);
        states.thermal.iter_mut().for_each(crate::thermal::Thermal::rewind);
        for check in states.checks {
            match check {
                CheckState::Ladder { transform, .. } | CheckState::FlatLine { transform, .. } => *transform = TransformState::default(),
                CheckState::Peers(peer) => {
                    peer.transform = TransformState::default();
                    peer.own_transform = TransformState::default();
                }
                CheckState::NoData(_) | CheckState::Clock(_) | CheckState::ClockBehind(_) => {}
            }
        }
        true
    }

    /// `subject`'s box was zeroed again (`gridwatch calibrate`): a new box mounted in its place,
    /// or the same one re-seated. What the rules learned and decided of the box it was belongs to
    /// that box: besides [`Engine::rewind`]'s windows, its levels and incidents start again — an
    /// open one is cleared (its `Cleared` appended; a building's incident follows its boxes'
    /// votes). Judged against the old box's level, the new box's readings were a jump (red on
    /// every house whose box was swapped, an outside tester), and an incident held open by its
    /// clear hold was told when the installer's maintenance silence ended. No-data watches,
    /// flat-line runs and clock checks stay; the baselines are the caller's to set first.
    pub fn zeroed_again(&mut self, subject: SubjectId, at: Millis, events: &mut Vec<RuleEvent>) -> bool {
        if !self.rewind(subject) {
            return false;
        }
        let slot = &self.slots[subject.0];
        let plan = &self.plans[slot.plan as usize];
        let mut buildings = Vec::new();
        for (state, planned) in self.states.of_mut(slot, plan).checks.iter_mut().zip(&plan.checks) {
            let (open, value) = match state {
                CheckState::Ladder { ladder, last_value, .. } => (ladder.open(), last_value.get()),
                CheckState::Peers(peer) => (peer.ladder.open(), peer.last_value.get()),
                CheckState::NoData(_) | CheckState::FlatLine { .. } | CheckState::Clock(_) | CheckState::ClockBehind(_) => continue,
            };
            *state = initial_state(&self.rules[planned.rule()], planned.variant());
            match (planned.agreement(), open) {
                (Some(agreement), _) => buildings.push(agreement),
                (None, Some((severity, since))) => events.push(RuleEvent {
                    rule: RuleId(planned.rule()),
                    subject,
                    variant: planned.variant(),
                    ..event(EventKind::Cleared, severity, None, value.unwrap_or(f64::NAN), at, since)
                }),
                (None, None) => {}
            }
        }
        self.touched.extend(buildings);
        self.settle_agreements(at, events);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{EventKind, Observed, SubjectId};
    use crate::load::{RuleSet, RuleSource};
    use crate::scope::{SensorKind, Subject};
    use crate::Engine;

    const MIN: i64 = 60_000;
    const DAY: i64 = 1440 * MIN;

    const RULES: &str = r#"
[[rule]]
id = "do-low"
kind = "water"
value = "do"
below = 5
clear_above = 5.5
severity = "warning"
"#;

    fn engine() -> Engine {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: RULES.into() }]).unwrap();
        let probe = Subject {
            id: "pond-1".into(),
            kind: SensorKind::Water,
            site: "s".into(),
            building: None,
            grid: None,
            tags: Default::default(),
            interval_ms: 10 * MIN,
        };
        Engine::new(rules, &[probe])
    }

    #[test]
    fn a_rewound_sensor_is_judged_again_from_an_older_time() {
        let mut e = engine();
        let mut events = Vec::new();
        let pond = SubjectId(0);
        // A reading a day ahead, then the clock is right again: everything after is older.
        assert_eq!(e.observe(pond, 1_000 * DAY + DAY, &[("do", 7.0)], &mut events), Observed::Evaluated);
        assert_eq!(e.observe(pond, 1_000 * DAY + MIN, &[("do", 3.0)], &mut events), Observed::OutOfOrder);
        assert!(events.is_empty(), "an older low reading is not judged");
        assert!(e.rewind(pond));
        assert_eq!(e.observe(pond, 1_000 * DAY + 2 * MIN, &[("do", 3.0)], &mut events), Observed::Evaluated);
        assert_eq!(events.iter().map(|ev| ev.kind).collect::<Vec<_>>(), vec![EventKind::Fired], "judged after the rewind");
        assert_eq!(e.observe(pond, 1_000 * DAY + MIN, &[("do", 3.0)], &mut events), Observed::OutOfOrder, "order holds again from the new anchor");
    }

    #[test]
    fn a_rewind_keeps_open_incidents() {
        let mut e = engine();
        let mut events = Vec::new();
        let pond = SubjectId(0);
        e.observe(pond, 2 * DAY, &[("do", 3.0)], &mut events);
        assert_eq!(events.len(), 1, "fired");
        e.rewind(pond);
        events.clear();
        e.observe(pond, DAY, &[("do", 3.5)], &mut events);
        assert!(events.is_empty(), "still open after the rewind: not fired twice");
        e.observe(pond, DAY + MIN, &[("do", 7.0)], &mut events);
        assert_eq!(events.iter().map(|ev| ev.kind).collect::<Vec<_>>(), vec![EventKind::Cleared], "and cleared by a real reading");
    }

    #[test]
    fn an_unknown_sensor_is_not_rewound() {
        assert!(!engine().rewind(SubjectId(3)));
    }
}
