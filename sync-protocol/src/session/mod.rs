//! The sans-IO session state machines of both sides, in the style of quinn-proto's
//! `Connection`: [`EdgeSession`] and [`HubSession`] take inputs through `handle_*` methods
//! with the current time passed in, and give outputs through `poll_*` methods.
//!
//! The sessions read no clock, open no socket, spawn nothing and store nothing. Storage is
//! the caller's, reached through two traits the caller implements: [`EdgeOutbox`] (the
//! edge's durable records and acknowledgement cursors) and [`HubSink`] (the hub's durable,
//! idempotent store). Transport is the caller's too: it hands received frames to
//! `handle_frame`, sends what `poll_transmit` returns, and reports connects and
//! disconnects.
//!
//! # Guarantees
//!
//! - Upload records (events, rollups, raw) carry the sequence number the outbox gave them.
//!   The hub passes them to its sink in per-stream order, once per arrival, and
//!   acknowledges only what the sink reports durable; duplicates from resends are
//!   recognised by sequence number and not passed on again within a connection (the sink
//!   MUST be idempotent by (edge, stream, seq) for the resends that follow a break).
//! - After any break the edge resumes from the hub's durable cursors, which the hub sends
//!   in reply to hello and which win over the edge's own.
//! - Flow control: at most `window_frames` frames and about `window_bytes` bytes per stream
//!   are sent and not yet durable; a slow hub makes the edge wait, nothing is dropped.
//! - Priority: control, then events, then documents, then rollups, then raw telemetry.
//!   A stream sends only when every stream before it has nothing left to send.
//! - Frames lost, duplicated or reordered by the transport are resent after a
//!   retransmission timeout with exponential backoff, ignored, or put back in order.
//! - Heartbeats flow both ways; a side that hears nothing for `idle_timeout` reports the
//!   connection lost, so a dead link never shows as connected.
//! - Documents and control messages are delivered in order, once per connection. Document
//!   messages not delivered when a connection ends are dropped: the automerge sync
//!   protocol restarts from fresh sync states on the next connection. Config pushes,
//!   commands and command results are kept and resent on the next connection, and the
//!   receiving session recognises a resend by config version or command id.

mod edge;
mod hub;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use thiserror::Error;

pub use edge::{EdgeEvent, EdgeOutbox, EdgeSession, ReadLimit};
pub use hub::{HubEvent, HubSession, HubSink, Record, SinkBusy};

use crate::Time;
use crate::codec::{DecodeError, EncodeError, StreamId};
use crate::message::{AckEntry, Close, CloseCode, Message};

/// Timers and windows. Both sides SHOULD use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How often each side sends a heartbeat (and a repeat of its acknowledgements).
    pub heartbeat_interval: Duration,
    /// Silence after which a side reports the connection lost. MUST exceed
    /// `heartbeat_interval`; three to four intervals tolerate a lost heartbeat or two.
    pub idle_timeout: Duration,
    /// The first retransmission timeout; it doubles while nothing gets through.
    pub initial_rto: Duration,
    pub max_rto: Duration,
    /// Frames sent and not yet durable (upload streams) or delivered (the others), per
    /// stream. The hub advertises its own in hello-ack and the edge uses the smaller.
    pub window_frames: u32,
    /// Bytes sent and not yet durable or delivered, per stream. One frame is always
    /// allowed, however large, so that a big batch cannot stall a stream.
    pub window_bytes: u32,
    /// The most records the edge asks its outbox for at once.
    pub read_batch: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(30),
            window_frames: 128,
            window_bytes: 8 * 1024 * 1024,
            read_batch: 32,
        }
    }
}

/// What a session believes about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// No transport, or the last one ended.
    Disconnected,
    /// The transport is up; the edge waits for hello-ack, the hub for hello.
    Handshaking,
    /// Hello and hello-ack exchanged; data flows.
    Connected,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LostReason {
    #[error("nothing heard from the peer within the idle timeout")]
    IdleTimeout,
    #[error("the transport reported the connection closed")]
    Transport,
    #[error("a new connection replaced this one")]
    Replaced,
    #[error("the peer closed the connection ({code:?}): {reason}")]
    ClosedByPeer { code: CloseCode, reason: String },
    #[error("the peer broke the protocol: {0}")]
    ProtocolViolation(String),
    #[error("undecodable frame from the peer: {0}")]
    BadFrame(DecodeError),
    #[error("refused: {0}")]
    Refused(String),
}

