//! The worker's page as HTML: one column for a phone (no horizontal scrolling at 390 px), Chinese
//! throughout, times in the installation's zone with how long ago, no framework — a few lines
//! of inline style and script.
//!
//! The page is written from [`Facts`], read before: on the box from its store and inventory
//! ([`Facts::on_box`]), at the district hub from PostgreSQL (`crate::cluster::hub::pages`), so
//! both serve the same page.

use super::labels::{action_label, state_label};
use super::steps::{self, Offer};
use super::{escape, name_in, Notice, Signed, Viewer};
use crate::alert::Alert;
use crate::config::SensorConfig;
use crate::dispatch::Dispatch;
use crate::live::Latest;
use crate::sinks::text::{self, Wording};
use crate::store::{FieldTrend, IncidentRow, TimelineEntry};
use crate::web::WebState;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::PHONE_STYLE as STYLE;
const SCRIPT: &str = include_str!("page.js");

/// What the page takes from the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// On the box: every step the state allows, with a photo up to this many bytes and the
    /// location on 到场.
    Everything { photo_max_bytes: usize },
    /// At the district hub: the steps a signed action carries to the box (接单, 到场, 办结,
    /// 关闭) with their note; no photo, location or hand-over.
    SignedActions,
}

/// Whether a step travels as a signed action (`crate::sources::mqtt::incident_acks`).
pub fn is_signed_action(step: &str) -> bool {
    ["accept", "on_site", "resolve", "close"].contains(&step)
}

/// What the page shows, read before it is written.
#[derive(Debug)]
pub struct Facts<'a> {
    pub row: &'a IncidentRow,
    /// The incident's latest alert (the house, the rule's sentence, what to do); none at the hub.
    pub about: Option<Alert>,
    /// Where the incident is when there is no alert to name the house (at the hub: the box).
    pub place: Option<String>,
    /// The sensor in the box's inventory; none at the hub.
    pub sensor: Option<&'a SensorConfig>,
    /// The sensor's latest reading (the box's live table) and its stored hourly trend.
    pub latest: Option<Latest>,
    pub trend: Vec<FieldTrend>,
    /// The alarms of the same house folded into this incident (not told on their own), each
    /// with its latest alert; none at the hub.
    pub folded: Vec<(IncidentRow, Option<Alert>)>,
    /// Who holds the incident: (person, `owner` or `helper`).
    pub people: Vec<(String, String)>,
    pub timeline: Vec<TimelineEntry>,
    /// The roster in force (empty at the hub: people are shown as the box recorded them).
    pub dispatch: Arc<Dispatch>,
    /// Members known at start, by id (names for links of members no longer on the roster).
    pub members: Arc<BTreeMap<String, String>>,
    pub time_zone: chrono_tz::Tz,
    pub now: i64,
    /// The path the page is served under: `` on the box, `/b/<box>` at the hub.
    pub base: String,
    pub taking: Taking,
}

impl<'a> Facts<'a> {
    /// The facts of `row` on the box: its store, inventory and live readings.
    pub fn on_box(state: &'a WebState, row: &'a IncidentRow) -> Facts<'a> {
        let now = state.clock.now();
        let sensor = sensor_of(state, &row.sensor);
        let latest = state.installer.as_ref().zip(sensor).and_then(|(installer, sensor)| {
            let index = installer.sensors.iter().position(|s| s.id == sensor.id)?;
            installer.live.latest().into_iter().nth(index)
        });
        Facts {
            row,
            about: state.store.latest_alert(&row.rule, &row.sensor).ok().flatten(),
            place: None,
            sensor,
            latest,
            trend: state.store.trend(&row.sensor, now.div_euclid(3_600_000) - crate::trend::KEEP_HOURS).unwrap_or_default(),
            folded: folded_into(state, row.id),
            people: state.store.incident_people(row.id).unwrap_or_default(),
            timeline: state.store.incident_timeline(row.id).unwrap_or_default(),
            dispatch: state.page.dispatch.get(),
            members: state.members.clone(),
            time_zone: state.time_zone,
            now,
            base: String::new(),
            taking: Taking::Everything { photo_max_bytes: state.page.photo_max_bytes },
        }
    }

    fn person_name(&self, person: &str) -> String {
        name_in(&self.dispatch, &self.members, person)
    }
}

