//! The scores as Markdown tables (the form docs/ALARM-QUALITY.md publishes) or as JSON.

use super::score::{quantile, RateRow, Scores};
use serde_json::{json, Value};
use std::fmt::Write as _;

fn stats(sorted: &[f64], digits: usize) -> String {
    match (quantile(sorted, 0.5), quantile(sorted, 0.95), sorted.last()) {
        (Some(p50), Some(p95), Some(max)) => format!("{p50:.digits$} / {p95:.digits$} / {max:.digits$}"),
        _ => "–".into(),
    }
}

fn stats_json(sorted: &[f64]) -> Value {
    json!({ "median": quantile(sorted, 0.5), "p95": quantile(sorted, 0.95), "max": sorted.last() })
}

fn rate_table(out: &mut String, title: &str, unit: &str, rows: &[RateRow], onset: bool) {
    let _ = writeln!(out, "### {title}\n");
    let extra = if onset { " | first grid alarm after onset, h (median / p95 / max) | reopened within a day |" } else { " |" };
    let _ =
        writeln!(out, "| sub-family | cases | sensors | {unit} | blue | yellow | orange | red | grid-facing per 100 {unit} | installer per 100 {unit}{extra}");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|{}", if onset { "---|---|" } else { "" });
    for r in rows {
        let tail = if onset { format!(" {} | {} |", stats(&r.after_onset_h, 1), r.reopened_within_day) } else { String::new() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.1} | {:.1} |{tail}",
            r.sub,
            r.cases,
            r.sensors,
            r.sensor_years,
            r.grid[0],
            r.grid[1],
            r.grid[2],
            r.grid[3],
            r.per_100(r.grid_total()),
            r.per_100(r.device)
        );
    }
    out.push('\n');
}

/// Markdown tables of every family, the per-rule table, throughput and the unmet targets.
pub fn text(s: &Scores) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Alarm quality (seed {})\n", s.seed);
    rate_table(&mut out, "Healthy walls: false alarms (incidents by the severity they reached)", "box-years", &s.healthy, false);

    let _ = writeln!(out, "### Creep: first yellow-or-worse from any grid-facing rule\n");
    let _ = writeln!(out, "| sub-family | cases | within 24 h of 2‰ | delay h from 2‰ (median / p95 / max) | before 1.5‰ (of which after the creep began) | missed | flapping cases | max incidents per rule and box | first grid incident of any severity, h from 2‰ (median / p95 / max) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &s.creep {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.sub,
            r.cases,
            r.within_24h,
            stats(&r.delays_h, 1),
            r.early,
            r.early_while_creeping,
            r.missed,
            r.flapping,
            r.max_fired_per_rule_box,
            stats(&r.first_told_h, 1)
        );
    }

    let _ = writeln!(out, "\n### Jumps: first red at or after the jump; one box of several moving alone: first unconfirmed orange (or worse) and installer alarm (target: 10 min at intervals <= 4 min, else 2 intervals; a whole building's interval is its second-fastest box's)\n");
    let _ = writeln!(out, "| sub-family | interval | cases | of which one box of several | within target | delay min (median / p95 / max) | missed | of which at right angles / exactly 0.1° / on a multi-box building | red before the jump |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &s.jumps {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} |",
            r.sub,
            r.band,
            r.cases,
            r.alone,
            r.within_target,
            stats(&r.delays_min, 1),
            r.missed,
            r.missed_perpendicular,
            r.missed_exact_0_1,
            r.missed_multi_box,
            r.red_before
        );
    }

    let _ = writeln!(out, "\n### Faulty box on a building of 2–3 (target: 0 red, installers told within 2 h)\n");
    let _ = writeln!(out, "| fault | cases | red incidents | cases with red | installers told <= 2 h | onset to installer alarm h (median / p95 / max) | grid-facing after onset (blue / yellow / orange / red) | installer alarms on healthy boxes | readings refused as out of order |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &s.faults {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} | {} |",
            r.sub,
            r.cases,
            r.red,
            r.cases_with_red,
            r.told_in_2h,
            stats(&r.told_h, 1),
            r.grid[0],
            r.grid[1],
            r.grid[2],
            r.grid[3],
            r.device_on_healthy,
            r.out_of_order
        );
    }
    out.push('\n');

    rate_table(&mut out, "Water (surface, GB 3838)", "sensor-years", &s.water, true);
    let _ = writeln!(
        out,
        "GB 3838 boundaries (each item exactly on the target class's own limit, as a float32): {} of {} alarmed (target 0)",
        s.boundary.alarmed, s.boundary.cases
    );
    for f in &s.boundary.failures {
        let _ = writeln!(out, "- {f}");
    }

    let years_healthy: f64 = s.healthy.iter().map(|r| r.sensor_years).sum();
    let years_water = s.water.first().map_or(0.0, |r| r.sensor_years);
    let _ = writeln!(out, "\n### What each rule costs and catches (incidents opened)\n");
    let _ = writeln!(out, "| rule | device | healthy walls (per 100 box-years) | creep (first yellow) | jumps (first red) | faulty box (red) | healthy water (per 100 sensor-years) | other water | boundaries |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &s.rules {
        let total = r.healthy + r.creep + r.jump + r.fault + r.water_healthy + r.water_other + r.boundary + r.creep_first_yellow + r.jump_first_red;
        if total == 0 {
            continue;
        }
        let per = |n: u64, years: f64| if years > 0.0 { n as f64 * 100.0 / years } else { 0.0 };
        let _ = writeln!(
            out,
            "| {} | {} | {} ({:.1}) | {} ({}) | {} ({}) | {} ({}) | {} ({:.1}) | {} | {} |",
            r.id,
            if r.device { "yes" } else { "" },
            r.healthy,
            per(r.healthy, years_healthy),
            r.creep,
            r.creep_first_yellow,
            r.jump,
            r.jump_first_red,
            r.fault,
            r.fault_red,
            r.water_healthy,
            per(r.water_healthy, years_water),
            r.water_other,
            r.boundary
        );
    }
    let t = &s.throughput;
    let _ = writeln!(
        out,
        "\nReplay: {} readings, {:.0} readings/s per core in the engine (minute ticks included), {:.1} s wall on {} threads.",
        t.readings,
        t.per_second(),
        t.wall_seconds,
        t.threads
    );

    let violations = s.violations();
    let _ = writeln!(out, "\n### Targets not met: {}\n", violations.len());
    for v in &violations {
        let _ = writeln!(out, "- {v}");
    }
    if !s.examples.is_empty() {
        let _ = writeln!(out, "\nExamples:");
        for e in &s.examples {
            let _ = writeln!(out, "- {e}");
        }
    }
    out
}

