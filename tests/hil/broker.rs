//! The building's broker as an attacker on the LAN meets it: Mosquitto clients with no
//! account, with a wrong password, with one door controller's account trying to speak for
//! another door or listen to it, taking the edge's client id, and flooding telemetry; the
//! broker itself killed. Doors must keep deciding through all of it.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{Edge, MqttSub as Sub, eventually, http, mosquitto_pub, smartpark};

/// A device account made with `smartpark mqtt-credential`: its username, the password the
/// device is given, and the hash for the edge config.
struct Account {
    user: String,
    password: String,
    hash: String,
}

fn account(user: &str) -> Account {
    let (ok, out) = smartpark(&["mqtt-credential", user], "");
    assert!(ok, "mqtt-credential: {out}");
    let password = out
        .split("with the password ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password in {out:?}"))
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no hash in {out:?}"))
        .to_string();
    Account {
        user: user.into(),
        password,
        hash,
    }
}

/// The building of `park::seed` (door `d1`, card `CARD-1`) with two accounts for `d1`'s
/// controller (its reader and its lock connect separately, and a client id is its account's
/// name, so each connection needs its own), one for a door `d2`, and a sensor's account; no
/// anonymous clients.
struct Building {
    edge: Edge,
    d1: Account,
    d1_lock: Account,
    d2: Account,
    sensor: Account,
    _dir: tempfile::TempDir,
}

fn building() -> Building {
    building_with("")
}

/// [`building`] with `more` in its `[mqtt]` table.
fn building_with(more: &str) -> Building {
    let dir = tempfile::tempdir().unwrap();
    crate::park::seed(&dir.path().join("seed"));
    let (d1, d1_lock, d2, sensor) = (
        account("ctl-d1"),
        account("ctl-d1-lock"),
        account("ctl-d2"),
        account("tas-lobby"),
    );
    let entry = |a: &Account, what: &str| {
        format!(
            "[[mqtt.client]]\nusername = \"{}\"\npassword_hash = \"{}\"\n{what}\n\n",
            a.user, a.hash
        )
    };
    let mqtt = more.to_string()
        + &entry(&d1, "doors = [\"d1\"]")
        + &entry(&d1_lock, "doors = [\"d1\"]")
        + &entry(&d2, "doors = [\"d2\"]")
        + &entry(&sensor, "device = \"lobby\"");
    let devices = format!(
        "[business]\nseed_dir = \"{}\"\n\n[[device]]\nid = \"lobby\"\nprofile = \"tasmota-am2301\"\n\
         mqtt = {{ topic_id = \"tas-lobby\" }}\n",
        dir.path().join("seed").display()
    );
    let edge = Edge::start_with_mqtt(dir.path(), &mqtt, &devices);
    Building {
        edge,
        d1,
        d1_lock,
        d2,
        sensor,
        _dir: dir,
    }
}

fn login(a: &Account) -> [&str; 4] {
    ["-u", &a.user, "-P", &a.password]
}

/// A read of `card` at `door` with a read id, published with `args` (an account).
fn read(edge: &Edge, args: &[&str], door: &str, card: &str, id: &str) {
    let payload = json!({"type": "card", "value": card, "reader": "in", "id": id}).to_string();
    let topic = format!("door/{door}/read");
    let mut all = args.to_vec();
    all.extend(["-q", "1", "-t", &topic, "-m", &payload]);
    mosquitto_pub(edge.mqtt, &all);
}

