//! The rule engine: fed samples in time order per sensor and a clock tick, it returns
//! [`RuleEvent`]s. It keeps, per sensor, the baselines being learned or set, and one check state
//! per rule that applies to the sensor.
//!
//! Invariants: sensors are addressed by [`SubjectId`], their position in the list the engine
//! was built with; a sample older than the sensor's previous one is not evaluated (it would
//! rewind timers) and is reported as [`Observed::OutOfOrder`], until the sensor is re-anchored
//! with [`Engine::rewind`] (`engine/rewind.rs`); non-finite values are treated as
//! missing; for each (rule, sensor) events alternate `Fired` (`Changed`…) `Cleared`.

use crate::agreement::{verdict, Agreement, Move, Vote};
use crate::device::{Change, ClockState, FlatState, LagState, SilenceState, Stamped};
use crate::expr::lookup;
use crate::ladder::{LadderState, Step};
use crate::last_value::{LastValue, ReportedValue};
use crate::load::RuleSet;
use crate::peers::{Peer, PeerCheck};
use crate::rule::{Check, Millis, Rule};
use crate::scope::Subject;
use crate::severity::Severity;
use crate::shared_text::TextPool;
use crate::signal::{BaselineSpec, Learner, Relative, Signal, StageState, TransformState, RESTART_READINGS};
use crate::thermal::{Thermal, ThermalSpec};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Index of a sensor in the list given to [`Engine::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectId(pub usize);

/// Index of a rule in [`Engine::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// The shortest silence after which a box has no vote in its building's agreement (three report
/// intervals when those are longer): a box that died, not one in a gap of its link — while a
/// healthy box is silent for hours, a faulty one next to it must still not raise red alone.
const SILENT_VOTER_MS: Millis = 24 * 3_600_000;
/// The least time a box whose readings the rules cannot read keeps its vote ([`Engine::has_a_vote`]).
const UNREADABLE_VOTER_MS: Millis = 10 * 60_000;

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
    /// Only boxes in doubt (`doubted_by`) stand at the level: it is capped at `alone`.
    pub doubted: bool,
}

/// What happened to one observed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Evaluated,
    /// The sensor's previous sample again, at the same time and with the same values (a
    /// gateway or a device that sent it twice): not evaluated — a copy of a spike must not
    /// confirm it as a second reading would.
    Repeat,
    /// Older than the sensor's previous sample; not evaluated.
    OutOfOrder,
    /// The id is not one the engine was built with.
    UnknownSubject,
}

/// The state of one rule for one sensor: 24 bytes, as ten thousand sensors with a dozen rules
/// each keep a hundred thousand (a flat-line check, one per tilt box, boxes its counters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckState {
    Ladder {
        transform: TransformState,
        ladder: LadderState,
        last_value: ReportedValue,
    },
    NoData(SilenceState),
    FlatLine {
        transform: TransformState,
        flat: Box<FlatState>,
    },
    /// A threshold rule with `peers`: the box against its building's other boxes.
    Peers(Box<PeerCheck>),
    Clock(ClockState),
    /// A `clock_behind` check (boxed: one per sensor and rule, and larger than the others).
    ClockBehind(Box<LagState>),
}

/// "None" of an index kept in 16 (or, for agreements, 32) bits.
const NO_INDEX: u16 = u16::MAX;
const NO_AGREEMENT: u32 = u32::MAX;

/// One rule applied to the sensors of a [`Plan`]: which rule, which of its overrides, which
/// building agreement the check votes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PlannedCheck {
    rule: u16,
    /// The rule's override for these sensors ([`NO_INDEX`]: the rule's own check).
    variant: u16,
    /// The building agreement the check votes in (rules with `agree`; index in
    /// `Engine::agreements`).
    agreement: u32,
    /// The group of the building's boxes the check is compared with (rules with `peers`;
    /// index in `Engine::peer_groups`).
    peers: u32,
    /// The signal stage the check reads (position in the plan's stages; [`NO_INDEX`] without a
    /// signal). Rules computing the same stage share it, so a one-hour median is computed once
    /// per sample however many rules look at it.
    stage: u16,
}

fn narrow(index: Option<usize>) -> u16 {
    index.and_then(|i| u16::try_from(i).ok()).filter(|&i| i != NO_INDEX).unwrap_or(NO_INDEX)
}

fn widen(index: u16) -> Option<usize> {
    (index != NO_INDEX).then_some(usize::from(index))
}

impl PlannedCheck {
    pub fn rule(&self) -> usize {
        usize::from(self.rule)
    }

    pub fn variant(&self) -> Option<usize> {
        widen(self.variant)
    }

    pub fn agreement(&self) -> Option<usize> {
        (self.agreement != NO_AGREEMENT).then_some(self.agreement as usize)
    }

    fn stage(&self) -> Option<usize> {
        widen(self.stage)
    }

    fn peers(&self) -> Option<usize> {
        (self.peers != NO_AGREEMENT).then_some(self.peers as usize)
    }
}

/// What a sensor runs: its checks, the signal stages they read and the baselines they learn.
/// Sensors that come out the same (same rules, overrides and building agreements: every probe
/// of a kind, every box of a building) share one plan, so a sensor's own lists hold only state,
/// in the plan's order, and no indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Plan {
    pub checks: Box<[PlannedCheck]>,
    /// The rule that defines each signal stage.
    pub stages: Box<[u16]>,
    /// Each learned baseline's field (shared text) and learning window.
    pub learned: Box<[(Arc<str>, Millis)]>,
    /// Each temperature compensation the sensor learns (`compensate`).
    pub thermal: Box<[ThermalSpec]>,
}

/// A baseline learned from the first readings of one field, as saved: the field and window
/// come from the sensor's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedBaseline {
    pub field: Arc<str>,
    pub window_ms: Millis,
    pub learner: Option<Box<Learner>>,
    /// The learned baseline, once the window is over (saved as a number or `null`).
    pub value: LastValue,
}

/// One sensor's learning of one baseline (the field and window are in its plan).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Learned {
    pub learner: Option<Box<Learner>>,
    pub value: LastValue,
}

/// A sensor's id (for snapshots) and report interval (for no-data checks).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SensorRef {
    pub id: Arc<str>,
    pub interval_ms: Millis,
    /// Since when its readings carry nothing its building's rules can read (a lost axis,
    /// renamed fields); [`Millis::MIN`] while they do. Not saved: a restart watches again.
    pub unreadable_since: Millis,
    /// How much later than its own stamps its readings are placed (its clock went back and the
    /// daemon re-anchored it): lag checks judge its own stamp. 0 while its time is believed.
    /// Not saved: the daemon sets it with every reading ([`Engine::set_stamp_offset`]).
    pub stamp_offset: Millis,
    /// How many readings in a row have read exactly 0 in every field of a `recent` level of two
    /// fields or more: past a restart's few, they are the box's readings (`restart_reading`).
    /// Not saved: a restart of the engine counts again.
    pub zeros_in_a_row: u8,
}

/// What the engine keeps of one sensor besides its states (which are in [`States`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubjectSlot {
    pub last_at: Option<Millis>,
    /// The fields and values of the sample at `last_at` ([`sample_fingerprint`]): the same
    /// sample again at that time is a copy, not a second reading.
    pub last_sample: u64,
    /// Index in `Engine::plans`.
    pub plan: u32,
    /// Where the sensor's states begin in each list of [`States`].
    pub at: Offsets,
    /// Set at installation; takes precedence over learned ones.
    pub calibrated: Box<[(String, f64)]>,
}

/// Where a sensor's states begin in each list of [`States`]; how many there are is in its plan.
/// 32 bits: an engine holds far fewer than four billion states (that would be tens of GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offsets {
    pub learned: u32,
    pub stages: u32,
    pub checks: u32,
    pub thermal: u32,
}

