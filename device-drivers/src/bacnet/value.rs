//! Present values and status flags between BACnet's encoding and smartpark's samples: the
//! decoding of what a device reports, and the encoding of what is written to it.
//!
//! Pure functions of their inputs; no IO. A value that cannot be decoded, a fault or a
//! value of the wrong type becomes a bad reading with the reason, never a zero.

use std::sync::Arc;

use bacnet_encoding::primitives::{decode_application_value, encode_property_value};
use bacnet_types::enums::{EngineeringUnits, ErrorClass, ErrorCode};
use bacnet_types::primitives::PropertyValue;
use bytes::BytesMut;

use crate::driver::WriteError;
use crate::profile::{BacnetObjectType, BacnetPoint, PointSpec};
use crate::sample::{Quality, Value};

/// A decoded present value with its quality.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: Option<Value>,
    pub quality: Quality,
}

impl Reading {
    pub fn bad(reason: impl Into<Arc<str>>) -> Self {
        Reading {
            value: None,
            quality: Quality::bad(reason),
        }
    }
}

/// The four status flags every object with a present value reports (Clause 12.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFlags {
    pub in_alarm: bool,
    pub fault: bool,
    pub overridden: bool,
    pub out_of_service: bool,
}

impl StatusFlags {
    /// Decodes the application-tagged bit string of `Status_Flags`.
    pub fn decode(encoded: &[u8]) -> Option<StatusFlags> {
        match decode_application_value(encoded, 0).ok()?.0 {
            PropertyValue::BitString { data, unused_bits } => {
                // Bit 0 is the first, most significant bit of the first octet.
                let bits = data.len() * 8 - (unused_bits as usize).min(data.len() * 8);
                let bit = |i: usize| i < bits && data[i / 8] & (0x80 >> (i % 8)) != 0;
                Some(StatusFlags {
                    in_alarm: bit(0),
                    fault: bit(1),
                    overridden: bit(2),
                    out_of_service: bit(3),
                })
            }
            _ => None,
        }
    }
}

/// Decodes one application-tagged present value for a point, applying scale, offset and
/// the plausible range of the profile, and the status flags when they were read.
pub fn decode_present_value(
    spec: &PointSpec,
    point: &BacnetPoint,
    encoded: &[u8],
    flags: Option<StatusFlags>,
) -> Reading {
    if let Some(flags) = flags
        && flags.fault
    {
        return Reading::bad("the device reports a fault (status flag)");
    }
    let value = match decode_application_value(encoded, 0) {
        Ok((value, _)) => value,
        Err(e) => return Reading::bad(format!("undecodable present value: {e}")),
    };
    let raw = match to_value(point.object_type, &value) {
        Ok(v) => v,
        Err(reason) => return Reading::bad(reason),
    };
    let value = match raw {
        Value::Float(f) if !f.is_finite() => return Reading::bad("not a number"),
        Value::Float(f) => Value::Float(f * spec.scale + spec.offset),
        Value::Int(i) if spec.scale != 1.0 || spec.offset != 0.0 => {
            Value::Float(i as f64 * spec.scale + spec.offset)
        }
        other => other,
    };
    let mut quality = Quality::Good;
    if let Some(x) = value.as_f64()
        && (spec.min.is_some_and(|min| x < min) || spec.max.is_some_and(|max| x > max))
    {
        quality = Quality::Uncertain("outside the plausible range".into());
    }
    if let Some(flags) = flags {
        if flags.out_of_service {
            quality = Quality::Uncertain("out of service".into());
        } else if flags.overridden {
            quality = Quality::Uncertain("overridden at the device".into());
        }
    }
    Reading {
        value: Some(value),
        quality,
    }
}

