//! A dead box is an alarm: every box renews its key in the lease bucket, whose entries expire
//! after the hub's lease lifetime. Each round the hub compares the boxes it knows with the live
//! leases; a box whose lease is gone gets one `box-down` (listing its open incidents as it last
//! reported them) and, when its lease is back, one clearing — both posted to the webhook.
//!
//! A lease is read from whichever replica answers, and a replica behind (a busy or restarted
//! node) may have expired a box's last renewal before the next reached it: a box counts as down
//! only once its lease has been missing for [`CONFIRM_DOWN`], several rounds in a row.
//!
//! Every round is bounded in time ([`ROUND_LIMIT`]): listing a bucket whose entries are expiring
//! can wait for ever (nats-server issue #3481: the listing's consumer announces an entry that
//! expires before it is delivered), and a hung round would never report anything again.
//!
//! While PostgreSQL refuses writes (read-only, disk full) the hub still reads it, decides and
//! posts: a box dies just as well then. The message is posted once in the term and its flag
//! recorded once PostgreSQL takes writes again (an outside tester saw no `box-down` for 80 s
//! while the database refused writes). While it cannot be reached at all (stopped, cut off),
//! the hub decides on the boxes it last read from it, and posts without their open incidents
//! (an outside tester: `box-down` only once PostgreSQL was back, 63–88 s after the kill). The
//! fencing token cannot be claimed meanwhile: a paused hub could post too, under the same key
//! ([`postgres::KnownBox::down_since_ms`]). What was posted but not recorded, and the boxes last
//! read, are kept in the cluster too ([`crate::cluster::TOLD_BUCKET`]): a hub that becomes
//! active while PostgreSQL cannot be reached goes on from them (an outside tester's box got no
//! `cleared` after a takeover, and a takeover decided nothing until PostgreSQL was back).
//!
//! Invariants: the down flag in PostgreSQL changes only after the webhook took the message, so a
//! crash in between repeats a message, never loses one; a round that cannot read the leases
//! (the hub itself is cut off) decides nothing; only the active hub decides, under its fencing
//! token ([`super::active`]) whenever PostgreSQL takes it.

use super::active::Fence;
use super::metrics::HubMetrics;
use super::postgres;
use super::HubOptions;
use crate::cluster::wire::Lease;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the leases are compared.
const ROUND: Duration = Duration::from_secs(1);
/// How long a known box's lease must be missing before it is reported down.
const CONFIRM_DOWN: Duration = Duration::from_secs(3);
/// How long listing the leases may take (a few replies of the bucket's leader).
const LIST_LIMIT: Duration = Duration::from_secs(3);
/// How long a round may take before it is given up (and tried again at the next).
const ROUND_LIMIT: Duration = Duration::from_secs(10);
/// How long connecting to PostgreSQL may take before the round goes on without it.
const CONNECT_LIMIT: Duration = Duration::from_secs(3);

/// How long the webhook may take to answer a `box-down` (a round is bounded by [`ROUND_LIMIT`]).
const WEBHOOK_WAIT: Duration = Duration::from_secs(8);

/// The boxes the active term's lease watch finds dead now, for the standby evaluator
/// ([`super::standby`]) and the board ([`super::board`]): reported down, or with a lease missing
/// long enough though the webhook has not taken their `box-down` yet.
pub type DeadBoxes = Arc<std::sync::Mutex<BTreeSet<String>>>;

/// What this term has seen of the boxes between rounds.
#[derive(Debug, Default)]
struct Seen {
    /// Boxes known, not yet reported down, whose lease is missing: since when (and on the wall
    /// clock: the `box-down`'s time).
    missing: HashMap<String, (Instant, i64)>,
    /// Boxes reported down whose lease is back: since when on the wall clock.
    back: HashMap<String, i64>,
    /// Boxes whose last message the webhook took but PostgreSQL has not recorded (it refused
    /// writes, or could not be reached), with what it told: down (`raised`, true) or back
    /// (`cleared`). Not posted again; recorded when it can be.
    unrecorded: HashMap<String, bool>,
    /// The boxes as PostgreSQL last listed them: decided on while it cannot be reached.
    known: Option<Vec<postgres::KnownBox>>,
}

