//! How texts for people are written (`language`, `time_zone`) and what places are called
//! (`[names]`): configuration the message writer ([`crate::sinks::text`]) reads.

use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Display names of sites and buildings (`[names]`): ids stay ASCII in the configuration, people
/// read "北巷社区 7号楼". Keys: a site id, or `site/building`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places(pub Arc<BTreeMap<String, String>>);

impl Places {
    pub fn site(&self, site: &str) -> Option<&str> {
        self.0.get(site).map(String::as_str)
    }

    pub fn building(&self, site: &str, building: &str) -> Option<&str> {
        self.0.get(&format!("{site}/{building}")).map(String::as_str)
    }
}

/// How texts for people are written: language and time zone (`language`, `time_zone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wording {
    /// Chinese (the default) or English.
    pub chinese: bool,
    pub time_zone: Tz,
}

impl Default for Wording {
    fn default() -> Self {
        Wording { chinese: true, time_zone: crate::local_time::DEFAULT }
    }
}
