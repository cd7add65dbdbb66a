//! Sensors whose clocks are off, so that one bad time never switches a sensor's rules off.
//!
//! Four things can be wrong with a device's `ts` (readings stamped by this box cannot be):
//!
//! - **ahead**: further ahead of this box's clock than `[ingest] max_future_skew_secs`. The MQTT
//!   source refuses such a time (`payloads_rejected{reason="ahead_of_clock"}`) and the reading is
//!   judged, stored and shown at its arrival: taken as it is, the time would become the one
//!   every later reading is "older" than; refused with its reading, a box whose clock runs a few
//!   minutes fast is never judged.
//! - **never set**: before 2000 (seconds since the device booted, or a date in 1970). Refused
//!   and judged at its arrival alike (`payloads_rejected{reason="clock_not_set"}`).
//! - **stepped back**: the engine refuses a reading older than the sensor's last judged one
//!   (`samples_out_of_order`). A short run of those is a redelivery; a sensor that keeps sending
//!   older readings for `reanchor_after_readings` readings *and* `reanchor_after_secs` had its
//!   clock reset or corrected. [`OutOfOrder`] holds the run's readings and says when; the
//!   pipeline then re-anchors it (`sensor_clock_reanchors`; `Engine::rewind` only when the run
//!   cannot land after its last judged reading) and judges the run, oldest first. A run whose
//!   readings catch up with the last judged one before that (a clock back less than the wait)
//!   is judged then, if its readings came one by one as a device sends them.
//! - **behind**: judged readings keep coming stamped further behind this box's clock than
//!   `[ingest] clock_behind_secs`, for `clock_behind_for_secs` without the lag shrinking — the
//!   rules' `clock_behind` criterion ([`LagState`]), with the shipped rule's settings by default. A backlog sent after a link outage is stamped hours behind too,
//!   but its lag shrinks to the live one. [`Lags`] judges it, only while this box's clock is
//!   synchronised (against an unset one every device seems off); its readings are judged as they
//!   are until then, and placed at their arrival from then on (`Timeline::reanchor`), so that
//!   an alarm says when it began by this box's clock.
//!
//! [`SensorClocks`] remembers which sensors did any of these in the last [`WARN_FOR`], for
//! `/healthz` and for one WARN per sensor and episode. Times here are monotonic
//! (`tokio::time::Instant`): the wall clock is what may be wrong.
//!
//! Invariants: a sensor is listed at most once (with its latest problem); an entry older than
//! [`WARN_FOR`] is not reported and is dropped at the next look.

use gridwatch_rules::device::LagState;
use gridwatch_rules::Millis;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a sensor stays listed after its clock was last seen off.
pub const WARN_FOR: Duration = Duration::from_secs(3600);

/// Sensors named in `/healthz` (the rest are counted).
pub const NAMED_IN_HEALTH: usize = 5;

/// What was wrong with a sensor's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockProblem {
    /// Readings stamped further ahead than the allowed skew (judged at their arrival).
    Ahead,
    /// Readings stamped before 2000: a clock never set (judged at their arrival).
    NotSet,
    /// Readings kept coming older than the last judged one: re-anchored.
    SteppedBack,
    /// Readings kept coming stamped hours behind, the lag not shrinking as a backlog's does.
    Behind,
}

#[derive(Debug)]
struct Noted {
    id: Arc<str>,
    problem: ClockProblem,
    at: Instant,
}

/// Shared by the MQTT source, the pipeline and `/healthz`.
#[derive(Debug, Default)]
pub struct SensorClocks {
    /// By inventory position.
    noted: Mutex<BTreeMap<usize, Noted>>,
}

impl SensorClocks {
    /// Notes a problem with a sensor's clock; `true` when it is news (not listed with this
    /// problem in the last [`WARN_FOR`]), i.e. when the caller should log a WARN.
    pub fn note(&self, sensor: usize, id: &Arc<str>, problem: ClockProblem, now: Instant) -> bool {
        let mut noted = self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = |n: &Noted| n.problem == problem && now.saturating_duration_since(n.at) < WARN_FOR;
        let news = !noted.get(&sensor).is_some_and(fresh);
        noted.insert(sensor, Noted { id: id.clone(), problem, at: now });
        news
    }

