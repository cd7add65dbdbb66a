//! Alerts: a rule event made readable (what, where, how bad, since when) and sent to every
//! configured sink.
//!
//! Flow: the pipeline sends [`Alert`]s to [`run_dispatcher`], which writes each one to the
//! store's journal first and then hands it to every sink's own queue. Each sink runs in its own
//! task ([`spawn_sink`]) so a slow webhook never delays the console or the MQTT topic.
//!
//! Queues here are bounded and *block* when full: alerts are never dropped. A sink that gives
//! up on an alert after its retries counts it in `alert_delivery_failures`.

pub mod console;
pub mod dingtalk;
pub mod mqtt;
pub mod robot;
pub mod sms;
pub mod webhook;
pub mod wecom;

use crate::clock::rfc3339;
use crate::config::SensorConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use gridwatch_rules::rule::Check;
use gridwatch_rules::{EventKind, Rule, RuleEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Queue length in front of each sink.
const SINK_QUEUE: usize = 1024;

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
    pub fn new(event: &RuleEvent, rule: &Rule, sensor: &SensorConfig) -> Alert {
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
            grid: sensor.place.grid.as_deref().map(Into::into),
            value: event.value,
            unit: rule.unit.clone(),
            condition: condition(event, rule),
            at: rfc3339(event.at),
            at_ms: event.at,
            since: rfc3339(event.since),
            messages: messages(event, rule, sensor),
            incident_id: None,
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
            grid: None,
            value: 1.0,
            unit: String::new(),
            messages: [("en".to_string(), condition.clone())].into_iter().collect(),
            condition,
            at: at.clone(),
            at_ms: now_ms,
            since: at,
            incident_id: None,
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
fn messages(event: &RuleEvent, rule: &Rule, sensor: &SensorConfig) -> BTreeMap<String, String> {
    let mut rendered: BTreeMap<String, String> = rule
        .messages
        .iter()
        .map(|(language, template)| {
            let text = template.render(|name| match name {
                "sensor" => Some(match event.agreement {
                    Some(a) => format!("{} of {} sensors", a.agreeing, a.of),
                    None => sensor.id.to_string(),
                }),
                "site" => Some(sensor.place.site.to_string()),
                "building" => sensor.place.building.as_deref().map(Into::into),
                "grid" => sensor.place.grid.as_deref().map(Into::into),
                "value" => Some(format!("{:.2}", event.value)),
                "unit" => Some(rule.unit.clone()),
                "severity" if language == "zh" => Some(event.severity.zh().to_string()),
                "severity" => Some(event.severity.as_str().to_string()),
                "since" => Some(rfc3339(event.since)),
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

/// Something that delivers alerts somewhere.
pub trait Sink: Send + 'static {
    /// Label in logs and metrics.
    fn name(&self) -> String;
    /// Delivers one alert, retrying as the sink sees fit; an error means it gave up.
    fn deliver(&mut self, alert: &Alert) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// How long until the sink may send again (a rate limit); zero when it may send now.
    fn wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Delivers alerts that queued up behind a rate limit as one message (a digest). By
    /// default, one by one.
    fn deliver_many(&mut self, alerts: &[&Alert]) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            for alert in alerts {
                self.deliver(alert).await?;
            }
            Ok(())
        }
    }

    /// Called once the queue is closed and drained.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// One alert on its way to one sink; `alert_id` is its journal row (none if journaling failed).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub alert_id: Option<i64>,
    pub alert: Arc<Alert>,
    /// How many deliveries, this one first, go out as one message (a digest of deferred
    /// alerts); 1 for an alert on its own.
    pub group: usize,
}

impl Delivery {
    pub fn single(alert_id: Option<i64>, alert: Arc<Alert>) -> Delivery {
        Delivery { alert_id, alert, group: 1 }
    }
}

/// A sink's queue, by the sink's name.
#[derive(Debug, Clone)]
pub struct SinkQueue {
    pub name: String,
    pub queue: mpsc::Sender<Delivery>,
}

/// Most alerts folded into one digest.
const DIGEST_MAX: usize = 50;

/// Where a sink's alerts go when it fails or is throttled too long (`[alerts.failover]`).
#[derive(Debug, Clone)]
pub struct Failover {
    /// The channel that takes over.
    pub to: String,
    /// A rate-limit wait longer than this hands the alerts over instead of waiting.
    pub after: std::time::Duration,
    /// To the dispatcher, which journals the new delivery and queues it. Unbounded: the
    /// dispatcher may itself be waiting for room in this sink's queue.
    pub handoffs: mpsc::UnboundedSender<Handoff>,
}

/// An alert a channel gave up, for its failover channel.
#[derive(Debug)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    pub alert_id: Option<i64>,
    pub alert: Arc<Alert>,
}

/// Runs a sink in its own task behind a bounded queue; records each outcome in the outbox.
/// When the sink is rate-limited, the alerts that queued up meanwhile go out as one digest —
/// or, with a failover channel and a wait longer than its patience, go to that channel.
pub fn spawn_sink<S: Sink>(mut sink: S, metrics: Arc<Metrics>, store: Store, failover: Option<Failover>) -> (SinkQueue, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Delivery>(SINK_QUEUE);
    let name = sink.name();
    let label = Metrics::sink(&name);
    let task_name = name.clone();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let group = first.group;
            let mut batch = vec![first];
            // A digest's deliveries are queued back to back by the dispatcher.
            while batch.len() < group {
                match rx.recv().await {
                    Some(delivery) => batch.push(delivery),
                    None => break,
                }
            }
            let wait = sink.wait();
            let outcome = match &failover {
                Some(failover) if wait > failover.after => {
                    Err(anyhow::anyhow!("rate limited for {} s; handed to `{}`", wait.as_secs(), failover.to))
                }
                _ => {
                    if !wait.is_zero() {
                        tracing::info!(sink = %task_name, wait_ms = wait.as_millis() as u64, "rate limited; alerts arriving meanwhile go out as one digest");
                        tokio::time::sleep(wait).await;
                        while batch.len() < DIGEST_MAX {
                            match rx.try_recv() {
                                Ok(delivery) => batch.push(delivery),
                                Err(_) => break,
                            }
                        }
                    }
                    match batch.as_slice() {
                        [one] => sink.deliver(&one.alert).await,
                        many => sink.deliver_many(&many.iter().map(|d| d.alert.as_ref()).collect::<Vec<_>>()).await,
                    }
                }
            };
            let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
            for Delivery { alert_id, alert, .. } in batch {
                if let Some(error) = &error {
                    metrics.alert_delivery_failures.get_or_create(&label).inc();
                    tracing::error!(sink = %task_name, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, error = %error, failover = failover.as_ref().map(|f| f.to.as_str()), "alert not delivered");
                } else {
                    metrics.alerts_delivered.get_or_create(&label).inc();
                }
                if let Some(id) = alert_id {
                    if let Err(e) = store.mark_delivery(id, &task_name, error.is_none(), 1, error.clone()).await {
                        tracing::error!(sink = %task_name, alert_id = id, error = %format!("{e:#}"), "delivery outcome not recorded; the alert may be sent again after a restart");
                    }
                }
                if let (Some(failover), Some(_)) = (&failover, &error) {
                    let handoff = Handoff { from: task_name.clone(), to: failover.to.clone(), alert_id, alert };
                    if failover.handoffs.send(handoff).is_err() {
                        tracing::error!(sink = %task_name, to = %failover.to, "failover channel gone; the alert is not handed over");
                    }
                }
            }
        }
        sink.finish().await;
    });
    (SinkQueue { name, queue: tx }, task)
}

