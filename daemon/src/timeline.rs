//! The rules' timeline: the one time the rule engine is judged on, so that its durations (raise
//! holds, no-data) never mix the box's wall clock with the devices' clocks.
//!
//! The timeline is monotonic ([`Clock::elapsed_ms`]) from an origin chosen at start: the wall
//! clock, or just after the last reading the restored rule state judged if that is later (a box
//! that booted days behind does not put its sensors' past in its future; time while the daemon
//! was down counts only as far as the wall clock shows it). An NTP step moves the wall clock,
//! never the timeline: no burst of no-data after a step forward, no hour of silence after a step
//! back.
//!
//! Readings are placed on it: a reading this box stamped is placed at its arrival; a device's
//! own time keeps its spacing (holds are judged by the device's times) through a per-sensor
//! offset — none while the box's clock is synchronised, nor on a timeline that went on from the
//! saved state's time (the box restarted on a clock behind it) while the device's time lies
//! within a day behind the timeline and not more than [`AHEAD_TOLERANCE_MS`] ahead: the device's time is taken as it is, so
//! readings judged again after a crash land where they were first judged and the saved state's
//! times mean the same in the next run; else learned from its first reading — learned again when a reading would land more than [`AHEAD_TOLERANCE_MS`] ahead
//! of the timeline (the device's clock jumped forward, or its first readings were a backlog),
//! and lowered to place a reading at its arrival when its readings have landed ahead of the
//! timeline for [`AHEAD_TOLERANCE_MS`] without a break (learned from a buffered reading, the
//! offset placed every live one after it ahead by the buffer's age, and no-data came that much
//! late; a device that sends its readings in bursts lands its next burst's first one at its
//! arrival, so the spacing in a burst is kept). A device clock that went back is left to the out-of-order runs
//! ([`crate::sensor_clocks`]), which then call [`Timeline::reanchor`].
//!
//! What people read is labelled in wall-clock time ([`Timeline::label`]): from the wall clock
//! when it is synchronised, else in the device's own time, else not at all ("time unknown").
//!
//! Invariants: [`Timeline::now`] never goes back; a reading is never placed ahead of it by more
//! than [`AHEAD_TOLERANCE_MS`].

use crate::clock::Clock;
use gridwatch_rules::Millis;
use std::collections::HashMap;

/// How far ahead of the timeline a device's reading may land before its offset is learned again
/// (a device's clock gaining this much is treated as a step forward).
pub const AHEAD_TOLERANCE_MS: Millis = 60_000;

/// How far from a synchronised wall clock the timeline may be and still count as true time
/// ([`Timeline::true_time`]): a restart right after judging a reading stamped a few minutes ahead
/// (`[ingest] max_future_skew_secs`, 5 minutes by default) starts it that far ahead for good, and
/// that moves a lag judged against an hour by little.
const TRUE_TIME_WITHIN_MS: Millis = 600_000;

/// How far behind the timeline a device's time may lie and still be taken as it is by a box
/// whose clock is not set (a backlog, a box that restarted on its saved state's time).
const TAKEN_AS_IT_IS_BEHIND_MS: Millis = 86_400_000;

#[derive(Debug)]
pub struct Timeline {
    clock: Clock,
    /// Timeline time at elapsed time 0.
    origin: Millis,
    /// Per sensor (inventory position): what to add to the device's own time to place it.
    offsets: HashMap<usize, Millis>,
    /// Per sensor: where its latest reading was placed. A re-learned offset never places the
    /// next reading before it (the engine would refuse it as out of order).
    placed: HashMap<usize, Millis>,
    /// Sensors whose offset was learned from their readings' arrival (not 0 by trust).
    learned: std::collections::HashSet<usize>,
    /// Per sensor with a learned offset: since when (timeline time) its readings have landed
    /// ahead of the timeline without a break.
    ahead_since: HashMap<usize, Millis>,
    /// The timeline went on from the saved state's time, the devices' (the box's clock was
    /// behind it), not from the box's clock.
    on_devices_time: bool,
}

