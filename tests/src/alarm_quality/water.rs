//! A living river as a surface-water probe sees it (GB 3838, target class III unless drawn
//! otherwise): dissolved oxygen with its daily cycle (highest mid-afternoon, lowest before
//! dawn) whose noiseless value stays inside the target class, the pH cycle (7.0–8.6), ammonia,
//! CODMn, COD and total phosphorus inside the class, turbidity and conductivity with rain
//! events (the river diluted by the rain, by a share drawn per probe), and, per sub-family, slow
//! probe fouling (the DO reading decays), calibration steps, or a muddy discharge (turbidity up
//! 3–10× for hours, the river not diluted: what `water-turbidity-above-usual` is for).
//! Also the boundary cases: a value exactly on the target class's own limit, as a float32.
//!
//! Invariant: in the healthy sub-families every noiseless value is inside the target class.

use super::{between, log_uniform, normal, uniform, Case, Stream, Truth, DAY, EPOCH_MS, HOUR, MINUTE};
use gridwatch_rules::{Millis, SensorKind, Subject};
use std::collections::BTreeMap;
use std::f64::consts::TAU;

pub const WATER_FIELDS: &[&str] = &["do", "ph", "nh3n", "codmn", "cod", "tp", "turbidity", "conductivity", "orp", "temperature"];

pub const CLASSES: [&str; 5] = ["I", "II", "III", "IV", "V"];
/// GB 3838-2002 limits per class (domain.md §3): DO is a minimum, the others maxima.
pub const DO_MIN: [f64; 5] = [7.5, 6.0, 5.0, 3.0, 2.0];
pub const NH3N_MAX: [f64; 5] = [0.15, 0.5, 1.0, 1.5, 2.0];
pub const CODMN_MAX: [f64; 5] = [2.0, 4.0, 6.0, 10.0, 15.0];
pub const COD_MAX: [f64; 5] = [15.0, 15.0, 20.0, 30.0, 40.0];
pub const TP_RIVER_MAX: [f64; 5] = [0.02, 0.1, 0.2, 0.3, 0.4];
pub const TP_LAKE_MAX: [f64; 5] = [0.01, 0.025, 0.05, 0.1, 0.2];

/// The water sub-families.
pub const WATER_KINDS: [&str; 5] = ["healthy river (dry)", "river with rain", "probe fouling", "calibration steps", "muddy discharge"];

/// The sub-family with rain events.
pub const RAIN: usize = 1;
/// The sub-family whose probes run 90 days (fouling).
pub const FOULING: usize = 2;
/// The sub-family with calibration steps.
pub const CALIBRATION: usize = 3;
/// The sub-family of one muddy discharge in 30 days: a real event the turbidity rule must catch.
pub const DISCHARGE: usize = 4;

/// How many days a probe of sub-family `kind` runs.
pub fn days_of(kind: usize) -> i64 {
    match kind {
        FOULING => 90,
        DISCHARGE => 30,
        _ => 365,
    }
}

/// A surface-water probe with target class `class`, on a river (or a lake: `water_body = "lake"`).
pub fn subject(case: &str, class: &str, lake: bool, interval_ms: Millis) -> Subject {
    let mut tags: BTreeMap<String, String> = [("use".to_string(), "surface".to_string()), ("water_class".to_string(), class.to_string())].into();
    if lake {
        tags.insert("water_body".into(), "lake".into());
    }
    Subject {
        id: format!("{case}-probe").into(),
        kind: SensorKind::Water,
        site: format!("{case}-river").into(),
        building: None,
        grid: Some("grid-1".into()),
        tags: tags.into(),
        interval_ms,
    }
}

/// A target class: III three times in five, else any other.
fn draw_class(rng: &mut fastrand::Rng) -> usize {
    if rng.u8(0..5) < 3 {
        2
    } else {
        [0, 1, 3, 4][rng.usize(0..4)]
    }
}

/// A rain event: turbidity rises to `peak`× over `rise`, decays with time constant `decay`.
#[derive(Debug, Clone, Copy)]
struct Rain {
    at: Millis,
    peak: f64,
    rise: f64,
    decay: f64,
}

impl Rain {
    /// The turbidity factor above 1 at `t`.
    fn excess(&self, t: Millis) -> f64 {
        let dt = (t - self.at) as f64;
        if dt < 0.0 {
            0.0
        } else if dt < self.rise {
            (self.peak - 1.0) * dt / self.rise
        } else {
            (self.peak - 1.0) * (-(dt - self.rise) / self.decay).exp()
        }
    }
}

