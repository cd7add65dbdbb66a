//! Real movements of a wall, laid over its healthy swing as a change of tilt ratio (‰, x and
//! y): a creep at a steady rate up to about 5‰, a jump of 0.1–0.5° in any direction relative to
//! the box's mounting offset, and a slow lean followed by a jump. Each comes with its ground
//! truth ([`Truth`]): the times the noiseless creep crosses 1.5‰ and 2‰, or the jump's time and
//! size.
//!
//! Invariant: a movement starts at least 3 days after installation, so the 24-hour baseline is
//! learned from the healthy wall.

use super::{permille_of, uniform, Truth, DAY};
use gridwatch_rules::Millis;
use std::f64::consts::TAU;

/// A movement as a function of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Movement {
    None,
    /// `rate` ‰/day in direction `dir` from `start`, until the change reaches `stop` ‰.
    Creep {
        start: Millis,
        rate: f64,
        dir: f64,
        stop: f64,
    },
    /// A step of (dx, dy) ‰ at `at`, after an optional lean of `rate` ‰/day from `lean_start`.
    Jump {
        lean_start: Millis,
        rate: f64,
        lean_dir: f64,
        at: Millis,
        dx: f64,
        dy: f64,
    },
}

impl Movement {
    /// The change (‰, x and y) at `t`.
    pub fn at(&self, t: Millis) -> (f64, f64) {
        match *self {
            Movement::None => (0.0, 0.0),
            Movement::Creep { start, rate, dir, stop } => {
                let size = (rate * (t - start).max(0) as f64 / DAY as f64).min(stop);
                (size * dir.cos(), size * dir.sin())
            }
            Movement::Jump { lean_start, rate, lean_dir, at, dx, dy } => {
                let lean = rate * ((t.min(at) - lean_start).max(0) as f64 / DAY as f64);
                let (jx, jy) = if t >= at { (dx, dy) } else { (0.0, 0.0) };
                (lean * lean_dir.cos() + jx, lean * lean_dir.sin() + jy)
            }
        }
    }
}

/// The creep sub-families: a rate band (‰/day) and whether the creeping box reports a
/// temperature (as drawn, four boxes in five, or never: what a box without temperature
/// compensation costs in warning of a slow creep).
pub const CREEP_BANDS: [(&str, f64, f64, CreepThermometer); 4] = [
    ("creep 0.02-0.05 permille/day", 0.02, 0.05, CreepThermometer::AsDrawn),
    ("creep 0.05-0.15 permille/day", 0.05, 0.15, CreepThermometer::AsDrawn),
    ("creep 0.15-0.5 permille/day", 0.15, 0.5, CreepThermometer::AsDrawn),
    ("creep 0.02-0.05 permille/day, no temperature", 0.02, 0.05, CreepThermometer::None),
];

/// Whether the boxes of a creep case report their temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreepThermometer {
    /// Four boxes in five.
    AsDrawn,
    /// No box of the building.
    None,
}

/// A creep of box `target` starting 3–10 days after `install`, at a rate drawn log-uniformly
/// in `band`; returns the movement, its truth and the case's end (3 days after reaching 5‰).
pub fn creep(rng: &mut fastrand::Rng, target: usize, install: Millis, band: (f64, f64)) -> (Movement, Truth, Millis) {
    let rate = super::log_uniform(rng, band.0, band.1);
    let start = install + 3 * DAY + rng.i64(0..7 * DAY);
    let crossing = |permille: f64| start + (permille / rate * DAY as f64).ceil() as Millis;
    let until = crossing(5.0);
    let movement = Movement::Creep { start, rate, dir: uniform(rng, 0.0, TAU), stop: 5.0 };
    let truth = Truth::Creep { target, start, rate_per_day: rate, at_1_5: crossing(1.5), at_2: crossing(2.0), until };
    (movement, truth, until + 3 * DAY)
}

/// A jump of box `target` (mounted with its offset in direction `offset_dir`; with
/// `whole_building`, of every box alike) 3–8 days after `install`, or after a lean when `lean`
/// is set; returns the movement, its truth and the case's
/// end (a day after the jump).
///
/// Sizes: a quarter exactly 0.1°, the rest 0.1–0.5°. Directions relative to the offset: a
/// quarter exactly at right angles, a tenth exactly along it (either way), the rest uniform.
pub fn jump(rng: &mut fastrand::Rng, target: usize, install: Millis, offset_dir: f64, lean: bool, whole_building: bool) -> (Movement, Truth, Millis) {
    let size_deg = if rng.u8(0..4) == 0 { 0.1 } else { uniform(rng, 0.1, 0.5) };
    let relative_deg = match rng.u8(0..20) {
        0..=4 => {
            if rng.bool() {
                90.0
            } else {
                270.0
            }
        }
        5 | 6 => {
            if rng.bool() {
                0.0
            } else {
                180.0
            }
        }
        _ => uniform(rng, 0.0, 360.0),
    };
    let dir = offset_dir + relative_deg.to_radians();
    let size = permille_of(size_deg);
    let lean_start = install + 3 * DAY + rng.i64(0..4 * DAY);
    let (rate, lean_dir, at) = if lean {
        // 0.1–0.5‰/day for 1–4‰ in all (2 to 40 days), then the jump.
        let rate = uniform(rng, 0.1, 0.5);
        let total = uniform(rng, 1.0, 4.0);
        (rate, uniform(rng, 0.0, TAU), lean_start + (total / rate * DAY as f64) as Millis)
    } else {
        (0.0, 0.0, lean_start + rng.i64(0..DAY))
    };
    let movement = Movement::Jump { lean_start, rate, lean_dir, at, dx: size * dir.cos(), dy: size * dir.sin() };
    let truth = Truth::Jump { target, at, size_deg, relative_deg, lean_per_day: rate, whole_building };
    (movement, truth, at + DAY)
}
