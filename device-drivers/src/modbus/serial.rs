//! Modbus RTU on a serial line, from the client's side: each request framed with its CRC,
//! each reply matched to its own request, and the line let fall quiet after anything went
//! wrong.
//!
//! RTU frames carry no transaction id, so a reply that arrives after its request timed out
//! can pass for the answer to a later request. Three rules keep every answer its own
//! request's:
//!
//! - A received frame is the answer only if its unit, its function (or that function's
//!   exception) and its length are the request's. Any other frame with a good CRC is
//!   discarded and counted, and the wait goes on until the timeout: a late reply from one
//!   unit never ends the wait for another.
//! - Bytes that do not make a frame with a good CRC are dropped one at a time until they do,
//!   so a torn frame in front of the answer costs nothing but its bytes.
//! - After an exchange that did not end cleanly (a timeout, a discarded frame or byte, bytes
//!   after the answer, or an exchange abandoned half way), the next request waits until the
//!   line has been quiet for [`settle_quiet`], discarding what arrives. Before every request,
//!   bytes already waiting are discarded: nothing received before a request is its answer.
//!
//! What no RTU client can tell apart is a reply from the same unit, for the same function
//! and with the same length, that comes later than the settling time: the bus keeps a unit
//! that timed out at rest for its backoff delay so that this cannot happen within a cycle,
//! and a unit whose replies take longer than its timeout needs a longer timeout.
//!
//! tokio-modbus's own RTU client is not used for this, because it takes the first frame with
//! a good CRC after a request as the reply: a frame from another unit or for another function
//! ends the call with an error while the real reply is still on its way, to be taken for the
//! answer to the next request. It frames by length alone, and it owns the port, so its user
//! cannot wait for the line to fall quiet. Its [`Request`] and [`Response`] types and its PDU
//! decoder are used here; the framing is this module's.
//!
//! This module does not open ports, pace requests (the [`Link`](super::link::Link) keeps the
//! gap between frames), retry, or decide what a failure means for a device.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_modbus::bytes::Bytes;
use tokio_modbus::{ExceptionCode, Request, Response};
use tracing::debug;

use crate::metrics;
use crate::modbus::link::LinkError;

/// The Modbus minimum silence between frames: 3.5 characters of 11 bits, and 1.75 ms above
/// 19200 baud as the specification fixes it.
pub(crate) fn frame_gap(baud: u32) -> Duration {
    if baud > 19200 || baud == 0 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(38_500_000 / baud as u64)
    }
}

/// How long the line must stay silent before a request that follows trouble. The frame gap
/// is what the specification asks; USB serial adapters deliver bytes in bursts some
/// milliseconds apart, so a few milliseconds of silence prove nothing there.
pub(crate) fn settle_quiet(baud: u32) -> Duration {
    frame_gap(baud) + Duration::from_millis(20)
}

/// A line that has not fallen quiet after this long is taken as broken (a device stuck
/// transmitting, or noise): the request is not sent into it.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// The longest RTU frame.
const MAX_FRAME: usize = 256;

/// The Modbus CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Whether `frame` ends in the CRC of what comes before it (low byte first).
fn crc_ok(frame: &[u8]) -> bool {
    let [body @ .., lo, hi] = frame else {
        return false;
    };
    crc16(body) == u16::from_le_bytes([*lo, *hi])
}

/// The request's application data unit: unit, PDU, CRC. Only the functions the drivers use
/// are encoded.
fn encode(unit: u8, request: &Request<'_>) -> Result<Vec<u8>, LinkError> {
    let function = request.function_code().value();
    let mut adu = vec![unit, function];
    let mut put = |word: u16| adu.extend_from_slice(&word.to_be_bytes());
    match request {
        Request::ReadCoils(address, count)
        | Request::ReadDiscreteInputs(address, count)
        | Request::ReadHoldingRegisters(address, count)
        | Request::ReadInputRegisters(address, count) => {
            put(*address);
            put(*count);
        }
        Request::WriteSingleCoil(address, on) => {
            put(*address);
            put(if *on { 0xFF00 } else { 0 });
        }
        Request::WriteSingleRegister(address, word) => {
            put(*address);
            put(*word);
        }
        Request::WriteMultipleRegisters(address, words) if words.len() <= 123 => {
            put(*address);
            put(words.len() as u16);
            adu.push(2 * words.len() as u8);
            for w in words.iter() {
                adu.extend_from_slice(&w.to_be_bytes());
            }
        }
        _ => {
            return Err(LinkError::Protocol(format!(
                "{} is not supported on Modbus RTU",
                function_name(function)
            )));
        }
    }
    let crc = crc16(&adu);
    adu.extend_from_slice(&crc.to_le_bytes());
    Ok(adu)
}

