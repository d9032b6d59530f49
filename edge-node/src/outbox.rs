//! The edge's upload queue for the hub, over the same SQLite file as everything else: the
//! [`sync_protocol::EdgeOutbox`] that the sync session reads from.
//!
//! Nothing is copied into a separate queue. Each stream numbers records from what the store
//! already keeps in order:
//!
//! - events: the event log's sequence number;
//! - rollups: one record per commit that wrote rollup rows (its version; each row carries
//!   the version that last changed it). A row changed again later moves to the later
//!   record, so an earlier record can come out empty: it is then skipped as a gap, and the
//!   row's newest state follows in its new record;
//! - raw: blocks of [`RAW_BLOCK`] consecutive raw-sample rowids; only complete blocks are
//!   offered, so a record never changes once numbered.
//!
//! Raw samples deleted by retention or the disk budget before upload leave their block
//! empty or short; an empty block is reported to the hub as a gap, never silently. Events
//! and documents are never deleted by the budget. The acknowledged cursor of each stream is
//! kept in `sync_cursors`, so an upload resumes where the hub's durable copy ends after any
//! restart of either side.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sync_protocol::session::ReadLimit;
use sync_protocol::{
    EdgeOutbox, EventRecord, Quality, RawBatch, RawSample, RawSeries, RollupBatch, RollupRow,
    UploadStream, Value,
};

/// Raw samples per raw record, unless configured otherwise.
pub const RAW_BLOCK: i64 = 50_000;

/// The edge's outbox on its own connection to the store.
pub struct SqliteOutbox {
    conn: Connection,
    /// Raw samples (rowids) per raw record.
    block: i64,
    /// Per stream: cursor offset, for when the hub holds more than this store remembers.
    base: HashMap<&'static str, u64>,
}

fn stream_name(s: UploadStream) -> &'static str {
    match s {
        UploadStream::Events => "events",
        UploadStream::Rollups => "rollups",
        UploadStream::Raw => "raw",
    }
}

impl SqliteOutbox {
    /// Opens the store file (the node's store must have created it).
    pub fn open(path: &Path) -> anyhow::Result<SqliteOutbox> {
        Self::open_with_block(path, RAW_BLOCK)
    }

