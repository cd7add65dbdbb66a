//! Adversarial tests of temperature compensation (`compensate = "temperature"`, rules/src/thermal.rs)
//! on the shipped tilt pack, on walls generated here independently of the alarm-quality corpus:
//! other wall physics, failing thermometers, real movements during learning, and operations
//! (calibrate, restart, clock step back). Each test prints its rates (`--nocapture`) and asserts
//! what the docs claim; the ones that found a problem are `#[ignore = "finding: …"]`.
//!
//! Run: `CARGO_INCREMENTAL=0 cargo test -p gridwatch-rules --test thermal_adversary -- --nocapture --include-ignored`

use gridwatch_rules::{builtin_packs, Engine, EventKind, Millis, RuleSet, SensorKind, Severity, Subject, SubjectId};
use std::f64::consts::{PI, TAU};

const MIN: Millis = 60_000;
const HOUR: Millis = 60 * MIN;

// ---------------------------------------------------------------------------------------------
// A small deterministic random source (splitmix64), so every case is reproducible by its seed.

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

// ---------------------------------------------------------------------------------------------
// Weather: seasons, fronts (AR(1), ~2.5 days), a daily cycle damped by clouds.

/// Hours of weather kept before installation (for the walls' low-pass to settle).
const PRE_HOURS: usize = 24 * 30;

struct Weather {
    /// Fronts per hour from `-PRE_HOURS`.
    fronts: Vec<f64>,
    /// Cloud cover per day (0 clear .. 1 overcast) from day `-PRE_HOURS/24`.
    clouds: Vec<f64>,
    mean: f64,
    seasonal: f64,
    /// Day of the year of the installation (0: 1 January, coldest about day 20).
    start_doy: f64,
    daily: f64,
}

impl Weather {
    fn new(rng: &mut Rng, days: f64, start_doy: f64) -> Weather {
        let hours = PRE_HOURS + (days * 24.0) as usize + 48;
        let keep: f64 = (-1.0f64 / 60.0).exp();
        let sd = 3.5;
        let mut front = sd * rng.normal();
        let fronts = (0..hours)
            .map(|_| {
                front = front * keep + sd * (1.0 - keep * keep).sqrt() * rng.normal();
                front
            })
            .collect();
        let mut cloud: f64 = rng.unit();
        let clouds = (0..hours / 24 + 2)
            .map(|_| {
                cloud = (0.6 * cloud + 0.4 * rng.unit()).clamp(0.0, 1.0);
                cloud
            })
            .collect();
        Weather { fronts, clouds, mean: rng.range(12.0, 20.0), seasonal: rng.range(10.0, 15.0), start_doy, daily: rng.range(3.0, 6.0) }
    }

    fn cloud(&self, days: f64) -> f64 {
        let index = (days.floor() as i64 + (PRE_HOURS / 24) as i64).clamp(0, self.clouds.len() as i64 - 1);
        self.clouds[index as usize]
    }

    fn front(&self, days: f64) -> f64 {
        let h = days * 24.0 + PRE_HOURS as f64;
        let i = (h.floor().max(0.0) as usize).min(self.fronts.len() - 2);
        let share = (h - i as f64).clamp(0.0, 1.0);
        self.fronts[i] * (1.0 - share) + self.fronts[i + 1] * share
    }

    /// The season's part alone (°C from the mean).
    fn season(&self, days: f64) -> f64 {
        -self.seasonal * ((days + self.start_doy - 20.0) * TAU / 365.0).cos()
    }

    /// The air temperature `days` after installation.
    fn air(&self, days: f64) -> f64 {
        let sun = self.daily * (1.0 - 0.6 * self.cloud(days)) * ((days.fract() - 0.625) * TAU).cos();
        self.mean + self.season(days) + self.front(days) + sun
    }

    /// The afternoon sun on a box, 0..1 (clouds taken off).
    fn sunshine(&self, days: f64) -> f64 {
        let h = days.rem_euclid(1.0);
        let bump = if (0.45..0.75).contains(&h) { ((h - 0.45) / 0.3 * PI).sin() } else { 0.0 };
        bump * (1.0 - self.cloud(days))
    }
}

// ---------------------------------------------------------------------------------------------
// Walls, thermometers, movements, operations.

