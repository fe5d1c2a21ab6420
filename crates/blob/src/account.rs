//! Storage accounts as resources: the rules the control plane applies to
//! `Microsoft.Storage/storageAccounts`, as pure functions it calls, and the little the blob
//! plane must do around them.
//!
//! - Names: 3 to 24 lower-case letters and digits ([`valid_account_name`]), unique across
//!   the whole installation, as in Azure (they are host names). Uniqueness is enforced by a
//!   registry document `blob.accounts/{name}` written in the same batch as the resource
//!   ([`registration`]): a second account of the same name fails the batch's expectation.
//! - The body: [`complete_body`] fills `kind`, `sku` and `properties` (among them
//!   `primaryEndpoints.blob` = `https://{account}.blob.{domain}:{port}/`);
//!   [`complete_write`] applies it and the registration to the control plane's planned batch.
//! - Deletion: [`removal`] lists the changes that take the registry entry, the containers,
//!   blobs and uncommitted blocks with the account, for the same batch. The content files go
//!   after the commit: [`sweep_accounts`] removes every container directory no container
//!   document names.

use std::collections::HashSet;

use lanyard_domain::ResourceId;
use lanyard_platform::AppState;
use lanyard_storage::{
    Batch, Change, DocumentQuery, DocumentRecord, Expect, ResourceRecord, Store, StoreError,
};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::ContainerDoc;
use crate::names::{account_prefix, ACCOUNTS, BLOBS, BLOCKS, CONTAINERS};

pub const ACCOUNT_TYPE: &str = "Microsoft.Storage/storageAccounts";
pub const NAMESPACE: &str = "Microsoft.Storage";
pub const TYPE_NAME: &str = "storageAccounts";

pub use lanyard_domain::workload::{
    storage_account_name as valid_account_name, STORAGE_ACCOUNT_NAME_RULE as NAME_RULE,
};

/// Why an account cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("`{0}` is not a valid storage account name")]
    InvalidName(String),
    #[error("the storage account name `{0}` is already taken")]
    NameTaken(String),
}

impl AccountError {
    /// The ARM error code.
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::InvalidName(_) => "AccountNameInvalid",
            AccountError::NameTaken(_) => "StorageAccountAlreadyTaken",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AccountError::InvalidName(_) => 400,
            AccountError::NameTaken(_) => 409,
        }
    }

    /// Azure's sentence.
    pub fn message(&self) -> String {
        match self {
            AccountError::InvalidName(name) => {
                format!("{name} is not a valid storage account name. {NAME_RULE}")
            }
            AccountError::NameTaken(name) => {
                format!("The storage account named {name} is already taken.")
            }
        }
    }
}

/// `https://{account}.blob.{domain}[:{port}]/`, given `blob_host` =
/// [`lanyard_platform::Endpoints::blob`] of the account.
pub fn blob_endpoint(blob_host: &str) -> String {
    format!("{}/", blob_host.trim_end_matches('/'))
}

/// Fills what the service sets on an account body it stores and returns: `kind`
/// (`StorageV2` unless given), `sku` (`Standard_LRS` unless given), and in `properties`
/// the endpoints, the primary location and status, the creation time (kept from
/// `existing` on update), the settings this plane enforces, and `provisioningState`.
pub fn complete_body(
    body: &mut Value,
    blob_host: &str,
    created: OffsetDateTime,
    existing: Option<&Value>,
) {
    if !body.get("kind").is_some_and(Value::is_string) {
        body["kind"] = json!("StorageV2");
    }
    let sku_name = body
        .pointer("/sku/name")
        .and_then(Value::as_str)
        .unwrap_or("Standard_LRS")
        .to_string();
    let tier = if sku_name.starts_with("Premium") {
        "Premium"
    } else {
        "Standard"
    };
    body["sku"] = json!({ "name": sku_name, "tier": tier });
    if !body.get("properties").is_some_and(Value::is_object) {
        body["properties"] = json!({});
    }
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let creation_time = existing
        .and_then(|e| e.pointer("/properties/creationTime"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| created.format(&Rfc3339).ok())
        .unwrap_or_default();
    let props = &mut body["properties"];
    props["primaryEndpoints"] = json!({ "blob": blob_endpoint(blob_host) });
    props["primaryLocation"] = json!(location);
    props["statusOfPrimary"] = json!("available");
    props["creationTime"] = json!(creation_time);
    // What this plane enforces, stated so clients see it.
    props["allowSharedKeyAccess"] = json!(false);
    props["allowBlobPublicAccess"] = json!(false);
    props["supportsHttpsTrafficOnly"] = json!(true);
    props["minimumTlsVersion"] = json!("TLS1_2");
    if !props.get("accessTier").is_some_and(Value::is_string) {
        props["accessTier"] = json!("Hot");
    }
    props["provisioningState"] = json!("Succeeded");
}

/// What writing account `id` adds to the control plane's batch, given the registry entry
/// of its name as read (`holder`): the entry, guarded so that two accounts can never hold
/// one name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registration {
    pub expect: Vec<Expect>,
    pub changes: Vec<Change>,
}

