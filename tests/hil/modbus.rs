//! Modbus devices played by pymodbus, over TCP and over RTU on a socat pty pair.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Edge, Proc, eventually, modbus_tcp_device, python, repo};

fn tcp_device(
    id: &str,
    profile: &str,
    addr: std::net::SocketAddr,
    poll_ms: u64,
    timeout_ms: u64,
) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\nprofile = \"{profile}\"\npoll_interval_ms = {poll_ms}\ntimeout_ms = {timeout_ms}\nmodbus_tcp = {{ address = \"{addr}\", unit = 1 }}\n\n"
    )
}

fn good(edge: &Edge, key: &str) -> Value {
    eventually(
        &format!("a good value of {key}"),
        Duration::from_secs(20),
        || {
            let l = edge.latest(key);
            (l["quality"] == "good").then_some(l)
        },
    )
}

fn bad_with(edge: &Edge, key: &str, reason: &str) -> Value {
    eventually(
        &format!("{key} bad with {reason:?}"),
        Duration::from_secs(20),
        || {
            let l = edge.latest(key);
            (l["quality"] == "bad" && l["reason"].as_str().is_some_and(|r| r.contains(reason)))
                .then_some(l)
        },
    )
}

/// Timestamps (µs) of a point's raw samples in `[from, to)`.
fn timestamps(edge: &Edge, key: &str, from: i64, to: i64) -> Vec<i64> {
    let (status, body) = edge.get(&format!(
        "/api/v1/points/{key}/history?resolution=raw&from={from}&to={to}&limit=100000"
    ));
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts"].as_i64().unwrap())
        .collect()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn a_pymodbus_device_over_tcp_is_read_with_every_type() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        dir.path(),
        &tcp_device("dev", "hil-modbus-device", addr, 200, 1000),
    );
    let expect = [
        ("voltage", json!(230.5)),
        ("signed16", json!(-1234)),
        ("unsigned16", json!(50000)),
        ("signed32", json!(-100000)),
        ("temperature", json!(-40.25)),
        ("energy", json!(1234.5678)),
        ("setpoint", json!(21.5)),
        ("mode", json!(103)),
        ("mode_bit0", json!(true)),
        ("relay0", json!(true)),
        ("alarm0", json!(true)),
    ];
    for (point, value) in expect {
        let l = good(&edge, &format!("dev/{point}"));
        assert_eq!(l["value"], value, "dev/{point}");
    }
    let first = good(&edge, "dev/uptime")["value"].as_i64().unwrap();
    eventually(
        "the uptime counter to grow",
        Duration::from_secs(10),
        || (edge.latest("dev/uptime")["value"].as_i64()? > first).then_some(()),
    );
    let (_, d) = edge.get("/api/v1/devices/dev");
    assert_eq!(d["status"]["state"], "online");
}

#[test]
fn exceptions_are_reported_by_name_and_the_connection_is_kept() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let devices = tcp_device("gaps", "hil-unmapped", addr, 200, 1000)
        + &tcp_device("dev", "hil-modbus-device", addr, 200, 1000);
    let edge = Edge::start(dir.path(), &devices);
    let l = bad_with(&edge, "gaps/missing", "IllegalDataAddress");
    assert!(
        l["value"].is_null(),
        "a failed read is no value, never a zero: {l}"
    );
    bad_with(&edge, "gaps/also_missing", "IllegalDataAddress");
    good(&edge, "dev/voltage");
    // The device keeps answering the same connection: exceptions do not make it offline.
    let (_, d) = edge.get("/api/v1/devices/gaps");
    assert_eq!(d["status"]["state"], "online", "{d}");
}

#[test]
fn a_silent_device_goes_bad_and_recovers_while_another_keeps_its_rate() {
    let (quiet, quiet_addr) = modbus_tcp_device();
    let (_busy, busy_addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let devices = tcp_device("quiet", "hil-modbus-device", quiet_addr, 100, 1000)
        + &tcp_device("busy", "hil-modbus-device", busy_addr, 100, 1000);
    let edge = Edge::start(dir.path(), &devices);
    good(&edge, "quiet/voltage");
    good(&edge, "busy/voltage");

    quiet.signal("STOP");
    let outage_start = now_us();
    let l = bad_with(&edge, "quiet/voltage", "timed out after 1000 ms");
    assert!(l["value"].is_null());
    // Let the outage last a few of the silent device's timeouts.
    std::thread::sleep(Duration::from_secs(4));
    let outage_end = now_us();
    let (_, d) = edge.get("/api/v1/devices/quiet");
    assert_eq!(d["status"]["state"], "offline", "{d}");

    // The busy device was polled on its own schedule all along: no gap in its samples comes
    // near the silent device's 1 s timeout, as it would if one device waited on the other.
    let ts = timestamps(&edge, "busy/voltage", outage_start, outage_end);
    assert!(
        ts.len() >= 10,
        "busy device stored only {} samples during the outage",
        ts.len()
    );
    let max_gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap < 700_000,
        "the busy device's samples have a gap of {max_gap} µs during the other's outage"
    );

    quiet.signal("CONT");
    eventually(
        "the silent device to recover",
        Duration::from_secs(40),
        || {
            let l = edge.latest("quiet/voltage");
            (l["quality"] == "good" && l["ts"].as_i64()? > outage_end).then_some(())
        },
    );
}

