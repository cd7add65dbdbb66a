//! One "bus down" alarm instead of one "no data" per sensor: the MQTT broker goes away for a
//! while, every sensor behind it falls silent, and the installers get one message about the
//! bus (and one when it is back) — while a sensor that falls silent on a working bus still gets
//! its own no-data alarm.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;
use std::time::Duration;

const SENSORS: [&str; 3] = ["house-01", "house-02", "house-03"];

fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16, hook: &WebhookReceiver) {
    let mut config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-bus-{http_port}\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[alerts]\nconsole = false\nbus_down_after_secs = 2\n\n[[alerts.webhook]]\nname = \"installers\"\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        hook.url()
    );
    for id in SENSORS {
        config.push_str(&format!("\n[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"lane\"\ninterval_secs = 1\n"));
    }
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"tilt-silent\"\nkind = \"tilt\"\nno_data = \"3s\"\nseverity = \"warning\"\n").unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn publish(mosquitto: &Mosquitto, sensors: &[&str]) {
    for id in sensors {
        let _ = mosquitto.publish(&format!("gridwatch/lane/{id}/telemetry"), &format!(r#"{{"x": 0.1, "y": 0.1, "ts": {}}}"#, now_ms()));
    }
}

/// (rule, sensor, event) of each alert the installers received.
fn received(hook: &WebhookReceiver) -> Vec<(String, String, String)> {
    hook.bodies()
        .iter()
        .map(|b| (b["rule"].as_str().unwrap().to_string(), b["sensor"].as_str().unwrap().to_string(), b["event"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_one_bus_alarm_not_one_no_data_alarm_per_sensor() {
    let mut mosquitto = Mosquitto::start().await.expect("mosquitto");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, &hook);
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let connected = wait_for(20 * SECOND, || async { common::metric(&common::metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0) }).await;
    assert!(connected, "{:?}", daemon.stderr());
    for _ in 0..4 {
        publish(&mosquitto, &SENSORS);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The broker is away for 8 s: every sensor goes silent past its 3 s.
    mosquitto.restart_after(8 * SECOND).await.expect("mosquitto again");
    let bus_alarm = ("bus-down".to_string(), "mqtt".to_string(), "fired".to_string());
    assert!(received(&hook).contains(&bus_alarm), "one alarm for the bus: {:?} {:?}", received(&hook), daemon.stderr());

    // Back: readings come again, the bus alarm clears; the sensors' no-data clears are held
    // back like their alarms were.
    let back = wait_for(20 * SECOND, || {
        publish(&mosquitto, &SENSORS);
        async { received(&hook).iter().any(|(rule, _, event)| rule == "bus-down" && event == "cleared") }
    })
    .await;
    assert!(back, "{:?} {:?}", received(&hook), daemon.stderr());
    for _ in 0..4 {
        publish(&mosquitto, &SENSORS);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        received(&hook),
        vec![bus_alarm, ("bus-down".to_string(), "mqtt".to_string(), "cleared".to_string())],
        "no per-sensor no-data message while the bus was down"
    );
    let held: Vec<String> = daemon.stderr().into_iter().filter(|l| l.contains("alert silenced") && l.contains("mqtt is down")).collect();
    assert_eq!(held.len(), SENSORS.len(), "each sensor's no-data alarm was held back and journaled: {held:?}");

    // On a working bus, a sensor that falls silent is a sensor problem: its alarm is sent.
    let single = wait_for(20 * SECOND, || {
        publish(&mosquitto, &SENSORS[..2]);
        async { received(&hook).contains(&("tilt-silent".to_string(), "house-03".to_string(), "fired".to_string())) }
    })
    .await;
    assert!(single, "{:?} {:?}", received(&hook), daemon.stderr());
}
