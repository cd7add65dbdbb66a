//! Each sensor's hourly trend, for the sparkline on the worker's incident page: per sensor and
//! field, the minimum, maximum and sum of the readings of each hour. The pipeline adds every
//! reading here; the sums are written to the store (`trend` table, merged with what an hour
//! already has there) every [`FLUSH_EVERY_MS`] and at shutdown, and older hours are dropped.
//!
//! Memory: one 32-byte accumulator per sensor field being filled (the current hour), nothing
//! else; field names are kept once ([`FieldNames`]).

use crate::config::SensorConfig;
use crate::field_names::FieldNames;
use crate::store::TrendRow;
use gridwatch_rules::Millis;
use std::sync::Arc;

/// How often the accumulated hours go to the store.
pub const FLUSH_EVERY_MS: Millis = 10 * 60 * 1000;

/// Hours kept in the store (and drawn on the page).
pub const KEEP_HOURS: i64 = 72;

const HOUR_MS: Millis = 3_600_000;

/// One field's current hour. 32 bytes: the minimum and maximum are drawn, not summed, so
/// single precision is plenty for them.
#[derive(Debug, Clone, Copy)]
struct Accumulator {
    sum: f64,
    min: f32,
    max: f32,
    /// Hours since the epoch.
    hour: u32,
    count: u32,
    field: u16,
}

impl Accumulator {
    fn start(field: u16, hour: u32, value: f64) -> Accumulator {
        Accumulator { sum: value, min: value as f32, max: value as f32, hour, count: 1, field }
    }
}

/// The hours being filled, per sensor (by inventory position) and field.
#[derive(Debug)]
pub struct HourlyTrend {
    /// The inventory (sensor ids by position).
    inventory: Arc<[SensorConfig]>,
    fields: FieldNames,
    sensors: Vec<Vec<Accumulator>>,
    /// Rows of hours left behind by later readings, for the next flush.
    finished: Vec<TrendRow>,
    last_flush: Option<Millis>,
    /// The next sensor a flush in progress takes rows from.
    cursor: usize,
}

impl HourlyTrend {
    pub fn new(inventory: Arc<[SensorConfig]>) -> HourlyTrend {
        HourlyTrend { sensors: vec![Vec::new(); inventory.len()], inventory, fields: FieldNames::default(), finished: Vec::new(), last_flush: None, cursor: 0 }
    }

    /// Adds a reading of sensor `index` taken at `at`.
    pub fn record(&mut self, index: usize, at: Millis, fields: &[(String, f64)]) {
        let Some(slot) = self.sensors.get_mut(index) else { return };
        let Ok(hour) = u32::try_from(at.div_euclid(HOUR_MS)) else { return };
        for (name, value) in fields.iter().filter(|(_, v)| v.is_finite()) {
            let Some(field) = self.fields.index(name) else { continue };
            match slot.iter_mut().find(|acc| acc.field == field) {
                Some(acc) if acc.hour == hour => {
                    acc.min = acc.min.min(*value as f32);
                    acc.max = acc.max.max(*value as f32);
                    acc.sum += value;
                    acc.count += 1;
                }
                Some(acc) => {
                    // Readings of an earlier hour arriving late start a fresh accumulator too;
                    // the store merges whatever comes for the same hour.
                    if acc.count > 0 {
                        self.finished.push(row(&self.inventory[index].id, &self.fields, acc));
                    }
                    *acc = Accumulator::start(field, hour, *value);
                }
                None => {
                    // A sensor's fields arrive once; keep the list exact rather than doubled.
                    slot.push(Accumulator::start(field, hour, *value));
                    slot.shrink_to_fit();
                }
            }
        }
    }

    /// Whether it is time to write: every [`FLUSH_EVERY_MS`].
    pub fn due(&self, now: Millis) -> bool {
        self.last_flush.is_none_or(|last| now - last >= FLUSH_EVERY_MS)
    }

    /// About `max_rows` (whole sensors) of what was accumulated since the last flush, as rows to
    /// merge into the store, and whether the flush is complete; the accumulators taken start
    /// again (same hours). A flush calls this until it is complete, so the rows of ten thousand
    /// sensors are never all in memory at once.
    pub fn take(&mut self, now: Millis, max_rows: usize) -> (Vec<TrendRow>, bool) {
        self.last_flush = Some(now);
        let from_finished = self.finished.len().min(max_rows);
        let mut rows: Vec<TrendRow> = self.finished.drain(..from_finished).collect();
        while rows.len() < max_rows && self.cursor < self.sensors.len() {
            let index = self.cursor;
            let room = max_rows - rows.len();
            let filled = self.sensors[index].iter().filter(|acc| acc.count > 0).count();
            if filled > room && !rows.is_empty() {
                break;
            }
            for acc in self.sensors[index].iter_mut().filter(|acc| acc.count > 0) {
                rows.push(row(&self.inventory[index].id, &self.fields, acc));
                *acc = Accumulator { sum: 0.0, min: f32::INFINITY, max: f32::NEG_INFINITY, count: 0, ..*acc };
            }
            self.cursor += 1;
        }
        let complete = self.cursor == self.sensors.len() && self.finished.is_empty();
        if complete {
            self.cursor = 0;
        }
        (rows, complete)
    }
}

