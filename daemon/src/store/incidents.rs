//! Incidents and their audit trail in the store (see [`crate::dispatch::incident`] for the states).
//!
//! The incident store is the truth of what is firing: a rule event that would not change it (a
//! `fired` for an incident already firing at that severity, a `cleared` for one not firing or
//! not there) is a repeat — after a crash the readings since the last saved rule state are
//! judged again — and is not sent to anyone ([`Applied::Repeat`]).

use super::folding::Fold;
use super::Destination;
use super::Store;
use crate::alert::{Alert, Event};
use crate::dispatch::incident::{closes_when_sensor_clears, Action, State};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

/// An incident as listed and shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRow {
    pub id: i64,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub worst_severity: String,
    pub state: String,
    pub sensor_normal: bool,
    pub firings: i64,
    pub last_value: f64,
    pub opened_ms: i64,
    /// False while `opened_ms` was stamped by a clock that was not set (not re-stamped yet, or
    /// never can be): people read "time unknown".
    pub opened_known: bool,
    pub updated_ms: i64,
    /// The incident of the same house it was folded into (not told; see [`super::folding`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<i64>,
}

/// One line of an incident's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// False while `at_ms` was stamped by a clock that was not set: people read "time unknown".
    pub at_known: bool,
    pub actor: String,
    pub action: String,
    pub note: Option<String>,
}

/// What a rule event did to its incident, and so whether it is news for anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The incident moved: the event goes out as it is.
    News(i64),
    /// A `fired` for an incident already firing at another severity: it goes out as `changed`
    /// from that severity.
    Changed { incident: i64, previous: String },
    /// The incident already stands where the event would put it (or a clear found nothing
    /// firing): nothing to send.
    Repeat(Option<i64>),
}

impl Applied {
    /// The incident the event belongs to, if any.
    pub fn incident(&self) -> Option<i64> {
        match self {
            Applied::News(id) | Applied::Changed { incident: id, .. } | Applied::Repeat(Some(id)) => Some(*id),
            Applied::Repeat(None) => None,
        }
    }
}

const SEVERITIES: [&str; 4] = ["notice", "warning", "alarm", "danger"];

fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

/// When an audit line happened: its wall time, and its mark when a clock that was not set
/// stamped it ([`super::restamp`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub at_ms: i64,
    pub clock_unset_at: Option<i64>,
}

pub(super) fn audit(tx: &Transaction<'_>, incident: i64, at: Stamp, actor: &str, action: &str, note: Option<&str>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO incident_events (incident_id, at_ms, actor, action, note, clock_unset_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![incident, at.at_ms, actor, action, note, at.clock_unset_at],
    )?;
    Ok(())
}

