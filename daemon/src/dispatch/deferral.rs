//! Quiet hours and the daily digest: which grid alerts may wait, and until when. Workers are
//! not woken at 3 a.m. for a blue notice, and do not get a blue message every few minutes: with
//! `[deferral]` in the roster file,
//!
//! - alerts of `digest_severities` wait for one message a day at `digest_at` (local time);
//! - alerts of `quiet_severities` that come between `quiet_from` and `quiet_to` wait until the
//!   quiet hours end, and then go out together as one message.
//!
//! Red (danger) never waits: the roster is refused if a list names it. Device alarms for
//! installers and reminders/escalations are never deferred. The deferred deliveries are in the
//! outbox with their time (`not_before_ms`), so they survive restarts.

use super::roster::{Problems, RosterErrors};
use crate::alert::{Alert, Audience, Event};
use chrono::{DateTime, Duration as Days, FixedOffset, NaiveTime, TimeZone, Utc};
use serde::Deserialize;
use toml::Spanned;

/// The checked `[deferral]` table; the default defers nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deferral {
    offset: Option<FixedOffset>,
    quiet: Option<(NaiveTime, NaiveTime)>,
    quiet_severities: Vec<String>,
    digest_at: Option<NaiveTime>,
    digest_severities: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default = "default_timezone")]
    timezone: String,
    deferral: Option<RawDeferral>,
}

fn default_timezone() -> String {
    "+08:00".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeferral {
    quiet_from: Option<Spanned<String>>,
    quiet_to: Option<Spanned<String>>,
    #[serde(default = "notice_only")]
    quiet_severities: Spanned<Vec<String>>,
    digest_at: Option<Spanned<String>>,
    #[serde(default = "none")]
    digest_severities: Spanned<Vec<String>>,
}

fn none() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

fn notice_only() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["notice".into()])
}

/// Reads `[deferral]` from a roster file (the rest of the file is the roster's and the
/// policies').
pub fn parse(name: &str, text: &str) -> Result<Deferral, RosterErrors> {
    let mut problems = Problems::new(name, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        problems.at(e.span().unwrap_or(0..0), e.message().trim_end());
        RosterErrors(problems.errors.clone())
    })?;
    let Some(deferral) = raw.deferral else { return Ok(Deferral::default()) };
    let offset = raw.timezone.parse::<FixedOffset>().ok();
    let mut time = |text: &Option<Spanned<String>>| {
        text.as_ref().and_then(|t| {
            NaiveTime::parse_from_str(t.get_ref(), "%H:%M")
                .map_err(|_| problems.at(t.span(), format!("`{}`: expected a time like \"22:00\"", t.get_ref())))
                .ok()
        })
    };
    let (quiet_from, quiet_to, digest_at) = (time(&deferral.quiet_from), time(&deferral.quiet_to), time(&deferral.digest_at));
    if deferral.quiet_from.is_some() != deferral.quiet_to.is_some() {
        let span = deferral.quiet_from.as_ref().or(deferral.quiet_to.as_ref()).map_or(0..0, Spanned::span);
        problems.at(span, "quiet hours need both `quiet_from` and `quiet_to`");
    }
    for list in [&deferral.quiet_severities, &deferral.digest_severities] {
        for severity in list.get_ref() {
            match severity.as_str() {
                "notice" | "warning" | "alarm" => {}
                "danger" => problems.at(list.span(), "red (danger) alerts never wait: remove `danger`"),
                other => problems.at(list.span(), format!("severity `{other}`: expected notice, warning or alarm")),
            }
        }
    }
    if !deferral.digest_severities.get_ref().is_empty() && deferral.digest_at.is_none() {
        problems.at(deferral.digest_severities.span(), "`digest_severities` needs `digest_at`, the time of the daily message");
    }
    if !problems.errors.is_empty() {
        return Err(RosterErrors(problems.errors));
    }
    Ok(Deferral {
        offset,
        quiet: quiet_from.zip(quiet_to),
        quiet_severities: deferral.quiet_severities.into_inner(),
        digest_at,
        digest_severities: deferral.digest_severities.into_inner(),
    })
}

