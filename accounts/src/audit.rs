//! The audit log of the edge and of the hub: every act that changes the world (logins,
//! failed ones too; account and role changes; door opens; point writes; credential and
//! pass edits; plate review decisions; alarm actions; rule reloads), with who, from where
//! and the outcome.
//!
//! Records are hash-chained (`park_model::audit`) and appended in the same transaction as
//! the act they record: an [`Audit`] is written by [`Audit::append`] inside the act's own
//! store op, so either both are stored or neither. An act that is refused or fails is
//! audited alone. On the edge each record is also written as an `audit` event in the same
//! transaction ([`Mirror::Events`]), so it reaches the hub through the ordinary event
//! upload and keeps its chain there.
//!
//! `id` is the order rows were stored in and `seq` their place in the chain, so
//! verification can tell a moved row from a deleted or altered one. Rows are never updated
//! or deleted by the node.

use std::path::Path;

use anyhow::Context as _;
use park_model::audit::{AuditRecord, ChainBreak, ChainedRecord, GENESIS};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value as Json, json};

use crate::{WriteOp, now_micros};

/// Who acts: a user (from their session or token) at a client address, or the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Empty for the system.
    pub user_id: String,
    pub name: String,
    pub client: String,
}

impl Actor {
    /// An act with no user behind it: a rule (`rule:ID`), a command on the host
    /// (`host:edge user add`), the hub's account sync (`hub`).
    pub fn system(name: impl Into<String>) -> Actor {
        Actor {
            user_id: String::new(),
            name: name.into(),
            client: String::new(),
        }
    }
}

/// Where a record is copied besides the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    /// Also an `audit` event in the edge store's `events` table (uploaded to the hub).
    Events,
    /// Nowhere (the hub keeps its own chain only).
    None,
}

/// One audited act, not yet stored.
#[derive(Debug, Clone)]
pub struct Audit {
    pub ts: i64,
    pub actor: Actor,
    pub action: String,
    pub target: String,
    pub detail: Json,
    pub outcome: String,
    pub mirror: Mirror,
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
";

impl Audit {
    /// A successful act, now.
    pub fn new(actor: &Actor, action: &str, target: &str, detail: Json) -> Audit {
        Audit {
            ts: now_micros(),
            actor: actor.clone(),
            action: action.into(),
            target: target.into(),
            detail,
            outcome: "ok".into(),
            mirror: Mirror::Events,
        }
    }

    /// The same record, kept in the chain only (the hub's own acts).
    pub fn unmirrored(mut self) -> Audit {
        self.mirror = Mirror::None;
        self
    }

    pub fn with_outcome(mut self, outcome: impl Into<String>) -> Audit {
        self.outcome = outcome.into();
        self
    }

    /// Appends the record to the chain on `c`, inside the caller's transaction, and writes
    /// its `audit` event beside it. Safe to run again after a rolled-back attempt: the
    /// chain's end is read inside the transaction.
    pub fn append(&self, c: &Connection) -> rusqlite::Result<()> {
        let last: Option<(i64, Vec<u8>)> = c
            .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (seq, prev) = match last {
            Some((s, h)) => (s as u64 + 1, to_hash(&h)),
            None => (1, GENESIS),
        };
        let record = AuditRecord {
            seq,
            ts: self.ts,
            user_id: self.actor.user_id.clone(),
            actor: self.actor.name.clone(),
            client: self.actor.client.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            detail: self.detail.to_string(),
            outcome: self.outcome.clone(),
        };
        let chained = ChainedRecord::new(record, prev);
        insert(c, &chained)?;
        if self.mirror == Mirror::Events {
            // Ids as the edge's other events have them: a UUIDv7 from the act's time.
            let secs = self.ts.div_euclid(1_000_000) as u64;
            let nanos = (self.ts.rem_euclid(1_000_000) * 1000) as u32;
            let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos));
            c.prepare_cached(
                "INSERT OR IGNORE INTO events (id, ts, kind, subject, body) VALUES (?1, ?2, 'audit', ?3, ?4)",
            )?
            .execute(params![
                id.to_string(),
                self.ts,
                self.action,
                record_json(&chained).to_string()
            ])?;
        }
        Ok(())
    }

    /// The record as a store op of its own (for acts refused or failed, and acts that write
    /// nothing else).
    pub fn op(self) -> WriteOp {
        Box::new(move |c| self.append(c))
    }
}

