//! Simulated field devices that speak the real protocols, for the demo and for tests: an
//! Eastron SDM630 energy meter over Modbus TCP ([`EnergyMeterSim`]), a Tasmota environment
//! sensor over MQTT ([`MqttSensorSim`]), an air-handling unit controller over BACnet/IP
//! ([`BacnetAhuSim`]), door controllers ([`DoorControllerSim`]) and the plate cameras,
//! barriers, displays and pay terminals of a car park's lanes ([`PlateCameraSim`]), the last
//! two following the contract of `docs/mqtt-topics.md` ([`contract`]), and an online payment
//! provider that signs and notifies as WeChat Pay's API v2 does ([`pay_provider`]).
//!
//! The models behind them ([`meter`], [`environment`], [`ahu`], [`door`], [`parking`],
//! [`plate`]) are pure and take time as an argument; only [`modbus_server`], [`mqtt_sensor`],
//! [`bacnet_ahu`], [`door_controller`] and [`plate_camera`] do IO. The library parses no
//! config, installs no tracing subscriber and binds no port of its own choosing: the caller
//! (the `smartpark sim` command, the demo or a test) passes a listener, an address to bind or
//! a broker address and owns the runtime (the BACnet controller's server runs its tasks on
//! that runtime). Modbus RTU is not simulated here, and the simulators decide nothing that
//! the edge decides (who may pass, what parking costs).

pub mod ahu;
pub mod bacnet_ahu;
pub mod clock;
pub mod contract;
pub mod door;
pub mod door_controller;
pub mod environment;
pub mod meter;
pub mod modbus_server;
pub mod mqtt_sensor;
pub mod parking;
pub mod pay_provider;
pub mod plate;
pub mod plate_camera;
pub mod sdm630;

mod mqtt_link;

pub use ahu::{AhuReadings, AhuSettings, AhuState};
pub use bacnet_ahu::{BacnetAhu, BacnetAhuSim, serve_bacnet_ahu};
pub use clock::SimClock;
pub use contract::Direction;
pub use door::{CredentialConfig, CredentialRole, DoorCounts, demo_credentials, reads_per_minute};
pub use door_controller::{DoorConfig, DoorControllerConfig, DoorControllerSim, DoorStats};
pub use environment::{EnvironmentReading, EnvironmentState, tasmota_sensor_payload};
pub use meter::{MeterState, Readings, daily_power_kw};
pub use modbus_server::{EnergyMeterSim, serve_energy_meter};
pub use mqtt_sensor::{MqttSensorSim, run_mqtt_sensor};
pub use parking::{LaneConfig, LotConfig, LotCounts, PlateConfig, PlateRole, demo_plates};
pub use pay_provider::{Merchant, PayProviderSim};
pub use plate::{PlateGenerator, is_valid_plate};
pub use plate_camera::{LotStats, PlateCameraConfig, PlateCameraSim};
pub use sdm630::Sdm630;
