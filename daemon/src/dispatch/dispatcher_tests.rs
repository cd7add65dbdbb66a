//! The dispatcher with real channel tasks on a real store: digests past a rate limit, a slow
//! channel, building groups, quiet hours.

use crate::alert::tests::sample_alert;
use crate::alert::Alert;
use crate::dispatch::{run_dispatcher, DispatcherSetup};
use crate::metrics::Metrics;
use crate::sinks::{channel, robot, Sink, SinkContext};
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a channel task needs, on the system clock, already told to finish once its queue is
/// empty.
fn finishing(store: &Store, metrics: &Arc<Metrics>) -> SinkContext {
    let closing = tokio_util::sync::CancellationToken::new();
    closing.cancel();
    SinkContext { metrics: metrics.clone(), store: store.clone(), clock: crate::clock::Clock::System, closing }
}

/// Records the sensors of each delivery it took, in order; rate-limited like a group robot, its
/// attempts counted by the channel like one; from its first digest on it refuses `failing`
/// messages (a robot that fails for a while).
struct RecordingRobot {
    calls: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    limit: robot::RateLimit,
    failing: usize,
    failing_since_a_digest: bool,
}

impl RecordingRobot {
    fn new(calls: &Arc<std::sync::Mutex<Vec<Vec<String>>>>) -> RecordingRobot {
        RecordingRobot { calls: calls.clone(), limit: robot::RateLimit::new(std::time::Duration::from_secs(60)), failing: 0, failing_since_a_digest: false }
    }
}

impl Sink for RecordingRobot {
    fn name(&self) -> String {
        "robot".into()
    }

    fn wait(&self, red: bool) -> std::time::Duration {
        self.limit.wait(red)
    }

    fn counted_attempts(&self) -> Option<crate::sinks::CountedAttempts> {
        Some(robot::counted_attempts())
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        self.deliver_many(&[alert]).await
    }

    async fn deliver_many(&mut self, alerts: &[&Alert]) -> anyhow::Result<()> {
        self.limit.record().await;
        self.failing_since_a_digest |= alerts.len() > 1;
        if self.failing_since_a_digest && self.failing > 0 {
            self.failing -= 1;
            anyhow::bail!("answered HTTP 500");
        }
        self.calls.lock().unwrap().push(alerts.iter().map(|a| a.sensor.clone()).collect());
        Ok(())
    }
}

/// How many alerts each delivery of a [`RecordingRobot`] carried.
fn sizes(calls: &std::sync::Mutex<Vec<Vec<String>>>) -> Vec<usize> {
    calls.lock().unwrap().iter().map(Vec::len).collect()
}

/// A blue notice of its own incident on `sensor`.
fn notice(sensor: &str) -> Alert {
    let mut alert = sample_alert("fired", 1.2);
    (alert.rule, alert.sensor, alert.severity) = ("tilt-change".into(), sensor.into(), gridwatch_rules::Severity::Notice);
    alert
}

#[tokio::test(start_paused = true)]
async fn a_burst_past_the_rate_limit_goes_out_as_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = RecordingRobot::new(&calls);
    let metrics = Arc::new(Metrics::new());
    for _ in 0..25 {
        store.record_alert(&sample_alert("fired", 0.5), &["robot".to_string()]).await.unwrap();
    }
    let (_queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
    task.await.unwrap();
    let calls = sizes(&calls);
    assert_eq!(calls.len(), 21, "{calls:?}");
    assert!(calls[..20].iter().all(|&n| n == 1));
    assert_eq!(calls[20], 5, "the five that waited for the limit went out together");
    assert_eq!(metrics.alerts_delivered.get_or_create(&Metrics::sink("robot")).get(), 25);
    assert!(store.pending_delivery_counts().unwrap().is_empty(), "the channel's queue is drained");
}

