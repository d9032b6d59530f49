//! Samples: what a running device produces. A sample is a value of a point at a time, with
//! its quality. It is plain data; nothing here reads a clock except [`now_micros`].

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Time on the wire and in storage: integer microseconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// The current wall-clock time as a [`Timestamp`].
pub fn now_micros() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Widens a 32-bit float read from a device to the `f64` with the same shortest decimal
/// form: `12.96f32` becomes `12.96`, not `12.960000038146973`. Devices mean the decimal
/// they display; the bits beyond f32 precision are noise from the conversion.
pub fn widen_f32(f: f32) -> f64 {
    if f.is_finite() {
        f.to_string().parse().unwrap_or(f as f64)
    } else {
        f as f64
    }
}

/// A point's stable key within its building: `device/point`. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointKey(Arc<str>);

impl PointKey {
    pub fn new(device: &str, point: &str) -> Self {
        PointKey(format!("{device}/{point}").into())
    }

    /// Parses `device/point`; `None` when either half is empty or missing.
    pub fn parse(key: &str) -> Option<Self> {
        let (device, point) = key.split_once('/')?;
        if device.is_empty() || point.is_empty() || point.contains('/') {
            return None;
        }
        Some(PointKey(key.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn device(&self) -> &str {
        self.0.split_once('/').map(|(d, _)| d).unwrap_or(&self.0)
    }

    pub fn point(&self) -> &str {
        self.0.split_once('/').map(|(_, p)| p).unwrap_or("")
    }
}

impl fmt::Display for PointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point's value. Integers stay integers so that energy counters keep every digit.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Arc<str>),
}

impl Value {
    /// The value as a number, for rollups and rules: booleans are 0 and 1, text is `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(t) => serde_json::Value::String(t.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// How far a value can be trusted. Quality travels with every value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// A value is present but doubtful (for example outside the profile's plausible range).
    Uncertain(Arc<str>),
    /// No value could be had; the reason says why (timeout, exception, connection refused).
    Bad(Arc<str>),
    /// The point has not reported within its expected interval.
    Stale,
}

impl Quality {
    pub fn bad(reason: impl Into<Arc<str>>) -> Self {
        Quality::Bad(reason.into())
    }

    /// A small stable code for storage: 0 good, 1 uncertain, 2 bad, 3 stale.
    pub fn code(&self) -> u8 {
        match self {
            Quality::Good => 0,
            Quality::Uncertain(_) => 1,
            Quality::Bad(_) => 2,
            Quality::Stale => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain(_) => "uncertain",
            Quality::Bad(_) => "bad",
            Quality::Stale => "stale",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Quality::Uncertain(r) | Quality::Bad(r) => Some(r),
            Quality::Good | Quality::Stale => None,
        }
    }

    /// The inverse of [`Quality::code`] with [`Quality::reason`].
    pub fn from_code(code: u8, reason: Option<&str>) -> Self {
        let reason = || -> Arc<str> { reason.unwrap_or("unknown").into() };
        match code {
            0 => Quality::Good,
            1 => Quality::Uncertain(reason()),
            3 => Quality::Stale,
            _ => Quality::Bad(reason()),
        }
    }
}

/// One value of one point at one time. A failed read is a sample with bad quality and no
/// value, never a zero.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub point: PointKey,
    pub ts: Timestamp,
    pub value: Option<Value>,
    pub quality: Quality,
}

impl Sample {
    pub fn good(point: PointKey, ts: Timestamp, value: Value) -> Self {
        Sample {
            point,
            ts,
            value: Some(value),
            quality: Quality::Good,
        }
    }

    pub fn bad(point: PointKey, ts: Timestamp, reason: impl Into<Arc<str>>) -> Self {
        Sample {
            point,
            ts,
            value: None,
            quality: Quality::bad(reason),
        }
    }

    pub fn stale(point: PointKey, ts: Timestamp) -> Self {
        Sample {
            point,
            ts,
            value: None,
            quality: Quality::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_32_bit_float_widens_to_the_decimal_the_device_meant() {
        assert_eq!(widen_f32(12.96), 12.96);
        assert_eq!(widen_f32(-0.1), -0.1);
        assert_eq!(widen_f32(230.0), 230.0);
        assert_eq!(
            widen_f32(f32::MAX),
            f32::MAX.to_string().parse::<f64>().unwrap()
        );
        assert!(widen_f32(f32::NAN).is_nan());
        assert_eq!(widen_f32(f32::INFINITY), f64::INFINITY);
    }

    use super::*;

    #[test]
    fn point_keys_need_a_device_and_a_point() {
        assert_eq!(PointKey::parse("m1/voltage").unwrap().device(), "m1");
        assert_eq!(PointKey::parse("m1/voltage").unwrap().point(), "voltage");
        assert!(PointKey::parse("m1").is_none());
        assert!(PointKey::parse("/v").is_none());
        assert!(PointKey::parse("a/b/c").is_none());
    }

    #[test]
    fn quality_codes_round_trip() {
        for q in [
            Quality::Good,
            Quality::Uncertain("range".into()),
            Quality::bad("timeout"),
            Quality::Stale,
        ] {
            assert_eq!(Quality::from_code(q.code(), q.reason()), q);
        }
    }
}