/// The caller tried to send while the session could not.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    #[error("not connected")]
    NotConnected,
    #[error("message too large: {0}")]
    TooLarge(EncodeError),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Frames sent again after a retransmission timeout.
    pub retransmitted: u64,
    /// Frames received that had been received before.
    pub duplicates: u64,
    /// Frames received too far ahead of the next expected one, dropped (they are resent).
    pub out_of_window: u64,
    /// Undecodable frames (each ends its connection).
    pub decode_errors: u64,
    /// Frames received while no connection or handshake allowed them, ignored.
    pub ignored: u64,
    /// Records the hub's sink refused as busy (they are resent).
    pub sink_busy: u64,
}

/// A retransmission timer with exponential backoff.
#[derive(Debug, Clone)]
struct Rto {
    base: Duration,
    max: Duration,
    current: Duration,
    deadline: Option<Time>,
}

impl Rto {
    fn new(config: &SessionConfig) -> Self {
        Rto {
            base: config.initial_rto,
            max: config.max_rto.max(config.initial_rto),
            current: config.initial_rto,
            deadline: None,
        }
    }

    fn reset(&mut self) {
        self.current = self.base;
        self.deadline = None;
    }

    fn arm_if_idle(&mut self, now: Time) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.current);
        }
    }

    /// The peer took something in: start over from the base timeout.
    fn progress(&mut self, now: Time, outstanding: bool) {
        self.current = self.base;
        self.deadline = outstanding.then(|| now + self.current);
    }

    fn fired(&self, now: Time) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    fn backoff(&mut self, now: Time) {
        self.current = self.current.saturating_mul(2).min(self.max);
        self.deadline = Some(now + self.current);
    }
}

struct Sent {
    seq: u64,
    message: Message,
    bytes: Vec<u8>,
}

/// The sending half of a connection-scoped reliable channel (control and documents).
struct ChannelTx {
    stream: StreamId,
    next_seq: u64,
    queue: VecDeque<Message>,
    in_flight: VecDeque<Sent>,
    in_flight_bytes: usize,
    peer_received: u64,
    rto: Rto,
}

impl ChannelTx {
    fn new(stream: StreamId, config: &SessionConfig) -> Self {
        ChannelTx {
            stream,
            next_seq: 1,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            peer_received: 0,
            rto: Rto::new(config),
        }
    }

    /// Ends the connection: what `keep` says survives is queued again, in order.
    fn reset(&mut self, keep: impl Fn(&Message) -> bool) {
        let mut queue: VecDeque<Message> = self
            .in_flight
            .drain(..)
            .map(|s| s.message)
            .filter(&keep)
            .collect();
        queue.extend(self.queue.drain(..).filter(&keep));
        self.queue = queue;
        self.next_seq = 1;
        self.in_flight_bytes = 0;
        self.peer_received = 0;
        self.rto.reset();
    }

    fn has_unsent(&self) -> bool {
        !self.queue.is_empty()
    }

    fn window_open(&self, frames: u32, bytes: u32) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < frames as usize && self.in_flight_bytes < bytes as usize)
    }

    /// The next new frame, if the window allows. Messages were size-checked when queued.
    fn next_frame(&mut self, now: Time, frames: u32, bytes: u32) -> Option<Vec<u8>> {
        if !self.window_open(frames, bytes) {
            return None;
        }
        let message = self.queue.pop_front()?;
        let seq = self.next_seq;
        let encoded = message.encode(seq).ok()?;
        self.next_seq += 1;
        self.in_flight_bytes += encoded.len();
        self.in_flight.push_back(Sent {
            seq,
            message,
            bytes: encoded.clone(),
        });
        self.rto.arm_if_idle(now);
        Some(encoded)
    }

    /// The peer has taken everything up to `received`. An acknowledgement of something
    /// never sent is a protocol violation.
    fn on_ack(&mut self, now: Time, received: u64) -> Result<(), String> {
        if received >= self.next_seq {
            return Err(format!(
                "acknowledged {received} on the {:?} stream, of which only {} were sent",
                self.stream,
                self.next_seq - 1
            ));
        }
        if received <= self.peer_received {
            return Ok(());
        }
        self.peer_received = received;
        while self.in_flight.front().is_some_and(|s| s.seq <= received) {
            if let Some(s) = self.in_flight.pop_front() {
                self.in_flight_bytes -= s.bytes.len();
            }
        }
        self.rto.progress(now, !self.in_flight.is_empty());
        Ok(())
    }

    fn on_timeout(&mut self, now: Time, out: &mut VecDeque<Vec<u8>>, stats: &mut Stats) {
        if !self.rto.fired(now) {
            return;
        }
        for s in &self.in_flight {
            out.push_back(s.bytes.clone());
            stats.retransmitted += 1;
        }
        if self.in_flight.is_empty() {
            self.rto.deadline = None;
        } else {
            self.rto.backoff(now);
        }
    }
}

