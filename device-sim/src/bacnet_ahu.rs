//! [`BacnetAhuSim`]: a BACnet/IP building controller serving one air-handling unit, with
//! the objects of `firmware-configs/profiles/generic-bacnet-ahu.toml` (same types, same
//! instances), on the bacnet-server crate.
//!
//! The controller answers Who-Is (with a directed I-Am), ReadProperty(Multiple),
//! WriteProperty and SubscribeCOV as bacnet-server does. The sensors, the fan proofs and the
//! operating mode come from the pure model in [`crate::ahu`] and are set with
//! bacnet-server's local present-value API, so that subscribers get their COV notifications
//! (analog inputs report a change of one COV increment). Setpoints, start/stop commands, the
//! enable and the occupancy mode are commandable objects with a priority array and a
//! relinquish default, and the model follows whatever value is in control. The outputs
//! (fan speeds, valves, damper) are the sequence's commands, written at priority 16; an
//! operator may override them at a higher priority, but the simulated air does not follow
//! such an override.
//!
//! It binds the address it is given and picks no interface of its own: a BACnet/IP device
//! answers from the address it is reached at, and several simulators can share a port on
//! 127.0.0.2, 127.0.0.3 and so on. It does not segment, route, keep trend logs or raise
//! alarms, and it stores nothing: a restart comes back at the relinquish defaults.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bacnet_objects::DeviceIdentity;
use bacnet_objects::analog::{AnalogInputObject, AnalogOutputObject, AnalogValueObject};
use bacnet_objects::binary::{BinaryInputObject, BinaryOutputObject, BinaryValueObject};
use bacnet_objects::database::ObjectDatabase;
use bacnet_objects::device::{DeviceConfig, DeviceObject, EXECUTED_SERVICES};
use bacnet_objects::multistate::{MultiStateInputObject, MultiStateValueObject};
use bacnet_objects::traits::BACnetObject;
use bacnet_server::LocalCommandSource;
use bacnet_server::server::BACnetServer;
use bacnet_transport::bip::BipTransport;
use bacnet_types::enums::{EngineeringUnits, ObjectType, PropertyIdentifier};
use bacnet_types::primitives::{ObjectIdentifier, PropertyValue};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::ahu::{AhuReadings, AhuSettings, AhuState};
use crate::clock::{SimClock, unix_now_s};

/// The priority the controller's own sequence commands its outputs at (the lowest, so an
/// operator's priority 8 wins).
pub const SEQUENCE_PRIORITY: u8 = 16;

/// The vendor identifier in the device object and its I-Am. 999 is what BACnet test tools
/// commonly use; the real number belongs to a vendor registered with ASHRAE.
const VENDOR_ID: u16 = 999;

/// How many ports the simulator tries when asked for port 0 and another program takes the
/// port between the probe and the bind.
const BIND_ATTEMPTS: usize = 8;

/// A simulated air-handling unit controller, configured and ready to
/// [`bind`](BacnetAhuSim::bind).
#[derive(Clone, Debug)]
pub struct BacnetAhuSim {
    instance: u32,
    seed: u64,
    name: String,
    utc_offset_s: i32,
    tick: Duration,
    time_compression: f64,
}

impl BacnetAhuSim {
    /// Device `instance`, following UTC in real time, updated every second.
    pub fn new(instance: u32, seed: u64) -> Self {
        BacnetAhuSim {
            instance,
            seed,
            name: format!("AHU-{instance}"),
            utc_offset_s: 0,
            tick: Duration::from_secs(1),
            time_compression: 1.0,
        }
    }

    /// The device object's name (`AHU-<instance>` by default).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Shifts the daily curves to local time, for example `8 * 3600` for China Standard Time.
    pub fn utc_offset_s(mut self, utc_offset_s: i32) -> Self {
        self.utc_offset_s = utc_offset_s;
        self
    }

