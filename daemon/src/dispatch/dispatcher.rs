//! The dispatcher: for each alert, updates its incident (the truth of what is firing), names the
//! people on duty, arms the incident's escalation clocks, journals it with a pending delivery
//! per channel, and pokes those channels ([`crate::sinks::channel`]). Every second it also journals the
//! reminders and escalations that fell due.
//!
//! It never waits for a channel: only the store can hold it up (and with it the pipeline, the
//! one backpressure the alarm path has — a full store).
//!
//! Invariants: an event the incident store already reflects (a repeat, judged again after a
//! crash) is not sent; a `fired` for an incident still firing goes out as `changed`; the
//! pipeline's alerts are counted as journaled (`journaled`) only once in the store, so the rule
//! state is never saved ahead of the journal.

use crate::alert::{Alert, Audience, Event};
use crate::dispatch::policy::Progress;
use crate::metrics::Metrics;
use crate::sinks::channel::{Handoff, SinkQueue};
use crate::store::{Applied, Destination, LadderMove, LadderSent, SentFromMemory, Store};
use gridwatch_rules::Severity;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::{mpsc, watch};

/// How often the dispatcher looks for due reminders and escalations.
const ESCALATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The rule engine's alerts, and how many of them are journaled so far: the pipeline saves the
/// rule state only once everything it judged before is in the store.
#[derive(Debug)]
pub struct Judged {
    pub alerts: mpsc::Receiver<Alert>,
    pub journaled: watch::Sender<u64>,
}

/// What the dispatcher works with besides its queues.
#[derive(Debug)]
pub struct DispatcherSetup {
    pub store: Store,
    /// Silences from the configuration (the store holds the CLI's).
    pub silences: Vec<crate::dispatch::silence::Silence>,
    pub metrics: std::sync::Arc<Metrics>,
    pub flap_window_ms: i64,
    /// See `AlertsConfig::group_window`.
    pub group_window_ms: i64,
    pub links: Option<crate::links::WorkerLinks>,
    pub dispatch: crate::dispatch::InForce,
    pub clock: crate::clock::Clock,
    /// Alerts channels gave up, for their failover channels.
    pub handoffs: mpsc::UnboundedReceiver<Handoff>,
    /// Which sensor buses are down: no-data alarms of the sensors on them are held back.
    pub buses: Option<std::sync::Arc<crate::sources::buses::Buses>>,
    /// The rule engine's alerts (the other alerts, the daemon's own, come on `alerts`).
    pub judged: Option<Judged>,
    /// Tilt boxes asked to report faster while their house is at yellow or above.
    pub report_rates: Option<std::sync::Arc<crate::report_rate::ReportRates>>,
}

