//! Black-box tests of the `gridwatch` command line: `rules check`, config errors, and the demo
//! that the README promises.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::gridwatch;

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let output = gridwatch().args(args).current_dir(dir).output().expect("run gridwatch");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn rules_check_accepts_the_builtin_packs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(&["rules", "check"], dir.path());
    assert_eq!(code, 0);
    let shipped = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).expect("shipped packs compile").rules.len();
    assert!(stdout.starts_with(&format!("ok: {shipped} rules in 3 files")), "{stdout}");
}

#[test]
fn rules_check_reports_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "[[rule]]\nid = \"a\"\nvalue = \"do\"\nbelow = 5\nseverity = \"yellow\"\nfor = \"soon\"\n\n[[rule]]\nid = \"b\"\nvalue = \"x\"\nabove = 1\nclear_below = 2\nseverity = \"red\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["rules", "check", "mine.toml"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("mine.toml:6:7: error in `for`: `soon` is not a duration"), "{stderr}");
    assert!(stderr.contains("mine.toml:12:15: error in `clear_below`: clear level 2 must not be above the trigger 1"), "{stderr}");
    assert!(stderr.contains("2 error(s); no rule was loaded"), "{stderr}");
}

#[test]
fn rules_check_catches_clashes_with_builtin_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clash.toml"), "[[rule]]\nid = \"tilt-sudden\"\nvalue = \"x\"\nabove = 1\nseverity = \"red\"\n").unwrap();
    let (code, _, stderr) = run(&["rules", "check", "--with-builtin", "clash.toml"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("clash.toml:2:6: error in `id`: duplicate rule id `tilt-sudden` (first defined at builtin:tilt:"), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_config_with_exit_code_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\nbrokr = 1\n").unwrap();
    let (code, _, stderr) = run(&["run", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78);
    assert!(stderr.contains("gridwatch.toml:4:1: error: unknown field `brokr`"), "{stderr}");
}

#[test]
fn run_refuses_broken_rule_files_with_exit_code_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\n").unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), "state_dir = \"s\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\n[rules]\npaths = [\"rules.toml\"]\n")
        .unwrap();
    let (code, _, stderr) = run(&["run", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("rules.toml:1:1: error in `above`: a rule needs exactly one check"), "{stderr}");
}

#[test]
fn demo_runs_the_scenario_and_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(&["demo", "--for", "16s", "--speed", "240", "--state-dir", "state"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let alert_lines: Vec<&str> = stdout.lines().filter(|line| line.contains(" rule=")).collect();
    let has = |event: &str, rule: &str, sensor: &str| {
        alert_lines.iter().any(|line| line.contains(&format!(" {event} ")) && line.contains(&format!("rule={rule} sensor={sensor} ")))
    };
    assert!(has("fired", "tilt-sudden", "house-03"), "sudden jump: {stdout}");
    // `tilt-danger` waits an hour above 7‰ (spike bursts crossed it on healthy walls): the
    // jump is `tilt-sudden`'s alone within the demo's simulated hour.
    assert!(!has("fired", "tilt-danger", "house-03"), "the jump is one red incident, not two: {stdout}");
    // A lean of 0.008° a minute is sudden; a daily level is not judged within the demo's hour.
    assert!(has("fired", "tilt-sudden", "house-02"), "leaning house: {stdout}");
    assert!(!has("fired", "tilt-change", "house-02"), "no daily level from the first hour's readings: {stdout}");
    assert!(has("fired", "water-do-class-iii", "canal-02"), "oxygen dip: {stdout}");
    // The class alarms clear a day after the water is back inside (a river's daily cycle would
    // otherwise open one every dawn): the canal's recovery within the demo's hour leaves it open.
    assert!(!has("cleared", "water-do-class-iii", "canal-02"), "cleared within a day of the recovery: {stdout}");
    assert!(!alert_lines.iter().any(|line| line.contains("sensor=house-01 ") || line.contains("sensor=pond-01 ")), "healthy sensors stay quiet: {stdout}");
    let house_03: Vec<_> = alert_lines.iter().filter(|l| l.contains("rule=tilt-sudden sensor=house-03 ")).collect();
    let rule_events: Vec<_> = house_03.iter().filter(|l| !l.contains(" reminder ") && !l.contains(" escalated ") && !l.contains(" cleared ")).collect();
    assert_eq!(rule_events.len(), 1, "one incident for the jump, not one per reading: {house_03:?}");
    assert!(rule_events[0].contains(" danger "), "a house with one box follows it: {house_03:?}");
    // The loop closes: the worker on duty accepts from her link within 3 minutes (no reminder,
    // no escalation), goes on site and resolves; the office's screen is announced.
    assert!(!house_03.iter().any(|l| l.contains(" reminder ") || l.contains(" escalated ")), "accepted before any reminder: {house_03:?}");
    assert!(stdout.contains("office screen: http://127.0.0.1:") && stdout.contains("/board"), "{stdout}");
    let sudden = house_03[0].split("incident #").nth(1).and_then(|n| n.trim().parse::<i64>().ok()).expect("the jump's incident number");
    for step in ["接单", "到场", "办结"] {
        assert!(stdout.contains(&format!("demo worker: 王芳 {step} #{sudden} (east-yard B2) from her link")), "{step}: {stdout}");
    }
    let store = gridwatch::store::Store::open(&dir.path().join("state")).unwrap();
    let trail: Vec<String> = store.incident_history(sudden).unwrap().iter().map(|e| format!("{} {}", e.actor, e.action)).collect();
    assert!(trail.contains(&"王芳 (wang, own link) resolve".to_string()), "{trail:?}");
    assert!(stdout.contains(" 1 rejected;"), "the NaN glitch is counted: {stdout}");
    let journal = gridwatch::store::Store::open(&dir.path().join("state")).unwrap().recent_alerts(100).unwrap();
    assert_eq!(journal.len(), alert_lines.len(), "every console alert is in the journal");
}

#[test]
fn rules_test_replays_recorded_data_with_simulated_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "[[rule]]\nid = \"do-low\"\nkind = \"water\"\nvalue = \"do\"\nunit = \"mg/L\"\nbelow = 5\nclear_above = 5.3\nfor = \"10m\"\nseverity = \"warning\"\n",
    )
    .unwrap();
    let mut csv = String::from("ts,sensor,kind,do\n");
    for minute in 0..120 {
        let value = if (30..70).contains(&minute) { 4.2 } else { 6.0 };
        csv.push_str(&format!("{},canal-02,water,{value}\n", 1_795_392_000_000i64 + minute * 60_000));
    }
    std::fs::write(dir.path().join("canal.csv"), csv).unwrap();
    let (code, stdout, stderr) = run(&["rules", "test", "--rules", "mine.toml", "--data", "canal.csv"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2026-11-23T00:40:00.000Z fired   warning rule=do-low sensor=canal-02 value=4.2000mg/L"), "{stdout}");
    assert!(stdout.contains("2026-11-23T01:10:00.000Z cleared warning rule=do-low sensor=canal-02 value=6.0000mg/L"), "{stdout}");
    assert!(stdout.contains("120 samples replayed"), "{stdout}");
    let summary = stdout.lines().find(|l| l.starts_with("do-low ")).expect("summary row");
    assert!(summary.contains(" 30m ") && summary.ends_with("warning"), "{summary}");

    let (code, _, stderr) = run(&["rules", "test", "--rules", "mine.toml", "--data", "missing.csv"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("reading missing.csv"), "{stderr}");
}

#[test]
fn rules_explain_shows_the_effective_rules_of_a_sensor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[sensor]]\nid = \"tap-1\"\nkind = \"water\"\nsite = \"school\"\ntags = { use = \"drinking\" }\ninterval_secs = 600\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "tap-1"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tags: use=drinking"), "{stdout}");
    assert!(stdout.contains("drinking-chlorine-low"), "{stdout}");
    assert!(stdout.contains("danger   below 0.02, clears back above 0.03, after 5m"), "{stdout}");
    assert!(stdout.contains("warning  no data for more than 2× the report interval"), "{stdout}");
    assert!(!stdout.contains("water-do-class-iii"), "surface-water rules do not apply to a tap: {stdout}");
    // An override for this tap shows up as what the engine will run.
    std::fs::write(dir.path().join("mine.toml"), "[[rule]]\nid = \"chlorine-strict\"\nkind = \"water\"\nvalue = \"cl2\"\nbelow = 0.05\nseverity = \"alarm\"\n[[rule.override]]\nsensors = [\"tap-1\"]\nbelow = 0.3\n").unwrap();
    let (code, stdout, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "tap-1", "--rules", "mine.toml"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("overridden for this sensor by [[rule.override]] #1") && stdout.contains("alarm    below 0.3"), "{stdout}");
    let (code, _, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "nope"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("no sensor `nope` in the inventory"), "{stderr}");
}

