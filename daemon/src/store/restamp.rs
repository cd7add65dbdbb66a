//! Times stamped while the box's clock was not set: marked when written, re-stamped once it is.
//!
//! A Raspberry Pi boots at 1970 or its last shutdown time until NTP sets its clock. What is
//! stamped before (an alert event, an incident's audit line and the incident times written with
//! it) carries a wall time people must not read, so it is marked with the daemon's monotonic
//! time of the stamp (`clock_unset_at`, [`crate::clock::Clock::elapsed_ms`]). Once the clock is
//! set, the daemon re-stamps every marked row once: true time = wall time now − (elapsed time now
//! − elapsed time at the stamp). An alert event's payload is re-stamped too (`at`, `at_ms`, and
//! `since` from how long its breach had lasted), so later reminders and escalations, which quote
//! it, carry the right times.
//!
//! Elapsed time is this process's: a row marked by an earlier run (the daemon restarted before
//! the clock was set) cannot be re-stamped and is marked [`LOST`] when the daemon starts — people
//! read "time unknown" for it for good, never a made-up date. So do rows a command-line tool
//! writes while the clock is not set (another process's elapsed time).
//!
//! Invariants: a row is re-stamped at most once (its mark is cleared in the same transaction);
//! an incident's times move with the audit line written with them (same old value, same row).

use super::Store;
use crate::alert::Alert;
use rusqlite::{params, Transaction};

/// The mark of a time stamped by an unset clock that can no longer be re-stamped.
pub const LOST: i64 = -1;

/// What one re-stamping moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restamped {
    pub alert_events: u64,
    pub incident_events: u64,
}

impl Store {
    /// This process is the daemon: marks the stamps earlier runs left unset as [`LOST`], and from
    /// now on marks its own to be re-stamped. Returns how many were lost.
    pub fn take_over_unset_stamps(&self) -> anyhow::Result<u64> {
        let lost = self.essential(|conn| {
            let tx = conn.transaction()?;
            let mut lost = 0;
            for table in ["alert_events", "incident_events"] {
                lost += tx.execute(&format!("UPDATE {table} SET clock_unset_at = ?1 WHERE clock_unset_at >= 0"), [LOST])? as u64;
            }
            tx.commit()?;
            Ok(lost)
        })?;
        self.restamps.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(lost)
    }

    /// The mark of a time stamped now: `None` while the clock is set.
    pub(super) fn unset_mark_now(&self) -> Option<i64> {
        (!self.clock.synchronized()).then(|| self.unset_mark(self.clock.elapsed_ms()))
    }

    /// The mark of an alert's time (and how long its breach had lasted): `None` when people can
    /// read its time.
    pub(super) fn unset_mark_of(&self, alert: &Alert) -> Option<(i64, i64)> {
        if alert.at != crate::clock::TIME_UNKNOWN {
            return None;
        }
        let (elapsed_ms, lasting_ms) = alert.unset_clock.map_or((self.clock.elapsed_ms(), 0), |stamp| (stamp.elapsed_ms, stamp.lasting_ms));
        Some((self.unset_mark(elapsed_ms), lasting_ms))
    }

    fn unset_mark(&self, elapsed_ms: i64) -> i64 {
        if self.restamps.load(std::sync::atomic::Ordering::SeqCst) {
            elapsed_ms
        } else {
            LOST
        }
    }

