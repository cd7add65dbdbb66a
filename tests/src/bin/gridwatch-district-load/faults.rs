//! The faults of the failure scenarios, injected while the sensors publish: a box's link
//! blackholed, the uplink stream's leader node killed (`kill -9`), all three nodes killed at
//! once. Each records what it did and when, and times the recovery it is there to see: a new
//! leader answering, the cut box's backlog sent. What was lost is counted afterwards
//! ([`crate::audit`]), from the same run.

use crate::district::{metric_sum, District};
use anyhow::Context;
use gridwatch_tests::{now_ms, wait_for};
use std::time::{Duration, Instant};

/// The uplink stream (`gridwatch::cluster::STREAM`; the harness does not link the daemon).
pub const STREAM: &str = "GRIDWATCH_UPLINK";

/// One blackhole of a box's link.
#[derive(Debug, Clone)]
pub struct Cut {
    pub box_index: usize,
    pub cut_ms: i64,
    pub back_ms: i64,
    /// Seconds from the link's return until the box had sent its backlog (what is behind down
    /// to a few seconds' worth of its traffic, see [`DRAINED_READING_SECS`]); `None`
    /// when that did not happen while the link stayed up.
    pub drained_secs: Option<f64>,
    /// Readings the box had not sent when the link came back.
    pub readings_behind_at_return: f64,
}

/// A box's backlog is "drained" when its readings behind are at most this many seconds of its
/// traffic (they are batched every second, so a few are always in flight) and its alert
/// events and transitions behind at most [`DRAINED_ROWS`] (alarms keep firing and clearing:
/// a few are always on their way).
const DRAINED_READING_SECS: f64 = 3.0;
const DRAINED_ROWS: f64 = 10.0;

/// Blackholes the boxes' links in turn (box 1, 2, …), `cuts` times `cut` long, with `up`
/// between cuts.
pub async fn blackholes(district: &District, cuts: usize, cut: Duration, up: Duration, rate_per_box: f64) -> Vec<Cut> {
    let http = reqwest::Client::new();
    let mut done = Vec::with_capacity(cuts);
    for index in 0..cuts {
        let box_index = index % district.boxes.len();
        let community = &district.boxes[box_index];
        let cut_ms = now_ms();
        community.proxy.set_blackholed(true);
        eprintln!("cut {}/{cuts}: {}'s link blackholed for {} s", index + 1, community.id, cut.as_secs());
        tokio::time::sleep(cut).await;
        let behind = metric_sum(&http, &community.metrics_url, "gridwatch_uplink_rows_behind{kind=\"reading\"}").await.unwrap_or(f64::NAN);
        let back = Instant::now();
        let back_ms = now_ms();
        community.proxy.set_blackholed(false);
        let drained = wait_for(up, || async { drained(&http, &community.metrics_url, rate_per_box).await }).await;
        let drained_secs = drained.then(|| back.elapsed().as_secs_f64());
        eprintln!("  link back; backlog ({behind} readings) drained after {drained_secs:?} s");
        done.push(Cut { box_index, cut_ms, back_ms, drained_secs, readings_behind_at_return: behind });
        tokio::time::sleep(up.saturating_sub(back.elapsed())).await;
    }
    done
}

/// Whether a box has sent its backlog (see [`DRAINED_READING_SECS`]).
async fn drained(http: &reqwest::Client, metrics_url: &str, rate_per_box: f64) -> bool {
    let behind = |kind: &'static str| async move { metric_sum(http, metrics_url, &format!("gridwatch_uplink_rows_behind{{kind=\"{kind}\"}}")).await };
    matches!(
        (behind("alert").await, behind("transition").await, behind("reading").await),
        (Some(a), Some(t), Some(r)) if a + t <= DRAINED_ROWS && r <= rate_per_box * DRAINED_READING_SECS
    )
}

/// One `kill -9` of the stream's leader.
#[derive(Debug, Clone)]
pub struct LeaderKill {
    pub killed: String,
    pub new_leader: Option<String>,
    /// Seconds from the kill until another node answered a stream-info request as the
    /// stream's leader (asked through a surviving node).
    pub elected_secs: Option<f64>,
    /// Seconds from the killed node's restart until both its followers were current again.
    pub rejoined_secs: Option<f64>,
}

/// How long a new leader (or a rejoining replica) is waited for before the kill is recorded
/// as without one.
const ELECTION_WAIT: Duration = Duration::from_secs(60);

