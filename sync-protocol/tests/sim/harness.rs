//! A test harness in the style of quinn's `Pair`: one hub, N edges, a virtual clock and a
//! virtual network with loss, duplication, reordering, partitions and restarts of either
//! side. No sockets, no threads, no sleeps: time jumps to the next thing that happens.
//!
//! The harness plays the callers of the sessions: it implements the outbox and the sink in
//! memory (with the durable part that survives a restart and the volatile part that does
//! not), runs the automerge sync protocol over the document stream, answers commands, and
//! tears connections down and sets them up again as a transport would.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc};
use sync_protocol::session::ConnectionState;
use sync_protocol::{
    Command, CommandResult, ConfigPush, DocumentMessage, EdgeEvent, EdgeIdentity, EdgeOutbox,
    EdgeSession, EventRecord, HubEvent, HubSession, HubSink, Kind, LostReason, Quality, RawBatch,
    RawSample, RawSeries, ReadLimit, Record, RollupBatch, RollupRow, SessionConfig, SinkBusy, Time,
    UploadStream, Value,
};

pub const DOC_IDS: [&str; 2] = ["park-directory", "work-orders"];

/// Short timers so that a property test case covers many heartbeats in little work.
pub fn fast_config() -> SessionConfig {
    SessionConfig {
        heartbeat_interval: Duration::from_millis(1_000),
        idle_timeout: Duration::from_millis(4_000),
        initial_rto: Duration::from_millis(200),
        max_rto: Duration::from_millis(2_000),
        window_frames: 16,
        window_bytes: 64 * 1024,
        read_batch: 8,
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

// ---------------------------------------------------------------------------------------
// The edge's outbox.

/// An outbox record as written by the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Event(EventRecord),
    Rollups(RollupBatch),
    Raw(RawBatch),
    /// Only in the sink: the edge said this record is gone.
    Gap,
}

/// The edge's outbox in memory. Records are durable the moment they are written; the
/// acknowledgement cursor is written through `acknowledged` and made durable by `sync`
/// (as a store's group commit would), so a restart can lose the last acknowledgements.
pub struct MemoryOutbox {
    records: [BTreeMap<u64, Stored>; 3],
    last_seq: [u64; 3],
    persisted_ack: [u64; 3],
    ack: [u64; 3],
    /// Whether acknowledged records are deleted at `sync`.
    pub prune: bool,
    /// Every record ever written, for the final comparison; never pruned.
    pub written: [BTreeMap<u64, Stored>; 3],
    /// Sequence numbers removed by the disk budget before they were acknowledged.
    pub evicted: [BTreeSet<u64>; 3],
    pub reads: u64,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        MemoryOutbox {
            records: Default::default(),
            last_seq: [0; 3],
            persisted_ack: [0; 3],
            ack: [0; 3],
            prune: true,
            written: Default::default(),
            evicted: Default::default(),
            reads: 0,
        }
    }

    pub fn write(&mut self, stream: UploadStream, record: Stored) -> u64 {
        let i = stream as usize;
        self.last_seq[i] += 1;
        let seq = self.last_seq[i];
        self.records[i].insert(seq, record.clone());
        self.written[i].insert(seq, record);
        seq
    }

    pub fn last_seq(&self, stream: UploadStream) -> u64 {
        self.last_seq[stream as usize]
    }

    pub fn needs_sync(&self) -> bool {
        self.ack != self.persisted_ack
    }

    /// Makes the acknowledgement cursors durable and deletes acknowledged records.
    pub fn sync(&mut self) {
        self.persisted_ack = self.ack;
        if self.prune {
            for i in 0..3 {
                let keep = self.records[i].split_off(&(self.persisted_ack[i] + 1));
                self.records[i] = keep;
            }
        }
    }

    /// A restart: acknowledgements not yet synced are lost when `lose_unsynced`.
    pub fn restart(&mut self, lose_unsynced: bool) {
        if lose_unsynced {
            self.ack = self.persisted_ack;
        } else {
            self.sync();
        }
    }

    /// The disk budget removes the `n` oldest raw batches not yet acknowledged.
    pub fn evict_raw(&mut self, n: usize) -> usize {
        let i = UploadStream::Raw as usize;
        let victims: Vec<u64> = self.records[i]
            .range(self.ack[i] + 1..)
            .take(n)
            .map(|(s, _)| *s)
            .collect();
        for s in &victims {
            self.records[i].remove(s);
            self.evicted[i].insert(*s);
        }
        victims.len()
    }

    fn read<T>(
        &mut self,
        stream: UploadStream,
        after: u64,
        limit: ReadLimit,
        pick: impl Fn(&Stored) -> Option<(T, usize)>,
    ) -> Vec<(u64, T)> {
        self.reads += 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        for (seq, record) in self.records[stream as usize].range(after + 1..) {
            if out.len() >= limit.max_records || (!out.is_empty() && bytes >= limit.max_bytes) {
                break;
            }
            if let Some((r, len)) = pick(record) {
                bytes += len;
                out.push((*seq, r));
            }
        }
        out
    }
}

