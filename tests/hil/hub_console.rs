//! The hub console in Chromium (Playwright, Debian's chromium) against a real hub with a
//! real edge enrolled and synced over QUIC: the specs in `ui/hub-console/e2e` log in as the
//! park's manager, add an enterprise, a person in the lobby group and a card, present the
//! card at the edge's reader (mosquitto_pub, as the reader's controller would) and see the
//! edge's granted decision arrive back in the building's events on the hub; suspend a card
//! with a reason and find it in the audit log; and log in as an enterprise's admin, who
//! sees that enterprise's people and cards only and whom the API refuses the rest.
//! Screenshots of every page at 768, 1024 and 1440 px are kept in `target/tmp/hub-console-e2e`.
//!
//! A second hub and edge carry a lease from draft to paid bill (`e2e/leasing.spec.ts`): a
//! manager drafts and submits a contract whose approval the API refuses them, a second
//! manager approves and activates it, finance (who first sets up TOTP, as an authenticator
//! app would compute it) runs the month, reads the rent line explained, issues the bill,
//! records payments and saves it as PDF, and the enterprise's admin sees its own contract
//! and bill and nothing of another enterprise's. Its screenshots and the PDF are kept in
//! `target/tmp/hub-console-leasing-e2e`.
//!
//! A third pair carries a company from lead to invoice (`e2e/tenancy.spec.ts`): a leasing
//! officer takes the lead, follows it up, converts it into an enterprise and drafts its
//! contract, a manager approves and activates it (the space map shows the room leased),
//! finance issues the month's bills, imports a bank statement whose line names the bill,
//! sees it paid and the day's reconciliation balanced, issues the invoice the enterprise's
//! admin asks for, and cannot approve a refund it asked for itself. Screenshots in
//! `target/tmp/hub-console-tenancy-e2e`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::{add_hub_user, eventually, http_as, login, playwright_specs, token_for};

