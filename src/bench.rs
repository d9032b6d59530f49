//! Benchmarks. Each prints `name: value unit` lines; where a plain anchor can run here (raw
//! SQLite inserts of the same schema) it is measured in the same run so that the ratio
//! holds on a noisy machine.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use device_drivers::profile::PointKind;
use device_drivers::{PointKey, Sample, Value, now_micros};
use edge_node::alarms::Alarms;
use edge_node::metrics::Metrics;
use edge_node::store::{PointInfo, Store, StoreConfig};

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchName {
    /// 5,000 points from driver output to durable commit, beside raw SQLite inserts.
    Ingest,
    /// Door decisions: pure, and end to end over MQTT at 50 and 2,000 reads/s with telemetry.
    Access,
    /// Barrier decisions: the fee, and plate read to barrier command over MQTT.
    Parking,
    /// A backlog (1,000,000 raw samples, then 60,000 events) drained to a real hub over QUIC,
    /// then 200 edges at 10 samples/s each against a hub in its own process.
    Sync,
    /// Full scans of a 2,000-point BACnet/IP device and its Who-Is to I-Am time. The device
    /// is the bacpypes3 peer tests/hil/peers/bacnet_device.py, run with SMARTPARK_PYTHON or
    /// else the .venv/bin/python of the repository found from the current directory up, then
    /// from the executable's folder up (./scripts/test creates .venv).
    Bacnet,
    /// 10,000 rules: evaluation time per sample, and ingest with the rules in line against
    /// ingest without, at 5,000 points.
    Rules,
    /// The LAN API's session or token check with the permission check, a login at the
    /// configured Argon2id cost, and read throughput with authentication against without.
    Auth,
    /// The hub's read API at 1,000 requests/s from 1,000 sessions while 200 edges sync, on
    /// SQLite and on PostgreSQL (SMARTPARK_BENCH_PG_URL, or 127.0.0.1:5432 as postgres).
    Hub,
    /// The edge console in Chromium: against the demo, the first screen after login and the
    /// JavaScript at first load (gzip as served), beside a bare page's first paint from the
    /// same node; on a building of 5,000 points, the point list's frame rate scrolled end to
    /// end (beside a bare list's) and the live view's rate at 1,000 updates a second.
    Console,
    /// A month's bill run of 1,000 enterprises and 5,000 sub-meters with October's 15-minute
    /// rollups, run again, and 100,000 bank credits matched and reconciled, on SQLite and
    /// on PostgreSQL (as `hub`), beside plain scans and inserts of the same sizes.
    Billing,
}

pub async fn run(name: BenchName, seconds: u64, credentials: usize) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; benchmark figures come from `cargo run --release -- bench ...`"
        );
    }
    match name {
        BenchName::Ingest => ingest(Duration::from_secs(seconds.max(1))).await,
        BenchName::Access => crate::bench_park::access(seconds.max(1), credentials).await,
        BenchName::Parking => crate::bench_park::parking(seconds.max(1)).await,
        BenchName::Sync => {
            crate::bench_sync::run(1_000_000, 60_000).await?;
            crate::bench_sync::edges(200, seconds.max(1)).await
        }
        BenchName::Bacnet => crate::bench_bacnet::run().await,
        BenchName::Rules => crate::bench_rules::run(seconds.max(1)).await,
        BenchName::Auth => crate::bench_auth::run(seconds.max(1)).await,
        BenchName::Console => crate::bench_console::run(5, seconds.max(1)).await,
        BenchName::Hub => crate::bench_hub::run(seconds.max(5)).await,
        BenchName::Billing => crate::bench_billing::run().await,
    }
}

const DEVICES: usize = 50;
const POINTS_PER_DEVICE: usize = 100;

fn points() -> Vec<Vec<PointKey>> {
    (0..DEVICES)
        .map(|d| {
            (0..POINTS_PER_DEVICE)
                .map(|p| PointKey::new(&format!("dev{d:02}"), &format!("p{p:03}")))
                .collect()
        })
        .collect()
}

pub(crate) fn open_store(dir: &std::path::Path, keys: &[Vec<PointKey>]) -> anyhow::Result<Store> {
    let infos: Vec<PointInfo> = keys
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, k)| PointInfo {
            key: k.clone(),
            unit: None,
            kind: if i % 10 == 0 {
                PointKind::Counter
            } else {
                PointKind::Gauge
            },
            wrap: None,
        })
        .collect();
    let config = StoreConfig {
        budget_bytes: 64 << 30,
        ..StoreConfig::new(dir.join("edge.sqlite"))
    };
    Store::open(config, &infos, Arc::new(Metrics::default()))
}

/// One device's poll cycle: every point, one timestamp, as a driver hands it over.
fn cycle(keys: &[PointKey], n: u64) -> Vec<Sample> {
    let ts = now_micros();
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let v = if i % 10 == 0 {
                Value::Float(n as f64 * 0.5)
            } else {
                Value::Float(220.0 + (n as f64 * 0.1 + i as f64).sin())
            };
            Sample::good(k.clone(), ts, v)
        })
        .collect()
}

/// One device's batches: `batch(device, n)` is its `n`th poll cycle.
pub(crate) type BatchFn = Arc<dyn Fn(usize, u64) -> Vec<Sample> + Send + Sync>;

/// Hands one device's batch to the ingest path: the rules first, in line, when given (as
/// `edge-node/src/node.rs` does), then the store.
async fn hand_over(store: &Store, alarms: Option<&Alarms>, batch: Vec<Sample>) {
    if let Some(alarms) = alarms {
        alarms.evaluate(&batch).await;
    }
    store.ingest(batch).await;
}

