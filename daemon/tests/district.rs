//! The district on loopback (issue 23; needs `--features cluster`, see README's test command):
//! a 3-node NATS JetStream cluster, a throw-away PostgreSQL, `gridwatch hub`, two community
//! boxes (real `gridwatch run` processes, each with its own mosquitto and sensors) whose links
//! to the district pass through a proxy that can blackhole them, and a webhook receiver for
//! `box-down`. One run goes through the scenarios in order, each asserting against the boxes'
//! own SQLite stores (the oracle: every alert event and incident transition a box journaled):
//!
//! - a box's link blackholed 20 s while its alarms fire: nothing reaches the district meanwhile,
//!   and after reconnection every row is in PostgreSQL exactly once; the cut-off box is reported
//!   down once and cleared once;
//! - PostgreSQL down while alarms fire: JetStream stores the batches, but the box's high-water
//!   mark does not move until the hub has committed them (end-to-end ack);
//! - `kill -9` of a box: exactly one `box-down` within 45 s, listing its open incident; cleared
//!   exactly once when it runs again;
//! - `kill -9` of the stream's leader node while both boxes alarm: nothing lost.
//! - two hubs, one active: `kill -9` of the active one, and the standby takes over within its
//!   lease, reporting no box down twice; a hub paused past its lease is fenced off.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, LinkProxy, Mosquitto, NatsCluster, Postgres, WebhookReceiver};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hub's lease lifetime here (30 s by default); boxes renew every second.
const LEASE_TTL: &str = "8s";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One community: its broker, its link to the district, its box.
struct Community {
    id: &'static str,
    mosquitto: Mosquitto,
    proxy: LinkProxy,
    dir: tempfile::TempDir,
    http_port: u16,
    daemon: Option<Daemon>,
}

