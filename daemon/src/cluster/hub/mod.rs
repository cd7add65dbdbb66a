//! `gridwatch hub`: the district's process. It creates the uplink stream and the KV buckets
//! (replicated on the JetStream cluster), consumes the stream with a durable consumer, commits
//! each batch to PostgreSQL (readings and hourly trend rows: to the district's InfluxDB,
//! [`influx`]) and only then advances the box's high-water mark in KV and acks the message — the
//! box forgets nothing before that ([`super::uplink`]). Beside it, [`leases`] turns an expired
//! box lease into one `box-down` alarm, and [`shared_ids`] two boxes renewing one lease in turns
//! (one `box_id` configured on both) into one `box-id-shared`; [`put_roster`] makes a checked roster
//! the district's. Several hubs may run: only the one holding the hub lease consumes and watches
//! leases, the others stand by ([`active`]); every hub with `--listen` relays workers' actions
//! ([`relay`]), serves the boxes' incident pages with the district's secrets ([`pages`]), and
//! serves `/metrics` ([`metrics`]), `/healthz` and the district's board and report ([`board`],
//! [`report`]) on one listener ([`web`]); every hub with `--mqtt-listen` takes 4G sensors'
//! readings into their stream ([`sensor_listener`]). The active hub also judges a dead box's
//! 4G sensors from the box's latest copy of their state until the box is back ([`standby`]).
//!
//! A box whose store was replaced (a corrupt file set aside, ids from 1 again) sends under a
//! new store epoch: its marks and rows are new keys, the old store's rows stay, and the hub
//! logs it and counts it (`gridwatch_hub_store_epochs_changed_total`).
//!
//! Invariants: a high-water mark only moves forward and only to a row committed in PostgreSQL;
//! a message is acked only after both; a batch that cannot be decoded is counted, logged and
//! terminated (never redelivered forever, never a stall).

mod active;
mod board;
pub mod influx;
mod leases;
pub mod metrics;
pub mod pages;
mod postgres;
mod relay;
mod report;
mod sensor_listener;
mod sensor_logins;
mod sensor_pace;
mod sensor_passwords;
mod sensor_tls;
mod shared_ids;
mod standby;
mod view_token;
mod watched_files;
mod web;

use super::wire::{hwm_key, is_epoch, parse_hwm, Batch, Mark, Rows, ENCODING_HEADER};
use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, kv, stream, AckKind};
use futures::StreamExt;
use metrics::HubMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The most bytes of workers' actions that wait in the district (each is a few hundred bytes):
/// a flood of posts to the relay cannot fill the cluster's store, which the uplink needs.
const ACTIONS_MAX_BYTES: i64 = 64 * 1024 * 1024;
/// The most actions that wait for one box; past it, new ones are refused, not old ones dropped.
const ACTIONS_PER_BOX: i64 = 1_000;

/// What `gridwatch hub` is given on its command line.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub nats_urls: Vec<String>,
    /// A libpq connection string (`host=… port=… user=… dbname=…`).
    pub postgres: String,
    /// Where `box-down` and its clearing are posted (installers, grid leaders).
    pub webhook: String,
    /// How long a box's lease lives without renewal (the lease bucket's max age).
    pub lease_ttl: Duration,
    /// Copies of the stream and buckets (3 on a district's cluster; 1 on a single node).
    pub replicas: usize,
    /// How long the active hub's lease lives without renewal: a standby takes over within it.
    pub hub_lease: Duration,
    /// This hub's name in the lease (which one is active, in the logs).
    pub name: String,
    /// Where workers' actions are posted for relay to their boxes, and the board, report,
    /// `/metrics` and `/healthz` are served; none: none of them.
    pub listen: Option<std::net::SocketAddr>,
    /// The district's InfluxDB, where boxes' readings go; none: readings are counted and
    /// dropped (`gridwatch_hub_readings_not_written_total{reason="no_influx"}`).
    pub influx: Option<influx::InfluxTarget>,
    /// The district's link and ack secrets (`--link-secret-file`, `--ack-secret-file`): with
    /// them the listener serves the boxes' incident pages; none: it only relays.
    pub secrets: Option<pages::DistrictSecrets>,
    /// The token the board and report ask for (`--view-token-file`); none: open to anyone who
    /// reaches `listen`.
    pub view_token: Option<String>,
    /// Where sensors with their own 4G link publish their readings over MQTT
    /// ([`sensor_listener`]); none: not taken here.
    pub mqtt_listen: Option<std::net::SocketAddr>,
    /// Who may publish there ([`sensor_passwords`]); none: anyone who reaches it
    /// (`--mqtt-anonymous`).
    pub mqtt_passwords: Option<std::path::PathBuf>,
    /// The listener's TLS certificate chain and key (PEM files); none: plain MQTT.
    pub mqtt_tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// How long JetStream waits for the hub's ack before delivering a batch again.
