//! A compiled rule: everything checked, nothing left that can fail while evaluating.

use crate::expr::ValueExpr;
use crate::message::Messages;
use crate::scope::Scope;
use crate::severity::Severity;
use crate::signal::Signal;

pub use crate::time::Millis;

/// Rules, and overrides of one rule, an engine takes at most (the loader refuses more): a
/// plan keeps its indexes in 16 bits.
pub const MAX_RULES: usize = u16::MAX as usize - 1;

/// Where a value is bad, and where it counts as good again (hysteresis).
///
/// Invariant: the clear levels lie on the good side of the triggers or on them, and all are
/// finite.
///
/// Values are compared at the precision sensors send them: a value within float32 rounding of
/// a limit (0.15 sent as the f32 0.15000000596) counts as exactly on it, so a probe's reading of
/// a limit lands on the side the standard puts the limit on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Bad above `trigger` (strictly); good again below `clear`.
    Above { trigger: f64, clear: f64 },
    /// Bad at or above `trigger` ("a change of 0.1° or more"); good again below `clear`.
    AtLeast { trigger: f64, clear: f64 },
    /// Bad below `trigger` (strictly); good again above `clear`.
    Below { trigger: f64, clear: f64 },
    /// Bad at or below `trigger`; good again above `clear`.
    AtMost { trigger: f64, clear: f64 },
    /// Bad outside `[low, high]`; good again inside `(clear_low, clear_high)`.
    Outside { low: f64, high: f64, clear_low: f64, clear_high: f64 },
}

/// How far a value may lie from a limit and still count as on it: twice the rounding of a
/// float32 of the limit's size (about 2.4e-7 of it), the precision probes send and windows keep.
pub fn on_limit_tolerance(limit: f64) -> f64 {
    limit.abs() * 2.0 * f64::from(f32::EPSILON) + f64::MIN_POSITIVE
}

/// `value` is above `limit` by more than float32 rounding.
fn clearly_above(value: f64, limit: f64) -> bool {
    value > limit + on_limit_tolerance(limit)
}

/// `value` is below `limit` by more than float32 rounding.
fn clearly_below(value: f64, limit: f64) -> bool {
    value < limit - on_limit_tolerance(limit)
}

impl Bound {
    /// The value is on the bad side.
    pub fn breached(&self, value: f64) -> bool {
        match *self {
            Bound::Above { trigger, .. } => clearly_above(value, trigger),
            Bound::AtLeast { trigger, .. } => !clearly_below(value, trigger),
            Bound::Below { trigger, .. } => clearly_below(value, trigger),
            Bound::AtMost { trigger, .. } => !clearly_above(value, trigger),
            Bound::Outside { low, high, .. } => clearly_below(value, low) || clearly_above(value, high),
        }
    }

    /// The value is back past the clear level(s).
    pub fn recovered(&self, value: f64) -> bool {
        match *self {
            Bound::Above { clear, .. } | Bound::AtLeast { clear, .. } => clearly_below(value, clear),
            Bound::Below { clear, .. } | Bound::AtMost { clear, .. } => clearly_above(value, clear),
            Bound::Outside { clear_low, clear_high, .. } => clearly_above(value, clear_low) && clearly_below(value, clear_high),
        }
    }

    /// The trigger of a one-sided bound, and whether values grow worse upwards.
    pub fn one_sided(&self) -> Option<(f64, bool)> {
        match *self {
            Bound::Above { trigger, .. } | Bound::AtLeast { trigger, .. } => Some((trigger, true)),
            Bound::Below { trigger, .. } | Bound::AtMost { trigger, .. } => Some((trigger, false)),
            Bound::Outside { .. } => None,
        }
    }

    /// "above 0.401" / "at least 0.1" / "below 5" / "at most 0" / "outside 6..9".
    pub fn describe(&self) -> String {
        match *self {
            Bound::Above { trigger, .. } => format!("above {trigger}"),
            Bound::AtLeast { trigger, .. } => format!("at least {trigger}"),
            Bound::Below { trigger, .. } => format!("below {trigger}"),
            Bound::AtMost { trigger, .. } => format!("at most {trigger}"),
            Bound::Outside { low, high, .. } => format!("outside {low}..{high}"),
        }
    }

    /// "back below 0.37" / "back above 5.3" / "back inside 6.2..8.8".
    pub fn describe_clear(&self) -> String {
        match *self {
            Bound::Above { clear, .. } | Bound::AtLeast { clear, .. } => format!("back below {clear}"),
            Bound::Below { clear, .. } | Bound::AtMost { clear, .. } => format!("back above {clear}"),
            Bound::Outside { clear_low, clear_high, .. } => format!("back inside {clear_low}..{clear_high}"),
        }
    }
}

/// "k of the last n samples": the breach is judged over a short history instead of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub k: u8,
    /// At most 64.
    pub n: u8,
}

/// One step of a ladder (or the only one of a simple threshold rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub severity: Severity,
    pub bound: Bound,
    /// How long the breach must last before this level is reached.
    pub raise_hold_ms: Millis,
    /// How long the recovery must last before this level is left.
    pub clear_hold_ms: Millis,
    pub count: Option<Count>,
}

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Threshold levels, lowest severity first; the rule's severity is the highest level reached.
    Ladder(Vec<Level>),
    /// The sensor has sent nothing for this long.
    NoData { after: Silence, severity: Severity },
    /// The value has not changed over this many consecutive samples, lasting at least
    /// `lasting_ms` (0: any time).
    FlatLine { samples: u32, lasting_ms: Millis, severity: Severity },
    /// A reading stamped more than `allowed_ms` ahead of the engine's clock (its latest tick):
    /// the device's clock jumped ahead, and its later readings will be refused as out of order.
    Clock { allowed_ms: Millis, severity: Severity },
    /// Readings stamped more than `allowed_ms` behind the engine's clock, reading after reading
    /// for `hold_ms` without the lag shrinking as a backlog's does: the device's clock is
    /// behind (see [`crate::device::LagState`]). Judged only while the engine's clock is true
    /// time ([`crate::Engine::judge_lags`]).
    ClockBehind { allowed_ms: Millis, hold_ms: Millis, severity: Severity },
}