/// Every sensor's states, sensor after sensor, one list per kind: the states of a sensor's
/// learned baselines, signal stages and checks, each in its plan's order. One list for all
/// sensors instead of three per sensor saves ten thousand sensors thirty thousand allocations
/// (their headers and rounding) and a slot's three slice pointers.
#[derive(Debug, Default)]
pub(crate) struct States {
    pub learned: Vec<Learned>,
    pub stages: Vec<StageState>,
    pub checks: Vec<CheckState>,
    pub thermal: Vec<Thermal>,
}

/// `len` items of `list` from `start` (none if that is out of range, which the engine's
/// construction rules out).
fn span<T>(list: &[T], start: u32, len: usize) -> &[T] {
    let start = start as usize;
    list.get(start..start.saturating_add(len)).unwrap_or_default()
}

fn span_mut<T>(list: &mut [T], start: u32, len: usize) -> &mut [T] {
    let start = start as usize;
    list.get_mut(start..start.saturating_add(len)).unwrap_or_default()
}

/// One sensor's states, borrowed from [`States`].
pub(crate) struct SlotStates<'a> {
    pub learned: &'a [Learned],
    pub stages: &'a [StageState],
    pub checks: &'a [CheckState],
    pub thermal: &'a [Thermal],
}

pub(crate) struct SlotStatesMut<'a> {
    pub learned: &'a mut [Learned],
    pub stages: &'a mut [StageState],
    pub checks: &'a mut [CheckState],
    pub thermal: &'a mut [Thermal],
}

impl States {
    pub fn of(&self, slot: &SubjectSlot, plan: &Plan) -> SlotStates<'_> {
        SlotStates {
            learned: span(&self.learned, slot.at.learned, plan.learned.len()),
            stages: span(&self.stages, slot.at.stages, plan.stages.len()),
            checks: span(&self.checks, slot.at.checks, plan.checks.len()),
            thermal: span(&self.thermal, slot.at.thermal, plan.thermal.len()),
        }
    }

    pub fn of_mut(&mut self, slot: &SubjectSlot, plan: &Plan) -> SlotStatesMut<'_> {
        SlotStatesMut {
            learned: span_mut(&mut self.learned, slot.at.learned, plan.learned.len()),
            stages: span_mut(&mut self.stages, slot.at.stages, plan.stages.len()),
            checks: span_mut(&mut self.checks, slot.at.checks, plan.checks.len()),
            thermal: span_mut(&mut self.thermal, slot.at.thermal, plan.thermal.len()),
        }
    }

    /// Where the next sensor's states will begin.
    fn end(&self) -> Offsets {
        let offset = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
        Offsets {
            learned: offset(self.learned.len()),
            stages: offset(self.stages.len()),
            checks: offset(self.checks.len()),
            thermal: offset(self.thermal.len()),
        }
    }
}

/// Evaluates a [`RuleSet`] over a fixed list of sensors.
#[derive(Debug)]
pub struct Engine {
    pub(crate) rules: Vec<Rule>,
    /// What the engine keeps of each sensor after building its slot.
    pub(crate) sensors: Vec<SensorRef>,
    pub(crate) slots: Vec<SubjectSlot>,
    pub(crate) states: States,
    /// The distinct plans of the sensors (a few per kind of sensor and building).
    pub(crate) plans: Vec<Plan>,
    pub(crate) agreements: Vec<Agreement>,
    /// For rules with `peers`, the (sensor slot, check index) of each building's boxes.
    pub(crate) peer_groups: Vec<Vec<(usize, usize)>>,
    /// Agreements whose votes changed during the current call (reused buffer).
    touched: Vec<usize>,
    /// The current sample's value of each stage of the sensor being evaluated (reused buffer).
    staged: Vec<Option<f64>>,
    /// The reference from its peers of each check of the sensor being evaluated (reused buffer;
    /// `None` for checks without `peers`).
    peer_references: Vec<Option<f64>>,
    /// The engine's clock: the latest tick's time (`None` before the first tick). Clock checks
    /// judge a reading's time against it.
    now: Option<Millis>,
    /// Whether the engine's clock is true time, so that a reading stamped behind it says the
    /// device's clock is behind ([`Engine::judge_lags`]).
    clock_true: bool,
    /// How far past the engine's clock a reading counts as heard for no-data rules
    /// ([`Engine::hear_readings_ahead_by`]).
    heard_ahead: Millis,
    /// When the no-data watches began again ([`Engine::watch_silences_from`]); a reload's
    /// engine takes it over.
    pub(crate) silences_watched_from: Option<Millis>,
    /// The time of the engine's first reading or tick: a box not heard from since loses its
    /// vote as a silent one does ([`Engine::silent_voter`]).
    first_time: Option<Millis>,
}

impl Engine {
    /// A reading counts as heard for no-data rules at most `ms` past the engine's latest tick
    /// (its tick interval, for an engine ticked live): one placed further ahead of its arrival
    /// (a device time learned from a buffered reading) would otherwise make its silence that
    /// much late.
    pub fn hear_readings_ahead_by(&mut self, ms: Millis) {
        self.heard_ahead = ms;
    }

    /// Whether the engine's clock (its ticks) is true time, as a synchronised box's is; it is
    /// unless told otherwise. `clock_behind` checks judge readings only while it is: against a
    /// box clock that is not set (a Raspberry Pi without RTC boots at 1970 or at its last
    /// shutdown), every device's time would seem ahead or behind by the box's own error. While
    /// it is not, readings neither open nor close those checks.
    pub fn judge_lags(&mut self, clock_true: bool) {
        self.clock_true = clock_true;
    }

    /// The sensor's next readings are placed `offset` ms later than their own stamps say (the
    /// daemon placed them at their arrival after its clock went back, or because their stamps
    /// lay too far ahead): its `clock_behind` and `clock_ahead` checks judge the stamps (while
    /// the engine's clock is true time), so installers hear of a device clock hours behind or
    /// ahead, which the placed times no longer show.
    pub fn set_stamp_offset(&mut self, subject: SubjectId, offset: Millis) {
        if let Some(sensor) = self.sensors.get_mut(subject.0) {
            sensor.stamp_offset = offset;
        }
    }

    /// Every no-data watch begins again at `at` (a daemon that starts on a restored state):
    /// none opens before a whole timeout has passed since — see [`SilenceState::tick`].
    pub fn watch_silences_from(&mut self, at: Millis) {
        self.silences_watched_from = Some(at);
    }

    pub fn new(rules: RuleSet, subjects: &[Subject]) -> Engine {
        let rules = rules.rules;
        let mut planner = Planner::new(&rules);
        let boxes = crate::scope::BuildingBoxes::count(subjects);
        let slots = subjects.iter().enumerate().map(|(index, subject)| planner.slot(index, &boxes.tagged(subject))).collect();
        let Planner { plans, agreements, peer_groups, mut states, .. } = planner;
        let plans = Planner::into_plans(plans);
        states.learned.shrink_to_fit();
        states.stages.shrink_to_fit();
        states.checks.shrink_to_fit();
        states.thermal.shrink_to_fit();
        let sensors = subjects
            .iter()
            .map(|s| SensorRef { id: s.id.clone(), interval_ms: s.interval_ms, unreadable_since: Millis::MIN, stamp_offset: 0, zeros_in_a_row: 0 })
            .collect();
        Engine {
            rules,
            sensors,
            slots,
            states,
            plans,
            agreements,
            peer_groups,
            touched: Vec::new(),
            staged: Vec::new(),
            peer_references: Vec::new(),
            now: None,
            clock_true: true,
            heard_ahead: HEARD_AHEAD_MS,
            silences_watched_from: None,
            first_time: None,
        }
    }

