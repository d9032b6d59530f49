//! `smartpark bench rules`: 10,000 rules (the synthetic set of `rules_engine::bench`) over
//! 5,000 points, timed per sample in the engine alone, then in line with the whole ingest
//! path against the same ingest without rules, in the same run.
//!
//! The load is a plant's mix, the same in every phase: most points wander well inside
//! their limits; one in fifty swings across 90 every 40 s, so threshold alarms (5 s
//! on-delay) and rate-of-change alarms raise and clear; one device of ten points is offline
//! (bad quality, no value), so its quality alarms fold into a storm and its stale alarm
//! comes after 60 s. Points are handed over in batches of 100, one batch per simulated
//! device poll, like `bench ingest`.
//!
//! Not measured here: actions (the synthetic rules have none) and access events.

use std::f64::consts::TAU;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use device_drivers::{PointKey, Sample, Value, now_micros};
use edge_node::alarms::Alarms;
use edge_node::store::Store;
use rules_engine::bench::{synthetic_point, synthetic_rules};
use rules_engine::{Engine, Outputs, Quality, RuleSet, SampleIn};

use crate::bench::{BatchFn, open_store, paced, peak_rss_mb, quantile, saturate};

const RULES: usize = 10_000;
const POINTS: usize = 5_000;
/// Points per batch, as one device poll of `bench ingest` hands them over.
const BATCH: usize = 100;
const DEVICES: usize = POINTS / BATCH;
/// The goal's load.
const TARGET_RATE: f64 = 100_000.0;
/// The synthetic device (`bench-7`, points 70 to 79) that does not answer.
const OFFLINE_DEVICE: usize = 7;
/// 2024-01-01 09:00 at UTC+08:00 (the synthetic rules' offset): a Monday, in office hours.
const EVAL_START: i64 = 1_704_070_800_000_000;

/// The value of point `i` at `ts` (µs); `None` for the offline device.
fn reading(i: usize, ts: i64) -> Option<f64> {
    if i / 10 == OFFLINE_DEVICE {
        return None;
    }
    let t = ts as f64 / 1e6;
    let phase = i as f64 * 0.618;
    if matches!(i % 100, 42 | 46) {
        // 80 to 100 over 40 s: above 90 for 13 s at a time, at up to 94 per minute.
        Some(90.0 + 10.0 * (TAU * t / 40.0 + phase).sin())
    } else {
        // Within 15 to 66, changing by at most 14 per minute.
        let base = 20.0 + (i % 41) as f64;
        Some(base + 5.0 * (TAU * t / 300.0 + phase).sin() + 0.2 * (TAU * t / 10.0 + phase).sin())
    }
}

/// The points in batches: batch `d` holds points `d * BATCH ..`.
fn keys() -> Vec<Vec<PointKey>> {
    (0..DEVICES)
        .map(|d| {
            (d * BATCH..(d + 1) * BATCH)
                .map(|i| PointKey::parse(&synthetic_point(i)).expect("device/point"))
                .collect()
        })
        .collect()
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let text = synthetic_rules(RULES, POINTS);
    evaluation(&text, Duration::from_secs(6 * seconds))?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, &text)?;
    ingest(&file, Duration::from_secs(seconds)).await
}

