//! The district's tables in PostgreSQL, written only by the hub: every box's alert events and
//! incident transitions (keyed by box, store epoch and the box's row id, so a row sent twice is
//! stored once and a store that replaced a corrupt one — ids from 1 again — overwrites nothing),
//! the last reported state of each box's incidents (the box owns them; this is its report, not a
//! second copy to merge), the boxes seen with their current store epoch, and whether each is
//! reported down.
//!
//! A district database from before store epochs is not upgraded (the district was not released
//! without them): drop its tables, the boxes send their journals again.
//!
//! Invariants: a batch is committed whole or not at all; `box_incidents` only moves forward
//! (a transition older than the one it holds does not overwrite it); a box's down flag changes
//! only under the highest fencing token seen (`hub_fence`, see [`super::active`]).

use crate::cluster::wire::{Batch, Rows};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

/// The version [`SCHEMA`] sets up: raise it with every change to the tables, so that the hubs
/// already running on a district database set it up again.
const SCHEMA_VERSION: i32 = 1;

/// The tables, created in one transaction under an advisory lock: a hub's connections (and a
/// standby's) start together, and two `CREATE TABLE IF NOT EXISTS` of one table at once on an
/// empty database make one of them fail (`pg_type` unique violation). Run only on a database
/// not set up at [`SCHEMA_VERSION`] (see [`connect`]).
const SCHEMA: &str = "
SET client_min_messages = warning;
BEGIN;
SELECT pg_advisory_xact_lock(7167317296411);
CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT PRIMARY KEY,
    district TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    down BOOLEAN NOT NULL DEFAULT false,
    down_changed TIMESTAMPTZ,
    -- The store epoch the box sends from now (the newest seen; NULL: none sent yet).
    epoch TEXT
);
-- Every store epoch a box sent from: a new one after another means its store was replaced.
CREATE TABLE IF NOT EXISTS box_epochs (
    box_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (box_id, epoch)
);
CREATE TABLE IF NOT EXISTS alert_events (
    box_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    rule TEXT NOT NULL,
    sensor TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    received TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (box_id, epoch, id)
);
-- The board's last alarm of each box (ids of two store epochs do not order them).
CREATE INDEX IF NOT EXISTS alert_events_box_time ON alert_events (box_id, at_ms);
CREATE TABLE IF NOT EXISTS incident_transitions (
    box_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    id BIGINT NOT NULL,
    incident_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    note TEXT,
    received TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (box_id, epoch, id)
);
-- The board finds when each open incident opened (its first transition).
CREATE INDEX IF NOT EXISTS incident_transitions_incident ON incident_transitions (box_id, epoch, incident_id);
CREATE TABLE IF NOT EXISTS box_incidents (
    box_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    incident_id BIGINT NOT NULL,
    rule TEXT NOT NULL,
    sensor TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    last_transition BIGINT NOT NULL,
    PRIMARY KEY (box_id, epoch, incident_id)
);
-- A device fault's incident (a stuck or silent box, for installers): not a house's alarm.
ALTER TABLE box_incidents ADD COLUMN IF NOT EXISTS device BOOLEAN NOT NULL DEFAULT false;
-- The worst severity the incident reached, whose policy its deadlines are (the supervision
-- report); '' from boxes that do not send it: its severity then.
ALTER TABLE box_incidents ADD COLUMN IF NOT EXISTS worst_severity TEXT NOT NULL DEFAULT '';
-- Two boxes renew this box's lease in turns (one `box_id` configured on both): told once.
ALTER TABLE boxes ADD COLUMN IF NOT EXISTS id_shared BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE boxes ADD COLUMN IF NOT EXISTS id_shared_changed TIMESTAMPTZ;
-- A transition the box stamped while its clock was not set: counted in no day's supervision.
ALTER TABLE incident_transitions ADD COLUMN IF NOT EXISTS time_unknown BOOLEAN NOT NULL DEFAULT false;
-- What the standby evaluator posted about dead boxes' 4G sensors (`standby.rs`), by its key.
CREATE TABLE IF NOT EXISTS standby_alerts (
    key TEXT PRIMARY KEY,
    box_id TEXT NOT NULL,
    sensor TEXT NOT NULL,
    rule TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    posted TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS standby_alerts_box ON standby_alerts (box_id, posted);
CREATE TABLE IF NOT EXISTS hub_fence (
    id INT PRIMARY KEY CHECK (id = 1),
    token BIGINT NOT NULL
);
-- Which SCHEMA_VERSION the tables are at: a hub connecting to them set up skips the set-up.
CREATE TABLE IF NOT EXISTS district_schema (
    id INT PRIMARY KEY CHECK (id = 1),
    version INT NOT NULL
);
INSERT INTO district_schema (id, version) VALUES (1, $version)
    ON CONFLICT (id) DO UPDATE SET version = greatest(district_schema.version, EXCLUDED.version);
COMMIT;
";

/// The connection in `db`, made again (see [`connect`]) when there is none or it was lost.
pub async fn reuse<'a>(db: &'a mut Option<Client>, conninfo: &str) -> anyhow::Result<&'a Client> {
    if db.as_ref().is_none_or(Client::is_closed) {
        *db = Some(connect(conninfo).await?);
    }
    db.as_ref().ok_or_else(|| anyhow::anyhow!("no PostgreSQL connection"))
}