#[derive(Clone, Copy, Debug)]
enum Physics {
    /// The wall follows the air `hours` late.
    Lag(f64),
    /// The wall follows a first-order low-pass of the air (time constant in hours).
    LowPass(f64),
    /// Low-pass, and the response is `1 + gamma·(T − mean)/seasonal` stronger when warm.
    Nonlinear { tau: f64, gamma: f64 },
    /// Low-pass, and the direction of the response turns by `turn` radians from winter to summer.
    Turning { tau: f64, turn: f64 },
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// From `day` the thermometer reads `value` (None: its last good reading).
    Stuck {
        day: f64,
        value: Option<f64>,
    },
    /// Each reading is a spike of ±`size` °C with probability `chance`.
    Spikes {
        chance: f64,
        size: f64,
    },
    /// The thermometer drifts `per_day` °C a day.
    Drift {
        per_day: f64,
    },
    /// From `day` it reads `by` °C more (a box replaced or re-zeroed).
    Step {
        day: f64,
        by: f64,
    },
    /// Only every other reading carries the temperature.
    Alternate,
    /// The temperature comes in a message of its own, without the angles.
    Separate,
    /// A reading's temperature is NaN with probability `chance`.
    NotANumber {
        chance: f64,
    },
    /// The whole box reports °F.
    Fahrenheit,
    /// From `day` on the temperature field is missing.
    Dies {
        day: f64,
    },
    /// From `day` the angles are stuck (the last reading) while the thermometer lives on.
    AnglesStuck {
        day: f64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Movement {
    None,
    /// A creep of `per_day` ‰ a day from `day` on, in the direction `angle` (radians).
    Creep {
        day: f64,
        per_day: f64,
        angle: f64,
    },
    /// A jump of `degrees` at `day` in the direction `angle`.
    Jump {
        day: f64,
        degrees: f64,
        angle: f64,
    },
    /// A lean of `size` ‰ over `days_long` days, in the coldest front between days 40 and 300.
    LeanInColdSpell {
        size: f64,
        days_long: f64,
        angle: f64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Operation {
    None,
    /// `gridwatch calibrate` at `day` (x/y from the last hour's mean, the temperature's level).
    Calibrate {
        day: f64,
    },
    /// Snapshot → JSON → a new engine (restore_streamed) at `day`.
    Restart {
        day: f64,
    },
    /// The box's clock steps back `hours` at `day` (the daemon rewinds the sensor).
    ClockBack {
        day: f64,
        hours: f64,
    },
    /// The inventory's baseline x/y was measured at installation at a temperature `shift` °C away
    /// from the one the engine learns its temperature baseline at (first 24 h it sees).
    InventoryBaseline {
        shift: f64,
    },
    /// The box ran on the packs without compensation until `day` (learned x/y then), and the
    /// daemon was upgraded to the packs with it (snapshot → restore into the new rules).
    Upgrade {
        day: f64,
    },
}

#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    days: f64,
    interval_min: i64,
    start_doy: f64,
    /// The wall's seasonal swing (‰, amplitude) — its response is `swing / seasonal` ‰ per °C.
    swing: f64,
    direction: f64,
    physics: Physics,
    /// The sun on the box's thermometer in the afternoon (°C on a clear day).
    sun_on_box: f64,
    /// The wall's daily swing with the sun (‰).
    wall_sun: f64,
    fault: Fault,
    movement: Movement,
    operation: Operation,
    compensate: bool,
}

impl Case {
    fn healthy(seed: u64) -> Case {
        let mut rng = Rng(seed ^ 0xC0FF_EE00);
        Case {
            seed,
            days: 365.0,
            interval_min: 10,
            start_doy: rng.range(0.0, 365.0),
            swing: rng.range(0.5, 1.0),
            direction: rng.range(0.0, TAU),
            physics: Physics::Lag(rng.range(0.0, 24.0)),
            sun_on_box: 0.0,
            wall_sun: rng.range(0.1, 0.4),
            fault: Fault::None,
            movement: Movement::None,
            operation: Operation::None,
            compensate: true,
        }
    }
}

/// What a case raised: grid-facing incidents (rule, first severity, highest, day opened).
#[derive(Debug, Default)]
struct Outcome {
    incidents: Vec<(String, Severity, Severity, f64)>,
    /// Installer-facing (device) incidents (rule, day).
    device: Vec<(String, f64)>,
    /// The day the movement's own size crossed 2‰ (creeps) or the jump happened.
    truth_day: Option<f64>,
}

impl Outcome {
    fn first(&self, at_least: Severity) -> Option<f64> {
        self.incidents.iter().filter(|(_, _, worst, _)| *worst >= at_least).map(|(_, _, _, day)| *day).reduce(f64::min)
    }
    fn first_of(&self, rule: &str) -> Option<f64> {
        self.incidents.iter().filter(|(id, ..)| id == rule).map(|(_, _, _, day)| *day).reduce(f64::min)
    }
}

fn rules(compensate: bool) -> RuleSet {
    let mut packs = builtin_packs();
    if !compensate {
        for pack in &mut packs {
            // The pack as before compensation: its blue for every box.
            pack.text = pack.text.replace("uncompensated = \"warning\"", "").replace("compensate = \"temperature\"", "");
        }
    }
    RuleSet::compile(&packs).expect("shipped packs compile")
}

fn subject(interval: Millis) -> Subject {
    Subject { id: "wall".into(), kind: SensorKind::Tilt, site: "site".into(), building: None, grid: None, tags: Default::default(), interval_ms: interval }
}

fn degrees(permille: f64) -> f64 {
    (permille / 1000.0).atan().to_degrees()
}

/// Replays `case` through the shipped tilt pack (one box, a house of its own).
fn run(case: &Case) -> Outcome {
    let mut lean_cap: Option<f64> = None;
    let mut rng = Rng(case.seed);
    let weather = Weather::new(&mut rng, case.days, case.start_doy);
    let upgrading = matches!(case.operation, Operation::Upgrade { .. });
    let mut rules = rules(case.compensate && !upgrading);
    let interval = case.interval_min * MIN;
    let mut engine = Engine::new(rules.clone(), &[subject(interval)]);
    let k = case.swing / weather.seasonal;
    let offset = (rng.range(-0.8, 0.8), rng.range(-0.8, 0.8));
    let tau = match case.physics {
        Physics::Lag(_) => None,
        Physics::LowPass(tau) | Physics::Nonlinear { tau, .. } | Physics::Turning { tau, .. } => Some(tau),
    };
    // The wall's thermal state, settled over the month before installation.
    let step_days = case.interval_min as f64 / 1440.0;
    let mut wall_t = weather.air(-(PRE_HOURS as f64) / 24.0);
    if let Some(tau) = tau {
        let mut d = -(PRE_HOURS as f64) / 24.0;
        while d < 0.0 {
            wall_t += (weather.air(d) - wall_t) * (1.0 - (-step_days * 24.0 / tau).exp());
            d += step_days;
        }
    }
    let mut movement = case.movement;
    if let Movement::LeanInColdSpell { size, days_long, angle } = movement {
        let coldest = (40..300).map(f64::from).min_by(|a, b| weather.front(*a).total_cmp(&weather.front(*b))).unwrap_or(100.0);
        movement = Movement::Creep { day: coldest - days_long / 2.0, per_day: size / days_long, angle };
        // A creep that stops at `size`: kept as a creep with a cap below.
        lean_cap = Some(size);
    }
    let mut out = Outcome::default();
    let mut events = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut last_good_temperature = weather.air(0.0);
    let mut stuck_angles: Option<(f64, f64)> = None;
    let mut recent: Vec<(f64, f64)> = Vec::new();
    let mut clock_shift: Millis = 0;
    let mut operation_done = false;
    let readings = (case.days / step_days) as i64;
    for i in 0..readings {
        let days = i as f64 * step_days;
        let true_at = i * interval + 30_000;
        if let (0, Operation::InventoryBaseline { shift }) = (i, case.operation) {
            // Zeroed at installation at a temperature `shift` away from the first day's.
            let zero = k * (weather.air(0.0) + shift - weather.mean);
            engine.set_baseline(SubjectId(0), "x", offset.0 + degrees(zero * case.direction.cos()));
            engine.set_baseline(SubjectId(0), "y", offset.1 + degrees(zero * case.direction.sin()));
        }
        // Operations.
        if !operation_done {
            match case.operation {
                Operation::Calibrate { day } if days >= day => {
                    operation_done = true;
                    let n = recent.len().max(1) as f64;
                    let (mx, my) = recent.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
                    engine.set_baseline(SubjectId(0), "x", mx);
                    engine.set_baseline(SubjectId(0), "y", my);
                    for (field, level) in engine.temperature_levels(SubjectId(0)) {
                        engine.set_baseline(SubjectId(0), &field, level);
                    }
                }
                Operation::Restart { day } | Operation::Upgrade { day } if days >= day => {
                    operation_done = true;
                    if upgrading {
                        rules = self::rules(case.compensate);
                    }
                    let json = serde_json::to_string(&engine.snapshot_view()).expect("snapshot serializes");
                    let mut fresh = Engine::new(rules.clone(), &[subject(interval)]);
                    let mut de = serde_json::Deserializer::from_str(&json);
                    fresh.restore_streamed(&mut de).expect("snapshot restores");
                    engine = fresh;
                }
                Operation::ClockBack { day, hours } if days >= day => {
                    operation_done = true;
                    clock_shift = -(hours * HOUR as f64) as Millis;
                    engine.rewind(SubjectId(0));
                }
                _ => {}
            }
        }
        // The air and the wall.
        let air = weather.air(days);
        let wall_temperature = match case.physics {
            Physics::Lag(hours) => weather.air(days - hours / 24.0),
            _ => {
                wall_t += (air - wall_t) * (1.0 - (-step_days * 24.0 / tau.unwrap_or(1.0)).exp());
                wall_t
            }
        };
        let dt = wall_temperature - weather.mean;
        let (response, angle) = match case.physics {
            Physics::Nonlinear { gamma, .. } => (k * dt * (1.0 + gamma * dt / weather.seasonal), case.direction),
            Physics::Turning { turn, .. } => (k * dt, case.direction + turn * (0.5 + 0.5 * weather.season(days) / weather.seasonal)),
            _ => (k * dt, case.direction),
        };
        let sun = case.wall_sun * (1.0 - weather.cloud(days)) * ((days.fract() - 0.6) * TAU).cos();
        let mut px = (response + sun) * angle.cos();
        let mut py = (response + sun) * angle.sin();
        let mut moved_degrees = (0.0, 0.0);
        match movement {
            Movement::None | Movement::LeanInColdSpell { .. } => {}
            Movement::Creep { day, per_day, angle } => {
                let size = (per_day * (days - day).max(0.0)).min(lean_cap.unwrap_or(f64::INFINITY));
                px += size * angle.cos();
                py += size * angle.sin();
                if out.truth_day.is_none() && size >= lean_cap.unwrap_or(2.0).min(2.0) {
                    out.truth_day = Some(days);
                }
            }
            Movement::Jump { day, degrees, angle } => {
                if days >= day {
                    moved_degrees = (degrees * angle.cos(), degrees * angle.sin());
                    out.truth_day.get_or_insert(days);
                }
            }
        }
        let round = |v: f64, step: f64| (v / step).round() * step;
        let mut x = round(offset.0 + degrees(px) + moved_degrees.0 + 0.002 * rng.normal(), 0.001);
        let mut y = round(offset.1 + degrees(py) + moved_degrees.1 + 0.002 * rng.normal(), 0.001);
        recent.push((x, y));
        if recent.len() > (60 / case.interval_min.max(1)) as usize {
            recent.remove(0);
        }
        // The thermometer.
        let mut temperature = Some(round(air + case.sun_on_box * weather.sunshine(days) + 0.1 * rng.normal(), 0.1));
        let mut separate = None;
        match case.fault {
            Fault::None => {}
            Fault::Stuck { day, value } if days >= day => temperature = Some(value.unwrap_or(last_good_temperature)),
            Fault::Stuck { .. } => {}
            Fault::Spikes { chance, size } => {
                if rng.unit() < chance {
                    temperature = temperature.map(|t| t + if rng.unit() < 0.5 { size } else { -size });
                }
            }
            Fault::Drift { per_day } => temperature = temperature.map(|t| round(t + per_day * days, 0.1)),
            Fault::Step { day, by } if days >= day => temperature = temperature.map(|t| t + by),
            Fault::Step { .. } => {}
            Fault::Alternate => {
                if i % 2 == 1 {
                    temperature = None;
                }
            }
            Fault::Separate => separate = temperature.take(),
            Fault::NotANumber { chance } => {
                if rng.unit() < chance {
                    temperature = Some(f64::NAN);
                }
            }
            Fault::Fahrenheit => temperature = temperature.map(|t| round(t * 1.8 + 32.0, 0.1)),
            Fault::Dies { day } if days >= day => temperature = None,
            Fault::Dies { .. } => {}
            Fault::AnglesStuck { day } if days >= day => {
                let (sx, sy) = *stuck_angles.get_or_insert((x, y));
                x = sx;
                y = sy;
            }
            Fault::AnglesStuck { .. } => {}
        }
        if let Some(t) = temperature.filter(|t| t.is_finite()) {
            if !matches!(case.fault, Fault::Stuck { day, .. } if days >= day) {
                last_good_temperature = t;
            }
        }
        let at = true_at + clock_shift;
        engine.tick(at, &mut events);
        let mut fields: Vec<(&str, f64)> = vec![("x", x), ("y", y)];
        if let Some(t) = temperature {
            fields.push(("temperature", t));
        }
        engine.observe(SubjectId(0), at, &fields, &mut events);
        if let Some(t) = separate {
            engine.observe(SubjectId(0), at + 1000, &[("temperature", t)], &mut events);
        }
        for event in events.drain(..) {
            let rule = engine.rule(event.rule);
            if rule.device {
                if event.kind == EventKind::Fired {
                    out.device.push((rule.id.clone(), days));
                }
                continue;
            }
            match event.kind {
                EventKind::Fired => {
                    out.incidents.push((rule.id.clone(), event.severity, event.severity, days));
                    open.push((rule.id.clone(), out.incidents.len() - 1));
                }
                EventKind::Changed => {
                    if let Some((_, index)) = open.iter().rev().find(|(id, _)| *id == rule.id) {
                        let worst = &mut out.incidents[*index].2;
                        *worst = (*worst).max(event.severity);
                    }
                }
                EventKind::Cleared => open.retain(|(id, _)| *id != rule.id),
            }
        }
    }
    out
}

/// Runs `cases` on both cores and returns their outcomes in order.
fn run_all(cases: &[Case]) -> Vec<Outcome> {
    let half = cases.len().div_ceil(2);
    std::thread::scope(|scope| {
        let (a, b) = cases.split_at(half);
        let left = scope.spawn(|| a.iter().map(run).collect::<Vec<_>>());
        let right: Vec<Outcome> = b.iter().map(run).collect();
        let mut all = left.join().expect("no panic");
        all.extend(right);
        all
    })
}

/// Grid-facing incidents per 100 box-years.
fn rate(cases: &[Case], outcomes: &[Outcome]) -> f64 {
    let years: f64 = cases.iter().map(|c| c.days / 365.0).sum();
    outcomes.iter().map(|o| o.incidents.len()).sum::<usize>() as f64 / years * 100.0
}

fn report(name: &str, cases: &[Case], outcomes: &[Outcome]) -> f64 {
    let r = rate(cases, outcomes);
    eprintln!("{name}: {r:.0} grid-facing incidents per 100 box-years ({} box-years)", cases.iter().map(|c| c.days / 365.0).sum::<f64>());
    for (case, outcome) in cases.iter().zip(outcomes) {
        if !outcome.incidents.is_empty() {
            let shown: Vec<String> = outcome.incidents.iter().take(6).map(|(id, _, worst, day)| format!("{id} {worst:?} d{day:.1}")).collect();
            eprintln!("  seed {} swing {:.2} {:?} {:?} {:?}: {}", case.seed, case.swing, case.physics, case.fault, case.operation, shown.join(", "));
        }
    }
    r
}

fn healthy_cases(seeds: std::ops::Range<u64>, shape: impl Fn(&mut Case, &mut Rng)) -> Vec<Case> {
    seeds
        .map(|seed| {
            let mut case = Case::healthy(seed);
            let mut rng = Rng(seed ^ 0x5EED);
            shape(&mut case, &mut rng);
            case
        })
        .collect()
}

fn uncompensated(cases: &[Case]) -> Vec<Case> {
    cases.iter().map(|c| Case { compensate: false, ..c.clone() }).collect()
}

#[test]
fn control_walls_that_lag_the_air() {
    let cases = healthy_cases(0..8, |_, _| {});
    let with = report("control, lag 0-24 h, compensated", &cases, &run_all(&cases));
    let plain = uncompensated(&cases);
    let without = report("control, lag 0-24 h, without compensation", &plain, &run_all(&plain));
    assert!(without > 50.0, "the harness's walls must trouble an uncompensated pack: {without}");
    assert!(with <= 25.0, "{with}");
}

/// Compares a family with and without compensation, printing both rates.
fn compare(name: &str, cases: &[Case]) -> (f64, f64) {
    let with = report(&format!("{name}, compensated"), cases, &run_all(cases));
    let plain = uncompensated(cases);
    let without = report(&format!("{name}, without compensation"), &plain, &run_all(&plain));
    (with, without)
}

// --- Other physics ---------------------------------------------------------------------------

#[test]
fn walls_that_follow_a_low_pass_of_the_air() {
    let cases = healthy_cases(100..108, |c, r| c.physics = Physics::LowPass(r.range(1.0, 72.0)));
    let (with, without) = compare("low-pass tau 1-72 h", &cases);
    assert!(with <= 25.0 && with < without / 4.0, "{with} vs {without}");
}

/// Thick walls (an outside tester's, stop 32): every blue it saw on walls with a thermometer was
/// on a wall following the air 54 h or more late. With a third lag of one day instead of the
/// slow levels: 17 per 100 box-years here (200 without compensation).
#[test]
fn walls_that_follow_the_air_days_late() {
    let cases = healthy_cases(150..162, |c, r| c.physics = Physics::LowPass(r.range(48.0, 120.0)));
    let (with, without) = compare("low-pass tau 48-120 h", &cases);
    assert!(with < 5.0 && without > 100.0, "{with} vs {without}");
}

#[test]
#[ignore = "finding: a response 30-80% stronger when warm is followed only in part by the linear fit: 300 grid-facing per 100 box-years (583 without), up to orange tilt-creep-two-months"]
fn walls_that_respond_more_when_warm() {
    let cases = healthy_cases(200..206, |c, r| c.physics = Physics::Nonlinear { tau: r.range(1.0, 24.0), gamma: r.range(0.3, 0.8) });
    let (with, without) = compare("nonlinear (stronger in summer)", &cases);
    assert!(with <= 25.0 && with < without / 4.0, "{with} vs {without}");
}

#[test]
#[ignore = "finding: a response whose direction turns 45-180 deg from winter to summer: 117 grid-facing per 100 box-years (317 without)"]
fn walls_whose_response_turns_with_the_season() {
    let cases = healthy_cases(300..306, |c, r| c.physics = Physics::Turning { tau: r.range(1.0, 24.0), turn: r.range(PI / 4.0, PI) });
    let (with, without) = compare("response turning 45-180 deg winter to summer", &cases);
    assert!(with <= 50.0 && with < without / 2.0, "{with} vs {without}");
}

#[test]
fn the_sun_on_the_boxs_own_thermometer() {
    let cases = healthy_cases(400..408, |c, r| c.sun_on_box = r.range(5.0, 15.0));
    let (with, without) = compare("sun +5-15 C on the thermometer", &cases);
    assert!(with <= 25.0 && with < without / 4.0, "{with} vs {without}");
}

// --- Thermometer faults ----------------------------------------------------------------------

fn faulty(name: &str, seeds: std::ops::Range<u64>, fault: impl Fn(&mut Rng) -> Fault) -> (f64, f64) {
    let cases = healthy_cases(seeds, |c, r| c.fault = fault(r));
    compare(name, &cases)
}

/// Before the fix in thermal.rs (an implausible or jumping temperature level is held, and
/// neither widens the taught range nor teaches): orange tilt-change, tilt-creep-day and
/// tilt-lean-fast within a day of the failure on every one of these healthy walls.
#[test]
fn a_thermometer_stuck_hot_or_cold() {
    let (hot, plain_hot) = faulty("stuck at 85 C from day 120-300", 500..506, |r| Fault::Stuck { day: r.range(120.0, 300.0), value: Some(85.0) });
    let (cold, plain_cold) = faulty("stuck at -40 C from day 120-300", 510..516, |r| Fault::Stuck { day: r.range(120.0, 300.0), value: Some(-40.0) });
    assert!(
        hot <= plain_hot && cold <= plain_cold,
        "a failed thermometer must not do worse than no compensation: {hot} vs {plain_hot}, {cold} vs {plain_cold}"
    );
}

#[test]
fn a_thermometer_stuck_at_its_last_value() {
    let (with, without) = faulty("stuck at last value from day 60-300", 520..526, |r| Fault::Stuck { day: r.range(60.0, 300.0), value: None });
    assert!(with <= without, "{with} vs {without}");
}

#[test]
fn thermometer_spikes_and_nans() {
    let (spikes, _) = faulty("1% spikes of +-40 C", 530..536, |_| Fault::Spikes { chance: 0.01, size: 40.0 });
    let (nans, _) = faulty("5% NaN", 540..546, |_| Fault::NotANumber { chance: 0.05 });
    let clean = healthy_cases(540..546, |_, _| {});
    let control = report("the same walls, no NaN", &clean, &run_all(&clean));
    assert!(spikes <= 25.0 && nans <= control + 20.0, "{spikes} {nans} vs {control}");
}

#[test]
fn a_thermometer_that_drifts_or_steps() {
    let (drift, plain_drift) = faulty("drift +0.1 C/day", 550..556, |_| Fault::Drift { per_day: 0.1 });
    let (step, plain_step) =
        faulty("step +-5 C at day 60-300", 560..566, |r| Fault::Step { day: r.range(60.0, 300.0), by: if r.unit() < 0.5 { 5.0 } else { -5.0 } });
    assert!(drift <= plain_drift && step <= plain_step, "{drift} vs {plain_drift}; {step} vs {plain_step}");
}

#[test]
fn temperature_on_some_readings_or_in_a_message_of_its_own() {
    let (alternate, _) = faulty("temperature every other reading", 570..574, |_| Fault::Alternate);
    let (separate, plain) = faulty("temperature in its own message", 580..584, |_| Fault::Separate);
    eprintln!("(temperature in its own message is never compensated: {separate} vs {plain} without)");
    assert!(alternate <= 25.0, "{alternate}");
}

#[test]
fn fahrenheit_and_a_thermometer_that_dies() {
    let (fahrenheit, _) = faulty("whole box in F", 590..594, |_| Fault::Fahrenheit);
    let (dies, plain) = faulty("temperature field gone from day 60-300", 600..606, |r| Fault::Dies { day: r.range(60.0, 300.0) });
    assert!(fahrenheit <= 25.0 && dies <= plain, "{fahrenheit}; {dies} vs {plain}");
}

#[test]
fn control_angles_stuck_are_told_by_a_flat_line_on_the_angles_alone() {
    let mut packs = builtin_packs();
    for pack in &mut packs {
        pack.text = pack.text.replace("hypot(hypot(x, y), temperature?)", "hypot(x, y)");
    }
    let mut engine = Engine::new(RuleSet::compile(&packs).expect("compiles"), &[subject(10 * MIN)]);
    let mut events = Vec::new();
    let mut told = None;
    for i in 0..(3 * 144) {
        let at = i * 10 * MIN;
        let frozen = i >= 144;
        let x = if frozen { 0.4 } else { 0.4 + 0.001 * ((i % 7) as f64) };
        engine.tick(at, &mut events);
        engine.observe(SubjectId(0), at, &[("x", x), ("y", -0.2), ("temperature", 15.0 + (i as f64 / 20.0).sin() * 3.0)], &mut events);
        if told.is_none() && events.iter().any(|e| engine.rule(e.rule).id == "tilt-flat-line" && e.kind == EventKind::Fired) {
            told = Some(i - 144);
        }
        events.clear();
    }
    eprintln!("flat line on the angles alone: told {told:?} readings after they froze");
    assert!(told.is_some_and(|n| n <= 36), "{told:?}");
}

#[test]
fn angles_stuck_while_the_thermometer_lives() {
    let cases = healthy_cases(610..613, |c, r| {
        c.fault = Fault::AnglesStuck { day: r.range(30.0, 200.0) };
        c.days = 240.0;
    });
    let outcomes = run_all(&cases);
    for (case, outcome) in cases.iter().zip(&outcomes) {
        let Fault::AnglesStuck { day } = case.fault else { unreachable!() };
        let told = outcome.device.iter().find(|(id, d)| id == "tilt-angles-frozen" && *d >= day).map(|(_, d)| d - day);
        eprintln!("seed {}: angles stuck from day {day:.1}; tilt-angles-frozen {told:?} days later; device {:?}", case.seed, outcome.device);
        assert!(told.is_some_and(|d| d < 1.0), "seed {}: a frozen accelerometer must be told within a day: {told:?}", case.seed);
    }
}

// --- Real movements during learning ----------------------------------------------------------

/// Creep detection: days from the creep's own 2‰ crossing to the first yellow, with and without.
fn creep_delays(name: &str, cases: &[Case]) -> Vec<(Option<f64>, Option<f64>)> {
    let with = run_all(cases);
    let without = run_all(&uncompensated(cases));
    eprintln!("{name}: days from the creep's 2 permille crossing to the first yellow (and first incident), compensated / without");
    cases
        .iter()
        .zip(with.iter().zip(&without))
        .map(|(case, (w, wo))| {
            let truth = w.truth_day.unwrap_or(f64::NAN);
            let delay = |o: &Outcome, s| o.first(s).map(|d| d - truth);
            eprintln!(
                "  seed {} {:?}: yellow {:?} / {:?}; first {:?} / {:?}; incidents {} / {}",
                case.seed,
                case.movement,
                delay(w, Severity::Warning),
                delay(wo, Severity::Warning),
                delay(w, Severity::Notice),
                delay(wo, Severity::Notice),
                w.incidents.len(),
                wo.incidents.len()
            );
            (delay(w, Severity::Warning), delay(wo, Severity::Warning))
        })
        .collect()
}

#[test]
fn a_creep_from_the_day_of_installation() {
    let cases = healthy_cases(700..706, |c, r| {
        c.movement = Movement::Creep { day: r.range(0.0, 2.0), per_day: r.range(0.02, 0.1), angle: r.range(0.0, TAU) };
        c.days = 200.0;
    });
    for (with, _) in creep_delays("creep from installation", &cases) {
        assert!(with.is_some_and(|d| d <= 3.0), "{with:?}");
    }
}

#[test]
fn a_creep_that_starts_as_spring_warms() {
    let cases = healthy_cases(720..726, |c, r| {
        c.start_doy = r.range(40.0, 70.0);
        c.movement = Movement::Creep { day: r.range(10.0, 40.0), per_day: r.range(0.02, 0.06), angle: c.direction + r.range(-0.3, 0.3) };
        c.days = 200.0;
    });
    for (with, _) in creep_delays("creep in spring along the thermal direction", &cases) {
        assert!(with.is_some_and(|d| d <= 3.0), "{with:?}");
    }
}

#[test]
fn a_lean_during_a_cold_spell() {
    let cases = healthy_cases(740..746, |c, r| {
        c.movement = Movement::LeanInColdSpell { size: r.range(2.2, 3.0), days_long: r.range(3.0, 8.0), angle: r.range(0.0, TAU) };
        c.days = 330.0;
    });
    let with = run_all(&cases);
    for (case, outcome) in cases.iter().zip(&with) {
        let truth = outcome.truth_day.unwrap_or(f64::NAN);
        let yellow = outcome.first(Severity::Warning).map(|d| d - truth);
        eprintln!("seed {} {:?}: lean reached 2 permille day {truth:.1}; yellow {yellow:?}; {:?}", case.seed, case.movement, outcome.incidents);
        assert!(yellow.is_some_and(|d| d <= 3.0), "seed {}: {yellow:?}", case.seed);
        // The lean stays: tilt-change must not clear below yellow while it stands.
    }
}

#[test]
fn a_jump_in_the_first_two_weeks() {
    let cases = healthy_cases(760..770, |c, r| {
        c.movement = Movement::Jump { day: r.range(0.5, 14.0), degrees: r.range(0.1, 0.3), angle: r.range(0.0, TAU) };
        c.interval_min = 5;
        c.days = 60.0;
    });
    for (case, outcome) in cases.iter().zip(run_all(&cases)) {
        let truth = outcome.truth_day.unwrap_or(f64::NAN);
        let delay = outcome.first_of("tilt-sudden").map(|d| (d - truth) * 1440.0);
        eprintln!("seed {} {:?}: tilt-sudden {delay:?} min after; {:?}", case.seed, case.movement, outcome.incidents);
        assert!(delay.is_some_and(|m| m <= 10.5), "seed {}: {delay:?}", case.seed);
    }
}

// --- Operations ------------------------------------------------------------------------------

#[test]
fn calibrate_at_a_later_time() {
    let cases = healthy_cases(800..808, |c, r| c.operation = Operation::Calibrate { day: r.range(5.0, 300.0) });
    let with = report("calibrated at day 5-300", &cases, &run_all(&cases));
    assert!(with <= 25.0, "{with}");
}

#[test]
fn a_restart_mid_learning_changes_nothing() {
    let cases = healthy_cases(820..826, |c, r| {
        c.operation = Operation::Restart { day: r.range(0.5, 40.0) };
        c.movement = Movement::Creep { day: 60.0, per_day: 0.05, angle: r.range(0.0, TAU) };
        c.days = 150.0;
    });
    let plain: Vec<Case> = cases.iter().map(|c| Case { operation: Operation::None, ..c.clone() }).collect();
    let (restarted, straight) = (run_all(&cases), run_all(&plain));
    for ((case, a), b) in cases.iter().zip(&restarted).zip(&straight) {
        eprintln!("seed {} {:?}: {:?} vs {:?}", case.seed, case.operation, a.incidents, b.incidents);
        assert_eq!(a.incidents, b.incidents, "seed {}", case.seed);
    }
}

#[test]
fn a_clock_step_back() {
    let cases = healthy_cases(840..846, |c, r| c.operation = Operation::ClockBack { day: r.range(10.0, 300.0), hours: r.range(6.0, 48.0) });
    let with = report("clock back 6-48 h at day 10-300", &cases, &run_all(&cases));
    assert!(with <= 25.0, "{with}");
}

#[test]
fn an_inventory_baseline_taken_at_another_temperature() {
    let cases = healthy_cases(860..866, |c, r| c.operation = Operation::InventoryBaseline { shift: if r.unit() < 0.5 { 15.0 } else { -15.0 } });
    let (with, without) = compare("inventory x/y zeroed 15 C away from the first day", &cases);
    assert!(with <= without, "{with} vs {without}");
}

/// Found by this file: a box zeroed before compensation existed had its temperature baseline
/// learned at the upgrade, months after its x/y baseline, and the seasonal offset of that day
/// stayed for good. Such a box is now not compensated (it is judged as before the upgrade) until
/// `gridwatch calibrate` zeroes its angles and its temperature together.
#[test]
fn an_upgrade_from_packs_without_compensation_changes_nothing_until_the_box_is_calibrated() {
    let cases = healthy_cases(880..886, |c, r| c.operation = Operation::Upgrade { day: r.range(60.0, 200.0) });
    let outcomes = run_all(&cases);
    let with = report("upgraded at day 60-200 (x/y learned at installation, temperature at the upgrade)", &cases, &outcomes);
    let plain = uncompensated(&cases);
    let without = report("the same walls, never compensated", &plain, &run_all(&plain));
    eprintln!("{with} vs {without} per 100 box-years");
    // The upgrade changes the tilt rules, whose windows start afresh (a changed rule never
    // inherits a decision): at most one incident per box from that, none from compensation.
    // The cases are one box-year each: one incident per box is 100 per 100 box-years.
    assert!(with <= without + 100.0, "the upgrade must not make a healthy wall alarm more: {with} vs {without}");
}
