//! The `gridwatch rules …` commands for operators: `check` (validate), `test` (replay recorded
//! data) and `explain` (which rules apply to a sensor, with what parameters).

use crate::commands::cli::RulesCommand;
use crate::commands::cli::{Output, RuleSelection};
use crate::commands::replay;
use crate::config::{Config, SensorConfig};
use crate::rule_files::{self, RuleLoadError};
use anyhow::{bail, Context};
use gridwatch_rules::rule::{Check, Silence};
use gridwatch_rules::{Rule, RuleSet, SubjectId};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `rules check`: prints `ok: …` or every diagnostic; exit 1 on any error.
pub fn check(paths: &[PathBuf], with_builtin: bool) -> ExitCode {
    match rule_files::load(paths, with_builtin) {
        Ok((rules, files)) => {
            println!("ok: {} rules in {files} files", rules.rules.len());
            ExitCode::SUCCESS
        }
        Err(RuleLoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            eprintln!("{} error(s); no rule was loaded", errors.0.len());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The rules and the config (if any) a selection names.
fn load(selection: &RuleSelection) -> anyhow::Result<(RuleSet, Option<Config>)> {
    let config = selection.config.as_deref().map(Config::load).transpose()?;
    let rules = match (&config, selection.paths.is_empty()) {
        (Some(config), true) => rule_files::load(&config.rules.paths, config.rules.builtin_packs || selection.with_builtin)?.0,
        (None, true) if !selection.with_builtin => bail!("name rule files with --rules, or a config with --config, or use --with-builtin"),
        _ => rule_files::load(&selection.paths, selection.with_builtin)?.0,
    };
    Ok((rules, config))
}

/// `rules test`: replays `data` and prints the timeline and a summary.
pub fn test(data: &std::path::Path, selection: &RuleSelection, from: Option<i64>, to: Option<i64>, output: Output) -> anyhow::Result<String> {
    let (rules, config) = load(selection)?;
    let recorded = replay::read_records(data)?;
    if let Some(note) = recorded.note() {
        eprintln!("{}: {note}", data.display());
    }
    let records = recorded.records;
    let sensors = match config {
        Some(config) => config.sensors,
        None => replay::inventory_from(&records)?.into(),
    };
    let replayed = replay::replay(rules, &sensors, records, from, to);
    Ok(output.render(|| replay::render(&replayed), || replay::to_json(&replayed)))
}

/// `rules explain`: the rules that apply to one sensor, as the engine will run them.
pub fn explain(sensor_id: &str, selection: &RuleSelection, output: Output) -> anyhow::Result<String> {
    let (rules, config) = load(selection)?;
    let config = config.context("`rules explain` needs --config: the sensor comes from its inventory")?;
    let Some(index) = config.sensor_index(sensor_id) else { bail!("no sensor `{sensor_id}` in the inventory") };
    let sensor = &config.sensors[index];
    let total = rules.rules.len();
    let (engine, _) = crate::reload::build_engine(rules, &config.sensors, |_| Default::default(), &[]);
    let applying = engine.checks_for(SubjectId(index));
    let calibrated = calibrations_of(&config, sensor_id)?;
    if output == Output::Json {
        let rules: Vec<serde_json::Value> = applying.iter().map(|&(rule, variant)| rule_json(rule, variant)).collect();
        let tags: serde_json::Map<String, serde_json::Value> = sensor.rule_tags().iter().map(|(k, v)| (k.to_string(), v.to_string().into())).collect();
        let value = serde_json::json!({
            "sensor": {"id": sensor.id, "kind": sensor.kind.to_string(), "site": sensor.place.site, "building": sensor.place.building, "grid": sensor.place.grid,
                       "tags": tags, "interval_secs": sensor.interval.as_secs(), "baseline": sensor.baseline,
                       "calibrated": calibrated.iter().map(|c| serde_json::json!({"field": c.field, "value": c.value, "by": c.author, "at_ms": c.at_ms, "readings": c.readings})).collect::<Vec<_>>()},
            "rules_total": total,
            "rules": rules,
        });
        return Ok(format!("{value:#}\n"));
    }
    let mut out = describe_sensor(sensor);
    for c in &calibrated {
        let _ = writeln!(
            out,
            "  calibrated {}: {:.4}° by {} at {} (median of {} readings; wins over the inventory's baseline)",
            c.field,
            c.value,
            c.author,
            crate::clock::rfc3339(c.at_ms),
            c.readings
        );
    }
    let _ = writeln!(out, "{} of {total} rules apply:\n", applying.len());
    for (rule, variant) in applying {
        out.push_str(&describe_rule(rule, variant));
    }
    Ok(out)
}

/// The baselines installers set for this sensor with `gridwatch calibrate`, from the store the
/// daemon writes (none before its first start: nothing is created here).
fn calibrations_of(config: &Config, sensor_id: &str) -> anyhow::Result<Vec<crate::store::Calibration>> {
    if !config.state_dir.join("gridwatch.db").exists() {
        return Ok(Vec::new());
    }
    let store = crate::store::Store::open(&config.state_dir)?;
    Ok(store.calibrations()?.into_iter().filter(|c| c.sensor == sensor_id).collect())
}

/// One applying rule for scripts: where it comes from and each level in words.
fn rule_json(rule: &Rule, variant: Option<usize>) -> serde_json::Value {
    let text = describe_rule(rule, variant);
    let levels: Vec<&str> = text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).collect();
    serde_json::json!({
        "id": rule.id, "title": rule.title, "file": rule.origin.file.to_string(), "line": rule.origin.line, "device": rule.device,
        "override": variant.map(|v| v + 1), "value": rule.signal.as_ref().map(|s| s.to_string()), "unit": rule.unit, "agree": rule.agree,
        "doubted_by": rule.doubted_by, "peers": rule.peers.then_some("building"), "description": levels,
    })
}

fn describe_sensor(sensor: &SensorConfig) -> String {
    let mut out = format!("sensor {} ({}) at {}", sensor.id, sensor.kind, sensor.place.site);
    if let Some(building) = &sensor.place.building {
        let _ = write!(out, ", building {building}");
    }
    if let Some(grid) = &sensor.place.grid {
        let _ = write!(out, ", {grid}");
    }
    let tags: Vec<String> = sensor.rule_tags().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "\n  tags: {}", if tags.is_empty() { "-".into() } else { tags.join(", ") });
    let _ = writeln!(out, "  reports at least every {}", humantime::format_duration(sensor.interval));
    if !sensor.baseline.is_empty() {
        let baseline: Vec<String> = sensor.baseline.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  installation baseline: {}", baseline.join(", "));
    }
    out
}

fn hold(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn describe_rule(rule: &Rule, variant: Option<usize>) -> String {
    let mut out = format!(
        "{} — {}\n  from {}:{}{}\n",
        rule.id,
        rule.title,
        rule.origin.file,
        rule.origin.line,
        if rule.device { " (device alarm, for installers)" } else { "" }
    );
    if let Some(v) = variant {
        let _ = writeln!(out, "  overridden for this sensor by [[rule.override]] #{}", v + 1);
    }
    if let Some(signal) = &rule.signal {
        let _ = writeln!(out, "  value: {signal}{}", if rule.unit.is_empty() { String::new() } else { format!(" [{}]", rule.unit) });
    }
    if let Some(k) = rule.agree {
        let _ = writeln!(out, "  judged per building: the level at least {k} of its sensors reach");
    }
    if !rule.doubted_by.is_empty() {
        let _ = writeln!(
            out,
            "  a box that reached a level after {} opened on it counts as one alone, unless a box not in doubt stands at it too",
            rule.doubted_by.join(" or ")
        );
    }
    if rule.peers {
        let _ = writeln!(
            out,
            "  judged against the building's other boxes (peers = \"building\"): how far this box moved that they did not, \
             the smaller of its own value and it less the median of theirs heard within {}; not judged alone on its building",
            hold(gridwatch_rules::peers::PEER_FRESH_MS)
        );
    }
    match rule.check_of(variant) {
        Check::Ladder(levels) => {
            for level in levels {
                let _ = write!(out, "  {:<8} {}, clears {}", level.severity.as_str(), level.bound.describe(), level.bound.describe_clear());
                if level.raise_hold_ms > 0 {
                    let _ = write!(out, ", after {}", hold(level.raise_hold_ms));
                }
                if level.clear_hold_ms > 0 {
                    let _ = write!(out, ", clear after {}", hold(level.clear_hold_ms));
                }
                if let Some(count) = level.count {
                    let _ = write!(out, ", {} of the last {} samples", count.k, count.n);
                }
                out.push('\n');
            }
        }
        Check::NoData { after, severity } => {
            let after = match after {
                Silence::Fixed(ms) => hold(*ms),
                Silence::Intervals(factor) => format!("{factor}× the report interval"),
                Silence::IntervalsAtLeast(factor, floor) => format!("{factor}× the report interval, and at least {}", hold(*floor)),
            };
            let _ = writeln!(out, "  {:<8} no data for more than {after}", severity.as_str());
        }
        Check::FlatLine { samples, lasting_ms, severity } => {
            let _ = writeln!(out, "  {:<8} {}", severity.as_str(), gridwatch_rules::rule::describe_flat_line(*samples, *lasting_ms));
        }
        Check::Clock { allowed_ms, severity } => {
            let _ = writeln!(out, "  {:<8} a reading stamped more than {} ahead of this box's clock", severity.as_str(), hold(*allowed_ms));
        }
        Check::ClockBehind { allowed_ms, hold_ms, severity } => {
            let _ = writeln!(
                out,
                "  {:<8} readings stamped more than {} behind this box's clock for {} without catching up (not a backlog)",
                severity.as_str(),
                hold(*allowed_ms),
                hold(*hold_ms)
            );
        }
    }
    out.push('\n');
    out
}

/// `gridwatch rules check | test | explain`.
pub fn command(command: RulesCommand, output: Output) -> ExitCode {
    match command {
        RulesCommand::Check { paths, with_builtin } => check(&paths, with_builtin || paths.is_empty()),
        RulesCommand::Test { data, rules, from, to } => super::print_or_fail(test(&data, &rules, from, to, output)),
        RulesCommand::Explain { sensor, rules } => super::print_or_fail(explain(&sensor, &rules, output)),
    }
}
