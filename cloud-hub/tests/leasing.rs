//! Lease contracts over the hub's real HTTP API: a draft whose refusals name the field, the
//! review by a second user, activation writing the lease and the spaces' state into the
//! park's directory, a second contract for the same space refused, an early termination,
//! the history and audit of every step, and an enterprise seeing only its own contracts.

mod common;

use std::path::Path;

use cloud_hub::Hub;
use common::account;
use park_model::ParkDirectory;
use park_model::directory::{
    Enterprise, EnterpriseKind, EnterpriseStatus, Lease, LeaseStatus, Space, SpaceKind, SpaceState,
};
use park_model::identity::{Grant, Role, Scope};
use serde_json::{Value, json};

/// A park `p1` with two enterprises and two rooms.
fn seed(dir: &Path) {
    let mut d = ParkDirectory::new("p1", 480, 1).unwrap();
    for e in ["acme", "globex"] {
        d.upsert(&Enterprise {
            id: e.into(),
            name: e.into(),
            status: EnterpriseStatus::Active,
            kind: EnterpriseKind::Tenant,
        })
        .unwrap();
    }
    for (id, area) in [("r101", 120.5), ("r102", 80.0)] {
        d.upsert(&Space {
            id: id.into(),
            building_id: "b1".into(),
            floor: 1,
            area_m2: area,
            name: id.into(),
            kind: SpaceKind::Room,
            state: SpaceState::Vacant,
        })
        .unwrap();
    }
    d.commit("seed", 1);
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    std::fs::write(dir.join("p1/directory.automerge"), d.save()).unwrap();
}

fn directory(h: &Hub) -> ParkDirectory {
    ParkDirectory::load(&h.documents.get("p1", "directory").unwrap().save()).unwrap()
}

