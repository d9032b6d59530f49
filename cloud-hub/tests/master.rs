//! The park's master data edited over the hub's real HTTP API: enterprises, people, access
//! groups and credentials' status written into the park's directory document, with
//! refusals that name the field, who made each record, the audit, the role checks, and the
//! edits still there after a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use cloud_hub::Hub;
use common::account;
use park_model::directory::{
    AccessGroup, Credential, CredentialKey, CredentialKind, CredentialStatus, Enterprise,
    EnterpriseKind, EnterpriseStatus, Person, PersonStatus,
};
use park_model::identity::{Grant, Role, Scope};
use park_model::parking::{Lot, Tariff};
use park_model::{ParkDirectory, ParkingDoc};
use serde_json::{Value, json};

/// A park `p1` with an enterprise, a group, a person and her card.
fn seed(dir: &Path) {
    let mut d = ParkDirectory::new("p1", 480, 1).unwrap();
    d.upsert(&Enterprise {
        id: "acme".into(),
        name: "Acme".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Operator,
    })
    .unwrap();
    d.upsert(&AccessGroup {
        id: "lobby".into(),
        name: "Lobby".into(),
        door_ids: vec!["d1".into()],
        schedule_id: None,
    })
    .unwrap();
    d.upsert(&Person {
        id: "ann".into(),
        name: "Ann".into(),
        enterprise_id: "acme".into(),
        status: PersonStatus::Active,
        access_group_ids: vec!["lobby".into()],
    })
    .unwrap();
    let key = CredentialKey::new(&[7; 32]);
    d.upsert(
        &Credential::from_secret(&key, "c-ann", "ann", CredentialKind::Card, "CARD-0001-ANN")
            .unwrap(),
    )
    .unwrap();
    d.commit("seed", 1);
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    std::fs::write(dir.join("p1/directory.automerge"), d.save()).unwrap();
    // Its car park: one lot with a tariff.
    let mut p = ParkingDoc::new("p1", 480, 1).unwrap();
    p.upsert(&Tariff {
        id: "std".into(),
        currency: "CNY".into(),
        free_minutes: 15,
        period_minutes: 60,
        day_rate_fen: 500,
        night_start_minute: 0,
        night_end_minute: 0,
        night_rate_fen: 500,
        daily_cap_fen: None,
        lost_ticket_fen: 5000,
    })
    .unwrap();
    p.upsert(&Lot {
        id: "lot-a".into(),
        name: "Lot A".into(),
        capacity: 10,
        tariff_id: Some("std".into()),
    })
    .unwrap();
    p.commit("seed", 1);
    std::fs::write(dir.join("p1/parking.automerge"), p.save()).unwrap();
}

/// A request with a token, over real HTTP.
fn call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    common::call(addr, Some(token), method, path, body)
}

/// A hub over the seeded park, with a park manager (their token).
async fn with_manager(dir: &Path) -> (Hub, park_db::Target, String) {
    seed(&dir.join("seed"));
    let h = hub(dir).await;
    let db = h.store.target().clone();
    let manager = account(
        &db,
        "manager",
        &[Grant::new(Role::ParkManager, Scope::park("p1")).unwrap()],
    );
    (h, db, manager)
}

async fn hub(dir: &Path) -> Hub {
    let mut settings = common::settings(dir);
    settings.documents_seed_dir = Some(dir.join("seed"));
    let key = dir.join("p1-credential.key");
    std::fs::write(&key, "07".repeat(32)).unwrap();
    settings.credential_keys.insert("p1".into(), key);
    Hub::start(settings).await.unwrap()
}

