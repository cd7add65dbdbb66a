//! The roster: grids, the people who answer for them, their weekly duty shifts with date
//! overrides, and who is on duty for a grid at a given moment. Read from a TOML file
//! (`[dispatch] roster` in the config; format in docs/incidents.md) and checked like rule files:
//! every problem with file, line and column.
//!
//! Who is told: the members on duty in the incident's grid; if nobody is, those on duty in the
//! grid's `fallback` (the neighbouring grid); if nobody is there either, the grid's leaders —
//! someone is always named.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use gridwatch_rules::diagnostic::line_column;
use gridwatch_rules::Diagnostic;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// What a member does; escalation policies add people by role.
/// `installer`s get the device alarms (silent boxes, gateways and buses down), not the grid.
pub const ROLES: [&str; 6] = ["worker", "grid_leader", "secretary", "street_office", "housing_office", "installer"];

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub role: String,
    /// For @-mentions in group robots; may be empty.
    pub phone: String,
    /// Grids the member answers for; empty = every grid (a community secretary).
    pub grids: Vec<String>,
    /// The member's own alert channels (sink names, e.g. a webhook to their phone's app): they
    /// carry the alerts that name this member, with the member's own link.
    pub channels: Vec<String>,
}

impl Member {
    fn covers(&self, grid: &str) -> bool {
        self.grids.is_empty() || self.grids.iter().any(|g| g == grid)
    }
}

/// A duty period in local time on `date`, ending the next day when `to` <= `from`.
#[derive(Debug, Clone, PartialEq)]
struct Period {
    from: NaiveTime,
    to: NaiveTime,
}

impl Period {
    /// Whether local `moment` falls in this period begun on `date`.
    fn covers(&self, date: NaiveDate, moment: chrono::NaiveDateTime) -> bool {
        let start = date.and_time(self.from);
        let end_date = if self.to <= self.from { date.succ_opt().unwrap_or(date) } else { date };
        let end = end_date.and_time(self.to);
        start <= moment && moment < end
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Shift {
    member: usize,
    days: Vec<Weekday>,
    period: Period,
}

#[derive(Debug, Clone, PartialEq)]
struct DutyOverride {
    member: usize,
    date: NaiveDate,
    /// `None`: off that day (the member's shifts starting that date do not count).
    period: Option<Period>,
}

/// A checked roster.
#[derive(Debug, Clone, PartialEq)]
pub struct Roster {
    pub offset: FixedOffset,
    /// Grid id -> its fallback grid.
    fallbacks: BTreeMap<String, Option<String>>,
    /// Grid id -> the channels (alert sink names) that carry its alerts; a grid not listed here
    /// uses every channel.
    channels: BTreeMap<String, Vec<String>>,
    /// Where each channel name was written, to check it against the configured sinks.
    channel_refs: Vec<Diagnostic>,
    pub members: Vec<Member>,
    shifts: Vec<Shift>,
    overrides: Vec<DutyOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    #[serde(default = "default_timezone")]
    timezone: Spanned<String>,
    #[serde(default)]
    grid: Vec<RawGrid>,
    #[serde(default)]
    member: Vec<RawMember>,
    #[serde(default)]
    shift: Vec<RawShift>,
    #[serde(default)]
    duty_override: Vec<RawOverride>,
    /// Escalation policies live in the same file; [`super::policy`] reads them.
    #[serde(default)]
    #[allow(dead_code)]
    policy: Vec<toml::Value>,
    /// So do quiet hours and the digest; [`super::deferral`] reads them.
    #[allow(dead_code)]
    deferral: Option<toml::Value>,
}

fn default_timezone() -> Spanned<String> {
    Spanned::new(0..0, "+08:00".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    id: Spanned<String>,
    fallback: Option<Spanned<String>>,
    /// Alert channels (sink names) for this grid's alerts, e.g. its own WeCom group.
    #[serde(default)]
    channels: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: Spanned<String>,
    #[serde(default)]
    name: String,
    role: Spanned<String>,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    grids: Vec<Spanned<String>>,
    #[serde(default)]
    channels: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    member: Spanned<String>,
    days: Spanned<Vec<String>>,
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    member: Spanned<String>,
    date: Spanned<String>,
    #[serde(default)]
    off: bool,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
}

/// Problems found in a roster file, each with file, line and column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct RosterErrors(pub Vec<Diagnostic>);

/// Collects located errors for one file.
pub(crate) struct Problems<'a> {
    name: &'a str,
    text: &'a str,
    pub errors: Vec<Diagnostic>,
}

impl<'a> Problems<'a> {
    pub fn new(name: &'a str, text: &'a str) -> Problems<'a> {
        Problems { name, text, errors: Vec::new() }
    }

    pub fn at(&mut self, span: std::ops::Range<usize>, message: impl std::fmt::Display) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(Diagnostic { file: self.name.to_string(), line, column, key: None, message: message.to_string() });
    }
}

