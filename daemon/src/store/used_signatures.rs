//! Signatures already used: a signed worker's action (the MQTT ack topic) is taken once. Each
//! signature is kept until its message could no longer be accepted anyway, so a replay is
//! refused for the message's whole life — across restarts, since the row is on disk before the
//! action is applied.
//!
//! Invariant: a signature is recorded at most once per purpose; rows past `expires_ms` are
//! deleted on the next use while the clock is set, so the table holds only what could still be
//! replayed. (A clock that is not set may be ahead: rows it judged past could be replayed again
//! once NTP steps it back, so it deletes nothing.)

use super::Store;
use rusqlite::params;

impl Store {
    /// Records `signature` as used for `purpose` until `expires_ms`; false when it already was
    /// (a replay). Expired rows are purged first.
    pub fn use_signature(&self, purpose: &str, signature: &str, expires_ms: i64, now_ms: i64) -> anyhow::Result<bool> {
        self.essential(|conn| {
            let tx = conn.transaction()?;
            if self.clock.synchronized() {
                tx.execute("DELETE FROM used_signatures WHERE expires_ms < ?1", params![now_ms])?;
            }
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO used_signatures (signature, purpose, expires_ms) VALUES (?1, ?2, ?3)",
                params![signature.to_ascii_lowercase(), purpose, expires_ms],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_used_once_until_it_expires_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.use_signature("ack", "ab12", 10_000, 1_000).unwrap());
        assert!(!store.use_signature("ack", "AB12", 10_000, 2_000).unwrap(), "the same signature again, in either case");
        assert!(store.use_signature("ack", "cd34", 10_000, 2_000).unwrap());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.use_signature("ack", "ab12", 10_000, 3_000).unwrap(), "remembered across a restart");
        assert!(store.use_signature("ack", "ab12", 20_000, 10_001).unwrap(), "purged once expired (the message is stale by then)");
    }
}
