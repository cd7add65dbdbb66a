//! The rule engine: fed samples in time order per sensor and a clock tick, it returns
//! [`RuleEvent`]s. It keeps, per sensor, the baselines being learned or set, and one check state
//! per rule that applies to the sensor.
//!
//! Invariants: sensors are addressed by [`SubjectId`], their position in the list the engine
//! was built with; a sample older than the sensor's previous one is not evaluated (it would
//! rewind timers) and is reported as [`Observed::OutOfOrder`]; non-finite values are treated as
//! missing; for each (rule, sensor) events alternate `Fired` (`Changed`…) `Cleared`.

use crate::agreement::{verdict, Agreement, Move, Vote};
use crate::device::{Change, FlatState, SilenceState};
use crate::expr::lookup;
use crate::last_value::LastValue;
use crate::ladder::{LadderState, Step};
use crate::load::RuleSet;
use crate::rule::{Check, Millis, Rule, Silence};
use crate::scope::Subject;
use crate::severity::Severity;
use crate::shared_text::TextPool;
use crate::signal::{BaselineSpec, Learner, Relative, StageState, TransformState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Index of a sensor in the list given to [`Engine::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectId(pub usize);

/// Index of a rule in [`Engine::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// How an incident moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The rule's condition is met for this sensor: an incident opens.
    Fired,
    /// The incident's severity moved up or down the ladder.
    Changed,
    /// The condition is over: the sensor is normal again.
    Cleared,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fired => "fired",
            EventKind::Changed => "changed",
            EventKind::Cleared => "cleared",
        }
    }
}

/// One incident opening, changing or closing for one rule on one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleEvent {
    pub rule: RuleId,
    pub subject: SubjectId,
    pub kind: EventKind,
    /// The incident's severity (for `Cleared`, the severity it had).
    pub severity: Severity,
    /// For `Changed`, the severity before.
    pub previous: Option<Severity>,
    /// The rule's override that applies to this sensor, if any (`Rule::check_of`).
    pub variant: Option<usize>,
    /// The value that decided (for no-data rules: seconds of silence).
    pub value: f64,
    /// When it happened (sample time, or tick time).
    pub at: Millis,
    /// When the condition began.
    pub since: Millis,
    /// For a rule with `agree`: the event is the building's (named by its first sensor, the
    /// `subject`), and this many of its sensors agree / it has this many.
    pub agreement: Option<Agreeing>,
}

/// How many of a building's sensors agree on an `agree` rule's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreeing {
    pub agreeing: u8,
    pub of: u8,
}

/// What happened to one observed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Evaluated,
    /// Older than the sensor's previous sample; not evaluated.
    OutOfOrder,
    /// The id is not one the engine was built with.
    UnknownSubject,
}

/// The state of one rule for one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckState {
    Ladder { transform: TransformState, ladder: LadderState, last_value: LastValue },
    NoData(SilenceState),
    FlatLine { transform: TransformState, flat: FlatState },
}

/// Rules, and overrides of one rule, an engine takes at most (the loader refuses more): a
/// check keeps its indexes in 16 bits.
pub const MAX_RULES: usize = u16::MAX as usize - 1;

/// "None" of an index kept in 16 (or, for agreements, 32) bits.
const NO_INDEX: u16 = u16::MAX;
const NO_AGREEMENT: u32 = u32::MAX;

/// One rule applied to one sensor. Ten thousand sensors with a dozen rules each make this the
/// engine's most numerous value, so its indexes are narrow (8 bytes of them, not 56), and the
/// signal stage it reads is found through the rule ([`Engine::stage_keys`]), not stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleCheck {
    rule: u16,
    /// The rule's override for this sensor ([`NO_INDEX`]: the rule's own check).
    variant: u16,
    /// The building agreement this check votes in (rules with `agree`; index in
    /// `Engine::agreements`).
    agreement: u32,
    pub state: CheckState,
}

fn narrow(index: Option<usize>) -> u16 {
    index.and_then(|i| u16::try_from(i).ok()).filter(|&i| i != NO_INDEX).unwrap_or(NO_INDEX)
}

fn widen(index: u16) -> Option<usize> {
    (index != NO_INDEX).then_some(usize::from(index))
}