/// A robot that fails for a moment when the digest goes: its alarms go again in the next digest,
/// on the channel's counted attempts, until they run out (an outside tester's robot failed for
/// 2 s and lost the eight alarms of a digest for good).
#[tokio::test(start_paused = true)]
async fn a_digest_the_robot_refused_goes_again_until_its_attempts_run_out() {
    for (failing, delivered, failed) in [(2, 25, 0), (usize::MAX, 17, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = RecordingRobot { failing, ..RecordingRobot::new(&calls) };
        let metrics = Arc::new(Metrics::new());
        for i in 0..25 {
            store.record_alert(&notice(&format!("house-{i:02}")), &["robot".to_string()]).await.unwrap();
        }
        let (_queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
        task.await.unwrap();
        let label = Metrics::sink("robot");
        let counts = (metrics.alerts_delivered.get_or_create(&label).get(), metrics.alert_delivery_failures.get_or_create(&label).get());
        assert_eq!(counts, (delivered, failed), "refused {failing} times: {:?}", sizes(&calls));
        assert!(store.pending_delivery_counts().unwrap().is_empty(), "the channel's queue is drained");
    }
}

#[tokio::test]
async fn a_red_alarm_goes_ahead_of_notices_that_used_up_the_robot_s_minute() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = RecordingRobot::new(&calls);
    let robot = ["robot".to_string()];
    for i in 0..25 {
        store.record_alert(&notice(&format!("house-{i:02}")), &robot).await.unwrap();
    }
    let context = SinkContext { closing: tokio_util::sync::CancellationToken::new(), ..finishing(&store, &metrics) };
    let (queue, task) = channel::spawn_sink(sink, context, None);
    let sent = |calls: &Arc<std::sync::Mutex<Vec<Vec<String>>>>| calls.lock().unwrap().len();
    let notices_alone = robot::PER_MINUTE - robot::KEPT_FOR_RED;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while sent(&calls) < notices_alone {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the notices go out one by one until the sends kept for reds");
    // The channel now waits for the minute. A house's box raises an orange, then red: the red
    // goes ahead of the other houses' notices with its incident's orange, in order.
    let mut orange = sample_alert("fired", 0.2);
    (orange.sensor, orange.severity) = ("house-99".into(), gridwatch_rules::Severity::Alarm);
    store.record_alert(&orange, &robot).await.unwrap();
    store.record_alert(&notice("house-98"), &robot).await.unwrap();
    let mut red = sample_alert("changed", 7.3);
    red.sensor = "house-99".into();
    store.record_alert(&red, &robot).await.unwrap();
    queue.wake.notify_one();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while sent(&calls) < notices_alone + 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the red alarm did not wait for the robot's minute");
    task.abort();
    let calls = calls.lock().unwrap().clone();
    assert!(calls[..notices_alone].iter().all(|call| call.len() == 1 && call[0] != "house-99"), "{calls:?}");
    assert_eq!(calls[notices_alone..], [vec!["house-99".to_string(), "house-99".to_string()]], "the house's orange and red, in one message");
    assert_eq!(store.pending_delivery_counts().unwrap()["robot"], 26 - notices_alone as u64, "the other notices wait for the digest");
}

/// A red alarm outlasts a robot that fails for a minute and a half: twice the attempts of another
/// alert, whose six are spent in about half a minute (an outside tester's red was given up after
/// 40 s of a failing robot, while the orange sent with it arrived).
#[tokio::test(start_paused = true)]
async fn a_red_alarm_outlasts_a_robot_failing_longer_than_another_alert_s_attempts() {
    for (red, delivered) in [(true, 1), (false, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = RecordingRobot { failing: 8, failing_since_a_digest: true, ..RecordingRobot::new(&calls) };
        let metrics = Arc::new(Metrics::new());
        let alert = if red { sample_alert("fired", 7.3) } else { notice("house-07") };
        store.record_alert(&alert, &["robot".to_string()]).await.unwrap();
        let (_queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
        task.await.unwrap();
        assert_eq!(metrics.alerts_delivered.get_or_create(&Metrics::sink("robot")).get(), delivered, "red: {red}");
    }
}

/// A reminder ("not accepted yet") that waited in the channel's queue while its incident was
/// accepted is not sent (an outside tester's group read "尚未接单" minutes after 王芳 accepted);
/// one of an incident nobody took still is.
#[tokio::test]
async fn a_reminder_of_an_incident_accepted_while_it_waited_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reminders = Vec::new();
    for sensor in ["house-07", "house-08"] {
        let mut alarm = sample_alert("fired", 7.3);
        alarm.sensor = sensor.into();
        let numbered = crate::store::Journaling {
            route: Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                Vec::new()
            }),
            not_before_ms: None,
            escalate: None,
        };
        let incident = store.apply_and_journal(&alarm, 0, numbered).await.unwrap().0.incident().unwrap();
        let mut reminder = sample_alert("reminder", 7.3);
        (reminder.sensor, reminder.incident_id) = (sensor.into(), Some(incident));
        reminders.push((store.record_alert(&reminder, &["robot".to_string()]).await.unwrap(), incident));
    }
    store.incident_action(reminders[0].1, crate::dispatch::incident::Action::Accept, "王芳", None, crate::clock::Clock::System.now()).unwrap();
    let (_queue, task) = channel::spawn_sink(RecordingRobot::new(&calls), finishing(&store, &metrics), None);
    task.await.unwrap();
    assert_eq!(calls.lock().unwrap().clone(), vec![vec!["house-08".to_string()]], "only the reminder of the incident nobody took");
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
    let (slow, _slow_task) = channel::spawn_sink(SlowSink { name: "slow", delay: std::time::Duration::from_secs(30), got: slow_got }, context.clone(), None);
    let (fast, _fast_task) = channel::spawn_sink(SlowSink { name: "fast", delay: std::time::Duration::ZERO, got: Arc::clone(&fast_got) }, context, None);
    let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
    let setup = DispatcherSetup {
        store: store.clone(),
        silences: Vec::new(),
        metrics,
        flap_window_ms: 0,
        group_window_ms: 0,
        links: None,
        dispatch: Default::default(),
        clock: crate::clock::Clock::System,
        handoffs,
        buses: None,
        judged: None,
        report_rates: None,
    };
    // A queue of one: had the dispatcher waited for the slow channel, the sends below would too.
    let (alerts, received) = mpsc::channel(1);
    tokio::spawn(run_dispatcher(received, vec![slow, fast], setup));
    let sensors: Vec<String> = (0..300).map(|i| format!("house-{i:03}")).collect();
    let sent = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        for sensor in &sensors {
            let mut alert = sample_alert("fired", 7.3);
            // 300 houses, not one house's sensors (they would be folded into its first alarm).
            (alert.sensor, alert.building) = (sensor.clone(), None);
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
        dispatch: Default::default(),
        clock: crate::clock::Clock::System,
        handoffs,
        buses: None,
        judged: None,
        report_rates: None,
    };
    let (alerts, received) = mpsc::channel(8);
    tokio::spawn(run_dispatcher(received, vec![queue], setup));
    // house-07 opens B7's window; house-08's alarm waits for it — and so does its clear. (Not
    // folded into house-07's alarm: folding is turned off, as a configuration may.)
    store.fold_into_open_alarms(false);
    for (sensor, event) in [("house-07", "fired"), ("house-08", "fired"), ("house-08", "cleared")] {
        let mut alert = sample_alert(event, 4.3);
        // Oranges: a red never waits for the window.
        (alert.sensor, alert.severity) = (sensor.into(), gridwatch_rules::Severity::Alarm);
        alerts.send(alert).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(got.lock().unwrap().clone(), vec!["house-07 fired"], "the clear did not overtake its fired");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(got.lock().unwrap().clone(), vec!["house-07 fired", "house-08 fired", "house-08 cleared"]);
}

#[tokio::test]
async fn quiet_hours_hold_blue_until_morning_and_send_it_as_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = RecordingRobot::new(&calls);
    let metrics = Arc::new(Metrics::new());
    let roster = "[deferral]\nquiet_from = \"22:00\"\nquiet_to = \"22:02\"\n";
    let dispatch = crate::dispatch::Dispatch::parse("roster.toml", roster).unwrap();
    // 22:00:20 China time, a minute a second: the quiet hours end 1.7 s from now.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T22:00:20+08:00").unwrap().timestamp_millis();
    let clock = crate::clock::Clock::Accelerated { start, started: tokio::time::Instant::now(), speed: 60.0, synchronized: true };
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
        dispatch: dispatch.into(),
        clock,
        handoffs,
        buses: None,
        judged: None,
        report_rates: None,
    };
    let (alerts, received) = mpsc::channel(8);
    tokio::spawn(run_dispatcher(received, vec![queue], setup));

    for sensor in ["house-01", "house-02", "house-03"] {
        let mut blue = sample_alert("fired", 0.1);
        (blue.severity, blue.colour, blue.sensor) = (gridwatch_rules::Severity::Notice, "blue".into(), sensor.into());
        alerts.send(blue).await.unwrap();
    }
    // A red of another building: one of theirs would take the blue ones in (folding).
    alerts.send(Alert { building: Some("B8".into()), ..sample_alert("fired", 7.3) }).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sizes(&calls), vec![1], "red at once; blue waits for the morning");
    assert_eq!(store.pending_delivery_counts().unwrap().get("robot"), Some(&3), "the three wait in the outbox");

    let morning = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while calls.lock().unwrap().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(morning.is_ok(), "{:?}", calls.lock().unwrap());
    assert_eq!(sizes(&calls), vec![1, 3], "then all three blue ones as one message");
    // Marked delivered after the call returned: waited for, not slept on (200 ms were too few on
    // a loaded CI machine).
    let delivered = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while store.pending_delivery_counts().unwrap().contains_key("robot") {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "all delivered: {:?}", store.pending_delivery_counts().unwrap());
    assert_eq!(sizes(&calls), vec![1, 3], "and nothing sent again");
}

