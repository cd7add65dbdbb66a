//! Scores replayed cases against their ground truth, as rates, and checks the targets.
//!
//! Generic over the packs: an event is *grid-facing* when its rule is not `device`, *installer-
//! facing* when it is; severities are compared, rule ids only label the per-rule table. An
//! incident is one (rule, subject) from `Fired` to `Cleared`; its severity is the highest it
//! reached through `Changed`. A building's event (`agree` rules) names the building's first box,
//! so it counts for every box of the building.

use super::corpus::{cases, CaseSpec, Family, Size, HEALTHY_KINDS, JUMP_KINDS};
use super::faults::FAULT_KINDS;
use super::movements::CREEP_BANDS;
use super::replay::{replay, Event, Replayed};
use super::water::WATER_KINDS;
use super::{Truth, HOUR, MINUTE, YEAR};
use gridwatch_rules::rule::Check;
use gridwatch_rules::{EventKind, Millis, RuleSet, Severity};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One case after its replay (the readings themselves are dropped).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub spec: CaseSpec,
    pub truth: Truth,
    pub boxes: usize,
    pub sensor_years: f64,
    /// Report interval of the box the truth is about (a whole building's jump: its second-fastest
    /// box; otherwise the case's smallest).
    pub target_interval_ms: Millis,
    pub start: Millis,
    pub replayed: Replayed,
}

/// Builds and replays every case of a run on `threads` threads.
pub fn run(rules: &RuleSet, size: &Size, seed: u64, threads: usize) -> (Vec<CaseResult>, f64) {
    let specs = cases(size, seed);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                let case = spec.build();
                let target = match case.truth {
                    Truth::Creep { target, .. } | Truth::Jump { target, .. } | Truth::Fault { target, .. } => Some(target),
                    _ => None,
                };
                let mut intervals: Vec<Millis> = case.streams.iter().map(|s| s.subject.interval_ms).collect();
                intervals.sort_unstable();
                let target_interval_ms = match case.truth {
                    // A building's jump is seen once two boxes have reported it: the second-fastest box.
                    Truth::Jump { whole_building: true, .. } => intervals.get(1).copied().unwrap_or(case.interval_ms),
                    _ => target.and_then(|t| case.streams.get(t)).map_or(case.interval_ms, |s| s.subject.interval_ms),
                };
                let sensor_years = case.streams.len() as f64 * (case.end - case.start) as f64 / YEAR as f64;
                let replayed = replay(rules, &case);
                let result = CaseResult {
                    spec: *spec,
                    truth: case.truth.clone(),
                    boxes: case.streams.len(),
                    sensor_years,
                    target_interval_ms,
                    start: case.start,
                    replayed,
                };
                if let Ok(mut results) = results.lock() {
                    results[i] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default().into_iter().flatten().collect();
    (results, started.elapsed().as_secs_f64())
}

/// The most installer alarms that a healthy box is stuck (flat lines) per 100 box-years the
/// reduced corpus allows.
const STUCK_ON_HEALTHY_PER_100: f64 = 30.0;

/// One incident: a (rule, subject) from `Fired` to `Cleared`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incident {
    pub rule: usize,
    pub subject: usize,
    pub building: bool,
    pub opened: Millis,
    pub max: Severity,
    /// When each severity (notice … danger) was first reached.
    pub reached: [Option<Millis>; 4],
    /// When it cleared; `None` while still open at the end of the case.
    pub closed: Option<Millis>,
}

impl Incident {
    /// When it first reached `severity` or worse.
    pub fn reached_at_least(&self, severity: Severity) -> Option<Millis> {
        self.reached[severity as usize..].iter().flatten().min().copied()
    }

    /// It is about box `target` (its own, or its building's).
    pub fn concerns(&self, target: usize) -> bool {
        self.building || self.subject == target
    }
}