fn contract(enterprise: &str, space: &str) -> Value {
    json!({
        "enterprise_id": enterprise,
        "space_ids": [space],
        "start": "2026-01-15",
        "end": "2029-01-14",
        "rent": {"per_m2_month_fen": 8000},
        "free_rent": [{"from": "2026-01-15", "to": "2026-02-14"}],
        "escalation_bp": 500,
        "property_fee": {"per_m2_month_fen": 1200},
        "deposit_fen": 2000000,
        "cycle": "monthly",
        "late_fee_bp_per_day": 5,
        "late_fee_grace_days": 10,
        "electricity_tariff": "power",
        "common_share": "by_area"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_is_drafted_reviewed_by_another_user_activated_and_terminated() {
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("seed"));
    let mut settings = common::settings(dir.path());
    settings.documents_seed_dir = Some(dir.path().join("seed"));
    let h = Hub::start(settings).await.unwrap();
    let db = h.store.target().clone();
    let park = |role| [Grant::new(role, Scope::park("p1")).unwrap()];
    let lee = account(&db, "lee", &park(Role::ParkManager));
    let wang = account(&db, "wang", &park(Role::ParkManager));
    let finance = account(&db, "zhou", &park(Role::Finance));
    let acme = account(
        &db,
        "acme-admin",
        &[Grant::new(Role::EnterpriseAdmin, Scope::enterprise("p1", "acme")).unwrap()],
    );
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(a, Some(token), method, path, body)
    };
    let act = |token: &str, id: &str, body: Value| {
        call(
            token,
            "POST",
            &format!("/api/v1/parks/p1/contracts/{id}/actions"),
            Some(body),
        )
    };

    // Refusals name the field.
    let mut bad = contract("acme", "r999");
    let (st, body) = call(
        &lee,
        "PUT",
        "/api/v1/parks/p1/contracts/k1",
        Some(bad.clone()),
    );
    assert_eq!(st, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("space_ids[0]"),
        "{body}"
    );
    bad = contract("acme", "r101");
    bad["free_rent"] = json!([{"from": "2025-12-01", "to": "2026-01-20"}]);
    let (st, body) = call(&lee, "PUT", "/api/v1/parks/p1/contracts/k1", Some(bad));
    assert_eq!(st, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("free_rent[0]"),
        "{body}"
    );
    let mut bad = contract("acme", "r101");
    bad["rent"] = json!({"per_m2_month_fen": 8000, "fixed_month_fen": 1});
    let (st, body) = call(&lee, "PUT", "/api/v1/parks/p1/contracts/k1", Some(bad));
    assert_eq!(st, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("rent"),
        "{body}"
    );
    // Finance may read contracts but not make them.
    let (st, _) = call(
        &finance,
        "PUT",
        "/api/v1/parks/p1/contracts/k1",
        Some(contract("acme", "r101")),
    );
    assert_eq!(st, 403);

    // A draft, with its rent schedule worked out from the room's area.
    let (st, k1) = call(
        &lee,
        "PUT",
        "/api/v1/parks/p1/contracts/k1",
        Some(contract("acme", "r101")),
    );
    assert_eq!(st, 200, "{k1}");
    assert_eq!(k1["state"], "draft");
    assert_eq!(k1["area_m2"], "120.50");
    assert_eq!(
        k1["rent_schedule_fen"],
        json!([964_000, 1_012_200, 1_062_810])
    );
    assert_eq!(k1["terms"]["end"], "2029-01-14");

    // Activation before review is refused; the submitter cannot approve; another user can.
    let (st, body) = act(&lee, "k1", json!({"action": "activate"}));
    assert_eq!(st, 409, "{body}");
    let (st, body) = act(&lee, "k1", json!({"action": "submit"}));
    assert_eq!(
        (st, body["state"].as_str()),
        (200, Some("pending_review")),
        "{body}"
    );
    let (st, body) = act(&lee, "k1", json!({"action": "approve"}));
    assert_eq!(st, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("another user"),
        "{body}"
    );
    let (st, body) = call(
        &lee,
        "PUT",
        "/api/v1/parks/p1/contracts/k1",
        Some(contract("acme", "r102")),
    );
    assert_eq!(st, 409, "a contract under review is not edited: {body}");
    let (st, body) = act(&wang, "k1", json!({"action": "reject"}));
    assert_eq!(st, 409, "a rejection needs a reason: {body}");
    let (st, body) = act(&wang, "k1", json!({"action": "approve"}));
    assert_eq!(
        (st, body["approved_by"].as_str()),
        (200, Some("wang")),
        "{body}"
    );
    let (st, body) = act(&lee, "k1", json!({"action": "activate"}));
    assert_eq!(
        (st, body["state"].as_str()),
        (200, Some("active")),
        "{body}"
    );

    // The lease and the room's state are in the park's directory, for every edge.
    let d = directory(&h);
    let lease = d.get::<Lease>("k1").unwrap().unwrap();
    assert_eq!(lease.enterprise_id, "acme");
    assert_eq!(lease.space_ids, vec!["r101".to_string()]);
    assert_eq!(lease.status, LeaseStatus::Active);
    assert_eq!(lease.monthly_rent_fen, 964_000);
    assert_eq!(lease.property_fee_fen, 144_600);
    assert_eq!(
        lease.valid_from,
        park_model::time::local_timestamp("2026-01-15", 0, 0, 480).unwrap()
    );
    assert_eq!(
        d.get::<Space>("r101").unwrap().unwrap().state,
        SpaceState::Leased
    );

    // Another contract for the same room on overlapping days is not activated.
    call(
        &lee,
        "PUT",
        "/api/v1/parks/p1/contracts/k2",
        Some(contract("globex", "r101")),
    );
    act(&lee, "k2", json!({"action": "submit"}));
    act(&wang, "k2", json!({"action": "approve"}));
    let (st, body) = act(&lee, "k2", json!({"action": "activate"}));
    assert_eq!(st, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("r101"), "{body}");

    // An early termination moves the lease's end.
    let (st, body) = act(
        &lee,
        "k1",
        json!({"action": "terminate", "last_day": "2026-03-20"}),
    );
    assert_eq!(st, 409, "a termination needs a reason: {body}");
    let (st, body) = act(
        &lee,
        "k1",
        json!({"action": "terminate", "last_day": "2026-03-20", "reason": "moving out"}),
    );
    assert_eq!(
        (st, body["state"].as_str()),
        (200, Some("terminated")),
        "{body}"
    );
    assert_eq!(body["terms"]["end"], "2026-03-20");
    let lease = directory(&h).get::<Lease>("k1").unwrap().unwrap();
    assert_eq!(
        lease.valid_to,
        park_model::time::local_timestamp("2026-03-21", 0, 0, 480).unwrap()
    );
    assert_eq!(
        directory(&h).get::<Space>("r101").unwrap().unwrap().state,
        SpaceState::Vacant,
        "the termination has taken effect"
    );
    let history: Vec<(String, String, String)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().to_string(),
                h["state"].as_str().unwrap().to_string(),
                h["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("edit", "draft", "lee"),
        ("submit", "pending_review", "lee"),
        ("approve", "approved", "wang"),
        ("activate", "active", "lee"),
        ("terminate", "terminated", "lee"),
    ]
    .iter()
    .map(|(a, s, u)| (a.to_string(), s.to_string(), u.to_string()))
    .collect();
    assert_eq!(history, expected);

    // Every step is audited, refusals included.
    let (_, audit) = call(&lee, "GET", "/api/v1/parks/p1/audit?limit=100", None);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("contract_"))
        .collect();
    assert!(actions.len() >= 10, "{audit}");

    // The enterprise sees its own contracts, and not the park's list.
    let (st, own) = call(
        &acme,
        "GET",
        "/api/v1/parks/p1/enterprises/acme/contracts",
        None,
    );
    assert_eq!(st, 200, "{own}");
    assert_eq!(own["total"], 1);
    assert_eq!(own["contracts"][0]["id"], "k1");
    let (st, _) = call(
        &acme,
        "GET",
        "/api/v1/parks/p1/enterprises/globex/contracts",
        None,
    );
    assert_eq!(st, 403);
    let (st, _) = call(&acme, "GET", "/api/v1/parks/p1/contracts", None);
    assert_eq!(st, 403);
    let (st, all) = call(
        &finance,
        "GET",
        "/api/v1/parks/p1/contracts?state=approved",
        None,
    );
    assert_eq!((st, all["total"].as_u64()), (200, Some(1)), "{all}");
}

