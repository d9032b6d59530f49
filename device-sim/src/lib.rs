//! Simulated field devices that speak the real protocols, for the demo and for tests: an
//! Eastron SDM630 energy meter over Modbus TCP ([`EnergyMeterSim`]) and a Tasmota
//! environment sensor over MQTT ([`MqttSensorSim`]).
//!
//! The models behind them ([`meter`], [`environment`]) are pure and take time as an
//! argument; only [`modbus_server`] and [`mqtt_sensor`] do IO. The library parses no config,
//! installs no tracing subscriber and binds no port of its own choosing: the caller (the
//! `smartpark sim` command or a test) passes a listener or a broker address and owns the
//! runtime. BACnet devices and Modbus RTU are not simulated here.

pub mod clock;
pub mod environment;
pub mod meter;
pub mod modbus_server;
pub mod mqtt_sensor;
pub mod sdm630;

pub use environment::{EnvironmentReading, EnvironmentState, tasmota_sensor_payload};
pub use meter::{MeterState, Readings, daily_power_kw};
pub use modbus_server::{EnergyMeterSim, serve_energy_meter};
pub use mqtt_sensor::{MqttSensorSim, run_mqtt_sensor};
pub use sdm630::Sdm630;