    /// The same, with `block` raw samples per raw record (at least 1).
    pub fn open_with_block(path: &Path, block: i64) -> anyhow::Result<SqliteOutbox> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut base = HashMap::new();
        for s in UploadStream::ALL {
            let b: Option<i64> = conn
                .query_row(
                    "SELECT base FROM sync_cursors WHERE stream = ?1",
                    [stream_name(s)],
                    |r| r.get(0),
                )
                .optional()?;
            base.insert(stream_name(s), b.unwrap_or(0) as u64);
        }
        Ok(SqliteOutbox {
            conn,
            block: block.max(1),
            base,
        })
    }

    fn base(&self, s: UploadStream) -> u64 {
        self.base.get(stream_name(s)).copied().unwrap_or(0)
    }

    /// The newest local number of a stream (before the base offset).
    fn local_last(&self, s: UploadStream) -> rusqlite::Result<u64> {
        let max = |sql: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0))
        };
        Ok(match s {
            UploadStream::Events => max("SELECT max(seq) FROM events")? as u64,
            UploadStream::Rollups => {
                max("SELECT max(value) FROM meta WHERE key = 'rollup_version'")? as u64
            }
            UploadStream::Raw => (max("SELECT max(rowid) FROM samples")? / self.block) as u64,
        })
    }

    fn read_events(
        &self,
        after: u64,
        limit: ReadLimit,
    ) -> rusqlite::Result<Vec<(u64, EventRecord)>> {
        let base = self.base(UploadStream::Events);
        let local_after = after.saturating_sub(base) as i64;
        let mut stmt = self.conn.prepare_cached("SELECT seq, id, ts, kind, subject, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = stmt.query(params![local_after, limit.max_records.max(1) as i64])?;
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let id: String = r.get(1)?;
            let uuid = uuid::Uuid::parse_str(&id)
                .map(|u| *u.as_bytes())
                .unwrap_or([0; 16]);
            let body: String = r.get(5)?;
            let record = serde_json::json!({
                "id": id, "ts": r.get::<_, i64>(2)?, "kind": r.get::<_, String>(3)?,
                "subject": r.get::<_, String>(4)?, "body": serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
            });
            let body = serde_json::to_vec(&record).unwrap_or_default();
            bytes += body.len() + 32;
            out.push((seq as u64 + base, EventRecord { id: uuid, body }));
            if bytes >= limit.max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn read_rollups(
        &self,
        after: u64,
        limit: ReadLimit,
    ) -> rusqlite::Result<Vec<(u64, RollupBatch)>> {
        let base = self.base(UploadStream::Rollups);
        let local_after = after.saturating_sub(base) as i64;
        let mut versions = self.conn.prepare_cached(
            "SELECT DISTINCT version FROM rollups WHERE version > ?1 ORDER BY version LIMIT ?2",
        )?;
        let versions: Vec<i64> = versions
            .query_map(params![local_after, limit.max_records.max(1) as i64], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let mut rows_stmt = self.conn.prepare_cached(
            "SELECT p.key, r.level, r.bucket, r.min, r.max, r.sum, r.count, r.last, r.last_ts, r.delta, r.bad
             FROM rollups r JOIN points p ON p.id = r.point_id WHERE r.version = ?1",
        )?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for version in versions {
            let rows: Vec<RollupRow> = rows_stmt
                .query_map([version], |r| {
                    Ok(RollupRow {
                        point: r.get(0)?,
                        period_s: (r.get::<_, i64>(1)? * 60) as u32,
                        bucket: r.get(2)?,
                        min: r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN),
                        max: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
                        sum: r.get(5)?,
                        count: r.get::<_, i64>(6)? as u64,
                        last: r.get::<_, Option<f64>>(7)?.unwrap_or(f64::NAN),
                        last_ts: r.get(8)?,
                        delta: r.get(9)?,
                        bad: r.get::<_, i64>(10)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            bytes += rows.len() * 40;
            out.push((version as u64 + base, RollupBatch { rows }));
            if bytes >= limit.max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn read_raw(&self, after: u64, limit: ReadLimit) -> rusqlite::Result<Vec<(u64, RawBatch)>> {
        let base = self.base(UploadStream::Raw);
        let last = self.local_last(UploadStream::Raw)?;
        let mut block = after.saturating_sub(base) + 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.key, s.ts, s.value, s.q, s.reason FROM samples s JOIN points p ON p.id = s.point_id
             WHERE s.rowid > ?1 AND s.rowid <= ?2 ORDER BY s.point_id, s.ts",
        )?;
        while block <= last && out.len() < limit.max_records.max(1) {
            let lo = (block as i64 - 1) * self.block;
            let mut series: Vec<RawSeries> = Vec::new();
            let mut rows = stmt.query(params![lo, lo + self.block])?;
            while let Some(r) = rows.next()? {
                let point: String = r.get(0)?;
                let q: i64 = r.get(3)?;
                let reason: Option<String> = r.get(4)?;
                let value = match (q >> 4, r.get_ref(2)?) {
                    (1, rusqlite::types::ValueRef::Integer(i)) => Some(Value::Bool(i != 0)),
                    (2, rusqlite::types::ValueRef::Integer(i)) => Some(Value::Int(i)),
                    (3, rusqlite::types::ValueRef::Real(f)) => Some(Value::Float(f)),
                    (3, rusqlite::types::ValueRef::Integer(i)) => Some(Value::Float(i as f64)),
                    (4, rusqlite::types::ValueRef::Text(t)) => {
                        Some(Value::Text(String::from_utf8_lossy(t).into_owned()))
                    }
                    _ => None,
                };
                let quality = match q & 0xf {
                    0 => Quality::Good,
                    1 => Quality::Uncertain(reason.unwrap_or_default()),
                    3 => Quality::Stale,
                    _ => Quality::Bad(reason.unwrap_or_default()),
                };
                let sample = RawSample {
                    ts: r.get(1)?,
                    value,
                    quality,
                };
                match series.last_mut() {
                    Some(s) if s.point == point => s.samples.push(sample),
                    _ => series.push(RawSeries {
                        point,
                        samples: vec![sample],
                    }),
                }
            }
            // An empty block was deleted before upload: not returned, so the session reports
            // it to the hub as a gap.
            if !series.is_empty() {
                bytes += series
                    .iter()
                    .map(|s| s.samples.len() * 8 + s.point.len())
                    .sum::<usize>();
                out.push((block + base, RawBatch { series }));
            }
            block += 1;
            if bytes >= limit.max_bytes {
                break;
            }
        }
        Ok(out)
    }
}

fn log_error<T: Default>(what: &str, r: rusqlite::Result<T>) -> T {
    r.unwrap_or_else(|e| {
        tracing::error!(error = %e, "Outbox read failed ({what}); retrying on the next poll.");
        T::default()
    })
}

impl EdgeOutbox for SqliteOutbox {
    fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)> {
        log_error("events", self.read_events(after, limit))
    }

    fn rollups_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RollupBatch)> {
        log_error("rollups", self.read_rollups(after, limit))
    }

    fn raw_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RawBatch)> {
        log_error("raw", self.read_raw(after, limit))
    }

    fn last_written(&self, stream: UploadStream) -> u64 {
        log_error("last written", self.local_last(stream)) + self.base(stream)
    }

    fn acknowledged_cursor(&self, stream: UploadStream) -> u64 {
        log_error(
            "cursor",
            self.conn
                .query_row(
                    "SELECT acked FROM sync_cursors WHERE stream = ?1",
                    [stream_name(stream)],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map(|v| v.unwrap_or(0) as u64),
        )
    }

    fn acknowledged(&mut self, stream: UploadStream, through: u64) {
        // A hub that holds more than this store remembers: number new records after it.
        let local_last = log_error("last written", self.local_last(stream));
        let base = self.base(stream);
        let new_base = if through > local_last + base {
            through - local_last
        } else {
            base
        };
        let name = stream_name(stream);
        let result = self.conn.execute(
            "INSERT INTO sync_cursors (stream, acked, base) VALUES (?1, ?2, ?3)
             ON CONFLICT (stream) DO UPDATE SET acked = max(acked, excluded.acked), base = excluded.base",
            params![name, through as i64, new_base as i64],
        );
        match result {
            Ok(_) => {
                self.base.insert(name, new_base);
            }
            Err(e) => {
                tracing::error!(stream = name, error = %e, "Cannot record the hub's acknowledgement; it will be asked again.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, record};
    use crate::metrics::Metrics;
    use crate::store::{Store, StoreConfig};
    use device_drivers::{PointKey, Sample, Value as V};
    use std::sync::Arc;

    fn limit() -> ReadLimit {
        ReadLimit {
            max_records: 100,
            max_bytes: 1 << 20,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_raw_blocks_and_cursors_come_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let store = Store::open(
            StoreConfig::new(path.clone()),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        for i in 0..3 {
            record(
                &store,
                Event::new(i, "access.decision", "d1", serde_json::json!({"n": i})),
            )
            .await
            .unwrap();
        }
        let key = PointKey::new("m", "p");
        let n = 2 * RAW_BLOCK + RAW_BLOCK / 2;
        let samples: Vec<Sample> = (0..n)
            .map(|i| Sample::good(key.clone(), i, V::Float(i as f64)))
            .collect();
        store.ingest(samples).await;
        store.flush().await;
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        assert_eq!(outbox.last_written(UploadStream::Events), 3);
        let events = outbox.events_after(1, limit());
        assert_eq!(
            events.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let body: serde_json::Value = serde_json::from_slice(&events[0].1.body).unwrap();
        assert_eq!(body["kind"], "access.decision");
        assert_eq!(body["body"]["n"], 1);
        // Two and a half blocks of samples make two complete blocks; the third is not
        // offered yet.
        assert_eq!(outbox.last_written(UploadStream::Raw), 2);
        let raw = outbox.raw_after(0, limit());
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[0].1.series[0].samples.len(), RAW_BLOCK as usize);
        assert_eq!(
            raw[1].1.series[0].samples[0].value,
            Some(Value::Float(RAW_BLOCK as f64))
        );
        assert_eq!(outbox.acknowledged_cursor(UploadStream::Events), 0);
        // The samples (from 1970) were late for every level: one commit, one rollup record.
        assert_eq!(outbox.last_written(UploadStream::Rollups), 1);
        let rollups = outbox.rollups_after(0, limit());
        assert_eq!(rollups.len(), 1);
        let minutes: Vec<_> = rollups[0]
            .1
            .rows
            .iter()
            .filter(|r| r.period_s == 60)
            .collect();
        assert_eq!(
            minutes.len(),
            1,
            "all samples within the first minute of 1970"
        );
        assert_eq!(minutes[0].count, n as u64);
        outbox.acknowledged(UploadStream::Events, 2);
        drop(outbox);
        let outbox = SqliteOutbox::open(&path).unwrap();
        assert_eq!(
            outbox.acknowledged_cursor(UploadStream::Events),
            2,
            "cursors survive a restart"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_ahead_of_the_edge_makes_new_records_number_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let store = Store::open(
            StoreConfig::new(path.clone()),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        record(
            &store,
            Event::new(1, "door.state", "d", serde_json::json!({})),
        )
        .await
        .unwrap();
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        outbox.acknowledged(UploadStream::Events, 50);
        record(
            &store,
            Event::new(2, "door.state", "d", serde_json::json!({})),
        )
        .await
        .unwrap();
        assert_eq!(outbox.last_written(UploadStream::Events), 51);
        assert_eq!(
            outbox
                .events_after(50, limit())
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            vec![51]
        );
    }
}