/// The receiving half of a connection-scoped reliable channel.
#[derive(Default)]
struct ChannelRx {
    delivered: u64,
    pending: BTreeMap<u64, Message>,
}

impl ChannelRx {
    fn reset(&mut self) {
        self.delivered = 0;
        self.pending.clear();
    }

    /// Takes frame `seq` and returns what can now be delivered in order.
    fn on_frame(
        &mut self,
        seq: u64,
        message: Message,
        window_frames: u32,
        stats: &mut Stats,
    ) -> Vec<Message> {
        if seq <= self.delivered || self.pending.contains_key(&seq) {
            stats.duplicates += 1;
            return Vec::new();
        }
        if seq - self.delivered > u64::from(window_frames) {
            stats.out_of_window += 1;
            return Vec::new();
        }
        self.pending.insert(seq, message);
        let mut ready = Vec::new();
        while let Some(m) = self.pending.remove(&self.delivered.saturating_add(1)) {
            self.delivered = self.delivered.saturating_add(1);
            ready.push(m);
        }
        ready
    }

    fn ack(&self, stream: StreamId) -> AckEntry {
        AckEntry {
            stream,
            received: self.delivered,
            durable: self.delivered,
        }
    }
}

/// A bounded memory of recently seen ids, to recognise resent commands.
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentIds {
    const CAPACITY: usize = 1024;

    fn new() -> Self {
        RecentIds {
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Whether `id` is new; remembers it.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// What both sides keep about a connection: state, liveness, heartbeats, the frames ready
/// to go, the control and document channels, counters.
struct Core {
    config: SessionConfig,
    state: ConnectionState,
    last_rx: Time,
    next_heartbeat: Option<Time>,
    out: VecDeque<Vec<u8>>,
    ack_pending: bool,
    stats: Stats,
    control_tx: ChannelTx,
    control_rx: ChannelRx,
    docs_tx: ChannelTx,
    docs_rx: ChannelRx,
}

/// Config pushes, commands and command results outlive a connection; the rest do not.
fn survives_disconnect(message: &Message) -> bool {
    matches!(
        message,
        Message::ConfigPush(_) | Message::Command(_) | Message::CommandResult(_)
    )
}

impl Core {
    fn new(config: SessionConfig) -> Self {
        Core {
            control_tx: ChannelTx::new(StreamId::Control, &config),
            docs_tx: ChannelTx::new(StreamId::Documents, &config),
            control_rx: ChannelRx::default(),
            docs_rx: ChannelRx::default(),
            config,
            state: ConnectionState::Disconnected,
            last_rx: Time::ZERO,
            next_heartbeat: None,
            out: VecDeque::new(),
            ack_pending: false,
            stats: Stats::default(),
        }
    }

    /// Forgets everything that belonged to the last connection.
    fn reset_connection(&mut self) {
        self.out.clear();
        self.ack_pending = false;
        self.next_heartbeat = None;
        self.control_tx.reset(survives_disconnect);
        self.docs_tx.reset(|_| false);
        self.control_rx.reset();
        self.docs_rx.reset();
    }

    fn start(&mut self, now: Time) {
        self.reset_connection();
        self.state = ConnectionState::Handshaking;
        self.last_rx = now;
        self.next_heartbeat = Some(now + self.config.heartbeat_interval);
    }

    /// Ends the connection; returns whether it was up (so the caller reports it once).
    fn end(&mut self) -> bool {
        if self.state == ConnectionState::Disconnected {
            return false;
        }
        self.reset_connection();
        self.state = ConnectionState::Disconnected;
        true
    }

    /// Ends the connection after queueing a close frame for the peer.
    fn close(&mut self, code: CloseCode, reason: &str) -> bool {
        let was_up = self.end();
        let close = Message::Close(Close {
            code,
            reason: reason.to_string(),
        });
        if let Ok(bytes) = close.encode(0) {
            self.out.push_back(bytes);
        }
        was_up
    }

    fn is_connected(&self, now: Time) -> bool {
        self.state == ConnectionState::Connected && now < self.last_rx + self.config.idle_timeout
    }

    fn idle_deadline(&self) -> Option<Time> {
        (self.state != ConnectionState::Disconnected)
            .then(|| self.last_rx + self.config.idle_timeout)
    }

    fn on_receive(&mut self, now: Time, len: usize) {
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        self.last_rx = self.last_rx.max(now);
    }

    fn sent(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        bytes
    }

    /// Queues a heartbeat when one is due; returns whether it did.
    fn heartbeat(&mut self, now: Time) -> bool {
        match self.next_heartbeat {
            Some(at) if now >= at => {
                if let Ok(bytes) = Message::Heartbeat.encode(0) {
                    self.out.push_back(bytes);
                }
                self.ack_pending = self.state == ConnectionState::Connected;
                self.next_heartbeat = Some(now + self.config.heartbeat_interval);
                true
            }
            _ => false,
        }
    }

    fn channel_timeouts(&mut self, now: Time) {
        self.control_tx
            .on_timeout(now, &mut self.out, &mut self.stats);
        self.docs_tx.on_timeout(now, &mut self.out, &mut self.stats);
    }

    fn base_timeout(&self) -> Option<Time> {
        [
            self.idle_deadline(),
            self.next_heartbeat,
            self.control_tx.rto.deadline,
            self.docs_tx.rto.deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Checks a message against the size limit before it is queued on a channel.
    fn check_size(message: &Message) -> Result<(), SendError> {
        message
            .encode(u64::MAX)
            .map(|_| ())
            .map_err(SendError::TooLarge)
    }
}

/// The window actually in force: the smaller of ours and the peer's.
#[derive(Debug, Clone, Copy)]
struct Window {
    frames: u32,
    bytes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Cursors, EdgeIdentity, EventRecord, HelloAck, UploadStream};
    use crate::telemetry::{RawBatch, RollupBatch};

    #[derive(Default)]
    struct Outbox {
        events: Vec<EventRecord>,
        acked: u64,
    }

    impl EdgeOutbox for Outbox {
        fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)> {
            (after + 1..=self.events.len() as u64)
                .take(limit.max_records)
                .map(|s| (s, self.events[s as usize - 1].clone()))
                .collect()
        }
        fn rollups_after(&mut self, _: u64, _: ReadLimit) -> Vec<(u64, RollupBatch)> {
            Vec::new()
        }
        fn raw_after(&mut self, _: u64, _: ReadLimit) -> Vec<(u64, RawBatch)> {
            Vec::new()
        }
        fn last_written(&self, stream: UploadStream) -> u64 {
            match stream {
                UploadStream::Events => self.events.len() as u64,
                _ => 0,
            }
        }
        fn acknowledged_cursor(&self, _: UploadStream) -> u64 {
            self.acked
        }
        fn acknowledged(&mut self, _: UploadStream, through: u64) {
            self.acked = through;
        }
    }

    fn edge() -> (EdgeSession, Outbox) {
        let identity = EdgeIdentity {
            edge_id: "e".into(),
            park: "p".into(),
            building: "b".into(),
        };
        let outbox = Outbox {
            events: (0..5)
                .map(|i| EventRecord {
                    id: [i; 16],
                    body: vec![i],
                })
                .collect(),
            acked: 0,
        };
        (EdgeSession::new(SessionConfig::default(), identity), outbox)
    }

    fn hello_ack(window_frames: u32) -> Vec<u8> {
        Message::HelloAck(HelloAck {
            durable: Cursors::default(),
            window_frames,
            window_bytes: 1 << 20,
        })
        .encode(0)
        .unwrap()
    }

    fn kind(bytes: &[u8]) -> Message {
        Message::decode(bytes).unwrap().1
    }

    const T0: Time = Time::from_micros(1_000_000);

    #[test]
    fn a_session_between_connections_sends_nothing_and_wants_no_timer() {
        let (mut edge, mut outbox) = edge();
        assert_eq!(edge.poll_timeout(), None);
        assert_eq!(edge.poll_transmit(T0, &mut outbox), None);
        edge.handle_frame(T0, &Message::Heartbeat.encode(0).unwrap(), &mut outbox);
        assert_eq!(edge.stats().ignored, 1);
        assert_eq!(edge.poll_event(), None);
        let hub = HubSession::new(SessionConfig::default());
        assert_eq!(hub.poll_timeout(), None);
    }

    #[test]
    fn the_edge_sends_hello_first_and_data_only_after_hello_ack() {
        let (mut edge, mut outbox) = edge();
        edge.handle_connected(T0, &outbox);
        assert!(matches!(
            kind(&edge.poll_transmit(T0, &mut outbox).unwrap()),
            Message::Hello(_)
        ));
        assert_eq!(edge.poll_transmit(T0, &mut outbox), None);
        assert_eq!(edge.state(), ConnectionState::Handshaking);
        assert!(!edge.is_connected(T0));
        edge.handle_frame(T0, &hello_ack(128), &mut outbox);
        assert!(edge.is_connected(T0));
        assert!(matches!(
            edge.poll_event(),
            Some(EdgeEvent::Connected { .. })
        ));
        let first = edge.poll_transmit(T0, &mut outbox).unwrap();
        assert_eq!(Message::decode(&first).unwrap().0, 1);
        assert!(matches!(kind(&first), Message::Event(_)));
    }

    #[test]
    fn the_window_the_hub_advertises_caps_what_the_edge_has_unacknowledged() {
        let (mut edge, mut outbox) = edge();
        edge.handle_connected(T0, &outbox);
        edge.poll_transmit(T0, &mut outbox);
        edge.handle_frame(T0, &hello_ack(2), &mut outbox);
        let mut sent = 0;
        while edge.poll_transmit(T0, &mut outbox).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 2);
        assert_eq!(edge.unacknowledged_frames(UploadStream::Events), 2);
        let ack = Message::Ack(vec![AckEntry {
            stream: StreamId::Events,
            received: 2,
            durable: 1,
        }])
        .encode(0)
        .unwrap();
        edge.handle_frame(T0, &ack, &mut outbox);
        assert_eq!(outbox.acked, 1);
        assert_eq!(edge.unacknowledged_frames(UploadStream::Events), 1);
        assert!(edge.poll_transmit(T0, &mut outbox).is_some());
        assert_eq!(edge.poll_transmit(T0, &mut outbox), None);
    }

    #[test]
    fn an_acknowledgement_of_a_control_message_never_sent_ends_the_connection() {
        let (mut edge, mut outbox) = edge();
        edge.handle_connected(T0, &outbox);
        edge.poll_transmit(T0, &mut outbox);
        edge.handle_frame(T0, &hello_ack(8), &mut outbox);
        let ack = Message::Ack(vec![AckEntry {
            stream: StreamId::Control,
            received: 5,
            durable: 5,
        }])
        .encode(0)
        .unwrap();
        edge.handle_frame(T0, &ack, &mut outbox);
        assert_eq!(edge.state(), ConnectionState::Disconnected);
        let events: Vec<EdgeEvent> = std::iter::from_fn(|| edge.poll_event()).collect();
        assert!(matches!(
            events.last(),
            Some(EdgeEvent::ConnectionLost {
                reason: LostReason::ProtocolViolation(_)
            })
        ));
        let close = edge.poll_transmit(T0, &mut outbox).unwrap();
        assert!(
            matches!(kind(&close), Message::Close(c) if c.code == CloseCode::ProtocolViolation)
        );
        assert_eq!(edge.poll_timeout(), None);
    }

    #[test]
    fn the_hub_ignores_uploads_before_hello() {
        struct NoSink;
        impl HubSink for NoSink {
            fn accept(
                &mut self,
                _: &EdgeIdentity,
                _: UploadStream,
                _: u64,
                _: Record<'_>,
            ) -> Result<(), SinkBusy> {
                panic!("nothing may reach the sink before hello");
            }
            fn durable_cursor(&self, _: &EdgeIdentity, _: UploadStream) -> u64 {
                0
            }
        }
        let mut hub = HubSession::new(SessionConfig::default());
        hub.handle_connected(T0);
        let event = Message::Event(EventRecord {
            id: [0; 16],
            body: Vec::new(),
        });
        hub.handle_frame(T0, &event.encode(1).unwrap(), &mut NoSink);
        assert_eq!(hub.stats().ignored, 1);
        assert_eq!(hub.poll_transmit(T0), None);
        assert_eq!(hub.state(), ConnectionState::Handshaking);
    }

    #[test]
    fn an_edge_that_stays_silent_is_reported_lost_at_the_idle_timeout() {
        let config = SessionConfig::default();
        let mut hub = HubSession::new(config.clone());
        hub.handle_connected(T0);
        let deadline = hub.poll_timeout().unwrap();
        assert_eq!(deadline, T0 + config.idle_timeout);
        hub.handle_timeout(deadline);
        assert_eq!(
            hub.poll_event(),
            Some(HubEvent::ConnectionLost {
                reason: LostReason::IdleTimeout
            })
        );
        assert_eq!(hub.poll_timeout(), None);
    }
}
