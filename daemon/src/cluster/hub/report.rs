//! The district's report (`/report` on the hub's listener): per box, in a period of whole local
//! days, how many incidents opened, how many times one was resolved, and how many alert events
//! (and of them `fired`) there were; and the supervision figures a box reports of itself
//! (`crate::report`: how long incidents took to be accepted, to have someone on site and to be
//! resolved, escalations, deadlines missed), per box and per worker across the district, from
//! the transitions the boxes sent up — as a phone page in Chinese, or as CSV with `format=csv`
//! (`&by=worker`: a row per worker).
//!
//! `GET /report?from=YYYY-MM-DD&to=YYYY-MM-DD` (both days included; `to` defaults to `from`),
//! `?last=day|week|month` (the previous full one, as `gridwatch report --last`), or nothing:
//! today. An incident counts as opened on its first transition; times are the boxes' own
//! (`at_ms`), days are China's (the hub has no configuration). Every known box has a row, with
//! zeros when nothing happened.

use super::board::head;
use super::web::Listener;
use crate::dispatch::Dispatch;
use crate::report::{day_start, figures, fold_trail, previous, span, spreadsheet_safe, today, Figures, Timeline, TrailStep, FIGURE_COLUMNS};
use crate::web::incident_page::escape;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

/// The longest period asked for (the counts scan the period's rows).
const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize)]
pub struct Period {
    from: Option<String>,
    to: Option<String>,
    last: Option<String>,
    format: Option<String>,
    /// `worker`: the CSV has a row per worker instead of per box.
    by: Option<String>,
}

/// One box's counts in the period.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxCounts {
    pub box_id: String,
    pub district: String,
    pub incidents_opened: i64,
    pub incidents_resolved: i64,
    pub alert_events: i64,
    pub alerts_fired: i64,
    /// Its supervision figures, as its own `gridwatch report` gives them for the whole box.
    pub supervision: Figures,
}

/// The district's report: a row per box, and the supervision figures of each worker who acted
/// on an incident of the period, whatever box it was on.
#[derive(Debug, Clone, PartialEq)]
pub struct DistrictReport {
    pub boxes: Vec<BoxCounts>,
    pub workers: Vec<(String, Figures)>,
    /// Districts without a roster at the hub: their deadlines are the default policies'.
    pub default_policies: Vec<String>,
}

/// The first and last local day asked for, at `now`; an error says what to write instead.
pub fn days(period: &Period, now: i64, zone: chrono_tz::Tz) -> Result<(NaiveDate, NaiveDate), String> {
    let parse = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| format!("`{text}` is not a date: use YYYY-MM-DD"));
    let (first, last) = match (&period.from, &period.last) {
        (Some(from), _) => {
            let first = parse(from)?;
            (first, period.to.as_deref().map(parse).transpose()?.unwrap_or(first))
        }
        (None, Some(last)) => previous(last, today(now, zone)).map_err(|e| e.to_string())?,
        (None, None) => (today(now, zone), today(now, zone)),
    };
    if last < first {
        return Err(format!("to {last} is before from {first}"));
    }
    if (last - first).num_days() >= MAX_DAYS {
        return Err(format!("at most {MAX_DAYS} days at a time"));
    }
    Ok((first, last))
}

/// Every box's counts in `[from_ms, to_ms)` (supervision figures still empty).
async fn counts(db: &tokio_postgres::Client, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<BoxCounts>> {
    let rows = db
        .query(
            "SELECT b.box_id, b.district, COALESCE(o.opened, 0), COALESCE(r.resolved, 0), COALESCE(a.events, 0), COALESCE(a.fired, 0)
             FROM boxes b
             LEFT JOIN (SELECT box_id, count(*) AS opened FROM
                          (SELECT box_id, min(at_ms) AS first FROM incident_transitions WHERE at_ms < $2 GROUP BY box_id, epoch, incident_id) f
                        WHERE first >= $1 GROUP BY box_id) o USING (box_id)
             LEFT JOIN (SELECT box_id, count(*) AS resolved FROM incident_transitions
                        WHERE action = 'resolve' AND at_ms >= $1 AND at_ms < $2 GROUP BY box_id) r USING (box_id)
             LEFT JOIN (SELECT box_id, count(*) AS events, count(*) FILTER (WHERE event = 'fired') AS fired FROM alert_events
                        WHERE at_ms >= $1 AND at_ms < $2 GROUP BY box_id) a USING (box_id)
             ORDER BY b.district, b.box_id",
            &[&from_ms, &to_ms],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| BoxCounts {
            box_id: row.get(0),
            district: row.get(1),
            incidents_opened: row.get(2),
            incidents_resolved: row.get(3),
            alert_events: row.get(4),
            alerts_fired: row.get(5),
            supervision: Figures::default(),
        })
        .collect())
}

