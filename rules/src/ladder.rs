//! A graded ladder (notice / warning / alarm / danger) for one rule and one sensor: one
//! [`ThresholdState`] per level, and one incident whose severity is the highest level reached.
//!
//! Invariants: `Fired` opens the incident (from no level to some level), `Changed` moves its
//! severity up or down while it stays open, `Cleared` closes it (no level left). Between a
//! `Fired` and its `Cleared` there is never a second `Fired`.

use crate::rule::{Level, Millis};
use crate::severity::Severity;
use crate::threshold::{Phase, ThresholdState};

/// What a ladder step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fired { severity: Severity, since: Millis },
    Changed { severity: Severity, previous: Severity, since: Millis },
    Cleared { severity: Severity, since: Millis },
}

/// Where one ladder rule stands for one sensor.
///
/// Memory: a ladder whose levels are all at rest (normal, no recent breaches) keeps nothing
/// but a null pointer; the level states and the open incident are allocated when a value first
/// breaches a level and dropped when all levels are at rest again (an open incident always has
/// an active level). Ten thousand sensors with a dozen ladders each are almost all at rest.
/// Saved, it is `{"levels": [level states…], "open": [severity, since] | null}` as before, the
/// levels at rest at the top left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LadderState(Option<Box<Breached>>);

/// A ladder away from rest: every level's state, and the incident if one is open.
#[derive(Debug, Clone, Default, PartialEq)]
struct Breached {
    levels: Levels,
    /// Severity of the open incident and when it began.
    open: Option<(Severity, Millis)>,
}

/// A ladder has at most one level per severity (the loader requires them to climb).
type Levels = [ThresholdState; Severity::ALL.len()];

/// The saved form (state formats 2 and 3).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "LadderState")]
struct Saved<L> {
    levels: L,
    open: Option<(Severity, Millis)>,
}

impl serde::Serialize for LadderState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let levels = self.levels();
        let kept = levels.iter().rposition(|state| !at_rest(state)).map_or(0, |last| last + 1);
        Saved { levels: &levels[..kept], open: self.open() }.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for LadderState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LadderState, D::Error> {
        let saved = Saved::<Vec<ThresholdState>>::deserialize(deserializer)?;
        if saved.levels.len() > Severity::ALL.len() {
            return Err(serde::de::Error::invalid_length(saved.levels.len(), &"at most one level per severity"));
        }
        if saved.open.is_none() && saved.levels.iter().all(at_rest) {
            return Ok(LadderState(None));
        }
        let mut breached = Box::new(Breached { levels: Levels::default(), open: saved.open });
        breached.levels[..saved.levels.len()].copy_from_slice(&saved.levels);
        Ok(LadderState(Some(breached)))
    }
}

fn at_rest(state: &ThresholdState) -> bool {
    *state == ThresholdState::default()
}

impl LadderState {
    /// Feeds one value of the rule's signal.
    pub fn observe(&mut self, levels: &[Level], value: f64, at: Millis) -> Option<Step> {
        self.observe_from(levels, Severity::Notice, value, at)
    }

    /// Feeds one value; only a level of severity `lowest` or above opens an incident (a rule's
    /// `uncompensated`). Once open, the incident steps down through the lower levels and
    /// clears by their clear levels and holds as usual, so a value hovering about the lowest
    /// level that opens one does not open and close it again and again.
    pub fn observe_from(&mut self, levels: &[Level], lowest: Severity, value: f64, at: Millis) -> Option<Step> {
        if self.0.is_none() && !levels.iter().any(|level| level.severity >= lowest && level.bound.breached(value)) {
            // At rest and not breached from `lowest` up: nothing could open.
            return None;
        }
        let breached = self.0.get_or_insert_with(Box::default);
        for (state, level) in breached.levels.iter_mut().zip(levels) {
            state.observe(level, value, at);
        }
        let step = breached.settle(levels, lowest, at);
        self.rest_if_idle();
        step
    }

