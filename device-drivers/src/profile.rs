//! Device profiles: what a model of device offers, parsed from the TOML files in
//! `firmware-configs/profiles/`. The format is documented in `firmware-configs/README.md`.
//!
//! A profile is checked when it is loaded (addresses, types, bit fields, JSON pointers), so
//! a running driver never meets a malformed point.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tracing::warn;

use crate::config::{ConfigError, line_of_key, parse_toml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Modbus,
    Mqtt,
    Bacnet,
}

/// What a point's values mean over time; rollups treat counters as deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    /// A level that can go up and down (power, temperature).
    #[default]
    Gauge,
    /// A total that only grows, except when it wraps or the meter is reset (energy, volume).
    Counter,
    /// A discrete state (on/off, mode).
    State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterTable {
    Holding,
    Input,
    Coil,
    Discrete,
}

impl RegisterTable {
    /// The name as profiles spell it: `holding`, `input`, `coil`, `discrete`.
    pub fn name(self) -> &'static str {
        match self {
            RegisterTable::Holding => "holding",
            RegisterTable::Input => "input",
            RegisterTable::Coil => "coil",
            RegisterTable::Discrete => "discrete",
        }
    }

    pub fn is_bit_table(self) -> bool {
        matches!(self, RegisterTable::Coil | RegisterTable::Discrete)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// How many 16-bit registers a value of this type occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64 | DataType::Bool)
    }

    /// The name as profiles spell it: `u16`, `f32`, `bool`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }

    /// The largest raw value, for integer types; counters wrap there.
    pub fn max_raw(self) -> Option<f64> {
        match self {
            DataType::U16 => Some(u16::MAX as f64),
            DataType::I16 => Some(i16::MAX as f64),
            DataType::U32 => Some(u32::MAX as f64),
            DataType::I32 => Some(i32::MAX as f64),
            DataType::U64 => Some(u64::MAX as f64),
            DataType::I64 => Some(i64::MAX as f64),
            _ => None,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Order of bytes within one 16-bit register, or of registers within a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// The BACnet object types a profile may map to points: those whose present value is a
/// number, a boolean or a state. Names are the standard's, in lower case with hyphens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BacnetObjectType {
    AnalogInput,
    AnalogOutput,
    AnalogValue,
    BinaryInput,
    BinaryOutput,
    BinaryValue,
    MultiStateInput,
    MultiStateOutput,
    MultiStateValue,
    IntegerValue,
    PositiveIntegerValue,
    LargeAnalogValue,
    Accumulator,
}

impl BacnetObjectType {
    pub const ALL: [BacnetObjectType; 13] = [
        BacnetObjectType::AnalogInput,
        BacnetObjectType::AnalogOutput,
        BacnetObjectType::AnalogValue,
        BacnetObjectType::BinaryInput,
        BacnetObjectType::BinaryOutput,
        BacnetObjectType::BinaryValue,
        BacnetObjectType::MultiStateInput,
        BacnetObjectType::MultiStateOutput,
        BacnetObjectType::MultiStateValue,
        BacnetObjectType::IntegerValue,
        BacnetObjectType::PositiveIntegerValue,
        BacnetObjectType::LargeAnalogValue,
        BacnetObjectType::Accumulator,
    ];

    /// The standard's number for the type (Clause 12).
    pub fn code(self) -> u32 {
        match self {
            BacnetObjectType::AnalogInput => 0,
            BacnetObjectType::AnalogOutput => 1,
            BacnetObjectType::AnalogValue => 2,
            BacnetObjectType::BinaryInput => 3,
            BacnetObjectType::BinaryOutput => 4,
            BacnetObjectType::BinaryValue => 5,
            BacnetObjectType::MultiStateInput => 13,
            BacnetObjectType::MultiStateOutput => 14,
            BacnetObjectType::MultiStateValue => 19,
            BacnetObjectType::Accumulator => 23,
            BacnetObjectType::IntegerValue => 45,
            BacnetObjectType::LargeAnalogValue => 46,
            BacnetObjectType::PositiveIntegerValue => 48,
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The name as profiles spell it, for example `analog-input`.
    pub fn name(self) -> &'static str {
        match self {
            BacnetObjectType::AnalogInput => "analog-input",
            BacnetObjectType::AnalogOutput => "analog-output",
            BacnetObjectType::AnalogValue => "analog-value",
            BacnetObjectType::BinaryInput => "binary-input",
            BacnetObjectType::BinaryOutput => "binary-output",
            BacnetObjectType::BinaryValue => "binary-value",
            BacnetObjectType::MultiStateInput => "multi-state-input",
            BacnetObjectType::MultiStateOutput => "multi-state-output",
            BacnetObjectType::MultiStateValue => "multi-state-value",
            BacnetObjectType::IntegerValue => "integer-value",
            BacnetObjectType::PositiveIntegerValue => "positive-integer-value",
            BacnetObjectType::LargeAnalogValue => "large-analog-value",
            BacnetObjectType::Accumulator => "accumulator",
        }
    }

    /// Inputs and accumulators measure; their present value is not written.
    pub fn is_input(self) -> bool {
        matches!(
            self,
            BacnetObjectType::AnalogInput
                | BacnetObjectType::BinaryInput
                | BacnetObjectType::MultiStateInput
                | BacnetObjectType::Accumulator
        )
    }

    /// Outputs always have a priority array; values may (then they are commandable too).
    pub fn is_output(self) -> bool {
        matches!(
            self,
            BacnetObjectType::AnalogOutput
                | BacnetObjectType::BinaryOutput
                | BacnetObjectType::MultiStateOutput
        )
    }

    /// Binary objects carry a boolean (inactive/active).
    pub fn is_binary(self) -> bool {
        matches!(
            self,
            BacnetObjectType::BinaryInput
                | BacnetObjectType::BinaryOutput
                | BacnetObjectType::BinaryValue
        )
    }

    /// Multi-state objects carry a state number from 1.
    pub fn is_multi_state(self) -> bool {
        matches!(
            self,
            BacnetObjectType::MultiStateInput
                | BacnetObjectType::MultiStateOutput
                | BacnetObjectType::MultiStateValue
        )
    }

    /// Analog objects carry a floating-point value.
    pub fn is_analog(self) -> bool {
        matches!(
            self,
            BacnetObjectType::AnalogInput
                | BacnetObjectType::AnalogOutput
                | BacnetObjectType::AnalogValue
                | BacnetObjectType::LargeAnalogValue
        )
    }
}

impl std::fmt::Display for BacnetObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The file form of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub id: String,
    pub protocol: Protocol,
    pub manufacturer: String,
    pub model: String,
    #[serde(default)]
    pub description: String,
    /// Where the register or payload map comes from (the vendor document and its version).
    pub source: String,
    #[serde(default)]
    pub modbus: ModbusDefaultsConfig,
    #[serde(default)]
    pub mqtt: MqttDefaultsConfig,
    #[serde(default)]
    pub bacnet: BacnetDefaultsConfig,
    #[serde(rename = "point")]
    pub points: Vec<PointConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDefaultsConfig {
    #[serde(default)]
    pub byte_order: Order,
    #[serde(default)]
    pub word_order: Order,
    /// At most this many registers in one block read (the protocol allows 125).
    #[serde(default = "default_max_block")]
    pub max_block_registers: u16,
    /// Registers between two points that may be read and thrown away to join two blocks.
    #[serde(default)]
    pub max_gap_registers: u16,
}

impl Default for ModbusDefaultsConfig {
    fn default() -> Self {
        ModbusDefaultsConfig {
            byte_order: Order::Big,
            word_order: Order::Big,
            max_block_registers: default_max_block(),
            max_gap_registers: 0,
        }
    }
}

fn default_max_block() -> u16 {
    125
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDefaultsConfig {
    /// Topic where the device's online state is published (a retained message or its last
    /// will); `{device}` stands for the device's topic id.
    pub status_topic: Option<String>,
    #[serde(default = "default_online")]
    pub online_payload: String,
    #[serde(default = "default_offline")]
    pub offline_payload: String,
    /// Points not heard from for this long turn stale.
    pub stale_after_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacnetDefaultsConfig {
    /// Priority (1 to 16, not 6) of writes to commandable objects.
    #[serde(default = "default_write_priority")]
    pub write_priority: u8,
    /// Lifetime asked for in SubscribeCOV; subscriptions are renewed before it runs out.
    #[serde(default = "default_cov_lifetime")]
    pub cov_lifetime_s: u32,
    /// Most objects in one ReadPropertyMultiple. Left out, as many as fit in one unsegmented
    /// reply of the device's maximum APDU; more than that makes the device segment its reply.
    pub max_objects_per_request: Option<u16>,
}

impl Default for BacnetDefaultsConfig {
    fn default() -> Self {
        BacnetDefaultsConfig {
            write_priority: default_write_priority(),
            cov_lifetime_s: default_cov_lifetime(),
            max_objects_per_request: None,
        }
    }
}

fn default_write_priority() -> u8 {
    8
}

fn default_cov_lifetime() -> u32 {
    300
}

fn default_online() -> String {
    "online".into()
}

fn default_offline() -> String {
    "offline".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub kind: PointKind,
    #[serde(default)]
    pub description: Option<String>,
    // Modbus.
    pub table: Option<RegisterTable>,
    /// Zero-based protocol address (the PDU address, not the 3xxxx/4xxxx reference number).
    pub address: Option<u16>,
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    pub byte_order: Option<Order>,
    pub word_order: Option<Order>,
    /// A single bit (0 = least significant) of a 16-bit register, read as a boolean.
    pub bit: Option<u8>,
    // Both.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub writable: bool,
    /// Plausible range: values outside are marked uncertain; writes outside are refused.
    pub min: Option<f64>,
    pub max: Option<f64>,
    // MQTT.
    /// Topic the value arrives on; `{device}` stands for the device's topic id.
    pub topic: Option<String>,
    /// JSON pointer (RFC 6901) to the value inside the payload; empty for the whole payload.
    pub pointer: Option<String>,
    // BACnet.
    pub object_type: Option<BacnetObjectType>,
    pub instance: Option<u32>,
    /// Ask the device to push changes (SubscribeCOV) instead of polling the point.
    pub cov: Option<bool>,
    /// Write priority of this point, overriding the profile's.
    pub priority: Option<u8>,
}

fn one() -> f64 {
    1.0
}

/// A loaded, checked profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub protocol: Protocol,
    pub manufacturer: String,
    pub model: String,
    pub description: String,
    pub source: String,
    pub modbus: ModbusDefaults,
    pub mqtt: MqttDefaults,
    pub bacnet: BacnetDefaults,
    pub points: Vec<PointSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BacnetDefaults {
    pub write_priority: u8,
    pub cov_lifetime_s: u32,
    pub max_objects_per_request: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDefaults {
    pub max_block_registers: u16,
    pub max_gap_registers: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttDefaults {
    pub status_topic: Option<String>,
    pub online_payload: String,
    pub offline_payload: String,
    pub stale_after_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub name: String,
    pub unit: Option<String>,
    pub kind: PointKind,
    pub description: Option<String>,
    pub scale: f64,
    pub offset: f64,
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub source: PointSource,
}

impl PointSpec {
    /// Where a counter wraps, in engineering units, when its register type bounds it.
    pub fn counter_wrap(&self) -> Option<f64> {
        match (&self.source, self.kind) {
            (PointSource::Modbus(m), PointKind::Counter) => {
                m.data_type.max_raw().map(|raw| (raw + 1.0) * self.scale)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PointSource {
    Modbus(ModbusPoint),
    Mqtt(MqttPoint),
    Bacnet(BacnetPoint),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    pub table: RegisterTable,
    pub address: u16,
    pub data_type: DataType,
    pub byte_order: Order,
    pub word_order: Order,
    pub bit: Option<u8>,
}

impl ModbusPoint {
    /// Registers (or bits, for coils and discrete inputs) that the point occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bit_table() {
            1
        } else {
            self.data_type.registers()
        }
    }
}

/// A point read from the present value of one BACnet object.
#[derive(Debug, Clone, PartialEq)]
pub struct BacnetPoint {
    pub object_type: BacnetObjectType,
    pub instance: u32,
    /// Subscribe to changes of value where the device accepts it; poll otherwise.
    pub cov: bool,
    /// Priority of writes (1 to 16, never 6).
    pub priority: u8,
}

/// The largest object instance; 4194303 means "not configured" (Clause 12.1.2).
pub const MAX_BACNET_INSTANCE: u32 = 4_194_302;

#[derive(Debug, Clone, PartialEq)]
pub struct MqttPoint {
    pub topic: String,
    pub pointer: String,
}

impl Profile {
    pub fn point(&self, name: &str) -> Option<&PointSpec> {
        self.points.iter().find(|p| p.name == name)
    }

    /// Parses and checks a profile file's text. What looks wrong but may be meant (see
    /// [`Profile::check`]) is logged as a warning.
    pub fn parse(file: &Path, text: &str) -> Result<Profile, ConfigError> {
        let (profile, warnings) = Profile::check(file, text)?;
        for warning in warnings {
            // The finding in the `FILE:LINE: KEY: REASON` form is the message: `smartpark
            // check-config` shows it as it is.
            warn!("{warning}");
        }
        Ok(profile)
    }

    /// Parses and checks a profile file's text, returning the profile and the warnings: what
    /// looks wrong but may be meant, in the same form as errors (an address that looks like a
    /// register number, such as 40101 for holding register 101).
    pub fn check(file: &Path, text: &str) -> Result<(Profile, Vec<ConfigError>), ConfigError> {
        let config: ProfileConfig = parse_toml(file, text)?;
        let warnings = config.warnings(file, text);
        Ok((config.build(file, text)?, warnings))
    }

    pub fn read(file: &Path) -> Result<Profile, ConfigError> {
        let text = crate::config::read_text(file)?;
        Profile::parse(file, &text)
    }
}

/// Modicon reference numbers: 1-based, with the table as the first digit (3xxxx input
/// registers, 4xxxx holding registers). A profile takes the 0-based protocol address.
const REFERENCE_NUMBERS: [(RegisterTable, u16); 2] = [
    (RegisterTable::Input, 30001),
    (RegisterTable::Holding, 40001),
];

impl ProfileConfig {
    /// Findings that do not stop the profile from loading.
    fn warnings(&self, file: &Path, text: &str) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            let (Some(table), Some(address)) = (p.table, p.address) else {
                continue;
            };
            for (t, first) in REFERENCE_NUMBERS {
                if t == table && (first..first + 9999).contains(&address) {
                    let offset = address - first;
                    out.push(ConfigError::invalid(
                        file,
                        text,
                        format!("point[{i}].address"),
                        format!(
                            "{address} looks like a register number ({table} register {} \
                             counted from 1); addresses count from 0, so that register is \
                             address {offset}",
                            offset + 1,
                            table = table.name(),
                        ),
                    ));
                }
            }
        }
        out
    }

    pub fn build(self, file: &Path, text: &str) -> Result<Profile, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::invalid(file, text, key, reason);
        if !is_name(&self.id) {
            return Err(invalid(
                "id".into(),
                format!(
                    "{:?} is not a valid id (letters, digits, '-', '_', '.')",
                    self.id
                ),
            ));
        }
        if self.points.is_empty() {
            return Err(invalid(
                "point".into(),
                "a profile needs at least one point".into(),
            ));
        }
        let d = &self.modbus;
        if d.max_block_registers == 0 || d.max_block_registers > 125 {
            return Err(invalid(
                "modbus.max_block_registers".into(),
                "must be between 1 and 125".into(),
            ));
        }
        let b = &self.bacnet;
        check_priority(b.write_priority)
            .map_err(|reason| invalid("bacnet.write_priority".into(), reason))?;
        if !(10..=86_400).contains(&b.cov_lifetime_s) {
            return Err(invalid(
                "bacnet.cov_lifetime_s".into(),
                "must be between 10 and 86400 seconds".into(),
            ));
        }
        if b.max_objects_per_request == Some(0) {
            return Err(invalid(
                "bacnet.max_objects_per_request".into(),
                "must be at least 1".into(),
            ));
        }
        let mut objects = HashMap::new();
        let mut names = HashMap::new();
        let first_at =
            |first: usize, field: &str| match line_of_key(text, &format!("point[{first}].{field}"))
            {
                Some(line) => format!("point[{first}], line {line}"),
                None => format!("point[{first}]"),
            };
        let mut points = Vec::with_capacity(self.points.len());
        for (i, p) in self.points.into_iter().enumerate() {
            let key = |field: &str| format!("point[{i}].{field}");
            if !is_name(&p.name) {
                return Err(invalid(
                    key("name"),
                    format!("{:?} is not a valid point name", p.name),
                ));
            }
            if let Some(&first) = names.get(&p.name) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "point {:?} is defined twice (first as {})",
                        p.name,
                        first_at(first, "name")
                    ),
                ));
            }
            names.insert(p.name.clone(), i);
            if !p.scale.is_finite() || p.scale == 0.0 || !p.offset.is_finite() {
                return Err(invalid(
                    key("scale"),
                    "scale must be a finite non-zero number and offset finite".into(),
                ));
            }
            if let (Some(min), Some(max)) = (p.min, p.max)
                && min > max
            {
                return Err(invalid(key("min"), format!("min {min} is above max {max}")));
            }
            let bacnet_keys = p.object_type.is_some()
                || p.instance.is_some()
                || p.cov.is_some()
                || p.priority.is_some();
            if bacnet_keys && self.protocol != Protocol::Bacnet {
                return Err(invalid(
                    key("object_type"),
                    "object_type, instance, cov and priority belong to BACnet profiles".into(),
                ));
            }
            let source = match self.protocol {
                Protocol::Bacnet => {
                    if p.topic.is_some()
                        || p.pointer.is_some()
                        || p.table.is_some()
                        || p.address.is_some()
                        || p.bit.is_some()
                        || p.data_type.is_some()
                        || p.byte_order.is_some()
                        || p.word_order.is_some()
                    {
                        return Err(invalid(
                            key("object_type"),
                            "a BACnet point names object_type and instance; table, address, \
                             type, bit, byte and word order, topic and pointer belong to other \
                             protocols"
                                .into(),
                        ));
                    }
                    let object_type = p.object_type.ok_or_else(|| {
                        invalid(key("object_type"), "required for BACnet points".into())
                    })?;
                    let instance = p.instance.ok_or_else(|| {
                        invalid(key("instance"), "required for BACnet points".into())
                    })?;
                    if instance > MAX_BACNET_INSTANCE {
                        return Err(invalid(
                            key("instance"),
                            format!("instance {instance} is above {MAX_BACNET_INSTANCE}"),
                        ));
                    }
                    if let Some(&first) = objects.get(&(object_type, instance)) {
                        return Err(invalid(
                            key("instance"),
                            format!(
                                "{object_type} {instance} is mapped to two points (first to {})",
                                first_at(first, "instance")
                            ),
                        ));
                    }
                    objects.insert((object_type, instance), i);
                    if p.writable && object_type.is_input() {
                        return Err(invalid(
                            key("writable"),
                            format!("the present value of a {object_type} is read-only"),
                        ));
                    }
                    if (object_type.is_binary() || object_type.is_multi_state())
                        && (p.scale != 1.0 || p.offset != 0.0)
                    {
                        return Err(invalid(
                            key("scale"),
                            format!(
                                "a {object_type} carries a state, which has no scale or offset"
                            ),
                        ));
                    }
                    let priority = match p.priority {
                        Some(priority) => {
                            check_priority(priority)
                                .map_err(|reason| invalid(key("priority"), reason))?;
                            if !p.writable {
                                return Err(invalid(
                                    key("priority"),
                                    "a write priority needs `writable = true`".into(),
                                ));
                            }
                            priority
                        }
                        None => b.write_priority,
                    };
                    PointSource::Bacnet(BacnetPoint {
                        object_type,
                        instance,
                        cov: p.cov.unwrap_or(false),
                        priority,
                    })
                }
                Protocol::Modbus => {
                    if p.topic.is_some() || p.pointer.is_some() {
                        return Err(invalid(
                            key("topic"),
                            "topic and pointer belong to MQTT profiles".into(),
                        ));
                    }
                    let table = p.table.ok_or_else(|| {
                        invalid(key("table"), "required for Modbus points".into())
                    })?;
                    let address = p.address.ok_or_else(|| {
                        invalid(key("address"), "required for Modbus points".into())
                    })?;
                    let data_type = match (table.is_bit_table(), p.data_type, p.bit) {
                        (true, None | Some(DataType::Bool), None) => DataType::Bool,
                        (true, _, Some(_)) => {
                            return Err(invalid(
                                key("bit"),
                                "coils and discrete inputs are single bits already".into(),
                            ));
                        }
                        (true, Some(t), None) => {
                            return Err(invalid(
                                key("type"),
                                format!("{t} cannot be read from a bit table; use bool"),
                            ));
                        }
                        (false, None, Some(_)) => DataType::U16,
                        (false, Some(t), Some(_)) if t != DataType::U16 && t != DataType::Bool => {
                            return Err(invalid(
                                key("bit"),
                                "a bit field is taken from one 16-bit register (type u16)".into(),
                            ));
                        }
                        (false, Some(DataType::Bool), None) => {
                            return Err(invalid(
                                key("type"),
                                "a bool in a register needs `bit`".into(),
                            ));
                        }
                        (false, Some(t), _) => t,
                        (false, None, None) => {
                            return Err(invalid(
                                key("type"),
                                "required for register points".into(),
                            ));
                        }
                    };
                    if let Some(bit) = p.bit
                        && bit > 15
                    {
                        return Err(invalid(
                            key("bit"),
                            format!("bit {bit} is outside a 16-bit register"),
                        ));
                    }
                    let width = if table.is_bit_table() {
                        1
                    } else {
                        data_type.registers()
                    };
                    if address as u32 + width as u32 > 65536 {
                        return Err(invalid(
                            key("address"),
                            format!("address {address} plus {width} registers runs past 65535"),
                        ));
                    }
                    if p.writable && matches!(table, RegisterTable::Input | RegisterTable::Discrete)
                    {
                        return Err(invalid(
                            key("writable"),
                            "input registers and discrete inputs are read-only".into(),
                        ));
                    }
                    PointSource::Modbus(ModbusPoint {
                        table,
                        address,
                        data_type,
                        byte_order: p.byte_order.unwrap_or(d.byte_order),
                        word_order: p.word_order.unwrap_or(d.word_order),
                        bit: p.bit,
                    })
                }
                Protocol::Mqtt => {
                    if p.table.is_some() || p.address.is_some() || p.bit.is_some() {
                        return Err(invalid(
                            key("table"),
                            "table, address and bit belong to Modbus profiles".into(),
                        ));
                    }
                    let topic = p
                        .topic
                        .ok_or_else(|| invalid(key("topic"), "required for MQTT points".into()))?;
                    if topic.is_empty() || topic.contains('#') || topic.contains('+') {
                        return Err(invalid(
                            key("topic"),
                            format!("{topic:?} must be a concrete topic without wildcards"),
                        ));
                    }
                    let pointer = p.pointer.unwrap_or_default();
                    if !pointer.is_empty() && !pointer.starts_with('/') {
                        return Err(invalid(
                            key("pointer"),
                            format!("{pointer:?} is not a JSON pointer (it must start with '/')"),
                        ));
                    }
                    PointSource::Mqtt(MqttPoint { topic, pointer })
                }
            };
            points.push(PointSpec {
                name: p.name,
                unit: p.unit,
                kind: p.kind,
                description: p.description,
                scale: p.scale,
                offset: p.offset,
                writable: p.writable,
                min: p.min,
                max: p.max,
                source,
            });
        }
        Ok(Profile {
            id: self.id,
            protocol: self.protocol,
            manufacturer: self.manufacturer,
            model: self.model,
            description: self.description,
            source: self.source,
            modbus: ModbusDefaults {
                max_block_registers: d.max_block_registers,
                max_gap_registers: d.max_gap_registers,
            },
            mqtt: MqttDefaults {
                status_topic: self.mqtt.status_topic,
                online_payload: self.mqtt.online_payload,
                offline_payload: self.mqtt.offline_payload,
                stale_after_s: self.mqtt.stale_after_s,
            },
            bacnet: BacnetDefaults {
                write_priority: b.write_priority,
                cov_lifetime_s: b.cov_lifetime_s,
                max_objects_per_request: b.max_objects_per_request,
            },
            points,
        })
    }
}

/// BACnet write priorities are 1 (highest) to 16; 6 is kept for minimum on/off times.
fn check_priority(priority: u8) -> Result<(), String> {
    match priority {
        6 => Err("priority 6 is reserved for minimum on/off times".into()),
        1..=16 => Ok(()),
        _ => Err(format!("priority {priority} is outside 1..=16")),
    }
}

/// Ids and names: ASCII letters, digits, `-`, `_` and `.`; no `/`, which separates keys.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// All profiles in a folder (`*.toml`), keyed by id. Fails on the first bad file, naming it.
pub fn load_profiles(dir: &Path) -> Result<BTreeMap<String, Arc<Profile>>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: dir.to_path_buf(),
        line: None,
        key: String::new(),
        reason: format!("cannot read the profile folder: {e}"),
    })?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for file in files {
        let profile = Profile::read(&file)?;
        if out.contains_key(&profile.id) {
            return Err(ConfigError::invalid(
                &file,
                "",
                "id",
                format!("profile id {:?} is used by another file too", profile.id),
            ));
        }
        out.insert(profile.id.clone(), Arc::new(profile));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METER: &str = r#"
id = "test-meter"
protocol = "modbus"
manufacturer = "Acme"
model = "M1"
source = "made up for a test"

[modbus]
word_order = "little"

[[point]]
name = "power"
table = "input"
address = 12
type = "f32"
unit = "W"

[[point]]
name = "alarm_bit"
table = "holding"
address = 3
bit = 4
"#;

    #[test]
    fn a_modbus_profile_loads_with_defaults_applied() {
        let p = Profile::parse(Path::new("m.toml"), METER).unwrap();
        let PointSource::Modbus(m) = &p.point("power").unwrap().source else {
            panic!()
        };
        assert_eq!(m.word_order, Order::Little);
        assert_eq!(m.width(), 2);
        let PointSource::Modbus(b) = &p.point("alarm_bit").unwrap().source else {
            panic!()
        };
        assert_eq!(b.data_type, DataType::U16);
        assert_eq!(b.bit, Some(4));
    }

    /// The line (from 1) of the `n`-th line of `text` that is `line`.
    fn line_of(text: &str, line: &str, n: usize) -> usize {
        text.lines()
            .enumerate()
            .filter(|(_, l)| *l == line)
            .nth(n)
            .unwrap_or_else(|| panic!("no {line:?}"))
            .0
            + 1
    }

    #[test]
    fn a_modbus_point_without_an_address_is_refused_with_its_line() {
        let text = METER.replace("address = 12\n", "");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(err.key, "point[0].address");
        assert!(err.reason.contains("required"), "{err}");
        // The key is missing, so the line is that of the table that lacks it.
        assert_eq!(err.line, Some(line_of(&text, "[[point]]", 0)), "{err}");
    }

    #[test]
    fn a_point_defined_twice_is_refused_with_both_lines() {
        let text = METER.replace("name = \"alarm_bit\"", "name = \"power\"");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(err.key, "point[1].name");
        assert_eq!(
            err.line,
            Some(line_of(&text, "name = \"power\"", 1)),
            "{err}"
        );
        let first = line_of(&text, "name = \"power\"", 0);
        assert_eq!(
            err.reason,
            format!("point \"power\" is defined twice (first as point[0], line {first})")
        );
    }

    #[test]
    fn types_are_named_as_profiles_spell_them() {
        let text = METER.replace("table = \"input\"", "table = \"coil\"");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(err.reason, "f32 cannot be read from a bit table; use bool");
        let text = METER.replace("type = \"f32\"", "type = \"float32\"");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert!(
            err.reason.contains("expected one of `bool`, `u16`"),
            "{err}"
        );
        let text = METER.replace("address = 12", "address = \"12\"");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(
            err.reason,
            "invalid type: string \"12\", expected an integer from 0 to 65535"
        );
    }

    #[test]
    fn an_address_that_looks_like_a_register_number_is_a_warning() {
        let text = METER
            .replace("address = 12", "address = 30013")
            .replace("address = 3\n", "address = 40101\n");
        let (profile, warnings) = Profile::check(Path::new("m.toml"), &text).unwrap();
        assert_eq!(
            profile.points.len(),
            2,
            "a warning does not refuse the profile"
        );
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                format!(
                    "m.toml:{}: point[0].address: 30013 looks like a register number (input \
                     register 13 counted from 1); addresses count from 0, so that register is \
                     address 12",
                    line_of(&text, "address = 30013", 0)
                ),
                format!(
                    "m.toml:{}: point[1].address: 40101 looks like a register number (holding \
                     register 101 counted from 1); addresses count from 0, so that register is \
                     address 100",
                    line_of(&text, "address = 40101", 0)
                ),
            ]
        );
        // A 4xxxx address of an input register, or a high address below 30001, is left alone.
        let text = METER.replace("address = 12", "address = 40101");
        assert!(
            Profile::check(Path::new("m.toml"), &text)
                .unwrap()
                .1
                .is_empty()
        );
        assert!(
            Profile::check(Path::new("m.toml"), METER)
                .unwrap()
                .1
                .is_empty()
        );
    }

    #[test]
    fn an_input_register_cannot_be_writable() {
        let text = METER.replace("unit = \"W\"", "unit = \"W\"\nwritable = true");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(err.key, "point[0].writable");
    }

    #[test]
    fn mqtt_points_need_a_topic_and_a_proper_pointer() {
        let text = r#"
id = "s"
protocol = "mqtt"
manufacturer = "A"
model = "B"
source = "x"
[[point]]
name = "t"
topic = "tele/{device}/SENSOR"
pointer = "AM2301/Temperature"
"#;
        let err = Profile::parse(Path::new("s.toml"), text).unwrap_err();
        assert_eq!(err.key, "point[0].pointer");
        assert_eq!(err.line, Some(10));
    }

    #[test]
    fn counters_wrap_where_their_register_type_ends() {
        let text = METER.replace(
            "type = \"f32\"",
            "type = \"u32\"\nkind = \"counter\"\nscale = 0.01",
        );
        let p = Profile::parse(Path::new("m.toml"), &text).unwrap();
        assert_eq!(
            p.point("power").unwrap().counter_wrap(),
            Some(4294967296.0 * 0.01)
        );
    }

    const AHU: &str = r#"
