//! A rule that clears only after a day back inside (the water pack's class rules) keeps one
//! incident while a river dips every dawn. When a worker resolves that incident while the rule
//! waits out its hold, the hold ends and the rule clears, so that the next breach is a new alarm
//! people are told of — not a silent part of work they closed (an outside tester found a second
//! oxygen crash within the day untold in 35 of 48 cases).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_during_a_clear_hold_clears_and_the_next_breach_is_told() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-clear-holds-{http_port}\"\n\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        receiver.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nclear_for = \"1d\"\nseverity = \"alarm\"\n").unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let topic = "gridwatch/east-canal/canal-02/telemetry";
    let reading = |value: f64| format!(r#"{{"do": {value}, "ts": {}}}"#, now_ms());
    assert!(publish_until_evaluated(&mosquitto, topic, || reading(7.0), http_port).await, "{:?}", daemon.stderr());
    let events = |event: &str| receiver.bodies().into_iter().filter(|b| b["event"] == event).collect::<Vec<_>>();

    mosquitto.publish(topic, &reading(3.0)).unwrap();
    assert!(wait_for(10 * SECOND, || async { events("fired").len() == 1 }).await, "{:?}", daemon.stderr());
    let incident = events("fired")[0]["incident_id"].as_i64().unwrap();
    // Back inside: the rule waits out its day, the incident stays open.
    mosquitto.publish(topic, &reading(7.0)).unwrap();
    tokio::time::sleep(6 * SECOND).await;
    assert!(events("cleared").is_empty(), "cleared before its hold: {:?}", receiver.bodies());

    let resolved = common::gridwatch()
        .args(["incidents", "--config", "gridwatch.toml", "act", &incident.to_string(), "resolve", "--by", "wang", "--note", "aerator on"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(resolved.status.success(), "{}", String::from_utf8_lossy(&resolved.stderr));
    // The resolve ends the hold (the daemon looks every 5 s): the rule clears now ...
    assert!(wait_for(12 * SECOND, || async { events("cleared").len() == 1 }).await, "the hold did not end: {:?}", receiver.bodies());
    assert_eq!(events("cleared")[0]["incident_id"], incident);
    // ... and the next crash is an alarm people get.
    mosquitto.publish(topic, &reading(2.5)).unwrap();
    assert!(wait_for(10 * SECOND, || async { events("fired").len() == 2 }).await, "the next breach was not told: {:?}", receiver.bodies());
}
