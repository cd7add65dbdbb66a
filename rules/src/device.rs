//! Device checks: a box that went silent (no data), whose value is stuck (flat line) or whose
//! clock runs ahead (clock) or behind (lag). These are alarms about the equipment, routed to
//! installers rather than grid workers.
//!
//! Invariants: each check is either quiet or open; it reports `Opened` once when it opens and
//! `Closed` once when it closes.

use crate::last_value::LastValue;
use crate::time::Millis;

/// A device check's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened { since: Millis },
    Closed { since: Millis },
}

/// What became of a reading a clock check sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamped {
    /// Judged.
    Judged,
    /// Not judged: older than the sensor's last judged reading.
    OutOfOrder,
}

/// Clock state for one sensor (`clock_ahead`): open from a reading stamped further ahead of the
/// engine's clock than the rule allows, until a reading
/// stamped within it is judged again (the
/// readings stamped right after a clock that ran ahead are older than the last one judged and
/// refused as out of order: the sensor is still not judged, so the check stays open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockState {
    /// When the check opened (the engine's time then).
    open_since: Option<Millis>,
}

impl ClockState {
    /// One reading stamped `stamped` reached the engine when its clock read `now`.
    pub fn stamped(&mut self, stamped: Millis, now: Millis, allowed_ms: Millis, what: Stamped) -> Option<Change> {
        let ahead = stamped.saturating_sub(now) > allowed_ms;
        let refused = what != Stamped::Judged;
        match self.open_since {
            None if ahead => {
                self.open_since = Some(now);
                Some(Change::Opened { since: now })
            }
            Some(since) if !ahead && !refused => {
                self.open_since = None;
                Some(Change::Closed { since })
            }
            _ => None,
        }
    }
}

/// The fewest readings stamped behind that a `clock_behind` check needs before it opens,
/// however long its hold: one late reading, or two, is a link's hiccup, not a clock.
pub const BEHIND_MIN_READINGS: u32 = 3;

/// How much a reading's lag may fall short of the lag its run began with and still belong to
/// it: a reading that waited a little longer on its way (a link's retry, a tick's second) starts
/// no new run, while a backlog drained over hours, whose lag shrinks by minutes every few
/// minutes, never lasts a hold. (A drain so slow that its lag shrinks less than this within a
/// hold, a backlog sent at under 1.07 times the report rate for a 30-minute hold, is told as a
/// clock behind: it stays hours behind as long.)
pub const LAG_SHRINK_TOLERANCE_MS: Millis = 120_000;

/// Lag state for one sensor (`clock_behind`): how far behind the engine's clock its readings
/// are stamped. A device clock behind shows as a lag that stays about the same reading after
/// reading; a backlog sent after a link outage, in a burst or drained over hours, as a lag that
/// shrinks to the live one. The check opens once the judged readings have been stamped more than
/// the allowance behind for a hold (on the engine's clock, so a burst lasts no time at all) and
/// [`BEHIND_MIN_READINGS`] readings, none stamped [`LAG_SHRINK_TOLERANCE_MS`] less behind than
/// the run's first (a run whose lag shrank starts again from that reading); it closes at the
/// first reading judged within the allowance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LagState {
    /// The readings stamped behind since the last one on time, if any.
    run: Option<LagRun>,
    /// When the check opened: the start of the run that opened it.
    open_since: Option<Millis>,
}

/// A run of readings stamped more than the allowance behind, their lag not shrinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LagRun {
    /// The engine's time at its first reading.
    since: Millis,
    /// How far behind its first reading was stamped.
    lag_ms: Millis,
    readings: u32,
}

impl LagState {
    /// Whether the check is open: the device's clock is behind.
    pub fn open(&self) -> bool {
        self.open_since.is_some()
    }

    /// One reading stamped `stamped` was judged when the engine's clock read `now` (true time).
    pub fn judged(&mut self, stamped: Millis, now: Millis, allowed_ms: Millis, hold_ms: Millis) -> Option<Change> {
        let lag_ms = now.saturating_sub(stamped);
        if lag_ms <= allowed_ms {
            self.run = None;
            return self.open_since.take().map(|since| Change::Closed { since });
        }
        let run = match self.run {
            Some(run) if lag_ms >= run.lag_ms.saturating_sub(LAG_SHRINK_TOLERANCE_MS) => LagRun { readings: run.readings.saturating_add(1), ..run },
            // The first reading behind, or one whose lag shrank as a backlog's does.
            _ => LagRun { since: now, lag_ms, readings: 1 },
        };
        self.run = Some(run);
        if self.open_since.is_none() && run.readings >= BEHIND_MIN_READINGS && now.saturating_sub(run.since) >= hold_ms {
            self.open_since = Some(run.since);
            return Some(Change::Opened { since: run.since });
        }
        None
    }
}

