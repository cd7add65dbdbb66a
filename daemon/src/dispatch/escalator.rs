//! Turns due escalation clocks into notifications: who is on duty or escalated to (from the
//! roster), and what the reminder (催办) or escalation (督办) says, in English and Chinese.
//! Pure: the dispatcher keeps the ladders' ages (monotonic) and journals what this returns.
//! Steps are decided by age, never by wall-clock time, so a clock step brings at most the one
//! step that was due anyway.

use super::policy::{steps_due, Deadline, Progress, Step};
use super::roster::Member;
use super::Dispatch;
use crate::alert::{Alert, Event};
use crate::dispatch::incident::State;
use crate::store::{DueEscalation, EscalationStep};

/// What to do for one due escalation.
#[derive(Debug, Clone)]
pub struct Decision {
    pub steps: Vec<EscalationStep>,
    pub progress: Progress,
    /// The ladder's age at which to look again; `None`: it stops (resolved, closed, or nothing
    /// more is due).
    pub next_due_age_ms: Option<i64>,
}

impl Dispatch {
    /// The people to name on a rule event of `grid` at `now_ms` (the people on duty).
    pub fn on_duty(&self, grid: Option<&str>, now_ms: i64) -> Vec<&Member> {
        match grid {
            Some(grid) => self.roster.on_duty(grid, utc(now_ms)),
            None => Vec::new(),
        }
    }

    /// When a new incident's first step falls due (`now_ms` plus its first step's age), if its
    /// severity has a policy.
    pub fn first_due(&self, severity: &str, now_ms: i64) -> Option<i64> {
        let policy = self.policy(severity)?;
        steps_due(policy, now_ms, State::Open, Progress::default(), now_ms).2
    }

    /// Decides the steps of a ladder that has run `age_ms`; `now_ms` picks the people on duty,
    /// `at` is the time people read on its notifications (see `Clock::label`).
    pub fn decide(&self, due: &DueEscalation, age_ms: i64, now_ms: i64, at: &str) -> Decision {
        let state: State = due.state.parse().unwrap_or(State::Closed);
        let (Some(policy), Some(template)) = (self.policy(&due.severity), due.last_alert.as_ref()) else {
            return Decision { steps: Vec::new(), progress: due.progress, next_due_age_ms: None };
        };
        let (steps, progress, next_due_age_ms) = steps_due(policy, 0, state, due.progress, age_ms);
        let grid = due.grid.as_deref();
        // While the box's clock is not set, a step happens at its alarm's time plus the ladder's
        // age: on the alarm's own time (the device's, when it sent one), never the unset clock's
        // — people read "time unknown", and a receiver sorting on `at_ms` read 1970. Whose shift
        // it is, by the same time when it is the device's, as the alarm itself was addressed
        // (the box's clock may be days off).
        let unset = at == crate::clock::TIME_UNKNOWN;
        let step_ms = if unset { template.at_ms + age_ms } else { now_ms };
        let shift_ms = if unset && template.at != crate::clock::TIME_UNKNOWN { step_ms } else { now_ms };
        let steps = steps
            .into_iter()
            .map(|step| {
                let on_duty = self.on_duty(grid, shift_ms);
                match step {
                    Step::Remind { count } => {
                        let names = names(&on_duty);
                        let age = minutes(age_ms);
                        let en = format!(
                            "Reminder {count}: incident {} is not accepted yet, open {age} min. On duty: {}. {}{}",
                            number(due.incident_id, false),
                            or_dash(&names),
                            since_normal(due, false),
                            template.message()
                        );
                        let zh = format!(
                            "催办（第{count}次）：事件{}尚未接单，已{age}分钟。值班：{}。{}{}",
                            number(due.incident_id, true),
                            or_dash(&names),
                            since_normal(due, true),
                            zh_message(template)
                        );
                        EscalationStep {
                            alert: notification(template, Event::Reminder, (step_ms, at), en, zh, &on_duty),
                            audit: format!("reminded {}", or_dash(&names)),
                        }
                    }
                    Step::Escalate { deadline, level, roles } => {
                        let mut people = grid.map(|g| self.roster.with_roles(g, &roles)).unwrap_or_default();
                        for member in on_duty {
                            if !people.iter().any(|p| p.id == member.id) {
                                people.push(member);
                            }
                        }
                        let names = names(&people);
                        let within = policy_within(policy, deadline);
                        let en = format!(
                            "Escalated (level {level}): incident {} was not {} within {} — {} {}{}",
                            number(due.incident_id, false),
                            deadline.as_str(),
                            span(within, false),
                            told(&roles, &people, false),
                            since_normal(due, false),
                            template.message()
                        );
                        let zh = format!(
                            "督办（第{level}级）：事件{}超过{}未{}，{}{}{}",
                            number(due.incident_id, true),
                            span(within, true),
                            zh_deadline(deadline),
                            told(&roles, &people, true),
                            since_normal(due, true),
                            zh_message(template)
                        );
                        EscalationStep {
                            alert: notification(template, Event::Escalated, (step_ms, at), en, zh, &people),
                            audit: format!("escalated ({}) to {}", deadline.as_str(), or_dash(&names)),
                        }
                    }
                }
            })
            .collect();
        Decision { steps, progress, next_due_age_ms }
    }
}

