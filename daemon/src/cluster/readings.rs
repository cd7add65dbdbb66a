//! Which readings go up to the district, and keeping them until they are sent: a 4G link cannot
//! carry every reading of a large community, so a box sends at most `uplink_points_per_sec`.
//!
//! **Thinning** ([`Thinning`]): each sensor gets an equal share of the cap — a reading goes up
//! when its sensor's last one that went up is at least `sensors / uplink_points_per_sec`
//! seconds older (reading time), so a chatty sensor cannot crowd out the others and every
//! sensor keeps a regular, if coarser, series. A token bucket at the cap (a minute's worth of
//! burst) bounds the whole, for readings that come all at once. A community within the cap
//! (200 sensors at one reading a minute is 3.3 a second) sends every reading.
//!
//! **Keeping** ([`record`]): the chosen readings gather in memory for `readings_batch` and are
//! written to `uplink_readings` in one transaction (one small write every half minute on the
//! SD card rather than one per reading), which also forgets those the hub has committed and
//! keeps at most two days at the cap. The uplink ([`super::uplink`]) sends them from there like
//! the journal's rows. What gathers in memory is lost if the box dies (at most `readings_batch`
//! of the district's copy; the box's own InfluxDB has them): the district's series is exact
//! across lost links and hub or cluster failures, not across a box's crash.
//!
//! Every reading not kept is counted in `gridwatch_uplink_readings_total{result}`.

use crate::metrics::Metrics;
use crate::store::{NewPoint, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Groups of readings handed over by the spooler and not yet looked at; past this the spooler
/// drops them (counted `queue_full`) rather than wait.
pub const TAP_QUEUE: usize = 256;

/// How many seconds at the cap the box keeps waiting for the hub (two days).
const BACKLOG_SECS: f64 = 2.0 * 86_400.0;

/// Seconds of the cap the token bucket holds.
const BURST_SECS: f64 = 60.0;

/// Chooses readings for the uplink within a rate; pure (times are passed in).
#[derive(Debug)]
pub struct Thinning {
    rate: f64,
    /// Least time between two readings of one sensor that go up, in reading time.
    spacing_ms: i64,
    tokens: f64,
    /// Monotonic seconds of the last refill.
    refilled_at: f64,
    last_sent: HashMap<Arc<str>, i64>,
}

impl Thinning {
    /// A cap of `rate` readings a second shared by `sensors` sensors (0: nothing goes up).
    pub fn new(rate: f64, sensors: usize) -> Thinning {
        let spacing_ms = if rate > 0.0 { (sensors as f64 / rate * 1000.0) as i64 } else { i64::MAX };
        Thinning { rate, spacing_ms, tokens: rate * BURST_SECS, refilled_at: 0.0, last_sent: HashMap::new() }
    }

    /// Whether `sensor`'s reading taken at `ts` (ms) goes up, at monotonic time `now` (s).
    pub fn take(&mut self, sensor: &Arc<str>, ts: i64, now: f64) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        self.tokens = (self.tokens + (now - self.refilled_at).max(0.0) * self.rate).min(self.rate * BURST_SECS);
        self.refilled_at = now;
        let due = self.last_sent.get(sensor).is_none_or(|&last| ts.abs_diff(last) >= self.spacing_ms.unsigned_abs());
        if !due || self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        self.last_sent.insert(sensor.clone(), ts);
        true
    }

    /// Most readings kept waiting for the hub: two days at the cap.
    pub fn backlog_rows(&self) -> u64 {
        (self.rate * BACKLOG_SECS).max(1_000.0) as u64
    }
}

/// What [`record`] works with.
#[derive(Debug)]
pub struct Recorder {
    pub tapped: mpsc::Receiver<Arc<Vec<NewPoint>>>,
    pub thinning: Thinning,
    pub store: Store,
    /// The hub's high-water marks as the uplink last read them: readings up to the mark are
    /// forgotten.
    pub progress: Arc<super::uplink::Progress>,
    /// How long chosen readings gather before they are written.
    pub every: Duration,
    pub metrics: Arc<Metrics>,
}

/// Most readings gathered in memory before they are written, whatever `every` says.
const GATHER_MAX: usize = 5_000;

