//! Frames over a QUIC bidirectional stream: [`FrameChannel`] sends whole frames and
//! receives them one at a time, and [`FrameReader`] cuts any byte stream into frames with
//! the protocol's size limit.
//!
//! It does not decode payloads or interpret messages: a frame comes out as the bytes that
//! [`crate::EdgeSession::handle_frame`] and [`crate::HubSession::handle_frame`] take.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::{CloseCode, TransportError, describe_connection_error};
use crate::MAX_FRAME_LEN;
use crate::codec::peek_frame_len;

/// How much a reader asks the stream for at once.
const READ_CHUNK: usize = 64 * 1024;

/// Cuts a byte stream into frames. It never holds more than one frame of at most
/// [`MAX_FRAME_LEN`] bytes plus one read's worth of the next.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next whole frame; `Ok(None)` when the stream ended cleanly between frames.
    ///
    /// A header that is malformed or announces more than [`MAX_FRAME_LEN`] bytes is an
    /// error as soon as it is read, before the payload. Cancel-safe: if the future is
    /// dropped before it completes, no bytes are lost, so it can sit in a `select!`.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        loop {
            if let Some(len) = peek_frame_len(&self.buf).map_err(TransportError::Frame)?
                && self.buf.len() >= len
            {
                let rest = self.buf.split_off(len);
                let frame = std::mem::replace(&mut self.buf, rest);
                return Ok(Some(frame));
            }
            let start = self.buf.len();
            // The cap is a backstop: `peek_frame_len` already refused longer frames.
            if start >= MAX_FRAME_LEN + READ_CHUNK {
                return Err(TransportError::Frame(crate::DecodeError::TooLarge {
                    len: start as u64,
                    limit: MAX_FRAME_LEN as u64,
                }));
            }
            // `read_buf` fills spare capacity and only grows the length by what it read, so
            // a dropped future loses nothing.
            self.buf.reserve(READ_CHUNK);
            match self.inner.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(TransportError::Frame(crate::DecodeError::Truncated {
                        what: "frame at the end of the stream",
                    }));
                }
                Ok(_) => {}
                Err(e) => return Err(TransportError::StreamIo(e.to_string())),
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// One sync connection's frame stream, on either side.
///
/// Dropping it closes the connection.
pub struct FrameChannel {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: FrameReader<quinn::RecvStream>,
    /// The edge's own endpoint, kept alive as long as its only connection.
    _endpoint: Option<quinn::Endpoint>,
}

impl std::fmt::Debug for FrameChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameChannel")
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl FrameChannel {
    pub(crate) fn new(
        connection: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        endpoint: Option<quinn::Endpoint>,
    ) -> Self {
        FrameChannel {
            connection,
            send,
            recv: FrameReader::new(recv),
            _endpoint: endpoint,
        }
    }

    pub(crate) fn with_endpoint(mut self, endpoint: quinn::Endpoint) -> Self {
        self._endpoint = Some(endpoint);
        self
    }

    /// Sends one frame (as `poll_transmit` gave it). Not cancel-safe: a send dropped half
    /// way leaves half a frame on the stream, so do not race it in a `select!`.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.send.write_all(frame).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => describe_connection_error(&e),
            e => TransportError::StreamIo(e.to_string()),
        })
    }

    /// The next frame from the peer; `Ok(None)` when the peer finished the stream cleanly.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        match self.recv.read_frame().await {
            Err(TransportError::StreamIo(io)) => {
                // The stream error hides the connection's; report that when there is one.
                Err(match self.connection.close_reason() {
                    Some(e) => describe_connection_error(&e),
                    None => TransportError::StreamIo(io),
                })
            }
            other => other,
        }
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<TransportError> {
        self.connection
            .close_reason()
            .map(|e| describe_connection_error(&e))
    }

    /// Resolves when the connection has ended, with why.
    pub async fn closed(&self) -> TransportError {
        describe_connection_error(&self.connection.closed().await)
    }

    /// Closes the connection with a code and a reason the peer will see and log.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.connection
            .close(quinn::VarInt::from_u32(code as u32), reason.as_bytes());
    }

    /// A handle that can close this connection from elsewhere (the hub closes a connection
    /// that a newer one of the same building replaces, or whose certificate is revoked).
    pub fn closer(&self) -> ChannelCloser {
        ChannelCloser(self.connection.clone())
    }
}

/// Closes a [`FrameChannel`]'s connection from another task.
#[derive(Clone)]
pub struct ChannelCloser(quinn::Connection);

impl std::fmt::Debug for ChannelCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ChannelCloser")
            .field(&self.0.remote_address())
            .finish()
    }
}

impl ChannelCloser {
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.0
            .close(quinn::VarInt::from_u32(code as u32), reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[tokio::test]
    async fn frames_split_across_reads_come_out_whole_and_in_order() {
        let a = Message::Heartbeat.encode(0).unwrap();
        let b = Message::Health(crate::Health {
            body: vec![9; 200_000],
        })
        .encode(1)
        .unwrap();
        let mut bytes = a.clone();
        bytes.extend(&b);
        let (mut tx, rx) = tokio::io::duplex(1000);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for piece in bytes.chunks(777) {
                tx.write_all(piece).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(rx);
        assert_eq!(reader.read_frame().await.unwrap(), Some(a));
        assert_eq!(reader.read_frame().await.unwrap(), Some(b));
        writer.await.unwrap();
        assert_eq!(reader.read_frame().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_header_announcing_more_than_the_limit_is_refused_before_the_payload() {
        let mut header = vec![1, 1, 0x10, 1];
        crate::wire::put_varint(&mut header, MAX_FRAME_LEN as u64);
        let mut reader = FrameReader::new(&header[..]);
        assert!(matches!(
            reader.read_frame().await,
            Err(TransportError::Frame(crate::DecodeError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_is_an_error() {
        let frame = Message::Heartbeat.encode(0).unwrap();
        let mut reader = FrameReader::new(&frame[..frame.len() - 1]);
        assert!(matches!(
            reader.read_frame().await,
            Err(TransportError::Frame(_))
        ));
    }
}
