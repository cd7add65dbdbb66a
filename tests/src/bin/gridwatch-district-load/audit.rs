//! What a failure scenario lost or doubled, counted after the run from the real stores:
//!
//! - **readings**: every sensor's `n` (its sequence number, 0 up) in the district's InfluxDB
//!   (VictoriaMetrics' raw export: a sample written twice shows twice), against what the
//!   publisher sent;
//! - **alert events and transitions**: each box's rows in PostgreSQL — their ids count from 1
//!   within the box's store, so a missing row is a gap below the highest id — and the box's own
//!   count of rule events;
//! - **the uplink stream**: every message in `GRIDWATCH_UPLINK` read back, its `Nats-Msg-Id`
//!   and its rows (box, kind, id): a message stored twice, and a row carried by more than one
//!   message;
//! - the `box-down` messages the hub posted.

use crate::district::{metric_sum, District};
use crate::faults::STREAM;
use crate::traffic::Sent;
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Readings of one run, over every box.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Readings published / acknowledged by the boxes' brokers (QoS 1).
    pub published: u64,
    pub acked: u64,
    /// Sensor/`n` pairs sent that the district's InfluxDB does not hold.
    pub lost: u64,
    /// Samples beyond the first of a sensor/`n` pair at another time: two points in InfluxDB.
    pub duplicates: u64,
    /// The same point (sensor, `n`, time) written again: InfluxDB keeps it once (a write of
    /// the same series and time replaces the point); VictoriaMetrics' raw export shows each.
    pub rewritten: u64,
    /// Samples whose `n` was never sent (should be 0).
    pub unknown: u64,
    /// Readings the boxes did not offer the uplink whole (`thinned`, `backlog_full`,
    /// `queue_full`, `not_stored`): not losses of the district, choices of the box.
    pub not_kept: f64,
}

