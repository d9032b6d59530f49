//! `smartpark bench sync`: a backlog drained from an edge's store to a real hub over QUIC
//! with mutual TLS, in one process: the raw telemetry of a long outage, then events.
//! Both sides are the real code (store, outbox, sessions, transport, hub storage).

use std::sync::Arc;
use std::time::{Duration, Instant};

use device_drivers::{PointKey, Sample, Value};
use edge_node::metrics::Metrics;
use edge_node::store::{Store, StoreConfig};
use edge_node::sync::{SyncSettings, SyncStatus};

use crate::bench::peak_rss_mb;

const POINTS: usize = 5000;
const DOC_CHANGES: usize = 10_000;

pub async fn run(samples: usize, events: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub_dir = dir.path().join("hub");
    let settings = cloud_hub::HubSettings {
        operator: "bench-operator".into(),
        data_dir: hub_dir.clone(),
        quic_listen: "127.0.0.1:0".parse()?,
        server_names: vec![],
        http_listen: "127.0.0.1:0".parse()?,
        http_tls: cloud_hub::HttpTls::Plain,
        auth: accounts::AuthSettings::default(),
        key_file: hub_dir.join("secrets/hub.key"),
        log_retention_days: 180,
        ca_cert: hub_dir.join("ca/ca-cert.pem"),
        ca_key: hub_dir.join("ca/ca-key.pem"),
        token_ttl: Duration::from_secs(3600),
        edge_cert_days: 30,
        renew_before: Duration::from_secs(10 * 86_400),
        documents_seed_dir: None,
        credential_keys: Default::default(),
        influx: None,
        database: park_db::Target::Sqlite(hub_dir.join("hub.sqlite")),
        payments: None,
        notifications: None,
    };
    let db = settings.database.clone();
    let hub = cloud_hub::Hub::start(settings).await?;
    let identity = dir.path().join("identity");
    let token =
        cloud_hub::create_token(&db, &hub.ca, "bench-park", "b1", Duration::from_secs(3600))?;
    sync_protocol::transport::enroll(hub.quic_addr, &token.token, &identity).await?;

    // The backlog: raw samples of 5,000 points taken while the uplink was down.
    let store_path = dir.path().join("edge.sqlite");
    let store = Store::open(
        StoreConfig::new(store_path.clone()),
        &[],
        Arc::new(Metrics::default()),
    )?;
    let keys: Vec<PointKey> = (0..POINTS)
        .map(|i| PointKey::new(&format!("dev{:02}", i / 100), &format!("p{:03}", i % 100)))
        .collect();
    let start_ts = device_drivers::now_micros() - 86_400_000_000;
    let cycles = samples.div_ceil(POINTS);
    for c in 0..cycles {
        let ts = start_ts + c as i64 * 1_000_000;
        let batch: Vec<Sample> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let v = if i % 10 == 0 {
                    Value::Float(1000.0 + c as f64 * 0.1)
                } else {
                    Value::Float(
                        ((220.0 + (c as f64 * 0.01 + i as f64).sin()) * 10.0).round() / 10.0,
                    )
                };
                Sample::good(k.clone(), ts, v)
            })
            .collect();
        store.ingest(batch).await;
    }
    store.flush().await;

    let status = Arc::new(SyncStatus::default());
    let raw_total = (cycles * POINTS) as u64;
    let t = Instant::now();
    let task = tokio::spawn(edge_node::sync::run(
        SyncSettings {
            other_hubs: Vec::new(),
            hub: hub.quic_addr,
            identity_dir: identity.clone(),
            raw_block_samples: edge_node::outbox::RAW_BLOCK,
        },
        store_path.clone(),
        None,
        status.clone(),
    ));
    // Raw is uploaded in complete blocks; the drain ends when the hub has acknowledged all.
    wait(
        &status,
        2,
        raw_total / edge_node::outbox::RAW_BLOCK as u64,
        Duration::from_secs(1800),
    )
    .await?;
    let raw_s = t.elapsed().as_secs_f64();
    let raw_bytes = status.bytes_sent();
    let sent_samples =
        (raw_total / edge_node::outbox::RAW_BLOCK as u64) * edge_node::outbox::RAW_BLOCK as u64;

    // Then events, as the access and parking services write them.
    let event_list: Vec<edge_node::events::Event> = (0..events)
        .map(|i| edge_node::events::Event::new(start_ts + i as i64 * 1000, "access.decision", &format!("door-{}", i % 500), serde_json::json!({"granted": i % 7 != 0, "reason": "granted", "credential": format!("cred-{i}")})))
        .collect();
    let t2 = Instant::now();
    for chunk in event_list.chunks(1000) {
        let chunk = chunk.to_vec();
        store
            .write(Box::new(move |c| {
                let mut stmt = c.prepare_cached("INSERT OR IGNORE INTO events (id, ts, kind, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)")?;
                for e in &chunk {
                    stmt.execute(rusqlite::params![e.id, e.ts, e.kind, e.subject, e.body.to_string()])?;
                }
                Ok(())
            }))
            .await?;
    }
    wait(&status, 0, events as u64, Duration::from_secs(600)).await?;
    let events_s = t2.elapsed().as_secs_f64();
    task.abort();

    // Document changes made offline: the park's directory, which the hub holds, with
    // `DOC_CHANGES` separate edits made at the edge (card suspensions, which a building may
    // always make), brought to the hub by automerge sync over the same connection and
    // checked there change by change.
    let doc_dir = dir.path().join("docs");
    let key = edge_node::park::generate_credential_key_file(&dir.path().join("credential.key"))?;
    let mut directory = park_model::ParkDirectory::new("bench-park", 480, start_ts)?;
    for i in 0..DOC_CHANGES {
        directory.upsert(&park_model::directory::Credential::from_secret(
            &key,
            &format!("cred-{i:05}"),
            &format!("person-{:05}", i / 2),
            park_model::directory::CredentialKind::Card,
            &format!("{:08X}", i * 7919),
        )?)?;
    }
    directory.commit("the park's cards", start_ts);
    hub.documents
        .import(&hub.store, "bench-park", "directory", &directory.save())?;
    let mut directory = directory.fork();
    for i in 0..DOC_CHANGES {
        directory.suspend_credential(&format!("cred-{i:05}"))?;
        directory.commit("offline edit", start_ts + i as i64);
    }
    std::fs::create_dir_all(&doc_dir)?;
    std::fs::write(doc_dir.join("directory.automerge"), directory.save())?;
    let park_settings = edge_node::park::ParkSettings {
        park: "bench-park".into(),
        building: "b1".into(),
        seed_dir: Some(doc_dir),
        plate_confidence_threshold: 0.6,
        utc_offset_minutes: 480,
        credential_key: edge_node::park::CredentialKeySource::Key(key),
        hub_owned: true,
    };
    let park = edge_node::park::ParkService::open(
        store.clone(),
        park_settings,
        None,
        Arc::new(Metrics::default()),
    )
    .await?;
    park.directory_loaded().await?;
    let want = park.heads("directory").unwrap_or_default();
    let t3 = Instant::now();
    let doc_status = Arc::new(SyncStatus::default());
    let doc_task = tokio::spawn(edge_node::sync::run(
        SyncSettings {
            other_hubs: Vec::new(),
            hub: hub.quic_addr,
            identity_dir: identity.clone(),
            raw_block_samples: edge_node::outbox::RAW_BLOCK,
        },
        store_path.clone(),
        Some(park),
        doc_status,
    ));
    loop {
        if hub
            .documents
            .get("bench-park", "directory")
            .is_some_and(|d| d.get_heads() == want)
        {
            break;
        }
        anyhow::ensure!(
            t3.elapsed() < Duration::from_secs(600),
            "the hub's directory never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let docs_s = t3.elapsed().as_secs_f64();
    doc_task.abort();

    // What the hub holds: every sample once, none missing.
    let (rows, distinct) = hub
        .store
        .read(|c| c.query_row("SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT point_id, ts FROM raw)) FROM raw", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))))
        .await?;
    let hub_events: i64 = hub
        .store
        .read(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
        .await?;
    println!("sync_backlog_samples: {sent_samples} samples");
    println!(
        "sync_drain_samples_per_s: {:.0} samples/s",
        sent_samples as f64 / raw_s
    );
    println!(
        "sync_wire_bytes_per_sample: {:.2} bytes",
        raw_bytes as f64 / sent_samples as f64
    );
    println!(
        "sync_events_per_s: {:.0} events/s",
        events as f64 / events_s
    );
    println!("sync_document_changes: {DOC_CHANGES} changes");
    println!("sync_document_changes_s: {docs_s:.2} s");
    println!(
        "sync_lost: {} records",
        (sent_samples as i64 - distinct).max(0) + (events as i64 - hub_events).max(0)
    );
    println!("sync_duplicated: {} records", rows - distinct);
    println!("sync_peak_rss_mb: {:.1} MB", peak_rss_mb());
    hub.shutdown().await;
    Ok(())
}

