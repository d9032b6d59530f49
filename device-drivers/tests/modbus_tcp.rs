//! The Modbus TCP driver against an in-process tokio-modbus server on a loopback port.

mod modbus_support;

use std::sync::atomic::Ordering;

use device_drivers::modbus::run_tcp_device;
use device_drivers::{DeviceStatus, Quality, Value, WriteError};
use modbus_support::*;
use tokio::sync::mpsc;
use tokio_modbus::Request;

const EVERY_TYPE: &str = r#"
[[point]]
name = "u16"
table = "holding"
address = 0
type = "u16"

[[point]]
name = "i16"
table = "holding"
address = 1
type = "i16"

[[point]]
name = "u32_abcd"
table = "holding"
address = 2
type = "u32"

[[point]]
name = "u32_cdab"
table = "holding"
address = 4
type = "u32"
word_order = "little"

[[point]]
name = "i32"
table = "holding"
address = 6
type = "i32"

[[point]]
name = "f32_abcd"
table = "holding"
address = 8
type = "f32"

[[point]]
name = "f32_dcba"
table = "holding"
address = 10
type = "f32"
byte_order = "little"
word_order = "little"

[[point]]
name = "f32_badc"
table = "holding"
address = 12
type = "f32"
byte_order = "little"

[[point]]
name = "f32_cdab"
table = "holding"
address = 14
type = "f32"
word_order = "little"

[[point]]
name = "u64"
table = "holding"
address = 16
type = "u64"

[[point]]
name = "i64_cdab"
table = "holding"
address = 20
type = "i64"
word_order = "little"

[[point]]
name = "f64"
table = "holding"
address = 24
type = "f64"

[[point]]
name = "tenths"
table = "holding"
address = 28
type = "i16"
scale = 0.1

[[point]]
name = "offset"
table = "holding"
address = 29
type = "u16"
offset = -40

[[point]]
name = "bit3"
table = "holding"
address = 30
bit = 3

[[point]]
name = "bit0"
table = "holding"
address = 30
bit = 0

[[point]]
name = "nan"
table = "holding"
address = 31
type = "f32"

[[point]]
name = "hot"
table = "holding"
address = 33
type = "i16"
scale = 0.1
max = 60

[[point]]
name = "level"
table = "input"
address = 0
type = "u16"

[[point]]
name = "relay"
table = "coil"
address = 5

[[point]]
name = "door"
table = "discrete"
address = 7
"#;

fn every_type_sim() -> std::sync::Arc<Sim> {
    let sim = Sim::new();
    sim.set_holding(0, &[0xBEEF, 0xFF85]);
    sim.set_holding(2, &[0x0001, 0x0002, 0x0002, 0x0001, 0xFFFF, 0xFFFE]);
    // 1.5f32 is 0x3FC00000, in the four orders.
    sim.set_holding(
        8,
        &[
            0x3FC0, 0x0000, 0x0000, 0xC03F, 0xC03F, 0x0000, 0x0000, 0x3FC0,
        ],
    );
    sim.set_holding(16, &[0x0102, 0x0304, 0x0506, 0x0708]);
    sim.set_holding(20, &[0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF]);
    // 2.5f64 is 0x4004000000000000.
    sim.set_holding(24, &[0x4004, 0, 0, 0]);
    sim.set_holding(28, &[231, 100, 0b1000]);
    // A quiet NaN.
    sim.set_holding(31, &[0x7FC0, 0x0000]);
    sim.set_holding(33, &[700]);
    sim.set_input(0, &[42]);
    sim.coils.lock().unwrap().insert(5, true);
    sim.discrete.lock().unwrap().insert(7, true);
    sim
}