const ACK_WAIT: Duration = Duration::from_secs(15);

/// Runs the hub until `shutdown`.
pub async fn run(options: HubOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let access = match &options.mqtt_passwords {
        Some(path) => sensor_listener::Access::Passwords(Arc::new(sensor_passwords::open(path)?)),
        None => sensor_listener::Access::Anonymous,
    };
    let tls = match &options.mqtt_tls {
        Some((cert, key)) => Some(Arc::new(sensor_tls::open(cert, key)?)),
        None => None,
    };
    let client = super::connect(&options.nats_urls, "gridwatch-hub").await?;
    let js = jetstream::new(client);
    let (uplink, hwm, lease_bucket, hub_bucket, copies, told) = tokio::select! {
        ready = set_up(&js, &options) => ready,
        () = shutdown.cancelled() => return Ok(()),
    };
    tracing::info!(stream = super::STREAM, replicas = options.replicas, lease_ttl_secs = options.lease_ttl.as_secs(), "district hub started");
    let metrics = Arc::new(HubMetrics::new());
    let influx = match &options.influx {
        Some(target) => Some(influx::DistrictInflux::new(target)?),
        None => {
            tracing::warn!(
                "no --influx: readings boxes send up are dropped (set [cluster] uplink_points_per_sec = 0 on the boxes, or give the district's InfluxDB)"
            );
            None
        }
    };
    // The boxes the active term's lease watch finds dead, for the board too.
    let dead = leases::DeadBoxes::default();
    let listener = options.listen.map(|listen| {
        let mut pages = web::Listener::new(js.clone(), metrics.clone(), options.name.clone(), options.postgres.clone(), options.secrets.clone());
        pages.view_token = options.view_token.clone();
        pages.dead_boxes = dead.clone();
        tokio::spawn(web::serve(pages, listen, shutdown.clone()))
    });
    let sensors = options.mqtt_listen.map(|listen| tokio::spawn(sensor_listener::serve(js.clone(), listen, access, tls, metrics.clone(), shutdown.clone())));
    let lease_health = active::LeaseHealth { unwritable: metrics.hub_lease_unwritable.clone(), lifetime: options.hub_lease };
    while let Some(term) = active::take(&hub_bucket, &options.name, &lease_health, &shutdown).await {
        metrics.active.set(1);
        metrics.lease_takeovers.inc();
        let watcher = tokio::spawn(leases::watch(
            (lease_bucket.clone(), told.clone()),
            options.clone(),
            (term.fence.clone(), dead.clone()),
            term.lost.clone(),
            metrics.clone(),
        ));
        let shared = tokio::spawn(shared_ids::watch(lease_bucket.clone(), options.clone(), term.fence.clone(), term.lost.clone(), metrics.clone()));
        let standby = tokio::spawn(standby::watch(js.clone(), copies.clone(), options.clone(), (dead.clone(), term.lost.clone()), metrics.clone()));
        consume(uplink.clone(), hwm.clone(), &options, influx.as_ref(), &term.lost, &metrics).await;
        let _ = watcher.await;
        let _ = shared.await;
        let _ = standby.await;
        let _ = term.keeper.await;
        // A hub no longer active does not know which boxes are dead.
        if let Ok(mut dead) = dead.lock() {
            dead.clear();
        }
        metrics.active.set(0);
        // What only the active hub knows is not this hub's to say any more.
        metrics.batches_failing.set(0);
        metrics.box_watch_failing.set(0);
        metrics.postgres_writable.set(1);
    }
    if let Some(listener) = listener {
        listener.await??;
    }
    if let Some(sensors) = sensors {
        sensors.await??;
    }
    Ok(())
}

