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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::alert::UnsetClockStamp;
    use crate::clock::{Clock, TIME_UNKNOWN};
    use crate::dispatch::incident::Action;
    use std::time::Duration;

    /// 2026-11-23T00:00:00Z.
    const TRUE_NOW: i64 = 1_795_392_000_000;
    /// A box booted at 1970-01-02.
    const BOOTED_AT: i64 = 86_400_000;

    /// The same store seen by a clock that is not set and, later, by the one NTP set.
    fn stores(dir: &std::path::Path) -> (Store, Store) {
        let started = tokio::time::Instant::now();
        let unset = Store::open_with_clock(dir, Clock::Accelerated { start: BOOTED_AT, started, speed: 1.0, synchronized: false }).unwrap();
        let set = Store { clock: Clock::Accelerated { start: TRUE_NOW, started, speed: 1.0, synchronized: true }, ..unset.clone() };
        (unset, set)
    }

    fn journal_to_office() -> super::super::Journaling {
        super::super::Journaling {
            route: Box::new(|alert, incident| {
                alert.incident_id = Some(incident);
                vec![("office".to_string(), None)]
            }),
            not_before_ms: None,
            escalate: None,
        }
    }

    /// An alarm labelled "time unknown" at 5 s of elapsed time, its breach a minute old.
    fn unknown_time_alarm() -> Alert {
        let mut alarm = sample_alert("fired", 7.3);
        (alarm.at, alarm.since, alarm.at_ms) = (TIME_UNKNOWN.into(), TIME_UNKNOWN.into(), BOOTED_AT + 5_000);
        alarm.unset_clock = Some(UnsetClockStamp { elapsed_ms: 5_000, lasting_ms: 60_000 });
        alarm
    }

    #[tokio::test(start_paused = true)]
    async fn what_an_unset_clock_stamped_is_re_stamped_once_it_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let (unset, set) = stores(dir.path());
        assert_eq!(unset.take_over_unset_stamps().unwrap(), 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        let (applied, _) = unset.apply_and_journal(&unknown_time_alarm(), 600_000, journal_to_office()).await.unwrap();
        let id = applied.incident().unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        unset.incident_action(id, Action::Accept, "worker Li", None, unset.clock.now()).unwrap();

        let row = &unset.incidents(true).unwrap()[0];
        assert!(!row.opened_known, "opened by a clock that is not set: unknown, not 1970");
        assert!(unset.incident_history(id).unwrap().iter().all(|e| !e.at_known));
        assert_eq!(unset.restamp_unset_times().await.unwrap(), Restamped::default(), "nothing moves while the clock is not set");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(set.restamp_unset_times().await.unwrap(), Restamped { alert_events: 1, incident_events: 2 });
        let row = &set.incidents(true).unwrap()[0];
        assert!(row.opened_known);
        assert_eq!((row.opened_ms, row.updated_ms), (TRUE_NOW + 5_000, TRUE_NOW + 10_000), "true time = now − elapsed since the stamp");
        let history: Vec<(i64, bool)> = set.incident_history(id).unwrap().iter().map(|e| (e.at_ms, e.at_known)).collect();
        assert_eq!(history, vec![(TRUE_NOW + 5_000, true), (TRUE_NOW + 10_000, true)]);
        let quoted = set.latest_alert("tilt-danger", "house-07").unwrap().unwrap();
        assert_eq!(
            (quoted.at.as_str(), quoted.since.as_str(), quoted.at_ms),
            ("2026-11-23T00:00:05.000Z", "2026-11-22T23:59:05.000Z", TRUE_NOW + 5_000),
            "what later reminders quote"
        );
        assert_eq!(set.restamp_unset_times().await.unwrap(), Restamped::default(), "re-stamped once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_runs_unset_times_stay_unknown_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (unset, _) = stores(dir.path());
        unset.take_over_unset_stamps().unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        let (applied, _) = unset.apply_and_journal(&unknown_time_alarm(), 600_000, journal_to_office()).await.unwrap();
        drop(unset);

        // The daemon restarts, still before the clock is set, and then NTP sets it.
        let (restarted, set) = stores(dir.path());
        assert_eq!(restarted.take_over_unset_stamps().unwrap(), 2, "the alert event and its audit line");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(set.restamp_unset_times().await.unwrap(), Restamped::default(), "another run's elapsed time is not this one's");
        assert!(!set.incidents(true).unwrap()[0].opened_known, "still unknown, never a made-up date");
        assert!(set.incident_history(applied.incident().unwrap()).unwrap().iter().all(|e| !e.at_known));

        // A command-line tool's write while the clock is not set cannot be re-stamped either.
        let tool = Store { restamps: std::sync::Arc::default(), ..restarted.clone() };
        let mut another = unknown_time_alarm();
        another.sensor = "house-08".into();
        tool.apply_and_journal(&another, 600_000, journal_to_office()).await.unwrap();
        assert_eq!(set.restamp_unset_times().await.unwrap(), Restamped::default());
    }
}
