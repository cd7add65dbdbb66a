//! The workers' incident pages of every box of the district, served by the hub for boxes behind
//! 4G NAT that phones cannot reach: a box whose `[http] public_url` is `<hub>/b/<box>` sends
//! links that open here (`/b/<box>/incident/<id>?…&sig=…`, short form `/b/<box>/i/<code>`).
//!
//! The hub checks each link with the box's own verifier ([`crate::links::WorkerLinks`], the box's
//! id signed in, under the district's link secret) and writes the box's own page
//! ([`crate::web::incident_page::render`]) from what PostgreSQL holds of the incident
//! (`box_incidents`, `incident_transitions`, `alert_events`). A step pressed there (接单, 到场,
//! 办结, with its note) is checked against the same list as on the box, signed as the action the
//! box verifies (the district's ack secret, the box of the page's path named and signed in,
//! [`crate::sources::mqtt::incident_acks`]) and queued on the box's subject ([`super::relay::queue`]); the page then says it was sent and is done when the
//! box takes it (offline: when it is back), and shows the box's state once its transition comes
//! back up the uplink.
//!
//! Invariants: nothing is queued from a link that does not check out (refused: 403, counted in
//! `gridwatch_hub_links_refused_total{reason}`); a form sent twice is one signature (its `ts`
//! was written into the page), which the box takes once.

use super::relay;
use super::web::Listener;
use crate::config::is_token;
use crate::dispatch::incident::{Action, State as IncidentState};
use crate::links::{LinkError, WorkerLinks};
use crate::local_time;
use crate::sources::mqtt::incident_acks::AckConfig;
use crate::store::{AuditEntry, IncidentRow, TimelineEntry, Work};
use crate::web::incident_page::labels::action_label;
use crate::web::incident_page::render::{self, Facts, Taking};
use crate::web::incident_page::{refused_link, steps, Notice, Signed, PHONE_STYLE};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The district's secrets: the boxes' link secret (checks links) and ack secret (signs actions).
#[derive(Clone)]
pub struct DistrictSecrets {
    link_secret: String,
    acks: AckConfig,
}

impl std::fmt::Debug for DistrictSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DistrictSecrets(<secrets>)")
    }
}

impl DistrictSecrets {
    /// Secrets of at least 16 characters, as on the boxes.
    pub fn new(link_secret: &str, ack_secret: &str) -> anyhow::Result<DistrictSecrets> {
        if link_secret.len() < 16 || ack_secret.len() < 16 {
            anyhow::bail!("the district's link and ack secrets must be at least 16 characters, as on the boxes");
        }
        Ok(DistrictSecrets { link_secret: link_secret.to_string(), acks: AckConfig::without_topic(ack_secret) })
    }

    /// The verifier of box `box_id`'s links (it never makes links here: the base is unused).
    fn links(&self, box_id: &str) -> WorkerLinks {
        WorkerLinks::new(reqwest::Url::parse("http://district-hub/").expect("a valid URL"), &self.link_secret, Duration::ZERO).for_box(box_id)
    }

    /// The signer of box `box_id`'s actions (its id named and signed in each).
    fn acks(&self, box_id: &str) -> AckConfig {
        self.acks.clone().for_box(box_id)
    }
}

/// How old a page's form may be when it is sent (its `ts` is the action's time; the box refuses
/// actions over a day old).
const FORM_MAX_AGE_MS: i64 = 6 * 3600 * 1000;

fn now_ms() -> i64 {
    crate::clock::Clock::System.now()
}

/// The link's refusal, if it does not check out for box `box_id` (counted).
fn check_link(web: &Listener, secrets: &DistrictSecrets, box_id: &str, id: i64, signed: &Signed) -> Option<Response> {
    let refused = |error: LinkError| {
        web.metrics.count_link_refused(match error {
            LinkError::Expired => "expired",
            LinkError::BadSignature => "bad_signature",
        });
        Some(refused_link(&error))
    };
    if !is_token(box_id) {
        return refused(LinkError::BadSignature);
    }
    let checked = secrets.links(box_id).verify(id, signed.m.as_deref(), signed.exp, &signed.sig, now_ms().div_euclid(1000));
    checked.err().and_then(refused)
}

