//! Codec properties: every message round-trips, and no input, random, truncated or
//! mutated, makes a decoder panic. Committed crasher-style inputs are replayed and must
//! give the error they gave when they were found.

mod strategies;

use proptest::prelude::*;
use strategies::{float, message};
use sync_protocol::codec::{DecodeError, Frame, Kind, StreamId, VarintProblem, peek_frame_len};
use sync_protocol::{Message, Quality, RawBatch, RawSample, RawSeries, RollupBatch, Value};

/// Equality that tells NaN payloads and signed zeros apart: the encodings are equal and
/// so are the debug renderings (which show every field).
fn assert_same(a: &Message, b: &Message) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(a.encode(1).ok(), b.encode(1).ok());
}

fn decode_never_panics(bytes: &[u8]) {
    if let Ok((seq, m)) = Message::decode(bytes) {
        // Whatever decodes must encode to something that decodes to the same message.
        let again = m.encode(seq).expect("a decoded message fits in a frame");
        let (seq2, m2) = Message::decode(&again).expect("re-encoded message decodes");
        assert_eq!(seq, seq2);
        assert_same(&m, &m2);
    }
    let _ = peek_frame_len(bytes);
    let _ = RawBatch::decode(bytes);
    let _ = RollupBatch::decode(bytes);
}

const KINDS: [Kind; 14] = [
    Kind::Hello,
    Kind::HelloAck,
    Kind::Heartbeat,
    Kind::Ack,
    Kind::Close,
    Kind::Health,
    Kind::ConfigPush,
    Kind::Command,
    Kind::CommandResult,
    Kind::Event,
    Kind::Rollups,
    Kind::Raw,
    Kind::Gap,
    Kind::Document,
];

proptest! {
    #[test]
    fn every_message_round_trips_through_its_frame((seq, m) in message()) {
        let bytes = m.encode(seq).unwrap();
        prop_assert_eq!(peek_frame_len(&bytes).unwrap(), Some(bytes.len()));
        let (seq2, m2) = Message::decode(&bytes).unwrap();
        prop_assert_eq!(seq, seq2);
        assert_same(&m, &m2);
        if !format!("{m:?}").contains("NaN") {
            prop_assert_eq!(m, m2);
        }
    }

    #[test]
    fn float_columns_keep_every_bit(values in proptest::collection::vec(float(), 1..64)) {
        let batch = RawBatch {
            series: vec![RawSeries {
                point: "p/v".into(),
                samples: values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| RawSample {
                        ts: i as i64 * 1_000_000,
                        value: Some(Value::Float(v)),
                        quality: Quality::Good,
                    })
                    .collect(),
            }],
        };
        let back = RawBatch::decode(&batch.encode()).unwrap();
        let bits: Vec<u64> = back.series[0]
            .samples
            .iter()
            .map(|s| match s.value {
                Some(Value::Float(v)) => v.to_bits(),
                _ => panic!("not a float"),
            })
            .collect();
        prop_assert_eq!(bits, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn random_bytes_decode_to_a_message_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_never_panics(&bytes);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_decode_to_a_message_or_an_error(
        kind in proptest::sample::select(KINDS.to_vec()),
        seq in 0u64..4,
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let stream = StreamId::ALL.into_iter().find(|s| kind.allowed_on(*s)).unwrap();
        let seq = if kind.is_sequenced() { seq.max(1) } else { 0 };
        let bytes = Frame { stream, kind, seq, payload }.encode().unwrap();
        decode_never_panics(&bytes);
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_an_error((seq, m) in message()) {
        let bytes = m.encode(seq).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
            prop_assert_eq!(peek_frame_len(&bytes[..cut]).ok().flatten().filter(|&n| n <= cut), None);
        }
    }

    #[test]
    fn mutated_frames_decode_to_a_message_or_an_error(
        (seq, m) in message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = m.encode(seq).unwrap();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        decode_never_panics(&bytes);
    }
}

fn crasher(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/crashers/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn committed_crashers_give_their_recorded_errors() {
    let cases: [(&str, DecodeError); 6] = [
        (
            "varint-overflow-in-sequence.bin",
            DecodeError::BadVarint {
                what: "frame sequence number",
                problem: VarintProblem::Overflow,
            },
        ),
        (
            "frame-length-beyond-limit.bin",
            DecodeError::TooLarge {
                len: (1u64 << 63) + 14,
                limit: 4 * 1024 * 1024,
            },
        ),
        (
            "raw-series-count-beyond-input.bin",
            DecodeError::Truncated {
                what: "raw series count",
            },
        ),
        (
            "xor-window-beyond-64-bits.bin",
            DecodeError::Invalid {
                what: "raw float column",
                reason: "leading zeros and length exceed 64 bits",
            },
        ),
        (
            "meta-run-longer-than-series.bin",
            DecodeError::Invalid {
                what: "raw meta run length",
                reason: "runs must be non-empty and add up to the sample count",
            },
        ),
        (
            "ack-count-overlong.bin",
            DecodeError::BadVarint {
                what: "ack entry count",
                problem: VarintProblem::Overlong,
            },
        ),
    ];
    for (name, expected) in cases {
        assert_eq!(Message::decode(&crasher(name)), Err(expected), "{name}");
    }
}

#[test]
fn every_committed_crasher_is_refused_without_a_panic() {
    let dir = format!("{}/tests/crashers", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(Message::decode(&bytes).is_err());
        decode_never_panics(&bytes);
        n += 1;
    }
    assert!(n >= 6);
}

#[test]
fn error_messages_are_lowercase_and_name_the_problem() {
    let e = Message::decode(&crasher("xor-window-beyond-64-bits.bin")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid raw float column: leading zeros and length exceed 64 bits"
    );
    let e = Message::decode(&[2, 0, 3, 0, 0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported protocol version 2, this side speaks 1"
    );
}
