//! The alert journal and outbox. An alert event is written with one pending delivery per
//! channel in one transaction, before any channel is tried; each channel then drains its own
//! pending deliveries from the outbox, oldest first, and marks each `delivered` or `failed`.
//! The outbox *is* the channels' queue: what a slow channel has not sent yet waits here, on
//! disk, and is sent after a restart.
//!
//! Invariants: an event's journal id (`event_id` in its payload) is assigned once and carried
//! by every copy and re-send of it; on each channel, an event of an incident never becomes due
//! before the earlier events of that incident still pending there (a deferred `fired` holds
//! back its `cleared`).

use super::Store;
use crate::alert::{Alert, Event};
use rusqlite::{params, OptionalExtension, Transaction};

/// How the error of a delivery left unsent on purpose begins (a reminder answered before it
/// could go, an alarm whose later event went in its place, one folded before its time came): it
/// is recorded `failed`, but no channel failed it ([`Store::incident_so_far_on`]).
pub const NOT_SENT: &str = "not sent: ";

/// Counts, in this run's ledger of deliveries left unsent on purpose (a temporary table: one per
/// connection, gone at the next start, and rolled back with the transaction that wrote it), the
/// pending deliveries `condition` selects (an SQL condition on `outbox`; `?1`… bound by `params`),
/// by channel: `/api/balance` accounts for them ([`Store::not_sent_this_run`]).
pub(super) fn count_not_sent(conn: &rusqlite::Connection, condition: &str, params: impl rusqlite::Params) -> rusqlite::Result<()> {
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS not_sent_this_run (sink TEXT PRIMARY KEY, deliveries INTEGER NOT NULL)", [])?;
    conn.execute(
        &format!(
            "INSERT INTO temp.not_sent_this_run (sink, deliveries) SELECT sink, count(*) FROM outbox WHERE state = 'pending' AND ({condition}) GROUP BY sink
             ON CONFLICT (sink) DO UPDATE SET deliveries = deliveries + excluded.deliveries"
        ),
        params,
    )?;
    Ok(())
}

/// One row of the alert journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub id: i64,
    pub event: String,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub value: f64,
}

/// A delivery a channel is to make now.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub alert_id: i64,
    pub alert: Alert,
    /// It waited (quiet hours, the daily digest, a building's group window): the due ones go
    /// out together as one message.
    pub deferred: bool,
    /// Attempts made at it so far, by this run and earlier ones (for a sink whose attempts the
    /// channel counts, [`crate::sinks::Sink::counted_attempts`]).
    pub attempts: u32,
}

/// How an incident's earlier events went on one channel ([`Store::incident_so_far_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentSoFar {
    /// One of them was delivered there.
    pub delivered: bool,
    /// One of them failed there (and was handed to the channel's failover, if it has one).
    pub failed: bool,
}

/// One channel an alert goes to, with the copy it carries when that differs from the journaled
/// one (a member's own channel: their link only).
pub type Destination = (String, Option<Alert>);

/// Marks the pending deliveries of journaled alerts `ids` as delivered: the dispatcher sent them
/// from memory when the store stalled while journaling them, and the write landed after all.
pub(super) fn settle_sent_from_memory(conn: &rusqlite::Connection, ids: &[i64], now_ms: i64) -> rusqlite::Result<()> {
    let mut settle = conn.prepare_cached(
        "UPDATE outbox SET state = 'delivered', updated_ms = ?1, error = 'sent from memory: the store stalled while journaling it' WHERE alert_id = ?2 AND state = 'pending'",
    )?;
    for id in ids {
        settle.execute(rusqlite::params![now_ms, id])?;
    }
    Ok(())
}