    /// The sensors whose clocks were off in the last [`WARN_FOR`], in inventory order.
    pub fn current(&self, now: Instant) -> Vec<(Arc<str>, ClockProblem)> {
        let mut noted = self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        noted.retain(|_, n| now.saturating_duration_since(n.at) < WARN_FOR);
        noted.values().map(|n| (n.id.clone(), n.problem)).collect()
    }

    /// The `/healthz` reason, if any sensor's clock is off: names up to [`NAMED_IN_HEALTH`].
    pub fn health_reason(&self, now: Instant) -> Option<String> {
        let current = self.current(now);
        if current.is_empty() {
            return None;
        }
        let named: Vec<String> = current
            .iter()
            .take(NAMED_IN_HEALTH)
            .map(|(id, problem)| match problem {
                ClockProblem::Ahead => format!("{id} (ahead: judged at arrival)"),
                ClockProblem::NotSet => format!("{id} (never set: judged at arrival)"),
                ClockProblem::SteppedBack => format!("{id} (stepped back: re-anchored)"),
                ClockProblem::Behind => format!("{id} (behind: readings stamped hours late, not a backlog)"),
            })
            .collect();
        let more = current.len().saturating_sub(NAMED_IN_HEALTH);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let ahead = current.iter().filter(|(_, p)| *p == ClockProblem::Ahead).count();
        // Many devices ahead at once is more likely this box's clock being behind (issue 20).
        let hint = if ahead >= 2 && ahead == current.len() { "; if all devices are ahead, check this box's clock" } else { "" };
        Some(format!("{} sensor clock(s) off in the last hour: {}{more}{hint}", current.len(), named.join(", ")))
    }
}

/// Sensors whose clocks are behind this box's (pipeline-owned): each one's [`LagState`], kept
/// only while its readings come stamped behind.
#[derive(Debug)]
pub struct Lags {
    states: HashMap<usize, LagState>,
    /// How far behind a reading may be stamped (`[ingest] clock_behind_secs`)…
    allowed_ms: Millis,
    /// …and how long more than that without catching up makes a clock behind.
    hold_ms: Millis,
    /// Whether this box's clock is synchronised (the pipeline says so every tick): lags are
    /// judged only then.
    clock_set: bool,
}

impl Lags {
    pub fn new(allowed: Duration, hold: Duration) -> Lags {
        let ms = |d: Duration| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX);
        Lags { states: HashMap::new(), allowed_ms: ms(allowed), hold_ms: ms(hold), clock_set: false }
    }

    /// Whether this box's clock is synchronised. While it is not, readings are not judged.
    pub fn clock_set(&mut self, synchronized: bool) {
        self.clock_set = synchronized;
    }

    /// A judged reading of `sensor`, stamped `stamped` by the device's own clock, came when this
    /// box's clock read `now`: how far behind it was stamped (ms) when the sensor's clock is
    /// behind, else `None`.
    pub fn judged(&mut self, sensor: usize, stamped: Millis, now: Millis) -> Option<Millis> {
        if !self.clock_set {
            return None;
        }
        let lag_ms = now.saturating_sub(stamped);
        let on_time = lag_ms <= self.allowed_ms;
        if on_time {
            // Its run ends and any episode closes: nothing left to keep.
            self.states.remove(&sensor);
            return None;
        }
        let state = self.states.entry(sensor).or_default();
        state.judged(stamped, now, self.allowed_ms, self.hold_ms);
        state.open().then_some(lag_ms)
    }
}

/// When a sensor's run of out-of-order readings means its clock went back (pipeline-owned), and
/// the run's readings, held to be judged once it is re-anchored: a house that moved while its
/// box's clock had just gone back is judged on them, not blind until the run is long enough.
#[derive(Debug)]
pub struct OutOfOrder<T = ()> {
    /// Sensors in a run: readings refused so far, when the run began, and the newest
    /// [`MOST_HELD`] of its readings. Only sensors in a run are here.
    runs: HashMap<usize, Run<T>>,
    after_readings: u32,
    after: Duration,
    /// Readings held in all runs.
    held: usize,
}

