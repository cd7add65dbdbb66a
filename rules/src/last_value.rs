//! An optional reading in 8 bytes instead of 16: the latest value a ladder or a flat-line check
//! judged. There is one per (rule, sensor), so ten thousand sensors keep a hundred thousand.
//! "None" is NaN, a value the engine never judges (non-finite readings count as missing). Saved
//! as a number or `null`, exactly like an `Option<f64>`.

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
}
