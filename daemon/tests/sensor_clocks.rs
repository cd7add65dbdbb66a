//! A device clock that is off never switches a sensor's rules off (issue 17): the real binary
//! against mosquitto and a webhook receiver. A reading stamped a day ahead has its time refused
//! and counted (and raises the device's clock alarm to installers) and is judged at its arrival,
//! as are the readings of a clock 8 minutes fast, and the sensor's next, correctly stamped
//! readings still raise their alarm; a sensor whose clock went back is
//! re-anchored and judged again; one whose readings keep coming stamped hours behind is told to
//! installers and named in `/healthz`, while a backlog is not.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::time::{SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

const RULES: &str = r#"
[[rule]]
id = "test-do-low"
kind = "water"
value = "do"
below = 2.0
severity = "alarm"

[[rule]]
id = "test-clock-ahead"
kind = "water"
clock_ahead = "10m"
severity = "warning"

[[rule]]
id = "test-tilt-sudden"
kind = "tilt"
value = "hypot(x, y)"
baseline = "recent 1h"   # the shipped tilt-sudden's level, without its agreement
smooth = "steady 2"
at_least = 0.08
severity = "danger"

[[rule]]
id = "test-clock-behind"
kind = "water"
clock_behind = "1h"
for = "0s"              # three readings behind, not half an hour: a test cannot wait
severity = "warning"
"#;

fn config(mosquitto: &Mosquitto, webhook: &WebhookReceiver, http_port: u16, ingest: &str) -> String {
    format!(
        r#"
state_dir = "state"

[mqtt]
broker = "{broker}"
client_id = "gw-clocks-{pid}-{http_port}"

[[sensor]]
id = "pond-01"
kind = "water"
site = "east-canal"

[[sensor]]
id = "canal-02"
kind = "water"
site = "east-canal"

[[sensor]]
id = "ditch-03"
kind = "water"
site = "east-canal"

[[sensor]]
id = "house-21"
kind = "tilt"
site = "north-lane"

[rules]
builtin_packs = false
paths = ["rules.toml"]

[ingest]
{ingest}

[[alerts.webhook]]
name = "office"
url = "{hook}"

[http]
listen = "127.0.0.1:{http_port}"
"#,
        broker = mosquitto.url(),
        pid = std::process::id(),
        hook = webhook.url(),
    )
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn water(r#do: f64, ts: i64) -> String {
    format!(r#"{{"do": {do}, "ts": {ts}}}"#)
}

async fn healthz(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap().json().await.unwrap()
}

/// Starts the daemon and waits until a reading of the other probe (`pond-01`) is judged, so
/// `canal-02` has seen nothing yet.
async fn start(mosquitto: &Mosquitto, webhook: &WebhookReceiver, ingest: &str) -> (Daemon, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), config(mosquitto, webhook, http_port, ingest)).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let t0 = now_ms() - 600_000;
    let mut warmups = 0;
    let ready = wait_for(20 * SECOND, || {
        warmups += 1;
        mosquitto.publish("gridwatch/east-canal/pond-01/telemetry", &water(7.0, t0 + warmups * 1000)).unwrap();
        async move { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 1.0 }
    })
    .await;
    assert!(ready, "gridwatch never accepted a reading: {:?}", daemon.stderr());
    (daemon, dir, http_port)
}

