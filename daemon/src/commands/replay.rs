//! `gridwatch rules test`: replays recorded samples through rules with simulated time and
//! reports what would have fired, changed and cleared, and for how long each rule was active.
//!
//! Data files (see docs/rules.md#replay):
//! - CSV (`.csv`): a header `ts,sensor,<field>,…` (optional `kind` column); `ts` is RFC 3339 or
//!   epoch milliseconds; an empty cell means the field was not in that sample.
//! - JSON lines (any other extension): one object per line,
//!   `{"ts": …, "sensor": "house-07", "x": 0.12, "y": -0.03}` (optional `"kind"`).
//!
//! Time comes only from the data: the engine is ticked at every sample's time and once a
//! simulated minute in between, as the daemon's one-second tick would.

use crate::clock::rfc3339;
use crate::config::{Place, SensorConfig};
use anyhow::{bail, Context};
use gridwatch_rules::{EventKind, Millis, RuleSet, SensorKind, Severity, SubjectId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Simulated time between ticks when samples are far apart.
const TICK_MS: Millis = 60_000;

/// One recorded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ts: Millis,
    pub sensor: String,
    pub kind: Option<SensorKind>,
    pub fields: Vec<(String, f64)>,
}

/// The samples of a data file, the lines of those left out because a value is NaN or infinite
/// (as the daemon rejects such a reading whole, and counts it), and the lines it could not read
/// at all (a bad time, a word where a number goes), each with why: one bad line of a long
/// recording leaves out that line, not the replay (an outside tester's one bad `ts` stopped it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    pub records: Vec<Record>,
    pub not_finite: Vec<usize>,
    pub unreadable: Vec<String>,
}

/// How many unreadable lines a note names (the rest are counted).
const NAMED_UNREADABLE: usize = 5;

