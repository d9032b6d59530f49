//! The edge's LAN API fuzzed from its own OpenAPI document by schemathesis (PyPI), with
//! an API token of a local account holding every permission of the building, on a node
//! with a pymodbus device, a rule that has raised an alarm, and the park's doors, lots and
//! lanes: every documented route gets generated valid and invalid input (path parameters
//! pinned to things that exist, so that bodies reach the logic behind them), and every
//! answer must be a documented status with the documented shape, never a server error.

use std::process::Command;

use crate::support::{python, repo};

#[test]
fn schemathesis_finds_no_fault_in_the_lan_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_device, edge) = crate::lab::edge(dir.path());
    let alarm = crate::lab::first_alarm(&edge);
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
