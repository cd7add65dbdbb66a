//! One active hub per district: hubs started on several machines hold an election on a KV lease
//! (`gw_hub`, key `active`, entries expiring after `--hub-lease`). The hub that creates the key
//! is active and renews it with compare-and-swap on its revision; the others stand by and try to
//! create it every second, so one of them takes over within a lease lifetime after the active
//! hub dies. The revision of the holder's last renewal is its **fencing token**: PostgreSQL keeps
//! the highest token it has seen (`hub_fence`) and refuses a `box-down` change carrying a lower
//! one, so a hub that lost its lease without knowing it (paused, cut off) cannot undo what its
//! successor decided.
//!
//! The key's value names the hub and its term (`<name> <pid>.<start ns>`), unique to this hub's
//! term: a renewal whose answer was lost (the bucket's RAFT leader killed mid-request) may have
//! been written all the same, and the next renewal then meets a newer revision. The hub reads
//! the key: its own term's value there is its own write, whose revision it adopts; only another
//! term's value is another hub (a key not found or unreadable — a replica behind answering
//! during a leader change — is a round not renewed, left to the lifetime rule). (Before, a hub alone in its district stood by after such a lost answer
//! — "hub lease taken by another hub" — and stopped committing until its own lease expired:
//! found by `gridwatch-district-load --scenario leader-kill`.)
//!
//! A lease that cannot be written (JetStream out of storage, its bucket at a limit) leaves the
//! district without an active hub while every hub's `/healthz` said ready, standing by (an
//! outside tester filled the nodes' storage): a hub that has not been able to take or renew it
//! for a lifetime says so ([`LeaseHealth`]).
//!
//! Invariants: a hub acts (consumes, watches leases) only while it holds the lease; it stops
//! acting when a renewal is refused, and on its own once a whole lifetime passed without a
//! renewal (it cannot know whether the key expired meanwhile).

use async_nats::jetstream::kv;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The key the active hub holds in [`crate::cluster::HUB_BUCKET`].
const ACTIVE_KEY: &str = "active";
/// How often a standby hub tries to take the lease.
const STANDBY_LOOK: Duration = Duration::from_secs(1);

/// The active hub's fencing token: the revision of its last renewal.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<AtomicU64>);

impl Fence {
    pub fn token(&self) -> i64 {
        i64::try_from(self.0.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
    }

    fn set(&self, revision: u64) {
        self.0.store(revision, Ordering::SeqCst);
    }
}

/// 1 while this hub has been unable to write the hub lease for a lifetime: neither take it (an
/// error other than "held by another hub") nor renew it. The gauge `/healthz` reads.
#[derive(Debug, Clone)]
pub struct LeaseHealth {
    pub unwritable: prometheus_client::metrics::gauge::Gauge,
    pub lifetime: Duration,
}

impl LeaseHealth {
    /// A write of the lease answered (taken, renewed, or found held by another hub).
    fn answered(&self, failing_since: &mut Option<Instant>) {
        *failing_since = None;
        self.unwritable.set(0);
    }

