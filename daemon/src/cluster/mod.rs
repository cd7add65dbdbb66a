//! The district (issue 23, feature `cluster`): community boxes send their durable rows up to a
//! NATS JetStream cluster, and `gridwatch hub` builds the district's view in PostgreSQL and
//! raises `box-down` when a box stops renewing its lease. docs/district.md is the design as
//! built; this module is its code:
//!
//! - [`wire`]: what travels — batches of alert events or incident transitions, their subjects,
//!   message ids (`<box>:<kind>:<first>-<last>`) and KV keys. Pure.
//! - [`uplink`]: the box's side (`[cluster]` in gridwatch.toml): publishes rows after the hub's
//!   high-water mark and moves on only when the hub has committed them (end-to-end ack); renews
//!   the box's lease.
//! - [`hub`]: `gridwatch hub`: creates the stream and buckets, consumes with a durable consumer,
//!   writes PostgreSQL, advances high-water marks, watches leases — while it is the district's
//!   active hub (one of several, elected on a KV lease).
//!
//! Names shared by both sides are here.

pub mod hub;
pub mod uplink;
pub mod wire;

use std::time::Duration;

/// The stream every box publishes into (subjects `gw.up.<district>.<box>.<kind>`).
pub const STREAM: &str = "GRIDWATCH_UPLINK";
/// Subjects of [`STREAM`].
pub const STREAM_SUBJECTS: &str = "gw.up.>";
/// KV bucket of high-water marks (`<box>.<kind>` = the last row id the hub committed).
pub const HWM_BUCKET: &str = "gw_hwm";
/// KV bucket of box leases (`<box>`), whose entries expire after the hub's lease lifetime.
pub const LEASE_BUCKET: &str = "gw_lease";
/// KV bucket of the active hub's lease (`active`), whose entries expire after `--hub-lease`.
pub const HUB_BUCKET: &str = "gw_hub";
/// The hub's durable consumer on [`STREAM`].
pub const HUB_CONSUMER: &str = "hub";

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
        .connect(urls)
        .await?;
    Ok(client)
}
