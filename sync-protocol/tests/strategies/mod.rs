//! Proptest strategies for every message of the protocol, shared by the codec tests and
//! the hostile-peer tests.

use proptest::prelude::*;
use sync_protocol::codec::StreamId;
use sync_protocol::{
    AckEntry, Close, CloseCode, Command, CommandResult, ConfigPush, Cursors, DocumentMessage,
    EdgeIdentity, EventRecord, Health, Hello, HelloAck, Message, Quality, RawBatch, RawSample,
    RawSeries, RollupBatch, RollupRow, UploadStream, Value,
};

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9/_-]{0,12}", ".{0,6}"]
}

pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..48)
}

pub fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000, 0u32..4).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
    ]
}

pub fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        float().prop_map(|v| Some(Value::Float(v))),
        any::<i64>().prop_map(|v| Some(Value::Int(v))),
        any::<bool>().prop_map(|v| Some(Value::Bool(v))),
        text().prop_map(|v| Some(Value::Text(v))),
    ]
}

pub fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        4 => Just(Quality::Good),
        1 => text().prop_map(Quality::Uncertain),
        1 => text().prop_map(Quality::Bad),
        1 => Just(Quality::Stale),
    ]
}

pub fn series() -> impl Strategy<Value = RawSeries> {
    let ts = prop_oneof![
        any::<i64>(),
        1_700_000_000_000_000i64..1_700_000_100_000_000
    ];
    (
        text(),
        proptest::collection::vec((ts, value(), quality()), 0..12),
    )
        .prop_map(|(point, samples)| RawSeries {
            point,
            samples: samples
                .into_iter()
                .map(|(ts, value, quality)| RawSample { ts, value, quality })
                .collect(),
        })
}

pub fn raw_batch() -> impl Strategy<Value = RawBatch> {
    proptest::collection::vec(series(), 0..5).prop_map(|series| RawBatch { series })
}

pub fn rollup_batch() -> impl Strategy<Value = RollupBatch> {
    let row = (
        "[a-c]/[x-z]",
        prop_oneof![Just(60u32), Just(900), Just(3600), any::<u32>()],
        any::<i64>(),
        any::<u64>(),
        any::<u64>(),
        (float(), float(), float(), float(), float()),
        any::<i64>(),
    )
        .prop_map(
            |(point, period_s, bucket, count, bad, (min, max, sum, last, delta), last_ts)| {
                RollupRow {
                    point,
                    period_s,
                    bucket,
                    count,
                    bad,
                    min,
                    max,
                    sum,
                    last,
                    last_ts,
                    delta,
                }
            },
        );
    proptest::collection::vec(row, 0..8).prop_map(|rows| RollupBatch { rows })
}

pub fn cursors() -> impl Strategy<Value = Cursors> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(events, rollups, raw)| Cursors {
        events,
        rollups,
        raw,
    })
}

pub fn upload_stream() -> impl Strategy<Value = UploadStream> {
    prop_oneof![
        Just(UploadStream::Events),
        Just(UploadStream::Rollups),
        Just(UploadStream::Raw)
    ]
}

pub fn ack_entries() -> impl Strategy<Value = Vec<AckEntry>> {
    proptest::collection::vec(any::<(u64, u64)>(), 5).prop_flat_map(|pairs| {
        proptest::sample::subsequence(StreamId::ALL.to_vec(), 0..=5).prop_map(move |streams| {
            streams
                .into_iter()
                .zip(&pairs)
                .map(|(stream, &(a, b))| AckEntry {
                    stream,
                    received: a.max(b),
                    durable: a.min(b),
                })
                .collect()
        })
    })
}

/// A message with the sequence number its kind requires.
pub fn message() -> impl Strategy<Value = (u64, Message)> {
    let seq = 1u64..=u64::MAX;
    let msg = prop_oneof![
        (any::<u8>(), text(), text(), text(), cursors()).prop_map(|(v, e, p, b, cursors)| {
            Message::Hello(Hello {
                protocol_version: v,
                identity: EdgeIdentity {
                    edge_id: e,
                    park: p,
                    building: b,
                },
                cursors,
            })
        }),
        (cursors(), 1u32.., any::<u32>()).prop_map(|(durable, window_frames, window_bytes)| {
            Message::HelloAck(HelloAck {
                durable,
                window_frames,
                window_bytes,
            })
        }),
        Just(Message::Heartbeat),
        ack_entries().prop_map(Message::Ack),
        (0u8..5, text()).prop_map(|(c, reason)| Message::Close(Close {
            code: [
                CloseCode::Normal,
                CloseCode::ProtocolViolation,
                CloseCode::UnsupportedVersion,
                CloseCode::Refused,
                CloseCode::Replaced
            ][c as usize],
            reason
        })),
        bytes().prop_map(|body| Message::Health(Health { body })),
        (any::<u64>(), bytes())
            .prop_map(|(version, body)| Message::ConfigPush(ConfigPush { version, body })),
        (any::<u64>(), bytes()).prop_map(|(id, body)| Message::Command(Command { id, body })),
        (any::<u64>(), any::<bool>(), bytes())
            .prop_map(|(id, ok, body)| { Message::CommandResult(CommandResult { id, ok, body }) }),
        (any::<[u8; 16]>(), bytes())
            .prop_map(|(id, body)| Message::Event(EventRecord { id, body })),
        rollup_batch().prop_map(Message::Rollups),
        raw_batch().prop_map(Message::Raw),
        (upload_stream(), any::<u64>())
            .prop_map(|(stream, through)| Message::Gap { stream, through }),
        (text(), bytes())
            .prop_map(|(doc_id, message)| Message::Document(DocumentMessage { doc_id, message })),
    ];
    (seq, msg).prop_map(|(seq, m)| {
        let seq = match &m {
            _ if !m.kind().is_sequenced() => 0,
            Message::Gap { through, .. } => seq.min(*through).max(1),
            _ => seq,
        };
        let m = match m {
            Message::Gap { stream, through } => Message::Gap {
                stream,
                through: through.max(seq),
            },
            m => m,
        };
        (seq, m)
    })
}
