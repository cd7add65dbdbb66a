//! A typo must not leave the houses unwatched: after a start on a valid configuration the
//! daemon keeps a copy, and when the configuration or a rule file is broken at the next boot it
//! runs on that copy — degraded, saying so on /healthz, in /metrics and to the installer —
//! instead of refusing to start.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, now_ms, wait_for};
use std::path::Path;

const RULES: &str = "[[rule]]\nid = \"do-low\"\nkind = \"water\"\nvalue = \"do\"\nbelow = 5\nseverity = \"alarm\"\n";

fn write_config(dir: &Path, broker_port: u16, http_port: u16) -> String {
    let config = format!(
        "state_dir = \"state\"\n[mqtt]\nbroker = \"embedded\"\nembedded_listen = \"127.0.0.1:{broker_port}\"\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\n\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n"
    );
    std::fs::write(dir.join("gridwatch.toml"), &config).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    config
}

async fn health(port: u16) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
        Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn publish(broker_port: u16, payload: &str) {
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string(), "-q", "1", "-t", "gridwatch/east-canal/canal-02/telemetry", "-m", payload])
        .status()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(status.success());
}

/// Starts the daemon, waits until it serves /metrics, and returns it.
async fn start(dir: &Path, http_port: u16) -> Daemon {
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml", "--last-good", "last-good"], dir);
    let up = wait_for(20 * SECOND, || async { !metrics(http_port).await.is_empty() }).await;
    assert!(up, "{:?}", daemon.stderr());
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_file_or_config_at_boot_runs_on_the_last_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (broker_port, http_port) = (free_port(), free_port());
    let good_config = write_config(dir.path(), broker_port, http_port);

    // A good start is saved.
    let mut daemon = start(dir.path(), http_port).await;
    let saved = wait_for(10 * SECOND, || async { dir.path().join("last-good/last-good.json").exists() }).await;
    assert!(saved, "{:?}", daemon.stderr());
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_config_fallback"), Some(0.0));
    assert!(daemon.stop().success());

    // A typo in the rule file: the daemon still starts, on the saved rules, and says so.
    std::fs::write(dir.path().join("rules.toml"), RULES.replace("below = 5", "belwo = 5")).unwrap();
    let mut daemon = start(dir.path(), http_port).await;
    let (status, body) = health(http_port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("running on the last good configuration"), "{body}");
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_config_fallback"), Some(1.0));
    assert!(daemon.stderr().iter().any(|l| l.contains("rules.toml:5:1") && l.contains("belwo")), "the error is still shown: {:?}", daemon.stderr());
    let told = wait_for(10 * SECOND, || async { daemon.stdout().iter().any(|l| l.contains("rule=gridwatch-config-invalid") && l.contains("last good")) }).await;
    assert!(told, "installers get a device alarm: {:?}", daemon.stdout());
    // The saved rules watch the canal.
    let fired = wait_for(10 * SECOND, || {
        publish(broker_port, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms()));
        async { daemon.stdout().iter().any(|l| l.contains(" fired ") && l.contains("rule=do-low sensor=canal-02")) }
    })
    .await;
    assert!(fired, "{:?} {:?}", daemon.stdout(), daemon.stderr());
    assert!(daemon.stop().success());
    let copy = std::fs::read_to_string(dir.path().join("last-good/last-good.json")).unwrap();
    assert!(copy.contains("below = 5"), "a degraded start does not overwrite the good copy");

    // A typo in the configuration itself: the same.
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), good_config.replace("[rules]", "[rulez]")).unwrap();
    let mut daemon = start(dir.path(), http_port).await;
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_config_fallback"), Some(1.0));
    assert!(daemon.stderr().iter().any(|l| l.contains("gridwatch.toml:") && l.contains("rulez")), "{:?}", daemon.stderr());
    assert!(daemon.stop().success());

    // Fixed: back to normal, and saved again.
    std::fs::write(dir.path().join("gridwatch.toml"), &good_config).unwrap();
    let mut daemon = start(dir.path(), http_port).await;
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_config_fallback"), Some(0.0));
    assert!(daemon.stop().success());
}

/// The roster is the file a community office edits at every shift swap: a typo in it at boot
/// runs the box on the last good roster — the one last put in force, also by a reload while
/// running (it stopped the box for good before, and then brought back the roster of the last
/// start: outside testers) — and the roster fixed while degraded is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_roster_at_boot_runs_on_the_last_good_roster() {
    let dir = tempfile::tempdir().unwrap();
    let (broker_port, http_port) = (free_port(), free_port());
    let config = write_config(dir.path(), broker_port, http_port).replace("[[sensor]]\nid = \"canal-02\"", "[[sensor]]\ngrid = \"grid-5\"\nid = \"canal-02\"")
        + "[dispatch]\nroster = \"roster.toml\"\n";
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("roster.toml"), common::ALARM_LADDER_ROSTER).unwrap();
    let mut daemon = start(dir.path(), http_port).await;
    let saved = wait_for(10 * SECOND, || async { dir.path().join("last-good/last-good.json").exists() }).await;
    assert!(saved, "{:?}", daemon.stderr());
    // A shift swap saved while running: 李强 instead of 王芳.
    let li = "\n[[member]]\nid = \"li\"\nname = \"李强\"\nrole = \"worker\"\nphone = \"13800000009\"\ngrids = [\"grid-5\"]\n";
    let swapped = format!("{}{li}", common::ALARM_LADDER_ROSTER.replace("member = \"wang\"", "member = \"li\""));
    std::fs::write(dir.path().join("roster.toml"), &swapped).unwrap();
    let reloaded = wait_for(10 * SECOND, || async { daemon.stderr().iter().any(|l| l.contains("roster reloaded")) }).await;
    assert!(reloaded, "{:?}", daemon.stderr());
    assert!(daemon.stop().success());

    std::fs::write(dir.path().join("roster.toml"), swapped.replace("from = \"00:00\"", "from = \"00:00x\"")).unwrap();
    let daemon = start(dir.path(), http_port).await;
    assert_eq!(metric(&metrics(http_port).await, "gridwatch_config_fallback"), Some(1.0));
    assert!(daemon.stderr().iter().any(|l| l.contains("roster.toml:") && l.contains("00:00x")), "the error is still shown: {:?}", daemon.stderr());
    let reminded = |name: &'static str| {
        let daemon = &daemon;
        move || {
            publish(broker_port, &format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms()));
            let found = daemon
                .stdout()
                .iter()
                .any(|l| l.contains("reminder alarm") && l.contains("rule=do-low sensor=canal-02") && l.contains(&format!("On duty: {name}")));
            async move { found }
        }
    };
    let named = wait_for(10 * SECOND, reminded("李强")).await;
    assert!(named, "the roster last put in force names who is on duty: {:?} {:?}", daemon.stdout(), daemon.stderr());

    // Fixed while degraded (王芳 back on the shift): reloaded.
    std::fs::write(dir.path().join("roster.toml"), common::ALARM_LADDER_ROSTER).unwrap();
    let named = wait_for(15 * SECOND, reminded("王芳")).await;
    assert!(named, "the fixed roster is reloaded while degraded: {:?}", daemon.stderr());
}