#[test]
fn writes_are_verified_by_read_back_refused_out_of_range_and_audited() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        dir.path(),
        &tcp_device("dev", "hil-modbus-device", addr, 200, 1000),
    );
    good(&edge, "dev/setpoint");

    let (status, body) = edge.post("/api/v1/points/dev/setpoint/write", json!({"value": 23.25}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], 23.25);
    assert_eq!(body["verified"], true);
    eventually(
        "the new setpoint polled back",
        Duration::from_secs(10),
        || (edge.latest("dev/setpoint")["value"] == 23.25).then_some(()),
    );

    let (status, body) = edge.post("/api/v1/points/dev/relay0/write", json!({"value": false}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], false);

    let (status, body) = edge.post("/api/v1/points/dev/setpoint/write", json!({"value": 99}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "out_of_range");
    assert!(body["traceId"].is_string());

    let (status, body) = edge.post("/api/v1/points/dev/setpoint/write", json!({"value": "hot"}));
    assert_eq!(status, 400, "{body}");
    let (status, _) = edge.post("/api/v1/points/dev/voltage/write", json!({"value": 1}));
    assert_eq!(status, 409);
    let (status, body) = edge.post("/api/v1/points/dev/nope/write", json!({"value": 1}));
    assert_eq!(status, 404, "{body}");

    let (_, audit) = edge.get("/api/v1/audit");
    let entries = audit["entries"].as_array().unwrap();
    let targets: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        targets
            .iter()
            .any(|(t, o)| *t == "dev/setpoint" && o.starts_with("ok")),
        "{targets:?}"
    );
    assert!(
        targets
            .iter()
            .any(|(t, o)| *t == "dev/setpoint" && o.starts_with("refused")),
        "{targets:?}"
    );
    assert!(entries.iter().any(|e| {
        e["actor"]
            .as_str()
            .unwrap_or("")
            .starts_with(crate::support::ADMIN)
    }));
}

/// A serial line: a socat pty pair with the pymodbus RTU device (started with `peer_args`
/// after `--rtu PATH --baud 19200`) on one end. Returns socat, the device, and the path of
/// the end for the edge.
fn rtu_line(dir: &Path, peer_args: &[&str]) -> (Proc, Proc, PathBuf) {
    let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
    let socat = Proc::spawn(
        "socat",
        Command::new("socat").args([
            "-d",
            "-d",
            &format!("pty,raw,echo=0,link={}", a.display()),
            &format!("pty,raw,echo=0,link={}", b.display()),
        ]),
    );
    eventually("the pty pair", Duration::from_secs(10), || {
        (a.exists() && b.exists()).then_some(())
    });
    let mut device = Proc::spawn(
        "pymodbus RTU device",
        Command::new(python())
            .arg(repo().join("tests/hil/peers/modbus_device.py"))
            .args(["--rtu"])
            .arg(&a)
            .args(["--baud", "19200"])
            .args(peer_args),
    );
    device.wait_line("READY", Duration::from_secs(30));
    (socat, device, b)
}

/// A `[[device]]` table for unit `unit` on the serial line at `port`.
fn rtu_device(
    id: &str,
    profile: &str,
    port: &Path,
    unit: u8,
    poll_ms: u64,
    timeout_ms: u64,
) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\nprofile = \"{profile}\"\npoll_interval_ms = {poll_ms}\ntimeout_ms = {timeout_ms}\n\
         modbus_rtu = {{ port = \"{}\", baud = 19200, unit = {unit} }}\n\n",
        port.display()
    )
}

#[test]
fn rtu_devices_share_a_serial_line_and_a_silent_unit_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (mut socat, device, b) = rtu_line(
        dir.path(),
        &["--unit", "1", "--unit", "2", "--silent-unit", "3"],
    );
    let rtu = |id: &str, unit: u8| rtu_device(id, "hil-modbus-device", &b, unit, 300, 500);
    let edge = Edge::start(
        dir.path(),
        &(rtu("rtu1", 1) + &rtu("rtu2", 2) + &rtu("rtu3", 3)),
    );
    assert_eq!(good(&edge, "rtu1/voltage")["value"], 230.5);
    assert_eq!(good(&edge, "rtu2/signed16")["value"], -1234);
    bad_with(&edge, "rtu3/voltage", "timed out after 500 ms");

    // With the silent unit backed off, the answering units keep being polled.
    let from = now_us();
    let before = (
        edge.raw_count("rtu1/voltage"),
        edge.raw_count("rtu2/voltage"),
    );
    eventually(
        "both answering units polled again and again",
        Duration::from_secs(30),
        || {
            (edge.raw_count("rtu1/voltage") >= before.0 + 10
                && edge.raw_count("rtu2/voltage") >= before.1 + 10)
                .then_some(())
        },
    );
    let ts = timestamps(&edge, "rtu1/voltage", from, now_us());
    let max_gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap < 2_000_000,
        "unit 1 went {max_gap} µs without a poll while unit 3 was silent"
    );
    drop(edge);
    drop(device);
    socat.kill9();
}

