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

use crate::config::{DigestConfig, SensorConfig};
use crate::dispatch::Dispatch;
use crate::store::Store;
use chrono::{Datelike, NaiveDate, TimeZone};
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
        let steps = [
            (policy.accept_within_ms, self.accepted_ms.or(self.on_site_ms).or(self.resolved_ms)),
            (policy.on_site_within_ms, self.on_site_ms.or(self.resolved_ms)),
            (policy.resolve_within_ms, self.resolved_ms),
        ];
        let missed = |(within, done): (Option<i64>, Option<i64>)| within.is_some_and(|within| done.unwrap_or(now_ms) - self.opened_ms > within);
        steps.into_iter().filter(|&step| missed(step)).count() as u32
    }
}

/// `text` as a spreadsheet cell shows it: a cell that begins with `=`, `+`, `-`, `@` or a
/// control character is a formula to Excel and WPS, and a worker's name is typed by whoever
/// acts (an outside tester's `=HYPERLINK(…)` came through the district's CSV as it was), so it
/// gets a leading `'`.
pub fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
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
    let trail = store.audit_trail(from_ms)?;
    // Stamped before the box's clock was set (and never re-stamped): no day to count it in. An
    // alarm folded into its house's incident (never told) is no one's task: that incident is.
    let steps = trail.iter().filter(|(incident, entry)| entry.at_known && incident.folded_into.is_none()).map(|(incident, entry)| TrailStep {
        incident: incident.id,
        sensor: &incident.sensor,
        severity: &incident.worst_severity,
        grid: grids.get(incident.sensor.as_str()).copied().unwrap_or(NO_GRID),
        at_ms: entry.at_ms,
        actor: &entry.actor,
        action: &entry.action,
    });
    Ok(fold_trail(steps, to_ms))
}

/// One step of an incident's audit trail, with what a timeline needs of its incident.
#[derive(Debug, Clone, Copy)]
pub struct TrailStep<'a> {
    pub incident: i64,
    pub sensor: &'a str,
    /// The worst severity the incident reached: its policy's.
    pub severity: &'a str,
    pub grid: &'a str,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
}