/// The running sinks, each spawned with its failover route (`[alerts.failover]`).
#[derive(Debug)]
pub struct SinkSet {
    pub queues: Vec<SinkQueue>,
    pub tasks: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    store: Store,
    failover: std::collections::BTreeMap<String, String>,
    failover_after: std::time::Duration,
    handoffs: mpsc::UnboundedSender<Handoff>,
}

impl SinkSet {
    /// An empty set, and the receiving end of its handoffs (for the dispatcher).
    pub fn new(metrics: Arc<Metrics>, store: Store, alerts: &crate::config::AlertsConfig) -> (SinkSet, mpsc::UnboundedReceiver<Handoff>) {
        let (handoffs, received) = mpsc::unbounded_channel();
        let set = SinkSet { queues: Vec::new(), tasks: Vec::new(), metrics, store, failover: alerts.failover.clone(), failover_after: alerts.failover_after, handoffs };
        (set, received)
    }

    /// Spawns `sink`, routed to its failover channel if it has one.
    pub fn add<S: Sink>(&mut self, sink: S) {
        let failover = self.failover.get(&sink.name()).map(|to| Failover { to: to.clone(), after: self.failover_after, handoffs: self.handoffs.clone() });
        let (queue, task) = spawn_sink(sink, self.metrics.clone(), self.store.clone(), failover);
        self.queues.push(queue);
        self.tasks.push(task);
    }
}

