//! The Modbus RTU bus: every device on one serial line, polled in turn by one future.
//!
//! A serial line carries one request at a time, so the devices on it cannot be separate
//! tasks. Each device keeps its own poll interval; a device that times out rests for its
//! backoff delay and is skipped meanwhile, so that a silent device costs the others one
//! timeout per backoff step instead of one per poll. The port is opened here and reopened
//! with backoff when it fails. This module does not discover devices, change their
//! addresses or baud rates, or drive RS-485 direction pins (the adapter does that).
//!
//! # Late replies
//!
//! RTU frames carry no transaction id, so a reply that arrives after its request timed out
//! can pass for the answer to the next request. The line's client ([`SerialClient`]) takes
//! only a frame of the request's unit, function and length as its answer, discards any
//! other, and lets the line fall quiet after a timeout or a discarded frame before the next
//! request. What it cannot tell apart is a reply from the same unit to a request of the same
//! function and length: so a unit that timed out is not asked again within its backoff
//! delay, and a device whose replies take longer than its timeout needs a longer timeout.
//! Reopening the port after a timeout would not help (the late bytes come in on the new
//! descriptor just the same) and would toggle the modem lines that some RS-485 adapters use
//! for direction.
//!
//! The port is reopened only after a transport error, where the line's state is no longer
//! known.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::SerialPortBuilderExt;
use tracing::{Instrument, info, info_span, warn};

use crate::device::{Connection, DeviceSpec, Parity, RtuLine};
use crate::driver::{Backoff, DriverOutput, WriteError, WriteRequest};
use crate::modbus::link::{Link, LinkError, Timing};
use crate::modbus::poll::{Poller, WriteFailure};
use crate::modbus::serial::{SerialClient, frame_gap, settle_quiet};
use crate::modbus::{BACKOFF_BASE, BACKOFF_MAX, StatusReporter};
use crate::sample::now_micros;

/// Runs the devices that share one serial port until the task is aborted.
///
/// The line settings are those of the first device; a device that names another port (or
/// is not a Modbus RTU device at all) is reported offline and never addressed, since
/// polling it here would put its requests on the wrong wire. Each device's samples go out
/// in one batch per poll, and writes are served between polls as in
/// [`run_tcp_device`](super::run_tcp_device).
pub async fn run_rtu_bus<O: DriverOutput>(
    devices: Vec<(DeviceSpec, mpsc::Receiver<WriteRequest>)>,
    out: O,
) {
    let line = devices.iter().find_map(|(d, _)| match &d.connection {
        Connection::ModbusRtu(line) => Some(line.clone()),
        _ => None,
    });
    let span =
        info_span!("modbus_rtu", port = %line.as_ref().map(|l| l.port.as_str()).unwrap_or("none"));
    run(devices, line, out).instrument(span).await
}

/// On a shared line only a transport failure ends the cycle for everyone. A timeout ends
/// the cycle of the device that timed out; a reply of the wrong shape from the addressed
/// unit is that request's failure, and the next request waits for the line to settle.
fn stops_cycle(e: &LinkError) -> bool {
    matches!(e, LinkError::Timeout(_) | LinkError::Transport(_))
}

struct Slave {
    poller: Poller,
    unit: u8,
    timing: Timing,
    interval: Duration,
    writes: Option<mpsc::Receiver<WriteRequest>>,
    next_poll: Instant,
    backoff: Backoff,
    /// After a timeout: skip the device until then, reporting the reason.
    resting: Option<(Instant, Arc<str>)>,
    /// Why the device can never be polled on this bus.
    misplaced: Option<Arc<str>>,
    status: StatusReporter,
}