impl Roster {
    /// An empty roster: nobody to name, times in China Standard Time.
    pub fn empty() -> Roster {
        Roster {
            offset: china(),
            fallbacks: BTreeMap::new(),
            channels: BTreeMap::new(),
            channel_refs: Vec::new(),
            members: Vec::new(),
            shifts: Vec::new(),
            overrides: Vec::new(),
        }
    }

    /// Parses and checks a roster file; `name` labels errors.
    pub fn parse(name: &str, text: &str) -> Result<Roster, RosterErrors> {
        let mut problems = Problems::new(name, text);
        let raw: RawRoster = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                problems.at(error.span().unwrap_or(0..0), error.message().trim_end());
                return Err(RosterErrors(problems.errors));
            }
        };
        let offset = raw.timezone.get_ref().parse::<FixedOffset>().unwrap_or_else(|_| {
            problems.at(raw.timezone.span(), format!("timezone `{}`: expected an offset like \"+08:00\"", raw.timezone.get_ref()));
            china()
        });
        let mut fallbacks = BTreeMap::new();
        for grid in &raw.grid {
            if fallbacks.insert(grid.id.get_ref().clone(), grid.fallback.as_ref().map(|f| f.get_ref().clone())).is_some() {
                problems.at(grid.id.span(), format!("grid `{}` is listed twice", grid.id.get_ref()));
            }
        }
        for grid in &raw.grid {
            if let Some(fallback) = &grid.fallback {
                if !fallbacks.contains_key(fallback.get_ref()) || fallback.get_ref() == grid.id.get_ref() {
                    problems.at(fallback.span(), format!("fallback `{}` is not another grid of this roster", fallback.get_ref()));
                }
            }
        }
        let mut channels = BTreeMap::new();
        let mut channel_refs = Vec::new();
        for grid in raw.grid.iter().filter(|g| !g.channels.is_empty()) {
            channels.insert(grid.id.get_ref().clone(), grid.channels.iter().map(|c| c.get_ref().clone()).collect::<Vec<_>>());
            for channel in &grid.channels {
                let (line, column) = line_column(text, channel.span().start);
                channel_refs.push(Diagnostic { file: name.to_string(), line, column, key: None, message: channel.get_ref().clone() });
            }
        }
        let mut members: Vec<Member> = Vec::new();
        for raw_member in &raw.member {
            if !ROLES.contains(&raw_member.role.get_ref().as_str()) {
                problems.at(raw_member.role.span(), format!("role `{}`: expected one of {}", raw_member.role.get_ref(), ROLES.join(", ")));
            }
            if members.iter().any(|m| &m.id == raw_member.id.get_ref()) {
                problems.at(raw_member.id.span(), format!("member `{}` is listed twice", raw_member.id.get_ref()));
            }
            for grid in &raw_member.grids {
                if !fallbacks.contains_key(grid.get_ref()) {
                    problems.at(grid.span(), format!("grid `{}` is not defined by a [[grid]]", grid.get_ref()));
                }
            }
            members.push(Member {
                id: raw_member.id.get_ref().clone(),
                name: if raw_member.name.is_empty() { raw_member.id.get_ref().clone() } else { raw_member.name.clone() },
                role: raw_member.role.get_ref().clone(),
                phone: raw_member.phone.clone(),
                grids: raw_member.grids.iter().map(|g| g.get_ref().clone()).collect(),
                channels: raw_member.channels.iter().map(|c| c.get_ref().clone()).collect(),
            });
            for channel in &raw_member.channels {
                let (line, column) = line_column(text, channel.span().start);
                channel_refs.push(Diagnostic { file: name.to_string(), line, column, key: None, message: channel.get_ref().clone() });
            }
        }
        let member_index = |problems: &mut Problems<'_>, id: &Spanned<String>| {
            let found = members.iter().position(|m| &m.id == id.get_ref());
            if found.is_none() {
                problems.at(id.span(), format!("member `{}` is not defined by a [[member]]", id.get_ref()));
            }
            found
        };
        let mut shifts = Vec::new();
        for shift in &raw.shift {
            let member = member_index(&mut problems, &shift.member);
            let mut days = Vec::new();
            for day in shift.days.get_ref() {
                match day.parse::<Weekday>() {
                    Ok(d) if day.len() == 3 => days.push(d),
                    _ => problems.at(shift.days.span(), format!("`{day}` is not a weekday (mon, tue, … sun)")),
                }
            }
            let period = period(&mut problems, &shift.from, &shift.to);
            if let (Some(member), Some(period)) = (member, period) {
                shifts.push(Shift { member, days, period });
            }
        }
        let mut overrides = Vec::new();
        for o in &raw.duty_override {
            let member = member_index(&mut problems, &o.member);
            let date = NaiveDate::parse_from_str(o.date.get_ref(), "%Y-%m-%d")
                .map_err(|_| problems.at(o.date.span(), format!("date `{}`: expected YYYY-MM-DD", o.date.get_ref())))
                .ok();
            let period = match (o.off, &o.from, &o.to) {
                (true, None, None) => Some(None),
                (false, Some(from), Some(to)) => period(&mut problems, from, to).map(Some),
                _ => {
                    problems.at(o.member.span(), "a duty override is either `off = true` or `from` and `to`");
                    None
                }
            };
            if let (Some(member), Some(date), Some(period)) = (member, date, period) {
                overrides.push(DutyOverride { member, date, period });
            }
        }
        if problems.errors.is_empty() {
            Ok(Roster { offset, fallbacks, channels, channel_refs, members, shifts, overrides })
        } else {
            Err(RosterErrors(problems.errors))
        }
    }

    /// The members on duty for `grid` at `at`, following the fallback grid and then the grid's
    /// leaders when nobody is on duty.
    pub fn on_duty(&self, grid: &str, at: DateTime<Utc>) -> Vec<&Member> {
        let here = self.working(grid, at);
        if !here.is_empty() {
            return here;
        }
        if let Some(Some(fallback)) = self.fallbacks.get(grid) {
            let there = self.working(fallback, at);
            if !there.is_empty() {
                return there;
            }
        }
        self.with_roles(grid, &["grid_leader".to_string()])
    }

    /// The channels (sink names, from `sinks`) an alert of `grid` goes to: the grid's own
    /// channels plus every channel no grid or member claims; for a grid without its own (or no
    /// grid), the unclaimed channels. Never none: when that would leave no channel, every channel
    /// no member claims. (Members' own channels are added by [`Roster::member_channels`].)
    pub fn targets<'a>(&self, grid: Option<&str>, sinks: &'a [String]) -> Vec<&'a String> {
        let of_member = |sink: &String| self.members.iter().any(|m| m.channels.contains(sink));
        let claimed = |sink: &String| of_member(sink) || self.channels.values().any(|list| list.contains(sink));
        let own = grid.and_then(|g| self.channels.get(g));
        let chosen: Vec<&String> = sinks.iter().filter(|s| !claimed(s) || own.is_some_and(|own| own.contains(s))).collect();
        if chosen.is_empty() {
            sinks.iter().filter(|s| !of_member(s)).collect()
        } else {
            chosen
        }
    }

    /// The own channels of the members called `names`, with the member each belongs to.
    pub fn member_channels<'a>(&'a self, names: &'a [String]) -> Vec<(&'a String, &'a Member)> {
        self.members_named(names).flat_map(|m| m.channels.iter().map(move |c| (c, m))).collect()
    }

    /// Channel names the roster uses that are not among `configured`, as located errors.
    pub fn unknown_channels(&self, configured: &[String]) -> Vec<Diagnostic> {
        self.channel_refs
            .iter()
            .filter(|r| !configured.contains(&r.message))
            .map(|r| Diagnostic { message: format!("channel `{}` is not configured in [alerts] (have: {})", r.message, configured.join(", ")), ..r.clone() })
            .collect()
    }

    /// The channel names the roster's grids are sent to, each once, in order.
    pub fn channel_names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&str> = self.channel_refs.iter().map(|r| r.message.as_str()).collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// Every member's name by id.
    pub fn member_names(&self) -> BTreeMap<String, String> {
        self.members.iter().map(|m| (m.id.clone(), m.name.clone())).collect()
    }

    /// The members called `name` (names on alerts are display names).
    pub fn members_named<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a Member> + 'a {
        self.members.iter().filter(move |m| names.contains(&m.name))
    }

    /// The installers who answer for `grid` (every installer for a device alarm of no grid):
    /// whom device alarms name.
    pub fn installers(&self, grid: Option<&str>) -> Vec<&Member> {
        self.members.iter().filter(|m| m.role == "installer" && grid.is_none_or(|g| m.covers(g))).collect()
    }

    /// Members with one of `roles` who answer for `grid`.
    pub fn with_roles(&self, grid: &str, roles: &[String]) -> Vec<&Member> {
        self.members.iter().filter(|m| roles.contains(&m.role) && m.covers(grid)).collect()
    }

    /// Members of `grid` whose shift (or override) covers `at`.
    fn working(&self, grid: &str, at: DateTime<Utc>) -> Vec<&Member> {
        let local = self.offset.from_utc_datetime(&at.naive_utc()).naive_local();
        let today = local.date();
        let yesterday = today.pred_opt().unwrap_or(today);
        let mut on: Vec<usize> = Vec::new();
        for (index, _) in self.members.iter().enumerate().filter(|(_, m)| m.grids.iter().any(|g| g == grid)) {
            let working = [yesterday, today].into_iter().any(|date| {
                let overrides: Vec<&DutyOverride> = self.overrides.iter().filter(|o| o.member == index && o.date == date).collect();
                if !overrides.is_empty() {
                    return overrides.iter().any(|o| o.period.as_ref().is_some_and(|p| p.covers(date, local)));
                }
                self.shifts.iter().any(|s| s.member == index && s.days.contains(&date.weekday()) && s.period.covers(date, local))
            });
            if working {
                on.push(index);
            }
        }
        on.into_iter().map(|i| &self.members[i]).collect()
    }
}

