//! Soft-deleted vaults, as Azure keeps them. Pure: records in, changes and answers out.
//!
//! Deleting a vault (alone, or with its resource group) removes the resource but keeps its
//! data-plane documents and data key, and stores a [`DeletedVaultDoc`] in the
//! [`DELETED_VAULTS`] collection, keyed by the vault's name (lower-cased: names are global),
//! in the same batch. For its retention (`softDeleteRetentionInDays`, 7 to 90, default 90)
//! the record:
//! - reserves the name: a new vault of that name is refused, 409 `ConflictError` in the
//!   same subscription, 409 `VaultAlreadyExists` in another ([`check_create`]);
//! - can be read (`Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`, [`shape`]);
//! - can be recovered by a PUT of the vault with `properties.createMode: "recover"`, which
//!   restores the resource as it was (properties, tags, its `created_at`, so the data-plane
//!   record and data key are its own again: every secret, version and deleted secret reads
//!   back) ([`recover`]);
//! - can be purged, unless purge protection is on ([`check_purge`], [`purge`]): the record,
//!   every data-plane document and the data key go.
//!
//! A record past its `scheduledPurgeDate` is treated as absent everywhere and purged by
//! whoever meets it ([`DeletedVaultDoc::expired`]); there is no timer.

use lanyard_domain::ResourceId;
use lanyard_storage::{Change, DocumentRecord, Expect, ResourceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::vault::{VaultSettings, VAULT_TYPE};

/// The collection of deleted-vault records, keyed by [`key`].
pub const DELETED_VAULTS: &str = "kv-deleted-vaults";
/// `type` of a deleted vault.
pub const DELETED_VAULT_TYPE: &str = "Microsoft.KeyVault/deletedVaults";
/// The action that reads deleted vaults.
pub const READ_ACTION: &str = "Microsoft.KeyVault/locations/deletedVaults/read";
/// The action that purges a deleted vault.
pub const PURGE_ACTION: &str = "Microsoft.KeyVault/locations/deletedVaults/purge/action";
const DAY_SECS: i64 = 24 * 3600;

/// The record kept for a deleted vault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeletedVaultDoc {
    /// The vault's resource id, as it was spelled.
    pub vault_id: String,
    /// The vault's `location`, as it was stored.
    pub location: String,
    /// Unix seconds.
    pub deletion_date: i64,
    /// Unix seconds: `deletion_date` + the vault's retention.
    pub scheduled_purge_date: i64,
    pub purge_protection: bool,
    /// The resource body, restored as it is by a recovery.
    pub resource: Value,
    /// `created_at` of the resource (Unix nanoseconds): the data-plane record is bound to it.
    pub created_at: i128,
}

