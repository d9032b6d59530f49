//! The edges' sync connections: one task per connection drives a
//! [`HubSession::for_building`] made for the building the certificate names, over the
//! QUIC frame channel, into the store; and the hub's replica of each park's automerge
//! documents, synced with every connected edge of the park.
//!
//! A building has at most one live connection: a newer one replaces the older. The hub
//! never takes the building from what the edge says: the session refuses a hello naming
//! another building, and the sink stores under the certificate's building.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use automerge::sync::SyncDoc as _;
use park_db::params;
use sync_protocol::transport::{CloseCode, FrameChannel, PeerIdentity, TransportError};
use sync_protocol::{
    DocumentMessage, HubEvent, HubSession, LostReason, SessionConfig, Time, UploadStream,
};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::store::{BuildingKey, HubStore, building_id, now_micros};

/// What the hub knows about a live connection, for the API.
#[derive(Debug)]
pub struct LiveEdge {
    pub id: u64,
    pub serial: String,
    pub remote: String,
    pub connected_since: i64,
    pub last_seen: AtomicI64,
    pub edge_id: Mutex<Option<String>>,
    closer: sync_protocol::transport::ChannelCloser,
}

/// The live connections, by building.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<BuildingKey, Arc<LiveEdge>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn get(&self, key: &BuildingKey) -> Option<Arc<LiveEdge>> {
        lock(&self.live).get(key).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the live connections whose certificate serial is in `revoked`.
    pub fn close_revoked(&self, is_revoked: impl Fn(&str) -> bool) {
        for (key, edge) in lock(&self.live).iter() {
            if is_revoked(&edge.serial) {
                tracing::warn!(building = %key, serial = %edge.serial, "Closing the connection of a revoked certificate.");
                edge.closer.close(
                    CloseCode::Refused,
                    "this edge's certificate has been revoked",
                );
            }
        }
    }

    /// Closes every live connection (shutdown).
    pub fn close_all(&self, reason: &str) {
        for edge in lock(&self.live).values() {
            edge.closer.close(CloseCode::ShuttingDown, reason);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A document changed on the hub's replica: connections of the park send it on.
#[derive(Debug, Clone)]
struct DocChanged {
    park: String,
    doc_id: String,
    origin: u64,
}

/// What the database holds of a document: its snapshot (sequence 0) and its chunks, with
/// their sequence numbers.
pub fn stored_parts(
    c: &park_db::Connection,
    park: &str,
    doc_id: &str,
) -> park_db::Result<Vec<(i64, Vec<u8>)>> {
    let mut parts: Vec<(i64, Vec<u8>)> = c.query_all(
        "SELECT snapshot FROM documents WHERE park = ?1 AND doc_id = ?2",
        params![park, doc_id],
        |r| Ok((0, r.get(0)?)),
    )?;
    parts.extend(c.query_all(
        "SELECT seq, data FROM doc_chunks WHERE park = ?1 AND doc_id = ?2 ORDER BY seq",
        params![park, doc_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?);
    Ok(parts)
}

/// A document of a park: (park, document id).
type DocKey = (String, String);
/// A stored document: its snapshot and the incremental chunks after it.
type StoredDoc = (Vec<u8>, Vec<Vec<u8>>);

/// Chunks after which a document is saved whole again.
const COMPACT_AFTER_CHUNKS: u64 = 64;
/// A directory read whole, with the heads it was read at.
struct DirectorySnapshot {
    /// The replica's heads when it was read.
    heads: Vec<automerge::ChangeHash>,
    directory: Arc<park_model::directory::Directory>,
    /// Whether the park's editing copy has recorded its changes since (a copy loaded
    /// afresh has not: the next read is a whole one).
    tracked: bool,
}

/// The id of a park's directory document.
const DIRECTORY: &str = "directory";

/// One document's replica. Readers take the current version (an `Arc`) and work on it with
/// no lock held; a writer makes a copy, applies and checks the edge's changes on the copy,
/// and swaps it in. `current` is locked only to take or swap the pointer, so automerge work
/// never runs under a lock that another connection waits on; `writer` puts the writers of
/// this one document in line (in blocking threads, off the async workers).
struct Replica {
    current: Mutex<Arc<automerge::Automerge>>,
    writer: Mutex<()>,
    chunks: AtomicU64,
}

impl Replica {
    fn new(doc: automerge::Automerge, chunks: u64) -> Replica {
        Replica {
            current: Mutex::new(Arc::new(doc)),
            writer: Mutex::new(()),
            chunks: AtomicU64::new(chunks),
        }
    }

    fn snapshot(&self) -> Arc<automerge::Automerge> {
        lock(&self.current).clone()
    }
}

/// Why an edge's document message was not applied.
#[derive(Debug)]
pub enum DocRefusal {
    /// The building may not do this (see `park_model::ownership`): counted and audited.
    Forbidden(String),
    /// The message is malformed or over a limit: counted.
    Malformed(String),
}

impl std::fmt::Display for DocRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocRefusal::Forbidden(r) | DocRefusal::Malformed(r) => f.write_str(r),
        }
    }
}

/// The hub's replicas of the parks' automerge documents, loaded at start, kept in memory
/// and stored as a snapshot plus incremental chunks. A park has at most a directory, a car
/// parks document and one document per building: edges cannot add others.
pub struct Documents {
    replicas: Mutex<BTreeMap<DocKey, Arc<Replica>>>,
    /// Per park, an editable copy of its directory for the hub's own edits (master data),
    /// brought up to the replica with the changes since, so that an edit never loads the
    /// whole document again.
    editors: Mutex<HashMap<String, park_model::ParkDirectory>>,
    /// Per park, the directory read whole as of some heads, for lists: read again only
    /// after the document changed.
    snapshots: Mutex<HashMap<String, DirectorySnapshot>>,
    changed: broadcast::Sender<DocChanged>,
    limits: sync_protocol::docguard::DocLimits,
}

impl Documents {
    /// Loads every stored document.
    pub async fn load(store: &HubStore) -> anyhow::Result<Documents> {
        let rows = store
            .read(|c| {
                let mut out: BTreeMap<DocKey, StoredDoc> = BTreeMap::new();
                let mut stmt = c.prepare("SELECT park, doc_id, snapshot FROM documents")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                for row in rows {
                    let (park, doc, snap): (String, String, Vec<u8>) = row?;
                    out.insert((park, doc), (snap, Vec::new()));
                }
                let mut stmt = c.prepare(
                    "SELECT park, doc_id, data FROM doc_chunks ORDER BY park, doc_id, seq",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                for row in rows {
                    let (park, doc, data): (String, String, Vec<u8>) = row?;
                    out.entry((park, doc)).or_default().1.push(data);
                }
                Ok(out)
            })
            .await?;
        let mut replicas = BTreeMap::new();
        for (key, (snapshot, incremental)) in rows {
            let mut doc = if snapshot.is_empty() {
                automerge::Automerge::new()
            } else {
                match automerge::Automerge::load(&snapshot) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(park = %key.0, doc = %key.1, error = %e, "A stored document does not load; starting it empty.");
                        automerge::Automerge::new()
                    }
                }
            };
            for c in &incremental {
                if let Err(e) = doc.load_incremental(c) {
                    tracing::error!(park = %key.0, doc = %key.1, error = %e, "A stored document chunk does not load; skipped.");
                }
            }
            replicas.insert(key, Arc::new(Replica::new(doc, incremental.len() as u64)));
        }
        let (changed, _) = broadcast::channel(1024);
        Ok(Documents {
            replicas: Mutex::new(replicas),
            editors: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
            changed,
            limits: sync_protocol::docguard::DocLimits::FROM_EDGE,
        })
    }

    /// The ids of a park's documents.
    pub fn ids(&self, park: &str) -> Vec<String> {
        lock(&self.replicas)
            .keys()
            .filter(|(p, _)| p == park)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// The current version of a document, for tests and the API.
    pub fn get(&self, park: &str, doc_id: &str) -> Option<Arc<automerge::Automerge>> {
        self.replica(park, doc_id).map(|r| r.snapshot())
    }

    fn replica(&self, park: &str, doc_id: &str) -> Option<Arc<Replica>> {
        lock(&self.replicas)
            .get(&(park.to_string(), doc_id.to_string()))
            .cloned()
    }

    /// The replica of a document an edge may sync, made empty when the park has none yet.
    /// The caller has checked the id, so a park gets at most its directory, its car parks
    /// and one document per enrolled building.
    fn replica_or_new(&self, park: &str, doc_id: &str) -> Arc<Replica> {
        lock(&self.replicas)
            .entry((park.to_string(), doc_id.to_string()))
            .or_insert_with(|| Arc::new(Replica::new(automerge::Automerge::new(), 0)))
            .clone()
    }

    /// Merges a document from a file the operator provides (the park's master data until the
    /// hub edits it itself): the hub's own write, unchecked. Returns whether it changed.
    pub fn import(
        &self,
        store: &HubStore,
        park: &str,
        doc_id: &str,
        bytes: &[u8],
    ) -> anyhow::Result<bool> {
        park_model::ownership::DocumentId::parse(doc_id).map_err(anyhow::Error::msg)?;
        let replica = self.replica_or_new(park, doc_id);
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let mut after = (*before).clone();
        after.load_incremental(bytes)?;
        if after.get_heads() == before.get_heads() {
            return Ok(false);
        }
        self.install(store, park, doc_id, &replica, &before, after, 0);
        Ok(true)
    }

    /// Merges what the database holds of a document (stored by another hub sharing it)
    /// into the replica without storing it again, and tells the connected edges of the
    /// park. Answers whether anything was new here. Blocking: call it off the async workers.
    pub fn merge_stored(
        &self,
        park: &str,
        doc_id: &str,
        parts: &[Vec<u8>],
    ) -> anyhow::Result<bool> {
        let replica = self.replica_or_new(park, doc_id);
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let mut after = (*before).clone();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            after.load_incremental(part)?;
        }
        if after.get_heads() == before.get_heads() {
            return Ok(false);
        }
        let old = std::mem::replace(&mut *lock(&replica.current), Arc::new(after));
        drop(old);
        let _ = self.changed.send(DocChanged {
            park: park.to_string(),
            doc_id: doc_id.to_string(),
            origin: 0,
        });
        Ok(true)
    }

    /// The park's directory read whole as it is now (shared until it changes), for lists;
    /// `None` when the park has no directory. After a change only the changed entities are
    /// read again (the editing copy records what changed since the last read), and callers
    /// that arrive together wait for one read. Blocking: call it off the async workers.
    pub fn directory_snapshot(
        &self,
        park: &str,
    ) -> Option<Result<Arc<park_model::directory::Directory>, park_model::DocError>> {
        let replica = self.replica(park, DIRECTORY)?;
        let cached = |heads: &[automerge::ChangeHash]| {
            lock(&self.snapshots)
                .get(park)
                .filter(|s| s.heads == heads)
                .map(|s| s.directory.clone())
        };
        if let Some(d) = cached(&replica.snapshot().get_heads()) {
            return Some(Ok(d));
        }
        let _writer = lock(&replica.writer);
        // Another caller may have read it while this one waited for the writer.
        let before = replica.snapshot();
        let heads = before.get_heads();
        if let Some(d) = cached(&heads) {
            return Some(Ok(d));
        }
        // Read from the editing copy, which may be newer than `heads`: the next call then
        // sees other heads and reads again, so a list is never older than the document.
        let mut editor = match self.editor(park, &before) {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let previous = lock(&self.snapshots)
            .get(park)
            .filter(|s| s.tracked)
            .map(|s| s.directory.clone());
        let read = match previous {
            Some(previous) => {
                let changes = editor.take_changes();
                let mut d = (*previous).clone();
                editor.refresh(&mut d, &changes).map(|()| d)
            }
            None => {
                let d = editor.snapshot();
                editor.track_changes();
                d
            }
        };
        lock(&self.editors).insert(park.to_string(), editor);
        Some(match read {
            Ok(d) => {
                let directory = Arc::new(d);
                lock(&self.snapshots).insert(
                    park.to_string(),
                    DirectorySnapshot {
                        heads,
                        directory: directory.clone(),
                        tracked: true,
                    },
                );
                Ok(directory)
            }
            Err(e) => {
                lock(&self.snapshots).remove(park);
                Err(e)
            }
        })
    }

    /// The park's directory as it is now, for reading (the hub's editing copy, brought up
    /// to date); `None` when the park has no directory.
    pub fn read_directory<T>(
        &self,
        park: &str,
        read: impl FnOnce(&park_model::ParkDirectory) -> T,
    ) -> Option<T> {
        let replica = self.replica(park, DIRECTORY)?;
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let editor = self.editor(park, &before).ok()?;
        let out = read(&editor);
        lock(&self.editors).insert(park.to_string(), editor);
        Some(out)
    }

    /// The hub's own edit of a park's directory (its master data): made on a copy of the
    /// editing copy, committed as one change, swapped in, queued for the store and sent to
    /// the park's edges. An edit that fails changes nothing. The caller waits for the store
    /// ([`HubStore::flush`]) before it reports the edit done. Blocking: call it off the
    /// async workers.
    pub fn edit_directory<T, E: From<park_model::DocError>>(
        &self,
        store: &HubStore,
        park: &str,
        message: &str,
        edit: impl FnOnce(&mut park_model::ParkDirectory) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let replica = self.replica(park, DIRECTORY)?;
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let mut editor = match self.editor(park, &before) {
            Ok(e) => e,
            Err(e) => return Some(Err(e.into())),
        };
        // Whatever the copy holds beyond the replica goes with the edit (a schema migration
        // made when the copy was loaded, which later changes depend on).
        let heads = before.get_heads();
        let mut trial = editor.duplicate();
        let out = match edit(&mut trial) {
            Ok(out) => out,
            Err(e) => {
                lock(&self.editors).insert(park.to_string(), editor);
                return Some(Err(e));
            }
        };
        trial.commit(message, now_micros());
        let chunk = trial.save_after(&heads);
        let mut after = (*before).clone();
        if let Err(e) = after.load_incremental(&chunk) {
            lock(&self.editors).insert(park.to_string(), editor);
            return Some(Err(park_model::DocError::from(e).into()));
        }
        editor = trial;
        lock(&self.editors).insert(park.to_string(), editor);
        self.install(store, park, DIRECTORY, &replica, &before, after, 0);
        Some(Ok(out))
    }

    /// One of a park's other documents (its car parks) as it is now, read from the replica
    /// (they are small: no editing copy is kept); `None` when the park has none.
    pub fn read_document<S: park_model::document::Schema, T>(
        &self,
        park: &str,
        doc_id: &str,
        read: impl FnOnce(&park_model::document::Document<S>) -> T,
    ) -> Option<Result<T, park_model::DocError>> {
        let current = self.replica(park, doc_id)?.snapshot();
        Some(park_model::document::Document::<S>::load(&current.save()).map(|d| read(&d)))
    }

    /// The hub's own edit of one of a park's other documents, as [`Self::edit_directory`]
    /// makes one of the directory: one change, swapped in, queued for the store and sent to
    /// the park's edges; an edit that fails changes nothing. Blocking.
    pub fn edit_document<S: park_model::document::Schema, T, E: From<park_model::DocError>>(
        &self,
        store: &HubStore,
        park: &str,
        doc_id: &str,
        message: &str,
        edit: impl FnOnce(&mut park_model::document::Document<S>) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let replica = self.replica(park, doc_id)?;
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let result = (|| {
            let mut doc = park_model::document::Document::<S>::load(&before.save())?;
            let out = edit(&mut doc)?;
            doc.commit(message, now_micros());
            let mut after = (*before).clone();
            after
                .load_incremental(&doc.save_after(&before.get_heads()))
                .map_err(park_model::DocError::from)?;
            Ok::<_, E>((out, after))
        })();
        Some(result.map(|(out, after)| {
            self.install(store, park, doc_id, &replica, &before, after, 0);
            out
        }))
    }

    /// The park's editing copy, taken out of the cache and brought up to `current`.
    fn editor(
        &self,
        park: &str,
        current: &automerge::Automerge,
    ) -> Result<park_model::ParkDirectory, park_model::DocError> {
        let cached = lock(&self.editors).remove(park);
        match cached {
            Some(mut e) => {
                let heads = e.heads();
                e.load_incremental(&current.save_after(&heads))?;
                Ok(e)
            }
            None => {
                if let Some(s) = lock(&self.snapshots).get_mut(park) {
                    s.tracked = false;
                }
                park_model::ParkDirectory::load(&current.save())
            }
        }
    }

    /// Swaps in a new version and stores what it added.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &self,
        store: &HubStore,
        park: &str,
        doc_id: &str,
        replica: &Replica,
        before: &automerge::Automerge,
        after: automerge::Automerge,
        origin: u64,
    ) {
        let chunk = after.save_after(&before.get_heads());
        let n = replica.chunks.fetch_add(1, Relaxed) + 1;
        let snapshot = (n >= COMPACT_AFTER_CHUNKS).then(|| {
            replica.chunks.store(0, Relaxed);
            after.save()
        });
        let old = std::mem::replace(&mut *lock(&replica.current), Arc::new(after));
        drop(old);
        let (p, d) = (park.to_string(), doc_id.to_string());
        store.write_nowait(Box::new(move |c| {
            let shared = c.dialect() == park_db::Dialect::Postgres;
            if shared {
                // Hubs sharing the database write a document's chunks one at a time.
                c.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(?1))",
                    [format!("document {p}/{d}")],
                )?;
            }
            match &snapshot {
                Some(snapshot) if shared => {
                    // Another hub may have stored changes this one has not merged yet: the
                    // new snapshot takes in what is stored before replacing it, and only
                    // the chunks read here are deleted.
                    let stored = stored_parts(c, &p, &d)?;
                    let mut doc = automerge::Automerge::load(snapshot)
                        .map_err(|e| park_db::Error::Conversion(e.to_string()))?;
                    for part in stored.iter().filter(|b| !b.1.is_empty()) {
                        doc.load_incremental(&part.1)
                            .map_err(|e| park_db::Error::Conversion(e.to_string()))?;
                    }
                    let through = stored.iter().map(|b| b.0).max().unwrap_or(0);
                    c.execute(
                        "INSERT INTO documents (park, doc_id, snapshot, updated) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (park, doc_id) DO UPDATE SET snapshot = excluded.snapshot, updated = excluded.updated",
                        params![p, d, doc.save(), now_micros()],
                    )?;
                    c.execute(
                        "DELETE FROM doc_chunks WHERE park = ?1 AND doc_id = ?2 AND seq <= ?3",
                        params![p, d, through],
                    )?;
                }
                Some(snapshot) => {
                    c.execute(
                        "INSERT INTO documents (park, doc_id, snapshot, updated) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (park, doc_id) DO UPDATE SET snapshot = excluded.snapshot, updated = excluded.updated",
                        params![p, d, snapshot, now_micros()],
                    )?;
                    c.execute("DELETE FROM doc_chunks WHERE park = ?1 AND doc_id = ?2", params![p, d])?;
                }
                None => {
                    c.execute(
                        "INSERT INTO documents (park, doc_id, snapshot, updated) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                        params![p, d, Vec::<u8>::new(), now_micros()],
                    )?;
                    c.execute(
                        "INSERT INTO doc_chunks (park, doc_id, seq, data)
                         VALUES (?1, ?2, (SELECT coalesce(max(seq), 0) + 1 FROM doc_chunks WHERE park = ?1 AND doc_id = ?2), ?3)",
                        params![p, d, &chunk],
                    )?;
                }
            }
            c.execute(
                "INSERT INTO doc_versions (park, doc_id, version) VALUES (?1, ?2, 1)
                 ON CONFLICT (park, doc_id) DO UPDATE SET version = doc_versions.version + 1",
                params![p, d],
            )?;
            Ok(())
        }));
        let _ = self.changed.send(DocChanged {
            park: park.to_string(),
            doc_id: doc_id.to_string(),
            origin,
        });
    }

    /// Applies an edge's sync message, if its building may make what it changes, and
    /// returns the answer to send back, if any. Blocking: call it off the async workers.
    ///
    /// The message is bounded first (`docguard`), then applied to a copy of the replica,
    /// whose changes are checked against what the building may write
    /// (`park_model::ownership`); only then is the copy swapped in. A refused message
    /// leaves the replica and the sync state as they were.
    pub fn receive(
        &self,
        store: &HubStore,
        building: &BuildingKey,
        origin: u64,
        state: &mut automerge::sync::State,
        message: &DocumentMessage,
    ) -> Result<Option<Vec<u8>>, DocRefusal> {
        use park_model::ownership::{DocumentId, EdgeScope, check_edge_change};
        let id = DocumentId::parse(&message.doc_id).map_err(DocRefusal::Forbidden)?;
        if !id.readable_by(&building.building) {
            return Err(DocRefusal::Forbidden(format!(
                "{id} belongs to another building"
            )));
        }
        sync_protocol::docguard::check_sync_message(&message.message, &self.limits)
            .map_err(|e| DocRefusal::Malformed(e.to_string()))?;
        let msg = automerge::sync::Message::decode(&message.message).map_err(|e| {
            DocRefusal::Malformed(format!("undecodable automerge sync message: {e}"))
        })?;
        let replica = self.replica_or_new(&building.park, &message.doc_id);
        if msg.changes.is_empty() {
            // Only what the edge has and needs: the document does not change.
            let mut current = lock(&replica.current);
            let result = match Arc::get_mut(&mut current) {
                Some(doc) => {
                    let r =
                        sync_protocol::docguard::contained(|| doc.receive_sync_message(state, msg));
                    drop(current);
                    r
                }
                None => {
                    // A reader holds this version: the state is worked out on a copy, made
                    // with no lock held.
                    let snapshot = current.clone();
                    drop(current);
                    let mut copy = (*snapshot).clone();
                    sync_protocol::docguard::contained(|| copy.receive_sync_message(state, msg))
                }
            };
            match result {
                Ok(r) => r.map_err(|e| {
                    DocRefusal::Malformed(format!("automerge refused the sync message: {e}"))
                })?,
                Err(e) => {
                    // A message without changes changes no op, so the replica is intact;
                    // the sync state starts over.
                    *state = automerge::sync::State::new();
                    return Err(DocRefusal::Malformed(e.to_string()));
                }
            }
            let doc = replica.snapshot();
            return Ok(doc.generate_sync_message(state).map(|m| m.encode()));
        }
        let _writer = lock(&replica.writer);
        let before = replica.snapshot();
        let mut after = (*before).clone();
        let mut next_state = state.clone();
        let mut log = automerge::PatchLog::active();
        // The copy is dropped if automerge fails on the message, even by a panic.
        sync_protocol::docguard::contained(|| {
            after.receive_sync_message_log_patches(&mut next_state, msg, &mut log)
        })
        .map_err(|e| DocRefusal::Malformed(e.to_string()))?
        .map_err(|e| DocRefusal::Malformed(format!("automerge refused the sync message: {e}")))?;
        let missing = automerge::ReadDoc::get_missing_deps(&after, &[]);
        if !missing.is_empty() {
            // Changes whose dependencies the edge did not send (a false positive of the
            // hub's Bloom filter, or an edge that means harm). They are neither kept nor
            // checked: the sync starts over for this document, with a new filter, and the
            // edge sends again what the hub lacks.
            tracing::debug!(
                missing = missing.len(),
                "Changes with missing dependencies; the document's sync starts over."
            );
            *state = automerge::sync::State::new();
            let doc = replica.snapshot();
            return Ok(doc.generate_sync_message(state).map(|m| m.encode()));
        }
        if after.get_heads() != before.get_heads() {
            let building_doc = if matches!(id, DocumentId::Directory) {
                self.get(
                    &building.park,
                    &DocumentId::building(&building.building).to_string(),
                )
            } else {
                None
            };
            let scope = EdgeScope {
                park: &building.park,
                building: &building.building,
                building_doc: building_doc.as_deref(),
            };
            let checked = sync_protocol::docguard::contained(|| {
                let patches = after.make_patches(&mut log);
                check_edge_change(&id, &scope, &before, &after, patches)
            })
            .map_err(|e| DocRefusal::Malformed(e.to_string()))?;
            checked.map_err(|r| DocRefusal::Forbidden(r.to_string()))?;
            self.install(
                store,
                &building.park,
                &message.doc_id,
                &replica,
                &before,
                after,
                origin,
            );
        }
        *state = next_state;
        let doc = replica.snapshot();
        Ok(doc.generate_sync_message(state).map(|m| m.encode()))
    }

    /// The next sync message for a peer, if it lacks anything.
    fn generate(
        &self,
        park: &str,
        doc_id: &str,
        state: &mut automerge::sync::State,
    ) -> Option<Vec<u8>> {
        let doc = self.get(park, doc_id)?;
        doc.generate_sync_message(state).map(|m| m.encode())
    }

    /// The ids of a park's documents that `building` is sent.
    fn readable(&self, park: &str, building: &str) -> Vec<String> {
        self.ids(park)
            .into_iter()
            .filter(|d| readable_by(d, building))
            .collect()
    }
}

