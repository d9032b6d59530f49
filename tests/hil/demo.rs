//! `smartpark demo` as a newcomer runs it: values from every simulated device show up, both
//! buildings are connected to the hub, and Ctrl-C stops it cleanly.

use std::process::Command;
use std::time::Duration;

use crate::support::{Proc, edge_binary, eventually, http, repo};

#[test]
fn the_demo_serves_live_values_from_every_device_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Proc::spawn(
        "smartpark demo",
        Command::new(edge_binary())
            .current_dir(repo())
            .args(["demo", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn"),
    );
    let line = demo.wait_line("ready ", Duration::from_secs(30));
    let api = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .unwrap()
        .to_string();
    let console_line = demo.wait_line("  Hub console:", Duration::from_secs(10));
    let hub_console = console_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let hub_line = demo.wait_line("  Hub API:", Duration::from_secs(10));
    let buildings_url = hub_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let hub_api = buildings_url.split("/api/").next().unwrap().to_string();
    assert_eq!(hub_console.trim_end_matches('/'), hub_api);
    if cloud_hub::console::is_built() {
        // The hub serves its console at the printed address, and the console's own routes.
        for path in ["/", "/overview"] {
            let (status, page) = http("GET", &format!("{hub_api}{path}"), None);
            assert_eq!(status, 200, "{path}");
            assert!(
                page.as_str()
                    .is_some_and(|p| p.contains("<div id=\"app\">")),
                "{path}: {page}"
            );
        }
    }
    // The demo prints a login for every role.
    let password_of = |line: String| line.split_whitespace().nth(1).unwrap().to_string();
    let manager = password_of(demo.wait_line("    manager ", Duration::from_secs(10)));
    let engineer = password_of(demo.wait_line("    engineer ", Duration::from_secs(10)));
    // The engineer's account reaches building b1 by sync and logs in there.
    let token = eventually(
        "the engineer's account at the edge",
        Duration::from_secs(30),
        || {
            let (status, ..) = crate::support::login(&api, "engineer", &engineer, None);
            (status == 200).then(|| crate::support::token_for(&api, "engineer", &engineer))
        },
    );
    let hub_token = crate::support::token_for(&hub_api, "manager", &manager);
    let (status, _) = http("GET", &format!("{api}/api/v1/devices"), None);
    assert_eq!(status, 401, "nothing without a login");
    let http = |m: &str, url: &str, body: Option<serde_json::Value>| {
        let t = if url.starts_with(&hub_api) {
            &hub_token
        } else {
            &token
        };
        crate::support::http_as(t, m, url, body)
    };
    for key in [
        "main-meter/power_total",
        "hvac-meter/energy_import",
        "lobby-env/temperature",
        "lab-env/humidity",
        "ahu-1/supply_air_temp",
        "ahu-1/supply_air_temp_setpoint",
    ] {
        let latest = eventually(
            &format!("a good value of {key}"),
            Duration::from_secs(30),
            || {
                let (_, p) = http("GET", &format!("{api}/api/v1/points/{key}"), None);
                (p["latest"]["quality"] == "good").then(|| p["latest"].clone())
            },
        );
        assert!(latest["value"].as_f64().is_some(), "{key}: {latest}");
    }
    let (_, devices) = http("GET", &format!("{api}/api/v1/devices"), None);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 5);
    // The simulated AHU takes a setpoint through the edge, at the profile's priority 8.
    let (status, body) = http(
        "POST",
        &format!("{api}/api/v1/points/ahu-1/supply_air_temp_setpoint/write"),
        Some(serde_json::json!({"value": 15.5})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true, "{body}");
    // The hub sees both buildings connected over QUIC.
    eventually(
        "both buildings connected to the hub",
        Duration::from_secs(30),
        || {
            let (_, b) = http("GET", &buildings_url, None);
            let list = b["buildings"].as_array()?;
            (list.len() == 2 && list.iter().all(|x| x["connection"]["state"] == "connected"))
                .then_some(())
        },
    );
    demo.signal("INT");
    let status = eventually("the demo to exit", Duration::from_secs(20), || {
        demo.child.try_wait().unwrap()
    });
    assert!(status.success(), "demo exited with {status}");
}
