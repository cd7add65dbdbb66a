//! The embedded local store: one SQLite file (`gridwatch.db`) in the state directory, in WAL
//! mode with `synchronous=FULL`. It holds the alert journal — every alert event is written here
//! before any sink sees it, so what was raised can always be read back (and, with the outbox of
//! a later change, re-sent) — and the rule engine's last state snapshot, so hold timers,
//! windows and learned baselines survive a restart.
//!
//! Invariants: the schema version is `PRAGMA user_version`; migrations only move forward.

use crate::alert::Alert;
use anyhow::Context;
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA_VERSION: i32 = 2;

/// A handle on the store; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

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

impl Store {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join("gridwatch.db");
        let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&conn).with_context(|| format!("migrating {}", path.display()))?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Appends an alert event to the journal (durably) and returns its id.
    pub async fn record_alert(&self, alert: &Alert) -> anyhow::Result<i64> {
        let conn = self.conn.clone();
        let payload = serde_json::to_string(alert)?;
        let row = (alert.at_ms, alert.rule.clone(), alert.sensor.clone(), alert.event, alert.severity, alert.value);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
            conn.execute(
                "INSERT INTO alert_events (at_ms, rule, sensor, event, severity, value, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![row.0, row.1, row.2, row.3, row.4, row.5, payload],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await?
    }

    /// Replaces the saved rule-engine state.
    pub async fn save_engine_state(&self, json: String, at_ms: i64) -> anyhow::Result<()> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
            conn.execute(
                "INSERT INTO engine_state (id, saved_at_ms, state) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET saved_at_ms = excluded.saved_at_ms, state = excluded.state",
                params![at_ms, json],
            )?;
            Ok(())
        })
        .await?
    }

    /// The saved rule-engine state, if any.
    pub fn load_engine_state(&self) -> anyhow::Result<Option<String>> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        let mut statement = conn.prepare("SELECT state FROM engine_state WHERE id = 1")?;
        let mut rows = statement.query([])?;
        match rows.next()? {
            Some(row) => Ok(Some(row.get(0)?)),
            None => Ok(None),
        }
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn recent_alerts(&self, limit: usize) -> anyhow::Result<Vec<JournalEntry>> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        let mut statement = conn.prepare(
            "SELECT id, event, rule, sensor, severity, value FROM alert_events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], |row| {
            Ok(JournalEntry {
                id: row.get(0)?,
                event: row.get(1)?,
                rule: row.get(2)?,
                sensor: row.get(3)?,
                severity: row.get(4)?,
                value: row.get(5)?,
            })
        })?;
        let mut entries = rows.collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!("store schema version {version} is newer than this gridwatch ({SCHEMA_VERSION}); refusing to downgrade it");
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'cleared')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // Incidents now also change severity: widen the event check, and keep the engine state.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events_v2 (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'changed', 'cleared')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             INSERT INTO alert_events_v2 SELECT * FROM alert_events;
             DROP TABLE alert_events;
             ALTER TABLE alert_events_v2 RENAME TO alert_events;
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             CREATE TABLE engine_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 saved_at_ms INTEGER NOT NULL,
                 state TEXT NOT NULL
             );
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    #[tokio::test]
    async fn journal_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_alert(&sample_alert("fired", 0.45)).await.unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        let entries = reopened.recent_alerts(10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].id, entries[0].event.as_str(), entries[0].value), (id, "fired", 0.45));
    }

    #[tokio::test]
    async fn engine_state_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_engine_state().unwrap(), None);
        store.save_engine_state("{\"a\":1}".into(), 1).await.unwrap();
        store.save_engine_state("{\"a\":2}".into(), 2).await.unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().load_engine_state().unwrap().as_deref(), Some("{\"a\":2}"));
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
        store.record_alert(&sample_alert("changed", 0.6)).await.unwrap();
        assert_eq!(store.recent_alerts(10).unwrap().len(), 2);
    }

    #[test]
    fn newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        Connection::open(dir.path().join("gridwatch.db")).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("schema version 99 is newer"), "{err:#}");
    }
}
