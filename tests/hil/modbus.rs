//! Modbus devices played by pymodbus, over TCP and over RTU on a socat pty pair.

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
    let l = bad_with(&edge, "quiet/voltage", "timeout");
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

#[test]
fn rtu_devices_share_a_serial_line_and_a_silent_unit_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
    let mut socat = Proc::spawn(
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
            .args([
                "--baud",
                "19200",
                "--unit",
                "1",
                "--unit",
                "2",
                "--silent-unit",
                "3",
            ]),
    );
    device.wait_line("READY", Duration::from_secs(30));
    let rtu = |id: &str, unit: u8| {
        format!(
            "[[device]]\nid = \"{id}\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 300\ntimeout_ms = 500\n\
             modbus_rtu = {{ port = \"{}\", baud = 19200, unit = {unit} }}\n\n",
            b.display()
        )
    };
    let edge = Edge::start(
        dir.path(),
        &(rtu("rtu1", 1) + &rtu("rtu2", 2) + &rtu("rtu3", 3)),
    );
    assert_eq!(good(&edge, "rtu1/voltage")["value"], 230.5);
    assert_eq!(good(&edge, "rtu2/signed16")["value"], -1234);
    bad_with(&edge, "rtu3/voltage", "timeout");

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