/// How often the dispatcher looks for due reminders and escalations.
const ESCALATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What the dispatcher works with besides its queues.
#[derive(Debug)]
pub struct DispatcherSetup {
    pub store: Store,
    /// Silences from the configuration (the store holds the CLI's).
    pub silences: Vec<crate::silence::Silence>,
    pub metrics: Arc<Metrics>,
    pub flap_window_ms: i64,
    /// See `AlertsConfig::group_window`.
    pub group_window_ms: i64,
    pub links: Option<crate::links::WorkerLinks>,
    pub dispatch: crate::dispatch::Dispatch,
    pub clock: crate::clock::Clock,
    /// Alerts channels gave up, for their failover channels.
    pub handoffs: mpsc::UnboundedReceiver<Handoff>,
    /// Which sensor buses are down: no-data alarms of the sensors on them are held back.
    pub buses: Option<Arc<crate::buses::Buses>>,
}

/// First re-sends what the outbox still holds from before a restart, then, for each new alert,
/// updates its incident, names the people on duty, arms the incident's escalation clocks,
/// journals it (with a pending delivery per sink) and hands it to every sink; every second it
/// also sends the reminders and escalations that fell due. Returns when `alerts` is closed; the
/// sink queues close when it returns.
pub async fn run_dispatcher(mut alerts: mpsc::Receiver<Alert>, sinks: Vec<SinkQueue>, setup: DispatcherSetup) {
    let DispatcherSetup { store, silences, metrics, flap_window_ms, group_window_ms, links, dispatch, clock, mut handoffs, buses } = setup;
    // Building -> when its last alarm went out on its own: the building's next alarms in the
    // window after it wait and go out together.
    let mut building_sent: HashMap<String, i64> = HashMap::new();
    let mut held_back = HeldBack::default();
    let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
    match store.pending_delivery_counts() {
        Ok(counts) => {
            for (sink, count) in counts.iter().filter(|(sink, _)| names.contains(sink)) {
                metrics.take_on_deliveries([sink], *count);
            }
        }
        Err(error) => tracing::error!(error = %format!("{error:#}"), "cannot count the outbox"),
    }
    match store.pending_deliveries(&names) {
        Ok(pending) => {
            if !pending.is_empty() {
                tracing::warn!(deliveries = pending.len(), "sending alerts left undelivered before the restart");
            }
            for delivery in pending {
                if let Some(sink) = sinks.iter().find(|s| s.name == delivery.sink) {
                    let _ = sink.queue.send(Delivery::single(Some(delivery.alert_id), Arc::new(delivery.alert))).await;
                }
            }
        }
        Err(error) => tracing::error!(error = %format!("{error:#}"), "cannot read the outbox; undelivered alerts from before the restart are not re-sent"),
    }
    // An accelerated clock (the demo) looks as often in its own time as the real one does.
    let mut check = tokio::time::interval(ESCALATION_CHECK.div_f64(clock.speed().max(1.0)).max(std::time::Duration::from_millis(20)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut alert = tokio::select! {
            alert = alerts.recv() => match alert {
                Some(alert) => alert,
                None => break,
            },
            Some(handoff) = handoffs.recv() => {
                hand_over(&store, &sinks, &metrics, handoff).await;
                continue;
            }
            _ = check.tick() => {
                send_due_escalations(&store, &dispatch, links.as_ref(), &sinks, &names, &metrics, clock.now()).await;
                send_due_deferred(&store, &sinks, clock.now()).await;
                count_open_incidents(&store, &metrics);
                store.try_restore_reserve();
                continue;
            }
        };
        let now = clock.now();
        if alert.audience == "grid" && alert.event != "cleared" {
            let people = dispatch.on_duty(alert.grid.as_deref(), now);
            alert.recipients = people.iter().map(|m| m.name.clone()).collect();
            alert.mentions = people.iter().filter(|m| !m.phone.is_empty()).map(|m| m.phone.clone()).collect();
        }
        // A silenced alert is journaled (without deliveries) and kept on its incident, not sent,
        // and starts no reminders.
        let mut silenced = silences.iter().find(|s| s.covers(&alert, now)).cloned().or_else(|| silence_covering(&store, &alert, now));
        if silenced.is_none() && alert.no_data {
            let position = buses.as_ref().and_then(|b| b.position(&alert.sensor));
            let bus_down = buses.as_ref().and_then(|b| b.down_under(&alert.sensor)).map(str::to_string);
            let explained = match (alert.event.as_str(), bus_down, position) {
                ("cleared", _, Some(sensor)) => held_back.release(&alert.rule, sensor).then(|| "its bus was down".to_string()),
                (_, Some(bus), Some(sensor)) => {
                    held_back.hold(&alert.rule, sensor);
                    Some(format!("{bus} is down"))
                }
                _ => None,
            };
            silenced = explained.map(|reason| crate::silence::Silence::bus_down(&alert.sensor, reason, now));
        }
        // Quiet hours and the daily digest: the alert waits in the outbox (no reminders for it).
        let deferred_until = if silenced.is_none() { dispatch.deferral.not_before(&alert, now) } else { None };
        // Grouping: a building's first alarm goes at once; its other sensors' alarms within the
        // window after it wait for the window's end and go out together.
        let grouped_until = match (&alert.building, silenced.is_none() && deferred_until.is_none() && alert.audience == "grid" && alert.event == "fired" && group_window_ms > 0) {
            (Some(building), true) => match building_sent.get(building) {
                Some(&first) if now - first < group_window_ms => Some(first + group_window_ms),
                _ => {
                    building_sent.insert(building.clone(), now);
                    None
                }
            },
            _ => None,
        };
        match store.apply_alert(&alert, flap_window_ms).await {
            Ok(id) => {
                alert.incident_id = Some(id);
                alert.link = links.as_ref().map(|l| l.link(id, chrono::Utc::now().timestamp()));
                if alert.audience == "grid" && alert.event == "fired" && silenced.is_none() && deferred_until.is_none() {
                    if let Some(first_due) = dispatch.first_due(&alert.severity, now) {
                        if let Err(error) = store.arm_escalation(id, alert.grid.clone(), now, first_due).await {
                            tracing::error!(incident = id, error = %format!("{error:#}"), "escalation clocks not started; nobody will be reminded about this incident");
                        }
                    }
                }
            }
            Err(error) => tracing::error!(rule = %alert.rule, sensor = %alert.sensor, error = %format!("{error:#}"), "incident not updated; sending the alert anyway"),
        }
        let addressing = if silenced.is_some() { Addressing::default() } else { address(&mut alert, &dispatch.roster, links.as_ref(), &names) };
        let targets = &addressing.targets;
        let alert_id = match store.record_alert_deferred(&alert, targets, deferred_until.or(grouped_until)).await {
            Ok(id) => {
                metrics.take_on_deliveries(targets, 1);
                Some(id)
            }
            Err(error) => {
                tracing::error!(rule = %alert.rule, sensor = %alert.sensor, error = %format!("{error:#}"), "alert not journaled; sending it anyway");
                None
            }
        };
        match (silenced, deferred_until) {
            (Some(silence), _) => tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, silence = silence.id, reason = %silence.reason, "alert silenced"),
            // Journaled with its time; sent by the tick below (unless journaling failed).
            (None, Some(until)) if alert_id.is_some() => {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, until = %crate::clock::rfc3339(until), "alert deferred (quiet hours or daily digest)");
            }
            (None, None) if alert_id.is_some() && grouped_until.is_some() => {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, building = ?alert.building, "alert held to go out with the building's other alarms");
            }
            (None, _) => fan_out(&sinks, &addressing, alert_id, Arc::new(alert)).await,
        }
    }
}

