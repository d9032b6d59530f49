//! The hub's OpenAPI document: served, complete (every route of the table with its path
//! parameters, a summary and its types), and the very document the web apps' client is
//! generated from; and the query limits it states, enforced with answers that name the
//! parameter.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use cloud_hub::Hub;
use park_model::identity::password::Cost;
use serde_json::Value;

/// A GET to the hub's API, with an API token when one is given.
fn get(addr: SocketAddr, token: Option<&str>, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut res = req.call().unwrap();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An operator's administrator with a token for every permission (made on the host, as
/// `smartpark hub user token` does).
async fn operator_token(hub: &Hub) -> String {
    let handle = cloud_hub::store::open_db(hub.store.target()).unwrap();
    let c = handle.conn();
    let actor = manage::host_actor("test");
    let grants = ["operator_admin@operator".parse().unwrap()];
    manage::create(
        &c,
        &actor,
        Mirror::None,
        Source::Hub,
        manage::NewAccount {
            username: "root",
            display_name: "Root",
            verifier: manage::verifier_for("root", "tall-cedar-river-42", Cost::TEST).unwrap(),
            grants: &grants,
            department: None,
        },
    )
    .unwrap();
    let all = park_model::identity::Role::OperatorAdmin.permissions();
    let token = manage::create_token(&c, &actor, Mirror::None, "root", "test", all, 1).unwrap();
    hub.auth.reload().await.unwrap();
    token
}

/// The document served at `/api/v1/openapi.json` names every route of the table with its
/// method, path parameters and requirement, and documents each one with its own types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(common::settings(dir.path())).await.unwrap();
    let addr = hub.api_addr;
    let (status, doc) =
        tokio::task::spawn_blocking(move || get(addr, None, "/api/v1/openapi.json"))
            .await
            .unwrap();
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        cloud_hub::api::undocumented_routes(),
        [],
        "every route has its summary and types"
    );
    assert_eq!(
        accounts::openapi::check_document(&doc, &cloud_hub::api::route_table()),
        Vec::<String>::new(),
        "the document describes every route as the table says"
    );
    // Answers, bodies and queries come from the handlers' own types.
    let schema_of = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    assert_eq!(
        schema_of("/api/v1/edges", "get"),
        "#/components/schemas/EdgeList"
    );
    assert_eq!(
        schema_of("/api/v1/users/{id}/grants", "put"),
        "#/components/schemas/UserView"
    );
    let create = &doc["paths"]["/api/v1/users"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewUser"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["NewUser"]["additionalProperties"], false);
    assert_eq!(schemas["NewDepartment"]["additionalProperties"], false);
    assert_eq!(
        schemas["ConnectionView"]["properties"]["state"]["enum"],
        serde_json::json!(["connected", "disconnected", "never_connected"])
    );
    let history = &doc["paths"]["/api/v1/parks/{park}/buildings/{building}/points/{device}/{point}/history"]
        ["get"];
    let resolution = history["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "resolution" && p["in"] == "query")
        .expect("the history's resolution parameter");
    assert_eq!(
        resolution["schema"]["enum"],
        serde_json::json!(["raw", "1m", "15m", "1h", "auto"])
    );
    hub.shutdown().await;
}

/// The web apps' API client is generated from `ui/packages/api/openapi/hub.json`: it must
/// be this API's document. `SMARTPARK_UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_document_the_web_apps_are_typed_from_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ui/packages/api/openapi/hub.json");
    let current = serde_json::to_string_pretty(cloud_hub::api::openapi_document()).unwrap() + "\n";
    if std::env::var_os("SMARTPARK_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "{} is stale: run `SMARTPARK_UPDATE_OPENAPI=1 cargo test -p cloud-hub --test api the_document` and commit it",
        path.display()
    );
}

/// Query parameters outside the limits the document states are malformed (400, naming
/// the parameter); a well-formed range the wrong way round is unusable (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_limits_are_enforced_with_answers_that_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(common::settings(dir.path())).await.unwrap();
    // A building the hub knows (an enrollment token names it).
    cloud_hub::create_token(
        hub.store.target(),
        &hub.ca,
        "p1",
        "b1",
        Duration::from_secs(3600),
    )
    .unwrap();
    let token = operator_token(&hub).await;
    let addr = hub.api_addr;
    tokio::task::spawn_blocking(move || {
        let get = |path: &str| get(addr, Some(&token), path);
        let history = "/api/v1/parks/p1/buildings/b1/points/meter/power/history";
        for (query, name) in [
            ("from=-1", "from"),
            ("to=253402300800000000", "to"),
            ("limit=0", "limit"),
            ("limit=100001", "limit"),
            ("resolution=2m", "resolution"),
            ("bucket=1", "bucket"),
        ] {
            let (status, body) = get(&format!("{history}?{query}"));
            assert_eq!(status, 400, "{query}: {body}");
            assert!(
                body["message"].as_str().unwrap().contains(name),
                "{query}: {body}"
            );
        }
        let (status, body) = get(&format!("{history}?from=2000&to=1000"));
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("before"),
            "{body}"
        );
        // Within the limits, the unknown point is what is wrong.
        let (status, body) = get(&format!("{history}?from=0&to=253402300799999999"));
        assert_eq!(
            (status, &body["code"]),
            (404, &Value::from("not_found")),
            "{body}"
        );

        // Sequence numbers are 0 or more, and SQLite integers: a cursor outside is refused
        // rather than wrapped around.
        for path in [
            "/api/v1/parks/p1/buildings/b1/events?after=-1",
            "/api/v1/parks/p1/buildings/b1/events?after=9223372036854775808",
            "/api/v1/parks/p1/buildings/b1/events?limit=10001",
            "/api/v1/parks/p1/buildings/b1/audit?before=-1",
            "/api/v1/audit?before=18446744073709551615",
            "/api/v1/audit?limit=0",
        ] {
            let (status, body) = get(path);
            assert_eq!(status, 400, "{path}: {body}");
            let name = path.rsplit('?').next().unwrap().split('=').next().unwrap();
            assert!(
                body["message"].as_str().unwrap().contains(name),
                "{path}: {body}"
            );
        }
        let (status, body) = get("/api/v1/parks/p1/buildings/b1/events?after=9223372036854775807");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["events"], serde_json::json!([]));
        // The hub's own log, paged from its largest sequence number, starts at its newest
        // record.
        let (status, newest) = get("/api/v1/audit?limit=1");
        assert_eq!(status, 200, "{newest}");
        let (status, paged) = get("/api/v1/audit?limit=1&before=9223372036854775807");
        assert_eq!(status, 200, "{paged}");
        assert_eq!(paged["entries"], newest["entries"]);
        assert!(!paged["entries"].as_array().unwrap().is_empty(), "{paged}");
    })
    .await
    .unwrap();
    hub.shutdown().await;
}
