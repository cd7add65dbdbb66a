//! The telemetry writer: spool -> InfluxDB 2 (`/api/v2/write`; points are encoded as line
//! protocol by InfluxData's `influxdb-line-protocol` builder, sent with our own HTTP client so
//! the answer's headers can be read),
//! in batches of up to `batch_size`, at most `drain_points_per_sec` while catching up so a long
//! backlog does not starve the box.
//!
//! Point layout: measurement = sensor kind (`tilt`, `water`); tags = sensor, site, building,
//! grid; one float field per reading field; timestamp = the sample time (ns). A point is
//! identified by measurement + tags + time, so a batch written twice (after a crash between the
//! write and the spool removal) overwrites itself instead of double-counting.
//!
//! Answers: 2xx — remove from the spool. 400/422 — split the batch to isolate the bad
//! points; a single refused point goes to `dead_letters` (counted). 413 — split the batch (a
//! proxy's body limit may be below a batch); a single point still "too large" is a proxy or
//! database that refuses everything: a configuration error like 401/403/404, never a dead
//! letter. 401/403/404 — keep everything, raise `influxdb_config_error`, retry every 30 s. 429/503 with `Retry-After`
//! (seconds or an HTTP date) — keep, wait that long (at most [`RETRY_AFTER_CAP`]). Other 5xx,
//! 429/503 without it, timeouts, connection errors — keep, back off (0.5 s doubling to 30 s).

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{InfluxConfig, SensorIndex};
use crate::metrics::Metrics;
use crate::store::{SpooledPoint, Store};
use anyhow::Context;
use influxdb_line_protocol::LineProtocolBuilder;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wait after InfluxDB refused our credentials or bucket.
const CONFIG_ERROR_RETRY: Duration = Duration::from_secs(30);

/// Longest wait a `Retry-After` header can ask for: a misconfigured proxy asking for a day must
/// not park the spool for a day.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// How one write attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Written,
    /// InfluxDB refuses these points as they are (400/422).
    Refused(String),
    /// The request body is too large for InfluxDB or a proxy in front of it (413).
    TooLarge(String),
    /// Credentials, organisation or bucket are wrong (401/403/404).
    ConfigError(String),
    /// Try again later (throttled, server error, timeout, unreachable), after the wait the
    /// server asked for, if it asked.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

#[derive(Debug)]
pub struct TelemetryWriter {
    http: reqwest::Client,
    /// `/api/v2/write` with org, bucket and precision in the query.
    write_url: reqwest::Url,
    /// `Token …`, or none for a database without authentication.
    authorization: Option<String>,
    batch_size: usize,
    flush_interval: Duration,
    drain_points_per_sec: u32,
    sensors: SensorIndex,
    store: Store,
    metrics: Arc<Metrics>,
    /// The daemon's clock, which stamped the spooled readings (their age is read on it).
    clock: Clock,
    /// InfluxDB answered the last write and nothing waits in the spool: readings can go to it
    /// straight from memory ([`TelemetryWriter::write_now`]) instead of through the disk.
    caught_up: std::sync::atomic::AtomicBool,
}

/// Longest a group of readings written straight to InfluxDB waits for its answer before it is
/// spooled instead (its acknowledgements, and so the broker's in-flight window, wait as long).
const WRITE_NOW_WAIT: Duration = Duration::from_secs(2);

