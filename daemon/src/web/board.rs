//! The community office's screen, `/board`: a read-only page for a TV across the room. Every
//! house and water point with its status colour — on a plain SVG map when the inventory gives
//! their latitude and longitude (nothing fetched from outside: no tiles, no fonts), else as
//! tiles grouped by grid and site — the open incidents with their running clocks (time to
//! accept, to on site, against their policy's deadlines), who is on duty now, today's figures.
//!
//! It updates without reloading: `/board/events` is a server-sent event stream with one
//! snapshot of everything that changes each second (the inventory's layout is sent once, with
//! the page). Served on `[http] listen`; when `[board] token` is set, both need `?token=`.
//! All text Chinese, all times local (`time_zone`).
//!
//! A page load is the HTML with the layout inlined (about 60 bytes per point, so ~70 KB for
//! 1,000 points) and no other request but the event stream.

use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::dispatch::InForce;
use crate::live::LiveTable;
use crate::sinks::text::{self, Places, Wording};
use crate::store::{IncidentRow, Store};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How often the stream sends a snapshot (the running clocks tick in seconds).
const TICK: Duration = Duration::from_secs(1);
/// How often today's figures (which read the day's audit trail) are recomputed.
const FIGURES_EVERY_TICKS: u32 = 3;
/// Incidents listed by name; the rest are counted.
const LISTED: usize = 9;
/// Silent after this many report intervals without a reading (as `/healthz` counts).
const SILENT_AFTER_INTERVALS: i64 = 3;
/// At most this many points get their name written on a tile (more and the tiles are dots).
const NAMED_TILES: usize = 80;

/// What the board reads; built once by the daemon.
#[derive(Debug, Clone)]
pub struct Board {
    pub sensors: Arc<[SensorConfig]>,
    pub places: Places,
    pub dispatch: InForce,
    /// The latest readings (a sensor never heard, or silent, is grey); none: not shown.
    pub live: Option<Arc<LiveTable>>,
    pub store: Store,
    pub clock: Clock,
    pub time_zone: chrono_tz::Tz,
    /// `[board] token`: when set, the page and its stream need `?token=` with it.
    pub token: Option<String>,
    /// When the daemon started, on its elapsed time: a sensor not yet heard is silent only after
    /// its grace.
    pub started_ms: i64,
}

/// `/board` and `/board/events`.
pub fn router(board: Board) -> Router {
    Router::new().route("/board", get(page)).route("/board/events", get(events)).with_state(Arc::new(board))
}

#[derive(Debug, Deserialize)]
pub struct Access {
    token: Option<String>,
}

impl Board {
    fn admits(&self, access: &Access) -> bool {
        self.token.as_ref().is_none_or(|token| access.token.as_ref() == Some(token))
    }
}

/// One house (a building's sensors) or water point (a sensor without a building) on the board.
#[derive(Debug)]
struct Point {
    label: String,
    /// Site (display name) and the sensors' ids, for the tile's tooltip.
    title: String,
    grid: String,
    site: String,
    location: Option<[f64; 2]>,
    /// Positions in the inventory.
    sensors: Vec<usize>,
}

/// The inventory's points, by grid, site and name.
fn points(board: &Board) -> Vec<Point> {
    let mut by_key: BTreeMap<(String, String, String), Point> = BTreeMap::new();
    for (index, sensor) in board.sensors.iter().enumerate() {
        let place = &sensor.place;
        let grid = place.grid.as_deref().unwrap_or(crate::report::NO_GRID).to_string();
        let site = board.places.site(&place.site).unwrap_or(&place.site).to_string();
        let (key, label) = match &place.building {
            Some(building) => (building.to_string(), board.places.building(&place.site, building).unwrap_or(building).to_string()),
            None => (format!("~{}", sensor.id), sensor.id.to_string()),
        };
        let point = by_key.entry((grid.clone(), place.site.to_string(), key)).or_insert_with(|| Point {
            title: site.clone(),
            label,
            grid,
            site,
            location: None,
            sensors: Vec::new(),
        });
        point.sensors.push(index);
        let _ = write!(point.title, " {}", sensor.id);
        point.location = point.location.or(sensor.location);
    }
    by_key.into_values().collect()
}