/// Runs a Mosquitto client that the broker is expected to refuse; returns its exit status
/// and what it printed.
fn refused(program: &str, broker: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(program)
        .args([
            "-h",
            &broker.ip().to_string(),
            "-p",
            &broker.port().to_string(),
        ])
        .args(args)
        .output()
        .expect(program);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn access_events(edge: &Edge) -> Vec<serde_json::Value> {
    let (_, body) = edge.get("/api/v1/events?kind=access&limit=1000");
    body["events"].as_array().unwrap().clone()
}

#[test]
fn clients_without_an_account_or_with_a_wrong_password_are_refused_and_counted() {
    let b = building();
    let broker = b.edge.mqtt;
    let (code, said) = refused("mosquitto_sub", broker, &["-t", "#", "-C", "1", "-W", "5"]);
    assert_ne!(code, Some(0), "an anonymous subscriber got in: {said}");
    assert!(said.contains("not authorised"), "{said}");
    let (code, said) = refused(
        "mosquitto_pub",
        broker,
        &[
            "-u",
            "ctl-d1",
            "-P",
            "not-the-password",
            "-t",
            "door/d1/read",
            "-m",
            "{}",
        ],
    );
    assert_ne!(code, Some(0), "a wrong password got in: {said}");
    eventually("both refusals counted", Duration::from_secs(10), || {
        (b.edge
            .metric("smartpark_edge_mqtt_refused_connections_total")
            >= 2.0)
            .then_some(())
    });
    assert!(access_events(&b.edge).is_empty());
}

#[test]
fn a_door_controller_can_neither_speak_for_another_door_nor_hear_its_commands() {
    let b = building();
    let broker = b.edge.mqtt;
    // The controller of d2 listens to everything it can name, d1's commands above all.
    let spy = Sub::start(
        broker,
        &login(&b.d2),
        &["#", "door/d1/command", "door/+/read"],
    );
    let d1 = Sub::start(broker, &login(&b.d1_lock), &["door/d1/command"]);

    // It presents a valid card at d1 in d1's name, and a card at its own door.
    read(&b.edge, &login(&b.d2), "d1", "CARD-1", "forged-1");
    // The sensor tries to command a door.
    mosquitto_pub(
        broker,
        &[
            "-u",
            &b.sensor.user,
            "-P",
            &b.sensor.password,
            "-q",
            "1",
            "-t",
            "door/d1/command",
            "-m",
            r#"{"command":"unlock","duration_ms":60000,"decision":"x"}"#,
        ],
    );
    // The real controller of d1 presents the same card.
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "real-1");
    let got = eventually("d1's unlock", Duration::from_secs(20), || {
        let m = d1.messages();
        (!m.is_empty()).then_some(m)
    });
    // Only the real read was decided and answered, and only d1's controller heard it.
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains(r#""read":"real-1""#), "{got:?}");
    assert!(got[0].contains("unlock"), "{got:?}");
    let events = access_events(&b.edge);
    assert_eq!(events.len(), 1, "only the real read is decided: {events:?}");
    // Give the broker every chance to deliver what it should not: a second real read must
    // reach d1 before we look at the spy again.
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "real-2");
    eventually("the second unlock", Duration::from_secs(20), || {
        (d1.messages().len() == 2).then_some(())
    });
    let heard = spy.messages();
    assert!(heard.is_empty(), "d2's controller heard {heard:?}");
}

