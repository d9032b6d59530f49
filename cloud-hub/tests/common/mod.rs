//! What the hub's API tests share: accounts with a token, and requests over real HTTP.

// Each test file that includes this uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use park_model::identity::password::Cost;
use park_model::identity::{Grant, PermissionSet};
use serde_json::Value;

pub const PW: &str = "tall-cedar-river-42";

/// A hub's settings for a test under `dir`: on SQLite, or on a schema of `dir`'s own on
/// the PostgreSQL server `SMARTPARK_TEST_PG_URL` names when it is set (the test command
/// runs the hub's tests both ways).
pub fn settings(dir: &Path) -> cloud_hub::HubSettings {
    let mut s = cloud_hub::HubSettings::for_dir(dir);
    if let Ok(url) = std::env::var("SMARTPARK_TEST_PG_URL") {
        s.database = park_db::scratch_schema(&url, &dir.display().to_string())
            .expect("a schema on the test server");
    }
    s
}

/// Adds an account with `grants` and a token carrying all its permissions (tokens from
/// the host stand in for a logged-in browser here: logging in is tested in `accounts`).
pub fn account(db: &park_db::Target, username: &str, grants: &[Grant]) -> String {
    let handle = cloud_hub::store::open_db(db).unwrap();
    let c = handle.conn();
    let actor = manage::host_actor("test");
    manage::create(
        &c,
        &actor,
        Mirror::None,
        Source::Hub,
        manage::NewAccount {
            username,
            display_name: username,
            verifier: manage::verifier_for(username, PW, Cost::TEST).unwrap(),
            grants,
            department: None,
        },
    )
    .unwrap();
    let held = grants
        .iter()
        .fold(PermissionSet::EMPTY, |a, g| a.union(g.role.permissions()));
    manage::create_token(&c, &actor, Mirror::None, username, "test", held, 1).unwrap()
}

pub fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
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
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
