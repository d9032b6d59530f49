//! The LAN API against hostile and malformed requests, and its live stream, on a node with
//! no devices (samples are handed to the store directly).

use std::path::Path;
use std::time::Duration;

use accounts::auth::manage;
use device_drivers::{PointKey, Sample, Value, now_micros};
use edge_node::{EdgeNode, EdgeSettings};
use park_model::identity::password::Cost;
use park_model::identity::{Access, Grant, Principal, Role, Scope, SecondFactor, totp};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PW: &str = "tall-cedar-river-42";

/// Adds a local account to the node's store (made before the node starts, or picked up
/// by a running node within seconds).
fn add_account(dir: &Path, username: &str, grants: &[Grant]) {
    let db = dir.join("data/edge.sqlite");
    let c = edge_node::store::open_for_admin(&db).unwrap();
    manage::create(
        &park_db::Connection::sqlite(&c),
        &manage::host_actor("test"),
        accounts::audit::Mirror::Events,
        accounts::auth::Source::Local,
        manage::NewAccount {
            username,
            display_name: username,
            verifier: manage::verifier_for(username, PW, Cost::TEST).unwrap(),
            grants,
            department: None,
        },
    )
    .unwrap();
}

/// A session's cookie and CSRF token.
#[derive(Clone, Default)]
struct Session {
    cookie: String,
    csrf: String,
}

async fn login(node: &EdgeNode, username: &str, code: Option<&str>) -> (u16, Json, Session) {
    let mut body = serde_json::json!({"username": username, "password": PW});
    if let Some(c) = code {
        body["code"] = serde_json::json!(c);
    }
    let (status, text, headers) = raw_full(
        node,
        &request_as(
            None,
            "POST",
            "/api/v1/auth/login",
            "application/json",
            body.to_string().as_bytes(),
        ),
    )
    .await;
    let j: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let cookie = headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: smartpark_session=")
        })
        .and_then(|l| l.split_once('='))
        .map(|(_, v)| v)
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap_or_default();
    let csrf = j["csrfToken"].as_str().unwrap_or("").to_string();
    (status, j, Session { cookie, csrf })
}

async fn node(dir: &Path) -> EdgeNode {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let text = format!(
        "[node]\npark = \"p\"\nbuilding = \"b\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[mqtt]\nenabled = false\n[business]\nenabled = false\n\n\
         [[device]]\nid = \"env\"\nprofile = \"tasmota-am2301\"\nmqtt = {{ topic_id = \"env\" }}\n",
        profiles.display()
    );
    let file = dir.join("edge.toml");
    std::fs::write(&file, &text).unwrap();
    // The tests below act as someone who may do everything at this building.
    add_account(
        dir,
        "admin",
        &[
            "facility_engineer@building:p/b".parse().unwrap(),
            "security_officer@building:p/b".parse().unwrap(),
            "park_manager@building:p/b".parse().unwrap(),
        ],
    );
    EdgeNode::start(EdgeSettings::load(&file).unwrap())
        .await
        .unwrap()
}

/// Sends raw bytes and returns the status code, the body and the head.
async fn raw_full(node: &EdgeNode, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, body.to_string(), head.replace("\r\n", "\n"))
}

