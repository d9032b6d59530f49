//! A device as a site config names it: its id, its profile, and how to reach it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
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
    pub bacnet: Option<BacnetDeviceConfig>,
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

/// How to reach a BACnet/IP device and from which local port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacnetDeviceConfig {
    /// The device's instance number (its device object identifier).
    pub instance: u32,
    /// `ip` or `ip:port` (47808 when left out). Left out, the device is found by a Who-Is
    /// for its instance.
    pub address: Option<String>,
    /// Local UDP port. Devices naming the same port share one socket and its settings.
    #[serde(default = "default_bacnet_port")]
    pub local_port: u16,
    /// Local interface address; all interfaces when left out.
    pub local_address: Option<Ipv4Addr>,
    /// Where Who-Is broadcasts go, `ip` or `ip:port`; `255.255.255.255:47808` by default.
    pub broadcast_address: Option<String>,
    /// Register as a foreign device with this BBMD (for a device on another subnet).
    pub bbmd: Option<BbmdConfig>,
    /// Requests that may be outstanding to this device at once (most devices want 1).
    #[serde(default = "one_u8")]
    pub max_in_flight: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BbmdConfig {
    /// `ip` or `ip:port` of the BBMD.
    pub address: String,
    /// Time to live of the registration, renewed at half of it.
    #[serde(default = "default_bbmd_ttl")]
    pub ttl_s: u16,
}

/// BACnet/IP's own port, 0xBAC0.
pub const BACNET_PORT: u16 = 47808;

fn default_bacnet_port() -> u16 {
    BACNET_PORT
}

fn default_bbmd_ttl() -> u16 {
    60
}

fn one_u8() -> u8 {
    1
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
    Bacnet(BacnetLink),
}

/// A BACnet device and the local BACnet/IP port it is reached through.
#[derive(Debug, Clone, PartialEq)]
pub struct BacnetLink {
    pub instance: u32,
    /// Where the device is; `None` to find it by a Who-Is for its instance.
    pub address: Option<SocketAddrV4>,
    pub port: BacnetPort,
    pub max_in_flight: u8,
}

/// A local BACnet/IP port: what every device sharing it must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BacnetPort {
    pub local: SocketAddrV4,
    pub broadcast: SocketAddrV4,
    pub bbmd: Option<Bbmd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bbmd {
    pub address: SocketAddrV4,
    pub ttl_s: u16,
}

