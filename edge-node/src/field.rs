//! The MQTT contract of door controllers, plate cameras and pay terminals (written down in
//! `docs/mqtt-topics.md`): topic routing and payload parsing into typed messages.
//!
//! Pure: no IO, no clock (the receive time is passed in and used when a payload has no
//! time of its own). Bad payloads are errors that name the topic and what was wrong, and never
//! repeat a door read's value: it may be a card number or a PIN. For the same reason a
//! [`CredentialRead`]'s `Debug` leaves the value out; the park service digests it before it
//! decides (see `park`).

use device_drivers::Timestamp;
use device_drivers::profile::is_name;
use serde::Deserialize;

/// Payloads larger than this are refused.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The topic filters the edge subscribes to for doors and lanes.
pub const SUBSCRIPTIONS: [&str; 6] = [
    "door/+/read",
    "door/+/state",
    "door/+/status",
    "lpr/+/plate",
    "lpr/+/status",
    "lane/+/payment",
];

#[derive(Debug, Clone, PartialEq)]
pub enum FieldMessage {
    DoorRead {
        door: String,
        read: CredentialRead,
    },
    DoorState {
        door: String,
        state: DoorState,
        ts: Timestamp,
    },
    Status {
        device: FieldDevice,
        online: bool,
    },
    Plate {
        lane: String,
        plate: PlateRead,
    },
    Payment {
        lane: String,
        payment: Payment,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldDevice {
    Door(String),
    Camera(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Card,
    Qr,
    Pin,
    Plate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    In,
    Out,
}

/// A credential read at a door. `value` is what the reader sent, in clear: it is digested
/// before it is decided, and nothing stores or logs it.
#[derive(Clone, PartialEq)]
pub struct CredentialRead {
    pub kind: CredentialKind,
    pub value: String,
    pub reader: Option<Side>,
    pub ts: Timestamp,
    pub id: Option<String>,
}

impl std::fmt::Debug for CredentialRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRead")
            .field("kind", &self.kind)
            .field("value", &"<not shown>")
            .field("reader", &self.reader)
            .field("ts", &self.ts)
            .field("id", &self.id)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorState {
    Opened,
    Closed,
    Forced,
    HeldOpen,
}

impl DoorState {
    pub fn as_str(self) -> &'static str {
        match self {
            DoorState::Opened => "opened",
            DoorState::Closed => "closed",
            DoorState::Forced => "forced",
            DoorState::HeldOpen => "held_open",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlateRead {
    pub plate: String,
    pub confidence: f64,
    pub direction: Side,
    pub image: Option<String>,
    pub ts: Timestamp,
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayMethod {
    Cash,
    Qr,
    Card,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub session: String,
    pub amount_fen: i64,
    pub currency: String,
    pub method: PayMethod,
    pub ts: Timestamp,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid message on {topic}: {reason}")]
pub struct FieldError {
    pub topic: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadWire {
    #[serde(rename = "type")]
    kind: CredentialKind,
    /// Checked by hand: serde's message for a value of the wrong type repeats it, and a
    /// reader that sends a PIN as a number must not have it logged.
    value: serde_json::Value,
    reader: Option<Side>,
    ts: Option<Timestamp>,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateWire {
    state: DoorState,
    ts: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlateWire {
    plate: String,
    confidence: f64,
    direction: Side,
    image: Option<String>,
    ts: Option<Timestamp>,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentWire {
    session: String,
    amount_fen: i64,
    currency: String,
    method: PayMethod,
    ts: Option<Timestamp>,
    id: String,
}

/// Whether a topic belongs to the door and lane contract at all.
pub fn is_field_topic(topic: &str) -> bool {
    topic.starts_with("door/") || topic.starts_with("lpr/") || topic.starts_with("lane/")
}

/// Parses one publish received at `now`. `Ok(None)` for topics of the contract that the
/// edge itself publishes (commands, displays) and so ignores when they echo back.
pub fn parse(
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<Option<FieldMessage>, FieldError> {
    let err = |reason: String| FieldError {
        topic: topic.to_string(),
        reason,
    };
    let mut parts = topic.split('/');
    let (Some(kind), Some(id), Some(leaf), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err("topic is not of the form kind/id/leaf".into()));
    };
    if !is_name(id) {
        return Err(err(format!("{id:?} is not a valid id")));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(err(format!(
            "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit",
            payload.len()
        )));
    }
    let text = std::str::from_utf8(payload).map_err(|_| err("payload is not UTF-8".into()))?;
    let json = |t: &str| -> Result<serde_json::Value, FieldError> {
        serde_json::from_str(t).map_err(|e| err(format!("payload is not valid JSON: {e}")))
    };
    let id = id.to_string();
    // Free-text fields have limits: what a device sends is stored and shown.
    let bounded = |what: &str, v: &Option<String>, max: usize| -> Result<(), FieldError> {
        match v {
            Some(v) if v.is_empty() || v.chars().count() > max => {
                Err(err(format!("{what} must be 1 to {max} characters")))
            }
            _ => Ok(()),
        }
    };
    let msg = match (kind, leaf) {
        ("door", "read") => {
            let w: ReadWire =
                serde_json::from_value(json(text)?).map_err(|e| err(e.to_string()))?;
            let serde_json::Value::String(value) = w.value else {
                return Err(err("value must be a string".into()));
            };
            let value = value.trim().to_string();
            if value.is_empty() || value.len() > 256 {
                return Err(err("value must be 1 to 256 characters".into()));
            }
            bounded("id", &w.id, MAX_ID_CHARS)?;
            FieldMessage::DoorRead {
                door: id,
                read: CredentialRead {
                    kind: w.kind,
                    value,
                    reader: w.reader,
                    ts: w.ts.unwrap_or(now),
                    id: w.id,
                },
            }
        }
        ("door", "state") => {
            let w: StateWire =
                serde_json::from_value(json(text)?).map_err(|e| err(e.to_string()))?;
            FieldMessage::DoorState {
                door: id,
                state: w.state,
                ts: w.ts.unwrap_or(now),
            }
        }
        ("door" | "lpr", "status") => {
            let online = match text.trim().to_ascii_lowercase().as_str() {
                "online" => true,
                "offline" => false,
                other => {
                    return Err(err(format!(
                        "status {other:?} is neither online nor offline"
                    )));
                }
            };
            let device = if kind == "door" {
                FieldDevice::Door(id)
            } else {
                FieldDevice::Camera(id)
            };
            FieldMessage::Status { device, online }
        }
        ("lpr", "plate") => {
            let w: PlateWire =
                serde_json::from_value(json(text)?).map_err(|e| err(e.to_string()))?;
            if !(0.0..=1.0).contains(&w.confidence) {
                return Err(err(format!("confidence {} is outside 0..1", w.confidence)));
            }
            bounded("id", &w.id, MAX_ID_CHARS)?;
            bounded("image", &w.image, 1024)?;
            let plate = normalize_plate(&w.plate);
            if plate.is_empty() || plate.chars().count() > 12 {
                return Err(err(format!("{:?} is not a plate", w.plate)));
            }
            FieldMessage::Plate {
                lane: id,
                plate: PlateRead {
                    plate,
                    confidence: w.confidence,
                    direction: w.direction,
                    image: w.image,
                    ts: w.ts.unwrap_or(now),
                    id: w.id,
                },
            }
        }
        ("lane", "payment") => {
            let w: PaymentWire =
                serde_json::from_value(json(text)?).map_err(|e| err(e.to_string()))?;
            if w.amount_fen < 0 {
                return Err(err("amount_fen must not be negative".into()));
            }
            if w.amount_fen > MAX_PAYMENT_FEN {
                return Err(err(format!(
                    "amount_fen {} is over the {MAX_PAYMENT_FEN} fen a lane takes",
                    w.amount_fen
                )));
            }
            bounded("id", &Some(w.id.clone()), MAX_ID_CHARS)?;
            bounded("session", &Some(w.session.clone()), MAX_ID_CHARS)?;
            if w.currency.len() != 3 || !w.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err(format!(
                    "currency {:?} is not an ISO 4217 code such as CNY",
                    w.currency.chars().take(16).collect::<String>()
                )));
            }
            FieldMessage::Payment {
                lane: id,
                payment: Payment {
                    session: w.session,
                    amount_fen: w.amount_fen,
                    currency: w.currency,
                    method: w.method,
                    ts: w.ts.unwrap_or(now),
                    id: w.id,
                },
            }
        }
        ("door", "command") | ("barrier", "command") | ("lane", "display") => return Ok(None),
        _ => {
            return Err(err(format!(
                "no such topic in the door and lane contract ({kind}/…/{leaf})"
            )));
        }
    };
    Ok(Some(msg))
}

/// The longest read, payment or session id a device may send.
pub const MAX_ID_CHARS: usize = 128;
/// The largest single payment a lane takes: 100,000 yuan.
pub const MAX_PAYMENT_FEN: i64 = 10_000_000;

/// Plates compared as cameras report them vary in separators and case: keep letters,
/// digits and CJK characters, upper-cased.
pub fn normalize_plate(p: &str) -> String {
    p.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_read_parses_with_the_receive_time_when_it_has_none() {
        let m = parse(
            "door/d-1/read",
            br#"{"type":"card","value":" 04A1B2 ","reader":"in"}"#,
            42,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            m,
            FieldMessage::DoorRead {
                door: "d-1".into(),
                read: CredentialRead {
                    kind: CredentialKind::Card,
                    value: "04A1B2".into(),
                    reader: Some(Side::In),
                    ts: 42,
                    id: None
                }
            }
        );
    }

    #[test]
    fn plates_are_normalized_and_confidence_checked() {
        let m = parse(
            "lpr/in-1/plate",
            r#"{"plate":"湘a·12345","confidence":0.9,"direction":"in"}"#.as_bytes(),
            1,
        )
        .unwrap()
        .unwrap();
        let FieldMessage::Plate { plate, .. } = m else {
            panic!()
        };
        assert_eq!(plate.plate, "湘A12345");
        assert!(
            parse(
                "lpr/in-1/plate",
                br#"{"plate":"A1","confidence":1.5,"direction":"in"}"#,
                1
            )
            .is_err()
        );
    }

    #[test]
    fn bad_messages_name_topic_and_reason() {
        let cases: [(&str, &[u8], &str); 7] = [
            ("door/d/read", b"{", "not valid JSON"),
            (
                "door/d/read",
                br#"{"type":"retina","value":"x"}"#,
                "unknown variant",
            ),
            ("door/d/read", br#"{"type":"card","value":""}"#, "1 to 256"),
            (
                "door/d/read",
                br#"{"type":"card","value":"x","extra":1}"#,
                "unknown field",
            ),
            ("door/a b/read", b"{}", "not a valid id"),
            ("door/d/status", b"maybe", "neither online nor offline"),
            (
                "lane/l/payment",
                br#"{"session":"s","amount_fen":-5,"currency":"CNY","method":"cash","id":"p"}"#,
                "negative",
            ),
        ];
        for (topic, payload, want) in cases {
            let e = parse(topic, payload, 0).unwrap_err();
            assert_eq!(e.topic, topic);
            assert!(e.reason.contains(want), "{topic}: {e}");
        }
        assert!(parse("door/d/read", &vec![b' '; MAX_PAYLOAD + 1], 0).is_err());
    }

    #[test]
    fn a_read_value_is_never_repeated_in_an_error_or_debug_output() {
        for payload in [
            br#"{"type":"pin","value":739104}"#.as_slice(),
            br#"{"type":"pin","value":[739104]}"#,
            br#"{"type":"pin","value":{"pin":739104}}"#,
        ] {
            let e = parse("door/d/read", payload, 0).unwrap_err();
            assert!(e.reason.contains("must be a string"), "{e}");
            assert!(!e.to_string().contains("739104"), "{e}");
        }
        let m = parse(
            "door/d/read",
            br#"{"type":"pin","value":"739104","reader":"in"}"#,
            0,
        )
        .unwrap()
        .unwrap();
        let FieldMessage::DoorRead { read, .. } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(read.value, "739104");
        assert!(!format!("{m:?}").contains("739104"), "{m:?}");
    }

    #[test]
    fn commands_the_edge_publishes_are_ignored_when_they_echo_back() {
        assert_eq!(parse("door/d/command", b"{}", 0).unwrap(), None);
        assert_eq!(parse("barrier/l/command", b"{}", 0).unwrap(), None);
    }
}
