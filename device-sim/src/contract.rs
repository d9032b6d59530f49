//! The door and parking MQTT contract of `docs/mqtt-topics.md` as Rust types: topics, ids,
//! and the JSON payloads that door controllers, plate cameras, barriers, lane displays and pay
//! terminals exchange with the edge node.
//!
//! Pure: building and decoding payloads only. It decides nothing (whether a card may pass is
//! the edge's business) and it does not check value ranges beyond what the types say; the
//! simulators build their payloads with these types and decode the edge's commands with
//! [`decode`], so what they send is what the page specifies.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Payloads larger than this are refused without parsing (the contract's limit).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The retained payload of a `.../status` topic while the device is connected.
pub const ONLINE: &str = "online";
/// The retained payload of a `.../status` topic, and the device's last will.
pub const OFFLINE: &str = "offline";

/// Plate reads below this confidence go to the edge's manual-confirmation queue (the default
/// threshold; the edge's is configurable). The camera simulator makes its low-confidence
/// reads fall below it.
pub const LOW_CONFIDENCE: f64 = 0.6;

/// Whether `id` may be a door or lane id in a topic: one or more of `[A-Za-z0-9_.-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The topics of the contract, for a door or lane id that [`is_valid_id`] accepts.
pub mod topic {
    pub fn door_read(door: &str) -> String {
        format!("door/{door}/read")
    }
    pub fn door_state(door: &str) -> String {
        format!("door/{door}/state")
    }
    pub fn door_status(door: &str) -> String {
        format!("door/{door}/status")
    }
    pub fn door_command(door: &str) -> String {
        format!("door/{door}/command")
    }
    pub fn lpr_plate(lane: &str) -> String {
        format!("lpr/{lane}/plate")
    }
    pub fn lpr_status(lane: &str) -> String {
        format!("lpr/{lane}/status")
    }
    pub fn barrier_command(lane: &str) -> String {
        format!("barrier/{lane}/command")
    }
    pub fn lane_display(lane: &str) -> String {
        format!("lane/{lane}/display")
    }
    pub fn lane_payment(lane: &str) -> String {
        format!("lane/{lane}/payment")
    }
}

/// What a reader read: the `type` of a door read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Card,
    Qr,
    Pin,
    Plate,
}

/// A side of a door (`reader`) or the way a lane's traffic goes (`direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// `door/{door}/read`: a credential presented at a door.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorRead {
    #[serde(rename = "type")]
    pub kind: CredentialKind,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<Direction>,
    /// Microseconds since the Unix epoch, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Unique per read, so that the edge can drop a QoS 1 duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The physical state of a door as its controller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorState {
    Opened,
    Closed,
    /// Opened without an unlock.
    Forced,
    /// Still open after the unlock time ran out.
    HeldOpen,
}

/// `door/{door}/state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorStateEvent {
    pub state: DoorState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// `door/{door}/command`, from the edge. `decision` is the id of the edge's stored decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum DoorCommand {
    Unlock { duration_ms: u64, decision: String },
    Deny { reason: String, decision: String },
}

impl DoorCommand {
    pub fn decision(&self) -> &str {
        match self {
            DoorCommand::Unlock { decision, .. } | DoorCommand::Deny { decision, .. } => decision,
        }
    }
}

/// `lpr/{lane}/plate`: a plate read by a lane's camera.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlateRead {
    pub plate: String,
    /// 0.0 to 1.0.
    pub confidence: f64,
    pub direction: Direction,
    /// A reference to the snapshot (a path or URL the camera serves), not the image itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `barrier/{lane}/command`, from the edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum BarrierCommand {
    Open { decision: String, session: String },
    Hold { reason: String, decision: String },
}

impl BarrierCommand {
    pub fn decision(&self) -> &str {
        match self {
            BarrierCommand::Open { decision, .. } | BarrierCommand::Hold { decision, .. } => {
                decision
            }
        }
    }
}

/// `lane/{lane}/display`, from the edge: what the lane's display shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneDisplay {
    pub text: String,
    /// A fee due, in fen (0.01 CNY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_fen: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentMethod {
    Cash,
    Qr,
    Card,
}