impl Timeline {
    /// Starts the timeline at the wall clock, or just after `judged_until` (the latest reading
    /// the restored rule state judged) when that is later.
    pub fn start(clock: Clock, judged_until: Option<Millis>) -> Timeline {
        let on_devices_time = judged_until.is_some_and(|judged| judged.saturating_add(1) > clock.now());
        let start = judged_until.map_or(clock.now(), |judged| clock.now().max(judged.saturating_add(1)));
        Timeline {
            clock,
            origin: start - clock.elapsed_ms(),
            offsets: HashMap::new(),
            placed: HashMap::new(),
            learned: Default::default(),
            ahead_since: HashMap::new(),
            on_devices_time,
        }
    }

    /// The readings judged again at start (the crash log) reached `judged`, the latest: the
    /// timeline goes on after it when that lies ahead, as [`Timeline::start`] does with the saved
    /// state's time. (Left behind, the readings arriving next would be placed before the ones
    /// just judged again, and refused as out of order.)
    pub fn go_on_after(&mut self, judged: Option<Millis>) {
        let Some(judged) = judged else { return };
        let behind = judged.saturating_add(1) - self.now();
        if behind > 0 {
            self.origin += behind;
            self.on_devices_time = true;
        }
    }

    pub fn now(&self) -> Millis {
        self.origin + self.clock.elapsed_ms()
    }

    /// Where a reading of `sensor` stamped `ts` (by the device when `own_time`, else by this box
    /// on receipt) goes on the timeline.
    pub fn place(&mut self, sensor: usize, ts: Millis, own_time: bool) -> Millis {
        let now = self.now();
        if !own_time {
            return now;
        }
        // A synchronised box believes the device's time as it is (its backlogs and re-judged
        // readings land where they were judged before), and so does an unset one whose timeline
        // went on from the saved state's time, when the device's time fits it; otherwise it is
        // placed at its arrival. (An offset learned from a backlog would place every later
        // reading ahead by the backlog's age, and the saved state's times would not mean the
        // device's in the next run: readings judged again would be skipped.)
        let synchronized = self.clock.synchronized();
        let fits = self.on_devices_time && ts <= now.saturating_add(AHEAD_TOLERANCE_MS) && ts >= now - TAKEN_AS_IT_IS_BEHIND_MS;
        let offset = self.offsets.entry(sensor).or_insert_with(|| {
            if synchronized || fits {
                0
            } else {
                self.learned.insert(sensor);
                now - ts
            }
        });
        let landing = ts.saturating_add(*offset);
        let ahead_too_long = self.learned.contains(&sensor) && landing > now && now - *self.ahead_since.entry(sensor).or_insert(now) >= AHEAD_TOLERANCE_MS;
        if landing > now.saturating_add(AHEAD_TOLERANCE_MS) || ahead_too_long {
            // Placed now — or just after this sensor's previous reading, if that lies ahead.
            let floor = self.placed.get(&sensor).map_or(now, |&last| now.max(last.saturating_add(1)));
            *offset = floor - ts;
        }
        let at = ts.saturating_add(*offset);
        if at <= now {
            self.ahead_since.remove(&sensor);
        }
        self.placed.insert(sensor, at);
        at
    }

    /// Whether the timeline is true time: the wall clock is synchronised and the timeline is
    /// within [`TRUE_TIME_WITHIN_MS`] of it. Not on a timeline that went on from the saved
    /// state's time, nor on one begun before NTP stepped the clock (it never follows a step):
    /// there a device's time placed as it is lies behind or ahead by the box's own error, so the
    /// rules judge no lag against it (`Engine::judge_lags`).
    pub fn true_time(&self) -> bool {
        self.clock.synchronized() && (self.now() - self.clock.now()).abs() <= TRUE_TIME_WITHIN_MS
    }

    /// Whether `sensor`'s own times are believed as they are (not placed by an offset this box
    /// learned from their arrival).
    pub fn believes(&self, sensor: usize) -> bool {
        !self.learned.contains(&sensor)
    }

