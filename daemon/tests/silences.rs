//! Maintenance windows: a silenced sensor's alerts are kept (journal, incident) but not sent;
//! other sensors are not affected; red passes a silence that does not include it; an alarm the
//! silence kept is told when it ends while the alarm goes on, also after a restart; ending the
//! silence sends again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;

const RULES: &str = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nclear_above = 5.5\nseverity = \"alarm\"\n\n[[rule]]\nid = \"do-critical\"\nvalue = \"do\"\nbelow = 1\nclear_above = 1.5\nseverity = \"danger\"\n";

fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16, hook: &str) {
    let mut config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-silence-{http_port}\"\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{hook}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url()
    );
    for id in ["canal-02", "canal-03"] {
        config.push_str(&format!("[[sensor]]\nid = \"{id}\"\nkind = \"water\"\nsite = \"east-canal\"\ngrid = \"grid-5\"\n"));
    }
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let output = gridwatch().args(["incidents", "--config", "gridwatch.toml"]).args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sent(receiver: &WebhookReceiver) -> Vec<(String, String, String)> {
    receiver
        .bodies()
        .iter()
        .map(|b| (b["event"].as_str().unwrap().to_string(), b["rule"].as_str().unwrap().to_string(), b["sensor"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_keeps_back_its_sensor_but_not_red_and_ends_cleanly() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, &receiver.url());
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let publish = |sensor: &str, value: f64| {
        mosquitto.publish(&format!("gridwatch/east-canal/{sensor}/telemetry"), &format!(r#"{{"do": {value}, "ts": {}}}"#, now_ms())).unwrap()
    };
    let up =
        publish_until_evaluated(&mosquitto, "gridwatch/east-canal/canal-02/telemetry", || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());

    let created = cli(dir.path(), &["silence", "sensor", "canal-02", "--for", "1h", "--reason", "swapping the probe", "--by", "li"]);
    assert!(created.starts_with("silence #1: sensor canal-02 until ") && created.contains("red alerts still go out"), "{created}");
    assert!(cli(dir.path(), &["silences"]).contains("#1     sensor canal-02 until"), "listed");

    publish("canal-02", 3.0);
    publish("canal-03", 3.0);
    let other = wait_for(10 * SECOND, || async { !receiver.bodies().is_empty() }).await;
    assert!(other, "{:?}", daemon.stderr());
    tokio::time::sleep(SECOND).await;
    assert_eq!(sent(&receiver), vec![("fired".into(), "do-low".into(), "canal-03".into())], "the silenced probe's alarm is held back");
    let incidents = cli(dir.path(), &["list"]);
    assert!(incidents.contains("rule=do-low sensor=canal-02"), "but it is on its incident: {incidents}");
    assert!(daemon.stderr().iter().any(|l| l.contains("alert silenced") && l.contains("canal-02")), "{:?}", daemon.stderr());

    // Red passes a silence that does not say otherwise.
    publish("canal-02", 0.5);
    let red = wait_for(10 * SECOND, || async { sent(&receiver).contains(&("fired".into(), "do-critical".into(), "canal-02".into())) }).await;
    assert!(red, "{:?}", sent(&receiver));

    // The red clears, the orange goes on. (While the probe's red fires, its orange would be
    // folded into it: docs/incidents.md, "One alarm at a time per house".)
    publish("canal-02", 3.0);
    let red_over = wait_for(10 * SECOND, || async { sent(&receiver).contains(&("cleared".into(), "do-critical".into(), "canal-02".into())) }).await;
    assert!(red_over, "{:?}", sent(&receiver));
    // Ended while the probe's orange alarm goes on: it is told now (it reached nobody before,
    // and its clear would have come out of the blue: an outside tester), then its clear.
    assert_eq!(cli(dir.path(), &["unsilence", "1"]), "silence #1 ended\n");
    let told = wait_for(10 * SECOND, || async { sent(&receiver).contains(&("fired".into(), "do-low".into(), "canal-02".into())) }).await;
    assert!(told, "{:?}", sent(&receiver));
    let body = receiver.bodies().into_iter().find(|b| b["rule"] == "do-low" && b["sensor"] == "canal-02").unwrap();
    assert!(body["incident_id"].as_i64().is_some(), "on its incident: {body}");
    publish("canal-02", 7.0);
    let cleared = wait_for(10 * SECOND, || async { sent(&receiver).contains(&("cleared".into(), "do-low".into(), "canal-02".into())) }).await;
    assert!(cleared, "{:?}", sent(&receiver));
    assert!(cli(dir.path(), &["silences"]).contains("no silences in force"));
    let fired = sent(&receiver).iter().filter(|(event, rule, sensor)| event == "fired" && rule == "do-low" && sensor == "canal-02").count();
    assert_eq!(fired, 1, "told once: {:?}", sent(&receiver));
}

/// A running daemon with canal-02 silenced for an hour and breaching at `value` (an alarm the
/// silence keeps): the broker, the receiver, the state directory, the HTTP port and the daemon.
async fn silenced_breach(value: f64) -> (Mosquitto, WebhookReceiver, tempfile::TempDir, u16, Daemon) {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, &receiver.url());
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    assert!(publish_until_evaluated(&mosquitto, "gridwatch/east-canal/canal-03/telemetry", reading(7.0), http_port).await, "{:?}", daemon.stderr());
    cli(dir.path(), &["silence", "sensor", "canal-02", "--for", "1h", "--reason", "swapping the probe", "--by", "li"]);
    mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &reading(value)()).unwrap();
    let kept = wait_for(10 * SECOND, || async { daemon.stderr().iter().any(|l| l.contains("alert silenced") && l.contains("canal-02")) }).await;
    assert!(kept, "{:?}", daemon.stderr());
    (mosquitto, receiver, dir, http_port, daemon)
}

/// A reading of `value` stamped now.
fn reading(value: f64) -> impl Fn() -> String {
    move || format!(r#"{{"do": {value}, "ts": {}}}"#, now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_a_silence_kept_is_told_when_it_ends_after_a_restart() {
    let (mosquitto, receiver, dir, http_port, mut daemon) = silenced_breach(3.0).await;

    // A restart during the maintenance (an upgrade, systemd): the rule state is saved with the
    // alarm firing, so nothing fires again after it; the silence's end must still tell it.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    assert!(publish_until_evaluated(&mosquitto, "gridwatch/east-canal/canal-03/telemetry", reading(7.0), http_port).await, "{:?}", daemon.stderr());
    assert!(sent(&receiver).is_empty(), "nothing told yet: {:?}", sent(&receiver));
    assert_eq!(cli(dir.path(), &["unsilence", "1"]), "silence #1 ended\n");
    let told = wait_for(10 * SECOND, || async { sent(&receiver).contains(&("fired".into(), "do-low".into(), "canal-02".into())) }).await;
    assert!(told, "{:?} {:?}", sent(&receiver), daemon.stderr());
    tokio::time::sleep(SECOND).await;
    assert_eq!(sent(&receiver).len(), 1, "told once: {:?}", sent(&receiver));
}

/// A threshold lowered during the silence, so the value it kept no longer breaches: its end
/// tells nothing (an outside tester was told an orange the rule in force did not call for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_a_changed_rule_no_longer_calls_for_is_not_told_when_the_silence_ends() {
    let (mosquitto, receiver, dir, _http_port, daemon) = silenced_breach(4.5).await;

    std::fs::write(dir.path().join("rules.toml"), RULES.replace("below = 5\nclear_above = 5.5", "below = 4\nclear_above = 4.5")).unwrap();
    let reloaded = wait_for(10 * SECOND, || async { daemon.stderr().iter().any(|l| l.contains("rules reloaded")) }).await;
    assert!(reloaded, "{:?}", daemon.stderr());
    mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", &reading(4.5)()).unwrap();
    let afresh = wait_for(10 * SECOND, || async { daemon.stderr().iter().any(|l| l.contains("judged afresh")) }).await;
    assert!(afresh, "{:?}", daemon.stderr());
    assert_eq!(cli(dir.path(), &["unsilence", "1"]), "silence #1 ended\n");
    let ended = wait_for(10 * SECOND, || async { daemon.stderr().iter().any(|l| l.contains("no longer fires: not told")) }).await;
    assert!(ended, "{:?}", daemon.stderr());
    assert!(sent(&receiver).is_empty(), "nothing the rule in force calls for: {:?}", sent(&receiver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_written_in_the_configuration_holds_back_its_sensor() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let receiver = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port, &receiver.url());
    let config = std::fs::read_to_string(dir.path().join("gridwatch.toml")).unwrap();
    let silence = "[[alerts.silence]]\nscope = \"sensor\"\ntarget = \"canal-03\"\nreason = \"dredging until spring\"\nauthor = \"office\"\nuntil = \"2099-01-01T00:00:00+08:00\"\n";
    // The table must sit inside [alerts]: put it right after the webhook.
    std::fs::write(dir.path().join("gridwatch.toml"), config.replace("[http]", &format!("{silence}[http]"))).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up =
        publish_until_evaluated(&mosquitto, "gridwatch/east-canal/canal-02/telemetry", || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), http_port).await;
    assert!(up, "{:?}", daemon.stderr());
    for sensor in ["canal-03", "canal-02"] {
        mosquitto.publish(&format!("gridwatch/east-canal/{sensor}/telemetry"), &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).unwrap();
    }
    let sent_one = wait_for(10 * SECOND, || async { !receiver.bodies().is_empty() }).await;
    assert!(sent_one, "{:?}", daemon.stderr());
    tokio::time::sleep(SECOND).await;
    assert_eq!(sent(&receiver), vec![("fired".into(), "do-low".into(), "canal-02".into())]);
    let listed = cli(dir.path(), &["silences"]);
    assert!(listed.contains("config sensor canal-03 until 2099-01-01 00:00:00 +08:00 by office: dredging until spring"), "{listed}");
}
