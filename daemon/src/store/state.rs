//! The rule engine's last saved state: `engine-state.json` beside the database, written as it is
//! serialized into a temporary file, synced, and renamed over the previous one — a crash leaves
//! the old state or the new, never half of one, and no copy of the whole state is ever held in
//! memory (at 10,000 busy sensors the JSON is about 20 MB). Stores written by older versions kept it
//! in the `engine_state` table; it is read from there when there is no file yet.
//!
//! The file is written on the blocking pool, fed by the serializer through a short queue of
//! chunks: a card that stalls blocks the writer, not the rule engine — the serializer waits for
//! room at most [`STALLED_AFTER`], and while a save has not returned the next ones are refused
//! instead of piling up behind it.
//!
//! Not through the disk reserve: on a full disk the previous state stays and the space is kept
//! for alarms.

use super::stall::STALLED_AFTER;
use super::Store;
use anyhow::Context;
use gridwatch_rules::snapshot::Restored;
use gridwatch_rules::Engine;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// Bytes the serializer hands to the file writer at once.
const CHUNK: usize = 64 * 1024;
/// Chunks that may wait for the file writer (so at most this many times [`CHUNK`] in memory).
const CHUNKS_WAITING: usize = 4;

impl Store {
    fn engine_state_path(&self) -> PathBuf {
        self.dir.join("engine-state.json")
    }

    /// Replaces the saved rule-engine state with what `write` writes (JSON of a `Snapshot`).
    /// `write` runs on the calling thread; the file is written on the blocking pool.
    pub async fn save_engine_state_with(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
        self.stall.check()?;
        if self.saving_state.swap(true, Ordering::SeqCst) {
            anyhow::bail!("the previous rule-state save has not returned (the SD card stalls)");
        }
        let path = self.engine_state_path();
        let (chunks, received) = sync_channel(CHUNKS_WAITING);
        let saving = SavingState(self.saving_state.clone());
        let dir = self.dir.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let _saving = saving;
            write_state_file(&dir, &path, &received)
        });
        let mut out = Chunks { buffer: Vec::with_capacity(CHUNK), to: chunks };
        let serialized = in_place(|| write(&mut out).and_then(|()| out.finish()));
        drop(out);
        match tokio::time::timeout(STALLED_AFTER, writer).await {
            Ok(written) => {
                let result = written?.and(serialized.context("serializing the rule state"));
                self.note_write(&result);
                result
            }
            Err(_) => {
                let result = Err(super::Stalled { what: "the rule-state save", secs: STALLED_AFTER.as_secs() }.into());
                self.note_write(&result);
                result
            }
        }
    }

    /// Restores `engine` from the saved state, streamed from the file (else, for an older
    /// store, from the table row); `None` when nothing was saved.
    pub fn restore_engine_state(&self, engine: &mut Engine) -> anyhow::Result<Option<Restored>> {
        let path = self.engine_state_path();
        match std::fs::File::open(&path) {
            Ok(file) => {
                let mut json = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, file));
                return Ok(Some(engine.restore_streamed(&mut json).with_context(|| format!("reading {}", path.display()))?));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("opening {}", path.display())),
        }
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT state FROM engine_state WHERE id = 1")?;
        let mut rows = statement.query([])?;
        match rows.next()? {
            Some(row) => Ok(Some(engine.restore_streamed(&mut serde_json::Deserializer::from_str(&row.get::<_, String>(0)?))?)),
            None => Ok(None),
        }
    }
}

/// Clears the store's "a save is running" mark when the file writer ends.
struct SavingState(Arc<AtomicBool>);

impl Drop for SavingState {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Writes the chunks received into a temporary file, syncs it and renames it over `path`; an
/// empty chunk says the serializer finished, without it nothing replaces the saved state.
fn write_state_file(dir: &Path, path: &Path, chunks: &Receiver<Vec<u8>>) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let written = (|| -> std::io::Result<bool> {
        let mut file = BufWriter::with_capacity(CHUNK, std::fs::File::create(&temporary)?);
        let mut finished = false;
        for chunk in chunks {
            if chunk.is_empty() {
                finished = true;
                break;
            }
            file.write_all(&chunk)?;
        }
        if !finished {
            return Ok(false);
        }
        file.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself must reach the disk.
        std::fs::File::open(dir)?.sync_all()?;
        Ok(true)
    })();
    if !matches!(written, Ok(true)) {
        let _ = std::fs::remove_file(&temporary);
    }
    match written.with_context(|| format!("writing {}", path.display()))? {
        true => Ok(()),
        false => anyhow::bail!("the rule state was not serialized whole; the previous one stays"),
    }
}