/// Journals `alert` with a pending delivery per destination, each due at `not_before_ms` or
/// after the incident's earlier events pending on that channel, whichever is later — except that
/// an alarm due sooner than those (an orange after a yellow held for quiet hours) does not wait:
/// it brings them forward with it, so the channel gets the whole story in order. Returns the
/// journal id, written into every stored copy as `event_id`. `now` stamps the deliveries.
/// `unset_clock`: the mark of a time an unset clock stamped, and how long the breach had lasted
/// ([`super::restamp`]).
pub(super) fn insert_event(
    tx: &Transaction<'_>,
    alert: &Alert,
    destinations: &[Destination],
    not_before_ms: Option<i64>,
    now: i64,
    unset_clock: Option<(i64, i64)>,
) -> anyhow::Result<i64> {
    // The id is the next after the journal's last, or after the floor a store copied into memory
    // keeps in `sqlite_sequence` (`ids_of_its_own` in the store's module).
    tx.execute(
        "INSERT INTO alert_events (id, at_ms, rule, sensor, event, severity, value, payload, clock_unset_at, clock_unset_lasting_ms)
         VALUES (max(coalesce((SELECT max(id) FROM alert_events), 0), coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'alert_events'), 0)) + 1,
                 ?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?8)",
        params![
            alert.at_ms,
            alert.rule,
            alert.sensor,
            alert.event.as_str(),
            alert.severity.as_str(),
            alert.value,
            unset_clock.map(|u| u.0),
            unset_clock.map(|u| u.1)
        ],
    )?;
    let id = tx.last_insert_rowid();
    let with_id = |alert: &Alert| serde_json::to_string(&Alert { event_id: Some(id), ..alert.clone() });
    tx.execute("UPDATE alert_events SET payload = ?1 WHERE id = ?2", params![with_id(alert)?, id])?;
    for (sink, own_copy) in destinations {
        let earlier: Option<i64> = tx.query_row(
            "SELECT max(o.not_before_ms) FROM outbox o JOIN alert_events a ON a.id = o.alert_id
             WHERE o.sink = ?1 AND o.state = 'pending' AND a.rule = ?2 AND a.sensor = ?3 AND o.alert_id < ?4",
            params![sink, alert.rule, alert.sensor, id],
            |row| row.get(0),
        )?;
        let sooner = earlier.is_some_and(|earlier| not_before_ms.is_none_or(|own| own < earlier));
        let due = if sooner && matches!(alert.event, Event::Fired | Event::Changed) {
            tx.execute(
                "UPDATE outbox SET not_before_ms = ?1 WHERE sink = ?2 AND state = 'pending' AND alert_id < ?3
                 AND alert_id IN (SELECT id FROM alert_events WHERE rule = ?4 AND sensor = ?5)",
                params![not_before_ms, sink, id, alert.rule, alert.sensor],
            )?;
            not_before_ms
        } else {
            match (not_before_ms, earlier) {
                (Some(own), Some(earlier)) => Some(own.max(earlier)),
                (own, earlier) => own.or(earlier),
            }
        };
        let payload = own_copy.as_ref().map(with_id).transpose()?;
        tx.execute(
            "INSERT INTO outbox (alert_id, sink, state, updated_ms, not_before_ms, payload) VALUES (?1, ?2, 'pending', ?3, ?4, ?5)",
            params![id, sink, now, due, payload],
        )?;
    }
    Ok(id)
}

impl Store {
    /// Journals an alert event with a pending delivery for each sink; returns its id.
    pub async fn record_alert(&self, alert: &Alert, sinks: &[String]) -> anyhow::Result<i64> {
        self.record_alert_to(alert, sinks.iter().map(|s| (s.clone(), None)).collect(), None).await
    }

