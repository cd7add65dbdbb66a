//! What the channels got from memory while the card could not record it, kept beside the card
//! (`sent-from-memory.jsonl` in the runtime directory, one line each) until the store has
//! recorded it: rule events, and where a ladder stood after a reminder or escalation. The
//! dispatcher records them once the card writes again; if the daemon dies first, the next run
//! reads them back and records them before anything else, so the incidents say what people were
//! told — the readings judged again from beside the card ([`super::unsaved`]) find their events
//! journaled, and each ladder goes on from the step people got last — and nothing is sent twice.
//!
//! Invariants: the file never grows past [`MOST_BYTES`]; a line that cannot be read (cut short
//! by the daemon's death) is skipped; a store copied into memory never forgets the file (what it
//! records is gone at the next start).

use super::{LadderMove, Store};
use crate::alert::Alert;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

const FILE: &str = "sent-from-memory.jsonl";
/// The most the file takes of the runtime directory's tmpfs (about as many events as the
/// dispatcher keeps in memory, 10,000): past it, later events and steps are not kept beside the
/// card, and a restart before the card writes again may send them a second time (never lose them).
const MOST_BYTES: u64 = 16 * 1024 * 1024;

/// One line of the file: what one send from memory left for the store to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SentFromMemory {
    /// Where a ladder stood after its steps (`{"ladder": …}`).
    Ladder { ladder: LadderSent },
    /// A rule event (the alert as sent; the lines of earlier versions are all of this kind).
    Event(Box<Alert>),
}

/// Where the ladder of an incident — the one of `rule` and `sensor` not closed, whatever its
/// number in the run that sent the step (a store copied into memory numbers afresh at each
/// start, an alarm the store never saw has none) — stood after steps sent from memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderSent {
    pub rule: String,
    pub sensor: String,
    #[serde(flatten)]
    pub moved: LadderMove,
    /// When the step was sent, if the box's clock was set then: the time until the next start
    /// counts towards the ladder's age, as for a ladder in the store (`escalations.aged_at_ms`).
    pub aged_at_ms: Option<i64>,
    /// The steps as the incident's audit trail words them ("reminded 王芳").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<String>,
}

impl Store {
    /// Keeps what was sent from memory beside the card (nothing without a runtime directory).
    pub fn keep_sent_from_memory(&self, sent: &SentFromMemory) {
        let Some(beside) = &self.beside_card else { return };
        let path = beside.dir.join(FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MOST_BYTES) {
            let full = anyhow::anyhow!("{} holds {} MiB already", path.display(), MOST_BYTES >> 20);
            self.report_failure("keeping what was sent from memory beside the card", &full);
            return;
        }
        let written = serde_json::to_vec(sent).map_err(std::io::Error::from).and_then(|mut line| {
            line.push(b'\n');
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(&line)
        });
        if let Err(error) = written {
            self.report_failure("keeping what was sent from memory beside the card", &anyhow::Error::from(error));
        }
    }

    /// What runs before this one sent from memory and did not record, oldest first (a line cut
    /// short by the daemon's death, or otherwise unreadable, is skipped).
    pub fn sent_from_memory_left(&self) -> Vec<SentFromMemory> {
        let Some(beside) = &self.beside_card else { return Vec::new() };
        let Ok(file) = std::fs::File::open(beside.dir.join(FILE)) else { return Vec::new() };
        std::io::BufReader::new(file).lines().map_while(Result::ok).filter_map(|line| serde_json::from_str(&line).ok()).collect()
    }

    /// Forgets what was kept beside the card: the store has recorded it all (not when the store
    /// is a copy in memory: it records it only until the next start).
    pub fn forget_sent_from_memory(&self) {
        let Some(beside) = self.beside_card.as_ref().filter(|_| !self.memory_copy) else { return };
        match std::fs::remove_file(beside.dir.join(FILE)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                self.report_failure("forgetting what was sent from memory", &anyhow::Error::from(error));
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
        let alert = SentFromMemory::Event(Box::new(crate::alert::tests::sample_alert("fired", 7.5)));
        store.keep_sent_from_memory(&alert);
        let path = runtime.path().join(FILE);
        let one_line = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().set_len(MOST_BYTES).unwrap();
        store.keep_sent_from_memory(&alert);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MOST_BYTES, "nothing appended past the bound");
        assert!(one_line < 4096, "an event takes {one_line} bytes");
    }

    fn ladder_step(reminders_sent: u32) -> SentFromMemory {
        let progress = crate::dispatch::policy::Progress { reminders: reminders_sent, reminders_sent, level: 1, missed: 1 };
        let moved = LadderMove { progress, age_ms: 6_000, next_due_age_ms: Some(7_500) };
        let audit = vec!["reminded 王芳".to_string()];
        SentFromMemory::Ladder { ladder: LadderSent { rule: "tilt".into(), sensor: "house-07".into(), moved, aged_at_ms: Some(1_795_392_000_000), audit } }
    }

    #[test]
    fn events_and_ladder_steps_sent_from_memory_outlive_the_store_handle_until_forgotten() {
        let (state, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Store::open(state.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        let alert = SentFromMemory::Event(Box::new(crate::alert::tests::sample_alert("fired", 7.5)));
        store.keep_sent_from_memory(&alert);
        store.keep_sent_from_memory(&ladder_step(3));
        let mut file = std::fs::OpenOptions::new().append(true).open(runtime.path().join(FILE)).unwrap();
        file.write_all(b"{\"ladder\": {\"rule\": \"tilt\"}}\n{\"rule\": \"cut sh").unwrap();
        let again = Store::open(state.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        assert_eq!(again.sent_from_memory_left(), vec![alert, ladder_step(3)], "the line cut short and the one without its fields are skipped");
        again.forget_sent_from_memory();
        assert!(again.sent_from_memory_left().is_empty());
        assert!(Store::open(state.path()).unwrap().sent_from_memory_left().is_empty(), "nothing without a runtime directory");
    }
}