fn readable_by(doc_id: &str, building: &str) -> bool {
    park_model::ownership::DocumentId::parse(doc_id).is_ok_and(|d| d.readable_by(building))
}

/// Everything a connection task needs.
pub struct SyncContext {
    /// The accounts each edge gets a copy of (those with a role in its building).
    pub auth: accounts::Auth,
    /// Issues renewed edge certificates.
    pub ca: Arc<sync_protocol::transport::OperatorCa>,
    pub edge_cert_days: u32,
    /// An edge whose certificate ends sooner than this is asked to renew it.
    pub renew_before: std::time::Duration,
    pub store: HubStore,
    pub registry: Arc<Registry>,
    pub documents: Arc<Documents>,
    pub metrics: Arc<Metrics>,
    pub session: SessionConfig,
    pub epoch: Instant,
    /// This hub process among those sharing the database: the holder of its buildings'
    /// leases.
    pub hub_id: String,
}

impl SyncContext {
    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }
}

/// Sends the edge the accounts with a role in its building (a config push whose version
/// is the accounts' generation, so the edge applies only newer ones).
fn push_accounts(cx: &SyncContext, key: &BuildingKey, session: &mut HubSession) {
    let push = cx.auth.accounts_for(&park_model::identity::Scope::building(
        &key.park,
        &key.building,
    ));
    let version = push.generation;
    let body = serde_json::json!({ "accounts": push })
        .to_string()
        .into_bytes();
    match session.push_config(sync_protocol::ConfigPush { version, body }) {
        Ok(()) => tracing::debug!(generation = version, "Pushed the building's accounts."),
        Err(e) => {
            tracing::error!(error = %e, "The building's accounts do not fit a config push; the edge keeps its copy.")
        }
    }
}

