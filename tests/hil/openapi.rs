//! The edge's LAN API fuzzed from its own OpenAPI document by schemathesis (PyPI), with
//! an API token of a local account holding every permission of the building, on a node
//! with a pymodbus device, a rule that has raised an alarm, and the park's doors, lots and
//! lanes: every documented route gets generated valid and invalid input (path parameters
//! pinned to things that exist, so that bodies reach the logic behind them), and every
//! answer must be a documented status with the documented shape, never a server error.

use std::process::Command;
use std::time::Duration;

use crate::support::{Edge, eventually, modbus_tcp_device, python, repo};

const RULES: &str = r#"
[[rule]]
id = "mode-set"
severity = "P2"
points = "dev/mode"
threshold = { above = 1, deadband = 0 }
message = "{device}: mode {value}"
"#;

#[test]
fn schemathesis_finds_no_fault_in_the_lan_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_device, addr) = modbus_tcp_device();
    crate::park::seed(&dir.path().join("seed"));
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    let edge = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n\n[rules]\nfile = \"rules.toml\"\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 500\ntimeout_ms = 500\n\
             modbus_tcp = {{ address = \"{addr}\", unit = 1 }}\n",
            dir.path().join("seed").display()
        ),
    );
    let alarm = eventually("the rule's alarm", Duration::from_secs(20), || {
        let (_, body) = edge.get("/api/v1/alarms");
        body["alarms"][0]["id"].as_str().map(str::to_string)
    });
    let schemathesis = python().with_file_name("schemathesis");
    let out = Command::new(&schemathesis)
        // Its cache of found failures goes to the test's folder, not the checkout.
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(repo().join("tests/hil/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", edge.api))
        .args(["--checks", "all"])
        .args(["--max-examples", "30"])
        // One worker: hypothesis under threads has failed inside itself here.
        .args(["--workers", "1"])
        .args(["--seed", "1"])
        .env("SMARTPARK_API_TOKEN", &edge.token)
        .env("SMARTPARK_ALARM", &alarm)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found faults:\n{text}");
    println!("{text}");
    // The node is still up, deciding and answering.
    let (status, _) = edge.get("/api/v1/site");
    assert_eq!(status, 200);
    let (status, _) = edge.get("/api/v1/doors");
    assert_eq!(status, 200);
}