impl Recorded {
    /// Lines for people about the samples left out; `None` when there were none.
    pub fn note(&self) -> Option<String> {
        let mut lines = Vec::new();
        if let Some(first) = self.not_finite.first() {
            lines.push(format!(
                "left out {} sample(s) with a value that is NaN or infinite (the daemon rejects such a reading too), the first at line {first}",
                self.not_finite.len()
            ));
        }
        if !self.unreadable.is_empty() {
            let more = self.unreadable.len().saturating_sub(NAMED_UNREADABLE);
            let more = if more > 0 { format!("; and {more} more") } else { String::new() };
            lines.push(format!(
                "left out {} line(s) that could not be read (the daemon refuses such a reading too): {}{more}",
                self.unreadable.len(),
                self.unreadable.iter().take(NAMED_UNREADABLE).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// Reads a CSV or JSON-lines file of samples.
pub fn read_records(path: &Path) -> anyhow::Result<Recorded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|ext| ext == "csv") { parse_csv(&text) } else { parse_json_lines(&text) };
    parsed.with_context(|| format!("in {}", path.display()))
}

fn parse_kind(text: &str, line: usize) -> anyhow::Result<SensorKind> {
    match text {
        "tilt" => Ok(SensorKind::Tilt),
        "water" => Ok(SensorKind::Water),
        other => bail!("line {line}: kind `{other}` is neither tilt nor water"),
    }
}

fn parse_ts(value: &serde_json::Value, line: usize) -> anyhow::Result<Millis> {
    crate::sources::mqtt::payload::timestamp(value).map_err(|e| anyhow::anyhow!("line {line}: {e}"))
}

pub fn parse_csv(text: &str) -> anyhow::Result<Recorded> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().context("reading the CSV header")?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(ts_col), Some(sensor_col)) = (column("ts"), column("sensor")) else {
        bail!("the CSV header needs `ts` and `sensor` columns, found: {}", headers.iter().collect::<Vec<_>>().join(","));
    };
    let kind_col = column("kind");
    let mut recorded = Recorded::default();
    for (index, row) in reader.records().enumerate() {
        let line = index + 2;
        let read = |row: csv::StringRecord| -> anyhow::Result<Option<Record>> {
            let ts_text = row.get(ts_col).unwrap_or("");
            let ts_value = match ts_text.parse::<i64>() {
                Ok(ms) => serde_json::Value::from(ms),
                Err(_) => serde_json::Value::from(ts_text),
            };
            let mut fields = Vec::new();
            for (col, cell) in row.iter().enumerate() {
                if col == ts_col || col == sensor_col || Some(col) == kind_col || cell.is_empty() {
                    continue;
                }
                let value: f64 = cell.parse().map_err(|_| anyhow::anyhow!("line {line}: `{cell}` in column `{}` is not a number", &headers[col]))?;
                if !value.is_finite() {
                    return Ok(None);
                }
                fields.push((headers[col].to_string(), value));
            }
            Ok(Some(Record {
                ts: parse_ts(&ts_value, line)?,
                sensor: row.get(sensor_col).unwrap_or("").to_string(),
                kind: kind_col.and_then(|c| row.get(c)).filter(|k| !k.is_empty()).map(|k| parse_kind(k, line)).transpose()?,
                fields,
            }))
        };
        match row.map_err(|error| anyhow::anyhow!("line {line}: {error}")).and_then(read) {
            Ok(Some(record)) => recorded.records.push(record),
            Ok(None) => recorded.not_finite.push(line),
            Err(error) => recorded.unreadable.push(format!("{error:#}")),
        }
    }
    Ok(recorded)
}

/// JSON has no NaN: a field that is `null` or a string stands for one (firmware's `"NaN"`).
pub fn parse_json_lines(text: &str) -> anyhow::Result<Recorded> {
    let mut recorded = Recorded::default();
    for (index, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line = index + 1;
        match json_line(raw, line) {
            Ok(Some(record)) => recorded.records.push(record),
            Ok(None) => recorded.not_finite.push(line),
            Err(error) => recorded.unreadable.push(format!("{error:#}")),
        }
    }
    Ok(recorded)
}

/// One line of a JSON-lines file: its sample, `None` when a value is NaN or infinite.
fn json_line(raw: &str, line: usize) -> anyhow::Result<Option<Record>> {
    let value: serde_json::Value = serde_json::from_str(raw).with_context(|| format!("line {line}"))?;
    let serde_json::Value::Object(mut object) = value else { bail!("line {line}: not a JSON object") };
    let Some(serde_json::Value::String(sensor)) = object.remove("sensor") else { bail!("line {line}: no \"sensor\" string") };
    let Some(ts) = object.remove("ts") else { bail!("line {line}: no \"ts\"") };
    let kind = match object.remove("kind") {
        Some(serde_json::Value::String(kind)) => Some(parse_kind(&kind, line)?),
        Some(other) => bail!("line {line}: kind {other} is not a string"),
        None => None,
    };
    object.remove("seq");
    let mut fields = Vec::new();
    for (name, value) in object {
        match value {
            serde_json::Value::Number(number) => match number.as_f64() {
                Some(v) if v.is_finite() => fields.push((name, v)),
                _ => bail!("line {line}: field `{name}` is not a finite number"),
            },
            serde_json::Value::Null => return Ok(None),
            // A number sent as a string ("0.04") is taken, as the daemon takes it from MQTT.
            serde_json::Value::String(text) => match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => fields.push((name, v)),
                Ok(_) => return Ok(None),
                Err(_) => bail!("line {line}: field `{name}` is {text:?}, not a number"),
            },
            other => bail!("line {line}: field `{name}` is {other}, not a number"),
        }
    }
    Ok(Some(Record { ts: parse_ts(&ts, line)?, sensor, kind, fields }))
}

