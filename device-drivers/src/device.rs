//! A device as a site config names it: its id, its profile, and how to reach it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::profile::{Profile, Protocol, is_name};

/// The file form of a device, one `[[device]]` table of a site config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    /// A profile id from `firmware-configs/profiles/`.
    pub profile: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Pause between two requests to the same device (or the same serial bus).
    #[serde(default)]
    pub inter_request_delay_ms: u64,
    pub modbus_tcp: Option<ModbusTcpConfig>,
    pub modbus_rtu: Option<ModbusRtuConfig>,
    pub mqtt: Option<MqttDeviceConfig>,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpConfig {
    /// `host:port`.
    pub address: String,
    #[serde(default = "default_unit")]
    pub unit: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuConfig {
    /// The serial device, for example `/dev/ttyUSB0`. Devices that name the same port share
    /// one bus and are polled in turn.
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    pub unit: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

fn default_unit() -> u8 {
    1
}

fn default_baud() -> u32 {
    9600
}

fn default_data_bits() -> u8 {
    8
}

fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDeviceConfig {
    /// What `{device}` stands for in the profile's topics; the device id when left out.
    pub topic_id: Option<String>,
}

/// A checked device, ready for a driver.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: String,
    pub name: Option<String>,
    pub profile: Arc<Profile>,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub inter_request_delay: Duration,
    pub connection: Connection,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    ModbusTcp { address: String, unit: u8 },
    ModbusRtu(RtuLine),
    Mqtt { topic_id: String },
}

/// A serial line and the unit id of one device on it.
#[derive(Debug, Clone, PartialEq)]
pub struct RtuLine {
    pub port: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    pub unit: u8,
}

impl DeviceSpec {
    pub fn protocol_name(&self) -> &'static str {
        match self.connection {
            Connection::ModbusTcp { .. } => "modbus-tcp",
            Connection::ModbusRtu(_) => "modbus-rtu",
            Connection::Mqtt { .. } => "mqtt",
        }
    }
}

impl DeviceConfig {
    /// Checks the device against the known profiles. `key` is where the device stands in its
    /// file (for example `device[2]`), so that errors point at it.
    pub fn build(
        self,
        file: &Path,
        text: &str,
        key: &str,
        profiles: &BTreeMap<String, Arc<Profile>>,
    ) -> Result<DeviceSpec, ConfigError> {
        let invalid = |field: &str, reason: String| {
            ConfigError::invalid(file, text, format!("{key}.{field}"), reason)
        };
        if !is_name(&self.id) {
            return Err(invalid(
                "id",
                format!(
                    "{:?} is not a valid device id (letters, digits, '-', '_', '.')",
                    self.id
                ),
            ));
        }
        let profile = profiles.get(&self.profile).cloned().ok_or_else(|| {
            invalid(
                "profile",
                format!(
                    "no profile {:?} (known: {})",
                    self.profile,
                    profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 86_400_000 {
            return Err(invalid(
                "poll_interval_ms",
                "must be between 1 and 86400000".into(),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(invalid("timeout_ms", "must be between 1 and 600000".into()));
        }
        let connection = match (self.modbus_tcp, self.modbus_rtu, self.mqtt) {
            (Some(tcp), None, None) => {
                if profile.protocol != Protocol::Modbus {
                    return Err(invalid(
                        "modbus_tcp",
                        format!("profile {:?} is not a Modbus profile", profile.id),
                    ));
                }
                if tcp
                    .address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(invalid(
                        "modbus_tcp.address",
                        format!("{:?} is not host:port", tcp.address),
                    ));
                }
                Connection::ModbusTcp {
                    address: tcp.address,
                    unit: tcp.unit,
                }
            }
            (None, Some(rtu), None) => {
                if profile.protocol != Protocol::Modbus {
                    return Err(invalid(
                        "modbus_rtu",
                        format!("profile {:?} is not a Modbus profile", profile.id),
                    ));
                }
                if rtu.unit == 0 || rtu.unit > 247 {
                    return Err(invalid(
                        "modbus_rtu.unit",
                        format!("unit {} is outside 1..=247", rtu.unit),
                    ));
                }
                if !matches!(rtu.data_bits, 7 | 8) {
                    return Err(invalid("modbus_rtu.data_bits", "must be 7 or 8".into()));
                }
                if !matches!(rtu.stop_bits, 1 | 2) {
                    return Err(invalid("modbus_rtu.stop_bits", "must be 1 or 2".into()));
                }
                Connection::ModbusRtu(RtuLine {
                    port: rtu.port,
                    baud: rtu.baud,
                    parity: rtu.parity,
                    data_bits: rtu.data_bits,
                    stop_bits: rtu.stop_bits,
                    unit: rtu.unit,
                })
            }
            (None, None, Some(mqtt)) => {
                if profile.protocol != Protocol::Mqtt {
                    return Err(invalid(
                        "mqtt",
                        format!("profile {:?} is not an MQTT profile", profile.id),
                    ));
                }
                let topic_id = mqtt.topic_id.unwrap_or_else(|| self.id.clone());
                if topic_id.is_empty() || topic_id.contains(['#', '+', '/']) {
                    return Err(invalid(
                        "mqtt.topic_id",
                        format!("{topic_id:?} must be one topic level without wildcards"),
                    ));
                }
                Connection::Mqtt { topic_id }
            }
            _ => {
                return Err(invalid(
                    "id",
                    "a device needs exactly one of modbus_tcp, modbus_rtu or mqtt".into(),
                ));
            }
        };
        Ok(DeviceSpec {
            id: self.id,
            name: self.name,
            profile,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            inter_request_delay: Duration::from_millis(self.inter_request_delay_ms),
            connection,
        })
    }
}