/// The smartpark value of a BACnet present value of an object type, without scaling.
fn to_value(object_type: BacnetObjectType, value: &PropertyValue) -> Result<Value, String> {
    use BacnetObjectType as T;
    let wrong = || {
        format!(
            "a {object_type} reported a present value of type {}",
            type_name(value)
        )
    };
    Ok(match (object_type, value) {
        (T::AnalogInput | T::AnalogOutput | T::AnalogValue, PropertyValue::Real(f)) => {
            Value::Float(crate::sample::widen_f32(*f))
        }
        (T::LargeAnalogValue, PropertyValue::Double(f)) => Value::Float(*f),
        (T::BinaryInput | T::BinaryOutput | T::BinaryValue, PropertyValue::Enumerated(e)) => {
            match e {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(format!("binary present value {other} is neither 0 nor 1")),
            }
        }
        (
            T::MultiStateInput | T::MultiStateOutput | T::MultiStateValue,
            PropertyValue::Unsigned(u),
        ) => {
            if *u == 0 {
                return Err("multi-state present value 0 (states count from 1)".into());
            }
            Value::Int(*u as i64)
        }
        (T::IntegerValue, PropertyValue::Signed(i)) => Value::Int(*i as i64),
        (T::PositiveIntegerValue | T::Accumulator, PropertyValue::Unsigned(u)) => {
            Value::Int(i64::try_from(*u).map_err(|_| format!("{u} does not fit in 63 bits"))?)
        }
        (_, PropertyValue::Null) => return Err("the present value is null".into()),
        _ => return Err(wrong()),
    })
}

fn type_name(value: &PropertyValue) -> &'static str {
    match value {
        PropertyValue::Null => "null",
        PropertyValue::Boolean(_) => "boolean",
        PropertyValue::Unsigned(_) => "unsigned",
        PropertyValue::Signed(_) => "signed",
        PropertyValue::Real(_) => "real",
        PropertyValue::Double(_) => "double",
        PropertyValue::OctetString(_) => "octet string",
        PropertyValue::CharacterString(_) => "character string",
        PropertyValue::BitString { .. } => "bit string",
        PropertyValue::Enumerated(_) => "enumerated",
        PropertyValue::Date(_) => "date",
        PropertyValue::Time(_) => "time",
        PropertyValue::ObjectIdentifier(_) => "object identifier",
        PropertyValue::List(_) => "list",
        PropertyValue::ApplicationData(_) => "constructed data",
    }
}

