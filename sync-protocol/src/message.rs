//! The protocol's messages: what each kind carries, on which stream, and its payload
//! layout inside the [`crate::codec`] envelope.
//!
//! This module converts between typed messages and frames. It keeps no session state and
//! does not decide when a message is sent or what it means for the receiver; that is
//! [`crate::session`]. Event bodies, health reports, config and command bodies and
//! document sync messages are opaque bytes here.
//!
//! # Payload layouts (protocol version 1)
//!
//! Strings and byte strings are a varint length followed by the bytes; strings MUST be
//! UTF-8. Every payload MUST be consumed exactly; trailing bytes are an error.
//!
//! ```text
//! kind           stream     seq    payload
//! 0x01 hello     control    0      version u8, edge id, park, building (strings),
//!                                  resume cursors: events, rollups, raw (varints)
//! 0x02 hello-ack control    0      durable cursors: events, rollups, raw (varints),
//!                                  window frames (varint, >= 1), window bytes (varint)
//! 0x03 heartbeat control    0      empty
//! 0x04 ack       control    0      entry count, then per entry: stream u8, received
//!                                  varint, durable varint (durable <= received),
//!                                  streams strictly ascending
//! 0x05 close     control    0      code u8 (0 normal, 1 protocol violation,
//!                                  2 unsupported version, 3 refused, 4 replaced), reason
//! 0x06 health    control    >= 1   body (bytes)
//! 0x07 config    control    >= 1   version varint, body (bytes)
//! 0x08 command   control    >= 1   id varint, body (bytes)
//! 0x09 result    control    >= 1   id varint, ok u8 (0 or 1), body (bytes)
//! 0x10 event     events     >= 1   id (16 bytes, e.g. a UUIDv7), body (bytes)
//! 0x11 rollups   rollups    >= 1   a rollup batch (see `telemetry`)
//! 0x12 raw       raw        >= 1   a raw batch (see `telemetry`)
//! 0x13 gap       1, 2 or 3  >= 1   through varint (>= seq): records seq..=through are gone
//! 0x14 document  documents  >= 1   document id (string), automerge sync message (bytes)
//! ```

use crate::codec::{DecodeError, EncodeError, Frame, Kind, PROTOCOL_VERSION, StreamId};
use crate::telemetry::{RawBatch, RollupBatch};
use crate::wire::{self, Reader};

/// The streams whose records the hub stores durably, in the order they are sent: events
/// before rollups before raw backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UploadStream {
    Events,
    Rollups,
    Raw,
}

impl UploadStream {
    /// In priority order.
    pub const ALL: [UploadStream; 3] = [
        UploadStream::Events,
        UploadStream::Rollups,
        UploadStream::Raw,
    ];

    pub fn stream_id(self) -> StreamId {
        match self {
            UploadStream::Events => StreamId::Events,
            UploadStream::Rollups => StreamId::Rollups,
            UploadStream::Raw => StreamId::Raw,
        }
    }

    pub fn from_stream_id(id: StreamId) -> Option<UploadStream> {
        match id {
            StreamId::Events => Some(UploadStream::Events),
            StreamId::Rollups => Some(UploadStream::Rollups),
            StreamId::Raw => Some(UploadStream::Raw),
            StreamId::Control | StreamId::Documents => None,
        }
    }
}

/// One sequence number per upload stream: "everything up to and including this".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cursors {
    pub events: u64,
    pub rollups: u64,
    pub raw: u64,
}

impl Cursors {
    pub fn get(&self, stream: UploadStream) -> u64 {
        match stream {
            UploadStream::Events => self.events,
            UploadStream::Rollups => self.rollups,
            UploadStream::Raw => self.raw,
        }
    }

    pub fn set(&mut self, stream: UploadStream, seq: u64) {
        match stream {
            UploadStream::Events => self.events = seq,
            UploadStream::Rollups => self.rollups = seq,
            UploadStream::Raw => self.raw = seq,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for s in UploadStream::ALL {
            wire::put_varint(out, self.get(s));
        }
    }

    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Cursors, DecodeError> {
        Ok(Cursors {
            events: r.varint(what)?,
            rollups: r.varint(what)?,
            raw: r.varint(what)?,
        })
    }
}

/// Who an edge is. The hub checks it against the building its certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeIdentity {
    pub edge_id: String,
    pub park: String,
    pub building: String,
}

