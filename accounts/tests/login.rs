//! Logging in, sessions, CSRF, tokens, lockout and the second factor, over real HTTP
//! against a real SQLite file: a small API with the crate's checks and auth routes, one
//! route that reads and one that writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use accounts::audit::Mirror;
use accounts::auth::{AuthConfig, Source, manage};
use accounts::http::{self, ApiAuth, RouteIndex, RouteScope, RouteSpec, Routes};
use accounts::{Auth, AuthSettings, Caller};
use axum::extract::State;
use axum::{Extension, Json};
use park_model::identity::password::Cost;
use park_model::identity::web::SessionPolicy;
use park_model::identity::{Access, AccountsPush, EdgeAccount, Grant, Permission, Scope, totp};
use serde_json::{Value, json};

#[derive(Clone)]
struct TestApi {
    auth: Auth,
}

fn table() -> Routes<TestApi> {
    http::auth_routes(Routes::default())
        .get(
            "/api/v1/thing",
            Access::Allowed(Permission::TelemetryRead),
            |Extension(c): Extension<Caller>| async move { Json(json!({"reader": &*c.name})) },
        )
        .post(
            "/api/v1/thing",
            Access::Allowed(Permission::PointsWrite),
            |State(s): State<TestApi>, Extension(c): Extension<Caller>| async move {
                let a = s.auth.audit(&c.actor(), "thing_write", "thing", json!({}));
                s.auth.record(a).await.unwrap();
                Json(json!({"writer": &*c.name}))
            },
        )
}

impl ApiAuth for TestApi {
    fn auth(&self) -> &Auth {
        &self.auth
    }
    fn routes(&self) -> &RouteIndex {
        static INDEX: OnceLock<RouteIndex> = OnceLock::new();
        INDEX.get_or_init(|| RouteIndex::new(&table().specs()))
    }
    fn scope_of(&self, _: &str, _: &[(&str, &str)]) -> RouteScope {
        RouteScope::Own
    }
}

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);
";

struct Api {
    addr: SocketAddr,
    auth: Auth,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

fn open_db(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

async fn start(own: Source, policy: SessionPolicy) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.sqlite");
    {
        let c = open_db(&db);
        c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(accounts::audit::SCHEMA).unwrap();
        c.execute_batch(accounts::auth::SCHEMA).unwrap();
    }
    let path = db.clone();
    let writer: accounts::Writer = Arc::new(move |mut op| {
        let path = path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = open_db(&path);
                let tx = c.transaction()?;
                op(&park_db::Connection::sqlite(&tx))?;
                tx.commit()?;
                Ok(())
            })
            .await?
        })
    });
    let auth = Auth::open(AuthConfig {
        scope: Scope::building("p1", "b1"),
        settings: AuthSettings {
            session: policy,
            cost: Cost::TEST,
            ..AuthSettings::default()
        },
        own,
        mirror: Mirror::Events,
        db: park_db::Target::Sqlite(db.clone()),
        writer,
        key_file: dir.path().join("secrets.key"),
        metrics: Default::default(),
    })
    .await
    .unwrap();
    let state = TestApi { auth: auth.clone() };
    let (app, _) = table().into_router();
    let app = app
        .route_layer(http::Authorize::new(state.clone()))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    Api {
        addr,
        auth,
        db,
        _dir: dir,
    }
}

impl Api {
    fn add_user(&self, username: &str, password: &str, grants: &[&str]) -> String {
        let grants: Vec<Grant> = grants.iter().map(|g| g.parse().unwrap()).collect();
        let c = open_db(&self.db);
        manage::create(
            &park_db::Connection::sqlite(&c),
            &manage::host_actor("test"),
            Mirror::Events,
            Source::Local,
            manage::NewAccount {
                username,
                display_name: username,
                verifier: manage::verifier_for(username, password, Cost::TEST).unwrap(),
                grants: &grants,
                department: None,
            },
        )
        .unwrap()
    }

    fn chain(&self) -> Vec<park_model::audit::ChainedRecord> {
        accounts::audit::read_chain(&park_db::Connection::sqlite(&open_db(&self.db))).unwrap()
    }
}

