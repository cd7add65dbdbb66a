//! One task per outgoing channel, draining that channel's own durable queue: its pending
//! deliveries in the store's outbox, oldest first. The dispatcher only journals an alert and
//! pokes the channels it is for; it never waits for a channel, so a receiver that takes 30 s per
//! request delays only its own channel — its alerts wait on disk, not in memory, and not in
//! front of anyone else's.
//!
//! A rate-limited channel sends what queued up meanwhile as one digest; deliveries that were
//! deferred (quiet hours, the daily digest, a building's group window) go out together when
//! due. A channel with a failover route hands what it gives up (or would wait for longer than
//! `failover_after`) to that channel, through the dispatcher, which journals the new delivery;
//! the later events of an incident whose alarm it handed over follow the alarm there.
//!
//! When the store cannot take an alert at all (an SD card gone read-only), the dispatcher hands
//! it to the channels in memory instead ([`SinkQueue::send_unjournaled`]): it goes out first, is
//! tried a few times, and is lost with a crash — better than never sent.
//!
//! Invariants: a channel sends its deliveries in journal order (so an incident's events arrive in
//! the order they happened, see [`crate::store::DueDelivery`]); a delivery leaves the queue only
//! once its outcome is recorded.

use super::{CountedAttempts, MadeWay, Sink};
use crate::alert::{Alert, Event};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{DueDelivery, Store, NOT_SENT};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most alerts folded into one digest (and read from the outbox at once).
const DIGEST_MAX: usize = 50;
/// How often an idle channel looks at its queue without being poked (deferred deliveries
/// falling due, failover deliveries added).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Alerts the store could not take that a channel holds in memory at most; more are dropped
/// and counted as failed deliveries.
const UNJOURNALED_MAX: usize = 256;
/// How often a channel tries an alert it holds only in memory before it gives it up.
const UNJOURNALED_ATTEMPTS: u32 = 5;

/// A running channel, by name, and how to tell it there is work.
#[derive(Debug, Clone)]
pub struct SinkQueue {
    pub name: String,
    pub wake: Arc<Notify>,
    unjournaled: mpsc::Sender<Alert>,
}

impl SinkQueue {
    /// Hands the channel an alert the store could not journal; `false` if the channel already
    /// holds [`UNJOURNALED_MAX`] of them (or is gone).
    pub fn send_unjournaled(&self, alert: Alert) -> bool {
        self.unjournaled.try_send(alert).is_ok()
    }
}

/// What every channel task works with.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    /// For deferred deliveries' times (the demo runs an accelerated one).
    pub clock: Clock,
    /// Cancelled once the dispatcher has stopped: each channel sends what is due, then ends.
    pub closing: CancellationToken,
}

/// Where a sink's alerts go when it fails or is throttled too long (`[alerts.failover]`).
#[derive(Debug, Clone)]
pub struct Failover {
    /// The channel that takes over.
    pub to: String,
    /// A rate-limit wait longer than this hands the alerts over instead of waiting.
    pub after: Duration,
    /// To the dispatcher, which journals the new delivery and pokes that channel.
    pub handoffs: mpsc::UnboundedSender<Handoff>,
}

/// An alert a channel gave up, for its failover channel.
#[derive(Debug)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    pub alert_id: i64,
    pub alert: Arc<Alert>,
}

/// An outcome the store did not take: kept here so the delivery is not sent again meanwhile.
type Unrecorded = HashMap<i64, (bool, Option<String>)>;