/// The timelines of every box's incidents opened (or re-opened) in `[from_ms, to_ms)`, each
/// with its box as its grid, from the transitions the boxes sent (each store epoch's apart: its
/// incident ids are its own), less those stamped while the box's clock was not set (the box's
/// own report leaves them out: no day to count them in).
async fn timelines(db: &tokio_postgres::Client, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<Timeline>> {
    let rows = db
        .query(
            "SELECT t.box_id, t.epoch, t.incident_id, t.at_ms, t.actor, t.action, i.sensor, COALESCE(NULLIF(i.worst_severity, ''), i.severity)
             FROM incident_transitions t JOIN box_incidents i USING (box_id, epoch, incident_id)
             WHERE t.at_ms >= $1 AND NOT t.time_unknown ORDER BY t.box_id, t.epoch, t.at_ms, t.id",
            &[&from_ms],
        )
        .await?;
    let mut trails: BTreeMap<(String, String), Vec<tokio_postgres::Row>> = BTreeMap::new();
    for row in rows {
        trails.entry((row.get(0), row.get(1))).or_default().push(row);
    }
    let mut all = Vec::new();
    for ((box_id, _), rows) in &trails {
        let steps = rows.iter().map(|row| TrailStep {
            incident: row.get(2),
            at_ms: row.get(3),
            actor: row.get(4),
            action: row.get(5),
            sensor: row.get(6),
            severity: row.get(7),
            grid: box_id,
        });
        all.extend(fold_trail(steps, to_ms));
    }
    Ok(all)
}

/// The roster and policies in force in `district`: the one the hub put (`gridwatch hub roster
/// put`), or none.
async fn district_dispatch(js: &async_nats::jetstream::Context, district: &str) -> Option<Dispatch> {
    let bucket = js.get_key_value(crate::cluster::ROSTER_BUCKET).await.ok()?;
    let text = bucket.get(district).await.ok()??;
    crate::cluster::roster::check("district roster", &String::from_utf8_lossy(&text), None).ok()
}

/// The district's report of `[from_ms, to_ms)` at `now`: `policies` gives each district's
/// roster (none: the default policies).
pub fn assemble(mut boxes: Vec<BoxCounts>, timelines: &[Timeline], policies: &HashMap<String, Option<Dispatch>>, now: i64) -> DistrictReport {
    let fallback = Dispatch::default();
    let dispatch_of = |district: &str| policies.get(district).and_then(Option::as_ref).unwrap_or(&fallback);
    let district_of: HashMap<&str, &str> = boxes.iter().map(|b| (b.box_id.as_str(), b.district.as_str())).collect();
    let mut workers: BTreeMap<&str, Vec<&Timeline>> = BTreeMap::new();
    let mut by_box: HashMap<&str, Vec<&Timeline>> = HashMap::new();
    for timeline in timelines {
        by_box.entry(&timeline.grid).or_default().push(timeline);
        if let Some(worker) = &timeline.worker {
            workers.entry(worker).or_default().push(timeline);
        }
    }
    // A worker's deadlines are those of the district of each incident's box: figured one
    // district at a time and summed (a worker seldom works in two).
    let worker_rows = workers
        .into_iter()
        .map(|(worker, list)| {
            let mut by_district: BTreeMap<&str, Vec<&Timeline>> = BTreeMap::new();
            for timeline in list.iter().copied() {
                by_district.entry(district_of.get(timeline.grid.as_str()).copied().unwrap_or("")).or_default().push(timeline);
            }
            let mut overall = figures(list.iter().copied(), &fallback, now);
            overall.overdue = by_district.iter().map(|(district, list)| figures(list.iter().copied(), dispatch_of(district), now).overdue).sum();
            (worker.to_string(), overall)
        })
        .collect();
    let district_names = boxes.iter().map(|b| b.district.clone());
    let default_policies: std::collections::BTreeSet<String> = district_names.filter(|d| policies.get(d).is_none_or(Option::is_none)).collect();
    for counts in &mut boxes {
        let own = by_box.get(counts.box_id.as_str()).map_or(&[][..], Vec::as_slice);
        counts.supervision = figures(own.iter().copied(), dispatch_of(&counts.district), now);
    }
    DistrictReport { boxes, workers: worker_rows, default_policies: default_policies.into_iter().collect() }
}

/// `GET /report`.
pub async fn page(State(web): State<Arc<Listener>>, Query(period): Query<Period>) -> Response {
    let zone = web.time_zone;
    let (first, last) = match days(&period, crate::clock::Clock::System.now(), zone) {
        Ok(days) => days,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    let bounds = day_start(first, zone).and_then(|from| Ok((from, day_start(last.succ_opt().unwrap_or(last), zone)?)));
    let Ok((from_ms, to_ms)) = bounds else { return (StatusCode::BAD_REQUEST, "no such local day\n").into_response() };
    let read = web.with_db(async |db| anyhow::Ok((counts(db, from_ms, to_ms).await?, timelines(db, from_ms, to_ms).await?))).await;
    let Ok((boxes, timelines)) = read else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the district's database is unreachable; try again\n").into_response();
    };
    let mut policies = HashMap::new();
    for counts in &boxes {
        if !policies.contains_key(&counts.district) {
            policies.insert(counts.district.clone(), district_dispatch(&web.js, &counts.district).await);
        }
    }
    // Judged at the period's end when it is over, as `gridwatch report` judges a box's.
    let report = assemble(boxes, &timelines, &policies, crate::clock::Clock::System.now().min(to_ms));
    if period.format.as_deref() == Some("csv") {
        let by_worker = period.by.as_deref() == Some("worker");
        let name = format!("attachment; filename=\"district-{}{first}-{last}.csv\"", if by_worker { "workers-" } else { "" });
        let body = if by_worker { workers_csv(&report.workers) } else { csv(&report.boxes) };
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, name)], body).into_response();
    }
    Html(html(&report, first, last)).into_response()
}