#[tokio::test]
async fn every_type_and_order_decodes_as_the_device_means_it() {
    guarded(async {
        let sim = every_type_sim();
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(EVERY_TYPE), server.addr, ms(60_000), ms(1000)),
            out,
            rx,
        ));
        let batch = events.batch("m1").await;

        assert_eq!(batch.0.len(), 21);
        let ts = batch.0[0].ts;
        assert!(batch.0.iter().all(|s| s.ts == ts), "one timestamp per poll");
        let int = |p: &str| {
            let s = batch.get(p);
            assert_eq!(s.quality, Quality::Good, "{s:?}");
            s.value.clone().unwrap()
        };
        assert_eq!(int("u16"), Value::Int(0xBEEF));
        assert_eq!(int("i16"), Value::Int(-123));
        assert_eq!(int("u32_abcd"), Value::Int(0x0001_0002));
        assert_eq!(int("u32_cdab"), Value::Int(0x0001_0002));
        assert_eq!(int("i32"), Value::Int(-2));
        for p in ["f32_abcd", "f32_dcba", "f32_badc", "f32_cdab"] {
            assert_eq!(int(p), Value::Float(1.5), "{p}");
        }
        assert_eq!(int("u64"), Value::Int(0x0102_0304_0506_0708));
        assert_eq!(int("i64_cdab"), Value::Int(-2));
        assert_eq!(int("f64"), Value::Float(2.5));
        assert!((float(batch.get("tenths")) - 23.1).abs() < 1e-9);
        assert_eq!(int("offset"), Value::Float(60.0));
        assert_eq!(int("bit3"), Value::Bool(true));
        assert_eq!(int("bit0"), Value::Bool(false));
        assert_eq!(int("level"), Value::Int(42));
        assert_eq!(int("relay"), Value::Bool(true));
        assert_eq!(int("door"), Value::Bool(true));

        let nan = batch.get("nan");
        assert_eq!(nan.value, None);
        assert_eq!(nan.quality, Quality::bad("not a number"));
        let hot = batch.get("hot");
        assert_eq!(hot.value, Some(Value::Float(70.0)));
        assert!(
            matches!(&hot.quality, Quality::Uncertain(r) if r.starts_with("out of range")),
            "{hot:?}"
        );

        // One read per table: the holding points are contiguous.
        let reads = sim.requests();
        assert_eq!(reads.len(), 4, "{reads:?}");
        assert!(
            reads
                .iter()
                .any(|(_, r)| *r == Request::ReadHoldingRegisters(0, 34)),
            "{reads:?}"
        );
    })
    .await
}

#[tokio::test]
async fn points_are_read_in_coalesced_blocks() {
    guarded(async {
        let sim = Sim::new();
        sim.set_holding(0, &[1; 13]);
        sim.set_input(0, &[2, 3]);
        sim.coils.lock().unwrap().extend([(0, true), (1, false)]);
        let body = r#"
[modbus]
max_gap_registers = 3
max_block_registers = 5

[[point]]
name = "a"
table = "holding"
address = 0
type = "u16"

[[point]]
name = "b"
table = "holding"
address = 1
type = "u32"

[[point]]
name = "c"
table = "holding"
address = 3
type = "u16"

[[point]]
name = "d"
table = "holding"
address = 4
type = "u16"

[[point]]
name = "far"
table = "holding"
address = 10
type = "u16"

[[point]]
name = "near_far"
table = "holding"
address = 12
type = "u16"

[[point]]
name = "i0"
table = "input"
address = 0
type = "u16"

[[point]]
name = "i1"
table = "input"
address = 1
type = "u16"

[[point]]
name = "c0"
table = "coil"
address = 0

[[point]]
name = "c1"
table = "coil"
address = 1
"#;
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(body), server.addr, ms(60_000), ms(1000)),
            out,
            rx,
        ));
        let batch = events.batch("m1").await;
        assert!(batch.all_good(), "{batch:?}");
        assert_eq!(batch.0.len(), 10);
        let reads: Vec<Request> = sim.requests().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            reads,
            [
                Request::ReadCoils(0, 2),
                // 0..5 is exactly the block limit; 10 is five registers away, past the gap.
                Request::ReadHoldingRegisters(0, 5),
                // 12 is one register past 10, within the gap: 11 is read and thrown away.
                Request::ReadHoldingRegisters(10, 3),
                Request::ReadInputRegisters(0, 2),
            ]
        );
        assert_eq!(batch.get("i1").value, Some(Value::Int(3)));
    })
    .await
}

#[tokio::test]
async fn an_exception_is_reported_by_name_and_the_connection_is_kept() {
    guarded(async {
        let sim = Sim::new();
        sim.set_input(0, &[7]);
        let body = r#"
[[point]]
name = "missing"
table = "holding"
address = 100
type = "u16"

[[point]]
name = "present"
table = "input"
address = 0
type = "u16"
"#;
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(body), server.addr, ms(20), ms(1000)),
            out,
            rx,
        ));
        for _ in 0..3 {
            let batch = events.batch("m1").await;
            let missing = batch.get("missing");
            assert_eq!(missing.value, None);
            assert_eq!(
                missing.quality,
                Quality::bad("holding register 100 of unit 1: exception IllegalDataAddress (2)")
            );
            assert_eq!(batch.get("present").value, Some(Value::Int(7)));
        }
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            1,
            "an exception must not cost the connection"
        );
        assert!(sim.requests().len() >= 6);
    })
    .await
}