/// The edge's first message on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u8,
    pub identity: EdgeIdentity,
    /// What the edge believes the hub has acknowledged.
    pub cursors: Cursors,
}

/// The hub's answer to hello: what it holds durably (these cursors win) and how much the
/// edge may have unacknowledged per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    pub durable: Cursors,
    pub window_frames: u32,
    pub window_bytes: u32,
}

/// Acknowledgement of one stream. For upload streams `durable` is what the hub's storage
/// holds and `received` what it has taken in order; elsewhere the two are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEntry {
    pub stream: StreamId,
    pub received: u64,
    pub durable: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CloseCode {
    Normal = 0,
    ProtocolViolation = 1,
    UnsupportedVersion = 2,
    Refused = 3,
    Replaced = 4,
}

impl CloseCode {
    fn from_u8(v: u8) -> Option<CloseCode> {
        Some(match v {
            0 => CloseCode::Normal,
            1 => CloseCode::ProtocolViolation,
            2 => CloseCode::UnsupportedVersion,
            3 => CloseCode::Refused,
            4 => CloseCode::Replaced,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
}

/// The edge's health report; its content belongs to the edge node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub body: Vec<u8>,
}

/// Configuration pushed by the hub. Versions grow; an edge applies only newer ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPush {
    pub version: u64,
    pub body: Vec<u8>,
}

/// A command from the hub, identified so that a resend is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: u64,
    pub body: Vec<u8>,
}

/// The edge's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub id: u64,
    pub ok: bool,
    pub body: Vec<u8>,
}

/// A park-unique event id assigned where the event happened (a UUIDv7 in the edge node).
pub type EventId = [u8; 16];

/// One edge event; the body is opaque to the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: EventId,
    pub body: Vec<u8>,
}

/// One automerge sync message for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentMessage {
    pub doc_id: String,
    pub message: Vec<u8>,
}

