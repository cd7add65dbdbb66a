//! A healthy wall as a tilt box sees it: the building's weather (a daily thermal swing peaking
//! in the local afternoon, varied by cloud from day to day, and a seasonal swing that follows the
//! air temperature — the seasons and the weather's fronts — some hours late, with a part that
//! does not follow it) and each box's own mounting offset, white noise, single-sample spikes, data
//! gaps, report interval, quantisation and, for most boxes, the temperature it reports. Real movements ([`super::movements`]) are laid on top as a
//! change of tilt ratio in ‰; faults ([`super::faults`]) are applied to the finished readings.
//!
//! Invariants: boxes of one building share the weather up to a small per-box scale and
//! rotation; a box's readings are strictly increasing in time; every value is a float32.

use super::{between, degrees_of, log_uniform, normal, uniform, Stream, DAY, EPOCH_MS, HOUR, MINUTE, WEEK, YEAR};
use gridwatch_rules::{Millis, SensorKind, Subject, Tags};
use std::f64::consts::TAU;

/// The weather of one building: what makes its walls swing.
#[derive(Debug, Clone)]
pub struct Weather {
    /// Amplitude (‰) of the daily thermal swing on a clear day.
    pub daily_amp: f64,
    /// Direction (radians) of the daily swing.
    pub daily_dir: f64,
    /// Hour (UTC) of the daily maximum: 06:00–08:00 UTC is the afternoon in UTC+8.
    pub peak_hour_utc: f64,
    /// Each day's share of the clear-day amplitude (cloud): 0.2–1.0, one per day from `first_day`.
    cloud: Vec<f64>,
    first_day: i64,
    /// Amplitude (‰) of the seasonal swing.
    pub seasonal_amp: f64,
    pub seasonal_dir: f64,
    /// Day of the year of the seasonal maximum (summer).
    pub seasonal_peak_day: f64,
    /// The air temperature (°C) the seasonal swing follows.
    pub air: Air,
    /// How many hours the wall lags behind the air temperature (thermal mass): 0–24.
    pub wall_lag_hours: f64,
    /// A thick wall instead: the time constant (days) of the first-order low-pass of the air it
    /// follows (2–5), and the weather's anomaly as such a wall feels it, one per day.
    pub wall_time_constant_days: Option<f64>,
    anomaly_felt: Vec<f64>,
    /// The share of the seasonal swing that does not follow the temperature (ground moisture),
    /// a quarter of a year out of phase: 0–0.25.
    pub unexplained: f64,
}

/// The air temperature around a building (°C): the seasons, the weather's fronts (a daily
/// anomaly that persists for days) and the daily cycle.
#[derive(Debug, Clone)]
pub struct Air {
    pub mean: f64,
    /// Seasonal amplitude: 8–15 °C (south to north China).
    pub seasonal: f64,
    /// Clear-day daily amplitude: 3–8 °C.
    pub daily: f64,
    /// The weather's anomaly of each day from `first_day` (AR(1), σ 1.5–3.5 °C).
    anomaly: Vec<f64>,
}