/// A Modbus function as people call it, for messages.
pub(crate) fn function_name(function: u8) -> String {
    match function {
        1 => "read coils".into(),
        2 => "read discrete inputs".into(),
        3 => "read holding registers".into(),
        4 => "read input registers".into(),
        5 => "write single coil".into(),
        6 => "write single register".into(),
        15 => "write multiple coils".into(),
        16 => "write multiple registers".into(),
        other => format!("function {other}"),
    }
}

/// The shape of the one reply that answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    unit: u8,
    function: u8,
    /// The whole frame's length, CRC included.
    len: usize,
}

impl Expected {
    fn of(unit: u8, request: &Request<'_>) -> Self {
        let function = request.function_code().value();
        let len = match request {
            Request::ReadHoldingRegisters(_, n) | Request::ReadInputRegisters(_, n) => {
                5 + 2 * *n as usize
            }
            Request::ReadCoils(_, n) | Request::ReadDiscreteInputs(_, n) => {
                5 + (*n as usize).div_ceil(8)
            }
            // Writes echo address and value or count.
            _ => 8,
        };
        Expected {
            unit,
            function,
            len,
        }
    }

    /// Whether a whole frame with a good CRC is the answer (a reply or an exception).
    fn is_answer(&self, frame: &[u8]) -> bool {
        let (unit, function) = (frame[0], frame[1]);
        unit == self.unit
            && ((function == self.function && frame.len() == self.len)
                || (function == self.function | 0x80 && frame.len() == 5))
    }

    /// Whether `bytes` start with the answer.
    fn starts(&self, bytes: &[u8]) -> bool {
        [self.len, 5]
            .into_iter()
            .any(|len| bytes.len() >= len && crc_ok(&bytes[..len]) && self.is_answer(&bytes[..len]))
    }
}

/// The length of the reply frame that `bytes` start with: `Ok(None)` when more bytes are
/// needed to tell, `Err(())` when no reply starts like this.
fn reply_len(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let Some(&function) = bytes.get(1) else {
        return Ok(None);
    };
    match function {
        1..=4 => Ok(bytes.get(2).map(|&count| 5 + count as usize)),
        5 | 6 | 15 | 16 => Ok(Some(8)),
        0x81..=0xFF => Ok(Some(5)),
        _ => Err(()),
    }
}

/// What the receiver threw away during one exchange.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Discards {
    /// Whole frames with a good CRC that were not the answer.
    frames: u64,
    /// Bytes that made no frame with a good CRC.
    bytes: u64,
    /// The last discarded frame from the addressed unit for the right function, which had
    /// the wrong length: the unit answered, but not with what was asked for.
    wrong_length: Option<usize>,
}

/// Splits the bytes received after a request into frames and finds the answer among them.
/// Pure: it is fed bytes and asked for the answer; it knows no time.
#[derive(Debug)]
struct Receiver {
    expected: Expected,
    buf: Vec<u8>,
    discards: Discards,
}

impl Receiver {
    fn new(expected: Expected) -> Self {
        Receiver {
            expected,
            buf: Vec::with_capacity(MAX_FRAME),
            discards: Discards::default(),
        }
    }

    fn handle_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The answer's frame, once it has arrived whole; what came before it is discarded.
    fn poll_answer(&mut self) -> Option<Vec<u8>> {
        loop {
            // The answer may sit behind the start of a frame that will never be complete
            // (the tail of a torn frame announcing more bytes than follow it).
            if let Some(at) = (0..self.buf.len()).find(|&i| self.expected.starts(&self.buf[i..])) {
                self.drop_bytes(at);
                let len = if self.buf[1] & 0x80 != 0 {
                    5
                } else {
                    self.expected.len
                };
                return Some(self.buf.drain(..len).collect());
            }
            match reply_len(&self.buf) {
                Ok(None) => return None,
                Ok(Some(len)) if len > MAX_FRAME => self.drop_bytes(1),
                Ok(Some(len)) if self.buf.len() < len => return None,
                Ok(Some(len)) if crc_ok(&self.buf[..len]) => {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    self.discards.frames += 1;
                    if frame[0] == self.expected.unit && frame[1] == self.expected.function {
                        self.discards.wrong_length = Some(len);
                    }
                    debug!(
                        unit = frame[0],
                        function = frame[1],
                        bytes = len,
                        "Discarded a Modbus RTU frame that does not answer the request."
                    );
                }
                Ok(Some(_)) | Err(()) => self.drop_bytes(1),
            }
        }
    }

