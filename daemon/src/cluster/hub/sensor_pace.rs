//! How fast one 4G sensor may publish to the hub's MQTT listener: a token bucket per sensor (its
//! login, or its topic on an anonymous listener), shared by all its connections. A sensor over
//! its pace is not refused: its next publish is read later, so its PUBACKs come later and its
//! client's in-flight window slows it down — nothing is lost, and a backlog after a 4G outage
//! still goes through, at the pace. A leaked login could otherwise fill the district's stream
//! (an outside tester stored 8,000 readings a second from one login over four connections).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Readings a sensor may publish a second, on average: a tilt box reports every minute or so.
pub const READINGS_PER_SECOND: f64 = 20.0;
/// Readings a sensor may publish at once after a quiet spell (its backlog after an outage).
pub const READINGS_AT_ONCE: f64 = 600.0;
/// Sensors tracked at most; beyond, the ones with a full bucket (idle) are forgotten.
const SENSORS_TRACKED: usize = 20_000;

/// Every sensor's bucket: the readings it may still publish now, and when that was counted.
#[derive(Debug, Default)]
pub struct Pace {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Pace {
    /// Counts one publish of `sensor` at `now`; how long to wait before reading it (zero when
    /// the sensor keeps its pace).
    pub fn delay(&self, sensor: &str, now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= SENSORS_TRACKED && !buckets.contains_key(sensor) {
            buckets.retain(|_, (left, at)| *left + now.duration_since(*at).as_secs_f64() * READINGS_PER_SECOND < READINGS_AT_ONCE);
        }
        let (left, at) = buckets.entry(sensor.to_string()).or_insert((READINGS_AT_ONCE, now));
        *left = (*left + now.duration_since(*at).as_secs_f64() * READINGS_PER_SECOND).min(READINGS_AT_ONCE) - 1.0;
        *at = now;
        if *left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*left / READINGS_PER_SECOND)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_at_its_pace_never_waits_and_a_flood_waits_in_proportion() {
        let pace = Pace::default();
        let start = Instant::now();
        // A backlog of READINGS_AT_ONCE goes at once.
        for _ in 0..READINGS_AT_ONCE as usize {
            assert_eq!(pace.delay("old-town/east/east-03", start), Duration::ZERO);
        }
        // Then each more waits its turn: the 21st more, a second.
        let waits: Vec<Duration> = (0..21).map(|_| pace.delay("old-town/east/east-03", start)).collect();
        assert!(waits[0] > Duration::ZERO);
        assert!((waits[20].as_secs_f64() - 21.0 / READINGS_PER_SECOND).abs() < 1e-6, "{waits:?}");
        // Another sensor is not held up by it, and a minute of quiet fills the bucket again.
        assert_eq!(pace.delay("old-town/east/east-04", start), Duration::ZERO);
        let later = start + Duration::from_secs(60);
        assert_eq!(pace.delay("old-town/east/east-03", later), Duration::ZERO);
        // A sensor reporting every second for a day never waits.
        let steady = Pace::default();
        assert!((0..86_400).all(|s| steady.delay("x", start + Duration::from_secs(s)).is_zero()));
    }
}