/// The incidents of a replay, in the order they opened.
pub fn incidents(events: &[Event]) -> Vec<Incident> {
    let mut all: Vec<Incident> = Vec::new();
    let mut open: HashMap<(usize, usize), usize> = HashMap::new();
    for e in events {
        let key = (e.rule, e.subject);
        match e.kind {
            EventKind::Fired => {
                let mut reached = [None; 4];
                reached[e.severity as usize] = Some(e.at);
                open.insert(key, all.len());
                all.push(Incident { rule: e.rule, subject: e.subject, building: e.building, opened: e.at, max: e.severity, reached, closed: None });
            }
            EventKind::Changed => {
                if let Some(&i) = open.get(&key) {
                    let incident = &mut all[i];
                    incident.max = incident.max.max(e.severity);
                    incident.reached[e.severity as usize].get_or_insert(e.at);
                }
            }
            EventKind::Cleared => {
                if let Some(i) = open.remove(&key) {
                    all[i].closed = Some(e.at);
                }
            }
        }
    }
    all
}

/// Grid-facing incidents (in opening order) that opened less than a day after the same rule's
/// previous incident on the same sensor cleared.
fn reopened_within_day(incidents: &[Incident], device: &impl Fn(usize) -> bool) -> u64 {
    let mut last_closed: HashMap<(usize, usize), Millis> = HashMap::new();
    let mut count = 0;
    for i in incidents.iter().filter(|i| !device(i.rule)) {
        let key = (i.rule, i.subject);
        if last_closed.get(&key).is_some_and(|&closed| i.opened - closed < super::DAY) {
            count += 1;
        }
        if let Some(closed) = i.closed {
            last_closed.insert(key, closed);
        }
    }
    count
}

/// Grid-facing incidents by the severity they reached (blue, yellow, orange, red).
pub type BySeverity = [u64; 4];

#[derive(Debug, Clone, Default)]
pub struct RateRow {
    pub sub: &'static str,
    pub cases: usize,
    pub sensors: usize,
    pub sensor_years: f64,
    pub grid: BySeverity,
    pub device: u64,
    /// Hours from the onset (fouling, calibration, a discharge) to the first grid-facing incident.
    pub after_onset_h: Vec<f64>,
    /// Grid-facing incidents opened within a day of the same rule's last one on the sensor
    /// clearing: a daily cycle crossing a limit, one incident a day.
    pub reopened_within_day: u64,
}

impl RateRow {
    pub fn grid_total(&self) -> u64 {
        self.grid.iter().sum()
    }