#[test]
fn a_client_taking_the_edges_client_id_is_refused_and_doors_keep_working() {
    let b = building();
    let broker = b.edge.mqtt;
    let d1 = Sub::start(broker, &login(&b.d1_lock), &["door/d1/command"]);
    // Without an account: refused outright.
    let (code, said) = refused(
        "mosquitto_sub",
        broker,
        &["-i", "smartpark-edge", "-t", "#", "-C", "1", "-W", "5"],
    );
    assert_ne!(code, Some(0), "{said}");
    // With a device's account the client id is the account's name, whatever it asks for:
    // the edge's session is never taken over.
    for id in ["smartpark-edge", "smartpark-edge-field", "ctl-d1"] {
        let (code, said) = refused(
            "mosquitto_pub",
            broker,
            &[
                "-i",
                id,
                "-u",
                &b.d2.user,
                "-P",
                &b.d2.password,
                "-t",
                "door/d2/state",
                "-m",
                r#"{"state":"closed"}"#,
            ],
        );
        assert_eq!(code, Some(0), "{said}");
    }
    // The real d1 controller's subscription is still there (its client id was not taken),
    // the node's links never dropped, and the door still opens.
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "after-takeover");
    eventually(
        "the unlock after the attempts",
        Duration::from_secs(20),
        || {
            d1.messages()
                .iter()
                .any(|m| m.contains("after-takeover"))
                .then_some(())
        },
    );
    assert_eq!(
        b.edge.metric("smartpark_edge_mqtt_link_reconnects_total"),
        0.0
    );
    let (status, body) = http("GET", &format!("{}/ready", b.edge.api), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_flood_of_telemetry_from_one_device_leaves_every_door_read_answered() {
    let b = building();
    let broker = b.edge.mqtt;
    let d1 = Sub::start(broker, &login(&b.d1_lock), &["door/d1/command"]);
    let committed_before = b.edge.metric("smartpark_edge_samples_committed_total");
    // 10,000 publishes from the sensor's account as fast as one connection sends them.
    let mut flood = Command::new("mosquitto_pub")
        .args([
            "-h",
            &broker.ip().to_string(),
            "-p",
            &broker.port().to_string(),
        ])
        .args(["-u", &b.sensor.user, "-P", &b.sensor.password])
        .args(["-q", "0", "-t", "tele/tas-lobby/SENSOR", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    let mut stdin = flood.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..10_000 {
            let line = format!(
                r#"{{"AM2301":{{"Temperature":{}.5,"Humidity":40.0,"DewPoint":9.1}}}}"#,
                20 + i % 5
            );
            writeln!(stdin, "{line}").unwrap();
        }
    });
    // Door reads while the flood goes on.
    for i in 0..40 {
        read(
            &b.edge,
            &login(&b.d1),
            "d1",
            "CARD-1",
            &format!("during-{i}"),
        );
    }
    writer.join().unwrap();
    assert!(flood.wait().unwrap().success());
    let got = eventually("40 answers", Duration::from_secs(60), || {
        let m = d1.messages();
        (m.len() >= 40).then_some(m)
    });
    for i in 0..40 {
        let id = format!(r#""read":"during-{i}""#);
        assert!(got.iter().any(|m| m.contains(&id)), "read {i} unanswered");
    }
    // Commits went on: the sensor's samples are stored.
    eventually(
        "the flood's samples committed",
        Duration::from_secs(60),
        || {
            (b.edge.metric("smartpark_edge_samples_committed_total") > committed_before + 1000.0)
                .then_some(())
        },
    );
    let (status, _) = http("GET", &format!("{}/ready", b.edge.api), None);
    assert_eq!(status, 200);
}

#[test]
fn a_killed_broker_is_started_again_counted_and_doors_work_again() {
    let b = building();
    let pid_file = b
        .edge
        .config
        .parent()
        .unwrap()
        .join("data/broker/mosquitto.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the restart counted", Duration::from_secs(20), || {
        (b.edge.metric("smartpark_edge_mqtt_broker_restarts_total") >= 1.0).then_some(())
    });
    eventually("ready again", Duration::from_secs(20), || {
        let (status, _) = http("GET", &format!("{}/ready", b.edge.api), None);
        (status == 200).then_some(())
    });
    assert!(b.edge.metric("smartpark_edge_mqtt_link_reconnects_total") >= 1.0);
    let d1 = Sub::start(b.edge.mqtt, &login(&b.d1_lock), &["door/d1/command"]);
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "after-restart");
    eventually(
        "the unlock after the restart",
        Duration::from_secs(20),
        || {
            d1.messages()
                .iter()
                .any(|m| m.contains("after-restart"))
                .then_some(())
        },
    );
}

#[test]
fn mqtt_3_and_5_as_field_devices_speak_it() {
    // Accounts for the doors, and anonymous clients too (a lab), for the MQTT 5 features
    // between two clients of one topic.
    let b = building_with("allow_anonymous = true\n");
    let out = Command::new(crate::support::python())
        .arg(crate::support::repo().join("tests/hil/peers/mqtt_conformance.py"))
        .args([b.edge.mqtt.ip().to_string(), b.edge.mqtt.port().to_string()])
        .env("DOOR_USER", &b.d1.user)
        .env("DOOR_PASSWORD", &b.d1.password)
        .env("LOCK_USER", &b.d1_lock.user)
        .env("LOCK_PASSWORD", &b.d1_lock.password)
        .env("CARD", "CARD-1")
        .env("TELEMETRY", "tele/tas-lobby/SENSOR")
        .output()
        .expect("python");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("\nok ").count() + usize::from(said.starts_with("ok ")),
        10,
        "{said}"
    );
}

