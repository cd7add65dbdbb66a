//! The district's InfluxDB (`--influx`): where the hub writes the readings boxes send up, with
//! the box's own line protocol and HTTP answers (`telemetry::writer`), one more tag — `box` —
//! and the sensor's place as the box named it in the batch. A closed hour of a sensor's trend
//! is one point per field in the measurement `<sensor kind>_hourly` (`water_hourly`), with the
//! readings' tags, fields `<field>_min`, `_max`, `_mean`, `_count`, at the hour's start.
//!
//! Invariant: a batch's readings are all written (or refused for good, counted) before the hub
//! moves the box's mark; anything else (unreachable, 5xx, wrong token or bucket) is an error
//! and the batch is delivered again. A point written twice (a hub crash between the write and
//! the mark) overwrites itself: same measurement, tags and time.

use crate::cluster::wire::{Batch, Rows};
use crate::store::UplinkTrend;
use crate::telemetry::writer::{encode_line, post, write_url, Outcome};
use anyhow::Context;
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;

/// One trend hour's fields: `<field>_min`, `_max`, `_mean` and `_count` (a float, as InfluxDB
/// takes every field of a reading; an hour without readings has no mean).
fn hourly_fields(hour: &UplinkTrend) -> [(String, f64); 4] {
    let mean = if hour.count > 0 { hour.sum / f64::from(hour.count) } else { f64::NAN };
    let name = &hour.field;
    [(format!("{name}_min"), hour.min), (format!("{name}_max"), hour.max), (format!("{name}_mean"), mean), (format!("{name}_count"), f64::from(hour.count))]
}

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

/// What became of a batch's readings or trend hours.
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

    /// Writes the readings or trend hours of `batch` with ids above `after` (those at or below
    /// the box's mark are in InfluxDB already). Refused lines are written one by one to find
    /// them.
    pub async fn write(&self, batch: &Batch, after: i64) -> anyhow::Result<Written> {
        let mut outcome = Written::default();
        let mut lines = Vec::new();
        // `suffix` after the sensor kind names the measurement: none for readings.
        let mut add = |sensor: &str, suffix: &str, fields: &[(String, f64)], ts_ms: i64| {
            let place = batch.places.get(sensor);
            let tags = [
                ("sensor", Some(sensor)),
                ("box", Some(batch.box_id.as_str())),
                ("site", place.map(|p| p.site.as_str())),
                ("building", place.and_then(|p| p.building.as_deref())),
                ("grid", place.and_then(|p| p.grid.as_deref())),
            ];
            // A sensor the box no longer has in its inventory: its readings still count.
            let measurement = format!("{}{suffix}", place.map_or("reading", |p| p.kind.as_str()));
            let mut line = Vec::new();
            match encode_line(&mut line, &measurement, &tags, fields, ts_ms) {
                Ok(()) => lines.push(line),
                Err(reason) => {
                    tracing::warn!(box_id = %batch.box_id, sensor = %sensor, reason = %reason, "a district reading or trend hour cannot be written");
                    outcome.refused += 1;
                }
            }
        };
        match &batch.rows {
            Rows::Reading(rows) => {
                for reading in rows.iter().filter(|r| r.id > after) {
                    add(&reading.sensor, "", &reading.fields, reading.ts);
                }
            }
            Rows::Trend(rows) => {
                for hour in rows.iter().filter(|r| r.id > after) {
                    add(&hour.sensor, "_hourly", &hourly_fields(hour), hour.hour.saturating_mul(HOUR_MS));
                }
            }
            Rows::Alert(_) | Rows::Transition(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_hour_is_its_min_max_mean_and_count() {
        let hour = UplinkTrend { id: 1, sensor: "s".into(), field: "level".into(), hour: 10, min: 1.0, max: 4.0, sum: 10.0, count: 4 };
        let expected = [("level_min", 1.0), ("level_max", 4.0), ("level_mean", 2.5), ("level_count", 4.0)].map(|(name, value)| (name.to_string(), value));
        assert_eq!(hourly_fields(&hour), expected);
        let empty = UplinkTrend { count: 0, ..hour };
        assert!(hourly_fields(&empty)[2].1.is_nan(), "no mean of nothing: the field is left out of the line");
    }
}