/// The timelines of the incidents that open (or re-open) in `trail` before `to_ms`; `trail` is
/// in time order and begins at the period's start (a box's store, or one box's rows at the
/// district's hub).
pub fn fold_trail<'a>(trail: impl IntoIterator<Item = TrailStep<'a>>, to_ms: i64) -> Vec<Timeline> {
    let mut open: HashMap<i64, Timeline> = HashMap::new();
    let mut done: Vec<Timeline> = Vec::new();
    for step in trail {
        let opens = step.actor == "rules" && (step.action.starts_with("fired") || step.action.starts_with("re-opened"));
        if opens {
            if step.at_ms >= to_ms {
                continue;
            }
            if let Some(previous) = open.remove(&step.incident) {
                done.push(previous);
            }
            open.insert(
                step.incident,
                Timeline {
                    id: step.incident,
                    sensor: step.sensor.to_string(),
                    severity: step.severity.to_string(),
                    grid: step.grid.to_string(),
                    opened_ms: step.at_ms,
                    worker: None,
                    accepted_ms: None,
                    on_site_ms: None,
                    resolved_ms: None,
                    escalations: 0,
                },
            );
            continue;
        }
        let Some(timeline) = open.get_mut(&step.incident) else { continue };
        let at = step.at_ms.max(timeline.opened_ms);
        let slot = match step.action {
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
        timeline.worker.get_or_insert_with(|| worker_name(step.actor).to_string());
    }
    done.extend(open.into_values());
    done.sort_by_key(|t| (t.opened_ms, t.id));
    done
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

/// The CSV columns of a [`Figures`], as `gridwatch report` and the district's report write them.
pub const FIGURE_COLUMNS: [&str; 11] = [
    "incidents",
    "accepted",
    "resolved",
    "accept_median_s",
    "accept_p90_s",
    "on_site_median_s",
    "on_site_p90_s",
    "resolve_median_s",
    "resolve_p90_s",
    "escalations",
    "overdue",
];

impl Figures {
    /// The values of [`FIGURE_COLUMNS`] (empty where there is no such time).
    pub fn csv_fields(&self) -> [String; 11] {
        let pair = |p: Option<(i64, i64)>| p.map_or([String::new(), String::new()], |(m, p)| [m.to_string(), p.to_string()]);
        let ([accept_m, accept_p], [site_m, site_p], [resolve_m, resolve_p]) = (pair(self.to_accept), pair(self.to_on_site), pair(self.to_resolve));
        [
            self.incidents.to_string(),
            self.accepted.to_string(),
            self.resolved.to_string(),
            accept_m,
            accept_p,
            site_m,
            site_p,
            resolve_m,
            resolve_p,
            self.escalations.to_string(),
            self.overdue.to_string(),
        ]
    }
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
        let mut out = format!("scope,name,{}\n", FIGURE_COLUMNS.join(","));
        for (scope, name, f) in &self.rows {
            let name = spreadsheet_safe(name);
            let name = if name.contains([',', '"']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name.into_owned() };
            let _ = writeln!(out, "{scope},{name},{}", f.csv_fields().join(","));
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
            let _ = writeln!(
                out,
                "| {scope} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.incidents,
                f.accepted,
                f.resolved,
                span(f.to_accept),
                span(f.to_on_site),
                span(f.to_resolve),
                f.escalations,
                f.overdue
            );
        }
        out
    }
}

/// The local date of `now_ms` (1970-01-01 for an instant chrono cannot hold, some 260,000
/// years away).
pub fn today(now_ms: i64, zone: chrono_tz::Tz) -> NaiveDate {
    zone.timestamp_millis_opt(now_ms).single().map_or(chrono::DateTime::UNIX_EPOCH.date_naive(), |t| t.date_naive())
}

/// The previous full day, week (Monday to Sunday) or calendar month before `today`.
pub fn previous(period: &str, today: NaiveDate) -> anyhow::Result<(NaiveDate, NaiveDate)> {
    let yesterday = today.pred_opt().unwrap_or(today);
    Ok(match period {
        "day" => (yesterday, yesterday),
        "week" => {
            let this_monday = today - chrono::Days::new(u64::from(today.weekday().num_days_from_monday()));
            (this_monday - chrono::Days::new(7), this_monday - chrono::Days::new(1))
        }
        "month" => {
            let first_of_this = today.with_day(1).unwrap_or(today);
            let last_of_previous = first_of_this.pred_opt().unwrap_or(first_of_this);
            (last_of_previous.with_day(1).unwrap_or(last_of_previous), last_of_previous)
        }
        other => anyhow::bail!("`{other}`: use day, week or month"),
    })
}

/// When local day `date` begins, in ms since the epoch.
pub fn day_start(date: NaiveDate, zone: chrono_tz::Tz) -> anyhow::Result<i64> {
    let midnight = date.and_hms_opt(0, 0, 0).and_then(|m| zone.from_local_datetime(&m).earliest());
    midnight.map(|m| m.timestamp_millis()).ok_or_else(|| anyhow::anyhow!("{date} has no midnight in {zone}"))
}

/// What the supervision task reads and where it writes.
#[derive(Debug, Clone)]
pub struct Supervision {
    pub store: Store,
    pub sensors: std::sync::Arc<[SensorConfig]>,
    pub dispatch: crate::dispatch::InForce,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub clock: crate::clock::Clock,
    pub time_zone: chrono_tz::Tz,
    pub digest: Option<DigestConfig>,
}

/// How often today's figures are refreshed in the metrics (and the digest's time looked for).
const REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps today's figures in the metrics and sends the daily digest at its time, until
/// `shutdown`. A digest whose time passed while the daemon was down is not sent late.
pub async fn run(supervision: Supervision, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH.div_f64(supervision.clock.speed().max(1.0)).max(std::time::Duration::from_millis(100)));
    let mut next_digest = supervision.digest.as_ref().and_then(|d| next_time(d.at, supervision.clock.now(), supervision.time_zone));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = supervision.clock.now();
        publish(&supervision, now);
        if let (Some(due), Some(digest)) = (next_digest, &supervision.digest) {
            if now >= due {
                send_digest(&supervision, digest, now).await;
                next_digest = next_time(digest.at, now, supervision.time_zone);
            }
        }
    }
}