    /// Lets time pass: completes raise holds (an incident opens from `lowest` up, as in
    /// [`LadderState::observe_from`]).
    pub fn tick(&mut self, levels: &[Level], lowest: Severity, now: Millis) -> Option<Step> {
        let breached = self.0.as_mut()?;
        for (state, level) in breached.levels.iter_mut().zip(levels) {
            state.tick(level, now);
        }
        let step = breached.settle(levels, lowest, now);
        self.rest_if_idle();
        step
    }

    /// A person resolved the incident while the value that decided last, `value`, breaches no
    /// level: the incident waits only for its clear levels and holds (back inside a class, but
    /// not past the clear margin, or not for the whole hold). It clears now, so that the next
    /// breach fires anew and is told. `None` while a level is breached or about to be, or when
    /// nothing is open.
    pub fn end_clear_holds(&mut self, levels: &[Level], value: f64) -> Option<Step> {
        let breached = self.0.as_deref()?;
        let (severity, since) = breached.open?;
        let waiting = |(state, level): (&ThresholdState, &Level)| match state.phase {
            Phase::Normal | Phase::Clearing { .. } => true,
            Phase::Active { .. } => value.is_finite() && !level.bound.breached(value),
            Phase::Raising { .. } => false,
        };
        if !breached.levels.iter().zip(levels).all(waiting) {
            return None;
        }
        self.0 = None;
        Some(Step::Cleared { severity, since })
    }

    /// Drops the level states once all of them are at rest and no incident is open.
    fn rest_if_idle(&mut self) {
        if self.0.as_deref().is_some_and(|breached| breached.open.is_none() && breached.levels.iter().all(at_rest)) {
            self.0 = None;
        }
    }

    /// The level states, one per severity (none while at rest).
    pub fn levels(&self) -> &[ThresholdState] {
        self.0.as_deref().map_or(&[], |breached| &breached.levels[..])
    }

    /// Severity of the open incident and when it began.
    pub fn open(&self) -> Option<(Severity, Millis)> {
        self.0.as_deref().and_then(|breached| breached.open)
    }

    /// When the breach of the open incident's current level began (none while nothing is open).
    pub fn reached(&self, levels: &[Level]) -> Option<Millis> {
        let breached = self.0.as_deref()?;
        let (severity, since) = breached.open?;
        let level = breached.levels.iter().zip(levels).find(|(_, level)| level.severity == severity).map(|(state, _)| state.phase);
        Some(match level {
            Some(Phase::Active { since: began } | Phase::Clearing { since: began, .. }) => began,
            _ => since,
        })
    }

    /// Every level at rest and nothing open: no breach, not even one waiting out a hold.
    pub fn at_rest(&self) -> bool {
        self.0.is_none()
    }
}