    fn drop_bytes(&mut self, n: usize) {
        self.buf.drain(..n);
        self.discards.bytes += n as u64;
    }

    /// Nothing was thrown away and nothing is left over.
    fn is_clean(&self) -> bool {
        self.buf.is_empty() && self.discards == Discards::default()
    }

    /// Why there was no answer by the deadline.
    fn failure(&self, timeout: Duration) -> LinkError {
        let e = self.expected;
        match self.discards.wrong_length {
            Some(len) => LinkError::Protocol(format!(
                "unit {} answered {} with a frame of {len} bytes where {} were due",
                e.unit,
                function_name(e.function),
                e.len
            )),
            None => LinkError::Timeout(timeout),
        }
    }
}

/// The answer's frame as a Modbus response or exception.
fn decode(frame: &[u8]) -> Result<Result<Response, ExceptionCode>, LinkError> {
    let pdu = &frame[1..frame.len() - 2];
    if pdu[0] & 0x80 != 0 {
        return Ok(Err(ExceptionCode::new(pdu[1])));
    }
    Response::try_from(Bytes::copy_from_slice(pdu))
        .map(Ok)
        .map_err(|e| LinkError::Protocol(format!("the reply cannot be decoded: {e}")))
}

/// A Modbus RTU client on one serial port, addressing one unit at a time.
#[derive(Debug)]
pub(crate) struct SerialClient<T> {
    port: T,
    unit: u8,
    quiet: Duration,
    /// The line may still carry bytes of an earlier exchange. Set when an exchange starts and
    /// cleared only when it ends cleanly, so that an exchange abandoned at any point leaves
    /// the next one to settle the line first.
    unsettled: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> SerialClient<T> {
    /// A client on `port` that lets the line be quiet for `quiet` after trouble.
    pub(crate) fn new(port: T, unit: u8, quiet: Duration) -> Self {
        SerialClient {
            port,
            unit,
            quiet,
            unsettled: false,
        }
    }

    pub(crate) fn set_unit(&mut self, unit: u8) {
        self.unit = unit;
    }

    /// Sends `request` to the current unit and waits up to `timeout` for its answer.
    pub(crate) async fn call(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Result<Response, ExceptionCode>, LinkError> {
        let adu = encode(self.unit, request)?;
        if std::mem::replace(&mut self.unsettled, true) {
            self.settle().await?;
        } else {
            self.discard_waiting().await?;
        }
        let deadline = Instant::now() + timeout;
        let mut receiver = Receiver::new(Expected::of(self.unit, request));
        let sent = async {
            self.port.write_all(&adu).await?;
            self.port.flush().await
        };
        match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => return Err(LinkError::Timeout(timeout)),
            Ok(Err(e)) => return Err(transport(&e)),
            Ok(Ok(())) => {}
        }
        let mut chunk = [0u8; MAX_FRAME];
        let outcome = loop {
            if let Some(frame) = receiver.poll_answer() {
                break decode(&frame);
            }
            match tokio::time::timeout_at(deadline, self.port.read(&mut chunk)).await {
                Err(_) => break Err(receiver.failure(timeout)),
                Ok(Ok(0)) => break Err(LinkError::Transport("the serial port was closed".into())),
                Ok(Ok(n)) => receiver.handle_bytes(&chunk[..n]),
                Ok(Err(e)) => break Err(transport(&e)),
            }
        };
        let d = &receiver.discards;
        metrics::MODBUS_RTU_FRAMES_DISCARDED_TOTAL.add(d.frames);
        metrics::MODBUS_RTU_BYTES_DISCARDED_TOTAL.add(d.bytes + receiver.buf.len() as u64);
        self.unsettled = outcome.is_err() || !receiver.is_clean();
        outcome
    }

    /// Discards whatever has already arrived, without waiting.
    async fn discard_waiting(&mut self) -> Result<(), LinkError> {
        let mut chunk = [0u8; MAX_FRAME];
        let mut discarded = 0;
        // Bounded: a line that never stops sending must not keep the request from going out.
        while discarded < 16 * MAX_FRAME {
            match futures_util::FutureExt::now_or_never(self.port.read(&mut chunk)) {
                Some(Ok(0)) => {
                    return Err(LinkError::Transport("the serial port was closed".into()));
                }
                Some(Ok(n)) => discarded += n,
                Some(Err(e)) => return Err(transport(&e)),
                None => break,
            }
        }
        if discarded > 0 {
            metrics::MODBUS_RTU_BYTES_DISCARDED_TOTAL.add(discarded as u64);
            debug!(
                bytes = discarded,
                "Discarded stale input before a Modbus RTU request."
            );
        }
        Ok(())
    }

    /// Waits until no byte has arrived for `quiet`, discarding what arrives meanwhile.
    async fn settle(&mut self) -> Result<(), LinkError> {
        let started = Instant::now();
        let mut chunk = [0u8; MAX_FRAME];
        let mut discarded = 0u64;
        let result = loop {
            match tokio::time::timeout(self.quiet, self.port.read(&mut chunk)).await {
                Err(_) => break Ok(()),
                Ok(Ok(0)) => break Err(LinkError::Transport("the serial port was closed".into())),
                Ok(Ok(n)) => discarded += n as u64,
                Ok(Err(e)) => break Err(transport(&e)),
            }
            if started.elapsed() > SETTLE_LIMIT {
                break Err(LinkError::Transport(format!(
                    "the line did not fall quiet for {} ms within {} s",
                    self.quiet.as_millis(),
                    SETTLE_LIMIT.as_secs()
                )));
            }
        };
        if discarded > 0 {
            metrics::MODBUS_RTU_BYTES_DISCARDED_TOTAL.add(discarded);
            debug!(
                bytes = discarded,
                "Discarded input while the Modbus RTU line settled."
            );
        }
        result
    }
}

fn transport(e: &std::io::Error) -> LinkError {
    LinkError::Transport(format!("serial port error: {e}"))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A frame with its CRC appended.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(&crc16(body).to_le_bytes());
        out
    }