/// Chooses and keeps readings until `shutdown` (what has gathered is written then).
pub async fn record(mut recorder: Recorder, shutdown: CancellationToken) {
    let started = tokio::time::Instant::now();
    let mut gathered: Vec<NewPoint> = Vec::new();
    let mut forgotten_through = 0;
    let mut tick = tokio::time::interval(recorder.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush = tokio::select! {
            points = recorder.tapped.recv() => match points {
                Some(points) => {
                    let now = started.elapsed().as_secs_f64();
                    let before = gathered.len();
                    gathered.extend(points.iter().filter(|(sensor, ts, _)| recorder.thinning.take(sensor, *ts, now)).cloned());
                    let kept = gathered.len() - before;
                    recorder.metrics.count_uplink_readings("kept", kept as u64);
                    recorder.metrics.count_uplink_readings("thinned", (points.len() - kept) as u64);
                    gathered.len() >= GATHER_MAX
                }
                None => true,
            },
            _ = tick.tick() => true,
            () = shutdown.cancelled() => true,
        };
        let committed = recorder.progress.mark(super::wire::Kind::Reading);
        if flush && (!gathered.is_empty() || committed > forgotten_through) {
            let points = std::mem::take(&mut gathered);
            let count = points.len() as u64;
            match recorder.store.record_uplink_readings(points, committed, recorder.thinning.backlog_rows()).await {
                Ok(dropped) => {
                    forgotten_through = committed;
                    if dropped > 0 {
                        recorder.metrics.count_uplink_readings("backlog_full", dropped);
                        tracing::warn!(dropped, "district uplink backlog full: its oldest readings were dropped (the box's own InfluxDB keeps them)");
                    }
                }
                Err(error) => {
                    recorder.metrics.count_uplink_readings("not_stored", count);
                    // Logged (at most once a minute) and shown in /healthz by the store itself.
                    tracing::debug!(readings = count, error = %format!("{error:#}"), "readings for the district not stored");
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_cap_every_reading_goes_up() {
        // 200 sensors at one reading a minute (3.3/s) under a cap of 5/s.
        let mut thinning = Thinning::new(5.0, 200);
        let sensors: Vec<Arc<str>> = (0..200).map(|i| Arc::from(format!("house-{i:03}"))).collect();
        let mut taken = 0;
        for minute in 0..10 {
            for (i, sensor) in sensors.iter().enumerate() {
                let ts = minute * 60_000 + i as i64 * 300;
                taken += usize::from(thinning.take(sensor, ts, ts as f64 / 1000.0));
            }
        }
        assert_eq!(taken, 2_000);
    }

    #[test]
    fn over_the_cap_each_sensor_keeps_an_equal_regular_share() {
        // 10 sensors each reading every second (10/s) under a cap of 2/s: one reading per
        // sensor every 5 s, a chatty sensor no more than the others.
        let mut thinning = Thinning::new(2.0, 10);
        let sensors: Vec<Arc<str>> = (0..10).map(|i| Arc::from(format!("s{i}"))).collect();
        let mut per_sensor = vec![Vec::new(); 10];
        for second in 0..600 {
            for (i, sensor) in sensors.iter().enumerate() {
                let ts = second * 1000;
                if thinning.take(sensor, ts, second as f64) {
                    per_sensor[i].push(ts);
                }
            }
        }
        let total: usize = per_sensor.iter().map(Vec::len).sum();
        assert!(total <= 2 * 600 + 120, "{total} over the cap and its burst");
        for times in &per_sensor {
            assert_eq!(times.len(), 120, "one every 5 s for 600 s");
            assert!(times.windows(2).all(|w| w[1] - w[0] == 5_000));
        }
    }

    #[test]
    fn the_bucket_bounds_a_burst_and_a_zero_cap_sends_nothing() {
        let mut thinning = Thinning::new(1.0, 1);
        let sensors: Vec<Arc<str>> = (0..500).map(|i| Arc::from(format!("s{i}"))).collect();
        let taken = sensors.iter().filter(|s| thinning.take(s, 0, 0.0)).count();
        assert_eq!(taken, 60, "a minute's worth at once");
        assert!(!Thinning::new(0.0, 10).take(&sensors[0], 0, 0.0));
    }
}