/// Sensors for a replay without a config: one per id in the data, kind from the data.
pub fn inventory_from(records: &[Record]) -> anyhow::Result<Vec<SensorConfig>> {
    let mut kinds: BTreeMap<&str, Option<SensorKind>> = BTreeMap::new();
    for record in records {
        let entry = kinds.entry(&record.sensor).or_default();
        if entry.is_none() {
            *entry = record.kind;
        }
    }
    let place = Arc::new(Place { site: "replay".into(), building: None, grid: None, structure: None, storeys: None });
    kinds
        .into_iter()
        .map(|(id, kind)| {
            let Some(kind) = kind else { bail!("sensor `{id}` has no kind: add a `kind` column/key, or give --config with the inventory") };
            Ok(SensorConfig {
                id: id.into(),
                kind,
                place: place.clone(),
                tags: Default::default(),
                interval: Duration::from_secs(3600),
                baseline: BTreeMap::new(),
                location: None,
            })
        })
        .collect()
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    pub at: Millis,
    pub kind: EventKind,
    pub severity: Severity,
    pub rule: String,
    pub sensor: String,
    pub value: f64,
    pub unit: String,
}

/// Per (rule, sensor) totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub fired: u32,
    pub changed: u32,
    pub cleared: u32,
    pub active_ms: Millis,
    pub worst: Option<Severity>,
    /// Still active when the data ended.
    pub open_since: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub samples: usize,
    /// Samples of sensors the inventory does not have, by sensor id (a typo in the recording
    /// or the inventory: named, not only counted).
    pub skipped_unknown: BTreeMap<String, usize>,
    pub timeline: Vec<Moment>,
    pub tallies: BTreeMap<(String, String), Tally>,
}

/// The replay for scripts: the timeline and each (rule, sensor)'s totals.
pub fn to_json(replay: &Replay) -> serde_json::Value {
    let timeline: Vec<serde_json::Value> = replay
        .timeline
        .iter()
        .map(|m| serde_json::json!({"at": rfc3339(m.at), "at_ms": m.at, "event": m.kind.as_str(), "severity": m.severity.as_str(), "rule": m.rule, "sensor": m.sensor, "value": m.value, "unit": m.unit}))
        .collect();
    let tallies: Vec<serde_json::Value> = replay
        .tallies
        .iter()
        .map(|((rule, sensor), t)| serde_json::json!({"rule": rule, "sensor": sensor, "fired": t.fired, "changed": t.changed, "cleared": t.cleared, "active_secs": t.active_ms / 1000, "worst": t.worst.map(Severity::as_str), "open_since": t.open_since.map(rfc3339)}))
        .collect();
    serde_json::json!({"samples": replay.samples, "skipped_unknown_sensor": replay.skipped_unknown.values().sum::<usize>(), "unknown_sensors": replay.skipped_unknown, "timeline": timeline, "rules": tallies})
}

