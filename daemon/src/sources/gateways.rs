//! Whether each gateway is up, judged from the boxes behind it (see [`crate::sources::buses`]): a
//! gateway is down when every box behind it has missed a report — none has sent anything for
//! longer than its own report interval — and up again with the first reading from any of them.
//!
//! A box's no-data alarm waits twice its interval, and at least 10 minutes (the rule packs'
//! `no_data = "max(2x, 10m)"`), so the gateway is found down before its boxes' no-data alarms
//! fire, and the dispatcher holds those back: one "gateway down" alarm goes to the installers
//! instead of one alarm per box.

use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::live::LiveTable;
use crate::sources::buses::Buses;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gateways are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Whether every box at `positions` is overdue at elapsed time `now` (their readings' arrival on
/// the daemon's elapsed time, [`crate::live::Latest::heard_ms`]; a box never heard counts from
/// the start, elapsed 0): then when the last of them arrived, on elapsed time. Judged on arrival,
/// neither a box clock that is not set nor the devices' own clocks make a gateway down at once
/// (the box ahead of the devices), hide a dead one (behind), or lengthen its silence.
pub fn all_silent(sensors: &[SensorConfig], latest: &[crate::live::Latest], positions: &[usize], now: i64) -> Option<i64> {
    let mut last_arrival = 0;
    for &position in positions {
        let interval = i64::try_from(sensors.get(position)?.interval.as_millis()).unwrap_or(i64::MAX / 2);
        let heard = latest.get(position).and_then(|l| l.heard_ms).unwrap_or(0);
        if now - heard <= interval {
            return None;
        }
        last_arrival = last_arrival.max(heard);
    }
    Some(last_arrival)
}

/// Marks each gateway down or up every second until `shutdown`.
pub async fn watch(buses: Arc<Buses>, live: Arc<LiveTable>, sensors: Arc<[SensorConfig]>, clock: Clock, shutdown: CancellationToken) {
    let gateways = buses.gateways();
    if gateways.is_empty() {
        return;
    }
    let mut look = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = look.tick() => {}
        }
        let (now, wall_now) = (clock.elapsed_ms(), clock.now());
        let latest = live.latest();
        for (gateway, positions) in &gateways {
            match all_silent(&sensors, &latest, positions, now) {
                // On the box's wall clock, as the bus watcher counts: down since the last arrival.
                Some(last_arrival) => gateway.down(wall_now - (now - last_arrival)),
                None => gateway.up(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SensorIndex;
    use crate::live::Latest;

    fn behind(gateway: &str, id: &str) -> SensorConfig {
        let mut sensor = SensorConfig::test_tilt(id, "north-lane");
        sensor.tags.or_insert_with(crate::sources::buses::GATEWAY_TAG, || gateway.into());
        sensor
    }

    /// A box heard at elapsed `at_ms`, its reading stamped then.
    fn heard(at_ms: i64) -> Latest {
        Latest { at_ms: Some(at_ms), heard_ms: Some(at_ms), fields: Vec::new() }
    }

    #[test]
    fn a_gateway_is_down_only_when_every_box_behind_it_missed_a_report() {
        let sensors = vec![behind("gw-3", "a"), behind("gw-3", "b"), behind("gw-4", "c")];
        // Each reports every 60 s.
        assert_eq!(all_silent(&sensors, &[heard(0), heard(30_000)], &[0, 1], 80_000), None, "b reported 50 s ago");
        assert_eq!(all_silent(&sensors, &[heard(0), heard(30_000)], &[0, 1], 91_000), Some(30_000), "both overdue: last heard from b");
        assert_eq!(all_silent(&sensors, &[Latest::default(), heard(30_000)], &[0, 1], 91_000), Some(30_000), "a box never heard counts from the start");
        assert_eq!(all_silent(&sensors, &[Latest::default(), Latest::default()], &[0, 1], 59_000), None, "not yet overdue since the start");
        assert_eq!(all_silent(&sensors, &[Latest::default(), Latest::default()], &[0, 1], 61_000), Some(0), "never heard: since the start");
        // Readings stamped three days before the box's clock (or an hour after), arriving on
        // time: up; and once they stop, silent since they stopped arriving.
        let stamped = |arrived: i64, off: i64| Latest { at_ms: Some(arrived + off), heard_ms: Some(arrived), fields: Vec::new() };
        assert_eq!(all_silent(&sensors, &[stamped(30_000, -3 * 86_400_000), stamped(40_000, 3_600_000)], &[0, 1], 80_000), None);
        assert_eq!(all_silent(&sensors, &[stamped(30_000, -3 * 86_400_000), stamped(40_000, 3_600_000)], &[0, 1], 101_000), Some(40_000));
    }

    #[test]
    fn boxes_behind_a_down_gateway_are_explained_by_it() {
        let sensors: Arc<[SensorConfig]> =
            vec![behind("gw-3", "a"), behind("gw-3", "b"), behind("gw-4", "alone"), SensorConfig::test_tilt("plain", "x")].into();
        let buses = Buses::new(SensorIndex::new(sensors), &[]);
        let gateways = buses.gateways();
        assert_eq!(gateways.len(), 1, "a gateway with one box is not grouped");
        assert_eq!(gateways[0].1, vec![0, 1]);
        gateways[0].0.down(5_000);
        assert_eq!((buses.down_under("a"), buses.down_under("b")), (Some("gateway:gw-3"), Some("gateway:gw-3")));
        assert_eq!((buses.down_under("alone"), buses.down_under("plain")), (None, None));
        gateways[0].0.up();
        assert_eq!(buses.down_under("a"), None);
    }
}
