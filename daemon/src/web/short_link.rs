//! `/i/<code>`: a short link from an SMS (see [`crate::links::shorten`]) opens the incident's
//! page: its signature bits and expiry are checked, then the phone is sent on to the full signed
//! link. Nothing is stored: the code is the link, cut down.

use super::WebState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

pub async fn open(State(state): State<WebState>, Path(code): Path<String>) -> Response {
    let Some(links) = &state.links else { return StatusCode::NOT_FOUND.into_response() };
    links.measure_clock_step(&state.clock);
    match links.expand(&code, state.clock.now().div_euclid(1000)) {
        Ok(path) => Redirect::to(&path).into_response(),
        Err(error) => super::incident_page::refused_link(&error),
    }
}

#[cfg(test)]
mod tests {
    use crate::links::{shorten, WorkerLinks};
    use std::time::Duration;

    #[tokio::test]
    async fn a_short_link_opens_the_page_and_a_forged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&crate::alert::tests::sample_alert("fired", 0.46), 600_000).await.unwrap().incident().unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let links = WorkerLinks::new(base.parse().unwrap(), "a-link-secret-of-some-length", Duration::from_secs(3600));
        let state = crate::web::WebState {
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
            store,
            links: Some(links.clone()),
            installer: None,
            time_zone: crate::local_time::DEFAULT,
            ledger: None,
            members: Default::default(),
            page: Default::default(),
            clock: crate::clock::Clock::System,
        };
        let app = crate::web::router(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let short = shorten(&links.member_link(id, "王芳", crate::clock::Clock::System.now().div_euclid(1000)));
        assert!(short.len() < 80 && short.contains("/i/"), "{short}");
        let page = reqwest::get(&short).await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.url().as_str().contains(&format!("/incident/{id}?m=")), "redirected to the full link: {}", page.url());
        assert!(page.text().await.unwrap().contains("红色预警 #1"));
        let forged = format!("{base}/i/{id}.zzzzzz.{}", "0".repeat(20));
        assert_eq!(reqwest::get(forged).await.unwrap().status(), 403);
    }
}