/// Replays `records` (sorted here by time) between `from` and `to`.
pub fn replay(rules: RuleSet, sensors: &[SensorConfig], mut records: Vec<Record>, from: Option<Millis>, to: Option<Millis>) -> Replay {
    let (mut engine, _) = crate::reload::build_engine(rules, sensors, |_| Default::default(), &[]);
    let index: HashMap<&str, usize> = sensors.iter().enumerate().map(|(i, s)| (&*s.id, i)).collect();
    records.retain(|r| from.is_none_or(|f| r.ts >= f) && to.is_none_or(|t| r.ts <= t));
    records.sort_by_key(|r| r.ts);
    let mut result = Replay::default();
    let mut events = Vec::new();
    let mut clock: Option<Millis> = None;
    for record in &records {
        if let Some(mut now) = clock {
            while now + TICK_MS < record.ts {
                now += TICK_MS;
                engine.tick(now, &mut events);
            }
        }
        clock = Some(record.ts);
        engine.tick(record.ts, &mut events);
        match index.get(record.sensor.as_str()) {
            Some(&i) => {
                engine.observe(SubjectId(i), record.ts, &record.fields, &mut events);
                result.samples += 1;
            }
            None => *result.skipped_unknown.entry(record.sensor.clone()).or_default() += 1,
        }
        for event in events.drain(..) {
            let rule = engine.rule(event.rule);
            let sensor = &sensors[event.subject.0];
            // A building's event (`agree`) is tallied for the building, not its first box.
            let subject = match (event.agreement, &sensor.place.building) {
                (Some(_), Some(building)) => format!("building:{building}"),
                _ => sensor.id.to_string(),
            };
            let tally = result.tallies.entry((rule.id.clone(), subject.clone())).or_default();
            match event.kind {
                EventKind::Fired => {
                    tally.fired += 1;
                    tally.open_since = Some(event.at);
                }
                EventKind::Changed => tally.changed += 1,
                EventKind::Cleared => {
                    tally.cleared += 1;
                    tally.active_ms += tally.open_since.take().map_or(0, |since| event.at - since);
                }
            }
            if event.kind != EventKind::Cleared {
                tally.worst = tally.worst.max(Some(event.severity));
            }
            result.timeline.push(Moment {
                at: event.at,
                kind: event.kind,
                severity: event.severity,
                rule: rule.id.clone(),
                sensor: match event.agreement {
                    Some(a) => format!("{subject}({}/{})", a.agreeing, a.of),
                    None => subject,
                },
                value: event.value,
                unit: rule.unit.clone(),
            });
        }
    }
    let end = clock.unwrap_or(0);
    for tally in result.tallies.values_mut() {
        if let Some(since) = tally.open_since {
            tally.active_ms += end - since;
        }
    }
    result
}

/// The timeline and summary as text.
/// How many sensors a note names (the rest are counted).
const NAMED_UNKNOWN_SENSORS: usize = 5;

/// ", 1440 skipped: not in the inventory: house-7 (1200), hous-8 (240)", the most skipped first;
/// nothing when none was.
fn skipped_note(unknown: &BTreeMap<String, usize>) -> String {
    if unknown.is_empty() {
        return String::new();
    }
    let mut by_count: Vec<(&String, &usize)> = unknown.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let named: Vec<String> = by_count.iter().take(NAMED_UNKNOWN_SENSORS).map(|(sensor, n)| format!("{sensor} ({n})")).collect();
    let more = match unknown.len().saturating_sub(NAMED_UNKNOWN_SENSORS) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(", {} skipped: sensor not in the inventory: {}{more}", unknown.values().sum::<usize>(), named.join(", "))
}