impl Breached {
    fn settle(&mut self, levels: &[Level], lowest: Severity, at: Millis) -> Option<Step> {
        let highest = self.levels.iter().zip(levels).rev().find(|(state, _)| state.is_active()).map(|(_, level)| level.severity);
        match (self.open, highest) {
            (None, Some(severity)) if severity >= lowest => {
                let since = self.breach_start(levels, lowest).unwrap_or(at);
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

    /// When the earliest active level of severity `lowest` or above began its breach.
    fn breach_start(&self, levels: &[Level], lowest: Severity) -> Option<Millis> {
        self.levels
            .iter()
            .zip(levels)
            .filter(|(_, level)| level.severity >= lowest)
            .filter_map(|(state, _)| match state.phase {
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
        vec![level(Severity::Warning, 2.0, 1.8, 10 * MIN), level(Severity::Alarm, 4.0, 3.6, 5 * MIN), level(Severity::Danger, 7.0, 6.5, MIN)]
    }

    fn run(values: &[(Millis, f64)]) -> Vec<(Millis, Step)> {
        let levels = ladder();
        let mut state = LadderState::default();
        values.iter().filter_map(|&(at, v)| state.observe(&levels, v, at).map(|s| (at, s))).collect()
    }

    #[test]
    fn a_resolve_ends_the_clear_holds_of_a_recovered_ladder_but_not_of_a_breached_one() {
        let levels: Vec<Level> = ladder().into_iter().map(|level| Level { clear_hold_ms: 24 * 60 * MIN, ..level }).collect();
        let mut state = LadderState::default();
        assert_eq!(state.end_clear_holds(&levels, 1.0), None, "nothing open");
        state.observe(&levels, 2.5, 0);
        assert_eq!(state.observe(&levels, 2.5, 10 * MIN), Some(Step::Fired { severity: Severity::Warning, since: 0 }));
        assert_eq!(state.end_clear_holds(&levels, 2.5), None, "still breached");
        assert_eq!(state.observe(&levels, 1.9, 20 * MIN), None, "inside the limit, not past the clear level (1.8)");
        let mut inside = state.clone();
        assert_eq!(inside.end_clear_holds(&levels, 1.9), Some(Step::Cleared { severity: Severity::Warning, since: 0 }), "within the margin");
        assert_eq!(state.observe(&levels, 1.0, 30 * MIN), None, "recovered: the day's hold runs");
        assert_eq!(state.end_clear_holds(&levels, 1.0), Some(Step::Cleared { severity: Severity::Warning, since: 0 }));
        assert_eq!(state, LadderState::default(), "at rest");
        // The next breach is a new incident.
        state.observe(&levels, 2.5, 30 * MIN);
        assert_eq!(state.observe(&levels, 2.5, 40 * MIN), Some(Step::Fired { severity: Severity::Warning, since: 30 * MIN }));
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
        assert_eq!(saved, r#"{"levels":[{"phase":{"Raising":{"since":0}},"recent":1}],"open":null}"#, "only the warning level is not at rest");
        let mut loaded: LadderState = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.observe(&levels, 2.5, 10 * MIN), Some(Step::Fired { severity: Severity::Warning, since: 0 }), "the hold went on");
        let five = r#"{"levels":[{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":0},{"phase":"Normal","recent":1}],"open":null}"#;
        assert!(serde_json::from_str::<LadderState>(five).is_err(), "more levels than severities");
    }

    #[test]
    fn only_levels_from_the_lowest_open_an_incident_which_then_steps_down_as_usual() {
        let levels = ladder();
        let mut state = LadderState::default();
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 2.5, 0), None, "a warning alone opens nothing");
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 2.5, 20 * MIN), None);
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 4.5, 21 * MIN), None);
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 4.5, 26 * MIN), Some(Step::Fired { severity: Severity::Alarm, since: 21 * MIN }));
        assert_eq!(
            state.observe_from(&levels, Severity::Alarm, 3.0, 31 * MIN),
            Some(Step::Changed { severity: Severity::Warning, previous: Severity::Alarm, since: 21 * MIN }),
            "steps down to the warning, one incident"
        );
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 1.0, 33 * MIN), Some(Step::Cleared { severity: Severity::Warning, since: 21 * MIN }));
        assert_eq!(state.observe_from(&levels, Severity::Alarm, 2.5, 34 * MIN), None);
        assert_eq!(state.tick(&levels, Severity::Alarm, 50 * MIN), None, "the warning alone cannot open an incident");
        assert_eq!(state.observe(&levels, 2.5, 51 * MIN), None, "judged from the lowest again: the warning's hold begins");
        assert_eq!(state.observe(&levels, 2.5, 56 * MIN), None);
        assert_eq!(state.tick(&levels, Severity::Notice, 61 * MIN), Some(Step::Fired { severity: Severity::Warning, since: 51 * MIN }));
    }

    #[test]
    fn a_silent_sensor_s_one_reading_completes_no_hold() {
        let levels = ladder();
        let mut state = LadderState::default();
        assert_eq!(state.observe(&levels, 8.0, 0), None);
        assert_eq!(state.tick(&levels, Severity::Notice, 60 * MIN), None, "one reading, then silence: its no-data rule tells");
        assert_eq!(state.observe(&levels, 8.0, 61 * MIN), Some(Step::Fired { severity: Severity::Danger, since: 0 }), "the second decides");
    }
}
