//! Alerts: a rule event made readable (what, where, how bad, since when) and sent to every
//! configured sink.
//!
//! Flow: the pipeline sends [`Alert`]s to [`run_dispatcher`], which applies each to its
//! incident and writes it to the store's journal with one pending delivery per channel; each
//! channel runs in its own task ([`channel::spawn_sink`]) and drains its own pending deliveries
//! from the store, so a slow webhook never delays the console, the MQTT topic, the journal or
//! ingestion — its alerts wait on disk.
//!
//! Alerts are never dropped: the pipeline waits when the dispatcher's queue is full, and the
//! dispatcher waits only for the store. A sink that gives up on an alert after its retries
//! counts it in `alert_delivery_failures`.

use crate::clock::rfc3339;
use crate::config::SensorConfig;
use crate::sinks::text;
use gridwatch_rules::rule::Check;
use gridwatch_rules::{EventKind, Rule, RuleEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One alert event as grid workers, webhooks and the journal see it. This is the JSON body of
/// the webhook and of MQTT alert messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `fired`, `changed` (severity moved) or `cleared`.
    pub event: String,
    pub rule: String,
    /// What is wrong, in words.
    pub title: String,
    /// notice | warning | alarm | danger (for `cleared`, the severity it had).
    pub severity: String,
    /// blue | yellow | orange | red.
    pub colour: String,
    /// For `changed`: the severity before.
    pub previous_severity: Option<String>,
    /// `grid` for grid workers; `installer` for device alarms (silent box, stuck value, out of
    /// range).
    pub audience: String,
    /// The sensor; for a rule with `agree`, the building's first sensor, which names the
    /// building's incident.
    pub sensor: String,
    /// For a rule with `agree`: how many of the building's sensors agree ("2 of 3 sensors").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    pub kind: String,
    pub site: String,
    pub building: Option<String>,
    /// The site's and building's display names (`[names]`), when the configuration gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_name: Option<String>,
    pub grid: Option<String>,
    /// The value that decided the event, in `unit`.
    pub value: f64,
    pub unit: String,
    /// What decided the event, e.g. `hypot(x, y) above 0.4011` when fired,
    /// `hypot(x, y) back below 0.37` when cleared.
    pub condition: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    pub at_ms: i64,
    /// When the breach began (RFC 3339, UTC).
    pub since: String,
    /// The rule's message rendered per language (`en`, `zh`); at least `en` (the title when the
    /// rule has no message).
    pub messages: BTreeMap<String, String>,
    /// The incident this event belongs to (`gridwatch incidents show <id>`).
    #[serde(default)]
    pub incident_id: Option<i64>,
    /// This event's id in the box's journal. Every copy and every re-send of one event (after a
    /// crash, on a failover channel) carries the same id, so a receiver that sees an id twice
    /// drops the second; ids grow, so an incident's events sort by it. Absent only on events
    /// that were never journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    /// The signed link to the incident's page, when worker links are configured (bound to
    /// nobody; on a member's own channel, that member's link).
    #[serde(default)]
    pub link: Option<String>,
    /// Each named recipient's own signed link (name -> link): what they do through it is
    /// recorded as theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_links: BTreeMap<String, String>,
    /// Who this message is for, by name (the people on duty, and those escalated to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Their phone numbers, for @-mentions in group robots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// A "no data" event (a silent sensor): held back while the sensor's bus is down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_data: bool,
    /// Where the sensor is, `[latitude, longitude]`, when the inventory says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<[f64; 2]>,
}

impl Alert {
    /// The alert of a rule event; `time_zone` is where people read the messages' times, `places`
    /// the display names of sites and buildings.
    pub fn new(event: &RuleEvent, rule: &Rule, sensor: &SensorConfig, time_zone: chrono_tz::Tz, places: &text::Places) -> Alert {
        Alert {
            event: event.kind.as_str().into(),
            rule: rule.id.clone(),
            title: rule.title.clone(),
            severity: event.severity.as_str().into(),
            colour: event.severity.colour().into(),
            previous_severity: event.previous.map(|p| p.as_str().into()),
            audience: if rule.device { "installer" } else { "grid" }.into(),
            sensor: sensor.id.to_string(),
            agreement: event.agreement.map(|a| format!("{} of {} sensors", a.agreeing, a.of)),
            kind: sensor.kind.as_str().into(),
            site: sensor.place.site.to_string(),
            building: sensor.place.building.as_deref().map(Into::into),
            site_name: places.site(&sensor.place.site).map(Into::into),
            building_name: sensor.place.building.as_deref().and_then(|b| places.building(&sensor.place.site, b)).map(Into::into),
            grid: sensor.place.grid.as_deref().map(Into::into),
            value: event.value,
            unit: rule.unit.clone(),
            condition: condition(event, rule),
            at: rfc3339(event.at),
            at_ms: event.at,
            since: rfc3339(event.since),
            messages: messages(event, rule, sensor, time_zone, places),
            incident_id: None,
            event_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: matches!(rule.check_of(event.variant), Check::NoData { .. }),
            location: sensor.location,
        }
    }