/// The silence in force that covers `alert`, if any. When silences cannot be read, nothing is
/// silenced: better a message too many than an alarm kept back.
fn silence_covering(store: &Store, alert: &Alert, now: i64) -> Option<crate::silence::Silence> {
    match store.silences(now, false) {
        Ok(silences) => silences.into_iter().find(|s| s.covers(alert, now)),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot read silences; sending the alert");
            None
        }
    }
}

/// Sets `gridwatch_open_incidents{severity}` from the store (people act on incidents from the
/// page and the CLI, so the store is the truth).
fn count_open_incidents(store: &Store, metrics: &Metrics) {
    let Ok(counts) = store.open_incident_counts() else { return };
    for severity in ["notice", "warning", "alarm", "danger"] {
        let open = counts.iter().find(|(s, _)| s == severity).map_or(0, |&(_, n)| n);
        metrics.open_incidents.get_or_create(&crate::metrics::SeverityLabel { severity: severity.into() }).set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

/// No-data alarms held back because their bus was down, whose clear is held back too: per rule,
/// the sensors' positions in the inventory (after a restart into a bus outage that is every
/// sensor, so no copies of ids). In memory: after a restart such a clear is sent (a message too
/// many).
#[derive(Debug, Default)]
struct HeldBack(HashMap<String, std::collections::HashSet<usize>>);

impl HeldBack {
    fn hold(&mut self, rule: &str, sensor: usize) {
        match self.0.get_mut(rule) {
            Some(sensors) => {
                sensors.insert(sensor);
            }
            None => {
                self.0.insert(rule.to_string(), [sensor].into());
            }
        }
    }

    /// Whether `sensor`'s alarm of `rule` was held back (it is not any more).
    fn release(&mut self, rule: &str, sensor: usize) -> bool {
        self.0.get_mut(rule).is_some_and(|sensors| sensors.remove(&sensor))
    }
}

/// Journals a delivery of a given-up alert for its failover channel, then queues it there.
async fn hand_over(store: &Store, sinks: &[SinkQueue], metrics: &Metrics, handoff: Handoff) {
    let Handoff { from, to, alert_id, alert } = handoff;
    let Some(sink) = sinks.iter().find(|s| s.name == to) else { return };
    if let Some(id) = alert_id {
        match store.add_delivery(id, &to).await {
            Ok(true) => metrics.take_on_deliveries([&to], 1),
            Ok(false) => {
                tracing::info!(from = %from, to = %to, alert_id = id, "the failover channel has this alert already");
                return;
            }
            Err(error) => tracing::error!(alert_id = id, to = %to, error = %format!("{error:#}"), "failover delivery not journaled; sending it anyway"),
        }
    }
    tracing::warn!(from = %from, to = %to, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "alert handed to the failover channel");
    let _ = sink.queue.send(Delivery::single(alert_id, alert)).await;
}

/// Where one alert goes: channels, and which of them are one member's own.
#[derive(Debug, Default)]
struct Addressing {
    targets: Vec<String>,
    /// Member channel -> the member's name and phone.
    personal: BTreeMap<String, (String, String)>,
}

/// Gives each recipient of `alert` their own link, and finds its channels: the grid's, plus the
/// own channels of the members it names (from `sinks`).
fn address(alert: &mut Alert, roster: &crate::dispatch::roster::Roster, links: Option<&crate::links::WorkerLinks>, sinks: &[String]) -> Addressing {
    let now_secs = chrono::Utc::now().timestamp();
    alert.member_links = match (links, alert.incident_id) {
        (Some(links), Some(id)) => roster.members_named(&alert.recipients).map(|m| (m.name.clone(), links.member_link(id, &m.id, now_secs))).collect(),
        _ => BTreeMap::new(),
    };
    let mut addressing = Addressing { targets: roster.targets(alert.grid.as_deref(), sinks).into_iter().cloned().collect(), personal: BTreeMap::new() };
    for (channel, member) in roster.member_channels(&alert.recipients) {
        if sinks.contains(channel) && !addressing.targets.contains(channel) {
            addressing.targets.push(channel.clone());
            addressing.personal.insert(channel.clone(), (member.name.clone(), member.phone.clone()));
        }
    }
    addressing
}

/// The alert as a member's own channel carries it: their link only, them only.
fn for_member(alert: &Alert, (member, phone): &(String, String)) -> Alert {
    let mut own = alert.clone();
    own.member_links.retain(|name, _| name == member);
    if let Some(link) = own.member_links.get(member) {
        own.link = Some(link.clone());
    }
    own.recipients = vec![member.clone()];
    own.mentions = if phone.is_empty() { Vec::new() } else { vec![phone.clone()] };
    own
}

/// Hands one journaled alert to the sinks it is addressed to (members' own channels get it
/// with only their own link).
async fn fan_out(sinks: &[SinkQueue], addressing: &Addressing, alert_id: Option<i64>, alert: Arc<Alert>) {
    for sink in sinks.iter().filter(|s| addressing.targets.contains(&s.name)) {
        let alert = match addressing.personal.get(&sink.name) {
            Some(member) => Arc::new(for_member(&alert, member)),
            None => alert.clone(),
        };
        // A sink only goes away when its task ended; nothing more can be done for it.
        let _ = sink.queue.send(Delivery::single(alert_id, alert)).await;
    }
}

/// Sends the deferred deliveries whose time has come: per sink, one message for all of them.
async fn send_due_deferred(store: &Store, sinks: &[SinkQueue], now: i64) {
    let due = match store.take_due_deferred(now).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot read deferred alerts; they are late");
            return;
        }
    };
    for sink in sinks {
        let mine: Vec<_> = due.iter().filter(|d| d.sink == sink.name).collect();
        if mine.is_empty() {
            continue;
        }
        tracing::info!(sink = %sink.name, alerts = mine.len(), "sending deferred alerts as one message");
        for (index, delivery) in mine.iter().enumerate() {
            let group = if index == 0 { mine.len() } else { 1 };
            let _ = sink.queue.send(Delivery { alert_id: Some(delivery.alert_id), alert: Arc::new(delivery.alert.clone()), group }).await;
        }
    }
}

