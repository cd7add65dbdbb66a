//! Reports for supervision (督办): for the incidents opened in a period, per grid and per worker,
//! how long they took to be accepted, to have someone on site and to be resolved (median and
//! 90th percentile), how many escalations they caused and how many missed a deadline of their
//! severity's policy. `gridwatch report --from --to` prints them (CSV or markdown), the daemon
//! keeps today's as metrics ([`publish`]) and sends yesterday's to the grid leaders' group at a
//! configured local time ([`run_daily_digest`]).
//!
//! Everything is read from the incidents and their audit trail in the store; times are measured
//! from when the incident opened (or re-opened: a re-fire after resolve starts its clocks again).
//! Percentiles are nearest-rank: the median of 4 values is the 2nd smallest.

use crate::config::SensorConfig;
use crate::dispatch::Dispatch;
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Where an incident's sensor is not in the inventory (a bus, the daemon itself).
pub const NO_GRID: &str = "-";

/// One incident's way through the loop, as the audit trail tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub id: i64,
    pub sensor: String,
    pub severity: String,
    pub grid: String,
    /// When it opened, or re-opened after a resolve.
    pub opened_ms: i64,
    /// Who acted first (accept, on site or resolve) after it opened: the worker it counts for.
    pub worker: Option<String>,
    pub accepted_ms: Option<i64>,
    pub on_site_ms: Option<i64>,
    pub resolved_ms: Option<i64>,
    pub escalations: u32,
}

impl Timeline {
    /// Deadlines of `dispatch`'s policy this incident missed by `now_ms` (accept, on site,
    /// resolve; each at most once).
    pub fn missed_deadlines(&self, dispatch: &Dispatch, now_ms: i64) -> u32 {
        let Some(policy) = dispatch.policy(&self.severity) else { return 0 };
        let steps = [(policy.accept_within_ms, self.accepted_ms.or(self.on_site_ms).or(self.resolved_ms)), (policy.on_site_within_ms, self.on_site_ms.or(self.resolved_ms)), (policy.resolve_within_ms, self.resolved_ms)];
        let missed = |(within, done): (Option<i64>, Option<i64>)| within.is_some_and(|within| done.unwrap_or(now_ms) - self.opened_ms > within);
        steps.into_iter().filter(|&step| missed(step)).count() as u32
    }
}

/// A person's name as written in the audit trail, without how they acted: "王芳 (wang, own
/// link)" and "王芳 (link)" are both 王芳.
pub fn worker_name(actor: &str) -> &str {
    match actor.rfind(" (") {
        Some(at) if actor.ends_with(')') => actor[..at].trim(),
        _ => actor.trim(),
    }
}

/// The timelines of the incidents opened (or re-opened) in `[from_ms, to_ms)`.
pub fn timelines(store: &Store, sensors: &[SensorConfig], from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<Timeline>> {
    let grids: HashMap<&str, &str> = sensors.iter().map(|s| (&*s.id, s.place.grid.as_deref().unwrap_or(NO_GRID))).collect();
    let mut open: HashMap<i64, Timeline> = HashMap::new();
    let mut done: Vec<Timeline> = Vec::new();
    for (incident, entry) in store.audit_trail(from_ms)? {
        let opens = entry.actor == "rules" && (entry.action.starts_with("fired") || entry.action.starts_with("re-opened"));
        if opens {
            if entry.at_ms >= to_ms {
                continue;
            }
            if let Some(previous) = open.remove(&incident.id) {
                done.push(previous);
            }
            let grid = grids.get(incident.sensor.as_str()).copied().unwrap_or(NO_GRID).to_string();
            open.insert(
                incident.id,
                Timeline { id: incident.id, sensor: incident.sensor.clone(), severity: incident.worst_severity.clone(), grid, opened_ms: entry.at_ms, worker: None, accepted_ms: None, on_site_ms: None, resolved_ms: None, escalations: 0 },
            );
            continue;
        }
        let Some(timeline) = open.get_mut(&incident.id) else { continue };
        let at = entry.at_ms.max(timeline.opened_ms);
        let slot = match entry.action.as_str() {
            "accept" => &mut timeline.accepted_ms,
            "on_site" => &mut timeline.on_site_ms,
            "resolve" => &mut timeline.resolved_ms,
            action if action.starts_with("escalated") => {
                timeline.escalations += 1;
                continue;
            }
            _ => continue,
        };
        slot.get_or_insert(at);
        timeline.worker.get_or_insert_with(|| worker_name(&entry.actor).to_string());
    }
    done.extend(open.into_values());
    done.sort_by_key(|t| (t.opened_ms, t.id));
    Ok(done)
}

/// The figures of one grid or one worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub incidents: u32,
    pub accepted: u32,
    pub resolved: u32,
    /// Median and 90th percentile, in seconds; none without any.
    pub to_accept: Option<(i64, i64)>,
    pub to_on_site: Option<(i64, i64)>,
    pub to_resolve: Option<(i64, i64)>,
    pub escalations: u32,
    /// Incidents that missed at least one deadline.
    pub overdue: u32,
}

