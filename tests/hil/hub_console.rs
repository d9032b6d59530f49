//! The hub console in Chromium (Playwright, Debian's chromium) against a real hub with a
//! real edge enrolled and synced over QUIC: the specs in `ui/hub-console/e2e` log in as the
//! park's manager, add an enterprise, a person in the lobby group and a card, present the
//! card at the edge's reader (mosquitto_pub, as the reader's controller would) and see the
//! edge's granted decision arrive back in the building's events on the hub; suspend a card
//! with a reason and find it in the audit log; and log in as an enterprise's admin, who
//! sees that enterprise's people and cards only and whom the API refuses the rest.
//! Screenshots of every page at 768, 1024 and 1440 px are kept in `target/tmp/hub-console-e2e`.

use std::time::Duration;

use crate::support::{add_hub_user, eventually, login, playwright};

const MANAGER: &str = "hil-manager";
const ENTERPRISE_ADMIN: &str = "hil-e1-admin";
const PASSWORD: &str = "copper-lantern-river-58";

#[test]
fn the_hub_console_runs_the_park_in_chromium() {
    assert!(
        cloud_hub::console::is_built(),
        "this binary has no hub console built in: run the tests through scripts/test, which builds ui/ first"
    );
    let dir = tempfile::tempdir().unwrap();
    let (hub, edge) = crate::master::hub_and_edge(dir.path());
    add_hub_user(&hub.config, MANAGER, "park_manager@park:hil", PASSWORD);
    add_hub_user(
        &hub.config,
        ENTERPRISE_ADMIN,
        "enterprise_admin@enterprise:hil/e1",
        PASSWORD,
    );
    // The running hub picks the accounts up within seconds.
    for user in [MANAGER, ENTERPRISE_ADMIN] {
        eventually(
            &format!("{user} can log in"),
            Duration::from_secs(20),
            || (login(&hub.api, user, PASSWORD, None).0 == 200).then_some(()),
        );
    }
    // A park's list of enterprises as a spreadsheet brings it: Chinese headers, an id typed
    // as a number.
    let xlsx = dir.path().join("enterprises.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["编号", "企业名称", "企业类型"].into_iter().enumerate() {
        sheet.write_string(0, c as u16, h).unwrap();
    }
    for (r, (id, name)) in [(2001.0, "表格导入一"), (2002.0, "表格导入二")]
        .into_iter()
        .enumerate()
    {
        let r = r as u32 + 1;
        sheet.write_number(r, 0, id).unwrap();
        sheet.write_string(r, 1, name).unwrap();
        sheet.write_string(r, 2, "tenant").unwrap();
    }
    book.save(&xlsx).unwrap();
    let xlsx = xlsx.to_str().unwrap().to_string();
    let mqtt = edge.mqtt.to_string();
    playwright(
        "hub-console",
        &[
            ("SMARTPARK_HUB_URL", &hub.api),
            ("SMARTPARK_EDGE_MQTT", &mqtt),
            ("SMARTPARK_MANAGER", MANAGER),
            ("SMARTPARK_ENTERPRISE_ADMIN", ENTERPRISE_ADMIN),
            ("SMARTPARK_PASSWORD", PASSWORD),
            ("SMARTPARK_XLSX", &xlsx),
        ],
    );
    // What the browser did reached the edge: the card it issued is granted at the door in
    // the edge's own log, and the suspension it made is held there.
    let (_, events) = edge.get("/api/v1/events?kind=access.decision&limit=100");
    let granted = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["body"]["credential"] == "c-e2e" && e["body"]["granted"] == true);
    assert!(granted, "no granted read of c-e2e at the edge: {events}");
}
