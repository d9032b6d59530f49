//! Events: what happened in the building (access decisions, door states, parking sessions,
//! payments). Each has an id unique across the park (a UUIDv7 made from the time it
//! happened), so any replica stores it idempotently; the store's sequence number orders
//! them for upload.
//!
//! Recording an event returns only once it is durably committed: a decision is on disk
//! before the unlock or barrier command that follows it is published.

use device_drivers::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value as Json;

use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub ts: Timestamp,
    pub kind: String,
    pub subject: String,
    pub body: Json,
}

impl Event {
    /// A new event with a fresh UUIDv7 id for time `ts`.
    pub fn new(ts: Timestamp, kind: &str, subject: &str, body: Json) -> Self {
        let secs = ts.div_euclid(1_000_000) as u64;
        let nanos = (ts.rem_euclid(1_000_000) * 1000) as u32;
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos));
        Event {
            id: id.to_string(),
            ts,
            kind: kind.to_string(),
            subject: subject.to_string(),
            body,
        }
    }
}

/// Stores an event durably. Storing the same id again changes nothing and returns `false`.
pub async fn record(store: &Store, event: Event) -> anyhow::Result<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let body = event.body.to_string();
    store
        .write(Box::new(move |c| {
            let n = c
                .prepare_cached("INSERT OR IGNORE INTO events (id, ts, kind, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![event.id, event.ts, event.kind, event.subject, body])?;
            if let Some(tx) = tx.take() {
                let _ = tx.send(n == 1);
            }
            Ok(())
        }))
        .await?;
    Ok(rx.await.unwrap_or(false))
}

/// Which events to list; all filters are optional.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// `access` matches `access.decision` and every other kind under `access.`.
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Only events with a sequence number below this (for paging backwards).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

/// Events newest first, with their sequence numbers.
pub async fn query(store: &Store, q: EventQuery) -> anyhow::Result<Vec<(i64, Event)>> {
    store
        .read(move |c| {
            let kind_exact = q.kind.clone();
            let kind_prefix = q.kind.as_ref().map(|k| format!("{k}."));
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, ts, kind, subject, body FROM events
                 WHERE kind <> 'audit'
                   AND (?1 IS NULL OR kind = ?1 OR substr(kind, 1, length(?2)) = ?2)
                   AND (?3 IS NULL OR subject = ?3)
                   AND (?4 IS NULL OR ts >= ?4) AND (?5 IS NULL OR ts < ?5)
                   AND (?6 IS NULL OR seq < ?6)
                 ORDER BY seq DESC LIMIT ?7",
            )?;
            let rows = stmt.query_map(
                params![
                    kind_exact,
                    kind_prefix,
                    q.subject,
                    q.from,
                    q.to,
                    q.before_seq,
                    q.limit as i64
                ],
                |r| {
                    let body: String = r.get(5)?;
                    Ok((
                        r.get(0)?,
                        Event {
                            id: r.get(1)?,
                            ts: r.get(2)?,
                            kind: r.get(3)?,
                            subject: r.get(4)?,
                            body: serde_json::from_str(&body).unwrap_or(Json::Null),
                        },
                    ))
                },
            )?;
            rows.collect()
        })
        .await
}

/// One event by id.
pub async fn get(store: &Store, id: &str) -> anyhow::Result<Option<Event>> {
    let id = id.to_string();
    store
        .read(move |c| {
            c.query_row(
                "SELECT id, ts, kind, subject, body FROM events WHERE id = ?1",
                [id],
                |r| {
                    let body: String = r.get(4)?;
                    Ok(Event {
                        id: r.get(0)?,
                        ts: r.get(1)?,
                        kind: r.get(2)?,
                        subject: r.get(3)?,
                        body: serde_json::from_str(&body).unwrap_or(Json::Null),
                    })
                },
            )
            .optional()
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreConfig;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_stored_once_and_listed_newest_first_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path().join("e.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let a = Event::new(1_000, "access.decision", "door-1", json!({"granted": true}));
        let b = Event::new(
            2_000,
            "parking.entry",
            "lane-1",
            json!({"plate": "湘A12345"}),
        );
        assert!(record(&store, a.clone()).await.unwrap());
        assert!(
            !record(&store, a.clone()).await.unwrap(),
            "the same id is stored once"
        );
        assert!(record(&store, b.clone()).await.unwrap());
        let all = query(
            &store,
            EventQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            all.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            vec![b.clone(), a.clone()]
        );
        let access = query(
            &store,
            EventQuery {
                kind: Some("access".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(access.len(), 1);
        assert_eq!(get(&store, &a.id).await.unwrap(), Some(a.clone()));
        assert!(a.id < b.id, "UUIDv7 ids sort by time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_is_refused_alone_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path().join("e.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let bad = store.write(Box::new(|c| {
            c.execute("INSERT INTO no_such_table VALUES (1)", [])
                .map(|_| ())
        }));
        let good = record(&store, Event::new(5, "door.state", "d", json!({})));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.unwrap_err().to_string().contains("no_such_table"));
        assert!(good.unwrap());
        assert_eq!(
            query(
                &store,
                EventQuery {
                    limit: 5,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .len(),
            1
        );
    }
}