/// Parses `ip` or `ip:port`, with `default_port` when the port is left out.
pub fn parse_ipv4_endpoint(text: &str, default_port: u16) -> Result<SocketAddrV4, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(SocketAddrV4::new(ip, default_port));
    }
    text.parse::<SocketAddrV4>()
        .map_err(|_| format!("{text:?} is not an IPv4 address with an optional :port"))
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
            Connection::Bacnet(_) => "bacnet",
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
        let connection = match (self.modbus_tcp, self.modbus_rtu, self.mqtt, self.bacnet) {
            (None, None, None, Some(b)) => {
                if profile.protocol != Protocol::Bacnet {
                    return Err(invalid(
                        "bacnet",
                        format!("profile {:?} is not a BACnet profile", profile.id),
                    ));
                }
                if b.instance > crate::profile::MAX_BACNET_INSTANCE {
                    return Err(invalid(
                        "bacnet.instance",
                        format!(
                            "instance {} is above {}",
                            b.instance,
                            crate::profile::MAX_BACNET_INSTANCE
                        ),
                    ));
                }
                let address = b
                    .address
                    .as_deref()
                    .map(|a| parse_ipv4_endpoint(a, BACNET_PORT))
                    .transpose()
                    .map_err(|reason| invalid("bacnet.address", reason))?;
                if let Some(a) = address
                    && (a.port() == 0 || a.ip().is_unspecified() || a.ip().is_broadcast())
                {
                    return Err(invalid(
                        "bacnet.address",
                        format!("{a} is not the address of one device"),
                    ));
                }
                let broadcast = b
                    .broadcast_address
                    .as_deref()
                    .map(|a| parse_ipv4_endpoint(a, BACNET_PORT))
                    .transpose()
                    .map_err(|reason| invalid("bacnet.broadcast_address", reason))?
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::BROADCAST, BACNET_PORT));
                let bbmd = match b.bbmd {
                    Some(bbmd) => {
                        let address = parse_ipv4_endpoint(&bbmd.address, BACNET_PORT)
                            .map_err(|reason| invalid("bacnet.bbmd.address", reason))?;
                        if bbmd.ttl_s < 2 {
                            return Err(invalid(
                                "bacnet.bbmd.ttl_s",
                                "must be at least 2 seconds".into(),
                            ));
                        }
                        Some(Bbmd {
                            address,
                            ttl_s: bbmd.ttl_s,
                        })
                    }
                    None => None,
                };
                if b.max_in_flight == 0 || b.max_in_flight > 16 {
                    return Err(invalid(
                        "bacnet.max_in_flight",
                        "must be between 1 and 16".into(),
                    ));
                }
                Connection::Bacnet(BacnetLink {
                    instance: b.instance,
                    address,
                    port: BacnetPort {
                        local: SocketAddrV4::new(
                            b.local_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                            b.local_port,
                        ),
                        broadcast,
                        bbmd,
                    },
                    max_in_flight: b.max_in_flight,
                })
            }
            (Some(tcp), None, None, None) => {
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
            (None, Some(rtu), None, None) => {
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
            (None, None, Some(mqtt), None) => {
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
                    "a device needs exactly one of modbus_tcp, modbus_rtu, mqtt or bacnet".into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_toml;

    const AHU: &str = r#"
id = "ahu"
protocol = "bacnet"
manufacturer = "Acme"
model = "AHU-1"
source = "made up for a test"

[[point]]
name = "supply_temp"
object_type = "analog-input"
instance = 1
"#;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Site {
        device: Vec<DeviceConfig>,
    }

    fn build(devices: &str) -> Result<Vec<DeviceSpec>, ConfigError> {
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "ahu".to_string(),
            Arc::new(Profile::parse(Path::new("ahu.toml"), AHU).unwrap()),
        );
        let file = Path::new("site.toml");
        let site: Site = parse_toml(file, devices)?;
        site.device
            .into_iter()
            .enumerate()
            .map(|(i, d)| d.build(file, devices, &format!("device[{i}]"), &profiles))
            .collect()
    }

    #[test]
    fn a_bacnet_device_gets_its_defaults() {
        let specs = build(
            "[[device]]\nid = \"ahu-1\"\nprofile = \"ahu\"\nbacnet = { instance = 1001, address = \"10.1.2.3\" }\n",
        )
        .unwrap();
        let Connection::Bacnet(link) = &specs[0].connection else {
            panic!()
        };
        assert_eq!(link.address, Some("10.1.2.3:47808".parse().unwrap()));
        assert_eq!(link.port.local, "0.0.0.0:47808".parse().unwrap());
        assert_eq!(
            link.port.broadcast,
            "255.255.255.255:47808".parse().unwrap()
        );
        assert_eq!(link.port.bbmd, None);
        assert_eq!(link.max_in_flight, 1);
        assert_eq!(specs[0].protocol_name(), "bacnet");
    }

    #[test]
    fn bacnet_device_errors_name_the_key() {
        for (table, key, reason) in [
            (
                "{ address = \"10.1.2.3\" }",
                "device[0].bacnet",
                "missing key `instance`",
            ),
            (
                "{ instance = 4194303 }",
                "device[0].bacnet.instance",
                "above 4194302",
            ),
            (
                "{ instance = 1, address = \"ahu.local:47808\" }",
                "device[0].bacnet.address",
                "not an IPv4 address",
            ),
            (
                "{ instance = 1, address = \"10.1.2.255:0\" }",
                "device[0].bacnet.address",
                "not the address of one device",
            ),
            (
                "{ instance = 1, bbmd = { address = \"10.9.0.1\", ttl_s = 1 } }",
                "device[0].bacnet.bbmd.ttl_s",
                "at least 2",
            ),
            (
                "{ instance = 1, max_in_flight = 0 }",
                "device[0].bacnet.max_in_flight",
                "between 1 and 16",
            ),
            (
                "{ instance = 1, local_prot = 47809 }",
                "device[0].bacnet.local_prot",
                "unknown key `local_prot`",
            ),
        ] {
            let text = format!("[[device]]\nid = \"a\"\nprofile = \"ahu\"\nbacnet = {table}\n");
            let err = build(&text).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn a_bacnet_profile_needs_a_bacnet_device_and_the_reverse() {
        let err = build("[[device]]\nid = \"a\"\nprofile = \"ahu\"\nmodbus_tcp = { address = \"10.1.1.1:502\" }\n")
            .unwrap_err();
        assert_eq!(err.key, "device[0].modbus_tcp", "{err}");
        let err = build(
            "[[device]]\nid = \"a\"\nprofile = \"ahu\"\nbacnet = { instance = 1 }\nmqtt = {}\n",
        )
        .unwrap_err();
        assert!(err.reason.contains("exactly one of"), "{err}");
    }

    #[test]
    fn devices_sharing_a_port_must_agree_on_it() {
        let same = build(
            "[[device]]\nid = \"a\"\nprofile = \"ahu\"\ntimeout_ms = 500\nbacnet = { instance = 1 }\n\
             [[device]]\nid = \"b\"\nprofile = \"ahu\"\ntimeout_ms = 900\nbacnet = { instance = 2 }\n\
             [[device]]\nid = \"c\"\nprofile = \"ahu\"\nbacnet = { instance = 1, local_port = 47809 }\n",
        )
        .unwrap();
        let networks = crate::bacnet::plan_networks(&same).unwrap();
        assert_eq!(networks.len(), 2);
        assert_eq!(networks[0].1.len(), 2);
        assert_eq!(networks[0].0.apdu_timeout(), Duration::from_millis(900));

        let clash = build(
            "[[device]]\nid = \"a\"\nprofile = \"ahu\"\nbacnet = { instance = 1 }\n\
             [[device]]\nid = \"b\"\nprofile = \"ahu\"\nbacnet = { instance = 2, bbmd = { address = \"10.9.0.1\" } }\n",
        )
        .unwrap();
        let err = crate::bacnet::plan_networks(&clash).unwrap_err();
        assert!(err.contains("share local BACnet port 47808"), "{err}");
        let twice = build(
            "[[device]]\nid = \"a\"\nprofile = \"ahu\"\nbacnet = { instance = 7 }\n\
             [[device]]\nid = \"b\"\nprofile = \"ahu\"\nbacnet = { instance = 7 }\n",
        )
        .unwrap();
        let err = crate::bacnet::plan_networks(&twice).unwrap_err();
        assert!(err.contains("both BACnet device 7"), "{err}");
    }
}
