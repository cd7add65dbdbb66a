//! The active hub judges a dead box's sensors with their own 4G link (the standby evaluator,
//! [`crate::cluster::standby`]): for each box the lease watch finds dead ([`super::leases`]:
//! its lease missing past the confirmation, whether or not the webhook has taken its
//! `box-down` yet), the box's latest copy is read from KV, its rules compiled
//! and its state restored, and the box's subjects of the sensors' stream are read from after
//! the sequence the copy covers with an ordered consumer (nothing acked, the box's own consumer
//! does not move). First the alarms the box reported open on those sensors are re-stated
//! (`"restated": true`, the box's own keys: one it held back when it died reaches people now);
//! then each event goes to the district's webhook as the alert the box would send,
//! with `"standby": true` and its `key`; once the box's lease is back *and* the box has read
//! its sensors' backlog (its consumer has at most [`CAUGHT_UP`] readings waiting) the evaluator
//! stops, and the box judges the same readings itself. Stopping at the lease left a box that came
//! back to a day's backlog judging it at one reading a round trip, a new alarm behind it
//! reaching nobody for minutes to hours (an outside tester: 248 s after 1,200 readings on a
//! 200 ms link); meanwhile both post what they find, under the same keys.
//!
//! Time passes for the rules (no-data, holds) on the stream's time while a backlog is read, on
//! this hub's clock once it is. What was posted is recorded in PostgreSQL (`standby_alerts`),
//! and the district's board shows what is firing under the dead box ([`super::board`]).
//!
//! Invariants: an alert is posted until the webhook takes it (2xx) or the evaluator stops, in
//! the order of the events; a hub that loses its term stops its evaluators, and the next active
//! hub starts again from the copy — its repeats carry the same keys (a receiver drops them).

use super::leases::DeadBoxes;
use super::metrics::HubMetrics;
use super::{postgres, HubOptions};
use crate::cluster::standby::{decode, setup_key, EvalCopy, EvalSetup, Judged, Standby};
use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the dead boxes are looked at.
const ROUND: Duration = Duration::from_secs(1);
/// How long a look at PostgreSQL may take.
const ROUND_LIMIT: Duration = Duration::from_secs(10);
/// How often a dead box without a copy (yet) is looked for one.
const COPY_LOOK: Duration = Duration::from_secs(5);
/// How often time passes for the rules.
const TICK: Duration = Duration::from_secs(1);
/// How long without a reading before the backlog counts as read.
const QUIET: Duration = Duration::from_secs(2);
/// How many of its 4G sensors' readings a box that is back may still have waiting (delivered
/// or not, unacknowledged) for the evaluator to stop: it judges at one a round trip.
const CAUGHT_UP: u64 = 2;

/// Runs evaluators for the boxes the lease watch finds dead until `term` ends.
pub async fn watch(js: jetstream::Context, copies: kv::Store, options: HubOptions, (dead, term): (DeadBoxes, CancellationToken), metrics: Arc<HubMetrics>) {
    // A slow receiver is waited for longer than `box-down`'s (whose rounds are bounded): each
    // alert posted again after a timeout is one more copy for it (under the same key).
    let http = match crate::sinks::no_redirects().timeout(Duration::from_secs(15)).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the HTTP client: dead boxes' 4G sensors are not judged");
            return;
        }
    };
    let mut running: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        let down: Vec<String> = dead.lock().map(|dead| dead.iter().cloned().collect()).unwrap_or_default();
        let back: Vec<String> = running.keys().filter(|box_id| !down.contains(box_id)).cloned().collect();
        // Asked together: a JetStream that does not answer holds the round up once, not per box.
        let answers = futures::future::join_all(back.iter().map(|box_id| caught_up(&js, box_id))).await;
        for (box_id, caught_up) in back.into_iter().zip(answers) {
            if !caught_up {
                continue;
            }
            if let Some((stop, _)) = running.remove(&box_id) {
                stop.cancel();
                tracing::info!(box_id = %box_id, "box is back and has read its 4G sensors' backlog: it judges them itself again");
            }
        }
        for box_id in down {
            running.entry(box_id.clone()).or_insert_with(|| {
                let stop = term.child_token();
                let evaluator = Evaluator {
                    js: js.clone(),
                    copies: copies.clone(),
                    http: http.clone(),
                    webhook: options.webhook.clone(),
                    postgres: options.postgres.clone(),
                    metrics: metrics.clone(),
                };
                (stop.clone(), tokio::spawn(evaluator.run(box_id, stop)))
            });
        }
        tokio::select! {
            () = tokio::time::sleep(ROUND) => {}
            () = term.cancelled() => break,
        }
    }
    for (_, (stop, task)) in running {
        stop.cancel();
        let _ = task.await;
    }
}

