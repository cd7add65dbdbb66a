//! The daemon's two times, behind a seam so the demo can run hours of simulated time in seconds.
//!
//! - **Elapsed time** ([`Clock::elapsed_ms`]) is monotonic: it never steps. Every duration — rule
//!   holds and no-data (the pipeline's judging timeline), reminders and escalations (their ages)
//!   — is measured on it, so an NTP step of the wall clock neither fires a burst nor stops a
//!   ladder.
//! - **The wall clock** ([`Clock::now`]) only labels what a person reads and what is stored. A
//!   Raspberry Pi has no real-time clock: it boots at 1970 or its last shutdown time until NTP
//!   steps it, so a label is only believed once the clock is [`Clock::synchronized`] — read from
//!   the kernel (`adjtimex`) or from systemd-timesyncd's flag file, never guessed from the year;
//!   a flag that comes up while the daemon runs is believed once the clock has stepped, just
//!   before the flag or since (or after five minutes without a step, see [`FlagWatch`]). Before
//!   that, people read [`TIME_UNKNOWN`].
//!
//! Every runtime part (sources, pipeline, dispatch, sinks, store, web, telemetry, cluster) takes
//! the daemon's injected clock and never reads the wall clock itself, so each timer can be
//! tested on tokio's paused time: [`Clock::Accelerated`] counts on `tokio::time::Instant`, which
//! stands still in a paused test until the test advances it. Command-line tools that run no
//! daemon read the system clock through [`Clock::System`] (never `Utc::now()` directly), and so
//! do the few times another machine checks against its own clock (a webhook's or DingTalk's
//! signature time, an HTTP `Retry-After` date): those are real time, also in the demo.

use gridwatch_rules::Millis;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::time::Instant as TokioInstant;

/// The daemon's source of "now" in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock: the daemon's in production, and the one command-line tools use.
    System,
    /// Starts at `start` and runs `speed` times faster (the demo); `synchronized` says whether it
    /// counts as set (tests of a box booted at 1970 say no). It counts on tokio's clock, which is
    /// the system's outside paused tests.
    Accelerated { start: Millis, started: TokioInstant, speed: f64, synchronized: bool },
}

/// What a person reads instead of a time stamped by a clock that is not set.
pub const TIME_UNKNOWN: &str = "time unknown";

/// Where the daemon learns that the system clock is set (`[ingest] clock_synchronized`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SyncSource {
    /// The kernel's NTP state (`adjtimex`): set once an NTP client (systemd-timesyncd, chrony)
    /// synchronised it.
    #[default]
    Kernel,
    /// Set while this file exists (systemd-timesyncd's `/run/systemd/timesync/synchronized`).
    File(PathBuf),
    /// Always set: a box with a battery-backed clock, or a VM or container whose host keeps time.
    Always,
}

impl std::str::FromStr for SyncSource {
    type Err = String;
    fn from_str(text: &str) -> Result<SyncSource, String> {
        match text {
            "kernel" => Ok(SyncSource::Kernel),
            "always" => Ok(SyncSource::Always),
            path if path.starts_with('/') => Ok(SyncSource::File(PathBuf::from(path))),
            other => Err(format!("`{other}`: expected \"kernel\", \"always\" or the absolute path of a flag file")),
        }
    }
}

/// The source in force for [`Clock::System`]; set once at start.
static SYNC_SOURCE: OnceLock<SyncSource> = OnceLock::new();

/// When this process's elapsed time began.
static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Chooses where the system clock's synchronisation is read; the first call wins.
pub fn use_sync_source(source: SyncSource) {
    let _ = SYNC_SOURCE.set(source);
}

impl Clock {
    /// Whether the wall clock is set (NTP or another time source synchronised it). Readings
    /// stamped by an unset clock are still judged by the rules (on elapsed time) but never
    /// stored, and devices' own times are believed over it.
    pub fn synchronized(&self) -> bool {
        match self {
            Clock::System => system_synchronized(),
            Clock::Accelerated { synchronized, .. } => *synchronized,
        }
    }

    /// Milliseconds of monotonic time since this process started (the demo's run faster): never
    /// steps, whatever the wall clock does.
    pub fn elapsed_ms(&self) -> Millis {
        match *self {
            Clock::System => PROCESS_START.get_or_init(Instant::now).elapsed().as_millis() as Millis,
            Clock::Accelerated { started, speed, .. } => (started.elapsed().as_secs_f64() * 1000.0 * speed) as Millis,
        }
    }

