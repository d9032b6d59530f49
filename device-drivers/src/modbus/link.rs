//! One Modbus request at a time, over tokio-modbus's TCP client or the RTU client of
//! [`serial`](super::serial), with the guards tokio-modbus leaves to its user: a timeout on
//! every call, a pause between requests, and a check that a reply has the shape of its
//! request.
//!
//! It does not decide what a failure means for the connection (TCP and RTU differ) and it
//! does not reconnect; it classifies errors so that the drivers can. Its errors are
//! sentences, never a dump of a frame.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, ProtocolError, Request, Response, Slave};
use tokio_serial::SerialStream;

use crate::modbus::serial::{SerialClient, function_name};
use crate::profile::RegisterTable;

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// The device answered with a Modbus exception: it is there, it refused this request.
    #[error("exception {} ({})", exception_name(*.0), u8::from(*.0))]
    Exception(ExceptionCode),
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or port failed.
    #[error("{0}")]
    Transport(String),
    /// A reply arrived that does not belong to the request (another unit's, another
    /// function's, or the wrong size).
    #[error("{0}")]
    Protocol(String),
}

/// The name of a Modbus exception as the specification spells it, without spaces.
pub fn exception_name(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "IllegalFunction",
        ExceptionCode::IllegalDataAddress => "IllegalDataAddress",
        ExceptionCode::IllegalDataValue => "IllegalDataValue",
        ExceptionCode::ServerDeviceFailure => "ServerDeviceFailure",
        ExceptionCode::Acknowledge => "Acknowledge",
        ExceptionCode::ServerDeviceBusy => "ServerDeviceBusy",
        ExceptionCode::MemoryParityError => "MemoryParityError",
        ExceptionCode::GatewayPathUnavailable => "GatewayPathUnavailable",
        ExceptionCode::GatewayTargetDevice => "GatewayTargetDevice",
        ExceptionCode::Custom(_) => "Unknown",
    }
}

/// The data of one block read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockData {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// How long to wait for a reply and how long to pause before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub timeout: Duration,
    pub gap: Duration,
}

/// A Modbus client plus the time its last exchange ended.
pub struct Link {
    wire: Wire,
    last_exchange: Option<Instant>,
}

enum Wire {
    /// tokio-modbus's client: MBAP transaction ids pair replies with requests.
    Tcp(Context),
    /// RTU, where only unit, function and length can pair them.
    Rtu(SerialClient<SerialStream>),
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("last_exchange", &self.last_exchange)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link over a tokio-modbus TCP client.
    pub fn tcp(ctx: Context) -> Self {
        Link {
            wire: Wire::Tcp(ctx),
            last_exchange: None,
        }
    }

    /// A link over a serial line.
    pub(crate) fn rtu(client: SerialClient<SerialStream>) -> Self {
        Link {
            wire: Wire::Rtu(client),
            last_exchange: None,
        }
    }

    /// Addresses the next requests to another unit (RTU devices sharing a line).
    pub fn set_unit(&mut self, unit: u8) {
        match &mut self.wire {
            Wire::Tcp(ctx) => ctx.set_slave(Slave(unit)),
            Wire::Rtu(client) => client.set_unit(unit),
        }
    }

    async fn call(&mut self, request: Request<'_>, timing: Timing) -> Result<Response, LinkError> {
        if let Some(last) = self.last_exchange {
            tokio::time::sleep_until(last + timing.gap).await;
        }
        let result = match &mut self.wire {
            Wire::Tcp(ctx) => match tokio::time::timeout(timing.timeout, ctx.call(request)).await {
                Err(_) => Err(LinkError::Timeout(timing.timeout)),
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    Err(LinkError::Transport(describe_io(&e)))
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    Err(LinkError::Protocol(describe_mismatch(&e)))
                }
            },
            Wire::Rtu(client) => client.call(&request, timing.timeout).await,
        };
        self.last_exchange = Some(Instant::now());
        match result? {
            Ok(response) => Ok(response),
            Err(exception) => Err(LinkError::Exception(exception)),
        }
    }

    /// Reads `count` registers or bits. The reply is checked against the request rather than
    /// trusted: tokio-modbus only `debug_assert`s register counts.
    pub async fn read(
        &mut self,
        table: RegisterTable,
        address: u16,
        count: u16,
        timing: Timing,
    ) -> Result<BlockData, LinkError> {
        let request = match table {
            RegisterTable::Holding => Request::ReadHoldingRegisters(address, count),
            RegisterTable::Input => Request::ReadInputRegisters(address, count),
            RegisterTable::Coil => Request::ReadCoils(address, count),
            RegisterTable::Discrete => Request::ReadDiscreteInputs(address, count),
        };
        let wanted = count as usize;
        let function = request.function_code().value();
        match (table, self.call(request, timing).await?) {
            (RegisterTable::Holding, Response::ReadHoldingRegisters(words))
            | (RegisterTable::Input, Response::ReadInputRegisters(words)) => {
                if words.len() == wanted {
                    Ok(BlockData::Registers(words))
                } else {
                    Err(LinkError::Protocol(format!(
                        "reply has {} registers, asked for {wanted}",
                        words.len()
                    )))
                }
            }
            (RegisterTable::Coil, Response::ReadCoils(mut bits))
            | (RegisterTable::Discrete, Response::ReadDiscreteInputs(mut bits)) => {
                // Bits come in whole bytes; the padding is not data.
                if bits.len() < wanted {
                    return Err(LinkError::Protocol(format!(
                        "reply has {} bits, asked for {wanted}",
                        bits.len()
                    )));
                }
                bits.truncate(wanted);
                Ok(BlockData::Bits(bits))
            }
            (_, other) => Err(LinkError::Protocol(format!(
                "the reply is to {}, not to {}",
                function_name(other.function_code().value()),
                function_name(function)
            ))),
        }
    }

    /// Writes holding registers: function 6 for one register, 16 for more.
    pub async fn write_registers(
        &mut self,
        address: u16,
        words: &[u16],
        timing: Timing,
    ) -> Result<(), LinkError> {
        let (request, expected) = match words {
            [word] => (
                Request::WriteSingleRegister(address, *word),
                Response::WriteSingleRegister(address, *word),
            ),
            _ => (
                Request::WriteMultipleRegisters(address, Cow::Borrowed(words)),
                Response::WriteMultipleRegisters(address, words.len() as u16),
            ),
        };
        self.expect_echo(request, expected, timing).await
    }

    /// Writes one coil (function 5).
    pub async fn write_coil(
        &mut self,
        address: u16,
        value: bool,
        timing: Timing,
    ) -> Result<(), LinkError> {
        self.expect_echo(
            Request::WriteSingleCoil(address, value),
            Response::WriteSingleCoil(address, value),
            timing,
        )
        .await
    }

    async fn expect_echo(
        &mut self,
        request: Request<'_>,
        expected: Response,
        timing: Timing,
    ) -> Result<(), LinkError> {
        let response = self.call(request, timing).await?;
        if response == expected {
            Ok(())
        } else {
            Err(LinkError::Protocol(format!(
                "the reply to the write ({}) does not echo the request ({})",
                describe_write(&response),
                describe_write(&expected)
            )))
        }
    }
}