#[tokio::test]
async fn a_houses_first_alarm_goes_at_once_and_the_rest_of_the_house_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = RecordingRobot::new(&calls);
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
        dispatch: dispatch.into(),
        clock,
        handoffs,
        buses: None,
        judged: None,
        report_rates: None,
    };
    let (alerts, received) = mpsc::channel(8);
    tokio::spawn(run_dispatcher(received, vec![queue], setup));
    // Not folded into house-07's alarm (`store::folding`): turned off, as a configuration may.
    store.fold_into_open_alarms(false);

    for sensor in ["house-07", "house-08", "house-09"] {
        let mut alert = sample_alert("fired", 4.3);
        (alert.sensor, alert.severity) = (sensor.into(), gridwatch_rules::Severity::Alarm);
        alerts.send(alert).await.unwrap();
    }
    let mut other_house = sample_alert("fired", 4.3);
    (other_house.sensor, other_house.building, other_house.severity) = ("house-21".into(), Some("B9".into()), gridwatch_rules::Severity::Alarm);
    alerts.send(other_house).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sizes(&calls), vec![1, 1], "each house's first alarm at once");
    // A red never waits for the window (an outside tester's waited 8 s behind its box's orange).
    let mut red = sample_alert("fired", 7.3);
    red.sensor = "house-10".into();
    alerts.send(red).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sizes(&calls), vec![1, 1, 1], "B7's red at once");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(sizes(&calls), vec![1, 1, 1, 2], "then B7's other two sensors as one message");
    assert_eq!(store.incidents(false).unwrap().len(), 5, "still one incident per sensor");
}