/// Runs `sink` in its own task, draining its queue in the outbox until `closing`.
pub fn spawn_sink<S: Sink>(mut sink: S, context: SinkContext, failover: Option<Failover>) -> (SinkQueue, JoinHandle<()>) {
    let name = sink.name();
    let wake = Arc::new(Notify::new());
    let (unjournaled, mut unjournaled_in) = mpsc::channel(UNJOURNALED_MAX);
    let queue = SinkQueue { name: name.clone(), wake: wake.clone(), unjournaled };
    let task = tokio::spawn(async move {
        let SinkContext { metrics, store, clock, closing } = context;
        let idle = IDLE_LOOK.div_f64(clock.speed().max(1.0)).max(Duration::from_millis(20));
        let mut unrecorded = Unrecorded::new();
        let mut followed = HashSet::new();
        let mut yielded_once = HashSet::new();
        let mut in_memory = InMemory::default();
        loop {
            while let Ok(alert) = unjournaled_in.try_recv() {
                in_memory.pending.push_back((alert, 0));
            }
            if !in_memory.pending.is_empty() && in_memory.send_next(&mut sink, &name, &metrics).await {
                continue;
            }
            retry_records(&store, &name, &mut unrecorded).await;
            let due = match store.due_deliveries(&name, clock.now(), DIGEST_MAX).await {
                Ok(due) => due.into_iter().filter(|d| !unrecorded.contains_key(&d.alert_id)).collect::<Vec<_>>(),
                Err(error) => {
                    // Logged at most once a minute with the store's other failures (a stalled card
                    // fails every look).
                    store.report_failure("reading a channel's queue (its journaled alerts wait)", &error);
                    Vec::new()
                }
            };
            yielded_once.retain(|id| due.iter().any(|d| d.alert_id == *id));
            let due = match &failover {
                Some(failover) => follow_failover(&store, &metrics, &name, failover, due, &mut followed, &mut unrecorded).await,
                None => due,
            };
            let due = drop_answered_reminders(&store, &name, due, &mut unrecorded).await;
            let due = drop_superseded(&store, &name, due, &mut unrecorded).await;
            if due.is_empty() {
                if closing.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    Some(alert) = unjournaled_in.recv() => in_memory.pending.push_back((alert, 0)),
                    _ = tokio::time::sleep(idle) => {}
                    _ = closing.cancelled() => {}
                }
                continue;
            }
            let Sent { batch, outcome, uncounted, yielded } =
                send_next(&mut sink, (&store, &clock), &metrics, (&name, &wake), failover.as_ref(), due, &yielded_once).await;
            if yielded {
                // Still pending, its attempts counted: it goes on after the red alarm. Once per
                // run, so that a red this channel does not send next cannot hold it for ever.
                // (Nothing at all when the channel stopped waiting for its rate limit to look
                // at what arrived meanwhile.)
                yielded_once.extend(batch.iter().map(|d| d.alert_id));
                continue;
            }
            let attempts = u32::from(uncounted);
            let error = outcome.err().map(|e| format!("{e:#}"));
            let label = Metrics::sink(&name);
            for DueDelivery { alert_id, alert, .. } in batch {
                if let Some(error) = &error {
                    metrics.alert_delivery_failures.get_or_create(&label).inc();
                    tracing::error!(sink = %name, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, error = %error, failover = failover.as_ref().map(|f| f.to.as_str()), "alert not delivered");
                } else {
                    metrics.alerts_delivered.get_or_create(&label).inc();
                }
                if let Err(e) = store.mark_delivery(alert_id, &name, error.is_none(), attempts, error.clone()).await {
                    tracing::error!(sink = %name, alert_id, error = %format!("{e:#}"), "delivery outcome not recorded; tried again before the next delivery");
                    unrecorded.insert(alert_id, (error.is_none(), error.clone()));
                }
                if let (Some(failover), Some(_)) = (&failover, &error) {
                    let handoff = Handoff { from: name.clone(), to: failover.to.clone(), alert_id, alert: Arc::new(alert) };
                    if failover.handoffs.send(handoff).is_err() {
                        tracing::error!(sink = %name, to = %failover.to, "failover channel gone; the alert is not handed over");
                    }
                }
            }
        }
        sink.finish().await;
    });
    (queue, task)
}

