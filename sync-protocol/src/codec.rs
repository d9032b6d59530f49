//! The frame envelope: how every message travels, with its protocol version, stream,
//! kind, per-stream sequence number and a length-prefixed payload, and the errors that
//! decoding reports.
//!
//! This module frames and unframes bytes; it does not interpret payloads (that is
//! [`crate::message`] and [`crate::telemetry`]) and it keeps no state. Decoding never
//! panics on any input: malformed bytes give a [`DecodeError`] that says what was wrong.
//!
//! # Byte layout (protocol version 1)
//!
//! ```text
//! offset  size    field
//! 0       1       version   u8, MUST be 1
//! 1       1       stream    u8: 0 control, 1 events, 2 rollups, 3 raw, 4 documents
//! 2       1       kind      u8, see `Kind`; each kind is allowed on one stream (gap on 1-3)
//! 3       1..10   seq       LEB128 u64: per-stream sequence number (0 for unsequenced
//!                           control messages)
//! ..      1..10   len       LEB128 u64: payload length in bytes
//! ..      len     payload   the message body, layout per kind (see `message`)
//! ```
//!
//! Varints are unsigned LEB128, least significant group first, and MUST be in their
//! shortest form: a decoder rejects an encoding with a redundant trailing zero group
//! (`Overlong`) or more than 64 bits (`Overflow`). A whole frame, header included, MUST NOT
//! exceed [`MAX_FRAME_LEN`] bytes; a decoder rejects a larger length as soon as it has read
//! the length field, before waiting for the payload. Frames are sent back to back on a
//! byte stream; [`peek_frame_len`] tells a reader where the next frame ends.

use thiserror::Error;

use crate::wire::{self, MAX_VARINT_LEN, Reader};

/// The protocol version this crate speaks, carried in the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest frame, header included: 4 MiB.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// The longest possible header: version, stream, kind and two maximal varints.
pub const MAX_HEADER_LEN: usize = 3 + 2 * MAX_VARINT_LEN;

/// What went wrong while decoding bytes from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("unsupported protocol version {found}, this side speaks {supported}")]
    BadVersion { found: u8, supported: u8 },
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("unknown stream id {0}")]
    UnknownStream(u8),
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("message kind {kind:?} is not allowed on the {stream:?} stream")]
    KindNotOnStream { kind: Kind, stream: StreamId },
    #[error("bad varint in {what}: {problem}")]
    BadVarint {
        what: &'static str,
        problem: VarintProblem,
    },
    #[error("{what} is not valid utf-8")]
    BadUtf8 { what: &'static str },
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("invalid {what}: {reason}")]
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
}

/// Why a varint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintProblem {
    #[error("more than 64 bits")]
    Overflow,
    #[error("not in its shortest form")]
    Overlong,
}

/// What went wrong while encoding a message of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
}

/// The logical streams of a connection. A transport MAY map several of them onto one
/// QUIC stream; ordering and reliability come from the sequence numbers, not the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum StreamId {
    /// Hello, heartbeats, acknowledgements, close, health, config pushes and commands.
    Control = 0,
    /// Edge events, ordered, stored exactly once.
    Events = 1,
    /// Telemetry rollup batches, stored exactly once; sent before raw backfill.
    Rollups = 2,
    /// Raw telemetry batches, stored exactly once.
    Raw = 3,
    /// Automerge sync messages per document, both ways.
    Documents = 4,
}

impl StreamId {
    pub const ALL: [StreamId; 5] = [
        StreamId::Control,
        StreamId::Events,
        StreamId::Rollups,
        StreamId::Raw,
        StreamId::Documents,
    ];

    pub fn from_u8(v: u8) -> Option<StreamId> {
        StreamId::ALL.get(usize::from(v)).copied()
    }
}