    /// A sensor's plan.
    pub(crate) fn plan_of(&self, slot: &SubjectSlot) -> &Plan {
        &self.plans[slot.plan as usize]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    /// The rules that apply to a sensor (empty for an unknown id).
    pub fn rules_for(&self, subject: SubjectId) -> Vec<&Rule> {
        self.slots.get(subject.0).map_or_else(Vec::new, |slot| self.plan_of(slot).checks.iter().map(|c| &self.rules[c.rule()]).collect())
    }

    /// The rules that apply to a sensor with the override each uses (`None`: the rule's own).
    pub fn checks_for(&self, subject: SubjectId) -> Vec<(&Rule, Option<usize>)> {
        self.slots.get(subject.0).map_or_else(Vec::new, |slot| self.plan_of(slot).checks.iter().map(|c| (&self.rules[c.rule()], c.variant())).collect())
    }

    /// Whether a rule's incident is open for a sensor, and the override it uses: `None` when
    /// the rule does not apply to it, or its kind of check (peers, clock) does not say.
    pub fn open(&self, subject: SubjectId, rule: RuleId) -> Option<(bool, Option<usize>)> {
        let slot = self.slots.get(subject.0)?;
        let plan = self.plan_of(slot);
        let states = self.states.of(slot, plan);
        let (planned, state) = plan.checks.iter().zip(states.checks).find(|(planned, _)| planned.rule() == rule.0)?;
        let open = match state {
            CheckState::Ladder { ladder, .. } => ladder.open().is_some(),
            CheckState::NoData(silence) => silence.open,
            CheckState::FlatLine { flat, .. } => flat.open,
            CheckState::Peers(_) | CheckState::Clock(_) | CheckState::ClockBehind(_) => return None,
        };
        Some((open, planned.variant()))
    }

    /// Whether a rule sees no problem at all on a sensor — not open, and no breach waiting out a
    /// hold: `None` when the rule does not apply to it, or its kind of check does not say.
    pub fn at_rest(&self, subject: SubjectId, rule: RuleId) -> Option<bool> {
        let slot = self.slots.get(subject.0)?;
        let plan = self.plan_of(slot);
        let states = self.states.of(slot, plan);
        let (_, state) = plan.checks.iter().zip(states.checks).find(|(planned, _)| planned.rule() == rule.0)?;
        match state {
            CheckState::Ladder { ladder, .. } => Some(ladder.at_rest()),
            CheckState::NoData(silence) => Some(!silence.open),
            CheckState::FlatLine { flat, .. } => Some(!flat.open),
            CheckState::Peers(_) | CheckState::Clock(_) | CheckState::ClockBehind(_) => None,
        }
    }

    /// Sets a sensor's installation baseline for a field (from `gridwatch calibrate`).
    /// A temperature's baseline set this way anchors the sensor's compensation by it (see
    /// [`crate::thermal::Thermal::anchor_at_calibration`]).
    pub fn set_baseline(&mut self, subject: SubjectId, field: &str, value: f64) {
        if let Some(slot) = self.slots.get_mut(subject.0) {
            let mut calibrated = std::mem::take(&mut slot.calibrated).into_vec();
            calibrated.retain(|(name, _)| name != field);
            calibrated.push((field.to_string(), value));
            slot.calibrated = calibrated.into_boxed_slice();
            let plan = &self.plans[slot.plan as usize];
            for (state, spec) in self.states.of_mut(slot, plan).thermal.iter_mut().zip(&plan.thermal) {
                if crate::expr::same_name(&spec.temperature, field) {
                    state.anchor_at_calibration();
                }
            }
        }
    }

    /// The baseline in use for a sensor's field under a rule's baseline spec.
    pub fn baseline(&self, subject: SubjectId, field: &str, spec: BaselineSpec) -> Option<f64> {
        let slot = self.slots.get(subject.0)?;
        let plan = self.plan_of(slot);
        baseline_of(&slot.calibrated, &plan.learned, self.states.of(slot, plan).learned, field, spec)
    }

    /// The temperature's daily level of each of a sensor's compensations (`compensate`), by the
    /// temperature field's name: what a calibration records as the temperature's baseline next
    /// to the angles, so that compensation measures from the temperature of the moment the box
    /// was zeroed. Empty before a sensor has reported two hours of temperatures.
    pub fn temperature_levels(&self, subject: SubjectId) -> Vec<(Arc<str>, f64)> {
        let Some(slot) = self.slots.get(subject.0) else { return Vec::new() };
        let plan = self.plan_of(slot);
        plan.thermal.iter().zip(self.states.of(slot, plan).thermal).filter_map(|(spec, state)| Some((spec.temperature.clone(), state.level()?))).collect()
    }

    /// The time of the last sample of `subject` the engine judged (`None`: none yet, or an
    /// unknown subject). A sample taken at or before it has been judged already, or is refused
    /// as out of order.
    pub fn last_at(&self, subject: SubjectId) -> Option<Millis> {
        self.slots.get(subject.0)?.last_at
    }

    /// Evaluates one sample of `subject` taken at `at`, appending any events to `events`.
    pub fn observe<K: AsRef<str>>(&mut self, subject: SubjectId, at: Millis, fields: &[(K, f64)], events: &mut Vec<RuleEvent>) -> Observed {
        let Some(slot) = self.slots.get(subject.0) else { return Observed::UnknownSubject };
        self.first_time = Some(self.first_time.map_or(at, |first| first.min(at)));
        if slot.last_at.is_some_and(|last| at < last) {
            self.judge_clocks(subject, at, Stamped::OutOfOrder, events);
            return Observed::OutOfOrder;
        }
        let fingerprint = sample_fingerprint(fields);
        if slot.last_at == Some(at) && slot.last_sample == fingerprint {
            return Observed::Repeat;
        }
        let unreadable = self.unreadable_by_its_building(slot, fields);
        let sensor = &mut self.sensors[subject.0];
        let stamped = at.saturating_sub(sensor.stamp_offset);
        sensor.unreadable_since = match (unreadable, sensor.unreadable_since) {
            (false, _) => Millis::MIN,
            (true, Millis::MIN) => at,
            (true, since) => since,
        };
        self.reference_peers(subject.0, at);
        let Some(slot) = self.slots.get_mut(subject.0) else { return Observed::UnknownSubject };
        slot.last_at = Some(at);
        slot.last_sample = fingerprint;
        let plan = &self.plans[slot.plan as usize];
        let SlotStatesMut { learned, stages, checks, thermal } = self.states.of_mut(slot, plan);
        let zeros = zero_reading(&self.rules, plan, fields);
        let sensor = &mut self.sensors[subject.0];
        // Its thermometer reading exactly 0 as well, the box sends nothing but zeros: a restart
        // however long it lasts (a box that died so), not a wall back at plumb.
        let every_register_zero = || plan.thermal.iter().any(|spec| lookup(fields, &spec.temperature) == Some(0.0));
        let restart = zeros
            && (usize::from(sensor.zeros_in_a_row) < RESTART_READINGS || every_register_zero())
            && restart_reading(&self.rules, plan, stages, &slot.calibrated, learned, fields);
        sensor.zeros_in_a_row = if zeros { sensor.zeros_in_a_row.saturating_add(1) } else { 0 };
        for (learned, (field, window_ms)) in learned.iter_mut().zip(&plan.learned).filter(|(l, _)| l.value.get().is_none() && !restart) {
            let Some(value) = lookup(fields, field).filter(|v| v.is_finite()) else { continue };
            let learner = learned.learner.get_or_insert_with(|| Box::new(Learner::new(at, *window_ms)));
            if let Some(baseline) = learner.observe(at, value) {
                learned.value = LastValue::of(baseline);
                learned.learner = None;
            }
        }
        for (thermal, spec) in thermal.iter_mut().zip(&plan.thermal).filter(|_| !restart) {
            // Anchored at the first reading that carries the temperature.
            if thermal.unanchored() && lookup(fields, &spec.temperature).is_some_and(f64::is_finite) {
                let zeroed = |field: &str| {
                    slot.calibrated.iter().any(|(name, _)| crate::expr::same_name(name, field))
                        || plan.learned.iter().zip(learned.iter()).any(|((name, _), l)| crate::expr::same_name(name, field) && l.value.get().is_some())
                };
                thermal.anchor(spec.fields.iter().all(|field| zeroed(field)));
            }
            let values: smallvec::SmallVec<[Option<f64>; 2]> = spec.fields.iter().map(|field| lookup(fields, field)).collect();
            thermal.observe(at, lookup(fields, &spec.temperature), &values);
        }
        let (calibrated, learned, thermal) = (&slot.calibrated, &*learned, &*thermal);
        self.staged.clear();
        let mut judged_unless: Option<(&std::sync::Arc<crate::expr::ValueExpr>, bool)> = None;
        for (state, &rule) in stages.iter_mut().zip(&plan.stages) {
            let Some(signal) = self.rules[usize::from(rule)].signal.as_ref() else {
                self.staged.push(None);
                continue;
            };
            // Rules that share one `unless` (a file's `[defaults]`) judge it once per reading.
            let unless = signal.unless.as_ref().is_some_and(|unless| match judged_unless {
                Some((shared, skip)) if std::sync::Arc::ptr_eq(shared, unless) => skip,
                _ => {
                    let skip = unless.evaluate(&|name| lookup(fields, name)).is_some_and(|skip| skip >= 1.0);
                    judged_unless = Some((unless, skip));
                    skip
                }
            });
            // A restart's reading is no rule's but the device rules' that look for a box stuck
            // on it (a `recent` level is left alone by every rule).
            let restarted = restart
                && (!self.rules[usize::from(rule)].device || matches!(signal.baseline, Some(BaselineSpec::Recent { .. })))
                && reads_only_zeros(signal, fields);
            if unless || restarted {
                self.staged.push(None);
                continue;
            }
            let field = |name: &str| {
                let value = signal.expr.reported(fields, name)?;
                let spec = match signal.baseline {
                    // No baseline, or a recent level, which the signal's stage applies itself.
                    None | Some(BaselineSpec::Recent { .. }) => return Some(value),
                    Some(spec) => spec,
                };
                let baseline = baseline_of(calibrated, &plan.learned, learned, name, spec)?;
                match signal.relative {
                    Relative::Difference => {
                        Some(value - baseline - thermal_correction(plan, thermal, signal, name, |t| baseline_of(calibrated, &plan.learned, learned, t, spec)))
                    }
                    Relative::Ratio => (baseline > 0.0).then(|| value / baseline),
                }
            };
            self.staged.push(signal.stage(state, at, &field));
        }
        for (position, (state, planned)) in checks.iter_mut().zip(&plan.checks).enumerate() {
            let rule = &self.rules[planned.rule()];
            let staged = planned.stage().and_then(|stage| self.staged.get(stage).copied().flatten());
            let peers = self.peer_references.get(position).copied().flatten();
            let lowest = rule.uncompensated.filter(|_| !compensation_in_use(plan, thermal, rule)).unwrap_or(Severity::Notice);
            let event = match self.now {
                // The device's own stamp, where the engine's clock is true time: a reading whose
                // time the daemon refused as too far ahead is judged at its arrival.
                Some(now) if matches!(state, CheckState::Clock(_)) => {
                    clock_check(rule, planned.variant(), state, if self.clock_true { stamped } else { at }, now, Stamped::Judged)
                }
                // Against a clock that is not true time a lag says nothing of the device's.
                Some(now) if matches!(state, CheckState::ClockBehind(_)) => {
                    if self.clock_true {
                        lag_check(rule, planned.variant(), state, stamped, now)
                    } else {
                        None
                    }
                }
                // A silence ends when a reading arrives, whatever its stamp: one stamped hours
                // behind the engine's clock (a device clock that lags, a backlog) is heard now.
                Some(now) if matches!(state, CheckState::NoData(_)) => {
                    observe_check(rule, planned.variant(), state, at.clamp(now, now.saturating_add(self.heard_ahead)), staged, peers, lowest)
                }
                _ => observe_check(rule, planned.variant(), state, at, staged, peers, lowest),
            };
            match (planned.agreement(), event) {
                // Settled on every reading of a box, not only when its vote moves: who still
                // reports decides how many must agree (`needed_now`).
                (Some(agreement), _) => self.touched.push(agreement),
                (None, Some(event)) => events.push(RuleEvent { rule: RuleId(planned.rule()), subject, variant: planned.variant(), ..event }),
                (None, None) => {}
            }
        }
        self.settle_agreements(at, events);
        Observed::Evaluated
    }

    /// A person resolved the incident of rule `rule` (its id) on `subject` at `at`: if its last
    /// value breaches no level and only clear levels and holds keep the incident open, it
    /// clears and its `Cleared` is appended ([`LadderState::end_clear_holds`]), so that a new
    /// breach fires again and is told. A building's rule (`agree`) is left alone. False when
    /// nothing ended.
    pub fn end_clear_holds(&mut self, subject: SubjectId, rule: &str, at: Millis, events: &mut Vec<RuleEvent>) -> bool {
        let Some(slot) = self.slots.get(subject.0) else { return false };
        let plan = &self.plans[slot.plan as usize];
        let mut ended = false;
        for (state, planned) in self.states.of_mut(slot, plan).checks.iter_mut().zip(&plan.checks) {
            if planned.agreement().is_some() || self.rules[planned.rule()].id != rule {
                continue;
            }
            let Check::Ladder(levels) = self.rules[planned.rule()].check_of(planned.variant()) else { continue };
            let (ladder, last_value) = match state {
                CheckState::Ladder { ladder, last_value, .. } => (ladder, *last_value),
                CheckState::Peers(peer) => (&mut peer.ladder, peer.last_value),
                _ => continue,
            };
            let value = last_value.get().unwrap_or(f64::NAN);
            if let Some(step) = ladder.end_clear_holds(levels, value) {
                events.push(RuleEvent { rule: RuleId(planned.rule()), subject, variant: planned.variant(), ..from_step(step, value, at) });
                ended = true;
            }
        }
        ended
    }

    /// A reading of `subject` that came but was not judged (older than its last judged one: its
    /// clock went back, or a redelivery): it is not silent. Only its no-data checks hear it, at
    /// the engine's clock (an outside tester's box reporting every 5 s was told "no data" while
    /// its clock had gone back).
    pub fn heard_unjudged(&mut self, subject: SubjectId, events: &mut Vec<RuleEvent>) {
        let (Some(now), Some(slot)) = (self.now, self.slots.get(subject.0)) else { return };
        let plan = &self.plans[slot.plan as usize];
        for (state, planned) in self.states.of_mut(slot, plan).checks.iter_mut().zip(&plan.checks) {
            if !matches!(state, CheckState::NoData(_)) || planned.agreement().is_some() {
                continue;
            }
            let rule = &self.rules[planned.rule()];
            if let Some(event) = observe_check(rule, planned.variant(), state, now, None, None, Severity::Notice) {
                events.push(RuleEvent { rule: RuleId(planned.rule()), subject, variant: planned.variant(), ..event });
            }
        }
    }

    /// Judges the clock checks of `subject` on a reading stamped `at` against the engine's
    /// clock (nothing before the first tick).
    fn judge_clocks(&mut self, subject: SubjectId, at: Millis, what: Stamped, events: &mut Vec<RuleEvent>) {
        let (Some(now), Some(slot)) = (self.now, self.slots.get(subject.0)) else { return };
        let plan = &self.plans[slot.plan as usize];
        for (state, planned) in self.states.of_mut(slot, plan).checks.iter_mut().zip(&plan.checks) {
            let rule = &self.rules[planned.rule()];
            if let Some(event) = clock_check(rule, planned.variant(), state, at, now, what) {
                events.push(RuleEvent { rule: RuleId(planned.rule()), subject, variant: planned.variant(), ..event });
            }
        }
    }

    /// Fills `peer_references` for sensor `index`'s checks: for each check with `peers`, the
    /// median of the building's other boxes' latest stage values (see [`crate::peers`]). Left
    /// empty for a sensor without such checks.
    fn reference_peers(&mut self, index: usize, at: Millis) {
        let mut references = std::mem::take(&mut self.peer_references);
        references.clear();
        let plan = self.plan_of(&self.slots[index]);
        if plan.checks.iter().any(|planned| planned.peers().is_some()) {
            references.extend(plan.checks.iter().map(|planned| self.peer_reference(planned, index, at)));
        }
        self.peer_references = references;
    }

    /// One check's reference from its peers (`None` without `peers`, or with no fresh peer). A
    /// peer that is stuck or cannot read the wall ([`Engine::has_a_vote`]) is none: a sound box
    /// beside a stuck one seemed to drift with every day's weather (an outside tester: installers
    /// told 9 times in 6 of 10 such buildings).
    fn peer_reference(&self, planned: &PlannedCheck, index: usize, at: Millis) -> Option<f64> {
        let group = planned.peers()?;
        let sound = |slot: usize| self.reads_the_wall(slot, at) && !self.stuck_on(slot, planned.rule());
        let others = self.peer_groups[group].iter().filter(|&&(slot, _)| slot != index && sound(slot)).map(|&(slot, check)| {
            let slot = &self.slots[slot];
            let own = match self.states.of(slot, self.plan_of(slot)).checks.get(check) {
                Some(CheckState::Peers(peer)) => peer.own.get(),
                _ => None,
            };
            Peer { own, last_at: slot.last_at }
        });
        crate::peers::reference(others, at)
    }

    /// Lets time pass: completes raise holds and notices silent sensors.
    pub fn tick(&mut self, now: Millis, events: &mut Vec<RuleEvent>) {
        self.now = Some(self.now.map_or(now, |before| before.max(now)));
        self.first_time.get_or_insert(now);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let interval = self.sensors[index].interval_ms;
            let plan = &self.plans[slot.plan as usize];
            let SlotStatesMut { checks, thermal, .. } = self.states.of_mut(slot, plan);
            for (state, planned) in checks.iter_mut().zip(&plan.checks) {
                let rule = &self.rules[planned.rule()];
                let lowest = rule.uncompensated.filter(|_| !compensation_in_use(plan, thermal, rule)).unwrap_or(Severity::Notice);
                if let Some(event) = tick_check(rule, planned.variant(), state, (now, self.silences_watched_from), interval, lowest) {
                    match planned.agreement() {
                        Some(agreement) => self.touched.push(agreement),
                        None => events.push(RuleEvent { rule: RuleId(planned.rule()), subject: SubjectId(index), variant: planned.variant(), ..event }),
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
            let votes = self.votes(index, at);
            let verdict = verdict(&votes, self.needed_now(index, &votes, at), self.agreements[index].alone);
            let (anchor, check) = self.agreements[index].members[0];
            let variant = self.plan_of(&self.slots[anchor]).checks[check].variant();
            let agreement = &mut self.agreements[index];
            let Some(step) = agreement.settle(verdict) else { continue };
            let of = u8::try_from(agreement.members.len()).unwrap_or(u8::MAX);
            let agreeing = Some(Agreeing { agreeing: u8::try_from(verdict.agreeing).unwrap_or(u8::MAX), of, doubted: verdict.doubted });
            let value = agreement.value_of(step, verdict.value);
            let event = match step {
                Move::Fired { severity, since } => event(EventKind::Fired, severity, None, value, at, since),
                Move::Changed { severity, previous, since } => event(EventKind::Changed, severity, Some(previous), value, at, since),
                Move::Cleared { severity, since } => event(EventKind::Cleared, severity, None, value, at, since),
            };
            events.push(RuleEvent { rule: RuleId(agreement.rule), subject: SubjectId(anchor), variant, agreement: agreeing, ..event });
        }
        touched.clear();
        self.touched = touched;
    }

    /// Each member box's open level and latest value, and whether that level came while the box
    /// was in doubt (remembered in the agreement until the level closes).
    fn votes(&mut self, agreement: usize, at: Millis) -> Vec<Vote> {
        let votes: Vec<Vote> = self.agreements[agreement]
            .members
            .iter()
            .enumerate()
            .map(|(member, &(index, check))| {
                let none = Vote { open: None, value: None, reached: None, doubted: false };
                let rule = self.agreements[agreement].rule;
                if !self.has_a_vote(index, rule, at) {
                    return none;
                }
                let slot = &self.slots[index];
                let plan = self.plan_of(slot);
                let Some(planned) = plan.checks.get(check) else { return none };
                match (self.rules[planned.rule()].check_of(planned.variant()), self.states.of(slot, plan).checks.get(check)) {
                    (Check::Ladder(levels), Some(CheckState::Ladder { ladder, last_value, .. })) => {
                        let open = ladder.open();
                        let since = open.map(|(_, since)| since);
                        let remembered = self.agreements[agreement].doubted.get(member).copied().flatten();
                        let doubted = since.is_some_and(|since| {
                            remembered == Some(since) || self.in_doubt_since(index, &self.agreements[agreement].doubters).is_some_and(|doubt| doubt < since)
                        });
                        Vote { open, value: last_value.get(), reached: ladder.reached(levels), doubted }
                    }
                    _ => none,
                }
            })
            .collect();
        let remembered = &mut self.agreements[agreement].doubted;
        remembered.clear();
        remembered.extend(votes.iter().map(|vote| vote.open.filter(|_| vote.doubted).map(|(_, since)| since)));
        votes
    }

    /// Since when a rule among `doubters` has been open on the box in `slot` (the earliest, if
    /// several are): the box is in doubt.
    fn in_doubt_since(&self, slot: usize, doubters: &[usize]) -> Option<Millis> {
        if doubters.is_empty() {
            return None;
        }
        let slot = &self.slots[slot];
        let plan = self.plan_of(slot);
        plan.checks
            .iter()
            .zip(self.states.of(slot, plan).checks)
            .filter(|(planned, _)| doubters.contains(&planned.rule()))
            .filter_map(|(_, state)| match state {
                CheckState::Ladder { ladder, .. } => ladder.open().map(|(_, since)| since),
                CheckState::Peers(peer) => peer.ladder.open().map(|(_, since)| since),
                CheckState::FlatLine { flat, .. } => flat.open.then_some(flat.run_since),
                _ => None,
            })
            .min()
    }

    /// Whether a sample with these fields carries nothing the sensor's building rules (`agree`)
    /// can read; `false` for a sensor without such rules.
    fn unreadable_by_its_building<K: AsRef<str>>(&self, slot: &SubjectSlot, fields: &[(K, f64)]) -> bool {
        let mut signals = self.plan_of(slot).checks.iter().filter(|c| c.agreement().is_some()).filter_map(|c| self.rules[c.rule()].signal.as_ref()).peekable();
        signals.peek().is_some() && !signals.any(|signal| signal.expr.evaluate(&|name| signal.expr.reported(fields, name)).is_some())
    }

    /// Whether the box in `slot` votes at `at` in its building's agreement on `rule`: a box
    /// silent for more than a day (and three report intervals) does not — neither its last
    /// level nor in the count of boxes that must agree; nor does a box whose readings carried
    /// nothing the rules can read for three report intervals (and [`UNREADABLE_VOTER_MS`]): it
    /// is heard but cannot see the wall, and a building whose other box lost an axis could never
    /// be red (an outside tester); nor a box that is stuck ([`Engine::stuck_on`]). A box not
    /// heard from yet (a start, a box just installed) still votes for the engine's first day.
    fn has_a_vote(&self, slot: usize, rule: usize, at: Millis) -> bool {
        !self.silent_voter(slot, at) && self.reads_the_wall(slot, at) && !self.stuck_on(slot, rule)
    }

    /// Whether a flat-line check of the box in `slot` is open on every field `rule` reads: the
    /// box repeats one reading and cannot see the wall move. Its vote "the wall stays" held a
    /// building whose whole wall jumped at an unconfirmed orange, for days after the installers
    /// were told the box was stuck (an outside tester: 0 of 14 two-box buildings red).
    fn stuck_on(&self, slot: usize, rule: usize) -> bool {
        let Some(read) = self.rules[rule].signal.as_ref().map(|signal| signal.expr.fields()) else { return false };
        let slot = &self.slots[slot];
        let plan = self.plan_of(slot);
        plan.checks.iter().zip(self.states.of(slot, plan).checks).any(|(planned, state)| {
            matches!(state, CheckState::FlatLine { flat, .. } if flat.open)
                && self.rules[planned.rule()].signal.as_ref().is_some_and(|signal| {
                    let flat = signal.expr.fields();
                    read.iter().all(|field| flat.iter().any(|f| crate::expr::same_name(f, field)))
                })
        })
    }

    /// Whether the box in `slot` lost its vote to silence at `at` ([`Engine::has_a_vote`]): silent
    /// for a day (and three report intervals) since its last reading, or since the engine's first
    /// reading or tick when it has not been heard from at all (an outside tester: a building whose
    /// other box never reported could never be red).
    fn silent_voter(&self, slot: usize, at: Millis) -> bool {
        let silent_after = self.sensors[slot].interval_ms.saturating_mul(3).max(SILENT_VOTER_MS);
        self.slots[slot].last_at.or(self.first_time).is_some_and(|last| at - last > silent_after)
    }

    /// Whether the box in `slot` still carries what its building's rules read ([`Engine::has_a_vote`]).
    fn reads_the_wall(&self, slot: usize, at: Millis) -> bool {
        let sensor = &self.sensors[slot];
        let unreadable_after = sensor.interval_ms.saturating_mul(3).max(UNREADABLE_VOTER_MS);
        sensor.unreadable_since == Millis::MIN || at - sensor.unreadable_since <= unreadable_after
    }

    /// How many boxes must agree at `at`: the rule's `agree`, but at most as many as still vote
    /// ([`Engine::has_a_vote`]), so a building whose other boxes died follows the one left, as a
    /// house with one box does (an outside tester: the box left could never raise red); and a
    /// box that went silent at red leaves no red behind it (another outside tester: a box that
    /// fell off the wall and died made its two-box building red a day later, on its last
    /// reading, while the box left read a quiet wall).
    ///
    /// A box silent for a day still counts against a level another box reached before its
    /// last reading: it saw the wall after that and did not agree (an outside tester: a faulty
    /// box's unconfirmed orange turned red a day after its neighbour fell silent, on no new
    /// reading). A level reached after it fell silent is the box left's to decide.
    fn needed_now(&self, index: usize, votes: &[Vote], at: Millis) -> usize {
        let agreement = &self.agreements[index];
        let voting = agreement.members.iter().filter(|&&(slot, _)| self.has_a_vote(slot, agreement.rule, at)).count();
        let highest =
            votes.iter().filter_map(|vote| vote.open.map(|(severity, _)| (severity, vote.reached))).max_by_key(|&(severity, reached)| (severity, reached));
        let witnesses = highest.and_then(|(_, reached)| reached).map_or(0, |reached| {
            agreement
                .members
                .iter()
                .filter(|&&(slot, _)| {
                    self.silent_voter(slot, at)
                        && self.reads_the_wall(slot, at)
                        && !self.stuck_on(slot, agreement.rule)
                        && self.slots[slot].last_at.is_some_and(|last| last >= reached)
                })
                .count()
        });
        agreement.needed.min((voting + witnesses).max(1))
    }

    /// Recomputes every building's state from its boxes without events (after a restore), as of
    /// the newest reading of its boxes.
    pub(crate) fn recompute_agreements(&mut self) {
        for index in 0..self.agreements.len() {
            let newest = self.agreements[index].members.iter().filter_map(|&(slot, _)| self.slots[slot].last_at).max().unwrap_or(Millis::MIN);
            let votes = self.votes(index, newest);
            let verdict = verdict(&votes, self.needed_now(index, &votes, newest), self.agreements[index].alone);
            self.agreements[index].open = verdict.open;
        }
    }
}

/// Works out each sensor's plan while the engine is built: shares equal plans, and groups, for
/// each rule with `agree`, the sensors of each building (same site and building) into one
/// agreement (sensors without a building stay on their own).
struct Planner<'r> {
    rules: &'r [Rule],
    /// Per rule, which signal stage it reads: the first rule with the same stage
    /// ([`NO_INDEX`] without a signal).
    stage_keys: Box<[u16]>,
    /// The distinct plans so far, each with its id (position in `Engine::plans`).
    plans: std::collections::HashMap<Plan, u32>,
    agreements: Vec<Agreement>,
    by_building: std::collections::HashMap<(usize, Arc<str>, Arc<str>), usize>,
    /// For rules with `peers`: each building's boxes, and the group of each (rule, building).
    peer_groups: Vec<Vec<(usize, usize)>>,
    peers_by_building: std::collections::HashMap<(usize, Arc<str>, Arc<str>), usize>,
    /// Shares the learned fields' names between plans.
    names: TextPool,
    /// The sensors' fresh states.
    states: States,
}

impl<'r> Planner<'r> {
    fn new(rules: &'r [Rule]) -> Planner<'r> {
        Planner {
            rules,
            stage_keys: stage_keys(rules),
            plans: std::collections::HashMap::new(),
            agreements: Vec::new(),
            by_building: std::collections::HashMap::new(),
            peer_groups: Vec::new(),
            peers_by_building: std::collections::HashMap::new(),
            names: TextPool::default(),
            states: States::default(),
        }
    }

    /// The slot of sensor `index`, with fresh states for its plan added to the lists.
    fn slot(&mut self, index: usize, subject: &Subject) -> SubjectSlot {
        let plan = self.plan(index, subject);
        let at = self.states.end();
        self.states.learned.extend(plan.learned.iter().map(|_| Learned::default()));
        self.states.stages.extend(plan.stages.iter().map(|_| StageState::default()));
        self.states.checks.extend(plan.checks.iter().map(|c| initial_state(&self.rules[c.rule()], c.variant())));
        self.states.thermal.extend(plan.thermal.iter().map(|_| Thermal::default()));
        let next = u32::try_from(self.plans.len()).unwrap_or(u32::MAX);
        let id = *self.plans.entry(plan).or_insert(next);
        SubjectSlot { last_at: None, last_sample: 0, plan: id, at, calibrated: Box::default() }
    }

    /// The distinct plans, by the id the slots name them with.
    fn into_plans(plans: std::collections::HashMap<Plan, u32>) -> Vec<Plan> {
        let mut plans: Vec<(u32, Plan)> = plans.into_iter().map(|(plan, id)| (id, plan)).collect();
        plans.sort_unstable_by_key(|&(id, _)| id);
        plans.into_iter().map(|(_, plan)| plan).collect()
    }

    fn plan(&mut self, index: usize, subject: &Subject) -> Plan {
        let (mut learned, mut stages, mut checks) = (Vec::<(Arc<str>, Millis)>::new(), Vec::<u16>::new(), Vec::new());
        let mut thermal: Vec<ThermalSpec> = Vec::new();
        for (rule_index, rule) in self.rules.iter().enumerate().filter(|(_, rule)| rule.scope.matches(subject)) {
            if let Some(signal) = &rule.signal {
                if let Some(BaselineSpec::Learn { window_ms }) = signal.baseline {
                    for field in signal.expr.fields().iter().copied().chain(signal.compensate.as_deref()) {
                        if !learned.iter().any(|(name, window)| &**name == field && *window == window_ms) {
                            learned.push((self.names.share(field), window_ms));
                        }
                    }
                }
                if let Some(temperature) = &signal.compensate {
                    self.plan_thermal(&mut thermal, temperature, &signal.expr);
                }
            }
            let key = self.stage_keys[rule_index];
            let stage = (key != NO_INDEX).then(|| {
                stages.iter().position(|&stage| self.stage_keys[usize::from(stage)] == key).unwrap_or_else(|| {
                    stages.push(narrow(Some(rule_index)));
                    stages.len() - 1
                })
            });
            let agreement = self.agreement(rule_index, subject, (index, checks.len()));
            let peers = self.peer_group(rule_index, subject, (index, checks.len()));
            checks.push(PlannedCheck { rule: narrow(Some(rule_index)), variant: narrow(rule.variant_for(subject)), agreement, peers, stage: narrow(stage) });
        }
        Plan { checks: checks.into(), stages: stages.into(), learned: learned.into(), thermal: thermal.into() }
    }

    /// Adds the fields of `expr` to the compensation by `temperature` (one per temperature field).
    fn plan_thermal(&mut self, thermal: &mut Vec<ThermalSpec>, temperature: &str, expr: &crate::expr::ValueExpr) {
        let position = thermal.iter().position(|spec| &*spec.temperature == temperature).unwrap_or_else(|| {
            thermal.push(ThermalSpec { temperature: self.names.share(temperature), fields: Box::default() });
            thermal.len() - 1
        });
        let spec = &mut thermal[position];
        let mut fields = std::mem::take(&mut spec.fields).into_vec();
        for field in expr.fields().iter() {
            if !fields.iter().any(|name| &**name == *field) {
                fields.push(self.names.share(field));
            }
        }
        spec.fields = fields.into_boxed_slice();
    }

    /// The agreement that the check at `member` (sensor, position) votes in, for a rule with
    /// `agree` on a sensor with a building.
    fn agreement(&mut self, rule: usize, subject: &Subject, member: (usize, usize)) -> u32 {
        let (Some(agree), Some(building)) = (self.rules[rule].agree, subject.building.as_ref()) else { return NO_AGREEMENT };
        let alone = self.rules[rule].alone;
        let rules = self.rules;
        let agreements = &mut self.agreements;
        let group = *self.by_building.entry((rule, subject.site.clone(), building.clone())).or_insert_with(|| {
            // Looked up once per building, not per box.
            let doubters = rules[rule].doubted_by.iter().filter_map(|id| rules.iter().position(|r| &r.id == id)).collect();
            agreements.push(Agreement {
                rule,
                members: Vec::new(),
                needed: usize::from(agree),
                alone,
                doubters,
                doubted: Vec::new(),
                open: None,
                reported: f64::NAN,
            });
            agreements.len() - 1
        });
        let agreement = &mut self.agreements[group];
        agreement.members.push(member);
        agreement.needed = usize::from(agree).clamp(1, agreement.members.len());
        u32::try_from(group).unwrap_or(NO_AGREEMENT)
    }
}

impl Planner<'_> {
    /// The group of its building's boxes that the check at `member` (sensor, position) is
    /// compared with, for a rule with `peers` on a sensor with a building.
    fn peer_group(&mut self, rule: usize, subject: &Subject, member: (usize, usize)) -> u32 {
        let Some(building) = subject.building.as_ref().filter(|_| self.rules[rule].peers) else { return NO_AGREEMENT };
        let groups = &mut self.peer_groups;
        let group = *self.peers_by_building.entry((rule, subject.site.clone(), building.clone())).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        self.peer_groups[group].push(member);
        u32::try_from(group).unwrap_or(NO_AGREEMENT)
    }
}

/// Each rule's stage key: the index of the first rule computing the same signal stage (rules
/// computing the same stage share its state), [`NO_INDEX`] without a signal.
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

pub(crate) fn initial_state(rule: &Rule, variant: Option<usize>) -> CheckState {
    match rule.check_of(variant) {
        Check::Ladder(_) if rule.peers => CheckState::Peers(Box::default()),
        Check::Ladder(_) => CheckState::Ladder { transform: TransformState::default(), ladder: LadderState::default(), last_value: ReportedValue::NONE },
        Check::NoData { .. } => CheckState::NoData(SilenceState::default()),
        Check::Clock { .. } => CheckState::Clock(ClockState::default()),
        Check::ClockBehind { .. } => CheckState::ClockBehind(Box::default()),
        Check::FlatLine { .. } => CheckState::FlatLine { transform: TransformState::default(), flat: Box::default() },
    }
}

/// What temperature compensation takes off `field` for `signal` (0 without compensation, or
/// before the sensor has learned it); `temperature_baseline` finds a field's baseline.
fn thermal_correction(plan: &Plan, thermal: &[Thermal], signal: &Signal, field: &str, temperature_baseline: impl Fn(&str) -> Option<f64>) -> f64 {
    let Some(temperature) = signal.compensate.as_deref() else { return 0.0 };
    let Some((spec, state)) = plan.thermal.iter().zip(thermal).find(|(spec, _)| &*spec.temperature == temperature) else { return 0.0 };
    let Some(index) = spec.fields.iter().position(|name| crate::expr::same_name(name, field)) else { return 0.0 };
    state.correction(index, temperature_baseline(temperature))
}

/// `planned` names the fields and windows of the sensor's `learned` baselines.
fn baseline_of(calibrated: &[(String, f64)], planned: &[(Arc<str>, Millis)], learned: &[Learned], field: &str, spec: BaselineSpec) -> Option<f64> {
    let fixed = calibrated.iter().find(|(name, _)| crate::expr::same_name(name, field)).map(|&(_, v)| v);
    match spec {
        BaselineSpec::Calibrated => fixed,
        BaselineSpec::Recent { .. } => None,
        BaselineSpec::Learn { window_ms } => fixed.or_else(|| {
            let position = planned.iter().position(|(name, window)| crate::expr::same_name(name, field) && *window == window_ms)?;
            learned.get(position).and_then(|l| l.value.get())
        }),
    }
}

/// Whether `fields` are a box's restart, not a measurement: every field of a sensor's `recent`
/// level of two or more fields reads exactly 0 while the box stood elsewhere — by that level,
/// or, before it has one, by its installation baseline (calibrated, set in the inventory or
/// learned), by [`crate::signal::RESTART_AWAY`] at least. A WitMotion or RION box sends 0 on both
/// axes after a power cut until its first measurement; a box mounted a few tenths of a degree off
/// plumb never reads exactly (0, 0) where it stood. Judged, such readings were a jump "at the
/// same place" (red on every house a power surge restarted, an outside tester), an hourly
/// median of zeros for a box reporting every 30–60 minutes (`tilt-danger` red, a second one),
/// and a new box's change from its inventory baseline at its first reading (an orange). A box
/// zeroed on its wall has its level and baseline near 0, and is judged as ever. Only a restart's
/// few readings ([`RESTART_READINGS`] in a row): after them, readings of (0, 0) are the box's — a
/// wall that moved back to plumb on a box reading hundredths of a degree was never red, and its
/// installers were told the box was frozen (an outside tester) — unless its thermometer reads
/// exactly 0 too (the caller's): a box that died sending zeros in every register. One that died
/// on (0, 0) with a live thermometer reads as a movement, as any box that dies on one reading far
/// from its level does.
fn restart_reading<K: AsRef<str>>(
    rules: &[Rule],
    plan: &Plan,
    stages: &[StageState],
    calibrated: &[(String, f64)],
    learned: &[Learned],
    fields: &[(K, f64)],
) -> bool {
    plan.stages.iter().zip(stages).any(|(&rule, state)| {
        let Some(signal) = rules[usize::from(rule)].signal.as_ref().filter(|s| matches!(s.baseline, Some(BaselineSpec::Recent { .. }))) else { return false };
        if !reads_only_zeros(signal, fields) {
            return false;
        }
        signal.level_away_from_zero(state).unwrap_or_else(|| {
            signal.expr.fields().iter().any(|name| {
                let installed =
                    calibrated.iter().find(|(field, _)| crate::expr::same_name(field, name)).map(|&(_, v)| v).or_else(|| {
                        plan.learned.iter().zip(learned).find(|((field, _), _)| crate::expr::same_name(field, name)).and_then(|(_, l)| l.value.get())
                    });
                installed.is_some_and(|at| at.abs() >= crate::signal::RESTART_AWAY)
            })
        })
    })
}

/// Whether `fields` read exactly 0 in every field of one of the sensor's `recent` levels of two
/// fields or more.
fn zero_reading<K: AsRef<str>>(rules: &[Rule], plan: &Plan, fields: &[(K, f64)]) -> bool {
    plan.stages.iter().any(|&rule| {
        rules[usize::from(rule)].signal.as_ref().is_some_and(|s| matches!(s.baseline, Some(BaselineSpec::Recent { .. })) && reads_only_zeros(s, fields))
    })
}

/// Whether `signal` reads two fields or more and `fields` carries every one of them as exactly 0.
fn reads_only_zeros<K: AsRef<str>>(signal: &Signal, fields: &[(K, f64)]) -> bool {
    let names = signal.expr.fields();
    names.len() >= 2 && names.iter().all(|name| lookup(fields, name) == Some(0.0))
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

/// Whether the temperature compensation `rule` reads is in use for the sensor (see
/// [`Thermal::in_use`]); false for a rule without `compensate`.
fn compensation_in_use(plan: &Plan, thermal: &[Thermal], rule: &Rule) -> bool {
    let Some(temperature) = rule.signal.as_ref().and_then(|signal| signal.compensate.as_deref()) else { return false };
    plan.thermal.iter().zip(thermal).any(|(spec, state)| &*spec.temperature == temperature && state.in_use())
}

/// A hash of a sample's field names and values (bit for bit), to tell a copy of it.
fn sample_fingerprint<K: AsRef<str>>(fields: &[(K, f64)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, value) in fields {
        name.as_ref().hash(&mut hasher);
        value.to_bits().hash(&mut hasher);
    }
    hasher.finish()
}

/// How far past the engine's clock (its latest tick) a reading counts as heard for no-data
/// rules, unless told otherwise: a reading between two ticks of a replay at one a minute is
/// heard at its own time.
const HEARD_AHEAD_MS: Millis = 60_000;

/// Runs one rule on one sample; `staged` is the value of the rule's signal stage (if it has one
/// and the sample carried its fields), `peers` the reference from the building's other boxes
/// (rules with `peers`); a ladder opens an incident from severity `lowest` up.
fn observe_check(
    rule: &Rule,
    variant: Option<usize>,
    state: &mut CheckState,
    at: Millis,
    staged: Option<f64>,
    peers: Option<f64>,
    lowest: Severity,
) -> Option<RuleEvent> {
    match (rule.check_of(variant), state) {
        (Check::Ladder(levels), CheckState::Peers(peer)) => {
            let (own, signal) = (staged?, rule.signal.as_ref()?);
            peer.own = LastValue::of(own);
            let moved = signal.transform(&mut peer.own_transform, at, own);
            let against_peers = peers.and_then(|reference| signal.transform(&mut peer.transform, at, own - reference));
            let value = crate::peers::judged(moved, against_peers)?;
            peer.last_value = ReportedValue::of(value);
            peer.ladder.observe_from(levels, lowest, value, at).map(|step| from_step(step, value, at))
        }
        (Check::Ladder(levels), CheckState::Ladder { transform, ladder, last_value }) => {
            let value = rule.signal.as_ref()?.transform(transform, at, staged?)?;
            *last_value = ReportedValue::of(value);
            ladder.observe_from(levels, lowest, value, at).map(|step| from_step(step, value, at))
        }
        (Check::NoData { severity, .. }, CheckState::NoData(silence)) => match silence.heard(at)? {
            Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, ((at - since) / 1000) as f64, at, since)),
            Change::Opened { .. } => None,
        },
        (Check::FlatLine { samples, lasting_ms, severity }, CheckState::FlatLine { transform, flat }) => {
            let value = rule.signal.as_ref()?.transform(transform, at, staged?)?;
            match flat.observe(value, at, *samples, *lasting_ms)? {
                Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, value, at, since)),
                Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, value, at, since)),
            }
        }
        _ => None,
    }
}