/// What an audit entry says, in Chinese where the page knows the words (a device fault's level
/// as "设备故障").
fn entry_label(facts: &Facts<'_>, action: &str) -> String {
    let device = facts.about.as_ref().is_some_and(text::is_device);
    let severity = |s: &str| match s {
        _ if device => text::device_level(true),
        "danger" => "红色预警",
        "alarm" => "橙色预警",
        "warning" => "黄色预警",
        "notice" => "蓝色提示",
        _ => "",
    };
    if let Some(person) = action.strip_prefix("transfer to ") {
        return format!("转交给 {}", facts.person_name(person));
    }
    if let Some(person) = action.strip_prefix("helper ") {
        return format!("加协助人 {}", facts.person_name(person));
    }
    let words: Vec<&str> = action.split(' ').collect();
    match words.as_slice() {
        ["fired", level] => format!("触发{}", severity(level)),
        ["changed", level] => format!("级别变为{}", severity(level)),
        ["sensor", "normal"] => "传感器读数恢复正常".into(),
        ["closed", "(minor,", ..] => "自动关闭（轻微，读数已恢复）".into(),
        ["re-opened", level, ..] => format!("再次触发{}，事件重新打开", severity(level)),
        ["folded", "into", into] => format!("同一房屋已有未结的{into}，本告警并入该事件处理，未另行通知"),
        ["unfolded"] => "比同一房屋未结的告警更严重，已单独通知".into(),
        ["told"] => "所并入的事件不再涵盖本告警，已单独通知".into(),
        ["reminded", ..] => format!("催办：{}", action.trim_start_matches("reminded ")),
        ["escalated", ..] => escalation_label(action.trim_start_matches("escalated ")),
        [single] => action_label(single).to_string(),
        _ => action.to_string(),
    }
}

/// An escalation's audit line ("(accepted) to 陈刚, 王芳": the deadline missed, who was told) in
/// Chinese.
fn escalation_label(line: &str) -> String {
    let (deadline, told) = line.split_once(" to ").unwrap_or((line, ""));
    let missed = match deadline {
        "(accepted)" => "超时未接单",
        "(on site)" => "超时未到场",
        "(resolved)" => "超时未办结",
        other => other,
    };
    format!("督办（{missed}）：通知 {told}")
}

/// "刚刚", "12 分钟前", "3 小时前", "2 天前".
pub fn ago(ms: i64, now_ms: i64) -> String {
    let minutes = (now_ms - ms).max(0) / 60_000;
    match minutes {
        0 => "刚刚".into(),
        1..=59 => format!("{minutes} 分钟前"),
        60..=1439 => format!("{} 小时前", minutes / 60),
        _ => format!("{} 天前", minutes / 1440),
    }
}

/// The sensor's entry in the running inventory, when the page runs inside the daemon.
pub fn sensor_of<'a>(state: &'a WebState, sensor: &str) -> Option<&'a SensorConfig> {
    state.installer.as_ref()?.sensors.iter().find(|s| &*s.id == sensor)
}

/// The box's page of `row`; `notice` says what just happened, `note` is the note as typed after
/// a refusal.
/// The open incidents folded into incident `id`, worst first, with their latest alerts.
fn folded_into(state: &WebState, id: i64) -> Vec<(IncidentRow, Option<Alert>)> {
    let mut open: Vec<IncidentRow> = state.store.incidents(false).unwrap_or_default().into_iter().filter(|r| r.folded_into == Some(id)).collect();
    open.sort_by_key(|r| (["danger", "alarm", "warning", "notice"].iter().position(|s| *s == r.severity), r.id));
    open.into_iter()
        .map(|r| {
            let alert = state.store.latest_alert(&r.rule, &r.sensor).ok().flatten();
            (r, alert)
        })
        .collect()
}

pub fn page(state: &WebState, row: &IncidentRow, signed: &Signed, notice: Option<&Notice>, note: &str) -> String {
    render(&Facts::on_box(state, row), signed, notice, note)
}