/// An incident of a box as PostgreSQL holds it.
#[derive(Debug)]
struct HubIncident {
    district: String,
    box_down: bool,
    /// Since when the box is down (or up), ms.
    box_since_ms: i64,
    row: IncidentRow,
    timeline: Vec<TimelineEntry>,
}

/// Incident `id` of the store box `box_id` sends from now; none when the district has not heard of it.
async fn read(db: &tokio_postgres::Client, box_id: &str, id: i64) -> anyhow::Result<Option<HubIncident>> {
    let Some(found) = db
        .query_opt(
            "SELECT i.epoch, i.rule, i.sensor, i.severity, i.state, b.district, b.down,
                    (extract(epoch FROM COALESCE(b.down_changed, b.first_seen)) * 1000)::BIGINT
             FROM box_incidents i JOIN boxes b ON b.box_id = i.box_id AND b.epoch = i.epoch
             WHERE i.box_id = $1 AND i.incident_id = $2",
            &[&box_id, &id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (epoch, rule, sensor): (String, String, String) = (found.get(0), found.get(1), found.get(2));
    let transitions = db
        .query(
            "SELECT at_ms, actor, action, note FROM incident_transitions WHERE box_id = $1 AND epoch = $2 AND incident_id = $3 ORDER BY id",
            &[&box_id, &epoch, &id],
        )
        .await?;
    let entries: Vec<AuditEntry> =
        transitions.iter().map(|t| AuditEntry { at_ms: t.get(0), at_known: true, actor: t.get(1), action: t.get(2), note: t.get(3) }).collect();
    let opened_ms = entries.first().map_or(0, |e| e.at_ms);
    let alerts = db
        .query(
            "SELECT event, value FROM alert_events WHERE box_id = $1 AND epoch = $2 AND rule = $3 AND sensor = $4 AND at_ms >= $5 ORDER BY id",
            &[&box_id, &epoch, &rule, &sensor, &opened_ms],
        )
        .await?;
    let alerts: Vec<(String, f64)> = alerts.iter().map(|a| (a.get(0), a.get(1))).collect();
    let row = incident_row(id, rule, sensor, found.get(3), found.get(4), &entries, &alerts);
    let timeline = entries.into_iter().map(|entry| TimelineEntry { entry, photos: Vec::new(), check_in: None }).collect();
    Ok(Some(HubIncident { district: found.get(5), box_down: found.get(6), box_since_ms: found.get(7), row, timeline }))
}

/// Severities, worst first.
const SEVERITIES: [&str; 4] = ["danger", "alarm", "warning", "notice"];

/// The incident as the box's page reads it, from its last reported state, its transitions and
/// its alert events since it opened (value and `fired` count).
fn incident_row(id: i64, rule: String, sensor: String, severity: String, state: String, entries: &[AuditEntry], alerts: &[(String, f64)]) -> IncidentRow {
    let rank = |s: &str| SEVERITIES.iter().position(|known| *known == s).unwrap_or(SEVERITIES.len());
    // "fired danger", "changed alarm", "re-opened danger …": the severities it reached.
    let reached = entries.iter().filter_map(|e| {
        let mut words = e.action.split(' ');
        matches!(words.next(), Some("fired" | "changed" | "re-opened")).then(|| words.next()).flatten()
    });
    let worst = reached.chain([severity.as_str()]).min_by_key(|s| rank(s)).unwrap_or(&severity).to_string();
    let judged = entries
        .iter()
        .rev()
        .find(|e| e.actor == "rules" && (e.action == "sensor normal" || e.action.starts_with("fired") || e.action.starts_with("re-opened")));
    IncidentRow {
        id,
        rule,
        sensor,
        worst_severity: worst,
        severity,
        state,
        sensor_normal: judged.is_some_and(|e| e.action == "sensor normal"),
        firings: alerts.iter().filter(|(event, _)| event == "fired").count() as i64,
        last_value: alerts.last().map_or(f64::NAN, |(_, value)| *value),
        opened_ms: entries.first().map_or(0, |e| e.at_ms),
        opened_known: !entries.is_empty(),
        updated_ms: entries.last().map_or(0, |e| e.at_ms),
        folded_into: folded_into(entries),
    }
}

/// The incident it was last folded into, unless told since ("folded into #12", "unfolded").
fn folded_into(entries: &[AuditEntry]) -> Option<i64> {
    let last = entries.iter().rev().find(|e| e.actor == "gridwatch" && (e.action == "unfolded" || e.action.starts_with("folded into #")))?;
    last.action.strip_prefix("folded into #")?.parse().ok()
}

/// The state a step leads to (to tell when the box has done it).
fn state_after(step: &str) -> Option<&'static str> {
    Some(match step {
        "accept" => "accepted",
        "on_site" => "on_site",
        "resolve" => "resolved",
        "close" => "closed",
        _ => return None,
    })
}

/// What the page says of a step sent (`done`) and of the box.
fn delivery(incident: &HubIncident, done: Option<&str>, zone: chrono_tz::Tz) -> Option<Notice> {
    let offline = incident.box_down.then(|| format!("社区盒子目前离线（自 {} 起）", local_time::short(incident.box_since_ms, zone, true)));
    match (done, offline) {
        (Some(step), _) if state_after(step) == Some(incident.row.state.as_str()) => Some(Notice::Done(format!("盒子已执行：{}", action_label(step)))),
        (Some(step), Some(offline)) => Some(Notice::Waiting(format!("已发送：{}。{offline}，联网后执行；下方为盒子最后报告的状态。", action_label(step)))),
        (Some(step), None) => Some(Notice::Waiting(format!("已发送：{}。盒子收到后执行（通常几秒内），刷新本页可见结果。", action_label(step)))),
        (None, Some(offline)) => Some(Notice::Waiting(format!("{offline}：下方为它最后报告的状态，操作会在联网后执行。"))),
        (None, None) => None,
    }
}

fn facts<'a>(incident: &'a HubIncident, box_id: &str, zone: chrono_tz::Tz) -> Facts<'a> {
    Facts {
        row: &incident.row,
        about: None,
        place: Some(format!("社区 {box_id}")),
        sensor: None,
        latest: None,
        trend: Vec::new(),
        folded: Vec::new(),
        people: Vec::new(),
        timeline: incident.timeline.clone(),
        dispatch: Default::default(),
        members: Default::default(),
        time_zone: zone,
        now: now_ms(),
        base: format!("/b/{box_id}"),
        taking: Taking::SignedActions,
    }
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{PHONE_STYLE}</style></head><body><header class=\"warning\"><h1>{title}</h1></header><section><p>{text}</p></section></body></html>"
    );
    (status, Html(html)).into_response()
}

