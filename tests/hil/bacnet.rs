//! BACnet/IP devices played by bacpypes3 (`tests/hil/peers/bacnet_device.py`), read, written
//! and watched by the real binary.
//!
//! Each device has its own loopback address (127.0.0.4x) and a UDP port the OS had free;
//! the edge's BACnet port is `local_port = 0`, so nothing here needs 47808.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Edge, Proc, eventually, python, repo};

/// A bacpypes3 device; `restart` brings it back on the same address and port.
struct Device {
    proc: Proc,
    address: SocketAddrV4,
    instance: u32,
    extra: Vec<String>,
}

impl Device {
    fn start(ip: Ipv4Addr, instance: u32, extra: &[&str]) -> Device {
        let port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let address = SocketAddrV4::new(ip, port);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Device {
            proc: spawn(address, instance, &extra),
            address,
            instance,
            extra,
        }
    }

    /// Kills the device at once, as a power cut would.
    fn kill(&mut self) {
        self.proc.kill9();
    }

    fn restart(&mut self) {
        self.proc.kill9();
        self.proc = spawn(self.address, self.instance, &self.extra);
    }

    /// An edge `[[device]]` table for this device, on the edge's BACnet port `local_port = 0`.
    fn config(&self, id: &str, poll_ms: u64, timeout_ms: u64) -> String {
        format!(
            "[[device]]\nid = \"{id}\"\nprofile = \"hil-bacnet-device\"\npoll_interval_ms = {poll_ms}\n\
             timeout_ms = {timeout_ms}\nbacnet = {{ instance = {}, address = \"{}\", local_port = 0 }}\n\n",
            self.instance, self.address
        )
    }
}

fn spawn(address: SocketAddrV4, instance: u32, extra: &[String]) -> Proc {
    let mut proc = Proc::spawn(
        "bacpypes3 device",
        Command::new(python())
            .arg(repo().join("tests/hil/peers/bacnet_device.py"))
            .args(["--address", &address.ip().to_string()])
            .args(["--port", &address.port().to_string()])
            .args(["--instance", &instance.to_string()])
            .args(extra),
    );
    proc.wait_line("READY", Duration::from_secs(60));
    proc
}

/// Every point of `device` as `GET /api/v1/points` lists them, by point name.
fn points_of(edge: &Edge, device: &str) -> serde_json::Map<String, Value> {
    let (status, body) = edge.get(&format!("/api/v1/points?device={device}&limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["device"] == device)
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["latest"].clone()))
        .collect()
}

/// The device's points once every one of them is `quality`.
fn all_of_quality(edge: &Edge, device: &str, quality: &str) -> serde_json::Map<String, Value> {
    eventually(
        &format!("every point of {device} {quality}"),
        Duration::from_secs(60),
        || {
            let points = points_of(edge, device);
            (!points.is_empty() && points.values().all(|l| l["quality"] == quality))
                .then_some(points)
        },
    )
}

#[test]
fn a_bacpypes3_device_is_read_written_at_priority_8_and_pushes_its_changes() {
    // zone-temp and fan-status change every 0.2 s and are subscribed by COV. The device is
    // polled once an hour, so a change seen here was pushed, not polled.
    let mut device = Device::start(Ipv4Addr::new(127, 0, 0, 41), 4101, &["--tick", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &device.config("ahu", 3_600_000, 1000));

    let points = all_of_quality(&edge, "ahu", "good");
    assert_eq!(points.len(), 6, "{points:#?}");
    assert_eq!(points["outside_temp"]["value"], json!(8.25));
    assert_eq!(points["setpoint"]["value"], json!(22.0));
    assert_eq!(points["damper_mode"]["value"], json!(1));
    // The ticking objects: zone-temp moves by 0.5 between 18 and 30, fan-mode cycles 1 to 3.
    let zone = points["zone_temp"]["value"].as_f64().unwrap();
    assert!(
        (18.0..=30.0).contains(&zone) && (zone * 2.0).fract() == 0.0,
        "zone_temp {zone}"
    );
    let mode = points["fan_mode"]["value"].as_i64().unwrap();
    assert!((1..=3).contains(&mode), "fan_mode {mode}");
    assert!(points["fan_status"]["value"].is_boolean(), "{points:#?}");

    // Pushed changes.
    let first_zone = points["zone_temp"]["value"].clone();
    let first_fan = points["fan_status"]["value"].clone();
    eventually(
        "zone_temp and fan_status changes pushed by COV",
        Duration::from_secs(30),
        || {
            let (zone, fan) = (edge.latest("ahu/zone_temp"), edge.latest("ahu/fan_status"));
            (zone["quality"] == "good"
                && fan["quality"] == "good"
                && zone["value"] != first_zone
                && fan["value"] != first_fan)
                .then_some(())
        },
    );

    // A write to the commandable analog value goes at the profile's priority and is
    // verified by reading it back.
    let (status, body) = edge.post("/api/v1/points/ahu/setpoint/write", json!({"value": 24.5}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], json!(24.5));
    assert_eq!(body["verified"], true);
    let wrote = device
        .proc
        .wait_line("WROTE analog-value,1", Duration::from_secs(10));
    assert_eq!(wrote, "WROTE analog-value,1 present-value priority 8");
    // The stored value follows with the device's next report (a COV notification or the
    // next poll), which a busy machine may delay.
    eventually(
        "the written setpoint stored",
        Duration::from_secs(30),
        || {
            let l = edge.latest("ahu/setpoint");
            (l["value"] == json!(24.5) && l["quality"] == "good").then_some(())
        },
    );

    // Refused before the wire: out of the profile's range, or not writable.
    let (status, body) = edge.post("/api/v1/points/ahu/setpoint/write", json!({"value": 45}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "out_of_range");
    let (status, body) = edge.post("/api/v1/points/ahu/zone_temp/write", json!({"value": 1}));
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_bacnet_device_that_goes_away_goes_bad_and_recovers_when_it_returns() {
    let mut device = Device::start(Ipv4Addr::new(127, 0, 0, 42), 4201, &[]);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &device.config("vav", 300, 300));
    let points = all_of_quality(&edge, "vav", "good");
    assert_eq!(points["zone_temp"]["value"], json!(21.5));

    device.kill();
    // Every point goes bad without a value, the ones subscribed by COV too.
    let points = all_of_quality(&edge, "vav", "bad");
    for (name, l) in &points {
        assert!(l["value"].is_null(), "{name}: {l}");
        let reason = l["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("no answer"), "{name}: {l}");
    }
    let (_, d) = edge.get("/api/v1/devices/vav");
    assert_eq!(d["status"]["state"], "offline", "{d}");
    // Writes are refused while the device is away.
    let (status, body) = edge.post("/api/v1/points/vav/setpoint/write", json!({"value": 20}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "device_offline");

    device.restart();
    let points = all_of_quality(&edge, "vav", "good");
    assert_eq!(points["zone_temp"]["value"], json!(21.5));
    assert_eq!(points["fan_status"]["value"], json!(true));
    assert_eq!(points["setpoint"]["value"], json!(22.0));
    let (_, d) = edge.get("/api/v1/devices/vav");
    assert_eq!(d["status"]["state"], "online", "{d}");
}
