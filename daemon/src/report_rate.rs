//! Boxes at yellow or above report faster (domain.md §1; GB 55018: on an abnormal change, raise
//! the sampling rate): while a grid-facing tilt rule fires at warning on a house, each tilt box
//! of that house (its building, or the box alone when it has none) is wanted every 10 minutes
//! at least, at alarm or danger every minute. A faster report shortens a sudden change's wait:
//! `tilt-sudden` fires on the second reading after a jump.
//!
//! How a box is asked depends on how it reports: a polled serial device is asked that often by
//! the daemon itself ([`ReportRates::every`]); a box on MQTT gets a retained command
//! `{"report_every_secs": N}` on its own topic when `[mqtt] report_rate_topic` is set (N its own
//! `interval_secs` again once the house is quiet), and its firmware decides. A box that reports
//! more often than asked is never slowed down by it.
//!
//! Invariants: only tilt boxes are asked, only about grid-facing tilt rules; a command goes out
//! when a house's wanted interval changes, never for a reading; what is wanted follows the
//! firing rules (fired and changed add or move one, cleared takes it away).

use crate::alert::{Alert, Audience, Event};
use crate::config::{MqttConfig, SensorConfig};
use gridwatch_rules::{SensorKind, Severity};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a box of a house at warning (yellow) is wanted, at least.
pub const AT_WARNING: Duration = Duration::from_secs(600);
/// How often at alarm or danger (orange, red).
pub const AT_ALARM: Duration = Duration::from_secs(60);

/// The interval wanted of a house at `severity`: none below warning.
fn wanted(severity: Severity) -> Option<Duration> {
    match severity {
        Severity::Alarm | Severity::Danger => Some(AT_ALARM),
        Severity::Warning => Some(AT_WARNING),
        Severity::Notice => None,
    }
}

/// A house's grid-facing tilt rules firing at warning or above: (rule, sensor) -> severity.
type Firing = BTreeMap<(String, String), Severity>;

/// A tilt box to ask: its id, site and own interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiltBox {
    pub sensor: Arc<str>,
    pub site: Arc<str>,
    pub interval: Duration,
}

/// One box's new interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChange {
    pub tilt_box: TiltBox,
    /// The interval asked now: faster while its house is at warning or above, its own again after.
    pub every: Duration,
}

/// The houses' firing tilt rules, and the boxes they ask to report faster.
#[derive(Debug, Default)]
pub struct ReportRates {
    /// Tilt box id -> its house.
    house_of: HashMap<Arc<str>, String>,
    /// House -> its tilt boxes.
    boxes: HashMap<String, Vec<TiltBox>>,
    /// House -> its rules firing at warning or above.
    firing: Mutex<HashMap<String, Firing>>,
    /// Where MQTT commands go, if `[mqtt] report_rate_topic` is set.
    commands: Option<mpsc::UnboundedSender<RateChange>>,
}

impl ReportRates {
    /// For the tilt boxes of `sensors`; `commands` takes each change for MQTT boxes.
    pub fn new(sensors: &[SensorConfig], commands: Option<mpsc::UnboundedSender<RateChange>>) -> ReportRates {
        let mut rates = ReportRates { commands, ..ReportRates::default() };
        for sensor in sensors.iter().filter(|s| s.kind == SensorKind::Tilt) {
            let house = match &sensor.place.building {
                Some(building) => format!("{}/{building}", sensor.place.site),
                None => format!("{}//{}", sensor.place.site, sensor.id),
            };
            rates.house_of.insert(sensor.id.clone(), house.clone());
            rates.boxes.entry(house).or_default().push(TiltBox { sensor: sensor.id.clone(), site: sensor.place.site.clone(), interval: sensor.interval });
        }
        rates
    }

    /// How often `sensor` is wanted now, when its house asks for more than its own interval.
    pub fn every(&self, sensor: &str) -> Option<Duration> {
        let house = self.house_of.get(sensor)?;
        let firing = self.firing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        firing.get(house)?.values().max().copied().and_then(wanted)
    }

    /// Follows a rule event; the boxes whose asked interval changed (each sent to the MQTT
    /// commands too).
    pub fn follow(&self, alert: &Alert) -> Vec<RateChange> {
        if alert.audience != Audience::Grid || alert.kind != "tilt" {
            return Vec::new();
        }
        let Some(house) = self.house_of.get(alert.sensor.as_str()) else { return Vec::new() };
        let (before, after) = {
            let mut firing = self.firing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let rules = firing.entry(house.clone()).or_default();
            let before = rules.values().max().copied().and_then(wanted);
            let key = (alert.rule.clone(), alert.sensor.clone());
            match alert.event {
                Event::Fired | Event::Changed if wanted(alert.severity).is_some() => {
                    rules.insert(key, alert.severity);
                }
                Event::Fired | Event::Changed | Event::Cleared => {
                    rules.remove(&key);
                }
                _ => {}
            }
            (before, rules.values().max().copied().and_then(wanted))
        };
        if before == after {
            return Vec::new();
        }
        let changes: Vec<RateChange> = self.boxes[house]
            .iter()
            .map(|tilt_box| RateChange { tilt_box: tilt_box.clone(), every: after.map_or(tilt_box.interval, |wanted| wanted.min(tilt_box.interval)) })
            .collect();
        for change in &changes {
            tracing::info!(sensor = %change.tilt_box.sensor, every_secs = change.every.as_secs(), "a tilt box is asked to report at this interval");
            if let Some(commands) = &self.commands {
                let _ = commands.send(change.clone());
            }
        }
        changes
    }
}