/// The engine alone, as the node drives it: every sample through `handle_sample`, time
/// through `handle_timeout` when due and at least once a second. Simulated time runs at
/// 100,000 samples/s for `simulated`; each `handle_sample` is timed on its own.
fn evaluation(text: &str, simulated: Duration) -> anyhow::Result<()> {
    let compile_start = Instant::now();
    let rules = RuleSet::compile(text, "bench-rules.toml")?;
    let compile_ms = compile_start.elapsed().as_secs_f64() * 1000.0;
    let mut engine = Engine::new(rules);
    let mut out = Outputs::new();
    let keys: Vec<String> = (0..POINTS).map(synthetic_point).collect();
    for k in &keys {
        engine.register_point(k, EVAL_START, &mut out);
    }
    let batch_step = (BATCH as f64 * 1e6 / TARGET_RATE) as i64;
    let cycles = (simulated.as_secs_f64() * TARGET_RATE / POINTS as f64).ceil() as usize;
    let mut times_us = Vec::with_capacity(cycles * POINTS);
    let (mut transitions, mut timeout_max_us) = (out.transitions.len(), 0.0f64);
    out.clear();
    let mut ts = EVAL_START;
    let mut next_timeout = ts;
    for cycle in 0..cycles {
        for batch in 0..DEVICES {
            ts += batch_step;
            if ts >= next_timeout {
                let start = Instant::now();
                engine.handle_timeout(ts, &mut out);
                timeout_max_us = timeout_max_us.max(start.elapsed().as_secs_f64() * 1e6);
                next_timeout = engine
                    .poll_timeout()
                    .map_or(ts + 1_000_000, |t| t.min(ts + 1_000_000));
            }
            let first = batch * BATCH;
            for (i, key) in keys[first..first + BATCH].iter().enumerate() {
                let sample = match reading(first + i, ts) {
                    Some(v) => SampleIn::number(key, ts, v),
                    None => SampleIn {
                        point: key,
                        ts,
                        value: None,
                        quality: Quality::Bad,
                    },
                };
                let start = Instant::now();
                engine.handle_sample(&sample, &mut out);
                let took = start.elapsed();
                // The first cycle warms caches and the allocator; it is not counted.
                if cycle > 0 {
                    times_us.push(took.as_secs_f64() * 1e6);
                }
            }
            transitions += out.transitions.len();
            out.clear();
        }
    }
    times_us.sort_by(f64::total_cmp);
    let stats = engine.stats();
    println!("rules_count: {} rules", engine.rules().len());
    println!("rules_points: {POINTS} points");
    println!("rules_instances: {} (point, rule) pairs", stats.instances);
    println!("rules_compile_ms: {compile_ms:.1} ms");
    println!("rules_eval_samples: {} samples", times_us.len());
    println!(
        "rules_eval_simulated_s: {:.0} s",
        (ts - EVAL_START) as f64 / 1e6
    );
    println!("rules_eval_transitions: {transitions} transitions");
    println!("rules_eval_open_alarms: {} alarms", stats.open_alarms);
    println!(
        "rules_eval_mean_us: {:.2} µs",
        times_us.iter().sum::<f64>() / times_us.len().max(1) as f64
    );
    println!("rules_eval_p50_us: {:.2} µs", quantile(&times_us, 0.50));
    println!("rules_eval_p99_us: {:.2} µs", quantile(&times_us, 0.99));
    println!("rules_eval_p999_us: {:.2} µs", quantile(&times_us, 0.999));
    println!("rules_eval_max_us: {:.1} µs", quantile(&times_us, 1.0));
    println!("rules_timeout_max_us: {timeout_max_us:.1} µs");
    Ok(())
}

/// One device's poll cycle at the mix of values, stamped now.
fn batch_fn(keys: Arc<Vec<Vec<PointKey>>>) -> BatchFn {
    Arc::new(move |d, _n| {
        let ts = now_micros();
        keys[d]
            .iter()
            .enumerate()
            .map(|(j, k)| match reading(d * BATCH + j, ts) {
                Some(v) => Sample::good(k.clone(), ts, Value::Float(v)),
                None => Sample::bad(k.clone(), ts, "timeout"),
            })
            .collect()
    })
}

/// The node's rules and alarms over `store`, with the tasks the node runs beside them:
/// timeouts, saves and the file watch, and a sink for actions (the synthetic rules have
/// none).
async fn open_alarms(
    store: &Store,
    file: &Path,
    keys: &[Vec<PointKey>],
) -> anyhow::Result<(Alarms, Vec<tokio::task::JoinHandle<()>>)> {
    let points: Vec<String> = keys.iter().flatten().map(|k| k.to_string()).collect();
    let (alarms, mut actions) = Alarms::open(
        store.clone(),
        store.metrics().clone(),
        Some(file.to_path_buf()),
        &points,
    )
    .await?;
    let tasks = vec![
        tokio::spawn(alarms.clone().run()),
        tokio::spawn(async move { while actions.recv().await.is_some() {} }),
    ];
    Ok((alarms, tasks))
}