fn period(problems: &mut Problems<'_>, from: &Spanned<String>, to: &Spanned<String>) -> Option<Period> {
    let mut time = |text: &Spanned<String>| {
        NaiveTime::parse_from_str(text.get_ref(), "%H:%M")
            .map_err(|_| problems.at(text.span(), format!("`{}`: expected a time like \"08:00\"", text.get_ref())))
            .ok()
    };
    let (from, to) = (time(from), time(to));
    Some(Period { from: from?, to: to? })
}

fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROSTER: &str = r#"
timezone = "+08:00"

[[grid]]
id = "grid-3"
fallback = "grid-4"
channels = ["wecom-grid3"]

[[grid]]
id = "grid-4"

[[member]]
id = "wang"
role = "worker"
phone = "13800000001"
grids = ["grid-3"]

[[member]]
id = "zhao"
role = "worker"
grids = ["grid-3"]

[[member]]
id = "li"
role = "worker"
grids = ["grid-4"]

[[member]]
id = "chen"
role = "grid_leader"
grids = ["grid-3"]

[[member]]
id = "sun"
role = "secretary"

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "08:00"
to = "20:00"

[[shift]]
member = "zhao"
days = ["mon"]
from = "20:00"
to = "08:00"

[[shift]]
member = "li"
days = ["sat", "sun"]
from = "00:00"
to = "00:00"

