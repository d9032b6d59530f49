//! The edge side of a session: uploads the outbox's records, resumes from the hub's
//! durable cursors, takes config pushes, commands and document messages.
//!
//! It owns no storage (the caller's [`EdgeOutbox`] holds the records and the cursors),
//! applies no config or command and interprets no document: those are handed to the
//! caller as events.

use std::collections::VecDeque;

use super::{
    ChannelTx, ConnectionState, Core, LostReason, RecentIds, Rto, SendError, SessionConfig, Stats,
    Window,
};
use crate::Time;
use crate::codec::{EncodeError, StreamId};
use crate::message::{
    self, AckEntry, CloseCode, Command, CommandResult, ConfigPush, Cursors, DocumentMessage,
    EdgeIdentity, EventRecord, Health, HelloAck, Message, UploadStream,
};
use crate::telemetry::{RawBatch, RollupBatch};

/// How much the session asks the outbox for at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Return at most this many records.
    pub max_records: usize,
    /// Stop adding records once their encoded size reaches about this many bytes; always
    /// return at least one record when there is one.
    pub max_bytes: usize,
}

/// The edge's durable upload queue, implemented by the caller (the edge node's SQLite
/// store; an in-memory one in tests).
///
/// Every record has a sequence number per stream, given when the record was written and
/// never reused: 1, 2, 3 and so on. Numbers MAY be missing (raw telemetry removed by the
/// disk budget before upload); the session tells the hub about such gaps. Events and
/// documents SHOULD never have gaps.
pub trait EdgeOutbox {
    /// Events with sequence numbers above `after`, ascending.
    fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)>;
    /// Rollup batches with sequence numbers above `after`, ascending.
    fn rollups_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RollupBatch)>;
    /// Raw telemetry batches with sequence numbers above `after`, ascending.
    fn raw_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RawBatch)>;
    /// The newest sequence number given to a record of `stream`, whether the record still
    /// exists or not; 0 when none was. It MUST count only records that the `*_after`
    /// methods can already return (the session asks before it reads, and takes numbers
    /// up to it that a read does not return as gone).
    fn last_written(&self, stream: UploadStream) -> u64;
    /// The last cursor recorded by [`EdgeOutbox::acknowledged`], read at every connect.
    fn acknowledged_cursor(&self, stream: UploadStream) -> u64;
    /// The hub holds every record of `stream` up to and including `through` durably. The
    /// outbox SHOULD persist the cursor and MAY delete those records.
    ///
    /// `through` can be beyond the newest record the outbox ever wrote when the hub holds
    /// more than this edge remembers (its store restored from a backup, say). The outbox
    /// MUST then number new records after `through`, or the hub will take them for
    /// duplicates.
    fn acknowledged(&mut self, stream: UploadStream, through: u64);
}

/// What the edge session reports, in order, through [`EdgeSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeEvent {
    /// The hub answered hello. Uploads resume after `hub_durable`.
    Connected { hub_durable: Cursors },
    /// The hub holds `stream` durably up to `through`. The outbox has been told, unless
    /// it already held a later cursor (after [`EdgeEvent::HubBehind`]).
    Acknowledged { stream: UploadStream, through: u64 },
    /// The connection ended. Document sync states MUST be reset before the next one.
    ConnectionLost { reason: LostReason },
    /// The hub holds less than it acknowledged before (its store lost data). Records still
    /// in the outbox are sent again; the rest are reported as gaps.
    HubBehind {
        stream: UploadStream,
        edge_cursor: u64,
        hub_cursor: u64,
    },
    /// The outbox had no records `from..=through`; the hub was told they are gone.
    RecordsSkipped {
        stream: UploadStream,
        from: u64,
        through: u64,
    },
    /// A record could not be encoded (larger than a frame); it was sent as a gap.
    RecordRejected {
        stream: UploadStream,
        seq: u64,
        error: EncodeError,
    },
    /// A config push newer than any seen by this session.
    Config(ConfigPush),
    /// A command not seen before by this session; answer with
    /// [`EdgeSession::send_command_result`].
    Command(Command),
    /// A document sync message from the hub.
    Document(DocumentMessage),
}

struct InFlight {
    through: u64,
    bytes: Vec<u8>,
}