/// Journals and sends the reminders and escalations due at `now`; each incident's steps and
/// clock move on in one transaction, before anything is sent.
async fn send_due_escalations(store: &Store, dispatch: &crate::dispatch::Dispatch, links: Option<&crate::links::WorkerLinks>, sinks: &[SinkQueue], names: &[String], metrics: &Metrics, now: i64) {
    let due = match store.due_escalations(now).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot read escalation clocks; reminders are late");
            return;
        }
    };
    for escalation in due {
        let mut decision = dispatch.decide(&escalation, now);
        let addressings: Vec<Addressing> = decision.steps.iter_mut().map(|step| address(&mut step.alert, &dispatch.roster, links, names)).collect();
        let alerts: Vec<Alert> = decision.steps.iter().map(|s| s.alert.clone()).collect();
        let targets: Vec<Vec<String>> = addressings.iter().map(|a| a.targets.clone()).collect();
        match store.record_escalation(escalation.incident_id, decision.steps, &targets, decision.progress, decision.next_due_ms, now).await {
            Ok(ids) => {
                for ((id, alert), addressing) in ids.into_iter().zip(alerts).zip(&addressings) {
                    metrics.take_on_deliveries(&addressing.targets, 1);
                    tracing::info!(incident = escalation.incident_id, event = %alert.event, recipients = ?alert.recipients, "escalation step");
                    fan_out(sinks, addressing, Some(id), Arc::new(alert)).await;
                }
            }
            Err(error) => tracing::error!(incident = escalation.incident_id, error = %format!("{error:#}"), "escalation step not recorded; it is tried again"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_held_back_alarm_holds_back_its_own_clear_once() {
        let mut held = HeldBack::default();
        held.hold("box-silent", 7);
        held.hold("box-silent", 9);
        assert!(!held.release("box-silent", 8), "not held back");
        assert!(!held.release("probe-silent", 7), "another rule");
        assert!(held.release("box-silent", 7));
        assert!(!held.release("box-silent", 7), "released once");
        assert!(held.release("box-silent", 9));
    }

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
            grid: Some("grid-3".into()),
            value,
            unit: "°".into(),
            condition: "hypot(x, y) above 0.4011".into(),
            at: rfc3339(1_795_392_000_000),
            at_ms: 1_795_392_000_000,
            since: rfc3339(1_795_391_940_000),
            messages: BTreeMap::from([("en".to_string(), "north-lane B7 (house-07): wall tilt changed 7.31‰ since installation — danger".to_string())]),
            incident_id: None,
            link: None,
            member_links: BTreeMap::new(),
            recipients: Vec::new(),
            mentions: Vec::new(),
            no_data: false,
            location: None,
        }
    }

    #[test]
    fn messages_are_rendered_in_each_language() {
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let rule = rules.rules.iter().find(|r| r.id == "tilt-danger").unwrap();
        let sensor = crate::demo::sensors().remove(2);
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
        let alert = Alert::new(&event, rule, &sensor);
        assert_eq!(alert.messages["en"], "east-yard B2 (house-03): wall tilt changed 7.31‰ since installation — danger");
        assert_eq!(alert.messages["zh"], "east-yardB2（house-03）墙体倾斜较安装时变化7.31‰，已达危险值，红色预警");
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
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = CountingSink { calls: calls.clone(), limit: robot::RateLimit::new(std::time::Duration::from_secs(60)) };
        let metrics = Arc::new(Metrics::new());
        let (queue, task) = spawn_sink(sink, metrics.clone(), Store::open(dir.path()).unwrap(), None);
        for _ in 0..25 {
            queue.queue.send(Delivery::single(None, Arc::new(sample_alert("fired", 0.5)))).await.unwrap();
        }
        drop(queue);
        task.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 21, "{calls:?}");
        assert!(calls[..20].iter().all(|&n| n == 1));
        assert_eq!(calls[20], 5, "the five that waited for the limit went out together");
        assert_eq!(metrics.alerts_delivered.get_or_create(&Metrics::sink("robot")).get(), 25);
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
        let (queue, _task) = spawn_sink(sink, metrics.clone(), store.clone(), None);
        let roster = "[deferral]\nquiet_from = \"22:00\"\nquiet_to = \"22:02\"\n";
        let dispatch = crate::dispatch::Dispatch::parse("roster.toml", roster).unwrap();
        // 22:00:20 China time, a minute a second: the quiet hours end 1.7 s from now.
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T22:00:20+08:00").unwrap().timestamp_millis();
        let clock = crate::clock::Clock::Accelerated { start, started: std::time::Instant::now(), speed: 60.0 };
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let setup = DispatcherSetup { store: store.clone(), silences: Vec::new(), metrics, flap_window_ms: 0, group_window_ms: 0, links: None, dispatch, clock, handoffs, buses: None };
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
        let (queue, _task) = spawn_sink(sink, metrics.clone(), store.clone(), None);
        let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
        let dispatch = crate::dispatch::Dispatch::default();
        let clock = crate::clock::Clock::System;
        let setup = DispatcherSetup { store: store.clone(), silences: Vec::new(), metrics, flap_window_ms: 0, group_window_ms: 1500, links: None, dispatch, clock, handoffs, buses: None };
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