/// Connects (the connection runs on its own task) and sets the tables up when the database is
/// not at [`SCHEMA_VERSION`].
///
/// The set-up's `ALTER TABLE`s lock each table whole, even when the column is there: run on
/// every connection, a standby becoming active set up the tables on one connection while its
/// first batch held rows on another, and the two deadlocked (2 of 5 takeovers, an outside
/// tester); and each connection a hub made again queued behind every open transaction on the
/// tables, stopping the other connections' work behind it. Now a database set up is only read,
/// and one connection of this process at a time sets one up, so the others find it done.
pub async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    static SETTING_UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %error, "PostgreSQL connection lost");
        }
    });
    let _one_at_a_time = SETTING_UP.lock().await;
    if schema_version(&client).await? < SCHEMA_VERSION {
        client.batch_execute(&SCHEMA.replace("$version", &SCHEMA_VERSION.to_string())).await?;
    }
    Ok(client)
}

/// The version the district's tables are set up at: 0 for a database set up before versions
/// were kept, or not at all.
async fn schema_version(client: &Client) -> anyhow::Result<i32> {
    let exists: Option<String> = client.query_one("SELECT to_regclass('district_schema')::text", &[]).await?.get(0);
    if exists.is_none() {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM district_schema WHERE id = 1", &[]).await?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// What one batch's commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Rows new to the district.
    pub inserted: u64,
    /// The box sent from a store epoch not seen before, having sent from these others: its
    /// store was replaced.
    pub replaced_epochs: Option<Vec<String>>,
}

/// Writes one batch in one transaction (a batch of readings only records its box and epoch:
/// its rows go to InfluxDB).
pub async fn commit_batch(client: &mut Client, batch: &Batch) -> anyhow::Result<Committed> {
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO boxes (box_id, district) VALUES ($1, $2) ON CONFLICT (box_id) DO NOTHING", &[&batch.box_id, &batch.district]).await?;
    let new_epoch =
        tx.execute("INSERT INTO box_epochs (box_id, epoch) VALUES ($1, $2) ON CONFLICT (box_id, epoch) DO NOTHING", &[&batch.box_id, &batch.epoch]).await? > 0;
    let mut replaced_epochs = None;
    if new_epoch {
        // The newest epoch is the box's store now (batches of an older one still in the stream
        // are committed under theirs, and change nothing here).
        tx.execute("UPDATE boxes SET epoch = $2 WHERE box_id = $1", &[&batch.box_id, &batch.epoch]).await?;
        let others = tx.query("SELECT epoch FROM box_epochs WHERE box_id = $1 AND epoch <> $2 ORDER BY first_seen", &[&batch.box_id, &batch.epoch]).await?;
        if !others.is_empty() {
            replaced_epochs = Some(others.iter().map(|row| row.get(0)).collect());
        }
    }
    let inserted = match &batch.rows {
        Rows::Alert(rows) => {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let at: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
            let rule: Vec<&str> = rows.iter().map(|r| r.rule.as_str()).collect();
            let sensor: Vec<&str> = rows.iter().map(|r| r.sensor.as_str()).collect();
            let event: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
            let severity: Vec<&str> = rows.iter().map(|r| r.severity.as_str()).collect();
            let value: Vec<f64> = rows.iter().map(|r| r.value).collect();
            tx.execute(
                "INSERT INTO alert_events (box_id, epoch, id, at_ms, rule, sensor, event, severity, value)
                 SELECT $1, $9, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::DOUBLE PRECISION[])
                 ON CONFLICT (box_id, epoch, id) DO NOTHING",
                &[&batch.box_id, &ids, &at, &rule, &sensor, &event, &severity, &value, &batch.epoch],
            )
            .await?
        }
        Rows::Transition(rows) => {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let incident: Vec<i64> = rows.iter().map(|r| r.incident_id).collect();
            let at: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
            let actor: Vec<&str> = rows.iter().map(|r| r.actor.as_str()).collect();
            let action: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
            let note: Vec<Option<&str>> = rows.iter().map(|r| r.note.as_deref()).collect();
            let time_unknown: Vec<bool> = rows.iter().map(|r| r.time_unknown).collect();
            let inserted = tx
                .execute(
                    "INSERT INTO incident_transitions (box_id, epoch, id, incident_id, at_ms, actor, action, note, time_unknown)
                     SELECT $1, $8, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $9::BOOLEAN[])
                     ON CONFLICT (box_id, epoch, id) DO NOTHING",
                    &[&batch.box_id, &ids, &incident, &at, &actor, &action, &note, &batch.epoch, &time_unknown],
                )
                .await?;
            let rule: Vec<&str> = rows.iter().map(|r| r.rule.as_str()).collect();
            let sensor: Vec<&str> = rows.iter().map(|r| r.sensor.as_str()).collect();
            let severity: Vec<&str> = rows.iter().map(|r| r.severity.as_str()).collect();
            let state: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
            let device: Vec<bool> = rows.iter().map(|r| r.device).collect();
            let worst: Vec<&str> = rows.iter().map(|r| r.worst_severity.as_str()).collect();
            // The last row per incident carries the incident's state as the box last reported it.
            tx.execute(
                "INSERT INTO box_incidents (box_id, epoch, incident_id, rule, sensor, severity, state, device, worst_severity, last_transition)
                 SELECT DISTINCT ON (incident) $1, $8, incident, rule, sensor, severity, state, device, worst, id
                 FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $9::BOOLEAN[], $10::TEXT[]) AS t (id, incident, rule, sensor, severity, state, device, worst)
                 ORDER BY incident, id DESC
                 ON CONFLICT (box_id, epoch, incident_id) DO UPDATE SET severity = EXCLUDED.severity, state = EXCLUDED.state, device = EXCLUDED.device,
                    worst_severity = EXCLUDED.worst_severity, last_transition = EXCLUDED.last_transition
                 WHERE box_incidents.last_transition < EXCLUDED.last_transition",
                &[&batch.box_id, &ids, &incident, &rule, &sensor, &severity, &state, &batch.epoch, &device, &worst],
            )
            .await?;
            inserted
        }
        // Readings and trend hours go to the district's InfluxDB (`super::influx`), not here.
        Rows::Reading(_) | Rows::Trend(_) => 0,
    };
    tx.commit().await?;
    Ok(Committed { inserted, replaced_epochs })
}

