//! Agreement across the sensors of one building (`agree = k` on a rule): the building, not each
//! box, has the incident, and its severity is the level that at least k of its boxes have
//! reached (all of them when it has fewer than k). One faulty box then cannot evacuate a house,
//! while two boxes that agree do.
//!
//! Each box still runs its own ladder (holds, hysteresis); this module only reads the boxes'
//! open severities and turns changes of the k-th highest into `Fired` / `Changed` / `Cleared`
//! for the building. Its state is derived from the boxes' ladders, so it needs no snapshot of
//! its own: after a restore it is recomputed without events — but for the levels found in doubt,
//! which the snapshot keeps with each box (a doubt that has cleared since would otherwise leave
//! the building red in the engine while its people were told orange).

use crate::severity::Severity;
use crate::time::Millis;

/// One building's sensors judged together by one rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Agreement {
    pub rule: usize,
    /// (sensor slot, index of the rule's check in that slot), in sensor order; the first one
    /// names the building's incident.
    pub members: Vec<(usize, usize)>,
    /// How many boxes must agree: the rule's `agree`, at most the number of members.
    pub needed: usize,
    /// The rule's `alone`: the highest severity one box may raise for the building on its own,
    /// while the others do not confirm it (`None`: a lone box raises nothing).
    pub alone: Option<Severity>,
    /// The rules (indices) that put a box in doubt while open on it (the rule's `doubted_by`).
    pub doubters: Vec<usize>,
    /// Per member, the start of the open level found in doubt: it stays in doubt while that
    /// level is open, though the doubt clears (a loose box that rattled, then settled askew).
    /// Saved with each box's state (`crate::snapshot`).
    pub doubted: Vec<Option<Millis>>,
    /// The building's open incident: severity and when it began.
    pub open: Option<(Severity, Millis)>,
    /// The value its last fired or changed event carried (NaN: none since the engine began).
    pub reported: f64,
}

/// One box as the agreement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Vote {
    /// The box's own open level and since when, if any.
    pub open: Option<(Severity, Millis)>,
    /// The box's latest signal value.
    pub value: Option<f64>,
    /// When the box's breach of its open level began.
    pub reached: Option<Millis>,
    /// Its open level came while a rule that doubts the box was open on it (`doubted_by`).
    pub doubted: bool,
}

/// The building's state from its boxes' votes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    pub open: Option<(Severity, Millis)>,
    /// How many boxes are at or above the agreed severity (for a clear: how many are still open).
    pub agreeing: usize,
    /// The k-th highest latest value among the boxes (NaN if fewer have one).
    pub value: f64,
    /// Only boxes in doubt stand at the level the boxes agree on: it was capped at `alone`.
    pub doubted: bool,
}

/// What a change of verdict means for the building's incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    Fired { severity: Severity, since: Millis },
    Changed { severity: Severity, previous: Severity, since: Millis },
    Cleared { severity: Severity, since: Millis },
}

/// The k-th highest open severity among the votes, with since = when the k-th box got there —
/// or, when higher, the highest box's severity capped at `alone` (a lone box's unconfirmed
/// alarm), with since = when that box got there. A level that only boxes in doubt stand at is
/// no agreement: it is a lone box's, capped at `alone` (nothing without it).
pub(crate) fn verdict(votes: &[Vote], needed: usize, alone: Option<Severity>) -> Verdict {
    let mut open: Vec<(Severity, Millis)> = votes.iter().filter_map(|v| v.open).collect();
    open.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut values: Vec<f64> = votes.iter().filter_map(|v| v.value).filter(|v| v.is_finite()).collect();
    values.sort_by(|a, b| b.total_cmp(a));
    let agreed = needed.checked_sub(1).and_then(|k| open.get(k)).map(|&(severity, _)| severity);
    let vouched = |severity| votes.iter().any(|v| !v.doubted && v.open.is_some_and(|(open, _)| open >= severity));
    let doubted = agreed.is_some_and(|severity| !vouched(severity));
    let agreed = agreed.filter(|_| !doubted);
    let lone = alone.zip(open.first()).map(|(cap, &(severity, since))| (severity.min(cap), since));
    if let Some((severity, since)) = lone.filter(|&(severity, _)| agreed.is_none_or(|agreed| severity > agreed)) {
        let agreeing = open.iter().filter(|(s, _)| *s >= severity).count();
        let value = values.first().copied().unwrap_or(f64::NAN);
        return Verdict { open: Some((severity, since)), agreeing, value, doubted };
    }
    let value = needed.checked_sub(1).and_then(|k| values.get(k)).copied().unwrap_or(f64::NAN);
    match agreed {
        Some(severity) => {
            // The building got there when the needed-th box did: the latest of the first ones.
            let mut starts: Vec<Millis> = open.iter().filter(|(s, _)| *s >= severity).map(|&(_, since)| since).collect();
            starts.sort_unstable();
            let since = starts.get(needed - 1).copied().unwrap_or(Millis::MIN);
            Verdict { open: Some((severity, since)), agreeing: starts.len(), value, doubted }
        }
        None => Verdict { open: None, agreeing: open.len(), value, doubted },
    }
}

impl Agreement {
    /// The value an incident's `step` carries, given the boxes' latest `value`: a step up that
    /// comes when the boxes' latest value has fallen back (a lone box's alarm confirmed once the
    /// box that did not agree lost its vote, a day on) carries the value last told, not the
    /// latest (an outside tester read "0.00°" on a red). Remembers it.
    pub fn value_of(&mut self, step: Move, value: f64) -> f64 {
        let told = match step {
            Move::Changed { severity, previous, .. } if severity > previous && self.reported.is_finite() && (value.is_nan() || value < self.reported) => {
                self.reported
            }
            Move::Fired { .. } | Move::Changed { .. } => value,
            Move::Cleared { .. } => return value,
        };
        self.reported = told;
        told
    }

