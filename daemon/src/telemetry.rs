//! The telemetry writer: samples -> InfluxDB 2 (`/api/v2/write`, through the `influxdb2` crate)
//! in batches of up to `batch_size` points or every `flush_interval`, whichever comes first.
//!
//! Point layout: measurement = sensor kind (`tilt`, `water`); tags = sensor, site, building,
//! grid; one float field per reading field; timestamp = the sample time (ns precision).
//! A failed batch is retried with backoff (3 attempts), then dropped and counted
//! (`telemetry_points_dropped{reason="write_failed"}`); the durable spool comes later.

use crate::backoff::Backoff;
use crate::config::{InfluxConfig, SensorConfig};
use crate::metrics::Metrics;
use crate::sample::Sample;
use anyhow::Context;
use influxdb2::models::DataPoint;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const ATTEMPTS: u32 = 3;

#[derive(Debug)]
pub struct TelemetryWriter {
    client: influxdb2::Client,
    bucket: String,
    batch_size: usize,
    flush_interval: Duration,
    sensors: Arc<[SensorConfig]>,
    metrics: Arc<Metrics>,
}

impl TelemetryWriter {
    pub fn new(config: &InfluxConfig, sensors: Arc<[SensorConfig]>, metrics: Arc<Metrics>) -> anyhow::Result<TelemetryWriter> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let client = influxdb2::ClientBuilder::with_builder(http, config.url.as_str(), &config.org, &config.token)
            .build()
            .context("building the InfluxDB client")?;
        Ok(TelemetryWriter {
            client,
            bucket: config.bucket.clone(),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            sensors,
            metrics,
        })
    }

    /// Writes until `samples` is closed, then flushes what is left.
    pub async fn run(self, mut samples: mpsc::Receiver<Sample>) {
        let mut batch: Vec<DataPoint> = Vec::with_capacity(self.batch_size);
        let mut deadline: Option<Instant> = None;
        loop {
            let flush_at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                sample = samples.recv() => match sample {
                    Some(sample) => {
                        if let Some(point) = self.point(&sample) {
                            batch.push(point);
                            deadline.get_or_insert_with(|| Instant::now() + self.flush_interval);
                        }
                        if batch.len() >= self.batch_size {
                            self.write(std::mem::take(&mut batch)).await;
                            deadline = None;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(flush_at), if deadline.is_some() => {
                    self.write(std::mem::take(&mut batch)).await;
                    deadline = None;
                }
            }
        }
        if !batch.is_empty() {
            self.write(batch).await;
        }
    }

    fn point(&self, sample: &Sample) -> Option<DataPoint> {
        let sensor = self.sensors.get(sample.sensor)?;
        let mut builder = DataPoint::builder(sensor.kind.as_str()).tag("sensor", &sensor.id).tag("site", &sensor.site);
        if let Some(building) = &sensor.building {
            builder = builder.tag("building", building);
        }
        if let Some(grid) = &sensor.grid {
            builder = builder.tag("grid", grid);
        }
        for (name, value) in sample.fields.iter().filter(|(_, v)| v.is_finite()) {
            builder = builder.field(name.as_str(), *value);
        }
        match builder.timestamp(sample.ts.saturating_mul(1_000_000)).build() {
            Ok(point) => Some(point),
            Err(error) => {
                self.metrics.drop_telemetry("invalid_point", 1);
                tracing::warn!(sensor = %sensor.id, error = %error, "sample cannot be written as a point");
                None
            }
        }
    }

    async fn write(&self, batch: Vec<DataPoint>) {
        let points = batch.len() as u64;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        for attempt in 1..=ATTEMPTS {
            match self.client.write(&self.bucket, futures::stream::iter(batch.clone())).await {
                Ok(()) => {
                    self.metrics.telemetry_points_written.inc_by(points);
                    return;
                }
                Err(error) if attempt == ATTEMPTS => {
                    self.metrics.drop_telemetry("write_failed", points);
                    tracing::error!(points, error = %error, "telemetry batch dropped after {ATTEMPTS} attempts");
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(points, attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "telemetry write failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
