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