/// A hub over the seeded park with two park managers, finance and acme's admin (their
/// tokens, in that order).
async fn park_with_people(dir: &Path) -> (Hub, [String; 4]) {
    seed(&dir.join("seed"));
    let mut settings = common::settings(dir);
    settings.documents_seed_dir = Some(dir.join("seed"));
    let h = Hub::start(settings).await.unwrap();
    let db = h.store.target().clone();
    let park = |role| [Grant::new(role, Scope::park("p1")).unwrap()];
    let tokens = [
        account(&db, "lee", &park(Role::ParkManager)),
        account(&db, "wang", &park(Role::ParkManager)),
        account(&db, "zhou", &park(Role::Finance)),
        account(
            &db,
            "acme-admin",
            &[Grant::new(Role::EnterpriseAdmin, Scope::enterprise("p1", "acme")).unwrap()],
        ),
    ];
    h.auth.reload().await.unwrap();
    (h, tokens)
}

/// Two active contracts (acme's monthly one on r101 from 15 January 2026, globex's
/// quarterly fixed rent on r102 from 1 February), then the March run twice; answers each
/// bill's id and digest.
async fn two_contracts_and_the_march_run(h: &Hub, t: &[String; 4]) -> Vec<(String, String)> {
    let a = h.api_addr;
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(a, Some(token), method, path, body)
    };
    let mut globex = contract("globex", "r102");
    globex["start"] = json!("2026-02-01");
    globex["rent"] = json!({"fixed_month_fen": 500_000});
    globex["property_fee"] = json!({"fixed_month_fen": 60_000});
    globex["free_rent"] = json!([]);
    globex["cycle"] = json!("quarterly");
    globex["electricity_tariff"] = Value::Null;
    for (id, body) in [("k1", contract("acme", "r101")), ("k3", globex)] {
        let (st, v) = call(
            &t[0],
            "PUT",
            &format!("/api/v1/parks/p1/contracts/{id}"),
            Some(body),
        );
        assert_eq!(st, 200, "{v}");
        for (who, action) in [(0, "submit"), (1, "approve"), (0, "activate")] {
            let (st, v) = call(
                &t[who],
                "POST",
                &format!("/api/v1/parks/p1/contracts/{id}/actions"),
                Some(json!({"action": action})),
            );
            assert_eq!(st, 200, "{action}: {v}");
        }
    }
    // Park managers do not run bills; finance does.
    let run = |month: &str| {
        call(
            &t[2],
            "POST",
            "/api/v1/parks/p1/bill-runs",
            Some(json!({"month": month})),
        )
    };
    let (st, _) = call(
        &t[0],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-03"})),
    );
    assert_eq!(st, 403);
    let (st, body) = run("2026-13");
    assert_eq!(st, 422, "{body}");
    let (st, march) = run("2026-03");
    assert_eq!(st, 200, "{march}");
    assert_eq!(
        march["bills"],
        json!(["202603-acme-1", "202603-globex-1"]),
        "{march}"
    );
    // Energy waits for the tariff the contract names (electricity and its common share,
    // January and February).
    assert_eq!(march["pending"].as_array().unwrap().len(), 4, "{march}");
    assert!(
        march["pending"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("power")
    );
    // A second run of the month bills nothing.
    let (st, again) = run("2026-03");
    assert_eq!((st, again["lines"].as_i64()), (200, Some(0)), "{again}");
    assert_eq!(again["bills"], json!([]));
    let (_, bills) = call(&t[2], "GET", "/api/v1/parks/p1/bills?month=2026-03", None);
    bills["bills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bill_runs_bill_each_day_once_reproducibly_with_late_fees_and_credits() {
    let dir = tempfile::tempdir().unwrap();
    let (h, t) = park_with_people(dir.path()).await;
    let a = h.api_addr;
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(a, Some(token), method, path, body)
    };
    let digests = two_contracts_and_the_march_run(&h, &t).await;

    // The same inputs on another hub give byte-identical bills.
    let other = tempfile::tempdir().unwrap();
    let (h2, t2) = park_with_people(other.path()).await;
    assert_eq!(two_contracts_and_the_march_run(&h2, &t2).await, digests);

    // acme's March bill: the deposit, rent and fee from the start (January wholly rent-free,
    // half of February), each line explained, the total the sum of its lines.
    let (st, bill) = call(&t[2], "GET", "/api/v1/parks/p1/bills/202603-acme-1", None);
    assert_eq!(st, 200, "{bill}");
    let lines: Vec<(String, String, i64)> = bill["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["charge"].as_str().unwrap().to_string(),
                l["from"].as_str().unwrap().to_string(),
                l["amount_fen"].as_i64().unwrap(),
            )
        })
        .collect();
    let expect = |v: &[(&str, &str, i64)]| -> Vec<(String, String, i64)> {
        v.iter()
            .map(|(c, f, a)| (c.to_string(), f.to_string(), *a))
            .collect()
    };
    assert_eq!(
        lines,
        expect(&[
            ("deposit", "2026-01-15", 2_000_000),
            ("rent", "2026-01-15", 0),
            ("rent", "2026-02-01", 482_000),
            ("rent", "2026-03-01", 964_000),
            // 144,600 a month: 17 of 31 days in January.
            ("property_fee", "2026-01-15", 79_297),
            ("property_fee", "2026-02-01", 144_600),
            ("property_fee", "2026-03-01", 144_600),
        ])
    );
    let sum: i64 = lines.iter().map(|l| l.2).sum();
    assert_eq!(bill["total_fen"].as_i64(), Some(sum));
    assert_eq!(bill["lines"][2]["detail"]["free_days"], 14);
    assert_eq!(bill["state"], "draft");
    // globex pays a quarter in advance: February to April.
    let (_, g) = call(&t[2], "GET", "/api/v1/parks/p1/bills/202603-globex-1", None);
    let months: Vec<&str> = g["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["charge"] == "rent")
        .map(|l| l["from"].as_str().unwrap())
        .collect();
    assert_eq!(months, ["2026-02-01", "2026-03-01", "2026-04-01"]);

    // Drafts are finance's: the enterprise sees its bills once issued, and only its own.
    let (_, own) = call(
        &t[3],
        "GET",
        "/api/v1/parks/p1/enterprises/acme/bills",
        None,
    );
    assert_eq!(own["total"], 0, "{own}");
    let (st, issued) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bills/202603-acme-1/issue",
        Some(json!({"date": "2026-03-01"})),
    );
    assert_eq!(st, 200, "{issued}");
    // Issued, and (the month is a past one) already past its due date.
    assert_eq!(
        (issued["state"].as_str(), issued["due_date"].as_str()),
        (Some("overdue"), Some("2026-03-16"))
    );
    let (st, _) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bills/202603-acme-1/issue",
        Some(json!({})),
    );
    assert_eq!(st, 409);
    let (_, own) = call(
        &t[3],
        "GET",
        "/api/v1/parks/p1/enterprises/acme/bills",
        None,
    );
    assert_eq!(own["total"], 1, "{own}");
    assert_eq!(own["bills"][0]["lines"].as_array().unwrap().len(), 7);
    assert_eq!(
        call(
            &t[3],
            "GET",
            "/api/v1/parks/p1/enterprises/globex/bills",
            None
        )
        .0,
        403
    );
    assert_eq!(call(&t[3], "GET", "/api/v1/parks/p1/bills", None).0, 403);

    // April: acme's rent and fee, and a late fee on the unpaid March bill from the end of
    // its grace (26 March) to the month's start: 5 days at 0.05 % a day.
    let total = bill["total_fen"].as_i64().unwrap();
    let (_, april) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-04"})),
    );
    assert_eq!(april["bills"], json!(["202604-acme-1"]), "{april}");
    let (_, b) = call(&t[2], "GET", "/api/v1/parks/p1/bills/202604-acme-1", None);
    let late: Vec<&Value> = b["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["charge"] == "late_fee")
        .collect();
    assert_eq!(late.len(), 1, "{b}");
    assert_eq!(late[0]["key"], "202603-acme-1");
    assert_eq!(late[0]["from"], "2026-03-27");
    let exact = total as i128 * 5 * 5;
    assert_eq!(
        late[0]["amount_fen"].as_i64().unwrap() as i128,
        (exact + 5_000) / 10_000
    );

    // acme leaves on 20 April: May credits the ten days of April billed in advance.
    let (st, v) = call(
        &t[0],
        "POST",
        "/api/v1/parks/p1/contracts/k1/actions",
        Some(json!({"action": "terminate", "last_day": "2026-04-20", "reason": "moving out"})),
    );
    assert_eq!(st, 200, "{v}");
    let (_, may) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-05"})),
    );
    let (_, b) = call(&t[2], "GET", "/api/v1/parks/p1/bills/202605-acme-1", None);
    let credits: Vec<(String, String, i64)> = b["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["credit"] == true)
        .map(|l| {
            (
                l["charge"].as_str().unwrap().to_string(),
                l["from"].as_str().unwrap().to_string(),
                l["amount_fen"].as_i64().unwrap(),
            )
        })
        .collect();
    // 10 of 30 days: 964,000 → 321,333.3 and 144,600 → 48,200.
    assert_eq!(
        credits,
        expect(&[
            ("rent", "2026-04-21", -321_333),
            ("property_fee", "2026-04-21", -48_200)
        ]),
        "{may} {b}"
    );
    // Payments on the March bill: part on 10 May, the rest on 20 May; a reference is
    // recorded once, nobody pays more than is owed, and a draft takes no payment.
    let pay = |bill: &str, amount: i64, reference: &str, date: &str| {
        call(
            &t[2],
            "POST",
            &format!("/api/v1/parks/p1/bills/{bill}/payments"),
            Some(
                json!({"amount_fen": amount, "method": "transfer", "reference": reference, "received_date": date}),
            ),
        )
    };
    let (st, v) = pay("202603-acme-1", 1_000_000, "BANK-0001", "2026-05-10");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["paid_fen"].as_i64()),
        (Some("overdue"), Some(1_000_000))
    );
    let (st, v) = pay("202603-acme-1", 1_000_000, "BANK-0001", "2026-05-10");
    assert_eq!(st, 409, "{v}");
    let (st, v) = pay("202603-acme-1", total, "BANK-0002", "2026-05-20");
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("amount_fen"),
        "{v}"
    );
    assert_eq!(pay("202605-acme-1", 100, "BANK-0003", "2026-05-20").0, 409);
    let (st, v) = pay(
        "202603-acme-1",
        total - 1_000_000,
        "BANK-0004",
        "2026-05-20",
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("paid")), "{v}");
    let (_, listed) = call(
        &t[2],
        "GET",
        "/api/v1/parks/p1/payments?bill=202603-acme-1",
        None,
    );
    assert_eq!(listed["payments"].as_array().unwrap().len(), 2, "{listed}");
    // June charges May's late days on each day's balance: 9 days owing all of it, 10 days
    // owing what the first payment left, nothing after the second.
    let (_, june) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-06"})),
    );
    let (_, b) = call(&t[2], "GET", "/api/v1/parks/p1/bills/202606-acme-1", None);
    let late: Vec<&Value> = b["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["charge"] == "late_fee")
        .collect();
    assert_eq!(late.len(), 1, "{june} {b}");
    let balance_days = 9 * total as i128 + 10 * (total as i128 - 1_000_000);
    assert_eq!(
        late[0]["amount_fen"].as_i64().unwrap() as i128,
        (balance_days * 5 + 5_000) / 10_000
    );

    // Every run is in the park's audit, the refused month's too (a caller without the
    // permission never reaches the run).
    let (_, audit) = call(&t[0], "GET", "/api/v1/parks/p1/audit?limit=200", None);
    let runs = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "bill_run")
        .count();
    assert_eq!(runs, 6, "{audit}");
}

