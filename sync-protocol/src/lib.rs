//! The edge-to-hub sync protocol: the wire format, the messages of each stream, the
//! compact telemetry encodings, and the sans-IO session state machines of both sides.
//!
//! This crate does no IO, reads no clock and spawns nothing, in the style of quinn-proto:
//! time and received bytes are arguments of `handle_*` methods, frames to send and events
//! come out of `poll_*` methods, and storage is reached through traits the caller
//! implements ([`EdgeOutbox`], [`HubSink`]). It stores nothing and knows no business
//! rules: event bodies, config, commands and document sync messages are opaque bytes. The
//! QUIC transport that carries the frames is an optional module behind the `transport`
//! feature; the binaries that own a runtime turn it on.
//!
//! - [`codec`]: the frame envelope (version, stream, kind, sequence number, payload) and
//!   its limits. The byte layout is also in `docs/sync-wire-format.md`.
//! - [`message`]: the messages and their payload layouts.
//! - [`docguard`]: the bound on what an automerge sync message (a document message's
//!   payload) makes its receiver build, checked before automerge decodes it.
//! - [`telemetry`]: columnar raw and rollup batches.
//! - [`session`]: [`EdgeSession`] and [`HubSession`].
//! - `transport` (feature `transport`): QUIC with mutual TLS, enrollment, and frames over a
//!   QUIC stream. The only part of the crate that does IO; the rest never depends on it.

pub mod codec;
pub mod docguard;
pub mod message;
pub mod session;
pub mod telemetry;
mod time;
#[cfg(feature = "transport")]
pub mod transport;
mod wire;

pub use codec::{DecodeError, EncodeError, Frame, Kind, MAX_FRAME_LEN, PROTOCOL_VERSION, StreamId};
pub use message::{
    AckEntry, Close, CloseCode, Command, CommandResult, ConfigPush, Cursors, DocumentMessage,
    EdgeIdentity, EventId, EventRecord, Health, Hello, HelloAck, Message, UploadStream,
};
pub use session::{
    ConnectionState, EdgeEvent, EdgeOutbox, EdgeSession, HubEvent, HubSession, HubSink, LostReason,
    ReadLimit, Record, SendError, SessionConfig, SinkBusy, Stats,
};
pub use telemetry::{Quality, RawBatch, RawSample, RawSeries, RollupBatch, RollupRow, Value};
pub use time::Time;
