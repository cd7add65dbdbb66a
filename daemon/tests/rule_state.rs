//! Rules at run time, through the real binary and a real broker: a bad reload keeps the old
//! rules running, a good one takes effect without a restart, and a hold timer survives a
//! restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const TOPIC: &str = "gridwatch/east-canal/canal-02/telemetry";

fn write_config(dir: &Path, mosquitto: &Mosquitto, http_port: u16) {
    write_config_saving_every(dir, mosquitto, http_port, 60);
}

fn write_config_saving_every(dir: &Path, mosquitto: &Mosquitto, http_port: u16, save_secs: u64) {
    let config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-rules-{}-{http_port}\"\n\n[[sensor]]\nid = \"canal-02\"\nkind = \"water\"\nsite = \"east-canal\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.d\"]\nstate_save_secs = {save_secs}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        std::process::id(),
    );
    std::fs::create_dir_all(dir.join("rules.d")).unwrap();
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
}

fn rule(id: &str, below: f64, hold: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\nvalue = \"do\"\nbelow = {below}\nfor = \"{hold}\"\nseverity = \"warning\"\n")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn reading(value: f64, ts: i64) -> String {
    format!(r#"{{"do": {value}, "ts": {ts}}}"#)
}

/// Publishes healthy readings until the daemon has accepted one.
async fn wait_until_ingesting(mosquitto: &Mosquitto, http_port: u16, daemon: &Daemon) {
    let ready = wait_for(20 * SECOND, || {
        mosquitto.publish(TOPIC, &reading(8.0, now_ms())).unwrap();
        async move { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 1.0 }
    })
    .await;
    assert!(ready, "no reading accepted; log: {:?}", daemon.stderr());
}

async fn wait_for_line(daemon: &Daemon, pick: fn(&Daemon) -> Vec<String>, needle: &str) -> bool {
    wait_for(20 * SECOND, || {
        let found = pick(daemon).iter().any(|line| line.contains(needle));
        async move { found }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_old_rules_and_a_good_one_replaces_them() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port);
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 5.0, "0s")).unwrap();
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &daemon).await;

    // A typo in the file: the reload is refused and the old rule keeps watching.
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 5.0, "0s").replace("below", "belwo")).unwrap();
    daemon.signal("HUP");
    assert!(wait_for_line(&daemon, Daemon::stderr, "new rules are invalid").await, "{:?}", daemon.stderr());
    let log = daemon.stderr().join("\n");
    assert!(log.contains("water.toml:4:1") && log.contains("did you mean `below`?"), "{log}");
    mosquitto.publish(TOPIC, &reading(4.0, now_ms())).unwrap();
    assert!(wait_for_line(&daemon, Daemon::stdout, "rule=do-low sensor=canal-02").await, "old rule still fires: {:?}", daemon.stdout());

    // A valid file: the new rule takes over without a restart.
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-very-low", 3.0, "0s")).unwrap();
    daemon.signal("HUP");
    assert!(wait_for_line(&daemon, Daemon::stderr, "rules reloaded").await, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &reading(2.0, now_ms())).unwrap();
    assert!(wait_for_line(&daemon, Daemon::stdout, "fired   warning rule=do-very-low sensor=canal-02").await, "{:?}", daemon.stdout());

    // The file moved away and back within a second (`git checkout`): no reload to no rules.
    let file = dir.path().join("rules.d/water.toml");
    let reloads = || daemon.stderr().iter().filter(|line| line.contains("rules reloaded")).count();
    // The file watcher sees the last write too (a SIGHUP reloaded it first) within 2 s.
    tokio::time::sleep(3 * SECOND).await;
    let before = reloads();
    std::fs::rename(&file, dir.path().join("water.toml.moved")).unwrap();
    tokio::time::sleep(SECOND).await;
    std::fs::rename(dir.path().join("water.toml.moved"), &file).unwrap();
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(reloads(), before, "{:?}", daemon.stderr());
    // Gone for good: the daemon keeps the rules it runs rather than judging nothing.
    std::fs::remove_file(&file).unwrap();
    assert!(wait_for_line(&daemon, Daemon::stderr, "the new rule set has no rule; the running rules stay").await, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &reading(8.0, now_ms())).unwrap();
    mosquitto.publish(TOPIC, &reading(2.5, now_ms() + 1)).unwrap();
    let fired = wait_for(20 * SECOND, || async {
        daemon.stdout().iter().filter(|line| line.contains("fired   warning rule=do-very-low sensor=canal-02")).count() == 2
    })
    .await;
    assert!(fired, "the running rule still judges: {:?}", daemon.stdout());
    std::fs::write(&file, rule("do-very-low", 3.0, "0s")).unwrap();

    // A new sensor in gridwatch.toml: a reload cannot add it, and says so instead of ignoring it.
    let mut config = std::fs::read_to_string(dir.path().join("gridwatch.toml")).unwrap();
    config.push_str("\n[[sensor]]\nid = \"canal-09\"\nkind = \"water\"\nsite = \"east-canal\"\n");
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    daemon.signal("HUP");
    assert!(wait_for_line(&daemon, Daemon::stderr, "new sensors canal-09").await, "{:?}", daemon.stderr());
    assert!(daemon.stderr().join("\n").contains("restart the daemon"), "{:?}", daemon.stderr());
    assert!(daemon.stop().success());
}