pub fn render(replay: &Replay) -> String {
    let mut out = String::new();
    for m in &replay.timeline {
        let _ = writeln!(
            out,
            "{} {:<7} {:<7} rule={} sensor={} value={:.4}{}",
            rfc3339(m.at),
            m.kind.as_str(),
            m.severity.as_str(),
            m.rule,
            m.sensor,
            m.value,
            m.unit
        );
    }
    let _ = writeln!(out, "\n{} samples replayed{}", replay.samples, skipped_note(&replay.skipped_unknown));
    if replay.tallies.is_empty() {
        let _ = writeln!(out, "no rule fired");
        return out;
    }
    let _ = writeln!(out, "{:<32} {:<16} {:>5} {:>7} {:>7}  {:<14} worst", "rule", "sensor", "fired", "changed", "cleared", "active");
    for ((rule, sensor), t) in &replay.tallies {
        let active = humantime::format_duration(Duration::from_secs((t.active_ms / 1000).max(0) as u64)).to_string();
        let active = if t.open_since.is_some() { format!("{active} (open)") } else { active };
        let worst = t.worst.map_or("-", Severity::as_str);
        let _ = writeln!(out, "{rule:<32} {sensor:<16} {:>5} {:>7} {:>7}  {active:<14} {worst}", t.fired, t.changed, t.cleared);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwatch_rules::RuleSource;

    const RULES: &str =
        "[[rule]]\nid = \"do-low\"\nkind = \"water\"\nvalue = \"do\"\nunit = \"mg/L\"\nbelow = 5\nclear_above = 5.5\nfor = \"10m\"\nseverity = \"warning\"\n";

    fn rules() -> RuleSet {
        RuleSet::compile(&[RuleSource { name: "r.toml".into(), text: RULES.into() }]).unwrap()
    }

    #[test]
    fn csv_and_json_lines_read_the_same_samples() {
        let csv = parse_csv("ts,sensor,kind,do,ph\n2026-11-23T08:00:00Z,canal-02,water,6.1,\n1795392060000,canal-02,,4.9,7.2\n").unwrap();
        let jsonl = parse_json_lines(
            "{\"ts\": \"2026-11-23T08:00:00Z\", \"sensor\": \"canal-02\", \"kind\": \"water\", \"do\": 6.1}\n\n{\"ts\": 1795392060000, \"sensor\": \"canal-02\", \"do\": \" 4.9\", \"ph\": 7.2}\n",
        )
        .unwrap();
        assert_eq!(csv, jsonl);
        assert_eq!(csv.records[0].fields, vec![("do".to_string(), 6.1)], "an empty cell is a missing field");
        // A number sent as a string is a number, as the daemon reads it; words are refused.
        let words = parse_json_lines("{\"ts\": 1, \"sensor\": \"s\", \"do\": \"low\"}").unwrap();
        assert!(words.records.is_empty() && words.unreadable[0].contains("\"low\", not a number"), "{words:?}");
    }

    #[test]
    fn a_line_that_cannot_be_read_is_left_out_and_named_the_rest_replayed() {
        let csv = parse_csv("ts,sensor,do\n1795392000000,a,5\nyesterday,a,5.1\n1795392120000,a,low\n1795392180000,a,4.8\n").unwrap();
        assert_eq!(csv.records.iter().map(|r| r.ts).collect::<Vec<_>>(), [1_795_392_000_000, 1_795_392_180_000]);
        let note = csv.note().unwrap();
        assert!(note.starts_with("left out 2 line(s) that could not be read (the daemon refuses such a reading too): line 3: "), "{note}");
        assert!(note.contains("line 4: `low` in column `do` is not a number"), "{note}");
        let jsonl = parse_json_lines("{\"ts\": 1795392000000, \"sensor\": \"a\", \"do\": 5}\nnot json\n{\"sensor\": \"a\", \"do\": 5}\n").unwrap();
        assert_eq!((jsonl.records.len(), jsonl.unreadable.len()), (1, 2), "{jsonl:?}");
    }

    #[test]
    fn a_sample_with_nan_is_left_out_and_counted_the_rest_replayed() {
        let csv = parse_csv("ts,sensor,do,ph\n1795392000000,a,5,7\n1795392060000,a,NaN,7.1\n1795392120000,a,4.9,inf\n1795392180000,a,4.8,7\n").unwrap();
        assert_eq!(csv.records.iter().map(|r| r.ts).collect::<Vec<_>>(), [1_795_392_000_000, 1_795_392_180_000]);
        assert_eq!(csv.not_finite, [3, 4]);
        assert_eq!(
            csv.note().unwrap(),
            "left out 2 sample(s) with a value that is NaN or infinite (the daemon rejects such a reading too), the first at line 3"
        );
        let jsonl = parse_json_lines("{\"ts\": 1795392000000, \"sensor\": \"a\", \"do\": null}\n{\"ts\": 1795392060000, \"sensor\": \"a\", \"do\": \"NaN\"}\n{\"ts\": 1795392120000, \"sensor\": \"a\", \"do\": 5}\n").unwrap();
        assert_eq!((jsonl.records.len(), jsonl.not_finite.clone()), (1, vec![1, 2]));
        assert!(parse_json_lines("{\"ts\": 1795392000000, \"sensor\": \"a\", \"do\": \"low\"}\n").unwrap().unreadable[0]
            .contains("field `do` is \"low\", not a number"));
    }

    #[test]
    fn bad_rows_name_their_line() {
        let csv = parse_csv("ts,sensor,do\n1795392000000,a,5\n1795392060000,a,low\n").unwrap();
        assert_eq!(csv.unreadable, ["line 3: `low` in column `do` is not a number"]);
        assert_eq!(parse_json_lines("{\"ts\": 1795392000000}\n").unwrap().unreadable, ["line 1: no \"sensor\" string"]);
        assert!(parse_csv("time,sensor\n").unwrap_err().to_string().contains("needs `ts` and `sensor` columns"), "a header it cannot use stops it");
    }

    #[test]
    fn replay_reports_fires_and_time_active() {
        let mut records = Vec::new();
        let t0 = 1_795_392_000_000;
        for m in 0..60 {
            let value = if (10..40).contains(&m) { 4.0 } else { 6.0 };
            records.push(Record { ts: t0 + m * 60_000, sensor: "canal-02".into(), kind: Some(SensorKind::Water), fields: vec![("do".into(), value)] });
        }
        let sensors = inventory_from(&records).unwrap();
        let result = replay(rules(), &sensors, records, None, None);
        let timeline: Vec<_> = result.timeline.iter().map(|m| (m.kind, (m.at - t0) / 60_000)).collect();
        assert_eq!(timeline, vec![(EventKind::Fired, 20), (EventKind::Cleared, 40)]);
        let tally = &result.tallies[&("do-low".to_string(), "canal-02".to_string())];
        assert_eq!((tally.fired, tally.cleared, tally.active_ms), (1, 1, 20 * 60_000));
        assert!(render(&result).contains("do-low"));
    }

    #[test]
    fn samples_of_sensors_not_in_the_inventory_are_named_with_their_counts() {
        let t0 = 1_795_392_000_000;
        let record =
            |m: i64, sensor: &str| Record { ts: t0 + m * 60_000, sensor: sensor.into(), kind: Some(SensorKind::Water), fields: vec![("do".into(), 6.0)] };
        let known: Vec<Record> = (0..3).map(|m| record(m, "canal-02")).collect();
        let sensors = inventory_from(&known).unwrap();
        let mut records = known;
        records.extend((0..4).map(|m| record(m, "canal-2")));
        records.extend((0..6).flat_map(|n| (0..=n).map(move |m| record(m, &format!("pond-{n}")))));
        let result = replay(rules(), &sensors, records, None, None);
        let text = render(&result);
        assert!(
            text.contains(
                "3 samples replayed, 25 skipped: sensor not in the inventory: pond-5 (6), pond-4 (5), canal-2 (4), pond-3 (4), pond-2 (3) and 2 more"
            ),
            "{text}"
        );
        let json = to_json(&result);
        assert_eq!((json["skipped_unknown_sensor"].as_u64(), json["unknown_sensors"]["canal-2"].as_u64()), (Some(25), Some(4)));
    }

    /// One sample of an hourly probe is no breach that lasted: the hold completes at the second
    /// (an outside tester's single glitch of a slow probe was red).
    #[test]
    fn a_hold_between_sparse_samples_completes_at_the_second_breaching_one() {
        let t0 = 1_795_392_000_000;
        let records = vec![
            Record { ts: t0, sensor: "canal-02".into(), kind: Some(SensorKind::Water), fields: vec![("do".into(), 4.0)] },
            Record { ts: t0 + 3_600_000, sensor: "canal-02".into(), kind: None, fields: vec![("do".into(), 4.0)] },
        ];
        let result = replay(rules(), &inventory_from(&records).unwrap(), records, None, None);
        assert_eq!(result.timeline[0].at - t0, 3_600_000, "fired at the second sample, not ten minutes after the first alone");
    }

    #[test]
    fn sensors_without_kind_need_a_config() {
        let records = vec![Record { ts: 1_795_392_000_000, sensor: "x".into(), kind: None, fields: vec![("do".into(), 4.0)] }];
        assert!(inventory_from(&records).unwrap_err().to_string().contains("sensor `x` has no kind"));
    }
}
