//! Persistence for Lanyard: one trait, two backends, one conformance suite.
//!
//! Layout:
//! - [`model`]: the records, the [`Change`]s a [`Batch`] applies atomically, and queries.
//! - [`Store`] (here): the persistence contract. Writes go only through [`Store::commit`], so
//!   multi-row changes (a resource with its identity and that identity's role assignments)
//!   are one transaction by construction.
//! - [`SqlStore`]: the one implementation of [`Store`], generic over a [`Dialect`]: reads,
//!   transactions (begin, commit or roll back, retry), migrations and the feed's turn, written
//!   once (in the private `sql` module, with the entity reads and writes and the migration
//!   runner, all over a small `Conn` trait every sqlx connection answers).
//! - [`sqlite`]: the embedded dialect ([`SqliteStore`]), one file in the data directory, WAL,
//!   synchronous=FULL, one writer connection beside a pool of readers.
//! - [`postgres`]: the scale-out dialect ([`PgStore`]); portable SQL so PostgreSQL-compatible
//!   distributed databases work too.
//! - `migrations/{sqlite,postgres}/`: schema per dialect, applied at open; the steps are
//!   listed once, in `sql/migrate.rs`.
//! - Documents ([`DocumentRecord`]): records of the data planes (Key Vault secret versions,
//!   blob metadata) addressed by collection and a `/`-separated key; prefixes are ranges.
//! - [`open`]: picks the backend from a URL.
//! - Start-up reads: the authorization index loads from [`Store::scan_assignment_keys`] (one
//!   query over the id, scope, role and principal columns in storage order, rows handed
//!   over as they arrive, no JSON decoded) and [`Store::groups`] (the `kind` column of
//!   principals, migration 0004, finds the groups without reading every principal).
//! - The commit feed ([`FeedEntry`]): every batch holding changes that servers keep in
//!   memory (assignments, role definitions, principals, resources, revocations, signing
//!   keys, documents of [`FOLLOWED_COLLECTIONS`]) appends one entry in the same transaction,
//!   numbered contiguously in commit order on both backends. Servers sharing a database
//!   apply the entries in order to stay in step ([`Store::feed`], [`Store::feed_head`]);
//!   old entries are pruned (the newest 10,000 at least are kept).
//!
//! The conformance suite in `tests/conformance.rs` runs every test on both backends.

pub mod model;
pub mod postgres;
mod sql;
pub mod sqlite;

pub use model::*;
pub use postgres::PgStore;
pub use sql::store::{Dialect, SqlStore};
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use uuid::Uuid;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An [`Expect`] did not hold, or a uniqueness rule was broken. Nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or opened.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The persistence contract. Reads are plain queries; every write is a [`Batch`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` in one transaction: every expectation is checked first, then every
    /// change; on any failure nothing is written. Returns once the write is durable.
    async fn commit(&self, batch: Batch) -> StoreResult<()> {
        self.commit_seq(batch).await.map(|_| ())
    }

    /// [`Store::commit`], returning the sequence number of the feed entry the batch
    /// appended, if it held changes that servers follow ([`FeedChange::of`]).
    async fn commit_seq(&self, batch: Batch) -> StoreResult<Option<u64>>;

    /// Feed entries numbered above `after`, oldest first, at most `limit` of them. Numbers
    /// are contiguous: an entry missing before the first one returned was pruned (see
    /// [`FeedHead::pruned_through`]).
    async fn feed(&self, after: u64, limit: u32) -> StoreResult<Vec<FeedEntry>>;
    /// The newest entry's number and the pruning horizon.
    async fn feed_head(&self) -> StoreResult<FeedHead>;
    /// Deletes every feed entry but the newest `keep` (commits also prune, keeping 10,000).
    async fn prune_feed(&self, keep: u64) -> StoreResult<()>;

    async fn meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>>;

    async fn resource(&self, id: &ResourceId) -> StoreResult<Option<ResourceRecord>>;
    async fn resources(&self, query: &ResourceQuery) -> StoreResult<Vec<ResourceRecord>>;

    async fn principal(&self, object_id: Uuid) -> StoreResult<Option<Principal>>;
    async fn principal_by_client_id(&self, client_id: Uuid) -> StoreResult<Option<Principal>>;
    async fn principals(&self) -> StoreResult<Vec<Principal>>;
    /// Every group principal (with its direct members), by object id; none of the others.
    async fn groups(&self) -> StoreResult<Vec<Principal>>;
    async fn credentials_of(&self, principal: Uuid) -> StoreResult<Vec<CredentialRecord>>;

    /// Custom role definitions (built-ins live in the domain crate).
    async fn role_definitions(&self) -> StoreResult<Vec<RoleDefinition>>;
    async fn assignment(&self, id: Uuid) -> StoreResult<Option<RoleAssignment>>;
    async fn assignments(&self, query: &AssignmentQuery) -> StoreResult<Vec<RoleAssignment>>;
    /// Every role assignment's [`AssignmentKey`], in no set order, each lent to `each` as it
    /// is read: one query, so one consistent snapshot; no stored JSON is decoded, and memory
    /// stays flat whatever the count (the authorization index loads with this). Returns how
    /// many were read.
    async fn scan_assignment_keys(
        &self,
        each: &mut (dyn for<'k> FnMut(&'k AssignmentKey) + Send),
    ) -> StoreResult<u64>;

    /// Every revocation epoch: `(principal, valid_after)`.
    async fn revocations(&self) -> StoreResult<Vec<(Uuid, i64)>>;

    async fn activity(&self, query: &LogQuery) -> StoreResult<Vec<ActivityRecord>>;
    async fn sign_ins(&self, query: &LogQuery) -> StoreResult<Vec<SignInRecord>>;

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;

    async fn document(&self, collection: &str, key: &str) -> StoreResult<Option<DocumentRecord>>;
    async fn documents(&self, query: &DocumentQuery) -> StoreResult<Vec<DocumentRecord>>;

    /// A short name of the backend for logs: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

/// Opens the store named by `url_or_path`: `postgres://` or `postgresql://` for PostgreSQL,
/// `sqlite://path` or a plain file path for SQLite.
pub async fn open(url_or_path: &str) -> StoreResult<Arc<dyn Store>> {
    if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::connect(url_or_path).await?));
    }
    let path = url_or_path
        .strip_prefix("sqlite://")
        .or_else(|| url_or_path.strip_prefix("sqlite:"))
        .unwrap_or(url_or_path);
    if path.is_empty() {
        return Err(StoreError::Unavailable(
            "no database given: expected a file path, `sqlite://path` or `postgres://...`"
                .to_string(),
        ));
    }
    Ok(Arc::new(SqliteStore::open(Path::new(path)).await?))
}
