//! Rules and alarms at the edge: a pymodbus device whose registers a second Modbus master
//! changes while the edge polls it, the alarm API driven over HTTP, and the rule file
//! rewritten under a running node.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Edge, eventually, modbus_tcp_device, python};

/// Holding register 3 of the pymodbus device, read by the edge as `dev/mode` (103 at start).
const MODE_REGISTER: u16 = 3;

const MODE_HIGH: &str = r#"
[[rule]]
id = "mode-high"
severity = "P1"
points = "dev/mode"
threshold = { above = 500, deadband = 50 }
message = "{device}: mode {value}"
"#;

/// Writes the rule file next to the config and starts an edge with it and one pymodbus
/// device `dev` polled every 200 ms.
fn start(dir: &Path, rules: &str, addr: SocketAddr) -> Edge {
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    Edge::start(
        dir,
        &format!(
            "[rules]\nfile = \"rules.toml\"\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 200\ntimeout_ms = 500\n\
             modbus_tcp = {{ address = \"{addr}\", unit = 1 }}\n"
        ),
    )
}

/// Writes a holding register of the pymodbus device as another Modbus master on the same
/// device would (a controller, an engineer's tool); the edge sees it on its next poll.
fn write_register(addr: SocketAddr, register: u16, value: u16) {
    const SCRIPT: &str = "\
import sys
from pymodbus.client import ModbusTcpClient
client = ModbusTcpClient(sys.argv[1], port=int(sys.argv[2]))
assert client.connect(), 'cannot connect'
reply = client.write_register(int(sys.argv[3]), int(sys.argv[4]), device_id=1)
assert not reply.isError(), reply
client.close()
";
    let out = Command::new(python())
        .args(["-c", SCRIPT])
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            register.to_string(),
            value.to_string(),
        ])
        .output()
        .expect("cannot run the Modbus client");
    assert!(
        out.status.success(),
        "writing register {register} = {value} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the edge has read (and so evaluated) `value` from `key`.
fn polled(edge: &Edge, key: &str, value: Value) {
    eventually(
        &format!("{key} read as {value}"),
        Duration::from_secs(20),
        || (edge.latest(key)["value"] == value).then_some(()),
    );
}

fn alarms(edge: &Edge, query: &str) -> Vec<Value> {
    let (status, body) = edge.get(&format!("/api/v1/alarms{query}"));
    assert_eq!(status, 200, "GET /api/v1/alarms{query}: {body}");
    body["alarms"].as_array().unwrap().clone()
}

fn alarm(edge: &Edge, id: &str) -> Value {
    let (status, body) = edge.get(&format!("/api/v1/alarms/{id}"));
    assert_eq!(status, 200, "GET alarm {id}: {body}");
    body
}

/// The only alarm of `rule` in the default listing, once there is one.
fn the_alarm_of(edge: &Edge, rule: &str) -> Value {
    eventually(
        &format!("an alarm of {rule}"),
        Duration::from_secs(20),
        || {
            let list = alarms(edge, &format!("?rule={rule}"));
            assert!(list.len() <= 1, "more than one alarm of {rule}: {list:?}");
            list.into_iter().next()
        },
    )
}

/// The stored alarm events (`alarm.raised`, ...) of one alarm, oldest first.
fn events_of(edge: &Edge, alarm_id: &str) -> Vec<Value> {
    let (status, body) = edge.get("/api/v1/events?kind=alarm&limit=10000");
    assert_eq!(status, 200, "{body}");
    let mut events: Vec<Value> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["body"]["alarm"]
                .as_u64()
                .map(|a| a.to_string())
                .as_deref()
                == Some(alarm_id)
        })
        .cloned()
        .collect();
    events.reverse();
    events
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

