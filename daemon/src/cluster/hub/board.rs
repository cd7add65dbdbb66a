//! The district's board (`/`, `/board` on the hub's listener): one phone page in Chinese listing
//! every box of the district — online or offline since when, its last alarm, its open incidents
//! by severity — the worst first (offline boxes, then by their worst open incident). Read from
//! PostgreSQL (`boxes`, `box_incidents`, `incident_transitions`, `alert_events`): what the
//! boxes reported, as the box's own pages would show it; under an offline box, what the hub's
//! standby evaluator finds firing on its 4G sensors (`standby_alerts`). A box whose lease the active
//! hub finds gone is offline here at once, also while the webhook has not taken its `box-down`
//! (PostgreSQL's flag waits for that). Refreshed by the browser every 30 s.
//!
//! Reuses the phone pages' stylesheet and words of the box ([`crate::web::incident_page`],
//! [`crate::web::board::level_zh`]); names of people, links and secrets are never on it.

use super::web::Listener;
use crate::local_time;
use crate::sinks::text;
use crate::web::board::level_zh;
use crate::web::incident_page::labels::state_label;
use crate::web::incident_page::{escape, PHONE_STYLE};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Severities, worst first.
const SEVERITIES: [&str; 4] = ["danger", "alarm", "warning", "notice"];
/// Open incidents named per box; the rest are counted.
const LISTED: usize = 5;

/// What the page adds to the phone pages' stylesheet.
const STYLE: &str = "header small{color:inherit;opacity:.85}section.down{border-left:6px solid #c62828}\
section h2 small{font-weight:normal;color:#666;margin-left:6px}\
.up{color:#1b5e20;font-weight:bold}.off{color:#b71c1c;font-weight:bold}\
.chip.danger{background:#c62828;color:#fff}.chip.alarm{background:#e65100;color:#fff}\
.chip.warning{background:#f9a825}.chip.notice{background:#1565c0;color:#fff}.chip.device{background:#9e9e9e;color:#fff}\
ul.open{list-style:none;margin:6px 0 0;padding:0}ul.open li{border-top:1px solid #eceff1;padding:4px 0}\
nav{margin:10px 8px}";

/// A box as the board shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxView {
    pub box_id: String,
    pub district: String,
    pub down: bool,
    /// Down by its lease (missing for long enough), but its `box-down` not yet taken by the
    /// webhook: the down flag in PostgreSQL still says online.
    pub down_untold: bool,
    /// When it went down or came back (else when it was first seen), ms.
    pub since_ms: i64,
    /// When its newest alert event happened (the box's clock), ms.
    pub last_alert_ms: Option<i64>,
    pub open: Vec<OpenView>,
    /// While it is down: what the hub judged firing on its 4G sensors.
    pub standby: Vec<StandbyView>,
}

/// A rule firing on a dead box's 4G sensor, as the hub's standby evaluator judged it.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyView {
    pub sensor: String,
    pub rule: String,
    pub severity: String,
    /// Its latest event (the sensor's clock), ms.
    pub at_ms: i64,
}

/// An open incident of a box.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenView {
    pub incident_id: i64,
    pub rule: String,
    pub sensor: String,
    pub severity: String,
    pub state: String,
    /// Its first transition (the box's clock), ms.
    pub opened_ms: Option<i64>,
    /// A device fault (for installers): listed as "设备故障" in grey, never counted as a
    /// warning level of the box's houses.
    pub device: bool,
}

impl BoxView {
    /// The rank of its worst open incident of a house or water point (0 = danger; 4 when none,
    /// or only device faults).
    fn worst(&self) -> usize {
        self.open.iter().filter(|i| !i.device).map(|i| severity_rank(&i.severity)).min().unwrap_or(SEVERITIES.len())
    }

    fn count(&self, severity: &str) -> usize {
        self.open.iter().filter(|i| !i.device && i.severity == severity).count()
    }

    /// Its open incidents of houses and water points.
    fn alarms(&self) -> usize {
        self.open.len() - self.device_faults()
    }

    fn device_faults(&self) -> usize {
        self.open.iter().filter(|i| i.device).count()
    }
}

/// Where an open incident is listed: houses' alarms by severity first, device faults after.
fn listing_rank(incident: &OpenView) -> (bool, usize) {
    (incident.device, severity_rank(&incident.severity))
}

fn severity_rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(SEVERITIES.len() - 1)
}

