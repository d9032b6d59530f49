//! The audit chains the hub holds: its own (users, roles, departments, personal data, key
//! rotations, logins), kept in `audit_log` like an edge's, and each building's, as its
//! edge uploaded them in `audit` events. An edge's records keep the hashes they were
//! written with, so the hub's copy verifies on its own and shows any record that was
//! altered, lost or reordered on the way or at the edge after upload.

use park_db::Connection;
use park_model::audit::{ChainBreak, ChainedRecord};

/// A building's audit records as uploaded, in upload order.
pub fn edge_chain(c: &Connection, building_id: i64) -> park_db::Result<Vec<ChainedRecord>> {
    let mut stmt = c.prepare(&format!(
        "SELECT body FROM events WHERE building_id = ?1 AND {} = 'audit' ORDER BY seq",
        crate::store::event_kind(c.dialect())
    ))?;
    let rows = stmt.query_map([building_id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for body in rows {
        let body = body?;
        let record = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| accounts::audit::record_from_json(&v["body"]));
        match record {
            Some(r) => out.push(r),
            // A record that does not parse is a broken chain, found by the gap it leaves.
            None => tracing::warn!(building_id, "An uploaded audit record does not parse."),
        }
    }
    Ok(out)
}

/// One chain's verdict.
#[derive(Debug)]
pub struct ChainReport {
    /// `hub`, or `park/building`.
    pub name: String,
    pub result: Result<u64, ChainBreak>,
}

/// Verifies the hub's own chain and every building's chain in the database at `db`.
pub fn verify_all(db: impl Into<park_db::Target>) -> anyhow::Result<Vec<ChainReport>> {
    let handle = park_db::Handle::open(&db.into(), park_db::pool::Access::ReadOnly)?;
    let c = handle.conn();
    let mut reports = vec![ChainReport {
        name: "hub".into(),
        result: park_model::audit::verify(&accounts::audit::read_chain(&c)?, None).map(|r| r.0),
    }];
    let buildings: Vec<(i64, String, String)> = {
        let mut stmt =
            c.prepare("SELECT id, park, building FROM buildings ORDER BY park, building")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, park, building) in buildings {
        let chain = edge_chain(&c, id)?;
        reports.push(ChainReport {
            name: format!("{park}/{building}"),
            result: park_model::audit::verify(&chain, None).map(|r| r.0),
        });
    }
    Ok(reports)
}