/// An incident whose alarm this channel failed and handed to its failover: its later events
/// follow it there, so that the people who got the alarm also hear it rise, be reminded and
/// clear. A clear goes only there when this channel delivered none of the incident's events (an
/// outside tester's robot group was told "cleared" of an alarm it never saw, while the phones
/// that got the alarm never heard it was over). Each delivery is looked at once per run
/// (`followed`); what is left to send here is returned.
async fn follow_failover(
    store: &Store,
    metrics: &Metrics,
    name: &str,
    failover: &Failover,
    due: Vec<DueDelivery>,
    followed: &mut HashSet<i64>,
    unrecorded: &mut Unrecorded,
) -> Vec<DueDelivery> {
    followed.retain(|id| due.iter().any(|d| d.alert_id == *id));
    let mut here = Vec::with_capacity(due.len());
    // Incidents with an earlier event still pending here: how that one goes is not known yet,
    // so their later ones are looked at once it has gone (the queue is in journal order).
    let mut pending_before = HashSet::new();
    for delivery in due {
        let Some(incident) = delivery.alert.incident_id else {
            here.push(delivery);
            continue;
        };
        if !pending_before.insert(incident) || delivery.alert.event == Event::Fired || !followed.insert(delivery.alert_id) {
            here.push(delivery);
            continue;
        }
        let so_far = match store.incident_so_far_on(delivery.alert_id, name, &delivery.alert, incident).await {
            Ok(so_far) => so_far,
            Err(error) => {
                store.report_failure("reading where an incident's alarm went (its later events go here only)", &error);
                here.push(delivery);
                continue;
            }
        };
        if !so_far.failed {
            here.push(delivery);
            continue;
        }
        let DueDelivery { alert_id, alert, .. } = &delivery;
        let handoff = Handoff { from: name.to_string(), to: failover.to.clone(), alert_id: *alert_id, alert: Arc::new(alert.clone()) };
        if failover.handoffs.send(handoff).is_err() {
            tracing::error!(sink = %name, to = %failover.to, "failover channel gone; the incident's later event is not handed over");
        }
        if alert.event != Event::Cleared || so_far.delivered {
            here.push(delivery);
            continue;
        }
        let reason = format!("not sent here: the incident's alarm went to `{}`, and its clear followed it there", failover.to);
        tracing::info!(sink = %name, to = %failover.to, rule = %alert.rule, sensor = %alert.sensor, incident, "a clear of an alarm this channel never delivered goes where the alarm went");
        // Not delivered here, as its alarm was not: the channel's accounts count it so.
        metrics.alert_delivery_failures.get_or_create(&Metrics::sink(name)).inc();
        if store.mark_delivery(*alert_id, name, false, 0, Some(reason.clone())).await.is_err() {
            unrecorded.insert(*alert_id, (false, Some(reason)));
        }
    }
    here
}

/// Leaves out of `due` the reminders ("not accepted yet") of incidents someone has accepted
/// since they were journaled: a reminder that waited behind a robot's limit or a slow receiver
/// told the group, minutes after 王芳 accepted, that nobody had (an outside tester). Each is
/// recorded as not sent, and why.
async fn drop_answered_reminders(store: &Store, name: &str, due: Vec<DueDelivery>, unrecorded: &mut Unrecorded) -> Vec<DueDelivery> {
    let mut still_due = Vec::with_capacity(due.len());
    for delivery in due {
        let answered = match (delivery.alert.event, delivery.alert.incident_id) {
            (Event::Reminder, Some(incident)) => match store.incident_state(incident).await {
                Ok(state) => state.filter(|state| *state != crate::dispatch::incident::State::Open),
                Err(error) => {
                    store.report_failure("reading whether a reminder's incident was accepted (it is sent)", &error);
                    None
                }
            },
            _ => None,
        };
        let Some(state) = answered else {
            still_due.push(delivery);
            continue;
        };
        let reason = format!("{NOT_SENT}incident #{} was {state} before its reminder could go", delivery.alert.incident_id.unwrap_or_default());
        tracing::info!(sink = %name, incident = ?delivery.alert.incident_id, "a reminder of an incident accepted meanwhile is not sent");
        if store.mark_delivery(delivery.alert_id, name, false, 0, Some(reason.clone())).await.is_err() {
            unrecorded.insert(delivery.alert_id, (false, Some(reason)));
        }
    }
    still_due
}