impl RuleCheck {
    pub fn rule(&self) -> usize {
        usize::from(self.rule)
    }

    pub fn variant(&self) -> Option<usize> {
        widen(self.variant)
    }

    pub fn agreement(&self) -> Option<usize> {
        (self.agreement != NO_AGREEMENT).then_some(self.agreement as usize)
    }
}

/// One signal stage (expression, baseline, smoothing) shared by the rules that use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// A rule whose signal defines the stage.
    rule: u16,
    pub state: StageState,
}

impl Stage {
    pub(crate) fn rule(&self) -> usize {
        usize::from(self.rule)
    }
}

/// A baseline learned from the first readings of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedBaseline {
    /// Shared by every sensor learning this field (one allocation, not one per sensor).
    pub field: Arc<str>,
    pub window_ms: Millis,
    pub learner: Option<Box<Learner>>,
    /// The learned baseline, once the window is over (saved as a number or `null`).
    pub value: LastValue,
}

/// A sensor's id (for snapshots) and report interval (for no-data checks).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SensorRef {
    pub id: Arc<str>,
    pub interval_ms: Millis,
}

/// What the engine keeps of one sensor. The lists are fixed when the slot is built (boxed
/// slices: no spare capacity), except the calibrations an installer adds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubjectSlot {
    pub last_at: Option<Millis>,
    /// Set at installation; takes precedence over learned ones.
    pub calibrated: Vec<(String, f64)>,
    pub learned: Box<[LearnedBaseline]>,
    pub stages: Box<[Stage]>,
    pub checks: Box<[RuleCheck]>,
}

/// Evaluates a [`RuleSet`] over a fixed list of sensors.
#[derive(Debug)]
pub struct Engine {
    pub(crate) rules: Vec<Rule>,
    /// What the engine keeps of each sensor after building its slot.
    pub(crate) sensors: Vec<SensorRef>,
    pub(crate) slots: Vec<SubjectSlot>,
    pub(crate) agreements: Vec<Agreement>,
    /// Agreements whose votes changed during the current call (reused buffer).
    touched: Vec<usize>,
    /// Per rule, which signal stage it reads: the index of the first rule with the same stage
    /// (rules computing the same stage share its state), [`NO_INDEX`] without a signal.
    stage_keys: Box<[u16]>,
    /// The current sample's value of each stage of the sensor being evaluated, by stage key
    /// (reused buffer).
    staged: Vec<(u16, Option<f64>)>,
}