/// The whole page of `facts`.
pub fn render(facts: &Facts<'_>, signed: &Signed, notice: Option<&Notice>, note: &str) -> String {
    let Facts { row, now, time_zone: zone, sensor, .. } = *facts;
    let about = facts.about.as_ref();
    let grid = about.and_then(|a| a.grid.as_deref());
    let viewer =
        Viewer { member_id: signed.m.as_deref(), member: signed.m.as_deref().and_then(|m| facts.dispatch.roster.members.iter().find(|member| member.id == m)) };
    let incident_state = row.state.parse().unwrap_or(crate::dispatch::incident::State::Closed);
    let red = steps::is_red(&row.worst_severity);
    let mut offers = steps::offered(incident_state, red, viewer.leads(grid));
    if facts.taking == Taking::SignedActions {
        offers.retain(|offer| is_signed_action(offer.name));
    }
    let query = escape(&signed.query());
    let mut html = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>#{id} {level}</title><style>{STYLE}</style></head><body>",
        id = row.id,
        level = level_of(row, about).1,
    );
    header(&mut html, row, about, facts.place.as_deref());
    match notice {
        Some(Notice::Done(done)) => {
            let _ = write!(html, "<section id=\"done\" class=\"notice-ok\">{}</section>", escape(done));
        }
        Some(Notice::Refused(why)) => {
            let _ = write!(html, "<section id=\"done\" class=\"notice-no\">未记录：{}</section>", escape(why));
        }
        #[cfg(feature = "cluster")]
        Some(Notice::Waiting(what)) => {
            let _ = write!(html, "<section id=\"done\" class=\"notice-wait\">{}</section>", escape(what));
        }
        None => {}
    }
    summary(&mut html, row, about, zone, now);
    folded_into_hint(&mut html, facts);
    let house_at = about.and_then(|a| a.location).or_else(|| sensor.and_then(|s| s.location));
    actions(&mut html, facts, &offers, red, viewer, &query, grid, house_at, note);
    folded_list(&mut html, facts);
    // The hub has no inventory: nothing to say of the house there.
    if facts.taking != Taking::SignedActions {
        house(&mut html, about, sensor);
    }
    trend(&mut html, facts);
    people(&mut html, facts);
    history(&mut html, facts, &query);
    let _ = write!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

fn severity_zh(severity: &str) -> &'static str {
    match severity {
        "danger" => "红色预警",
        "alarm" => "橙色预警",
        "warning" => "黄色预警",
        _ => "蓝色提示",
    }
}

/// The incident's level as the page shows it: its style class and words — a device fault's
/// grey and "设备故障", not a warning colour.
fn level_of<'a>(row: &'a IncidentRow, about: Option<&Alert>) -> (&'a str, &'static str) {
    if about.is_some_and(text::is_device) {
        ("device", text::device_level(true))
    } else {
        (row.severity.as_str(), severity_zh(&row.severity))
    }
}

/// The page's head: level ([`level_of`]), number, state, place.
fn header(html: &mut String, row: &IncidentRow, about: Option<&Alert>, place: Option<&str>) {
    let place = about.map(text::house).or_else(|| place.map(str::to_string)).unwrap_or_default();
    let (class, level) = level_of(row, about);
    let _ = write!(
        html,
        "<header class=\"{sev}\"><h1>{level} #{id} · {state}</h1><p>{place}（{sensor}）</p></header>",
        sev = escape(class),
        id = row.id,
        state = state_label(&row.state),
        place = escape(&place),
        sensor = escape(&row.sensor),
    );
}

/// What this incident was folded into, said before anything is offered to do.
fn folded_into_hint(html: &mut String, facts: &Facts<'_>) {
    if let Some(into) = facts.row.folded_into {
        let _ = write!(
            html,
            "<section class=\"hint\"><p>同一房屋已有未结的 #{into}，本告警并入该事件处理，未另行通知；#{into} 办结时本告警一并办结（届时仍在报警的红色预警会单独通知）。</p></section>"
        );
    }
}

