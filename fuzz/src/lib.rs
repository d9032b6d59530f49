//! The bodies of the fuzz targets: one function per decoder that takes bytes from outside
//! a process. Each must return for any input, without panicking and within bounded memory
//! (libFuzzer stops at 2 GiB). `fuzz_targets/` wraps each for libFuzzer; `tests/replay.rs`
//! runs each on its committed crashers and seeds as an ordinary test.
//!
//! `scripts/fuzz SECONDS [TARGET...]` runs them (nightly toolchain, cargo-fuzz).

use std::path::Path;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("sync_message", sync_message),
    ("telemetry_batch", telemetry_batch),
    ("automerge_sync", automerge_sync),
    ("field_message", field_message),
    ("mqtt_payload", mqtt_payload),
    ("device_profile", device_profile),
    ("rule_file", rule_file),
];

/// A sync frame as the hub or an edge receives it: envelope, message, payload (events,
/// acknowledgements, config pushes, document messages, telemetry batches).
pub fn sync_message(data: &[u8]) {
    let _ = sync_protocol::Message::decode(data);
}

/// Columnar telemetry batches on their own (the raw and rollup streams' payloads).
pub fn telemetry_batch(data: &[u8]) {
    let _ = sync_protocol::RawBatch::decode(data);
    let _ = sync_protocol::RollupBatch::decode(data);
}

/// A document message's automerge sync message, as the hub takes it from an edge: what the
/// guard lets through is decoded and applied by automerge, which must then stay within
/// bounds too.
pub fn automerge_sync(data: &[u8]) {
    use automerge::sync::SyncDoc as _;
    if sync_protocol::docguard::check_sync_message(
        data,
        &sync_protocol::docguard::DocLimits::FROM_EDGE,
    )
    .is_err()
    {
        return;
    }
    let Ok(message) = automerge::sync::Message::decode(data) else {
        return;
    };
    // As the hub and the edges do: automerge's own panics on malformed changes are
    // contained, and the document they happened in is dropped.
    let _ = sync_protocol::docguard::contained(|| {
        let mut doc = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        if doc.receive_sync_message(&mut state, message).is_ok() {
            let _ = doc.generate_sync_message(&mut state);
        }
    });
}

/// Splits an input into an MQTT topic (up to the first newline) and a payload.
fn topic_and_payload(data: &[u8]) -> Option<(&str, &[u8])> {
    let at = data.iter().position(|&b| b == b'\n')?;
    let topic = std::str::from_utf8(&data[..at]).ok()?;
    Some((topic, &data[at + 1..]))
}

/// A door controller's, plate camera's or pay terminal's publish.
pub fn field_message(data: &[u8]) {
    if let Some((topic, payload)) = topic_and_payload(data) {
        let _ = edge_node::field::parse(topic, payload, 1_700_000_000_000_000);
    }
}

const SENSOR_PROFILE: &str = include_str!("../../firmware-configs/profiles/tasmota-am2301.toml");

/// An MQTT sensor's publish, mapped to samples by the Tasmota profile.
pub fn mqtt_payload(data: &[u8]) {
    thread_local! {
        static DEVICES: std::cell::RefCell<Option<device_drivers::mqtt::MqttDevices>> =
            const { std::cell::RefCell::new(None) };
    }
    let Some((topic, payload)) = topic_and_payload(data) else {
        return;
    };
    DEVICES.with(|d| {
        let mut d = d.borrow_mut();
        let devices = d.get_or_insert_with(sensor);
        let _ = devices.handle_publish(topic, payload, 1_700_000_000_000_000);
    });
}

fn sensor() -> device_drivers::mqtt::MqttDevices {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let profile =
        device_drivers::profile::Profile::parse(Path::new("tasmota-am2301.toml"), SENSOR_PROFILE)
            .expect("the committed profile parses");
    let profiles = BTreeMap::from([("tasmota-am2301".to_string(), Arc::new(profile))]);
    let config: device_drivers::device::DeviceConfig =
        toml::from_str("id = \"env\"\nprofile = \"tasmota-am2301\"\n[mqtt]\ntopic_id = \"tas1\"\n")
            .expect("the device entry parses");
    let spec = config
        .build(Path::new("site.toml"), "", "device[0]", &profiles)
        .expect("the device entry builds");
    device_drivers::mqtt::MqttDevices::new([&spec])
}