/// The line the console prints when `do-low` fires on canal-02 at 4.5.
const FIRED: &str = "fired   warning rule=do-low sensor=canal-02";

/// A daemon whose rule `do-low` (below 5) fires on canal-02 at 4.5: the broker, the state
/// directory, the HTTP port and the daemon.
async fn firing_below_five() -> (Mosquitto, tempfile::TempDir, u16, Daemon) {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port);
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 5.0, "0s")).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &daemon).await;
    mosquitto.publish(TOPIC, &reading(4.5, now_ms())).unwrap();
    assert!(wait_for_line(&daemon, Daemon::stdout, FIRED).await, "{:?}", daemon.stdout());
    (mosquitto, dir, http_port, daemon)
}

/// An outside tester: an operator lowered a firing rule's threshold (4.5 was a false alarm);
/// the rule started afresh, and the next real breach (3.0) was taken for the alarm its incident
/// already held and told to nobody. Now the incident's sensor is judged afresh and the breach is
/// told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_changed_while_it_fires_tells_its_next_alarm() {
    let (mosquitto, dir, _http_port, mut daemon) = firing_below_five().await;
    let fired = FIRED;

    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 4.0, "0s")).unwrap();
    daemon.signal("HUP");
    assert!(wait_for_line(&daemon, Daemon::stderr, "rules reloaded").await, "{:?}", daemon.stderr());
    // 4.5 is no problem under the new threshold: judged afresh at this reading.
    mosquitto.publish(TOPIC, &reading(4.5, now_ms())).unwrap();
    assert!(wait_for_line(&daemon, Daemon::stderr, "judged afresh").await, "{:?}", daemon.stderr());
    mosquitto.publish(TOPIC, &reading(3.0, now_ms())).unwrap();
    let told = wait_for(20 * SECOND, || async { daemon.stdout().iter().filter(|line| line.contains(fired)).count() == 2 }).await;
    assert!(told, "the breach under the new threshold was not told: {:?}\n{:?}", daemon.stdout(), daemon.stderr());
    assert!(daemon.stop().success());
}

/// The same edit made while the daemon is stopped (an operator's maintenance): at its start the
/// changed rule's incident is judged afresh, and the next breach is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_changed_while_the_daemon_was_stopped_tells_its_next_alarm() {
    let (mosquitto, dir, http_port, mut first) = firing_below_five().await;
    let fired = FIRED;
    assert!(first.stop().success());

    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 4.0, "0s")).unwrap();
    let second = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &second).await;
    assert!(wait_for_line(&second, Daemon::stderr, "judged afresh").await, "{:?}", second.stderr());
    mosquitto.publish(TOPIC, &reading(3.0, now_ms())).unwrap();
    let told = wait_for_line(&second, Daemon::stdout, fired).await;
    assert!(told, "the breach under the new threshold was not told: {:?}\n{:?}", second.stdout(), second.stderr());
}

