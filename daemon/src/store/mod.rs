//! The embedded local store: one SQLite file (`gridwatch.db`) in the state directory, WAL mode,
//! `synchronous=FULL`. It holds
//!
//! - the alert journal and outbox ([`journal`]): every alert event is written here, with one
//!   pending delivery per sink, before any sink sees it; undelivered ones are sent again after a
//!   restart;
//! - the telemetry spool ([`spool`]): readings are committed here (in groups) before the MQTT
//!   broker gets its acknowledgement, and leave only when InfluxDB took them;
//! - the rule engine's last state snapshot ([`state`], a file beside the database);
//! - incidents and their audit trail ([`incidents`]), times stamped before the clock was set
//!   re-stamped once it is ([`restamp`]);
//! - signatures already used, until they expire ([`used_signatures`]);
//! - the readings acknowledged since the rule state was last saved ([`unsaved`]), judged again
//!   after a crash: appended to segment files beside the database ([`crash_log`]), not SQLite
//!   pages;
//! - with `--features cluster`, reads of alert events and incident transitions after a
//!   high-water mark for the district uplink, and the readings kept for it (`uplink`).
//!
//! Beside it, a [`reserve`] file keeps space back for alarms: writes other than telemetry that
//! find the disk full give it up and are tried once more.
//!
//! A card that stalls instead of failing holds nobody for long ([`stall`]): operations are
//! waited for at most a few seconds, and while one is blocked the others fail at once.
//!
//! A store that cannot write is an alarm, not a log line ([`health`]): a read-only state
//! directory (an SD card's ext4 remounted read-only after an error) or failing writes show in
//! `/healthz` and the metrics at once, and their errors are logged at most once a minute with a
//! count. A `-wal` file torn by a power cut (a partial frame SQLite's recovery drops) is reported
//! at open, not dropped silently.
//!
//! Invariants: the schema version is `PRAGMA user_version` and only moves forward; a file that
//! cannot be opened as a database is moved aside (`gridwatch.db.corrupt-<time>`), counted, and
//! replaced by a fresh one — the store never refuses to start and never loops.

mod calibrations;
mod clock_steps;
mod crash_log;
mod escalations;
mod folding;
mod health;
mod incident_work;
mod incidents;
mod journal;
mod migrate;
mod reserve;
mod restamp;
mod robot_limits;
mod sent_from_memory;
mod silences;
mod sms_sends;
mod spool;
mod stall;
mod state;
mod trend;
mod unsaved;
#[cfg(feature = "cluster")]
mod uplink;
#[cfg(feature = "cluster")]
mod uplink_trend;
mod used_signatures;

pub use calibrations::Calibration;
pub use crash_log::{LogCursor, LoggedReading};
pub use escalations::{DueEscalation, EscalationStep, LadderMove};
pub use folding::Untold;
pub use incident_work::{CheckIn, Photo, Step, TimelineEntry, Work};
pub use incidents::{Applied, AuditEntry, IncidentRow, Journaling, Route};
pub use journal::{Destination, DueDelivery, IncidentSoFar, JournalEntry, NOT_SENT};
pub use restamp::Restamped;
pub use robot_limits::RobotLimit;
pub use sent_from_memory::{LadderSent, NotKept, SentFromMemory, SignatureUsed, WorkTaken};
pub use silences::NewSilence;
pub use sms_sends::SmsProgress;
pub use spool::{NewPoint, SpoolStats, SpooledPoint};
pub use stall::Stalled;
pub use trend::{FieldTrend, TrendRow};
#[cfg(feature = "cluster")]
pub use uplink::{StoreEpoch, UplinkAlert, UplinkReading, UplinkTransition};
#[cfg(feature = "cluster")]
pub use uplink_trend::{CopiedTrend, UplinkTrend};

