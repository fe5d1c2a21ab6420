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

/// The raw state of the root scope `/`.
#[cfg(test)]
pub(crate) fn root_scope_state() -> u64 {
    ROOT_SEED
}

/// Calls `visit(depth, end, state)` for every ancestor-or-self prefix of a scope key, root
/// first: `depth` counts segments (0 for the root `/`), the prefix is `key[..end]` (`end == 0`
/// stands for the root), and it ends at a segment boundary. `state` is the raw fold of the
/// prefix, ASCII case ignored: equal prefixes give equal states; [`finish_scope_hash`] turns
/// it into a table key. Stops early when `visit` returns `false`.
#[inline]
pub(crate) fn for_each_scope_prefix(key: &str, mut visit: impl FnMut(usize, usize, u64) -> bool) {
    let bytes = key.as_bytes();
    let mut h = ROOT_SEED;
    if !visit(0, 0, h) {
        return;
    }
    let mut depth = 0;
    let mut start = usize::from(bytes.first() == Some(&b'/'));
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i);
        let len = end - start;
        let mut at = start;
        // Full words, then the tail (1 to 8 bytes, or none for an empty segment), whose
        // word also carries the segment length so that `ab/c` and `a/bc` differ.
        while end - at > 8 {
            h = step(h, lower_swar(load(bytes, at, 8)));
            at += 8;
        }
        let tag = (len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = step(h, lower_swar(load(bytes, at, end - at)) ^ tag);
        depth += 1;
        if !visit(depth, end, h) {
            return;
        }
        start = end + 1;
    }
}

/// `n <= 8` bytes of `bytes` from `at`, little-endian, zero-padded; reads a whole window
/// when the slice allows, so short tails cost no copy loop.
#[inline]
fn load(bytes: &[u8], at: usize, n: usize) -> u64 {
    if let Some(window) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(word8(window));
        if n >= 8 {
            w
        } else {
            w & ((1u64 << (8 * n)) - 1)
        }
    } else {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

/// A raw prefix state made fit for a hash table key.
#[inline]
pub(crate) fn finish_scope_hash(state: u64) -> u64 {
    finalize(state)
}

/// Number of segments of a scope key (0 for the root).
#[cfg(test)]
pub(crate) fn scope_depth(key: &str) -> usize {
    let mut depth = 0;
    for_each_scope_prefix(key, |d, _, _| {
        depth = d;
        true
    });
    depth
}

/// ASCII-case-insensitive equality, eight bytes at a time.
#[inline]
pub(crate) fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if lower_swar(u64::from_le_bytes(word8(x))) != lower_swar(u64::from_le_bytes(word8(y))) {
            return false;
        }
    }
    ca.remainder().eq_ignore_ascii_case(cb.remainder())
}

#[inline]
fn word8(c: &[u8]) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(c);
    w
}

/// Lower-cases the ASCII letters of eight bytes at once; other bytes are unchanged.
#[inline]
fn lower_swar(x: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let heptets = x & !HIGH;
    // High bit of each byte: at least `A`, and above `Z` (no carries: heptets <= 0x7f).
    let at_least_a = heptets + 0x3f3f_3f3f_3f3f_3f3f;
    let above_z = heptets + 0x2525_2525_2525_2525;
    let upper = at_least_a & !above_z & !x & HIGH;
    x | (upper >> 2)
}

/// The raw fold state of a whole scope key (the last one [`for_each_scope_prefix`] yields).
pub(crate) fn scope_state(key: &str) -> u64 {
    let mut last = 0;
    for_each_scope_prefix(key, |_, _, h| {
        last = h;
        true
    });
    last
}

/// The table key of a whole scope key.
pub(crate) fn scope_hash(key: &str) -> u64 {
    finish_scope_hash(scope_state(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_agree_with_or_without_a_window() {
        let b = b"abcdefghijklmnop";
        for at in 0..b.len() {
            for n in 0..=8.min(b.len() - at) {
                let mut w = [0u8; 8];
                w[..n].copy_from_slice(&b[at..at + n]);
                assert_eq!(load(b, at, n), u64::from_le_bytes(w), "{at} {n}");
                assert_eq!(
                    load(&b[..at + n], at, n),
                    u64::from_le_bytes(w),
                    "{at} {n} short"
                );
            }
        }
    }

    #[test]
    fn prefix_hashes_equal_whole_hashes_of_the_prefixes() {
        let key = "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
        let mut seen = Vec::new();
        for_each_scope_prefix(key, |depth, end, h| {
            assert_eq!(depth, seen.len());
            seen.push((end, h));
            true
        });
        assert_eq!(seen.len(), 9);
        assert_eq!(seen[0], (0, root_scope_state()));
        assert_eq!(scope_state("/"), root_scope_state());
        for (end, h) in &seen[1..] {
            assert_eq!(scope_state(&key[..*end]), *h, "prefix {}", &key[..*end]);
            assert_eq!(scope_state(&key[..*end].to_ascii_uppercase()), *h);
        }
        assert_ne!(scope_hash("/ab/c"), scope_hash("/a/bc"));
        assert_ne!(scope_hash("/abcdefghi"), scope_hash("/abcdefgh/i"));
        assert_eq!(scope_depth("/"), 0);
        assert_eq!(scope_depth(key), 8);
        assert_ne!(
            scope_hash("/subscriptions/s/resourcegroups/rg1"),
            scope_hash("/subscriptions/s/resourcegroups/rg10")
        );
    }
}

#[cfg(test)]
mod compare_tests {
    use super::eq_ignore_case;

    #[test]
    fn agrees_with_std_on_every_byte_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let x = [a, b'x', a, b'Q', a, b'/', a, b'z', a];
                let y = [b, b'X', b, b'q', b, b'/', b, b'Z', b];
                assert_eq!(
                    eq_ignore_case(&x, &y),
                    x.eq_ignore_ascii_case(&y),
                    "{a} {b}"
                );
                assert_eq!(
                    eq_ignore_case(&x[..8], &y[..8]),
                    x[..8].eq_ignore_ascii_case(&y[..8])
                );
            }
        }
        assert!(!eq_ignore_case(b"abc", b"abcd"));
        assert!(eq_ignore_case(
            b"/Subscriptions/S1/resourceGroups/RG",
            b"/subscriptions/s1/resourcegroups/rg"
        ));
    }
}
