//! The hourly trend for the district: 4G cannot carry every reading of a large community
//! ([`super::readings`] thins them), so every closed hour's minimum, maximum, sum and count per
//! sensor and field (the store's `trend` rows, [`crate::trend`]) go up as well, and the
//! district has each sensor's every hour even where its raw readings were thinned.
//!
//! Every [`COPY_EVERY`], [`copy`] copies the rows of the hours closed on the box's clock — ended
//! at least [`CLOSE_AFTER`] ago, past the live table's next flush of them — into `uplink_trend`
//! (`Store::copy_closed_trend`), from which the uplink sends them like readings, and forgets
//! those the hub's mark covers (and those older than [`BACKLOG_HOURS`], never sent). An hour
//! that late readings (device time inside an hour already copied) grew afterwards is copied
//! again whole: the district's point for that hour is then overwritten with the merged values.

use super::uplink::Progress;
use super::wire::Kind;
use crate::clock::Clock;
use crate::store::{CopiedTrend, Store};
use gridwatch_rules::Millis;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often closed hours are looked for (and committed copies forgotten).
const COPY_EVERY: Duration = Duration::from_secs(60);

/// How long after its end an hour is closed: the live table writes a finished hour to the
/// store at its next flush ([`crate::trend::FLUSH_EVERY_MS`]), and five minutes more for
/// readings that come a little late.
const CLOSE_AFTER: Millis = crate::trend::FLUSH_EVERY_MS + 5 * 60 * 1000;

const HOUR_MS: Millis = 3_600_000;

/// Closed hours kept waiting for the hub (30 days): a box cut off longer drops the oldest, so
/// `uplink_trend` stays bounded (1,000 sensors of 3 fields: about 2 million rows).
const BACKLOG_HOURS: i64 = 30 * 24;

/// The first hour (since the Unix epoch) not yet closed at `now`.
fn first_open_hour(now: Millis) -> i64 {
    (now - CLOSE_AFTER).div_euclid(HOUR_MS)
}

/// Copies closed hours for the uplink every [`COPY_EVERY`] (first at start) until `shutdown`.
pub async fn copy(store: Store, progress: Arc<Progress>, clock: Clock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(COPY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let first_open = first_open_hour(clock.now());
        match store.copy_closed_trend(first_open, progress.mark(Kind::Trend), first_open - BACKLOG_HOURS).await {
            Ok(CopiedTrend { copied, dropped }) => {
                if copied > 0 {
                    tracing::debug!(copied, "closed trend hours copied for the district");
                }
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        backlog_hours = BACKLOG_HOURS,
                        "district uplink backlog full: trend hours the hub never got were dropped (the box's own InfluxDB keeps the readings)"
                    );
                }
            }
            // Logged (at most once a minute) and shown in /healthz by the store itself; the
            // hours wait in `trend` for the next round.
            Err(error) => tracing::debug!(error = %format!("{error:#}"), "closed trend hours not copied for the district"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_closes_a_quarter_hour_after_its_end() {
        let ten_o_clock = 490_000 * HOUR_MS;
        assert_eq!(first_open_hour(ten_o_clock + 14 * 60_000), 489_999, "09:00-10:00 still open at 10:14");
        assert_eq!(first_open_hour(ten_o_clock + 15 * 60_000), 490_000, "closed at 10:15");
    }
}
