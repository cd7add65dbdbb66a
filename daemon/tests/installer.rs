//! The installer's hour with a new tilt box, against a running daemon: `status` says what runs,
//! `watch --once` shows the box's live values, `calibrate` zeroes it from the median of its
//! recent readings (a knock is ignored) — and the rule then judges tilt from that baseline, which
//! holds across a restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;

fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = gridwatch().args(args).current_dir(dir).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// 1‰ in degrees.
fn permille(p: f64) -> f64 {
    (p / 1000.0).atan().to_degrees()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installer_checks_watches_and_zeroes_a_new_tilt_box() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        format!(
            "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-installer-{http_port}\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\n\
             [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            mosquitto.url(),
            receiver.url()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"tilt-from-install\"\nkind = \"tilt\"\nvalue = \"permille(hypot(x, y))\"\nbaseline = \"calibrated\"\nabove = 2\nseverity = \"warning\"\n").unwrap();
    let publish = |x: f64, ts: i64| mosquitto.publish("gridwatch/north-lane/house-07/telemetry", &format!(r#"{{"x": {x}, "y": -0.12, "ts": {ts}}}"#)).unwrap();

    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0) }).await;
    assert!(up, "{:?}", daemon.stderr());
    // Twenty minutes of the box as mounted (0.31° off plumb), one knock among them.
    let start = now_ms() - 20 * 60_000;
    for minute in 0..20 {
        publish(if minute == 12 { 2.5 } else { 0.31 }, start + minute * 60_000);
    }
    let seen = wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total") == Some(20.0) }).await;
    assert!(seen, "{:?}", daemon.stderr());

    let (ok, status, err) = cli(dir.path(), &["status", "--config", "gridwatch.toml"]);
    assert!(ok, "{err}");
    assert!(
        status.contains("MQTT: connected") && status.contains("sensors: 1 reporting of 1; 20 readings evaluated") && status.contains("open incidents: none"),
        "{status}"
    );
    let (ok, table, err) = cli(dir.path(), &["watch", "--config", "gridwatch.toml", "--once", "house-07"]);
    assert!(ok, "{err}");
    assert!(table.contains("house-07") && table.contains("north-lane/B7") && table.contains(" ok ") && table.contains("x=0.3100 y=-0.1200"), "{table}");

    // Nothing is judged before the box is zeroed (the rule wants a calibrated baseline).
    assert!(receiver.bodies().is_empty());
    let (ok, zeroed, err) = cli(dir.path(), &["calibrate", "--config", "gridwatch.toml", "house-07", "--window", "30m", "--by", "Li 138"]);
    assert!(ok, "{err}");
    assert!(
        zeroed.contains("from the median of 20 readings")
            && zeroed.contains("x: none (learned) -> 0.3100°")
            && zeroed.contains("y: none (learned) -> -0.1200°"),
        "{zeroed}"
    );

    // Now the wall leans 3‰ further: judged from the installation baseline.
    publish(0.31 + permille(3.0), now_ms());
    let fired = wait_for(10 * SECOND, || async { !receiver.bodies().is_empty() }).await;
    assert!(fired, "{:?}", daemon.stderr());
    let value = receiver.bodies()[0]["value"].as_f64().unwrap();
    assert!((value - 3.0).abs() < 0.01, "3‰ from the baseline, not from plumb: {value}");
    let (_, table, _) = cli(dir.path(), &["watch", "--config", "gridwatch.toml", "--once", "--building", "B7"]);
    assert!(table.contains("warning tilt-from-install (open)"), "the status column shows the open incident: {table}");
    drop(daemon);

    // The baseline holds across a restart.
    let _daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0) }).await;
    assert!(up);
    let before = metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0);
    let taken = |n: f64| async move {
        wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= before + n }).await
    };
    let t0 = now_ms();
    publish(0.31 + permille(3.0), t0);
    assert!(taken(1.0).await);
    let (ok, _, err) = cli(dir.path(), &["calibrate", "--config", "gridwatch.toml", "house-07", "--window", "5m", "--by", "Li 138"]);
    assert!(!ok && err.contains("only 1 reading(s) from `house-07`") && err.contains("at least 3"), "one reading is not a baseline: {err}");
    // The daemon keeps one reading per 30 s for this: two more, stamped as a box reporting
    // twice a minute would stamp them.
    publish(0.31 + permille(3.0), t0 + 31_000);
    publish(0.31 + permille(3.0), t0 + 62_000);
    assert!(taken(3.0).await);
    // The house leans 3‰ and its alarm still fires: zeroing the box now would take the lean as
    // its zero and silence it (an outside tester zeroed a box with two reds open, unwarned).
    let (ok, _, err) = cli(dir.path(), &["calibrate", "--config", "gridwatch.toml", "house-07", "--window", "5m", "--by", "Li 138"]);
    assert!(!ok && err.contains("`house-07` is in alarm") && err.contains("tilt-from-install (warning)") && err.contains("--even-in-alarm"), "{err}");
    // The installer checked the house: the box itself was moved.
    let (ok, again, err) = cli(dir.path(), &["calibrate", "--config", "gridwatch.toml", "house-07", "--window", "5m", "--by", "Li 138", "--even-in-alarm"]);
    assert!(ok, "{err}");
    assert!(again.contains("x: 0.3100° -> 0.4819°"), "the previous baseline survived the restart: {again}");
    // A box zeroed again starts afresh: the alarm that its old zero raised clears now, not after
    // its clear hold (an outside tester: an orange held open that way was told when the
    // installer's maintenance silence ended).
    let cleared = |b: &serde_json::Value| b["event"] == "cleared" && b["rule"] == "tilt-from-install";
    let told = wait_for(10 * SECOND, || async { receiver.bodies().iter().any(cleared) }).await;
    assert!(told, "cleared when zeroed again: {:?}", receiver.bodies());
    let (ok, explained, err) = cli(dir.path(), &["rules", "explain", "--config", "gridwatch.toml", "--sensor", "house-07"]);
    assert!(ok, "{err}");
    assert!(
        explained.contains("calibrated x: 0.4819° by Li 138") && explained.contains("median of 3 readings"),
        "explain shows the baseline in force: {explained}"
    );
    let (ok, _, err) = cli(dir.path(), &["calibrate", "--config", "gridwatch.toml", "nope", "--by", "Li"]);
    assert!(!ok && err.contains("no sensor `nope` in the inventory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_silent_for_three_intervals_makes_the_box_degraded() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        format!(
            "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-silent-{http_port}\"\n[[sensor]]\nid = \"house-08\"\nkind = \"tilt\"\nsite = \"north-lane\"\ninterval_secs = 1\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            mosquitto.url()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let health = || async move { reqwest::get(format!("http://127.0.0.1:{http_port}/healthz")).await.ok()?.text().await.ok() };
    let silent =
        wait_for(15 * SECOND, || async { health().await.is_some_and(|h| h.contains("1 sensor(s) silent for more than 3 report intervals: house-08")) }).await;
    assert!(silent, "{:?} {:?}", health().await, daemon.stderr());
    // `status` says what `/healthz` says, and exits 1 (an outside tester's installer read
    // "ready" here while `/healthz` answered 503).
    let (ok, status, err) = cli(dir.path(), &["status", "--config", "gridwatch.toml"]);
    assert!(!ok && status.contains("SILENT (more than 3 report intervals): house-08"), "{status} {err}");
    assert!(status.contains("DEGRADED: 1 sensor(s) silent for more than 3 report intervals: house-08"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_checks_the_daemon_broker_and_every_channel_with_a_marked_test_message() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let (http_port, dead_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        format!(
            "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-selftest-{http_port}\"\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\n\
             [alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n[[alerts.webhook]]\nname = \"unplugged\"\nurl = \"http://127.0.0.1:{dead_port}/hook\"\ntimeout_secs = 1\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            mosquitto.url(),
            receiver.url()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0) }).await;
    assert!(up, "{:?}", daemon.stderr());
    let (ok, report, err) = cli(dir.path(), &["selftest", "--config", "gridwatch.toml"]);
    assert!(!ok, "a dead channel fails the selftest: {report} {err}");
    assert!(report.contains("PASS configuration") && report.contains("PASS rules") && report.contains("PASS daemon") && report.contains("running"), "{report}");
    assert!(report.contains("PASS MQTT broker") && report.contains("accepts our connection"), "{report}");
    assert!(report.contains("PASS channel office") && report.contains("FAIL channel unplugged"), "{report}");
    assert!(report.contains("1 check(s) failed"), "{report}");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["rule"], "gridwatch-selftest");
    assert!(bodies[0]["messages"]["zh"].as_str().unwrap().starts_with("【测试】"), "{:?}", bodies[0]);
    assert!(metric(&metrics(http_port).await, "gridwatch_mqtt_connected") == Some(1.0), "the selftest's own connection does not take over the daemon's");
}
