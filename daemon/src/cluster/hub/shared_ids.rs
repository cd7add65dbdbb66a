//! Two boxes configured with one `box_id` (a copied configuration or card image): both renew
//! the same lease key, so the hub never sees either die, the board shows whichever store sent
//! last, and workers' actions go to whichever pulls first. Each box writes its instance (process)
//! into the lease ([`crate::cluster::wire::Lease`]); the active hub watches every put of the
//! lease bucket, in order, and a key renewed by an instance it saw before another one — two
//! writers taking turns — is shared. A box restarting puts under a new instance and never goes
//! back to its old one, so a restart is not mistaken for two boxes.
//!
//! A shared id raises one `box-id-shared` on the webhook (to installers: the two hosts, what to
//! do), and clears it once one instance alone has renewed the key for a [`window`]. As with
//! `box-down` ([`super::leases`]), the flag in PostgreSQL changes only after the webhook took the
//! message, under the active hub's fencing token.

use super::active::Fence;
use super::metrics::HubMetrics;
use super::postgres;
use super::HubOptions;
use crate::cluster::wire::Lease;
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the boxes' states are compared with what was told.
const ROUND: Duration = Duration::from_secs(1);
/// Returns of an earlier instance within the window that make a key shared (a put of the old
/// process delayed across a restart makes two: back to the old, back to the new).
const RETURNS_TO_TELL: usize = 3;
/// How long the webhook may take to answer.
const WEBHOOK_WAIT: Duration = Duration::from_secs(8);
/// How long one comparison of the boxes' states with what was told may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// How far back the puts of a key are remembered: three lease lifetimes, within which two
/// boxes that each renew well inside one lifetime take turns many times.
pub fn window(lease_ttl: Duration) -> Duration {
    lease_ttl.saturating_mul(3)
}

/// What the puts of one lease key have shown.
#[derive(Debug)]
struct Writers {
    /// When this term saw the key's first put (a key not watched for a whole window is not
    /// cleared: the other box may simply not have renewed yet).
    first_put: Instant,
    /// The instance of the latest put.
    last: String,
    /// Each instance seen within the window: when it last put, and its host.
    seen: HashMap<String, (Instant, String)>,
    /// When a put came from an instance seen before the latest other one.
    returns: VecDeque<Instant>,
}

impl Writers {
    fn new(now: Instant) -> Writers {
        Writers { first_put: now, last: String::new(), seen: HashMap::new(), returns: VecDeque::new() }
    }

    /// Records a put of the key by `instance` on `host` at `now`.
    fn put(&mut self, instance: &str, host: &str, now: Instant, window: Duration) {
        self.forget_before(now, window);
        if instance != self.last {
            if self.seen.contains_key(instance) {
                self.returns.push_back(now);
            }
            self.last = instance.to_string();
        }
        self.seen.insert(instance.to_string(), (now, host.to_string()));
    }

    fn forget_before(&mut self, now: Instant, window: Duration) {
        self.seen.retain(|_, (at, _)| now.saturating_duration_since(*at) <= window);
        while self.returns.front().is_some_and(|at| now.saturating_duration_since(*at) > window) {
            self.returns.pop_front();
        }
    }

    /// Whether two writers take turns on the key as of `now`: `Some(true)` shared, `Some(false)`
    /// one writer for a whole window, `None` not watched long enough to say it is not.
    fn shared(&mut self, now: Instant, window: Duration) -> Option<bool> {
        self.forget_before(now, window);
        if self.returns.len() >= RETURNS_TO_TELL {
            Some(true)
        } else if self.returns.is_empty() && now.saturating_duration_since(self.first_put) > window {
            Some(false)
        } else {
            None
        }
    }

    /// The instances seen within the window and their hosts, for the message.
    fn instances(&self) -> Vec<serde_json::Value> {
        let sorted: BTreeMap<_, _> = self.seen.iter().map(|(instance, (_, host))| (instance.clone(), host.clone())).collect();
        sorted.into_iter().map(|(instance, host)| serde_json::json!({"instance": instance, "host": host})).collect()
    }
}