    /// How often the sensors are updated (a real controller scans its inputs about once a
    /// second).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }

    /// Simulated seconds per real second, so that a test or a demo sees the supply air
    /// settle on a new setpoint without waiting a quarter of an hour. 1 by default.
    pub fn time_compression(mut self, compression: f64) -> Self {
        self.time_compression = compression;
        self
    }

    /// Binds `address` and starts answering requests; the values then change once
    /// [`BacnetAhu::run`] runs.
    ///
    /// The address must name one IPv4 interface (a loopback address such as 127.0.0.2 is
    /// fine); 0.0.0.0 binds every interface, but replies then leave from whichever address
    /// the kernel picks, which BACnet clients that check the sender do not accept. Port 0
    /// takes a port that the OS has free on that address. (bacnet-server 0.15 needs the port
    /// before it binds one address, so the simulator asks the OS for a free port first and
    /// tries another if that one is taken in between.)
    pub async fn bind(self, address: SocketAddrV4) -> anyhow::Result<BacnetAhu> {
        if address.port() != 0 {
            return self.bind_port(address).await;
        }
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = UdpSocket::bind(address)
                .and_then(|s| s.local_addr())
                .with_context(|| format!("no free UDP port on {}", address.ip()))?
                .port();
            match self.bind_port(SocketAddrV4::new(*address.ip(), port)).await {
                Ok(ahu) => return Ok(ahu),
                Err(error) => {
                    debug!(%error, port, "The free port was taken; trying another.");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no free UDP port on {}", address.ip())))
    }

    async fn bind_port(&self, address: SocketAddrV4) -> anyhow::Result<BacnetAhu> {
        let clock = SimClock::new(unix_now_s(), self.utc_offset_s, None, self.time_compression);
        let settings = AhuSettings::default();
        let unit = AhuState::new(self.seed, clock.seconds_of_day(Duration::ZERO), &settings);
        let identity = DeviceIdentity::new(self.instance, VENDOR_ID)
            .map_err(|e| anyhow!("device instance {}: {e}", self.instance))?
            .with_name(self.name.clone())
            .with_services(EXECUTED_SERVICES);
        let database = database(&identity, unit.readings(), &settings)
            .map_err(|e| anyhow!("cannot build the AHU's objects: {e}"))?;
        let ip = *address.ip();
        let mut builder = BACnetServer::bip_builder()
            .device(identity)
            .database(database)
            .interface(ip)
            .port(address.port())
            // Loopback has no broadcast address of its own; bacnet-server accepts the
            // interface itself there.
            .broadcast_address(if ip.is_loopback() {
                ip
            } else {
                Ipv4Addr::BROADCAST
            });
        if !ip.is_unspecified() {
            builder = builder.share_port_by_address(true);
        }
        let server = builder
            .build()
            .await
            .map_err(|e| anyhow!("cannot serve BACnet/IP on {address}: {e}"))?;
        let local = match server.local_mac() {
            [a, b, c, d, hi, lo] => SocketAddrV4::new(
                Ipv4Addr::new(*a, *b, *c, *d),
                u16::from_be_bytes([*hi, *lo]),
            ),
            _ => address,
        };
        info!(%local, instance = self.instance, seed = self.seed, "BACnet AHU simulator listening.");
        Ok(BacnetAhu {
            server,
            local,
            instance: self.instance,
            tick: self.tick,
            clock,
            settings,
            // The database holds the inputs' first values; the outputs get theirs from the
            // sequence at the first tick.
            published: OUTPUTS
                .iter()
                .map(|o| (!o.commanded).then(|| (o.value)(unit.readings())))
                .collect(),
            unit,
        })
    }
}

/// A bound controller: it answers requests from the moment it exists and updates its values
/// while [`run`](BacnetAhu::run) runs. Dropping it closes the port.
pub struct BacnetAhu {
    server: BACnetServer<BipTransport>,
    local: SocketAddrV4,
    instance: u32,
    tick: Duration,
    clock: SimClock,
    unit: AhuState,
    settings: AhuSettings,
    /// The value last set on each of [`OUTPUTS`], so that only changes are set.
    published: Vec<Option<PropertyValue>>,
}

impl std::fmt::Debug for BacnetAhu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacnetAhu")
            .field("local", &self.local)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl BacnetAhu {
    /// The address and port the controller answers on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// Runs the unit until the future is dropped: every tick, reads the settings in control,
    /// advances the model by the (simulated) time that passed and sets the values that
    /// changed. A value the server refuses (an input a client put out of service) is skipped.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let span = info_span!("bacnet_ahu", instance = self.instance, local = %self.local);
        async move {
            let started = tokio::time::Instant::now();
            let mut last = started;
            let mut ticks = tokio::time::interval(self.tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = tokio::time::Instant::now();
                self.read_settings().await;
                let elapsed = now - started;
                let dt = (now - last).mul_f64(self.clock.compression());
                last = now;
                self.unit
                    .advance(self.clock.seconds_of_day(elapsed), dt, &self.settings);
                self.publish().await;
            }
        }
        .instrument(span)
        .await
    }

    /// Stops answering and closes the port, waiting for requests in progress.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.server
            .stop()
            .await
            .map_err(|e| anyhow!("stopping the BACnet server failed: {e}"))
    }