[[duty_override]]
member = "wang"
date = "2026-11-25"
off = true

[[duty_override]]
member = "zhao"
date = "2026-11-25"
from = "08:00"
to = "20:00"
"#;

    /// Local (UTC+8) time on a date in November 2026 (the 23rd is a Monday).
    fn local(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        china().with_ymd_and_hms(2026, 11, day, hour, minute, 0).single().expect("valid").with_timezone(&Utc)
    }

    fn names(members: Vec<&Member>) -> Vec<&str> {
        members.into_iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn the_channels_a_roster_names_are_listed_once() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        assert_eq!(roster.channel_names(), ["wecom-grid3"]);
        assert!(Roster::parse("roster.toml", "").unwrap().channel_names().is_empty());
    }

    #[test]
    fn day_and_night_shifts_hand_over_at_their_times() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        assert_eq!(names(roster.on_duty("grid-3", local(23, 8, 0))), ["wang"], "Monday 08:00: the day shift starts");
        assert_eq!(names(roster.on_duty("grid-3", local(23, 19, 59))), ["wang"]);
        assert_eq!(names(roster.on_duty("grid-3", local(23, 20, 0))), ["zhao"], "20:00: the night shift takes over");
        assert_eq!(names(roster.on_duty("grid-3", local(24, 0, 30))), ["zhao"], "after midnight the Monday night shift still runs");
        assert_eq!(names(roster.on_duty("grid-3", local(24, 7, 59))), ["zhao"]);
        assert_eq!(names(roster.on_duty("grid-3", local(24, 8, 0))), ["wang"], "Tuesday 08:00");
    }

    #[test]
    fn a_date_override_replaces_the_weekly_shifts_of_that_day() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        // Wednesday the 25th: wang is off, zhao covers the day.
        assert_eq!(names(roster.on_duty("grid-3", local(25, 10, 0))), ["zhao"]);
    }

    #[test]
    fn nobody_on_duty_falls_back_to_the_neighbouring_grid_then_the_leader() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        // Saturday: nobody in grid-3; li works grid-4 all weekend.
        assert_eq!(names(roster.on_duty("grid-3", local(28, 12, 0))), ["li"]);
        // Tuesday night: nobody in grid-3 and nobody in grid-4: the grid leader.
        assert_eq!(names(roster.on_duty("grid-3", local(24, 23, 0))), ["chen"]);
    }

    #[test]
    fn a_grids_alerts_go_to_its_own_channels_and_unclaimed_channels_get_all() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        let sinks = vec!["wecom-grid3".to_string(), "office-webhook".to_string()];
        assert_eq!(roster.targets(Some("grid-3"), &sinks), vec!["wecom-grid3", "office-webhook"], "its own group, and what no grid claims");
        assert_eq!(roster.targets(Some("grid-4"), &sinks), vec!["office-webhook"], "grid-3's group does not get grid-4's alarms");
        assert_eq!(roster.targets(None, &sinks), vec!["office-webhook"]);
        let only_grid3 = vec!["wecom-grid3".to_string()];
        assert_eq!(roster.targets(Some("grid-4"), &only_grid3), vec!["wecom-grid3"], "never no channel at all");
        let unknown: Vec<String> = roster.unknown_channels(&["console".to_string()]).iter().map(ToString::to_string).collect();
        assert_eq!(unknown, vec!["roster.toml:7:13: error: channel `wecom-grid3` is not configured in [alerts] (have: console)"]);
    }

    #[test]
    fn roles_cover_their_grids_and_a_secretary_covers_all() {
        let roster = Roster::parse("roster.toml", ROSTER).unwrap();
        assert_eq!(names(roster.with_roles("grid-3", &["grid_leader".to_string(), "secretary".to_string()])), ["chen", "sun"]);
        assert_eq!(names(roster.with_roles("grid-4", &["grid_leader".to_string(), "secretary".to_string()])), ["sun"]);
    }

    #[test]
    fn mistakes_are_reported_with_file_line_and_column() {
        let broken = ROSTER
            .replace("role = \"grid_leader\"", "role = \"boss\"")
            .replace("days = [\"mon\"]", "days = [\"monday\"]")
            .replace("fallback = \"grid-4\"", "fallback = \"grid-9\"");
        let errors: Vec<String> = Roster::parse("roster.toml", &broken).unwrap_err().0.iter().map(ToString::to_string).collect();
        assert!(errors.contains(&"roster.toml:6:12: error: fallback `grid-9` is not another grid of this roster".to_string()), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("roster.toml:30:8: error: role `boss`: expected one of worker, grid_leader")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("`monday` is not a weekday")), "{errors:?}");
        let typo = Roster::parse("r.toml", "[[member]]\nid = \"a\"\nrole = \"worker\"\nphon = \"1\"\n").unwrap_err().to_string();
        assert!(typo.starts_with("r.toml:4:1: error: unknown field `phon`"), "{typo}");
    }
}