/// Median and 90th percentile (nearest rank) of `values`.
pub fn median_p90(mut values: Vec<i64>) -> Option<(i64, i64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Some((rank(0.5), rank(0.9)))
}

/// The figures of `timelines` at `now_ms`.
pub fn figures<'a>(timelines: impl IntoIterator<Item = &'a Timeline>, dispatch: &Dispatch, now_ms: i64) -> Figures {
    let timelines: Vec<&Timeline> = timelines.into_iter().collect();
    let secs = |pick: fn(&Timeline) -> Option<i64>| median_p90(timelines.iter().filter_map(|t| pick(t).map(|at| (at - t.opened_ms) / 1000)).collect());
    Figures {
        incidents: timelines.len() as u32,
        accepted: timelines.iter().filter(|t| t.accepted_ms.is_some()).count() as u32,
        resolved: timelines.iter().filter(|t| t.resolved_ms.is_some()).count() as u32,
        to_accept: secs(|t| t.accepted_ms),
        to_on_site: secs(|t| t.on_site_ms),
        to_resolve: secs(|t| t.resolved_ms),
        escalations: timelines.iter().map(|t| t.escalations).sum(),
        overdue: timelines.iter().filter(|t| t.missed_deadlines(dispatch, now_ms) > 0).count() as u32,
    }
}

/// A report: the period, then one row per grid and one per worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub from_ms: i64,
    pub to_ms: i64,
    /// ("grid" | "worker" | "all", name, figures).
    pub rows: Vec<(&'static str, String, Figures)>,
}

impl Report {
    /// The report of the incidents opened in `[from_ms, to_ms)`, judged at `now_ms`.
    pub fn build(store: &Store, sensors: &[SensorConfig], dispatch: &Dispatch, from_ms: i64, to_ms: i64, now_ms: i64) -> anyhow::Result<Report> {
        let timelines = timelines(store, sensors, from_ms, to_ms)?;
        let mut grids: BTreeMap<&str, Vec<&Timeline>> = BTreeMap::new();
        let mut workers: BTreeMap<&str, Vec<&Timeline>> = BTreeMap::new();
        for timeline in &timelines {
            grids.entry(&timeline.grid).or_default().push(timeline);
            if let Some(worker) = &timeline.worker {
                workers.entry(worker).or_default().push(timeline);
            }
        }
        let mut rows = vec![("all", "全部".to_string(), figures(&timelines, dispatch, now_ms))];
        rows.extend(grids.into_iter().map(|(grid, list)| ("grid", grid.to_string(), figures(list, dispatch, now_ms))));
        rows.extend(workers.into_iter().map(|(worker, list)| ("worker", worker.to_string(), figures(list, dispatch, now_ms))));
        Ok(Report { from_ms, to_ms, rows })
    }

    pub fn csv(&self) -> String {
        let mut out = String::from("scope,name,incidents,accepted,resolved,accept_median_s,accept_p90_s,on_site_median_s,on_site_p90_s,resolve_median_s,resolve_p90_s,escalations,overdue\n");
        let pair = |p: Option<(i64, i64)>| p.map_or_else(|| ",".to_string(), |(m, p)| format!("{m},{p}"));
        for (scope, name, f) in &self.rows {
            let name = if name.contains([',', '"']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name.clone() };
            let _ = writeln!(out, "{scope},{name},{},{},{},{},{},{},{},{}", f.incidents, f.accepted, f.resolved, pair(f.to_accept), pair(f.to_on_site), pair(f.to_resolve), f.escalations, f.overdue);
        }
        out
    }

    /// A markdown table in Chinese with local times, for people (and the daily digest).
    pub fn markdown(&self, zone: chrono_tz::Tz) -> String {
        let mut out = format!(
            "### 督办报表 {} 至 {}\n\n| 范围 | 名称 | 事件 | 已接单 | 已办结 | 接单用时 中位/P90 | 到场用时 中位/P90 | 办结用时 中位/P90 | 升级 | 超时 |\n|---|---|---|---|---|---|---|---|---|---|\n",
            crate::local_time::datetime(self.from_ms, zone),
            crate::local_time::datetime(self.to_ms, zone)
        );
        for (scope, name, f) in &self.rows {
            let scope = match *scope {
                "grid" => "网格",
                "worker" => "网格员",
                _ => "合计",
            };
            let _ = writeln!(out, "| {scope} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |", f.incidents, f.accepted, f.resolved, span(f.to_accept), span(f.to_on_site), span(f.to_resolve), f.escalations, f.overdue);
        }
        out
    }
}

/// "4分12秒 / 9分" for a (median, p90) in seconds; "—" without.
fn span(pair: Option<(i64, i64)>) -> String {
    pair.map_or_else(|| "—".to_string(), |(median, p90)| format!("{} / {}", duration(median), duration(p90)))
}

/// "45秒", "4分12秒", "2时5分" — a duration in seconds as people read it.
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}秒"),
        (0, m, 0) => format!("{m}分"),
        (0, m, s) => format!("{m}分{s}秒"),
        (h, m, _) => format!("{h}时{m}分"),
    }
}