    /// The sensor's clock went back: its reading stamped `ts` is placed now from here on.
    pub fn reanchor(&mut self, sensor: usize, ts: Millis) {
        let now = self.now();
        self.offsets.insert(sensor, now - ts);
        self.learned.insert(sensor);
    }

    /// The elapsed time ([`Clock::elapsed_ms`]) at timeline time `at`.
    pub fn elapsed_at(&self, at: Millis) -> Millis {
        at - self.origin
    }

    /// The wall-clock time a person reads for timeline time `at` of `sensor`: from the wall
    /// clock when it is synchronised, else in the sensor's own time if it sends one; `None`:
    /// unknown.
    pub fn label(&self, sensor: usize, at: Millis) -> Option<Millis> {
        if self.clock.synchronized() {
            return Some(self.clock.now() - (self.now() - at));
        }
        self.offsets.get(&sensor).map(|offset| at - offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;
    /// 2026-11-23T00:00:00Z.
    const TRUE_NOW: Millis = 1_795_392_000_000;

    fn box_clock(start: Millis, synchronized: bool) -> Clock {
        Clock::starting_at(start, synchronized)
    }

    #[test]
    fn a_device_reading_keeps_its_spacing_on_a_box_three_days_behind() {
        let mut timeline = Timeline::start(box_clock(TRUE_NOW - 3 * DAY, false), None);
        let first = timeline.place(0, TRUE_NOW, true);
        assert!((first - timeline.now()).abs() < 1_000, "placed at its arrival, not three days ahead");
        assert_eq!(timeline.place(0, TRUE_NOW + 30_000, true), first + 30_000, "thirty seconds later on the device is thirty seconds later here");
        assert_eq!(timeline.label(0, first + 30_000), Some(TRUE_NOW + 30_000), "labelled in the device's own time");
        assert_eq!(timeline.label(1, first), None, "a sensor without its own time: unknown until the clock is set");
    }

    #[test]
    fn readings_a_minute_apart_stamped_ahead_stay_in_their_order() {
        let mut timeline = Timeline::start(box_clock(TRUE_NOW, true), None);
        let placed: Vec<Millis> = [0, 31_000, 62_000, 93_000].iter().map(|ahead| timeline.place(0, TRUE_NOW + ahead, true)).collect();
        assert!(placed.windows(2).all(|pair| pair[1] > pair[0]), "never placed before the reading before it: {placed:?}");
    }

    #[test]
    fn a_device_clock_jumping_forward_is_placed_now_not_ahead() {
        let mut timeline = Timeline::start(box_clock(TRUE_NOW, true), None);
        let first = timeline.place(0, TRUE_NOW, true);
        let jumped = timeline.place(0, TRUE_NOW + 2 * DAY, true);
        assert!(jumped - first < AHEAD_TOLERANCE_MS, "never two days ahead of the timeline");
    }

    #[test]
    fn live_readings_after_a_buffered_one_are_placed_at_their_arrival_within_a_minute() {
        // A box whose clock is not set (a thousand times faster here) hears a sensor's reading
        // buffered 50 s ago first, then its live ones every 10 s: they land ahead by the
        // buffer's age — as the second of a burst would — until they have done so for a
        // minute; from then on each lands at its arrival, 10 s apart. (Before, they stayed 50 s
        // ahead for good, and that sensor's no-data came 50 s late.)
        let clock = Clock::Accelerated { start: TRUE_NOW - 3 * DAY, started: tokio::time::Instant::now(), speed: 1_000.0, synchronized: false };
        let mut timeline = Timeline::start(clock, None);
        timeline.place(0, TRUE_NOW - 50_000, true);
        let mut placed = Vec::new();
        for tick in 0..12 {
            if tick > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let at = timeline.place(0, TRUE_NOW + tick * 10_000, true);
            placed.push((at - timeline.now(), at));
        }
        assert!(placed[0].0 > 20_000, "the first live reading lands ahead, as in a burst: {placed:?}");
        let (ahead_at_the_end, last) = placed[11];
        assert!(ahead_at_the_end <= 0, "a live reading {ahead_at_the_end} ms ahead after two minutes: {placed:?}");
        assert_eq!(timeline.label(0, last), Some(TRUE_NOW + 110_000), "labelled in the device's own time");
        // A synchronised box keeps believing a device a few seconds ahead, as it is.
        let mut synchronised = Timeline::start(box_clock(TRUE_NOW, true), None);
        assert_eq!(synchronised.place(0, TRUE_NOW + 5_000, true), TRUE_NOW + 5_000);
    }

    #[test]
    fn the_timeline_does_not_start_behind_what_the_saved_state_judged() {
        let timeline = Timeline::start(box_clock(TRUE_NOW - 3 * DAY, false), Some(TRUE_NOW));
        assert!(timeline.now() > TRUE_NOW, "a box that booted days behind continues after its last judged reading");
        let timeline = Timeline::start(box_clock(TRUE_NOW, true), Some(TRUE_NOW - DAY));
        assert!(timeline.now() >= TRUE_NOW, "downtime the wall clock shows counts");
    }

    #[test]
    fn a_synchronised_box_takes_a_devices_time_as_it_is() {
        let mut timeline = Timeline::start(box_clock(TRUE_NOW, true), None);
        assert_eq!(timeline.place(0, TRUE_NOW - 3_600_000, true), TRUE_NOW - 3_600_000, "an hour-old reading is an hour old");
    }

    #[test]
    fn an_unset_box_going_on_from_its_saved_state_takes_a_devices_time_as_it_is() {
        // Restarted at 1970, the timeline goes on just after the last reading the saved state
        // judged; the first reading to arrive is a backlog of 19 s.
        let judged = TRUE_NOW - 3_600_000;
        let mut timeline = Timeline::start(box_clock(86_400_000, false), Some(judged));
        assert_eq!(timeline.place(0, judged - 19_000, true), judged - 19_000, "the backlog is placed at its own time");
        assert_eq!(timeline.place(0, judged + 400, true), judged + 400, "and so is every later reading: no offset learned from a backlog");
        assert_eq!(timeline.label(0, judged + 400), Some(judged + 400));
    }

    #[test]
    fn the_timeline_goes_on_after_the_readings_judged_again() {
        let judged = TRUE_NOW - 3_600_000;
        let mut timeline = Timeline::start(box_clock(TRUE_NOW - 3 * DAY, false), Some(judged));
        // The crash log held 19 s more than the saved state had judged.
        timeline.go_on_after(Some(judged + 19_000));
        assert!(timeline.now() > judged + 19_000);
        assert_eq!(timeline.place(0, judged + 19_400, true), judged + 19_400, "the next reading is placed at its own time, after them");
        let before = timeline.now();
        timeline.go_on_after(Some(judged));
        assert!(timeline.now() >= before, "never back");
    }

    #[test]
    fn only_a_timeline_on_a_synchronised_wall_clock_is_true_time() {
        assert!(Timeline::start(box_clock(TRUE_NOW, true), None).true_time());
        assert!(Timeline::start(box_clock(TRUE_NOW, true), Some(TRUE_NOW + 300_000)).true_time(), "minutes ahead after a restart");
        assert!(!Timeline::start(box_clock(TRUE_NOW - 5 * 3_600_000, false), None).true_time(), "booted on its last shutdown time");
        assert!(!Timeline::start(box_clock(TRUE_NOW, true), Some(TRUE_NOW + DAY)).true_time(), "gone on from a saved state a day ahead");
    }

    #[test]
    fn readings_this_box_stamps_are_placed_at_their_arrival() {
        let mut timeline = Timeline::start(box_clock(86_400_000, false), None);
        let placed = timeline.place(0, 86_400_000 + 2 * DAY, false);
        assert!((placed - timeline.now()).abs() < 1_000);
        assert_eq!(timeline.label(0, placed), None, "stamped by an unset clock: time unknown");
    }
}
