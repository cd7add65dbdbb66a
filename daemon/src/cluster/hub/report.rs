//! The district's report (`/report` on the hub's listener): per box, in a period of whole local
//! days, how many incidents opened, how many times one was resolved, and how many alert events
//! (and of them `fired`) there were — as a phone page in Chinese, or as CSV with `format=csv`.
//!
//! `GET /report?from=YYYY-MM-DD&to=YYYY-MM-DD` (both days included; `to` defaults to `from`),
//! `?last=day|week|month` (the previous full one, as `gridwatch report --last`), or nothing:
//! today. An incident counts as opened on its first transition; times are the boxes' own
//! (`at_ms`), days are China's (the hub has no configuration). Every known box has a row, with
//! zeros when nothing happened.

use super::board::head;
use super::web::Listener;
use crate::report::{day_start, previous, today};
use crate::web::incident_page::escape;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
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
}

/// One box's counts in the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxCounts {
    pub box_id: String,
    pub district: String,
    pub incidents_opened: i64,
    pub incidents_resolved: i64,
    pub alert_events: i64,
    pub alerts_fired: i64,
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

/// Every box's counts in `[from_ms, to_ms)`.
async fn read(db: &tokio_postgres::Client, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<BoxCounts>> {
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
        })
        .collect())
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
    let counts = match web.with_db(async |db| read(db, from_ms, to_ms).await).await {
        Ok(counts) => counts,
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "the district's database is unreachable; try again\n").into_response(),
    };
    if period.format.as_deref() == Some("csv") {
        let name = format!("attachment; filename=\"district-{first}-{last}.csv\"");
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, name)], csv(&counts)).into_response();
    }
    Html(html(&counts, first, last)).into_response()
}

/// `box,district,incidents_opened,incidents_resolved,alert_events,alerts_fired`, a row per box.
pub fn csv(counts: &[BoxCounts]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing into memory fails only on a bug in the writer; the rows are plain text and numbers.
    let _ = writer.write_record(["box", "district", "incidents_opened", "incidents_resolved", "alert_events", "alerts_fired"]);
    for c in counts {
        let numbers = [c.incidents_opened, c.incidents_resolved, c.alert_events, c.alerts_fired].map(|n| n.to_string());
        let _ = writer.write_record([c.box_id.as_str(), c.district.as_str(), &numbers[0], &numbers[1], &numbers[2], &numbers[3]]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn html(counts: &[BoxCounts], first: NaiveDate, last: NaiveDate) -> String {
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
    for c in counts {
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
    let _ = write!(
        html,
        "</tr></table></section><nav><a href=\"report?from={first}&amp;to={last}&amp;format=csv\">下载 CSV</a> · <a href=\"board\">返回总览</a></nav></body></html>"
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(from: Option<&str>, to: Option<&str>, last: Option<&str>) -> Period {
        Period { from: from.map(Into::into), to: to.map(Into::into), last: last.map(Into::into), format: None }
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

    #[test]
    fn csv_has_a_row_per_box() {
        let counts =
            [BoxCounts { box_id: "east".into(), district: "old-town".into(), incidents_opened: 2, incidents_resolved: 1, alert_events: 5, alerts_fired: 3 }];
        assert_eq!(csv(&counts), "box,district,incidents_opened,incidents_resolved,alert_events,alerts_fired\neast,old-town,2,1,5,3\n");
    }
}
