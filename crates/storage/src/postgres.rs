//! The scale-out backend: PostgreSQL through a connection pool.
//!
//! Batches run in `SERIALIZABLE` transactions and are retried a few times when the database
//! reports a serialization failure (SQLSTATE `40001`) or a deadlock (`40P01`). The schema and
//! statements keep to portable SQL so PostgreSQL-compatible distributed databases work too.
//!
//! The commit feed's order: a batch that appends a feed entry updates the one `feed_head`
//! row last, before committing. The row lock is held until commit, so a second appender
//! waits for the first to commit, then fails to serialize (its snapshot predates the first's
//! update) and is retried, now seeing the first's number: numbers are given in commit order
//! and an entry is visible before any later one. Within one process appending batches take
//! turns on a mutex first, so they queue there instead of failing and retrying.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use sqlx::error::DatabaseError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row};
use uuid::Uuid;

use crate::sql::migrate::{self, Migration};
use crate::sql::{self, read, write, Conn, SqlRow, Statement, Value};
use crate::{
    ActivityRecord, AssignmentKey, AssignmentQuery, Batch, CredentialRecord, DocumentQuery,
    DocumentRecord, FeedChange, FeedEntry, FeedHead, KeyRecord, LogQuery, ResourceQuery,
    ResourceRecord, SignInRecord, Store, StoreError, StoreResult,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "documents of the data planes",
        sql: include_str!("../migrations/postgres/0002_documents.sql"),
    },
    Migration {
        version: 3,
        description: "the commit feed",
        sql: include_str!("../migrations/postgres/0003_feed.sql"),
    },
    Migration {
        version: 4,
        description: "the kind of each principal",
        sql: include_str!("../migrations/postgres/0004_principal_kind.sql"),
    },
];

/// How long opening the first connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection (including reconnecting).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_SIZE: u32 = 8;
/// Tries per batch when transactions keep failing to serialize. Writers that touch the same
/// index pages conflict under SSI even when their rows differ, so allow a good number.
const COMMIT_ATTEMPTS: u32 = 12;
/// Tries for the migrations, when another process migrates the same database at once.
const MIGRATE_ATTEMPTS: u32 = 3;

/// A [`Store`] in a PostgreSQL (or compatible) database.
pub struct PgStore {
    pool: PgPool,
    /// Batches that append to the feed run one at a time in this process: they would be
    /// serialized on the feed head row anyway, and queueing here spares them the retries.
    feed_writers: tokio::sync::Mutex<()>,
    /// `host:port`, for messages; never the url, which may hold a password.
    target: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the
    /// schema up to date. An unreachable database fails within a few seconds.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid postgres url: {e}")))?
            .application_name("lanyard");
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let unavailable = |why: String| {
            StoreError::Unavailable(format!("cannot connect to postgresql at {target}: {why}"))
        };

        // One direct connection first: it reports why the database cannot be reached (the
        // pool would only report a timeout), and it runs the migrations.
        let mut first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unavailable(format!("timed out after {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unavailable(sql::detail(map_error(e.into()))))?;
        let migrated = migrate(&mut first).await;
        if let Err(e) = first.close().await {
            tracing::debug!(error = %map_error(e.into()), "closing the migration connection failed");
        }
        migrated.map_err(|e| match e {
            e @ StoreError::Unavailable(_) => e,
            other => StoreError::Unavailable(format!(
                "cannot migrate postgresql at {target}: {}",
                sql::detail(other)
            )),
        })?;

        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            feed_writers: tokio::sync::Mutex::new(()),
            target,
        })
    }

    /// Closes every connection, waiting for them to finish. Later calls fail as unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn reader(&self) -> StoreResult<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(|e| map_error(e.into()))
    }

    /// Prunes in a READ COMMITTED transaction: the head row update waits for an appender's
    /// lock instead of failing to serialize.
    async fn prune(&self, keep: u64) -> StoreResult<()> {
        let _turn = self.feed_writers.lock().await;
        let result = async {
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await?;
            match write::prune_feed(&mut *tx, keep).await {
                Ok(()) => Ok(tx.commit().await?),
                Err(e) => {
                    if let Err(e) = tx.rollback().await {
                        tracing::warn!(error = %map_error(e.into()), "postgres rollback failed");
                    }
                    Err(e)
                }
            }
        }
        .await;
        result.map_err(map_error)
    }

    async fn try_commit(&self, batch: &Batch) -> Result<Option<u64>, sql::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await?;
        match write::apply(&mut *tx, batch).await {
            Ok(seq) => {
                tx.commit().await?;
                Ok(seq)
            }
            Err(e) => {
                if let Err(e) = tx.rollback().await {
                    tracing::warn!(error = %map_error(e.into()), "postgres rollback failed");
                }
                Err(e)
            }
        }
    }
}

