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
//!
//! Steps the card could not record went out from memory; where their ladder got to is recorded
//! later ([`Store::record_ladder_sent`], from [`super::sent_from_memory`]), and only forward: a
//! ladder's progress never goes back, so a step already sent is not sent again.

use super::incidents::{audit, Stamp};
use super::{LadderSent, Store};
use crate::alert::Alert;
use crate::dispatch::policy::Progress;
use rusqlite::{params, OptionalExtension};

/// A running escalation ladder, with what the dispatcher needs to decide its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEscalation {
    pub incident_id: i64,
    pub grid: Option<String>,
    /// When the ladder was armed (the incident fired, fired again after it was resolved, or
    /// became worse than it ever was): another value than before means a ladder that starts over.
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
    /// The worst severity the incident reached, whose policy the ladder follows: a house back
    /// from red to orange is chased as red until someone takes it.
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
        let ladders = self.with_conn(move |conn| {
            let mut statement = conn.prepare(
                "SELECT e.incident_id, e.grid, e.age_ms, e.next_due_age_ms, e.reminders, e.level, e.missed, i.state, i.worst_severity,
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
        .await?;
        // A worker's step taken in memory (the card cannot write) moves the ladder as one on the
        // card would: an accepted incident is not reminded of.
        let mut ladders = ladders;
        for ladder in &mut ladders {
            if let Some(state) = self.state_from_memory(ladder.incident_id) {
                ladder.state = state.as_str().to_string();
            }
        }
        Ok(ladders)
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

    /// Records where a ladder stood after steps sent from memory ([`LadderSent`]) on the ladder
    /// of its rule and sensor's incident not closed — only when that is behind it: each part of
    /// the progress moves to the further of the two (a reminder's number never goes back), the
    /// ladder's age and next step are the step's, and the steps join the incident's audit trail.
    /// Returns whether it moved the ladder.
    pub async fn record_ladder_sent(&self, sent: &LadderSent) -> anyhow::Result<bool> {
        let LadderSent { rule, sensor, moved, aged_at_ms, audit: steps } = sent.clone();
        let Progress { reminders, reminders_sent, level, missed } = moved.progress;
        // When the steps went out; a clock not set then cannot say (another run's elapsed time).
        let stamp = Stamp { at_ms: aged_at_ms.unwrap_or_else(|| self.clock.now()), clock_unset_at: aged_at_ms.is_none().then_some(super::restamp::LOST) };
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let behind = tx
                .query_row(
                    "SELECT e.incident_id FROM escalations e JOIN incidents i ON i.id = e.incident_id
                     WHERE i.rule = ?1 AND i.sensor = ?2 AND i.state != 'closed'
                       AND (e.reminders < ?3 OR e.reminders_sent < ?4 OR e.level < ?5 OR (e.missed | ?6) != e.missed)",
                    params![rule, sensor, reminders, reminders_sent, level, missed],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?;
            let Some(incident) = behind else { return Ok(false) };
            match moved.next_due_age_ms {
                Some(next) => tx.execute(
                    "UPDATE escalations SET reminders = max(reminders, ?2), reminders_sent = max(reminders_sent, ?3), level = max(level, ?4),
                            missed = missed | ?5, next_due_age_ms = ?6, age_ms = ?7, aged_at_ms = ?8 WHERE incident_id = ?1",
                    params![incident, reminders, reminders_sent, level, missed, next, moved.age_ms, aged_at_ms],
                )?,
                None => tx.execute("DELETE FROM escalations WHERE incident_id = ?1", [incident])?,
            };
            for step in &steps {
                audit(&tx, incident, stamp, "dispatch", &format!("{step} (sent from memory: the card could not record it)"), None)?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

/// Where a ladder stands after its steps: its progress, how long it has run, and the age at which
/// it is next due (`None`: the ladder ends).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LadderMove {
    pub progress: Progress,
    pub age_ms: i64,
    pub next_due_age_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::store::Journaling;

    fn sent(reminders_sent: u32, level: u32, next_due_age_ms: Option<i64>) -> LadderSent {
        let progress = Progress { reminders: reminders_sent + level, reminders_sent, level, missed: if level > 0 { 1 } else { 0 } };
        let moved = LadderMove { progress, age_ms: 9_000, next_due_age_ms };
        LadderSent {
            rule: "tilt".into(),
            sensor: "house-07".into(),
            moved,
            aged_at_ms: Some(1_795_392_000_000),
            audit: vec![format!("reminded 王芳 ({reminders_sent})")],
        }
    }

    /// A step sent from memory moves the ladder of its rule and sensor's incident on, never back:
    /// an older step (of a run before, or of a ladder in memory started again) changes nothing.
    #[tokio::test]
    async fn a_ladder_step_sent_from_memory_moves_its_incident_s_ladder_only_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut alarm = sample_alert("fired", 7.5);
        (alarm.rule, alarm.sensor) = ("tilt".into(), "house-07".into());
        let journaling = Journaling { route: Box::new(|_, _| Vec::new()), not_before_ms: None, escalate: Some((None, 1_000, 2_500)) };
        let incident = store.apply_and_journal(&alarm, 600_000, journaling).await.unwrap().0.incident().unwrap();
        let ladder = || async { store.escalation_clocks().await.unwrap().into_iter().next() };

        assert!(store.record_ladder_sent(&sent(3, 1, Some(10_500))).await.unwrap());
        let moved = ladder().await.unwrap();
        assert_eq!((moved.progress.reminders_sent, moved.progress.level, moved.age_ms, moved.next_due_age_ms), (3, 1, 9_000, 10_500));
        assert!(!store.record_ladder_sent(&sent(2, 1, Some(7_500))).await.unwrap(), "behind the store's ladder: not recorded");
        assert!(!store.record_ladder_sent(&sent(3, 1, Some(10_500))).await.unwrap(), "as far as the store's ladder: not recorded");
        assert_eq!(ladder().await.unwrap().progress.reminders_sent, 3);
        let mut elsewhere = sent(5, 1, Some(12_000));
        elsewhere.sensor = "house-08".into();
        assert!(!store.record_ladder_sent(&elsewhere).await.unwrap(), "another sensor's incident has no ladder");
        assert!(store.record_ladder_sent(&sent(4, 2, None)).await.unwrap());
        assert_eq!(ladder().await, None, "the ladder ended with its last step");
        let trail: Vec<String> = store.incident_history(incident).unwrap().into_iter().filter(|e| e.actor == "dispatch").map(|e| e.action).collect();
        let from_memory = |n: u32| format!("reminded 王芳 ({n}) (sent from memory: the card could not record it)");
        assert_eq!(trail, vec![from_memory(3), from_memory(4)], "the steps recorded, once each");
    }
}
