//! The default payload convention: a JSON object of numeric fields plus optional `ts` and `seq`.
//!
//! ```json
//! {"x": 0.12, "y": -0.03, "ts": "2026-11-23T08:00:00Z", "seq": 42}
//! ```
//!
//! `ts` is RFC 3339 text or a time since the Unix epoch — in seconds, milliseconds,
//! microseconds or nanoseconds, told apart by size, as a number or digits in a string — or a
//! local time without an offset (`2026-12-06 06:47:42`, `20261206064742`: China time, UTC+8);
//! `seq` a non-negative integer that the device increments per message. Every other key must be
//! a finite number (or a string holding one, `"8.62"`, as some firmware sends) no larger in
//! magnitude than [`LARGEST_VALUE`] under a field name that is not empty,
//! holds no control character and is at most [`Limits::max_field_name_bytes`] long; a reading
//! has at most [`Limits::max_fields`] fields. A field whose value is not such a number is left
//! out and the reading's other fields are kept ([`Decoded::dropped`]: `"nh3n": "5.0 mg/L"` once
//! threw away the DO beside it); anything else is a [`Rejection`] of the whole message. Each is
//! counted with a reason; nothing here panics.
//!
//! A mapped topic ([`PayloadMap`]) may rename keys (exactly, else ignoring case: `anglex`
//! finds `AngleX`) or read a vendor's nested JSON through pointers, each value scaled and
//! offset: `{"data": {"angle": {"x": 12}}}` with `x = { path = "/data/angle/x", scale = 0.01 }`
//! is `x = 0.12`.
//!
//! How far ahead of this box's clock a `ts` may be is checked by the ingest, per sensor
//! (`[ingest] max_future_skew_secs`, [`Rejection::AheadOfClock`]; see `crate::sensor_clocks`).

use crate::config::PayloadMap;
use gridwatch_rules::Millis;
use std::collections::BTreeMap;

/// The earliest device time taken as one (2000-01-01): an older stamp is a clock that never
/// synced (seconds since the device booted, or since 1970), and it would write 1970 points.
/// Its time is refused and the reading judged at its arrival ([`clock_not_set`]).
const EARLIEST_TS: Millis = 946_684_800_000;

/// The furthest behind a set clock a device's time is taken as its own: further is a clock
/// set years wrong (a GPS receiver's week counter rolled over, 19.6 years back; a clock reset
/// to its firmware's date), not a backlog.
const LATEST_BEHIND_MS: Millis = 366 * 86_400_000;

/// Whether a device's `ts` comes from a clock that was never set — before 2000-01-01 — or is
/// set years wrong: more than [`LATEST_BEHIND_MS`] behind `now` while this box's clock is
/// `synchronized`. Refused with its reading, a box stamping seconds since it booted was never
/// judged — a real jump never red, and installers told only that it "sent nothing" while it sent
/// every few seconds; one whose GPS week rolled over raised its red as begun in 2007 (outside
/// testers).
pub(crate) fn clock_not_set(ts: Millis, now: Millis, synchronized: bool) -> bool {
    ts < EARLIEST_TS || (synchronized && now.saturating_sub(ts) > LATEST_BEHIND_MS)
}

/// The largest magnitude a reading's value may have. Payloads declare no range for their
/// fields, and nothing gridwatch reads (tilt, water quality, temperatures, conductivity in
/// µS/cm) comes near it; what lies beyond is a firmware's sentinel (float32's largest value,
/// 3.4e38, for "no reading") or garbage (`1e308`), which would turn into infinities in the rules'
/// arithmetic and poison a sensor's statistics.
pub const LARGEST_VALUE: f64 = 1e12;