fn row(sensor: &str, fields: &FieldNames, acc: &Accumulator) -> TrendRow {
    TrendRow {
        sensor: sensor.to_string(),
        field: fields.name(acc.field).to_string(),
        hour: i64::from(acc.hour),
        min: f64::from(acc.min),
        max: f64::from(acc.max),
        sum: acc.sum,
        count: acc.count,
    }
}

/// An inline SVG sparkline of hourly means (oldest first), `width` × `height` pixels, with a
/// band from each hour's minimum to its maximum. Empty input, empty string.
pub fn sparkline(points: &[(f64, f64, f64)], width: u32, height: u32) -> String {
    if points.is_empty() {
        return String::new();
    }
    let low = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let high = points.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
    let span = if high > low { high - low } else { 1.0 };
    let step = if points.len() > 1 { f64::from(width) / (points.len() - 1) as f64 } else { 0.0 };
    let y = |v: f64| f64::from(height) - 1.0 - (v - low) / span * (f64::from(height) - 2.0);
    let line: Vec<String> = points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", i as f64 * step, y(p.1))).collect();
    let upper = points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", i as f64 * step, y(p.2)));
    let lower = points.iter().enumerate().rev().map(|(i, p)| format!("{:.1},{:.1}", i as f64 * step, y(p.0)));
    let band: Vec<String> = upper.chain(lower).collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
         <polygon points=\"{}\" fill=\"#ddd\"/><polyline points=\"{}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\"/></svg>",
        band.join(" "),
        line.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend() -> HourlyTrend {
        HourlyTrend::new(vec![SensorConfig::test_tilt("house-07", "north-lane")].into())
    }

    #[test]
    fn readings_add_up_per_hour_and_field() {
        let mut trend = trend();
        let t = 1_795_392_000_000; // on the hour
        trend.record(0, t, &[("x".into(), 1.0), ("y".into(), f64::NAN)]);
        trend.record(0, t + 60_000, &[("x".into(), 3.0)]);
        let (rows, complete) = trend.take(t + 120_000, 100);
        assert!(complete);
        assert_eq!(rows.len(), 1, "NaN is not a reading: {rows:?}");
        assert_eq!((rows[0].min, rows[0].max, rows[0].sum, rows[0].count), (1.0, 3.0, 4.0, 2));
        assert!(trend.take(t + 180_000, 100).0.is_empty(), "taken once");
        // The next hour: the hour being filled moves on.
        trend.record(0, t + 60_000, &[("x".into(), 5.0)]);
        trend.record(0, t + HOUR_MS, &[("x".into(), 7.0)]);
        let (rows, _) = trend.take(t + HOUR_MS, 100);
        assert_eq!(rows.iter().map(|r| (r.hour - t / HOUR_MS, r.sum)).collect::<Vec<_>>(), vec![(0, 5.0), (1, 7.0)], "the earlier hour's rest, then the new hour");
        let fields: Vec<(String, f64)> = ["a", "b", "c", "d", "e"].iter().map(|f| (f.to_string(), 1.0)).collect();
        trend.record(0, t + HOUR_MS, &fields);
        assert_eq!(trend.sensors[0].capacity(), 6, "x and five more fields, no room to spare");
    }

    #[test]
    fn a_flush_comes_in_batches_of_whole_sensors() {
        let mut trend = HourlyTrend::new((0..5).map(|i| SensorConfig::test_tilt(&format!("s{i}"), "north-lane")).collect());
        let t = 1_795_392_000_000;
        for sensor in 0..5 {
            trend.record(sensor, t, &[("x".into(), 1.0), ("y".into(), 2.0)]);
        }
        let mut batches = Vec::new();
        loop {
            let (rows, complete) = trend.take(t, 3);
            batches.push(rows.iter().map(|r| format!("{}.{}", r.sensor, r.field)).collect::<Vec<_>>().join(" "));
            if complete {
                break;
            }
        }
        assert_eq!(batches, vec!["s0.x s0.y", "s1.x s1.y", "s2.x s2.y", "s3.x s3.y", "s4.x s4.y"], "never a sensor split over two batches");
        trend.record(2, t + 1, &[("x".into(), 4.0)]);
        let (rows, _) = trend.take(t + 2, 3);
        assert_eq!(rows.iter().map(|r| (r.sensor.as_str(), r.sum)).collect::<Vec<_>>(), vec![("s2", 4.0)], "the next flush starts from the first sensor again");
    }

    #[test]
    fn flushes_are_spaced() {
        let mut trend = trend();
        assert!(trend.due(0));
        trend.take(1_000, 100);
        assert!(!trend.due(1_000 + FLUSH_EVERY_MS - 1));
        assert!(trend.due(1_000 + FLUSH_EVERY_MS));
    }

    #[test]
    fn the_sparkline_spans_its_box() {
        let svg = sparkline(&[(0.0, 1.0, 2.0), (1.0, 2.0, 3.0), (2.0, 3.0, 4.0)], 100, 30);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline points=\"0.0,22.0 50.0,15.0 100.0,8.0\""), "{svg}");
        assert_eq!(sparkline(&[], 100, 30), "");
    }
}