/// Applies pending migrations in one transaction. When another process migrates the same
/// database at the same moment, one of the two fails; it looks again and finds the work done.
async fn migrate(c: &mut PgConnection) -> StoreResult<()> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = c.begin().await?;
            let applied = migrate::apply(&mut *tx, MIGRATIONS).await?;
            tx.commit().await?;
            Ok::<_, sql::Error>(applied)
        }
        .await;
        match result {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "postgres schema migrated");
                }
                return Ok(());
            }
            Err(sql::Error::Sql(sqlx::Error::Database(db))) if attempt < MIGRATE_ATTEMPTS => {
                tracing::debug!(code = ?db.code(), attempt, "migration failed, looking again");
                attempt += 1;
            }
            Err(e) => return Err(map_error(e)),
        }
    }
}

fn is_retryable(e: &sql::Error) -> bool {
    match e {
        sql::Error::Sql(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// Exponential backoff from 5 ms, capped at 320 ms, with jitter so retries spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let jitter = (Uuid::new_v4().as_u128() % u128::from(base)) as u64;
    Duration::from_millis(base + jitter)
}

fn database_error(db: &dyn DatabaseError) -> StoreError {
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let message = db.message();
    let unavailable = code.starts_with("08") // connection exception
        || code.starts_with("28") // invalid authorization
        || matches!(code.as_str(), "3D000" | "53300" | "57P01" | "57P02" | "57P03");
    if unavailable {
        return StoreError::Unavailable(format!("{message} ({code})"));
    }
    match sql::database_error_fallback(db) {
        StoreError::Database(m) => StoreError::Database(format!("{m} ({code})")),
        other => other,
    }
}

fn map_error(e: sql::Error) -> StoreError {
    sql::map_error(e, database_error)
}

fn query(statement: &Statement) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    statement
        .args()
        .iter()
        .fold(sqlx::query(statement.sql()), |q, value| match value {
            Value::Text(v) => q.bind(v.as_deref()),
            Value::Int(v) => q.bind(*v),
        })
}

#[async_trait]
impl Conn for PgConnection {
    type Row = PgRow;

    async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error> {
        Ok(query(statement).execute(self).await?.rows_affected())
    }

    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<PgRow>, sqlx::Error> {
        query(statement).fetch_all(self).await
    }

    async fn fetch_each(
        &mut self,
        statement: &Statement,
        each: &mut (dyn for<'r> FnMut(&'r PgRow) -> Result<(), sql::Error> + Send),
    ) -> Result<u64, sql::Error> {
        let mut rows = query(statement).fetch(&mut *self);
        let mut count = 0;
        while let Some(row) = rows.try_next().await? {
            each(&row)?;
            count += 1;
        }
        Ok(count)
    }

    async fn execute_script(&mut self, script: &str) -> Result<(), sqlx::Error> {
        // Without binds the driver runs every statement of the script (PostgreSQL: the
        // simple query protocol).
        sqlx::Executor::execute(self, script).await.map(|_| ())
    }
}