    /// A wall-clock label for a person: RFC 3339, or [`TIME_UNKNOWN`] while the clock is not set.
    pub fn label(&self, ms: Millis) -> String {
        if self.synchronized() {
            rfc3339(ms)
        } else {
            TIME_UNKNOWN.to_string()
        }
    }

    pub fn accelerated(speed: f64) -> Clock {
        Clock::Accelerated { start: system_now(), started: TokioInstant::now(), speed, synchronized: true }
    }

    /// A clock that reads `start` now and runs at tokio's pace: in a paused test it moves only
    /// when the test advances time.
    pub fn starting_at(start: Millis, synchronized: bool) -> Clock {
        Clock::Accelerated { start, started: TokioInstant::now(), speed: 1.0, synchronized }
    }

    pub fn now(&self) -> Millis {
        match *self {
            Clock::System => system_now(),
            Clock::Accelerated { start, started, speed, .. } => start + (started.elapsed().as_secs_f64() * 1000.0 * speed) as Millis,
        }
    }

    /// How many clock milliseconds pass per real second.
    pub fn speed(&self) -> f64 {
        match *self {
            Clock::System => 1.0,
            Clock::Accelerated { speed, .. } => speed,
        }
    }
}

fn system_synchronized() -> bool {
    let Some(source) = SYNC_SOURCE.get() else { return true };
    let flag = source.synchronized();
    let elapsed = Clock::System.elapsed_ms();
    let offset = system_now() - elapsed;
    let mut watch = FLAG_WATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *watch = watch.next(flag, offset, elapsed);
    *watch == FlagWatch::Believed
}

/// A wall clock that steps less than this did not step (it slews a little between readings).
const STEP_MS: Millis = 2_000;
/// How long a flag that came up without a step is doubted: an NTP client may raise it before it
/// steps the clock (an outside tester's step 75 s after the flag, believed at a minute, lost the
/// links signed before and stamped the history three days off; chrony may step at any of its
/// first three updates, a minute or more apart).
const FLAG_DOUBTED_MS: Millis = 300_000;

/// How long before the flag came up a step counts as the one that set the clock: an NTP client
/// steps and then raises its flag at once. Steps minutes before (a box stepped +2 days, then −1
/// hour, then the flag a second before the true step: an outside tester) did not set it — taken
/// for NTP's, the flag was believed 25 hours off, the history re-stamped a day early, and four
/// devices told "clock ahead" though only the box was wrong.
const STEP_SETS_THE_CLOCK_WITHIN_MS: Millis = 30_000;

/// Whether the synchronisation flag is believed. One that was up when this process first looked
/// is, and so is one that comes back after it was (NTP unreachable for a while: the clock was
/// set); one that first comes up while this process runs is believed when the wall clock stepped
/// within [`STEP_SETS_THE_CLOCK_WITHIN_MS`] before it came up or steps after (NTP set it), or once
/// it has held [`FLAG_DOUBTED_MS`] without a step (the clock was right all along). Believed at
/// once, a flag raised before the step measured a step of nothing: links signed on the unset
/// clock were refused after the real step, and the history was re-stamped days off (an outside
/// tester).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagWatch {
    /// Not looked at yet.
    Unread,
    /// The flag is down; the wall clock's offsets, and when (elapsed) the latest step began.
    Down {
        offsets: Offsets,
        stepped_at: Option<Millis>,
    },
    /// The flag came up at elapsed `since_ms` with no step just before.
    Doubted {
        since_ms: Millis,
        offsets: Offsets,
    },
    Believed,
    /// The flag went down after it was believed (NTP unreachable for hours): the clock was set,
    /// and the flag's return is believed at once.
    Lost,
}

/// The wall clock's offset from elapsed time as settled, and another one seen at the last look
/// with when (elapsed) it was first seen. A step counts once two looks in a row show it: one odd
/// reading of the clock is no step (a re-tester's box 25 h behind believed its flag after 71 s
/// without a step, and told every device "clock ahead").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offsets {
    settled: Millis,
    seen: Option<(Millis, Millis)>,
}

/// What one look at the wall clock's offset saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The settled offset (within [`STEP_MS`]).
    Settled,
    /// Another offset, first seen at this look.
    Moved,
    /// A step: the other offset seen again; when (elapsed) it was first seen.
    Stepped(Millis),
}

