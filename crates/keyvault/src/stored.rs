//! What the data plane keeps in the store, and where. Pure.
//!
//! Three document collections:
//! - [`VAULTS`], key `{vault id, lower-cased}`: a [`VaultDoc`], the vault's data-plane
//!   instance and its data key wrapped by the KEK. It is created on the vault's first
//!   data-plane request and replaced (with everything under the old instance) when the
//!   resource it was made for is gone and a vault of the same id exists again.
//! - [`SECRETS`], keys under `{vault id}/{instance}/` ([`Layout`]):
//!   - `live/{name}`: a live secret ([`LiveDoc`]): a copy of its latest version's metadata
//!     ([`SecretMeta`]), so listing secrets is one range read, and (when written by a set or
//!     an update of the latest version) that version's sealed value too, so reading the
//!     latest value is one document read. Written in the same batch as the version document
//!     whose copy it is; a live document without the value (older ones, recovered or
//!     restored secrets) sends the reader on to the version document;
//!   - `versions/{name}/{version}`: every version ([`VersionDoc`]), with its sealed value;
//!   - `deleted/{name}`: a deleted secret ([`DeletedDoc`]); its versions stay where they are
//!     until it is recovered or purged.
//! - [`crate::deleted::DELETED_VAULTS`], key `{vault name, lower-cased}`: a soft-deleted
//!   vault ([`crate::deleted::DeletedVaultDoc`]). While it exists the vault's other
//!   documents stay; purging it forgets them ([`forget_scope`]).
//!
//! Names in keys are lower-cased (secret names are case-insensitive) and contain no `/`, so
//! every prefix below ends with `/` and is a clean key range. Keys start with the vault's
//! resource id, so whatever deletes a scope can delete every document under it with
//! [`forget_scope`].

use std::collections::BTreeMap;
use std::fmt;

use lanyard_domain::ResourceId;
use lanyard_storage::Change;
use serde::{Deserialize, Serialize};

use crate::names::{SecretName, SecretVersion};

pub const VAULTS: &str = "kv-vaults";
pub const SECRETS: &str = "kv-secrets";

/// A vault's data-plane record.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VaultDoc {
    /// `created_at` of the resource record this instance belongs to (Unix nanoseconds).
    pub resource_created: i128,
    /// Random; part of every secret key and of the data key's associated data.
    pub instance: String,
    /// The data key wrapped by the KEK, base64.
    pub wrapped_key: String,
}

impl fmt::Debug for VaultDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultDoc")
            .field("resource_created", &self.resource_created)
            .field("instance", &self.instance)
            .field("wrapped_key", &"<redacted>")
            .finish()
    }
}

/// `attributes` of a secret version, times in Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attributes {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

/// Everything about a secret version but its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    /// The name as first written.
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: Attributes,
}

/// A secret version with its value sealed under the vault's data key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionDoc {
    #[serde(flatten)]
    pub meta: SecretMeta,
    /// `nonce ‖ ciphertext ‖ tag`, base64.
    pub sealed: String,
}

impl fmt::Debug for VersionDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionDoc")
            .field("meta", &self.meta)
            .field("sealed", &"<redacted>")
            .finish()
    }
}

