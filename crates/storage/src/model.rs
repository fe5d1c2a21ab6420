//! What the store holds, and the one way to change it: a [`Batch`] of [`Change`]s applied in
//! one transaction, guarded by [`Expect`]ations.
//!
//! Records that only one part of the system interprets (signing keys, credentials, resource
//! bodies) are kept as opaque JSON: the store never looks inside them.
//!
//! A batch holding changes that servers keep in memory also appends a [`FeedEntry`] (what
//! [`FeedChange::of`] keeps of each change) to the commit feed, in the same transaction.

use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// An ARM resource of any type: resource groups, compute resources, identities, vaults,
/// storage accounts, and child resources such as federated identity credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub id: ResourceId,
    /// The ARM type as first written, e.g. `Microsoft.Compute/virtualMachines`.
    pub resource_type: String,
    /// The resource as the control plane returns it (minus per-request fields).
    pub body: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A credential of a service principal. `body` is interpreted by the token service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: Uuid,
    pub principal_id: Uuid,
    /// `secret`, `certificate` or `federated`.
    pub kind: String,
    pub body: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One entry of the activity log: every write and every denied attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Object id of the caller, when known.
    pub caller: Option<Uuid>,
    /// e.g. `Microsoft.Compute/virtualMachines/write`.
    pub operation: String,
    /// The resource or scope acted on.
    pub scope: ResourceId,
    /// `Succeeded`, `Failed`.
    pub status: String,
    pub http_status: u16,
    pub correlation_id: String,
    /// Request body, kept for role assignment writes.
    pub body: Option<serde_json::Value>,
}

/// One token issued or refused by the token service or an identity endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInRecord {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub principal_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    /// The resource (audience) asked for.
    pub resource: String,
    /// `token_endpoint`, `imds`, `app_service`, ...
    pub source: String,
    /// The workload session that asked, on identity endpoints.
    pub session: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    pub reason: Option<String>,
}

/// A signing key as the token service persists it (sealed under the key-encryption key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub body: serde_json::Value,
}

/// A record of a data plane (a Key Vault secret version, a blob's metadata), addressed by
/// `collection` and a `/`-separated `key` the plane chooses so that prefixes list what it
/// needs. `version` is the plane's optimistic-concurrency token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub collection: String,
    pub key: String,
    pub version: i64,
    pub body: serde_json::Value,
}

/// Which documents to list. Results are ordered by key (bytewise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentQuery {
    pub collection: String,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Paging: only keys sorting after this one.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutMeta {
        key: String,
        value: String,
    },
    PutTenant(Tenant),
    PutSubscription(Subscription),
    /// Insert or replace by id.
    PutResource(ResourceRecord),
    DeleteResource(ResourceId),
    /// Deletes every resource strictly below `scope` (a group's contents, a resource's children).
    DeleteResourcesWithin(ResourceId),
    /// Insert or replace by object id.
    PutPrincipal(Principal),
    DeletePrincipal(Uuid),
    PutCredential(CredentialRecord),
    DeleteCredential(Uuid),
    DeleteCredentialsOf(Uuid),
    /// Custom role definitions; insert or replace by id.
    PutRoleDefinition(RoleDefinition),
    DeleteRoleDefinition(Uuid),
    /// Insert or replace by id. A second assignment with the same (scope, role, principal)
    /// under another id fails the batch with [`crate::StoreError::Conflict`].
    PutAssignment(RoleAssignment),
    DeleteAssignment(Uuid),
    DeleteAssignmentsOfPrincipal(Uuid),
    /// Deletes assignments at `scope` or below it.
    DeleteAssignmentsWithin(ResourceId),
    /// Tokens of `principal` issued before `valid_after` (unix seconds) are refused. Kept
    /// after the principal is deleted.
    SetRevocation {
        principal: Uuid,
        valid_after: i64,
    },
    AppendActivity(ActivityRecord),
    AppendSignIn(SignInRecord),
    PutKey(KeyRecord),
    DeleteKey(String),
    /// Insert or replace by (collection, key).
    PutDocument(DocumentRecord),
    DeleteDocument {
        collection: String,
        key: String,
    },
    /// Deletes every document of `collection` whose key starts with `prefix`.
    DeleteDocumentsWithPrefix {
        collection: String,
        prefix: String,
    },
}