/// The sending side of one upload stream.
struct UploadTx {
    stream: UploadStream,
    /// What the hub holds durably.
    durable: u64,
    /// What the hub has taken in order (durable or not yet).
    received: u64,
    /// The cursor the outbox holds; it never goes back, even when the hub's does.
    outbox_cursor: u64,
    /// The last sequence number sent (or covered by a gap) on this connection.
    sent: u64,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    /// Records read ahead, by sequence number. `None` marks the newest number the outbox
    /// has written when none of the records up to it is left, so that records removed at
    /// the end of the stream are reported as a gap too.
    prefetch: VecDeque<(u64, Option<Message>)>,
    /// The outbox had nothing after `sent` when last asked.
    exhausted: bool,
    rto: Rto,
}

enum Produce {
    Frame(Vec<u8>),
    Blocked,
    Idle,
}

impl UploadTx {
    fn new(stream: UploadStream, config: &SessionConfig) -> Self {
        UploadTx {
            stream,
            durable: 0,
            received: 0,
            outbox_cursor: 0,
            sent: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            prefetch: VecDeque::new(),
            exhausted: false,
            rto: Rto::new(config),
        }
    }

    fn resume(&mut self, from: u64) {
        self.durable = from;
        self.received = from;
        self.sent = from;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.prefetch.clear();
        self.exhausted = false;
        self.rto.reset();
    }

    fn window_open(&self, w: Window) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < w.frames as usize && self.in_flight_bytes < w.bytes as usize)
    }

    fn read(&mut self, outbox: &mut impl EdgeOutbox, w: Window, read_batch: usize) {
        let limit = ReadLimit {
            max_records: (w.frames as usize)
                .saturating_sub(self.in_flight.len())
                .clamp(1, read_batch.max(1)),
            max_bytes: (w.bytes as usize)
                .saturating_sub(self.in_flight_bytes)
                .max(1),
        };
        let after = self.sent;
        let newest = outbox.last_written(self.stream);
        let records: Vec<(u64, Message)> = match self.stream {
            UploadStream::Events => outbox
                .events_after(after, limit)
                .into_iter()
                .map(|(s, r)| (s, Message::Event(r)))
                .collect(),
            UploadStream::Rollups => outbox
                .rollups_after(after, limit)
                .into_iter()
                .map(|(s, r)| (s, Message::Rollups(r)))
                .collect(),
            UploadStream::Raw => outbox
                .raw_after(after, limit)
                .into_iter()
                .map(|(s, r)| (s, Message::Raw(r)))
                .collect(),
        };
        self.exhausted = records.is_empty();
        if records.is_empty() && newest > after {
            // Everything up to `newest` was written and none of it is left.
            self.prefetch.push_back((newest, None));
        }
        self.prefetch
            .extend(records.into_iter().map(|(seq, m)| (seq, Some(m))));
    }

    fn produce(
        &mut self,
        now: Time,
        outbox: &mut impl EdgeOutbox,
        w: Window,
        read_batch: usize,
        events: &mut VecDeque<EdgeEvent>,
    ) -> Produce {
        loop {
            if self.prefetch.is_empty() {
                if self.exhausted {
                    return Produce::Idle;
                }
                if !self.window_open(w) {
                    return Produce::Blocked;
                }
                self.read(outbox, w, read_batch);
                continue;
            }
            if !self.window_open(w) {
                return Produce::Blocked;
            }
            let Some((seq, record)) = self.prefetch.front() else {
                continue;
            };
            let (seq, is_record) = (*seq, record.is_some());
            if seq <= self.sent {
                // Already sent, or acknowledged meanwhile (the outbox answered a stale
                // question or returned records out of order), or the end reached.
                self.prefetch.pop_front();
                continue;
            }
            // Sequence numbers come from the outbox and the hub; none of this may overflow.
            let from = self.sent.saturating_add(1);
            let (first, through, message) = if !is_record || seq > from {
                let through = if is_record { seq - 1 } else { seq };
                events.push_back(EdgeEvent::RecordsSkipped {
                    stream: self.stream,
                    from,
                    through,
                });
                let gap = Message::Gap {
                    stream: self.stream,
                    through,
                };
                (from, through, gap)
            } else {
                let Some((_, Some(message))) = self.prefetch.pop_front() else {
                    continue;
                };
                (seq, seq, message)
            };
            let bytes = match message.encode(first) {
                Ok(bytes) => bytes,
                Err(error) => {
                    events.push_back(EdgeEvent::RecordRejected {
                        stream: self.stream,
                        seq,
                        error,
                    });
                    let gap = Message::Gap {
                        stream: self.stream,
                        through,
                    };
                    match gap.encode(first) {
                        Ok(bytes) => bytes,
                        // A gap frame is a few bytes; it always fits.
                        Err(_) => return Produce::Idle,
                    }
                }
            };
            self.sent = through;
            self.in_flight_bytes += bytes.len();
            self.in_flight.push_back(InFlight {
                through,
                bytes: bytes.clone(),
            });
            self.rto.arm_if_idle(now);
            return Produce::Frame(bytes);
        }
    }

    fn on_ack(
        &mut self,
        now: Time,
        received: u64,
        durable: u64,
        outbox: &mut impl EdgeOutbox,
        events: &mut VecDeque<EdgeEvent>,
    ) {
        let received = received.max(durable);
        let progressed = received > self.received;
        self.received = self.received.max(received);
        if durable > self.outbox_cursor {
            self.outbox_cursor = durable;
            outbox.acknowledged(self.stream, durable);
        }
        if durable > self.durable {
            self.durable = durable;
            events.push_back(EdgeEvent::Acknowledged {
                stream: self.stream,
                through: durable,
            });
        }
        if self.received > self.sent {
            // The hub took these on an earlier connection; no need to send them again.
            self.sent = self.received;
            while self.prefetch.front().is_some_and(|(s, _)| *s <= self.sent) {
                self.prefetch.pop_front();
            }
        }
        while self
            .in_flight
            .front()
            .is_some_and(|f| f.through <= self.durable)
        {
            if let Some(f) = self.in_flight.pop_front() {
                self.in_flight_bytes -= f.bytes.len();
            }
        }
        if progressed {
            let outstanding = self.in_flight.iter().any(|f| f.through > self.received);
            self.rto.progress(now, outstanding);
        }
    }

    fn on_timeout(&mut self, now: Time, out: &mut VecDeque<Vec<u8>>, stats: &mut Stats) {
        if !self.rto.fired(now) {
            return;
        }
        let mut any = false;
        for f in self.in_flight.iter().filter(|f| f.through > self.received) {
            out.push_back(f.bytes.clone());
            stats.retransmitted += 1;
            any = true;
        }
        if any {
            self.rto.backoff(now);
        } else {
            self.rto.deadline = None;
        }
    }
}