/// The kind of a message; the first byte of its payload layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    HelloAck = 0x02,
    Heartbeat = 0x03,
    Ack = 0x04,
    Close = 0x05,
    Health = 0x06,
    ConfigPush = 0x07,
    Command = 0x08,
    CommandResult = 0x09,
    Event = 0x10,
    Rollups = 0x11,
    Raw = 0x12,
    Gap = 0x13,
    Document = 0x14,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0x01 => Kind::Hello,
            0x02 => Kind::HelloAck,
            0x03 => Kind::Heartbeat,
            0x04 => Kind::Ack,
            0x05 => Kind::Close,
            0x06 => Kind::Health,
            0x07 => Kind::ConfigPush,
            0x08 => Kind::Command,
            0x09 => Kind::CommandResult,
            0x10 => Kind::Event,
            0x11 => Kind::Rollups,
            0x12 => Kind::Raw,
            0x13 => Kind::Gap,
            0x14 => Kind::Document,
            _ => return None,
        })
    }

    /// Whether a frame of this kind may travel on `stream`.
    pub fn allowed_on(self, stream: StreamId) -> bool {
        match self {
            Kind::Hello
            | Kind::HelloAck
            | Kind::Heartbeat
            | Kind::Ack
            | Kind::Close
            | Kind::Health
            | Kind::ConfigPush
            | Kind::Command
            | Kind::CommandResult => stream == StreamId::Control,
            Kind::Event => stream == StreamId::Events,
            Kind::Rollups => stream == StreamId::Rollups,
            Kind::Raw => stream == StreamId::Raw,
            Kind::Gap => matches!(stream, StreamId::Events | StreamId::Rollups | StreamId::Raw),
            Kind::Document => stream == StreamId::Documents,
        }
    }

    /// Whether frames of this kind carry a sequence number (at least 1) or none (0).
    pub fn is_sequenced(self) -> bool {
        !matches!(
            self,
            Kind::Hello | Kind::HelloAck | Kind::Heartbeat | Kind::Ack | Kind::Close
        )
    }
}

/// One frame: the envelope around a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: StreamId,
    pub kind: Kind,
    pub seq: u64,
    pub payload: Vec<u8>,
}

struct Header {
    stream: StreamId,
    kind: Kind,
    seq: u64,
    header_len: usize,
    payload_len: usize,
}

/// Parses a header from the start of `buf`; `Ok(None)` when `buf` ends inside it.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::BadVersion {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let Some(&stream) = buf.get(1) else {
        return Ok(None);
    };
    let stream = StreamId::from_u8(stream).ok_or(DecodeError::UnknownStream(stream))?;
    let Some(&kind) = buf.get(2) else {
        return Ok(None);
    };
    let kind = Kind::from_u8(kind).ok_or(DecodeError::UnknownKind(kind))?;
    if !kind.allowed_on(stream) {
        return Err(DecodeError::KindNotOnStream { kind, stream });
    }
    let Some((seq, seq_len)) = wire::decode_varint(&buf[3..], "frame sequence number")? else {
        return Ok(None);
    };
    if kind.is_sequenced() != (seq != 0) {
        return Err(DecodeError::Invalid {
            what: "frame sequence number",
            reason: "must be 0 for unsequenced kinds and at least 1 for the others",
        });
    }
    let at = 3 + seq_len;
    let Some((len, len_len)) = wire::decode_varint(&buf[at..], "frame length")? else {
        return Ok(None);
    };
    let header_len = at + len_len;
    let total = (header_len as u64).saturating_add(len);
    if total > MAX_FRAME_LEN as u64 {
        return Err(DecodeError::TooLarge {
            len: total,
            limit: MAX_FRAME_LEN as u64,
        });
    }
    Ok(Some(Header {
        stream,
        kind,
        seq,
        header_len,
        payload_len: len as usize,
    }))
}

/// The total length of the frame at the start of `buf`, or `Ok(None)` when more bytes are
/// needed to know it. Errors as soon as the header is known to be bad or too large.
pub fn peek_frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    Ok(parse_header(buf)?.map(|h| h.header_len + h.payload_len))
}