impl Weather {
    /// A building's weather over `[start, end)`, its seasonal amplitude drawn from `seasonal`;
    /// `thick` walls follow a low-pass of the air days late instead of the air hours late.
    pub fn draw(rng: &mut fastrand::Rng, seasonal: (f64, f64), start: Millis, end: Millis, thick: bool) -> Weather {
        let first_day = (start - EPOCH_MS).div_euclid(DAY) - 1;
        let days = ((end - start) / DAY + 3) as usize;
        let weather = Weather {
            daily_amp: uniform(rng, 0.0, 0.5),
            daily_dir: uniform(rng, 0.0, TAU),
            peak_hour_utc: uniform(rng, 6.0, 8.0),
            cloud: (0..days).map(|_| uniform(rng, 0.2, 1.0)).collect(),
            first_day,
            seasonal_amp: uniform(rng, seasonal.0, seasonal.1),
            seasonal_dir: uniform(rng, 0.0, TAU),
            seasonal_peak_day: uniform(rng, 180.0, 220.0),
            air: Air { mean: 0.0, seasonal: 0.0, daily: 0.0, anomaly: Vec::new() },
            wall_lag_hours: 0.0,
            wall_time_constant_days: None,
            anomaly_felt: Vec::new(),
            unexplained: 0.0,
        };
        let (persistence, sigma) = (uniform(rng, 0.6, 0.85), uniform(rng, 1.5, 3.5));
        let mut anomaly = Vec::with_capacity(days);
        let mut today = normal(rng) * sigma;
        for _ in 0..days {
            anomaly.push(today);
            today = persistence * today + (1.0 - persistence * persistence).sqrt() * sigma * normal(rng);
        }
        let weather = Weather {
            air: Air { mean: uniform(rng, 8.0, 22.0), seasonal: uniform(rng, 8.0, 15.0), daily: uniform(rng, 3.0, 8.0), anomaly },
            wall_lag_hours: uniform(rng, 0.0, 24.0),
            unexplained: uniform(rng, 0.0, 0.25),
            ..weather
        };
        if !thick {
            return weather;
        }
        // Drawn after everything else, so that the other walls' weather stays as it was.
        let tau = uniform(rng, 2.0, 5.0);
        let keep = (-1.0 / tau).exp();
        // Settled on the weather's own spread at the start: the anomaly's first day.
        let mut felt = weather.air.anomaly.first().copied().unwrap_or(0.0);
        let anomaly_felt = weather.air.anomaly.iter().map(|&today| {
            felt = felt * keep + today * (1.0 - keep);
            felt
        });
        Weather { anomaly_felt: anomaly_felt.collect(), wall_time_constant_days: Some(tau), wall_lag_hours: 0.0, ..weather }
    }

    /// The weather's anomaly (°C) at `days` as the wall feels it: the air's some hours late, or
    /// its low-pass behind a thick wall (whose seasons come as many days late as its time
    /// constant: a low-pass of a year-long cycle barely damps it).
    fn felt_at(&self, days: f64) -> (f64, f64) {
        match self.wall_time_constant_days {
            Some(tau) => (days - tau, interpolate(&self.anomaly_felt, days - self.first_day as f64 - 0.5, 0.0)),
            None => {
                let lagged = days - self.wall_lag_hours / 24.0;
                (lagged, self.anomaly_at(lagged))
            }
        }
    }

    /// The weather's anomaly (°C) at `days`, interpolated between day centres.
    fn anomaly_at(&self, days: f64) -> f64 {
        interpolate(&self.air.anomaly, days - self.first_day as f64 - 0.5, 0.0)
    }

    /// The seasonal cycle's phase (radians) at `days`.
    fn season(&self, days: f64) -> f64 {
        TAU * (days.rem_euclid(365.25) - self.seasonal_peak_day) / 365.25
    }

    /// The air temperature (°C) at `t`, the afternoon's sun included.
    pub fn air_temperature(&self, t: Millis) -> f64 {
        let days = (t - EPOCH_MS) as f64 / DAY as f64;
        let hour = (t - EPOCH_MS).rem_euclid(DAY) as f64 / HOUR as f64;
        let daily = self.air.daily * self.cloud_at(days) * (TAU * (hour - self.peak_hour_utc - 1.0) / 24.0).cos();
        self.air.mean + self.air.seasonal * self.season(days).cos() + self.anomaly_at(days) + daily
    }

    /// The cloud factor at `days` (days since the epoch), interpolated between day centres.
    fn cloud_at(&self, days: f64) -> f64 {
        interpolate(&self.cloud, days - self.first_day as f64 - 0.5, 1.0)
    }

