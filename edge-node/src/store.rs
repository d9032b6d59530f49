//! The telemetry store: one SQLite file in WAL mode, written by one writer thread with group
//! commit, read by API handlers on their own connections.
//!
//! What a power cut can lose: nothing that was committed. The writer commits with
//! `synchronous = FULL`, so a commit is on disk (the WAL is fsynced) before the samples in it
//! are counted as committed, shown by the API, or streamed live. Samples still queued for the
//! writer (at most one group commit's worth, a few milliseconds at full load) are lost with
//! the process; they were never reported stored. The writer takes whatever has queued up
//! while the previous commit was being synced, so batches grow with load and the fsync cost
//! is shared.
//!
//! Raw samples are stored in arrival order with an index on time, so that a commit touches
//! only the last pages of the table; per-point reads of long ranges go to the rollups.
//! Retention and the disk budget delete the oldest raw telemetry first; rollups of closed
//! buckets are kept longer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use device_drivers::profile::PointKind;
use device_drivers::{PointKey, Quality, Sample, Timestamp, Value, now_micros};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::rollup::{self, Agg, CounterEvent, LEVELS, Level, PointMeta, RollupRow, Rollups};

/// 2: the audit log is hash-chained (`audit_log`), and accounts, sessions and API tokens
/// are kept (`auth.rs`).
const SCHEMA_VERSION: i64 = 3;

/// How long after a bucket ends the writer waits for late samples before closing it.
const ROLLUP_GRACE: i64 = 5_000_000;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub raw_retention_days: u32,
    /// How long 1-minute rollups are kept.
    pub minute_rollup_retention_days: u32,
    /// How long 15-minute and hourly rollups are kept.
    pub rollup_retention_days: u32,
    /// How long access and parking logs (`access.*`, `parking.*` events) are kept.
    pub log_retention_days: u32,
    pub budget_bytes: u64,
    /// The most samples one transaction takes; more wait for the next commit.
    pub max_batch_samples: usize,
    /// How often retention and the disk budget are enforced.
    pub maintenance_interval: Duration,
    /// A size the file can never pass (SQLite's `max_page_count`); reaching it is handled
    /// like a full disk. `None` leaves the file system as the only limit.
    pub hard_limit_bytes: Option<u64>,
}

impl StoreConfig {
    pub fn new(path: PathBuf) -> Self {
        StoreConfig {
            path,
            raw_retention_days: 14,
            minute_rollup_retention_days: 31,
            rollup_retention_days: 800,
            log_retention_days: 180,
            budget_bytes: 4 << 30,
            max_batch_samples: 20_000,
            maintenance_interval: Duration::from_secs(10),
            hard_limit_bytes: None,
        }
    }
}

/// A point as the store knows it.
#[derive(Debug, Clone)]
pub struct PointInfo {
    pub key: PointKey,
    pub unit: Option<String>,
    pub kind: PointKind,
    pub wrap: Option<f64>,
}

/// A write that rides along in the writer's next group commit. It runs in a savepoint of
/// its own, so an op that fails is rolled back alone and told so; the others commit. It may
/// run more than once if the whole commit fails and is retried, hence `FnMut`.
pub type WriteOp = Box<dyn FnMut(&rusqlite::Connection) -> rusqlite::Result<()> + Send>;

/// An op of the accounts (written against [`park_db`]) as one of this store's.
pub fn account_op(mut op: accounts::WriteOp) -> WriteOp {
    Box::new(move |c| Ok(op(&park_db::Connection::sqlite(c))?))
}

/// Runs on the writer's thread once the op it follows is committed (`Ok`) or refused (`Err`).
/// It must be quick and must not block: the next commit waits for it.
pub type AfterOp = Box<dyn FnOnce(Result<(), String>) + Send>;

struct PendingOp {
    op: WriteOp,
    result: Option<rusqlite::Error>,
    done: Done,
}

/// How the one who queued an op learns its outcome.
enum Done {
    Notify(oneshot::Sender<Result<(), String>>),
    Then(AfterOp),
}

enum WriterMsg {
    Samples(Vec<Sample>, Instant),
    Op(WriteOp, Done),
    Tick,
    Flush(oneshot::Sender<()>),
}

/// Shared between the writer, the API and the node.
pub struct StoreShared {
    pub metrics: Arc<Metrics>,
    latest: RwLock<HashMap<PointKey, Sample>>,
    live: broadcast::Sender<Arc<Vec<Sample>>>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
}

/// The handle that drivers and the API use. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<WriterMsg>,
    shared: Arc<StoreShared>,
}