fn rate_json(r: &RateRow) -> Value {
    json!({
        "sub_family": r.sub, "cases": r.cases, "sensors": r.sensors, "sensor_years": r.sensor_years,
        "grid_by_severity": { "notice": r.grid[0], "warning": r.grid[1], "alarm": r.grid[2], "danger": r.grid[3] },
        "grid_per_100_years": r.per_100(r.grid_total()), "installer_per_100_years": r.per_100(r.device),
        "first_grid_alarm_after_onset_h": stats_json(&r.after_onset_h),
        "reopened_within_a_day": r.reopened_within_day,
    })
}

/// The same scores as one JSON document.
pub fn json(s: &Scores) -> Value {
    json!({
        "seed": s.seed,
        "healthy": s.healthy.iter().map(rate_json).collect::<Vec<_>>(),
        "creep": s.creep.iter().map(|r| json!({
            "sub_family": r.sub, "cases": r.cases, "within_24h": r.within_24h, "delay_h": stats_json(&r.delays_h),
            "early": r.early, "early_while_creeping": r.early_while_creeping, "missed": r.missed, "flapping": r.flapping, "max_incidents_per_rule_box": r.max_fired_per_rule_box,
            "first_told_h": stats_json(&r.first_told_h),
        })).collect::<Vec<_>>(),
        "jumps": s.jumps.iter().map(|r| json!({
            "sub_family": r.sub, "interval": r.band, "cases": r.cases, "within_target": r.within_target,
            "delay_min": stats_json(&r.delays_min), "missed": r.missed, "missed_perpendicular": r.missed_perpendicular,
            "missed_exact_0_1": r.missed_exact_0_1, "missed_multi_box": r.missed_multi_box, "red_before": r.red_before,
        })).collect::<Vec<_>>(),
        "faults": s.faults.iter().map(|r| json!({
            "fault": r.sub, "cases": r.cases, "red": r.red, "cases_with_red": r.cases_with_red, "told_in_2h": r.told_in_2h,
            "told_h": stats_json(&r.told_h), "grid_after_onset": r.grid, "installer_on_healthy": r.device_on_healthy, "out_of_order": r.out_of_order,
        })).collect::<Vec<_>>(),
        "water": s.water.iter().map(rate_json).collect::<Vec<_>>(),
        "boundary": { "cases": s.boundary.cases, "alarmed": s.boundary.alarmed, "failures": s.boundary.failures },
        "rules": s.rules.iter().map(|r| json!({
            "id": r.id, "device": r.device, "healthy": r.healthy, "creep": r.creep, "creep_first_yellow": r.creep_first_yellow,
            "jump": r.jump, "jump_first_red": r.jump_first_red, "fault": r.fault, "fault_red": r.fault_red,
            "water_healthy": r.water_healthy, "water_other": r.water_other, "boundary": r.boundary,
        })).collect::<Vec<_>>(),
        "throughput": { "readings": s.throughput.readings, "engine_seconds": s.throughput.engine_seconds, "readings_per_second_per_core": s.throughput.per_second(), "wall_seconds": s.throughput.wall_seconds, "threads": s.throughput.threads },
        "violations": s.violations(),
        "examples": s.examples,
    })
}
