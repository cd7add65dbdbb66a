//! The rule engine's last saved state: `engine-state.json` beside the database, written as it is
//! serialized into a temporary file, synced, and renamed over the previous one — a crash leaves
//! the old state or the new, never half of one, and no copy of the whole state is ever held in
//! memory (at 10,000 busy sensors the JSON is about 20 MB). Stores written by older versions kept it
//! in the `engine_state` table; it is read from there when there is no file yet.
//!
//! Not through the disk reserve: on a full disk the previous state stays and the space is kept
//! for alarms.

use super::Store;
use anyhow::Context;
use gridwatch_rules::snapshot::Restored;
use gridwatch_rules::Engine;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

impl Store {
    fn engine_state_path(&self) -> PathBuf {
        self.dir.join("engine-state.json")
    }

    /// Replaces the saved rule-engine state with what `write` writes (JSON of a `Snapshot`).
    pub fn save_engine_state_with(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
        let path = self.engine_state_path();
        let temporary = path.with_extension("json.tmp");
        let written = (|| -> std::io::Result<()> {
            let mut file = BufWriter::with_capacity(64 * 1024, std::fs::File::create(&temporary)?);
            write(&mut file)?;
            file.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            // The rename itself must reach the disk.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.with_context(|| format!("writing {}", path.display()))
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

    fn save(store: &Store, engine: &Engine) -> anyhow::Result<()> {
        store.save_engine_state_with(|w| serde_json::to_writer(w, &engine.snapshot_view()).map_err(std::io::Error::other))
    }

    #[test]
    fn the_last_saved_state_is_restored_and_a_failed_save_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.restore_engine_state(&mut engine()).unwrap(), None);
        save(&store, &holding()).unwrap();
        let failed = store.save_engine_state_with(|w| {
            w.write_all(b"{\"version\":2,")?;
            Err(std::io::Error::other("the serializer gave up"))
        });
        assert!(failed.is_err());
        assert!(!dir.path().join("engine-state.json.tmp").exists());
        let restored = Store::open(dir.path()).unwrap().restore_engine_state(&mut engine()).unwrap().unwrap();
        assert_eq!(restored.checks, 1, "the previous state stays whole");
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