impl TelemetryWriter {
    pub fn new(config: &InfluxConfig, sensors: SensorIndex, store: Store, metrics: Arc<Metrics>, clock: Clock) -> anyhow::Result<TelemetryWriter> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the InfluxDB client")?;
        Ok(TelemetryWriter {
            http,
            write_url: write_url(&config.url, &config.org, &config.bucket)?,
            authorization: (!config.token.is_empty()).then(|| format!("Token {}", config.token)),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            drain_points_per_sec: config.drain_points_per_sec,
            sensors,
            store,
            metrics,
            clock,
            caught_up: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether readings may go straight to InfluxDB now.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes readings straight from memory, in batches; returns how many of the first InfluxDB
    /// has committed. On any other answer (or none within [`WRITE_NOW_WAIT`]) nothing more goes
    /// this way until the spool is drained again, and the caller spools the rest (a point
    /// written twice overwrites itself).
    pub async fn write_now(&self, points: &[crate::store::NewPoint]) -> usize {
        let batch: Vec<SpooledPoint> =
            points.iter().map(|(sensor, ts, fields)| SpooledPoint { id: 0, sensor: sensor.to_string(), ts: *ts, fields: fields.clone() }).collect();
        let mut written = 0;
        for chunk in batch.chunks(self.batch_size.max(1)) {
            match tokio::time::timeout(WRITE_NOW_WAIT, self.write(chunk)).await {
                Ok(Outcome::Written) => {
                    self.metrics.telemetry_points_written.inc_by(chunk.len() as u64);
                    written += chunk.len();
                }
                _ => {
                    self.caught_up.store(false, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            }
        }
        written
    }

    /// Drains the spool until `stop`; what is left stays spooled for the next start.
    pub async fn run(self: Arc<Self>, written: Arc<Notify>, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut gauges_updated: Option<tokio::time::Instant> = None;
        loop {
            // Counting the spool is a scan: do it every few seconds, not per batch.
            if gauges_updated.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                self.update_gauges().await;
                gauges_updated = Some(tokio::time::Instant::now());
            }
            let batch = match self.store.spool_peek(self.batch_size).await {
                Ok(batch) => batch,
                Err(error) => {
                    // A stalled or failing card: logged at most once a minute, shown in /healthz.
                    self.store.report_failure("reading the spool", &error);
                    Vec::new()
                }
            };
            let pause = if batch.is_empty() {
                // Nothing waits on disk: what comes next can go straight to InfluxDB (until a
                // write fails, which spools it and clears this again).
                self.caught_up.store(true, std::sync::atomic::Ordering::Relaxed);
                self.flush_interval
            } else {
                let full = batch.len() == self.batch_size;
                let points = batch.len();
                match self.deliver(batch).await {
                    Ok(()) => {
                        backoff.reset();
                        // Catching up: keep to the drain rate. Otherwise wait for the next group.
                        if full {
                            Duration::from_secs_f64(points as f64 / f64::from(self.drain_points_per_sec.max(1)))
                        } else {
                            self.flush_interval
                        }
                    }
                    Err(delay) => {
                        self.caught_up.store(false, std::sync::atomic::Ordering::Relaxed);
                        delay.unwrap_or_else(|| backoff.next_delay())
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = written.notified(), if pause == self.flush_interval => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.update_gauges().await;
    }

    /// Writes a batch, splitting it to isolate refused points. `Err(delay)` means "keep the
    /// rest and try again", after `delay` if one is given.
    async fn deliver(&self, batch: Vec<SpooledPoint>) -> Result<(), Option<Duration>> {
        let mut work = vec![batch];
        while let Some(points) = work.pop() {
            match self.write(&points).await {
                Outcome::Written => {
                    self.metrics.influxdb_config_error.set(0);
                    self.metrics.influxdb_unreachable.set(0);
                    self.metrics.telemetry_points_written.inc_by(points.len() as u64);
                    if let Err(error) = self.store.spool_remove(points.iter().map(|p| p.id).collect()).await {
                        // They are written again (harmless: same time, same point).
                        self.store.report_failure("removing written points from the spool", &error);
                    }
                }
                Outcome::TooLarge(reason) if points.len() > 1 => {
                    let mut first = points;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                    tracing::debug!(reason = %reason, "request too large for InfluxDB or its proxy; splitting the batch");
                }
                Outcome::TooLarge(reason) => {
                    self.metrics.influxdb_config_error.set(1);
                    tracing::error!(reason = %reason, "InfluxDB or a proxy in front of it refuses even a single point as too large (HTTP 413): raise the proxy's body size limit; readings are kept in the spool until then");
                    return Err(Some(CONFIG_ERROR_RETRY));
                }
                Outcome::Refused(reason) if points.len() > 1 => {
                    let mut first = points;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                    tracing::debug!(reason = %reason, "InfluxDB refused a batch; splitting it");
                }
                Outcome::Refused(reason) => {
                    let point = points.into_iter().next().ok_or(None)?;
                    tracing::warn!(sensor = %point.sensor, ts = point.ts, reason = %reason, "InfluxDB refused a point; kept in dead_letters");
                    self.dead_letter(point, reason).await;
                }
                Outcome::ConfigError(reason) => {
                    self.metrics.influxdb_config_error.set(1);
                    tracing::error!(reason = %reason, "InfluxDB refuses our token, organisation or bucket: readings are kept in the spool until the configuration is fixed");
                    return Err(Some(CONFIG_ERROR_RETRY));
                }
                Outcome::Retry { reason, after } => {
                    self.metrics.influxdb_unreachable.set(1);
                    tracing::warn!(reason = %reason, retry_after_secs = after.map(|a| a.as_secs_f64()), "InfluxDB write failed; readings stay in the spool");
                    return Err(after);
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, point: SpooledPoint, reason: String) {
        if let Err(error) = self.store.dead_letter(point, reason).await {
            tracing::error!(error = %format!("{error:#}"), "dead letter not recorded");
        } else {
            self.metrics.telemetry_points_dead_lettered.inc();
        }
    }

    async fn write(&self, points: &[SpooledPoint]) -> Outcome {
        let mut body = Vec::with_capacity(points.len() * 96);
        for point in points {
            // A point we cannot even encode is refused by us, not by InfluxDB.
            if let Err(reason) = self.encode(point, &mut body) {
                return Outcome::Refused(reason);
            }
        }
        post(&self.http, &self.write_url, self.authorization.as_deref(), body).await
    }

    /// Appends `point` to `body` as one line of line protocol.
    fn encode(&self, point: &SpooledPoint, body: &mut Vec<u8>) -> Result<(), String> {
        let sensor = self.sensors.get(&point.sensor).ok_or_else(|| format!("sensor `{}` is no longer in the inventory", point.sensor))?;
        let tags = [
            ("sensor", Some(&*sensor.id)),
            ("site", Some(&*sensor.place.site)),
            ("building", sensor.place.building.as_deref()),
            ("grid", sensor.place.grid.as_deref()),
        ];
        encode_line(body, sensor.kind.as_str(), &tags, &point.fields, point.ts)
    }

    async fn update_gauges(&self) {
        match self.store.off_thread(Store::spool_stats).await {
            Ok(stats) => {
                self.metrics.spool_points.set(stats.points as i64);
                let age = stats.oldest_ts.map_or(0, |ts| (self.clock.now() - ts).max(0) / 1000);
                self.metrics.spool_oldest_age_seconds.set(age);
            }
            Err(error) => self.store.report_failure("reading spool statistics", &error),
        }
    }
}

/// `/api/v2/write` under `url` (`http://host/influx` is a prefix, like `http://host/influx/`),
/// with org, bucket and precision (ns) in the query.
pub(crate) fn write_url(url: &reqwest::Url, org: &str, bucket: &str) -> anyhow::Result<reqwest::Url> {
    let mut base = url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut write_url = base.join("api/v2/write").context("InfluxDB write address")?;
    write_url.query_pairs_mut().append_pair("org", org).append_pair("bucket", bucket).append_pair("precision", "ns");
    Ok(write_url)
}

/// Posts line protocol to InfluxDB's write API and reads its answer (also the district hub's
/// writes, `cluster::hub::influx`).
pub(crate) async fn post(http: &reqwest::Client, write_url: &reqwest::Url, authorization: Option<&str>, body: Vec<u8>) -> Outcome {
    let mut request = http.post(write_url.clone()).header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8").body(body);
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let response = match request.send().await {
        Err(error) => return Outcome::Retry { reason: error.to_string(), after: None },
        Ok(response) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Written;
    }
    let after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, Clock::System.now()));
    let text = response.text().await.unwrap_or_default();
    let reason = format!("HTTP {status}: {}", text.trim());
    match status.as_u16() {
        400 | 422 => Outcome::Refused(reason),
        413 => Outcome::TooLarge(reason),
        401 | 403 | 404 => Outcome::ConfigError(reason),
        429 | 503 => Outcome::Retry { reason, after },
        _ => Outcome::Retry { reason, after: None },
    }
}

/// Appends one line of line protocol to `body`: `measurement`, the tags that have a value, the
/// finite fields, the time (`ts_ms`, written in ns). A line break in a name or value, or no
/// finite field, is refused; the first tag (the sensor) must have a value.
pub(crate) fn encode_line(body: &mut Vec<u8>, measurement: &str, tags: &[(&str, Option<&str>)], fields: &[(String, f64)], ts_ms: i64) -> Result<(), String> {
    let mut fields = fields.iter().filter(|(_, value)| value.is_finite());
    // Line protocol has no escape for a line break: such a name would split the line.
    let texts = tags.iter().filter_map(|(_, value)| *value).chain(fields.clone().map(|(name, _)| name.as_str()));
    if let Some(text) = texts.into_iter().find(|text| text.contains(['\n', '\r'])) {
        return Err(format!("`{}` contains a line break", text.escape_debug()));
    }
    let Some((first_name, first_value)) = fields.next() else {
        return Err(format!("reading of `{}` at {} has no finite field", tags.first().and_then(|(_, sensor)| *sensor).unwrap_or("?"), ts_ms));
    };
    let Some((first_key, Some(first_tag))) = tags.first() else { return Err("a point needs its first tag (the sensor)".into()) };
    let mut line = LineProtocolBuilder::new_with(body).measurement(measurement).tag(first_key, first_tag);
    for (key, value) in &tags[1..] {
        if let Some(value) = value {
            line = line.tag(key, value);
        }
    }
    let mut line = line.field(first_name, *first_value);
    for (name, value) in fields {
        line = line.field(name, *value);
    }
    line.timestamp(ts_ms.saturating_mul(1_000_000)).close_line();
    Ok(())
}

/// The wait a `Retry-After` value asks for (delay-seconds or an HTTP date), capped at
/// [`RETRY_AFTER_CAP`]; `None` when it cannot be read. An HTTP date is the server's, so `now_ms`
/// is the system clock's, also in the demo.
fn retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let now = chrono::DateTime::from_timestamp_millis(now_ms)?;
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::sync::Mutex;

    /// An InfluxDB stand-in on loopback: refuses batches with a point tagged `sensor=bad`
    /// (400), refuses the token `wrong` (401), answers 413 to bodies of more than two lines
    /// and to everything with the token `proxy-refuses-all`, throttles batches with `sensor=throttled` (429,
    /// `Retry-After: 7`) and `sensor=busy` (503, no header), takes everything else (204) and
    /// records it.
    async fn influx() -> (String, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let app = axum::Router::new().route(
            "/api/v2/write",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    if headers.get("authorization").is_some_and(|v| v == "Token wrong") {
                        return (StatusCode::UNAUTHORIZED, HeaderMap::new(), "unauthorized".to_string());
                    }
                    // A proxy refusing every body, or bodies of more than two lines.
                    let too_large = headers.get("authorization").is_some_and(|v| v == "Token proxy-refuses-all") || body.lines().count() > 2;
                    if too_large {
                        return (StatusCode::PAYLOAD_TOO_LARGE, HeaderMap::new(), "<html>413 Request Entity Too Large</html>".to_string());
                    }
                    if body.contains("sensor=bad") {
                        return (StatusCode::BAD_REQUEST, HeaderMap::new(), "partial write: field type conflict".to_string());
                    }
                    if body.contains("sensor=throttled") {
                        let mut answer = HeaderMap::new();
                        answer.insert("retry-after", "7".parse().unwrap());
                        return (StatusCode::TOO_MANY_REQUESTS, answer, "slow down".to_string());
                    }
                    if body.contains("sensor=busy") {
                        return (StatusCode::SERVICE_UNAVAILABLE, HeaderMap::new(), "busy".to_string());
                    }
                    seen.lock().unwrap().extend(body.lines().map(str::to_string));
                    (StatusCode::NO_CONTENT, HeaderMap::new(), String::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, lines)
    }

    fn sensor(id: &str) -> crate::config::SensorConfig {
        crate::config::SensorConfig::test_tilt(id, "lane")
    }

    async fn writer(url: &str, token: &str, store: Store, metrics: Arc<Metrics>) -> TelemetryWriter {
        let config = InfluxConfig {
            url: url.parse().unwrap(),
            org: "o".into(),
            bucket: "b".into(),
            token: token.into(),
            batch_size: 100,
            flush_interval: Duration::from_millis(100),
            spool_max_points: 1000,
            drain_points_per_sec: 1000,
        };
        TelemetryWriter::new(
            &config,
            SensorIndex::new([sensor("house-01"), sensor("bad"), sensor("throttled"), sensor("busy")].into()),
            store,
            metrics,
            Clock::System,
        )
        .unwrap()
    }

    async fn spool(store: &Store, sensors: &[&str]) -> Vec<SpooledPoint> {
        let points = sensors.iter().enumerate().map(|(i, s)| ((*s).into(), 1_795_392_000_000 + i as i64, vec![("x".to_string(), i as f64)])).collect();
        store.spool_append(std::sync::Arc::new(points), 1000).await.unwrap();
        store.spool_peek(100).await.unwrap()
    }

    #[tokio::test]
    async fn a_refused_point_is_isolated_and_dead_lettered_and_the_rest_written() {
        let (url, lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let w = writer(&url, "", store.clone(), metrics.clone()).await;
        let batch = spool(&store, &["house-01", "house-01", "bad", "house-01", "house-01"]).await;
        assert_eq!(w.deliver(batch).await, Ok(()));
        assert_eq!(lines.lock().unwrap().len(), 4);
        assert_eq!(store.dead_letter_count().unwrap(), 1);
        assert_eq!(store.spool_stats().unwrap().points, 0);
        assert_eq!((metrics.telemetry_points_written.get(), metrics.telemetry_points_dead_lettered.get()), (4, 1));
    }

    #[tokio::test]
    async fn a_batch_too_large_for_the_proxy_is_split_and_written_whole() {
        let (url, lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let w = writer(&url, "", store.clone(), metrics.clone()).await;
        let batch = spool(&store, &["house-01"; 7]).await;
        assert_eq!(w.deliver(batch).await, Ok(()));
        assert_eq!(lines.lock().unwrap().len(), 7, "every point written in smaller requests");
        assert_eq!((store.dead_letter_count().unwrap(), metrics.influxdb_config_error.get()), (0, 0));
    }

    #[tokio::test]
    async fn a_proxy_answering_413_to_everything_keeps_every_point() {
        let (url, lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let w = writer(&url, "proxy-refuses-all", store.clone(), metrics.clone()).await;
        let batch = spool(&store, &["house-01"; 9]).await;
        assert_eq!(w.deliver(batch).await, Err(Some(CONFIG_ERROR_RETRY)));
        assert!(lines.lock().unwrap().is_empty());
        assert_eq!(store.dead_letter_count().unwrap(), 0, "a blanket 413 is not the points' fault");
        assert_eq!(store.spool_stats().unwrap().points, 9, "nothing dropped");
        assert_eq!((metrics.influxdb_config_error.get(), metrics.telemetry_points_dead_lettered.get()), (1, 0));
    }

    #[tokio::test]
    async fn a_wrong_token_keeps_the_data_and_raises_the_config_alarm() {
        let (url, lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let w = writer(&url, "wrong", store.clone(), metrics.clone()).await;
        let batch = spool(&store, &["house-01", "house-01"]).await;
        assert_eq!(w.deliver(batch).await, Err(Some(CONFIG_ERROR_RETRY)));
        assert!(lines.lock().unwrap().is_empty());
        assert_eq!(store.spool_stats().unwrap().points, 2, "nothing dropped on a configuration error");
        assert_eq!(metrics.influxdb_config_error.get(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_database_keeps_the_data_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let w = writer(&format!("http://127.0.0.1:{port}"), "", store.clone(), Arc::new(Metrics::new())).await;
        let batch = spool(&store, &["house-01"]).await;
        assert_eq!(w.deliver(batch).await, Err(None));
        assert_eq!(store.spool_stats().unwrap().points, 1);
    }

    #[tokio::test]
    async fn a_throttled_write_waits_as_long_as_the_database_asks() {
        let (url, lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let w = writer(&url, "", store.clone(), metrics.clone()).await;
        let batch = spool(&store, &["house-01", "throttled"]).await;
        assert_eq!(w.deliver(batch).await, Err(Some(Duration::from_secs(7))));
        assert!(lines.lock().unwrap().is_empty());
        assert_eq!(store.spool_stats().unwrap().points, 2, "a throttled batch is kept");
        assert_eq!(metrics.influxdb_unreachable.get(), 1);
    }

    #[tokio::test]
    async fn a_busy_database_without_retry_after_gets_the_backoff() {
        let (url, _lines) = influx().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = writer(&url, "", store.clone(), Arc::new(Metrics::new())).await;
        let batch = spool(&store, &["busy"]).await;
        assert_eq!(w.deliver(batch).await, Err(None));
        assert_eq!(store.spool_stats().unwrap().points, 1);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z").unwrap().timestamp_millis();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Mon, 23 Nov 2026 08:00:45 GMT", now), Some(Duration::from_secs(45)));
        assert_eq!(retry_after("Mon, 23 Nov 2026 07:00:00 GMT", now), Some(Duration::ZERO), "a date in the past means now");
        assert_eq!(retry_after("86400", now), Some(RETRY_AFTER_CAP));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[tokio::test]
    async fn points_are_escaped_and_skip_values_that_are_not_finite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut house = crate::config::SensorConfig::test_tilt("house 01", "north lane,east");
        std::sync::Arc::make_mut(&mut house.place).building = Some("B7".into());
        let config = InfluxConfig {
            url: "http://127.0.0.1:9".parse().unwrap(),
            org: "o".into(),
            bucket: "b".into(),
            token: String::new(),
            batch_size: 100,
            flush_interval: Duration::from_millis(100),
            spool_max_points: 1000,
            drain_points_per_sec: 1000,
        };
        let w = TelemetryWriter::new(&config, SensorIndex::new([house].into()), store, Arc::new(Metrics::new()), Clock::System).unwrap();
        let point = |fields: Vec<(&str, f64)>| SpooledPoint {
            id: 1,
            sensor: "house 01".into(),
            ts: 1_795_392_000_000,
            fields: fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        };
        let mut body = Vec::new();
        w.encode(&point(vec![("x=deg", 0.25), ("y", f64::NAN), ("t", -3.0)]), &mut body).unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), "tilt,sensor=house\\ 01,site=north\\ lane\\,east,building=B7 x\\=deg=0.25,t=-3 1795392000000000000\n");
        let mut body = Vec::new();
        assert!(w.encode(&point(vec![("y", f64::INFINITY)]), &mut body).unwrap_err().contains("no finite field"));
        assert!(w.encode(&point(vec![("x\ny", 1.0)]), &mut body).unwrap_err().contains("line break"));
        assert!(body.is_empty(), "a refused point writes nothing");
    }
}