/// Leaves out of `due` the alarms whose incident has a later event at least as bad due on this
/// channel ([`Store::superseded_on`]): a slow receiver got an orange five times, 26 s in all,
/// while its house's red waited behind it, and a receiver back from failing got the orange and
/// the red in the same second (an outside tester). The later one goes in its place. Each is
/// recorded as not sent, and why.
async fn drop_superseded(store: &Store, name: &str, due: Vec<DueDelivery>, unrecorded: &mut Unrecorded) -> Vec<DueDelivery> {
    let mut still_due = Vec::with_capacity(due.len());
    for delivery in due {
        let superseded = store.superseded_on(name, delivery.alert_id, &delivery.alert).await.unwrap_or_else(|error| {
            store.report_failure("reading whether an alarm's incident has a later event due (it is sent)", &error);
            false
        });
        if !superseded {
            still_due.push(delivery);
            continue;
        }
        let reason = format!("{NOT_SENT}a later event of incident #{} at least as bad goes in its place", delivery.alert.incident_id.unwrap_or_default());
        tracing::info!(sink = %name, incident = ?delivery.alert.incident_id, event = %delivery.alert.event, "an alarm whose incident has a later event due is not sent: that one goes instead");
        if store.mark_delivery(delivery.alert_id, name, false, 0, Some(reason.clone())).await.is_err() {
            unrecorded.insert(delivery.alert_id, (false, Some(reason)));
        }
    }
    still_due
}

/// Sends the next message from `due` (the channel's oldest due deliveries): one alert, the
/// deferred ones that fell due together, or — behind a rate limit — everything that queued up
/// while waiting, as one digest. A red alarm goes ahead on the sends a rate limit keeps for
/// reds ([`red_ahead`]); the wait for the limit ends early when the channel is woken, so that a
/// red arriving meanwhile is looked at. Returns what was sent and how it went.
async fn send_next<S: Sink>(
    sink: &mut S,
    (store, clock): (&Store, &Clock),
    metrics: &Metrics,
    (name, wake): (&str, &Notify),
    failover: Option<&Failover>,
    due: Vec<DueDelivery>,
    yielded_once: &HashSet<i64>,
) -> Sent {
    let ahead = red_ahead(sink, &due);
    let batch = if !ahead.is_empty() {
        let red = &due[ahead[ahead.len() - 1]].alert;
        tracing::info!(sink = %name, rule = %red.rule, sensor = %red.sensor, "rate limited; a red alarm goes ahead on the sends kept for reds");
        due.into_iter().enumerate().filter(|(i, _)| ahead.contains(i)).map(|(_, delivery)| delivery).collect()
    } else {
        let wait = sink.wait(due[0].alert.is_red());
        if let Some(failover) = failover.filter(|f| wait > f.after) {
            let outcome = Err(anyhow::anyhow!("rate limited for {} s; handed to `{}`", wait.as_secs(), failover.to));
            return Sent { batch: due, outcome, uncounted: false, yielded: false };
        }
        if !wait.is_zero() {
            tracing::info!(sink = %name, wait_ms = wait.as_millis() as u64, "rate limited; alerts arriving meanwhile go out as one digest");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Something new: a red alarm among it may go ahead.
                _ = wake.notified() => return Sent { batch: Vec::new(), outcome: Ok(()), uncounted: false, yielded: true },
            }
            match store.due_deliveries(name, clock.now(), DIGEST_MAX).await {
                Ok(more) if !more.is_empty() => more,
                _ => due,
            }
        } else if due[0].deferred {
            due.into_iter().take_while(|d| d.deferred).collect()
        } else {
            due.into_iter().take(1).collect()
        }
    };
    let (outcome, uncounted, yielded) = match (batch.as_slice(), sink.counted_attempts()) {
        ([one], Some(counted)) => {
            match deliver_counted(sink, (store, clock), metrics, (name, wake), failover, (one, !yielded_once.contains(&one.alert_id)), counted).await {
                Counted::Done(outcome) => (outcome, false, false),
                Counted::Yielded => (Ok(()), false, true),
            }
        }
        ([one], None) if yielded_once.contains(&one.alert_id) => (sink.deliver(&one.alert).await, true, false),
        ([one], None) => match sink.deliver_making_way(&one.alert, RedBehind::of(store, *clock, name, one)).await {
            Err(error) if error.is::<MadeWay>() => (Ok(()), true, true),
            outcome => (outcome, true, false),
        },
        (many, _) => (sink.deliver_many(&many.iter().map(|d| &d.alert).collect::<Vec<_>>()).await, true, false),
    };
    let batch = match sink.counted_attempts() {
        Some(counted) if batch.len() > 1 && outcome.is_err() => digest_tried_again_later(store, name, batch, counted).await,
        _ => batch,
    };
    Sent { batch, outcome, uncounted, yielded }
}