impl Deferral {
    /// Until when `alert` waits (ms since the epoch); `None`: it goes now.
    pub fn not_before(&self, alert: &Alert, now_ms: i64) -> Option<i64> {
        if alert.audience != Audience::Grid || !matches!(alert.event, Event::Fired | Event::Changed | Event::Cleared) {
            return None;
        }
        let offset = self.offset?;
        let now = Utc.timestamp_millis_opt(now_ms).single()?;
        if let Some(at) = self.digest_at.filter(|_| self.digest_severities.iter().any(|s| s == alert.severity.as_str())) {
            return Some(next_local(offset, now, at));
        }
        let (from, to) = self.quiet.filter(|_| self.quiet_severities.iter().any(|s| s == alert.severity.as_str()))?;
        let local = now.with_timezone(&offset).time();
        let quiet = if from <= to { from <= local && local < to } else { local >= from || local < to };
        quiet.then(|| next_local(offset, now, to))
    }
}

/// The next time it is `at` o'clock in `offset`, strictly after `now` (ms since the epoch).
fn next_local(offset: FixedOffset, now: DateTime<Utc>, at: NaiveTime) -> i64 {
    let local = now.with_timezone(&offset);
    let today = local.date_naive().and_time(at);
    let candidate = offset.from_local_datetime(&today).single().unwrap_or(local);
    let next = if candidate > local { candidate } else { candidate + Days::days(1) };
    next.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;

    /// 2026-11-23 at `hh:mm` China time, in ms.
    fn at(hh: u32, mm: u32) -> i64 {
        FixedOffset::east_opt(8 * 3600).unwrap().with_ymd_and_hms(2026, 11, 23, hh, mm, 0).unwrap().timestamp_millis()
    }

    fn grid_alert(severity: &str) -> Alert {
        let mut alert = sample_alert("fired", 1.0);
        alert.severity = severity.parse().unwrap();
        alert
    }

    const QUIET: &str = "[deferral]\nquiet_from = \"22:00\"\nquiet_to = \"07:00\"\nquiet_severities = [\"notice\", \"warning\"]\n";

    #[test]
    fn quiet_hours_hold_the_chosen_severities_until_morning() {
        let deferral = parse("roster.toml", QUIET).unwrap();
        let next_morning = at(7, 0) + 86_400_000;
        assert_eq!(deferral.not_before(&grid_alert("warning"), at(23, 30)), Some(next_morning));
        assert_eq!(deferral.not_before(&grid_alert("notice"), at(3, 0)), Some(at(7, 0)), "after midnight: this morning");
        assert_eq!(deferral.not_before(&grid_alert("warning"), at(12, 0)), None, "daytime: at once");
        assert_eq!(deferral.not_before(&grid_alert("alarm"), at(23, 30)), None, "orange never waits here");
        assert_eq!(deferral.not_before(&grid_alert("danger"), at(23, 30)), None);
        let mut device = grid_alert("notice");
        device.audience = crate::alert::Audience::Installer;
        assert_eq!(deferral.not_before(&device, at(23, 30)), None, "installers' alarms are not deferred");
        let mut reminder = grid_alert("warning");
        reminder.event = crate::alert::Event::Reminder;
        assert_eq!(deferral.not_before(&reminder, at(23, 30)), None);
    }

    #[test]
    fn blue_waits_for_the_daily_digest() {
        let deferral = parse("roster.toml", "[deferral]\ndigest_at = \"08:30\"\ndigest_severities = [\"notice\"]\nquiet_severities = []\n").unwrap();
        assert_eq!(deferral.not_before(&grid_alert("notice"), at(8, 0)), Some(at(8, 30)));
        assert_eq!(deferral.not_before(&grid_alert("notice"), at(8, 30)), Some(at(8, 30) + 86_400_000), "the digest just went: tomorrow's");
        assert_eq!(deferral.not_before(&grid_alert("warning"), at(8, 0)), None);
        assert_eq!(Deferral::default().not_before(&grid_alert("notice"), at(3, 0)), None, "without [deferral] nothing waits");
    }

    #[test]
    fn red_cannot_be_deferred_and_half_quiet_hours_are_refused() {
        let errors =
            parse("roster.toml", "[deferral]\nquiet_from = \"22:00\"\nquiet_to = \"07:00\"\nquiet_severities = [\"notice\", \"danger\"]\n").unwrap_err();
        assert!(errors.0[0].to_string().starts_with("roster.toml:4:") && errors.0[0].message.contains("never wait"), "{}", errors.0[0]);
        let errors = parse("roster.toml", "[deferral]\nquiet_from = \"22:00\"\n").unwrap_err();
        assert!(errors.0[0].message.contains("both"), "{}", errors.0[0]);
        let errors = parse("roster.toml", "[deferral]\ndigest_severities = [\"notice\"]\n").unwrap_err();
        assert!(errors.0[0].message.contains("needs `digest_at`"), "{}", errors.0[0]);
    }
}
