//! The driver contract: what every protocol driver promises the node.
//!
//! A running device produces [`Sample`]s and accepts [`WriteRequest`]s. Each device (or
//! each serial bus, where devices share a wire) is one future that the node spawns as its
//! own task, so a dead or slow device never delays another; drivers spawn no threads or
//! tasks of their own. A failed read yields bad-quality samples with the reason, never a
//! zero or a repeated old value. Lost connections are retried with exponential backoff
//! and jitter.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sample::{Sample, Value};

/// Where a driver sends what it produces. The node implements it; `samples` may wait, which
/// is how a full pipeline slows the drivers down instead of dropping data.
pub trait DriverOutput: Clone + Send + Sync + 'static {
    fn samples(&self, batch: Vec<Sample>) -> impl Future<Output = ()> + Send;
    fn status(&self, device: &str, status: DeviceStatus);
}

/// A device's connection state as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    Online,
    Offline { reason: Arc<str> },
}

/// A request to write one point of one device; the reply carries the value read back.
#[derive(Debug)]
pub struct WriteRequest {
    pub point: String,
    pub value: Value,
    pub reply: oneshot::Sender<Result<Value, WriteError>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("point {0} does not exist on this device")]
    UnknownPoint(String),
    #[error("point {0} is not writable")]
    NotWritable(String),
    #[error("value {value} is out of range for point {point} ({reason})")]
    OutOfRange {
        point: String,
        value: String,
        reason: String,
    },
    #[error("device is offline: {0}")]
    Offline(String),
    #[error("device refused the write: {0}")]
    Refused(String),
    #[error("read-back after the write gave {read_back}, expected {written}")]
    VerifyFailed { written: String, read_back: String },
    #[error("write timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the driver has stopped")]
    DriverStopped,
}

/// Exponential backoff with full jitter, for reconnects.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random between half and all of `base * 2^attempt`,
    /// capped at `max`, so that many devices that failed together do not retry together.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter = fastrand::u64(0..=(ceiling - half).as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(5));
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_millis(2500),
            "late delay {late:?} should be near the cap"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