/// A digest the receiver did not take, of a sink whose attempts the channel counts: each of its
/// alerts has had one attempt more (counted in the store, so a restart goes on from it); those
/// with attempts left stay pending and go out in the next digest after the backoff, as a single
/// alert's attempts do ([`deliver_counted`]). Returns the ones that used up their attempts (they
/// fail). Before, a digest had three attempts within 1.5 s, and every alarm in it was lost to a
/// robot that failed for 2 s (an outside tester).
async fn digest_tried_again_later(store: &Store, name: &str, batch: Vec<DueDelivery>, counted: CountedAttempts) -> Vec<DueDelivery> {
    let CountedAttempts { in_all, in_all_for_red, mut backoff } = counted;
    let (spent, left): (Vec<DueDelivery>, Vec<DueDelivery>) =
        batch.into_iter().partition(|d| d.attempts + 1 >= if is_red_alarm(&d.alert) { in_all_for_red } else { in_all });
    for delivery in &left {
        if let Err(error) = store.count_attempt(delivery.alert_id, name).await {
            store.report_failure("counting a delivery attempt", &error);
        }
    }
    if let Some(fewest) = left.iter().map(|d| d.attempts + 1).min() {
        let mut delay = backoff.next_delay();
        for _ in 1..fewest {
            delay = backoff.next_delay();
        }
        tracing::warn!(sink = %name, alerts = left.len(), attempt = fewest, retry_in_ms = delay.as_millis() as u64, "digest not delivered; its alerts go again in the next one");
        tokio::time::sleep(delay).await;
    }
    spent
}

/// What of `due` goes ahead of the rest while a rate limit holds back all but reds: the first
/// alert about a red incident, with what of its own incident is pending before it (an
/// incident's events keep their order; several go as one digest), when the sink may send a red
/// now. Positions in `due`, in order; empty when nothing goes ahead. A burst of clears and
/// notices that used up a robot's minute held a red back for up to 60 s (an outside tester).
fn red_ahead<S: Sink>(sink: &S, due: &[DueDelivery]) -> Vec<usize> {
    if due.first().is_none_or(|head| head.alert.is_red()) || sink.wait(false).is_zero() || !sink.wait(true).is_zero() {
        return Vec::new();
    }
    let Some(red) = due.iter().position(|d| !d.deferred && d.alert.is_red()) else { return Vec::new() };
    let same_incident = |d: &DueDelivery| d.alert.rule == due[red].alert.rule && d.alert.sensor == due[red].alert.sensor;
    let ahead: Vec<usize> = (0..=red).filter(|&i| same_incident(&due[i])).collect();
    // A deferred event of the incident (quiet hours) keeps it where it is.
    if ahead.iter().any(|&i| due[i].deferred) {
        return Vec::new();
    }
    ahead
}

/// What one send did: the deliveries it covered, how it went, whether its attempt is still
/// to be counted in the store (a sink that retries by itself; the channel counted the others'
/// attempts as it made them), and whether it stopped between attempts for a red alarm (the
/// delivery stays pending, its outcome means nothing).
struct Sent {
    batch: Vec<DueDelivery>,
    outcome: anyhow::Result<()>,
    uncounted: bool,
    yielded: bool,
}

/// How the attempts at one delivery ended.
enum Counted {
    Done(anyhow::Result<()>),
    /// Stopped after a failed attempt: a red alarm waits behind it on this channel, or a later
    /// event of its incident goes in its place.
    Yielded,
}

fn is_red_alarm(alert: &Alert) -> bool {
    alert.severity == gridwatch_rules::Severity::Danger && matches!(alert.event, Event::Fired | Event::Changed)
}

/// Asks whether a red alarm other than the delivery being retried is the next this channel would
/// send: a delivery being retried makes way for it (a red waited 60 s behind two clears a
/// refusing robot made the channel retry; an outside tester).
#[derive(Debug)]
pub struct RedBehind {
    store: Store,
    clock: Clock,
    channel: String,
    /// The delivery being retried; none when it is a red alarm itself (it makes way for nothing).
    current: Option<i64>,
}

