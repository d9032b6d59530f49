//! The Modbus value codec: registers and bits to engineering values, and engineering values
//! back to registers for writes.
//!
//! Pure functions of a point's profile entry and its raw data. This module knows nothing of
//! blocks, connections, clocks or sample keys: the caller slices a block read into the
//! point's registers and wraps the result into a [`Sample`](crate::Sample).

use std::sync::Arc;

use crate::driver::WriteError;
use crate::profile::{DataType, ModbusPoint, Order, PointSpec};
use crate::sample::{Quality, Value};

/// The raw data of one point, as read from the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    /// Exactly the point's registers (holding or input table).
    Registers(&'a [u16]),
    /// The point's bit (coil or discrete input table).
    Bits(&'a [bool]),
}

/// A decoded point: what goes into a sample besides its key and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: Option<Value>,
    pub quality: Quality,
}

impl Reading {
    fn good(value: Value) -> Self {
        Reading {
            value: Some(value),
            quality: Quality::Good,
        }
    }

    fn bad(reason: &str) -> Self {
        Reading {
            value: None,
            quality: Quality::bad(reason),
        }
    }
}

/// What a write puts on the wire, before any read-modify-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Holding registers starting at the point's address, in wire order.
    Registers(Vec<u16>),
    /// One coil.
    Coil(bool),
    /// One bit of a holding register; the other bits must be read first and kept.
    Bit { bit: u8, value: bool },
}

/// A raw value taken from registers, before scale and offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// Raw data that does not have the shape the point needs. The planner slices blocks by the
/// profile, so this only happens when a device answers with less than was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("expected {expected} registers, got {got}")]
    Registers { expected: usize, got: usize },
    #[error("expected a bit, got {got} registers")]
    WantedBit { got: usize },
    #[error("expected {expected} registers, got bits")]
    WantedRegisters { expected: usize },
}

/// Decodes one point: raw value, then `raw * scale + offset`, then the plausibility range.
///
/// Integer types with scale 1 and offset 0 stay [`Value::Int`] so that counters keep every
/// digit; everything else becomes [`Value::Float`]. A NaN or infinite float from the device
/// is a bad sample, never a number; a value outside `min`/`max` is kept but uncertain.
pub fn decode(spec: &PointSpec, point: &ModbusPoint, raw: Raw<'_>) -> Reading {
    let raw = match raw_value(point, raw) {
        Ok(raw) => raw,
        Err(e) => return Reading::bad(&e.to_string()),
    };
    let mut reading = match raw {
        RawValue::Bool(b) => return Reading::good(Value::Bool(b)),
        RawValue::Float(f) if !f.is_finite() => return Reading::bad("not a number"),
        RawValue::Signed(i) if is_identity(spec) => Reading::good(Value::Int(i)),
        RawValue::Unsigned(u) if is_identity(spec) => match i64::try_from(u) {
            Ok(i) => Reading::good(Value::Int(i)),
            // Only a u64 above 2^63 gets here; no real counter does, so say so rather than
            // wrap it into a negative number.
            Err(_) => Reading {
                value: Some(Value::Float(u as f64)),
                quality: Quality::Uncertain("u64 value above the i64 range, precision lost".into()),
            },
        },
        // Passed through untouched: adding an offset of 0 would turn -0.0 into 0.0.
        RawValue::Float(f) if is_identity(spec) => Reading::good(Value::Float(f)),
        RawValue::Signed(i) => scaled(spec, i as f64),
        RawValue::Unsigned(u) => scaled(spec, u as f64),
        RawValue::Float(f) => scaled(spec, f),
    };
    if reading.quality == Quality::Good
        && let Some(reason) = reading.value.as_ref().and_then(|v| out_of_range(spec, v))
    {
        reading.quality = Quality::Uncertain(reason.into());
    }
    reading
}

fn is_identity(spec: &PointSpec) -> bool {
    spec.scale == 1.0 && spec.offset == 0.0
}

