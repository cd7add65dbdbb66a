//! One house, one alarm told at a time. While a house (a building, or a sensor outside any
//! building) has an orange or red grid incident open and firing, a further grid alarm of that
//! house at or below its severity is folded into it: recorded on its own incident and in the
//! journal, but sent to nobody and given no reminders. People already on their way to the house
//! do not get the same movement again as `tilt-lean-fast`, `tilt-creep-day` and `tilt-change`
//! (an outside tester: one jump opened four grid incidents, a whole building's jump ten to
//! thirteen, each with its own reminders and escalations), nor a discharge once per indicator.
//!
//! A folded incident is told after all when it rises above every open alarm of its house (as a
//! `fired`: nobody heard of it before), is not told when it clears, and is resolved (or closed)
//! with the incident it was folded into. Only orange and red fold others: they wait for a person
//! to resolve them, so what was folded is resolved by that person, never left firing untold
//! behind an alarm that closed by itself. An incident that was not told (silenced, or no channel
//! for it) folds nothing.

use super::incidents::{audit, Stamp};
use crate::alert::{Alert, Audience, Event};
use crate::dispatch::incident::{Action, State};
use rusqlite::{params, OptionalExtension, Transaction};

/// What becomes of a grid event's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fold {
    /// Sent as it is.
    Tell,
    /// Sent as a `fired`: an incident folded until now rose above every alarm of its house.
    TellAsFired,
    /// Not sent: folded into this incident of its house.
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

const RANK_SQL: &str = "CASE severity WHEN 'danger' THEN 3 WHEN 'alarm' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END";

fn rank(alert: &Alert) -> i64 {
    match alert.severity {
        gridwatch_rules::Severity::Danger => 3,
        gridwatch_rules::Severity::Alarm => 2,
        gridwatch_rules::Severity::Warning => 1,
        gridwatch_rules::Severity::Notice => 0,
    }
}

