//! `gridwatch demo`: the whole daemon on embedded defaults — an in-process MQTT broker, a local
//! store in a temporary (or given) directory, the default rule packs, and a simulator that
//! publishes over MQTT like real boxes. Time runs `speed` times faster so an hour of the
//! scenario (see [`simulator`]) plays in 30 seconds at the default speed.
//!
//! A small roster names who is on duty; a simulated worker ([`worker`]) accepts from the link in
//! her message, goes on site and resolves; the office's screen (`/board`) shows it all.

pub mod simulator;
pub mod worker;

use crate::clock::Clock;
use crate::config::{AlertsConfig, BrokerConfig, Config, MqttConfig, Place, RulesConfig, SensorConfig};
use crate::metrics::Metrics;
use anyhow::Context;
use gridwatch_rules::SensorKind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this much real time; run until Ctrl-C when absent.
    pub duration: Option<Duration>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Keep the local store here instead of in a temporary directory.
    pub state_dir: Option<PathBuf>,
    /// Serve /metrics here.
    pub http_listen: Option<SocketAddr>,
}

fn sensor(id: &str, kind: SensorKind, site: &str, building: Option<&str>, grid: &str, zero: Option<(f64, f64)>) -> SensorConfig {
    SensorConfig {
        id: id.into(),
        kind,
        place: Arc::new(Place {
            site: site.into(),
            building: building.map(Into::into),
            grid: Some(grid.into()),
            structure: (kind == SensorKind::Tilt).then(|| "brick-wood".into()),
            storeys: (kind == SensorKind::Tilt).then_some(2),
        }),
        tags: Default::default(),
        // The simulator sends a reading every (simulated) minute; the boxes promise one at least
        // every half hour, so a demo on a busy machine (at up to 240× speed) does not cry
        // "no data".
        interval: Duration::from_secs(1800),
        // Tilt boxes were zeroed at installation.
        baseline: zero.map(|(x, y)| BTreeMap::from([("x".to_string(), x), ("y".to_string(), y)])).unwrap_or_default(),
        location: None,
    }
}

/// The demo's roster: a worker on duty around the clock for the two lanes, one for the canal,
/// their grid leader, and an installer for the device alarms.
pub const ROSTER: &str = r#"
[[grid]]
id = "grid-1"
fallback = "grid-2"
[[grid]]
id = "grid-2"
[[grid]]
id = "grid-3"

[[member]]
id = "wang"
name = "王芳"
role = "worker"
grids = ["grid-1", "grid-2"]

[[member]]
id = "li"
name = "李强"
role = "worker"
grids = ["grid-3"]

[[member]]
id = "chen"
name = "陈刚"
role = "grid_leader"
grids = ["grid-1", "grid-2", "grid-3"]

[[member]]
id = "zhao"
name = "赵工"
role = "installer"

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"

[[shift]]
member = "li"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
"#;

/// The demo's inventory: three houses with tilt boxes, two water probes.
pub fn sensors() -> Vec<SensorConfig> {
    vec![
        sensor("house-01", SensorKind::Tilt, "north-lane", Some("B3"), "grid-1", Some((0.02, -0.01))),
        sensor("house-02", SensorKind::Tilt, "north-lane", Some("B7"), "grid-1", Some((0.04, 0.03))),
        sensor("house-03", SensorKind::Tilt, "east-yard", Some("B2"), "grid-2", Some((0.03, 0.01))),
        sensor("pond-01", SensorKind::Water, "east-yard", None, "grid-2", None),
        sensor("canal-02", SensorKind::Water, "canal-side", None, "grid-3", None),
    ]
}

fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port for the embedded broker")?;
    Ok(listener.local_addr()?.port())
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let temp_dir;
    let state_dir = match &options.state_dir {
        Some(dir) => dir.clone(),
        None => {
            temp_dir = tempfile::Builder::new().prefix("gridwatch-demo-").tempdir().context("creating a temporary state directory")?;
            temp_dir.path().to_path_buf()
        }
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?));
    // The pages (the board, the worker's incident page) are always served: on the address
    // asked for, else on a free loopback port.
    let http_listen = match options.http_listen {
        Some(address) => address,
        None => SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?)),
    };
    let public_url = reqwest::Url::parse(&format!("http://{http_listen}")).context("the demo's page address")?;
    let link_secret = format!("demo-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let dispatch = crate::dispatch::Dispatch::parse("demo roster", ROSTER).map_err(|errors| anyhow::anyhow!("the demo roster: {errors}"))?;
    let config = Config {
        source: None,
        state_dir: state_dir.clone(),
        // A demo in a temporary directory keeps no disk reserve.
        state_reserve_bytes: 0,
        runtime_dir: None,
        mqtt: MqttConfig {
            broker: BrokerConfig::Embedded { listen },
            client_id: format!("gridwatch-demo-{}", std::process::id()),
            username: None,
            password: None,
            max_payload_bytes: 4096,
            max_packet_bytes: 1024 * 1024,
            keep_alive: Duration::from_secs(30),
            topic_maps: Vec::new(),
            tls: None,
            report_rate_topic: None,
        },
        sensors: sensors().into(),
        rules: RulesConfig { builtin_packs: true, paths: Vec::new(), state_save: Duration::from_secs(crate::config::STATE_SAVE_SECS.0) },
        ingest: crate::config::IngestConfig::default(),
        // The demo's accelerated clock counts as set.
        clock_synchronized: crate::clock::SyncSource::Always,
        alerts: AlertsConfig {
            failover: std::collections::BTreeMap::new(),
            failover_after: Duration::from_secs(60),
            bus_down_after: Duration::from_secs(60),
            group_window: Duration::from_secs(10),
            fold_into_open_alarm: true,
            console: true,
            flap_window: Duration::from_secs(600),
            mqtt_topic_prefix: Some("gridwatch/alerts".into()),
            webhooks: Vec::new(),
            wecom: Vec::new(),
            dingtalk: Vec::new(),
            sms: Vec::new(),
            silences: Vec::new(),
        },
        influxdb: None,
        http_listen: Some(http_listen),
        dispatch,
        roster_file: None,
        incident_acks: None,
        gpio: None,
        time_zone: crate::local_time::DEFAULT,
        places: crate::sinks::text::Places::default(),
        board_token: None,
        report_digest: None,
        worker_links: Some(crate::links::WorkerLinks::new(public_url, &link_secret, Duration::from_secs(72 * 3600))),
        photo_max_bytes: crate::config::DEFAULT_PHOTO_MAX_BYTES,
        cluster: None,
        serial: Vec::new(),
    };
    let clock = Clock::accelerated(options.speed);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    println!(
        "gridwatch demo: {} sensors on an embedded broker at {listen}; time runs {}x (one simulated minute every {:.1} s); state in {}",
        config.sensors.len(),
        options.speed,
        60.0 / options.speed,
        state_dir.display()
    );

    let mut daemon = tokio::spawn(crate::daemon::run(config.clone(), clock, metrics.clone(), shutdown.clone()));
    let simulator_stop = CancellationToken::new();
    let simulator = {
        let metrics = metrics.clone();
        let stop = simulator_stop.clone();
        let options = crate::sources::mqtt::options(&config.mqtt, "simulator");
        let sensors = config.sensors.clone();
        tokio::spawn(async move {
            // Start once the daemon is subscribed, so the first readings are not missed.
            let subscribed = async {
                while metrics.mqtt_connects.get() == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = subscribed => {}
            }
            simulator::run(options, sensors, clock, stop).await;
        })
    };

    let worker = {
        let stop = simulator_stop.clone();
        let options = crate::sources::mqtt::options(&config.mqtt, "worker");
        let topic = format!("{}/#", config.alerts.mqtt_topic_prefix.as_deref().unwrap_or("gridwatch/alerts"));
        tokio::spawn(worker::run(options, topic, clock, stop))
    };
    println!("office screen: http://{http_listen}/board   (open incidents: http://{http_listen}/incidents)");
    println!("on duty: 王芳 (grid-1, grid-2), 李强 (grid-3); {} answers her alarms from the link in each message", worker::MEMBER.1);

    let started = clock.now();
    let ended_early = tokio::select! {
        _ = wait(options.duration) => None,
        _ = tokio::signal::ctrl_c() => None,
        result = &mut daemon => Some(result),
    };
    simulator_stop.cancel();
    let _ = simulator.await;
    let _ = worker.await;
    shutdown.cancel();
    match ended_early {
        Some(result) => result.context("daemon task")??,
        None => daemon.await.context("daemon task")??,
    }

    let minutes = (clock.now() - started) / 60_000;
    println!(
        "demo finished: {minutes} simulated minutes; {} readings accepted, {} rejected; {} alerts fired, {} cleared",
        metrics.samples_accepted.get(),
        metrics.rejected_total(),
        metrics.rule_events_total("fired"),
        metrics.rule_events_total("cleared"),
    );
    Ok(())
}

async fn wait(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// `gridwatch demo`.
pub fn command(options: DemoOptions) -> std::process::ExitCode {
    super::block_on(run(options))
}