/// Counts every box's readings in the district's InfluxDB against what was sent.
pub async fn readings(district: &District, sent: &[Sent]) -> anyhow::Result<Readings> {
    let http = reqwest::Client::new();
    let vm = district.influx.as_ref().context("no district InfluxDB in this run")?;
    let mut counted = Readings::default();
    for (community, sent) in district.boxes.iter().zip(sent) {
        counted.published += sent.published;
        counted.acked += sent.acked;
        for result in ["thinned", "backlog_full", "queue_full", "not_stored"] {
            counted.not_kept +=
                metric_sum(&http, &community.metrics_url, &format!("gridwatch_uplink_readings_total{{result=\"{result}\"}}")).await.unwrap_or(0.0);
        }
        let series = vm.export(&format!(r#"{{__name__="water_n",box="{}"}}"#, community.id)).await?;
        // Per sensor: (n, time) of every sample.
        let mut seen: HashMap<usize, Vec<(u64, i64)>> = HashMap::new();
        for one in series {
            let sensor = one["metric"]["sensor"].as_str().and_then(|s| s.strip_prefix('p')).and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
            let values = one["values"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).map(|v| v as u64);
            let times = one["timestamps"].as_array().into_iter().flatten().map(|t| t.as_i64().unwrap_or(-1));
            seen.entry(sensor).or_default().extend(values.zip(times));
        }
        for (sensor, &count) in sent.per_sensor.iter().enumerate() {
            let mut times: Vec<Vec<i64>> = vec![Vec::new(); count as usize];
            for &(n, at) in seen.get(&sensor).map(Vec::as_slice).unwrap_or_default() {
                match times.get_mut(n as usize) {
                    Some(t) => t.push(at),
                    None => counted.unknown += 1,
                }
            }
            for mut at in times {
                let samples = at.len() as u64;
                at.sort_unstable();
                at.dedup();
                let points = at.len() as u64;
                counted.lost += u64::from(points == 0);
                counted.duplicates += points.saturating_sub(1);
                counted.rewritten += samples - points;
            }
        }
        let known: usize = sent.per_sensor.len();
        counted.unknown += seen.iter().filter(|(sensor, _)| **sensor >= known).map(|(_, v)| v.len() as u64).sum::<u64>();
    }
    Ok(counted)
}

/// Alert events and incident transitions of one run, over every box.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rows {
    /// Rule events the boxes produced (`gridwatch_rule_events_total`).
    pub alerts_at_boxes: u64,
    pub alerts_in_postgres: u64,
    /// Alert-event ids below a box's highest in PostgreSQL that it does not hold.
    pub alert_gaps: u64,
    pub transitions_in_postgres: u64,
    pub transition_gaps: u64,
}

impl Rows {
    /// Alert events the boxes produced that PostgreSQL does not hold.
    pub fn alerts_lost(&self) -> u64 {
        self.alert_gaps.max(self.alerts_at_boxes.saturating_sub(self.alerts_in_postgres))
    }
}

pub async fn rows(district: &District) -> anyhow::Result<Rows> {
    let http = reqwest::Client::new();
    let db = connect(district).await?;
    let mut counted = Rows::default();
    for community in &district.boxes {
        counted.alerts_at_boxes += metric_sum(&http, &community.metrics_url, "gridwatch_rule_events_total").await.unwrap_or(0.0) as u64;
        for (table, total, gaps) in [
            ("alert_events", &mut counted.alerts_in_postgres, &mut counted.alert_gaps),
            ("incident_transitions", &mut counted.transitions_in_postgres, &mut counted.transition_gaps),
        ] {
            let row = db
                .query_one(&format!("SELECT count(DISTINCT id), coalesce(max(id), 0) FROM {table} WHERE box_id = $1"), &[&community.id])
                .await
                .with_context(|| format!("counting {table}"))?;
            let (count, max): (i64, i64) = (row.get(0), row.get(1));
            *total += count as u64;
            *gaps += (max - count).max(0) as u64;
        }
    }
    Ok(counted)
}

/// The hub's PostgreSQL.
pub async fn connect(district: &District) -> anyhow::Result<tokio_postgres::Client> {
    let (db, connection) = tokio_postgres::connect(&district.postgres.conninfo(), tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(db)
}

/// How long after `back_ms` the alert events a box raised in `[cut_ms, back_ms]` reached
/// PostgreSQL (the hub's inserting transaction): how many, and the last one's delay in ms.
pub async fn alerts_after_return(db: &tokio_postgres::Client, box_id: &str, cut_ms: i64, back_ms: i64) -> anyhow::Result<(i64, Option<f64>)> {
    let row = db
        .query_one(
            "SELECT count(*), max(EXTRACT(EPOCH FROM received) * 1000)::float8 FROM alert_events WHERE box_id = $1 AND at_ms BETWEEN $2 AND $3",
            &[&box_id, &cut_ms, &back_ms],
        )
        .await
        .context("reading the alert events of a cut")?;
    let (count, last): (i64, Option<f64>) = (row.get(0), row.get(1));
    Ok((count, last.map(|last| last - back_ms as f64)))
}

/// The uplink stream read back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    pub messages: u64,
    /// Messages whose `Nats-Msg-Id` an earlier message already had.
    pub duplicate_messages: u64,
    /// Rows (box, kind, id) carried by an earlier message already.
    pub duplicate_rows: u64,
    /// Sequences that could not be read (deleted or a timeout).
    pub unreadable: u64,
}

/// Reads every message of the uplink stream (through the first node).
pub async fn stream(district: &District) -> anyhow::Result<Stream> {
    let client = async_nats::connect(district.nats.urls()).await.context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.context("the uplink stream")?;
    let state = stream.info().await.context("the uplink stream's info")?.state.clone();
    let mut counted = Stream::default();
    let mut ids = HashSet::new();
    let mut rows: HashSet<(String, String, i64)> = HashSet::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), stream.get_raw_message(sequence)).await else {
            counted.unreadable += 1;
            continue;
        };
        counted.messages += 1;
        if let Some(id) = message.headers.get("Nats-Msg-Id") {
            if !ids.insert(id.as_str().to_string()) {
                counted.duplicate_messages += 1;
            }
        }
        // Boxes deflate their larger batches (`Content-Encoding: deflate`).
        let deflated = message.headers.get("Content-Encoding").is_some_and(|encoding| encoding.as_str() == "deflate");
        let mut json = Vec::new();
        let payload = if deflated && std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&message.payload[..]), &mut json).is_ok() {
            &json[..]
        } else {
            &message.payload[..]
        };
        let batch: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let (box_id, kind) = (batch["box_id"].as_str().unwrap_or("?").to_string(), batch["kind"].as_str().unwrap_or("?").to_string());
        for row in batch["rows"].as_array().into_iter().flatten() {
            if !rows.insert((box_id.clone(), kind.clone(), row["id"].as_i64().unwrap_or(-1))) {
                counted.duplicate_rows += 1;
            }
        }
    }
    Ok(counted)
}

/// `box-down` messages posted: (raised, cleared).
pub fn box_down(district: &District) -> (usize, usize) {
    let bodies = district.webhook.bodies();
    let count = |event: &str| bodies.iter().filter(|b| b["kind"] == "box-down" && b["event"] == event).count();
    (count("raised"), count("cleared"))
}
