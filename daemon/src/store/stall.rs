//! A card that stalls instead of failing. An SD card busy with its own garbage collection, a
//! hung controller or a frozen filesystem (`fsfreeze`) blocks writes — and SQLite's page faults on
//! its shared memory — for seconds or minutes without an error. Nothing on the alarm path may wait
//! for it:
//!
//! - every operation on the connection or the crash log is registered while it runs; one that
//!   has not returned after [`STALLED_AFTER`] makes the store *stalled* (`/healthz`, metrics);
//! - while it is stalled, new operations fail at once instead of queueing behind the blocked one
//!   (the dispatcher then sends alarms and ladder steps from memory);
//! - the locks are waited for at most until the holder would count as stalled, and an async
//!   caller waits for its operation at most [`STALLED_AFTER`]; an operation its caller gave up
//!   that had not started yet never runs ([`Abandoned`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An operation that has not returned after this long means the card stalls. A community
/// store's transactions take milliseconds; an SD card's worst ordinary sync is about a second.
pub(super) const STALLED_AFTER: Duration = Duration::from_secs(5);

/// Operations running now, by number: when each started and what it is.
#[derive(Debug, Default)]
pub(super) struct Stall {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, (Instant, &'static str)>>,
}

/// An operation registered with [`Stall::begin`]; it ends when this is dropped.
#[derive(Debug)]
pub(super) struct Running {
    stall: Arc<Stall>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stall.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

/// The store stalls: an operation has not returned for a while.
#[derive(Debug, thiserror::Error)]
#[error("store stalled: {what} has not returned for {secs} s (the SD card blocks writes without failing)")]
pub struct Stalled {
    pub what: &'static str,
    pub secs: u64,
}

impl Stall {
    /// Registers an operation until the returned value is dropped.
    pub(super) fn begin(self: &Arc<Self>, what: &'static str) -> Running {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (Instant::now(), what));
        Running { stall: self.clone(), id }
    }

    /// The oldest running operation and how long it has run.
    fn oldest(&self) -> Option<(Duration, &'static str)> {
        let running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.values().map(|(at, what)| (at.elapsed(), *what)).max_by_key(|(age, _)| *age)
    }

    /// Why the store stalls now, if it does.
    pub(super) fn stalled(&self) -> Option<Stalled> {
        self.oldest().filter(|(age, _)| *age >= STALLED_AFTER).map(|(age, what)| Stalled { what, secs: age.as_secs() })
    }

    /// Fails while the store stalls.
    pub(super) fn check(&self) -> Result<(), Stalled> {
        self.stalled().map_or(Ok(()), Err)
    }

    /// How long a lock may be waited for: until its holder (the oldest operation) would count
    /// as stalled.
    pub(super) fn patience(&self) -> Duration {
        self.oldest().map_or(STALLED_AFTER, |(age, _)| STALLED_AFTER.saturating_sub(age)).max(Duration::from_millis(10))
    }
}

/// Set when the caller of an operation gave up waiting for it.
#[derive(Debug, Clone, Default)]
pub(super) struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    pub(super) fn abandon(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Fails once the caller gave up: the operation must not start its writes then.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.is_set() {
            anyhow::bail!("store operation given up by its caller (the store stalled); not run");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_running_too_long_stalls_the_store_until_it_returns() {
        let stall = Arc::new(Stall::default());
        assert!(stall.check().is_ok());
        let running = stall.begin("a spool commit");
        assert!(stall.check().is_ok(), "a running operation is not yet a stall");
        assert!(stall.patience() <= STALLED_AFTER);
        // Backdate it past the mark.
        stall.running.lock().unwrap().get_mut(&running.id).unwrap().0 = Instant::now() - STALLED_AFTER - Duration::from_secs(1);
        let stalled = stall.check().unwrap_err();
        assert_eq!(stalled.what, "a spool commit");
        assert!(stalled.secs >= 5, "{stalled}");
        assert_eq!(stall.patience(), Duration::from_millis(10), "nobody waits behind a stalled operation");
        drop(running);
        assert!(stall.check().is_ok(), "the store stalls no more once it returned");
    }

    #[test]
    fn an_abandoned_operation_does_not_start() {
        let abandoned = Abandoned::default();
        assert!(abandoned.check().is_ok());
        abandoned.clone().abandon();
        assert!(abandoned.check().is_err());
    }
}
