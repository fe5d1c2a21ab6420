//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so every
//! acknowledged commit is on disk.
//!
//! All writes go through a single connection, so they are serialized inside the process and
//! never meet `SQLITE_BUSY` from each other; each batch takes the write lock up front
//! (`BEGIN IMMEDIATE`). Reads use a small pool of `query_only` connections, which WAL lets
//! run beside the writer. `busy_timeout` covers another process holding the file.
//! With one writer, commit-feed numbers are given in commit order by construction.
//!
//! The file is private to the server's user: it is created with mode 0600 before SQLite opens
//! it, and SQLite gives its `-wal` and `-shm` files the mode of the database file. A database
//! (or companion file) an older version left more open is tightened to 0600 at open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use lanyard_domain::{Principal, ResourceId, RoleAssignment, RoleDefinition, Subscription, Tenant};
use sqlx::error::DatabaseError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use uuid::Uuid;

use crate::sql::migrate::{self, Migration};
use crate::sql::{self, read, write, Conn, SqlRow, Statement, Value};
use crate::{
    ActivityRecord, AssignmentKey, AssignmentQuery, Batch, CredentialRecord, DocumentQuery,
    DocumentRecord, FeedEntry, FeedHead, KeyRecord, LogQuery, ResourceQuery, ResourceRecord,
    SignInRecord, Store, StoreError, StoreResult,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "documents of the data planes",
        sql: include_str!("../migrations/sqlite/0002_documents.sql"),
    },
    Migration {
        version: 3,
        description: "the commit feed",
        sql: include_str!("../migrations/sqlite/0003_feed.sql"),
    },
    Migration {
        version: 4,
        description: "the kind of each principal",
        sql: include_str!("../migrations/sqlite/0004_principal_kind.sql"),
    },
];

/// How long a statement waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for the writer or a reader connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
const READERS: u32 = 4;
/// Rows a reader's worker thread may run ahead of the task reading them: enough that a long
/// scan (the authorization index at start) rarely hands rows over one wake-up at a time.
const ROW_BUFFER: usize = 1024;

// Primary result codes (the low byte of SQLite's extended codes).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_NOTADB: i64 = 26;

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file if needed (not its directory), and
    /// brings the schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        check_location(path)?;
        make_private(path);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(path, e))?;
        migrate(&writer).await.map_err(|e| match e {
            e @ StoreError::Unavailable(_) => e,
            other => StoreError::Unavailable(format!(
                "cannot migrate `{}`: {}",
                path.display(),
                sql::detail(other)
            )),
        })?;

        // A connection to a local file does not go stale the way a network one does, so a
        // pooled reader is handed out without the ping (a round trip through its worker
        // thread) that sqlx would otherwise send before every query.
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(
                options
                    .create_if_missing(false)
                    .pragma("query_only", "ON")
                    .row_buffer_size(ROW_BUFFER),
            )
            .await
            .map_err(|e| open_error(path, e))?;

        Ok(Self {
            writer,
            readers,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, waiting for them to finish. Later calls fail as unavailable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    async fn prune(&self, keep: u64) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| map_error(e.into()))?;
        match write::prune_feed(&mut *tx, keep).await {
            Ok(()) => tx.commit().await.map_err(|e| map_error(e.into())),
            Err(e) => {
                rollback(tx).await;
                Err(map_error(e))
            }
        }
    }

    async fn reader(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.readers
            .acquire()
            .await
            .map_err(|e| map_error(e.into()))
    }
}

async fn migrate(writer: &SqlitePool) -> StoreResult<()> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| map_error(e.into()))?;
    match migrate::apply(&mut *tx, MIGRATIONS).await {
        Ok(applied) => {
            tx.commit().await.map_err(|e| map_error(e.into()))?;
            if !applied.is_empty() {
                tracing::info!(?applied, "sqlite schema migrated");
            }
            Ok(())
        }
        Err(e) => {
            rollback(tx).await;
            Err(map_error(e))
        }
    }
}

async fn rollback(tx: sqlx::Transaction<'_, Sqlite>) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %map_error(e.into()), "sqlite rollback failed");
    }
}

/// Fails early, with a message a person can act on, when the file cannot be where asked.
fn check_location(path: &Path) -> StoreResult<()> {
    let unavailable = |why: String| {
        Err(StoreError::Unavailable(format!(
            "cannot open sqlite database `{}`: {why}",
            path.display()
        )))
    };
    if path.is_dir() {
        return unavailable("it is a directory".to_string());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => unavailable(format!("`{}` is not a directory", parent.display())),
        Err(e) => unavailable(format!("directory `{}`: {e}", parent.display())),
    }
}