/// Whether a box that is back has read its 4G sensors' backlog: at most [`CAUGHT_UP`] of
/// their readings wait for its consumer. Its consumer not found, or JetStream not answering,
/// counts as caught up (the evaluator stops at the lease, as before).
async fn caught_up(js: &jetstream::Context, box_id: &str) -> bool {
    let asked = async {
        let stream = js.get_stream_no_info(crate::cluster::SENSORS_STREAM).await?;
        let info = stream.consumer_info(crate::cluster::sensors::consumer_name(box_id)).await?;
        anyhow::Ok(info.num_pending.saturating_add(info.num_ack_pending as u64))
    };
    match tokio::time::timeout(ROUND_LIMIT, asked).await {
        Ok(Ok(waiting)) => waiting <= CAUGHT_UP,
        Ok(Err(error)) => {
            tracing::debug!(box_id = %box_id, error = %format!("{error:#}"), "cannot read the box's 4G consumer: taken as caught up");
            true
        }
        Err(_) => true,
    }
}

/// What one dead box's evaluator works with.
struct Evaluator {
    js: jetstream::Context,
    copies: kv::Store,
    http: reqwest::Client,
    webhook: String,
    /// Where what was posted is recorded, for the district's board.
    postgres: String,
    metrics: Arc<HubMetrics>,
}