/// Every message of the protocol. The stream and the sequence number travel in the
/// envelope; see [`Message::to_frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    HelloAck(HelloAck),
    Heartbeat,
    Ack(Vec<AckEntry>),
    Close(Close),
    Health(Health),
    ConfigPush(ConfigPush),
    Command(Command),
    CommandResult(CommandResult),
    Event(EventRecord),
    Rollups(RollupBatch),
    Raw(RawBatch),
    /// Records `seq..=through` of `stream` no longer exist on the edge (for example raw
    /// telemetry removed by the disk budget before it was uploaded).
    Gap {
        stream: UploadStream,
        through: u64,
    },
    Document(DocumentMessage),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::HelloAck(_) => Kind::HelloAck,
            Message::Heartbeat => Kind::Heartbeat,
            Message::Ack(_) => Kind::Ack,
            Message::Close(_) => Kind::Close,
            Message::Health(_) => Kind::Health,
            Message::ConfigPush(_) => Kind::ConfigPush,
            Message::Command(_) => Kind::Command,
            Message::CommandResult(_) => Kind::CommandResult,
            Message::Event(_) => Kind::Event,
            Message::Rollups(_) => Kind::Rollups,
            Message::Raw(_) => Kind::Raw,
            Message::Gap { .. } => Kind::Gap,
            Message::Document(_) => Kind::Document,
        }
    }

    pub fn stream(&self) -> StreamId {
        match self {
            Message::Event(_) => StreamId::Events,
            Message::Rollups(_) => StreamId::Rollups,
            Message::Raw(_) => StreamId::Raw,
            Message::Gap { stream, .. } => stream.stream_id(),
            Message::Document(_) => StreamId::Documents,
            _ => StreamId::Control,
        }
    }

    /// The frame carrying this message as number `seq` of its stream (0 for unsequenced
    /// kinds, see [`Kind::is_sequenced`]).
    pub fn to_frame(&self, seq: u64) -> Frame {
        let mut p = Vec::new();
        match self {
            Message::Hello(h) => {
                p.push(h.protocol_version);
                wire::put_str(&mut p, &h.identity.edge_id);
                wire::put_str(&mut p, &h.identity.park);
                wire::put_str(&mut p, &h.identity.building);
                h.cursors.encode(&mut p);
            }
            Message::HelloAck(a) => {
                a.durable.encode(&mut p);
                wire::put_varint(&mut p, u64::from(a.window_frames));
                wire::put_varint(&mut p, u64::from(a.window_bytes));
            }
            Message::Heartbeat => {}
            Message::Ack(entries) => {
                wire::put_varint(&mut p, entries.len() as u64);
                for e in entries {
                    p.push(e.stream as u8);
                    wire::put_varint(&mut p, e.received);
                    wire::put_varint(&mut p, e.durable);
                }
            }
            Message::Close(c) => {
                p.push(c.code as u8);
                wire::put_str(&mut p, &c.reason);
            }
            Message::Health(h) => wire::put_bytes(&mut p, &h.body),
            Message::ConfigPush(c) => {
                wire::put_varint(&mut p, c.version);
                wire::put_bytes(&mut p, &c.body);
            }
            Message::Command(c) => {
                wire::put_varint(&mut p, c.id);
                wire::put_bytes(&mut p, &c.body);
            }
            Message::CommandResult(c) => {
                wire::put_varint(&mut p, c.id);
                p.push(u8::from(c.ok));
                wire::put_bytes(&mut p, &c.body);
            }
            Message::Event(e) => {
                p.extend_from_slice(&e.id);
                wire::put_bytes(&mut p, &e.body);
            }
            Message::Rollups(b) => b.encode_into(&mut p),
            Message::Raw(b) => b.encode_into(&mut p),
            Message::Gap { through, .. } => wire::put_varint(&mut p, *through),
            Message::Document(d) => {
                wire::put_str(&mut p, &d.doc_id);
                wire::put_bytes(&mut p, &d.message);
            }
        }
        Frame {
            stream: self.stream(),
            kind: self.kind(),
            seq,
            payload: p,
        }
    }

    /// The message a frame carries. The envelope has already checked the version, that
    /// the kind is allowed on the stream and the sequence number's presence.
    pub fn from_frame(frame: &Frame) -> Result<Message, DecodeError> {
        let mut r = Reader::new(&frame.payload);
        let message = match frame.kind {
            Kind::Hello => {
                let protocol_version = r.u8("hello protocol version")?;
                let identity = EdgeIdentity {
                    edge_id: r.string("hello edge id")?,
                    park: r.string("hello park")?,
                    building: r.string("hello building")?,
                };
                let cursors = Cursors::decode(&mut r, "hello cursors")?;
                Message::Hello(Hello {
                    protocol_version,
                    identity,
                    cursors,
                })
            }
            Kind::HelloAck => {
                let durable = Cursors::decode(&mut r, "hello-ack cursors")?;
                let window_frames = r.varint_u32("hello-ack window frames")?;
                if window_frames == 0 {
                    return Err(DecodeError::Invalid {
                        what: "hello-ack window frames",
                        reason: "must be at least 1",
                    });
                }
                let window_bytes = r.varint_u32("hello-ack window bytes")?;
                Message::HelloAck(HelloAck {
                    durable,
                    window_frames,
                    window_bytes,
                })
            }
            Kind::Heartbeat => Message::Heartbeat,
            Kind::Ack => {
                let n = r.count("ack entry count", 3)?;
                let mut entries: Vec<AckEntry> = Vec::new();
                for _ in 0..n {
                    let id = r.u8("ack stream")?;
                    let stream = StreamId::from_u8(id).ok_or(DecodeError::UnknownStream(id))?;
                    if entries.last().is_some_and(|e| e.stream >= stream) {
                        return Err(DecodeError::Invalid {
                            what: "ack entries",
                            reason: "streams must be strictly ascending",
                        });
                    }
                    let received = r.varint("ack received")?;
                    let durable = r.varint("ack durable")?;
                    if durable > received {
                        return Err(DecodeError::Invalid {
                            what: "ack entry",
                            reason: "durable is beyond received",
                        });
                    }
                    entries.push(AckEntry {
                        stream,
                        received,
                        durable,
                    });
                }
                Message::Ack(entries)
            }
            Kind::Close => {
                let code = r.u8("close code")?;
                let code = CloseCode::from_u8(code).ok_or(DecodeError::Invalid {
                    what: "close code",
                    reason: "unknown code",
                })?;
                Message::Close(Close {
                    code,
                    reason: r.string("close reason")?,
                })
            }
            Kind::Health => Message::Health(Health {
                body: r.len_prefixed("health body")?.to_vec(),
            }),
            Kind::ConfigPush => Message::ConfigPush(ConfigPush {
                version: r.varint("config version")?,
                body: r.len_prefixed("config body")?.to_vec(),
            }),
            Kind::Command => Message::Command(Command {
                id: r.varint("command id")?,
                body: r.len_prefixed("command body")?.to_vec(),
            }),
            Kind::CommandResult => {
                let id = r.varint("command result id")?;
                let ok = match r.u8("command result ok")? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(DecodeError::Invalid {
                            what: "command result ok",
                            reason: "must be 0 or 1",
                        });
                    }
                };
                Message::CommandResult(CommandResult {
                    id,
                    ok,
                    body: r.len_prefixed("command result body")?.to_vec(),
                })
            }
            Kind::Event => {
                let id: EventId = r
                    .bytes(16, "event id")?
                    .try_into()
                    .map_err(|_| DecodeError::Truncated { what: "event id" })?;
                Message::Event(EventRecord {
                    id,
                    body: r.len_prefixed("event body")?.to_vec(),
                })
            }
            Kind::Rollups => return RollupBatch::decode(&frame.payload).map(Message::Rollups),
            Kind::Raw => return RawBatch::decode(&frame.payload).map(Message::Raw),
            Kind::Gap => {
                let through = r.varint("gap end")?;
                if through < frame.seq {
                    return Err(DecodeError::Invalid {
                        what: "gap end",
                        reason: "before its first sequence number",
                    });
                }
                let stream = UploadStream::from_stream_id(frame.stream).ok_or(
                    DecodeError::KindNotOnStream {
                        kind: Kind::Gap,
                        stream: frame.stream,
                    },
                )?;
                Message::Gap { stream, through }
            }
            Kind::Document => Message::Document(DocumentMessage {
                doc_id: r.string("document id")?,
                message: r.len_prefixed("document message")?.to_vec(),
            }),
        };
        r.finish("message payload")?;
        Ok(message)
    }

    /// The bytes of the frame carrying this message as number `seq` of its stream.
    pub fn encode(&self, seq: u64) -> Result<Vec<u8>, EncodeError> {
        self.to_frame(seq).encode()
    }

    /// Decodes one frame and its message: `(seq, message)`.
    pub fn decode(bytes: &[u8]) -> Result<(u64, Message), DecodeError> {
        let frame = Frame::decode(bytes)?;
        let message = Message::from_frame(&frame)?;
        Ok((frame.seq, message))
    }
}