#[tokio::test]
async fn a_silent_server_times_out_while_another_device_keeps_its_rate() {
    guarded(async {
        let body = "[[point]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n";
        let silent = Sim::new();
        silent.set_holding(0, &[1]);
        silent.mute.store(true, Ordering::SeqCst);
        let lively = Sim::new();
        lively.set_holding(0, &[2]);
        let silent_server = TcpDevice::start(silent.clone()).await;
        let lively_server = TcpDevice::start(lively.clone()).await;
        let (out, mut events) = collector();
        let (_w1, rx1) = mpsc::channel(4);
        let (_w2, rx2) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device(
                "silent",
                profile(body),
                silent_server.addr,
                ms(100),
                ms(300),
            ),
            out.clone(),
            rx1,
        ));
        tokio::spawn(run_tcp_device(
            tcp_device("lively", profile(body), lively_server.addr, ms(10), ms(300)),
            out,
            rx2,
        ));

        // Between the silent device's first and third bad batch (at least two of its poll
        // intervals, and a timeout) the other device polls many times; four is a wide margin.
        let mut silent_bad = 0;
        let mut lively_between = 0;
        let mut offline_reason = None;
        while silent_bad < 3 {
            match events.next().await {
                Event::Samples(batch) if batch[0].point.device() == "silent" => {
                    let batch = Batch(batch);
                    assert!(batch.all_bad_with("timed out after 300 ms"), "{batch:?}");
                    silent_bad += 1;
                }
                Event::Samples(batch) => {
                    assert!(Batch(batch).all_good());
                    if silent_bad >= 1 {
                        lively_between += 1;
                    }
                }
                Event::Status(device, DeviceStatus::Offline { reason }) if device == "silent" => {
                    offline_reason = Some(reason)
                }
                Event::Status(device, status) => assert!(
                    device == "silent" || status == DeviceStatus::Online,
                    "{device} {status:?}"
                ),
            }
        }
        assert!(
            lively_between >= 4,
            "the lively device polled only {lively_between} times meanwhile"
        );
        assert_eq!(
            offline_reason.as_deref(),
            Some("holding register 0 of unit 1: timed out after 300 ms")
        );
        assert!(!silent.requests().is_empty());
    })
    .await
}

#[tokio::test]
async fn the_driver_reconnects_when_the_server_comes_back() {
    guarded(async {
        let body = "[[point]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n";
        let sim = Sim::new();
        sim.set_holding(0, &[5]);
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(body), server.addr, ms(20), ms(200)),
            out,
            rx,
        ));
        events.status("m1", |s| *s == DeviceStatus::Online).await;
        assert!(events.batch("m1").await.all_good());

        let (addr, connections) = server.stop().await;
        let down = events
            .status("m1", |s| matches!(s, DeviceStatus::Offline { .. }))
            .await;
        assert!(matches!(down, DeviceStatus::Offline { reason } if !reason.is_empty()));
        // While the device is gone its points stay visibly bad.
        loop {
            let batch = events.batch("m1").await;
            if !batch.all_good() {
                assert!(
                    batch
                        .0
                        .iter()
                        .all(|s| s.value.is_none() && matches!(s.quality, Quality::Bad(_)))
                );
                break;
            }
        }

        sim.set_holding(0, &[6]);
        let _server = TcpDevice::restart(sim.clone(), addr, connections.clone()).await;
        events.status("m1", |s| *s == DeviceStatus::Online).await;
        loop {
            let batch = events.batch("m1").await;
            if batch.all_good() {
                assert_eq!(batch.get("v").value, Some(Value::Int(6)));
                break;
            }
        }
        assert!(connections.load(Ordering::SeqCst) >= 2);
    })
    .await
}

const WRITABLE: &str = r#"
[[point]]
name = "setpoint"
table = "holding"
address = 0
type = "u16"
scale = 0.1
min = 0
max = 100
writable = true

[[point]]
name = "limit"
table = "holding"
address = 1
type = "f32"
writable = true

[[point]]
name = "enable"
table = "holding"
address = 3
bit = 2
writable = true

[[point]]
name = "relay"
table = "coil"
address = 0
writable = true

[[point]]
name = "reading"
table = "input"
address = 0
type = "u16"

[[point]]
name = "fixed"
table = "holding"
address = 4
type = "u16"
"#;

fn writable_sim() -> std::sync::Arc<Sim> {
    let sim = Sim::new();
    sim.set_holding(0, &[200, 0, 0, 0b1000_0001, 9]);
    sim.set_input(0, &[1]);
    sim.coils.lock().unwrap().insert(0, false);
    sim
}