    /// A write of the lease failed: said once it has failed for a lifetime.
    fn failed(&self, failing_since: &mut Option<Instant>) {
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.lifetime {
            self.unwritable.set(1);
        }
    }
}

/// This hub's term as the active one.
#[derive(Debug)]
pub struct Term {
    pub fence: Fence,
    /// Cancelled when the lease is lost (or the hub stops).
    pub lost: CancellationToken,
    /// Renews the lease; after a stop it hands the lease over before it ends.
    pub keeper: tokio::task::JoinHandle<()>,
}

/// Waits (standing by) until this hub holds the lease, then keeps it; `None` once `shutdown`
/// came first.
pub async fn take(bucket: &kv::Store, hub_name: &str, health: &LeaseHealth, shutdown: &CancellationToken) -> Option<Term> {
    let mut standing_by = false;
    let mut failing_since = None;
    let value = term_value(hub_name);
    let revision = loop {
        // A stopping hub has just handed its lease over (see `keep`): taking it back would
        // start a new term that ends at once, over and over, and the hub would never exit.
        if shutdown.is_cancelled() {
            return None;
        }
        match bucket.create(ACTIVE_KEY, value.clone().into()).await {
            Ok(revision) => {
                health.answered(&mut failing_since);
                break revision;
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                health.answered(&mut failing_since);
                if !standing_by {
                    standing_by = true;
                    let holder = bucket.get(ACTIVE_KEY).await.ok().flatten().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
                    tracing::info!(active = %holder, "another hub is active: standing by");
                }
            }
            Err(error) => {
                health.failed(&mut failing_since);
                tracing::warn!(error = %error, "cannot reach the hub lease; trying again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(STANDBY_LOOK) => {}
            () = shutdown.cancelled() => return None,
        }
    };
    tracing::info!(hub = %hub_name, fence = revision, "this hub is the district's active hub");
    let fence = Fence::default();
    fence.set(revision);
    let lost = shutdown.child_token();
    let keeper = tokio::spawn(keep(bucket.clone(), value, health.clone(), fence.clone(), lost.clone()));
    Some(Term { fence, lost, keeper })
}

/// Renews the lease three times a lifetime until it is refused or a lifetime passed without a
/// renewal; then cancels `lost`. A clean stop deletes the key, so a standby takes over at once.
async fn keep(bucket: kv::Store, value: String, health: LeaseHealth, fence: Fence, lost: CancellationToken) {
    let lifetime = health.lifetime;
    let mut renewed_at = Instant::now();
    let mut failing_since = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(lifetime / 3) => {}
            () = lost.cancelled() => {
                // Stopping (SIGTERM): hand over now rather than after a lifetime (only the
                // key this hub still holds: its revision must be the last).
                let revision = u64::try_from(fence.token()).unwrap_or(0);
                if let Err(error) = bucket.delete_expect_revision(ACTIVE_KEY, Some(revision)).await {
                    tracing::debug!(error = %error, "hub lease not handed over; it expires instead");
                }
                return;
            }
        }
        match renew(&bucket, &value, &fence).await {
            Ok(revision) => {
                health.answered(&mut failing_since);
                fence.set(revision);
                renewed_at = Instant::now();
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                health.answered(&mut failing_since);
                tracing::error!("hub lease taken by another hub: standing by");
                lost.cancel();
                return;
            }
            Err(error) if renewed_at.elapsed() >= lifetime => {
                health.failed(&mut failing_since);
                tracing::error!(error = %error, "hub lease not renewed for a whole lifetime: standing by");
                lost.cancel();
                return;
            }
            Err(error) => {
                health.failed(&mut failing_since);
                tracing::warn!(error = %error, "hub lease not renewed; trying again");
            }
        }
    }
}

/// The lease key's value for a term of this hub: its name and a token no other term has.
fn term_value(hub_name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{hub_name} {}.{nanos}", std::process::id())
}

/// Renews the lease at the fence's revision. Refused because the key moved on, it reads the
/// key: this term's own value there is a renewal of ours whose answer was lost, and the renewal
/// is made again at its revision. A key that cannot be read is not yet a refusal: the round
/// counts as not renewed (and is tried again).
async fn renew(bucket: &kv::Store, value: &str, fence: &Fence) -> Result<u64, kv::UpdateError> {
    let revision = u64::try_from(fence.token()).unwrap_or(0);
    match bucket.update(ACTIVE_KEY, value.to_string().into(), revision).await {
        Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => match bucket.entry(ACTIVE_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == value.as_bytes() => {
                tracing::info!(revision = entry.revision, "hub lease: an unanswered renewal was written; renewing from it");
                fence.set(entry.revision.max(revision));
                match bucket.update(ACTIVE_KEY, value.to_string().into(), entry.revision).await {
                    // The key still holds this term's value (the read may come from a replica
                    // behind the leader): not refused, only not renewed this round; the
                    // lifetime rule still stands the hub by if it never is.
                    Err(again) if again.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        Err(kv::UpdateError::with_source(kv::UpdateErrorKind::Other, again))
                    }
                    renewed => renewed,
                }
            }
            Err(read) => Err(kv::UpdateError::with_source(kv::UpdateErrorKind::Other, read)),
            // No key where the refusal said there was one: a replica behind (a node just back)
            // answered the read. Not refused either; tried again next round.
            Ok(None) => {
                tracing::warn!("hub lease: renewal refused but the key is not found; trying again");
                Err(kv::UpdateError::with_source(kv::UpdateErrorKind::Other, error))
            }
            Ok(Some(entry)) => {
                tracing::warn!(revision = entry.revision, operation = ?entry.operation, holder = %String::from_utf8_lossy(&entry.value), "hub lease held by another term");
                Err(error)
            }
        },
        other => other,
    }
}
