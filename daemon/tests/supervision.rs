//! Under systemd: the daemon says READY=1 once it is up and pets the watchdog, over a
//! NOTIFY_SOCKET datagram socket the test owns; `gridwatch validate` checks without starting.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::gridwatch;
use gridwatch_tests::Mosquitto;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_it_is_ready_and_pets_the_watchdog() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        format!(
            "state_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-notify\"\n[[sensor]]\nid = \"a\"\nkind = \"tilt\"\nsite = \"s\"\n",
            mosquitto.url()
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["run", "--config", "gridwatch.toml"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buffer = [0u8; 256];
    while !(messages.iter().any(|m: &String| m.contains("READY=1")) && messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2) {
        let received = tokio::time::timeout(Duration::from_secs(15), socket.recv(&mut buffer)).await;
        let Ok(Ok(n)) = received else { break };
        messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(messages.first().is_some_and(|m| m.contains("READY=1")), "{messages:?}");
    assert!(messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2, "{messages:?}");
    assert!(status.success());
}

#[test]
fn validate_checks_config_and_rules_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    // The broker does not exist: validate must not try to reach it.
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"never-created\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\n[rules]\npaths = [\"rules.toml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n").unwrap();
    let output = gridwatch().args(["validate", "--config", "gridwatch.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rules = 1 + gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).expect("shipped packs compile").rules.len();
    let expected = format!("ok: 0 sensors, 0 serial ports, {rules} rules in 4 files");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with(&expected), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(!dir.path().join("never-created").exists(), "validate opened nothing");

    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelwo = 5\n").unwrap();
    let output = gridwatch().args(["validate", "--config", "gridwatch.toml"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rules.toml:4:1"), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The shipped unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/gridwatch.service")).unwrap();
    let path = dir.join("gridwatch.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/gridwatch", env!("CARGO_BIN_EXE_gridwatch"))).unwrap();
    path
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify_and_stays_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (Debian package systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    let security = Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&unit).output().unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for gridwatch.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    assert!(exposure <= 2.0, "exposure {exposure} (docs/operations.md records 1.6):\n{report}");
}
