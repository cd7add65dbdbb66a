//! The daemon's HTTP endpoint: `/metrics` in Prometheus text format. Bound to localhost by
//! default (`[http] listen`).

use crate::metrics::Metrics;
use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Binds `listen` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the HTTP endpoint to {listen}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(render)).with_state(metrics);
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::error!(error = %error, "HTTP endpoint stopped");
        }
    });
    tracing::info!(listen = %bound, "serving /metrics");
    Ok(bound)
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
}
