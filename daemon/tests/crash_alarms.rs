//! Chaos on the alarm path: a crash costs at most one duplicate and never a lost alarm or clear.
//! The daemon is killed with SIGKILL again and again while four sensors keep going in and out of
//! alarm; between kills the broker is restarted, the database goes away for a while, oversized
//! and malformed messages arrive, a kill leaves a torn crash-log write behind, the box boots with
//! its clock three days behind or at 1970 and NTP steps it mid-run (libfaketime), and two more
//! channels misbehave (one answers after 30 s, one fails every request). The devices' publisher is the oracle for the readings (what the broker
//! acknowledged), the stream itself for the alarms (every switch from good to bad is one
//! `fired`, every switch back one `cleared`), and the office's real webhook receiver counts what
//! reached it.
//!
//! The suite runs 25 kills (about a minute); `GRIDWATCH_SOAK_KILLS=400` is the soak (an hour),
//! whose figures are in docs/reliability.md.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, Publisher, VictoriaMetrics, WebhookReceiver};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SENSORS: [&str; 4] = ["canal-01", "canal-02", "canal-03", "canal-04"];
/// Readings in a run of good or of bad values.
const RUN: i64 = 4;

/// SIGKILLs in one run: 25 in the suite; `GRIDWATCH_SOAK_KILLS` sets more.
fn kills() -> usize {
    match std::env::var("GRIDWATCH_SOAK_KILLS") {
        Ok(value) => value.parse().expect("GRIDWATCH_SOAK_KILLS must be a number"),
        Err(_) => 25,
    }
}

/// How long the daemon runs before kill number `kill`: mostly under a second (the rule state
/// was not saved in that run: everything since the last save is judged again), every eighth
/// time past the save interval (it was).
fn run_before(kill: usize) -> Duration {
    if kill % 8 == 7 {
        Duration::from_millis(11_000)
    } else {
        Duration::from_millis(500 + (kill as u64 * 137) % 700)
    }
}

/// What else goes wrong before kill number `kill`, besides the kill itself.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trouble {
    None,
    /// The broker stops (SIGTERM, as systemd would) and comes back after a second.
    BrokerRestart,
    /// The time-series database is away for a few seconds (readings wait in the spool).
    DatabaseOutage,
    /// A 2 MiB message and a malformed one on the telemetry topics.
    Poison,
    /// The kill was a power cut in the middle of a crash-log write: a frame's start and no end
    /// behind the last whole one.
    TornCrashLog,
    /// The box booted with its clock here (libfaketime's syntax), not synchronised; NTP steps it
    /// to the true time after [`UNSET_CLOCK`].
    ClockNotSet(&'static str),
}

/// How long a box that booted with a wrong clock runs before NTP sets it.
const UNSET_CLOCK: Duration = Duration::from_millis(2_000);

fn trouble(kill: usize) -> Trouble {
    match kill % 12 {
        1 | 7 => Trouble::Poison,
        2 => Trouble::ClockNotSet("-3d"),
        3 | 9 => Trouble::BrokerRestart,
        4 | 10 => Trouble::TornCrashLog,
        5 | 11 => Trouble::DatabaseOutage,
        8 => Trouble::ClockNotSet("@1970-01-02 00:00:00"),
        _ => Trouble::None,
    }
}

/// Starts the daemon that runs until kill number `kill`: on a clock not set yet if that run's
/// trouble says so (the flag timesyncd leaves is gone until NTP sets it).
fn start_for(kill: usize, dir: &Path) -> (Daemon, Option<std::path::PathBuf>) {
    let args = ["run", "--config", "gridwatch.toml"];
    match trouble(kill) {
        Trouble::ClockNotSet(faked) => {
            let _ = std::fs::remove_file(dir.join("synchronized"));
            let (daemon, clock) = Daemon::start_with_faked_clock(&args, dir, faked);
            (daemon, Some(clock))
        }
        _ => (Daemon::start(&args, dir), None),
    }
}

/// A time a person reads in an alert: "time unknown", or within a few hours of the true time
/// (the devices stamp their readings an hour back) — never 1970 or the box's days-old clock.
fn believable(label: &str) -> bool {
    label == "time unknown" || chrono::DateTime::parse_from_rfc3339(label).is_ok_and(|t| (t.timestamp_millis() - now_ms()).abs() < 3 * 3_600_000)
}

