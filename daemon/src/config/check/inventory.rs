//! The sensor inventory as a CSV file (`inventory = "sensors.csv"`), for installations with
//! hundreds or thousands of boxes kept in a spreadsheet. Each row becomes the same raw sensor a
//! `[[sensor]]` table would, with positions into the CSV text, so the same checks report
//! `sensors.csv:LINE:COLUMN` errors. Reading it streams: a 10,000-row inventory does not build
//! a document tree the way a 10,000-table TOML file does.
//!
//! Columns (header required, any order): `id`, `kind`, `site` (required); `building`, `grid`,
//! `storeys`, `structure`, `interval_secs`, `latitude` and `longitude` (together),
//! `baseline.<field>` (e.g. `baseline.x`), `tag.<name>`. Empty cells are absent values.

use super::Checker;
use crate::config::raw::RawSensor;
use gridwatch_rules::SensorKind;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

impl Checker<'_> {
    /// Reads the CSV text this checker was made for, handing each row to `each` as a raw sensor
    /// as soon as it is read, and reports what it cannot read.
    pub(super) fn inventory_rows(&mut self, mut each: impl FnMut(&mut Self, RawSensor)) {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(self.text.as_bytes());
        let headers = match reader.headers() {
            Ok(headers) => headers.clone(),
            Err(error) => {
                self.error(0..0, Some("inventory"), format!("cannot read the header: {error}"));
                return;
            }
        };
        let column = |name: &str| headers.iter().position(|h| h == name);
        for required in ["id", "kind", "site"] {
            if column(required).is_none() {
                self.error(0..0, Some("inventory"), format!("the header has no `{required}` column (have: {})", headers.iter().collect::<Vec<_>>().join(", ")));
            }
        }
        const KNOWN: [&str; 9] = ["id", "kind", "site", "building", "grid", "storeys", "structure", "interval_secs", "latitude"];
        for header in headers.iter().filter(|h| !KNOWN.contains(h) && *h != "longitude" && !h.starts_with("baseline.") && !h.starts_with("tag.")) {
            self.error(0..0, Some("inventory"), format!("unknown column `{header}`"));
        }
        let (Some(id), Some(kind), Some(site)) = (column("id"), column("kind"), column("site")) else { return };
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    let at = error.position().map_or(0, |p| p.byte() as usize);
                    self.error(at..at, Some("inventory"), format!("cannot read the row: {error}"));
                    break;
                }
            }
            let start = record.position().map_or(0, |p| p.byte() as usize);
            // Where a cell is in the text, for error positions: the record keeps its cells without
            // the commas between them (quoted or trimmed cells come out close enough).
            let span = |index: usize| -> Range<usize> { record.range(index).map_or(start..start, |r| start + index + r.start..start + index + r.end) };
            let cell = |index: Option<usize>| index.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
            let spanned = |index: usize| Spanned::new(span(index), record.get(index).unwrap_or("").to_string());
            let Some(sensor_kind) = self.parse_cell::<SensorKind>(&record, kind, &span, "a sensor kind: tilt or water") else { continue };
            let interval_secs = match column("interval_secs").filter(|&i| cell(Some(i)).is_some()) {
                Some(i) => match self.parse_cell::<u64>(&record, i, &span, "a whole number of seconds") {
                    Some(value) => Spanned::new(span(i), value),
                    None => continue,
                },
                None => Spanned::new(span(id), 3600),
            };
            let storeys = match column("storeys").filter(|&i| cell(Some(i)).is_some()) {
                Some(i) => match self.parse_cell::<u8>(&record, i, &span, "a number of storeys") {
                    Some(storeys) => Some(storeys),
                    None => continue,
                },
                None => None,
            };
            let mut baseline = BTreeMap::new();
            let mut tags = BTreeMap::new();
            for (index, header) in headers.iter().enumerate().filter(|&(i, _)| cell(Some(i)).is_some()) {
                if let Some(field) = header.strip_prefix("baseline.") {
                    if let Some(value) = self.parse_cell::<f64>(&record, index, &span, "a number") {
                        baseline.insert(field.to_string(), Spanned::new(span(index), value));
                    }
                } else if let Some(name) = header.strip_prefix("tag.") {
                    tags.insert(name.to_string(), record[index].to_string());
                }
            }
            let location = match (column("latitude").filter(|&i| cell(Some(i)).is_some()), column("longitude").filter(|&i| cell(Some(i)).is_some())) {
                (Some(lat), Some(lon)) => {
                    match (self.parse_cell::<f64>(&record, lat, &span, "degrees"), self.parse_cell::<f64>(&record, lon, &span, "degrees")) {
                        (Some(latitude), Some(longitude)) => Some(Spanned::new(span(lat), [latitude, longitude])),
                        _ => None,
                    }
                }
                (None, None) => None,
                (Some(i), None) | (None, Some(i)) => {
                    self.error(span(i), Some("inventory"), "give both `latitude` and `longitude`, or neither".into());
                    None
                }
            };
            let row = RawSensor {
                id: spanned(id),
                kind: sensor_kind,
                site: spanned(site),
                building: cell(column("building")).map(str::to_string),
                grid: cell(column("grid")).map(str::to_string),
                storeys,
                structure: cell(column("structure")).map(str::to_string),
                tags,
                interval_secs,
                baseline,
                location,
            };
            each(self, row);
        }
    }

    /// Parses one cell, or reports `expected` at it.
    fn parse_cell<T: std::str::FromStr>(
        &mut self,
        record: &csv::StringRecord,
        index: usize,
        span: &dyn Fn(usize) -> Range<usize>,
        expected: &str,
    ) -> Option<T> {
        let text = record.get(index).unwrap_or("");
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(span(index), Some("inventory"), format!("`{text}` is not {expected}"));
                None
            }
        }
    }
}