/// Waits for the webhook to receive `canal-02`'s low-oxygen alarm.
async fn canal_alarm(webhook: &WebhookReceiver) -> bool {
    let fired = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-do-low" && b["sensor"] == "canal-02";
    wait_for(20 * SECOND, || async { webhook.bodies().iter().any(fired) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_stamped_ahead_is_judged_at_its_arrival_and_later_readings_still_raise_the_alarm() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, "max_future_skew_secs = 300").await;
    let canal = "gridwatch/east-canal/canal-02/telemetry";

    // A day ahead (the old limit let exactly this through, and then nothing after it counted).
    mosquitto.publish(canal, &water(7.0, now_ms() + DAY_MS)).unwrap();
    let counted =
        wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, r#"gridwatch_payloads_rejected_total{reason="ahead_of_clock"}"#) == Some(1.0) })
            .await;
    assert!(counted, "not counted as ahead_of_clock:\n{}", metrics(http_port).await);
    // Its time refused, seen by the clock check: installers hear of the device's clock.
    let clock = |event: &'static str| move |b: &serde_json::Value| b["event"] == event && b["rule"] == "test-clock-ahead" && b["sensor"] == "canal-02";
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(clock("fired")) }).await;
    assert!(told, "no clock alarm; webhook got {:?}", webhook.bodies());
    let fired = webhook.bodies().into_iter().find(clock("fired")).unwrap();
    assert!(fired["value"].as_f64().is_some_and(|secs| (86_300.0..=86_400.0).contains(&secs)), "seconds ahead: {fired}");

    // Its clock then runs 8 minutes fast (an outside tester's box, every reading refused before:
    // a real movement never raised its alarm). Each low reading is judged at its arrival.
    for _ in 0..3 {
        mosquitto.publish(canal, &water(1.2, now_ms() + 8 * 60_000)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(canal_alarm(&webhook).await, "the alarm never fired; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let cleared = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(clock("cleared")) }).await;
    assert!(cleared, "8 minutes ahead is within the rule's 10: the clock alarm clears; webhook got {:?}", webhook.bodies());
    assert!(!webhook.bodies().iter().any(|b| b["rule"] == "test-clock-ahead" && b["sensor"] == "pond-01"), "{:?}", webhook.bodies());

    // Then correctly stamped readings: judged as usual, none out of order.
    let now = now_ms();
    for i in 0..3 {
        mosquitto.publish(canal, &water(7.0, now + i * 1000)).unwrap();
    }
    let judged =
        wait_for(10 * SECOND, || async { webhook.bodies().iter().any(|b| b["event"] == "cleared" && b["rule"] == "test-do-low" && b["sensor"] == "canal-02") })
            .await;
    assert!(judged, "readings stamped on time are judged: the DO alarm clears; webhook got {:?}", webhook.bodies());

    let text = metrics(http_port).await;
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="ahead_of_clock"}"#), Some(4.0), "{text}");
    assert_eq!(metric(&text, "gridwatch_samples_out_of_order_total"), Some(0.0), "no time ahead was taken as the sensor's time");
    assert_eq!(metric(&text, "gridwatch_sensor_clock_reanchors_total"), Some(0.0), "nothing to re-anchor");
    let health = healthz(http_port).await;
    let reasons = health["reasons"].to_string();
    assert!(reasons.contains("canal-02 (ahead: judged at arrival)"), "{health}");
    assert!(!reasons.contains("pond-01"), "{health}");

    daemon.stop();
    let warned: Vec<String> = daemon.stderr().into_iter().filter(|l| l.contains("WARN") && l.contains("sensor clock ahead")).collect();
    assert_eq!(warned.len(), 1, "one warning: {warned:?}");
    assert!(warned[0].contains("sensor=canal-02"), "{warned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_clock_was_never_set_is_judged_at_arrival_and_its_clock_told_to_installers() {
    // An outside tester: boxes stamping seconds since they booted (or 1970 dates) had every
    // reading refused as `bad_timestamp` — a real jump never reached the webhook, and installers
    // heard only that the box "sent nothing" while it sent every 2 s.
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, "max_future_skew_secs = 300").await;
    let canal = "gridwatch/east-canal/canal-02/telemetry";
    for i in 0..4 {
        mosquitto.publish(canal, &water(1.2, 3600 + 60 * i)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(canal_alarm(&webhook).await, "the alarm never fired; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let fired = webhook.bodies().into_iter().find(|b| b["event"] == "fired" && b["rule"] == "test-do-low").unwrap();
    let since = chrono::DateTime::parse_from_rfc3339(fired["since"].as_str().unwrap()).unwrap().timestamp_millis();
    assert!((now_ms() - since).abs() < 60_000, "the alarm began when the readings came, not in 1970: {fired}");
    // The clock check sees the device's time, 56 years behind: installers are told.
    let behind = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-clock-behind" && b["sensor"] == "canal-02";
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(behind) }).await;
    assert!(told, "no clock-behind alarm; webhook got {:?}", webhook.bodies());

    let text = metrics(http_port).await;
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="clock_not_set"}"#), Some(4.0), "{text}");
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="bad_timestamp"}"#), Some(0.0), "{text}");
    let health = healthz(http_port).await;
    assert!(health["reasons"].to_string().contains("canal-02 (never set: judged at arrival)"), "{health}");
    daemon.stop();
    let warned: Vec<String> = daemon.stderr().into_iter().filter(|l| l.contains("WARN") && l.contains("sensor clock never set")).collect();
    assert_eq!(warned.len(), 1, "one warning: {warned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_whose_clock_went_back_is_re_anchored_and_judged_again() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let ingest = "max_future_skew_secs = 7200\nreanchor_after_readings = 3\nreanchor_after_secs = 0";
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, ingest).await;
    let canal = "gridwatch/east-canal/canal-02/telemetry";

    // An hour ahead is within this box's skew: judged, and the sensor's time is now an hour on.
    mosquitto.publish(canal, &water(7.0, now_ms() + 3_600_000)).unwrap();
    // Its clock is then set right: every reading is older than the last judged one.
    let now = now_ms();
    for i in 0..4 {
        mosquitto.publish(canal, &water(1.2, now + i * 1000)).unwrap();
    }
    assert!(canal_alarm(&webhook).await, "the alarm never fired; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let text = metrics(http_port).await;
    assert_eq!(metric(&text, "gridwatch_sensor_clock_reanchors_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "gridwatch_samples_out_of_order_total"), Some(3.0), "three refused, the third re-anchored and judged: {text}");
    let health = healthz(http_port).await;
    assert!(health["reasons"].to_string().contains("canal-02 (stepped back: re-anchored)"), "{health}");

    daemon.stop();
    let warned = daemon.stderr().into_iter().filter(|l| l.contains("WARN") && l.contains("sensor clock went back") && l.contains("sensor=canal-02")).count();
    assert_eq!(warned, 1);
}

/// An outside tester's house moved while its box's clock had just gone back 3 hours: the move
/// came in the run of readings older than the last judged one, which were never judged (the
/// rules restarted from the reading that re-anchored the box), and the red never came. Here the
/// low reading is the run's first; it is judged once the run re-anchors the probe, its alarm is
/// labelled on this box's clock, not 3 hours early by the probe's, and installers hear that the
/// probe's clock is behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_that_came_while_a_clock_went_back_are_judged_once_it_is_re_anchored() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let ingest = "max_future_skew_secs = 300\nreanchor_after_readings = 3\nreanchor_after_secs = 0";
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, ingest).await;
    let canal = "gridwatch/east-canal/canal-02/telemetry";
    let judged = |n: f64| async move { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= n };

    // Counted before the reading goes, or it may be judged before it is counted.
    let before = metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0);
    let now = now_ms();
    mosquitto.publish(canal, &water(7.0, now)).unwrap();
    assert!(wait_for(10 * SECOND, || judged(before + 1.0)).await);
    // The probe's clock goes back 3 hours; its oxygen drops at once, then recovers.
    let back = now - 3 * 3_600_000;
    // One by one, as a probe reports (a burst of old copies is not judged as new readings).
    for (i, r#do) in [1.2, 7.0, 7.0].into_iter().enumerate() {
        mosquitto.publish(canal, &water(r#do, back + i as i64 * 1100)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert!(canal_alarm(&webhook).await, "the low reading was never judged; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let alarm = webhook.bodies().into_iter().find(|b| b["event"] == "fired" && b["rule"] == "test-do-low").unwrap();
    let at_ms = alarm["at_ms"].as_i64().unwrap();
    assert!((at_ms - now).abs() < 60_000, "labelled {} s from when it came", (at_ms - now) / 1000);
    let text = metrics(http_port).await;
    assert_eq!(metric(&text, "gridwatch_sensor_clock_reanchors_total"), Some(1.0), "{text}");
    // Its clock stays 3 hours behind: installers are told, though its readings are placed at
    // their arrival (before, only `/healthz` and the log said so).
    for i in 3..6 {
        mosquitto.publish(canal, &water(7.0, back + i * 1000)).unwrap();
    }
    let behind = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-clock-behind" && b["sensor"] == "canal-02";
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(behind) }).await;
    assert!(told, "no clock-behind alarm; webhook got {:?}", webhook.bodies());
    daemon.stop();
}

const HOUSE: &str = "gridwatch/north-lane/house-21/telemetry";

fn tilt(x: f64, ts: i64) -> String {
    format!(r#"{{"x": {x}, "y": -0.12, "ts": {ts}}}"#)
}

/// Ten minutes of `house-21` standing still, judged; returns the time they end at.
async fn house_standing_still(mosquitto: &Mosquitto, daemon: &Daemon, http_port: u16) -> i64 {
    let before = metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0);
    let now = now_ms();
    for minute in (1..=10).rev() {
        mosquitto.publish(HOUSE, &tilt(0.31, now - minute * 60_000)).unwrap();
    }
    let judged =
        wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= before + 10.0 }).await;
    assert!(judged, "{:?}", daemon.stderr());
    now
}

