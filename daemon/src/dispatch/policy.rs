//! Escalation policies: per severity, how long an incident may wait to be accepted, to have
//! someone on site and to be resolved; how often the people on duty are reminded while nobody
//! has accepted (催办); and who is added each time a deadline is missed (督办). Defaults follow
//! domain.md §4; a roster file may replace them with `[[policy]]` tables.
//!
//! [`steps_due`] is pure: from the incident's state, when it opened and what was already done,
//! it says what is due now and when to look again. The caller stores that progress with the
//! notifications it sends, so a restart neither repeats a step nor starts the clocks again.

use super::roster::{Problems, RosterErrors, ROLES};
use crate::dispatch::incident::State;
use serde::Deserialize;
use toml::Spanned;

const MINUTE: i64 = 60_000;

/// The clocks of one severity.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub severity: String,
    pub accept_within_ms: Option<i64>,
    pub on_site_within_ms: Option<i64>,
    pub resolve_within_ms: Option<i64>,
    /// Remind the people on duty this often until someone accepts.
    pub remind_every_ms: Option<i64>,
    /// Roles added at the first, second, … missed deadline (the last repeats).
    pub escalate_to: Vec<Vec<String>>,
}

/// A deadline an incident can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Accept,
    OnSite,
    Resolve,
}

impl Deadline {
    const ALL: [Deadline; 3] = [Deadline::Accept, Deadline::OnSite, Deadline::Resolve];

    fn bit(self) -> u8 {
        match self {
            Deadline::Accept => 1,
            Deadline::OnSite => 2,
            Deadline::Resolve => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Deadline::Accept => "accepted",
            Deadline::OnSite => "on site",
            Deadline::Resolve => "resolved",
        }
    }

    /// Whether the incident's state already meets this deadline.
    fn met(self, state: State) -> bool {
        match self {
            Deadline::Accept => state != State::Open,
            Deadline::OnSite => matches!(state, State::OnSite | State::Resolved | State::Closed),
            Deadline::Resolve => matches!(state, State::Resolved | State::Closed),
        }
    }
}

/// What has been done for one incident (stored with it, and beside the card for a step sent from
/// memory: [`crate::store::LadderSent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Progress {
    /// Reminder periods passed (the next reminder falls due after the next one).
    pub reminders: u32,
    /// Reminders sent: what the next one is numbered after.
    pub reminders_sent: u32,
    /// Escalations sent (the next one adds `escalate_to[level]`).
    pub level: u32,
    /// Deadlines already announced as missed (bits of [`Deadline`]).
    pub missed: u8,
}

/// One notification due.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Remind the people on duty: the incident is still not accepted.
    Remind { count: u32 },
    /// A deadline was missed: add these roles.
    Escalate { deadline: Deadline, level: u32, roles: Vec<String> },
}

impl Policy {
    fn within(&self, deadline: Deadline) -> Option<i64> {
        match deadline {
            Deadline::Accept => self.accept_within_ms,
            Deadline::OnSite => self.on_site_within_ms,
            Deadline::Resolve => self.resolve_within_ms,
        }
    }

    /// Whether this policy ever asks for anything.
    pub fn is_active(&self) -> bool {
        Deadline::ALL.iter().any(|&d| self.within(d).is_some()) || self.remind_every_ms.is_some()
    }
}

/// The steps due at `now` for an incident opened at `opened_ms`, the progress after them, and
/// when the next step falls due (`None`: nothing more will be, e.g. it is resolved). Steps
/// missed while the daemon was down come once, late; never early.
pub fn steps_due(policy: &Policy, opened_ms: i64, state: State, progress: Progress, now: i64) -> (Vec<Step>, Progress, Option<i64>) {
    let mut progress = progress;
    let mut steps = Vec::new();
    for deadline in Deadline::ALL {
        let Some(within) = policy.within(deadline) else { continue };
        if progress.missed & deadline.bit() == 0 && !deadline.met(state) && now >= opened_ms + within {
            progress.missed |= deadline.bit();
            let roles = policy.escalate_to.get((progress.level as usize).min(policy.escalate_to.len().saturating_sub(1))).cloned().unwrap_or_default();
            progress.level += 1;
            steps.push(Step::Escalate { deadline, level: progress.level, roles });
        }
    }
    if let (Some(every), State::Open) = (policy.remind_every_ms, state) {
        let due = u32::try_from((now - opened_ms).max(0) / every.max(1)).unwrap_or(u32::MAX);
        // An escalation at the same moment already reminds everyone.
        if due > progress.reminders {
            if steps.is_empty() {
                progress.reminders_sent += 1;
                steps.push(Step::Remind { count: progress.reminders_sent });
            }
            progress.reminders = due;
        }
    }
    let next_deadline = Deadline::ALL
        .iter()
        .filter(|d| progress.missed & d.bit() == 0 && !d.met(state))
        .filter_map(|&d| policy.within(d).map(|within| opened_ms + within))
        .min();
    let next_reminder = match (policy.remind_every_ms, state) {
        (Some(every), State::Open) => Some(opened_ms + (i64::from(progress.reminders) + 1) * every.max(1)),
        _ => None,
    };
    let next = match (next_deadline, next_reminder) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (steps, progress, next)
}

