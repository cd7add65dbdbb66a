//! Which cases a run holds: each family's sub-families and how many cases of each, for a scale
//! (1.0 = the published full size: 100 box-years per healthy sub-family). A case is named by its
//! family, sub-family and index and built from its own seed, so the corpus is the same whatever
//! the order or thread the cases are built in.

use super::faults::{Fault, FAULT_KINDS};
use super::movements::{creep, jump, CreepThermometer, Movement, CREEP_BANDS};
use super::tilt::{install_time, readings, subject, Thermometer, WallBox, Weather};
use super::{water, Case, Truth, DAY, YEAR};

/// The families of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Healthy,
    Creep,
    Jump,
    Fault,
    Water,
    Boundary,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Healthy => "healthy walls",
            Family::Creep => "creep",
            Family::Jump => "jumps",
            Family::Fault => "faulty box",
            Family::Water => "water",
            Family::Boundary => "GB 3838 boundaries",
        }
    }
}

/// The healthy sub-families, by seasonal amplitude (‰), whether their boxes report a
/// temperature (every box, or none; in the other families four boxes in five do), and how their
/// walls follow the air.
pub const HEALTHY_KINDS: [(&str, f64, f64, Thermometers, Walls); 4] = [
    ("seasonal <= 0.5 permille", 0.0, 0.5, Thermometers::Every, Walls::HoursLate),
    ("seasonal 0.5-1 permille", 0.5, 1.0, Thermometers::Every, Walls::HoursLate),
    ("seasonal 0.5-1 permille, no temperature", 0.5, 1.0, Thermometers::None, Walls::HoursLate),
    ("seasonal 0.5-1 permille, thick walls", 0.5, 1.0, Thermometers::Every, Walls::DaysLate),
];

/// How a building's walls follow the air temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walls {
    /// The air's seasons and fronts 0–24 hours late (the other families' walls).
    HoursLate,
    /// A first-order low-pass of the air with a time constant of 2–5 days (thick masonry).
    DaysLate,
}

/// Which boxes of a case report their temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thermometers {
    Every,
    None,
    /// As drawn: four boxes in five.
    Most,
}
pub const JUMP_KINDS: [&str; 3] = ["jump of one box", "lean then jump of one box", "jump of the whole building"];

/// How many cases of each family a run holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    /// Box-years per healthy sub-family (buildings of 1, 2, 3 boxes in turn, a year each).
    pub healthy_box_years: f64,
    /// Cases per creep rate band.
    pub creeps_per_band: usize,
    pub jumps: usize,
    pub lean_jumps: usize,
    /// Jumps of every box of a building of 2–3.
    pub building_jumps: usize,
    pub faults_per_kind: usize,
    /// Sensor-years per water sub-family (probes of a year; fouling probes of 90 days).
    pub water_years: f64,
    /// The range tilt boxes' report intervals are drawn from, in whole minutes.
    pub interval_minutes: (i64, i64),
}

/// Report intervals of the corpus's tilt boxes unless a run asks for others: 1–10 minutes.
pub const INTERVAL_MINUTES: (i64, i64) = (1, 10);

impl Size {
    /// The size the test suite runs (tests/alarm_quality.rs): a few box-years, a case or two
    /// of everything, well under a minute in a debug build on two cores.
    pub fn reduced() -> Size {
        Size {
            healthy_box_years: 3.0,
            creeps_per_band: 1,
            jumps: 16,
            lean_jumps: 4,
            building_jumps: 4,
            faults_per_kind: 2,
            water_years: 0.25,
            interval_minutes: INTERVAL_MINUTES,
        }
    }

    /// The full size times `scale` (at least one case of everything).
    pub fn scaled(scale: f64) -> Size {
        let at_least_one = |n: f64| ((n * scale).round() as usize).max(1);
        Size {
            healthy_box_years: (100.0 * scale).max(1.0),
            creeps_per_band: at_least_one(30.0),
            jumps: at_least_one(240.0),
            lean_jumps: at_least_one(60.0),
            building_jumps: at_least_one(60.0),
            faults_per_kind: at_least_one(20.0),
            water_years: (20.0 * scale).max(1.0),
            interval_minutes: INTERVAL_MINUTES,
        }
    }
}