/// Runs one edge connection to its end.
pub async fn run_connection(
    cx: Arc<SyncContext>,
    identity: PeerIdentity,
    mut channel: FrameChannel,
) {
    let key = BuildingKey::new(&identity.park, &identity.building);
    // One hub at a time serves a building: the lease is taken before anything else, and
    // the building's cursors are read again (another hub may have advanced them).
    let lease_name = crate::store::building_lease(&key);
    match cx.store.take_lease(lease_name.clone(), &cx.hub_id).await {
        Ok(true) => cx.store.reload_building(&key).await,
        Ok(false) => {
            Metrics::add(&cx.metrics.connections_elsewhere_total, 1);
            tracing::info!(building = %key, "The building is connected to another hub; refused until that hub's lease ends.");
            channel.close(CloseCode::SessionEnded, "connected to another hub");
            return;
        }
        Err(e) => {
            tracing::warn!(building = %key, error = %format!("{e:#}"), "Cannot take the building's lease; refused.");
            channel.close(CloseCode::SessionEnded, "the hub cannot reach its database");
            return;
        }
    }
    let mut lease = tokio::time::interval(crate::store::LEASE_RENEWAL);
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    lease.tick().await;
    // Connections count from 1: origin 0 is the hub's own writes, which every edge gets.
    let id = cx.registry.next_id.fetch_add(1, Relaxed) + 1;
    let remote = channel.remote_address().to_string();
    let live = Arc::new(LiveEdge {
        id,
        serial: identity.serial.clone(),
        remote: remote.clone(),
        connected_since: now_micros(),
        last_seen: AtomicI64::new(now_micros()),
        edge_id: Mutex::new(None),
        closer: channel.closer(),
    });
    if let Some(old) = lock(&cx.registry.live).insert(key.clone(), live.clone()) {
        Metrics::add(&cx.metrics.connections_replaced_total, 1);
        tracing::info!(old = %old.remote, "A newer connection of this building replaces the older one.");
        old.closer.close(
            CloseCode::Replaced,
            "replaced by a newer connection of the same building",
        );
    }
    Metrics::add(&cx.metrics.connections_total, 1);
    cx.metrics
        .edges_connected
        .store(cx.registry.len() as u64, Relaxed);
    set_state(&cx.store, &key, "handshaking", None, Some(&remote), None);

    let mut session = HubSession::for_building(cx.session.clone(), &key.park, &key.building);
    let mut sink = cx.store.sink(key.clone());
    let mut commits = cx.store.subscribe_commits();
    let mut doc_changes = cx.documents.changed.subscribe();
    let mut accounts_changed = cx.auth.subscribe_generation();
    let mut sync_states: HashMap<String, automerge::sync::State> = HashMap::new();
    let mut refusals = Refusals::default();
    let mut renewal: Option<RenewalStep> = None;
    session.handle_connected(cx.now());
    let mut end: Option<String> = None;
    let mut persisted_seen = Instant::now();

    while end.is_none() {
        // Drain outputs: frames first (in order), then events.
        while let Some(frame) = session.poll_transmit(cx.now()) {
            Metrics::add(&cx.metrics.frames_sent_total, 1);
            if let Err(e) = channel.send(&frame).await {
                session.handle_disconnected(cx.now());
                end.get_or_insert(e.to_string());
                break;
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                HubEvent::Connected {
                    identity: hello,
                    edge_cursors,
                    durable,
                } => {
                    tracing::info!(edge = %hello.edge_id, ?edge_cursors, ?durable, "Edge connected.");
                    *lock(&live.edge_id) = Some(hello.edge_id.clone());
                    set_state(
                        &cx.store,
                        &key,
                        "connected",
                        Some(&hello.edge_id),
                        Some(&remote),
                        None,
                    );
                    push_accounts(&cx, &key, &mut session);
                    revoke_replaced(&cx, &key, &identity.serial);
                    let left = identity.not_after.saturating_mul(1_000_000) - now_micros();
                    if left < cx.renew_before.as_micros() as i64 {
                        let id = now_micros() as u64;
                        renewal = Some(RenewalStep::Asked(id));
                        tracing::info!(
                            days_left = left / 86_400_000_000,
                            "Asking the edge to renew its certificate."
                        );
                        let _ = session.send_command(sync_protocol::Command {
                            id,
                            body: serde_json::json!({"renewCertificate": {}})
                                .to_string()
                                .into_bytes(),
                        });
                    }
                    // Offer the edge every document of its park it may read; automerge
                    // works out what each side lacks.
                    for doc_id in cx.documents.readable(&key.park, &key.building) {
                        let state = sync_states.entry(doc_id.clone()).or_default();
                        if let Some(m) = cx.documents.generate(&key.park, &doc_id, state) {
                            let _ = session.send_document(DocumentMessage { doc_id, message: m });
                        }
                    }
                }
                HubEvent::EdgeAhead {
                    stream,
                    edge_cursor,
                    hub_cursor,
                } => {
                    tracing::warn!(
                        ?stream,
                        edge_cursor,
                        hub_cursor,
                        "The edge believes the hub holds more than it does; it resends what it still has."
                    );
                }
                HubEvent::Skipped {
                    stream,
                    from,
                    through,
                } => {
                    tracing::warn!(
                        ?stream,
                        from,
                        through,
                        "The edge reports records gone before upload."
                    );
                }
                HubEvent::Health(h) => record_health(&cx.store, &key, &h.body),
                HubEvent::CommandResult(r) => match renewal {
                    Some(RenewalStep::Asked(id)) if r.id == id => {
                        renewal = None;
                        match renew(&cx, &key, &identity.serial, &r).await {
                            Ok((pem, serial)) => {
                                let id = now_micros() as u64;
                                renewal = Some(RenewalStep::Sent(id, serial));
                                let _ = session.send_command(sync_protocol::Command {
                                    id,
                                    body: serde_json::json!({"installCertificate": {"certificate": pem}}).to_string().into_bytes(),
                                });
                            }
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "The edge's certificate was not renewed.")
                            }
                        }
                    }
                    Some(RenewalStep::Sent(id, ref serial)) if r.id == id => {
                        if r.ok {
                            Metrics::add(&cx.metrics.certificates_renewed_total, 1);
                            tracing::info!(%serial, "The edge installed its renewed certificate.");
                        } else {
                            tracing::warn!(%serial, answer = %String::from_utf8_lossy(&r.body), "The edge refused its renewed certificate.");
                        }
                        renewal = None;
                    }
                    _ => tracing::info!(id = r.id, ok = r.ok, "Command result."),
                },
                HubEvent::Document(d) => {
                    Metrics::add(&cx.metrics.documents_messages_total, 1);
                    if !readable_by(&d.doc_id, &key.building) {
                        // Not even a sync state is kept for a document the building may not
                        // have: an edge cannot make the hub hold more by naming more.
                        refused_document(
                            &cx,
                            &key,
                            &remote,
                            &mut refusals,
                            &d.doc_id,
                            DocRefusal::Forbidden(
                                park_model::ownership::DocumentId::parse(&d.doc_id)
                                    .map(|id| format!("{id} belongs to another building"))
                                    .unwrap_or_else(|e| e),
                            ),
                        );
                        continue;
                    }
                    if refusals.blocked(&d.doc_id) {
                        // Refused a moment ago: not worked on again until the pause is over.
                        Metrics::add(&cx.metrics.documents_refused_total, 1);
                        continue;
                    }
                    let mut state = sync_states.remove(&d.doc_id).unwrap_or_default();
                    let documents = cx.documents.clone();
                    let store = cx.store.clone();
                    let building = key.clone();
                    let doc_id = d.doc_id.clone();
                    let outcome = tokio::task::spawn_blocking(move || {
                        let r = documents.receive(&store, &building, id, &mut state, &d);
                        (r, state)
                    })
                    .await;
                    let (result, state) = match outcome {
                        Ok(done) => done,
                        Err(e) => {
                            tracing::error!(doc = %doc_id, error = %e, "Applying a document message failed.");
                            (
                                Err(DocRefusal::Malformed("the hub could not apply it".into())),
                                automerge::sync::State::new(),
                            )
                        }
                    };
                    sync_states.insert(doc_id.clone(), state);
                    match result {
                        Ok(Some(answer)) => {
                            let _ = session.send_document(DocumentMessage {
                                doc_id,
                                message: answer,
                            });
                        }
                        Ok(None) => {}
                        Err(refusal) => {
                            if matches!(refusal, DocRefusal::Forbidden(_)) {
                                // The edge sends the same changes again with every message
                                // of this document; each would cost a copy of it. The
                                // document pauses for this connection, doubling each time,
                                // and starts over with a fresh sync state.
                                refusals.block(&doc_id);
                                sync_states.remove(&doc_id);
                            }
                            refused_document(&cx, &key, &remote, &mut refusals, &doc_id, refusal)
                        }
                    }
                }
                HubEvent::ConnectionLost { reason } => {
                    if matches!(
                        reason,
                        LostReason::ProtocolViolation(_) | LostReason::BadFrame(_)
                    ) {
                        Metrics::add(&cx.metrics.protocol_errors_total, 1);
                    }
                    if matches!(reason, LostReason::Refused(_)) {
                        Metrics::add(&cx.metrics.connections_refused_total, 1);
                    }
                    end.get_or_insert(reason.to_string());
                }
            }
        }
        if end.is_some() {
            // Let a close frame the session queued go out before the connection closes.
            while let Some(frame) = session.poll_transmit(cx.now()) {
                let _ = channel.send(&frame).await;
            }
            break;
        }
        let deadline = session.poll_timeout();
        let sleep_until = deadline.map(|t| {
            let wait = t.saturating_duration_since(cx.now());
            tokio::time::Instant::now() + wait
        });
        tokio::select! {
            frame = channel.recv() => match frame {
                Ok(Some(frame)) => {
                    Metrics::add(&cx.metrics.frames_received_total, 1);
                    Metrics::add(&cx.metrics.bytes_received_total, frame.len() as u64);
                    live.last_seen.store(now_micros(), Relaxed);
                    session.handle_frame(cx.now(), &frame, &mut sink);
                }
                Ok(None) => {
                    session.handle_disconnected(cx.now());
                    end.get_or_insert("the edge finished its stream".into());
                }
                Err(e) => {
                    session.handle_disconnected(cx.now());
                    end.get_or_insert(describe_end(&e));
                }
            },
            _ = commits.changed() => session.handle_durable(cx.now(), &sink),
            _ = lease.tick() => match cx.store.take_lease(lease_name.clone(), &cx.hub_id).await {
                Ok(true) => {}
                Ok(false) => {
                    session.handle_disconnected(cx.now());
                    end.get_or_insert("another hub holds this building now".into());
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "Cannot renew the building's lease; trying again."),
            },
            changed = accounts_changed.changed() => {
                if changed.is_ok() && session.state() == sync_protocol::ConnectionState::Connected {
                    push_accounts(&cx, &key, &mut session);
                }
            }
            _ = sleep_or_never(sleep_until) => session.handle_timeout(cx.now()),
            change = doc_changes.recv() => match change {
                Ok(c) if c.park == key.park && c.origin != id && readable_by(&c.doc_id, &key.building) && session.state() == sync_protocol::ConnectionState::Connected => {
                    let state = sync_states.entry(c.doc_id.clone()).or_default();
                    if let Some(m) = cx.documents.generate(&key.park, &c.doc_id, state) {
                        let _ = session.send_document(DocumentMessage { doc_id: c.doc_id, message: m });
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed notices: offer every document of the park again.
                    for doc_id in cx.documents.readable(&key.park, &key.building) {
                        let state = sync_states.entry(doc_id.clone()).or_default();
                        if let Some(m) = cx.documents.generate(&key.park, &doc_id, state) {
                            let _ = session.send_document(DocumentMessage { doc_id, message: m });
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
        }
        if persisted_seen.elapsed() >= std::time::Duration::from_secs(5) {
            persisted_seen = Instant::now();
            let seen = live.last_seen.load(Relaxed);
            let k = key.clone();
            cx.store.write_nowait(Box::new(move |c| {
                let bid = building_id(c, &k.park, &k.building)?;
                c.execute(
                    "UPDATE edges SET last_seen = ?2 WHERE building_id = ?1",
                    params![bid, seen],
                )?;
                Ok(())
            }));
        }
    }

    let reason = end.unwrap_or_default();
    channel.close(CloseCode::SessionEnded, &reason);
    {
        let mut reg = lock(&cx.registry.live);
        if reg.get(&key).is_some_and(|l| l.id == id) {
            reg.remove(&key);
        }
        cx.metrics.edges_connected.store(reg.len() as u64, Relaxed);
    }
    let still_live = cx.registry.get(&key).is_some();
    if !still_live {
        set_state(&cx.store, &key, "disconnected", None, None, Some(&reason));
        if let Err(e) = cx.store.release_lease(lease_name, &cx.hub_id).await {
            tracing::warn!(error = %format!("{e:#}"), "Cannot give up the building's lease; it ends on its own.");
        }
    }
    let k = key.clone();
    let seen = live.last_seen.load(Relaxed);
    cx.store.write_nowait(Box::new(move |c| {
        let bid = building_id(c, &k.park, &k.building)?;
        c.execute(
            "UPDATE edges SET last_seen = CASE WHEN last_seen > ?2 THEN last_seen ELSE ?2 END WHERE building_id = ?1",
            params![bid, seen],
        )?;
        Ok(())
    }));
    tracing::info!(%reason, durable_events = cx.store.durable(&key, UploadStream::Events), "Edge disconnected.");
}

/// Where a certificate renewal over this connection stands.
enum RenewalStep {
    /// The edge was asked for a certificate request (command id).
    Asked(u64),
    /// The renewed certificate was sent (command id, its serial).
    Sent(u64, String),
}

/// Issues a renewed certificate for the request in the edge's answer, records it, and
/// returns it (PEM) with its serial. The old certificate stays valid until the edge first
/// connects with the new one ([`revoke_replaced`]).
async fn renew(
    cx: &SyncContext,
    key: &BuildingKey,
    old_serial: &str,
    answer: &sync_protocol::CommandResult,
) -> anyhow::Result<(String, String)> {
    use data_encoding::BASE64;
    anyhow::ensure!(
        answer.ok,
        "the edge could not make a key: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
    let der = BASE64.decode(
        body["certificateRequest"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the answer has no certificateRequest"))?
            .as_bytes(),
    )?;
    let csr = sync_protocol::transport::CertificateRequest::from_der(&der)?;
    let issued = cx.ca.issue_edge_cert(
        &csr,
        &key.park,
        &key.building,
        sync_protocol::transport::Validity::days_from_now(cx.edge_cert_days),
    )?;
    let serial = issued.identity.serial.clone();
    let not_after = issued.identity.not_after.saturating_mul(1_000_000);
    let pem = issued.pem();
    let (k, s, old) = (key.clone(), serial.clone(), old_serial.to_string());
    cx.store
        .admin(move |tx| {
            let bid = building_id(tx, &k.park, &k.building)?;
            let now = now_micros();
            tx.execute(
                "INSERT INTO certificates (serial, building_id, issued_at, not_after) VALUES (?1, ?2, ?3, ?4)",
                params![s, bid, now, not_after],
            )?;
            tx.execute(
                "UPDATE edges SET serial = ?2, cert_not_after = ?3 WHERE building_id = ?1",
                params![bid, s, not_after],
            )?;
            accounts::Audit::new(
                &accounts::audit::Actor::system(format!("edge:{}/{}", k.park, k.building)),
                "certificate.renewed",
                &format!("{}/{}", k.park, k.building),
                serde_json::json!({"serial": s, "replaces": old, "notAfter": not_after}),
            )
            .unmirrored()
            .append(tx)?;
            Ok(())
        })
        .await?;
    Ok((pem, serial))
}

/// The building's certificates issued before the one this connection uses are revoked:
/// once an edge connects with a renewed certificate, the one it replaced is no longer
/// needed by anyone.
fn revoke_replaced(cx: &SyncContext, key: &BuildingKey, serial: &str) {
    let (k, s) = (key.clone(), serial.to_string());
    cx.store.write_nowait(Box::new(move |c| {
        let bid = building_id(c, &k.park, &k.building)?;
        let revoked = c.execute(
            "INSERT INTO revocations (serial, revoked_at, reason)
             SELECT serial, ?3, 'replaced by a renewed certificate' FROM certificates
             WHERE building_id = ?1 AND serial != ?2
               AND issued_at < (SELECT issued_at FROM certificates WHERE serial = ?2)
             ON CONFLICT DO NOTHING",
            params![bid, s, now_micros()],
        )?;
        if revoked > 0 {
            accounts::Audit::new(
                &accounts::audit::Actor::system("hub"),
                "certificate.revoked",
                &format!("{}/{}", k.park, k.building),
                serde_json::json!({"reason": "replaced by a renewed certificate", "certificates": revoked, "inUse": s}),
            )
            .unmirrored()
            .append(c)?;
        }
        Ok(())
    }));
}

/// What a connection refused of its edge's document messages, for the audit.
#[derive(Default)]
struct Refusals {
    /// By document: when last audited, and how many were refused since.
    audited: HashMap<String, (Instant, u64)>,
    /// By document: paused until, and the next pause.
    paused: HashMap<String, (Instant, std::time::Duration)>,
}

impl Refusals {
    const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
    const LONGEST_PAUSE: std::time::Duration = std::time::Duration::from_secs(300);

    fn blocked(&self, doc_id: &str) -> bool {
        self.paused
            .get(doc_id)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn block(&mut self, doc_id: &str) {
        let pause = self
            .paused
            .get(doc_id)
            .map_or(Self::FIRST_PAUSE, |(_, next)| *next);
        self.paused.insert(
            doc_id.to_string(),
            (Instant::now() + pause, (pause * 2).min(Self::LONGEST_PAUSE)),
        );
    }
}

/// A refused document message is counted and logged; a forbidden one is also audited, at
/// most once a minute per connection and document (with the number refused meanwhile), so
/// that an edge cannot grow the audit log without bound.
fn refused_document(
    cx: &SyncContext,
    key: &BuildingKey,
    remote: &str,
    refusals: &mut Refusals,
    doc_id: &str,
    refusal: DocRefusal,
) {
    let shown: String = doc_id.chars().take(80).collect();
    match &refusal {
        DocRefusal::Malformed(reason) => {
            Metrics::add(&cx.metrics.documents_malformed_total, 1);
            tracing::warn!(doc = %shown, %reason, "Refused a malformed document message.");
            return;
        }
        DocRefusal::Forbidden(reason) => {
            Metrics::add(&cx.metrics.documents_refused_total, 1);
            tracing::warn!(doc = %shown, %reason, "Refused a document change this building may not make.");
        }
    }
    // Audited under one entry for every id that is not a document of the park.
    let slot = if park_model::ownership::DocumentId::parse(doc_id).is_ok() {
        shown.clone()
    } else {
        "(not a document)".to_string()
    };
    let entry = refusals.audited.entry(slot).or_insert((Instant::now(), 0));
    entry.1 += 1;
    let first = entry.1 == 1;
    if !first && entry.0.elapsed() < std::time::Duration::from_secs(60) {
        return;
    }
    let count = entry.1;
    *entry = (Instant::now(), 0);
    let actor = accounts::audit::Actor {
        user_id: String::new(),
        name: format!("edge:{}/{}", key.park, key.building),
        client: remote.to_string(),
    };
    let audit = accounts::Audit::new(
        &actor,
        "document.refused",
        &format!("{}/{shown}", key.park),
        serde_json::json!({ "reason": refusal.to_string(), "refused": count }),
    )
    .unmirrored()
    .with_outcome("refused");
    cx.store.write_nowait(Box::new(move |c| audit.append(c)));
}

fn describe_end(e: &TransportError) -> String {
    e.to_string()
}

async fn sleep_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn set_state(
    store: &HubStore,
    key: &BuildingKey,
    state: &'static str,
    edge_id: Option<&str>,
    remote: Option<&str>,
    error: Option<&str>,
) {
    let k = key.clone();
    let edge_id = edge_id.map(str::to_string);
    let remote = remote.map(str::to_string);
    let error = error.map(str::to_string);
    let now = now_micros();
    store.write_nowait(Box::new(move |c| {
        let bid = building_id(c, &k.park, &k.building)?;
        c.execute(
            "UPDATE edges SET state = ?2, state_since = ?3, last_seen = ?3,
                 edge_id = coalesce(?4, edge_id), remote = coalesce(?5, remote), last_error = coalesce(?6, last_error)
             WHERE building_id = ?1",
            params![bid, state, now, edge_id, remote, error],
        )?;
        Ok(())
    }));
}

/// Health reports are opaque to the protocol. The hub reads a JSON object and takes
/// `backlog.events`, `backlog.rollups` and `backlog.raw` from it when present; it keeps the
/// whole report for the API either way.
fn record_health(store: &HubStore, key: &BuildingKey, body: &[u8]) {
    let text = String::from_utf8_lossy(body).into_owned();
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let backlog = |s: &str| {
        json.as_ref()
            .and_then(|j| j.pointer(&format!("/backlog/{s}")))
            .and_then(|v| v.as_i64())
    };
    let (events, rollups, raw) = (backlog("events"), backlog("rollups"), backlog("raw"));
    let k = key.clone();
    let now = now_micros();
    store.write_nowait(Box::new(move |c| {
        let bid = building_id(c, &k.park, &k.building)?;
        c.execute(
            "UPDATE edges SET health = ?2, health_at = ?3, backlog_events = coalesce(?4, backlog_events),
                 backlog_rollups = coalesce(?5, backlog_rollups), backlog_raw = coalesce(?6, backlog_raw)
             WHERE building_id = ?1",
            params![bid, text, now, events, rollups, raw],
        )?;
        Ok(())
    }));
}