/// What was folded into this incident, after what there is to do (an outside tester's phone
/// showed eleven of them on its first screen and 接单 on the second): its reds in view — another
/// box of the house at red — the rest counted by level, listed on demand. Some of them may have
/// been told before this one took them in: the heading does not say they were not.
fn folded_list(html: &mut String, facts: &Facts<'_>) {
    if facts.folded.is_empty() {
        return;
    }
    let wording = Wording { chinese: true, time_zone: facts.time_zone };
    let item = |(row, alert): &(IncidentRow, Option<Alert>)| {
        let what = match alert {
            Some(alert) => text::sentence(alert, wording),
            None => format!("{} · {}", row.rule, row.sensor),
        };
        format!("<li>#{} {} · {}</li>", row.id, severity_zh(&row.severity), escape(&what))
    };
    let (reds, rest): (Vec<_>, Vec<_>) = facts.folded.iter().partition(|(row, _)| steps::is_red(&row.severity));
    html.push_str("<section><h2>同一房屋的其他告警（已并入本事件处理）</h2>");
    if !reds.is_empty() {
        html.push_str("<p>其中红色预警：</p><ul>");
        reds.iter().for_each(|folded| html.push_str(&item(folded)));
        html.push_str("</ul>");
    }
    if !rest.is_empty() {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for (row, _) in &rest {
            let level = severity_zh(&row.severity);
            match counts.iter_mut().find(|(l, _)| *l == level) {
                Some((_, n)) => *n += 1,
                None => counts.push((level, 1)),
            }
        }
        let counted: Vec<String> = counts.iter().map(|(level, n)| format!("{level} {n} 条")).collect();
        let _ = write!(html, "<details><summary>{}{}（点开查看）</summary><ul>", if reds.is_empty() { "" } else { "另有" }, counted.join("、"));
        rest.iter().for_each(|folded| html.push_str(&item(folded)));
        html.push_str("</ul></details>");
    }
    html.push_str("<p><small>办结本事件时，以上告警一并办结；届时仍在报警的红色预警会单独通知。</small></p></section>");
}

fn summary(html: &mut String, row: &IncidentRow, about: Option<&Alert>, zone: chrono_tz::Tz, now: i64) {
    let wording = Wording { chinese: true, time_zone: zone };
    html.push_str("<section>");
    match about {
        Some(alert) => {
            let _ = write!(html, "<p><b>{}</b></p>", escape(&text::sentence(alert, wording)));
        }
        None => {
            let _ = write!(html, "<p>规则 <b>{}</b> · 传感器 <b>{}</b></p>", escape(&row.rule), escape(&row.sensor));
        }
    }
    let unit = about.map_or("", |a| a.unit.as_str());
    let _ = write!(
        html,
        "<p>最新判定值 <b>{value}</b>{normal}</p><p>开始于 {since}（{ago}）· 触发 {firings} 次</p>",
        // Unknown at the hub until the incident's alert events have come up.
        value = if row.last_value.is_finite() { escape(&text::value(row.last_value, unit)) } else { "未知".into() },
        normal = if row.sensor_normal { " · <b>读数已恢复正常</b>" } else { "" },
        since = if row.opened_known { crate::local_time::short(row.opened_ms, zone, true) } else { text::unknown_time(true).into() },
        ago = if row.opened_known { ago(row.opened_ms, now) } else { "时间未知".into() },
        firings = row.firings.max(1),
    );
    if let Some(alert) = about {
        if row.state != "resolved" && row.state != "closed" {
            let _ = write!(html, "<p class=\"hint\">{}</p>", text::what_to_do(alert, wording));
        }
        let _ = write!(html, "<p><small>判定条件：{}</small></p>", escape(&alert.condition));
    }
    html.push_str("</section>");
}

