//! The alarm-quality corpus and its scorer (issue 17, STYLE habit 12): a seeded generator of
//! realistic sensor histories with their ground truth, replayed through the *shipped* rule packs
//! by the pure engine, and scored as rates — false alarms per 100 box-years, detection delay,
//! misses, flapping, faulty boxes told apart. docs/ALARM-QUALITY.md describes the families and
//! the targets; `gridwatch-alarm-eval` prints the full tables, `tests/alarm_quality.rs` runs a
//! reduced corpus in the test suite.
//!
//! Layout, in the order a case travels:
//!
//! - [`corpus`]: which cases a run holds (family, sub-family, seed) for a given scale.
//! - [`tilt`]: a healthy wall seen by a box (mounting offset, daily and seasonal swing, noise,
//!   spikes, gaps, sampling, quantisation, float32).
//! - [`movements`]: real movements laid over a healthy wall (creep, jump, lean then jump).
//! - [`faults`]: device faults applied to one box's readings (drift, stuck, sign flip, …).
//! - [`water`]: a living river seen by a probe, and the GB 3838 boundary cases.
//! - [`replay`]: one case through an [`Engine`](gridwatch_rules::Engine), minute ticks included.
//! - [`score`]: the replayed cases turned into rates and checked against the targets.
//! - [`report`]: the scores as text tables or JSON.
//!
//! Invariants: a case is a pure function of (run seed, family, index) — the same seed gives the
//! same corpus whatever the scale or the number of threads; every value reaches the engine as a
//! float32 (`f64::from(v as f32)`), as it does from a real register; the scorer never looks at
//! rule ids, only at `Rule::device` and severities (ids only label the per-rule table).

pub mod corpus;
pub mod faults;
pub mod movements;
pub mod one_case;
pub mod replay;
pub mod report;
pub mod score;
pub mod tilt;
pub mod water;

use gridwatch_rules::{Millis, Subject};

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;
pub const YEAR: Millis = 365 * DAY;
pub const WEEK: Millis = 7 * DAY;

/// 2024-01-01T00:00Z: day 0 of the simulated calendar (cases start at any day after it).
pub const EPOCH_MS: Millis = 1_704_067_200_000;

/// A value as a float32 register delivers it.
pub fn f32_value(value: f64) -> f64 {
    f64::from(value as f32)
}

/// The angle (degrees) whose tilt ratio is `permille` ‰.
pub fn degrees_of(permille: f64) -> f64 {
    (permille / 1000.0).atan().to_degrees()
}

/// The tilt ratio (‰) of an angle in degrees.
pub fn permille_of(degrees: f64) -> f64 {
    degrees.to_radians().tan() * 1000.0
}

/// One sensor's readings, as the engine will get them.
///
/// Invariant: `arrive` is non-decreasing and `values` holds `fields.len()` values per reading.
#[derive(Debug, Clone)]
pub struct Stream {
    pub subject: Subject,
    pub fields: &'static [&'static str],
    /// When each reading reaches the engine (the simulation's true time).
    pub arrive: Vec<Millis>,
    /// The device's timestamp of each reading, passed to the engine (differs from `arrive`
    /// only under a clock fault).
    pub at: Vec<Millis>,
    pub values: Vec<f64>,
}

impl Stream {
    pub fn new(subject: Subject, fields: &'static [&'static str]) -> Stream {
        Stream { subject, fields, arrive: Vec::new(), at: Vec::new(), values: Vec::new() }
    }

    pub fn push(&mut self, at: Millis, values: &[f64]) {
        self.arrive.push(at);
        self.at.push(at);
        self.values.extend(values.iter().map(|&v| f32_value(v)));
    }

    pub fn len(&self) -> usize {
        self.arrive.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrive.is_empty()
    }

    /// The values of reading `i`.
    pub fn reading(&self, i: usize) -> &[f64] {
        let n = self.fields.len();
        &self.values[i * n..(i + 1) * n]
    }

    pub fn reading_mut(&mut self, i: usize) -> &mut [f64] {
        let n = self.fields.len();
        &mut self.values[i * n..(i + 1) * n]
    }
}

/// What really happened in a case: the scorer's ground truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// Nothing but weather, noise and the usual glitches.
    Healthy,
    /// Box `target` creeps; the noiseless creep (vector change from the installation position)
    /// crosses 1.5‰ at `at_1_5` and 2‰ at `at_2`.
    Creep { target: usize, start: Millis, rate_per_day: f64, at_1_5: Millis, at_2: Millis, until: Millis },
    /// Box `target` jumps by `size_deg` at `at`, `relative_deg` from its mounting offset's
    /// direction (after a lean of `lean_per_day` ‰/day, if any); with `whole_building`, every
    /// box of the building jumps alike.
    Jump { target: usize, at: Millis, size_deg: f64, relative_deg: f64, lean_per_day: f64, whole_building: bool },
    /// Box `target` of a building of several goes wrong at `onset`.
    Fault { target: usize, onset: Millis },
    /// A water probe; `onset` of fouling or the first calibration step, if any.
    Water { onset: Option<Millis> },
    /// A value exactly on the target class's own GB 3838 limit: must not alarm.
    Boundary { field: &'static str, value: f64, class: &'static str, lake: bool },
}

/// One generated case: the sensors of a building (or one water probe) over `[start, end)`.
#[derive(Debug, Clone)]
pub struct Case {
    pub streams: Vec<Stream>,
    pub start: Millis,
    pub end: Millis,
    pub truth: Truth,
    /// The smallest report interval among the case's sensors.
    pub interval_ms: Millis,
}

/// A standard normal deviate (Box–Muller; fastrand has none).
pub fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(f64::MIN_POSITIVE);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Uniform in `[low, high)`.
pub fn uniform(rng: &mut fastrand::Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.f64()
}

/// Log-uniform in `[low, high)`: as many cases per decade.
pub fn log_uniform(rng: &mut fastrand::Rng, low: f64, high: f64) -> f64 {
    (low.ln() + (high.ln() - low.ln()) * rng.f64()).exp()
}

/// A uniform time in `[low, high)`.
pub fn between(rng: &mut fastrand::Rng, low: Millis, high: Millis) -> Millis {
    if high <= low {
        low
    } else {
        rng.i64(low..high)
    }
}