/// What a write reply says was written, in words.
fn describe_write(response: &Response) -> String {
    match response {
        Response::WriteSingleRegister(address, word) => format!("register {address} = {word}"),
        Response::WriteMultipleRegisters(address, count) => {
            format!("{count} registers from {address}")
        }
        Response::WriteSingleCoil(address, on) => {
            format!("coil {address} {}", if *on { "on" } else { "off" })
        }
        other => function_name(other.function_code().value()),
    }
}

/// tokio-modbus's mismatch errors carry the whole reply in Debug form; say what is wrong.
fn describe_mismatch(e: &ProtocolError) -> String {
    match e {
        ProtocolError::HeaderMismatch { .. } => {
            "the reply belongs to another transaction or unit".into()
        }
        ProtocolError::FunctionCodeMismatch { request, result } => {
            let got = match result {
                Ok(response) => response.function_code().value(),
                Err(exception) => exception.function.value(),
            };
            format!(
                "the reply is to {}, not to {}",
                function_name(got),
                function_name(request.value())
            )
        }
    }
}

fn describe_io(e: &std::io::Error) -> String {
    // tokio-modbus's TCP client reports a peer's close as the last OS error, which is often
    // "Success (os error 0)": say what happened instead.
    if e.raw_os_error() == Some(0) || e.kind() == std::io::ErrorKind::UnexpectedEof {
        "connection closed by the device".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_are_named_with_their_code() {
        assert_eq!(
            LinkError::Exception(ExceptionCode::IllegalDataAddress).to_string(),
            "exception IllegalDataAddress (2)"
        );
        assert_eq!(
            LinkError::Exception(ExceptionCode::ServerDeviceBusy).to_string(),
            "exception ServerDeviceBusy (6)"
        );
        assert_eq!(
            LinkError::Exception(ExceptionCode::Custom(0x42)).to_string(),
            "exception Unknown (66)"
        );
        assert_eq!(
            LinkError::Timeout(Duration::from_millis(500)).to_string(),
            "timed out after 500 ms"
        );
    }

    #[test]
    fn mismatched_replies_are_described_in_words_not_dumped() {
        let e = ProtocolError::FunctionCodeMismatch {
            request: tokio_modbus::FunctionCode::new(3),
            result: Ok(Response::ReadInputRegisters(vec![1, 2, 3])),
        };
        assert_eq!(
            describe_mismatch(&e),
            "the reply is to read input registers, not to read holding registers"
        );
        let e = ProtocolError::HeaderMismatch {
            message: "expected/request = Header { .. }".into(),
            result: Ok(Response::ReadHoldingRegisters(vec![7])),
        };
        assert_eq!(
            describe_mismatch(&e),
            "the reply belongs to another transaction or unit"
        );
        assert_eq!(
            describe_write(&Response::WriteSingleRegister(10, 7)),
            "register 10 = 7"
        );
        assert_eq!(
            describe_write(&Response::WriteSingleCoil(3, false)),
            "coil 3 off"
        );
    }

    #[test]
    fn a_closed_connection_is_described_as_such() {
        assert_eq!(
            describe_io(&std::io::Error::from_raw_os_error(0)),
            "connection closed by the device"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&refused), refused.to_string());
    }
}