impl Store {
    /// Applies a rule event to its incident (opening, updating, re-opening or marking it
    /// sensor-normal), unless the incident already stands there (a repeat after a crash). Not
    /// journaled: see [`Store::apply_and_journal`].
    pub async fn apply_alert(&self, alert: &Alert, flap_window_ms: i64) -> anyhow::Result<Applied> {
        let alert = alert.clone();
        let unset_clock = self.unset_mark_of(&alert);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let applied = apply_in(&tx, &alert, flap_window_ms, unset_clock.map(|u| u.0))?;
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    /// Applies a rule event to its incident and, when it is news, journals it in the same
    /// transaction — so an event is either in both or in neither, and judging it again after a
    /// crash finds it. Returns the journal id and the alert as journaled (a `fired` for an
    /// incident still firing becomes `changed`).
    pub async fn apply_and_journal(&self, alert: &Alert, flap_window_ms: i64, journaling: Journaling) -> anyhow::Result<(Applied, Option<(i64, Alert)>)> {
        let alert = alert.clone();
        let journaling = std::sync::Arc::new(journaling);
        let now = self.clock.now();
        let unset_clock = self.unset_mark_of(&alert);
        let clock_set = self.clock.synchronized();
        let folds = self.folds_alarms.load(std::sync::atomic::Ordering::SeqCst);
        self.with_conn_or_settle(
            move |conn| {
                let tx = conn.transaction()?;
                // Where the incident stood: whether a person's action or a close had ended its
                // ladder (a change of severity that opens it again — a resolved orange house gone
                // red — starts its ladder as a fired does; an outside tester's red got no reminder
                // nor escalation), and the worst it had been.
                let before: Option<(String, String)> = tx
                    .query_row(
                        "SELECT state, worst_severity FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state != 'closed'",
                        params![alert.rule, alert.sensor],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                let ladder_ended = before.as_ref().is_none_or(|(state, _)| state == State::Resolved.as_str());
                let worst_before = before.map(|(_, worst)| worst);
                let applied = apply_in(&tx, &alert, flap_window_ms, unset_clock.map(|u| u.0))?;
                let (incident, previous) = match &applied {
                    Applied::Repeat(_) => {
                        tx.commit()?;
                        return Ok((applied, None));
                    }
                    Applied::News(id) => (*id, None),
                    Applied::Changed { incident, previous } => (*incident, Some(previous.clone())),
                };
                let mut journaled = alert.clone();
                if let Some(previous) = previous {
                    (journaled.event, journaled.previous_severity) = (Event::Changed, previous.parse().ok());
                }
                if journaled.event == Event::Cleared {
                    // A clear must not send people on site to resolve what a person resolved.
                    let state: String = tx.query_row("SELECT state FROM incidents WHERE id = ?1", [incident], |row| row.get(0))?;
                    journaled.incident_resolved = state == State::Resolved.as_str() || state == State::Closed.as_str();
                }
                let stamp = Stamp { at_ms: alert.at_ms, clock_unset_at: unset_clock.map(|u| u.0) };
                let fold = super::folding::decide(&tx, incident, &journaled, folds, stamp)?;
                match fold {
                    Fold::TellAsFired => (journaled.event, journaled.previous_severity) = (Event::Fired, None),
                    Fold::Keep(into) => journaled.folded_into = Some(into),
                    Fold::Tell => {}
                }
                let mut destinations = (journaling.route)(&mut journaled, incident);
                match fold {
                    // The console's log shows it (marked); no person's channel gets it.
                    Fold::Keep(_) => destinations.retain(|(sink, _)| sink == crate::sinks::console::NAME),
                    Fold::Tell | Fold::TellAsFired => super::folding::told(&tx, incident, &journaled, !destinations.is_empty(), folds, stamp)?,
                }
                // A folded alarm waits for no grouping nor quiet hours: it goes to nobody but the log.
                let not_before = if matches!(fold, Fold::Keep(_)) { None } else { journaling.not_before_ms };
                let id = super::journal::insert_event(&tx, &journaled, &destinations, not_before, now, unset_clock)?;
                let opened = matches!(fold, Fold::Tell | Fold::TellAsFired)
                    && (journaled.event == Event::Fired || (journaled.event == Event::Changed && ladder_ended));
                // Worse than it ever was (a house gone from yellow to red): the new severity's
                // ladder runs from now, as for an alarm that fired at it — the yellow's first
                // reminder was an hour off, and a red that went through yellow got neither a
                // reminder nor an escalation (an outside tester). The reminders' numbering goes
                // on. A fall keeps the ladder of the worst (`escalation_clocks`).
                let rose = !matches!(fold, Fold::Keep(_)) && journaled.event == Event::Changed && worst_before.is_some_and(|worst| rank(alert.severity.as_str()) > rank(&worst));
                if let (Some((grid, armed_ms, first_due_ms)), true) = (&journaling.escalate, opened || rose) {
                    if rose && !opened {
                        tx.execute(
                            "UPDATE escalations SET armed_ms = ?2, next_due_ms = ?3, next_due_age_ms = ?3 - ?2, age_ms = 0, aged_at_ms = ?4,
                                    reminders = 0, level = 0, missed = 0 WHERE incident_id = ?1",
                            params![incident, armed_ms, first_due_ms, clock_set.then_some(*armed_ms)],
                        )?;
                    }
                    tx.execute(
                        "INSERT OR IGNORE INTO escalations (incident_id, grid, armed_ms, next_due_ms, next_due_age_ms, aged_at_ms) VALUES (?1, ?2, ?3, ?4, ?4 - ?3, ?5)",
                        params![incident, grid, armed_ms, first_due_ms, clock_set.then_some(*armed_ms)],
                    )?;
                }
                tx.commit()?;
                Ok((applied, Some((id, journaled))))
            },
            move |conn, (_, journaled)| {
                // The dispatcher sent it from memory when the store did not answer.
                if let Some((id, _)) = journaled {
                    super::journal::settle_sent_from_memory(conn, &[*id], now)?;
                }
                Ok(())
            },
        )
        .await
    }

    /// A person's action on an incident, checked against its state and recorded (on a store
    /// copied into memory, kept beside the card too: [`Store::record_work`]).
    pub fn incident_action(&self, id: i64, action: Action, actor: &str, note: Option<&str>, now_ms: i64) -> anyhow::Result<State> {
        let stamp = Stamp { at_ms: now_ms, clock_unset_at: self.unset_mark_now() };
        let taking = super::incident_work::Taking { work: &super::Work::Move(action), actor, owner: None, note, photo: None, check_in: None, stamp };
        self.take_step(id, taking, super::incident_work::Keep::BesideCard)
    }

    /// (rule, sensor) of the incidents not closed whose sensor is firing.
    pub fn firing_incidents(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare_cached("SELECT rule, sensor FROM incidents WHERE state != 'closed' AND sensor_normal = 0")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// (rule, sensor) of the incidents open (not resolved nor closed) whose sensor is firing.
    pub fn firing_unresolved_incidents(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare_cached("SELECT rule, sensor FROM incidents WHERE state NOT IN ('closed', 'resolved') AND sensor_normal = 0")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Notes that the firing incidents of these (rule, sensor) started afresh (their rule changed)
    /// and are to be settled at their sensor's next reading; kept, so that a restart before that
    /// reading still settles them ([`Store::afresh_incidents`]).
    pub fn keep_afresh(&self, keys: &[(String, String)]) -> anyhow::Result<()> {
        self.essential(|conn| {
            let tx = conn.transaction()?;
            for (rule, sensor) in keys {
                tx.execute(
                    "UPDATE incidents SET afresh = 1 WHERE rule = ?1 AND sensor = ?2 AND state != 'closed' AND sensor_normal = 0",
                    params![rule, sensor],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// (rule, sensor) of the firing incidents kept as started afresh and not settled yet.
    pub fn afresh_incidents(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare_cached("SELECT rule, sensor FROM incidents WHERE state != 'closed' AND sensor_normal = 0 AND afresh = 1")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The incident of (rule, sensor) started afresh is settled: its alarm goes on, or its sensor
    /// was judged afresh.
    pub fn settled_afresh(&self, rule: &str, sensor: &str) -> anyhow::Result<()> {
        self.essential(|conn| {
            Ok(conn.execute("UPDATE incidents SET afresh = 0 WHERE rule = ?1 AND sensor = ?2 AND afresh = 1", params![rule, sensor]).map(drop)?)
        })
    }

    /// Marks normal the sensor of each incident not closed whose sensor is firing and whose rule
    /// `held_open(rule, sensor)` says the engine no longer holds open: the rule's definition
    /// changed and its state started afresh. Its next alarm is then news, told to
    /// people, and not taken for the one the incident holds — a threshold lowered while the rule
    /// fired hid the next real breach, and a resolve after it too (an outside tester). Returns the
    /// incidents marked.
    pub fn judged_afresh(&self, held_open: impl Fn(&str, &str) -> bool, why: &str, now_ms: i64) -> anyhow::Result<Vec<i64>> {
        let stamp = Stamp { at_ms: now_ms, clock_unset_at: self.unset_mark_now() };
        self.essential(|conn| {
            let tx = conn.transaction()?;
            let firing: Vec<(i64, String, String)> = {
                let mut statement = tx.prepare("SELECT id, rule, sensor FROM incidents WHERE state != 'closed' AND sensor_normal = 0")?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut marked = Vec::new();
            for (id, rule, _) in firing.into_iter().filter(|(_, rule, sensor)| !held_open(rule, sensor)) {
                tx.execute("UPDATE incidents SET sensor_normal = 1, afresh = 0, updated_ms = ?1 WHERE id = ?2", params![now_ms, id])?;
                audit(&tx, id, stamp, "rules", &format!("{why} ({rule}): its next alarm is told"), None)?;
                marked.push(id);
            }
            tx.commit()?;
            Ok(marked)
        })
    }

    /// Where incident `id` stands now (a step taken in memory included); `None`: no such incident.
    pub async fn incident_state(&self, id: i64) -> anyhow::Result<Option<State>> {
        if let Some(state) = self.state_from_memory(id) {
            return Ok(Some(state));
        }
        let state: Option<String> =
            self.with_conn(move |conn| Ok(conn.query_row("SELECT state FROM incidents WHERE id = ?1", [id], |row| row.get(0)).optional()?)).await?;
        state.map(|state| state.parse().map_err(anyhow::Error::msg)).transpose()
    }

    /// Incidents, newest first; only those not closed unless `all`.
    pub fn incidents(&self, all: bool) -> anyhow::Result<Vec<IncidentRow>> {
        let conn = self.lock()?;
        let sql = format!(
            "SELECT id, rule, sensor, severity, worst_severity, state, sensor_normal, firings, last_value, opened_ms, updated_ms,
                    NOT EXISTS (SELECT 1 FROM incident_events e WHERE e.clock_unset_at IS NOT NULL AND e.incident_id = incidents.id AND e.at_ms = incidents.opened_ms),
                    folded_into
             FROM incidents {} ORDER BY id DESC",
            if all { "" } else { "WHERE state != 'closed'" }
        );
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map([], |row| {
            Ok(IncidentRow {
                id: row.get(0)?,
                rule: row.get(1)?,
                sensor: row.get(2)?,
                severity: row.get(3)?,
                worst_severity: row.get(4)?,
                state: row.get(5)?,
                sensor_normal: row.get::<_, i64>(6)? != 0,
                firings: row.get(7)?,
                last_value: row.get(8)?,
                opened_ms: row.get(9)?,
                opened_known: row.get(11)?,
                updated_ms: row.get(10)?,
                folded_into: row.get(12)?,
            })
        })?;
        let mut rows: Vec<IncidentRow> = rows.collect::<Result<_, _>>()?;
        // Steps taken in memory while the card cannot write move the incident all the same.
        for row in &mut rows {
            if let Some(state) = self.state_from_memory(row.id) {
                row.state = state.as_str().to_string();
            }
        }
        Ok(rows)
    }

    /// (rule, sensor) of the incidents a person resolved whose sensor has not cleared: their
    /// rule may be waiting out a clear hold, which the resolve ends
    /// ([`gridwatch_rules::Engine::end_clear_holds`]).
    pub async fn resolved_while_firing(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached("SELECT rule, sensor FROM incidents WHERE state = 'resolved' AND sensor_normal = 0")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Whether the journal holds a rule event of (`rule`, `sensor`) later than `at_ms`: one sent
    /// from memory before it is history, and recording it now would move its incident back.
    pub async fn later_event_journaled(&self, rule: &str, sensor: &str, at_ms: i64) -> anyhow::Result<bool> {
        let (rule, sensor) = (rule.to_string(), sensor.to_string());
        self.with_conn(move |conn| {
            let later = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM alert_events WHERE sensor = ?1 AND at_ms > ?2 AND rule = ?3 AND event IN ('fired', 'changed', 'cleared'))",
                params![sensor, at_ms, rule],
                |row| row.get(0),
            )?;
            Ok(later)
        })
        .await
    }

    /// The incident a clear of (`rule`, `sensor`) would close: the latest not closed whose
    /// sensor is still firing. A read: it works on a read-only card.
    pub fn firing_incident(&self, rule: &str, sensor: &str) -> anyhow::Result<Option<i64>> {
        let conn = self.lock()?;
        // The incident `apply_in` would apply the clear to.
        let mut statement =
            conn.prepare_cached("SELECT id, sensor_normal FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state != 'closed' ORDER BY id DESC LIMIT 1")?;
        let current: Option<(i64, bool)> = statement.query_row(params![rule, sensor], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? != 0))).optional()?;
        Ok(current.and_then(|(id, sensor_normal)| (!sensor_normal).then_some(id)))
    }

    /// How many incidents are open (not resolved, not closed: nobody has to act on those), per severity, worst first (severities without one left
    /// out). Counted by the database: after a bus outage ten thousand no-data incidents can be
    /// open, and this runs every few seconds.
    pub fn open_incident_counts(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let conn = self.lock()?;
        // An alarm folded into its house's incident is part of that one (`folding`).
        let mut statement = conn
            .prepare_cached("SELECT severity, COUNT(*) FROM incidents WHERE state NOT IN ('resolved', 'closed') AND folded_into IS NULL GROUP BY severity")?;
        let mut counts = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?.collect::<Result<Vec<_>, _>>()?;
        counts.sort_by_key(|(severity, _)| std::cmp::Reverse(rank(severity)));
        Ok(counts.into_iter().map(|(severity, n)| (severity, usize::try_from(n).unwrap_or(0))).collect())
    }

    /// An incident's audit trail, oldest first.
    /// Every transition of every incident at or after `since_ms`, oldest first, with the
    /// incident's rule, sensor and severity: the audit trail for export.
    pub fn audit_trail(&self, since_ms: i64) -> anyhow::Result<Vec<(IncidentRow, AuditEntry)>> {
        let incidents: std::collections::HashMap<i64, IncidentRow> = self.incidents(true)?.into_iter().map(|r| (r.id, r)).collect();
        let conn = self.lock()?;
        let mut statement =
            conn.prepare("SELECT incident_id, at_ms, actor, action, note, clock_unset_at IS NULL FROM incident_events WHERE at_ms >= ?1 ORDER BY at_ms, id")?;
        let rows = statement.query_map([since_ms], |row| {
            Ok((row.get::<_, i64>(0)?, AuditEntry { at_ms: row.get(1)?, at_known: row.get(5)?, actor: row.get(2)?, action: row.get(3)?, note: row.get(4)? }))
        })?;
        let mut trail = Vec::new();
        for row in rows {
            let (id, entry) = row?;
            if let Some(incident) = incidents.get(&id) {
                trail.push((incident.clone(), entry));
            }
        }
        Ok(trail)
    }

    pub fn incident_history(&self, id: i64) -> anyhow::Result<Vec<AuditEntry>> {
        let conn = self.lock()?;
        let mut statement =
            conn.prepare("SELECT at_ms, actor, action, note, clock_unset_at IS NULL FROM incident_events WHERE incident_id = ?1 ORDER BY id")?;
        let rows = statement
            .query_map([id], |row| Ok(AuditEntry { at_ms: row.get(0)?, at_known: row.get(4)?, actor: row.get(1)?, action: row.get(2)?, note: row.get(3)? }))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// Addresses an alert (and its incident id) to the channels and people it goes to.
pub type Route = Box<dyn Fn(&mut Alert, i64) -> Vec<Destination> + Send + Sync>;

/// How a news event is journaled once its incident is known.
pub struct Journaling {
    /// Fills in the incident (and what derives from it: the links) and names the channels, each
    /// with its own copy when it differs.
    pub route: Route,
    /// Deliveries wait until then (quiet hours, digest, group window).
    pub not_before_ms: Option<i64>,
    /// When it fires: start the incident's escalation clocks (grid, armed at, first step due).
    pub escalate: Option<(Option<String>, i64, i64)>,
}

impl std::fmt::Debug for Journaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journaling").field("not_before_ms", &self.not_before_ms).field("escalate", &self.escalate).finish_non_exhaustive()
    }
}

/// Applies `alert` to its incident inside `tx` (see [`Store::apply_alert`]).
/// `clock_unset_at`: the mark of the alert's time when an unset clock stamped it.
fn apply_in(tx: &Transaction<'_>, alert: &Alert, flap_window_ms: i64, clock_unset_at: Option<i64>) -> anyhow::Result<Applied> {
    let now = alert.at_ms;
    let stamp = Stamp { at_ms: now, clock_unset_at };
    let current: Option<(i64, String, String, bool, String)> = tx
        .query_row(
            "SELECT id, severity, worst_severity, sensor_normal, state FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state != 'closed' ORDER BY id DESC LIMIT 1",
            params![alert.rule, alert.sensor],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<_, i64>(3)? != 0, row.get(4)?)),
        )
        .optional()?;
    // The very same judgement (same rule, sensor, kind, severity and time) already journaled: a
    // reading judged again after a crash. (Without the severity, a building's red coming at the
    // same moment as its orange — two boxes that moved together — was taken for a repeat.)
    let kinds: &[&str] = if alert.event == Event::Cleared { &["cleared"] } else { &["fired", "changed"] };
    let judged_before: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM alert_events WHERE sensor = ?1 AND at_ms = ?2 AND rule = ?3 AND event IN (?4, ?5) AND severity = ?6)",
        params![alert.sensor, alert.at_ms, alert.rule, kinds[0], kinds[kinds.len() - 1], alert.severity.as_str()],
        |row| row.get(0),
    )?;
    if judged_before {
        return Ok(Applied::Repeat(current.map(|(id, ..)| id)));
    }
    let applied = match (alert.event, current) {
        (Event::Fired | Event::Changed, Some((id, severity, _, false, _))) if severity == alert.severity.as_str() => Applied::Repeat(Some(id)),
        // Better than when a worker resolved it (a red house back to orange): noted, not news —
        // it re-opened the incident with reminders and escalations (an outside tester).
        (Event::Changed, Some((id, severity, _, _, state))) if state == State::Resolved.as_str() && rank(alert.severity.as_str()) < rank(&severity) => {
            tx.execute(
                "UPDATE incidents SET severity = ?1, last_value = ?2, updated_ms = ?3 WHERE id = ?4",
                params![alert.severity.as_str(), alert.value, now, id],
            )?;
            audit(tx, id, stamp, "rules", &format!("changed {} (after it was resolved: not re-opened)", alert.severity), None)?;
            Applied::Repeat(Some(id))
        }
        // Fired again, or worse, after a worker resolved it: the problem is back, the incident is
        // open again and its ladder starts over (see `Store::apply_and_journal`).
        (Event::Fired | Event::Changed, Some((id, _, worst, _, state))) if state == State::Resolved.as_str() => {
            let worst = if rank(alert.severity.as_str()) > rank(&worst) { alert.severity.as_str().to_string() } else { worst };
            tx.execute(
                "UPDATE incidents SET state = 'open', severity = ?1, worst_severity = ?2, sensor_normal = 0, firings = firings + 1, last_value = ?3, updated_ms = ?4 WHERE id = ?5",
                params![alert.severity.as_str(), worst, alert.value, now, id],
            )?;
            audit(tx, id, stamp, "rules", &format!("re-opened {} (fired again after it was resolved)", alert.severity), None)?;
            tx.execute("DELETE FROM escalations WHERE incident_id = ?1", [id])?;
            Applied::News(id)
        }
        (Event::Fired | Event::Changed, Some((id, severity, worst, sensor_normal, _))) => {
            let worst = if rank(alert.severity.as_str()) > rank(&worst) { alert.severity.as_str().to_string() } else { worst };
            // A fired while the incident is still firing is a change of severity.
            let fired_again = alert.event == Event::Fired && sensor_normal;
            tx.execute(
                "UPDATE incidents SET severity = ?1, worst_severity = ?2, sensor_normal = 0, firings = firings + ?3, last_value = ?4, updated_ms = ?5 WHERE id = ?6",
                params![alert.severity.as_str(), worst, i64::from(fired_again), alert.value, now, id],
            )?;
            let event = if sensor_normal { alert.event.as_str() } else { "changed" };
            audit(tx, id, stamp, "rules", &format!("{event} {}", alert.severity), None)?;
            match (alert.event, sensor_normal) {
                (Event::Fired, false) => Applied::Changed { incident: id, previous: severity },
                _ => Applied::News(id),
            }
        }
        (Event::Fired | Event::Changed, None) => {
            let recent: Option<i64> = tx
                .query_row(
                    "SELECT id FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state = 'closed' AND closed_ms >= ?3 ORDER BY id DESC LIMIT 1",
                    params![alert.rule, alert.sensor, now - flap_window_ms],
                    |row| row.get(0),
                )
                .optional()?;
            match recent {
                Some(id) => {
                    tx.execute(
                        "UPDATE incidents SET state = 'open', severity = ?1, sensor_normal = 0, firings = firings + 1, last_value = ?2, updated_ms = ?3, closed_ms = NULL WHERE id = ?4",
                        params![alert.severity.as_str(), alert.value, now, id],
                    )?;
                    audit(tx, id, stamp, "rules", &format!("re-opened {} (fired again within the flap window)", alert.severity), None)?;
                    Applied::News(id)
                }
                None => {
                    tx.execute(
                        "INSERT INTO incidents (rule, sensor, severity, worst_severity, state, last_value, opened_ms, updated_ms) VALUES (?1, ?2, ?3, ?3, 'open', ?4, ?5, ?5)",
                        params![alert.rule, alert.sensor, alert.severity.as_str(), alert.value, now],
                    )?;
                    let id = tx.last_insert_rowid();
                    audit(tx, id, stamp, "rules", &format!("fired {}", alert.severity), None)?;
                    Applied::News(id)
                }
            }
        }
        (_, Some((id, _, _, true, _))) => Applied::Repeat(Some(id)),
        (_, Some((id, _, worst, false, _))) => {
            tx.execute("UPDATE incidents SET sensor_normal = 1, afresh = 0, last_value = ?1, updated_ms = ?2 WHERE id = ?3", params![alert.value, now, id])?;
            audit(tx, id, stamp, "rules", "sensor normal", None)?;
            if closes_when_sensor_clears(&worst) {
                tx.execute("UPDATE incidents SET state = 'closed', closed_ms = ?1 WHERE id = ?2", params![now, id])?;
                audit(tx, id, stamp, "rules", "closed (minor, sensor normal)", None)?;
            }
            Applied::News(id)
        }
        // The clear of an incident a person closed while it still fired: the people who got the
        // alarm hear it is over (a dashboard kept the house orange; an outside tester).
        (Event::Cleared, None) => {
            let closed_firing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state = 'closed' AND sensor_normal = 0 ORDER BY id DESC LIMIT 1",
                    params![alert.rule, alert.sensor],
                    |row| row.get(0),
                )
                .optional()?;
            match closed_firing {
                Some(id) => {
                    tx.execute(
                        "UPDATE incidents SET sensor_normal = 1, afresh = 0, last_value = ?1, updated_ms = ?2 WHERE id = ?3",
                        params![alert.value, now, id],
                    )?;
                    audit(tx, id, stamp, "rules", "sensor normal (after it was closed)", None)?;
                    Applied::News(id)
                }
                None => Applied::Repeat(None),
            }
        }
        (_, None) => Applied::Repeat(None),
    };
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    fn event(kind: &str, severity: &str, at_ms: i64) -> Alert {
        let mut alert = sample_alert(kind, 0.5);
        alert.severity = severity.parse().unwrap();
        alert.at_ms = at_ms;
        alert
    }

    #[tokio::test]
    async fn repeated_firings_and_changes_update_one_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.apply_alert(&event("fired", "alarm", 1_000), 600_000).await.unwrap().incident().unwrap();
        let b = store.apply_alert(&event("changed", "danger", 2_000), 600_000).await.unwrap().incident().unwrap();
        assert_eq!(a, b);
        let rows = store.incidents(false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].severity.as_str(), rows[0].worst_severity.as_str(), rows[0].state.as_str()), ("danger", "danger", "open"));
    }

