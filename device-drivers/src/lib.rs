//! Device drivers: the [`driver`] contract, Modbus TCP and RTU through tokio-modbus, MQTT
//! device mapping, BACnet/IP through bacnet-client, and device profiles parsed from
//! `firmware-configs/`.
//!
//! Drivers turn field protocols into [`sample::Sample`]s and carry writes back. They make
//! no decisions and store nothing, know no other smartpark crate, and spawn no tasks or
//! threads: the node runs each device's future as a task of its own. The one exception is
//! inside bacnet-client, which runs the receive and dispatch of a [`bacnet::Network`] as
//! tasks of the runtime it is opened on, until the network is dropped.

pub mod bacnet;
pub mod config;
pub mod device;
pub mod driver;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod profile;
pub mod sample;

pub use device::{Connection, DeviceConfig, DeviceSpec};
pub use driver::{DeviceStatus, DriverOutput, WriteError, WriteRequest};
pub use profile::Profile;
pub use sample::{PointKey, Quality, Sample, Timestamp, Value, now_micros};