fn scaled(spec: &PointSpec, raw: f64) -> Reading {
    let v = raw * spec.scale + spec.offset;
    if v.is_finite() {
        Reading::good(Value::Float(v))
    } else {
        Reading::bad("value overflows after scaling")
    }
}

fn out_of_range(spec: &PointSpec, value: &Value) -> Option<String> {
    let v = value.as_f64()?;
    match (spec.min, spec.max) {
        (Some(min), _) if v < min => Some(format!("out of range: {v} is below min {min}")),
        (_, Some(max)) if v > max => Some(format!("out of range: {v} is above max {max}")),
        _ => None,
    }
}

/// Takes the raw value out of the point's registers or bit, honouring byte and word order.
pub fn raw_value(point: &ModbusPoint, raw: Raw<'_>) -> Result<RawValue, ShapeError> {
    if point.table.is_bit_table() {
        return match raw {
            Raw::Bits([b, ..]) => Ok(RawValue::Bool(*b)),
            Raw::Bits([]) => Err(ShapeError::WantedBit { got: 0 }),
            Raw::Registers(r) => Err(ShapeError::WantedBit { got: r.len() }),
        };
    }
    let expected = point.data_type.registers() as usize;
    let regs = match raw {
        Raw::Registers(r) if r.len() == expected => r,
        Raw::Registers(r) => {
            return Err(ShapeError::Registers {
                expected,
                got: r.len(),
            });
        }
        Raw::Bits(_) => return Err(ShapeError::WantedRegisters { expected }),
    };
    if let Some(bit) = point.bit {
        return Ok(RawValue::Bool(regs[0] >> bit & 1 == 1));
    }
    let mut bytes = [0u8; 8];
    let n = to_big_endian(regs, point.byte_order, point.word_order, &mut bytes);
    let b = &bytes[..n];
    Ok(match point.data_type {
        DataType::Bool => RawValue::Bool(u16::from_be_bytes([b[0], b[1]]) != 0),
        DataType::U16 => RawValue::Unsigned(u16::from_be_bytes([b[0], b[1]]) as u64),
        DataType::I16 => RawValue::Signed(i16::from_be_bytes([b[0], b[1]]) as i64),
        DataType::U32 => RawValue::Unsigned(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64),
        DataType::I32 => RawValue::Signed(i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64),
        DataType::F32 => RawValue::Float(crate::sample::widen_f32(f32::from_be_bytes([
            b[0], b[1], b[2], b[3],
        ]))),
        DataType::U64 => RawValue::Unsigned(u64::from_be_bytes(bytes)),
        DataType::I64 => RawValue::Signed(i64::from_be_bytes(bytes)),
        DataType::F64 => RawValue::Float(f64::from_be_bytes(bytes)),
    })
}

/// Writes the value's bytes, most significant first, into `out`; returns how many.
fn to_big_endian(regs: &[u16], byte_order: Order, word_order: Order, out: &mut [u8; 8]) -> usize {
    let n = regs.len();
    for (i, reg) in regs.iter().enumerate() {
        // Word order says which register holds the most significant word; byte order says
        // which byte of a register comes first.
        let slot = if word_order == Order::Big {
            i
        } else {
            n - 1 - i
        };
        let [hi, lo] = reg.to_be_bytes();
        let pair = if byte_order == Order::Big {
            [hi, lo]
        } else {
            [lo, hi]
        };
        out[2 * slot..2 * slot + 2].copy_from_slice(&pair);
    }
    2 * n
}

/// The inverse of [`to_big_endian`]: registers in wire order from big-endian value bytes.
fn from_big_endian(bytes: &[u8], byte_order: Order, word_order: Order) -> Vec<u16> {
    let n = bytes.len() / 2;
    (0..n)
        .map(|i| {
            let slot = if word_order == Order::Big {
                i
            } else {
                n - 1 - i
            };
            let (hi, lo) = (bytes[2 * slot], bytes[2 * slot + 1]);
            if byte_order == Order::Big {
                u16::from_be_bytes([hi, lo])
            } else {
                u16::from_be_bytes([lo, hi])
            }
        })
        .collect()
}

