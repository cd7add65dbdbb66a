//! The state machine of one threshold level for one sensor (a ladder runs one per level, see
//! [`crate::ladder`]).
//!
//! ```text
//!            breached                 held for raise_hold
//!  Normal ──────────────> Raising ─────────────────────────> Active   (emits Fired)
//!    ^  <── not breached ──┘                                   │  ^
//!    │                                                 recovered │  │ not recovered
//!    │            held for clear_hold                           v  │
//!    └──────────────────────────────────────────────────── Clearing  (emits Cleared)
//! ```
//!
//! Invariants: at most one `Fired` until the next `Cleared` (repeated breaches never repeat the
//! alert); a `Cleared` only follows a `Fired`. A tick may complete a raise hold (the last value
//! is still bad, the sensor just has not spoken again), but never a clear hold: only a real
//! reading can say a house is fine again.
//!
//! With a count ("k of n"), "breached" means at least k of the last n values were on the bad
//! side, and "recovered" means fewer were and the newest value is past the clear level.

use crate::rule::{Level, Millis};

/// Where one rule stands for one sensor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    Normal,
    /// Breached since `since`, waiting for the raise hold.
    Raising {
        since: Millis,
    },
    /// Fired; the breach began at `since`.
    Active {
        since: Millis,
    },
    /// Fired, and recovered since `recovered_at`, waiting for the clear hold.
    Clearing {
        since: Millis,
        recovered_at: Millis,
    },
}

/// What a step decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// The alert starts; the breach began at `since`.
    Fired { since: Millis },
    /// The alert ends; the breach had begun at `since`.
    Cleared { since: Millis },
}

/// State of one level for one sensor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThresholdState {
    pub phase: Phase,
    /// Breach bits of the last values, newest in bit 0 (used with a count).
    pub recent: u64,
}

impl Default for ThresholdState {
    fn default() -> Self {
        ThresholdState { phase: Phase::Normal, recent: 0 }
    }
}

/// [`ThresholdState::recent`] of a raise hold (without a `count`) that a second reading breached.
const SECOND_READING: u64 = 0b11;