/// A condition checked inside the transaction before any change applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The meta entry `key` holds exactly `value` (`None`: there is none). A version kept
    /// in meta guards records that several servers rewrite together (the signing keys).
    MetaIs {
        key: String,
        value: Option<String>,
    },
    ResourceAbsent(ResourceId),
    ResourceExists(ResourceId),
    /// The resource exists and its `updated_at` is exactly this (optimistic concurrency).
    ResourceUnchanged(ResourceId, OffsetDateTime),
    PrincipalExists(Uuid),
    DocumentAbsent {
        collection: String,
        key: String,
    },
    /// The document exists with exactly this version.
    DocumentVersion {
        collection: String,
        key: String,
        version: i64,
    },
}

/// Changes applied atomically: all or none, after every expectation held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub expect: Vec<Expect>,
    pub changes: Vec<Change>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn expect(mut self, e: Expect) -> Self {
        self.expect.push(e);
        self
    }

    pub fn push(&mut self, c: Change) {
        self.changes.push(c);
    }

    pub fn with(mut self, c: Change) -> Self {
        self.changes.push(c);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.expect.is_empty() && self.changes.is_empty()
    }
}

/// Which resources to list. Results are ordered by lower-cased id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceQuery {
    /// Only resources strictly below this scope.
    pub within: Option<ResourceId>,
    /// Only resources whose direct parent is this id.
    pub parent: Option<ResourceId>,
    /// Only this ARM type, compared case-insensitively.
    pub resource_type: Option<String>,
    /// Paging: only ids whose key sorts after this one.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// What the authorization index needs of a role assignment: its id, scope, role and
/// principal (see [`Store::scan_assignment_keys`](crate::Store::scan_assignment_keys)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentKey {
    pub id: Uuid,
    pub scope: ResourceId,
    pub role_definition_id: Uuid,
    pub principal_id: Uuid,
}

impl From<&RoleAssignment> for AssignmentKey {
    fn from(a: &RoleAssignment) -> Self {
        Self {
            id: a.id,
            scope: a.scope.clone(),
            role_definition_id: a.role_definition_id,
            principal_id: a.principal_id,
        }
    }
}

/// Which role assignments to list. Results are ordered by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssignmentQuery {
    pub principal: Option<Uuid>,
    /// Assignments at this scope or any scope above it.
    pub at_or_above: Option<ResourceId>,
    /// Assignments at this scope or any scope below it.
    pub at_or_below: Option<ResourceId>,
    pub role_definition: Option<Uuid>,
    /// Paging: only ids sorting after this one.
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A window of the activity or sign-in log, newest first (ties broken by id, descending).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Only entries at or after this time (inclusive).
    pub from: Option<OffsetDateTime>,
    /// Only entries at or before this time (inclusive).
    pub to: Option<OffsetDateTime>,
    /// Activity: entries whose scope is at or below this one. Ignored for sign-ins.
    pub within: Option<ResourceId>,
    /// Sign-ins: entries about this principal. Activity: entries whose caller it is.
    pub principal: Option<Uuid>,
    pub limit: Option<u32>,
}

/// The document collection of per-host revocations (an identity detached from one resource).
pub const HOST_REVOCATIONS: &str = "host-revocations";

/// Document collections whose writes are in the commit feed: what servers keep in memory.
/// Every other collection (secrets, blobs) is read from the store when needed.
pub const FOLLOWED_COLLECTIONS: &[&str] = &[HOST_REVOCATIONS];

/// One entry of the commit feed: the changes of one committed batch that servers keep in
/// memory, numbered in commit order (see [`crate::Store::feed`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Contiguous from 1, in commit order.
    pub seq: u64,
    pub changes: Vec<FeedChange>,
}

/// Where the feed stands: the last number given, and how far old entries were pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedHead {
    /// The sequence number of the newest entry (0: none yet).
    pub seq: u64,
    /// Every entry numbered at or below this was pruned. A follower whose position is below
    /// it has missed entries and must reload what it keeps from the store.
    pub pruned_through: u64,
}