fn policy_within(policy: &super::policy::Policy, deadline: Deadline) -> i64 {
    match deadline {
        Deadline::Accept => policy.accept_within_ms,
        Deadline::OnSite => policy.on_site_within_ms,
        Deadline::Resolve => policy.resolve_within_ms,
    }
    .unwrap_or(0)
}

/// The incident's last rule event re-worded as a reminder or escalation happening at `at_ms`.
fn notification(template: &Alert, event: Event, (at_ms, at): (i64, &str), en: String, zh: String, people: &[&Member]) -> Alert {
    let mut alert = template.clone();
    alert.event = event;
    alert.at_ms = at_ms;
    alert.at = at.to_string();
    alert.previous_severity = None;
    alert.messages = [("en".to_string(), en), ("zh".to_string(), zh)].into_iter().collect();
    alert.recipients = people.iter().map(|m| m.name.clone()).collect();
    alert.mentions = people.iter().filter(|m| !m.phone.is_empty()).map(|m| m.phone.clone()).collect();
    alert
}

fn names(people: &[&Member]) -> String {
    people.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

fn minutes(ms: i64) -> i64 {
    (ms.max(0) + 30_000) / 60_000
}

/// A policy's time limit in words: whole minutes when it is minutes, else seconds.
fn span(ms: i64, zh: bool) -> String {
    match (ms % 60_000 == 0, zh) {
        (true, false) => format!("{} min", ms / 60_000),
        (true, true) => format!("{}分钟", ms / 60_000),
        (false, false) => format!("{} s", ms / 1000),
        (false, true) => format!("{}秒", ms / 1000),
    }
}

/// Before the alarm's own sentence, when the sensor is back to normal: that it is, and that the
/// sentence is what it said then (a reminder quoted a recovered wall's alarm value as if it stood).
fn since_normal(due: &DueEscalation, chinese: bool) -> &'static str {
    match (due.sensor_normal, chinese) {
        (false, _) => "",
        (true, true) => "读数现已恢复正常，仍需有人到场确认。告警时：",
        (true, false) => "The reading is back to normal now; someone still has to look. When it alarmed: ",
    }
}

fn zh_message(alert: &Alert) -> &str {
    alert.messages.get("zh").map_or_else(|| alert.message(), String::as_str)
}

fn zh_deadline(deadline: Deadline) -> &'static str {
    match deadline {
        Deadline::Accept => "接单",
        Deadline::OnSite => "到场",
        Deadline::Resolve => "办结",
    }
}

