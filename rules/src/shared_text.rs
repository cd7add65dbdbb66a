//! One copy of each piece of text many sensors share: ten thousand probes at one site, in one
//! grid, tagged `use = "surface"`, hold one `Arc<str>` each instead of ten thousand strings, and
//! one tag set (the inventory was a third of the daemon's heap at 10,000 sensors).

use std::collections::HashSet;
use std::sync::Arc;

/// A sorted tag set, as [`crate::Tags`] keeps it.
type TagPairs = Arc<[(Arc<str>, Arc<str>)]>;

/// Hands out one shared copy per distinct text and per distinct tag set.
#[derive(Debug, Default)]
pub struct TextPool {
    texts: HashSet<Arc<str>>,
    tag_sets: HashSet<TagPairs>,
}

impl TextPool {
    pub fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.texts.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = text.into();
        self.texts.insert(shared.clone());
        shared
    }

    /// The shared copy of a tag set (`pairs` sorted by name, as `Tags` keeps them).
    pub(crate) fn share_tags(&mut self, pairs: Vec<(Arc<str>, Arc<str>)>) -> TagPairs {
        if let Some(shared) = self.tag_sets.get(pairs.as_slice()) {
            return shared.clone();
        }
        let shared: TagPairs = pairs.into();
        self.tag_sets.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_allocation() {
        let mut pool = TextPool::default();
        let (a, b, c) = (pool.share("north-lane"), pool.share("north-lane"), pool.share("grid-3"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((&*a, &*c), ("north-lane", "grid-3"));
    }
}