/// What a feed entry records of one [`Change`]: only what a follower needs. Resources and
/// keys are named, not copied (a follower reloads keys and only learns that resources
/// changed); assignments and role definitions are copied, as the authorization index holds
/// them; principals carry their group members, the only part the index keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "of", rename_all = "camelCase")]
pub enum FeedChange {
    PutResource(ResourceId),
    DeleteResource(ResourceId),
    DeleteResourcesWithin(ResourceId),
    PutPrincipal {
        object_id: Uuid,
        /// The members, when the principal is a group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members: Option<Vec<Uuid>>,
    },
    DeletePrincipal(Uuid),
    PutRoleDefinition(RoleDefinition),
    DeleteRoleDefinition(Uuid),
    PutAssignment(RoleAssignment),
    DeleteAssignment(Uuid),
    DeleteAssignmentsOfPrincipal(Uuid),
    DeleteAssignmentsWithin(ResourceId),
    SetRevocation {
        principal: Uuid,
        valid_after: i64,
    },
    PutKey(String),
    DeleteKey(String),
    /// A document of a [`FOLLOWED_COLLECTIONS`] collection (they are small).
    PutDocument(DocumentRecord),
    DeleteDocument {
        collection: String,
        key: String,
    },
    DeleteDocumentsWithPrefix {
        collection: String,
        prefix: String,
    },
}

impl FeedChange {
    /// What the feed records of `change`; `None` when no follower needs it (logs, meta,
    /// tenants, credentials, documents of collections nobody follows).
    pub fn of(change: &Change) -> Option<FeedChange> {
        let followed = |collection: &str| FOLLOWED_COLLECTIONS.contains(&collection);
        Some(match change {
            Change::PutResource(r) => FeedChange::PutResource(r.id.clone()),
            Change::DeleteResource(id) => FeedChange::DeleteResource(id.clone()),
            Change::DeleteResourcesWithin(id) => FeedChange::DeleteResourcesWithin(id.clone()),
            Change::PutPrincipal(p) => FeedChange::PutPrincipal {
                object_id: p.object_id,
                members: match &p.kind {
                    lanyard_domain::PrincipalKind::Group { members } => Some(members.clone()),
                    _ => None,
                },
            },
            Change::DeletePrincipal(id) => FeedChange::DeletePrincipal(*id),
            Change::PutRoleDefinition(d) => FeedChange::PutRoleDefinition(d.clone()),
            Change::DeleteRoleDefinition(id) => FeedChange::DeleteRoleDefinition(*id),
            Change::PutAssignment(a) => FeedChange::PutAssignment(a.clone()),
            Change::DeleteAssignment(id) => FeedChange::DeleteAssignment(*id),
            Change::DeleteAssignmentsOfPrincipal(id) => {
                FeedChange::DeleteAssignmentsOfPrincipal(*id)
            }
            Change::DeleteAssignmentsWithin(scope) => {
                FeedChange::DeleteAssignmentsWithin(scope.clone())
            }
            Change::SetRevocation {
                principal,
                valid_after,
            } => FeedChange::SetRevocation {
                principal: *principal,
                valid_after: *valid_after,
            },
            Change::PutKey(k) => FeedChange::PutKey(k.kid.clone()),
            Change::DeleteKey(kid) => FeedChange::DeleteKey(kid.clone()),
            Change::PutDocument(doc) if followed(&doc.collection) => {
                FeedChange::PutDocument(doc.clone())
            }
            Change::DeleteDocument { collection, key } if followed(collection) => {
                FeedChange::DeleteDocument {
                    collection: collection.clone(),
                    key: key.clone(),
                }
            }
            Change::DeleteDocumentsWithPrefix { collection, prefix } if followed(collection) => {
                FeedChange::DeleteDocumentsWithPrefix {
                    collection: collection.clone(),
                    prefix: prefix.clone(),
                }
            }
            Change::PutMeta { .. }
            | Change::PutTenant(_)
            | Change::PutSubscription(_)
            | Change::PutCredential(_)
            | Change::DeleteCredential(_)
            | Change::DeleteCredentialsOf(_)
            | Change::AppendActivity(_)
            | Change::AppendSignIn(_)
            | Change::PutDocument(_)
            | Change::DeleteDocument { .. }
            | Change::DeleteDocumentsWithPrefix { .. } => return None,
        })
    }

    /// What the feed records of `batch`: empty when the batch appends no entry.
    pub fn of_batch(batch: &Batch) -> Vec<FeedChange> {
        batch.changes.iter().filter_map(FeedChange::of).collect()
    }
}
