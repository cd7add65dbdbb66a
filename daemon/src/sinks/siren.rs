//! The siren (or a relay to one): on when a red incident fires, escalates or a red reminder
//! comes, off when it clears or steps down — and never longer than `max_on` at a time, so a
//! siren nobody can reach does not wail for hours. It is an alert sink like the others, fed
//! through the outbox.

use crate::alert::{Alert, Audience, Event};
use crate::gpio::OutputPin;
use crate::sinks::Sink;
use gridwatch_rules::Severity;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type SharedPin = Arc<Mutex<Box<dyn OutputPin>>>;

pub struct SirenSink {
    pin: SharedPin,
    max_on: Duration,
    /// Bumped on every switch, so a stale auto-off timer does nothing.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for SirenSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SirenSink").field("max_on", &self.max_on).finish_non_exhaustive()
    }
}

fn set(pin: &SharedPin, on: bool) {
    pin.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set(on);
}

impl SirenSink {
    pub fn new(pin: Box<dyn OutputPin>, max_on: Duration) -> SirenSink {
        SirenSink { pin: Arc::new(Mutex::new(pin)), max_on, generation: Arc::default() }
    }

    fn switch(&self, on: bool) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        set(&self.pin, on);
        if on {
            let (pin, current, max_on) = (self.pin.clone(), self.generation.clone(), self.max_on);
            tokio::spawn(async move {
                tokio::time::sleep(max_on).await;
                if current.load(Ordering::SeqCst) == generation {
                    set(&pin, false);
                    tracing::warn!(max_on_secs = max_on.as_secs(), "siren off after its maximum on-time; the incident is still open");
                }
            });
        }
    }
}

/// Whether an alert should sound the siren (`Some(true)`), silence it (`Some(false)`), or
/// leave it as it is. Only grid (not device) alarms count.
pub fn wants_siren(alert: &Alert) -> Option<bool> {
    if alert.audience != Audience::Grid {
        return None;
    }
    let red = alert.severity == Severity::Danger;
    match alert.event {
        Event::Fired | Event::Changed | Event::Escalated | Event::Reminder if red => Some(true),
        Event::Changed if alert.previous_severity == Some(Severity::Danger) => Some(false),
        Event::Cleared if red => Some(false),
        _ => None,
    }
}

/// Three short blasts, to prove the wiring.
pub async fn test_pattern(pin: &mut dyn OutputPin) {
    for _ in 0..3 {
        pin.set(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        pin.set(false);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Sink for SirenSink {
    fn name(&self) -> String {
        "siren".into()
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        if let Some(on) = wants_siren(alert) {
            self.switch(on);
        }
        Ok(())
    }

    async fn finish(&mut self) {
        set(&self.pin, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::gpio::MemoryPin;

    #[tokio::test(start_paused = true)]
    async fn red_sounds_until_cleared_and_yellow_never() {
        let pin = MemoryPin::default();
        let mut siren = SirenSink::new(Box::new(pin.clone()), Duration::from_secs(300));
        let mut warning = sample_alert("fired", 2.1);
        warning.severity = gridwatch_rules::Severity::Warning;
        siren.deliver(&warning).await.unwrap();
        assert!(!pin.level(), "yellow does not sound");
        siren.deliver(&sample_alert("fired", 7.3)).await.unwrap();
        assert!(pin.level(), "red sounds");
        siren.deliver(&sample_alert("cleared", 6.0)).await.unwrap();
        assert!(!pin.level(), "cleared: quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn the_siren_stops_after_its_maximum_on_time_and_sounds_again_on_escalation() {
        let pin = MemoryPin::default();
        let mut siren = SirenSink::new(Box::new(pin.clone()), Duration::from_secs(300));
        siren.deliver(&sample_alert("fired", 7.3)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert!(pin.level());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!pin.level(), "five minutes at most");
        siren.deliver(&sample_alert("escalated", 7.3)).await.unwrap();
        assert!(pin.level(), "an escalation sounds it again");
        tokio::time::sleep(Duration::from_secs(200)).await;
        siren.deliver(&sample_alert("reminder", 7.3)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(pin.level(), "the earlier timer does not cut the newer sounding short");
    }

    #[test]
    fn device_alarms_and_other_colours_leave_the_siren_alone() {
        let mut device = sample_alert("fired", 7.3);
        device.audience = crate::alert::Audience::Installer;
        assert_eq!(wants_siren(&device), None);
        let mut down = sample_alert("changed", 5.0);
        down.severity = gridwatch_rules::Severity::Alarm;
        down.previous_severity = Some(gridwatch_rules::Severity::Danger);
        assert_eq!(wants_siren(&down), Some(false), "stepping down from red silences it");
    }
}
