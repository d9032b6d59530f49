//! `smartpark bench hub`: the hub's read API under load while 200 edges sync, on SQLite
//! and on PostgreSQL in the same run.
//!
//! For each store a hub runs in a process of its own with a park of 100 enterprises and
//! 10,000 people (imported through its API) and 200 simulated edges uploading 10 samples/s
//! each. 1,000 browser sessions (logins of 50 park managers) then read at 1,000
//! requests/s, open loop (each request has its time slot; a late answer counts from its
//! slot), cycling through the building overview, a building's latest values, a day's
//! history of a point and a page of the 10,000 people. Meanwhile a real edge node (building
//! `bdoor`, connected to the same hub) is read a card every 20 ms while the card is
//! suspended and restored through the hub's API, timing each edit to the first answer at
//! the door that follows it (`hub_edit_to_door_ms`). PostgreSQL is the server
//! `SMARTPARK_BENCH_PG_URL` names, or this machine's (127.0.0.1:5432, user postgres), in a
//! schema made for the run and dropped after it.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use park_model::identity::password::Cost;
use park_model::identity::{Grant, PermissionSet};

use crate::bench::quantile;

const EDGES: usize = 200;
const ENTERPRISES: usize = 100;
const PEOPLE: usize = 10_000;
const MANAGERS: usize = 50;
const SESSIONS: usize = 1_000;
const RATE_PER_S: u64 = 1_000;
const WORKERS: usize = 64;
const PASSWORD: &str = "bench-cedar-river-42";

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let server = std::env::var("SMARTPARK_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    for store in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir()?;
        let schema = format!("bench_hub_{}", std::process::id());
        let database = match store {
            "sqlite" => String::new(),
            _ => {
                let admin = park_db::Handle::open(
                    &park_db::Target::Postgres(server.clone()),
                    park_db::pool::Access::ReadWrite,
                )?;
                admin.conn().execute_batch(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))?;
                let sep = if server.contains('?') { '&' } else { '?' };
                format!("[database]\nurl = \"{server}{sep}options=-c%20search_path%3D{schema}\"\n")
            }
        };
        let result = one_store(store, dir.path(), &database, seconds).await;
        if store == "postgres" {
            let admin = park_db::Handle::open(
                &park_db::Target::Postgres(server.clone()),
                park_db::pool::Access::ReadWrite,
            )?;
            admin
                .conn()
                .execute_batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))?;
        }
        result?;
    }
    Ok(())
}