use crate::clock::Clock;
use anyhow::Context;
use rusqlite::Connection;
use stall::{Abandoned, Stall, STALLED_AFTER};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A crash log in memory (tmpfs) for the readings the card could not log: it outlives the
/// daemon's death (systemd keeps its `RuntimeDirectory=`), not a reboot.
#[derive(Debug, Clone)]
struct BesideCard {
    /// The runtime directory.
    dir: PathBuf,
    log: Arc<parking_lot::Mutex<crash_log::CrashLog>>,
    /// Whether it holds readings not yet copied to the card.
    holds: Arc<std::sync::atomic::AtomicBool>,
    /// False until what earlier runs kept beside the card is recorded: workers' steps wait for
    /// it ([`Store::wait_for_kept_steps`]).
    kept_recorded: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A handle on the store; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<parking_lot::Mutex<Connection>>,
    /// The state directory.
    dir: PathBuf,
    reserve: Arc<reserve::Reserve>,
    /// The last write found the disk full (also without a reserve).
    last_write_full: Arc<std::sync::atomic::AtomicBool>,
    /// Files moved aside because they could not be opened, since this process started.
    pub quarantined: Vec<PathBuf>,
    /// Whether writes fail, and the rate limit of their error lines.
    health: Arc<health::Health>,
    /// Bytes of a torn `-wal` tail found at open (dropped by SQLite's recovery); 0: none.
    pub torn_wal_bytes: u64,
    /// Readings since the rule state was last saved ([`crash_log`]).
    crash_log: Arc<parking_lot::Mutex<crash_log::CrashLog>>,
    /// The readings the card could not log, in the runtime directory when there is one
    /// ([`Store::keep_beside_card`], [`unsaved`]).
    beside_card: Option<BesideCard>,
    /// The operations running now, to tell a stalled card ([`stall`]).
    stall: Arc<Stall>,
    /// A rule-state save is being written ([`state`]).
    saving_state: Arc<std::sync::atomic::AtomicBool>,
    /// The daemon's clock, which stamps what the store records on its own.
    clock: Clock,
    /// Whether this process marks what it stamps while the clock is not set to be re-stamped
    /// (the daemon; see [`restamp`]).
    restamps: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a house's open orange or red alarm takes its further alarms in ([`folding`]);
    /// `[alerts] fold_into_open_alarm`, on unless the configuration turns it off.
    folds_alarms: Arc<std::sync::atomic::AtomicBool>,
    /// The store is a copy in memory of the one on a read-only card: what it journals is gone at
    /// the next start unless kept beside the card ([`sent_from_memory`]).
    memory_copy: bool,
    /// Workers' steps taken while the card could not write under the running daemon, kept
    /// beside the card until the store records them ([`incident_work`]).
    steps_from_memory: Arc<parking_lot::Mutex<incident_work::StepsFromMemory>>,
}

impl Store {
    /// Whether a house's open orange or red alarm takes its further alarms in, unsent
    /// ([`folding`]; `[alerts] fold_into_open_alarm`, on by default).
    pub fn fold_into_open_alarms(&self, on: bool) {
        self.folds_alarms.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// [`Store::open_with_clock`] on the system clock: for command-line tools and tests.
    pub fn open(state_dir: &Path) -> anyhow::Result<Store> {
        Store::open_with_clock(state_dir, Clock::System)
    }

    /// Opens (creating if needed) the store in `state_dir`; a corrupt file is moved aside.
    /// `clock` stamps what the store records on its own (deliveries' updates, dead letters).
    pub fn open_with_clock(state_dir: &Path, clock: Clock) -> anyhow::Result<Store> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join("gridwatch.db");
        let torn_wal_bytes = health::torn_wal_tail(&path);
        let store = |conn, quarantined| Store {
            conn: Arc::new(parking_lot::Mutex::new(conn)),
            dir: state_dir.to_path_buf(),
            reserve: Arc::new(reserve::Reserve::new(state_dir, clock)),
            last_write_full: Arc::default(),
            quarantined,
            health: Arc::default(),
            torn_wal_bytes,
            crash_log: Arc::new(parking_lot::Mutex::new(crash_log::CrashLog::open(state_dir))),
            beside_card: None,
            stall: Arc::default(),
            saving_state: Arc::default(),
            clock,
            restamps: Arc::default(),
            folds_alarms: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            memory_copy: false,
            steps_from_memory: Arc::default(),
        };
        match open_file(&path) {
            Ok(conn) => Ok(store(conn, Vec::new())),
            Err(error) if is_corruption(&error) => {
                let aside = quarantine(&path, clock.now())?;
                tracing::error!(file = %aside.display(), error = %format!("{error:#}"), "store file is corrupt; moved aside, starting a fresh one");
                let conn = open_file(&path).with_context(|| format!("opening a fresh {}", path.display()))?;
                Ok(store(conn, vec![aside]))
            }
            Err(error) if health::read_only(state_dir) || cannot_write(&error) => {
                // A card ext4 turned read-only, or full (or failing) so that SQLite cannot even
                // open its store: the daemon must run on (systemd would restart it for ever, and
                // nobody would be told of anything — an outside tester's full card). The store
                // runs in memory, copied from the card as it is: open incidents keep their
                // numbers, their clears name them.
                tracing::error!(error = %format!("{error:#}"), "the state directory cannot be written (read-only, or full): the store runs in memory (copied from the card); nothing is kept across a restart until the card writes again");
                Ok(Store { memory_copy: true, ..store(in_memory_copy(&path)?, Vec::new()) })
            }
            Err(error) => Err(error),
        }
    }