/// The key of the record of the vault called `name`.
pub fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A location as deleted-vault ids spell it: lower case, no spaces (`West US` → `westus`).
pub fn normalize_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `/subscriptions/{s}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`.
pub fn deleted_vault_id(subscription: &str, location: &str, name: &str) -> ResourceId {
    ResourceId::subscription(subscription)
        .with_provider("Microsoft.KeyVault", "locations", location)
        .with_child("deletedVaults", name)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl DeletedVaultDoc {
    /// The record for deleting `record` (a vault) at `now`.
    pub fn of(record: &ResourceRecord, now: OffsetDateTime) -> Self {
        let settings = VaultSettings::from_body(&record.body, uuid::Uuid::nil());
        let deleted = now.unix_timestamp();
        Self {
            vault_id: record.id.to_string(),
            location: record.body["location"].as_str().unwrap_or_default().into(),
            deletion_date: deleted,
            scheduled_purge_date: deleted + settings.retention_days * DAY_SECS,
            purge_protection: settings.purge_protection,
            resource: record.body.clone(),
            created_at: record.created_at.unix_timestamp_nanos(),
        }
    }

    pub fn from_document(doc: &DocumentRecord) -> Option<Self> {
        serde_json::from_value(doc.body.clone()).ok()
    }

    /// Past its scheduled purge date at `now` (Unix seconds): gone, to be purged.
    pub fn expired(&self, now: i64) -> bool {
        self.scheduled_purge_date <= now
    }

    /// The vault's resource id.
    pub fn vault(&self) -> Option<ResourceId> {
        ResourceId::parse(&self.vault_id).ok()
    }

    pub fn name(&self) -> String {
        self.vault()
            .map(|id| id.name().to_string())
            .unwrap_or_default()
    }

    pub fn subscription(&self) -> String {
        self.vault()
            .and_then(|id| id.subscription_id().map(str::to_string))
            .unwrap_or_default()
    }

    /// Whether this record is the deleted vault `name` in `location` of `subscription`.
    pub fn is(&self, subscription: &str, location: &str, name: &str) -> bool {
        self.subscription().eq_ignore_ascii_case(subscription)
            && normalize_location(&self.location) == normalize_location(location)
            && self.name().eq_ignore_ascii_case(name)
    }

    /// The id this record is known by.
    pub fn id(&self) -> ResourceId {
        deleted_vault_id(
            &self.subscription(),
            &normalize_location(&self.location),
            &self.name(),
        )
    }
}

/// The `DeletedVault` answer.
pub fn shape(doc: &DeletedVaultDoc) -> Value {
    json!({
        "id": doc.id().to_string(),
        "name": doc.name(),
        "type": DELETED_VAULT_TYPE,
        "properties": {
            "vaultId": doc.vault_id,
            "location": normalize_location(&doc.location),
            "deletionDate": rfc3339(doc.deletion_date),
            "scheduledPurgeDate": rfc3339(doc.scheduled_purge_date),
            "tags": doc.resource.get("tags").filter(|t| t.is_object()).cloned().unwrap_or_else(|| json!({})),
            "purgeProtectionEnabled": doc.purge_protection,
        }
    })
}

/// Why a deleted-vault operation, or a vault create, is refused. Messages are whole
/// sentences, as Azure's are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeletedVaultError {
    #[error("The deleted vault '{name}' does not exist in location '{location}'.")]
    NotFound { name: String, location: String },
    #[error("A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault '{0}'.")]
    NameSoftDeleted(String),
    #[error("The vault name '{0}' is already in use. Vault names are globally unique so it is possible that the name is already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same name was recently deleted but not purged after being placed in a recoverable state.")]
    NameInUse(String),
    #[error("A soft deleted vault with the given name does not exist. Ensure that the name for the vault that is being attempted to recover is in a recoverable state: no deleted vault '{0}' of this resource id can be recovered.")]
    NotSoftDeleted(String),
    #[error("Operation 'DeletedVaultPurge' is not allowed. The vault '{name}' has purge protection enabled; it will be purged on its scheduled purge date, {date}.")]
    PurgeProtected { name: String, date: String },
    #[error(
        "The value of 'properties.createMode' is invalid: '{0}' is not 'default' or 'recover'."
    )]
    InvalidCreateMode(String),
}

impl DeletedVaultError {
    /// ARM's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "DeletedVaultNotFound",
            Self::NameSoftDeleted(_) => "ConflictError",
            Self::NameInUse(_) => "VaultAlreadyExists",
            Self::NotSoftDeleted(_) => "SoftDeletedVaultDoesNotExist",
            Self::PurgeProtected { .. } => "MethodNotAllowed",
            Self::InvalidCreateMode(_) => "BadRequest",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::NameSoftDeleted(_) | Self::NameInUse(_) | Self::PurgeProtected { .. } => 409,
            Self::NotSoftDeleted(_) | Self::InvalidCreateMode(_) => 400,
        }
    }
}

/// `properties.createMode` of a vault PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Default,
    Recover,
}

impl CreateMode {
    pub fn of(request: &Value) -> Result<Self, DeletedVaultError> {
        match request.get("properties").and_then(|p| p.get("createMode")) {
            None | Some(Value::Null) => Ok(Self::Default),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("default") => Ok(Self::Default),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("recover") => Ok(Self::Recover),
            Some(other) => Err(DeletedVaultError::InvalidCreateMode(
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
            )),
        }
    }
}

/// What a vault PUT does, given the deleted record of its name (already known unexpired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateDecision {
    /// Create or update as usual.
    Write,
    /// Restore the deleted vault.
    Recover,
}

