//! The SQL both backends share, written once.
//!
//! - [`store`]: [`SqlStore`](store::SqlStore), the one implementation of
//!   [`Store`](crate::Store), generic over a [`Dialect`](store::Dialect) that supplies what
//!   differs between the databases (connecting, how transactions start, error codes, the
//!   retry policy, the migrations directory).
//! - [`read`] and [`write`]: how records become rows, every [`Expect`](crate::Expect) and
//!   [`Change`](crate::Change), every query; generic over [`Conn`].
//! - [`migrate`]: the migration runner and the list of schema steps.
//! - Here: [`Conn`] and [`SqlRow`], implemented once for every sqlx connection and row whose
//!   driver binds and decodes the few column types the schema uses, and [`Statement`].
//!
//! The statements use only SQL that SQLite and PostgreSQL (and its distributed cousins) read
//! the same way, with `$n` placeholders, which both drivers accept.
//!
//! [`Conn`], [`SqlRow`], [`Statement`] and [`Error`] are `pub` only because the public
//! [`Dialect`](store::Dialect) names them; this module is private, so nothing outside the
//! crate can reach them.

pub(crate) mod migrate;
pub(crate) mod read;
pub(crate) mod store;
pub(crate) mod write;

use std::fmt;

use async_trait::async_trait;
use futures::TryStreamExt;
use lanyard_domain::ResourceId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;

/// A connection (or a transaction on one) that runs [`Statement`]s.
#[async_trait]
pub trait Conn: Send {
    type Row: SqlRow;

    /// Runs a statement and returns how many rows it touched.
    async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error>;
    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<Self::Row>, sqlx::Error>;
    /// Runs a query and hands each row to `each` as it arrives, never holding them all;
    /// stops at the first error `each` returns. Returns how many rows it handed over.
    async fn fetch_each(
        &mut self,
        statement: &Statement,
        each: &mut (dyn for<'r> FnMut(&'r Self::Row) -> Result<(), Error> + Send),
    ) -> Result<u64, Error>;
    /// Runs a script of several statements without binds (migrations).
    async fn execute_script(&mut self, script: &str) -> Result<(), sqlx::Error>;
}

/// Typed access to a column of a result row, by position.
pub trait SqlRow: Send {
    fn text(&self, index: usize) -> Result<String, sqlx::Error>;
    /// The text of a column, borrowed from the row.
    fn str(&self, index: usize) -> Result<&str, sqlx::Error>;
    fn int(&self, index: usize) -> Result<i64, sqlx::Error>;
}

/// How many rows a statement touched: each driver's result has the method, no sqlx trait
/// names it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

/// `statement` as a sqlx query with its values bound.
fn query<'q, DB>(statement: &'q Statement) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    statement
        .args()
        .iter()
        .fold(sqlx::query(statement.sql()), |q, value| match value {
            Value::Text(v) => q.bind(v.as_deref()),
            Value::Int(v) => q.bind(*v),
        })
}

#[async_trait]
impl<C> Conn for C
where
    C: sqlx::Connection,
    for<'e> &'e mut C: Executor<'e, Database = C::Database>,
    for<'q> <C::Database as Database>::Arguments<'q>: IntoArguments<'q, C::Database>,
    for<'q> Option<&'q str>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<i64>: Encode<'q, C::Database> + Type<C::Database>,
    <C::Database as Database>::Row: SqlRow,
    <C::Database as Database>::QueryResult: RowsAffected,
{
    type Row = <C::Database as Database>::Row;

    async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error> {
        Ok(query::<C::Database>(statement)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<Self::Row>, sqlx::Error> {
        query::<C::Database>(statement).fetch_all(self).await
    }

    async fn fetch_each(
        &mut self,
        statement: &Statement,
        each: &mut (dyn for<'r> FnMut(&'r Self::Row) -> Result<(), Error> + Send),
    ) -> Result<u64, Error> {
        let mut rows = query::<C::Database>(statement).fetch(&mut *self);
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
        Executor::execute(self, script).await.map(|_| ())
    }
}

impl<R> SqlRow for R
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
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

/// A value bound to a placeholder. Nulls carry their type, as PostgreSQL needs.
#[derive(Clone)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

// INVARIANT: bound values may be secret-bearing JSON; nothing prints them.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Value(<redacted>)")
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Self::Text(Some(v.to_string()))
    }
}

impl From<Option<Uuid>> for Value {
    fn from(v: Option<Uuid>) -> Self {
        Self::Text(v.map(|u| u.to_string()))
    }
}

/// SQL text with its binds. Placeholders are `$1`, `$2`, ... in bind order.
#[derive(Debug)]
pub struct Statement {
    sql: String,
    args: Vec<Value>,
    has_where: bool,
}