/// A run: readings refused so far, when it began, and its held readings with their arrival.
type Run<T> = (u32, Instant, VecDeque<(Instant, T)>);

/// The most readings of one run held for judging (10 minutes of readings every second).
pub const MOST_HELD: usize = 600;
/// A run that ends because the sensor's readings caught up with its last judged one (its clock
/// went back less than `reanchor_after_secs`) is judged when its readings came one by one, as a
/// device reports, at least this far apart on average — not a broker's burst of redelivered
/// copies, which come milliseconds apart.
pub const CAUGHT_UP_SPACING: Duration = Duration::from_secs(1);

/// The most readings held in all runs together (a gateway whose clock went back takes all its
/// sensors into runs at once): about 10 MB.
pub const MOST_HELD_IN_ALL: usize = 100_000;

impl<T> OutOfOrder<T> {
    pub fn new(after_readings: u32, after: Duration) -> OutOfOrder<T> {
        OutOfOrder { runs: HashMap::new(), after_readings: after_readings.max(1), after, held: 0 }
    }

    /// A sensor's reading was judged: its run (if any) is over.
    pub fn in_order(&mut self, sensor: usize) {
        if !self.runs.is_empty() {
            if let Some((_, _, held)) = self.runs.remove(&sensor) {
                self.held -= held.len();
            }
        }
    }

    /// A sensor's `reading` was older than its last judged one. `Some`: the run is long enough
    /// in readings and in time, re-anchor the sensor now and judge the run's readings with when
    /// each came, oldest first, this one last — only this one when they came as a burst of
    /// copies rather than one by one (the run is over).
    pub fn refused(&mut self, sensor: usize, now: Instant, reading: T) -> Option<Vec<(Instant, T)>> {
        let (count, since, held) = self.runs.entry(sensor).or_insert_with(|| (0, now, VecDeque::new()));
        *count = count.saturating_add(1);
        // Full: the run's oldest reading makes way (none is held when this run holds nothing).
        if held.len() == MOST_HELD || (self.held >= MOST_HELD_IN_ALL && !held.is_empty()) {
            held.pop_front();
            self.held -= 1;
        }
        if self.held < MOST_HELD_IN_ALL {
            held.push_back((now, reading));
            self.held += 1;
        }
        let due = *count >= self.after_readings && now.saturating_duration_since(*since) >= self.after;
        if !due {
            return None;
        }
        let (_, _, mut held) = self.runs.remove(&sensor)?;
        self.held -= held.len();
        if !one_by_one(&held, now) {
            // Copies redelivered at once would be judged as new readings at their arrival.
            held.drain(..held.len().saturating_sub(1));
        }
        Some(held.into())
    }

    /// Whether `sensor` is in a run.
    pub fn in_run(&self, sensor: usize) -> bool {
        !self.runs.is_empty() && self.runs.contains_key(&sensor)
    }

    /// A reading of `sensor` came in order again at `now`, before its run was long enough: its
    /// clock went back and has caught up, or was set right again. The run's readings with when
    /// each came, oldest first, when they came as a device reports them ([`one_by_one`]);
    /// `None` for a burst of redelivered copies. The run is over either way.
    pub fn caught_up(&mut self, sensor: usize, now: Instant) -> Option<Vec<(Instant, T)>> {
        let (_, _, held) = self.runs.remove(&sensor)?;
        self.held -= held.len();
        one_by_one(&held, now).then(|| held.into())
    }
}