/// The incident, or the page to answer instead (unknown incident, PostgreSQL unreachable).
async fn incident(web: &Listener, box_id: &str, id: i64) -> Result<HubIncident, Response> {
    match web.with_db(async |db| read(db, box_id, id).await).await {
        Ok(Some(incident)) => Ok(incident),
        Ok(None) => Err(message_page(StatusCode::NOT_FOUND, "没有这个事件", "街道还没有收到这个事件（盒子可能尚未联网上报），请稍后再试。")),
        Err(_) => Err(message_page(StatusCode::SERVICE_UNAVAILABLE, "暂时无法打开", "暂时无法读取街道数据库，请稍后刷新。")),
    }
}

/// `GET /b/<box>/incident/<id>`.
pub async fn show(State(web): State<Arc<Listener>>, Path((box_id, id)): Path<(String, i64)>, Query(signed): Query<Signed>) -> Response {
    let Some(secrets) = &web.secrets else { return StatusCode::NOT_FOUND.into_response() };
    if let Some(refused) = check_link(&web, secrets, &box_id, id, &signed) {
        return refused;
    }
    match incident(&web, &box_id, id).await {
        Ok(incident) => {
            let notice = delivery(&incident, signed.done.as_deref(), web.time_zone);
            Html(render::render(&facts(&incident, &box_id, web.time_zone), &signed, notice.as_ref(), "")).into_response()
        }
        Err(response) => response,
    }
}

/// The hub's form: the step, the name typed on a group link, the note, and the page's time.
#[derive(Debug, Deserialize)]
pub struct Sent {
    action: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
    ts: Option<i64>,
}