    /// Takes a new verdict; returns the incident's move, if it moved.
    pub fn settle(&mut self, verdict: Verdict) -> Option<Move> {
        let step = match (self.open, verdict.open) {
            (None, Some((severity, since))) => Some(Move::Fired { severity, since }),
            (Some((previous, since)), Some((severity, _))) if severity != previous => Some(Move::Changed { severity, previous, since }),
            (Some((severity, since)), None) => Some(Move::Cleared { severity, since }),
            _ => None,
        };
        match (self.open, verdict.open) {
            // A severity change keeps the incident's start.
            (Some((_, since)), Some((severity, _))) => self.open = Some((severity, since)),
            (_, next) => self.open = next,
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(open: Option<(Severity, Millis)>, value: f64) -> Vote {
        Vote { open, value: Some(value), reached: open.map(|(_, since)| since), doubted: false }
    }

    #[test]
    fn one_box_alone_does_not_decide() {
        let votes = [vote(Some((Severity::Danger, 5)), 9.0), vote(None, 0.2), vote(None, 0.1)];
        let verdict = verdict(&votes, 2, None);
        assert_eq!(verdict.open, None);
        assert_eq!(verdict.value, 0.2);
    }

    #[test]
    fn two_boxes_agree_on_the_lower_of_their_levels() {
        let votes = [vote(Some((Severity::Danger, 5)), 9.0), vote(Some((Severity::Alarm, 7)), 4.5), vote(None, 0.1)];
        let verdict = verdict(&votes, 2, None);
        assert_eq!(verdict.open, Some((Severity::Alarm, 7)));
        assert_eq!((verdict.agreeing, verdict.value), (2, 4.5));
    }

    #[test]
    fn a_lone_box_raises_at_most_its_alone_level_until_another_confirms() {
        let lone = [vote(Some((Severity::Danger, 5)), 9.0), vote(None, 0.2), vote(None, 0.1)];
        let verdict_alone = verdict(&lone, 2, Some(Severity::Alarm));
        assert_eq!(verdict_alone.open, Some((Severity::Alarm, 5)), "unconfirmed: capped at alarm");
        assert_eq!((verdict_alone.agreeing, verdict_alone.value), (1, 9.0));
        let low = [vote(Some((Severity::Warning, 5)), 2.5), vote(None, 0.2)];
        assert_eq!(verdict(&low, 2, Some(Severity::Alarm)).open, Some((Severity::Warning, 5)), "below the cap it keeps its level");
        let confirmed = [vote(Some((Severity::Danger, 5)), 9.0), vote(Some((Severity::Danger, 8)), 8.0), vote(None, 0.1)];
        let verdict_confirmed = verdict(&confirmed, 2, Some(Severity::Alarm));
        assert_eq!(verdict_confirmed.open, Some((Severity::Danger, 8)), "two boxes agree: the full level");
        assert_eq!((verdict_confirmed.agreeing, verdict_confirmed.value), (2, 8.0));
    }

    #[test]
    fn a_level_only_boxes_in_doubt_reach_is_a_lone_box_s() {
        let doubted = |open, value| Vote { doubted: true, ..vote(open, value) };
        let one_box = verdict(&[doubted(Some((Severity::Danger, 5)), 0.6)], 1, Some(Severity::Alarm));
        assert_eq!(one_box.open, Some((Severity::Alarm, 5)), "a house of one box in doubt: capped at alarm");
        assert!(one_box.doubted);
        let vouched = [doubted(Some((Severity::Danger, 5)), 0.6), vote(Some((Severity::Danger, 7)), 0.5)];
        let both = verdict(&vouched, 2, Some(Severity::Alarm));
        assert_eq!(both.open, Some((Severity::Danger, 7)), "a box not in doubt stands at it too: the full level");
        assert!(!both.doubted);
        assert_eq!(verdict(&[doubted(Some((Severity::Danger, 5)), 0.6)], 1, None).open, None, "without `alone`: nothing");
        let undoubted = verdict(&[vote(Some((Severity::Danger, 5)), 0.6)], 1, Some(Severity::Alarm));
        assert_eq!(undoubted.open, Some((Severity::Danger, 5)), "a house of one box follows it");
    }

    #[test]
    fn a_building_with_one_box_follows_it() {
        let verdict = verdict(&[vote(Some((Severity::Warning, 3)), 2.5)], 1, None);
        assert_eq!(verdict.open, Some((Severity::Warning, 3)));
    }

    #[test]
    fn settle_fires_changes_and_clears_once_each() {
        let mut agreement =
            Agreement { rule: 0, members: Vec::new(), needed: 2, alone: None, doubters: Vec::new(), doubted: Vec::new(), open: None, reported: f64::NAN };
        let alarm = Verdict { open: Some((Severity::Alarm, 10)), agreeing: 2, value: 4.5, doubted: false };
        let danger = Verdict { open: Some((Severity::Danger, 20)), agreeing: 2, value: 8.0, doubted: false };
        let quiet = Verdict { open: None, agreeing: 0, value: 0.1, doubted: false };
        assert_eq!(agreement.settle(alarm), Some(Move::Fired { severity: Severity::Alarm, since: 10 }));
        assert_eq!(agreement.settle(alarm), None);
        assert_eq!(agreement.settle(danger), Some(Move::Changed { severity: Severity::Danger, previous: Severity::Alarm, since: 10 }));
        assert_eq!(agreement.settle(quiet), Some(Move::Cleared { severity: Severity::Danger, since: 10 }));
        assert_eq!(agreement.settle(quiet), None);
    }
}