/// Records a box's down flag under `fence` and in `last_read` (a round deciding on it while
/// PostgreSQL cannot be reached must not tell the box's change again); `false` when PostgreSQL
/// refuses the write (tried again next round), an error when another hub has become active.
async fn record(db: &tokio_postgres::Client, box_id: &str, down: bool, fence: i64, last_read: &mut Option<Vec<postgres::KnownBox>>) -> anyhow::Result<bool> {
    match postgres::set_flag(db, box_id, postgres::BoxFlag::Down, down, fence).await {
        Ok(Some(changed_ms)) => {
            if let Some(known) = last_read.iter_mut().flatten().find(|known| known.box_id == box_id) {
                known.down = down;
                known.down_since_ms = changed_ms;
            }
            Ok(true)
        }
        Ok(None) => anyhow::bail!("another hub became active while box-down of {box_id} was posted"),
        Err(error) => {
            tracing::debug!(error = %format!("{error:#}"), box_id, "box-down posted, not recorded yet");
            Ok(false)
        }
    }
}

/// The key under which [`crate::cluster::TOLD_BUCKET`] keeps the boxes last read.
const KNOWN_KEY: &str = "known";
/// The prefix of the keys under which it keeps the unrecorded messages, by box.
const UNRECORDED_PREFIX: &str = "unrecorded.";

impl Seen {
    /// What the hub before this one kept in `told` (nothing if it cannot be read in time).
    async fn restored(told: &kv::Store) -> Seen {
        let read = async {
            let mut seen = Seen::default();
            if let Some(known) = told.get(KNOWN_KEY).await? {
                seen.known = serde_json::from_slice(&known).ok();
            }
            let keys: Vec<String> = told.keys().await?.try_collect().await?;
            for key in keys {
                let Some(box_id) = key.strip_prefix(UNRECORDED_PREFIX) else { continue };
                if let Some(value) = told.get(key.as_str()).await? {
                    seen.unrecorded.insert(box_id.to_string(), &value[..] == b"down");
                }
            }
            anyhow::Ok(seen)
        };
        match tokio::time::timeout(ROUND_LIMIT, read).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "what the hub before told of dead boxes cannot be read; starting from PostgreSQL");
                Seen::default()
            }
            Err(_) => {
                tracing::warn!("what the hub before told of dead boxes was not read within {ROUND_LIMIT:?}; starting from PostgreSQL");
                Seen::default()
            }
        }
    }
}

/// What [`crate::cluster::TOLD_BUCKET`] holds, as this hub last wrote it.
#[derive(Debug)]
struct Kept {
    known: Option<Vec<postgres::KnownBox>>,
    unrecorded: HashMap<String, bool>,
}