/// A status letter per sensor: r o y b (the worst open incident's colour), s (silent, or a
/// device fault open), g (well), n (not heard yet); `open` is each open incident's sensor and
/// colour letter ([`Known::level`]).
fn sensor_status(board: &Board, open: &[(&str, u8)]) -> Vec<u8> {
    let index: HashMap<&str, usize> = board.sensors.iter().enumerate().map(|(i, s)| (&*s.id, i)).collect();
    let latest = board.live.as_ref().map(|live| live.latest()).unwrap_or_default();
    // Silence on elapsed time: a box clock not set yet (or a device's own clock) says nothing.
    let now = board.clock.elapsed_ms();
    let mut status: Vec<u8> = board
        .sensors
        .iter()
        .enumerate()
        .map(|(i, sensor)| {
            let limit = i64::try_from(sensor.interval.as_millis()).unwrap_or(i64::MAX / 4).saturating_mul(SILENT_AFTER_INTERVALS);
            match latest.get(i).and_then(|l| l.heard_ms) {
                Some(at) if now - at <= limit => b'g',
                Some(_) => b's',
                None if now - board.started_ms > limit => b's',
                None => b'n',
            }
        })
        .collect();
    for &(sensor, letter) in open {
        if let Some(&i) = index.get(sensor) {
            if rank(letter) > rank(status[i]) {
                status[i] = letter;
            }
        }
    }
    status
}

fn severity_letter(severity: &str) -> u8 {
    match severity {
        "danger" => b'r',
        "alarm" => b'o',
        "warning" => b'y',
        _ => b'b',
    }
}

/// Which letter wins on a point with several sensors.
fn rank(letter: u8) -> u8 {
    match letter {
        b'r' => 7,
        b'o' => 6,
        b'y' => 5,
        b'b' => 4,
        b's' => 3,
        b'g' => 2,
        _ => 1,
    }
}

/// The statuses of the points, one letter each, in page order.
fn point_status(points: &[Point], sensors: &[u8]) -> String {
    points.iter().map(|p| p.sensors.iter().map(|&i| sensors[i]).max_by_key(|&l| rank(l)).unwrap_or(b'n') as char).collect()
}

/// What the board remembers of an incident until it changes (`updated_ms`).
#[derive(Debug, Clone)]
struct Known {
    updated_ms: i64,
    place: String,
    what: String,
    /// When its clocks started: opened, or re-opened after a resolve.
    since_ms: i64,
    /// False while that was stamped before the box's clock was set.
    since_known: bool,
    accepted_ms: Option<i64>,
    on_site_ms: Option<i64>,
    /// A device fault (a box, for installers): shown as one, not in a warning colour.
    device: bool,
}

impl Known {
    /// Its level as the office says it ("红色", "设备故障": a device fault has no warning colour)
    /// and its colour's letter (a device fault's is grey).
    fn level(&self, severity: &str) -> (&'static str, u8) {
        if self.device {
            (text::device_level(true), b's')
        } else {
            (level_zh(severity), severity_letter(severity))
        }
    }

    /// When its clocks started, as a time of day; unknown while stamped by an unset clock.
    fn opened(&self, zone: chrono_tz::Tz) -> String {
        if self.since_known {
            crate::local_time::clock_time(self.since_ms, zone)
        } else {
            "时间未知".into()
        }
    }

    /// One of its clocks; without a known start it cannot run (nor be late).
    fn clock(&self, done_ms: Option<i64>, within_ms: Option<i64>, now: i64) -> ClockView {
        if self.since_known {
            clock_view(self.since_ms, done_ms, within_ms, now)
        } else {
            ClockView { text: "—".into(), late: false, done: done_ms.is_some() }
        }
    }
}

fn know(store: &Store, row: &IncidentRow) -> Known {
    let alert = store.latest_alert(&row.rule, &row.sensor).ok().flatten();
    let wording = Wording::default();
    let (place, what) = match &alert {
        Some(alert) => (text::house(alert), without_place(text::sentence(alert, wording), alert)),
        None => (row.sensor.clone(), row.rule.clone()),
    };
    let mut known = Known {
        updated_ms: row.updated_ms,
        place,
        what,
        since_ms: row.opened_ms,
        since_known: row.opened_known,
        accepted_ms: None,
        on_site_ms: None,
        device: alert.as_ref().is_some_and(text::is_device),
    };
    for entry in store.incident_history(row.id).unwrap_or_default() {
        match entry.action.as_str() {
            action if action.starts_with("re-opened") => {
                known = Known { since_ms: entry.at_ms, since_known: entry.at_known, accepted_ms: None, on_site_ms: None, ..known }
            }
            "accept" => known.accepted_ms = known.accepted_ms.or(Some(entry.at_ms)),
            "on_site" => known.on_site_ms = known.on_site_ms.or(Some(entry.at_ms)),
            _ => {}
        }
    }
    known
}