#[allow(clippy::too_many_arguments)]
fn actions(
    html: &mut String,
    facts: &Facts<'_>,
    offers: &[Offer],
    red: bool,
    viewer: Viewer<'_>,
    query: &str,
    grid: Option<&str>,
    house: Option<[f64; 2]>,
    note: &str,
) {
    let row = facts.row;
    let (id, base) = (row.id, &facts.base);
    html.push_str("<section><h2>处理</h2>");
    if offers.is_empty() {
        html.push_str(if row.state == "resolved" {
            "<p>已办结，等待网格长回访和关闭。</p></section>"
        } else {
            "<p>事件已关闭，无需操作。</p></section>"
        });
        return;
    }
    let has = |name: &str| offers.iter().any(|o| o.name == name);
    let house_data = house.map(|[lat, lon]| format!(" data-house=\"{lat},{lon}\"")).unwrap_or_default();
    // The hub's form carries no photo; its `ts` makes a form sent twice one signed action (the
    // box takes a signature once).
    let (enctype, sent_at) = match facts.taking {
        Taking::Everything { .. } => ("multipart/form-data", String::new()),
        Taking::SignedActions => ("application/x-www-form-urlencoded", format!("<input type=\"hidden\" name=\"ts\" value=\"{}\">", facts.now)),
    };
    let _ = write!(html, "<form id=\"act\" method=\"post\" enctype=\"{enctype}\" action=\"{base}/incident/{id}?{query}\"{house_data}>{sent_at}");
    match (viewer.member_id, viewer.member) {
        (Some(_), Some(member)) => {
            let _ = write!(html, "<p>处理人：<b>{}</b></p>", escape(&member.name));
        }
        (Some(id), None) => {
            let _ = write!(html, "<p>处理人：<b>{}</b></p>", escape(&facts.person_name(id)));
        }
        (None, _) => html.push_str("<label for=\"by\">您的姓名或手机号</label><input id=\"by\" name=\"by\" autocomplete=\"name\" required>"),
    }
    if red && matches!(row.state.as_str(), "open" | "accepted") {
        html.push_str("<p class=\"hint\">红色预警：须先到场（拍照），再写明处理情况办结。</p>");
    }
    if row.state == "resolved" && !has("close") {
        html.push_str("<p class=\"hint\">已办结，等待网格长回访和关闭。</p>");
    }
    if let Some(accept) = offers.iter().find(|o| o.name == "accept") {
        let _ = write!(html, "<button name=\"action\" value=\"accept\">{}</button>", accept.label);
    }
    let placeholder = if has("follow_up") {
        "回访情况 / 留言"
    } else if red {
        "处理情况（红色预警办结时必填）/ 留言"
    } else {
        "处理情况 / 留言"
    };
    let _ = write!(html, "<label for=\"note\">说明</label><textarea id=\"note\" name=\"note\" placeholder=\"{placeholder}\">{}</textarea>", escape(note));
    let photo_max_bytes = match facts.taking {
        Taking::Everything { photo_max_bytes } => Some(photo_max_bytes),
        Taking::SignedActions => None,
    };
    if let Some(photo_max_bytes) = photo_max_bytes.filter(|_| has("on_site") || has("resolve")) {
        html.push_str(
            "<label for=\"photo\">现场照片</label><input id=\"photo\" name=\"photo\" type=\"file\" accept=\"image/*\" capture=\"environment\">\
             <small id=\"photo-status\"></small><img id=\"preview\" class=\"preview\" alt=\"照片预览\" hidden>",
        );
        let _ = write!(html, "<p><small>照片上限 {}</small></p>", super::form::size_label(photo_max_bytes));
    }
    if has("on_site") && photo_max_bytes.is_some() {
        html.push_str("<input type=\"hidden\" name=\"lat\"><input type=\"hidden\" name=\"lon\"><input type=\"hidden\" name=\"acc\"><p><small id=\"where-status\">到场时可记录位置（不强制）</small></p>");
    }
    for offer in offers.iter().filter(|o| o.name != "accept" && (o.main || ["on_site", "resolve", "close"].contains(&o.name))) {
        let _ = write!(html, "<button name=\"action\" value=\"{}\">{}</button>", offer.name, offer.label);
    }
    if has("comment") || has("transfer") {
        html.push_str("<div class=\"row\">");
        if has("comment") {
            html.push_str("<button class=\"more\" name=\"action\" value=\"comment\">发留言</button>");
        }
        html.push_str("</div>");
    }
    let candidates: Vec<_> =
        facts.dispatch.roster.members.iter().filter(|m| m.grids.is_empty() || grid.is_none_or(|g| m.grids.iter().any(|mine| mine == g))).collect();
    if has("transfer") && !candidates.is_empty() {
        html.push_str("<label for=\"person\">转交或请人协助</label><select id=\"person\" name=\"person\"><option value=\"\">选择人员…</option>");
        for member in candidates {
            let _ = write!(html, "<option value=\"{}\">{}（{}）</option>", escape(&member.id), escape(&member.name), role_zh(&member.role));
        }
        html.push_str("</select><div class=\"row\"><button class=\"more\" name=\"action\" value=\"transfer\">转交</button><button class=\"more\" name=\"action\" value=\"helper\">加协助人</button></div>");
    }
    html.push_str("</form></section>");
}

fn role_zh(role: &str) -> &str {
    match role {
        "worker" => "网格员",
        "grid_leader" => "网格长",
        "secretary" => "书记",
        "street_office" => "街道",
        "housing_office" => "房屋安全办",
        other => other,
    }
}