/// Decides whether `alert` (as it is journaled, on `incident`) is told, and records on the
/// incident its house and what it was folded into. `enabled`: the configuration folds
/// (`[alerts] fold_into_open_alarm`).
pub(super) fn decide(tx: &Transaction<'_>, incident: i64, alert: &Alert, enabled: bool, stamp: Stamp) -> rusqlite::Result<Fold> {
    let Some(house) = house_of(alert) else { return Ok(Fold::Tell) };
    tx.execute("UPDATE incidents SET house = ?2 WHERE id = ?1", params![incident, house])?;
    let folded: Option<i64> = tx.query_row("SELECT folded_into FROM incidents WHERE id = ?1", [incident], |row| row.get(0))?;
    match (alert.event, folded) {
        (Event::Cleared, Some(into)) => return Ok(Fold::Keep(into)),
        // An alarm that opens, or one folded so far that changes.
        (Event::Fired, _) | (Event::Changed, Some(_)) => {}
        _ => return Ok(Fold::Tell),
    }
    let cover: Option<(i64, String)> = if enabled {
        tx.query_row(
            &format!(
                "SELECT id, rule FROM incidents WHERE house = ?1 AND id != ?2 AND told = 1 AND folded_into IS NULL AND sensor_normal = 0
                    AND state IN ('open', 'accepted', 'on_site') AND severity IN ('alarm', 'danger') AND {RANK_SQL} >= ?3
                  ORDER BY {RANK_SQL} DESC, id LIMIT 1"
            ),
            params![house, incident, rank(alert)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
    } else {
        None
    };
    match cover {
        Some((into, rule)) => {
            tracing::info!(incident, into, rule = %alert.rule, sensor = %alert.sensor, event = %alert.event, "folded into its house's open alarm: recorded, not sent");
            if folded != Some(into) {
                tx.execute("UPDATE incidents SET folded_into = ?2, told = 0 WHERE id = ?1", params![incident, into])?;
                audit(tx, incident, stamp, "gridwatch", &format!("folded into #{into}"), Some(&format!("{rule} is open at the same house; not sent")))?;
            }
            Ok(Fold::Keep(into))
        }
        None => {
            tx.execute("UPDATE incidents SET folded_into = NULL WHERE id = ?1", [incident])?;
            if folded.is_some() {
                audit(tx, incident, stamp, "gridwatch", "unfolded", Some("worse than every open alarm of its house; told"))?;
                return Ok(Fold::TellAsFired);
            }
            Ok(Fold::Tell)
        }
    }
}

/// Records whether a grid incident that opened (or was unfolded) was told: one that went nowhere
/// (silenced, no channel for it) folds nothing into it.
pub(super) fn told(tx: &Transaction<'_>, incident: i64, alert: &Alert, to_someone: bool) -> rusqlite::Result<()> {
    if alert.audience == Audience::Grid && alert.event == Event::Fired {
        tx.execute("UPDATE incidents SET told = ?2 WHERE id = ?1", params![incident, to_someone])?;
    }
    Ok(())
}

/// A person's resolve or close of incident `into` takes the incidents folded into it along, each
/// as far as its own state allows; returns their ids.
pub(super) fn take_folded_along(tx: &Transaction<'_>, into: i64, action: Action, actor: &str, stamp: Stamp) -> rusqlite::Result<Vec<i64>> {
    if !matches!(action, Action::Resolve | Action::Close) {
        return Ok(Vec::new());
    }
    let folded: Vec<(i64, String)> = {
        let mut statement = tx.prepare_cached("SELECT id, state FROM incidents WHERE folded_into = ?1 AND state NOT IN ('resolved', 'closed')")?;
        let rows = statement.query_map([into], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut taken = Vec::new();
    for (id, state) in folded {
        let Ok(next) = state.parse::<State>().and_then(|state| action.next(state)) else { continue };
        let closed = (next == State::Closed).then_some(stamp.at_ms);
        tx.execute("UPDATE incidents SET state = ?1, updated_ms = ?2, closed_ms = ?3 WHERE id = ?4", params![next.as_str(), stamp.at_ms, closed, id])?;
        audit(tx, id, stamp, actor, action.as_str(), Some(&format!("随 #{into} 一并{}", if action == Action::Resolve { "办结" } else { "关闭" })))?;
        taken.push(id);
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::super::{Journaling, Store};
    use crate::alert::tests::sample_alert;
    use crate::alert::{Alert, Audience};
    use crate::dispatch::incident::Action;
    use rusqlite::OptionalExtension;

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
        let before = store.pending_delivery_counts().unwrap().get("office").copied().unwrap_or(0);
        let journaling = Journaling {
            route: Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                vec![("office".to_string(), None)]
            }),
            not_before_ms: None,
            escalate: Some((Some("grid-3".into()), alert.at_ms, alert.at_ms + 600_000)),
        };
        let (applied, _) = store.apply_and_journal(alert, 600_000, journaling).await.unwrap();
        let after = store.pending_delivery_counts().unwrap().get("office").copied().unwrap_or(0);
        (applied.incident().unwrap(), after > before)
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
        assert_eq!((state(&store, fast), state(&store, other_box)), ("resolved".to_string(), "resolved".to_string()));
        let trail = store.incident_history(other_box).unwrap();
        assert!(trail.iter().any(|e| e.action == format!("folded into #{red}")), "{trail:?}");
        assert!(trail.iter().any(|e| e.action == "resolve" && e.note.as_deref().is_some_and(|n| n.contains(&format!("#{red}")))), "{trail:?}");
        assert!(trail.iter().any(|e| e.action == "resolve" && e.actor == "worker Li"), "{trail:?}");
        // Resolved: the house has no open alarm now, and the next one is told.
        assert!(journal(&store, &alert("fired", "tilt-creep-day", "house-07", "alarm", 8_000)).await.1);
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
}