/// Appends the start of a frame that never got its end to the newest crash-log segment; false
/// when there is none (the state was just saved).
fn tear_crash_log(state: &Path) -> bool {
    let newest = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let number: u64 = name.strip_prefix("unsaved-")?.strip_suffix(".log")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .max();
    let Some((_, path)) = newest else { return false };
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut file, &[0xF7, 0x4C, 0x2C, 0x07, b'c', b'a', b'n']).unwrap();
    true
}

fn write_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    vm: &VictoriaMetrics,
    hook: &WebhookReceiver,
    slow: &WebhookReceiver,
    failing: &WebhookReceiver,
    http_port: u16,
) {
    let mut config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-crash-{http_port}\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\nstate_save_secs = 10\n\n[alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\nmax_attempts = 20\ntimeout_secs = 2\n\n[[alerts.webhook]]\nname = \"slow-partner\"\nurl = \"{}\"\ntimeout_secs = 60\n\n[[alerts.webhook]]\nname = \"broken-partner\"\nurl = \"{}\"\nmax_attempts = 2\ntimeout_secs = 2\n\n[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\nbatch_size = 200\nflush_interval_ms = 100\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[ingest]\nclock_synchronized = \"{}\"\n",
        mosquitto.url(),
        hook.url(),
        slow.url(),
        failing.url(),
        vm.url(),
        dir.join("synchronized").display()
    );
    // timesyncd's flag: the clock is set, but for the runs that boot without it.
    std::fs::write(dir.join("synchronized"), b"").unwrap();
    for id in SENSORS {
        config.push_str(&format!("\n[[sensor]]\nid = \"{id}\"\nkind = \"water\"\nsite = \"east-canal\"\n"));
    }
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
    // A warning closes its incident when the sensor clears: every bad run is its own incident
    // (or the same one re-opened within the flap window).
    std::fs::write(dir.join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n").unwrap();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Timestamps stored in VictoriaMetrics for one sensor's `do`.
async fn stored(vm: &VictoriaMetrics, sensor: &str) -> BTreeSet<i64> {
    let series = vm.export(&format!(r#"{{__name__=~".*_do",sensor="{sensor}"}}"#)).await.unwrap_or_default();
    series.iter().flat_map(|s| s["timestamps"].as_array().cloned().unwrap_or_default()).filter_map(|t| t.as_i64()).collect()
}

/// What reached the receiver, counted against the stream.
#[derive(Debug, Default)]
struct Tally {
    bodies: usize,
    /// Bodies whose `event_id` came before (a re-send after a crash).
    resent: usize,
    /// Distinct events beyond the expected ones (e.g. a second `fired` for one bad run).
    extra_events: usize,
    fired: usize,
    cleared: usize,
    /// Bodies without an incident or an event id.
    unidentified: usize,
    /// Incidents whose `cleared` arrived before their `fired`.
    out_of_order: usize,
}

fn tally(bodies: &[serde_json::Value]) -> Tally {
    let mut tally = Tally { bodies: bodies.len(), ..Tally::default() };
    let mut seen = BTreeSet::new();
    let mut per_sensor: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut fired_seen = BTreeSet::new();
    for body in bodies {
        let (Some(event_id), Some(incident)) = (body["event_id"].as_i64(), body["incident_id"].as_i64()) else {
            tally.unidentified += 1;
            continue;
        };
        let event = body["event"].as_str().unwrap_or_default().to_string();
        match event.as_str() {
            "fired" => {
                fired_seen.insert(incident);
            }
            "cleared" if !fired_seen.contains(&incident) => tally.out_of_order += 1,
            _ => {}
        }
        if !seen.insert(event_id) {
            tally.resent += 1;
            continue;
        }
        per_sensor.entry(body["sensor"].as_str().unwrap_or_default().to_string()).or_default().push((event_id, event));
    }
    for events in per_sensor.values_mut() {
        events.sort();
        // The stream alternates: fired, cleared, fired, … — anything else is an extra event.
        let mut expect_fired = true;
        for (_, event) in events.iter() {
            match (event.as_str(), expect_fired) {
                ("fired", true) => {
                    tally.fired += 1;
                    expect_fired = false;
                }
                ("cleared", false) => {
                    tally.cleared += 1;
                    expect_fired = true;
                }
                _ => tally.extra_events += 1,
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_during_alarms_lose_no_alarm_or_clear_and_cost_at_most_one_duplicate_each() {
    let kills = kills();
    // Two bad runs per kill, and a last good run: every alarm has its clear.
    let per_sensor = kills as i64 * 4 * RUN + RUN;
    let readings = per_sensor * SENSORS.len() as i64;
    let mut mosquitto = Mosquitto::start_persistent("max_queued_messages 0\nmax_inflight_messages 0").await.expect("mosquitto");
    let mut vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let slow = WebhookReceiver::start_slow(30 * SECOND).await;
    let failing = WebhookReceiver::start(vec![500; 100_000]).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, &vm, &hook, &slow, &failing, http_port);

    let (mut daemon, mut faked_clock) = start_for(0, dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connects_total").unwrap_or(0.0) >= 1.0 }).await;
    assert!(up, "daemon did not connect: {:?}", daemon.stderr());

    // The devices: runs of RUN good readings then RUN bad ones, ending good; timestamps an hour
    // back (VictoriaMetrics' export does not return points after now), unique per sensor.
    let t0 = now_ms() - 3_600_000 - readings * 100;
    let port = mosquitto.port;
    // The stream spans the kills.
    let pace = (0..kills).map(run_before).sum::<Duration>() / readings as u32;
    let devices = tokio::spawn(async move {
        let mut publisher = Publisher::connect(port, "crash-devices").await.unwrap();
        let mut acked: Vec<(usize, i64)> = Vec::new();
        for i in 0..readings {
            let sensor = (i as usize) % SENSORS.len();
            let step = i / SENSORS.len() as i64;
            let ts = t0 + i * 100;
            let value = if (step / RUN) % 2 == 0 { 8.0 } else { 3.0 };
            let payload = format!(r#"{{"do": {value}, "ts": {ts}, "seq": {step}}}"#);
            let topic = format!("gridwatch/east-canal/{}/telemetry", SENSORS[sensor]);
            // A device keeps each reading until its broker has it, across broker restarts.
            loop {
                match publisher.publish_acked(&topic, payload.clone()).await {
                    Ok(()) => break,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Ok(again) = Publisher::connect(port, "crash-devices").await {
                            publisher = again;
                        }
                    }
                }
            }
            acked.push((sensor, ts));
            tokio::time::sleep(pace).await;
        }
        acked
    });

    let mut troubles: BTreeMap<&str, usize> = BTreeMap::new();
    for kill in 0..kills {
        match trouble(kill) {
            Trouble::None | Trouble::TornCrashLog | Trouble::ClockNotSet(_) => {}
            Trouble::BrokerRestart => {
                mosquitto.restart_after(SECOND).await.expect("mosquitto restarts");
                *troubles.entry("broker restarts").or_default() += 1;
            }
            Trouble::DatabaseOutage => {
                vm.stop();
                tokio::time::sleep(3 * SECOND).await;
                vm.resume().await.expect("victoria-metrics resumes");
                *troubles.entry("database outages of 3 s").or_default() += 1;
            }
            Trouble::Poison => {
                let big = dir.path().join("poison.json");
                std::fs::write(&big, format!(r#"{{"do": 8.0, "pad": "{}"}}"#, "x".repeat(2 * 1024 * 1024))).unwrap();
                let sent = std::process::Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "-q", "1", "-t", "gridwatch/east-canal/canal-01/telemetry", "-f"])
                    .arg(&big)
                    .status()
                    .expect("mosquitto_pub (package mosquitto-clients)");
                assert!(sent.success(), "the broker takes a 2 MiB message");
                mosquitto.publish("gridwatch/east-canal/canal-02/telemetry", "{\"do\": 8.0,").expect("mosquitto_pub");
                *troubles.entry("poison pairs (2 MiB + malformed)").or_default() += 1;
            }
        }
        if let Some(clock) = faked_clock.take() {
            // The daemon knows its clock is not set; then NTP comes up: the clock steps to the
            // true time and timesyncd leaves its flag.
            let unset = wait_for(UNSET_CLOCK, || async { metric(&metrics(http_port).await, "gridwatch_clock_trusted") == Some(0.0) }).await;
            assert!(unset, "booted on {:?}, the daemon did not say its clock is not set: {:?}", trouble(kill), daemon.stderr());
            tokio::time::sleep(UNSET_CLOCK).await;
            std::fs::write(&clock, "+0").unwrap();
            std::fs::write(dir.path().join("synchronized"), b"").unwrap();
            *troubles.entry("boots on a clock not set, stepped by NTP").or_default() += 1;
        }
        tokio::time::sleep(run_before(kill)).await;
        daemon.kill_hard();
        if trouble(kill) == Trouble::TornCrashLog && tear_crash_log(&dir.path().join("state")) {
            *troubles.entry("torn crash-log writes").or_default() += 1;
        }
        (daemon, faked_clock) = start_for(kill + 1, dir.path());
    }
    if let Some(clock) = faked_clock {
        tokio::time::sleep(UNSET_CLOCK).await;
        std::fs::write(&clock, "+0").unwrap();
        std::fs::write(dir.path().join("synchronized"), b"").unwrap();
    }
    let acked = devices.await.unwrap();
    assert_eq!(acked.len() as i64, readings, "the broker acknowledged every reading");

    let cycles = (per_sensor / (2 * RUN)) as usize * SENSORS.len();
    assert_eq!(per_sensor % (2 * RUN), RUN, "the stream ends on a good run");
    let expected = 2 * cycles;
    let settled = wait_for(60 * SECOND, || async { tally(&hook.bodies()).fired + tally(&hook.bodies()).cleared >= expected }).await;
    // Stragglers (a re-send still in flight) arrive too before counting.
    tokio::time::sleep(3 * SECOND).await;
    let tally = tally(&hook.bodies());
    let mut missing_readings = 0;
    for (index, sensor) in SENSORS.iter().enumerate() {
        let have = stored(&vm, sensor).await;
        missing_readings += acked.iter().filter(|(s, ts)| *s == index && !have.contains(ts)).count();
    }
    let lost = expected.saturating_sub(tally.fired + tally.cleared);
    let (slow_received, broken_refused) = (slow.bodies().len(), failing.requests());
    let beyond_expected = tally.bodies.saturating_sub(expected);
    println!(
        "kills {kills}; besides {troubles:?}; the slow partner received {slow_received} and the broken one refused {broken_refused}; readings {readings} acknowledged {} missing from the database {missing_readings}; events expected {expected} (fired {cycles}, cleared {cycles}); received {} bodies: fired {} cleared {} lost {lost} re-sent {} extra events {} unidentified {} cleared-before-fired {}; beyond expected {beyond_expected} ({:.2} per kill)",
        acked.len(),
        tally.bodies,
        tally.fired,
        tally.cleared,
        tally.resent,
        tally.extra_events,
        tally.unidentified,
        tally.out_of_order,
        beyond_expected as f64 / kills as f64,
    );
    assert!(settled, "not every alarm and clear arrived: {tally:?}; log: {:?}", daemon.stderr());
    assert_eq!(lost, 0, "{tally:?}");
    assert_eq!((tally.extra_events, tally.unidentified, tally.out_of_order), (0, 0, 0), "{tally:?}");
    for body in hook.bodies() {
        for key in ["at", "since"] {
            let label = body[key].as_str().unwrap_or_default();
            assert!(believable(label), "a person read {key} = {label:?}: {body}");
        }
    }
    assert!(beyond_expected <= kills, "at most one duplicate per kill: {tally:?}");
    // Readings are the telemetry path's promise; kept here as the oracle of what was judged.
    let stored_all = wait_for(60 * SECOND, || {
        let (vm, acked) = (&vm, &acked);
        async move {
            for (index, sensor) in SENSORS.iter().enumerate() {
                let have = stored(vm, sensor).await;
                if acked.iter().any(|(s, ts)| *s == index && !have.contains(ts)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(stored_all, "acknowledged readings missing from the database");
    assert!(daemon.stop().success());
}
