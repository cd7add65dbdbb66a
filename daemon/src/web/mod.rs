//! The daemon's HTTP endpoint (`[http] listen`, localhost by default): `/`, a front page
//! linking to the rest ([`index`]), `/metrics` in Prometheus text format (every per-channel
//! counter of the configured channels at 0 from start), `/healthz` (ready, or degraded with reasons), `/incidents` (the
//! operators' list of open incidents, [`incidents_list`]), `/api/…` for the installer commands
//! ([`installer_api`]), and — when `[http] public_url` and a
//! link secret are configured — the workers' incident pages behind signed links
//! ([`incident_page`]); `/board`, the office's screen ([`board`]), when the daemon serves one.

pub mod board;
pub mod incident_page;
mod incidents_list;
mod index;
pub mod installer_api;
mod short_link;

use crate::links::WorkerLinks;
use crate::metrics::Metrics;
use crate::store::Store;
use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct WebState {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub links: Option<WorkerLinks>,
    /// The installer endpoints (`/api/…`); none in tests that only serve pages.
    pub installer: Option<installer_api::InstallerApi>,
    /// The sinks `/api/balance` accounts for; none in tests that only serve pages.
    pub ledger: Option<crate::invariants::Ledger>,
    /// Roster members by id -> name, for links made for one member.
    pub members: Arc<std::collections::BTreeMap<String, String>>,
    /// Where the pages' times are shown (`time_zone`).
    pub time_zone: chrono_tz::Tz,
    /// The roster and photo limit of the workers' incident pages.
    pub page: incident_page::PageSetup,
    /// The daemon's clock (the demo's runs fast): it stamps each step, and pages' ages and the
    /// links' expiry are read on it.
    pub clock: crate::clock::Clock,
}

/// The routes, for `serve` and for tests.
pub fn router(state: WebState) -> Router {
    let mut app = Router::new()
        .route("/", get(index::show))
        .route("/metrics", get(render))
        .route("/healthz", get(health))
        .route("/incidents", get(incidents_list::list))
        .route("/api/sensors", get(installer_api::sensors))
        .route("/api/status", get(installer_api::status))
        .route("/api/calibrate", axum::routing::post(installer_api::calibrate))
        .route("/api/balance", get(balance));
    if state.links.is_some() {
        app = app.merge(incident_page::routes(&state)).route("/i/{code}", get(short_link::open));
    }
    app.with_state(state)
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(listen: SocketAddr, state: WebState, board: Option<board::Board>, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the HTTP endpoint to {listen}"))?;
    let bound = listener.local_addr()?;
    let pages = state.links.is_some();
    if let Some(ledger) = &state.ledger {
        state.metrics.know_sinks(&ledger.channels);
    }
    let mut app = router(state);
    if let Some(board) = board {
        app = app.merge(board::router(board));
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::error!(error = %error, "HTTP endpoint stopped");
        }
    });
    tracing::info!(listen = %bound, incident_pages = pages, "serving /metrics");
    Ok(bound)
}

/// Spool age past which the box reports itself degraded.
const SPOOL_AGE_LIMIT_SECS: i64 = 600;

/// Why the daemon is not fully well, from its own counters; empty when it is.
pub fn degraded_reasons(metrics: &Metrics) -> Vec<String> {
    let mut reasons = Vec::new();
    if metrics.rejudging.get() == 1 {
        reasons.push(format!(
            "starting: judging again the readings acknowledged since the last saved rule state ({} so far); new readings wait behind them",
            metrics.readings_rejudged.get()
        ));
    }
    if metrics.mqtt_connected.get() == 0 {
        reasons.push("MQTT broker not connected".to_string());
    }
    if metrics.clock_trusted.get() == 0 {
        reasons.push("system clock not synchronised: readings without their own time are not stored, people read \"time unknown\"".to_string());
    }
    if metrics.config_fallback.get() == 1 {
        reasons.push("running on the last good configuration: the current configuration or rule files are invalid".to_string());
    }
    if metrics.reload_success.get() == 0 && metrics.reloads.get_or_create(&crate::metrics::ResultLabel { result: "invalid".into() }).get() > 0 {
        reasons.push("the rule files were refused at the last reload: the previous rules keep running (`gridwatch rules check` says why)".to_string());
    }
    if metrics.influxdb_unreachable.get() == 1 {
        reasons.push("InfluxDB unreachable: readings wait in the spool".to_string());
    }
    if metrics.influxdb_config_error.get() == 1 {
        reasons.push("InfluxDB refuses our token, organisation or bucket".to_string());
    }
    if metrics.store_disk_full.get() == 1 {
        reasons.push("state directory full: new readings are not stored; alarms are written into the space kept in reserve while it lasts".to_string());
    }
    let age = metrics.spool_oldest_age_seconds.get();
    if age > SPOOL_AGE_LIMIT_SECS {
        reasons.push(format!("telemetry spool growing: oldest reading waiting {age} s"));
    }
    reasons
}