/// The sentence without the place it starts with (the board shows the place above it):
/// "北巷 7号楼（house-07）墙体倾斜8.9‰" -> "墙体倾斜8.9‰".
fn without_place(sentence: String, alert: &crate::alert::Alert) -> String {
    let mut rest = sentence.as_str();
    let names = [alert.site_name.as_deref(), Some(alert.site.as_str()), alert.building_name.as_deref(), alert.building.as_deref()];
    for name in names.into_iter().flatten() {
        rest = rest.trim_start().strip_prefix(name).unwrap_or(rest);
    }
    rest = rest.strip_prefix(&format!("（{}）", alert.sensor)).unwrap_or(rest);
    if rest.trim().is_empty() {
        sentence.clone()
    } else {
        rest.trim_start_matches(['，', ',', ' ']).to_string()
    }
}

/// One running or stopped clock of an incident.
#[derive(Debug, Serialize, PartialEq)]
struct ClockView {
    text: String,
    /// Past its deadline (or stopped past it).
    late: bool,
    done: bool,
}

fn clock_view(since_ms: i64, done_ms: Option<i64>, within_ms: Option<i64>, now: i64) -> ClockView {
    let elapsed = done_ms.unwrap_or(now).saturating_sub(since_ms).max(0);
    let late = within_ms.is_some_and(|within| elapsed > within);
    let text = match (done_ms, within_ms) {
        (Some(_), _) => format!("✓ {}", crate::report::duration(elapsed / 1000)),
        (None, Some(within)) => format!("{} / {}", stopwatch(elapsed), crate::report::duration(within / 1000)),
        (None, None) => stopwatch(elapsed),
    };
    ClockView { text, late, done: done_ms.is_some() }
}

/// "04:07", "1:02:05".
fn stopwatch(ms: i64) -> String {
    let secs = ms / 1000;
    match secs / 3600 {
        0 => format!("{:02}:{:02}", secs / 60, secs % 60),
        hours => format!("{hours}:{:02}:{:02}", secs % 3600 / 60, secs % 60),
    }
}

#[derive(Debug, Serialize)]
struct IncidentView {
    id: i64,
    /// r o y b (s: a device fault).
    colour: char,
    level: &'static str,
    place: String,
    what: String,
    state: &'static str,
    opened: String,
    accept: ClockView,
    on_site: ClockView,
}

/// A severity as the office says it: its warning colour (the district's board says it too).
pub(crate) fn level_zh(severity: &str) -> &'static str {
    match severity {
        "danger" => "红色",
        "alarm" => "橙色",
        "warning" => "黄色",
        _ => "蓝色",
    }
}

fn state_zh(state: &str) -> &'static str {
    match state {
        "open" => "待接单",
        "accepted" => "已接单",
        "on_site" => "已到场",
        "resolved" => "已办结",
        _ => "处理中",
    }
}

/// Everything that changes, sent once a second.
#[derive(Debug, Serialize)]
struct Snapshot {
    clock: String,
    date: String,
    status: String,
    /// The newest open incident, "#51 12:03 北巷 7号楼 …".
    newest: Option<String>,
    incidents: Vec<IncidentView>,
    /// Open incidents not listed.
    more: usize,
    open: usize,
    duty: Vec<(String, String)>,
    today: Vec<(&'static str, String)>,
}

/// What one stream keeps between snapshots.
struct Watcher {
    board: Arc<Board>,
    points: Vec<Point>,
    known: HashMap<i64, Known>,
    today: Vec<(&'static str, String)>,
    ticks: u32,
}

impl Watcher {
    fn new(board: Arc<Board>) -> Watcher {
        let points = points(&board);
        Watcher { board, points, known: HashMap::new(), today: Vec::new(), ticks: 0 }
    }

