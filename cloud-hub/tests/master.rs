//! The park's master data edited over the hub's real HTTP API: enterprises, people, access
//! groups and credentials' status written into the park's directory document, with
//! refusals that name the field, who made each record, the audit, the role checks, and the
//! edits still there after a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use cloud_hub::{Hub, HubSettings};
use common::account;
use park_model::ParkDirectory;
use park_model::directory::{
    AccessGroup, Credential, CredentialKey, CredentialKind, CredentialStatus, Enterprise,
    EnterpriseKind, EnterpriseStatus, Person, PersonStatus,
};
use park_model::identity::{Grant, Role, Scope};
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
async fn with_manager(dir: &Path) -> (Hub, std::path::PathBuf, String) {
    seed(&dir.join("seed"));
    let h = hub(dir).await;
    let db = h.store.path().to_path_buf();
    let manager = account(
        &db,
        "manager",
        &[Grant::new(Role::ParkManager, Scope::park("p1")).unwrap()],
    );
    (h, db, manager)
}

async fn hub(dir: &Path) -> Hub {
    let mut settings = HubSettings::for_dir(dir);
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
    let chain = accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap()).unwrap();
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
    let chain = accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap()).unwrap();
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
    let chain = accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap()).unwrap();
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