/// A live secret: its latest version's metadata and, when the writer recorded it, that
/// version's sealed value (the same bytes as the version document's). Readers that want
/// only the metadata decode it as a [`SecretMeta`].
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LiveDoc {
    #[serde(flatten)]
    pub meta: SecretMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl LiveDoc {
    /// The live copy of `version`, value included.
    pub fn of(version: &VersionDoc) -> Self {
        Self {
            meta: version.meta.clone(),
            sealed: Some(version.sealed.clone()),
        }
    }

    /// The latest version as a version document, when this copy carries its value.
    pub fn into_version(self) -> Option<VersionDoc> {
        self.sealed.map(|sealed| VersionDoc {
            meta: self.meta,
            sealed,
        })
    }
}

impl fmt::Debug for LiveDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveDoc")
            .field("meta", &self.meta)
            .field("sealed", &self.sealed.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A deleted secret: its latest version's metadata and the retention dates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeletedDoc {
    #[serde(flatten)]
    pub meta: SecretMeta,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

impl DeletedDoc {
    /// Past its scheduled purge date at `now`: to be treated as gone and purged.
    pub fn expired(&self, now: i64) -> bool {
        self.scheduled_purge_date <= now
    }
}

/// The keys of one vault instance's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: String,
}

impl Layout {
    pub fn new(vault: &ResourceId, instance: &str) -> Self {
        Self {
            base: format!("{}/{instance}", vault.key()),
        }
    }

    /// Everything of this instance.
    pub fn all(&self) -> String {
        format!("{}/", self.base)
    }

    pub fn live(&self, name: &SecretName) -> String {
        format!("{}/live/{}", self.base, name.key())
    }

    pub fn live_prefix(&self) -> String {
        format!("{}/live/", self.base)
    }

    pub fn version(&self, name: &SecretName, version: &SecretVersion) -> String {
        format!("{}/versions/{}/{version}", self.base, name.key())
    }

    pub fn versions_prefix(&self, name: &SecretName) -> String {
        format!("{}/versions/{}/", self.base, name.key())
    }

    pub fn deleted(&self, name: &SecretName) -> String {
        format!("{}/deleted/{}", self.base, name.key())
    }

    pub fn deleted_prefix(&self) -> String {
        format!("{}/deleted/", self.base)
    }

    /// Associated data binding a sealed value to its vault instance, secret and version.
    pub fn value_aad(&self, name: &SecretName, version: &SecretVersion) -> Vec<u8> {
        format!("lanyard/kv/value/{}/{}/{version}", self.base, name.key()).into_bytes()
    }
}

/// Associated data binding a wrapped data key to its vault instance.
pub fn data_key_aad(vault: &ResourceId, instance: &str) -> Vec<u8> {
    format!("lanyard/kv/data-key/{}/{instance}", vault.key()).into_bytes()
}

/// Changes that delete every data-plane document of the vaults at or under `scope` (a vault,
/// a resource group or a subscription). For the control plane to add to the batch that
/// deletes them.
pub fn forget_scope(scope: &ResourceId) -> Vec<Change> {
    let under = format!("{}/", scope.key());
    vec![
        Change::DeleteDocument {
            collection: VAULTS.into(),
            key: scope.key().to_string(),
        },
        Change::DeleteDocumentsWithPrefix {
            collection: VAULTS.into(),
            prefix: under.clone(),
        },
        Change::DeleteDocumentsWithPrefix {
            collection: SECRETS.into(),
            prefix: under,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ranges_per_name() {
        let vault = ResourceId::parse(
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV1",
        )
        .unwrap();
        let l = Layout::new(&vault, "i1");
        let a = SecretName::parse("Db").unwrap();
        let v = SecretVersion::parse(&"0".repeat(32)).unwrap();
        assert_eq!(
            l.live(&a),
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv1/i1/live/db"
        );
        assert!(l.version(&a, &v).starts_with(&l.versions_prefix(&a)));
        let ab = SecretName::parse("db2").unwrap();
        assert!(!l.version(&ab, &v).starts_with(&l.versions_prefix(&a)));
        assert!(l.live(&a).starts_with(&l.all()));
        // Dropping a group reaches its vaults' documents.
        let rg = ResourceId::parse("/subscriptions/s/resourceGroups/rg").unwrap();
        let changes = forget_scope(&rg);
        assert!(changes.iter().any(|c| matches!(c,
            Change::DeleteDocumentsWithPrefix { collection, prefix }
                if collection == SECRETS && l.live(&a).starts_with(prefix.as_str()))));
    }

    #[test]
    fn live_docs_read_as_metadata_and_without_the_value() {
        let meta = SecretMeta {
            name: "Db".into(),
            version: "0".repeat(32),
            content_type: None,
            tags: None,
            attributes: Attributes {
                enabled: true,
                nbf: None,
                exp: None,
                created: 1,
                updated: 1,
            },
        };
        let version = VersionDoc {
            meta: meta.clone(),
            sealed: "c2VhbGVk".into(),
        };
        let live = serde_json::to_value(LiveDoc::of(&version)).unwrap();
        // Metadata readers (lists, older servers) see the same metadata.
        assert_eq!(
            serde_json::from_value::<SecretMeta>(live.clone()).unwrap(),
            meta
        );
        let back: LiveDoc = serde_json::from_value(live).unwrap();
        assert_eq!(back.into_version().unwrap(), version);
        // A live document written as bare metadata (before the value was copied) still reads.
        let bare: LiveDoc = serde_json::from_value(serde_json::to_value(&meta).unwrap()).unwrap();
        assert_eq!(bare.sealed, None);
        assert_eq!(bare.into_version(), None);
        assert!(!format!("{:?}", LiveDoc::of(&version)).contains("c2VhbGVk"));
    }

    #[test]
    fn debug_hides_key_material_and_values() {
        let doc = VaultDoc {
            resource_created: 1,
            instance: "i".into(),
            wrapped_key: "c2VjcmV0".into(),
        };
        assert!(!format!("{doc:?}").contains("c2VjcmV0"));
    }
}