impl Evaluator {
    async fn run(self, box_id: String, stop: CancellationToken) {
        let Some(mut standby) = self.copy(&box_id, &stop).await else { return };
        tracing::warn!(box_id = %box_id, sensors = standby.sensor_count(), covered = standby.covered, "box is down: this hub judges its 4G sensors");
        self.metrics.standby_boxes.inc();
        let prefix = crate::cluster::sensors::subject_prefix(&standby.district, &box_id);
        let mut db = None;
        let restated = self.restated(&standby, &mut db).await;
        self.post(restated, &box_id, &mut db, &stop).await;
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        while !stop.is_cancelled() {
            if let Err(error) = self.judge(&mut standby, &prefix, &mut db, &stop).await {
                tracing::debug!(box_id = %box_id, error = %format!("{error:#}"), "reading a dead box's 4G sensors; going on after the last judged");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop.cancelled() => {}
                }
            } else {
                backoff.reset();
            }
        }
        self.metrics.standby_boxes.dec();
    }

    /// The box's setup and latest copy, once there is a setup (a box without 4G sensors, or
    /// without `sensors_via_hub`, never puts one).
    async fn copy(&self, box_id: &str, stop: &CancellationToken) -> Option<Standby> {
        let mut complained = false;
        loop {
            let read = async {
                let Some(setup) = self.copies.get(setup_key(box_id)).await? else { return anyhow::Ok(None) };
                let copy = self.copies.get(box_id).await?;
                anyhow::Ok(Some((setup, copy)))
            };
            let found = match read.await {
                Ok(Some((setup, copy))) => {
                    let copy = copy.map(|bytes| decode::<EvalCopy>(&bytes)).transpose();
                    Some(decode::<EvalSetup>(&setup).and_then(|setup| Standby::new(setup, copy?)))
                }
                Ok(None) => None,
                Err(error) => Some(Err(format!("{error:#}"))),
            };
            match found {
                Some(Ok(standby)) => return Some(standby),
                Some(Err(error)) if !complained => {
                    complained = true;
                    tracing::error!(box_id = %box_id, error = %error, "a dead box's standby copy cannot be used: its 4G sensors are judged when it is back");
                }
                _ => {}
            }
            tokio::select! {
                () = tokio::time::sleep(COPY_LOOK) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Reads and judges the box's subjects after the last judged sequence until `stop` or an
    /// error (the caller goes on from where it got to).
    async fn judge(&self, standby: &mut Standby, prefix: &str, db: &mut Option<tokio_postgres::Client>, stop: &CancellationToken) -> anyhow::Result<()> {
        let stream = self.js.get_stream(crate::cluster::SENSORS_STREAM).await?;
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{prefix}>"),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: standby.covered + 1 },
                ..Default::default()
            })
            .await?;
        let mut messages = reader.messages().await?;
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(started + TICK, TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While a backlog is read, time for the rules is the stream's time of the reading
        // judged last (a silence is not judged before the readings that end it are read); once
        // no reading came for a moment, it is this hub's clock — not before the first readings
        // had time to come (a copy older than a sensor's silence limit would raise its no-data
        // before its backlog is read).
        let mut last_read: Option<(i64, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(()),
                message = messages.next() => {
                    let message = message.ok_or_else(|| anyhow::anyhow!("the stream ended the read"))??;
                    let info = message.info().map_err(|error| anyhow::anyhow!(error))?;
                    let seq = info.stream_sequence;
                    let published_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
                    last_read = Some((published_ms, tokio::time::Instant::now()));
                    let sensor = message.subject.strip_prefix(prefix).unwrap_or_default();
                    match standby.reading(sensor, &message.payload, seq, published_ms) {
                        Judged::Alerts(alerts) => self.post(alerts, &standby.box_id, db, stop).await,
                        Judged::Refused(why) => {
                            self.metrics.standby_refused.inc();
                            tracing::debug!(box_id = %standby.box_id, sensor, why, "a dead box's 4G reading not judged");
                        }
                    }
                }
                _ = tick.tick(), if last_read.is_some() || started.elapsed() >= QUIET => {
                    let now = match last_read {
                        Some((published_ms, read_at)) if read_at.elapsed() < QUIET => published_ms,
                        _ => crate::clock::Clock::System.now(),
                    };
                    let alerts = standby.tick(now);
                    self.post(alerts, &standby.box_id, db, stop).await;
                }
            }
        }
    }

    /// The alarms the box reported open on its heard sensors, re-stated (none when PostgreSQL
    /// cannot say: logged).
    async fn restated(&self, standby: &Standby, db: &mut Option<tokio_postgres::Client>) -> Vec<serde_json::Value> {
        match self.with_db(db, async |client| postgres::latest_rule_events(client, &standby.box_id, &standby.heard_ids()).await).await {
            Ok(reported) => standby.restated(&reported),
            Err(error) => {
                tracing::warn!(box_id = %standby.box_id, error = %format!("{error:#}"), "the dead box's open alarms cannot be read: not re-stated");
                Vec::new()
            }
        }
    }

    /// Runs `query` on the evaluator's connection (made again when lost) within [`ROUND_LIMIT`];
    /// a connection that failed is dropped.
    async fn with_db<T>(
        &self,
        db: &mut Option<tokio_postgres::Client>,
        query: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let attempt = async { query(postgres::reuse(db, &self.postgres).await?).await };
        let outcome = tokio::time::timeout(ROUND_LIMIT, attempt).await.unwrap_or_else(|_| Err(anyhow::anyhow!("PostgreSQL took over {ROUND_LIMIT:?}")));
        if outcome.is_err() {
            *db = None;
        }
        outcome
    }

    /// Posts each alert in order (see [`deliver`]) and records those the webhook took for the
    /// board (a record that fails is logged: the people were told, which is what matters). An
    /// alert whose key was posted before is not posted again: every takeover re-states the open
    /// alarms and judges again from the box's last copy, and a day of outages and hub failovers
    /// sent one key 8 times (an outside tester). When PostgreSQL cannot say, it is posted.
    async fn post(&self, alerts: Vec<serde_json::Value>, box_id: &str, db: &mut Option<tokio_postgres::Client>, stop: &CancellationToken) {
        for alert in alerts {
            let key = alert["key"].as_str().unwrap_or_default();
            let posted_before = self.with_db(db, async |client| postgres::standby_alert_posted(client, key).await).await.unwrap_or(false);
            if posted_before {
                self.metrics.standby_alerts_repeated.inc();
                tracing::info!(key, "standby alert posted before (an earlier outage or hub); not posted again");
            } else if !deliver(&self.http, &self.webhook, &alert, &self.metrics, stop).await {
                continue;
            }
            if let Err(error) = self.with_db(db, async |client| postgres::record_standby_alert(client, box_id, &alert).await).await {
                tracing::warn!(error = %format!("{error:#}"), "a standby alert not recorded for the district's board");
            }
        }
    }
}

