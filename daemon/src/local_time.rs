//! Times as people read them: in the installation's IANA time zone (`time_zone`, default
//! Asia/Shanghai), never UTC. Machine fields (`at_ms`, the JSON `at`) stay UTC RFC 3339 — see
//! [`crate::clock::rfc3339`]; everything a grid worker, the office or an operator at the CLI
//! reads goes through here.
//!
//! The tz database is compiled in (`chrono-tz`): a Pi's image may lack /usr/share/zoneinfo, and
//! daylight-saving zones (an English-language installation abroad) must still come out right.

use chrono::TimeZone;
use chrono_tz::Tz;

/// The time zone used when the configuration names none.
pub const DEFAULT: Tz = chrono_tz::Asia::Shanghai;

/// Parses an IANA name (`Asia/Shanghai`, `Europe/Berlin`).
pub fn parse(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| format!("`{name}` is not an IANA time zone name (e.g. `Asia/Shanghai`)"))
}

fn local(ms: i64, zone: Tz) -> Option<chrono::DateTime<Tz>> {
    zone.timestamp_millis_opt(ms).single()
}

/// "2026-12-03 23:28:35" in `zone` (for the page's history and the CLI).
pub fn datetime(ms: i64, zone: Tz) -> String {
    local(ms, zone).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// "2026-12-03 23:28:35 +08:00": a local time that says which zone it is in (the CLI).
pub fn labelled(ms: i64, zone: Tz) -> String {
    format!("{} {}", datetime(ms, zone), offset(ms, zone))
}

/// "12月3日 23:28" (Chinese) or "3 Dec 23:28" (English) in `zone`: short enough for a chat
/// message or an SMS.
pub fn short(ms: i64, zone: Tz, chinese: bool) -> String {
    let Some(t) = local(ms, zone) else { return ms.to_string() };
    if chinese {
        t.format("%-m月%-d日 %H:%M").to_string()
    } else {
        t.format("%-d %b %H:%M").to_string()
    }
}

/// "23:28" in `zone`.
pub fn clock_time(ms: i64, zone: Tz) -> String {
    local(ms, zone).map_or_else(|| ms.to_string(), |t| t.format("%H:%M").to_string())
}

/// The zone's offset at `ms`, e.g. "+08:00", for labels that must say which zone they are in.
pub fn offset(ms: i64, zone: Tz) -> String {
    local(ms, zone).map_or_else(String::new, |t| t.format("%:z").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03T15:28:35.918Z, the time in the issue: 23:28 in China.
    const AT: i64 = 1_796_311_715_918;

    #[test]
    fn china_time_is_eight_hours_ahead_of_utc() {
        assert_eq!(crate::clock::rfc3339(AT), "2026-12-03T15:28:35.918Z");
        assert_eq!(datetime(AT, DEFAULT), "2026-12-03 23:28:35");
        assert_eq!(short(AT, DEFAULT, true), "12月3日 23:28");
        assert_eq!(short(AT, DEFAULT, false), "3 Dec 23:28");
        assert_eq!((clock_time(AT, DEFAULT), offset(AT, DEFAULT)), ("23:28".to_string(), "+08:00".to_string()));
        assert_eq!(labelled(AT, DEFAULT), "2026-12-03 23:28:35 +08:00");
    }

    #[test]
    fn another_zone_follows_its_own_daylight_saving() {
        let berlin = parse("Europe/Berlin").unwrap();
        assert_eq!(datetime(AT, berlin), "2026-12-03 16:28:35", "winter: +01:00");
        assert_eq!(datetime(AT - 150 * 86_400_000, berlin).get(11..13), Some("17"), "summer: +02:00");
        assert!(parse("China/Beijing").unwrap_err().contains("IANA"));
    }
}
