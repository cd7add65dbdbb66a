//! Whether the store can write, for `/healthz` and the metrics, and the rate limit of its error
//! lines: a store that cannot write is an alarm, not one log line per reading.
//!
//! Two signs: the state directory's filesystem is read-only (mounted so, or ext4 turned it
//! read-only after an error; read from `/proc/self/mountinfo` when health is asked — no write to
//! the card to find out), or a write failed (other than a full
//! disk, which has its own reserve and gauge) and none succeeded for [`RECOVERED_AFTER`] since.
//! A full one is seen by its free space ([`nearly_full`], `statvfs`) as well as by its writes.
//!
//! Also here: a `-wal` file torn by a power cut, found before SQLite's recovery silently drops
//! its partial frame.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A write that succeeds this long after the last failure means the store recovered.
const RECOVERED_AFTER: Duration = Duration::from_secs(10);
/// At most one error line per this long (the others are counted in it).
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Health {
    failed_writes: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last failure's text and time, while failing.
    failing: Option<(String, Instant)>,
    /// When an error line was last written, and how many were held back since.
    logged_at: Option<Instant>,
    held_back: u64,
}

impl Health {
    pub(super) fn failed(&self, error: &anyhow::Error) {
        self.failed_writes.fetch_add(1, Ordering::Relaxed);
        self.report("writing to the store", error);
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.failing = Some((format!("{error:#}"), Instant::now()));
    }

    pub(super) fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.failing.as_ref().is_some_and(|(_, at)| at.elapsed() >= RECOVERED_AFTER) {
            state.failing = None;
            tracing::warn!("the store writes again");
        }
    }

    pub(super) fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    /// Logs `error` unless a line was written in the last [`LOG_EVERY`].
    pub(super) fn report(&self, what: &str, error: &anyhow::Error) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.logged_at.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            state.held_back += 1;
            return;
        }
        let held_back = std::mem::take(&mut state.held_back);
        state.logged_at = Some(Instant::now());
        tracing::error!(what, error = %format!("{error:#}"), errors_not_logged = held_back, "store operation failed; incidents and alarms are at risk until it writes again");
    }

    pub(super) fn problem(&self, dir: &Path) -> Option<String> {
        if read_only(dir) {
            return Some(format!("state directory {} is read-only: incidents, reminders and readings cannot be stored", dir.display()));
        }
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.failing.as_ref().map(|(error, _)| format!("store writes failing: {error}"))
    }
}

/// Whether `dir`'s filesystem is read-only: mounted `ro`, or ext4's `emergency_ro` after an
/// error (which `statvfs` does not show). Read from `/proc/self/mountinfo`: nothing is written to
/// find out.
pub(super) fn read_only(dir: &Path) -> bool {
    let (Ok(dir), Ok(mounts)) = (dir.canonicalize(), std::fs::read_to_string("/proc/self/mountinfo")) else { return false };
    mount_read_only(&mounts, &dir)
}

/// [`read_only`] on the text of a mountinfo file: the options of the mount `dir` is under.
fn mount_read_only(mountinfo: &str, dir: &Path) -> bool {
    let mut best: Option<(usize, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else { continue };
        let point = point.replace("\\040", " ");
        if !dir.starts_with(&point) {
            continue;
        }
        let super_options = fields.iter().position(|f| *f == "-").and_then(|dash| fields.get(dash + 3)).copied().unwrap_or("");
        let read_only = options.split(',').chain(super_options.split(',')).any(|o| o == "ro" || o == "emergency_ro");
        if best.is_none_or(|(len, _)| point.len() >= len) {
            best = Some((point.len(), read_only));
        }
    }
    best.is_some_and(|(_, read_only)| read_only)
}