/// Turns an engineering value into what must be written: the inverse of scale and offset,
/// rounded to the nearest integer for integer types. Values that do not fit the register
/// type, or that lie outside the point's `min`/`max`, are refused before anything is sent.
pub fn encode(spec: &PointSpec, point: &ModbusPoint, value: &Value) -> Result<Encoded, WriteError> {
    let refuse = |reason: String| WriteError::OutOfRange {
        point: spec.name.clone(),
        value: value.to_string(),
        reason,
    };
    if point.table.is_bit_table() || point.bit.is_some() {
        let b = match value {
            Value::Bool(b) => *b,
            Value::Int(0) => false,
            Value::Int(1) => true,
            _ => return Err(refuse("expected a boolean (or 0 or 1)".into())),
        };
        return Ok(match point.bit {
            Some(bit) => Encoded::Bit { bit, value: b },
            None => Encoded::Coil(b),
        });
    }
    let engineering = match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) if f.is_finite() => *f,
        Value::Float(_) => return Err(refuse("not a number".into())),
        Value::Bool(_) | Value::Text(_) => return Err(refuse("expected a number".into())),
    };
    if let Some(min) = spec.min.filter(|min| engineering < *min) {
        return Err(refuse(format!("below min {min}")));
    }
    if let Some(max) = spec.max.filter(|max| engineering > *max) {
        return Err(refuse(format!("above max {max}")));
    }
    let bytes: Vec<u8> = match point.data_type {
        DataType::F32 | DataType::F64 => {
            let raw = (engineering - spec.offset) / spec.scale;
            if !raw.is_finite() {
                return Err(refuse("overflows after scaling".into()));
            }
            if point.data_type == DataType::F32 {
                if raw.abs() > f32::MAX as f64 {
                    return Err(refuse("does not fit an f32".into()));
                }
                (raw as f32).to_be_bytes().to_vec()
            } else {
                raw.to_be_bytes().to_vec()
            }
        }
        t => {
            let raw = match value {
                // An integer that needs no scaling is taken as it is, so that 64-bit values
                // keep digits an f64 would round away.
                Value::Int(i) if is_identity(spec) => *i as i128,
                _ => round_to_integer((engineering - spec.offset) / spec.scale)
                    .ok_or_else(|| refuse(format!("does not fit {}", t.name())))?,
            };
            let (lo, hi) = integer_bounds(t);
            if raw < lo || raw > hi {
                return Err(refuse(format!("raw value {raw} does not fit {}", t.name())));
            }
            let width = t.registers() as usize * 2;
            // Two's complement in 128 bits, cut to the register width, is the wire form of
            // both signed and unsigned types.
            raw.to_be_bytes()[16 - width..].to_vec()
        }
    };
    Ok(Encoded::Registers(from_big_endian(
        &bytes,
        point.byte_order,
        point.word_order,
    )))
}

/// Rounds half away from zero; `None` when the result cannot be any Modbus integer type.
fn round_to_integer(raw: f64) -> Option<i128> {
    let r = raw.round();
    // 2^64 bounds every type here; comparing as f64 is exact at powers of two.
    (r.is_finite() && r > -18446744073709551616.0 && r < 18446744073709551616.0)
        .then_some(r as i128)
}

fn integer_bounds(t: DataType) -> (i128, i128) {
    match t {
        DataType::U16 => (0, u16::MAX as i128),
        DataType::I16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::U32 => (0, u32::MAX as i128),
        DataType::I32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::U64 => (0, u64::MAX as i128),
        DataType::I64 => (i64::MIN as i128, i64::MAX as i128),
        DataType::Bool => (0, 1),
        DataType::F32 | DataType::F64 => (i128::MIN, i128::MAX),
    }
}

