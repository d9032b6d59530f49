//! Leads over the hub's real HTTP API: made by a leasing officer, followed up, shown
//! intent on vacant spaces, lost and reopened, converted into an enterprise of the park's
//! directory for which a contract is then drafted; the contact's phone number sealed at
//! rest, whole for the owner and personal-data readers only, and never in the audit log.

mod common;

use std::path::Path;

use cloud_hub::Hub;
use common::account;
use park_model::ParkDirectory;
use park_model::directory::{Enterprise, Space, SpaceKind, SpaceState};
use park_model::identity::{Grant, Role, Scope};
use serde_json::{Value, json};

fn seed(dir: &Path) {
    let mut d = ParkDirectory::new("p1", 480, 1).unwrap();
    for (id, state) in [("r201", SpaceState::Vacant), ("r202", SpaceState::Leased)] {
        d.upsert(&Space {
            id: id.into(),
            building_id: "b1".into(),
            floor: 2,
            area_m2: 150.0,
            name: id.into(),
            kind: SpaceKind::Room,
            state,
        })
        .unwrap();
    }
    d.commit("seed", 1);
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    std::fs::write(dir.join("p1/directory.automerge"), d.save()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_is_followed_up_and_becomes_an_enterprise_with_a_contract() {
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("seed"));
    let mut settings = common::settings(dir.path());
    settings.documents_seed_dir = Some(dir.path().join("seed"));
    let h = Hub::start(settings).await.unwrap();
    let db = h.store.target().clone();
    let park = |role| [Grant::new(role, Scope::park("p1")).unwrap()];
    let lee = account(&db, "lee", &park(Role::Leasing));
    let sun = account(&db, "sun", &park(Role::Leasing));
    let wang = account(&db, "wang", &park(Role::ParkManager));
    let zhou = account(&db, "zhou", &park(Role::Finance));
    h.auth.reload().await.unwrap();
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        common::call(h.api_addr, Some(token), method, path, body)
    };
    let lead = "/api/v1/parks/p1/leads/l1";
    let body = json!({
        "company": "云帆智能科技有限公司",
        "contact_name": "陈经理",
        "phone": "13812345678",
        "source": "visit",
        "need_area_centi_m2": 15000,
        "need_from": "2026-04-01",
        "budget_fen_per_m2_month": 7500,
        "space_ids": ["r999"]
    });
    let (st, v) = call(&lee, "PUT", lead, Some(body.clone()));
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("space_ids[0]"),
        "{v}"
    );
    let mut body = body;
    body["space_ids"] = json!([]);
    body["phone"] = json!("call me");
    let (st, v) = call(&lee, "PUT", lead, Some(body.clone()));
    assert_eq!(st, 422, "{v}");
    body["phone"] = json!("13812345678");
    let (st, v) = call(&lee, "PUT", lead, Some(body.clone()));
    assert_eq!((st, v["state"].as_str()), (200, Some("new")), "{v}");
    // The owner sees the number; another leasing officer sees it masked; finance does not
    // see leads at all; a park manager (who reads personal data) sees it whole.
    assert_eq!(v["phone"], "13812345678");
    let (_, other) = call(&sun, "GET", lead, None);
    assert_eq!(
        (other["phone"].as_str(), other["phone_masked"].as_bool()),
        (Some("138****5678"), Some(true))
    );
    let (st, _) = call(&zhou, "GET", lead, None);
    assert_eq!(st, 403);
    let (_, mgr) = call(&wang, "GET", lead, None);
    assert_eq!(mgr["phone"], "13812345678");
    // Stored sealed, and absent from the audit log.
    let (_, audit) = call(&wang, "GET", "/api/v1/parks/p1/audit?limit=100", None);
    assert!(!audit.to_string().contains("13812345678"), "{audit}");
    let handle = cloud_hub::store::open_db(&db).unwrap();
    let stored: String = handle
        .conn()
        .query_row(
            "SELECT phone FROM leads WHERE id = 'l1'",
            park_db::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!stored.contains("13812345678"));

    // A follow-up moves it on and sets when the next is due; a past date is refused.
    let fu = format!("{lead}/follow-ups");
    let (st, _) = call(
        &lee,
        "POST",
        &fu,
        Some(json!({"kind": "visit", "note": "看了二楼", "next_date": "2020-01-01"})),
    );
    assert_eq!(st, 422);
    let (st, v) = call(
        &lee,
        "POST",
        &fu,
        Some(json!({"kind": "visit", "note": "看了二楼，喜欢 r201", "next_date": "2099-01-10"})),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("following")), "{v}");
    assert_eq!(v["next_date"], "2099-01-10");
    assert_eq!(v["follow_ups"][0]["actor"], "lee");

    // Intent needs spaces, and vacant ones.
    let act =
        |token: &str, body: Value| call(token, "POST", &format!("{lead}/actions"), Some(body));
    let (st, v) = act(&lee, json!({"action": "intent"}));
    assert_eq!(st, 422, "{v}");
    body["space_ids"] = json!(["r202"]);
    call(&lee, "PUT", lead, Some(body.clone()));
    let (st, v) = act(&lee, json!({"action": "intent"}));
    assert_eq!(st, 409, "a leased space: {v}");
    body["space_ids"] = json!(["r201"]);
    let (_, v) = call(&lee, "PUT", lead, Some(body.clone()));
    assert_eq!(v["space_ids"], json!(["r201"]));
    let (st, v) = act(&lee, json!({"action": "intent"}));
    assert_eq!((st, v["state"].as_str()), (200, Some("intent")), "{v}");

    // Lost (with a reason), reopened.
    let (st, _) = act(&lee, json!({"action": "lose"}));
    assert_eq!(st, 422);
    let (_, v) = act(&lee, json!({"action": "lose", "reason": "预算不足"}));
    assert_eq!(v["state"], "lost");
    let (st, _) = call(&lee, "PUT", lead, Some(body.clone()));
    assert_eq!(st, 409);
    let (_, v) = act(&lee, json!({"action": "reopen"}));
    assert_eq!(v["state"], "following");
    let (_, list) = call(&lee, "GET", "/api/v1/parks/p1/leads?q=云帆", None);
    assert_eq!(list["total"], 1, "{list}");
    let (_, list) = call(&lee, "GET", "/api/v1/parks/p1/leads?state=lost", None);
    assert_eq!(list["total"], 0, "{list}");

    // Converted: the company is an enterprise of the park, for which a contract is drafted.
    let (st, v) = act(
        &lee,
        json!({"action": "convert", "enterprise_id": "bad id"}),
    );
    assert_eq!(st, 422, "{v}");
    let (st, v) = act(
        &lee,
        json!({"action": "convert", "enterprise_id": "yunfan"}),
    );
    assert_eq!(
        (st, v["state"].as_str(), v["enterprise_id"].as_str()),
        (200, Some("converted"), Some("yunfan")),
        "{v}"
    );
    let (st, _) = act(
        &lee,
        json!({"action": "convert", "enterprise_id": "yunfan"}),
    );
    assert_eq!(st, 409);
    let d = ParkDirectory::load(&h.documents.get("p1", "directory").unwrap().save()).unwrap();
    let e: Enterprise = d.get("yunfan").unwrap().unwrap();
    assert_eq!(e.name, "云帆智能科技有限公司");
    let (st, v) = call(
        &lee,
        "PUT",
        "/api/v1/parks/p1/contracts/k-yunfan",
        Some(json!({
            "enterprise_id": "yunfan",
            "space_ids": ["r201"],
            "start": "2026-04-01",
            "end": "2029-03-31",
            "rent": {"per_m2_month_fen": 7500},
            "property_fee": {"per_m2_month_fen": 1000},
            "cycle": "quarterly",
            "common_share": "by_area"
        })),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("draft")), "{v}");
}