/// Why a message was not accepted as a reading. The label is the `reason` of the counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("payload of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("field `{0}` is not a number")]
    NonNumeric(String),
    #[error("field `{0}` is NaN or infinite")]
    NotFinite(String),
    #[error("field `{field}` is {value}, beyond any reading (at most ±{LARGEST_VALUE:e})")]
    Implausible { field: String, value: String },
    #[error("payload has no measurement fields")]
    NoFields,
    #[error("`ts` is not RFC 3339 text or epoch milliseconds within range: {0}")]
    BadTimestamp(String),
    #[error("`seq` is not a non-negative integer")]
    BadSeq,
    /// Counted, not refused: the reading is judged at its arrival (see `Ingest::judge`).
    #[error("sensor `{sensor}` stamped its reading {ahead_secs} s ahead of this box's clock: judged at its arrival")]
    AheadOfClock { sensor: String, ahead_secs: i64 },
    /// Counted, not refused: the reading is judged at its arrival (see `Ingest::judge`).
    #[error("sensor `{sensor}` stamped its reading before 2000 or years behind (its clock was never set): judged at its arrival")]
    ClockNotSet { sensor: String },
    #[error("no sensor is mapped to this topic")]
    UnmappedTopic,
    #[error("sensor `{0}` is not in the inventory")]
    UnknownSensor(String),
    #[error("sensor `{sensor}` belongs to site `{configured}`, not `{topic}`")]
    SiteMismatch { sensor: String, configured: String, topic: String },
    #[error("field name `{}` is empty, too long or holds a control character", .0.escape_debug())]
    BadFieldName(String),
    #[error("{count} fields in one reading; at most {limit} are taken")]
    TooManyFields { count: usize, limit: usize },
    #[error("sensor `{sensor}` already sent {limit} distinct field names; `{}` is one too many", .field.escape_debug())]
    TooManyFieldNames { sensor: String, field: String, limit: usize },
    #[error("sensor `{sensor}` sent `seq` {seq} again (the same reading twice)")]
    DuplicateSeq { sensor: String, seq: u64 },
    #[error("sensor `{0}` sent the same values again within half its usual interval, without `ts` or `seq`: a copy of its last reading")]
    DuplicateCopy(String),
    #[error("a retained message of sensor `{0}` without `ts`: a reading the broker kept, of unknown age")]
    RetainedWithoutTime(String),
}

impl Rejection {
    /// Short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::NotJson(_) => "not_json",
            Rejection::NotObject => "not_object",
            Rejection::NonNumeric(_) => "non_numeric",
            Rejection::NotFinite(_) => "not_finite",
            Rejection::Implausible { .. } => "implausible_value",
            Rejection::NoFields => "no_fields",
            Rejection::BadTimestamp(_) => "bad_timestamp",
            Rejection::BadSeq => "bad_seq",
            Rejection::AheadOfClock { .. } => "ahead_of_clock",
            Rejection::ClockNotSet { .. } => "clock_not_set",
            Rejection::UnmappedTopic => "unmapped_topic",
            Rejection::UnknownSensor(_) => "unknown_sensor",
            Rejection::SiteMismatch { .. } => "site_mismatch",
            Rejection::BadFieldName(_) => "bad_field_name",
            Rejection::TooManyFields { .. } => "too_many_fields",
            Rejection::TooManyFieldNames { .. } => "too_many_field_names",
            Rejection::DuplicateSeq { .. } => "duplicate_seq",
            Rejection::DuplicateCopy(_) => "duplicate_copy",
            Rejection::RetainedWithoutTime(_) => "retained_without_time",
        }
    }

    pub const REASONS: [&'static str; 20] = [
        "too_large",
        "not_json",
        "not_object",
        "non_numeric",
        "not_finite",
        "implausible_value",
        "no_fields",
        "bad_timestamp",
        "bad_seq",
        "ahead_of_clock",
        "clock_not_set",
        "unmapped_topic",
        "unknown_sensor",
        "site_mismatch",
        "bad_field_name",
        "too_many_fields",
        "too_many_field_names",
        "duplicate_seq",
        "duplicate_copy",
        "retained_without_time",
    ];
}

/// What one payload may hold (`[mqtt] max_payload_bytes`, `[ingest] max_fields_per_reading`,
/// `[ingest] max_field_name_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_fields: usize,
    pub max_field_name_bytes: usize,
}

impl Limits {
    /// A field name the store and InfluxDB can keep as it is: not empty, no control character
    /// (a line break would split a line of line protocol), not longer than the cap.
    pub fn field_name_ok(&self, name: &str) -> bool {
        !name.is_empty() && name.len() <= self.max_field_name_bytes && !name.chars().any(char::is_control)
    }
}