#[test]
fn rules_explain_says_when_a_box_is_judged_against_its_buildings_other_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n");
    for id in ["b7-east", "b7-west"] {
        config.push_str(&format!("[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\n"));
    }
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    let (code, stdout, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "b7-east"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let drifting = stdout.split("\n\n").find(|rule| rule.starts_with("tilt-box-drifting")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(drifting.contains("judged against the building's other boxes (peers = \"building\")") && drifting.contains("within 2h"), "{drifting}");
    let lean = stdout.split("\n\n").find(|rule| rule.starts_with("tilt-change")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(!lean.contains("peers"), "a rule without peers says nothing of them: {lean}");
    // Stop 45: which device alarm puts a box in doubt for the building's red.
    let sudden = stdout.split("\n\n").find(|rule| rule.starts_with("tilt-sudden")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(sudden.contains("a box that reached a level after tilt-erratic opened on it counts as one alone"), "{sudden}");
    assert!(!lean.contains("in doubt"), "{lean}");
    let (code, stdout, stderr) = run(&["rules", "explain", "--config", "gridwatch.toml", "--sensor", "b7-east", "-o", "json"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let explained: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rules = explained["rules"].as_array().unwrap_or_else(|| panic!("{stdout}"));
    let peers_of = |id: &str| rules.iter().find(|r| r["id"] == id).map(|r| r["peers"].clone());
    assert_eq!(peers_of("tilt-box-drifting"), Some(serde_json::json!("building")), "{stdout}");
    assert_eq!(peers_of("tilt-change"), Some(serde_json::Value::Null), "{stdout}");
    let doubted_by = |id: &str| rules.iter().find(|r| r["id"] == id).map(|r| r["doubted_by"].clone());
    assert_eq!(doubted_by("tilt-sudden"), Some(serde_json::json!(["tilt-erratic"])), "{stdout}");
}

#[test]
fn rules_test_judges_a_building_when_its_boxes_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[rules]\nbuiltin_packs = false\npaths = [\"house.toml\"]\n");
    for id in ["b7-east", "b7-west", "b7-north"] {
        config.push_str(&format!("[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"north-lane\"\nbuilding = \"B7\"\n"));
    }
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(
        dir.path().join("house.toml"),
        "[[rule]]\nid = \"house-leans\"\nkind = \"tilt\"\nvalue = \"x\"\nagree = 2\nabove = 4\nseverity = \"alarm\"\n",
    )
    .unwrap();
    // East is knocked to 9 at minute 10; west follows to 5 at minute 20 and recovers at 40.
    let mut csv = String::from("ts,sensor,x\n");
    for minute in 0..60i64 {
        let ts = 1_795_392_000_000i64 + minute * 60_000;
        let east = if minute >= 10 { 9.0 } else { 0.1 };
        let west = if (20..40).contains(&minute) { 5.0 } else { 0.2 };
        csv.push_str(&format!("{ts},b7-east,{east}\n{ts},b7-west,{west}\n{ts},b7-north,0.1\n"));
    }
    std::fs::write(dir.path().join("tilt.csv"), csv).unwrap();
    let (code, stdout, stderr) = run(&["rules", "test", "--config", "gridwatch.toml", "--data", "tilt.csv"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<&str> = stdout.lines().filter(|l| l.contains("rule=house-leans")).collect();
    assert_eq!(events.len(), 2, "one box alone raises nothing; two agreeing boxes fire once and clear once: {stdout}");
    assert!(events[0].starts_with("2026-11-23T00:20:00.000Z fired   alarm   rule=house-leans sensor=building:B7(2/3) value=5.0000"), "{}", events[0]);
    assert!(events[1].starts_with("2026-11-23T00:40:00.000Z cleared alarm   rule=house-leans sensor=building:B7(1/3)"), "{}", events[1]);
}

#[test]
fn validate_checks_the_roster_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gridwatch.toml"), "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[dispatch]\nroster = \"roster.toml\"\n").unwrap();
    std::fs::write(dir.path().join("roster.toml"), "[[grid]]\nid = \"grid-5\"\n[[member]]\nid = \"wang\"\nrole = \"boss\"\ngrids = [\"grid-5\"]\n[[policy]]\nseverity = \"alarm\"\naccept_within = \"soon\"\n").unwrap();
    let (code, _, stderr) = run(&["validate", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("roster.toml:5:8: error: role `boss`: expected one of worker, grid_leader"), "{stderr}");
    assert!(stderr.contains("roster.toml:9:17: error: `soon` is not a duration"), "{stderr}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = gridwatch_tests::free_port();
    std::fs::write(dir.path().join("gridwatch.toml"), format!("state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\nembedded_listen = \"127.0.0.1:{port}\"\n"))
        .unwrap();
    let child = gridwatch()
        .args(["--log-format", "json", "run", "--config", "gridwatch.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info,rumqttd=off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::process::Command::new("kill").arg(child.id().to_string()).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let running = lines.iter().find(|l| l["message"] == "gridwatch running").expect("the start line");
    assert_eq!((running["level"].as_str(), running["sensors"].as_u64()), (Some("INFO"), Some(0)));
}

#[test]
fn gpio_settings_are_checked_and_need_the_rpi_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[gpio]\nsiren_pin = 17\nled_pin = 40\n[[gpio.input]]\npin = 17\nsensor = \"door-9\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("gridwatch.toml:6:11: error in `gpio`: GPIO 40 does not exist on the Pi's header"), "{stderr}");
    assert!(stderr.contains("gridwatch.toml:8:7: error in `gpio`: GPIO 17 is used twice"), "{stderr}");
    assert!(stderr.contains("no sensor `door-9` in the inventory"), "{stderr}");
    assert!(stderr.contains("built without GPIO support (build with --features rpi)"), "this test binary is built without rpi: {stderr}");
}

#[test]
fn an_sms_template_must_be_json_with_both_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[alerts.sms]]\nurl = \"https://sms.example/send\"\nbody = '{\"to\": \"{phone}\"'\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("gridwatch.toml:6:8: error in `alerts.sms.body`: not a JSON template"), "{stderr}");
    assert!(stderr.contains("the template needs both {phone} and {message}"), "{stderr}");
}

#[test]
fn a_configured_silence_needs_a_scope_and_rfc3339_times() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[[alerts.silence]]\nscope = \"house\"\ntarget = \"B7\"\nreason = \"roof\"\nauthor = \"li\"\nuntil = \"tomorrow\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("gridwatch.toml:5:9: error in `alerts.silence.scope`: `house` is not a silence scope"), "{stderr}");
    assert!(stderr.contains("gridwatch.toml:9:9: error in `alerts.silence.until`: `tomorrow` is not an RFC 3339 time"), "{stderr}");
}

/// An outside tester's typos passed `validate` without a word, each leaving a rule that watches
/// nothing: a sensor `house-7` for `house-07`, a grid `grid3` for `grid-3`.
#[test]
fn validate_warns_of_a_rule_that_matches_no_sensor_and_names_the_typo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        "state_dir = \"s\"\n[mqtt]\nbroker = \"embedded\"\n[rules]\nbuiltin_packs = false\npaths = [\"r.toml\"]\n\
         [[sensor]]\nid = \"house-07\"\nkind = \"tilt\"\nsite = \"north-lane\"\ngrid = \"grid-3\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("r.toml"),
        "[[rule]]\nid = \"typo-sensor\"\nkind = \"tilt\"\nsensors = [\"house-7\"]\nvalue = \"x\"\nabove = 1\nseverity = \"warning\"\n\n\
         [[rule]]\nid = \"typo-grid\"\nkind = \"tilt\"\ngrids = [\"grid3\"]\nvalue = \"x\"\nabove = 1\nseverity = \"warning\"\n\n\
         [[rule]]\nid = \"fine\"\nkind = \"tilt\"\nsensors = [\"house-07\"]\nvalue = \"x\"\nabove = 1\nseverity = \"warning\"\n\n\
         [[rule]]\nid = \"one-typo\"\nkind = \"tilt\"\nsensors = [\"house-07\", \"house-99\"]\nvalue = \"x\"\nabove = 1\nseverity = \"warning\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["validate", "--config", "gridwatch.toml"], dir.path());
    assert_eq!(code, 0, "a warning, not an error (one rule file may serve several boxes): {stderr}");
    assert!(stdout.contains("ok: 1 sensors"), "{stdout}");
    assert!(stderr.contains("warning: r.toml:1: rule `typo-sensor` matches no sensor of this configuration: no sensor `house-7`"), "{stderr}");
    assert!(stderr.contains("warning: r.toml:9: rule `typo-grid` matches no sensor of this configuration: no grid `grid3`"), "{stderr}");
    assert!(!stderr.contains("`fine`"), "{stderr}");
    // One box of a list misspelt leaves that box unwatched (an outside re-tester).
    assert!(stderr.contains("warning: r.toml:25: rule `one-typo` names what this configuration does not have: no sensor `house-99`"), "{stderr}");
}