/// Watches the lease bucket until `term` ends (the hub stops or is no longer the active one).
pub async fn watch(leases: kv::Store, options: HubOptions, fence: Fence, term: CancellationToken, metrics: Arc<HubMetrics>) {
    let http = match crate::sinks::no_redirects().timeout(WEBHOOK_WAIT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the HTTP client: no box-id-shared alarms");
            return;
        }
    };
    let window = window(options.lease_ttl);
    let mut writers: HashMap<String, Writers> = HashMap::new();
    let mut db: Option<tokio_postgres::Client> = None;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut failing = false;
    let term_start = Instant::now();
    loop {
        let watched = async {
            let mut puts = leases.watch_all().await?;
            let mut round = tokio::time::interval(ROUND);
            loop {
                tokio::select! {
                    entry = puts.next() => {
                        let entry = entry.ok_or_else(|| anyhow::anyhow!("the watch of the leases ended"))??;
                        if entry.operation == kv::Operation::Put {
                            let lease = serde_json::from_slice::<Lease>(&entry.value).ok();
                            let (instance, host) = lease.map(|l| (l.instance, l.host)).unwrap_or_default();
                            let now = Instant::now();
                            writers.entry(entry.key).or_insert_with(|| Writers::new(now)).put(&instance, &host, now, window);
                        }
                    }
                    _ = round.tick() => {
                        let settled = async {
                            let client = postgres::reuse(&mut db, &options.postgres).await?;
                            settle(client, &http, &options.webhook, fence.token(), (&mut writers, term_start), window, &metrics).await
                        };
                        tokio::time::timeout(SETTLE_LIMIT, settled).await.unwrap_or_else(|_| Err(anyhow::anyhow!("a round took over {SETTLE_LIMIT:?}")))?;
                        backoff.reset();
                        if failing {
                            failing = false;
                            tracing::info!("shared box id watch running again");
                        }
                    }
                }
            }
        };
        let error: anyhow::Result<()> = tokio::select! {
            outcome = watched => outcome,
            () = term.cancelled() => return,
        };
        if let Err(error) = error {
            // Made again: a connection whose packets vanish never closes by itself.
            db = None;
            if !failing {
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), "shared box id watch cannot run; watching again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = term.cancelled() => return,
        }
    }
}

/// Posts `box-id-shared` raised or cleared for each known box whose state changed.
async fn settle(
    db: &tokio_postgres::Client,
    http: &reqwest::Client,
    webhook: &str,
    fence: i64,
    (writers, term_start): (&mut HashMap<String, Writers>, Instant),
    window: Duration,
    metrics: &HubMetrics,
) -> anyhow::Result<()> {
    let now = Instant::now();
    for known in postgres::boxes(db).await? {
        let shared = match writers.get_mut(&known.box_id) {
            Some(writers) => writers.shared(now, window),
            // Not renewed for a whole window of this term: no second box now (a dead box is
            // `box-down`'s).
            None => (now.saturating_duration_since(term_start) > window).then_some(false),
        };
        if shared.is_none_or(|shared| shared == known.id_shared) {
            continue;
        }
        let shared = !known.id_shared;
        let event = if shared { "raised" } else { "cleared" };
        let at_ms = crate::clock::Clock::System.now();
        let instances = writers.get(&known.box_id).map(Writers::instances).unwrap_or_default();
        let body = serde_json::json!({
            "kind": "box-id-shared",
            "event": event,
            "box": known.box_id,
            "district": known.district,
            "at_ms": at_ms,
            "key": format!("{}:box-id-shared:{event}:{}", known.box_id, known.id_shared_since_ms),
            "instances": instances,
            "text": if shared {
                format!("两台盒子使用同一编号 {}（主机：{}）：离线无法察觉，工单动作只到其中一台。请给其中一台改用自己的 box_id 后重启。", known.box_id, hosts(&instances))
            } else {
                // Two boxes under one id hide each other's death: the one that stopped may be down.
                format!(
                    "编号 {} 现只有一台盒子在用（主机：{}）。另一台若不是有意撤下或改号，可能已离线，请到现场查看。",
                    known.box_id,
                    hosts(&instances)
                )
            },
        });
        let response = http.post(webhook).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "the webhook answered {} to box-id-shared {event}", response.status());
        if postgres::set_flag(db, &known.box_id, postgres::BoxFlag::IdShared, shared, fence).await?.is_none() {
            anyhow::bail!("another hub became active while box-id-shared {event} of {} was posted", known.box_id);
        }
        metrics.count_box_id_shared(event);
        if shared {
            tracing::error!(box_id = %known.box_id, instances = %body["instances"], "two boxes renew one box's lease in turns (one box_id configured on both): box-id-shared raised");
        } else {
            tracing::info!(box_id = %known.box_id, "one box alone renews its lease again: box-id-shared cleared");
        }
    }
    Ok(())
}

