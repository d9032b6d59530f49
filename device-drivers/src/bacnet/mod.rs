//! BACnet/IP devices, on the bacnet-client crate: a driver per device ([`run_device`]) and
//! discovery of a network's devices and objects ([`discover`]).
//!
//! Devices that name the same local UDP port share one [`Network`]: one socket, one
//! transaction state machine, one foreign-device registration. The network is opened by
//! the first device task that needs it and closed when the last handle is dropped. Each
//! device reads its points with ReadPropertyMultiple in chunks that fit the device's
//! maximum APDU (or larger, segmented, when the profile asks), subscribes to changes of
//! value where its profile asks and the device accepts, and writes present values at a
//! priority, relinquishing with NULL.
//!
//! It does not route to other BACnet networks through routers (devices behind a router
//! are reached only when the router answers for them on this network), does not serve
//! objects of its own, does not read schedules, trends, alarms or events, and speaks
//! neither BACnet/IPv6, MS/TP nor BACnet/SC. The bacnet-client crate runs its receive
//! and dispatch as tasks of the runtime the network is opened on; they stop when the
//! network is dropped.

mod discover;
mod driver;
pub mod value;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bacnet_client::client::BACnetClient;
use bacnet_transport::bip::{BipMode, BipTransport, ForeignDeviceConfig};
use tokio::sync::{Mutex, oneshot};

use crate::device::{BacnetPort, Connection, DeviceSpec};
use crate::driver::{WriteError, WriteRequest};
use crate::sample::Value;

pub use discover::{DiscoverOptions, FoundDevice, FoundObject, discover, draft_profile};
pub use driver::{run_device, scan_once};

/// The client type every BACnet task uses.
pub(crate) type Client = BACnetClient<BipTransport>;

/// Why a BACnet operation failed: the network could not be opened, or the peer did not
/// answer as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BacnetError {
    #[error("cannot open BACnet/IP port {local}: {reason}")]
    Open { local: SocketAddrV4, reason: String },
    #[error("{0}")]
    Request(String),
}

/// A write to a BACnet point: a value at a priority, or `None` to relinquish the point's
/// slot at that priority (the present value then falls to the next priority in use, or to
/// the relinquish default). The reply carries the present value read back.
#[derive(Debug)]
pub struct Command {
    pub point: String,
    pub value: Option<Value>,
    /// 1 (highest) to 16; the profile's priority for the point when `None`.
    pub priority: Option<u8>,
    pub reply: oneshot::Sender<Result<Value, WriteError>>,
}

/// A plain write request is a command at the point's own priority.
impl From<WriteRequest> for Command {
    fn from(request: WriteRequest) -> Self {
        Command {
            point: request.point,
            value: Some(request.value),
            priority: None,
            reply: request.reply,
        }
    }
}

/// One local BACnet/IP port shared by the devices that name it. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<NetworkInner>,
}

struct NetworkInner {
    port: BacnetPort,
    apdu_timeout: Duration,
    client: Mutex<Option<Arc<Client>>>,
    next_process_id: AtomicU32,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("port", &self.inner.port)
            .field("apdu_timeout", &self.inner.apdu_timeout)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// A network on `port`, not yet opened: the first request opens it. `apdu_timeout` is
    /// how long one request waits for its answer before it is sent again (once).
    pub fn new(port: BacnetPort, apdu_timeout: Duration) -> Network {
        Network {
            inner: Arc::new(NetworkInner {
                port,
                apdu_timeout,
                client: Mutex::new(None),
                next_process_id: AtomicU32::new(1),
            }),
        }
    }

    pub fn port(&self) -> &BacnetPort {
        &self.inner.port
    }

    pub fn apdu_timeout(&self) -> Duration {
        self.inner.apdu_timeout
    }

