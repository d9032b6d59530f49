//! The Modbus RTU bus over a pseudo-terminal pair: the bus opens the pty's slave side by
//! its path, as it would open `/dev/ttyUSB0`, and a tokio-modbus RTU server (or a small
//! hand-written slave) answers on the master side.

mod modbus_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use device_drivers::modbus::run_rtu_bus;
use device_drivers::{DeviceStatus, Quality, Value, WriteError};
use modbus_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_modbus::Request;
use tokio_serial::{SerialPort, SerialStream};

const SENSOR: &str = r#"
[[point]]
name = "temperature"
table = "input"
address = 1
type = "i16"
scale = 0.1

[[point]]
name = "humidity"
table = "input"
address = 2
type = "u16"
scale = 0.1

[[point]]
name = "temperature_correction"
table = "holding"
address = 0x0103
type = "i16"
scale = 0.1
min = -10
max = 10
writable = true
"#;

fn sensor(temperature: i16, humidity: u16) -> Arc<Sim> {
    let sim = Sim::new();
    sim.set_input(1, &[temperature as u16, humidity]);
    sim.set_holding(0x0103, &[0]);
    sim
}

/// A pty pair: the master end for the simulated slaves, the path of the other end for the
/// bus. The returned stream keeps the other end open, so that the bus reopening the port
/// never leaves the pty without a reader (which would hang it up).
fn pty() -> (SerialStream, SerialStream, String) {
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the pty has a path");
    (master, slave, path)
}

fn serve(master: SerialStream, units: BTreeMap<u8, Arc<Sim>>) {
    tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(Line { units }));
}

