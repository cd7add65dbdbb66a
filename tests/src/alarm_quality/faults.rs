//! Device faults, applied from their onset to one box's finished readings (the wall behind it
//! stays healthy, and so do the building's other boxes): drift, a stuck value, a sign flip of
//! one axis (permanent or intermittent), erratic noise, bursts of spikes, a clock that jumps
//! hours ahead and back, coarse quantisation, one axis frozen while the other lives on.
//!
//! Invariant: readings before the onset are left exactly as they were; every changed value is
//! a float32 again.

use super::{degrees_of, f32_value, log_uniform, normal, uniform, Stream, DAY, HOUR};
use gridwatch_rules::Millis;
use std::f64::consts::TAU;

/// What goes wrong with the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The reading drifts `rate` ‰/day in direction `dir`.
    Drift { rate: f64, dir: f64 },
    /// The box repeats its last good reading exactly.
    Stuck,
    /// Axis `axis` (0 = x, 1 = y) changes sign, for good or in short episodes.
    SignFlip { axis: usize, intermittent: bool },
    /// Noise of σ `sigma` degrees on both axes.
    Erratic { sigma: f64 },
    /// Bursts (`per_day`) of 3–20 readings, most of them spikes of 0.1–2°.
    SpikeBursts { per_day: f64 },
    /// The device clock runs `ahead` ms ahead for `lasting` ms, then is set right.
    ClockJump { ahead: Millis, lasting: Millis },
    /// The box rounds its angles to `quantum` degrees.
    CoarseQuantisation { quantum: f64 },
    /// Axis `axis` repeats its last good value; the other axis and the temperature live on.
    AxisFrozen { axis: usize },
}

/// The fault kinds, each a sub-family.
pub const FAULT_KINDS: [&str; 9] =
    ["drift", "stuck", "sign flip", "sign flip intermittent", "erratic", "spike bursts", "clock jump", "coarse quantisation", "one axis frozen"];

impl Fault {
    /// A fault of kind `FAULT_KINDS[kind]` with its parameters drawn.
    pub fn draw(rng: &mut fastrand::Rng, kind: usize) -> Fault {
        match kind {
            0 => Fault::Drift { rate: log_uniform(rng, 0.5, 5.0), dir: uniform(rng, 0.0, TAU) },
            1 => Fault::Stuck,
            2 => Fault::SignFlip { axis: rng.usize(0..2), intermittent: false },
            3 => Fault::SignFlip { axis: rng.usize(0..2), intermittent: true },
            4 => Fault::Erratic { sigma: log_uniform(rng, 0.05, 0.5) },
            5 => Fault::SpikeBursts { per_day: uniform(rng, 2.0, 12.0) },
            6 => Fault::ClockJump { ahead: rng.i64(HOUR..24 * HOUR), lasting: rng.i64(HOUR..24 * HOUR) },
            7 => Fault::CoarseQuantisation { quantum: uniform(rng, 0.05, 0.2) },
            _ => Fault::AxisFrozen { axis: rng.usize(0..2) },
        }
    }

    /// Applies the fault to the readings from `onset` on; returns when the first reading it
    /// changed arrived — the fault's first symptom, which for bursts and intermittent flips comes
    /// hours after the onset (`None` if no reading changed).
    pub fn apply(&self, stream: &mut Stream, onset: Millis, rng: &mut fastrand::Rng) -> Option<Millis> {
        let first = stream.arrive.partition_point(|&t| t < onset);
        let last_good = first.checked_sub(1).map(|i| stream.reading(i).to_vec());
        let mut episode = 0usize;
        let mut symptom = None;
        for i in first..stream.len() {
            let before = (stream.reading(i).to_vec(), stream.at[i]);
            let since = stream.arrive[i] - onset;
            let interval = if i > 0 { stream.arrive[i] - stream.arrive[i - 1] } else { 60_000 };
            let values = stream.reading_mut(i);
            match *self {
                Fault::Drift { rate, dir } => {
                    let size = rate * since as f64 / DAY as f64;
                    values[0] = f32_value(values[0] + degrees_of(size * dir.cos()));
                    values[1] = f32_value(values[1] + degrees_of(size * dir.sin()));
                }
                Fault::Stuck => {
                    if let Some(good) = &last_good {
                        values.copy_from_slice(good);
                    }
                }
                Fault::SignFlip { axis, intermittent } => {
                    let flipped = if intermittent {
                        if episode == 0 && rng.f64() < 6.0 * interval as f64 / DAY as f64 {
                            episode = rng.usize(1..=12);
                        }
                        let on = episode > 0;
                        episode = episode.saturating_sub(1);
                        on
                    } else {
                        true
                    };
                    if flipped {
                        values[axis] = -values[axis];
                    }
                }
                Fault::Erratic { sigma } => {
                    values[0] = f32_value(values[0] + normal(rng) * sigma);
                    values[1] = f32_value(values[1] + normal(rng) * sigma);
                }
                Fault::SpikeBursts { per_day } => {
                    if episode == 0 && rng.f64() < per_day * interval as f64 / DAY as f64 {
                        episode = rng.usize(3..=20);
                    }
                    if episode > 0 {
                        episode -= 1;
                        if rng.f64() < 0.7 {
                            let (size, dir) = (uniform(rng, 0.1, 2.0), uniform(rng, 0.0, TAU));
                            values[0] = f32_value(values[0] + size * dir.cos());
                            values[1] = f32_value(values[1] + size * dir.sin());
                        }
                    }
                }
                Fault::ClockJump { ahead, lasting } => {
                    if since < lasting {
                        stream.at[i] += ahead;
                    }
                }
                Fault::AxisFrozen { axis } => {
                    if let Some(good) = &last_good {
                        values[axis] = good[axis];
                    }
                }
                Fault::CoarseQuantisation { quantum } => {
                    values[0] = f32_value((values[0] / quantum).round() * quantum);
                    values[1] = f32_value((values[1] / quantum).round() * quantum);
                }
            }
            if symptom.is_none() && (stream.reading(i) != before.0.as_slice() || stream.at[i] != before.1) {
                symptom = Some(stream.arrive[i]);
            }
        }
        symptom
    }
}