    /// Once the clock is set: re-stamps what this run stamped before. Cheap when there is
    /// nothing to do (the marks have an index of their own).
    pub async fn restamp_unset_times(&self) -> anyhow::Result<Restamped> {
        let clock = self.clock;
        // Only the process that took the marks over re-stamps: another's elapsed time is not its own.
        if !clock.synchronized() || !self.restamps.load(std::sync::atomic::Ordering::SeqCst) || !self.has_unset_marks()? {
            return Ok(Restamped::default());
        }
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            // Read together: the wall time now and the elapsed time now.
            let (now, elapsed) = (clock.now(), clock.elapsed_ms());
            let true_time = |stamped_at_elapsed: i64| now - (elapsed - stamped_at_elapsed);
            let restamped = Restamped { incident_events: restamp_incident_events(&tx, true_time)?, alert_events: restamp_alert_events(&tx, true_time)? };
            tx.commit()?;
            Ok(restamped)
        })
        .await
    }

    /// Whether any row waits to be re-stamped.
    fn has_unset_marks(&self) -> anyhow::Result<bool> {
        let conn = self.lock()?;
        let mut statement = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM alert_events WHERE clock_unset_at >= 0) OR EXISTS (SELECT 1 FROM incident_events WHERE clock_unset_at >= 0)",
        )?;
        Ok(statement.query_row([], |row| row.get(0))?)
    }
}

/// Audit lines, and the incident times written with them.
fn restamp_incident_events(tx: &Transaction<'_>, true_time: impl Fn(i64) -> i64) -> anyhow::Result<u64> {
    let marked: Vec<(i64, i64, i64, i64)> = {
        let mut statement = tx.prepare("SELECT id, incident_id, at_ms, clock_unset_at FROM incident_events WHERE clock_unset_at >= 0 ORDER BY id")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for &(id, incident, old, stamped) in &marked {
        let new = true_time(stamped);
        tx.execute("UPDATE incident_events SET at_ms = ?1, clock_unset_at = NULL WHERE id = ?2", params![new, id])?;
        tx.execute(
            "UPDATE incidents SET opened_ms = CASE opened_ms WHEN ?1 THEN ?2 ELSE opened_ms END,
                                  updated_ms = CASE updated_ms WHEN ?1 THEN ?2 ELSE updated_ms END,
                                  closed_ms = CASE closed_ms WHEN ?1 THEN ?2 ELSE closed_ms END
             WHERE id = ?3",
            params![old, new, incident],
        )?;
    }
    Ok(marked.len() as u64)
}

/// Alert events: the row, its payload, and the copies still waiting in the outbox.
fn restamp_alert_events(tx: &Transaction<'_>, true_time: impl Fn(i64) -> i64) -> anyhow::Result<u64> {
    let marked: Vec<(i64, String, i64, i64)> = {
        let mut statement =
            tx.prepare("SELECT id, payload, clock_unset_at, coalesce(clock_unset_lasting_ms, 0) FROM alert_events WHERE clock_unset_at >= 0 ORDER BY id")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, payload, stamped, lasting_ms) in &marked {
        let at = true_time(*stamped);
        tx.execute(
            "UPDATE alert_events SET at_ms = ?1, payload = ?2, clock_unset_at = NULL, clock_unset_lasting_ms = NULL WHERE id = ?3",
            params![at, stamped_payload(payload, at, *lasting_ms), id],
        )?;
        let copies: Vec<(String, String)> = {
            let mut statement = tx.prepare_cached("SELECT sink, payload FROM outbox WHERE alert_id = ?1 AND state = 'pending' AND payload IS NOT NULL")?;
            let rows = statement.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (sink, copy) in copies {
            tx.execute("UPDATE outbox SET payload = ?1 WHERE alert_id = ?2 AND sink = ?3", params![stamped_payload(&copy, at, *lasting_ms), id, sink])?;
        }
    }
    Ok(marked.len() as u64)
}

/// A stored alert's JSON with its times set to `at` (and an unknown breach start to
/// `lasting_ms` before); other fields as they are. A payload that cannot be read stays as it is.
fn stamped_payload(payload: &str, at: i64, lasting_ms: i64) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(payload) else { return payload.to_string() };
    if let Some(fields) = value.as_object_mut() {
        fields.insert("at".into(), crate::clock::rfc3339(at).into());
        fields.insert("at_ms".into(), at.into());
        // A reminder quotes its incident's `since`, which may have been known.
        if fields.get("since").and_then(serde_json::Value::as_str) == Some(crate::clock::TIME_UNKNOWN) {
            fields.insert("since".into(), crate::clock::rfc3339(at - lasting_ms).into());
        }
    }
    value.to_string()
}