/// A client that keeps its session cookie and CSRF token, as a browser page would.
#[derive(Default, Clone)]
struct Client {
    cookie: Option<String>,
    csrf: Option<String>,
    bearer: Option<String>,
    host: Option<String>,
    origin: Option<String>,
}

struct Answer {
    status: u16,
    body: Value,
    set_cookie: Option<String>,
}

impl Client {
    async fn call(&self, api: &Api, method: &str, path: &str, body: Option<Value>) -> Answer {
        let url = format!("http://{}{path}", api.addr);
        let this = self.clone();
        let method = method.to_string();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut req = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url);
            if let Some(c) = &this.cookie {
                req = req.header("Cookie", format!("smartpark_session={c}"));
            }
            if let Some(t) = &this.csrf {
                req = req.header("X-CSRF-Token", t);
            }
            if let Some(b) = &this.bearer {
                req = req.header("Authorization", format!("Bearer {b}"));
            }
            if let Some(h) = &this.host {
                req = req.header("Host", h);
            }
            if let Some(o) = &this.origin {
                req = req.header("Origin", o);
            }
            let res = match body {
                Some(b) => agent.run(
                    req.header("Content-Type", "application/json")
                        .body(b.to_string())
                        .unwrap(),
                ),
                None => agent.run(req.body(()).unwrap()),
            };
            let mut res = res.unwrap();
            let set_cookie = res
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_string());
            let text = res.body_mut().read_to_string().unwrap_or_default();
            Answer {
                status: res.status().as_u16(),
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                set_cookie,
            }
        })
        .await
        .unwrap()
    }

    async fn login(
        api: &Api,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> (Client, Answer) {
        let mut body = json!({"username": username, "password": password});
        if let Some(c) = code {
            body["code"] = json!(c);
        }
        let a = Client::default()
            .call(api, "POST", "/api/v1/auth/login", Some(body))
            .await;
        let mut c = Client::default();
        if a.status == 200 {
            let sc = a.set_cookie.clone().expect("a session cookie");
            c.cookie = Some(
                sc.split(';')
                    .next()
                    .unwrap()
                    .trim_start_matches("smartpark_session=")
                    .to_string(),
            );
            c.csrf = a.body["csrfToken"].as_str().map(String::from);
        }
        (c, a)
    }
}