/// The edge side of the sync protocol.
///
/// # Method kinds and call order
///
/// Inputs (`handle_*`) change state; outputs (`poll_*`) drain what the inputs produced.
/// After any input the caller SHOULD drain the outputs: `poll_transmit` until `None`
/// (sending each frame, in order), `poll_event` until `None`, then re-arm a timer for
/// `poll_timeout`.
///
/// 1. [`EdgeSession::new`] once per process lifetime (a restart builds a new one; what
///    must survive a restart lives in the [`EdgeOutbox`]).
/// 2. [`EdgeSession::handle_connected`] when the transport is up. The session queues
///    hello with the outbox's acknowledged cursors and waits for hello-ack.
/// 3. [`EdgeSession::handle_frame`] for every frame received, in arrival order.
/// 4. [`EdgeSession::handle_timeout`] when the instant from `poll_timeout` has passed.
/// 5. [`EdgeSession::handle_outbox_changed`] after writing new records to the outbox, so
///    the session asks for them; it also asks at every heartbeat.
/// 6. [`EdgeSession::handle_disconnected`] when the transport reports the connection gone.
///    When the session itself ends a connection (idle timeout, protocol violation, close
///    from the hub) it reports [`EdgeEvent::ConnectionLost`]; the caller then closes the
///    transport and later calls `handle_connected` again.
///
/// `send_health`, `send_document` and `send_command_result` queue messages for the hub.
/// Between connections nothing is sent and `poll_timeout` is `None`.
pub struct EdgeSession {
    core: Core,
    identity: EdgeIdentity,
    window: Window,
    uploads: [UploadTx; 3],
    hello: Option<Vec<u8>>,
    hello_rto: Rto,
    hello_cursors: Cursors,
    events: VecDeque<EdgeEvent>,
    seen_commands: RecentIds,
    last_config: Option<u64>,
}