impl RedBehind {
    fn of(store: &Store, clock: Clock, channel: &str, current: &DueDelivery) -> RedBehind {
        let current = (!is_red_alarm(&current.alert)).then_some(current.alert_id);
        RedBehind { store: store.clone(), clock, channel: channel.to_string(), current }
    }

    /// Whether a red alarm waits behind the delivery being retried.
    pub async fn waits(&self) -> bool {
        let Some(current) = self.current else { return false };
        match self.store.due_deliveries(&self.channel, self.clock.now(), 1).await {
            Ok(next) => next.first().is_some_and(|next| next.alert_id != current && is_red_alarm(&next.alert)),
            Err(_) => false,
        }
    }
}

/// Makes the attempts at `one` that its sink leaves to the channel, each counted in the store
/// before it is made: a restart goes on from the count, so a receiver that takes the POST but
/// answers after the timeout, together with power cuts, gets at most `in_all` copies and the
/// channel's next alerts their turn (`in_all_for_red` at a red alarm).
async fn deliver_counted<S: Sink>(
    sink: &mut S,
    (store, clock): (&Store, &Clock),
    metrics: &Metrics,
    (name, wake): (&str, &Notify),
    failover: Option<&Failover>,
    (one, may_yield): (&DueDelivery, bool),
    counted: CountedAttempts,
) -> Counted {
    let CountedAttempts { in_all, in_all_for_red, mut backoff } = counted;
    let in_all = if is_red_alarm(&one.alert) { in_all_for_red } else { in_all };
    let mut made = one.attempts;
    // The waits go on from where the attempts so far left them: a restart neither repeats the
    // short first ones nor skips a wait (with kills every 3 s, a webhook's eight attempts were
    // spent in 7 s of a 25 s outage and the alarm never reached it; an outside tester).
    for _ in 1..made {
        backoff.next_delay();
    }
    let mut last_error = None;
    while made < in_all {
        if made > 0 {
            // Throttled for longer than its failover channel would wait: handed over now.
            if failover.is_some_and(|f| sink.wait(one.alert.is_red()) > f.after) {
                break;
            }
            if gives_way(store, *clock, name, (one, may_yield), made).await {
                return Counted::Yielded;
            }
            let delay = backoff.next_delay();
            if let Some(error) = last_error.as_ref() {
                metrics.alert_delivery_retries.get_or_create(&Metrics::sink(name)).inc();
                tracing::warn!(sink = %name, attempt = made, retry_in_ms = delay.as_millis() as u64, error = %format!("{error:#}"), "delivery attempt failed");
            }
            // Woken meanwhile (something new for this channel), it looks again at once: a red
            // waited 6 s while the channel sat out an orange's backoff (an outside tester). A red
            // that cannot go first (an earlier event of its own incident is this one, or this is
            // a red too) has this one tried again now rather than after the wait: the receiver
            // may be back (a red came 18 s after its receiver was; another tester).
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = wake.notified() => {
                        if gives_way(store, *clock, name, (one, may_yield), made).await {
                            return Counted::Yielded;
                        }
                        if store.red_due_on(name, one.alert_id).await.unwrap_or(false) {
                            break;
                        }
                    }
                }
            }
        }
        if let Err(error) = store.count_attempt(one.alert_id, name).await {
            // Sent uncounted rather than not at all.
            store.report_failure("counting a delivery attempt", &error);
        }
        made += 1;
        match sink.attempt(&one.alert).await {
            Ok(()) => return Counted::Done(Ok(())),
            Err(error) => last_error = Some(error),
        }
    }
    Counted::Done(Err(match last_error {
        Some(error) => error.context(format!("failed {made} times")),
        None => anyhow::anyhow!("given up: {made} attempts were made before a restart (max_attempts {in_all})"),
    }))
}