/// The edit reloaded while the rule fires, and the daemon stopped before the sensor's next
/// reading: the saved rule state is already the new rule's, so only the store remembers that
/// the incident was to be judged afresh. At the next start the reading settles it, and the next
/// breach is told (it was taken for the alarm the incident held, and told to nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_reloaded_while_it_fires_is_judged_afresh_after_a_restart_before_its_next_reading() {
    let (mosquitto, dir, http_port, mut first) = firing_below_five().await;
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 4.0, "0s")).unwrap();
    first.signal("HUP");
    assert!(wait_for_line(&first, Daemon::stderr, "rules reloaded").await, "{:?}", first.stderr());
    assert!(first.stop().success());
    assert!(!first.stderr().iter().any(|l| l.contains("judged afresh")), "no reading came after the reload: {:?}", first.stderr());

    let second = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    assert!(!second.stderr().iter().any(|l| l.contains("rules changed while the daemon was stopped")), "{:?}", second.stderr());
    wait_until_ingesting(&mosquitto, http_port, &second).await;
    assert!(wait_for_line(&second, Daemon::stderr, "judged afresh").await, "{:?}", second.stderr());
    mosquitto.publish(TOPIC, &reading(3.0, now_ms())).unwrap();
    assert!(
        wait_for_line(&second, Daemon::stdout, FIRED).await,
        "the breach under the new threshold was not told: {:?}\n{:?}",
        second.stdout(),
        second.stderr()
    );
}

/// Each incident's rule and whether its sensor is marked normal, from `gridwatch incidents list`.
fn incidents_listed(dir: &Path) -> Vec<(String, bool)> {
    let listed = common::gridwatch().args(["-o", "json", "incidents", "--config", "gridwatch.toml", "list"]).current_dir(dir).output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    rows.iter().map(|row| (row["rule"].as_str().unwrap().to_string(), row["sensor_normal"].as_bool().unwrap())).collect()
}

/// A rule renamed while it fires, at a reload or while the daemon is stopped: nothing judges the
/// old rule's incident any more, so nothing would clear it, and its reminders kept saying it
/// fired next to the renamed rule's own incident (an outside tester). Its sensor is marked
/// normal at once; the renamed rule's breach is its own alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_renamed_while_it_fires_leaves_no_incident_firing_for_ever() {
    let (mosquitto, dir, http_port, mut first) = firing_below_five().await;
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low-canal", 5.0, "0s")).unwrap();
    first.signal("HUP");
    assert!(wait_for_line(&first, Daemon::stderr, "rules gone").await, "{:?}", first.stderr());
    assert_eq!(incidents_listed(dir.path()), vec![("do-low".to_string(), true)]);
    mosquitto.publish(TOPIC, &reading(4.5, now_ms())).unwrap();
    assert!(wait_for_line(&first, Daemon::stdout, "fired   warning rule=do-low-canal sensor=canal-02").await, "{:?}", first.stdout());
    assert!(first.stop().success());

    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low-east", 5.0, "0s")).unwrap();
    let second = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &second).await;
    assert_eq!(incidents_listed(dir.path()), vec![("do-low-canal".to_string(), true), ("do-low".to_string(), true)], "{:?}", second.stderr());
}

/// A threshold changed while the rule fires and the value still breaches under the new one: the
/// same alarm goes on, told once (an outside tester's accepted red was sent again as new after
/// an edit of its orange threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_changed_while_its_breach_goes_on_does_not_tell_it_again() {
    let (mosquitto, dir, http_port, daemon) = firing_below_five().await;
    let fired = FIRED;

    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 4.8, "0s")).unwrap();
    daemon.signal("HUP");
    assert!(wait_for_line(&daemon, Daemon::stderr, "rules reloaded").await, "{:?}", daemon.stderr());
    let before = accepted_now(http_port).await;
    mosquitto.publish(TOPIC, &reading(4.5, now_ms())).unwrap();
    mosquitto.publish(TOPIC, &reading(4.4, now_ms() + 1)).unwrap();
    let judged = wait_for(10 * SECOND, || async { accepted_now(http_port).await >= before + 2.0 }).await;
    assert!(judged, "{:?}", daemon.stderr());
    tokio::time::sleep(SECOND).await;
    let told = daemon.stdout().iter().filter(|line| line.contains(fired)).count();
    assert_eq!(told, 1, "the breach that goes on is not told again: {:?}", daemon.stdout());
    assert!(!daemon.stderr().iter().any(|l| l.contains("judged afresh")), "{:?}", daemon.stderr());
}

