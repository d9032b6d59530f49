//! Modbus TCP and RTU drivers, on tokio-modbus.
//!
//! [`run_tcp_device`] runs one TCP device; [`run_rtu_bus`] runs every device on one serial
//! line, in turn. Both poll a device's points in the block reads that [`plan`] computes,
//! decode them with [`codec`], and serve writes between polls, verified by reading back.
//!
//! The drivers spawn nothing (the node runs each future as a task and aborts it to stop
//! it), store nothing and keep no history: a failed read is a bad sample with its reason,
//! never a zero or an old value. Modbus ASCII, RTU over TCP, device identification and
//! the diagnostics functions are not supported.

pub mod codec;
mod link;
pub mod plan;
mod poll;
mod rtu;
mod serial;
mod tcp;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::driver::{DeviceStatus, DriverOutput, WriteRequest};

pub use link::{LinkError, exception_name};
pub use rtu::run_rtu_bus;
pub use tcp::run_tcp_device;

/// Reconnect backoff: first retry after 100 to 200 ms, then doubling up to 30 s.
const BACKOFF_BASE: std::time::Duration = std::time::Duration::from_millis(200);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Reports a device's status to the output only when it changes, so that a device that
/// stays down is not re-announced every poll.
#[derive(Debug)]
struct StatusReporter {
    device: String,
    last: Option<DeviceStatus>,
}

impl StatusReporter {
    fn new(device: &str) -> Self {
        StatusReporter {
            device: device.to_string(),
            last: None,
        }
    }

    fn online<O: DriverOutput>(&mut self, out: &O) {
        self.set(out, DeviceStatus::Online);
    }

    fn offline<O: DriverOutput>(&mut self, out: &O, reason: &Arc<str>) {
        self.set(
            out,
            DeviceStatus::Offline {
                reason: reason.clone(),
            },
        );
    }

    fn set<O: DriverOutput>(&mut self, out: &O, status: DeviceStatus) {
        // A device that goes down for a new reason is reported again: the reason is news.
        if self.last.as_ref() != Some(&status) {
            out.status(&self.device, status.clone());
            self.last = Some(status);
        }
    }
}

/// The next write request; pends forever once every sender is gone, so that a device whose
/// write channel closed keeps polling.
async fn next_write(writes: &mut Option<mpsc::Receiver<WriteRequest>>) -> WriteRequest {
    loop {
        match writes {
            Some(rx) => match rx.recv().await {
                Some(request) => return request,
                None => *writes = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}