/// Whether the delivery being tried (`one`, `made` attempts so far) stops to make way: a later
/// event of its incident, at least as bad, goes in its place ([`drop_superseded`]), or it was
/// recorded as not sent meanwhile (folded into its house's red) — its attempts end; or, when it
/// `may_yield`, a red alarm waits behind it — it goes first, this one's attempts go on after it.
async fn gives_way(store: &Store, clock: Clock, name: &str, (one, may_yield): (&DueDelivery, bool), made: u32) -> bool {
    if store.superseded_on(name, one.alert_id, &one.alert).await.unwrap_or(false) || !store.delivery_pending(one.alert_id, name).await.unwrap_or(true) {
        tracing::info!(sink = %name, alert_id = one.alert_id, attempt = made, "no longer to be sent (a later event of its incident goes in its place, or it was folded): its attempts end");
        return true;
    }
    if may_yield && RedBehind::of(store, clock, name, one).waits().await {
        tracing::info!(sink = %name, alert_id = one.alert_id, attempt = made, "a red alarm waits: it goes first, this delivery's attempts go on after it");
        return true;
    }
    false
}

/// Alerts the store could not take, held by their channel in memory with the attempts so far.
#[derive(Debug, Default)]
struct InMemory {
    pending: std::collections::VecDeque<(Alert, u32)>,
    /// After a failed attempt, the next waits until then.
    retry_at: Option<tokio::time::Instant>,
}

impl InMemory {
    /// Sends the oldest held alert unless a failed attempt asks to wait; whether it tried.
    async fn send_next<S: Sink>(&mut self, sink: &mut S, name: &str, metrics: &Metrics) -> bool {
        if self.retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            return false;
        }
        let Some((alert, attempts)) = self.pending.pop_front() else { return false };
        let label = Metrics::sink(name);
        match sink.deliver(&alert).await {
            Ok(()) => {
                self.retry_at = None;
                metrics.alerts_delivered.get_or_create(&label).inc();
                tracing::warn!(sink = %name, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "alert sent from memory (the store could not journal it)");
            }
            Err(error) if attempts + 1 < UNJOURNALED_ATTEMPTS => {
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(2u64.pow(attempts)));
                tracing::warn!(sink = %name, rule = %alert.rule, sensor = %alert.sensor, error = %format!("{error:#}"), "alert held in memory not delivered; tried again");
                self.pending.push_front((alert, attempts + 1));
            }
            Err(error) => {
                self.retry_at = None;
                metrics.alert_delivery_failures.get_or_create(&label).inc();
                tracing::error!(sink = %name, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, error = %format!("{error:#}"), attempts = UNJOURNALED_ATTEMPTS, "alert held in memory given up");
            }
        }
        true
    }
}

/// Records the outcomes the store did not take before.
async fn retry_records(store: &Store, name: &str, unrecorded: &mut Unrecorded) {
    let mut recorded = Vec::new();
    for (&alert_id, (delivered, error)) in unrecorded.iter() {
        if store.mark_delivery(alert_id, name, *delivered, 0, error.clone()).await.is_ok() {
            recorded.push(alert_id);
        }
    }
    for alert_id in recorded {
        unrecorded.remove(&alert_id);
    }
}

/// The running channels, each spawned with its failover route (`[alerts.failover]`).
#[derive(Debug)]
pub struct SinkSet {
    pub queues: Vec<SinkQueue>,
    pub tasks: Vec<JoinHandle<()>>,
    context: SinkContext,
    failover: std::collections::BTreeMap<String, String>,
    failover_after: Duration,
    handoffs: mpsc::UnboundedSender<Handoff>,
}

impl SinkSet {
    /// An empty set, and the receiving end of its handoffs (for the dispatcher).
    pub fn new(context: SinkContext, alerts: &crate::config::AlertsConfig) -> (SinkSet, mpsc::UnboundedReceiver<Handoff>) {
        let (handoffs, received) = mpsc::unbounded_channel();
        let set =
            SinkSet { queues: Vec::new(), tasks: Vec::new(), context, failover: alerts.failover.clone(), failover_after: alerts.failover_after, handoffs };
        (set, received)
    }

    /// Spawns `sink`, routed to its failover channel if it has one.
    pub fn add<S: Sink>(&mut self, sink: S) {
        let failover = self.failover.get(&sink.name()).map(|to| Failover { to: to.clone(), after: self.failover_after, handoffs: self.handoffs.clone() });
        let (queue, task) = spawn_sink(sink, self.context.clone(), failover);
        self.queues.push(queue);
        self.tasks.push(task);
    }
}