impl Engine {
    pub fn new(rules: RuleSet, subjects: &[Subject]) -> Engine {
        let rules = rules.rules;
        let stage_keys = stage_keys(&rules);
        let mut names = TextPool::default();
        let mut slots: Vec<SubjectSlot> = subjects.iter().map(|subject| new_slot(&rules, &stage_keys, subject, &mut names)).collect();
        let agreements = group_buildings(&rules, subjects, &mut slots);
        let sensors = subjects.iter().map(|s| SensorRef { id: s.id.clone(), interval_ms: s.interval_ms }).collect();
        Engine { rules, sensors, slots, agreements, touched: Vec::new(), stage_keys, staged: Vec::new() }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    /// The rules that apply to a sensor (empty for an unknown id).
    pub fn rules_for(&self, subject: SubjectId) -> Vec<&Rule> {
        self.slots.get(subject.0).map_or_else(Vec::new, |slot| slot.checks.iter().map(|c| &self.rules[c.rule()]).collect())
    }

    /// The rules that apply to a sensor with the override each uses (`None`: the rule's own).
    pub fn checks_for(&self, subject: SubjectId) -> Vec<(&Rule, Option<usize>)> {
        self.slots.get(subject.0).map_or_else(Vec::new, |slot| slot.checks.iter().map(|c| (&self.rules[c.rule()], c.variant())).collect())
    }

    /// Sets a sensor's installation baseline for a field (from `gridwatch calibrate`).
    pub fn set_baseline(&mut self, subject: SubjectId, field: &str, value: f64) {
        if let Some(slot) = self.slots.get_mut(subject.0) {
            slot.calibrated.retain(|(name, _)| name != field);
            slot.calibrated.push((field.to_string(), value));
        }
    }

    /// The baseline in use for a sensor's field under a rule's baseline spec.
    pub fn baseline(&self, subject: SubjectId, field: &str, spec: BaselineSpec) -> Option<f64> {
        self.slots.get(subject.0).and_then(|slot| baseline_of(&slot.calibrated, &slot.learned, field, spec))
    }

    /// Evaluates one sample of `subject` taken at `at`, appending any events to `events`.
    pub fn observe<K: AsRef<str>>(&mut self, subject: SubjectId, at: Millis, fields: &[(K, f64)], events: &mut Vec<RuleEvent>) -> Observed {
        let Some(slot) = self.slots.get_mut(subject.0) else { return Observed::UnknownSubject };
        if slot.last_at.is_some_and(|last| at < last) {
            return Observed::OutOfOrder;
        }
        slot.last_at = Some(at);
        for learned in slot.learned.iter_mut().filter(|l| l.value.get().is_none()) {
            let Some(value) = lookup(fields, &learned.field).filter(|v| v.is_finite()) else { continue };
            let learner = learned.learner.get_or_insert_with(|| Box::new(Learner::new(at, learned.window_ms)));
            if let Some(baseline) = learner.observe(at, value) {
                learned.value = LastValue::of(baseline);
                learned.learner = None;
            }
        }
        let SubjectSlot { calibrated, learned, stages, checks, .. } = slot;
        self.staged.clear();
        for stage in stages.iter_mut() {
            let key = self.stage_keys[stage.rule()];
            let Some(signal) = self.rules[stage.rule()].signal.as_ref() else {
                self.staged.push((key, None));
                continue;
            };
            let field = |name: &str| {
                let value = lookup(fields, name).filter(|v| v.is_finite())?;
                let Some(spec) = signal.baseline else { return Some(value) };
                let baseline = baseline_of(calibrated, learned, name, spec)?;
                match signal.relative {
                    Relative::Difference => Some(value - baseline),
                    Relative::Ratio => (baseline > 0.0).then(|| value / baseline),
                }
            };
            self.staged.push((key, signal.stage(&mut stage.state, at, &field)));
        }
        for check in checks.iter_mut() {
            let rule = &self.rules[check.rule()];
            let key = self.stage_keys[check.rule()];
            let staged = if key == NO_INDEX { None } else { self.staged.iter().find(|&&(staged, _)| staged == key).and_then(|&(_, value)| value) };
            if let Some(event) = observe_check(rule, check, at, staged) {
                match check.agreement() {
                    Some(agreement) => self.touched.push(agreement),
                    None => events.push(RuleEvent { rule: RuleId(check.rule()), subject, variant: check.variant(), ..event }),
                }
            }
        }
        self.settle_agreements(at, events);
        Observed::Evaluated
    }

    /// Lets time pass: completes raise holds and notices silent sensors.
    pub fn tick(&mut self, now: Millis, events: &mut Vec<RuleEvent>) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let interval = self.sensors[index].interval_ms;
            for check in slot.checks.iter_mut() {
                let rule = &self.rules[check.rule()];
                if let Some(event) = tick_check(rule, check, now, interval) {
                    match check.agreement() {
                        Some(agreement) => self.touched.push(agreement),
                        None => events.push(RuleEvent { rule: RuleId(check.rule()), subject: SubjectId(index), variant: check.variant(), ..event }),
                    }
                }
            }
        }
        self.settle_agreements(now, events);
    }

    /// Turns changed votes of building agreements into the buildings' events.
    fn settle_agreements(&mut self, at: Millis, events: &mut Vec<RuleEvent>) {
        if self.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &index in &touched {
            let verdict = verdict(&self.votes(index), self.agreements[index].needed);
            let agreement = &mut self.agreements[index];
            let Some(step) = agreement.settle(verdict) else { continue };
            let (anchor, check) = agreement.members[0];
            let variant = self.slots[anchor].checks[check].variant();
            let of = u8::try_from(agreement.members.len()).unwrap_or(u8::MAX);
            let agreeing = Some(Agreeing { agreeing: u8::try_from(verdict.agreeing).unwrap_or(u8::MAX), of });
            let event = match step {
                Move::Fired { severity, since } => event(EventKind::Fired, severity, None, verdict.value, at, since),
                Move::Changed { severity, previous, since } => event(EventKind::Changed, severity, Some(previous), verdict.value, at, since),
                Move::Cleared { severity, since } => event(EventKind::Cleared, severity, None, verdict.value, at, since),
            };
            events.push(RuleEvent { rule: RuleId(agreement.rule), subject: SubjectId(anchor), variant, agreement: agreeing, ..event });
        }
        touched.clear();
        self.touched = touched;
    }

    /// Each member box's open level and latest value.
    fn votes(&self, agreement: usize) -> Vec<Vote> {
        self.agreements[agreement]
            .members
            .iter()
            .map(|&(slot, check)| match &self.slots[slot].checks[check].state {
                CheckState::Ladder { ladder, last_value, .. } => Vote { open: ladder.open(), value: last_value.get() },
                _ => Vote { open: None, value: None },
            })
            .collect()
    }

    /// Recomputes every building's state from its boxes without events (after a restore).
    pub(crate) fn recompute_agreements(&mut self) {
        for index in 0..self.agreements.len() {
            let verdict = verdict(&self.votes(index), self.agreements[index].needed);
            self.agreements[index].open = verdict.open;
        }
    }
}