/// The points of `hil-rtu-blocks` and their registers.
const BLOCK_POINTS: [(&str, &str, u16); 10] = [
    ("a0", "holding", 0),
    ("a1", "holding", 1),
    ("a2", "holding", 2),
    ("a3", "holding", 3),
    ("b0", "holding", 100),
    ("b1", "holding", 101),
    ("b2", "holding", 102),
    ("b3", "holding", 103),
    ("c0", "input", 0),
    ("c1", "input", 1),
];

/// What a register of unit `unit` holds in the maps of the late-reply test: its unit and
/// address, so that a value stored for another unit or another block shows.
fn own_value(unit: u8, table: &str, address: u16) -> i64 {
    1000 * unit as i64 + if table == "input" { 500 } else { 0 } + address as i64
}

/// The register map of `unit` for `modbus_device.py --unit-registers`.
fn unit_map(unit: u8) -> Value {
    let values = |table: &str, from: u16, n: u16| -> Vec<i64> {
        (from..from + n)
            .map(|a| own_value(unit, table, a))
            .collect()
    };
    json!({
        "holding": [
            {"address": 0, "type": "u16", "values": values("holding", 0, 4)},
            {"address": 100, "type": "u16", "values": values("holding", 100, 4)},
        ],
        "input": [{"address": 0, "type": "u16", "values": values("input", 0, 2)}],
    })
}

#[test]
fn a_late_rtu_reply_at_wire_speed_is_never_stored_as_the_answer_to_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = Vec::new();
    for unit in 1..=3u8 {
        let map = dir.path().join(format!("unit{unit}.json"));
        std::fs::write(&map, unit_map(unit).to_string()).unwrap();
        args.extend([
            "--unit-registers".into(),
            format!("{unit}={}", map.display()),
        ]);
    }
    // Unit 3 answers half of its requests, drawn at random, between 2 and 60 ms after the
    // edge's 300 ms timeout ran out, at 19,200 baud like the others: its late reply comes in
    // while the line settles or while the next unit's request waits for its answer.
    args.extend(
        [
            "--wire-speed",
            "--turnaround-ms",
            "5",
            "--late-unit",
            "3",
            "--late-ms",
            "302:360",
            "--late-probability",
            "0.5",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut socat, mut device, port) = rtu_line(dir.path(), &args);
    let devices: String = (1..=3u8)
        .map(|unit| rtu_device(&format!("u{unit}"), "hil-rtu-blocks", &port, unit, 200, 300))
        .collect();
    let from = now_us();
    let edge = Edge::start(dir.path(), &devices);
    for unit in 1..=3 {
        good(&edge, &format!("u{unit}/a0"));
    }
    for _ in 0..8 {
        device.wait_line("LATE 3", Duration::from_secs(60));
    }
    bad_with(
        &edge,
        "u3/b0",
        "holding registers 100\u{2013}103 of unit 3: timed out after 300 ms",
    );

    // Answering in time again, unit 3 recovers.
    device.signal("USR1");
    let on_time = now_us();
    eventually("unit 3 to recover", Duration::from_secs(30), || {
        let l = edge.latest("u3/c1");
        (l["quality"] == "good" && l["ts"].as_i64()? > on_time).then_some(())
    });
    let to = now_us();

    // No point of any unit was ever stored as good with a value that is not its own
    // register's; the others had good values throughout, and unit 3 at least once it
    // recovered.
    for unit in 1..=3u8 {
        for (point, table, address) in BLOCK_POINTS {
            let key = format!("u{unit}/{point}");
            let (status, body) = edge.get(&format!(
                "/api/v1/points/{key}/history?resolution=raw&from={from}&to={to}&limit=100000"
            ));
            assert_eq!(status, 200, "{body}");
            let rows = body["rows"].as_array().unwrap();
            let good: Vec<&Value> = rows.iter().filter(|r| r["quality"] == "good").collect();
            let least = if unit == 3 { 1 } else { 5 };
            assert!(
                good.len() >= least,
                "{key} has only {} good samples",
                good.len()
            );
            for row in good {
                assert_eq!(
                    row["value"],
                    own_value(unit, table, address),
                    "{key} was stored as good with another register's value: {row}"
                );
            }
        }
    }
    // The late replies reached the edge and were thrown away.
    let discarded = edge.metric("smartpark_edge_modbus_rtu_frames_discarded_total")
        + edge.metric("smartpark_edge_modbus_rtu_bytes_discarded_total");
    assert!(discarded > 0.0, "no late reply was discarded");
    drop(edge);
    drop(device);
    socat.kill9();
}
