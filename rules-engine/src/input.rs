//! What the engine is fed: samples of points and access events, borrowed from the caller so
//! that handing one over costs no allocation. The crate defines its own input types and does
//! not depend on `device-drivers`; the edge converts at the boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC: the project's one representation of an instant.
pub type Timestamp = i64;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one minute.
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;

/// How far a sample's value can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    /// A value is present but doubtful. Rules still use it.
    Uncertain,
    /// No value could be had (timeout, exception, connection refused).
    Bad,
    /// The point has not reported within its expected interval.
    Stale,
}

impl Quality {
    pub const ALL: [Quality; 4] = [
        Quality::Good,
        Quality::Uncertain,
        Quality::Bad,
        Quality::Stale,
    ];

    /// The lowercase name used in rule files: `good`, `uncertain`, `bad`, `stale`.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }

    /// Whether a value with this quality is used by value conditions (threshold, rate,
    /// equals, consumption, and as fresh data for stale checks).
    pub fn is_usable(self) -> bool {
        matches!(self, Quality::Good | Quality::Uncertain)
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The value of a sample, borrowed. Integers are passed as numbers: `f64` holds every
/// counter value below 2^53 exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleValue<'a> {
    Number(f64),
    Bool(bool),
    Text(&'a str),
}

impl SampleValue<'_> {
    /// The value as a number: booleans are 0 and 1, text and NaN are `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            SampleValue::Number(x) if !x.is_nan() => Some(x),
            SampleValue::Number(_) => None,
            SampleValue::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            SampleValue::Text(_) => None,
        }
    }
}

/// One value of one point at one time, as the rules see it. A failed read is a sample with
/// bad quality and no value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleIn<'a> {
    /// The point's key within its building: `device/point`.
    pub point: &'a str,
    pub ts: Timestamp,
    pub value: Option<SampleValue<'a>>,
    pub quality: Quality,
}

impl<'a> SampleIn<'a> {
    /// A good numeric sample.
    pub fn number(point: &'a str, ts: Timestamp, value: f64) -> Self {
        SampleIn {
            point,
            ts,
            value: Some(SampleValue::Number(value)),
            quality: Quality::Good,
        }
    }

    /// A good boolean sample.
    pub fn bool(point: &'a str, ts: Timestamp, value: bool) -> Self {
        SampleIn {
            point,
            ts,
            value: Some(SampleValue::Bool(value)),
            quality: Quality::Good,
        }
    }

    /// A good text sample.
    pub fn text(point: &'a str, ts: Timestamp, value: &'a str) -> Self {
        SampleIn {
            point,
            ts,
            value: Some(SampleValue::Text(value)),
            quality: Quality::Good,
        }
    }

    /// A sample without a value: a failed read (`Bad`) or a missed report (`Stale`).
    pub fn without_value(point: &'a str, ts: Timestamp, quality: Quality) -> Self {
        SampleIn {
            point,
            ts,
            value: None,
            quality,
        }
    }

    /// The value when the quality allows rules to use it.
    pub(crate) fn usable_value(&self) -> Option<SampleValue<'a>> {
        if self.quality.is_usable() {
            self.value
        } else {
            None
        }
    }
}

/// An access event from a door controller or reader: `access.denied`, `door.forced`,
/// `door.opened`, `door.closed`, `door.held_open`, or any other kind a rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventIn<'a> {
    pub kind: &'a str,
    /// The door (or reader, gate) the event is about.
    pub source: &'a str,
    pub ts: Timestamp,
}

impl<'a> EventIn<'a> {
    pub fn new(kind: &'a str, source: &'a str, ts: Timestamp) -> Self {
        EventIn { kind, source, ts }
    }
}

/// An owned value: what `equals` compares against and what a point write sends. In a rule
/// file it is a TOML boolean, number (integer or float) or string.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Value {
    /// Whether a sample's value is this value. Types must agree: `true` is not `1`.
    pub(crate) fn matches(&self, sample: &SampleValue<'_>) -> bool {
        match (self, sample) {
            (Value::Bool(a), SampleValue::Bool(b)) => a == b,
            (Value::Number(a), SampleValue::Number(b)) => a == b,
            (Value::Text(a), SampleValue::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, a number or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_owned()))
            }
        }
        de.deserialize_any(Visitor)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(x) => write!(f, "{x}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_count_as_zero_and_one_and_nan_is_no_number() {
        assert_eq!(SampleValue::Bool(true).as_f64(), Some(1.0));
        assert_eq!(SampleValue::Bool(false).as_f64(), Some(0.0));
        assert_eq!(SampleValue::Number(f64::NAN).as_f64(), None);
        assert_eq!(SampleValue::Text("on").as_f64(), None);
    }

    #[test]
    fn bad_and_stale_samples_carry_no_usable_value() {
        let mut s = SampleIn::number("m1/v", 0, 3.0);
        assert!(s.usable_value().is_some());
        s.quality = Quality::Uncertain;
        assert!(s.usable_value().is_some());
        s.quality = Quality::Bad;
        assert!(s.usable_value().is_none());
        s.quality = Quality::Stale;
        assert!(s.usable_value().is_none());
    }

    #[test]
    fn values_match_only_their_own_type() {
        assert!(Value::Bool(true).matches(&SampleValue::Bool(true)));
        assert!(!Value::Number(1.0).matches(&SampleValue::Bool(true)));
        assert!(Value::Text("run".into()).matches(&SampleValue::Text("run")));
        assert!(!Value::Text("run".into()).matches(&SampleValue::Text("Run")));
        assert!(Value::Number(3.0).matches(&SampleValue::Number(3.0)));
    }
}
