//! The embedded dialect: one SQLite file in WAL mode with `synchronous=FULL`, so every
//! acknowledged commit is on disk.
//!
//! All writes go through a single connection, so they are serialized inside the process and
//! never meet `SQLITE_BUSY` from each other; each transaction takes the write lock up front
//! (`BEGIN IMMEDIATE`). Reads use a small pool of `query_only` connections, which WAL lets
//! run beside the writer. `busy_timeout` covers another process holding the file.
//! With one writer, commit-feed numbers are given in commit order by construction, and no
//! transaction fails to serialize, so nothing is retried.
//!
//! The file is private to the server's user: it is created with mode 0600 before SQLite opens
//! it, and SQLite gives its `-wal` and `-shm` files the mode of the database file. A database
//! (or companion file) an older version left more open is tightened to 0600 at open.
//!
//! Here: [`SqliteStore::open`] (the file, its pragmas, the two pools) and the [`Sqlite`]
//! [`Dialect`]; the store itself is [`SqlStore`], written once for both backends.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use crate::sql::migrate::{migrations, Migration};
use crate::sql::store::{map_error, migrate, Sealed};
use crate::sql::{self, RowsAffected};
use crate::{Dialect, SqlStore, StoreError, StoreResult};

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

/// The SQLite [`Dialect`], at one database file.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
}

impl fmt::Display for Sqlite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sqlite database `{}`", self.path.display())
    }
}

impl Sealed for Sqlite {}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    const NAME: &'static str = "sqlite";
    const MIGRATIONS: &'static [Migration] = migrations!("sqlite");
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_PRUNE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_MIGRATE: &'static str = "BEGIN IMMEDIATE";
    /// The one writer connection is the queue.
    const QUEUE_FEED_APPENDS: bool = false;
    const COMMIT_ATTEMPTS: u32 = 1;
    const MIGRATE_ATTEMPTS: u32 = 1;

    fn retryable(_: &dyn DatabaseError) -> bool {
        false
    }

    fn classify(db: &dyn DatabaseError) -> StoreError {
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
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

/// A [`Store`](crate::Store) in one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

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
        let dialect = Sqlite {
            path: path.to_path_buf(),
        };
        let mut first = writer.acquire().await.map_err(|e| open_error(path, e))?;
        migrate(&dialect, &mut first).await?;
        drop(first);

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

        Ok(Self::new(dialect, writer, readers))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.dialect.path
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
    let why = sql::detail(map_error::<Sqlite>(e.into()));
    StoreError::Unavailable(format!(
        "cannot open sqlite database `{}`: {why}",
        path.display()
    ))
}

fn primary_code(db: &dyn DatabaseError) -> Option<i64> {
    db.code()?.parse::<i64>().ok().map(|c| c & 0xff)
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