/// Creates the database file with mode 0600 if it does not exist, and tightens it and its
/// companion files to 0600 where they are more open. Failures are left for SQLite to report
/// (or logged, for a mode that cannot be changed).
#[cfg(unix)]
fn make_private(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let file = PathBuf::from(name);
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::info!(
                path = %file.display(),
                was = format!("{mode:o}"),
                "database file was readable by other users; its mode is now 600"
            ),
            Err(e) => tracing::warn!(
                path = %file.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "database file is readable by other users and its mode cannot be changed"
            ),
        }
    }
}

#[cfg(not(unix))]
fn make_private(_path: &Path) {}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if primary_code(db.as_ref()) == Some(SQLITE_NOTADB) {
            return StoreError::Unavailable(format!(
                "`{}` is not a sqlite database",
                path.display()
            ));
        }
    }
    let why = sql::detail(map_error(e.into()));
    StoreError::Unavailable(format!(
        "cannot open sqlite database `{}`: {why}",
        path.display()
    ))
}

fn primary_code(db: &dyn DatabaseError) -> Option<i64> {
    db.code()?.parse::<i64>().ok().map(|c| c & 0xff)
}

fn database_error(db: &dyn DatabaseError) -> StoreError {
    let message = db.message().to_string();
    match primary_code(db) {
        Some(SQLITE_BUSY | SQLITE_LOCKED) => {
            StoreError::Unavailable(format!("the database is locked: {message}"))
        }
        Some(SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN) => {
            StoreError::Unavailable(message)
        }
        Some(SQLITE_CORRUPT | SQLITE_NOTADB) => StoreError::Corrupt(message),
        _ => sql::database_error_fallback(db),
    }
}

fn map_error(e: sql::Error) -> StoreError {
    sql::map_error(e, database_error)
}

fn query(statement: &Statement) -> sqlx::query::Query<'_, Sqlite, SqliteArguments<'_>> {
    statement
        .args()
        .iter()
        .fold(sqlx::query(statement.sql()), |q, value| match value {
            Value::Text(v) => q.bind(v.as_deref()),
            Value::Int(v) => q.bind(*v),
        })
}

#[async_trait]
impl Conn for SqliteConnection {
    type Row = SqliteRow;

    async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error> {
        Ok(query(statement).execute(self).await?.rows_affected())
    }

    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<SqliteRow>, sqlx::Error> {
        query(statement).fetch_all(self).await
    }

    async fn fetch_each(
        &mut self,
        statement: &Statement,
        each: &mut (dyn for<'r> FnMut(&'r SqliteRow) -> Result<(), sql::Error> + Send),
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

impl SqlRow for SqliteRow {
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
impl Store for SqliteStore {
    async fn commit_seq(&self, batch: Batch) -> StoreResult<Option<u64>> {
        if batch.is_empty() {
            return Ok(None);
        }
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| map_error(e.into()))?;
        match write::apply(&mut *tx, &batch).await {
            Ok(seq) => {
                tx.commit().await.map_err(|e| map_error(e.into()))?;
                Ok(seq)
            }
            Err(e) => {
                rollback(tx).await;
                Err(map_error(e))
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
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn connections_use_wal_full_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("lanyard.db"))
            .await
            .unwrap();
        for pool in [&store.writer, &store.readers] {
            let mut c = pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(sync, 2, "synchronous=FULL");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(fk, 1);
        }
    }

    #[tokio::test]
    async fn reopening_applies_no_migration_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        SqliteStore::open(&path).await.unwrap().close().await;
        let store = SqliteStore::open(&path).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&store.writer)
            .await
            .unwrap();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
            .execute(&store.writer)
            .await
            .unwrap();
        store.close().await;
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("version 99")),
            "{err}"
        );
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_its_wal_and_shm_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.put_meta_for_test().await;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            assert!(file.exists(), "{} missing", file.display());
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.close().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_an_older_version_left_open_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.db");
        SqliteStore::open(&path).await.unwrap().close().await;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        std::fs::write(&wal, b"").unwrap();
        for file in [&path, &wal] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        store.put_meta_for_test().await;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&wal), 0o600);
        store.close().await;
    }

    impl SqliteStore {
        async fn put_meta_for_test(&self) {
            sqlx::query("INSERT INTO schema_migrations VALUES (1000, 'mode test', 0)")
                .execute(&self.writer)
                .await
                .unwrap();
        }
    }
}
