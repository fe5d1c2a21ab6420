//! [`SqlStore`]: the one implementation of [`Store`], over a [`Dialect`].
//!
//! Reads take a connection from the reader pool and run the shared query of [`read`]. Every
//! write (a batch, pruning the feed, the migrations) is one transaction, opened the dialect's
//! way, committed or rolled back here; a batch is tried again while the dialect calls its
//! failure transient. The dialects (`crate::sqlite`, `crate::postgres`) supply only what
//! differs: connecting and setting up the pools, the statement that opens each kind of
//! transaction, what the database's error codes mean, the retry policy, the migration
//! scripts, and whether appends to the commit feed queue inside the process.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use sqlx::error::DatabaseError;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::migrate::{self, Migration};
use super::{detail, read, write, Conn, Error};
use crate::{
    ActivityRecord, AssignmentKey, AssignmentQuery, Batch, CredentialRecord, DocumentQuery,
    DocumentRecord, FeedChange, FeedEntry, FeedHead, KeyRecord, LogQuery, ResourceQuery,
    ResourceRecord, SignInRecord, Store, StoreError, StoreResult,
};

mod sealed {
    /// Only this crate's dialects exist.
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// What differs between the SQL databases a [`SqlStore`] runs on; everything else is written
/// once. Implemented by [`Sqlite`](crate::sqlite::Sqlite) and
/// [`Postgres`](crate::postgres::Postgres), whose value is where the database is (for
/// messages, never a password).
pub trait Dialect: Sealed + fmt::Debug + fmt::Display + Send + Sync + Sized + 'static {
    /// The sqlx driver.
    type Db: Database<Connection: Conn>;
    /// The backend's short name for logs ([`Store::backend`]).
    const NAME: &'static str;
    /// The schema, in this dialect's scripts, applied at open.
    const MIGRATIONS: &'static [Migration];
    /// Opens the transaction of a batch.
    const BEGIN_WRITE: &'static str;
    /// Opens the transaction that prunes the commit feed.
    const BEGIN_PRUNE: &'static str;
    /// Opens the transaction of the migrations.
    const BEGIN_MIGRATE: &'static str;
    /// Whether the batches that append to the commit feed, and pruning, take turns inside
    /// the process before they begin (they would be serialized on the feed head row anyway).
    const QUEUE_FEED_APPENDS: bool;
    /// Tries per batch while it fails with a [`Dialect::retryable`] error.
    const COMMIT_ATTEMPTS: u32;
    /// Tries for the migrations while they fail with a database error: another process may
    /// be migrating the same database at the same moment.
    const MIGRATE_ATTEMPTS: u32;

    /// Whether the error is a transient failure to serialize that trying again can cure.
    fn retryable(db: &dyn DatabaseError) -> bool;

    /// What the database's own error codes mean; the codes both databases share (a unique
    /// key broken: a conflict) fall back to one classification.
    fn classify(db: &dyn DatabaseError) -> StoreError;
}

/// A [`Store`] in a SQL database: [`SqliteStore`](crate::SqliteStore) and
/// [`PgStore`](crate::PgStore).
pub struct SqlStore<D: Dialect> {
    /// Where the transactions run.
    pub(crate) writer: Pool<D::Db>,
    /// Where the reads run (the writer's pool again when the dialect needs no split).
    pub(crate) readers: Pool<D::Db>,
    /// The turn of feed appends, when [`Dialect::QUEUE_FEED_APPENDS`].
    feed_appends: Mutex<()>,
    pub(crate) dialect: D,
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store over pools the dialect has set up, on a database already migrated.
    pub(crate) fn new(dialect: D, writer: Pool<D::Db>, readers: Pool<D::Db>) -> Self {
        Self {
            writer,
            readers,
            feed_appends: Mutex::new(()),
            dialect,
        }
    }

