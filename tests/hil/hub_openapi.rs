//! The hub's API fuzzed from its own OpenAPI document by schemathesis (PyPI), with an API
//! token of the operator's administrator (every permission everywhere), on a hub that an
//! enrolled edge uploads to: a pymodbus device's telemetry, a door decision, the
//! building's audit chain and the park's directory. Path parameters are pinned to things
//! the hub holds (the building, a point, a person and their enterprise, a user the
//! administrator may change), so that generated queries and bodies reach the logic behind
//! them; every answer must be a documented status with the documented shape, never a
//! server error.

use std::time::Duration;

use serde_json::json;

use crate::support::{Edge, eventually, http_as, modbus_tcp_device, mosquitto_pub, smartpark};
use crate::sync::{Hub, enroll, hub_config};

const ADMIN: &str = "hil-root";
const TARGET: &str = "hil-target";
const PASSWORD: &str = "amber-valley-stone-31";

fn add_user(config: &std::path::Path, username: &str, grant: &str) -> String {
    crate::support::add_hub_user(config, username, grant, PASSWORD)
}

/// An API token with every permission for `username`, made on the host: the operator's
/// administrator needs a second factor to log in, which a token made here stands for.
fn host_token(config: &std::path::Path, username: &str) -> String {
    let mut args = vec![
        "hub",
        "user",
        "token",
        "--config",
        config.to_str().unwrap(),
        "--username",
        username,
        "--name",
        "schemathesis",
        "--days",
        "1",
    ];
    for p in park_model::identity::Permission::ALL {
        args.extend(["--permission", p.as_str()]);
    }
    let (ok, out) = smartpark(&args, "");
    assert!(ok, "hub user token: {out}");
    out.lines()
        .next()
        .filter(|t| t.starts_with("spt_"))
        .unwrap_or_else(|| panic!("no token in {out:?}"))
        .to_string()
}

#[test]
fn schemathesis_finds_no_fault_in_the_hub_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), 0);
    add_user(&config, ADMIN, "operator_admin@operator");
    let target = add_user(&config, TARGET, "inspector@building:hil/b1");
    let hub = Hub::start(&config);
    let token = host_token(&config, ADMIN);

    // An edge of building b1 uploading a device's samples, its events and audit chain, and
    // the park's directory (people p1 of e1 and p2 of e2).
    let (_, identity) = enroll(&config, &hub, dir.path());
    let (_device, device_addr) = modbus_tcp_device();
    crate::park::seed(&dir.path().join("seed"));
    let edge = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\nraw_block_samples = 100\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 200\ntimeout_ms = 1000\n\
             modbus_tcp = {{ address = \"{device_addr}\", unit = 1 }}\n",
            dir.path().join("seed").display(),
            hub.quic,
            identity.display(),
        ),
    );
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "door/d1/read",
            "-m",
            &json!({"type": "card", "value": "CARD-1"}).to_string(),
        ],
    );
    let hub_get = |path: &str| http_as(&token, "GET", &format!("{}{path}", hub.api), None);
    eventually(
        "the edge's samples, event and audit chain at the hub",
        Duration::from_secs(90),
        || {
            let (_, points) = hub_get("/api/v1/parks/hil/buildings/b1/points");
            let sampled = points["points"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|p| p["point"] == "dev/setpoint" && p["latest"].is_object())
            });
            let (_, events) = hub_get("/api/v1/parks/hil/buildings/b1/events");
            let decided = events["events"].as_array().is_some_and(|e| !e.is_empty());
            let (_, audit) = hub_get("/api/v1/parks/hil/buildings/b1/audit");
            let audited = audit["entries"].as_array().is_some_and(|e| !e.is_empty());
            (sampled && decided && audited).then_some(())
        },
    );

    crate::support::schemathesis(
        dir.path(),
        "schemathesis-hub.toml",
        &hub.api,
        &[("SMARTPARK_API_TOKEN", &token), ("SMARTPARK_USER", &target)],
    );
    // The hub is still up, storing and answering, and the edge still connected to it.
    let (status, _) = hub_get("/ready");
    assert_eq!(status, 200);
    let (status, edges) = hub_get("/api/v1/edges");
    assert_eq!(status, 200, "{edges}");
    let (status, user) = hub_get(&format!("/api/v1/users/{target}"));
    assert_eq!((status, &user["username"]), (200, &json!(TARGET)), "{user}");
    eventually(
        "the edge connected to the hub",
        Duration::from_secs(30),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["connected"] == true).then_some(())
        },
    );
}
