//! The store's side of a box's district uplink (`cluster::uplink`, feature `cluster`): alert
//! events, incident transitions and uplink readings in id order after a high-water mark. The
//! journal and audit trail are only read: what the hub has committed is known from the hub's
//! high-water mark, not from a flag on the rows. Readings chosen for the district
//! (`cluster::readings`) are kept in `uplink_readings` until the hub's mark covers them, then
//! forgotten (they are in the box's own InfluxDB). The hourly trend goes the same way
//! ([`super::uplink_trend`]).

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
    /// A device fault's incident (its alarm went to installers: a stuck or silent box): the
    /// district's board lists it as "设备故障", not in a warning colour (absent from boxes
    /// before it was sent: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub device: bool,
    /// The worst severity the incident reached, whose policy its deadlines are (the district's
    /// supervision report; absent from boxes before it was sent: the hub takes `severity`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worst_severity: String,
    /// Stamped while the box's clock was not set (and not re-stamped since): no day to count it
    /// in, as the box's own report does not (absent from boxes before it was sent: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time_unknown: bool,
}

/// One reading chosen for the district (`uplink_readings`): its sensor, time and fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkReading {
    pub id: i64,
    pub sensor: String,
    pub ts: i64,
    pub fields: Vec<(String, f64)>,
}

/// The store's epoch (migration 19): which database the ids of its rows count in. A store that
/// replaced a corrupt one has a new epoch, and its ids start at 1 again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEpoch {
    /// 16 lowercase hex digits, random, made with the database (or when a store from before
    /// epochs was migrated).
    pub id: String,
}

impl Store {
    /// This store's epoch.
    pub async fn epoch(&self) -> anyhow::Result<StoreEpoch> {
        self.read(|conn| Ok(conn.query_row("SELECT epoch FROM store_epoch WHERE id = 1", [], |row| Ok(StoreEpoch { id: row.get(0)? }))?)).await
    }

    /// Gives this store a new epoch and returns it: its rows' ids count afresh at the district
    /// (the uplink does this when the hub holds more of this epoch than the store has: a copy
    /// restored from before).
    pub async fn renew_epoch(&self) -> anyhow::Result<StoreEpoch> {
        self.with_conn(|conn| {
            Ok(conn.query_row("UPDATE store_epoch SET epoch = lower(hex(randomblob(8))) WHERE id = 1 RETURNING epoch", [], |row| {
                Ok(StoreEpoch { id: row.get(0)? })
            })?)
        })
        .await
    }

