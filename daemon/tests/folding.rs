//! One house, one alarm told at a time, through the real binary, mosquitto and a webhook: a house
//! whose red is open gets its further alarms (other rules, its other box) folded into that red —
//! recorded, sent to nobody, not after a SIGKILL either — and they are resolved with it, except a
//! red that still fires, which is told then. Once the house's alarms are over, its next one is
//! told again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, WebhookReceiver};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RULES: &str = r#"
[[rule]]
id = "lean-red"
kind = "tilt"
value = "x"
above = 5
severity = "danger"

[[rule]]
id = "lean-orange"
kind = "tilt"
value = "x"
above = 3
severity = "alarm"

[[rule]]
id = "lean-yellow"
kind = "tilt"
value = "x"
above = 2
severity = "warning"
"#;

fn config(mosquitto: &Mosquitto, webhook: &WebhookReceiver, http_port: u16) -> String {
    let boxes: String = ["house-07", "house-08"]
        .iter()
        .map(|id| format!("[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\ngrid = \"grid-3\"\n\n"))
        .collect();
    format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-folding-{http_port}\"\n\n{boxes}[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n\
         [alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        webhook.url()
    )
}

fn reading(x: f64) -> String {
    format!(r#"{{"x": {x}, "y": 0.1, "ts": {}}}"#, SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis())
}

fn topic(sensor: &str) -> String {
    format!("gridwatch/north-lane/{sensor}/telemetry")
}

/// `gridwatch incidents …` in `dir`: its standard output.
fn incidents(dir: &Path, args: &[&str]) -> String {
    let output = common::gridwatch().args(["incidents", "--config", "gridwatch.toml"]).args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The webhook's bodies as "rule sensor event".
fn told(webhook: &WebhookReceiver) -> Vec<String> {
    webhook
        .bodies()
        .iter()
        .map(|b| format!("{} {} {}", b["rule"].as_str().unwrap_or("?"), b["sensor"].as_str().unwrap_or("?"), b["event"].as_str().unwrap_or("?")))
        .collect()
}

/// A running daemon on B7's two boxes whose house-07 leaned past all three steps at once: its red
/// told (and nothing else). The broker, the webhook, the state directory, the HTTP port and the
/// daemon.
async fn house_07_red() -> (Mosquitto, WebhookReceiver, tempfile::TempDir, u16, Daemon) {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let webhook = WebhookReceiver::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(dir.path().join("gridwatch.toml"), config(&mosquitto, &webhook, http_port)).unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    assert!(publish_until_evaluated(&mosquitto, &topic("house-07"), || reading(0.2), http_port).await, "{:?}", daemon.stderr());
    mosquitto.publish(&topic("house-08"), &reading(0.3)).unwrap();
    mosquitto.publish(&topic("house-07"), &reading(6.0)).unwrap();
    assert!(wait_for(10 * SECOND, || async { !told(&webhook).is_empty() }).await, "{:?}", daemon.stderr());
    (mosquitto, webhook, dir, http_port, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_houses_further_alarms_fold_into_its_red_and_are_resolved_with_it() {
    // The wall leans past all three steps at once: its red is told, nothing else.
    let (mosquitto, webhook, dir, http_port, mut daemon) = house_07_red().await;
    // The other box of the house follows, orange then red: folded too.
    mosquitto.publish(&topic("house-08"), &reading(4.0)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    mosquitto.publish(&topic("house-08"), &reading(6.5)).unwrap();
    let folded = wait_for(10 * SECOND, || async { incidents(dir.path(), &["list"]).matches("folded into #").count() == 5 }).await;
    assert!(folded, "{}", incidents(dir.path(), &["list"]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(told(&webhook), vec!["lean-red house-07 fired"], "one message for the house");

    // A SIGKILL and a restart judge the last readings again: still nothing more is sent.
    daemon.kill_hard();
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    assert!(publish_until_evaluated(&mosquitto, &topic("house-08"), || reading(6.5), http_port).await, "{:?}", daemon.stderr());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(told(&webhook), vec!["lean-red house-07 fired"], "after the restart");

    // The worker resolves the red: the folded alarms are resolved with it — but the other box's
    // red, which still fires and nobody was told of, is told now.
    let red = webhook.bodies()[0]["incident_id"].as_i64().unwrap();
    incidents(dir.path(), &["act", &red.to_string(), "resolve", "--by", "wang", "--note", "propped, residents out"]);
    let owed = wait_for(10 * SECOND, || async { told(&webhook).len() == 2 }).await;
    assert!(owed, "{:?}", told(&webhook));
    assert_eq!(told(&webhook), vec!["lean-red house-07 fired", "lean-red house-08 fired"]);
    let list = incidents(dir.path(), &["list"]);
    assert_eq!(list.lines().filter(|l| l.contains(" resolved ")).count(), 5, "{list}");
    let folded_id =
        list.lines().find(|l| l.contains("lean-orange") && l.contains("house-08")).and_then(|l| l.trim_start_matches('#').split(' ').next()).unwrap();
    let shown = incidents(dir.path(), &["show", folded_id]);
    assert!(shown.contains(&format!("folded into #{red}")) && shown.contains(&format!("随 #{red} 一并办结")), "{shown}");

    // The walls stand again; the next alarm of the house is told.
    mosquitto.publish(&topic("house-07"), &reading(0.2)).unwrap();
    mosquitto.publish(&topic("house-08"), &reading(0.3)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    mosquitto.publish(&topic("house-08"), &reading(3.5)).unwrap();
    let next = wait_for(10 * SECOND, || async { told(&webhook).iter().any(|t| t == "lean-orange house-08 fired") }).await;
    assert!(next, "{:?}", told(&webhook));
    let folded_clears: Vec<String> = told(&webhook).into_iter().filter(|t| t.ends_with("cleared") && !t.starts_with("lean-red")).collect();
    assert!(folded_clears.is_empty(), "clears of alarms nobody was told of: {folded_clears:?}");
    daemon.stop();
}

/// An outside tester's: the red a house's other red was folded into got better and cleared, and
/// the folded red reached nobody until a person resolved the first. It is told once the first
/// no longer takes it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_red_is_told_when_the_red_it_was_folded_into_clears() {
    let (mosquitto, webhook, _dir, _, mut daemon) = house_07_red().await;
    mosquitto.publish(&topic("house-08"), &reading(6.5)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(told(&webhook), vec!["lean-red house-07 fired"], "house-08's red folded into house-07's");
    // house-07 stands again: its clear goes out, and house-08's red with it.
    mosquitto.publish(&topic("house-07"), &reading(0.2)).unwrap();
    let both = wait_for(10 * SECOND, || async { told(&webhook).iter().any(|t| t == "lean-red house-08 fired") }).await;
    assert!(both, "{:?}", told(&webhook));
    let red_08 = webhook.bodies().into_iter().find(|b| b["rule"] == "lean-red" && b["sensor"] == "house-08").unwrap();
    assert!(red_08["folded_into"].is_null() && red_08["incident_id"].as_i64().is_some(), "{red_08}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let copies = told(&webhook).iter().filter(|t| t.starts_with("lean-red house-08")).count();
    assert_eq!(copies, 1, "told once: {:?}", told(&webhook));
    daemon.stop();
}
