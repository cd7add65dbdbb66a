//! What workers add to an incident from its page, beside its audit trail: the photos taken on
//! site and at resolve, where they checked in, and who holds it (one owner, any helpers).
//!
//! Photos are kept in the store itself, not as files under `state_dir`: a photo is written in
//! the same transaction as the audit entry it belongs to (an action is never recorded without
//! its photo, nor a photo without its action), it is backed up and copied with the one database
//! file, and the page's size limit (2 MB by default) keeps each row small. When the state
//! directory is full a photo is refused rather than written into the space kept for alarms.
//!
//! On a store copied into memory (a read-only card) each step is kept beside the card
//! ([`super::sent_from_memory`]) in the same transaction, and taken again at the next start
//! ([`Store::take_work_again`]): the incident does not fall back to unaccepted, nor its ladder
//! start again, after a restart or a repair.
//!
//! A card that goes read-only (or full) under the running daemon takes the step no more: the
//! step is then taken in memory ([`StepsFromMemory`]) and kept beside the card the same way, or
//! not taken. Until the store records it — the dispatcher takes it again once the card writes,
//! or the next start does from beside the card — the incident's page, its people and its ladder
//! read the incident as the step left it: an accepted incident is not reminded of nor escalated
//! (an outside tester's worker got SQLite's English error for 接单, and the ladder went on).
//!
//! Invariants: every photo and check-in belongs to exactly one audit entry of its incident; an
//! incident has at most one owner; a person is either its owner or a helper, never both; a step
//! taken on a store copied into memory, or in memory while the card cannot write, is kept beside
//! the card, or not taken.

use super::incidents::{audit, AuditEntry, Stamp};
use super::{Store, WorkTaken};
use crate::dispatch::incident::{Action, State};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// A worker's step on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Accept, on site, resolve or close: moves the incident's state.
    Move(Action),
    /// A message in the incident's thread.
    Comment,
    /// Hands the incident over: `person` becomes its owner.
    Transfer { person: String },
    /// `person` helps the owner.
    AddHelper { person: String },
    /// The grid leader's follow-up call or visit (回访) after the incident was resolved.
    FollowUp,
}

impl Work {
    /// The action as the audit trail records it.
    pub fn recorded(&self) -> String {
        match self {
            Work::Move(action) => action.as_str().to_string(),
            Work::Comment => "comment".into(),
            Work::Transfer { person } => format!("transfer to {person}"),
            Work::AddHelper { person } => format!("helper {person}"),
            Work::FollowUp => "follow_up".into(),
        }
    }
}

/// A photo as uploaded (already checked: an image, within the size limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Where a worker was when reporting on site, and how far that is from the house.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CheckIn {
    pub latitude: f64,
    pub longitude: f64,
    /// The browser's estimate of its own error, in metres.
    pub accuracy_m: Option<f64>,
    /// From the house's coordinates in the inventory, when it has them.
    pub distance_m: Option<f64>,
}

/// A worker's step as it is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub work: &'a Work,
    /// As the audit trail names them: "王芳 (wang, own link)", "Li (link)".
    pub actor: &'a str,
    /// Who acts (a roster member id, or the name typed on a group link): accepting makes them
    /// the owner.
    pub person: &'a str,
    pub note: Option<&'a str>,
    pub photo: Option<&'a Photo>,
    pub check_in: Option<CheckIn>,
}

/// A step as it is written, whoever takes it (the page, a hub, the command line, or the next
/// start taking again what a store copied into memory kept beside the card).
#[derive(Debug, Clone, Copy)]
pub(super) struct Taking<'a> {
    pub work: &'a Work,
    pub actor: &'a str,
    /// Who becomes the owner by accepting (the page's steps); `None`: accepting names no owner
    /// (a hub's or the command line's action).
    pub owner: Option<&'a str>,
    pub note: Option<&'a str>,
    pub photo: Option<&'a Photo>,
    pub check_in: Option<CheckIn>,
    pub stamp: Stamp,
}

/// Whether a store copied into memory keeps a step beside the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Taken now: kept, or not taken.
    BesideCard,
    /// Taken again from beside the card, where it is already.
    Already,
}