    /// Whether this store is a copy in memory of the one on a read-only card.
    pub fn is_memory_copy(&self) -> bool {
        self.memory_copy
    }

    /// This store, behaving as a copy in memory of a read-only card (it still writes its file:
    /// what a test reads back as "the next start" is another store's).
    #[cfg(test)]
    pub(crate) fn into_memory_copy(self) -> Store {
        Store { memory_copy: true, ..self }
    }

    /// The connection, waited for at most until its holder would count as stalled.
    fn lock(&self) -> anyhow::Result<Held<'_, Connection>> {
        self.hold(&self.conn, "a database transaction")
    }

    /// The crash log, waited for like the connection.
    fn lock_crash_log(&self) -> anyhow::Result<Held<'_, crash_log::CrashLog>> {
        self.hold(&self.crash_log, "a crash-log write")
    }

    fn hold<'a, T>(&self, lock: &'a parking_lot::Mutex<T>, what: &'static str) -> anyhow::Result<Held<'a, T>> {
        self.stall.check()?;
        let Some(guard) = lock.try_lock_for(self.stall.patience()) else {
            return Err(self.stall.stalled().unwrap_or(Stalled { what, secs: STALLED_AFTER.as_secs() }).into());
        };
        Ok(Held { guard, _running: self.stall.begin(what) })
    }

    /// Runs one of the store's calls on the blocking pool, waited for at most as long as any
    /// other ([`Store::bounded`]): for tasks on the alarm path, which must never hold the
    /// connection on their own thread (a stalled card would hold the thread with it).
    pub async fn off_thread<T: Send + 'static>(&self, call: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        self.bounded(move |store, _| call(store)).await
    }

    /// Runs `work` on the blocking pool and waits for it at most until the store counts as
    /// stalled; then the caller gets an error and `work`, if it has not taken its lock yet,
    /// never writes ([`Abandoned`]).
    async fn bounded<T: Send + 'static>(&self, work: impl FnOnce(&Store, &Abandoned) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        /// How often a waiting caller looks whether the store stalls.
        const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
        if let Err(stalled) = self.stall.check() {
            let result = Err(stalled.into());
            self.note_write::<T>(&result);
            return result;
        }
        let abandoned = Abandoned::default();
        let (store, flag) = (self.clone(), abandoned.clone());
        let started = std::time::Instant::now();
        let mut task = tokio::task::spawn_blocking(move || {
            flag.check()?;
            work(&store, &flag)
        });
        loop {
            tokio::select! {
                joined = &mut task => return joined?,
                () = tokio::time::sleep(LOOK_EVERY) => {
                    let waited = started.elapsed();
                    let stalled = self.stall.stalled().or_else(|| (waited >= STALLED_AFTER).then_some(Stalled { what: "a store operation", secs: waited.as_secs() }));
                    if let Some(stalled) = stalled {
                        abandoned.abandon();
                        let result = Err(stalled.into());
                        self.note_write::<T>(&result);
                        return result;
                    }
                }
            }
        }
    }

    /// Keeps `bytes` of disk in reserve for alarms (0: none); false when there was no room.
    pub fn keep_reserve(&self, bytes: u64) -> bool {
        self.reserve.keep(bytes)
    }

    /// True while the disk is full: the reserve was given up and readings are not stored.
    pub fn disk_full(&self) -> bool {
        self.reserve.given_up() || self.last_write_full.load(std::sync::atomic::Ordering::SeqCst) || health::nearly_full(&self.dir)
    }

    /// Whether the state directory's filesystem is mounted read-only (reads the mount table).
    pub fn read_only(&self) -> bool {
        health::read_only(&self.dir)
    }

    /// Remembers whether a write found the disk full, or failed otherwise.
    fn note_write<T>(&self, result: &anyhow::Result<T>) {
        let full = result.as_ref().err().is_some_and(is_disk_full);
        self.last_write_full.store(full, std::sync::atomic::Ordering::SeqCst);
        match result {
            Err(error) if error.downcast_ref::<Refused>().is_some() => {}
            Err(error) if !full => self.health.failed(error),
            Err(_) => {}
            Ok(_) => self.health.succeeded(),
        }
    }

    /// Why the store cannot write now (read-only state directory, a full one whose reserve is
    /// used up, or the last write failed); `None` while it can.
    pub fn write_problem(&self) -> Option<String> {
        if let Some(stalled) = self.stall.stalled() {
            return Some(format!("{stalled}: alarms and reminders go out from memory, readings are not stored"));
        }
        // Only writes that must not be lost run while the reserve is given up: one that found
        // the disk full then had no reserve left to use (an outside tester: /healthz still said
        // the reserve took the alarms).
        if self.reserve.given_up() && self.last_write_full.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(format!(
                "state directory {} full and the space kept for alarms used up: alarms go out from memory without an incident number and are not kept across a restart",
                self.dir.display()
            ));
        }
        self.health.problem(&self.dir).or_else(|| {
            self.memory_copy.then(|| {
                format!(
                    "state directory {} could not be written at start (full?): the store runs in memory, and incidents are not kept across a restart",
                    self.dir.display()
                )
            })
        })
    }

    /// Writes that failed since start (disk full aside).
    pub fn failed_writes(&self) -> u64 {
        self.health.failed_writes()
    }

    /// Logs a failed store operation, at most once a minute (with how many were not logged).
    pub fn report_failure(&self, what: &str, error: &anyhow::Error) {
        self.health.report(what, error);
    }

    /// Tries to make a given-up reserve again (rate-limited inside); true when one is held.
    pub fn try_restore_reserve(&self) -> bool {
        self.reserve.try_restore(self.clock.now(), || {
            // Pages freed by drained readings go back to the filesystem first.
            if let Ok(conn) = self.lock() {
                if let Err(error) = conn.execute_batch("PRAGMA incremental_vacuum") {
                    tracing::debug!(error = %error, "incremental vacuum failed");
                }
            }
        })
    }

    /// Runs a write the daemon cannot lose on the connection, on the blocking pool: when the
    /// disk is full it gives up the reserve and tries once more.
    async fn with_conn<T: Send + 'static>(&self, work: impl FnMut(&mut Connection) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        self.bounded(move |store, abandoned| store.essential_unless(abandoned, work)).await
    }

    /// [`Store::with_conn`] for a write whose caller, when it gives up waiting, does without it
    /// (the dispatcher sends the alert from memory). Should the write land after all — the card
    /// stalled in the middle of it and came back — `settle` undoes what would now happen twice.
    async fn with_conn_or_settle<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut Connection) -> anyhow::Result<T> + Send + 'static,
        settle: impl FnOnce(&mut Connection, &T) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.bounded(move |store, abandoned| {
            let mut conn = store.lock_unless(abandoned)?;
            let result = store.essential_held(&mut conn, work);
            if let (Ok(value), true) = (&result, abandoned.is_set()) {
                // Under the same lock: no channel may read the outbox in between.
                tracing::warn!("a write given up while the store stalled landed after all; settled");
                if let Err(error) = settle(&mut conn, value) {
                    store.report_failure("settling a write that landed after the store stalled", &error);
                }
            }
            result
        })
        .await
    }

    /// [`Store::with_conn`], on the calling thread.
    fn essential<T>(&self, work: impl FnMut(&mut Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.essential_unless(&Abandoned::default(), work)
    }

    /// [`Store::essential`], unless its caller gave up before the connection was free.
    fn essential_unless<T>(&self, abandoned: &Abandoned, work: impl FnMut(&mut Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut conn = self.lock_unless(abandoned)?;
        self.essential_held(&mut conn, work)
    }

    /// The connection, unless the caller gave up before it was free (counted as a failure).
    fn lock_unless(&self, abandoned: &Abandoned) -> anyhow::Result<Held<'_, Connection>> {
        let held = self.lock().and_then(|conn| abandoned.check().map(|()| conn));
        if let Err(error) = &held {
            self.health.failed(error);
        }
        held
    }

    /// [`Store::essential`] on a connection held already.
    fn essential_held<T>(&self, conn: &mut Connection, mut work: impl FnMut(&mut Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let result = match work(conn) {
            Err(error) if is_disk_full(&error) && self.reserve.give_up() => {
                tracing::error!(error = %format!("{error:#}"), "disk full: the reserve kept for alarms is given up; readings are no longer stored");
                work(conn)
            }
            other => other,
        };
        self.note_write(&result);
        result
    }

    /// Runs a bulk write (telemetry, the rule-state snapshot) on the blocking pool. It never uses
    /// the reserve: when the disk is full the reserve is given up for the alarms that come next,
    /// and readings stop being written until it can be made again.
    async fn with_conn_bulk<T: Send + 'static>(&self, work: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        self.bounded(move |store, abandoned| {
            let result = store.lock().and_then(|mut conn| {
                abandoned.check()?;
                work(&mut conn)
            });
            store.note_write(&result);
            if let Err(error) = &result {
                if is_disk_full(error) && store.reserve.give_up() {
                    tracing::error!("disk full: readings are no longer stored; the reserve kept for alarms is given up for them");
                }
            }
            result
        })
        .await
    }
}