/// Decides a PUT of the vault `id` with `mode`, when a live vault with this id `exists`
/// and `deleted` is the unexpired deleted record of its name, if any.
pub fn check_create(
    id: &ResourceId,
    mode: CreateMode,
    exists: bool,
    deleted: Option<&DeletedVaultDoc>,
) -> Result<CreateDecision, DeletedVaultError> {
    let same_subscription = |d: &DeletedVaultDoc| {
        id.subscription_id()
            .is_some_and(|s| s.eq_ignore_ascii_case(&d.subscription()))
    };
    match (mode, deleted) {
        (CreateMode::Recover, Some(d)) if !exists && d.vault().as_ref() == Some(id) => {
            Ok(CreateDecision::Recover)
        }
        (CreateMode::Recover, _) => Err(DeletedVaultError::NotSoftDeleted(id.name().into())),
        (CreateMode::Default, Some(d)) if same_subscription(d) => {
            Err(DeletedVaultError::NameSoftDeleted(d.name()))
        }
        (CreateMode::Default, Some(_)) => Err(DeletedVaultError::NameInUse(id.name().into())),
        (CreateMode::Default, None) => Ok(CreateDecision::Write),
    }
}

/// Whether the deleted vault may be purged now.
pub fn check_purge(doc: &DeletedVaultDoc) -> Result<(), DeletedVaultError> {
    if doc.purge_protection {
        return Err(DeletedVaultError::PurgeProtected {
            name: doc.name(),
            date: rfc3339(doc.scheduled_purge_date),
        });
    }
    Ok(())
}

/// Expectations and changes that soft-delete the vaults among `removed` (records a
/// control-plane batch deletes) at `now`. `previous` holds the records already stored under
/// their names (expired ones, or leftovers): each is purged in the same batch, so a name
/// never holds two records and nothing is orphaned.
pub fn soft_delete(
    removed: &[ResourceRecord],
    previous: &[DocumentRecord],
    now: OffsetDateTime,
) -> (Vec<Expect>, Vec<Change>) {
    let mut expect = Vec::new();
    let mut changes = Vec::new();
    for record in removed.iter().filter(|r| r.id.is_type(VAULT_TYPE)) {
        let key = key(record.id.name());
        let version = match previous.iter().find(|p| p.key == key) {
            Some(p) => {
                let (e, c) = purge(p);
                expect.extend(e);
                // The vault's own documents stay, whatever the old record named.
                changes.extend(c.into_iter().filter(|c| {
                    !matches!(c, Change::DeleteDocumentsWithPrefix { prefix, .. }
                        if format!("{}/", record.id.key()).starts_with(prefix.as_str()))
                        && !matches!(c, Change::DeleteDocument { key, .. } if key == record.id.key())
                }));
                p.version + 1
            }
            None => {
                expect.push(Expect::DocumentAbsent {
                    collection: DELETED_VAULTS.into(),
                    key: key.clone(),
                });
                1
            }
        };
        let doc = DeletedVaultDoc::of(record, now);
        changes.push(Change::PutDocument(DocumentRecord {
            collection: DELETED_VAULTS.into(),
            key,
            version,
            body: serde_json::to_value(&doc).unwrap_or(Value::Null),
        }));
    }
    (expect, changes)
}

/// Expectations and changes that purge the deleted vault stored as `stored`: the record,
/// every data-plane document of the vault and its data key.
pub fn purge(stored: &DocumentRecord) -> (Vec<Expect>, Vec<Change>) {
    let expect = vec![Expect::DocumentVersion {
        collection: DELETED_VAULTS.into(),
        key: stored.key.clone(),
        version: stored.version,
    }];
    let mut changes = vec![Change::DeleteDocument {
        collection: DELETED_VAULTS.into(),
        key: stored.key.clone(),
    }];
    if let Some(vault) = DeletedVaultDoc::from_document(stored).and_then(|d| d.vault()) {
        changes.extend(crate::stored::forget_scope(&vault));
    }
    (expect, changes)
}