#[test]
fn ready_says_the_broker_is_down_while_it_cannot_be_started_again() {
    // The broker's program is a script that refuses to start while a file exists.
    let scripts = tempfile::tempdir().unwrap();
    let hold = scripts.path().join("hold");
    let wrapper = scripts.path().join("mosquitto");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'held for the test' >&2; exit 1; fi\n\
             PATH=\"$PATH:/usr/sbin\" exec mosquitto \"$@\"\n",
            hold.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    let b = building_with(&format!("mosquitto = \"{}\"\n", wrapper.display()));
    let ready = || http("GET", &format!("{}/ready", b.edge.api), None);
    assert_eq!(ready().0, 200);

    std::fs::write(&hold, "").unwrap();
    let pid_file = b
        .edge
        .config
        .parent()
        .unwrap()
        .join("data/broker/mosquitto.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let (_, body) = eventually("/ready refuses", Duration::from_secs(20), || {
        let (status, body) = ready();
        (status == 503).then_some((status, body))
    });
    assert!(body.to_string().contains("broker"), "{body}");
    // Still down a while later: the restarts fail, and are counted.
    eventually("failed restarts counted", Duration::from_secs(20), || {
        (b.edge.metric("smartpark_edge_mqtt_broker_restarts_total") >= 2.0).then_some(())
    });
    assert_eq!(ready().0, 503);

    std::fs::remove_file(&hold).unwrap();
    eventually("ready again", Duration::from_secs(30), || {
        (ready().0 == 200).then_some(())
    });
    let d1 = Sub::start(b.edge.mqtt, &login(&b.d1_lock), &["door/d1/command"]);
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "back");
    eventually(
        "the unlock once the broker is back",
        Duration::from_secs(20),
        || {
            d1.messages()
                .iter()
                .any(|m| m.contains(r#""read":"back""#))
                .then_some(())
        },
    );
}

#[test]
fn a_device_with_a_certificate_from_the_operator_ca_is_its_account_in_its_building_only() {
    let certs = tempfile::tempdir().unwrap();
    let path = |name: &str| certs.path().join(name).display().to_string();
    // The operator CA, and another CA nobody here trusts.
    let ca = sync_protocol::transport::OperatorCa::create("hil operator").unwrap();
    ca.save(
        certs.path().join("ca-cert.pem").as_path(),
        certs.path().join("ca-key.pem").as_path(),
    )
    .unwrap();
    let stranger = sync_protocol::transport::OperatorCa::create("stranger").unwrap();
    stranger
        .save(
            certs.path().join("stranger-cert.pem").as_path(),
            certs.path().join("stranger-key.pem").as_path(),
        )
        .unwrap();
    // The listener's own certificate.
    sync_protocol::transport::CertifiedKeyPem::load_or_create_self_signed(
        &certs.path().join("server-cert.pem"),
        &certs.path().join("server-key.pem"),
        &["127.0.0.1".to_string(), "localhost".to_string()],
        30,
    )
    .unwrap();
    let issue = |ca: &str, building: &str, out: &str| {
        let (ok, said) = smartpark(
            &[
                "device-cert",
                "--ca-cert",
                &path(&format!("{ca}-cert.pem")),
                "--ca-key",
                &path(&format!("{ca}-key.pem")),
                "--park",
                "hil",
                "--building",
                building,
                "--device",
                "ctl-d1-lock",
                "--out",
                &path(out),
            ],
            "",
        );
        assert!(ok, "device-cert: {said}");
    };
    issue("ca", "b1", "mine");
    issue("ca", "b2", "elsewhere");
    issue("stranger", "b1", "forged");

    let b = building_with(&format!(
        "listen_tls = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
        path("server-cert.pem"),
        path("server-key.pem"),
        path("ca-cert.pem")
    ));
    let tls = b.edge.mqtt_tls.expect("the edge prints its TLS listener");
    let with_cert = |dir: &str| {
        vec![
            "--cafile".to_string(),
            path("server-cert.pem"),
            "--cert".to_string(),
            path(&format!("{dir}/ctl-d1-lock-cert.pem")),
            "--key".to_string(),
            path(&format!("{dir}/ctl-d1-lock-key.pem")),
        ]
    };
    let (mine, other, mut forged) = (
        with_cert("mine"),
        with_cert("elsewhere"),
        with_cert("forged"),
    );
    let lock = Sub::start(tls, &refs(&mine), &["door/d1/command"]);
    let elsewhere = Sub::start(tls, &refs(&other), &["door/d1/command", "#"]);

    // A certificate from another CA does not get in at all.
    forged.extend(["-t", "#", "-C", "1", "-W", "5"].map(String::from));
    let (code, said) = refused("mosquitto_sub", tls, &refs(&forged));
    assert_ne!(code, Some(0), "a stranger's certificate got in: {said}");

    // The lock with its certificate gets the unlock for a read from the reader's account.
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "over-tls");
    eventually("the unlock over TLS", Duration::from_secs(20), || {
        lock.messages()
            .iter()
            .any(|m| m.contains(r#""read":"over-tls""#))
            .then_some(())
    });
    // A certificate for the same device in another building is nobody here.
    read(&b.edge, &login(&b.d1), "d1", "CARD-1", "second");
    eventually("the second unlock", Duration::from_secs(20), || {
        lock.messages()
            .iter()
            .any(|m| m.contains(r#""read":"second""#))
            .then_some(())
    });
    assert!(
        elsewhere.messages().is_empty(),
        "{:?}",
        elsewhere.messages()
    );
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
