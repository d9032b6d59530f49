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

pub async fn run(samples: usize, events: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub_dir = dir.path().join("hub");
    let settings = cloud_hub::HubSettings {
        operator: "bench-operator".into(),
        data_dir: hub_dir.clone(),
        quic_listen: "127.0.0.1:0".parse()?,
        server_names: vec![],
        http_listen: "127.0.0.1:0".parse()?,
        ca_cert: hub_dir.join("ca/ca-cert.pem"),
        ca_key: hub_dir.join("ca/ca-key.pem"),
        token_ttl: Duration::from_secs(3600),
        edge_cert_days: 30,
    };
    let db = settings.db_path();
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
            hub: hub.quic_addr,
            identity_dir: identity.clone(),
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
