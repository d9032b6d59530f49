//! A peer that sends anything: random valid messages in any order with any sequence
//! numbers, and random bytes. Neither session may panic, the hub may hand the sink only
//! in-order records, and the edge's outbox cursor may never go back.

mod strategies;

use std::time::Duration;

use proptest::prelude::*;
use strategies::message;
use sync_protocol::{
    Cursors, EdgeIdentity, EdgeOutbox, EdgeSession, EventRecord, HelloAck, HubSession, HubSink,
    Message, RawBatch, ReadLimit, Record, RollupBatch, SessionConfig, SinkBusy, Time, UploadStream,
};

fn identity() -> EdgeIdentity {
    EdgeIdentity {
        edge_id: "edge-1".into(),
        park: "park-1".into(),
        building: "building-1".into(),
    }
}

/// An outbox with a few records per stream that checks its cursor only moves forward.
struct Outbox {
    acked: [u64; 3],
}

impl EdgeOutbox for Outbox {
    fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)> {
        (after.saturating_add(1)..=10)
            .take(limit.max_records)
            .map(|s| {
                let record = EventRecord {
                    id: [s as u8; 16],
                    body: vec![1, 2, 3],
                };
                (s, record)
            })
            .collect()
    }
    fn rollups_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RollupBatch)> {
        (after.saturating_add(1)..=3)
            .take(limit.max_records)
            .map(|s| (s, RollupBatch::default()))
            .collect()
    }
    fn raw_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RawBatch)> {
        // Records 1-4 are gone; 5-8 exist.
        (after.saturating_add(1).max(5)..=8)
            .take(limit.max_records)
            .map(|s| (s, RawBatch::default()))
            .collect()
    }
    fn last_written(&self, stream: UploadStream) -> u64 {
        [10, 3, 8][stream as usize].max(self.acked[stream as usize])
    }
    fn acknowledged_cursor(&self, stream: UploadStream) -> u64 {
        self.acked[stream as usize]
    }
    fn acknowledged(&mut self, stream: UploadStream, through: u64) {
        let i = stream as usize;
        assert!(
            through > self.acked[i],
            "the outbox cursor went back or stood still"
        );
        self.acked[i] = through;
    }
}

/// A sink that makes records durable at once and checks that they come in order.
#[derive(Default)]
struct Sink {
    durable: [u64; 3],
}

impl HubSink for Sink {
    fn accept(
        &mut self,
        edge: &EdgeIdentity,
        stream: UploadStream,
        seq: u64,
        record: Record<'_>,
    ) -> Result<(), SinkBusy> {
        assert_eq!(edge, &identity());
        let i = stream as usize;
        assert_eq!(seq, self.durable[i] + 1, "records must come in order");
        self.durable[i] = match record {
            Record::Gap { through } => {
                assert!(through >= seq);
                through
            }
            _ => seq,
        };
        Ok(())
    }
    fn durable_cursor(&self, _: &EdgeIdentity, stream: UploadStream) -> u64 {
        self.durable[stream as usize]
    }
}

fn input() -> impl Strategy<Value = (u64, Vec<u8>)> {
    let bytes = prop_oneof![
        4 => message().prop_filter_map("fits a frame", |(seq, m)| m.encode(seq).ok()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (0u64..3_000, bytes)
}

fn config() -> SessionConfig {
    SessionConfig {
        window_frames: 4,
        ..SessionConfig::default()
    }
}

proptest! {
    #[test]
    fn an_edge_fed_anything_neither_panics_nor_moves_its_cursor_back(
        start_with_hello_ack in any::<bool>(),
        inputs in proptest::collection::vec(input(), 0..40),
    ) {
        let mut now = Time::from_millis(1_000);
        let mut outbox = Outbox { acked: [0; 3] };
        let mut edge = EdgeSession::new(config(), identity());
        edge.handle_connected(now, &outbox);
        if start_with_hello_ack {
            let ack = Message::HelloAck(HelloAck {
                durable: Cursors::default(),
                window_frames: 4,
                window_bytes: 1 << 20,
            });
            edge.handle_frame(now, &ack.encode(0).unwrap(), &mut outbox);
        }
        for (advance_ms, bytes) in inputs {
            now = now + Duration::from_millis(advance_ms);
            edge.handle_frame(now, &bytes, &mut outbox);
            if edge.poll_timeout().is_some_and(|t| t <= now) {
                edge.handle_timeout(now);
            }
            while edge.poll_transmit(now, &mut outbox).is_some() {}
            while edge.poll_event().is_some() {}
            if edge.state() == sync_protocol::ConnectionState::Disconnected {
                edge.handle_connected(now, &outbox);
            }
        }
    }

    #[test]
    fn a_hub_fed_anything_neither_panics_nor_hands_records_out_of_order(
        start_with_hello in any::<bool>(),
        inputs in proptest::collection::vec(input(), 0..40),
    ) {
        let mut now = Time::from_millis(1_000);
        let mut sink = Sink::default();
        let mut hub = HubSession::for_building(config(), "park-1", "building-1");
        hub.handle_connected(now);
        if start_with_hello {
            let hello = sync_protocol::message::hello(&identity(), Cursors::default());
            hub.handle_frame(now, &hello.encode(0).unwrap(), &mut sink);
        }
        for (advance_ms, bytes) in inputs {
            now = now + Duration::from_millis(advance_ms);
            hub.handle_frame(now, &bytes, &mut sink);
            hub.handle_durable(now, &sink);
            if hub.poll_timeout().is_some_and(|t| t <= now) {
                hub.handle_timeout(now);
            }
            while hub.poll_transmit(now).is_some() {}
            while hub.poll_event().is_some() {}
            if hub.state() == sync_protocol::ConnectionState::Disconnected {
                hub.handle_connected(now);
                let hello = sync_protocol::message::hello(&identity(), Cursors::default());
                hub.handle_frame(now, &hello.encode(0).unwrap(), &mut sink);
            }
        }
    }
}