/// The defaults of domain.md §4 (red / orange / yellow; blue gets nothing).
pub fn default_policies() -> Vec<Policy> {
    let roles = |list: &[&str]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    vec![
        Policy {
            severity: "danger".into(),
            accept_within_ms: Some(10 * MINUTE),
            on_site_within_ms: Some(30 * MINUTE),
            resolve_within_ms: Some(120 * MINUTE),
            remind_every_ms: Some(5 * MINUTE),
            escalate_to: vec![roles(&["grid_leader", "secretary"]), roles(&["street_office", "housing_office"])],
        },
        Policy {
            severity: "alarm".into(),
            accept_within_ms: Some(30 * MINUTE),
            on_site_within_ms: Some(120 * MINUTE),
            resolve_within_ms: None,
            remind_every_ms: Some(10 * MINUTE),
            escalate_to: vec![roles(&["grid_leader"]), roles(&["secretary"])],
        },
        Policy {
            severity: "warning".into(),
            accept_within_ms: Some(120 * MINUTE),
            on_site_within_ms: Some(24 * 60 * MINUTE),
            resolve_within_ms: None,
            remind_every_ms: Some(60 * MINUTE),
            escalate_to: vec![roles(&["grid_leader"])],
        },
    ]
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    severity: Spanned<String>,
    accept_within: Option<Spanned<String>>,
    on_site_within: Option<Spanned<String>>,
    resolve_within: Option<Spanned<String>>,
    remind_every: Option<Spanned<String>>,
    #[serde(default)]
    escalate_to: Vec<Vec<Spanned<String>>>,
}

