//! The page a grid worker opens from a notification and finishes the job on, on a phone: what,
//! where, how bad, since when, the house and its residents, the trend up to the latest reading,
//! who holds it, what has been done — and the steps the incident's state allows: accept, on
//! site (with a photo and, when the phone allows, its location), resolve (with a photo and a
//! note), hand over, add helpers, comment, and the grid leader's follow-up (回访) and close.
//!
//! The signed link is the credential; a forged or expired link gets 403 and nothing else. The
//! incident's photos are served under the same signed link. A successful step answers with a
//! redirect back to the page (a reload does not repeat it); a refused one shows the page again
//! with the reason and the note as typed.
//!
//! Layout: [`steps`] decides which steps the state allows (the buttons shown and the checks on
//! what is posted are the same list), [`form`] reads the posted form and its photo, [`render`]
//! writes the HTML.

mod form;
mod handover;
pub(crate) mod labels;
pub(crate) mod render;
pub(crate) mod steps;
#[cfg(test)]
mod tests;

/// The phone pages' stylesheet (one column, no horizontal scrolling at 390 px); the district
/// hub's board uses it too.
pub(crate) const PHONE_STYLE: &str = include_str!("page.css");

use super::WebState;
use crate::dispatch::roster::Member;
use crate::store::{CheckIn, IncidentRow, Step, Work};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// What the page needs beyond the store and the links.
#[derive(Debug, Clone)]
pub struct PageSetup {
    /// The roster in force: who can be handed an incident or added as a helper, and who is a
    /// grid leader.
    pub dispatch: crate::dispatch::InForce,
    /// The largest photo taken (`[http] photo_max_bytes`).
    pub photo_max_bytes: usize,
}

impl Default for PageSetup {
    fn default() -> Self {
        PageSetup { dispatch: Default::default(), photo_max_bytes: crate::config::DEFAULT_PHOTO_MAX_BYTES }
    }
}

/// The page's routes: the page, its form, and its photos.
pub fn routes(state: &WebState) -> Router<WebState> {
    // Room for the form's text fields around the largest photo; past it the upload is cut off
    // and answered with the size limit.
    let body_limit = state.page.photo_max_bytes.saturating_add(256 * 1024);
    Router::new().route("/incident/{id}", get(show).post(act).layer(DefaultBodyLimit::max(body_limit))).route("/incident/{id}/photo/{photo}", get(photo))
}

#[derive(Debug, Deserialize)]
pub struct Signed {
    /// The roster member the link was made for, if any.
    pub(crate) m: Option<String>,
    pub(crate) exp: i64,
    pub(crate) sig: String,
    /// The step just recorded (after the redirect; at the hub: sent), to say so.
    #[serde(default)]
    pub(crate) done: Option<String>,
}

impl Signed {
    /// The signed part of the query again, for the form, the photos and the redirect.
    pub(crate) fn query(&self) -> String {
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

/// Text made safe inside HTML (element text and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The refusal to send instead of the page, if the link does not check out.
fn refusal(state: &WebState, id: i64, signed: &Signed) -> Option<Response> {
    let Some(links) = &state.links else { return Some(StatusCode::NOT_FOUND.into_response()) };
    links.measure_clock_step(&state.clock);
    let checked = links.verify(id, signed.m.as_deref(), signed.exp, &signed.sig, state.clock.now().div_euclid(1000));
    if let Err(error) = checked {
        return Some(refused_link(&error));
    }
    // A member's own link works while the member is on the roster in force: one who left (or
    // whose phone was lost) must not accept a red incident and stop the reminders to the people
    // on duty (an outside tester). A roster without members binds no link.
    let roster = &state.page.dispatch.get().roster;
    let member = signed.m.as_deref().filter(|m| !roster.members.is_empty() && !roster.members.iter().any(|member| member.id == *m))?;
    Some(off_the_roster(member))
}

/// The page a member's own link gets once the member is no longer on the roster (403).
fn off_the_roster(member: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>链接不可用</title><style>{PHONE_STYLE}</style></head><body><header class=\"danger\"><h1>链接不可用</h1></header>\
         <section class=\"notice-no\"><p>这个链接属于已不在值班名册中的人员（{}），不能再使用。请向网格长索取新的链接。</p>\
         <p><small>the link's member is no longer on the roster</small></p></section></body></html>",
        escape(member)
    );
    (StatusCode::FORBIDDEN, Html(html)).into_response()
}

/// The page a forged, altered or expired link gets (403), on the box and at the hub: in
/// Chinese, with the reason in English below.
pub(crate) fn refused_link(error: &crate::links::LinkError) -> Response {
    let why = match error {
        crate::links::LinkError::Expired => "链接已过期，请向网格长或值班人员索取新的链接。",
        crate::links::LinkError::BadSignature => "链接无效（可能被改动或复制不完整），无法打开这个事件。",
    };
    let html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>链接不可用</title><style>{PHONE_STYLE}</style></head><body><header class=\"danger\"><h1>链接不可用</h1></header>\
         <section class=\"notice-no\"><p>{why}</p><p><small>{}</small></p></section></body></html>",
        escape(&error.to_string())
    );
    (StatusCode::FORBIDDEN, Html(html)).into_response()
}