    /// A device alarm the daemon raises itself (not from a rule): for installers, about
    /// `subject` (a bus, the daemon), with the English message `condition` until set otherwise.
    #[allow(clippy::too_many_arguments)] // each is one field of the alarm
    pub fn device(rule: &str, subject: &str, site: &str, event: &str, severity: &str, title: &str, condition: String, now_ms: i64) -> Alert {
        let at = rfc3339(now_ms);
        let colour = severity.parse::<gridwatch_rules::Severity>().map_or("yellow", |s| s.colour());
        Alert {
            event: event.into(),
            rule: rule.into(),
            title: title.into(),
            severity: severity.into(),
            colour: colour.into(),
            previous_severity: None,
            audience: "installer".into(),
            sensor: subject.into(),
            agreement: None,
            kind: "gridwatch".into(),
            site: site.into(),
            building: None,
            site_name: None,
            building_name: None,
            grid: None,
            value: 1.0,
            unit: String::new(),
            messages: [("en".to_string(), condition.clone())].into_iter().collect(),
            condition,
            at: at.clone(),
            at_ms: now_ms,
            since: at,
            incident_id: None,
            event_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: false,
            location: None,
        }
    }

    /// The English message (the title when the rule has none).
    pub fn message(&self) -> &str {
        self.messages.get("en").map_or(self.title.as_str(), String::as_str)
    }

    /// "house-07 at north-lane, building B7, grid-3".
    pub fn place(&self) -> String {
        let mut place = format!("{} at {}", self.sensor, self.site);
        if let Some(building) = &self.building {
            place.push_str(&format!(", building {building}"));
        }
        if let Some(grid) = &self.grid {
            place.push_str(&format!(", {grid}"));
        }
        place
    }
}

/// The rule's message templates filled in for this event, per language.
/// Values are rounded by unit ([`text::value`]); `{since}` is a local time.
fn messages(event: &RuleEvent, rule: &Rule, sensor: &SensorConfig, time_zone: chrono_tz::Tz, places: &text::Places) -> BTreeMap<String, String> {
    let mut rendered: BTreeMap<String, String> = rule
        .messages
        .iter()
        .map(|(language, template)| {
            let text = template.render(|name| match name {
                "sensor" => Some(match event.agreement {
                    Some(a) if language == "zh" => format!("{}个传感器中{}个一致", a.of, a.agreeing),
                    Some(a) => format!("{} of {} sensors", a.agreeing, a.of),
                    None => sensor.id.to_string(),
                }),
                "site" => Some(places.site(&sensor.place.site).unwrap_or(&sensor.place.site).to_string()),
                "building" => sensor.place.building.as_deref().map(|b| places.building(&sensor.place.site, b).unwrap_or(b).to_string()),
                "grid" => sensor.place.grid.as_deref().map(Into::into),
                "value" => Some(text::rounded(event.value, &rule.unit)),
                "unit" => Some(rule.unit.clone()),
                "severity" if language == "zh" => Some(event.severity.zh().to_string()),
                "severity" => Some(event.severity.as_str().to_string()),
                "since" => Some(crate::local_time::short(event.since, time_zone, language == "zh")),
                _ => None,
            });
            (language.clone(), text)
        })
        .collect();
    rendered.entry("en".into()).or_insert_with(|| rule.title.clone());
    rendered
}

