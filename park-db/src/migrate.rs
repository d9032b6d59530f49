//! Versioned schema migrations: each component (the hub, the accounts) lists its
//! migrations in order, with a text for each engine. At start the ones not yet applied
//! run, each in its own transaction with its row in `schema_migrations`; a database that
//! has a version this build does not know is refused rather than written.

use anyhow::{Context as _, bail};

use crate::{Connection, Dialect, OptionalExtension as _, params};

/// One step of a component's schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

/// The newest version of `component` the database holds (0 for none).
pub fn version(c: &Connection<'_>, component: &str) -> crate::Result<i64> {
    c.execute_batch(TABLE)?;
    let v: Option<i64> = c
        .query_row(
            "SELECT max(version) FROM schema_migrations WHERE component = ?1",
            params![component],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(v.unwrap_or(0))
}

/// Applies the migrations of `component` the database lacks; answers how many ran.
/// Several processes starting together on PostgreSQL take turns (an advisory lock).
pub fn run(c: &Connection<'_>, component: &str, migrations: &[Migration]) -> anyhow::Result<usize> {
    for w in migrations.windows(2) {
        assert!(w[0].version < w[1].version, "migrations out of order");
    }
    let known = migrations.last().map(|m| m.version).unwrap_or(0);
    let mut applied = 0;
    loop {
        let tx = c.transaction()?;
        if tx.dialect() == Dialect::Postgres {
            tx.execute_batch(TABLE)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext(?1))",
                params![format!("schema {component}")],
            )?;
        }
        let current = version(&tx, component)?;
        if current > known {
            bail!(
                "the database holds {component} schema version {current}; this build knows up to {known}: run a newer build"
            );
        }
        let Some(m) = migrations.iter().find(|m| m.version > current) else {
            tx.commit()?;
            return Ok(applied);
        };
        let sql = match tx.dialect() {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        tx.execute_batch(sql)
            .with_context(|| format!("{component} migration {} ({}) failed", m.version, m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![component, m.version, m.name, now_micros()],
        )?;
        tx.commit()?;
        applied += 1;
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
