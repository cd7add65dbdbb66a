//! Which sensor a topic belongs to. The default convention is
//! `gridwatch/<site>/<sensor>/telemetry`; configured maps (`[[mqtt.topic]]`) are tried first.

use crate::config::{Config, PayloadMap, SensorIndex, TopicMapConfig};
use crate::sources::mqtt::payload::Rejection;

/// Subscription filter of the default convention.
pub const DEFAULT_FILTER: &str = "gridwatch/+/+/telemetry";

/// The topic of the default convention for a sensor.
pub fn default_topic(site: &str, sensor: &str) -> String {
    format!("gridwatch/{site}/{sensor}/telemetry")
}

/// A topic resolved to a sensor of the inventory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route<'a> {
    /// Index of the sensor in the inventory.
    pub sensor: usize,
    /// How the payload of the map that matched is read (the default convention's: empty).
    pub payload: &'a PayloadMap,
}

/// Resolves topics to sensors.
#[derive(Debug)]
pub struct TopicRouter {
    maps: Vec<TopicMapConfig>,
    sensors: SensorIndex,
    default_payload: PayloadMap,
}

impl TopicRouter {
    pub fn new(config: &Config, sensors: SensorIndex) -> TopicRouter {
        TopicRouter { maps: config.mqtt.topic_maps.clone(), sensors, default_payload: PayloadMap::default() }
    }

    /// Every filter to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self.maps.iter().map(|m| m.filter.clone()).collect();
        filters.push(DEFAULT_FILTER.to_string());
        filters.dedup();
        filters
    }

    pub fn route(&self, topic: &str) -> Result<Route<'_>, Rejection> {
        for map in &self.maps {
            if let Some(wildcards) = match_filter(&map.filter, topic) {
                let id = match map.sensor.strip_prefix('{').and_then(|s| s.strip_suffix('}')).and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => wildcards.get(n.wrapping_sub(1)).copied().ok_or(Rejection::UnmappedTopic)?,
                    None => map.sensor.as_str(),
                };
                let sensor = self.lookup(id)?;
                return Ok(Route { sensor, payload: &map.payload });
            }
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let ["gridwatch", site, id, "telemetry"] = levels[..] else { return Err(Rejection::UnmappedTopic) };
        let sensor = self.lookup(id)?;
        let configured = &self.sensors.sensors()[sensor].place.site;
        if **configured != *site {
            return Err(Rejection::SiteMismatch { sensor: id.into(), configured: configured.to_string(), topic: site.into() });
        }
        Ok(Route { sensor, payload: &self.default_payload })
    }

    /// The route of a message that names its sensor by id (a district's 4G sensor): the default
    /// convention's payload.
    #[cfg(feature = "cluster")]
    pub fn route_id(&self, id: &str) -> Result<Route<'_>, Rejection> {
        Ok(Route { sensor: self.lookup(id)?, payload: &self.default_payload })
    }

    fn lookup(&self, id: &str) -> Result<usize, Rejection> {
        self.sensors.position(id).ok_or_else(|| Rejection::UnknownSensor(id.to_string()))
    }
}

/// Matches an MQTT filter against a topic; returns the levels that `+` matched, in order.
pub(crate) fn match_filter<'t>(filter: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    let mut captured = Vec::new();
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return Some(captured),
            "+" => captured.push(topic_levels.next()?),
            literal => {
                if topic_levels.next()? != literal {
                    return None;
                }
            }
        }
    }
    topic_levels.next().is_none().then_some(captured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router() -> TopicRouter {
        let config = Config::parse(
            "t.toml",
            r#"
state_dir = "s"
[mqtt]
broker = "embedded"
[[mqtt.topic]]
filter = "witbox/+/angles"
sensor = "{1}"
fields = { AngleX = "x" }
[[mqtt.topic]]
filter = "plant/line3/#"
sensor = "canal-02"
[[sensor]]
id = "house-07"
kind = "tilt"
site = "north-lane"
[[sensor]]
id = "canal-02"
kind = "water"
site = "east-canal"
"#,
            Path::new("."),
        )
        .unwrap();
        TopicRouter::new(&config, SensorIndex::new(config.sensors.clone()))
    }

    #[test]
    fn default_convention_routes_by_sensor_and_checks_site() {
        let r = router();
        assert_eq!(r.route("gridwatch/north-lane/house-07/telemetry").unwrap().sensor, 0);
        assert_eq!(r.route("gridwatch/east-canal/house-07/telemetry").unwrap_err().reason(), "site_mismatch");
        assert_eq!(r.route("gridwatch/north-lane/house-99/telemetry").unwrap_err().reason(), "unknown_sensor");
        assert_eq!(r.route("gridwatch/north-lane/house-07").unwrap_err().reason(), "unmapped_topic");
    }

    #[test]
    fn configured_maps_take_the_sensor_from_a_wildcard_or_name_it() {
        let r = router();
        let route = r.route("witbox/house-07/angles").unwrap();
        assert_eq!(route.sensor, 0);
        assert_eq!(route.payload.renames.get("AngleX").map(String::as_str), Some("x"));
        assert_eq!(r.route("plant/line3/probe/a").unwrap().sensor, 1);
        assert_eq!(r.route("witbox/house-07/angles/extra").unwrap_err().reason(), "unmapped_topic");
    }

    #[test]
    fn filters_include_maps_and_the_default() {
        assert_eq!(router().filters(), vec!["witbox/+/angles", "plant/line3/#", DEFAULT_FILTER]);
    }

    #[test]
    fn match_filter_handles_wildcards() {
        assert_eq!(match_filter("a/+/c", "a/b/c"), Some(vec!["b"]));
        assert_eq!(match_filter("a/#", "a/b/c"), Some(vec![]));
        assert_eq!(match_filter("a/+", "a/b/c"), None);
        assert_eq!(match_filter("a/b", "a"), None);
    }
}