    /// Journals an alert event with a pending delivery per destination, waiting until
    /// `not_before_ms` (quiet hours, the daily digest, a group window) when given.
    pub async fn record_alert_to(&self, alert: &Alert, destinations: Vec<Destination>, not_before_ms: Option<i64>) -> anyhow::Result<i64> {
        let alert = alert.clone();
        let now = self.clock.now();
        let unset_clock = self.unset_mark_of(&alert);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let id = insert_event(&tx, &alert, &destinations, not_before_ms, now, unset_clock)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// The oldest `limit` deliveries pending for `sink` that are due at `now_ms`, in journal
    /// order. A stored alert that cannot be read back is marked failed (it would block the
    /// channel's queue for good).
    pub async fn due_deliveries(&self, sink: &str, now_ms: i64, limit: usize) -> anyhow::Result<Vec<DueDelivery>> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut due = Vec::new();
            let mut unreadable = Vec::new();
            {
                // A red alarm goes before what queued up ahead of it (clears, reminders, oranges
                // of other houses: a channel retrying two clears kept a red 60 s from WeCom; an
                // outside tester), unless an earlier event of its own incident still waits here.
                let mut statement = tx.prepare_cached(
                    "SELECT o.alert_id, coalesce(o.payload, a.payload), o.not_before_ms IS NOT NULL, o.attempts FROM outbox o JOIN alert_events a ON a.id = o.alert_id
                     WHERE o.sink = ?1 AND o.state = 'pending' AND (o.not_before_ms IS NULL OR o.not_before_ms <= ?2)
                     ORDER BY a.severity = 'danger' AND a.event IN ('fired', 'changed') AND NOT EXISTS (
                         SELECT 1 FROM alert_events b JOIN outbox e ON e.alert_id = b.id AND e.sink = o.sink
                         WHERE b.sensor = a.sensor AND b.rule = a.rule AND b.id < a.id AND e.state = 'pending'
                     ) DESC, o.alert_id LIMIT ?3",
                )?;
                let rows = statement
                    .query_map(params![sink, now_ms, limit as i64], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, bool>(2)?, row.get::<_, u32>(3)?))
                    })?;
                for row in rows {
                    let (alert_id, payload, deferred, attempts) = row?;
                    match serde_json::from_str(&payload) {
                        Ok(alert) => due.push(DueDelivery { alert_id, alert, deferred, attempts }),
                        Err(error) => unreadable.push((alert_id, error.to_string())),
                    }
                }
            }
            for (alert_id, error) in unreadable {
                tracing::error!(alert_id, sink = %sink, error = %error, "journaled alert cannot be read back; not sent");
                tx.execute(
                    "UPDATE outbox SET state = 'failed', error = ?1, updated_ms = ?2 WHERE alert_id = ?3 AND sink = ?4",
                    params![error, now_ms, alert_id, sink],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    /// For a later event of an incident (journal id `alert_id`, about `rule` on `sensor`) on
    /// channel `sink`: whether an earlier event of the incident was delivered there, and whether
    /// one failed there (a channel with a failover hands each failure over at once; the failover's
    /// own delivery may not be journaled yet when this is asked) — not one left unsent on purpose
    /// ([`NOT_SENT`]).
    pub async fn incident_so_far_on(&self, alert_id: i64, sink: &str, alert: &Alert, incident_id: i64) -> anyhow::Result<IncidentSoFar> {
        let (sink, rule, sensor) = (sink.to_string(), alert.rule.clone(), alert.sensor.clone());
        self.with_conn(move |conn| {
            let (delivered, failed) = conn
                .prepare_cached(
                    "SELECT coalesce(max(o.state = 'delivered'), 0), coalesce(max(o.state = 'failed' AND coalesce(o.error, '') NOT LIKE ?6 || '%'), 0)
                     FROM outbox o JOIN alert_events a ON a.id = o.alert_id
                     WHERE o.sink = ?1 AND a.sensor = ?2 AND a.rule = ?3 AND a.id < ?4
                       AND json_extract(coalesce(o.payload, a.payload), '$.incident_id') = ?5",
                )?
                .query_row(params![sink, sensor, rule, alert_id, incident_id, NOT_SENT], |row| Ok((row.get::<_, bool>(0)?, row.get::<_, bool>(1)?)))?;
            Ok(IncidentSoFar { delivered, failed })
        })
        .await
    }

    /// Whether a later `fired` or `changed` of the same incident as `alert` (journal id
    /// `alert_id`), at least as bad and of the same firing (no clear between them), is due on
    /// channel `sink`: what `alert` says is out of date there, and the later one says it all (a
    /// slow receiver got an orange five times while its house's red waited behind it; an outside
    /// tester). An alarm that cleared and fired again is told each time.
    pub async fn superseded_on(&self, sink: &str, alert_id: i64, alert: &Alert) -> anyhow::Result<bool> {
        let (Some(incident), true) = (alert.incident_id, matches!(alert.event, Event::Fired | Event::Changed)) else { return Ok(false) };
        let (sink, rule, sensor, rank) = (sink.to_string(), alert.rule.clone(), alert.sensor.clone(), super::folding::rank(alert));
        let now = self.clock.now();
        self.with_conn(move |conn| {
            let later: Option<i64> = conn
                .prepare_cached(&format!(
                    "SELECT b.id FROM alert_events b JOIN outbox e ON e.alert_id = b.id AND e.sink = ?1 AND e.state = 'pending'
                      WHERE b.rule = ?2 AND b.sensor = ?3 AND b.id > ?4 AND b.event IN ('fired', 'changed')
                        AND json_extract(coalesce(e.payload, b.payload), '$.incident_id') = ?5
                        AND NOT EXISTS (SELECT 1 FROM alert_events c WHERE c.rule = ?2 AND c.sensor = ?3 AND c.id > ?4 AND c.id < b.id AND c.event = 'cleared')
                        AND (e.not_before_ms IS NULL OR e.not_before_ms <= ?6) AND {} >= ?7
                      LIMIT 1",
                    super::folding::rank_sql("b"),
                ))?
                .query_row(params![sink, rule, sensor, alert_id, incident, now, rank], |row| row.get(0))
                .optional()?;
            Ok(later.is_some())
        })
        .await
    }

    /// Whether a red alarm (fired or changed to danger) other than journaled alert `except` is due
    /// on channel `sink`.
    pub async fn red_due_on(&self, sink: &str, except: i64) -> anyhow::Result<bool> {
        let sink = sink.to_string();
        let now = self.clock.now();
        self.with_conn(move |conn| {
            let red: Option<i64> = conn
                .prepare_cached(
                    "SELECT o.alert_id FROM outbox o JOIN alert_events a ON a.id = o.alert_id
                      WHERE o.sink = ?1 AND o.state = 'pending' AND o.alert_id != ?2 AND (o.not_before_ms IS NULL OR o.not_before_ms <= ?3)
                        AND a.severity = 'danger' AND a.event IN ('fired', 'changed') LIMIT 1",
                )?
                .query_row(params![sink, except, now], |row| row.get(0))
                .optional()?;
            Ok(red.is_some())
        })
        .await
    }

    /// Whether the delivery of journaled alert `alert_id` on channel `sink` still waits to be
    /// made: a channel trying it again stops once it was recorded as not sent meanwhile (its
    /// alarm folded into its house's red).
    pub async fn delivery_pending(&self, alert_id: i64, sink: &str) -> anyhow::Result<bool> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            let state: Option<String> = conn
                .prepare_cached("SELECT state FROM outbox WHERE alert_id = ?1 AND sink = ?2")?
                .query_row(params![alert_id, sink], |row| row.get(0))
                .optional()?;
            Ok(state.as_deref() == Some("pending"))
        })
        .await
    }

    /// Adds a pending delivery of a journaled alert for one more sink (a failover channel);
    /// false when that sink has (or had) a delivery of it already.
    pub async fn add_delivery(&self, alert_id: i64, sink: &str) -> anyhow::Result<bool> {
        let sink = sink.to_string();
        let now = self.clock.now();
        self.with_conn(move |conn| {
            let added = conn.execute(
                "INSERT INTO outbox (alert_id, sink, state, updated_ms) VALUES (?1, ?2, 'pending', ?3) ON CONFLICT (alert_id, sink) DO NOTHING",
                params![alert_id, sink, now],
            )?;
            Ok(added == 1)
        })
        .await
    }

    /// Deliveries left unsent on purpose in this run ([`NOT_SENT`]), by sink.
    pub fn not_sent_this_run(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let conn = self.lock()?;
        let mut counts = std::collections::BTreeMap::new();
        let exists: bool = conn.query_row("SELECT count(*) > 0 FROM temp.sqlite_master WHERE name = 'not_sent_this_run'", [], |row| row.get(0))?;
        if exists {
            let mut statement = conn.prepare("SELECT sink, deliveries FROM temp.not_sent_this_run")?;
            for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
                let (sink, count) = row?;
                counts.insert(sink, count as u64);
            }
        }
        Ok(counts)
    }

    /// Deliveries still pending, by sink.
    pub fn pending_delivery_counts(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT sink, count(*) FROM outbox WHERE state = 'pending' GROUP BY sink")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = std::collections::BTreeMap::new();
        for row in rows {
            let (sink, count) = row?;
            counts.insert(sink, count as u64);
        }
        Ok(counts)
    }

    /// Counts an attempt at a delivery before it is made: a restart goes on from the count.
    pub async fn count_attempt(&self, alert_id: i64, sink: &str) -> anyhow::Result<()> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE alert_id = ?1 AND sink = ?2", params![alert_id, sink])?;
            Ok(())
        })
        .await
    }

    /// Records the outcome of a delivery; one left unsent on purpose ([`NOT_SENT`]) is counted in
    /// this run's ledger of them.
    pub async fn mark_delivery(&self, alert_id: i64, sink: &str, delivered: bool, attempts: u32, error: Option<String>) -> anyhow::Result<()> {
        let sink = sink.to_string();
        let state = if delivered { "delivered" } else { "failed" };
        let now = self.clock.now();
        self.with_conn(move |conn| {
            if error.as_deref().is_some_and(|e| e.starts_with(NOT_SENT)) {
                count_not_sent(conn, "alert_id = ?1 AND sink = ?2", params![alert_id, sink])?;
            }
            conn.execute(
                "UPDATE outbox SET state = ?1, attempts = attempts + ?2, updated_ms = ?3, error = ?4 WHERE alert_id = ?5 AND sink = ?6",
                params![state, attempts, now, error, alert_id, sink],
            )?;
            Ok(())
        })
        .await
    }

    /// The latest rule event (fired or changed) of a rule on a sensor: what its incident is about.
    pub fn latest_alert(&self, rule: &str, sensor: &str) -> anyhow::Result<Option<Alert>> {
        let conn = self.lock()?;
        let payload: Option<String> = conn
            .query_row(
                "SELECT payload FROM alert_events WHERE rule = ?1 AND sensor = ?2 AND event IN ('fired', 'changed') ORDER BY id DESC LIMIT 1",
                params![rule, sensor],
                |row| row.get(0),
            )
            .optional()?;
        Ok(payload.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn recent_alerts(&self, limit: usize) -> anyhow::Result<Vec<JournalEntry>> {
        let conn = self.lock()?;
        let mut statement = conn.prepare("SELECT id, event, rule, sensor, severity, value FROM alert_events ORDER BY id DESC LIMIT ?1")?;
        let rows = statement.query_map([limit as i64], |row| {
            Ok(JournalEntry { id: row.get(0)?, event: row.get(1)?, rule: row.get(2)?, sensor: row.get(3)?, severity: row.get(4)?, value: row.get(5)? })
        })?;
        let mut entries = rows.collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use rusqlite::Connection;

    fn office() -> Vec<Destination> {
        vec![("office".to_string(), None)]
    }

    #[tokio::test]
    async fn a_deferred_delivery_waits_across_a_restart_and_is_due_once_its_time_comes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_alert_to(&sample_alert("fired", 0.1), office(), Some(5_000)).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.due_deliveries("office", 4_999, 10).await.unwrap().is_empty(), "not sent before its time");
        let due = store.due_deliveries("office", 5_000, 10).await.unwrap();
        assert_eq!(due.iter().map(|d| (d.alert_id, d.deferred)).collect::<Vec<_>>(), vec![(id, true)]);
        store.mark_delivery(id, "office", true, 1, None).await.unwrap();
        assert!(store.due_deliveries("office", 6_000, 10).await.unwrap().is_empty(), "sent once");
    }

    /// A channel with clears and oranges queued (retried against a robot that refuses them) sends
    /// a new red house next, not after them; a red change of an incident whose orange still waits
    /// keeps its place after it.
    #[tokio::test]
    async fn a_red_alarm_goes_before_what_queued_up_ahead_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let of = |event: &str, sensor: &str, severity: gridwatch_rules::Severity| {
            let mut alert = sample_alert(event, 1.0);
            (alert.sensor, alert.severity) = (sensor.to_string(), severity);
            alert
        };
        use gridwatch_rules::Severity::{Alarm, Danger};
        let mut ids = Vec::new();
        for alert in [of("cleared", "house-01", Danger), of("fired", "house-02", Alarm), of("changed", "house-02", Danger), of("fired", "house-03", Danger)] {
            ids.push(store.record_alert_to(&alert, office(), None).await.unwrap());
        }
        let due: Vec<i64> = store.due_deliveries("office", 1_000, 10).await.unwrap().into_iter().map(|d| d.alert_id).collect();
        assert_eq!(due, vec![ids[3], ids[0], ids[1], ids[2]]);
    }

    #[tokio::test]
    async fn a_clear_never_becomes_due_before_its_deferred_fired_on_that_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let both = vec![("office".to_string(), None), ("console".to_string(), None)];
        let fired = store.record_alert_to(&sample_alert("fired", 7.3), vec![("office".to_string(), None)], Some(5_000)).await.unwrap();
        let cleared = store.record_alert_to(&sample_alert("cleared", 0.1), both, None).await.unwrap();
        assert!(store.due_deliveries("office", 1_000, 10).await.unwrap().is_empty(), "the clear waits for its fired");
        assert_eq!(store.due_deliveries("console", 1_000, 10).await.unwrap()[0].alert_id, cleared, "another channel is not held back");
        let due: Vec<(i64, &str)> =
            store.due_deliveries("office", 5_000, 10).await.unwrap().into_iter().map(|d| (d.alert_id, d.alert.event.as_str())).collect();
        assert_eq!(due, vec![(fired, "fired"), (cleared, "cleared")]);
    }

    #[tokio::test]
    async fn a_worse_alarm_does_not_wait_behind_a_deferred_one_of_the_same_problem_but_brings_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A yellow held for quiet hours until 7:00 (here 5,000), then the same problem orange.
        let yellow = store.record_alert_to(&sample_alert("fired", 3.0), office(), Some(5_000)).await.unwrap();
        let mut worse = sample_alert("changed", 2.5);
        worse.severity = "alarm".parse().unwrap();
        let orange = store.record_alert_to(&worse, office(), None).await.unwrap();
        let reminder = store.record_alert_to(&sample_alert("reminder", 2.5), office(), None).await.unwrap();
        let due: Vec<i64> = store.due_deliveries("office", 1_000, 10).await.unwrap().into_iter().map(|d| d.alert_id).collect();
        assert_eq!(due, vec![yellow, orange, reminder], "now, and in order");
    }

    #[tokio::test]
    async fn every_copy_carries_the_journal_id_as_its_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut own = sample_alert("fired", 7.3);
        own.recipients = vec!["Li".into()];
        let id = store.record_alert_to(&sample_alert("fired", 7.3), vec![("office".to_string(), None), ("li-sms".to_string(), Some(own))], None).await.unwrap();
        let office = store.due_deliveries("office", 0, 10).await.unwrap().remove(0);
        let personal = store.due_deliveries("li-sms", 0, 10).await.unwrap().remove(0);
        assert_eq!((office.alert.event_id, personal.alert.event_id), (Some(id), Some(id)));
        assert_eq!(personal.alert.recipients, vec!["Li".to_string()], "the member's own copy");
        assert!(office.alert.recipients.is_empty());
    }

    #[tokio::test]
    async fn journal_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_alert(&sample_alert("fired", 0.45), &[]).await.unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        let entries = reopened.recent_alerts(10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].id, entries[0].event.as_str(), entries[0].value), (id, "fired", 0.45));
    }

    #[tokio::test]
    async fn undelivered_alerts_stay_pending_per_sink() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sinks = vec!["office".to_string(), "mqtt".to_string()];
        let first = store.record_alert(&sample_alert("fired", 0.45), &sinks).await.unwrap();
        let second = store.record_alert(&sample_alert("cleared", 0.3), &sinks).await.unwrap();
        store.mark_delivery(first, "office", true, 1, None).await.unwrap();
        store.mark_delivery(first, "mqtt", false, 3, Some("no PUBACK".into())).await.unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        for sink in &sinks {
            let pending: Vec<_> = reopened.due_deliveries(sink, 0, 10).await.unwrap().into_iter().map(|d| (d.alert_id, d.alert.event.as_str())).collect();
            assert_eq!(pending, vec![(second, "cleared")], "{sink}");
        }
    }

    #[tokio::test]
    async fn version_one_journal_is_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("gridwatch.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE alert_events (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, rule TEXT NOT NULL, sensor TEXT NOT NULL,
               event TEXT NOT NULL CHECK (event IN ('fired', 'cleared')), severity TEXT NOT NULL, value REAL NOT NULL, payload TEXT NOT NULL);
             INSERT INTO alert_events VALUES (1, 5, 'r', 's', 'fired', 'danger', 0.5, '{}');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recent_alerts(10).unwrap()[0].rule, "r");
        store.record_alert(&sample_alert("changed", 0.6), &[]).await.unwrap();
        assert_eq!(store.recent_alerts(10).unwrap().len(), 2);
    }
}