impl Offsets {
    fn at(offset_ms: Millis) -> Offsets {
        Offsets { settled: offset_ms, seen: None }
    }

    /// Looks at the offset `offset_ms` at elapsed `elapsed_ms`.
    fn look(&mut self, offset_ms: Millis, elapsed_ms: Millis) -> Look {
        if (offset_ms - self.settled).abs() < STEP_MS {
            self.seen = None;
            return Look::Settled;
        }
        match self.seen {
            Some((seen, first)) if (offset_ms - seen).abs() < STEP_MS => {
                *self = Offsets::at(offset_ms);
                Look::Stepped(first)
            }
            _ => {
                self.seen = Some((offset_ms, elapsed_ms));
                Look::Moved
            }
        }
    }
}

static FLAG_WATCH: std::sync::Mutex<FlagWatch> = std::sync::Mutex::new(FlagWatch::Unread);

impl FlagWatch {
    /// The watch after reading the flag with the wall clock `offset_ms` ahead of elapsed time.
    fn next(self, flag: bool, offset_ms: Millis, elapsed_ms: Millis) -> FlagWatch {
        match (self, flag) {
            (FlagWatch::Down { mut offsets, stepped_at }, false) => {
                let stepped_at = match offsets.look(offset_ms, elapsed_ms) {
                    Look::Stepped(first) => Some(first),
                    Look::Settled | Look::Moved => stepped_at,
                };
                FlagWatch::Down { offsets, stepped_at }
            }
            (FlagWatch::Doubted { .. } | FlagWatch::Unread, false) => FlagWatch::Down { offsets: Offsets::at(offset_ms), stepped_at: None },
            (FlagWatch::Believed | FlagWatch::Lost, false) => FlagWatch::Lost,
            (FlagWatch::Unread | FlagWatch::Believed | FlagWatch::Lost, true) => FlagWatch::Believed,
            (FlagWatch::Down { mut offsets, stepped_at }, true) => {
                let stepped_at = match offsets.look(offset_ms, elapsed_ms) {
                    // A step seen as the flag comes up is NTP's (it steps, then raises the flag):
                    // an odd reading of the clock at that very look is not to be feared.
                    Look::Moved => Some(elapsed_ms),
                    Look::Stepped(first) => Some(first),
                    Look::Settled => stepped_at,
                };
                if stepped_at.is_some_and(|at| elapsed_ms - at <= STEP_SETS_THE_CLOCK_WITHIN_MS) {
                    FlagWatch::Believed
                } else {
                    FlagWatch::Doubted { since_ms: elapsed_ms, offsets }
                }
            }
            (FlagWatch::Doubted { since_ms, mut offsets }, true) => {
                if matches!(offsets.look(offset_ms, elapsed_ms), Look::Stepped(_)) || elapsed_ms - since_ms >= FLAG_DOUBTED_MS {
                    FlagWatch::Believed
                } else {
                    FlagWatch::Doubted { since_ms, offsets }
                }
            }
        }
    }
}

impl SyncSource {
    fn synchronized(&self) -> bool {
        match self {
            SyncSource::Kernel => kernel_synchronized(),
            SyncSource::File(file) => file.exists(),
            SyncSource::Always => true,
        }
    }
}

/// The kernel's view (`adjtimex`): an NTP client that set the clock clears `STA_UNSYNC`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn kernel_synchronized() -> bool {
    // SAFETY: `timex` is plain data; with `modes == 0` adjtimex only reads the kernel's state.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut timex) };
    state >= 0 && state != libc::TIME_ERROR && timex.status & libc::STA_UNSYNC == 0
}

/// Without `adjtimex`, only the flag file can say: the clock counts as set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn kernel_synchronized() -> bool {
    true
}