/// Offline boxes first, then by worst open incident, then by how many are open (device faults
/// not counted), then by name.
pub fn sort_worst_first(boxes: &mut [BoxView]) {
    boxes.sort_by(|a, b| (!a.down, a.worst(), std::cmp::Reverse(a.alarms()), &a.box_id).cmp(&(!b.down, b.worst(), std::cmp::Reverse(b.alarms()), &b.box_id)));
}

/// Every box with its open incidents, from PostgreSQL.
async fn read(db: &tokio_postgres::Client) -> anyhow::Result<Vec<BoxView>> {
    let rows = db
        .query(
            "SELECT b.box_id, b.district, b.down, (extract(epoch FROM COALESCE(b.down_changed, b.first_seen)) * 1000)::BIGINT,
                    (SELECT max(a.at_ms) FROM alert_events a WHERE a.box_id = b.box_id)
             FROM boxes b",
            &[],
        )
        .await?;
    let mut boxes: BTreeMap<String, BoxView> = rows
        .iter()
        .map(|row| {
            let view = BoxView {
                box_id: row.get(0),
                district: row.get(1),
                down: row.get(2),
                down_untold: false,
                since_ms: row.get(3),
                last_alert_ms: row.get(4),
                open: Vec::new(),
                standby: Vec::new(),
            };
            (view.box_id.clone(), view)
        })
        .collect();
    let open = db
        .query(
            "SELECT i.box_id, i.incident_id, i.rule, i.sensor, i.severity, i.state,
                    (SELECT min(t.at_ms) FROM incident_transitions t WHERE t.box_id = i.box_id AND t.epoch = i.epoch AND t.incident_id = i.incident_id),
                    i.device
             FROM box_incidents i JOIN boxes b ON b.box_id = i.box_id AND b.epoch = i.epoch
             WHERE i.state NOT IN ('resolved', 'closed') ORDER BY i.box_id, i.incident_id",
            &[],
        )
        .await?;
    for row in &open {
        let box_id: String = row.get(0);
        if let Some(view) = boxes.get_mut(&box_id) {
            view.open.push(OpenView {
                incident_id: row.get(1),
                rule: row.get(2),
                sensor: row.get(3),
                severity: row.get(4),
                state: row.get(5),
                opened_ms: row.get(6),
                device: row.get(7),
            });
        }
    }
    // The latest standby event of each rule and sensor of a box since it went down.
    let standby = db
        .query(
            "SELECT DISTINCT ON (s.box_id, s.sensor, s.rule) s.box_id, s.sensor, s.rule, s.event, s.severity, s.at_ms
             FROM standby_alerts s JOIN boxes b ON b.box_id = s.box_id
             WHERE b.down AND s.posted >= b.down_changed
             ORDER BY s.box_id, s.sensor, s.rule, s.posted DESC, s.at_ms DESC",
            &[],
        )
        .await?;
    for row in standby.iter().filter(|row| row.get::<_, &str>(3) != "cleared") {
        if let Some(view) = boxes.get_mut(row.get::<_, &str>(0)) {
            view.standby.push(StandbyView { sensor: row.get(1), rule: row.get(2), severity: row.get(4), at_ms: row.get(5) });
        }
    }
    let mut boxes: Vec<BoxView> = boxes.into_values().collect();
    for view in &mut boxes {
        view.standby.sort_by_key(|s| (severity_rank(&s.severity), s.at_ms));
        view.open.sort_by_key(|i| (listing_rank(i), i.opened_ms.unwrap_or(i64::MAX)));
    }
    sort_worst_first(&mut boxes);
    Ok(boxes)
}

/// `GET /` and `GET /board`.
pub async fn page(State(web): State<Arc<Listener>>) -> Response {
    match web.with_db(async |db| read(db).await).await {
        Ok(mut boxes) => {
            let dead = web.dead_boxes.lock().map(|dead| dead.clone()).unwrap_or_default();
            mark_untold(&mut boxes, &dead);
            Html(render(&boxes, crate::clock::Clock::System.now(), web.time_zone)).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Html(unreachable_page())).into_response(),
    }
}

/// Marks down the boxes this hub's lease watch finds dead whose `box-down` the webhook has not
/// taken yet (a slow or failing webhook kept them "online" on the board), worst first again.
pub fn mark_untold(boxes: &mut [BoxView], dead: &std::collections::BTreeSet<String>) {
    for view in boxes.iter_mut().filter(|v| !v.down && dead.contains(&v.box_id)) {
        view.down = true;
        view.down_untold = true;
    }
    sort_worst_first(boxes);
}