/// Raises `mode-high` by writing 600 to the mode register and acknowledges it; returns its
/// id.
fn raise_and_acknowledge(edge: &Edge, addr: SocketAddr) -> String {
    write_register(addr, MODE_REGISTER, 600);
    let a = the_alarm_of(edge, "mode-high");
    assert_eq!(a["state"], "active_unacked", "{a}");
    assert_eq!(a["source"], "dev/mode");
    assert_eq!(a["severity"], "P1");
    assert_eq!(a["message"], "dev: mode 600", "{a}");
    let id = a["id"].as_str().expect("alarm ids are strings").to_string();

    let (status, body) = edge.post(
        &format!("/api/v1/alarms/{id}/acknowledge"),
        json!({"comment": "checking the AHU"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "active_acked", "{body}");
    assert!(
        body["ack"]["by"]
            .as_str()
            .unwrap()
            .starts_with(crate::support::ADMIN),
        "{body}"
    );
    assert_eq!(body["ack"]["comment"], "checking the AHU");
    id
}

#[test]
fn a_threshold_alarm_is_raised_acknowledged_over_the_api_and_cleared() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path(), MODE_HIGH, addr);
    polled(&edge, "dev/mode", json!(103));
    assert!(alarms(&edge, "").is_empty(), "no alarm below the threshold");

    let id = raise_and_acknowledge(&edge, addr);
    let events = eventually("the alarm.raised event", Duration::from_secs(10), || {
        let events = events_of(&edge, &id);
        (kinds(&events) == ["alarm.raised", "alarm.acknowledged"]).then_some(events)
    });
    assert_eq!(events[0]["subject"], "dev/mode");
    assert_eq!(events[0]["body"]["rule"], "mode-high");
    assert_eq!(events[0]["body"]["to"], "active_unacked");
    assert!(
        events[1]["body"]["who"]
            .as_str()
            .unwrap()
            .starts_with(crate::support::ADMIN)
    );

    // Acknowledging again is accepted and changes nothing: no second event.
    let (status, body) = edge.post(&format!("/api/v1/alarms/{id}/acknowledge"), json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["ack"]["by"]
            .as_str()
            .unwrap()
            .starts_with(crate::support::ADMIN),
        "{body}"
    );
    let (_, audit) = edge.get("/api/v1/audit");
    let acks: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alarm_acknowledge" && e["target"] == id.as_str())
        .collect();
    assert_eq!(acks.len(), 2, "both acknowledgements are audited: {audit}");
    assert!(acks.iter().all(|e| e["outcome"] == "ok"), "{acks:?}");
    assert!(
        acks.iter().any(|e| e["actor"]
            .as_str()
            .unwrap_or("")
            .starts_with(crate::support::ADMIN)),
        "{acks:?}"
    );

    let (status, body) = edge.post(
        &format!("/api/v1/alarms/{id}/comment"),
        json!({"text": "fan belt replaced"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["comments"][0]["text"], "fan belt replaced", "{body}");

    // Back under the threshold but within the deadband: still active.
    write_register(addr, MODE_REGISTER, 480);
    polled(&edge, "dev/mode", json!(480));
    assert_eq!(alarm(&edge, &id)["state"], "active_acked");

    // Below the threshold minus the deadband: cleared, and since it was acknowledged, over.
    write_register(addr, MODE_REGISTER, 400);
    let cleared = eventually("the alarm to clear", Duration::from_secs(20), || {
        let a = alarm(&edge, &id);
        (a["state"] == "normal").then_some(a)
    });
    assert!(
        cleared["ack"]["by"]
            .as_str()
            .unwrap()
            .starts_with(crate::support::ADMIN),
        "{cleared}"
    );
    assert!(
        alarms(&edge, "").is_empty(),
        "a cleared alarm is not listed"
    );
    let normal = alarms(&edge, "?state=normal&rule=mode-high");
    assert_eq!(normal.len(), 1, "{normal:?}");
    assert_eq!(normal[0]["id"], id.as_str());
    eventually("the alarm.cleared event", Duration::from_secs(10), || {
        let events = events_of(&edge, &id);
        let expected = [
            "alarm.raised",
            "alarm.acknowledged",
            "alarm.commented",
            "alarm.cleared",
        ];
        (kinds(&events) == expected).then_some(())
    });
}

#[test]
fn an_acknowledged_alarm_survives_an_edge_restart_without_a_duplicate() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(dir.path(), MODE_HIGH, addr);
    polled(&edge, "dev/mode", json!(103));
    let id = raise_and_acknowledge(&edge, addr);

    // The acknowledgement was answered once stored: a kill right after it loses nothing.
    edge.proc.kill9();
    let restarted_at = now_us();
    let edge = Edge::start_with(edge.config.clone());
    // A sample read after the restart has been evaluated against the restored alarm.
    eventually(
        "a sample of dev/mode read after the restart",
        Duration::from_secs(20),
        || {
            let l = edge.latest("dev/mode");
            (l["ts"].as_i64()? > restarted_at && l["value"] == 600).then_some(())
        },
    );
    let all = alarms(&edge, "?include_folded=true");
    assert_eq!(all.len(), 1, "one alarm per (source, rule): {all:?}");
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["state"], "active_acked", "{}", all[0]);
    assert!(
        all[0]["ack"]["by"]
            .as_str()
            .unwrap()
            .starts_with(crate::support::ADMIN)
    );
    assert_eq!(all[0]["activations"], 1, "{}", all[0]);
    assert_eq!(
        kinds(&events_of(&edge, &id)),
        ["alarm.raised", "alarm.acknowledged"],
        "the restart raised nothing again"
    );

    // The restored alarm clears from new data.
    write_register(addr, MODE_REGISTER, 400);
    eventually(
        "the restored alarm to clear",
        Duration::from_secs(20),
        || (alarm(&edge, &id)["state"] == "normal").then_some(()),
    );
}