/// One case to build: everything needed to generate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseSpec {
    pub family: Family,
    pub sub: &'static str,
    /// Position of the sub-family in its family's list.
    pub kind: usize,
    pub index: usize,
    pub seed: u64,
    /// The range tilt boxes' report intervals are drawn from, in whole minutes.
    pub interval_minutes: (i64, i64),
}

/// The run's cases, family after family.
pub fn cases(size: &Size, seed: u64) -> Vec<CaseSpec> {
    let mut specs = Vec::new();
    let mut push = |family: Family, sub: &'static str, kind: usize, count: usize| {
        for index in 0..count {
            let seed = mix(seed, family as u64, kind as u64, index as u64);
            specs.push(CaseSpec { family, sub, kind, index, seed, interval_minutes: size.interval_minutes });
        }
    };
    for (kind, (sub, ..)) in HEALTHY_KINDS.iter().enumerate() {
        // Buildings of 1, 2, 3 boxes in turn until the box-years are reached.
        let (mut boxes, mut count) = (0usize, 0usize);
        while (boxes as f64) < size.healthy_box_years {
            boxes += count % 3 + 1;
            count += 1;
        }
        push(Family::Healthy, sub, kind, count);
    }
    for (kind, (sub, _, _, _)) in CREEP_BANDS.iter().enumerate() {
        push(Family::Creep, sub, kind, size.creeps_per_band);
    }
    push(Family::Jump, JUMP_KINDS[0], 0, size.jumps);
    push(Family::Jump, JUMP_KINDS[1], 1, size.lean_jumps);
    push(Family::Jump, JUMP_KINDS[2], 2, size.building_jumps);
    for (kind, sub) in FAULT_KINDS.iter().enumerate() {
        push(Family::Fault, sub, kind, size.faults_per_kind);
    }
    for (kind, sub) in water::WATER_KINDS.iter().enumerate() {
        let years = water::days_of(kind) as f64 / 365.0;
        let count = if size.water_years > 0.0 { ((size.water_years / years).round() as usize).max(1) } else { 0 };
        push(Family::Water, sub, kind, count);
    }
    push(Family::Boundary, "on the target class's own limit", 0, water::boundary_count());
    specs
}