/// `lane/{lane}/payment`: a pay terminal at an exit lane took a payment for a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanePayment {
    pub session: String,
    pub amount_fen: u64,
    pub currency: String,
    pub method: PaymentMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Unique per payment, so that a QoS 1 duplicate is not counted twice.
    pub id: String,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is not the expected JSON: {0}")]
    Json(String),
}

/// Decodes a payload of the contract: at most [`MAX_PAYLOAD_BYTES`], UTF-8, JSON of the
/// expected shape. Fields the type does not know are ignored. Never panics.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    serde_json::from_str(text).map_err(|e| PayloadError::Json(e.to_string()))
}

/// Encodes a payload of the contract as JSON.
pub fn encode<T: Serialize>(payload: &T) -> String {
    // These types hold only strings, numbers and enums, which always serialize.
    serde_json::to_string(payload).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn as_json<T: Serialize>(payload: &T) -> Value {
        serde_json::from_str(&encode(payload)).unwrap()
    }

    #[test]
    fn ids_are_letters_digits_underscores_dots_and_dashes() {
        for good in ["b1-main", "lane_3", "gate.north", "A9"] {
            assert!(is_valid_id(good), "{good:?}");
        }
        for bad in ["", "a/b", "a+", "#", "lane 1", "门1", "a\u{0}"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn topics_are_the_ones_the_contract_lists() {
        assert_eq!(topic::door_read("d1"), "door/d1/read");
        assert_eq!(topic::door_state("d1"), "door/d1/state");
        assert_eq!(topic::door_status("d1"), "door/d1/status");
        assert_eq!(topic::door_command("d1"), "door/d1/command");
        assert_eq!(topic::lpr_plate("in1"), "lpr/in1/plate");
        assert_eq!(topic::lpr_status("in1"), "lpr/in1/status");
        assert_eq!(topic::barrier_command("in1"), "barrier/in1/command");
        assert_eq!(topic::lane_display("in1"), "lane/in1/display");
        assert_eq!(topic::lane_payment("in1"), "lane/in1/payment");
    }

    #[test]
    fn a_door_read_has_the_contract_fields_and_omits_absent_optional_ones() {
        let read = DoorRead {
            kind: CredentialKind::Card,
            value: "04A1B2C3".into(),
            reader: Some(Direction::In),
            ts: Some(1_795_860_000_000_000),
            id: Some("d1-1".into()),
        };
        assert_eq!(
            as_json(&read),
            json!({"type": "card", "value": "04A1B2C3", "reader": "in",
                   "ts": 1_795_860_000_000_000_i64, "id": "d1-1"})
        );
        let bare = DoorRead {
            kind: CredentialKind::Qr,
            value: "V1".into(),
            reader: None,
            ts: None,
            id: None,
        };
        assert_eq!(as_json(&bare), json!({"type": "qr", "value": "V1"}));
        assert_eq!(decode::<DoorRead>(encode(&read).as_bytes()), Ok(read));
    }

    #[test]
    fn door_states_are_snake_case() {
        let event = DoorStateEvent {
            state: DoorState::HeldOpen,
            ts: None,
        };
        assert_eq!(as_json(&event), json!({"state": "held_open"}));
        for (state, name) in [
            (DoorState::Opened, "opened"),
            (DoorState::Closed, "closed"),
            (DoorState::Forced, "forced"),
        ] {
            assert_eq!(as_json(&state), json!(name));
        }
    }

    #[test]
    fn the_contract_examples_of_edge_commands_decode() {
        assert_eq!(
            decode::<DoorCommand>(br#"{"command":"unlock","duration_ms":5000,"decision":"ev-1"}"#),
            Ok(DoorCommand::Unlock {
                duration_ms: 5000,
                decision: "ev-1".into()
            })
        );
        assert_eq!(
            decode::<DoorCommand>(
                br#"{"command":"deny","reason":"expired","decision":"ev-2","extra":1}"#
            ),
            Ok(DoorCommand::Deny {
                reason: "expired".into(),
                decision: "ev-2".into()
            })
        );
        assert_eq!(
            decode::<BarrierCommand>(br#"{"command":"open","decision":"ev-3","session":"s-9"}"#),
            Ok(BarrierCommand::Open {
                decision: "ev-3".into(),
                session: "s-9".into()
            })
        );
        assert_eq!(
            decode::<BarrierCommand>(br#"{"command":"hold","reason":"blocked","decision":"ev-4"}"#),
            Ok(BarrierCommand::Hold {
                reason: "blocked".into(),
                decision: "ev-4".into()
            })
        );
        assert_eq!(
            decode::<LaneDisplay>(
                r#"{"text":"湘A12345 ¥15.00","fee_fen":1500,"currency":"CNY"}"#.as_bytes()
            ),
            Ok(LaneDisplay {
                text: "湘A12345 ¥15.00".into(),
                fee_fen: Some(1500),
                currency: Some("CNY".into())
            })
        );
        assert_eq!(
            decode::<LaneDisplay>(br#"{"text":"Welcome"}"#),
            Ok(LaneDisplay {
                text: "Welcome".into(),
                fee_fen: None,
                currency: None
            })
        );
    }

    #[test]
    fn plate_reads_and_payments_have_the_contract_fields() {
        let read = PlateRead {
            plate: "湘A12345".into(),
            confidence: 0.93,
            direction: Direction::Out,
            image: Some("snap/out1/1.jpg".into()),
            ts: Some(5),
            id: Some("out1-1".into()),
        };
        assert_eq!(
            as_json(&read),
            json!({"plate": "湘A12345", "confidence": 0.93, "direction": "out",
                   "image": "snap/out1/1.jpg", "ts": 5, "id": "out1-1"})
        );
        let payment = LanePayment {
            session: "s-9".into(),
            amount_fen: 1500,
            currency: "CNY".into(),
            method: PaymentMethod::Qr,
            ts: None,
            id: "pay-1".into(),
        };
        assert_eq!(
            as_json(&payment),
            json!({"session": "s-9", "amount_fen": 1500, "currency": "CNY",
                   "method": "qr", "id": "pay-1"})
        );
    }

    #[test]
    fn mangled_commands_and_displays_decode_or_fail_without_panicking() {
        let valid: [&[u8]; 4] = [
            br#"{"command":"unlock","duration_ms":5000,"decision":"ev-1"}"#,
            br#"{"command":"open","decision":"ev-3","session":"s-9"}"#,
            r#"{"text":"湘A12345 ¥15.00","fee_fen":1500,"currency":"CNY"}"#.as_bytes(),
            br#"{"command":"hold","reason":"blocked","decision":"ev-4"}"#,
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20_000 {
            let mut bytes = valid[rng.usize(..valid.len())].to_vec();
            for _ in 0..rng.usize(1..4) {
                match rng.u8(0..3) {
                    0 if !bytes.is_empty() => {
                        let i = rng.usize(..bytes.len());
                        bytes[i] = rng.u8(..);
                    }
                    1 if !bytes.is_empty() => {
                        bytes.truncate(rng.usize(..bytes.len()));
                    }
                    _ => bytes.insert(rng.usize(..=bytes.len()), rng.u8(..)),
                }
            }
            let _ = decode::<DoorCommand>(&bytes);
            let _ = decode::<BarrierCommand>(&bytes);
            let _ = decode::<LaneDisplay>(&bytes);
        }
    }

    #[test]
    fn unknown_commands_wrong_shapes_and_bad_bytes_are_errors_not_panics() {
        assert!(matches!(
            decode::<DoorCommand>(br#"{"command":"explode","decision":"x"}"#),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            decode::<DoorCommand>(br#"{"command":"unlock","duration_ms":-1,"decision":"x"}"#),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            decode::<BarrierCommand>(br#"{"command":"open","decision":"x"}"#),
            Err(PayloadError::Json(_))
        ));
        assert_eq!(
            decode::<DoorCommand>(&[0xff, 0xfe]),
            Err(PayloadError::NotUtf8)
        );
        assert_eq!(
            decode::<LaneDisplay>(&vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            Err(PayloadError::TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
        for garbage in [&b""[..], b"{", b"null", b"[]", b"\"unlock\""] {
            assert!(decode::<DoorCommand>(garbage).is_err());
        }
    }
}
