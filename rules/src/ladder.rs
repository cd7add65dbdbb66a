//! A graded ladder (notice / warning / alarm / danger) for one rule and one sensor: one
//! [`ThresholdState`] per level, and one incident whose severity is the highest level reached.
//!
//! Invariants: `Fired` opens the incident (from no level to some level), `Changed` moves its
//! severity up or down while it stays open, `Cleared` closes it (no level left). Between a
//! `Fired` and its `Cleared` there is never a second `Fired`.

use crate::rule::{Level, Millis};
use crate::severity::Severity;
use crate::threshold::ThresholdState;

/// What a ladder step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fired { severity: Severity, since: Millis },
    Changed { severity: Severity, previous: Severity, since: Millis },
    Cleared { severity: Severity, since: Millis },
}

/// Where one ladder rule stands for one sensor.
///
/// Memory: a ladder whose levels are all at rest (normal, no recent breaches) keeps no level
/// states at all; they are allocated when a value first breaches a level and dropped when all
/// are at rest again. Ten thousand sensors with a dozen ladders each are almost all at rest.
/// Saved, `levels` is the list of level states as before (empty while at rest).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LadderState {
    #[serde(serialize_with = "save_levels", deserialize_with = "load_levels")]
    levels: Option<Box<Levels>>,
    /// Severity of the open incident and when it began.
    pub open: Option<(Severity, Millis)>,
}

/// A ladder has at most one level per severity (the loader requires them to climb); a fixed
/// array keeps the pointer to it thin.
type Levels = [ThresholdState; Severity::ALL.len()];

/// Saved without the levels at rest at the top (they read back as at rest).
fn save_levels<S: serde::Serializer>(levels: &Option<Box<Levels>>, serializer: S) -> Result<S::Ok, S::Error> {
    let levels = levels.as_deref().map_or(&[][..], |levels| &levels[..]);
    let kept = levels.iter().rposition(|state| !at_rest(state)).map_or(0, |last| last + 1);
    serializer.collect_seq(&levels[..kept])
}

fn load_levels<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Box<Levels>>, D::Error> {
    let saved: Vec<ThresholdState> = serde::Deserialize::deserialize(deserializer)?;
    if saved.len() > Severity::ALL.len() {
        return Err(serde::de::Error::invalid_length(saved.len(), &"at most one level per severity"));
    }
    if saved.iter().all(at_rest) {
        return Ok(None);
    }
    let mut levels: Box<Levels> = Box::default();
    levels[..saved.len()].copy_from_slice(&saved);
    Ok(Some(levels))
}

fn at_rest(state: &ThresholdState) -> bool {
    *state == ThresholdState::default()
}

impl LadderState {
    /// Feeds one value of the rule's signal.
    pub fn observe(&mut self, levels: &[Level], value: f64, at: Millis) -> Option<Step> {
        if self.levels.is_none() && !levels.iter().any(|level| level.bound.breached(value)) {
            // At rest and not breached: every level would stay at rest.
            return None;
        }
        let states = self.levels.get_or_insert_with(Box::default);
        for (state, level) in states.iter_mut().zip(levels) {
            state.observe(level, value, at);
        }
        let step = self.settle(levels, at);
        self.rest_if_idle();
        step
    }

    /// Lets time pass: completes raise holds.
    pub fn tick(&mut self, levels: &[Level], now: Millis) -> Option<Step> {
        let states = self.levels.as_mut()?;
        for (state, level) in states.iter_mut().zip(levels) {
            state.tick(level, now);
        }
        let step = self.settle(levels, now);
        self.rest_if_idle();
        step
    }

    /// Drops the level states once all of them are at rest again.
    fn rest_if_idle(&mut self) {
        if self.levels.as_deref().is_some_and(|states| states.iter().all(at_rest)) {
            self.levels = None;
        }
    }

    /// The level states, one per severity (none while at rest).
    pub fn levels(&self) -> &[ThresholdState] {
        self.levels.as_deref().map_or(&[], |levels| &levels[..])
    }

