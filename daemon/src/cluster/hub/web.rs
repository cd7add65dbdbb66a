//! The hub's HTTP listener (`--listen`): the relay of workers' actions ([`super::relay`]),
//! `/metrics` ([`super::metrics`]), `/healthz`, and the district's pages read from PostgreSQL:
//! the board of every box (`/`, `/board`, [`super::board`]) and the per-box report of a period
//! (`/report`, HTML or CSV, [`super::report`]); with the district's secrets, the workers'
//! incident pages of every box (`/b/<box>/incident/<id>`, [`super::pages`]). Every hub serves
//! them, active or standing by. With `--view-token-file` the board and report ask for its token
//! ([`super::view_token`]).
//!
//! Read-only apart from the relay and the pages' steps; nothing secret is shown (the PostgreSQL connection string
//! may hold a password: errors reaching it are logged, the pages only say it is unreachable).

use super::metrics::HubMetrics;
use super::pages::DistrictSecrets;
use super::{board, pages, relay, report, view_token};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a page or `/healthz` waits for PostgreSQL.
const DB_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/healthz` waits for the district's JetStream to answer.
const NATS_PROBE: Duration = Duration::from_secs(2);
/// The largest action taken (a signed action is a few hundred bytes; its note is short).
const MAX_BODY: usize = 16 * 1024;

/// What the handlers share.
#[derive(Debug)]
pub struct Listener {
    pub js: async_nats::jetstream::Context,
    pub metrics: Arc<HubMetrics>,
    /// This hub's name (which one answered, in `/healthz`).
    pub name: String,
    /// The pages' own connection (the consumer's is busy with batches); made on first use and
    /// again after a loss.
    db: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    conninfo: String,
    /// Where the pages' times are shown: the hub has no configuration, China's zone.
    pub time_zone: chrono_tz::Tz,
    /// The district's link and ack secrets: with them, the hub serves the boxes' incident
    /// pages ([`super::pages`]); without, it only relays.
    pub secrets: Option<DistrictSecrets>,
    /// The token the board and report ask for (`--view-token-file`); none: open.
    pub view_token: Option<String>,
    /// The boxes the active term's lease watch finds dead (empty while this hub is standby).
    pub dead_boxes: super::leases::DeadBoxes,
}

impl Listener {
    pub fn new(js: async_nats::jetstream::Context, metrics: Arc<HubMetrics>, name: String, conninfo: String, secrets: Option<DistrictSecrets>) -> Listener {
        Listener {
            js,
            metrics,
            name,
            db: tokio::sync::Mutex::new(None),
            conninfo,
            time_zone: crate::local_time::DEFAULT,
            secrets,
            view_token: None,
            dead_boxes: Default::default(),
        }
    }

    /// Runs `query` on the pages' connection (connecting first if needed) within
    /// [`DB_TIMEOUT`]; records whether PostgreSQL was reached.
    pub async fn with_db<T>(&self, query: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let attempt = async {
            let mut db = self.db.lock().await;
            query(super::postgres::reuse(&mut db, &self.conninfo).await?).await
        };
        let outcome = match tokio::time::timeout(DB_TIMEOUT, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Made again next time: a connection whose packets vanish never closes.
                *self.db.lock().await = None;
                Err(anyhow::anyhow!("PostgreSQL did not answer within {DB_TIMEOUT:?}"))
            }
        };
        self.metrics.postgres_reachable.set(i64::from(outcome.is_ok()));
        if let Err(error) = &outcome {
            tracing::warn!(error = %format!("{error:#}"), "district pages cannot read PostgreSQL");
        }
        outcome
    }

    fn nats_connected(&self) -> bool {
        let connected = self.js.client().connection_state() == async_nats::connection::State::Connected;
        self.metrics.nats_connected.set(i64::from(connected));
        connected
    }
}

/// Serves the listener on `listen` until `shutdown`.
pub async fn serve(listener: Listener, listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = Arc::new(listener);
    // The district's view: every box's incidents and places, behind the view token.
    let views = Router::new()
        .route("/", get(board::page))
        .route("/board", get(board::page))
        .route("/report", get(report::page))
        .route_layer(axum::middleware::from_fn_with_state(listener.clone(), view_token::check));
    let app = Router::new()
        .route("/act/{district}/{box_id}", post(relay::relay))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .merge(views)
        .route("/b/{box_id}/incident/{id}", get(pages::show).post(pages::act))
        .route("/b/{box_id}/i/{code}", get(pages::short_link))
        .with_state(listener);
    let bound = tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("binding the hub's listener to {listen}: {e}"))?;
    tracing::info!(listen = %bound.local_addr()?, "district hub relays workers' actions and serves its board");
    axum::serve(bound, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

/// Counts of the district's boxes, for the gauges.
async fn count_boxes(web: &Listener) -> anyhow::Result<()> {
    let (known, down) = web
        .with_db(async |db| {
            let row = db.query_one("SELECT count(*), count(*) FILTER (WHERE down) FROM boxes", &[]).await?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })
        .await?;
    web.metrics.boxes_known.set(known);
    web.metrics.boxes_down.set(down);
    Ok(())
}

async fn metrics(State(web): State<Arc<Listener>>) -> impl IntoResponse {
    web.nats_connected();
    // Unreachable: the box gauges keep their last value; `postgres_reachable` says 0.
    let _ = count_boxes(&web).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], web.metrics.render())
}

/// `/healthz`: 200 `{"status":"ready","role":"active"|"standing by",…}` when this hub reaches
/// NATS and PostgreSQL and, if active, commits batches and watches the boxes; 503
/// `{"status":"degraded","reasons":[…],…}` when it cannot.
async fn health(State(web): State<Arc<Listener>>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if !web.nats_connected() {
        reasons.push("NATS not connected: no batches taken, no actions relayed, no leases watched".to_string());
    } else if tokio::time::timeout(NATS_PROBE, web.js.get_stream(crate::cluster::STREAM)).await.map_or(true, |answer| answer.is_err()) {
        // The client says connected until its pings go unanswered (minutes): a cut-off hub is
        // found by asking the cluster something.
        reasons.push("the district's JetStream does not answer: no batches taken, no actions relayed, no leases watched".to_string());
    }
    if count_boxes(&web).await.is_err() {
        reasons.push("PostgreSQL unreachable: no batches committed, the pages are empty".to_string());
    }
    let active = web.metrics.active.get() == 1;
    if active && web.metrics.postgres_writable.get() == 0 {
        reasons.push("PostgreSQL refuses writes: no batches committed, box-down posted but not recorded".to_string());
    } else if active && web.metrics.batches_failing.get() == 1 {
        reasons.push("batches cannot be committed (PostgreSQL, the district's InfluxDB or the marks refuse them: see the log)".to_string());
    }
    if web.metrics.hub_lease_unwritable.get() == 1 {
        reasons.push(
            "the hub lease cannot be written (JetStream out of storage? see the log): no hub may be active, no batches committed, no box-down decided"
                .to_string(),
        );
    }
    if active && web.metrics.box_watch_failing.get() == 1 {
        reasons.push("the box lease watch cannot run: no box-down decided".to_string());
    }
    let role = if active { "active" } else { "standing by" };
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if reasons.is_empty() { "ready" } else { "degraded" },
        "role": role,
        "hub": web.name,
        "reasons": reasons,
    });
    (status, axum::Json(body))
}