/// A lock held, registered with the stall watch until it is let go.
struct Held<'a, T> {
    guard: parking_lot::MutexGuard<'a, T>,
    _running: stall::Running,
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Whether opening the store failed because the card cannot be written: full, or an I/O error
/// (a full tmpfs fails SQLite's shared memory so).
fn cannot_write(error: &anyhow::Error) -> bool {
    is_disk_full(error)
        || error.chain().any(|cause| {
            matches!(cause.downcast_ref::<rusqlite::Error>(), Some(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::SystemIoFailure)
        })
}

/// A write the store refused for what it asks, not for how the store is: a step the incident's
/// state does not allow (two workers pressed 接单 at once), an incident that does not exist.
/// Not a failing store: `/healthz` stays ready (an outside tester saw "store writes failing" for
/// the second 接单).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// SQLite's "database or disk is full", or the operating system's ENOSPC.
pub fn is_disk_full(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<rusqlite::Error>(), Some(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
            || cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.raw_os_error() == Some(28))
    })
}

/// The page cache of the store's connection, in KiB.
const PAGE_CACHE_KIB: i64 = 512;

fn open_file(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A new file gives the pages of drained readings back to the filesystem on request
    // (`incremental_vacuum`), so a disk that filled up can make its reserve again.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL").with_context(|| format!("opening {}", path.display()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // SQLite's default page cache is 2 MiB; the store's work is appends and lookups by index
    // (spool, outbox, incidents, one sensor's trend), which a quarter of that serves as well.
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    // Scratch tables (the saved times when judged readings are forgotten) never touch the card.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let check: String = conn.pragma_query_value(None, "quick_check", |row| row.get(0))?;
    if check != "ok" {
        anyhow::bail!("integrity check of {} failed: {check}", path.display());
    }
    migrate::migrate(&conn).with_context(|| format!("migrating {}", path.display()))?;
    Ok(conn)
}