impl Frame {
    /// Appends this frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let header_len =
            3 + wire::varint_len(self.seq) + wire::varint_len(self.payload.len() as u64);
        let len = header_len + self.payload.len();
        if len > MAX_FRAME_LEN {
            return Err(EncodeError::TooLarge {
                len,
                limit: MAX_FRAME_LEN,
            });
        }
        out.reserve(len);
        out.push(PROTOCOL_VERSION);
        out.push(self.stream as u8);
        out.push(self.kind as u8);
        wire::put_varint(out, self.seq);
        wire::put_varint(out, self.payload.len() as u64);
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one frame; bytes after it are an error.
    pub fn decode(buf: &[u8]) -> Result<Frame, DecodeError> {
        let (frame, used) = Frame::decode_prefix(buf)?;
        if used != buf.len() {
            return Err(DecodeError::TrailingBytes {
                what: "frame",
                count: buf.len() - used,
            });
        }
        Ok(frame)
    }

    /// Decodes the frame at the start of `buf` and returns it with the bytes it took.
    pub fn decode_prefix(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        let header = parse_header(buf)?.ok_or(DecodeError::Truncated {
            what: "frame header",
        })?;
        let mut reader = Reader::new(&buf[header.header_len..]);
        let payload = reader.bytes(header.payload_len, "frame payload")?.to_vec();
        Ok((
            Frame {
                stream: header.stream,
                kind: header.kind,
                seq: header.seq,
                payload,
            },
            header.header_len + header.payload_len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            stream: StreamId::Events,
            kind: Kind::Event,
            seq: 300,
            payload: b"hello".to_vec(),
        }
    }

    #[test]
    fn a_frame_has_the_documented_layout() {
        let bytes = frame().encode().unwrap();
        assert_eq!(
            bytes,
            [1, 1, 0x10, 0xac, 0x02, 5, b'h', b'e', b'l', b'l', b'o']
        );
        assert_eq!(Frame::decode(&bytes).unwrap(), frame());
        assert_eq!(peek_frame_len(&bytes).unwrap(), Some(bytes.len()));
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_truncated() {
        let bytes = frame().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(matches!(
                Frame::decode(&bytes[..cut]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn a_frame_of_another_version_is_refused_by_its_first_byte() {
        let mut bytes = frame().encode().unwrap();
        bytes[0] = 2;
        assert_eq!(
            Frame::decode(&bytes),
            Err(DecodeError::BadVersion {
                found: 2,
                supported: 1
            })
        );
        assert!(peek_frame_len(&bytes[..1]).is_err());
    }

    #[test]
    fn a_length_beyond_the_limit_is_refused_before_the_payload_arrives() {
        let mut bytes = vec![1, 1, 0x10, 1];
        wire::put_varint(&mut bytes, MAX_FRAME_LEN as u64);
        assert!(matches!(
            peek_frame_len(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
        let big = Frame {
            payload: vec![0; MAX_FRAME_LEN],
            ..frame()
        };
        assert!(matches!(big.encode(), Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn a_kind_on_the_wrong_stream_is_refused() {
        let bytes = [1, 0, 0x10, 1, 0];
        assert_eq!(
            Frame::decode(&bytes),
            Err(DecodeError::KindNotOnStream {
                kind: Kind::Event,
                stream: StreamId::Control
            })
        );
    }

    #[test]
    fn sequence_numbers_follow_the_kind() {
        assert!(Frame::decode(&[1, 0, 0x03, 0, 0]).is_ok());
        assert!(matches!(
            Frame::decode(&[1, 0, 0x03, 1, 0]),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            Frame::decode(&[1, 1, 0x10, 0, 0]),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn frames_back_to_back_are_split_by_their_lengths() {
        let mut bytes = frame().encode().unwrap();
        let first = bytes.len();
        bytes.extend(frame().encode().unwrap());
        let (f, used) = Frame::decode_prefix(&bytes).unwrap();
        assert_eq!((f, used), (frame(), first));
        assert!(matches!(
            Frame::decode(&bytes),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }
}