    /// The wall's swing (‰ in x and y) at `t` for a box that scales and rotates it.
    pub fn swing(&self, wall: &WallBox, t: Millis) -> (f64, f64) {
        let days = (t - EPOCH_MS) as f64 / DAY as f64;
        let hour = (t - EPOCH_MS).rem_euclid(DAY) as f64 / HOUR as f64;
        let daily = self.daily_amp * wall.swing_scale * self.cloud_at(days) * (TAU * (hour - self.peak_hour_utc) / 24.0).cos();
        // The seasons and the fronts, as the wall feels them hours or days late, in units of the
        // seasonal amplitude; and the part that follows the ground, not the air.
        let (season_felt, anomaly_felt) = self.felt_at(days);
        let thermal = self.season(season_felt).cos() + anomaly_felt / self.air.seasonal;
        let ground = (self.season(days) - TAU / 4.0).cos();
        let seasonal = self.seasonal_amp * wall.swing_scale * ((1.0 - self.unexplained) * thermal + self.unexplained * ground);
        let (dd, sd) = (self.daily_dir + wall.swing_rotation, self.seasonal_dir + wall.swing_rotation);
        (daily * dd.cos() + seasonal * sd.cos(), daily * dd.sin() + seasonal * sd.sin())
    }
}

/// `values[f]` with `f` a fractional index, linearly interpolated (`fallback` past the ends).
fn interpolate(values: &[f64], f: f64, fallback: f64) -> f64 {
    let i = f.floor().max(0.0) as usize;
    let frac = (f - f.floor()).clamp(0.0, 1.0);
    let a = values.get(i).copied().unwrap_or(fallback);
    let b = values.get(i + 1).copied().unwrap_or(a);
    a + (b - a) * frac
}

/// How one box is mounted and how it reports.
#[derive(Debug, Clone)]
pub struct WallBox {
    /// Mounting offset (degrees, x and y): up to 1° in any direction.
    pub offset: (f64, f64),
    /// This box's share of the building's swing (0.8–1.2) and its rotation (±20°).
    pub swing_scale: f64,
    pub swing_rotation: f64,
    /// White noise σ (degrees) on each axis.
    pub noise_deg: f64,
    pub spikes_per_week: f64,
    /// Data gaps `[from, to)`.
    pub gaps: Vec<(Millis, Millis)>,
    pub interval_ms: Millis,
    /// Quantisation step of the reported angle (degrees), if the box rounds.
    pub quantum: Option<f64>,
    /// What the box reports of its temperature, if it does.
    pub thermometer: Option<Thermometer>,
}

/// A box's temperature sensor: its offset from the air (°C), noise and resolution.
#[derive(Debug, Clone)]
pub struct Thermometer {
    pub offset: f64,
    pub noise: f64,
    pub quantum: f64,
}

impl Thermometer {
    /// Off by up to 1.5 °C, noise 0.02–0.3 °C, reporting in 0.01 °C (WitMotion), 0.0625 °C
    /// (DS18B20) or 0.1 °C.
    pub fn draw(rng: &mut fastrand::Rng) -> Thermometer {
        Thermometer { offset: uniform(rng, -1.5, 1.5), noise: log_uniform(rng, 0.02, 0.3), quantum: [0.01, 0.0625, 0.1][rng.usize(0..3)] }
    }
}

impl WallBox {
    /// A box reporting over `[start, end)`.
    pub fn draw(rng: &mut fastrand::Rng, start: Millis, end: Millis, interval_minutes: (i64, i64)) -> WallBox {
        let (size, dir) = (uniform(rng, 0.0, 1.0), uniform(rng, 0.0, TAU));
        let gap_count = ((end - start) as f64 / YEAR as f64 * rng.usize(0..=6) as f64).round() as usize;
        let mut gaps: Vec<(Millis, Millis)> = (0..gap_count)
            .map(|_| {
                let from = between(rng, start + 2 * DAY, end);
                (from, from + log_uniform(rng, HOUR as f64, 3.0 * DAY as f64) as Millis)
            })
            .collect();
        gaps.sort_unstable();
        WallBox {
            offset: (size * dir.cos(), size * dir.sin()),
            swing_scale: uniform(rng, 0.8, 1.2),
            swing_rotation: uniform(rng, -20f64.to_radians(), 20f64.to_radians()),
            noise_deg: log_uniform(rng, 0.0005, 0.005),
            spikes_per_week: uniform(rng, 0.0, 5.0),
            gaps,
            interval_ms: rng.i64(interval_minutes.0..=interval_minutes.1) * MINUTE,
            quantum: match rng.u8(0..3) {
                0 => None,
                1 => Some(0.01),
                _ => Some(180.0 / 32768.0),
            },
            // Most boxes report a temperature (WitMotion frames carry one, in 0.01 °C).
            thermometer: (rng.f64() < 0.8).then(|| Thermometer::draw(rng)),
        }
    }

