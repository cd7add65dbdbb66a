//! Chaos on the alarm path: a crash costs at most one duplicate and never a lost alarm or clear.
//! The daemon is killed with SIGKILL again and again while four sensors keep going in and out of
//! alarm; between kills the broker is restarted, the database goes away for a while, oversized
//! and malformed messages arrive, a kill leaves a torn crash-log write behind, the box boots with
//! its clock three days behind or at 1970 and NTP steps it mid-run (libfaketime), and two more
//! channels misbehave (one answers after 30 s, one fails every request). The
//! devices' publisher is the oracle for the readings (what the broker acknowledged), the stream
//! itself for the alarms (every switch from good to bad is one `fired` at that reading's time,
//! every switch back one `cleared`), and the office's real webhook receiver counts what reached
//! it.
//!
//! The state directory is a loop-mounted ext4 image, as an SD card (`common::sd_card`: root
//! needed). With `GRIDWATCH_SOAK_CARD=1` the card also stalls (a kill in the middle of a stall
//! too) or fails read-only and is repaired at the next boot; that run still loses and repeats
//! alarms and is not part of the suite (docs/reliability.md, "The chaos soak").
//!
//! The suite runs 25 kills (about a minute and a half); `GRIDWATCH_SOAK_KILLS=400` is the soak
//! (an hour), whose figures are in docs/reliability.md.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sd_card::SdCard;
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
    /// The SD card stops writing for [`STALL`] without an error (`fsfreeze`), then goes on.
    CardStalls,
    /// The card stalls, and the power is cut in the middle of the stall.
    KilledDuringStall,
    /// The card fails read-only; the box runs on it for [`READ_ONLY`] and is killed; the next
    /// boot repairs the card (`e2fsck`).
    CardFails,
    /// The card fails read-only, the daemon is killed and starts again on the read-only card
    /// (systemd restarts it), runs for [`READ_ONLY`] more and is killed; the next boot repairs it.
    CardFailsRestarted,
}

/// How long the card stalls.
const STALL: Duration = Duration::from_millis(6_000);
/// How long the box runs on a read-only card.
const READ_ONLY: Duration = Duration::from_millis(3_000);

/// How long a box that booted with a wrong clock runs before NTP sets it.
const UNSET_CLOCK: Duration = Duration::from_millis(2_000);

/// Whether the SD card troubles are in the run (`GRIDWATCH_SOAK_CARD=1`): not in the suite's
/// run, because they still cost alarms (docs/reliability.md, "The chaos soak").
fn card_troubles() -> bool {
    std::env::var("GRIDWATCH_SOAK_CARD").is_ok_and(|value| value == "1")
}

fn trouble(kill: usize) -> Trouble {
    let card = |trouble| if card_troubles() { trouble } else { Trouble::None };
    match kill % 16 {
        1 | 7 => Trouble::Poison,
        2 => Trouble::ClockNotSet("-3d"),
        3 | 9 => Trouble::BrokerRestart,
        4 | 10 => Trouble::TornCrashLog,
        5 | 11 => Trouble::DatabaseOutage,
        6 => card(Trouble::CardStalls),
        8 => Trouble::ClockNotSet("@1970-01-02 00:00:00"),
        12 => card(Trouble::CardFails),
        13 => card(Trouble::KilledDuringStall),
        15 => card(Trouble::CardFailsRestarted),
        _ => Trouble::None,
    }
}

/// How long the trouble before kill number `kill` adds to the run.
fn trouble_time(kill: usize) -> Duration {
    match trouble(kill) {
        Trouble::BrokerRestart => SECOND,
        Trouble::DatabaseOutage => 3 * SECOND,
        Trouble::ClockNotSet(_) => 2 * UNSET_CLOCK,
        Trouble::CardStalls | Trouble::KilledDuringStall => STALL,
        Trouble::CardFails => READ_ONLY,
        Trouble::CardFailsRestarted => 3 * READ_ONLY,
        Trouble::None | Trouble::Poison | Trouble::TornCrashLog => Duration::ZERO,
    }
}