/// Sends a request and reads only its status line (for streams that do not end).
async fn status_only(node: &EdgeNode, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends raw bytes and returns the status code and the body.
async fn raw(node: &EdgeNode, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A request with the session's cookie and CSRF token, if any.
fn request_as(
    session: Option<&Session>,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let auth = session
        .map(|s| {
            format!(
                "Cookie: smartpark_session={}\r\nX-CSRF-Token: {}\r\n",
                s.cookie, s.csrf
            )
        })
        .unwrap_or_default();
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn error_body(body: &str) -> Json {
    let j: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    for field in ["code", "message", "traceId"] {
        assert!(j[field].is_string(), "error without {field}: {j}");
    }
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_json_errors_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let (_, _, session) = login(&node, "admin", None).await;
    let request = |m: &str, p: &str, ct: &str, b: &[u8]| request_as(Some(&session), m, p, ct, b);
    let json = "application/json";
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"value\": ",
            ),
            400,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"valu\": 1}",
            ),
            422,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                "text/plain",
                b"{\"value\": 1}",
            ),
            415,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                &vec![b' '; 100_000],
            ),
            413,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"value\": 1}",
            ),
            409,
            "not_writable",
        ),
        (
            request("GET", "/api/v1/points/env/nothing", "", b""),
            404,
            "not_found",
        ),
        (
            request("GET", "/api/v1/points/..%2F..%2Fetc/passwd", "", b""),
            404,
            "not_found",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?from=abc",
                "",
                b"",
            ),
            400,
            "invalid_query",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?from=10&to=5",
                "",
                b"",
            ),
            422,
            "invalid",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?resolution=5s",
                "",
                b"",
            ),
            400,
            "bad_request",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?resolution=raw&from=0&to=86400000000",
                "",
                b"",
            ),
            422,
            "invalid",
        ),
        (
            request("GET", "/api/v1/stream?points=no-slash", "", b""),
            422,
            "invalid",
        ),
        (
            request("GET", "/api/v1/no/such/route", "", b""),
            404,
            "not_found",
        ),
        (
            request("DELETE", "/api/v1/points", "", b""),
            405,
            "method_not_allowed",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?from=-9223372036854775808",
                "",
                b"",
            ),
            422,
            "invalid",
        ),
    ];
    let n = cases.len() as u64;
    for (req, status, code) in cases {
        let (got, body) = raw(&node, &req).await;
        assert_eq!(
            got,
            status,
            "{}: {body}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
        assert_eq!(error_body(&body)["code"], code, "{body}");
    }
    // Garbage that is not HTTP at all is dropped without harming the server.
    let (got, _) = raw(&node, b"\x16\x03\x01\x00\xa5 not http at all\r\n\r\n").await;
    assert_ne!(got, 200);
    let (status, body) = raw(&node, &request("GET", "/health", "", b"")).await;
    assert_eq!(status, 200, "{body}");
    let m = &node.store.metrics();
    assert!(
        m.http_client_errors_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= n
    );
    assert!(m.invalid_input_count("http_request") >= n);
    let (_, metrics) = raw(&node, &request("GET", "/metrics", "", b"")).await;
    assert!(metrics.contains("smartpark_edge_invalid_input_total{kind=\"http_request\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_sends_committed_samples_of_the_chosen_points() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let (_, _, session) = login(&node, "admin", None).await;
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    let req = format!(
        "GET /api/v1/stream?points=env/temperature HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: smartpark_session={}\r\n\r\n",
        session.cookie
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Wait for the headers so that the subscription exists before samples arrive.
    while !seen.contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let ts = now_micros();
    node.store
        .ingest(vec![
            Sample::good(PointKey::new("env", "humidity"), ts, Value::Float(40.0)),
            Sample::good(PointKey::new("env", "temperature"), ts, Value::Float(21.5)),
        ])
        .await;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = seen.lines().find(|l| l.starts_with("data: [")) {
                return line.to_string();
            }
        }
    })
    .await
    .expect("a samples event");
    let items: Json = serde_json::from_str(line_data(&found)).unwrap();
    assert_eq!(
        items.as_array().unwrap().len(),
        1,
        "only the chosen point: {items}"
    );
    assert_eq!(items[0]["point"], "env/temperature");
    assert_eq!(items[0]["value"], 21.5);
    assert!(seen.contains("event: samples"));
}

fn line_data(line: &str) -> &str {
    line.strip_prefix("data: ").unwrap()
}