/// `worker,` and the supervision columns, a row per worker.
pub fn workers_csv(workers: &[(String, Figures)]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing into memory fails only on a bug in the writer; the rows are plain text and numbers.
    let _ = writer.write_record(std::iter::once("worker").chain(FIGURE_COLUMNS));
    for (worker, f) in workers {
        let _ = writer.write_record(std::iter::once(spreadsheet_safe(worker).into_owned()).chain(f.csv_fields()));
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// `box,district,incidents_opened,incidents_resolved,alert_events,alerts_fired` and the
/// supervision columns (`incidents` there counts re-openings too, as `gridwatch report` does), a
/// row per box.
pub fn csv(counts: &[BoxCounts]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing into memory fails only on a bug in the writer; the rows are plain text and numbers.
    let head = ["box", "district", "incidents_opened", "incidents_resolved", "alert_events", "alerts_fired"];
    let _ = writer.write_record(head.into_iter().chain(FIGURE_COLUMNS));
    for c in counts {
        let numbers = [c.incidents_opened, c.incidents_resolved, c.alert_events, c.alerts_fired].map(|n| n.to_string());
        let names = [c.box_id.clone(), c.district.clone()];
        let _ = writer.write_record(names.into_iter().chain(numbers).chain(c.supervision.csv_fields()));
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn html(report: &DistrictReport, first: NaiveDate, last: NaiveDate) -> String {
    let period = if first == last { first.to_string() } else { format!("{first} 至 {last}") };
    let mut html = head("街道报表");
    let _ = write!(html, "<header><h1>各社区报表</h1><p>{period}</p></header><section>");
    let _ = write!(
        html,
        "<form method=\"get\" action=\"report\"><label>从</label><input type=\"date\" name=\"from\" value=\"{first}\"><label>到</label><input type=\"date\" name=\"to\" value=\"{last}\"><button>查看</button></form></section><section>"
    );
    html.push_str(
        "<table style=\"width:100%;border-collapse:collapse\"><tr><th align=\"left\">社区</th><th>新事件</th><th>办结</th><th>报警</th><th>其中触发</th></tr>",
    );
    let mut total = [0i64; 4];
    for c in &report.boxes {
        let row = [c.incidents_opened, c.incidents_resolved, c.alert_events, c.alerts_fired];
        for (sum, n) in total.iter_mut().zip(row) {
            *sum += n;
        }
        let _ = write!(html, "<tr><td>{}<br><small>{}</small></td>", escape(&c.box_id), escape(&c.district));
        for n in row {
            let _ = write!(html, "<td align=\"center\">{n}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("<tr><td><b>合计</b></td>");
    for n in total {
        let _ = write!(html, "<td align=\"center\"><b>{n}</b></td>");
    }
    html.push_str("</tr></table></section>");
    let boxes = report.boxes.iter().map(|c| (c.box_id.as_str(), Some(c.district.as_str()), &c.supervision));
    supervision_table(&mut html, "督办：各社区", "社区", boxes);
    let workers = report.workers.iter().map(|(name, f)| (name.as_str(), None, f));
    supervision_table(&mut html, "督办：网格员", "网格员", workers);
    if !report.default_policies.is_empty() {
        let _ =
            write!(html, "<section><p><small>超时按默认时限计（{} 未经 hub 下发值班表）</small></p></section>", escape(&report.default_policies.join("、")));
    }
    let _ = write!(
        html,
        "<nav><a href=\"report?from={first}&amp;to={last}&amp;format=csv\">下载 CSV</a> · <a href=\"report?from={first}&amp;to={last}&amp;format=csv&amp;by=worker\">网格员 CSV</a> · <a href=\"board\">返回总览</a></nav></body></html>"
    );
    html
}

/// A table of supervision figures, a row per box or worker: incidents, accepted, the median
/// and 90th percentile to accept, to be on site and to resolve, escalations and deadlines missed.
fn supervision_table<'a>(html: &mut String, title: &str, scope: &str, rows: impl Iterator<Item = (&'a str, Option<&'a str>, &'a Figures)>) {
    let _ = write!(
        html,
        "<section><h2>{}</h2><table style=\"width:100%;border-collapse:collapse;font-size:0.85em\"><tr><th align=\"left\">{}</th><th>事件</th><th>接单</th><th>接单用时<br><small>中位 / P90</small></th><th>到场用时</th><th>办结用时</th><th>升级</th><th>超时</th></tr>",
        escape(title),
        escape(scope)
    );
    let mut any = false;
    for (name, district, f) in rows {
        any = true;
        let under = district.map_or_else(String::new, |d| format!("<br><small>{}</small>", escape(d)));
        let _ = write!(
            html,
            "<tr><td>{}{under}</td><td align=\"center\">{}</td><td align=\"center\">{}</td><td align=\"center\">{}</td><td align=\"center\">{}</td><td align=\"center\">{}</td><td align=\"center\">{}</td><td align=\"center\">{}</td></tr>",
            escape(name),
            f.incidents,
            f.accepted,
            span(f.to_accept),
            span(f.to_on_site),
            span(f.to_resolve),
            f.escalations,
            f.overdue
        );
    }
    if !any {
        html.push_str("<tr><td colspan=\"8\">无</td></tr>");
    }
    html.push_str("</table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(from: Option<&str>, to: Option<&str>, last: Option<&str>) -> Period {
        Period { from: from.map(Into::into), to: to.map(Into::into), last: last.map(Into::into), format: None, by: None }
    }

    #[test]
    fn periods_are_whole_local_days() {
        let zone = crate::local_time::DEFAULT;
        // 2026-12-03 23:30 in China.
        let now = day_start(NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(), zone).unwrap() + (23 * 60 + 30) * 60_000;
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert_eq!(days(&period(None, None, None), now, zone), Ok((day(3), day(3))));
        assert_eq!(days(&period(Some("2026-12-01"), None, None), now, zone), Ok((day(1), day(1))));
        assert_eq!(days(&period(Some("2026-12-01"), Some("2026-12-02"), None), now, zone), Ok((day(1), day(2))));
        assert_eq!(days(&period(None, None, Some("day")), now, zone), Ok((day(2), day(2))));
        assert!(days(&period(Some("2026-12-02"), Some("2026-12-01"), None), now, zone).unwrap_err().contains("before"));
        assert!(days(&period(Some("12/1"), None, None), now, zone).unwrap_err().contains("YYYY-MM-DD"));
        assert!(days(&period(Some("2024-01-01"), Some("2026-01-01"), None), now, zone).unwrap_err().contains("at most"));
    }

    fn counts(box_id: &str, district: &str) -> BoxCounts {
        BoxCounts {
            box_id: box_id.into(),
            district: district.into(),
            incidents_opened: 2,
            incidents_resolved: 1,
            alert_events: 5,
            alerts_fired: 3,
            supervision: Figures::default(),
        }
    }

    #[test]
    fn csv_has_a_row_per_box() {
        let mut east = counts("east", "old-town");
        east.supervision = Figures { incidents: 2, accepted: 1, resolved: 1, to_accept: Some((60, 60)), to_resolve: Some((900, 900)), ..Figures::default() };
        assert_eq!(
            csv(&[east]),
            "box,district,incidents_opened,incidents_resolved,alert_events,alerts_fired,incidents,accepted,resolved,accept_median_s,accept_p90_s,on_site_median_s,on_site_p90_s,resolve_median_s,resolve_p90_s,escalations,overdue\n\
             east,old-town,2,1,5,3,2,1,1,60,60,,,900,900,0,0\n"
        );
    }

    /// The steps of one incident on `box_id`: fired at `opened`, then `(at, actor, action)`.
    fn trail<'a>(box_id: &'a str, incident: i64, severity: &'a str, opened: i64, then: &[(i64, &'a str, &'a str)]) -> Vec<TrailStep<'a>> {
        let step = |at_ms, actor, action| TrailStep { incident, sensor: "s", severity, grid: box_id, at_ms, actor, action };
        std::iter::once(step(opened, "rules", "fired")).chain(then.iter().map(|&(at, actor, action)| step(at, actor, action))).collect()
    }

    #[test]
    fn supervision_is_figured_per_box_and_per_worker_across_boxes_with_each_district_s_deadlines() {
        const MIN: i64 = 60_000;
        // East (old-town, whose roster gives orange 5 minutes to accept): 王芳 accepts after 8
        // minutes — overdue there — and resolves; 李强 accepts an incident after 2 minutes.
        let east = [
            trail("east", 1, "alarm", 0, &[(8 * MIN, "王芳 (link)", "accept"), (40 * MIN, "王芳 (link)", "resolve")]),
            trail("east", 2, "alarm", 10 * MIN, &[(12 * MIN, "李强 (hub)", "accept")]),
        ];
        // West (new-town, no roster at the hub: 30 minutes by default): 王芳 again, after 8
        // minutes and an escalation — not overdue there.
        let west = [trail("west", 1, "alarm", 0, &[(7 * MIN, "rules", "escalated to grid_leader"), (8 * MIN, "王芳 (own link)", "accept")])];
        let mut timelines = Vec::new();
        for box_trails in [&east[..], &west[..]] {
            timelines.extend(fold_trail(box_trails.iter().flatten().copied(), 60 * MIN));
        }
        let roster = "[[policy]]\nseverity = \"alarm\"\naccept_within = \"5m\"\nescalate_to = [[\"grid_leader\"]]\n";
        let old_town = crate::cluster::roster::check("r.toml", roster, None).unwrap();
        let policies = HashMap::from([("old-town".to_string(), Some(old_town)), ("new-town".to_string(), None)]);
        let report = assemble(vec![counts("east", "old-town"), counts("west", "new-town")], &timelines, &policies, 60 * MIN);

        let east = &report.boxes[0].supervision;
        assert_eq!((east.incidents, east.accepted, east.resolved, east.escalations, east.overdue), (2, 2, 1, 0, 1));
        assert_eq!((east.to_accept, east.to_resolve), (Some((120, 480)), Some((2400, 2400))));
        let west = &report.boxes[1].supervision;
        assert_eq!((west.incidents, west.accepted, west.escalations, west.overdue), (1, 1, 1, 0));

        let names: Vec<&str> = report.workers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["李强", "王芳"]);
        let wang = &report.workers[1].1;
        assert_eq!((wang.incidents, wang.accepted, wang.escalations, wang.overdue), (2, 2, 1, 1), "王芳 across both boxes, overdue only in old-town");
        assert_eq!(report.default_policies, ["new-town"]);
        assert!(workers_csv(&report.workers).starts_with("worker,incidents,accepted,resolved,accept_median_s"));
        // A name typed as a formula stays text in a spreadsheet.
        let formula = vec![("=HYPERLINK(\"http://evil.example\")".to_string(), Figures::default())];
        assert!(workers_csv(&formula).contains("\"'=HYPERLINK(\"\"http://evil.example\"\")\""), "{}", workers_csv(&formula));
        let page = html(&report, NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(), NaiveDate::from_ymd_opt(2026, 12, 3).unwrap());
        assert!(page.contains("督办：网格员") && page.contains("8分 / 8分") && page.contains("new-town 未经 hub 下发值班表"), "{page}");
    }
}