/// Sets or clears one bit of a register, keeping the others.
pub fn with_bit(register: u16, bit: u8, value: bool) -> u16 {
    if value {
        register | 1 << bit
    } else {
        register & !(1 << bit)
    }
}

/// A short reason for the log and for [`WriteError::VerifyFailed`] when a value is missing.
pub(crate) fn describe(reading: &Reading) -> Arc<str> {
    match &reading.value {
        Some(v) => v.to_string().into(),
        None => reading.quality.reason().unwrap_or("no value").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PointKind, PointSource, RegisterTable};

    const ORDERS: [(Order, Order); 4] = [
        (Order::Big, Order::Big),
        (Order::Big, Order::Little),
        (Order::Little, Order::Big),
        (Order::Little, Order::Little),
    ];

    fn point(
        table: RegisterTable,
        data_type: DataType,
        byte_order: Order,
        word_order: Order,
    ) -> ModbusPoint {
        ModbusPoint {
            table,
            address: 0,
            data_type,
            byte_order,
            word_order,
            bit: None,
        }
    }

    fn spec(
        m: &ModbusPoint,
        scale: f64,
        offset: f64,
        min: Option<f64>,
        max: Option<f64>,
    ) -> PointSpec {
        PointSpec {
            name: "p".into(),
            unit: None,
            kind: PointKind::Gauge,
            description: None,
            scale,
            offset,
            writable: true,
            min,
            max,
            source: PointSource::Modbus(m.clone()),
        }
    }

    fn holding(data_type: DataType) -> ModbusPoint {
        point(RegisterTable::Holding, data_type, Order::Big, Order::Big)
    }

    fn value_of(spec: &PointSpec, m: &ModbusPoint, regs: &[u16]) -> Value {
        let r = decode(spec, m, Raw::Registers(regs));
        assert_eq!(r.quality, Quality::Good, "{regs:04x?}");
        r.value.unwrap()
    }

    #[test]
    fn the_four_orders_of_a_float_are_abcd_cdab_badc_and_dcba() {
        // 1.5f32 is 0x3FC00000: bytes A=3F B=C0 C=00 D=00.
        let cases = [
            ((Order::Big, Order::Big), [0x3FC0, 0x0000]),
            ((Order::Big, Order::Little), [0x0000, 0x3FC0]),
            ((Order::Little, Order::Big), [0xC03F, 0x0000]),
            ((Order::Little, Order::Little), [0x0000, 0xC03F]),
        ];
        for ((byte_order, word_order), regs) in cases {
            let m = point(RegisterTable::Input, DataType::F32, byte_order, word_order);
            let s = spec(&m, 1.0, 0.0, None, None);
            assert_eq!(
                value_of(&s, &m, &regs),
                Value::Float(1.5),
                "{byte_order:?} {word_order:?}"
            );
        }
    }

    #[test]
    fn integers_decode_with_sign_and_word_order() {
        let cases: [(DataType, Order, &[u16], i64); 8] = [
            (DataType::U16, Order::Big, &[0xBEEF], 0xBEEF),
            (DataType::I16, Order::Big, &[0xFF85], -123),
            (DataType::U32, Order::Big, &[0x0001, 0x0002], 0x0001_0002),
            (DataType::U32, Order::Little, &[0x0002, 0x0001], 0x0001_0002),
            (DataType::I32, Order::Big, &[0xFFFF, 0xFFFE], -2),
            (
                DataType::U64,
                Order::Big,
                &[0x0102, 0x0304, 0x0506, 0x0708],
                0x0102_0304_0506_0708,
            ),
            (
                DataType::U64,
                Order::Little,
                &[0x0708, 0x0506, 0x0304, 0x0102],
                0x0102_0304_0506_0708,
            ),
            (
                DataType::I64,
                Order::Little,
                &[0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                -2,
            ),
        ];
        for (t, word_order, regs, expected) in cases {
            let m = point(RegisterTable::Holding, t, Order::Big, word_order);
            let s = spec(&m, 1.0, 0.0, None, None);
            assert_eq!(
                value_of(&s, &m, regs),
                Value::Int(expected),
                "{t:?} {word_order:?}"
            );
        }
    }

    #[test]
    fn a_f64_decodes_in_every_order() {
        let bits = 2.5f64.to_bits().to_be_bytes();
        for (byte_order, word_order) in ORDERS {
            let regs = from_big_endian(&bits, byte_order, word_order);
            let m = point(
                RegisterTable::Holding,
                DataType::F64,
                byte_order,
                word_order,
            );
            let s = spec(&m, 1.0, 0.0, None, None);
            assert_eq!(value_of(&s, &m, &regs), Value::Float(2.5));
        }
    }

    #[test]
    fn scale_or_offset_turns_an_integer_into_a_float() {
        let m = holding(DataType::I16);
        assert_eq!(
            value_of(&spec(&m, 0.1, 0.0, None, None), &m, &[231]),
            Value::Float(231.0 * 0.1)
        );
        assert_eq!(
            value_of(&spec(&m, 1.0, -40.0, None, None), &m, &[100]),
            Value::Float(60.0)
        );
        assert_eq!(
            value_of(&spec(&m, 1.0, 0.0, None, None), &m, &[100]),
            Value::Int(100)
        );
    }

    #[test]
    fn bit_fields_and_bit_tables_are_booleans() {
        let mut m = holding(DataType::U16);
        m.bit = Some(3);
        let s = spec(&m, 1.0, 0.0, None, None);
        assert_eq!(value_of(&s, &m, &[0b1000]), Value::Bool(true));
        assert_eq!(value_of(&s, &m, &[0b0111]), Value::Bool(false));
        m.bit = Some(15);
        assert_eq!(value_of(&s, &m, &[0x8000]), Value::Bool(true));
        let coil = point(RegisterTable::Coil, DataType::Bool, Order::Big, Order::Big);
        let r = decode(
            &spec(&coil, 1.0, 0.0, None, None),
            &coil,
            Raw::Bits(&[true]),
        );
        assert_eq!(r, Reading::good(Value::Bool(true)));
    }

    #[test]
    fn nan_and_infinity_from_a_device_are_bad_samples() {
        let m = holding(DataType::F32);
        let s = spec(&m, 1.0, 0.0, None, None);
        for f in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let regs = from_big_endian(&f.to_be_bytes(), Order::Big, Order::Big);
            let r = decode(&s, &m, Raw::Registers(&regs));
            assert_eq!(r, Reading::bad("not a number"));
        }
    }

    #[test]
    fn values_outside_the_range_are_kept_but_uncertain() {
        let m = holding(DataType::I16);
        let s = spec(&m, 0.1, 0.0, Some(-40.0), Some(60.0));
        let r = decode(&s, &m, Raw::Registers(&[700]));
        assert_eq!(r.value, Some(Value::Float(70.0)));
        let Quality::Uncertain(reason) = r.quality else {
            panic!("{r:?}")
        };
        assert!(reason.starts_with("out of range"), "{reason}");
        assert!(reason.contains("max 60"), "{reason}");
        let r = decode(&s, &m, Raw::Registers(&[(-500i16) as u16]));
        assert!(
            matches!(r.quality, Quality::Uncertain(ref why) if why.contains("below min -40")),
            "{r:?}"
        );
        assert_eq!(
            decode(&s, &m, Raw::Registers(&[600])).quality,
            Quality::Good
        );
    }

    #[test]
    fn a_short_reply_is_a_bad_sample_not_a_panic() {
        let m = holding(DataType::U32);
        let s = spec(&m, 1.0, 0.0, None, None);
        let r = decode(&s, &m, Raw::Registers(&[1]));
        assert_eq!(r, Reading::bad("expected 2 registers, got 1"));
        assert!(decode(&s, &m, Raw::Bits(&[true])).value.is_none());
        // A reply with no register at all, for a word and for a bit of one.
        let r = decode(&s, &m, Raw::Registers(&[]));
        assert_eq!(r, Reading::bad("expected 2 registers, got 0"));
        let mut flag = holding(DataType::U16);
        flag.bit = Some(3);
        let s = spec(&flag, 1.0, 0.0, None, None);
        assert!(decode(&s, &flag, Raw::Registers(&[])).value.is_none());
        assert!(decode(&s, &flag, Raw::Bits(&[])).value.is_none());
    }

    #[test]
    fn every_u16_and_i16_round_trips_in_every_byte_order() {
        for t in [DataType::U16, DataType::I16] {
            for (byte_order, word_order) in ORDERS {
                let m = point(RegisterTable::Holding, t, byte_order, word_order);
                let s = spec(&m, 1.0, 0.0, None, None);
                for raw in 0..=u16::MAX {
                    let v = value_of(&s, &m, &[raw]);
                    assert_eq!(
                        encode(&s, &m, &v),
                        Ok(Encoded::Registers(vec![raw])),
                        "{t:?} {raw}"
                    );
                }
            }
        }
    }

    /// A spread of 32- and 64-bit patterns: every bit alone, every byte value in every
    /// position, and a pseudo-random walk.
    fn patterns(bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for bit in 0..bytes * 8 {
            let mut b = vec![0u8; bytes];
            b[bit / 8] = 1 << (bit % 8);
            out.push(b);
        }
        for pos in 0..bytes {
            for v in 0..=255u8 {
                let mut b = vec![0x5Au8; bytes];
                b[pos] = v;
                out.push(b);
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x.to_be_bytes()[..bytes].to_vec());
        }
        out
    }

    #[test]
    fn wide_integers_round_trip_in_every_order() {
        for (t, n) in [
            (DataType::U32, 4),
            (DataType::I32, 4),
            (DataType::U64, 8),
            (DataType::I64, 8),
        ] {
            for (byte_order, word_order) in ORDERS {
                let m = point(RegisterTable::Holding, t, byte_order, word_order);
                let s = spec(&m, 1.0, 0.0, None, None);
                for bytes in patterns(n) {
                    let regs = from_big_endian(&bytes, byte_order, word_order);
                    let r = decode(&s, &m, Raw::Registers(&regs));
                    let v = r.value.clone().unwrap();
                    if t == DataType::U64 && bytes[0] >= 0x80 {
                        // Above i64::MAX the value is a float and cannot round-trip exactly.
                        assert!(matches!(r.quality, Quality::Uncertain(_)));
                        continue;
                    }
                    assert_eq!(
                        encode(&s, &m, &v),
                        Ok(Encoded::Registers(regs.clone())),
                        "{t:?} {bytes:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn finite_floats_round_trip_in_every_order() {
        for (t, n) in [(DataType::F32, 4), (DataType::F64, 8)] {
            for (byte_order, word_order) in ORDERS {
                let m = point(RegisterTable::Holding, t, byte_order, word_order);
                let s = spec(&m, 1.0, 0.0, None, None);
                for bytes in patterns(n) {
                    let regs = from_big_endian(&bytes, byte_order, word_order);
                    let r = decode(&s, &m, Raw::Registers(&regs));
                    let Some(v) = r.value else {
                        assert_eq!(r.quality, Quality::bad("not a number"));
                        continue;
                    };
                    // Registers, not values, are compared: NaN-free but -0.0 == 0.0.
                    assert_eq!(
                        encode(&s, &m, &v),
                        Ok(Encoded::Registers(regs.clone())),
                        "{t:?} {bytes:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn scaled_integers_round_to_the_nearest_raw_value() {
        let m = holding(DataType::U16);
        let s = spec(&m, 0.1, 0.0, None, None);
        assert_eq!(
            encode(&s, &m, &Value::Float(21.56)),
            Ok(Encoded::Registers(vec![216]))
        );
        assert_eq!(
            encode(&s, &m, &Value::Float(21.54)),
            Ok(Encoded::Registers(vec![215]))
        );
        assert_eq!(
            encode(&s, &m, &Value::Int(3)),
            Ok(Encoded::Registers(vec![30]))
        );
        let t = holding(DataType::I16);
        let s = spec(&t, 0.1, 0.0, None, None);
        assert_eq!(
            encode(&s, &t, &Value::Float(-1.5)),
            Ok(Encoded::Registers(vec![(-15i16) as u16]))
        );
        // Every scaled value a device could hold comes back to the same raw register.
        let s = spec(&t, 0.01, -40.0, None, None);
        for raw in i16::MIN..=i16::MAX {
            let v = value_of(&s, &t, &[raw as u16]);
            assert_eq!(
                encode(&s, &t, &v),
                Ok(Encoded::Registers(vec![raw as u16])),
                "{raw}"
            );
        }
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let out_of_range =
            |r: Result<Encoded, WriteError>| matches!(r, Err(WriteError::OutOfRange { .. }));
        let m = holding(DataType::U16);
        let s = spec(&m, 1.0, 0.0, None, None);
        assert!(out_of_range(encode(&s, &m, &Value::Int(65536))));
        assert!(out_of_range(encode(&s, &m, &Value::Int(-1))));
        assert!(out_of_range(encode(&s, &m, &Value::Float(f64::NAN))));
        assert!(out_of_range(encode(&s, &m, &Value::Text("1".into()))));
        assert!(out_of_range(encode(&s, &m, &Value::Bool(true))));
        assert_eq!(
            encode(&s, &m, &Value::Float(65535.4)),
            Ok(Encoded::Registers(vec![65535]))
        );
        assert!(out_of_range(encode(&s, &m, &Value::Float(65535.5))));
        let i = holding(DataType::I64);
        let s = spec(&i, 1.0, 0.0, None, None);
        assert!(encode(&s, &i, &Value::Int(i64::MIN)).is_ok());
        assert!(out_of_range(encode(&s, &i, &Value::Float(9.3e18))));
        let f = holding(DataType::F32);
        let s = spec(&f, 1.0, 0.0, None, None);
        assert!(out_of_range(encode(&s, &f, &Value::Float(1e39))));
    }

    #[test]
    fn writes_outside_min_and_max_are_refused_with_the_reason() {
        let m = holding(DataType::I16);
        let s = spec(&m, 0.1, 0.0, Some(-10.0), Some(10.0));
        let err = encode(&s, &m, &Value::Float(10.5)).unwrap_err();
        assert_eq!(
            err,
            WriteError::OutOfRange {
                point: "p".into(),
                value: "10.5".into(),
                reason: "above max 10".into()
            }
        );
        assert!(
            matches!(encode(&s, &m, &Value::Int(-11)), Err(WriteError::OutOfRange { reason, .. }) if reason == "below min -10")
        );
        assert!(encode(&s, &m, &Value::Int(10)).is_ok());
    }

    #[test]
    fn bits_and_coils_take_booleans() {
        let mut m = holding(DataType::U16);
        m.bit = Some(4);
        let s = spec(&m, 1.0, 0.0, None, None);
        assert_eq!(
            encode(&s, &m, &Value::Bool(true)),
            Ok(Encoded::Bit {
                bit: 4,
                value: true
            })
        );
        assert_eq!(
            encode(&s, &m, &Value::Int(0)),
            Ok(Encoded::Bit {
                bit: 4,
                value: false
            })
        );
        assert!(encode(&s, &m, &Value::Int(2)).is_err());
        let c = point(RegisterTable::Coil, DataType::Bool, Order::Big, Order::Big);
        assert_eq!(
            encode(&spec(&c, 1.0, 0.0, None, None), &c, &Value::Bool(true)),
            Ok(Encoded::Coil(true))
        );
        assert_eq!(with_bit(0b1010, 0, true), 0b1011);
        assert_eq!(with_bit(0b1010, 3, false), 0b0010);
        assert_eq!(with_bit(0xFFFF, 15, false), 0x7FFF);
    }
}
