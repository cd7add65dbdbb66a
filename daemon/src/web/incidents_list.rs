//! The operators' page: open incidents with their state, severity and age, worst first, and
//! the silences in force. Read-only; served on `[http] listen` (loopback by default) at
//! `/incidents`, refreshed every 30 seconds by the browser.

use super::incident_page::escape;
use super::WebState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write as _;

const SEVERITIES: [&str; 4] = ["danger", "alarm", "warning", "notice"];

pub async fn list(State(state): State<WebState>) -> Response {
    let now = state.clock.now();
    let mut rows = match state.store.incidents(false) {
        Ok(rows) => rows,
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, Html(format!("<p>{}</p>", escape(&error.to_string())))).into_response(),
    };
    rows.sort_by_key(|r| (SEVERITIES.iter().position(|s| *s == r.severity).unwrap_or(SEVERITIES.len()), r.opened_ms));
    // Resolved incidents wait for their close, not for anyone to go: not open.
    let (resolved, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.state == crate::dispatch::incident::State::Resolved.as_str());
    let mut html = String::from(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>gridwatch — incidents</title>\
         <style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}\
         .danger{color:#b00;font-weight:bold}.alarm{color:#d60}.warning{color:#a80}</style></head><body>",
    );
    let _ = write!(html, "<h1>未结事件 Open incidents ({})</h1>", rows.len());
    if rows.is_empty() {
        html.push_str("<p>none</p>");
    } else {
        html.push_str("<table><tr><th>#</th><th>severity</th><th>state</th><th>rule</th><th>sensor</th><th>value</th><th>open for</th><th>opened</th></tr>");
        for r in &rows {
            let normal = match (r.sensor_normal, r.folded_into) {
                (_, Some(into)) => format!(" (folded into #{into})"),
                (true, None) => " (sensor normal)".into(),
                (false, None) => String::new(),
            };
            let _ = write!(
                html,
                "<tr class=\"{sev}\"><td>{}</td><td>{sev}</td><td>{}{normal}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                r.id,
                escape(&r.state),
                escape(&r.rule),
                escape(&r.sensor),
                r.last_value,
                if r.opened_known { age(now - r.opened_ms) } else { "?".into() },
                if r.opened_known { crate::local_time::datetime(r.opened_ms, state.time_zone) } else { crate::sinks::text::unknown_time(false).into() },
                sev = escape(&r.severity),
            );
        }
        html.push_str("</table>");
    }
    if !resolved.is_empty() {
        let ids: Vec<String> = resolved.iter().map(|r| format!("#{}", r.id)).collect();
        let _ = write!(html, "<p>已办结待关闭 Resolved, awaiting close ({}): {}</p>", resolved.len(), ids.join(" "));
    }
    let silences = state.store.silences(now, false).unwrap_or_default();
    if !silences.is_empty() {
        html.push_str("<h2>静默 Silences</h2><ul>");
        for s in silences {
            let _ = write!(
                html,
                "<li>#{} {} {} until {} — {} ({})</li>",
                s.id,
                s.scope,
                escape(&s.target),
                crate::local_time::datetime(s.expires_ms, state.time_zone),
                escape(&s.reason),
                escape(&s.author)
            );
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    Html(html).into_response()
}

/// "3 d 4 h", "2 h 5 min", "12 min".
fn age(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match (minutes / 1440, minutes % 1440 / 60, minutes % 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::metrics::Metrics;
    use crate::store::Store;
    use std::sync::Arc;

    #[tokio::test]
    async fn lists_open_incidents_worst_first_and_escapes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut warning = sample_alert("fired", 2.1);
        warning.severity = gridwatch_rules::Severity::Warning;
        warning.rule = "tilt-<script>".into();
        store.apply_alert(&warning, 0).await.unwrap();
        store.apply_alert(&sample_alert("fired", 7.3), 0).await.unwrap();
        let mut done = sample_alert("fired", 7.3);
        done.sensor = "house-99".into();
        let done = store.apply_alert(&done, 0).await.unwrap().incident().unwrap();
        store.incident_action(done, crate::dispatch::incident::Action::Resolve, "worker Li", Some("propped"), 2_000).unwrap();
        let state = WebState {
            metrics: Arc::new(Metrics::new()),
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
        let html = reqwest::get(format!("{base}/incidents")).await.unwrap().text().await.unwrap();
        assert!(html.contains("Open incidents (2)"), "a resolved incident is not open: {html}");
        assert!(html.contains("Resolved, awaiting close (1): #3"), "{html}");
        assert!(html.contains("<td>2026-11-23 08:00:00</td>"), "opened in China time: {html}");
        let danger = html.find("<tr class=\"danger\"><td>2</td>").expect("the danger incident");
        let warning = html.find("<tr class=\"warning\"><td>1</td>").expect("the warning incident");
        assert!(danger < warning, "worst first");
        assert!(html.contains("tilt-&lt;script&gt;") && !html.contains("<script>"), "escaped");
    }

    #[test]
    fn ages_read_as_days_hours_minutes() {
        assert_eq!(age(12 * 60_000), "12 min");
        assert_eq!(age(125 * 60_000), "2 h 5 min");
        assert_eq!(age((3 * 1440 + 4 * 60) * 60_000), "3 d 4 h");
    }
}
