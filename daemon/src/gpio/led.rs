//! The status LED, readable from across the room: a slow heartbeat while all is well, a fast
//! blink while the box is degraded, steady on while a red incident is open.

use super::OutputPin;
use std::time::Duration;

/// How often the LED is updated.
pub const STEP: Duration = Duration::from_millis(250);

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Degraded,
    RedOpen,
}

/// The LED's level at step `n` (every [`STEP`]): heartbeat = one short flash every 2 s;
/// degraded = on/off every step; red = always on.
pub fn level(status: Status, n: u64) -> bool {
    match status {
        Status::Ok => n % 8 == 0,
        Status::Degraded => n % 2 == 0,
        Status::RedOpen => true,
    }
}

/// Drives the LED from `status()` until `shutdown`; off at the end.
pub async fn run(mut pin: Box<dyn OutputPin>, status: impl Fn() -> Status + Send, shutdown: tokio_util::sync::CancellationToken) {
    let mut step = tokio::time::interval(STEP);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = step.tick() => {
                pin.set(level(status(), n));
                n = n.wrapping_add(1);
            }
        }
    }
    pin.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(status: Status) -> String {
        (0..8).map(|n| if level(status, n) { '#' } else { '.' }).collect()
    }

    #[test]
    fn each_status_has_its_own_pattern() {
        assert_eq!(pattern(Status::Ok), "#.......");
        assert_eq!(pattern(Status::Degraded), "#.#.#.#.");
        assert_eq!(pattern(Status::RedOpen), "########");
    }
}
