//! Which sensors a rule applies to. A rule names sensor kinds, sensor ids, sites, buildings
//! and grids; every list that is given must match, a list that is left out matches anything.

use crate::time::Millis;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// What a sensor measures; decides which default rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// A wall-mounted inclinometer reporting the angles `x` and `y` in degrees.
    Tilt,
    /// A water-quality probe (pH, dissolved oxygen, turbidity, …).
    Water,
}

impl SensorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Tilt => "tilt",
            SensorKind::Water => "water",
        }
    }
}

impl std::str::FromStr for SensorKind {
    type Err = String;

    fn from_str(text: &str) -> Result<SensorKind, String> {
        match text {
            "tilt" => Ok(SensorKind::Tilt),
            "water" => Ok(SensorKind::Water),
            other => Err(format!("`{other}` is not a sensor kind: tilt or water")),
        }
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The engine's view of one sensor: what rules are scoped by. The texts are shared with the
/// inventory (see [`crate::TextPool`]), so a list of subjects costs little beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub id: Arc<str>,
    pub kind: SensorKind,
    pub site: Arc<str>,
    pub building: Option<Arc<str>>,
    pub grid: Option<Arc<str>>,
    /// Free-form facts (`water_class = "II"`, `structure = "brick-wood"`) rules can be scoped by.
    pub tags: Tags,
    /// How often the sensor is expected to report (no-data rules count in these).
    pub interval_ms: Millis,
}

/// A sensor's free-form facts, sorted by name. A sensor has a handful, so they are a sorted
/// slice: a B-tree's first node alone is 544 bytes, megabytes at 10,000 sensors. After
/// [`Tags::share_in`] the names, the values and the whole set are shared: ten thousand probes
/// tagged alike hold one set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "BTreeMap<String, String>")]
pub struct Tags(Arc<[(Arc<str>, Arc<str>)]>);

impl Tags {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &*self.0[i].1)
    }

    /// Sets `name` unless it is set already; returns its value either way.
    pub fn or_insert_with(&mut self, name: &str, value: impl FnOnce() -> Arc<str>) -> &str {
        let index = match self.0.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(index) => index,
            Err(index) => {
                let mut pairs = self.0.to_vec();
                pairs.insert(index, (name.into(), value()));
                self.0 = pairs.into();
                index
            }
        };
        &self.0[index].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Swaps the names, the values and the set itself for the pool's copies.
    pub fn share_in(&mut self, pool: &mut crate::TextPool) {
        let pairs: Vec<(Arc<str>, Arc<str>)> = self.0.iter().map(|(name, value)| (pool.share(name), pool.share(value))).collect();
        self.0 = pool.share_tags(pairs);
    }
}

impl FromIterator<(String, String)> for Tags {
    /// The last value of a name given twice wins.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Tags {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        Tags::from(map)
    }
}

impl From<BTreeMap<String, String>> for Tags {
    fn from(map: BTreeMap<String, String>) -> Tags {
        Tags(map.into_iter().map(|(name, value)| (name.into(), value.into())).collect::<Vec<_>>().into())
    }
}

/// How many sensors of a kind each building has, for the tag `building_boxes` that the engine
/// gives every sensor: `"several"` on a building with two or more sensors of its kind (where
/// they can confirm each other), `"one"` otherwise (also without a building). Rules are scoped
/// by it like by any tag; a tag the inventory sets itself is kept.
#[derive(Debug, Default)]
pub struct BuildingBoxes(std::collections::HashMap<(SensorKind, Arc<str>, Arc<str>), usize>);

/// The tag [`BuildingBoxes`] sets.
pub const BUILDING_BOXES: &str = "building_boxes";

impl BuildingBoxes {
    pub fn count(subjects: &[Subject]) -> BuildingBoxes {
        let mut counts = std::collections::HashMap::new();
        for subject in subjects {
            if let Some(building) = &subject.building {
                *counts.entry((subject.kind, subject.site.clone(), building.clone())).or_insert(0) += 1;
            }
        }
        BuildingBoxes(counts)
    }