fn zh_role(role: &str) -> &str {
    match role {
        "worker" => "网格员",
        "grid_leader" => "网格长",
        "secretary" => "社区书记",
        "street_office" => "街道办",
        "housing_office" => "房屋安全办",
        other => other,
    }
}

/// Who an escalation told, role by role, and which of its roles nobody in the roster holds (an
/// outside tester's leader read "已通知网格长、社区书记（陈刚, 王芳）" with no secretary in the
/// roster): "已通知网格长陈刚（名册中没有社区书记，未能通知），并告知值班的王芳。".
fn told(roles: &[String], people: &[&Member], chinese: bool) -> String {
    let role_name = |role: &str| if chinese { zh_role(role).to_string() } else { role.to_string() };
    let holding = |role: &String| people.iter().filter(|m| m.role == *role).map(|m| m.name.as_str()).collect::<Vec<_>>();
    let named: Vec<String> = roles
        .iter()
        .filter(|role| !holding(role).is_empty())
        .map(|role| {
            // An office's account named as its role ("街道办") is told once, not "街道办街道办".
            let names: Vec<&str> = holding(role).into_iter().filter(|name| *name != role_name(role)).collect();
            match (names.is_empty(), chinese) {
                (true, _) => role_name(role),
                (false, true) => format!("{}{}", role_name(role), names.join("、")),
                (false, false) => format!("{} {}", role_name(role), names.join(", ")),
            }
        })
        .collect();
    let missing: Vec<String> = roles.iter().filter(|role| holding(role).is_empty()).map(|role| role_name(role)).collect();
    let others: Vec<&str> = people.iter().filter(|m| !roles.contains(&m.role)).map(|m| m.name.as_str()).collect();
    let mut out = if chinese {
        format!("已通知{}", if named.is_empty() { "：无人".to_string() } else { named.join("、") })
    } else {
        format!("now also told: {}", if named.is_empty() { "nobody".to_string() } else { named.join(", ") })
    };
    if !missing.is_empty() {
        out += &if chinese {
            format!("（名册中没有{}，未能通知）", missing.join("、"))
        } else {
            format!(" (no {} in the roster: not told)", missing.join(", "))
        };
    }
    if !others.is_empty() {
        out += &if chinese { format!("，并告知值班的{}", others.join("、")) } else { format!("; on duty: {}", others.join(", ")) };
    }
    out + if chinese { "。" } else { "." }
}

