//! The page a grid worker opens from a notification: what, where, how bad, since when, what
//! has been done — and buttons to accept, report on site and resolve with a note. The signed
//! link is the credential; a forged or expired link gets 403 and nothing else.

use super::WebState;
use crate::incident::Action;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use std::fmt::Write as _;

#[derive(Debug, Deserialize)]
pub struct Signed {
    /// The roster member the link was made for, if any.
    m: Option<String>,
    exp: i64,
    sig: String,
}

impl Signed {
    /// The query again, for the form to post back to.
    fn query(&self) -> String {
        let mut url = reqwest::Url::parse("http://link/").expect("a valid base");
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(member) = &self.m {
                pairs.append_pair("m", member);
            }
            pairs.append_pair("exp", &self.exp.to_string()).append_pair("sig", &self.sig);
        }
        url.query().unwrap_or_default().to_string()
    }
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    action: String,
    /// Who acts, typed in; ignored on a member's own link.
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The refusal to send instead of the page, if the link does not check out.
fn refusal(state: &WebState, id: i64, signed: &Signed) -> Option<Response> {
    let Some(links) = &state.links else { return Some(StatusCode::NOT_FOUND.into_response()) };
    let checked = links.verify(id, signed.m.as_deref(), signed.exp, &signed.sig, chrono::Utc::now().timestamp());
    checked.err().map(|e| (StatusCode::FORBIDDEN, Html(format!("<p>{}</p>", escape(&e.to_string())))).into_response())
}

fn page(state: &WebState, id: i64, signed: &Signed, message: Option<&str>) -> Response {
    let row = match state.store.incidents(true).map(|rows| rows.into_iter().find(|r| r.id == id)) {
        Ok(Some(row)) => row,
        Ok(None) => return (StatusCode::NOT_FOUND, Html("<p>no such incident</p>".to_string())).into_response(),
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, Html(format!("<p>{}</p>", escape(&error.to_string())))).into_response(),
    };
    let trail = state.store.incident_history(id).unwrap_or_default();
    let about = state.store.latest_alert(&row.rule, &row.sensor).ok().flatten();
    let mut html = String::from(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>gridwatch</title><style>body{font-family:sans-serif;margin:1em;max-width:40em}button{font-size:1.1em;margin:.3em .3em .3em 0;padding:.5em 1em}\
         input,textarea{width:100%;font-size:1em;margin:.2em 0}.danger{color:#b00}.alarm{color:#d60}.warning{color:#a80}li{margin:.2em 0}</style></head><body>",
    );
    if let Some(message) = message {
        let _ = write!(html, "<p><strong>{}</strong></p>", escape(message));
    }
    let _ = write!(
        html,
        "<h1 class=\"{sev}\">#{id} {rule}</h1><p>传感器 sensor: <b>{sensor}</b><br>级别 severity: <b class=\"{sev}\">{sev}</b> (最高 worst {worst})<br>状态 state: <b>{state}</b>{normal}<br>读数 value: {value:.4}<br>开始 since: {opened}</p>",
        sev = escape(&row.severity),
        rule = escape(&row.rule),
        sensor = escape(&row.sensor),
        worst = escape(&row.worst_severity),
        state = escape(&row.state),
        normal = if row.sensor_normal { " — 传感器已恢复 sensor normal" } else { "" },
        value = row.last_value,
        opened = crate::local_time::datetime(row.opened_ms, state.time_zone),
    );
    if let Some(alert) = &about {
        let place = [Some(alert.site.as_str()), alert.building.as_deref(), alert.grid.as_deref()].into_iter().flatten().map(escape).collect::<Vec<_>>().join(" · ");
        let _ = write!(html, "<p>位置 where: <b>{place}</b>");
        if let Some([latitude, longitude]) = alert.location {
            // geo: opens the phone's map app; Amap's marker page is what most phones here have.
            let _ = write!(
                html,
                "<br>坐标 location: {latitude:.5}, {longitude:.5} · <a href=\"geo:{latitude},{longitude}\">地图 map</a> · <a href=\"https://uri.amap.com/marker?position={longitude},{latitude}\">高德 Amap</a>"
            );
        }
        let _ = write!(html, "<br>情况 what: {}<br>条件 condition: {}</p>", escape(alert.messages.get("zh").unwrap_or(&alert.title)), escape(&alert.condition));
    }
    let from_hour = chrono::Utc::now().timestamp_millis().div_euclid(3_600_000) - crate::trend::KEEP_HOURS;
    let trend = state.store.trend(&row.sensor, from_hour).unwrap_or_default();
    if !trend.is_empty() {
        let _ = write!(html, "<h2>近 {} 小时趋势 Last {} hours</h2>", crate::trend::KEEP_HOURS, crate::trend::KEEP_HOURS);
        for crate::store::FieldTrend { field, hours } in &trend {
            let series: Vec<(f64, f64, f64)> = hours.iter().map(|&(_, min, mean, max)| (min, mean, max)).collect();
            let low = series.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
            let high = series.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(html, "<p class=\"trend\">{} {} <small>{low:.3} … {high:.3}</small></p>", escape(field), crate::trend::sparkline(&series, 240, 40));
        }
    }
    let who = match &signed.m {
        Some(member) => format!("<p>处理人 acting as: <b>{}</b></p>", escape(&member_name(state, member))),
        None => "<input name=\"by\" placeholder=\"姓名或手机 name or phone\" required>".to_string(),
    };
    let _ = write!(
        html,
        "<form method=\"post\" action=\"/incident/{id}?{query}\">{who}\
         <textarea name=\"note\" placeholder=\"说明 note\"></textarea>\
         <button name=\"action\" value=\"accept\">接单 Accept</button><button name=\"action\" value=\"on_site\">到场 On site</button>\
         <button name=\"action\" value=\"resolve\">办结 Resolved</button></form><h2>记录 History</h2><ul>",
        query = escape(&signed.query()),
    );
    for entry in trail {
        let _ = write!(html, "<li>{} · {} · {}{}</li>", crate::local_time::datetime(entry.at_ms, state.time_zone), escape(&entry.actor), escape(&entry.action), entry.note.map(|n| format!(": {}", escape(&n))).unwrap_or_default());
    }
    html.push_str("</ul></body></html>");
    Html(html).into_response()
}

