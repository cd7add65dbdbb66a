//! The district (issue 23, feature `cluster`): community boxes send their durable rows up to a
//! NATS JetStream cluster, and `gridwatch hub` builds the district's view in PostgreSQL and
//! raises `box-down` when a box stops renewing its lease. docs/district.md is the design as
//! built; this module is its code:
//!
//! - [`wire`]: what travels — batches of alert events, incident transitions, readings or hourly
//!   trend rows, their subjects, message ids (`<box>:<epoch>:<kind>:<first>-<last>`) and KV keys. Pure.
//! - [`readings`]: which readings go up within `uplink_points_per_sec`, kept until the hub has
//!   them.
//! - [`trend`]: every closed hour's minimum, maximum, sum and count per sensor and field, kept
//!   until the hub has them.
//! - [`uplink`]: the box's side (`[cluster]` in gridwatch.toml): publishes rows after the hub's
//!   high-water mark and moves on only when the hub has committed them (end-to-end ack); renews
//!   the box's lease.
//! - [`link_pace`]: how many rows a batch holds and how long its ack is awaited, from the
//!   pace the box's link has shown (a slow 4G link gets small batches).
//! - [`hub`]: `gridwatch hub`: creates the stream and buckets, consumes with a durable consumer,
//!   writes PostgreSQL (and readings to the district's InfluxDB), advances high-water marks,
//!   watches leases — while it is the district's active hub (one of several, elected on a KV
//!   lease).
//! - [`roster`]: one roster for the district, in KV, followed by every box.
//! - [`actions`]: workers' actions the hub relays to a box, applied through its own verifier.
//! - [`sensors`]: sensors with their own 4G link, which publish to the hub's MQTT listener:
//!   their home box judges them from the district's stream as if they were its own.
//! - [`standby`]: copies of their rule state the box puts in KV, from which the active hub
//!   judges them while the box is down.
//!
//! Names shared by both sides are here, and [`run_box`], the box's side started by the daemon.

pub mod actions;
pub mod hub;
mod link_pace;
pub mod readings;
pub mod roster;
pub mod sensors;
pub mod standby;
pub mod trend;
pub mod uplink;
pub mod wire;

use std::time::Duration;

/// The stream every box publishes into (subjects `gw.up.<district>.<box>.<kind>`).
pub const STREAM: &str = "GRIDWATCH_UPLINK";
/// Subjects of [`STREAM`].
pub const STREAM_SUBJECTS: &str = "gw.up.>";
/// KV bucket of high-water marks (`<box>.<epoch>.<kind>` = the last row id of that store the
/// hub committed).
pub const HWM_BUCKET: &str = "gw_hwm";
/// KV bucket of box leases (`<box>`), whose entries expire after the hub's lease lifetime.
pub const LEASE_BUCKET: &str = "gw_lease";
/// KV bucket of the active hub's lease (`active`), whose entries expire after `--hub-lease`.
pub const HUB_BUCKET: &str = "gw_hub";
/// KV bucket of what the active hub told of dead boxes that PostgreSQL has not recorded yet
/// (`unrecorded.<box>`), and of the boxes it last read from PostgreSQL (`known`): the next
/// active hub goes on from them while PostgreSQL cannot be reached.
pub const TOLD_BUCKET: &str = "gw_told";
/// The hub's durable consumer on [`STREAM`].
pub const HUB_CONSUMER: &str = "hub";
/// KV bucket of the copies a standby evaluator judges a dead box's 4G sensors from (`<box>`:
/// [`standby::EvalCopy`], deflated JSON).
pub const EVAL_BUCKET: &str = "gw_eval";
/// KV bucket of district rosters (`<district>` = the roster file's text).
pub const ROSTER_BUCKET: &str = "gw_roster";
/// The work-queue stream of workers' actions for boxes (subjects `gw.act.<district>.<box>`).
pub const ACTIONS_STREAM: &str = "GRIDWATCH_ACTIONS";
/// Subjects of [`ACTIONS_STREAM`].
pub const ACTIONS_SUBJECTS: &str = "gw.act.>";
/// The stream of what 4G sensors publish on the hub's MQTT listener (MQTT topic
/// `gw/s/<district>/<box>/<sensor>`, NATS subject `gw.s.<district>.<box>.<sensor>`).
pub const SENSORS_STREAM: &str = "GRIDWATCH_SENSORS";
/// Subjects of [`SENSORS_STREAM`].
pub const SENSORS_SUBJECTS: &str = "gw.s.>";

/// What a box's district side works with (`[cluster]` set).
#[derive(Debug)]
pub struct BoxSetup {
    pub config: crate::config::ClusterConfig,
    pub store: crate::store::Store,
    pub state_dir: std::path::PathBuf,
    /// The box's channel names, which a district roster may name.
    pub channels: Vec<String>,
    /// The roster in force, which the district's replaces.
    pub in_force: crate::dispatch::InForce,
    /// The key of workers' actions (`[dispatch] ack_secret`); none: relayed actions wait.
    pub acks: Option<crate::sources::mqtt::incident_acks::AckConfig>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub clock: crate::clock::Clock,
    /// The inventory (places of readings, each sensor's share of the uplink's cap).
    pub sensors: crate::config::SensorIndex,
    /// Readings the spooler offers to the uplink.
    pub readings: Option<tokio::sync::mpsc::Receiver<std::sync::Arc<Vec<crate::store::NewPoint>>>>,
    /// Where this box's 4G sensors' readings go (`sensors_via_hub`); none: not pulled.
    pub hub_sensors: Option<sensors::Feed>,
    /// What the district's standby evaluator needs to judge them while this box is down.
    pub standby: Option<standby::Source>,
}

