//! Which phone got which journaled alert by SMS, and the attempts each took: an SMS gateway is
//! not idempotent, so a phone that got an alert must not get it again after a restart, and one
//! whose gateway hangs gets at most the sink's attempts in all, not that many per start (an
//! outside tester saw one alarm reach one phone 5–6 times over 5 power cuts).
//!
//! Invariant: an attempt is counted before it is made, and a send is marked only after the
//! gateway answered 2xx; a row is per channel, event and phone.
//!
//! Also kept: when each phone's hourly budgets were used (`sms_budget_sends`), so that a box
//! restarting again and again does not start every phone's budget afresh (an outside tester
//! counted 49 SMS to one phone in 16 minutes over 6 restarts, with 6 an hour configured), and
//! the alerts owed to a budget's next SMS (`sms_owed`), so that a restart does not lose a
//! summary a phone is owed.

use super::Store;
use rusqlite::params;

/// One phone's part of an SMS about some journaled events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmsProgress {
    /// The most attempts made for any of the events not yet sent to the phone.
    pub attempts: u32,
    /// Whether every event was sent to the phone already.
    pub sent: bool,
}

impl Store {
    /// How far the SMS about `event_ids` to `phone` on channel `sink` went (nothing for no ids:
    /// alerts that were never journaled).
    pub async fn sms_progress(&self, sink: &str, phone: &str, event_ids: Vec<i64>) -> anyhow::Result<SmsProgress> {
        if event_ids.is_empty() {
            return Ok(SmsProgress::default());
        }
        let (sink, phone) = (sink.to_string(), phone.to_string());
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached("SELECT attempts, sent FROM sms_sends WHERE sink = ?1 AND event_id = ?2 AND phone = ?3")?;
            let mut progress = SmsProgress { attempts: 0, sent: true };
            for &event_id in &event_ids {
                let row: Option<(u32, bool)> =
                    rusqlite::OptionalExtension::optional(statement.query_row(params![sink, event_id, phone], |row| Ok((row.get(0)?, row.get(1)?))))?;
                match row {
                    Some((_, true)) => {}
                    Some((attempts, false)) => (progress.attempts, progress.sent) = (progress.attempts.max(attempts), false),
                    None => progress.sent = false,
                }
            }
            Ok(progress)
        })
        .await
    }

    /// The phones channel `sink` texted about incident `incident_id` (its clear goes to them).
    pub async fn sms_phones_told(&self, sink: &str, incident_id: i64) -> anyhow::Result<Vec<String>> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            let phones = conn
                .prepare_cached(
                    "SELECT DISTINCT s.phone FROM sms_sends s JOIN alert_events a ON a.id = s.event_id
                     WHERE s.sink = ?1 AND s.sent = 1 AND json_extract(a.payload, '$.incident_id') = ?2 ORDER BY s.phone",
                )?
                .query_map(params![sink, incident_id], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(phones)
        })
        .await
    }

    /// Counts an attempt at sending `event_ids` to `phone`, before it is made.
    pub async fn count_sms_attempt(&self, sink: &str, phone: &str, event_ids: Vec<i64>) -> anyhow::Result<()> {
        self.record_sms(sink, phone, event_ids, "attempts = attempts + 1", 1, false).await
    }

    /// Marks `event_ids` sent to `phone`: the gateway took the SMS.
    pub async fn mark_sms_sent(&self, sink: &str, phone: &str, event_ids: Vec<i64>) -> anyhow::Result<()> {
        self.record_sms(sink, phone, event_ids, "sent = 1", 0, true).await
    }

    /// Records `event_ids` (none: nothing to record) for `phone`, inserted with `attempts` and
    /// `sent`, else updated by `update`.
    async fn record_sms(&self, sink: &str, phone: &str, event_ids: Vec<i64>, update: &'static str, attempts: u32, sent: bool) -> anyhow::Result<()> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let (sink, phone) = (sink.to_string(), phone.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut statement = tx.prepare_cached(&format!(
                    "INSERT INTO sms_sends (sink, event_id, phone, attempts, sent) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (sink, event_id, phone) DO UPDATE SET {update}"
                ))?;
                for &event_id in &event_ids {
                    statement.execute(params![sink, event_id, phone, attempts, sent])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// An SMS sent more than this long ago no longer counts against a budget.
const HOUR_MS: i64 = 3_600_000;

impl Store {
    /// The sends of channel `sink`'s budgets in the hour before `now_ms`: (budget, when).
    pub fn sms_budget_sends(&self, sink: &str, now_ms: i64) -> anyhow::Result<Vec<(String, i64)>> {
        self.essential(|conn| {
            let rows = conn
                .prepare_cached("SELECT budget, at_ms FROM sms_budget_sends WHERE sink = ?1 AND at_ms > ?2 ORDER BY at_ms")?
                .query_map(params![sink, now_ms - HOUR_MS], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Channel `sink` used `budget` at `at_ms`; what no longer counts is forgotten.
    pub async fn record_sms_budget_send(&self, sink: &str, budget: &str, at_ms: i64) -> anyhow::Result<()> {
        let (sink, budget) = (sink.to_string(), budget.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM sms_budget_sends WHERE sink = ?1 AND at_ms <= ?2", params![sink, at_ms - HOUR_MS])?;
            tx.execute("INSERT INTO sms_budget_sends (sink, budget, at_ms) VALUES (?1, ?2, ?3)", params![sink, budget, at_ms])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// An alert owed to a budget's next SMS, as kept: its row, the budget, its line and link.
pub type OwedSms = (i64, String, String, Option<String>);

impl Store {
    /// Keeps `lines` (line, link) owed to `budget`'s next SMS on channel `sink`; their rows.
    pub async fn owe_sms(&self, sink: &str, budget: &str, lines: Vec<(String, Option<String>)>) -> anyhow::Result<Vec<i64>> {
        let (sink, budget) = (sink.to_string(), budget.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut rows = Vec::with_capacity(lines.len());
            {
                let mut statement = tx.prepare_cached("INSERT INTO sms_owed (sink, budget, line, link) VALUES (?1, ?2, ?3, ?4)")?;
                for (line, link) in &lines {
                    statement.execute(params![sink, budget, line, link])?;
                    rows.push(tx.last_insert_rowid());
                }
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    /// What channel `sink` owes its budgets' next SMS, oldest first.
    pub fn sms_owed(&self, sink: &str) -> anyhow::Result<Vec<OwedSms>> {
        self.essential(|conn| {
            let rows = conn
                .prepare_cached("SELECT id, budget, line, link FROM sms_owed WHERE sink = ?1 ORDER BY id")?
                .query_map(params![sink], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The owed alerts of `rows` went out in a summary.
    pub async fn settle_sms_owed(&self, rows: Vec<i64>) -> anyhow::Result<()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            for row in &rows {
                tx.execute("DELETE FROM sms_owed WHERE id = ?1", [row])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_phone_s_attempts_and_sends_survive_a_reopen_per_event_and_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.sms_progress("sms", "138", vec![1, 2]).await.unwrap(), SmsProgress { attempts: 0, sent: false });
        store.count_sms_attempt("sms", "138", vec![1, 2]).await.unwrap();
        store.count_sms_attempt("sms", "138", vec![2]).await.unwrap();
        store.mark_sms_sent("sms", "139", vec![1]).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.sms_progress("sms", "138", vec![1, 2]).await.unwrap(), SmsProgress { attempts: 2, sent: false });
        assert_eq!(store.sms_progress("sms", "139", vec![1]).await.unwrap(), SmsProgress { attempts: 0, sent: true });
        assert!(!store.sms_progress("sms", "139", vec![1, 2]).await.unwrap().sent, "event 2 not yet sent to 139");
        assert!(!store.sms_progress("other", "139", vec![1]).await.unwrap().sent, "per channel");
        store.mark_sms_sent("sms", "138", vec![1, 2]).await.unwrap();
        assert!(store.sms_progress("sms", "138", vec![1, 2]).await.unwrap().sent);
    }
}
