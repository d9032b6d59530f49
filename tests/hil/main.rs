//! Hardware-in-the-loop tests: the real `smartpark` binary against real third-party peers
//! (pymodbus devices over TCP and RTU, Mosquitto clients), on loopback ports the OS picks.
//! `scripts/test` prepares the peers (a Python venv with pymodbus, mosquitto-clients, socat).

mod support;

mod config;
mod crash;
mod demo;
mod modbus;
mod mqtt;
mod park;
mod sync;