/// The house and who lives there: the inventory's facts.
fn house(html: &mut String, about: Option<&Alert>, sensor: Option<&SensorConfig>) {
    html.push_str("<section><h2>房屋与住户</h2>");
    if let Some(alert) = about {
        let _ = write!(html, "<p>{}", escape(&text::house(alert)));
        if let Some(grid) = &alert.grid {
            let _ = write!(html, " · 网格 {}", escape(grid));
        }
        html.push_str("</p>");
    }
    if let Some(sensor) = sensor {
        let mut facts = Vec::new();
        if let Some(storeys) = sensor.place.storeys {
            facts.push(format!("{storeys} 层"));
        }
        if let Some(structure) = &sensor.place.structure {
            facts.push(format!("结构：{}", structure_zh(structure)));
        }
        if !facts.is_empty() {
            let _ = write!(html, "<p>{}</p>", escape(&facts.join(" · ")));
        }
        let shown: Vec<_> = sensor.tags.iter().filter(|(name, _)| !["storeys", "structure", "use", "water_class"].contains(name)).collect();
        if !shown.is_empty() {
            html.push_str("<p>");
            for (name, value) in shown {
                let _ = write!(html, "<span class=\"chip\">{}：{}</span>", escape(tag_zh(name)), escape(value));
            }
            html.push_str("</p>");
        }
    }
    if let Some([latitude, longitude]) = about.and_then(|a| a.location).or_else(|| sensor.and_then(|s| s.location)) {
        // geo: opens the phone's map app; Amap's marker page is what most phones here have.
        let _ = write!(
            html,
            "<p>坐标 {latitude:.5}, {longitude:.5}<br><a href=\"geo:{latitude},{longitude}\">在地图中打开</a> · <a href=\"https://uri.amap.com/marker?position={longitude},{latitude}\">高德地图</a></p>"
        );
    }
    if about.is_none() && sensor.is_none() {
        html.push_str("<p class=\"muted\">清单中没有这处房屋的资料。</p>");
    }
    html.push_str("</section>");
}

fn structure_zh(structure: &str) -> &str {
    match structure {
        "brick" | "masonry" => "砖混",
        "brick-wood" | "brick_wood" => "砖木",
        "wood" => "木结构",
        "concrete" => "钢筋混凝土",
        "earth" => "土木",
        other => other,
    }
}

fn tag_zh(name: &str) -> &str {
    match name {
        "resident" | "residents" => "住户",
        "elderly" => "老人",
        "contact" => "联系人",
        "phone" => "电话",
        "note" => "备注",
        "built" => "建成",
        other => other,
    }
}

/// The hourly trend of the sensor's fields, ending with its latest reading.
fn trend(html: &mut String, facts: &Facts<'_>) {
    let Facts { sensor, now, trend: stored, latest, .. } = facts;
    let latest_at = latest.as_ref().and_then(|l| l.at_ms);
    if stored.is_empty() && latest_at.is_none() {
        return;
    }
    let _ = write!(html, "<section><h2>趋势（近 {} 小时，至最新读数）</h2>", crate::trend::KEEP_HOURS);
    if let (Some(at), Some(latest)) = (latest_at, &latest) {
        let tilt = sensor.is_some_and(|s| s.kind == gridwatch_rules::SensorKind::Tilt);
        let values: Vec<String> = latest
            .fields
            .iter()
            .map(|(field, value)| {
                if tilt && (field == "x" || field == "y") {
                    format!("{field} {}", text::value(*value, "°"))
                } else {
                    format!("{field} {}", text::rounded(*value, ""))
                }
            })
            .collect();
        let _ = write!(html, "<p>最新读数 {}（{}，{}）</p>", escape(&values.join(" · ")), crate::local_time::clock_time(at, facts.time_zone), ago(at, *now));
    }
    for FieldTrend { field, hours } in stored {
        let mut series: Vec<(f64, f64, f64)> = hours.iter().map(|&(_, min, mean, max)| (min, mean, max)).collect();
        // The hour being filled is in the live table, not yet in the store: end at the latest reading.
        if let Some(&(_, value)) = latest.as_ref().and_then(|l| l.fields.iter().find(|(f, _)| f == field)) {
            series.push((value, value, value));
        }
        let low = series.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let high = series.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        let _ = write!(html, "<p class=\"trend\">{} <small>{low:.3} … {high:.3}</small></p>{}", escape(field), crate::trend::sparkline(&series, 340, 48));
    }
    html.push_str("</section>");
}

