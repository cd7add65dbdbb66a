//! One copy of each piece of text many sensors share: ten thousand probes at one site, in one
//! grid, tagged `use = "surface"`, hold one `Arc<str>` each instead of ten thousand strings
//! (the inventory was a third of the daemon's heap at 10,000 sensors).

use std::collections::HashSet;
use std::sync::Arc;

/// Hands out one shared copy per distinct text.
#[derive(Debug, Default)]
pub struct TextPool(HashSet<Arc<str>>);

impl TextPool {
    pub fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = text.into();
        self.0.insert(shared.clone());
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