/// Who is looking: the member the link was made for, or anybody on a group link.
#[derive(Debug, Clone, Copy)]
struct Viewer<'a> {
    /// The link's member id (on the roster in force: see [`refusal`]).
    member_id: Option<&'a str>,
    member: Option<&'a Member>,
}

impl Viewer<'_> {
    /// A grid leader for the incident's grid: may follow up and close.
    fn leads(&self, grid: Option<&str>) -> bool {
        self.member.is_some_and(|m| m.role == "grid_leader" && (m.grids.is_empty() || grid.is_some_and(|g| m.grids.iter().any(|mine| mine == g))))
    }
}

/// A person's name from the roster, else from the members known at start, else as given.
fn person_name(state: &WebState, person: &str) -> String {
    name_in(&state.page.dispatch.get(), &state.members, person)
}

/// A person's name from `dispatch`'s roster, else from `members`, else as given.
fn name_in(dispatch: &crate::dispatch::Dispatch, members: &std::collections::BTreeMap<String, String>, person: &str) -> String {
    let named = dispatch.roster.members.iter().find(|m| m.id == person).map(|m| m.name.clone());
    named.or_else(|| members.get(person).cloned()).unwrap_or_else(|| person.to_string())
}

/// What the page says above everything else after a step.
pub(crate) enum Notice {
    Done(String),
    Refused(String),
    /// Sent on, not yet done (the hub's action waiting for its box), or the box offline.
    #[cfg(feature = "cluster")]
    Waiting(String),
}

fn incident(state: &WebState, id: i64) -> Result<IncidentRow, Box<Response>> {
    match state.store.incidents(true).map(|rows| rows.into_iter().find(|r| r.id == id)) {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(Box::new(not_recorded(id))),
        Err(error) => {
            state.store.report_failure("reading an incident for its page", &error);
            let why = "本机存储暂时无法读取，事件无法显示。请稍后刷新；情况紧急请直接电话联系网格长。";
            Err(Box::new(message_page(StatusCode::SERVICE_UNAVAILABLE, "暂时无法打开", why, "the store cannot be read")))
        }
    }
}

/// The page a signed link to an incident the store does not hold gets (404): a number a store
/// running in memory gave (the card could not write) is gone after a restart, and the worker
/// who opens it must learn what happened and what to do, not read a bare "not found".
fn not_recorded(id: i64) -> Response {
    let why = format!(
        "本机没有第 {id} 号事件的记录。这条链接可能是在存储卡无法写入时发出的，设备重启后该编号已不再有效。\
         请打开同一告警最新消息中的链接，或电话联系网格长确认现场情况。"
    );
    message_page(StatusCode::NOT_FOUND, "找不到这个事件", &why, "no such incident: its number may have been given while the card could not write")
}

/// A phone page with one message in Chinese, and the reason in English below it.
fn message_page(status: StatusCode, title: &str, why: &str, english: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{PHONE_STYLE}</style></head><body><header class=\"danger\"><h1>{title}</h1></header>\
         <section class=\"notice-no\"><p>{}</p><p><small>{}</small></p></section></body></html>",
        escape(why),
        escape(english)
    );
    (status, Html(html)).into_response()
}

pub async fn show(State(state): State<WebState>, Path(id): Path<i64>, Query(signed): Query<Signed>) -> Response {
    if let Some(refused) = refusal(&state, id, &signed) {
        return refused;
    }
    // The steps earlier runs took on a copy in memory first: the page shows where it stands.
    state.store.wait_for_kept_steps().await;
    let notice = signed.done.as_deref().map(|done| Notice::Done(format!("已记录：{}", labels::action_label(done))));
    match incident(&state, id) {
        Ok(row) => Html(render::page(&state, &row, &signed, notice.as_ref(), "")).into_response(),
        Err(response) => *response,
    }
}

