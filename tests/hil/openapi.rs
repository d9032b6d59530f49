//! The edge's LAN API fuzzed from its own OpenAPI document by schemathesis (PyPI), with
//! an API token of a local account holding every permission of the building, on a node
//! with a pymodbus device, a rule that has raised an alarm, and the park's doors, lots and
//! lanes: every documented route gets generated valid and invalid input (path parameters
//! pinned to things that exist, so that bodies reach the logic behind them), and every
//! answer must be a documented status with the documented shape, never a server error.

#[test]
fn schemathesis_finds_no_fault_in_the_lan_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_device, edge) = crate::lab::edge(dir.path());
    let alarm = crate::lab::first_alarm(&edge);
    crate::support::schemathesis(
        dir.path(),
        "schemathesis.toml",
        &edge.api,
        &[
            ("SMARTPARK_API_TOKEN", &edge.token),
            ("SMARTPARK_ALARM", &alarm),
        ],
    );
    // The node is still up, deciding and answering.
    let (status, _) = edge.get("/api/v1/site");
    assert_eq!(status, 200);
    let (status, _) = edge.get("/api/v1/doors");
    assert_eq!(status, 200);
}