/// The hello an edge sends for `identity` with its resume `cursors`.
pub fn hello(identity: &EdgeIdentity, cursors: Cursors) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        identity: identity.clone(),
        cursors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_has_the_documented_payload() {
        let m = Message::Event(EventRecord {
            id: [7; 16],
            body: b"door 3 opened".to_vec(),
        });
        let bytes = m.encode(42).unwrap();
        assert_eq!(&bytes[..5], &[1, 1, 0x10, 42, 16 + 1 + 13]);
        assert_eq!(&bytes[5..21], &[7; 16]);
        assert_eq!(Message::decode(&bytes).unwrap(), (42, m));
    }

    #[test]
    fn an_ack_with_durable_beyond_received_is_refused() {
        let m = Message::Ack(vec![AckEntry {
            stream: StreamId::Events,
            received: 5,
            durable: 5,
        }]);
        let mut bytes = m.encode(0).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 6;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::Invalid {
                what: "ack entry",
                reason: "durable is beyond received"
            })
        );
    }

    #[test]
    fn a_gap_that_ends_before_it_starts_is_refused() {
        let m = Message::Gap {
            stream: UploadStream::Raw,
            through: 9,
        };
        let bytes = m.encode(10).unwrap();
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::Invalid {
                what: "gap end",
                ..
            })
        ));
        assert!(Message::decode(&m.encode(9).unwrap()).is_ok());
    }

    #[test]
    fn a_payload_with_extra_bytes_is_refused() {
        let mut frame = Message::Heartbeat.to_frame(0);
        frame.payload.push(0);
        let bytes = frame.encode().unwrap();
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }
}
