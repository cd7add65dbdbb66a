//! Readings acknowledged to the broker since the rule state was last saved. A reading is
//! appended to the [`super::crash_log`] before its acknowledgement (synced first unless InfluxDB
//! has committed it), and forgotten once a saved rule state has judged it. After a crash the
//! rule state comes back from its last save, and these readings are judged again before any new
//! one, so nothing acknowledged goes unjudged (the dispatcher drops the events it already sent,
//! see [`super::Applied`]). Stores of older versions kept them in the `unsaved_readings` table,
//! which is still read (first) and emptied.
//!
//! A card that cannot write (read-only, stalled) cannot log them either: with a runtime
//! directory (tmpfs, [`Store::keep_beside_card`]) they are logged there instead, copied to the
//! card before its next append once it writes again, and judged again after the card's own if
//! the daemon dies first — a crash, or systemd restarting it on a read-only card, costs no
//! judgement; a reboot loses them (nothing else on a Pi outlives it).
//!
//! Invariant: a reading leaves only when the saved state of its sensor is at or past its time.

use super::crash_log::{CrashLog, LogCursor, LoggedReading};
use super::spool::NewPoint;
use super::{BesideCard, SpooledPoint, Store};
use gridwatch_rules::Millis;
use rusqlite::params;
use std::path::Path;
use std::sync::atomic::Ordering;

/// How long a write beside the card waits for a copy to the card in progress (which a stalled
/// card can hold up).
const BESIDE_CARD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The most the readings beside the card take of the runtime directory (a tmpfs is memory): a
/// card read-only for days stops there, and the readings after it are not judged again after a
/// crash, as without a runtime directory.
const BESIDE_CARD_MOST_BYTES: u64 = 32 * 1024 * 1024;

impl Store {
    /// Logs the readings the card cannot in `runtime_dir/unsaved` (created if needed); those a
    /// run before this one left there are copied to the card now if it writes, else judged
    /// again after the card's.
    pub fn keep_beside_card(mut self, runtime_dir: &Path) -> anyhow::Result<Store> {
        let dir = runtime_dir.join("unsaved");
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let log = CrashLog::open(&dir);
        let holds = log.holds_any();
        self.beside_card = Some(BesideCard {
            dir: runtime_dir.to_path_buf(),
            log: std::sync::Arc::new(parking_lot::Mutex::new(log)),
            holds: std::sync::Arc::new(holds.into()),
            kept_recorded: std::sync::Arc::new(tokio::sync::watch::Sender::new(!super::sent_from_memory::kept_in(runtime_dir))),
        });
        if holds {
            let copied = self.lock_crash_log().and_then(|mut log| self.copy_beside_card(&mut log));
            match copied {
                Ok(count) => {
                    tracing::warn!(readings = count, dir = %dir.display(), "readings the card could not log in the last run were copied to it, to be judged again")
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), error = %format!("{error:#}"), "readings the card could not log in the last run stay in memory; they are judged again after the card's")
                }
            }
        }
        Ok(self)
    }

    /// Appends `points` to the crash log; with `sync`, they are on disk when this returns. When
    /// the card cannot take them, they go beside it (if there is a runtime directory).
    pub async fn log_unsaved(&self, points: std::sync::Arc<Vec<NewPoint>>, sync: bool) -> anyhow::Result<()> {
        let kept = points.clone();
        let result = self
            .bounded(move |store, abandoned| {
                let result = (|| {
                    let mut log = store.lock_crash_log()?;
                    abandoned.check()?;
                    store.copy_beside_card(&mut log)?;
                    log.append(points.iter().map(|(sensor, ts, fields)| (&**sensor, *ts, fields.as_slice())))?;
                    if sync {
                        log.sync()?;
                    }
                    Ok(())
                })();
                store.note_write(&result);
                result
            })
            .await;
        let (Err(error), Some(beside)) = (&result, &self.beside_card) else { return result };
        let Some(mut log) = beside.log.try_lock_for(BESIDE_CARD_PATIENCE) else { return result };
        if log.bytes() >= BESIDE_CARD_MOST_BYTES {
            return result;
        }
        match log.append(kept.iter().map(|(sensor, ts, fields)| (&**sensor, *ts, fields.as_slice()))) {
            Ok(()) => {
                beside.holds.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(beside_error) => Err(anyhow::anyhow!("{error:#}; and beside the card: {beside_error}")),
        }
    }

    /// Copies what waits beside the card to the card's log (synced), then empties it; the
    /// number of readings copied.
    fn copy_beside_card(&self, card: &mut CrashLog) -> anyhow::Result<usize> {
        let Some(beside) = &self.beside_card else { return Ok(0) };
        if !beside.holds.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let mut log = beside.log.lock();
        let (readings, _) = log.read_all()?;
        card.append(readings.iter().map(|r| (r.sensor.as_str(), r.ts, r.fields.as_slice())))?;
        card.sync()?;
        log.clear()?;
        beside.holds.store(false, Ordering::SeqCst);
        Ok(readings.len())
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
    /// after them, and how many lines could not be read: the card's log first, then what waits
    /// beside it.
    pub async fn logged_unsaved(&self, cursor: LogCursor, limit: usize) -> anyhow::Result<(Vec<LoggedReading>, LogCursor, u64)> {
        let mut unreadable = 0;
        if !cursor.beside_card {
            let (readings, next, torn) = self
                .bounded(move |store, _| {
                    let log = store.lock_crash_log()?;
                    Ok(log.read(cursor, limit)?)
                })
                .await?;
            if !readings.is_empty() || next != cursor || self.beside_card.is_none() {
                return Ok((readings, next, torn));
            }
            unreadable = torn;
        }
        let Some(beside) = &self.beside_card else { return Ok((Vec::new(), cursor, unreadable)) };
        let from = if cursor.beside_card { cursor } else { LogCursor { beside_card: true, ..LogCursor::default() } };
        let (readings, next, torn) = beside.log.lock().read(from, limit)?;
        Ok((readings, next, unreadable + torn))
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
        // A state saved only in memory (a read-only card) outlives nothing: keep them then.
        let beside = match &self.beside_card {
            Some(beside) if !self.read_only() => {
                let mut log = beside.log.lock();
                let forgotten = log.forget_judged(&judged_until)?;
                beside.holds.store(log.holds_any(), Ordering::SeqCst);
                forgotten
            }
            _ => 0,
        };
        let logged = logged + beside;
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
