//! Discovery: who is on the network (Who-Is for a range of instances, I-Am replies
//! collected for a while), and what each device offers (its object list, with names and
//! units), ready to become a profile.
//!
//! Discovery reads and never writes. It does not follow routers to other networks and it
//! reads only the object types a profile can map ([`BacnetObjectType`]), listing the
//! others by type number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::time::Duration;

use bacnet_encoding::primitives::decode_application_value;
use bacnet_services::who_is::DeviceInstanceRange;
use bacnet_types::constructed::{PropertyReference, ReadAccessSpecification};
use bacnet_types::enums::{EngineeringUnits, ObjectType, PropertyIdentifier};
use bacnet_types::primitives::{ObjectIdentifier, PropertyValue};
use tokio::time::Instant;

use crate::bacnet::value::unit_text;
use crate::bacnet::{BacnetError, Client, Network, address_of, mac_of};
use crate::profile::{BacnetObjectType, MAX_BACNET_INSTANCE};

/// What to look for and for how long.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Lowest and highest device instance to ask for.
    pub low: u32,
    pub high: u32,
    /// How long to collect I-Am replies after the Who-Is.
    pub wait: Duration,
    /// Stop collecting as soon as this many devices of the range have answered, rather
    /// than waiting out `wait`: for finding known devices quickly. `None` waits it out.
    pub stop_after: Option<usize>,
    /// Also read each device's object list, names and units.
    pub read_objects: bool,
    /// Objects per ReadPropertyMultiple while reading names and units.
    pub objects_per_request: usize,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            low: 0,
            high: MAX_BACNET_INSTANCE,
            wait: Duration::from_secs(3),
            stop_after: None,
            read_objects: true,
            objects_per_request: 20,
        }
    }
}

/// A device that answered, and what it offers.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDevice {
    pub instance: u32,
    /// Where it answered from; `None` for a device behind a router.
    pub address: Option<SocketAddrV4>,
    pub vendor_id: u16,
    pub max_apdu: u32,
    pub segmentation: String,
    pub name: Option<String>,
    pub vendor_name: Option<String>,
    pub model_name: Option<String>,
    /// Every object of its object list except the device object itself, in list order.
    pub objects: Vec<FoundObject>,
    /// Why its objects could not be (fully) read, if they could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FoundObject {
    /// The standard's type number, and the type as a profile names it where it can.
    pub type_code: u32,
    pub object_type: Option<BacnetObjectType>,
    pub instance: u32,
    pub name: Option<String>,
    pub units: Option<String>,
    pub description: Option<String>,
}

/// Broadcasts a Who-Is for `options.low..=options.high`, collects the I-Am replies for
/// `options.wait` (or until `options.stop_after` devices answered), then reads each
/// device's object list, object names and units.
pub async fn discover(
    network: &Network,
    options: &DiscoverOptions,
) -> Result<Vec<FoundDevice>, BacnetError> {
    let client = network.client().await?;
    let range = DeviceInstanceRange::new(options.low, options.high)
        .map_err(|e| BacnetError::Request(format!("bad instance range: {e}")))?;
    // Only I-Am replies heard after this point count: the table may hold older ones.
    let mut events = client.device_events();
    let sent = if network.broadcasts_natively() {
        client.who_is(Some(range)).await
    } else {
        client
            .who_is_directed(&mac_of(network.port().broadcast), Some(range))
            .await
    };
    sent.map_err(|e| BacnetError::Request(format!("cannot send Who-Is: {e}")))?;
    let deadline = Instant::now() + options.wait;
    let mut heard = BTreeMap::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Ok(event)) => {
                let d = event.device;
                let instance = d.object_identifier.instance_number();
                if (options.low..=options.high).contains(&instance) {
                    heard.insert(instance, d);
                    if options.stop_after.is_some_and(|n| heard.len() >= n) {
                        break;
                    }
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
        }
    }
    let mut found = Vec::with_capacity(heard.len());
    for (instance, d) in heard {
        let local = d.is_local();
        let mut device = FoundDevice {
            instance,
            address: if local {
                address_of(&d.mac_address)
            } else {
                None
            },
            vendor_id: d.vendor_id,
            max_apdu: d.max_apdu_length,
            segmentation: format!("{}", d.segmentation_supported)
                .to_ascii_lowercase()
                .replace('_', "-"),
            name: None,
            vendor_name: None,
            model_name: None,
            objects: Vec::new(),
            error: None,
        };
        if options.read_objects {
            if local {
                if let Err(e) = read_device(&client, &d.mac_address, &mut device, options).await {
                    device.error = Some(e);
                }
            } else {
                device.error = Some("behind a router: objects not read".into());
            }
        }
        found.push(device);
    }
    Ok(found)
}