/// Three readings of `house-21` stamped an hour before `now`, one a little over a second, the
/// wall 0.3° further out from the first.
async fn jump_an_hour_back(mosquitto: &Mosquitto, now: i64) {
    let back = now - 3_600_000;
    for i in 0..3 {
        mosquitto.publish(HOUSE, &tilt(0.61, back + i * 1100)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
}

/// An outside re-tester's box jumped in the first reading after its clock went back: the run's
/// readings were judged with the windows started again, so the jump became the new level and no
/// red came. The windows now go on from the level before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_in_the_first_reading_after_a_clock_went_back_is_red() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let ingest = "max_future_skew_secs = 300\nreanchor_after_readings = 3\nreanchor_after_secs = 0";
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, ingest).await;
    // Ten minutes of the box standing still, then its clock goes back an hour as the wall jumps 0.3°.
    let now = house_standing_still(&mosquitto, &daemon, http_port).await;
    jump_an_hour_back(&mosquitto, now).await;
    let red = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-tilt-sudden" && b["sensor"] == "house-21";
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(red) }).await;
    assert!(told, "no red for the jump; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    daemon.stop();
}

/// A second re-tester's box whose clock went back an hour for a few readings and was then set
/// right again: the run was placed an hour back, its windows started again, and neither the
/// jump in it nor one after it was ever red. Now the run is placed at when its readings came,
/// the windows go on, and the box keeps its own (right) time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_while_a_clock_went_back_and_was_set_right_again_is_red_at_its_time() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let ingest = "max_future_skew_secs = 300\nreanchor_after_readings = 10\nreanchor_after_secs = 600";
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, ingest).await;
    house_standing_still(&mosquitto, &daemon, http_port).await;
    // An hour back for three readings, the wall jumping 0.3° at the first; then set right.
    jump_an_hour_back(&mosquitto, now_ms()).await;
    let moved_at = now_ms() - 3300;
    mosquitto.publish(HOUSE, &tilt(0.61, now_ms())).unwrap();
    let red = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-tilt-sudden" && b["sensor"] == "house-21";
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(red) }).await;
    assert!(told, "no red for the jump; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let alarm = webhook.bodies().into_iter().find(red).unwrap();
    let at_ms = alarm["at_ms"].as_i64().unwrap();
    assert!((at_ms - moved_at).abs() < 30_000, "labelled {} s from when the wall moved (an hour early before)", (at_ms - moved_at) / 1000);
    daemon.stop();
}

