//! The alert journal and outbox. `record_alert` writes the event and one pending delivery per
//! sink in one transaction, before any sink is tried; sinks then mark their delivery
//! `delivered` or `failed`. Deliveries still pending after a crash are sent again at start.

use super::Store;
use crate::alert::Alert;
use rusqlite::{params, OptionalExtension};

/// One row of the alert journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub id: i64,
    pub event: String,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub value: f64,
}

/// An alert a sink has not confirmed yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub alert_id: i64,
    pub sink: String,
    pub alert: Alert,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Journals an alert event with a pending delivery for each sink; returns its id.
    pub async fn record_alert(&self, alert: &Alert, sinks: &[String]) -> anyhow::Result<i64> {
        self.record_alert_deferred(alert, sinks, None).await
    }

    /// [`Store::record_alert`], with its deliveries waiting until `not_before_ms` (quiet hours,
    /// the daily digest) when given.
    pub async fn record_alert_deferred(&self, alert: &Alert, sinks: &[String], not_before_ms: Option<i64>) -> anyhow::Result<i64> {
        let payload = serde_json::to_string(alert)?;
        let row = (alert.at_ms, alert.rule.clone(), alert.sensor.clone(), alert.event.clone(), alert.severity.clone(), alert.value);
        let sinks = sinks.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO alert_events (at_ms, rule, sensor, event, severity, value, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![row.0, row.1, row.2, row.3, row.4, row.5, payload],
            )?;
            let id = tx.last_insert_rowid();
            let now = now_ms();
            for sink in &sinks {
                tx.execute("INSERT INTO outbox (alert_id, sink, state, updated_ms, not_before_ms) VALUES (?1, ?2, 'pending', ?3, ?4)", params![id, sink, now, not_before_ms])?;
            }
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Deferred deliveries whose time has come, oldest first; they stop being deferred in the
    /// same transaction (pending like any other from now on, so a crash before they are sent
    /// sends them at the next start).
    pub async fn take_due_deferred(&self, now_ms: i64) -> anyhow::Result<Vec<PendingDelivery>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut due = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT o.alert_id, o.sink, a.payload FROM outbox o JOIN alert_events a ON a.id = o.alert_id
                     WHERE o.state = 'pending' AND o.not_before_ms <= ?1 ORDER BY o.sink, o.alert_id",
                )?;
                let rows = statement.query_map([now_ms], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
                for row in rows {
                    let (alert_id, sink, payload) = row?;
                    match serde_json::from_str(&payload) {
                        Ok(alert) => due.push(PendingDelivery { alert_id, sink, alert }),
                        Err(error) => tracing::error!(alert_id, error = %error, "deferred alert cannot be read back; not sent"),
                    }
                }
            }
            tx.execute("UPDATE outbox SET not_before_ms = NULL WHERE state = 'pending' AND not_before_ms <= ?1", [now_ms])?;
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    /// Adds a pending delivery of a journaled alert for one more sink (a failover channel);
    /// false when that sink has (or had) a delivery of it already.
    pub async fn add_delivery(&self, alert_id: i64, sink: &str) -> anyhow::Result<bool> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            let added = conn.execute(
                "INSERT INTO outbox (alert_id, sink, state, updated_ms) VALUES (?1, ?2, 'pending', ?3) ON CONFLICT (alert_id, sink) DO NOTHING",
                params![alert_id, sink, now_ms()],
            )?;
            Ok(added == 1)
        })
        .await
    }

    /// Deliveries still pending, by sink.
    pub fn pending_delivery_counts(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT sink, count(*) FROM outbox WHERE state = 'pending' GROUP BY sink")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = std::collections::BTreeMap::new();
        for row in rows {
            let (sink, count) = row?;
            counts.insert(sink, count as u64);
        }
        Ok(counts)
    }

    /// Records the outcome of a delivery.
    pub async fn mark_delivery(&self, alert_id: i64, sink: &str, delivered: bool, attempts: u32, error: Option<String>) -> anyhow::Result<()> {
        let sink = sink.to_string();
        let state = if delivered { "delivered" } else { "failed" };
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE outbox SET state = ?1, attempts = attempts + ?2, updated_ms = ?3, error = ?4 WHERE alert_id = ?5 AND sink = ?6",
                params![state, attempts, now_ms(), error, alert_id, sink],
            )?;
            Ok(())
        })
        .await
    }

    /// The latest rule event (fired or changed) of a rule on a sensor: what its incident is about.
    pub fn latest_alert(&self, rule: &str, sensor: &str) -> anyhow::Result<Option<Alert>> {
        let conn = self.lock()?;
        let payload: Option<String> = conn
            .query_row(
                "SELECT payload FROM alert_events WHERE rule = ?1 AND sensor = ?2 AND event IN ('fired', 'changed') ORDER BY id DESC LIMIT 1",
                params![rule, sensor],
                |row| row.get(0),
            )
            .optional()?;
        Ok(payload.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// Deliveries not confirmed yet, oldest first (for the sinks named).
    pub fn pending_deliveries(&self, sinks: &[String]) -> anyhow::Result<Vec<PendingDelivery>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare(
            "SELECT o.alert_id, o.sink, a.payload FROM outbox o JOIN alert_events a ON a.id = o.alert_id
             WHERE o.state = 'pending' AND o.not_before_ms IS NULL ORDER BY o.alert_id",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
        let mut pending = Vec::new();
        for row in rows {
            let (alert_id, sink, payload) = row?;
            if !sinks.contains(&sink) {
                continue;
            }
            match serde_json::from_str(&payload) {
                Ok(alert) => pending.push(PendingDelivery { alert_id, sink, alert }),
                Err(error) => tracing::error!(alert_id, error = %error, "journaled alert cannot be read back; not re-sent"),
            }
        }
        Ok(pending)
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn recent_alerts(&self, limit: usize) -> anyhow::Result<Vec<JournalEntry>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT id, event, rule, sensor, severity, value FROM alert_events ORDER BY id DESC LIMIT ?1")?;
        let rows = statement.query_map([limit as i64], |row| {
            Ok(JournalEntry { id: row.get(0)?, event: row.get(1)?, rule: row.get(2)?, sensor: row.get(3)?, severity: row.get(4)?, value: row.get(5)? })
        })?;
        let mut entries = rows.collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use rusqlite::Connection;

    #[tokio::test]
    async fn a_deferred_delivery_waits_across_a_restart_and_is_taken_once_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = vec!["office".to_string()];
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_alert_deferred(&sample_alert("fired", 0.1), &sinks, Some(5_000)).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.pending_deliveries(&sinks).unwrap().is_empty(), "not re-sent at start before its time");
        assert!(store.take_due_deferred(4_999).await.unwrap().is_empty());
        let due = store.take_due_deferred(5_000).await.unwrap();
        assert_eq!(due.iter().map(|d| (d.alert_id, d.sink.as_str())).collect::<Vec<_>>(), vec![(id, "office")]);
        assert!(store.take_due_deferred(6_000).await.unwrap().is_empty(), "taken once");
        assert_eq!(store.pending_deliveries(&sinks).unwrap().len(), 1, "until delivered it is pending like any other");
    }

    #[tokio::test]
    async fn journal_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_alert(&sample_alert("fired", 0.45), &[]).await.unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        let entries = reopened.recent_alerts(10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].id, entries[0].event.as_str(), entries[0].value), (id, "fired", 0.45));
    }

    #[tokio::test]
    async fn undelivered_alerts_stay_pending_per_sink() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sinks = vec!["office".to_string(), "mqtt".to_string()];
        let first = store.record_alert(&sample_alert("fired", 0.45), &sinks).await.unwrap();
        let second = store.record_alert(&sample_alert("cleared", 0.3), &sinks).await.unwrap();
        store.mark_delivery(first, "office", true, 1, None).await.unwrap();
        store.mark_delivery(first, "mqtt", false, 3, Some("no PUBACK".into())).await.unwrap();
        let pending = Store::open(dir.path()).unwrap().pending_deliveries(&sinks).unwrap();
        let summary: Vec<_> = pending.iter().map(|p| (p.alert_id, p.sink.as_str(), p.alert.event.as_str())).collect();
        assert_eq!(summary, vec![(second, "office", "cleared"), (second, "mqtt", "cleared")]);
        assert!(store.pending_deliveries(&["office".to_string()]).unwrap().iter().all(|p| p.sink == "office"));
    }

    #[tokio::test]
    async fn version_one_journal_is_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("gridwatch.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE alert_events (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, rule TEXT NOT NULL, sensor TEXT NOT NULL,
               event TEXT NOT NULL CHECK (event IN ('fired', 'cleared')), severity TEXT NOT NULL, value REAL NOT NULL, payload TEXT NOT NULL);
             INSERT INTO alert_events VALUES (1, 5, 'r', 's', 'fired', 'danger', 0.5, '{}');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recent_alerts(10).unwrap()[0].rule, "r");
        store.record_alert(&sample_alert("changed", 0.6), &[]).await.unwrap();
        assert_eq!(store.recent_alerts(10).unwrap().len(), 2);
    }
}
