//! Support for the Modbus integration tests: an in-process device (a register map served
//! by tokio-modbus over TCP or over a pseudo-terminal as RTU), a `DriverOutput` that
//! collects into a channel, and builders for device specs.
//!
//! It does not simulate wire timing: a pty moves bytes at memory speed whatever the baud.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_drivers::device::{Parity, RtuLine};
use device_drivers::{Connection, DeviceSpec, Profile, Sample};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Every test runs under this guard so that a regression hangs nothing.
pub const GUARD: Duration = Duration::from_secs(30);

pub async fn guarded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(GUARD, test)
        .await
        .expect("the test did not finish within its guard time")
}

/// A device's register map and what it has been asked.
#[derive(Debug, Default)]
pub struct Sim {
    pub holding: Mutex<BTreeMap<u16, u16>>,
    pub input: Mutex<BTreeMap<u16, u16>>,
    pub coils: Mutex<BTreeMap<u16, bool>>,
    pub discrete: Mutex<BTreeMap<u16, bool>>,
    /// Every request, with the unit it was addressed to.
    pub requests: Mutex<Vec<(u8, Request<'static>)>>,
    /// Takes requests and never answers: the service future never completes.
    pub mute: AtomicBool,
    /// Takes requests and sends no reply, at once (a slave that does not hear its address).
    pub silent: AtomicBool,
    /// Acknowledges writes without storing them.
    pub ignore_writes: AtomicBool,
}

impl Sim {
    pub fn new() -> Arc<Self> {
        Arc::new(Sim::default())
    }

    pub fn set_holding(&self, address: u16, words: &[u16]) {
        let mut map = self.holding.lock().unwrap();
        for (i, w) in words.iter().enumerate() {
            map.insert(address + i as u16, *w);
        }
    }

    pub fn set_input(&self, address: u16, words: &[u16]) {
        let mut map = self.input.lock().unwrap();
        for (i, w) in words.iter().enumerate() {
            map.insert(address + i as u16, *w);
        }
    }

    pub fn holding_at(&self, address: u16) -> Option<u16> {
        self.holding.lock().unwrap().get(&address).copied()
    }

    pub fn requests(&self) -> Vec<(u8, Request<'static>)> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }

    pub fn writes(&self) -> Vec<Request<'static>> {
        self.requests()
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| {
                matches!(
                    r,
                    Request::WriteSingleRegister(..)
                        | Request::WriteMultipleRegisters(..)
                        | Request::WriteSingleCoil(..)
                )
            })
            .collect()
    }