    /// Keeps `points` for the district in one transaction, forgets those the hub has committed
    /// (ids up to `committed`), and keeps at most `max_rows` waiting (the oldest go first);
    /// returns how many were deleted uncommitted to stay within it.
    pub async fn record_uplink_readings(&self, points: Vec<super::NewPoint>, committed: i64, max_rows: u64) -> anyhow::Result<u64> {
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO uplink_readings (sensor, ts, fields) VALUES (?1, ?2, ?3)")?;
                for (sensor, ts, fields) in &points {
                    insert.execute(params![sensor, ts, serde_json::to_string(fields)?])?;
                }
            }
            tx.execute("DELETE FROM uplink_readings WHERE id <= ?1", [committed])?;
            let waiting: i64 = tx.query_row("SELECT count(*) FROM uplink_readings", [], |row| row.get(0))?;
            let excess = waiting.saturating_sub(i64::try_from(max_rows).unwrap_or(i64::MAX));
            let dropped = if excess > 0 {
                tx.execute("DELETE FROM uplink_readings WHERE id IN (SELECT id FROM uplink_readings ORDER BY id LIMIT ?1)", [excess])?
            } else {
                0
            };
            tx.commit()?;
            Ok(dropped as u64)
        })
        .await
    }

    /// Up to `limit` uplink readings with ids above `after`, oldest first.
    pub async fn uplink_readings_after(&self, after: i64, limit: usize) -> anyhow::Result<Vec<UplinkReading>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached("SELECT id, sensor, ts, fields FROM uplink_readings WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows =
                statement.query_map(params![after, limit as i64], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?, row.get::<_, String>(3)?)))?;
            let mut readings = Vec::new();
            for row in rows {
                let (id, sensor, ts, fields) = row?;
                // Written by `record_uplink_readings` from the same type: a row that does not
                // read back goes up without fields rather than stopping the uplink.
                let fields = serde_json::from_str(&fields).unwrap_or_default();
                readings.push(UplinkReading { id, sensor, ts, fields });
            }
            Ok(readings)
        })
        .await
    }

    /// The newest id of each table the uplink sends (0: none yet): alert events, incident
    /// transitions, uplink readings, uplink trend rows (the last two from `sqlite_sequence`: the
    /// last one given, also once the rows are forgotten).
    pub async fn uplink_newest_ids(&self) -> anyhow::Result<[i64; 4]> {
        self.read(|conn| {
            let alert = conn.query_row("SELECT coalesce(max(id), 0) FROM alert_events", [], |row| row.get(0))?;
            let transition = conn.query_row("SELECT coalesce(max(id), 0) FROM incident_events", [], |row| row.get(0))?;
            let last_given =
                |table: &str| conn.query_row("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1", [table], |row| row.get::<_, i64>(0));
            Ok([alert, transition, last_given("uplink_readings")?, last_given("uplink_trend")?])
        })
        .await
    }

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
                "SELECT e.id, e.incident_id, e.at_ms, e.actor, e.action, e.note, i.rule, i.sensor, i.severity, i.state, i.worst_severity, e.clock_unset_at IS NOT NULL,
                        coalesce((SELECT json_extract(a.payload, '$.audience') FROM alert_events a
                                  WHERE a.rule = i.rule AND a.sensor = i.sensor AND a.event IN ('fired', 'changed')
                                  ORDER BY a.id DESC LIMIT 1), '') = 'installer'
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
                    worst_severity: row.get(10)?,
                    time_unknown: row.get(11)?,
                    device: row.get(12)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.bounded(move |store, _| work(&mut *store.lock()?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sensor: &str, ts: i64) -> crate::store::NewPoint {
        (sensor.into(), ts, vec![("x".to_string(), ts as f64)])
    }

    #[tokio::test]
    async fn a_fresh_store_has_an_epoch_of_its_own_and_a_replaced_one_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap().epoch().await.unwrap();
        assert_eq!(first.id.len(), 16, "{first:?}");
        assert!(first.id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{first:?}");
        assert_eq!(Store::open(dir.path()).unwrap().epoch().await.unwrap(), first, "kept in the database");
        std::fs::write(dir.path().join("gridwatch.db"), vec![0x5a; 8192]).unwrap();
        std::fs::remove_file(dir.path().join("gridwatch.db-wal")).ok();
        let replaced = Store::open(dir.path()).unwrap();
        assert_eq!(replaced.quarantined.len(), 1);
        let second = replaced.epoch().await.unwrap();
        assert_ne!(second.id, first.id, "a fresh store counts its ids anew");
    }

    #[tokio::test]
    async fn a_store_from_before_epochs_gets_one_at_migration() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let path = dir.path().join("gridwatch.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            // As migration 18 left it: no epoch, nor what migrations 20 to 27 add.
            conn.execute_batch(
                "DROP TABLE store_epoch; DROP TABLE uplink_trend; ALTER TABLE trend DROP COLUMN uplinked; ALTER TABLE escalations DROP COLUMN aged_at_ms; ALTER TABLE escalations DROP COLUMN reminders_sent; DROP TABLE sms_sends; DROP TABLE robot_sends; DROP TABLE robot_throttles; DROP TABLE silenced_alarms; DROP TABLE sms_budget_sends; ALTER TABLE incidents DROP COLUMN afresh; DROP TABLE sms_owed; DROP INDEX incidents_by_house; ALTER TABLE incidents DROP COLUMN house; ALTER TABLE incidents DROP COLUMN folded_into; ALTER TABLE incidents DROP COLUMN told; PRAGMA user_version = 18;",
            )
            .unwrap();
        }
        let epoch = Store::open(dir.path()).unwrap().epoch().await.unwrap();
        assert_eq!(epoch.id.len(), 16, "{epoch:?}");
    }

    /// The district's board tells a device fault from a house's alarm by the transitions' flag.
    #[tokio::test]
    async fn a_device_fault_s_transitions_go_up_marked_as_one() {
        use crate::alert::{tests::sample_alert, Audience};
        use crate::store::Journaling;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = || Journaling { route: Box::new(|_, _| Vec::new()), not_before_ms: None, escalate: None };
        let house = sample_alert("fired", 7.5);
        let mut stuck = sample_alert("fired", 1.0);
        (stuck.rule, stuck.sensor, stuck.audience) = ("tilt-flat-line".into(), "house-08".into(), Audience::Installer);
        store.apply_and_journal(&house, 600_000, journal()).await.unwrap();
        store.apply_and_journal(&stuck, 600_000, journal()).await.unwrap();
        let rows = store.transitions_after(0, 10).await.unwrap();
        let flags: Vec<(&str, bool)> = rows.iter().map(|r| (r.rule.as_str(), r.device)).collect();
        assert_eq!(flags, [("tilt-danger", false), ("tilt-flat-line", true)]);
        let wire = serde_json::to_value(&rows[0]).unwrap();
        assert!(wire.get("device").is_none(), "a house's row goes up as before: {wire}");
        let old: UplinkTransition = serde_json::from_value(wire).unwrap();
        assert!(!old.device, "a row from a box before the flag is a house's");
        // The incident's worst severity goes up with it (its deadlines' policy at the hub), and
        // a transition stamped while the clock was not set is marked so.
        assert_eq!(rows[0].worst_severity, rows[0].severity);
        let conn = rusqlite::Connection::open(dir.path().join("gridwatch.db")).unwrap();
        conn.execute("UPDATE incident_events SET clock_unset_at = -1 WHERE id = ?1", [rows[1].id]).unwrap();
        let rows = store.transitions_after(0, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.time_unknown).collect::<Vec<_>>(), [false, true]);
        assert!(serde_json::to_value(&rows[0]).unwrap().get("time_unknown").is_none(), "a row stamped on a set clock goes up as before");
    }

    #[tokio::test]
    async fn uplink_readings_are_forgotten_once_committed_and_capped_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.uplink_newest_ids().await.unwrap(), [0, 0, 0, 0]);
        let dropped = store.record_uplink_readings((1..=5).map(|ts| point("house-07", ts)).collect(), 0, 10).await.unwrap();
        assert_eq!(dropped, 0);
        let rows = store.uplink_readings_after(2, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(rows[0], UplinkReading { id: 3, sensor: "house-07".into(), ts: 3, fields: vec![("x".into(), 3.0)] });
        // The hub committed up to 5: all forgotten; ids go on from 6, never back to 1.
        store.record_uplink_readings(Vec::new(), 5, 10).await.unwrap();
        assert!(store.uplink_readings_after(0, 10).await.unwrap().is_empty());
        assert_eq!(store.uplink_newest_ids().await.unwrap()[2], 5);
        let dropped = store.record_uplink_readings((6..=9).map(|ts| point("house-07", ts)).collect(), 5, 3).await.unwrap();
        assert_eq!(dropped, 1, "over the cap, the oldest waiting goes");
        assert_eq!(store.uplink_readings_after(0, 10).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [7, 8, 9]);
    }
}