const MANAGER: &str = "hil-manager";
const REVIEWER: &str = "hil-reviewer";
const FINANCE: &str = "hil-finance";
const ENTERPRISE_ADMIN: &str = "hil-e1-admin";
const LEASING: &str = "hil-leasing";
const TENANT_ADMIN: &str = "hil-nova-admin";
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
    playwright_specs(
        "hub-console",
        &["console.spec.ts"],
        "hub-console-e2e",
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

/// A call to the hub's API with `token` that must succeed; its answer.
fn hub_call(api: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = http_as(token, method, &format!("{api}{path}"), body);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// `YYYY-MM` of today in UTC, as the browser of the spec (on this machine) counts months.
fn this_month() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let day = park_model::time::LocalTime::at(now, 0).day;
    park_model::time::format_date(day)[..7].to_string()
}

#[test]
fn a_lease_goes_from_draft_to_paid_bill_in_the_hub_console() {
    assert!(
        cloud_hub::console::is_built(),
        "this binary has no hub console built in: run the tests through scripts/test, which builds ui/ first"
    );
    let dir = tempfile::tempdir().unwrap();
    let (hub, _edge) = crate::master::hub_and_edge(dir.path());
    for (user, grant) in [
        (MANAGER, "park_manager@park:hil"),
        (REVIEWER, "park_manager@park:hil"),
        (FINANCE, "finance@park:hil"),
        (ENTERPRISE_ADMIN, "enterprise_admin@enterprise:hil/e1"),
    ] {
        add_hub_user(&hub.config, user, grant, PASSWORD);
    }
    for user in [MANAGER, REVIEWER, FINANCE, ENTERPRISE_ADMIN] {
        eventually(
            &format!("{user} can log in"),
            Duration::from_secs(20),
            || (login(&hub.api, user, PASSWORD, None).0 == 200).then_some(()),
        );
    }
    // The seeded park has no spaces: two rooms of b1, by the API as a manager makes them.
    let api = hub.api.as_str();
    for (id, area) in [("b1-101", 120.5), ("b1-102", 80.0)] {
        hub_call(
            api,
            &hub.token,
            "PUT",
            &format!("/api/v1/parks/hil/spaces/{id}"),
            Some(json!({
                "building_id": "b1", "floor": 1, "area_m2": area,
                "name": format!("{} 室", &id[3..]), "kind": "room", "state": "vacant",
            })),
        );
    }
    // Another enterprise's contract, active on b1-102 since last month: its bill is what e1's
    // admin must not see, and its electricity of last month waits for a tariff the park does
    // not have yet (the run says so). Made by the hub's monitor, reviewed by the second
    // manager.
    let month = this_month();
    let (year, m): (i32, u32) = (month[..4].parse().unwrap(), month[5..].parse().unwrap());
    let last_month = if m == 1 {
        format!("{}-12", year - 1)
    } else {
        format!("{year}-{:02}", m - 1)
    };
    hub_call(
        api,
        &hub.token,
        "PUT",
        "/api/v1/parks/hil/contracts/k-e2",
        Some(json!({
            "enterprise_id": "e2", "space_ids": ["b1-102"],
            "start": format!("{last_month}-01"), "end": format!("{}-12-31", year + 1),
            "rent": {"fixed_month_fen": 500_000}, "property_fee": {"per_m2_month_fen": 1000},
            "deposit_fen": 1_000_000, "cycle": "monthly", "common_share": "none",
            "electricity_tariff": "power",
        })),
    );
    let reviewer = token_for(api, REVIEWER, PASSWORD);
    for (token, action) in [
        (&hub.token, "submit"),
        (&reviewer, "approve"),
        (&hub.token, "activate"),
    ] {
        hub_call(
            api,
            token,
            "POST",
            "/api/v1/parks/hil/contracts/k-e2/actions",
            Some(json!({"action": action})),
        );
    }
    playwright_specs(
        "hub-console",
        &["leasing.spec.ts"],
        "hub-console-leasing-e2e",
        &[
            ("SMARTPARK_HUB_URL", api),
            ("SMARTPARK_MANAGER", MANAGER),
            ("SMARTPARK_REVIEWER", REVIEWER),
            ("SMARTPARK_FINANCE", FINANCE),
            ("SMARTPARK_ENTERPRISE_ADMIN", ENTERPRISE_ADMIN),
            ("SMARTPARK_PASSWORD", PASSWORD),
        ],
    );
    // What the browser did is the hub's record: the contract active, reviewed by another
    // user than its submitter, with its history, and its space leased.
    let contract = hub_call(
        api,
        &hub.token,
        "GET",
        "/api/v1/parks/hil/contracts/k-e2e",
        None,
    );
    assert_eq!(contract["state"], "active", "{contract}");
    assert_eq!(contract["submitted_by"], MANAGER, "{contract}");
    assert_eq!(contract["approved_by"], REVIEWER, "{contract}");
    let actions: Vec<&str> = contract["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["edit", "submit", "approve", "activate"],
        "{contract}"
    );
    let space = hub_call(
        api,
        &hub.token,
        "GET",
        "/api/v1/parks/hil/spaces?q=b1-101",
        None,
    );
    assert_eq!(space["spaces"][0]["state"], "leased", "{space}");
}

#[test]
fn a_lead_becomes_a_tenant_whose_bank_transfer_pays_its_bill_in_the_hub_console() {
    assert!(
        cloud_hub::console::is_built(),
        "this binary has no hub console built in: run the tests through scripts/test, which builds ui/ first"
    );
    let dir = tempfile::tempdir().unwrap();
    let (hub, _edge) = crate::master::hub_and_edge(dir.path());
    // nova's admin is granted the enterprise the lead will become.
    let users = [
        (LEASING, "leasing@park:hil"),
        (MANAGER, "park_manager@park:hil"),
        (FINANCE, "finance@park:hil"),
        (TENANT_ADMIN, "enterprise_admin@enterprise:hil/nova"),
    ];
    for (user, grant) in users {
        add_hub_user(&hub.config, user, grant, PASSWORD);
    }
    for (user, _) in users {
        eventually(
            &format!("{user} can log in"),
            Duration::from_secs(20),
            || (login(&hub.api, user, PASSWORD, None).0 == 200).then_some(()),
        );
    }
    // Two vacant rooms on b1's second floor, and b1-102 let to e2 by an active contract
    // since the first of the month, whose bill nova's admin must not see.
    let api = hub.api.as_str();
    for (id, floor, area) in [
        ("b1-201", 2, 100.0),
        ("b1-202", 2, 60.0),
        ("b1-102", 1, 80.0),
    ] {
        hub_call(
            api,
            &hub.token,
            "PUT",
            &format!("/api/v1/parks/hil/spaces/{id}"),
            Some(json!({
                "building_id": "b1", "floor": floor, "area_m2": area,
                "name": format!("{} 室", &id[3..]), "kind": "room", "state": "vacant",
            })),
        );
    }
    let month = this_month();
    let year: i32 = month[..4].parse().unwrap();
    hub_call(
        api,
        &hub.token,
        "PUT",
        "/api/v1/parks/hil/contracts/k-e2",
        Some(json!({
            "enterprise_id": "e2", "space_ids": ["b1-102"],
            "start": format!("{month}-01"), "end": format!("{}-12-31", year + 1),
            "rent": {"fixed_month_fen": 500_000}, "property_fee": {"per_m2_month_fen": 1000},
            "deposit_fen": 0, "cycle": "monthly", "common_share": "none",
        })),
    );
    let manager = token_for(api, MANAGER, PASSWORD);
    for (token, action) in [
        (&hub.token, "submit"),
        (&manager, "approve"),
        (&hub.token, "activate"),
    ] {
        hub_call(
            api,
            token,
            "POST",
            "/api/v1/parks/hil/contracts/k-e2/actions",
            Some(json!({"action": action})),
        );
    }
    playwright_specs(
        "hub-console",
        &["tenancy.spec.ts"],
        "hub-console-tenancy-e2e",
        &[
            ("SMARTPARK_HUB_URL", api),
            ("SMARTPARK_LEASING", LEASING),
            ("SMARTPARK_MANAGER", MANAGER),
            ("SMARTPARK_FINANCE", FINANCE),
            ("SMARTPARK_TENANT_ADMIN", TENANT_ADMIN),
            ("SMARTPARK_PASSWORD", PASSWORD),
        ],
    );
    // What the browser did is the hub's record.
    let lead = hub_call(
        api,
        &hub.token,
        "GET",
        "/api/v1/parks/hil/leads/l-nova",
        None,
    );
    assert_eq!(lead["state"], "converted", "{lead}");
    assert_eq!(lead["enterprise_id"], "nova", "{lead}");
    assert_eq!(lead["owner"], LEASING, "{lead}");
    assert_eq!(
        lead["follow_ups"].as_array().map(Vec::len),
        Some(1),
        "{lead}"
    );
    let contract = hub_call(
        api,
        &hub.token,
        "GET",
        "/api/v1/parks/hil/contracts/k-nova",
        None,
    );
    assert_eq!(contract["state"], "active", "{contract}");
    assert_eq!(contract["submitted_by"], LEASING, "{contract}");
    assert_eq!(contract["approved_by"], MANAGER, "{contract}");
    // Finance's own routes need its second factor; nova's admin reads what became of its bill.
    let tenant = token_for(api, TENANT_ADMIN, PASSWORD);
    let bill_id = format!("{}-nova-1", month.replace('-', ""));
    let bills = hub_call(
        api,
        &tenant,
        "GET",
        "/api/v1/parks/hil/enterprises/nova/bills",
        None,
    );
    let bill = &bills["bills"][0];
    assert_eq!(bills["total"], 1, "{bills}");
    assert_eq!(bill["id"], bill_id.as_str(), "{bills}");
    assert_eq!(bill["state"], "paid", "{bills}");
    let payments = hub_call(
        api,
        &tenant,
        "GET",
        "/api/v1/parks/hil/enterprises/nova/payments",
        None,
    );
    let payments = payments["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["reference"], "BK-E2E-001", "{payments:?}");
    assert_eq!(payments[0]["method"], "transfer", "{payments:?}");
    assert_eq!(payments[0]["amount_fen"], bill["total_fen"], "{payments:?}");
    let invoices = hub_call(
        api,
        &tenant,
        "GET",
        "/api/v1/parks/hil/enterprises/nova/invoice-requests",
        None,
    );
    let invoice = &invoices["requests"][0];
    assert_eq!(invoice["state"], "issued", "{invoices}");
    assert_eq!(invoice["invoice_number"], "04400123", "{invoices}");
    assert_eq!(invoice["tax_number"], "91110108MA01C2D3EG", "{invoices}");
    assert_eq!(invoice["amount_fen"], bill["total_fen"], "{invoices}");
    let contacts = hub_call(
        api,
        &tenant,
        "GET",
        "/api/v1/parks/hil/enterprises/nova/notification-contacts",
        None,
    );
    assert_eq!(
        contacts["contacts"],
        json!([{"email": "billing@nova.example", "locale": "zh-CN"}]),
        "{contacts}"
    );
}
