//! Copies of a reading that carries neither its own time (`ts`) nor a `seq`: a device that
//! sends a message again when its broker's acknowledgement was lost, or a broker's redelivery,
//! reaches the daemon as a second reading stamped on arrival. Two copies of one spike then look
//! like two readings that agree, and `tilt-sudden`'s `steady 2` raised a red on a one-box house
//! (an outside tester, in the replay and through the daemon).
//!
//! A reading is taken for a copy when its values are exactly those of the sensor's previous
//! message and it came sooner than half the sensor's usual interval: the median of its last
//! [`GAPS_KEPT`] arrival gaps, this one's included (the configured `interval_secs` is an upper
//! bound, an hour by default, not the pace). Counting this gap in, a box asked to report faster
//! (its house at yellow) has its new pace at its second fast reading, so the readings after a
//! real jump — the same values on a box that rounds coarsely — are never taken for copies; a
//! single resend among regular gaps is. A genuine reading that early with the same values adds
//! nothing a rule could judge differently.

use std::collections::{HashMap, VecDeque};

/// Arrival gaps a sensor's usual interval is the median of.
const GAPS_KEPT: usize = 3;

#[derive(Debug, Default)]
struct Heard {
    /// The values' hash and arrival (ms) of the sensor's last message.
    last: Option<(u64, i64)>,
    gaps: VecDeque<i64>,
}

/// Per sensor: what its last timeless message was, and how often it reports.
#[derive(Debug, Default)]
pub struct TimelessCopies {
    sensors: HashMap<usize, Heard>,
}

impl TimelessCopies {
    /// Whether a reading of `sensor` with values hashed `hash`, arriving at `now_ms`, is a copy
    /// of its previous one.
    pub fn is_copy(&mut self, sensor: usize, hash: u64, now_ms: i64) -> bool {
        let heard = self.sensors.entry(sensor).or_default();
        let previous = heard.last.replace((hash, now_ms));
        let Some((last_hash, last_at)) = previous else { return false };
        let gap = now_ms - last_at;
        // A clock stepped back gives no gap.
        if gap <= 0 {
            return false;
        }
        if heard.gaps.len() == GAPS_KEPT {
            heard.gaps.pop_front();
        }
        heard.gaps.push_back(gap);
        last_hash == hash && heard.gaps.len() == GAPS_KEPT && gap < usual(&heard.gaps) / 2
    }
}

/// The median of `gaps` (the upper one of an even count).
fn usual(gaps: &VecDeque<i64>) -> i64 {
    let mut sorted: Vec<i64> = gaps.iter().copied().collect();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn a_reading_sent_again_soon_is_a_copy_and_the_same_values_a_whole_interval_later_are_not() {
        let mut copies = TimelessCopies::default();
        let (quiet, spike, moved) = (1, 2, 3);
        for n in 0..4 {
            assert!(!copies.is_copy(7, quiet, n * 5 * MINUTE), "readings at the box's pace are taken");
        }
        // The spike, and its copy 40 s later: the copy is refused; sent a third time 5 s after,
        // refused too.
        assert!(!copies.is_copy(7, spike, 20 * MINUTE));
        assert!(copies.is_copy(7, spike, 20 * MINUTE + 40_000));
        assert!(copies.is_copy(7, spike, 20 * MINUTE + 45_000));
        // The same values a whole interval later: a coarse box on a quiet wall, taken.
        assert!(!copies.is_copy(7, spike, 25 * MINUTE));
        // Asked to report every minute, the wall jumps: the readings after it, all alike, are
        // taken from the second on (the first differs from the one before anyway).
        assert!(!copies.is_copy(7, moved, 26 * MINUTE));
        assert!(!copies.is_copy(7, moved, 27 * MINUTE));
        assert!(!copies.is_copy(7, moved, 28 * MINUTE));
        // A sensor's first readings are all taken.
        assert!(!copies.is_copy(8, spike, 0) && !copies.is_copy(8, spike, 1_000));
    }
}