/// One audit entry with what belongs to it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub entry: AuditEntry,
    /// Ids of its photos (served through the incident's signed link).
    pub photos: Vec<i64>,
    pub check_in: Option<CheckIn>,
}

impl Store {
    /// Records a worker's step on incident `id`: the state change (if any), its audit entry, its
    /// photo and its check-in, in one transaction. Returns the incident's state after. On a store
    /// copied into memory the step is kept beside the card in the same transaction, or not taken
    /// at all ([`super::NotKept`]); its photo is refused there (it would be lost at the next
    /// start).
    pub fn record_work(&self, id: i64, step: Step<'_>, now_ms: i64) -> anyhow::Result<State> {
        let Step { work, actor, person, note, photo, check_in } = step;
        if photo.is_some() && self.disk_full() {
            return Err(super::Refused("存储空间已满，照片无法保存；请不带照片再提交一次".into()).into());
        }
        if photo.is_some() && self.memory_copy {
            return Err(photo_not_kept());
        }
        let stamp = Stamp { at_ms: now_ms, clock_unset_at: self.unset_mark_now() };
        self.take_step(id, Taking { work, actor, owner: Some(person), note, photo, check_in, stamp }, Keep::BesideCard)
    }

    /// Takes a step on incident `id` in one transaction (see [`Taking`]); `keep`: whether a store
    /// copied into memory keeps it beside the card (not when it is taken again from there). A
    /// step taken now that the card cannot write, or on an incident with steps still waiting in
    /// memory (they come first), is taken in memory ([`Store::take_in_memory`]).
    pub(super) fn take_step(&self, id: i64, taking: Taking<'_>, keep: Keep) -> anyhow::Result<State> {
        if keep == Keep::Already || self.memory_copy {
            return self.take_on_card(id, taking, keep);
        }
        if self.steps_from_memory.lock().state_of(id).is_some() {
            return self.take_in_memory(id, taking);
        }
        match self.take_on_card(id, taking, keep) {
            Err(error) if self.card_cannot_write(&error) => {
                self.report_failure("recording a worker's step (it is taken in memory and kept beside the card)", &error);
                self.take_in_memory(id, taking)
            }
            taken => taken,
        }
    }

    /// Whether a step failed because the card cannot write (read-only, or full): not because the
    /// step is refused, nor a stalled card's write that may land yet.
    pub(super) fn card_cannot_write(&self, error: &anyhow::Error) -> bool {
        error.downcast_ref::<super::Refused>().is_none()
            && error.downcast_ref::<super::NotKept>().is_none()
            && error.downcast_ref::<super::Stalled>().is_none()
            && (self.read_only() || super::is_disk_full(error))
    }