/// `POST /b/<box>/incident/<id>`: the step as a signed action on the box's subject.
pub async fn act(
    State(web): State<Arc<Listener>>,
    Path((box_id, id)): Path<(String, i64)>,
    Query(signed): Query<Signed>,
    sent: Result<Form<Sent>, FormRejection>,
) -> Response {
    let Some(secrets) = &web.secrets else { return StatusCode::NOT_FOUND.into_response() };
    if let Some(refused) = check_link(&web, secrets, &box_id, id, &signed) {
        return refused;
    }
    let incident = match incident(&web, &box_id, id).await {
        Ok(incident) => incident,
        Err(response) => return response,
    };
    let now = now_ms();
    let not_sent = |status: StatusCode, why: String, note: &str| {
        let page = render::render(&facts(&incident, &box_id, web.time_zone), &signed, Some(&Notice::Refused(why)), note);
        (status, Html(page)).into_response()
    };
    let refuse = |status: StatusCode, why: String, note: &str| {
        web.metrics.count_action("refused");
        not_sent(status, why, note)
    };
    let Sent { action, by, note, ts } = match sent {
        Ok(Form(sent)) => sent,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, format!("表单无法读取，请重试：{}", error.body_text()), ""),
    };
    let work = match action.as_str() {
        "accept" => Work::Move(Action::Accept),
        "on_site" => Work::Move(Action::OnSite),
        "resolve" => Work::Move(Action::Resolve),
        _ => return refuse(StatusCode::BAD_REQUEST, "街道页面只能接单、到场、办结；其他操作请在社区盒子的页面上进行".into(), &note),
    };
    let state: IncidentState = match incident.row.state.parse() {
        Ok(state) => state,
        Err(error) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, error, &note),
    };
    let trimmed = note.trim();
    if let Err(why) = steps::check(&work, state, &incident.row.worst_severity, trimmed, false) {
        return refuse(StatusCode::CONFLICT, why, &note);
    }
    let by = match signed.m.as_deref() {
        Some(member) => member.to_string(),
        None if by.trim().is_empty() || by.trim().chars().count() > 64 => return refuse(StatusCode::BAD_REQUEST, "请填写姓名或手机号".into(), &note),
        None => by.trim().to_string(),
    };
    // The page's time, so that a form sent twice is one signature; a page left open too long is
    // sent again fresh.
    let ts = match ts {
        Some(ts) if ts <= now + 60_000 && ts >= now - FORM_MAX_AGE_MS => ts,
        _ => return refuse(StatusCode::BAD_REQUEST, "页面打开太久了，请刷新后再操作".into(), &note),
    };
    let note = (!trimmed.is_empty()).then(|| trimmed.chars().take(1000).collect::<String>());
    let body = signed_action(&secrets.acks(&box_id), id, &action, &by, note.as_deref(), ts);
    match relay::queue(&web, &incident.district, &box_id, body.into()).await {
        Ok(sequence) => {
            tracing::info!(box_id = %box_id, incident = id, action = %action, sequence, "worker's step from the hub's page queued for its box");
            Redirect::to(&format!("/b/{box_id}/incident/{id}?{}&done={action}#done", signed.query())).into_response()
        }
        // Counted `not_stored` by the relay.
        Err(_) => not_sent(StatusCode::SERVICE_UNAVAILABLE, "街道服务器暂时无法转发，请稍后重试".into(), note.as_deref().unwrap_or_default()),
    }
}

/// The action's JSON as the box verifies it (`crate::sources::mqtt::incident_acks::AckMessage`),
/// naming the box `acks` signs for.
fn signed_action(acks: &AckConfig, incident: i64, action: &str, by: &str, note: Option<&str>, ts: i64) -> String {
    let sig = acks.sign(incident, action, by, note, ts);
    serde_json::json!({"box": acks.box_id(), "incident": incident, "action": action, "by": by, "note": note, "ts": ts, "sig": sig}).to_string()
}

