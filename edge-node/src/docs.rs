//! Storage of automerge documents: a snapshot per document plus the incremental chunks
//! saved since, in the same SQLite file as everything else. Loading concatenates the
//! snapshot and the chunks, which automerge reads as one document; compaction replaces
//! them with a fresh snapshot in one transaction.
//!
//! This module stores bytes; it knows nothing of what the documents mean.

use device_drivers::{Timestamp, now_micros};
use rusqlite::{OptionalExtension, params};

use crate::store::Store;

/// The stored bytes of a document and how many chunks follow its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub bytes: Vec<u8>,
    pub chunks: usize,
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
            }))
        })
        .await
}

/// Appends an incremental save (automerge `save_incremental`); durable when this returns.
pub async fn append(store: &Store, doc_id: &str, chunk: Vec<u8>) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let doc_id = doc_id.to_string();
    store
        .write(Box::new(move |c| {
            c.prepare_cached(
                "INSERT INTO doc_chunks (doc_id, seq, data)
                 VALUES (?1, coalesce((SELECT max(seq) FROM doc_chunks WHERE doc_id = ?1), 0) + 1, ?2)",
            )?
            .execute(params![doc_id, chunk])?;
            Ok(())
        }))
        .await
}

/// Replaces a document's snapshot and chunks with a full save.
pub async fn compact(store: &Store, doc_id: &str, snapshot: Vec<u8>) -> anyhow::Result<()> {
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
            Ok(())
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreConfig;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_follow_the_snapshot_until_compaction_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path().join("d.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        assert_eq!(load(&store, "dir").await.unwrap(), None);
        append(&store, "dir", b"ab".to_vec()).await.unwrap();
        append(&store, "dir", b"cd".to_vec()).await.unwrap();
        append(&store, "other", b"zz".to_vec()).await.unwrap();
        assert_eq!(
            load(&store, "dir").await.unwrap(),
            Some(StoredDoc {
                bytes: b"abcd".to_vec(),
                chunks: 2
            })
        );
        compact(&store, "dir", b"ABCD".to_vec()).await.unwrap();
        append(&store, "dir", b"e".to_vec()).await.unwrap();
        assert_eq!(
            load(&store, "dir").await.unwrap(),
            Some(StoredDoc {
                bytes: b"ABCDe".to_vec(),
                chunks: 1
            })
        );
        assert_eq!(load(&store, "other").await.unwrap().unwrap().bytes, b"zz");
    }
}
