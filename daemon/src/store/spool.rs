//! The telemetry spool: readings wait here, committed to disk, until InfluxDB has taken them.
//! Readings go here only while InfluxDB does not take them at once (down, slow, or with a
//! backlog here): appends come in groups (one transaction, one fsync per group); the writer reads the oldest
//! points, and removes them once written (or moves a point InfluxDB rejects to `dead_letters`).
//!
//! Invariant: the spool holds at most `max_points` points; past that the oldest are deleted and
//! the caller counts them (`telemetry_points_dropped{reason="spool_full"}`). Alerts never live
//! here, so this cap never costs an alarm.

use super::Store;
use gridwatch_rules::Millis;
use rusqlite::params;

/// A reading waiting for InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledPoint {
    pub id: i64,
    pub sensor: String,
    pub ts: Millis,
    pub fields: Vec<(String, f64)>,
}

/// A reading to spool: sensor id, measurement time, fields.
pub type NewPoint = (std::sync::Arc<str>, Millis, Vec<(String, f64)>);

/// How full the spool is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub points: u64,
    /// Measurement time of the oldest point waiting.
    pub oldest_ts: Option<Millis>,
}

impl Store {
    /// Keeps readings `(sensor, ts, fields)` for InfluxDB in one transaction; returns how many of
    /// the oldest spooled points were deleted to stay within `max_points`.
    pub async fn spool_append(&self, points: std::sync::Arc<Vec<NewPoint>>, max_points: u64) -> anyhow::Result<u64> {
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO spool (sensor, ts, fields) VALUES (?1, ?2, ?3)")?;
                for (sensor, ts, fields) in points.iter() {
                    insert.execute(params![sensor, ts, serde_json::to_string(fields)?])?;
                }
            }
            let span: Option<(i64, i64)> = tx
                .query_row("SELECT min(id), max(id) FROM spool", [], |row| Ok(Some((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?))))
                .map(|r| match r {
                    Some((Some(min), Some(max))) => Some((min, max)),
                    _ => None,
                })?;
            let mut dropped = 0;
            if let Some((min, max)) = span {
                let held = (max - min + 1) as u64;
                if held > max_points {
                    let excess = (held - max_points) as i64;
                    dropped = tx.execute("DELETE FROM spool WHERE id < ?1", params![min + excess])? as u64;
                }
            }
            tx.commit()?;
            Ok(dropped)
        })
        .await
    }

    /// The oldest `limit` points.
    pub async fn spool_peek(&self, limit: usize) -> anyhow::Result<Vec<SpooledPoint>> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached("SELECT id, sensor, ts, fields FROM spool ORDER BY id LIMIT ?1")?;
            let rows = statement
                .query_map([limit as i64], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?)))?;
            let mut points = Vec::new();
            for row in rows {
                let (id, sensor, ts, fields) = row?;
                points.push(SpooledPoint { id, sensor, ts, fields: serde_json::from_str(&fields)? });
            }
            Ok(points)
        })
        .await
    }

    /// Removes points InfluxDB has taken.
    pub async fn spool_remove(&self, ids: Vec<i64>) -> anyhow::Result<()> {
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM spool WHERE id = ?1")?;
                for id in ids {
                    delete.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Moves a point InfluxDB refused to `dead_letters`, with the reason.
    pub async fn dead_letter(&self, point: SpooledPoint, error: String) -> anyhow::Result<()> {
        let now = self.clock.now();
        self.with_conn_bulk(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO dead_letters (at_ms, sensor, ts, fields, error) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now, point.sensor, point.ts, serde_json::to_string(&point.fields)?, error],
            )?;
            tx.execute("DELETE FROM spool WHERE id = ?1", [point.id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub fn spool_stats(&self) -> anyhow::Result<SpoolStats> {
        let conn = self.lock()?;
        let (points, oldest_ts) =
            conn.query_row("SELECT count(*), min(ts) FROM spool", [], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)))?;
        Ok(SpoolStats { points: points as u64, oldest_ts })
    }

    pub fn dead_letter_count(&self) -> anyhow::Result<u64> {
        let conn = self.lock()?;
        Ok(conn.query_row("SELECT count(*) FROM dead_letters", [], |row| row.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: i64) -> NewPoint {
        ("house-07".into(), 1_795_392_000_000 + i, vec![("x".into(), i as f64)])
    }

    #[tokio::test]
    async fn points_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.spool_append(std::sync::Arc::new((0..5).map(point).collect()), 100).await.unwrap(), 0);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let peeked = store.spool_peek(3).await.unwrap();
        assert_eq!(peeked.iter().map(|p| p.fields[0].1).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0]);
        store.spool_remove(peeked.iter().map(|p| p.id).collect()).await.unwrap();
        assert_eq!(store.spool_stats().unwrap(), SpoolStats { points: 2, oldest_ts: Some(1_795_392_000_003) });
    }

    #[tokio::test]
    async fn a_full_spool_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.spool_append(std::sync::Arc::new((0..8).map(point).collect()), 10).await.unwrap();
        assert_eq!(store.spool_append(std::sync::Arc::new((8..13).map(point).collect()), 10).await.unwrap(), 3);
        let left = store.spool_peek(100).await.unwrap();
        assert_eq!(left.len(), 10);
        assert_eq!(left[0].fields[0].1, 3.0);
    }

    #[tokio::test]
    async fn dead_letters_leave_the_spool_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.spool_append(std::sync::Arc::new(vec![point(0), point(1)]), 10).await.unwrap();
        let first = store.spool_peek(1).await.unwrap().remove(0);
        store.dead_letter(first, "HTTP 400: bad field".into()).await.unwrap();
        assert_eq!(store.spool_stats().unwrap().points, 1);
        assert_eq!(store.dead_letter_count().unwrap(), 1);
    }
}
