//! What a district's standby evaluator needs to judge this box's sensors with their own 4G link
//! while the box is down (`[cluster] sensors_via_hub`, docs/district.md): the rule engine's
//! state of those sensors, and the district stream's sequence of the last of their readings that
//! state judged. The pipeline offers a new copy every [`OFFER_EVERY`] once such a reading was
//! judged since the last; the district link puts it in the district's KV
//! (`crate::cluster::standby`).
//!
//! Invariant: a copy is offered only once every alert judged before it is journaled, so the
//! standby never takes over a state that already saw an alarm this box could lose with a crash.

use gridwatch_rules::snapshot::Snapshot;
use gridwatch_rules::{Engine, SubjectId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a new copy may be offered.
pub const OFFER_EVERY: Duration = Duration::from_secs(5);

/// The state of the sensors heard through the district, and how far into its stream it goes.
#[derive(Debug)]
pub struct JudgedCopy {
    /// Inventory positions of the sensors heard through the district, in order.
    pub sensors: Vec<usize>,
    pub state: Snapshot,
    /// The stream sequence of the last of their readings this state judged.
    pub covered: u64,
}

/// The pipeline's side: which sensors came through the district and what it judged last.
#[derive(Debug)]
pub struct StandbyTap {
    heard: BTreeSet<usize>,
    covered: Option<u64>,
    offered: Option<u64>,
    copies: watch::Sender<Option<Arc<JudgedCopy>>>,
}

impl StandbyTap {
    /// A tap, and where its copies are read.
    pub fn new() -> (StandbyTap, watch::Receiver<Option<Arc<JudgedCopy>>>) {
        let (copies, receiver) = watch::channel(None);
        (StandbyTap { heard: BTreeSet::new(), covered: None, offered: None, copies }, receiver)
    }

    /// A reading of `sensor` at stream sequence `seq` was judged (or refused by the engine,
    /// which a standby on the same state would do too).
    pub fn judged(&mut self, sensor: usize, seq: u64) {
        self.heard.insert(sensor);
        self.covered = Some(self.covered.map_or(seq, |covered| covered.max(seq)));
    }

    /// Whether something was judged since the last copy.
    pub fn moved(&self) -> bool {
        self.covered != self.offered
    }

    /// Offers the engine's state of the sensors heard so far (call only once the journal has
    /// caught up with the alerts judged before it).
    pub fn offer(&mut self, engine: &Engine) {
        let Some(covered) = self.covered else { return };
        let sensors: Vec<usize> = self.heard.iter().copied().collect();
        let subjects: Vec<SubjectId> = sensors.iter().map(|&s| SubjectId(s)).collect();
        let copy = JudgedCopy { state: engine.snapshot_of(&subjects), sensors, covered };
        self.copies.send_replace(Some(Arc::new(copy)));
        self.offered = Some(covered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwatch_rules::{RuleSet, RuleSource, SensorKind, Subject};

    #[test]
    fn a_copy_names_the_sensors_heard_and_the_last_sequence_judged() {
        let rules =
            RuleSet::compile(&[RuleSource { name: "t".into(), text: "[[rule]]\nid = \"hi\"\nvalue = \"v\"\nabove = 1\nseverity = \"warning\"\n".into() }])
                .unwrap();
        let subject = |id: &str| Subject {
            id: id.into(),
            kind: SensorKind::Water,
            site: "s".into(),
            building: None,
            grid: None,
            tags: Default::default(),
            interval_ms: 60_000,
        };
        let engine = Engine::new(rules, &[subject("a"), subject("b"), subject("c")]);
        let (mut tap, copies) = StandbyTap::new();
        assert!(!tap.moved());
        tap.offer(&engine);
        assert!(copies.borrow().is_none(), "nothing heard, nothing offered");
        tap.judged(2, 40);
        tap.judged(0, 41);
        assert!(tap.moved());
        tap.offer(&engine);
        assert!(!tap.moved());
        let copy = copies.borrow().clone().unwrap();
        assert_eq!((copy.sensors.clone(), copy.covered), (vec![0, 2], 41));
        assert_eq!(copy.state.subjects.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