/// The next moment after `now` the local clock shows `at`.
fn next_time(at: chrono::NaiveTime, now: i64, zone: chrono_tz::Tz) -> Option<i64> {
    let day = today(now, zone);
    [day, day.succ_opt()?].into_iter().filter_map(|d| zone.from_local_datetime(&d.and_time(at)).earliest()).map(|t| t.timestamp_millis()).find(|&t| t > now)
}

/// Today's figures (since local midnight) into the metrics.
pub fn publish(supervision: &Supervision, now: i64) {
    let Ok(midnight) = day_start(today(now, supervision.time_zone), supervision.time_zone) else { return };
    let report = match Report::build(&supervision.store, &supervision.sensors, &supervision.dispatch.get(), midnight, now + 1, now) {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot read today's incidents for the supervision metrics");
            return;
        }
    };
    let (counts, seconds) = (&supervision.metrics.supervision_today, &supervision.metrics.supervision_seconds_today);
    counts.clear();
    seconds.clear();
    for (scope, name, f) in &report.rows {
        let label = |figure: &str, quantile: &str| crate::metrics::SupervisionLabel {
            scope: scope.to_string(),
            name: name.clone(),
            figure: figure.into(),
            quantile: quantile.into(),
        };
        for (figure, value) in
            [("incidents", f.incidents), ("accepted", f.accepted), ("resolved", f.resolved), ("escalations", f.escalations), ("overdue", f.overdue)]
        {
            counts.get_or_create(&label(figure, "")).set(i64::from(value));
        }
        for (figure, pair) in [("accept", f.to_accept), ("on_site", f.to_on_site), ("resolve", f.to_resolve)] {
            if let Some((median, p90)) = pair {
                seconds.get_or_create(&label(figure, "0.5")).set(median);
                seconds.get_or_create(&label(figure, "0.9")).set(p90);
            }
        }
    }
}

/// Journals yesterday's report for the grid leaders' channels (they send it within a second).
async fn send_digest(supervision: &Supervision, digest: &DigestConfig, now: i64) {
    let zone = supervision.time_zone;
    let Ok((day, _)) = previous("day", today(now, zone)) else { return };
    let (Ok(from), Ok(to)) = (day_start(day, zone), day_start(today(now, zone), zone)) else { return };
    let dispatch = supervision.dispatch.get();
    let report = match Report::build(&supervision.store, &supervision.sensors, &dispatch, from, to, to) {
        Ok(report) => report,
        Err(error) => {
            supervision.store.report_failure("reading yesterday's incidents for the daily digest", &error);
            return;
        }
    };
    let leaders: Vec<&crate::dispatch::roster::Member> = dispatch.roster.members.iter().filter(|m| m.role == "grid_leader").collect();
    let alert = digest_alert(&report, day, &leaders, now);
    let destinations = digest.channels.iter().map(|c| (c.clone(), None)).collect();
    match supervision.store.record_alert_to(&alert, destinations, None).await {
        Ok(_) => {
            supervision.metrics.take_on_deliveries(&digest.channels, 1);
            tracing::info!(day = %day, channels = ?digest.channels, "daily supervision digest journaled");
        }
        Err(error) => supervision.store.report_failure("journaling the daily digest", &error),
    }
}

