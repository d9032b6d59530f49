//! A building for the tests that drive the whole LAN API (schemathesis, the console in
//! Chromium): a pymodbus device `dev` polled twice a second, a rule on its `mode` that has
//! raised an alarm, and the park's doors, lots and lanes from `park::seed`.

use std::path::Path;
use std::time::Duration;

use crate::support::{Edge, Proc, eventually, modbus_tcp_device};

const RULES: &str = r#"
[[rule]]
id = "mode-set"
severity = "P2"
points = "dev/mode"
threshold = { above = 1, deadband = 0 }
message = "{device}: mode {value}"
"#;

/// The device (keep it alive) and the edge reading it.
pub fn edge(dir: &Path) -> (Proc, Edge) {
    let (device, addr) = modbus_tcp_device();
    crate::park::seed(&dir.join("seed"));
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let edge = Edge::start(
        dir,
        &format!(
            "[business]\nseed_dir = \"{}\"\n\n[rules]\nfile = \"rules.toml\"\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 500\ntimeout_ms = 500\n\
             modbus_tcp = {{ address = \"{addr}\", unit = 1 }}\n",
            dir.join("seed").display()
        ),
    );
    (device, edge)
}

/// The id of the alarm the rule raised, once it has.
pub fn first_alarm(edge: &Edge) -> String {
    eventually("the rule's alarm", Duration::from_secs(20), || {
        let (_, body) = edge.get("/api/v1/alarms");
        body["alarms"][0]["id"].as_str().map(str::to_string)
    })
}