/// A member's name from the roster, or the id for a member no longer in it.
fn member_name(state: &WebState, member: &str) -> String {
    state.members.get(member).cloned().unwrap_or_else(|| member.to_string())
}

pub async fn show(State(state): State<WebState>, Path(id): Path<i64>, Query(signed): Query<Signed>) -> Response {
    if let Some(refused) = refusal(&state, id, &signed) {
        return refused;
    }
    page(&state, id, &signed, None)
}

pub async fn act(State(state): State<WebState>, Path(id): Path<i64>, Query(signed): Query<Signed>, Form(form): Form<ActForm>) -> Response {
    if let Some(refused) = refusal(&state, id, &signed) {
        return refused;
    }
    let action = match form.action.as_str() {
        "accept" => Action::Accept,
        "on_site" => Action::OnSite,
        "resolve" => Action::Resolve,
        _ => return (StatusCode::BAD_REQUEST, Html("<p>unknown action</p>".to_string())).into_response(),
    };
    // A member's own link acts for that member, whatever the form says.
    let actor = match &signed.m {
        Some(member) => format!("{} ({member}, own link)", member_name(&state, member)),
        None => {
            let by = form.by.trim();
            if by.is_empty() || by.len() > 64 {
                return (StatusCode::BAD_REQUEST, Html("<p>请填写姓名或手机 — name or phone, please</p>".to_string())).into_response();
            }
            format!("{by} (link)")
        }
    };
    let note = (!form.note.trim().is_empty()).then(|| form.note.chars().take(1000).collect::<String>());
    let message = match state.store.incident_action(id, action, &actor, note.as_deref(), chrono::Utc::now().timestamp_millis()) {
        Ok(new_state) => format!("已记录 recorded: {new_state}"),
        Err(error) => format!("未记录 not recorded: {error}"),
    };
    page(&state, id, &signed, Some(&message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::links::WorkerLinks;
    use crate::metrics::Metrics;
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::Duration;

    async fn serve() -> (String, WebState, i64, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.apply_alert(&sample_alert("fired", 0.46), 600_000).await.unwrap().incident().unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let links = WorkerLinks::new(base.parse().unwrap(), "a-link-secret-of-some-length", Duration::from_secs(3600));
        let members = Arc::new([("wang".to_string(), "王芳".to_string())].into_iter().collect());
        let state = WebState { metrics: Arc::new(Metrics::new()), store, links: Some(links), installer: None, time_zone: crate::local_time::DEFAULT, ledger: None, members };
        let app = super::super::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, state, id, dir)
    }

    #[tokio::test]
    async fn a_worker_accepts_and_resolves_through_the_link() {
        let (_, state, id, _dir) = serve().await;
        let link = state.links.as_ref().unwrap().link(id, chrono::Utc::now().timestamp());
        let page = reqwest::get(&link).await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("tilt-danger") && html.contains("house-07") && html.contains("接单 Accept"), "{html}");
        let client = reqwest::Client::new();
        for (action, note) in [("accept", ""), ("resolve", "crack sealed <b>ok</b>")] {
            let html = client.post(&link).form(&[("action", action), ("by", "Li 13800000000"), ("note", note)]).send().await.unwrap().text().await.unwrap();
            assert!(html.contains("已记录 recorded"), "{html}");
        }
        let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
        assert!(html.contains("Li 13800000000 (link) · accept") && html.contains("resolve: crack sealed &lt;b&gt;ok&lt;/b&gt;"), "notes are escaped: {html}");
        assert_eq!(state.store.incidents(true).unwrap()[0].state, "resolved");
    }

    #[tokio::test]
    async fn forged_and_expired_links_are_refused() {
        let (base, state, id, _dir) = serve().await;
        let links = state.links.as_ref().unwrap();
        let expired = links.link(id, chrono::Utc::now().timestamp() - 7200);
        assert_eq!(reqwest::get(&expired).await.unwrap().status(), 403);
        let forged = format!("{base}/incident/{id}?exp=9999999999&sig={}", "00".repeat(32));
        assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
        let other = links.link(id, chrono::Utc::now().timestamp()).replace(&format!("/incident/{id}?"), &format!("/incident/{}?", id + 1));
        assert_eq!(reqwest::get(&other).await.unwrap().status(), 403);
        let posted = reqwest::Client::new().post(&forged).form(&[("action", "resolve"), ("by", "x")]).send().await.unwrap();
        assert_eq!(posted.status(), 403);
        assert_eq!(state.store.incidents(true).unwrap()[0].state, "open", "nothing changed");
    }

    #[tokio::test]
    async fn a_members_own_link_acts_for_that_member_only() {
        let (_, state, id, _dir) = serve().await;
        let links = state.links.as_ref().unwrap();
        let link = links.member_link(id, "wang", chrono::Utc::now().timestamp());
        let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
        assert!(html.contains("处理人 acting as: <b>王芳</b>") && !html.contains("name=\"by\""), "no name to type on one's own link: {html}");
        // Whatever the form claims, the link's member acts.
        let html = reqwest::Client::new().post(&link).form(&[("action", "accept"), ("by", "somebody else")]).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("已记录 recorded"), "{html}");
        let trail = state.store.incident_history(id).unwrap();
        assert_eq!(trail.last().map(|e| e.actor.as_str()), Some("王芳 (wang, own link)"));
        // Another member's name put into the link breaks its signature.
        let forged = link.replace("m=wang", "m=li");
        assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
    }

    #[tokio::test]
    async fn the_page_shows_where_on_a_map_and_the_trend_of_the_last_days() {
        let (_, state, id, _dir) = serve().await;
        let mut alert = sample_alert("fired", 0.46);
        alert.location = Some([31.2304, 121.4737]);
        state.store.record_alert(&alert, &[]).await.unwrap();
        let hour = chrono::Utc::now().timestamp_millis().div_euclid(3_600_000);
        let rows = (0..5).map(|i| crate::store::TrendRow { sensor: "house-07".into(), field: "x".into(), hour: hour - 4 + i, min: 0.1 * i as f64, max: 0.1 * i as f64 + 0.05, sum: 0.1 * i as f64, count: 1 }).collect();
        state.store.add_trend(rows, 0).await.unwrap();
        let link = state.links.as_ref().unwrap().link(id, chrono::Utc::now().timestamp());
        let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
        assert!(html.contains("href=\"geo:31.2304,121.4737\"") && html.contains("position=121.4737,31.2304"), "{html}");
        assert!(html.contains("<p class=\"trend\">x <svg") && html.contains("0.000 … 0.450"), "{html}");
        assert_eq!(html.matches("<polyline").count(), 1, "one field, one line");
    }
}