/// The database on a read-only card, copied into memory (empty when it cannot be read).
fn in_memory_copy(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = Connection::open_in_memory()?;
    let read_only = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let copy = |card: Connection, conn: &mut Connection| -> anyhow::Result<()> {
        rusqlite::backup::Backup::new(&card, conn)?.run_to_completion(1000, std::time::Duration::ZERO, None)?;
        Ok(())
    };
    let mut copied = Connection::open_with_flags(path, read_only).map_err(anyhow::Error::from).and_then(|card| copy(card, &mut conn));
    if copied.is_err() && !Path::new(&format!("{}-wal", path.display())).exists() {
        // A clean stop checkpoints and removes the WAL files, and SQLite cannot open a WAL
        // database on a read-only directory without its `-shm`: the file alone is the whole
        // store, read as an unchanging one.
        let uri_path = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
        let immutable = format!("file:{uri_path}?immutable=1");
        copied = Connection::open_with_flags(immutable, read_only | rusqlite::OpenFlags::SQLITE_OPEN_URI)
            .map_err(anyhow::Error::from)
            .and_then(|card| copy(card, &mut conn));
    }
    if let Err(error) = copied {
        tracing::error!(file = %path.display(), error = %format!("{error:#}"), "the store on the read-only card cannot be read; starting from an empty one in memory");
        conn = Connection::open_in_memory()?;
    }
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    migrate::migrate(&conn).context("migrating the store copied into memory")?;
    ids_of_its_own(&conn).context("giving the store copied into memory ids of its own")?;
    Ok(conn)
}

