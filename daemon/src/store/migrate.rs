//! Schema migrations, forward only, one transaction each.

use rusqlite::Connection;

const SCHEMA_VERSION: i32 = 27;

pub fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!("store schema version {version} is newer than this gridwatch ({SCHEMA_VERSION}); refusing to downgrade it");
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'cleared')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // Incidents also change severity: widen the event check; keep the engine state.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events_v2 (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'changed', 'cleared')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             INSERT INTO alert_events_v2 SELECT * FROM alert_events;
             DROP TABLE alert_events;
             ALTER TABLE alert_events_v2 RENAME TO alert_events;
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             CREATE TABLE engine_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 saved_at_ms INTEGER NOT NULL,
                 state TEXT NOT NULL
             );
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        // The outbox (one delivery per alert and sink) and the telemetry spool.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE outbox (
                 alert_id INTEGER NOT NULL REFERENCES alert_events (id),
                 sink TEXT NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
                 attempts INTEGER NOT NULL DEFAULT 0,
                 updated_ms INTEGER NOT NULL,
                 error TEXT,
                 PRIMARY KEY (alert_id, sink)
             );
             CREATE INDEX outbox_pending ON outbox (state, alert_id);
             CREATE TABLE spool (
                 id INTEGER PRIMARY KEY,
                 sensor TEXT NOT NULL,
                 ts INTEGER NOT NULL,
                 fields TEXT NOT NULL
             );
             CREATE TABLE dead_letters (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 sensor TEXT NOT NULL,
                 ts INTEGER NOT NULL,
                 fields TEXT NOT NULL,
                 error TEXT NOT NULL
             );
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if version < 4 {
        // Incidents and their audit trail.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE incidents (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 severity TEXT NOT NULL,
                 worst_severity TEXT NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('open', 'accepted', 'on_site', 'resolved', 'closed')),
                 sensor_normal INTEGER NOT NULL DEFAULT 0,
                 firings INTEGER NOT NULL DEFAULT 1,
                 last_value REAL NOT NULL,
                 opened_ms INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 closed_ms INTEGER
             );
             CREATE INDEX incidents_by_subject ON incidents (rule, sensor, state);
             CREATE TABLE incident_events (
                 id INTEGER PRIMARY KEY,
                 incident_id INTEGER NOT NULL REFERENCES incidents (id),
                 at_ms INTEGER NOT NULL,
                 actor TEXT NOT NULL,
                 action TEXT NOT NULL,
                 note TEXT
             );
             PRAGMA user_version = 4;
             COMMIT;",
        )?;
    }
    if version < 5 {
        // Reminders and escalations are journaled like rule events; their clocks are stored
        // so a restart neither repeats a step nor starts them again.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events_v5 (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'changed', 'cleared', 'reminder', 'escalated')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             INSERT INTO alert_events_v5 SELECT * FROM alert_events;
             DROP TABLE alert_events;
             ALTER TABLE alert_events_v5 RENAME TO alert_events;
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             CREATE TABLE escalations (
                 incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
                 grid TEXT,
                 armed_ms INTEGER NOT NULL,
                 reminders INTEGER NOT NULL DEFAULT 0,
                 level INTEGER NOT NULL DEFAULT 0,
                 missed INTEGER NOT NULL DEFAULT 0,
                 next_due_ms INTEGER NOT NULL
             );
             CREATE INDEX escalations_due ON escalations (next_due_ms);
             PRAGMA user_version = 5;
             COMMIT;",
        )?;
    }
    if version < 6 {
        // Silences: maintenance windows by sensor, building, grid or rule.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE silences (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 scope TEXT NOT NULL CHECK (scope IN ('sensor', 'building', 'grid', 'rule')),
                 target TEXT NOT NULL,
                 include_red INTEGER NOT NULL DEFAULT 0,
                 reason TEXT NOT NULL,
                 author TEXT NOT NULL,
                 created_ms INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL,
                 ended_ms INTEGER
             );
             PRAGMA user_version = 6;
             COMMIT;",
        )?;
    }
    if version < 7 {
        // Installation baselines set by `gridwatch calibrate`, with who and when.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE calibrations (
                 id INTEGER PRIMARY KEY,
                 sensor TEXT NOT NULL,
                 field TEXT NOT NULL,
                 value REAL NOT NULL,
                 previous REAL,
                 readings INTEGER NOT NULL,
                 author TEXT NOT NULL,
                 at_ms INTEGER NOT NULL
             );
             PRAGMA user_version = 7;
             COMMIT;",
        )?;
    }
    if version < 8 {
        // Deliveries deferred by quiet hours or the daily digest wait in the outbox until then.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE outbox ADD COLUMN not_before_ms INTEGER;
             CREATE INDEX outbox_deferred ON outbox (not_before_ms) WHERE not_before_ms IS NOT NULL;
             PRAGMA user_version = 8;
             COMMIT;",
        )?;
    }
    if version < 9 {
        // Hourly trend of each sensor's readings, for the worker's sparkline.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE trend (
                 sensor TEXT NOT NULL,
                 field TEXT NOT NULL,
                 hour INTEGER NOT NULL,
                 min REAL NOT NULL,
                 max REAL NOT NULL,
                 sum REAL NOT NULL,
                 count INTEGER NOT NULL,
                 PRIMARY KEY (sensor, field, hour)
             ) WITHOUT ROWID;
             CREATE INDEX trend_by_hour ON trend (hour);
             PRAGMA user_version = 9;
             COMMIT;",
        )?;
    }
    if version < 10 {
        // Signatures already used (workers' actions on the ack topic), kept for their lifetime
        // so a replayed message is refused, also after a restart.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE used_signatures (
                 signature TEXT PRIMARY KEY,
                 purpose TEXT NOT NULL,
                 expires_ms INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX used_signatures_by_expiry ON used_signatures (expires_ms);
             PRAGMA user_version = 10;
             COMMIT;",
        )?;
    }
    if version < 11 {
        // Each channel drains its own queue from the outbox (by sink, in journal order); a
        // member's own channel keeps its own copy of the alert (their link only). Readings
        // acknowledged since the last saved rule state wait in `unsaved_readings` to be judged
        // again after a crash.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE outbox ADD COLUMN payload TEXT;
             CREATE INDEX outbox_by_sink ON outbox (sink, state, alert_id);
             CREATE TABLE unsaved_readings (
                 id INTEGER PRIMARY KEY,
                 sensor TEXT NOT NULL,
                 ts INTEGER NOT NULL,
                 fields TEXT NOT NULL
             );
             PRAGMA user_version = 11;
             COMMIT;",
        )?;
    }
    if version < 12 {
        // Escalation clocks measure an incident's age on the monotonic clock (persisted as what
        // has elapsed), not wall-clock deadlines a clock step could jump over: `age_ms` is how
        // long the ladder has run, `next_due_age_ms` the age its next step falls due at.
        // `armed_ms` stays as the wall-clock label of when it began; `next_due_ms` is unused.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE escalations ADD COLUMN age_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE escalations ADD COLUMN next_due_age_ms INTEGER NOT NULL DEFAULT 0;
             UPDATE escalations SET age_ms = MAX(0, CAST(strftime('%s', 'now') AS INTEGER) * 1000 - armed_ms), next_due_age_ms = MAX(0, next_due_ms - armed_ms);
             PRAGMA user_version = 12;
             COMMIT;",
        )?;
    }
    if version < 14 {
        // The worker's page: photos taken on site and at resolve (kept here, beside the audit
        // entry they belong to), where the worker checked in, and who holds an incident (its
        // owner and helpers).
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE incident_photos (
                 id INTEGER PRIMARY KEY,
                 incident_id INTEGER NOT NULL,
                 event_id INTEGER NOT NULL,
                 content_type TEXT NOT NULL,
                 bytes BLOB NOT NULL
             );
             CREATE INDEX incident_photos_by_incident ON incident_photos (incident_id);
             CREATE TABLE incident_check_ins (
                 event_id INTEGER PRIMARY KEY,
                 latitude REAL NOT NULL,
                 longitude REAL NOT NULL,
                 accuracy_m REAL,
                 distance_m REAL
             );
             CREATE TABLE incident_people (
                 incident_id INTEGER NOT NULL,
                 person TEXT NOT NULL,
                 part TEXT NOT NULL CHECK (part IN ('owner', 'helper')),
                 since_ms INTEGER NOT NULL,
                 PRIMARY KEY (incident_id, person)
             ) WITHOUT ROWID;
             PRAGMA user_version = 14;
             COMMIT;",
        )?;
    }
    if version < 15 {
        // Messages that are not rule events are journaled too: the daily supervision report, and
        // telling a member an incident was handed to them or that they were asked to help.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE alert_events_v15 (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 rule TEXT NOT NULL,
                 sensor TEXT NOT NULL,
                 event TEXT NOT NULL CHECK (event IN ('fired', 'changed', 'cleared', 'reminder', 'escalated', 'report', 'handed_over', 'help_asked')),
                 severity TEXT NOT NULL,
                 value REAL NOT NULL,
                 payload TEXT NOT NULL
             );
             INSERT INTO alert_events_v15 SELECT * FROM alert_events;
             DROP TABLE alert_events;
             ALTER TABLE alert_events_v15 RENAME TO alert_events;
             CREATE INDEX alert_events_by_sensor ON alert_events (sensor, at_ms);
             PRAGMA user_version = 15;
             COMMIT;",
        )?;
    }
    if version < 16 {
        // Times stamped while the box's clock was not set are marked (see `store::restamp`):
        // `clock_unset_at` is the monotonic time of the stamp in the running daemon (re-stamped
        // once the clock is set) or -1 (an earlier run's: unknown for good); NULL: a set clock
        // stamped it. An alert event keeps how long its breach had lasted, for its `since`.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE alert_events ADD COLUMN clock_unset_at INTEGER;
             ALTER TABLE alert_events ADD COLUMN clock_unset_lasting_ms INTEGER;
             ALTER TABLE incident_events ADD COLUMN clock_unset_at INTEGER;
             CREATE INDEX alert_events_clock_unset ON alert_events (clock_unset_at) WHERE clock_unset_at IS NOT NULL;
             CREATE INDEX incident_events_clock_unset ON incident_events (incident_id, clock_unset_at) WHERE clock_unset_at IS NOT NULL;
             PRAGMA user_version = 16;
             COMMIT;",
        )?;
    }
    if version < 17 {
        // Steps of the wall clock measured once it was set, as links' expiries see them (Unix
        // seconds; see `crate::link_clock`): a link signed before the step lives its full life
        // from when it was really signed, also after a restart.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE clock_steps (
                 id INTEGER PRIMARY KEY,
                 expires_from INTEGER NOT NULL,
                 expires_until INTEGER NOT NULL,
                 first_expiry_after INTEGER NOT NULL,
                 step_secs INTEGER NOT NULL
             );
             PRAGMA user_version = 17;
             COMMIT;",
        )?;
    }
    if version < 18 {
        // Readings chosen for the district's uplink (`cluster::readings`), kept until the hub's
        // high-water mark covers them. Empty on a box without `[cluster]`. AUTOINCREMENT: ids
        // never go back after the table was emptied (the hub's mark would hide new rows).
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE uplink_readings (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 sensor TEXT NOT NULL,
                 ts INTEGER NOT NULL,
                 fields TEXT NOT NULL
             );
             PRAGMA user_version = 18;
             COMMIT;",
        )?;
    }
    if version < 19 {
        // The store's epoch (`cluster::uplink`): a random id made with the database, so that a
        // fresh store replacing a corrupt one (ids from 1 again) is told apart, at the district,
        // from the store whose rows and high-water marks the hub already has. A store from
        // before gets one here.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE store_epoch (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 epoch TEXT NOT NULL
             );
             INSERT INTO store_epoch (id, epoch) VALUES (1, lower(hex(randomblob(8))));
             PRAGMA user_version = 19;
             COMMIT;",
        )?;
    }
    if version < 20 {
        // The hourly trend for the district (`cluster::trend`): each closed hour's rows are
        // copied to `uplink_trend` (ids never go back, as `uplink_readings`) and kept until the
        // hub's mark covers them; `trend.uplinked` is the count a row had when it was last
        // copied, so an hour that late readings grew is copied again, whole. Unused on a box
        // without `[cluster]` (the column stays 0, the table empty).
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE trend ADD COLUMN uplinked INTEGER NOT NULL DEFAULT 0;
             CREATE TABLE uplink_trend (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 sensor TEXT NOT NULL,
                 field TEXT NOT NULL,
                 hour INTEGER NOT NULL,
                 min REAL NOT NULL,
                 max REAL NOT NULL,
                 sum REAL NOT NULL,
                 count INTEGER NOT NULL
             );
             PRAGMA user_version = 20;
             COMMIT;",
        )?;
    }
    if version < 21 {
        // When a ladder's age was saved, on a clock that was set (else NULL): a restart adds the
        // time the box was off, so a step that fell due meanwhile comes at once, not that much late.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE escalations ADD COLUMN aged_at_ms INTEGER;
             PRAGMA user_version = 21;
             COMMIT;",
        )?;
    }
    if version < 22 {
        // Reminders sent (a reminder due with an escalation is not sent: the escalation reminds
        // everyone), so that they are numbered 1, 2, 3 as people receive them.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE escalations ADD COLUMN reminders_sent INTEGER NOT NULL DEFAULT 0;
             PRAGMA user_version = 22;
             COMMIT;",
        )?;
    }
    if version < 23 {
        // What each phone got by SMS (`sms_sends.rs`): a gateway is not idempotent, so a restart
        // neither sends a phone what it got nor begins its attempts again.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE sms_sends (
                 sink TEXT NOT NULL,
                 event_id INTEGER NOT NULL,
                 phone TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 sent INTEGER NOT NULL,
                 PRIMARY KEY (sink, event_id, phone)
             ) WITHOUT ROWID;
             PRAGMA user_version = 23;
             COMMIT;",
        )?;
    }
    if version < 24 {
        // What a group robot's rate limit has used (`robot_limits.rs`): a restart goes on with it.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE robot_sends (sink TEXT NOT NULL, at_ms INTEGER NOT NULL);
             CREATE INDEX robot_sends_by_sink ON robot_sends (sink, at_ms);
             CREATE TABLE robot_throttles (sink TEXT PRIMARY KEY, until_ms INTEGER NOT NULL);
             PRAGMA user_version = 24;
             COMMIT;",
        )?;
    }
    if version < 25 {
        // The alarms a silence keeps from people (`silences.rs`), told when it ends, and the SMS
        // each phone's hourly budgets used (`sms_sends.rs`): a restart must forget neither.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE silenced_alarms (rule TEXT NOT NULL, sensor TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (rule, sensor)) WITHOUT ROWID;
             CREATE TABLE sms_budget_sends (sink TEXT NOT NULL, budget TEXT NOT NULL, at_ms INTEGER NOT NULL);
             CREATE INDEX sms_budget_sends_by_sink ON sms_budget_sends (sink, at_ms);
             PRAGMA user_version = 25;
             COMMIT;",
        )?;
    }
    if version < 26 {
        // Firing incidents whose rule changed and started afresh, settled at their sensor's next
        // reading (`Pipeline::settle_afresh`), and the alerts owed to a phone's next SMS past its
        // budget (`sms_sends.rs`): a restart must forget neither.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE incidents ADD COLUMN afresh INTEGER NOT NULL DEFAULT 0;
             CREATE TABLE sms_owed (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, budget TEXT NOT NULL, line TEXT NOT NULL, link TEXT);
             PRAGMA user_version = 26;
             COMMIT;",
        )?;
    }
    if version < 27 {
        // One house, one alarm told at a time (`folding.rs`): the house a grid incident is on,
        // whether it was told, and the incident of that house it was folded into.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE incidents ADD COLUMN house TEXT;
             ALTER TABLE incidents ADD COLUMN folded_into INTEGER;
             ALTER TABLE incidents ADD COLUMN told INTEGER NOT NULL DEFAULT 1;
             CREATE INDEX incidents_by_house ON incidents (house, state);
             PRAGMA user_version = 27;
             COMMIT;",
        )?;
    }
    Ok(())
}
