//! A small embedded migration runner: the schema steps are listed once ([`migrations!`]),
//! each dialect has its own script of every step under `migrations/{dialect}/` (compiled in
//! with `include_str!`), and the versions applied are recorded in `schema_migrations`.
//!
//! The store runs [`apply`] inside one transaction, so a failed migration leaves the schema
//! as it was.

use time::OffsetDateTime;

use super::{to_nanos, Conn, Error, SqlRow, Statement};
use crate::StoreError;

/// One schema step of one dialect.
#[derive(Debug)]
pub struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

/// Every schema step, in order, with the scripts of one dialect: `migrations!("sqlite")`
/// reads `migrations/sqlite/`. A new step is one line here and one script per dialect.
macro_rules! migrations {
    ($dialect:literal) => {
        &[
            $crate::sql::migrate::step!($dialect, 1, "initial schema", "0001_initial.sql"),
            $crate::sql::migrate::step!(
                $dialect,
                2,
                "documents of the data planes",
                "0002_documents.sql"
            ),
            $crate::sql::migrate::step!($dialect, 3, "the commit feed", "0003_feed.sql"),
            $crate::sql::migrate::step!(
                $dialect,
                4,
                "the kind of each principal",
                "0004_principal_kind.sql"
            ),
        ]
    };
}

macro_rules! step {
    ($dialect:literal, $version:literal, $description:literal, $file:literal) => {
        $crate::sql::migrate::Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $dialect,
                "/",
                $file
            )),
        }
    };
}
pub(crate) use {migrations, step};

/// Applies every migration not yet recorded, in order. Returns the versions it applied.
pub(crate) async fn apply<C: Conn + ?Sized>(
    c: &mut C,
    migrations: &[Migration],
) -> Result<Vec<i64>, Error> {
    c.execute_script(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, \
         applied_at_ns BIGINT NOT NULL)",
    )
    .await?;
    let rows = c
        .fetch(&Statement::new("SELECT version FROM schema_migrations"))
        .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in rows {
        applied.push(row.int(0)?);
    }

    let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newest) = applied.iter().copied().max().filter(|v| *v > known) {
        return Err(Error::Store(StoreError::Unavailable(format!(
            "the database schema is at version {newest}, newer than this build understands ({known})"
        ))));
    }

    let mut done = Vec::new();
    for migration in migrations {
        if applied.contains(&migration.version) {
            continue;
        }
        c.execute_script(migration.sql).await?;
        let record = Statement::new(
            "INSERT INTO schema_migrations (version, description, applied_at_ns) \
             VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(to_nanos(OffsetDateTime::now_utc())?);
        c.execute(&record).await?;
        done.push(migration.version);
    }
    Ok(done)
}
