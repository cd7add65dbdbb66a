//! gridwatch-rules: alarm rules for gridwatch, as a pure library.
//!
//! Layout, in the order a rule travels:
//!
//! - [`load`]: rule files (TOML text, read by the caller) are parsed and checked into a
//!   [`RuleSet`]; every problem becomes a [`Diagnostic`] with file, line, column and key.
//! - [`packs`]: the default rule packs shipped in the binary.
//! - [`engine`]: an [`Engine`] evaluates a rule set over the sensor inventory. It is fed samples
//!   (time order per sensor) and ticks, and returns [`RuleEvent`]s (`fired` / `cleared`).
//! - [`signal`]: what a rule compares — an expression over fields ([`expr`]), relative to a
//!   baseline, smoothed, or turned into a change over a window.
//! - [`ladder`] and [`threshold`]: graded levels with hysteresis, hold times and "k of n"; one
//!   incident per rule and sensor whose severity moves.
//! - [`device`]: no-data and flat-line checks on the equipment.
//! - [`peers`]: a box judged against the other boxes of its building.
//! - [`last_value`]: the latest judged value of a check, kept in 8 bytes.
//! - [`window`]: the readings a window keeps, and how windows are saved.
//! - [`snapshot`]: the engine's state as data, to survive restarts and reloads.
//! - [`shared_text`]: one copy of the texts many sensors share (site, grid, tags).
//! - [`scope`], [`severity`], [`message`], [`rule`]: the parts a compiled rule is made of.
//!
//! No IO, no tokio, no clock: time is always an argument ([`Millis`]).

mod agreement;
pub mod device;
pub mod diagnostic;
pub mod engine;
pub mod expr;
pub mod ladder;
pub mod last_value;
pub mod load;
pub mod message;
pub mod packs;
pub mod peers;
pub mod rule;
pub mod scope;
pub mod severity;
pub mod shared_text;
pub mod signal;
pub mod snapshot;
pub mod thermal;
pub mod threshold;
pub mod time;
pub mod window;

pub use diagnostic::{Diagnostic, RuleErrors};
pub use engine::{Engine, EventKind, Observed, RuleEvent, RuleId, SubjectId};
pub use load::{RuleSet, RuleSource};
pub use packs::builtin_packs;
pub use rule::{Millis, Rule};
pub use scope::{SensorKind, Subject, Tags};
pub use severity::Severity;
pub use shared_text::TextPool;
