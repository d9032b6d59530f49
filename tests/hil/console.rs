//! The edge console in Chromium (Playwright, Debian's chromium) against a real edge node
//! with a pymodbus device, an alarm and the park's doors: the specs in
//! `ui/edge-console/e2e` log in by keyboard, watch a live value change, write a setpoint
//! and see it read back, switch language, and check that a role without `points.write`
//! sees no write control and is refused by the API. Screenshots of every page at 768,
//! 1024 and 1440 px are kept in `target/tmp/edge-console-e2e`.

use std::time::Duration;

use crate::support::{ADMIN, ADMIN_PASSWORD, add_local_user, eventually, login, playwright};

const VIEWER: &str = "hil-viewer";
const VIEWER_PASSWORD: &str = "hil-quiet-larch-meadow";

#[test]
fn the_console_runs_the_building_in_chromium() {
    assert!(
        edge_node::console::is_built(),
        "this binary has no console built in: run the tests through scripts/test, which builds ui/ first"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_device, edge) = crate::lab::edge(dir.path());
    crate::lab::first_alarm(&edge);
    add_local_user(&edge.config, VIEWER, &["security_officer"], VIEWER_PASSWORD);
    // The running node picks the account up within seconds.
    eventually("the viewer can log in", Duration::from_secs(20), || {
        (login(&edge.api, VIEWER, VIEWER_PASSWORD, None).0 == 200).then_some(())
    });
    // A plate the camera was not sure of, waiting for a person.
    crate::park::plate(
        &edge,
        "a-in",
        "湘A12345",
        "in",
        0.41,
        device_drivers::now_micros(),
    );
    eventually(
        "the read in the review queue",
        Duration::from_secs(20),
        || {
            let (_, q) = edge.get("/api/v1/parking/review");
            (q["waiting"].as_array()?.len() == 1).then_some(())
        },
    );
    playwright(
        "edge-console",
        &[
            ("SMARTPARK_CONSOLE_URL", &edge.api),
            ("SMARTPARK_ENGINEER", ADMIN),
            ("SMARTPARK_ENGINEER_PASSWORD", ADMIN_PASSWORD),
            ("SMARTPARK_VIEWER", VIEWER),
            ("SMARTPARK_VIEWER_PASSWORD", VIEWER_PASSWORD),
        ],
    );
}
