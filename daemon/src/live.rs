//! What the installer commands see of a running daemon: each sensor's latest reading and, for
//! tilt boxes, their recent angles (for `gridwatch calibrate`). The pipeline writes it on every
//! sample; the HTTP endpoint reads it.
//!
//! Memory stays small and bounded: one latest reading per sensor (field names kept once), and
//! per tilt box at most [`RECENT`] angle pairs, one kept every [`RECENT_SPACING_SECS`] (so at
//! least the last 32 minutes).

use crate::field_names::FieldNames;
use gridwatch_rules::Millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Angle pairs kept per tilt box.
pub const RECENT: usize = 64;
/// At most one kept pair per this many seconds.
pub const RECENT_SPACING_SECS: i64 = 30;

/// One sensor's latest reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latest {
    pub at_ms: Option<Millis>,
    pub fields: Vec<(String, f64)>,
}

/// 32 bytes per sensor before its first reading.
#[derive(Debug)]
struct Slot {
    /// When the latest reading was taken; [`NEVER`] before the first.
    at_ms: Millis,
    /// The latest reading's fields, by index in [`Table::fields`] (a sensor sends the same
    /// fields every time, so the slice is overwritten in place, not grown).
    fields: Box<[(u16, f64)]>,
    /// (seconds since the epoch, x, y) of a tilt box; only readings with `x` and `y` make one.
    #[allow(clippy::box_collection)]
    recent: Option<Box<VecDeque<(i64, f32, f32)>>>,
}

const NEVER: Millis = Millis::MIN;

impl Default for Slot {
    fn default() -> Slot {
        Slot { at_ms: NEVER, fields: Box::default(), recent: None }
    }
}

#[derive(Debug)]
struct Table {
    fields: FieldNames,
    slots: Vec<Slot>,
    /// The reading being recorded (reused buffer).
    scratch: Vec<(u16, f64)>,
}

/// The latest readings of every sensor in the inventory, by position.
#[derive(Debug)]
pub struct LiveTable {
    table: Mutex<Table>,
}

impl LiveTable {
    pub fn new(sensors: usize) -> LiveTable {
        LiveTable { table: Mutex::new(Table { fields: FieldNames::default(), slots: (0..sensors).map(|_| Slot::default()).collect(), scratch: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a reading of sensor `index` taken at `at`.
    pub fn record(&self, index: usize, at: Millis, fields: &[(String, f64)]) {
        let mut table = self.lock();
        let Table { fields: names, slots, scratch } = &mut *table;
        let Some(slot) = slots.get_mut(index) else { return };
        slot.at_ms = at;
        scratch.clear();
        scratch.extend(fields.iter().filter_map(|(name, value)| Some((names.index(name)?, *value))));
        if slot.fields.len() == scratch.len() {
            slot.fields.copy_from_slice(scratch);
        } else {
            slot.fields = scratch.as_slice().into();
        }
        let value = |name: &str| fields.iter().find(|(n, v)| n == name && v.is_finite()).map(|&(_, v)| v);
        if let (Some(x), Some(y)) = (value("x"), value("y")) {
            let second = at.div_euclid(1000);
            let recent = slot.recent.get_or_insert_with(Box::default);
            if recent.back().is_none_or(|&(s, _, _)| second - s >= RECENT_SPACING_SECS) {
                recent.push_back((second, x as f32, y as f32));
                if recent.len() > RECENT {
                    recent.pop_front();
                }
            }
        }
    }

    /// Every sensor's latest reading, by position.
    pub fn latest(&self) -> Vec<Latest> {
        let table = self.lock();
        let named = |slot: &Slot| slot.fields.iter().map(|&(field, value)| (table.fields.name(field).to_string(), value)).collect();
        table.slots.iter().map(|slot| Latest { at_ms: (slot.at_ms != NEVER).then_some(slot.at_ms), fields: named(slot) }).collect()
    }

    /// The median x and y of a tilt box over the `window_ms` before `now`, with how many readings
    /// it took; `None` without readings in the window.
    pub fn median_angles(&self, index: usize, now: Millis, window_ms: Millis) -> Option<(f64, f64, usize)> {
        let table = self.lock();
        let since = (now - window_ms).div_euclid(1000);
        let recent: Vec<(f64, f64)> = table.slots.get(index)?.recent.as_deref()?.iter().filter(|&&(s, _, _)| s >= since).map(|&(_, x, y)| (f64::from(x), f64::from(y))).collect();
        if recent.is_empty() {
            return None;
        }
        let x = gridwatch_rules::signal::median(recent.iter().map(|p| p.0).collect());
        let y = gridwatch_rules::signal::median(recent.iter().map(|p| p.1).collect());
        Some((x, y, recent.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(x: f64, y: f64) -> Vec<(String, f64)> {
        vec![("x".into(), x), ("y".into(), y), ("t".into(), 21.0)]
    }

    #[test]
    fn the_median_of_the_window_ignores_a_knock() {
        let live = LiveTable::new(2);
        for minute in 0..40i64 {
            let x = if minute == 35 { 3.0 } else { 0.31 };
            live.record(1, minute * 60_000, &reading(x, -0.12));
        }
        let (x, y, n) = live.median_angles(1, 40 * 60_000, 30 * 60_000).unwrap();
        assert_eq!(n, 30);
        assert!((x - 0.31).abs() < 1e-6 && (y + 0.12).abs() < 1e-6, "{x} {y}");
        assert_eq!(live.median_angles(0, 40 * 60_000, 30 * 60_000), None, "no readings from the other box");
        assert_eq!(live.latest()[1].fields[0], ("x".to_string(), 0.31));
    }

    #[test]
    fn fast_boxes_are_thinned_and_bounded() {
        let live = LiveTable::new(1);
        for second in 0..(3 * 3600) {
            live.record(0, second * 1000, &reading(0.1, 0.1));
        }
        let table = live.lock();
        let recent = table.slots[0].recent.as_deref().unwrap();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[1].0 - recent[0].0, RECENT_SPACING_SECS);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
