//! Each sensor's hourly trend, for the sparkline on the worker's incident page: per sensor and
//! field, the minimum, maximum and sum of the readings of each hour. An [`HourAccumulator`] fills
//! the current hour of one field; the live table ([`crate::live`]) keeps one next to each field's
//! latest value and hands the filled hours to the pipeline, which merges them into the store
//! (`trend` table) every [`FLUSH_EVERY_MS`] and at shutdown, dropping older hours.

use crate::store::TrendRow;
use gridwatch_rules::Millis;
use std::sync::Arc;

/// How often the accumulated hours go to the store.
pub const FLUSH_EVERY_MS: Millis = 10 * 60 * 1000;

/// Hours kept in the store (and drawn on the page).
pub const KEEP_HOURS: i64 = 72;

const HOUR_MS: Millis = 3_600_000;

/// The hour (since the epoch) a reading taken at `at` counts in; `None` outside what 32 bits hold.
pub fn hour_of(at: Millis) -> Option<u32> {
    u32::try_from(at.div_euclid(HOUR_MS)).ok()
}

/// One field's readings in the hour being filled (which hour is kept by the caller, once per
/// sensor). 20 bytes, aligned to 4 so that it packs with a field's other facts into 32: the
/// minimum and maximum are drawn, not summed, so single precision is plenty for them.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, packed(4))]
pub struct HourAccumulator {
    sum: f64,
    min: f32,
    max: f32,
    count: u32,
}

impl Default for HourAccumulator {
    fn default() -> HourAccumulator {
        HourAccumulator { sum: 0.0, min: f32::INFINITY, max: f32::NEG_INFINITY, count: 0 }
    }
}

impl HourAccumulator {
    /// Adds a finite reading.
    pub fn add(&mut self, value: f64) {
        self.min = self.min.min(value as f32);
        self.max = self.max.max(value as f32);
        self.sum += value;
        self.count += 1;
    }

    /// Whether it holds readings not yet taken.
    pub fn is_filled(&self) -> bool {
        self.count > 0
    }

    /// The store's row for it, as the readings of `hour` (since the epoch).
    pub fn row(&self, sensor: &Arc<str>, field: Arc<str>, hour: u32) -> TrendRow {
        let HourAccumulator { sum, min, max, count } = *self;
        TrendRow { sensor: sensor.clone(), field, hour: i64::from(hour), min: f64::from(min), max: f64::from(max), sum, count }
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

    #[test]
    fn an_hour_adds_up_until_taken() {
        let mut hour = HourAccumulator::default();
        assert!(!hour.is_filled());
        hour.add(1.0);
        hour.add(3.0);
        let row = hour.row(&"house-07".into(), "x".into(), 10);
        assert_eq!((&*row.sensor, &*row.field, row.hour), ("house-07", "x", 10));
        assert_eq!((row.min, row.max, row.sum, row.count), (1.0, 3.0, 4.0, 2));
        assert_eq!(std::mem::take(&mut hour).row(&"s".into(), "x".into(), 10).sum, 4.0);
        assert!(!hour.is_filled());
        hour.add(-2.5);
        let row = hour.row(&"s".into(), "x".into(), 11);
        assert_eq!((row.min, row.max, row.sum, row.count), (-2.5, -2.5, -2.5, 1), "an emptied accumulator starts afresh");
        assert_eq!((std::mem::size_of::<HourAccumulator>(), std::mem::align_of::<HourAccumulator>()), (20, 4));
        assert_eq!(hour_of(-1), None);
    }

    #[test]
    fn the_sparkline_spans_its_box() {
        let svg = sparkline(&[(0.0, 1.0, 2.0), (1.0, 2.0, 3.0), (2.0, 3.0, 4.0)], 100, 30);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline points=\"0.0,22.0 50.0,15.0 100.0,8.0\""), "{svg}");
        assert_eq!(sparkline(&[], 100, 30), "");
    }
}