pub fn registration(
    id: &ResourceId,
    holder: Option<&DocumentRecord>,
) -> Result<Registration, AccountError> {
    let name = id.name();
    if !valid_account_name(name) {
        return Err(AccountError::InvalidName(name.to_string()));
    }
    match holder {
        None => Ok(Registration {
            expect: vec![Expect::DocumentAbsent {
                collection: ACCOUNTS.into(),
                key: name.into(),
            }],
            changes: vec![Change::PutDocument(DocumentRecord {
                collection: ACCOUNTS.into(),
                key: name.into(),
                version: 1,
                body: json!({ "id": id.to_string() }),
            })],
        }),
        Some(doc) => {
            let holds = doc
                .body
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| ResourceId::parse(s).ok())
                .is_some_and(|held| held == *id);
            if !holds {
                return Err(AccountError::NameTaken(name.to_string()));
            }
            Ok(Registration {
                expect: vec![Expect::DocumentVersion {
                    collection: ACCOUNTS.into(),
                    key: name.into(),
                    version: doc.version,
                }],
                changes: Vec::new(),
            })
        }
    }
}

/// Completes the control plane's planned write of account `id`: fills the body of its
/// record in `batch` (see [`complete_body`]; the creation time is the record's) and the
/// `answer` with it, and adds `registration` to the batch.
pub fn complete_write(
    batch: &mut Batch,
    answer: Option<&mut Value>,
    id: &ResourceId,
    registration: Registration,
    blob_host: &str,
) {
    let mut completed = None;
    for change in &mut batch.changes {
        if let Change::PutResource(record) = change {
            if record.id == *id {
                complete_body(&mut record.body, blob_host, record.created_at, None);
                completed = Some(record.body.clone());
            }
        }
    }
    if let (Some(answer), Some(body)) = (answer, completed) {
        *answer = body;
    }
    batch.expect.extend(registration.expect);
    batch.changes.extend(registration.changes);
}

/// The registry entry of `name`, to pass to [`registration`].
pub async fn holder(store: &dyn Store, name: &str) -> Result<Option<DocumentRecord>, StoreError> {
    store.document(ACCOUNTS, name).await
}

/// What deleting `removed` (any resources) takes from the blob plane, for the same batch:
/// for each storage account among them, its registry entry, containers, blobs and blocks.
pub fn removal(removed: &[ResourceRecord]) -> Vec<Change> {
    let mut out = Vec::new();
    for record in removed.iter().filter(|r| r.id.is_type(ACCOUNT_TYPE)) {
        let name = record.id.name();
        out.push(Change::DeleteDocument {
            collection: ACCOUNTS.into(),
            key: name.into(),
        });
        for collection in [CONTAINERS, BLOBS, BLOCKS] {
            out.push(Change::DeleteDocumentsWithPrefix {
                collection: collection.into(),
                prefix: account_prefix(name),
            });
        }
    }
    out
}

/// Whether any of `removed` is a storage account (then call [`sweep_accounts`] after the
/// commit).
pub fn removes_accounts(removed: &[ResourceRecord]) -> bool {
    removed.iter().any(|r| r.id.is_type(ACCOUNT_TYPE))
}