/// An outside re-tester's probe whose clock went back 3 minutes (less than the re-anchoring
/// waits for): its readings were older than the last judged one until its clock caught up, and
/// a minute of very low oxygen among them was never judged. They are judged once it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_a_clock_that_went_back_a_little_are_judged_once_it_catches_up() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let ingest = "max_future_skew_secs = 300\nreanchor_after_readings = 10\nreanchor_after_secs = 600";
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, ingest).await;
    let canal = "gridwatch/east-canal/canal-02/telemetry";
    let before = metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0);
    let now = now_ms();
    mosquitto.publish(canal, &water(7.0, now)).unwrap();
    assert!(wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) > before }).await);
    // Back 3 seconds' worth below the last judged reading, one reading a second and a bit.
    for (i, r#do) in [1.2, 7.0, 7.0].into_iter().enumerate() {
        mosquitto.publish(canal, &water(r#do, now - 3_000 + i as i64 * 1000)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert!(webhook.bodies().is_empty(), "nothing judged yet: {:?}", webhook.bodies());
    // Caught up: newer than the last judged one.
    mosquitto.publish(canal, &water(7.0, now + 1000)).unwrap();
    assert!(canal_alarm(&webhook).await, "the low reading was never judged; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    daemon.stop();
}

/// An outside tester's probes, each of which was never judged: one stamped its readings in
/// seconds, one in China time without an offset, one sent a field it could not measure as text
/// beside the DO. A clock 7 minutes ahead (past the box's 5-minute skew: judged at its arrival)
/// raises no clock alarm, since the rule allows 10; 12 minutes ahead does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_with_times_in_seconds_or_local_text_or_a_bad_field_are_judged_and_a_clock_ahead_is_told() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let (daemon, _dir, http_port) = start(&mosquitto, &webhook, "max_future_skew_secs = 300").await;
    let fired = |rule: &'static str, sensor: &'static str| move |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == rule && b["sensor"] == sensor;

    let canal = "gridwatch/east-canal/canal-02/telemetry";
    mosquitto.publish(canal, &format!(r#"{{"do": 1.2, "nh3n": "5.0 mg/L", "ts": {}}}"#, now_ms() / 1000)).unwrap();
    assert!(canal_alarm(&webhook).await, "webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let text = metrics(http_port).await;
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="non_numeric"}"#), Some(1.0), "the bad field is counted: {text}");

    let pond = "gridwatch/east-canal/pond-01/telemetry";
    let china = chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()).format("%Y-%m-%d %H:%M:%S");
    mosquitto.publish(pond, &format!(r#"{{"do": 1.1, "ts": "{china}"}}"#)).unwrap();
    let told = wait_for(20 * SECOND, || async { webhook.bodies().iter().any(fired("test-do-low", "pond-01")) }).await;
    assert!(told, "webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());

    mosquitto.publish(pond, &water(7.0, now_ms() + 7 * 60_000)).unwrap();
    let counted =
        wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, r#"gridwatch_payloads_rejected_total{reason="ahead_of_clock"}"#) == Some(1.0) })
            .await;
    assert!(counted, "{}", metrics(http_port).await);
    mosquitto.publish(pond, &water(7.0, now_ms() + 12 * 60_000)).unwrap();
    let told = wait_for(10 * SECOND, || async { webhook.bodies().iter().any(fired("test-clock-ahead", "pond-01")) }).await;
    assert!(told, "a reading 12 minutes ahead raises the clock alarm; webhook got {:?}", webhook.bodies());
    let clocks: Vec<serde_json::Value> = webhook.bodies().into_iter().filter(fired("test-clock-ahead", "pond-01")).collect();
    assert_eq!(clocks.len(), 1, "not at 7 minutes, within the rule's 10: {clocks:?}");
    assert!(clocks[0]["value"].as_f64().is_some_and(|ahead| (700.0..=721.0).contains(&ahead)), "seconds ahead: {clocks:?}");
}

/// An outside tester's box stamped its readings 5 h behind this (synchronised) box: they were
/// taken for a backlog, its alarm said it began 5 hours early, and nobody heard of the clock.
/// Now installers are told and `/healthz` names it, once a WARN; a 26-hour backlog sent in a
/// burst by another box is neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_stamping_5_hours_behind_is_told_to_installers_and_named_in_healthz_a_backlog_is_not() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let (mut daemon, _dir, http_port) = start(&mosquitto, &webhook, "clock_behind_for_secs = 0").await;
    let accepted_before = metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0);

    // ditch-03 was cut off for 26 hours and sends what it kept (every 30 minutes), oldest first.
    let ditch = "gridwatch/east-canal/ditch-03/telemetry";
    let now = now_ms();
    for n in 0..=52 {
        mosquitto.publish(ditch, &water(7.0, now - DAY_MS - 2 * 3_600_000 + n * 1_800_000)).unwrap();
    }
    // canal-02's clock is 5 hours behind: each reading stamped 5 hours before it is sent.
    let canal = "gridwatch/east-canal/canal-02/telemetry";
    for _ in 0..4 {
        mosquitto.publish(canal, &water(7.0, now_ms() - 5 * 3_600_000)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }
    let behind = |b: &serde_json::Value| b["event"] == "fired" && b["rule"] == "test-clock-behind";
    let told = wait_for(20 * SECOND, || async { webhook.bodies().iter().any(|b| behind(b) && b["sensor"] == "canal-02") }).await;
    assert!(told, "no clock-behind alarm; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    let alarm = webhook.bodies().into_iter().find(|b| behind(b) && b["sensor"] == "canal-02").unwrap();
    assert!(alarm["value"].as_f64().is_some_and(|secs| (17_990.0..=18_010.0).contains(&secs)), "seconds behind: {alarm}");
    // Its oxygen falls, still stamped 5 hours behind: the alarm says it began now (it said 5
    // hours earlier; an outside tester's red "began 8 hours earlier").
    let fell_at = now_ms();
    mosquitto.publish(canal, &water(1.0, fell_at - 5 * 3_600_000)).unwrap();
    assert!(canal_alarm(&webhook).await, "no oxygen alarm: {:?}", webhook.bodies());
    let low = webhook.bodies().into_iter().find(|b| b["event"] == "fired" && b["rule"] == "test-do-low" && b["sensor"] == "canal-02").unwrap();
    let since = chrono::DateTime::parse_from_rfc3339(low["since"].as_str().unwrap()).unwrap().timestamp_millis();
    assert!((since - fell_at).abs() < 60_000, "began {} s from when it fell: {low}", (since - fell_at) / 1000);
    let judged = wait_for(10 * SECOND, || async {
        metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= accepted_before + 53.0 + 5.0
    })
    .await;
    assert!(judged, "every reading judged:\n{}", metrics(http_port).await);
    assert!(!webhook.bodies().iter().any(|b| behind(b) && b["sensor"] != "canal-02"), "a backlog is no clock behind: {:?}", webhook.bodies());

    let health = healthz(http_port).await;
    let reasons = health["reasons"].to_string();
    assert!(reasons.contains("canal-02 (behind"), "{health}");
    assert!(!reasons.contains("ditch-03") && !reasons.contains("pond-01"), "{health}");

    daemon.stop();
    let warned: Vec<String> = daemon.stderr().into_iter().filter(|l| l.contains("WARN") && l.contains("sensor clock behind")).collect();
    assert_eq!(warned.len(), 1, "one warning: {warned:?}");
    assert!(warned[0].contains("sensor=canal-02") && warned[0].contains("behind_secs=1800"), "{warned:?}");
}
