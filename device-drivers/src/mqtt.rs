//! MQTT device mapping: turns publishes on a building broker into samples, following the
//! devices' profiles (topic and JSON pointer per point), and tracks which devices are
//! online (last will, status topic, or last seen) and which points went stale.
//!
//! This module is sans-IO: the node owns the broker and the clock and passes each publish
//! and the current time in. A payload that cannot be read is returned as an error naming
//! the topic and the reason, for the node to count and log; it never panics.

use std::collections::HashMap;
use std::sync::Arc;

use crate::device::{Connection, DeviceSpec};
use crate::profile::{PointKind, PointSource};
use crate::sample::{PointKey, Quality, Sample, Timestamp, Value};

/// Payloads larger than this are refused without parsing.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid payload on {topic}: {reason}")]
pub struct PayloadError {
    pub topic: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct TopicPoint {
    key: PointKey,
    device: usize,
    pointer: String,
    scale: f64,
    offset: f64,
    min: Option<f64>,
    max: Option<f64>,
    kind: PointKind,
}

#[derive(Debug, Clone)]
struct DeviceState {
    id: String,
    online: Option<bool>,
    last_seen: Option<Timestamp>,
    stale_after: Option<i64>,
    online_payload: String,
    offline_payload: String,
}

/// What one publish meant.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttInput {
    /// Values for mapped points (some may carry bad quality, naming a missing field).
    Samples(Vec<Sample>),
    /// A device's status topic said it is online or offline.
    Status { device: String, online: bool },
    /// No configured device uses this topic.
    Unmapped,
}

/// A change of a device's online state found by [`MqttDevices::poll_timeouts`].
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub device: String,
    pub online: bool,
    pub reason: Arc<str>,
}

/// The MQTT devices of one building.
#[derive(Debug, Clone, Default)]
pub struct MqttDevices {
    by_topic: HashMap<String, Vec<TopicPoint>>,
    status_topics: HashMap<String, usize>,
    devices: Vec<DeviceState>,
    /// Per point: when it was last heard from, and whether it is already reported stale.
    last_value: HashMap<PointKey, (Timestamp, usize, bool)>,
}