fn to_hash(bytes: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    if bytes.len() == 32 {
        h.copy_from_slice(bytes);
    }
    h
}

fn insert(c: &Connection, r: &ChainedRecord) -> rusqlite::Result<()> {
    let a = &r.record;
    c.prepare_cached(
        "INSERT INTO audit_log (seq, ts, user_id, actor, client, action, target, detail, outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        a.seq as i64,
        a.ts,
        a.user_id,
        a.actor,
        a.client,
        a.action,
        a.target,
        a.detail,
        a.outcome,
        &r.prev_hash[..],
        &r.hash[..]
    ])?;
    Ok(())
}

/// A chained record as JSON: what the API lists and what the `audit` event carries to the
/// hub (which verifies the building's chain from it).
pub fn record_json(r: &ChainedRecord) -> Json {
    let mut v = serde_json::to_value(&r.record).unwrap_or(Json::Null);
    v["prevHash"] = json!(hex(&r.prev_hash));
    v["hash"] = json!(hex(&r.hash));
    v
}

/// A record back from its JSON (the hub's copy of an edge chain).
pub fn record_from_json(v: &Json) -> Option<ChainedRecord> {
    let record: AuditRecord = serde_json::from_value(v.clone()).ok()?;
    let h = |k: &str| -> Option<[u8; 32]> {
        let bytes = data_encoding::HEXLOWER
            .decode(v.get(k)?.as_str()?.as_bytes())
            .ok()?;
        (bytes.len() == 32).then(|| to_hash(&bytes))
    };
    Some(ChainedRecord {
        record,
        prev_hash: h("prevHash")?,
        hash: h("hash")?,
    })
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChainedRecord> {
    Ok(ChainedRecord {
        record: AuditRecord {
            seq: r.get::<_, i64>(0)? as u64,
            ts: r.get(1)?,
            user_id: r.get(2)?,
            actor: r.get(3)?,
            client: r.get(4)?,
            action: r.get(5)?,
            target: r.get(6)?,
            detail: r.get(7)?,
            outcome: r.get(8)?,
        },
        prev_hash: to_hash(&r.get::<_, Vec<u8>>(9)?),
        hash: to_hash(&r.get::<_, Vec<u8>>(10)?),
    })
}

const COLUMNS: &str =
    "seq, ts, user_id, actor, client, action, target, detail, outcome, prev_hash, hash";

/// The newest records first, at most `limit`, before sequence `before` when given.
pub fn list(c: &Connection, before: Option<u64>, limit: usize) -> rusqlite::Result<Vec<Json>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![before.map(|b| b as i64), limit as i64], row)?;
    rows.map(|r| r.map(|r| record_json(&r))).collect()
}

/// The same, of the records whose target lies under `scope` (`scope/...`): a park's
/// records on the hub, whose acts name their targets `park/id`.
pub fn list_within(
    c: &Connection,
    scope: &str,
    before: Option<u64>,
    limit: usize,
) -> rusqlite::Result<Vec<Json>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE (?1 IS NULL OR seq < ?1)
         AND substr(target, 1, length(?3) + 1) = ?3 || '/'
         ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![before.map(|b| b as i64), limit as i64, scope], row)?;
    rows.map(|r| r.map(|r| record_json(&r))).collect()
}

/// Every record in the order stored.
pub fn read_chain(c: &Connection) -> rusqlite::Result<Vec<ChainedRecord>> {
    let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id"))?;
    let rows = stmt.query_map([], row)?;
    rows.collect()
}

