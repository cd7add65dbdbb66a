//! What the daemon keeps of each sensor's recent readings, in one table the pipeline writes on
//! every sample: per field, the latest value (what the installer commands see) next to the hour
//! being accumulated for the hourly trend ([`crate::trend`]); for tilt boxes, their recent angles
//! (for `gridwatch calibrate`). The HTTP endpoint reads the latest values; the pipeline takes the
//! filled hours out for the store.
//!
//! Memory stays small and bounded: one 40-byte slot per sensor; one 32-byte entry per field it
//! sends, with its latest value and its readings in the current hour (field names kept once);
//! and per tilt box at most [`RECENT`] angle pairs, one kept every [`RECENT_SPACING_SECS`] (so at
//! least the last 32 minutes). The latest values and the trend share one list per sensor because
//! they are kept for the same fields.

use crate::clock::Clock;
use crate::config::SensorConfig;
use crate::field_names::FieldNames;
use crate::store::TrendRow;
use crate::trend::{HourAccumulator, FLUSH_EVERY_MS};
use gridwatch_rules::Millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Angle pairs kept per tilt box.
pub const RECENT: usize = 64;
/// At most one kept pair per this many seconds.
pub const RECENT_SPACING_SECS: i64 = 30;

/// One sensor's latest reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latest {
    /// When it was taken (the device's time, or this box's).
    pub at_ms: Option<Millis>,
    /// When it arrived, on the daemon's elapsed time ([`Clock::elapsed_ms`]): whether a sensor
    /// is silent is judged on it, so neither a box clock that is not set yet nor a device's own
    /// clock makes a reporting sensor look silent, or a silent one look well.
    #[serde(skip)]
    pub heard_ms: Option<Millis>,
    pub fields: Vec<(String, f64)>,
}

/// One field of one sensor. 32 bytes.
#[derive(Debug, Clone, Copy)]
struct FieldEntry {
    latest: f64,
    /// The field's readings in the hour of the sensor's latest reading.
    hour: HourAccumulator,
    /// Index in [`Table::names`].
    field: u16,
    /// Whether the latest reading had this field.
    in_latest: bool,
}

/// 40 bytes per sensor before its first reading.
#[derive(Debug)]
struct Slot {
    /// When the latest reading was taken; [`NEVER`] before the first. Its hour is the hour the
    /// fields' accumulators are filling.
    at_ms: Millis,
    /// When it arrived, on the daemon's elapsed time; [`NEVER`] before the first.
    heard_ms: Millis,
    /// Every field the sensor has sent, in the order it first sent them (a sensor sends the same
    /// fields every time, so the list is written in place, not grown).
    fields: Box<[FieldEntry]>,
    /// (seconds since the epoch, x, y) of a tilt box; only readings with `x` and `y` make one.
    #[allow(clippy::box_collection)]
    recent: Option<Box<VecDeque<(i64, f32, f32)>>>,
}

const NEVER: Millis = Millis::MIN;

impl Default for Slot {
    fn default() -> Slot {
        Slot { at_ms: NEVER, heard_ms: NEVER, fields: Box::default(), recent: None }
    }
}

impl Slot {
    /// The hour (since the epoch) of the latest reading, which the accumulators are filling;
    /// `None` before the first ([`NEVER`] has no hour).
    fn hour(&self) -> Option<u32> {
        crate::trend::hour_of(self.at_ms)
    }

    /// Adds entries for the fields of `reading` the sensor has not sent before, growing the list
    /// once (to its exact length).
    fn add_fields(&mut self, reading: &[(u16, f64)]) {
        let known = |fields: &[FieldEntry], field: u16| fields.iter().any(|entry| entry.field == field);
        let new = reading.iter().filter(|&&(field, _)| !known(&self.fields, field)).count();
        if new == 0 {
            return;
        }
        let mut fields = Vec::with_capacity(self.fields.len() + new);
        fields.extend_from_slice(&self.fields);
        for &(field, _) in reading {
            if !known(&fields, field) {
                fields.push(FieldEntry { latest: f64::NAN, hour: HourAccumulator::default(), field, in_latest: false });
            }
        }
        self.fields = fields.into_boxed_slice();
    }
}

#[derive(Debug)]
struct Table {
    /// The inventory (sensor ids by position, for the trend's rows).
    inventory: Arc<[SensorConfig]>,
    names: FieldNames,
    slots: Vec<Slot>,
    /// Hours left behind by later readings, for the next flush.
    finished: Vec<TrendRow>,
    last_flush: Option<Millis>,
    /// The next sensor a flush in progress takes hours from.
    cursor: usize,
    /// The reading being recorded, by field index (reused buffer).
    scratch: Vec<(u16, f64)>,
}