async fn one_store(
    store: &str,
    dir: &std::path::Path,
    database: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\noperator = \"bench-operator\"\ndata_dir = \"hub\"\n[quic]\nlisten = \"127.0.0.1:0\"\nserver_names = []\n\
             [http]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[ca]\ncert = \"ca/ca-cert.pem\"\nkey = \"ca/ca-key.pem\"\n\
             [enrollment]\ntoken_ttl_hours = 1\nedge_cert_days = 30\n[documents]\nseed_dir = \"seed\"\n{database}"
        ),
    )?;
    seed_documents(dir)?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)?
        .write_all(
            format!(
                "[documents.credential_keys]\nbench-park = \"{}\"\n",
                dir.join("credential.key").display()
            )
            .as_bytes(),
        )?;
    let token = accounts_made(&config)?;
    let (mut child, quic, api) = crate::bench_sync::spawn_hub(&config)?;
    let result = async {
        let (edges, _statuses) = crate::bench_sync::start_edges(dir, &config, quic, EDGES).await?;
        let mut door = door_edge(dir, &config, quic).await?;
        let (api2, token2) = (api.clone(), token.clone());
        let sessions = tokio::task::spawn_blocking(move || {
            seed_people(&api2, &token2)?;
            log_in(&api2)
        })
        .await??;
        let api2 = api.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = done.clone();
        let load = tokio::task::spawn_blocking(move || {
            let m = load(&api2, &sessions, Duration::from_secs(seconds));
            done2.store(true, Relaxed);
            m
        });
        let edits = door.edits(&api, &token, &done).await;
        let measured = load.await?;
        door.node.node.shutdown().await;
        for e in edges {
            e.abort();
        }
        print_figures(store, &measured);
        print_door_figures(store, &edits?);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

const DOOR_BUILDING: &str = "bdoor";
const DOOR_CARD: &str = "BENCH-DOOR-CARD";
const DOOR_CREDENTIAL: &str = "c-door";

/// The park's documents, in `dir/seed/bench-park` for the hub and in `dir/edge-seed` for the
/// door's edge: the directory (empty but for the door's schedule, group, operator enterprise,
/// person and card, digested under `dir/credential.key`; the import fills the rest) and
/// building `bdoor` with door `d1`.
fn seed_documents(dir: &std::path::Path) -> anyhow::Result<()> {
    use park_model::building::{Door, DoorDirection, DoorStatus};
    use park_model::directory::{
        AccessGroup, Credential, CredentialKind, Enterprise, EnterpriseKind, EnterpriseStatus,
        Interval, Person, PersonStatus, Week, WeeklySchedule,
    };
    let key = crate::bench_park::credential_key(dir)?;
    let mut d = park_model::ParkDirectory::new("bench-park", 480, 1)?;
    d.upsert(&WeeklySchedule {
        id: "always".into(),
        name: "Always".into(),
        weekdays: Week::every_day(&[Interval::new(0, 1440)]),
        holiday_calendar_id: None,
        allow_on_holidays: true,
    })?;
    d.upsert(&AccessGroup {
        id: "g-door".into(),
        name: "Door".into(),
        door_ids: vec!["d1".into()],
        schedule_id: Some("always".into()),
    })?;
    d.upsert(&Enterprise {
        id: "operator".into(),
        name: "Park operator".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Operator,
    })?;
    d.upsert(&Person {
        id: "p-door".into(),
        name: "Door tester".into(),
        enterprise_id: "operator".into(),
        status: PersonStatus::Active,
        access_group_ids: vec!["g-door".into()],
    })?;
    d.upsert(&Credential::from_secret(
        &key,
        DOOR_CREDENTIAL,
        "p-door",
        CredentialKind::Card,
        DOOR_CARD,
    )?)?;
    d.commit("bench", 1);
    let mut b = park_model::BuildingDoc::new("bench-park", DOOR_BUILDING, 1)?;
    b.upsert(&Door {
        id: "d1".into(),
        name: "Lobby".into(),
        building_id: DOOR_BUILDING.into(),
        anti_passback: false,
        direction: DoorDirection::Both,
        area_id: None,
        unlock_duration_ms: 4000,
        status: DoorStatus::Enabled,
    })?;
    b.commit("bench", 1);
    let building_file = format!("building-{DOOR_BUILDING}.automerge");
    for seed in [dir.join("seed/bench-park"), dir.join("edge-seed")] {
        std::fs::create_dir_all(&seed)?;
        std::fs::write(seed.join("directory.automerge"), d.save())?;
        std::fs::write(seed.join(&building_file), b.save())?;
    }
    Ok(())
}

/// A real edge node for building `bdoor`, enrolled with the hub and syncing, and an MQTT
/// client of its broker playing the door's reader and watching the door's commands.
struct DoorEdge {
    node: crate::bench_park::BenchEdge,
    reader: rumqttc::AsyncClient,
    /// The door's answers as they come: the read id and whether it unlocked.
    answers: tokio::sync::mpsc::UnboundedReceiver<(u64, bool)>,
}

async fn door_edge(
    dir: &std::path::Path,
    config: &std::path::Path,
    quic: std::net::SocketAddr,
) -> anyhow::Result<DoorEdge> {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let settings = cloud_hub::HubSettings::load(config)?;
    let ca = sync_protocol::transport::OperatorCa::load(&settings.ca_cert, &settings.ca_key)?;
    let token = cloud_hub::create_token(
        &settings.database,
        &ca,
        "bench-park",
        DOOR_BUILDING,
        Duration::from_secs(3600),
    )?;
    let identity = dir.join("identity-door");
    sync_protocol::transport::enroll(quic, &token.token, &identity).await?;
    let extra = format!(
        "[sync]\nhub = \"{quic}\"\nidentity_dir = \"{}\"\n",
        identity.display()
    );
    let node = crate::bench_park::edge(
        dir,
        crate::bench_park::Place {
            park: "bench-park",
            building: DOOR_BUILDING,
            extra: &extra,
        },
        &dir.join("edge-seed"),
        crate::bench_park::BrokerAuth::Anonymous,
        &[],
        &[],
    )
    .await?;
    let broker = node
        .node
        .mqtt
        .ok_or_else(|| anyhow::anyhow!("the door's edge has no broker"))?;
    let mut options = MqttOptions::new("bench-door", broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (reader, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    reader
        .subscribe("door/d1/command", QoS::AtLeastOnce)
        .await?;
    let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let id = v["read"].as_str().and_then(|r| r.parse().ok());
                    if let Some(id) = id
                        && tx.send((id, v["command"] == "unlock")).is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(DoorEdge {
        node,
        reader,
        answers,
    })
}

/// The times of the suspensions (and restorations) measured, in ms.
struct Edits {
    suspend_ms: Vec<f64>,
    restore_ms: Vec<f64>,
    /// The API's answers to the edits.
    answer_ms: Vec<f64>,
}

impl DoorEdge {
    /// Suspends and restores the door's card through the hub's API until `done` (at least
    /// three times): each edit timed from just before its request to the first answer at the
    /// door that shows it, with a read every 20 ms.
    async fn edits(
        &mut self,
        api: &str,
        token: &str,
        done: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Edits> {
        let mut edits = Edits {
            suspend_ms: Vec::new(),
            restore_ms: Vec::new(),
            answer_ms: Vec::new(),
        };
        let mut read_id = 0u64;
        // The edge decides from its seed at first; the card opens the door once it is
        // connected and the import has reached it.
        let opened = self
            .until(&mut read_id, Instant::now(), true, Duration::from_secs(60))
            .await;
        anyhow::ensure!(opened.is_some(), "the card never opened the door's edge");
        while edits.suspend_ms.len() < 3 || !done.load(Relaxed) {
            for (status, unlock, times) in [
                ("suspended", false, &mut edits.suspend_ms),
                ("active", true, &mut edits.restore_ms),
            ] {
                let at = Instant::now();
                let answered = tokio::spawn(set_status(api.to_string(), token.to_string(), status));
                let took = self
                    .until(&mut read_id, at, unlock, Duration::from_secs(30))
                    .await
                    .ok_or_else(|| {
                        anyhow::anyhow!("the door never answered the card as {status}")
                    })?;
                times.push(took.as_secs_f64() * 1000.0);
                edits
                    .answer_ms
                    .push(answered.await??.as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(edits)
    }

    /// Reads the card every 20 ms until the door answers `unlock` (or not) to a read sent
    /// after `since`; how long after `since` that answer came.
    async fn until(
        &mut self,
        read_id: &mut u64,
        since: Instant,
        unlock: bool,
        limit: Duration,
    ) -> Option<Duration> {
        let first = *read_id + 1;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while since.elapsed() < limit {
            tokio::select! {
                _ = tick.tick() => {
                    *read_id += 1;
                    let read = serde_json::json!({
                        "type": "card", "value": DOOR_CARD, "reader": "in", "id": read_id.to_string()
                    });
                    let _ = self
                        .reader
                        .publish("door/d1/read", rumqttc::QoS::AtLeastOnce, false, read.to_string())
                        .await;
                }
                answer = self.answers.recv() => {
                    let (id, unlocked) = answer?;
                    if id >= first && unlocked == unlock {
                        return Some(since.elapsed());
                    }
                }
            }
        }
        None
    }
}

/// Sets the door card's status through the hub's API; answers how long the API took.
async fn set_status(api: String, token: String, status: &'static str) -> anyhow::Result<Duration> {
    let url = format!("{api}/api/v1/parks/bench-park/credentials/{DOOR_CREDENTIAL}/status");
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let at = Instant::now();
        let mut res = agent()
            .post(&url)
            .header("Authorization", &auth)
            .send_json(serde_json::json!({"status": status, "reason": "benchmark"}))?;
        let body = res.body_mut().read_to_string()?;
        anyhow::ensure!(
            res.status().is_success(),
            "setting the card {status} answered {}: {body}",
            res.status()
        );
        Ok(at.elapsed())
    })
    .await?
}

fn print_door_figures(store: &str, edits: &Edits) {
    let mut all: Vec<f64> = edits.suspend_ms.clone();
    all.sort_by(f64::total_cmp);
    let mut restore = edits.restore_ms.clone();
    restore.sort_by(f64::total_cmp);
    println!(
        "hub_edit_to_door_ms_{store}: {:.0} ms (slowest of {} suspensions; a card suspended on the hub to its refusal at a connected edge's door)",
        all.last().copied().unwrap_or(0.0),
        all.len()
    );
    println!(
        "hub_edit_to_door_p50_ms_{store}: {:.0} ms",
        quantile(&all, 0.5)
    );
    println!(
        "hub_restore_to_door_ms_{store}: {:.0} ms (slowest of {} restorations)",
        restore.last().copied().unwrap_or(0.0),
        restore.len()
    );
    let mut answers = edits.answer_ms.clone();
    answers.sort_by(f64::total_cmp);
    println!(
        "hub_edit_answer_p50_ms_{store}: {:.0} ms (the API's answer to those edits, stored and audited)",
        quantile(&answers, 0.5)
    );
    println!(
        "hub_edit_answer_max_ms_{store}: {:.0} ms",
        answers.last().copied().unwrap_or(0.0)
    );
}

/// The park managers who log in, and an operator token for the seeding, made on the host
/// before the hub starts (as `smartpark hub user add` does), with a cheap password cost so
/// that 1,000 logins measure the API and not Argon2.
fn accounts_made(config: &std::path::Path) -> anyhow::Result<String> {
    let settings = cloud_hub::HubSettings::load(config)?;
    let handle = cloud_hub::store::open_db(&settings.database)?;
    let c = handle.conn();
    let actor = manage::host_actor("bench");
    let managers: Vec<Grant> = vec!["park_manager@park:bench-park".parse()?];
    let create = |username: &str, grants: &[Grant]| -> anyhow::Result<()> {
        manage::create(
            &c,
            &actor,
            Mirror::None,
            Source::Hub,
            manage::NewAccount {
                username,
                display_name: username,
                verifier: manage::verifier_for(username, PASSWORD, Cost::TEST)?,
                grants,
                department: None,
            },
        )?;
        Ok(())
    };
    for i in 0..MANAGERS {
        create(&format!("manager{i:02}"), &managers)?;
    }
    let admin: Vec<Grant> = vec!["operator_admin@operator".parse()?];
    create("seeder", &admin)?;
    let held = admin
        .iter()
        .fold(PermissionSet::EMPTY, |a, g| a.union(g.role.permissions()));
    let token = manage::create_token(&c, &actor, Mirror::None, "seeder", "bench", held, 1)?;
    Ok(token)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// 100 enterprises and 10,000 people through the hub's CSV import.
fn seed_people(api: &str, token: &str) -> anyhow::Result<()> {
    let agent = agent();
    let mut enterprises = String::from("id,name\n");
    for e in 0..ENTERPRISES {
        enterprises.push_str(&format!("e{e:03},Enterprise {e}\n"));
    }
    let mut people = String::from("id,name,enterprise_id\n");
    for p in 0..PEOPLE {
        people.push_str(&format!("p{p:05},Person {p},e{:03}\n", p % ENTERPRISES));
    }
    for (kind, csv) in [("enterprises", enterprises), ("people", people)] {
        let mut res = agent
            .post(&format!("{api}/api/v1/parks/bench-park/import/{kind}"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({"csv": csv, "dry_run": false}))?;
        let body = res.body_mut().read_to_string()?;
        anyhow::ensure!(
            res.status().is_success(),
            "the {kind} import answered {}: {body}",
            res.status()
        );
    }
    Ok(())
}

/// 1,000 sessions: each manager logs in 20 times. Answers the session cookies.
fn log_in(api: &str) -> anyhow::Result<Vec<String>> {
    let agent = agent();
    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let username = format!("manager{:02}", i % MANAGERS);
        let res = agent
            .post(&format!("{api}/api/v1/auth/login"))
            .send_json(serde_json::json!({"username": username, "password": PASSWORD}))?;
        anyhow::ensure!(res.status().is_success(), "login answered {}", res.status());
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.split(';')
                    .next()
                    .filter(|c| c.starts_with("smartpark_session="))
            })
            .ok_or_else(|| anyhow::anyhow!("login set no session cookie"))?
            .to_string();
        sessions.push(cookie);
    }
    Ok(sessions)
}

/// The request of time slot `i`.
fn request(i: usize, now_us: i64) -> String {
    let building = format!("b{:03}", (i / 4) % EDGES);
    match i % 4 {
        0 => "/api/v1/parks/bench-park/buildings".into(),
        1 => format!("/api/v1/parks/bench-park/buildings/{building}/points"),
        2 => format!(
            "/api/v1/parks/bench-park/buildings/{building}/points/sensor/p{}/history?from={}&to={now_us}",
            (i / 4) % 10,
            now_us - 86_400_000_000
        ),
        _ => format!(
            "/api/v1/parks/bench-park/people?offset={}&limit=50",
            (i * 37) % (PEOPLE - 50)
        ),
    }
}

/// The kinds of request, in the order [`request`] cycles through them.
const KINDS: [&str; 4] = ["overview", "latest", "history", "people"];

struct Measured {
    /// Milliseconds from each request's slot to its answer.
    latencies_ms: Vec<f64>,
    /// The same per kind of request.
    by_kind: [Vec<f64>; 4],
    errors: usize,
    sent: usize,
    elapsed_s: f64,
}

/// Open-loop load at [`RATE_PER_S`] for `length`, from [`WORKERS`] threads.
fn load(api: &str, sessions: &[String], length: Duration) -> Measured {
    let total = (RATE_PER_S as f64 * length.as_secs_f64()) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now() + Duration::from_millis(100);
    let now_us = cloud_hub::store::now_micros();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            let (next, errors, latencies) = (next.clone(), errors.clone(), latencies.clone());
            s.spawn(move || {
                let agent = agent();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        break;
                    }
                    let slot = start + Duration::from_micros(i as u64 * 1_000_000 / RATE_PER_S);
                    if let Some(wait) = slot.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let res = agent
                        .get(&format!("{api}{}", request(i, now_us)))
                        .header("Cookie", &sessions[i % sessions.len()])
                        .call();
                    let ok = match res {
                        Ok(mut r) => {
                            let status = r.status();
                            let _ = r.body_mut().read_to_vec();
                            status.is_success()
                        }
                        Err(_) => false,
                    };
                    mine.push((i % 4, slot.elapsed().as_secs_f64() * 1000.0));
                    if !ok {
                        errors.fetch_add(1, Relaxed);
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            });
        }
    });
    let elapsed_s = start.elapsed().as_secs_f64();
    let all: Vec<(usize, f64)> =
        std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let mut by_kind: [Vec<f64>; 4] = Default::default();
    for (kind, ms) in &all {
        by_kind[*kind].push(*ms);
    }
    for k in &mut by_kind {
        k.sort_by(f64::total_cmp);
    }
    let mut latencies_ms: Vec<f64> = all.into_iter().map(|(_, ms)| ms).collect();
    latencies_ms.sort_by(f64::total_cmp);
    Measured {
        latencies_ms,
        by_kind,
        errors: errors.load(Relaxed),
        sent: total,
        elapsed_s,
    }
}

fn print_figures(store: &str, m: &Measured) {
    let l = &m.latencies_ms;
    println!("hub_api_p50_ms_{store}: {:.1} ms", quantile(l, 0.50));
    println!("hub_api_p90_ms_{store}: {:.1} ms", quantile(l, 0.90));
    println!("hub_api_p99_ms_{store}: {:.1} ms", quantile(l, 0.99));
    println!(
        "hub_api_max_ms_{store}: {:.1} ms",
        l.last().copied().unwrap_or(0.0)
    );
    for (kind, l) in KINDS.iter().zip(&m.by_kind) {
        println!("hub_api_{kind}_p50_ms_{store}: {:.1} ms", quantile(l, 0.50));
        println!("hub_api_{kind}_p99_ms_{store}: {:.1} ms", quantile(l, 0.99));
    }
    println!("hub_api_errors_{store}: {} requests", m.errors);
    println!(
        "hub_api_rps_{store}: {:.0} requests/s",
        m.sent as f64 / m.elapsed_s.max(1e-9)
    );
}
