//! The hub's store, on SQLite (one file in WAL mode with `synchronous = FULL`, the
//! default) or PostgreSQL (when configured), through [`park_db`]: one writer thread with
//! group commit for everything the edges upload, pooled read connections for the API.
//!
//! Upload records are stored idempotently by (building, stream, sequence): the store keeps
//! a durable cursor per building and stream, advances it in the same transaction that
//! stores the records, and treats a record at or below the cursor as a duplicate. A
//! record is acknowledged to the edge only after the transaction that holds it is
//! committed (the connection tasks are woken by [`HubStore::subscribe_commits`]).
//!
//! Administrative writes that need an answer (enrollment tokens, certificates,
//! revocations) are rare and run in their own short transactions on their own
//! connection, so that `smartpark hub enroll` can run beside a live hub; SQLite
//! serialises them with the writer.
//!
//! The schema is a list of versioned migrations, each with a text for either engine,
//! applied at start; a database newer than the build is refused.
//!
//! One edge per building: the key of everything uploaded is (park, building), the
//! identity the edge's certificate names, so a re-enrolled edge continues its building's
//! streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use park_db::migrate::Migration;
use park_db::pool::Access;
use park_db::{Connection, Dialect, Handle, OptionalExtension, Pool, Target, ValueRef, params};
use sync_protocol::{
    EdgeIdentity, EventRecord, HubSink, Quality, RawBatch, Record, RollupBatch, SinkBusy,
    UploadStream, Value,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;

/// The most items (events, rollup rows, raw samples) queued for the writer; beyond it the
/// sink answers busy and the edge resends later.
const MAX_QUEUED_ITEMS: u64 = 1_000_000;
/// The most items one transaction takes.
const MAX_BATCH_ITEMS: u64 = 200_000;

/// A building, the unit of everything an edge uploads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildingKey {
    pub park: String,
    pub building: String,
}

impl BuildingKey {
    pub fn new(park: &str, building: &str) -> Self {
        BuildingKey {
            park: park.to_string(),
            building: building.to_string(),
        }
    }
}

impl std::fmt::Display for BuildingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.park, self.building)
    }
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
enum OwnedRecord {
    Event(EventRecord),
    Rollups(RollupBatch),
    Raw(RawBatch),
    Gap { through: u64 },
}

impl OwnedRecord {
    fn items(&self) -> u64 {
        match self {
            OwnedRecord::Event(_) | OwnedRecord::Gap { .. } => 1,
            OwnedRecord::Rollups(b) => b.rows.len().max(1) as u64,
            OwnedRecord::Raw(b) => b.sample_count().max(1) as u64,
        }
    }
}

/// A write that rides along in the next group commit, without an answer. It may run again
/// if the commit fails and is retried, so it must be idempotent.
pub type WriteOp = accounts::WriteOp;

enum WriterMsg {
    Upload {
        key: BuildingKey,
        stream: UploadStream,
        seq: u64,
        record: OwnedRecord,
    },
    Op(WriteOp),
    Flush(oneshot::Sender<()>),
    /// Reads a building's cursors again from the database (another hub may have advanced
    /// them while it held the building).
    Reload(BuildingKey, oneshot::Sender<()>),
}

type CursorMap = HashMap<(BuildingKey, UploadStream), u64>;

struct Shared {
    metrics: Arc<Metrics>,
    /// What the store holds durably, per building and stream.
    durable: Mutex<CursorMap>,
    /// What has been handed to the writer, in order, per building and stream.
    accepted: Mutex<CursorMap>,
    queued_items: AtomicU64,
    commits: watch::Sender<u64>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    target: Target,
    readers: Arc<Pool>,
    admin: Arc<Pool>,
    /// Building ids found so far (an id never changes, and a building is never deleted).
    building_ids: Mutex<HashMap<BuildingKey, i64>>,
}

/// The hub's store. Cheap to clone.
#[derive(Clone)]
pub struct HubStore {
    tx: mpsc::UnboundedSender<WriterMsg>,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HubStore {
    /// Opens (or creates) the database, brings its schema up to date, and starts the
    /// writer thread.
    pub fn open(target: impl Into<Target>, metrics: Arc<Metrics>) -> anyhow::Result<HubStore> {
        let target = target.into();
        let handle = open_db(&target)?;
        let conn = handle.conn();
        let mut durable = CursorMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT b.park, b.building, c.stream, c.durable FROM cursors c JOIN buildings b ON b.id = c.building_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    BuildingKey {
                        park: r.get(0)?,
                        building: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (key, stream, cursor) = row?;
                if let Some(s) = stream_of(stream) {
                    durable.insert((key, s), cursor as u64);
                }
            }
        }
        // A SQLite file has one hub (its lock file says so): no lease of an earlier run
        // holds. On PostgreSQL other hubs' leases stand until they end.
        if conn.dialect() == Dialect::Sqlite {
            conn.execute("DELETE FROM leases", [])?;
        }
        // Edges that were connected when the hub stopped are not connected now, unless
        // another hub holds them.
        conn.execute(
            &format!(
                "UPDATE edges SET state = 'disconnected' WHERE state NOT IN ('disconnected', 'never_connected')
                 AND building_id NOT IN (SELECT b.id FROM buildings b JOIN leases l ON l.name = {LEASE_OF_BUILDING}
                                         WHERE l.expires >= ?1)"
            ),
            [now_micros()],
        )?;
        let (commits, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            metrics,
            accepted: Mutex::new(durable.clone()),
            durable: Mutex::new(durable),
            queued_items: AtomicU64::new(0),
            commits,
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            readers: Pool::new(target.clone(), Access::ReadOnly, 16),
            admin: Pool::new(target.clone(), Access::ReadWrite, 4),
            building_ids: Mutex::new(HashMap::new()),
            target,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer::new(handle, shared.clone())?;
        std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || {
                park_db::mark_blocking_thread();
                writer.run(rx)
            })
            .context("cannot start the store writer thread")?;
        Ok(HubStore { tx, shared })
    }

    /// The database the store is on.
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    pub fn dialect(&self) -> Dialect {
        self.shared.target.dialect()
    }

    /// Ticks after every commit; connection tasks wait on it to acknowledge.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    /// Queues a write for the next group commit.
    pub fn write_nowait(&self, op: WriteOp) {
        let _ = self.tx.send(WriterMsg::Op(op));
    }