impl MqttDevices {
    /// Builds the topic map from the MQTT devices among `devices`; others are skipped.
    pub fn new<'a>(devices: impl IntoIterator<Item = &'a DeviceSpec>) -> Self {
        let mut me = MqttDevices::default();
        for spec in devices {
            let Connection::Mqtt { topic_id } = &spec.connection else {
                continue;
            };
            let index = me.devices.len();
            let p = &spec.profile;
            me.devices.push(DeviceState {
                id: spec.id.clone(),
                online: None,
                last_seen: None,
                stale_after: p.mqtt.stale_after_s.map(|s| s as i64 * 1_000_000),
                online_payload: p.mqtt.online_payload.clone(),
                offline_payload: p.mqtt.offline_payload.clone(),
            });
            if let Some(t) = &p.mqtt.status_topic {
                me.status_topics
                    .insert(t.replace("{device}", topic_id), index);
            }
            for point in &p.points {
                let PointSource::Mqtt(m) = &point.source else {
                    continue;
                };
                me.by_topic
                    .entry(m.topic.replace("{device}", topic_id))
                    .or_default()
                    .push(TopicPoint {
                        key: PointKey::new(&spec.id, &point.name),
                        device: index,
                        pointer: m.pointer.clone(),
                        scale: point.scale,
                        offset: point.offset,
                        min: point.min,
                        max: point.max,
                        kind: point.kind,
                    });
            }
        }
        me
    }

    /// The topics to subscribe to (values and status).
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .by_topic
            .keys()
            .chain(self.status_topics.keys())
            .cloned()
            .collect();
        t.sort();
        t.dedup();
        t
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Handles one publish received at `now`.
    pub fn handle_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<MqttInput, PayloadError> {
        let err = |reason: String| PayloadError {
            topic: topic.to_string(),
            reason,
        };
        if let Some(&index) = self.status_topics.get(topic) {
            let device = &mut self.devices[index];
            let text = std::str::from_utf8(payload)
                .map_err(|_| err("status payload is not UTF-8".into()))?
                .trim();
            let online = if text.eq_ignore_ascii_case(&device.online_payload) {
                true
            } else if text.eq_ignore_ascii_case(&device.offline_payload) {
                false
            } else {
                return Err(err(format!(
                    "status payload {:?} is neither {:?} nor {:?}",
                    truncate(text, 40),
                    device.online_payload,
                    device.offline_payload
                )));
            };
            device.online = Some(online);
            if online {
                device.last_seen = Some(now);
            }
            return Ok(MqttInput::Status {
                device: device.id.clone(),
                online,
            });
        }
        let Some(points) = self.by_topic.get(topic) else {
            return Ok(MqttInput::Unmapped);
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(err(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit",
                payload.len()
            )));
        }
        let text = std::str::from_utf8(payload).map_err(|_| err("payload is not UTF-8".into()))?;
        let doc: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            // A bare word such as ON is a plain payload, usable by a point with an empty pointer.
            Err(e) if points.iter().all(|p| p.pointer.is_empty()) && !text.trim().is_empty() => {
                let t = text.trim();
                if t.starts_with(['{', '[', '"']) {
                    return Err(err(format!("payload is not valid JSON: {e}")));
                }
                serde_json::Value::String(t.to_string())
            }
            Err(e) => return Err(err(format!("payload is not valid JSON: {e}"))),
        };
        let mut out = Vec::with_capacity(points.len());
        let mut missing = 0;
        for p in points {
            let sample = match doc.pointer(&p.pointer) {
                None => {
                    missing += 1;
                    Sample::bad(
                        p.key.clone(),
                        now,
                        format!("field {} missing from the payload", p.pointer),
                    )
                }
                Some(v) => convert(p, v, now),
            };
            self.last_value
                .insert(p.key.clone(), (now, p.device, false));
            out.push(sample);
        }
        if missing == points.len() {
            return Err(err(format!(
                "none of the expected fields ({}) is in the payload",
                points
                    .iter()
                    .map(|p| p.pointer.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(&(_, index, _)) = out.first().and_then(|s| self.last_value.get(&s.point)) {
            self.devices[index].last_seen = Some(now);
            self.devices[index].online.get_or_insert(true);
        }
        Ok(MqttInput::Samples(out))
    }

    /// Points not heard from within their device's `stale_after_s` become stale samples
    /// (once each, until they report again), and devices with no status topic that have
    /// gone quiet that long are reported offline.
    pub fn poll_timeouts(&mut self, now: Timestamp) -> (Vec<Sample>, Vec<StatusChange>) {
        let mut stale = Vec::new();
        for (key, (seen, device, reported)) in self.last_value.iter_mut() {
            let Some(after) = self.devices[*device].stale_after else {
                continue;
            };
            if !*reported && now - *seen > after {
                *reported = true;
                stale.push(Sample::stale(key.clone(), now));
            }
        }
        let mut changes = Vec::new();
        let status_devices: Vec<usize> = self.status_topics.values().copied().collect();
        for (i, d) in self.devices.iter_mut().enumerate() {
            let (Some(after), Some(seen)) = (d.stale_after, d.last_seen) else {
                continue;
            };
            if status_devices.contains(&i) {
                continue;
            }
            if d.online == Some(true) && now - seen > after {
                d.online = Some(false);
                changes.push(StatusChange {
                    device: d.id.clone(),
                    online: false,
                    reason: "no message within stale_after_s".into(),
                });
            }
        }
        stale.sort_by(|a, b| a.point.cmp(&b.point));
        (stale, changes)
    }
}

fn convert(p: &TopicPoint, v: &serde_json::Value, now: Timestamp) -> Sample {
    let scaled = |x: f64| x * p.scale + p.offset;
    let exact_int = p.scale == 1.0 && p.offset == 0.0;
    let value = match v {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), exact_int) {
            (Some(i), true) => Value::Int(i),
            _ => match n.as_f64() {
                Some(x) => Value::Float(scaled(x)),
                None => return Sample::bad(p.key.clone(), now, "number out of range"),
            },
        },
        serde_json::Value::String(s) => {
            let t = s.trim();
            if let Ok(x) = t.parse::<f64>() {
                if !x.is_finite() {
                    return Sample::bad(p.key.clone(), now, "not a number");
                }
                Value::Float(scaled(x))
            } else if t.eq_ignore_ascii_case("on") || t.eq_ignore_ascii_case("true") {
                Value::Bool(true)
            } else if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("false") {
                Value::Bool(false)
            } else if p.kind == PointKind::State {
                Value::Text(truncate(t, 256).into())
            } else {
                return Sample::bad(
                    p.key.clone(),
                    now,
                    format!("{:?} is not a number", truncate(t, 40)),
                );
            }
        }
        serde_json::Value::Null => return Sample::bad(p.key.clone(), now, "value is null"),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            return Sample::bad(
                p.key.clone(),
                now,
                format!("field {} is not a scalar", p.pointer),
            );
        }
    };
    let quality = match value.as_f64() {
        Some(x) if p.min.is_some_and(|m| x < m) || p.max.is_some_and(|m| x > m) => {
            Quality::Uncertain(format!("{x} outside the plausible range").into())
        }
        _ => Quality::Good,
    };
    Sample {
        point: p.key.clone(),
        ts: now,
        value: Some(value),
        quality,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceConfig;
    use crate::profile::Profile;
    use std::collections::BTreeMap;
    use std::path::Path;

    const SENSOR: &str = r#"
id = "env"
protocol = "mqtt"
manufacturer = "A"
model = "B"
source = "test"
[mqtt]
status_topic = "tele/{device}/LWT"
online_payload = "Online"
offline_payload = "Offline"
stale_after_s = 60
[[point]]
name = "temperature"
topic = "tele/{device}/SENSOR"
pointer = "/AM2301/Temperature"
min = -40
max = 80
[[point]]
name = "humidity"
topic = "tele/{device}/SENSOR"
pointer = "/AM2301/Humidity"
"#;

    fn devices() -> MqttDevices {
        let profile = Arc::new(Profile::parse(Path::new("env.toml"), SENSOR).unwrap());
        let profiles = BTreeMap::from([("env".to_string(), profile)]);
        let config: DeviceConfig =
            toml::from_str("id = \"room1\"\nprofile = \"env\"\n[mqtt]\ntopic_id = \"tas1\"\n")
                .unwrap();
        let spec = config
            .build(Path::new("site.toml"), "", "device[0]", &profiles)
            .unwrap();
        MqttDevices::new([&spec])
    }

    #[test]
    fn a_tasmota_payload_becomes_samples() {
        let mut d = devices();
        assert_eq!(
            d.topics(),
            vec!["tele/tas1/LWT".to_string(), "tele/tas1/SENSOR".to_string()]
        );
        let got = d
            .handle_publish(
                "tele/tas1/SENSOR",
                br#"{"AM2301":{"Temperature":22.5,"Humidity":41}}"#,
                10,
            )
            .unwrap();
        let MqttInput::Samples(s) = got else {
            panic!("{got:?}")
        };
        assert_eq!(s[0].point.as_str(), "room1/temperature");
        assert_eq!(s[0].value, Some(Value::Float(22.5)));
        assert_eq!(s[1].value, Some(Value::Int(41)));
        assert!(s.iter().all(|s| s.quality == Quality::Good));
    }

    #[test]
    fn malformed_payloads_are_errors_that_name_the_topic() {
        let mut d = devices();
        let e = d
            .handle_publish("tele/tas1/SENSOR", b"{not json", 1)
            .unwrap_err();
        assert_eq!(e.topic, "tele/tas1/SENSOR");
        assert!(e.reason.contains("not valid JSON"), "{e}");
        let e = d
            .handle_publish("tele/tas1/SENSOR", &[0xff, 0xfe], 1)
            .unwrap_err();
        assert!(e.reason.contains("UTF-8"));
        let e = d
            .handle_publish("tele/tas1/SENSOR", br#"{"other":1}"#, 1)
            .unwrap_err();
        assert!(e.reason.contains("none of the expected fields"));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(d.handle_publish("tele/tas1/SENSOR", &big, 1).is_err());
    }

    #[test]
    fn a_missing_or_odd_field_is_a_bad_sample_not_a_zero() {
        let mut d = devices();
        let MqttInput::Samples(s) = d
            .handle_publish(
                "tele/tas1/SENSOR",
                br#"{"AM2301":{"Temperature":"warm"}}"#,
                1,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(s[0].value, None);
        assert!(matches!(s[0].quality, Quality::Bad(_)));
        assert!(s[1].quality.reason().unwrap().contains("missing"));
    }

    #[test]
    fn implausible_values_are_uncertain() {
        let mut d = devices();
        let MqttInput::Samples(s) = d
            .handle_publish(
                "tele/tas1/SENSOR",
                br#"{"AM2301":{"Temperature":150,"Humidity":1}}"#,
                1,
            )
            .unwrap()
        else {
            panic!()
        };
        assert!(matches!(s[0].quality, Quality::Uncertain(_)));
    }

    #[test]
    fn last_will_marks_the_device_offline_and_silence_turns_points_stale() {
        let mut d = devices();
        assert_eq!(
            d.handle_publish("tele/tas1/LWT", b"Offline", 5).unwrap(),
            MqttInput::Status {
                device: "room1".into(),
                online: false
            }
        );
        assert!(d.handle_publish("tele/tas1/LWT", b"maybe", 5).is_err());
        d.handle_publish(
            "tele/tas1/SENSOR",
            br#"{"AM2301":{"Temperature":20,"Humidity":40}}"#,
            0,
        )
        .unwrap();
        let (stale, _) = d.poll_timeouts(30_000_000);
        assert!(stale.is_empty());
        let (stale, _) = d.poll_timeouts(61_000_000);
        assert_eq!(stale.len(), 2);
        assert!(
            stale
                .iter()
                .all(|s| s.quality == Quality::Stale && s.value.is_none())
        );
        let (again, _) = d.poll_timeouts(120_000_000);
        assert!(again.is_empty(), "stale is reported once");
    }

    #[test]
    fn unknown_topics_are_unmapped() {
        let mut d = devices();
        assert_eq!(
            d.handle_publish("other/topic", b"1", 0).unwrap(),
            MqttInput::Unmapped
        );
    }
}