/// The topic of `tilt_box`'s command: `template` with `{site}` and `{sensor}` filled in.
pub fn command_topic(template: &str, tilt_box: &TiltBox) -> String {
    template.replace("{site}", &tilt_box.site).replace("{sensor}", &tilt_box.sensor)
}

/// Publishes each change as a retained command on its box's topic, over a connection of its own
/// (it connects in the background and keeps reconnecting; commands wait meanwhile).
pub fn spawn_commands(config: &MqttConfig, template: String, mut changes: mpsc::UnboundedReceiver<RateChange>) -> tokio::task::JoinHandle<()> {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(crate::sources::mqtt::options(config, "report-rate"), 64);
    tokio::spawn(async move {
        let connection = tokio::spawn(async move {
            let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => backoff.reset(),
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "report-rate MQTT connection failed");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        while let Some(first) = changes.recv().await {
            // What queued up meanwhile: only each box's latest goes out (one reading that clears
            // two rules asked 600 and then 3600 within a second).
            let mut latest: Vec<RateChange> = vec![first];
            while let Ok(change) = changes.try_recv() {
                latest.retain(|queued| queued.tilt_box != change.tilt_box);
                latest.push(change);
            }
            for change in latest {
                let topic = command_topic(&template, &change.tilt_box);
                let payload = serde_json::json!({ "report_every_secs": change.every.as_secs() }).to_string();
                if let Err(error) = client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, true, payload).await {
                    tracing::error!(topic = %topic, error = %error, "report-rate command not published");
                }
            }
        }
        let _ = client.disconnect().await;
        let _ = connection.await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    fn tilt(id: &str, building: Option<&str>, interval_secs: u64) -> SensorConfig {
        let mut sensor = SensorConfig::test_tilt(id, "north-lane");
        sensor.place = Arc::new(crate::config::Place { building: building.map(Into::into), ..(*sensor.place).clone() });
        sensor.interval = Duration::from_secs(interval_secs);
        sensor
    }

    fn event(rule: &str, sensor: &str, event: Event, severity: Severity) -> Alert {
        let mut alert = sample_alert("fired", 1.0);
        (alert.rule, alert.sensor, alert.event, alert.severity, alert.kind, alert.audience) =
            (rule.into(), sensor.into(), event, severity, "tilt".into(), Audience::Grid);
        alert
    }

    #[test]
    fn a_house_at_yellow_is_asked_every_ten_minutes_at_orange_every_minute_and_its_own_interval_after() {
        let (tx, mut sent) = mpsc::unbounded_channel();
        let rates = ReportRates::new(&[tilt("b7-1", Some("B7"), 3600), tilt("b7-2", Some("B7"), 300), tilt("b9-1", Some("B9"), 3600)], Some(tx));
        let every = |changes: Vec<RateChange>| changes.into_iter().map(|c| (c.tilt_box.sensor.to_string(), c.every.as_secs())).collect::<Vec<_>>();
        assert_eq!(
            every(rates.follow(&event("tilt-change", "b7-1", Event::Fired, Severity::Warning))),
            [("b7-1".into(), 600), ("b7-2".into(), 300)],
            "the whole house; a box reporting more often is not slowed down"
        );
        assert_eq!(rates.every("b7-2"), Some(AT_WARNING));
        assert_eq!(rates.every("b9-1"), None, "another house is not asked");
        assert!(rates.follow(&event("tilt-creep-day", "b7-2", Event::Fired, Severity::Warning)).is_empty(), "no change, no command");
        assert_eq!(every(rates.follow(&event("tilt-sudden", "b7-1", Event::Fired, Severity::Danger))), [("b7-1".into(), 60), ("b7-2".into(), 60)]);
        assert_eq!(every(rates.follow(&event("tilt-sudden", "b7-1", Event::Cleared, Severity::Danger))), [("b7-1".into(), 600), ("b7-2".into(), 300)]);
        assert!(rates.follow(&event("tilt-change", "b7-1", Event::Cleared, Severity::Warning)).is_empty(), "tilt-creep-day still fires");
        assert_eq!(every(rates.follow(&event("tilt-creep-day", "b7-2", Event::Changed, Severity::Notice))), [("b7-1".into(), 3600), ("b7-2".into(), 300)]);
        let mut device_alarm = event("tilt-no-data", "b9-1", Event::Fired, Severity::Alarm);
        device_alarm.audience = Audience::Installer;
        assert!(rates.follow(&device_alarm).is_empty(), "a device alarm asks nothing");
        let mut commands = Vec::new();
        while let Ok(change) = sent.try_recv() {
            commands.push(command_topic("gridwatch/{site}/{sensor}/set", &change.tilt_box));
        }
        assert_eq!(commands.len(), 8, "each change once for each box of the house: {commands:?}");
        assert_eq!(commands[0], "gridwatch/north-lane/b7-1/set");
    }
}