async fn wait(
    status: &SyncStatus,
    stream: usize,
    through: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let (acked, _) = status.cursors();
        if acked[stream] >= through {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < limit,
            "the hub acknowledged only {} of {through} records",
            acked[stream]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An outbox that makes one raw batch of `points` samples per second since it started, as a
/// small building would: 10 points read every second.
struct GeneratedOutbox {
    start: Instant,
    points: Vec<String>,
    acked: [u64; 3],
}

impl sync_protocol::EdgeOutbox for GeneratedOutbox {
    fn events_after(
        &mut self,
        _: u64,
        _: sync_protocol::ReadLimit,
    ) -> Vec<(u64, sync_protocol::EventRecord)> {
        Vec::new()
    }

    fn rollups_after(
        &mut self,
        _: u64,
        _: sync_protocol::ReadLimit,
    ) -> Vec<(u64, sync_protocol::RollupBatch)> {
        Vec::new()
    }

    fn raw_after(
        &mut self,
        after: u64,
        limit: sync_protocol::ReadLimit,
    ) -> Vec<(u64, sync_protocol::RawBatch)> {
        let last = self.last_written(sync_protocol::UploadStream::Raw);
        (after + 1..=last)
            .take(limit.max_records.max(1))
            .map(|seq| {
                let ts = seq as i64 * 1_000_000;
                let series = self
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| sync_protocol::RawSeries {
                        point: p.clone(),
                        samples: vec![sync_protocol::RawSample {
                            ts,
                            value: Some(sync_protocol::Value::Float(
                                20.0 + i as f64 + (seq % 10) as f64 * 0.1,
                            )),
                            quality: sync_protocol::Quality::Good,
                        }],
                    })
                    .collect();
                (seq, sync_protocol::RawBatch { series })
            })
            .collect()
    }

    fn last_written(&self, stream: sync_protocol::UploadStream) -> u64 {
        match stream {
            sync_protocol::UploadStream::Raw => self.start.elapsed().as_secs(),
            _ => 0,
        }
    }

    fn acknowledged_cursor(&self, stream: sync_protocol::UploadStream) -> u64 {
        self.acked[stream as usize]
    }

    fn acknowledged(&mut self, stream: sync_protocol::UploadStream, through: u64) {
        self.acked[stream as usize] = through;
    }
}

/// `n` edges, each sending 10 samples/s, connected to a hub running as its own process, so
/// that the hub's CPU and memory are its own.
pub async fn edges(n: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[hub]\noperator = \"bench-operator\"\ndata_dir = \"hub\"\n[quic]\nlisten = \"127.0.0.1:0\"\nserver_names = []\n\
         [http]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[ca]\ncert = \"ca/ca-cert.pem\"\nkey = \"ca/ca-key.pem\"\n\
         [enrollment]\ntoken_ttl_hours = 1\nedge_cert_days = 30\n",
    )?;
    let (mut child, quic, api) = spawn_hub(&config)?;
    let result = edges_against(dir.path(), &config, child.id(), quic, &api, n, seconds).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Starts `smartpark hub --config CONFIG` in a process of its own; answers the process and
/// the QUIC and HTTP addresses it printed.
pub(crate) fn spawn_hub(
    config: &std::path::Path,
) -> anyhow::Result<(std::process::Child, std::net::SocketAddr, String)> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["hub", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("piped")),
        &mut line,
    )?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let quic: std::net::SocketAddr = field("quic")
        .ok_or_else(|| anyhow::anyhow!("the hub printed {line:?}"))?
        .parse()?;
    let api = field("api").unwrap_or_default();
    Ok((child, quic, api))
}

