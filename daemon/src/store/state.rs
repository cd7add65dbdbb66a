//! The rule engine's last saved state (one row, replaced each time).

use super::Store;
use rusqlite::params;

impl Store {
    /// Replaces the saved rule-engine state. A large write that never uses the disk reserve: on a
    /// full disk the previous snapshot stays and the space is kept for alarms.
    pub async fn save_engine_state(&self, json: String, at_ms: i64) -> anyhow::Result<()> {
        self.with_conn_bulk(move |conn| {
            conn.execute(
                "INSERT INTO engine_state (id, saved_at_ms, state) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET saved_at_ms = excluded.saved_at_ms, state = excluded.state",
                params![at_ms, json],
            )?;
            Ok(())
        })
        .await
    }

    /// The saved rule-engine state, if any.
    pub fn load_engine_state(&self) -> anyhow::Result<Option<String>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT state FROM engine_state WHERE id = 1")?;
        let mut rows = statement.query([])?;
        match rows.next()? {
            Some(row) => Ok(Some(row.get(0)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn engine_state_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_engine_state().unwrap(), None);
        store.save_engine_state("{\"a\":1}".into(), 1).await.unwrap();
        store.save_engine_state("{\"a\":2}".into(), 2).await.unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().load_engine_state().unwrap().as_deref(), Some("{\"a\":2}"));
    }
}
