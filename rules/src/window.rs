//! The readings a window keeps ([`Point`]) and how a window is saved.
//!
//! A point is 8 bytes: whole seconds since the Unix epoch and the value as `f32` (7 significant
//! digits, ample for sensor readings). Windows therefore have a resolution of one second, and
//! the loader refuses shorter ones.
//!
//! Saved (state format 3), a window is `[first second, [seconds since the previous point…],
//! [values…]]`, about half the text of a list of `[second, value]` pairs: one-hour medians of
//! ten thousand sensors are most of the state file written to an SD card every minute. The pair
//! list (state format 2) is still read, and an empty window is `[]` in both.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::VecDeque;

/// A short list of recent points: inline while it holds at most four (a `median 3` window, the
/// candidates of a swing's extremes — a handful for noisy data), on the heap beyond. One
/// allocation fewer per sensor than a `VecDeque` behind a box.
pub(crate) type Points = SmallVec<[Point; 4]>;

/// A `recent` baseline's readings, one list per field of the expression (a tilt box has two).
pub(crate) type RecentLevels = SmallVec<[Points; 2]>;

/// Drops the points at the front of `points` that `expired` picks out (oldest first), in one
/// move of the rest.
pub(crate) fn drop_front(points: &mut Points, expired: impl Fn(&Point) -> bool) {
    let count = points.iter().take_while(|p| expired(p)).count();
    if count > 0 {
        points.drain(..count);
    }
}

/// Keeps the newest `max` points.
pub(crate) fn keep_newest(points: &mut Points, max: usize) {
    if points.len() > max {
        let excess = points.len() - max;
        points.drain(..excess);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point(u32, f32);

impl Point {
    pub(crate) fn new(second: i64, value: f64) -> Point {
        Point(u32::try_from(second.max(0)).unwrap_or(u32::MAX), value as f32)
    }

    pub(crate) fn second(self) -> i64 {
        i64::from(self.0)
    }

    pub(crate) fn value(self) -> f64 {
        f64::from(self.1)
    }
}

/// A window as saved, either layout.
#[derive(Deserialize)]
#[serde(untagged)]
enum Saved {
    Pairs(VecDeque<Point>),
    Packed(u32, Vec<i64>, Vec<f32>),
}

/// `#[serde(with = "crate::window::packed")]` for a `VecDeque<Point>` or [`Points`].
pub(crate) mod packed {
    use super::{Point, Saved};
    use serde::ser::SerializeTuple;

    pub fn serialize<'a, C, S: serde::Serializer>(points: &'a C, serializer: S) -> Result<S::Ok, S::Error>
    where
        &'a C: IntoIterator<Item = &'a Point>,
        <&'a C as IntoIterator>::IntoIter: Clone,
    {
        let points = points.into_iter();
        let Some(first) = points.clone().next() else { return serializer.collect_seq(std::iter::empty::<u32>()) };
        let steps: Vec<i64> = points.clone().zip(points.clone().skip(1)).map(|(before, after)| after.second() - before.second()).collect();
        let values: Vec<f32> = points.map(|point| point.1).collect();
        let mut saved = serializer.serialize_tuple(3)?;
        saved.serialize_element(&first.0)?;
        saved.serialize_element(&steps)?;
        saved.serialize_element(&values)?;
        saved.end()
    }

    pub fn deserialize<'de, C: FromIterator<Point>, D: serde::Deserializer<'de>>(deserializer: D) -> Result<C, D::Error> {
        match <Saved as serde::Deserialize>::deserialize(deserializer)? {
            Saved::Pairs(points) => Ok(points.into_iter().collect()),
            Saved::Packed(first, steps, values) => {
                if steps.len() + 1 != values.len() {
                    return Err(serde::de::Error::invalid_length(steps.len(), &"one step fewer than values"));
                }
                let mut second = i64::from(first);
                Ok(values
                    .into_iter()
                    .enumerate()
                    .map(|(index, value)| {
                        if index > 0 {
                            second = second.saturating_add(steps[index - 1]);
                        }
                        Point(u32::try_from(second.max(0)).unwrap_or(u32::MAX), value)
                    })
                    .collect())
            }
        }
    }
}

/// `#[serde(with = "crate::window::packed_lists")]` for one window per field
/// (`Option<Box<RecentLevels>>`), saved as a list of packed windows.
pub(crate) mod packed_lists {
    use super::{packed, Points, RecentLevels};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Serialize};

    /// One window, borrowed for writing.
    struct Saving<'a>(&'a Points);

    impl Serialize for Saving<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            packed::serialize(self.0, serializer)
        }
    }

    /// One window, read back.
    struct Loaded(Points);

    impl<'de> Deserialize<'de> for Loaded {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Loaded, D::Error> {
            packed::deserialize(deserializer).map(Loaded)
        }
    }

    pub fn serialize<S: serde::Serializer>(lists: &Option<Box<RecentLevels>>, serializer: S) -> Result<S::Ok, S::Error> {
        let lists: &[Points] = lists.as_deref().map_or(&[], |lists| lists.as_slice());
        let mut seq = serializer.serialize_seq(Some(lists.len()))?;
        for points in lists {
            seq.serialize_element(&Saving(points))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RecentLevels>>, D::Error> {
        let lists: Vec<Loaded> = Vec::deserialize(deserializer)?;
        Ok((!lists.is_empty()).then(|| Box::new(lists.into_iter().map(|Loaded(points)| points).collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Window(#[serde(with = "packed")] VecDeque<Point>);

    #[test]
    fn a_window_is_saved_packed_and_read_back_in_either_layout() {
        let window = Window([Point(1_795_392_000, 0.31), Point(1_795_392_060, 0.32), Point(1_795_392_120, 0.3)].into());
        let saved = serde_json::to_string(&window).unwrap();
        assert_eq!(saved, "[1795392000,[60,60],[0.31,0.32,0.3]]");
        assert_eq!(serde_json::from_str::<Window>(&saved).unwrap(), window);
        let pairs = "[[1795392000,0.31],[1795392060,0.32],[1795392120,0.3]]";
        assert_eq!(serde_json::from_str::<Window>(pairs).unwrap(), window, "state format 2");
        assert_eq!(serde_json::to_string(&Window(VecDeque::new())).unwrap(), "[]");
        assert_eq!(serde_json::from_str::<Window>("[]").unwrap(), Window(VecDeque::new()));
        assert!(serde_json::from_str::<Window>("[1795392000,[60],[0.31]]").is_err(), "steps and values must match");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Short(#[serde(with = "packed")] Points);

    #[test]
    fn a_short_list_is_saved_like_a_window_and_stays_inline_up_to_four_points() {
        let short = Short([Point(1_795_392_000, 0.31), Point(1_795_392_060, 0.32)].into_iter().collect());
        let saved = serde_json::to_string(&short).unwrap();
        assert_eq!(saved, "[1795392000,[60],[0.31,0.32]]");
        assert_eq!(serde_json::from_str::<Short>(&saved).unwrap(), short);
        let mut points: Points = (0..6).map(|s| Point::new(s, s as f64)).collect();
        drop_front(&mut points, |p| p.second() < 2);
        assert_eq!(points.iter().map(|p| p.second()).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
        keep_newest(&mut points, 3);
        assert_eq!(points.iter().map(|p| p.second()).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(std::mem::size_of::<Points>(), 40, "four points inline and the length, nothing more");
    }
}