/// The resource a recovery restores, and the record's removal (expected as read). The
/// record keeps its `created_at`, so the vault's data-plane record and data key are its own.
pub fn recover(
    stored: &DocumentRecord,
    doc: &DeletedVaultDoc,
    now: OffsetDateTime,
) -> Option<(ResourceRecord, Vec<Expect>, Vec<Change>)> {
    let id = doc.vault()?;
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(doc.created_at).ok()?;
    let record = ResourceRecord {
        resource_type: VAULT_TYPE.to_string(),
        id: id.clone(),
        body: doc.resource.clone(),
        created_at,
        updated_at: now.max(created_at),
    };
    let expect = vec![
        Expect::DocumentVersion {
            collection: DELETED_VAULTS.into(),
            key: stored.key.clone(),
            version: stored.version,
        },
        Expect::ResourceAbsent(id),
    ];
    let changes = vec![Change::DeleteDocument {
        collection: DELETED_VAULTS.into(),
        key: stored.key.clone(),
    }];
    Some((record, expect, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::{SECRETS, VAULTS};

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn vault(rg: &str, name: &str, props: Value) -> ResourceRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        ResourceRecord {
            id: ResourceId::parse(&format!(
                "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
            ))
            .unwrap(),
            resource_type: VAULT_TYPE.into(),
            body: json!({"location": "West US", "tags": {"a": "b"}, "properties": props}),
            created_at: t,
            updated_at: t,
        }
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn stored(doc: &DeletedVaultDoc, version: i64) -> DocumentRecord {
        DocumentRecord {
            collection: DELETED_VAULTS.into(),
            key: key(&doc.name()),
            version,
            body: serde_json::to_value(doc).unwrap(),
        }
    }

    #[test]
    fn dates_follow_the_retention_and_expire_on_the_purge_date() {
        let now = 1_700_000_000;
        let d = DeletedVaultDoc::of(&vault("rg", "KV1", json!({})), at(now));
        assert_eq!(d.deletion_date, now);
        assert_eq!(
            d.scheduled_purge_date,
            now + 90 * DAY_SECS,
            "default 90 days"
        );
        assert!(!d.purge_protection);
        let d7 = DeletedVaultDoc::of(
            &vault("rg", "kv1", json!({"softDeleteRetentionInDays": 7})),
            at(now),
        );
        assert_eq!(d7.scheduled_purge_date, now + 7 * DAY_SECS);
        assert!(!d7.expired(now + 7 * DAY_SECS - 1));
        assert!(d7.expired(now + 7 * DAY_SECS));
        assert_eq!(d.created_at, at(1_000).unix_timestamp_nanos());
    }

    #[test]
    fn the_shape_is_azures() {
        let d = DeletedVaultDoc::of(
            &vault(
                "rg",
                "KV1",
                json!({"enablePurgeProtection": true, "softDeleteRetentionInDays": 7}),
            ),
            at(0),
        );
        let v = shape(&d);
        assert_eq!(
            v["id"],
            format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/westus/deletedVaults/KV1")
        );
        assert_eq!(v["name"], "KV1");
        assert_eq!(v["type"], DELETED_VAULT_TYPE);
        let p = &v["properties"];
        assert_eq!(p["vaultId"], d.vault_id.as_str());
        assert_eq!(p["location"], "westus");
        assert_eq!(p["deletionDate"], "1970-01-01T00:00:00Z");
        assert_eq!(p["scheduledPurgeDate"], "1970-01-08T00:00:00Z");
        assert_eq!(p["tags"], json!({"a": "b"}));
        assert_eq!(p["purgeProtectionEnabled"], true);
        assert!(d.is(SUB, "westus", "kv1"));
        assert!(d.is(SUB, "West US", "KV1"));
        assert!(!d.is(SUB, "eastus", "kv1"));
        assert!(!d.is("other", "westus", "kv1"));
    }

    #[test]
    fn purge_protection_refuses_purge() {
        let plain = DeletedVaultDoc::of(&vault("rg", "kv1", json!({})), at(0));
        assert_eq!(check_purge(&plain), Ok(()));
        let protected = DeletedVaultDoc::of(
            &vault("rg", "kv1", json!({"enablePurgeProtection": true})),
            at(0),
        );
        let e = check_purge(&protected).unwrap_err();
        assert_eq!((e.status(), e.code()), (409, "MethodNotAllowed"));
        assert!(e.to_string().contains("DeletedVaultPurge"));
    }

    #[test]
    fn create_modes_against_a_soft_deleted_name() {
        let record = vault("rg", "kv1", json!({}));
        let d = DeletedVaultDoc::of(&record, at(0));
        let id = &record.id;
        assert_eq!(
            check_create(id, CreateMode::Default, false, None),
            Ok(CreateDecision::Write)
        );
        let e = check_create(id, CreateMode::Default, false, Some(&d)).unwrap_err();
        assert_eq!((e.status(), e.code()), (409, "ConflictError"));
        assert!(e.to_string().contains("recover or purge"));
        // The same name in another subscription: taken.
        let elsewhere = ResourceId::parse(
            "/subscriptions/other/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1",
        )
        .unwrap();
        let e = check_create(&elsewhere, CreateMode::Default, false, Some(&d)).unwrap_err();
        assert_eq!((e.status(), e.code()), (409, "VaultAlreadyExists"));
        assert_eq!(
            check_create(id, CreateMode::Recover, false, Some(&d)),
            Ok(CreateDecision::Recover)
        );
        for (target, exists, deleted) in [
            (id, false, None),
            (id, true, None),
            (&elsewhere, false, Some(&d)),
        ] {
            let e = check_create(target, CreateMode::Recover, exists, deleted).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (400, "SoftDeletedVaultDoesNotExist")
            );
        }
        assert_eq!(
            CreateMode::of(&json!({"properties": {"createMode": "Recover"}})),
            Ok(CreateMode::Recover)
        );
        assert_eq!(CreateMode::of(&json!({})), Ok(CreateMode::Default));
        assert!(CreateMode::of(&json!({"properties": {"createMode": "restore"}})).is_err());
    }

    #[test]
    fn soft_delete_keeps_documents_and_purge_removes_them() {
        let record = vault("rg", "KV1", json!({}));
        let other = ResourceRecord {
            id: ResourceId::parse(&format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            ))
            .unwrap(),
            ..record.clone()
        };
        let (expect, changes) = soft_delete(&[record.clone(), other], &[], at(5));
        assert_eq!(
            expect,
            vec![Expect::DocumentAbsent {
                collection: DELETED_VAULTS.into(),
                key: "kv1".into()
            }]
        );
        assert_eq!(changes.len(), 1, "only the record: documents stay");
        let Change::PutDocument(doc) = &changes[0] else {
            panic!("{changes:?}")
        };
        let parsed = DeletedVaultDoc::from_document(doc).unwrap();
        assert_eq!(parsed.vault().unwrap(), record.id);

        let (expect, changes) = purge(doc);
        assert!(matches!(
            &expect[0],
            Expect::DocumentVersion { version: 1, .. }
        ));
        assert!(changes.contains(&Change::DeleteDocument {
            collection: DELETED_VAULTS.into(),
            key: "kv1".into()
        }));
        assert!(changes.iter().any(|c| matches!(c,
            Change::DeleteDocument { collection, key } if collection == VAULTS && key == record.id.key())));
        assert!(changes.iter().any(|c| matches!(c,
            Change::DeleteDocumentsWithPrefix { collection, .. } if collection == SECRETS)));

        // A leftover record of another vault with the name is purged, not the new one's data.
        let old = DeletedVaultDoc::of(&vault("old", "kv1", json!({})), at(0));
        let (expect, changes) =
            soft_delete(std::slice::from_ref(&record), &[stored(&old, 3)], at(5));
        assert!(matches!(
            &expect[0],
            Expect::DocumentVersion { version: 3, .. }
        ));
        assert!(changes.iter().any(|c| matches!(c,
            Change::DeleteDocumentsWithPrefix { prefix, .. } if prefix.contains("/old/"))));
        assert!(!changes.iter().any(|c| matches!(c,
            Change::DeleteDocumentsWithPrefix { prefix, .. } if prefix.contains("/rg/"))));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::PutDocument(d) if d.version == 4)));
    }

    #[test]
    fn recovery_restores_the_resource_with_its_creation_time() {
        let record = vault("rg", "kv1", json!({"enableRbacAuthorization": true}));
        let d = DeletedVaultDoc::of(&record, at(1_500));
        let (restored, expect, changes) = recover(&stored(&d, 1), &d, at(2_000)).unwrap();
        assert_eq!(restored.id, record.id);
        assert_eq!(restored.body, record.body);
        assert_eq!(restored.created_at, record.created_at);
        assert_eq!(restored.updated_at, at(2_000));
        assert!(expect.contains(&Expect::ResourceAbsent(record.id.clone())));
        assert_eq!(changes.len(), 1);
    }
}