#[test]
fn a_storm_from_one_failing_device_stays_one_summarised_alarm() {
    let (device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    // Two rules on every point of the device: a silent device raises 24 alarms, far more
    // than the three that start a storm.
    let rules = r#"
[storm]
window_s = 60
per_device = 3
quiet_s = 2

[[rule]]
id = "dev-bad"
severity = "P2"
points = "dev/*"
quality = ["bad"]

[[rule]]
id = "dev-comm-lost"
severity = "P1"
points = "dev/*"
any = [{ quality = ["bad"] }, { stale = { after_s = 30 } }]
"#;
    let edge = start(dir.path(), rules, addr);
    polled(&edge, "dev/mode", json!(103));
    let (_, rules_status) = edge.get("/api/v1/rules");
    let instances = rules_status["instances"].as_u64().unwrap();
    assert_eq!(instances, 24, "two rules on twelve points: {rules_status}");
    assert!(alarms(&edge, "").is_empty());

    device.signal("STOP");
    let all = eventually(
        "every point's alarms raised and folded",
        Duration::from_secs(30),
        || {
            let all = alarms(&edge, "?include_folded=true");
            (all.len() as u64 == instances + 1).then_some(all)
        },
    );
    let listed = alarms(&edge, "");
    assert_eq!(listed.len(), 1, "one summary, not 24 alarms: {listed:?}");
    let summary = &listed[0];
    let summary_id = summary["id"].as_str().unwrap().to_string();
    assert_eq!(summary["rule"], "@storm", "{summary}");
    assert_eq!(summary["source"], "dev");
    assert_eq!(summary["state"], "active_unacked");
    assert_eq!(summary["severity"], "P1", "the highest folded severity");
    assert_eq!(summary["storm"]["device"], "dev");
    assert_eq!(summary["storm"]["folded"], instances, "{summary}");
    let members: Vec<&Value> = all.iter().filter(|a| a["rule"] != "@storm").collect();
    assert_eq!(members.len() as u64, instances);
    for m in &members {
        assert_eq!(m["state"], "active_unacked", "{m}");
        assert_eq!(
            m["suppressed_by"].as_u64().map(|s| s.to_string()),
            Some(summary_id.clone()),
            "{m}"
        );
    }
    assert_eq!(
        alarms(&edge, "?rule=dev-bad").len(),
        0,
        "folded alarms are not listed by default, even by rule"
    );

    // One acknowledgement for the storm acknowledges everything folded into it.
    let (status, body) = edge.post(
        &format!("/api/v1/alarms/{summary_id}/acknowledge"),
        json!({"comment": "device dev is down"}),
    );
    assert_eq!(status, 200, "{body}");
    let all = alarms(&edge, "?include_folded=true");
    assert!(all.iter().all(|a| a["state"] == "active_acked"), "{all:?}");

    // The device answers again: its alarms clear, the storm ends and nothing is left.
    device.signal("CONT");
    eventually(
        "the storm to end once the device answers",
        Duration::from_secs(60),
        || {
            alarms(&edge, "?include_folded=true")
                .is_empty()
                .then_some(())
        },
    );
    assert_eq!(alarm(&edge, &summary_id)["state"], "normal");
}

#[test]
fn a_bad_rule_file_is_refused_and_the_running_rules_keep_raising() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    let edge = start(dir.path(), MODE_HIGH, addr);
    polled(&edge, "dev/mode", json!(103));
    let rules_status = |edge: &Edge| {
        let (status, body) = edge.get("/api/v1/rules");
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(rules_status(&edge)["status"]["rules"], 1);

    // The second rule has a negative deadband.
    let broken = format!(
        "{MODE_HIGH}
[[rule]]
id = \"voltage-low\"
severity = \"P2\"
points = \"dev/voltage\"
threshold = {{ below = 300, deadband = -1 }}
"
    );
    let line = 1 + broken
        .lines()
        .position(|l| l.contains("deadband = -1"))
        .unwrap();
    std::fs::write(&file, &broken).unwrap();
    let (status, body) = edge.post("/api/v1/rules/reload", json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "rules_refused");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("rules.toml:{line}:"))
            && message.contains("rule \"voltage-low\"")
            && message.contains("threshold.deadband"),
        "the error names file, line, rule and key: {message}"
    );
    let status = rules_status(&edge);
    assert_eq!(
        status["status"]["rules"], 1,
        "the running rules stay: {status}"
    );
    assert_eq!(status["status"]["last_error"], message);

    // The running rule still raises.
    write_register(addr, MODE_REGISTER, 600);
    assert_eq!(the_alarm_of(&edge, "mode-high")["state"], "active_unacked");
    assert!(alarms(&edge, "?rule=voltage-low").is_empty());

    // The fixed file is taken by the reload endpoint; its new rule raises at once
    // (230.5 V is below 300).
    std::fs::write(&file, broken.replace("deadband = -1", "deadband = 5")).unwrap();
    let (status, body) = edge.post("/api/v1/rules/reload", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], 2);
    let status = rules_status(&edge);
    assert!(status["status"]["last_error"].is_null(), "{status}");
    assert_eq!(the_alarm_of(&edge, "voltage-low")["source"], "dev/voltage");
    assert_eq!(
        the_alarm_of(&edge, "mode-high")["activations"],
        1,
        "an alarm of a rule that stayed is kept as it was"
    );

    // The file watch takes a change without the endpoint: first a bad one, refused...
    let refused_before = rules_status(&edge)["status"]["refused_total"]
        .as_u64()
        .unwrap();
    std::fs::write(&file, "[[rule]]\nid = \"x\"\nseverity = \"P9\"\n").unwrap();
    eventually(
        "the watch to refuse the bad file",
        Duration::from_secs(20),
        || {
            let s = rules_status(&edge);
            (s["status"]["refused_total"].as_u64()? > refused_before).then_some(s)
        },
    );
    assert_eq!(rules_status(&edge)["status"]["rules"], 2);
    // ...then a good one with a third rule, picked up and evaluated.
    let three = format!(
        "{}
[[rule]]
id = \"temperature-cold\"
severity = \"P2\"
points = \"dev/temperature\"
threshold = {{ below = -30 }}
",
        broken.replace("deadband = -1", "deadband = 5")
    );
    std::fs::write(&file, three).unwrap();
    eventually(
        "the watch to load three rules",
        Duration::from_secs(20),
        || (rules_status(&edge)["status"]["rules"] == 3).then_some(()),
    );
    assert_eq!(
        the_alarm_of(&edge, "temperature-cold")["source"],
        "dev/temperature",
        "-40.25 °C is below -30"
    );
}

