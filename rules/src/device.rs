//! Device checks: a box that went silent (no data) or whose value is stuck (flat line). These
//! are alarms about the equipment, routed to installers rather than grid workers.
//!
//! Invariants: each check is either quiet or open; it reports `Opened` once when it opens and
//! `Closed` once when it closes.

use crate::last_value::LastValue;
use crate::rule::Millis;

/// A device check's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened { since: Millis },
    Closed { since: Millis },
}

/// No-data (deadman) state for one sensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SilenceState {
    /// Last reading, or when watching began if none came yet.
    pub last_heard: Option<Millis>,
    pub open: bool,
}

impl SilenceState {
    /// A reading arrived.
    pub fn heard(&mut self, at: Millis) -> Option<Change> {
        let since = self.last_heard.unwrap_or(at);
        self.last_heard = Some(self.last_heard.map_or(at, |last| last.max(at)));
        if self.open {
            self.open = false;
            return Some(Change::Closed { since });
        }
        None
    }

    /// Time passed; opens when nothing was heard for longer than `timeout`.
    pub fn tick(&mut self, now: Millis, timeout: Millis) -> Option<Change> {
        let last = *self.last_heard.get_or_insert(now);
        if !self.open && now - last > timeout {
            self.open = true;
            return Some(Change::Opened { since: last });
        }
        None
    }
}

/// Flat-line state for one sensor: how many consecutive values were identical.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlatState {
    pub last: LastValue,
    pub repeats: u32,
    /// When the run of identical values began.
    pub run_since: Millis,
    pub open: bool,
}

impl FlatState {
    pub fn observe(&mut self, value: f64, at: Millis, samples: u32) -> Option<Change> {
        if self.last.get() == Some(value) {
            self.repeats = self.repeats.saturating_add(1);
        } else {
            self.last = LastValue::of(value);
            self.repeats = 1;
            let since = self.run_since;
            self.run_since = at;
            if self.open {
                self.open = false;
                return Some(Change::Closed { since });
            }
        }
        if !self.open && self.repeats >= samples {
            self.open = true;
            return Some(Change::Opened { since: self.run_since });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_opens_after_the_timeout_and_closes_on_the_next_reading() {
        let mut s = SilenceState::default();
        assert_eq!(s.heard(1_000), None);
        assert_eq!(s.tick(5_000, 5_000), None);
        assert_eq!(s.tick(6_001, 5_000), Some(Change::Opened { since: 1_000 }));
        assert_eq!(s.tick(9_000, 5_000), None, "opens once");
        assert_eq!(s.heard(9_500), Some(Change::Closed { since: 1_000 }));
    }

    #[test]
    fn a_sensor_never_heard_opens_after_the_timeout_from_the_first_tick() {
        let mut s = SilenceState::default();
        assert_eq!(s.tick(0, 100), None);
        assert_eq!(s.tick(101, 100), Some(Change::Opened { since: 0 }));
    }

    #[test]
    fn flat_line_needs_n_identical_values() {
        let mut f = FlatState::default();
        let changes: Vec<_> = [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.5)]
            .iter()
            .filter_map(|&(at, v)| f.observe(v, at, 3).map(|c| (at, c)))
            .collect();
        assert_eq!(changes, vec![(2, Change::Opened { since: 0 }), (4, Change::Closed { since: 0 })]);
    }
}