/// The digest as an alert of its own kind (`event = "report"`, for the office): plain lines a
/// chat group reads, one per grid and worker, naming the grid leaders.
pub fn digest_alert(report: &Report, day: NaiveDate, leaders: &[&crate::dispatch::roster::Member], now: i64) -> crate::alert::Alert {
    let mut zh = format!("{}月{}日 督办情况：", day.month(), day.day());
    let mut en = format!("Supervision for {day}:");
    for (scope, name, f) in &report.rows {
        let scope_zh = match *scope {
            "grid" => "网格 ",
            "worker" => "网格员 ",
            _ => "",
        };
        let median = |pair: Option<(i64, i64)>| pair.map_or_else(|| "—".to_string(), |(m, _)| duration(m));
        let _ = write!(
            zh,
            "\n{scope_zh}{name}：事件 {}，已接单 {}，已办结 {}，接单中位 {}，到场中位 {}，超时 {}，升级 {}",
            f.incidents,
            f.accepted,
            f.resolved,
            median(f.to_accept),
            median(f.to_on_site),
            f.overdue,
            f.escalations
        );
        let _ = write!(
            en,
            "\n{scope} {name}: {} incidents, {} accepted, {} resolved, {} overdue, {} escalations",
            f.incidents, f.accepted, f.resolved, f.overdue, f.escalations
        );
    }
    let overdue = report.rows.first().map_or(0, |(_, _, f)| f.overdue);
    let mut alert = crate::alert::Alert::device(
        "daily-report",
        "supervision",
        "gridwatch",
        crate::alert::Event::Report,
        gridwatch_rules::Severity::Notice,
        "Daily supervision report",
        format!("{overdue} overdue"),
        now,
    );
    alert.audience = crate::alert::Audience::Office;
    alert.value = f64::from(overdue);
    alert.messages = [("en".to_string(), en), ("zh".to_string(), zh)].into_iter().collect();
    alert.recipients = leaders.iter().map(|m| m.name.clone()).collect();
    alert.mentions = leaders.iter().filter(|m| !m.phone.is_empty()).map(|m| m.phone.clone()).collect();
    alert
}