    #[tokio::test]
    async fn open_incidents_are_counted_per_severity_worst_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.open_incident_counts().unwrap(), vec![]);
        for (sensor, severity) in [("house-01", "warning"), ("house-02", "danger"), ("house-03", "warning")] {
            let mut alert = event("fired", severity, 1_000);
            alert.sensor = sensor.into();
            store.apply_alert(&alert, 600_000).await.unwrap().incident().unwrap();
        }
        let mut cleared = event("cleared", "warning", 2_000);
        cleared.sensor = "house-03".into();
        store.apply_alert(&cleared, 600_000).await.unwrap().incident().unwrap();
        assert_eq!(
            store.open_incident_counts().unwrap(),
            vec![("danger".to_string(), 1), ("warning".to_string(), 1)],
            "a warning whose sensor cleared is closed"
        );
    }

    #[tokio::test]
    async fn a_danger_incident_waits_for_a_person_after_the_sensor_clears() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&event("fired", "danger", 1_000), 600_000).await.unwrap().incident().unwrap();
        store.apply_alert(&event("cleared", "danger", 2_000), 600_000).await.unwrap().incident().unwrap();
        let row = &store.incidents(false).unwrap()[0];
        assert!(row.sensor_normal && row.state == "open");
        assert_eq!(store.incident_action(id, Action::Accept, "worker Li", None, 3_000).unwrap(), State::Accepted);
        assert_eq!(store.incident_action(id, Action::OnSite, "worker Li", None, 4_000).unwrap(), State::OnSite);
        assert_eq!(store.incident_action(id, Action::Resolve, "worker Li", Some("crack sealed, wall propped"), 5_000).unwrap(), State::Resolved);
        assert!(store
            .incident_action(id, Action::Accept, "worker Li", None, 6_000)
            .unwrap_err()
            .to_string()
            .contains("cannot accept an incident that is resolved"));
        let trail: Vec<String> = store.incident_history(id).unwrap().iter().map(|e| format!("{} {}", e.actor, e.action)).collect();
        assert_eq!(trail, vec!["rules fired danger", "rules sensor normal", "worker Li accept", "worker Li on_site", "worker Li resolve"]);
        assert_eq!(store.incident_history(id).unwrap()[4].note.as_deref(), Some("crack sealed, wall propped"));
    }

    #[tokio::test]
    async fn a_warning_closes_itself_and_a_quick_refire_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&event("fired", "warning", 1_000), 600_000).await.unwrap().incident().unwrap();
        store.apply_alert(&event("cleared", "warning", 2_000), 600_000).await.unwrap().incident().unwrap();
        assert!(store.incidents(false).unwrap().is_empty(), "closed by the sensor");
        assert_eq!(store.apply_alert(&event("fired", "warning", 60_000), 600_000).await.unwrap().incident().unwrap(), id, "flap: same incident");
        store.apply_alert(&event("cleared", "warning", 70_000), 600_000).await.unwrap().incident().unwrap();
        let later = store.apply_alert(&event("fired", "warning", 70_000 + 600_001), 600_000).await.unwrap().incident().unwrap();
        assert_ne!(later, id, "past the flap window: a new incident");
    }

    #[tokio::test]
    async fn a_refire_after_resolve_reopens_the_incident_and_restarts_its_ladder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ladder = |at: i64| Journaling { escalate: Some((Some("grid-3".into()), at, at + 600_000)), ..to_office() };
        let (applied, _) = store.apply_and_journal(&event("fired", "danger", 1_000), 600_000, ladder(1_000)).await.unwrap();
        let id = applied.incident().unwrap();
        store.apply_and_journal(&event("cleared", "danger", 2_000), 600_000, to_office()).await.unwrap();
        store.incident_action(id, Action::Accept, "worker Li", None, 3_000).unwrap();
        store.incident_action(id, Action::Resolve, "worker Li", Some("propped"), 4_000).unwrap();
        assert_eq!(store.open_incident_counts().unwrap(), vec![], "a resolved incident is not open");
        let (applied, journaled) = store.apply_and_journal(&event("fired", "danger", 5_000), 600_000, ladder(5_000)).await.unwrap();
        assert_eq!((applied, journaled.unwrap().1.event.as_str()), (Applied::News(id), "fired"), "the same incident, as news");
        assert_eq!(store.incidents(false).unwrap()[0].state, "open");
        assert_eq!(store.incident_action(id, Action::Accept, "worker Li", None, 6_000).unwrap(), State::Accepted, "it can be accepted again");
        let armed: i64 = store.lock().unwrap().query_row("SELECT armed_ms FROM escalations WHERE incident_id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(armed, 5_000, "the ladder starts over from the re-fire");
        assert!(store.incident_history(id).unwrap().iter().any(|e| e.action.contains("re-opened danger")));
    }

    /// An orange resolved while the wall still leans, then red: the change opens the incident
    /// again and its ladder starts over (an outside tester's red had no reminder nor
    /// escalation); so does a change after a grid leader closed it while it fired. A change on
    /// an incident that is still open keeps the ladder it runs.
    #[tokio::test]
    async fn a_change_of_severity_that_opens_an_incident_again_starts_its_ladder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ladder = |at: i64| Journaling { escalate: Some((Some("grid-3".into()), at, at + 600_000)), ..to_office() };
        let armed = |id: i64| -> Option<i64> {
            store.lock().unwrap().query_row("SELECT armed_ms FROM escalations WHERE incident_id = ?1", [id], |r| r.get(0)).optional().unwrap()
        };
        let id = store.apply_and_journal(&event("fired", "alarm", 1_000), 600_000, ladder(1_000)).await.unwrap().0.incident().unwrap();
        store.apply_and_journal(&event("changed", "danger", 1_500), 600_000, ladder(1_500)).await.unwrap();
        assert_eq!(armed(id), Some(1_500), "worse than it ever was: the red's ladder from the change");
        store.apply_and_journal(&event("changed", "alarm", 1_800), 600_000, ladder(1_800)).await.unwrap();
        assert_eq!(armed(id), Some(1_500), "back to orange: the red's ladder goes on");
        store.incident_action(id, Action::Resolve, "worker Li", Some("looked: cracks unchanged"), 2_000).unwrap();
        store.lock().unwrap().execute("DELETE FROM escalations WHERE incident_id = ?1", [id]).unwrap(); // as the ladder's end does
        let (applied, _) = store.apply_and_journal(&event("changed", "danger", 3_000), 600_000, ladder(3_000)).await.unwrap();
        assert_eq!(applied, Applied::News(id));
        assert_eq!(store.incidents(false).unwrap()[0].state, "open");
        assert_eq!(armed(id), Some(3_000), "the red starts the ladder over");

        store.incident_action(id, Action::Accept, "worker Li", None, 4_000).unwrap();
        store.incident_action(id, Action::OnSite, "worker Li", None, 4_100).unwrap();
        store.incident_action(id, Action::Resolve, "worker Li", Some("propped"), 4_200).unwrap();
        store.incident_action(id, Action::Close, "leader Chen", None, 4_300).unwrap();
        store.lock().unwrap().execute("DELETE FROM escalations WHERE incident_id = ?1", [id]).unwrap();
        store.apply_and_journal(&event("changed", "alarm", 5_000), 600_000, ladder(5_000)).await.unwrap();
        let reopened = store.incidents(false).unwrap();
        assert_eq!(reopened.len(), 1, "{reopened:?}");
        assert_eq!(armed(reopened[0].id), Some(5_000), "closed while it fired, then changed: a ladder again");
    }

    /// A red incident fired at 1 s, then accepted, on site and resolved with `note` by 2.2 s.
    async fn resolved_red(store: &Store, note: &str) -> i64 {
        let id = store.apply_and_journal(&event("fired", "danger", 1_000), 600_000, to_office()).await.unwrap().0.incident().unwrap();
        store.incident_action(id, Action::Accept, "worker Li", None, 2_000).unwrap();
        store.incident_action(id, Action::OnSite, "worker Li", None, 2_100).unwrap();
        store.incident_action(id, Action::Resolve, "worker Li", Some(note), 2_200).unwrap();
        id
    }

    /// A red house a worker resolved while it still leaned, then its clear: the clear says the
    /// incident is resolved, and its words send nobody on site (an outside tester's SMS told four
    /// people to go and resolve it).
    #[tokio::test]
    async fn the_clear_of_a_resolved_incident_sends_nobody_on_site() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        resolved_red(&store, "propped, residents out").await;
        let (_, journaled) = store.apply_and_journal(&event("cleared", "danger", 3_000), 600_000, to_office()).await.unwrap();
        let clear = journaled.unwrap().1;
        assert!(clear.incident_resolved);
        let wording = crate::config::wording::Wording::default();
        assert_eq!(crate::sinks::text::what_to_do(&clear, wording), "事件已办结，无需再到场。");
        let unresolved = Alert { incident_resolved: false, ..clear };
        assert_eq!(crate::sinks::text::what_to_do(&unresolved, wording), "数值已回落，但仍需到场核实后办结。");
    }

    /// A grid leader closed an orange incident while it still fired; its clear then is told (a
    /// dashboard fed by the webhook kept the house orange: an outside tester), once, and sends
    /// nobody on site.
    #[tokio::test]
    async fn the_clear_of_an_incident_closed_while_it_fired_is_told_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_and_journal(&event("fired", "alarm", 1_000), 600_000, to_office()).await.unwrap().0.incident().unwrap();
        store.incident_action(id, Action::Resolve, "worker Li", Some("looked"), 2_000).unwrap();
        store.incident_action(id, Action::Close, "leader Chen", None, 2_100).unwrap();
        let (applied, journaled) = store.apply_and_journal(&event("cleared", "alarm", 3_000), 600_000, to_office()).await.unwrap();
        assert_eq!(applied, Applied::News(id));
        assert!(journaled.unwrap().1.incident_resolved, "nobody on site for a closed incident");
        let (applied, journaled) = store.apply_and_journal(&event("cleared", "alarm", 3_500), 600_000, to_office()).await.unwrap();
        assert_eq!((applied, journaled.is_none()), (Applied::Repeat(None), true), "once");
    }

    /// A red house a worker resolved that gets better (orange) stays resolved and tells nobody;
    /// worse again (red) opens it again.
    #[tokio::test]
    async fn a_resolved_incident_that_gets_better_stays_resolved_and_one_that_gets_worse_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = resolved_red(&store, "residents moved out").await;
        let (applied, journaled) = store.apply_and_journal(&event("changed", "alarm", 3_000), 600_000, to_office()).await.unwrap();
        assert_eq!((applied, journaled.is_none()), (Applied::Repeat(Some(id)), true), "better: not news");
        assert_eq!(store.incidents(true).unwrap()[0].state, "resolved");
        let (applied, journaled) = store.apply_and_journal(&event("changed", "danger", 4_000), 600_000, to_office()).await.unwrap();
        assert_eq!((applied, journaled.is_some()), (Applied::News(id), true), "worse again: news");
        assert_eq!(store.incidents(false).unwrap()[0].state, "open");
    }

    #[tokio::test]
    async fn a_worse_severity_at_the_same_moment_is_news_and_only_its_replay_a_repeat() {
        // Two boxes of a house move in the same second: the building's orange ("1 of 2") and its
        // red ("2 of 2") carry the same time.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (applied, _) = store.apply_and_journal(&event("fired", "alarm", 1_000), 600_000, to_office()).await.unwrap();
        let id = applied.incident().unwrap();
        let (applied, journaled) = store.apply_and_journal(&event("changed", "danger", 1_000), 600_000, to_office()).await.unwrap();
        assert_eq!(applied, Applied::News(id), "the red is news");
        assert_eq!(journaled.unwrap().1.severity.as_str(), "danger", "and goes out");
        let (applied, journaled) = store.apply_and_journal(&event("changed", "danger", 1_000), 600_000, to_office()).await.unwrap();
        assert_eq!((applied, journaled.is_none()), (Applied::Repeat(Some(id)), true), "judged again after a crash: a repeat");
    }

    #[tokio::test]
    async fn events_judged_again_after_a_crash_are_repeats_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&event("fired", "danger", 1_000), 600_000).await.unwrap().incident().unwrap();
        assert_eq!(store.apply_alert(&event("fired", "danger", 1_500), 600_000).await.unwrap(), Applied::Repeat(Some(id)), "fired again while firing");
        assert_eq!(store.apply_alert(&event("fired", "alarm", 1_600), 600_000).await.unwrap(), Applied::Changed { incident: id, previous: "danger".into() });
        assert_eq!(store.apply_alert(&event("cleared", "alarm", 2_000), 600_000).await.unwrap(), Applied::News(id));
        assert_eq!(store.apply_alert(&event("cleared", "alarm", 2_500), 600_000).await.unwrap(), Applied::Repeat(Some(id)), "cleared twice");
        assert_eq!(store.incidents(false).unwrap()[0].firings, 1, "repeats are not counted as firings");
        assert_eq!(
            store.apply_alert(&event("fired", "alarm", 3_000), 600_000).await.unwrap(),
            Applied::News(id),
            "a real re-fire of the open incident is news"
        );
        let mut other = event("cleared", "warning", 3_000);
        other.sensor = "house-99".into();
        assert_eq!(store.apply_alert(&other, 600_000).await.unwrap(), Applied::Repeat(None), "a clear with no incident is nobody's news");
    }

    fn to_office() -> Journaling {
        Journaling {
            route: Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                vec![("office".to_string(), None)]
            }),
            not_before_ms: None,
            escalate: None,
        }
    }

    #[tokio::test]
    async fn a_closed_warning_judged_again_from_its_old_readings_is_not_news() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (fired, cleared) = (event("fired", "warning", 1_000), event("cleared", "warning", 2_000));
        let (applied, journaled) = store.apply_and_journal(&fired, 600_000, to_office()).await.unwrap();
        let (id, alert) = journaled.unwrap();
        assert_eq!((alert.incident_id, alert.event.as_str()), (applied.incident(), "fired"));
        store.apply_and_journal(&cleared, 600_000, to_office()).await.unwrap();
        assert!(store.incidents(false).unwrap().is_empty(), "a warning closes when its sensor clears");
        // The crash came before the rule state was saved: both readings are judged again.
        for again in [&fired, &cleared] {
            let (applied, journaled) = store.apply_and_journal(again, 600_000, to_office()).await.unwrap();
            assert!(matches!(applied, Applied::Repeat(_)) && journaled.is_none(), "{} judged again: {applied:?}", again.event);
        }
        assert_eq!(store.recent_alerts(10).unwrap().len(), 2, "journaled once each");
        assert_eq!(store.due_deliveries("office", 0, 10).await.unwrap()[0].alert_id, id);
        let refired = store.apply_and_journal(&event("fired", "warning", 3_000), 600_000, to_office()).await.unwrap();
        assert_eq!(refired.0, Applied::News(applied.incident().unwrap()), "a new reading is news again");
    }
}