/// No-data (deadman) state for one sensor. 16 bytes (one per sensor and no-data rule): "not
/// heard yet" is [`NOT_HEARD`] rather than an `Option`'s 8 more bytes. Saved as
/// `{"last_heard": ms | null, "open": bool}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedSilence", into = "SavedSilence")]
pub struct SilenceState {
    /// Last reading, or when watching began if none came yet; [`NOT_HEARD`] before either.
    last_heard: Millis,
    pub open: bool,
}

/// `last_heard` of a sensor not heard from and not watched yet (no reading, no tick).
const NOT_HEARD: Millis = Millis::MIN;

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSilence {
    last_heard: Option<Millis>,
    open: bool,
}

impl From<SavedSilence> for SilenceState {
    fn from(saved: SavedSilence) -> SilenceState {
        SilenceState { last_heard: saved.last_heard.filter(|&at| at != NOT_HEARD).unwrap_or(NOT_HEARD), open: saved.open }
    }
}

impl From<SilenceState> for SavedSilence {
    fn from(state: SilenceState) -> SavedSilence {
        SavedSilence { last_heard: state.last_heard(), open: state.open }
    }
}

impl Default for SilenceState {
    fn default() -> SilenceState {
        SilenceState { last_heard: NOT_HEARD, open: false }
    }
}

impl SilenceState {
    /// Last reading, or when watching began if none came yet.
    pub fn last_heard(&self) -> Option<Millis> {
        (self.last_heard != NOT_HEARD).then_some(self.last_heard)
    }

    /// A reading arrived.
    pub fn heard(&mut self, at: Millis) -> Option<Change> {
        let since = self.last_heard().unwrap_or(at);
        self.last_heard = self.last_heard().map_or(at, |last| last.max(at));
        if self.open {
            self.open = false;
            return Some(Change::Closed { since });
        }
        None
    }