/// A box as the hub knows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KnownBox {
    pub box_id: String,
    pub district: String,
    pub down: bool,
    /// When `down` last changed (or the box was first seen), in ms: the same for every hub
    /// until the flag changes, so a message posted again by another hub has the same key.
    pub down_since_ms: i64,
    /// Told that two boxes renew its lease in turns ([`super::shared_ids`]).
    pub id_shared: bool,
    /// When `id_shared` last changed (or the box was first seen), in ms.
    pub id_shared_since_ms: i64,
}

pub async fn boxes(client: &Client) -> anyhow::Result<Vec<KnownBox>> {
    let rows = client
        .query(
            "SELECT box_id, district, down, (extract(epoch FROM COALESCE(down_changed, first_seen)) * 1000)::BIGINT,
                    id_shared, (extract(epoch FROM COALESCE(id_shared_changed, first_seen)) * 1000)::BIGINT
             FROM boxes ORDER BY box_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| KnownBox {
            box_id: row.get(0),
            district: row.get(1),
            down: row.get(2),
            down_since_ms: row.get(3),
            id_shared: row.get(4),
            id_shared_since_ms: row.get(5),
        })
        .collect())
}

/// Records a box seen for the first time (by its lease).
pub async fn register_box(client: &Client, box_id: &str, district: &str) -> anyhow::Result<()> {
    client.execute("INSERT INTO boxes (box_id, district) VALUES ($1, $2) ON CONFLICT (box_id) DO NOTHING", &[&box_id, &district]).await?;
    Ok(())
}

