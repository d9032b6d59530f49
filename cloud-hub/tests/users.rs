//! The hub's users, roles and personal data over its real HTTP API: every route with every
//! role and with no login against the route table; who may give which role to whom; phone
//! and ID numbers sealed at rest, masked for those who may not read them, and re-sealed by
//! a key rotation; the hub's audit chain.

use std::path::Path;

use cloud_hub::Hub;
use park_model::identity::{Access, Grant, Principal, Role, Scope, SecondFactor};
use serde_json::json;

mod common;

use common::{PW, account, call};

async fn hub(dir: &Path) -> Hub {
    Hub::start(common::settings(dir)).await.unwrap()
}

fn concrete(path: &str) -> (String, Vec<(&'static str, &'static str)>) {
    let params = vec![
        ("park", "p1"),
        ("building", "b1"),
        ("enterprise", "acme"),
        ("person", "person-1"),
        ("device", "meter"),
        ("point", "power"),
        ("id", "x"),
        ("group", "g1"),
        ("credential", "c1"),
    ];
    let mut p = path.to_string();
    let mut used = Vec::new();
    for (k, v) in &params {
        let pat = format!("{{{k}}}");
        if p.contains(&pat) {
            p = p.replace(&pat, v);
            used.push((*k, *v));
        }
    }
    (p, used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role_and_without_login_is_allowed_exactly_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path()).await;
    let db = h.store.target().clone();
    // Each role at the scope it is usually given.
    let mut people: Vec<(String, Vec<Grant>, String)> = Vec::new();
    for role in Role::ALL {
        let scope = match role {
            Role::OperatorAdmin => Scope::Operator,
            Role::ParkManager | Role::Finance | Role::Leasing => Scope::park("p1"),
            Role::SecurityOfficer | Role::FacilityEngineer | Role::Inspector => {
                Scope::building("p1", "b1")
            }
            Role::EnterpriseAdmin | Role::EnterpriseUser => Scope::enterprise("p1", "acme"),
        };
        let grants = vec![Grant::new(role, scope).unwrap()];
        let name = role.as_str().replace('_', "-");
        let token = account(&db, &name, &grants);
        people.push((name, grants, token));
    }
    h.auth.reload().await.unwrap();
    let table = cloud_hub::api::route_table();
    assert!(table.len() > 30);
    let addr = h.api_addr;
    let mut checked = 0;
    for (name, grants, token) in
        std::iter::once((String::new(), vec![], String::new())).chain(people)
    {
        let principal = Principal {
            user_id: name.clone(),
            username: name.clone(),
            grants,
            restrict: None,
            second_factor: SecondFactor::Satisfied,
        };
        let token = (!token.is_empty()).then_some(token);
        let results = tokio::task::spawn_blocking({
            let table = table.clone();
            let token = token.clone();
            move || {
                table
                    .iter()
                    .map(|r| {
                        let (path, _) = concrete(r.path);
                        let body = (r.method != axum::http::Method::GET).then(|| json!({}));
                        call(addr, token.as_deref(), r.method.as_str(), &path, body).0
                    })
                    .collect::<Vec<u16>>()
            }
        })
        .await
        .unwrap();
        for (r, status) in table.iter().zip(results) {
            let (_, params) = concrete(r.path);
            let scope = cloud_hub::api::scope_of(r.path, &params);
            let allowed = match &token {
                None => r.access == Access::Public,
                // An API token works on permission routes and "who am I" only, never on
                // the routes that manage the account itself.
                Some(_) => {
                    r.access == Access::Public
                        || (scope.allows(r.access, &principal, &Scope::Operator)
                            && accounts::http::token_may_use(r.access, r.path))
                }
            };
            let who = if name.is_empty() { "nobody" } else { &name };
            if allowed {
                assert!(
                    !matches!(status, 401 | 403),
                    "{who} {} {}: the table allows it, the API answered {status}",
                    r.method,
                    r.path
                );
            } else {
                let want = if token.is_none() { 401 } else { 403 };
                assert_eq!(
                    status, want,
                    "{who} {} {}: the table refuses it",
                    r.method, r.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.len() * (Role::ALL.len() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_gives_a_role_they_could_not_hold_and_a_disabled_user_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path()).await;
    let db = h.store.target().clone();
    let manager = account(&db, "manager", &["park_manager@park:p1".parse().unwrap()]);
    let admin = account(&db, "root", &["operator_admin@operator".parse().unwrap()]);
    let tenant = account(
        &db,
        "acme-admin",
        &["enterprise_admin@enterprise:p1/acme".parse().unwrap()],
    );
    h.auth.reload().await.unwrap();
    let addr = h.api_addr;
    tokio::task::spawn_blocking(move || {
        let new = |name: &str, grant: &str| {
            json!({"username": name, "displayName": name, "password": PW, "grants": [grant]})
        };
        // Within what they hold: yes.
        let (s, inspector) = call(addr, Some(&manager), "POST", "/api/v1/users", Some(new("ina", "inspector@building:p1/b1")));
        assert_eq!(s, 200, "{inspector}");
        assert_eq!(inspector["grants"], json!(["inspector@building:p1/b1"]));
        // A role with permissions the manager lacks, another park, the operator: no.
        for grant in ["facility_engineer@building:p1/b1", "inspector@building:p2/b1", "operator_admin@operator", "finance@park:p1"] {
            let (s, body) = call(addr, Some(&manager), "POST", "/api/v1/users", Some(new("eve", grant)));
            assert_eq!(s, 403, "{grant}: {body}");
        }
        // A weak password is refused with the reason.
        let mut weak = new("wes", "inspector@building:p1/b1");
        weak["password"] = json!("password1234");
        let (s, body) = call(addr, Some(&manager), "POST", "/api/v1/users", Some(weak));
        assert_eq!(s, 422);
        assert!(body["message"].as_str().unwrap().contains("password"), "{body}");
        // The tenant's admin makes users of its own enterprise only.
        let (s, _) = call(addr, Some(&tenant), "POST", "/api/v1/users", Some(new("acme-1", "enterprise_user@enterprise:p1/acme")));
        assert_eq!(s, 200);
        let (s, _) = call(addr, Some(&tenant), "POST", "/api/v1/users", Some(new("globex-1", "enterprise_user@enterprise:p1/globex")));
        assert_eq!(s, 403);
        // It sees only its own users; the manager sees the park's, not the operator's.
        let (_, list) = call(addr, Some(&tenant), "GET", "/api/v1/users", None);
        let names: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
        assert!(names.contains(&"acme-1") && !names.contains(&"ina") && !names.contains(&"root"), "{names:?}");
        // The manager cannot disable the operator's admin, but can disable the inspector.
        let root_id = call(addr, Some(&admin), "GET", "/api/v1/auth/me", None).1["id"].as_str().unwrap().to_string();
        let (s, _) = call(addr, Some(&manager), "POST", &format!("/api/v1/users/{root_id}/disable"), None);
        assert_eq!(s, 404, "the operator's admin is not even visible to a park manager");
        let ina = inspector["id"].as_str().unwrap();
        let (s, body) = call(addr, Some(&manager), "POST", &format!("/api/v1/users/{ina}/disable"), None);
        assert_eq!((s, &body["disabled"]), (200, &json!(true)), "{body}");
        // Re-scoping: to a role the manager may give, yes; to one it may not, no.
        let (s, _) = call(addr, Some(&manager), "PUT", &format!("/api/v1/users/{ina}/grants"), Some(json!({"grants": ["inspector@building:p1/b2"]})));
        assert_eq!(s, 200);
        let (s, _) = call(addr, Some(&manager), "PUT", &format!("/api/v1/users/{ina}/grants"), Some(json!({"grants": ["facility_engineer@building:p1/b2"]})));
        assert_eq!(s, 403);
        let (s, body) = call(addr, Some(&manager), "POST", &format!("/api/v1/users/{ina}/enable"), None);
        assert_eq!((s, &body["disabled"]), (200, &json!(false)));
    })
    .await
    .unwrap();
    // Every change is in the hub's chain, which holds.
    let chain =
        accounts::audit::read_chain(&cloud_hub::store::open_db(&db).unwrap().conn()).unwrap();
    for action in ["user_create", "user_disable", "user_grants", "user_enable"] {
        let r = chain
            .iter()
            .filter(|r| r.record.action == action && r.record.actor.starts_with("manager"))
            .find(|r| r.record.outcome == "ok");
        assert!(r.is_some(), "no {action} by the manager");
    }
    // Refused attempts are in it too: the roles the manager may not give, the admin it
    // may not touch.
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "user_create" && r.record.outcome.starts_with("refused"))
    );
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "user_disable" && r.record.outcome.starts_with("refused"))
    );
    assert!(park_model::audit::verify(&chain, None).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_and_id_numbers_are_sealed_at_rest_masked_for_most_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(dir.path());
    let h = Hub::start(settings.clone()).await.unwrap();
    let db = h.store.target().clone();
    let manager = account(&db, "manager", &["park_manager@park:p1".parse().unwrap()]);
    let guard = account(&db, "guard", &["security_officer@park:p1".parse().unwrap()]);
    let acme = account(
        &db,
        "acme-admin",
        &["enterprise_admin@enterprise:p1/acme".parse().unwrap()],
    );
    let globex = account(
        &db,
        "globex-admin",
        &["enterprise_admin@enterprise:p1/globex".parse().unwrap()],
    );
    h.auth.reload().await.unwrap();
    let addr = h.api_addr;
    let (m2, g2, a2, x2) = (manager.clone(), guard.clone(), acme.clone(), globex.clone());
    tokio::task::spawn_blocking(move || {
        let path = "/api/v1/parks/p1/people/person-1/private";
        let (s, body) = call(addr, Some(&m2), "PUT", path, Some(json!({"enterpriseId": "acme", "phone": "+86 138 1234 5678", "idNumber": "110101199003071234"})));
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["phone"], "+86 138 1234 5678", "the manager reads it");
        let (s, body) = call(addr, Some(&g2), "GET", path, None);
        assert_eq!(s, 200, "{body}");
        assert_eq!((&body["phone"], &body["idNumber"]), (&json!("138****5678"), &json!("110***********1234")));
        // The person's own enterprise admin reads it through the enterprise; another
        // enterprise's admin finds no such person there, nor at the park.
        let (s, body) = call(addr, Some(&a2), "GET", "/api/v1/parks/p1/enterprises/acme/people/person-1/private", None);
        assert_eq!((s, &body["idNumber"]), (200, &json!("110101199003071234")), "{body}");
        let (s, _) = call(addr, Some(&x2), "GET", "/api/v1/parks/p1/enterprises/globex/people/person-1/private", None);
        assert_eq!(s, 404);
        let (s, _) = call(addr, Some(&x2), "GET", path, None);
        assert_eq!(s, 403);
        let (s, _) = call(addr, Some(&x2), "PUT", "/api/v1/parks/p1/enterprises/globex/people/person-1/private", Some(json!({"phone": "13900000000"})));
        assert_eq!(s, 404, "filing someone else's person under one's own enterprise is refused");
        let (s, body) = call(addr, Some(&m2), "PUT", path, Some(json!({"enterpriseId": "acme", "phone": "not a phone"})));
        assert_eq!(s, 422, "{body}");
    })
    .await
    .unwrap();
    // At rest: sealed, no digits of either number anywhere in the database files.
    h.store.flush().await;
    let everything = |dir: &Path| -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                all.extend(std::fs::read(p).unwrap());
            }
        }
        all
    };
    let bytes = everything(&settings.data_dir);
    for secret in ["13812345678", "138 1234 5678", "110101199003071234"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the hub's files"
        );
    }
    // The key rotates only with the hub stopped; afterwards every value still opens.
    let err = cloud_hub::HubLock::take(&settings.data_dir).unwrap_err();
    assert!(err.to_string().contains("holds"), "{err}");
    h.shutdown().await;
    let old_key = std::fs::read_to_string(&settings.key_file).unwrap();
    let (n, _) = cloud_hub::people::rotate_key(&settings.database, &settings.key_file).unwrap();
    assert_eq!(n, 2);
    assert_ne!(
        std::fs::read_to_string(&settings.key_file).unwrap(),
        old_key
    );
    assert!(
        !settings.key_file.with_extension("old").exists(),
        "the old key is gone"
    );
    let h = Hub::start(settings.clone()).await.unwrap();
    let addr = h.api_addr;
    tokio::task::spawn_blocking(move || {
        let (s, body) = call(
            addr,
            Some(&manager),
            "GET",
            "/api/v1/parks/p1/people/person-1/private",
            None,
        );
        assert_eq!(
            (s, &body["phone"]),
            (200, &json!("+86 138 1234 5678")),
            "{body}"
        );
    })
    .await
    .unwrap();
    let reports = cloud_hub::audit::verify_all(&settings.database).unwrap();
    assert!(reports.iter().all(|r| r.result.is_ok()), "{reports:?}");
    let chain = accounts::audit::read_chain(
        &cloud_hub::store::open_db(&settings.database)
            .unwrap()
            .conn(),
    )
    .unwrap();
    assert!(chain.iter().any(|r| r.record.action == "key_rotate"));
    assert!(
        !chain.iter().any(|r| r.record.detail.contains("5678")),
        "no number in the audit"
    );
}