/// `kill -9` of the uplink stream's leader node, `kills` times: each time the new leader is
/// timed, the killed node restarted, and the next kill waits until every replica is current
/// and then `settle` more.
pub async fn leader_kills(district: &mut District, kills: usize, settle: Duration) -> anyhow::Result<Vec<LeaderKill>> {
    let mut done = Vec::with_capacity(kills);
    for index in 0..kills {
        let leader = district.nats.wait_for_stream_leader(STREAM, ELECTION_WAIT).await.context("the uplink stream has no leader to kill")?;
        let survivor = surviving_url(district, &[&leader]);
        let killed_at = Instant::now();
        district.nats.kill(&leader);
        let new_leader = answering_leader(&survivor, &[&leader], ELECTION_WAIT).await;
        let elected_secs = new_leader.is_some().then(|| killed_at.elapsed().as_secs_f64());
        district.nats.restart(&leader).await?;
        let restarted = Instant::now();
        let rejoined = replicas_current(&survivor, ELECTION_WAIT).await;
        let rejoined_secs = rejoined.then(|| restarted.elapsed().as_secs_f64());
        eprintln!("kill {}/{kills}: {leader} killed; new leader {new_leader:?} after {elected_secs:?} s; rejoined after {rejoined_secs:?} s", index + 1);
        done.push(LeaderKill { killed: leader, new_leader, elected_secs, rejoined_secs });
        tokio::time::sleep(settle).await;
    }
    Ok(done)
}

/// One `kill -9` of every node at once.
#[derive(Debug, Clone)]
pub struct ClusterKill {
    /// Seconds from the restart until the stream answered with a leader.
    pub answering_secs: Option<f64>,
    /// Seconds from the restart until every box had sent its backlog.
    pub drained_secs: Option<f64>,
}

/// `kill -9` of all three nodes at once, `times` times; each time they stay down `down`, are
/// started again, and the next round waits for the boxes to drain (at most `settle_max`).
pub async fn cluster_kills(district: &mut District, times: usize, down: Duration, settle_max: Duration, rate_per_box: f64) -> anyhow::Result<Vec<ClusterKill>> {
    let http = reqwest::Client::new();
    let mut done = Vec::with_capacity(times);
    for index in 0..times {
        for name in district.nats.names() {
            district.nats.kill(&name);
        }
        tokio::time::sleep(down).await;
        for name in district.nats.names() {
            district.nats.restart(&name).await?;
        }
        let restarted = Instant::now();
        let url = district.nats.urls()[0].clone();
        let leader = answering_leader(&url, &[], ELECTION_WAIT).await;
        let answering_secs = leader.is_some().then(|| restarted.elapsed().as_secs_f64());
        let all_drained = wait_for(settle_max, || async {
            for community in &district.boxes {
                if !drained(&http, &community.metrics_url, rate_per_box).await {
                    return false;
                }
            }
            true
        })
        .await;
        let drained_secs = all_drained.then(|| restarted.elapsed().as_secs_f64());
        eprintln!(
            "cluster kill {}/{times}: down {} s; stream answering after {answering_secs:?} s; boxes drained after {drained_secs:?} s",
            index + 1,
            down.as_secs()
        );
        done.push(ClusterKill { answering_secs, drained_secs });
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(done)
}

/// The client URL of a node not among `dead`.
fn surviving_url(district: &District, dead: &[&str]) -> String {
    let names = district.nats.names();
    let urls = district.nats.urls();
    names.iter().zip(urls).find(|(name, _)| !dead.contains(&name.as_str())).map(|(_, url)| url).unwrap_or_default()
}

/// Asks the stream's info through `url` until a leader not among `not` answers it; that
/// leader, or `None` after `timeout`.
async fn answering_leader(url: &str, not: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(info) = stream_info(url).await {
            if let Some(leader) = info.cluster.and_then(|c| c.leader) {
                if !not.contains(&leader.as_str()) {
                    return Some(leader);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until the stream's leader reports both followers current.
async fn replicas_current(url: &str, timeout: Duration) -> bool {
    wait_for(timeout, || async {
        let Some(info) = stream_info(url).await else { return false };
        info.cluster.is_some_and(|c| c.leader.is_some() && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current && !r.offline))
    })
    .await
}

/// One stream-info request through the node at `url` (answered by the stream's leader). A
/// request nobody answers (no leader yet) is given up after [`ASK_WAIT`]: that, plus the
/// 100 ms between requests, is the resolution of the times measured with it.
async fn stream_info(url: &str) -> Option<async_nats::jetstream::stream::Info> {
    let connect = Duration::from_secs(1);
    let options = async_nats::ConnectOptions::new().connection_timeout(connect).request_timeout(Some(ASK_WAIT));
    let client = tokio::time::timeout(connect, options.connect(url)).await.ok()?.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = tokio::time::timeout(ASK_WAIT, js.get_stream(STREAM)).await.ok()?.ok()?;
    let info = tokio::time::timeout(ASK_WAIT, stream.info()).await.ok()?.ok()?.clone();
    Some(info)
}

/// How long one stream-info request may wait for its answer.
const ASK_WAIT: Duration = Duration::from_millis(300);
