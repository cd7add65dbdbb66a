//! Escalation clocks in the store: one row per incident that reminders or escalations may still
//! be due for, with what was already done, how long its ladder has run (`age_ms`, measured on the
//! monotonic clock by the dispatcher) and at what age the next step falls due. Ages, not
//! wall-clock deadlines: a step of the box's clock neither bursts nor stops a ladder, and a
//! restart continues from the age last saved (persist what remains) — plus, when the clock was
//! set both when the age was saved (`aged_at_ms`) and at the restart, the time the box was off,
//! up to the next step (which then comes at once; the rest keep their pace).
//!
//! A step's notification, its audit line and the clock's new state are written in one
//! transaction, so after a crash a step is either not done (and comes at the next look) or done
//! and in the outbox (sent again at most once).

use super::incidents::{audit, Stamp};
use super::Store;
use crate::alert::Alert;
use crate::dispatch::policy::Progress;
use rusqlite::params;

/// A running escalation ladder, with what the dispatcher needs to decide its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEscalation {
    pub incident_id: i64,
    pub grid: Option<String>,
    /// When the ladder was armed (the incident fired, or fired again after it was resolved):
    /// another value than before means a ladder that starts over.
    pub armed_ms: i64,
    /// How long the ladder had run when its age was last saved.
    pub age_ms: i64,
    /// When that was, if the box's clock was set then.
    pub aged_at_ms: Option<i64>,
    /// The age its next step falls due at.
    pub next_due_age_ms: i64,
    pub progress: Progress,
    /// The incident now.
    pub state: String,
    pub severity: String,
    /// Whether the incident's sensor is back to normal: a reminder then says so, rather than
    /// quote the alarm's value as if it still stood.
    pub sensor_normal: bool,
    /// The incident's latest journaled rule event (fired or changed), to word the reminder.
    pub last_alert: Option<Alert>,
}

/// A notification decided for a due escalation, journaled with the clock's new state.
#[derive(Debug, Clone)]
pub struct EscalationStep {
    pub alert: Alert,
    /// The audit trail's wording ("reminded wang", "escalated to chen, sun").
    pub audit: String,
}

impl Store {
    /// Every running ladder (open incidents are few; the dispatcher keeps their ages).
    pub async fn escalation_clocks(&self) -> anyhow::Result<Vec<DueEscalation>> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare(
                "SELECT e.incident_id, e.grid, e.age_ms, e.next_due_age_ms, e.reminders, e.level, e.missed, i.state, i.severity,
                        (SELECT payload FROM alert_events a WHERE a.rule = i.rule AND a.sensor = i.sensor AND a.event IN ('fired', 'changed') ORDER BY a.id DESC LIMIT 1),
                        e.armed_ms, e.aged_at_ms, e.reminders_sent, i.sensor_normal
                 FROM escalations e JOIN incidents i ON i.id = e.incident_id
                 ORDER BY e.incident_id",
            )?;
            let rows = statement.query_map([], |row| {
                let payload: Option<String> = row.get(9)?;
                Ok(DueEscalation {
                    incident_id: row.get(0)?,
                    grid: row.get(1)?,
                    armed_ms: row.get(10)?,
                    age_ms: row.get(2)?,
                    aged_at_ms: row.get(11)?,
                    next_due_age_ms: row.get(3)?,
                    progress: Progress { reminders: row.get(4)?, reminders_sent: row.get(12)?, level: row.get(5)?, missed: row.get(6)? },
                    state: row.get(7)?,
                    severity: row.get(8)?,
                    sensor_normal: row.get::<_, i64>(13)? != 0,
                    last_alert: payload.and_then(|p| serde_json::from_str(&p).ok()),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Saves how long each ladder has run, so a restart continues where it was.
    pub async fn save_escalation_ages(&self, ages: Vec<(i64, i64)>) -> anyhow::Result<()> {
        let aged_at = self.clock.synchronized().then(|| self.clock.now());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut update = tx.prepare("UPDATE escalations SET age_ms = ?2, aged_at_ms = ?3 WHERE incident_id = ?1")?;
                for (incident_id, age_ms) in &ages {
                    update.execute(params![incident_id, age_ms, aged_at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Journals the steps (with a pending delivery per sink and an audit line each) and moves
    /// the ladder on as `moved` says — or ends it — in one transaction. Returns the journal ids
    /// of the steps' notifications.
    pub async fn record_escalation(
        &self,
        incident_id: i64,
        steps: Vec<EscalationStep>,
        destinations: Vec<Vec<super::journal::Destination>>,
        moved: LadderMove,
        now_ms: i64,
    ) -> anyhow::Result<Vec<i64>> {
        let LadderMove { progress, age_ms, next_due_age_ms } = moved;
        let unset_clock: Vec<Option<(i64, i64)>> = steps.iter().map(|step| self.unset_mark_of(&step.alert)).collect();
        let aged_at = self.clock.synchronized().then_some(now_ms);
        self.with_conn_or_settle(
            move |conn| {
                let tx = conn.transaction()?;
                let mut ids = Vec::new();
                for ((step, destinations), unset_clock) in steps.iter().zip(&destinations).zip(&unset_clock) {
                    let id = super::journal::insert_event(&tx, &step.alert, destinations, None, now_ms, *unset_clock)?;
                    let stamp = Stamp { at_ms: now_ms, clock_unset_at: unset_clock.map(|u| u.0) };
                    audit(&tx, incident_id, stamp, "dispatch", &step.audit, None)?;
                    ids.push(id);
                }
                match next_due_age_ms {
                    Some(next) => tx.execute(
                        "UPDATE escalations SET reminders = ?1, level = ?2, missed = ?3, next_due_age_ms = ?4, age_ms = ?5, aged_at_ms = ?7, reminders_sent = ?8 WHERE incident_id = ?6",
                        params![progress.reminders, progress.level, progress.missed, next, age_ms, incident_id, aged_at, progress.reminders_sent],
                    )?,
                    None => tx.execute("DELETE FROM escalations WHERE incident_id = ?1", [incident_id])?,
                };
                tx.commit()?;
                Ok(ids)
            },
            move |conn, ids| {
                // The dispatcher sent the steps from memory when the store did not answer.
                super::journal::settle_sent_from_memory(conn, ids, now_ms)?;
                Ok(())
            },
        )
        .await
    }
}

/// Where a ladder stands after its steps: its progress, how long it has run, and the age at which
/// it is next due (`None`: the ladder ends).
#[derive(Debug, Clone, Copy)]
pub struct LadderMove {
    pub progress: Progress,
    pub age_ms: i64,
    pub next_due_age_ms: Option<i64>,
}
