//! Field names ("x", "ph", "turbidity"…) kept once instead of once per sensor: the live
//! table (latest readings, hourly trend) stores a two-byte index. Ten thousand sensors with five
//! fields each would otherwise hold fifty thousand copies of a handful of names.
//!
//! Bounded: payloads choose their field names, so at most [`FieldNames::MAX`] distinct names are
//! taken; a name past that gets no index and the caller leaves that field out of its table (the
//! reading itself is judged and stored as usual).

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct FieldNames {
    names: Vec<Arc<str>>,
    index: HashMap<Box<str>, u16>,
}

impl FieldNames {
    /// Distinct names kept at most.
    pub const MAX: usize = 1024;

    /// The name's index, taking it in if it is new and there is room.
    pub fn index(&mut self, name: &str) -> Option<u16> {
        if let Some(&index) = self.index.get(name) {
            return Some(index);
        }
        if self.names.len() >= Self::MAX {
            return None;
        }
        let index = u16::try_from(self.names.len()).ok()?;
        self.names.push(name.into());
        self.index.insert(name.into(), index);
        Some(index)
    }

    /// The name of an index handed out by [`FieldNames::index`].
    pub fn name(&self, index: u16) -> &str {
        self.names.get(usize::from(index)).map_or("", |name| name)
    }

    /// The name of an index, shared, for what outlives the table's lock (the trend's rows).
    pub fn shared(&self, index: u16) -> Arc<str> {
        self.names.get(usize::from(index)).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_once_and_bounded() {
        let mut names = FieldNames::default();
        let x = names.index("x").unwrap();
        assert_eq!(names.index("y"), Some(x + 1));
        assert_eq!(names.index("x"), Some(x), "the same name, the same index");
        assert_eq!(names.name(x), "x");
        assert!(Arc::ptr_eq(&names.shared(x), &names.shared(x)), "one copy, handed out");
        for n in 2..FieldNames::MAX {
            assert!(names.index(&format!("f{n}")).is_some());
        }
        assert_eq!(names.index("one-too-many"), None);
        assert_eq!(names.index("y"), Some(x + 1), "known names still resolve when full");
    }
}