/// A discharge of muddy water: from `at`, turbidity and conductivity rise to their factors over
/// `rise` ms, stay for `lasting` ms, then fall back as fast.
#[derive(Debug, Clone, Copy)]
struct Discharge {
    at: Millis,
    rise: f64,
    lasting: Millis,
    turbidity: f64,
    conductivity: f64,
}

impl Discharge {
    /// The factor on a field that rises to `peak` at `t`.
    fn factor(&self, t: Millis, peak: f64) -> f64 {
        let into = (t - self.at) as f64;
        let left = (self.at + self.lasting - t) as f64;
        let share = (into.min(left) / self.rise).clamp(0.0, 1.0);
        1.0 + (peak - 1.0) * share
    }
}

/// A probe of sub-family `WATER_KINDS[kind]` over `days` days.
pub fn probe(rng: &mut fastrand::Rng, case: &str, kind: usize, days: i64) -> Case {
    let class = draw_class(rng);
    let interval_ms = rng.i64(1..=10) * MINUTE;
    let start = EPOCH_MS + rng.i64(0..365) * DAY + rng.i64(0..DAY);
    let end = start + days * DAY;
    // Noiseless DO: minimum 0.1–2.5 mg/L above the class limit, daily swing 0.3–2 mg/L.
    let do_amp = uniform(rng, 0.3, 2.0) / 2.0;
    let do_mean = DO_MIN[class] + uniform(rng, 0.1, 2.5) + do_amp;
    let do_noise = uniform(rng, 0.02, 0.1);
    let ph_amp = uniform(rng, 0.1, 0.4);
    let ph_mean = uniform(rng, 7.0 + ph_amp, 8.6 - ph_amp);
    let ph_noise = uniform(rng, 0.01, 0.04);
    let fraction = |rng: &mut fastrand::Rng| uniform(rng, 0.2, 0.7);
    let (nh3n, codmn, cod, tp) =
        (NH3N_MAX[class] * fraction(rng), CODMN_MAX[class] * fraction(rng), COD_MAX[class] * fraction(rng), TP_RIVER_MAX[class] * fraction(rng));
    let turbidity = log_uniform(rng, 3.0, 50.0);
    let conductivity = uniform(rng, 200.0, 800.0);
    let orp = uniform(rng, 150.0, 400.0);
    let peak_hour = uniform(rng, 6.0, 8.0); // 14:00–16:00 local
    let mut rains = Vec::new();
    if kind == RAIN {
        let mut t = start + (log_uniform(rng, 3.0, 20.0) * DAY as f64) as Millis;
        while t < end {
            rains.push(Rain {
                at: t,
                peak: log_uniform(rng, 1.5, 8.0),
                rise: uniform(rng, 1.0, 3.0) * HOUR as f64,
                decay: uniform(rng, 6.0, 48.0) * HOUR as f64,
            });
            t += (log_uniform(rng, 3.0, 20.0) * DAY as f64) as Millis;
        }
    }
    // Fouling: the DO reading loses 1–5% a day from an onset 10–40 days in.
    let fouling = (kind == FOULING).then(|| (between(rng, start + 10 * DAY, start + 40 * DAY), uniform(rng, 0.01, 0.05)));
    // Calibration: 2–6 steps of ±0.2–1.0 mg/L DO and ±0.1–0.3 pH.
    let mut steps: Vec<(Millis, f64, f64)> = Vec::new();
    if kind == CALIBRATION {
        for _ in 0..rng.usize(2..=6) {
            let sign = |rng: &mut fastrand::Rng| if rng.bool() { 1.0 } else { -1.0 };
            steps.push((between(rng, start + 8 * DAY, end), sign(rng) * uniform(rng, 0.2, 1.0), sign(rng) * uniform(rng, 0.1, 0.3)));
        }
        steps.sort_by_key(|s| s.0);
    }
    // How much the rain dilutes the river: conductivity / (1 + dilution × turbidity excess).
    let dilution = if kind == RAIN { log_uniform(rng, 0.03, 0.3) } else { 0.1 };
    // A discharge: turbidity × 3–10 and conductivity × 1–1.3 for 2–12 h, reached over 10–30 min.
    let discharge = (kind == DISCHARGE).then(|| Discharge {
        at: between(rng, start + 10 * DAY, start + 25 * DAY),
        rise: uniform(rng, 10.0, 30.0) * MINUTE as f64,
        lasting: (uniform(rng, 2.0, 12.0) * HOUR as f64) as Millis,
        turbidity: uniform(rng, 3.0, 10.0),
        conductivity: uniform(rng, 1.0, 1.3),
    });
    let mut stream = Stream::new(subject(case, CLASSES[class], false, interval_ms), WATER_FIELDS);
    let mut t = start + rng.i64(0..interval_ms);
    while t < end {
        let hour = (t - EPOCH_MS).rem_euclid(DAY) as f64 / HOUR as f64;
        let daily = (TAU * (hour - peak_hour) / 24.0).cos();
        let rain: f64 = rains.iter().map(|r| r.excess(t)).sum();
        let (do_step, ph_step) = steps.iter().filter(|s| s.0 <= t).fold((0.0, 0.0), |acc, s| (acc.0 + s.1, acc.1 + s.2));
        let fouled = fouling.map_or(1.0, |(onset, rate)| if t > onset { (1.0 - rate).powf((t - onset) as f64 / DAY as f64) } else { 1.0 });
        let noisy = |rng: &mut fastrand::Rng, v: f64, rel: f64| (v * (1.0 + rel * normal(rng))).max(0.0);
        let values = [
            ((do_mean + do_amp * daily) * fouled + do_step + normal(rng) * do_noise).max(0.0),
            ph_mean + ph_amp * daily + ph_step + normal(rng) * ph_noise,
            noisy(rng, nh3n, 0.05),
            noisy(rng, codmn, 0.05),
            noisy(rng, cod, 0.05),
            noisy(rng, tp, 0.05),
            noisy(rng, turbidity * (1.0 + rain) * discharge.map_or(1.0, |d| d.factor(t, d.turbidity)), 0.05),
            noisy(rng, conductivity / (1.0 + dilution * rain) * discharge.map_or(1.0, |d| d.factor(t, d.conductivity)), 0.02),
            orp + normal(rng) * 10.0,
            20.0 + 3.0 * daily + normal(rng) * 0.1,
        ];
        stream.push(t, &values);
        t += interval_ms;
    }
    let onset = fouling.map(|f| f.0).or(steps.first().map(|s| s.0)).or(discharge.map(|d| d.at));
    Case { streams: vec![stream], start, end, truth: Truth::Water { onset }, interval_ms }
}

