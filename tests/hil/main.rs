//! Hardware-in-the-loop tests: the real `smartpark` binary against real third-party peers
//! (pymodbus devices over TCP and RTU, bacpypes3 BACnet/IP devices, Mosquitto clients), on
//! loopback ports the OS picks. `scripts/test` prepares the peers (a Python venv with pymodbus
//! and bacpypes3, mosquitto-clients, socat).

mod support;

mod alarms;
mod bacnet;
mod broker;
mod config;
mod console;
mod crash;
mod credential_secrecy;
mod demo;
mod failover;
mod hub_console;
mod hub_openapi;
mod influx;
mod lab;
mod master;
mod modbus;
mod mqtt;
mod openapi;
mod park;
mod sync;
mod tls;
