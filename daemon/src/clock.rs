//! Wall-clock time for labelling readings and driving rule ticks, behind a seam so the demo can
//! run hours of simulated time in seconds (and replay can run faster still, later).

use gridwatch_rules::Millis;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The daemon's source of "now" in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// Starts at the system time when created and runs `speed` times faster (the demo).
    Accelerated { start: Millis, started: Instant, speed: f64 },
}

/// Before this instant (2026-01-01T00:00:00Z, before this release) the system clock cannot be
/// right: a Raspberry Pi has no real-time clock and boots at 1970, or at its last shutdown,
/// until NTP has synced.
pub const TRUSTED_AFTER_MS: Millis = 1_767_225_600_000;

impl Clock {
    /// Whether "now" can be believed (see [`TRUSTED_AFTER_MS`]). Readings stamped with an
    /// untrusted clock are still judged by the rules (time differences hold) but never stored.
    pub fn trusted(&self) -> bool {
        self.now() >= TRUSTED_AFTER_MS
    }

    pub fn accelerated(speed: f64) -> Clock {
        Clock::Accelerated { start: system_now(), started: Instant::now(), speed }
    }

    pub fn now(&self) -> Millis {
        match *self {
            Clock::System => system_now(),
            Clock::Accelerated { start, started, speed } => {
                start + (started.elapsed().as_secs_f64() * 1000.0 * speed) as Millis
            }
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

fn system_now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerated_clock_runs_faster_than_the_system_clock() {
        let started = Instant::now() - std::time::Duration::from_millis(20);
        let clock = Clock::Accelerated { start: 1_000_000, started, speed: 1000.0 };
        assert!(clock.now() >= 1_000_000 + 20_000);
    }

    #[test]
    fn a_clock_before_2026_is_not_trusted() {
        let booted_at_1970 = Clock::Accelerated { start: 86_400_000, started: Instant::now(), speed: 1.0 };
        assert!(!booted_at_1970.trusted());
        assert!(Clock::System.trusted(), "this machine's clock is set");
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
