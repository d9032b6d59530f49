//! Storage of automerge documents: a snapshot per document plus the incremental chunks
//! saved since, in the same SQLite file as everything else. Loading concatenates the
//! snapshot and the chunks, which automerge reads as one document; compaction replaces
//! them with a fresh snapshot in one transaction.
//!
//! A document may also have a row copy (`doc_cache`, one row per entity, see
//! `park_model::cache`) from which an edge decides while the document itself loads. Every
//! write of a document's bytes counts up its `version`; a write that carries the copy's
//! changes moves the copy's `cache_version` along in the same transaction, and one that does
//! not leaves the copy behind, no longer used. So a copy is used only when it matches the
//! stored bytes exactly, whatever crash came between.
//!
//! This module stores bytes and rows; it knows nothing of what the documents mean.

use device_drivers::{Timestamp, now_micros};
use park_model::cache::{CacheDelta, CacheRow};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::Store;

/// The stored bytes of a document, how many chunks follow its snapshot, and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub bytes: Vec<u8>,
    pub chunks: usize,
    pub version: i64,
}

/// Loads a document's snapshot followed by its chunks, or `None` if it was never saved.
pub async fn load(store: &Store, doc_id: &str) -> anyhow::Result<Option<StoredDoc>> {
    let doc_id = doc_id.to_string();
    store
        .read(move |c| {
            let snapshot: Option<Vec<u8>> = c
                .query_row(
                    "SELECT snapshot FROM documents WHERE doc_id = ?1",
                    [&doc_id],
                    |r| r.get(0),
                )
                .optional()?;
            let mut stmt =
                c.prepare_cached("SELECT data FROM doc_chunks WHERE doc_id = ?1 ORDER BY seq")?;
            let chunks: Vec<Vec<u8>> = stmt
                .query_map([&doc_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if snapshot.is_none() && chunks.is_empty() {
                return Ok(None);
            }
            let mut bytes = snapshot.unwrap_or_default();
            for chunk in &chunks {
                bytes.extend_from_slice(chunk);
            }
            Ok(Some(StoredDoc {
                bytes,
                chunks: chunks.len(),
                version: versions(c, &doc_id)?.0,
            }))
        })
        .await
}

/// The document's version, and the version its row copy matches (if it is in `format`).
fn versions(c: &Connection, doc_id: &str) -> rusqlite::Result<(i64, Option<i64>, Option<String>)> {
    Ok(c.query_row(
        "SELECT version, cache_version, cache_format FROM doc_versions WHERE doc_id = ?1",
        [doc_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .unwrap_or((0, None, None)))
}

/// How many writes of the document's bytes there have been (0 for none).
pub async fn version(store: &Store, doc_id: &str) -> anyhow::Result<i64> {
    let doc_id = doc_id.to_string();
    store.read(move |c| Ok(versions(c, &doc_id)?.0)).await
}

/// Whether the document's row copy matches its stored bytes and is in the current format.
pub fn cache_is_current(c: &Connection, doc_id: &str) -> rusqlite::Result<bool> {
    let (version, cache_version, cache_format) = versions(c, doc_id)?;
    Ok(cache_version == Some(version)
        && cache_format.as_deref() == Some(park_model::cache::CACHE_FORMAT))
}

/// Counts up the document's version; the copy follows when `delta` is given and the copy
/// matched the bytes before this write.
fn bump(c: &Connection, doc_id: &str, delta: Option<&CacheDelta>) -> rusqlite::Result<()> {
    let format = park_model::cache::CACHE_FORMAT;
    let (old, cache_version, cache_format) = versions(c, doc_id)?;
    let new = old + 1;
    let follows =
        delta.is_some() && cache_version == Some(old) && cache_format.as_deref() == Some(format);
    if follows && let Some(delta) = delta {
        for collection in &delta.replaced {
            c.prepare_cached("DELETE FROM doc_cache WHERE doc_id = ?1 AND collection = ?2")?
                .execute(params![doc_id, collection])?;
        }
        put_rows(c, doc_id, &delta.rows)?;
    }
    c.prepare_cached(
        "INSERT INTO doc_versions (doc_id, version, cache_version, cache_format)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (doc_id) DO UPDATE SET version = excluded.version,
             cache_version = excluded.cache_version, cache_format = excluded.cache_format",
    )?
    .execute(params![
        doc_id,
        new,
        follows.then_some(new),
        follows.then_some(format)
    ])?;
    Ok(())
}

fn put_rows(c: &Connection, doc_id: &str, rows: &[CacheRow]) -> rusqlite::Result<()> {
    let mut upsert = c.prepare_cached(
        "INSERT INTO doc_cache (doc_id, collection, id, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (doc_id, collection, id) DO UPDATE SET value = excluded.value",
    )?;
    let mut delete = c.prepare_cached(
        "DELETE FROM doc_cache WHERE doc_id = ?1 AND collection = ?2 AND id = ?3",
    )?;
    for r in rows {
        match &r.value {
            Some(v) => upsert.execute(params![doc_id, r.collection, r.id, v])?,
            None => delete.execute(params![doc_id, r.collection, r.id])?,
        };
    }
    Ok(())
}

/// Appends an incremental save (automerge `save_incremental`), with what it changes in the
/// document's row copy if it has one; durable when this returns.
///
/// `audit` records the act that made the change, in the same transaction; an empty chunk
/// writes only the record.
pub async fn append(
    store: &Store,
    doc_id: &str,
    chunk: Vec<u8>,
    delta: Option<CacheDelta>,
    audit: Option<accounts::Audit>,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return match audit {
            Some(a) => store.audit(a).await,
            None => Ok(()),
        };
    }
    let doc_id = doc_id.to_string();
    store
        .write(Box::new(move |c| {
            c.prepare_cached(
                "INSERT INTO doc_chunks (doc_id, seq, data)
                 VALUES (?1, coalesce((SELECT max(seq) FROM doc_chunks WHERE doc_id = ?1), 0) + 1, ?2)",
            )?
            .execute(params![doc_id, chunk])?;
            bump(c, &doc_id, delta.as_ref())?;
            match &audit {
                Some(a) => Ok(a.append(&park_db::Connection::sqlite(c))?),
                None => Ok(()),
            }
        }))
        .await
}

/// Replaces a document's snapshot and chunks with a full save of the same content: a row
/// copy that matched the old bytes matches the new ones.
pub async fn compact(store: &Store, doc_id: &str, snapshot: Vec<u8>) -> anyhow::Result<()> {
    replace(store, doc_id, snapshot, Some(CacheDelta::default())).await
}

/// Replaces a document's snapshot and chunks with a full save of content that may differ
/// from what was stored: the row copy, if any, is no longer used.
pub async fn replace_unmatched(
    store: &Store,
    doc_id: &str,
    snapshot: Vec<u8>,
) -> anyhow::Result<()> {
    replace(store, doc_id, snapshot, None).await
}

async fn replace(
    store: &Store,
    doc_id: &str,
    snapshot: Vec<u8>,
    delta: Option<CacheDelta>,
) -> anyhow::Result<()> {
    let doc_id = doc_id.to_string();
    let now: Timestamp = now_micros();
    store
        .write(Box::new(move |c| {
            c.execute(
                "INSERT INTO documents (doc_id, snapshot, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (doc_id) DO UPDATE SET snapshot = excluded.snapshot, updated = excluded.updated",
                params![doc_id, snapshot, now],
            )?;
            c.execute("DELETE FROM doc_chunks WHERE doc_id = ?1", [&doc_id])?;
            bump(c, &doc_id, delta.as_ref())
        }))
        .await
}

/// The rows of the document's copy, if the copy matches the stored bytes and is in the
/// current format.
pub async fn load_cache(
    store: &Store,
    doc_id: &str,
) -> anyhow::Result<Option<Vec<(String, String, String)>>> {
    let doc_id = doc_id.to_string();
    store
        .read(move |c| {
            let (version, cache_version, cache_format) = versions(c, &doc_id)?;
            if cache_version != Some(version)
                || cache_format.as_deref() != Some(park_model::cache::CACHE_FORMAT)
            {
                return Ok(None);
            }
            let mut stmt =
                c.prepare_cached("SELECT collection, id, value FROM doc_cache WHERE doc_id = ?1")?;
            let rows = stmt
                .query_map([&doc_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(rows))
        })
        .await
}

/// Writes the whole copy, made from the document at `version`. Nothing is written if the
/// document has moved on since (the next start then reads the document and writes it again).
/// Returns whether the copy was written.
pub async fn write_cache(
    store: &Store,
    doc_id: &str,
    version: i64,
    rows: Vec<CacheRow>,
) -> anyhow::Result<bool> {
    let doc_id = doc_id.to_string();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = written.clone();
    store
        .write(Box::new(move |c| {
            flag.store(false, std::sync::atomic::Ordering::Relaxed);
            if versions(c, &doc_id)?.0 != version {
                return Ok(());
            }
            c.prepare_cached("DELETE FROM doc_cache WHERE doc_id = ?1")?
                .execute([&doc_id])?;
            put_rows(c, &doc_id, &rows)?;
            c.prepare_cached(
                "INSERT INTO doc_versions (doc_id, version, cache_version, cache_format)
                 VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (doc_id) DO UPDATE SET cache_version = excluded.cache_version,
                     cache_format = excluded.cache_format",
            )?
            .execute(params![doc_id, version, park_model::cache::CACHE_FORMAT])?;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }))
        .await?;
    Ok(written.load(std::sync::atomic::Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreConfig;
    use std::sync::Arc;

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(
            StoreConfig::new(dir.path().join("d.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    fn row(collection: &'static str, id: &str, value: Option<&str>) -> CacheRow {
        CacheRow {
            collection,
            id: id.into(),
            value: value.map(str::to_string),
        }
    }

    fn delta(rows: Vec<CacheRow>) -> Option<CacheDelta> {
        Some(CacheDelta {
            replaced: Vec::new(),
            rows,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_follow_the_snapshot_until_compaction_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert_eq!(load(&store, "dir").await.unwrap(), None);
        append(&store, "dir", b"ab".to_vec(), None, None)
            .await
            .unwrap();
        append(&store, "dir", b"cd".to_vec(), None, None)
            .await
            .unwrap();
        append(&store, "other", b"zz".to_vec(), None, None)
            .await
            .unwrap();
        assert_eq!(
            load(&store, "dir").await.unwrap(),
            Some(StoredDoc {
                bytes: b"abcd".to_vec(),
                chunks: 2,
                version: 2,
            })
        );
        compact(&store, "dir", b"ABCD".to_vec()).await.unwrap();
        append(&store, "dir", b"e".to_vec(), None, None)
            .await
            .unwrap();
        assert_eq!(
            load(&store, "dir").await.unwrap(),
            Some(StoredDoc {
                bytes: b"ABCDe".to_vec(),
                chunks: 1,
                version: 4,
            })
        );
        assert_eq!(load(&store, "other").await.unwrap().unwrap().bytes, b"zz");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_row_copy_is_used_only_while_it_matches_the_stored_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert_eq!(load_cache(&store, "dir").await.unwrap(), None);
        replace_unmatched(&store, "dir", b"v1".to_vec())
            .await
            .unwrap();
        let v = load(&store, "dir").await.unwrap().unwrap().version;
        let rows = vec![row("", "", Some("{}")), row("people", "p1", Some("a"))];
        assert!(write_cache(&store, "dir", v, rows).await.unwrap());
        let got = load_cache(&store, "dir").await.unwrap().unwrap();
        assert_eq!(got.len(), 2);

        // A save with the copy's changes keeps it in step, a compaction keeps it too.
        let changes = delta(vec![
            row("people", "p1", None),
            row("people", "p2", Some("b")),
        ]);
        append(&store, "dir", b"+".to_vec(), changes, None)
            .await
            .unwrap();
        compact(&store, "dir", b"v1+".to_vec()).await.unwrap();
        let got = load_cache(&store, "dir").await.unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                (String::new(), String::new(), "{}".to_string()),
                ("people".into(), "p2".into(), "b".into())
            ]
        );
        // Another document's writes do not touch it.
        append(&store, "other", b"x".to_vec(), None, None)
            .await
            .unwrap();
        assert!(load_cache(&store, "dir").await.unwrap().is_some());

        // A save without them retires it, and a later delta does not bring it back.
        append(&store, "dir", b"?".to_vec(), None, None)
            .await
            .unwrap();
        assert_eq!(load_cache(&store, "dir").await.unwrap(), None);
        append(&store, "dir", b"!".to_vec(), delta(Vec::new()), None)
            .await
            .unwrap();
        assert_eq!(load_cache(&store, "dir").await.unwrap(), None);

        // A copy made from an older version is not written.
        assert!(!write_cache(&store, "dir", v, Vec::new()).await.unwrap());
        assert_eq!(load_cache(&store, "dir").await.unwrap(), None);
        let now = load(&store, "dir").await.unwrap().unwrap().version;
        assert!(write_cache(&store, "dir", now, Vec::new()).await.unwrap());
        assert_eq!(load_cache(&store, "dir").await.unwrap(), Some(Vec::new()));
    }
}
