//! `language`, `time_zone` and `[names]` checks: how messages are worded and what places are
//! called.

use super::Checker;
use crate::config::types::SensorConfig;
use crate::config::wording;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use toml::Spanned;

impl Checker<'_> {
    /// `[names]`: every key names a site or a `site/building` of the inventory.
    pub(super) fn places(&mut self, names: BTreeMap<String, Spanned<String>>, sensors: &[SensorConfig]) -> wording::Places {
        let mut known: HashSet<String> = HashSet::new();
        for sensor in sensors {
            known.insert(sensor.place.site.to_string());
            if let Some(building) = &sensor.place.building {
                known.insert(format!("{}/{building}", sensor.place.site));
            }
        }
        let mut places = BTreeMap::new();
        for (key, name) in names {
            if !known.contains(&key) {
                self.error(name.span(), Some(&format!("names.{key}")), format!("`{key}` is no site or `site/building` of the inventory"));
            }
            places.insert(key, name.into_inner());
        }
        wording::Places(Arc::new(places))
    }

    /// `language` ("zh" or "en") and `time_zone` (an IANA name) of the texts people read.
    pub(super) fn wording(&mut self, language: Option<&Spanned<String>>, time_zone: Option<&Spanned<String>>) -> wording::Wording {
        let mut wording = wording::Wording::default();
        if let Some(language) = language {
            wording.chinese = self.language(language, "language");
        }
        if let Some(zone) = time_zone {
            match crate::local_time::parse(zone.get_ref()) {
                Ok(zone) => wording.time_zone = zone,
                Err(message) => self.error(zone.span(), Some("time_zone"), message),
            }
        }
        wording
    }

    /// Whether `language` is Chinese ("zh") rather than English ("en").
    pub(super) fn language(&mut self, language: &Spanned<String>, key: &str) -> bool {
        match language.get_ref().as_str() {
            "zh" => true,
            "en" => false,
            other => {
                self.error(language.span(), Some(key), format!("`{other}`: use \"zh\" or \"en\""));
                true
            }
        }
    }
}
