//! The documents this plane stores (bodies of [`lanyard_storage::DocumentRecord`]s). Pure.
//!
//! Content lives in files under `{data_dir}/blobs/`; a document names its file by a path
//! relative to that directory. A file is written under a fresh name before the document that
//! names it is committed, and removed only after the document stops naming it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// User metadata (`x-ms-meta-*`), by lower-cased name.
pub type Metadata = BTreeMap<String, String>;

/// The name registry entry of a storage account (`blob.accounts/{account}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    /// The account's resource id.
    pub id: String,
}

/// A container (`blob.containers/{account}/{container}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerDoc {
    /// The directory holding the container's files, relative to the blob root.
    pub dir: String,
    /// Without quotes, e.g. `0x8DC0123456789AB`.
    pub etag: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
    #[serde(default)]
    pub metadata: Metadata,
}

/// The standard HTTP headers a blob keeps and returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Base64 of the MD5 of the whole content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_md5: Option<String>,
}

/// The content type served when a blob has none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A committed block of a block blob, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlock {
    pub id: String,
    pub size: u64,
}

/// A block blob (`blob.blobs/{account}/{container}/{blob}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobDoc {
    /// The content file, relative to the blob root.
    pub file: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
    #[serde(default)]
    pub content: ContentHeaders,
    #[serde(default)]
    pub metadata: Metadata,
    /// The committed block list (empty for a blob written whole by Put Blob).
    #[serde(default)]
    pub blocks: Vec<CommittedBlock>,
}

impl BlobDoc {
    /// Where each committed block lies in the content file: `(id, offset, size)`, the first
    /// occurrence of each id.
    pub fn block_ranges(&self) -> BTreeMap<&str, (u64, u64)> {
        let mut out = BTreeMap::new();
        let mut offset = 0u64;
        for b in &self.blocks {
            out.entry(b.id.as_str()).or_insert((offset, b.size));
            offset = offset.saturating_add(b.size);
        }
        out
    }
}

/// An uncommitted block (`blob.blocks/{blob key}\u{1}{block id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDoc {
    pub file: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// A fresh entity tag: `0x` and 16 hex digits.
pub fn new_etag() -> String {
    let raw = uuid::Uuid::new_v4().as_u64_pair().0;
    format!("0x{raw:016X}")
}

/// The body of `record` as a `T`; one that does not decode is [`crate::error::BlobError::Corrupt`].
pub fn decode<T: serde::de::DeserializeOwned>(
    record: &lanyard_storage::DocumentRecord,
) -> Result<T, crate::error::BlobError> {
    T::deserialize(&record.body).map_err(|e| {
        crate::error::BlobError::Corrupt(format!(
            "`{}` document `{}`: {e}",
            record.collection, record.key
        ))
    })
}

/// `value` as a document body.
pub fn encode<T: Serialize>(value: &T) -> Result<serde_json::Value, crate::error::BlobError> {
    serde_json::to_value(value).map_err(|e| crate::error::BlobError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_follow_the_order_of_the_list() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let doc = BlobDoc {
            file: "f".into(),
            size: 10,
            etag: new_etag(),
            created: t,
            last_modified: t,
            content: ContentHeaders::default(),
            metadata: Metadata::new(),
            blocks: vec![
                CommittedBlock {
                    id: "a".into(),
                    size: 3,
                },
                CommittedBlock {
                    id: "b".into(),
                    size: 5,
                },
                CommittedBlock {
                    id: "a".into(),
                    size: 2,
                },
            ],
        };
        let r = doc.block_ranges();
        assert_eq!(r["a"], (0, 3));
        assert_eq!(r["b"], (3, 5));
    }

    #[test]
    fn etags_are_fresh() {
        let a = new_etag();
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("0x"));
        assert_ne!(a, new_etag());
    }
}