#[tokio::test]
async fn the_daemons_own_alarm_on_an_unset_clock_is_time_unknown_and_marked_for_re_stamping() {
    let dir = tempfile::tempdir().unwrap();
    let clock = crate::clock::Clock::starting_at(86_400_000, false);
    let store = Store::open_with_clock(dir.path(), clock).unwrap();
    store.take_over_unset_stamps().unwrap();
    let (_handoff_tx, handoffs) = mpsc::unbounded_channel();
    let setup = DispatcherSetup {
        store: store.clone(),
        silences: Vec::new(),
        metrics: Arc::new(Metrics::new()),
        flap_window_ms: 0,
        group_window_ms: 0,
        links: None,
        dispatch: crate::dispatch::Dispatch::default().into(),
        clock,
        handoffs,
        buses: None,
        judged: None,
        report_rates: None,
    };
    let (alerts, received) = mpsc::channel(8);
    let dispatcher = tokio::spawn(run_dispatcher(received, Vec::new(), setup));
    let bus_down = Alert::device(
        "bus-down",
        "rs485-1",
        "north-lane",
        crate::alert::Event::Fired,
        gridwatch_rules::Severity::Warning,
        "bus down",
        "no frames".into(),
        clock.now(),
    );
    assert!(bus_down.at.starts_with("1970-01-02"), "stamped by the box's clock: {}", bus_down.at);
    alerts.send(bus_down).await.unwrap();
    drop(alerts);
    dispatcher.await.unwrap();
    let journaled = store.latest_alert("bus-down", "rs485-1").unwrap().unwrap();
    assert_eq!((journaled.at.as_str(), journaled.since.as_str()), (crate::clock::TIME_UNKNOWN, crate::clock::TIME_UNKNOWN));
    let marked: i64 = rusqlite::Connection::open(dir.path().join("gridwatch.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM alert_events WHERE clock_unset_at >= 0", [], |row| row.get(0))
        .unwrap();
    assert_eq!(marked, 1, "re-stamped once the clock is set");
}

/// A webhook-like channel (its attempts counted by the channel) that fails its first `failing`
/// attempts, then records the events it took ("fired alarm") and when (since `started`).
struct FailingAtFirst {
    failing: usize,
    got: Arc<std::sync::Mutex<Vec<(String, std::time::Duration)>>>,
    started: tokio::time::Instant,
}

impl Sink for FailingAtFirst {
    fn name(&self) -> String {
        "hook".into()
    }

    fn counted_attempts(&self) -> Option<crate::sinks::CountedAttempts> {
        let backoff = crate::backoff::Backoff::new(std::time::Duration::from_millis(500), std::time::Duration::from_secs(30));
        Some(crate::sinks::CountedAttempts { in_all: 8, in_all_for_red: 8, backoff })
    }

    async fn deliver(&mut self, alert: &Alert) -> anyhow::Result<()> {
        if self.failing > 0 {
            self.failing -= 1;
            anyhow::bail!("timed out");
        }
        self.got.lock().unwrap().push((format!("{} {}", alert.event, alert.severity.as_str()), self.started.elapsed()));
        Ok(())
    }
}

/// An outside tester's slow receiver got a building's orange five times while the red it had
/// become waited behind it on the channel; one back from failing got the orange and the red in
/// the same second. An alarm whose incident has a later event at least as bad due on the channel
/// is no longer tried: the later one goes in its place. Without it, the orange is delivered; one
/// that cleared and fired again meanwhile is told each time.
#[tokio::test(start_paused = true)]
async fn an_orange_still_being_tried_when_its_incident_turns_red_gives_way_to_the_red() {
    for (turns_red, fires_again) in [(true, false), (false, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let to_hook = || crate::store::Journaling {
            route: Box::new(|alert: &mut Alert, incident| {
                alert.incident_id = Some(incident);
                vec![("hook".to_string(), None)]
            }),
            not_before_ms: None,
            escalate: None,
        };
        let mut orange = sample_alert("fired", 0.3);
        orange.severity = gridwatch_rules::Severity::Alarm;
        store.apply_and_journal(&orange, 0, to_hook()).await.unwrap();
        let sink = FailingAtFirst { failing: 3, got: got.clone(), started: tokio::time::Instant::now() };
        let (_queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
        // The orange's second attempt has failed; its third is due at 1.5 s.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        if turns_red {
            let red = Alert { previous_severity: Some(gridwatch_rules::Severity::Alarm), at_ms: orange.at_ms + 1_000, ..sample_alert("changed", 0.6) };
            store.apply_and_journal(&red, 0, to_hook()).await.unwrap();
        }
        if fires_again {
            store.apply_and_journal(&Alert { event: crate::alert::Event::Cleared, at_ms: orange.at_ms + 1_000, ..orange.clone() }, 0, to_hook()).await.unwrap();
            store.apply_and_journal(&Alert { at_ms: orange.at_ms + 2_000, ..orange.clone() }, 0, to_hook()).await.unwrap();
        }
        task.await.unwrap();
        let expected = match (turns_red, fires_again) {
            (true, _) => vec!["changed danger"],
            (false, false) => vec!["fired alarm"],
            (false, true) => vec!["fired alarm", "cleared alarm", "fired alarm"],
        };
        let got: Vec<String> = got.lock().unwrap().iter().map(|(event, _)| event.clone()).collect();
        assert_eq!(got, expected, "turns red: {turns_red}, fires again: {fires_again}");
        assert!(store.pending_delivery_counts().unwrap().is_empty(), "the channel's queue is drained");
    }
}

/// A channel whose receiver fails its first `failing` attempts at a first alarm (`first`); at
/// `arrives`, a red of another house is journaled for it and the channel woken. What the receiver
/// got, and when.
async fn a_red_arrives_during_a_backoff(first: Alert, failing: usize, arrives: std::time::Duration) -> Vec<(String, std::time::Duration)> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    store.record_alert(&first, &["hook".to_string()]).await.unwrap();
    let sink = FailingAtFirst { failing, got: got.clone(), started: tokio::time::Instant::now() };
    let (queue, task) = channel::spawn_sink(sink, finishing(&store, &metrics), None);
    tokio::time::sleep(arrives).await;
    let red = Alert { building: Some("B8".into()), sensor: "house-11".into(), ..sample_alert("fired", 7.6) };
    store.record_alert(&red, &["hook".to_string()]).await.unwrap();
    queue.wake.notify_one();
    task.await.unwrap();
    let got = got.lock().unwrap().clone();
    got
}

/// An outside tester's red waited 6 s while its channel sat out the backoff of another house's
/// orange it was trying again. Woken by the red, the channel sends it at once; the orange's
/// attempts go on after it.
#[tokio::test(start_paused = true)]
async fn a_red_arriving_while_another_alarm_waits_out_its_backoff_goes_at_once() {
    let orange = Alert { severity: gridwatch_rules::Severity::Alarm, ..sample_alert("fired", 0.3) };
    // Attempts at 0, 0.5, 1.5, 3.5 s fail; the next would be at 6.5–8.5 s.
    let got = a_red_arrives_during_a_backoff(orange, 4, std::time::Duration::from_secs(4)).await;
    assert_eq!(got.iter().map(|(event, _)| event.as_str()).collect::<Vec<_>>(), ["fired danger", "fired alarm"], "the red first: {got:?}");
    // The orange's next attempt was due at 6.5–8.5 s (a wait of 4 s ± 25 %); the store's work
    // lets paused time run on a little under load.
    assert!(got[0].1 < std::time::Duration::from_millis(5_500), "the red at once, not after the orange's wait: {got:?}");
}

/// Another tester's second red waited 18 s behind a first red its channel was trying again after
/// the receiver was back: woken by the second, the channel tries the first again at once, and
/// both go.
#[tokio::test(start_paused = true)]
async fn a_red_behind_another_red_s_backoff_has_it_tried_again_at_once() {
    // Five attempts fail, the last by 9.4 s (waits of 0.5, 1, 2 and 4 s, each ± 25 %); the
    // receiver is back from then on, and the next attempt would come 6–10 s after the fifth.
    let got = a_red_arrives_during_a_backoff(sample_alert("fired", 7.3), 5, std::time::Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(_, at)| *at < std::time::Duration::from_secs(11)), "both at once, not after the first's wait (11.6 s or later): {got:?}");
}
