//! Which steps an incident's state allows on the worker's page. The page shows exactly these
//! buttons, and a posted step is checked against the same list, so what a worker can press and
//! what the box accepts never differ.
//!
//! For a red (danger) incident, 办结 needs 到场 first and a note saying what was done; 回访 and
//! 关闭 are the grid leader's; a comment and a follow-up need words.

use super::form::Posted;
use crate::dispatch::incident::{Action, State};
use crate::dispatch::roster::Roster;
use crate::store::Work;

/// A step as the page offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The button's `value`.
    pub name: &'static str,
    pub label: &'static str,
    /// The step the state leads to next (drawn as the main button).
    pub main: bool,
}

const fn offer(name: &'static str, label: &'static str, main: bool) -> Offer {
    Offer { name, label, main }
}

/// Whether an incident of this (worst) severity is red: its resolve needs on site and a note.
pub fn is_red(worst_severity: &str) -> bool {
    worst_severity == "danger"
}

/// The steps `state` allows, the main one first; `leader`: the viewer leads the incident's grid.
pub fn offered(state: State, red: bool, leader: bool) -> Vec<Offer> {
    let hand_over = [offer("transfer", "转交", false), offer("helper", "加协助人", false), offer("comment", "留言", false)];
    let mut steps = match state {
        State::Open => vec![offer("accept", "接单", true), offer("on_site", "到场", false)],
        State::Accepted => vec![offer("on_site", "到场", true)],
        State::OnSite => vec![offer("resolve", "办结", true)],
        State::Resolved if leader => vec![offer("follow_up", "回访", true), offer("close", "关闭", false), offer("comment", "留言", false)],
        State::Resolved => vec![offer("comment", "留言", false)],
        State::Closed => Vec::new(),
    };
    if matches!(state, State::Open | State::Accepted) && !red {
        steps.push(offer("resolve", "办结", false));
    }
    if matches!(state, State::Open | State::Accepted | State::OnSite) {
        steps.extend(hand_over);
    }
    steps
}

/// The step's button name.
pub fn name(work: &Work) -> &'static str {
    match work {
        Work::Move(action) => action.as_str(),
        Work::Comment => "comment",
        Work::Transfer { .. } => "transfer",
        Work::AddHelper { .. } => "helper",
        Work::FollowUp => "follow_up",
    }
}

/// The step a posted form asks for; a hand-over or helper must name a roster member.
pub fn work(posted: &Posted, roster: &Roster, grid: Option<&str>) -> Result<Work, String> {
    let person = || -> Result<String, String> {
        let chosen = posted.person.trim();
        let member = roster.members.iter().find(|m| m.id == chosen && (m.grids.is_empty() || grid.is_none_or(|g| m.grids.iter().any(|mine| mine == g))));
        member.map(|m| m.id.clone()).ok_or_else(|| "请先选择人员".to_string())
    };
    Ok(match posted.action.as_str() {
        "accept" => Work::Move(Action::Accept),
        "on_site" => Work::Move(Action::OnSite),
        "resolve" => Work::Move(Action::Resolve),
        "close" => Work::Move(Action::Close),
        "comment" => Work::Comment,
        "follow_up" => Work::FollowUp,
        "transfer" => Work::Transfer { person: person()? },
        "helper" => Work::AddHelper { person: person()? },
        other => return Err(format!("未知操作：{other}")),
    })
}

/// Why `work` cannot be done now, in words for the worker; `note` is trimmed.
pub fn check(work: &Work, state: State, worst_severity: &str, note: &str, leader: bool) -> Result<(), String> {
    let red = is_red(worst_severity);
    let wanted = name(work);
    if !offered(state, red, leader).iter().any(|o| o.name == wanted) {
        return Err(match (work, state) {
            (Work::Move(Action::Resolve), State::Open | State::Accepted) => "红色预警须先到场，再写明处理情况办结".to_string(),
            (Work::Move(Action::Close) | Work::FollowUp, State::Resolved) => "回访和关闭由网格长进行".to_string(),
            _ => format!("事件{}，不能{}", super::labels::state_label(state.as_str()), super::labels::action_label(wanted)),
        });
    }
    match work {
        Work::Move(Action::Resolve) if red && note.is_empty() => Err("红色预警办结须写明处理情况".into()),
        Work::Comment if note.is_empty() => Err("请先写留言内容".into()),
        Work::FollowUp if note.is_empty() => Err("请写明回访情况".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(state: State, red: bool, leader: bool) -> Vec<&'static str> {
        offered(state, red, leader).iter().map(|o| o.name).collect()
    }

    #[test]
    fn the_buttons_follow_the_state() {
        assert_eq!(names(State::Open, false, false), ["accept", "on_site", "resolve", "transfer", "helper", "comment"]);
        assert_eq!(names(State::Accepted, true, false), ["on_site", "transfer", "helper", "comment"], "red: no resolve before on site");
        assert_eq!(names(State::OnSite, true, false), ["resolve", "transfer", "helper", "comment"]);
        assert_eq!(names(State::Resolved, true, false), ["comment"], "no accept, on site or resolve after resolve");
        assert_eq!(names(State::Resolved, true, true), ["follow_up", "close", "comment"]);
        assert!(names(State::Closed, true, true).is_empty());
        assert_eq!(offered(State::Accepted, false, false)[0], Offer { name: "on_site", label: "到场", main: true });
    }

    #[test]
    fn a_red_incident_is_resolved_on_site_and_with_a_note() {
        let resolve = Work::Move(Action::Resolve);
        assert_eq!(check(&resolve, State::Accepted, "danger", "done", false), Err("红色预警须先到场，再写明处理情况办结".into()));
        assert_eq!(check(&resolve, State::OnSite, "danger", "", false), Err("红色预警办结须写明处理情况".into()));
        assert_eq!(check(&resolve, State::OnSite, "danger", "墙体已支撑", false), Ok(()));
        assert_eq!(check(&resolve, State::Accepted, "warning", "", false), Ok(()), "a yellow one may be resolved from the office");
    }

    #[test]
    fn only_the_grid_leader_follows_up_and_closes() {
        assert_eq!(check(&Work::Move(Action::Close), State::Resolved, "danger", "", false), Err("回访和关闭由网格长进行".into()));
        assert_eq!(check(&Work::Move(Action::Close), State::Resolved, "danger", "", true), Ok(()));
        assert_eq!(check(&Work::FollowUp, State::Resolved, "danger", "", true), Err("请写明回访情况".into()));
        assert_eq!(check(&Work::Move(Action::Accept), State::Resolved, "danger", "", true), Err("事件已办结，不能接单".into()));
    }
}