/// The box's side of the district until `shutdown`, on one connection (one 4G session): the
/// uplink with its lease, the district roster and workers' actions relayed by the hub.
pub async fn run_box(setup: BoxSetup, shutdown: tokio_util::sync::CancellationToken) {
    let BoxSetup { config, store, state_dir, channels, in_force, acks, metrics, clock, sensors, readings, hub_sensors, standby } = setup;
    metrics.know_uplink(&wire::Kind::ALL.map(wire::Kind::as_str));
    // Readings are chosen and kept while the link is down too: they wait for it.
    let progress = std::sync::Arc::new(uplink::Progress::default());
    let recorder = readings.map(|tapped| {
        let recorder = readings::Recorder {
            tapped,
            thinning: readings::Thinning::new(config.uplink_points_per_sec as f64, sensors.sensors().len()),
            store: store.clone(),
            progress: progress.clone(),
            every: config.readings_batch,
            metrics: metrics.clone(),
        };
        tokio::spawn(readings::record(recorder, shutdown.clone()))
    });
    let trend = tokio::spawn(trend::copy(store.clone(), progress.clone(), clock, shutdown.clone()));
    let name = format!("gridwatch-box-{}", config.box_id);
    let client = tokio::select! {
        client = connect(&config.nats_urls, &name) => client,
        () = shutdown.cancelled() => return,
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "district link cannot start: alerts stay on this box only");
            return;
        }
    };
    let js = async_nats::jetstream::new(client);
    let standby = standby.map(|source| tokio::spawn(standby::offer(js.clone(), config.clone(), sensors.sensors().clone(), source, shutdown.clone())));
    let sources = uplink::Sources { store: store.clone(), sensors, progress, metrics: metrics.clone() };
    let follower = roster::Follower { config: config.clone(), state_dir, channels, in_force };
    let roster = tokio::spawn(roster::follow(js.clone(), follower, shutdown.clone()));
    let actions = match acks {
        Some(acks) => {
            let receiver = actions::Receiver { config: config.clone(), acks, store: store.clone(), metrics: metrics.clone(), clock };
            Some(tokio::spawn(actions::receive(js.clone(), receiver, shutdown.clone())))
        }
        None => {
            tracing::warn!("no [dispatch] ack_secret: workers' actions relayed by the district hub wait until one is set");
            None
        }
    };
    let hub_sensors = hub_sensors.map(|feed| tokio::spawn(sensors::receive(js.clone(), config.clone(), feed, shutdown.clone())));
    uplink::run(js, config, sources, shutdown).await;
    let _ = roster.await;
    if let Some(hub_sensors) = hub_sensors {
        let _ = hub_sensors.await;
    }
    if let Some(standby) = standby {
        let _ = standby.await;
    }
    if let Some(actions) = actions {
        let _ = actions.await;
    }
    if let Some(recorder) = recorder {
        let _ = recorder.await;
    }
    let _ = trend.await;
}

/// Connects to the district's NATS servers; the client keeps reconnecting after a loss.
/// Discovered servers are ignored: a box reaches the cluster only through the addresses it was
/// given (its 4G path), not the nodes' internal ones.
pub async fn connect(urls: &[String], name: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .ping_interval(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .ignore_discovered_servers()
        .retry_on_initial_connect()
        .reconnect_delay_callback(reconnect_delay)
        .connect(urls)
        .await?;
    Ok(client)
}

/// The pause before the client's next attempt to reach the cluster: growing from nothing to at
/// most 4 s as the client's own does, but drawn at random within its upper half, so that a link
/// that flaps in step with a fixed pause cannot keep a box away (an outside tester: with the
/// client's fixed 4.00 s, every attempt of a box fell into the cuts of a link flapping in step,
/// and it stayed offline 96 s).
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let ceiling = 2_u64.saturating_pow(u32::try_from(attempts - 1).unwrap_or(u32::MAX)).min(4_000);
    Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_pauses_grow_to_four_seconds_and_never_repeat_in_step() {
        assert_eq!(reconnect_delay(1), Duration::ZERO, "the first attempt at once");
        assert!(reconnect_delay(4) <= Duration::from_millis(8));
        let late: Vec<Duration> = (0..50).map(|_| reconnect_delay(20)).collect();
        assert!(late.iter().all(|d| (Duration::from_secs(2)..=Duration::from_secs(4)).contains(d)), "{late:?}");
        let distinct: std::collections::BTreeSet<_> = late.iter().collect();
        assert!(distinct.len() > 40, "drawn, not fixed: {distinct:?}");
    }
}
