//! Signatures already used: a signed worker's action (the MQTT ack topic) is taken once. Each
//! signature is kept until its message could no longer be accepted anyway, so a replay is
//! refused for the message's whole life — across restarts, since the row is on disk before the
//! action is applied.
//!
//! On a store copied into memory (a read-only card) a signature used is kept beside the card in
//! the same transaction ([`super::sent_from_memory`]) and used again at the next start
//! ([`Store::use_signature_again`]), or it is not used at all and its action is not applied
//! (it could be replayed after the next start). A card that cannot write under the running
//! daemon does the same in memory: the signature is kept beside the card, refused again for the
//! rest of the run, and recorded once the card writes (or at the next start).
//!
//! Invariant: a signature is recorded at most once per purpose; rows past `expires_ms` are
//! deleted on the next use while the clock is set, so the table holds only what could still be
//! replayed. (A clock that is not set may be ahead: rows it judged past could be replayed again
//! once NTP steps it back, so it deletes nothing.)

use super::{SentFromMemory, SignatureUsed, Store};
use rusqlite::params;

impl Store {
    /// Records `signature` as used for `purpose` until `expires_ms`; false when it already was
    /// (a replay). Expired rows are purged first.
    pub fn use_signature(&self, purpose: &str, signature: &str, expires_ms: i64, now_ms: i64) -> anyhow::Result<bool> {
        self.record_signature(&SignatureUsed { purpose: purpose.into(), signature: signature.to_ascii_lowercase(), expires_ms }, now_ms, true)
    }

    /// Uses again a signature a store copied into memory used in an earlier run (kept beside the
    /// card): the replay it refused then is refused now.
    pub fn use_signature_again(&self, used: &SignatureUsed) -> anyhow::Result<()> {
        self.record_signature(used, self.clock.now(), false).map(drop)
    }

    /// [`Store::use_signature`]; `keep`: whether a store copied into memory keeps it beside the
    /// card (not when it is used again from there).
    fn record_signature(&self, used: &SignatureUsed, now_ms: i64, keep: bool) -> anyhow::Result<bool> {
        let key = (used.purpose.clone(), used.signature.to_ascii_lowercase());
        if self.steps_from_memory.lock().signatures.contains(&key) {
            return Ok(false);
        }
        match self.record_signature_on_card(used, now_ms, keep) {
            Err(error) if keep && !self.memory_copy && self.card_cannot_write(&error) => {
                self.report_failure("recording a used signature (it is kept in memory and beside the card)", &error);
                self.keep_line_beside_card(&SentFromMemory::Signature { used_signature: used.clone() })?;
                let mut steps = self.steps_from_memory.lock();
                steps.signatures.insert(key);
                steps.to_record.push(SentFromMemory::Signature { used_signature: used.clone() });
                Ok(true)
            }
            recorded => recorded,
        }
    }

    /// [`Store::record_signature`] in the store, in one transaction.
    fn record_signature_on_card(&self, used: &SignatureUsed, now_ms: i64, keep: bool) -> anyhow::Result<bool> {
        let SignatureUsed { purpose, signature, expires_ms } = used;
        self.essential(|conn| {
            let tx = conn.transaction()?;
            if self.clock.synchronized() {
                tx.execute("DELETE FROM used_signatures WHERE expires_ms < ?1", params![now_ms])?;
            }
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO used_signatures (signature, purpose, expires_ms) VALUES (?1, ?2, ?3)",
                params![signature.to_ascii_lowercase(), purpose, expires_ms],
            )?;
            if inserted == 1 && keep && self.memory_copy {
                self.keep_line_beside_card(&SentFromMemory::Signature { used_signature: used.clone() })?;
            }
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

    #[test]
    fn a_signature_used_on_a_copy_in_memory_is_used_again_at_the_next_start() {
        let (copied, card, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let copy = Store::open(copied.path()).unwrap().keep_beside_card(runtime.path()).unwrap().into_memory_copy();
        assert!(copy.use_signature("ack", "AB12", 10_000, 1_000).unwrap());
        assert!(!copy.use_signature("ack", "ab12", 10_000, 2_000).unwrap(), "a replay is not kept again");
        let next = Store::open(card.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        let kept = next.sent_from_memory_left();
        let used = SignatureUsed { purpose: "ack".into(), signature: "ab12".into(), expires_ms: 10_000 };
        assert_eq!(kept, vec![SentFromMemory::Signature { used_signature: used.clone() }]);
        next.use_signature_again(&used).unwrap();
        assert!(!next.use_signature("ack", "ab12", 10_000, 3_000).unwrap(), "the replay is refused after the restart");
    }
}