pub async fn act(State(state): State<WebState>, Path(id): Path<i64>, Query(signed): Query<Signed>, request: Request) -> Response {
    if let Some(refused) = refusal(&state, id, &signed) {
        return refused;
    }
    state.store.wait_for_kept_steps().await;
    let row = match incident(&state, id) {
        Ok(row) => row,
        Err(response) => return *response,
    };
    let refuse =
        |status: StatusCode, why: String, note: &str| (status, Html(render::page(&state, &row, &signed, Some(&Notice::Refused(why)), note))).into_response();
    let posted = match form::read(request, &state, state.page.photo_max_bytes).await {
        Ok(posted) => posted,
        Err(error) => return refuse(error.status(), error.to_string(), ""),
    };
    let dispatch = state.page.dispatch.get();
    let viewer =
        Viewer { member_id: signed.m.as_deref(), member: signed.m.as_deref().and_then(|m| dispatch.roster.members.iter().find(|member| member.id == m)) };
    let about = state.store.latest_alert(&row.rule, &row.sensor).ok().flatten();
    let grid = about.as_ref().and_then(|a| a.grid.as_deref());
    let work = match steps::work(&posted, &dispatch.roster, grid) {
        Ok(work) => work,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why, &posted.note),
    };
    let state_now = match row.state.parse() {
        Ok(state_now) => state_now,
        Err(error) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, error, &posted.note),
    };
    let note = posted.note.trim();
    if let Err(why) = steps::check(&work, state_now, &row.worst_severity, note, viewer.leads(grid)) {
        return refuse(StatusCode::CONFLICT, why, &posted.note);
    }
    // A member's own link acts for that member, whatever the form says.
    let (actor, person) = match viewer.member_id {
        Some(member) => (format!("{} ({member}, own link)", person_name(&state, member)), member.to_string()),
        None => {
            let by = posted.by.trim();
            if by.is_empty() || by.chars().count() > 64 {
                return refuse(StatusCode::BAD_REQUEST, "请填写姓名或手机号".into(), &posted.note);
            }
            (format!("{by} (link)"), by.to_string())
        }
    };
    let house = about.as_ref().and_then(|a| a.location).or_else(|| render::sensor_of(&state, &row.sensor).and_then(|s| s.location));
    // Where the worker was counts only for 到场; it is shown, never enforced.
    let check_in = posted.location.filter(|_| work == Work::Move(crate::dispatch::incident::Action::OnSite)).map(|(latitude, longitude, accuracy_m)| CheckIn {
        latitude,
        longitude,
        accuracy_m,
        distance_m: house.map(|[lat, lon]| distance_m(latitude, longitude, lat, lon)),
    });
    let note = (!note.is_empty()).then(|| note.chars().take(1000).collect::<String>());
    let step = Step { work: &work, actor: &actor, person: &person, note: note.as_deref(), photo: posted.photo.as_ref(), check_in };
    let now = state.clock.now();
    let recorded = state.store.record_work(id, step, now);
    if recorded.is_ok() {
        handover::tell(&state, id, about.as_ref(), &work, now).await;
    }
    match recorded {
        Ok(_) => Redirect::to(&format!("/incident/{id}?{}&done={}#done", signed.query(), steps::name(&work))).into_response(),
        // A step the incident's state does not allow (another worker was quicker), or a photo
        // that could not be kept: the reason is the worker's to read.
        Err(error) if error.downcast_ref::<crate::store::Refused>().is_some() => refuse(StatusCode::CONFLICT, error.to_string(), &posted.note),
        // A card that cannot write whose step could not be kept beside it either: not taken,
        // and the page says so rather than pretending (it would be gone at the next start).
        Err(error) if error.downcast_ref::<crate::store::NotKept>().is_some() => refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string(), &posted.note),
        // Any other failure of the store (a stalled card…): not taken either. The worker reads
        // what to do, in Chinese; SQLite's words go to the log.
        Err(error) => {
            state.store.report_failure("recording a worker's step from the incident page (refused)", &error);
            refuse(StatusCode::SERVICE_UNAVAILABLE, STEP_NOT_RECORDED.into(), &posted.note)
        }
    }
}

/// What the page says when the store failed to take a step.
const STEP_NOT_RECORDED: &str = "本机存储暂时无法写入：这一步没有记录，请稍后再试或电话告知网格长（the store could not record the step）";

/// One of the incident's photos, under the incident's signed link.
pub async fn photo(State(state): State<WebState>, Path((id, photo)): Path<(i64, i64)>, Query(signed): Query<Signed>) -> Response {
    if let Some(refused) = refusal(&state, id, &signed) {
        return refused;
    }
    match state.store.incident_photo(id, photo) {
        Ok(Some(found)) => {
            let headers = [
                (header::CONTENT_TYPE, found.content_type),
                (header::CACHE_CONTROL, "private, max-age=86400".into()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            ];
            (headers, found.bytes).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Great-circle distance in metres (haversine, mean Earth radius).
fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().min(1.0).asin()
}
