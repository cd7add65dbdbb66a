//! Silences in the store (see [`crate::dispatch::silence`]), and the alarms they keep from
//! people until they end.

use super::Store;
use crate::alert::Alert;
use crate::dispatch::silence::{Scope, Silence};
use rusqlite::params;

/// A silence to create.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub scope: Scope,
    pub target: String,
    pub include_red: bool,
    pub reason: String,
    pub author: String,
    pub starts_ms: i64,
    pub expires_ms: i64,
}

impl Store {
    /// Creates a silence; returns its id.
    pub fn add_silence(&self, silence: &NewSilence) -> anyhow::Result<i64> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO silences (scope, target, include_red, reason, author, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![silence.scope.as_str(), silence.target, silence.include_red, silence.reason, silence.author, silence.starts_ms, silence.expires_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Ends a silence now; false when there is no such silence in force.
    pub fn end_silence(&self, id: i64, now_ms: i64) -> anyhow::Result<bool> {
        let conn = self.lock()?;
        let changed = conn.execute("UPDATE silences SET ended_ms = ?1 WHERE id = ?2 AND ended_ms IS NULL AND expires_ms > ?1", params![now_ms, id])?;
        Ok(changed == 1)
    }

    /// Silences in force at `now` (all of them, newest first, with `all`).
    pub fn silences(&self, now_ms: i64, all: bool) -> anyhow::Result<Vec<Silence>> {
        let conn = self.lock()?;
        let sql = format!(
            "SELECT id, scope, target, include_red, reason, author, created_ms, expires_ms, ended_ms FROM silences {} ORDER BY id DESC",
            if all { "" } else { "WHERE expires_ms > ?1 AND ended_ms IS NULL" }
        );
        let mut statement = conn.prepare(&sql)?;
        let map = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(Silence, String)> {
            let scope: String = row.get(1)?;
            Ok((
                Silence {
                    id: row.get(0)?,
                    scope: Scope::Sensor,
                    target: row.get(2)?,
                    include_red: row.get(3)?,
                    reason: row.get(4)?,
                    author: row.get(5)?,
                    created_ms: row.get(6)?,
                    expires_ms: row.get(7)?,
                    ended_ms: row.get(8)?,
                },
                scope,
            ))
        };
        let rows = if all {
            statement.query_map([], map)?.collect::<Result<Vec<_>, _>>()?
        } else {
            statement.query_map([now_ms], map)?.collect::<Result<Vec<_>, _>>()?
        };
        rows.into_iter().map(|(silence, scope)| Ok(Silence { scope: scope.parse().map_err(anyhow::Error::msg)?, ..silence })).collect()
    }

    /// Keeps `alert`, which a silence kept from people, as its rule's and sensor's latest such
    /// alarm: told when the silence ends if it still fires, also after a restart.
    pub fn keep_silenced_alarm(&self, alert: &Alert) -> anyhow::Result<()> {
        let payload = serde_json::to_string(alert)?;
        self.essential(|conn| {
            conn.execute("INSERT OR REPLACE INTO silenced_alarms (rule, sensor, payload) VALUES (?1, ?2, ?3)", params![alert.rule, alert.sensor, payload])?;
            Ok(())
        })
    }

    /// Forgets the alarm a silence kept on `rule` and `sensor` (it cleared, or was told).
    pub fn forget_silenced_alarm(&self, rule: &str, sensor: &str) -> anyhow::Result<()> {
        self.essential(|conn| {
            conn.execute("DELETE FROM silenced_alarms WHERE rule = ?1 AND sensor = ?2", params![rule, sensor])?;
            Ok(())
        })
    }

    /// The alarms silences kept and that are still to be told.
    pub fn silenced_alarms(&self) -> anyhow::Result<Vec<Alert>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT payload FROM silenced_alarms ORDER BY rule, sensor")?;
        let payloads = statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(payloads.iter().filter_map(|payload| serde_json::from_str(payload).ok()).collect())
    }
}
