//! smartpark's SQL layer: one interface over SQLite (rusqlite) and PostgreSQL (postgres),
//! shaped like rusqlite's so that a statement is written once and runs on either.
//!
//! Statements use SQLite's `?N` placeholders (rewritten to `$N` for PostgreSQL) and the
//! SQL both engines share: `INSERT … ON CONFLICT … DO UPDATE/NOTHING`, `RETURNING`,
//! `CASE`, `CAST(… AS BIGINT)`. Where the two differ a caller asks [`Connection::dialect`].
//! Rows are read whole into [`Value`]s (SQLite's five storage classes); PostgreSQL's
//! integers of any width read as integers, `numeric` sums as integers when whole, and
//! parameters are converted to the types the server inferred for them.
//!
//! Schemas are versioned [`migrate::Migration`]s with a text per engine, applied in order
//! at start and refused when the database is newer than the build.

mod pg;

pub use pg::mark_blocking_thread;
pub mod pool;
mod value;

pub mod migrate;

use std::ops::Deref;
use std::rc::Rc;

pub use pool::{Handle, Pool, Target, scratch_schema};
pub use value::{FromSql, ToSql, Value, ValueRef};

/// What went wrong with a statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the query returned no rows")]
    QueryReturnedNoRows,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("{0}")]
    Conversion(String),
    #[error("no column {0}")]
    NoColumn(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The server's own words for a refused statement (the client's error says only
/// "db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl Error {
    /// Whether a uniqueness constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// For code on rusqlite calling through this layer (the edge's store).
impl From<Error> for rusqlite::Error {
    fn from(e: Error) -> rusqlite::Error {
        match e {
            Error::Sqlite(e) => e,
            Error::QueryReturnedNoRows => rusqlite::Error::QueryReturnedNoRows,
            other => rusqlite::Error::ToSqlConversionFailure(Box::new(other)),
        }
    }
}

/// The engine behind a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection to either engine, borrowed for the length of an operation.
#[derive(Clone, Copy)]
pub struct Connection<'a> {
    inner: Inner<'a>,
}

#[derive(Clone, Copy)]
enum Inner<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a pg::PgConn),
}

impl<'a> Connection<'a> {
    /// A SQLite connection opened elsewhere (the edge's store keeps its own).
    pub fn sqlite(c: &'a rusqlite::Connection) -> Connection<'a> {
        Connection {
            inner: Inner::Sqlite(c),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Pg(_) => Dialect::Postgres,
        }
    }

    fn run(&self, sql: &str, params: &[Value]) -> Result<usize> {
        match self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params))?)
            }
            Inner::Pg(c) => c.execute(sql, params),
        }
    }

    fn rows(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        let (names, rows) = match self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let names: Vec<String> = stmt.column_names().map(|n| n.to_string()).collect();
                let width = names.len();
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(Value::from(r.get_ref(i)?));
                    }
                    out.push(values);
                }
                (names, out)
            }
            Inner::Pg(c) => c.query(sql, params)?,
        };
        let names: Rc<[String]> = names.into();
        Ok(Rows {
            rows: rows
                .into_iter()
                .map(|values| Row {
                    values,
                    names: names.clone(),
                })
                .collect(),
            next: 0,
        })
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.run(sql, &params.values())
    }

    /// Runs statements without parameters, separated by semicolons.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Pg(c) => c.batch(sql),
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T> {
        let mut rows = self.rows(sql, &params.values())?;
        match rows.next()? {
            Some(r) => f(r),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    /// Every row, mapped.
    pub fn query_all<T, P: Params, F: FnMut(&Row) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<Vec<T>> {
        self.rows(sql, &params.values())?
            .rows
            .iter()
            .map(f)
            .collect()
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'a>> {
        Ok(Statement {
            conn: *self,
            sql: sql.to_string(),
        })
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'a>> {
        self.prepare(sql)
    }

    /// Begins a transaction that takes the write lock at once (SQLite's `IMMEDIATE`).
    pub fn transaction(&self) -> Result<Transaction<'a>> {
        self.execute_batch(match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        })?;
        Ok(Transaction {
            conn: *self,
            open: true,
        })
    }

    /// The same (rusqlite's name, for a connection shared by reference).
    pub fn unchecked_transaction(&self) -> Result<Transaction<'a>> {
        self.transaction()
    }
}

/// A statement to run (prepared and cached by the connection when it runs).
pub struct Statement<'a> {
    conn: Connection<'a>,
    sql: String,
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows> {
        self.conn.rows(&self.sql, &params.values())
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> Result<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    pub fn query_map<T, P: Params, F: FnMut(&Row) -> Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.rows(&self.sql, &params.values())?;
        Ok(rows.rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        Ok(!self.conn.rows(&self.sql, &params.values())?.rows.is_empty())
    }
}

/// The rows a query answered.
pub struct Rows {
    rows: Vec<Row>,
    next: usize,
}

impl Rows {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<&Row>> {
        let r = self.rows.get(self.next);
        self.next += 1;
        Ok(r)
    }
}

/// One row.
pub struct Row {
    values: Vec<Value>,
    names: Rc<[String]>,
}

/// A column by position or by name.
pub trait RowIndex {
    fn index(&self, names: &[String]) -> Result<usize>;
}

impl RowIndex for usize {
    fn index(&self, names: &[String]) -> Result<usize> {
        if *self < names.len() {
            Ok(*self)
        } else {
            Err(Error::NoColumn(self.to_string()))
        }
    }
}

impl RowIndex for &str {
    fn index(&self, names: &[String]) -> Result<usize> {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(self))
            .ok_or_else(|| Error::NoColumn(self.to_string()))
    }
}

impl Row {
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let i = idx.index(&self.names)?;
        T::from_sql(self.values[i].as_ref()).map_err(|e| match e {
            Error::Conversion(m) => Error::Conversion(format!("column {}: {m}", self.names[i])),
            other => other,
        })
    }

    pub fn get_ref<I: RowIndex>(&self, idx: I) -> Result<ValueRef<'_>> {
        let i = idx.index(&self.names)?;
        Ok(self.values[i].as_ref())
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A transaction; rolled back when dropped without [`Transaction::commit`].
pub struct Transaction<'a> {
    conn: Connection<'a>,
    open: bool,
}

impl<'a> Transaction<'a> {
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("COMMIT")
    }

    pub fn rollback(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("ROLLBACK")
    }
}

impl<'a> Deref for Transaction<'a> {
    type Target = Connection<'a>;
    fn deref(&self) -> &Connection<'a> {
        &self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// What a statement's parameters can be given as.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for &[&dyn ToSql] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

impl Params for [&dyn ToSql; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(|p| p.to_sql()).collect()
            }
        }
        impl<T: ToSql> Params for &[T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(|p| p.to_sql()).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Parameters from an iterator.
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    fn values(self) -> Vec<Value> {
        self.0.into_iter().map(|p| p.to_sql()).collect()
    }
}

/// Parameters of different types: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::ToSql]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::ToSql),+] as &[&dyn $crate::ToSql]
    };
}

/// `Ok(None)` for a query that returned no rows.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