/// Encodes a value to write to a point's present value; `None` encodes NULL, which
/// relinquishes the point's priority slot. The profile's range and scale are applied.
pub fn encode_write(
    spec: &PointSpec,
    point: &BacnetPoint,
    value: Option<&Value>,
) -> Result<Vec<u8>, WriteError> {
    use BacnetObjectType as T;
    let out_of_range = |value: &Value, reason: &str| WriteError::OutOfRange {
        point: spec.name.clone(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let Some(value) = value else {
        return Ok(encode(&PropertyValue::Null));
    };
    let number = match value {
        Value::Bool(b) => *b as u8 as f64,
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Text(_) => return Err(out_of_range(value, "text cannot be written")),
    };
    if !number.is_finite() {
        return Err(out_of_range(value, "not a finite number"));
    }
    if spec.min.is_some_and(|min| number < min) || spec.max.is_some_and(|max| number > max) {
        return Err(out_of_range(value, "outside the profile's range"));
    }
    let raw = (number - spec.offset) / spec.scale;
    let whole = |what: &str| -> Result<f64, WriteError> {
        if raw.fract() != 0.0 {
            Err(out_of_range(
                value,
                &format!("a {what} takes a whole number"),
            ))
        } else {
            Ok(raw)
        }
    };
    let encoded = match point.object_type {
        T::AnalogInput | T::AnalogOutput | T::AnalogValue => {
            if raw.abs() > f32::MAX as f64 {
                return Err(out_of_range(value, "too large for a BACnet real"));
            }
            PropertyValue::Real(raw as f32)
        }
        T::LargeAnalogValue => PropertyValue::Double(raw),
        T::BinaryInput | T::BinaryOutput | T::BinaryValue => match (value, raw) {
            (Value::Bool(b), _) => PropertyValue::Enumerated(*b as u32),
            (_, r) if r == 0.0 || r == 1.0 => PropertyValue::Enumerated(r as u32),
            _ => {
                return Err(out_of_range(
                    value,
                    "a binary point takes true, false, 0 or 1",
                ));
            }
        },
        T::MultiStateInput | T::MultiStateOutput | T::MultiStateValue => {
            let state = whole("state")?;
            if !(1.0..=u32::MAX as f64).contains(&state) {
                return Err(out_of_range(value, "states count from 1"));
            }
            PropertyValue::Unsigned(state as u64)
        }
        T::IntegerValue => {
            let i = whole("integer value")?;
            if !(i32::MIN as f64..=i32::MAX as f64).contains(&i) {
                return Err(out_of_range(value, "outside a 32-bit signed integer"));
            }
            PropertyValue::Signed(i as i32)
        }
        T::PositiveIntegerValue | T::Accumulator => {
            let u = whole("positive integer value")?;
            if !(0.0..=u32::MAX as f64).contains(&u) {
                return Err(out_of_range(value, "outside a 32-bit unsigned integer"));
            }
            PropertyValue::Unsigned(u as u64)
        }
    };
    Ok(encode(&encoded))
}

fn encode(value: &PropertyValue) -> Vec<u8> {
    let mut buf = BytesMut::new();
    // Primitive values always encode; only constructed data can fail.
    let _ = encode_property_value(&mut buf, value);
    buf.to_vec()
}

/// Whether a read-back value is what was written: reals compare in single precision.
pub fn same_value(written: &Value, read_back: &Value) -> bool {
    match (written.as_f64(), read_back.as_f64()) {
        (Some(a), Some(b)) => a == b || ((a as f32) == (b as f32)) || (a - b).abs() < 1e-9,
        _ => written == read_back,
    }
}

/// An error class and code as BACnet names them, for reasons: `object/unknown-object`.
pub fn error_text(class: ErrorClass, code: ErrorCode) -> String {
    let name = |n: Option<&str>, raw: u16| {
        n.map(|n| n.to_ascii_lowercase().replace('_', "-"))
            .unwrap_or_else(|| raw.to_string())
    };
    format!(
        "{}/{}",
        name(class.name(), class.to_raw()),
        name(code.name(), code.to_raw())
    )
}

/// A unit as people write it, for the common ones; the standard's name otherwise.
pub fn unit_text(units: EngineeringUnits) -> Option<String> {
    let symbol = match units {
        EngineeringUnits::NO_UNITS => return None,
        EngineeringUnits::DEGREES_CELSIUS => "°C",
        EngineeringUnits::DEGREES_FAHRENHEIT => "°F",
        EngineeringUnits::DEGREES_KELVIN => "K",
        EngineeringUnits::DELTA_DEGREES_KELVIN => "K",
        EngineeringUnits::PERCENT => "%",
        EngineeringUnits::PERCENT_RELATIVE_HUMIDITY => "%RH",
        EngineeringUnits::PASCALS => "Pa",
        EngineeringUnits::KILOPASCALS => "kPa",
        EngineeringUnits::BARS => "bar",
        EngineeringUnits::WATTS => "W",
        EngineeringUnits::KILOWATTS => "kW",
        EngineeringUnits::KILOWATT_HOURS => "kWh",
        EngineeringUnits::MEGAWATT_HOURS => "MWh",
        EngineeringUnits::VOLTS => "V",
        EngineeringUnits::AMPERES => "A",
        EngineeringUnits::HERTZ => "Hz",
        EngineeringUnits::CUBIC_METERS => "m³",
        EngineeringUnits::CUBIC_METERS_PER_HOUR => "m³/h",
        EngineeringUnits::CUBIC_METERS_PER_SECOND => "m³/s",
        EngineeringUnits::LITERS_PER_SECOND => "l/s",
        EngineeringUnits::LITERS_PER_MINUTE => "l/min",
        EngineeringUnits::METERS_PER_SECOND => "m/s",
        EngineeringUnits::PARTS_PER_MILLION => "ppm",
        EngineeringUnits::TONS_REFRIGERATION => "ton",
        EngineeringUnits::SECONDS => "s",
        EngineeringUnits::MINUTES => "min",
        EngineeringUnits::HOURS => "h",
        other => {
            return Some(match other.name() {
                Some(name) => name.to_ascii_lowercase().replace('_', "-"),
                None => format!("units-{}", other.to_raw()),
            });
        }
    };
    Some(symbol.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PointKind, PointSource};

    fn point(object_type: BacnetObjectType) -> (PointSpec, BacnetPoint) {
        let b = BacnetPoint {
            object_type,
            instance: 1,
            cov: false,
            priority: 8,
        };
        let spec = PointSpec {
            name: "p".into(),
            unit: None,
            kind: PointKind::Gauge,
            description: None,
            scale: 1.0,
            offset: 0.0,
            writable: true,
            min: None,
            max: None,
            source: PointSource::Bacnet(b.clone()),
        };
        (spec, b)
    }

    #[test]
    fn every_object_type_round_trips_through_its_encoding() {
        use BacnetObjectType as T;
        for (t, v) in [
            (T::AnalogValue, Value::Float(21.5)),
            (T::LargeAnalogValue, Value::Float(1e12 + 0.25)),
            (T::BinaryOutput, Value::Bool(true)),
            (T::BinaryValue, Value::Bool(false)),
            (T::MultiStateValue, Value::Int(3)),
            (T::IntegerValue, Value::Int(-40)),
            (T::PositiveIntegerValue, Value::Int(4_000_000_000)),
        ] {
            let (spec, b) = point(t);
            let encoded = encode_write(&spec, &b, Some(&v)).unwrap();
            let reading = decode_present_value(&spec, &b, &encoded, None);
            assert_eq!(reading.value, Some(v), "{t}");
            assert_eq!(reading.quality, Quality::Good);
        }
    }

    #[test]
    fn a_null_write_encodes_the_null_tag() {
        let (spec, b) = point(BacnetObjectType::AnalogOutput);
        assert_eq!(encode_write(&spec, &b, None).unwrap(), vec![0x00]);
    }

    #[test]
    fn a_fault_flag_makes_a_bad_sample_without_a_value() {
        let (spec, b) = point(BacnetObjectType::AnalogInput);
        let encoded = encode(&PropertyValue::Real(999.0));
        let flags = StatusFlags {
            fault: true,
            ..StatusFlags::default()
        };
        let reading = decode_present_value(&spec, &b, &encoded, Some(flags));
        assert_eq!(reading.value, None);
        assert_eq!(reading.quality.name(), "bad");
    }

    #[test]
    fn status_flags_decode_from_the_first_bits() {
        // Bit string, 4 bits used (4 unused), fault and out-of-service set: 0b0101_0000.
        let encoded = encode(&PropertyValue::BitString {
            unused_bits: 4,
            data: vec![0b0101_0000],
        });
        let flags = StatusFlags::decode(&encoded).unwrap();
        assert!(!flags.in_alarm && flags.fault && !flags.overridden && flags.out_of_service);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_bad_with_the_reason() {
        let (spec, b) = point(BacnetObjectType::BinaryInput);
        let reading = decode_present_value(&spec, &b, &encode(&PropertyValue::Real(1.0)), None);
        assert_eq!(
            reading.quality.reason(),
            Some("a binary-input reported a present value of type real")
        );
        assert_eq!(reading.value, None);
    }

    #[test]
    fn writes_outside_the_range_or_type_are_refused_before_the_wire() {
        let (mut spec, b) = point(BacnetObjectType::AnalogValue);
        spec.max = Some(30.0);
        assert!(matches!(
            encode_write(&spec, &b, Some(&Value::Float(31.0))),
            Err(WriteError::OutOfRange { .. })
        ));
        let (spec, b) = point(BacnetObjectType::MultiStateValue);
        assert!(encode_write(&spec, &b, Some(&Value::Int(0))).is_err());
        assert!(encode_write(&spec, &b, Some(&Value::Float(1.5))).is_err());
        let (spec, b) = point(BacnetObjectType::BinaryOutput);
        assert!(encode_write(&spec, &b, Some(&Value::Int(2))).is_err());
        assert!(encode_write(&spec, &b, Some(&Value::Int(1))).is_ok());
    }

    #[test]
    fn error_classes_and_units_read_as_people_write_them() {
        assert_eq!(
            error_text(ErrorClass::OBJECT, ErrorCode::UNKNOWN_OBJECT),
            "object/unknown-object"
        );
        assert_eq!(
            unit_text(EngineeringUnits::DEGREES_CELSIUS).as_deref(),
            Some("°C")
        );
        assert_eq!(unit_text(EngineeringUnits::NO_UNITS), None);
    }
}