impl Statement {
    pub(crate) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            args: Vec::new(),
            has_where: false,
        }
    }

    /// Binds the next placeholder already written in the SQL.
    pub(crate) fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Writes the next placeholder and binds `value` to it.
    pub(crate) fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// Starts one more condition: ` WHERE ` the first time, ` AND ` after.
    pub(crate) fn and(&mut self) -> &mut Self {
        let joiner = if self.has_where { " AND " } else { " WHERE " };
        self.has_where = true;
        self.push(joiner)
    }

    /// Adds `column` is `scope` or below it (`include_self`), or strictly below it.
    ///
    /// A range on the key, not `LIKE`: names may hold `_` and `%`. Everything strictly below
    /// key `k` sorts in the open interval (`k/`, `k0`), `0` being the byte after `/`.
    pub(crate) fn and_within(
        &mut self,
        column: &str,
        scope: &ResourceId,
        include_self: bool,
    ) -> &mut Self {
        if scope.is_root() {
            if !include_self {
                self.and().push(column).push(" > ").push_bind("/");
            }
            return self;
        }
        let key = scope.key();
        self.and().push("(");
        if include_self {
            self.push(column).push(" = ").push_bind(key).push(" OR ");
        }
        self.push("(")
            .push(column)
            .push(" > ")
            .push_bind(format!("{key}/"))
            .push(" AND ")
            .push(column)
            .push(" < ")
            .push_bind(format!("{key}0"))
            .push("))")
    }

    /// Adds `column` starting with `prefix`, as a key range rather than `LIKE` (so `_` and
    /// `%` in user names mean themselves): `prefix <= column < successor(prefix)`.
    pub(crate) fn and_prefix(&mut self, column: &str, prefix: &str) -> &mut Self {
        self.and()
            .push("(")
            .push(column)
            .push(" >= ")
            .push_bind(prefix)
            .push(")");
        if let Some(end) = prefix_successor(prefix) {
            self.and().push(column).push(" < ").push_bind(end);
        }
        self
    }

    pub(crate) fn limit(&mut self, limit: Option<u32>) -> &mut Self {
        if let Some(limit) = limit {
            self.push(" LIMIT ").push_bind(i64::from(limit));
        }
        self
    }

    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    pub(crate) fn args(&self) -> &[Value] {
        &self.args
    }
}

/// A failure inside the shared code: a driver error the backend still has to classify (it
/// may be a retryable serialization failure), or an already decided [`StoreError`].
#[derive(Debug)]
pub enum Error {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Maps a driver error to a [`StoreError`]; `database` classifies the backend's own error
/// codes. Messages name what failed, never a bound value.
pub(crate) fn map_error(e: Error, database: fn(&dyn DatabaseError) -> StoreError) -> StoreError {
    let e = match e {
        Error::Store(e) => return e,
        Error::Sql(e) => e,
    };
    match e {
        sqlx::Error::Database(db) => database(db.as_ref()),
        sqlx::Error::Io(io) => StoreError::Unavailable(io.to_string()),
        sqlx::Error::Tls(tls) => StoreError::Unavailable(format!("tls: {tls}")),
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".to_string())
        }
        sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".to_string()),
        sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable("the database worker stopped".to_string())
        }
        sqlx::Error::ColumnDecode { index, source } => {
            StoreError::Corrupt(format!("column {index} could not be decoded: {source}"))
        }
        sqlx::Error::ColumnNotFound(c) => StoreError::Corrupt(format!("column `{c}` is missing")),
        sqlx::Error::ColumnIndexOutOfBounds { index, len } => {
            StoreError::Corrupt(format!("column {index} is missing (row has {len})"))
        }
        sqlx::Error::Decode(source) => StoreError::Corrupt(format!("decode: {source}")),
        other => StoreError::Database(other.to_string()),
    }
}

/// The classification both backends share once their own codes are handled.
pub(crate) fn database_error_fallback(db: &dyn DatabaseError) -> StoreError {
    match db.kind() {
        ErrorKind::UniqueViolation => {
            // INVARIANT: the constraint names and messages carry no values on either backend.
            let which = db.constraint().unwrap_or_else(|| db.message());
            if which.contains("role_assignments") {
                StoreError::Conflict("role assignment already exists".to_string())
            } else {
                StoreError::Conflict(format!(
                    "a record with the same key already exists ({which})"
                ))
            }
        }
        _ => StoreError::Database(db.message().to_string()),
    }
}

/// The message inside a [`StoreError`], without its kind, for wrapping in another.
pub(crate) fn detail(e: StoreError) -> String {
    match e {
        StoreError::Conflict(m)
        | StoreError::Unavailable(m)
        | StoreError::Corrupt(m)
        | StoreError::Database(m) => m,
    }
}

pub(crate) fn to_json(what: &str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|_| StoreError::Database(format!("{what} could not be encoded")))
}

/// Decodes stored JSON. The message gives the position, never the text around it.
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what}: invalid stored json ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Timestamps are stored as unix nanoseconds: exact, and they sort.
pub(crate) fn to_nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Database(format!("timestamp {t} is outside the storable range")))
}

pub(crate) fn from_nanos(what: &str, nanos: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|_| StoreError::Corrupt(format!("{what}: stored timestamp is out of range")))
}

pub(crate) fn parse_uuid(what: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text)
        .map_err(|_| StoreError::Corrupt(format!("{what}: stored id is not a uuid")))
}

pub(crate) fn parse_resource_id(what: &str, text: &str) -> Result<ResourceId, StoreError> {
    ResourceId::parse(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The smallest string greater than every string starting with `prefix`, if there is one:
/// the prefix with its last character incremented (dropping trailing `char::MAX`s).
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