/// The latest readings and current trend hours of every sensor in the inventory, by position.
#[derive(Debug)]
pub struct LiveTable {
    table: Mutex<Table>,
    /// Stamps each reading's arrival ([`Latest::heard_ms`]).
    clock: Clock,
}

impl LiveTable {
    pub fn new(inventory: Arc<[SensorConfig]>, clock: Clock) -> LiveTable {
        let slots = (0..inventory.len()).map(|_| Slot::default()).collect();
        LiveTable {
            table: Mutex::new(Table { inventory, names: FieldNames::default(), slots, finished: Vec::new(), last_flush: None, cursor: 0, scratch: Vec::new() }),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a reading of sensor `index` taken at `at`; its finite values count in the hourly
    /// trend when `in_trend` (a reading whose clock is not trusted does not).
    pub fn record(&self, index: usize, at: Millis, fields: &[(String, f64)], in_trend: bool) {
        let heard = self.clock.elapsed_ms();
        let mut table = self.lock();
        let Table { inventory, names, slots, finished, scratch, .. } = &mut *table;
        let Some(slot) = slots.get_mut(index) else { return };
        let sensor = &inventory[index].id;
        let hour = crate::trend::hour_of(at);
        // A reading of another hour (a later one, or an earlier one arriving late) leaves the
        // hour filled so far to the next flush; the store merges what comes for the same hour.
        if let Some(filled_hour) = slot.hour().filter(|&filled| Some(filled) != hour) {
            for entry in slot.fields.iter_mut().filter(|entry| entry.hour.is_filled()) {
                finished.push(std::mem::take(&mut entry.hour).row(sensor, names.shared(entry.field), filled_hour));
            }
        }
        slot.at_ms = at;
        slot.heard_ms = heard;
        scratch.clear();
        scratch.extend(fields.iter().filter_map(|(name, value)| Some((names.index(name)?, *value))));
        slot.add_fields(scratch);
        let counted = in_trend && hour.is_some();
        for entry in &mut slot.fields {
            entry.in_latest = false;
        }
        for &(field, value) in scratch.iter() {
            let Some(entry) = slot.fields.iter_mut().find(|entry| entry.field == field) else { continue };
            entry.latest = value;
            entry.in_latest = true;
            if counted && value.is_finite() {
                entry.hour.add(value);
            }
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
        let named =
            |slot: &Slot| slot.fields.iter().filter(|entry| entry.in_latest).map(|entry| (table.names.name(entry.field).to_string(), entry.latest)).collect();
        table
            .slots
            .iter()
            .map(|slot| Latest {
                at_ms: (slot.at_ms != NEVER).then_some(slot.at_ms),
                heard_ms: (slot.heard_ms != NEVER).then_some(slot.heard_ms),
                fields: named(slot),
            })
            .collect()
    }

    /// The median x and y of a tilt box over the `window_ms` before `now`, with how many readings
    /// it took; `None` without readings in the window.
    pub fn median_angles(&self, index: usize, now: Millis, window_ms: Millis) -> Option<(f64, f64, usize)> {
        let table = self.lock();
        let since = (now - window_ms).div_euclid(1000);
        let recent: Vec<(f64, f64)> =
            table.slots.get(index)?.recent.as_deref()?.iter().filter(|&&(s, _, _)| s >= since).map(|&(_, x, y)| (f64::from(x), f64::from(y))).collect();
        if recent.is_empty() {
            return None;
        }
        let x = gridwatch_rules::signal::median(recent.iter().map(|p| p.0).collect());
        let y = gridwatch_rules::signal::median(recent.iter().map(|p| p.1).collect());
        Some((x, y, recent.len()))
    }

    /// Whether it is time to write the trend: every [`FLUSH_EVERY_MS`].
    pub fn trend_due(&self, now: Millis) -> bool {
        self.lock().last_flush.is_none_or(|last| now - last >= FLUSH_EVERY_MS)
    }

    /// About `max_rows` (whole sensors) of the trend hours filled since the last flush, as rows to
    /// merge into the store, and whether the flush is complete; the hours taken start again
    /// (same hours). A flush calls this until it is complete, so the rows of ten thousand sensors
    /// are never all in memory at once. Only hours before `now`'s are taken unless `whole` (at
    /// shutdown): the hour being filled would otherwise be rewritten at every flush — on a small
    /// community's SD card, most of what the trend costs (the incident page ends its line at the
    /// latest reading from this table meanwhile).
    pub fn take_trend(&self, now: Millis, max_rows: usize, whole: bool) -> (Vec<TrendRow>, bool) {
        let current_hour = if whole { None } else { crate::trend::hour_of(now) };
        let mut table = self.lock();
        let Table { inventory, names, slots, finished, last_flush, cursor, .. } = &mut *table;
        *last_flush = Some(now);
        let from_finished = finished.len().min(max_rows);
        let mut rows: Vec<TrendRow> = finished.drain(..from_finished).collect();
        while rows.len() < max_rows && *cursor < slots.len() {
            let index = *cursor;
            let room = max_rows - rows.len();
            let filled = slots[index].fields.iter().filter(|entry| entry.hour.is_filled()).count();
            if filled > room && !rows.is_empty() {
                break;
            }
            let slot = &mut slots[index];
            if let Some(hour) = slot.hour().filter(|hour| current_hour.is_none_or(|current| *hour < current)) {
                for entry in slot.fields.iter_mut().filter(|entry| entry.hour.is_filled()) {
                    rows.push(std::mem::take(&mut entry.hour).row(&inventory[index].id, names.shared(entry.field), hour));
                }
            }
            *cursor += 1;
        }
        let complete = *cursor == slots.len() && finished.is_empty();
        if complete {
            *cursor = 0;
        }
        (rows, complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: Millis = 3_600_000;

    fn boxes(count: usize) -> LiveTable {
        LiveTable::new((0..count).map(|i| SensorConfig::test_tilt(&format!("s{i}"), "north-lane")).collect(), Clock::System)
    }

    fn reading(x: f64, y: f64) -> Vec<(String, f64)> {
        vec![("x".into(), x), ("y".into(), y), ("t".into(), 21.0)]
    }

    #[test]
    fn the_median_of_the_window_ignores_a_knock() {
        let live = boxes(2);
        for minute in 0..40i64 {
            let x = if minute == 35 { 3.0 } else { 0.31 };
            live.record(1, minute * 60_000, &reading(x, -0.12), true);
        }
        let (x, y, n) = live.median_angles(1, 40 * 60_000, 30 * 60_000).unwrap();
        assert_eq!(n, 30);
        assert!((x - 0.31).abs() < 1e-6 && (y + 0.12).abs() < 1e-6, "{x} {y}");
        assert_eq!(live.median_angles(0, 40 * 60_000, 30 * 60_000), None, "no readings from the other box");
        assert_eq!(live.latest()[1].fields[0], ("x".to_string(), 0.31));
    }

    #[test]
    fn fast_boxes_are_thinned_and_bounded() {
        let live = boxes(1);
        for second in 0..(3 * 3600) {
            live.record(0, second * 1000, &reading(0.1, 0.1), true);
        }
        let table = live.lock();
        let recent = table.slots[0].recent.as_deref().unwrap();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[1].0 - recent[0].0, RECENT_SPACING_SECS);
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        assert_eq!(std::mem::size_of::<FieldEntry>(), 32);
    }

    #[test]
    fn the_latest_reading_shows_only_its_own_fields() {
        let live = boxes(1);
        live.record(0, 1_000, &reading(0.1, 0.2), true);
        live.record(0, 2_000, &[("t".into(), 22.5), ("battery".into(), f64::NAN)], true);
        let latest = &live.latest()[0];
        assert_eq!(latest.at_ms, Some(2_000));
        assert_eq!(latest.fields.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["t", "battery"]);
        assert_eq!(latest.fields[0].1, 22.5);
        assert!(latest.fields[1].1.is_nan(), "a NaN is shown as sent");
        assert_eq!(live.latest()[0].fields.len(), 2, "reading twice changes nothing");
    }

    #[test]
    fn readings_add_up_per_hour_and_field() {
        let live = boxes(1);
        let t = 1_795_392_000_000; // on the hour
        live.record(0, t, &[("x".into(), 1.0), ("y".into(), f64::NAN)], true);
        live.record(0, t + 60_000, &[("x".into(), 3.0)], true);
        live.record(0, t + 90_000, &[("x".into(), 100.0)], false);
        let (rows, complete) = live.take_trend(t + 120_000, 100, true);
        assert!(complete);
        assert_eq!(rows.len(), 1, "NaN is not a reading: {rows:?}");
        assert_eq!((rows[0].min, rows[0].max, rows[0].sum, rows[0].count), (1.0, 3.0, 4.0, 2), "a reading with an untrusted clock is not counted");
        assert!(live.take_trend(t + 180_000, 100, true).0.is_empty(), "taken once");
        // The next hour: the hour being filled moves on.
        live.record(0, t + 60_000, &[("x".into(), 5.0)], true);
        live.record(0, t + HOUR_MS, &[("x".into(), 7.0)], true);
        let (rows, _) = live.take_trend(t + HOUR_MS, 100, true);
        assert_eq!(
            rows.iter().map(|r| (r.hour - t / HOUR_MS, r.sum)).collect::<Vec<_>>(),
            vec![(0, 5.0), (1, 7.0)],
            "the earlier hour's rest, then the new hour"
        );
        let fields: Vec<(String, f64)> = ["a", "b", "c", "d", "e"].iter().map(|f| (f.to_string(), 1.0)).collect();
        live.record(0, t + HOUR_MS, &fields, true);
        live.record(0, t + HOUR_MS, &fields, true);
        assert_eq!(live.lock().slots[0].fields.len(), 7, "x, y and five more fields, each once");
    }

    #[test]
    fn a_reading_of_another_hour_leaves_the_filled_hour_under_its_own_hour() {
        let live = boxes(1);
        let t = 1_795_392_000_000; // on the hour
        live.record(0, t + 10_000, &[("x".into(), 2.0), ("y".into(), 1.0)], true);
        // A box whose clock is not trusted says it is 1970: not counted, but the hour moves on.
        live.record(0, 5_000, &[("x".into(), 9.0)], false);
        live.record(0, t + 20_000, &[("x".into(), 4.0)], true);
        let (rows, complete) = live.take_trend(t + 30_000, 100, true);
        assert!(complete);
        let hour = t / HOUR_MS;
        let rows: Vec<_> = rows.iter().map(|r| (&*r.field, r.hour - hour, r.sum, r.count)).collect();
        assert_eq!(rows, vec![("x", 0, 2.0, 1), ("y", 0, 1.0, 1), ("x", 0, 4.0, 1)], "two rows of the same hour, which the store merges");
        assert_eq!(live.latest()[0].fields, vec![("x".to_string(), 4.0)]);
    }

    #[test]
    fn a_flush_comes_in_batches_of_whole_sensors() {
        let live = boxes(5);
        let t = 1_795_392_000_000;
        for sensor in 0..5 {
            live.record(sensor, t, &[("x".into(), 1.0), ("y".into(), 2.0)], true);
        }
        let mut batches = Vec::new();
        loop {
            let (rows, complete) = live.take_trend(t, 3, true);
            batches.push(rows.iter().map(|r| format!("{}.{}", r.sensor, r.field)).collect::<Vec<_>>().join(" "));
            if complete {
                break;
            }
        }
        assert_eq!(batches, vec!["s0.x s0.y", "s1.x s1.y", "s2.x s2.y", "s3.x s3.y", "s4.x s4.y"], "never a sensor split over two batches");
        live.record(2, t + 1, &[("x".into(), 4.0)], true);
        let (rows, _) = live.take_trend(t + 2, 3, true);
        assert_eq!(rows.iter().map(|r| (&*r.sensor, r.sum)).collect::<Vec<_>>(), vec![("s2", 4.0)], "the next flush starts from the first sensor again");
    }

    #[test]
    fn a_regular_flush_leaves_the_hour_being_filled() {
        let live = boxes(2);
        let t = 1_795_392_000_000; // on the hour
        live.record(0, t + 60_000, &[("x".into(), 1.0)], true);
        live.record(1, t - 60_000, &[("x".into(), 2.0)], true);
        let (rows, complete) = live.take_trend(t + 120_000, 100, false);
        assert!(complete);
        assert_eq!(rows.iter().map(|r| (&*r.sensor, r.sum)).collect::<Vec<_>>(), vec![("s1", 2.0)], "only the hour that is over");
        live.record(0, t + 180_000, &[("x".into(), 3.0)], true);
        let (rows, _) = live.take_trend(t + HOUR_MS + 1, 100, false);
        assert_eq!(rows.iter().map(|r| (&*r.sensor, r.sum, r.count)).collect::<Vec<_>>(), vec![("s0", 4.0, 2)], "the whole hour once it is over");
    }

    #[test]
    fn flushes_are_spaced() {
        let live = boxes(1);
        assert!(live.trend_due(0));
        live.take_trend(1_000, 100, true);
        assert!(!live.trend_due(1_000 + FLUSH_EVERY_MS - 1));
        assert!(live.trend_due(1_000 + FLUSH_EVERY_MS));
    }
}
