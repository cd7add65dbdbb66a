//! The district on loopback (issue 23; needs `--features cluster`, see README's test command):
//! a 3-node NATS JetStream cluster, a throw-away PostgreSQL, `gridwatch hub`, two community
//! boxes (real `gridwatch run` processes, each with its own mosquitto and sensors) whose links
//! to the district pass through a proxy that can blackhole them, and a webhook receiver for
//! `box-down`. One run goes through the scenarios in order, each asserting against the boxes'
//! own SQLite stores (the oracle: every alert event and incident transition a box journaled):
//!
//! - a box's link blackholed 20 s while its alarms fire: nothing reaches the district meanwhile,
//!   and within 10 s of reconnection every row is in PostgreSQL exactly once; the cut-off box is reported
//!   down once and cleared once;
//! - PostgreSQL down while alarms fire: JetStream stores the batches, but the box's high-water
//!   mark does not move until the hub has committed them (end-to-end ack);
//! - `kill -9` of a box: exactly one `box-down` within 45 s, listing its open incident; cleared
//!   exactly once when it runs again;
//! - `kill -9` of the stream's leader node while both boxes alarm: nothing lost.
//!
//! A second run: two hubs, one active: `kill -9` of the active one, and the standby takes over
//! within its lease, reporting no box down twice; a hub paused past its lease is fenced off.
//! Each hub's `/healthz` and `/metrics` say whether it is active or standing by.
//!
//! A third run: one roster put by the hub reaches every box (a bad one is refused by the hub
//! with its file:line, and by each box if it slips into KV; a box restarted offline starts on its
//! last good copy), and a worker's action posted to the hub while its box is offline is applied
//! there exactly once after reconnection, a replay and a forgery refused and counted; an action
//! signed for one box is refused by another (by the relay, and as `other_box` by the box), and a
//! box whose clock is ten minutes behind still applies actions sent now. The hub's
//! listener then shows the district: `/metrics` counts the relay and the rows, the board lists
//! the box cut off first with its open incident, the report's counts equal the boxes' stores,
//! and a screenshot of the board on a phone goes to docs/screenshots/district-board.png with
//! `GRIDWATCH_SCREENSHOTS=docs`.
//!
//! A fourth run: readings go up to the district's InfluxDB (VictoriaMetrics): a box's link
//! blackholed while its sensors report, then back, and each sensor's numbered readings are
//! there exactly once; the same with the district's InfluxDB down; the box's
//! `gridwatch_uplink_*` series show the backlog and the resends.
//!
//! A fifth run: a box whose store file is replaced by garbage while it is stopped starts on a
//! fresh store (ids from 1 again, a new store epoch); its next alarms reach PostgreSQL under the
//! new epoch, the old store's rows stay there untouched, and the hub counts the change. Then its
//! store is restored from an older copy (the same epoch, fewer rows than the hub holds): the box
//! takes a new epoch, and the alarm raised after the restore reaches PostgreSQL. A copy restored
//! again and run offline until its new ids pass the hub's mark is told by the row under the mark
//! (its digest), and its alarms reach PostgreSQL too.
//!
//! A fifth-and-a-half run: two boxes configured with one `box_id` renew one lease in turns: the
//! hub tells installers once (`box-id-shared`), clears it once one is gone, and then reports the
//! other down when it dies.
//!
//! A sixth run: a hub's lease renewal written but its answer lost (as when the bucket's RAFT
//! leader is killed mid-request): the hub alone in its district stays active. A hub whose link
//! to the cluster is blackholed says so on `/healthz` within seconds, and is ready once it is back.
//!
//! A seventh run: the workers' pages at the hub for a box behind NAT whose links point there:
//! the alarm's link opens at the hub, a step sent there while the box is cut off is applied once
//! after reconnection and then shown; tampered, expired and other boxes' links are refused.
//!
//! An eighth run: readings stamped in past hours, thinned by a low cap on their way up as raw
//! readings, yet each sensor's hourly min, max, mean and count of all of them reach the
//! district's InfluxDB exactly once, also when the box restarts with its link blackholed.
//!
//! A ninth run: a sensor with its own 4G link publishes to the hub's MQTT listener, and its
//! home box judges each reading exactly once across a kill of the stream's leader, a cut of
//! the box's link and two kills of the box; then, with the box dead past its lease, the active
//! hub judges the sensor from the box's copy of its state until the box is back — also (a tenth
//! run) when the district's webhook answers too slowly to take the `box-down`. (An ignored eleventh measures nats-server's own MQTT
//! listener, which acknowledges readings its stream then loses.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{publish_until_evaluated, screenshot_dir, Daemon, SECOND};
use gridwatch_tests::{free_port, wait_for, Browser, LinkProxy, Mosquitto, NatsCluster, Postgres, Slowness, VictoriaMetrics, WebhookReceiver};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hub's lease lifetime here (30 s by default); boxes renew every second.
const LEASE_TTL: &str = "8s";
/// The district runs take turns: each is a cluster, a PostgreSQL, a hub and two boxes, and two
/// at once on a shared two-core machine starve the leases they time.
static ONE_DISTRICT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key boxes verify workers' actions with (`[dispatch] ack_secret`).
const ACK_SECRET: &str = "district-shared-ack-secret";
/// The token of the district's board and report (`--view-token-file`, second test).
const VIEW_TOKEN: &str = "district-view-token-1234";

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

/// The `[cluster]` settings of a box besides its link and names: small batches, so that a few
/// alarms make several.
const SMALL_BATCHES: &str = "batch_rows = 4\n";

impl Community {
    async fn start(id: &'static str, nats: &NatsCluster) -> Community {
        Community::start_with(id, nats, SMALL_BATCHES).await
    }

    /// A box whose `[cluster]` table ends with `cluster_settings` (batch size, readings' cap).
    async fn start_with(id: &'static str, nats: &NatsCluster, cluster_settings: &str) -> Community {
        Community::start_configured(id, nats, cluster_settings, "", "").await
    }

