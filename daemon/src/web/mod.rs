//! The daemon's HTTP endpoint (`[http] listen`, localhost by default): `/metrics` in
//! Prometheus text format, and — when `[http] public_url` and a link secret are configured —
//! the workers' incident pages behind signed links ([`incident_page`]).

mod incident_page;

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
}

/// The routes, for `serve` and for tests.
pub fn router(state: WebState) -> Router {
    let mut app = Router::new().route("/metrics", get(render));
    if state.links.is_some() {
        app = app.route("/incident/{id}", get(incident_page::show).post(incident_page::act));
    }
    app.with_state(state)
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(listen: SocketAddr, state: WebState, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the HTTP endpoint to {listen}"))?;
    let bound = listener.local_addr()?;
    let pages = state.links.is_some();
    let app = router(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::error!(error = %error, "HTTP endpoint stopped");
        }
    });
    tracing::info!(listen = %bound, incident_pages = pages, "serving /metrics");
    Ok(bound)
}

async fn render(State(state): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