/// Whether `held` came one by one as a device reports (two or more, [`CAUGHT_UP_SPACING`] apart
/// on average, the last of them as far before `now`), not as a burst of copies.
fn one_by_one<T>(held: &VecDeque<(Instant, T)>, now: Instant) -> bool {
    let (Some((first, _)), Some((last, _))) = (held.front(), held.back()) else { return false };
    let spaced = |from: Instant, to: Instant, gaps: u32| to.saturating_duration_since(from) >= CAUGHT_UP_SPACING * gaps;
    held.len() >= 2 && spaced(*first, *last, held.len() as u32 - 1) && (spaced(*last, now, 1) || *last == now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Arc<str> {
        text.into()
    }

    #[test]
    fn a_sensor_is_news_once_per_problem_and_hour() {
        let clocks = SensorClocks::default();
        let t0 = Instant::now();
        assert!(clocks.note(3, &id("pond-3"), ClockProblem::Ahead, t0));
        assert!(!clocks.note(3, &id("pond-3"), ClockProblem::Ahead, t0 + Duration::from_secs(60)), "warned already");
        assert!(clocks.note(3, &id("pond-3"), ClockProblem::SteppedBack, t0 + Duration::from_secs(120)), "a new problem is news");
        assert!(clocks.note(3, &id("pond-3"), ClockProblem::SteppedBack, t0 + Duration::from_secs(120) + WARN_FOR), "news again after an hour");
    }

    #[test]
    fn health_names_the_sensors_and_forgets_them_after_an_hour() {
        let clocks = SensorClocks::default();
        let t0 = Instant::now();
        assert_eq!(clocks.health_reason(t0), None);
        clocks.note(7, &id("house-07"), ClockProblem::Ahead, t0);
        clocks.note(2, &id("pond-2"), ClockProblem::SteppedBack, t0);
        assert_eq!(
            clocks.health_reason(t0 + Duration::from_secs(10)).as_deref(),
            Some("2 sensor clock(s) off in the last hour: pond-2 (stepped back: re-anchored), house-07 (ahead: judged at arrival)")
        );
        assert_eq!(clocks.health_reason(t0 + WARN_FOR), None);
        assert!(clocks.current(t0).is_empty(), "dropped, not just hidden");
    }

    #[test]
    fn health_caps_the_list_and_hints_at_this_box_when_all_are_ahead() {
        let clocks = SensorClocks::default();
        let t0 = Instant::now();
        for n in 0..8 {
            clocks.note(n, &id(&format!("house-{n}")), ClockProblem::Ahead, t0);
        }
        let reason = clocks.health_reason(t0).unwrap();
        assert!(reason.starts_with("8 sensor clock(s) off in the last hour: house-0 (ahead"), "{reason}");
        assert!(reason.contains("house-4 (ahead: judged at arrival) and 3 more"), "{reason}");
        assert!(!reason.contains("house-5"), "{reason}");
        assert!(reason.ends_with("check this box's clock"), "{reason}");
    }

    #[test]
    fn a_clock_behind_is_told_after_the_hold_a_backlog_never_and_neither_on_an_unset_clock() {
        const MIN: Millis = 60_000;
        let t0: Millis = 1_795_392_000_000;
        let mut lags = Lags::new(Duration::from_secs(3600), Duration::from_secs(1800));
        lags.clock_set(true);
        // Every 10 minutes, stamped 5 hours behind: told from the hold's end on.
        let told: Vec<Option<Millis>> = (0..=4).map(|n| lags.judged(1, t0 + n * 10 * MIN - 300 * MIN, t0 + n * 10 * MIN)).collect();
        assert_eq!(told, [None, None, None, Some(300 * MIN), Some(300 * MIN)]);
        assert_eq!(lags.judged(1, t0 + 50 * MIN, t0 + 50 * MIN), None, "set right");
        assert!(lags.states.is_empty(), "nothing kept of a sensor on time");
        // 26 hours kept, sent within seconds: never behind.
        assert!((0..=156).all(|n| lags.judged(2, t0 - 26 * 60 * MIN + n * 10 * MIN, t0 + n * 100).is_none()));
        // A box whose clock is not set judges nothing.
        let mut unset = Lags::new(Duration::from_secs(3600), Duration::from_secs(1800));
        assert!((0..=12).all(|n| unset.judged(1, t0 + n * 10 * MIN - 300 * MIN, t0 + n * 10 * MIN).is_none()));
        assert!(unset.states.is_empty());
    }

    #[test]
    fn a_redelivered_burst_is_not_a_clock_step() {
        let mut runs = OutOfOrder::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        for _ in 0..50 {
            assert!(runs.refused(1, t0, ()).is_none(), "many old readings at once: a redelivery");
        }
        runs.in_order(1);
        assert!(runs.refused(1, t0 + Duration::from_secs(700), ()).is_none(), "a new run begins");
    }

    #[test]
    fn a_long_run_of_older_readings_re_anchors_once_with_its_readings_in_order() {
        let mut runs = OutOfOrder::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        let minutes = |m: u64| t0 + Duration::from_secs(60 * m);
        assert!(runs.refused(1, minutes(0), "a").is_none());
        assert!(runs.refused(1, minutes(5), "b").is_none());
        assert!(runs.refused(1, minutes(9), "c").is_none(), "three readings, but not yet ten minutes");
        assert!(runs.refused(2, minutes(9), "other").is_none(), "each sensor has its own run");
        let run = runs.refused(1, minutes(10), "d").map(|run| run.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
        assert_eq!(run, Some(vec!["a", "b", "c", "d"]), "three readings over ten minutes: the clock went back");
        assert!(runs.refused(1, minutes(11), "e").is_none(), "the run starts over after a re-anchor");
    }

    #[test]
    fn a_run_that_caught_up_is_judged_when_its_readings_came_one_by_one_not_in_a_burst() {
        let mut runs = OutOfOrder::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        let seconds = |s: u64| t0 + Duration::from_secs(s);
        for s in [0, 5, 10] {
            assert!(runs.refused(1, seconds(s), s).is_none());
        }
        assert!(runs.in_run(1));
        let run = runs.caught_up(1, seconds(15)).map(|run| run.into_iter().map(|(at, r)| (at.duration_since(t0).as_secs(), r)).collect::<Vec<_>>());
        assert_eq!(run, Some(vec![(0, 0), (5, 5), (10, 10)]), "a clock 15 s back, a reading every 5 s, with when each came");
        assert!(!runs.in_run(1) && runs.held == 0);
        for _ in 0..50 {
            assert!(runs.refused(2, t0, 0).is_none());
        }
        assert_eq!(runs.caught_up(2, t0 + Duration::from_millis(30)), None, "a redelivered burst is dropped");
        assert_eq!(runs.held, 0);
        assert!(runs.refused(3, t0, 0).is_none());
        assert_eq!(runs.caught_up(3, seconds(5)), None, "one reading alone is not a run worth judging again");
    }

    #[test]
    fn runs_together_hold_no_more_than_their_bound() {
        let mut runs = OutOfOrder::new(u32::MAX, Duration::ZERO);
        let t0 = Instant::now();
        for sensor in 0..(MOST_HELD_IN_ALL / MOST_HELD + 10) {
            for n in 0..MOST_HELD {
                assert!(runs.refused(sensor, t0, n).is_none());
            }
        }
        assert_eq!(runs.held, MOST_HELD_IN_ALL);
        runs.in_order(0);
        assert_eq!(runs.held, MOST_HELD_IN_ALL - MOST_HELD, "an ended run gives its room back");
    }

    #[test]
    fn a_run_holds_only_its_newest_readings() {
        let mut runs = OutOfOrder::new(MOST_HELD as u32 + 10, Duration::ZERO);
        let t0 = Instant::now();
        let judged = (0..MOST_HELD + 10).find_map(|n| runs.refused(1, t0 + Duration::from_secs(n as u64), n)).unwrap();
        assert_eq!(judged.len(), MOST_HELD);
        assert_eq!(judged.first().map(|(_, n)| *n), Some(10));
        assert_eq!(judged.last().map(|(_, n)| *n), Some(MOST_HELD + 9));
    }

    #[test]
    fn a_run_that_came_as_a_burst_of_copies_is_not_judged_only_its_last_reading() {
        // An outside re-tester's 40 old copies within a second, at `reanchor_after_secs = 0`:
        // judged at their arrival, they raised a false red.
        let mut runs = OutOfOrder::new(3, Duration::ZERO);
        let t0 = Instant::now();
        let millis = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(runs.refused(1, millis(0), "a").is_none());
        assert!(runs.refused(1, millis(20), "b").is_none());
        let run = runs.refused(1, millis(40), "c").unwrap();
        assert_eq!(run.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), vec!["c"]);
    }
}