/// `GET /b/<box>/i/<code>`: a short link, checked, then sent on to the full one.
pub async fn short_link(State(web): State<Arc<Listener>>, Path((box_id, code)): Path<(String, String)>) -> Response {
    let Some(secrets) = &web.secrets else { return StatusCode::NOT_FOUND.into_response() };
    let expanded = if is_token(&box_id) { secrets.links(&box_id).expand(&code, now_ms().div_euclid(1000)) } else { Err(LinkError::BadSignature) };
    match expanded {
        Ok(path) => Redirect::to(&format!("/b/{box_id}{path}")).into_response(),
        Err(error) => {
            web.metrics.count_link_refused(if error == LinkError::Expired { "expired" } else { "bad_signature" });
            refused_link(&error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mqtt::incident_acks::Refusal;

    fn entry(actor: &str, action: &str) -> AuditEntry {
        AuditEntry { at_ms: 1_000, at_known: true, actor: actor.into(), action: action.into(), note: None }
    }

    #[test]
    fn the_worst_severity_is_the_worst_the_transitions_reached() {
        let entries = [entry("rules", "fired danger"), entry("rules", "changed warning"), entry("王芳 (hub)", "accept")];
        let alerts = [("fired".to_string(), 3.5), ("severity_changed".to_string(), 1.2)];
        let row = incident_row(7, "tilt".into(), "house-07".into(), "warning".into(), "accepted".into(), &entries, &alerts);
        assert_eq!((row.worst_severity.as_str(), row.severity.as_str()), ("danger", "warning"));
        assert_eq!((row.firings, row.last_value, row.sensor_normal), (1, 1.2, false));
        let cleared = [entry("rules", "fired alarm"), entry("rules", "sensor normal")];
        let row = incident_row(7, "r".into(), "s".into(), "alarm".into(), "open".into(), &cleared, &[]);
        assert!(row.sensor_normal && row.opened_known && row.last_value.is_nan());
    }

    fn said(notice: Option<Notice>) -> String {
        match notice {
            Some(Notice::Done(text)) => format!("done: {text}"),
            Some(Notice::Waiting(text)) => format!("waiting: {text}"),
            Some(Notice::Refused(text)) => format!("refused: {text}"),
            None => String::new(),
        }
    }

    #[test]
    fn the_page_says_sent_until_the_box_reports_the_state_the_step_leads_to() {
        let row = incident_row(7, "r".into(), "s".into(), "warning".into(), "open".into(), &[entry("rules", "fired warning")], &[]);
        let mut incident = HubIncident { district: "old-town".into(), box_down: false, box_since_ms: 0, row, timeline: Vec::new() };
        let zone = crate::local_time::DEFAULT;
        assert_eq!(said(delivery(&incident, None, zone)), "");
        assert!(said(delivery(&incident, Some("accept"), zone)).starts_with("waiting: 已发送：接单。盒子收到后执行"));
        incident.box_down = true;
        assert!(said(delivery(&incident, Some("accept"), zone)).starts_with("waiting: 已发送：接单。社区盒子目前离线（自 1月1日 08:00 起）"));
        assert!(said(delivery(&incident, None, zone)).starts_with("waiting: 社区盒子目前离线"), "offline is said without a step too");
        incident.row.state = "accepted".into();
        assert_eq!(said(delivery(&incident, Some("accept"), zone)), "done: 盒子已执行：接单");
        assert!(said(delivery(&incident, Some("resolve"), zone)).starts_with("waiting: 已发送：办结"), "another step still waits");
    }

    #[test]
    fn a_signed_action_names_its_box_and_verifies_there_only() {
        let secrets = DistrictSecrets::new("the-district-link-secret", "the-district-ack-secret").unwrap();
        let body = signed_action(&secrets.acks("east"), 12, "accept", "王芳", Some("on my way"), 1_795_392_000_000);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["box"], "east");
        let east = AckConfig::without_topic("the-district-ack-secret").for_box("east");
        let verified = east.verify(body.as_bytes(), 1_795_392_000_000).unwrap();
        assert_eq!((verified.incident, verified.action, verified.by.as_str()), (12, Action::Accept, "王芳"));
        let west = AckConfig::without_topic("the-district-ack-secret").for_box("west");
        assert_eq!(west.verify(body.as_bytes(), 1_795_392_000_000), Err(Refusal::OtherBox));
        assert!(AckConfig::without_topic("another-secret-of-length").for_box("east").verify(body.as_bytes(), 1_795_392_000_000).is_err());
        assert!(render::is_signed_action("on_site") && !render::is_signed_action("transfer"));
    }
}
