//! `/`: the box's front page — what this daemon is, whether it is well (the `/healthz`
//! reasons), how many incidents are open, and links to everything else the HTTP port serves.
//! Plain HTML with no script, readable on a phone; nothing on it comes from outside the daemon
//! except the reasons, which are escaped.

use super::incident_page::escape;
use super::WebState;
use axum::extract::State;
use axum::response::Html;
use std::fmt::Write as _;

/// Worst first, as on `/incidents`.
const SEVERITIES: [&str; 4] = ["danger", "alarm", "warning", "notice"];

pub async fn show(State(state): State<WebState>) -> Html<String> {
    super::read_store_state(&state);
    let reasons = super::degraded_reasons(&state.metrics);
    let mut html = String::from(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>gridwatch</title>\
         <style>body{font-family:sans-serif;margin:1em;max-width:40em;line-height:1.5}li{margin:.4em 0}\
         a{font-size:1.1em}.ok{color:#080}.bad{color:#b00}.danger{color:#b00;font-weight:bold}.alarm{color:#d60}.warning{color:#a80}</style></head><body>",
    );
    let _ = write!(html, "<h1>gridwatch {}</h1>", env!("CARGO_PKG_VERSION"));
    if reasons.is_empty() {
        html.push_str("<p class=\"ok\">正常 Ready</p>");
    } else {
        html.push_str("<p class=\"bad\">降级 Degraded:</p><ul>");
        for reason in &reasons {
            let _ = write!(html, "<li>{}</li>", escape(reason));
        }
        html.push_str("</ul>");
    }
    let open: Vec<(&str, i64)> = SEVERITIES
        .iter()
        .map(|severity| (*severity, state.metrics.open_incidents.get_or_create(&crate::metrics::SeverityLabel { severity: (*severity).into() }).get()))
        .filter(|(_, count)| *count > 0)
        .collect();
    if open.is_empty() {
        html.push_str("<p>未结事件 Open incidents: none</p>");
    } else {
        html.push_str("<p>未结事件 Open incidents:");
        for (severity, count) in open {
            let _ = write!(html, " <span class=\"{severity}\">{count} {severity}</span>");
        }
        html.push_str("</p>");
    }
    html.push_str(
        "<ul>\
         <li><a href=\"incidents\">值班看板 Board: open incidents and silences</a></li>\
         <li><a href=\"api/sensors\">传感器 Sensors: last values (JSON)</a></li>\
         <li><a href=\"healthz\">健康 Health (JSON)</a></li>\
         <li><a href=\"metrics\">指标 Metrics (Prometheus)</a></li>",
    );
    if state.ledger.is_some() {
        html.push_str("<li><a href=\"api/balance\">对账 Balance of every alert channel (JSON)</a></li>");
    }
    html.push_str("</ul></body></html>");
    Html(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, SeverityLabel};
    use crate::store::Store;
    use std::sync::Arc;

    async fn page(metrics: Arc<Metrics>) -> (reqwest::StatusCode, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let state = WebState {
            metrics,
            store,
            links: None,
            installer: None,
            time_zone: crate::local_time::DEFAULT,
            ledger: None,
            members: Arc::default(),
            page: Default::default(),
            clock: crate::clock::Clock::System,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, super::super::router(state)).await.unwrap() });
        let response = reqwest::get(format!("{base}/")).await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn front_page_links_the_board_sensors_health_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        metrics.mqtt_connected.set(1);
        metrics.clock_trusted.set(1);
        let (status, html) = page(metrics).await;
        assert_eq!(status, reqwest::StatusCode::OK);
        for link in ["href=\"incidents\"", "href=\"api/sensors\"", "href=\"healthz\"", "href=\"metrics\""] {
            assert!(html.contains(link), "{link} missing: {html}");
        }
        assert!(html.contains("name=\"viewport\""), "readable on a phone");
        assert!(html.contains("Ready") && html.contains("Open incidents: none"), "{html}");
        assert!(!html.contains("api/balance"), "no balance link without sinks");
    }

    #[tokio::test]
    async fn front_page_says_why_the_box_is_degraded_and_what_is_open() {
        let metrics = Arc::new(Metrics::new());
        metrics.clock_trusted.set(1);
        metrics.open_incidents.get_or_create(&SeverityLabel { severity: "danger".into() }).set(2);
        let (_, html) = page(metrics).await;
        assert!(html.contains("Degraded") && html.contains("<li>MQTT broker not connected</li>"), "{html}");
        assert!(html.contains("<span class=\"danger\">2 danger</span>") && !html.contains("0 warning"), "{html}");
    }
}
