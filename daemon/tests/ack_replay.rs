//! Workers' actions relayed over MQTT cannot be replayed: a signed action is applied once, the
//! same message again is refused and counted — also after the daemon restarted — and a message
//! signed in the old, ambiguous newline format is refused as forged.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, metric, metrics, Daemon, SECOND};
use gridwatch::sources::mqtt::incident_acks::AckConfig;
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};

const TOPIC: &str = "gridwatch/acks/box-1";
const SECRET: &str = "hub-and-box-share-this";

fn write_config(dir: &std::path::Path, mosquitto: &Mosquitto, http_port: u16, hook: &WebhookReceiver) {
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-replay-{http_port}\"\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n[dispatch]\nack_topic = \"{TOPIC}\"\nack_secret = \"{SECRET}\"\n",
        mosquitto.url(),
        hook.url()
    );
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\n").unwrap();
}

async fn acks(http_port: u16, reason: &str) -> f64 {
    metric(&metrics(http_port).await, &format!("gridwatch_incident_acks_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
}

fn history(dir: &std::path::Path) -> String {
    let shown = gridwatch().args(["incidents", "--config", "gridwatch.toml", "show", "1"]).current_dir(dir).output().unwrap();
    String::from_utf8_lossy(&shown.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_action_is_refused_before_and_after_a_restart() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, &hook);

    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let fired = wait_for(20 * SECOND, || {
        mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
        async { !hook.bodies().is_empty() }
    })
    .await;
    assert!(fired, "{:?}", daemon.stderr());

    let hub = AckConfig::new(TOPIC.into(), SECRET);
    let ts = now_ms();
    let accept = serde_json::json!({"incident": 1, "action": "accept", "by": "王芳", "note": "on my way", "ts": ts, "sig": hub.sign(1, "accept", "王芳", Some("on my way"), ts)}).to_string();
    mosquitto.publish(TOPIC, &accept).unwrap();
    assert!(wait_for(10 * SECOND, || async { acks(http_port, "applied").await == 1.0 }).await, "{}", metrics(http_port).await);
    mosquitto.publish(TOPIC, &accept).unwrap();
    assert!(wait_for(10 * SECOND, || async { acks(http_port, "replayed").await == 1.0 }).await, "{}", metrics(http_port).await);

    // The old format (`incident\naction\nby\nnote\nts`, plain HMAC) no longer verifies.
    let old_sig = gridwatch::signing::hex(&gridwatch::signing::hmac_sha256(SECRET.as_bytes(), format!("1\nresolve\n王芳\n\n{ts}").as_bytes()));
    let old = serde_json::json!({"incident": 1, "action": "resolve", "by": "王芳", "ts": ts, "sig": old_sig}).to_string();
    mosquitto.publish(TOPIC, &old).unwrap();
    assert!(wait_for(10 * SECOND, || async { acks(http_port, "bad_signature").await == 1.0 }).await, "{}", metrics(http_port).await);

    assert!(daemon.stop().success(), "{:?}", daemon.stderr());
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0) }).await;
    assert!(up, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &accept).unwrap();
    assert!(wait_for(10 * SECOND, || async { acks(http_port, "replayed").await == 1.0 }).await, "refused after the restart too: {}", metrics(http_port).await);
    assert_eq!(acks(http_port, "applied").await, 0.0, "nothing applied by the new process");

    let shown = history(dir.path());
    assert_eq!(shown.matches("王芳 (hub)").count(), 1, "one accept in the audit trail: {shown}");
    assert!(!shown.contains("resolved"), "{shown}");
}
