//! Nothing acknowledged is lost: readings the broker acknowledged to a device reach
//! VictoriaMetrics even though the daemon is killed with SIGKILL again and again during ingest,
//! the broker (with persistence) is restarted, and VictoriaMetrics is down for a while. The
//! publisher is the external oracle: it records every reading the broker PUBACKed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{metric, metrics, wait_balanced, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Mosquitto, Publisher, VictoriaMetrics};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SENSORS: [&str; 3] = ["house-01", "house-02", "house-03"];
/// SIGKILLs in one run: 20 in the suite; the soak (docs/reliability.md) sets
/// `GRIDWATCH_SOAK_KILLS` higher. Readings scale with it so ingest overlaps every kill.
fn kills() -> usize {
    match std::env::var("GRIDWATCH_SOAK_KILLS") {
        Ok(value) => value.parse().expect("GRIDWATCH_SOAK_KILLS must be a number"),
        Err(_) => 20,
    }
}

fn write_config(dir: &Path, mosquitto: &Mosquitto, vm: &VictoriaMetrics, http_port: u16) {
    let mut config = format!(
        "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-durable-{}\"\n\n[rules]\nbuiltin_packs = false\n\n[alerts]\nconsole = false\n\n[influxdb]\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\nbatch_size = 200\nflush_interval_ms = 100\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        mosquitto.url(),
        std::process::id(),
        vm.url()
    );
    for id in SENSORS {
        config.push_str(&format!("\n[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"lane\"\n"));
    }
    std::fs::write(dir.join("gridwatch.toml"), config).unwrap();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Timestamps stored in VictoriaMetrics for one sensor's `tilt_x`.
async fn stored(vm: &VictoriaMetrics, sensor: &str) -> BTreeSet<i64> {
    let series = vm.export(&format!(r#"{{__name__="tilt_x",sensor="{sensor}"}}"#)).await.unwrap_or_default();
    series.iter().flat_map(|s| s["timestamps"].as_array().cloned().unwrap_or_default()).filter_map(|t| t.as_i64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_sigkills_and_a_database_outage() {
    let kills = kills();
    let readings = kills as i64 * 75;
    // The broker must keep everything for the daemon's session while it is dead.
    let mut mosquitto = Mosquitto::start_persistent("max_queued_messages 0\nmax_inflight_messages 0").await.expect("mosquitto");
    let mut vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    write_config(dir.path(), &mosquitto, &vm, http_port);

    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let up = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_mqtt_connects_total").unwrap_or(0.0) >= 1.0 }).await;
    assert!(up, "daemon did not connect: {:?}", daemon.stderr());

    // The devices: publish readings with unique timestamps, recording what the broker acked.
    // All in the past (VictoriaMetrics' export does not return points after now), an hour back.
    let t0 = now_ms() - 3_600_000 - readings * 100;
    let port = mosquitto.port;
    let devices = tokio::spawn(async move {
        let mut publisher = Publisher::connect(port, "durability-devices").await.unwrap();
        let mut acked: Vec<(usize, i64)> = Vec::new();
        for i in 0..readings {
            let sensor = (i as usize) % SENSORS.len();
            let ts = t0 + i * 100;
            let seq = i / SENSORS.len() as i64;
            let payload = format!(r#"{{"x": {}, "y": 0.0, "ts": {ts}, "seq": {seq}}}"#, i as f64 / 1000.0);
            if publisher.publish_acked(&format!("gridwatch/lane/{}/telemetry", SENSORS[sensor]), payload).await.is_ok() {
                acked.push((sensor, ts));
            }
            // About 300 readings a second, so ingest overlaps the faults below.
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        acked
    });

    // The faults: SIGKILL the daemon again and again while it ingests; take the database away
    // for a while in the middle.
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(150 + (kill as u64 * 37) % 200)).await;
        daemon.kill_hard();
        if kill == 5 {
            mosquitto.restart().await.expect("mosquitto again");
        }
        if kill == kills / 2 {
            vm.stop();
        }
        if kill == kills / 2 + 3 || (kill == kills - 1 && !vm.is_running()) {
            vm.resume().await.expect("victoria-metrics again");
        }
        daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    }
    let acked = devices.await.unwrap();
    // A reading in flight while the broker restarts may go unacknowledged; it does not count.
    assert!(acked.len() as i64 >= readings - 10, "the broker acknowledged {} of {readings}", acked.len());

    // After the faults: every acknowledged reading must arrive.
    let complete = wait_for(90 * SECOND, || {
        let vm = &vm;
        let acked = &acked;
        async move {
            for (index, sensor) in SENSORS.iter().enumerate() {
                let have = stored(vm, sensor).await;
                if acked.iter().filter(|(s, _)| *s == index).any(|(_, ts)| !have.contains(ts)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let mut missing = 0;
    for (index, sensor) in SENSORS.iter().enumerate() {
        let have = stored(&vm, sensor).await;
        missing += acked.iter().filter(|(s, ts)| *s == index && !have.contains(ts)).count();
    }
    assert!(
        complete,
        "{missing} acknowledged readings missing from VictoriaMetrics; metrics: {}; stored: {:?}; log: {:?}",
        metrics(http_port).await,
        vm.export(r#"{__name__=~"tilt_.*"}"#).await.map(|s| s.len()),
        daemon.stderr()
    );
    assert_eq!(missing, 0);

    // Once drained, the spool is empty and nothing was dropped.
    let drained = wait_for(20 * SECOND, || async { metric(&metrics(http_port).await, "gridwatch_spool_points") == Some(0.0) }).await;
    let text = metrics(http_port).await;
    assert!(drained, "{text}");
    assert!(!text.lines().any(|l| l.starts_with("gridwatch_telemetry_points_dropped_total") && !l.ends_with(" 0")), "{text}");
    // And the last run's accounts balance: what the InfluxDB sink took on (the spool it found at
    // start plus what came since) was all written.
    let accounts = wait_balanced(http_port).await.unwrap_or_else(|accounts| panic!("accounts do not balance: {accounts}"));
    let influx = &accounts["sinks"][0];
    assert_eq!((influx["sink"].as_str(), influx["dropped"].as_u64(), influx["pending"].as_u64()), (Some("influxdb"), Some(0), Some(0)), "{accounts}");
    assert!(influx["delivered"].as_u64() > Some(0), "{accounts}");
    assert!(daemon.stop().success());
}
