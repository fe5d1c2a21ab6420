//! Container and blob names, and the document keys they map to. Pure.
//!
//! Keys are chosen so that every listing is a key range of the store:
//! - `blob.accounts`: `{account}` → the account's resource id (the name registry);
//! - `blob.containers`: `{account}/{container}`;
//! - `blob.blobs`: `{account}/{container}/{blob}`;
//! - `blob.blocks`: `{account}/{container}/{blob}\u{1}{block id}` (uncommitted blocks).
//!
//! Account and container names have no `/`, so `{account}/` and `{account}/{container}/`
//! are exact prefixes. Blob names may hold `/`, so the blocks of a blob end their blob part
//! with U+0001, which no blob name may contain: the blocks of `a` never share a prefix with
//! those of `a/b`.

use base64::Engine;

pub const ACCOUNTS: &str = "blob.accounts";
pub const CONTAINERS: &str = "blob.containers";
pub const BLOBS: &str = "blob.blobs";
pub const BLOCKS: &str = "blob.blocks";

/// Ends the blob part of a block key.
const BLOCK_SEPARATOR: char = '\u{1}';

/// The longest blob name, in characters.
pub const MAX_BLOB_NAME: usize = 1024;

/// The longest block id, decoded.
pub const MAX_BLOCK_ID: usize = 64;

/// 3 to 63 lower-case letters, digits and `-`; starts and ends with a letter or digit; no
/// `--`.
pub fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// 1 to 1024 characters, none of them a control character (they cannot be written in the
/// XML of a listing, and U+0001 separates block keys).
pub fn valid_blob_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=MAX_BLOB_NAME).contains(&count) && !name.chars().any(char::is_control)
}

/// A block id: base64 of 1 to 64 bytes.
pub fn valid_block_id(id: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(id)
        .is_ok_and(|raw| (1..=MAX_BLOCK_ID).contains(&raw.len()))
}

pub fn container_key(account: &str, container: &str) -> String {
    format!("{account}/{container}")
}

/// The prefix of every container key of `account`, and of every blob and block key in it.
pub fn account_prefix(account: &str) -> String {
    format!("{account}/")
}

pub fn blob_key(account: &str, container: &str, blob: &str) -> String {
    format!("{account}/{container}/{blob}")
}

/// The prefix of every blob and block key in a container.
pub fn container_prefix(account: &str, container: &str) -> String {
    format!("{account}/{container}/")
}

pub fn block_key(account: &str, container: &str, blob: &str, block_id: &str) -> String {
    format!("{account}/{container}/{blob}{BLOCK_SEPARATOR}{block_id}")
}

/// The prefix of the uncommitted block keys of one blob.
pub fn blocks_prefix(account: &str, container: &str, blob: &str) -> String {
    format!("{account}/{container}/{blob}{BLOCK_SEPARATOR}")
}

/// The block id of a block key.
pub fn block_id_of(key: &str) -> Option<&str> {
    key.rsplit_once(BLOCK_SEPARATOR).map(|(_, id)| id)
}

/// The smallest string greater than every key that starts with `prefix` and has at most
/// [`MAX_BLOB_NAME`] characters after it: listing after it skips everything under `prefix`.
pub fn past_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4 * (MAX_BLOB_NAME + 1));
    out.push_str(prefix);
    out.extend(std::iter::repeat_n(char::MAX, MAX_BLOB_NAME + 1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        assert!(valid_container_name("abc"));
        assert!(valid_container_name("a-b-1"));
        assert!(!valid_container_name("ab"));
        assert!(!valid_container_name("Abc"));
        assert!(!valid_container_name("-abc"));
        assert!(!valid_container_name("abc-"));
        assert!(!valid_container_name("a--b"));
        assert!(!valid_container_name("$root"));
        assert!(!valid_container_name(&"a".repeat(64)));
    }

    #[test]
    fn blob_names() {
        assert!(valid_blob_name("a/b/c.txt"));
        assert!(valid_blob_name("ünïcode ✓"));
        assert!(valid_blob_name(&"é".repeat(1024)));
        assert!(!valid_blob_name(""));
        assert!(!valid_blob_name(&"a".repeat(1025)));
        assert!(!valid_blob_name("a\u{1}b"));
        assert!(!valid_blob_name("a\nb"));
    }

    #[test]
    fn block_ids() {
        assert!(valid_block_id("MDAwMDA="));
        assert!(!valid_block_id(""));
        assert!(!valid_block_id("not base64!"));
        let long = base64::engine::general_purpose::STANDARD.encode([0u8; 65]);
        assert!(!valid_block_id(&long));
    }

    #[test]
    fn blocks_of_a_blob_never_share_a_prefix_with_another_blob() {
        let a = blocks_prefix("acct", "c", "a");
        let ab = block_key("acct", "c", "a/b", "MDA=");
        assert!(!ab.starts_with(&a));
        let key = block_key("acct", "c", "a", "MDA=");
        assert!(key.starts_with(&a));
        assert_eq!(block_id_of(&key), Some("MDA="));
    }

    #[test]
    fn past_prefix_is_after_every_name_below_it_and_before_the_next() {
        let p = "acct/c/dir/";
        let skip = past_prefix(p);
        let deepest = format!("{p}{}", char::MAX.to_string().repeat(MAX_BLOB_NAME));
        assert!(deepest.as_str() < skip.as_str());
        assert!(format!("{p}zzz").as_str() < skip.as_str());
        assert!("acct/c/dir0" > skip.as_str());
        assert!("acct/c/dir/" < skip.as_str());
    }
}