fn system_now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the flag along `readings` of (flag, wall clock's offset from elapsed, elapsed).
    fn watch(readings: &[(bool, Millis, Millis)]) -> Vec<bool> {
        let mut watch = FlagWatch::Unread;
        readings
            .iter()
            .map(|&(flag, offset, elapsed)| {
                watch = watch.next(flag, offset, elapsed);
                watch == FlagWatch::Believed
            })
            .collect()
    }

    #[test]
    fn a_flag_that_comes_up_is_believed_once_the_clock_stepped_just_before_it_or_since() {
        const DAY: Millis = 86_400_000;
        const DAYS_BEHIND: Millis = 3 * DAY;
        // Up at the first look (a restart on a set clock): believed.
        assert_eq!(watch(&[(true, 0, 0), (true, 0, 1_000)]), [true, true]);
        // Down three days behind; NTP steps the clock, then raises the flag: believed at once.
        assert_eq!(watch(&[(false, -DAYS_BEHIND, 0), (false, 0, 5_000), (true, 0, 6_000)]), [false, false, true]);
        // The step and the flag seen at the same look: believed at once.
        assert_eq!(watch(&[(false, -DAYS_BEHIND, 0), (true, 0, 5_000)]), [false, true]);
        // The flag first, the step five seconds later: doubted until the step is seen twice.
        assert_eq!(
            watch(&[(false, -DAYS_BEHIND, 0), (true, -DAYS_BEHIND, 1_000), (true, -DAYS_BEHIND + 300, 5_000), (true, 0, 6_000), (true, 0, 6_100)]),
            [false, false, false, false, true]
        );
        // The flag with no step at all (the clock was right): believed after five minutes.
        assert_eq!(watch(&[(false, 7, 0), (true, 7, 1_000), (true, 8, 300_999), (true, 8, 301_000)]), [false, false, false, true]);
        // A step 75 s after the flag is still the step NTP made.
        assert_eq!(watch(&[(false, -DAYS_BEHIND, 0), (true, -DAYS_BEHIND, 1_000), (true, 0, 76_000), (true, 0, 76_100)]), [false, false, false, true]);
        // One odd reading of the clock is no step: the flag stays doubted.
        assert_eq!(
            watch(&[
                (false, -DAY - 3_600_000, 0),
                (true, -DAY - 3_600_000, 1_000),
                (true, 0, 71_000),
                (true, -DAY - 3_600_000, 71_100),
                (true, -DAY - 3_600_000, 72_000)
            ]),
            [false, false, false, false, false]
        );
        // Down again (NTP unreachable for hours): not believed meanwhile, and its return is
        // believed at once (the clock was set).
        assert_eq!(watch(&[(true, 0, 0), (false, 0, 1_000), (false, 0, 9_000), (true, 3, 10_000)]), [true, false, false, true]);
        // Steps minutes before the flag (+2 days, then −1 hour) did not set the clock: the flag
        // is doubted until NTP's step a second after it, not believed 25 hours off.
        assert_eq!(
            watch(&[
                (false, -DAYS_BEHIND, 0),
                (false, -DAY, 93_000),
                (false, -DAY - 3_600_000, 146_000),
                (true, -DAY - 3_600_000, 243_000),
                (true, 0, 244_000),
                (true, 0, 244_100)
            ]),
            [false, false, false, false, false, true]
        );
        // The step NTP made just before its flag, seen at earlier looks: believed.
        assert_eq!(watch(&[(false, -DAYS_BEHIND, 0), (false, 0, 100_000), (false, 0, 110_000), (true, 0, 125_000)]), [false, false, false, true]);
    }

    #[test]
    fn accelerated_clock_runs_faster_than_the_system_clock() {
        let started = TokioInstant::now() - std::time::Duration::from_millis(20);
        let clock = Clock::Accelerated { start: 1_000_000, started, speed: 1000.0, synchronized: true };
        assert!(clock.now() >= 1_000_000 + 20_000);
    }

    #[test]
    fn elapsed_time_only_moves_forward() {
        let clock = Clock::System;
        let before = clock.elapsed_ms();
        assert!(clock.elapsed_ms() >= before);
        let demo = Clock::Accelerated { start: 0, started: TokioInstant::now() - std::time::Duration::from_millis(10), speed: 100.0, synchronized: true };
        assert!(demo.elapsed_ms() >= 1000, "the demo's elapsed time runs at its speed");
    }

    #[test]
    fn the_flag_file_says_whether_the_clock_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("synchronized");
        let source: SyncSource = flag.to_str().unwrap().parse().unwrap();
        assert!(!source.synchronized(), "no flag file: the clock is not set, whatever year it says");
        std::fs::write(&flag, b"").unwrap();
        assert!(source.synchronized());
        assert!(SyncSource::Always.synchronized());
        assert!("sometimes".parse::<SyncSource>().is_err());
        let set = Clock::starting_at(0, true);
        assert_eq!(set.label(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let booted_at_1970 = Clock::starting_at(0, false);
        assert_eq!(booted_at_1970.label(86_400_000), TIME_UNKNOWN);
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
