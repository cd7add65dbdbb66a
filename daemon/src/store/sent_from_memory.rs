//! Rule events the channels got from memory while the card could not record them, kept beside
//! the card (`sent-from-memory.jsonl` in the runtime directory, one alert per line) until the
//! store has recorded them. The dispatcher records them once the card writes again; if the
//! daemon dies first, the next run reads them back and records them before anything else, so
//! the incidents say what people were told — and the readings judged again from beside the card
//! ([`super::unsaved`]) find their events journaled and send nothing twice.

use super::Store;
use crate::alert::Alert;
use std::io::{BufRead, Write};

const FILE: &str = "sent-from-memory.jsonl";
/// The most the file takes of the runtime directory's tmpfs (about as many events as the
/// dispatcher keeps in memory, 10,000): past it, later events are not kept beside the card, and
/// a restart before the card writes again may send them a second time (never lose them).
const MOST_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    /// Keeps an event sent from memory beside the card (nothing without a runtime directory).
    pub fn keep_sent_from_memory(&self, alert: &Alert) {
        let Some(beside) = &self.beside_card else { return };
        let path = beside.dir.join(FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MOST_BYTES) {
            let full = anyhow::anyhow!("{} holds {} MiB already", path.display(), MOST_BYTES >> 20);
            self.report_failure("keeping an event sent from memory beside the card", &full);
            return;
        }
        let written = serde_json::to_vec(alert).map_err(std::io::Error::from).and_then(|mut line| {
            line.push(b'\n');
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(&line)
        });
        if let Err(error) = written {
            self.report_failure("keeping an event sent from memory beside the card", &anyhow::Error::from(error));
        }
    }

    /// The events sent from memory that a run before this one did not record, oldest first (a
    /// line cut short by the daemon's death is skipped).
    pub fn sent_from_memory_left(&self) -> Vec<Alert> {
        let Some(beside) = &self.beside_card else { return Vec::new() };
        let Ok(file) = std::fs::File::open(beside.dir.join(FILE)) else { return Vec::new() };
        std::io::BufReader::new(file).lines().map_while(Result::ok).filter_map(|line| serde_json::from_str(&line).ok()).collect()
    }

    /// Forgets the events kept beside the card: the store has recorded them all (not when the
    /// store is a copy in memory: it records them only until the next start).
    pub fn forget_sent_from_memory(&self) {
        let Some(beside) = self.beside_card.as_ref().filter(|_| !self.memory_copy) else { return };
        match std::fs::remove_file(beside.dir.join(FILE)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                self.report_failure("forgetting the events sent from memory", &anyhow::Error::from(error));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_beside_the_card_stops_growing_at_its_bound() {
        let (state, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Store::open(state.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        let alert = crate::alert::tests::sample_alert("fired", 7.5);
        store.keep_sent_from_memory(&alert);
        let path = runtime.path().join(FILE);
        let one_line = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().set_len(MOST_BYTES).unwrap();
        store.keep_sent_from_memory(&alert);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MOST_BYTES, "nothing appended past the bound");
        assert!(one_line < 4096, "an event takes {one_line} bytes");
    }

    #[test]
    fn events_sent_from_memory_outlive_the_store_handle_until_forgotten() {
        let (state, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Store::open(state.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        let alert = crate::alert::tests::sample_alert("fired", 7.5);
        store.keep_sent_from_memory(&alert);
        std::fs::OpenOptions::new().append(true).open(runtime.path().join(FILE)).unwrap().write_all(b"{\"rule\": \"cut sh").unwrap();
        let again = Store::open(state.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        assert_eq!(again.sent_from_memory_left(), vec![alert], "the line cut short is skipped");
        again.forget_sent_from_memory();
        assert!(again.sent_from_memory_left().is_empty());
        assert!(Store::open(state.path()).unwrap().sent_from_memory_left().is_empty(), "nothing without a runtime directory");
    }
}