/// 15-minute counter rollups of building b1's `points` from 15 January to 1 March 2026,
/// 0.25 kWh each, uploaded as an edge uploads them, leaving out `missing` (a point and a
/// local day whose buckets never came).
async fn upload_meter_rollups(h: &Hub, points: &[&str], missing: (&str, &str)) {
    use sync_protocol::{EdgeIdentity, HubSink, Record, RollupBatch, RollupRow, UploadStream};
    let edge = EdgeIdentity {
        edge_id: "e-b1".into(),
        park: "p1".into(),
        building: "b1".into(),
    };
    let at = |d: &str| park_model::time::local_timestamp(d, 0, 0, 480).unwrap();
    let (gap_from, gap_to) = (at(missing.1), at(missing.1) + 86_400_000_000);
    let mut rows = Vec::new();
    for point in points {
        let mut bucket = at("2026-01-15");
        let mut reading = 1000.0;
        while bucket < at("2026-03-01") {
            reading += 0.25;
            if !(*point == missing.0 && (gap_from..gap_to).contains(&bucket)) {
                rows.push(RollupRow {
                    point: point.to_string(),
                    period_s: 900,
                    bucket,
                    count: 15,
                    bad: 0,
                    min: reading - 0.25,
                    max: reading,
                    sum: reading * 15.0,
                    last: reading,
                    last_ts: bucket + 899_000_000,
                    delta: 0.25,
                });
            }
            bucket += 900_000_000;
        }
    }
    let mut sink = h.store.sink(cloud_hub::store::BuildingKey::new("p1", "b1"));
    for (seq, chunk) in rows.chunks(2000).enumerate() {
        let batch = RollupBatch {
            rows: chunk.to_vec(),
        };
        sink.accept(
            &edge,
            UploadStream::Rollups,
            seq as u64 + 1,
            Record::Rollups(&batch),
        )
        .unwrap();
    }
    h.store.flush().await;
}