async fn accepted_now(http_port: u16) -> f64 {
    metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_timer_survives_a_restart() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port);
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 5.0, "8s")).unwrap();

    let mut first = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &first).await;
    let breach_began = now_ms();
    // Two breaching readings: a hold completes once a second reading has breached too.
    mosquitto.publish(TOPIC, &reading(4.0, breach_began)).unwrap();
    mosquitto.publish(TOPIC, &reading(4.0, breach_began + 1_000)).unwrap();
    let seen = wait_for(10 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 3.0 }).await;
    assert!(seen, "the breaching readings were not accepted");
    assert!(first.stop().success());
    assert!(!first.stdout().iter().any(|line| line.contains(" fired ")), "fired before the hold: {:?}", first.stdout());

    // The new process restores the hold from the store: it completes 8 s after the breach
    // began in the first process, not 8 s after this one started.
    let second = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let fired = wait_for_line(&second, Daemon::stdout, "rule=do-low").await;
    assert!(fired, "{:?}", second.stderr());
    let line = second.stdout().into_iter().find(|line| line.contains("rule=do-low")).unwrap();
    // The breach's start survives the restart. Across processes it is carried on the monotonic
    // timeline, whose wall-clock label may differ from the first process's by the time the
    // restart took, so it is checked to within that, not to the millisecond.
    let since = line
        .split("since=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    let drift = since.map(|since| (since - breach_began).abs());
    println!("since drift {drift:?} ms");
    assert!(line.contains(" fired ") && drift.is_some_and(|drift| drift <= 1_000), "since {since:?}, the breach began at {breach_began}: {line}");
    assert!(second.stderr().iter().any(|l| l.contains("rule state restored")), "{:?}", second.stderr());
}

/// The state file is rewritten only when the engine's state changed: a daemon with nothing to
/// judge does not keep writing to its SD card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_engine_is_not_saved_again() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config_saving_every(dir.path(), &mosquitto, http_port, 10);
    std::fs::write(dir.path().join("rules.d/water.toml"), rule("do-low", 5.0, "8s")).unwrap();
    let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &daemon).await;
    let saves = || async { metric(&metrics(http_port).await, "gridwatch_rule_state_saves_total").unwrap_or(0.0) };
    let saved = wait_for(15 * SECOND, || async { saves().await >= 1.0 }).await;
    assert!(saved, "the reading's state was not saved; log: {:?}", daemon.stderr());
    let file = dir.path().join("state/engine-state.json");
    let (count, written) = (saves().await, std::fs::metadata(&file).unwrap().modified().unwrap());

    tokio::time::sleep(12 * SECOND).await;
    assert_eq!(saves().await, count, "saved again with nothing new");
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), written);

    mosquitto.publish(TOPIC, &reading(7.0, now_ms())).unwrap();
    let saved_again = wait_for(15 * SECOND, || async { saves().await > count }).await;
    assert!(saved_again, "a new reading's state was not saved");
}

/// A box that was down longer than its sensors' no-data time (an upgrade, a power cut, a card
/// repaired) starts again: its sensors, reporting as ever, are not told silent before their first
/// readings had time to come (an outside tester's repaired box told four sensors reporting every
/// 20 s "no data for 5 minutes"); one that stays silent is told a no-data time after the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_back_after_a_long_stop_tells_no_reporting_sensor_silent() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, http_port);
    let config =
        std::fs::read_to_string(dir.path().join("gridwatch.toml")).unwrap().replace("site = \"east-canal\"\n", "site = \"east-canal\"\ninterval_secs = 2\n");
    std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
    std::fs::write(dir.path().join("rules.d/water.toml"), "[[rule]]\nid = \"silent\"\nno_data = \"3x\"\nseverity = \"warning\"\n").unwrap();
    let mut first = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    wait_until_ingesting(&mosquitto, http_port, &first).await;
    tokio::time::sleep(2 * SECOND).await;
    assert!(first.stop().success());
    // Down for 10 s, three times its no-data time; then the daemon starts and the probe goes on
    // reporting every 2 s, its first reading 2 s after the start.
    tokio::time::sleep(10 * SECOND).await;
    let second = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    for _ in 0..4 {
        tokio::time::sleep(2 * SECOND).await;
        mosquitto.publish(TOPIC, &reading(8.0, now_ms())).unwrap();
    }
    tokio::time::sleep(SECOND).await;
    let told: Vec<String> = second.stdout().into_iter().filter(|l| l.contains("rule=silent")).collect();
    assert!(told.is_empty(), "a sensor reporting as ever was told silent at the start: {told:?}");
    // Then it stops: told once its no-data time has passed.
    assert!(wait_for_line(&second, Daemon::stdout, "fired   warning rule=silent sensor=canal-02").await, "{:?}", second.stdout());
}
