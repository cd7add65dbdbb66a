//! The installer's view of a running daemon, on the local HTTP endpoint (loopback by default):
//!
//! - `GET /api/sensors`: every sensor's latest reading and its age;
//! - `GET /api/status`: version, sources, open incidents by severity, spool size;
//! - `POST /api/calibrate` `{"sensor": "house-07", "window_secs": 1800, "by": "Li"}`: the
//!   median of the tilt box's recent angles becomes its installation baseline (answers with old
//!   and new).
//!
//! `gridwatch status | watch | calibrate` are clients of these.

use super::WebState;
use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::live::LiveTable;
use crate::pipeline::Command;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridwatch_rules::SensorKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the installer endpoints need from the running daemon.
#[derive(Debug, Clone)]
pub struct InstallerApi {
    pub live: Arc<LiveTable>,
    pub commands: mpsc::Sender<Command>,
    pub sensors: Arc<[SensorConfig]>,
    pub clock: Clock,
    /// When the daemon started, on its elapsed time (a sensor not heard since is silent only
    /// after its grace).
    pub started_ms: i64,
    /// Sensors whose clocks are off (refused as ahead, or re-anchored), for `/healthz`.
    pub clocks: Arc<crate::sensor_clocks::SensorClocks>,
}

/// How many report intervals a sensor may miss before the box calls it silent.
const SILENT_AFTER_INTERVALS: i64 = 3;