/// A device profile file.
pub fn device_profile(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = device_drivers::profile::Profile::parse(Path::new("fuzz.toml"), text);
    }
}

/// A rule file.
pub fn rule_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rules_engine::RuleSet::compile(text, "fuzz.toml");
    }
}

/// Inputs each target starts from: real examples of what it decodes.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use automerge::sync::SyncDoc as _;
    use automerge::transaction::Transactable as _;
    let mut out = Vec::new();
    let raw = sync_protocol::RawBatch {
        series: vec![sync_protocol::RawSeries {
            point: "meter/energy".into(),
            samples: (0..20)
                .map(|i| sync_protocol::RawSample {
                    ts: 1_700_000_000_000_000 + i * 1_000_000,
                    value: Some(sync_protocol::Value::Float(100.0 + i as f64)),
                    quality: sync_protocol::Quality::Good,
                })
                .collect(),
        }],
    };
    out.push(("telemetry_batch", "raw", raw.encode()));
    if let Ok(frame) = sync_protocol::Message::Raw(raw).encode(7) {
        out.push(("sync_message", "raw", frame));
    }
    if let Ok(frame) = sync_protocol::Message::Heartbeat.encode(1) {
        out.push(("sync_message", "heartbeat", frame));
    }
    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    if let Ok(map) = tx.put_object(automerge::ROOT, "credentials", automerge::ObjType::Map) {
        for i in 0..5 {
            let _ = tx.put(&map, format!("c-{i}"), "suspended");
        }
    }
    tx.commit();
    let mut state = automerge::sync::State::new();
    if let Some(m) = doc.generate_sync_message(&mut state) {
        out.push(("automerge_sync", "first", m.encode()));
    }
    out.push(("automerge_sync", "whole-document", {
        let mut m = automerge::sync::Message::decode(
            &automerge::Automerge::new()
                .generate_sync_message(&mut automerge::sync::State::new())
                .map(|m| m.encode())
                .unwrap_or_default(),
        )
        .ok();
        match m.as_mut() {
            Some(m) => {
                m.changes = doc.save().into();
                m.clone().encode()
            }
            None => Vec::new(),
        }
    }));
    out.push((
        "field_message",
        "door-read",
        b"door/lobby/read\n{\"type\":\"card\",\"value\":\"04A2B3C4\",\"reader\":\"in\",\"id\":\"r-1\"}".to_vec(),
    ));
    out.push((
        "field_message",
        "lpr",
        "lpr/gate-in/plate\n{\"plate\":\"沪A12345\",\"confidence\":0.93,\"direction\":\"in\"}"
            .as_bytes()
            .to_vec(),
    ));
    out.push((
        "field_message",
        "payment",
        b"lane/exit-1/payment\n{\"id\":\"pay-1\",\"session\":\"s-1\",\"amount_fen\":500,\"currency\":\"CNY\",\"method\":\"wechat\"}".to_vec(),
    ));
    out.push((
        "mqtt_payload",
        "sensor",
        b"tele/tas1/SENSOR\n{\"AM2301\":{\"Temperature\":22.5,\"Humidity\":41}}".to_vec(),
    ));
    out.push((
        "device_profile",
        "tasmota",
        SENSOR_PROFILE.as_bytes().to_vec(),
    ));
    out.push((
        "device_profile",
        "sdm630",
        include_bytes!("../../firmware-configs/profiles/eastron-sdm630.toml").to_vec(),
    ));
    out.push((
        "rule_file",
        "building-b1",
        include_bytes!("../../firmware-configs/rules/building-b1.toml").to_vec(),
    ));
    out
}