/// Creates (or finds) the stream and buckets; retries while the cluster has no JetStream
/// leader yet.
async fn set_up(js: &jetstream::Context, options: &HubOptions) -> (stream::Stream, kv::Store, kv::Store, kv::Store, kv::Store, kv::Store) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let attempt = async {
            let uplink = js
                .get_or_create_stream(stream::Config {
                    name: super::STREAM.into(),
                    subjects: vec![super::STREAM_SUBJECTS.into()],
                    storage: stream::StorageType::File,
                    num_replicas: options.replicas,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await?;
            let hwm = bucket(js, super::HWM_BUCKET, Duration::ZERO, options.replicas).await?;
            let leases = bucket(js, super::LEASE_BUCKET, options.lease_ttl, options.replicas).await?;
            // Boxes watch it from start, before any roster is put.
            bucket(js, super::ROSTER_BUCKET, Duration::ZERO, options.replicas).await?;
            // Each box's actions wait for it (its consumer takes them off), at most a day:
            // older ones would be refused as stale. Bounded, new ones refused past the bounds
            // (the relay answers 503): anonymous posts to the relay filled the cluster's whole
            // store in 30 s, and the district stopped (an outside tester). A stream from before
            // the bounds gets them.
            let actions = stream::Config {
                name: super::ACTIONS_STREAM.into(),
                subjects: vec![super::ACTIONS_SUBJECTS.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                max_age: Duration::from_secs(24 * 3600),
                max_bytes: ACTIONS_MAX_BYTES,
                max_messages_per_subject: ACTIONS_PER_BOX,
                discard: stream::DiscardPolicy::New,
                discard_new_per_subject: true,
                ..Default::default()
            };
            let mut found = js.get_or_create_stream(actions.clone()).await?;
            if found.info().await?.config.max_messages_per_subject != ACTIONS_PER_BOX {
                js.update_stream(stream::Config { num_replicas: found.cached_info().config.num_replicas, ..actions }).await?;
            }
            // What sensors with their own 4G link publish on the hubs' MQTT listeners, kept a
            // day for their boxes to judge (`super::sensors`), and at most a week's worth per
            // sensor (a stream from before that limit gets it).
            let sensors = stream::Config {
                name: super::SENSORS_STREAM.into(),
                subjects: vec![super::SENSORS_SUBJECTS.into()],
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                max_age: super::sensors::KEPT_FOR,
                max_messages_per_subject: super::sensors::KEPT_PER_SENSOR,
                ..Default::default()
            };
            let mut found = js.get_or_create_stream(sensors.clone()).await?;
            if found.info().await?.config.max_messages_per_subject != super::sensors::KEPT_PER_SENSOR {
                js.update_stream(stream::Config { num_replicas: found.cached_info().config.num_replicas, ..sensors }).await?;
            }
            let hub = bucket(js, super::HUB_BUCKET, options.hub_lease, options.replicas).await?;
            // Each box's latest copy of its 4G sensors' rule state, for judging them while it
            // is down ([`standby`]).
            let copies = bucket(js, super::EVAL_BUCKET, Duration::ZERO, options.replicas).await?;
            let told = bucket(js, super::TOLD_BUCKET, Duration::ZERO, options.replicas).await?;
            anyhow::Ok((uplink, hwm, leases, hub, copies, told))
        }
        .await;
        match attempt {
            Ok(ready) => return ready,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "district stream or buckets not ready; trying again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Finds or creates a KV bucket (one value per key; entries expire after `max_age`, 0: never).
/// The bucket's stream is created here as the client's `create_key_value` would, because that
/// call first reads the account's info, which nats-server 2.9 (Debian 12) answers without
/// fields async-nats 0.48 requires.
pub(crate) async fn bucket(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let duplicate_window = if max_age.is_zero() { Duration::from_secs(120) } else { max_age.min(Duration::from_secs(120)) };
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        duplicate_window,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// `gridwatch hub roster put`: checks `text` with the boxes' parser (nothing is written when it
/// is invalid: the roster in force stays) and puts it under the district's key; the new
/// revision and the channels the roster names (each box checks those against its own). Errors
/// of the file are [`crate::dispatch::roster::RosterErrors`]; a roster naming nobody is refused
/// unless `allow_empty` (an outside tester put an empty file by mistake, and every box took it).
pub async fn put_roster(
    nats_urls: &[String],
    district: &str,
    (name, text, allow_empty): (&str, &str, bool),
    replicas: usize,
) -> anyhow::Result<(u64, Vec<String>)> {
    if !crate::config::is_token(district) {
        anyhow::bail!("district `{district}`: use 1 to 64 letters, digits, `-` or `_`, as in the boxes' [cluster] district");
    }
    let checked = super::roster::check(name, text, None)?;
    if checked.roster.members.is_empty() && !allow_empty {
        anyhow::bail!("{name} names nobody: every box would send each alarm to all its channels, naming no one on duty; give --allow-empty if that is meant");
    }
    let channels = checked.roster.channel_names();
    let connected = async {
        let js = jetstream::new(super::connect(nats_urls, "gridwatch-hub-roster").await?);
        let roster = bucket(&js, super::ROSTER_BUCKET, Duration::ZERO, replicas).await?;
        // A roster past the servers' message size would wait out its ack and say only "timed
        // out". (Read once connected: the bucket's set-up went over the link.)
        let most = js.client().server_info().max_payload;
        if most > 0 && text.len() > most {
            anyhow::bail!(
                "{name} is {} bytes; the district's NATS servers take at most {most} bytes in one message (`max_payload`): shorten the roster or raise `max_payload` on every node",
                text.len()
            );
        }
        anyhow::Ok(roster.put(district, text.to_owned().into()).await?)
    };
    let revision = tokio::time::timeout(PUT_TIMEOUT, connected)
        .await
        .map_err(|_| anyhow::anyhow!("the district's NATS cluster did not take the roster within {PUT_TIMEOUT:?}"))??;
    Ok((revision, channels))
}

/// The longest a batch may take to commit (PostgreSQL, the district's InfluxDB, the mark) before
/// its connections are made again and it is taken again.
const BATCH_LIMIT: Duration = Duration::from_secs(60);

/// How long `gridwatch hub roster put` tries to reach the cluster.
const PUT_TIMEOUT: Duration = Duration::from_secs(20);

/// Consumes the uplink stream until `shutdown`, reconnecting to PostgreSQL and re-creating the
/// consumer's message stream whenever either is lost.
async fn consume(
    uplink: stream::Stream,
    hwm: kv::Store,
    options: &HubOptions,
    influx: Option<&influx::DistrictInflux>,
    shutdown: &CancellationToken,
    metrics: &HubMetrics,
) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut db: Option<tokio_postgres::Client> = None;
    while !shutdown.is_cancelled() {
        let round = async {
            if db.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                db = Some(postgres::connect(&options.postgres).await?);
            }
            let consumer: pull::Stream = uplink
                .get_or_create_consumer(
                    super::HUB_CONSUMER,
                    pull::Config {
                        durable_name: Some(super::HUB_CONSUMER.into()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        ..Default::default()
                    },
                )
                .await?
                .messages()
                .await?;
            let mut consumer = consumer;
            while let Some(message) = consumer.next().await {
                let message = message?;
                let Some(client) = db.as_mut() else { break };
                let handled = tokio::time::timeout(BATCH_LIMIT, handle(message, client, influx, &hwm, metrics)).await;
                let handled = handled.unwrap_or_else(|_| {
                    // A connection whose packets vanish never closes: made again (the batch is
                    // delivered again, and its commit is idempotent).
                    db = None;
                    Err(anyhow::anyhow!("a batch took over {BATCH_LIMIT:?} to commit"))
                });
                if let Err(error) = handled {
                    metrics.count_batch("failed");
                    metrics.batches_failing.set(1);
                    return Err(error);
                }
                metrics.batches_failing.set(0);
                backoff.reset();
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            outcome = round => outcome,
            () = shutdown.cancelled() => return,
        };
        if let Err(error) = outcome {
            tracing::warn!(error = %format!("{error:#}"), "district hub lost its stream or database; resuming");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// One batch: PostgreSQL commit (readings: InfluxDB write), then the high-water mark, then the
/// ack. A failure before the ack leaves the message to be delivered again (the commit is
/// idempotent).
async fn handle(
    message: jetstream::Message,
    db: &mut tokio_postgres::Client,
    influx: Option<&influx::DistrictInflux>,
    hwm: &kv::Store,
    metrics: &HubMetrics,
) -> anyhow::Result<()> {
    // When JetStream stored it (the cluster's clock), for the commit lag; how many wait behind it.
    let stored_at = message.info().ok().map(|info| {
        metrics.pending_batches.set(i64::try_from(info.pending).unwrap_or(i64::MAX));
        info.published.unix_timestamp_nanos()
    });
    let encoding = message.headers.as_ref().and_then(|headers| headers.get(ENCODING_HEADER)).map(|value| value.as_str());
    let batch = Batch::decode(&message.payload, encoding).and_then(|batch| {
        if is_epoch(&batch.epoch) {
            Ok(batch)
        } else {
            Err(format!("store epoch `{}` is not hex digits", batch.epoch))
        }
    });
    let batch = match batch {
        Ok(batch) => batch,
        Err(error) => {
            tracing::error!(subject = %message.subject, error = %error, "undecodable district batch dropped");
            message.ack_with(AckKind::Term).await.map_err(|e| anyhow::anyhow!(e))?;
            metrics.count_batch("undecodable");
            return Ok(());
        }
    };
    let Some((first, last)) = batch.range() else {
        message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
        metrics.count_batch("committed");
        return Ok(());
    };
    let key = hwm_key(&batch.box_id, &batch.epoch, batch.kind());
    let committed = async {
        let written = match &batch.rows {
            Rows::Reading(_) | Rows::Trend(_) => Some(write_to_influx(&batch, influx, hwm, &key, metrics).await?),
            Rows::Alert(_) | Rows::Transition(_) => None,
        };
        let committed = postgres::commit_batch(db, &batch).await.context("committing a district batch")?;
        anyhow::Ok((written.unwrap_or(committed.inserted), committed.replaced_epochs))
    };
    let (inserted, replaced_epochs) = match committed.await {
        Ok(committed) => committed,
        Err(error) => {
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            return Err(error);
        }
    };
    if let Some(earlier) = replaced_epochs {
        metrics.store_epochs_changed.inc();
        tracing::warn!(
            box_id = %batch.box_id,
            epoch = %batch.epoch,
            earlier = %earlier.join(","),
            "a box sends from a new store (its store was replaced, ids count from 1 again): taken from 0 under its new epoch; the earlier store's rows are kept"
        );
    }
    let current = parse_hwm(hwm.get(key.clone()).await?.as_deref());
    if last > current {
        // With the last row's digest, which the box compares with the row it holds under `last`.
        // A digest that is not 16 hex digits is left out rather than stored.
        let digest = batch.last_digest.clone().filter(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()));
        let mark = Mark { id: last, digest };
        hwm.put(key, mark.encode().into()).await?;
    }
    if let Some(stored_at) = stored_at {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let lag = i128::try_from(now).unwrap_or(i128::MAX).saturating_sub(stored_at);
        // Clocks of the hub and the cluster a little apart: a negative lag counts as none.
        metrics.commit_lag_seconds.observe(lag.max(0) as f64 / 1e9);
    }
    message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
    metrics.count_batch("committed");
    metrics.count_rows(batch.kind().as_str(), u64::try_from(batch.len()).unwrap_or(u64::MAX), inserted);
    tracing::debug!(box_id = %batch.box_id, kind = batch.kind().as_str(), first, last, inserted, "district batch committed");
    Ok(())
}

/// Writes a batch of readings or trend hours to the district's InfluxDB: only those above the
/// box's mark (a batch sent again after the mark moved past JetStream's duplicate window writes
/// nothing twice); how many were new. Not written ones are counted by kind and reason.
async fn write_to_influx(batch: &Batch, influx: Option<&influx::DistrictInflux>, hwm: &kv::Store, key: &str, metrics: &HubMetrics) -> anyhow::Result<u64> {
    let after = parse_hwm(hwm.get(key).await?.as_deref());
    let Some(influx) = influx else {
        let new = match &batch.rows {
            Rows::Reading(rows) => rows.iter().filter(|r| r.id > after).count() as u64,
            Rows::Trend(rows) => rows.iter().filter(|r| r.id > after).count() as u64,
            Rows::Alert(_) | Rows::Transition(_) => 0,
        };
        metrics.count_not_written(batch.kind(), "no_influx", new);
        return Ok(0);
    };
    let written = influx.write(batch, after).await.context("writing to the district's InfluxDB")?;
    if written.refused > 0 {
        metrics.count_not_written(batch.kind(), "refused", written.refused);
        tracing::warn!(box_id = %batch.box_id, kind = batch.kind().as_str(), refused = written.refused, "the district's InfluxDB refused readings or trend hours for good");
    }
    Ok(written.written)
}