/// A seed for one case from the run's seed and the case's name (splitmix64 steps).
fn mix(seed: u64, family: u64, kind: u64, index: u64) -> u64 {
    let mut z = seed;
    for part in [family, kind, index] {
        z = z.wrapping_add(part.wrapping_add(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

impl CaseSpec {
    /// A short name for the case's sensors.
    pub fn name(&self) -> String {
        format!("{:?}{}-{}", self.family, self.kind, self.index).to_lowercase()
    }

    /// Generates the case.
    pub fn build(&self) -> Case {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let name = self.name();
        match self.family {
            Family::Healthy => {
                let (_, low, high, thermometers, follow) = HEALTHY_KINDS[self.kind];
                walls(&mut rng, &name, self.interval_minutes, self.index % 3 + 1, (low, high), (thermometers, follow), |_, start, _| {
                    (Movement::None, Truth::Healthy, start + YEAR)
                })
            }
            Family::Creep => {
                let (_, low, high, thermometer) = CREEP_BANDS[self.kind];
                let boxes = rng.usize(1..=3);
                let target = rng.usize(0..boxes);
                let thermometers = match thermometer {
                    CreepThermometer::AsDrawn => Thermometers::Most,
                    CreepThermometer::None => Thermometers::None,
                };
                walls(&mut rng, &name, self.interval_minutes, boxes, (0.0, 1.0), (thermometers, Walls::HoursLate), |rng, install, _| {
                    creep(rng, target, install, (low, high))
                })
            }
            Family::Jump => {
                let whole = self.kind == 2;
                let boxes = if whole { rng.usize(2..=3) } else { rng.usize(1..=3) };
                let target = rng.usize(0..boxes);
                let lean = self.kind == 1;
                walls(&mut rng, &name, self.interval_minutes, boxes, (0.0, 1.0), (Thermometers::Most, Walls::HoursLate), |rng, install, walls| {
                    jump(rng, target, install, walls[target].offset_dir(), lean, whole)
                })
            }
            Family::Fault => {
                let boxes = rng.usize(2..=3);
                let target = rng.usize(0..boxes);
                let fault = Fault::draw(&mut rng, self.kind);
                let mut onset = 0;
                let mut case = walls(&mut rng, &name, self.interval_minutes, boxes, (0.0, 1.0), (Thermometers::Most, Walls::HoursLate), |rng, install, _| {
                    onset = install + 3 * DAY + rng.i64(0..7 * DAY);
                    (Movement::None, Truth::Fault { target, onset }, onset + 7 * DAY)
                });
                // Installers can be told of a fault once it shows: bursts and intermittent flips
                // begin hours after their onset.
                let symptom = fault.apply(&mut case.streams[target], onset, &mut rng);
                case.truth = Truth::Fault { target, onset: symptom.unwrap_or(onset) };
                case
            }
            Family::Water => water::probe(&mut rng, &name, self.kind, water::days_of(self.kind)),
            Family::Boundary => water::boundary(self.index).unwrap_or_else(|| water::probe(&mut rng, &name, 0, 1)),
        }
    }
}

/// A building of `boxes` boxes installed at a random time, with a seasonal swing drawn from
/// `seasonal`, thermometers on the boxes `thermometers` names and walls that follow the air as
/// `follow` says; `plan` draws the movement of the case (applied to the box its truth names), its
/// truth and its end.
fn walls(
    rng: &mut fastrand::Rng,
    name: &str,
    interval_minutes: (i64, i64),
    boxes: usize,
    seasonal: (f64, f64),
    (thermometers, follow): (Thermometers, Walls),
    plan: impl FnOnce(&mut fastrand::Rng, i64, &[WallBox]) -> (Movement, Truth, i64),
) -> Case {
    let start = install_time(rng);
    // Boxes are drawn for the longest case (a slow creep lasts under 300 days) and the weather
    // for the case's real length once the plan is known.
    let provisional_end = start + YEAR;
    let mut boxes: Vec<WallBox> = (0..boxes).map(|_| WallBox::draw(rng, start, provisional_end, interval_minutes)).collect();
    for wall in &mut boxes {
        match thermometers {
            Thermometers::Every => wall.thermometer = Some(wall.thermometer.take().unwrap_or_else(|| Thermometer::draw(rng))),
            Thermometers::None => wall.thermometer = None,
            Thermometers::Most => {}
        }
    }
    let (movement, truth, end) = plan(rng, start, &boxes);
    let weather = Weather::draw(rng, seasonal, start, end.max(provisional_end), follow == Walls::DaysLate);
    let (target, moves_all) = match truth {
        Truth::Creep { target, .. } => (Some(target), false),
        Truth::Jump { target, whole_building, .. } => (Some(target), whole_building),
        _ => (None, false),
    };
    let streams = boxes
        .iter()
        .enumerate()
        .map(|(i, wall)| {
            let moving = if Some(i) == target || moves_all { movement } else { Movement::None };
            let mut wall = wall.clone();
            // Gaps only while the wall is healthy: a gap hiding a movement would be another test.
            if target.is_some() {
                wall.gaps.clear();
            }
            readings(subject(name, i, wall.interval_ms), &weather, &wall, start, end, &|t| moving.at(t), rng)
        })
        .collect();
    let interval_ms = boxes.iter().map(|b| b.interval_ms).min().unwrap_or(super::MINUTE);
    Case { streams, start, end, truth, interval_ms }
}
