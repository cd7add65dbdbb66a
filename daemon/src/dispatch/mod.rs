//! Dispatch: who is told about an incident, and when they are reminded and escalated.
//!
//! - [`roster`]: grids, members, duty shifts — who is on duty for a grid now.
//! - [`policy`]: per-severity deadlines, reminders and escalation roles, and the pure
//!   [`policy::steps_due`] that decides what is due.
//! - [`deferral`]: quiet hours and the daily digest — which alerts may wait, and until when.
//! - [`incident`]: an incident's states and the actions that move it; [`silence`]: maintenance
//!   windows.
//!
//! The dispatcher ([`run_dispatcher`]) arms an escalation when an incident opens, looks at
//! due ones every few seconds, and journals each reminder or escalation with its progress in
//! one transaction before sending it.

pub mod deferral;
mod dispatcher;
#[cfg(test)]
mod dispatcher_tests;
pub mod escalator;
pub mod incident;
pub mod policy;
pub mod roster;
pub mod silence;

pub use dispatcher::{run_dispatcher, DispatcherSetup, Judged};

use policy::Policy;
use roster::Roster;
use std::sync::{Arc, PoisonError, RwLock};

/// The roster and policies in force.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub roster: Roster,
    pub policies: Vec<Policy>,
    pub deferral: deferral::Deferral,
}

impl Default for Dispatch {
    /// No roster (nobody is named; messages go to every channel) and the default policies.
    fn default() -> Dispatch {
        Dispatch { roster: Roster::empty(), policies: policy::default_policies(), deferral: deferral::Deferral::default() }
    }
}

impl Dispatch {
    /// Reads a roster file's members, shifts and policies.
    pub fn parse(name: &str, text: &str) -> Result<Dispatch, roster::RosterErrors> {
        let roster = Roster::parse(name, text);
        let policies = policy::parse_policies(name, text);
        let deferral = deferral::parse(name, text);
        match (roster, policies, deferral) {
            (Ok(roster), Ok(policies), Ok(deferral)) => Ok(Dispatch { roster, policies, deferral }),
            (roster, policies, deferral) => {
                let mut errors = roster.err().map(|e| e.0).unwrap_or_default();
                errors.extend(policies.err().map(|e| e.0).unwrap_or_default());
                errors.extend(deferral.err().map(|e| e.0).unwrap_or_default());
                Err(roster::RosterErrors(errors))
            }
        }
    }

    pub fn policy(&self, severity: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.severity == severity && p.is_active())
    }
}

/// The roster and policies in force, shared by the dispatcher, the pages and the reports. A
/// district roster ([`crate::cluster`]) replaces them while the daemon runs; each reader takes
/// the current one for one decision ([`InForce::get`]), so a replacement never shows half.
#[derive(Debug, Clone)]
pub struct InForce(Arc<RwLock<Arc<Dispatch>>>);

impl InForce {
    pub fn new(dispatch: Dispatch) -> InForce {
        InForce(Arc::new(RwLock::new(Arc::new(dispatch))))
    }

    /// The roster and policies in force now.
    pub fn get(&self) -> Arc<Dispatch> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `dispatch` in force for every reader's next decision.
    pub fn replace(&self, dispatch: Dispatch) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(dispatch);
    }
}

impl Default for InForce {
    fn default() -> InForce {
        InForce::new(Dispatch::default())
    }
}

impl From<Dispatch> for InForce {
    fn from(dispatch: Dispatch) -> InForce {
        InForce::new(dispatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotated_example_roster_is_valid_and_spells_out_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../roster.example.toml");
        let text = std::fs::read_to_string(&path).expect("roster.example.toml");
        let dispatch = Dispatch::parse("roster.example.toml", &text).expect("valid example");
        assert_eq!(dispatch.roster.members.len(), 6);
        for default in policy::default_policies() {
            assert_eq!(dispatch.policy(&default.severity), Some(&default), "the example repeats the default for {}", default.severity);
        }
        assert!(dispatch.policy("notice").is_none(), "blue gets no reminders");
    }
}