/// What decided the event, in words: "permille(hypot(x, y)) from baseline above 7" when it
/// fires, "… back below 6.5" when it clears, "no data for 7200 s" for a silent box.
fn condition(event: &RuleEvent, rule: &Rule) -> String {
    match rule.check_of(event.variant) {
        Check::Ladder(_) => {
            let Some(level) = rule.level(event.variant, event.severity) else { return rule.value_label() };
            let condition = match event.kind {
                EventKind::Cleared => format!("{} {}", rule.value_label(), level.bound.describe_clear()),
                EventKind::Fired | EventKind::Changed => format!("{} {}", rule.value_label(), level.bound.describe()),
            };
            match event.agreement {
                Some(a) => format!("{condition} on {} of {} sensors of the building", a.agreeing, a.of),
                None => condition,
            }
        }
        Check::NoData { .. } => match event.kind {
            EventKind::Cleared => format!("heard again after {} s", event.value),
            _ => format!("no data for {} s", event.value),
        },
        Check::FlatLine { samples, lasting_ms, .. } => match event.kind {
            EventKind::Cleared => format!("{} changes again", rule.value_label()),
            _ => format!("{}: {}", rule.value_label(), gridwatch_rules::rule::describe_flat_line(*samples, *lasting_ms)),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::dispatch::{run_dispatcher, DispatcherSetup};
    use crate::metrics::Metrics;
    use crate::sinks::{channel, robot, Sink, SinkContext};
    use crate::store::Store;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    /// A representative alert for sink and store tests.
    pub fn sample_alert(event: &str, value: f64) -> Alert {
        Alert {
            event: event.into(),
            rule: "tilt-danger".into(),
            title: "Wall tilt past 7‰ (red)".into(),
            severity: "danger".into(),
            colour: "red".into(),
            previous_severity: None,
            audience: "grid".into(),
            sensor: "house-07".into(),
            agreement: None,
            kind: "tilt".into(),
            site: "north-lane".into(),
            building: Some("B7".into()),
            site_name: None,
            building_name: None,
            grid: Some("grid-3".into()),
            value,
            unit: "°".into(),
            condition: "hypot(x, y) above 0.4011".into(),
            at: rfc3339(1_795_392_000_000),
            at_ms: 1_795_392_000_000,
            since: rfc3339(1_795_391_940_000),
            messages: BTreeMap::from([("en".to_string(), "north-lane B7 (house-07): wall tilt changed 7.31‰ since installation — danger".to_string())]),
            incident_id: None,
            event_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: false,
            location: None,
        }
    }

    /// What a channel task needs, on the system clock, already told to finish once its queue is
    /// empty.
    fn finishing(store: &Store, metrics: &Arc<Metrics>) -> SinkContext {
        let closing = tokio_util::sync::CancellationToken::new();
        closing.cancel();
        SinkContext { metrics: metrics.clone(), store: store.clone(), clock: crate::clock::Clock::System, closing }
    }

    #[test]
    fn messages_are_rendered_in_each_language() {
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let rule = rules.rules.iter().find(|r| r.id == "tilt-danger").unwrap();
        let sensor = crate::commands::demo::sensors().remove(2);
        let event = RuleEvent {
            rule: gridwatch_rules::RuleId(0),
            subject: gridwatch_rules::SubjectId(2),
            kind: EventKind::Fired,
            severity: gridwatch_rules::Severity::Danger,
            previous: None,
            variant: None,
            value: 7.3126,
            at: 1_795_392_000_000,
            since: 1_795_391_940_000,
            agreement: None,
        };
        let alert = Alert::new(&event, rule, &sensor, crate::local_time::DEFAULT, &text::Places::default());
        assert_eq!(alert.messages["en"], "east-yard B2 (house-03): wall tilt changed 7.3‰ since installation — danger");
        assert_eq!(alert.messages["zh"], "east-yardB2（house-03）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警");
        assert_eq!(alert.message(), alert.messages["en"]);
    }

    /// Records the size of each delivery; rate-limited like a group robot.
    struct CountingSink {
        calls: Arc<std::sync::Mutex<Vec<usize>>>,
        limit: robot::RateLimit,
    }

    impl Sink for CountingSink {
        fn name(&self) -> String {
            "robot".into()
        }

        fn wait(&self) -> std::time::Duration {
            self.limit.wait()
        }

        async fn deliver(&mut self, _alert: &Alert) -> anyhow::Result<()> {
            self.limit.record();
            self.calls.lock().unwrap().push(1);
            Ok(())
        }

        async fn deliver_many(&mut self, alerts: &[&Alert]) -> anyhow::Result<()> {
            self.limit.record();
            self.calls.lock().unwrap().push(alerts.len());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_past_the_rate_limit_goes_out_as_one_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = CountingSink { calls: calls.clone(), limit: robot::RateLimit::new(std::time::Duration::from_secs(60)) };
        let metrics = Arc::new(Metrics::new());
        for _ in 0..25 {
            store.record_alert(&sample_alert("fired", 0.5), &["robot".to_string()]).await.unwrap();
        }
        let (_queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
        task.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 21, "{calls:?}");
        assert!(calls[..20].iter().all(|&n| n == 1));
        assert_eq!(calls[20], 5, "the five that waited for the limit went out together");
        assert_eq!(metrics.alerts_delivered.get_or_create(&Metrics::sink("robot")).get(), 25);
        assert!(store.pending_delivery_counts().unwrap().is_empty(), "the channel's queue is drained");
    }

    /// A channel that takes `delay` per alert and records the events it got, in order.
    struct SlowSink {
        name: &'static str,
        delay: std::time::Duration,
        got: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Sink for SlowSink {
        fn name(&self) -> String {
            self.name.into()
        }

        async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
            tokio::time::sleep(self.delay).await;
            self.got.lock().unwrap().push(format!("{} {}", alert.sensor, alert.event));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slow_channel_delays_neither_the_dispatcher_nor_the_other_channels() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let context = SinkContext { closing: tokio_util::sync::CancellationToken::new(), ..finishing(&store, &metrics) };
        let (slow_got, fast_got) = (Arc::default(), Arc::default());
        let (slow, _slow_task) =
            channel::spawn_sink(SlowSink { name: "slow", delay: std::time::Duration::from_secs(30), got: slow_got }, context.clone(), None);
        let (fast, _fast_task) = channel::spawn_sink(SlowSink { name: "fast", delay: std::time::Duration::ZERO, got: Arc::clone(&fast_got) }, context, None);
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let setup = DispatcherSetup {
            store: store.clone(),
            silences: Vec::new(),
            metrics,
            flap_window_ms: 0,
            group_window_ms: 0,
            links: None,
            dispatch: crate::dispatch::Dispatch::default(),
            clock: crate::clock::Clock::System,
            handoffs,
            buses: None,
            judged: None,
        };
        // A queue of one: had the dispatcher waited for the slow channel, the sends below would too.
        let (alerts, received) = mpsc::channel(1);
        tokio::spawn(run_dispatcher(received, vec![slow, fast], setup));
        let sensors: Vec<String> = (0..300).map(|i| format!("house-{i:03}")).collect();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            for sensor in &sensors {
                let mut alert = sample_alert("fired", 7.3);
                alert.sensor = sensor.clone();
                alerts.send(alert).await.unwrap();
            }
        })
        .await;
        assert!(sent.is_ok(), "the dispatcher kept taking alerts");
        let all_there = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while fast_got.lock().unwrap().len() < sensors.len() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(all_there.is_ok(), "the fast channel got {} of {}", fast_got.lock().unwrap().len(), sensors.len());
        assert_eq!(fast_got.lock().unwrap()[0], "house-000 fired", "in journal order");
        assert_eq!(store.pending_delivery_counts().unwrap().get("slow"), Some(&(sensors.len() as u64)), "the slow channel's alerts wait in the store");
    }

    #[tokio::test]
    async fn a_grouped_alarm_s_clear_waits_for_its_fired_on_every_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let context = SinkContext { closing: tokio_util::sync::CancellationToken::new(), ..finishing(&store, &metrics) };
        let got: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (queue, _task) = channel::spawn_sink(SlowSink { name: "office", delay: std::time::Duration::ZERO, got: got.clone() }, context, None);
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let setup = DispatcherSetup {
            store: store.clone(),
            silences: Vec::new(),
            metrics,
            flap_window_ms: 0,
            group_window_ms: 1500,
            links: None,
            dispatch: crate::dispatch::Dispatch::default(),
            clock: crate::clock::Clock::System,
            handoffs,
            buses: None,
            judged: None,
        };
        let (alerts, received) = mpsc::channel(8);
        tokio::spawn(run_dispatcher(received, vec![queue], setup));
        // house-07 opens B7's window; house-08's alarm waits for it — and so does its clear.
        for (sensor, event) in [("house-07", "fired"), ("house-08", "fired"), ("house-08", "cleared")] {
            let mut alert = sample_alert(event, 7.3);
            alert.sensor = sensor.into();
            alerts.send(alert).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(got.lock().unwrap().clone(), vec!["house-07 fired"], "the clear did not overtake its fired");
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert_eq!(got.lock().unwrap().clone(), vec!["house-07 fired", "house-08 fired", "house-08 cleared"]);
    }

    #[test]
    fn place_names_site_building_and_grid() {
        assert_eq!(sample_alert("fired", 0.5).place(), "house-07 at north-lane, building B7, grid-3");
    }

    #[test]
    fn alert_json_carries_what_a_receiver_needs() {
        let json = serde_json::to_value(sample_alert("fired", 0.5)).unwrap();
        for key in ["event", "rule", "title", "severity", "sensor", "site", "value", "unit", "at", "since"] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["event"], "fired");
    }

    #[tokio::test]
    async fn quiet_hours_hold_blue_until_morning_and_send_it_as_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = CountingSink { calls: calls.clone(), limit: robot::RateLimit::new(std::time::Duration::from_secs(60)) };
        let metrics = Arc::new(Metrics::new());
        let roster = "[deferral]\nquiet_from = \"22:00\"\nquiet_to = \"22:02\"\n";
        let dispatch = crate::dispatch::Dispatch::parse("roster.toml", roster).unwrap();
        // 22:00:20 China time, a minute a second: the quiet hours end 1.7 s from now.
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T22:00:20+08:00").unwrap().timestamp_millis();
        let clock = crate::clock::Clock::Accelerated { start, started: std::time::Instant::now(), speed: 60.0, synchronized: true };
        let context = SinkContext { closing: tokio_util::sync::CancellationToken::new(), clock, ..finishing(&store, &metrics) };
        let (queue, _task) = channel::spawn_sink(sink, context, None);
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let setup = DispatcherSetup {
            store: store.clone(),
            silences: Vec::new(),
            metrics,
            flap_window_ms: 0,
            group_window_ms: 0,
            links: None,
            dispatch,
            clock,
            handoffs,
            buses: None,
            judged: None,
        };
        let (alerts, received) = mpsc::channel(8);
        tokio::spawn(run_dispatcher(received, vec![queue], setup));

        for sensor in ["house-01", "house-02", "house-03"] {
            let mut blue = sample_alert("fired", 0.1);
            (blue.severity, blue.colour, blue.sensor) = ("notice".into(), "blue".into(), sensor.into());
            alerts.send(blue).await.unwrap();
        }
        alerts.send(sample_alert("fired", 7.3)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(calls.lock().unwrap().clone(), vec![1], "red at once; blue waits for the morning");
        assert_eq!(store.pending_delivery_counts().unwrap().get("robot"), Some(&3), "the three wait in the outbox");

        let morning = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while calls.lock().unwrap().len() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(morning.is_ok(), "{:?}", calls.lock().unwrap());
        assert_eq!(calls.lock().unwrap().clone(), vec![1, 3], "then all three blue ones as one message");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(store.pending_delivery_counts().unwrap().get("robot"), None, "all delivered");
    }

    #[tokio::test]
    async fn a_houses_first_alarm_goes_at_once_and_the_rest_of_the_house_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = CountingSink { calls: calls.clone(), limit: robot::RateLimit::new(std::time::Duration::from_secs(60)) };
        let metrics = Arc::new(Metrics::new());
        let context = SinkContext { closing: tokio_util::sync::CancellationToken::new(), ..finishing(&store, &metrics) };
        let (queue, _task) = channel::spawn_sink(sink, context, None);
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let dispatch = crate::dispatch::Dispatch::default();
        let clock = crate::clock::Clock::System;
        let setup = DispatcherSetup {
            store: store.clone(),
            silences: Vec::new(),
            metrics,
            flap_window_ms: 0,
            group_window_ms: 1500,
            links: None,
            dispatch,
            clock,
            handoffs,
            buses: None,
            judged: None,
        };
        let (alerts, received) = mpsc::channel(8);
        tokio::spawn(run_dispatcher(received, vec![queue], setup));

        for sensor in ["house-07", "house-08", "house-09"] {
            let mut alert = sample_alert("fired", 7.3);
            alert.sensor = sensor.into();
            alerts.send(alert).await.unwrap();
        }
        let mut other_house = sample_alert("fired", 7.3);
        (other_house.sensor, other_house.building) = ("house-21".into(), Some("B9".into()));
        alerts.send(other_house).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(calls.lock().unwrap().clone(), vec![1, 1], "each house's first alarm at once");
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert_eq!(calls.lock().unwrap().clone(), vec![1, 1, 2], "then B7's other two sensors as one message");
        assert_eq!(store.incidents(false).unwrap().len(), 4, "still one incident per sensor");
    }
}
