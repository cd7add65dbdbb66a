//! Escalation clocks in the store: one row per incident that reminders or escalations may still
//! be due for, with what was already done and when to look next. A step's notification, its
//! audit line and the clock's new state are written in one transaction, so after a crash a step
//! is either not done (and comes at the next look) or done and in the outbox (sent again at most
//! once).

use super::incidents::audit;
use super::Store;
use crate::alert::Alert;
use crate::dispatch::policy::Progress;
use rusqlite::params;

/// An escalation whose next step is due, with what the dispatcher needs to decide it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEscalation {
    pub incident_id: i64,
    pub grid: Option<String>,
    pub armed_ms: i64,
    pub progress: Progress,
    /// The incident now.
    pub state: String,
    pub severity: String,
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
    /// Starts the clocks for an incident (kept as they are if they already run).
    pub async fn arm_escalation(&self, incident_id: i64, grid: Option<String>, armed_ms: i64, first_due_ms: i64) -> anyhow::Result<()> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO escalations (incident_id, grid, armed_ms, next_due_ms) VALUES (?1, ?2, ?3, ?4)",
                params![incident_id, grid, armed_ms, first_due_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Escalations whose next step is due at `now`.
    pub async fn due_escalations(&self, now_ms: i64) -> anyhow::Result<Vec<DueEscalation>> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare(
                "SELECT e.incident_id, e.grid, e.armed_ms, e.reminders, e.level, e.missed, i.state, i.severity,
                        (SELECT payload FROM alert_events a WHERE a.rule = i.rule AND a.sensor = i.sensor AND a.event IN ('fired', 'changed') ORDER BY a.id DESC LIMIT 1)
                 FROM escalations e JOIN incidents i ON i.id = e.incident_id
                 WHERE e.next_due_ms <= ?1 ORDER BY e.next_due_ms",
            )?;
            let rows = statement.query_map([now_ms], |row| {
                let payload: Option<String> = row.get(8)?;
                Ok(DueEscalation {
                    incident_id: row.get(0)?,
                    grid: row.get(1)?,
                    armed_ms: row.get(2)?,
                    progress: Progress { reminders: row.get(3)?, level: row.get(4)?, missed: row.get(5)? },
                    state: row.get(6)?,
                    severity: row.get(7)?,
                    last_alert: payload.and_then(|p| serde_json::from_str(&p).ok()),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Journals the steps (with a pending delivery per sink and an audit line each) and moves
    /// the clock on — or ends it when `next_due_ms` is `None` — in one transaction. Returns the
    /// journal ids of the steps' notifications.
    pub async fn record_escalation(
        &self,
        incident_id: i64,
        steps: Vec<EscalationStep>,
        destinations: Vec<Vec<super::journal::Destination>>,
        progress: Progress,
        next_due_ms: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<Vec<i64>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut ids = Vec::new();
            for (step, destinations) in steps.iter().zip(&destinations) {
                let id = super::journal::insert_event(&tx, &step.alert, destinations, None)?;
                audit(&tx, incident_id, now_ms, "dispatch", &step.audit, None)?;
                ids.push(id);
            }
            match next_due_ms {
                Some(next) => tx.execute(
                    "UPDATE escalations SET reminders = ?1, level = ?2, missed = ?3, next_due_ms = ?4 WHERE incident_id = ?5",
                    params![progress.reminders, progress.level, progress.missed, next, incident_id],
                )?,
                None => tx.execute("DELETE FROM escalations WHERE incident_id = ?1", [incident_id])?,
            };
            tx.commit()?;
            Ok(ids)
        })
        .await
    }
}
