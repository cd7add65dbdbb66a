//! Reads for a box's district uplink (`cluster::uplink`, feature `cluster`): alert events and
//! incident transitions in id order after a high-water mark. Nothing here writes: the box's
//! journal and audit trail stay as they are; what the hub has committed is known from the hub's
//! high-water mark, not from a flag on the rows.

use super::Store;
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One `alert_events` row as the hub records it (its id is the box's journal id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkAlert {
    pub id: i64,
    pub at_ms: i64,
    pub rule: String,
    pub sensor: String,
    pub event: String,
    pub severity: String,
    pub value: f64,
}

/// One `incident_events` row (a transition of an incident the box owns), with its incident's
/// subject and the incident's state when the row was read for sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkTransition {
    pub id: i64,
    pub incident_id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub note: Option<String>,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub state: String,
}

impl Store {
    /// Up to `limit` alert events with ids above `after`, oldest first.
    pub async fn alerts_after(&self, after: i64, limit: usize) -> anyhow::Result<Vec<UplinkAlert>> {
        self.read(move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT id, at_ms, rule, sensor, event, severity, value FROM alert_events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                Ok(UplinkAlert {
                    id: row.get(0)?,
                    at_ms: row.get(1)?,
                    rule: row.get(2)?,
                    sensor: row.get(3)?,
                    event: row.get(4)?,
                    severity: row.get(5)?,
                    value: row.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Up to `limit` incident transitions with ids above `after`, oldest first.
    pub async fn transitions_after(&self, after: i64, limit: usize) -> anyhow::Result<Vec<UplinkTransition>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT e.id, e.incident_id, e.at_ms, e.actor, e.action, e.note, i.rule, i.sensor, i.severity, i.state
                 FROM incident_events e JOIN incidents i ON i.id = e.incident_id WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                Ok(UplinkTransition {
                    id: row.get(0)?,
                    incident_id: row.get(1)?,
                    at_ms: row.get(2)?,
                    actor: row.get(3)?,
                    action: row.get(4)?,
                    note: row.get(5)?,
                    rule: row.get(6)?,
                    sensor: row.get(7)?,
                    severity: row.get(8)?,
                    state: row.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn read<T: Send + 'static>(&self, work: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        self.bounded(move |store, _| work(&mut *store.lock()?)).await
    }
}