    fn registers(unit: u8, function: u8, words: &[u16]) -> Vec<u8> {
        let mut body = vec![unit, function, 2 * words.len() as u8];
        for w in words {
            body.extend_from_slice(&w.to_be_bytes());
        }
        framed(&body)
    }

    fn read_holding(unit: u8, count: u16) -> Receiver {
        Receiver::new(Expected::of(
            unit,
            &Request::ReadHoldingRegisters(100, count),
        ))
    }

    #[test]
    fn requests_are_framed_as_the_specification_shows() {
        // The example of the Modbus over serial line guide: unit 1, read holding registers
        // 0x006B, three of them; and the well-known CRC of 01 03 00 00 00 01.
        let adu = encode(1, &Request::ReadHoldingRegisters(0x6B, 3)).unwrap();
        assert_eq!(adu[..6], [1, 3, 0, 0x6B, 0, 3]);
        assert!(crc_ok(&adu));
        assert_eq!(
            encode(1, &Request::ReadHoldingRegisters(0, 1)).unwrap(),
            [1, 3, 0, 0, 0, 1, 0x84, 0x0A]
        );
        assert_eq!(
            encode(
                2,
                &Request::WriteMultipleRegisters(10, Cow::Borrowed(&[1, 2]))
            )
            .unwrap()[..11],
            [2, 16, 0, 10, 0, 2, 4, 0, 1, 0, 2]
        );
        assert!(matches!(
            encode(1, &Request::ReportServerId),
            Err(LinkError::Protocol(_))
        ));
    }

    #[test]
    fn the_answer_is_taken_when_it_is_whole_and_not_before() {
        let mut r = read_holding(2, 2);
        let reply = registers(2, 3, &[7, 8]);
        r.handle_bytes(&reply[..5]);
        assert_eq!(r.poll_answer(), None);
        r.handle_bytes(&reply[5..]);
        assert_eq!(r.poll_answer(), Some(reply));
        assert!(r.is_clean());
    }

    #[test]
    fn another_units_late_reply_is_discarded_and_the_wait_goes_on() {
        let mut r = read_holding(2, 2);
        // Unit 1's reply to its own read of the same size, which timed out before.
        r.handle_bytes(&registers(1, 3, &[1000, 1001]));
        assert_eq!(r.poll_answer(), None);
        assert_eq!(r.discards.frames, 1);
        let own = registers(2, 3, &[2000, 2001]);
        r.handle_bytes(&own);
        assert_eq!(r.poll_answer(), Some(own));
        assert!(!r.is_clean(), "the next request settles the line first");
    }

