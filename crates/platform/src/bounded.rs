//! Bounded in-memory maps for the data planes' read paths, and the rule of what may be kept.
//! Pure: no I/O, no clock; callers lock.
//!
//! - [`Bounded`] holds at most a number of entries and, optionally, a total weight (bytes of
//!   content, say); inserting past either limit drops the oldest insertions first (a key
//!   inserted again counts from its new insertion). So no sequence of requests (naming many
//!   vaults or accounts, reading many blobs) grows memory without limit.
//! - [`Stamped`]: a value with the commit generation it was read at; it answers only while
//!   that generation is still current.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, (V, usize)>,
    order: VecDeque<K>,
    max_entries: usize,
    max_weight: usize,
    weight: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// At most `max_entries` entries (at least one), each of weight one.
    pub fn new(max_entries: usize) -> Self {
        Self::weighted(max_entries, usize::MAX)
    }

    /// At most `max_entries` entries whose weights sum to at most `max_weight`.
    pub fn weighted(max_entries: usize, max_weight: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_entries: max_entries.max(1),
            max_weight,
            weight: 0,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Inserts with weight one.
    pub fn insert(&mut self, key: K, value: V) {
        self.insert_weighted(key, value, 1);
    }

    /// Inserts `value` weighing `weight`; a value heavier than the whole budget is not kept.
    pub fn insert_weighted(&mut self, key: K, value: V, weight: usize) {
        if weight > self.max_weight {
            return;
        }
        self.remove(&key);
        while !self.order.is_empty()
            && (self.map.len() >= self.max_entries || self.weight + weight > self.max_weight)
        {
            if let Some(oldest) = self.order.pop_front() {
                if let Some((_, w)) = self.map.remove(&oldest) {
                    self.weight -= w;
                }
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, (value, weight));
        self.weight += weight;
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some((_, w)) = self.map.remove(key) {
            self.weight -= w;
            self.order.retain(|k| k.borrow() != key);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The sum of the entries' weights.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.max_entries
    }
}

/// A value read from the store while the commit generation was `generation`.
#[derive(Debug, Clone)]
pub struct Stamped<V> {
    pub generation: u64,
    pub value: V,
}

impl<V> Stamped<V> {
    /// The value, if nothing was committed since it was read (`current` is the generation
    /// now).
    pub fn current(&self, current: u64) -> Option<&V> {
        (self.generation == current).then_some(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeds_its_capacity() {
        let mut m = Bounded::new(100);
        for i in 0..10_000u32 {
            m.insert(format!("vault{i}"), i);
            assert!(m.len() <= 100);
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.get("vault9999"), Some(&9999));
        assert_eq!(m.get("vault9899"), None);
        assert!(m.order.len() <= 100, "the eviction order is bounded too");
        assert_eq!(Bounded::<u8, u8>::new(0).capacity(), 1);
    }

    #[test]
    fn a_key_inserted_again_counts_from_then() {
        let mut m = Bounded::new(3);
        for i in 0..3 {
            m.insert(i, i * 10);
        }
        m.insert(0, 99);
        assert_eq!(m.len(), 3);
        m.insert(3, 30);
        assert_eq!(m.get(&0), Some(&99));
        assert_eq!(m.get(&1), None, "the oldest insertion goes first");
        assert_eq!(m.get(&2), Some(&20));
    }

    #[test]
    fn stamped_answers_only_at_its_generation() {
        let s = Stamped {
            generation: 7,
            value: "v",
        };
        assert_eq!(s.current(7), Some(&"v"));
        assert_eq!(s.current(8), None);
        assert_eq!(s.current(6), None);
    }

    #[test]
    fn entries_are_bounded_oldest_first() {
        let mut m = Bounded::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("c", 3);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("c"), Some(&3));
        m.insert("b", 20);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b"), Some(&20));
        for i in 0..1000 {
            m.insert(if i % 2 == 0 { "x" } else { "y" }, i);
        }
        assert_eq!(m.len(), 2);
        assert!(m.order.len() <= 2);
    }

    #[test]
    fn weight_is_bounded_and_too_heavy_values_are_not_kept() {
        let mut m = Bounded::weighted(100, 10);
        m.insert_weighted(1, "a", 4);
        m.insert_weighted(2, "b", 4);
        assert_eq!(m.weight(), 8);
        m.insert_weighted(3, "c", 4);
        assert_eq!(m.weight(), 8, "the oldest went to make room");
        assert_eq!(m.get(&1), None);
        m.insert_weighted(4, "d", 11);
        assert_eq!(m.get(&4), None);
        assert_eq!(m.weight(), 8);
        m.remove(&2);
        assert_eq!(m.weight(), 4);
        m.insert_weighted(3, "c2", 10);
        assert_eq!(m.weight(), 10);
        assert_eq!(m.len(), 1);
    }
}
