//! A compiled rule: everything checked, nothing left that can fail while evaluating.

use crate::expr::ValueExpr;
use crate::scope::Scope;
use crate::severity::Severity;

/// Milliseconds since the Unix epoch (UTC). The engine never reads a clock: every time it
/// sees comes from a sample or from the caller's tick.
pub type Millis = i64;

/// Which side of the trigger level is the bad side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Fires when the value rises above the trigger (`above = …`).
    Above,
    /// Fires when the value falls below the trigger (`below = …`).
    Below,
}

/// A threshold with hysteresis and hold times.
///
/// Invariant: the clear level is on the good side of the trigger or equal to it
/// (`clear <= trigger` for `Above`, `clear >= trigger` for `Below`), both are finite, and the
/// hold times are not negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub direction: Direction,
    /// Level whose crossing (strictly) raises the alert.
    pub trigger: f64,
    /// Level the value must cross back over (strictly) for the alert to clear.
    pub clear: f64,
    /// How long the trigger condition must hold before the alert fires.
    pub raise_hold_ms: Millis,
    /// How long the clear condition must hold before the alert clears.
    pub clear_hold_ms: Millis,
}

impl Threshold {
    /// The value is on the bad side of the trigger.
    pub fn breached(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value > self.trigger,
            Direction::Below => value < self.trigger,
        }
    }

    /// The value is back on the good side of the clear level.
    pub fn recovered(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear,
            Direction::Below => value > self.clear,
        }
    }

    /// "back below 0.37" / "back above 5.3": the clear condition in words, for messages.
    pub fn describe_clear(&self) -> String {
        match self.direction {
            Direction::Above => format!("back below {}", self.clear),
            Direction::Below => format!("back above {}", self.clear),
        }
    }

    /// "above 0.401" / "below 5": the comparison in words, for messages.
    pub fn describe(&self) -> String {
        match self.direction {
            Direction::Above => format!("above {}", self.trigger),
            Direction::Below => format!("below {}", self.trigger),
        }
    }
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
    pub scope: Scope,
    pub value: ValueExpr,
    /// Unit of the compared value, shown next to numbers in alerts ("°", "mg/L").
    pub unit: String,
    pub threshold: Threshold,
    pub severity: Severity,
    pub origin: Origin,
}
