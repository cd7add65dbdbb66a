//! One house, one alarm told at a time. A further grid alarm of a house (a building, or a sensor
//! outside any building) is folded into the house's orange or red incident that takes it in
//! ([`takes_in`]): recorded on its own incident and in the journal, but sent to nobody (the
//! console's log shows it) and given no reminders. People already on their way to the house do
//! not get the same movement again as `tilt-lean-fast`, `tilt-creep-day` and `tilt-change` (an
//! outside tester: one jump opened four grid incidents, a whole building's jump ten to thirteen,
//! each with its own reminders and escalations), nor a discharge once per indicator. When a
//! worse alarm of the house is told, the lesser ones it was told before are folded into it too:
//! one ladder of reminders per house.
//!
//! What is folded is told (as a `fired`: nobody heard of it before) as soon as the incident it
//! was folded into no longer takes it in — it got better, stopped firing, reached nobody, a
//! silence keeps it from people, folding was turned off — unless another takes it in
//! ([`Store::untold_alarms`], [`Store::tell_owed`]), and when it grows worse than every incident
//! that could take it in. It is resolved with that incident once it stopped firing; a folded
//! alarm's clear is not sent.

use super::incidents::{audit, Stamp};
use super::Store;
use crate::alert::{Alert, Audience, Event};
use crate::dispatch::incident::{Action, State};
use rusqlite::{params, OptionalExtension, Transaction};

/// What becomes of a grid event's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fold {
    /// Sent as it is.
    Tell,
    /// Sent as a `fired`: an incident folded until now, that nobody heard of yet.
    TellAsFired,
    /// Not sent (but to the console's log): folded into this incident of its house.
    Keep(i64),
}

/// The house an alert is about, for grid alerts: `site/building`, or the sensor when it is in
/// no building.
pub(super) fn house_of(alert: &Alert) -> Option<String> {
    (alert.audience == Audience::Grid).then(|| match &alert.building {
        Some(building) => format!("{}/{building}", alert.site),
        None => format!("{}:{}", alert.site, alert.sensor),
    })
}

/// The rank of the severity of table `t`'s row.
pub(super) fn rank_sql(t: &str) -> String {
    format!("CASE {t}.severity WHEN 'danger' THEN 3 WHEN 'alarm' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END")
}

/// The rank of `alert`'s severity, as [`rank_sql`] ranks a row's.
pub(super) fn rank(alert: &Alert) -> i64 {
    match alert.severity {
        gridwatch_rules::Severity::Danger => 3,
        gridwatch_rules::Severity::Alarm => 2,
        gridwatch_rules::Severity::Warning => 1,
        gridwatch_rules::Severity::Notice => 0,
    }
}

/// What makes incident `c` take in an alarm of rank `rank` (an SQL expression): it was told and
/// reached someone (a channel took it, or still tries: not only failed deliveries), it still
/// fires, and it is orange or red — open and at least as bad, or resolved by a person and worse
/// (a jump's `tilt-sudden` fires on for a day after the worker looked; the jump's slower rules
/// come in that day).
fn takes_in(rank: &str) -> String {
    let c = rank_sql("c");
    format!(
        "c.told = 1 AND c.folded_into IS NULL AND c.sensor_normal = 0 AND c.severity IN ('alarm', 'danger')
         AND ((c.state IN ('open', 'accepted', 'on_site') AND {c} >= {rank}) OR (c.state = 'resolved' AND {c} > {rank}))
         AND EXISTS (SELECT 1 FROM alert_events a JOIN outbox o ON o.alert_id = a.id
                     WHERE a.sensor = c.sensor AND a.rule = c.rule AND a.event IN ('fired', 'changed') AND a.at_ms >= c.opened_ms
                       AND o.state != 'failed' AND o.sink != '{console}')",
        console = crate::sinks::console::NAME
    )
}

/// An orange or red incident of `house` that takes `alert` in ([`takes_in`]), other than
/// `incident` and those `passed` over (a silence keeps them from people). The open one first.
fn cover(tx: &Transaction<'_>, incident: i64, house: &str, alert: &Alert, passed: &[i64]) -> rusqlite::Result<Option<i64>> {
    let passed: String = passed.iter().map(|id| format!(", {id}")).collect();
    tx.query_row(
        &format!(
            "SELECT c.id FROM incidents c WHERE c.house = ?1 AND c.id NOT IN (?2{passed}) AND {}
              ORDER BY c.state = 'resolved', {} DESC, c.id LIMIT 1",
            takes_in("?3"),
            rank_sql("c")
        ),
        params![house, incident, rank(alert)],
        |row| row.get(0),
    )
    .optional()
}

/// Folds `incident` into `into`, unless it is there already; its ladder, if any, ends, and what
/// of it no channel has delivered yet — waiting for its time (quiet hours, a group window), or
/// being tried again on a failing or slow channel — is not sent: outside testers' oranges went
/// out after their house's red, one held for the night in the morning after five reminders, one
/// a failing robot took again after the red had been accepted. Nobody having heard of it then,
/// it is told as a `fired` if it is released.
fn fold(tx: &Transaction<'_>, incident: i64, into: i64, stamp: Stamp) -> rusqlite::Result<()> {
    let before: Option<i64> = tx.query_row("SELECT folded_into FROM incidents WHERE id = ?1", [incident], |row| row.get(0))?;
    tx.execute("UPDATE incidents SET folded_into = ?2 WHERE id = ?1", params![incident, into])?;
    tx.execute("DELETE FROM escalations WHERE incident_id = ?1", [incident])?;
    let of_incident = "SELECT a.id FROM alert_events a JOIN incidents i ON i.id = ?1 WHERE a.rule = i.rule AND a.sensor = i.sensor AND a.at_ms >= i.opened_ms";
    let undelivered = format!(
        "sink != '{console}' AND alert_id IN ({of_incident} AND a.event IN ('fired', 'changed', 'reminder', 'escalated'))",
        console = crate::sinks::console::NAME
    );
    super::journal::count_not_sent(tx, &undelivered, [incident])?;
    let held = tx.execute(
        &format!("UPDATE outbox SET state = 'failed', error = ?3, updated_ms = ?2 WHERE state = 'pending' AND {undelivered}"),
        params![incident, stamp.at_ms, format!("{}folded into #{into} before it was delivered", super::journal::NOT_SENT)],
    )?;
    if held > 0 {
        tx.execute(
            &format!(
                "UPDATE incidents SET told = 0 WHERE id = ?1 AND NOT EXISTS (
                   SELECT 1 FROM outbox o WHERE o.alert_id IN ({of_incident}) AND o.state != 'failed' AND o.sink != '{console}')",
                console = crate::sinks::console::NAME
            ),
            [incident],
        )?;
    }
    if before != Some(into) {
        audit(tx, incident, stamp, "gridwatch", &format!("folded into #{into}"), None)?;
    }
    Ok(())
}