    /// The open client, opening the socket (and registering with the BBMD) on first use.
    pub(crate) async fn client(&self) -> Result<Arc<Client>, BacnetError> {
        let mut slot = self.inner.client.lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let port = &self.inner.port;
        let mut builder = BACnetClient::bip_builder()
            .interface(*port.local.ip())
            .port(port.local.port())
            .broadcast_address(*port.broadcast.ip())
            .apdu_timeout_ms(self.inner.apdu_timeout.as_millis().max(1) as u64)
            .apdu_retries(1)
            // Enough for a burst of notifications from every COV point of a large device.
            .cov_channel_capacity(4096);
        if let Some(bbmd) = port.bbmd {
            builder = builder.mode(BipMode::Foreign(ForeignDeviceConfig {
                bbmd_ip: *bbmd.address.ip(),
                bbmd_port: bbmd.address.port(),
                ttl: bbmd.ttl_s,
                renewal_interval: None,
            }));
        }
        let client = builder.build().await.map_err(|e| BacnetError::Open {
            local: port.local,
            reason: e.to_string(),
        })?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A subscriber process identifier no other device task on this network uses, so
    /// that COV notifications find their device.
    pub(crate) fn process_id(&self) -> u32 {
        self.inner.next_process_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether Who-Is can go out as this port's own broadcast: only when the devices listen
    /// on the port this client sends from. Otherwise it is sent to the broadcast address
    /// as a unicast datagram, which devices answer just the same.
    pub(crate) fn broadcasts_natively(&self) -> bool {
        let port = &self.inner.port;
        port.bbmd.is_some() || port.broadcast.port() == port.local.port()
    }
}

/// The BACnet devices of a site, grouped by the local port they share, each group with its
/// [`Network`]. Devices on one port must agree on its local address, broadcast address and
/// BBMD; the network's APDU timeout is the longest of their timeouts.
pub fn plan_networks(devices: &[DeviceSpec]) -> Result<Vec<(Network, Vec<DeviceSpec>)>, String> {
    let mut groups: BTreeMap<u16, (BacnetPort, Duration, Vec<DeviceSpec>)> = BTreeMap::new();
    for spec in devices {
        let Connection::Bacnet(link) = &spec.connection else {
            continue;
        };
        let entry = groups
            .entry(link.port.local.port())
            .or_insert_with(|| (link.port.clone(), spec.timeout, Vec::new()));
        if entry.0 != link.port {
            return Err(format!(
                "devices {} and {} share local BACnet port {} but differ in its local \
                 address, broadcast address or BBMD",
                entry.2[0].id,
                spec.id,
                link.port.local.port()
            ));
        }
        if let Some(other) = entry.2.iter().find(|d| match &d.connection {
            Connection::Bacnet(l) => l.instance == link.instance,
            _ => false,
        }) {
            return Err(format!(
                "devices {} and {} are both BACnet device {} on port {}",
                other.id,
                spec.id,
                link.instance,
                link.port.local.port()
            ));
        }
        entry.1 = entry.1.max(spec.timeout);
        entry.2.push(spec.clone());
    }
    Ok(groups
        .into_values()
        .map(|(port, timeout, specs)| (Network::new(port, timeout), specs))
        .collect())
}

/// The six-octet B/IP MAC of an address: the IPv4 address, then the port, big-endian.
pub(crate) fn mac_of(address: SocketAddrV4) -> [u8; 6] {
    let [a, b, c, d] = address.ip().octets();
    let [hi, lo] = address.port().to_be_bytes();
    [a, b, c, d, hi, lo]
}

/// The address of a six-octet B/IP MAC.
pub(crate) fn address_of(mac: &[u8]) -> Option<SocketAddrV4> {
    match mac {
        [a, b, c, d, hi, lo] => Some(SocketAddrV4::new(
            std::net::Ipv4Addr::new(*a, *b, *c, *d),
            u16::from_be_bytes([*hi, *lo]),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_the_address_then_the_port() {
        let a: SocketAddrV4 = "127.0.0.2:47808".parse().unwrap();
        assert_eq!(mac_of(a), [127, 0, 0, 2, 0xBA, 0xC0]);
        assert_eq!(address_of(&mac_of(a)), Some(a));
        assert_eq!(address_of(&[1, 2, 3]), None);
    }
}