/// Handles alerts from `alerts` and from the rule engine until both are closed; the channels
/// are told to finish by the caller once this returns.
pub async fn run_dispatcher(mut alerts: mpsc::Receiver<Alert>, sinks: Vec<SinkQueue>, setup: DispatcherSetup) {
    let mut handoffs_and_judged = (setup.handoffs, setup.judged);
    let mut dispatcher = Dispatcher {
        names: sinks.iter().map(|s| s.name.clone()).collect(),
        sinks,
        store: setup.store,
        silences: setup.silences,
        metrics: setup.metrics,
        flap_window_ms: setup.flap_window_ms,
        group_window_ms: setup.group_window_ms,
        links: setup.links,
        dispatch: setup.dispatch,
        clock: setup.clock,
        buses: setup.buses,
        report_rates: setup.report_rates,
        building_sent: HashMap::new(),
        held_back: HeldBack::default(),
        ladders: Ladders::default(),
        silenced_alarms: HashMap::new(),
    };
    dispatcher.take_over_outbox();
    dispatcher.take_over_sent_from_memory();
    dispatcher.take_over_silenced_alarms();
    // Before the escalator's first look and before any worker's step (they wait for it).
    if let Err(error) = dispatcher.record_unrecorded().await {
        dispatcher.store.report_failure("recording what earlier runs kept beside the card", &error);
    }
    dispatcher.store.kept_steps_recorded();
    // An accelerated clock (the demo) looks as often in its own time as the real one does.
    let clock = dispatcher.clock;
    let mut check = tokio::time::interval(ESCALATION_CHECK.div_f64(clock.speed().max(1.0)).max(std::time::Duration::from_millis(20)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alerts_open = true;
    loop {
        let (handoffs, judged) = &mut handoffs_and_judged;
        if !alerts_open && judged.is_none() {
            break;
        }
        tokio::select! {
            alert = alerts.recv(), if alerts_open => match alert {
                Some(alert) => dispatcher.handle(alert).await,
                None => alerts_open = false,
            },
            alert = next_judged(judged) => match alert {
                Some(alert) => {
                    dispatcher.handle(alert).await;
                    if let Some(judged) = judged {
                        judged.journaled.send_modify(|count| *count += 1);
                    }
                }
                None => *judged = None,
            },
            Some(handoff) = handoffs.recv() => dispatcher.hand_over(handoff).await,
            _ = check.tick() => {
                dispatcher.restamp_unset_times().await;
                dispatcher.keep_clock_steps().await;
                dispatcher.send_due_escalations().await;
                dispatcher.tell_alarms_silences_kept().await;
                dispatcher.tell_owed_alarms().await;
                count_open_incidents(&dispatcher.store, &dispatcher.metrics).await;
                let _ = dispatcher.store.off_thread(|store| Ok(store.try_restore_reserve())).await;
            }
        }
    }
}

/// The rule engine's next alert; never ready once that channel is gone.
async fn next_judged(judged: &mut Option<Judged>) -> Option<Alert> {
    match judged {
        Some(judged) => judged.alerts.recv().await,
        None => std::future::pending().await,
    }
}

struct Dispatcher {
    sinks: Vec<SinkQueue>,
    names: Vec<String>,
    store: Store,
    silences: Vec<crate::dispatch::silence::Silence>,
    metrics: std::sync::Arc<Metrics>,
    flap_window_ms: i64,
    group_window_ms: i64,
    links: Option<crate::links::WorkerLinks>,
    dispatch: crate::dispatch::InForce,
    clock: crate::clock::Clock,
    buses: Option<std::sync::Arc<crate::sources::buses::Buses>>,
    report_rates: Option<std::sync::Arc<crate::report_rate::ReportRates>>,
    /// Building -> when its last alarm went out on its own: the building's next alarms in the
    /// window after it wait and go out together.
    building_sent: HashMap<String, i64>,
    held_back: HeldBack,
    /// The escalation ladders' ages, measured here on the monotonic clock.
    ladders: Ladders,
    /// (rule, sensor) -> its latest alarm a silence kept from people, until it clears or is
    /// told: told when the silence ends while it still fires.
    silenced_alarms: HashMap<(String, String), Alert>,
}

/// How often the ladders' ages are saved (a crash loses at most this much of their progress).
const LADDER_AGES_SAVED_EVERY_MS: i64 = 60_000;

/// Escalation ladders' ages in memory: each look adds the monotonic time since the last one, so
/// a step of the wall clock moves no ladder; saved every minute and with each step.
#[derive(Debug, Default)]
struct Ladders {
    /// Incident -> when its ladder was armed, and how long it has run since. A ladder armed
    /// again (fired again after it was resolved) starts over from the store's age.
    ages: HashMap<i64, (i64, i64)>,
    /// Elapsed time (`Clock::elapsed_ms`) at the last look and the last save.
    last_look: Option<i64>,
    last_saved: i64,
    /// Incident -> where its ladder stands after steps the store could not record (they were
    /// sent from memory).
    unrecorded: HashMap<i64, crate::store::LadderMove>,
    /// Ladders of alarms the store could not record at all (it was read-only when they fired):
    /// by (rule, sensor), each under an id of its own below zero, run here until the alarm
    /// clears or every step is sent. Their messages carry no link (there is no incident page).
    in_memory: HashMap<(String, String), crate::store::DueEscalation>,
    next_in_memory_id: i64,
    /// Alarms (rule, sensor) that fired while the store could not record them: their clear is
    /// news, though the store knows no incident it would close.
    unrecorded_alarms: std::collections::HashSet<(String, String)>,
    /// The ladders last read from the store, run on while it cannot be read (a stalled card).
    last_read: Vec<crate::store::DueEscalation>,
    /// Rule events and ladder steps the store could not record (they went out from memory),
    /// oldest first: recorded in order once it writes again, before any later event, and not
    /// sent again.
    unrecorded_events: std::collections::VecDeque<SentFromMemory>,
}

/// Names the people on duty for `alert`'s grid at `at` as its recipients, and their phones for
/// @-mentions.
fn name_on_duty(alert: &mut Alert, dispatch: &crate::dispatch::Dispatch, at: i64) {
    let people = dispatch.on_duty(alert.grid.as_deref(), at);
    alert.recipients = people.iter().map(|m| m.name.clone()).collect();
    alert.mentions = people.iter().filter(|m| !m.phone.is_empty()).map(|m| m.phone.clone()).collect();
}

/// The escalation ladder a grid alarm arms at `armed_ms`: (grid, armed at, first step due);
/// none for installers' alarms or a severity without a policy.
fn ladder_of(dispatch: &crate::dispatch::Dispatch, alert: &Alert, armed_ms: i64) -> Option<(Option<String>, i64, i64)> {
    (alert.audience == Audience::Grid)
        .then(|| dispatch.first_due(alert.severity.as_str(), armed_ms).map(|first_due| (alert.grid.clone(), armed_ms, first_due)))?
}

/// Rule events and ladder steps kept to record once the store writes again; past that the oldest
/// are forgotten (the store then misses their incidents' history, nothing more).
const UNRECORDED_EVENTS_MAX: usize = 10_000;

impl Dispatcher {
    /// Counts what the outbox still holds from before a restart (the channels send it first:
    /// it is the oldest in their queues).
    fn take_over_outbox(&self) {
        match self.store.pending_delivery_counts() {
            Ok(counts) => {
                let mine: Vec<_> = counts.iter().filter(|(sink, _)| self.names.contains(sink)).collect();
                let deliveries: u64 = mine.iter().map(|(_, count)| **count).sum();
                if deliveries > 0 {
                    tracing::warn!(deliveries, "sending alerts left undelivered before the restart");
                }
                for (sink, count) in mine {
                    self.metrics.take_on_deliveries([sink], *count);
                }
            }
            Err(error) => tracing::error!(error = %format!("{error:#}"), "cannot count the outbox"),
        }
    }

    /// Once the clock is set, re-stamps what was stamped before it was ([`crate::store::Restamped`]):
    /// the incidents people open and the rule events later reminders quote.
    async fn restamp_unset_times(&self) {
        match self.store.restamp_unset_times().await {
            Ok(restamped) if restamped != crate::store::Restamped::default() => tracing::info!(
                alert_events = restamped.alert_events,
                incident_events = restamped.incident_events,
                "the clock is set: what was stamped before it was is re-stamped"
            ),
            Ok(_) => {}
            Err(error) => self.store.report_failure("re-stamping what was stamped before the clock was set", &error),
        }
    }

    /// Once the clock is set: keeps the step links signed before it are read through
    /// ([`crate::link_clock`]), so they stay valid after a restart too.
    async fn keep_clock_steps(&self) {
        let Some(links) = &self.links else { return };
        links.measure_clock_step(&self.clock);
        let steps = links.clock_steps.take_unsaved();
        if steps.is_empty() {
            return;
        }
        if let Err(error) = self.store.save_clock_steps(steps.clone(), self.clock.now().div_euclid(1000)).await {
            self.store.report_failure("keeping the clock's step for links signed before it was set", &error);
            links.clock_steps.unsaved_back(steps);
        }
    }

    /// Pokes the channels named.
    fn wake(&self, targets: &[String]) {
        for sink in self.sinks.iter().filter(|s| targets.contains(&s.name)) {
            sink.wake.notify_one();
        }
    }

    async fn handle(&mut self, mut alert: Alert) {
        let now = self.clock.now();
        let received = self.clock.elapsed_ms();
        if let Some(rates) = &self.report_rates {
            rates.follow(&alert);
        }
        // The daemon's own alarms are stamped by the box's clock: unknown until it is set.
        if alert.kind == crate::alert::DAEMON_KIND && alert.unset_clock.is_none() && !self.clock.synchronized() {
            alert.stamped_by_unset_clock(received);
        }
        let dispatch = self.dispatch.get();
        if alert.audience == Audience::Grid && alert.event != Event::Cleared {
            // Whose shift it is, by the device's own time while the box's clock is not set (a box
            // days behind named a weekday's grid leader instead of the night shift on duty; an
            // outside tester).
            let shift_time = if !self.clock.synchronized() && alert.at != crate::clock::TIME_UNKNOWN { alert.at_ms } else { now };
            name_on_duty(&mut alert, &dispatch, shift_time);
        }
        // Device alarms are for the installers (their clears too, to the same channels).
        if alert.audience == Audience::Installer {
            let installers = dispatch.roster.installers(alert.grid.as_deref());
            alert.recipients = installers.iter().map(|m| m.name.clone()).collect();
            alert.mentions = installers.iter().filter(|m| !m.phone.is_empty()).map(|m| m.phone.clone()).collect();
        }
        // A silenced alert is journaled (without deliveries) and kept on its incident, not sent,
        // and starts no reminders.
        let mut silenced = match self.silences.iter().find(|s| s.covers(&alert, now)) {
            Some(silence) => Some(silence.clone()),
            None => silence_covering(&self.store, &alert, now).await,
        };
        // An alarm a silence keeps from people is told when the silence ends, unless it cleared
        // (an outside tester: an alarm that began during a silence and went on after it reached
        // nobody, and its clear came out of the blue).
        // Kept in the store too: a restart during the silence must not forget it.
        let silenced_key = (alert.rule.clone(), alert.sensor.clone());
        match &silenced {
            Some(_) if alert.event != Event::Cleared => {
                self.silenced_alarms.insert(silenced_key, alert.clone());
                let kept = alert.clone();
                if let Err(error) = self.store.off_thread(move |store| store.keep_silenced_alarm(&kept)).await {
                    self.store.report_failure("keeping an alarm a silence holds back (a restart before the silence ends would forget it)", &error);
                }
            }
            _ => {
                if self.silenced_alarms.remove(&silenced_key).is_some() {
                    self.forget_silenced_alarm(silenced_key).await;
                }
            }
        }
        // A no-data alarm held back while its bus is down (its clear is held back too); decided
        // here, remembered once the event proves to be news.
        let mut hold = None;
        if silenced.is_none() && alert.no_data {
            let position = self.buses.as_ref().and_then(|b| b.position(&alert.sensor));
            let bus_down = self.buses.as_ref().and_then(|b| b.down_under(&alert.sensor)).map(str::to_string);
            let explained = match (alert.event, bus_down, position) {
                (Event::Cleared, _, Some(sensor)) => self.held_back.holds(&alert.rule, sensor).then(|| "its bus was down".to_string()),
                (_, Some(bus), Some(sensor)) => {
                    hold = Some(sensor);
                    Some(format!("{bus} is down"))
                }
                _ => None,
            };
            silenced = explained.map(|reason| crate::dispatch::silence::Silence::bus_down(&alert.sensor, reason, now));
        }
        // Quiet hours and the daily digest: the alert waits in the outbox (no reminders for it).
        let deferred_until = if silenced.is_none() { dispatch.deferral.not_before(&alert, now) } else { None };
        let grouped_until = if silenced.is_none() && deferred_until.is_none() { self.group(&alert, now) } else { None };
        let escalate = match (&silenced, deferred_until) {
            (None, None) => ladder_of(&dispatch, &alert, now),
            _ => None,
        };
        let addressing = if silenced.is_some() { Addressing::default() } else { address(&alert, &dispatch.roster, &self.names) };
        let targets = addressing.targets.clone();
        // Kept to address a clear the store cannot record to the incident it still holds.
        let clear_addressing = (alert.event == Event::Cleared).then(|| addressing.clone());
        let route = router(addressing, self.links.clone(), self.clock);
        let key = (alert.rule.clone(), alert.sensor.clone());
        // Events the store missed are recorded first: an incident's history stays in order.
        let caught_up = self.record_unrecorded().await;
        let fired_unrecorded = self.ladders.unrecorded_alarms.contains(&key);
        if alert.event == Event::Cleared {
            self.ladders.unrecorded_alarms.remove(&key);
        }
        self.follow_in_memory(&alert);
        let in_memory_ladder = escalate.clone();
        let not_before = deferred_until.or(grouped_until);
        let journaling = crate::store::Journaling { route, not_before_ms: not_before, escalate };
        let applied = match caught_up {
            Ok(()) => self.store.apply_and_journal(&alert, self.flap_window_ms, journaling).await,
            Err(error) => Err(error),
        };
        let alert = match applied {
            Ok((Applied::Repeat(_), _)) if fired_unrecorded => {
                // The store never saw this alarm fire (it could not write then): its clear is
                // news to people all the same.
                match self.journal_alone(alert, unrouted(&targets), not_before, silenced.is_none()).await {
                    Some(journaled) => journaled,
                    None => return,
                }
            }
            Ok((Applied::Repeat(incident), _)) => {
                self.metrics.alert_repeats.inc();
                tracing::info!(
                    rule = %alert.rule,
                    sensor = %alert.sensor,
                    event = %alert.event,
                    incident,
                    "not news to people: its incident holds it already (judged again after a restart), is closed, or was resolved at a worse level; not sent"
                );
                return;
            }
            Ok((_, Some((_, journaled)))) => {
                // A store copied into memory (the card read-only at start) loses what it
                // journals at the next start: kept beside the card, the next run on a writable
                // card records it first, and sends nothing of it again.
                if self.store.is_memory_copy() {
                    self.store.keep_sent_from_memory(&SentFromMemory::Event(Box::new(journaled.clone())));
                }
                journaled
            }
            Ok((_, None)) => return,
            Err(error) => {
                // Without its incident the alert still goes out (journaled on its own), and a
                // new alarm's ladder runs in memory: no incident holds it.
                self.store.report_failure("updating an incident (the alert is sent anyway)", &error);
                self.keep_unrecorded(SentFromMemory::Event(Box::new(alert.clone())));
                if alert.event == Event::Fired {
                    self.ladders.unrecorded_alarms.insert(key);
                    if let Some((grid, armed_ms, first_due_ms)) = in_memory_ladder {
                        self.arm_in_memory(&alert, grid, (armed_ms, received), first_due_ms - armed_ms);
                    }
                }
                let mut alert = alert;
                // A clear of an incident the store holds (it reads, though it cannot write) names
                // that incident and links to its page, like every other clear.
                let firing = match &clear_addressing {
                    Some(_) => {
                        let (rule, sensor) = (alert.rule.clone(), alert.sensor.clone());
                        let read = self.store.off_thread(move |store| store.firing_incident(&rule, &sensor)).await.unwrap_or_else(|error| {
                            self.store.report_failure("reading the incident a clear closes", &error);
                            None
                        });
                        // A stalled card cannot be read either: the ladders read last know it.
                        read.or_else(|| {
                            let of_this =
                                |l: &&crate::store::DueEscalation| l.last_alert.as_ref().is_some_and(|a| a.rule == alert.rule && a.sensor == alert.sensor);
                            self.ladders.last_read.iter().find(of_this).map(|l| l.incident_id)
                        })
                    }
                    None => None,
                };
                let destinations = match (firing, clear_addressing) {
                    (Some(incident), Some(addressing)) => router(addressing, self.links.clone(), self.clock)(&mut alert, incident),
                    _ => unrouted(&targets),
                };
                match self.journal_alone(alert, destinations, not_before, silenced.is_none()).await {
                    Some(journaled) => journaled,
                    None => return,
                }
            }
        };
        // Folded into its house's open alarm: only the console's log has it.
        let targets: Vec<String> = match alert.folded_into {
            Some(into) => {
                // Sent to nobody: it opens no group window for its building (an outside tester's
                // red waited 7 s behind a folded orange).
                if let (None, Some(building)) = (grouped_until, &alert.building) {
                    if self.building_sent.get(building) == Some(&now) {
                        self.building_sent.remove(building);
                    }
                }
                self.metrics.alerts_folded.inc();
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, into, "folded into its house's open alarm: recorded, not sent");
                targets.into_iter().filter(|t| t == crate::sinks::console::NAME).collect()
            }
            None => targets,
        };
        self.metrics.take_on_deliveries(&targets, 1);
        if let Some(sensor) = hold {
            self.held_back.hold(&alert.rule, sensor);
        }
        if alert.event == Event::Cleared && alert.no_data {
            if let Some(sensor) = self.buses.as_ref().and_then(|b| b.position(&alert.sensor)) {
                self.held_back.release(&alert.rule, sensor);
            }
        }
        match (silenced, deferred_until, grouped_until) {
            (Some(silence), _, _) => {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, silence = silence.id, reason = %silence.reason, "alert silenced")
            }
            (None, Some(until), _) => {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, until = %crate::clock::rfc3339(until), "alert deferred (quiet hours or daily digest)")
            }
            (None, None, Some(_)) => {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, building = alert.building.as_deref().unwrap_or("-"), "alert held to go out with the building's other alarms")
            }
            (None, None, None) => self.wake(&targets),
        }
    }

    async fn forget_silenced_alarm(&self, (rule, sensor): (String, String)) {
        if let Err(error) = self.store.off_thread(move |store| store.forget_silenced_alarm(&rule, &sensor)).await {
            self.store.report_failure("forgetting an alarm a silence held back", &error);
        }
    }

    /// The alarms silences kept before a restart, to be told when their silence ends (or at
    /// once, when it ended while the box was off) if they still fire.
    fn take_over_silenced_alarms(&mut self) {
        match self.store.silenced_alarms() {
            Ok(alerts) => {
                if !alerts.is_empty() {
                    tracing::info!(alarms = alerts.len(), "alarms silences kept before the restart are told when their silence ends");
                }
                self.silenced_alarms.extend(alerts.into_iter().map(|alert| ((alert.rule.clone(), alert.sensor.clone()), alert)));
            }
            Err(error) => self.store.report_failure("reading the alarms silences kept (they are told only if they fire again)", &error),
        }
    }

    /// Tells the alarms silences kept from people whose silence is over (ended, expired or
    /// lifted, also while the box was off) while they still fire: as fired now, on their
    /// incident — whose sensor is marked normal first, so the store takes it for news — with
    /// its ladder.
    async fn tell_alarms_silences_kept(&mut self) {
        if self.silenced_alarms.is_empty() {
            return;
        }
        let now = self.clock.now();
        let silences = match self.store.off_thread(move |store| store.silences(now, false)).await {
            Ok(silences) => silences,
            Err(error) => {
                self.store.report_failure("reading silences (alarms they kept are told once they can be read)", &error);
                return;
            }
        };
        let mut over: Vec<((String, String), gridwatch_rules::Severity)> = self
            .silenced_alarms
            .iter()
            .filter(|(_, alert)| !silences.iter().chain(&self.silences).any(|silence| silence.covers(alert, now)))
            .map(|(key, alert)| (key.clone(), alert.severity))
            .collect();
        // The worst first: a house's red is told, and its orange of the same silence folds into
        // it (an outside tester got yellow, then red and orange, in any order).
        over.sort_by(|(a_key, a), (b_key, b)| b.cmp(a).then_with(|| a_key.cmp(b_key)));
        let over: Vec<(String, String)> = over.into_iter().map(|(key, _)| key).collect();
        // Only what its incident still holds firing, and no person resolved: a rule changed
        // meanwhile may no longer call it an alarm (its incident was judged afresh; an outside
        // tester was told an orange the new threshold did not call for), and what a worker
        // resolved meanwhile (with its house's red) is done.
        let firing = match self.store.off_thread(|store| store.firing_unresolved_incidents()).await {
            Ok(firing) => Some(firing),
            Err(error) => {
                self.store.report_failure("reading the incidents still firing (the alarms silences kept are told all the same)", &error);
                None
            }
        };
        for key in over {
            let Some(alert) = self.silenced_alarms.remove(&key) else { continue };
            self.forget_silenced_alarm(key.clone()).await;
            if firing.as_ref().is_some_and(|firing| !firing.contains(&key)) {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, "silence over; its incident no longer fires: not told");
                continue;
            }
            let (rule, sensor) = key;
            let marked = self.store.off_thread(move |store| store.judged_afresh(|r, s| !(r == rule && s == sensor), "silence over", now)).await;
            if let Err(error) = marked {
                self.store.report_failure("marking an incident whose silence is over (its alarm may not be told)", &error);
            }
            tracing::warn!(rule = %alert.rule, sensor = %alert.sensor, "silence over while the alarm still fires: told now");
            let told = Alert { event: Event::Fired, at_ms: now, at: crate::clock::rfc3339(now), event_id: None, previous_severity: None, ..alert };
            Box::pin(self.handle(told)).await;
        }
    }

    /// Tells the alarms folded into an incident of their house that no longer takes them in
    /// ([`crate::store::Store::untold_alarms`]: a red whose house's incident was resolved, an
    /// incident that got better, stopped firing or reached nobody) or that a silence now keeps
    /// from people: each as a `fired` now, to the people on duty, with its ladder. One a silence
    /// covers itself waits for the silence to end.
    async fn tell_owed_alarms(&mut self) {
        let untold = match self.store.untold_alarms().await {
            Ok(untold) => untold,
            Err(error) => {
                self.store.report_failure("reading the folded alarms (those owed to people are told once it can be read)", &error);
                return;
            }
        };
        for crate::store::Untold { incident, mut alert, cover, owed } in untold {
            let now = self.clock.now();
            let silenced_cover = match &cover {
                Some(cover) => self.silenced_now(cover, now).await.then_some(cover.incident_id).flatten(),
                None => None,
            };
            if (!owed && silenced_cover.is_none()) || self.silenced_now(&alert, now).await {
                continue;
            }
            let dispatch = self.dispatch.get();
            name_on_duty(&mut alert, &dispatch, now);
            (alert.event_id, alert.folded_into) = (None, None);
            let addressing = address(&alert, &dispatch.roster, &self.names);
            let targets = addressing.targets.clone();
            // Quiet hours hold it as they would have held it when it fired.
            let not_before_ms = dispatch.deferral.not_before(&alert, now);
            let escalate = if not_before_ms.is_none() { ladder_of(&dispatch, &alert, now) } else { None };
            let journaling = crate::store::Journaling { route: router(addressing, self.links.clone(), self.clock), not_before_ms, escalate };
            match self.store.tell_owed(incident, &alert, silenced_cover.into_iter().collect(), journaling).await {
                Ok(Some(_)) => {
                    tracing::warn!(incident, rule = %alert.rule, sensor = %alert.sensor, "an alarm folded into its house's incident, which no longer takes it in: told now");
                    self.metrics.take_on_deliveries(&targets, 1);
                    self.wake(&targets);
                }
                Ok(None) => {}
                Err(error) => self.store.report_failure("telling a folded alarm its house's incident no longer takes in (it is told at the next look)", &error),
            }
        }
    }

    /// Whether a silence keeps `alert` from people now.
    async fn silenced_now(&self, alert: &Alert, now: i64) -> bool {
        self.silences.iter().any(|s| s.covers(alert, now)) || silence_covering(&self.store, alert, now).await.is_some()
    }

    /// Hands an alert the store could not journal to its channels in memory.
    /// It carries no journal id: a reminder worded from its alarm's journaled payload would
    /// otherwise carry the alarm's `event_id`, and receivers drop an id they have seen.
    fn send_unjournaled(&self, alert: &Alert, targets: &[String]) {
        let alert = Alert { event_id: None, ..alert.clone() };
        for sink in self.sinks.iter().filter(|s| targets.contains(&s.name)) {
            if sink.send_unjournaled(alert.clone()) {
                self.metrics.take_on_deliveries([&sink.name], 1);
            } else {
                self.metrics.alert_delivery_failures.get_or_create(&Metrics::sink(&sink.name)).inc();
                tracing::error!(sink = %sink.name, rule = %alert.rule, sensor = %alert.sensor, "alert neither journaled nor held: the channel holds too many in memory already");
            }
        }
    }

    /// Grouping: a building's first alarm goes at once; its other alarms within the window after
    /// it wait for the window's end and go out together — but a red, which never waits (an
    /// outside tester's red waited 8 s behind its own box's orange). (Their later events wait at
    /// least as long, see [`crate::store::DueDelivery`].)
    fn group(&mut self, alert: &Alert, now: i64) -> Option<i64> {
        let building = alert.building.as_ref().filter(|_| alert.audience == Audience::Grid && alert.event == Event::Fired && self.group_window_ms > 0)?;
        match self.building_sent.get(building) {
            Some(&first) if now - first < self.group_window_ms => (alert.severity < gridwatch_rules::Severity::Danger).then_some(first + self.group_window_ms),
            _ => {
                self.building_sent.insert(building.clone(), now);
                None
            }
        }
    }

    /// Journals a delivery of a given-up alert for its failover channel, then pokes it.
    async fn hand_over(&self, handoff: Handoff) {
        let Handoff { from, to, alert_id, alert } = handoff;
        if !self.names.contains(&to) {
            return;
        }
        match self.store.add_delivery(alert_id, &to).await {
            Ok(true) => self.metrics.take_on_deliveries([&to], 1),
            Ok(false) => {
                tracing::info!(from = %from, to = %to, alert_id, "the failover channel has this alert already");
                return;
            }
            Err(error) => {
                tracing::error!(alert_id, to = %to, error = %format!("{error:#}"), "failover delivery not journaled; the alert is not handed over");
                return;
            }
        }
        tracing::warn!(from = %from, to = %to, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "alert handed to the failover channel");
        self.wake(&[to]);
    }

    /// Journals an alert without updating its incident; when the store takes nothing
    /// (read-only) — it is the channels' queue — the channels get it (each its own copy) in
    /// memory (`send`: it is not silenced) and `None` says it is not journaled. Sent from memory,
    /// it has no journal id (`event_id`): one made up here could be the id the journal gives
    /// its next event once the card is back, and a receiver would drop that one as a repeat.
    async fn journal_alone(&self, alert: Alert, destinations: Vec<Destination>, not_before: Option<i64>, send: bool) -> Option<Alert> {
        match self.store.record_alert_to(&alert, destinations.clone(), not_before).await {
            Ok(_) => Some(alert),
            Err(error) => {
                self.store.report_failure("journaling an alert (it is sent from memory)", &error);
                if send {
                    for (sink, own) in destinations {
                        self.send_unjournaled(own.as_ref().unwrap_or(&alert), std::slice::from_ref(&sink));
                    }
                }
                None
            }
        }
    }

    /// The events and ladder steps runs before this one sent from memory and never recorded, and
    /// the workers' steps and signatures they took on a store copied into memory (kept beside the
    /// card): recorded before anything else — so each ladder goes on from the last step people
    /// got, or stays stopped by the worker who accepted — and a clear of an alarm among them is
    /// news.
    fn take_over_sent_from_memory(&mut self) {
        let left = self.store.sent_from_memory_left();
        if left.is_empty() {
            return;
        }
        let count = |kind: fn(&SentFromMemory) -> bool| left.iter().filter(|sent| kind(sent)).count();
        let (events, steps) = (count(|s| matches!(s, SentFromMemory::Event(_))), count(|s| matches!(s, SentFromMemory::Ladder { .. })));
        let (workers_steps, signatures) = (count(|s| matches!(s, SentFromMemory::Work { .. })), count(|s| matches!(s, SentFromMemory::Signature { .. })));
        tracing::warn!(events, ladder_steps = steps, workers_steps, signatures, "what the last runs sent or took from memory is recorded first");
        for sent in left {
            if let SentFromMemory::Event(alert) = &sent {
                let key = (alert.rule.clone(), alert.sensor.clone());
                if alert.event == Event::Fired {
                    self.ladders.unrecorded_alarms.insert(key);
                } else if alert.event == Event::Cleared {
                    self.ladders.unrecorded_alarms.remove(&key);
                }
            }
            self.ladders.unrecorded_events.push_back(sent);
        }
    }

    /// Keeps a rule event or ladder step the store could not record, to record it once it writes
    /// again (beside the card too, should the daemon die first).
    fn keep_unrecorded(&mut self, sent: SentFromMemory) {
        self.store.keep_sent_from_memory(&sent);
        if self.ladders.unrecorded_events.len() >= UNRECORDED_EVENTS_MAX {
            self.ladders.unrecorded_events.pop_front();
            self.store
                .report_failure("keeping rule events to record later", &anyhow::anyhow!("more than {UNRECORDED_EVENTS_MAX} waiting; the oldest is forgotten"));
        }
        self.ladders.unrecorded_events.push_back(sent);
    }

    /// Keeps where the ladder of `rule` and `sensor` stands after steps sent from memory: to
    /// record once the store writes again (`recorded: false`), or — recorded in a store copied
    /// into memory, which forgets it at the next start — beside the card only, for the next run.
    /// `audit`: the steps as the incident's audit trail words them.
    fn keep_ladder_sent(&mut self, (rule, sensor): (String, String), moved: LadderMove, audit: Vec<String>, recorded: bool) {
        let aged_at_ms = self.clock.synchronized().then(|| self.clock.now());
        let sent = SentFromMemory::Ladder { ladder: LadderSent { rule, sensor, moved, aged_at_ms, audit } };
        match (recorded, self.store.is_memory_copy()) {
            (false, _) => self.keep_unrecorded(sent),
            (true, true) => self.store.keep_sent_from_memory(&sent),
            (true, false) => {}
        }
    }

    /// Records, in order, the rule events and ladder steps the store missed (they were sent from
    /// memory, so they are journaled without deliveries, and a ladder only ever moves on) and the
    /// workers' steps and signatures an earlier run took on a store copied into memory; `Err`
    /// while it still cannot write.
    async fn record_unrecorded(&mut self) -> anyhow::Result<()> {
        self.take_steps_from_memory();
        if self.ladders.unrecorded_events.is_empty() {
            return Ok(());
        }
        loop {
            // A worker's step taken (or a signature used) in memory meanwhile is recorded too
            // before the file beside the card, which keeps it, is forgotten.
            self.take_steps_from_memory();
            let Some(sent) = self.ladders.unrecorded_events.front().cloned() else { break };
            let alert = match &sent {
                SentFromMemory::Event(alert) => alert.as_ref(),
                SentFromMemory::Ladder { ladder } => {
                    if self.store.record_ladder_sent(ladder).await? {
                        let (reminders_sent, level) = (ladder.moved.progress.reminders_sent, ladder.moved.progress.level);
                        tracing::info!(rule = %ladder.rule, sensor = %ladder.sensor, reminders_sent, level, "a ladder's steps sent from memory are recorded: it goes on from there");
                    }
                    self.ladders.unrecorded_events.pop_front();
                    continue;
                }
                SentFromMemory::Work { worker_action: taken } => {
                    let again = taken.clone();
                    match self.store.off_thread(move |store| store.take_work_again(&again)).await? {
                        Some((incident, state)) => {
                            tracing::info!(incident, state = %state, action = %taken.work.recorded(), actor = %taken.actor, "a worker's step taken on the copy in memory is recorded")
                        }
                        None => {
                            tracing::info!(rule = %taken.rule, sensor = %taken.sensor, action = %taken.work.recorded(), "a worker's step taken on the copy in memory is recorded already, or its incident no longer takes it")
                        }
                    }
                    self.ladders.unrecorded_events.pop_front();
                    continue;
                }
                SentFromMemory::Signature { used_signature } => {
                    let used = used_signature.clone();
                    self.store.off_thread(move |store| store.use_signature_again(&used)).await?;
                    self.ladders.unrecorded_events.pop_front();
                    continue;
                }
            };
            // The store went on without it (a write that landed after all, a run before this
            // one): recorded now it would move its incident back to an older state.
            if self.store.later_event_journaled(&alert.rule, &alert.sensor, alert.at_ms).await? {
                tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "an event sent from memory is older than what the store holds; not recorded");
                if alert.event == Event::Fired {
                    self.ladders.unrecorded_alarms.remove(&(alert.rule.clone(), alert.sensor.clone()));
                }
                self.ladders.unrecorded_events.pop_front();
                continue;
            }
            let record_only: crate::store::Route = Box::new(|alert: &mut Alert, incident: i64| {
                alert.incident_id = Some(incident);
                Vec::new()
            });
            let key = (alert.rule.clone(), alert.sensor.clone());
            // A ladder still running in memory goes to the incident, where it goes on as far as
            // it got (armed when it was; its age and steps follow below).
            let escalate = match alert.event {
                Event::Fired => match self.ladders.in_memory.get(&key) {
                    Some(l) => Some((l.grid.clone(), l.armed_ms, l.armed_ms + l.next_due_age_ms)),
                    // Sent from memory by a run that died before the card wrote again: its ladder
                    // went with that run, and starts again from when the alarm was sent (the
                    // alert's time), as the store would have armed it.
                    None => ladder_of(&self.dispatch.get(), alert, alert.at_ms.min(self.clock.now())),
                },
                _ => None,
            };
            let journaling = crate::store::Journaling { route: record_only, not_before_ms: None, escalate };
            let (applied, _) = self.store.apply_and_journal(alert, self.flap_window_ms, journaling).await?;
            if alert.event == Event::Fired {
                self.ladders.unrecorded_alarms.remove(&key);
                // News: the incident is opened now; a repeat: its own write landed after all (the
                // card stalled in the middle of it) and armed the incident's ladder then.
                if let Some(incident) = applied.incident() {
                    self.hand_over_ladder(&key, incident);
                }
            }
            tracing::info!(rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "an event sent from memory is recorded now that the store writes again");
            self.ladders.unrecorded_events.pop_front();
        }
        self.store.forget_sent_from_memory();
        Ok(())
    }

    /// Queues the workers' steps taken and signatures used in memory while the card could not
    /// write (kept beside the card already), to record in turn with the events and ladder steps
    /// sent meanwhile.
    fn take_steps_from_memory(&mut self) {
        self.ladders.unrecorded_events.extend(self.store.steps_to_record());
    }

    /// The store holds the incident of an alarm whose ladder ran in memory: the incident's ladder
    /// goes on from the age and steps the one in memory reached (its messages now carry the
    /// incident's number and links), not from the start.
    fn hand_over_ladder(&mut self, key: &(String, String), incident: i64) {
        let Some(ladder) = self.ladders.in_memory.remove(key) else { return };
        self.ladders.ages.insert(incident, (ladder.armed_ms, ladder.age_ms));
        let moved = LadderMove { progress: ladder.progress, age_ms: ladder.age_ms, next_due_age_ms: Some(ladder.next_due_age_ms) };
        self.ladders.unrecorded.insert(incident, moved);
        tracing::info!(rule = %key.0, sensor = %key.1, incident, age_secs = ladder.age_ms / 1000, "an alarm's ladder run in memory goes on as its incident's, now that the store writes again");
    }

    /// An alarm the store could not record gets its escalation ladder here, in memory.
    /// `armed_ms` is the time the store would have armed it at (a write that lands after all
    /// armed it so, see [`Dispatcher::hand_over_ladder`]).
    /// `armed`: the wall time of the alarm and its elapsed time when the dispatcher took it.
    fn arm_in_memory(&mut self, alert: &Alert, grid: Option<String>, (armed_ms, received): (i64, i64), first_due_age_ms: i64) {
        self.ladders.next_in_memory_id -= 1;
        let ladder = crate::store::DueEscalation {
            incident_id: self.ladders.next_in_memory_id,
            grid,
            armed_ms,
            // Its first look adds the time since the look before; so it starts that much below 0
            // less the time since the alarm came (the store's answer, or its failure, may have
            // taken seconds): it is as old as the alarm at every look, never older (a step came
            // up to a second early).
            age_ms: self.ladders.last_look.map_or(0, |last_look| (last_look - received).min(0)),
            aged_at_ms: None,
            next_due_age_ms: first_due_age_ms,
            progress: Default::default(),
            state: "open".into(),
            severity: alert.severity.as_str().to_string(),
            sensor_normal: false,
            last_alert: Some(alert.clone()),
        };
        tracing::warn!(rule = %alert.rule, sensor = %alert.sensor, "the store cannot record this alarm: its reminders and escalations run in memory until it clears");
        self.ladders.in_memory.insert((alert.rule.clone(), alert.sensor.clone()), ladder);
    }

    /// A later event of an alarm whose ladder runs in memory: a clear stops it, a change of
    /// severity words its next steps.
    fn follow_in_memory(&mut self, alert: &Alert) {
        let key = (alert.rule.clone(), alert.sensor.clone());
        match alert.event {
            Event::Cleared => {
                self.ladders.in_memory.remove(&key);
            }
            Event::Changed => {
                let dispatch = self.dispatch.get();
                if let Some(ladder) = self.ladders.in_memory.get_mut(&key) {
                    ladder.last_alert = Some(alert.clone());
                    // Worse than it ever was: the new severity's ladder from now, as the store
                    // does (`Store::apply_and_journal`); a fall keeps the worst one's.
                    let worst = ladder.severity.parse::<Severity>().ok();
                    if worst.is_none_or(|worst| alert.severity > worst) {
                        ladder.severity = alert.severity.as_str().to_string();
                        if let Some(first_due_age_ms) = dispatch.first_due(alert.severity.as_str(), 0) {
                            ladder.progress = Progress { reminders_sent: ladder.progress.reminders_sent, ..Progress::default() };
                            (ladder.age_ms, ladder.next_due_age_ms) = (0, first_due_age_ms);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends the steps due on the ladders that run in memory (to the channels in memory, as the
    /// store takes nothing) and moves them on.
    fn send_due_in_memory(&mut self, since_last_look: i64) {
        let now = self.clock.now();
        let at = self.clock.label(now);
        let dispatch = self.dispatch.get();
        let mut finished = Vec::new();
        let mut sends: Vec<(Alert, Vec<String>)> = Vec::new();
        let mut moves = Vec::new();
        for (key, ladder) in &mut self.ladders.in_memory {
            ladder.age_ms += since_last_look;
            if ladder.age_ms < ladder.next_due_age_ms {
                continue;
            }
            let decision = dispatch.decide(ladder, ladder.age_ms, now, &at);
            if !decision.steps.is_empty() {
                let moved = LadderMove { progress: decision.progress, age_ms: ladder.age_ms, next_due_age_ms: decision.next_due_age_ms };
                moves.push((key.clone(), moved, decision.steps.iter().map(|step| step.audit.clone()).collect()));
            }
            for step in decision.steps {
                let addressing = address(&step.alert, &dispatch.roster, &self.names);
                for (sink, own) in destinations(&step.alert, &addressing) {
                    sends.push((own.unwrap_or_else(|| step.alert.clone()), vec![sink]));
                }
                tracing::info!(rule = %step.alert.rule, sensor = %step.alert.sensor, event = %step.alert.event, recipients = ?step.alert.recipients, "escalation step sent from memory (the store cannot record it)");
            }
            ladder.progress = decision.progress;
            match decision.next_due_age_ms {
                Some(next) => ladder.next_due_age_ms = next,
                None => finished.push(key.clone()),
            }
        }
        for key in finished {
            self.ladders.in_memory.remove(&key);
        }
        for (alert, targets) in sends {
            self.send_unjournaled(&alert, &targets);
        }
        for (key, moved, audit) in moves {
            self.keep_ladder_sent(key, moved, audit, false);
        }
    }

    /// Journals the reminders and escalations due now and pokes their channels; each incident's
    /// steps and ladder move on in one transaction. Ladders age by the monotonic time since the
    /// last look.
    async fn send_due_escalations(&mut self) {
        let elapsed = self.clock.elapsed_ms();
        let since_last_look = elapsed - self.ladders.last_look.unwrap_or(elapsed);
        self.ladders.last_look = Some(elapsed);
        self.send_due_in_memory(since_last_look);
        if let Err(error) = self.record_unrecorded().await {
            self.store.report_failure("recording events sent from memory", &error);
        }
        let ladders = match self.store.escalation_clocks().await {
            Ok(ladders) => {
                self.ladders.last_read.clone_from(&ladders);
                ladders
            }
            Err(error) => {
                // A stalled card: the ladders run on from what was read last, their steps sent
                // from memory (the store cannot record them either).
                self.store.report_failure("reading escalation ladders (they run on from memory)", &error);
                self.ladders.last_read.clone()
            }
        };
        let now = self.clock.now();
        let clock_set = self.clock.synchronized();
        let ages = &mut self.ladders.ages;
        ages.retain(|incident, _| ladders.iter().any(|l| l.incident_id == *incident));
        for ladder in &ladders {
            let mut armed_since_last_look = false;
            let (armed_ms, age) = ages.entry(ladder.incident_id).or_insert_with(|| {
                armed_since_last_look = true;
                (ladder.armed_ms, age_at_first_look(ladder, clock_set.then_some(now)))
            });
            if *armed_ms != ladder.armed_ms {
                (*armed_ms, *age) = (ladder.armed_ms, ladder.age_ms);
                armed_since_last_look = true;
            }
            *age += if armed_since_last_look { time_since_armed(ladder.armed_ms, since_last_look, clock_set.then_some(now)) } else { since_last_look };
        }
        let at = self.clock.label(now);
        let dispatch = self.dispatch.get();
        self.ladders.unrecorded.retain(|incident, _| ladders.iter().any(|l| l.incident_id == *incident));
        for mut ladder in ladders {
            // A step the store could not record moved the ladder on in memory.
            if let Some(moved) = self.ladders.unrecorded.get(&ladder.incident_id) {
                let Some(next_due_age_ms) = moved.next_due_age_ms else { continue };
                ladder.progress = moved.progress;
                ladder.next_due_age_ms = next_due_age_ms;
            }
            let age = self.ladders.ages.get(&ladder.incident_id).map_or(ladder.age_ms, |(_, age)| *age);
            if age < ladder.next_due_age_ms {
                continue;
            }
            let mut decision = dispatch.decide(&ladder, age, now, &at);
            let mut targets: Vec<Vec<String>> = Vec::new();
            let mut routes: Vec<Vec<Destination>> = Vec::new();
            for step in &mut decision.steps {
                let addressing = address(&step.alert, &dispatch.roster, &self.names);
                targets.push(addressing.targets.clone());
                routes.push(router(addressing, self.links.clone(), self.clock)(&mut step.alert, ladder.incident_id));
            }
            let events: Vec<(Event, Vec<String>)> = decision.steps.iter().map(|s| (s.alert.event, s.alert.recipients.clone())).collect();
            // What each step sends where, kept for when the store cannot take it.
            let sends: Vec<(String, Alert)> = decision
                .steps
                .iter()
                .zip(&routes)
                .flat_map(|(step, destinations)| destinations.iter().map(move |(sink, own)| (sink.clone(), own.clone().unwrap_or_else(|| step.alert.clone()))))
                .collect();
            let moved = LadderMove { progress: decision.progress, age_ms: age, next_due_age_ms: decision.next_due_age_ms };
            let key = ladder.last_alert.as_ref().map(|alert| (alert.rule.clone(), alert.sensor.clone()));
            let audit: Vec<String> = decision.steps.iter().map(|step| step.audit.clone()).collect();
            match self.store.record_escalation(ladder.incident_id, decision.steps, routes, moved, now).await {
                Ok(_) => {
                    if let Some(key) = key.filter(|_| !audit.is_empty()) {
                        self.keep_ladder_sent(key, moved, audit, true);
                    }
                    self.ladders.unrecorded.remove(&ladder.incident_id);
                    for ((event, recipients), targets) in events.iter().zip(&targets) {
                        self.metrics.take_on_deliveries(targets, 1);
                        tracing::info!(incident = ladder.incident_id, event = %event, recipients = ?recipients, age_secs = age / 1000, "escalation step");
                        self.wake(targets);
                    }
                }
                Err(error) => {
                    // A store that takes nothing (read-only) must not stop the ladder: its steps go
                    // to the channels in memory, and the ladder moves on here until the store
                    // records a step again.
                    self.store.report_failure("recording an escalation step (it is sent from memory)", &error);
                    for (sink, alert) in sends {
                        self.send_unjournaled(&alert, std::slice::from_ref(&sink));
                    }
                    if let Some(key) = key.filter(|_| !audit.is_empty()) {
                        self.keep_ladder_sent(key, moved, audit, false);
                    }
                    self.ladders.unrecorded.insert(ladder.incident_id, moved);
                }
            }
        }
        if elapsed - self.ladders.last_saved >= LADDER_AGES_SAVED_EVERY_MS {
            self.ladders.last_saved = elapsed;
            let ages = self.ladders.ages.iter().map(|(&incident, &(_, age))| (incident, age)).collect();
            if let Err(error) = self.store.save_escalation_ages(ages).await {
                self.store.report_failure("saving escalation ladders' ages", &error);
            }
        }
    }
}

/// The silence in force that covers `alert`, if any. When silences cannot be read, nothing is
/// silenced: better a message too many than an alarm kept back.
async fn silence_covering(store: &Store, alert: &Alert, now: i64) -> Option<crate::dispatch::silence::Silence> {
    match store.off_thread(move |store| store.silences(now, false)).await {
        Ok(silences) => silences.into_iter().find(|s| s.covers(alert, now)),
        Err(error) => {
            store.report_failure("reading silences (the alert is sent)", &error);
            None
        }
    }
}

/// Sets `gridwatch_open_incidents{severity}` from the store (people act on incidents from the
/// page and the CLI, so the store is the truth).
async fn count_open_incidents(store: &Store, metrics: &Metrics) {
    let Ok(counts) = store.off_thread(Store::open_incident_counts).await else { return };
    for severity in ["notice", "warning", "alarm", "danger"] {
        let open = counts.iter().find(|(s, _)| s == severity).map_or(0, |&(_, n)| n);
        metrics.open_incidents.get_or_create(&crate::metrics::SeverityLabel { severity: severity.into() }).set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

/// No-data alarms held back because their bus was down, whose clear is held back too: per rule,
/// the sensors' positions in the inventory (after a restart into a bus outage that is every
/// sensor, so no copies of ids). In memory: after a restart such a clear is sent (a message too
/// many).
#[derive(Debug, Default)]
pub(super) struct HeldBack(HashMap<String, std::collections::HashSet<usize>>);

impl HeldBack {
    pub(super) fn hold(&mut self, rule: &str, sensor: usize) {
        match self.0.get_mut(rule) {
            Some(sensors) => {
                sensors.insert(sensor);
            }
            None => {
                self.0.insert(rule.to_string(), [sensor].into());
            }
        }
    }

    /// Whether `sensor`'s alarm of `rule` is held back.
    fn holds(&self, rule: &str, sensor: usize) -> bool {
        self.0.get(rule).is_some_and(|sensors| sensors.contains(&sensor))
    }

    /// Whether `sensor`'s alarm of `rule` was held back (it is not any more).
    pub(super) fn release(&mut self, rule: &str, sensor: usize) -> bool {
        self.0.get_mut(rule).is_some_and(|sensors| sensors.remove(&sensor))
    }
}

/// Every channel in `targets`, carrying the alert as it is.
fn unrouted(targets: &[String]) -> Vec<Destination> {
    targets.iter().map(|t| (t.clone(), None)).collect()
}

/// Where one alert goes: channels, and which of them are one member's own.
#[derive(Debug, Default, Clone)]
struct Addressing {
    targets: Vec<String>,
    /// Member channel -> the member's name and phone.
    personal: BTreeMap<String, (String, String)>,
    /// The recipients' names and member ids (for their own links).
    members: Vec<(String, String)>,
}

/// Finds the channels of `alert`: the grid's, plus the own channels of the members it names
/// (from `sinks`), and the members' ids for their own links. A device alarm whose installers
/// have channels of their own goes only there, not to the grid's group.
fn address(alert: &Alert, roster: &crate::dispatch::roster::Roster, sinks: &[String]) -> Addressing {
    let installers_reached =
        alert.audience == Audience::Installer && roster.member_channels(&alert.recipients).iter().any(|(channel, _)| sinks.contains(channel));
    let mut addressing = Addressing {
        targets: if installers_reached { Vec::new() } else { roster.targets(alert.grid.as_deref(), sinks).into_iter().cloned().collect() },
        personal: BTreeMap::new(),
        members: roster.members_named(&alert.recipients).map(|m| (m.name.clone(), m.id.clone())).collect(),
    };
    for (channel, member) in roster.member_channels(&alert.recipients) {
        if sinks.contains(channel) && !addressing.targets.contains(channel) {
            addressing.targets.push(channel.clone());
            addressing.personal.insert(channel.clone(), (member.name.clone(), member.phone.clone()));
        }
    }
    addressing
}

/// Once the incident is known: its link and each recipient's own link in the alert, and the
/// channels with their copies. Links are signed on `clock`, the one the web pages check them on.
fn router(addressing: Addressing, links: Option<crate::links::WorkerLinks>, clock: crate::clock::Clock) -> crate::store::Route {
    Box::new(move |alert: &mut Alert, incident: i64| {
        let now_secs = clock.now().div_euclid(1000);
        if let Some(links) = &links {
            links.signing_on(&clock);
        }
        alert.incident_id = Some(incident);
        alert.link = links.as_ref().map(|l| l.link(incident, now_secs));
        alert.member_links = match &links {
            Some(links) => addressing.members.iter().map(|(name, id)| (name.clone(), links.member_link(incident, id, now_secs))).collect(),
            None => BTreeMap::new(),
        };
        destinations(alert, &addressing)
    })
}

/// The channels of one alert, each with the copy it carries (members' own channels get only
/// their own link).
fn destinations(alert: &Alert, addressing: &Addressing) -> Vec<Destination> {
    addressing.targets.iter().map(|target| (target.clone(), addressing.personal.get(target).map(|member| for_member(alert, member)))).collect()
}

/// The alert as a member's own channel carries it: their link only, them only.
fn for_member(alert: &Alert, (member, phone): &(String, String)) -> Alert {
    let mut own = alert.clone();
    own.member_links.retain(|name, _| name == member);
    if let Some(link) = own.member_links.get(member) {
        own.link = Some(link.clone());
    }
    own.recipients = vec![member.clone()];
    own.mentions = if phone.is_empty() { Vec::new() } else { vec![phone.clone()] };
    own
}

/// What a ladder first seen (or armed again) at this look has aged since it was armed: the time
/// since `armed_ms` on a clock that is set, at most the time since the last look; nothing on a
/// clock that is not. (The whole time since the last look made a step come up to a second early:
/// an escalation at 29.05 s of 30 s, an outside tester.)
fn time_since_armed(armed_ms: i64, since_last_look: i64, now: Option<i64>) -> i64 {
    now.map_or(0, |now| (now - armed_ms).clamp(0, since_last_look))
}

/// The most a restart adds to a ladder's age for the time the box was off.
const MAX_TIME_OFF_MS: i64 = 7 * 24 * 3_600_000;

/// A stored ladder's age when this run first looks at it: the age saved, plus — when the clock
/// was set both then (`aged_at_ms`) and now (`now`) — the time since, which is the time the box
/// was off (a restart, a power cut; at most a week). What fell due meanwhile then comes once, at
/// the restart: each deadline missed is one escalation, and reminders are not sent one by one
/// ([`crate::dispatch::policy::steps_due`]).
fn age_at_first_look(ladder: &crate::store::DueEscalation, now: Option<i64>) -> i64 {
    let off = match (ladder.aged_at_ms, now) {
        (Some(aged_at), Some(now)) => (now - aged_at).clamp(0, MAX_TIME_OFF_MS),
        _ => 0,
    };
    ladder.age_ms.saturating_add(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ladder_counts_the_time_the_box_was_off_when_the_clock_was_set() {
        let ladder = |age_ms: i64, aged_at_ms: Option<i64>| crate::store::DueEscalation {
            incident_id: 1,
            grid: None,
            armed_ms: 0,
            age_ms,
            aged_at_ms,
            next_due_age_ms: 600_000,
            progress: Default::default(),
            state: "open".into(),
            severity: "danger".into(),
            sensor_normal: false,
            last_alert: None,
        };
        let now = 10_000_000;
        // Saved at 4 min of age, off for 2 min: 6 min, the next step still ahead.
        assert_eq!(age_at_first_look(&ladder(240_000, Some(now - 120_000)), Some(now)), 360_000);
        // Off for an hour: an hour older (its steps due meanwhile come once); off for a month: a week.
        assert_eq!(age_at_first_look(&ladder(240_000, Some(now - 3_600_000)), Some(now)), 3_840_000);
        assert_eq!(age_at_first_look(&ladder(240_000, Some(now - 30 * 86_400_000)), Some(now)), 240_000 + MAX_TIME_OFF_MS);
        // The clock not set now, or when the age was saved, or stepped back: the age saved.
        assert_eq!(age_at_first_look(&ladder(240_000, Some(now - 120_000)), None), 240_000);
        assert_eq!(age_at_first_look(&ladder(240_000, None), Some(now)), 240_000);
        assert_eq!(age_at_first_look(&ladder(240_000, Some(now + 3_600_000)), Some(now)), 240_000);
    }

    #[test]
    fn a_ladder_armed_between_two_looks_ages_from_its_arming_not_from_the_look_before() {
        // Looks 1 s apart; armed 300 ms before this look: 300 ms old, not 1 s.
        assert_eq!(time_since_armed(9_700, 1_000, Some(10_000)), 300);
        // A clock not set, or stepped back past the arming: not aged at all (late, never early).
        assert_eq!(time_since_armed(9_700, 1_000, None), 0);
        assert_eq!(time_since_armed(12_000, 1_000, Some(10_000)), 0);
        // Armed long before (a store answer that took seconds): at most the time since the last look.
        assert_eq!(time_since_armed(1_000, 1_000, Some(10_000)), 1_000);
    }

    #[test]
    fn a_held_back_alarm_holds_back_its_own_clear_once() {
        let mut held = HeldBack::default();
        held.hold("box-silent", 7);
        held.hold("box-silent", 9);
        assert!(!held.release("box-silent", 8), "not held back");
        assert!(!held.release("probe-silent", 7), "another rule");
        assert!(held.release("box-silent", 7));
        assert!(!held.release("box-silent", 7), "released once");
        assert!(held.release("box-silent", 9));
    }
}