/// Brings an audit table of the first store schema (rows without a chain) into the
/// chained log, in their order, in the caller's transaction.
pub fn migrate_unchained(c: &Connection) -> rusqlite::Result<u64> {
    let exists: bool = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if !exists {
        return Ok(0);
    }
    let old: Vec<(i64, String, String, String, String, String)> = {
        let mut stmt =
            c.prepare("SELECT ts, actor, action, target, detail, outcome FROM audit ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let n = old.len() as u64;
    for (ts, actor, action, target, detail, outcome) in old {
        let detail = serde_json::from_str(&detail).unwrap_or(Json::String(detail));
        Audit {
            ts,
            actor: Actor::system(format!("unverified:{actor}")),
            action,
            target,
            detail,
            outcome,
            mirror: Mirror::Events,
        }
        .append(c)?;
    }
    c.execute_batch("DROP TABLE audit")?;
    Ok(n)
}

/// What `smartpark audit verify` reports for one chain.
#[derive(Debug)]
pub struct Verified {
    pub records: u64,
    pub last: Option<(u64, [u8; 32])>,
}

/// Verifies the audit chain of the store (edge or hub) at `db`.
pub fn verify_store(db: &Path) -> anyhow::Result<Result<Verified, ChainBreak>> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", db.display()))?;
    let chain = read_chain(&c).context("cannot read the audit log")?;
    Ok(park_model::audit::verify(&chain, None).map(|(records, last)| Verified { records, last }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);",
        )
        .unwrap();
        c
    }

    fn amy() -> Actor {
        Actor {
            user_id: "u-1".into(),
            name: "amy".into(),
            client: "192.168.1.7".into(),
        }
    }

    #[test]
    fn records_chain_and_travel_as_events() {
        let c = db();
        for door in ["lobby", "lab-1", "lobby"] {
            Audit::new(
                &amy(),
                "door_manual_open",
                door,
                json!({"reason": "delivery"}),
            )
            .append(&c)
            .unwrap();
        }
        let chain = read_chain(&c).unwrap();
        assert_eq!(chain.len(), 3);
        assert_eq!(
            park_model::audit::verify(&chain, None).unwrap().0,
            3,
            "the chain holds"
        );
        let bodies: Vec<String> = c
            .prepare("SELECT body FROM events WHERE kind = 'audit' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let copies: Vec<ChainedRecord> = bodies
            .iter()
            .map(|b| record_from_json(&serde_json::from_str(b).unwrap()).unwrap())
            .collect();
        assert_eq!(copies, chain, "the hub's copy is the same chain");
    }

    #[test]
    fn tampering_in_the_table_is_found() {
        let c = db();
        for i in 0..6 {
            Audit::new(&amy(), "point_write", &format!("m/p{i}"), json!({}))
                .append(&c)
                .unwrap();
        }
        let check = |c: &Connection| park_model::audit::verify(&read_chain(c).unwrap(), None);
        c.execute("UPDATE audit_log SET outcome = 'refused' WHERE seq = 3", [])
            .unwrap();
        assert_eq!(check(&c), Err(ChainBreak::Altered { seq: 3 }));
        c.execute("UPDATE audit_log SET outcome = 'ok' WHERE seq = 3", [])
            .unwrap();
        assert!(check(&c).is_ok());
        c.execute_batch(
            "UPDATE audit_log SET id = -id WHERE seq IN (4, 5);
             UPDATE audit_log SET id = 5 WHERE id = -4;
             UPDATE audit_log SET id = 4 WHERE id = -5;",
        )
        .unwrap();
        assert_eq!(check(&c), Err(ChainBreak::Reordered { seq: 4, after: 5 }));
        c.execute("DELETE FROM audit_log WHERE seq = 2", [])
            .unwrap();
        assert_eq!(check(&c), Err(ChainBreak::Deleted { from: 2, to: 2 }));
    }

    #[test]
    fn rows_of_the_first_schema_join_the_chain() {
        let c = db();
        c.execute_batch(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, outcome TEXT NOT NULL);
             INSERT INTO audit (ts, actor, action, target, detail, outcome) VALUES (1, 'mallory', 'door_manual_open', 'lobby', '{\"reason\":\"x\"}', 'ok');",
        )
        .unwrap();
        assert_eq!(migrate_unchained(&c).unwrap(), 1);
        let chain = read_chain(&c).unwrap();
        assert_eq!(chain[0].record.actor, "unverified:mallory");
        assert!(park_model::audit::verify(&chain, None).is_ok());
        assert_eq!(migrate_unchained(&c).unwrap(), 0);
    }
}
