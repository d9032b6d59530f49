//! `smartpark bench hub`: the hub's read API under load while 200 edges sync, on SQLite
//! and on PostgreSQL in the same run.
//!
//! For each store a hub runs in a process of its own with a park of 100 enterprises and
//! 10,000 people (imported through its API) and 200 simulated edges uploading 10 samples/s
//! each. 1,000 browser sessions (logins of 50 park managers) then read at 1,000
//! requests/s, open loop (each request has its time slot; a late answer counts from its
//! slot), cycling through the building overview, a building's latest values, a day's
//! history of a point and a page of the 10,000 people. PostgreSQL is the server
//! `SMARTPARK_BENCH_PG_URL` names, or this machine's (127.0.0.1:5432, user postgres), in a
//! schema made for the run and dropped after it.

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
    // The park's directory, empty, for the import to fill.
    let mut directory = park_model::ParkDirectory::new("bench-park", 480, 1)?;
    directory.commit("bench", 1);
    std::fs::create_dir_all(dir.join("seed/bench-park"))?;
    std::fs::write(
        dir.join("seed/bench-park/directory.automerge"),
        directory.save(),
    )?;
    let token = accounts_made(&config)?;
    let (mut child, quic, api) = crate::bench_sync::spawn_hub(&config)?;
    let result = async {
        let (edges, _statuses) = crate::bench_sync::start_edges(dir, &config, quic, EDGES).await?;
        let api = api.clone();
        let measured = tokio::task::spawn_blocking(move || {
            seed_people(&api, &token)?;
            let sessions = log_in(&api)?;
            Ok::<_, anyhow::Error>(load(&api, &sessions, Duration::from_secs(seconds)))
        })
        .await??;
        for e in edges {
            e.abort();
        }
        print_figures(store, &measured);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
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
