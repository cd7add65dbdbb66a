//! How much the uplink puts in one batch, and how long it waits for its ack, from the pace its
//! link has shown. A box on a 4G modem at the edge of coverage may carry 2 KB/s: a batch of
//! 500 readings (≈ 11 KB deflated) then takes longer to cross than JetStream's ack wait, and is
//! sent again and again, while the alarms behind it wait for it in the same TCP stream.
//!
//! The pace is the bytes of each batch of at least [`MEASURED_FROM`] bytes over the time from
//! its publish to its ack (smoothed). A new batch holds as many rows as cross in
//! [`BATCH_TIME`] at that pace (by the bytes per row its kind last had), at least
//! [`MIN_BATCH_BYTES`] worth, at most the configured `batch_rows`; before the link has shown
//! its pace, [`MIN_BATCH_BYTES`] worth, so that it is measured (the very first, [`FIRST_ROWS`]
//! at most). The ack is awaited [`ACK_WAIT`] plus the time the batch
//! takes at [`SLOWEST_PACE`].
//!
//! Invariant: only new batches are sized; a batch sent again is the same batch.

use super::wire::Kind;
use std::time::Duration;

/// How long one batch should take to cross the link: what an alarm behind it may wait.
const BATCH_TIME: Duration = Duration::from_secs(2);
/// Batches smaller than this are not measured: their time is the round trip, not the pace
/// (measuring them would shrink batches to nothing on a link with a long round trip).
const MEASURED_FROM: usize = 4 * 1024;
/// A batch is sized to at least this many bytes, so that it is measured.
const MIN_BATCH_BYTES: f64 = MEASURED_FROM as f64;
/// Rows of a kind's first batch, before its bytes per row are known.
const FIRST_ROWS: usize = 100;
/// The ack wait of a batch of a few bytes.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// The slowest link the ack wait allows for: a batch's bytes at this pace come on top.
const SLOWEST_PACE: f64 = 1_000.0;
/// The weight of the newest measure in the smoothed pace.
const SMOOTHING: f64 = 0.5;

/// What the uplink knows of its link's pace.
#[derive(Debug, Clone, Default)]
pub struct LinkPace {
    /// Bytes per second the link carried batches at (smoothed); none before one was measured.
    bytes_per_sec: Option<f64>,
    /// Per kind: the encoded bytes per row of its last batch.
    row_bytes: [Option<f64>; Kind::ALL.len()],
}

impl LinkPace {
    /// A batch of `rows` rows of `kind` in `bytes` bytes was acked `took` after its publish.
    pub fn observed(&mut self, kind: Kind, rows: usize, bytes: usize, took: Duration) {
        if rows > 0 {
            self.row_bytes[kind as usize] = Some(bytes as f64 / rows as f64);
        }
        if bytes < MEASURED_FROM || took.is_zero() {
            return;
        }
        let pace = bytes as f64 / took.as_secs_f64();
        self.bytes_per_sec = Some(self.bytes_per_sec.map_or(pace, |old| old + SMOOTHING * (pace - old)));
    }

    /// How many rows of `kind` the next batch holds, at most `max_rows`.
    pub fn batch_rows(&self, kind: Kind, max_rows: usize) -> usize {
        let Some(row_bytes) = self.row_bytes[kind as usize] else { return max_rows.min(FIRST_ROWS) };
        // Before the pace is known: a batch just big enough to measure it.
        let bytes = self.bytes_per_sec.map_or(MIN_BATCH_BYTES, |pace| (pace * BATCH_TIME.as_secs_f64()).max(MIN_BATCH_BYTES));
        ((bytes / row_bytes.max(1.0)) as usize).clamp(1, max_rows.max(1))
    }

    /// How long to wait for the ack of a batch of `bytes` bytes.
    pub fn ack_wait(bytes: usize) -> Duration {
        ACK_WAIT + Duration::from_secs_f64(bytes as f64 / SLOWEST_PACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_to_what_a_slow_link_carries_in_two_seconds_and_grow_back_on_a_fast_one() {
        let mut pace = LinkPace::default();
        assert_eq!(pace.batch_rows(Kind::Reading, 500), FIRST_ROWS, "unknown pace: a modest first batch");
        // 2 KB/s: 100 readings of 22 bytes (2.2 KB) are too small to measure (their time is the
        // round trip's); the next is made big enough to be, and 4.4 KB in 2.2 s is.
        pace.observed(Kind::Reading, 100, 2_200, Duration::from_millis(1_400));
        assert_eq!(pace.batch_rows(Kind::Reading, 500), 186, "4 KB of 22-byte rows, to measure the pace");
        pace.observed(Kind::Reading, 200, 4_400, Duration::from_millis(2_200));
        // 4 KB at least (2 KB/s × 2 s = 4 KB): 186 rows of 22 bytes.
        assert_eq!(pace.batch_rows(Kind::Reading, 500), 186);
        // Alert rows are bigger: the same time holds fewer.
        pace.observed(Kind::Alert, 10, 2_000, Duration::from_millis(900));
        assert_eq!(pace.batch_rows(Kind::Alert, 500), 20);
        // A fast link (200 KB/s): the configured size.
        for _ in 0..8 {
            pace.observed(Kind::Reading, 500, 11_000, Duration::from_millis(55));
        }
        assert_eq!(pace.batch_rows(Kind::Reading, 500), 500);
        // An ack waits longer for more bytes.
        assert_eq!(LinkPace::ack_wait(0), ACK_WAIT);
        assert_eq!(LinkPace::ack_wait(11_000), ACK_WAIT + Duration::from_secs(11));
    }
}
