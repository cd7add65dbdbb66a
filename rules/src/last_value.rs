//! Optional readings in fewer bytes than an `Option`: [`LastValue`] in 8 bytes instead of 16 (a
//! flat-line check's previous value, a learned baseline), and [`ReportedValue`] in 4 (the latest
//! value a ladder judged, kept only to be shown). There is one per (rule, sensor), so ten
//! thousand sensors keep a hundred thousand. "None" is NaN, a value the engine never judges
//! (non-finite readings count as missing). Saved as a number or `null`, exactly like an
//! `Option<f64>`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy)]
pub struct LastValue(f64);

impl LastValue {
    pub const NONE: LastValue = LastValue(f64::NAN);

    /// A judged value (NaN reads back as none).
    pub fn of(value: f64) -> LastValue {
        LastValue(value)
    }

    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl Default for LastValue {
    fn default() -> LastValue {
        LastValue::NONE
    }
}

impl PartialEq for LastValue {
    fn eq(&self, other: &LastValue) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for LastValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LastValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LastValue, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.map_or(LastValue::NONE, LastValue))
    }
}

/// The latest value a ladder judged, in single precision: it is only shown (the value of an
/// event when a hold completes on a tick, a building's value), never compared against a level,
/// and 4 bytes instead of 8 keep a ladder's state at 24 bytes.
#[derive(Debug, Clone, Copy)]
pub struct ReportedValue(f32);

impl ReportedValue {
    pub const NONE: ReportedValue = ReportedValue(f32::NAN);

    /// A judged value, rounded to single precision (NaN reads back as none).
    pub fn of(value: f64) -> ReportedValue {
        ReportedValue(value as f32)
    }

    /// The value as the decimal it was rounded to: 4.2, not the 4.199999809265137 a plain
    /// widening gives, since alerts print it as it is.
    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then(|| self.0.to_string().parse().unwrap_or(f64::from(self.0)))
    }
}

impl Default for ReportedValue {
    fn default() -> ReportedValue {
        ReportedValue::NONE
    }
}

impl PartialEq for ReportedValue {
    fn eq(&self, other: &ReportedValue) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for ReportedValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (!self.0.is_nan()).then_some(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ReportedValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ReportedValue, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.map_or(ReportedValue::NONE, ReportedValue::of))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_like_an_option() {
        assert_eq!(serde_json::to_string(&LastValue::NONE).unwrap(), "null");
        assert_eq!(serde_json::to_string(&LastValue::of(2.5)).unwrap(), "2.5");
        assert_eq!(serde_json::from_str::<LastValue>("null").unwrap().get(), None);
        assert_eq!(serde_json::from_str::<LastValue>("2.5").unwrap().get(), Some(2.5));
        assert_eq!(LastValue::NONE, LastValue::default(), "none equals none, though NaN != NaN");
    }

    #[test]
    fn a_reported_value_is_saved_in_single_precision() {
        assert_eq!(serde_json::to_string(&ReportedValue::NONE).unwrap(), "null");
        assert_eq!(serde_json::to_string(&ReportedValue::of(4.2)).unwrap(), "4.2", "shortest form of the f32, not 4.199999809265137");
        assert_eq!(serde_json::from_str::<ReportedValue>("4.2").unwrap(), ReportedValue::of(4.2));
        assert_eq!(serde_json::from_str::<ReportedValue>("null").unwrap().get(), None);
        assert!((ReportedValue::of(1234.5678).get().unwrap() - 1234.5678).abs() < 1e-3);
        assert_eq!(ReportedValue::of(4.2).get(), Some(4.2), "read back as the decimal, the way alerts print it");
        assert_eq!(ReportedValue::of(-0.031).get().map(|v| v.to_string()), Some("-0.031".to_string()));
    }
}