/// The boundary cases: for every target class, each item exactly on that class's own limit (a
/// float32, as the probe sends it) for three hours at one reading a minute, the other items
/// well inside; total phosphorus both on a river and on a lake. `index` picks one; `None` past
/// the last.
pub fn boundary(index: usize) -> Option<Case> {
    let items: [(&'static str, [f64; 5]); 6] =
        [("do", DO_MIN), ("nh3n", NH3N_MAX), ("codmn", CODMN_MAX), ("cod", COD_MAX), ("tp", TP_RIVER_MAX), ("tp", TP_LAKE_MAX)];
    let per_class = items.len() + 2; // + pH 6 and pH 9
    let (class, item) = (index / per_class, index % per_class);
    if class >= CLASSES.len() {
        return None;
    }
    let lake = item == 5;
    let (field, value) = match item {
        i if i < items.len() => (items[i].0, items[i].1[class]),
        i if i == items.len() => ("ph", 6.0),
        _ => ("ph", 9.0),
    };
    let inside = [
        DO_MIN[class] + 1.5,
        7.5,
        NH3N_MAX[class] * 0.3,
        CODMN_MAX[class] * 0.3,
        COD_MAX[class] * 0.3,
        if lake { TP_LAKE_MAX[class] * 0.3 } else { TP_RIVER_MAX[class] * 0.3 },
        10.0,
        400.0,
        250.0,
        20.0,
    ];
    let start = EPOCH_MS + 100 * DAY;
    let mut stream = Stream::new(subject(&format!("boundary-{index}"), CLASSES[class], lake, MINUTE), WATER_FIELDS);
    let position = WATER_FIELDS.iter().position(|f| *f == field).unwrap_or(0);
    for m in 0..180 {
        let mut values = inside;
        values[position] = value;
        stream.push(start + m * MINUTE, &values);
    }
    Some(Case {
        streams: vec![stream],
        start,
        end: start + 180 * MINUTE,
        truth: Truth::Boundary { field, value: super::f32_value(value), class: CLASSES[class], lake },
        interval_ms: MINUTE,
    })
}

/// How many boundary cases there are.
pub fn boundary_count() -> usize {
    (0..).take_while(|&i| boundary(i).is_some()).count()
}