const PW: &str = "correct-horse-battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_gives_a_strict_http_only_session_whose_writes_need_the_csrf_token() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["facility_engineer@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    // Nobody: refused.
    let anon = Client::default()
        .call(&api, "GET", "/api/v1/thing", None)
        .await;
    assert_eq!(anon.status, 401, "{}", anon.body);
    let (amy, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cookie = a.set_cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    assert_eq!(a.body["user"]["permissions"].as_array().unwrap().len(), 7);
    let r = amy.call(&api, "GET", "/api/v1/thing", None).await;
    assert_eq!((r.status, r.body["reader"].as_str()), (200, Some("amy")));
    let w = amy
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    // The same write without the CSRF token, or with another session's, is refused.
    let mut forged = amy.clone();
    forged.csrf = None;
    let w = forged
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!((w.status, w.body["code"].as_str()), (403, Some("csrf")));
    forged.csrf = Some(api.auth.csrf_for("sps_another-session"));
    let w = forged
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!(w.status, 403);
    // The acting user comes from the session: the audit names amy and her address.
    let chain = api.chain();
    let write = chain
        .iter()
        .find(|r| r.record.action == "thing_write")
        .unwrap();
    assert_eq!(write.record.actor, "amy");
    assert_eq!(write.record.client, "127.0.0.1");
    assert!(park_model::audit::verify(&chain, None).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_or_origin_is_refused_before_anything_else() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["facility_engineer@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    let (mut amy, _) = Client::login(&api, "amy", PW, None).await;
    amy.host = Some("rebound.attacker.example".into());
    let r = amy.call(&api, "GET", "/api/v1/thing", None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (421, Some("bad_host")));
    amy.host = None;
    amy.origin = Some("http://attacker.example".into());
    let w = amy
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!(
        (w.status, w.body["code"].as_str()),
        (403, Some("bad_origin"))
    );
    amy.origin = Some(format!("http://{}", api.addr));
    let w = amy
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!(w.status, 200, "its own origin may write: {}", w.body);
    let m = api.auth.metrics();
    assert_eq!(
        m.bad_host_total.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.bad_origin_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_account_with_a_growing_delay_and_are_audited() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["inspector@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    for _ in 0..5 {
        let (_, a) = Client::login(&api, "amy", "wrong-password-1", None).await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    // The sixth failure locks for 30 s; then even the right password is refused, unchecked.
    let (_, a) = Client::login(&api, "amy", "wrong-password-1", None).await;
    assert_eq!(a.status, 401);
    let (_, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (429, Some("locked_out"))
    );
    let wait = a.body["details"]["retryAfterSeconds"].as_i64().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // An unknown user gets the same answer as a wrong password.
    let (_, a) = Client::login(&api, "nobody", PW, None).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let chain = api.chain();
    let failed = chain
        .iter()
        .filter(|r| r.record.action == "login" && r.record.outcome.starts_with("refused"))
        .count();
    assert_eq!(failed, 8, "every failed login is audited");
    // The lock survives a restart of the process (it is in the store).
    api.auth.reload().await.unwrap();
    let (_, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(a.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failures_from_one_address_lock_the_address() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["inspector@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    // Twenty different usernames, so no account locks; the address does.
    for i in 0..21 {
        let (_, a) = Client::login(&api, &format!("guess{i}"), "whatever-pw-1", None).await;
        assert_eq!(a.status, 401);
    }
    let (_, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (429, Some("locked_out"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_admin_must_set_up_totp_before_acting_and_then_log_in_with_it() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("root", PW, &["operator_admin@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    let (root, a) = Client::login(&api, "root", PW, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["user"]["secondFactor"], "enrollment_required");
    let r = root.call(&api, "GET", "/api/v1/thing", None).await;
    assert_eq!(r.status, 403, "nothing before a second factor: {}", r.body);
    let t = root
        .call(
            &api,
            "POST",
            "/api/v1/auth/tokens",
            Some(json!({"name": "x", "permissions": ["telemetry.read"], "expiresInDays": 1})),
        )
        .await;
    assert_eq!(t.status, 403, "no tokens either");
    let setup = root
        .call(&api, "POST", "/api/v1/auth/totp/setup", None)
        .await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    let secret = totp::secret_from_text(setup.body["secret"].as_str().unwrap()).unwrap();
    assert!(
        setup.body["uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let now = accounts::now_micros();
    let code = |t: i64| format!("{:06}", totp::code_at(&secret, totp::step_of(t)));
    let bad = root
        .call(
            &api,
            "POST",
            "/api/v1/auth/totp/confirm",
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(bad.status, 422);
    let ok = root
        .call(
            &api,
            "POST",
            "/api/v1/auth/totp/confirm",
            Some(json!({"code": code(now)})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let recovery: Vec<String> = serde_json::from_value(ok.body["recoveryCodes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    // The same session may act now.
    let r = root.call(&api, "GET", "/api/v1/thing", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A new login needs the code; a code is good once; a recovery code is good once.
    let (_, a) = Client::login(&api, "root", PW, None).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (401, Some("second_factor_required"))
    );
    let next = now + 30_000_000;
    let (_, a) = Client::login(&api, "root", PW, Some(&code(next))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, a) = Client::login(&api, "root", PW, Some(&code(next))).await;
    assert_eq!(a.status, 401, "a code used once is refused");
    let body =
        json!({"username": "root", "password": PW, "recoveryCode": recovery[3].to_uppercase()});
    let a = Client::default()
        .call(&api, "POST", "/api/v1/auth/login", Some(body.clone()))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = Client::default()
        .call(&api, "POST", "/api/v1/auth/login", Some(body))
        .await;
    assert_eq!(a.status, 401, "a recovery code used once is refused");
    // The secret is sealed in the store, never in clear.
    let stored: String = open_db(&api.db)
        .query_row(
            "SELECT totp FROM accounts WHERE username = 'root'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored.starts_with("enc1:") && !stored.contains(setup.body["secret"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_carries_a_subset_of_its_owner_s_permissions_until_it_expires_or_is_revoked() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["facility_engineer@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    let (amy, _) = Client::login(&api, "amy", PW, None).await;
    let too_much = amy
        .call(&api, "POST", "/api/v1/auth/tokens", Some(json!({"name": "scraper", "permissions": ["telemetry.read", "users.manage"], "expiresInDays": 30})))
        .await;
    assert_eq!(too_much.status, 422, "{}", too_much.body);
    assert!(
        too_much.body["message"]
            .as_str()
            .unwrap()
            .contains("users.manage")
    );
    let t = amy
        .call(
            &api,
            "POST",
            "/api/v1/auth/tokens",
            Some(
                json!({"name": "scraper", "permissions": ["telemetry.read"], "expiresInDays": 30}),
            ),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let token = t.body["token"].as_str().unwrap().to_string();
    let id = t.body["id"].as_str().unwrap().to_string();
    let machine = Client {
        bearer: Some(token.clone()),
        ..Client::default()
    };
    assert_eq!(
        machine
            .call(&api, "GET", "/api/v1/thing", None)
            .await
            .status,
        200
    );
    let w = machine
        .call(&api, "POST", "/api/v1/thing", Some(json!({})))
        .await;
    assert_eq!(
        w.status, 403,
        "the token lacks points.write though amy has it"
    );
    // Shown once: the list and the store hold no secret.
    let list = amy.call(&api, "GET", "/api/v1/auth/tokens", None).await;
    assert!(!list.body.to_string().contains(&token));
    let stored: String = open_db(&api.db)
        .query_row("SELECT hash FROM api_tokens", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, token);
    // Expired: refused.
    open_db(&api.db)
        .execute("UPDATE api_tokens SET expires = 1", [])
        .unwrap();
    api.auth.reload().await.unwrap();
    assert_eq!(
        machine
            .call(&api, "GET", "/api/v1/thing", None)
            .await
            .status,
        401
    );
    open_db(&api.db)
        .execute("UPDATE api_tokens SET expires = 9000000000000000", [])
        .unwrap();
    api.auth.reload().await.unwrap();
    assert_eq!(
        machine
            .call(&api, "GET", "/api/v1/thing", None)
            .await
            .status,
        200
    );
    let r = amy
        .call(&api, "DELETE", &format!("/api/v1/auth/tokens/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        machine
            .call(&api, "GET", "/api/v1/thing", None)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_on_logout_and_everywhere_at_once() {
    let idle = start(
        Source::Local,
        SessionPolicy {
            idle: 1,
            absolute: 3_600_000_000,
        },
    )
    .await;
    idle.add_user("amy", PW, &["inspector@building:p1/b1"]);
    idle.auth.reload().await.unwrap();
    let (amy, a) = Client::login(&idle, "amy", PW, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        amy.call(&idle, "GET", "/api/v1/thing", None).await.status,
        401,
        "idle too long"
    );

    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    api.add_user("amy", PW, &["inspector@building:p1/b1"]);
    api.auth.reload().await.unwrap();
    let (one, _) = Client::login(&api, "amy", PW, None).await;
    let (two, _) = Client::login(&api, "amy", PW, None).await;
    let (three, _) = Client::login(&api, "amy", PW, None).await;
    let out = one.call(&api, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(out.status, 200);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(
        one.call(&api, "GET", "/api/v1/thing", None).await.status,
        401
    );
    assert_eq!(
        two.call(&api, "GET", "/api/v1/thing", None).await.status,
        200
    );
    let all = two
        .call(&api, "POST", "/api/v1/auth/logout-all", None)
        .await;
    assert_eq!(all.body["sessionsEnded"], 2);
    assert_eq!(
        three.call(&api, "GET", "/api/v1/thing", None).await.status,
        401
    );
    // Nothing but hashes of session tokens is stored.
    let n: i64 = open_db(&api.db)
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

fn edge_account(id: &str, username: &str, grants: &[&str], epoch: i64) -> EdgeAccount {
    EdgeAccount {
        id: id.into(),
        username: username.into(),
        display_name: username.into(),
        verifier: manage::verifier_for(username, PW, Cost::TEST).unwrap(),
        totp_secret: None,
        recovery_hashes: vec![],
        grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
        epoch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_s_accounts_log_in_here_until_a_push_without_them_ends_their_sessions() {
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    let amy = edge_account("hub-1", "amy", &["facility_engineer@park:p1"], 0);
    let bob = edge_account("hub-2", "bob", &["security_officer@building:p1/b1"], 0);
    let push = AccountsPush {
        generation: 5,
        accounts: vec![amy.clone(), bob.clone()],
    };
    assert!(api.auth.apply_hub_accounts(push).await.unwrap());
    let (amy_s, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (bob_s, _) = Client::login(&api, "bob", PW, None).await;
    // A hub account's password is changed on the hub only.
    let r = amy_s
        .call(
            &api,
            "POST",
            "/api/v1/auth/password",
            Some(json!({"currentPassword": PW, "newPassword": "another-long-pass"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    // An older push changes nothing; a malformed one is refused whole.
    let stale = AccountsPush {
        generation: 4,
        accounts: vec![],
    };
    assert!(!api.auth.apply_hub_accounts(stale).await.unwrap());
    let mut bad = edge_account("hub-3", "eve", &["inspector@building:p1/b1"], 0);
    bad.verifier = "plain-text".into();
    let bad = AccountsPush {
        generation: 6,
        accounts: vec![amy.clone(), bad],
    };
    assert!(api.auth.apply_hub_accounts(bad).await.is_err());
    assert_eq!(
        amy_s.call(&api, "GET", "/api/v1/thing", None).await.status,
        200
    );
    // Amy disabled on the hub (absent from the push), Bob re-scoped: both sessions end,
    // Amy cannot log in again, Bob can with his new role.
    let mut bob2 = bob.clone();
    bob2.grants = vec!["inspector@building:p1/b1".parse().unwrap()];
    let push = AccountsPush {
        generation: 7,
        accounts: vec![bob2],
    };
    assert!(api.auth.apply_hub_accounts(push).await.unwrap());
    assert_eq!(
        amy_s.call(&api, "GET", "/api/v1/thing", None).await.status,
        401
    );
    assert_eq!(
        bob_s.call(&api, "GET", "/api/v1/thing", None).await.status,
        401
    );
    let (_, a) = Client::login(&api, "amy", PW, None).await;
    assert_eq!(a.status, 401);
    let (_, a) = Client::login(&api, "bob", PW, None).await;
    assert_eq!(
        a.body["user"]["grants"],
        json!(["inspector@building:p1/b1"])
    );
    // The sync is audited, as the hub's act.
    let chain = api.chain();
    assert!(
        chain
            .iter()
            .any(|r| r.record.action == "accounts_sync" && r.record.actor == "hub")
    );
    assert_eq!(api.auth.hub_generation(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_table_is_guarded_and_an_unlisted_route_is_refused_to_all() {
    let specs: Vec<RouteSpec> = table().specs();
    assert!(specs.iter().all(|s| s.path.starts_with("/api/v1/")));
    // A router with one route the index does not list.
    let api = start(Source::Local, SessionPolicy::DEFAULT).await;
    let state = TestApi {
        auth: api.auth.clone(),
    };
    let app = axum::Router::new()
        .route("/api/v1/hidden", axum::routing::get(|| async { "secret" }))
        .route_layer(http::Authorize::new(state.clone()))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let hidden = Api {
        addr,
        auth: api.auth.clone(),
        db: api.db.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let r = Client::default()
        .call(&hidden, "GET", "/api/v1/hidden", None)
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("route_unlisted"))
    );
}