    /// The settings in control: each commandable object's present value as its priority
    /// array resolves it. An unreadable one keeps its last value.
    async fn read_settings(&mut self) {
        let s = &mut self.settings;
        if let Some(v) = read_real(&self.server, ObjectType::ANALOG_VALUE, 1).await {
            s.supply_air_temp_setpoint_c = v;
        }
        if let Some(v) = read_real(&self.server, ObjectType::ANALOG_VALUE, 2).await {
            s.static_pressure_setpoint_pa = v;
        }
        if let Some(v) = read_real(&self.server, ObjectType::ANALOG_VALUE, 3).await {
            s.min_outside_airflow_m3h = v;
        }
        if let Some(v) = read_binary(&self.server, ObjectType::BINARY_VALUE, 1).await {
            s.enabled = v;
        }
        if let Some(v) = read_binary(&self.server, ObjectType::BINARY_OUTPUT, 1).await {
            s.supply_fan_start = v;
        }
        if let Some(v) = read_binary(&self.server, ObjectType::BINARY_OUTPUT, 2).await {
            s.return_fan_start = v;
        }
        if let Some(PropertyValue::Unsigned(v)) =
            read_present(&self.server, ObjectType::MULTI_STATE_VALUE, 1).await
        {
            s.occupancy_mode = u32::try_from(v).unwrap_or(1);
        }
    }

    /// Sets every output whose value changed since it was last set.
    async fn publish(&mut self) {
        let readings = self.unit.readings().clone();
        for (output, published) in OUTPUTS.iter().zip(self.published.iter_mut()) {
            let value = (output.value)(&readings);
            if published.as_ref() == Some(&value) {
                continue;
            }
            let Ok(oid) = ObjectIdentifier::new(output.object_type, output.instance) else {
                continue;
            };
            let result = if output.commanded {
                self.server
                    .write_local(
                        &oid,
                        PropertyIdentifier::PRESENT_VALUE,
                        None,
                        value.clone(),
                        Some(SEQUENCE_PRIORITY),
                        LocalCommandSource::ServerDevice,
                    )
                    .await
            } else {
                self.server
                    .set_present_value_local(&oid, value.clone())
                    .await
            };
            if let Err(error) = result {
                // Out of service (a client is simulating the value) is the usual cause; the
                // value is tried again once it changes.
                debug!(object = output.name, %error, "Present value not set.");
            }
            *published = Some(value);
        }
    }
}

