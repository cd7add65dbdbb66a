//! One case of the corpus, described: every event the shipped packs raised on it and its readings
//! within a span of days, to start debugging a false or late alarm from (`gridwatch-alarm-eval
//! --case NAME --days A-B`; the names are those of the report's examples).

use super::corpus::{cases, Size};
use super::replay::replay;
use super::DAY;
use gridwatch_rules::RuleSet;
use std::fmt::Write;

/// The case `name` of the corpus of `size` and `seed`, replayed: its events, then its readings
/// between `days` (since the case's start). An error when the corpus has no such case.
pub fn describe(rules: &RuleSet, size: &Size, seed: u64, name: &str, (from, to): (f64, f64)) -> anyhow::Result<String> {
    let spec = cases(size, seed).into_iter().find(|spec| spec.name() == name).ok_or_else(|| anyhow::anyhow!("no such case in this corpus"))?;
    let case = spec.build();
    let day = |at: i64| (at - case.start) as f64 / DAY as f64;
    let mut out = String::new();
    let _ = writeln!(out, "{name} ({}, {}), {:?}", spec.family.as_str(), spec.sub, case.truth);
    for (s, stream) in case.streams.iter().enumerate() {
        let _ = writeln!(out, "sensor {s}: every {} s, fields {:?}", stream.subject.interval_ms / 1000, stream.fields);
    }
    let _ = writeln!(out, "\nevents (day, sensor, rule, event, severity):");
    for event in replay(rules, &case).events {
        let rule = rules.rules.get(event.rule).map_or("?", |r| r.id.as_str());
        let building = if event.building { " (building)" } else { "" };
        let _ = writeln!(out, "{:>10.4}  {}{building}  {rule}  {:?}  {:?}", day(event.at), event.subject, event.kind, event.severity);
    }
    let _ = writeln!(out, "\nreadings (day arrived, sensor, device clock ahead ms, values):");
    for (s, stream) in case.streams.iter().enumerate() {
        for i in 0..stream.len() {
            let arrived = day(stream.arrive[i]);
            if (from..=to).contains(&arrived) {
                let _ = writeln!(out, "{arrived:>10.4}  {s}  {}  {:?}", stream.at[i] - stream.arrive[i], stream.reading(i));
            }
        }
    }
    Ok(out)
}
