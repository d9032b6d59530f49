//! The Modbus TCP driver: one device, one connection, one future that runs until aborted.
//!
//! It connects, polls on the device's interval, serves writes between polls, and on a
//! timeout or a broken connection reports the device offline and reconnects with backoff.
//! It does not share connections between devices (each device behind a gateway gets its
//! own) and does not pipeline requests: one request is in flight at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, info, info_span, warn};

use crate::device::{Connection, DeviceSpec};
use crate::driver::{Backoff, DriverOutput, WriteError, WriteRequest};
use crate::modbus::link::{Link, LinkError, Timing};
use crate::modbus::poll::{Poller, WriteFailure};
use crate::modbus::{BACKOFF_BASE, BACKOFF_MAX, StatusReporter, next_write};
use crate::sample::now_micros;

/// Runs one Modbus TCP device until the task is aborted.
///
/// Every `poll_interval` all points go out in one `out.samples` batch with one timestamp:
/// read values when connected, bad samples with the reason when not. Writes from `writes`
/// are served between polls and answered with the value read back; while the device is
/// down they are refused at once with [`WriteError::Offline`] rather than queued, so that
/// no stale write lands when the device comes back.
pub async fn run_tcp_device<O: DriverOutput>(
    spec: DeviceSpec,
    out: O,
    writes: mpsc::Receiver<WriteRequest>,
) {
    let span = info_span!("modbus_tcp", device = %spec.id);
    run(spec, out, writes).instrument(span).await
}

/// A timeout on TCP means the stream can no longer be trusted: a late reply would arrive
/// with an old transaction id and fail every later request. Exceptions are answers.
fn breaks_connection(e: &LinkError) -> bool {
    !matches!(e, LinkError::Exception(_))
}

async fn run<O: DriverOutput>(spec: DeviceSpec, out: O, writes: mpsc::Receiver<WriteRequest>) {
    let poller = Poller::new(&spec);
    let timing = Timing {
        timeout: spec.timeout,
        gap: spec.inter_request_delay,
    };
    let mut writes = Some(writes);
    let mut status = StatusReporter::new(&spec.id);
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut link: Option<Link> = None;
    let mut down_reason: Arc<str> = "not connected yet".into();
    let mut retry_at = Instant::now();
    let mut ticks = tokio::time::interval(spec.poll_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    enum Event {
        Connect,
        Poll,
        Write(WriteRequest),
    }

    loop {
        let event = tokio::select! {
            // Connecting comes first so that the first poll finds the connection made.
            biased;
            _ = tokio::time::sleep_until(retry_at), if link.is_none() => Event::Connect,
            _ = ticks.tick() => Event::Poll,
            request = next_write(&mut writes) => Event::Write(request),
        };
        match event {
            Event::Connect => match connect(&spec).await {
                Ok(ctx) => {
                    // Online only once the device answers: a stopped device's kernel still
                    // accepts connections, and a link that only connects is no use.
                    info!(address = %address_of(&spec), "Modbus TCP connected.");
                    link = Some(Link::tcp(ctx));
                }
                Err(reason) => {
                    let delay = backoff.next_delay();
                    warn!(error = %reason, retry_in = ?delay, "Modbus TCP connect failed.");
                    retry_at = Instant::now() + delay;
                    status.offline(&out, &reason);
                    down_reason = reason;
                }
            },
            Event::Poll => {
                let ts = now_micros();
                let Some(l) = &mut link else {
                    out.samples(poller.bad_batch(ts, &down_reason)).await;
                    continue;
                };
                let outcome = poller.poll(l, timing, ts, breaks_connection).await;
                if outcome.answered {
                    backoff.reset();
                    status.online(&out);
                }
                out.samples(outcome.samples).await;
                if let Some(stop) = outcome.stopped_by {
                    let delay = backoff.next_delay();
                    warn!(error = %stop.reason, retry_in = ?delay, "Modbus TCP read failed, reconnecting.");
                    link = None;
                    retry_at = Instant::now() + delay;
                    down_reason = stop.reason;
                    status.offline(&out, &down_reason);
                }
            }
            Event::Write(request) => {
                let WriteRequest {
                    point,
                    value,
                    reply,
                } = request;
                let result = match (poller.prepare_write(&point, &value), &mut link) {
                    (Err(e), _) => Err(e),
                    (Ok(_), None) => Err(WriteError::Offline(down_reason.to_string())),
                    (Ok(prepared), Some(l)) => match poller.write(l, timing, &prepared).await {
                        Ok(sample) => {
                            let read_back = sample.value.clone().unwrap_or(value.clone());
                            out.samples(vec![sample]).await;
                            info!(%point, value = %read_back, "Modbus write verified.");
                            Ok(read_back)
                        }
                        Err(failure) => {
                            if let WriteFailure::Link(e) = &failure
                                && breaks_connection(e)
                            {
                                let delay = backoff.next_delay();
                                link = None;
                                retry_at = Instant::now() + delay;
                                down_reason = e.to_string().into();
                                status.offline(&out, &down_reason);
                            }
                            Err(failure.into_write_error())
                        }
                    },
                };
                if let Err(error) = &result {
                    warn!(%point, %value, %error, "Modbus write failed.");
                }
                // The requester may have given up waiting; that is its business.
                let _ = reply.send(result);
            }
        }
    }
}

fn address_of(spec: &DeviceSpec) -> &str {
    match &spec.connection {
        Connection::ModbusTcp { address, .. } => address,
        _ => "",
    }
}

/// Resolves and connects, within the device's timeout: an unreachable host can otherwise
/// hold a SYN for minutes.
async fn connect(spec: &DeviceSpec) -> Result<tokio_modbus::client::Context, Arc<str>> {
    let Connection::ModbusTcp { address, unit } = &spec.connection else {
        return Err(format!(
            "device {} is not a Modbus TCP device ({})",
            spec.id,
            spec.protocol_name()
        )
        .into());
    };
    let attempt = async {
        let addr: SocketAddr = tokio::net::lookup_host(address.as_str())
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(*unit))
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!(
            "cannot connect to {address}: {}",
            LinkError::Timeout(spec.timeout)
        )
        .into()),
    }
}