    /// The subject with its `building_boxes` tag.
    pub fn tagged(&self, subject: &Subject) -> Subject {
        let several = subject.building.as_ref().and_then(|b| self.0.get(&(subject.kind, subject.site.clone(), b.clone()))).is_some_and(|&n| n >= 2);
        let mut tagged = subject.clone();
        tagged.tags.or_insert_with(BUILDING_BOXES, || if several { "several".into() } else { "one".into() });
        tagged
    }
}

/// A compiled scope. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub kinds: Vec<SensorKind>,
    pub sensors: Vec<String>,
    pub sites: Vec<String>,
    pub buildings: Vec<String>,
    pub grids: Vec<String>,
    /// Every tag given must be present on the sensor with this value.
    pub tags: BTreeMap<String, String>,
}

impl Scope {
    pub fn matches(&self, subject: &Subject) -> bool {
        fn any_or(list: &[String], value: Option<&str>) -> bool {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|item| item == v))
        }
        (self.kinds.is_empty() || self.kinds.contains(&subject.kind))
            && any_or(&self.sensors, Some(&subject.id))
            && any_or(&self.sites, Some(&subject.site))
            && any_or(&self.buildings, subject.building.as_deref())
            && any_or(&self.grids, subject.grid.as_deref())
            && self.tags.iter().all(|(key, value)| subject.tags.get(key) == Some(value.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn house(id: &str, building: Option<&str>) -> Subject {
        Subject {
            id: id.into(),
            kind: SensorKind::Tilt,
            site: "north-lane".into(),
            building: building.map(Into::into),
            grid: Some("grid-3".into()),
            tags: Tags::from(BTreeMap::from([("structure".to_string(), "brick-wood".to_string())])),
            interval_ms: 60_000,
        }
    }

    #[test]
    fn empty_scope_matches_every_sensor() {
        assert!(Scope::default().matches(&house("h1", None)));
    }

    #[test]
    fn every_given_list_must_match() {
        let scope = Scope { kinds: vec![SensorKind::Tilt], grids: vec!["grid-3".into()], buildings: vec!["B7".into()], ..Scope::default() };
        assert!(scope.matches(&house("h1", Some("B7"))));
        assert!(!scope.matches(&house("h1", Some("B8"))));
        assert!(!scope.matches(&house("h1", None)), "a sensor with no building is outside a building scope");
    }

    #[test]
    fn tag_scope_needs_the_same_value() {
        let brick = Scope { tags: BTreeMap::from([("structure".to_string(), "brick-wood".to_string())]), ..Scope::default() };
        let concrete = Scope { tags: BTreeMap::from([("structure".to_string(), "concrete".to_string())]), ..Scope::default() };
        assert!(brick.matches(&house("h1", None)));
        assert!(!concrete.matches(&house("h1", None)));
    }

    #[test]
    fn kind_scope_excludes_other_kinds() {
        let scope = Scope { kinds: vec![SensorKind::Water], ..Scope::default() };
        assert!(!scope.matches(&house("h1", None)));
    }

    #[test]
    fn tags_stay_sorted_keep_the_first_value_set_and_the_last_value_given() {
        let mut tags: Tags = [("use".to_string(), "surface".to_string()), ("owner".to_string(), "li".to_string()), ("use".to_string(), "drinking".to_string())]
            .into_iter()
            .collect();
        assert_eq!(tags.get("use"), Some("drinking"), "the last value given wins");
        assert_eq!(tags.or_insert_with("use", || "surface".into()), "drinking", "a value set is kept");
        assert_eq!(tags.or_insert_with("class", || "III".into()), "III");
        let names: Vec<&str> = tags.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["class", "owner", "use"]);
        assert_eq!(tags.get("storeys"), None);
        let mut pool = crate::TextPool::default();
        let mut other = tags.clone();
        other.share_in(&mut pool);
        tags.share_in(&mut pool);
        assert!(Arc::ptr_eq(&tags.0, &other.0) && Arc::ptr_eq(&tags.0[0].1, &other.0[0].1), "one shared set of shared texts");
        assert_eq!(tags, other);
    }
}