/// Decides whether `alert` (as it is journaled, on `incident`) is told, and records on the
/// incident its house and what it was folded into. `enabled`: the configuration folds
/// (`[alerts] fold_into_open_alarm`).
pub(super) fn decide(tx: &Transaction<'_>, incident: i64, alert: &Alert, enabled: bool, stamp: Stamp) -> rusqlite::Result<Fold> {
    let Some(house) = house_of(alert) else { return Ok(Fold::Tell) };
    tx.execute("UPDATE incidents SET house = ?2 WHERE id = ?1", params![incident, house])?;
    let folded: Option<i64> = tx.query_row("SELECT folded_into FROM incidents WHERE id = ?1", [incident], |row| row.get(0))?;
    match (alert.event, folded) {
        (Event::Cleared, Some(into)) => {
            resolve_if_into_resolved(tx, incident, into, stamp)?;
            return Ok(Fold::Keep(into));
        }
        // An alarm that opens, or one nobody heard of yet that changes.
        (Event::Fired, _) | (Event::Changed, Some(_)) => {}
        _ => return Ok(Fold::Tell),
    }
    match if enabled { cover(tx, incident, &house, alert, &[])? } else { None } {
        Some(into) => {
            fold(tx, incident, into, stamp)?;
            if alert.event == Event::Fired {
                // Nobody hears of this firing: told when released ([`Store::tell_owed`]).
                tx.execute("UPDATE incidents SET told = 0 WHERE id = ?1", [incident])?;
            }
            Ok(Fold::Keep(into))
        }
        None => {
            tx.execute("UPDATE incidents SET folded_into = NULL WHERE id = ?1", [incident])?;
            if folded.is_some() {
                audit(tx, incident, stamp, "gridwatch", "unfolded", None)?;
                return Ok(Fold::TellAsFired);
            }
            Ok(Fold::Tell)
        }
    }
}

