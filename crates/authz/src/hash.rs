//! Small, fast hashing for the index: a word-at-a-time hasher for UUID keys and a
//! segment-wise hash of scope keys that yields the hash of every ancestor in one pass.
//!
//! Neither hash is trusted on its own: every scope hit is confirmed by comparing text, so a
//! collision (accidental or crafted through resource names) costs a probe, never a grant.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

#[inline]
fn step(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(K)
}

/// Spreads entropy to every bit (the hash table uses both high and low bits).
#[inline]
fn finalize(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// Hasher for keys that are already random (UUIDs) or small integers.
#[derive(Default, Clone, Copy)]
pub(crate) struct WordHasher(u64);

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.0 = step(self.0, word(c));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.0 = step(self.0, word(rest));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = step(self.0, u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = step(self.0, n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = step(self.0, n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        finalize(self.0)
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// Hasher for `u64` keys that are already scope hashes (finalized): passes them through.
#[derive(Default, Clone, Copy)]
pub(crate) struct PassHasher(u64);

impl Hasher for PassHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys use this hasher; fold anything else rather than lose it.
        for b in bytes {
            self.0 = step(self.0, u64::from(*b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PassHasher>>;

const ROOT_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of the root scope `/`.
#[cfg(test)]
pub(crate) fn root_scope_hash() -> u64 {
    finalize(ROOT_SEED)
}

/// Calls `visit(end, hash)` for every ancestor-or-self prefix of a scope key, root first:
/// `end == 0` stands for the root `/`; otherwise the prefix is `key[..end]`, which ends at a
/// segment boundary. Hashing ignores ASCII case. Stops early when `visit` returns `false`.
#[inline]
pub(crate) fn for_each_scope_prefix(key: &str, mut visit: impl FnMut(usize, u64) -> bool) {
    let bytes = key.as_bytes();
    let mut h = ROOT_SEED;
    if !visit(0, finalize(h)) {
        return;
    }
    let mut start = usize::from(bytes.first() == Some(&b'/'));
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i);
        let segment = &bytes[start..end];
        let mut chunks = segment.chunks_exact(8);
        for c in &mut chunks {
            h = step(h, lower_word(c));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            h = step(h, lower_word(rest));
        }
        // The length tag keeps `ab/c` and `a/bc` apart after zero padding.
        h = step(h, 0x2f00_0000_0000_0000 | segment.len() as u64);
        if !visit(end, finalize(h)) {
            return;
        }
        start = end + 1;
    }
}

#[inline]
fn lower_word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    w.make_ascii_lowercase();
    u64::from_le_bytes(w)
}

/// The hash of a whole scope key (the last value [`for_each_scope_prefix`] yields).
pub(crate) fn scope_hash(key: &str) -> u64 {
    let mut last = 0;
    for_each_scope_prefix(key, |_, h| {
        last = h;
        true
    });
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hashes_equal_whole_hashes_of_the_prefixes() {
        let key = "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
        let mut seen = Vec::new();
        for_each_scope_prefix(key, |end, h| {
            seen.push((end, h));
            true
        });
        assert_eq!(seen.len(), 9);
        assert_eq!(seen[0], (0, root_scope_hash()));
        assert_eq!(scope_hash("/"), root_scope_hash());
        for (end, h) in &seen[1..] {
            assert_eq!(scope_hash(&key[..*end]), *h, "prefix {}", &key[..*end]);
            assert_eq!(scope_hash(&key[..*end].to_ascii_uppercase()), *h);
        }
        assert_ne!(scope_hash("/ab/c"), scope_hash("/a/bc"));
        assert_ne!(
            scope_hash("/subscriptions/s/resourcegroups/rg1"),
            scope_hash("/subscriptions/s/resourcegroups/rg10")
        );
    }
}