/// Keeps `unrecorded` and `known` in `told` where they changed since `kept` (best effort: a
/// cluster that takes no writes loses only what a next hub would know).
async fn keep_told(told: &kv::Store, seen: &Seen, kept: &mut Kept) {
    let write = async {
        if seen.known != kept.known {
            if let Some(known) = &seen.known {
                told.put(KNOWN_KEY, serde_json::to_vec(known)?.into()).await?;
            }
            kept.known.clone_from(&seen.known);
        }
        for (box_id, &down) in &seen.unrecorded {
            if kept.unrecorded.get(box_id) != Some(&down) {
                let value: &'static [u8] = if down { b"down" } else { b"up" };
                told.put(format!("{UNRECORDED_PREFIX}{box_id}"), value.into()).await?;
                kept.unrecorded.insert(box_id.clone(), down);
            }
        }
        let recorded: Vec<String> = kept.unrecorded.keys().filter(|box_id| !seen.unrecorded.contains_key(*box_id)).cloned().collect();
        for box_id in recorded {
            told.purge(format!("{UNRECORDED_PREFIX}{box_id}")).await?;
            kept.unrecorded.remove(&box_id);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(LIST_LIMIT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %format!("{error:#}"), "what was told of dead boxes not kept in the cluster"),
        Err(_) => tracing::debug!("what was told of dead boxes not kept in the cluster in time"),
    }
}

/// Runs rounds until `term` ends (the hub stops or is no longer the active one).
pub async fn watch(
    (leases, told): (kv::Store, kv::Store),
    options: HubOptions,
    (fence, dead): (Fence, DeadBoxes),
    term: CancellationToken,
    metrics: Arc<HubMetrics>,
) {
    let http = match crate::sinks::no_redirects().timeout(WEBHOOK_WAIT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the HTTP client: no box-down alarms");
            return;
        }
    };
    let mut db: Option<tokio_postgres::Client> = None;
    let mut failing = false;
    // A message the webhook did not take in time is posted again with the same time and key.
    let mut seen = Seen::restored(&told).await;
    let mut kept = Kept { known: seen.known.clone(), unrecorded: seen.unrecorded.clone() };
    loop {
        let round = async {
            let client = match tokio::time::timeout(CONNECT_LIMIT, postgres::reuse(&mut db, &options.postgres)).await {
                Ok(Ok(client)) => Some(client),
                Ok(Err(error)) => {
                    tracing::debug!(error = %format!("{error:#}"), "PostgreSQL unreachable: box-down decided on the boxes last read");
                    None
                }
                Err(_) => None,
            };
            round(&leases, client, &http, &options.webhook, (fence.token(), &dead), &mut seen, &metrics).await
        };
        let finished = tokio::time::timeout(ROUND_LIMIT, round).await;
        if finished.is_err() {
            // A connection whose packets vanish (a database failover behind a virtual IP, a
            // firewall that forgot it) never closes: it is made again, not waited on for good
            // (an outside tester: no `box-down` for 7 minutes, until the hub was killed).
            db = None;
        }
        let finished = finished.unwrap_or_else(|_| Err(anyhow::anyhow!("a round took over {ROUND_LIMIT:?}")));
        metrics.box_watch_failing.set(i64::from(finished.is_err()));
        keep_told(&told, &seen, &mut kept).await;
        match finished {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("box lease watch running again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), "box lease watch cannot run a round");
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(ROUND) => {}
            () = term.cancelled() => return,
        }
    }
}

/// One comparison of the leases with the boxes known (`db`: `None` while PostgreSQL cannot be
/// reached).
async fn round(
    leases: &kv::Store,
    db: Option<&tokio_postgres::Client>,
    http: &reqwest::Client,
    webhook: &str,
    (fence, dead): (i64, &DeadBoxes),
    Seen { missing, back, unrecorded, known: last_read }: &mut Seen,
    metrics: &HubMetrics,
) -> anyhow::Result<()> {
    // Every round claims the database for this hub's term: a hub that lost its lease without
    // knowing it yet (paused, cut off) finds a newer token here and decides nothing. A database
    // refusing writes decides nothing about the term: the round goes on, on reads.
    let writable = match db {
        Some(db) => match postgres::claim_fence(db, fence).await {
            Ok(claimed) => {
                anyhow::ensure!(claimed, "another hub is active (fencing token {fence} is old)");
                true
            }
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "PostgreSQL takes no writes: box-down decided on reads, recorded later");
                false
            }
        },
        None => false,
    };
    metrics.postgres_writable.set(i64::from(writable));
    // Alive: listed (the listing is a consumer of the bucket's stream, served by its leader).
    // The value, read from any replica, only names the district of a box not known yet.
    let listing = async { anyhow::Ok(leases.keys().await?.try_collect::<BTreeSet<String>>().await?) };
    let alive = tokio::time::timeout(LIST_LIMIT, listing).await.map_err(|_| anyhow::anyhow!("listing the leases took over {LIST_LIMIT:?}"))??;
    let known_boxes = match db {
        Some(db) => {
            let mut known_boxes = postgres::boxes(db).await?;
            let mut registered = false;
            for box_id in &alive {
                if known_boxes.iter().any(|known| &known.box_id == box_id) {
                    continue;
                }
                if let Some(value) = leases.get(box_id.clone()).await? {
                    let district = serde_json::from_slice::<Lease>(&value).map(|l| l.district).unwrap_or_default();
                    // A box first seen while PostgreSQL refuses writes is registered once it takes them.
                    registered |= writable && postgres::register_box(db, box_id, &district).await.is_ok();
                }
            }
            if registered {
                known_boxes = postgres::boxes(db).await?;
            }
            *last_read = Some(known_boxes.clone());
            known_boxes
        }
        None => last_read.clone().ok_or_else(|| anyhow::anyhow!("PostgreSQL unreachable, and no list of boxes read from it yet"))?,
    };
    missing.retain(|box_id, _| !alive.contains(box_id));
    back.retain(|box_id, _| alive.contains(box_id));
    // Dead now: reported down, or missing long enough — whether or not the webhook has taken
    // the `box-down` yet (a slow one must not keep the standby from judging the box).
    let confirmed = |box_id: &str| missing.get(box_id).is_some_and(|(since, _)| since.elapsed() >= CONFIRM_DOWN);
    let told_down = |k: &postgres::KnownBox| unrecorded.get(&k.box_id).copied().unwrap_or(k.down);
    let now_dead = known_boxes.iter().filter(|k| !alive.contains(&k.box_id) && (told_down(k) || confirmed(&k.box_id))).map(|k| k.box_id.clone()).collect();
    if let Ok(mut dead) = dead.lock() {
        *dead = now_dead;
    }
    for known in known_boxes {
        let is_alive = alive.contains(&known.box_id);
        // What people were told last: the flag, or a message posted since that PostgreSQL has
        // not recorded yet.
        let told_down = unrecorded.get(&known.box_id).copied().unwrap_or(known.down);
        let mut at_ms = crate::clock::Clock::System.now();
        if !is_alive && !told_down {
            let (since, wall) = *missing.entry(known.box_id.clone()).or_insert_with(|| (Instant::now(), at_ms));
            if since.elapsed() < CONFIRM_DOWN {
                continue;
            }
            at_ms = wall;
        }
        if is_alive != told_down {
            if let (Some(&told_down), Some(db)) = (unrecorded.get(&known.box_id), db) {
                // Recorded once PostgreSQL takes writes (its time moves on: the next episode's key
                // is new even when the flag ends as it was).
                if record(db, &known.box_id, told_down, fence, last_read).await? {
                    unrecorded.remove(&known.box_id);
                }
            }
            continue;
        }
        if is_alive {
            at_ms = *back.entry(known.box_id.clone()).or_insert(at_ms);
        }
        let event = if is_alive { "cleared" } else { "raised" };
        // Keyed by the episode, not by this hub's time: a standby posting it again after this
        // hub died mid-post sends the same key, which the receiver drops. A message PostgreSQL
        // cannot record (it takes no writes, is out of reach, or has not recorded the one
        // before) is keyed by the episode's time too: its flag's time stays as it was, and a hub
        // after this one, knowing nothing of the message, would key the box's next episode
        // alike — a receiver dropped a real `box-down` as a copy (an outside tester).
        let key = if writable && !unrecorded.contains_key(&known.box_id) {
            format!("{}:box-down:{event}:{}", known.box_id, known.down_since_ms)
        } else {
            format!("{}:box-down:{event}:{}.{at_ms}", known.box_id, known.down_since_ms)
        };
        // Unknown while PostgreSQL cannot be reached: said so rather than "none".
        let open = match db {
            Some(db) => Some(postgres::open_incidents(db, &known.box_id).await?),
            None => None,
        };
        let body = serde_json::json!({
            "kind": "box-down",
            "event": event,
            "box": known.box_id,
            "district": known.district,
            "at_ms": at_ms,
            "key": key,
            "open_incidents": open,
        });
        let response = http.post(webhook).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "the webhook answered {} to box-down {event}", response.status());
        metrics.count_box_down(event);
        if is_alive {
            tracing::info!(box_id = %known.box_id, "box is back: box-down cleared");
        } else {
            tracing::error!(box_id = %known.box_id, open_incidents = open.as_ref().map(Vec::len), "box lease expired: box-down raised");
        }
        missing.remove(&known.box_id);
        back.remove(&known.box_id);
        let recorded = match db {
            Some(db) => record(db, &known.box_id, !is_alive, fence, last_read).await?,
            None => false,
        };
        if recorded {
            unrecorded.remove(&known.box_id);
        } else {
            unrecorded.insert(known.box_id.clone(), !is_alive);
        }
    }
    Ok(())
}