id = "ahu"
protocol = "bacnet"
manufacturer = "Acme"
model = "AHU-1"
source = "made up for a test"

[bacnet]
write_priority = 10

[[point]]
name = "supply_temp"
object_type = "analog-input"
instance = 1
unit = "°C"
cov = true

[[point]]
name = "setpoint"
object_type = "analog-value"
instance = 1
writable = true
"#;

    fn ahu_with(from: &str, to: &str) -> Result<Profile, ConfigError> {
        assert!(AHU.contains(from), "{from}");
        Profile::parse(Path::new("ahu.toml"), &AHU.replacen(from, to, 1))
    }

    #[test]
    fn a_bacnet_profile_loads_with_its_priority_and_cov() {
        let p = Profile::parse(Path::new("ahu.toml"), AHU).unwrap();
        let PointSource::Bacnet(t) = &p.point("supply_temp").unwrap().source else {
            panic!()
        };
        assert_eq!(t.object_type, BacnetObjectType::AnalogInput);
        assert!(t.cov);
        let PointSource::Bacnet(s) = &p.point("setpoint").unwrap().source else {
            panic!()
        };
        assert_eq!((s.instance, s.priority, s.cov), (1, 10, false));
        assert_eq!(p.bacnet.cov_lifetime_s, 300);
    }

    #[test]
    fn bacnet_points_are_refused_by_key_with_the_reason() {
        for (from, to, key, reason) in [
            (
                "object_type = \"analog-input\"",
                "object_type = \"analog-inptu\"",
                "point[0].object_type",
                "unknown variant",
            ),
            (
                "instance = 1\nunit",
                "unit",
                "point[0].instance",
                "required",
            ),
            (
                "instance = 1\nunit",
                "instance = 4194303\nunit",
                "point[0].instance",
                "above 4194302",
            ),
            (
                "cov = true",
                "cov = true\nwritable = true",
                "point[0].writable",
                "read-only",
            ),
            (
                "writable = true",
                "writable = true\npriority = 6",
                "point[1].priority",
                "reserved",
            ),
            (
                "writable = true",
                "writable = true\npriority = 17",
                "point[1].priority",
                "outside 1..=16",
            ),
            (
                "name = \"setpoint\"\nobject_type = \"analog-value\"\ninstance = 1",
                "name = \"setpoint\"\nobject_type = \"analog-input\"\ninstance = 1",
                "point[1].instance",
                "mapped to two points (first to point[0], line 14)",
            ),
            (
                "write_priority = 10",
                "write_priority = 0",
                "bacnet.write_priority",
                "outside",
            ),
            (
                "write_priority = 10",
                "cov_lifetime_s = 5",
                "bacnet.cov_lifetime_s",
                "between 10 and 86400",
            ),
            (
                "cov = true",
                "cov = true\naddress = 3",
                "point[0].object_type",
                "belong to other protocols",
            ),
        ] {
            let err = ahu_with(from, to).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn a_state_object_takes_no_scale_and_other_protocols_take_no_objects() {
        let err = ahu_with(
            "name = \"setpoint\"\nobject_type = \"analog-value\"",
            "name = \"setpoint\"\nscale = 2.0\nobject_type = \"binary-value\"",
        )
        .unwrap_err();
        assert_eq!(err.key, "point[1].scale", "{err}");
        let text = METER.replace("unit = \"W\"", "unit = \"W\"\ncov = true");
        let err = Profile::parse(Path::new("m.toml"), &text).unwrap_err();
        assert_eq!(err.key, "point[0].object_type", "{err}");
    }
}