/// Posts `alert` until the webhook takes it (`true`) or `stop`. An alert the webhook refuses for
/// good (a 4xx other than 408 and 429) is counted, logged and given up (`false`): it must not
/// hold up the alarms after it.
async fn deliver(http: &reqwest::Client, webhook: &str, alert: &serde_json::Value, metrics: &HubMetrics, stop: &CancellationToken) -> bool {
    let key = alert["key"].as_str().unwrap_or_default();
    let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match http.post(webhook).json(alert).send().await.map(|response| response.status()) {
            Ok(status) if status.is_success() => {
                metrics.standby_alerts.inc();
                tracing::warn!(key, "standby alert about a dead box's 4G sensor posted");
                return true;
            }
            Ok(status) if status.is_client_error() && status != reqwest::StatusCode::REQUEST_TIMEOUT && status != reqwest::StatusCode::TOO_MANY_REQUESTS => {
                metrics.standby_alerts_refused.inc();
                tracing::error!(key, %status, "the webhook refused a standby alert for good; the next ones go on");
                return false;
            }
            Ok(status) => tracing::warn!(key, %status, "standby alert not taken; tried again"),
            Err(error) => tracing::warn!(key, error = %format!("{error:#}"), "standby alert not posted; tried again"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.cancelled() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwatch_tests::WebhookReceiver;

    /// A receiver that refuses one alert for good (400) gets the next; one that fails for a while
    /// (500, 429) gets the alert once it takes it.
    #[tokio::test]
    async fn an_alert_refused_for_good_does_not_hold_up_the_next() {
        let (http, metrics, stop) = (reqwest::Client::new(), HubMetrics::new(), CancellationToken::new());
        let receiver = WebhookReceiver::start(vec![400, 500, 429]).await;
        let alert = |key: &str| serde_json::json!({ "key": key });
        assert!(!deliver(&http, &receiver.url(), &alert("east:t1:lean:fired:1"), &metrics, &stop).await, "given up at once");
        let started = std::time::Instant::now();
        assert!(deliver(&http, &receiver.url(), &alert("east:t2:lean:fired:2"), &metrics, &stop).await, "taken after a 500 and a 429");
        assert!(started.elapsed() >= Duration::from_secs(2), "waited between the attempts");
        let keys: Vec<String> = receiver.bodies().iter().map(|b| b["key"].as_str().unwrap().to_string()).collect();
        assert_eq!(keys, ["east:t2:lean:fired:2"]);
        assert_eq!((metrics.standby_alerts.get(), metrics.standby_alerts_refused.get()), (1, 1));
    }
}
