//! What a driver under test reports, collected in order: shared by the Modbus and BACnet
//! test support modules (included into each with `#[path]`).

use std::future::Future;
use std::time::Duration;

use device_drivers::{DeviceStatus, DriverOutput, Sample};
use tokio::sync::mpsc;

/// What the drivers reported, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Samples(Vec<Sample>),
    Status(String, DeviceStatus),
}

#[derive(Clone)]
pub struct Collector {
    tx: mpsc::UnboundedSender<Event>,
}

pub fn collector() -> (Collector, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector { tx }, Events { rx })
}

impl DriverOutput for Collector {
    fn samples(&self, batch: Vec<Sample>) -> impl Future<Output = ()> + Send {
        let _ = self.tx.send(Event::Samples(batch));
        std::future::ready(())
    }

    fn status(&self, device: &str, status: DeviceStatus) {
        let _ = self.tx.send(Event::Status(device.to_string(), status));
    }
}

pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub async fn next(&mut self) -> Event {
        self.rx.recv().await.expect("the drivers are gone")
    }

    /// Skips events until `f` picks one.
    pub async fn until<T>(&mut self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            let event = self.next().await;
            if let Some(found) = f(&event) {
                return found;
            }
        }
    }

    /// Waits for a status of `device` that `f` accepts.
    #[allow(dead_code)] // Not every test binary asks for statuses.
    pub async fn status(
        &mut self,
        device: &str,
        f: impl Fn(&DeviceStatus) -> bool,
    ) -> DeviceStatus {
        self.until(|e| match e {
            Event::Status(d, s) if d == device && f(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// Every event that arrives within `window`.
    #[allow(dead_code)] // Not every test binary collects a window.
    pub async fn during(&mut self, window: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            out.push(e);
        }
        out
    }
}