/// Every container directory name that a container document names.
pub(crate) async fn container_dirs(store: &dyn Store) -> Result<HashSet<String>, StoreError> {
    let mut dirs = HashSet::new();
    let mut after = None;
    loop {
        let page = store
            .documents(&DocumentQuery {
                collection: CONTAINERS.into(),
                prefix: None,
                after: after.clone(),
                limit: Some(PAGE),
            })
            .await?;
        for doc in &page {
            match ContainerDoc::deserialize(&doc.body) {
                Ok(c) => {
                    dirs.insert(c.dir);
                }
                Err(e) => {
                    return Err(StoreError::Corrupt(format!(
                        "container document `{}`: {e}",
                        doc.key
                    )))
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.key.clone()),
            _ => return Ok(dirs),
        }
    }
}

/// Documents are read in pages of this many.
pub(crate) const PAGE: u32 = 1000;

/// After a commit that deleted storage accounts: removes, in the background, the content
/// of every container no document names any more.
///
/// Safe while requests run: the directories are listed before the documents are read, and
/// a container's directory is created only after its document was committed, so a listed
/// directory whose document is missing belongs to a container that is gone.
pub fn sweep_accounts(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let files = crate::plane::file_store(&state);
        let listed = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || files.dirs()).await
        };
        let listed = match listed {
            Ok(Ok(dirs)) => dirs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list blob directories");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list blob directories");
                return;
            }
        };
        let referenced = match container_dirs(state.store.as_ref()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read containers; blob files of deleted accounts stay until the next start");
                return;
            }
        };
        let gone: Vec<String> = listed
            .into_iter()
            .filter(|d| !referenced.contains(d))
            .collect();
        for dir in &gone {
            files.discard_dir(dir);
        }
        if !gone.is_empty() {
            tracing::info!(
                containers = gone.len(),
                "removed the blob content of deleted storage accounts"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ID: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct1";

    fn record(id: &str) -> ResourceRecord {
        let id = ResourceId::parse(id).unwrap();
        ResourceRecord {
            resource_type: id.resource_type(),
            id,
            body: json!({}),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn account_names() {
        assert!(valid_account_name("abc"));
        assert!(valid_account_name("acct1234567890abcdefghij"));
        assert!(!valid_account_name("ab"));
        assert!(!valid_account_name("acct1234567890abcdefghijk"));
        assert!(!valid_account_name("Acct"));
        assert!(!valid_account_name("my-acct"));
        assert!(!valid_account_name("my_acct"));
    }

    #[test]
    fn body_gets_its_endpoints_and_defaults() {
        let mut body = json!({"location": "westeurope", "properties": {"accessTier": "Cool"}});
        let created = datetime!(2024-05-06 07:08:09 UTC);
        complete_body(
            &mut body,
            "https://acct1.blob.lanyard.localhost:8443",
            created,
            None,
        );
        assert_eq!(
            body["properties"]["primaryEndpoints"]["blob"],
            "https://acct1.blob.lanyard.localhost:8443/"
        );
        assert_eq!(body["kind"], "StorageV2");
        assert_eq!(
            body["sku"],
            json!({"name": "Standard_LRS", "tier": "Standard"})
        );
        assert_eq!(body["properties"]["accessTier"], "Cool");
        assert_eq!(body["properties"]["primaryLocation"], "westeurope");
        assert_eq!(body["properties"]["provisioningState"], "Succeeded");
        assert_eq!(body["properties"]["creationTime"], "2024-05-06T07:08:09Z");
        // An update keeps the creation time.
        let existing = body.clone();
        let mut next = json!({"location": "westeurope", "sku": {"name": "Premium_LRS"}});
        complete_body(
            &mut next,
            "https://acct1.blob.lanyard.localhost",
            created + time::Duration::days(1),
            Some(&existing),
        );
        assert_eq!(next["properties"]["creationTime"], "2024-05-06T07:08:09Z");
        assert_eq!(next["sku"]["tier"], "Premium");
        assert_eq!(
            next["properties"]["primaryEndpoints"]["blob"],
            "https://acct1.blob.lanyard.localhost/"
        );
    }

    #[test]
    fn names_are_registered_once() {
        let id = ResourceId::parse(ID).unwrap();
        let fresh = registration(&id, None).unwrap();
        assert_eq!(
            fresh.expect,
            vec![Expect::DocumentAbsent {
                collection: ACCOUNTS.into(),
                key: "acct1".into()
            }]
        );
        let Change::PutDocument(doc) = &fresh.changes[0] else {
            panic!("{:?}", fresh.changes);
        };
        // The same account again (an update, in any casing): only the guard.
        let upper = ResourceId::parse(&ID.to_uppercase().replace("ACCT1", "acct1")).unwrap();
        let update = registration(&upper, Some(doc)).unwrap();
        assert!(update.changes.is_empty());
        assert_eq!(update.expect.len(), 1);
        // Another account with that name.
        let other = ResourceId::parse(&ID.replace("/rg/", "/other/")).unwrap();
        let taken = registration(&other, Some(doc)).unwrap_err();
        assert_eq!(taken.code(), "StorageAccountAlreadyTaken");
        assert_eq!(taken.status(), 409);
        let bad = ResourceId::parse(&ID.replace("acct1", "Bad-Name")).unwrap();
        assert_eq!(
            registration(&bad, None).unwrap_err().code(),
            "AccountNameInvalid"
        );
    }

    #[test]
    fn completes_a_planned_write() {
        let id = ResourceId::parse(ID).unwrap();
        let mut record = record(ID);
        record.body = json!({"name": "acct1", "location": "local"});
        record.created_at = datetime!(2024-05-06 07:08:09 UTC);
        let mut batch = Batch::new().with(Change::PutResource(record));
        let mut answer = json!({"name": "acct1"});
        let registration = registration(&id, None).unwrap();
        complete_write(
            &mut batch,
            Some(&mut answer),
            &id,
            registration,
            "https://acct1.blob.x:1",
        );
        assert_eq!(
            answer["properties"]["primaryEndpoints"]["blob"],
            "https://acct1.blob.x:1/"
        );
        assert_eq!(answer["properties"]["creationTime"], "2024-05-06T07:08:09Z");
        let Change::PutResource(stored) = &batch.changes[0] else {
            panic!()
        };
        assert_eq!(stored.body, answer);
        assert_eq!(batch.expect.len(), 1);
        assert!(matches!(&batch.changes[1], Change::PutDocument(d) if d.key == "acct1"));
    }

    #[test]
    fn removal_takes_the_accounts_data() {
        let removed = [
            record(ID),
            record("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"),
        ];
        assert!(removes_accounts(&removed));
        assert!(!removes_accounts(&removed[1..]));
        let changes = removal(&removed);
        assert_eq!(changes.len(), 4);
        assert!(changes.contains(&Change::DeleteDocument {
            collection: ACCOUNTS.into(),
            key: "acct1".into()
        }));
        assert!(changes.contains(&Change::DeleteDocumentsWithPrefix {
            collection: BLOBS.into(),
            prefix: "acct1/".into()
        }));
    }
}