fn text(value: Option<&[u8]>) -> Option<String> {
    match decode_application_value(value?, 0).ok()?.0 {
        PropertyValue::CharacterString(s) => Some(s),
        _ => None,
    }
}

async fn read_device(
    client: &Client,
    mac: &[u8],
    device: &mut FoundDevice,
    options: &DiscoverOptions,
) -> Result<(), String> {
    let me =
        ObjectIdentifier::new(ObjectType::DEVICE, device.instance).map_err(|e| e.to_string())?;
    let props = |ids: &[PropertyIdentifier]| -> Vec<PropertyReference> {
        ids.iter()
            .map(|&p| PropertyReference {
                property_identifier: p,
                property_array_index: None,
            })
            .collect()
    };
    let ack = client
        .read_property_multiple(
            mac,
            vec![ReadAccessSpecification {
                object_identifier: me,
                list_of_property_references: props(&[
                    PropertyIdentifier::OBJECT_NAME,
                    PropertyIdentifier::VENDOR_NAME,
                    PropertyIdentifier::MODEL_NAME,
                ]),
            }],
        )
        .await
        .map_err(|e| format!("cannot read the device object: {e}"))?;
    for r in ack
        .list_of_read_access_results
        .iter()
        .flat_map(|r| &r.list_of_results)
    {
        let v = text(r.property_value.as_deref());
        match r.property_identifier {
            PropertyIdentifier::OBJECT_NAME => device.name = v,
            PropertyIdentifier::VENDOR_NAME => device.vendor_name = v,
            PropertyIdentifier::MODEL_NAME => device.model_name = v,
            _ => {}
        }
    }
    let list = object_list(client, mac, me).await?;
    let objects: Vec<ObjectIdentifier> = list
        .into_iter()
        .filter(|o| o.object_type() != ObjectType::DEVICE)
        .collect();
    device.objects = objects
        .iter()
        .map(|o| FoundObject {
            type_code: o.object_type().to_raw(),
            object_type: BacnetObjectType::from_code(o.object_type().to_raw()),
            instance: o.instance_number(),
            name: None,
            units: None,
            description: None,
        })
        .collect();
    let wanted: Vec<usize> = (0..objects.len())
        .filter(|&i| device.objects[i].object_type.is_some())
        .collect();
    for chunk in wanted.chunks(options.objects_per_request.max(1)) {
        let specs = chunk
            .iter()
            .map(|&i| {
                let t = device.objects[i].object_type;
                let mut ids = vec![
                    PropertyIdentifier::OBJECT_NAME,
                    PropertyIdentifier::DESCRIPTION,
                ];
                if t.is_some_and(|t| t.is_analog()) {
                    ids.push(PropertyIdentifier::UNITS);
                }
                ReadAccessSpecification {
                    object_identifier: objects[i],
                    list_of_property_references: props(&ids),
                }
            })
            .collect();
        let ack = client
            .read_property_multiple(mac, specs)
            .await
            .map_err(|e| format!("cannot read object names: {e}"))?;
        for (r, &i) in ack.list_of_read_access_results.iter().zip(chunk) {
            let o = &mut device.objects[i];
            for e in &r.list_of_results {
                match e.property_identifier {
                    PropertyIdentifier::OBJECT_NAME => o.name = text(e.property_value.as_deref()),
                    PropertyIdentifier::DESCRIPTION => {
                        o.description = text(e.property_value.as_deref()).filter(|d| !d.is_empty())
                    }
                    PropertyIdentifier::UNITS => {
                        o.units = e
                            .property_value
                            .as_deref()
                            .and_then(|v| decode_application_value(v, 0).ok())
                            .and_then(|(v, _)| match v {
                                PropertyValue::Enumerated(u) => {
                                    unit_text(EngineeringUnits::from_raw(u))
                                }
                                _ => None,
                            })
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// The device's object list: whole (the reply is segmented when large), or element by
/// element where the device cannot send it whole.
async fn object_list(
    client: &Client,
    mac: &[u8],
    device: ObjectIdentifier,
) -> Result<Vec<ObjectIdentifier>, String> {
    let ids = |v: PropertyValue| -> Vec<ObjectIdentifier> {
        match v {
            PropertyValue::ObjectIdentifier(o) => vec![o],
            PropertyValue::List(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    PropertyValue::ObjectIdentifier(o) => Some(o),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let decode_all = |bytes: &[u8]| -> Vec<ObjectIdentifier> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            match decode_application_value(bytes, offset) {
                Ok((v, next)) => {
                    out.extend(ids(v));
                    offset = next;
                }
                Err(_) => break,
            }
        }
        out
    };
    if let Ok(ack) = client
        .read_property(mac, device, PropertyIdentifier::OBJECT_LIST, None)
        .await
    {
        return Ok(decode_all(&ack.property_value));
    }
    // Element 0 is the length; then ask for the elements in batches of one request each.
    let ack = client
        .read_property(mac, device, PropertyIdentifier::OBJECT_LIST, Some(0))
        .await
        .map_err(|e| format!("cannot read the object list: {e}"))?;
    let count = match decode_application_value(&ack.property_value, 0) {
        Ok((PropertyValue::Unsigned(n), _)) => n as u32,
        _ => return Err("the object list length is not a number".into()),
    };
    let mut out = Vec::with_capacity(count as usize);
    let indexes: Vec<u32> = (1..=count).collect();
    for chunk in indexes.chunks(50) {
        let spec = ReadAccessSpecification {
            object_identifier: device,
            list_of_property_references: chunk
                .iter()
                .map(|&i| PropertyReference {
                    property_identifier: PropertyIdentifier::OBJECT_LIST,
                    property_array_index: Some(i),
                })
                .collect(),
        };
        let ack = client
            .read_property_multiple(mac, vec![spec])
            .await
            .map_err(|e| format!("cannot read the object list: {e}"))?;
        for e in ack
            .list_of_read_access_results
            .iter()
            .flat_map(|r| &r.list_of_results)
        {
            if let Some(v) = &e.property_value {
                out.extend(decode_all(v));
            }
        }
    }
    Ok(out)
}

/// A profile draft (the TOML of `firmware-configs/profiles/`) with one point per object a
/// profile can map, named after the object's name. A person still chooses which points
/// are writable and which want COV: the draft makes none writable and subscribes none.
pub fn draft_profile(device: &FoundDevice, id: &str) -> String {
    let mut out = String::new();
    let q = |s: &str| format!("{s:?}");
    let _ = writeln!(out, "id = {}", q(id));
    let _ = writeln!(out, "protocol = \"bacnet\"");
    let _ = writeln!(
        out,
        "manufacturer = {}",
        q(device.vendor_name.as_deref().unwrap_or("unknown"))
    );
    let _ = writeln!(
        out,
        "model = {}",
        q(device.model_name.as_deref().unwrap_or("unknown"))
    );
    let _ = writeln!(
        out,
        "source = {}",
        q(&format!(
            "discovered from device {} ({})",
            device.instance,
            device.name.as_deref().unwrap_or("unnamed")
        ))
    );
    let mut used = std::collections::HashSet::new();
    for o in &device.objects {
        let Some(t) = o.object_type else { continue };
        let base: String = o
            .name
            .as_deref()
            .unwrap_or("")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_matches('_')
            .chars()
            .take(48)
            .collect();
        let base = if base.is_empty() {
            format!("{}-{}", t.name(), o.instance)
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        let _ = writeln!(out, "\n[[point]]");
        let _ = writeln!(out, "name = {}", q(&name));
        let _ = writeln!(out, "object_type = {}", q(t.name()));
        let _ = writeln!(out, "instance = {}", o.instance);
        if let Some(u) = &o.units {
            let _ = writeln!(out, "unit = {}", q(u));
        }
        if t.is_binary() || t.is_multi_state() {
            let _ = writeln!(out, "kind = \"state\"");
        }
        if let Some(d) = &o.description {
            let _ = writeln!(out, "description = {}", q(d));
        }
    }
    out
}