/// "4分12秒 / 9分": a median and 90th percentile as people read them ("—" without any).
pub fn span(pair: Option<(i64, i64)>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_a_spreadsheet_would_run_as_formulas_stay_text() {
        assert_eq!(spreadsheet_safe("王芳"), "王芳");
        assert_eq!(spreadsheet_safe("=1+1"), "'=1+1");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("-2"), "'-2");
        let report = Report { from_ms: 0, to_ms: 1, rows: vec![("worker", "=HYPERLINK(\"x\")".into(), Figures::default())] };
        assert!(report.csv().contains("\nworker,\"'=HYPERLINK(\"\"x\"\")\",0,"), "{}", report.csv());
    }
    use crate::alert::tests::sample_alert;
    use crate::config::Place;
    use crate::dispatch::incident::Action;
    use std::sync::Arc;

    /// 2026-12-03 08:00 in China.
    const T0: i64 = 1_796_256_000_000;
    const MIN: i64 = 60_000;

    fn sensor(id: &str, grid: &str) -> SensorConfig {
        let plain = SensorConfig::test_tilt(id, "north-lane");
        SensorConfig { place: Arc::new(Place { grid: Some(grid.into()), ..(*plain.place).clone() }), ..plain }
    }

    async fn open(store: &Store, sensor: &str, at_ms: i64) -> i64 {
        let mut alert = sample_alert("fired", 7.5);
        (alert.sensor, alert.at_ms) = (sensor.into(), at_ms);
        store.apply_alert(&alert, 0).await.unwrap().incident().unwrap()
    }

    /// Three danger incidents on 3 December with known times (and one the day before):
    /// A (grid-3, 王芳) accepted after 4 min, on site after 20, resolved after 60;
    /// B (grid-3, 王芳) escalated at 11 min, accepted at 12 (late), on site at 40 (late),
    /// resolved at 100; C (grid-4, 李强) accepted after 2 min, nobody on site 45 min later.
    async fn store_with_known_incidents(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).unwrap();
        let before = open(&store, "house-07", T0 - 24 * 60 * MIN).await;
        store.incident_action(before, Action::Accept, "王芳 (link)", None, T0 - 23 * 60 * MIN).unwrap();
        let a = open(&store, "house-08", T0).await;
        store.incident_action(a, Action::Accept, "王芳 (link)", None, T0 + 4 * MIN).unwrap();
        store.incident_action(a, Action::OnSite, "王芳 (link)", None, T0 + 20 * MIN).unwrap();
        store.incident_action(a, Action::Resolve, "王芳 (link)", Some("propped"), T0 + 60 * MIN).unwrap();
        let b_at = T0 + 60 * MIN;
        let b = open(&store, "house-09", b_at).await;
        let step = crate::store::EscalationStep { alert: sample_alert("escalated", 7.5), audit: "escalated (accepted) to 陈刚".into() };
        store
            .record_escalation(
                b,
                vec![step],
                vec![Vec::new()],
                crate::store::LadderMove { progress: Default::default(), age_ms: 11 * MIN, next_due_age_ms: None },
                b_at + 11 * MIN,
            )
            .await
            .unwrap();
        store.incident_action(b, Action::Accept, "王芳 (wang, own link)", None, b_at + 12 * MIN).unwrap();
        store.incident_action(b, Action::OnSite, "王芳 (wang, own link)", None, b_at + 40 * MIN).unwrap();
        store.incident_action(b, Action::Resolve, "王芳 (wang, own link)", Some("done"), b_at + 100 * MIN).unwrap();
        let c_at = T0 + 120 * MIN;
        let c = open(&store, "house-10", c_at).await;
        store.incident_action(c, Action::Accept, "李强", None, c_at + 2 * MIN).unwrap();
        store
    }

    fn inventory() -> Vec<SensorConfig> {
        vec![sensor("house-07", "grid-3"), sensor("house-08", "grid-3"), sensor("house-09", "grid-3"), sensor("house-10", "grid-4")]
    }

    #[tokio::test]
    async fn a_days_report_has_exact_figures_per_grid_and_worker() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_known_incidents(dir.path()).await;
        let zone = crate::local_time::DEFAULT;
        let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let (from, to) = (day_start(day, zone).unwrap(), day_start(day.succ_opt().unwrap(), zone).unwrap());
        let now = T0 + 165 * MIN;
        let report = Report::build(&store, &inventory(), &Dispatch::default(), from, to, now).unwrap();
        let row = |scope: &str, name: &str| report.rows.iter().find(|(s, n, _)| *s == scope && n == name).map(|(_, _, f)| f.clone()).unwrap();
        let grid_3 = Figures {
            incidents: 2,
            accepted: 2,
            resolved: 2,
            to_accept: Some((240, 720)),
            to_on_site: Some((1200, 2400)),
            to_resolve: Some((3600, 6000)),
            escalations: 1,
            overdue: 1,
        };
        assert_eq!(row("grid", "grid-3"), grid_3);
        assert_eq!(row("worker", "王芳"), grid_3, "both of 王芳's links count as 王芳");
        let grid_4 =
            Figures { incidents: 1, accepted: 1, resolved: 0, to_accept: Some((120, 120)), to_on_site: None, to_resolve: None, escalations: 0, overdue: 1 };
        assert_eq!(row("grid", "grid-4"), grid_4, "nobody on site after 45 min: past the 30 min deadline");
        assert_eq!(row("worker", "李强"), grid_4);
        let all = row("all", "全部");
        assert_eq!((all.incidents, all.to_accept, all.overdue), (3, Some((240, 720)), 2), "the day before is not in it");
        assert_eq!(report.rows.len(), 5);

        let csv = report.csv();
        assert!(csv.contains("grid,grid-3,2,2,2,240,720,1200,2400,3600,6000,1,1\n"), "{csv}");
        assert!(csv.contains("worker,李强,1,1,0,120,120,,,,,0,1\n"), "{csv}");
        let markdown = report.markdown(zone);
        assert!(markdown.starts_with("### 督办报表 2026-12-03 00:00:00 至 2026-12-04 00:00:00"), "local days: {markdown}");
        assert!(markdown.contains("| 网格 | grid-3 | 2 | 2 | 2 | 4分 / 12分 | 20分 / 40分 | 1时0分 / 1时40分 | 1 | 1 |"), "{markdown}");
    }

    #[tokio::test]
    async fn todays_figures_are_metrics_and_yesterdays_go_to_the_grid_leaders() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_known_incidents(dir.path()).await;
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let supervision = Supervision {
            store,
            sensors: inventory().into(),
            dispatch: Default::default(),
            metrics: metrics.clone(),
            clock: crate::clock::Clock::System,
            time_zone: crate::local_time::DEFAULT,
            digest: None,
        };
        publish(&supervision, T0 + 165 * MIN);
        let text = metrics.render();
        assert!(text.contains(r#"gridwatch_supervision_seconds_today{scope="grid",name="grid-3",figure="accept",quantile="0.9"} 720"#), "{text}");
        assert!(text.contains(r#"gridwatch_supervision_today{scope="worker",name="李强",figure="overdue",quantile=""} 1"#), "{text}");

        let report =
            Report::build(&supervision.store, &supervision.sensors, &supervision.dispatch.get(), T0 - 8 * 60 * MIN, T0 + 16 * 60 * MIN, T0 + 16 * 60 * MIN)
                .unwrap();
        let leader = crate::dispatch::roster::Member {
            id: "chen".into(),
            name: "陈刚".into(),
            role: "grid_leader".into(),
            phone: "13800000002".into(),
            grids: Vec::new(),
            channels: Vec::new(),
        };
        let alert = digest_alert(&report, NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(), &[&leader], T0 + 24 * 60 * MIN);
        assert_eq!((alert.event.as_str(), alert.audience.as_str(), alert.mentions.as_slice()), ("report", "office", ["13800000002".to_string()].as_slice()));
        let message = crate::sinks::text::message(&alert, crate::sinks::text::Wording::default(), crate::sinks::text::Markup::Plain);
        assert!(
            message
                .starts_with("📋 督办日报\n12月3日 督办情况：\n全部：事件 3，已接单 3，已办结 2，接单中位 4分，到场中位 20分，超时 2，升级 1\n网格 grid-3："),
            "{message}"
        );
        assert!(message.contains("请网格长督促超时事件办结。"), "{message}");
        // The digest is journaled for the leaders' channel like any alert (the journal once took
        // rule events only).
        supervision.store.record_alert_to(&alert, vec![("leaders".to_string(), None)], None).await.unwrap();
        let due = supervision.store.due_deliveries("leaders", i64::MAX / 2, 10).await.unwrap();
        assert_eq!(due.iter().map(|d| d.alert.event.as_str()).collect::<Vec<_>>(), ["report"]);
    }

    #[tokio::test]
    async fn a_re_fire_after_resolve_starts_new_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = open(&store, "house-08", T0).await;
        store.incident_action(id, Action::Resolve, "王芳", Some("propped"), T0 + 30 * MIN).unwrap();
        let mut cleared = sample_alert("cleared", 1.0);
        (cleared.sensor, cleared.at_ms) = ("house-08".into(), T0 + 40 * MIN);
        store.apply_alert(&cleared, 0).await.unwrap();
        assert_eq!(open(&store, "house-08", T0 + 90 * MIN).await, id, "the same incident, re-opened");
        store.incident_action(id, Action::Accept, "李强", None, T0 + 95 * MIN).unwrap();
        let timelines = timelines(&store, &inventory(), T0 - MIN, T0 + 200 * MIN).unwrap();
        assert_eq!(timelines.len(), 2, "{timelines:?}");
        assert_eq!((timelines[0].resolved_ms, timelines[0].worker.as_deref()), (Some(T0 + 30 * MIN), Some("王芳")));
        assert_eq!((timelines[1].opened_ms, timelines[1].accepted_ms, timelines[1].worker.as_deref()), (T0 + 90 * MIN, Some(T0 + 95 * MIN), Some("李强")));
    }

    #[test]
    fn periods_are_whole_local_days_weeks_and_months() {
        let thursday = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let date = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(previous("day", thursday).unwrap(), (date(12, 2), date(12, 2)));
        assert_eq!(previous("week", thursday).unwrap(), (date(11, 23), date(11, 29)));
        assert_eq!(previous("month", thursday).unwrap(), (date(11, 1), date(11, 30)));
        assert!(previous("year", thursday).is_err());
        assert_eq!(median_p90(vec![5, 1, 3, 2]), Some((2, 5)));
        assert_eq!(worker_name("王芳 (wang, own link)"), "王芳");
        assert_eq!(duration(3 * 3600 + 125), "3时2分");
    }
}