/// Groups, for each rule with `agree`, the sensors of each building (same site and building)
/// into one agreement; sensors without a building stay on their own.
fn group_buildings(rules: &[Rule], subjects: &[Subject], slots: &mut [SubjectSlot]) -> Vec<Agreement> {
    let mut agreements: Vec<Agreement> = Vec::new();
    let mut by_building: std::collections::HashMap<(usize, &str, &str), usize> = std::collections::HashMap::new();
    for (index, subject) in subjects.iter().enumerate() {
        let Some(building) = subject.building.as_deref() else { continue };
        for (position, check) in slots[index].checks.iter_mut().enumerate() {
            let Some(agree) = rules[check.rule()].agree else { continue };
            let group = *by_building.entry((check.rule(), &*subject.site, building)).or_insert_with(|| {
                agreements.push(Agreement { rule: check.rule(), members: Vec::new(), needed: usize::from(agree), open: None });
                agreements.len() - 1
            });
            agreements[group].members.push((index, position));
            check.agreement = u32::try_from(group).unwrap_or(NO_AGREEMENT);
        }
    }
    for agreement in &mut agreements {
        agreement.needed = agreement.needed.clamp(1, agreement.members.len());
    }
    agreements
}

/// `names` shares the learned fields' names between slots.
/// Each rule's stage key (see [`Engine::stage_keys`]).
fn stage_keys(rules: &[Rule]) -> Box<[u16]> {
    let mut firsts: Vec<usize> = Vec::new();
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let Some(signal) = &rule.signal else { return NO_INDEX };
            let first = firsts.iter().copied().find(|&first| rules[first].signal.as_ref().is_some_and(|other| other.same_stage(signal)));
            narrow(Some(first.unwrap_or_else(|| {
                firsts.push(index);
                index
            })))
        })
        .collect()
}

fn new_slot(rules: &[Rule], stage_keys: &[u16], subject: &Subject, names: &mut TextPool) -> SubjectSlot {
    let (mut learned, mut stages, mut checks) = (Vec::<LearnedBaseline>::new(), Vec::<Stage>::new(), Vec::new());
    for (index, rule) in rules.iter().enumerate().filter(|(_, rule)| rule.scope.matches(subject)) {
        if let Some(signal) = &rule.signal {
            if let Some(BaselineSpec::Learn { window_ms }) = signal.baseline {
                for field in signal.expr.fields() {
                    if !learned.iter().any(|l| &*l.field == field && l.window_ms == window_ms) {
                        learned.push(LearnedBaseline { field: names.share(field), window_ms, learner: None, value: LastValue::NONE });
                    }
                }
            }
        }
        let key = stage_keys[index];
        if key != NO_INDEX && !stages.iter().any(|stage| stage_keys[stage.rule()] == key) {
            stages.push(Stage { rule: narrow(Some(index)), state: StageState::default() });
        }
        let variant = rule.variant_for(subject);
        let state = initial_state(rule.check_of(variant));
        checks.push(RuleCheck { rule: narrow(Some(index)), variant: narrow(variant), agreement: NO_AGREEMENT, state });
    }
    SubjectSlot { last_at: None, calibrated: Vec::new(), learned: learned.into(), stages: stages.into(), checks: checks.into() }
}

