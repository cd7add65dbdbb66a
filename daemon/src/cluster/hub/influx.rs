//! The district's InfluxDB (`--influx`): where the hub writes the readings boxes send up, with
//! the box's own line protocol and HTTP answers (`telemetry::writer`), one more tag — `box` —
//! and the sensor's place as the box named it in the batch.
//!
//! Invariant: a batch's readings are all written (or refused for good, counted) before the hub
//! moves the box's mark; anything else (unreachable, 5xx, wrong token or bucket) is an error
//! and the batch is delivered again. A point written twice (a hub crash between the write and
//! the mark) overwrites itself: same measurement, tags and time.

use crate::cluster::wire::{Batch, Rows};
use crate::telemetry::writer::{encode_line, post, write_url, Outcome};
use anyhow::Context;
use std::time::Duration;

/// Where the hub writes readings (`--influx`, `--influx-org`, `--influx-bucket`, the token from
/// `GRIDWATCH_HUB_INFLUX_TOKEN`).
#[derive(Debug, Clone)]
pub struct InfluxTarget {
    /// `http://host:8086` (a path is a prefix).
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// Empty: a database without authentication.
    pub token: String,
}

#[derive(Debug)]
pub struct DistrictInflux {
    http: reqwest::Client,
    write_url: reqwest::Url,
    authorization: Option<String>,
}

/// What became of a batch's readings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: u64,
    /// Refused for good by InfluxDB, or not encodable (no finite field, a line break).
    pub refused: u64,
}

impl DistrictInflux {
    pub fn new(target: &InfluxTarget) -> anyhow::Result<DistrictInflux> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the InfluxDB client")?;
        let authorization = (!target.token.is_empty()).then(|| format!("Token {}", target.token));
        let url: reqwest::Url = target.url.parse().with_context(|| format!("--influx `{}`: not a URL", target.url))?;
        Ok(DistrictInflux { http, write_url: write_url(&url, &target.org, &target.bucket)?, authorization })
    }

    /// Writes the readings of `batch` with ids above `after` (those at or below the box's
    /// mark are in InfluxDB already). Refused lines are written one by one to find them.
    pub async fn write(&self, batch: &Batch, after: i64) -> anyhow::Result<Written> {
        let Rows::Reading(rows) = &batch.rows else { return Ok(Written::default()) };
        let mut lines = Vec::new();
        let mut outcome = Written::default();
        for reading in rows.iter().filter(|r| r.id > after) {
            let place = batch.places.get(&reading.sensor);
            let tags = [
                ("sensor", Some(reading.sensor.as_str())),
                ("box", Some(batch.box_id.as_str())),
                ("site", place.map(|p| p.site.as_str())),
                ("building", place.and_then(|p| p.building.as_deref())),
                ("grid", place.and_then(|p| p.grid.as_deref())),
            ];
            // A sensor the box no longer has in its inventory: its readings still count.
            let measurement = place.map_or("reading", |p| p.kind.as_str());
            let mut line = Vec::new();
            match encode_line(&mut line, measurement, &tags, &reading.fields, reading.ts) {
                Ok(()) => lines.push(line),
                Err(reason) => {
                    tracing::warn!(box_id = %batch.box_id, sensor = %reading.sensor, reason = %reason, "a district reading cannot be written");
                    outcome.refused += 1;
                }
            }
        }
        if lines.is_empty() {
            return Ok(outcome);
        }
        match self.post(lines.concat()).await? {
            true => outcome.written += lines.len() as u64,
            false => {
                for line in lines {
                    if self.post(line).await? {
                        outcome.written += 1;
                    } else {
                        outcome.refused += 1;
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// `true`: written; `false`: refused for good (400/422/413); an error: try again later.
    async fn post(&self, body: Vec<u8>) -> anyhow::Result<bool> {
        match post(&self.http, &self.write_url, self.authorization.as_deref(), body).await {
            Outcome::Written => Ok(true),
            Outcome::Refused(reason) | Outcome::TooLarge(reason) => {
                tracing::debug!(reason = %reason, "the district's InfluxDB refused readings");
                Ok(false)
            }
            Outcome::ConfigError(reason) => anyhow::bail!("the district's InfluxDB refuses the hub's token, organisation or bucket: {reason}"),
            Outcome::Retry { reason, .. } => anyhow::bail!("the district's InfluxDB did not take readings: {reason}"),
        }
    }
}
