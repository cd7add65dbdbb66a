//! Logs rejected messages without a line per message: a broken or hostile device can send
//! thousands a second, and each is already counted in `gridwatch_payloads_rejected_total{reason}`.
//!
//! The first rejection of each reason is a WARN with its details; after that, a reason is
//! logged at most once per window, saying how many were rejected since its last line.
//! Invariant: at most one line per reason per window (plus the first).

use crate::sources::mqtt::payload::Rejection;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Per reason: when it was last logged and how many were rejected since, unlogged.
#[derive(Debug)]
pub struct RejectionLog {
    window: Duration,
    reasons: HashMap<&'static str, (Instant, u64)>,
}

impl RejectionLog {
    pub fn new(window: Duration) -> RejectionLog {
        RejectionLog { window, reasons: HashMap::new() }
    }

    /// Notes one rejection at `now`; returns whether it was logged.
    pub fn note(&mut self, topic: &str, rejection: &Rejection, now: Instant) -> bool {
        let reason = rejection.reason();
        match self.reasons.get_mut(reason) {
            None => {
                self.reasons.insert(reason, (now, 0));
                tracing::warn!(topic, reason, error = %rejection, "message rejected (further rejections for this reason are summarised)");
                true
            }
            Some((logged, unlogged)) if now.duration_since(*logged) >= self.window => {
                let since = *unlogged + 1;
                (*logged, *unlogged) = (now, 0);
                tracing::warn!(topic, reason, error = %rejection, rejected = since, window_secs = self.window.as_secs(), "messages rejected since the last report for this reason; latest shown");
                true
            }
            Some((_, unlogged)) => {
                *unlogged += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_rejections_is_one_line_per_reason_and_window() {
        let mut log = RejectionLog::new(Duration::from_secs(60));
        let start = Instant::now();
        let too_large = Rejection::TooLarge { size: 5000, limit: 4096 };
        let logged: usize = (0..10_000).map(|i| log.note("t", &too_large, start + Duration::from_millis(i))).filter(|&l| l).count();
        assert_eq!(logged, 1, "ten seconds of rejections: the first line only");
        assert!(log.note("t", &Rejection::NotObject, start), "another reason has its own first line");
        assert!(log.note("t", &too_large, start + Duration::from_secs(60)), "a summary once the window has passed");
        assert!(!log.note("t", &too_large, start + Duration::from_secs(61)));
    }
}