    fn snapshot(&mut self) -> Snapshot {
        let board = self.board.clone();
        let now = board.clock.now();
        let zone = board.time_zone;
        let mut open: Vec<IncidentRow> = board.store.incidents(false).unwrap_or_default();
        open.retain(|r| r.state != "resolved");
        self.known.retain(|id, _| open.iter().any(|r| r.id == *id));
        for row in &open {
            if self.known.get(&row.id).is_none_or(|k| k.updated_ms != row.updated_ms) {
                self.known.insert(row.id, know(&board.store, row));
            }
        }
        let letters: Vec<(&str, u8)> = open.iter().map(|r| (r.sensor.as_str(), self.known[&r.id].level(&r.severity).1)).collect();
        let status = point_status(&self.points, &sensor_status(&board, &letters));
        // An alarm folded into its house's open one colours its box on the map, but is no task of
        // its own: it is handled, and resolved, with that one.
        open.retain(|r| r.folded_into.is_none());
        let newest = open.iter().max_by_key(|r| (self.known.get(&r.id).map_or(r.opened_ms, |k| k.since_ms), r.id)).map(|r| {
            let known = &self.known[&r.id];
            let level = match known.level(&r.severity) {
                (level, _) if known.device => level.to_string(),
                (colour, _) => format!("{colour}预警"),
            };
            format!("#{} {} {level} · {} {}", r.id, known.opened(zone), known.place, known.what)
        });
        // Waiting to be accepted first, then the worst, then the newest.
        open.sort_by_key(|r| (r.state != "open", std::cmp::Reverse(rank(severity_letter(&r.severity))), std::cmp::Reverse(r.id)));
        let dispatch = board.dispatch.get();
        let incidents = open
            .iter()
            .take(LISTED)
            .map(|r| {
                let known = &self.known[&r.id];
                let policy = dispatch.policy(&r.severity);
                let accepted = known.accepted_ms.or(known.on_site_ms);
                IncidentView {
                    id: r.id,
                    colour: known.level(&r.severity).1 as char,
                    level: known.level(&r.severity).0,
                    place: known.place.clone(),
                    what: known.what.chars().take(40).collect(),
                    state: state_zh(&r.state),
                    opened: known.opened(zone),
                    accept: known.clock(accepted, policy.and_then(|p| p.accept_within_ms), now),
                    on_site: known.clock(known.on_site_ms, policy.and_then(|p| p.on_site_within_ms), now),
                }
            })
            .collect();
        if self.ticks % FIGURES_EVERY_TICKS == 0 {
            self.today = today(&board, now);
        }
        self.ticks = self.ticks.wrapping_add(1);
        Snapshot {
            clock: crate::local_time::datetime(now, zone).get(11..).unwrap_or_default().to_string(),
            date: date_zh(now, zone),
            status,
            newest,
            more: open.len().saturating_sub(LISTED),
            open: open.len(),
            incidents,
            duty: duty(&board, now),
            today: self.today.clone(),
        }
    }
}

/// "2026年12月3日 星期四".
fn date_zh(now: i64, zone: chrono_tz::Tz) -> String {
    use chrono::{Datelike, TimeZone};
    let Some(local) = zone.timestamp_millis_opt(now).single() else { return String::new() };
    let weekday = ["一", "二", "三", "四", "五", "六", "日"][local.weekday().num_days_from_monday() as usize];
    format!("{}年{}月{}日 星期{weekday}", local.year(), local.month(), local.day())
}

/// Who is on duty now, per grid of the inventory.
fn duty(board: &Board, now: i64) -> Vec<(String, String)> {
    let mut grids: Vec<&str> = board.sensors.iter().filter_map(|s| s.place.grid.as_deref()).collect();
    grids.sort_unstable();
    grids.dedup();
    let dispatch = board.dispatch.get();
    grids
        .into_iter()
        .map(|grid| {
            let names: Vec<&str> = dispatch.on_duty(Some(grid), now).iter().map(|m| m.name.as_str()).collect();
            (grid.to_string(), if names.is_empty() { "未排班".to_string() } else { names.join("、") })
        })
        .collect()
}

/// Today's figures (since local midnight).
fn today(board: &Board, now: i64) -> Vec<(&'static str, String)> {
    let midnight = local_midnight(now, board.time_zone);
    let Ok(timelines) = crate::report::timelines(&board.store, &board.sensors, midnight, now + 1) else { return Vec::new() };
    let figures = crate::report::figures(&timelines, &board.dispatch.get(), now);
    let median = |pair: Option<(i64, i64)>| pair.map_or_else(|| "—".to_string(), |(m, _)| crate::report::duration(m));
    vec![
        ("今日新增", figures.incidents.to_string()),
        ("已接单", figures.accepted.to_string()),
        ("已办结", figures.resolved.to_string()),
        ("接单用时中位", median(figures.to_accept)),
        ("到场用时中位", median(figures.to_on_site)),
        ("超时", figures.overdue.to_string()),
        ("升级督办", figures.escalations.to_string()),
    ]
}

/// The start of `now`'s local day, in ms since the epoch.
pub fn local_midnight(now: i64, zone: chrono_tz::Tz) -> i64 {
    use chrono::TimeZone;
    let Some(local) = zone.timestamp_millis_opt(now).single() else { return now };
    let midnight = local.date_naive().and_hms_opt(0, 0, 0).and_then(|m| zone.from_local_datetime(&m).earliest());
    midnight.map_or(now, |m| m.timestamp_millis())
}

async fn events(State(board): State<Arc<Board>>, Query(access): Query<Access>) -> Response {
    if !board.admits(&access) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let ticks = tokio::time::interval(TICK);
    let stream = futures::stream::unfold((Watcher::new(board), ticks), |(mut watcher, mut ticks)| async move {
        ticks.tick().await;
        let data = serde_json::to_string(&watcher.snapshot()).unwrap_or_default();
        Some((Ok::<Event, std::convert::Infallible>(Event::default().data(data)), (watcher, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

const PAGE: &str = include_str!("board.html");

async fn page(State(board): State<Arc<Board>>, Query(access): Query<Access>) -> Response {
    if !board.admits(&access) {
        return (StatusCode::FORBIDDEN, Html("<p>这块屏需要口令：/board?token=…</p>")).into_response();
    }
    let points = points(&board);
    let layout = if points.iter().any(|p| p.location.is_some()) { map(&points) } else { String::new() };
    let tiles = tiles(&points, layout.is_empty());
    let token = access.token.map(|t| format!("?token={}", urlencode(&t))).unwrap_or_default();
    let html = PAGE.replace("{{map}}", &layout).replace("{{tiles}}", &tiles).replace("{{events}}", &format!("/board/events{token}"));
    Html(html).into_response()
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The located points as an SVG: longitude scaled by the cosine of the latitude, north up; each
/// grid's name at the middle of its points. Point `i` of the page is the element `data-i="i"`.
fn map(points: &[Point]) -> String {
    let located: Vec<(usize, [f64; 2])> = points.iter().enumerate().filter_map(|(i, p)| Some((i, p.location?))).collect();
    let (mut south, mut north, mut west, mut east) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(_, [lat, lon]) in &located {
        (south, north, west, east) = (south.min(lat), north.max(lat), west.min(lon), east.max(lon));
    }
    let squeeze = ((south + north) / 2.0).to_radians().cos().max(0.1);
    let (width, height) = (((east - west) * squeeze).max(1e-6), (north - south).max(1e-6));
    let scale = 1000.0 / width.max(height * 1.6);
    let (w, h) = (width * scale, height * scale);
    let radius = (420.0 / (located.len() as f64).sqrt()).clamp(3.0, 14.0);
    let pad = radius * 2.0;
    let xy = |[lat, lon]: [f64; 2]| ((lon - west) * squeeze * scale + pad, (north - lat) * scale + pad);
    let mut svg = format!("<svg class=\"map\" viewBox=\"0 0 {:.0} {:.0}\" preserveAspectRatio=\"xMidYMid meet\">", w + 2.0 * pad, h + 2.0 * pad);
    let mut grids: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    for &(i, location) in &located {
        let (x, y) = xy(location);
        let _ = write!(
            svg,
            "<circle data-i=\"{i}\" class=\"n\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{radius:.1}\"><title>{} · {}</title></circle>",
            escape(&points[i].label),
            escape(&points[i].title)
        );
        let sum = grids.entry(&points[i].grid).or_default();
        (sum.0, sum.1, sum.2) = (sum.0 + x, sum.1 + y, sum.2 + 1);
    }
    for (grid, (x, y, n)) in grids {
        let _ = write!(svg, "<text class=\"grid\" x=\"{:.0}\" y=\"{:.0}\">{}</text>", x / n as f64, y / n as f64, escape(grid));
    }
    svg.push_str("</svg>");
    svg
}

/// The points without a location (all of them when `all`) as tiles, by grid then site; named
/// when there are few.
fn tiles(points: &[Point], all: bool) -> String {
    let shown: Vec<(usize, &Point)> = points.iter().enumerate().filter(|(_, p)| all || p.location.is_none()).collect();
    let named = shown.len() <= NAMED_TILES;
    let mut html = String::new();
    let mut grid: Option<&str> = None;
    let mut site: Option<&str> = None;
    for (i, point) in &shown {
        if grid != Some(point.grid.as_str()) {
            if grid.is_some() {
                html.push_str("</div></section>");
            }
            let count = shown.iter().filter(|(_, p)| p.grid == point.grid).count();
            let _ = write!(html, "<section><h3>网格 {} <small>{count} 处</small></h3><div class=\"sites\">", escape(&point.grid));
            (grid, site) = (Some(point.grid.as_str()), None);
        }
        if site != Some(point.site.as_str()) {
            let _ = write!(html, "<span class=\"site\">{}</span>", escape(&point.site));
            site = Some(&point.site);
        }
        let name = if named { escape(&point.label) } else { String::new() };
        let _ = write!(
            html,
            "<i data-i=\"{i}\" class=\"n{}\" title=\"{} · {}\">{name}</i>",
            if named { " named" } else { "" },
            escape(&point.label),
            escape(&point.title)
        );
    }
    if grid.is_some() {
        html.push_str("</div></section>");
    }
    html
}

fn escape(text: &str) -> String {
    super::incident_page::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_run_against_their_deadline_and_stop_when_done() {
        let minute = 60_000;
        assert_eq!(clock_view(0, None, Some(10 * minute), 4 * minute + 7_000), ClockView { text: "04:07 / 10分".into(), late: false, done: false });
        assert_eq!(clock_view(0, None, Some(10 * minute), 11 * minute), ClockView { text: "11:00 / 10分".into(), late: true, done: false });
        assert_eq!(clock_view(0, Some(12 * minute + 5_000), Some(10 * minute), 99 * minute), ClockView { text: "✓ 12分5秒".into(), late: true, done: true });
        assert_eq!(stopwatch(3_725_000), "1:02:05");
    }

    #[test]
    fn a_house_shows_its_worst_sensor() {
        let points = vec![
            Point { label: "B7".into(), title: String::new(), grid: "g".into(), site: "s".into(), location: None, sensors: vec![0, 1, 2] },
            Point { label: "B8".into(), title: String::new(), grid: "g".into(), site: "s".into(), location: None, sensors: vec![3] },
        ];
        assert_eq!(point_status(&points, b"gyss"), "ys");
        assert_eq!(point_status(&points, b"sgrn"), "rn");
    }

    /// A device fault on the office's screen reads "设备故障" in grey, not a yellow warning.
    #[tokio::test]
    async fn a_device_fault_is_listed_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut warning = crate::alert::tests::sample_alert("fired", 2.4);
        (warning.severity, warning.colour) = (gridwatch_rules::Severity::Warning, "yellow".into());
        let fault = crate::alert::Alert { rule: "tilt-no-data".into(), audience: crate::alert::Audience::Installer, ..warning.clone() };
        for alert in [&warning, &fault] {
            store.apply_alert(alert, 600_000).await.unwrap();
            store.record_alert(alert, &[]).await.unwrap();
        }
        let levels: Vec<(String, (&str, u8))> =
            store.incidents(false).unwrap().iter().map(|row| (row.rule.clone(), know(&store, row).level(&row.severity))).collect();
        assert!(levels.contains(&("tilt-danger".into(), ("黄色", b'y'))) && levels.contains(&("tilt-no-data".into(), ("设备故障", b's'))), "{levels:?}");
    }

    #[test]
    fn midnight_is_local() {
        // 2026-12-03 23:28:35 in Shanghai; its midnight is 2026-12-02T16:00Z.
        let midnight = local_midnight(1_796_311_715_918, crate::local_time::DEFAULT);
        assert_eq!(crate::clock::rfc3339(midnight), "2026-12-02T16:00:00.000Z");
    }
}
