//! Bounded in-memory maps for the data plane's read path, and the rules of what may be kept.
//!
//! - [`Bounded`]: a map that holds at most `capacity` entries, dropping the oldest insertion
//!   first, so no sequence of requests (naming many vaults, say) grows memory without limit.
//! - [`Stamped`]: a value with the commit generation it was read at; it answers only while
//!   that generation is still current.
//!
//! Pure: no I/O, no clock. Callers hold these behind a lock.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `capacity` entries; inserting a new key into a full map drops the
/// entry inserted longest ago. Replacing a key's value keeps its place.
#[derive(Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// A map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }

    /// Drops `key`'s entry, if any.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k.borrow() != key);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
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
    fn bounded_drops_the_oldest_insertion_first() {
        let mut m = Bounded::new(3);
        for i in 0..3 {
            m.insert(i, i * 10);
        }
        assert_eq!(m.len(), 3);
        // Replacing keeps the entry's place and the size.
        m.insert(0, 99);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&0), Some(&99));
        m.insert(3, 30);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&0), None, "the oldest insertion goes first");
        assert_eq!(m.get(&1), Some(&10));
        assert_eq!(m.get(&3), Some(&30));
        m.remove(&1);
        assert_eq!(m.len(), 2);
        m.insert(4, 40);
        m.insert(5, 50);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&2), None);
        assert_eq!(m.get(&4), Some(&40));
    }

    #[test]
    fn bounded_never_exceeds_its_capacity() {
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
    fn stamped_answers_only_at_its_generation() {
        let s = Stamped {
            generation: 7,
            value: "v",
        };
        assert_eq!(s.current(7), Some(&"v"));
        assert_eq!(s.current(8), None);
        assert_eq!(s.current(6), None);
    }
}
