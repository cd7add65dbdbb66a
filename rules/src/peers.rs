//! A box judged against the other boxes of its building (`peers = "building"` on a rule): how
//! far the box moved that the building's other boxes did not. A wall's weather moves the boxes of
//! one building alike, so what is left is what this box does on its own: a box drifting away
//! from boxes that agree, or one wall leaning alone.
//!
//! The value is the smaller of two: the rule's transform (`change_over`) of the box's own stage
//! value, and the transform of that value less the median of the latest stage values of the
//! building's other boxes ([`reference`]). The second alone would blame a quiet box for its
//! neighbour's fault (on a building of two, when the faulty box falls back, the quiet one seems
//! to rise against it); the first says the box itself moved. Rules with `peers` are judged
//! upwards (`above`, `at_least`), so the smaller is the cautious one.
//!
//! A box's own stage value is kept in its check state ([`PeerCheck`]); the engine hands each
//! box's check the reference from its peers ([`reference`]) before judging it.
//!
//! Invariants: a peer counts only with a value judged within [`PEER_FRESH_MS`] of the box's
//! reading (a silent box is no reference); with no peer counting the rule yields no value, so a
//! box alone on its building is never judged this way.

use crate::ladder::LadderState;
use crate::last_value::{LastValue, ReportedValue};
use crate::signal::TransformState;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// How far apart in time (either way) a peer's latest reading and the box's may lie for the
/// peer to count: two hours, more than the longest report interval the smoothing windows assume,
/// less than a wall's weather takes to move the boxes apart.
pub const PEER_FRESH_MS: Millis = 2 * 3_600_000;

/// One box's state under a `peers` rule (boxed in the engine's check state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerCheck {
    /// The box's latest stage value: what its peers compare themselves with.
    pub own: LastValue,
    /// The transform of the box's own value.
    pub own_transform: TransformState,
    /// The transform of the box's value less its peers'.
    pub transform: TransformState,
    pub ladder: LadderState,
    /// The latest difference judged (shown in events).
    pub last_value: ReportedValue,
}

/// One peer as the reference sees it: its latest stage value and when it judged its latest
/// reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    pub own: Option<f64>,
    pub last_at: Option<Millis>,
}

/// What the rule judges: the smaller of the box's own movement and its movement against its
/// peers (`None` until both are known).
pub fn judged(own: Option<f64>, against_peers: Option<f64>) -> Option<f64> {
    Some(own?.min(against_peers?))
}

/// The median of the fresh peers' values at `at` (`None`: no peer counts).
pub fn reference(peers: impl Iterator<Item = Peer>, at: Millis) -> Option<f64> {
    let mut values: smallvec::SmallVec<[f64; 4]> = peers
        .filter(|peer| peer.last_at.is_some_and(|last| (last - at).abs() <= PEER_FRESH_MS))
        .filter_map(|peer| peer.own.filter(|v| v.is_finite()))
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    fn peer(own: f64, last_at: Millis) -> Peer {
        Peer { own: Some(own), last_at: Some(last_at) }
    }

    #[test]
    fn the_reference_is_the_median_of_the_other_boxes() {
        assert_eq!(reference([peer(0.2, 0)].into_iter(), 0), Some(0.2), "one other box: its value");
        assert_eq!(reference([peer(0.2, 0), peer(0.4, 0)].into_iter(), 0), Some(0.30000000000000004), "two: their mean");
        assert_eq!(reference([peer(0.2, 0), peer(9.0, 0), peer(0.3, 0)].into_iter(), 0), Some(0.3), "three: one odd box does not move it");
    }

    #[test]
    fn a_quiet_box_is_not_blamed_for_its_neighbour() {
        // Building of two: the neighbour fell back 0.5 while this box stood still.
        assert_eq!(judged(Some(0.02), Some(0.52)), Some(0.02));
        // This box drifted 0.5 while the neighbour stood still.
        assert_eq!(judged(Some(0.5), Some(0.49)), Some(0.49));
        // The weather moved both alike.
        assert_eq!(judged(Some(0.4), Some(0.03)), Some(0.03));
        assert_eq!(judged(None, Some(0.5)), None, "no value until both are known");
    }

    #[test]
    fn a_silent_or_unlearned_peer_is_no_reference() {
        assert_eq!(reference(std::iter::empty(), 0), None, "a box alone on its building");
        assert_eq!(reference([peer(0.2, 0)].into_iter(), 3 * HOUR), None, "silent for three hours");
        assert_eq!(reference([peer(0.2, 5 * HOUR)].into_iter(), 2 * HOUR), None, "a peer whose clock runs hours ahead");
        assert_eq!(reference([Peer { own: None, last_at: Some(0) }, peer(0.5, HOUR)].into_iter(), 2 * HOUR), Some(0.5), "no value yet");
        assert_eq!(reference([peer(f64::NAN, 0)].into_iter(), 0), None);
    }
}
