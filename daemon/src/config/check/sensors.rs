//! The sensors' checks: `[[sensor]]` tables and the CSV inventory, their ids, places and tags,
//! and `[gpio]` inputs read as sensor fields.

use super::Checker;
use crate::config::raw;
use crate::config::types::{GpioConfig, GpioInput, Place, SensorConfig};
use gridwatch_rules::TextPool;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// What the loader shares between sensors: texts and tag sets, and places.
#[derive(Default)]
pub(super) struct SharedParts {
    texts: TextPool,
    places: HashSet<Arc<Place>>,
}

impl SharedParts {
    pub(super) fn place(&mut self, place: Place) -> Arc<Place> {
        if let Some(shared) = self.places.get(&place) {
            return shared.clone();
        }
        let shared = Arc::new(place);
        self.places.insert(shared.clone());
        shared
    }
}

impl Checker<'_> {
    /// Adds the sensors of a CSV inventory, checked like `[[sensor]]` tables (errors name the
    /// CSV file and line); an id in both is an error.
    pub(super) fn add_inventory(&mut self, path: &Path, sensors: &mut Vec<SensorConfig>, shared: &mut SharedParts) {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                self.error(0..0, Some("inventory"), format!("cannot read {name}: {error}"));
                return;
            }
        };
        let mut csv = Checker { name: &name, text: &text, diagnostics: Vec::new(), failover_spans: Vec::new(), roster_text: None };
        let listed: HashSet<Arc<str>> = sensors.iter().map(|s| s.id.clone()).collect();
        let mut seen = HashSet::new();
        // Each row becomes a sensor as it is read: the rows are never all in memory as raw
        // sensors (for 10,000 rows that was 10 MB of short-lived strings and maps, whose holes
        // the heap kept).
        sensors.reserve(text.bytes().filter(|&b| b == b'\n').count());
        csv.inventory_rows(|csv, row| {
            if listed.contains(row.id.get_ref().as_str()) {
                csv.error(row.id.span(), Some("inventory"), format!("sensor `{}` is also a [[sensor]] in {}", row.id.get_ref(), self.name));
            }
            sensors.push(csv.sensor(row, &mut seen, shared));
        });
        sensors.shrink_to_fit();
        self.diagnostics.append(&mut csv.diagnostics);
    }

    pub(super) fn sensors(&mut self, raw: Vec<raw::RawSensor>, shared: &mut SharedParts) -> Vec<SensorConfig> {
        let mut seen = HashSet::new();
        raw.into_iter().map(|sensor| self.sensor(sensor, &mut seen, shared)).collect()
    }

    /// The tags the shipped packs read take only the values the packs know: a misspelt value
    /// (`use = "drink"`) or key (`water_clas`) would silently switch their rules off.
    pub(super) fn known_tags(&mut self, sensor: &raw::RawSensor) {
        for (key, value) in &sensor.tags {
            let allowed: &[&str] = match key.as_str() {
                "use" => &["surface", "drinking"],
                "water_class" => &["I", "II", "III", "IV", "V"],
                "water_body" => &["river", "lake"],
                "building_boxes" => {
                    self.error(sensor.id.span(), Some("sensor.tags.building_boxes"), "is set by gridwatch from the sensors of each building; remove it".into());
                    continue;
                }
                other => {
                    let known = ["water_class", "water_body", "structure", "storeys"];
                    if let Some(meant) = gridwatch_rules::load::closest(other, &known).filter(|_| other.len() >= 5) {
                        self.error(
                            sensor.id.span(),
                            Some("sensor.tags"),
                            format!("tag `{other}` is not one the packs read; did you mean `{meant}`? (a tag of your own rules must not be this close to it)"),
                        );
                    }
                    continue;
                }
            };
            if !allowed.contains(&value.as_str()) {
                // A class written as a number or a Roman numeral of another script ("3", "Ⅲ",
                // "iii") is the class itself, not the nearest spelling (`3` was offered `I`).
                let numeral = match value.trim().to_ascii_uppercase().as_str() {
                    "1" | "Ⅰ" => Some("I"),
                    "2" | "Ⅱ" => Some("II"),
                    "3" | "Ⅲ" => Some("III"),
                    "4" | "Ⅳ" => Some("IV"),
                    "5" | "Ⅴ" => Some("V"),
                    upper => allowed.iter().copied().find(|a| *a == upper),
                };
                let meant = numeral.filter(|_| key == "water_class").or_else(|| gridwatch_rules::load::closest(value, allowed));
                let hint = meant.map(|meant| format!("; did you mean `{meant}`?")).unwrap_or_default();
                self.error(
                    sensor.id.span(),
                    Some(&format!("sensor.tags.{key}")),
                    format!("`{value}` is not a value of tag `{key}`: {}{hint}", allowed.join(", ")),
                );
            }
        }
    }

    /// Checks one sensor; `seen` holds the ids of the sensors checked before it in the same list.
    pub(super) fn sensor(&mut self, sensor: raw::RawSensor, seen: &mut HashSet<Arc<str>>, shared: &mut SharedParts) -> SensorConfig {
        let id: Arc<str> = sensor.id.get_ref().as_str().into();
        if !is_token(&id) {
            self.error(sensor.id.span(), Some("sensor.id"), format!("`{id}` is not a sensor id: use letters, digits, `-`, `_` and `.`"));
        } else if !seen.insert(id.clone()) {
            self.error(sensor.id.span(), Some("sensor.id"), format!("sensor `{id}` is listed twice"));
        }
        if *sensor.interval_secs.get_ref() == 0 {
            self.error(sensor.interval_secs.span(), Some("sensor.interval_secs"), "must be at least 1".into());
        }
        self.known_tags(&sensor);
        let mut baseline = BTreeMap::new();
        for (field, value) in &sensor.baseline {
            if value.get_ref().is_finite() {
                baseline.insert(field.clone(), *value.get_ref());
            } else {
                self.error(value.span(), Some("sensor.baseline"), "must be a finite number".into());
            }
        }
        if !is_token(sensor.site.get_ref()) {
            self.error(
                sensor.site.span(),
                Some("sensor.site"),
                format!("`{}` is not a site name: use letters, digits, `-`, `_` and `.`", sensor.site.get_ref()),
            );
        }
        let location = sensor.location.and_then(|location| {
            let [latitude, longitude] = *location.get_ref();
            if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) {
                Some([latitude, longitude])
            } else {
                self.error(location.span(), Some("sensor.location"), "must be [latitude, longitude] in degrees, e.g. [31.2304, 121.4737]".into());
                None
            }
        });
        let texts = &mut shared.texts;
        let place = Place {
            site: texts.share(sensor.site.get_ref()),
            building: sensor.building.map(|text| texts.share(&text)),
            grid: sensor.grid.map(|text| texts.share(&text)),
            structure: sensor.structure.map(|text| texts.share(&text)),
            storeys: sensor.storeys,
        };
        let mut sensor = SensorConfig {
            location,
            id,
            kind: sensor.kind,
            place: shared.place(place),
            tags: sensor.tags.into(),
            interval: Duration::from_secs(sensor.interval_secs.into_inner()),
            baseline,
        };
        sensor.tags = sensor.rule_tags();
        sensor.tags.share_in(&mut shared.texts);
        sensor
    }

    pub(super) fn gpio(&mut self, raw: raw::RawGpio, sensors: &[SensorConfig]) -> Option<GpioConfig> {
        let before = self.diagnostics.len();
        let mut pins: Vec<&Spanned<u8>> = raw.siren_pin.iter().chain(raw.led_pin.iter()).collect();
        pins.extend(raw.input.iter().map(|i| &i.pin));
        let mut used = HashSet::new();
        for pin in pins {
            if *pin.get_ref() > 27 {
                self.error(pin.span(), Some("gpio"), format!("GPIO {} does not exist on the Pi's header (BCM 0–27)", pin.get_ref()));
            } else if !used.insert(*pin.get_ref()) {
                self.error(pin.span(), Some("gpio"), format!("GPIO {} is used twice", pin.get_ref()));
            }
            if !cfg!(feature = "rpi") {
                self.error(pin.span(), Some("gpio"), "this gridwatch was built without GPIO support (build with --features rpi)".into());
            }
        }
        let mut inputs = Vec::new();
        for input in &raw.input {
            match sensors.iter().position(|s| *s.id == **input.sensor.get_ref()) {
                Some(sensor) => {
                    inputs.push(GpioInput { pin: *input.pin.get_ref(), sensor, field: input.field.clone(), debounce: Duration::from_millis(input.debounce_ms) })
                }
                None => self.error(input.sensor.span(), Some("gpio.input.sensor"), format!("no sensor `{}` in the inventory", input.sensor.get_ref())),
            }
        }
        (self.diagnostics.len() == before).then(|| GpioConfig {
            siren_pin: raw.siren_pin.map(Spanned::into_inner),
            siren_max_on: Duration::from_secs(raw.siren_max_on_secs.max(1)),
            led_pin: raw.led_pin.map(Spanned::into_inner),
            inputs,
        })
    }
}

/// Sensor ids and site names appear in MQTT topics and storage tags: keep them plain.
pub(in crate::config) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