/// Who holds the incident.
fn people(html: &mut String, facts: &Facts<'_>) {
    let people = &facts.people;
    if people.is_empty() {
        return;
    }
    // With the roster's phone number as a tel: link: a hand-over is not messaged yet, so the
    // worker calls.
    let named = |part: &str| {
        let shown = people.iter().filter(|(_, p)| p == part).map(|(person, _)| {
            let name = escape(&facts.person_name(person));
            match facts.dispatch.roster.members.iter().find(|m| &m.id == person).map(|m| m.phone.as_str()).filter(|p| !p.is_empty()) {
                Some(phone) => format!("{name} <a href=\"tel:{0}\">{0}</a>", escape(phone)),
                None => name,
            }
        });
        shown.collect::<Vec<_>>().join("、")
    };
    let _ = write!(html, "<section><h2>处理人</h2><p>负责：<b>{}</b></p>", named("owner"));
    let helpers = named("helper");
    if !helpers.is_empty() {
        let _ = write!(html, "<p>协助：{helpers}</p>");
    }
    html.push_str("</section>");
}

/// Who acted, as people read it: "王芳" for "王芳 (wang, own link)", the typed name for
/// "Li (link)", 系统 for the rules.
fn shown_actor(actor: &str) -> &str {
    match actor {
        "rules" => "系统",
        "dispatch" => "派单",
        _ if actor.ends_with(" (link)") => actor.trim_end_matches(" (link)"),
        _ if actor.ends_with(", own link)") => actor.split(" (").next().unwrap_or(actor),
        other => other,
    }
}

/// The audit trail, newest first, with notes, photos and check-ins.
fn history(html: &mut String, facts: &Facts<'_>, query: &str) {
    let (id, base, now) = (facts.row.id, &facts.base, facts.now);
    html.push_str("<section><h2>记录</h2><ul class=\"history\">");
    for TimelineEntry { entry, photos, check_in } in facts.timeline.iter().rev() {
        let class = match entry.action.as_str() {
            "comment" => "comment",
            _ if !["rules", "dispatch"].contains(&entry.actor.as_str()) => "worker",
            _ => "",
        };
        let actor = shown_actor(&entry.actor);
        let _ = write!(
            html,
            "<li class=\"{class}\"><b>{label}</b> · {actor}<br><small>{ago} · {at}</small>",
            label = escape(&entry_label(facts, &entry.action)),
            actor = escape(actor),
            ago = if entry.at_known { ago(entry.at_ms, now) } else { "时间未知".into() },
            at = if entry.at_known { crate::local_time::datetime(entry.at_ms, facts.time_zone) } else { text::unknown_time(true).into() },
        );
        if let Some(note) = &entry.note {
            let _ = write!(html, "<div class=\"note\">{}</div>", escape(note));
        }
        if let Some(at) = check_in {
            let accuracy = at.accuracy_m.map(|a| format!("，误差约 {a:.0} 米")).unwrap_or_default();
            let distance = at.distance_m.map(|d| format!("，距房屋 {d:.0} 米")).unwrap_or_default();
            let _ = write!(html, "<div><small>到场位置 {:.5}, {:.5}{accuracy}{distance}</small></div>", at.latitude, at.longitude);
        }
        for photo in photos {
            let _ = write!(html, "<a href=\"{base}/incident/{id}/photo/{photo}?{query}\"><img class=\"thumb\" src=\"{base}/incident/{id}/photo/{photo}?{query}\" alt=\"现场照片\" loading=\"lazy\"></a>");
        }
        html.push_str("</li>");
    }
    html.push_str("</ul></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escalation_reads_in_chinese() {
        assert_eq!(escalation_label("(accepted) to 陈刚, 王芳"), "督办（超时未接单）：通知 陈刚, 王芳");
        assert_eq!(escalation_label("(on site) to 孙书记"), "督办（超时未到场）：通知 孙书记");
    }

    #[test]
    fn times_read_as_how_long_ago() {
        assert_eq!(ago(0, 30_000), "刚刚");
        assert_eq!(ago(0, 12 * 60_000 + 5_000), "12 分钟前");
        assert_eq!(ago(0, 3 * 3_600_000), "3 小时前");
        assert_eq!(ago(0, 50 * 3_600_000), "2 天前");
        assert_eq!(ago(10_000, 0), "刚刚", "a clock a little behind is not the future");
    }
}