/// "the same value 240 times in a row" / "the same value for 2h (3 readings or more)".
pub fn describe_flat_line(samples: u32, lasting_ms: Millis) -> String {
    if lasting_ms == 0 {
        return format!("the same value {samples} times in a row");
    }
    let lasting = humantime::format_duration(std::time::Duration::from_millis(lasting_ms.max(0) as u64));
    format!("the same value for {lasting} ({samples} readings or more)")
}

/// How long silence may last before a no-data rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Silence {
    Fixed(Millis),
    /// A multiple of the sensor's expected report interval.
    Intervals(f64),
    /// A multiple of the report interval, but never less than a duration (`"max(2x, 10m)"`): a
    /// probe reporting every minute is not called silent for two lost packets.
    IntervalsAtLeast(f64, Millis),
}

impl Silence {
    /// How long a sensor reporting every `interval_ms` may be silent.
    pub fn timeout(self, interval_ms: Millis) -> Millis {
        let of_interval = |factor: f64| (interval_ms as f64 * factor) as Millis;
        match self {
            Silence::Fixed(ms) => ms,
            Silence::Intervals(factor) => of_interval(factor),
            Silence::IntervalsAtLeast(factor, floor) => of_interval(factor).max(floor),
        }
    }
}

/// A rule's check replaced for the sensors a scope picks out (`[[rule.override]]`): a lower
/// threshold for a fragile house, another target for one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub scope: Scope,
    pub check: Check,
}

/// Where a rule was defined, for messages that send the operator back to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

/// One compiled alarm rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique across all loaded files; names the rule in alerts and in the store.
    pub id: String,
    /// One line for people: what is wrong when this fires.
    pub title: String,
    /// Message templates by language; may be empty (then alerts use the title).
    pub messages: Messages,
    pub scope: Scope,
    /// What is compared; `None` only for no-data and clock rules.
    pub signal: Option<Signal>,
    /// Unit of the compared value, shown next to numbers in alerts ("‰", "mg/L").
    pub unit: String,
    pub check: Check,
    /// Checks for some sensors instead of `check`; the last matching one wins.
    pub overrides: Vec<Override>,
    /// A device alarm (dead box, stuck value, out of range): for installers, not grid workers.
    pub device: bool,
    /// Judge the building, not the box: its severity is the level that at least this many of
    /// its sensors (all of them, if it has fewer) have reached. `None`: each sensor on its own.
    pub agree: Option<u8>,
    /// With `agree`: the highest severity one box may raise for its building on its own, as an
    /// unconfirmed alarm, until another box confirms it (`alone = "alarm"`).
    pub alone: Option<Severity>,
    /// With `alone`: rules (ids) that doubt a box while they are open on it (`doubted_by =
    /// ["tilt-erratic"]`): a level the box reached after one of them opened counts as a lone
    /// box's, capped at `alone`, unless a box not in doubt stands at it too — a house of one box
    /// whose box was already told erratic is not red on its word alone.
    pub doubted_by: Vec<String>,
    /// Judge each box against the other boxes of its building (`peers = "building"`): the
    /// signal's stage value less the median of theirs ([`crate::peers`]). A box alone on its
    /// building has nothing to be compared with and yields no value.
    pub peers: bool,
    /// With `compensate`: the lowest severity the rule raises for a box whose temperature
    /// compensation is not in use ([`crate::thermal::Thermal::in_use`]: it reports no
    /// temperature, or one that cannot be matched with its angles): there its lower levels open
    /// no incident, though one opened by a higher level steps down through them and clears by
    /// their clear levels (`uncompensated = "warning"`). `None`: every level, compensated or not.
    pub uncompensated: Option<Severity>,
    pub origin: Origin,
}

impl Rule {
    /// The expression the rule reads, for messages ("hypot(x, y)"); "no data" for deadman rules.
    pub fn value_label(&self) -> String {
        match &self.signal {
            Some(signal) => signal.to_string(),
            None if matches!(self.check, Check::Clock { .. } | Check::ClockBehind { .. }) => "reading time".into(),
            None => "no data".into(),
        }
    }

    /// Which override applies to a sensor (`None`: the rule's own check).
    pub fn variant_for(&self, subject: &crate::scope::Subject) -> Option<usize> {
        self.overrides.iter().rposition(|o| o.scope.matches(subject))
    }

    /// The check of a variant (see [`Rule::variant_for`]).
    pub fn check_of(&self, variant: Option<usize>) -> &Check {
        variant.and_then(|v| self.overrides.get(v)).map_or(&self.check, |o| &o.check)
    }

    /// The level with this severity in a variant's check, when it is a ladder.
    pub fn level(&self, variant: Option<usize>, severity: Severity) -> Option<&Level> {
        match self.check_of(variant) {
            Check::Ladder(levels) => levels.iter().find(|level| level.severity == severity),
            _ => None,
        }
    }

    /// The expression of the signal, when there is one.
    pub fn expr(&self) -> Option<&ValueExpr> {
        self.signal.as_ref().map(|signal| &signal.expr)
    }
}