impl EdgeOutbox for MemoryOutbox {
    fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)> {
        self.read(UploadStream::Events, after, limit, |r| match r {
            Stored::Event(e) => Some((e.clone(), 24 + e.body.len())),
            _ => None,
        })
    }

    fn rollups_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RollupBatch)> {
        self.read(UploadStream::Rollups, after, limit, |r| match r {
            Stored::Rollups(b) => Some((b.clone(), b.encode().len())),
            _ => None,
        })
    }

    fn raw_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RawBatch)> {
        self.read(UploadStream::Raw, after, limit, |r| match r {
            Stored::Raw(b) => Some((b.clone(), b.encode().len())),
            _ => None,
        })
    }

    fn last_written(&self, stream: UploadStream) -> u64 {
        self.last_seq[stream as usize]
    }

    fn acknowledged_cursor(&self, stream: UploadStream) -> u64 {
        self.ack[stream as usize]
    }

    fn acknowledged(&mut self, stream: UploadStream, through: u64) {
        let i = stream as usize;
        assert!(through >= self.ack[i], "acknowledgements never go back");
        self.ack[i] = through;
        // The contract: number new records after anything the hub holds.
        self.last_seq[i] = self.last_seq[i].max(through);
    }
}

// ---------------------------------------------------------------------------------------
// The hub's sink.

type Key = (String, UploadStream);

/// The hub's store in memory: records accepted go to a pending queue and become durable
/// at `flush` (the group commit); a restart loses what was pending.
pub struct MemorySink {
    pub stored: HashMap<Key, BTreeMap<u64, Stored>>,
    durable: HashMap<Key, u64>,
    pending: BTreeMap<(Key, u64), Stored>,
    /// `accept` answers busy while this many records are pending.
    pub busy_at: Option<usize>,
    pub accepted: u64,
    pub duplicate_accepts: u64,
}