/// Energy from meters to bills: a time-of-use tariff, a room's own meter, a meter that
/// changes hands mid-February, the building's common meter shared by area, a day of
/// readings that never came (estimated, and marked), and a past tariff version that
/// cannot change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_lines_follow_the_meters_that_fed_each_space_at_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let (h, t) = park_with_people(dir.path()).await;
    let a = h.api_addr;
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(a, Some(token), method, path, body)
    };
    // Peak from 8:00 to 12:00 on workdays at 1.1104 yuan, flat otherwise at 0.6532.
    let span = |m: u16, band: &str| json!({"start_minute": m, "band": band});
    let version = |from: &str, flat: i64| {
        json!({"valid_from": from, "seasons": [{"months": [1,2,3,4,5,6,7,8,9,10,11,12],
            "workday": [span(0, "flat"), span(480, "peak"), span(720, "flat")],
            "non_workday": [span(0, "flat")]}],
            "prices_e4": {"flat": flat, "peak": 11104}})
    };
    let tariff = |versions: Value| json!({"name": "商业电价", "utility": "electricity", "versions": versions});
    let (st, v) = call(
        &t[2],
        "PUT",
        "/api/v1/parks/p1/utility-tariffs/power",
        Some(tariff(json!([version("2026-01-01", 6532)]))),
    );
    assert_eq!(st, 200, "{v}");
    let mut bad = version("2026-01-01", 6532);
    bad["seasons"][0]["workday"][1]["start_minute"] = json!(487);
    let (st, v) = call(
        &t[2],
        "PUT",
        "/api/v1/parks/p1/utility-tariffs/other",
        Some(tariff(json!([bad]))),
    );
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("versions[0].seasons[0].workday"),
        "{v}"
    );
    // The version in force cannot change; a later one can be added.
    let (st, v) = call(
        &t[2],
        "PUT",
        "/api/v1/parks/p1/utility-tariffs/power",
        Some(tariff(json!([version("2026-01-01", 7000)]))),
    );
    assert_eq!(st, 409, "{v}");
    let (st, v) = call(
        &t[2],
        "PUT",
        "/api/v1/parks/p1/utility-tariffs/power",
        Some(tariff(json!([
            version("2026-01-01", 6532),
            version("2027-01-01", 7000)
        ]))),
    );
    assert_eq!(st, 200, "{v}");

    // Meters: r101's own, the common one, and meter 3 feeding r101 until 14 February and
    // r102 from the 15th.
    let meter = |id: &str, point: &str, space: Value, from: &str, to: Value| {
        call(
            &t[2],
            "PUT",
            &format!("/api/v1/parks/p1/meters/{id}"),
            Some(
                json!({"building_id": "b1", "point": point, "utility": "electricity",
                "space_id": space, "from": from, "to": to}),
            ),
        )
    };
    assert_eq!(
        meter("m1", "meter1/kwh", json!("r101"), "2026-01-01", Value::Null).0,
        200
    );
    assert_eq!(
        meter("m2", "meter2/kwh", Value::Null, "2026-01-01", Value::Null).0,
        200
    );
    assert_eq!(
        meter(
            "m3",
            "meter3/kwh",
            json!("r101"),
            "2026-01-01",
            json!("2026-02-14")
        )
        .0,
        200
    );
    assert_eq!(
        meter("m4", "meter3/kwh", json!("r102"), "2026-02-15", Value::Null).0,
        200
    );
    let (st, v) = meter("m5", "meter1/kwh", json!("r102"), "2026-02-01", Value::Null);
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("m1"), "{v}");
    let (st, v) = meter("m6", "meter9/kwh", json!("r999"), "2026-02-01", Value::Null);
    assert_eq!(st, 422, "{v}");

    // Both contracts on electricity (globex from 1 February), readings uploaded, 10 February
    // of meter 1 never came.
    upload_meter_rollups(
        &h,
        &["meter1/kwh", "meter2/kwh", "meter3/kwh"],
        ("meter1/kwh", "2026-02-10"),
    )
    .await;
    let mut globex = contract("globex", "r102");
    globex["start"] = json!("2026-02-01");
    globex["free_rent"] = json!([]);
    for (id, body) in [("k1", contract("acme", "r101")), ("k3", globex)] {
        assert_eq!(
            call(
                &t[0],
                "PUT",
                &format!("/api/v1/parks/p1/contracts/{id}"),
                Some(body)
            )
            .0,
            200
        );
        for (who, action) in [(0, "submit"), (1, "approve"), (0, "activate")] {
            let (st, v) = call(
                &t[who],
                "POST",
                &format!("/api/v1/parks/p1/contracts/{id}/actions"),
                Some(json!({"action": action})),
            );
            assert_eq!(st, 200, "{v}");
        }
    }
    let (st, march) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-03"})),
    );
    assert_eq!(st, 200, "{march}");
    assert_eq!(march["pending"], json!([]), "{march}");
    let line = |bill: &str, charge: &str, from: &str| -> Value {
        let (_, b) = call(
            &t[2],
            "GET",
            &format!("/api/v1/parks/p1/bills/{bill}"),
            None,
        );
        b["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["charge"] == charge && l["from"] == from)
            .cloned()
            .unwrap_or_else(|| panic!("no {charge} line from {from} in {b}"))
    };
    // acme's February: meter 1 all month and meter 3 for 14 days, 96 quarter hours a day
    // at 0.25 kWh; 10 February estimated from meter 1's other days.
    let own = line("202603-acme-1", "electricity", "2026-02-01");
    assert_eq!(own["detail"]["consumption_milli"], (28 + 14) * 96 * 250);
    assert_eq!(own["detail"]["estimated_milli"], 96 * 250);
    assert_eq!(own["estimated"], true);
    // 20 workdays of meter 1 and 10 of meter 3 have 16 peak quarter hours each.
    let peak = (20 + 10) * 16 * 250;
    let flat = (28 + 14) * 96 * 250 - peak;
    let exact = peak as i128 * 11104 + flat as i128 * 6532;
    assert_eq!(
        own["amount_fen"].as_i64().unwrap() as i128,
        (exact + 50_000) / 100_000,
        "{own}"
    );
    // globex gets meter 3 from the 15th.
    let theirs = line("202603-globex-1", "electricity", "2026-02-01");
    assert_eq!(theirs["detail"]["consumption_milli"], 14 * 96 * 250);
    assert_eq!(theirs["estimated"], false);
    // The common meter by area leased: 120.50 of 200.50 m² for acme in February.
    let common = line("202603-acme-1", "common_electricity", "2026-02-01");
    let per_bucket = (250 * 12_050 * 2 + 20_050) / (2 * 20_050);
    assert_eq!(common["detail"]["consumption_milli"], 28 * 96 * per_bucket);
    // January: acme alone from the 15th, the whole common meter its own.
    let january = line("202603-acme-1", "common_electricity", "2026-01-15");
    assert_eq!(january["detail"]["consumption_milli"], 17 * 96 * 250);
    // A second run bills no energy again.
    let (_, again) = call(
        &t[2],
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-03"})),
    );
    assert_eq!(again["lines"], 0, "{again}");
}