    /// Returns once everything queued before the call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Takes (or renews) lease `name` for hub `hub`: answers `false` while another hub
    /// holds it.
    pub async fn take_lease(&self, name: String, hub: &str) -> anyhow::Result<bool> {
        if self.dialect() == Dialect::Sqlite {
            // One hub per SQLite file (its lock file says so): nobody to share with.
            return Ok(true);
        }
        let hub = hub.to_string();
        self.admin(move |c| {
            let now = now_micros();
            let n = c.execute(
                "INSERT INTO leases (name, hub, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET hub = excluded.hub, expires = excluded.expires
                 WHERE leases.hub = excluded.hub OR leases.expires < ?4",
                params![name, hub, now + LEASE.as_micros() as i64, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Gives up lease `name`, if hub `hub` holds it.
    pub async fn release_lease(&self, name: String, hub: &str) -> anyhow::Result<()> {
        if self.dialect() == Dialect::Sqlite {
            // One hub per SQLite file (its lock file says so): nobody to share with.
            return Ok(());
        }
        let hub = hub.to_string();
        self.admin(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND hub = ?2",
                params![name, hub],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks disconnected the buildings whose hub let their lease run out (it died), and
    /// forgets every lease that ran out. Answers how many buildings.
    pub async fn sweep_leases(&self) -> anyhow::Result<usize> {
        if self.dialect() == Dialect::Sqlite {
            // One hub per SQLite file (its lock file says so): nobody to share with.
            return Ok(0);
        }
        self.admin(|c| {
            let now = now_micros();
            let n = c.execute(
                &format!(
                    "UPDATE edges SET state = 'disconnected', state_since = ?1,
                         last_error = 'its hub stopped renewing the connection'
                     WHERE building_id IN (SELECT b.id FROM buildings b
                                           JOIN leases l ON l.name = {LEASE_OF_BUILDING}
                                           WHERE l.expires < ?1)"
                ),
                [now],
            )?;
            c.execute("DELETE FROM leases WHERE expires < ?1", [now])?;
            Ok(n)
        })
        .await
    }

    /// The id of a building that exists, `None` for one that does not (its rows are not
    /// made); known ids are answered from memory.
    pub async fn existing_building_id(&self, key: &BuildingKey) -> anyhow::Result<Option<i64>> {
        if let Some(id) = lock(&self.shared.building_ids).get(key) {
            return Ok(Some(*id));
        }
        let k = key.clone();
        let id = self
            .read(move |c| {
                c.query_row(
                    "SELECT id FROM buildings WHERE park = ?1 AND building = ?2",
                    params![k.park, k.building],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
            })
            .await?;
        if let Some(id) = id {
            lock(&self.shared.building_ids).insert(key.clone(), id);
        }
        Ok(id)
    }

    /// Reads a building's cursors again from the database, in order with the uploads
    /// queued before it; returns once they are in place.
    pub async fn reload_building(&self, key: &BuildingKey) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Reload(key.clone(), tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the writer is committing; `Err` carries why not.
    pub fn health(&self) -> Result<(), String> {
        if self.shared.healthy.load(Relaxed) {
            Ok(())
        } else {
            Err(lock(&self.shared.last_error).clone().unwrap_or_default())
        }
    }

    /// The durable cursor of a building's stream.
    pub fn durable(&self, key: &BuildingKey, stream: UploadStream) -> u64 {
        lock(&self.shared.durable)
            .get(&(key.clone(), stream))
            .copied()
            .unwrap_or(0)
    }

    /// A sink for the sessions of one building.
    pub fn sink(&self, key: BuildingKey) -> BuildingSink {
        BuildingSink {
            store: self.clone(),
            key,
        }
    }

    /// Runs `f` on a read connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> park_db::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.shared
            .readers
            .run(move |c| f(&c).context("store read failed"))
            .await
    }

    /// Runs `f` in a transaction that takes the write lock at once, on a connection of
    /// its own (administrative writes that need an answer), on a blocking thread.
    pub async fn admin<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.shared.admin.transaction(f).await
    }
}

/// Runs `f` in a transaction that takes the write lock at once, on a new connection to
/// the database: for CLI commands beside a running hub.
pub fn admin_transaction<T>(
    target: impl Into<Target>,
    f: impl FnOnce(&Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let handle = open_db(target)?;
    let conn = handle.conn();
    let tx = conn.transaction()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// The [`HubSink`] of one building's connection.
#[derive(Clone)]
pub struct BuildingSink {
    store: HubStore,
    key: BuildingKey,
}

impl HubSink for BuildingSink {
    fn accept(
        &mut self,
        edge: &EdgeIdentity,
        stream: UploadStream,
        seq: u64,
        record: Record<'_>,
    ) -> Result<(), SinkBusy> {
        // The session was made for this building and refuses any other; a mismatch here
        // would be a bug, and storing under the certificate's building is the safe side.
        debug_assert_eq!(
            (&edge.park, &edge.building),
            (&self.key.park, &self.key.building)
        );
        let shared = &self.store.shared;
        let record = match record {
            Record::Event(e) => OwnedRecord::Event(e.clone()),
            Record::Rollups(b) => OwnedRecord::Rollups(b.clone()),
            Record::Raw(b) => OwnedRecord::Raw(b.clone()),
            Record::Gap { through } => OwnedRecord::Gap { through },
        };
        let through = match record {
            OwnedRecord::Gap { through } => through,
            _ => seq,
        };
        let items = record.items();
        if shared.queued_items.load(Relaxed) + items > MAX_QUEUED_ITEMS
            && shared.queued_items.load(Relaxed) > 0
        {
            Metrics::add(&shared.metrics.sink_busy_total, 1);
            return Err(SinkBusy);
        }
        let mut accepted = lock(&shared.accepted);
        let cursor = accepted.entry((self.key.clone(), stream)).or_insert(0);
        if seq > cursor.saturating_add(1) {
            // Another connection of this building may have taken less than this session
            // believes; it resends after its timeout, by which time the order is whole.
            Metrics::add(&shared.metrics.sink_busy_total, 1);
            return Err(SinkBusy);
        }
        let msg = WriterMsg::Upload {
            key: self.key.clone(),
            stream,
            seq,
            record,
        };
        if self.store.tx.send(msg).is_err() {
            return Err(SinkBusy);
        }
        *cursor = (*cursor).max(through);
        shared.queued_items.fetch_add(items, Relaxed);
        Ok(())
    }

    fn durable_cursor(&self, _edge: &EdgeIdentity, stream: UploadStream) -> u64 {
        self.store.durable(&self.key, stream)
    }
}

fn stream_of(code: i64) -> Option<UploadStream> {
    UploadStream::ALL.into_iter().find(|s| *s as i64 == code)
}

/// The hub's schema, in order. A new table or column is a new migration at the end; a
/// released one is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "uploads, documents and master data",
        sqlite: SCHEMA,
        postgres: PG_SCHEMA,
    },
    Migration {
        version: 2,
        name: "audit log",
        sqlite: accounts::audit::SCHEMA,
        postgres: accounts::audit::PG_SCHEMA,
    },
    Migration {
        version: 3,
        name: "accounts",
        sqlite: accounts::auth::SCHEMA,
        postgres: accounts::auth::PG_SCHEMA,
    },
    Migration {
        version: 4,
        name: "people's private data",
        sqlite: crate::people::SCHEMA,
        postgres: crate::people::PG_SCHEMA,
    },
    Migration {
        version: 5,
        name: "leases",
        sqlite: "CREATE TABLE IF NOT EXISTS leases (
            name TEXT PRIMARY KEY,
            hub TEXT NOT NULL,
            expires INTEGER NOT NULL
        );",
        postgres: "CREATE TABLE IF NOT EXISTS leases (
            name TEXT PRIMARY KEY,
            hub TEXT NOT NULL,
            expires BIGINT NOT NULL
        );",
    },
    Migration {
        version: 6,
        name: "document versions",
        sqlite: "CREATE TABLE IF NOT EXISTS doc_versions (
            park TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (park, doc_id)
        );",
        postgres: "CREATE TABLE IF NOT EXISTS doc_versions (
            park TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            PRIMARY KEY (park, doc_id)
        );",
    },
    Migration {
        version: 7,
        name: "lease contracts",
        sqlite: crate::leasing::SCHEMA,
        postgres: crate::leasing::PG_SCHEMA,
    },
    Migration {
        version: 8,
        name: "bills",
        sqlite: crate::billing::SCHEMA,
        postgres: crate::billing::PG_SCHEMA,
    },
    Migration {
        version: 9,
        name: "payments",
        sqlite: crate::billing::PAYMENTS_SCHEMA,
        postgres: crate::billing::PAYMENTS_PG_SCHEMA,
    },
    Migration {
        version: 10,
        name: "utility tariffs and meters",
        sqlite: crate::energy::SCHEMA,
        postgres: crate::energy::PG_SCHEMA,
    },
    Migration {
        version: 11,
        name: "contract succession",
        sqlite: crate::leasing::SUCCESSION,
        postgres: crate::leasing::SUCCESSION,
    },
    Migration {
        version: 12,
        name: "online payment orders, bank lines, refunds and invoice requests",
        sqlite: crate::payments::SCHEMA,
        postgres: crate::payments::PG_SCHEMA,
    },
    Migration {
        version: 13,
        name: "leads and their follow-ups",
        sqlite: crate::leads::SCHEMA,
        postgres: crate::leads::PG_SCHEMA,
    },
    Migration {
        version: 14,
        name: "notification contacts and the outbox",
        sqlite: crate::notify::SCHEMA,
        postgres: crate::notify::PG_SCHEMA,
    },
    Migration {
        version: 15,
        name: "payments by bill",
        sqlite: "CREATE INDEX IF NOT EXISTS payments_by_bill ON payments (park, bill_id);
                 CREATE INDEX IF NOT EXISTS refunds_by_bill ON refunds (park, bill_id);",
        postgres: "CREATE INDEX IF NOT EXISTS payments_by_bill ON payments (park, bill_id);
                   CREATE INDEX IF NOT EXISTS refunds_by_bill ON refunds (park, bill_id);",
    },
];

/// How long a hub holds a lease (a building's connection, a job that runs once for all
/// hubs) without renewing it: after a hub dies, its buildings may connect to another hub
/// this much later.
pub const LEASE: Duration = Duration::from_secs(15);
/// The name of a building's lease: `building/PARK/BUILDING`.
pub fn building_lease(key: &BuildingKey) -> String {
    format!("building/{}/{}", key.park, key.building)
}

/// The same in SQL, of a `buildings` row `b`.
const LEASE_OF_BUILDING: &str = "'building/' || b.park || '/' || b.building";

/// How often a hub renews its leases.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(5);

/// Opens the database read-write and brings its schema up to date.
pub fn open_db(target: impl Into<Target>) -> anyhow::Result<Handle> {
    let target = target.into();
    let handle = Handle::open(&target, Access::ReadWrite)
        .with_context(|| format!("cannot open the hub database {target}"))?;
    let conn = handle.conn();
    if conn.dialect() == Dialect::Sqlite {
        legacy_version_check(&conn, &target)?;
    }
    park_db::migrate::run(&conn, "hub", MIGRATIONS)
        .with_context(|| format!("cannot bring the hub database {target} up to date"))?;
    backfill_alarms(&conn).context("cannot fill the alarm table from the stored events")?;
    Ok(handle)
}

/// Databases made before the migrations table kept their version in `meta`; version 1
/// is the first migration, anything else is not ours to open.
fn legacy_version_check(conn: &Connection, target: &Target) -> anyhow::Result<()> {
    let has_meta: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if has_meta == 0 {
        return Ok(());
    }
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version {
        None | Some(1) => Ok(()),
        Some(v) => {
            anyhow::bail!("the hub database {target} has schema version {v}; this build knows 1")
        }
    }
}

/// An alarm transition an edge uploaded (an `alarm.*` event): which alarm, the state it
/// went to, its severity and when.
struct AlarmTransition {
    alarm: String,
    state: String,
    severity: String,
    ts: i64,
}

/// The transition an event body holds, if it is one (the edge writes them as
/// `{"kind": "alarm.raised", "body": {"alarm": .., "to": .., "severity": .., "ts": ..}}`).
fn alarm_transition(body: &[u8]) -> Option<AlarmTransition> {
    // Most events are not alarms: look before parsing.
    const KIND: &[u8] = b"\"alarm.";
    if !body.windows(KIND.len()).any(|w| w == KIND) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !v["kind"].as_str()?.starts_with("alarm.") {
        return None;
    }
    let t = &v["body"];
    let alarm = match &t["alarm"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(AlarmTransition {
        alarm,
        state: t["to"].as_str()?.to_string(),
        severity: t["severity"].as_str().unwrap_or("").to_string(),
        ts: t["ts"].as_i64().unwrap_or(0),
    })
}

/// Keeps the building's alarm as its newest transition left it (events are stored in the
/// edge's order, so a later sequence number is a later transition).
fn record_alarm(tx: &Connection, bid: i64, seq: i64, t: &AlarmTransition) -> park_db::Result<()> {
    tx.prepare_cached(
        "INSERT INTO alarms (building_id, alarm, state, severity, ts, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (building_id, alarm) DO UPDATE SET state = excluded.state,
             severity = excluded.severity, ts = excluded.ts, seq = excluded.seq
         WHERE excluded.seq > alarms.seq",
    )?
    .execute(params![bid, t.alarm, t.state, t.severity, t.ts, seq])?;
    Ok(())
}

/// Fills `alarms` from the alarm events stored before the table existed (once).
fn backfill_alarms(conn: &Connection) -> park_db::Result<()> {
    let done: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'alarms_backfilled'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if done.is_some() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare(match tx.dialect() {
            Dialect::Sqlite => {
                "SELECT building_id, seq, body FROM events
                 WHERE instr(CAST(body AS TEXT), '\"alarm.') > 0 ORDER BY building_id, seq"
            }
            Dialect::Postgres => {
                "SELECT building_id, seq, body FROM events
                 WHERE position(convert_to('\"alarm.', 'UTF8') in body) > 0 ORDER BY building_id, seq"
            }
        })?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let body: Vec<u8> = r.get(2)?;
            if let Some(t) = alarm_transition(&body) {
                record_alarm(&tx, r.get(0)?, r.get(1)?, &t)?;
            }
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('alarms_backfilled', 1)",
        [],
    )?;
    tx.commit()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parks (park TEXT PRIMARY KEY, created INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buildings (
    id INTEGER PRIMARY KEY,
    park TEXT NOT NULL REFERENCES parks (park),
    building TEXT NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (park, building)
);
-- One edge per building; the row carries what the dashboard shows about it.
CREATE TABLE IF NOT EXISTS edges (
    building_id INTEGER PRIMARY KEY REFERENCES buildings (id),
    serial TEXT,
    edge_id TEXT,
    enrolled_at INTEGER,
    cert_not_after INTEGER,
    state TEXT NOT NULL DEFAULT 'never_connected',
    state_since INTEGER,
    last_seen INTEGER,
    last_error TEXT,
    remote TEXT,
    health TEXT,
    health_at INTEGER,
    backlog_events INTEGER,
    backlog_rollups INTEGER,
    backlog_raw INTEGER,
    newest_event_ts INTEGER,
    newest_sample_ts INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    building_id INTEGER NOT NULL REFERENCES buildings (id),
    issued_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    building_id INTEGER NOT NULL REFERENCES buildings (id),
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    used_at INTEGER,
    used_by_serial TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY,
    revoked_at INTEGER NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    building_id INTEGER NOT NULL REFERENCES buildings (id),
    stream INTEGER NOT NULL,
    durable INTEGER NOT NULL,
    PRIMARY KEY (building_id, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    building_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    ts INTEGER,
    body BLOB NOT NULL,
    received INTEGER NOT NULL,
    PRIMARY KEY (building_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_id ON events (id);
-- Each alarm of a building as its newest uploaded transition left it (from the alarm.*
-- events), for the overview's counts.
CREATE TABLE IF NOT EXISTS alarms (
    building_id INTEGER NOT NULL,
    alarm TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (building_id, alarm)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    building_id INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    through INTEGER NOT NULL,
    recorded INTEGER NOT NULL,
    PRIMARY KEY (building_id, stream, from_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    building_id INTEGER NOT NULL,
    point TEXT NOT NULL,
    UNIQUE (building_id, point)
);
CREATE TABLE IF NOT EXISTS raw (
    point_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value ANY,
    q INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS raw_point_ts ON raw (point_id, ts);
CREATE TABLE IF NOT EXISTS rollups (
    point_id INTEGER NOT NULL,
    period INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL, bad INTEGER NOT NULL,
    min REAL, max REAL, sum REAL, last REAL, last_ts INTEGER NOT NULL, delta REAL,
    PRIMARY KEY (point_id, period, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    point_id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    value ANY,
    q INTEGER NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    park TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (park, doc_id)
) WITHOUT ROWID;
-- Who made and last changed each master data record of a park's documents, and when.
CREATE TABLE IF NOT EXISTS master_meta (
    park TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, collection, id)
) WITHOUT ROWID;
-- How far each export of the hub's data has been acknowledged (the time-series engine:
-- the last `raw` rowid it took).
CREATE TABLE IF NOT EXISTS export_cursors (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS doc_chunks (
    park TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (park, doc_id, seq)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL: integers are 64-bit, a value column is text (read
/// back by its kind), and `raw` numbers its rows for the telemetry export's cursor.
const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS parks (park TEXT PRIMARY KEY, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS buildings (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    park TEXT NOT NULL REFERENCES parks (park),
    building TEXT NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE (park, building)
);
CREATE TABLE IF NOT EXISTS edges (
    building_id BIGINT PRIMARY KEY REFERENCES buildings (id),
    serial TEXT,
    edge_id TEXT,
    enrolled_at BIGINT,
    cert_not_after BIGINT,
    state TEXT NOT NULL DEFAULT 'never_connected',
    state_since BIGINT,
    last_seen BIGINT,
    last_error TEXT,
    remote TEXT,
    health TEXT,
    health_at BIGINT,
    backlog_events BIGINT,
    backlog_rollups BIGINT,
    backlog_raw BIGINT,
    newest_event_ts BIGINT,
    newest_sample_ts BIGINT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    building_id BIGINT NOT NULL REFERENCES buildings (id),
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    building_id BIGINT NOT NULL REFERENCES buildings (id),
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    used_at BIGINT,
    used_by_serial TEXT
);
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    building_id BIGINT NOT NULL REFERENCES buildings (id),
    stream BIGINT NOT NULL,
    durable BIGINT NOT NULL,
    PRIMARY KEY (building_id, stream)
);
CREATE TABLE IF NOT EXISTS events (
    building_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    id BYTEA NOT NULL,
    ts BIGINT,
    body BYTEA NOT NULL,
    received BIGINT NOT NULL,
    PRIMARY KEY (building_id, seq)
);
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE TABLE IF NOT EXISTS alarms (
    building_id BIGINT NOT NULL,
    alarm TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    ts BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (building_id, alarm)
);
CREATE TABLE IF NOT EXISTS gaps (
    building_id BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    from_seq BIGINT NOT NULL,
    through BIGINT NOT NULL,
    recorded BIGINT NOT NULL,
    PRIMARY KEY (building_id, stream, from_seq)
);
CREATE TABLE IF NOT EXISTS points (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    building_id BIGINT NOT NULL,
    point TEXT NOT NULL,
    UNIQUE (building_id, point)
);
CREATE TABLE IF NOT EXISTS raw (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    point_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    value TEXT,
    q BIGINT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS raw_point_ts ON raw (point_id, ts);
CREATE TABLE IF NOT EXISTS rollups (
    point_id BIGINT NOT NULL,
    period BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    count BIGINT NOT NULL, bad BIGINT NOT NULL,
    min DOUBLE PRECISION, max DOUBLE PRECISION, sum DOUBLE PRECISION, last DOUBLE PRECISION,
    last_ts BIGINT NOT NULL, delta DOUBLE PRECISION,
    PRIMARY KEY (point_id, period, bucket)
);
CREATE TABLE IF NOT EXISTS latest (
    point_id BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    value TEXT,
    q BIGINT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    park TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    snapshot BYTEA NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (park, doc_id)
);
CREATE TABLE IF NOT EXISTS master_meta (
    park TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, collection, id)
);
CREATE TABLE IF NOT EXISTS export_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS doc_chunks (
    park TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (park, doc_id, seq)
);
";

/// The SQL expression of an uploaded event's kind (its JSON body's `kind`).
pub fn event_kind(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "json_extract(CAST(body AS TEXT), '$.kind')",
        Dialect::Postgres => "(convert_from(body, 'UTF8')::jsonb ->> 'kind')",
    }
}

/// The id of a building, creating the park and building rows if needed.
pub fn building_id(c: &Connection, park: &str, building: &str) -> park_db::Result<i64> {
    let now = now_micros();
    c.prepare_cached("INSERT INTO parks (park, created) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
        .execute(params![park, now])?;
    c.prepare_cached(
        "INSERT INTO buildings (park, building, created) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![park, building, now])?;
    let id: i64 = c
        .prepare_cached("SELECT id FROM buildings WHERE park = ?1 AND building = ?2")?
        .query_row(params![park, building], |r| r.get(0))?;
    c.prepare_cached("INSERT INTO edges (building_id) VALUES (?1) ON CONFLICT DO NOTHING")?
        .execute([id])?;
    Ok(id)
}

// Values are stored in a column without type affinity, with their kind and the quality
// packed into `q`, as the edge's store does.
// What a stored value is, in the high bits of `raw.q` (`q >> 4`); the low four are the
// quality. The export to a time-series engine reads the same codes.
pub(crate) const VK_NONE: i64 = 0;
pub(crate) const VK_BOOL: i64 = 1;
pub(crate) const VK_INT: i64 = 2;
pub(crate) const VK_FLOAT: i64 = 3;
pub(crate) const VK_TEXT: i64 = 4;

// On PostgreSQL the column is text: numbers are bound as their shortest exact decimal
// form and read back by their kind.
pub(crate) fn encode_value(v: &Option<Value>) -> (park_db::Value, i64) {
    use park_db::Value as V;
    match v {
        None => (V::Null, VK_NONE),
        Some(Value::Bool(b)) => (V::Integer(*b as i64), VK_BOOL),
        Some(Value::Int(i)) => (V::Integer(*i), VK_INT),
        Some(Value::Float(f)) => (V::Real(*f), VK_FLOAT),
        Some(Value::Text(t)) => (V::Text(t.clone()), VK_TEXT),
    }
}

/// A stored integer or boolean by its kind (SQLite keeps numbers as numbers, PostgreSQL
/// as their decimal text).
pub(crate) fn stored_int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

/// A stored float, the same way.
pub(crate) fn stored_float(v: ValueRef<'_>) -> Option<f64> {
    match v {
        ValueRef::Real(f) => Some(f),
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

fn quality_code(q: &Quality) -> (i64, Option<&str>) {
    match q {
        Quality::Good => (0, None),
        Quality::Uncertain(r) => (1, Some(r)),
        Quality::Bad(r) => (2, Some(r)),
        Quality::Stale => (3, None),
    }
}

/// A stored sample as JSON: `{"ts", "value", "quality", "reason"}`.
pub fn sample_json(
    ts: i64,
    value: ValueRef<'_>,
    q: i64,
    reason: Option<String>,
) -> serde_json::Value {
    let value = match (q >> 4, value) {
        (VK_BOOL, v) => {
            stored_int(v).map_or(serde_json::Value::Null, |i| serde_json::json!(i != 0))
        }
        (VK_INT, v) => stored_int(v).map_or(serde_json::Value::Null, |i| serde_json::json!(i)),
        (VK_FLOAT, v) => stored_float(v)
            .filter(|f| f.is_finite())
            .map_or(serde_json::Value::Null, |f| serde_json::json!(f)),
        (VK_TEXT, ValueRef::Text(t)) => serde_json::json!(String::from_utf8_lossy(t)),
        _ => serde_json::Value::Null,
    };
    let quality = match q & 0xf {
        0 => "good",
        1 => "uncertain",
        2 => "bad",
        _ => "stale",
    };
    serde_json::json!({"ts": ts, "value": value, "quality": quality, "reason": reason})
}

/// The time in a UUIDv7 event id, in microseconds; `None` for other ids.
fn uuid7_micros(id: &[u8; 16]) -> Option<i64> {
    if id[6] >> 4 != 7 {
        return None;
    }
    let ms = id[..6]
        .iter()
        .fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
    Some(ms * 1000)
}

struct Writer {
    handle: Handle,
    shared: Arc<Shared>,
    buildings: HashMap<BuildingKey, i64>,
    points: HashMap<(i64, String), i64>,
    /// The durable cursors as of the open transaction.
    cursors: CursorMap,
}

/// What one transaction did, applied to the shared state once it is committed.
#[derive(Default)]
struct Outcome {
    events: u64,
    rollup_rows: u64,
    raw_samples: u64,
    duplicates: u64,
    gaps: u64,
    points_refused: u64,
    holes: Vec<(BuildingKey, UploadStream)>,
    /// Cursors read again from the database.
    reloaded: Vec<(BuildingKey, UploadStream)>,
    /// Queued writes that failed and were rolled back alone.
    ops_failed: u64,
    /// Upload rows written together at the commit's end (PostgreSQL).
    deferred: Deferred,
}

impl Writer {
    fn new(handle: Handle, shared: Arc<Shared>) -> anyhow::Result<Writer> {
        let cursors = lock(&shared.durable).clone();
        Ok(Writer {
            handle,
            shared,
            buildings: HashMap::new(),
            points: HashMap::new(),
            cursors,
        })
    }

    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<WriterMsg>) {
        let mut pending: Vec<WriterMsg> = Vec::new();
        loop {
            if pending.is_empty() {
                match rx.blocking_recv() {
                    Some(m) => pending.push(m),
                    None => return,
                }
            }
            // Group commit: take what queued up while the last commit was syncing.
            let mut items: u64 = pending.iter().map(msg_items).sum();
            while items < MAX_BATCH_ITEMS {
                match rx.try_recv() {
                    Ok(m) => {
                        items += msg_items(&m);
                        pending.push(m);
                    }
                    Err(_) => break,
                }
            }
            let saved = self.cursors.clone();
            match self.commit(&mut pending) {
                Ok(outcome) => {
                    self.after_commit(outcome, items);
                    for m in pending.drain(..) {
                        if let WriterMsg::Flush(done) | WriterMsg::Reload(_, done) = m {
                            let _ = done.send(());
                        }
                    }
                }
                Err(e) => {
                    // Nothing is dropped: the batch stays pending and is retried; the
                    // sinks answer busy meanwhile once the queue is full.
                    self.cursors = saved;
                    self.buildings.clear();
                    self.points.clear();
                    Metrics::add(&self.shared.metrics.commit_errors_total, 1);
                    let msg = format!("{e:#}");
                    tracing::error!(error = %msg, "Hub store commit failed; retrying.");
                    *lock(&self.shared.last_error) = Some(msg);
                    self.shared.healthy.store(false, Relaxed);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn after_commit(&mut self, outcome: Outcome, items: u64) {
        let m = &self.shared.metrics;
        Metrics::add(&m.commits_total, 1);
        Metrics::add(&m.events_stored_total, outcome.events);
        Metrics::add(&m.rollup_rows_stored_total, outcome.rollup_rows);
        Metrics::add(&m.raw_samples_stored_total, outcome.raw_samples);
        Metrics::add(&m.records_duplicate_total, outcome.duplicates);
        if outcome.points_refused > 0 {
            Metrics::add(&m.points_refused_total, outcome.points_refused);
            tracing::warn!(
                series = outcome.points_refused,
                "Telemetry for points over a building's limit (or with names too long) was not stored."
            );
        }
        Metrics::add(&m.records_gap_total, outcome.gaps);
        Metrics::add(&m.write_ops_failed_total, outcome.ops_failed);
        self.shared.healthy.store(true, Relaxed);
        let _ = self
            .shared
            .queued_items
            .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(items)));
        *lock(&self.shared.durable) = self.cursors.clone();
        if !outcome.holes.is_empty() || !outcome.reloaded.is_empty() {
            let mut accepted = lock(&self.shared.accepted);
            for key in outcome.holes.into_iter().chain(outcome.reloaded) {
                let durable = self.cursors.get(&key).copied().unwrap_or(0);
                accepted.insert(key, durable);
            }
        }
        self.shared.commits.send_modify(|n| *n += 1);
    }

    fn commit(&mut self, pending: &mut [WriterMsg]) -> anyhow::Result<Outcome> {
        let conn = self.handle.conn();
        let tx = conn.transaction()?;
        if tx.dialect() == Dialect::Postgres {
            // Hubs sharing the database commit their uploads one at a time, so that `raw`
            // rows are numbered in commit order (the telemetry export reads past a number
            // and must not pass one still being written).
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('uploads'))", ())?;
        }
        let mut outcome = Outcome::default();
        for m in pending.iter_mut() {
            match m {
                WriterMsg::Upload {
                    key,
                    stream,
                    seq,
                    record,
                } => {
                    let key = key.clone();
                    let bid = match self.buildings.get(&key) {
                        Some(id) => *id,
                        None => {
                            let id = building_id(&tx, &key.park, &key.building)?;
                            self.buildings.insert(key.clone(), id);
                            id
                        }
                    };
                    apply_upload(
                        &tx,
                        &mut self.points,
                        &mut self.cursors,
                        (&key, bid),
                        *stream,
                        *seq,
                        record,
                        &mut outcome,
                    )?;
                }
                WriterMsg::Op(op) => {
                    tx.execute_batch("SAVEPOINT op")?;
                    match op(&tx) {
                        Ok(()) => tx.execute_batch("RELEASE op")?,
                        Err(e) => {
                            tracing::warn!(error = %e, "A store write failed; it was rolled back alone.");
                            tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                            outcome.ops_failed += 1;
                        }
                    }
                }
                WriterMsg::Reload(key, _) => {
                    let bid = building_id(&tx, &key.park, &key.building)?;
                    for stream in UploadStream::ALL {
                        let durable: i64 = tx
                            .query_row(
                                "SELECT durable FROM cursors WHERE building_id = ?1 AND stream = ?2",
                                params![bid, stream as i64],
                                |r| r.get(0),
                            )
                            .optional()?
                            .unwrap_or(0);
                        self.cursors.insert((key.clone(), stream), durable as u64);
                        outcome.reloaded.push((key.clone(), stream));
                    }
                }
                WriterMsg::Flush(_) => {}
            }
        }
        outcome.deferred.write(&tx)?;
        tx.commit()?;
        Ok(outcome)
    }
}

fn msg_items(m: &WriterMsg) -> u64 {
    match m {
        WriterMsg::Upload { record, .. } => record.items(),
        _ => 1,
    }
}

/// The most points one building may have at the hub, and the longest point name: an
/// enrolled edge cannot grow the hub's tables without bound by naming ever more points.
pub const MAX_POINTS_PER_BUILDING: i64 = 200_000;
pub const MAX_POINT_NAME_LEN: usize = 256;

/// The id of a building's point, made on first use; `None` when the name is too long or the
/// building already has [`MAX_POINTS_PER_BUILDING`] points (its samples are then not stored,
/// and counted in `points_refused`).
fn point_id(
    tx: &Connection,
    points: &mut HashMap<(i64, String), i64>,
    bid: i64,
    point: &str,
) -> park_db::Result<Option<i64>> {
    if let Some(id) = points.get(&(bid, point.to_string())) {
        return Ok(Some(*id));
    }
    let existing: Option<i64> = tx
        .prepare_cached("SELECT id FROM points WHERE building_id = ?1 AND point = ?2")?
        .query_row(params![bid, point], |r| r.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => {
            if point.is_empty() || point.len() > MAX_POINT_NAME_LEN {
                return Ok(None);
            }
            let count: i64 = tx
                .prepare_cached("SELECT count(*) FROM points WHERE building_id = ?1")?
                .query_row([bid], |r| r.get(0))?;
            if count >= MAX_POINTS_PER_BUILDING {
                return Ok(None);
            }
            tx.prepare_cached(
                "INSERT INTO points (building_id, point) VALUES (?1, ?2) RETURNING id",
            )?
            .query_row(params![bid, point], |r| r.get(0))?
        }
    };
    points.insert((bid, point.to_string()), id);
    Ok(Some(id))
}

#[allow(clippy::too_many_arguments)]
fn apply_upload(
    tx: &Connection,
    points: &mut HashMap<(i64, String), i64>,
    cursors: &mut CursorMap,
    (key, bid): (&BuildingKey, i64),
    stream: UploadStream,
    seq: u64,
    record: &OwnedRecord,
    outcome: &mut Outcome,
) -> park_db::Result<()> {
    let cursor = cursors.get(&(key.clone(), stream)).copied().unwrap_or(0);
    let through = match record {
        OwnedRecord::Gap { through } => *through,
        _ => seq,
    };
    if through <= cursor {
        outcome.duplicates += 1;
        return Ok(());
    }
    if seq > cursor + 1 {
        // The sinks hand records over in order; a hole means two connections raced.
        // Storing nothing keeps the cursor honest, and the edge resends.
        tracing::warn!(building = %key, ?stream, seq, cursor, "Upload record out of order; not stored.");
        outcome.holes.push((key.clone(), stream));
        return Ok(());
    }
    let now = now_micros();
    match record {
        OwnedRecord::Event(e) => {
            let ts = uuid7_micros(&e.id);
            tx.prepare_cached(
                "INSERT INTO events (building_id, seq, id, ts, body, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![bid, seq as i64, &e.id[..], ts, e.body, now])?;
            if let Some(t) = alarm_transition(&e.body) {
                record_alarm(tx, bid, seq as i64, &t)?;
            }
            if let Some(ts) = ts {
                tx.prepare_cached(
                    "UPDATE edges SET newest_event_ts = CASE WHEN newest_event_ts > ?2 THEN newest_event_ts ELSE ?2 END
                     WHERE building_id = ?1",
                )?
                .execute(params![bid, ts])?;
            }
            outcome.events += 1;
        }
        OwnedRecord::Rollups(batch) => {
            let mut newest = i64::MIN;
            for row in &batch.rows {
                let Some(pid) = point_id(tx, points, bid, &row.point)? else {
                    outcome.points_refused += 1;
                    continue;
                };
                let f = |v: f64| v.is_finite().then_some(v);
                tx.prepare_cached(
                    "INSERT INTO rollups (point_id, period, bucket, count, bad, min, max, sum, last, last_ts, delta)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (point_id, period, bucket) DO UPDATE SET count = excluded.count,
                         bad = excluded.bad, min = excluded.min, max = excluded.max, sum = excluded.sum,
                         last = excluded.last, last_ts = excluded.last_ts, delta = excluded.delta",
                )?
                .execute(params![
                    pid,
                    row.period_s,
                    row.bucket,
                    row.count as i64,
                    row.bad as i64,
                    f(row.min),
                    f(row.max),
                    f(row.sum),
                    f(row.last),
                    row.last_ts,
                    f(row.delta)
                ])?;
                if row.count > 0 && row.last.is_finite() {
                    upsert_latest(
                        tx,
                        &mut outcome.deferred,
                        pid,
                        row.last_ts,
                        &Some(Value::Float(row.last)),
                        &Quality::Good,
                    )?;
                    newest = newest.max(row.last_ts);
                }
                outcome.rollup_rows += 1;
            }
            update_sample_freshness(tx, &mut outcome.deferred, bid, newest)?;
        }
        OwnedRecord::Raw(batch) => {
            let mut newest = i64::MIN;
            for series in &batch.series {
                let Some(pid) = point_id(tx, points, bid, &series.point)? else {
                    outcome.points_refused += 1;
                    continue;
                };
                if tx.dialect() == Dialect::Postgres {
                    for s in &series.samples {
                        let (value, vk) = encode_value(&s.value);
                        let (q, reason) = quality_code(&s.quality);
                        outcome.deferred.raw.push(vec![
                            park_db::Value::Integer(pid),
                            park_db::Value::Integer(s.ts),
                            value,
                            park_db::Value::Integer((vk << 4) | q),
                            text_or_null(reason),
                        ]);
                    }
                } else {
                    // In process, one prepared row at a time is the fastest.
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO raw (point_id, ts, value, q, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for s in &series.samples {
                        let (value, vk) = encode_value(&s.value);
                        let (q, reason) = quality_code(&s.quality);
                        insert.execute(params![pid, s.ts, value, (vk << 4) | q, reason])?;
                    }
                }
                if let Some(last) = series.samples.iter().max_by_key(|s| s.ts) {
                    upsert_latest(
                        tx,
                        &mut outcome.deferred,
                        pid,
                        last.ts,
                        &last.value,
                        &last.quality,
                    )?;
                    newest = newest.max(last.ts);
                }
                outcome.raw_samples += series.samples.len() as u64;
            }
            update_sample_freshness(tx, &mut outcome.deferred, bid, newest)?;
        }
        OwnedRecord::Gap { through } => {
            tx.prepare_cached(
                "INSERT INTO gaps (building_id, stream, from_seq, through, recorded) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![bid, stream as i64, seq as i64, *through as i64, now])?;
            outcome.gaps += through - seq.max(cursor + 1) + 1;
        }
    }
    if tx.dialect() == Dialect::Postgres {
        outcome
            .deferred
            .cursors
            .insert((bid, stream as i64), through as i64);
    } else {
        tx.prepare_cached(
            "INSERT INTO cursors (building_id, stream, durable) VALUES (?1, ?2, ?3)
             ON CONFLICT (building_id, stream) DO UPDATE SET durable = excluded.durable",
        )?
        .execute(params![bid, stream as i64, through as i64])?;
    }
    cursors.insert((key.clone(), stream), through);
    Ok(())
}

fn text_or_null(text: Option<&str>) -> park_db::Value {
    text.map_or(park_db::Value::Null, |t| {
        park_db::Value::Text(t.to_string())
    })
}

/// The rows of a commit's uploads that PostgreSQL takes together at the commit's end, as
/// multi-row statements: over a network each statement is a round trip, and the server
/// parses one statement of a hundred rows instead of a hundred. The newest value and
/// freshness of a point or building, and a stream's cursor, are kept once per commit.
#[derive(Default)]
struct Deferred {
    raw: Vec<Vec<park_db::Value>>,
    /// By point: its newest time and row.
    latest: HashMap<i64, (i64, Vec<park_db::Value>)>,
    /// By building: its newest sample's time.
    freshness: HashMap<i64, i64>,
    /// By building and stream: the durable cursor.
    cursors: HashMap<(i64, i64), i64>,
}

impl Deferred {
    fn write(&mut self, tx: &Connection) -> park_db::Result<()> {
        multi_row(
            tx,
            "INSERT INTO raw (point_id, ts, value, q, reason) VALUES ",
            "",
            5,
            std::mem::take(&mut self.raw),
        )?;
        let mut latest: Vec<(i64, (i64, Vec<park_db::Value>))> = self.latest.drain().collect();
        latest.sort_by_key(|(pid, _)| *pid);
        multi_row(
            tx,
            "INSERT INTO latest (point_id, ts, value, q, reason) VALUES ",
            " ON CONFLICT (point_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, q = excluded.q, reason = excluded.reason
             WHERE excluded.ts >= latest.ts",
            5,
            latest.into_iter().map(|(_, (_, row))| row).collect(),
        )?;
        let mut cursors: Vec<((i64, i64), i64)> = self.cursors.drain().collect();
        cursors.sort();
        multi_row(
            tx,
            "INSERT INTO cursors (building_id, stream, durable) VALUES ",
            " ON CONFLICT (building_id, stream) DO UPDATE SET durable = excluded.durable",
            3,
            cursors
                .into_iter()
                .map(|((bid, stream), durable)| {
                    vec![
                        park_db::Value::Integer(bid),
                        park_db::Value::Integer(stream),
                        park_db::Value::Integer(durable),
                    ]
                })
                .collect(),
        )?;
        let mut fresh: Vec<(i64, i64)> = self.freshness.drain().collect();
        fresh.sort();
        for (bid, newest) in fresh {
            freshness_statement(tx, bid, newest)?;
        }
        Ok(())
    }
}

/// `rows` (each `width` values) as statements `head (…), (…) tail` of up to
/// [`ROWS_PER_STATEMENT`] rows.
fn multi_row(
    tx: &Connection,
    head: &str,
    tail: &str,
    width: usize,
    rows: Vec<Vec<park_db::Value>>,
) -> park_db::Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(head);
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for k in 0..width {
                if k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("?{}", i * width + k + 1));
            }
            sql.push(')');
        }
        sql.push_str(tail);
        tx.execute(
            &sql,
            park_db::params_from_iter(chunk.iter().flatten().cloned()),
        )?;
    }
    Ok(())
}

/// Rows per multi-row statement on PostgreSQL.
const ROWS_PER_STATEMENT: usize = 100;

fn upsert_latest(
    tx: &Connection,
    deferred: &mut Deferred,
    pid: i64,
    ts: i64,
    value: &Option<Value>,
    quality: &Quality,
) -> park_db::Result<()> {
    let (v, vk) = encode_value(value);
    let (q, reason) = quality_code(quality);
    if tx.dialect() == Dialect::Postgres {
        let row = vec![
            park_db::Value::Integer(pid),
            park_db::Value::Integer(ts),
            v,
            park_db::Value::Integer((vk << 4) | q),
            text_or_null(reason),
        ];
        match deferred.latest.get(&pid) {
            Some((newest, _)) if *newest > ts => {}
            _ => {
                deferred.latest.insert(pid, (ts, row));
            }
        }
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO latest (point_id, ts, value, q, reason) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (point_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, q = excluded.q, reason = excluded.reason
         WHERE excluded.ts >= latest.ts",
    )?
    .execute(params![pid, ts, v, (vk << 4) | q, reason])?;
    Ok(())
}

fn update_sample_freshness(
    tx: &Connection,
    deferred: &mut Deferred,
    bid: i64,
    newest: i64,
) -> park_db::Result<()> {
    if newest == i64::MIN {
        return Ok(());
    }
    if tx.dialect() == Dialect::Postgres {
        let e = deferred.freshness.entry(bid).or_insert(newest);
        *e = (*e).max(newest);
        return Ok(());
    }
    freshness_statement(tx, bid, newest)
}

fn freshness_statement(tx: &Connection, bid: i64, newest: i64) -> park_db::Result<()> {
    {
        tx.prepare_cached(
            "UPDATE edges SET newest_sample_ts = CASE WHEN newest_sample_ts > ?2 THEN newest_sample_ts ELSE ?2 END
             WHERE building_id = ?1",
        )?
        .execute(params![bid, newest])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_protocol::{RawSample, RawSeries};

    fn identity() -> EdgeIdentity {
        EdgeIdentity {
            edge_id: "e".into(),
            park: "p".into(),
            building: "b".into(),
        }
    }

    fn raw(n: usize) -> RawBatch {
        RawBatch {
            series: vec![RawSeries {
                point: "m/p".into(),
                samples: (0..n)
                    .map(|i| RawSample {
                        ts: i as i64,
                        value: Some(Value::Float(i as f64)),
                        quality: Quality::Good,
                    })
                    .collect(),
            }],
        }
    }

    #[tokio::test]
    async fn a_record_stored_twice_is_kept_once_and_the_cursor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.sqlite");
        let key = BuildingKey::new("p", "b");
        {
            let store = HubStore::open(&path, Arc::default()).unwrap();
            let mut sink = store.sink(key.clone());
            let batch = raw(10);
            sink.accept(&identity(), UploadStream::Raw, 1, Record::Raw(&batch))
                .unwrap();
            sink.accept(&identity(), UploadStream::Raw, 1, Record::Raw(&batch))
                .unwrap();
            assert_eq!(
                sink.accept(&identity(), UploadStream::Raw, 3, Record::Raw(&batch)),
                Err(SinkBusy),
                "a hole is refused"
            );
            sink.accept(
                &identity(),
                UploadStream::Raw,
                2,
                Record::Gap { through: 4 },
            )
            .unwrap();
            store.flush().await;
            assert_eq!(sink.durable_cursor(&identity(), UploadStream::Raw), 4);
        }
        let store = HubStore::open(&path, Arc::default()).unwrap();
        assert_eq!(store.durable(&key, UploadStream::Raw), 4);
        let n: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM raw", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 10);
    }

    #[tokio::test]
    async fn a_queued_write_that_fails_is_rolled_back_alone_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = HubStore::open(dir.path().join("hub.sqlite"), metrics.clone()).unwrap();
        store.write_nowait(Box::new(|c| {
            c.execute("INSERT INTO meta (key, value) VALUES ('kept', 1)", ())?;
            Ok(())
        }));
        store.write_nowait(Box::new(|c| {
            c.execute("INSERT INTO meta (key, value) VALUES ('lost', 1)", ())?;
            c.execute("INSERT INTO no_such_table VALUES (1)", ())?;
            Ok(())
        }));
        store.flush().await;
        let keys: Vec<String> = store
            .read(|c| {
                c.query_all(
                    "SELECT key FROM meta WHERE key IN ('kept', 'lost')",
                    [],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(keys, ["kept"]);
        assert_eq!(metrics.write_ops_failed_total.load(Relaxed), 1);
    }

    #[test]
    fn the_time_of_a_uuid7_event_id_is_read_from_its_first_48_bits() {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&1_700_000_000_123u64.to_be_bytes()[2..]);
        id[6] = 0x70;
        assert_eq!(uuid7_micros(&id), Some(1_700_000_000_123_000));
        id[6] = 0x40;
        assert_eq!(uuid7_micros(&id), None);
    }
}