impl Community {
    async fn start(id: &'static str, nats: &NatsCluster) -> Community {
        let mosquitto = Mosquitto::start().await.expect("mosquitto");
        let proxy = LinkProxy::start(nats.addrs()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let mut config = format!(
            "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-{id}\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[cluster]\nnats_urls = [\"{}\"]\nbox_id = \"{id}\"\ndistrict = \"old-town\"\nlease_renew_secs = 1\ncommit_wait_secs = 3\nbatch_rows = 4\n",
            mosquitto.url(),
            proxy.nats_url()
        );
        for sensor in 1..=3 {
            config.push_str(&format!("\n[[sensor]]\nid = \"{id}-{sensor:02}\"\nkind = \"water\"\nsite = \"{id}\"\n"));
        }
        std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
        // A warning closes its incident when the sensor clears: every bad run is its own incident.
        std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n").unwrap();
        let mut community = Community { id, mosquitto, proxy, dir, http_port, daemon: None };
        community.run_box().await;
        community
    }

    async fn run_box(&mut self) {
        let daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], self.dir.path());
        let topic = self.topic(1);
        let up = publish_until_evaluated(&self.mosquitto, &topic, || format!(r#"{{"do": 7.0, "ts": {}}}"#, now_ms()), self.http_port).await;
        assert!(up, "box {} did not start: {:?}", self.id, daemon.stderr());
        self.daemon = Some(daemon);
    }

    fn topic(&self, sensor: usize) -> String {
        format!("gridwatch/{}/{}-{sensor:02}/telemetry", self.id, self.id)
    }

    fn reading(&self, sensor: usize, value: f64) {
        self.mosquitto.publish(&self.topic(sensor), &format!(r#"{{"do": {value}, "ts": {}}}"#, now_ms())).unwrap();
    }

    /// Every sensor goes bad and back `cycles` times (a fired and a cleared each time); waits
    /// until the box has journaled them.
    async fn alarm_cycles(&self, cycles: usize) {
        self.alarm_cycles_of(cycles, &[1, 2, 3]).await;
    }

    /// [`Community::alarm_cycles`] of some sensors only.
    async fn alarm_cycles_of(&self, cycles: usize, sensors: &[usize]) {
        let before = self.local_ids("alert_events").len();
        for _ in 0..cycles {
            for value in [3.0, 7.0] {
                for &sensor in sensors {
                    self.reading(sensor, value);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        let expected = before + cycles * sensors.len() * 2;
        let journaled = wait_for(20 * SECOND, || async { self.local_ids("alert_events").len() >= expected }).await;
        assert!(journaled, "box {} journaled {} of {expected} alert events: {:?}", self.id, self.local_ids("alert_events").len(), self.stderr());
    }

    /// Ids in a table of the box's own store.
    fn local_ids(&self, table: &str) -> BTreeSet<i64> {
        let Ok(conn) = rusqlite::Connection::open_with_flags(self.dir.path().join("state/gridwatch.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
            return BTreeSet::new();
        };
        let Ok(mut statement) = conn.prepare(&format!("SELECT id FROM {table}")) else { return BTreeSet::new() };
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    }

    fn stderr(&self) -> Vec<String> {
        self.daemon.as_ref().map(Daemon::stderr).unwrap_or_default().into_iter().rev().take(30).collect()
    }
}

struct District {
    pg: Postgres,
    hook: WebhookReceiver,
    hub: Daemon,
    _hub_dir: tempfile::TempDir,
}

impl District {
    /// Ids of a box's rows in a district table (empty while PostgreSQL is down).
    async fn district_ids(&self, table: &str, box_id: &str) -> BTreeSet<i64> {
        let Ok((db, connection)) = tokio_postgres::connect(&self.pg.conninfo(), tokio_postgres::NoTls).await else { return BTreeSet::new() };
        tokio::spawn(connection);
        match db.query(&format!("SELECT id FROM {table} WHERE box_id = $1"), &[&box_id]).await {
            Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Waits until PostgreSQL holds exactly the box's alert events and incident transitions;
    /// fails with both sides when it does not within `timeout`.
    async fn assert_caught_up(&self, community: &Community, timeout: Duration) {
        let pairs = [("alert_events", "alert_events"), ("incident_events", "incident_transitions")];
        let caught_up = wait_for(timeout, || async {
            for (local, district) in pairs {
                if community.local_ids(local) != self.district_ids(district, community.id).await {
                    return false;
                }
            }
            true
        })
        .await;
        if !caught_up {
            for (local, district) in pairs {
                let (mine, theirs) = (community.local_ids(local), self.district_ids(district, community.id).await);
                eprintln!(
                    "{}: {local} missing at the hub: {:?}; unknown to the box: {:?}",
                    community.id,
                    mine.difference(&theirs).collect::<Vec<_>>(),
                    theirs.difference(&mine).collect::<Vec<_>>()
                );
            }
            panic!(
                "box {} not caught up\nbox: {:?}\nhub: {:?}",
                community.id,
                community.stderr(),
                self.hub.stderr().into_iter().rev().take(30).collect::<Vec<_>>()
            );
        }
    }

    /// The `box-down` events posted for `box_id`, in order.
    fn box_down(&self, box_id: &str) -> Vec<String> {
        self.hook.bodies().iter().filter(|b| b["kind"] == "box-down" && b["box"] == box_id).map(|b| b["event"].as_str().unwrap_or("?").to_string()).collect()
    }
}

async fn start_district(nats: &NatsCluster) -> District {
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let hub_dir = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let (conninfo, hook_url) = (pg.conninfo(), hook.url());
    let mut args = vec!["hub", "--postgres", &conninfo, "--webhook", &hook_url, "--lease-ttl", LEASE_TTL];
    for url in &urls {
        args.extend(["--nats", url.as_str()]);
    }
    let hub = Daemon::start(&args, hub_dir.path());
    District { pg, hook, hub, _hub_dir: hub_dir }
}

/// The node leading the uplink stream's RAFT group.
async fn stream_leader(nats: &NatsCluster) -> String {
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js.get_stream(gridwatch::cluster::STREAM).await.unwrap().info().await.unwrap().clone();
    info.cluster.and_then(|c| c.leader).expect("the stream has a leader")
}

/// The hub's high-water mark for a box and kind, read from KV as a box does.
async fn high_water_mark(nats: &NatsCluster, key: &str) -> i64 {
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let kv = async_nats::jetstream::new(client).get_key_value(gridwatch::cluster::HWM_BUCKET).await.unwrap();
    gridwatch::cluster::wire::parse_hwm(kv.get(key).await.unwrap().as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_loses_no_event_and_reports_a_dead_box_once() {
    let mut nats = NatsCluster::start(3).await.expect("nats-server");
    let district = start_district(&nats).await;
    let east = Community::start("east", &nats).await;
    let mut west = Community::start("west", &nats).await;
    east.alarm_cycles(1).await;
    west.alarm_cycles(1).await;
    district.assert_caught_up(&east, 60 * SECOND).await;
    district.assert_caught_up(&west, 30 * SECOND).await;

    // What the uplink costs on the link (printed for docs/district.md): idle (lease renewals
    // every second here, pings) and per alarm cycle (6 alert events and their transitions).
    let idle_from = east.proxy.bytes_forwarded();
    tokio::time::sleep(10 * SECOND).await;
    let idle = east.proxy.bytes_forwarded() - idle_from;
    let rows_from = (east.local_ids("alert_events").len(), east.local_ids("incident_events").len());
    let busy_from = east.proxy.bytes_forwarded();
    east.alarm_cycles(1).await;
    district.assert_caught_up(&east, 30 * SECOND).await;
    let busy = east.proxy.bytes_forwarded() - busy_from;
    let rows = east.local_ids("alert_events").len() - rows_from.0 + east.local_ids("incident_events").len() - rows_from.1;
    eprintln!("uplink idle: {} bytes/s with lease_renew_secs = 1; one alarm cycle: {busy} bytes for {rows} rows", idle / 10);
    assert!(rows >= 6);

    // (a) East's link is blackholed for 20 s while its alarms fire.
    let cut = Instant::now();
    east.proxy.set_blackholed(true);
    let at_hub_before = district.district_ids("alert_events", "east").await;
    east.alarm_cycles(3).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    assert_eq!(district.district_ids("alert_events", "east").await, at_hub_before, "nothing passes a blackholed link");
    assert_eq!(district.box_down("east"), ["raised"], "a box cut off past its lease is reported down once");
    east.proxy.set_blackholed(false);
    district.assert_caught_up(&east, 60 * SECOND).await;
    let cleared = wait_for(20 * SECOND, || async { district.box_down("east").len() == 2 }).await;
    assert!(cleared && district.box_down("east") == ["raised", "cleared"], "{:?}", district.box_down("east"));

    // PostgreSQL is down while alarms fire: JetStream takes the batches, the box does not move on.
    district.pg.stop().unwrap();
    let committed_before = high_water_mark(&nats, "east.alert").await;
    east.alarm_cycles(1).await;
    tokio::time::sleep(5 * SECOND).await;
    let newest = *east.local_ids("alert_events").last().unwrap();
    assert_eq!(high_water_mark(&nats, "east.alert").await, committed_before, "no commit, no high-water mark");
    assert!(committed_before < newest);
    district.pg.restart().unwrap();
    district.assert_caught_up(&east, 60 * SECOND).await;
    assert_eq!(high_water_mark(&nats, "east.alert").await, newest);

    // (b) West dies (kill -9) with an incident open.
    let transitions = west.local_ids("incident_events").len();
    west.reading(2, 2.0);
    let open = wait_for(20 * SECOND, || async { west.local_ids("incident_events").len() > transitions }).await;
    assert!(open, "west opened no incident");
    district.assert_caught_up(&west, 30 * SECOND).await;
    let killed = Instant::now();
    west.daemon.as_mut().unwrap().kill_hard();
    let down = wait_for(45 * SECOND, || async { !district.box_down("west").is_empty() }).await;
    assert!(down, "no box-down within 45 s of the kill; hub: {:?}", district.hub.stderr());
    eprintln!("box-down for a killed box after {:?}", killed.elapsed());
    let alarm = district.hook.bodies().into_iter().find(|b| b["box"] == "west").unwrap();
    let incidents: Vec<&str> = alarm["open_incidents"].as_array().unwrap().iter().filter_map(|i| i["sensor"].as_str()).collect();
    assert_eq!(incidents, ["west-02"], "box-down lists the open incident: {alarm}");
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(district.box_down("west"), ["raised"], "exactly one box-down");
    west.run_box().await;
    let back = wait_for(20 * SECOND, || async { district.box_down("west").len() >= 2 }).await;
    tokio::time::sleep(3 * SECOND).await;
    assert!(back && district.box_down("west") == ["raised", "cleared"], "{:?}", district.box_down("west"));

    // (c) kill -9 of the stream's leader node while both boxes alarm.
    let leader = stream_leader(&nats).await;
    tokio::join!(east.alarm_cycles(2), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.kill(&leader);
    });
    // West-02 is still in alarm from (b).
    west.alarm_cycles_of(2, &[1, 3]).await;
    district.assert_caught_up(&east, 60 * SECOND).await;
    district.assert_caught_up(&west, 60 * SECOND).await;
    let new_leader = stream_leader(&nats).await;
    assert_ne!(new_leader, leader);
    nats.restart(&leader).await.unwrap();
    // Only the two boxes' expected box-down events, nothing from the leader change.
    assert_eq!((district.box_down("east").len(), district.box_down("west").len()), (2, 2), "{:?}", district.hook.bodies());
}

/// A hub of its own (`name`), on the district's services, electing on a 3-second hub lease.
fn start_hub(nats: &NatsCluster, pg: &Postgres, hook: &WebhookReceiver, name: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (urls, conninfo, hook_url) = (nats.urls(), pg.conninfo(), hook.url());
    let mut args = vec!["hub", "--postgres", &conninfo, "--webhook", &hook_url, "--lease-ttl", LEASE_TTL, "--hub-lease", "3s", "--name", name];
    for url in &urls {
        args.extend(["--nats", url.as_str()]);
    }
    (Daemon::start(&args, dir.path()), dir)
}

fn logged(hub: &Daemon, text: &str) -> bool {
    hub.stderr().iter().any(|line| line.contains(text))
}

const ACTIVE: &str = "this hub is the district's active hub";

/// Hubs run active/standby: `kill -9` of the active one and the standby takes over within its
/// lease (the issue's target: 15 s) without reporting a dead box a second time; a hub paused
/// past its lease (SIGSTOP) comes back fenced off and reports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_hub_takes_over_and_no_box_is_reported_down_twice() {
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let box_down = || {
        hook.bodies()
            .iter()
            .filter(|b| b["kind"] == "box-down" && b["box"] == "north")
            .map(|b| b["event"].as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
    };
    let (mut first, _first_dir) = start_hub(&nats, &pg, &hook, "hub-a");
    assert!(wait_for(60 * SECOND, || async { logged(&first, ACTIVE) }).await, "the first hub never became active: {:?}", first.stderr());
    let (second, _second_dir) = start_hub(&nats, &pg, &hook, "hub-b");
    assert!(wait_for(30 * SECOND, || async { logged(&second, "standing by") }).await, "the second hub is not standing by: {:?}", second.stderr());
    assert!(!logged(&second, ACTIVE));

    let mut north = Community::start("north", &nats).await;
    tokio::time::sleep(3 * SECOND).await; // the hub has seen its lease
    north.daemon.as_mut().unwrap().kill_hard();
    assert!(wait_for(30 * SECOND, || async { box_down() == ["raised"] }).await, "{:?}; hub: {:?}", box_down(), first.stderr());

    // kill -9 of the active hub: the standby takes over and knows the box is down already.
    first.kill_hard();
    let killed = Instant::now();
    assert!(wait_for(15 * SECOND, || async { logged(&second, ACTIVE) }).await, "no takeover within 15 s: {:?}", second.stderr());
    eprintln!("the standby hub took over {:?} after the active one was killed", killed.elapsed());
    north.run_box().await;
    assert!(wait_for(30 * SECOND, || async { box_down().len() >= 2 }).await, "{:?}", box_down());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(box_down(), ["raised", "cleared"], "one raise and one clear across the takeover");

    // The active hub paused past its lease: a restarted hub takes over; the box dies again and
    // is reported once; the paused hub, resumed, finds its lease and its token outdated.
    let (third, _third_dir) = start_hub(&nats, &pg, &hook, "hub-c");
    assert!(wait_for(30 * SECOND, || async { logged(&third, "standing by") }).await, "{:?}", third.stderr());
    second.signal("STOP");
    assert!(wait_for(15 * SECOND, || async { logged(&third, ACTIVE) }).await, "no takeover from a paused hub: {:?}", third.stderr());
    north.daemon.as_mut().unwrap().kill_hard();
    assert!(wait_for(30 * SECOND, || async { box_down().len() >= 3 }).await, "{:?}", box_down());
    second.signal("CONT");
    assert!(wait_for(15 * SECOND, || async { logged(&second, "taken by another hub") }).await, "{:?}", second.stderr());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(box_down(), ["raised", "cleared", "raised"], "the resumed hub reported nothing");
}