    /// Closes every connection, waiting for them to finish. Later calls fail as unavailable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    async fn reader(&self) -> StoreResult<PoolConnection<D::Db>> {
        self.readers
            .acquire()
            .await
            .map_err(|e| map_error::<D>(e.into()))
    }

    /// This process's turn to append `batch` to the feed (or to prune it, `batch` none), if
    /// the dialect queues those here and the batch appends at all.
    async fn feed_turn(&self, batch: Option<&Batch>) -> Option<MutexGuard<'_, ()>> {
        if !D::QUEUE_FEED_APPENDS {
            return None;
        }
        let appends =
            batch.is_none_or(|batch| batch.changes.iter().any(|c| FeedChange::of(c).is_some()));
        if appends {
            Some(self.feed_appends.lock().await)
        } else {
            None
        }
    }

    async fn try_commit(&self, batch: &Batch) -> Result<Option<u64>, Error> {
        let mut tx = self.writer.begin_with(D::BEGIN_WRITE).await?;
        let applied = write::apply(&mut *tx, batch).await;
        finish::<D, _>(tx, applied).await
    }

    async fn try_prune(&self, keep: u64) -> Result<(), Error> {
        let mut tx = self.writer.begin_with(D::BEGIN_PRUNE).await?;
        let pruned = write::prune_feed(&mut *tx, keep).await;
        finish::<D, _>(tx, pruned).await
    }
}

/// Commits `tx` if `result` is a success, else rolls it back and returns the failure.
async fn finish<D: Dialect, T>(
    tx: Transaction<'_, D::Db>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(backend = D::NAME, error = %map_error::<D>(e.into()), "rollback failed");
            }
            Err(e)
        }
    }
}

/// Brings the schema on `c` up to date in one transaction. When another process migrates
/// the same database at the same moment, one of the two fails; it looks again (as often as
/// the dialect allows) and finds the work done. Any failure is unavailable, naming `dialect`.
pub(crate) async fn migrate<D: Dialect>(
    dialect: &D,
    c: &mut <D::Db as Database>::Connection,
) -> StoreResult<()> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = c.begin_with(D::BEGIN_MIGRATE).await?;
            let applied = migrate::apply(&mut *tx, D::MIGRATIONS).await;
            finish::<D, _>(tx, applied).await
        }
        .await;
        match result {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(backend = D::NAME, ?applied, "schema migrated");
                }
                return Ok(());
            }
            Err(Error::Sql(sqlx::Error::Database(db))) if attempt < D::MIGRATE_ATTEMPTS => {
                tracing::debug!(code = ?db.code(), attempt, "migration failed, looking again");
                attempt += 1;
            }
            Err(e) => {
                return Err(match map_error::<D>(e) {
                    e @ StoreError::Unavailable(_) => e,
                    other => StoreError::Unavailable(format!(
                        "cannot migrate {dialect}: {}",
                        detail(other)
                    )),
                })
            }
        }
    }
}

/// Maps a failure to a [`StoreError`] with the dialect's classification of its codes.
pub(crate) fn map_error<D: Dialect>(e: Error) -> StoreError {
    super::map_error(e, D::classify)
}

fn retryable<D: Dialect>(e: &Error) -> bool {
    matches!(e, Error::Sql(sqlx::Error::Database(db)) if D::retryable(db.as_ref()))
}