    /// Takes a step in memory while the card cannot write: the incident as the store reads it and
    /// the steps already waiting say whether the step is allowed; it is kept beside the card (or
    /// not taken, [`super::NotKept`]) and waits in [`StepsFromMemory`] until the store records it.
    /// A photo is refused (it would be lost at the next start).
    fn take_in_memory(&self, id: i64, taking: Taking<'_>) -> anyhow::Result<State> {
        let Taking { work, actor, owner, note, photo, check_in, stamp } = taking;
        if photo.is_some() {
            return Err(photo_not_kept());
        }
        let (on_card, rule, sensor): (String, String, String) = self
            .lock()?
            .query_row("SELECT state, rule, sensor FROM incidents WHERE id = ?1", [id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?
            .ok_or_else(|| super::Refused(format!("no incident {id}")))?;
        let mut steps = self.steps_from_memory.lock();
        let mut state = match steps.state_of(id) {
            Some(state) => state,
            None => on_card.parse().map_err(anyhow::Error::msg)?,
        };
        if let Work::Move(action) = work {
            state = action.next(state).map_err(super::Refused)?;
        }
        let (actor, owner, note) = (actor.to_string(), owner.map(str::to_string), note.map(str::to_string));
        let at_known = stamp.clock_unset_at.is_none();
        let taken = WorkTaken { incident: id, rule, sensor, work: work.clone(), actor, owner, note, check_in, at_ms: stamp.at_ms, at_known };
        self.keep_line_beside_card(&super::SentFromMemory::Work { worker_action: Box::new(taken.clone()) })?;
        tracing::warn!(incident = id, action = %work.recorded(), state = %state, "the card cannot write: a worker's step is taken in memory and kept beside the card until the store records it");
        steps.waiting.push((taken.clone(), state));
        steps.to_record.push(super::SentFromMemory::Work { worker_action: Box::new(taken) });
        Ok(state)
    }

    /// The steps taken and signatures used in memory since the last call, for the dispatcher to
    /// record once the card writes again (steps wait in memory, for the page and the ladders,
    /// until it has; signatures for the rest of the run).
    pub fn steps_to_record(&self) -> Vec<super::SentFromMemory> {
        std::mem::take(&mut self.steps_from_memory.lock().to_record)
    }

    /// The state steps taken in memory left incident `id` in, while the store has not recorded
    /// them: what the page and the ladder go by.
    pub fn state_from_memory(&self, id: i64) -> Option<State> {
        self.steps_from_memory.lock().state_of(id)
    }

    /// The step on the card, in one transaction (see [`Store::take_step`]).
    fn take_on_card(&self, id: i64, taking: Taking<'_>, keep: Keep) -> anyhow::Result<State> {
        let Taking { work, actor, owner, note, photo, check_in, stamp } = taking;
        let now_ms = stamp.at_ms;
        self.essential(|conn| {
            // Takes the write lock first: `gridwatch incidents act` is a second process, and a
            // read that became a write after the daemon wrote failed at once with "database is
            // locked" whatever the busy timeout (an outside tester's accept); it now waits.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (state, rule, sensor): (String, String, String) = tx
                .query_row("SELECT state, rule, sensor FROM incidents WHERE id = ?1", [id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?
                .ok_or_else(|| super::Refused(format!("no incident {id}")))?;
            let mut state: State = state.parse().map_err(anyhow::Error::msg)?;
            match work {
                Work::Move(action) => {
                    state = action.next(state).map_err(super::Refused)?;
                    let closed = (state == State::Closed).then_some(now_ms);
                    tx.execute("UPDATE incidents SET state = ?1, updated_ms = ?2, closed_ms = ?3 WHERE id = ?4", params![state.as_str(), now_ms, closed, id])?;
                    if let (Action::Accept, Some(person)) = (action, owner) {
                        set_owner(&tx, id, person, now_ms)?;
                    }
                    super::folding::take_folded_along(&tx, id, *action, actor, stamp)?;
                }
                Work::Transfer { person: to } => set_owner(&tx, id, to, now_ms)?,
                Work::AddHelper { person: helper } => {
                    tx.execute(
                        "INSERT OR IGNORE INTO incident_people (incident_id, person, part, since_ms) VALUES (?1, ?2, 'helper', ?3)",
                        params![id, helper, now_ms],
                    )?;
                }
                Work::Comment | Work::FollowUp => {}
            }
            audit(&tx, id, stamp, actor, &work.recorded(), note)?;
            let event = tx.last_insert_rowid();
            if let Some(photo) = photo {
                tx.execute(
                    "INSERT INTO incident_photos (incident_id, event_id, content_type, bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![id, event, photo.content_type, photo.bytes],
                )?;
            }
            if let Some(at) = check_in {
                tx.execute(
                    "INSERT INTO incident_check_ins (event_id, latitude, longitude, accuracy_m, distance_m) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![event, at.latitude, at.longitude, at.accuracy_m, at.distance_m],
                )?;
            }
            if keep == Keep::BesideCard && self.memory_copy {
                let (actor, owner, note) = (actor.to_string(), owner.map(str::to_string), note.map(str::to_string));
                let at_known = stamp.clock_unset_at.is_none();
                let taken = WorkTaken { incident: id, rule, sensor, work: work.clone(), actor, owner, note, check_in, at_ms: now_ms, at_known };
                self.keep_line_beside_card(&super::SentFromMemory::Work { worker_action: Box::new(taken) })?;
            }
            tx.commit()?;
            Ok(state)
        })
    }

    /// Takes again a step a store copied into memory took in an earlier run (kept beside the
    /// card), on the incident of its number if that is still the one of its rule and sensor,
    /// else on that rule and sensor's incident not closed: `Some((incident, state after))`, or
    /// `None` when there is no such incident, the store holds the step already (a run that died
    /// before the file was forgotten) or its state no longer allows it. `Err` while the store
    /// cannot write.
    pub fn take_work_again(&self, taken: &WorkTaken) -> anyhow::Result<Option<(i64, State)>> {
        let found = {
            let conn = self.lock()?;
            let same: Option<i64> = conn
                .query_row("SELECT id FROM incidents WHERE id = ?1 AND rule = ?2 AND sensor = ?3", params![taken.incident, taken.rule, taken.sensor], |row| {
                    row.get(0)
                })
                .optional()?;
            let id = match same {
                Some(id) => Some(id),
                None => conn
                    .query_row(
                        "SELECT id FROM incidents WHERE rule = ?1 AND sensor = ?2 AND state != 'closed' ORDER BY id DESC LIMIT 1",
                        params![taken.rule, taken.sensor],
                        |row| row.get(0),
                    )
                    .optional()?,
            };
            match id {
                Some(id) => {
                    let recorded: bool = conn.query_row(
                        "SELECT EXISTS (SELECT 1 FROM incident_events WHERE incident_id = ?1 AND at_ms = ?2 AND actor = ?3 AND action = ?4)",
                        params![id, taken.at_ms, taken.actor, taken.work.recorded()],
                        |row| row.get(0),
                    )?;
                    (!recorded).then_some(id)
                }
                None => None,
            }
        };
        let Some(id) = found else {
            self.steps_from_memory.lock().recorded(taken);
            return Ok(None);
        };
        let stamp = Stamp { at_ms: taken.at_ms, clock_unset_at: (!taken.at_known).then_some(super::restamp::LOST) };
        let taking = Taking {
            work: &taken.work,
            actor: &taken.actor,
            owner: taken.owner.as_deref(),
            note: taken.note.as_deref(),
            photo: None,
            check_in: taken.check_in,
            stamp,
        };
        let again = match self.take_step(id, taking, Keep::Already) {
            Ok(state) => Some((id, state)),
            Err(error) if error.downcast_ref::<super::Refused>().is_some() => None,
            Err(error) => return Err(error),
        };
        self.steps_from_memory.lock().recorded(taken);
        Ok(again)
    }

    /// The incident's audit trail, oldest first, each entry with its photos and check-in.
    pub fn incident_timeline(&self, id: i64) -> anyhow::Result<Vec<TimelineEntry>> {
        let conn = self.lock()?;
        let mut photos: std::collections::HashMap<i64, Vec<i64>> = std::collections::HashMap::new();
        let mut statement = conn.prepare("SELECT event_id, id FROM incident_photos WHERE incident_id = ?1 ORDER BY id")?;
        for row in statement.query_map([id], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))? {
            let (event, photo) = row?;
            photos.entry(event).or_default().push(photo);
        }
        let mut statement = conn.prepare(
            "SELECT e.id, e.at_ms, e.actor, e.action, e.note, c.latitude, c.longitude, c.accuracy_m, c.distance_m, e.clock_unset_at IS NULL
             FROM incident_events e LEFT JOIN incident_check_ins c ON c.event_id = e.id WHERE e.incident_id = ?1 ORDER BY e.id",
        )?;
        let rows = statement.query_map([id], |row| {
            let event: i64 = row.get(0)?;
            let check_in = match (row.get::<_, Option<f64>>(5)?, row.get::<_, Option<f64>>(6)?) {
                (Some(latitude), Some(longitude)) => Some(CheckIn { latitude, longitude, accuracy_m: row.get(7)?, distance_m: row.get(8)? }),
                _ => None,
            };
            let entry = AuditEntry { at_ms: row.get(1)?, at_known: row.get(9)?, actor: row.get(2)?, action: row.get(3)?, note: row.get(4)? };
            Ok((event, entry, check_in))
        })?;
        let mut timeline = Vec::new();
        for row in rows {
            let (event, entry, check_in) = row?;
            timeline.push(TimelineEntry { entry, photos: photos.remove(&event).unwrap_or_default(), check_in });
        }
        for (taken, _) in self.steps_from_memory.lock().waiting.iter().filter(|(taken, _)| taken.incident == id) {
            let entry = AuditEntry {
                at_ms: taken.at_ms,
                at_known: taken.at_known,
                actor: taken.actor.clone(),
                action: taken.work.recorded(),
                note: taken.note.clone(),
            };
            timeline.push(TimelineEntry { entry, photos: Vec::new(), check_in: taken.check_in });
        }
        Ok(timeline)
    }

    /// Who holds the incident: (person, "owner" | "helper"), the owner first.
    pub fn incident_people(&self, id: i64) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT person, part FROM incident_people WHERE incident_id = ?1 ORDER BY part = 'helper', since_ms")?;
        let rows = statement.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let mut people: Vec<(String, String)> = rows.collect::<Result<_, _>>()?;
        for (taken, _) in self.steps_from_memory.lock().waiting.iter().filter(|(taken, _)| taken.incident == id) {
            match (&taken.work, &taken.owner) {
                (Work::Move(Action::Accept), Some(person)) | (Work::Transfer { person }, _) => {
                    people.retain(|(who, part)| part != "owner" && who != person);
                    people.insert(0, (person.clone(), "owner".into()));
                }
                (Work::AddHelper { person }, _) if !people.iter().any(|(who, _)| who == person) => people.push((person.clone(), "helper".into())),
                _ => {}
            }
        }
        Ok(people)
    }

    /// One photo of incident `id`; `None` when it has no such photo.
    pub fn incident_photo(&self, id: i64, photo: i64) -> anyhow::Result<Option<Photo>> {
        let conn = self.lock()?;
        let found = conn
            .query_row("SELECT content_type, bytes FROM incident_photos WHERE id = ?1 AND incident_id = ?2", params![photo, id], |row| {
                Ok(Photo { content_type: row.get(0)?, bytes: row.get(1)? })
            })
            .optional()?;
        Ok(found)
    }
}

/// Workers' steps taken, and relayed actions' signatures used, in memory while the card could not
/// write ([`Store::take_in_memory`], [`Store::use_signature`]).
#[derive(Debug, Default)]
pub(super) struct StepsFromMemory {
    /// Each step with the incident's state after it, oldest first, until the store records it.
    waiting: Vec<(WorkTaken, State)>,
    /// (purpose, signature) used in memory: a replay in this run is refused.
    pub(super) signatures: std::collections::HashSet<(String, String)>,
    /// What the dispatcher has not taken to record yet ([`Store::steps_to_record`]).
    pub(super) to_record: Vec<super::SentFromMemory>,
}

impl StepsFromMemory {
    /// The state the latest step waiting on incident `id` left it in.
    fn state_of(&self, id: i64) -> Option<State> {
        self.waiting.iter().rev().find(|(taken, _)| taken.incident == id).map(|(_, state)| *state)
    }

    /// The store recorded `taken` (or found it recorded, or its incident no longer takes it).
    fn recorded(&mut self, taken: &WorkTaken) {
        if let Some(at) = self.waiting.iter().position(|(waiting, _)| waiting == taken) {
            self.waiting.remove(at);
        }
    }
}

/// A photo refused because it could not be kept: the store runs in memory, or cannot write.
fn photo_not_kept() -> anyhow::Error {
    super::Refused("本机存储卡暂时无法写入，照片无法保存；请不带照片再提交一次（the card cannot write: photos cannot be kept）".into()).into()
}

/// Makes `person` the incident's only owner (a helper who takes it over stops being a helper).
fn set_owner(tx: &rusqlite::Transaction<'_>, id: i64, person: &str, now_ms: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM incident_people WHERE incident_id = ?1 AND (part = 'owner' OR person = ?2)", params![id, person])?;
    tx.execute("INSERT INTO incident_people (incident_id, person, part, since_ms) VALUES (?1, ?2, 'owner', ?3)", params![id, person, now_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    #[tokio::test]
    async fn a_step_keeps_its_photo_and_check_in_and_accepting_makes_an_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap().incident().unwrap();
        assert_eq!(
            store
                .record_work(
                    id,
                    Step { work: &Work::Move(Action::Accept), actor: "王芳 (wang, own link)", person: "wang", note: None, photo: None, check_in: None },
                    1_000
                )
                .unwrap(),
            State::Accepted
        );
        let photo = Photo { content_type: "image/jpeg".into(), bytes: vec![0xFF, 0xD8, 0xFF, 1, 2, 3] };
        let here = CheckIn { latitude: 31.23, longitude: 121.47, accuracy_m: Some(12.0), distance_m: Some(35.0) };
        assert_eq!(
            store
                .record_work(
                    id,
                    Step {
                        work: &Work::Move(Action::OnSite), actor: "王芳", person: "wang", note: Some("到了"), photo: Some(&photo), check_in: Some(here)
                    },
                    2_000
                )
                .unwrap(),
            State::OnSite
        );
        store
            .record_work(
                id,
                Step { work: &Work::AddHelper { person: "zhao".into() }, actor: "王芳", person: "wang", note: None, photo: None, check_in: None },
                3_000,
            )
            .unwrap();
        assert_eq!(store.incident_people(id).unwrap(), vec![("wang".to_string(), "owner".to_string()), ("zhao".to_string(), "helper".to_string())]);
        store
            .record_work(
                id,
                Step { work: &Work::Transfer { person: "zhao".into() }, actor: "王芳", person: "wang", note: Some("换班"), photo: None, check_in: None },
                4_000,
            )
            .unwrap();
        assert_eq!(
            store.incident_people(id).unwrap(),
            vec![("zhao".to_string(), "owner".to_string())],
            "one owner; the helper who took over is no longer a helper"
        );
        let timeline = store.incident_timeline(id).unwrap();
        let on_site = timeline.iter().find(|t| t.entry.action == "on_site").unwrap();
        assert_eq!((on_site.photos.len(), on_site.check_in), (1, Some(here)));
        assert_eq!(store.incident_photo(id, on_site.photos[0]).unwrap(), Some(photo));
        assert_eq!(store.incident_photo(id + 1, on_site.photos[0]).unwrap(), None, "a photo is served only for its own incident");
        assert_eq!(timeline.last().unwrap().entry.action, "transfer to zhao");
    }

    #[tokio::test]
    async fn a_refused_step_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap().incident().unwrap();
        let photo = Photo { content_type: "image/png".into(), bytes: vec![0x89, b'P', b'N', b'G'] };
        let refused = store
            .record_work(id, Step { work: &Work::Move(Action::Close), actor: "x", person: "x", note: None, photo: Some(&photo), check_in: None }, 1_000)
            .unwrap_err();
        assert!(refused.to_string().contains("cannot close an incident that is open"), "{refused}");
        let timeline = store.incident_timeline(id).unwrap();
        assert_eq!(timeline.len(), 1, "only the firing: {timeline:?}");
        assert!(timeline[0].photos.is_empty());
        assert_eq!(store.write_problem(), None, "a refused step is no failing store (/healthz stays ready)");
        assert_eq!(store.failed_writes(), 0);
        assert!(store.incident_action(id + 1, Action::Accept, "x", None, 2_000).is_err());
        assert_eq!(store.write_problem(), None, "nor is a step on an incident that does not exist");
    }

    /// `gridwatch incidents act` is a second process on the daemon's store: a step taken while
    /// the daemon writes waits for it (an outside tester's accept failed at once with "database
    /// is locked", and the incident stayed open).
    #[tokio::test]
    async fn a_step_from_a_second_process_waits_for_the_daemon_s_write() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Store::open(dir.path()).unwrap();
        let id = daemon.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap().incident().unwrap();
        let command_line = Store::open(dir.path()).unwrap();
        let writing = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let conn = daemon.lock().unwrap();
                conn.execute_batch("BEGIN IMMEDIATE; UPDATE incidents SET last_value = last_value + 1;").unwrap();
                writing.wait();
                std::thread::sleep(std::time::Duration::from_millis(300));
                conn.execute_batch("COMMIT").unwrap();
            });
            writing.wait();
            let accepted = command_line.incident_action(id, Action::Accept, "王芳", None, 2_000);
            assert_eq!(accepted.map_err(|e| format!("{e:#}")), Ok(State::Accepted));
        });
    }

    /// A store copied into memory (a read-only card) on `state`, its runtime directory `runtime`,
    /// holding incident 1 of the sample alarm.
    async fn copy_in_memory(state: &std::path::Path, runtime: &std::path::Path) -> Store {
        let copy = Store::open(state).unwrap().keep_beside_card(runtime).unwrap().into_memory_copy();
        assert_eq!(copy.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap().incident(), Some(1));
        copy
    }

    #[tokio::test]
    async fn a_step_on_a_copy_in_memory_is_kept_beside_the_card_and_taken_again_once_at_the_next_start() {
        let (copied, card, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let copy = copy_in_memory(copied.path(), runtime.path()).await;
        let accept =
            Step { work: &Work::Move(Action::Accept), actor: "王芳 (wang, own link)", person: "wang", note: Some("马上到"), photo: None, check_in: None };
        assert_eq!(copy.record_work(1, accept, 1_000).unwrap(), State::Accepted);
        let photo = Photo { content_type: "image/jpeg".into(), bytes: vec![0xFF, 0xD8, 0xFF, 1] };
        let on_site = Step { work: &Work::Move(Action::OnSite), actor: "王芳", person: "wang", note: None, photo: Some(&photo), check_in: None };
        assert!(copy.record_work(1, on_site, 2_000).unwrap_err().to_string().contains("照片无法保存"), "a photo would be lost at the next start");
        assert!(copy.record_work(1, Step { work: &Work::Move(Action::Close), ..accept }, 2_000).is_err(), "a refused step is not kept");
        assert_eq!(copy.incident_action(1, Action::OnSite, "陈刚 (hub)", Some("到了"), 3_000).unwrap(), State::OnSite);

        // The next start: the card writes again (its incident 1 is the same alarm's).
        let next = Store::open(card.path()).unwrap().keep_beside_card(runtime.path()).unwrap();
        next.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap();
        let kept: Vec<WorkTaken> = next
            .sent_from_memory_left()
            .into_iter()
            .filter_map(|sent| match sent {
                crate::store::SentFromMemory::Work { worker_action } => Some(*worker_action),
                _ => None,
            })
            .collect();
        assert_eq!(kept.iter().map(|k| k.work.recorded()).collect::<Vec<_>>(), ["accept", "on_site"], "{kept:?}");
        for taken in &kept {
            assert!(next.take_work_again(taken).unwrap().is_some(), "{taken:?}");
            assert_eq!(next.take_work_again(taken).unwrap(), None, "taken once: a run that died before forgetting the file takes it again");
        }
        let row = next.incidents(true).unwrap().into_iter().find(|r| r.id == 1).unwrap();
        assert_eq!(row.state, "on_site");
        let history = next.incident_history(1).unwrap();
        let accepted = history.iter().find(|e| e.action == "accept").unwrap();
        assert_eq!((accepted.at_ms, accepted.actor.as_str(), accepted.note.as_deref()), (1_000, "王芳 (wang, own link)", Some("马上到")));
        assert_eq!(next.incident_people(1).unwrap(), vec![("wang".to_string(), "owner".to_string())]);
        assert_eq!(history.iter().filter(|e| e.action == "on_site").count(), 1, "{history:?}");
    }

    #[tokio::test]
    async fn a_copy_in_memory_without_a_runtime_directory_takes_no_step() {
        let dir = tempfile::tempdir().unwrap();
        let copy = Store::open(dir.path()).unwrap().into_memory_copy();
        copy.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap();
        let accept = Step { work: &Work::Move(Action::Accept), actor: "王芳", person: "wang", note: None, photo: None, check_in: None };
        let refused = copy.record_work(1, accept, 1_000).unwrap_err();
        assert!(matches!(refused.downcast_ref::<crate::store::NotKept>(), Some(crate::store::NotKept::NoRuntimeDirectory)), "{refused:#}");
        assert_eq!(copy.incidents(true).unwrap()[0].state, "open", "not taken in memory either");
        assert!(copy.incident_action(1, Action::Accept, "王芳 (hub)", None, 1_000).is_err());
        assert!(copy.use_signature("ack", "ab12", 10_000, 1_000).is_err(), "nor a signature used");
    }
}