/// Saturation: every one of `devices` simulated devices hands over cycles as fast as the
/// path takes them, for `phase`. Returns the samples committed per second (the store is
/// fresh, so its committed total is this phase's).
pub(crate) async fn saturate(
    store: &Store,
    alarms: Option<&Alarms>,
    devices: usize,
    phase: Duration,
    batch: BatchFn,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut producers = Vec::new();
    for d in 0..devices {
        let (store, alarms, batch) = (store.clone(), alarms.cloned(), batch.clone());
        producers.push(tokio::spawn(async move {
            let mut n = 0;
            while start.elapsed() < phase {
                hand_over(&store, alarms.as_ref(), batch(d, n)).await;
                n += 1;
            }
        }));
    }
    for p in producers {
        p.await?;
    }
    store.flush().await;
    let committed = store.metrics().samples_committed_total.load(Relaxed);
    Ok(committed as f64 / start.elapsed().as_secs_f64())
}

/// `target_rate` samples/s offered by `devices` simulated devices of `points` points in
/// all, paced like real polling, for `phase`. Returns the samples committed per second;
/// the commit latencies are in the store's metrics.
pub(crate) async fn paced(
    store: &Store,
    alarms: Option<&Alarms>,
    devices: usize,
    points: usize,
    target_rate: f64,
    phase: Duration,
    batch: BatchFn,
) -> anyhow::Result<f64> {
    let cycles_per_s = target_rate / points as f64;
    let period = Duration::from_secs_f64(1.0 / cycles_per_s);
    let start = Instant::now();
    let mut producers = Vec::new();
    for d in 0..devices {
        let (store, alarms, batch) = (store.clone(), alarms.cloned(), batch.clone());
        producers.push(tokio::spawn(async move {
            // Devices are spread over the period, as real polls are.
            tokio::time::sleep(period.mul_f64(d as f64 / devices as f64)).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0;
            while start.elapsed() < phase {
                tick.tick().await;
                hand_over(&store, alarms.as_ref(), batch(d, n)).await;
                n += 1;
            }
        }));
    }
    for p in producers {
        p.await?;
    }
    store.flush().await;
    let committed = store.metrics().samples_committed_total.load(Relaxed);
    Ok(committed as f64 / start.elapsed().as_secs_f64())
}

async fn ingest(phase: Duration) -> anyhow::Result<()> {
    let keys = Arc::new(points());
    let batch: BatchFn = {
        let keys = keys.clone();
        Arc::new(move |d, n| cycle(&keys[d], n))
    };

    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path(), &keys)?;
    let rate = saturate(&store, None, DEVICES, phase, batch.clone()).await?;
    let committed = store.metrics().samples_committed_total.load(Relaxed);

    // Latency at the goal's rate: 100,000 samples/s offered, paced like real polling.
    let dir2 = tempfile::tempdir()?;
    let paced_store = open_store(dir2.path(), &keys)?;
    let target_rate = 100_000.0;
    let paced_rate = paced(
        &paced_store,
        None,
        DEVICES,
        DEVICES * POINTS_PER_DEVICE,
        target_rate,
        phase,
        batch,
    )
    .await?;
    let h = &paced_store.metrics().commit_latency;
    let rss = peak_rss_mb();

    let raw = sqlite_raw_rows_per_s(phase)?;
    println!("ingest_points: {} points", DEVICES * POINTS_PER_DEVICE);
    println!("ingest_samples_per_s: {rate:.0} samples/s");
    println!("ingest_samples_committed: {committed} samples");
    println!("sqlite_raw_rows_per_s: {raw:.0} rows/s");
    println!("ingest_vs_sqlite_raw_pct: {:.1} %", rate / raw * 100.0);
    println!("ingest_paced_offered_per_s: {target_rate:.0} samples/s");
    println!("ingest_paced_committed_per_s: {paced_rate:.0} samples/s");
    println!(
        "ingest_commit_p50_ms: {:.2} ms",
        h.quantile_us(0.50) as f64 / 1000.0
    );
    println!(
        "ingest_commit_p99_ms: {:.2} ms",
        h.quantile_us(0.99) as f64 / 1000.0
    );
    println!(
        "ingest_commit_max_ms: {:.2} ms",
        h.quantile_us(1.0) as f64 / 1000.0
    );
    println!("edge_peak_rss_mb: {rss:.1} MB");
    Ok(())
}

/// The anchor: the same rows into the same table with the same durability settings, with
/// nothing else going on — big transactions and one prepared statement.
fn sqlite_raw_rows_per_s(phase: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.sqlite"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE samples (ts INTEGER NOT NULL, point_id INTEGER NOT NULL, value ANY, q INTEGER NOT NULL, reason TEXT);
         CREATE INDEX samples_ts ON samples (ts);",
    )?;
    let points = (DEVICES * POINTS_PER_DEVICE) as i64;
    let start = Instant::now();
    let mut rows = 0i64;
    let mut conn = conn;
    while start.elapsed() < phase {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO samples (ts, point_id, value, q, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let ts = now_micros();
            for i in 0..20_000i64 {
                stmt.execute(rusqlite::params![
                    ts,
                    (rows + i) % points,
                    220.0 + (i as f64).sin(),
                    3 << 4,
                    Option::<&str>::None
                ])?;
            }
        }
        tx.commit()?;
        rows += 20_000;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// The `q` quantile of sorted values (nearest rank); 0 when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The process's peak resident set (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
