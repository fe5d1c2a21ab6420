//! A fresh database for each test. Used by the storage conformance suite and, through
//! `lanyard_testkit::db`, by the server's tests; it links no Lanyard crate, so the storage
//! crate's tests build without the server.
//!
//! - [`fresh_sqlite_path`]: a database file path inside a new temporary directory, removed
//!   when the returned [`TestSqlite`] drops.
//! - [`fresh_postgres_url`]: a new database `lanyard_test_<random>` on the server named by
//!   `LANYARD_TEST_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`]), with an ICU `en-US`
//!   default collation where the server supports one, dropped by
//!   [`TestDatabase::cleanup`] or, failing that, when the [`TestDatabase`] drops. A server
//!   that cannot be reached is an error, never a skipped test.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tempfile::TempDir;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server the tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "LANYARD_TEST_POSTGRES_URL";
/// The server used when [`POSTGRES_URL_VAR`] is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database file path in a temporary directory that lives as long as this value.
#[derive(Debug)]
pub struct TestSqlite {
    dir: TempDir,
    path: PathBuf,
}

impl TestSqlite {
    /// The database file (not created yet).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory holding it, for tests that put other files beside it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `sqlite://{path}`.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

/// A path for a new SQLite database, `lanyard.db` in a fresh temporary directory.
pub fn fresh_sqlite_path() -> anyhow::Result<TestSqlite> {
    let dir = tempfile::Builder::new()
        .prefix("lanyard-test-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let path = dir.path().join("lanyard.db");
    Ok(TestSqlite { dir, path })
}

/// A PostgreSQL database created for one test.
pub struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
    dropped: bool,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The urls may hold a password.
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// The url of the new database, with the server's credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name, `lanyard_test_<random>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, disconnecting whoever is still connected to it.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    /// Best effort when [`TestDatabase::cleanup`] was not reached (a failed test): drop the
    /// database from a thread with its own runtime, since `Drop` cannot await.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                if let Err(e) = runtime.block_on(drop_database(&admin_url, &name)) {
                    eprintln!("could not drop test database {name}: {e:#}");
                }
            }
        });
        let _ = dropper.join();
    }
}

/// Creates a new, empty database on the test server and returns its url.
pub async fn fresh_postgres_url() -> anyhow::Result<TestDatabase> {
    let admin_url =
        std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
    let mut admin = admin_connect(&admin_url).await?;
    let name = format!("lanyard_test_{}", Uuid::new_v4().simple());
    // The name is ours (letters, digits, `_`), so it can be spliced into the DDL.
    // A linguistic default collation, where the server has ICU (PostgreSQL 15+), makes any
    // query that relies on the database's default ordering instead of bytewise keys fail.
    let linguistic = sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    ))
    .execute(&mut admin)
    .await;
    if linguistic.is_err() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create test database {name}"))?;
    }
    let _ = admin.close().await;
    Ok(TestDatabase {
        url: with_database(&admin_url, &name)?,
        admin_url,
        name,
        dropped: false,
    })
}

async fn admin_connect(admin_url: &str) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("{POSTGRES_URL_VAR} is not a valid postgres url"))?;
    let target = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Err(_) => bail!(
            "PostgreSQL at {target} did not answer within {}s; start it or set {POSTGRES_URL_VAR}",
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => {
            bail!(
                "PostgreSQL at {target} is not reachable ({e}); start it or set {POSTGRES_URL_VAR}"
            )
        }
        Ok(Ok(connection)) => Ok(connection),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = admin_connect(admin_url).await?;
    let forced = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    if forced.is_err() {
        // Servers without `WITH (FORCE)` (before PostgreSQL 13).
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot drop test database {name}"))?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// `url` with its database replaced by `name`, keeping credentials and parameters.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, Some(params)),
        None => (url, None),
    };
    let Some(authority_start) = base.find("://").map(|i| i + 3) else {
        bail!("{POSTGRES_URL_VAR} is not a url");
    };
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(params) = params {
        out.push('?');
        out.push_str(params);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_database() -> anyhow::Result<()> {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x")?,
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x")?, "postgres://h/x");
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x")?,
            "postgresql://h/x?sslmode=disable"
        );
        Ok(())
    }
}
