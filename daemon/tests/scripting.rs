//! The command line as scripts use it: every listing's `-o json` form parses with `jq` and holds
//! what the text form says, exit codes tell outcomes apart, reading commands leave a fresh
//! machine untouched, and completions and the man page are generated.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::gridwatch;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    let output = gridwatch().args(args).current_dir(dir).output().expect("run gridwatch");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `jq -c FILTER` on `json`; panics with jq's complaint when it does not parse.
fn jq(json: &str, filter: &str) -> String {
    let mut child =
        Command::new("jq").args(["-c", filter]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("jq (package jq)");
    child.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "jq {filter} refused: {}\n{json}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

const CONFIG: &str = "state_dir = \"state\"\n[mqtt]\nbroker = \"embedded\"\n[http]\nlisten = \"127.0.0.1:1\"\n[[sensor]]\nid = \"tap-1\"\nkind = \"water\"\nsite = \"school\"\ntags = { use = \"drinking\" }\ninterval_secs = 600\n[[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\n";

#[test]
fn reading_commands_on_a_fresh_machine_list_nothing_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), CONFIG).unwrap();
    for args in [&["list"][..], &["silences"], &["list", "--all"]] {
        let (code, stdout, stderr) = run(&[&["-o", "json", "incidents", "--config", "gridwatch.toml"][..], args].concat(), dir.path());
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(jq(&stdout, "length"), "0", "{stdout}");
    }
    let (code, stdout, _) = run(&["incidents", "--config", "gridwatch.toml", "list"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing yet"), "{stdout}");
    let (code, _, stderr) = run(&["incidents", "--config", "gridwatch.toml", "show", "3"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("no incident 3"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "a reading command created the state directory");
}

#[test]
fn incidents_and_silences_round_trip_through_jq() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), CONFIG).unwrap();
    let (code, stdout, stderr) = run(
        &["-o", "json", "incidents", "--config", "gridwatch.toml", "silence", "building", "B7", "--for", "2h", "--reason", "脚手架 scaffolding", "--by", "Li"],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let id = jq(&stdout, ".id");
    let (_, listed, _) = run(&["incidents", "--config", "gridwatch.toml", "silences", "-o", "json"], dir.path());
    assert_eq!(
        jq(&listed, "[.[] | select(.in_force) | {id, scope, target, reason}]"),
        format!("[{{\"id\":{id},\"scope\":\"building\",\"target\":\"B7\",\"reason\":\"脚手架 scaffolding\"}}]")
    );
    let (code, stdout, _) = run(&["incidents", "--config", "gridwatch.toml", "unsilence", &id, "-o", "json"], dir.path());
    assert_eq!(code, 0);
    assert_eq!(jq(&stdout, ".ended"), "true");
    let (_, listed, _) = run(&["incidents", "--config", "gridwatch.toml", "silences", "-o", "json"], dir.path());
    assert_eq!(jq(&listed, "length"), "0", "{listed}");
}

#[test]
fn rules_explain_and_test_have_json_forms() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), CONFIG).unwrap();
    let (code, stdout, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "tap-1", "-o", "json"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(jq(&stdout, ".sensor.tags.use"), "\"drinking\"");
    assert_eq!(jq(&stdout, "[.rules[].id] | index(\"drinking-chlorine-low\") != null"), "true", "{stdout}");
    assert_eq!(jq(&stdout, "[.rules[].id] | index(\"water-do-class-iii\")"), "null");
    assert!(jq(&stdout, ".rules[] | select(.id == \"drinking-chlorine-low\") | .description | join(\" \")").contains("below 0.02"), "{stdout}");

    std::fs::write(dir.path().join("mine.toml"), "[[rule]]\nid = \"do-low\"\nkind = \"water\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n").unwrap();
    let mut csv = String::from("ts,sensor,kind,do\n");
    for minute in 0..60 {
        csv.push_str(&format!("{},canal-02,water,{}\n", 1_795_392_000_000i64 + minute * 60_000, if (20..40).contains(&minute) { 4.2 } else { 6.0 }));
    }
    std::fs::write(dir.path().join("canal.csv"), csv).unwrap();
    let (code, stdout, stderr) = run(&["rules", "test", "--rules", "mine.toml", "--data", "canal.csv", "-o", "json"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(jq(&stdout, "[.timeline[] | .event]"), "[\"fired\",\"cleared\"]");
    assert_eq!(jq(&stdout, ".rules[0] | [.rule, .sensor, .fired, .active_secs]"), "[\"do-low\",\"canal-02\",1,1200]");
    assert_eq!(jq(&stdout, ".samples"), "60");
}

#[test]
fn status_says_69_when_the_daemon_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), CONFIG).unwrap();
    let (code, _, stderr) = run(&["status", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("is the daemon running? no answer from http://127.0.0.1:1/api/status"), "{stderr}");
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (code, bash, _) = run(&["completions", "bash"], dir.path());
    assert_eq!(code, 0);
    for command in ["probe", "incidents", "calibrate", "selftest", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    let (code, zsh, _) = run(&["completions", "zsh"], dir.path());
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef gridwatch"), "{}", &zsh[..zsh.len().min(80)]);
    let (code, man, _) = run(&["man"], dir.path());
    assert_eq!(code, 0);
    assert!(man.contains(".TH gridwatch 1") && man.contains("probe"), "{}", &man[..man.len().min(300)]);
    let (_, help, _) = run(&["probe", "--help"], dir.path());
    assert!(help.contains("Examples:") && help.contains("--profile"), "{help}");
}
