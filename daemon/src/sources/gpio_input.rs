//! Digital inputs as sensors: a tilt switch or a door contact on a GPIO pin becomes readings of
//! one field (1 = closed/high, 0 = open/low) for a sensor of the inventory. A level must hold for
//! the debounce time before it counts; a reading goes out on every change and, unchanged, once
//! per the sensor's report interval, so no-data rules keep working.

use crate::gpio::InputPin;
use std::time::Duration;

/// How often inputs are sampled.
pub const POLL: Duration = Duration::from_millis(10);

/// Debounces one input sampled every [`POLL`].
#[derive(Debug, Clone)]
pub struct Debouncer {
    /// Steps a new level must hold.
    hold: u32,
    stable: Option<bool>,
    candidate: bool,
    seen: u32,
}

impl Debouncer {
    pub fn new(debounce: Duration) -> Debouncer {
        let hold = u32::try_from(debounce.as_millis() / POLL.as_millis().max(1)).unwrap_or(u32::MAX).max(1);
        Debouncer { hold, stable: None, candidate: false, seen: 0 }
    }

    /// Feeds one sample; returns the new stable level when it changed.
    pub fn sample(&mut self, high: bool) -> Option<bool> {
        if high == self.candidate {
            self.seen = self.seen.saturating_add(1);
        } else {
            self.candidate = high;
            self.seen = 1;
        }
        if self.seen >= self.hold && self.stable != Some(high) {
            self.stable = Some(high);
            return Some(high);
        }
        None
    }
}

/// Reads `pin` until `shutdown`, calling `emit(level)` on every debounced change and at least
/// every `interval`.
pub async fn run(mut pin: Box<dyn InputPin>, debounce: Duration, interval: Duration, emit: impl Fn(bool), shutdown: tokio_util::sync::CancellationToken) {
    let mut debouncer = Debouncer::new(debounce);
    let mut poll = tokio::time::interval(POLL);
    let mut last_emit = tokio::time::Instant::now();
    let mut level = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {
                if let Some(changed) = debouncer.sample(pin.is_high()) {
                    level = Some(changed);
                    emit(changed);
                    last_emit = tokio::time::Instant::now();
                } else if let Some(level) = level.filter(|_| last_emit.elapsed() >= interval) {
                    emit(level);
                    last_emit = tokio::time::Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_bounce_gives_one_change() {
        let mut debouncer = Debouncer::new(Duration::from_millis(50));
        let bouncing = [true, false, true, true, false, true, true, true, true, true, true, true];
        let changes: Vec<bool> = bouncing.iter().filter_map(|&level| debouncer.sample(level)).collect();
        assert_eq!(changes, vec![true], "one change once it held 50 ms");
        let changes: Vec<bool> = [false, true, false, false, false, false, false].iter().filter_map(|&level| debouncer.sample(level)).collect();
        assert_eq!(changes, vec![false]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_input_still_reports_every_interval() {
        let pin = crate::gpio::MemoryPin::default();
        let mut high = pin.clone();
        crate::gpio::OutputPin::set(&mut high, true);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(
            Box::new(pin),
            Duration::from_millis(50),
            Duration::from_secs(60),
            move |level| record.lock().unwrap().push(level),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(125)).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![true, true, true], "the change, then once a minute");
    }
}