/// A folded alarm that stopped firing after a person resolved (closed) the incident it was
/// folded into is resolved (closed) with it.
fn resolve_if_into_resolved(tx: &Transaction<'_>, incident: i64, into: i64, stamp: Stamp) -> rusqlite::Result<()> {
    let (state, cover_state): (String, String) =
        tx.query_row("SELECT i.state, c.state FROM incidents i JOIN incidents c ON c.id = ?2 WHERE i.id = ?1", params![incident, into], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let action = match cover_state.as_str() {
        "resolved" => Action::Resolve,
        "closed" => Action::Close,
        _ => return Ok(()),
    };
    take_along(tx, (incident, &state), into, action, "gridwatch", stamp)
}

/// Moves folded `incident` (in `state`) as `action` took `into`, as far as its state allows.
fn take_along(tx: &Transaction<'_>, (incident, state): (i64, &str), into: i64, action: Action, actor: &str, stamp: Stamp) -> rusqlite::Result<()> {
    let Ok(next) = state.parse::<State>().and_then(|state| action.next(state)) else { return Ok(()) };
    let closed = (next == State::Closed).then_some(stamp.at_ms);
    tx.execute("UPDATE incidents SET state = ?1, updated_ms = ?2, closed_ms = ?3 WHERE id = ?4", params![next.as_str(), stamp.at_ms, closed, incident])?;
    let done = if action == Action::Close { "关闭" } else { "办结" };
    audit(tx, incident, stamp, actor, action.as_str(), Some(&format!("随 #{into} 一并{done}")))
}

/// Records whether a grid incident that opened (or was unfolded) was told: one that went nowhere
/// (silenced, no channel for it) takes nothing in. One told orange or red takes in the house's
/// lesser alarms told before it (an outside tester: a house gone from orange to red through two
/// rules got both incidents' reminders and escalations, twice each).
pub(super) fn told(tx: &Transaction<'_>, incident: i64, alert: &Alert, to_someone: bool, enabled: bool, stamp: Stamp) -> rusqlite::Result<()> {
    let rises = alert.event == Event::Fired || alert.event == Event::Changed && alert.previous_severity.is_some_and(|p| p < alert.severity);
    if alert.audience != Audience::Grid || !rises {
        return Ok(());
    }
    if alert.event == Event::Fired {
        tx.execute("UPDATE incidents SET told = ?2 WHERE id = ?1", params![incident, to_someone])?;
    }
    if !(enabled && to_someone && rank(alert) >= 2) {
        return Ok(());
    }
    let lesser: Vec<i64> = {
        let mut statement = tx.prepare_cached(&format!(
            "SELECT c.id FROM incidents c JOIN incidents x ON x.id = ?1
              WHERE c.house = x.house AND c.id != x.id AND c.folded_into IS NULL AND c.state IN ('open', 'accepted', 'on_site') AND {} < ?2",
            rank_sql("c")
        ))?;
        let rows = statement.query_map(params![incident, rank(alert)], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in lesser {
        fold(tx, id, incident, stamp)?;
        tx.execute("UPDATE incidents SET folded_into = ?2 WHERE folded_into = ?1", params![id, incident])?;
    }
    Ok(())
}

/// A person's resolve or close of incident `into` takes along the incidents folded into it — its
/// page listed them — except a red that still fires: a resolved incident takes in only what is
/// less bad, so it is told now (a second box of the house gone red hours after the first, while
/// its worker was busy with that one). What is folded into it after the resolve waits until it
/// stops firing, and is told then if it fires on (an outside tester's other box, orange since,
/// was never told), or resolved with it if it stopped first.
pub(super) fn take_folded_along(tx: &Transaction<'_>, into: i64, action: Action, actor: &str, stamp: Stamp) -> rusqlite::Result<()> {
    if !matches!(action, Action::Resolve | Action::Close) {
        return Ok(());
    }
    let folded: Vec<(i64, String)> = {
        let mut statement = tx.prepare_cached(
            "SELECT id, state FROM incidents WHERE folded_into = ?1 AND state NOT IN ('resolved', 'closed') AND NOT (severity = 'danger' AND sensor_normal = 0)",
        )?;
        let rows = statement.query_map([into], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, state) in folded {
        take_along(tx, (id, &state), into, action, actor, stamp)?;
    }
    Ok(())
}

/// Starts `incident`'s ladder of reminders and escalations as `escalate` says (grid, armed at,
/// first step due), unless it runs one already; `clock_set`: its age is counted from now.
fn arm(tx: &Transaction<'_>, incident: i64, escalate: &Option<(Option<String>, i64, i64)>, clock_set: bool) -> rusqlite::Result<()> {
    if let Some((grid, armed_ms, first_due_ms)) = escalate {
        tx.execute(
            "INSERT OR IGNORE INTO escalations (incident_id, grid, armed_ms, next_due_ms, next_due_age_ms, aged_at_ms) VALUES (?1, ?2, ?3, ?4, ?4 - ?3, ?5)",
            params![incident, grid, armed_ms, first_due_ms, clock_set.then_some(*armed_ms)],
        )?;
    }
    Ok(())
}

/// An alarm folded into an incident of its house that still fires (see [`Store::untold_alarms`]).
#[derive(Debug, Clone)]
pub struct Untold {
    pub incident: i64,
    /// Its latest `fired` or `changed`.
    pub alert: Alert,
    /// The latest alert of the incident it was folded into.
    pub cover: Option<Alert>,
    /// Owed to people now, whatever silences say: that incident no longer takes it in.
    pub owed: bool,
}

impl Store {
    /// The alarms folded into an incident of their house that still fire and are not resolved,
    /// worst first: each with its latest alert, the latest alert of the incident it was folded
    /// into, and whether it is owed to people now — that incident no longer takes it in
    /// ([`takes_in`]: it got better or was resolved and is no worse, stopped firing, was never
    /// delivered; or folding was turned off). The dispatcher tells those, and the ones whose
    /// incident a silence keeps from people ([`Store::tell_owed`]).
    pub async fn untold_alarms(&self) -> anyhow::Result<Vec<Untold>> {
        let folds = self.folds_alarms.load(std::sync::atomic::Ordering::SeqCst);
        self.with_conn(move |conn| {
            let latest = |t: &str| {
                format!("(SELECT a.payload FROM alert_events a WHERE a.rule = {t}.rule AND a.sensor = {t}.sensor AND a.event IN ('fired', 'changed') ORDER BY a.id DESC LIMIT 1)")
            };
            let mut statement = conn.prepare_cached(&format!(
                "SELECT i.id, {}, {}, NOT ?1 OR NOT EXISTS (SELECT 1 FROM incidents c WHERE c.id = i.folded_into AND {})
                 FROM incidents i LEFT JOIN incidents f ON f.id = i.folded_into
                 WHERE i.folded_into IS NOT NULL AND i.sensor_normal = 0 AND i.state NOT IN ('resolved', 'closed')
                 ORDER BY {} DESC, i.id",
                latest("i"),
                latest("f"),
                takes_in(&rank_sql("i")),
                rank_sql("i")
            ))?;
            let rows = statement.query_map([folds], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?, row.get::<_, Option<String>>(2)?, row.get::<_, bool>(3)?))
            })?;
            let mut untold = Vec::new();
            for row in rows {
                let (incident, alert, cover, owed) = row?;
                let parse = |payload: Option<String>| payload.and_then(|p| serde_json::from_str::<Alert>(&p).ok());
                if let Some(alert) = parse(alert) {
                    untold.push(Untold { incident, alert, cover: parse(cover), owed });
                }
            }
            Ok(untold)
        })
        .await
    }

    /// Tells untold `incident` as a `fired` now (`alert`, its latest, addressed by the
    /// dispatcher), with its ladder — unless it cleared or was resolved meanwhile (nothing to
    /// tell), or another incident of its house takes it in (none of the `passed`: a silence
    /// keeps them from people). Returns the event as journaled when it was told.
    pub async fn tell_owed(&self, incident: i64, alert: &Alert, passed: Vec<i64>, journaling: super::Journaling) -> anyhow::Result<Option<(i64, Alert)>> {
        let mut journaled = alert.clone();
        let now = self.clock.now();
        let folds = self.folds_alarms.load(std::sync::atomic::Ordering::SeqCst);
        let unset_clock = self.unset_mark_now();
        let clock_set = self.clock.synchronized();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let still: Option<(bool, String, bool)> = tx
                .query_row("SELECT sensor_normal, state, told FROM incidents WHERE id = ?1 AND folded_into IS NOT NULL", [incident], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let stamp = Stamp { at_ms: now, clock_unset_at: unset_clock };
            let (state, told_before) = match still {
                Some((false, state, told_before)) if state != State::Resolved.as_str() && state != State::Closed.as_str() => (state, told_before),
                _ => return Ok(None),
            };
            if let Some(into) = house_of(&journaled).filter(|_| folds).map(|house| cover(&tx, incident, &house, &journaled, &passed)).transpose()?.flatten() {
                fold(&tx, incident, into, stamp)?;
                tx.commit()?;
                return Ok(None);
            }
            if told_before {
                // Told, then taken in by a worse alarm of its house that is over now: people
                // heard of it; its ladder goes on, unless a person has taken it (an outside
                // tester got its `fired` a second time, and a worker who had accepted it too).
                tx.execute("UPDATE incidents SET folded_into = NULL WHERE id = ?1", [incident])?;
                audit(&tx, incident, stamp, "gridwatch", "unfolded", None)?;
                if state == State::Open.as_str() {
                    arm(&tx, incident, &journaling.escalate, clock_set)?;
                }
                tx.commit()?;
                return Ok(None);
            }
            (journaled.event, journaled.previous_severity, journaled.at_ms, journaled.at) = (Event::Fired, None, now, crate::clock::rfc3339(now));
            let destinations = (journaling.route)(&mut journaled, incident);
            let id = super::journal::insert_event(&tx, &journaled, &destinations, journaling.not_before_ms, now, None)?;
            tx.execute("UPDATE incidents SET folded_into = NULL WHERE id = ?1", [incident])?;
            audit(&tx, incident, stamp, "gridwatch", "told", None)?;
            told(&tx, incident, &journaled, !destinations.is_empty(), folds, stamp)?;
            arm(&tx, incident, &journaling.escalate, clock_set)?;
            tx.commit()?;
            Ok(Some((id, journaled.clone())))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Journaling, Store};
    use crate::alert::tests::sample_alert;
    use crate::alert::{Alert, Audience};
    use crate::dispatch::incident::Action;
    use rusqlite::OptionalExtension;
    use std::collections::BTreeMap;

    /// A grid alert of `rule` on `sensor` of north-lane B7 (unless moved), at `severity`.
    fn alert(event: &str, rule: &str, sensor: &str, severity: &str, at_ms: i64) -> Alert {
        let mut alert = sample_alert(event, 0.5);
        (alert.rule, alert.sensor, alert.at_ms) = (rule.into(), sensor.into(), at_ms);
        alert.severity = severity.parse().unwrap();
        alert
    }

    /// Journals `alert` to the office channel with a ladder; returns its incident and whether it
    /// went anywhere.
    async fn journal(store: &Store, alert: &Alert) -> (i64, bool) {
        let newest = |store: &Store| store.lock().unwrap().query_row("SELECT coalesce(max(id), 0) FROM alert_events", [], |row| row.get::<_, i64>(0)).unwrap();
        let before = newest(store);
        let (applied, _) = store.apply_and_journal(alert, 600_000, to_office(alert.at_ms)).await.unwrap();
        let sent: i64 =
            store.lock().unwrap().query_row("SELECT count(*) FROM outbox WHERE sink = 'office' AND alert_id > ?1", [before], |row| row.get(0)).unwrap();
        (applied.incident().unwrap(), sent > 0)
    }

    fn to_office(at_ms: i64) -> Journaling {
        Journaling {
            route: Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                vec![("office".to_string(), None)]
            }),
            not_before_ms: None,
            escalate: Some((Some("grid-3".into()), at_ms, at_ms + 600_000)),
        }
    }

    /// The folded alarms owed to people now: (incident, its latest alert).
    async fn owed(store: &Store) -> Vec<(i64, Alert)> {
        store.untold_alarms().await.unwrap().into_iter().filter(|u| u.owed).map(|u| (u.incident, u.alert)).collect()
    }

    fn has_ladder(store: &Store, incident: i64) -> bool {
        store.lock().unwrap().query_row("SELECT 1 FROM escalations WHERE incident_id = ?1", [incident], |_| Ok(())).optional().unwrap().is_some()
    }

    fn state(store: &Store, incident: i64) -> String {
        store.lock().unwrap().query_row("SELECT state FROM incidents WHERE id = ?1", [incident], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_houses_further_alarms_are_folded_into_its_open_red_and_resolved_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (red, told) = journal(&store, &alert("fired", "tilt-sudden", "house-07", "danger", 1_000)).await;
        assert!(told && has_ladder(&store, red));
        // The same jump seen by the house's slower rules, and by its other box: recorded, not sent.
        let (fast, told) = journal(&store, &alert("fired", "tilt-lean-fast", "house-07", "alarm", 2_000)).await;
        assert!(!told && !has_ladder(&store, fast), "an orange under the house's open red");
        let (other_box, told) = journal(&store, &alert("fired", "tilt-danger", "house-08", "danger", 3_000)).await;
        assert!(!told && !has_ladder(&store, other_box), "another box's red under the house's open red");
        let (_, told) = journal(&store, &alert("cleared", "tilt-lean-fast", "house-07", "alarm", 4_000)).await;
        assert!(!told, "the clear of an alarm nobody was told of");
        // Another house is told.
        let mut elsewhere = alert("fired", "tilt-lean-fast", "house-21", "alarm", 5_000);
        elsewhere.building = Some("B9".into());
        assert!(journal(&store, &elsewhere).await.1, "another building");
        let mut lone = alert("fired", "tilt-lean-fast", "house-30", "alarm", 5_000);
        lone.building = None;
        assert!(journal(&store, &lone).await.1, "a house of one box outside any building");
        // The worker resolves the red: what was folded into it is resolved with it.
        store.incident_action(red, Action::Accept, "worker Li", None, 6_000).unwrap();
        assert_eq!(state(&store, fast), "open", "accepting the red does not take the others along");
        store.incident_action(red, Action::Resolve, "worker Li", Some("propped"), 7_000).unwrap();
        assert_eq!(state(&store, fast), "resolved");
        let trail = store.incident_history(fast).unwrap();
        assert!(trail.iter().any(|e| e.action == format!("folded into #{red}")), "{trail:?}");
        assert!(
            trail.iter().any(|e| e.action == "resolve" && e.actor == "worker Li" && e.note.as_deref().is_some_and(|n| n.contains(&format!("#{red}")))),
            "{trail:?}"
        );
        // The other box's red still fires and nobody was told of it: not resolved unseen, owed.
        assert_eq!(state(&store, other_box), "open");
        let owed = owed(&store).await;
        assert_eq!(owed.iter().map(|(id, a)| (*id, a.sensor.as_str())).collect::<Vec<_>>(), vec![(other_box, "house-08")]);
        let told = store.tell_owed(other_box, &owed[0].1, Vec::new(), to_office(9_000)).await.unwrap().map(|(_, alert)| alert.event);
        assert_eq!(told, Some(crate::alert::Event::Fired), "told as a fired, now");
        assert!(has_ladder(&store, other_box) && store.untold_alarms().await.unwrap().is_empty());
        assert_eq!(store.pending_delivery_counts().unwrap().get("office"), Some(&4), "red 07, the two elsewhere, and red 08 once owed");
        // The house's next orange is folded into that red now.
        assert!(!journal(&store, &alert("fired", "tilt-creep-day", "house-07", "alarm", 10_000)).await.1);
    }

    #[tokio::test]
    async fn a_folded_red_that_clears_before_it_is_told_is_owed_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (red, _) = journal(&store, &alert("fired", "tilt-sudden", "house-07", "danger", 1_000)).await;
        let (other, told) = journal(&store, &alert("fired", "tilt-danger", "house-08", "danger", 2_000)).await;
        assert!(!told);
        assert!(!journal(&store, &alert("cleared", "tilt-danger", "house-08", "danger", 3_000)).await.1, "its clear is not sent");
        store.incident_action(red, Action::Resolve, "worker Li", None, 4_000).unwrap();
        assert!(store.untold_alarms().await.unwrap().is_empty(), "it stood still again: resolved with the house");
        assert_eq!(state(&store, other), "resolved");
        // Owed, then cleared before the dispatcher's next look: nothing is told.
        let in_b3 = |event: &str, rule: &str, sensor: &str, at_ms: i64| Alert { building: Some("B3".into()), ..alert(event, rule, sensor, "danger", at_ms) };
        let (red, _) = journal(&store, &in_b3("fired", "tilt-sudden", "house-31", 5_000)).await;
        journal(&store, &in_b3("fired", "tilt-danger", "house-32", 6_000)).await;
        store.incident_action(red, Action::Resolve, "worker Li", None, 7_000).unwrap();
        let owed = owed(&store).await;
        assert_eq!(owed.len(), 1);
        journal(&store, &in_b3("cleared", "tilt-danger", "house-32", 8_000)).await;
        assert!(store.untold_alarms().await.unwrap().is_empty());
        assert_eq!(store.tell_owed(owed[0].0, &owed[0].1, Vec::new(), to_office(9_000)).await.unwrap().map(|(id, _)| id), None);
    }

    #[tokio::test]
    async fn a_red_resolved_while_it_still_fires_holds_its_house_s_lesser_alarms_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (red, _) = journal(&store, &alert("fired", "tilt-sudden", "house-07", "danger", 1_000)).await;
        store.incident_action(red, Action::Resolve, "worker Li", Some("propped"), 2_000).unwrap();
        // The jump's slower rules, hours later, while the red still fires: not sent.
        let (creep, told) = journal(&store, &alert("fired", "tilt-creep-day", "house-07", "alarm", 3_000)).await;
        assert!(!told && !has_ladder(&store, creep));
        assert!(owed(&store).await.is_empty(), "held while the red fires");
        // One that stops firing meanwhile is resolved with the red.
        let (fast, _) = journal(&store, &alert("fired", "tilt-lean-fast", "house-07", "alarm", 3_500)).await;
        journal(&store, &alert("cleared", "tilt-lean-fast", "house-07", "alarm", 3_600)).await;
        assert_eq!(state(&store, fast), "resolved");
        // A red is news after a resolved red.
        let (other, told) = journal(&store, &alert("fired", "tilt-danger", "house-08", "danger", 4_000)).await;
        assert!(told && has_ladder(&store, other), "a red after a resolved one");
        // The jump's red stands still (its clear): what it held and still fires is owed (an
        // outside tester's other box, orange since, was never told) — here to the open red.
        journal(&store, &alert("cleared", "tilt-sudden", "house-07", "danger", 5_000)).await;
        let owed_now = owed(&store).await;
        assert_eq!(owed_now.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![creep]);
        assert_eq!(store.tell_owed(creep, &owed_now[0].1, Vec::new(), to_office(5_100)).await.unwrap().map(|(id, _)| id), None, "folded into the open red");
        journal(&store, &alert("cleared", "tilt-danger", "house-08", "danger", 6_000)).await;
        let owed_now = owed(&store).await;
        assert!(store.tell_owed(creep, &owed_now[0].1, Vec::new(), to_office(6_100)).await.unwrap().is_some(), "told once nothing takes it in");
    }

    #[tokio::test]
    async fn a_worse_alarm_told_takes_in_the_lesser_ones_told_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (orange, _) = journal(&store, &alert("fired", "lean-orange", "house-07", "alarm", 1_000)).await;
        assert!(has_ladder(&store, orange));
        let (red, told) = journal(&store, &alert("fired", "lean-red", "house-07", "danger", 2_000)).await;
        assert!(told && has_ladder(&store, red));
        assert!(!has_ladder(&store, orange), "one ladder of reminders for the house (an outside tester got both, twice each)");
        assert!(store.incident_history(orange).unwrap().iter().any(|e| e.action == format!("folded into #{red}")));
        assert!(!journal(&store, &alert("cleared", "lean-orange", "house-07", "alarm", 3_000)).await.1, "its clear is part of the red now");
        store.incident_action(red, Action::Resolve, "worker Li", None, 4_000).unwrap();
        assert_eq!(state(&store, orange), "resolved");

        // Told, taken in, and firing on after the red is over: not told a second time (an outside
        // tester's worker got its `fired` again), its ladder goes on.
        let in_b3 =
            |event: &str, rule: &str, severity: &str, at_ms: i64| Alert { building: Some("B3".into()), ..alert(event, rule, "house-31", severity, at_ms) };
        let (orange, _) = journal(&store, &in_b3("fired", "lean-orange", "alarm", 5_000)).await;
        store.lock().unwrap().execute("UPDATE outbox SET state = 'delivered' WHERE alert_id = (SELECT max(id) FROM alert_events)", []).unwrap();
        journal(&store, &in_b3("fired", "lean-red", "danger", 6_000)).await;
        assert!(!has_ladder(&store, orange));
        journal(&store, &in_b3("cleared", "lean-red", "danger", 7_000)).await;
        let owed_now = owed(&store).await;
        assert_eq!(owed_now.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![orange]);
        let sent_before = store.pending_delivery_counts().unwrap().get("office").copied();
        assert_eq!(store.tell_owed(orange, &owed_now[0].1, Vec::new(), to_office(8_000)).await.unwrap().map(|(id, _)| id), None);
        assert_eq!(store.pending_delivery_counts().unwrap().get("office").copied(), sent_before, "not sent again");
        assert!(has_ladder(&store, orange) && owed(&store).await.is_empty(), "its ladder again, and nothing owed");
    }

    /// An outside tester's: a folded red stayed untold while the red it was folded into went
    /// back to orange and cleared; one folded into a red no channel delivered was sent nowhere;
    /// turning folding off left what was folded untold.
    #[tokio::test]
    async fn what_its_house_s_incident_no_longer_takes_in_is_owed_to_people() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ids = |owed: Vec<(i64, Alert)>| owed.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        journal(&store, &alert("fired", "lean-red", "house-07", "danger", 1_000)).await;
        let (red, _) = journal(&store, &alert("fired", "lean-red", "house-08", "danger", 2_000)).await;
        let (orange, _) = journal(&store, &alert("fired", "lean-orange", "house-09", "alarm", 3_000)).await;
        assert!(ids(owed(&store).await).is_empty(), "both folded into house-07's red");
        // The red it was folded into gets better: the other red is owed; then it clears: the
        // orange too.
        journal(&store, &alert("changed", "lean-red", "house-07", "alarm", 4_000)).await;
        assert_eq!(ids(owed(&store).await), vec![red]);
        journal(&store, &alert("cleared", "lean-red", "house-07", "alarm", 5_000)).await;
        assert_eq!(ids(owed(&store).await), vec![red, orange]);
        let owed_now = owed(&store).await;
        assert!(store.tell_owed(red, &owed_now[0].1, Vec::new(), to_office(6_000)).await.unwrap().is_some(), "the red told");
        assert!(has_ladder(&store, red));
        // Told, the red is the house's open alarm now: the orange folds into it.
        assert_eq!(store.tell_owed(orange, &owed_now[1].1, Vec::new(), to_office(6_000)).await.unwrap().map(|(id, _)| id), None);
        assert!(ids(owed(&store).await).is_empty());
        let folded_into: Option<i64> = store.lock().unwrap().query_row("SELECT folded_into FROM incidents WHERE id = ?1", [orange], |row| row.get(0)).unwrap();
        assert_eq!(folded_into, Some(red));

        // A red no channel delivered takes nothing in.
        let in_b3 = |event: &str, rule: &str, sensor: &str, severity: &str, at_ms: i64| Alert {
            building: Some("B3".into()),
            ..alert(event, rule, sensor, severity, at_ms)
        };
        let (undelivered, _) = journal(&store, &in_b3("fired", "lean-red", "house-31", "danger", 7_000)).await;
        store.lock().unwrap().execute("UPDATE outbox SET state = 'failed' WHERE alert_id = (SELECT max(id) FROM alert_events)", []).unwrap();
        assert!(journal(&store, &in_b3("fired", "lean-red", "house-32", "danger", 8_000)).await.1, "not folded into a red that reached nobody");
        let (folded, told) = journal(&store, &in_b3("fired", "lean-orange", "house-33", "alarm", 9_000)).await;
        assert!(!told, "folded into house-32's red");
        assert!(ids(owed(&store).await).is_empty());
        let _ = undelivered;
        // Folding turned off: what was folded is owed.
        store.fold_into_open_alarms(false);
        assert_eq!(ids(owed(&store).await), vec![orange, folded]);
    }

    /// An outside tester's: an orange held for quiet hours, then taken in by its house's red,
    /// still went out when the quiet hours ended — after the red and its reminders.
    #[tokio::test]
    async fn an_orange_held_for_quiet_hours_and_taken_in_by_a_red_is_not_sent_when_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let morning = store.clock.now() + 3_600_000;
        let held = Journaling { not_before_ms: Some(morning), ..to_office(1_000) };
        let (applied, _) = store.apply_and_journal(&alert("fired", "lean-orange", "house-09", "alarm", 1_000), 600_000, held).await.unwrap();
        let orange = applied.incident().unwrap();
        journal(&store, &alert("fired", "lean-red", "house-07", "danger", 2_000)).await;
        let due = store.due_deliveries("office", morning + 1, 50).await.unwrap();
        let due: Vec<(String, String)> = due.into_iter().map(|d| (d.alert.rule, d.alert.event.to_string())).collect();
        assert_eq!(due, vec![("lean-red".to_string(), "fired".to_string())], "the orange is not sent in the morning");
        // The red over, the orange firing on is told — as a `fired`: nobody heard of it.
        journal(&store, &alert("cleared", "lean-red", "house-07", "danger", 3_000)).await;
        let owed_now = owed(&store).await;
        assert_eq!(owed_now.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![orange]);
        let told = store.tell_owed(orange, &owed_now[0].1, Vec::new(), to_office(4_000)).await.unwrap();
        assert_eq!(told.map(|(_, alert)| alert.event.to_string()), Some("fired".to_string()));
    }

    /// An outside tester's: an orange a failing robot had not delivered yet went out after its
    /// house's red (and after the red was accepted). Taken in by the red, what of it no channel
    /// delivered is not sent (one delivered is not told again when released:
    /// `a_worse_alarm_told_takes_in_the_lesser_ones_told_before_it`).
    #[tokio::test]
    async fn an_orange_not_delivered_yet_when_its_house_s_red_takes_it_in_is_not_sent_after_the_red() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (orange, _) = journal(&store, &alert("fired", "lean-orange", "house-09", "alarm", 1_000)).await;
        journal(&store, &alert("fired", "lean-red", "house-07", "danger", 2_000)).await;
        let due = store.due_deliveries("office", i64::MAX, 50).await.unwrap();
        assert_eq!(due.iter().map(|d| d.alert.sensor.as_str()).collect::<Vec<_>>(), vec!["house-07"], "the red alone");
        let states: Vec<String> = store
            .lock()
            .unwrap()
            .prepare("SELECT state FROM outbox WHERE sink = 'office' ORDER BY alert_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(states, ["failed", "pending"], "the undelivered orange recorded as not sent");
        assert_eq!(store.not_sent_this_run().unwrap().get("office"), Some(&1), "and counted so, for `/api/balance`");
        let told: bool = store.lock().unwrap().query_row("SELECT told FROM incidents WHERE id = ?1", [orange], |row| row.get(0)).unwrap();
        assert!(!told, "nobody heard of it: told as a `fired` if it is released");
    }

    #[tokio::test]
    async fn a_folded_alarm_that_grows_worse_than_the_house_s_is_told_as_fired_with_its_ladder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        journal(&store, &alert("fired", "tilt-sudden", "house-07", "alarm", 1_000)).await;
        let (change, told) = journal(&store, &alert("fired", "tilt-change", "house-07", "warning", 2_000)).await;
        assert!(!told);
        let (_, told) = journal(&store, &alert("changed", "tilt-change", "house-07", "alarm", 3_000)).await;
        assert!(!told, "as bad as the house's orange");
        let (_, told) = journal(&store, &alert("changed", "tilt-change", "house-07", "danger", 4_000)).await;
        assert!(told && has_ladder(&store, change), "worse than the house's orange: told, with its ladder");
        let last = store.incident_history(change).unwrap();
        assert!(last.iter().any(|e| e.action == "unfolded"), "{last:?}");
        let event: String = store
            .lock()
            .unwrap()
            .query_row("SELECT event FROM alert_events WHERE rule = 'tilt-change' ORDER BY id DESC LIMIT 1", [], |row| row.get(0))
            .unwrap();
        assert_eq!(event, "fired", "nobody heard of it before: a fired, not a change");
        let (_, told) = journal(&store, &alert("cleared", "tilt-change", "house-07", "danger", 5_000)).await;
        assert!(told, "its clear too, once it was told");
    }

    #[tokio::test]
    async fn only_a_told_orange_or_red_folds_and_device_alarms_never_fold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A yellow closes by itself: it folds nothing.
        journal(&store, &alert("fired", "tilt-change", "house-07", "warning", 1_000)).await;
        assert!(journal(&store, &alert("fired", "tilt-creep-day", "house-07", "warning", 2_000)).await.1, "under a yellow");
        // A red that went nowhere (silenced) folds nothing.
        let silenced = Journaling { route: Box::new(|_, _| Vec::new()), not_before_ms: None, escalate: None };
        store.apply_and_journal(&alert("fired", "tilt-sudden", "house-07", "danger", 3_000), 600_000, silenced).await.unwrap();
        assert!(journal(&store, &alert("fired", "tilt-lean-fast", "house-07", "alarm", 4_000)).await.1, "under a silenced red");
        // Under a told orange now: installers' alarms are never folded.
        let mut device = alert("fired", "tilt-flat-line", "house-07", "warning", 5_000);
        device.audience = Audience::Installer;
        assert!(journal(&store, &device).await.1, "a device alarm");
        // A red whose sensor is normal again folds nothing.
        let mut quiet = alert("fired", "tilt-lean-fast", "house-31", "danger", 6_000);
        quiet.building = Some("B3".into());
        journal(&store, &quiet).await;
        journal(&store, &Alert { event: crate::alert::Event::Cleared, at_ms: 7_000, ..quiet.clone() }).await;
        let mut next = alert("fired", "tilt-creep-day", "house-32", "alarm", 8_000);
        next.building = Some("B3".into());
        assert!(journal(&store, &next).await.1, "under a red whose wall stands still again");
        // Turned off in the configuration: nothing folds.
        store.fold_into_open_alarms(false);
        assert!(journal(&store, &alert("fired", "tilt-danger", "house-08", "alarm", 9_000)).await.1, "folding turned off");
    }

    /// Four days of two houses' readings with the shipped tilt pack — a one-box house (B1) and a
    /// three-box building (B7), each with a daily swing, noise and its own mounting offset — then
    /// a 0.3° jump of each (B7's boxes together), two days of readings after it, and the worker
    /// resolving each red two hours after it came. Each rule event goes through the store as the
    /// dispatcher journals it; returns, per house, the events told to the office from the jump
    /// until the resolve, and after it, with `fold` on or off.
    async fn told_for_a_jump(fold: bool) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
        const MIN: i64 = 60_000;
        let mut sensors = Vec::new();
        for (id, building) in [("house-11", "B1"), ("house-71", "B7"), ("house-72", "B7"), ("house-73", "B7")] {
            let mut sensor = crate::config::SensorConfig::test_tilt(id, "north-lane");
            sensor.place =
                std::sync::Arc::new(crate::config::Place { building: Some(building.into()), grid: Some("grid-3".into()), ..(*sensor.place).clone() });
            sensors.push(sensor);
        }
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let mut engine = gridwatch_rules::Engine::new(rules, &crate::reload::subjects(&sensors));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.fold_into_open_alarms(fold);
        let start = 1_795_392_000_000i64;
        let jump_at = start + 4 * 1440 * MIN;
        let mut seed = 17u64;
        let mut noise = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.004
        };
        let offsets = [(0.42, -0.17), (-0.8, 0.3), (0.05, 0.61), (0.33, 0.33)];
        let mut told: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut red_of: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut events = Vec::new();
        for minute in 0..6 * 1440 {
            let now = start + minute * MIN;
            let day = (minute % 1440) as f64 / 1440.0;
            let temperature = 12.0 + 6.0 * (std::f64::consts::TAU * (day - 0.375)).sin();
            for (slot, (ox, oy)) in offsets.iter().enumerate() {
                let swing = 0.012 * (std::f64::consts::TAU * (day - 0.4)).sin();
                let moved = if now >= jump_at { (0.21, 0.21) } else { (0.0, 0.0) };
                let fields = [("x", ox + swing + moved.0 + noise()), ("y", oy + 0.5 * swing + moved.1 + noise()), ("temperature", temperature)];
                engine.observe(gridwatch_rules::SubjectId(slot), now, &fields, &mut events);
            }
            engine.tick(now, &mut events);
            for event in events.drain(..) {
                let rule = engine.rule(event.rule);
                let sensor = &sensors[event.subject.0];
                let mut alert = crate::pipeline::alerts::alert_of(&event, rule, sensor, Some(event.since), crate::local_time::DEFAULT, &Default::default());
                (alert.at_ms, alert.at) = (event.at, crate::clock::rfc3339(event.at));
                let house = sensor.place.building.as_deref().unwrap_or_default().to_string();
                let before = store.pending_delivery_counts().unwrap().get("office").copied().unwrap_or(0);
                let (applied, _) = store.apply_and_journal(&alert, 600_000, to_office(event.at)).await.unwrap();
                let sent = store.pending_delivery_counts().unwrap().get("office").copied().unwrap_or(0) > before;
                if alert.audience != Audience::Grid || now < jump_at || !sent {
                    continue;
                }
                let line = format!("{} {} {} {}", alert.event.as_str(), alert.severity.as_str(), alert.rule, alert.sensor);
                let entry = told.entry(house.clone()).or_default();
                if red_of.get(&house).is_some_and(|(_, at)| now >= *at) {
                    entry.1.push(line);
                } else {
                    entry.0.push(line);
                }
                if alert.event != crate::alert::Event::Cleared && alert.severity == gridwatch_rules::Severity::Danger && !red_of.contains_key(&house) {
                    red_of.insert(house, (applied.incident().unwrap(), now + 120 * MIN));
                }
            }
            for (_, (incident, at)) in red_of.iter_mut() {
                if now == *at {
                    store.incident_action(*incident, Action::Resolve, "worker Li", Some("looked: propped"), now).unwrap();
                }
            }
            // As the dispatcher does every second: what is owed to people is told.
            for untold in store.untold_alarms().await.unwrap().into_iter().filter(|u| u.owed) {
                if let Some((_, alert)) = store.tell_owed(untold.incident, &untold.alert, Vec::new(), to_office(now)).await.unwrap() {
                    let house = alert.building.clone().unwrap_or_default();
                    let line = format!("{} {} {} {}", alert.event.as_str(), alert.severity.as_str(), alert.rule, alert.sensor);
                    told.entry(house).or_default().1.push(line);
                }
            }
        }
        told
    }

    #[tokio::test]
    async fn with_the_shipped_tilt_pack_a_jump_is_one_message_per_house() {
        let folded = told_for_a_jump(true).await;
        let all = told_for_a_jump(false).await;
        eprintln!("folded: {folded:#?}\nnot folded: {all:#?}");
        for house in ["B1", "B7"] {
            let (before, after) = &folded[house];
            assert!(before.iter().all(|line| line.contains(" tilt-sudden ")), "{house}: only the jump's own incident until it was resolved: {before:?}");
            assert!(before.last().is_some_and(|line| line.contains(" danger ")), "{house}: red: {before:?}");
            // The worker resolved the red two hours after it, with what was folded into it then.
            // The house's daily level (`tilt-change`) came half a day later, while the red still
            // fired: told once the red's wall had stood still a day (its clear), as it fires on.
            assert_eq!(after.len(), 2, "{house}: after the resolve: {after:?}");
            assert!(after[0].starts_with("cleared") && after[0].contains(" tilt-sudden "), "{house}: {after:?}");
            assert!(after[1].starts_with("fired alarm tilt-change "), "{house}: {after:?}");
            let (before, after) = &all[house];
            assert!(before.len() + after.len() >= 7, "{house}: without folding: {:?}", all[house]);
        }
    }
}