    #[test]
    fn a_reply_for_another_function_or_of_another_length_is_not_the_answer() {
        let mut r = read_holding(2, 2);
        r.handle_bytes(&registers(2, 4, &[5, 6]));
        r.handle_bytes(&registers(2, 3, &[5, 6, 7]));
        assert_eq!(r.poll_answer(), None);
        assert_eq!(r.discards.frames, 2);
        assert_eq!(
            r.failure(Duration::from_millis(300)).to_string(),
            "unit 2 answered read holding registers with a frame of 11 bytes where 9 were due"
        );
        let none = read_holding(2, 2);
        assert_eq!(
            none.failure(Duration::from_millis(300)),
            LinkError::Timeout(Duration::from_millis(300))
        );
    }

    #[test]
    fn the_answer_is_found_behind_garbage_and_torn_frames() {
        let mut r = read_holding(3, 1);
        let own = registers(3, 3, &[42]);
        // The tail of a frame that lost its start: it announces 200 bytes that never come.
        r.handle_bytes(&[0x01, 0x03, 200, 0x55, 0xAA]);
        r.handle_bytes(&own);
        assert_eq!(r.poll_answer(), Some(own));
        assert_eq!(r.discards.bytes, 5);
        assert_eq!(r.discards.frames, 0);
    }

    #[test]
    fn a_corrupted_reply_is_never_taken() {
        let mut r = read_holding(3, 1);
        let mut bad = registers(3, 3, &[42]);
        bad[4] ^= 0x01;
        r.handle_bytes(&bad);
        assert_eq!(r.poll_answer(), None);
        assert!(r.discards.bytes > 0);
        assert_eq!(
            r.failure(Duration::from_millis(300)),
            LinkError::Timeout(Duration::from_millis(300))
        );
    }

    #[test]
    fn an_exception_from_the_unit_answers_the_request() {
        let mut r = read_holding(4, 10);
        let exception = framed(&[4, 0x83, 2]);
        r.handle_bytes(&framed(&[5, 0x83, 2]));
        r.handle_bytes(&exception);
        let frame = r.poll_answer().unwrap();
        assert_eq!(frame, exception);
        assert_eq!(decode(&frame), Ok(Err(ExceptionCode::IllegalDataAddress)));
    }

    #[test]
    fn bits_come_in_whole_bytes() {
        let mut r = Receiver::new(Expected::of(1, &Request::ReadCoils(0, 10)));
        let reply = framed(&[1, 1, 2, 0b0101_0101, 0b01]);
        r.handle_bytes(&reply);
        let frame = r.poll_answer().unwrap();
        let Ok(Ok(Response::ReadCoils(bits))) = decode(&frame) else {
            panic!("{frame:?}")
        };
        assert_eq!(bits.len(), 16);
        assert!(bits[0] && !bits[1] && bits[8]);
    }

    #[test]
    fn the_settling_time_is_the_frame_gap_and_some() {
        assert_eq!(frame_gap(9600), Duration::from_micros(4010));
        assert_eq!(frame_gap(19200), Duration::from_micros(2005));
        assert_eq!(frame_gap(115200), Duration::from_micros(1750));
        assert!(settle_quiet(19200) > frame_gap(19200));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_timeout_the_next_request_waits_for_the_line_to_fall_quiet() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut client = SerialClient::new(near, 1, Duration::from_millis(20));
        let timeout = Duration::from_millis(100);
        let first = client.call(&Request::ReadHoldingRegisters(0, 1), timeout);
        assert_eq!(first.await, Err(LinkError::Timeout(timeout)));
        let mut request = [0u8; 8];
        far.read_exact(&mut request).await.unwrap();
        // Unit 1's late reply is still coming in while the next request, to unit 2, waits.
        let late = registers(1, 3, &[1000]);
        let device = async {
            for (i, byte) in late.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                far.write_all(&[*byte]).await.unwrap();
            }
            let last_late_byte = Instant::now();
            far.read_exact(&mut request).await.unwrap();
            let waited = last_late_byte.elapsed();
            far.write_all(&registers(2, 3, &[2000])).await.unwrap();
            (request, waited)
        };
        client.set_unit(2);
        let (answer, (request, waited)) = tokio::join!(
            client.call(&Request::ReadHoldingRegisters(0, 1), timeout),
            device
        );
        assert_eq!(answer, Ok(Ok(Response::ReadHoldingRegisters(vec![2000]))));
        assert_eq!(request[..2], [2, 3]);
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
    }
}
