//! Two hubs on one PostgreSQL database (`SMARTPARK_TEST_PG_URL`; on SQLite, which one hub
//! holds alone, there is nothing to share and the tests say so and pass): sessions made
//! on one hub hold on the other, a directory edit made through one reaches the other's
//! replica (and so its edges), a building is served by one hub at a time, and the hub that
//! takes a building over continues its upload cursors without storing anything twice.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cloud_hub::store::{BuildingKey, building_lease};
use cloud_hub::{Hub, HubSettings};
use park_model::ParkDirectory;
use park_model::directory::{Enterprise, EnterpriseKind, EnterpriseStatus};
use park_model::identity::{Grant, Role, Scope};
use serde_json::json;
use sync_protocol::{
    EdgeIdentity, HubSink, Quality, RawBatch, RawSample, RawSeries, Record, UploadStream, Value,
};

/// Hub A's settings (the database, the CA, the key) and hub B's, sharing them.
fn two(dir: &Path) -> Option<(HubSettings, HubSettings)> {
    std::env::var("SMARTPARK_TEST_PG_URL").ok()?;
    let a = common::settings(&dir.join("a"));
    let mut b = HubSettings::for_dir(&dir.join("b"));
    b.database = a.database.clone();
    b.ca_cert = a.ca_cert.clone();
    b.ca_key = a.ca_key.clone();
    b.key_file = a.key_file.clone();
    Some((a, b))
}

fn seed(dir: &Path) {
    let mut d = ParkDirectory::new("p1", 480, 1).unwrap();
    d.upsert(&Enterprise {
        id: "acme".into(),
        name: "Acme".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Operator,
    })
    .unwrap();
    d.commit("seed", 1);
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    std::fs::write(dir.join("p1/directory.automerge"), d.save()).unwrap();
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(15), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn login(addr: std::net::SocketAddr, username: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let res = agent
        .post(&format!("http://{addr}/api/v1/auth/login"))
        .send_json(json!({"username": username, "password": common::PW}))
        .unwrap();
    assert_eq!(res.status(), 200);
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .filter(|c| c.starts_with("smartpark_session="))
        })
        .unwrap()
        .to_string()
}

/// Makes an enterprise through the hub at `addr`.
async fn put_enterprise(addr: std::net::SocketAddr, token: &str, id: &str) {
    let (token, id) = (token.to_string(), id.to_string());
    let (st, body) = tokio::task::spawn_blocking(move || {
        common::call(
            addr,
            Some(&token),
            "PUT",
            &format!("/api/v1/parks/p1/enterprises/{id}"),
            Some(json!({"name": id, "status": "active", "kind": "tenant"})),
        )
    })
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
}

fn me(addr: std::net::SocketAddr, cookie: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://{addr}/api/v1/auth/me"))
        .header("Cookie", cookie)
        .call()
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_directory_edits_hold_across_two_hubs() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut a_settings, b_settings)) = two(dir.path()) else {
        eprintln!("SMARTPARK_TEST_PG_URL is not set: one hub per SQLite file, nothing shared");
        return;
    };
    seed(&dir.path().join("seed"));
    a_settings.documents_seed_dir = Some(dir.path().join("seed"));
    let a = Hub::start(a_settings).await.unwrap();
    let b = Hub::start(b_settings).await.unwrap();
    let manager = common::account(
        a.store.target(),
        "manager",
        &[Grant::new(Role::ParkManager, Scope::park("p1")).unwrap()],
    );
    // Made on the host; hub A reads it now (both would within two seconds).
    a.auth.reload().await.unwrap();

    // A login on hub A is a session on hub B; a logout on A ends it on B too.
    let cookie = tokio::task::spawn_blocking({
        let addr = a.api_addr;
        move || login(addr, "manager")
    })
    .await
    .unwrap();
    let (a_addr, b_addr) = (a.api_addr, b.api_addr);
    let c = cookie.clone();
    let status = tokio::task::spawn_blocking(move || me(b_addr, &c))
        .await
        .unwrap();
    assert_eq!(status, 200, "hub B knows hub A's session");
    let csrf = {
        let c = cookie.clone();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut res = agent
                .get(&format!("http://{a_addr}/api/v1/auth/me"))
                .header("Cookie", &c)
                .call()
                .unwrap();
            let v: serde_json::Value = res.body_mut().read_json().unwrap();
            v["csrfToken"].as_str().unwrap().to_string()
        })
        .await
        .unwrap()
    };
    {
        let c = cookie.clone();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let res = agent
                .post(&format!("http://{a_addr}/api/v1/auth/logout"))
                .header("Cookie", &c)
                .header("X-CSRF-Token", &csrf)
                .header("Origin", &format!("http://{a_addr}"))
                .send_empty()
                .unwrap();
            assert!(res.status().is_success(), "logout: {}", res.status());
        })
        .await
        .unwrap();
    }
    let t = Instant::now();
    loop {
        let c = cookie.clone();
        if tokio::task::spawn_blocking(move || me(b_addr, &c))
            .await
            .unwrap()
            == 401
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the session outlived its logout on hub B"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An enterprise made through hub B is in hub A's replica, and the other way round.
    put_enterprise(b_addr, &manager, "globex").await;
    let has = |h: &Hub, id: &str| {
        h.documents.get("p1", "directory").is_some_and(|d| {
            ParkDirectory::load(&d.save())
                .unwrap()
                .get::<Enterprise>(id)
                .unwrap()
                .is_some()
        })
    };
    eventually("hub A merges hub B's edit", || has(&a, "globex")).await;
    put_enterprise(a_addr, &manager, "initech").await;
    eventually("hub B merges hub A's edit", || has(&b, "initech")).await;
    a.shutdown().await;
    b.shutdown().await;
}