/// Binds a simulated AHU with default settings at `address` and runs it; see
/// [`BacnetAhuSim`].
pub async fn serve_bacnet_ahu(
    address: SocketAddrV4,
    instance: u32,
    seed: u64,
) -> anyhow::Result<()> {
    BacnetAhuSim::new(instance, seed)
        .bind(address)
        .await?
        .run()
        .await
}

async fn read_present(
    server: &BACnetServer<BipTransport>,
    object_type: ObjectType,
    instance: u32,
) -> Option<PropertyValue> {
    let oid = ObjectIdentifier::new(object_type, instance).ok()?;
    match server
        .read_local(&oid, PropertyIdentifier::PRESENT_VALUE, None)
        .await
    {
        Ok(v) => Some(v),
        Err(error) => {
            warn!(?oid, %error, "Cannot read a setting back.");
            None
        }
    }
}

async fn read_real(
    server: &BACnetServer<BipTransport>,
    object_type: ObjectType,
    instance: u32,
) -> Option<f64> {
    match read_present(server, object_type, instance).await? {
        PropertyValue::Real(v) if v.is_finite() => Some(f64::from(v)),
        _ => None,
    }
}

async fn read_binary(
    server: &BACnetServer<BipTransport>,
    object_type: ObjectType,
    instance: u32,
) -> Option<bool> {
    match read_present(server, object_type, instance).await? {
        PropertyValue::Enumerated(v) => Some(v == 1),
        _ => None,
    }
}

/// An object whose present value the model supplies.
struct Output {
    object_type: ObjectType,
    instance: u32,
    name: &'static str,
    /// Commanded at [`SEQUENCE_PRIORITY`] (an output) rather than set (an input).
    commanded: bool,
    value: fn(&AhuReadings) -> PropertyValue,
}

const fn input(
    object_type: ObjectType,
    instance: u32,
    name: &'static str,
    value: fn(&AhuReadings) -> PropertyValue,
) -> Output {
    Output {
        object_type,
        instance,
        name,
        commanded: false,
        value,
    }
}

const fn command(
    instance: u32,
    name: &'static str,
    value: fn(&AhuReadings) -> PropertyValue,
) -> Output {
    Output {
        object_type: ObjectType::ANALOG_OUTPUT,
        instance,
        name,
        commanded: true,
        value,
    }
}

fn real(x: f64) -> PropertyValue {
    PropertyValue::Real(x as f32)
}

fn binary(b: bool) -> PropertyValue {
    PropertyValue::Enumerated(u32::from(b))
}

/// The objects the model drives, named as in the profile.
const OUTPUTS: [Output; 20] = [
    input(ObjectType::ANALOG_INPUT, 1, "supply_air_temp", |r| {
        real(r.supply_air_temp_c)
    }),
    input(ObjectType::ANALOG_INPUT, 2, "return_air_temp", |r| {
        real(r.return_air_temp_c)
    }),
    input(ObjectType::ANALOG_INPUT, 3, "mixed_air_temp", |r| {
        real(r.mixed_air_temp_c)
    }),
    input(ObjectType::ANALOG_INPUT, 4, "outside_air_temp", |r| {
        real(r.outside_air_temp_c)
    }),
    input(
        ObjectType::ANALOG_INPUT,
        5,
        "supply_air_static_pressure",
        |r| real(r.supply_static_pressure_pa),
    ),
    input(
        ObjectType::ANALOG_INPUT,
        6,
        "building_static_pressure",
        |r| real(r.building_static_pressure_pa),
    ),
    input(ObjectType::ANALOG_INPUT, 7, "outside_airflow", |r| {
        real(r.outside_airflow_m3h)
    }),
    input(ObjectType::ANALOG_INPUT, 8, "return_air_co2", |r| {
        real(r.return_co2_ppm)
    }),
    input(
        ObjectType::ANALOG_INPUT,
        9,
        "filter_differential_pressure",
        |r| real(r.filter_pressure_drop_pa),
    ),
    command(1, "supply_fan_speed_cmd", |r| real(r.supply_fan_speed_pct)),
    command(2, "return_fan_speed_cmd", |r| real(r.return_fan_speed_pct)),
    command(3, "cooling_valve_cmd", |r| real(r.cooling_valve_pct)),
    command(4, "heating_valve_cmd", |r| real(r.heating_valve_pct)),
    command(5, "outside_air_damper_cmd", |r| {
        real(r.outside_air_damper_pct)
    }),
    input(ObjectType::BINARY_INPUT, 1, "supply_fan_status", |r| {
        binary(r.supply_fan_running)
    }),
    input(ObjectType::BINARY_INPUT, 2, "return_fan_status", |r| {
        binary(r.return_fan_running)
    }),
    input(ObjectType::BINARY_INPUT, 3, "supply_fan_fault", |r| {
        binary(r.supply_fan_fault)
    }),
    input(ObjectType::BINARY_INPUT, 4, "freeze_stat", |r| {
        binary(r.freeze_stat)
    }),
    input(ObjectType::BINARY_INPUT, 5, "filter_alarm", |r| {
        binary(r.filter_alarm)
    }),
    input(ObjectType::MULTI_STATE_INPUT, 1, "operating_mode", |r| {
        PropertyValue::Unsigned(r.operating_mode as u64)
    }),
];

