//! The hub side of a session: takes one edge's uploads in order into the caller's sink,
//! acknowledges what the sink holds durably, pushes config, commands and documents.
//!
//! It stores nothing itself (the caller's [`HubSink`] does, idempotently) and serves one
//! edge; the caller keeps one session per edge and checks the certificate.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use super::{ConnectionState, Core, LostReason, RecentIds, SendError, SessionConfig, Stats};
use crate::Time;
use crate::codec::{PROTOCOL_VERSION, StreamId};
use crate::message::{
    AckEntry, CloseCode, Command, CommandResult, ConfigPush, Cursors, DocumentMessage,
    EdgeIdentity, EventRecord, Health, Hello, HelloAck, Message, UploadStream,
};
use crate::telemetry::{RawBatch, RollupBatch};

/// The longest edge id a hub takes in a hello (it is stored and shown).
pub const MAX_EDGE_ID_LEN: usize = 128;

/// One upload record handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Record<'a> {
    Event(&'a EventRecord),
    Rollups(&'a RollupBatch),
    Raw(&'a RawBatch),
    /// Sequence numbers from the accepted `seq` through `through` will never come: the
    /// edge no longer had those records. The sink records the gap so that its durable
    /// cursor can pass it.
    Gap {
        through: u64,
    },
}

/// The sink cannot take more now; the record will be sent again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the sink cannot take more records now")]
pub struct SinkBusy;

/// The hub's durable store, implemented by the caller (SQLite or PostgreSQL in the hub; an
/// in-memory one in tests).
///
/// The session hands records over in per-stream order with no gaps: after the durable
/// cursor `d`, the next record it passes is `d + 1` (or a gap starting there). The same
/// record MAY arrive again (resends after a break, or from a previous connection of the
/// same edge), and the sink MUST store it once: idempotently by (edge, stream, seq).
pub trait HubSink {
    /// Takes a record for storage; it need not be durable yet.
    fn accept(
        &mut self,
        edge: &EdgeIdentity,
        stream: UploadStream,
        seq: u64,
        record: Record<'_>,
    ) -> Result<(), SinkBusy>;

    /// The highest `n` such that every record of (edge, stream) up to `n` is durable.
    /// It MUST never go down while the hub runs, and after a restart MUST be what was
    /// durable before it.
    fn durable_cursor(&self, edge: &EdgeIdentity, stream: UploadStream) -> u64;
}

/// What the hub session reports, in order, through [`HubSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// An edge said hello and was accepted.
    Connected {
        identity: EdgeIdentity,
        /// What the edge believes the hub holds.
        edge_cursors: Cursors,
        /// What the hub holds durably; uploads resume after these.
        durable: Cursors,
    },
    /// The edge believed the hub held more than it does: the hub's store lost records it
    /// had acknowledged. The edge resends what it still has.
    EdgeAhead {
        stream: UploadStream,
        edge_cursor: u64,
        hub_cursor: u64,
    },
    /// The edge reported records `from..=through` gone before upload.
    Skipped {
        stream: UploadStream,
        from: u64,
        through: u64,
    },
    Health(Health),
    /// An answer to a command, once per command id.
    CommandResult(CommandResult),
    Document(DocumentMessage),
    /// The connection ended. Document sync states MUST be reset before the next one.
    ConnectionLost {
        reason: LostReason,
    },
}

/// The receiving side of one upload stream.
#[derive(Default)]
struct UploadRx {
    /// Handed to the sink in order, through this sequence number.
    received: u64,
    /// What the sink reports durable.
    durable: u64,
    /// Frames that arrived ahead of `received + 1`, with their sizes.
    buffer: BTreeMap<u64, (Message, usize)>,
    buffer_bytes: usize,
}

impl UploadRx {
    fn resume(&mut self, durable: u64) {
        self.received = durable;
        self.durable = durable;
        self.buffer.clear();
        self.buffer_bytes = 0;
    }

    fn ack(&self, stream: UploadStream) -> AckEntry {
        AckEntry {
            stream: stream.stream_id(),
            received: self.received.max(self.durable),
            durable: self.durable,
        }
    }
}

fn through_of(seq: u64, message: &Message) -> u64 {
    match message {
        Message::Gap { through, .. } => *through,
        _ => seq,
    }
}

/// The hub side of the sync protocol, one per edge.
///
/// # Method kinds and call order
///
/// Inputs (`handle_*`) change state; outputs (`poll_*`) drain what the inputs produced.
/// After any input the caller SHOULD drain `poll_transmit` until `None` (sending each
/// frame, in order), `poll_event` until `None`, then re-arm a timer for `poll_timeout`.
///
/// 1. [`HubSession::new`] or [`HubSession::for_building`] when an edge first connects
///    after the hub starts. A session MAY be kept for the same edge across connections
///    (so that queued config pushes and commands survive); a restart builds new ones.
/// 2. [`HubSession::handle_connected`] when a connection from the edge is up. The session
///    waits for hello, checks the identity, reads the sink's durable cursors and answers
///    with hello-ack. A new connection for a session that has one ends the old one.
/// 3. [`HubSession::handle_frame`] for every frame received, with the sink.
/// 4. [`HubSession::handle_durable`] whenever the sink's durable cursors may have moved
///    (after each group commit), so that acknowledgements go out.
/// 5. [`HubSession::handle_timeout`] when the instant from `poll_timeout` has passed.
/// 6. [`HubSession::handle_disconnected`] when the transport reports the connection gone.
///    When the session ends a connection itself it reports [`HubEvent::ConnectionLost`];
///    the caller then closes the transport.
///
/// `push_config`, `send_command` and `send_document` queue messages for the edge.
pub struct HubSession {
    core: Core,
    expected: Option<(String, String)>,
    identity: Option<EdgeIdentity>,
    uploads: [UploadRx; 3],
    events: VecDeque<HubEvent>,
    seen_results: RecentIds,
}

impl HubSession {
    /// A session that accepts any edge identity (the caller checks it on `Connected`).
    pub fn new(config: SessionConfig) -> Self {
        HubSession {
            core: Core::new(config),
            expected: None,
            identity: None,
            uploads: Default::default(),
            events: VecDeque::new(),
            seen_results: RecentIds::new(),
        }
    }

    /// A session that refuses any hello not naming this park and building, the ones the
    /// edge's certificate names.
    pub fn for_building(config: SessionConfig, park: &str, building: &str) -> Self {
        HubSession {
            expected: Some((park.to_string(), building.to_string())),
            ..HubSession::new(config)
        }
    }

    /// The edge, once it has said hello.
    pub fn identity(&self) -> Option<&EdgeIdentity> {
        self.identity.as_ref()
    }

    pub fn state(&self) -> ConnectionState {
        self.core.state
    }

    /// Whether the edge said hello and has been heard from within the idle timeout.
    pub fn is_connected(&self, now: Time) -> bool {
        self.core.is_connected(now)
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// What the sink held durably when last asked.
    pub fn durable(&self) -> Cursors {
        let mut c = Cursors::default();
        for s in UploadStream::ALL {
            c.set(s, self.uploads[s as usize].durable);
        }
        c
    }

    fn end(&mut self, reason: LostReason) {
        if self.core.end() {
            self.after_end(reason);
        }
    }

    fn close(&mut self, code: CloseCode, reason: String, lost: LostReason) {
        if self.core.close(code, &reason) {
            self.after_end(lost);
        }
    }

    fn after_end(&mut self, reason: LostReason) {
        for rx in &mut self.uploads {
            let durable = rx.durable;
            rx.resume(durable);
        }
        self.events.push_back(HubEvent::ConnectionLost { reason });
    }

    /// A connection from the edge is up. Ends the previous one first if there was one.
    pub fn handle_connected(&mut self, now: Time) {
        self.end(LostReason::Replaced);
        self.core.start(now);
        // The hub speaks after hello; its heartbeats start then.
        self.core.next_heartbeat = None;
    }

    /// The transport reports the connection gone.
    pub fn handle_disconnected(&mut self, _now: Time) {
        self.end(LostReason::Transport);
        self.core.out.clear();
    }

    /// One frame from the edge.
    pub fn handle_frame(&mut self, now: Time, bytes: &[u8], sink: &mut impl HubSink) {
        if self.core.state == ConnectionState::Disconnected {
            self.core.stats.ignored += 1;
            return;
        }
        self.core.on_receive(now, bytes.len());
        let (seq, message) = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.core.stats.decode_errors += 1;
                self.close(
                    CloseCode::ProtocolViolation,
                    e.to_string(),
                    LostReason::BadFrame(e),
                );
                return;
            }
        };
        match message {
            Message::Hello(hello) => self.on_hello(now, hello, sink),
            Message::Heartbeat => {}
            Message::Close(c) => self.end(LostReason::ClosedByPeer {
                code: c.code,
                reason: c.reason,
            }),
            Message::Ack(entries) => self.on_ack(now, &entries),
            m @ (Message::Health(_) | Message::CommandResult(_)) => {
                let window = self.core.config.window_frames;
                let ready = self
                    .core
                    .control_rx
                    .on_frame(seq, m, window, &mut self.core.stats);
                self.core.ack_pending = true;
                for m in ready {
                    match m {
                        Message::Health(h) => self.events.push_back(HubEvent::Health(h)),
                        Message::CommandResult(r) => {
                            let first_time = self.seen_results.insert(r.id);
                            if first_time {
                                self.events.push_back(HubEvent::CommandResult(r));
                            }
                        }
                        _ => {}
                    }
                }
            }
            m @ Message::Document(_) => {
                if self.core.state != ConnectionState::Connected {
                    self.core.stats.ignored += 1;
                    return;
                }
                let window = self.core.config.window_frames;
                let ready = self
                    .core
                    .docs_rx
                    .on_frame(seq, m, window, &mut self.core.stats);
                self.core.ack_pending = true;
                for m in ready {
                    if let Message::Document(d) = m {
                        self.events.push_back(HubEvent::Document(d));
                    }
                }
            }
            m @ (Message::Event(_)
            | Message::Rollups(_)
            | Message::Raw(_)
            | Message::Gap { .. }) => {
                if self.core.state != ConnectionState::Connected {
                    self.core.stats.ignored += 1;
                    return;
                }
                if let Some(stream) = UploadStream::from_stream_id(m.stream()) {
                    self.on_upload(stream, seq, m, bytes.len(), sink);
                    self.refresh_durable(sink);
                }
            }
            other => {
                let reason = format!("the edge sent a {:?} message", other.kind());
                self.close(
                    CloseCode::ProtocolViolation,
                    reason.clone(),
                    LostReason::ProtocolViolation(reason),
                );
            }
        }
    }

    fn on_hello(&mut self, now: Time, hello: Hello, sink: &mut impl HubSink) {
        if hello.protocol_version != PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} is not supported; this hub speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            );
            self.close(
                CloseCode::UnsupportedVersion,
                reason.clone(),
                LostReason::Refused(reason),
            );
            return;
        }
        let id = &hello.identity;
        let refusal = match (&self.expected, &self.identity) {
            _ if id.edge_id.is_empty()
                || id.edge_id.len() > MAX_EDGE_ID_LEN
                || id.edge_id.chars().any(char::is_control) =>
            {
                Some(format!(
                    "an edge id must be 1 to {MAX_EDGE_ID_LEN} bytes with no control characters"
                ))
            }
            (Some((park, building)), _) if (park, building) != (&id.park, &id.building) => {
                Some(format!(
                    "edge {} says it is in {}/{}, but its certificate names {park}/{building}",
                    id.edge_id, id.park, id.building
                ))
            }
            (_, Some(known)) if known != id => Some(format!(
                "this session belongs to edge {}, not {}",
                known.edge_id, id.edge_id
            )),
            _ => None,
        };
        if let Some(reason) = refusal {
            self.close(
                CloseCode::Refused,
                reason.clone(),
                LostReason::Refused(reason),
            );
            return;
        }
        if self.core.state == ConnectionState::Connected {
            // A resent hello on the same connection: answer again, change nothing.
            self.core.stats.duplicates += 1;
            self.send_hello_ack();
            return;
        }
        let identity = hello.identity.clone();
        let mut durable = Cursors::default();
        for s in UploadStream::ALL {
            let d = sink.durable_cursor(&identity, s);
            durable.set(s, d);
            self.uploads[s as usize].resume(d);
        }
        self.identity = Some(identity.clone());
        self.core.state = ConnectionState::Connected;
        self.core.next_heartbeat = Some(now + self.core.config.heartbeat_interval);
        self.send_hello_ack();
        self.events.push_back(HubEvent::Connected {
            identity,
            edge_cursors: hello.cursors,
            durable,
        });
        for s in UploadStream::ALL {
            if hello.cursors.get(s) > durable.get(s) {
                self.events.push_back(HubEvent::EdgeAhead {
                    stream: s,
                    edge_cursor: hello.cursors.get(s),
                    hub_cursor: durable.get(s),
                });
            }
        }
    }

    fn send_hello_ack(&mut self) {
        let ack = Message::HelloAck(HelloAck {
            durable: self.durable(),
            window_frames: self.core.config.window_frames.max(1),
            window_bytes: self.core.config.window_bytes,
        });
        if let Ok(bytes) = ack.encode(0) {
            self.core.out.push_back(bytes);
        }
    }

    fn on_ack(&mut self, now: Time, entries: &[AckEntry]) {
        for e in entries {
            let result = match e.stream {
                StreamId::Control => self.core.control_tx.on_ack(now, e.received),
                StreamId::Documents => self.core.docs_tx.on_ack(now, e.received),
                s => Err(format!("the edge acknowledged the {s:?} stream")),
            };
            if let Err(reason) = result {
                self.close(
                    CloseCode::ProtocolViolation,
                    reason.clone(),
                    LostReason::ProtocolViolation(reason),
                );
                return;
            }
        }
    }

    fn on_upload(
        &mut self,
        stream: UploadStream,
        seq: u64,
        message: Message,
        len: usize,
        sink: &mut impl HubSink,
    ) {
        let window = (
            self.core.config.window_frames,
            self.core.config.window_bytes,
        );
        let rx = &mut self.uploads[stream as usize];
        let through = through_of(seq, &message);
        if through <= rx.received {
            self.core.stats.duplicates += 1;
            // The edge resends because it missed our acknowledgement: repeat it.
            self.core.ack_pending = true;
            return;
        }
        if seq > rx.received.saturating_add(1) {
            let ahead = seq - rx.received;
            if rx.buffer.contains_key(&seq) {
                self.core.stats.duplicates += 1;
            } else if ahead > u64::from(window.0)
                || rx.buffer.len() >= window.0 as usize
                || rx.buffer_bytes + len > window.1 as usize
            {
                self.core.stats.out_of_window += 1;
            } else {
                rx.buffer.insert(seq, (message, len));
                rx.buffer_bytes += len;
            }
            return;
        }
        if !self.deliver(stream, seq, message, sink) {
            return;
        }
        // Frames that waited for this one.
        loop {
            let rx = &mut self.uploads[stream as usize];
            let Some((&next, _)) = rx.buffer.first_key_value() else {
                break;
            };
            if next > rx.received.saturating_add(1) {
                break;
            }
            let Some((message, len)) = rx.buffer.remove(&next) else {
                break;
            };
            rx.buffer_bytes -= len;
            if through_of(next, &message) <= rx.received {
                continue;
            }
            if !self.deliver(stream, next, message, sink) {
                break;
            }
        }
    }

    /// Hands one record, which starts at or before `received + 1`, to the sink.
    fn deliver(
        &mut self,
        stream: UploadStream,
        seq: u64,
        message: Message,
        sink: &mut impl HubSink,
    ) -> bool {
        let Some(identity) = &self.identity else {
            return false;
        };
        let rx = &mut self.uploads[stream as usize];
        let start = rx.received.saturating_add(1);
        let through = through_of(seq, &message);
        let record = match &message {
            Message::Event(e) => Record::Event(e),
            Message::Rollups(b) => Record::Rollups(b),
            Message::Raw(b) => Record::Raw(b),
            Message::Gap { through, .. } => Record::Gap { through: *through },
            _ => return false,
        };
        match sink.accept(identity, stream, start, record) {
            Ok(()) => {
                rx.received = through;
                self.core.ack_pending = true;
                if let Record::Gap { through } = record {
                    self.events.push_back(HubEvent::Skipped {
                        stream,
                        from: start,
                        through,
                    });
                }
                true
            }
            Err(SinkBusy) => {
                self.core.stats.sink_busy += 1;
                false
            }
        }
    }

    fn refresh_durable(&mut self, sink: &impl HubSink) {
        let Some(identity) = &self.identity else {
            return;
        };
        for s in UploadStream::ALL {
            let d = sink.durable_cursor(identity, s);
            let rx = &mut self.uploads[s as usize];
            if d > rx.durable {
                rx.durable = d;
                self.core.ack_pending = true;
            }
            if d > rx.received {
                // Stored meanwhile through an earlier connection of the same edge.
                rx.received = d;
                while let Some(entry) = rx.buffer.first_entry() {
                    if *entry.key() > d {
                        break;
                    }
                    let (_, len) = entry.remove();
                    rx.buffer_bytes -= len;
                }
            }
        }
    }

    /// The sink's durable cursors may have moved: acknowledge what is now durable.
    pub fn handle_durable(&mut self, _now: Time, sink: &impl HubSink) {
        if self.core.state == ConnectionState::Connected {
            self.refresh_durable(sink);
        }
    }

    /// The instant from [`HubSession::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.core.state == ConnectionState::Disconnected {
            return;
        }
        if self.core.idle_deadline().is_some_and(|d| now >= d) {
            self.end(LostReason::IdleTimeout);
            return;
        }
        self.core.heartbeat(now);
        self.core.channel_timeouts(now);
    }

    /// Queues a config push; kept across reconnects until the edge has it.
    pub fn push_config(&mut self, config: ConfigPush) -> Result<(), SendError> {
        let m = Message::ConfigPush(config);
        Core::check_size(&m)?;
        self.core.control_tx.queue.push_back(m);
        Ok(())
    }

    /// Queues a command; kept across reconnects until the edge has it.
    pub fn send_command(&mut self, command: Command) -> Result<(), SendError> {
        let m = Message::Command(command);
        Core::check_size(&m)?;
        self.core.control_tx.queue.push_back(m);
        Ok(())
    }

    /// Queues a document sync message for this connection only.
    pub fn send_document(&mut self, message: DocumentMessage) -> Result<(), SendError> {
        if self.core.state != ConnectionState::Connected {
            return Err(SendError::NotConnected);
        }
        let m = Message::Document(message);
        Core::check_size(&m)?;
        self.core.docs_tx.queue.push_back(m);
        Ok(())
    }

    /// The next frame to send: queued control frames, acknowledgements, control
    /// messages, then document messages.
    pub fn poll_transmit(&mut self, now: Time) -> Option<Vec<u8>> {
        if let Some(bytes) = self.core.out.pop_front() {
            return Some(self.core.sent(bytes));
        }
        if self.core.state != ConnectionState::Connected {
            return None;
        }
        if self.core.ack_pending {
            self.core.ack_pending = false;
            let mut entries = vec![self.core.control_rx.ack(StreamId::Control)];
            entries.extend(UploadStream::ALL.map(|s| self.uploads[s as usize].ack(s)));
            entries.push(self.core.docs_rx.ack(StreamId::Documents));
            if let Ok(bytes) = Message::Ack(entries).encode(0) {
                return Some(self.core.sent(bytes));
            }
        }
        let (frames, bytes) = (
            self.core.config.window_frames,
            self.core.config.window_bytes,
        );
        if self.core.control_tx.has_unsent() {
            let frame = self.core.control_tx.next_frame(now, frames, bytes)?;
            return Some(self.core.sent(frame));
        }
        if self.core.docs_tx.has_unsent() {
            let frame = self.core.docs_tx.next_frame(now, frames, bytes)?;
            return Some(self.core.sent(frame));
        }
        None
    }

    /// When [`HubSession::handle_timeout`] should next be called; `None` between
    /// connections.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.core.state == ConnectionState::Disconnected {
            return None;
        }
        self.core.base_timeout()
    }

    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }
}