/// The path of a route with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{device}", "env")
        .replace("{point}", "temperature")
        .replace("{id}", "x")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role_and_without_login_is_allowed_exactly_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let here = Scope::building("p", "b");
    let mut accounts: Vec<(String, Vec<Grant>)> = Vec::new();
    for role in Role::ALL {
        let scope = if role.fits(&here) {
            here.clone()
        } else {
            Scope::enterprise("p", "acme")
        };
        let grants = vec![Grant::new(role, scope).unwrap()];
        let name = format!("as-{}", role.as_str().replace('_', "-"));
        add_account(dir.path(), &name, &grants);
        accounts.push((name, grants));
    }
    let node = node(dir.path()).await;
    let table = edge_node::api::route_table();
    assert!(table.len() > 40, "the table lists every route");
    // Logging out ends the session the rest of the walk needs: those routes go last, and
    // "log out everywhere" goes with a second session after "log out" ended the first.
    let mut routes = table.clone();
    routes.sort_by_key(|r| (r.path.contains("logout"), r.path.contains("logout-all")));
    let mut checked = 0;
    for (name, grants) in std::iter::once((String::new(), Vec::new())).chain(accounts) {
        let mut second = None;
        let session = if name.is_empty() {
            None
        } else {
            let (status, body, mut session) = login(&node, &name, None).await;
            second = Some(login(&node, &name, None).await.2);
            assert_eq!(status, 200, "{name}: {body}");
            if body["user"]["secondFactor"] == "enrollment_required" {
                // Operator admins and finance set up TOTP before anything else.
                let setup = request_as(
                    Some(&session),
                    "POST",
                    "/api/v1/auth/totp/setup",
                    "application/json",
                    b"",
                );
                let (st, text, _) = raw_full(&node, &setup).await;
                assert_eq!(st, 200, "{name}: {text}");
                let secret = totp::secret_from_text(
                    serde_json::from_str::<Json>(&text).unwrap()["secret"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                let code = format!("{:06}", totp::code_at(&secret, totp::step_of(now_micros())));
                let confirm = request_as(
                    Some(&session),
                    "POST",
                    "/api/v1/auth/totp/confirm",
                    "application/json",
                    format!("{{\"code\":\"{code}\"}}").as_bytes(),
                );
                let (st, text, _) = raw_full(&node, &confirm).await;
                assert_eq!(st, 200, "{name}: {text}");
                let codes: Json = serde_json::from_str(&text).unwrap();
                let (_, _, s2) = login(
                    &node,
                    &name,
                    Some(&format!(
                        "{:06}",
                        totp::code_at(&secret, totp::step_of(now_micros()) + 1)
                    )),
                )
                .await;
                session = s2;
                assert!(!session.cookie.is_empty(), "{name} logs in with the code");
                let body = serde_json::json!({"username": name, "password": PW, "recoveryCode": codes["recoveryCodes"][0]});
                let (st, text, head) = raw_full(
                    &node,
                    &request_as(
                        None,
                        "POST",
                        "/api/v1/auth/login",
                        "application/json",
                        body.to_string().as_bytes(),
                    ),
                )
                .await;
                assert_eq!(st, 200, "{name}: {text}");
                let cookie = head
                    .lines()
                    .find(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("set-cookie: smartpark_session=")
                    })
                    .and_then(|l| l.split_once('='))
                    .map(|(_, v)| v.split(';').next().unwrap().to_string())
                    .unwrap();
                let csrf = serde_json::from_str::<Json>(&text).unwrap()["csrfToken"]
                    .as_str()
                    .unwrap()
                    .to_string();
                second = Some(Session { cookie, csrf });
            }
            Some(session)
        };
        let principal = Principal {
            user_id: name.clone(),
            username: name.clone(),
            grants: grants.clone(),
            restrict: None,
            second_factor: SecondFactor::Satisfied,
        };
        for r in &routes {
            let body: &[u8] = if r.method == axum::http::Method::GET {
                b""
            } else {
                b"{}"
            };
            let acting = if r.path.ends_with("logout-all") {
                second.as_ref()
            } else {
                session.as_ref()
            };
            let req = request_as(
                acting,
                r.method.as_str(),
                &concrete(r.path),
                "application/json",
                body,
            );
            let status = status_only(&node, &req).await;
            let allowed = match &session {
                None => r.access == Access::Public,
                Some(_) => r.access.allows(Some(&principal), &here),
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
                let want = if session.is_none() { 401 } else { 403 };
                assert_eq!(
                    status, want,
                    "{who} {} {}: the table refuses it",
                    r.method, r.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * (Role::ALL.len() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_user_comes_from_the_session_and_every_act_is_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let (_, _, session) = login(&node, "admin", None).await;
    // A body that names someone else is refused: there is no actor field any more.
    let spoof = request_as(
        Some(&session),
        "POST",
        "/api/v1/rules/reload",
        "application/json",
        b"",
    );
    let (status, _, _) = raw_full(&node, &spoof).await;
    assert_eq!(status, 409, "no rule file: refused, and audited");
    let write = request_as(
        Some(&session),
        "POST",
        "/api/v1/points/env/temperature/write",
        "application/json",
        br#"{"value": 20, "actor": "mallory"}"#,
    );
    let (status, body, _) = raw_full(&node, &write).await;
    assert_eq!(status, 422, "{body}");
    let audit = request_as(Some(&session), "GET", "/api/v1/audit?limit=50", "", b"");
    let (status, body, _) = raw_full(&node, &audit).await;
    assert_eq!(status, 200, "{body}");
    let entries: Json = serde_json::from_str(&body).unwrap();
    let entries = entries["entries"].as_array().unwrap();
    let reload = entries
        .iter()
        .find(|e| e["action"] == "rules_reload")
        .expect("the refused reload is audited");
    assert_eq!(reload["actor"], "admin");
    assert_eq!(reload["client"], "127.0.0.1");
    assert!(reload["outcome"].as_str().unwrap().starts_with("refused"));
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "login" && e["outcome"] == "ok")
    );
    assert!(!body.contains("mallory"));
    node.store.flush().await;
    let verdict = accounts::audit::verify_store(dir.path().join("data/edge.sqlite")).unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
}

/// The document served at `/api/v1/openapi.json` names every route of the table with its
/// method, path parameters and requirement, and documents each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let (status, text) = raw(
        &node,
        b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let doc: Json = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        edge_node::api::undocumented_routes(),
        [],
        "every route has its summary and types"
    );
    assert_eq!(
        accounts::openapi::check_document(&doc, &edge_node::api::route_table()),
        Vec::<String>::new(),
        "the document describes every route as the table says"
    );
    // Bodies and queries come from the handlers' own types.
    let write = &doc["paths"]["/api/v1/points/{device}/{point}/write"]["post"];
    assert_eq!(
        write["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/WriteBody"
    );
    let history = &doc["paths"]["/api/v1/points/{device}/{point}/history"]["get"];
    assert!(
        history["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "resolution" && p["in"] == "query")
    );
    assert!(doc["components"]["schemas"]["ShelveBody"]["properties"]["duration_s"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["ShelveBody"]["additionalProperties"],
        false
    );
    node.shutdown().await;
}

/// The web apps' API client is generated from `ui/packages/api/openapi/edge.json`: it must
/// be this API's document. `SMARTPARK_UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_document_the_web_apps_are_typed_from_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ui/packages/api/openapi/edge.json");
    let current = serde_json::to_string_pretty(edge_node::api::openapi_document()).unwrap() + "\n";
    if std::env::var_os("SMARTPARK_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "{} is stale: run `SMARTPARK_UPDATE_OPENAPI=1 cargo test -p edge-node --test api the_document` and commit it",
        path.display()
    );
}