/// The roster file's `[[policy]]` tables over the defaults (a severity given replaces its
/// default entirely); errors located like the roster's.
pub fn parse_policies(name: &str, text: &str) -> Result<Vec<Policy>, RosterErrors> {
    let mut problems = Problems::new(name, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        problems.at(e.span().unwrap_or(0..0), e.message().trim_end());
        RosterErrors(problems.errors.clone())
    })?;
    let mut policies = default_policies();
    for p in raw.policy {
        let severity = p.severity.get_ref().clone();
        if !["notice", "warning", "alarm", "danger"].contains(&severity.as_str()) {
            problems.at(p.severity.span(), format!("severity `{severity}`: expected notice, warning, alarm or danger"));
            continue;
        }
        let mut duration = |text: &Option<Spanned<String>>| {
            text.as_ref().and_then(|t| match humantime::parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() => i64::try_from(d.as_millis()).ok(),
                _ => {
                    problems.at(t.span(), format!("`{}` is not a duration like \"10m\" or \"2h\"", t.get_ref()));
                    None
                }
            })
        };
        let policy = Policy {
            severity: severity.clone(),
            accept_within_ms: duration(&p.accept_within),
            on_site_within_ms: duration(&p.on_site_within),
            resolve_within_ms: duration(&p.resolve_within),
            remind_every_ms: duration(&p.remind_every),
            escalate_to: p.escalate_to.iter().map(|level| level.iter().map(|r| r.get_ref().clone()).collect()).collect(),
        };
        for role in p.escalate_to.iter().flatten() {
            if !ROLES.contains(&role.get_ref().as_str()) {
                problems.at(role.span(), format!("role `{}`: expected one of {}", role.get_ref(), ROLES.join(", ")));
            }
        }
        policies.retain(|existing| existing.severity != severity);
        policies.push(policy);
    }
    if problems.errors.is_empty() {
        Ok(policies)
    } else {
        Err(RosterErrors(problems.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red() -> Policy {
        default_policies().remove(0)
    }

    #[test]
    fn reminders_come_every_interval_until_someone_accepts() {
        let policy = red();
        let (steps, progress, next) = steps_due(&policy, 0, State::Open, Progress::default(), 4 * MINUTE);
        assert!(steps.is_empty());
        assert_eq!(next, Some(5 * MINUTE));
        let (steps, progress, next) = steps_due(&policy, 0, State::Open, progress, 5 * MINUTE);
        assert_eq!(steps, vec![Step::Remind { count: 1 }]);
        assert_eq!(next, Some(10 * MINUTE), "the accept deadline and the second reminder");
        let (steps, _, next) = steps_due(&policy, 0, State::Accepted, progress, 6 * MINUTE);
        assert!(steps.is_empty(), "accepted: no more reminders");
        assert_eq!(next, Some(30 * MINUTE), "the on-site deadline is next");
    }

    #[test]
    fn a_missed_accept_deadline_escalates_to_the_grid_leader_and_secretary_then_further() {
        let policy = red();
        let (steps, progress, _) = steps_due(&policy, 0, State::Open, Progress { reminders: 1, ..Progress::default() }, 10 * MINUTE);
        assert_eq!(steps, vec![Step::Escalate { deadline: Deadline::Accept, level: 1, roles: vec!["grid_leader".into(), "secretary".into()] }]);
        let (steps, _, _) = steps_due(&policy, 0, State::Accepted, progress, 30 * MINUTE);
        assert_eq!(steps, vec![Step::Escalate { deadline: Deadline::OnSite, level: 2, roles: vec!["street_office".into(), "housing_office".into()] }]);
    }

    #[test]
    fn reminders_are_numbered_as_people_get_them_though_an_escalation_took_one_period() {
        // Red: reminders every 5 min, accept within 10 min. At minute 10 the escalation reminds
        // everyone instead of the second reminder; the one at minute 15 is the second people
        // get (it said "3" before).
        let policy = red();
        let mut progress = Progress::default();
        let mut numbers = Vec::new();
        for minute in [5, 10, 15, 20] {
            let (steps, after, _) = steps_due(&policy, 0, State::Open, progress, minute * MINUTE);
            progress = after;
            numbers.extend(steps.iter().filter_map(|step| if let Step::Remind { count } = step { Some(*count) } else { None }));
        }
        assert_eq!(numbers, vec![1, 2, 3]);
        assert_eq!(progress.reminders, 4, "the periods passed still time the next one");
    }

    #[test]
    fn a_long_outage_gives_each_missed_step_once_late_and_never_early() {
        let policy = red();
        // Down from minute 1 to minute 45: accept and on-site deadlines both passed.
        let (steps, progress, next) = steps_due(&policy, 0, State::Open, Progress::default(), 45 * MINUTE);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(matches!(steps[0], Step::Escalate { deadline: Deadline::Accept, level: 1, .. }));
        assert!(matches!(steps[1], Step::Escalate { deadline: Deadline::OnSite, level: 2, .. }));
        assert_eq!(progress.reminders, 9, "the missed reminders are not sent one by one");
        assert_eq!(next, Some(50 * MINUTE));
        let (steps, _, _) = steps_due(&policy, 0, State::Open, progress, 45 * MINUTE);
        assert!(steps.is_empty(), "asking again at the same moment repeats nothing");
    }

    #[test]
    fn a_resolved_incident_has_nothing_due() {
        let (steps, _, next) = steps_due(&red(), 0, State::Resolved, Progress::default(), 300 * MINUTE);
        assert!(steps.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn roster_policies_replace_defaults_and_are_checked() {
        let text = "[[policy]]\nseverity = \"alarm\"\naccept_within = \"15m\"\nescalate_to = [[\"grid_leader\"]]\n";
        let policies = parse_policies("r.toml", text).unwrap();
        let alarm = policies.iter().find(|p| p.severity == "alarm").unwrap();
        assert_eq!((alarm.accept_within_ms, alarm.remind_every_ms), (Some(15 * MINUTE), None));
        let errors: Vec<String> = parse_policies(
            "r.toml",
            "[[policy]]\nseverity = \"red\"\n[[policy]]\nseverity = \"alarm\"\nremind_every = \"soon\"\nescalate_to = [[\"mayor\"]]\n",
        )
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(errors[0], "r.toml:2:12: error: severity `red`: expected notice, warning, alarm or danger");
        assert_eq!(errors[1], "r.toml:5:16: error: `soon` is not a duration like \"10m\" or \"2h\"");
        assert!(errors[2].starts_with("r.toml:6:17: error: role `mayor`"), "{errors:?}");
    }
}