    fn answer(&self, request: Request<'static>) -> Result<Response, ExceptionCode> {
        fn words(
            map: &Mutex<BTreeMap<u16, u16>>,
            address: u16,
            count: u16,
        ) -> Result<Vec<u16>, ExceptionCode> {
            let map = map.lock().unwrap();
            (address as u32..address as u32 + count as u32)
                .map(|a| {
                    map.get(&(a as u16))
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect()
        }
        fn bits(
            map: &Mutex<BTreeMap<u16, bool>>,
            address: u16,
            count: u16,
        ) -> Result<Vec<bool>, ExceptionCode> {
            let map = map.lock().unwrap();
            (address as u32..address as u32 + count as u32)
                .map(|a| {
                    map.get(&(a as u16))
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect()
        }
        let store = !self.ignore_writes.load(Ordering::SeqCst);
        match request {
            Request::ReadHoldingRegisters(a, n) => {
                Ok(Response::ReadHoldingRegisters(words(&self.holding, a, n)?))
            }
            Request::ReadInputRegisters(a, n) => {
                Ok(Response::ReadInputRegisters(words(&self.input, a, n)?))
            }
            Request::ReadCoils(a, n) => Ok(Response::ReadCoils(bits(&self.coils, a, n)?)),
            Request::ReadDiscreteInputs(a, n) => {
                Ok(Response::ReadDiscreteInputs(bits(&self.discrete, a, n)?))
            }
            Request::WriteSingleRegister(a, w) => {
                words(&self.holding, a, 1)?;
                if store {
                    self.set_holding(a, &[w]);
                }
                Ok(Response::WriteSingleRegister(a, w))
            }
            Request::WriteMultipleRegisters(a, ws) => {
                words(&self.holding, a, ws.len() as u16)?;
                if store {
                    self.set_holding(a, &ws);
                }
                Ok(Response::WriteMultipleRegisters(a, ws.len() as u16))
            }
            Request::WriteSingleCoil(a, b) => {
                bits(&self.coils, a, 1)?;
                if store {
                    self.coils.lock().unwrap().insert(a, b);
                }
                Ok(Response::WriteSingleCoil(a, b))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl Service for Sim {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests
            .lock()
            .unwrap()
            .push((req.slave, req.request.clone()));
        if self.mute.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if self.silent.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        Box::pin(std::future::ready(self.answer(req.request).map(Some)))
    }
}

/// Several units on one serial line; a unit that is not there does not answer.
pub struct Line {
    pub units: BTreeMap<u8, Arc<Sim>>,
}

impl Service for Line {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        match self.units.get(&req.slave) {
            Some(sim) => sim.call(req),
            None => Box::pin(std::future::ready(Ok(None))),
        }
    }
}

/// A Modbus TCP server for one [`Sim`] on a loopback port.
pub struct TcpDevice {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpDevice {
    pub async fn start(sim: Arc<Sim>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(sim, listener, Arc::default())
    }

    /// Serves again on the address of a device that was stopped, counting on.
    pub async fn restart(sim: Arc<Sim>, addr: SocketAddr, connections: Arc<AtomicUsize>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(sim, listener, connections)
    }

    fn serve(sim: Arc<Sim>, listener: TcpListener, connections: Arc<AtomicUsize>) -> Self {
        let addr = listener.local_addr().unwrap();
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream, socket_addr| {
                counter.fetch_add(1, Ordering::SeqCst);
                let sim = sim.clone();
                async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(sim.clone()))) }
            };
            let _ = server.serve(&on_connected, |_error| {}).await;
        });
        TcpDevice {
            addr,
            connections,
            task,
        }
    }

    /// Stops listening and closes every connection: dropping the server's future cancels
    /// its connection tasks.
    pub async fn stop(self) -> (SocketAddr, Arc<AtomicUsize>) {
        self.task.abort();
        let _ = self.task.await;
        (self.addr, self.connections)
    }
}

#[path = "../common/collector.rs"]
mod collector;
pub use collector::{Event, Events, collector};

impl Events {
    /// The next batch of samples of `device`, skipping everything else.
    pub async fn batch(&mut self, device: &str) -> Batch {
        loop {
            if let Event::Samples(samples) = self.next().await
                && samples.first().is_some_and(|s| s.point.device() == device)
            {
                return Batch(samples);
            }
        }
    }
}

/// One poll's samples of one device.
#[derive(Debug, Clone)]
pub struct Batch(pub Vec<Sample>);

impl Batch {
    pub fn get(&self, point: &str) -> &Sample {
        self.0
            .iter()
            .find(|s| s.point.point() == point)
            .unwrap_or_else(|| panic!("no sample of {point} in {:?}", self.0))
    }

    pub fn all_good(&self) -> bool {
        self.0
            .iter()
            .all(|s| s.quality == device_drivers::Quality::Good)
    }

    pub fn all_bad_with(&self, needle: &str) -> bool {
        self.0.iter().all(|s| {
            s.value.is_none()
                && matches!(&s.quality, device_drivers::Quality::Bad(r) if r.contains(needle))
        })
    }
}

/// A Modbus profile from its `[modbus]` table and points, with a made-up header.
pub fn profile(body: &str) -> Arc<Profile> {
    let text = format!(
        "id = \"test\"\nprotocol = \"modbus\"\nmanufacturer = \"Test\"\nmodel = \"T\"\nsource = \"made up for a test\"\n{body}"
    );
    Arc::new(Profile::parse(Path::new("test.toml"), &text).unwrap())
}

pub fn tcp_device(
    id: &str,
    profile: Arc<Profile>,
    addr: SocketAddr,
    poll: Duration,
    timeout: Duration,
) -> DeviceSpec {
    DeviceSpec {
        id: id.into(),
        name: None,
        profile,
        poll_interval: poll,
        timeout,
        inter_request_delay: Duration::ZERO,
        connection: Connection::ModbusTcp {
            address: addr.to_string(),
            unit: 1,
        },
    }
}

pub fn rtu_device(
    id: &str,
    profile: Arc<Profile>,
    port: &str,
    unit: u8,
    poll: Duration,
    timeout: Duration,
) -> DeviceSpec {
    DeviceSpec {
        id: id.into(),
        name: None,
        profile,
        poll_interval: poll,
        timeout,
        inter_request_delay: Duration::ZERO,
        connection: Connection::ModbusRtu(RtuLine {
            port: port.into(),
            baud: 19200,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            unit,
        }),
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sends a write to a running driver and waits for its answer.
pub async fn write(
    writes: &mpsc::Sender<device_drivers::WriteRequest>,
    point: &str,
    value: device_drivers::Value,
) -> Result<device_drivers::Value, device_drivers::WriteError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    writes
        .send(device_drivers::WriteRequest {
            point: point.into(),
            value,
            reply,
        })
        .await
        .expect("the driver stopped taking writes");
    answer.await.expect("the driver dropped the write")
}

/// The float in a sample, for comparisons with a tolerance.
pub fn float(sample: &Sample) -> f64 {
    sample
        .value
        .as_ref()
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no number in {sample:?}"))
}
