//! The edge node: the runtime of one building. It wires the device drivers to the point
//! bus and the SQLite store, runs the building's MQTT broker, and serves the LAN API.
//!
//! Everything a building needs to run is here and works without the hub.

pub mod alarms;
pub mod api;
pub mod broker;
pub mod config;
pub mod console;
pub mod docs;
pub mod events;
pub mod field;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod park;
pub mod rollup;
pub mod store;
pub mod sync;
pub mod views;

pub use config::{DEFAULT_CONFIG, EdgeSettings};
pub use node::EdgeNode;