/// Gauges the store knows best, read when they are asked for.
fn read_store_state(state: &WebState) -> Option<String> {
    // A card gone read-only could not keep its reserve either: that is not a full one.
    state.metrics.store_disk_full.set(i64::from(state.store.disk_full() && !state.store.read_only()));
    let problem = state.store.write_problem();
    state.metrics.store_write_failing.set(i64::from(problem.is_some()));
    state.metrics.store_failed_writes.set(i64::try_from(state.store.failed_writes()).unwrap_or(i64::MAX));
    state.metrics.store_torn_wal_bytes.set(i64::try_from(state.store.torn_wal_bytes).unwrap_or(i64::MAX));
    problem
}

/// `/healthz`: 200 `{"status":"ready"}`, or 503 `{"status":"degraded","reasons":[…]}`.
async fn health(State(state): State<WebState>) -> impl IntoResponse {
    let reasons = health_reasons(&state);
    let status = if reasons.is_empty() { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({"status": if reasons.is_empty() { "ready" } else { "degraded" }, "reasons": reasons});
    (status, axum::Json(body))
}

/// Why the daemon is degraded, for `/healthz` and `gridwatch status` alike: its own state, the
/// store's, silent sensors and sensors whose clocks are off. Empty: ready.
pub fn health_reasons(state: &WebState) -> Vec<String> {
    let store_problem = read_store_state(state);
    let mut reasons = degraded_reasons(&state.metrics);
    reasons.extend(store_problem);
    if let Some(silent) = state.installer.as_ref().map(installer_api::InstallerApi::silent_sensors).filter(|s| !s.is_empty()) {
        let named: Vec<&str> = silent.iter().take(5).map(String::as_str).collect();
        let more = if silent.len() > 5 { format!(" and {} more", silent.len() - 5) } else { String::new() };
        reasons.push(format!("{} sensor(s) silent for more than 3 report intervals: {}{more}", silent.len(), named.join(", ")));
    }
    if let Some(clocks) = state.installer.as_ref().and_then(|api| api.clocks.health_reason(tokio::time::Instant::now())) {
        reasons.push(clocks);
    }
    reasons
}

/// `/api/balance`: each sink's accounts (see [`crate::invariants`]); `balanced` is true when
/// nothing is in flight between counters.
async fn balance(State(state): State<WebState>) -> axum::response::Response {
    let Some(ledger) = &state.ledger else { return axum::http::StatusCode::NOT_FOUND.into_response() };
    match crate::invariants::balances(ledger, &state.metrics, &state.store) {
        Ok(sinks) => {
            let balanced = sinks.iter().all(crate::invariants::SinkBalance::balanced);
            axum::Json(serde_json::json!({"balanced": balanced, "sinks": sinks})).into_response()
        }
        Err(error) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}")).into_response(),
    }
}

async fn render(State(state): State<WebState>) -> impl IntoResponse {
    read_store_state(&state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lists_what_is_wrong() {
        let metrics = Metrics::new();
        metrics.clock_trusted.set(1);
        assert_eq!(degraded_reasons(&metrics), vec!["MQTT broker not connected"]);
        metrics.mqtt_connected.set(1);
        assert!(degraded_reasons(&metrics).is_empty());
        metrics.clock_trusted.set(0);
        assert_eq!(
            degraded_reasons(&metrics),
            vec!["system clock not synchronised: readings without their own time are not stored, people read \"time unknown\""]
        );
        metrics.clock_trusted.set(1);
        metrics.influxdb_unreachable.set(1);
        assert_eq!(degraded_reasons(&metrics), vec!["InfluxDB unreachable: readings wait in the spool"]);
        metrics.influxdb_unreachable.set(0);
        metrics.influxdb_config_error.set(1);
        metrics.spool_oldest_age_seconds.set(3600);
        let reasons = degraded_reasons(&metrics);
        assert_eq!(reasons.len(), 2);
        assert!(reasons[1].contains("oldest reading waiting 3600 s"), "{reasons:?}");
    }

    #[test]
    fn a_refused_reload_degrades_health_until_a_good_one() {
        let metrics = Metrics::new();
        metrics.clock_trusted.set(1);
        metrics.mqtt_connected.set(1);
        metrics.rules_loaded_at_start(1_795_392_000_000);
        assert!(degraded_reasons(&metrics).is_empty());
        metrics.record_reload(false, 1_795_392_060_000);
        let reasons = degraded_reasons(&metrics);
        assert!(reasons.len() == 1 && reasons[0].contains("refused at the last reload"), "{reasons:?}");
        metrics.record_reload(true, 1_795_392_120_000);
        assert!(degraded_reasons(&metrics).is_empty());
    }

    #[test]
    fn health_says_starting_while_the_crash_log_is_judged_again() {
        let metrics = Metrics::new();
        metrics.clock_trusted.set(1);
        metrics.mqtt_connected.set(1);
        metrics.rejudging.set(1);
        metrics.readings_rejudged.inc_by(4096);
        assert_eq!(
            degraded_reasons(&metrics),
            vec!["starting: judging again the readings acknowledged since the last saved rule state (4096 so far); new readings wait behind them"]
        );
        metrics.rejudging.set(0);
        assert!(degraded_reasons(&metrics).is_empty());
    }
}