impl EdgeSession {
    pub fn new(config: SessionConfig, identity: EdgeIdentity) -> Self {
        let uploads = UploadStream::ALL.map(|s| UploadTx::new(s, &config));
        EdgeSession {
            window: Window {
                frames: config.window_frames,
                bytes: config.window_bytes,
            },
            hello_rto: Rto::new(&config),
            core: Core::new(config),
            identity,
            uploads,
            hello: None,
            hello_cursors: Cursors::default(),
            events: VecDeque::new(),
            seen_commands: RecentIds::new(),
            last_config: None,
        }
    }

    pub fn identity(&self) -> &EdgeIdentity {
        &self.identity
    }

    pub fn state(&self) -> ConnectionState {
        self.core.state
    }

    /// Whether the hub answered hello and has been heard from within the idle timeout.
    pub fn is_connected(&self, now: Time) -> bool {
        self.core.is_connected(now)
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// What the hub has acknowledged as durable on this connection.
    pub fn acknowledged(&self) -> Cursors {
        let mut c = Cursors::default();
        for tx in &self.uploads {
            c.set(tx.stream, tx.durable);
        }
        c
    }

    /// Frames of `stream` sent on this connection and not yet acknowledged as durable:
    /// never more than the window (one frame over it when a single frame is larger).
    pub fn unacknowledged_frames(&self, stream: UploadStream) -> usize {
        self.uploads[stream as usize].in_flight.len()
    }

    fn upload(&mut self, stream: UploadStream) -> &mut UploadTx {
        &mut self.uploads[stream as usize]
    }

    fn lose(&mut self, reason: LostReason) {
        if self.core.end() {
            self.after_end(reason);
        }
    }

    fn violation(&mut self, reason: String) {
        if self.core.close(CloseCode::ProtocolViolation, &reason) {
            self.after_end(LostReason::ProtocolViolation(reason));
        }
    }

    fn after_end(&mut self, reason: LostReason) {
        self.hello = None;
        self.hello_rto.reset();
        for tx in &mut self.uploads {
            tx.resume(tx.durable);
        }
        self.events.push_back(EdgeEvent::ConnectionLost { reason });
    }

    /// The transport is up. Ends the previous connection first if there was one.
    pub fn handle_connected(&mut self, now: Time, outbox: &impl EdgeOutbox) {
        self.lose(LostReason::Replaced);
        self.core.start(now);
        let mut cursors = Cursors::default();
        for s in UploadStream::ALL {
            cursors.set(s, outbox.acknowledged_cursor(s));
        }
        self.hello_cursors = cursors;
        self.window = Window {
            frames: self.core.config.window_frames,
            bytes: self.core.config.window_bytes,
        };
        match message::hello(&self.identity, cursors).encode(0) {
            Ok(bytes) => {
                self.core.out.push_back(bytes.clone());
                self.hello = Some(bytes);
                self.hello_rto.reset();
                self.hello_rto.arm_if_idle(now);
            }
            Err(e) => {
                // Only absurdly long identity strings get here.
                let reason = format!("hello does not fit in a frame: {e}");
                self.core.close(CloseCode::ProtocolViolation, &reason);
                self.after_end(LostReason::ProtocolViolation(reason));
            }
        }
    }

    /// The transport reports the connection gone.
    pub fn handle_disconnected(&mut self, _now: Time) {
        self.lose(LostReason::Transport);
        self.core.out.clear();
    }

    /// New records were written to the outbox.
    pub fn handle_outbox_changed(&mut self) {
        for tx in &mut self.uploads {
            tx.exhausted = false;
        }
    }

    /// One frame from the hub.
    pub fn handle_frame(&mut self, now: Time, bytes: &[u8], outbox: &mut impl EdgeOutbox) {
        if self.core.state == ConnectionState::Disconnected {
            self.core.stats.ignored += 1;
            return;
        }
        self.core.on_receive(now, bytes.len());
        let (seq, message) = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.core.stats.decode_errors += 1;
                let reason = e.to_string();
                if self.core.close(CloseCode::ProtocolViolation, &reason) {
                    self.after_end(LostReason::BadFrame(e));
                }
                return;
            }
        };
        match message {
            Message::HelloAck(ack) => self.on_hello_ack(ack, outbox),
            Message::Heartbeat => {}
            Message::Ack(entries) => self.on_ack(now, &entries, outbox),
            Message::Close(c) => self.lose(LostReason::ClosedByPeer {
                code: c.code,
                reason: c.reason,
            }),
            m @ (Message::ConfigPush(_) | Message::Command(_)) => {
                let window = self.core.config.window_frames;
                let ready = self
                    .core
                    .control_rx
                    .on_frame(seq, m, window, &mut self.core.stats);
                self.core.ack_pending = true;
                for m in ready {
                    self.deliver_control(m);
                }
            }
            m @ Message::Document(_) => {
                let window = self.core.config.window_frames;
                let ready = self
                    .core
                    .docs_rx
                    .on_frame(seq, m, window, &mut self.core.stats);
                self.core.ack_pending = true;
                for m in ready {
                    if let Message::Document(d) = m {
                        self.events.push_back(EdgeEvent::Document(d));
                    }
                }
            }
            other => self.violation(format!("the hub sent a {:?} message", other.kind())),
        }
    }

    fn deliver_control(&mut self, m: Message) {
        match m {
            Message::ConfigPush(c) if self.last_config.is_none_or(|v| c.version > v) => {
                self.last_config = Some(c.version);
                self.events.push_back(EdgeEvent::Config(c));
            }
            Message::Command(c) => {
                // A command resent after a reconnect is recognised by its id.
                let first_time = self.seen_commands.insert(c.id);
                if first_time {
                    self.events.push_back(EdgeEvent::Command(c));
                }
            }
            _ => {}
        }
    }

    fn on_hello_ack(&mut self, ack: HelloAck, outbox: &mut impl EdgeOutbox) {
        if self.core.state != ConnectionState::Handshaking {
            // A duplicate of the hello-ack already taken.
            self.core.stats.duplicates += 1;
            return;
        }
        for s in UploadStream::ALL {
            let hub = ack.durable.get(s);
            let edge = self.hello_cursors.get(s);
            if hub > edge {
                outbox.acknowledged(s, hub);
                self.events.push_back(EdgeEvent::Acknowledged {
                    stream: s,
                    through: hub,
                });
            } else if hub < edge {
                self.events.push_back(EdgeEvent::HubBehind {
                    stream: s,
                    edge_cursor: edge,
                    hub_cursor: hub,
                });
            }
            let tx = self.upload(s);
            tx.resume(hub);
            tx.outbox_cursor = hub.max(edge);
        }
        self.window = Window {
            frames: self.core.config.window_frames.min(ack.window_frames).max(1),
            bytes: self.core.config.window_bytes.min(ack.window_bytes),
        };
        self.hello = None;
        self.hello_rto.reset();
        self.core.state = ConnectionState::Connected;
        self.events.push_back(EdgeEvent::Connected {
            hub_durable: ack.durable,
        });
    }

    fn on_ack(&mut self, now: Time, entries: &[AckEntry], outbox: &mut impl EdgeOutbox) {
        for e in entries {
            let result = match e.stream {
                StreamId::Control => self.core.control_tx.on_ack(now, e.received),
                StreamId::Documents => self.core.docs_tx.on_ack(now, e.received),
                s => {
                    if self.core.state == ConnectionState::Connected
                        && let Some(s) = UploadStream::from_stream_id(s)
                    {
                        let tx = &mut self.uploads[s as usize];
                        tx.on_ack(now, e.received, e.durable, outbox, &mut self.events);
                    }
                    Ok(())
                }
            };
            if let Err(reason) = result {
                self.violation(reason);
                return;
            }
        }
    }

    /// The instant from [`EdgeSession::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.core.state == ConnectionState::Disconnected {
            return;
        }
        if self.core.idle_deadline().is_some_and(|d| now >= d) {
            self.lose(LostReason::IdleTimeout);
            return;
        }
        if self.core.heartbeat(now) {
            // A backstop for a caller that forgets handle_outbox_changed.
            self.handle_outbox_changed();
        }
        if self.core.state == ConnectionState::Handshaking
            && self.hello_rto.fired(now)
            && let Some(hello) = &self.hello
        {
            self.core.out.push_back(hello.clone());
            self.core.stats.retransmitted += 1;
            self.hello_rto.backoff(now);
        }
        self.core.channel_timeouts(now);
        for tx in &mut self.uploads {
            tx.on_timeout(now, &mut self.core.out, &mut self.core.stats);
        }
    }

    /// Queues a health report for the hub; dropped if the connection ends first.
    pub fn send_health(&mut self, health: Health) -> Result<(), SendError> {
        if self.core.state == ConnectionState::Disconnected {
            return Err(SendError::NotConnected);
        }
        let m = Message::Health(health);
        Core::check_size(&m)?;
        self.core.control_tx.queue.push_back(m);
        Ok(())
    }

    /// Queues the answer to a command; kept across reconnects until the hub has it.
    pub fn send_command_result(&mut self, result: CommandResult) -> Result<(), SendError> {
        let m = Message::CommandResult(result);
        Core::check_size(&m)?;
        self.core.control_tx.queue.push_back(m);
        Ok(())
    }

    /// Queues a document sync message for this connection only.
    pub fn send_document(&mut self, message: DocumentMessage) -> Result<(), SendError> {
        if self.core.state == ConnectionState::Disconnected {
            return Err(SendError::NotConnected);
        }
        let m = Message::Document(message);
        Core::check_size(&m)?;
        self.core.docs_tx.queue.push_back(m);
        Ok(())
    }

    /// The next frame to send, in priority order.
    pub fn poll_transmit(&mut self, now: Time, outbox: &mut impl EdgeOutbox) -> Option<Vec<u8>> {
        if let Some(bytes) = self.core.out.pop_front() {
            return Some(self.core.sent(bytes));
        }
        if self.core.state != ConnectionState::Connected {
            return None;
        }
        if self.core.ack_pending {
            self.core.ack_pending = false;
            let entries = vec![
                self.core.control_rx.ack(StreamId::Control),
                self.core.docs_rx.ack(StreamId::Documents),
            ];
            if let Ok(bytes) = Message::Ack(entries).encode(0) {
                return Some(self.core.sent(bytes));
            }
        }
        let w = self.window;
        let read_batch = self.core.config.read_batch;
        // Control, events, documents, rollups, raw: a stream goes only when the ones
        // before it have nothing left to send.
        if let Some(bytes) = Self::channel(&mut self.core.control_tx, now, w) {
            return bytes.map(|b| self.core.sent(b));
        }
        for (i, stream) in UploadStream::ALL.into_iter().enumerate() {
            if i == 1
                && let Some(bytes) = Self::channel(&mut self.core.docs_tx, now, w)
            {
                return bytes.map(|b| self.core.sent(b));
            }
            let tx = &mut self.uploads[stream as usize];
            match tx.produce(now, outbox, w, read_batch, &mut self.events) {
                Produce::Frame(bytes) => return Some(self.core.sent(bytes)),
                Produce::Blocked => return None,
                Produce::Idle => {}
            }
        }
        None
    }

    /// `None` when the channel has nothing to send; `Some(None)` when it has but its
    /// window is full (so lower priorities wait); `Some(Some(frame))` otherwise.
    fn channel(tx: &mut ChannelTx, now: Time, w: Window) -> Option<Option<Vec<u8>>> {
        if !tx.has_unsent() {
            return None;
        }
        Some(tx.next_frame(now, w.frames, w.bytes))
    }

    /// When [`EdgeSession::handle_timeout`] should next be called; `None` between
    /// connections.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.core.state == ConnectionState::Disconnected {
            return None;
        }
        let hello = (self.core.state == ConnectionState::Handshaking)
            .then_some(self.hello_rto.deadline)
            .flatten();
        [self.core.base_timeout(), hello]
            .into_iter()
            .chain(self.uploads.iter().map(|tx| tx.rto.deadline))
            .flatten()
            .min()
    }

    pub fn poll_event(&mut self) -> Option<EdgeEvent> {
        self.events.pop_front()
    }
}