/// Moves the ids the copy in memory gives (events, incidents, deliveries…) a billion or more
/// past the card's, a different stretch at each start, and gives it an epoch of its own: the
/// card, once it writes again, gives its next ids from where it stopped, and an event id or an
/// incident number that people and receivers already had from the copy must not name another
/// event then (a receiver drops an event id it has seen — an outside tester found a red alarm
/// sent under the id of an earlier one). The district keys rows by epoch, so the copy's rows and
/// the card's never meet there either.
fn ids_of_its_own(conn: &Connection) -> anyhow::Result<()> {
    let offset: i64 = conn.query_row("SELECT (1 + abs(random() % 1000)) * 1000000000", [], |row| row.get(0))?;
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%'")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    // The journal's ids (`event_id`) are not AUTOINCREMENT: its insert takes a floor kept here.
    let journal_floor: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM alert_events", [], |row| row.get(0))?;
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('alert_events', ?1)", [journal_floor])?;
    tables.push("alert_events".into());
    for table in tables {
        if conn.execute("UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = ?2", rusqlite::params![offset, table])? == 0 {
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)", rusqlite::params![table, offset])?;
        }
    }
    conn.execute("UPDATE store_epoch SET epoch = lower(hex(randomblob(8))) WHERE id = 1", [])?;
    Ok(())
}

/// Errors that mean the file is not a usable database (as opposed to, say, a full disk).
fn is_corruption(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(e, _)) if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }) || text.contains("integrity check")
}

/// Moves the database and its WAL files aside, named with the time `now_ms`; returns the new
/// name of the database.
fn quarantine(path: &Path, now_ms: i64) -> anyhow::Result<PathBuf> {
    let stamp = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default().format("%Y%m%dT%H%M%S%.3f");
    let aside = path.with_extension(format!("db.corrupt-{stamp}"));
    std::fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
    for suffix in ["-wal", "-shm"] {
        let extra = PathBuf::from(format!("{}{suffix}", path.display()));
        if extra.exists() {
            let _ = std::fs::rename(&extra, PathBuf::from(format!("{}{suffix}", aside.display())));
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gridwatch.db"), vec![0x5a; 8192]).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.quarantined.len(), 1);
        assert!(store.quarantined[0].exists());
        assert!(store.recent_alerts(10).unwrap().is_empty(), "the fresh store works");
    }

    #[test]
    fn newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        Connection::open(dir.path().join("gridwatch.db")).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("schema version 99 is newer"), "{err:#}");
    }
}