/// A renewal follows its contract from the day after it ends, and a change replaces one
/// from a day within its term: activating either ends the one it follows there, in the
/// contracts and in the leases the edges decide from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_and_a_change_end_the_contract_they_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (h, t) = park_with_people(dir.path()).await;
    let a = h.api_addr;
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(a, Some(token), method, path, body)
    };
    let put = |id: &str, body: Value| {
        call(
            &t[0],
            "PUT",
            &format!("/api/v1/parks/p1/contracts/{id}"),
            Some(body),
        )
    };
    let activate = |id: &str| {
        for (who, action) in [(0, "submit"), (1, "approve"), (0, "activate")] {
            let (st, v) = call(
                &t[who],
                "POST",
                &format!("/api/v1/parks/p1/contracts/{id}/actions"),
                Some(json!({"action": action})),
            );
            assert_eq!(st, 200, "{id} {action}: {v}");
        }
    };
    assert_eq!(put("k1", contract("acme", "r101")).0, 200);
    activate("k1");
    // A renewal must start the day after k1's last day, and follow an active contract of
    // the same enterprise.
    let mut renewal = contract("acme", "r101");
    renewal["start"] = json!("2029-01-10");
    renewal["end"] = json!("2032-01-14");
    renewal["free_rent"] = json!([]);
    renewal["follows"] = json!("k1");
    renewal["follow_kind"] = json!("renewal");
    let (st, v) = put("k1r", renewal.clone());
    assert_eq!(st, 422, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("start"), "{v}");
    let mut other = renewal.clone();
    other["enterprise_id"] = json!("globex");
    other["start"] = json!("2029-01-15");
    let (st, v) = put("k1x", other);
    assert_eq!(st, 422, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("follows"), "{v}");
    renewal["start"] = json!("2029-01-15");
    let (st, v) = put("k1r", renewal);
    assert_eq!(
        (st, v["terms"]["follows"].as_str()),
        (200, Some("k1")),
        "{v}"
    );
    activate("k1r");
    let (_, k1) = call(&t[0], "GET", "/api/v1/parks/p1/contracts/k1", None);
    assert_eq!(
        (k1["state"].as_str(), k1["terms"]["end"].as_str()),
        (Some("renewed"), Some("2029-01-14"))
    );
    assert_eq!(
        k1["history"].as_array().unwrap().last().unwrap()["action"],
        "supersede"
    );

    // A change of the renewal from 1 January 2030 (a higher rent): the renewal ends the
    // day before, in its lease too.
    let mut change = contract("acme", "r101");
    change["start"] = json!("2030-01-01");
    change["end"] = json!("2032-01-14");
    change["free_rent"] = json!([]);
    change["rent"] = json!({"per_m2_month_fen": 9000});
    change["follows"] = json!("k1r");
    change["follow_kind"] = json!("change");
    assert_eq!(put("k1c", change).0, 200);
    activate("k1c");
    let (_, k1r) = call(&t[0], "GET", "/api/v1/parks/p1/contracts/k1r", None);
    assert_eq!(
        (k1r["state"].as_str(), k1r["terms"]["end"].as_str()),
        (Some("changed"), Some("2029-12-31"))
    );
    let d = directory(&h);
    let lease = d.get::<Lease>("k1r").unwrap().unwrap();
    assert_eq!(
        lease.valid_to,
        park_model::time::local_timestamp("2030-01-01", 0, 0, 480).unwrap()
    );
    assert_eq!(
        d.get::<Lease>("k1c").unwrap().unwrap().monthly_rent_fen,
        1_084_500
    );
    assert_eq!(
        d.get::<Space>("r101").unwrap().unwrap().state,
        SpaceState::Leased
    );
}
