//! The scale-out dialect: PostgreSQL through a connection pool.
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
//! turns first ([`Dialect::QUEUE_FEED_APPENDS`]), so they queue there instead of failing and
//! retrying. Pruning runs `READ COMMITTED`: its head row update waits for an appender's lock
//! instead of failing to serialize.
//!
//! Here: [`PgStore::connect`] (the first connection, which migrates, and the pool) and the
//! [`Postgres`] [`Dialect`]; the store itself is [`SqlStore`], written once for both backends.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::Connection;

use crate::sql::migrate::{migrations, Migration};
use crate::sql::store::{map_error, migrate, Sealed};
use crate::sql::{self, RowsAffected};
use crate::{Dialect, SqlStore, StoreError, StoreResult};

/// How long opening the first connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection (including reconnecting).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_SIZE: u32 = 8;

/// The PostgreSQL [`Dialect`], at one server (`host:port`, for messages; never the url,
/// which may hold a password).
#[derive(Debug)]
pub struct Postgres {
    target: String,
}

impl fmt::Display for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgresql at {}", self.target)
    }
}

impl Sealed for Postgres {}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    const NAME: &'static str = "postgres";
    const MIGRATIONS: &'static [Migration] = migrations!("postgres");
    const BEGIN_WRITE: &'static str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
    const BEGIN_PRUNE: &'static str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    const BEGIN_MIGRATE: &'static str = "BEGIN";
    const QUEUE_FEED_APPENDS: bool = true;
    /// Writers that touch the same index pages conflict under SSI even when their rows
    /// differ, so allow a good number.
    const COMMIT_ATTEMPTS: u32 = 12;
    const MIGRATE_ATTEMPTS: u32 = 3;

    fn retryable(db: &dyn DatabaseError) -> bool {
        matches!(db.code().as_deref(), Some("40001" | "40P01"))
    }

    fn classify(db: &dyn DatabaseError) -> StoreError {
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
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

/// A [`Store`](crate::Store) in a PostgreSQL (or compatible) database.
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the
    /// schema up to date. An unreachable database fails within a few seconds.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid postgres url: {e}")))?
            .application_name("lanyard");
        let dialect = Postgres {
            target: format!("{}:{}", options.get_host(), options.get_port()),
        };
        let unavailable =
            |why: String| StoreError::Unavailable(format!("cannot connect to {dialect}: {why}"));

        // One direct connection first: it reports why the database cannot be reached (the
        // pool would only report a timeout), and it runs the migrations.
        let mut first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unavailable(format!("timed out after {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unavailable(sql::detail(map_error::<Postgres>(e.into()))))?;
        let migrated = migrate(&dialect, &mut first).await;
        if let Err(e) = first.close().await {
            tracing::debug!(error = %map_error::<Postgres>(e.into()), "closing the migration connection failed");
        }
        migrated?;

        // Reads and writes share the one pool.
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self::new(dialect, pool.clone(), pool))
    }
}