/// The distinct host names among `instances`, for the message.
fn hosts(instances: &[serde_json::Value]) -> String {
    let mut hosts: Vec<&str> = instances.iter().filter_map(|i| i["host"].as_str()).map(|h| if h.is_empty() { "?" } else { h }).collect();
    hosts.dedup();
    hosts.join("、")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(90);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn two_instances_taking_turns_share_the_key() {
        let start = Instant::now();
        let mut writers = Writers::new(start);
        for (secs, instance) in [(0, "a"), (2, "b"), (5, "a"), (7, "b"), (10, "a")] {
            writers.put(instance, "pi-east", at(start, secs), WINDOW);
        }
        assert_eq!(writers.shared(at(start, 11), WINDOW), Some(true));
        assert_eq!(writers.instances().len(), 2);
    }

    #[test]
    fn a_restart_is_one_writer_after_another() {
        let start = Instant::now();
        let mut writers = Writers::new(start);
        // Renewals every 5 s; restarted twice (a new instance each time).
        for secs in (0..60).step_by(5) {
            writers.put("a", "pi", at(start, secs), WINDOW);
        }
        for secs in (60..120).step_by(5) {
            writers.put("b", "pi", at(start, secs), WINDOW);
        }
        writers.put("c", "pi", at(start, 120), WINDOW);
        assert_eq!(writers.shared(at(start, 121), WINDOW), Some(false), "watched for a whole window, no return");
        assert_eq!(writers.shared(at(start, 30), WINDOW), None, "too soon to say");
    }

    #[test]
    fn one_late_put_of_the_old_instance_is_not_two_boxes() {
        let start = Instant::now();
        let mut writers = Writers::new(start);
        writers.put("a", "pi", at(start, 0), WINDOW);
        writers.put("b", "pi", at(start, 1), WINDOW);
        writers.put("a", "pi", at(start, 2), WINDOW);
        // The new one's put right after it, then its own renewals.
        for secs in 3..30 {
            writers.put("b", "pi", at(start, secs), WINDOW);
        }
        assert_eq!(writers.shared(at(start, 30), WINDOW), None);
    }

    #[test]
    fn the_key_is_alone_again_a_window_after_the_last_return() {
        let start = Instant::now();
        let mut writers = Writers::new(start);
        for (secs, instance) in [(0, "a"), (2, "b"), (5, "a"), (7, "b"), (10, "a")] {
            writers.put(instance, "pi", at(start, secs), WINDOW);
        }
        // `a` stops; `b` goes on.
        for secs in (12..60).step_by(5) {
            writers.put("b", "pi", at(start, secs), WINDOW);
        }
        assert_eq!(writers.shared(at(start, 60), WINDOW), Some(true), "within the window of the returns");
        for secs in (60..200).step_by(5) {
            writers.put("b", "pi", at(start, secs), WINDOW);
        }
        assert_eq!(writers.shared(at(start, 200), WINDOW), Some(false));
    }

    #[test]
    fn hosts_are_named_once() {
        let instances = vec![
            serde_json::json!({"instance": "1-1", "host": "pi-east"}),
            serde_json::json!({"instance": "1-2", "host": "pi-east"}),
            serde_json::json!({"instance": "9-3", "host": ""}),
        ];
        assert_eq!(hosts(&instances), "pi-east、?");
    }
}
