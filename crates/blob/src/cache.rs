//! Bounded in-memory maps for the read path. Pure: no I/O, no clock; callers lock.
//!
//! [`Bounded`] holds at most a number of entries and, optionally, a total weight (bytes of
//! content, say); inserting past either limit drops the oldest insertions first. So no
//! sequence of requests (naming many accounts, reading many blobs) grows memory without
//! limit.

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
