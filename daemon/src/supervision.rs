//! Running under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once the store, rules,
//! sinks, pipeline and sources are up; then `WATCHDOG=1` at half the watchdog period — but only
//! while the pipeline is making progress. The pipeline beats a [`Heartbeat`] on every tick and
//! sample; if it freezes (a deadlock, a blocked queue), the petting stops and systemd restarts
//! the daemon even though other tasks still run. Without `NOTIFY_SOCKET` all of this is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How stale the heartbeat may be before the watchdog is no longer petted (the pipeline ticks
/// every second).
const STALE: Duration = Duration::from_secs(5);

/// The pipeline's proof of life: milliseconds since start at its last beat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Tells systemd the daemon is ready.
pub fn ready() {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %error, "could not tell systemd we are ready");
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pets the systemd watchdog while the pipeline's heartbeat is fresh, until `shutdown`.
pub async fn watchdog(heartbeat: Heartbeat, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else { return };
    let mut every = tokio::time::interval((period / 2).max(Duration::from_millis(100)));
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if heartbeat.age() <= STALE.min(period) {
            warned = false;
            if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(error = %error, "could not pet the systemd watchdog");
            }
        } else if !warned {
            warned = true;
            tracing::error!(stalled_ms = heartbeat.age().as_millis() as u64, "the pipeline is not making progress; letting the systemd watchdog restart us");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_makes_the_heartbeat_fresh() {
        let heartbeat = Heartbeat { start: Instant::now() - Duration::from_secs(10), last_ms: Arc::new(AtomicU64::new(0)) };
        assert!(heartbeat.age() >= Duration::from_secs(10));
        heartbeat.beat();
        assert!(heartbeat.age() < Duration::from_secs(1));
    }
}