    fn settle(&mut self, levels: &[Level], at: Millis) -> Option<Step> {
        let highest = self.levels().iter().zip(levels).rev().find(|(state, _)| state.is_active()).map(|(_, level)| level.severity);
        match (self.open, highest) {
            (None, Some(severity)) => {
                let since = self.breach_start().unwrap_or(at);
                self.open = Some((severity, since));
                Some(Step::Fired { severity, since })
            }
            (Some((previous, since)), Some(severity)) if severity != previous => {
                self.open = Some((severity, since));
                Some(Step::Changed { severity, previous, since })
            }
            (Some((severity, since)), None) => {
                self.open = None;
                Some(Step::Cleared { severity, since })
            }
            _ => None,
        }
    }

    /// When the earliest active level's breach began.
    fn breach_start(&self) -> Option<Millis> {
        self.levels()
            .iter()
            .filter_map(|state| match state.phase {
                crate::threshold::Phase::Active { since } | crate::threshold::Phase::Clearing { since, .. } => Some(since),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Bound;

    const MIN: Millis = 60_000;

    fn level(severity: Severity, trigger: f64, clear: f64, hold: Millis) -> Level {
        Level { severity, bound: Bound::Above { trigger, clear }, raise_hold_ms: hold, clear_hold_ms: 0, count: None }
    }

    fn ladder() -> Vec<Level> {
        vec![
            level(Severity::Warning, 2.0, 1.8, 10 * MIN),
            level(Severity::Alarm, 4.0, 3.6, 5 * MIN),
            level(Severity::Danger, 7.0, 6.5, MIN),
        ]
    }

    fn run(values: &[(Millis, f64)]) -> Vec<(Millis, Step)> {
        let levels = ladder();
        let mut state = LadderState::default();
        values.iter().filter_map(|&(at, v)| state.observe(&levels, v, at).map(|s| (at, s))).collect()
    }

    #[test]
    fn a_jump_to_danger_is_one_incident_not_three() {
        let steps = run(&[(0, 0.5), (MIN, 8.0), (2 * MIN, 8.0), (20 * MIN, 8.0), (30 * MIN, 8.0)]);
        assert_eq!(steps, vec![(2 * MIN, Step::Fired { severity: Severity::Danger, since: MIN })]);
    }

    #[test]
    fn severity_steps_up_and_back_down_then_clears() {
        let steps = run(&[(0, 2.5), (10 * MIN, 2.5), (11 * MIN, 4.5), (16 * MIN, 4.5), (17 * MIN, 3.0), (18 * MIN, 1.0)]);
        assert_eq!(
            steps,
            vec![
                (10 * MIN, Step::Fired { severity: Severity::Warning, since: 0 }),
                (16 * MIN, Step::Changed { severity: Severity::Alarm, previous: Severity::Warning, since: 0 }),
                (17 * MIN, Step::Changed { severity: Severity::Warning, previous: Severity::Alarm, since: 0 }),
                (18 * MIN, Step::Cleared { severity: Severity::Warning, since: 0 }),
            ]
        );
    }

    #[test]
    fn saved_levels_read_back_the_same_and_levels_at_rest_are_not_written() {
        let levels = ladder();
        let mut state = LadderState::default();
        assert_eq!(serde_json::to_string(&state).unwrap(), r#"{"levels":[],"open":null}"#);
        state.observe(&levels, 2.5, 0);
        let saved = serde_json::to_string(&state).unwrap();
        assert_eq!(saved, r#"{"levels":[{"phase":{"Raising":{"since":0}},"recent":0}],"open":null}"#, "only the warning level is not at rest");
        let mut loaded: LadderState = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.observe(&levels, 2.5, 10 * MIN), Some(Step::Fired { severity: Severity::Warning, since: 0 }), "the hold went on");
        let five = r#"{"levels":[{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":1}],"open":null}"#;
        assert!(serde_json::from_str::<LadderState>(five).is_err(), "more levels than severities");
    }

    #[test]
    fn tick_completes_the_hold_of_a_silent_sensor() {
        let levels = ladder();
        let mut state = LadderState::default();
        assert_eq!(state.observe(&levels, 8.0, 0), None);
        assert_eq!(state.tick(&levels, MIN), Some(Step::Fired { severity: Severity::Danger, since: 0 }));
    }
}