/// The serializer's side: fills chunks and hands them to the file writer, waiting for room at
/// most [`STALLED_AFTER`] (a stalled card must not hold the rule engine).
struct Chunks {
    buffer: Vec<u8>,
    to: SyncSender<Vec<u8>>,
}

impl Chunks {
    fn hand_over(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + STALLED_AFTER;
        let mut chunk = chunk;
        loop {
            match self.to.try_send(chunk) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(std::io::Error::other("the rule-state file writer stopped")),
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    chunk = back;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(TrySendError::Full(_)) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the rule-state file writer is stalled")),
            }
        }
    }

    /// Hands over what is left and the end mark.
    fn finish(&mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            self.hand_over(rest)?;
        }
        self.hand_over(Vec::new())
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
            self.hand_over(full)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs blocking `work` on this thread, letting the runtime move its other tasks elsewhere
/// meanwhile where it can (a multi-threaded runtime).
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwatch_rules::load::{RuleSet, RuleSource};
    use gridwatch_rules::{SensorKind, Subject, SubjectId};

    const HELD: &str = "[[rule]]\nid = \"do-low\"\nvalue = \"do\"\nbelow = 5\nfor = \"10m\"\nseverity = \"warning\"\n";

    fn engine() -> Engine {
        let rules = RuleSet::compile(&[RuleSource { name: "t".into(), text: HELD.into() }]).unwrap();
        let subject = Subject {
            id: "pond-1".into(),
            kind: SensorKind::Water,
            site: "s".into(),
            building: None,
            grid: None,
            tags: Default::default(),
            interval_ms: 60_000,
        };
        Engine::new(rules, &[subject])
    }

    fn holding() -> Engine {
        let mut engine = engine();
        engine.observe(SubjectId(0), 0, &[("do", 4.0)], &mut Vec::new());
        engine
    }

    async fn save(store: &Store, engine: &Engine) -> anyhow::Result<()> {
        store.save_engine_state_with(|w| serde_json::to_writer(w, &engine.snapshot_view()).map_err(std::io::Error::other)).await
    }

    #[tokio::test]
    async fn the_last_saved_state_is_restored_and_a_failed_save_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.restore_engine_state(&mut engine()).unwrap(), None);
        save(&store, &holding()).await.unwrap();
        let failed = store
            .save_engine_state_with(|w| {
                w.write_all(&[b' '; 3 * CHUNK])?;
                w.write_all(b"{\"version\":2,")?;
                Err(std::io::Error::other("the serializer gave up"))
            })
            .await;
        assert!(failed.is_err());
        assert!(!dir.path().join("engine-state.json.tmp").exists());
        let restored = Store::open(dir.path()).unwrap().restore_engine_state(&mut engine()).unwrap().unwrap();
        assert_eq!(restored.checks, 1, "the previous state stays whole");
        save(&store, &engine()).await.unwrap();
        let restored = Store::open(dir.path()).unwrap().restore_engine_state(&mut engine()).unwrap().unwrap();
        assert_eq!(restored.checks, 0, "a later save replaces it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_is_written_in_chunks_larger_than_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big = "x".repeat(CHUNK * (CHUNKS_WAITING + 3) + 17);
        store.save_engine_state_with(|w| serde_json::to_writer(w, &big).map_err(std::io::Error::other)).await.unwrap();
        let written = std::fs::read_to_string(dir.path().join("engine-state.json")).unwrap();
        assert_eq!(written.len(), big.len() + 2, "every chunk, in order");
    }

    #[test]
    fn an_older_store_s_state_in_the_table_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let json = serde_json::to_string(&holding().snapshot()).unwrap();
        store.lock().unwrap().execute("INSERT INTO engine_state (id, saved_at_ms, state) VALUES (1, 0, ?1)", [json]).unwrap();
        assert_eq!(store.restore_engine_state(&mut engine()).unwrap().map(|r| r.checks), Some(1));
    }
}