#[tokio::test]
async fn a_write_is_verified_by_reading_it_back() {
    guarded(async {
        let sim = writable_sim();
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(WRITABLE), server.addr, ms(60_000), ms(1000)),
            out,
            rx,
        ));
        assert!(events.batch("m1").await.all_good());
        sim.clear_requests();

        // 21.56 / 0.1 rounds to 216, which reads back as 21.6.
        let v = write(&writes, "setpoint", Value::Float(21.56))
            .await
            .unwrap();
        assert!((v.as_f64().unwrap() - 21.6).abs() < 1e-9, "{v:?}");
        assert_eq!(sim.holding_at(0), Some(216));
        let echoed = events.batch("m1").await;
        assert_eq!(echoed.0.len(), 1);
        assert_eq!(echoed.get("setpoint").value, Some(v));

        assert_eq!(
            write(&writes, "limit", Value::Float(12.5)).await,
            Ok(Value::Float(12.5))
        );
        assert_eq!(
            write(&writes, "enable", Value::Bool(true)).await,
            Ok(Value::Bool(true))
        );
        assert_eq!(
            sim.holding_at(3),
            Some(0b1000_0101),
            "the other bits of the register are kept"
        );
        assert_eq!(
            write(&writes, "relay", Value::Bool(true)).await,
            Ok(Value::Bool(true))
        );
        assert_eq!(sim.coils.lock().unwrap().get(&0), Some(&true));

        assert_eq!(
            sim.writes(),
            [
                Request::WriteSingleRegister(0, 216),
                // 12.5f32 is 0x41480000.
                Request::WriteMultipleRegisters(1, vec![0x4148, 0x0000].into()),
                Request::WriteSingleRegister(3, 0b1000_0101),
                Request::WriteSingleCoil(0, true),
            ]
        );
        // Each write is followed by a read of what it wrote.
        let requests: Vec<Request> = sim.requests().into_iter().map(|(_, r)| r).collect();
        assert_eq!(requests[1], Request::ReadHoldingRegisters(0, 1));
        assert_eq!(requests[3], Request::ReadHoldingRegisters(1, 2));
    })
    .await
}

#[tokio::test]
async fn writes_the_profile_forbids_never_reach_the_device() {
    guarded(async {
        let sim = writable_sim();
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(WRITABLE), server.addr, ms(60_000), ms(1000)),
            out,
            rx,
        ));
        events.batch("m1").await;

        let err = write(&writes, "setpoint", Value::Float(150.0))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WriteError::OutOfRange {
                point: "setpoint".into(),
                value: "150".into(),
                reason: "above max 100".into()
            }
        );
        assert!(matches!(
            write(&writes, "setpoint", Value::Float(-0.1)).await,
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            write(&writes, "limit", Value::Text("high".into())).await,
            Err(WriteError::OutOfRange { .. })
        ));
        assert_eq!(
            write(&writes, "fixed", Value::Int(1)).await,
            Err(WriteError::NotWritable("fixed".into()))
        );
        assert_eq!(
            write(&writes, "reading", Value::Int(1)).await,
            Err(WriteError::NotWritable("reading".into()))
        );
        assert_eq!(
            write(&writes, "nothing", Value::Int(1)).await,
            Err(WriteError::UnknownPoint("nothing".into()))
        );
        assert!(sim.writes().is_empty(), "{:?}", sim.writes());
        assert_eq!(sim.holding_at(0), Some(200));
    })
    .await
}

#[tokio::test]
async fn a_write_the_device_does_not_keep_fails_verification() {
    guarded(async {
        let sim = writable_sim();
        sim.ignore_writes.store(true, Ordering::SeqCst);
        let server = TcpDevice::start(sim.clone()).await;
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(
            tcp_device("m1", profile(WRITABLE), server.addr, ms(60_000), ms(1000)),
            out,
            rx,
        ));
        events.batch("m1").await;
        let err = write(&writes, "setpoint", Value::Int(50))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WriteError::VerifyFailed {
                written: "50".into(),
                read_back: "20".into()
            }
        );
        assert!(matches!(
            write(&writes, "enable", Value::Bool(true)).await,
            Err(WriteError::VerifyFailed { .. })
        ));
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
}

#[tokio::test]
async fn a_device_that_cannot_be_reached_reports_bad_samples_and_refuses_writes() {
    guarded(async {
        // A port that was free a moment ago: nothing listens there.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel(4);
        tokio::spawn(run_tcp_device(tcp_device("m1", profile(WRITABLE), addr, ms(20), ms(200)), out, rx));
        let DeviceStatus::Offline { reason } = events.status("m1", |s| matches!(s, DeviceStatus::Offline { .. })).await else { unreachable!() };
        assert!(reason.starts_with("cannot connect to 127.0.0.1:"), "{reason}");
        let batch = events.batch("m1").await;
        assert_eq!(batch.0.len(), 6);
        assert!(batch.all_bad_with("cannot connect"), "{batch:?}");
        assert!(matches!(write(&writes, "setpoint", Value::Int(1)).await, Err(WriteError::Offline(r)) if r.starts_with("cannot connect")));
        // Validation comes first: a wrong point is reported as such even while offline.
        assert_eq!(write(&writes, "nothing", Value::Int(1)).await, Err(WriteError::UnknownPoint("nothing".into())));
    })
    .await
}