impl Slave {
    fn new(
        spec: DeviceSpec,
        writes: mpsc::Receiver<WriteRequest>,
        line: Option<&RtuLine>,
        now: Instant,
    ) -> Self {
        let (unit, misplaced) = match (&spec.connection, line) {
            (Connection::ModbusRtu(own), Some(bus)) if own.port == bus.port => (own.unit, None),
            (Connection::ModbusRtu(own), Some(bus)) => (
                own.unit,
                Some(format!(
                    "device is on port {}, not on this bus's port {}",
                    own.port, bus.port
                )),
            ),
            _ => (
                0,
                Some(format!(
                    "device is not a Modbus RTU device ({})",
                    spec.protocol_name()
                )),
            ),
        };
        let gap = line
            .map(|l| frame_gap(l.baud))
            .unwrap_or_default()
            .max(spec.inter_request_delay);
        Slave {
            poller: Poller::new(&spec),
            unit,
            timing: Timing {
                timeout: spec.timeout,
                gap,
            },
            interval: spec.poll_interval,
            writes: Some(writes),
            next_poll: now,
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_MAX),
            resting: None,
            misplaced: misplaced.map(Into::into),
            status: StatusReporter::new(&spec.id),
        }
    }

    fn span(&self) -> tracing::Span {
        info_span!("device", device = %self.poller.id, unit = self.unit)
    }

    /// Why the device cannot be addressed now, if it cannot.
    fn unavailable(&self, port: &Port, now: Instant) -> Option<Arc<str>> {
        if let Some(reason) = &self.misplaced {
            return Some(reason.clone());
        }
        if port.link.is_none() {
            return Some(port.failure.clone());
        }
        match &self.resting {
            Some((until, reason)) if now < *until => Some(reason.clone()),
            _ => None,
        }
    }

    /// Puts the device to rest after a timeout, so that it does not hold up the line.
    fn rest<O: DriverOutput>(&mut self, out: &O, reason: Arc<str>) {
        let delay = self.backoff.next_delay();
        warn!(device = %self.poller.id, unit = self.unit, error = %reason, rest = ?delay, "Modbus RTU device did not answer.");
        self.status.offline(out, &reason);
        self.resting = Some((Instant::now() + delay, reason));
    }

    fn answered<O: DriverOutput>(&mut self, out: &O) {
        self.backoff.reset();
        self.resting = None;
        self.status.online(out);
    }
}

struct Port {
    line: Option<RtuLine>,
    link: Option<Link>,
    failure: Arc<str>,
    retry_at: Instant,
    backoff: Backoff,
}

impl Port {
    fn open(&mut self) -> Result<(), Arc<str>> {
        let Some(line) = &self.line else {
            return Err("no Modbus RTU device names a port".into());
        };
        let builder = tokio_serial::new(&line.port, line.baud)
            .parity(match line.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(if line.data_bits == 7 {
                tokio_serial::DataBits::Seven
            } else {
                tokio_serial::DataBits::Eight
            })
            .stop_bits(if line.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            });
        let stream = builder
            .open_native_async()
            .map_err(|e| format!("cannot open serial port {}: {e}", line.port))?;
        let client = SerialClient::new(stream, line.unit, settle_quiet(line.baud));
        self.link = Some(Link::rtu(client));
        Ok(())
    }

    fn fail(&mut self, reason: Arc<str>) {
        let delay = self.backoff.next_delay();
        warn!(error = %reason, retry_in = ?delay, "Modbus RTU port failed.");
        self.link = None;
        self.failure = reason;
        self.retry_at = Instant::now() + delay;
    }
}

async fn run<O: DriverOutput>(
    devices: Vec<(DeviceSpec, mpsc::Receiver<WriteRequest>)>,
    line: Option<RtuLine>,
    out: O,
) {
    let now = Instant::now();
    let mut slaves: Vec<Slave> = devices
        .into_iter()
        .map(|(spec, writes)| Slave::new(spec, writes, line.as_ref(), now))
        .collect();
    let mut port = Port {
        line,
        link: None,
        failure: "port not opened yet".into(),
        retry_at: now,
        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_MAX),
    };
    for s in &mut slaves {
        if let Some(reason) = s.misplaced.clone() {
            warn!(device = %s.poller.id, %reason, "Modbus RTU device cannot be polled on this bus.");
            s.status.offline(&out, &reason);
        }
    }
    if slaves.is_empty() {
        return std::future::pending().await;
    }

    enum Event {
        Due,
        Write(usize, WriteRequest),
    }

    loop {
        let mut wake = slaves
            .iter()
            .map(|s| s.next_poll)
            .min()
            .unwrap_or(port.retry_at);
        if port.link.is_none() {
            wake = wake.min(port.retry_at);
        }
        // Unbiased: neither a flood of writes nor a saturated poll schedule starves the other.
        let event = tokio::select! {
            _ = tokio::time::sleep_until(wake) => Event::Due,
            (i, request) = next_bus_write(&mut slaves) => Event::Write(i, request),
        };
        match event {
            Event::Due => {
                let now = Instant::now();
                if port.link.is_none() && now >= port.retry_at {
                    match port.open() {
                        Ok(()) => info!("Modbus RTU port opened."),
                        Err(reason) => {
                            port.fail(reason.clone());
                            for s in slaves.iter_mut().filter(|s| s.misplaced.is_none()) {
                                s.status.offline(&out, &reason);
                            }
                        }
                    }
                }
                // One pass over the devices that are due, earliest first; then writes get
                // their chance even when the line is saturated.
                let mut due: Vec<usize> = (0..slaves.len())
                    .filter(|&i| slaves[i].next_poll <= now)
                    .collect();
                due.sort_by_key(|&i| slaves[i].next_poll);
                for i in due {
                    let span = slaves[i].span();
                    poll_slave(&mut slaves[i], &mut port, &out)
                        .instrument(span)
                        .await;
                }
            }
            Event::Write(i, request) => {
                let span = slaves[i].span();
                serve_write(&mut slaves[i], &mut port, &out, request)
                    .instrument(span)
                    .await
            }
        }
    }
}