fn utc(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// "#12"; an alarm the store could not record (its ladder runs in memory, under an id below
/// zero) has no number people could look up.
fn number(incident: i64, chinese: bool) -> String {
    match (incident >= 0, chinese) {
        (true, _) => format!("#{incident}"),
        (false, true) => "（未编号：本机存储故障）".into(),
        (false, false) => "(unnumbered: this box's store failed)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample_alert;
    use crate::dispatch::policy::Progress;

    const ROSTER: &str = r#"
[[grid]]
id = "grid-3"
[[member]]
id = "wang"
name = "王芳"
role = "worker"
phone = "13800000001"
grids = ["grid-3"]
[[member]]
id = "chen"
name = "陈刚"
role = "grid_leader"
phone = "13800000002"
grids = ["grid-3"]
[[member]]
id = "sun"
role = "secretary"
[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
"#;

    fn due(state: &str, progress: Progress) -> DueEscalation {
        let mut template = sample_alert("fired", 7.3);
        template.grid = Some("grid-3".into());
        DueEscalation {
            incident_id: 12,
            grid: Some("grid-3".into()),
            armed_ms: 0,
            age_ms: 0,
            aged_at_ms: None,
            next_due_age_ms: 0,
            progress,
            state: state.into(),
            severity: "danger".into(),
            sensor_normal: false,
            last_alert: Some(template),
        }
    }

    const MIN: i64 = 60_000;
    /// 2026-11-23 (a Monday) noon in China.
    const NOON: i64 = 1_795_406_400_000;

    #[test]
    fn a_reminder_names_and_mentions_the_worker_on_duty() {
        let dispatch = Dispatch::parse("r.toml", ROSTER).unwrap();
        let due = due("open", Progress::default());
        let decision = dispatch.decide(&due, 5 * MIN, NOON + 5 * MIN, "2026-11-23T04:05:00.000Z");
        assert_eq!(decision.steps.len(), 1);
        let alert = &decision.steps[0].alert;
        assert_eq!((alert.event.as_str(), alert.at_ms, alert.at.as_str()), ("reminder", NOON + 5 * MIN, "2026-11-23T04:05:00.000Z"));
        assert_eq!(alert.mentions, vec!["13800000001"]);
        assert!(alert.messages["en"].starts_with("Reminder 1: incident #12 is not accepted yet, open 5 min. On duty: 王芳."), "{}", alert.messages["en"]);
        assert!(alert.messages["zh"].starts_with("催办（第1次）：事件#12尚未接单，已5分钟。值班：王芳。"), "{}", alert.messages["zh"]);
        assert_eq!(decision.next_due_age_ms, Some(10 * MIN));
    }

    #[test]
    fn a_reminder_about_a_sensor_back_to_normal_says_so_before_the_alarm_s_words() {
        let dispatch = Dispatch::parse("r.toml", ROSTER).unwrap();
        let mut due = due("open", Progress::default());
        due.sensor_normal = true;
        let decision = dispatch.decide(&due, 5 * MIN, NOON + 5 * MIN, "");
        let zh = &decision.steps[0].alert.messages["zh"];
        let expected = format!(
            "催办（第1次）：事件#12尚未接单，已5分钟。值班：王芳。读数现已恢复正常，仍需有人到场确认。告警时：{}",
            zh_message(due.last_alert.as_ref().unwrap())
        );
        assert_eq!(zh, &expected);
        let decision = dispatch.decide(&due, 10 * MIN, NOON + 10 * MIN, "");
        assert!(
            decision.steps[0].alert.messages["en"].contains("; on duty: 王芳. The reading is back to normal now; someone still has to look. When it alarmed: ")
        );
    }

    #[test]
    fn an_escalation_adds_the_roles_of_its_level() {
        let dispatch = Dispatch::parse("r.toml", ROSTER).unwrap();
        let due = due("open", Progress { reminders: 1, ..Progress::default() });
        let decision = dispatch.decide(&due, 10 * MIN, NOON + 10 * MIN, "");
        let alert = &decision.steps[0].alert;
        assert_eq!(alert.event, Event::Escalated);
        assert_eq!(alert.recipients, vec!["陈刚", "sun", "王芳"]);
        assert_eq!(alert.mentions, vec!["13800000002", "13800000001"]);
        assert!(
            alert.messages["zh"].starts_with("督办（第1级）：事件#12超过10分钟未接单，已通知网格长陈刚、社区书记sun，并告知值班的王芳。north-lane"),
            "{}",
            alert.messages["zh"]
        );
        assert_eq!(decision.steps[0].audit, "escalated (accepted) to 陈刚, sun, 王芳");
    }

    /// An outside tester's roster named the street office's account "街道办": the escalation read
    /// "已通知街道办街道办".
    #[test]
    fn an_office_named_as_its_role_is_named_once() {
        let office =
            ROSTER.replace("[[member]]\nid = \"sun\"\nrole = \"secretary\"\n", "[[member]]\nid = \"sun\"\nname = \"社区书记\"\nrole = \"secretary\"\n");
        assert_ne!(office, ROSTER, "the roster names its secretary");
        let dispatch = Dispatch::parse("r.toml", &office).unwrap();
        let due = due("open", Progress { reminders: 1, ..Progress::default() });
        let alert = &dispatch.decide(&due, 10 * MIN, NOON + 10 * MIN, "").steps[0].alert;
        assert!(alert.messages["zh"].contains("已通知网格长陈刚、社区书记，并告知值班的王芳。"), "{}", alert.messages["zh"]);
    }

    #[test]
    fn an_escalation_says_which_of_its_roles_nobody_holds() {
        let without_secretary = ROSTER.replace("[[member]]\nid = \"sun\"\nrole = \"secretary\"\n", "");
        let dispatch = Dispatch::parse("r.toml", &without_secretary).unwrap();
        let due = due("open", Progress { reminders: 1, ..Progress::default() });
        let alert = &dispatch.decide(&due, 10 * MIN, NOON + 10 * MIN, "").steps[0].alert;
        assert!(
            alert.messages["zh"].starts_with("督办（第1级）：事件#12超过10分钟未接单，已通知网格长陈刚（名册中没有社区书记，未能通知），并告知值班的王芳。"),
            "{}",
            alert.messages["zh"]
        );
        assert!(
            alert.messages["en"].contains("now also told: grid_leader 陈刚 (no secretary in the roster: not told); on duty: 王芳."),
            "{}",
            alert.messages["en"]
        );
    }

    #[test]
    fn a_resolved_incident_stops_its_clocks() {
        let dispatch = Dispatch::default();
        let decision = dispatch.decide(&due("resolved", Progress::default()), 500 * MIN, NOON, "");
        assert!(decision.steps.is_empty());
        assert_eq!(decision.next_due_age_ms, None);
    }

    #[test]
    fn a_ladder_that_ran_thirty_seconds_owes_nothing_whatever_the_wall_clock_says() {
        let dispatch = Dispatch::parse("r.toml", ROSTER).unwrap();
        let due = due("open", Progress::default());
        let two_days_later = NOON + 2 * 24 * 60 * MIN;
        let decision = dispatch.decide(&due, 30_000, two_days_later, "");
        assert!(decision.steps.is_empty(), "a clock step is no reason to remind or escalate");
        assert_eq!(decision.next_due_age_ms, Some(5 * MIN));
    }

    /// Nor a time of the unset clock for a receiving system: `at_ms` is the alarm's plus the
    /// ladder's age.
    #[test]
    fn an_unset_clock_puts_no_time_on_a_reminder() {
        let dispatch = Dispatch::parse("r.toml", ROSTER).unwrap();
        let due = due("open", Progress::default());
        let decision = dispatch.decide(&due, 5 * MIN, 86_400_000, crate::clock::TIME_UNKNOWN);
        let alarm_ms = due.last_alert.as_ref().unwrap().at_ms;
        assert_eq!((decision.steps[0].alert.at.as_str(), decision.steps[0].alert.at_ms), ("time unknown", alarm_ms + 5 * MIN));
    }

    /// A box whose clock is days off and not set: the reminder names whoever is on shift at the
    /// alarm's device time plus the ladder's age, as the alarm did, not at the box's clock.
    #[test]
    fn an_unset_clock_names_the_shift_of_the_alarm_s_device_time() {
        let roster = ROSTER.replace("days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]", "days = [\"mon\"]");
        let dispatch = Dispatch::parse("r.toml", &roster).unwrap();
        let mut due = due("open", Progress::default());
        let template = due.last_alert.as_mut().unwrap();
        (template.at_ms, template.at) = (NOON, "2026-11-23T04:00:00.000Z".into());
        let four_days_behind = NOON - 4 * 24 * 60 * MIN;
        let decision = dispatch.decide(&due, 5 * MIN, four_days_behind, crate::clock::TIME_UNKNOWN);
        assert_eq!(decision.steps[0].alert.recipients, vec!["王芳"], "Monday's shift, as the alarm's time says");
        let decision = dispatch.decide(&due, 5 * MIN, four_days_behind, "2026-11-19T04:05:00.000Z");
        assert_eq!(decision.steps[0].alert.recipients, vec!["陈刚"], "a set clock is believed: nobody on shift that Thursday, the grid leader");
    }
}
