//! Space kept back for alarms on a full disk: a plain file (`gridwatch.reserve`) of a set size
//! beside the database. When a write the daemon cannot lose (an alert, an incident, an
//! escalation clock) finds the disk full, the file is deleted and the write tried once more in
//! the space it freed. When a telemetry write finds the disk full, the file is deleted too, and
//! readings are no longer written (dropped, counted) until the file can be made again — so the
//! freed space stays for alarms.
//!
//! Invariant: while the reserve is given up, telemetry never writes; the reserve is only made
//! again when the disk has room for all of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::Clock;

/// How often a given-up reserve is tried again.
const RESTORE_EVERY_MS: i64 = 5_000;

#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    /// Size to keep; 0 = no reserve (tests, the CLI).
    bytes: AtomicU64,
    /// The file is there, whole.
    held: AtomicBool,
    /// When a given-up reserve was last tried again (ms since the epoch).
    last_attempt_ms: AtomicI64,
    /// Serialises making and deleting the file.
    file: Mutex<()>,
    /// When the reserve was given up is read on it.
    clock: Clock,
}

impl Reserve {
    pub fn new(state_dir: &Path, clock: Clock) -> Reserve {
        Reserve {
            path: state_dir.join("gridwatch.reserve"),
            bytes: AtomicU64::new(0),
            held: AtomicBool::new(false),
            last_attempt_ms: AtomicI64::new(0),
            file: Mutex::new(()),
            clock,
        }
    }

    /// Keeps `bytes` in reserve from now on; returns whether the file could be made.
    pub fn keep(&self, bytes: u64) -> bool {
        self.bytes.store(bytes, Ordering::SeqCst);
        if bytes == 0 {
            self.give_up();
            let _ = std::fs::remove_file(&self.path);
            return false;
        }
        self.make()
    }

    /// True when a reserve is configured but given up: the disk was full.
    pub fn given_up(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) > 0 && !self.held.load(Ordering::SeqCst)
    }

    /// Deletes the file; true when that freed space (it was held).
    pub fn give_up(&self) -> bool {
        let _guard = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.held.swap(false, Ordering::SeqCst) {
            return false;
        }
        // The next attempt to make it again is a while away.
        self.last_attempt_ms.store(self.clock.now(), Ordering::SeqCst);
        match std::fs::remove_file(&self.path) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(file = %self.path.display(), error = %error, "cannot delete the disk reserve");
                false
            }
        }
    }

    /// Tries to make a given-up reserve again, at most every few seconds, after `make_room`;
    /// true when it is held.
    pub fn try_restore(&self, now_ms: i64, make_room: impl FnOnce()) -> bool {
        if !self.given_up() {
            return self.bytes.load(Ordering::SeqCst) > 0;
        }
        let last = self.last_attempt_ms.load(Ordering::SeqCst);
        if now_ms - last < RESTORE_EVERY_MS || self.last_attempt_ms.compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return false;
        }
        make_room();
        let restored = self.make();
        if restored {
            tracing::info!(file = %self.path.display(), "disk has room again: reserve made, readings are stored again");
        }
        restored
    }

    /// Writes the file (zeros, so the filesystem really allocates it) at twice its size, then
    /// cuts it to size and syncs it: it is only made when the disk has room for the reserve and
    /// as much again, so a disk that is still nearly full does not make and lose it in turn. A
    /// file that does not fit is removed again.
    fn make(&self) -> bool {
        let _guard = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = self.bytes.load(Ordering::SeqCst);
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&self.path)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = bytes.saturating_mul(2);
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.set_len(bytes)?;
            file.sync_all()
        })();
        match written {
            Ok(()) => {
                self.held.store(true, Ordering::SeqCst);
                true
            }
            Err(error) => {
                let _ = std::fs::remove_file(&self.path);
                self.held.store(false, Ordering::SeqCst);
                tracing::debug!(file = %self.path.display(), error = %error, "no room for the disk reserve");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_a_real_file_that_can_be_given_up_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let given_up_at = 1_795_392_000_000;
        let reserve = Reserve::new(dir.path(), Clock::starting_at(given_up_at, true));
        assert!(!reserve.given_up(), "no reserve configured: nothing given up");
        assert!(reserve.keep(100_000));
        assert_eq!(std::fs::metadata(dir.path().join("gridwatch.reserve")).unwrap().len(), 100_000);
        assert!(reserve.give_up());
        assert!(!dir.path().join("gridwatch.reserve").exists());
        assert!(reserve.given_up());
        assert!(!reserve.give_up(), "giving up twice frees nothing the second time");
        assert!(!reserve.try_restore(given_up_at + 1_000, || {}), "tried again only every few seconds");
        assert!(reserve.try_restore(given_up_at + 10_000, || {}));
        assert!(!reserve.given_up());
        assert_eq!(std::fs::metadata(dir.path().join("gridwatch.reserve")).unwrap().len(), 100_000);
    }
}
