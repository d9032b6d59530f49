//! `smartpark bench auth`: what authentication costs on the LAN API. The check of a
//! session or token plus the route's permission, per request; a login with the configured
//! Argon2id cost; and the API's read throughput with the checks against the same routes
//! served without them, in the same run, over loopback HTTP with keep-alive.

use std::path::Path;
use std::time::{Duration, Instant};

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use edge_node::{EdgeNode, EdgeSettings};
use park_model::identity::{Access, Permission, PermissionSet, Scope};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::bench::quantile;

const PASSWORD: &str = "bench-tall-cedar-river";

async fn edge(dir: &Path) -> anyhow::Result<EdgeNode> {
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\npark = \"bench\"\nbuilding = \"b1\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[mqtt]\nenabled = false\n[business]\nenabled = false\n",
            Path::new("firmware-configs/profiles")
                .canonicalize()?
                .display()
        ),
    )?;
    EdgeNode::start(EdgeSettings::load(&config)?).await
}

/// Adds a facility engineer of the benchmark's building `bench/b1` to a started edge, with
/// the edge's own password cost, and lets the edge pick the account up.
pub(crate) async fn add_engineer(
    node: &EdgeNode,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let db = node.settings.data_dir.join("edge.sqlite");
    let c = edge_node::store::open_for_admin(&db)?;
    manage::create(
        &park_db::Connection::sqlite(&c),
        &manage::host_actor("bench"),
        Mirror::Events,
        Source::Local,
        manage::NewAccount {
            username,
            display_name: "Bench engineer",
            verifier: manage::verifier_for(username, password, node.settings.auth.cost)?,
            grants: &["facility_engineer@building:bench/b1".parse()?],
            department: None,
        },
    )?;
    node.auth.reload().await
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = edge(dir.path()).await?;
    let db = dir.path().join("data/edge.sqlite");
    let cost = node.settings.auth.cost;
    add_engineer(&node, "bench-engineer", PASSWORD).await?;

    // Logins at the configured cost; the sessions they make are the ones checked below.
    let mut login_ms = Vec::new();
    let mut cookies = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let ok = node
            .auth
            .login("bench-engineer", PASSWORD, None, None, "127.0.0.1", None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        login_ms.push(t.elapsed().as_secs_f64() * 1e3);
        cookies.push(ok.token);
    }
    let token = {
        let c = edge_node::store::open_for_admin(&db)?;
        manage::create_token(
            &park_db::Connection::sqlite(&c),
            &manage::host_actor("bench"),
            Mirror::Events,
            "bench-engineer",
            "bench",
            PermissionSet::of(&[Permission::TelemetryRead]),
            1,
        )?
    };
    node.auth.reload().await?;

    // The check of every request, sessions and tokens alternately, with the permission.
    let here = Scope::building("bench", "b1");
    let access = Access::Allowed(Permission::TelemetryRead);
    let mut check_us = Vec::with_capacity(400_000);
    let until = Instant::now() + Duration::from_secs(seconds.max(1));
    let mut i = 0usize;
    while Instant::now() < until {
        for _ in 0..1000 {
            let (cookie, bearer) = if i.is_multiple_of(2) {
                (Some(cookies[i / 2 % cookies.len()].as_str()), None)
            } else {
                (None, Some(token.as_str()))
            };
            let t = Instant::now();
            let caller = node.auth.check(
                cookie,
                bearer,
                Some(std::net::Ipv4Addr::LOCALHOST.into()),
                device_drivers::now_micros(),
            );
            let allowed = caller.is_some_and(|c| access.allows(Some(&c.principal), &here));
            check_us.push(t.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(allowed, "a valid caller was refused");
            i += 1;
        }
    }

    // Throughput: the real router against the same routes without the checks.
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let open_addr = open.local_addr()?;
    let unchecked = edge_node::api::router_without_auth(node.api_state.clone());
    // Served the way the node serves its own (plain HTTP on loopback, with the peer's
    // address), so that only the checks differ.
    tokio::spawn(sync_protocol::transport::serve_http(
        open,
        unchecked,
        None,
        || {},
    ));
    // Short rounds, alternating, and the median of the pairs' overheads: the client shares
    // the two cores with the server and with whatever else the machine runs, so a slow
    // second hits one round of a pair, not the figure.
    let per_round = Duration::from_secs(seconds.clamp(1, 10)) / 8;
    let (mut on, mut off, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..8 {
        let with = throughput(node.api_addr, Some(&token), per_round).await?;
        let without = throughput(open_addr, None, per_round).await?;
        pairs.push((without - with) / without * 100.0);
        on.push(with);
        off.push(without);
    }
    on.sort_by(f64::total_cmp);
    off.sort_by(f64::total_cmp);
    pairs.sort_by(f64::total_cmp);
    let (on, off, overhead) = (
        quantile(&on, 0.5),
        quantile(&off, 0.5),
        quantile(&pairs, 0.5),
    );

    check_us.sort_by(f64::total_cmp);
    login_ms.sort_by(f64::total_cmp);
    println!("auth_check_p50_us: {:.2} us", quantile(&check_us, 0.50));
    println!("auth_check_p99_us: {:.2} us", quantile(&check_us, 0.99));
    println!("login_p50_ms: {:.1} ms", quantile(&login_ms, 0.50));
    println!(
        "login_argon2id_cost: m={} KiB t={} p={}",
        cost.memory_kib, cost.iterations, cost.parallelism
    );
    println!("api_read_with_auth_rps: {on:.0} requests/s");
    println!("api_read_without_auth_rps: {off:.0} requests/s");
    println!("api_auth_overhead_pct: {overhead:.1} %");
    node.shutdown().await;
    Ok(())
}

/// Requests per second of `GET /api/v1/site` over two keep-alive connections.
async fn throughput(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    run: Duration,
) -> anyhow::Result<f64> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /api/v1/site HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let request = request.clone();
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut n = 0u64;
            let mut line = String::new();
            while started.elapsed() < run {
                w.write_all(request.as_bytes()).await?;
                let mut length = 0usize;
                let mut status_ok = false;
                loop {
                    line.clear();
                    r.read_line(&mut line).await?;
                    if line.starts_with("HTTP/1.1 200") {
                        status_ok = true;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse()?;
                    }
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                r.read_exact(&mut body).await?;
                anyhow::ensure!(
                    status_ok,
                    "a read was refused: {}",
                    String::from_utf8_lossy(&body)
                );
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
