//! Incidents: one open problem for one (rule, sensor), and what people did about it.
//!
//! ```text
//!   open ──accept──> accepted ──on_site──> on_site ──resolve──> resolved ──close──> closed
//!     └───────────────────── resolve (with a note) ───────────────┘
//! ```
//!
//! Repeated firings update the open incident (count, last value, peak); a severity change
//! updates it. When the sensor clears, the incident is marked "sensor normal": notice and
//! warning incidents then close by themselves, alarm and danger incidents wait for a person to
//! resolve them — a wall that stopped leaning still needs someone to have looked. A rule that
//! fires again within the flap window of its incident closing re-opens the same incident.
//!
//! Invariants: incident ids are never reused; every transition is stored with time, actor and
//! note (the audit trail); at most one incident per (rule, sensor) is not closed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Accepted,
    OnSite,
    Resolved,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Accepted => "accepted",
            State::OnSite => "on_site",
            State::Resolved => "resolved",
            State::Closed => "closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "open" => State::Open,
            "accepted" => State::Accepted,
            "on_site" => State::OnSite,
            "resolved" => State::Resolved,
            "closed" => State::Closed,
            other => return Err(format!("unknown incident state `{other}`")),
        })
    }
}

/// What a person does to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Accept,
    OnSite,
    Resolve,
    Close,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::OnSite => "on_site",
            Action::Resolve => "resolve",
            Action::Close => "close",
        }
    }

    /// The state an action leads to from `from`, or why it cannot be taken.
    pub fn next(self, from: State) -> Result<State, String> {
        use State::*;
        match (self, from) {
            (Action::Accept, Open) => Ok(Accepted),
            (Action::OnSite, Open | Accepted) => Ok(OnSite),
            (Action::Resolve, Open | Accepted | OnSite) => Ok(Resolved),
            (Action::Close, Resolved) => Ok(Closed),
            (action, state) => Err(format!("cannot {} an incident that is {state}", action.as_str().replace('_', " "))),
        }
    }
}

/// Whether a cleared incident of this severity closes by itself.
pub fn closes_when_sensor_clears(severity: &str) -> bool {
    matches!(severity, "notice" | "warning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_loop_in_order() {
        let mut state = State::Open;
        for (action, expected) in
            [(Action::Accept, State::Accepted), (Action::OnSite, State::OnSite), (Action::Resolve, State::Resolved), (Action::Close, State::Closed)]
        {
            state = action.next(state).unwrap();
            assert_eq!(state, expected);
        }
    }

    #[test]
    fn steps_can_be_skipped_forward_but_not_back() {
        assert_eq!(Action::Resolve.next(State::Open), Ok(State::Resolved));
        assert_eq!(Action::OnSite.next(State::Open), Ok(State::OnSite));
        assert_eq!(Action::Accept.next(State::OnSite), Err("cannot accept an incident that is on_site".into()));
        assert!(Action::Resolve.next(State::Closed).is_err());
    }

    #[test]
    fn only_minor_incidents_close_by_themselves() {
        assert!(closes_when_sensor_clears("warning"));
        assert!(!closes_when_sensor_clears("danger"));
        assert!(!closes_when_sensor_clears("alarm"));
    }
}