/// Records `fence` as the newest fencing token; `false` when a hub with a newer one has
/// written here (this hub is no longer the active one).
pub async fn claim_fence(client: &Client, fence: i64) -> anyhow::Result<bool> {
    let claimed = client
        .execute(
            "INSERT INTO hub_fence (id, token) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token WHERE hub_fence.token <= EXCLUDED.token",
            &[&fence],
        )
        .await?;
    Ok(claimed > 0)
}

/// A flag of a box that the active hub sets after telling people, with the time it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFlag {
    /// Reported down (`box-down`).
    Down,
    /// Told that two boxes renew its lease (`box-id-shared`).
    IdShared,
}

/// Sets a box's `flag` under `fence`, with the time it changed in ms (PostgreSQL's clock, as
/// [`boxes`] lists it); `None` when a hub with a newer token has written (this hub is no longer
/// the active one) and nothing changed.
pub async fn set_flag(client: &Client, box_id: &str, flag: BoxFlag, value: bool, fence: i64) -> anyhow::Result<Option<i64>> {
    let (set, changed) = match flag {
        BoxFlag::Down => ("down = $2, down_changed = now()", "down_changed"),
        BoxFlag::IdShared => ("id_shared = $2, id_shared_changed = now()", "id_shared_changed"),
    };
    let row = client
        .query_opt(
            &format!(
                "WITH fence AS (INSERT INTO hub_fence (id, token) VALUES (1, $3) ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token \
                 WHERE hub_fence.token <= EXCLUDED.token RETURNING token) \
                 UPDATE boxes SET {set} WHERE box_id = $1 AND EXISTS (SELECT 1 FROM fence) \
                 RETURNING (extract(epoch FROM {changed}) * 1000)::BIGINT"
            ),
            &[&box_id, &value, &fence],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// An incident of a box not resolved or closed, as the box last reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenIncident {
    pub incident_id: i64,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub state: String,
}

/// The open incidents of the store the box sends from now (those of a store it replaced stay
/// in the tables, but no box will close them).
pub async fn open_incidents(client: &Client, box_id: &str) -> anyhow::Result<Vec<OpenIncident>> {
    let rows = client
        .query(
            "SELECT i.incident_id, i.rule, i.sensor, i.severity, i.state FROM box_incidents i JOIN boxes b ON b.box_id = i.box_id AND b.epoch = i.epoch
             WHERE i.box_id = $1 AND i.state NOT IN ('resolved', 'closed') ORDER BY i.incident_id",
            &[&box_id],
        )
        .await?;
    Ok(rows.iter().map(|row| OpenIncident { incident_id: row.get(0), rule: row.get(1), sensor: row.get(2), severity: row.get(3), state: row.get(4) }).collect())
}

/// The latest fired, changed or cleared event of each rule of each of `sensors` that a box
/// reported from its current store.
pub async fn latest_rule_events(client: &Client, box_id: &str, sensors: &[String]) -> anyhow::Result<Vec<crate::cluster::standby::ReportedEvent>> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (a.sensor, a.rule) a.sensor, a.rule, a.event, a.severity, a.value, a.at_ms
             FROM alert_events a JOIN boxes b ON b.box_id = a.box_id AND b.epoch = a.epoch
             WHERE a.box_id = $1 AND a.sensor = ANY($2) AND a.event IN ('fired', 'changed', 'cleared')
             ORDER BY a.sensor, a.rule, a.id DESC",
            &[&box_id, &sensors],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| crate::cluster::standby::ReportedEvent {
            sensor: row.get(0),
            rule: row.get(1),
            event: row.get(2),
            severity: row.get(3),
            value: row.get(4),
            at_ms: row.get(5),
        })
        .collect())
}