#[tokio::test]
async fn devices_on_one_line_are_polled_in_turn_by_unit() {
    guarded(async {
        let (master, _keep, path) = pty();
        let (one, two) = (sensor(215, 456), sensor(-52, 901));
        serve(master, BTreeMap::from([(1, one.clone()), (2, two.clone())]));
        let (out, mut events) = collector();
        let (_w1, rx1) = mpsc::channel(4);
        let (_w2, rx2) = mpsc::channel(4);
        let devices = vec![
            (
                rtu_device("th1", profile(SENSOR), &path, 1, ms(20), ms(500)),
                rx1,
            ),
            (
                rtu_device("th2", profile(SENSOR), &path, 2, ms(20), ms(500)),
                rx2,
            ),
        ];
        tokio::spawn(run_rtu_bus(devices, out));
        for _ in 0..3 {
            let b1 = events.batch("th1").await;
            assert!(b1.all_good(), "{b1:?}");
            assert!((float(b1.get("temperature")) - 21.5).abs() < 1e-9);
            assert!((float(b1.get("humidity")) - 45.6).abs() < 1e-9);
            let b2 = events.batch("th2").await;
            assert!((float(b2.get("temperature")) + 5.2).abs() < 1e-9);
            assert!((float(b2.get("humidity")) - 90.1).abs() < 1e-9);
        }
        for (unit, sim) in [(1, &one), (2, &two)] {
            let requests = sim.requests();
            assert!(requests.iter().all(|(u, _)| *u == unit));
            assert!(
                requests.contains(&(unit, Request::ReadInputRegisters(1, 2))),
                "{requests:?}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_silent_slave_does_not_stall_the_bus() {
    guarded(async {
        let (master, _keep, path) = pty();
        let lively = sensor(200, 500);
        let silent = sensor(0, 0);
        silent.silent.store(true, Ordering::SeqCst);
        serve(
            master,
            BTreeMap::from([(1, lively.clone()), (7, silent.clone())]),
        );
        let (out, mut events) = collector();
        let (_w1, rx1) = mpsc::channel(4);
        let (_w7, rx7) = mpsc::channel(4);
        let devices = vec![
            (
                rtu_device("lively", profile(SENSOR), &path, 1, ms(20), ms(100)),
                rx1,
            ),
            (
                rtu_device("silent", profile(SENSOR), &path, 7, ms(20), ms(100)),
                rx7,
            ),
        ];
        tokio::spawn(run_rtu_bus(devices, out));

        let mut lively_polls = 0;
        let mut silent_batches = 0;
        let mut silent_offline = None;
        while lively_polls < 20 {
            match events.next().await {
                Event::Samples(batch) if batch[0].point.device() == "lively" => {
                    assert!(Batch(batch).all_good());
                    lively_polls += 1;
                }
                Event::Samples(batch) => {
                    let batch = Batch(batch);
                    assert!(batch.all_bad_with("timed out after 100 ms"), "{batch:?}");
                    silent_batches += 1;
                }
                Event::Status(device, DeviceStatus::Offline { reason }) if device == "silent" => {
                    silent_offline = Some(reason)
                }
                Event::Status(device, status) => {
                    assert_eq!((device.as_str(), status), ("lively", DeviceStatus::Online))
                }
            }
        }
        // The silent slave is asked again only when its backoff has run out: were it asked
        // on every poll, each of the twenty polls would have cost a timeout.
        let asked = silent.requests().len();
        assert!(
            (1..=8).contains(&asked),
            "the silent slave was asked {asked} times"
        );
        assert!(silent_batches >= 1, "its points are still reported, as bad");
        assert_eq!(
            silent_offline.as_deref(),
            Some("holding register 259 of unit 7: timed out after 100 ms")
        );
    })
    .await
}

#[tokio::test]
async fn writes_on_the_bus_are_addressed_to_their_unit_and_verified() {
    guarded(async {
        let (master, _keep, path) = pty();
        let (one, two) = (sensor(215, 456), sensor(215, 456));
        serve(master, BTreeMap::from([(1, one.clone()), (2, two.clone())]));
        let (out, mut events) = collector();
        let (_w1, rx1) = mpsc::channel(4);
        let (w2, rx2) = mpsc::channel(4);
        let devices = vec![
            (
                rtu_device("th1", profile(SENSOR), &path, 1, ms(50), ms(500)),
                rx1,
            ),
            (
                rtu_device("th2", profile(SENSOR), &path, 2, ms(50), ms(500)),
                rx2,
            ),
        ];
        tokio::spawn(run_rtu_bus(devices, out));
        events.batch("th2").await;
        let v = write(&w2, "temperature_correction", Value::Float(-1.5))
            .await
            .unwrap();
        assert!((v.as_f64().unwrap() + 1.5).abs() < 1e-9, "{v:?}");
        assert_eq!(two.holding_at(0x0103), Some((-15i16) as u16));
        assert_eq!(one.holding_at(0x0103), Some(0), "unit 1 is not touched");
        assert!(matches!(
            write(&w2, "temperature_correction", Value::Float(12.0)).await,
            Err(WriteError::OutOfRange { .. })
        ));
        assert_eq!(
            two.writes(),
            [Request::WriteSingleRegister(0x0103, (-15i16) as u16)]
        );
    })
    .await
}

#[tokio::test]
async fn a_port_that_cannot_be_opened_puts_every_device_offline() {
    guarded(async {
        let (out, mut events) = collector();
        let (w1, rx1) = mpsc::channel(4);
        let (_w2, rx2) = mpsc::channel(4);
        let devices = vec![
            (rtu_device("th1", profile(SENSOR), "/dev/smartpark-no-such-tty", 1, ms(20), ms(100)), rx1),
            (rtu_device("th2", profile(SENSOR), "/dev/another-tty", 2, ms(20), ms(100)), rx2),
        ];
        tokio::spawn(run_rtu_bus(devices, out));
        let DeviceStatus::Offline { reason } = events.status("th1", |s| matches!(s, DeviceStatus::Offline { .. })).await else { unreachable!() };
        assert!(reason.starts_with("cannot open serial port /dev/smartpark-no-such-tty"), "{reason}");
        assert!(events.batch("th1").await.all_bad_with("cannot open serial port"));
        // A device that names another port is never polled on this one.
        assert!(events.batch("th2").await.all_bad_with("device is on port /dev/another-tty"));
        assert!(matches!(write(&w1, "temperature_correction", Value::Int(1)).await, Err(WriteError::Offline(r)) if r.starts_with("cannot open")));
    })
    .await
}

/// The Modbus CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF), low byte first.
fn with_crc(frame: &[u8]) -> Vec<u8> {
    let mut crc: u16 = 0xFFFF;
    for &b in frame {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    let mut out = frame.to_vec();
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A slave that answers every one-register read with `value`, and shortly after sends the
/// same answer again with `stale` in it, unasked: what a slow slave's late reply to an
/// earlier request looks like on the wire.
async fn echoing_slave(mut master: SerialStream, unit: u8, value: u16, stale: u16) {
    loop {
        let mut request = [0u8; 8];
        if master.read_exact(&mut request).await.is_err() {
            return;
        }
        assert_eq!(
            request[..2],
            [unit, 0x04],
            "a read of input registers for unit {unit}"
        );
        let [hi, lo] = value.to_be_bytes();
        master
            .write_all(&with_crc(&[unit, 0x04, 2, hi, lo]))
            .await
            .unwrap();
        tokio::time::sleep(ms(5)).await;
        let [hi, lo] = stale.to_be_bytes();
        master
            .write_all(&with_crc(&[unit, 0x04, 2, hi, lo]))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn input_waiting_on_the_line_is_never_taken_for_an_answer() {
    guarded(async {
        let (master, _keep, path) = pty();
        tokio::spawn(echoing_slave(master, 3, 111, 999));
        let body = "[[point]]\nname = \"v\"\ntable = \"input\"\naddress = 0\ntype = \"u16\"\n";
        let (out, mut events) = collector();
        let (_w, rx) = mpsc::channel(4);
        tokio::spawn(run_rtu_bus(
            vec![(
                rtu_device("s3", profile(body), &path, 3, ms(30), ms(500)),
                rx,
            )],
            out,
        ));
        for _ in 0..10 {
            let batch = events.batch("s3").await;
            assert_eq!(batch.get("v").value, Some(Value::Int(111)), "{batch:?}");
            assert_eq!(batch.get("v").quality, Quality::Good);
        }
    })
    .await
}

/// Two blocks of the same size, so that the reply to one would fit the other.
const TWO_BLOCKS: &str = r#"
[[point]]
name = "a0"
table = "holding"
address = 0
type = "u16"

[[point]]
name = "a1"
table = "holding"
address = 1
type = "u16"

[[point]]
name = "b0"
table = "holding"
address = 100
type = "u16"

[[point]]
name = "b1"
table = "holding"
address = 101
type = "u16"
"#;

/// What every register of the line below holds: the unit and the address, so that a value
/// stored for the wrong unit or the wrong block shows.
fn own_value(unit: u8, address: u16) -> u16 {
    1000 * unit as u16 + address
}

/// Units answering reads of holding registers with [`own_value`], each reply 10 ms after its
/// request; while `late` is set, unit 1 answers instead after one of `LATE_MS`, each longer
/// than its master's timeout. Counts unit 1's late replies.
const LATE_MS: [u64; 4] = [78, 56, 84, 62];

async fn line_with_a_late_unit(
    master: SerialStream,
    late: Arc<AtomicBool>,
    sent_late: Arc<AtomicUsize>,
) {
    let (mut rx, tx) = tokio::io::split(master);
    let tx = Arc::new(tokio::sync::Mutex::new(tx));
    loop {
        let mut request = [0u8; 8];
        if rx.read_exact(&mut request).await.is_err() {
            return;
        }
        let unit = request[0];
        assert_eq!(request[1], 3, "only reads of holding registers");
        let address = u16::from_be_bytes([request[2], request[3]]);
        let count = u16::from_be_bytes([request[4], request[5]]);
        let mut reply = vec![unit, 3, 2 * count as u8];
        for a in address..address + count {
            reply.extend_from_slice(&own_value(unit, a).to_be_bytes());
        }
        let reply = with_crc(&reply);
        let delay = if unit == 1 && late.load(Ordering::SeqCst) {
            ms(LATE_MS[sent_late.fetch_add(1, Ordering::SeqCst) % LATE_MS.len()])
        } else {
            ms(10)
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.lock().await.write_all(&reply).await;
        });
    }
}

/// Every good sample of the batch has its own register's value.
fn assert_own_values(batch: &[device_drivers::Sample], unit: u8) {
    for s in batch.iter().filter(|s| s.quality == Quality::Good) {
        let address = match s.point.point() {
            "a0" => 0,
            "a1" => 1,
            "b0" => 100,
            "b1" => 101,
            other => panic!("unexpected point {other}"),
        };
        assert_eq!(
            s.value,
            Some(Value::Int(own_value(unit, address) as i64)),
            "{} stored as good with another register's value",
            s.point.as_str()
        );
    }
}

#[tokio::test]
async fn a_late_reply_is_never_taken_for_the_answer_to_a_later_request() {
    guarded(async {
        let (master, _keep, path) = pty();
        let late = Arc::new(AtomicBool::new(true));
        let sent_late = Arc::new(AtomicUsize::new(0));
        tokio::spawn(line_with_a_late_unit(
            master,
            late.clone(),
            sent_late.clone(),
        ));
        let (out, mut events) = collector();
        let (_w1, rx1) = mpsc::channel(4);
        let (_w2, rx2) = mpsc::channel(4);
        let devices = vec![
            (
                rtu_device("slow", profile(TWO_BLOCKS), &path, 1, ms(20), ms(50)),
                rx1,
            ),
            (
                rtu_device("quick", profile(TWO_BLOCKS), &path, 2, ms(20), ms(200)),
                rx2,
            ),
        ];
        tokio::spawn(run_rtu_bus(devices, out));

        // Every late reply arrives after the slow unit's timeout, while the line settles or
        // while the quick unit's request waits for its answer.
        let mut quick_good = 0;
        let mut slow_bad = 0;
        while sent_late.load(Ordering::SeqCst) < LATE_MS.len() || quick_good < 20 {
            let Event::Samples(batch) = events.next().await else {
                continue;
            };
            match batch[0].point.device() {
                "quick" => {
                    assert_own_values(&batch, 2);
                    quick_good += Batch(batch).all_good() as usize;
                }
                _ => {
                    assert_own_values(&batch, 1);
                    slow_bad += !Batch(batch).all_good() as usize;
                }
            }
        }
        assert!(
            slow_bad > 0,
            "the slow unit's late replies made its points bad"
        );
        let discarded = device_drivers::metrics::MODBUS_RTU_FRAMES_DISCARDED_TOTAL.get()
            + device_drivers::metrics::MODBUS_RTU_BYTES_DISCARDED_TOTAL.get();
        assert!(discarded > 0, "the late replies were discarded");

        // Once it answers in time again, the slow unit recovers with its own values.
        late.store(false, Ordering::SeqCst);
        loop {
            let batch = events.batch("slow").await;
            assert_own_values(&batch.0, 1);
            if batch.all_good() {
                break;
            }
        }
    })
    .await
}