async fn edges_against(
    dir: &std::path::Path,
    config: &std::path::Path,
    pid: u32,
    quic: std::net::SocketAddr,
    api: &str,
    n: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let (tasks, statuses) = start_edges(dir, config, quic, n).await?;
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_s = (cpu_ticks(pid)? - cpu0) as f64 / 100.0;
    let elapsed = t0.elapsed().as_secs_f64();
    let connected = statuses.iter().filter(|s| s.is_connected()).count();
    let acked: u64 = statuses.iter().map(|s| s.cursors().0[2]).sum();
    let hub_seen = http_get(api, "/api/v1/parks/bench-park/buildings")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["buildings"].as_array().map(|a| {
                a.iter()
                    .filter(|b| b["connection"]["state"] == "connected")
                    .count()
            })
        })
        .unwrap_or(0);
    for t in tasks {
        t.abort();
    }
    println!("hub_edges_connected: {hub_seen} edges");
    println!("edges_reporting_connected: {connected} edges");
    println!("hub_samples_acknowledged: {} samples", acked * 10);
    println!("hub_cpu_pct: {:.1} % of one core", cpu_s / elapsed * 100.0);
    println!("hub_rss_mb: {:.1} MB", rss_mb(pid)?);
    Ok(())
}

/// Enrolls `n` simulated edges (buildings b000, b001, … of `bench-park`, 10 points each,
/// 10 samples/s) with the hub of `config` and starts their sync; returns once every one is
/// connected and has synced for a moment.
pub(crate) async fn start_edges(
    dir: &std::path::Path,
    config: &std::path::Path,
    quic: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Vec<Arc<SyncStatus>>)> {
    let settings = cloud_hub::HubSettings::load(config)?;
    let ca = sync_protocol::transport::OperatorCa::load(&settings.ca_cert, &settings.ca_key)?;
    let mut tasks = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..n {
        let building = format!("b{i:03}");
        let token = cloud_hub::create_token(
            &settings.database,
            &ca,
            "bench-park",
            &building,
            Duration::from_secs(3600),
        )?;
        let identity = dir.join(format!("identity-{building}"));
        sync_protocol::transport::enroll(quic, &token.token, &identity).await?;
        let status = Arc::new(SyncStatus::default());
        let points: Vec<String> = (0..10).map(|p| format!("sensor/p{p}")).collect();
        let open = move || {
            Ok(GeneratedOutbox {
                start: Instant::now(),
                points: points.clone(),
                acked: [0; 3],
            })
        };
        tasks.push(tokio::spawn(edge_node::sync::run_with(
            SyncSettings {
                hub: quic,
                other_hubs: Vec::new(),
                identity_dir: identity,
                raw_block_samples: edge_node::outbox::RAW_BLOCK,
            },
            open,
            None,
            status.clone(),
        )));
        statuses.push(status);
    }
    let t = Instant::now();
    while statuses.iter().any(|s| !s.is_connected()) {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "not every edge connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok((tasks, statuses))
}

/// User plus system CPU time of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0)
}

fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