impl MemorySink {
    pub fn new() -> Self {
        MemorySink {
            stored: HashMap::new(),
            durable: HashMap::new(),
            pending: BTreeMap::new(),
            busy_at: None,
            accepted: 0,
            duplicate_accepts: 0,
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn existing(&self, key: &Key, seq: u64) -> Option<&Stored> {
        self.stored
            .get(key)
            .and_then(|m| m.get(&seq))
            .or_else(|| self.pending.get(&(key.clone(), seq)))
    }

    /// The group commit: everything pending becomes durable.
    pub fn flush(&mut self) {
        for ((key, seq), record) in std::mem::take(&mut self.pending) {
            self.stored.entry(key).or_default().insert(seq, record);
        }
        for (key, records) in &self.stored {
            let d = self.durable.entry(key.clone()).or_insert(0);
            while records.contains_key(&(*d + 1)) {
                *d += 1;
            }
        }
    }

    pub fn restart(&mut self) {
        self.pending.clear();
    }

    /// Simulates a store restored from an older backup: durable records after `keep` are gone.
    pub fn lose_after(&mut self, edge: &str, stream: UploadStream, keep: u64) {
        let key = (edge.to_string(), stream);
        if let Some(m) = self.stored.get_mut(&key) {
            m.split_off(&(keep + 1));
        }
        if let Some(d) = self.durable.get_mut(&key) {
            *d = (*d).min(keep);
        }
        self.pending.retain(|(k, s), _| k != &key || *s <= keep);
    }

    pub fn durable(&self, edge: &str, stream: UploadStream) -> u64 {
        self.durable
            .get(&(edge.to_string(), stream))
            .copied()
            .unwrap_or(0)
    }
}

impl HubSink for MemorySink {
    fn accept(
        &mut self,
        edge: &EdgeIdentity,
        stream: UploadStream,
        seq: u64,
        record: Record<'_>,
    ) -> Result<(), SinkBusy> {
        let key = (edge.edge_id.clone(), stream);
        let (through, new) = match record {
            Record::Event(e) => (seq, Stored::Event(e.clone())),
            Record::Rollups(b) => (seq, Stored::Rollups(b.clone())),
            Record::Raw(b) => (seq, Stored::Raw(b.clone())),
            Record::Gap { through } => (through, Stored::Gap),
        };
        assert!(
            seq <= self.durable(&edge.edge_id, stream) + 1
                || self.existing(&key, seq - 1).is_some(),
            "the session handed over {stream:?} {seq} of {} with a hole before it",
            edge.edge_id
        );
        let missing: Vec<u64> = (seq..=through)
            .filter(|s| match self.existing(&key, *s) {
                None => true,
                Some(old) => {
                    // Idempotent by (edge, stream, seq): a resend must be the same record,
                    // except that a gap over records the hub already has keeps them.
                    assert!(
                        new == Stored::Gap || old == &new,
                        "{stream:?} {s} of {} arrived again with different content",
                        edge.edge_id
                    );
                    false
                }
            })
            .collect();
        if missing.is_empty() {
            self.duplicate_accepts += 1;
            return Ok(());
        }
        if self.busy_at.is_some_and(|n| self.pending.len() >= n) {
            return Err(SinkBusy);
        }
        for s in missing {
            self.pending.insert((key.clone(), s), new.clone());
        }
        self.accepted += 1;
        Ok(())
    }

    fn durable_cursor(&self, edge: &EdgeIdentity, stream: UploadStream) -> u64 {
        self.durable(&edge.edge_id, stream)
    }
}

// ---------------------------------------------------------------------------------------
// Documents: the automerge side of each replica.

/// A replica's documents and, per peer, the sync state of the current connection.
pub struct Replica {
    pub docs: BTreeMap<&'static str, AutoCommit>,
}

impl Replica {
    fn new(actor: u8) -> Self {
        let docs = DOC_IDS
            .iter()
            .map(|id| {
                let mut doc = AutoCommit::new();
                doc.set_actor(automerge::ActorId::from(vec![actor, id.len() as u8]));
                (*id, doc)
            })
            .collect();
        Replica { docs }
    }

    pub fn edit(&mut self, doc: &'static str, key: &str, value: i64) {
        let d = self.docs.get_mut(doc).expect("known document");
        d.put(automerge::ROOT, key, value).expect("put");
        let _ = d.commit();
    }

    pub fn heads(&mut self) -> Vec<Vec<automerge::ChangeHash>> {
        self.docs.values_mut().map(|d| d.get_heads()).collect()
    }

    /// The documents' contents, for comparing replicas.
    pub fn contents(&self) -> Vec<Vec<(String, String)>> {
        self.docs
            .values()
            .map(|d| {
                d.map_range(automerge::ROOT, ..)
                    .map(|item| (item.key.to_string(), format!("{:?}", item.value)))
                    .collect()
            })
            .collect()
    }
}

/// Sync states for one link, one per document; `None` between connections.
#[derive(Default)]
struct DocLink {
    states: Option<BTreeMap<&'static str, sync::State>>,
    dirty: bool,
}

impl DocLink {
    fn fresh(&mut self) {
        self.states = Some(DOC_IDS.iter().map(|id| (*id, sync::State::new())).collect());
        self.dirty = true;
    }

    fn reset(&mut self) {
        self.states = None;
        self.dirty = false;
    }
}

/// Receives one sync message; returns whether the document changed.
fn receive_doc(replica: &mut Replica, link: &mut DocLink, m: &DocumentMessage) -> bool {
    let Some(states) = link.states.as_mut() else {
        return false;
    };
    let (Some(doc), Some(state)) = (
        replica.docs.get_mut(m.doc_id.as_str()),
        states.get_mut(m.doc_id.as_str()),
    ) else {
        return false;
    };
    let before = doc.get_heads();
    let message = sync::Message::decode(&m.message).expect("a sync message from the peer");
    doc.sync()
        .receive_sync_message(state, message)
        .expect("sync message applies");
    link.dirty = true;
    doc.get_heads() != before
}

fn generate_docs(replica: &mut Replica, link: &mut DocLink) -> Vec<DocumentMessage> {
    let mut out = Vec::new();
    let Some(states) = link.states.as_mut() else {
        return out;
    };
    if !link.dirty {
        return out;
    }
    link.dirty = false;
    for (id, doc) in replica.docs.iter_mut() {
        if let Some(state) = states.get_mut(id)
            && let Some(m) = doc.sync().generate_sync_message(state)
        {
            out.push(DocumentMessage {
                doc_id: id.to_string(),
                message: m.encode(),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The network.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToHub,
    ToEdge,
}

struct Packet {
    at: Time,
    conn: u64,
    dir: Dir,
    bytes: Vec<u8>,
}

/// Fault rates of the virtual network, each a probability per frame.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Frames that take a random extra delay, so that later ones overtake them.
    pub reorder: f64,
    pub latency: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            latency: Duration::from_millis(5),
        }
    }
}

/// One edge's path to the hub.
pub struct Link {
    /// The connection in use; frames of older connections are dropped, as QUIC would.
    conn: Option<u64>,
    pub cut: bool,
    next_connect: Time,
    packets: Vec<Packet>,
}

// ---------------------------------------------------------------------------------------
// The parties.

pub struct EdgeNode {
    pub identity: EdgeIdentity,
    /// The building the edge's certificate names (the hub checks hello against it).
    pub cert_building: String,
    pub session: EdgeSession,
    pub outbox: MemoryOutbox,
    pub replica: Replica,
    docs: DocLink,
    pub link: Link,
    next_sync: Option<Time>,
    pub events: Vec<EdgeEvent>,
    pub configs: Vec<ConfigPush>,
    pub commands: Vec<Command>,
    /// Kinds of the frames this edge sent, in order.
    pub sent: Vec<(Time, Kind)>,
    pub restarts: u32,
}

impl EdgeNode {
    pub fn outbox_acknowledged(&self, stream: UploadStream) -> u64 {
        self.outbox.acknowledged_cursor(stream)
    }
}

pub struct HubNode {
    pub sessions: Vec<Option<HubSession>>,
    pub sink: MemorySink,
    pub replica: Replica,
    docs: Vec<DocLink>,
    pub flush_interval: Duration,
    next_flush: Option<Time>,
    pub events: Vec<(usize, HubEvent)>,
    pub command_results: Vec<(usize, CommandResult)>,
    pub restarts: u32,
}

pub struct Sim {
    pub now: Time,
    pub rng: Rng,
    pub config: SessionConfig,
    pub faults: Faults,
    pub hub: HubNode,
    pub edges: Vec<EdgeNode>,
    next_conn: u64,
    next_record: u64,
    trace: VecDeque<String>,
}

impl Sim {
    pub fn new(edges: usize, seed: u64, config: SessionConfig) -> Self {
        let edges = (0..edges)
            .map(|i| {
                let identity = EdgeIdentity {
                    edge_id: format!("edge-{i}"),
                    park: "park-1".into(),
                    building: format!("building-{i}"),
                };
                EdgeNode {
                    cert_building: identity.building.clone(),
                    session: EdgeSession::new(config.clone(), identity.clone()),
                    identity,
                    outbox: MemoryOutbox::new(),
                    replica: Replica::new(i as u8 + 1),
                    docs: DocLink::default(),
                    link: Link {
                        conn: None,
                        cut: false,
                        next_connect: Time::ZERO,
                        packets: Vec::new(),
                    },
                    next_sync: None,
                    events: Vec::new(),
                    configs: Vec::new(),
                    commands: Vec::new(),
                    sent: Vec::new(),
                    restarts: 0,
                }
            })
            .collect::<Vec<_>>();
        Sim {
            now: Time::from_millis(1_000),
            rng: Rng::new(seed),
            faults: Faults::default(),
            hub: HubNode {
                sessions: edges.iter().map(|_| None).collect(),
                sink: MemorySink::new(),
                replica: Replica::new(0),
                docs: edges.iter().map(|_| DocLink::default()).collect(),
                flush_interval: Duration::from_millis(10),
                next_flush: None,
                events: Vec::new(),
                command_results: Vec::new(),
                restarts: 0,
            },
            edges,
            config,
            next_conn: 1,
            next_record: 0,
            trace: VecDeque::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace.len() >= 200 {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>12} {line}", self.now.as_micros()));
    }

    /// The last things that happened, for failure messages.
    pub fn trace(&self) -> String {
        self.trace.iter().fold(String::new(), |mut s, l| {
            let _ = writeln!(s, "{l}");
            s
        })
    }

    // --- faults -------------------------------------------------------------------------

    pub fn cut(&mut self, e: usize) {
        self.edges[e].link.cut = true;
        self.note(format!("cut edge-{e}"));
    }

    pub fn heal(&mut self, e: usize) {
        self.edges[e].link.cut = false;
        self.note(format!("heal edge-{e}"));
    }

    /// The edge process dies and starts again: what was in memory is gone, the outbox
    /// (and, unless `lose_unsynced_acks`, its latest acknowledgements) survives.
    pub fn restart_edge(&mut self, e: usize, lose_unsynced_acks: bool) {
        let node = &mut self.edges[e];
        node.session = EdgeSession::new(self.config.clone(), node.identity.clone());
        node.outbox.restart(lose_unsynced_acks);
        node.next_sync = None;
        node.link.conn = None;
        node.link.next_connect = self.now + Duration::from_millis(500);
        node.docs.reset();
        node.restarts += 1;
        self.note(format!(
            "restart edge-{e} lose_unsynced_acks={lose_unsynced_acks}"
        ));
    }

    /// The hub process dies and starts again: sessions and unflushed records are gone;
    /// the sink's durable records and the documents survive.
    pub fn restart_hub(&mut self) {
        for s in &mut self.hub.sessions {
            *s = None;
        }
        for d in &mut self.hub.docs {
            d.reset();
        }
        self.hub.sink.restart();
        self.hub.next_flush = None;
        self.hub.restarts += 1;
        for node in &mut self.edges {
            node.link.conn = None;
        }
        self.note("restart hub".into());
    }

    // --- workload -----------------------------------------------------------------------

    fn record_id(&mut self) -> u64 {
        self.next_record += 1;
        self.next_record
    }

    pub fn add_events(&mut self, e: usize, n: usize) {
        for _ in 0..n {
            let id = self.record_id();
            let mut event_id = [0u8; 16];
            event_id[..8].copy_from_slice(&id.to_be_bytes());
            event_id[8] = e as u8;
            let body = format!(
                "{{\"kind\":\"door.opened\",\"door\":{},\"n\":{id}}}",
                id % 7
            );
            self.edges[e].outbox.write(
                UploadStream::Events,
                Stored::Event(EventRecord {
                    id: event_id,
                    body: body.into_bytes(),
                }),
            );
        }
        self.edges[e].session.handle_outbox_changed();
    }

    pub fn add_rollups(&mut self, e: usize, n: usize) {
        for _ in 0..n {
            let id = self.record_id() as i64;
            let rows = (0..3)
                .map(|p| RollupRow {
                    point: format!("meter-{p}/power_kw"),
                    period_s: 60,
                    bucket: id * 60_000_000,
                    count: 60,
                    bad: (id % 3) as u64,
                    min: 10.0 + p as f64,
                    max: 12.5 + p as f64,
                    sum: 660.0 + id as f64,
                    last: 11.25,
                    last_ts: id * 60_000_000 + 59_000_000,
                    delta: 0.0,
                })
                .collect();
            self.edges[e]
                .outbox
                .write(UploadStream::Rollups, Stored::Rollups(RollupBatch { rows }));
        }
        self.edges[e].session.handle_outbox_changed();
    }

    pub fn add_raw(&mut self, e: usize, n: usize) {
        for _ in 0..n {
            let id = self.record_id() as i64;
            let series = (0..2)
                .map(|p| RawSeries {
                    point: format!("meter-{p}/voltage"),
                    samples: (0..5)
                        .map(|i| RawSample {
                            ts: id * 5_000_000 + i * 1_000_000,
                            value: (id % 11 != 0)
                                .then(|| Value::Float(230.0 + ((id + i) % 9) as f64 / 10.0)),
                            quality: if id % 11 == 0 {
                                Quality::Bad("timeout".into())
                            } else {
                                Quality::Good
                            },
                        })
                        .collect(),
                })
                .collect();
            self.edges[e]
                .outbox
                .write(UploadStream::Raw, Stored::Raw(RawBatch { series }));
        }
        self.edges[e].session.handle_outbox_changed();
    }

    /// Edits a document: replica 0 is the hub, `e + 1` is edge `e`.
    pub fn edit(&mut self, replica: usize, doc: usize, key: u8) {
        let id = self.record_id() as i64;
        let doc = DOC_IDS[doc % DOC_IDS.len()];
        let key = format!("k{key}");
        if replica == 0 {
            self.hub.replica.edit(doc, &key, id);
            for d in &mut self.hub.docs {
                d.dirty = true;
            }
        } else {
            let node = &mut self.edges[replica - 1];
            node.replica.edit(doc, &key, id);
            node.docs.dirty = true;
        }
    }

    // --- the event loop -----------------------------------------------------------------

    fn send(&mut self, e: usize, dir: Dir, bytes: Vec<u8>) {
        let Some(conn) = self.edges[e].link.conn else {
            return;
        };
        if self.edges[e].link.cut || self.rng.chance(self.faults.loss) {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.faults.latency;
            if self.rng.chance(self.faults.reorder) {
                delay += Duration::from_micros(self.rng.below(30_000));
            }
            let at = self.now + delay;
            self.edges[e].link.packets.push(Packet {
                at,
                conn,
                dir,
                bytes: bytes.clone(),
            });
        }
    }

    fn deliver_due(&mut self) -> bool {
        let mut due: Vec<(Time, usize, Packet)> = Vec::new();
        for (e, node) in self.edges.iter_mut().enumerate() {
            let (now_due, later): (Vec<Packet>, Vec<Packet>) =
                node.link.packets.drain(..).partition(|p| p.at <= self.now);
            node.link.packets = later;
            due.extend(now_due.into_iter().map(|p| (p.at, e, p)));
        }
        due.sort_by_key(|(at, _, _)| *at);
        let any = !due.is_empty();
        for (_, e, p) in due {
            if self.edges[e].link.conn != Some(p.conn) {
                continue;
            }
            match p.dir {
                Dir::ToHub => {
                    if let Some(s) = self.hub.sessions[e].as_mut() {
                        s.handle_frame(self.now, &p.bytes, &mut self.hub.sink);
                    }
                }
                Dir::ToEdge => {
                    let node = &mut self.edges[e];
                    node.session
                        .handle_frame(self.now, &p.bytes, &mut node.outbox);
                }
            }
        }
        any
    }

    /// Hands bytes to the hub as if edge `e` had sent them (for hostile-input tests).
    pub fn inject_to_hub(&mut self, e: usize, bytes: &[u8]) {
        if let Some(s) = self.hub.sessions[e].as_mut() {
            s.handle_frame(self.now, bytes, &mut self.hub.sink);
        }
    }

    fn fire_timers(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        for node in &mut self.edges {
            if node.session.poll_timeout().is_some_and(|t| t <= now) {
                node.session.handle_timeout(now);
                any = true;
            }
        }
        for s in self.hub.sessions.iter_mut().flatten() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
                any = true;
            }
        }
        any
    }

    fn storage(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        if self.hub.sink.has_pending() {
            let at = *self
                .hub
                .next_flush
                .get_or_insert(now + self.hub.flush_interval);
            if at <= now {
                self.hub.sink.flush();
                self.hub.next_flush = None;
                for s in self.hub.sessions.iter_mut().flatten() {
                    s.handle_durable(now, &self.hub.sink);
                }
                any = true;
            }
        }
        for node in &mut self.edges {
            if node.outbox.needs_sync() {
                let at = *node
                    .next_sync
                    .get_or_insert(now + Duration::from_millis(50));
                if at <= now {
                    node.outbox.sync();
                    node.next_sync = None;
                    any = true;
                }
            }
        }
        any
    }

    fn connect(&mut self) -> bool {
        let mut any = false;
        for e in 0..self.edges.len() {
            let node = &self.edges[e];
            if node.session.state() != ConnectionState::Disconnected
                || node.link.cut
                || self.now < node.link.next_connect
            {
                continue;
            }
            let conn = self.next_conn;
            self.next_conn += 1;
            let config = self.config.clone();
            let node = &mut self.edges[e];
            node.link.conn = Some(conn);
            node.link.packets.clear();
            let hub = self.hub.sessions[e].get_or_insert_with(|| {
                HubSession::for_building(config, &node.identity.park, &node.cert_building)
            });
            hub.handle_connected(self.now);
            node.session.handle_connected(self.now, &node.outbox);
            self.note(format!("connect edge-{e} conn {conn}"));
            any = true;
        }
        any
    }

    /// One side of edge `e`'s connection gave up on it. What that side still has to say
    /// (a close frame) goes out first and tells the peer; otherwise the transport closes
    /// under the peer at once, or, over a cut link, the peer learns by its idle timeout.
    fn tear_down(&mut self, e: usize, side: Dir) {
        if self.edges[e].link.conn.is_none() {
            return;
        }
        let mut parting = Vec::new();
        match side {
            Dir::ToHub => {
                let node = &mut self.edges[e];
                while let Some(b) = node.session.poll_transmit(self.now, &mut node.outbox) {
                    parting.push(b);
                }
            }
            Dir::ToEdge => {
                while let Some(b) = self.hub.sessions[e]
                    .as_mut()
                    .and_then(|s| s.poll_transmit(self.now))
                {
                    parting.push(b);
                }
            }
        }
        if !parting.is_empty() && !self.edges[e].link.cut {
            for b in parting {
                self.send(e, side, b);
            }
            return;
        }
        let node = &mut self.edges[e];
        node.link.conn = None;
        node.link.next_connect = self.now + Duration::from_millis(200 + self.rng.below(800));
        if !node.link.cut {
            node.session.handle_disconnected(self.now);
            if let Some(s) = self.hub.sessions[e].as_mut() {
                s.handle_disconnected(self.now);
            }
        }
    }

    fn process_events(&mut self) -> bool {
        let mut any = false;
        for e in 0..self.edges.len() {
            while let Some(ev) = self.edges[e].session.poll_event() {
                any = true;
                self.note(format!("edge-{e}: {ev:?}").chars().take(160).collect());
                let node = &mut self.edges[e];
                match &ev {
                    EdgeEvent::Connected { .. } => node.docs.fresh(),
                    EdgeEvent::ConnectionLost { .. } => {
                        node.docs.reset();
                        node.link.next_connect =
                            self.now + Duration::from_millis(200 + self.rng.below(800));
                        self.tear_down(e, Dir::ToHub);
                    }
                    EdgeEvent::Command(c) => {
                        node.commands.push(c.clone());
                        let result = CommandResult {
                            id: c.id,
                            ok: true,
                            body: b"done".to_vec(),
                        };
                        node.session
                            .send_command_result(result)
                            .expect("a small result fits");
                    }
                    EdgeEvent::Config(c) => node.configs.push(c.clone()),
                    EdgeEvent::Document(m) => {
                        receive_doc(&mut node.replica, &mut node.docs, m);
                    }
                    _ => {}
                }
                self.edges[e].events.push(ev);
            }
            while let Some(ev) = self.hub.sessions[e].as_mut().and_then(|s| s.poll_event()) {
                any = true;
                self.note(format!("hub/{e}: {ev:?}").chars().take(160).collect());
                match &ev {
                    HubEvent::Connected { .. } => self.hub.docs[e].fresh(),
                    HubEvent::ConnectionLost { reason } => {
                        self.hub.docs[e].reset();
                        if *reason != LostReason::Replaced {
                            self.tear_down(e, Dir::ToEdge);
                        }
                    }
                    HubEvent::Document(m) => {
                        let changed = receive_doc(&mut self.hub.replica, &mut self.hub.docs[e], m);
                        if changed {
                            // New changes for the hub: every other edge should hear of them.
                            for d in &mut self.hub.docs {
                                d.dirty = true;
                            }
                        }
                    }
                    HubEvent::CommandResult(r) => self.hub.command_results.push((e, r.clone())),
                    _ => {}
                }
                self.hub.events.push((e, ev));
            }
        }
        any
    }

    fn sync_documents(&mut self) -> bool {
        let mut any = false;
        for e in 0..self.edges.len() {
            let node = &mut self.edges[e];
            if node.session.state() == ConnectionState::Connected {
                for m in generate_docs(&mut node.replica, &mut node.docs) {
                    node.session.send_document(m).expect("connected");
                    any = true;
                }
            }
            if let Some(s) = self.hub.sessions[e].as_mut()
                && s.state() == ConnectionState::Connected
            {
                for m in generate_docs(&mut self.hub.replica, &mut self.hub.docs[e]) {
                    s.send_document(m).expect("connected");
                    any = true;
                }
            }
        }
        any
    }

    fn transmit(&mut self) -> bool {
        let mut any = false;
        for e in 0..self.edges.len() {
            loop {
                let node = &mut self.edges[e];
                let Some(bytes) = node.session.poll_transmit(self.now, &mut node.outbox) else {
                    break;
                };
                if let Ok(frame) = sync_protocol::Frame::decode(&bytes) {
                    node.sent.push((self.now, frame.kind));
                }
                self.send(e, Dir::ToHub, bytes);
                any = true;
            }
            while let Some(bytes) = self.hub.sessions[e]
                .as_mut()
                .and_then(|s| s.poll_transmit(self.now))
            {
                self.send(e, Dir::ToEdge, bytes);
                any = true;
            }
        }
        any
    }

    /// Does everything due at the current instant.
    pub fn step(&mut self) {
        for round in 0.. {
            assert!(
                round < 100_000,
                "no quiescence at one instant\n{}",
                self.trace()
            );
            let mut progress = self.deliver_due();
            progress |= self.fire_timers();
            progress |= self.storage();
            progress |= self.connect();
            progress |= self.process_events();
            progress |= self.sync_documents();
            progress |= self.transmit();
            if !progress {
                break;
            }
        }
    }

    /// The next instant at which anything is due.
    fn next_event(&self) -> Option<Time> {
        let mut next: Option<Time> = None;
        let mut consider = |t: Option<Time>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Time| n.min(t)));
            }
        };
        for node in &self.edges {
            consider(node.link.packets.iter().map(|p| p.at).min());
            consider(node.session.poll_timeout());
            consider(node.next_sync);
            if node.session.state() == ConnectionState::Disconnected && !node.link.cut {
                consider(Some(node.link.next_connect));
            }
        }
        for s in self.hub.sessions.iter().flatten() {
            consider(s.poll_timeout());
        }
        if self.hub.sink.has_pending() {
            consider(self.hub.next_flush);
        }
        next
    }

    /// Runs the world for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.step();
            match self.next_event() {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => {
                    self.now = end;
                    self.step();
                    return;
                }
            }
        }
    }

    /// Whether everything written has been stored, acknowledged and synced.
    pub fn quiet(&mut self) -> bool {
        let now = self.now;
        if self.hub.sink.has_pending() {
            return false;
        }
        for (e, node) in self.edges.iter().enumerate() {
            if !node.link.packets.is_empty() || !node.session.is_connected(now) {
                return false;
            }
            if !self.hub.sessions[e]
                .as_ref()
                .is_some_and(|s| s.is_connected(now))
            {
                return false;
            }
            for s in UploadStream::ALL {
                let last = node.outbox.last_seq(s);
                if self.hub.sink.durable(&node.identity.edge_id, s) != last
                    || node.outbox.acknowledged_cursor(s) != last
                {
                    return false;
                }
            }
            if node.docs.dirty || self.hub.docs[e].dirty {
                return false;
            }
        }
        let hub_heads = self.hub.replica.heads();
        self.edges
            .iter_mut()
            .all(|node| node.replica.heads() == hub_heads)
    }

    /// Runs until [`Sim::quiet`] or until `limit` of virtual time has passed.
    pub fn drive(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = self.now + limit;
        loop {
            self.step();
            if self.quiet() {
                return Ok(());
            }
            let next = self.next_event();
            match next {
                Some(t) if t <= deadline => self.now = t.max(self.now),
                _ => {
                    return Err(format!(
                        "not quiet after {limit:?} (next event {next:?})\n{}\n{}",
                        self.status(),
                        self.trace()
                    ));
                }
            }
        }
    }

    pub fn status(&self) -> String {
        let mut s = String::new();
        for (e, node) in self.edges.iter().enumerate() {
            let _ = writeln!(
                s,
                "edge-{e}: {:?} cut={} conn={:?} hub={:?}",
                node.session.state(),
                node.link.cut,
                node.link.conn,
                self.hub.sessions[e].as_ref().map(|h| h.state())
            );
            for st in UploadStream::ALL {
                let _ = writeln!(
                    s,
                    "  {st:?}: written {} acked {} hub durable {}",
                    node.outbox.last_seq(st),
                    node.outbox.acknowledged_cursor(st),
                    self.hub.sink.durable(&node.identity.edge_id, st)
                );
            }
        }
        s
    }

    /// The hub holds exactly what each edge wrote: every sequence number once, in order,
    /// the same record, or a gap only where the edge's disk budget removed the record; and
    /// the edge's acknowledged cursors equal the hub's durable ones.
    pub fn check_consistent(&mut self) -> Result<(), String> {
        for node in &self.edges {
            let edge = &node.identity.edge_id;
            for s in UploadStream::ALL {
                let i = s as usize;
                let written = &node.outbox.written[i];
                let last = node.outbox.last_seq(s);
                let durable = self.hub.sink.durable(edge, s);
                if durable != last {
                    return Err(format!(
                        "{edge} {s:?}: hub durable {durable}, edge wrote {last}"
                    ));
                }
                let acked = node.outbox.acknowledged_cursor(s);
                if acked != durable {
                    return Err(format!(
                        "{edge} {s:?}: edge acknowledged {acked}, hub durable {durable}"
                    ));
                }
                let empty = BTreeMap::new();
                let stored = self
                    .hub
                    .sink
                    .stored
                    .get(&(edge.clone(), s))
                    .unwrap_or(&empty);
                let seqs: Vec<u64> = stored.keys().copied().collect();
                let expected: Vec<u64> = (1..=last).collect();
                if seqs != expected {
                    return Err(format!(
                        "{edge} {s:?}: hub holds sequence numbers {seqs:?}, expected 1..={last}"
                    ));
                }
                for (seq, record) in stored {
                    match (record, written.get(seq)) {
                        (Stored::Gap, _) if node.outbox.evicted[i].contains(seq) => {}
                        (Stored::Gap, _) => {
                            return Err(format!(
                                "{edge} {s:?} {seq}: a gap where the edge had the record"
                            ));
                        }
                        (r, Some(w)) if r == w => {}
                        (r, w) => {
                            return Err(format!(
                                "{edge} {s:?} {seq}: hub has {r:?}, edge wrote {w:?}"
                            ));
                        }
                    }
                }
            }
        }
        let hub = self.hub.replica.contents();
        let hub_heads = self.hub.replica.heads();
        for node in &mut self.edges {
            if node.replica.contents() != hub {
                return Err(format!(
                    "{}: documents differ from the hub's:\n{:?}\n{:?}",
                    node.identity.edge_id,
                    node.replica.contents(),
                    hub
                ));
            }
            if node.replica.heads() != hub_heads {
                return Err(format!("{}: document heads differ", node.identity.edge_id));
            }
        }
        Ok(())
    }

    /// The kinds of the frames edge `e` sent, in order.
    pub fn sent_kinds(&self, e: usize) -> Vec<Kind> {
        self.edges[e].sent.iter().map(|(_, k)| *k).collect()
    }
}

/// Only the kinds that carry records or documents.
pub fn data_kinds(kinds: &[Kind]) -> Vec<Kind> {
    kinds
        .iter()
        .copied()
        .filter(|k| matches!(k, Kind::Event | Kind::Rollups | Kind::Raw | Kind::Document))
        .collect()
}
