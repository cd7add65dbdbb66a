//! What a district's standby evaluator needs to judge this box's sensors with their own 4G link
//! while the box is down (`[cluster] sensors_via_hub`, docs/district.md): the rule engine's
//! state of those sensors, and the district stream's sequence of the last of their readings that
//! state judged. The pipeline offers a new copy at most every `[cluster] standby_copy_secs` (each
//! crosses the box's 4G link) once such a reading was judged since the last; the district link
//! puts it in the district's KV (`crate::cluster::standby`).
//!
//! After a restart the sensors heard through the district before it are known from the copy in
//! KV ([`StandbyTap::earlier`], filled by the district link): a 4G sensor that reports every
//! ten minutes is in the next copy even if another one reported first.
//!
//! Invariant: a copy is offered only once every alert judged before it is journaled, so the
//! standby never takes over a state that already saw an alarm this box could lose with a crash.

use gridwatch_rules::snapshot::Snapshot;
use gridwatch_rules::{Engine, SubjectId};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

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
    /// How often a new copy may be offered.
    pub every: Duration,
    heard: BTreeSet<usize>,
    /// Ids of the sensors the box's previous copy judged (read from KV after a restart).
    earlier: Arc<Mutex<Vec<String>>>,
    covered: Option<u64>,
    offered: Option<u64>,
    copies: watch::Sender<Option<Arc<JudgedCopy>>>,
}

impl StandbyTap {
    /// A tap, and where its copies are read.
    pub fn new(every: Duration) -> (StandbyTap, watch::Receiver<Option<Arc<JudgedCopy>>>) {
        let (copies, receiver) = watch::channel(None);
        (StandbyTap { every, heard: BTreeSet::new(), earlier: Arc::default(), covered: None, offered: None, copies }, receiver)
    }

    /// Where the district link puts the ids of the sensors the previous copy judged.
    pub fn earlier(&self) -> Arc<Mutex<Vec<String>>> {
        self.earlier.clone()
    }

    /// A reading of `sensor` at stream sequence `seq` was judged (or refused by the engine,
    /// which a standby on the same state would do too).
    pub fn judged(&mut self, sensor: usize, seq: u64) {
        self.heard.insert(sensor);
        self.covered = Some(self.covered.map_or(seq, |covered| covered.max(seq)));
    }

    /// Whether something was judged since the last copy, or sensors of the copy before a
    /// restart are still to be added.
    pub fn moved(&self) -> bool {
        self.covered.is_some() && (self.covered != self.offered || self.earlier.lock().is_ok_and(|earlier| !earlier.is_empty()))
    }

    /// Offers the engine's state of the sensors heard so far, and of those the previous copy
    /// judged (`inventory`: the sensors' ids by position; call only once the journal has caught
    /// up with the alerts judged before it).
    pub fn offer(&mut self, engine: &Engine, inventory: &[crate::config::SensorConfig]) {
        let Some(covered) = self.covered else { return };
        if let Ok(mut earlier) = self.earlier.lock() {
            for id in earlier.drain(..) {
                self.heard.extend(inventory.iter().position(|sensor| *sensor.id == *id));
            }
        }
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
        let inventory = ["a", "b", "c"].map(|id| crate::config::SensorConfig::test_tilt(id, "s"));
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        assert!(!tap.moved());
        tap.offer(&engine, &inventory);
        assert!(copies.borrow().is_none(), "nothing heard, nothing offered");
        tap.judged(2, 40);
        tap.judged(0, 41);
        assert!(tap.moved());
        tap.offer(&engine, &inventory);
        assert!(!tap.moved());
        let copy = copies.borrow().clone().unwrap();
        assert_eq!((copy.sensors.clone(), copy.covered), (vec![0, 2], 41));
        assert_eq!(copy.state.subjects.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        // After a restart: `b` was in the copy before it, `c` reports first.
        let (mut tap, copies) = StandbyTap::new(Duration::from_secs(5));
        tap.earlier().lock().unwrap().extend(["b".to_string(), "gone".to_string()]);
        tap.judged(2, 42);
        tap.offer(&engine, &inventory);
        assert_eq!(copies.borrow().clone().unwrap().sensors, [1, 2], "the sensor heard before the restart stays in the copy");
    }
}
