//! What the hub keeps about people that no edge needs: departments (the seed's 部门) that
//! users belong to, and the private fields of the park's people (phone and ID numbers).
//!
//! Private fields are sealed with AES-256-GCM under the hub's key file (outside the
//! database), bound to the person and the field, and shown masked (`138****5678`) to
//! everyone who may not read personal data. They never travel to edges: the park
//! directory that edges decide from has no such fields. `smartpark hub rotate-key`
//! re-seals every value under a new key ([`rotate_key`]).

use std::path::Path;

use accounts::auth::{Keyring, new_key, write_key};
use anyhow::Context as _;
use park_db::{Connection, OptionalExtension, params};
use park_model::identity::secret::{mask_id_number, mask_phone};
use serde_json::json;

use crate::views::PrivateFields;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS departments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    park TEXT,
    parent_id TEXT,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS person_private (
    park TEXT NOT NULL,
    person_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    phone TEXT,
    id_number TEXT,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, person_id)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS departments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    park TEXT,
    parent_id TEXT,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS person_private (
    park TEXT NOT NULL,
    person_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    phone TEXT,
    id_number TEXT,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, person_id)
);
";

/// The associated data a private field is sealed with: a value moved to another person or
/// field does not open there.
pub fn aad(park: &str, person: &str, field: &str) -> String {
    format!("person:{park}/{person}:{field}")
}

/// The sealed columns of the hub's database, with the associated data of each row.
struct SealedColumn {
    table: &'static str,
    column: &'static str,
    key: &'static str,
    aad: fn(&park_db::Row) -> park_db::Result<String>,
}

const SEALED: [SealedColumn; 5] = [
    SealedColumn {
        table: "person_private",
        column: "phone",
        key: "park, person_id",
        aad: |r| {
            Ok(aad(
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                "phone",
            ))
        },
    },
    SealedColumn {
        table: "person_private",
        column: "id_number",
        key: "park, person_id",
        aad: |r| {
            Ok(aad(
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                "id_number",
            ))
        },
    },
    SealedColumn {
        table: "leads",
        column: "phone",
        key: "park, id",
        aad: |r| {
            Ok(crate::leads::phone_aad(
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
            ))
        },
    },
    SealedColumn {
        table: "accounts",
        column: "totp",
        key: "id, id",
        aad: |r| Ok(format!("totp:{}", r.get::<_, String>(1)?)),
    },
    SealedColumn {
        table: "accounts",
        column: "totp_pending",
        key: "id, id",
        aad: |r| Ok(format!("totp:{}", r.get::<_, String>(1)?)),
    },
];

/// Re-seals every sealed value of the database at `db` under a new key, and makes it the
/// key file's key. The new key is written beside the old one first (`.new`), the values
/// are re-sealed in one transaction, and only then are the files swapped, so a crash at
/// any point leaves every value openable (the hub loads `.new` and `.old` too). Returns
/// the number of values re-sealed and the new key's id.
pub fn rotate_key(
    db: impl Into<park_db::Target>,
    key_file: &Path,
) -> anyhow::Result<(usize, String)> {
    let old = Keyring::load(key_file)?;
    let new_path = key_file.with_extension("new");
    // A rotation that stopped before its files were swapped is finished with its own new
    // key: values may already be sealed under it.
    let raw = if new_path.exists() {
        accounts::auth::read_key(&new_path)?
    } else {
        let raw = new_key()?;
        write_key(&new_path, &raw)?;
        raw
    };
    let new = Keyring::from_raw(raw);
    let handle = crate::store::open_db(db)?;
    let conn = handle.conn();
    let tx = conn.transaction()?;
    let mut n = 0;
    for col in &SEALED {
        let rows: Vec<(String, String, String, String)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {c}, {k} FROM {t} WHERE {c} IS NOT NULL",
                c = col.column,
                k = col.key,
                t = col.table
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (col.aad)(r)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let (k1, k2) = col.key.split_once(", ").unwrap_or((col.key, col.key));
        for (sealed, aad, a, b) in rows {
            let plain = old.open(&aad, &sealed).with_context(|| {
                format!("a value in {}.{} does not open", col.table, col.column)
            })?;
            let resealed = new.seal(accounts::auth::nonce()?, &aad, &plain);
            tx.execute(
                &format!(
                    "UPDATE {t} SET {c} = ?1 WHERE {k1} = ?2 AND {k2} = ?3",
                    t = col.table,
                    c = col.column
                ),
                params![resealed, a, b],
            )?;
            n += 1;
        }
    }
    accounts::auth::manage::bump(&tx)?;
    accounts::Audit::new(
        &accounts::auth::manage::host_actor("hub rotate-key"),
        "key_rotate",
        &key_file.display().to_string(),
        json!({"values": n, "from": old.current_id(), "to": new.current_id()}),
    )
    .unmirrored()
    .append(&tx)?;
    tx.commit()?;
    let old_path = key_file.with_extension("old");
    std::fs::rename(key_file, &old_path)
        .with_context(|| format!("cannot move {} aside", key_file.display()))?;
    std::fs::rename(&new_path, key_file)
        .with_context(|| format!("cannot put the new key in {}", key_file.display()))?;
    std::fs::remove_file(&old_path)
        .with_context(|| format!("cannot remove the old key {}", old_path.display()))?;
    Ok((n, new.current_id().to_string()))
}

/// A person's private fields as the API shows them: masked unless `unmasked`.
pub fn private_view(
    keys: &accounts::Auth,
    park: &str,
    person: &str,
    row: &PrivateRow,
    unmasked: bool,
) -> PrivateFields {
    let show = |field: &str, sealed: &Option<String>, mask: fn(&str) -> String| {
        let sealed = sealed.as_ref()?;
        Some(match keys.open_sealed(&aad(park, person, field), sealed) {
            Ok(plain) => {
                let text = String::from_utf8_lossy(&plain).into_owned();
                if unmasked { text } else { mask(&text) }
            }
            Err(e) => {
                tracing::error!(%park, %person, field, error = %e, "A sealed field does not open.");
                "(unreadable)".to_string()
            }
        })
    };
    PrivateFields {
        park: park.to_string(),
        person: person.to_string(),
        enterprise: row.enterprise_id.clone(),
        phone: show("phone", &row.phone, mask_phone),
        id_number: show("id_number", &row.id_number, mask_id_number),
        masked: !unmasked,
        updated: row.updated,
        updated_by: row.updated_by.clone(),
    }
}

#[derive(Debug, Clone)]
pub struct PrivateRow {
    pub enterprise_id: String,
    pub phone: Option<String>,
    pub id_number: Option<String>,
    pub updated: i64,
    pub updated_by: String,
}

pub fn read_private(
    c: &Connection,
    park: &str,
    person: &str,
) -> park_db::Result<Option<PrivateRow>> {
    c.query_row(
        "SELECT enterprise_id, phone, id_number, updated, updated_by FROM person_private WHERE park = ?1 AND person_id = ?2",
        [park, person],
        |r| {
            Ok(PrivateRow {
                enterprise_id: r.get(0)?,
                phone: r.get(1)?,
                id_number: r.get(2)?,
                updated: r.get(3)?,
                updated_by: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Digits, spaces, `+` and `-` only, 5 to 20 of them: a phone number as people write it.
pub fn valid_phone(p: &str) -> bool {
    (5..=20).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-'))
}

/// Letters and digits, 6 to 32: ID card and passport numbers.
pub fn valid_id_number(p: &str) -> bool {
    (6..=32).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())
}