/// A decoded payload, not yet tied to a sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub ts: Option<Millis>,
    pub seq: Option<u64>,
    pub fields: Vec<(String, f64)>,
    /// Why each field left out of `fields` was (not a number, not finite, beyond any reading).
    pub dropped: Vec<Rejection>,
}

/// Decodes one payload as `map` says (the default convention when it is empty); the limits
/// apply to the field names that are kept.
pub fn decode(payload: &[u8], limits: &Limits, map: &PayloadMap) -> Result<Decoded, Rejection> {
    if payload.len() > limits.max_bytes {
        return Err(Rejection::TooLarge { size: payload.len(), limit: limits.max_bytes });
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        // `{"nh3n": 1.5, "do": NaN}`, as Python's json.dumps writes it, or `1e999`: not JSON,
        // but the other fields are still a reading (the whole message was refused, and the
        // NH3-N beside it never judged; outside testers). Such values are read as the text
        // they spell, and their fields are left out below.
        Err(err) => quote_non_finite(payload).and_then(|text| serde_json::from_str(&text).ok()).ok_or_else(|| Rejection::NotJson(err.to_string()))?,
    };
    let serde_json::Value::Object(object) = &value else { return Err(Rejection::NotObject) };
    let mut decoded = Decoded { ts: None, seq: None, fields: Vec::new(), dropped: Vec::new() };
    if let Some(ts) = value.pointer(map.ts.as_deref().unwrap_or("/ts")) {
        decoded.ts = Some(timestamp(ts)?);
    }
    if let Some(seq) = value.pointer(map.seq.as_deref().unwrap_or("/seq")) {
        decoded.seq = Some(seq.as_u64().ok_or(Rejection::BadSeq)?);
    }
    if map.values.is_empty() {
        let count = object.keys().filter(|key| !matches!(key.as_str(), "ts" | "seq")).count();
        if count > limits.max_fields {
            return Err(Rejection::TooManyFields { count, limit: limits.max_fields });
        }
        for (key, value) in object.iter().filter(|(key, _)| !matches!(key.as_str(), "ts" | "seq")) {
            let name = checked_name(limits, renamed(&map.renames, key).unwrap_or(key))?;
            match number(key, value).and_then(|number| plausible(key, number)) {
                Ok(value) => decoded.fields.push((name, value)),
                Err(rejection) => decoded.dropped.push(rejection),
            }
        }
    } else {
        for source in &map.values {
            let Some(raw) = value.pointer(&source.pointer) else { continue };
            let name = checked_name(limits, &source.field)?;
            match number(&source.field, raw).and_then(|number| plausible(&source.field, number * source.scale + source.offset)) {
                Ok(value) => decoded.fields.push((name, value)),
                Err(rejection) => decoded.dropped.push(rejection),
            }
        }
    }
    if decoded.fields.is_empty() {
        // Nothing left to judge: the message is refused for its first bad field, if it had one.
        return Err(if decoded.dropped.is_empty() { Rejection::NoFields } else { decoded.dropped.swap_remove(0) });
    }
    Ok(decoded)
}

/// The rules' name for a payload key: its rename, matched exactly or else ignoring case.
fn renamed<'a>(renames: &'a BTreeMap<String, String>, key: &str) -> Option<&'a String> {
    renames.get(key).or_else(|| renames.iter().find(|(from, _)| from.eq_ignore_ascii_case(key)).map(|(_, to)| to))
}

fn checked_name(limits: &Limits, name: &str) -> Result<String, Rejection> {
    if limits.field_name_ok(name) {
        Ok(name.to_string())
    } else {
        Err(Rejection::BadFieldName(name.chars().take(64).collect()))
    }
}

/// A finite number, or a string holding one.
fn number(field: &str, value: &serde_json::Value) -> Result<f64, Rejection> {
    let number = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| Rejection::NonNumeric(field.to_string()))?;
    if number.is_finite() {
        Ok(number)
    } else {
        Err(Rejection::NotFinite(field.to_string()))
    }
}

/// A value a sensor could have sent: finite and within ±[`LARGEST_VALUE`].
fn plausible(field: &str, value: f64) -> Result<f64, Rejection> {
    if !value.is_finite() {
        Err(Rejection::NotFinite(field.to_string()))
    } else if value.abs() > LARGEST_VALUE {
        Err(Rejection::Implausible { field: field.to_string(), value: format!("{value:e}") })
    } else {
        Ok(value)
    }
}

