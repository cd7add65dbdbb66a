//! The wall clock's steps as links see them ([`crate::link_clock::ClockStep`]), kept so a
//! restart after the clock was set still reads the links signed before it on the true time.
//!
//! Invariant: a step is deleted once it can map no link still valid (its last true expiry is
//! past), so the table holds a handful of rows at most.

use super::Store;
use crate::link_clock::ClockStep;
use rusqlite::params;

impl Store {
    /// Keeps `steps`, and forgets those that map nothing still valid at `now_secs`.
    pub async fn save_clock_steps(&self, steps: Vec<ClockStep>, now_secs: i64) -> anyhow::Result<()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM clock_steps WHERE expires_until + step_secs < ?1", [now_secs])?;
            for step in &steps {
                tx.execute(
                    "INSERT INTO clock_steps (expires_from, expires_until, first_expiry_after, step_secs) VALUES (?1, ?2, ?3, ?4)",
                    params![step.expires_from, step.expires_until, step.first_expiry_after, step.step_secs],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The steps kept, oldest first.
    pub fn clock_steps(&self) -> anyhow::Result<Vec<ClockStep>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT expires_from, expires_until, first_expiry_after, step_secs FROM clock_steps ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok(ClockStep { expires_from: row.get(0)?, expires_until: row.get(1)?, first_expiry_after: row.get(2)?, step_secs: row.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_are_kept_until_they_map_nothing_still_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = ClockStep { expires_from: 1_000, expires_until: 2_000, first_expiry_after: 300_000, step_secs: 259_200 };
        store.save_clock_steps(vec![step], 0).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.clock_steps().unwrap(), vec![step], "kept across a restart");
        store.save_clock_steps(Vec::new(), step.last_true_expiry()).await.unwrap();
        assert_eq!(store.clock_steps().unwrap(), vec![step], "still maps a link valid this second");
        store.save_clock_steps(Vec::new(), step.last_true_expiry() + 1).await.unwrap();
        assert_eq!(store.clock_steps().unwrap(), Vec::new());
    }
}