impl Store {
    /// Opens (or creates) the store, registers the configured points, rebuilds the open
    /// rollup state, and starts the writer thread.
    pub fn open(
        config: StoreConfig,
        points: &[PointInfo],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Store> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = open_writer(&config.path)?;
        if let Some(limit) = config.hard_limit_bytes {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            conn.query_row(
                &format!("PRAGMA max_page_count = {}", limit as i64 / page),
                [],
                |_| Ok(()),
            )?;
        }
        let mut writer = Writer::new(conn, config.clone(), metrics.clone())?;
        // Checkpoints run on a connection of their own (see `checkpointer`).
        let checkpoint_conn = Connection::open(&config.path)
            .with_context(|| format!("cannot open the store {}", config.path.display()))?;
        checkpoint_conn.busy_timeout(Duration::from_secs(5))?;
        writer.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (checkpoint_tx, checkpoint_rx) = std::sync::mpsc::sync_channel(1);
        writer.checkpoint = Some(checkpoint_tx);
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_conn, checkpoint_rx))
            .context("cannot start the checkpoint thread")?;
        for p in points {
            writer.register(p)?;
        }
        writer.rebuild_rollups()?;
        writer.measure_size()?;
        let latest = writer.load_latest()?;
        let (tx, rx) = mpsc::channel(4096);
        let (live, _) = broadcast::channel(1024);
        let shared = Arc::new(StoreShared {
            metrics,
            latest: RwLock::new(latest),
            live,
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            path: config.path.clone(),
            readers: Mutex::new(Vec::new()),
        });
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx, s2))
            .context("cannot start the writer thread")?;
        let tick_tx = tx.clone();
        std::thread::Builder::new()
            .name("store-ticker".into())
            .spawn(move || {
                while tick_tx.blocking_send(WriterMsg::Tick).is_ok() {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .context("cannot start the store ticker")?;
        Ok(Store { tx, shared })
    }

    /// Queues samples for the writer; waits while the writer's queue is full.
    pub async fn ingest(&self, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        self.shared
            .metrics
            .samples_received_total
            .fetch_add(samples.len() as u64, Relaxed);
        self.shared
            .metrics
            .writer_queue_batches
            .fetch_add(1, Relaxed);
        if self
            .tx
            .send(WriterMsg::Samples(samples, Instant::now()))
            .await
            .is_err()
        {
            tracing::error!("The store writer has stopped; samples are not being stored.");
        }
    }

    /// Returns once everything queued before the call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs `op` in the writer's next group commit; returns once it is durably committed,
    /// or with the op's own error (then nothing of it was written).
    pub async fn write(&self, op: WriteOp) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.queue_op(op, Done::Notify(tx)).await?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the store writer has stopped"))?
            .map_err(|e| anyhow::anyhow!("store write refused: {e}"))
    }

    /// Queues `op` for the writer now, in call order, and returns a future that resolves
    /// once it is committed. Callers that must keep writes in order but need not wait for
    /// each one (decisions at a busy door) submit in order and await elsewhere.
    pub async fn submit(
        &self,
        op: WriteOp,
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send + 'static> {
        let (tx, rx) = oneshot::channel();
        self.queue_op(op, Done::Notify(tx)).await?;
        Ok(async move {
            rx.await
                .map_err(|_| anyhow::anyhow!("the store writer has stopped"))?
                .map_err(|e| anyhow::anyhow!("store write refused: {e}"))
        })
    }

    /// Queues `op` for the writer now, in call order, and has the writer's thread run `after`
    /// with its outcome right after the commit, with no task to wake in between. Meant for
    /// what must follow a durable write as soon as possible: a door's unlock command.
    pub async fn submit_then(&self, op: WriteOp, after: AfterOp) -> anyhow::Result<()> {
        self.queue_op(op, Done::Then(after)).await
    }

    /// Counts the op as waiting before it is queued, so that a commit of samples under way
    /// sees it (see `Writer::commit`).
    async fn queue_op(&self, op: WriteOp, done: Done) -> anyhow::Result<()> {
        let waiting = &self.shared.metrics.writer_queue_ops;
        waiting.fetch_add(1, Relaxed);
        if self.tx.send(WriterMsg::Op(op, done)).await.is_err() {
            waiting.fetch_sub(1, Relaxed);
            anyhow::bail!("the store writer has stopped");
        }
        Ok(())
    }

    /// Records an audited act that writes nothing else; returns once it is committed.
    pub async fn audit(&self, entry: accounts::Audit) -> anyhow::Result<()> {
        self.write(account_op(entry.op())).await
    }

    pub fn shared(&self) -> &Arc<StoreShared> {
        &self.shared
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Sample>>> {
        self.shared.live.subscribe()
    }

    pub fn latest(&self) -> HashMap<PointKey, Sample> {
        self.shared
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn latest_of(&self, key: &PointKey) -> Option<Sample> {
        self.shared
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Whether the writer is committing; `Err` carries the reason it is not.
    pub fn health(&self) -> Result<(), String> {
        if self.shared.healthy.load(Relaxed) {
            Ok(())
        } else {
            Err(self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default())
        }
    }

    /// Runs `f` on a read connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = {
                let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
                pool.pop()
            };
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&shared.path)?,
            };
            let result = f(&conn).context("store read failed");
            let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 4 {
                pool.push(conn);
            }
            result
        })
        .await
        .context("store read task failed")?
    }

    /// Raw samples of one point in `[from, to)`, oldest first, at most `limit`.
    pub async fn raw_history(
        &self,
        key: &PointKey,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> anyhow::Result<Vec<Sample>> {
        let key = key.clone();
        self.read(move |c| {
            let Some(id) = point_id(c, &key)? else {
                return Ok(Vec::new());
            };
            let mut stmt = c.prepare_cached(
                "SELECT ts, value, q, reason FROM samples INDEXED BY samples_ts
                 WHERE ts >= ?1 AND ts < ?2 AND point_id = ?3 ORDER BY ts LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![from, to, id, limit as i64], |r| {
                Ok(decode_sample(
                    key.clone(),
                    r.get(0)?,
                    r.get_ref(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Rollup rows of one point at `level` with buckets in `[from, to)`.
    pub async fn rollup_history(
        &self,
        key: &PointKey,
        level: Level,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, Agg)>> {
        let key = key.clone();
        self.read(move |c| {
            let Some(id) = point_id(c, &key)? else { return Ok(Vec::new()) };
            let mut stmt = c.prepare_cached(
                "SELECT bucket, min, max, sum, count, last, last_ts, delta, bad FROM rollups
                 WHERE level = ?1 AND point_id = ?2 AND bucket >= ?3 AND bucket < ?4 ORDER BY bucket LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![level.code(), id, from, to, limit as i64], |r| Ok((r.get(0)?, agg_from_row(r, 1)?)))?;
            rows.collect()
        })
        .await
    }

    /// How many raw samples the store holds for each point (for tests and the API).
    pub async fn counts(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT p.key, count(*) FROM samples s JOIN points p ON p.id = s.point_id GROUP BY p.key")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
        .await
    }
}

fn agg_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Agg> {
    Ok(Agg {
        min: r.get::<_, Option<f64>>(at)?.unwrap_or(f64::NAN),
        max: r.get::<_, Option<f64>>(at + 1)?.unwrap_or(f64::NAN),
        sum: r.get(at + 2)?,
        count: r.get::<_, i64>(at + 3)? as u64,
        last: r.get::<_, Option<f64>>(at + 4)?.unwrap_or(f64::NAN),
        last_ts: r.get(at + 5)?,
        delta: r.get(at + 6)?,
        bad: r.get::<_, i64>(at + 7)? as u64,
    })
}

fn point_id(c: &Connection, key: &PointKey) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM points WHERE key = ?1")?
        .query_row([key.as_str()], |r| r.get(0))
        .optional()
}

// Values are stored in a column without type affinity, with their kind and the quality
// packed into `q`, so that a boolean comes back as a boolean and an integer keeps its digits.
const VK_NONE: i64 = 0;
const VK_BOOL: i64 = 1;
const VK_INT: i64 = 2;
const VK_FLOAT: i64 = 3;
const VK_TEXT: i64 = 4;

fn encode_value(v: &Option<Value>) -> (ToSqlOutput<'_>, i64) {
    use rusqlite::types::Value as V;
    match v {
        None => (ToSqlOutput::Owned(V::Null), VK_NONE),
        Some(Value::Bool(b)) => (ToSqlOutput::Owned(V::Integer(*b as i64)), VK_BOOL),
        Some(Value::Int(i)) => (ToSqlOutput::Owned(V::Integer(*i)), VK_INT),
        Some(Value::Float(f)) => (ToSqlOutput::Owned(V::Real(*f)), VK_FLOAT),
        Some(Value::Text(t)) => (ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())), VK_TEXT),
    }
}

fn decode_sample(
    point: PointKey,
    ts: Timestamp,
    value: ValueRef<'_>,
    q: i64,
    reason: Option<String>,
) -> Sample {
    let value = match (q >> 4, value) {
        (VK_BOOL, ValueRef::Integer(i)) => Some(Value::Bool(i != 0)),
        (VK_INT, ValueRef::Integer(i)) => Some(Value::Int(i)),
        (VK_FLOAT, ValueRef::Real(f)) => Some(Value::Float(f)),
        (VK_FLOAT, ValueRef::Integer(i)) => Some(Value::Float(i as f64)),
        (VK_TEXT, ValueRef::Text(t)) => Some(Value::Text(String::from_utf8_lossy(t).into())),
        _ => None,
    };
    Sample {
        point,
        ts,
        value,
        quality: Quality::from_code((q & 0xf) as u8, reason.as_deref()),
    }
}

fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    // auto_vacuum must be chosen before the first table exists; it lets the disk budget
    // hand freed pages back to the file system.
    conn.execute_batch(
        "PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;
         PRAGMA busy_timeout = 5000;",
    )
    .context("cannot configure the store")?;
    let integrity: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .context("store integrity check failed")?;
    anyhow::ensure!(
        integrity == "ok",
        "the store {} is damaged: {integrity}",
        path.display()
    );
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS points (
             id INTEGER PRIMARY KEY,
             key TEXT NOT NULL UNIQUE,
             unit TEXT,
             kind TEXT NOT NULL DEFAULT 'gauge',
             wrap REAL
         );
         CREATE TABLE IF NOT EXISTS samples (
             ts INTEGER NOT NULL,
             point_id INTEGER NOT NULL,
             value ANY,
             q INTEGER NOT NULL,
             reason TEXT
         );
         CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
         CREATE TABLE IF NOT EXISTS rollups (
             level INTEGER NOT NULL,
             point_id INTEGER NOT NULL,
             bucket INTEGER NOT NULL,
             min REAL, max REAL, sum REAL NOT NULL, count INTEGER NOT NULL,
             last REAL, last_ts INTEGER NOT NULL, delta REAL NOT NULL, bad INTEGER NOT NULL,
             version INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (level, point_id, bucket)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS rollups_bucket ON rollups (level, bucket);
         CREATE INDEX IF NOT EXISTS rollups_version ON rollups (version);
         CREATE TABLE IF NOT EXISTS events (
             seq INTEGER PRIMARY KEY,
             id TEXT NOT NULL UNIQUE,
             ts INTEGER NOT NULL,
             kind TEXT NOT NULL,
             subject TEXT NOT NULL,
             body TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
         CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts);
         CREATE TABLE IF NOT EXISTS documents (
             doc_id TEXT PRIMARY KEY,
             snapshot BLOB NOT NULL,
             updated INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS doc_chunks (
             doc_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             data BLOB NOT NULL,
             PRIMARY KEY (doc_id, seq)
         ) WITHOUT ROWID;
         -- `version` counts the writes of a document's bytes; the row copy in `doc_cache`
         -- matches the document only while `cache_version` equals it (see docs.rs).
         CREATE TABLE IF NOT EXISTS doc_versions (
             doc_id TEXT PRIMARY KEY,
             version INTEGER NOT NULL,
             cache_version INTEGER,
             cache_format TEXT
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS doc_cache (
             doc_id TEXT NOT NULL,
             collection TEXT NOT NULL,
             id TEXT NOT NULL,
             value TEXT NOT NULL,
             PRIMARY KEY (doc_id, collection, id)
         ) WITHOUT ROWID;
         -- A person's credentials in the directory's copy (the people view); rows that are
         -- not JSON are left out rather than refused.
         CREATE INDEX IF NOT EXISTS doc_cache_credential_person ON doc_cache (
             doc_id,
             (CASE WHEN json_valid(value) THEN json_extract(value, '$.person_id') END)
         ) WHERE collection = 'credentials';
         CREATE TABLE IF NOT EXISTS parking_sessions (
             id TEXT PRIMARY KEY,
             lot TEXT NOT NULL,
             plate TEXT NOT NULL,
             entry_lane TEXT NOT NULL,
             entered_at INTEGER NOT NULL,
             kind TEXT NOT NULL,
             state TEXT NOT NULL,
             exit_lane TEXT,
             exited_at INTEGER,
             fee_fen INTEGER,
             currency TEXT,
             paid_fen INTEGER NOT NULL DEFAULT 0
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS parking_sessions_state ON parking_sessions (state, lot);
         CREATE TABLE IF NOT EXISTS parking_payments (
             id TEXT PRIMARY KEY,
             session TEXT NOT NULL,
             amount_fen INTEGER NOT NULL,
             currency TEXT NOT NULL,
             method TEXT NOT NULL,
             ts INTEGER NOT NULL,
             counted INTEGER NOT NULL DEFAULT 1
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS presence (
             person TEXT NOT NULL,
             area TEXT NOT NULL,
             inside INTEGER NOT NULL,
             ts INTEGER NOT NULL,
             PRIMARY KEY (person, area)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS review_queue (
             id TEXT PRIMARY KEY,
             lane TEXT NOT NULL,
             plate TEXT NOT NULL,
             confidence REAL NOT NULL,
             direction TEXT NOT NULL,
             image TEXT,
             ts INTEGER NOT NULL,
             resolved_at INTEGER,
             resolution TEXT
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS sync_cursors (
             stream TEXT PRIMARY KEY,
             acked INTEGER NOT NULL,
             base INTEGER NOT NULL DEFAULT 0
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS latest (
             point_id INTEGER PRIMARY KEY,
             ts INTEGER NOT NULL,
             value ANY,
             q INTEGER NOT NULL,
             reason TEXT
);",
    )
    .context("cannot create the store schema")?;
    conn.execute_batch(accounts::audit::SCHEMA)
        .context("cannot create the audit log")?;
    conn.execute_batch(accounts::auth::SCHEMA)
        .context("cannot create the account tables")?;
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(v @ (1 | 2)) => {
            let tx = conn.unchecked_transaction()?;
            if v == 1 {
                // The first schema kept an audit table without a chain: its rows join the
                // chain, marked as unverified.
                let n = accounts::audit::migrate_unchained(&park_db::Connection::sqlite(&tx))
                    .context("cannot bring the audit log into its chained form")?;
                tracing::info!(rows = n, "The store's audit log is now hash-chained.");
            }
            // Schema 3: a lane payment records whether it counted towards its session's fee
            // (a payment in another currency, or at another lane, is kept but not counted).
            let has_counted: bool = tx
                .prepare(
                    "SELECT 1 FROM pragma_table_info('parking_payments') WHERE name = 'counted'",
                )?
                .exists([])?;
            if !has_counted {
                tx.execute_batch(
                    "ALTER TABLE parking_payments ADD COLUMN counted INTEGER NOT NULL DEFAULT 1",
                )?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [SCHEMA_VERSION],
            )?;
            tx.commit()?;
            tracing::info!(
                from = v,
                to = SCHEMA_VERSION,
                "The store's schema moved on."
            );
        }
        Some(v) => anyhow::bail!(
            "the store {} has schema version {v}; this build knows {SCHEMA_VERSION}",
            path.display()
        ),
    }
    Ok(conn)
}

/// WAL frames (4 KiB pages) beyond which a checkpoint that could not finish alongside
/// readers is forced: about 256 MiB.
const WAL_FORCE_FRAMES: i64 = 65_536;

/// How often, at most, the writer asks for a checkpoint: after a commit, once this long has
/// passed since the last ask. Small, frequent checkpoints keep each fsync of the database
/// file short: the commits' own fsyncs go to the same disk and can wait behind it.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies the WAL into the database file from a connection of its own, when the writer asks.
/// With SQLite's automatic checkpoints the copy and its fsync ran inside whichever commit
/// crossed the threshold, and everything waiting on that commit (a door decision waits for
/// its event to be durable) waited for them too. A passive checkpoint does not hold up the
/// writer; only a WAL grown past `WAL_FORCE_FRAMES` is truncated in a blocking one.
fn checkpointer(conn: Connection, asks: std::sync::mpsc::Receiver<()>) {
    let run = |mode: &str| -> rusqlite::Result<(i64, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
    };
    while asks.recv().is_ok() {
        match run("PASSIVE") {
            Ok((log, done)) if log > WAL_FORCE_FRAMES && done < log => {
                if let Err(e) = run("TRUNCATE") {
                    tracing::warn!(error = %e, "The store's WAL could not be truncated.");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Store checkpoint failed; it is tried again."),
        }
    }
}

/// Opens the store's database for a change made on the host beside a running node (or
/// before the node ever ran, when the file is created with the node's whole schema).
pub fn open_for_admin(path: &Path) -> anyhow::Result<Connection> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        return open_writer(path);
    }
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .context("the file is not a smartpark edge store")?;
    anyhow::ensure!(
        version == Some(SCHEMA_VERSION),
        "the store {} has schema version {version:?}; start the node of this build once first, which brings it to {SCHEMA_VERSION}",
        path.display()
    );
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

struct Writer {
    conn: Connection,
    config: StoreConfig,
    metrics: Arc<Metrics>,
    ids: HashMap<PointKey, i64>,
    rollups: Rollups,
    rows: Vec<RollupRow>,
    last_maintenance: Instant,
    /// Asks the checkpoint thread for a checkpoint (see `CHECKPOINT_EVERY`).
    checkpoint: Option<std::sync::mpsc::SyncSender<()>>,
    last_checkpoint: Instant,
    /// Per point, the newest sample committed since the last snapshot of `latest`.
    dirty_latest: HashMap<i64, Sample>,
    /// A snapshot of `latest` being written, `LATEST_CHUNK` points per commit, and the rowid
    /// up to which it is complete once all of it is written.
    latest_backlog: Vec<(i64, Sample)>,
    backlog_rowid: i64,
    latest_ts: HashMap<i64, i64>,
}

/// The committed point ids and an empty rollup state at the stored watermarks.
fn load_state(conn: &Connection) -> anyhow::Result<(HashMap<PointKey, i64>, Rollups)> {
    let mut wm = [0i64; 3];
    for (i, l) in LEVELS.iter().enumerate() {
        wm[i] = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("rollup_watermark_{}", l.name())],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
    }
    let mut ids = HashMap::new();
    let mut rollups = Rollups::new(wm);
    {
        let mut stmt = conn.prepare("SELECT id, key, kind, wrap FROM points")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<f64>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, key, kind, wrap) = row?;
            if let Some(k) = PointKey::parse(&key) {
                ids.insert(k, id);
                rollups.set_meta(
                    id,
                    PointMeta {
                        kind: kind_from_str(&kind),
                        wrap,
                    },
                );
            }
        }
    }
    Ok((ids, rollups))
}

impl Writer {
    fn new(conn: Connection, config: StoreConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (ids, rollups) = load_state(&conn)?;
        Ok(Writer {
            conn,
            config,
            metrics,
            ids,
            rollups,
            rows: Vec::new(),
            last_maintenance: Instant::now(),
            checkpoint: None,
            last_checkpoint: Instant::now(),
            dirty_latest: HashMap::new(),
            latest_backlog: Vec::new(),
            backlog_rowid: 0,
            latest_ts: HashMap::new(),
        })
    }

    fn register(&mut self, p: &PointInfo) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO points (key, unit, kind, wrap) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET unit = excluded.unit, kind = excluded.kind, wrap = excluded.wrap",
            params![p.key.as_str(), p.unit, kind_name(p.kind), p.wrap],
        )?;
        let id: i64 = self.conn.query_row(
            "SELECT id FROM points WHERE key = ?1",
            [p.key.as_str()],
            |r| r.get(0),
        )?;
        self.ids.insert(p.key.clone(), id);
        self.rollups.set_meta(
            id,
            PointMeta {
                kind: p.kind,
                wrap: p.wrap,
            },
        );
        Ok(())
    }

    /// Rebuilds the open rollup buckets after a restart: higher levels from the closed
    /// minutes after their watermarks, minutes from the raw samples after the 1-minute
    /// watermark, and each counter's previous value from the last closed minute.
    fn rebuild_rollups(&mut self) -> anyhow::Result<()> {
        let [wm1, wm15, wm60] = self.rollups.watermarks();
        {
            // One index seek per counter: the last closed minute that had a value.
            let mut stmt = self.conn.prepare(
                "SELECT last, last_ts FROM rollups WHERE level = 1 AND point_id = ?1 AND count > 0
                 ORDER BY bucket DESC LIMIT 1",
            )?;
            for id in self.rollups.counters() {
                let row = stmt
                    .query_row([id], |r| {
                        Ok((r.get::<_, Option<f64>>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?;
                if let Some((Some(last), ts)) = row {
                    self.rollups.seed_counter(id, last, ts);
                }
            }
        }
        {
            let mut stmt = self.conn.prepare(
                "SELECT point_id, bucket, min, max, sum, count, last, last_ts, delta, bad FROM rollups
                 WHERE level = 1 AND bucket >= ?1 AND bucket < ?2 ORDER BY bucket",
            )?;
            let rows = stmt.query_map(params![wm15.min(wm60), wm1], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    agg_from_row(r, 2)?,
                ))
            })?;
            for row in rows {
                let (id, bucket, agg) = row?;
                self.rollups.replay_closed_minute(id, bucket, &agg);
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT point_id, ts, value, q FROM samples WHERE ts >= ?1 ORDER BY ts")?;
        let mut rows = stmt.query([wm1])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let q: i64 = r.get(3)?;
            let v = numeric(r.get_ref(2)?, q);
            self.rollups.add(r.get(0)?, r.get(1)?, v, &mut out);
        }
        // Rows for closed buckets were written before the crash; the replay only restores
        // the open state, so what it would write again is dropped.
        Ok(())
    }

    /// The latest sample of every point: the snapshot in `latest` (taken every second),
    /// brought up to date from the raw samples appended after it, a short scan by rowid.
    fn load_latest(&mut self) -> anyhow::Result<HashMap<PointKey, Sample>> {
        let keys: HashMap<i64, PointKey> =
            self.ids.iter().map(|(k, id)| (*id, k.clone())).collect();
        let mut by_id: HashMap<i64, Sample> = HashMap::new();
        let since: i64 = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'latest_rowid'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let max_rowid: i64 =
            self.conn
                .query_row("SELECT coalesce(max(rowid), 0) FROM samples", [], |r| {
                    r.get(0)
                })?;
        // Rowids only grow while the newest rows exist; if the table was emptied they may
        // start again, and then everything left is newer than the snapshot.
        let since = if since > max_rowid { 0 } else { since };
        for sql in [
            "SELECT point_id, ts, value, q, reason FROM latest",
            "SELECT point_id, ts, value, q, reason FROM samples WHERE rowid > ?1",
        ] {
            let mut stmt = self.conn.prepare(sql)?;
            let mut rows = if sql.contains("?1") {
                stmt.query([since])?
            } else {
                stmt.query([])?
            };
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let ts: i64 = r.get(1)?;
                let Some(key) = keys.get(&id) else { continue };
                if by_id.get(&id).is_some_and(|s| s.ts > ts) {
                    continue;
                }
                by_id.insert(
                    id,
                    decode_sample(key.clone(), ts, r.get_ref(2)?, r.get(3)?, r.get(4)?),
                );
            }
        }
        self.latest_ts = by_id.iter().map(|(id, s)| (*id, s.ts)).collect();
        Ok(by_id.into_values().map(|s| (s.point.clone(), s)).collect())
    }
}

/// Points of the `latest` snapshot written per commit: a snapshot of thousands of points in
/// one commit would hold up the ops queued behind it for several milliseconds.
const LATEST_CHUNK: usize = 500;

/// Writes newest samples into `latest` (an older one never replaces a newer one).
fn write_latest(samples: &[(i64, Sample)], tx: &rusqlite::Transaction<'_>) -> anyhow::Result<()> {
    let mut up = tx.prepare_cached(
            "INSERT INTO latest (point_id, ts, value, q, reason) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (point_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, q = excluded.q, reason = excluded.reason
             WHERE excluded.ts >= latest.ts",
        )?;
    for (id, s) in samples {
        let (value, vk) = encode_value(&s.value);
        up.execute(params![
            id,
            s.ts,
            value,
            (vk << 4) | s.quality.code() as i64,
            s.quality.reason()
        ])?;
    }
    Ok(())
}

/// Tells the callers of committed ops how each went.
fn answer(ops: &mut Vec<PendingOp>) {
    for op in ops.drain(..) {
        let outcome = op.result.map_or(Ok(()), |e| Err(e.to_string()));
        match op.done {
            Done::Notify(tx) => {
                let _ = tx.send(outcome);
            }
            Done::Then(after) => after(outcome),
        }
    }
}

/// Samples a commit takes in before it lets queued ops cut it short, so that samples still
/// move when ops arrive faster than commits finish. About 0.1 ms of inserts.
const SAMPLES_BEFORE_OPS: u64 = 128;

/// What the writer took from its queue while letting ops into a commit: handled after it.
#[derive(Default)]
struct Late {
    samples: Vec<(Vec<Sample>, Instant)>,
    flushes: Vec<oneshot::Sender<()>>,
    tick: bool,
}

/// Runs one op in a savepoint of its own: an op that fails is rolled back alone and keeps its
/// error; a full disk fails the whole commit.
fn run_op(tx: &mut rusqlite::Transaction<'_>, p: &mut PendingOp) -> rusqlite::Result<()> {
    let sp = tx.savepoint()?;
    match (p.op)(&sp) {
        Ok(()) => {
            sp.commit()?;
            p.result = None;
        }
        Err(e) if is_full(&e) => return Err(e),
        Err(e) => p.result = Some(e), // Dropping the savepoint rolls it back.
    }
    Ok(())
}

/// Removes the first `n` samples from `pending`, splitting a batch if it must.
fn take_front(
    pending: &mut Vec<(Vec<Sample>, Instant)>,
    mut n: usize,
) -> Vec<(Vec<Sample>, Instant)> {
    let mut whole = 0;
    while whole < pending.len() && pending[whole].0.len() <= n {
        n -= pending[whole].0.len();
        whole += 1;
    }
    let mut taken: Vec<_> = pending.drain(..whole).collect();
    if n > 0
        && let Some((first, at)) = pending.first_mut()
    {
        let rest = first.split_off(n);
        taken.push((std::mem::replace(first, rest), *at));
    }
    taken
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>, shared: Arc<StoreShared>) {
        let mut pending: Vec<(Vec<Sample>, Instant)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut ops: Vec<PendingOp> = Vec::new();
        let mut tick = false;
        loop {
            if pending.is_empty()
                && flushes.is_empty()
                && ops.is_empty()
                && !tick
                && self.latest_backlog.is_empty()
            {
                match rx.blocking_recv() {
                    Some(m) => Self::take(
                        &self.metrics,
                        m,
                        &mut pending,
                        &mut flushes,
                        &mut ops,
                        &mut tick,
                    ),
                    None => return,
                }
            }
            // Group commit: take everything that queued up while the last commit was syncing.
            let mut n: usize = pending.iter().map(|(s, _)| s.len()).sum();
            while n < self.config.max_batch_samples {
                match rx.try_recv() {
                    Ok(m) => {
                        if let WriterMsg::Samples(s, _) = &m {
                            n += s.len();
                        }
                        Self::take(
                            &self.metrics,
                            m,
                            &mut pending,
                            &mut flushes,
                            &mut ops,
                            &mut tick,
                        );
                    }
                    Err(_) => break,
                }
            }
            // Someone waits on each op (a door decision waits for its event to be durable
            // before it unlocks): when samples or tick work would make the transaction long,
            // the ops go first in a short one of their own. If that fails they stay queued
            // and the commit below retries them and handles the error.
            if !ops.is_empty()
                && (!pending.is_empty() || tick || !self.latest_backlog.is_empty())
                && self.commit(&[], &mut ops, false, false, None).is_ok()
            {
                answer(&mut ops);
            }
            // Ops that arrive while the samples go in stop them early and join this commit,
            // unless a flush waits for all that is queued.
            let mut late = Late::default();
            let intake = flushes.is_empty().then_some((&mut rx, &mut late));
            let result = self.commit(&pending, &mut ops, tick, true, intake);
            let batches = pending.len();
            let committed = result
                .as_ref()
                .map_or(Vec::new(), |&n| take_front(&mut pending, n));
            let batches = (batches - pending.len()) as u64;
            pending.append(&mut late.samples);
            flushes.append(&mut late.flushes);
            match result {
                Ok(_) => {
                    shared
                        .metrics
                        .writer_queue_batches
                        .fetch_sub(batches, Relaxed);
                    shared.healthy.store(true, Relaxed);
                    let done = Instant::now();
                    let mut all = Vec::with_capacity(n);
                    for (samples, at) in committed {
                        let us = done.duration_since(at).as_micros() as u64;
                        shared
                            .metrics
                            .commit_latency
                            .observe_n_us(us, samples.len() as u64);
                        all.extend(samples);
                    }
                    if !all.is_empty() {
                        self.publish(&shared, all);
                    }
                    answer(&mut ops);
                    if pending.is_empty() {
                        for f in flushes.drain(..) {
                            let _ = f.send(());
                        }
                    }
                    tick = late.tick;
                }
                Err(e) => {
                    tick |= late.tick;
                    // Nothing is dropped: the batch stays pending and is retried, and the
                    // drivers wait on the full queue meanwhile.
                    self.metrics.commit_errors_total.fetch_add(1, Relaxed);
                    let full = is_disk_full(&e);
                    let msg = if full {
                        format!("disk full: {e:#}")
                    } else {
                        format!("{e:#}")
                    };
                    tracing::error!(error = %msg, "Store commit failed; retrying.");
                    *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                    shared.healthy.store(false, Relaxed);
                    // The failed transaction left nothing on disk, but it had already added
                    // its samples to the in-memory rollups and point ids: go back to what
                    // is committed before the batch is tried again.
                    if let Err(e) = self.reset_to_committed() {
                        tracing::error!(error = %format!("{e:#}"), "Could not reload the store's state.");
                    }
                    if full && let Err(e) = self.free_space(50_000) {
                        tracing::error!(error = %format!("{e:#}"), "Could not free space in the store.");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn reset_to_committed(&mut self) -> anyhow::Result<()> {
        let (ids, rollups) = load_state(&self.conn)?;
        self.ids = ids;
        self.rollups = rollups;
        self.rebuild_rollups()?;
        self.dirty_latest.clear();
        self.latest_ts.clear();
        Ok(())
    }

    fn take(
        metrics: &Metrics,
        m: WriterMsg,
        pending: &mut Vec<(Vec<Sample>, Instant)>,
        flushes: &mut Vec<oneshot::Sender<()>>,
        ops: &mut Vec<PendingOp>,
        tick: &mut bool,
    ) {
        match m {
            WriterMsg::Samples(s, at) => pending.push((s, at)),
            WriterMsg::Op(op, done) => {
                metrics.writer_queue_ops.fetch_sub(1, Relaxed);
                ops.push(PendingOp {
                    op,
                    result: None,
                    done,
                })
            }
            WriterMsg::Tick => *tick = true,
            WriterMsg::Flush(f) => flushes.push(f),
        }
    }

    fn publish(&self, shared: &StoreShared, all: Vec<Sample>) {
        {
            let mut latest = shared.latest.write().unwrap_or_else(|e| e.into_inner());
            for s in &all {
                match latest.get_mut(&s.point) {
                    Some(old) if old.ts > s.ts => {}
                    Some(old) => *old = s.clone(),
                    None => {
                        latest.insert(s.point.clone(), s.clone());
                    }
                }
            }
        }
        let _ = shared.live.send(Arc::new(all));
    }

    /// Commits `ops` and then `pending`'s samples, in order, with the tick's work when `tick`
    /// and, when `background`, a chunk of the `latest` snapshot. Returns how many of the
    /// samples it committed: all of them, unless `intake` is given and an op was queued
    /// meanwhile (once `SAMPLES_BEFORE_OPS` are in). Then the samples stop there, and
    /// everything queued so far is taken from `intake`: its ops join this commit, the rest
    /// waits in `Late`. So an op waits for the rest of one commit, not for a whole batch.
    fn commit(
        &mut self,
        pending: &[(Vec<Sample>, Instant)],
        ops: &mut Vec<PendingOp>,
        tick: bool,
        background: bool,
        intake: Option<(&mut mpsc::Receiver<WriterMsg>, &mut Late)>,
    ) -> anyhow::Result<usize> {
        self.rows.clear();
        let mut tx = self.conn.transaction()?;
        for p in ops.iter_mut() {
            run_op(&mut tx, p)?;
        }
        let mut committed = 0u64;
        let mut bad = 0u64;
        let preemptible = intake.is_some();
        let mut preempted = false;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO samples (ts, point_id, value, q, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            'samples: for (samples, _) in pending {
                for s in samples {
                    if preemptible
                        && committed >= SAMPLES_BEFORE_OPS
                        && self.metrics.writer_queue_ops.load(Relaxed) > 0
                    {
                        preempted = true;
                        break 'samples;
                    }
                    let id = match self.ids.get(&s.point) {
                        Some(id) => *id,
                        None => {
                            tx.execute(
                                "INSERT OR IGNORE INTO points (key) VALUES (?1)",
                                [s.point.as_str()],
                            )?;
                            let id: i64 = tx.query_row(
                                "SELECT id FROM points WHERE key = ?1",
                                [s.point.as_str()],
                                |r| r.get(0),
                            )?;
                            self.ids.insert(s.point.clone(), id);
                            id
                        }
                    };
                    let (value, vk) = encode_value(&s.value);
                    let q = (vk << 4) | s.quality.code() as i64;
                    insert.execute(params![s.ts, id, value, q, s.quality.reason()])?;
                    let newest = self.latest_ts.entry(id).or_insert(i64::MIN);
                    if s.ts >= *newest {
                        *newest = s.ts;
                        self.dirty_latest.insert(id, s.clone());
                    }
                    let numeric = match s.quality {
                        Quality::Good | Quality::Uncertain(_) => {
                            s.value.as_ref().and_then(Value::as_f64)
                        }
                        Quality::Bad(_) | Quality::Stale => None,
                    };
                    if numeric.is_none() {
                        bad += 1;
                    }
                    match self.rollups.add(id, s.ts, numeric, &mut self.rows) {
                        CounterEvent::None => {}
                        CounterEvent::Wrapped => {
                            self.metrics.counter_wraps_total.fetch_add(1, Relaxed);
                        }
                        CounterEvent::Reset => {
                            self.metrics.counter_resets_total.fetch_add(1, Relaxed);
                        }
                    }
                    committed += 1;
                }
            }
        }
        if preempted && let Some((rx, late)) = intake {
            let first = ops.len();
            while let Ok(m) = rx.try_recv() {
                Self::take(
                    &self.metrics,
                    m,
                    &mut late.samples,
                    &mut late.flushes,
                    ops,
                    &mut late.tick,
                );
            }
            for p in &mut ops[first..] {
                run_op(&mut tx, p)?;
            }
        }
        // The `latest` snapshot: taken at a tick once the previous one is written, then
        // written a chunk per commit; `latest_rowid` moves only when all of it is in.
        if tick && self.latest_backlog.is_empty() && !self.dirty_latest.is_empty() {
            self.latest_backlog = self.dirty_latest.drain().collect();
            self.backlog_rowid =
                tx.query_row("SELECT coalesce(max(rowid), 0) FROM samples", [], |r| {
                    r.get(0)
                })?;
        }
        let backlog_from = if background {
            self.latest_backlog.len().saturating_sub(LATEST_CHUNK)
        } else {
            self.latest_backlog.len()
        };
        if backlog_from < self.latest_backlog.len() {
            write_latest(&self.latest_backlog[backlog_from..], &tx)?;
            if backlog_from == 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('latest_rowid', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [self.backlog_rowid],
                )?;
            }
        }
        if tick {
            let wm = self
                .rollups
                .sweep(now_micros() - ROLLUP_GRACE, &mut self.rows);
            let mut set = tx.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?;
            for (l, w) in LEVELS.iter().zip(wm) {
                set.execute(params![format!("rollup_watermark_{}", l.name()), w])?;
            }
        }
        if !self.rows.is_empty() {
            // Late samples each give a row for a closed bucket: merge them per bucket first.
            let mut merged: HashMap<(i64, i64, i64), (Level, Agg)> =
                HashMap::with_capacity(self.rows.len());
            for r in &self.rows {
                merged
                    .entry((r.level.code(), r.point, r.bucket))
                    .and_modify(|(_, a)| a.merge(&r.agg))
                    .or_insert((r.level, r.agg));
            }
            // Every commit that writes rollups is one version; a row carries the version that
            // last changed it, which is how the hub upload finds what changed (see outbox.rs).
            let version: i64 = tx.query_row(
                "INSERT INTO meta (key, value) VALUES ('rollup_version', 1)
                 ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
                [],
                |r| r.get(0),
            )?;
            let mut up = tx.prepare_cached(
                "INSERT INTO rollups (level, point_id, bucket, min, max, sum, count, last, last_ts, delta, bad, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (level, point_id, bucket) DO UPDATE SET
                   min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),
                   max = max(coalesce(max, excluded.max), coalesce(excluded.max, max)),
                   sum = sum + excluded.sum,
                   count = count + excluded.count,
                   last = CASE WHEN excluded.count > 0 AND excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
                   last_ts = CASE WHEN excluded.count > 0 AND excluded.last_ts >= last_ts THEN excluded.last_ts ELSE last_ts END,
                   delta = delta + excluded.delta,
                   bad = bad + excluded.bad,
                   version = excluded.version",
            )?;
            for ((level, point, bucket), (_, a)) in &merged {
                let f = |x: f64| x.is_finite().then_some(x);
                up.execute(params![
                    level,
                    point,
                    bucket,
                    f(a.min),
                    f(a.max),
                    a.sum,
                    a.count as i64,
                    f(a.last),
                    a.last_ts.max(0),
                    a.delta,
                    a.bad as i64,
                    version
                ])?;
            }
            self.metrics
                .rollup_rows_written_total
                .fetch_add(merged.len() as u64, Relaxed);
        }
        tx.commit()?;
        self.latest_backlog.truncate(backlog_from);
        if committed > 0 {
            self.metrics.commits_total.fetch_add(1, Relaxed);
            self.metrics
                .samples_committed_total
                .fetch_add(committed, Relaxed);
            self.metrics
                .samples_bad_quality_total
                .fetch_add(bad, Relaxed);
        }
        if let Some(c) = &self.checkpoint
            && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
        {
            self.last_checkpoint = Instant::now();
            let _ = c.try_send(());
        }
        if tick && self.last_maintenance.elapsed() >= self.config.maintenance_interval {
            self.last_maintenance = Instant::now();
            if let Err(e) = self.maintain() {
                tracing::warn!(error = %format!("{e:#}"), "Store maintenance failed.");
            }
        }
        Ok(committed as usize)
    }

    /// Retention and the disk budget. Runs in short transactions so that ingest is never
    /// held up for long.
    fn maintain(&mut self) -> anyhow::Result<()> {
        let now = now_micros();
        let day = 86_400_000_000i64;
        let raw_cutoff = now - self.config.raw_retention_days as i64 * day;
        let n = self.conn.execute(
            "DELETE FROM samples WHERE rowid IN (SELECT rowid FROM samples WHERE ts < ?1 ORDER BY ts LIMIT 100000)",
            [raw_cutoff],
        )?;
        self.metrics
            .raw_rows_deleted_retention_total
            .fetch_add(n as u64, Relaxed);
        let minute_cutoff = now - self.config.minute_rollup_retention_days as i64 * day;
        let rollup_cutoff = now - self.config.rollup_retention_days as i64 * day;
        // Access and parking logs hold people's movements: kept as long as configured,
        // uploaded or not (a building cut off for longer sends the hub a gap for them).
        let log_cutoff = now - self.config.log_retention_days as i64 * day;
        let n = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1
               AND (kind LIKE 'access.%' OR kind LIKE 'parking.%') ORDER BY ts LIMIT 100000)",
            [log_cutoff],
        )?;
        if n > 0 {
            tracing::info!(
                events = n,
                "Access and parking logs past their retention deleted."
            );
        }
        for (level, cutoff) in [(1, minute_cutoff), (15, rollup_cutoff), (60, rollup_cutoff)] {
            self.conn.execute(
                "DELETE FROM rollups WHERE level = ?1 AND bucket < ?2",
                params![level, cutoff],
            )?;
        }
        let mut rounds = 0;
        while self.measure_size()? > self.config.budget_bytes && rounds < 20 {
            rounds += 1;
            if self.free_space(20_000)? > 0 {
                continue;
            }
            // No raw telemetry is left that may go: the oldest 1-minute rollups go next, the
            // 15-minute and hourly ones stay.
            let oldest: Option<i64> = self.conn.query_row(
                "SELECT min(bucket) FROM rollups WHERE level = 1",
                [],
                |r| r.get(0),
            )?;
            let Some(oldest) = oldest else { break };
            let n = self.conn.execute(
                "DELETE FROM rollups WHERE level = 1 AND bucket <= ?1",
                [oldest + 60 * rollup::MINUTE],
            )?;
            self.metrics
                .rollup_rows_deleted_budget_total
                .fetch_add(n as u64, Relaxed);
            tracing::warn!(
                deleted = n,
                "Deleted the oldest 1-minute rollups to stay within the disk budget."
            );
            self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
        }
        if self.measure_size()? > self.config.budget_bytes {
            tracing::warn!(
                used = self.metrics.store_bytes.load(Relaxed),
                budget = self.config.budget_bytes,
                "The store is still over its disk budget."
            );
        }
        Ok(())
    }

    /// Deletes up to `rows` of the oldest raw samples whose minutes are already rolled up,
    /// and hands the freed pages back. Returns how many went.
    fn free_space(&mut self, rows: i64) -> anyhow::Result<u64> {
        let wm = self.rollups.watermarks()[0];
        let n = self.conn.execute(
            "DELETE FROM samples WHERE rowid IN (SELECT rowid FROM samples WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
            params![wm, rows],
        )? as u64;
        if n > 0 {
            self.metrics
                .raw_rows_deleted_budget_total
                .fetch_add(n, Relaxed);
            tracing::warn!(
                deleted = n,
                "Deleted the oldest raw telemetry to stay within the disk budget."
            );
        }
        self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
        Ok(n)
    }

    fn measure_size(&self) -> anyhow::Result<u64> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let used = ((pages - free) * size) as u64;
        self.metrics.store_bytes.store(used, Relaxed);
        self.metrics
            .store_budget_bytes
            .store(self.config.budget_bytes, Relaxed);
        Ok(used)
    }
}

fn numeric(v: ValueRef<'_>, q: i64) -> Option<f64> {
    if !matches!(q & 0xf, 0 | 1) {
        return None;
    }
    match v {
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Real(f) => Some(f),
        _ => None,
    }
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull
        )
    })
}

fn kind_name(k: PointKind) -> &'static str {
    match k {
        PointKind::Gauge => "gauge",
        PointKind::Counter => "counter",
        PointKind::State => "state",
    }
}

fn kind_from_str(s: &str) -> PointKind {
    match s {
        "counter" => PointKind::Counter,
        "state" => PointKind::State,
        _ => PointKind::Gauge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::Level;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig::new(dir.join("edge.sqlite"))
    }

    const MINUTE: i64 = 60_000_000;

    /// Samples of `points` points every `step` µs over `[from, to)`, as one driver batch per
    /// time step.
    fn series(
        points: usize,
        from: i64,
        to: i64,
        step: i64,
        value: impl Fn(usize, i64) -> Value,
    ) -> Vec<Vec<Sample>> {
        (from..to)
            .step_by(step as usize)
            .map(|ts| {
                (0..points)
                    .map(|p| Sample::good(PointKey::new("m", &format!("p{p}")), ts, value(p, ts)))
                    .collect()
            })
            .collect()
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..300 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_minutes_roll_up_into_all_levels_with_counter_consumption() {
        let dir = tempfile::tempdir().unwrap();
        let key = PointKey::new("meter", "energy");
        let info = PointInfo {
            key: key.clone(),
            unit: Some("kWh".into()),
            kind: PointKind::Counter,
            wrap: Some(1000.0),
        };
        let store = Store::open(config(dir.path()), &[info], Arc::new(Metrics::default())).unwrap();
        // Two hours ago, one reading every 10 s for 90 minutes, growing 1 kWh a reading,
        // wrapping at 1000 on the way.
        let start = (now_micros() - 2 * 60 * MINUTE).div_euclid(60 * MINUTE) * 60 * MINUTE;
        let mut v = 900.0;
        for i in 0..540 {
            store
                .ingest(vec![Sample::good(
                    key.clone(),
                    start + i * 10_000_000,
                    Value::Float(v),
                )])
                .await;
            v = (v + 1.0) % 1000.0;
        }
        store.flush().await;
        let s = store.clone();
        let k = key.clone();
        let mut hours = Vec::new();
        for _ in 0..100 {
            hours = s
                .rollup_history(&k, Level::H1, start, start + 120 * MINUTE, 10)
                .await
                .unwrap();
            if !hours.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(hours.len(), 2, "both hours are closed by the sweep");
        let minutes = store
            .rollup_history(&key, Level::M1, start, start + 120 * MINUTE, 1000)
            .await
            .unwrap();
        assert_eq!(minutes.len(), 90);
        assert!(minutes.iter().all(|(_, a)| a.count == 6));
        let quarters = store
            .rollup_history(&key, Level::M15, start, start + 120 * MINUTE, 100)
            .await
            .unwrap();
        assert_eq!(quarters.len(), 6);
        // 539 increases of 1 kWh each, one of them across the wrap.
        let total: f64 = hours.iter().map(|(_, a)| a.delta).sum();
        assert_eq!(total, 539.0);
        assert_eq!(store.metrics().counter_wraps_total.load(Relaxed), 1);
        assert_eq!(hours[0].1.count, 360);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_disk_budget_deletes_the_oldest_raw_telemetry_and_keeps_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.budget_bytes = 2 << 20;
        cfg.maintenance_interval = Duration::ZERO;
        let store = Store::open(cfg, &[], Arc::new(Metrics::default())).unwrap();
        let start = now_micros() - 24 * 60 * MINUTE;
        for batch in series(20, start, start + 120 * MINUTE, 100_000, |p, ts| {
            Value::Float((p as i64 + ts) as f64)
        }) {
            store.ingest(batch).await;
        }
        store.flush().await;
        let m = store.metrics().clone();
        wait_for("the store to shrink within its budget", || {
            m.store_bytes.load(Relaxed) <= 2 << 20
                && m.raw_rows_deleted_budget_total.load(Relaxed) > 0
        })
        .await;
        let key = PointKey::new("m", "p0");
        let raw = store
            .raw_history(&key, start, start + 120 * MINUTE, 100_000)
            .await
            .unwrap();
        assert!(
            !raw.is_empty() && raw.len() < 72_000,
            "some, not all, raw samples remain: {}",
            raw.len()
        );
        assert!(raw[0].ts > start, "the oldest went first");
        assert_eq!(
            raw.last().unwrap().ts,
            start + 120 * MINUTE - 100_000,
            "the newest stay"
        );
        // The last minute closes at the writer's next tick; wait for it, then all 120 minutes
        // must be there although most of their raw samples are gone.
        let mut minutes = Vec::new();
        for _ in 0..300 {
            minutes = store
                .rollup_history(&key, Level::M1, start, start + 120 * MINUTE, 1000)
                .await
                .unwrap();
            if minutes.len() >= 120 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            minutes.len(),
            120,
            "rollups of the deleted raw samples are kept"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn access_and_parking_logs_go_after_their_retention_and_other_events_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.log_retention_days = 30;
        cfg.maintenance_interval = Duration::ZERO;
        let store = Store::open(cfg, &[], Arc::new(Metrics::default())).unwrap();
        let day = 86_400_000_000i64;
        let now = now_micros();
        for (ts, kind) in [
            (now - 40 * day, "access.decision"),
            (now - 40 * day, "parking.exit"),
            (now - 40 * day, "alarm.raised"),
            (now - 40 * day, "audit"),
            (now - 10 * day, "access.decision"),
        ] {
            crate::events::record(
                &store,
                crate::events::Event::new(ts, kind, "d1", serde_json::json!({})),
            )
            .await
            .unwrap();
        }
        let kinds = || {
            store.read(|c| {
                let mut stmt = c.prepare("SELECT kind FROM events ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
        };
        let mut left = Vec::new();
        for _ in 0..100 {
            left = kinds().await.unwrap();
            if left.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, ["alarm.raised", "audit", "access.decision"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_delays_commits_but_loses_no_new_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        // The hard limit stands in for a full file system: SQLite reports SQLITE_FULL at it.
        cfg.hard_limit_bytes = Some(3 << 20);
        let store = Store::open(cfg, &[], Arc::new(Metrics::default())).unwrap();
        let old = now_micros() - 24 * 60 * MINUTE;
        for batch in series(20, old, old + 60 * MINUTE, 100_000, |_, _| {
            Value::Float(1.0)
        }) {
            store.ingest(batch).await;
            if store.metrics().commit_errors_total.load(Relaxed) > 0 {
                break;
            }
        }
        store.flush().await;
        // New samples keep coming while the store is full; every one must be kept.
        let fresh_from = now_micros() - MINUTE;
        let fresh = series(20, fresh_from, fresh_from + 30_000_000, 100_000, |p, ts| {
            Value::Int(ts + p as i64)
        });
        let sent: usize = fresh.iter().map(Vec::len).sum();
        for batch in fresh {
            store.ingest(batch).await;
        }
        store.flush().await;
        assert!(
            store.metrics().commit_errors_total.load(Relaxed) > 0,
            "the limit was reached"
        );
        assert!(
            store.metrics().raw_rows_deleted_budget_total.load(Relaxed) > 0,
            "old raw telemetry made room"
        );
        let mut kept = 0;
        for p in 0..20 {
            let key = PointKey::new("m", &format!("p{p}"));
            let rows = store
                .raw_history(&key, fresh_from, fresh_from + 30_000_000, 100_000)
                .await
                .unwrap();
            assert!(rows.iter().all(|s| s.value == Some(Value::Int(s.ts + p))));
            kept += rows.len();
        }
        assert_eq!(kept, sent);
        assert!(store.health().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_samples_come_back_with_their_types_and_quality() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), &[], Arc::new(Metrics::default())).unwrap();
        let k = |p: &str| PointKey::new("dev", p);
        let samples = vec![
            Sample::good(k("b"), 1, Value::Bool(true)),
            Sample::good(k("i"), 2, Value::Int(i64::MAX - 1)),
            Sample::good(k("f"), 3, Value::Float(1.5)),
            Sample::good(k("t"), 4, Value::Text("auto".into())),
            Sample::bad(k("f"), 5, "timeout after 500ms"),
            Sample::stale(k("i"), 6),
        ];
        store.ingest(samples.clone()).await;
        store.flush().await;
        let mut back = Vec::new();
        for p in ["b", "i", "f", "t"] {
            back.extend(store.raw_history(&k(p), 0, 100, 10).await.unwrap());
        }
        back.sort_by_key(|s| s.ts);
        assert_eq!(back, samples);
        assert_eq!(
            store.latest_of(&k("f")).unwrap().quality,
            Quality::bad("timeout after 500ms")
        );
        assert_eq!(store.metrics().samples_committed_total.load(Relaxed), 6);
    }

    #[test]
    fn take_front_splits_the_batch_that_straddles_the_count() {
        let at = Instant::now();
        let batch = |from: i64, n: i64| {
            let s = (from..from + n)
                .map(|ts| Sample::good(PointKey::new("m", "p"), ts, Value::Float(0.0)))
                .collect::<Vec<_>>();
            (s, at)
        };
        let mut pending = vec![batch(0, 3), batch(3, 4), batch(7, 2)];
        let ts = |b: &[(Vec<Sample>, Instant)]| -> Vec<Vec<i64>> {
            b.iter()
                .map(|(s, _)| s.iter().map(|x| x.ts).collect())
                .collect()
        };
        let taken = take_front(&mut pending, 5);
        assert_eq!(ts(&taken), vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(ts(&pending), vec![vec![5, 6], vec![7, 8]]);
        assert_eq!(ts(&take_front(&mut pending, 0)), Vec::<Vec<i64>>::new());
        assert_eq!(
            ts(&take_front(&mut pending, 9)),
            vec![vec![5, 6], vec![7, 8]]
        );
        assert!(pending.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_op_cuts_a_commit_of_a_large_batch_short_and_every_sample_still_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(config(dir.path()), &[], metrics.clone()).unwrap();
        let batch = |from: i64, n: i64| {
            (from..from + n)
                .map(|ts| {
                    let key = PointKey::new("m", &format!("p{}", ts % 100));
                    Sample::good(key, ts, Value::Float(ts as f64))
                })
                .collect::<Vec<_>>()
        };
        // Each round: a large batch, then (once its commit is under way) a small one and an
        // op that counts the samples its own transaction sees. Cut short, the commit holds
        // at least SAMPLES_BEFORE_OPS of the large batch and not all of it. An op that
        // arrives before the commit starts goes first instead and sees none of it, so the
        // round is tried again; without the cut, every round's op would see all of it.
        let (big, small) = (100_000i64, 1_000i64);
        let mut rounds = 0;
        let mut cut = None;
        while rounds < 5 && cut.is_none() {
            let before = rounds * (big + small);
            rounds += 1;
            store.ingest(batch(before, big)).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            store.ingest(batch(before + big, small)).await;
            let seen = Arc::new(std::sync::atomic::AtomicI64::new(-1));
            let s2 = seen.clone();
            store
                .write(Box::new(move |c| {
                    let n: i64 = c.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
                    s2.store(n, Relaxed);
                    Ok(())
                }))
                .await
                .unwrap();
            let seen = seen.load(Relaxed) - before;
            if (SAMPLES_BEFORE_OPS as i64..big).contains(&seen) {
                cut = Some(seen);
            }
            store.flush().await;
        }
        assert!(cut.is_some(), "in {rounds} rounds no op cut a batch short");
        // The rest of the batch and the samples queued meanwhile go in afterwards: every
        // sample exactly once.
        let (count, distinct) = store
            .read(|c| {
                c.query_row(
                    "SELECT count(*), count(DISTINCT ts) FROM samples",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
            })
            .await
            .unwrap();
        let all = rounds * (big + small);
        assert_eq!((count, distinct), (all, all));
        assert_eq!(metrics.writer_queue_ops.load(Relaxed), 0);
        assert_eq!(metrics.writer_queue_batches.load(Relaxed), 0);
        let key = PointKey::new("m", &format!("p{}", (all - 1) % 100));
        assert_eq!(store.latest_of(&key).unwrap().ts, all - 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_store_keeps_everything_and_the_latest_values() {
        let dir = tempfile::tempdir().unwrap();
        let key = PointKey::new("m", "p");
        {
            let store = Store::open(config(dir.path()), &[], Arc::new(Metrics::default())).unwrap();
            for i in 0..100 {
                store
                    .ingest(vec![Sample::good(key.clone(), i, Value::Float(i as f64))])
                    .await;
            }
            store.flush().await;
        }
        let store = Store::open(config(dir.path()), &[], Arc::new(Metrics::default())).unwrap();
        assert_eq!(
            store.raw_history(&key, 0, 1000, 1000).await.unwrap().len(),
            100
        );
        assert_eq!(store.latest_of(&key).unwrap().ts, 99);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latest_snapshot_goes_in_chunks_and_a_reopen_sees_every_newest_value() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * LATEST_CHUNK + 17;
        let keys: Vec<PointKey> = (0..n)
            .map(|i| PointKey::new("m", &format!("p{i}")))
            .collect();
        let batch = |ts: i64, add: f64| -> Vec<Sample> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| Sample::good(k.clone(), ts, Value::Float(i as f64 + add)))
                .collect()
        };
        {
            let store = Store::open(config(dir.path()), &[], Arc::new(Metrics::default())).unwrap();
            store.ingest(batch(1, 0.0)).await;
            store.flush().await;
            // A tick takes the snapshot; it is complete once `latest_rowid` is set.
            let mut complete = (0, 0);
            for _ in 0..100 {
                complete = store
                    .read(|c| {
                        let rows: i64 =
                            c.query_row("SELECT count(*) FROM latest", [], |r| r.get(0))?;
                        let rowid: Option<i64> = c
                            .query_row(
                                "SELECT value FROM meta WHERE key = 'latest_rowid'",
                                [],
                                |r| r.get(0),
                            )
                            .optional()?;
                        Ok((rows, rowid.unwrap_or(0)))
                    })
                    .await
                    .unwrap();
                if complete.1 > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(complete, (n as i64, n as i64));
            // Newer values, closed before their snapshot is (wholly) written.
            store.ingest(batch(2, 0.5)).await;
            store.flush().await;
        }
        let store = Store::open(config(dir.path()), &[], Arc::new(Metrics::default())).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let s = store.latest_of(k).unwrap();
            assert_eq!(
                (s.ts, s.value),
                (2, Some(Value::Float(i as f64 + 0.5))),
                "{k:?}"
            );
        }
    }
}