/// `payload` with each value JSON cannot hold quoted, so that [`number`] reads it as not finite:
/// the bare words `NaN`, `Infinity` and `-Infinity` that firmware writes (`"NaN"`, `"inf"`,
/// `"-inf"`) and numbers too large for a float (`1e999` as `"inf"`), outside strings only;
/// `None` if it is not UTF-8 or holds no such value.
fn quote_non_finite(payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped, mut quoted_any) = (false, false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let token_start = !out.chars().last().is_some_and(|p| p.is_ascii_alphanumeric() || p == '.');
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '"' {
            in_string = true;
        } else if token_start {
            let token_len = rest.find(|n: char| !(n.is_ascii_alphanumeric() || matches!(n, '.' | '+' | '-'))).unwrap_or(rest.len());
            let token = &rest[..token_len.max(c.len_utf8())];
            // Rust reads `NaN`, `Infinity` and `inf` in any case, as JSON does not.
            let quoted = token.parse::<f64>().ok().filter(|v| !v.is_finite()).map(|v| match v {
                v if v.is_nan() => "\"NaN\"",
                v if v > 0.0 => "\"inf\"",
                _ => "\"-inf\"",
            });
            if let Some(quoted) = quoted {
                out.push_str(quoted);
                rest = &rest[token.len()..];
                quoted_any = true;
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    quoted_any.then_some(out)
}

pub(crate) fn timestamp(value: &serde_json::Value) -> Result<Millis, Rejection> {
    let ms = match value {
        serde_json::Value::String(text) => text_time(text.trim())?,
        serde_json::Value::Number(n) => {
            n.as_f64().filter(|v| v.is_finite()).and_then(count_time).ok_or_else(|| Rejection::BadTimestamp(format!("`{n}` is not a time")))?
        }
        other => return Err(Rejection::BadTimestamp(format!("`{other}`"))),
    };
    Ok(ms)
}

/// The offset of a device's local time written without one: China Standard Time.
const LOCAL_OFFSET_SECS: i32 = 8 * 3600;

/// A time in milliseconds since the Unix epoch from a count: in seconds, milliseconds,
/// microseconds or nanoseconds, told apart by size (a time from 2000 to 2286 is 9.47e8–1e10 in
/// seconds, 9.47e11–1e13 in milliseconds, and so on; firmware sends all four, and a `ts` in
/// seconds was refused and blinded the probe — an outside tester); or a compact local time
/// written as a number (`20261206064742`, 14 digits). Any other size is no time: 1e30 or 11
/// digits was taken for a clock years ahead (another tester). A device whose clock battery died
/// counts from 2000-01-01 again: its first 20 months are 9 digits in seconds, and refused, they
/// switched its rules off (a third tester). A smaller count is a clock that was never set
/// (seconds since the device booted): a time before 2000, in seconds.
fn count_time(count: f64) -> Option<Millis> {
    let from = EARLIEST_TS as f64 / 1e3;
    let ms = match count {
        c if (0.0..from).contains(&c) => c * 1e3,
        c if (from..1e10).contains(&c) => c * 1e3,
        c if (from * 1e3..1e13).contains(&c) => c,
        c if (1e13..1e14).contains(&c) && c.fract() == 0.0 => return local_time(&format!("{c:.0}")),
        c if (from * 1e6..1e16).contains(&c) => c / 1e3,
        c if (from * 1e9..1e19).contains(&c) => c / 1e6,
        _ => return None,
    };
    Some(ms.round() as Millis)
}

/// A time written as text: RFC 3339; an epoch count in digits; or a local time without an offset
/// (`2026-12-06T06:47:42`, with a space or a fraction of a second, or `20261206064742`), taken as
/// China time — what a device set by hand or by a Chinese NTP-less gateway writes.
fn text_time(text: &str) -> Result<Millis, Rejection> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let counted = (!text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then(|| text.parse::<f64>().ok()).flatten();
    match counted.map_or_else(|| local_time(text), count_time) {
        Some(ms) => Ok(ms),
        None => Err(Rejection::BadTimestamp(format!(
            "`{}` is neither RFC 3339, an epoch count nor a local date and time",
            text.chars().take(64).collect::<String>()
        ))),
    }
}

/// A local date and time without an offset, as China time.
fn local_time(text: &str) -> Option<Millis> {
    let local = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y%m%d%H%M%S", "%Y/%m/%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())?;
    Some(local.and_local_timezone(chrono::FixedOffset::east_opt(LOCAL_OFFSET_SECS)?).single()?.timestamp_millis())
}

/// How far `ts` is ahead of `now` beyond `max_skew_ms`, in whole seconds, when it is: such a
/// reading is refused. Only a synchronised clock can call a device's time "ahead": a box that
/// booted at 1970, or days behind at its last shutdown time, and has not synced yet keeps the
/// devices' good times (`Clock::synchronized`).
pub fn ahead_of_clock(ts: Millis, now: Millis, synchronized: bool, max_skew_ms: Millis) -> Option<i64> {
    (synchronized && ts > now.saturating_add(max_skew_ms)).then(|| (ts - now) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn an_unset_box_clock_does_not_refuse_the_devices_good_times() {
        let booted_at_1970 = 86_400_000;
        assert_eq!(ahead_of_clock(1_795_392_000_000, booted_at_1970, false, 300_000), None);
        let three_days_behind = 1_795_392_000_000 - 3 * 86_400_000;
        assert_eq!(ahead_of_clock(1_795_392_000_000, three_days_behind, false, 300_000), None, "a plausible year is no proof the clock is set");
    }

    #[test]
    fn a_time_past_the_skew_is_ahead_of_the_clock() {
        assert_eq!(ahead_of_clock(NOW + 300_000, NOW, true, 300_000), None, "on the limit is allowed");
        assert_eq!(ahead_of_clock(NOW + 300_001, NOW, true, 300_000), Some(300));
        assert_eq!(ahead_of_clock(NOW + 86_400_000, NOW, true, 300_000), Some(86_400), "a day ahead");
        assert_eq!(ahead_of_clock(NOW - 86_400_000, NOW, true, 300_000), None, "behind is for the engine to judge");
    }

    const LIMITS: Limits = Limits { max_bytes: 4096, max_fields: 8, max_field_name_bytes: 16 };

    fn decode_str(text: &str) -> Result<Decoded, Rejection> {
        decode(text.as_bytes(), &LIMITS, &PayloadMap::default())
    }

    fn renaming(from: &str, to: &str) -> PayloadMap {
        PayloadMap { renames: BTreeMap::from([(from.to_string(), to.to_string())]), ..PayloadMap::default() }
    }

    #[test]
    fn decodes_fields_ts_and_seq() {
        let d = decode_str(r#"{"x": 0.12, "y": -3, "ts": "2026-11-23T08:00:00+08:00", "seq": 42}"#).unwrap();
        assert_eq!(d.fields, vec![("x".to_string(), 0.12), ("y".to_string(), -3.0)]);
        assert_eq!(d.ts, Some(1_795_392_000_000));
        assert_eq!(d.seq, Some(42));
    }

    #[test]
    fn epoch_millisecond_timestamps_are_accepted() {
        assert_eq!(decode_str(r#"{"do": 5.1, "ts": 1795392000000}"#).unwrap().ts, Some(1_795_392_000_000));
    }

    #[test]
    fn renames_map_vendor_fields_to_rule_fields() {
        let d = decode(br#"{"AngleX": 0.5}"#, &LIMITS, &renaming("AngleX", "x")).unwrap();
        assert_eq!(d.fields, vec![("x".to_string(), 0.5)]);
        let d = decode(br#"{"ANGLEX": 0.5, "AngleY": 0.1}"#, &LIMITS, &renaming("anglex", "x")).unwrap();
        assert_eq!(d.fields, vec![("x".to_string(), 0.5), ("AngleY".to_string(), 0.1)], "a rename matches whatever the case");
    }

    #[test]
    fn numeric_strings_are_numbers() {
        let d = decode_str(r#"{"do": "8.62", "ph": " 7.1 "}"#).unwrap();
        assert_eq!(d.fields, vec![("do".to_string(), 8.62), ("ph".to_string(), 7.1)]);
        assert_eq!(decode_str(r#"{"do": "8,62"}"#).unwrap_err().reason(), "non_numeric");
        assert_eq!(decode_str(r#"{"do": "NaN"}"#).unwrap_err().reason(), "not_finite");
    }

    #[test]
    fn nested_vendor_json_is_read_through_pointers_scaled_and_offset() {
        use crate::config::ValueSource;
        let source = |field: &str, pointer: &str, scale: f64, offset: f64| ValueSource { field: field.into(), pointer: pointer.into(), scale, offset };
        let map = PayloadMap {
            values: vec![source("x", "/object/angle/0", 0.01, 0.0), source("y", "/object/angle/1", 0.01, 0.0), source("t", "/object/temp", 0.1, -40.0)],
            ts: Some("/rx/time".into()),
            seq: Some("/fCnt".into()),
            ..PayloadMap::default()
        };
        let payload = br#"{"fCnt": 77, "rx": {"time": "2026-11-23T08:00:00Z"}, "object": {"angle": [12, "-3"], "temp": 615}, "ts": "junk", "battery": 3.6}"#;
        let d = decode(payload, &LIMITS, &map).unwrap();
        let rounded: Vec<(String, f64)> = d.fields.iter().map(|(k, v)| (k.clone(), (v * 1e9).round() / 1e9)).collect();
        assert_eq!(rounded, vec![("x".to_string(), 0.12), ("y".to_string(), -0.03), ("t".to_string(), 21.5)]);
        assert_eq!((d.ts, d.seq), (Some(1_795_420_800_000), Some(77)), "ts and seq from their pointers; the top-level `ts` is not read");
        assert_eq!(decode(br#"{"object": {}}"#, &LIMITS, &map).unwrap_err().reason(), "no_fields");
        assert_eq!(decode(br#"{"object": {"angle": [true]}}"#, &LIMITS, &map).unwrap_err().reason(), "non_numeric");
        let sentinel = decode(br#"{"object": {"angle": [3.4e38]}}"#, &LIMITS, &map).unwrap_err();
        assert_eq!(sentinel, Rejection::Implausible { field: "x".into(), value: "3.4e36".into() }, "checked after scaling: {sentinel}");
    }

    #[test]
    fn each_kind_of_bad_payload_has_its_reason() {
        let cases = [
            ("not json", "not_json"),
            ("[1, 2]", "not_object"),
            (r#"{"x": "1.2x"}"#, "non_numeric"),
            (r#"{"x": null}"#, "non_numeric"),
            (r#"{"x": {"v": 1}}"#, "non_numeric"),
            (r#"{"x": NaN}"#, "not_finite"),
            (r#"{"x": -Infinity}"#, "not_finite"),
            (r#"{"x": 1e999}"#, "not_finite"),
            (r#"{"x": NaN,}"#, "not_json"),
            (r#"{"x": 1e308}"#, "implausible_value"),
            (r#"{"x": -3.4028235e38}"#, "implausible_value"),
            (r#"{"x": "1e13"}"#, "implausible_value"),
            (r#"{"seq": 3}"#, "no_fields"),
            (r#"{"x": 1, "ts": "2026-13-01 00:00:00"}"#, "bad_timestamp"),
            (r#"{"x": 1, "ts": "yesterday"}"#, "bad_timestamp"),
            (r#"{"x": 1, "seq": -1}"#, "bad_seq"),
            (r#"{"": 1}"#, "bad_field_name"),
            (r#"{"x\ny": 1}"#, "bad_field_name"),
            (r#"{"x\u0000": 1}"#, "bad_field_name"),
            (r#"{"a_name_of_17_byte": 1}"#, "bad_field_name"),
            (r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9}"#, "too_many_fields"),
        ];
        for (payload, reason) in cases {
            let rejection = decode_str(payload).expect_err(payload);
            assert_eq!(rejection.reason(), reason, "{payload}: {rejection}");
        }
    }

    /// An outside tester's probes: one sent `ts` in seconds, others a local time without an
    /// offset; each reading was refused, and the probe was never judged.
    #[test]
    fn a_device_time_is_read_in_every_unit_and_local_form_firmware_writes() {
        let at = 1_796_510_862_000; // 2026-12-06T06:47:42+08:00
        for ts in [
            "1796510862",
            "1796510862.0",
            "1796510862000",
            "1796510862000000",
            "1796510862000000000",
            r#""1796510862""#,
            r#""1796510862000""#,
            r#""2026-12-05T22:47:42Z""#,
            r#""2026-12-06T06:47:42+08:00""#,
            r#""2026-12-06T06:47:42""#,
            r#""2026-12-06 06:47:42""#,
            r#""2026-12-06 06:47:42.000""#,
            r#""2026/12/06 06:47:42""#,
            r#""20261206064742""#,
            "20261206064742",
        ] {
            let decoded = decode_str(&format!(r#"{{"do": 1.0, "ts": {ts}}}"#)).unwrap_or_else(|e| panic!("{ts}: {e}"));
            assert_eq!(decoded.ts, Some(at), "{ts}");
        }
        assert_eq!(decode_str(r#"{"do": 1.0, "ts": 1796510862.5}"#).unwrap().ts, Some(at + 500), "fractions of a second");
        // A clock reset to 2000-01-01 (its battery died) a day later, in every unit: a time the
        // rules judge as behind (the box's installers are told), not no time.
        let reset = 946_771_200_000; // 2000-01-02T00:00:00Z
        for ts in ["946771200", "946771200000", "946771200000000", "946771200000000000", r#""946771200""#] {
            assert_eq!(decode_str(&format!(r#"{{"do": 1.0, "ts": {ts}}}"#)).map(|d| d.ts).unwrap_or_else(|e| panic!("{ts}: {e}")), Some(reset), "{ts}");
        }
        // A clock never set: seconds since the device booted, or a date in 1970, is a time (before
        // 2000: the ingest refuses the time and judges the reading at its arrival), not no time.
        for (ts, ms) in [("3600", 3_600_000), ("0", 0), ("900000000", 900_000_000_000), (r#""1970-01-01T01:00:00Z""#, 3_600_000)] {
            let decoded = decode_str(&format!(r#"{{"x": 1.0, "ts": {ts}}}"#)).unwrap_or_else(|e| panic!("{ts}: {e}"));
            assert_eq!(decoded.ts, Some(ms), "{ts}");
            assert!(clock_not_set(ms, NOW, false), "{ts}");
        }
        assert!(!clock_not_set(reset, NOW, false), "a clock reset to 2000 is a time, behind a clock not set");
        assert!(clock_not_set(NOW - 1024 * 7 * 86_400_000, NOW, true), "a GPS week rollover, 19.6 years back");
        assert!(!clock_not_set(NOW - 30 * 86_400_000, NOW, true), "a month's backlog");
        // No unit makes these a time from 2000 to 2286: refused as no time, not taken for a clock
        // years ahead (an outside tester's installers were told of a clock fault).
        for garbage in ["1e30", "17965108620", r#""17965108620""#, "-1796510862", "179651086200000000000"] {
            let refused = decode_str(&format!(r#"{{"do": 1.0, "ts": {garbage}}}"#)).unwrap_err();
            assert_eq!(refused.reason(), "bad_timestamp", "{garbage}");
        }
    }

    /// One field a probe could not measure (`"5.0 mg/L"`, null, NaN in a string) threw the
    /// whole reading away, and the DO beside it was never judged (an outside tester).
    #[test]
    fn a_bad_field_is_left_out_and_the_reading_s_other_fields_are_kept() {
        let decoded = decode_str(r#"{"do": 1.0, "nh3n": "5.0 mg/L", "ph": null, "tp": "NaN", "cod": 1e308, "ts": 1795392000000}"#).unwrap();
        assert_eq!(decoded.fields, vec![("do".to_string(), 1.0)]);
        let mut reasons: Vec<&str> = decoded.dropped.iter().map(Rejection::reason).collect();
        reasons.sort_unstable();
        assert_eq!(reasons, ["implausible_value", "non_numeric", "non_numeric", "not_finite"], "{:?}", decoded.dropped);
        assert_eq!(decode_str(r#"{"nh3n": "5.0 mg/L"}"#).unwrap_err().reason(), "non_numeric", "nothing left: the message is refused");
    }

    /// Python's json.dumps writes `NaN` and `Infinity` bare: the whole message was refused, and a
    /// real breach in its other fields never judged (an outside tester).
    #[test]
    fn a_bare_nan_or_infinity_is_left_out_and_the_other_fields_kept() {
        let decoded = decode_str(r#"{"nh3n": 1.5, "do": NaN, "ph": -Infinity, "orp": Infinity, "note": "NaN here"}"#).unwrap();
        assert_eq!(decoded.fields, vec![("nh3n".to_string(), 1.5)]);
        let reasons: Vec<&str> = decoded.dropped.iter().map(Rejection::reason).collect();
        assert_eq!(reasons.iter().filter(|r| **r == "not_finite").count(), 3, "{:?}", decoded.dropped);
        assert_eq!(decode_str(r#"{"do": NaN}"#).unwrap_err().reason(), "not_finite", "nothing left");
    }

    /// A number too large for a float refused the whole message, and the DO beside it was
    /// never judged (an outside tester).
    #[test]
    fn a_number_too_large_for_a_float_is_left_out_and_the_other_fields_kept() {
        let decoded = decode_str(r#"{"do": 1.0, "nh3n": 1e999, "cod": -2E+400, "ph": nan, "tp": inf, "note": "left 1e999 alone", "seq": 7}"#).unwrap();
        assert_eq!((decoded.fields, decoded.seq), (vec![("do".to_string(), 1.0)], Some(7)));
        assert_eq!(decoded.dropped.iter().filter(|r| r.reason() == "not_finite").count(), 4, "{:?}", decoded.dropped);
        assert!(decoded.dropped.contains(&Rejection::NonNumeric("note".into())), "a string is left as it is: {:?}", decoded.dropped);
        assert_eq!(decode_str(r#"{"x": 1e999, "y": 12e3}"#).unwrap().fields, vec![("y".to_string(), 12e3)], "ordinary exponents stay numbers");
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = format!("{{\"x\": {}}}", "1".repeat(5000));
        assert_eq!(decode_str(&big), Err(Rejection::TooLarge { size: big.len(), limit: 4096 }));
    }

    #[test]
    fn names_and_counts_on_the_limits_are_taken() {
        let d = decode_str(r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"a_name_of_16_byt":8,"ts":1795392000000,"seq":1}"#).unwrap();
        assert_eq!(d.fields.len(), 8, "ts and seq are not fields");
        assert_eq!(decode_str(r#"{"温度": 1}"#).unwrap().fields[0].0, "温度", "any printable name");
    }

    #[test]
    fn a_rename_to_a_bad_name_is_refused_too() {
        assert_eq!(decode(br#"{"x": 0.5}"#, &LIMITS, &renaming("x", "")).unwrap_err().reason(), "bad_field_name");
    }

    #[test]
    fn string_containing_nan_is_not_mistaken_for_a_finite_number() {
        assert_eq!(decode_str(r#"{"x": "NaN"}"#).unwrap_err().reason(), "not_finite");
        assert_eq!(decode_str(r#"{"x": "NaN-ish"}"#).unwrap_err().reason(), "non_numeric");
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            Rejection::TooLarge { size: 0, limit: 0 },
            Rejection::NotJson(String::new()),
            Rejection::NotObject,
            Rejection::NonNumeric(String::new()),
            Rejection::NotFinite(String::new()),
            Rejection::Implausible { field: String::new(), value: String::new() },
            Rejection::NoFields,
            Rejection::BadTimestamp(String::new()),
            Rejection::BadSeq,
            Rejection::AheadOfClock { sensor: String::new(), ahead_secs: 0 },
            Rejection::ClockNotSet { sensor: String::new() },
            Rejection::UnmappedTopic,
            Rejection::UnknownSensor(String::new()),
            Rejection::SiteMismatch { sensor: String::new(), configured: String::new(), topic: String::new() },
            Rejection::BadFieldName(String::new()),
            Rejection::TooManyFields { count: 0, limit: 0 },
            Rejection::TooManyFieldNames { sensor: String::new(), field: String::new(), limit: 0 },
            Rejection::DuplicateSeq { sensor: String::new(), seq: 0 },
            Rejection::DuplicateCopy(String::new()),
            Rejection::RetainedWithoutTime(String::new()),
        ];
        let reasons: Vec<_> = all.iter().map(Rejection::reason).collect();
        assert_eq!(reasons, Rejection::REASONS);
    }
}