impl InstallerApi {
    /// Sensors that have sent nothing for more than three report intervals (counting from the
    /// start for those not heard since).
    pub fn silent_sensors(&self) -> Vec<String> {
        // On elapsed time: a box clock not set yet (or a device's own clock) says nothing here.
        let now = self.clock.elapsed_ms();
        self.sensors
            .iter()
            .zip(self.live.latest())
            .filter(|(sensor, latest)| {
                let limit = i64::try_from(sensor.interval.as_millis()).unwrap_or(i64::MAX / 4).saturating_mul(SILENT_AFTER_INTERVALS);
                now - latest.heard_ms.unwrap_or(self.started_ms) > limit
            })
            .map(|(sensor, _)| sensor.id.to_string())
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SensorView {
    pub id: String,
    pub kind: String,
    pub site: String,
    pub building: Option<String>,
    pub grid: Option<String>,
    pub at_ms: Option<i64>,
    /// Seconds since the latest reading.
    pub age_secs: Option<i64>,
    pub fields: Vec<(String, f64)>,
    /// Open incidents of the sensor: (rule, severity, state).
    #[serde(default)]
    pub incidents: Vec<(String, String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub sensors: usize,
    pub sensors_reporting: usize,
    pub mqtt_connected: bool,
    pub samples_accepted: u64,
    pub open_incidents: Vec<(String, usize)>,
    pub spool_points: i64,
    pub degraded: Vec<String>,
    /// Sensors silent for more than three report intervals.
    pub silent: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CalibrateRequest {
    pub sensor: String,
    pub window_secs: u64,
    pub by: String,
    /// Zero the box although an alarm on it (or its building) is still firing: it was moved
    /// itself (re-seated after a knock), and the house was checked on site.
    #[serde(default)]
    pub even_in_alarm: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CalibrateAnswer {
    pub sensor: String,
    pub readings: usize,
    /// (field, previous calibrated value, new value)
    pub fields: Vec<(String, Option<f64>, f64)>,
}

pub async fn sensors(State(state): State<WebState>) -> Response {
    let Some(api) = state.installer.as_ref() else { return StatusCode::NOT_FOUND.into_response() };
    let now = api.clock.now();
    let open = state.store.incidents(false).unwrap_or_default();
    let views: Vec<SensorView> = api
        .sensors
        .iter()
        .zip(api.live.latest())
        .map(|(sensor, latest)| SensorView {
            id: sensor.id.to_string(),
            kind: sensor.kind.as_str().into(),
            site: sensor.place.site.to_string(),
            building: sensor.place.building.as_deref().map(Into::into),
            grid: sensor.place.grid.as_deref().map(Into::into),
            at_ms: latest.at_ms,
            age_secs: latest.at_ms.map(|at| (now - at).max(0) / 1000),
            fields: latest.fields,
            incidents: open.iter().filter(|r| *r.sensor == *sensor.id).map(|r| (r.rule.clone(), r.severity.clone(), r.state.clone())).collect(),
        })
        .collect();
    Json(views).into_response()
}

pub async fn status(State(state): State<WebState>) -> Response {
    let Some(api) = state.installer.as_ref() else { return StatusCode::NOT_FOUND.into_response() };
    let open = state.store.open_incident_counts().unwrap_or_default();
    let latest = api.live.latest();
    let silent = api.silent_sensors();
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        sensors: api.sensors.len(),
        // Heard and not silent now (a box silent for hours is not "reporting").
        sensors_reporting: latest.iter().zip(api.sensors.iter()).filter(|(l, sensor)| l.at_ms.is_some() && !silent.iter().any(|id| **id == *sensor.id)).count(),
        mqtt_connected: state.metrics.mqtt_connected.get() == 1,
        samples_accepted: state.metrics.samples_accepted.get(),
        open_incidents: open,
        spool_points: state.metrics.spool_points.get(),
        degraded: super::health_reasons(&state),
        silent,
    })
    .into_response()
}

/// The grid-facing incidents still firing on `sensor` or another box of its building, as
/// "#4 tilt-sudden (danger)": zeroing the box would take their lean as its new zero. Device
/// faults do not count (a box re-seated after `tilt-box-moved` is zeroed again on purpose).
fn firing_on(store: &crate::store::Store, sensor: &SensorConfig) -> Vec<String> {
    let same_place = |alert: &crate::alert::Alert| {
        *alert.sensor == *sensor.id
            || (sensor.place.building.is_some() && alert.building.as_deref() == sensor.place.building.as_deref() && *alert.site == *sensor.place.site)
    };
    let open = store.incidents(false).unwrap_or_default();
    open.iter()
        .filter(|row| !row.sensor_normal && !matches!(row.state.as_str(), "resolved" | "closed"))
        .filter(|row| {
            store.latest_alert(&row.rule, &row.sensor).ok().flatten().is_some_and(|alert| !crate::sinks::text::is_device(&alert) && same_place(&alert))
        })
        .map(|row| format!("#{} {} ({})", row.id, row.rule, row.severity))
        .collect()
}

/// Fewest readings whose median may become a box's baseline.
const MIN_CALIBRATION_READINGS: usize = 3;

pub async fn calibrate(State(state): State<WebState>, Json(request): Json<CalibrateRequest>) -> Response {
    let Some(api) = state.installer.as_ref() else { return StatusCode::NOT_FOUND.into_response() };
    let refuse = |status: StatusCode, message: String| (status, message).into_response();
    let Some(index) = api.sensors.iter().position(|s| *s.id == *request.sensor) else {
        return refuse(StatusCode::NOT_FOUND, format!("no sensor `{}` in the inventory", request.sensor));
    };
    if api.sensors[index].kind != SensorKind::Tilt {
        return refuse(StatusCode::BAD_REQUEST, format!("`{}` is not a tilt box; water baselines are learned", request.sensor));
    }
    if request.by.trim().is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "say who calibrates (`by`)".into());
    }
    let window_ms = i64::try_from(request.window_secs).unwrap_or(i64::MAX / 2).saturating_mul(1000);
    let Some((x, y, readings)) = api.live.median_angles(index, api.clock.now(), window_ms) else {
        return refuse(StatusCode::CONFLICT, format!("no readings from `{}` in the last {} s: is it reporting?", request.sensor, request.window_secs));
    };
    if readings < MIN_CALIBRATION_READINGS {
        return refuse(
            StatusCode::CONFLICT,
            format!("only {readings} reading(s) from `{}` in the last {} s: a baseline needs the median of at least {MIN_CALIBRATION_READINGS} (one knock must not become it); wait for more or widen --window", request.sensor, request.window_secs),
        );
    }
    if !request.even_in_alarm {
        let firing = firing_on(&state.store, &api.sensors[index]);
        if !firing.is_empty() {
            return refuse(
                StatusCode::CONFLICT,
                format!(
                    "refused: `{}` is in alarm, {} still firing on it or its building: {}. Zeroing it now would make its lean the new zero and silence them. Check the house on site; if the box itself was moved (re-seated after a knock), calibrate with --even-in-alarm",
                    request.sensor,
                    if firing.len() == 1 { "1 incident".to_string() } else { format!("{} incidents", firing.len()) },
                    firing.join(", ")
                ),
            );
        }
    }
    let (reply, answer) = oneshot::channel();
    let command =
        Command::Calibrate { sensor: index, baseline: vec![("x".into(), x), ("y".into(), y)], author: request.by.trim().to_string(), readings, reply };
    if api.commands.send(command).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping".into());
    }
    match answer.await {
        Ok(done) => Json(CalibrateAnswer { sensor: request.sensor, readings, fields: done.into_iter().map(|c| (c.field, c.previous, c.value)).collect() })
            .into_response(),
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping".into()),
    }
}