    /// A box whose `[http]` table ends with `http_settings` and whose configuration ends with
    /// `tables` (e.g. its alert channels).
    async fn start_configured(id: &'static str, nats: &NatsCluster, cluster_settings: &str, http_settings: &str, tables: &str) -> Community {
        let mosquitto = Mosquitto::start().await.expect("mosquitto");
        let proxy = LinkProxy::start(nats.addrs()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        // A fast lease and commit wait for the tests' short cuts, unless the settings give theirs.
        let cluster_settings = if cluster_settings.contains("lease_renew_secs") {
            cluster_settings.to_string()
        } else {
            format!("lease_renew_secs = 1\ncommit_wait_secs = 3\n{cluster_settings}")
        };
        let mut config = format!(
            "state_dir = \"state\"\n\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-{id}\"\n\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{http_settings}\n[cluster]\nnats_urls = [\"{}\"]\nbox_id = \"{id}\"\ndistrict = \"old-town\"\n{cluster_settings}\n[dispatch]\nack_secret = \"{ACK_SECRET}\"\n{tables}\n",
            mosquitto.url(),
            proxy.nats_url()
        );
        for sensor in 1..=3 {
            config.push_str(&format!("\n[[sensor]]\nid = \"{id}-{sensor:02}\"\nkind = \"water\"\nsite = \"{id}\"\ngrid = \"g1\"\n"));
        }
        std::fs::write(dir.path().join("gridwatch.toml"), config).unwrap();
        // A warning closes its incident when the sensor clears: every bad run is its own incident.
        // A probe that reports `fault` has a device fault, for installers (third test).
        let rules = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n\n\
                     [[rule]]\nid = \"probe-fault\"\nvalue = \"fault\"\nabove = 0\ndevice = true\nseverity = \"warning\"\n";
        std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
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

    /// The epoch of the box's store: the ids of its rows count in it.
    fn epoch(&self) -> String {
        let conn = rusqlite::Connection::open_with_flags(self.dir.path().join("state/gridwatch.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.query_row("SELECT epoch FROM store_epoch", [], |row| row.get(0)).unwrap()
    }

    /// The KV key of the hub's high-water mark for this box's store and `kind`.
    fn hwm_key(&self, kind: &str) -> String {
        format!("{}.{}.{kind}", self.id, self.epoch())
    }
}

struct District {
    pg: Postgres,
    hook: WebhookReceiver,
    hub: Daemon,
    _hub_dir: tempfile::TempDir,
    /// The hub's relay of workers' actions (`--listen`).
    relay: String,
}

impl District {
    /// Ids of the rows of a box's store in a district table (empty while PostgreSQL is down).
    async fn district_ids(&self, table: &str, community: &Community) -> BTreeSet<i64> {
        self.district_ids_of(table, community.id, &community.epoch()).await
    }

    /// Ids of a box's rows in a district table sent from its store of `epoch`.
    async fn district_ids_of(&self, table: &str, box_id: &str, epoch: &str) -> BTreeSet<i64> {
        let Ok((db, connection)) = tokio_postgres::connect(&self.pg.conninfo(), tokio_postgres::NoTls).await else { return BTreeSet::new() };
        tokio::spawn(connection);
        match db.query(&format!("SELECT id FROM {table} WHERE box_id = $1 AND epoch = $2"), &[&box_id, &epoch]).await {
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
                if community.local_ids(local) != self.district_ids(district, community).await {
                    return false;
                }
            }
            true
        })
        .await;
        if !caught_up {
            for (local, district) in pairs {
                let (mine, theirs) = (community.local_ids(local), self.district_ids(district, community).await);
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

    /// How many `fired` alert events PostgreSQL holds of `box_id`'s store `epoch` stamped at or
    /// after `from_ms`.
    async fn fired_since(&self, box_id: &str, epoch: &str, from_ms: i64) -> i64 {
        let (db, connection) = tokio_postgres::connect(&self.pg.conninfo(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        db.query_one("SELECT count(*) FROM alert_events WHERE box_id = $1 AND epoch = $2 AND event = 'fired' AND at_ms >= $3", &[&box_id, &epoch, &from_ms])
            .await
            .unwrap()
            .get::<_, i64>(0)
    }

    /// The `box-down` events posted for `box_id`, in order.
    fn box_down(&self, box_id: &str) -> Vec<String> {
        self.hook.bodies().iter().filter(|b| b["kind"] == "box-down" && b["box"] == box_id).map(|b| b["event"].as_str().unwrap_or("?").to_string()).collect()
    }
}

async fn start_district(nats: &NatsCluster) -> District {
    start_district_with(nats, &[]).await
}

/// [`start_district`] with more options for the hub (e.g. `--influx`).
async fn start_district_with(nats: &NatsCluster, hub_options: &[&str]) -> District {
    start_district_hooked(nats, hub_options, WebhookReceiver::start(Vec::new()).await).await
}

/// [`start_district_with`], posting `box-down` and the standby's alerts to `hook`.
async fn start_district_hooked(nats: &NatsCluster, hub_options: &[&str], hook: WebhookReceiver) -> District {
    let pg = Postgres::start().await.expect("postgresql");
    let hub_dir = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let (conninfo, hook_url) = (pg.conninfo(), hook.url());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["hub", "--postgres", &conninfo, "--webhook", &hook_url, "--listen", &listen];
    if !hub_options.contains(&"--lease-ttl") {
        args.extend(["--lease-ttl", LEASE_TTL]);
    }
    args.extend_from_slice(hub_options);
    for url in &urls {
        args.extend(["--nats", url.as_str()]);
    }
    let hub = Daemon::start(&args, hub_dir.path());
    // A loaded machine's three nodes can take a minute and more to place the district's stream.
    let relaying = wait_for(120 * SECOND, || async { hub.stderr().iter().any(|l| l.contains("district hub relays workers' actions")) }).await;
    assert!(relaying, "the hub did not start: {:?}", hub.stderr());
    District { pg, hook, hub, _hub_dir: hub_dir, relay: format!("http://{listen}") }
}

/// The node leading the uplink stream's RAFT group (waits up to 30 s for one).
async fn stream_leader(nats: &NatsCluster) -> String {
    nats.wait_for_stream_leader(gridwatch::cluster::STREAM, 30 * SECOND).await.expect("the stream has a leader")
}

/// A hub listener's `/healthz` (`base`: `http://host:port`): status and body; waits up to 10 s
/// for the listener to answer at all.
async fn healthz(base: &str) -> (u16, serde_json::Value) {
    let listening = wait_for(10 * SECOND, || async { reqwest::get(format!("{base}/healthz")).await.is_ok() }).await;
    assert!(listening, "no /healthz at {base}");
    let response = reqwest::get(format!("{base}/healthz")).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// One sample of a hub listener's `/metrics`, e.g. `gridwatch_hub_active` (missing: NaN).
async fn hub_metric(base: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    common::metric(&text, series).unwrap_or(f64::NAN)
}

/// A hub listener's page at `path`, as text.
async fn hub_page(base: &str, path: &str) -> String {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// The hub's high-water mark for a box and kind, read from KV as a box does.
async fn high_water_mark(nats: &NatsCluster, key: &str) -> i64 {
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let kv = async_nats::jetstream::new(client).get_key_value(gridwatch::cluster::HWM_BUCKET).await.unwrap();
    gridwatch::cluster::wire::parse_hwm(kv.get(key).await.unwrap().as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_loses_no_event_and_reports_a_dead_box_once() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
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
    // The lease (about 230 bytes a renewal), pings and the watches' heartbeats; a box that
    // asked the hub for the mark of a kind with nothing to send twice a second spent 700.
    assert!(idle / 10 < 400, "an idle box costs its 4G link {} bytes/s", idle / 10);

    // A lease missing for a moment is no box-down: a replica behind (a busy or restarted node)
    // may answer without a box's newest renewal. East's key is deleted four times, 4.5 s apart,
    // while east renews it every second: it is missing for under a second each time (a hub
    // round in that second raised box-down before).
    let leases = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap()).get_key_value(gridwatch::cluster::LEASE_BUCKET).await.unwrap();
    for _ in 0..4 {
        leases.delete("east").await.unwrap();
        tokio::time::sleep(Duration::from_millis(4_500)).await;
    }
    assert!(
        district.box_down("east").is_empty(),
        "a lease missing for a second raised box-down: {:?}\nhub: {:?}\nbox: {:?}",
        district.box_down("east"),
        district.hub.stderr(),
        east.stderr()
    );

    // (a) East's link is blackholed for 20 s while its alarms fire.
    let cut = Instant::now();
    east.proxy.set_blackholed(true);
    let at_hub_before = district.district_ids("alert_events", &east).await;
    east.alarm_cycles(3).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    assert_eq!(district.district_ids("alert_events", &east).await, at_hub_before, "nothing passes a blackholed link");
    // Its lease runs out and the hub confirms it (a few seconds more on a loaded machine).
    let reported = wait_for(20 * SECOND, || async { !district.box_down("east").is_empty() }).await;
    assert!(reported, "a box cut off past its lease is not reported down\nhub: {:?}", district.hub.stderr());
    assert_eq!(district.box_down("east"), ["raised"], "a box cut off past its lease is reported down once");
    east.proxy.set_blackholed(false);
    // Within the issue's 10 s of the link's return: the uplink goes as soon as its client is
    // connected again. (Before, it waited out the rest of its backoff, up to 10 s, on top of the
    // client's reconnection: up to 12.5 s after 120 s cuts in `gridwatch-district-load
    // --scenario blackhole`. A 20 s cut does not always show it: 4.5 s in one run before.)
    let back = Instant::now();
    district.assert_caught_up(&east, 10 * SECOND).await;
    eprintln!("a box's rows at the hub {:?} after its link came back from a 20 s cut", back.elapsed());
    let cleared = wait_for(20 * SECOND, || async { district.box_down("east").len() == 2 }).await;
    assert!(cleared && district.box_down("east") == ["raised", "cleared"], "{:?}\nbox: {:?}", district.box_down("east"), east.stderr());

    // PostgreSQL is down while alarms fire: JetStream takes the batches, the box does not move on.
    district.pg.stop().unwrap();
    let (status, health) = healthz(&district.relay).await;
    assert_eq!(status, 503, "the hub says it cannot reach PostgreSQL: {health}");
    assert!(health["reasons"].to_string().contains("PostgreSQL"), "{health}");
    let committed_before = high_water_mark(&nats, &east.hwm_key("alert")).await;
    east.alarm_cycles(1).await;
    tokio::time::sleep(5 * SECOND).await;
    let newest = *east.local_ids("alert_events").last().unwrap();
    assert_eq!(high_water_mark(&nats, &east.hwm_key("alert")).await, committed_before, "no commit, no high-water mark");
    assert!(committed_before < newest);
    district.pg.restart().unwrap();
    district.assert_caught_up(&east, 60 * SECOND).await;
    assert_eq!(high_water_mark(&nats, &east.hwm_key("alert")).await, newest);

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
    // PostgreSQL gone just after the clearing was recorded: the hub decides on the boxes it last
    // read, which must know of the clearing (they did not: `cleared` was posted again a second
    // later, once in CI when the database was stopped just after a clearing).
    district.pg.stop().unwrap();
    tokio::time::sleep(3 * SECOND).await;
    assert!(back && district.box_down("west") == ["raised", "cleared"], "{:?}", district.hook.bodies());
    district.pg.restart().unwrap();

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

/// A hub of its own (`name`), on the district's services, electing on a 3-second hub lease;
/// with its listener's base URL.
fn start_hub(nats: &NatsCluster, pg: &Postgres, hook: &WebhookReceiver, name: &str) -> (Daemon, tempfile::TempDir, String) {
    start_hub_at(&nats.urls(), &pg.conninfo(), hook, name)
}

/// [`start_hub`] reaching the cluster at `urls` and PostgreSQL at `conninfo` (e.g. through a
/// [`LinkProxy`]).
fn start_hub_at(urls: &[String], conninfo: &str, hook: &WebhookReceiver, name: &str) -> (Daemon, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (conninfo, hook_url) = (conninfo.to_string(), hook.url());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args =
        vec!["hub", "--postgres", &conninfo, "--webhook", &hook_url, "--lease-ttl", LEASE_TTL, "--hub-lease", "3s", "--name", name, "--listen", &listen];
    for url in urls {
        args.extend(["--nats", url.as_str()]);
    }
    (Daemon::start(&args, dir.path()), dir, format!("http://{listen}"))
}

/// A hub whose link to its NATS cluster is blackholed (the client still believes it is
/// connected for a while) says so on `/healthz` within seconds, by asking JetStream rather than
/// trusting the client's state, and is ready again once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cut_off_from_its_cluster_says_so_on_healthz() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let proxy = LinkProxy::start(nats.addrs()).await.unwrap();
    let (hub, _dir, base) = start_hub_at(&[proxy.nats_url()], &pg.conninfo(), &hook, "cut-off");
    let ready = wait_for(120 * SECOND, || async { healthz(&base).await.0 == 200 }).await;
    assert!(ready, "{:?}\nhub: {:?}", healthz(&base).await, hub.stderr());

    let cut = Instant::now();
    proxy.set_blackholed(true);
    let told = wait_for(20 * SECOND, || async { healthz(&base).await.0 == 503 }).await;
    let (status, body) = healthz(&base).await;
    assert!(told, "a hub cut off from its cluster still says {status} {body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("NATS") || reasons.contains("JetStream"), "{body}");
    eprintln!("the hub's /healthz said degraded {:?} after its link was cut: {reasons}", cut.elapsed());

    proxy.set_blackholed(false);
    let back = wait_for(60 * SECOND, || async { healthz(&base).await.0 == 200 }).await;
    assert!(back, "{:?}\nhub: {:?}", healthz(&base).await, hub.stderr());
}

/// The hub lease cannot be written (as when JetStream is out of storage; here its bucket is
/// made at a size limit no write fits in): no hub can be active, and the hub says so on
/// `/healthz` instead of "ready, standing by" (an outside tester filled the nodes' storage: no
/// active hub, both hubs ready). Once the lease can be written, the hub takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_cannot_write_its_lease_says_so_on_healthz() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    let full = async_nats::jetstream::stream::Config {
        name: format!("KV_{}", gridwatch::cluster::HUB_BUCKET),
        subjects: vec![format!("$KV.{}.>", gridwatch::cluster::HUB_BUCKET)],
        max_messages_per_subject: 1,
        max_bytes: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        num_replicas: 3,
        ..Default::default()
    };
    let placed = wait_for(60 * SECOND, || async { js.create_stream(full.clone()).await.is_ok() }).await;
    assert!(placed, "the lease bucket's stream was not created");
    let (hub, _dir, base) = start_hub_at(&nats.urls(), &pg.conninfo(), &hook, "unwritable");
    let told = wait_for(60 * SECOND, || async {
        let (status, body) = healthz(&base).await;
        status == 503 && body["reasons"].to_string().contains("hub lease cannot be written")
    })
    .await;
    assert!(told, "{:?}\nhub: {:?}", healthz(&base).await, hub.stderr());
    assert!(!logged(&hub, ACTIVE), "active without its lease: {:?}", hub.stderr());

    let room = async_nats::jetstream::stream::Config { max_bytes: -1, ..full };
    js.update_stream(room).await.unwrap();
    let active = wait_for(30 * SECOND, || async { logged(&hub, ACTIVE) && healthz(&base).await.0 == 200 }).await;
    assert!(active, "{:?}\nhub: {:?}", healthz(&base).await, hub.stderr());
}

fn logged(hub: &Daemon, text: &str) -> bool {
    hub.stderr().iter().any(|line| line.contains(text))
}

const ACTIVE: &str = "this hub is the district's active hub";

/// A renewal of the hub lease that was written but whose answer the hub never heard (the
/// bucket's leader killed mid-request; found by `gridwatch-district-load --scenario
/// leader-kill`): the hub's next renewal meets a newer revision holding its own value. Made
/// here by writing that value again at the key's revision, as the lost renewal did. The hub
/// must take it for its own and stay active, not stand by behind itself until its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_renewal_answer_was_lost_stays_active() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let (hub, _dir, web) = start_hub(&nats, &pg, &hook, "hub-a");
    assert!(wait_for(60 * SECOND, || async { logged(&hub, ACTIVE) }).await, "the hub never became active: {:?}", hub.stderr());
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let bucket = async_nats::jetstream::new(client).get_key_value(gridwatch::cluster::HUB_BUCKET).await.unwrap();
    for _ in 0..3 {
        // The hub renews every second: a renewal between the read and the update moves the
        // revision (`wrong last sequence`), so the newest is read again until the update lands.
        let landed = wait_for(10 * SECOND, || async {
            let entry = bucket.entry("active").await.unwrap().expect("the hub holds its lease");
            assert!(entry.value.starts_with(b"hub-a "), "{:?}", entry.value);
            bucket.update("active", entry.value.clone(), entry.revision).await.is_ok()
        })
        .await;
        assert!(landed, "the lease was never updated between two renewals");
        // Two renewals (every second at a 3-second lease) meet the newer revision.
        tokio::time::sleep(2 * SECOND).await;
    }
    assert!(!logged(&hub, "taken by another hub"), "{:?}", hub.stderr());
    assert!(logged(&hub, "an unanswered renewal was written"), "{:?}", hub.stderr());
    assert_eq!(hub_metric(&web, "gridwatch_hub_active").await, 1.0);
    assert_eq!(hub_metric(&web, "gridwatch_hub_lease_takeovers_total").await, 1.0);
}

/// Hubs run active/standby: `kill -9` of the active one and the standby takes over within its
/// lease (the issue's target: 15 s) without reporting a dead box a second time; a hub paused
/// past its lease (SIGSTOP) comes back fenced off and reports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_hub_takes_over_and_no_box_is_reported_down_twice() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
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
    let (mut first, _first_dir, first_web) = start_hub(&nats, &pg, &hook, "hub-a");
    assert!(wait_for(60 * SECOND, || async { logged(&first, ACTIVE) }).await, "the first hub never became active: {:?}", first.stderr());
    let (mut second, _second_dir, second_web) = start_hub(&nats, &pg, &hook, "hub-b");
    assert!(wait_for(30 * SECOND, || async { logged(&second, "standing by") }).await, "the second hub is not standing by: {:?}", second.stderr());
    assert!(!logged(&second, ACTIVE));
    // Each hub's /healthz and /metrics say which one is active.
    let (status, health) = healthz(&first_web).await;
    assert_eq!((status, health["role"].as_str()), (200, Some("active")), "{health}");
    let (status, health) = healthz(&second_web).await;
    assert_eq!((status, health["role"].as_str()), (200, Some("standing by")), "{health}");
    assert_eq!(hub_metric(&first_web, "gridwatch_hub_active").await, 1.0);
    assert_eq!(hub_metric(&first_web, "gridwatch_hub_lease_takeovers_total").await, 1.0);
    assert_eq!(hub_metric(&second_web, "gridwatch_hub_active").await, 0.0);

    let mut north = Community::start("north", &nats).await;
    tokio::time::sleep(3 * SECOND).await; // the hub has seen its lease
    north.daemon.as_mut().unwrap().kill_hard();
    assert!(wait_for(30 * SECOND, || async { box_down() == ["raised"] }).await, "{:?}; hub: {:?}", box_down(), first.stderr());
    // The webhook has the message before the hub records it in PostgreSQL and counts it.
    let counted = wait_for(10 * SECOND, || async { hub_metric(&first_web, "gridwatch_hub_box_down_total{event=\"raised\"}").await == 1.0 }).await;
    assert!(counted, "{}", hub_metric(&first_web, "gridwatch_hub_box_down_total{event=\"raised\"}").await);
    // The standby reads the district's state too: its gauges and its board.
    let seen = wait_for(10 * SECOND, || async { hub_metric(&second_web, "gridwatch_hub_boxes_down").await == 1.0 }).await;
    assert!(seen, "the standby does not count north as down");
    assert_eq!(hub_metric(&second_web, "gridwatch_hub_boxes_known").await, 1.0);
    let board = hub_page(&second_web, "/board").await;
    assert!(board.contains("<section class=\"down\"><h2>north") && board.contains("离线 1"), "{board}");

    // kill -9 of the active hub: the standby takes over and knows the box is down already.
    first.kill_hard();
    let killed = Instant::now();
    assert!(wait_for(15 * SECOND, || async { logged(&second, ACTIVE) }).await, "no takeover within 15 s: {:?}", second.stderr());
    eprintln!("the standby hub took over {:?} after the active one was killed", killed.elapsed());
    north.run_box().await;
    assert!(wait_for(30 * SECOND, || async { box_down().len() >= 2 }).await, "{:?}", box_down());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(box_down(), ["raised", "cleared"], "one raise and one clear across the takeover");
    assert_eq!(hub_metric(&second_web, "gridwatch_hub_active").await, 1.0);
    assert_eq!(hub_metric(&second_web, "gridwatch_hub_lease_takeovers_total").await, 1.0);
    assert_eq!(hub_metric(&second_web, "gridwatch_hub_box_down_total{event=\"raised\"}").await, 0.0, "it knew north was down");
    let counted = wait_for(10 * SECOND, || async { hub_metric(&second_web, "gridwatch_hub_box_down_total{event=\"cleared\"}").await == 1.0 }).await;
    assert!(counted, "the clear is counted once");

    // The active hub paused past its lease: a restarted hub takes over; the box dies again and
    // is reported once; the paused hub, resumed, finds its lease and its token outdated.
    let (third, _third_dir, _third_web) = start_hub(&nats, &pg, &hook, "hub-c");
    assert!(wait_for(30 * SECOND, || async { logged(&third, "standing by") }).await, "{:?}", third.stderr());
    second.signal("STOP");
    assert!(wait_for(15 * SECOND, || async { logged(&third, ACTIVE) }).await, "no takeover from a paused hub: {:?}", third.stderr());
    north.daemon.as_mut().unwrap().kill_hard();
    assert!(wait_for(30 * SECOND, || async { box_down().len() >= 3 }).await, "{:?}", box_down());
    second.signal("CONT");
    assert!(wait_for(15 * SECOND, || async { logged(&second, "taken by another hub") }).await, "{:?}", second.stderr());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(box_down(), ["raised", "cleared", "raised"], "the resumed hub reported nothing");
    let standing_by = wait_for(10 * SECOND, || async { healthz(&second_web).await.1["role"] == "standing by" }).await;
    assert!(standing_by, "the fenced-off hub says it stands by: {:?}", healthz(&second_web).await);

    // SIGTERM stops the active hub, the only one left: it hands its lease over and exits,
    // rather than taking the lease back over and over (which it did until the district load
    // harness found it; a standby taking the lease first hid it).
    second.kill_hard();
    third.signal("TERM");
    let exited = wait_for(30 * SECOND, || async { has_exited(third.pid()) }).await;
    assert!(exited, "the hub did not exit after SIGTERM: {:?}", third.stderr());
}

/// The active hub killed while the webhook takes its time over a `box-down` (it has the message,
/// but the hub never heard its answer): the standby posts it again under the same key, so a
/// receiver that drops keys it has seen tells people once (an outside tester got a second
/// `raised` under another key: each hub keyed it by its own time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_down_posted_again_by_the_standby_has_the_same_key() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start_slow(6 * SECOND).await;
    let raised = || hook.bodies().into_iter().filter(|b| b["kind"] == "box-down" && b["event"] == "raised").collect::<Vec<_>>();
    let (mut first, _first_dir, _) = start_hub(&nats, &pg, &hook, "hub-a");
    assert!(wait_for(60 * SECOND, || async { logged(&first, ACTIVE) }).await, "the first hub never became active: {:?}", first.stderr());
    let (second, _second_dir, _) = start_hub(&nats, &pg, &hook, "hub-b");
    assert!(wait_for(30 * SECOND, || async { logged(&second, "standing by") }).await, "the second hub is not standing by: {:?}", second.stderr());
    let mut north = Community::start("north", &nats).await;
    tokio::time::sleep(3 * SECOND).await; // the hub has seen its lease
    north.daemon.as_mut().unwrap().kill_hard();
    assert!(wait_for(30 * SECOND, || async { !raised().is_empty() }).await, "no box-down posted: {:?}", first.stderr());
    first.kill_hard();
    assert!(wait_for(15 * SECOND, || async { logged(&second, ACTIVE) }).await, "no takeover: {:?}", second.stderr());
    assert!(wait_for(30 * SECOND, || async { raised().len() >= 2 }).await, "the standby did not post box-down again: {:?}", second.stderr());
    let keys: BTreeSet<String> = raised().iter().map(|b| b["key"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(keys.len(), 1, "one key for one box-down, whichever hub posts it: {:?}", raised());
}

/// A district whose box `north` has raised an alarm cycle that reached PostgreSQL.
async fn district_with_north_caught_up(nats: &NatsCluster) -> (District, Community) {
    let district = start_district(nats).await;
    let north = Community::start("north", nats).await;
    north.alarm_cycles(1).await;
    district.assert_caught_up(&north, 60 * SECOND).await;
    (district, north)
}

/// Kills `north` while PostgreSQL cannot record its `box-down` (`why`) and returns the one
/// `raised` posted for it within 45 s (the issue's target), not posted again each round.
async fn north_reported_down_unrecorded(district: &District, north: &mut Community, why: &str) -> serde_json::Value {
    let killed = Instant::now();
    north.daemon.as_mut().unwrap().kill_hard();
    let reported = wait_for(45 * SECOND, || async { !district.box_down("north").is_empty() }).await;
    assert!(reported, "no box-down within 45 s, {why}\nhub: {:?}", district.hub.stderr());
    eprintln!("box-down {:?} after the box was killed, {why}", killed.elapsed());
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(district.box_down("north"), ["raised"], "posted once, not each round");
    let posted = district.hook.bodies().into_iter().find(|b| b["kind"] == "box-down" && b["box"] == "north").unwrap();
    // Keyed by its time too: a hub after this one, knowing nothing of it, keys the box's next
    // episode by the flag's time alone (an outside tester's receiver dropped that as a copy).
    assert!(posted["key"].as_str().is_some_and(|key| key.ends_with(&format!(".{}", posted["at_ms"]))), "{why}: {posted}");
    posted
}

/// Waits until the district's `boxes` (read through `db`) has `north` down.
async fn north_recorded_down(district: &District, db: &tokio_postgres::Client) {
    let recorded = wait_for(30 * SECOND, || async {
        db.query_one("SELECT down FROM boxes WHERE box_id = 'north'", &[]).await.map(|row| row.get::<_, bool>(0)).unwrap_or(false)
    })
    .await;
    assert!(recorded, "box-down not recorded once PostgreSQL took writes again\nhub: {:?}", district.hub.stderr());
}

/// PostgreSQL refusing writes (read-only; a full disk alike) while a box dies: the hub still
/// posts one `box-down` in time, says on `/healthz` that it cannot record, and records it once
/// PostgreSQL takes writes again, without posting it twice (an outside tester got no `box-down`
/// for 80 s, then one, and `/healthz` said ready throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_dying_while_postgresql_refuses_writes_is_reported_down_once() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let (district, mut north) = district_with_north_caught_up(&nats).await;
    let (db, connection) = tokio_postgres::connect(&district.pg.conninfo(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // The test's own session stays writable; every other one refuses writes.
    for statement in ["SET default_transaction_read_only = off", "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"] {
        db.batch_execute(statement).await.unwrap();
    }
    let degraded = wait_for(20 * SECOND, || async {
        let (status, health) = healthz(&district.relay).await;
        status == 503 && health["reasons"].to_string().contains("refuses writes")
    })
    .await;
    assert!(degraded, "/healthz while PostgreSQL refuses writes: {:?}", healthz(&district.relay).await);

    north_reported_down_unrecorded(&district, &mut north, "PostgreSQL read-only").await;

    for statement in ["ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"] {
        db.batch_execute(statement).await.unwrap();
    }
    north_recorded_down(&district, &db).await;
    assert!(wait_for(10 * SECOND, || async { healthz(&district.relay).await.0 == 200 }).await, "{:?}", healthz(&district.relay).await);
    north.run_box().await;
    let cleared = wait_for(30 * SECOND, || async { district.box_down("north").len() >= 2 }).await;
    tokio::time::sleep(3 * SECOND).await;
    assert!(cleared && district.box_down("north") == ["raised", "cleared"], "{:?}", district.box_down("north"));
}

/// PostgreSQL stopped (maintenance, a crash) while a box dies: the hub posts one `box-down` in
/// time on the boxes it last read, saying their open incidents are not known, and records it
/// once PostgreSQL is back, without posting it again (an outside tester: `box-down` only once
/// PostgreSQL was back, 63 s after the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_dying_while_the_hub_cannot_reach_postgresql_is_reported_down_in_time() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let (district, mut north) = district_with_north_caught_up(&nats).await;
    district.pg.stop().unwrap();
    let degraded = wait_for(20 * SECOND, || async { healthz(&district.relay).await.1["reasons"].to_string().contains("PostgreSQL unreachable") }).await;
    assert!(degraded, "/healthz while PostgreSQL is stopped: {:?}", healthz(&district.relay).await);

    let posted = north_reported_down_unrecorded(&district, &mut north, "PostgreSQL stopped").await;
    assert!(posted["open_incidents"].is_null(), "not known, not none: {posted}");

    district.pg.restart().unwrap();
    let (db, connection) = tokio_postgres::connect(&district.pg.conninfo(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    north_recorded_down(&district, &db).await;
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(district.box_down("north"), ["raised"], "not posted again once PostgreSQL is back");
}

/// PostgreSQL stopped, a box dies (its `raised` not recorded), the active hub is killed and the
/// box comes back before PostgreSQL does: the standby, active now, knows from the cluster what
/// was told and which boxes there are, and posts the one `cleared` (an outside tester: none in
/// 33 minutes — the next hub knew nothing of the unrecorded `raised`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_back_after_a_takeover_while_postgresql_is_stopped_is_cleared() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let (mut district, mut north) = district_with_north_caught_up(&nats).await;
    let (second, _second_dir, _) = start_hub_at(&nats.urls(), &district.pg.conninfo(), &district.hook, "second");
    assert!(wait_for(60 * SECOND, || async { logged(&second, "standing by") }).await, "{:?}", second.stderr());
    district.pg.stop().unwrap();
    north_reported_down_unrecorded(&district, &mut north, "PostgreSQL stopped").await;

    district.hub.kill_hard();
    assert!(wait_for(30 * SECOND, || async { logged(&second, ACTIVE) }).await, "no takeover: {:?}", second.stderr());
    north.run_box().await;
    let cleared = wait_for(60 * SECOND, || async { district.box_down("north").len() >= 2 }).await;
    assert!(cleared, "no cleared from the hub that took over: {:?}\nhub: {:?}", district.box_down("north"), second.stderr());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(district.box_down("north"), ["raised", "cleared"]);
    let keys: BTreeSet<String> = district.hook.bodies().iter().filter(|b| b["box"] == "north").map(|b| b["key"].to_string()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

/// The hub's PostgreSQL connections hang for good (as behind a database failover's virtual IP
/// or a firewall that forgot them) while new ones would work: a
/// box that dies then is still reported down (an outside tester: no `box-down` for 7 minutes,
/// until the hub was killed by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_dying_after_the_hubs_database_connections_hung_is_reported_down() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgresql");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let link = LinkProxy::start(vec![std::net::SocketAddr::from(([127, 0, 0, 1], pg.port))]).await.unwrap();
    let conninfo = pg.conninfo().replace(&format!("port={}", pg.port), &format!("port={}", link.port));
    let (hub, _dir, _base) = start_hub_at(&nats.urls(), &conninfo, &hook, "hung");
    let south = Community::start("south", &nats).await;
    south.alarm_cycles(1).await;
    let (db, connection) = tokio_postgres::connect(&pg.conninfo(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let committed = wait_for(120 * SECOND, || async {
        db.query_one("SELECT count(*) FROM alert_events WHERE box_id = 'south'", &[]).await.map(|row| row.get::<_, i64>(0) >= 6).unwrap_or(false)
    })
    .await;
    assert!(committed, "south's alarms never reached PostgreSQL\nhub: {:?}", hub.stderr());

    // The hub's connections carry nothing more and never close; new ones would work.
    link.freeze_open_connections();
    let killed = Instant::now();
    let mut south = south;
    south.daemon.as_mut().unwrap().kill_hard();
    let down = || hook.bodies().iter().filter(|b| b["kind"] == "box-down" && b["box"] == "south").count();
    let reported = wait_for(75 * SECOND, || async { down() > 0 }).await;
    assert!(reported, "no box-down after the hub's connections hung\nhub: {:?}", hub.stderr());
    eprintln!("box-down {:?} after the box was killed, the hub's connections having hung", killed.elapsed());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(down(), 1, "posted once");
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped).
fn has_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// A roster whose only person in grid g1 is its leader `name` (named on every alarm there).
fn roster_led_by(id: &str, name: &str) -> String {
    format!("timezone = \"+08:00\"\n[[grid]]\nid = \"g1\"\n\n[[member]]\nid = \"{id}\"\nname = \"{name}\"\nrole = \"grid_leader\"\ngrids = [\"g1\"]\n")
}

/// `gridwatch hub roster put` of `text` (as `roster.toml` in a temp dir): (exit code, stderr).
fn put_roster(nats: &NatsCluster, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roster.toml"), text).unwrap();
    let mut command = common::gridwatch();
    command.current_dir(dir.path()).args(["hub", "roster", "put", "--district", "old-town", "roster.toml"]);
    for url in nats.urls() {
        command.args(["--nats", &url]);
    }
    let output = command.output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

impl Community {
    /// How many rosters the box has put in force from the district so far.
    fn rosters_taken(&self) -> usize {
        self.stderr_all().iter().filter(|l| l.contains("district roster in force")).count()
    }

    fn stderr_all(&self) -> Vec<String> {
        self.daemon.as_ref().map(Daemon::stderr).unwrap_or_default()
    }

    /// The people named on the box's latest journaled alarm.
    fn last_named(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(self.dir.path().join("state/gridwatch.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let payload: String = conn.query_row("SELECT payload FROM alert_events WHERE event = 'fired' ORDER BY id DESC LIMIT 1", [], |row| row.get(0)).unwrap();
        let alert: serde_json::Value = serde_json::from_str(&payload).unwrap();
        alert["recipients"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }

    /// Runs the box again with its wall clock `faked` (libfaketime's syntax, e.g. "-10m"); its
    /// first reading carries no time, so that its clock stamps it.
    async fn run_box_with_clock(&mut self, faked: &str) {
        let (daemon, _) = Daemon::start_with_faked_clock(&["run", "--config", "gridwatch.toml"], self.dir.path(), faked);
        let up = publish_until_evaluated(&self.mosquitto, &self.topic(1), || r#"{"do": 7.0}"#.to_string(), self.http_port).await;
        assert!(up, "box {} did not start with its clock at {faked}: {:?}", self.id, daemon.stderr());
        self.daemon = Some(daemon);
    }

    /// The state of the box's newest incident and its id.
    fn newest_incident(&self) -> (i64, String) {
        let conn = rusqlite::Connection::open_with_flags(self.dir.path().join("state/gridwatch.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.query_row("SELECT id, state FROM incidents ORDER BY id DESC LIMIT 1", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap()
    }

    /// `gridwatch_incident_acks_total` by reason, from the box's /metrics.
    async fn relayed_actions(&self, reason: &str) -> u64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port)).await.unwrap().text().await.unwrap();
        let wanted = format!("gridwatch_incident_acks_total{{reason=\"{reason}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&wanted)).map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// Waits until every box in `boxes` took one more district roster than `before` says; the time
/// each took.
async fn roster_reaches(boxes: &[&Community], before: &[usize]) -> Vec<Duration> {
    let put = Instant::now();
    let mut took = vec![None; boxes.len()];
    while put.elapsed() < 10 * SECOND && took.iter().any(Option::is_none) {
        for (i, community) in boxes.iter().enumerate() {
            if took[i].is_none() && community.rosters_taken() > before[i] {
                took[i] = Some(put.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took.into_iter().zip(boxes).map(|(t, c)| t.unwrap_or_else(|| panic!("box {} did not take the roster: {:?}", c.id, c.stderr()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_roster_and_workers_actions_reach_boxes_behind_nat() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("view-token");
    std::fs::write(&token_file, format!("{VIEW_TOKEN}\n")).unwrap();
    let district = start_district_with(&nats, &["--view-token-file", token_file.to_str().unwrap()]).await;
    let east = Community::start("east", &nats).await;
    let mut west = Community::start("west", &nats).await;
    let boxes = [&east, &west];

    // One roster, put by the hub: every online box has it in force within 2 s.
    let before: Vec<usize> = boxes.iter().map(|c| c.rosters_taken()).collect();
    let (code, stderr) = put_roster(&nats, &roster_led_by("wang", "王芳"));
    assert_eq!(code, 0, "{stderr}");
    // Pushed by the KV watch, not polled (figures for docs/district.md; within 10 s or fail).
    let took = roster_reaches(&boxes, &before).await;
    eprintln!("roster in force on the boxes after {took:?}");
    east.alarm_cycles_of(1, &[1]).await;
    assert_eq!(east.last_named(), ["王芳"], "the district roster names who is told");

    // A bad roster is refused by the hub with the parser's file:line:column; nothing changes.
    let before: Vec<usize> = boxes.iter().map(|c| c.rosters_taken()).collect();
    let (code, stderr) = put_roster(&nats, &roster_led_by("wang", "王芳").replace("grid_leader", "boss"));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("roster.toml:8:"), "the parser's location: {stderr}");
    // So is a roster that names nobody (an empty file put by mistake), unless asked for.
    let (code, stderr) = put_roster(&nats, "# nobody yet\n");
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("names nobody") && stderr.contains("--allow-empty"), "{stderr}");
    // So is one past the servers' message size (1 MiB by default), saying so rather than
    // waiting out its ack (an outside tester: "ack error: timed out").
    let padded = format!("{}{}", "# a long note\n".repeat(90_000), roster_led_by("wang", "王芳"));
    let (code, stderr) = put_roster(&nats, &padded);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("max_payload") && stderr.contains("bytes"), "{stderr}");
    // One that slipped past the hub (written into KV directly) is refused by each box, too.
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let kv = async_nats::jetstream::new(client).get_key_value(gridwatch::cluster::ROSTER_BUCKET).await.unwrap();
    kv.put("old-town", "[[member]]\nid = 7\n".into()).await.unwrap();
    let refused = wait_for(5 * SECOND, || async { boxes.iter().all(|c| c.stderr_all().iter().any(|l| l.contains("district roster refused"))) }).await;
    assert!(refused, "the boxes check what arrives: {:?}", east.stderr());
    assert_eq!(boxes.iter().map(|c| c.rosters_taken()).collect::<Vec<_>>(), before, "the roster in force stays");
    east.alarm_cycles_of(1, &[1]).await;
    assert_eq!(east.last_named(), ["王芳"], "the old roster still names who is told");

    // A change reaches both; a box restarted without its link starts on its last good copy.
    let (code, stderr) = put_roster(&nats, &roster_led_by("li", "李强"));
    assert_eq!(code, 0, "{stderr}");
    let took = roster_reaches(&boxes, &before).await;
    eprintln!("changed roster in force on the boxes after {took:?}");
    west.proxy.set_blackholed(true);
    west.daemon.as_mut().unwrap().kill_hard();
    west.run_box().await;
    assert!(west.stderr_all().iter().any(|l| l.contains("starting on the district roster kept")), "{:?}", west.stderr());
    west.alarm_cycles_of(1, &[1]).await;
    assert_eq!(west.last_named(), ["李强"], "offline, the kept roster names who is told");
    west.proxy.set_blackholed(false);

    // A worker accepts an incident of east while east is offline: the hub queues the action,
    // east applies it once when it is back; a replay and a forgery are refused and counted.
    east.reading(2, 2.0);
    let opened = wait_for(20 * SECOND, || async { east.newest_incident().1 == "open" }).await;
    assert!(opened, "east opened no incident");
    let (incident, _) = east.newest_incident();
    east.proxy.set_blackholed(true);
    let now = now_ms();
    let signed = |secret: &str| {
        let signer = gridwatch::sources::mqtt::incident_acks::AckConfig::without_topic(secret).for_box("east");
        let sig = signer.sign(incident, "accept", "王芳", None, now);
        serde_json::json!({"box": "east", "incident": incident, "action": "accept", "by": "王芳", "ts": now, "sig": sig}).to_string()
    };
    let http = reqwest::Client::new();
    let relay = format!("{}/act/old-town/east", district.relay);
    for body in [signed(ACK_SECRET), signed(ACK_SECRET), signed("a-guess-at-the-shared-secret")] {
        let answer = http.post(&relay).body(body).send().await.unwrap();
        assert_eq!(answer.status(), 202, "{:?}", answer.text().await);
    }
    let answer = http.post(&relay).body("{\"incident\": 1}").send().await.unwrap();
    assert_eq!(answer.status(), 400, "not a signed action");
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(east.newest_incident(), (incident, "open".to_string()), "nothing reaches a box offline");
    let reconnected = Instant::now();
    east.proxy.set_blackholed(false);
    let applied = wait_for(30 * SECOND, || async { east.newest_incident().1 == "accepted" }).await;
    let after = reconnected.elapsed();
    eprintln!("action applied {after:?} after the link came back");
    assert!(applied, "the action did not reach east: {:?}", east.stderr());
    let settled = wait_for(10 * SECOND, || async { east.relayed_actions("replayed").await == 1 && east.relayed_actions("bad_signature").await == 1 }).await;
    assert!(settled, "replay and forgery refused and counted: {:?}", east.stderr());
    assert_eq!(east.relayed_actions("applied").await, 1, "applied exactly once");
    // Brought by the box's pull after it reconnects, not by a 30 s timeout (bound for the test,
    // the figure is printed above).
    assert!(after <= 15 * SECOND, "{after:?}");
    // Each was acked: nothing waits for east in the work queue.
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        async_nats::jetstream::new(client).get_stream(gridwatch::cluster::ACTIONS_STREAM).await.unwrap().get_consumer("box-east").await.unwrap();
    let drained = wait_for(10 * SECOND, || async { consumer.get_info().await.is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0) }).await;
    assert!(drained, "east acked every action");

    // The district's view on the hub's listener: the relay counted; every row inserted once.
    let web = &district.relay;
    assert_eq!(hub_metric(web, "gridwatch_hub_actions_total{result=\"relayed\"}").await, 3.0);
    assert_eq!(hub_metric(web, "gridwatch_hub_actions_total{result=\"refused\"}").await, 1.0);
    // A flood of posts for one box (here one that never takes them) is bounded: past 1,000
    // waiting actions the relay refuses new ones with 503 instead of filling the cluster's store.
    let ghost = format!("{}/act/old-town/ghost", district.relay);
    let junk = serde_json::json!({"incident": 1, "action": "accept", "by": "x", "ts": now, "sig": "00"}).to_string();
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..1_001 {
        *answers.entry(http.post(&ghost).body(junk.clone()).send().await.unwrap().status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(answers, std::collections::BTreeMap::from([(202, 1_000), (503, 1)]), "{answers:?}");
    assert_eq!(hub_metric(web, "gridwatch_hub_actions_total{result=\"not_stored\"}").await, 1.0);
    west.reading(3, 2.0);
    assert!(wait_for(20 * SECOND, || async { west.newest_incident().1 == "open" }).await, "west opened no incident");
    district.assert_caught_up(&east, 30 * SECOND).await;
    district.assert_caught_up(&west, 30 * SECOND).await;
    let alert_rows = (east.local_ids("alert_events").len() + west.local_ids("alert_events").len()) as f64;
    assert_eq!(hub_metric(web, "gridwatch_hub_rows_inserted_total{kind=\"alert\"}").await, alert_rows);
    assert_eq!(hub_metric(web, "gridwatch_hub_batches_total{result=\"undecodable\"}").await, 0.0);

    // West's link cut past its lease: the board lists it first, offline, with its open incident;
    // east after it with the incident its worker accepted.
    let reports = district.box_down("west").len();
    west.proxy.set_blackholed(true);
    let down = wait_for(30 * SECOND, || async { district.box_down("west").len() > reports }).await;
    assert!(down && district.box_down("west").last().map(String::as_str) == Some("raised"), "{:?}", district.box_down("west"));
    // The district's view asks for its token: none or a wrong one gets 403 and nothing of it.
    for (path, bearer) in [("/", None), ("/board?token=district-view-token-1235", None), ("/report", Some("wrong")), ("/report?format=csv", None)] {
        let mut request = reqwest::Client::new().get(format!("{web}{path}"));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 403, "{path}");
        assert!(!answer.text().await.unwrap().contains("west"), "{path} shows the district without the token");
    }
    let by_header = reqwest::Client::new().get(format!("{web}/board")).bearer_auth(VIEW_TOKEN).send().await.unwrap();
    assert_eq!(by_header.status(), 200, "the token in an Authorization header");
    let board = hub_page(web, &format!("/?token={VIEW_TOKEN}")).await;
    let (west_at, east_at) = (board.find("<h2>west").unwrap(), board.find("<h2>east").unwrap());
    assert!(west_at < east_at, "the offline box first: {board}");
    assert!(board[west_at..east_at].contains("离线") && board[west_at..east_at].contains("west-03 · do-low · 待接单"), "{board}");
    assert!(board[east_at..].contains("在线") && board[east_at..].contains(&format!("#{incident} east-02 · do-low · 已接单")), "{board}");
    assert!(!board.contains(ACK_SECRET) && !board.contains("postgres"), "no secrets on the board");
    // A device fault of east (a probe reporting a fault, for installers) is listed grey as one,
    // not counted as a yellow of east's water points.
    east.mosquitto.publish(&east.topic(3), &format!(r#"{{"fault": 1, "ts": {}}}"#, now_ms())).unwrap();
    let listed = wait_for(20 * SECOND, || async { hub_page(web, &format!("/?token={VIEW_TOKEN}")).await.contains("east-03 · probe-fault") }).await;
    assert!(listed, "east's device fault never reached the board");
    district.assert_caught_up(&east, 30 * SECOND).await;
    let board = hub_page(web, &format!("/?token={VIEW_TOKEN}")).await;
    let east_at = board.find("<h2>east").unwrap();
    assert!(
        board[east_at..].contains("<span class=\"chip device\">设备故障</span>#") && board[east_at..].contains("east-03 · probe-fault · 待接单"),
        "{board}"
    );
    assert!(board[east_at..].contains("<span class=\"chip device\">设备故障 1</span>") && !board[east_at..].contains("黄色 2"), "{board}");

    // The report of today and yesterday (China's days), per box, equals each box's own store.
    let today = gridwatch::report::today(now_ms(), gridwatch::local_time::DEFAULT);
    let period = format!("from={}&to={today}", today.pred_opt().unwrap());
    let csv = hub_page(web, &format!("/report?{period}&format=csv&token={VIEW_TOKEN}")).await;
    for community in [&east, &west] {
        let store = rusqlite::Connection::open_with_flags(community.dir.path().join("state/gridwatch.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let count = |sql: &str| store.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
        let expected = format!(
            "{},old-town,{},{},{},{}",
            community.id,
            count("SELECT count(*) FROM incidents"),
            count("SELECT count(*) FROM incident_events WHERE action = 'resolve'"),
            count("SELECT count(*) FROM alert_events"),
            count("SELECT count(*) FROM alert_events WHERE event = 'fired'")
        );
        let row = csv.lines().find(|line| line.starts_with(&format!("{expected},"))).unwrap_or_else(|| panic!("{expected} not in the report:\n{csv}"));
        // Its supervision columns are the box's own `gridwatch report` for the whole box (the
        // accept relayed to east counts there and here, with the same time to accept).
        let mut cli = common::gridwatch();
        cli.current_dir(community.dir.path()).args(["report", "--config", "gridwatch.toml", "--format", "csv", "--from"]);
        let output = cli.arg(today.pred_opt().unwrap().to_string()).args(["--to", &today.to_string()]).output().unwrap();
        let own = String::from_utf8_lossy(&output.stdout).into_owned();
        let own_all = own.lines().find_map(|line| line.strip_prefix("all,全部,")).unwrap_or_else(|| panic!("no total in the box's report: {own}"));
        assert_eq!(row.splitn(7, ',').nth(6), Some(own_all), "{} at the hub against its own report:\n{csv}\n{own}", community.id);
    }
    assert!(csv.lines().any(|line| line.starts_with("east,old-town,") && line.split(',').nth(7) == Some("1")), "east's accepted incident: {csv}");
    let page = hub_page(web, &format!("/report?{period}&token={VIEW_TOKEN}")).await;
    assert!(
        page.contains("合计") && page.contains("督办：网格员") && page.contains("<tr><td>王芳</td><td align=\"center\">1</td><td align=\"center\">1</td>"),
        "{page}"
    );
    let workers = hub_page(web, &format!("/report?{period}&format=csv&by=worker&token={VIEW_TOKEN}")).await;
    assert!(workers.lines().any(|line| line.starts_with("王芳,1,1,")), "{workers}");

    // The board on a phone (390×844 in headless Chromium): nothing wider than the screen. Opened
    // once with its token, the browser keeps it: the board's own link to the report needs none.
    let browser = Browser::start().await.expect("headless Chromium");
    browser.phone(390, 844).await.unwrap();
    browser.goto(&format!("{web}/report")).await.unwrap();
    browser.wait_for_text("口令").await.unwrap();
    browser.goto(&format!("{web}/board?token={VIEW_TOKEN}")).await.unwrap();
    browser.wait_for_text("离线").await.unwrap();
    let width = browser.execute("return document.scrollingElement.scrollWidth").await.unwrap().as_f64().unwrap();
    assert!(width <= 390.0, "the board is {width} px wide on a 390 px screen");
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "a real screenshot ({} bytes)", png.len());
    std::fs::write(screenshot_dir().join("district-board.png"), &png).unwrap();
    browser.goto(&format!("{web}/report")).await.unwrap();
    browser.wait_for_text("督办：网格员").await.unwrap();
    let width = browser.execute("return document.scrollingElement.scrollWidth").await.unwrap().as_f64().unwrap();
    assert!(width <= 390.0, "the report is {width} px wide on a 390 px screen");
    std::fs::write(screenshot_dir().join("district-report.png"), browser.screenshot().await.unwrap()).unwrap();

    // West back with its clock ten minutes behind (libfaketime): an action a worker sends now
    // is applied, its age judged by the time JetStream stored it, not by west's clock. Before
    // it, an action signed for east (its box named) but for west's incident: the relay refuses
    // it for west's path, and west refuses it as another box's when it comes on west's subject
    // past the relay.
    west.daemon.as_mut().unwrap().kill_hard();
    west.run_box_with_clock("-10m").await;
    west.proxy.set_blackholed(false);
    let (incident, state) = west.newest_incident();
    assert_eq!(state, "open", "west's incident waits for a worker");
    let now = now_ms();
    let for_box = |box_id: &str| {
        let signer = gridwatch::sources::mqtt::incident_acks::AckConfig::without_topic(ACK_SECRET).for_box(box_id);
        let sig = signer.sign(incident, "accept", "李强", None, now);
        serde_json::json!({"box": box_id, "incident": incident, "action": "accept", "by": "李强", "ts": now, "sig": sig}).to_string()
    };
    let west_relay = format!("{}/act/old-town/west", district.relay);
    let answer = http.post(&west_relay).body(for_box("east")).send().await.unwrap();
    assert_eq!(answer.status(), 400, "another box's action: {:?}", answer.text().await);
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    js.publish(gridwatch::cluster::actions::subject("old-town", "west"), for_box("east").into()).await.unwrap().await.unwrap();
    let refused = wait_for(30 * SECOND, || async { west.relayed_actions("other_box").await == 1 }).await;
    assert!(refused, "west refuses east's action: {:?}", west.stderr());
    assert_eq!(west.newest_incident(), (incident, "open".to_string()), "east's action is not applied at west");
    let answer = http.post(&west_relay).body(for_box("west")).send().await.unwrap();
    assert_eq!(answer.status(), 202, "{:?}", answer.text().await);
    let applied = wait_for(30 * SECOND, || async { west.newest_incident().1 == "accepted" }).await;
    assert!(applied, "west, its clock behind, did not apply the action: {:?}", west.stderr());
    assert_eq!((west.relayed_actions("applied").await, west.relayed_actions("stale").await), (1, 0));
}

impl Community {
    /// One reading of `sensor` numbered `seq` (also its `level`, the value checked at the hub).
    fn numbered_reading(&self, sensor: usize, seq: u64) {
        self.mosquitto.publish(&self.topic(sensor), &format!(r#"{{"do": 7.0, "level": {seq}, "seq": {seq}, "ts": {}}}"#, now_ms())).unwrap();
    }

    /// One sample of the box's `/metrics` (missing: NaN).
    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port)).await.unwrap().text().await.unwrap();
        common::metric(&text, series).unwrap_or(f64::NAN)
    }
}

/// The `level` values stored per sensor of `box_id` in the district's InfluxDB (every sample,
/// duplicates included: VictoriaMetrics' export is raw).
async fn district_levels(vm: &VictoriaMetrics, box_id: &str) -> std::collections::BTreeMap<String, Vec<u64>> {
    let series = vm.export(&format!(r#"{{__name__="water_level",box="{box_id}"}}"#)).await.unwrap_or_default();
    let mut levels = std::collections::BTreeMap::new();
    for one in series {
        let sensor = one["metric"]["sensor"].as_str().unwrap_or("?").to_string();
        let values: &mut Vec<u64> = levels.entry(sensor).or_default();
        values.extend(one["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as u64));
    }
    for values in levels.values_mut() {
        values.sort_unstable();
    }
    levels
}

/// Readings to the district's InfluxDB, end to end: the box keeps them while its link is
/// blackholed and sends each once it is back; the hub writes each sensor's numbered readings
/// exactly once (0 lost, 0 duplicates) and only then moves the mark the box forgets them by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_districts_influxdb_exactly_once_across_a_blackhole() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    let influx = vm.url();
    let district = start_district_with(&nats, &["--influx", &influx]).await;
    // Nothing thinned at this cap; kept for the uplink every second.
    let east = Community::start_with("east", &nats, "batch_rows = 100\nuplink_points_per_sec = 1000\nreadings_batch_secs = 1\n").await;
    for series in [
        "gridwatch_uplink_rows_behind{kind=\"reading\"}",
        "gridwatch_uplink_batches_resent_total{kind=\"reading\"}",
        "gridwatch_uplink_last_commit_age_seconds{kind=\"alert\"}",
        "gridwatch_uplink_readings_total{result=\"thinned\"}",
        "gridwatch_uplink_readings_total{result=\"backlog_full\"}",
    ] {
        assert!(east.metric(series).await.is_finite(), "{series} is shown from start");
    }
    let sensors = [1, 2, 3];
    let expected = |upto: u64| sensors.iter().map(|s| (format!("east-{s:02}"), (1..=upto).collect::<Vec<_>>())).collect::<std::collections::BTreeMap<_, _>>();
    let publish = |from: u64, to: u64| {
        for seq in from..=to {
            for sensor in sensors {
                east.numbered_reading(sensor, seq);
            }
        }
    };
    publish(1, 10);
    let arrived = wait_for(30 * SECOND, || async { district_levels(&vm, "east").await == expected(10) }).await;
    assert!(arrived, "{:?}\nbox: {:?}", district_levels(&vm, "east").await, east.stderr());

    // The link blackholed while the sensors go on: nothing arrives, the box's backlog shows.
    east.proxy.set_blackholed(true);
    let cut = Instant::now();
    publish(11, 40);
    let behind = wait_for(10 * SECOND, || async { east.metric("gridwatch_uplink_rows_behind{kind=\"reading\"}").await >= 90.0 }).await;
    assert!(behind, "rows behind: {}", east.metric("gridwatch_uplink_rows_behind{kind=\"reading\"}").await);
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(cut.elapsed())).await;
    assert_eq!(district_levels(&vm, "east").await, expected(10), "nothing passes a blackholed link");
    assert!(east.metric("gridwatch_uplink_last_commit_age_seconds{kind=\"reading\"}").await >= 5.0);

    // Back: each reading once, and the box forgets them once the hub's mark covers them.
    let idle_rate = 255.0; // bytes/s of lease renewals, pings and heartbeats at lease_renew_secs = 1 (above)
    let back_from = east.proxy.bytes_forwarded();
    let back = Instant::now();
    east.proxy.set_blackholed(false);
    let caught_up = wait_for(60 * SECOND, || async { district_levels(&vm, "east").await == expected(40) }).await;
    let levels = district_levels(&vm, "east").await;
    assert!(
        caught_up,
        "lost or duplicated at the hub: {levels:?}\nbox: {:?}\nhub: {:?}",
        east.stderr(),
        district.hub.stderr().into_iter().rev().take(30).collect::<Vec<_>>()
    );
    let sent = east.proxy.bytes_forwarded() - back_from;
    eprintln!(
        "uplink readings: 90 readings after the link came back in {:?}: {sent} bytes, about {:.0} bytes per reading beside the idle traffic",
        back.elapsed(),
        (sent as f64 - idle_rate * back.elapsed().as_secs_f64()).max(0.0) / 90.0
    );
    let settled = wait_for(10 * SECOND, || async { east.metric("gridwatch_uplink_rows_behind{kind=\"reading\"}").await == 0.0 }).await;
    assert!(settled, "the box still counts readings behind");
    let mark = high_water_mark(&nats, &east.hwm_key("reading")).await;
    assert!(mark >= 120, "the hub's mark covers every reading: {mark}");
    let forgotten = wait_for(10 * SECOND, || async { east.local_ids("uplink_readings").is_empty() }).await;
    assert!(forgotten, "the box keeps readings the hub has: {:?}", east.local_ids("uplink_readings"));
    assert_eq!(east.metric("gridwatch_uplink_readings_total{result=\"thinned\"}").await, 0.0);
    assert_eq!(hub_metric(&district.relay, "gridwatch_hub_readings_not_written_total{reason=\"refused\"}").await, 0.0);

    // The district's InfluxDB down: JetStream takes the batch, the hub cannot write it, the mark
    // stays and the box sends the batch again until it can; then each reading once.
    let mut vm = vm;
    vm.stop();
    publish(41, 45);
    tokio::time::sleep(8 * SECOND).await;
    assert_eq!(high_water_mark(&nats, &east.hwm_key("reading")).await, mark, "no write, no mark");
    assert!(east.metric("gridwatch_uplink_batches_resent_total{kind=\"reading\"}").await >= 1.0, "the batch not committed was sent again");
    vm.resume().await.unwrap();
    let caught_up = wait_for(60 * SECOND, || async { district_levels(&vm, "east").await == expected(45) }).await;
    assert!(caught_up, "after the district's InfluxDB came back: {:?}", district_levels(&vm, "east").await);
    // Nothing is written twice later either (resends of batches already committed).
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(district_levels(&vm, "east").await, expected(45), "0 lost, 0 duplicates");
}

/// A box on a poor link (300 ms each way, 2 KB/s: a 4G modem at the edge of coverage, fallen
/// back to GPRS) with the `[cluster]` defaults and the hub's default box lease: a backlog of
/// readings and alarms in the middle of it all reach the district exactly once, alarms without
/// waiting for the readings, and the box is never reported down while it renews its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_on_a_slow_link_sends_everything_once_and_is_never_reported_down() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    let influx = vm.url();
    let district = start_district_with(&nats, &["--influx", &influx, "--lease-ttl", "30s"]).await;
    let defaults = "lease_renew_secs = 5\ncommit_wait_secs = 10\nuplink_points_per_sec = 1000\nreadings_batch_secs = 1\n";
    let east = Community::start_with("east", &nats, defaults).await;
    east.proxy.set_slow(Slowness { latency: Duration::from_millis(300), bytes_per_sec: Some(2_000) });
    let slow_from = east.proxy.bytes_forwarded();
    let started = Instant::now();

    // 1,800 numbered readings at once (three sensors × 600: a box back from a long cut), with
    // oxygen values as a probe's float32 gives them (they deflate as little as real ones), then
    // three alarms while they are on their way.
    let sensors = [1, 2, 3];
    let mut rng = fastrand::Rng::with_seed(23);
    for seq in 1..=600 {
        for sensor in sensors {
            let oxygen = f64::from(6.0 + 3.0 * rng.f32());
            east.mosquitto.publish(&east.topic(sensor), &format!(r#"{{"do": {oxygen}, "level": {seq}, "seq": {seq}, "ts": {}}}"#, now_ms())).unwrap();
        }
    }
    tokio::time::sleep(2 * SECOND).await;
    east.alarm_cycles_of(1, &sensors).await;
    let alarms_at = Instant::now();
    district.assert_caught_up(&east, 90 * SECOND).await;
    let alarms_took = alarms_at.elapsed();
    let expected: std::collections::BTreeMap<_, _> = sensors.iter().map(|s| (format!("east-{s:02}"), (1..=600).collect::<Vec<u64>>())).collect();
    let arrived = wait_for(240 * SECOND, || async { district_levels(&vm, "east").await == expected }).await;
    let took = started.elapsed();
    let levels = district_levels(&vm, "east").await;
    let counts: Vec<usize> = levels.values().map(Vec::len).collect();
    let resent = east.metric("gridwatch_uplink_batches_resent_total{kind=\"reading\"}").await;
    let carried = east.proxy.bytes_forwarded() - slow_from;
    eprintln!(
        "slow link: alarms at the hub {alarms_took:?} after they fired; 1,800 readings in {took:?}; {carried} bytes carried; reading batches sent again: {resent}"
    );
    assert!(arrived, "readings per sensor at the hub: {counts:?} (each 1…600 once expected)\nbox: {:?}", east.stderr());
    // A reading batch the hub never committed in time would be sent again and again over a link
    // this slow: each resend is the link's time lost.
    assert!(resent <= 2.0, "reading batches sent again: {resent}\nbox: {:?}", east.stderr());
    assert!(district.box_down("east").is_empty(), "a box renewing its lease over a slow link is not down: {:?}", district.box_down("east"));
    let troubles = ["cannot renew the district lease", "district uplink cannot send"];
    assert!(!east.stderr_all().iter().any(|l| troubles.iter().any(|t| l.contains(t))), "{:?}", east.stderr());
}

/// One sample per hour (ms since the epoch → value) of each sensor of `box_id` for `metric` in
/// the district's InfluxDB (every sample, duplicates included).
async fn district_hours(vm: &VictoriaMetrics, box_id: &str, metric: &str) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let series = vm.export(&format!(r#"{{__name__="{metric}",box="{box_id}"}}"#)).await.unwrap_or_default();
    let mut hours = std::collections::BTreeMap::new();
    for one in series {
        let sensor = one["metric"]["sensor"].as_str().unwrap_or("?").to_string();
        let samples: &mut Vec<(i64, f64)> = hours.entry(sensor).or_default();
        let times = one["timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap());
        samples.extend(times.zip(one["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap())));
    }
    for samples in hours.values_mut() {
        samples.sort_by_key(|sample| sample.0);
    }
    hours
}

/// The hourly trend to the district's InfluxDB: readings stamped in past hours and thinned by a
/// low cap on the way up as raw readings, yet each sensor's every hour arrives whole (min, max,
/// mean, count of all its readings), exactly once, after the box was restarted with its link
/// blackholed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sensors_hourly_trend_reaches_the_districts_influxdb_once_though_readings_are_thinned() {
    const HOUR_MS: i64 = 3_600_000;
    const PER_HOUR: i64 = 20;
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let vm = VictoriaMetrics::start().await.expect("victoria-metrics");
    let district = start_district_with(&nats, &["--influx", &vm.url()]).await;
    // A cap of one raw reading a second for three sensors: one every 3 s of reading time each.
    let mut east = Community::start_with("east", &nats, "batch_rows = 100\nuplink_points_per_sec = 1\nreadings_batch_secs = 1\n").await;
    // Three hours that closed at least a quarter hour ago: 20 readings of each sensor in each,
    // a second apart (device time), `level` = sensor * 1000 + hour * 100 + k.
    let first_hour = now_ms().div_euclid(HOUR_MS) - 4;
    let hours = first_hour..first_hour + 3;
    let level = |sensor: i64, hour: i64, k: i64| (sensor * 1000 + (hour - first_hour) * 100 + k) as f64;
    for hour in hours.clone() {
        for k in 0..PER_HOUR {
            for sensor in 1..=3 {
                let ts = hour * HOUR_MS + k * 1000;
                east.mosquitto.publish(&east.topic(sensor), &format!(r#"{{"do": 7.0, "level": {}, "ts": {ts}}}"#, level(sensor as i64, hour, k))).unwrap();
            }
        }
    }
    let published = 3 * 3 * PER_HOUR as usize;
    let offered = wait_for(20 * SECOND, || async {
        let kept = east.metric("gridwatch_uplink_readings_total{result=\"kept\"}").await;
        kept + east.metric("gridwatch_uplink_readings_total{result=\"thinned\"}").await >= published as f64
    })
    .await;
    assert!(offered, "the box did not take the readings: {:?}", east.stderr());
    let thinned = east.metric("gridwatch_uplink_readings_total{result=\"thinned\"}").await;
    assert!(thinned >= (published / 2) as f64, "most raw readings thinned by the cap: {thinned}");

    // Stopped (its trend hours are written to its store) and started again with its link cut:
    // the closed hours are copied for the district and wait.
    east.proxy.set_blackholed(true);
    east.daemon.as_mut().unwrap().stop();
    east.daemon = None;
    east.run_box().await;
    let copied = wait_for(20 * SECOND, || async { east.local_ids("uplink_trend").len() == 3 * 3 * 2 }).await;
    assert!(copied, "closed hours × sensors × fields (do, level) copied: {:?}", east.local_ids("uplink_trend"));
    tokio::time::sleep(5 * SECOND).await;
    assert!(district_hours(&vm, "east", "water_hourly_level_count").await.is_empty(), "nothing passes a blackholed link");

    // Back: every sensor's every hour once, with the figures of all its readings.
    let back_from = east.proxy.bytes_forwarded();
    let back = Instant::now();
    east.proxy.set_blackholed(false);
    let expected = |figure: &str| {
        (1..=3i64)
            .map(|sensor| {
                let values = hours.clone().map(|hour| {
                    let all: Vec<f64> = (0..PER_HOUR).map(|k| level(sensor, hour, k)).collect();
                    let value = match figure {
                        "min" => all[0],
                        "max" => all[all.len() - 1],
                        "mean" => all.iter().sum::<f64>() / all.len() as f64,
                        _ => all.len() as f64,
                    };
                    (hour * HOUR_MS, value)
                });
                (format!("east-{sensor:02}"), values.collect::<Vec<_>>())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let figures = ["min", "max", "mean", "count"];
    let all_there = || async {
        for figure in figures {
            if district_hours(&vm, "east", &format!("water_hourly_level_{figure}")).await != expected(figure) {
                return false;
            }
        }
        district_hours(&vm, "east", "water_hourly_do_count").await == expected("count")
    };
    let arrived = wait_for(60 * SECOND, all_there).await;
    for figure in figures {
        let found = district_hours(&vm, "east", &format!("water_hourly_level_{figure}")).await;
        assert_eq!(found, expected(figure), "level_{figure} of every sensor and hour, once\nbox: {:?}", east.stderr());
    }
    assert!(arrived, "do_count: {:?}", district_hours(&vm, "east", "water_hourly_do_count").await);
    let sent = east.proxy.bytes_forwarded() - back_from;
    eprintln!("uplink trend: 18 hourly rows after the link came back in {:?}: {sent} bytes on the link (idle traffic included)", back.elapsed());
    let raw = district_levels(&vm, "east").await;
    assert!(raw.values().all(|levels| levels.len() < PER_HOUR as usize * 3), "raw readings were thinned on the way: {raw:?}");
    let newest = *east.local_ids("uplink_trend").last().unwrap_or(&18);
    assert!(high_water_mark(&nats, &east.hwm_key("trend")).await >= newest, "the hub's mark covers every trend row");
    // Nothing is written twice later either (a resend of a batch already committed).
    tokio::time::sleep(5 * SECOND).await;
    assert!(all_there().await, "0 lost, 0 duplicates");
    assert_eq!(hub_metric(&district.relay, "gridwatch_hub_trend_not_written_total{reason=\"refused\"}").await, 0.0);
}

/// A box's store replaced (a corrupt file set aside, a fresh one started: ids from 1 again):
/// the district must go on hearing it, not sit it below its old high-water marks, and must
/// keep what the old store sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_whose_store_was_replaced_is_heard_again_and_its_old_rows_kept() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let district = start_district(&nats).await;
    let mut east = Community::start("east", &nats).await;
    east.alarm_cycles(2).await;
    district.assert_caught_up(&east, 30 * SECOND).await;
    let old_epoch = east.epoch();
    let tables = ["alert_events", "incident_transitions"];
    let mut old_rows = Vec::new();
    for table in tables {
        old_rows.push(district.district_ids_of(table, "east", &old_epoch).await);
    }
    assert!(old_rows.iter().all(|ids| ids.len() >= 4), "the old store sent its rows: {old_rows:?}");
    assert_eq!(hub_metric(&district.relay, "gridwatch_hub_store_epochs_changed_total").await, 0.0);

    // Stopped; its store file garbage: the box sets it aside and starts a fresh one.
    east.daemon.as_mut().unwrap().stop();
    east.daemon = None;
    let state = east.dir.path().join("state");
    std::fs::write(state.join("gridwatch.db"), vec![0x5a; 8192]).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(state.join(format!("gridwatch.db{suffix}")));
    }
    east.run_box().await;
    let quarantined = std::fs::read_dir(&state).unwrap().filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains(".db.corrupt-"));
    assert!(quarantined, "the garbage was set aside");
    let new_epoch = east.epoch();
    assert_ne!(new_epoch, old_epoch, "a fresh store has an epoch of its own");

    // Its next alarms (ids from 1 again, below the old store's marks) reach PostgreSQL.
    east.alarm_cycles(1).await;
    assert!(east.local_ids("alert_events").contains(&1), "the fresh store counts from 1: {:?}", east.local_ids("alert_events"));
    district.assert_caught_up(&east, 30 * SECOND).await;
    let fired_after_replacement = {
        let (db, connection) = tokio_postgres::connect(&district.pg.conninfo(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        db.query_one("SELECT count(*) FROM alert_events WHERE box_id = 'east' AND epoch = $1 AND event = 'fired'", &[&new_epoch])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(fired_after_replacement, 3, "each sensor's alarm after the replacement");
    // Nothing of the old store lost or overwritten.
    for (table, before) in tables.iter().zip(&old_rows) {
        assert_eq!(&district.district_ids_of(table, "east", &old_epoch).await, before, "{table} of the old store");
    }
    assert_eq!(hub_metric(&district.relay, "gridwatch_hub_store_epochs_changed_total").await, 1.0);
    assert!(logged(&district.hub, "sends from a new store"), "the hub says so in its log");
    assert_eq!(high_water_mark(&nats, &east.hwm_key("alert")).await, *east.local_ids("alert_events").last().unwrap());

    // A copy of the store taken now and restored after another alarm cycle: the same epoch, and
    // fewer rows than the hub has committed under it. The alarm raised after the restore takes
    // ids the hub already holds; it must reach the district all the same.
    let copy = tempfile::tempdir().unwrap();
    east.daemon.as_mut().unwrap().stop();
    copy_store(&state, copy.path());
    east.run_box().await;
    east.alarm_cycles(1).await;
    district.assert_caught_up(&east, 30 * SECOND).await;
    east.daemon.as_mut().unwrap().stop();
    copy_store(copy.path(), &state);
    let restored_at = now_ms();
    east.run_box().await;
    east.alarm_cycles_of(1, &[1]).await;
    district.assert_caught_up(&east, 30 * SECOND).await;
    let renewed_epoch = east.epoch();
    assert_ne!(renewed_epoch, new_epoch, "the restored copy sends under an epoch of its own");
    let fired_after_restore = district.fired_since("east", &renewed_epoch, restored_at).await;
    assert_eq!(fired_after_restore, 1, "the alarm raised after the restore");
    assert_eq!(east.metric("gridwatch_uplink_epochs_renewed_total").await, 1.0);
    assert!(east.daemon.as_ref().unwrap().stderr().iter().any(|l| l.contains("more rows than it has")), "the box says so in its log");

    // The same again, but the restored copy runs offline until its new rows have passed the
    // hub's mark: its newest ids say nothing, the row under the mark's id is another one.
    east.daemon.as_mut().unwrap().stop();
    copy_store(&state, copy.path());
    east.run_box().await;
    east.alarm_cycles(1).await;
    district.assert_caught_up(&east, 30 * SECOND).await;
    let mark = high_water_mark(&nats, &east.hwm_key("alert")).await;
    east.daemon.as_mut().unwrap().stop();
    copy_store(copy.path(), &state);
    east.proxy.set_blackholed(true);
    let restored_at = now_ms();
    east.run_box().await;
    // Alarms of one sensor: the row under the mark's id is another sensor's (rows of the same
    // sensor, event and value under one id are not told apart).
    east.alarm_cycles_of(4, &[1]).await;
    let newest = *east.local_ids("alert_events").last().unwrap();
    assert!(newest > mark, "the copy's rows passed the hub's mark offline: {newest} against {mark}");
    east.proxy.set_blackholed(false);
    district.assert_caught_up(&east, 30 * SECOND).await;
    let offline_epoch = east.epoch();
    assert_ne!(offline_epoch, renewed_epoch, "the copy run offline sends under an epoch of its own");
    let fired_offline = district.fired_since("east", &offline_epoch, restored_at).await;
    assert_eq!(fired_offline, 4, "every alarm the copy raised offline");
    assert_eq!(east.metric("gridwatch_uplink_epochs_renewed_total").await, 1.0, "once in this run");
    assert!(east.daemon.as_ref().unwrap().stderr().iter().any(|l| l.contains("another row under the id it has")), "the box says so in its log");
}

/// Copies a stopped box's store files from the directory `from` into `to`, replacing what is there.
fn copy_store(from: &std::path::Path, to: &std::path::Path) {
    for file in ["gridwatch.db", "gridwatch.db-wal", "gridwatch.db-shm"] {
        let _ = std::fs::remove_file(to.join(file));
        let _ = std::fs::copy(from.join(file), to.join(file));
    }
}

/// Two boxes configured with one `box_id` (a copied card): both renew one lease, so neither
/// could be reported down. The hub tells installers once (`box-id-shared`, naming both
/// instances), clears it once one of them is gone, and reports the other down when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boxes_under_one_box_id_are_told_once_and_cleared_once() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let district = start_district(&nats).await;
    let mut east = Community::start("east", &nats).await;
    east.alarm_cycles(1).await;
    district.assert_caught_up(&east, 60 * SECOND).await;
    let told = |event: &str| district.hook.bodies().iter().filter(|b| b["kind"] == "box-id-shared" && b["event"] == event).cloned().collect::<Vec<_>>();

    let mut copy = Community::start("east", &nats).await;
    let raised = wait_for(30 * SECOND, || async { !told("raised").is_empty() }).await;
    assert!(raised, "two boxes under one box_id were not told\nhub: {:?}", district.hub.stderr());
    let message = &told("raised")[0];
    assert_eq!(message["box"], "east");
    assert_eq!(message["instances"].as_array().map(Vec::len), Some(2), "both instances named: {message}");
    assert!(message["text"].as_str().unwrap_or("").contains("box_id"), "what to do: {message}");

    // The copy goes: one box alone renews the key again.
    copy.daemon.as_mut().unwrap().kill_hard();
    let cleared = wait_for(60 * SECOND, || async { !told("cleared").is_empty() }).await;
    assert!(cleared, "box-id-shared not cleared once one box alone renews\nhub: {:?}", district.hub.stderr());
    assert_eq!((told("raised").len(), told("cleared").len()), (1, 1), "told once, cleared once");
    // The clear names the box left, and says the other may be down (its death was hidden).
    let cleared = &told("cleared")[0];
    let left = cleared["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(left.len(), 1, "the box left: {cleared}");
    let survivor = format!("{}-", east.daemon.as_ref().unwrap().pid());
    assert!(left[0]["instance"].as_str().unwrap_or("").starts_with(&survivor), "the box still renewing is named: {cleared}");
    assert!(cleared["text"].as_str().unwrap_or("").contains("可能已离线"), "{cleared}");
    assert!(district.box_down("east").is_empty(), "the box still alive is not down: {:?}", district.box_down("east"));
    assert_eq!(hub_metric(&district.relay, "gridwatch_hub_box_id_shared_total{event=\"raised\"}").await, 1.0);

    // And the box alone is reported down when it dies.
    east.daemon.as_mut().unwrap().kill_hard();
    let down = wait_for(45 * SECOND, || async { district.box_down("east") == ["raised"] }).await;
    assert!(down, "{:?}\nhub: {:?}", district.box_down("east"), district.hub.stderr());
}

/// A form field's value in a page (`name="ts" value="…"`).
fn form_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    Some(page[at..].split('"').next()?.to_string())
}

/// The workers' pages at the hub, for a box behind NAT whose links point there (`[http]
/// public_url = "<hub>/b/<box>"`): the link as the alarm delivered it opens at the hub; a step
/// sent there while the box is cut off is applied once by the box within 5 s of its link coming
/// back (the same form sent twice is one signature, refused the second time), and the hub's page
/// then shows the box's new state; a tampered, expired or other box's link is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_open_and_act_on_a_box_behind_nat_through_the_hubs_pages() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("ack-secret");
    std::fs::write(&secret_file, format!("{ACK_SECRET}\n")).unwrap();
    let district = start_district_with(&nats, &["--ack-secret-file", secret_file.to_str().unwrap()]).await;
    let hub = district.relay.clone();
    let alerts = WebhookReceiver::start(Vec::new()).await;
    // One secret for links and actions (their signatures have different purposes).
    let http = format!("public_url = \"{hub}/b/east\"\nlink_secret = \"{ACK_SECRET}\"\n");
    let channels = format!("\n[alerts]\nconsole = false\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n", alerts.url());
    let east = Community::start_configured("east", &nats, SMALL_BATCHES, &http, &channels).await;

    // An alarm: its link, as the webhook delivered it, points at the hub and opens there.
    east.reading(2, 2.0);
    let delivered = wait_for(20 * SECOND, || async { alerts.bodies().iter().any(|b| b["event"] == "fired") }).await;
    assert!(delivered, "no alarm delivered: {:?}", east.stderr());
    let alarm = alerts.bodies().into_iter().find(|b| b["event"] == "fired").unwrap();
    let link = alarm["link"].as_str().unwrap().to_string();
    let incident = alarm["incident_id"].as_i64().unwrap();
    assert!(link.starts_with(&format!("{hub}/b/east/incident/{incident}?exp=")), "{link}");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let opened = wait_for(20 * SECOND, || async { client.get(&link).send().await.is_ok_and(|r| r.status() == 200) }).await;
    assert!(opened, "the hub did not open the link once the incident was up: {:?}", client.get(&link).send().await.map(|r| r.status()));
    let page = client.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("#{incident} · 待接单")) && page.contains("east-02") && page.contains("触发黄色预警"), "{page}");
    assert!(page.contains("value=\"accept\">接单</button>") && !page.contains("value=\"transfer\""), "the hub offers the steps an action carries: {page}");

    // Its short form (an SMS's) opens it too, at the hub, under the box's path.
    let short = gridwatch::links::shorten(&link);
    let answer = client.get(&short).send().await.unwrap();
    assert_eq!(answer.status(), 303, "{short}");
    assert_eq!(format!("{hub}{}", answer.headers()["location"].to_str().unwrap()), link, "{short}");
    let answer = client.get(short.replacen(&format!("/i/{incident}."), &format!("/i/{}.", incident + 1), 1)).send().await.unwrap();
    assert_eq!(answer.status(), 403, "a short link altered");

    // Refused: the signature tampered with, the link expired, the link of another box.
    let tampered = {
        let at = link.find("sig=").unwrap() + 4;
        let flipped = if &link[at..at + 1] == "0" { "1" } else { "0" };
        format!("{}{flipped}{}", &link[..at], &link[at + 1..])
    };
    let expired = {
        let links = gridwatch::links::WorkerLinks::new(format!("{hub}/b/east").parse().unwrap(), ACK_SECRET, Duration::from_secs(3600)).for_box("east");
        links.link(incident, now_ms() / 1000 - 7200)
    };
    for (which, url, says) in
        [("tampered", tampered.clone(), "链接无效"), ("expired", expired, "链接已过期"), ("another box's", link.replace("/b/east/", "/b/west/"), "链接无效")]
    {
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 403, "{which} link");
        assert!(answer.text().await.unwrap().contains(says), "{which} link says why");
    }
    let answer = client.post(&tampered).form(&[("action", "accept"), ("by", "王芳"), ("ts", &now_ms().to_string())]).send().await.unwrap();
    assert_eq!(answer.status(), 403, "no step through a tampered link");
    assert_eq!(hub_metric(&hub, "gridwatch_hub_links_refused_total{reason=\"bad_signature\"}").await, 4.0);
    assert_eq!(hub_metric(&hub, "gridwatch_hub_links_refused_total{reason=\"expired\"}").await, 1.0);
    assert_eq!(hub_metric(&hub, "gridwatch_hub_actions_total{result=\"relayed\"}").await, 0.0, "nothing queued");

    // East cut off past its lease: the page says so; a worker accepts there, the same form sent twice.
    east.proxy.set_blackholed(true);
    let down = wait_for(20 * SECOND, || async { district.box_down("east") == ["raised"] }).await;
    assert!(down, "{:?}", district.box_down("east"));
    // The hub records the box down in PostgreSQL only after the webhook answered: a moment later.
    let offline = wait_for(5 * SECOND, || async { client.get(&link).send().await.unwrap().text().await.unwrap().contains("社区盒子目前离线") }).await;
    let page = client.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(offline, "{page}");
    let ts = form_value(&page, "ts").expect("the page's time in its form");
    let form = [("action", "accept"), ("by", "王芳 13800000001"), ("note", "马上到"), ("ts", ts.as_str())];
    for _ in 0..2 {
        let answer = client.post(&link).form(&form).send().await.unwrap();
        assert_eq!(answer.status(), 303, "{:?}", answer.text().await);
        let to = answer.headers()["location"].to_str().unwrap().to_string();
        assert!(to.starts_with(&format!("/b/east/incident/{incident}?")) && to.contains("done=accept"), "{to}");
    }
    let sent = client.get(format!("{link}&done=accept")).send().await.unwrap().text().await.unwrap();
    assert!(sent.contains("已发送：接单。社区盒子目前离线"), "the page says it was sent and waits for the box: {sent}");
    assert_eq!(hub_metric(&hub, "gridwatch_hub_actions_total{result=\"relayed\"}").await, 2.0);
    let browser = Browser::start().await.expect("headless Chromium");
    browser.phone(390, 844).await.unwrap();
    browser.goto(&format!("{link}&done=accept")).await.unwrap();
    browser.wait_for_text("已发送").await.unwrap();
    let width = browser.execute("return document.scrollingElement.scrollWidth").await.unwrap().as_f64().unwrap();
    assert!(width <= 390.0, "the hub's page is {width} px wide on a 390 px screen");
    std::fs::write(screenshot_dir().join("district-incident-sent.png"), browser.screenshot().await.unwrap()).unwrap();
    tokio::time::sleep(SECOND).await;
    assert_eq!(east.newest_incident(), (incident, "open".to_string()), "nothing reaches a box offline");

    // Back online: applied once within 5 s, the second copy refused as replayed.
    let reconnected = Instant::now();
    east.proxy.set_blackholed(false);
    let applied = wait_for(10 * SECOND, || async { east.newest_incident().1 == "accepted" }).await;
    let after = reconnected.elapsed();
    eprintln!("hub page's accept applied {after:?} after the link came back");
    assert!(applied && after <= 5 * SECOND, "applied: {applied} after {after:?}: {:?}", east.stderr());
    let replayed = wait_for(10 * SECOND, || async { east.relayed_actions("replayed").await == 1 }).await;
    assert!(replayed, "the form sent twice is one signature, taken once");
    assert_eq!(east.relayed_actions("applied").await, 1, "applied exactly once");

    // The hub's page shows the box's state once the transition came up.
    let shown = wait_for(15 * SECOND, || async {
        client.get(format!("{link}&done=accept")).send().await.unwrap().text().await.unwrap().contains(&format!("#{incident} · 已接单"))
    })
    .await;
    let page = client.get(format!("{link}&done=accept")).send().await.unwrap().text().await.unwrap();
    assert!(shown, "{page}");
    assert!(page.contains("盒子已执行：接单") && page.contains("王芳 13800000001 (hub)") && page.contains("马上到"), "{page}");
    assert!(!page.contains("value=\"accept\""), "accepted: 接单 is no longer offered");
    browser.goto(&format!("{link}&done=accept")).await.unwrap();
    browser.wait_for_text("盒子已执行").await.unwrap();
    std::fs::write(screenshot_dir().join("district-incident-page.png"), browser.screenshot().await.unwrap()).unwrap();
}

/// A sensor with its own 4G link: it publishes (MQTT, QoS 1) to the hub's MQTT listener
/// (`--mqtt-listen`), and its home box judges it from the district's stream.
struct Sensor4g {
    publisher: gridwatch_tests::Publisher,
    topic: String,
    seq: u64,
    /// Whether its last reading was low (an alarm firing).
    low: bool,
    /// The events its readings must raise at the box's webhook: (event, the reading's time).
    expected: Vec<(String, i64)>,
}

impl Sensor4g {
    /// Logs in as `old-town/<box_id>/<sensor>` with `password`.
    async fn connect(mqtt_port: u16, box_id: &str, sensor: &str, password: &str) -> Sensor4g {
        let user = format!("old-town/{box_id}/{sensor}");
        let publisher = gridwatch_tests::Publisher::connect_as(mqtt_port, &format!("{sensor}-4g"), Some((&user, password))).await.unwrap();
        Sensor4g { publisher, topic: format!("gw/s/{user}"), seq: 0, low: false, expected: Vec::new() }
    }

    /// One reading with its own time and number, acknowledged by the hub (PUBACK: the district's
    /// stream holds it); sent again until it is (each try waits 3 s for the PUBACK).
    async fn reading(&mut self, value: f64) {
        self.seq += 1;
        let ts = now_ms();
        let payload = format!(r#"{{"do": {value}, "ts": {ts}, "seq": {}}}"#, self.seq);
        let mut tries = 0;
        while let Err(error) = self.publisher.publish_acked(&self.topic, payload.clone()).await {
            tries += 1;
            assert!(tries < 10, "the hub's MQTT listener did not take reading {}: {error:#}", self.seq);
        }
        let low = value < 5.0;
        if low != self.low {
            self.expected.push((if low { "fired" } else { "cleared" }.to_string(), ts));
            self.low = low;
        }
        // Readings of one sensor never share a millisecond.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    /// `cycles` times low then back, `gap` between readings.
    async fn cycles(&mut self, cycles: usize, gap: Duration) {
        for _ in 0..cycles {
            for value in [3.0, 7.0] {
                self.reading(value).await;
                tokio::time::sleep(gap).await;
            }
        }
    }
}

/// The `(event, at_ms, event_id)` of every alert the webhook received for `sensor`.
fn webhook_events(alerts: &WebhookReceiver, sensor: &str) -> Vec<(String, i64, i64)> {
    alerts
        .bodies()
        .iter()
        .filter(|b| b["sensor"] == sensor && b["rule"] == "do-low")
        .map(|b| (b["event"].as_str().unwrap_or("?").to_string(), b["at_ms"].as_i64().unwrap_or(0), b["event_id"].as_i64().unwrap_or(0)))
        .collect()
}

/// Waits until the webhook has an event for each the sensor's readings must raise.
async fn wait_for_events(alerts: &WebhookReceiver, sensor: &Sensor4g, name: &str, timeout: Duration) -> bool {
    let wanted: BTreeSet<(String, i64)> = sensor.expected.iter().cloned().collect();
    wait_for(timeout, || async {
        let got: BTreeSet<(String, i64)> = webhook_events(alerts, name).into_iter().map(|(event, at, _)| (event, at)).collect();
        wanted.is_subset(&got)
    })
    .await
}

/// Issue 23's sensors with their own 4G link: the readings of a sensor publishing to the hub's
/// MQTT listener are judged by its home box through the district's stream — with the link up,
/// across a `kill -9` of the stream's leader node (the hub acknowledges only what the stream
/// holds), a cut of the box's link, a `kill -9` of the box while readings keep arriving at the
/// district, and a `kill -9` of the box in the middle of a burst.
/// Every reading is judged (each low reading fires, each next high one clears, at the
/// reading's own time) and each of these events reaches the box's webhook under one event id
/// (no second judgement makes a second event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4g_sensor_is_judged_by_its_box_exactly_once_across_a_cut_and_kills() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut nats = NatsCluster::start(3).await.expect("nats-server");
    let mqtt_port = free_port();
    // The sensors' passwords, written by the installers' tool.
    let passwords = tempfile::tempdir().unwrap();
    let password_file = passwords.path().join("sensors.passwd");
    for (create, user, password) in [(true, "old-town/east/east-03", "ding-dong 17"), (false, "old-town/east/nobody", "who")] {
        let mut command = std::process::Command::new("mosquitto_passwd");
        command.args(if create { ["-c", "-b"].as_slice() } else { ["-b"].as_slice() });
        let written = command.arg(&password_file).args([user, password]).status();
        assert!(written.is_ok_and(|s| s.success()), "mosquitto_passwd (package mosquitto) wrote no password");
    }
    let password_path = password_file.to_str().unwrap();
    // A box lease of 16 s, not 8: the box is killed and started again twice below, and on a
    // loaded machine its start took longer than 8 s — the hub then judged its sensor as a dead
    // box's, which only the standby part at the end may see.
    let listen = format!("127.0.0.1:{mqtt_port}");
    let district = start_district_with(&nats, &["--mqtt-listen", &listen, "--mqtt-passwords", password_path, "--lease-ttl", "16s"]).await;
    let alerts = WebhookReceiver::start(Vec::new()).await;
    let channels = format!("\n[alerts]\nconsole = false\nflap_window_secs = 0\n\n[[alerts.webhook]]\nname = \"office\"\nurl = \"{}\"\n", alerts.url());
    let mut east = Community::start_configured("east", &nats, "sensors_via_hub = true\nstandby_copy_secs = 2\n", "", &channels).await;
    let mut sensor = Sensor4g::connect(mqtt_port, "east", "east-03", "ding-dong 17").await;
    let gap = Duration::from_millis(200);

    // The link up: the box judges each reading as it arrives.
    sensor.cycles(2, gap).await;
    assert!(wait_for_events(&alerts, &sensor, "east-03", 20 * SECOND).await, "link up: {:?}\nbox: {:?}", webhook_events(&alerts, "east-03"), east.stderr());
    // What the box's link carries per reading pulled: 20 readings that change nothing (no alert
    // to send up), less the idle rate (lease, pings, heartbeats) measured once the uplink is done.
    tokio::time::sleep(3 * SECOND).await;
    let (idle_from, idle_bytes) = (Instant::now(), east.proxy.bytes_forwarded());
    tokio::time::sleep(3 * SECOND).await;
    let idle_per_sec = (east.proxy.bytes_forwarded() - idle_bytes) as f64 / idle_from.elapsed().as_secs_f64();
    let accepted = || async { common::metric(&common::metrics(east.http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) };
    let (busy_from, busy_bytes, before) = (Instant::now(), east.proxy.bytes_forwarded(), accepted().await);
    for _ in 0..20 {
        sensor.reading(7.0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(wait_for(10 * SECOND, || async { accepted().await >= before + 20.0 }).await, "20 quiet readings not judged: {:?}", east.stderr());
    let busy = (east.proxy.bytes_forwarded() - busy_bytes) as f64 - idle_per_sec * busy_from.elapsed().as_secs_f64();
    eprintln!("4g sensor: the box's link carried ≈ {:.0} bytes per reading pulled (idle {idle_per_sec:.0} bytes/s)", busy / 20.0);

    // A wrong password is refused at the hub; a topic that is not the sensor's own and another
    // sensor's topic are acknowledged and dropped there; a sensor the box does not know (it has
    // a password) is refused by the box, acked. None holds up the readings after them.
    let mut intruder = Sensor4g::connect(mqtt_port, "east", "east-03", "ding-dong 18").await;
    assert!(intruder.publisher.publish_acked(&intruder.topic.clone(), r#"{"do": 1.0}"#.into()).await.is_err(), "a wrong password published");
    drop(intruder);
    sensor.publisher.publish_acked("gw/s/old-town/east", r#"{"do": 3.0}"#.into()).await.unwrap();
    sensor.publisher.publish_acked("gw/s/old-town/east/nobody", format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).await.unwrap();
    let mut nobody = Sensor4g::connect(mqtt_port, "east", "nobody", "who").await;
    nobody.publisher.publish_acked("gw/s/old-town/east/nobody", format!(r#"{{"do": 3.0, "ts": {}}}"#, now_ms())).await.unwrap();
    let refused = wait_for(10 * SECOND, || async {
        common::metric(&common::metrics(east.http_port).await, "gridwatch_payloads_rejected_total{reason=\"unknown_sensor\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(refused, "the box did not refuse the unknown sensor: {:?}", east.stderr());

    // The sensors' stream loses its leader while the sensor publishes: what the hub
    // acknowledged is in the stream (readings are acknowledged late, not lost).
    let leader = nats.wait_for_stream_leader(gridwatch::cluster::SENSORS_STREAM, 30 * SECOND).await.expect("the sensors' stream has a leader");
    nats.kill(&leader);
    sensor.cycles(2, gap).await;
    nats.restart(&leader).await.unwrap();
    assert!(
        wait_for_events(&alerts, &sensor, "east-03", 30 * SECOND).await,
        "after the stream's leader was killed: {:?}\nbox: {:?}\nhub: {:?}",
        webhook_events(&alerts, "east-03"),
        east.stderr(),
        district.hub.stderr().into_iter().rev().take(20).collect::<Vec<_>>()
    );

    // The box's link cut while the sensor goes on: its readings wait at the district.
    // Distinct events: a delivery the webhook sink sent again (its answer lost) is no new judgement.
    let distinct = || webhook_events(&alerts, "east-03").into_iter().map(|(event, at, _)| (event, at)).collect::<BTreeSet<_>>();
    let before_cut = distinct();
    east.proxy.set_blackholed(true);
    sensor.cycles(2, gap).await;
    tokio::time::sleep(6 * SECOND).await;
    let during_cut = distinct();
    east.proxy.set_blackholed(false);
    let link_back = Instant::now();
    // Newer readings at once: a reading the district sent into the dead link must still be
    // judged before them (it is older), not dropped as out of order when it comes again.
    sensor.cycles(1, gap).await;
    assert!(
        wait_for_events(&alerts, &sensor, "east-03", 30 * SECOND).await,
        "after the cut: {:?}\nbox: {:?}",
        webhook_events(&alerts, "east-03"),
        east.stderr()
    );
    let after_cut = link_back.elapsed();
    assert_eq!(during_cut, before_cut, "nothing of the sensor was judged while the link was cut");

    // The box killed; the sensor goes on; the box back.
    east.daemon.as_mut().unwrap().kill_hard();
    sensor.cycles(2, gap).await;
    let restarted = Instant::now();
    east.run_box().await;
    assert!(
        wait_for_events(&alerts, &sensor, "east-03", 30 * SECOND).await,
        "after a kill: {:?}\nbox: {:?}",
        webhook_events(&alerts, "east-03"),
        east.stderr()
    );

    let after_kill = restarted.elapsed();

    // Killed in the middle of a burst (a reading may be between its commit and its ack).
    for index in 0..12 {
        sensor.reading(if index % 2 == 0 { 3.0 } else { 7.0 }).await;
        if index == 5 {
            east.daemon.as_mut().unwrap().kill_hard();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    east.run_box().await;
    assert!(
        wait_for_events(&alerts, &sensor, "east-03", 30 * SECOND).await,
        "after a kill in a burst: {:?}\nbox: {:?}",
        webhook_events(&alerts, "east-03"),
        east.stderr()
    );

    // Exactly the events the readings raise, each under one event id.
    tokio::time::sleep(2 * SECOND).await;
    let received = webhook_events(&alerts, "east-03");
    let judged: BTreeSet<(String, i64, i64)> = received.iter().cloned().collect();
    let events: Vec<(String, i64)> = judged.iter().map(|(event, at, _)| (event.clone(), *at)).collect();
    let mut expected = sensor.expected.clone();
    expected.sort();
    assert_eq!(events, expected, "each reading's event once (distinct event ids): {judged:?}");
    let resent = received.len() - judged.len();
    let hub_metrics = reqwest::get(format!("{}/metrics", district.relay)).await.unwrap().text().await.unwrap();
    let stored = common::metric(&hub_metrics, "gridwatch_hub_sensor_readings_total{result=\"stored\"}").unwrap_or(0.0);
    let not_stored = common::metric(&hub_metrics, "gridwatch_hub_sensor_readings_total{result=\"not_stored\"}").unwrap_or(0.0);
    assert!(stored >= sensor.seq as f64 + 1.0, "the hub stored {stored} of {} readings and the unknown sensor's", sensor.seq);
    assert_eq!(common::metric(&hub_metrics, "gridwatch_hub_sensor_readings_total{result=\"not_authorized\"}"), Some(2.0));
    assert!(common::metric(&hub_metrics, "gridwatch_hub_sensor_logins_refused_total").unwrap_or(0.0) >= 1.0, "the wrong password");
    // A sensor that publishes without end (its login leaked, its firmware loops) loses its own
    // oldest readings past a week's worth, never another sensor's.
    a_flooding_sensor_evicts_only_its_own_readings(&nats).await;

    // The box dead past its lease with an alarm open: the active hub judges the sensor from the
    // box's latest copy of its state, and the box, back, sends the same events under the same
    // keys (box:sensor:rule:event:at_ms), which a receiver drops.
    let (standby_delays, standby_keys) = a_dead_box_s_4g_sensor_is_judged_by_the_hub(&nats, &district, &mut east, &mut sensor, &alerts).await;

    // A box judging 4G sensors stops cleanly (its pull lets the spooler and the pipeline end).
    let stopping = Instant::now();
    assert!(east.daemon.as_mut().unwrap().stop().success(), "the box did not stop cleanly: {:?}", east.stderr());
    assert!(stopping.elapsed() < 10 * SECOND, "the box took {:?} to stop", stopping.elapsed());
    eprintln!(
        "4g sensor: {} readings ({stored} stored by the hub, {not_stored} not stored and sent again), {} events at the webhook ({resent} re-sent under their own id); all judged {:.1} s after the link came back and {:.1} s after the killed box was started again; while the box was down the hub posted {standby_keys:?} {standby_delays:?} after their readings; {:.1} s",
        sensor.seq,
        expected.len(),
        after_cut.as_secs_f64(),
        after_kill.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Publishes straight into the sensors' stream (as the hub's listener does) one reading of a
/// quiet sensor, then `KEPT_PER_SENSOR` + 20 of a flooding one (of a box that does not run, so
/// nothing judges them): the flood's first 20 are gone, its next one and the quiet reading kept.
async fn a_flooding_sensor_evicts_only_its_own_readings(nats: &NatsCluster) {
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    let quiet = js.publish("gw.s.old-town.nobox.quiet", r#"{"do": 7.0}"#.into()).await.unwrap().await.unwrap().sequence;
    let kept = gridwatch::cluster::sensors::KEPT_PER_SENSOR as usize;
    let mut sequences = Vec::with_capacity(kept + 20);
    for chunk in (0..kept + 20).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::new();
        for index in chunk {
            acks.push(js.publish("gw.s.old-town.nobox.flood", format!(r#"{{"do": 7.0, "seq": {index}}}"#).into()).await.unwrap());
        }
        for ack in acks {
            sequences.push(ack.await.unwrap().sequence);
        }
    }
    let stream = js.get_stream(gridwatch::cluster::SENSORS_STREAM).await.unwrap();
    assert!(stream.get_raw_message(quiet).await.is_ok(), "the quiet sensor's reading was evicted by the flood");
    assert!(stream.get_raw_message(sequences[19]).await.is_err(), "the flood's 20th reading is still kept");
    assert!(stream.get_raw_message(sequences[20]).await.is_ok(), "the flood's 21st reading is gone");
}

/// Waits until east's standby copy in KV covers `sensor`'s last reading in the stream.
async fn copy_covers_the_last_reading(js: &async_nats::jetstream::Context, sensor: &str) -> bool {
    wait_for(30 * SECOND, || async {
        let (Ok(stream), Ok(copies)) = (js.get_stream(gridwatch::cluster::SENSORS_STREAM).await, js.get_key_value(gridwatch::cluster::EVAL_BUCKET).await)
        else {
            return false;
        };
        let (Ok(last), Ok(Some(copy))) = (stream.get_last_raw_message_by_subject(&format!("gw.s.old-town.east.{sensor}")).await, copies.get("east").await)
        else {
            return false;
        };
        gridwatch::cluster::standby::decode::<gridwatch::cluster::standby::EvalCopy>(&copy).is_ok_and(|copy| copy.covered >= last.sequence)
    })
    .await
}

/// A district webhook slower than the hub waits for `box-down` (9 s against 8 s): the webhook
/// never takes it, yet the hub judges the dead box's 4G sensor as soon as its lease is
/// confirmed missing, and the alarm reaches the webhook (an outside tester's red reached nobody
/// while the standby waited for the down flag only a taken `box-down` sets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_box_s_4g_sensor_is_judged_though_the_webhook_answers_slowly() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let mqtt_port = free_port();
    let hook = WebhookReceiver::start_slow(9 * SECOND).await;
    let mut district = start_district_hooked(&nats, &["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}"), "--mqtt-anonymous"], hook).await;
    let (_east, mut sensor) = east_with_its_4g_sensor_killed(&nats, mqtt_port).await;
    let killed = Instant::now();
    let posted = wait_for(45 * SECOND, || async { district.box_down("east").first().map(String::as_str) == Some("raised") }).await;
    assert!(posted, "box-down was not even posted");
    tokio::time::sleep(2 * SECOND).await;
    let (key, _) = low_reading_posted_by_the_hub(&district, &mut sensor, 30 * SECOND, "the hub did not judge the dead box").await;
    // The board says the box is offline though the webhook has not taken its `box-down`.
    let board = hub_page(&district.relay, "/board").await;
    assert!(board.contains("<b class=\"off\">离线</b> <small>断线告警尚未送达</small>"), "{board}");
    eprintln!(
        "slow webhook: the dead box's alarm posted {:.1} s after the kill; box-down posted {} times meanwhile",
        killed.elapsed().as_secs_f64(),
        district.box_down("east").len()
    );

    // The active hub dies: the next one judges the same readings again from the box's copy, but
    // does not post a key the first one posted.
    let taken = wait_for(20 * SECOND, || async { logs_with(&district.hub, &["4G sensor posted", &key]) }).await;
    assert!(taken, "the webhook never took the alarm: {:?}", district.hub.stderr());
    let (second, _second_dir, _) = start_hub(&nats, &district.pg, &district.hook, "hub-b");
    assert!(wait_for(60 * SECOND, || async { logged(&second, "standing by") }).await, "the second hub is not standing by: {:?}", second.stderr());
    district.hub.kill_hard();
    let skipped = wait_for(60 * SECOND, || async { logs_with(&second, &["posted before", &key]) }).await;
    assert!(skipped, "the second hub did not judge the backlog again: {:?}", second.stderr());
    let copies = standby_keys(&district).iter().filter(|k| **k == key).count();
    assert_eq!(copies, 1, "{:?}", standby_keys(&district));
}

/// An outside tester: a box back after its 4G sensors piled up readings at the district judges
/// them at one a round trip; the hub's evaluator stopped at the box's lease, and a new alarm
/// behind the backlog reached nobody for 248 s (1,200 readings, a 200 ms link). The hub judges on
/// until the box has read its backlog: the new alarm is posted at once (the box sends it too,
/// under the same key, once it gets there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_back_to_a_backlog_of_its_4g_sensors_leaves_new_alarms_to_the_hub_until_it_has_read_it() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(3).await.expect("nats-server");
    let mqtt_port = free_port();
    let district = start_district_with(&nats, &["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}"), "--mqtt-anonymous"]).await;
    let (mut east, mut sensor) = east_with_its_4g_sensor_killed(&nats, mqtt_port).await;
    let down = wait_for(45 * SECOND, || async { district.box_down("east").last().map(String::as_str) == Some("raised") }).await;
    assert!(down, "box-down not raised: {:?}", district.box_down("east"));
    for _ in 0..300 {
        sensor.reading(7.0).await;
    }
    // Back on a 4G link of 200 ms a round trip: about five of the backlog's readings a second.
    east.proxy.set_slow(Slowness { latency: Duration::from_millis(100), bytes_per_sec: None });
    east.run_box().await;
    let back = wait_for(45 * SECOND, || async { district.box_down("east").last().map(String::as_str) == Some("cleared") }).await;
    assert!(back, "box-down not cleared: {:?}", district.box_down("east"));
    // Past the hub's next round (the evaluator stopped within a second of the lease before).
    tokio::time::sleep(5 * SECOND).await;
    let (_, took) = low_reading_posted_by_the_hub(&district, &mut sensor, 15 * SECOND, "the alarm behind the backlog was not posted").await;
    eprintln!("4g backlog: the new alarm posted by the hub {:.1} s after its reading, the box back and reading its backlog", took.as_secs_f64());
    // Once the box has read the backlog the hub stops: its next alarm is the box's alone.
    let stopped = wait_for(120 * SECOND, || async { logged(&district.hub, "has read its 4G sensors' backlog") }).await;
    assert!(stopped, "the hub judged on: {:?}", district.hub.stderr().into_iter().rev().take(20).collect::<Vec<_>>());
}

/// Starts east with its 4G sensor east-03 (judged by the box; the hub listening on
/// `mqtt_port`), sends one quiet reading, and kills the box once its standby copy covers it.
async fn east_with_its_4g_sensor_killed(nats: &NatsCluster, mqtt_port: u16) -> (Community, Sensor4g) {
    let mut east = Community::start_configured("east", nats, "sensors_via_hub = true\nstandby_copy_secs = 2\n", "", "").await;
    let mut sensor = Sensor4g::connect(mqtt_port, "east", "east-03", "any").await;
    sensor.reading(7.0).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    assert!(copy_covers_the_last_reading(&js, "east-03").await, "no copy: {:?}", east.stderr());
    east.daemon.as_mut().unwrap().kill_hard();
    (east, sensor)
}

/// Sends a low reading of east's 4G `sensor` and waits up to `timeout` for the hub's standby
/// evaluator to post its alarm; its key and how long after the reading it was posted.
async fn low_reading_posted_by_the_hub(district: &District, sensor: &mut Sensor4g, timeout: Duration, failure: &str) -> (String, Duration) {
    sensor.reading(3.0).await;
    let sent = Instant::now();
    let (event, at) = sensor.expected.last().cloned().unwrap();
    let key = format!("east:east-03:do-low:{event}:{at}");
    let posted = wait_for(timeout, || async { standby_keys(district).contains(&key) }).await;
    assert!(posted, "{failure}: {:?}\nhub: {:?}", standby_keys(district), district.hub.stderr().into_iter().rev().take(20).collect::<Vec<_>>());
    (key, sent.elapsed())
}

/// Whether one line of `hub`'s log holds every one of `texts`.
fn logs_with(hub: &Daemon, texts: &[&str]) -> bool {
    hub.stderr().iter().any(|line| texts.iter().all(|text| line.contains(text)))
}

/// The keys (`box:sensor:rule:event:at_ms`) of the standby evaluator's alerts at the district's webhook.
fn standby_keys(district: &District) -> Vec<String> {
    district.hook.bodies().iter().filter(|b| b["standby"] == true).map(|b| b["key"].as_str().unwrap_or("?").to_string()).collect()
}

/// The standby evaluator (issue 23): `east` is killed with the sensor's alarm open; once the
/// hub reports it down, a reading back to normal and a low one are judged by the hub, from the
/// box's copy of the sensor's state (a fresh engine would not clear an alarm it never saw),
/// and posted to the district's webhook within seconds. The box, started again, sends the same
/// two events (the same keys) and the hub stops judging: the next event comes from the box
/// alone. Returns how long after their readings the hub posted them, and their keys.
async fn a_dead_box_s_4g_sensor_is_judged_by_the_hub(
    nats: &NatsCluster,
    district: &District,
    east: &mut Community,
    sensor: &mut Sensor4g,
    alerts: &WebhookReceiver,
) -> (Vec<Duration>, Vec<String>) {
    sensor.reading(3.0).await;
    assert!(wait_for_events(alerts, sensor, "east-03", 20 * SECOND).await, "the alarm before the box dies: {:?}", east.stderr());
    let (event, at) = sensor.expected.last().cloned().unwrap();
    let open_key = format!("east:east-03:do-low:{event}:{at}");
    // The box's copy in KV covers that reading (offered every 2 s here once journaled).
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    assert!(copy_covers_the_last_reading(&js, "east-03").await, "no copy of the sensor's state covers its last reading: {:?}", east.stderr());
    let bucket = js.get_key_value(gridwatch::cluster::EVAL_BUCKET).await.unwrap();
    let (copy, setup) = (bucket.get("east").await.unwrap().unwrap(), bucket.get("east.setup").await.unwrap().unwrap());
    eprintln!("4g sensor: the box's standby copy is {} bytes deflated, its setup {} bytes", copy.len(), setup.len());
    assert!(
        standby_keys(district).is_empty(),
        "the hub judged nothing while the box was alive: {:?}",
        district.hook.bodies().iter().filter(|b| b["standby"] == true).collect::<Vec<_>>()
    );

    east.daemon.as_mut().unwrap().kill_hard();
    let down = wait_for(45 * SECOND, || async { district.box_down("east").last().map(String::as_str) == Some("raised") }).await;
    assert!(down, "box-down not raised: {:?}", district.box_down("east"));
    // What the box reported open is re-stated first, under the box's own key.
    let restated = wait_for(20 * SECOND, || async { standby_keys(district).contains(&open_key) }).await;
    assert!(restated, "the open alarm was not re-stated: {:?}", standby_keys(district));
    let mut delays = Vec::new();
    for value in [7.0, 3.0] {
        let sent = Instant::now();
        sensor.reading(value).await;
        let (event, at) = sensor.expected.last().cloned().unwrap();
        let key = format!("east:east-03:do-low:{event}:{at}");
        let posted = wait_for(20 * SECOND, || async { standby_keys(district).contains(&key) }).await;
        assert!(
            posted,
            "the hub did not post {key}: {:?}\nhub: {:?}",
            standby_keys(district),
            district.hub.stderr().into_iter().rev().take(20).collect::<Vec<_>>()
        );
        delays.push(sent.elapsed());
    }
    let keys = standby_keys(district);
    assert_eq!(keys.len(), 3, "the open alarm, then one post per event: {keys:?}");
    assert_eq!(keys[0], open_key);
    let body = district.hook.bodies().into_iter().find(|b| b["standby"] == true && b["event"] == "fired").unwrap();
    assert_eq!((body["box"].as_str(), body["severity"].as_str(), body["sensor"].as_str()), (Some("east"), Some("warning"), Some("east-03")), "{body}");
    // The district's board shows it under the offline box.
    let shown = wait_for(5 * SECOND, || async { hub_page(&district.relay, "/board").await.contains("east-03 · do-low") }).await;
    let board = hub_page(&district.relay, "/board").await;
    assert!(shown && board.contains("街道代为判读"), "{board}");
    let browser = Browser::start().await.expect("headless Chromium");
    browser.phone(390, 844).await.unwrap();
    browser.goto(&format!("{}/board", district.relay)).await.unwrap();
    browser.wait_for_text("街道代为判读").await.unwrap();
    let width = browser.execute("return document.scrollingElement.scrollWidth").await.unwrap().as_f64().unwrap();
    assert!(width <= 390.0, "the board is {width} px wide on a 390 px screen");
    std::fs::write(screenshot_dir().join("district-board-standby.png"), browser.screenshot().await.unwrap()).unwrap();

    // Back: the box sends the same events itself; a receiver keyed on them drops the second.
    east.run_box().await;
    assert!(wait_for_events(alerts, sensor, "east-03", 30 * SECOND).await, "the box, back: {:?}", east.stderr());
    let from_box: BTreeSet<String> = webhook_events(alerts, "east-03").into_iter().map(|(event, at, _)| format!("east:east-03:do-low:{event}:{at}")).collect();
    assert!(keys.iter().all(|key| from_box.contains(key)), "the box's events {from_box:?} do not carry the hub's keys {keys:?}");
    let cleared = wait_for(45 * SECOND, || async { district.box_down("east").last().map(String::as_str) == Some("cleared") }).await;
    assert!(cleared, "box-down not cleared: {:?}", district.box_down("east"));
    // `box-down` carries a key too, one per event of the episode (one posted again after a slow
    // answer keeps its time and key).
    let mut keys_by_event = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for body in district.hook.bodies().iter().filter(|b| b["kind"] == "box-down" && b["box"] == "east") {
        let (event, key) = (body["event"].as_str().unwrap().to_string(), body["key"].as_str().unwrap_or("").to_string());
        assert!(key.starts_with(&format!("east:box-down:{event}:")), "{body}");
        keys_by_event.entry(event).or_default().insert(key);
    }
    assert!(keys_by_event.values().all(|keys| keys.len() == 1), "one key per event: {keys_by_event:?}");
    tokio::time::sleep(2 * SECOND).await;
    sensor.reading(7.0).await;
    assert!(wait_for_events(alerts, sensor, "east-03", 20 * SECOND).await, "the box judges again: {:?}", east.stderr());
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(standby_keys(district), keys, "the hub judged on after the box was back");
    assert!(!hub_page(&district.relay, "/board").await.contains("街道代为判读"), "the box is back: the board shows its own state");
    (delays, keys)
}

/// What nats-server 2.9's MQTT PUBACK promises about the sensors' stream (a measurement of
/// nats-server, not of gridwatch; `--ignored` to run it): a QoS 1 PUBACK goes out once the
/// server has passed the message on, not once the stream capturing its subject has stored it.
/// With the stream's leader killed, readings published to a surviving node meanwhile are
/// acknowledged to the sensor yet missing from the stream (54 of 60 in a run on 2026-12-04,
/// docs/district.md). Fails if a nats-server no longer loses them: the docs must then change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures nats-server's MQTT listener, not gridwatch"]
async fn nats_servers_mqtt_puback_does_not_wait_for_the_sensors_stream() {
    let _turn = ONE_DISTRICT_AT_A_TIME.lock().await;
    let mut nats = NatsCluster::start_with_mqtt(3).await.expect("nats-server");
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    let config = async_nats::jetstream::stream::Config {
        name: gridwatch::cluster::SENSORS_STREAM.into(),
        subjects: vec![gridwatch::cluster::SENSORS_SUBJECTS.into()],
        num_replicas: 3,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let created = wait_for(30 * SECOND, || async { js.get_or_create_stream(config.clone()).await.is_ok() }).await;
    assert!(created, "the sensors' stream was not created");
    let leader = nats.wait_for_stream_leader(gridwatch::cluster::SENSORS_STREAM, 30 * SECOND).await.expect("a leader");
    let surviving = nats.names().iter().position(|name| *name != leader).unwrap();
    let mut sensor = gridwatch_tests::Publisher::connect(nats.mqtt_ports()[surviving], "probe-4g").await.unwrap();
    sensor.publish_acked("gw/s/old-town/east/east-03", r#"{"do": 7.0}"#.into()).await.unwrap();
    nats.kill(&leader);
    let mut acknowledged = 1;
    for seq in 1..=60 {
        if sensor.publish_acked("gw/s/old-town/east/east-03", format!(r#"{{"do": 7.0, "seq": {seq}}}"#)).await.is_ok() {
            acknowledged += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats.restart(&leader).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.urls()).await.unwrap());
    let mut stored = None;
    for _ in 0..100 {
        if let Ok(mut stream) = js.get_stream(gridwatch::cluster::SENSORS_STREAM).await {
            if let Ok(info) = stream.info().await {
                stored = Some(info.state.messages);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stored = stored.expect("the stream answers again");
    eprintln!("stream leader {leader} killed: {acknowledged} readings PUBACKed, {stored} in the stream");
    assert!(stored < acknowledged, "every PUBACKed reading is in the stream now ({stored}): nats-server changed, update docs/district.md");
}