/// The page's head: the phone stylesheet and a refresh every 30 s.
pub fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>{}</title><style>{PHONE_STYLE}{STYLE}</style></head><body>",
        escape(title)
    )
}

fn unreachable_page() -> String {
    format!("{}<header class=\"danger\"><h1>街道监测总览</h1><p>暂时无法读取街道数据库，请稍后刷新。</p></header></body></html>", head("街道监测总览"))
}

/// The board's HTML at `now`.
pub fn render(boxes: &[BoxView], now: i64, zone: chrono_tz::Tz) -> String {
    let down = boxes.iter().filter(|b| b.down).count();
    let open: usize = boxes.iter().map(|b| b.open.len()).sum();
    let worst = boxes.iter().map(BoxView::worst).min().unwrap_or(SEVERITIES.len());
    let header_class = if down > 0 { "danger" } else { SEVERITIES.get(worst).copied().unwrap_or("") };
    let mut districts: Vec<&str> = boxes.iter().map(|b| b.district.as_str()).collect();
    districts.sort_unstable();
    districts.dedup();
    let mut html = head("街道监测总览");
    let _ = write!(
        html,
        "<header class=\"{header_class}\"><h1>街道监测总览 <small>{}</small></h1><p>{} 个社区 · 离线 {down} · 未结事件 {open}</p><p><small>更新于 {}</small></p></header>",
        escape(&districts.join("、")),
        boxes.len(),
        local_time::short(now, zone, true)
    );
    if boxes.is_empty() {
        html.push_str("<section><p>还没有社区盒子接入。</p></section>");
    }
    for view in boxes {
        let (class, status) = if view.down { (" class=\"down\"", "<b class=\"off\">离线</b>") } else { ("", "<b class=\"up\">在线</b>") };
        let _ = write!(html, "<section{class}><h2>{}<small>{}</small></h2>", escape(&view.box_id), escape(&view.district));
        if view.down_untold {
            let _ = write!(html, "<p>{status} <small>断线告警尚未送达</small>");
        } else {
            let _ = write!(html, "<p>{status} 自 {} 起", local_time::short(view.since_ms, zone, true));
        }
        if let Some(at) = view.last_alert_ms {
            let _ = write!(html, " · 最近报警 {}", local_time::short(at, zone, true));
        }
        html.push_str("</p><p>");
        if view.open.is_empty() {
            html.push_str("<small>无未结事件</small>");
        }
        for severity in SEVERITIES {
            let count = view.count(severity);
            if count > 0 {
                let _ = write!(html, "<span class=\"chip {severity}\">{} {count}</span>", level_zh(severity));
            }
        }
        if view.device_faults() > 0 {
            let _ = write!(html, "<span class=\"chip device\">{} {}</span>", text::device_level(true), view.device_faults());
        }
        html.push_str("</p>");
        if !view.open.is_empty() {
            html.push_str("<ul class=\"open\">");
            for incident in view.open.iter().take(LISTED) {
                let since = incident.opened_ms.map(|at| format!(" · {} 起", local_time::short(at, zone, true))).unwrap_or_default();
                let (level, class) =
                    if incident.device { (text::device_level(true), "device") } else { (level_zh(&incident.severity), incident.severity.as_str()) };
                let _ = write!(
                    html,
                    "<li><span class=\"chip {sev}\">{level}</span>#{} {} · {} · {}{since}</li>",
                    incident.incident_id,
                    escape(&incident.sensor),
                    escape(&incident.rule),
                    state_label(&incident.state),
                    sev = escape(class),
                );
            }
            if view.open.len() > LISTED {
                let _ = write!(html, "<li><small>另有 {} 件</small></li>", view.open.len() - LISTED);
            }
            html.push_str("</ul>");
        }
        if !view.standby.is_empty() {
            html.push_str("<p><b>街道代为判读</b> <small>盒子离线期间，由街道根据4G传感器判读</small></p><ul class=\"open\">");
            for firing in &view.standby {
                let _ = write!(
                    html,
                    "<li><span class=\"chip {sev}\">{}</span>{} · {} · {}</li>",
                    level_zh(&firing.severity),
                    escape(&firing.sensor),
                    escape(&firing.rule),
                    local_time::short(firing.at_ms, zone, true),
                    sev = escape(&firing.severity),
                );
            }
            html.push_str("</ul>");
        }
        html.push_str("</section>");
    }
    html.push_str("<nav><a href=\"report\">各社区报表（今日）</a></nav></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(box_id: &str, down: bool, severities: &[&str]) -> BoxView {
        let open = severities
            .iter()
            .enumerate()
            .map(|(i, s)| OpenView {
                incident_id: i as i64 + 1,
                rule: "r".into(),
                sensor: format!("{box_id}-0{i}"),
                severity: (*s).into(),
                state: "open".into(),
                opened_ms: Some(0),
                device: false,
            })
            .collect();
        BoxView { box_id: box_id.into(), district: "old-town".into(), down, down_untold: false, since_ms: 0, last_alert_ms: None, open, standby: Vec::new() }
    }

    #[test]
    fn a_box_found_dead_whose_box_down_was_not_taken_yet_is_offline_first() {
        let mut boxes = vec![view("a", false, &["danger"]), view("b", false, &[])];
        let dead = std::collections::BTreeSet::from(["b".to_string()]);
        mark_untold(&mut boxes, &dead);
        assert_eq!(boxes[0].box_id, "b");
        let html = render(&boxes, 0, crate::local_time::DEFAULT);
        assert!(html.contains("离线 1 · "), "{html}");
        assert!(html.contains("<b class=\"off\">离线</b> <small>断线告警尚未送达</small>"), "{html}");
        assert!(html.contains("<b class=\"up\">在线</b> 自 "), "the other box stays online: {html}");
    }

    #[test]
    fn offline_boxes_come_first_then_the_worst_incident() {
        let mut boxes = vec![
            view("a", false, &[]),
            view("b", false, &["warning", "warning"]),
            view("c", false, &["danger"]),
            view("d", true, &[]),
            view("e", false, &["warning"]),
        ];
        sort_worst_first(&mut boxes);
        let order: Vec<&str> = boxes.iter().map(|b| b.box_id.as_str()).collect();
        assert_eq!(order, ["d", "c", "b", "e", "a"]);
    }

    #[test]
    fn the_page_counts_by_severity_and_escapes_names() {
        let mut boxes = vec![view("<east>", true, &["danger", "warning", "warning"])];
        boxes[0].open[0].rule = "tilt<script>".into();
        let html = render(&boxes, 0, crate::local_time::DEFAULT);
        assert!(html.contains("离线 1 · 未结事件 3"), "{html}");
        assert!(html.contains("<span class=\"chip danger\">红色 1</span><span class=\"chip warning\">黄色 2</span>"), "{html}");
        assert!(html.contains("&lt;east&gt;") && html.contains("tilt&lt;script&gt;") && !html.contains("<script>"), "escaped: {html}");
        assert!(html.contains("待接单"), "{html}");
        assert!(!html.contains("街道代为判读"), "nothing judged by the hub");
    }

    /// A stuck box's warning is no yellow of the community's houses: a district leader reading
    /// "黄色 1" looks for a leaning house (as a grid group did when a box's message said so).
    #[test]
    fn a_device_fault_is_listed_grey_as_one_and_ranks_no_box() {
        let mut boxes = vec![view("east", false, &["warning", "notice"]), view("west", false, &["notice", "notice"])];
        (boxes[0].open[0].device, boxes[0].open[0].rule) = (true, "tilt-flat-line".into());
        sort_worst_first(&mut boxes);
        assert_eq!(boxes[0].box_id, "west", "a box with a device fault and a blue ranks as a box with one blue");
        let html = render(&boxes, 0, crate::local_time::DEFAULT);
        assert!(!html.contains("黄色"), "{html}");
        assert!(html.contains("<span class=\"chip notice\">蓝色 1</span><span class=\"chip device\">设备故障 1</span>"), "{html}");
        assert!(html.contains("<li><span class=\"chip device\">设备故障</span>#1 east-00 · tilt-flat-line · "), "{html}");
        assert!(html.contains("<header class=\"notice\">"), "the district's worst is a blue: {html}");
    }

    #[test]
    fn what_the_hub_judges_firing_on_a_dead_box_is_listed_under_it() {
        let mut boxes = vec![view("east", true, &[])];
        boxes[0].standby = vec![StandbyView { sensor: "house<17>".into(), rule: "tilt-sudden".into(), severity: "danger".into(), at_ms: 0 }];
        let html = render(&boxes, 0, crate::local_time::DEFAULT);
        let listed = html.find("街道代为判读").expect("the hub's findings");
        assert!(html[listed..].contains("<span class=\"chip danger\">红色</span>house&lt;17&gt; · tilt-sudden · "), "{html}");
    }
}