    /// `count` per 100 sensor-years.
    pub fn per_100(&self, count: u64) -> f64 {
        if self.sensor_years > 0.0 {
            count as f64 * 100.0 / self.sensor_years
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CreepRow {
    pub sub: &'static str,
    pub cases: usize,
    /// Delays (h) of the first yellow-or-worse from the 2‰ crossing, of cases detected at all.
    pub delays_h: Vec<f64>,
    pub within_24h: usize,
    /// Cases whose first yellow came before the 1.5‰ crossing.
    pub early: usize,
    /// Of those, cases whose first yellow came after the creep began (a rate rule seeing the
    /// real creep early, rather than a false alarm of the healthy wall).
    pub early_while_creeping: usize,
    pub missed: usize,
    /// Cases where one (rule, box) fired more than once during the creep.
    pub flapping: usize,
    pub max_fired_per_rule_box: u64,
    /// Hours from the 2‰ crossing to the first grid-facing incident of any severity (a notice
    /// included) after the creep began: negative when the worker heard of it before; cases with
    /// none are left out.
    pub first_told_h: Vec<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct JumpRow {
    pub sub: &'static str,
    /// "<= 4 min" or "> 4 min".
    pub band: &'static str,
    pub cases: usize,
    /// Delays (min) of the first red at or after the jump, of cases detected at all.
    pub delays_min: Vec<f64>,
    pub within_target: usize,
    pub missed: usize,
    pub missed_perpendicular: usize,
    pub missed_exact_0_1: usize,
    pub missed_multi_box: usize,
    /// Cases of one box of several moving alone (judged by an unconfirmed orange and an
    /// installer alarm instead of red).
    pub alone: usize,
    /// Red incidents reached before the jump (false reds).
    pub red_before: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FaultRow {
    pub sub: &'static str,
    pub cases: usize,
    pub red: u64,
    pub cases_with_red: usize,
    /// Hours from the onset to the first installer-facing incident on the faulty box.
    pub told_h: Vec<f64>,
    pub told_in_2h: usize,
    /// Grid-facing incidents opened after the onset anywhere in the building.
    pub grid: BySeverity,
    /// Installer-facing incidents on the healthy boxes.
    pub device_on_healthy: u64,
    pub out_of_order: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BoundaryRow {
    pub cases: usize,
    pub alarmed: usize,
    pub failures: Vec<String>,
}

/// What each rule cost (incidents opened) and caught, per family.
#[derive(Debug, Clone, Default)]
pub struct RuleRow {
    pub id: String,
    pub device: bool,
    /// A flat-line check: it tells installers a box is stuck.
    pub flat_line: bool,
    pub healthy: u64,
    pub creep: u64,
    pub creep_first_yellow: u64,
    pub jump: u64,
    pub jump_first_red: u64,
    pub fault: u64,
    pub fault_red: u64,
    pub water_healthy: u64,
    pub water_other: u64,
    pub boundary: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Throughput {
    pub readings: u64,
    pub engine_seconds: f64,
    pub wall_seconds: f64,
    pub threads: usize,
}

impl Throughput {
    /// Readings per second per core, in the engine.
    pub fn per_second(&self) -> f64 {
        self.readings as f64 / self.engine_seconds.max(1e-9)
    }
}

/// A run's scores.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub seed: u64,
    pub healthy: Vec<RateRow>,
    pub creep: Vec<CreepRow>,
    pub jumps: Vec<JumpRow>,
    pub faults: Vec<FaultRow>,
    pub water: Vec<RateRow>,
    pub boundary: BoundaryRow,
    pub rules: Vec<RuleRow>,
    pub throughput: Throughput,
    /// A few failing cases per family, described, to start debugging from.
    pub examples: Vec<String>,
}

/// How many failing cases of each kind the report describes unless asked for more.
pub const EXAMPLES_PER_KIND: usize = 4;

fn hours(ms: Millis) -> f64 {
    ms as f64 / HOUR as f64
}

/// Scores `results` replayed over `rules`.
pub fn score(rules: &RuleSet, results: &[CaseResult], seed: u64, wall_seconds: f64, threads: usize, examples_per_kind: usize) -> Scores {
    let device = |rule: usize| rules.rules.get(rule).is_some_and(|r| r.device);
    let mut s = Scores {
        seed,
        healthy: HEALTHY_KINDS.iter().map(|k| RateRow { sub: k.0, ..RateRow::default() }).collect(),
        creep: CREEP_BANDS.iter().map(|k| CreepRow { sub: k.0, ..CreepRow::default() }).collect(),
        jumps: JUMP_KINDS.iter().flat_map(|&sub| ["<= 4 min", "> 4 min"].map(|band| JumpRow { sub, band, ..JumpRow::default() })).collect(),
        faults: FAULT_KINDS.iter().map(|&sub| FaultRow { sub, ..FaultRow::default() }).collect(),
        water: WATER_KINDS.iter().map(|&sub| RateRow { sub, ..RateRow::default() }).collect(),
        rules: rules
            .rules
            .iter()
            .map(|r| RuleRow { id: r.id.clone(), device: r.device, flat_line: matches!(r.check, Check::FlatLine { .. }), ..RuleRow::default() })
            .collect(),
        ..Scores::default()
    };
    let mut examples: HashMap<&'static str, usize> = HashMap::new();
    let mut example = |kind: &'static str, text: String, out: &mut Vec<String>| {
        let n = examples.entry(kind).or_default();
        *n += 1;
        if *n <= examples_per_kind {
            out.push(format!("{kind}: {text}"));
        }
    };
    for r in results {
        s.throughput.readings += r.replayed.readings;
        s.throughput.engine_seconds += r.replayed.seconds;
        let incidents = incidents(&r.replayed.events);
        let grid = || incidents.iter().filter(|i| !device(i.rule));
        let name = r.spec.name();
        let rule_id = |i: &Incident| rules.rules.get(i.rule).map_or("?", |r| r.id.as_str()).to_string();
        for i in &incidents {
            let row = &mut s.rules[i.rule];
            match r.spec.family {
                Family::Healthy => row.healthy += 1,
                Family::Creep => row.creep += 1,
                Family::Jump => row.jump += 1,
                Family::Fault => {
                    row.fault += 1;
                    row.fault_red += u64::from(i.max == Severity::Danger);
                }
                Family::Water if r.spec.kind == 0 => row.water_healthy += 1,
                Family::Water => row.water_other += 1,
                Family::Boundary => row.boundary += 1,
            }
        }
        match (&r.truth, r.spec.family) {
            (Truth::Healthy, _) | (Truth::Water { .. }, _) => {
                let onset = match r.truth {
                    Truth::Water { onset } => onset,
                    _ => None,
                };
                let row = if r.spec.family == Family::Healthy { &mut s.healthy[r.spec.kind] } else { &mut s.water[r.spec.kind] };
                row.cases += 1;
                row.sensors += r.boxes;
                row.sensor_years += r.sensor_years;
                for i in &incidents {
                    if device(i.rule) {
                        row.device += 1;
                    } else {
                        row.grid[i.max as usize] += 1;
                        let kind = if r.spec.family == Family::Healthy { "healthy wall alarm" } else { "water alarm" };
                        let day = (i.opened - r.start) as f64 / super::DAY as f64;
                        example(
                            kind,
                            format!("{name} ({}) sensor {}: {} reached {} on day {day:.1}", r.spec.sub, i.subject, rule_id(i), i.max),
                            &mut s.examples,
                        );
                    }
                }
                row.reopened_within_day += reopened_within_day(&incidents, &device);
                if let Some(onset) = onset {
                    if let Some(first) = grid().filter(|i| i.opened >= onset).map(|i| i.opened).min() {
                        row.after_onset_h.push(hours(first - onset));
                    }
                }
            }
            (&Truth::Creep { target, start, at_1_5, at_2, until, rate_per_day }, _) => {
                let row = &mut s.creep[r.spec.kind];
                row.cases += 1;
                let first = grid().filter(|i| i.concerns(target)).filter_map(|i| i.reached_at_least(Severity::Warning).map(|t| (t, i))).min_by_key(|(t, _)| *t);
                match first {
                    Some((t, i)) => {
                        s.rules[i.rule].creep_first_yellow += 1;
                        let delay = hours(t - at_2);
                        row.delays_h.push(delay);
                        if t < at_1_5 {
                            row.early += 1;
                            row.early_while_creeping += usize::from(t >= start);
                            example(
                                "creep early",
                                format!("{name} ({rate_per_day:.3}‰/d): {} yellow {:.1} h before the 1.5‰ crossing", rule_id(i), hours(at_1_5 - t)),
                                &mut s.examples,
                            );
                        } else if delay <= 24.0 {
                            row.within_24h += 1;
                        } else {
                            example("creep late", format!("{name} ({rate_per_day:.3}‰/d): first yellow {delay:.1} h after the 2‰ crossing"), &mut s.examples);
                        }
                    }
                    None => {
                        row.missed += 1;
                        example(
                            "creep missed",
                            format!("{name} ({rate_per_day:.3}‰/d): no yellow by {:.0} h after the 2‰ crossing", hours(until - at_2)),
                            &mut s.examples,
                        );
                    }
                }
                if let Some(told) = grid().filter(|i| i.concerns(target) && i.opened >= start).map(|i| i.opened).min() {
                    row.first_told_h.push(hours(told - at_2));
                }
                let mut fired: HashMap<(usize, usize), u64> = HashMap::new();
                for i in grid().filter(|i| i.concerns(target) && i.opened >= start) {
                    *fired.entry((i.rule, i.subject)).or_default() += 1;
                }
                let max = fired.values().copied().max().unwrap_or(0);
                row.max_fired_per_rule_box = row.max_fired_per_rule_box.max(max);
                if max > 1 {
                    row.flapping += 1;
                    if let Some((&(rule, _), n)) = fired.iter().max_by_key(|(_, n)| **n) {
                        let id = rules.rules.get(rule).map_or("?", |r| r.id.as_str());
                        example("creep flapping", format!("{name} ({rate_per_day:.3}‰/d): {id} opened {n} times"), &mut s.examples);
                    }
                }
            }
            (&Truth::Jump { target, at, size_deg, relative_deg, whole_building, .. }, _) => {
                let slow = r.target_interval_ms > 4 * MINUTE;
                let row = &mut s.jumps[r.spec.kind * 2 + usize::from(slow)];
                row.cases += 1;
                let limit = if slow { 2 * r.target_interval_ms } else { 10 * MINUTE };
                let reds: Vec<(Millis, &Incident)> =
                    grid().filter(|i| whole_building || i.concerns(target)).filter_map(|i| i.reached[Severity::Danger as usize].map(|t| (t, i))).collect();
                row.red_before += reds.iter().filter(|(t, _)| *t < at).count() as u64;
                // One box of several moving alone is what a faulty box looks like too: the issue
                // wants red to need agreement there, so what counts is an unconfirmed orange (or
                // worse) to the grid *and* an alarm to installers about that box.
                let alone = !whole_building && r.boxes > 1;
                let told = if alone {
                    row.alone += 1;
                    let orange = grid()
                        .filter(|i| i.concerns(target))
                        .filter_map(|i| i.reached_at_least(Severity::Alarm).map(|t| (t, i)))
                        .filter(|(t, _)| *t >= at)
                        .min_by_key(|(t, _)| *t);
                    let installers = incidents.iter().filter(|i| device(i.rule) && i.concerns(target) && i.opened >= at).map(|i| i.opened).min();
                    orange.zip(installers).map(|((t, i), installed)| (t.max(installed), i))
                } else {
                    reds.iter().filter(|(t, _)| *t >= at).min_by_key(|(t, _)| *t).copied()
                };
                match told {
                    Some((t, i)) => {
                        s.rules[i.rule].jump_first_red += 1;
                        row.delays_min.push((t - at) as f64 / MINUTE as f64);
                        if t - at <= limit {
                            row.within_target += 1;
                        } else {
                            example(
                                "jump late",
                                format!(
                                    "{name}: {size_deg:.3}° at {relative_deg:.0}° from the offset, every {} min: red after {:.1} min",
                                    r.target_interval_ms / MINUTE,
                                    (t - at) as f64 / MINUTE as f64
                                ),
                                &mut s.examples,
                            );
                        }
                    }
                    None => {
                        row.missed += 1;
                        let perpendicular = (relative_deg - 90.0).abs() < 1e-9 || (relative_deg - 270.0).abs() < 1e-9;
                        row.missed_perpendicular += usize::from(perpendicular);
                        row.missed_exact_0_1 += usize::from(size_deg == 0.1);
                        row.missed_multi_box += usize::from(r.boxes > 1);
                        let worst = grid().filter(|i| (whole_building || i.concerns(target)) && i.opened >= at).map(|i| i.max).max();
                        example(
                            "jump missed",
                            format!(
                                "{name} ({}): {size_deg:.3}° at {relative_deg:.0}° from the offset, every {} min, {} box(es): no red (worst {worst:?})",
                                r.spec.sub,
                                r.target_interval_ms / MINUTE,
                                r.boxes
                            ),
                            &mut s.examples,
                        );
                    }
                }
            }
            (&Truth::Fault { target, onset }, _) => {
                let row = &mut s.faults[r.spec.kind];
                row.cases += 1;
                row.out_of_order += r.replayed.out_of_order;
                let red = grid().filter(|i| i.max == Severity::Danger).count() as u64;
                row.red += red;
                if red > 0 {
                    row.cases_with_red += 1;
                    let ids: Vec<String> = grid().filter(|i| i.max == Severity::Danger).map(rule_id).collect();
                    example("fault red", format!("{name} ({}): red from {}", r.spec.sub, ids.join(", ")), &mut s.examples);
                }
                for i in grid().filter(|i| i.opened >= onset) {
                    row.grid[i.max as usize] += 1;
                }
                let devices = || incidents.iter().filter(|i| device(i.rule));
                row.device_on_healthy += devices().filter(|i| !i.concerns(target)).count() as u64;
                // An alarm on the engine's own clock (a device clock check) is timed by its
                // latest tick, the whole minute at or before the reading that showed the fault.
                let symptom_tick = onset - onset.rem_euclid(MINUTE);
                match devices().filter(|i| i.concerns(target) && i.opened >= symptom_tick).map(|i| i.opened).min() {
                    Some(t) => {
                        let after = (t - onset).max(0);
                        row.told_h.push(hours(after));
                        row.told_in_2h += usize::from(after <= 2 * HOUR);
                    }
                    None => example("fault untold", format!("{name} ({}): no installer alarm for the faulty box", r.spec.sub), &mut s.examples),
                }
            }
            (&Truth::Boundary { field, value, class, lake }, _) => {
                s.boundary.cases += 1;
                if let Some(i) = grid().max_by_key(|i| i.max) {
                    s.boundary.alarmed += 1;
                    s.boundary.failures.push(format!("class {class}{}: {field} = {value} -> {} ({})", if lake { " lake" } else { "" }, i.max, rule_id(i)));
                }
            }
        }
    }
    s.throughput.wall_seconds = wall_seconds;
    s.throughput.threads = threads;
    for row in &mut s.creep {
        row.delays_h.sort_by(f64::total_cmp);
        row.first_told_h.sort_by(f64::total_cmp);
    }
    for row in &mut s.jumps {
        row.delays_min.sort_by(f64::total_cmp);
    }
    for row in &mut s.faults {
        row.told_h.sort_by(f64::total_cmp);
    }
    for row in &mut s.water {
        row.after_onset_h.sort_by(f64::total_cmp);
    }
    s
}

/// The `q` quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Scores {
    /// The targets this run misses, one line each (empty: all met).
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for row in &self.healthy {
            let rate = row.per_100(row.grid_total());
            if rate > 1.0 || row.grid[3] > 0 {
                out.push(format!("healthy walls, {}: {rate:.1} grid-facing incidents per 100 box-years ({} red); target <= 1 and 0 red", row.sub, row.grid[3]));
            }
        }
        for row in &self.creep {
            if row.within_24h < row.cases || row.early > 0 || row.flapping > 0 {
                out.push(format!(
                    "{}: yellow within 24 h of the 2‰ crossing in {}/{} cases, {} before 1.5‰ ({} after the creep began), {} missed, {} flapping (max {} incidents per rule and box); target all within 24 h, none early, one incident",
                    row.sub, row.within_24h, row.cases, row.early, row.early_while_creeping, row.missed, row.flapping, row.max_fired_per_rule_box
                ));
            }
        }
        for row in &self.jumps {
            if row.within_target < row.cases {
                let target = if row.band == "<= 4 min" { "10 min" } else { "2 report intervals" };
                out.push(format!(
                    "{}, interval {}: red within {target} in {}/{} cases ({} missed)",
                    row.sub, row.band, row.within_target, row.cases, row.missed
                ));
            }
        }
        for row in &self.faults {
            if row.red > 0 || row.told_in_2h < row.cases {
                out.push(format!(
                    "faulty box, {}: {} red in {}/{} cases (target 0); installers told within 2 h in {}/{} cases",
                    row.sub, row.red, row.cases_with_red, row.cases, row.told_in_2h, row.cases
                ));
            }
        }
        self.water_misses(&mut out);
        if self.boundary.alarmed > 0 {
            out.push(format!(
                "GB 3838 boundaries: {} of {} values on the target class's own limit alarmed (target 0): {}",
                self.boundary.alarmed,
                self.boundary.cases,
                self.boundary.failures.join("; ")
            ));
        }
        out
    }

    /// The targets the shipped packs are held to in the test suite: every target of the issue
    /// except the known limits docs/ALARM-QUALITY.md explains, which are held to what they reach
    /// instead, so that a regression still fails.
    ///
    /// Known limits: a seasonal swing of more than ±0.5‰ on a box that reports no temperature
    /// cannot be told from a lean (held to 0 red and, since such a box raises no blue, 0 blue);
    /// a creep's 1.5‰ and 2‰ crossings are timed on the creep alone, so the weather left in the
    /// daily level can move the daily level's crossing by days for slow creeps (held to 24 h
    /// from 0.15‰/day; on a box without temperature a yellow before 1.5‰ is allowed); a drift,
    /// intermittent flips, a stuck or coarsely rounding box, one frozen axis cannot all be told
    /// within 2 h (held to 0 red only). A device clock jump is told within 2 h (`tilt-clock-ahead`).
    /// The water targets, the same in the report and in the test suite: a river's daily cycle
    /// past a limit (a calibration step, a fouling probe) is one incident while it lasts, not
    /// one a day (rain is left out: two showers a day apart are two events); a muddy discharge,
    /// what the turbidity rule is for, is told within 2 h.
    fn water_misses(&self, out: &mut Vec<String>) {
        for (kind, row) in self.water.iter().enumerate().filter(|&(kind, _)| kind != super::water::RAIN) {
            if row.reopened_within_day > 0 {
                out.push(format!("water, {}: {} incidents opened within a day of the last one clearing", row.sub, row.reopened_within_day));
            }
            let told = row.after_onset_h.iter().filter(|&&h| h <= 2.0).count();
            if kind == super::water::DISCHARGE && told < row.cases {
                out.push(format!("water, {}: a grid alarm within 2 h in {told}/{} cases", row.sub, row.cases));
            }
        }
    }

    pub fn regressions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for row in &self.healthy {
            let rate = row.per_100(row.grid_total());
            let seasons_alone = row.sub.contains("no temperature");
            // A box without temperature raises no blue at all (`uncompensated = "warning"`):
            // its blue came with the weather, 250 per 100 box-years.
            if row.grid[3] > 0 || (!seasons_alone && rate > 1.0) || (seasons_alone && row.grid[0] > 0) {
                out.push(format!("healthy walls, {}: {rate:.1} grid-facing incidents per 100 box-years ({} blue, {} red)", row.sub, row.grid[0], row.grid[3]));
            }
        }
        for row in &self.creep {
            let timed = row.sub.contains("0.15-0.5");
            // Without a temperature the seasons move the daily level by up to ±1‰: the yellow
            // at 2‰ can come before the creep alone made 1.5‰ (a known limit).
            let early = if row.sub.contains("no temperature") { 0 } else { row.early };
            if early > 0 || row.missed > 0 || row.flapping > 0 || (timed && row.within_24h < row.cases) {
                out.push(format!(
                    "{}: {} yellow before 1.5‰, {} missed, {} flapping, {}/{} within 24 h",
                    row.sub, row.early, row.missed, row.flapping, row.within_24h, row.cases
                ));
            }
        }
        for row in &self.jumps {
            if row.within_target < row.cases || row.red_before > 0 {
                out.push(format!(
                    "{}, interval {}: told in time in {}/{} cases, {} red before the jump",
                    row.sub, row.band, row.within_target, row.cases, row.red_before
                ));
            }
        }
        for row in &self.faults {
            let told_in_time = matches!(row.sub, "sign flip" | "erratic" | "spike bursts" | "clock jump");
            if row.red > 0 || (told_in_time && row.told_in_2h * 10 < row.cases * 9) {
                out.push(format!("faulty box, {}: {} red; installers told within 2 h in {}/{} cases", row.sub, row.red, row.told_in_2h, row.cases));
            }
            // A drift is told by comparing the box with its building's other boxes
            // (`tilt-box-drifting`), within a day even at 0.5‰/day; 2 h is out of reach below
            // about 4‰/day (docs/ALARM-QUALITY.md).
            let drift_told_in_a_day = row.told_h.iter().filter(|&&h| h <= 24.0).count();
            if row.sub == "drift" && drift_told_in_a_day < row.cases {
                out.push(format!("faulty box, drift: installers told within 24 h in {drift_told_in_a_day}/{} cases", row.cases));
            }
        }
        // Healthy boxes told stuck: a quiet box rounding to 0.01° sits on one value for days, and
        // was told so dozens of times a year before the flat lines learned from their own false
        // alarms (149 per 100 box-years on the full corpus, 100 on this reduced one; now 19 and
        // 17). Not one of the targets: held here, not in `violations`.
        let box_years: f64 = self.healthy.iter().map(|row| row.sensor_years).sum();
        let stuck: u64 = self.rules.iter().filter(|rule| rule.flat_line).map(|rule| rule.healthy).sum();
        if stuck as f64 > STUCK_ON_HEALTHY_PER_100 * box_years / 100.0 {
            out.push(format!("healthy walls: {stuck} installer alarms that a box is stuck in {box_years:.0} box-years"));
        }
        self.water_misses(&mut out);
        if self.boundary.alarmed > 0 {
            out.push(format!("GB 3838 boundaries: {} of {} alarmed", self.boundary.alarmed, self.boundary.cases));
        }
        out
    }
}