const CELSIUS: EngineeringUnits = EngineeringUnits::DEGREES_CELSIUS;

/// The controller's objects, with the model's first readings in the inputs and the
/// relinquish defaults of `settings` in the commandable values.
fn database(
    identity: &DeviceIdentity,
    readings: &AhuReadings,
    settings: &AhuSettings,
) -> Result<ObjectDatabase, bacnet_types::error::Error> {
    let mut objects: Vec<Box<dyn BACnetObject>> = Vec::new();
    // Analog inputs: (instance, name, units, COV increment). The increments are those a
    // commissioning engineer would set, so that sensor noise does not flood subscribers.
    let analog_inputs = [
        (1, "supply_air_temp", CELSIUS, 0.1),
        (2, "return_air_temp", CELSIUS, 0.1),
        (3, "mixed_air_temp", CELSIUS, 0.2),
        (4, "outside_air_temp", CELSIUS, 0.2),
        (
            5,
            "supply_air_static_pressure",
            EngineeringUnits::PASCALS,
            5.0,
        ),
        (
            6,
            "building_static_pressure",
            EngineeringUnits::PASCALS,
            1.0,
        ),
        (
            7,
            "outside_airflow",
            EngineeringUnits::CUBIC_METERS_PER_HOUR,
            100.0,
        ),
        (
            8,
            "return_air_co2",
            EngineeringUnits::PARTS_PER_MILLION,
            20.0,
        ),
        (
            9,
            "filter_differential_pressure",
            EngineeringUnits::PASCALS,
            5.0,
        ),
    ];
    for (instance, name, units, increment) in analog_inputs {
        let mut ai = AnalogInputObject::new(instance, name, units)?;
        if let Some(PropertyValue::Real(v)) = initial(readings, ObjectType::ANALOG_INPUT, instance)
        {
            ai.set_present_value(v);
        }
        ai.write_property(
            PropertyIdentifier::COV_INCREMENT,
            None,
            PropertyValue::Real(increment),
            None,
        )?;
        objects.push(Box::new(ai));
    }
    let analog_outputs = [
        (1, "supply_fan_speed_cmd"),
        (2, "return_fan_speed_cmd"),
        (3, "cooling_valve_cmd"),
        (4, "heating_valve_cmd"),
        (5, "outside_air_damper_cmd"),
    ];
    for (instance, name) in analog_outputs {
        let mut ao = AnalogOutputObject::new(instance, name, EngineeringUnits::PERCENT)?;
        ao.set_min_pres_value(0.0);
        ao.set_max_pres_value(100.0);
        ao.set_relinquish_default(0.0)?;
        ao.write_property(
            PropertyIdentifier::COV_INCREMENT,
            None,
            PropertyValue::Real(1.0),
            None,
        )?;
        objects.push(Box::new(ao));
    }
    for (instance, name) in [(1, "supply_fan_start"), (2, "return_fan_start")] {
        let mut bo = BinaryOutputObject::new(instance, name)?;
        let start = if instance == 1 {
            settings.supply_fan_start
        } else {
            settings.return_fan_start
        };
        bo.set_relinquish_default(u32::from(start))?;
        objects.push(Box::new(bo));
    }
    let binary_inputs = [
        (1, "supply_fan_status"),
        (2, "return_fan_status"),
        (3, "supply_fan_fault"),
        (4, "freeze_stat"),
        (5, "filter_alarm"),
    ];
    for (instance, name) in binary_inputs {
        let mut bi = BinaryInputObject::new(instance, name)?;
        if let Some(PropertyValue::Enumerated(v)) =
            initial(readings, ObjectType::BINARY_INPUT, instance)
        {
            bi.set_present_value(v);
        }
        objects.push(Box::new(bi));
    }
    // Setpoints: commandable, with a priority array and a relinquish default.
    let setpoints = [
        (
            1,
            "supply_air_temp_setpoint",
            CELSIUS,
            settings.supply_air_temp_setpoint_c,
            (10.0, 25.0),
        ),
        (
            2,
            "supply_air_static_pressure_setpoint",
            EngineeringUnits::PASCALS,
            settings.static_pressure_setpoint_pa,
            (25.0, 1500.0),
        ),
        (
            3,
            "minimum_outside_airflow_setpoint",
            EngineeringUnits::CUBIC_METERS_PER_HOUR,
            settings.min_outside_airflow_m3h,
            (0.0, 12_000.0),
        ),
    ];
    for (instance, name, units, default, (min, max)) in setpoints {
        let mut av = AnalogValueObject::new(instance, name, units)?;
        av.set_min_pres_value(min);
        av.set_max_pres_value(max);
        av.set_relinquish_default(default as f32)?;
        objects.push(Box::new(av));
    }
    let mut occupancy = MultiStateValueObject::new(1, "occupancy_mode", 5)?;
    occupancy.set_relinquish_default(settings.occupancy_mode)?;
    objects.push(Box::new(occupancy));
    let mut mode = MultiStateInputObject::new(1, "operating_mode", 4)?;
    mode.set_present_value(readings.operating_mode as u32);
    objects.push(Box::new(mode));
    let mut enable = BinaryValueObject::new(1, "enable")?;
    enable.set_relinquish_default(u32::from(settings.enabled))?;
    objects.push(Box::new(enable));

    let mut device = DeviceObject::new(DeviceConfig {
        identity: identity.clone(),
        vendor_name: "smartpark device-sim".into(),
        model_name: "Simulated VAV air-handling unit".into(),
        firmware_revision: env!("CARGO_PKG_VERSION").into(),
        application_software_version: env!("CARGO_PKG_VERSION").into(),
        ..DeviceConfig::default()
    })?;
    device.set_services_supported(identity.services());
    let mut object_list = vec![device.object_identifier()];
    object_list.extend(objects.iter().map(|o| o.object_identifier()));
    device.set_object_list(object_list);
    let mut db = ObjectDatabase::new();
    db.add(Box::new(device))?;
    for object in objects {
        db.add(object)?;
    }
    Ok(db)
}

/// The model's value for an input object, as the server stores it.
fn initial(
    readings: &AhuReadings,
    object_type: ObjectType,
    instance: u32,
) -> Option<PropertyValue> {
    OUTPUTS
        .iter()
        .find(|o| o.object_type == object_type && o.instance == instance)
        .map(|o| (o.value)(readings))
}