impl SqlRow for PgRow {
    fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        self.try_get(index)
    }

    fn str(&self, index: usize) -> Result<&str, sqlx::Error> {
        self.try_get(index)
    }

    fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        self.try_get(index)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn commit_seq(&self, batch: Batch) -> StoreResult<Option<u64>> {
        if batch.is_empty() {
            return Ok(None);
        }
        let _turn = if batch.changes.iter().any(|c| FeedChange::of(c).is_some()) {
            Some(self.feed_writers.lock().await)
        } else {
            None
        };
        let mut attempt = 1;
        loop {
            match self.try_commit(&batch).await {
                Err(e) if is_retryable(&e) => {
                    if attempt == COMMIT_ATTEMPTS {
                        return Err(StoreError::Database(format!(
                            "gave up after {attempt} attempts: {}",
                            map_error(e)
                        )));
                    }
                    tracing::debug!(attempt, "batch failed to serialize, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result.map_err(map_error),
            }
        }
    }

    async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        read::meta(&mut *self.reader().await?, key)
            .await
            .map_err(map_error)
    }

    async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        read::tenants(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        read::subscriptions(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn resource(&self, id: &ResourceId) -> StoreResult<Option<ResourceRecord>> {
        read::resource(&mut *self.reader().await?, id)
            .await
            .map_err(map_error)
    }

    async fn resources(&self, query: &ResourceQuery) -> StoreResult<Vec<ResourceRecord>> {
        read::resources(&mut *self.reader().await?, query)
            .await
            .map_err(map_error)
    }

    async fn principal(&self, object_id: Uuid) -> StoreResult<Option<Principal>> {
        read::principal(&mut *self.reader().await?, object_id)
            .await
            .map_err(map_error)
    }

    async fn principal_by_client_id(&self, client_id: Uuid) -> StoreResult<Option<Principal>> {
        read::principal_by_client_id(&mut *self.reader().await?, client_id)
            .await
            .map_err(map_error)
    }

    async fn principals(&self) -> StoreResult<Vec<Principal>> {
        read::principals(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn groups(&self) -> StoreResult<Vec<Principal>> {
        read::groups(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn credentials_of(&self, principal: Uuid) -> StoreResult<Vec<CredentialRecord>> {
        read::credentials_of(&mut *self.reader().await?, principal)
            .await
            .map_err(map_error)
    }

    async fn role_definitions(&self) -> StoreResult<Vec<RoleDefinition>> {
        read::role_definitions(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn assignment(&self, id: Uuid) -> StoreResult<Option<RoleAssignment>> {
        read::assignment(&mut *self.reader().await?, id)
            .await
            .map_err(map_error)
    }

    async fn assignments(&self, query: &AssignmentQuery) -> StoreResult<Vec<RoleAssignment>> {
        read::assignments(&mut *self.reader().await?, query)
            .await
            .map_err(map_error)
    }

    async fn scan_assignment_keys(
        &self,
        each: &mut (dyn for<'k> FnMut(&'k AssignmentKey) + Send),
    ) -> StoreResult<u64> {
        read::scan_assignment_keys(&mut *self.reader().await?, each)
            .await
            .map_err(map_error)
    }

    async fn revocations(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        read::revocations(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn activity(&self, query: &LogQuery) -> StoreResult<Vec<ActivityRecord>> {
        read::activity(&mut *self.reader().await?, query)
            .await
            .map_err(map_error)
    }

    async fn sign_ins(&self, query: &LogQuery) -> StoreResult<Vec<SignInRecord>> {
        read::sign_ins(&mut *self.reader().await?, query)
            .await
            .map_err(map_error)
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        read::keys(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn document(&self, collection: &str, key: &str) -> StoreResult<Option<DocumentRecord>> {
        read::document(&mut *self.reader().await?, collection, key)
            .await
            .map_err(map_error)
    }

    async fn documents(&self, query: &DocumentQuery) -> StoreResult<Vec<DocumentRecord>> {
        read::documents(&mut *self.reader().await?, query)
            .await
            .map_err(map_error)
    }

    async fn feed(&self, after: u64, limit: u32) -> StoreResult<Vec<FeedEntry>> {
        read::feed(&mut *self.reader().await?, after, limit)
            .await
            .map_err(map_error)
    }

    async fn feed_head(&self) -> StoreResult<FeedHead> {
        read::feed_head(&mut *self.reader().await?)
            .await
            .map_err(map_error)
    }

    async fn prune_feed(&self, keep: u64) -> StoreResult<()> {
        self.prune(keep).await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