impl ThresholdState {
    /// Whether the level is reached (fired and not yet cleared).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active { .. } | Phase::Clearing { .. })
    }

    /// Feeds one value observed at `at`.
    pub fn observe(&mut self, level: &Level, value: f64, at: Millis) -> Option<Transition> {
        let (breached, recovered) = match level.count {
            None => (level.bound.breached(value), level.bound.recovered(value)),
            Some(count) => {
                let mask = if count.n >= 64 { u64::MAX } else { (1u64 << count.n) - 1 };
                self.recent = ((self.recent << 1) | u64::from(level.bound.breached(value))) & mask;
                let hits = self.recent.count_ones();
                (hits >= u32::from(count.k), hits < u32::from(count.k) && level.bound.recovered(value))
            }
        };
        self.step(level, breached, recovered, at)
    }

    fn step(&mut self, level: &Level, breached: bool, recovered: bool, at: Millis) -> Option<Transition> {
        match self.phase {
            Phase::Normal if breached => {
                self.phase = Phase::Raising { since: at };
                self.count_raising_readings(level, 1);
                self.complete_raise(level, at)
            }
            Phase::Normal => None,
            Phase::Raising { .. } if !breached => {
                self.phase = Phase::Normal;
                self.count_raising_readings(level, 0);
                None
            }
            Phase::Raising { .. } => {
                self.count_raising_readings(level, SECOND_READING);
                self.complete_raise(level, at)
            }
            Phase::Active { since } if recovered => {
                self.phase = Phase::Clearing { since, recovered_at: at };
                self.complete_clear(level, at)
            }
            Phase::Active { .. } => None,
            Phase::Clearing { since, .. } if !recovered => {
                self.phase = Phase::Active { since };
                None
            }
            Phase::Clearing { .. } => self.complete_clear(level, at),
        }
    }

    /// Lets time pass without a reading: completes a pending raise hold.
    pub fn tick(&mut self, level: &Level, now: Millis) -> Option<Transition> {
        match self.phase {
            Phase::Raising { .. } => self.complete_raise(level, now),
            _ => None,
        }
    }

    /// Without a `count`, `recent` says how far a raise hold has got in readings: 1 for the one
    /// that began it, [`SECOND_READING`] once another breached too (with a `count` it holds the
    /// breach bits).
    fn count_raising_readings(&mut self, level: &Level, readings: u64) {
        if level.count.is_none() && level.raise_hold_ms > 0 {
            self.recent = readings;
        }
    }

    /// A raise hold is complete once it has lasted and, without a `count`, a second reading has
    /// breached too: one reading of a probe that reports every hour met a 10-minute hold alone,
    /// and a single glitch was red (an outside tester). A hold of 0 takes the first reading.
    fn complete_raise(&mut self, level: &Level, now: Millis) -> Option<Transition> {
        let Phase::Raising { since } = self.phase else { return None };
        if now.saturating_sub(since) < level.raise_hold_ms {
            return None;
        }
        if level.raise_hold_ms > 0 && level.count.is_none() && self.recent != SECOND_READING {
            return None;
        }
        self.count_raising_readings(level, 0);
        self.phase = Phase::Active { since };
        Some(Transition::Fired { since })
    }

    fn complete_clear(&mut self, level: &Level, now: Millis) -> Option<Transition> {
        let Phase::Clearing { since, recovered_at } = self.phase else { return None };
        if now.saturating_sub(recovered_at) < level.clear_hold_ms {
            return None;
        }
        self.phase = Phase::Normal;
        Some(Transition::Cleared { since })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Bound, Count};
    use crate::severity::Severity;

    const MIN: Millis = 60_000;

    fn above(trigger: f64, clear: f64, raise_hold_ms: Millis, clear_hold_ms: Millis) -> Level {
        Level { severity: Severity::Alarm, bound: Bound::Above { trigger, clear }, raise_hold_ms, clear_hold_ms, count: None }
    }

    fn feed(state: &mut ThresholdState, t: &Level, values: &[(Millis, f64)]) -> Vec<(Millis, Transition)> {
        values.iter().filter_map(|&(at, v)| state.observe(t, v, at).map(|tr| (at, tr))).collect()
    }

    #[test]
    fn fires_once_for_a_long_breach() {
        let t = above(5.0, 4.0, 0, 0);
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 6.0), (1, 7.0), (2, 6.5), (3, 9.0)]);
        assert_eq!(events, vec![(0, Transition::Fired { since: 0 })]);
    }

    #[test]
    fn clear_needs_value_below_clear_level() {
        let t = above(5.0, 4.0, 0, 0);
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 6.0), (1, 4.5), (2, 4.0), (3, 3.9)]);
        assert_eq!(events, vec![(0, Transition::Fired { since: 0 }), (3, Transition::Cleared { since: 0 })]);
    }

    #[test]
    fn value_exactly_at_trigger_does_not_fire() {
        let t = above(5.0, 5.0, 0, 0);
        let mut s = ThresholdState::default();
        assert_eq!(s.observe(&t, 5.0, 0), None);
        assert_eq!(s.observe(&t, f64::from(5.0f32), 1), None, "the limit as a float32 is on it");
        assert_eq!(s.observe(&t, 5.00001, 2), Some(Transition::Fired { since: 2 }));
    }

    #[test]
    fn raise_hold_requires_an_unbroken_breach() {
        let t = above(5.0, 4.0, 10 * MIN, 0);
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 6.0), (5 * MIN, 6.0), (6 * MIN, 4.5), (7 * MIN, 6.0), (16 * MIN, 6.0), (17 * MIN, 6.0)]);
        assert_eq!(events, vec![(17 * MIN, Transition::Fired { since: 7 * MIN })]);
    }

    #[test]
    fn tick_completes_a_raise_hold_without_a_new_reading_once_two_readings_breached() {
        let t = above(5.0, 4.0, 10 * MIN, 0);
        let mut s = ThresholdState::default();
        assert_eq!(s.observe(&t, 6.0, 0), None);
        assert_eq!(s.observe(&t, 6.0, 5 * MIN), None);
        assert_eq!(s.tick(&t, 9 * MIN), None);
        assert_eq!(s.tick(&t, 10 * MIN), Some(Transition::Fired { since: 0 }));
        assert_eq!(s.tick(&t, 11 * MIN), None, "fires once");
    }

    #[test]
    fn one_reading_alone_never_completes_a_raise_hold() {
        // An outside tester: a probe reporting every hour, one glitch below the limit, and the
        // 10-minute hold was met by that reading alone (red). The next reading decides.
        let t = above(5.0, 4.0, 10 * MIN, 0);
        let mut s = ThresholdState::default();
        assert_eq!(s.observe(&t, 6.0, 0), None);
        assert_eq!(s.tick(&t, 59 * MIN), None, "one reading is no breach that lasted");
        assert_eq!(s.observe(&t, 4.5, 60 * MIN), None, "a glitch: the next reading is good");
        assert_eq!(s.observe(&t, 6.0, 120 * MIN), None);
        assert_eq!(s.observe(&t, 6.0, 180 * MIN), Some(Transition::Fired { since: 120 * MIN }), "a breach seen twice that lasted");
        // Without a hold the first reading decides, as before.
        let at_once = above(5.0, 4.0, 0, 0);
        assert_eq!(ThresholdState::default().observe(&at_once, 6.0, 0), Some(Transition::Fired { since: 0 }));
    }

    #[test]
    fn tick_never_completes_a_clear_hold() {
        let t = above(5.0, 4.0, 0, 10 * MIN);
        let mut s = ThresholdState::default();
        s.observe(&t, 6.0, 0);
        assert_eq!(s.observe(&t, 3.0, MIN), None);
        assert_eq!(s.tick(&t, 30 * MIN), None);
        assert_eq!(s.observe(&t, 3.0, 31 * MIN), Some(Transition::Cleared { since: 0 }));
    }

    #[test]
    fn clear_hold_restarts_when_value_goes_bad_again() {
        let t = above(5.0, 4.0, 0, 10 * MIN);
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 6.0), (MIN, 3.0), (5 * MIN, 4.5), (6 * MIN, 3.0), (12 * MIN, 3.0), (16 * MIN, 3.0)]);
        assert_eq!(events, vec![(0, Transition::Fired { since: 0 }), (16 * MIN, Transition::Cleared { since: 0 })]);
    }

    #[test]
    fn below_direction_fires_under_the_line() {
        let t = Level { bound: Bound::Below { trigger: 5.0, clear: 5.5 }, ..above(0.0, 0.0, 0, 0) };
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 5.2), (1, 4.9), (2, 5.3), (3, 5.6)]);
        assert_eq!(events, vec![(1, Transition::Fired { since: 1 }), (3, Transition::Cleared { since: 1 })]);
    }

    #[test]
    fn outside_band_fires_on_either_side() {
        let t = Level { bound: Bound::Outside { low: 6.0, high: 9.0, clear_low: 6.2, clear_high: 8.8 }, ..above(0.0, 0.0, 0, 0) };
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 7.0), (1, 5.9), (2, 6.1), (3, 6.3), (4, 9.1), (5, 8.9), (6, 8.7)]);
        assert_eq!(
            events,
            vec![
                (1, Transition::Fired { since: 1 }),
                (3, Transition::Cleared { since: 1 }),
                (4, Transition::Fired { since: 4 }),
                (6, Transition::Cleared { since: 4 })
            ]
        );
    }

    #[test]
    fn count_needs_k_of_the_last_n_values() {
        let t = Level { count: Some(Count { k: 3, n: 5 }), ..above(5.0, 5.0, 0, 0) };
        let mut s = ThresholdState::default();
        let events = feed(&mut s, &t, &[(0, 6.0), (1, 1.0), (2, 6.0), (3, 1.0), (4, 6.0), (5, 1.0), (6, 1.0), (7, 1.0)]);
        assert_eq!(events, vec![(4, Transition::Fired { since: 4 }), (5, Transition::Cleared { since: 4 })]);
    }
}
