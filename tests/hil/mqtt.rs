//! MQTT devices through the edge's embedded broker, published by `mosquitto_pub`.

use std::time::Duration;

use crate::support::{Edge, eventually, mosquitto_pub};

const SENSOR: &str = r#"
[[device]]
id = "lobby"
profile = "tasmota-am2301"
mqtt = { topic_id = "tas-lobby" }

[[device]]
id = "lab"
profile = "tasmota-am2301"
mqtt = { topic_id = "tas-lab" }
"#;

fn reading(t: f64, h: f64) -> String {
    format!(
        r#"{{"Time":"2026-11-28T10:00:00","AM2301":{{"Temperature":{t},"Humidity":{h},"DewPoint":9.1}},"TempUnit":"C"}}"#
    )
}

#[test]
fn mosquitto_publishers_over_mqtt_3_and_5_become_stored_values() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), SENSOR);
    mosquitto_pub(
        edge.mqtt,
        &[
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            "tele/tas-lobby/SENSOR",
            "-m",
            &reading(21.5, 40.0),
        ],
    );
    mosquitto_pub(
        edge.mqtt,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "tele/tas-lab/SENSOR",
            "-m",
            &reading(19.25, 55.0),
        ],
    );
    let lobby = eventually("the lobby temperature", Duration::from_secs(10), || {
        let l = edge.latest("lobby/temperature");
        l.is_object().then_some(l)
    });
    assert_eq!(lobby["value"], 21.5);
    assert_eq!(lobby["quality"], "good");
    let lab = eventually("the lab humidity", Duration::from_secs(10), || {
        let l = edge.latest("lab/humidity");
        l.is_object().then_some(l)
    });
    assert_eq!(lab["value"], 55);
    let (_, devices) = edge.get("/api/v1/devices/lab");
    assert_eq!(devices["status"]["state"], "online");
    assert_eq!(edge.raw_count("lobby/temperature"), 1);
}

#[test]
fn malformed_payloads_are_counted_and_do_not_disturb_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), SENSOR);
    let bad: [&[u8]; 4] = [
        b"{not json",
        b"\xff\xfe\x00",
        br#"{"other":{"x":1}}"#,
        b"[1,2,3]",
    ];
    for (i, payload) in bad.into_iter().enumerate() {
        // Sent from a file, so that bytes that are not text reach the broker unchanged.
        let file = dir.path().join(format!("payload-{i}"));
        std::fs::write(&file, payload).unwrap();
        mosquitto_pub(
            edge.mqtt,
            &[
                "-q",
                "1",
                "-t",
                "tele/tas-lobby/SENSOR",
                "-f",
                file.to_str().unwrap(),
            ],
        );
    }
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "tele/tas-lobby/SENSOR",
            "-m",
            &reading(22.0, 41.0),
        ],
    );
    let latest = eventually(
        "a good value after the bad ones",
        Duration::from_secs(10),
        || {
            let l = edge.latest("lobby/temperature");
            (l["value"] == 22.0).then_some(l)
        },
    );
    assert_eq!(latest["quality"], "good");
    let refused = eventually(
        "the refused payloads counted",
        Duration::from_secs(10),
        || {
            let n = edge.metric("smartpark_edge_invalid_input_total{kind=\"mqtt_payload\"}");
            (n >= 4.0).then_some(n)
        },
    );
    assert_eq!(refused, 4.0);
    // A payload with some fields missing stores those points as bad, naming the field.
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "tele/tas-lobby/SENSOR",
            "-m",
            r#"{"AM2301":{"Temperature":23.0}}"#,
        ],
    );
    let humidity = eventually("humidity marked bad", Duration::from_secs(10), || {
        let l = edge.latest("lobby/humidity");
        (l["quality"] == "bad").then_some(l)
    });
    assert!(
        humidity["reason"]
            .as_str()
            .unwrap()
            .contains("/AM2301/Humidity"),
        "{humidity}"
    );
    assert!(humidity["value"].is_null());
    let (status, _) = edge.get("/ready");
    assert_eq!(status, 200);
}

#[test]
fn a_last_will_marks_the_device_offline() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), SENSOR);
    mosquitto_pub(
        edge.mqtt,
        &["-q", "1", "-r", "-t", "tele/tas-lobby/LWT", "-m", "Online"],
    );
    eventually("lobby online", Duration::from_secs(10), || {
        let (_, d) = edge.get("/api/v1/devices/lobby");
        (d["status"]["state"] == "online").then_some(())
    });
    // A client that dies without disconnecting (once it is surely connected: it has its
    // SUBACK): the broker publishes its last will.
    let sub = crate::support::MqttSub::start(
        edge.mqtt,
        &[
            "-k",
            "5",
            "--will-topic",
            "tele/tas-lobby/LWT",
            "--will-payload",
            "Offline",
            "--will-retain",
        ],
        &["x/none"],
    );
    drop(sub);
    let d = eventually(
        "lobby offline after its last will",
        Duration::from_secs(30),
        || {
            let (_, d) = edge.get("/api/v1/devices/lobby");
            (d["status"]["state"] == "offline").then_some(d)
        },
    );
    assert!(
        d["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("last will"),
        "{d}"
    );
}
