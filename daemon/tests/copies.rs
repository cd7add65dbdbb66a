//! A box that sends neither `ts` nor `seq` is stamped on arrival: a copy of one of its messages
//! (sent again when its broker's acknowledgement was lost) must not count as a second reading.
//! Through the real binary, mosquitto and a webhook, on a one-box house with the shipped tilt
//! pack: two copies of a spike raise no red (an outside tester's did), and a real jump, whose
//! readings after it are all alike on a box that rounds coarsely, is still red at its second
//! reading.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::time::Duration;

const TOPIC: &str = "gridwatch/north-lane/house-21/telemetry";
/// The box's pace in this test: a reading every two seconds.
const PACE: Duration = Duration::from_secs(2);

fn config(mosquitto: &Mosquitto, webhook: &WebhookReceiver, http_port: u16) -> String {
    format!(
        r#"
state_dir = "state"

[mqtt]
broker = "{broker}"
client_id = "gw-copies-{pid}-{http_port}"

[[sensor]]
id = "house-21"
kind = "tilt"
site = "north-lane"
interval_secs = 60

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

/// Publishes `payload` and waits until the daemon has taken `accepted` readings in all.
async fn reading(mosquitto: &Mosquitto, http_port: u16, payload: &str, accepted: f64) {
    mosquitto.publish(TOPIC, payload).unwrap();
    let taken = wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total") == Some(accepted) }).await;
    assert!(taken, "reading {accepted} not taken:\n{}", metrics(http_port).await);
}

fn sudden(webhook: &WebhookReceiver) -> Vec<serde_json::Value> {
    webhook.bodies().into_iter().filter(|b| b["rule"] == "tilt-sudden" && b["event"] == "fired").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_sent_twice_raises_no_red_and_a_real_jump_is_red_at_its_second_reading() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(dir.path().join("gridwatch.toml"), config(&mosquitto, &webhook, http_port)).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").is_some() }).await;
    assert!(up, "the daemon did not start: {:?}", daemon.stderr());

    // A quiet wall, a box mounted half a degree off, rounding to 0.01°: its level and pace.
    let quiet = r#"{"x": 0.52, "y": -0.31}"#;
    let mut accepted = 0.0;
    for _ in 0..6 {
        accepted += 1.0;
        reading(&mosquitto, http_port, quiet, accepted).await;
        tokio::time::sleep(PACE).await;
    }
    // A spike, and the same message again 0.3 s later: refused as a copy, no red.
    let spike = r#"{"x": 1.37, "y": -0.31}"#;
    accepted += 1.0;
    reading(&mosquitto, http_port, spike, accepted).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mosquitto.publish(TOPIC, spike).unwrap();
    let refused =
        wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, r#"gridwatch_payloads_rejected_total{reason="duplicate_copy"}"#) == Some(1.0) })
            .await;
    assert!(refused, "the copy was not refused:\n{}", metrics(http_port).await);
    for _ in 0..3 {
        tokio::time::sleep(PACE).await;
        accepted += 1.0;
        reading(&mosquitto, http_port, quiet, accepted).await;
    }
    assert!(sudden(&webhook).is_empty(), "a spike and its copy raised {:?}", sudden(&webhook));

    // The wall jumps 0.2°: the readings after it are alike, at the box's pace, and red comes at
    // the second of them.
    let jumped = r#"{"x": 0.72, "y": -0.31}"#;
    for _ in 0..2 {
        tokio::time::sleep(PACE).await;
        accepted += 1.0;
        reading(&mosquitto, http_port, jumped, accepted).await;
    }
    let red = wait_for(10 * SECOND, || async { sudden(&webhook).iter().any(|b| b["severity"] == "danger") }).await;
    assert!(red, "a real jump was not red; webhook got {:?}\nlog: {:?}", webhook.bodies(), daemon.stderr());
    assert_eq!(metric(&metrics(http_port).await, r#"gridwatch_payloads_rejected_total{reason="duplicate_copy"}"#), Some(1.0), "the jump's readings were taken");
}
