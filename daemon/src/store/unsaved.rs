//! Readings acknowledged to the broker since the rule state was last saved. A reading is written
//! here in the same transaction that spools it (before its acknowledgement), and forgotten once a
//! saved rule state has judged it. After a crash the rule state comes back from its last save,
//! and these readings are judged again before any new one, so nothing acknowledged goes
//! unjudged (the dispatcher drops the events it already sent, see [`super::Applied`]).
//!
//! Invariant: a reading leaves only when the saved state of its sensor is at or past its time.

use super::{SpooledPoint, Store};
use gridwatch_rules::Millis;
use rusqlite::params;

impl Store {
    /// Up to `limit` readings waiting to be judged again, in the order they were acknowledged,
    /// after the one numbered `after`.
    pub async fn unsaved_readings(&self, after: i64, limit: usize) -> anyhow::Result<Vec<SpooledPoint>> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached("SELECT id, sensor, ts, fields FROM unsaved_readings WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = statement.query_map(params![after, limit as i64], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?)))?;
            let mut readings = Vec::new();
            for row in rows {
                let (id, sensor, ts, fields) = row?;
                match serde_json::from_str(&fields) {
                    Ok(fields) => readings.push(SpooledPoint { id, sensor, ts, fields }),
                    Err(error) => tracing::error!(id, sensor = %sensor, error = %error, "stored reading cannot be read back; not judged again"),
                }
            }
            Ok(readings)
        })
        .await
    }

    /// Forgets the readings a just-saved rule state has judged: per sensor, those at or before
    /// the time of the last reading it judged (`judged_until`, by sensor id).
    pub async fn forget_judged(&self, judged_until: std::collections::HashMap<String, Millis>) -> anyhow::Result<u64> {
        self.with_conn_bulk(move |conn| {
            // One pass over the (unindexed) table against a small table of the saved times: an
            // index on (sensor, ts) would cost a page write per reading on the way in.
            let tx = conn.transaction()?;
            tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS judged_until (sensor TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID; DELETE FROM judged_until;")?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO judged_until (sensor, until) VALUES (?1, ?2)")?;
                for (sensor, until) in &judged_until {
                    insert.execute(params![sensor, until])?;
                }
            }
            let forgotten = tx.execute("DELETE FROM unsaved_readings WHERE ts <= (SELECT until FROM judged_until WHERE judged_until.sensor = unsaved_readings.sensor)", [])? as u64;
            tx.commit()?;
            Ok(forgotten)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spooled_readings_wait_until_a_saved_state_has_judged_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let points = vec![("house-07".into(), 1_000, vec![("x".to_string(), 0.1)]), ("house-07".into(), 2_000, vec![("x".to_string(), 0.2)]), ("house-08".into(), 1_500, vec![("x".to_string(), 0.3)])];
        store.spool_append(points, Some(100)).await.unwrap();
        // InfluxDB took them all: the spool is empty, the rules still owe them a saved state.
        let spooled: Vec<i64> = store.spool_peek(10).await.unwrap().iter().map(|p| p.id).collect();
        store.spool_remove(spooled).await.unwrap();
        assert_eq!(store.unsaved_readings(0, 10).await.unwrap().len(), 3);
        let forgotten = store.forget_judged([("house-07".to_string(), 1_000)].into_iter().collect()).await.unwrap();
        assert_eq!(forgotten, 1, "only what the saved state judged");
        let left: Vec<(String, Millis)> = Store::open(dir.path()).unwrap().unsaved_readings(0, 10).await.unwrap().into_iter().map(|p| (p.sensor, p.ts)).collect();
        assert_eq!(left, vec![("house-07".to_string(), 2_000), ("house-08".to_string(), 1_500)], "in the order they came, across a restart");
    }

    #[tokio::test]
    async fn without_influxdb_readings_go_to_the_crash_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.spool_append(vec![("canal-02".into(), 1_000, vec![("do".to_string(), 4.2)])], None).await.unwrap();
        assert!(store.spool_peek(10).await.unwrap().is_empty(), "nothing waits for an InfluxDB that does not exist");
        assert_eq!(store.unsaved_readings(0, 10).await.unwrap().len(), 1, "but a crash before the next state save judges it again");
    }
}