/// The directory as the hub holds it now.
fn directory(h: &Hub) -> ParkDirectory {
    ParkDirectory::load(&h.documents.get("p1", "directory").unwrap().save()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_park_manager_edits_the_directory_with_checked_fields_and_the_edits_last() {
    let dir = tempfile::tempdir().unwrap();
    let (h, db, manager) = with_manager(dir.path()).await;
    let engineer = account(
        &db,
        "engineer",
        &[Grant::new(Role::FacilityEngineer, Scope::building("p1", "b1")).unwrap()],
    );
    let officer = account(
        &db,
        "officer",
        &[Grant::new(Role::SecurityOfficer, Scope::park("p1")).unwrap()],
    );
    h.auth.reload().await.unwrap();
    let a = h.api_addr;

    // A new enterprise, then a person in it with the park's group.
    let (st, e) = call(
        a,
        &manager,
        "PUT",
        "/api/v1/parks/p1/enterprises/globex",
        Some(json!({"name": " Globex 科技 ", "status": "active", "kind": "tenant"})),
    );
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["name"], "Globex 科技");
    assert!(
        e["meta"]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("manager"),
        "{e}"
    );
    assert!(e["meta"]["created_at"].as_i64().unwrap() > 0);
    let (st, p) = call(
        a,
        &manager,
        "PUT",
        "/api/v1/parks/p1/people/bob",
        Some(
            json!({"name": "Bob", "enterprise_id": "globex", "status": "active", "access_group_ids": ["lobby"]}),
        ),
    );
    assert_eq!(st, 200, "{p}");
    let d = directory(&h);
    assert_eq!(
        d.get::<Person>("bob").unwrap().unwrap().enterprise_id,
        "globex"
    );
    assert_eq!(
        d.get::<Enterprise>("globex").unwrap().unwrap().kind,
        EnterpriseKind::Tenant
    );

    // Refusals name the field, and change nothing.
    let heads = directory(&h).heads();
    for (path, body, field) in [
        (
            "/api/v1/parks/p1/people/carl",
            json!({"name": "Carl", "enterprise_id": "nobody", "status": "active"}),
            "enterprise_id",
        ),
        (
            "/api/v1/parks/p1/people/carl",
            json!({"name": "Carl", "enterprise_id": "acme", "status": "active", "access_group_ids": ["vault"]}),
            "access_group_ids",
        ),
        (
            "/api/v1/parks/p1/people/carl",
            json!({"name": "", "enterprise_id": "acme", "status": "active"}),
            "name",
        ),
        (
            "/api/v1/parks/p1/people/carl",
            json!({"name": "Carl", "enterprise_id": "acme", "status": "gone"}),
            "status",
        ),
        (
            "/api/v1/parks/p1/enterprises/bad%20id",
            json!({"name": "X", "status": "active", "kind": "tenant"}),
            "id",
        ),
        (
            "/api/v1/parks/p1/enterprises/initech",
            json!({"name": "X", "status": "active", "kind": "landlord"}),
            "kind",
        ),
        (
            "/api/v1/parks/p1/access-groups/night",
            json!({"name": "Night", "schedule_id": "nights"}),
            "schedule_id",
        ),
    ] {
        let (st, body) = call(a, &manager, "PUT", path, Some(body));
        assert_eq!(st, 422, "{path}: {body}");
        let message = body["error"]["message"]
            .as_str()
            .or(body["message"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(message.starts_with(&format!("{field}:")), "{path}: {body}");
    }
    let (st, body) = call(
        a,
        &manager,
        "PUT",
        "/api/v1/parks/p1/people/carl",
        Some(json!({"name": "Carl"})),
    );
    assert_eq!(st, 422, "{body}");
    assert!(
        body.to_string().contains("enterprise_id"),
        "the missing field is named: {body}"
    );
    let (st, _) = call(
        a,
        &manager,
        "PUT",
        "/api/v1/parks/nowhere/enterprises/x",
        Some(json!({"name": "X", "status": "active", "kind": "tenant"})),
    );
    assert_eq!(st, 403, "another park is not the manager's");
    assert_eq!(
        directory(&h).heads(),
        heads,
        "a refused edit changes nothing"
    );

    // Lists page and filter.
    let (st, page) = call(
        a,
        &manager,
        "GET",
        "/api/v1/parks/p1/people?of=globex",
        None,
    );
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["total"], 1);
    assert_eq!(page["people"][0]["id"], "bob");
    let (_, page) = call(
        a,
        &manager,
        "GET",
        "/api/v1/parks/p1/enterprises?limit=1&offset=1",
        None,
    );
    assert_eq!(
        (
            page["total"].as_u64(),
            page["enterprises"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    let (st, _) = call(a, &manager, "GET", "/api/v1/parks/p1/people?limit=0", None);
    assert_eq!(st, 400);

    // A card suspended with a reason; its value never appears, only its last characters.
    let (st, c) = call(
        a,
        &officer,
        "POST",
        "/api/v1/parks/p1/credentials/c-ann/status",
        Some(json!({"status": "suspended", "reason": "left at reception"})),
    );
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["status"], "suspended");
    assert!(c["masked"].as_str().unwrap().starts_with("••••"));
    assert!(!c.to_string().contains("CARD-0001-ANN"));
    assert_eq!(
        directory(&h)
            .get::<Credential>("c-ann")
            .unwrap()
            .unwrap()
            .status,
        CredentialStatus::Suspended
    );
    let (st, _) = call(
        a,
        &officer,
        "POST",
        "/api/v1/parks/p1/credentials/c-nobody/status",
        Some(json!({"status": "suspended", "reason": "x"})),
    );
    assert_eq!(st, 404);

    // Roles: an engineer may read but not edit; an officer may not edit enterprises.
    let (st, _) = call(
        a,
        &engineer,
        "PUT",
        "/api/v1/parks/p1/enterprises/x",
        Some(json!({"name": "X", "status": "active", "kind": "tenant"})),
    );
    assert_eq!(st, 403);
    let (st, _) = call(
        a,
        &officer,
        "PUT",
        "/api/v1/parks/p1/enterprises/x",
        Some(json!({"name": "X", "status": "active", "kind": "tenant"})),
    );
    assert_eq!(st, 403);

    // Every edit is in the hub's audit chain, refusals with their reason, and the chain
    // holds.
    let chain =
        accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap().conn()).unwrap();
    let has = |action: &str, target: &str, outcome: &str| {
        chain.iter().any(|r| {
            r.record.action == action
                && r.record.target == target
                && r.record.outcome.starts_with(outcome)
        })
    };
    assert!(has("enterprise_put", "p1/globex", "ok"));
    assert!(has("person_put", "p1/bob", "ok"));
    assert!(has("credential_status", "p1/c-ann", "ok"));
    assert!(has("person_put", "p1/carl", "refused"));
    assert!(park_model::audit::verify(&chain, None).is_ok());

    // A restart keeps every edit, with who made it.
    h.shutdown().await;
    let h = hub(dir.path()).await;
    let d = directory(&h);
    assert!(d.get::<Person>("bob").unwrap().is_some());
    assert_eq!(
        d.get::<Credential>("c-ann").unwrap().unwrap().status,
        CredentialStatus::Suspended
    );
    let (_, page) = call(
        h.api_addr,
        &manager,
        "GET",
        "/api/v1/parks/p1/enterprises?q=globex",
        None,
    );
    assert!(
        page["enterprises"][0]["meta"]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("manager")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_import_as_a_dry_run_then_all_or_nothing_and_export_in_the_same_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (h, db, manager) = with_manager(dir.path()).await;
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let import = |kind: &str, csv: String, dry_run: bool| {
        call(
            a,
            &manager,
            "POST",
            &format!("/api/v1/parks/p1/import/{kind}"),
            Some(json!({"csv": csv, "dry_run": dry_run})),
        )
    };

    // Two thousand people of the park's enterprise, one of them naming a group the park
    // does not have and one with a bad status: the dry run names both by line and column.
    let mut csv = String::from("人员编号,姓名,企业编号,门禁组,状态\n");
    for i in 0..2000 {
        let group = if i == 700 { "vault" } else { "lobby" };
        let status = if i == 1500 { "retired" } else { "active" };
        csv.push_str(&format!("emp-{i:04},员工 {i},acme,{group},{status}\n"));
    }
    let (st, r) = import("people", csv.clone(), true);
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (
            r["rows"].as_u64(),
            r["applied"].as_bool(),
            r["error_count"].as_u64()
        ),
        (Some(2000), Some(false), Some(2))
    );
    assert_eq!(
        r["errors"][0],
        json!({"line": 702, "column": "门禁组", "message": "no access group \"vault\" in this park"})
    );
    assert_eq!(r["errors"][1]["line"], 1502);
    assert_eq!(r["errors"][1]["column"], "状态");
    // The import itself with the same file changes nothing at all.
    let heads = directory(&h).heads();
    let (st, r) = import("people", csv.clone(), false);
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["applied"].as_bool(), r["error_count"].as_u64()),
        (Some(false), Some(2))
    );
    assert_eq!(directory(&h).heads(), heads);
    assert!(directory(&h).get::<Person>("emp-0001").unwrap().is_none());

    // Corrected, the dry run counts what would be new, and the import takes every row.
    let fixed = csv
        .replace(",vault,", ",lobby,")
        .replace(",retired\n", ",active\n");
    let (_, r) = import("people", fixed.clone(), true);
    assert_eq!(
        (r["created"].as_u64(), r["error_count"].as_u64()),
        (Some(2000), Some(0))
    );
    let (st, r) = import("people", fixed, false);
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["applied"].as_bool(), r["created"].as_u64()),
        (Some(true), Some(2000))
    );
    let d = directory(&h);
    assert_eq!(
        d.get::<Person>("emp-1999").unwrap().unwrap().name,
        "员工 1999"
    );
    let (_, page) = call(
        a,
        &manager,
        "GET",
        "/api/v1/parks/p1/people?of=acme&limit=1",
        None,
    );
    assert_eq!(page["total"], 2001);

    // The export has the import's columns and imports again, changing nothing new.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut res = agent
        .get(&format!("http://{a}/api/v1/parks/p1/export/people"))
        .header("Authorization", &format!("Bearer {manager}"))
        .call()
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res
        .body_mut()
        .with_config()
        .limit(10_000_000)
        .read_to_string()
        .unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,name,enterprise_id,status,access_group_ids,created_at,created_by,updated_at,updated_by"
        )
    );
    assert_eq!(text.lines().count(), 2002);
    let (_, r) = import("people", text, true);
    assert_eq!(
        (
            r["created"].as_u64(),
            r["updated"].as_u64(),
            r["error_count"].as_u64()
        ),
        (Some(0), Some(2001), Some(0))
    );

    // Enterprises the same way; an unknown kind is not found.
    let (_, r) = import(
        "enterprises",
        "id,name,kind\ninitech,Initech,tenant\n".into(),
        false,
    );
    assert_eq!(
        (r["applied"].as_bool(), r["created"].as_u64()),
        (Some(true), Some(1))
    );
    let (st, _) = import("spaceships", "id\nx\n".into(), true);
    assert_eq!(st, 404);
    // A file without a required column says which.
    let (_, r) = import("people", "id,name\nx,X\n".into(), true);
    assert_eq!(r["errors"][0]["column"], "enterprise_id");
    // The import is in the audit chain.
    let chain =
        accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap().conn()).unwrap();
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "import_people" && r.record.outcome == "ok")
    );
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "import_people" && r.record.outcome.starts_with("refused"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_issued_and_imported_on_the_hub_as_keyed_digests_only() {
    let dir = tempfile::tempdir().unwrap();
    let (h, db, manager) = with_manager(dir.path()).await;
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let key = CredentialKey::new(&[7; 32]);

    let (st, c) = call(
        a,
        &manager,
        "PUT",
        "/api/v1/parks/p1/credentials/c-ann-2",
        Some(json!({"person_id": "ann", "kind": "card", "value": "CARD-7777-0001"})),
    );
    assert_eq!(st, 200, "{c}");
    assert!(!c.to_string().contains("CARD-7777-0001"), "{c}");
    let stored = directory(&h).get::<Credential>("c-ann-2").unwrap().unwrap();
    assert_eq!(
        stored.digest,
        key.present(CredentialKind::Card, "CARD-7777-0001").digest
    );
    assert_eq!(c["masked"], format!("••••{}", stored.suffix));
    // Refusals name the field; a person the park does not have is refused.
    for (body, field) in [
        (
            json!({"person_id": "nobody", "kind": "card", "value": "X-1"}),
            "person_id",
        ),
        (
            json!({"person_id": "ann", "kind": "badge", "value": "X-1"}),
            "kind",
        ),
        (
            json!({"person_id": "ann", "kind": "card", "value": " "}),
            "value",
        ),
        (
            json!({"person_id": "ann", "kind": "card", "value": "X-1", "valid_from": 5, "valid_to": 4}),
            "valid_to",
        ),
    ] {
        let (st, r) = call(
            a,
            &manager,
            "PUT",
            "/api/v1/parks/p1/credentials/c-x",
            Some(body),
        );
        assert_eq!(st, 422, "{r}");
        assert!(
            r["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("{field}:")),
            "{r}"
        );
    }

    // An import of cards: a bad person named by line and column, then the whole file.
    let csv = "凭证编号,人员编号,卡号\nc-1,ann,CARD-1111\nc-2,ghost,CARD-2222\n";
    let (_, r) = call(
        a,
        &manager,
        "POST",
        "/api/v1/parks/p1/import/credentials",
        Some(json!({"csv": csv, "dry_run": false})),
    );
    assert_eq!(r["applied"], false);
    assert_eq!(
        r["errors"][0],
        json!({"line": 3, "column": "人员编号", "message": "no person \"ghost\" in this park"})
    );
    let (_, r) = call(
        a,
        &manager,
        "POST",
        "/api/v1/parks/p1/import/credentials",
        Some(json!({"csv": csv.replace("ghost", "ann"), "dry_run": false})),
    );
    assert_eq!(
        (r["applied"].as_bool(), r["created"].as_u64()),
        (Some(true), Some(2)),
        "{r}"
    );
    // The export lists them masked, never with a value.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let text = agent
        .get(&format!("http://{a}/api/v1/parks/p1/export/credentials"))
        .header("Authorization", &format!("Bearer {manager}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        text.starts_with("id,person_id,kind,masked,status,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5, "{text}");
    for secret in ["CARD-1111", "CARD-2222", "CARD-7777-0001", "CARD-0001-ANN"] {
        assert!(!text.contains(secret), "{secret} in the export");
    }
    // Nor is any value in the audit chain.
    let chain =
        accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap().conn()).unwrap();
    let all = format!(
        "{:?}",
        chain
            .iter()
            .map(|r| (&r.record.detail, &r.record.target))
            .collect::<Vec<_>>()
    );
    assert!(!all.contains("CARD-7777-0001") && !all.contains("CARD-1111"));
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "credential_put" && r.record.outcome == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_sees_its_own_people_and_cards_only_and_a_park_its_own_audit() {
    let dir = tempfile::tempdir().unwrap();
    let (h, db, manager) = with_manager(dir.path()).await;
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    // A second enterprise with a person and a card, made over the API.
    let put = |path: &str, body: Value| {
        let (status, answer) = call(a, &manager, "PUT", path, Some(body));
        assert_eq!(status, 200, "{path}: {answer}");
    };
    put(
        "/api/v1/parks/p1/enterprises/beta",
        json!({"name": "Beta", "status": "active", "kind": "tenant"}),
    );
    put(
        "/api/v1/parks/p1/people/bob",
        json!({"name": "Bob", "enterprise_id": "beta", "status": "active", "access_group_ids": ["lobby"]}),
    );
    put(
        "/api/v1/parks/p1/credentials/c-bob",
        json!({"person_id": "bob", "kind": "card", "value": "CARD-0002-BOB"}),
    );
    let admin = account(
        &db,
        "acme-admin",
        &[Grant::new(Role::EnterpriseAdmin, Scope::enterprise("p1", "acme")).unwrap()],
    );
    h.auth.reload().await.unwrap();
    let get = |token: &str, path: &str| call(a, token, "GET", path, None);

    // Acme's admin: Acme, its person and her card, masked.
    let (status, e) = get(&admin, "/api/v1/parks/p1/enterprises/acme");
    assert_eq!((status, e["name"].as_str()), (200, Some("Acme")), "{e}");
    let (_, people) = get(&admin, "/api/v1/parks/p1/enterprises/acme/people");
    assert_eq!(people["total"], 1, "{people}");
    assert_eq!(people["people"][0]["id"], "ann");
    // `of` does not reach another enterprise's people.
    let (_, people) = get(&admin, "/api/v1/parks/p1/enterprises/acme/people?of=beta");
    assert_eq!(people["people"][0]["id"], "ann", "{people}");
    let (_, cards) = get(&admin, "/api/v1/parks/p1/enterprises/acme/credentials");
    assert_eq!(cards["total"], 1, "{cards}");
    assert_eq!(cards["credentials"][0]["id"], "c-ann");
    assert!(!cards.to_string().contains("CARD-0001"), "{cards}");
    let (_, cards) = get(
        &admin,
        "/api/v1/parks/p1/enterprises/acme/credentials?of=bob",
    );
    assert_eq!(cards["total"], 0, "{cards}");
    // Nothing of Beta's, nor the park's lists, nor a park's audit.
    for path in [
        "/api/v1/parks/p1/enterprises/beta",
        "/api/v1/parks/p1/enterprises/beta/people",
        "/api/v1/parks/p1/enterprises/beta/credentials",
        "/api/v1/parks/p1/people",
        "/api/v1/parks/p1/credentials",
        "/api/v1/parks/p1/enterprises",
        "/api/v1/parks/p1/audit",
    ] {
        assert_eq!(get(&admin, path).0, 403, "{path}");
    }
    // The park's manager reads any enterprise's page from above; an unknown one is a 404.
    let (_, people) = get(&manager, "/api/v1/parks/p1/enterprises/beta/people");
    assert_eq!(people["people"][0]["id"], "bob", "{people}");
    assert_eq!(get(&manager, "/api/v1/parks/p1/enterprises/nobody").0, 404);

    // The park's audit records: the three edits above, newest first, and only the park's
    // (the accounts made on the host are the operator's).
    let (status, audit) = get(&manager, "/api/v1/parks/p1/audit?limit=10");
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["credential_put", "person_put", "enterprise_put"],
        "{audit}"
    );
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["target"].as_str().unwrap().starts_with("p1/")),
        "{audit}"
    );
    // A park whose name is a prefix of another's sees none of the other's.
    assert_eq!(
        get(&manager, "/api/v1/parks/p/audit").0,
        403,
        "a manager of p1 holds nothing at park p"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_parks_are_edited_with_checked_fields_and_an_enterprise_sees_its_own_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (h, db, manager) = with_manager(dir.path()).await;
    let admin = account(
        &db,
        "acme-admin",
        &[Grant::new(Role::EnterpriseAdmin, Scope::enterprise("p1", "acme")).unwrap()],
    );
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let put = |path: &str, body: Value| call(a, &manager, "PUT", path, Some(body));
    let refused =
        |path: &str, body: Value, field: &str| refused_naming(a, &manager, path, body, field);
    let tariff = json!({"currency": "CNY", "free_minutes": 0, "period_minutes": 30,
        "day_rate_fen": 800, "night_start_minute": 1320, "night_end_minute": 420,
        "night_rate_fen": 400, "daily_cap_fen": 6000, "lost_ticket_fen": 9000});
    let with = |base: &Value, k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    refused(
        "/api/v1/parks/p1/tariffs/t2",
        with(&tariff, "currency", json!("yuan")),
        "currency",
    );
    refused(
        "/api/v1/parks/p1/tariffs/t2",
        with(&tariff, "period_minutes", json!(0)),
        "period_minutes",
    );
    refused(
        "/api/v1/parks/p1/tariffs/t2",
        with(&tariff, "night_end_minute", json!(1440)),
        "night_end_minute",
    );
    refused(
        "/api/v1/parks/p1/tariffs/t2",
        with(&tariff, "daily_cap_fen", json!(200_000_000)),
        "daily_cap_fen",
    );
    assert_eq!(
        put(
            "/api/v1/parks/p1/tariffs/t2",
            with(&tariff, "day_rate_fen", json!(-1))
        )
        .0,
        422
    );
    let (status, t) = put("/api/v1/parks/p1/tariffs/t2", tariff.clone());
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        (t["day_rate_fen"].as_i64(), t["meta"]["created_by"].as_str()),
        (Some(800), Some("manager (token test)"))
    );

    refused(
        "/api/v1/parks/p1/lots/lot-b",
        json!({"name": "B", "capacity": 5, "tariff_id": "nope"}),
        "tariff_id",
    );
    assert_eq!(
        put(
            "/api/v1/parks/p1/lots/lot-b",
            json!({"name": "B", "capacity": 5, "tariff_id": "t2"})
        )
        .0,
        200
    );
    refused(
        "/api/v1/parks/p1/lanes/b-in",
        json!({"lot_id": "nope", "direction": "in", "name": "B in"}),
        "lot_id",
    );
    refused(
        "/api/v1/parks/p1/lanes/b-in",
        json!({"lot_id": "lot-b", "direction": "up", "name": "B in"}),
        "direction",
    );
    assert_eq!(
        put(
            "/api/v1/parks/p1/lanes/b-in",
            json!({"lot_id": "lot-b", "direction": "in", "name": "B in"})
        )
        .0,
        200
    );

    let pass = json!({"plate": "湘a 12345", "kind": "monthly", "lot_ids": ["lot-b"],
        "valid_from": 1_000_000, "valid_to": 2_000_000, "status": "active", "enterprise_id": "acme"});
    refused(
        "/api/v1/parks/p1/passes/m1",
        with(&pass, "lot_ids", json!(["nope"])),
        "lot_ids",
    );
    refused(
        "/api/v1/parks/p1/passes/m1",
        with(&pass, "enterprise_id", json!("globex")),
        "enterprise_id",
    );
    refused(
        "/api/v1/parks/p1/passes/m1",
        with(&pass, "valid_to", json!(1_000_000)),
        "valid_to",
    );
    let (status, p) = put("/api/v1/parks/p1/passes/m1", pass.clone());
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["plate"], "湘A12345", "kept normalized");
    refused(
        "/api/v1/parks/p1/allowances/acme-b",
        json!({"enterprise_id": "globex", "lot_id": "lot-b", "quota": 3}),
        "enterprise_id",
    );
    assert_eq!(
        put(
            "/api/v1/parks/p1/allowances/acme-b",
            json!({"enterprise_id": "acme", "lot_id": "lot-b", "quota": 3})
        )
        .0,
        200
    );

    // Lists, filtered by `of`.
    let get = |token: &str, path: &str| call(a, token, "GET", path, None);
    let (_, lanes) = get(&manager, "/api/v1/parks/p1/lanes?of=lot-b");
    assert_eq!(lanes["total"], 1, "{lanes}");
    let (_, lots) = get(&manager, "/api/v1/parks/p1/lots");
    assert_eq!(lots["total"], 2, "{lots}");
    let (_, allowances) = get(&manager, "/api/v1/parks/p1/allowances?of=acme");
    assert_eq!(allowances["allowances"][0]["quota"], 3, "{allowances}");
    // The enterprise sees its pass; not the park's list.
    let (status, mine) = get(&admin, "/api/v1/parks/p1/enterprises/acme/passes");
    assert_eq!((status, mine["total"].as_u64()), (200, Some(1)), "{mine}");
    assert_eq!(get(&admin, "/api/v1/parks/p1/passes").0, 403);
    assert_eq!(
        get(&admin, "/api/v1/parks/p1/enterprises/globex/passes").0,
        403
    );

    // The parking document holds it all, and the audit holds the plate's tail only.
    let doc = ParkingDoc::load(&h.documents.get("p1", "parking").unwrap().save()).unwrap();
    let snap = doc.snapshot().unwrap();
    assert_eq!(snap.lots["lot-b"].tariff_id.as_deref(), Some("t2"));
    assert_eq!(snap.passes["m1"].plate, "湘A12345");
    let (_, audit) = get(&manager, "/api/v1/parks/p1/audit?limit=100");
    let text = audit.to_string();
    assert!(
        text.contains("pass_put") && !text.contains("12345"),
        "{audit}"
    );
    h.shutdown().await;
}