/// Exponential backoff from 5 ms, capped at 320 ms, with jitter so retries spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let jitter = (Uuid::new_v4().as_u128() % u128::from(base)) as u64;
    Duration::from_millis(base + jitter)
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D> {
    async fn commit_seq(&self, batch: Batch) -> StoreResult<Option<u64>> {
        if batch.is_empty() {
            return Ok(None);
        }
        let _turn = self.feed_turn(Some(&batch)).await;
        let mut attempt = 1;
        loop {
            match self.try_commit(&batch).await {
                Err(e) if retryable::<D>(&e) && attempt < D::COMMIT_ATTEMPTS => {
                    tracing::debug!(attempt, "batch failed to serialize, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) if retryable::<D>(&e) => {
                    return Err(StoreError::Database(format!(
                        "gave up after {attempt} attempts: {}",
                        map_error::<D>(e)
                    )));
                }
                result => return result.map_err(map_error::<D>),
            }
        }
    }

    async fn feed(&self, after: u64, limit: u32) -> StoreResult<Vec<FeedEntry>> {
        read::feed(&mut *self.reader().await?, after, limit)
            .await
            .map_err(map_error::<D>)
    }

    async fn feed_head(&self) -> StoreResult<FeedHead> {
        read::feed_head(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn prune_feed(&self, keep: u64) -> StoreResult<()> {
        let _turn = self.feed_turn(None).await;
        self.try_prune(keep).await.map_err(map_error::<D>)
    }

    async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        read::meta(&mut *self.reader().await?, key)
            .await
            .map_err(map_error::<D>)
    }

    async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        read::tenants(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        read::subscriptions(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn resource(&self, id: &ResourceId) -> StoreResult<Option<ResourceRecord>> {
        read::resource(&mut *self.reader().await?, id)
            .await
            .map_err(map_error::<D>)
    }

    async fn resources(&self, query: &ResourceQuery) -> StoreResult<Vec<ResourceRecord>> {
        read::resources(&mut *self.reader().await?, query)
            .await
            .map_err(map_error::<D>)
    }

    async fn principal(&self, object_id: Uuid) -> StoreResult<Option<Principal>> {
        read::principal(&mut *self.reader().await?, object_id)
            .await
            .map_err(map_error::<D>)
    }

    async fn principal_by_client_id(&self, client_id: Uuid) -> StoreResult<Option<Principal>> {
        read::principal_by_client_id(&mut *self.reader().await?, client_id)
            .await
            .map_err(map_error::<D>)
    }

    async fn principals(&self) -> StoreResult<Vec<Principal>> {
        read::principals(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn groups(&self) -> StoreResult<Vec<Principal>> {
        read::groups(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn credentials_of(&self, principal: Uuid) -> StoreResult<Vec<CredentialRecord>> {
        read::credentials_of(&mut *self.reader().await?, principal)
            .await
            .map_err(map_error::<D>)
    }

    async fn role_definitions(&self) -> StoreResult<Vec<RoleDefinition>> {
        read::role_definitions(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn assignment(&self, id: Uuid) -> StoreResult<Option<RoleAssignment>> {
        read::assignment(&mut *self.reader().await?, id)
            .await
            .map_err(map_error::<D>)
    }

    async fn assignments(&self, query: &AssignmentQuery) -> StoreResult<Vec<RoleAssignment>> {
        read::assignments(&mut *self.reader().await?, query)
            .await
            .map_err(map_error::<D>)
    }

    async fn scan_assignment_keys(
        &self,
        each: &mut (dyn for<'k> FnMut(&'k AssignmentKey) + Send),
    ) -> StoreResult<u64> {
        read::scan_assignment_keys(&mut *self.reader().await?, each)
            .await
            .map_err(map_error::<D>)
    }

    async fn revocations(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        read::revocations(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn activity(&self, query: &LogQuery) -> StoreResult<Vec<ActivityRecord>> {
        read::activity(&mut *self.reader().await?, query)
            .await
            .map_err(map_error::<D>)
    }

    async fn sign_ins(&self, query: &LogQuery) -> StoreResult<Vec<SignInRecord>> {
        read::sign_ins(&mut *self.reader().await?, query)
            .await
            .map_err(map_error::<D>)
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        read::keys(&mut *self.reader().await?)
            .await
            .map_err(map_error::<D>)
    }

    async fn document(&self, collection: &str, key: &str) -> StoreResult<Option<DocumentRecord>> {
        read::document(&mut *self.reader().await?, collection, key)
            .await
            .map_err(map_error::<D>)
    }

    async fn documents(&self, query: &DocumentQuery) -> StoreResult<Vec<DocumentRecord>> {
        read::documents(&mut *self.reader().await?, query)
            .await
            .map_err(map_error::<D>)
    }

    fn backend(&self) -> &'static str {
        D::NAME
    }
}
