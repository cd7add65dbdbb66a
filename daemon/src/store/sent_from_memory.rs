//! What the channels got from memory while the card could not record it, and what workers did
//! on a store copied into memory, kept beside the card (`sent-from-memory.jsonl` in the runtime
//! directory, one line each) until the store has recorded it: rule events, where a ladder stood
//! after a reminder or escalation, workers' steps (accept, on site, resolve… from the page or a
//! hub) and the signatures they used. The dispatcher records them once the card writes again; if
//! the daemon dies first, the next run reads them back and records them before anything else, so
//! the incidents say what people were told and what they did — the readings judged again from
//! beside the card ([`super::unsaved`]) find their events journaled, each ladder goes on from the
//! step people got last, an accepted incident stays accepted, a used signature stays used — and
//! nothing is sent twice.
//!
//! Invariants: the file never grows past [`MOST_BYTES`]; a line that cannot be read (cut short
//! by the daemon's death) is skipped; a store copied into memory never forgets the file (what it
//! records is gone at the next start); a worker's step or used signature on a store copied into
//! memory is kept here or not taken ([`NotKept`]).

use super::{CheckIn, LadderMove, Store, Work};
use crate::alert::Alert;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

const FILE: &str = "sent-from-memory.jsonl";
/// The most the file takes of the runtime directory's tmpfs (about as many events as the
/// dispatcher keeps in memory, 10,000): past it, later events and steps are not kept beside the
/// card, and a restart before the card writes again may send them a second time (never lose them).
const MOST_BYTES: u64 = 16 * 1024 * 1024;

/// The longest a worker's step waits for what earlier runs kept beside the card to be recorded
/// (the dispatcher does it first thing at start).
const KEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `runtime_dir` holds lines an earlier run kept beside the card.
pub(super) fn kept_in(runtime_dir: &std::path::Path) -> bool {
    std::fs::metadata(runtime_dir.join(FILE)).is_ok_and(|m| m.len() > 0)
}

/// One line of the file: what one send from memory left for the store to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SentFromMemory {
    /// Where a ladder stood after its steps (`{"ladder": …}`).
    Ladder { ladder: LadderSent },
    /// A worker's step taken on a store copied into memory (`{"worker_action": …}`).
    Work { worker_action: Box<WorkTaken> },
    /// A signature a relayed action used on a store copied into memory (`{"used_signature": …}`).
    Signature { used_signature: SignatureUsed },
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

/// A worker's step as a store copied into memory took it: taken again at the next start on the
/// incident of that number if it is still the one of `rule` and `sensor`, else on the one of
/// `rule` and `sensor` not closed (a copy in memory numbers afresh at each start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkTaken {
    /// The incident's number in the run that took the step.
    pub incident: i64,
    pub rule: String,
    pub sensor: String,
    pub work: Work,
    /// As the audit trail names them: "王芳 (wang, own link)", "王芳 (hub)".
    pub actor: String,
    /// Who became the owner by accepting (the page); none for a hub's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in: Option<CheckIn>,
    /// When it was taken (the wall clock of that run).
    pub at_ms: i64,
    /// Whether that clock was set: if not, the time cannot be re-stamped by a later run and
    /// reads "time unknown" ([`super::restamp::LOST`]).
    pub at_known: bool,
}

/// A relayed action's signature used on a store copied into memory ([`Store::use_signature`]):
/// used again at the next start, so a replay stays refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureUsed {
    pub purpose: String,
    pub signature: String,
    pub expires_ms: i64,
}

/// Why something could not be kept beside the card: a worker's step on a store copied into
/// memory is then not taken (the page says so) — it would be gone at the next start.
#[derive(Debug, thiserror::Error)]
pub enum NotKept {
    #[error(
        "本机存储卡无法写入，也没有可暂存的运行目录：这一步没有记录，请电话告知网格长（the card cannot write and there is no runtime directory: not recorded)"
    )]
    NoRuntimeDirectory,
    #[error("本机存储卡无法写入，暂存已满：这一步没有记录，请电话告知网格长（the card cannot write and {} is full: not recorded)", path.display())]
    Full { path: std::path::PathBuf },
    #[error("本机存储卡无法写入，暂存失败：这一步没有记录，请电话告知网格长（the card cannot write and {}: {source}: not recorded)", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

impl Store {
    /// Keeps what was sent from memory beside the card (nothing without a runtime directory);
    /// a failure is logged.
    pub fn keep_sent_from_memory(&self, sent: &SentFromMemory) {
        match self.keep_line_beside_card(sent) {
            Ok(()) | Err(NotKept::NoRuntimeDirectory) => {}
            Err(error) => self.report_failure("keeping what was sent from memory beside the card", &anyhow::Error::from(error)),
        }
    }

    /// Appends one line beside the card, or says why it could not.
    pub(super) fn keep_line_beside_card(&self, sent: &SentFromMemory) -> Result<(), NotKept> {
        let Some(beside) = &self.beside_card else { return Err(NotKept::NoRuntimeDirectory) };
        let path = beside.dir.join(FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MOST_BYTES) {
            return Err(NotKept::Full { path });
        }
        let written = serde_json::to_vec(sent).map_err(std::io::Error::from).and_then(|mut line| {
            line.push(b'\n');
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(&line)
        });
        written.map_err(|source| NotKept::Io { path, source })
    }

    /// What runs before this one sent from memory and did not record, oldest first (a line cut
    /// short by the daemon's death, or otherwise unreadable, is skipped).
    pub fn sent_from_memory_left(&self) -> Vec<SentFromMemory> {
        let Some(beside) = &self.beside_card else { return Vec::new() };
        let Ok(file) = std::fs::File::open(beside.dir.join(FILE)) else { return Vec::new() };
        std::io::BufReader::new(file).lines().map_while(Result::ok).filter_map(|line| serde_json::from_str(&line).ok()).collect()
    }

    /// Says that what earlier runs kept beside the card is recorded (or that recording it was
    /// tried: a store that cannot write refuses the steps anyway): workers' steps go ahead.
    pub fn kept_steps_recorded(&self) {
        if let Some(beside) = &self.beside_card {
            beside.kept_recorded.send_replace(true);
        }
    }

    /// Waits (at most [`KEPT_WAIT`]) until what earlier runs kept beside the card is recorded:
    /// a worker's step or a relayed action taken before would meet the incident as it was
    /// before those runs (unaccepted, a used signature unused).
    pub async fn wait_for_kept_steps(&self) {
        let Some(beside) = &self.beside_card else { return };
        let mut recorded = beside.kept_recorded.subscribe();
        if tokio::time::timeout(KEPT_WAIT, recorded.wait_for(|done| *done)).await.is_err() {
            tracing::warn!("what earlier runs kept beside the card is not recorded yet; a worker's step goes ahead without it");
        }
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