/// The whole ingest path with and without the rules in line, on a fresh store each time:
/// flat out in the order without, with, with, without (so that drift of the machine falls
/// on both alike), then paced at 100,000 samples/s.
async fn ingest(file: &Path, phase: Duration) -> anyhow::Result<()> {
    let keys = Arc::new(keys());
    let batch = batch_fn(keys.clone());
    let half = phase / 2;
    // Samples per second, and CPU time of the whole process per committed sample.
    let (mut without, mut with) = ((0.0, 0.0), (0.0, 0.0));
    for rules in [false, true, true, false] {
        let dir = tempfile::tempdir()?;
        let store = open_store(dir.path(), &keys)?;
        let (alarms, tasks) = match rules {
            true => {
                let (a, t) = open_alarms(&store, file, &keys).await?;
                (Some(a), t)
            }
            false => (None, Vec::new()),
        };
        let cpu = cpu_seconds();
        let rate = saturate(&store, alarms.as_ref(), DEVICES, half, batch.clone()).await?;
        let cpu = cpu_seconds() - cpu;
        tasks.iter().for_each(|t| t.abort());
        let committed = store.metrics().samples_committed_total.load(Relaxed);
        let figures = if rules { &mut with } else { &mut without };
        figures.0 += rate / 2.0;
        figures.1 += cpu * 1e6 / committed.max(1) as f64 / 2.0;
    }

    let mut paced_figures = Vec::new();
    for rules in [false, true] {
        let dir = tempfile::tempdir()?;
        let store = open_store(dir.path(), &keys)?;
        let (alarms, tasks) = match rules {
            true => {
                let (a, t) = open_alarms(&store, file, &keys).await?;
                (Some(a), t)
            }
            false => (None, Vec::new()),
        };
        let rate = paced(
            &store,
            alarms.as_ref(),
            DEVICES,
            POINTS,
            TARGET_RATE,
            phase,
            batch.clone(),
        )
        .await?;
        tasks.iter().for_each(|t| t.abort());
        let h = &store.metrics().commit_latency;
        paced_figures.push((
            rate,
            h.quantile_us(0.99) as f64 / 1000.0,
            store.metrics().alarm_transitions_total.load(Relaxed),
        ));
    }

    println!("ingest_samples_per_s: {:.0} samples/s", without.0);
    println!("rules_ingest_samples_per_s: {:.0} samples/s", with.0);
    println!(
        "rules_ingest_slowdown_pct: {:.1} %",
        (1.0 - with.0 / without.0) * 100.0
    );
    println!("ingest_cpu_us_per_sample: {:.2} µs", without.1);
    println!("rules_ingest_cpu_us_per_sample: {:.2} µs", with.1);
    println!(
        "cpus: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("ingest_paced_offered_per_s: {TARGET_RATE:.0} samples/s");
    for ((rate, p99, transitions), prefix) in paced_figures.iter().zip(["", "rules_"]) {
        println!("{prefix}ingest_paced_committed_per_s: {rate:.0} samples/s");
        println!("{prefix}ingest_paced_commit_p99_ms: {p99:.2} ms");
        if !prefix.is_empty() {
            println!("{prefix}ingest_paced_alarm_transitions: {transitions} transitions");
        }
    }
    println!("edge_peak_rss_mb: {:.1} MB", peak_rss_mb());
    Ok(())
}

/// User and system CPU time of this process so far, in seconds (`/proc/self/stat`, in
/// clock ticks of 1/100 s, Linux's USER_HZ); 0 where it cannot be read.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}