/// A PUT the API refuses with a 422 whose message starts with the field's name.
fn refused_naming(a: SocketAddr, token: &str, path: &str, body: Value, field: &str) {
    let (status, answer) = call(a, token, "PUT", path, Some(body));
    assert_eq!(status, 422, "{path}: {answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with(field), "{path}: {message}");
}

/// An XLSX workbook, made with a real writer, with `rows` on its first sheet from A1.
fn workbook(rows: &[&[Cell]]) -> String {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32, c as u16);
            match cell {
                Cell::Text(t) => sheet.write_string(r, c, *t).map(drop),
                Cell::Number(n) => sheet.write_number(r, c, *n).map(drop),
            }
            .unwrap();
        }
    }
    data_encoding::BASE64.encode(&book.save_to_buffer().unwrap())
}

enum Cell {
    Text(&'static str),
    Number(f64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprises_import_from_an_xlsx_workbook_with_rows_as_lines() {
    use Cell::{Number as N, Text as T};
    let dir = tempfile::tempdir().unwrap();
    let (h, _, manager) = with_manager(dir.path()).await;
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let import = |body: Value| {
        call(
            a,
            &manager,
            "POST",
            "/api/v1/parks/p1/import/enterprises",
            Some(body),
        )
    };
    // Chinese headers, a number typed as an id, and a bad status on the sheet's row 3.
    let bad = workbook(&[
        &[T("编号"), T("企业名称"), T("状态")],
        &[N(1001.0), T("一零零一科技"), T("active")],
        &[T("x-2"), T("Second"), T("sleeping")],
    ]);
    let (status, report) = import(json!({"xlsx": bad, "dry_run": true}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["rows"].as_u64(), report["error_count"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    assert_eq!(report["errors"][0]["column"], "状态", "{report}");
    // The same without dry run changes nothing either.
    let (_, report) = import(json!({"xlsx": bad}));
    assert_eq!(report["applied"], false, "{report}");
    assert!(directory(&h).get::<Enterprise>("1001").unwrap().is_none());

    let good = workbook(&[
        &[T("编号"), T("企业名称"), T("状态")],
        &[N(1001.0), T("一零零一科技"), T("active")],
        &[T("x-2"), T("Second"), T("suspended")],
    ]);
    let (status, report) = import(json!({"xlsx": good}));
    assert_eq!(
        (status, report["applied"].as_bool()),
        (200, Some(true)),
        "{report}"
    );
    let d = directory(&h);
    assert_eq!(
        d.get::<Enterprise>("1001").unwrap().unwrap().name,
        "一零零一科技"
    );
    assert_eq!(
        d.get::<Enterprise>("x-2").unwrap().unwrap().status,
        EnterpriseStatus::Suspended
    );

    // One file at a time, and what is not a workbook is named.
    let (status, answer) = import(json!({"xlsx": good, "csv": "id,name\n"}));
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = import(json!({"xlsx": "not base64!"}));
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = import(json!({"xlsx": data_encoding::BASE64.encode(b"id,name\n")}));
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().starts_with("xlsx:"),
        "{answer}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_schedules_and_calendars_are_edited_with_checked_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _, manager) = with_manager(dir.path()).await;
    h.auth.reload().await.unwrap();
    let a = h.api_addr;
    let put = |path: &str, body: Value| call(a, &manager, "PUT", path, Some(body));
    let refused =
        |path: &str, body: Value, field: &str| refused_naming(a, &manager, path, body, field);
    let space = json!({"building_id": "b1", "floor": 3, "area_m2": 128.456, "name": "301",
        "kind": "room", "state": "vacant"});
    let with = |k: &str, v: Value| {
        let mut b = space.clone();
        b[k] = v;
        b
    };
    refused(
        "/api/v1/parks/p1/spaces/s1",
        with("floor", json!(400)),
        "floor",
    );
    refused(
        "/api/v1/parks/p1/spaces/s1",
        with("area_m2", json!(-1)),
        "area_m2",
    );
    refused(
        "/api/v1/parks/p1/spaces/s1",
        with("kind", json!("hall")),
        "kind",
    );
    refused(
        "/api/v1/parks/p1/spaces/s1",
        with("state", json!("sold")),
        "state",
    );
    let (status, s1) = put("/api/v1/parks/p1/spaces/s1", space.clone());
    assert_eq!(status, 200, "{s1}");
    assert_eq!(s1["area_m2"], 128.46, "kept to the hundredth");

    refused(
        "/api/v1/parks/p1/holiday-calendars/cn",
        json!({"name": "CN", "dates": ["2027-02-30"]}),
        "dates",
    );
    let (status, cal) = put(
        "/api/v1/parks/p1/holiday-calendars/cn",
        json!({"name": "CN", "dates": ["2027-10-01", "2027-01-01", "2027-01-01"]}),
    );
    assert_eq!(status, 200, "{cal}");
    assert_eq!(
        cal["dates"],
        json!(["2027-01-01", "2027-10-01"]),
        "sorted, once each"
    );

    let week = |monday: Value| {
        json!({"name": "Office", "weekdays": [monday, [], [], [], [], [], []],
            "holiday_calendar_id": "cn", "allow_on_holidays": false})
    };
    refused(
        "/api/v1/parks/p1/schedules/office",
        week(json!([{"start_minute": 600, "end_minute": 540}])),
        "weekdays",
    );
    let mut six_days = week(json!([]));
    six_days["weekdays"].as_array_mut().unwrap().pop();
    refused("/api/v1/parks/p1/schedules/office", six_days, "weekdays");
    let mut no_calendar = week(json!([]));
    no_calendar["holiday_calendar_id"] = json!("nope");
    refused(
        "/api/v1/parks/p1/schedules/office",
        no_calendar,
        "holiday_calendar_id",
    );
    let (status, w) = put(
        "/api/v1/parks/p1/schedules/office",
        week(
            json!([{"start_minute": 780, "end_minute": 1080}, {"start_minute": 480, "end_minute": 720}]),
        ),
    );
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["weekdays"][0][0]["start_minute"], 480, "sorted: {w}");

    let d = directory(&h);
    let space = d
        .get::<park_model::directory::Space>("s1")
        .unwrap()
        .unwrap();
    assert_eq!(
        (space.kind, space.state),
        (
            park_model::directory::SpaceKind::Room,
            park_model::directory::SpaceState::Vacant
        )
    );
    let schedule = d
        .get::<park_model::directory::WeeklySchedule>("office")
        .unwrap()
        .unwrap();
    assert_eq!(schedule.weekdays.0[0].len(), 2);
    let (_, list) = call(a, &manager, "GET", "/api/v1/parks/p1/spaces?of=b1", None);
    assert_eq!(list["total"], 1, "{list}");
    h.shutdown().await;
}