fn raw(from: i64, n: usize) -> RawBatch {
    RawBatch {
        series: vec![RawSeries {
            point: "m/p".into(),
            samples: (0..n)
                .map(|i| RawSample {
                    ts: from + i as i64,
                    value: Some(Value::Float(i as f64)),
                    quality: Quality::Good,
                })
                .collect(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_building_has_one_hub_at_a_time_and_the_next_continues_its_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a_settings, b_settings)) = two(dir.path()) else {
        eprintln!("SMARTPARK_TEST_PG_URL is not set: one hub per SQLite file, nothing shared");
        return;
    };
    let a = Hub::start(a_settings).await.unwrap();
    let b = Hub::start(b_settings).await.unwrap();
    let key = BuildingKey::new("p1", "b1");
    let lease = building_lease(&key);
    assert!(a.store.take_lease(lease.clone(), "hub-a").await.unwrap());
    assert!(
        a.store.take_lease(lease.clone(), "hub-a").await.unwrap(),
        "renewed"
    );
    assert!(
        !b.store.take_lease(lease.clone(), "hub-b").await.unwrap(),
        "held by A"
    );

    // Hub A stores three records of the building.
    let edge = EdgeIdentity {
        edge_id: "e".into(),
        park: "p1".into(),
        building: "b1".into(),
    };
    let mut sink = a.store.sink(key.clone());
    for seq in 1..=3 {
        sink.accept(
            &edge,
            UploadStream::Raw,
            seq,
            Record::Raw(&raw(seq as i64 * 10, 5)),
        )
        .unwrap();
    }
    a.store.flush().await;

    // A gives the building up (or dies, and its lease runs out): B takes it, reads the
    // cursors A advanced, and a record resent from before them is not stored again.
    a.store.release_lease(lease.clone(), "hub-a").await.unwrap();
    assert!(b.store.take_lease(lease.clone(), "hub-b").await.unwrap());
    b.store.reload_building(&key).await;
    assert_eq!(b.store.durable(&key, UploadStream::Raw), 3);
    let mut sink = b.store.sink(key.clone());
    sink.accept(&edge, UploadStream::Raw, 3, Record::Raw(&raw(30, 5)))
        .unwrap();
    sink.accept(&edge, UploadStream::Raw, 4, Record::Raw(&raw(40, 5)))
        .unwrap();
    b.store.flush().await;
    let rows: i64 = b
        .store
        .read(|c| c.query_row("SELECT count(*) FROM raw", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(rows, 20, "records 1 to 4, each once");

    // A lease that ran out (its hub stopped) is taken over, and the sweep marks the
    // building's edge disconnected.
    b.store
        .admin(move |c| {
            Ok(c.execute(
                "UPDATE leases SET expires = 0 WHERE name = ?1",
                [lease.clone()],
            )?)
        })
        .await
        .unwrap();
    assert_eq!(b.store.sweep_leases().await.unwrap(), 1);
    assert!(
        a.store
            .take_lease(building_lease(&key), "hub-a")
            .await
            .unwrap()
    );
    a.shutdown().await;
    b.shutdown().await;
}
