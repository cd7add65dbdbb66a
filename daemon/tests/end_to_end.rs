//! The whole path against real services: mosquitto -> `gridwatch run` (a separate process) ->
//! webhook receiver, MQTT alert topic, console and VictoriaMetrics (InfluxDB write API).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, VictoriaMetrics, WebhookReceiver};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RULES: &str = r#"
[[rule]]
id = "test-tilt-danger"
title = "Wall tilt past 7‰"
kind = "tilt"
value = "hypot(x, y)"
unit = "°"
above = 0.4011
clear_below = 0.37
severity = "danger"

[[rule]]
id = "test-do-low"
kind = "water"
value = "do"
below = 2.0
severity = "alarm"
"#;

fn config(mosquitto: &Mosquitto, vm: &VictoriaMetrics, webhook: &WebhookReceiver, http_port: u16) -> String {
    format!(
        r#"
state_dir = "state"

[mqtt]
broker = "{broker}"
client_id = "gw-e2e-{pid}"

[[sensor]]
id = "house-07"
kind = "tilt"
site = "north-lane"
building = "B7"
grid = "grid-3"

[[sensor]]
id = "canal-02"
kind = "water"
site = "east-canal"
grid = "grid-5"

[rules]
builtin_packs = false
paths = ["rules.toml"]

[alerts.mqtt]
topic_prefix = "gridwatch/alerts"

[[alerts.webhook]]
name = "office"
url = "{hook}"
max_attempts = 4

[influxdb]
url = "{vm}"
org = "community"
bucket = "gridwatch"
token = "not-checked-by-victoria-metrics"
batch_size = 50
flush_interval_ms = 100

[http]
listen = "127.0.0.1:{http_port}"
"#,
        broker = mosquitto.url(),
        pid = std::process::id(),
        hook = webhook.url(),
        vm = vm.url(),
    )
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_become_one_fired_and_one_cleared_alert_and_stored_points() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    // The first POST fails: the webhook sink must retry it.
    let webhook = WebhookReceiver::start(vec![503]).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), config(&mosquitto, &vm, &webhook, http_port)).unwrap();

    let alerts_topic = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-t", "gridwatch/alerts/#", "-q", "1", "-C", "2", "-W", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients)");

    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());

    // Ready when a reading makes it through: the ingest connection is up and subscribed.
    let t0 = now_ms() - 180_000; // every ts stays in the past: export ends at "now"
    let water = |i: i64| format!(r#"{{"do": {}, "ph": 7.1, "ts": {}, "seq": {i}}}"#, 6.0 + i as f64 / 100.0, t0 + i * 1000);
    let mut warmups = 0;
    let ready = wait_for(20 * SECOND, || {
        warmups += 1;
        mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &water(warmups)).unwrap();
        async move { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 1.0 }
    })
    .await;
    assert!(ready, "gridwatch never accepted a reading");

    let tilt = |i: i64, x: f64, y: f64| format!(r#"{{"x": {x}, "y": {y}, "ts": {}, "seq": {i}}}"#, t0 + 30_000 + i * 1000);
    let house = "gridwatch/north-lane/house-07/telemetry";
    mosquitto.publish(house, &tilt(1, 0.10, 0.05)).unwrap();
    mosquitto.publish(house, &tilt(2, 0.45, 0.10)).unwrap(); // fires: hypot = 0.46098
    mosquitto.publish(house, &tilt(3, 0.50, 0.10)).unwrap(); // still above: no second alert
    mosquitto.publish(house, r#"{"x": "oops", "y": null}"#).unwrap(); // non_numeric: no field left (one alone is left out)
    mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", "not json at all").unwrap(); // not_json
    mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &water(100)).unwrap(); // still accepted after the bad ones
    mosquitto.publish(house, &tilt(4, 0.39, 0.0)).unwrap(); // between clear and trigger: stays fired
    mosquitto.publish(house, &tilt(5, 0.30, 0.0)).unwrap(); // clears

    let delivered = wait_for(30 * SECOND, || async { webhook.bodies().len() >= 2 }).await;
    assert!(delivered, "webhook got {:?}", webhook.bodies());
    // Give a duplicate time to show up, if one were coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies = webhook.bodies();
    assert_eq!(bodies.len(), 2, "exactly one fired and one cleared: {bodies:?}");
    assert_eq!(webhook.requests(), 3, "the failed first POST was retried");
    assert_eq!(bodies[0]["event"], "fired");
    assert_eq!(bodies[0]["rule"], "test-tilt-danger");
    assert_eq!(bodies[0]["sensor"], "house-07");
    assert_eq!(bodies[0]["building"], "B7");
    assert_eq!(bodies[0]["severity"], "danger");
    assert!((bodies[0]["value"].as_f64().unwrap() - 0.45f64.hypot(0.10)).abs() < 1e-9, "{}", bodies[0]);
    assert!(bodies[0]["incident_id"].as_i64().is_some(), "{}", bodies[0]);
    assert_eq!(bodies[0]["incident_id"], bodies[1]["incident_id"], "fired and cleared belong to one incident");
    assert_eq!(bodies[1]["event"], "cleared");
    assert_eq!(bodies[1]["rule"], "test-tilt-danger");
    assert!((bodies[1]["value"].as_f64().unwrap() - 0.30).abs() < 1e-9, "{}", bodies[1]);

    // Healthy: connected to the broker, InfluxDB takes our points.
    let health = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ready");

    // Rejections were counted, and the other sensor's reading after them arrived.
    let text = metrics(http_port).await;
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="non_numeric"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"gridwatch_payloads_rejected_total{reason="not_json"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"gridwatch_alerts_delivered_total{sink="office"}"#), Some(2.0), "{text}");

    // Telemetry is in VictoriaMetrics with the inventory's tags and the readings' values.
    let stored = wait_for(20 * SECOND, || async {
        let series = vm.export(r#"{__name__="tilt_x",sensor="house-07"}"#).await.unwrap_or_default();
        series.first().and_then(|s| s["values"].as_array()).is_some_and(|v| v.len() == 5)
    })
    .await;
    let tilt_x = vm.export(r#"{__name__="tilt_x",sensor="house-07"}"#).await.unwrap();
    assert!(stored, "tilt_x points: {tilt_x:?}");
    let labels = &tilt_x[0]["metric"];
    assert_eq!((labels["site"].as_str(), labels["building"].as_str(), labels["grid"].as_str()), (Some("north-lane"), Some("B7"), Some("grid-3")), "{labels}");
    let values: Vec<f64> = tilt_x[0]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(values, vec![0.10, 0.45, 0.50, 0.39, 0.30]);
    let timestamps: Vec<i64> = tilt_x[0]["timestamps"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(timestamps[0], t0 + 31_000, "the device's ts is the point's time");
    let canal = vm.export(r#"{__name__="water_do",sensor="canal-02"}"#).await.unwrap();
    let canal_values = canal[0]["values"].as_array().unwrap();
    assert!(canal_values.iter().any(|v| (v.as_f64().unwrap() - 7.0).abs() < 1e-9), "reading after the bad payloads is stored: {canal:?}");

    // The MQTT alert topic carried the same two events.
    let output = alerts_topic.wait_with_output().expect("mosquitto_sub output");
    let messages: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("alert JSON")).collect();
    let events: Vec<_> = messages.iter().map(|m| (m["event"].as_str().unwrap(), m["sensor"].as_str().unwrap())).collect();
    assert_eq!(events, vec![("fired", "house-07"), ("cleared", "house-07")]);

    // SIGTERM drains and exits cleanly; the console printed one line per event.
    let status = daemon.stop();
    assert!(status.success(), "gridwatch exited with {status}");
    let console: Vec<String> = daemon.stdout().into_iter().filter(|line| line.contains("rule=test-tilt-danger")).collect();
    assert_eq!(console.len(), 2, "{console:?}");
    assert!(console[0].contains(" fired ") && console[0].contains("sensor=house-07") && console[0].contains("value=0.4610°"), "{}", console[0]);
    assert!(console[1].contains(" cleared "), "{}", console[1]);

    // And the alert journal in the local store holds both, in order.
    let journal = gridwatch::store::Store::open(&dir.path().join("state")).unwrap().recent_alerts(10).unwrap();
    let journaled: Vec<_> = journal.iter().map(|e| (e.event.as_str(), e.rule.as_str())).collect();
    assert_eq!(journaled, vec![("fired", "test-tilt-danger"), ("cleared", "test-tilt-danger")]);

    // A danger incident waits for a person even though the sensor is normal again; the
    // worker closes the loop from the command line and the audit trail says who did what.
    let incidents = |args: &[&str]| {
        let output = common::gridwatch().args(["incidents", "--config", "gridwatch.toml"]).args(args).current_dir(dir.path()).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
    };
    let id = bodies[0]["incident_id"].as_i64().unwrap().to_string();
    let (ok, list) = incidents(&["list"]);
    assert!(ok && list.contains(&format!("#{id:<5} open")) && list.contains("(sensor normal)"), "{list}");
    assert!(incidents(&["act", &id, "accept", "--by", "worker-li"]).0);
    let (ok, resolved) = incidents(&["act", &id, "resolve", "--by", "worker-li", "--note", "wall checked, crack sealed"]);
    assert!(ok && resolved.contains("is now resolved"), "{resolved}");
    let (ok, refused) = incidents(&["act", &id, "accept", "--by", "worker-li"]);
    assert!(!ok && refused.contains("cannot accept an incident that is resolved"), "{refused}");
    let (_, shown) = incidents(&["show", &id]);
    for line in ["rules        fired danger", "rules        sensor normal", "worker-li    accept", "worker-li    resolve: wall checked, crack sealed"] {
        assert!(shown.contains(line), "missing {line:?} in {shown}");
    }
    // The whole trail exports as CSV, oldest first; a note with a comma stays one field.
    let (ok, csv) = incidents(&["export"]);
    assert!(ok, "{csv}");
    let rows: Vec<Vec<String>> = csv::Reader::from_reader(csv.as_bytes()).records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    let actions: Vec<(&str, &str)> = rows.iter().map(|r| (r[5].as_str(), r[6].as_str())).collect();
    assert_eq!(actions, vec![("rules", "fired danger"), ("rules", "sensor normal"), ("worker-li", "accept"), ("worker-li", "resolve")], "{csv}");
    assert_eq!((rows[3][0].as_str(), rows[3][1].as_str(), rows[3][7].as_str()), (id.as_str(), "test-tilt-danger", "wall checked, crack sealed"));
    let (_, later) = incidents(&["export", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(later.lines().count(), 1, "only the header: {later}");
}
