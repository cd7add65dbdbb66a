//! Readings acknowledged to the broker since the rule state was last saved. A reading is
//! appended to the [`super::crash_log`] before its acknowledgement (synced first unless InfluxDB
//! has committed it), and forgotten once a saved rule state has judged it. After a crash the
//! rule state comes back from its last save, and these readings are judged again before any new
//! one, so nothing acknowledged goes unjudged (the dispatcher drops the events it already sent,
//! see [`super::Applied`]). Stores of older versions kept them in the `unsaved_readings` table,
//! which is still read (first) and emptied.
//!
//! Invariant: a reading leaves only when the saved state of its sensor is at or past its time.

use super::crash_log::{LogCursor, LoggedReading};
use super::spool::NewPoint;
use super::{SpooledPoint, Store};
use gridwatch_rules::Millis;
use rusqlite::params;

impl Store {
    /// Appends `points` to the crash log; with `sync`, they are on disk when this returns.
    pub async fn log_unsaved(&self, points: std::sync::Arc<Vec<NewPoint>>, sync: bool) -> anyhow::Result<()> {
        self.bounded(move |store, abandoned| {
            let result = (|| {
                let mut log = store.lock_crash_log()?;
                abandoned.check()?;
                log.append(points.iter().map(|(sensor, ts, fields)| (&**sensor, *ts, fields.as_slice())))?;
                if sync {
                    log.sync()?;
                }
                Ok(())
            })();
            store.note_write(&result);
            result
        })
        .await
    }

    /// Makes the crash log durable (before readings InfluxDB did not take are acknowledged).
    pub async fn sync_unsaved(&self) -> anyhow::Result<()> {
        self.bounded(move |store, _| {
            let result = store.lock_crash_log().and_then(|mut log| Ok(log.sync()?));
            store.note_write(&result);
            result
        })
        .await
    }

    /// Up to `limit` readings of the crash log from `cursor` on (not this run's), the cursor
    /// after them, and how many lines could not be read.
    pub async fn logged_unsaved(&self, cursor: LogCursor, limit: usize) -> anyhow::Result<(Vec<LoggedReading>, LogCursor, u64)> {
        self.bounded(move |store, _| {
            let log = store.lock_crash_log()?;
            Ok(log.read(cursor, limit)?)
        })
        .await
    }

    /// Up to `limit` readings waiting to be judged again in an older store's table, in the
    /// order they were acknowledged, after the one numbered `after`.
    pub async fn unsaved_readings(&self, after: i64, limit: usize) -> anyhow::Result<Vec<SpooledPoint>> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached("SELECT id, sensor, ts, fields FROM unsaved_readings WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?))
            })?;
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
        let (judged_until, logged) = self
            .bounded(move |store, abandoned| {
                let forgotten = store.lock_crash_log().and_then(|mut log| {
                    abandoned.check()?;
                    Ok(log.forget_judged(&judged_until)?)
                });
                store.note_write(&forgotten);
                forgotten.map(|logged| (judged_until, logged))
            })
            .await?;
        Ok(logged + self.forget_judged_in_table(judged_until).await?)
    }

    async fn forget_judged_in_table(&self, judged_until: std::collections::HashMap<String, Millis>) -> anyhow::Result<u64> {
        self.with_conn_bulk(move |conn| {
            // One pass over the (unindexed) table against a small table of the saved times: an
            // index on (sensor, ts) would cost a page write per reading on the way in.
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS judged_until (sensor TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID; DELETE FROM judged_until;",
            )?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO judged_until (sensor, until) VALUES (?1, ?2)")?;
                for (sensor, until) in &judged_until {
                    insert.execute(params![sensor, until])?;
                }
            }
            let forgotten = tx
                .execute("DELETE FROM unsaved_readings WHERE ts <= (SELECT until FROM judged_until WHERE judged_until.sensor = unsaved_readings.sensor)", [])?
                as u64;
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
    async fn logged_readings_wait_until_a_saved_state_has_judged_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let points = vec![("house-07".into(), 1_000, vec![("x".to_string(), 0.1)]), ("house-08".into(), 1_500, vec![("x".to_string(), 0.3)])];
        store.log_unsaved(std::sync::Arc::new(points), true).await.unwrap();
        store.forget_judged([("house-07".to_string(), 1_000), ("house-08".to_string(), Millis::MIN)].into_iter().collect()).await.unwrap();
        let (left, _, unreadable) = Store::open(dir.path()).unwrap().logged_unsaved(LogCursor::default(), 10).await.unwrap();
        assert_eq!(
            left.iter().map(|r| (r.sensor.as_str(), r.ts)).collect::<Vec<_>>(),
            vec![("house-07", 1_000), ("house-08", 1_500)],
            "kept while house-08 is not judged, across a restart"
        );
        assert_eq!(unreadable, 0);
    }

    #[tokio::test]
    async fn an_older_store_s_table_is_read_and_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.lock().unwrap().execute("INSERT INTO unsaved_readings (sensor, ts, fields) VALUES ('canal-02', 1000, '[[\"do\",4.2]]')", []).unwrap();
        assert_eq!(store.unsaved_readings(0, 10).await.unwrap().len(), 1);
        assert_eq!(store.forget_judged([("canal-02".to_string(), 1_000)].into_iter().collect()).await.unwrap(), 1);
        assert!(store.unsaved_readings(0, 10).await.unwrap().is_empty());
    }
}