    /// Direction (radians) of the mounting offset.
    pub fn offset_dir(&self) -> f64 {
        self.offset.1.atan2(self.offset.0)
    }

    fn in_gap(&self, t: Millis) -> bool {
        self.gaps.iter().any(|&(from, to)| t >= from && t < to)
    }
}

pub const TILT_FIELDS: &[&str] = &["x", "y"];
/// A box that reports its temperature too.
pub const TILT_FIELDS_WITH_TEMPERATURE: &[&str] = &["x", "y", "temperature"];

/// The subject of box `index` of building `building` (case number) with report interval `interval_ms`.
pub fn subject(case: &str, index: usize, interval_ms: Millis) -> Subject {
    Subject {
        id: format!("{case}-box{index}").into(),
        kind: SensorKind::Tilt,
        site: format!("{case}-site").into(),
        building: Some(format!("{case}-house").into()),
        grid: Some("grid-1".into()),
        tags: Tags::default(),
        interval_ms,
    }
}

/// A box's readings over `[start, end)`: the weather, plus `movement(t)` (‰, x and y), seen
/// through the box's offset, noise, spikes, gaps, quantisation and float32.
pub fn readings(
    subject: Subject,
    weather: &Weather,
    wall: &WallBox,
    start: Millis,
    end: Millis,
    movement: &dyn Fn(Millis) -> (f64, f64),
    rng: &mut fastrand::Rng,
) -> Stream {
    let mut stream = Stream::new(subject, if wall.thermometer.is_some() { TILT_FIELDS_WITH_TEMPERATURE } else { TILT_FIELDS });
    let spike_chance = wall.spikes_per_week * wall.interval_ms as f64 / WEEK as f64;
    let (tx, ty) = (wall.offset.0.to_radians().tan() * 1000.0, wall.offset.1.to_radians().tan() * 1000.0);
    let mut t = start + rng.i64(0..wall.interval_ms);
    while t < end {
        let at = t + rng.i64(0..2 * super::SECOND);
        t += wall.interval_ms;
        if wall.in_gap(at) {
            continue;
        }
        let (sx, sy) = weather.swing(wall, at);
        let (mx, my) = movement(at);
        let mut x = degrees_of(tx + sx + mx) + normal(rng) * wall.noise_deg;
        let mut y = degrees_of(ty + sy + my) + normal(rng) * wall.noise_deg;
        if rng.f64() < spike_chance {
            let (size, dir) = (uniform(rng, 0.05, 2.0), uniform(rng, 0.0, TAU));
            x += size * dir.cos();
            y += size * dir.sin();
        }
        if let Some(q) = wall.quantum {
            x = (x / q).round() * q;
            y = (y / q).round() * q;
        }
        match &wall.thermometer {
            Some(thermometer) => {
                let temperature = weather.air_temperature(at) + thermometer.offset + normal(rng) * thermometer.noise;
                stream.push(at, &[x, y, (temperature / thermometer.quantum).round() * thermometer.quantum]);
            }
            None => stream.push(at, &[x, y]),
        }
    }
    stream
}

/// A case's start: any day of the year, any hour.
pub fn install_time(rng: &mut fastrand::Rng) -> Millis {
    EPOCH_MS + rng.i64(0..365) * DAY + rng.i64(0..DAY)
}