    /// Time passed; opens when nothing was heard for longer than `timeout`, nor since watching
    /// began (`watched_from`, the daemon's start: a box that was down longer than the timeout
    /// told every sensor silent before its first reading had time to come — an outside tester's
    /// box told four sensors reporting every 20 s "no data for 5 minutes" after a stop). The
    /// silence is still counted from the last reading; an alarm already open stays open.
    pub fn tick(&mut self, now: Millis, timeout: Millis, watched_from: Option<Millis>) -> Option<Change> {
        if self.last_heard == NOT_HEARD {
            self.last_heard = now;
        }
        let last = self.last_heard;
        let watched = watched_from.is_none_or(|from| now.saturating_sub(from) > timeout);
        if !self.open && watched && now.saturating_sub(last) > timeout {
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
    /// When the run's latest reading came (absent from files saved before it was kept).
    #[serde(default)]
    pub run_last: Millis,
    pub open: bool,
    /// The longest run of one value this sensor had, at most
    /// [`LONGEST_RUN_KEPT`] (absent from files saved before it was kept).
    #[serde(default)]
    pub longest_ms: Millis,
    /// When the sensor's first value came (0: before it was kept, i.e. long known).
    #[serde(default)]
    pub first_at: Millis,
}

/// How much longer than its longest ordinary run a box must repeat itself to count as stuck,
/// for a flat line given as a duration: a box that rounds its readings (0.01°) sits on one value
/// for hours at the top of a wall's daily swing, one with a noisy last digit never does.
pub const STUCK_RUN_FACTOR: Millis = 4;
/// The longest ordinary run kept: a box that once sat still for days must still be told stuck
/// within [`STUCK_RUN_FACTOR`] times this.
pub const LONGEST_RUN_KEPT: Millis = 6 * 3_600_000;
/// The longest run kept when it had raised the alarm and then ended by itself: the box proved
/// it can sit still that long, so it is not told stuck again at every such run. A box rounding
/// to 0.01° on a quiet wall sits on one pair of angles for one to three days, and raised
/// "frozen?" dozens of times a year at 4 × 6 h (the alarm-quality corpus). Told stuck within
/// [`STUCK_RUN_FACTOR`] times this.
pub const LONGEST_FALSE_RUN_KEPT: Millis = 48 * 3_600_000;
/// How long past its latest reading a run counts as lasting when the next reading differs: a
/// value holds until the next report (up to an hour apart), not through a gap of hours — a box
/// silent for a day once waited 4 × 6 h ever after to be told stuck (an outside tester).
pub const RUN_HOLDS_PAST_ITS_LAST: Millis = 3_600_000;
/// How long a box must have been heard before a flat line given as a duration is judged: until
/// then nothing is known of how long it sits still. Quiet boxes rounding to 0.01° were told
/// "frozen?" within hours of their installation (the alarm-quality corpus); a box stuck from its
/// installation is told after this.
pub const FIRST_RUNS_LEARNED_FOR: Millis = 24 * 3_600_000;

impl FlatState {
    /// Opens once `samples` identical values in a row have lasted `lasting_ms` — and, when
    /// `lasting_ms` is set, [`STUCK_RUN_FACTOR`] times the longest run the sensor had before.
    pub fn observe(&mut self, value: f64, at: Millis, samples: u32, lasting_ms: Millis) -> Option<Change> {
        if self.last.get().is_none() && self.first_at == 0 {
            self.first_at = at;
        }
        let same = self.last.get() == Some(value);
        // The same value on both sides of a silence is two runs: a river probe whose pH read 7.13
        // before a three-day gap and after it learned a run of days, and when it froze for good
        // months later was told after 24 hours, not 4 (an outside tester). A box stuck through a
        // silence, its alarm open, is still stuck.
        let after_a_gap = !self.open && at - self.run_last.max(self.run_since) > RUN_HOLDS_PAST_ITS_LAST;
        if same && !after_a_gap {
            self.repeats = self.repeats.saturating_add(1);
            self.run_last = at;
        } else {
            let since = self.run_since;
            if self.repeats > 0 {
                // Runs that raised the alarm count too: a box that rounds its readings must not
                // be told stuck at every top of its daily swing.
                let ended = at.min(self.run_last.max(since).saturating_add(RUN_HOLDS_PAST_ITS_LAST));
                let kept = if self.open { LONGEST_FALSE_RUN_KEPT } else { LONGEST_RUN_KEPT };
                self.longest_ms = self.longest_ms.max((ended - since).clamp(0, kept));
            }
            self.last = LastValue::of(value);
            self.repeats = 1;
            self.run_since = at;
            self.run_last = at;
            if self.open {
                self.open = false;
                return Some(Change::Closed { since });
            }
        }
        let needed = if lasting_ms > 0 { lasting_ms.max(STUCK_RUN_FACTOR * self.longest_ms) } else { 0 };
        let learned = lasting_ms == 0 || at - self.first_at >= FIRST_RUNS_LEARNED_FOR;
        if !self.open && learned && self.repeats >= samples && at - self.run_since >= needed {
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
        assert_eq!(s.tick(5_000, 5_000, None), None);
        assert_eq!(s.tick(6_001, 5_000, None), Some(Change::Opened { since: 1_000 }));
        assert_eq!(s.tick(9_000, 5_000, None), None, "opens once");
        assert_eq!(s.heard(9_500), Some(Change::Closed { since: 1_000 }));
    }

    #[test]
    fn silence_is_saved_with_an_optional_last_reading() {
        let fresh = SilenceState::default();
        assert_eq!(serde_json::to_string(&fresh).unwrap(), r#"{"last_heard":null,"open":false}"#);
        let mut heard = fresh;
        heard.heard(1_000);
        let saved = serde_json::to_string(&heard).unwrap();
        assert_eq!(saved, r#"{"last_heard":1000,"open":false}"#);
        assert_eq!(serde_json::from_str::<SilenceState>(&saved).unwrap(), heard);
        assert_eq!(serde_json::from_str::<SilenceState>(r#"{"last_heard":null,"open":false}"#).unwrap(), fresh);
    }

    #[test]
    fn a_restart_watches_a_whole_timeout_before_a_silence_opens() {
        let mut s = SilenceState::default();
        s.heard(1_000);
        assert_eq!(s.tick(61_000, 5_000, Some(60_000)), None, "silent for a minute, but watched for a second only");
        assert_eq!(s.tick(62_000, 5_000, Some(60_000)), None);
        assert_eq!(s.heard(63_000), None, "its first reading came");
        let mut dead = SilenceState::default();
        dead.heard(1_000);
        assert_eq!(
            dead.tick(65_001, 5_000, Some(60_000)),
            Some(Change::Opened { since: 1_000 }),
            "told a timeout after the start, silent since its last reading"
        );
    }

    #[test]
    fn a_sensor_never_heard_opens_after_the_timeout_from_the_first_tick() {
        let mut s = SilenceState::default();
        assert_eq!(s.tick(0, 100, None), None);
        assert_eq!(s.tick(101, 100, None), Some(Change::Opened { since: 0 }));
    }

    /// A sensor heard for a day before the test's time 0.
    fn heard_for_a_day() -> FlatState {
        FlatState { first_at: -FIRST_RUNS_LEARNED_FOR, ..FlatState::default() }
    }

    #[test]
    fn a_box_is_not_told_stuck_before_its_first_day_is_learned() {
        const HOUR: Millis = 3_600_000;
        let start = 100 * HOUR;
        // A quiet box rounding to 0.01°: its first value holds 9 hours, then its readings move.
        let mut quiet = FlatState::default();
        let told: Vec<_> = (0..=54).filter_map(|step| quiet.observe(if step < 54 { 1.0 } else { 1.01 }, start + step * HOUR / 6, 3, 2 * HOUR)).collect();
        assert_eq!(told, vec![], "nothing is known of how long it sits still in its first hours");
        // A box stuck from its installation is told once it has been heard for a day.
        let mut stuck = FlatState::default();
        let told = (0..=200).find_map(|step| stuck.observe(1.0, start + step * HOUR / 6, 3, 2 * HOUR).map(|change| (step, change)));
        assert_eq!(told, Some((144, Change::Opened { since: start })), "told after 24 h of the same value");
    }

    #[test]
    fn a_run_that_raised_the_alarm_and_ended_by_itself_is_learned_beyond_the_usual_cap() {
        const HOUR: Millis = 3_600_000;
        let mut f = heard_for_a_day();
        // Every 10 minutes the same value for 30 hours: told at 2 hours, then it moves by itself.
        let told: Vec<_> = (0..=180).filter_map(|step| f.observe(if step < 180 { 1.0 } else { 1.01 }, step * HOUR / 6, 3, 2 * HOUR)).collect();
        assert_eq!(told, vec![Change::Opened { since: 0 }, Change::Closed { since: 0 }]);
        assert_eq!(f.longest_ms, 30 * HOUR, "a false alarm's run is kept up to {LONGEST_FALSE_RUN_KEPT} ms");
        // An ordinary run of 10 hours is kept only up to 6 hours.
        let mut g = heard_for_a_day();
        for step in 0..=60 {
            g.observe(if step < 60 { 1.0 } else { 1.01 }, step * HOUR / 6, 3, 12 * HOUR);
        }
        assert_eq!(g.longest_ms, LONGEST_RUN_KEPT);
    }

    #[test]
    fn a_box_that_rounds_its_readings_must_repeat_itself_much_longer_than_usual() {
        const HOUR: Millis = 3_600_000;
        let mut f = heard_for_a_day();
        // Every 10 minutes; the value sits for 3 hours, then changes: an ordinary run.
        for step in 0..=18 {
            assert_eq!(f.observe(1.0, step * HOUR / 6, 3, 2 * HOUR), if step == 12 { Some(Change::Opened { since: 0 }) } else { None });
        }
        assert_eq!(f.observe(1.01, 3 * HOUR + HOUR / 6, 3, 2 * HOUR), Some(Change::Closed { since: 0 }));
        let mut quantised = heard_for_a_day();
        for step in 0..18 {
            quantised.observe(1.0, step * HOUR / 6, 3, 2 * HOUR);
        }
        quantised.observe(1.01, 3 * HOUR, 3, 2 * HOUR);
        assert_eq!(quantised.longest_ms, 3 * HOUR, "a run that ended by itself is learned");
        let opened: Vec<_> = (1..=80).filter_map(|step| quantised.observe(1.01, 3 * HOUR + step * HOUR / 6, 3, 2 * HOUR)).collect();
        assert_eq!(opened, vec![Change::Opened { since: 3 * HOUR }], "stuck only after 4 × 3 h");
        assert_eq!(serde_json::from_str::<FlatState>(r#"{"last":null,"repeats":0,"run_since":0,"open":false}"#).unwrap(), FlatState::default());
    }

    #[test]
    fn a_gap_in_the_reports_is_no_run_of_one_value() {
        const HOUR: Millis = 3_600_000;
        // A box that reports every 10 minutes, each value its own, falls silent for 8 hours.
        let mut f = heard_for_a_day();
        for step in 0..6 {
            f.observe(1.0 + step as f64 * 0.01, step * HOUR / 6, 3, 2 * HOUR);
        }
        f.observe(2.0, 5 * HOUR / 6 + 8 * HOUR, 3, 2 * HOUR);
        assert_eq!(f.longest_ms, HOUR, "the value before the gap held an hour at most");
        // Stuck from then on: told after 4 hours (4 × that hour), not 24 (4 × the 6 h kept).
        let opened = (1..=48).find_map(|step| f.observe(2.0, 5 * HOUR / 6 + 8 * HOUR + step * HOUR / 6, 3, 2 * HOUR).map(|_| step));
        assert_eq!(opened, Some(24), "stuck after 24 readings of 10 minutes");
    }

    #[test]
    fn one_value_on_both_sides_of_a_gap_is_two_runs() {
        const HOUR: Millis = 3_600_000;
        // Every 5 minutes, each value its own; the last before a 3-day gap and the first after
        // it read alike.
        let mut f = heard_for_a_day();
        let mut at = 0;
        for step in 0..12 {
            at = step * HOUR / 12;
            f.observe(7.0 + step as f64 * 0.01, at, 3, 3 * HOUR);
        }
        at += 72 * HOUR;
        f.observe(7.11, at, 3, 3 * HOUR);
        f.observe(7.2, at + HOUR / 12, 3, 3 * HOUR);
        assert_eq!(f.longest_ms, HOUR, "the value before the gap held an hour at most: {}", f.longest_ms);
        // Stuck a day later: told after 4 hours (4 × that hour), not 24.
        let from = at + 24 * HOUR;
        let opened = (0..=24 * 12).find_map(|step| f.observe(7.3, from + step * HOUR / 12, 3, 3 * HOUR).map(|_| step));
        assert_eq!(opened, Some(48), "stuck after 48 readings of 5 minutes");
        // A box stuck through a silence stays told.
        let back = from + 60 * HOUR;
        assert_eq!(f.observe(7.3, back, 3, 3 * HOUR), None, "still on the value it was stuck on");
        assert!(f.open);
        assert_eq!(f.observe(7.31, back + HOUR / 12, 3, 3 * HOUR), Some(Change::Closed { since: from }));
    }

    #[test]
    fn flat_line_needs_n_identical_values() {
        let mut f = FlatState::default();
        let changes: Vec<_> =
            [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.5)].iter().filter_map(|&(at, v)| f.observe(v, at, 3, 0).map(|c| (at, c))).collect();
        assert_eq!(changes, vec![(2, Change::Opened { since: 0 }), (4, Change::Closed { since: 0 })]);
    }

    const MIN: Millis = 60_000;
    const HOUR: Millis = 60 * MIN;

    /// Readings `(arrival on the engine's clock, stamp)` through a `clock_behind = "1h"` check
    /// held 30 minutes; the changes with the arrival they came at.
    fn lags(readings: impl IntoIterator<Item = (Millis, Millis)>) -> Vec<(Millis, Change)> {
        let mut lag = LagState::default();
        readings.into_iter().filter_map(|(now, stamped)| lag.judged(stamped, now, HOUR, 30 * MIN).map(|change| (now, change))).collect()
    }

    #[test]
    fn a_steady_lag_of_five_hours_opens_after_the_hold_and_closes_on_time() {
        let t0 = 100 * HOUR;
        // Every 10 minutes, stamped 5 hours behind, with a few seconds of jitter on the way.
        let behind = (0..6).map(|n| (t0 + n * 10 * MIN + (n % 3) * 4_000, t0 + n * 10 * MIN - 5 * HOUR));
        assert_eq!(lags(behind.clone()), vec![(t0 + 30 * MIN, Change::Opened { since: t0 })], "several readings and half an hour");
        let set_right = behind.chain([(t0 + 60 * MIN, t0 + 60 * MIN - 1_000), (t0 + 70 * MIN, t0 + 70 * MIN - 5 * HOUR)]);
        assert_eq!(lags(set_right)[1..], [(t0 + 60 * MIN, Change::Closed { since: t0 })], "one reading on time closes it; a new run waits its hold again");
        let two_readings = [(t0, t0 - 5 * HOUR), (t0 + 40 * MIN, t0 + 40 * MIN - 5 * HOUR), (t0 + 41 * MIN, t0 + 41 * MIN - 5 * HOUR)];
        assert_eq!(lags(two_readings), vec![(t0 + 41 * MIN, Change::Opened { since: t0 })], "a hold long enough still needs three readings");
    }

    #[test]
    fn a_backlog_in_a_burst_or_drained_over_hours_opens_nothing() {
        let t0 = 100 * HOUR;
        // 26 hours kept every 10 minutes, sent oldest first within 20 seconds, then live.
        let burst = (0..=156).map(|n| (t0 + n * 128, t0 - 26 * HOUR + n * 10 * MIN));
        let live = (1..=12).map(|n| (t0 + n * 10 * MIN, t0 + n * 10 * MIN - 2_000));
        assert_eq!(lags(burst.chain(live)), vec![]);
        // The same 26 hours drained over 2 hours, one reading every 46 s, while the device
        // keeps taking readings (they join the end of its queue).
        let drained = (0..=171).map(|n| {
            let arrival = t0 + n * 46_000;
            (arrival, (t0 - 26 * HOUR + n * 10 * MIN).min(arrival - 2_000))
        });
        assert_eq!(lags(drained), vec![]);
        // A slow drain, at twice the report rate: its lag shrinks five minutes a reading.
        let slow = (0..=60).map(|n| (t0 + n * 5 * MIN, t0 - 5 * HOUR + n * 10 * MIN));
        assert_eq!(lags(slow), vec![]);
    }

    #[test]
    fn a_late_first_reading_restarts_the_run_but_a_lag_that_grows_does_not() {
        let t0 = 100 * HOUR;
        // The first reading waited five minutes on its way; the next ones came on time.
        let late_first = std::iter::once((t0, t0 - 5 * HOUR - 5 * MIN)).chain((1..=4).map(|n| (t0 + n * 10 * MIN, t0 + n * 10 * MIN - 5 * HOUR)));
        assert_eq!(lags(late_first), vec![(t0 + 40 * MIN, Change::Opened { since: t0 + 10 * MIN })]);
        // A clock that stopped: its lag grows with every reading.
        let stopped = (0..=3).map(|n| (t0 + n * 10 * MIN, t0 - 2 * HOUR));
        assert_eq!(lags(stopped), vec![(t0 + 30 * MIN, Change::Opened { since: t0 })]);
        assert_eq!(lags([(Millis::MAX, Millis::MIN), (Millis::MAX, Millis::MIN), (Millis::MIN, Millis::MAX)]), vec![], "no overflow");
    }

    #[test]
    fn a_clock_ahead_opens_once_and_closes_when_a_reading_is_judged_again_within_the_allowance() {
        let mut clock = ClockState::default();
        assert_eq!(clock.stamped(10 * MIN, 10 * MIN, 10 * MIN, Stamped::Judged), None, "on time");
        assert_eq!(clock.stamped(20 * MIN, 10 * MIN, 10 * MIN, Stamped::Judged), None, "10 minutes ahead is allowed");
        assert_eq!(clock.stamped(200 * MIN, 11 * MIN, 10 * MIN, Stamped::Judged), Some(Change::Opened { since: 11 * MIN }));
        assert_eq!(clock.stamped(201 * MIN, 12 * MIN, 10 * MIN, Stamped::Judged), None, "still ahead: one incident");
        assert_eq!(clock.stamped(13 * MIN, 13 * MIN, 10 * MIN, Stamped::OutOfOrder), None, "set right, but refused as out of order: not judged yet");
        assert_eq!(clock.stamped(202 * MIN, 202 * MIN, 10 * MIN, Stamped::Judged), Some(Change::Closed { since: 11 * MIN }));
        assert_eq!(clock.stamped(Millis::MAX, Millis::MIN, 10 * MIN, Stamped::OutOfOrder), Some(Change::Opened { since: Millis::MIN }), "no overflow");
    }
}