/// A clock check on a reading stamped `at` while the engine's clock reads `now` (`None` for
/// other checks); the event's value is how many seconds ahead the reading was stamped.
fn clock_check(rule: &Rule, variant: Option<usize>, state: &mut CheckState, at: Millis, now: Millis, what: Stamped) -> Option<RuleEvent> {
    let (Check::Clock { allowed_ms, severity }, CheckState::Clock(clock)) = (rule.check_of(variant), state) else { return None };
    let ahead_secs = (at.saturating_sub(now) / 1000) as f64;
    match clock.stamped(at, now, *allowed_ms, what)? {
        Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, ahead_secs, now, since)),
        Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, ahead_secs, now, since)),
    }
}

/// A `clock_behind` check on a reading judged at `at` while the engine's clock reads `now`
/// (`None` for other checks); the event's value is how many seconds behind it was stamped.
fn lag_check(rule: &Rule, variant: Option<usize>, state: &mut CheckState, at: Millis, now: Millis) -> Option<RuleEvent> {
    let (Check::ClockBehind { allowed_ms, hold_ms, severity }, CheckState::ClockBehind(lag)) = (rule.check_of(variant), state) else { return None };
    let behind_secs = (now.saturating_sub(at).max(0) / 1000) as f64;
    match lag.judged(at, now, *allowed_ms, *hold_ms)? {
        Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, behind_secs, now, since)),
        Change::Closed { since } => Some(event(EventKind::Cleared, *severity, None, behind_secs, now, since)),
    }
}

