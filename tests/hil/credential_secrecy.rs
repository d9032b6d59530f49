//! Card numbers, QR values and PINs are never stored or shown in clear: known values are
//! presented at a door over MQTT (`mosquitto_pub`) and registered over the LAN API, and then
//! every byte of the edge's SQLite files (database, WAL and shared memory), the events the API
//! serves and everything the process logged are searched for them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use park_model::ParkDirectory;
use park_model::directory::{Credential, CredentialKind};
use serde_json::json;

use crate::support::{Edge, Proc, credential_key, edge_binary, eventually, mosquitto_pub};

/// Registered in the seed: a card, a QR code and a PIN of `p1`, who may open `d1`.
const CARD: &str = "04A1B2C3D4E5F6A7";
const QR: &str = "QR-HIL-9f8e7d6c5b4a3921";
const PIN: &str = "583920";
/// Registered over the API while the edge runs.
const API_PIN: &str = "246813";
/// Presented but registered nowhere.
const UNKNOWN_CARD: &str = "DEADBEEF00112233";
const UNKNOWN_PIN: &str = "771904";

const SECRETS: [&str; 6] = [CARD, QR, PIN, API_PIN, UNKNOWN_CARD, UNKNOWN_PIN];

/// The park of `park::seed` with `p1`'s card, QR code and PIN added, digested under the key
/// of the edge in `dir`.
fn seed(dir: &Path) {
    let seed = dir.join("seed");
    crate::park::seed(&seed);
    let key = credential_key(dir);
    let file = seed.join("directory.automerge");
    let mut d = ParkDirectory::load(&std::fs::read(&file).unwrap()).unwrap();
    for (id, kind, value) in [
        ("c-card", CredentialKind::Card, CARD),
        ("c-qr", CredentialKind::Qr, QR),
        ("c-pin", CredentialKind::Pin, PIN),
    ] {
        d.upsert(&Credential::from_secret(&key, id, "p1", kind, value).unwrap())
            .unwrap();
    }
    d.commit("seed secrets", 0);
    std::fs::write(&file, d.save()).unwrap();
}

/// Starts the edge on the config `Edge::start` wrote, logging everything it logs at debug
/// level into `log`.
fn start_logged(config: PathBuf, log: &Path) -> Edge {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut proc = Proc::spawn(
        "smartpark edge",
        Command::new(edge_binary())
            .args(["edge", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stderr(log),
    );
    let line = proc.wait_line("ready ", Duration::from_secs(30));
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let api = field("api");
    Edge {
        // The tests' administrator exists: `Edge::start` made it on this config.
        token: crate::support::token_for(
            &api,
            crate::support::ADMIN,
            crate::support::ADMIN_PASSWORD,
        ),
        api,
        mqtt: field("mqtt").parse().unwrap(),
        mqtt_tls: None,
        proc,
        config,
    }
}

fn present(edge: &Edge, kind: &str, value: &str) {
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "door/d1/read",
            "-m",
            &json!({"type": kind, "value": value, "reader": "in"}).to_string(),
        ],
    );
}

/// The `access.decision` events in the store, oldest first, read from SQLite directly.
fn decisions(db: &Path) -> Vec<serde_json::Value> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut stmt = c
        .prepare("SELECT body FROM events WHERE kind = 'access.decision' ORDER BY ts, id")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| serde_json::from_str(&b.unwrap()).unwrap())
        .collect()
}

/// Where any of the secrets occurs in `bytes`, as `(secret, offset)`.
fn find_secrets(bytes: &[u8]) -> Vec<(&'static str, usize)> {
    let mut found = Vec::new();
    for secret in SECRETS {
        let needle = secret.as_bytes();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            found.push((secret, at));
        }
    }
    found
}

/// Searches every file of the store (`edge.sqlite` and its `-wal` and `-shm`), byte by byte.
fn assert_store_holds_no_secret(data: &Path) {
    let mut searched = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("edge.sqlite") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            find_secrets(&bytes).is_empty(),
            "{name} holds {:?}",
            find_secrets(&bytes)
        );
        searched.push(name);
    }
    assert!(
        searched.iter().any(|n| n == "edge.sqlite"),
        "no store in {}: {searched:?}",
        data.display()
    );
}

#[test]
fn no_card_number_qr_value_or_pin_is_stored_served_or_logged_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    // The config as every HIL edge has it, then the edge again with its log captured.
    let first = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n",
            dir.path().join("seed").display()
        ),
    );
    let config = first.config.clone();
    drop(first);
    let log = dir.path().join("edge.log");
    let mut edge = start_logged(config, &log);
    let db = dir.path().join("data/edge.sqlite");

    // A PIN registered over the API is stored as a digest, and the answer shows no suffix.
    let (status, body) = edge.post(
        "/api/v1/credentials",
        json!({"id": "c-api-pin", "person_id": "p1", "kind": "pin", "value": API_PIN}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suffix"], "", "{body}");

    present(&edge, "card", CARD);
    present(&edge, "qr", QR);
    present(&edge, "pin", PIN);
    present(&edge, "pin", API_PIN);
    present(&edge, "card", UNKNOWN_CARD);
    present(&edge, "pin", UNKNOWN_PIN);
    // A reader that sends a PIN as a number is refused, and the refusal does not repeat it.
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "door/d1/read",
            "-m",
            &format!(r#"{{"type":"pin","value":{UNKNOWN_PIN}}}"#),
        ],
    );
    let events = eventually("six decisions stored", Duration::from_secs(20), || {
        let e = decisions(&db);
        (e.len() >= 6).then_some(e)
    });
    assert_eq!(events.len(), 6, "{events:?}");
    let granted: Vec<_> = events.iter().map(|e| e["granted"] == true).collect();
    assert_eq!(
        granted,
        [true, true, true, true, false, false],
        "{events:?}"
    );
    assert_eq!(events[0]["credential"], "c-card");
    assert_eq!(events[3]["credential"], "c-api-pin");
    // Unmatched reads are named by digest and suffix; a PIN's suffix is empty.
    let key = credential_key(dir.path());
    assert_eq!(
        events[4]["credentialDigest"],
        key.present(CredentialKind::Card, UNKNOWN_CARD).digest
    );
    assert_eq!(events[4]["credentialSuffix"], "2233");
    assert_eq!(events[5]["credentialSuffix"], "");
    eventually(
        "the refused message logged",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("must be a string")
                .then_some(())
        },
    );

    // The events as the API serves them.
    let (status, served) = edge.get("/api/v1/events?kind=access&limit=100");
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["events"].as_array().unwrap().len(), 6);
    let served = served.to_string();
    assert!(find_secrets(served.as_bytes()).is_empty(), "{served}");
    assert_eq!(
        edge.metric("smartpark_edge_directory_clear_values_total"),
        0.0
    );

    // Every byte of the store while the edge runs (the WAL holds the latest commits), and
    // again once it has stopped and checkpointed.
    assert_store_holds_no_secret(&dir.path().join("data"));
    edge.proc.signal("TERM");
    eventually("the edge to stop", Duration::from_secs(20), || {
        edge.proc.child.try_wait().unwrap()
    });
    assert_store_holds_no_secret(&dir.path().join("data"));

    // And everything the process logged, at debug level.
    let logged = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&logged).contains("Park documents loaded."),
        "the log was captured"
    );
    assert!(
        find_secrets(&logged).is_empty(),
        "the log holds {:?}",
        find_secrets(&logged)
    );
}
