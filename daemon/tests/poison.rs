//! No MQTT message can blind ingestion: a 2 MiB QoS 1 message (far over `max_packet_bytes`) is
//! cleared out of the daemon's session and counted, and readings published after it are taken;
//! and a connection that keeps dropping counts as down and raises `bus-down` with its reason.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_config(dir: &Path, broker: &str, http_port: u16, hook: &WebhookReceiver) {
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{broker}\"\nclient_id = \"gw-poison-{http_port}\"\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\
         [alerts]\nconsole = false\nbus_down_after_secs = 2\n[[alerts.webhook]]\nname = \"installers\"\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [[sensor]]\nid = \"house-01\"\nkind = \"tilt\"\nsite = \"lane\"\n",
        hook.url()
    );
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"tilt-big\"\nkind = \"tilt\"\nvalue = \"x\"\nabove = 50\nseverity = \"warning\"\n").unwrap();
}

async fn value(http_port: u16, series: &str) -> f64 {
    metric(&metrics(http_port).await, series).unwrap_or(0.0)
}

/// `mosquitto_pub -q 1 -f <file>`: a payload too large for a command-line argument.
fn publish_file(mosquitto: &Mosquitto, topic: &str, payload: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(file.path())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_message_is_counted_and_readings_after_it_flow_again() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto.url(), http_port, &hook);
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let topic = "gridwatch/lane/house-01/telemetry";
    let up = common::publish_until_evaluated(&mosquitto, topic, || format!(r#"{{"x": 0.1, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    let before = value(http_port, "gridwatch_samples_accepted_total").await;

    // 2 MiB on the daemon's own topic (any subscribed topic would do), then ordinary readings.
    let poison = format!(r#"{{"x": 0.1, "pad": "{}"}}"#, "p".repeat(2 * 1024 * 1024));
    publish_file(&mosquitto, topic, poison.as_bytes());
    // A message over max_payload_bytes but under max_packet_bytes is read and rejected as before.
    publish_file(&mosquitto, topic, format!(r#"{{"x": 0.1, "pad": "{}"}}"#, "p".repeat(100_000)).as_bytes());
    let published = Instant::now();
    for seq in 0..5 {
        mosquitto.publish(topic, &format!(r#"{{"x": 0.2, "seq": {seq}, "ts": {}}}"#, now_ms())).unwrap();
    }
    let flowing = wait_for(30 * SECOND, || async { value(http_port, "gridwatch_samples_accepted_total").await >= before + 5.0 }).await;
    let took = published.elapsed();
    assert!(flowing, "readings after the big message are taken: {} {:?}", metrics(http_port).await, daemon.stderr());
    eprintln!("readings flowed again {took:?} after the 2 MiB message was published");
    let counted = wait_for(10 * SECOND, || async { value(http_port, r#"gridwatch_payloads_rejected_total{reason="too_large"}"#).await == 2.0 }).await;
    assert!(counted, "both large messages counted once: {}", metrics(http_port).await);

    // Gone from the session for good: another reading is taken without the connection failing again.
    let errors = value(http_port, "gridwatch_mqtt_connection_errors_total").await;
    assert_eq!(errors, 1.0, "one failure, on the big message, then none: {:?}", daemon.stderr());
    let accepted = value(http_port, "gridwatch_samples_accepted_total").await;
    mosquitto.publish(topic, &format!(r#"{{"x": 0.3, "ts": {}}}"#, now_ms())).unwrap();
    assert!(wait_for(10 * SECOND, || async { value(http_port, "gridwatch_samples_accepted_total").await > accepted }).await);
    assert_eq!(value(http_port, "gridwatch_mqtt_connection_errors_total").await, errors);
    let logged: Vec<String> = daemon.stderr().into_iter().filter(|l| l.contains("too_large")).collect();
    assert!(!logged.is_empty() && logged.len() <= 2, "logged, but not once per message: {logged:?}");
    assert!(hook.bodies().is_empty(), "a connection that recovered at once is no bus alarm: {:?}", hook.bodies());
}

/// A TCP proxy to `target` that cuts every connection after `life`.
async fn flapping_proxy(target: u16, life: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                let _ = tokio::time::timeout(life, tokio::io::copy_bidirectional(&mut client, &mut broker)).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_keeps_dropping_raises_bus_down_with_its_reason() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let proxy = flapping_proxy(mosquitto.port, Duration::from_millis(400)).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &format!("mqtt://127.0.0.1:{proxy}"), http_port, &hook);
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let fired = wait_for(30 * SECOND, || async { hook.bodies().iter().any(|b| b["rule"] == "bus-down" && b["event"] == "fired") }).await;
    assert!(fired, "{:?} {:?}", hook.bodies(), daemon.stderr());
    let connects = value(http_port, "gridwatch_mqtt_connects_total").await;
    assert!(connects >= 2.0, "it did connect, again and again ({connects}): flapping, not simply down");
    let alarm = hook.bodies().into_iter().find(|b| b["rule"] == "bus-down").unwrap();
    let message = alarm["messages"]["en"].as_str().unwrap().to_string();
    assert!(message.contains("Last error") && message.contains("failure(s)"), "{message}");
}