/// Below this many bytes free to the daemon, the state directory counts as full whatever the
/// last write said: with InfluxDB healthy nothing but the rule-state save writes much, its
/// failure is not an alarm's, and the small writes that still fit cleared the sign (an outside
/// tester's card at 0 bytes free kept `/healthz` ready until a restart).
const FULL_BELOW_BYTES: u64 = 64 * 1024;

/// Whether `dir`'s filesystem has less than [`FULL_BELOW_BYTES`] free to an unprivileged writer
/// (`statvfs`; not full when it cannot be read).
pub(super) fn nearly_full(dir: &Path) -> bool {
    free_bytes(dir).is_some_and(|free| free < FULL_BELOW_BYTES)
}

#[allow(unsafe_code)]
#[allow(clippy::useless_conversion)] // the fields are 32-bit on a 32-bit Pi OS
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `stats` is plain data that statvfs fills; `path` is a NUL-terminated string that
    // outlives the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let answer = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    (answer == 0).then(|| u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

/// The bytes of a partial frame at the end of `db`'s `-wal` (a write the power cut tore), which
/// SQLite's recovery drops; 0 when there is none. Logged here (the readings or alarms in it were
/// never acknowledged: a write is acknowledged only after its commit frame is synced).
pub(super) fn torn_wal_tail(db: &Path) -> u64 {
    use std::io::Read;
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    let Ok(mut file) = std::fs::File::open(&wal) else { return 0 };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut header = [0u8; 32];
    if len == 0 {
        return 0;
    }
    if len < 32 || file.read_exact(&mut header).is_err() {
        return report_torn(&wal, len);
    }
    let page_size = u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]]));
    let tail = if page_size == 0 { 0 } else { (len - 32) % (page_size + 24) };
    if tail == 0 {
        0
    } else {
        report_torn(&wal, tail)
    }
}

fn report_torn(wal: &Path, bytes: u64) -> u64 {
    tracing::warn!(file = %wal.display(), bytes, "torn write-ahead log: a partial write from a power cut is dropped by recovery (it was never acknowledged)");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_frame_at_the_end_of_the_wal_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gridwatch.db");
        let mut wal = vec![0u8; 32];
        wal[8..12].copy_from_slice(&4096u32.to_be_bytes());
        wal.extend(vec![1u8; 4096 + 24]);
        std::fs::write(dir.path().join("gridwatch.db-wal"), &wal).unwrap();
        assert_eq!(torn_wal_tail(&db), 0, "whole frames only");
        wal.extend(vec![2u8; 1000]);
        std::fs::write(dir.path().join("gridwatch.db-wal"), &wal).unwrap();
        assert_eq!(torn_wal_tail(&db), 1000);
        std::fs::write(dir.path().join("gridwatch.db-wal"), [0u8; 10]).unwrap();
        assert_eq!(torn_wal_tail(&db), 10, "a torn header");
    }

    #[test]
    fn an_ext4_card_read_only_after_an_error_is_found_in_mountinfo() {
        let mountinfo = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                         40 22 7:0 / /var/lib/gridwatch rw,relatime - ext4 /dev/loop0 rw,errors=remount-ro,emergency_ro\n\
                         41 22 7:1 / /srv ro,relatime - ext4 /dev/loop1 rw\n";
        assert!(mount_read_only(mountinfo, Path::new("/var/lib/gridwatch/state")));
        assert!(mount_read_only(mountinfo, Path::new("/srv")));
        assert!(!mount_read_only(mountinfo, Path::new("/var/lib")), "the root filesystem is writable");
    }

    #[test]
    fn a_failure_is_a_problem_until_writes_succeed_again() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::default();
        assert_eq!(health.problem(dir.path()), None);
        health.failed(&anyhow::anyhow!("disk I/O error"));
        assert_eq!(health.problem(dir.path()).as_deref(), Some("store writes failing: disk I/O error"));
        health.succeeded();
        assert!(health.problem(dir.path()).is_some(), "one write right after a failure is not a recovery");
        assert_eq!(health.failed_writes(), 1);
    }
}