pub(crate) fn initial_state(check: &Check) -> CheckState {
    match check {
        Check::Ladder(_) => CheckState::Ladder { transform: TransformState::default(), ladder: LadderState::default(), last_value: LastValue::NONE },
        Check::NoData { .. } => CheckState::NoData(SilenceState::default()),
        Check::FlatLine { .. } => CheckState::FlatLine { transform: TransformState::default(), flat: FlatState::default() },
    }
}

fn baseline_of(calibrated: &[(String, f64)], learned: &[LearnedBaseline], field: &str, spec: BaselineSpec) -> Option<f64> {
    let fixed = calibrated.iter().find(|(name, _)| name == field).map(|&(_, v)| v);
    match spec {
        BaselineSpec::Calibrated => fixed,
        BaselineSpec::Learn { window_ms } => {
            fixed.or_else(|| learned.iter().find(|l| &*l.field == field && l.window_ms == window_ms).and_then(|l| l.value.get()))
        }
    }
}

/// An event with placeholder rule and subject, filled in by the caller.
fn event(kind: EventKind, severity: Severity, previous: Option<Severity>, value: f64, at: Millis, since: Millis) -> RuleEvent {
    RuleEvent { rule: RuleId(0), subject: SubjectId(0), kind, severity, previous, variant: None, value, at, since, agreement: None }
}

fn from_step(step: Step, value: f64, at: Millis) -> RuleEvent {
    match step {
        Step::Fired { severity, since } => event(EventKind::Fired, severity, None, value, at, since),
        Step::Changed { severity, previous, since } => event(EventKind::Changed, severity, Some(previous), value, at, since),
        Step::Cleared { severity, since } => event(EventKind::Cleared, severity, None, value, at, since),
    }
}

/// Runs one rule on one sample; `staged` is the value of the rule's signal stage (if it has one
/// and the sample carried its fields).
fn observe_check(rule: &Rule, check: &mut RuleCheck, at: Millis, staged: Option<f64>) -> Option<RuleEvent> {
    match (rule.check_of(check.variant()), &mut check.state) {
        (Check::Ladder(levels), CheckState::Ladder { transform, ladder, last_value }) => {
            let value = rule.signal.as_ref()?.transform(transform, at, staged?)?;
            *last_value = LastValue::of(value);
            ladder.observe(levels, value, at).map(|step| from_step(step, value, at))
        }
        (Check::NoData { severity, .. }, CheckState::NoData(silence)) => match silence.heard(at)? {
            Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, ((at - since) / 1000) as f64, at, since)),
            Change::Opened { .. } => None,
        },
        (Check::FlatLine { samples, severity }, CheckState::FlatLine { transform, flat }) => {
            let value = rule.signal.as_ref()?.transform(transform, at, staged?)?;
            match flat.observe(value, at, *samples)? {
                Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, value, at, since)),
                Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, value, at, since)),
            }
        }
        _ => None,
    }
}

fn tick_check(rule: &Rule, check: &mut RuleCheck, now: Millis, interval_ms: Millis) -> Option<RuleEvent> {
    match (rule.check_of(check.variant()), &mut check.state) {
        (Check::Ladder(levels), CheckState::Ladder { ladder, last_value, .. }) => {
            ladder.tick(levels, now).map(|step| from_step(step, last_value.get().unwrap_or(f64::NAN), now))
        }
        (Check::NoData { after, severity }, CheckState::NoData(silence)) => {
            let timeout = match *after {
                Silence::Fixed(ms) => ms,
                Silence::Intervals(factor) => (interval_ms as f64 * factor) as Millis,
            };
            match silence.tick(now, timeout)? {
                Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, ((now - since) / 1000) as f64, now, since)),
                Change::Closed { .. } => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