async fn poll_slave<O: DriverOutput>(s: &mut Slave, port: &mut Port, out: &O) {
    let now = Instant::now();
    // Like tokio's `MissedTickBehavior::Delay`: a late poll pushes the schedule back
    // rather than bunching up polls to catch up.
    let next = s.next_poll + s.interval;
    s.next_poll = if next <= now { now + s.interval } else { next };
    let ts = now_micros();
    if let Some(reason) = s.unavailable(port, now) {
        if port.link.is_none() && s.misplaced.is_none() {
            s.status.offline(out, &reason);
        }
        out.samples(s.poller.bad_batch(ts, &reason)).await;
        return;
    }
    let Some(link) = port.link.as_mut() else {
        return;
    };
    link.set_unit(s.unit);
    let outcome = s.poller.poll(link, s.timing, ts, stops_cycle).await;
    if outcome.answered {
        s.answered(out);
        port.backoff.reset();
    }
    match outcome.stopped_by {
        Some(stop) if matches!(stop.error, LinkError::Timeout(_)) => s.rest(out, stop.reason),
        Some(stop) => {
            s.status.offline(out, &stop.reason);
            port.fail(stop.reason);
        }
        None => {}
    }
    out.samples(outcome.samples).await;
}

async fn serve_write<O: DriverOutput>(
    s: &mut Slave,
    port: &mut Port,
    out: &O,
    request: WriteRequest,
) {
    let WriteRequest {
        point,
        value,
        reply,
    } = request;
    let result = match s.poller.prepare_write(&point, &value) {
        Err(e) => Err(e),
        Ok(prepared) => match (s.unavailable(port, Instant::now()), port.link.as_mut()) {
            (reason, None) | (reason @ Some(_), _) => {
                Err(WriteError::Offline(reason_or_port(reason, &port.failure)))
            }
            (None, Some(link)) => {
                link.set_unit(s.unit);
                match s.poller.write(link, s.timing, &prepared).await {
                    Ok(sample) => {
                        s.answered(out);
                        let read_back = sample.value.clone().unwrap_or(value.clone());
                        out.samples(vec![sample]).await;
                        info!(device = %s.poller.id, %point, value = %read_back, "Modbus write verified.");
                        Ok(read_back)
                    }
                    Err(failure) => {
                        match &failure {
                            WriteFailure::Link(LinkError::Timeout(d)) => {
                                s.rest(out, LinkError::Timeout(*d).to_string().into())
                            }
                            WriteFailure::Link(e @ LinkError::Transport(_)) => {
                                port.fail(e.to_string().into())
                            }
                            _ => {}
                        }
                        Err(failure.into_write_error())
                    }
                }
            }
        },
    };
    if let Err(error) = &result {
        warn!(device = %s.poller.id, %point, %value, %error, "Modbus write failed.");
    }
    // The requester may have given up waiting; that is its business.
    let _ = reply.send(result);
}

fn reason_or_port(reason: Option<Arc<str>>, port_failure: &Arc<str>) -> String {
    reason.unwrap_or_else(|| port_failure.clone()).to_string()
}

/// The next write for any device on the bus, with the device's index. Pends forever when
/// no device has a write channel left.
async fn next_bus_write(slaves: &mut [Slave]) -> (usize, WriteRequest) {
    std::future::poll_fn(|cx| {
        for (i, s) in slaves.iter_mut().enumerate() {
            let Some(rx) = &mut s.writes else { continue };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(request)) => return Poll::Ready((i, request)),
                Poll::Ready(None) => s.writes = None,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}