/// Whether an alert with this key was posted before (by this hub or another, in this outage or
/// an earlier one).
pub async fn standby_alert_posted(client: &Client, key: &str) -> anyhow::Result<bool> {
    Ok(client.query_opt("SELECT 1 FROM standby_alerts WHERE key = $1", &[&key]).await?.is_some())
}

/// Records an alert the standby evaluator posted, once per key; met again (re-stated in a later
/// outage, or judged again by the next active hub) it counts as posted now, so the board shows it
/// under that outage.
pub async fn record_standby_alert(client: &Client, box_id: &str, alert: &serde_json::Value) -> anyhow::Result<()> {
    let text = |field: &str| alert[field].as_str().unwrap_or_default().to_string();
    client
        .execute(
            "INSERT INTO standby_alerts (key, box_id, sensor, rule, event, severity, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO UPDATE SET posted = now()",
            &[&text("key"), &box_id, &text("sensor"), &text("rule"), &text("event"), &text("severity"), &alert["at_ms"].as_i64().unwrap_or_default()],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A hub's connections (and a standby's) all create the tables when they start; on an empty
    /// database at once, none may fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_connections_create_the_tables_at_once_on_an_empty_database() {
        let postgres = gridwatch_tests::Postgres::start().await.expect("PostgreSQL (package postgresql)");
        let conninfo = postgres.conninfo();
        let connects = (0..8).map(|_| {
            let conninfo = conninfo.clone();
            tokio::spawn(async move { super::connect(&conninfo).await.map(|_| ()).map_err(|error| format!("{error:#}")) })
        });
        let results: Vec<_> = futures::future::join_all(connects).await.into_iter().map(|joined| joined.expect("no panic")).collect();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    /// A hub connecting (again, or a standby taking over) to tables set up already takes no lock
    /// on them: another connection's open transaction on every table does not hold it up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_to_tables_set_up_waits_for_no_open_transaction() {
        let postgres = gridwatch_tests::Postgres::start().await.expect("PostgreSQL (package postgresql)");
        let conninfo = postgres.conninfo();
        let busy = super::connect(&conninfo).await.expect("the first connection sets the tables up");
        busy.batch_execute("BEGIN; LOCK TABLE boxes, box_incidents, incident_transitions IN ROW EXCLUSIVE MODE").await.expect("a batch's locks");
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), super::connect(&conninfo)).await;
        assert!(again.is_ok_and(|connected| connected.is_ok()), "held up by another connection's batch");
        busy.batch_execute("COMMIT").await.expect("the batch ends");
    }

    /// A district database set up before its version was kept is set up again (its columns
    /// added), and then marked with the version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_set_up_by_an_older_hub_is_set_up_again() {
        let postgres = gridwatch_tests::Postgres::start().await.expect("PostgreSQL (package postgresql)");
        let conninfo = postgres.conninfo();
        let client = super::connect(&conninfo).await.expect("set up");
        client.batch_execute("DROP TABLE district_schema; ALTER TABLE boxes DROP COLUMN id_shared").await.expect("an older hub's tables");
        let client = super::connect(&conninfo).await.expect("set up again");
        client.query("SELECT id_shared FROM boxes", &[]).await.expect("the column added again");
        assert_eq!(super::schema_version(&client).await.expect("read"), super::SCHEMA_VERSION);
    }
}
