//! Where a database is, connections to it, and a small pool of them for blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Semaphore;

use crate::pg::PgConn;
use crate::{Connection, Dialect, Inner};

/// A database: a SQLite file, or a PostgreSQL connection string
/// (`postgresql://user@host:port/db?options=-c%20search_path%3Dschema`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    /// A connection string names PostgreSQL; anything else is a SQLite file.
    pub fn parse(s: &str) -> Target {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Target::Postgres(s.to_string())
        } else {
            Target::Sqlite(PathBuf::from(s))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Target::Sqlite(_) => Dialect::Sqlite,
            Target::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl std::fmt::Display for Target {
    /// The file, or the server and database without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", p.display()),
            Target::Postgres(url) => {
                let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
                let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
                let rest = rest.split('?').next().unwrap_or(rest);
                write!(f, "postgresql://{rest}")
            }
        }
    }
}

impl From<&Path> for Target {
    fn from(p: &Path) -> Target {
        Target::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Target {
    fn from(p: &PathBuf) -> Target {
        Target::Sqlite(p.clone())
    }
}

impl From<PathBuf> for Target {
    fn from(p: PathBuf) -> Target {
        Target::Sqlite(p)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

/// The schema named after `key` on the PostgreSQL server at `url` (made if missing), as
/// a target whose connections use it: for tests that each need a database of their own,
/// and find it again after a restart.
pub fn scratch_schema(url: &str, key: &str) -> anyhow::Result<Target> {
    let admin = Handle::open(&Target::Postgres(url.to_string()), Access::ReadWrite)?;
    // FNV-1a: a stable name of letters and digits for any key.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let schema = format!("t_{hash:016x}");
    admin
        .conn()
        .execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(Target::Postgres(format!(
        "{url}{sep}options=-c%20search_path%3D{schema}"
    )))
}

/// An open connection, owned.
pub enum Handle {
    Sqlite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

/// How a SQLite connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

impl Handle {
    /// Opens a connection. A SQLite file opened read-write gets WAL, full synchronous
    /// commits and foreign keys; every connection waits up to 10 s for a lock.
    pub fn open(target: &Target, access: Access) -> anyhow::Result<Handle> {
        match target {
            Target::Sqlite(path) => {
                let c = match access {
                    Access::ReadWrite => {
                        if let Some(dir) = path.parent() {
                            std::fs::create_dir_all(dir)
                                .with_context(|| format!("cannot create {}", dir.display()))?;
                        }
                        let c = rusqlite::Connection::open(path)
                            .with_context(|| format!("cannot open {}", path.display()))?;
                        c.execute_batch(
                            "PRAGMA journal_mode = WAL;
                             PRAGMA synchronous = FULL;
                             PRAGMA foreign_keys = ON;
                             PRAGMA cache_size = -32000;",
                        )
                        .with_context(|| format!("cannot configure {}", path.display()))?;
                        c
                    }
                    Access::ReadOnly => rusqlite::Connection::open_with_flags(
                        path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .with_context(|| format!("cannot open {}", path.display()))?,
                };
                c.busy_timeout(Duration::from_secs(10))?;
                c.set_prepared_statement_cache_capacity(64);
                Ok(Handle::Sqlite(c))
            }
            Target::Postgres(url) => {
                let c =
                    PgConn::connect(url).with_context(|| format!("cannot connect to {target}"))?;
                c.batch("SET lock_timeout = '10s'")?;
                Ok(Handle::Pg(Box::new(c)))
            }
        }
    }

    pub fn conn(&self) -> Connection<'_> {
        Connection {
            inner: match self {
                Handle::Sqlite(c) => Inner::Sqlite(c),
                Handle::Pg(c) => Inner::Pg(c),
            },
        }
    }

    fn is_broken(&self) -> bool {
        match self {
            Handle::Sqlite(_) => false,
            Handle::Pg(c) => c.is_closed(),
        }
    }
}

/// Connections to one database for blocking work off the async threads, at most
/// `size` at a time.
pub struct Pool {
    target: Target,
    access: Access,
    idle: Mutex<Vec<Handle>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub fn new(target: Target, access: Access, size: usize) -> Arc<Pool> {
        Arc::new(Pool {
            target,
            access,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs `f` on a connection of the pool, on a blocking thread.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(Connection<'_>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .context("the connection pool is closed")?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            crate::pg::mark_blocking_thread();
            let _permit = permit;
            let handle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let handle = match handle {
                Some(h) => h,
                None => Handle::open(&pool.target, pool.access)?,
            };
            let out = f(handle.conn());
            if !handle.is_broken() {
                pool.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(handle);
            }
            out
        })
        .await
        .context("the database task failed")?
    }

    /// Runs `f` in a transaction that takes the write lock at once, on a connection of
    /// the pool; commits when it returns `Ok`.
    pub async fn transaction<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection<'_>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}