/// A webhook receiver: answers `503` to the first request and `204` to the rest, and hands
/// every request body to the test.
fn webhook_receiver() -> (SocketAddr, std::sync::mpsc::Receiver<(u16, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 { 503 } else { 204 };
            let reason = if n == 0 {
                "Service Unavailable"
            } else {
                "No Content"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if tx
                .send((status, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn a_raised_alarm_writes_a_point_publishes_a_command_and_posts_a_webhook_until_it_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (_device, addr) = modbus_tcp_device();
    let (hook, requests) = webhook_receiver();
    let rules = format!(
        "{MODE_HIGH}
[[rule.action]]
write = {{ point = \"{{device}}/setpoint\", value = 21.5 }}

[[rule.action]]
mqtt = {{ topic = \"site/alarms/{{device}}\", json = {{ alarm = \"{{alarm}}\", state = \"{{state}}\" }} }}

[[rule.action]]
webhook = {{ url = \"http://{hook}/hook\" }}
"
    );
    let edge = start(dir.path(), &rules, addr);
    polled(&edge, "dev/mode", json!(103));
    let sub = crate::support::MqttSub::start(edge.mqtt, &[], &["site/alarms/#"]);

    write_register(addr, MODE_REGISTER, 600);
    let a = the_alarm_of(&edge, "mode-high");
    let id = a["id"].as_str().unwrap().to_string();

    // The point write went to the device, verified, and was audited as the rule's.
    polled(&edge, "dev/setpoint", json!(21.5));
    let audited = eventually(
        "the rule's write in the audit log",
        Duration::from_secs(20),
        || {
            let (_, audit) = edge.get("/api/v1/audit");
            audit["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["actor"] == "rule:mode-high" && e["target"] == "dev/setpoint")
                .cloned()
        },
    );
    assert_eq!(audited["outcome"], "ok", "{audited}");

    // The MQTT command reached a subscriber through the building's broker.
    let line = eventually("the rule's MQTT command", Duration::from_secs(60), || {
        sub.messages().into_iter().next()
    });
    let (topic, payload) = line.split_once(' ').expect("topic and payload");
    assert_eq!(topic, "site/alarms/dev");
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["alarm"], id.as_str());
    assert_eq!(payload["state"], "active_unacked");

    // The webhook was refused once, kept in the outbox, and posted again until taken.
    let (first, body) = requests.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first, 503);
    let (second, again) = requests.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(second, 204);
    assert_eq!(body, again, "the same webhook is retried");
    let posted: Value = serde_json::from_str(&body).unwrap();
    assert!(posted.to_string().contains(&id), "{posted}");
    eventually("the delivery counted", Duration::from_secs(10), || {
        (edge.metric("smartpark_edge_webhooks_delivered_total") == 1.0).then_some(())
    });
    assert!(edge.metric("smartpark_edge_webhook_failures_total") >= 1.0);
    assert!(
        requests.recv_timeout(Duration::from_secs(3)).is_err(),
        "a webhook that was taken is not posted again"
    );
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}