/// Lets time pass for one check; a ladder opens an incident from severity `lowest` up.
/// `watched_from`: when the no-data watches began again (see [`SilenceState::tick`]).
fn tick_check(
    rule: &Rule,
    variant: Option<usize>,
    state: &mut CheckState,
    (now, watched_from): (Millis, Option<Millis>),
    interval_ms: Millis,
    lowest: Severity,
) -> Option<RuleEvent> {
    match (rule.check_of(variant), state) {
        (Check::Ladder(levels), CheckState::Ladder { ladder, last_value, .. }) => {
            ladder.tick(levels, lowest, now).map(|step| from_step(step, last_value.get().unwrap_or(f64::NAN), now))
        }
        (Check::Ladder(levels), CheckState::Peers(peer)) => {
            peer.ladder.tick(levels, lowest, now).map(|step| from_step(step, peer.last_value.get().unwrap_or(f64::NAN), now))
        }
        (Check::NoData { after, severity }, CheckState::NoData(silence)) => match silence.tick(now, after.timeout(interval_ms), watched_from)? {
            Change::Opened { since } => Some(event(EventKind::Fired, *severity, None, ((now - since) / 1000) as f64, now, since)),
            Change::Closed { .. } => None,
        },
        _ => None,
    }
}

mod rewind;

#[cfg(test)]
mod tests;
