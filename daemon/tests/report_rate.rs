//! A house at yellow or above asks its tilt boxes to report faster (`[mqtt] report_rate_topic`):
//! the real `gridwatch` binary and a real mosquitto. A red tilt alarm on one box of a house
//! publishes a retained `{"report_every_secs": 60}` to each of the house's boxes; its clear
//! asks each for its own interval again; a box of another house is not asked.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto};
use std::process::{Command, Stdio};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_house_in_alarm_asks_its_boxes_for_a_reading_a_minute_and_its_clear_for_their_own_rate() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-rate-{http_port}\"\nreport_rate_topic = \"gridwatch/{{site}}/{{sensor}}/set\"\n\n\
         [[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\ninterval_secs = 3600\n\n\
         [[sensor]]\nid = \"house-07b\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\ninterval_secs = 300\n\n\
         [[sensor]]\nid = \"house-09\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B9\"\ninterval_secs = 3600\n\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url()
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"lean\"\nkind = \"tilt\"\nvalue = \"x\"\nabove = 1.0\nseverity = \"danger\"\n").unwrap();
    let commands = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-t", "gridwatch/+/+/set", "-q", "1", "-v", "-C", "4", "-W", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients)");
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let topic = "gridwatch/north-lane/house-07/telemetry";
    let up = publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"x": 0.2, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(topic, &format!(r#"{{"x": 1.5, "ts": {}}}"#, now_ms())).unwrap();
    let fired = wait_for(10 * SECOND, || async { daemon.stdout().iter().any(|line| line.contains("rule=lean") && line.contains(" fired ")) }).await;
    assert!(fired, "{:?}", daemon.stderr());
    mosquitto.publish(topic, &format!(r#"{{"x": 0.2, "ts": {}}}"#, now_ms())).unwrap();
    let output = commands.wait_with_output().unwrap();
    let received: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect();
    assert_eq!(
        received,
        [
            r#"gridwatch/north-lane/house-07/set {"report_every_secs":60}"#,
            r#"gridwatch/north-lane/house-07b/set {"report_every_secs":60}"#,
            r#"gridwatch/north-lane/house-07/set {"report_every_secs":3600}"#,
            r#"gridwatch/north-lane/house-07b/set {"report_every_secs":300}"#,
        ],
        "{:?}",
        daemon.stderr()
    );
    // Retained: a box that connects later gets its latest.
    let retained = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-t", "gridwatch/north-lane/house-07/set", "-C", "1", "-W", "5"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&retained.stdout).trim(), r#"{"report_every_secs":3600}"#);
}