/// Whether the reading acknowledged at `at` (wall ms) was judged around a reboot after the card
/// failed — from the start of that run to the end of the next. What the box judged and sent
/// while its card could not write waits in the runtime directory, which a reboot empties: the
/// box restarts on an older rule state than what it sent from memory (docs/reliability.md).
fn after_card_failure(kill_starts: &[(i64, Trouble)], at: i64) -> bool {
    kill_starts.iter().enumerate().any(|(kill, (start, trouble))| {
        let card_failed = matches!(trouble, Trouble::CardFails | Trouble::CardFailsRestarted);
        let end = kill_starts.get(kill + 2).map_or(i64::MAX, |(next, _)| *next);
        card_failed && (*start..end).contains(&at)
    })
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
        "state_dir = \"state\"\nruntime_dir = \"run\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-crash-{http_port}\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\nstate_save_secs = 10\n\n[alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\nmax_attempts = 20\ntimeout_secs = 2\n\n[[alerts.webhook]]\nname = \"slow-partner\"\nurl = \"{}\"\ntimeout_secs = 60\n\n[[alerts.webhook]]\nname = \"broken-partner\"\nurl = \"{}\"\nmax_attempts = 2\ntimeout_secs = 2\n\n[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\nbatch_size = 200\nflush_interval_ms = 100\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[ingest]\nclock_synchronized = \"{}\"\n",
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

/// An alarm event as people get it: the sensor, `fired` or `cleared`, and the time of the reading
/// that caused it (the devices stamp every reading, uniquely per sensor).
type Event = (String, String, i64);

/// The events the stream calls for: each sensor's switch from good to bad at the first bad
/// reading of a run, and back at the first good one after it.
fn expected_events(t0: i64, per_sensor: i64) -> BTreeSet<Event> {
    let mut events = BTreeSet::new();
    for (index, sensor) in SENSORS.iter().enumerate() {
        for step in (RUN..per_sensor).step_by(RUN as usize) {
            let at = t0 + (step * SENSORS.len() as i64 + index as i64) * 100;
            let event = if (step / RUN) % 2 == 1 { "fired" } else { "cleared" };
            events.insert((sensor.to_string(), event.to_string(), at));
        }
    }
    events
}

/// What reached the receiver, counted against the stream.
#[derive(Debug, Default)]
struct Tally {
    bodies: usize,
    /// Bodies of an event that arrived before (a re-send after a crash).
    resent: usize,
    /// Events the stream does not call for (e.g. a second `fired` for one bad run).
    extra: Vec<Event>,
    /// Events the stream calls for that never arrived.
    lost: Vec<Event>,
    /// The expected events that arrived, by kind.
    fired: usize,
    cleared: usize,
    /// Bodies sent from memory while the card could not record them (no journal id).
    from_memory: usize,
    /// Runs whose `cleared` arrived before their `fired`.
    out_of_order: usize,
}

fn tally(bodies: &[serde_json::Value], expected: &BTreeSet<Event>) -> Tally {
    let mut tally = Tally { bodies: bodies.len(), ..Tally::default() };
    // The arrival of each event's first copy.
    let mut arrived: BTreeMap<Event, usize> = BTreeMap::new();
    for (index, body) in bodies.iter().enumerate() {
        if body["event_id"].as_i64().is_none() {
            tally.from_memory += 1;
        }
        let event = (
            body["sensor"].as_str().unwrap_or_default().to_string(),
            body["event"].as_str().unwrap_or_default().to_string(),
            body["at_ms"].as_i64().unwrap_or_default(),
        );
        match arrived.entry(event) {
            std::collections::btree_map::Entry::Occupied(_) => tally.resent += 1,
            std::collections::btree_map::Entry::Vacant(first) => {
                first.insert(index);
            }
        }
    }
    tally.lost = expected.iter().filter(|event| !arrived.contains_key(*event)).cloned().collect();
    for (event, index) in &arrived {
        if !expected.contains(event) {
            tally.extra.push(event.clone());
            continue;
        }
        if event.1 == "fired" {
            tally.fired += 1;
            continue;
        }
        tally.cleared += 1;
        // Its run's `fired`: the sensor's latest expected one before it.
        let fired = expected.range((event.0.clone(), "fired".to_string(), i64::MIN)..(event.0.clone(), "fired".to_string(), event.2)).next_back();
        if fired.and_then(|fired| arrived.get(fired)).is_some_and(|fired_index| fired_index > index) {
            tally.out_of_order += 1;
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
    let mut card = SdCard::mount_sized(dir.path(), "256M");
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
    let pace = (0..kills).map(|kill| run_before(kill) + trouble_time(kill)).sum::<Duration>() / readings as u32;
    let expected_events = expected_events(t0, per_sensor);
    let devices = tokio::spawn(async move {
        let mut publisher = Publisher::connect(port, "crash-devices").await.unwrap();
        let mut acked: Vec<(usize, i64)> = Vec::new();
        let mut acked_at: Vec<i64> = Vec::new();
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
            acked_at.push(now_ms());
            tokio::time::sleep(pace).await;
        }
        (acked, acked_at)
    });

    let mut troubles: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kill_starts: Vec<(i64, Trouble)> = Vec::new();
    for kill in 0..kills {
        kill_starts.push((now_ms(), trouble(kill)));
        match trouble(kill) {
            Trouble::None | Trouble::TornCrashLog | Trouble::ClockNotSet(_) => {}
            Trouble::CardStalls => {
                let stalled = card.stall();
                tokio::time::sleep(STALL).await;
                drop(stalled);
                *troubles.entry("card stalls").or_default() += 1;
            }
            Trouble::KilledDuringStall => {
                tokio::time::sleep(run_before(kill)).await;
                let stalled = card.stall();
                tokio::time::sleep(STALL).await;
                // The power cut: the process dies once its blocked writes return.
                daemon.signal("KILL");
                drop(stalled);
                daemon.kill_hard();
                *troubles.entry("kills in a stall").or_default() += 1;
                (daemon, faked_clock) = start_for(kill + 1, dir.path());
                continue;
            }
            Trouble::CardFails | Trouble::CardFailsRestarted => {
                card.fail();
                let failing = wait_for(5 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_store_write_failing") == Some(1.0) }).await;
                assert!(failing, "the daemon did not see its card fail within 5 s: {:?}", daemon.stderr());
                tokio::time::sleep(READ_ONLY).await;
                if trouble(kill) == Trouble::CardFailsRestarted {
                    daemon.kill_hard();
                    daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
                    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_store_write_failing") == Some(1.0) }).await;
                    assert!(up, "the daemon did not start on the read-only card: {:?}", daemon.stderr());
                    tokio::time::sleep(READ_ONLY).await;
                    *troubles.entry("restarts on a read-only card").or_default() += 1;
                }
                tokio::time::sleep(run_before(kill)).await;
                daemon.kill_hard();
                card.repair();
                // A reboot: the runtime directory is a tmpfs.
                let _ = std::fs::remove_dir_all(dir.path().join("run"));
                *troubles.entry("card failures, repaired at the next boot").or_default() += 1;
                (daemon, faked_clock) = start_for(kill + 1, dir.path());
                continue;
            }
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
    let (acked, acked_at) = devices.await.unwrap();
    assert_eq!(acked.len() as i64, readings, "the broker acknowledged every reading");

    let cycles = (per_sensor / (2 * RUN)) as usize * SENSORS.len();
    assert_eq!(per_sensor % (2 * RUN), RUN, "the stream ends on a good run");
    let expected = 2 * cycles;
    assert_eq!(expected_events.len(), expected);
    // Until every expected event is in, or nothing more came for 15 s (the office's retries are
    // a few seconds apart), at most a minute.
    let mut quiet_since = (std::time::Instant::now(), hook.bodies().len());
    let settled = wait_for(60 * SECOND, || {
        let bodies = hook.bodies();
        if bodies.len() != quiet_since.1 {
            quiet_since = (std::time::Instant::now(), bodies.len());
        }
        let tally = tally(&bodies, &expected_events);
        let done = tally.fired + tally.cleared >= expected || quiet_since.0.elapsed() > 15 * SECOND;
        async move { done }
    })
    .await;
    // Stragglers (a re-send still in flight) arrive too before counting.
    tokio::time::sleep(3 * SECOND).await;
    let tally = tally(&hook.bodies(), &expected_events);
    let mut missing_readings = 0;
    for (index, sensor) in SENSORS.iter().enumerate() {
        let have = stored(&vm, sensor).await;
        missing_readings += acked.iter().filter(|(s, ts)| *s == index && !have.contains(ts)).count();
    }
    // What a kill while the card could not write costs, and everything else.
    let acked_when = |event: &Event| acked_at.get(((event.2 - t0) / 100) as usize).copied().unwrap_or_default();
    let (lost_card, lost_other): (Vec<&Event>, Vec<&Event>) = tally.lost.iter().partition(|e| after_card_failure(&kill_starts, acked_when(e)));
    let (extra_card, extra_other): (Vec<&Event>, Vec<&Event>) = tally.extra.iter().partition(|e| after_card_failure(&kill_starts, acked_when(e)));
    // The runs whose events the store never kept before a reboot: the one whose card failed, and
    // the one restarted on the read-only card.
    let unkept_runs: usize = kill_starts
        .iter()
        .map(|(_, t)| match t {
            Trouble::CardFails => 1,
            Trouble::CardFailsRestarted => 2,
            _ => 0,
        })
        .sum();
    let (slow_received, broken_refused) = (slow.bodies().len(), failing.requests());
    let beyond_expected = tally.bodies.saturating_sub(expected);
    println!(
        "kills {kills}; besides {troubles:?}; the slow partner received {slow_received} and the broken one refused {broken_refused}; readings {readings} acknowledged {} missing from the database {missing_readings}; events expected {expected} (fired {cycles}, cleared {cycles}); received {} bodies: fired {} cleared {} re-sent {} sent from memory {} cleared-before-fired {}; beyond expected {beyond_expected} ({:.2} per kill); lost {} + extra {} around reboots after the card failed ({unkept_runs} runs unkept) ({lost_card:?}, {extra_card:?}), lost {} + extra {} otherwise ({lost_other:?}, {extra_other:?})",
        acked.len(),
        tally.bodies,
        tally.fired,
        tally.cleared,
        tally.resent,
        tally.from_memory,
        tally.out_of_order,
        beyond_expected as f64 / kills as f64,
        lost_card.len(),
        extra_card.len(),
        lost_other.len(),
        extra_other.len(),
    );
    assert!(settled, "alarms and clears still arriving after a minute: {tally:?}; log: {:?}", daemon.stderr());
    assert_eq!((lost_other.len(), extra_other.len(), tally.out_of_order), (0, 0, 0), "{tally:?}");
    // Rebooted after its card failed, the box restarts on a rule state older than what it sent:
    // for each run the store never kept, each sensor's rule can differ from what people were
    // told by one event, no more.
    assert!(lost_card.len() + extra_card.len() <= unkept_runs * SENSORS.len(), "{tally:?}");
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
