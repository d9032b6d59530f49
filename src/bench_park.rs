//! `smartpark bench access` and `smartpark bench parking`: the pure decisions on a large
//! sample park, and the whole path over MQTT on a real edge node (read published → command
//! received, the decision durable first), at a light rate and under load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use device_drivers::{PointKey, Sample, Value, now_micros};
use edge_node::{EdgeNode, EdgeSettings};
use park_model::access::{AccessIndex, NoPresence};
use park_model::directory::CredentialKey;
use park_model::sample::{SAMPLE_WORKDAY_MORNING, SampleRng, sample_directory, sample_parking};
use park_model::{BuildingDoc, ParkDirectory};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::bench::{peak_rss_mb, quantile};

/// The park's credential key in `dir/credential.key`, the file the edge of [`edge`] reads:
/// made on first use, read after.
pub(crate) fn credential_key(dir: &Path) -> anyhow::Result<CredentialKey> {
    let file = dir.join("credential.key");
    if file.exists() {
        edge_node::park::read_credential_key_file(&file)
    } else {
        edge_node::park::generate_credential_key_file(&file)
    }
}

/// How the benchmark's MQTT clients reach the broker: with accounts and their topic ACLs,
/// as in a building, or anonymously (`mqtt.allow_anonymous`, a lab), to show what the
/// checks cost.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerAuth {
    Accounts,
    Anonymous,
}

/// The accounts the probes log in with (one per connection: a client id is its username),
/// each a controller of every door and lane: a reader, an actuator, and a controller that
/// does both on one connection.
const PROBE_USERS: [&str; 3] = ["bench-reader", "bench-actuator", "bench-one-link"];

/// A started edge and the password of its probe accounts (none when anonymous).
pub(crate) struct BenchEdge {
    pub(crate) node: EdgeNode,
    password: Option<String>,
}

/// Which building an edge of [`edge`] is, and config tables added to its own (`[sync]`).
pub(crate) struct Place<'a> {
    pub(crate) park: &'a str,
    pub(crate) building: &'a str,
    pub(crate) extra: &'a str,
}

/// Building b1 of the sample park, with no uplink.
const SAMPLE: Place<'static> = Place {
    park: "sample-park",
    building: "b1",
    extra: "",
};

/// Starts an edge node with no devices whose documents come from `seed`, with the credential
/// key of `dir` (see [`credential_key`]); with `auth`, the probes' accounts control `doors`
/// and `lanes`.
pub(crate) async fn edge(
    dir: &Path,
    place: Place<'_>,
    seed: &Path,
    auth: BrokerAuth,
    doors: &[String],
    lanes: &[String],
) -> anyhow::Result<BenchEdge> {
    credential_key(dir)?;
    let config = dir.join("edge.toml");
    let quoted = |ids: &[String]| {
        ids.iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (mqtt, password) = match auth {
        BrokerAuth::Anonymous => ("allow_anonymous = true\n".to_string(), None),
        BrokerAuth::Accounts => {
            let password = edge_node::broker::random_password();
            let accounts: String = PROBE_USERS
                .iter()
                .map(|u| {
                    format!(
                        "[[mqtt.client]]\nusername = \"{u}\"\npassword_hash = \"{}\"\ndoors = [{}]\nlanes = [{}]\n",
                        edge_node::broker::password_hash(&password, edge_node::broker::HASH_ITERATIONS),
                        quoted(doors),
                        quoted(lanes)
                    )
                })
                .collect();
            (accounts, Some(password))
        }
    };
    std::fs::write(
        &config,
        format!(
            "[node]\npark = \"{}\"\nbuilding = \"{}\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n\
             [business]\nseed_dir = \"{}\"\ncredential_key_file = \"credential.key\"\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\n{mqtt}{}",
            place.park,
            place.building,
            Path::new("firmware-configs/profiles")
                .canonicalize()
                .context("run benchmarks from the repository root")?
                .display(),
            seed.display(),
            place.extra
        ),
    )?;
    Ok(BenchEdge {
        node: EdgeNode::start(EdgeSettings::load(&config)?).await?,
        password,
    })
}

/// The p99 of `fdatasync` after a 4 KiB append in `dir`, in ms: the disk's share of a door's
/// answer, measured in the same run.
fn fsync_p99_ms(dir: &Path) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(500);
    for _ in 0..500 {
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    times.sort_by(f64::total_cmp);
    Ok(quantile(&times, 0.99))
}

/// An MQTT client that timestamps what it sends by read id and records the latency of the
/// answer that echoes it.
struct Prober {
    client: AsyncClient,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
}

impl Prober {
    /// Publishes on one connection and listens for `answers` (topics, one per door or lane:
    /// an account may not subscribe to a wildcard) on another, as a controller with separate
    /// reader and actuator links would; `shared` uses one connection for both, as most
    /// controllers do. With a password, each connection logs in as one of [`PROBE_USERS`].
    /// A controller stays connected for days: the probe lets the edge settle for a second
    /// after connecting before it measures.
    async fn connect(edge: &BenchEdge, answers: &[String], shared: bool) -> anyhow::Result<Prober> {
        let broker = edge.node.mqtt.context("the edge has no broker")?;
        let connect = |user: &str| {
            let mut options = MqttOptions::new(
                format!("{user}-{}", fastrand::u32(..)),
                broker.ip().to_string(),
                broker.port(),
            );
            if let Some(p) = &edge.password {
                options.set_credentials(user, p);
            }
            options.set_inflight(1000);
            options.set_keep_alive(Duration::from_secs(30));
            let (client, mut eventloop) = AsyncClient::new(options, 10_000);
            let mut network = rumqttc::NetworkOptions::new();
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
            (client, eventloop)
        };
        let (listener, mut eventloop) = connect(if shared {
            PROBE_USERS[2]
        } else {
            PROBE_USERS[0]
        });
        for a in answers {
            listener.subscribe(a, QoS::AtLeastOnce).await?;
        }
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (s2, l2) = (sent.clone(), latencies.clone());
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let mut acks = answers.len();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let refused = a
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                        acks = acks.saturating_sub(1);
                        if (refused || acks == 0)
                            && let Some(tx) = subscribed_tx.take()
                        {
                            let _ = tx.send(!refused);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let at = Instant::now();
                        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                            continue;
                        };
                        let Some(id) = v["read"].as_str() else {
                            continue;
                        };
                        if let Some(t) = s2.lock().unwrap().remove(id) {
                            l2.lock()
                                .unwrap()
                                .push(at.duration_since(t).as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "Benchmark MQTT client lost the broker.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let subscribed = tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .context("no SUBACK from the edge's broker")??;
        anyhow::ensure!(subscribed, "the edge's broker refused a subscription");
        let client = if shared {
            listener
        } else {
            let (client, mut eventloop) = connect(PROBE_USERS[1]);
            tokio::spawn(async move {
                loop {
                    if eventloop.poll().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
            client
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Prober {
            client,
            sent,
            latencies,
        })
    }

    async fn send(
        &self,
        topic: String,
        id: String,
        payload: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.sent.lock().unwrap().insert(id, Instant::now());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        Ok(())
    }

    /// Waits for outstanding answers, then returns and clears the latencies (ms).
    async fn drain(&self) -> (Vec<f64>, usize) {
        for _ in 0..100 {
            if self.sent.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let missing = std::mem::take(&mut *self.sent.lock().unwrap()).len();
        let mut l = std::mem::take(&mut *self.latencies.lock().unwrap());
        l.sort_by(f64::total_cmp);
        (l, missing)
    }
}

/// Sends `per_tick` messages every millisecond-ish tick so that `rate` per second goes out.
async fn paced(
    seconds: u64,
    rate: f64,
    mut send: impl AsyncFnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let phase = Duration::from_secs(seconds);
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < phase {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while n < due {
            send(n).await?;
            n += 1;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub async fn access(seconds: u64, credentials: usize) -> anyhow::Result<()> {
    // The edge below reads this key; the sample's credentials are digested under it.
    let dir = tempfile::tempdir()?;
    let key = credential_key(dir.path())?;
    let t = Instant::now();
    let mut sample = sample_directory(credentials, 500, 1, &key)?;
    let build_s = t.elapsed().as_secs_f64();
    let bytes = sample.directory.save();
    let building_bytes = sample.building.save();
    let t = Instant::now();
    let directory = ParkDirectory::load(&bytes)?;
    let building = BuildingDoc::load(&building_bytes)?;
    let automerge_ms = t.elapsed().as_secs_f64() * 1000.0;
    let index = AccessIndex::build(&directory.snapshot()?, [&building.snapshot()?]);
    let document_ms = t.elapsed().as_secs_f64() * 1000.0;

    // The pure decision: random credentials (most valid, some not), half of them at random
    // doors (mostly outside the holder's groups: denied) and half at the lobby door, which
    // every group opens (mostly granted, after the schedule and holiday checks). Each read is
    // digested under the park's key and then decided, as the edge does; the digest alone is
    // timed too.
    let mut rng = SampleRng::new(7);
    let mut times = Vec::with_capacity(200_000);
    let mut digest_times = Vec::with_capacity(200_000);
    let mut granted_times = Vec::with_capacity(100_000);
    for i in 0..200_000 {
        let (kind, value) =
            &sample.credentials[rng.below(sample.credentials.len() as u64) as usize];
        let door = if i % 2 == 0 {
            &sample.doors[rng.below(sample.doors.len() as u64) as usize]
        } else {
            &sample.doors[0]
        };
        let t = Instant::now();
        let read = key.present(*kind, value);
        let digested = t.elapsed();
        let d = index.decide(&read, door, SAMPLE_WORKDAY_MORNING, &NoPresence);
        let us = t.elapsed().as_nanos() as f64 / 1000.0;
        times.push(us);
        digest_times.push(digested.as_nanos() as f64 / 1000.0);
        if d.granted {
            granted_times.push(us);
        }
    }
    let granted = granted_times.len();
    granted_times.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    digest_times.sort_by(f64::total_cmp);
    println!("access_credentials: {credentials} credentials");
    println!("access_doors: {} doors", sample.doors.len());
    println!("directory_build_s: {build_s:.1} s");
    println!("directory_bytes: {} bytes", bytes.len());
    println!("directory_document_load_ms: {document_ms:.0} ms");
    println!("directory_automerge_load_ms: {automerge_ms:.0} ms");
    println!("access_decision_p50_us: {:.2} us", quantile(&times, 0.50));
    println!("access_decision_p99_us: {:.2} us", quantile(&times, 0.99));
    println!(
        "access_digest_p99_us: {:.2} us",
        quantile(&digest_times, 0.99)
    );
    println!(
        "access_decision_granted_p99_us: {:.2} us",
        quantile(&granted_times, 0.99)
    );
    println!(
        "access_decision_granted_pct: {:.1} %",
        granted as f64 / times.len() as f64 * 100.0
    );

    // End to end over MQTT on a real edge node, the probes logged in with accounts.
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed)?;
    std::fs::write(seed.join("directory.automerge"), &bytes)?;
    std::fs::write(seed.join("building-b1.automerge"), &building_bytes)?;
    let t = Instant::now();
    // The same edge, started twice: on a fresh store, then again on the same one.
    let start = || {
        edge(
            dir.path(),
            SAMPLE,
            &seed,
            BrokerAuth::Accounts,
            &sample.doors,
            &[],
        )
    };
    let edge1 = start().await?;
    println!(
        "edge_start_with_directory_ms: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let answers: Vec<String> = sample
        .doors
        .iter()
        .map(|d| format!("door/{d}/command"))
        .collect();
    let prober = Prober::connect(&edge1, &answers, false).await?;
    let creds = Arc::new(sample.credentials.clone());
    let doors = Arc::new(sample.doors.clone());
    let read = move |n: u64| {
        let (kind, value) = &creds[(n.wrapping_mul(2_654_435_761) % creds.len() as u64) as usize];
        let door = &doors[(n % doors.len() as u64) as usize];
        (
            format!("door/{door}/read"),
            format!("r{n}"),
            json!({"type": kind.as_str(), "value": value, "id": format!("r{n}")}),
        )
    };
    let rate = paced(seconds, 50.0, async |n| {
        let (topic, id, payload) = read(n);
        prober.send(topic, id, payload).await
    })
    .await?;
    let (light, missing_light) = prober.drain().await;
    println!("access_e2e_light_reads_per_s: {rate:.0} reads/s");
    println!("access_e2e_light_p50_ms: {:.2} ms", quantile(&light, 0.50));
    println!("access_e2e_light_p99_ms: {:.2} ms", quantile(&light, 0.99));
    // The same, with reads and commands on one connection (see `Prober::connect`).
    let shared = Prober::connect(&edge1, &answers, true).await?;
    paced(seconds.min(5), 50.0, async |n| {
        let (topic, id, payload) = read(500_000_000 + n);
        shared.send(topic, id, payload).await
    })
    .await?;
    let (one_link, missing_one) = shared.drain().await;
    println!(
        "access_e2e_one_connection_p50_ms: {:.2} ms",
        quantile(&one_link, 0.50)
    );
    println!(
        "access_e2e_one_connection_p99_ms: {:.2} ms",
        quantile(&one_link, 0.99)
    );

    edge1.node.shutdown().await;

    // A restart: the edge decides from the directory's row copy while the document loads.
    let t = Instant::now();
    let edge2 = start().await?;
    let restart_ms = t.elapsed().as_secs_f64() * 1000.0;
    let park = edge2
        .node
        .park
        .clone()
        .context("the edge has no park service")?;
    let (from_copy, decide_ready) = park.start_report();
    park.directory_loaded().await?;
    let document_ready_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        from_copy,
        "the restarted edge did not start from the row copy"
    );
    println!(
        "directory_load_ms: {:.0} ms",
        decide_ready.as_secs_f64() * 1000.0
    );
    println!("edge_restart_ms: {restart_ms:.0} ms");
    println!("edge_restart_document_ready_ms: {document_ready_ms:.0} ms");

    // The load, on the settled edge, with the probes' accounts and their ACLs...
    let prober = Prober::connect(&edge2, &answers, false).await?;
    let loaded = under_load(&edge2.node, &prober, &read, seconds, 1_000_000_000).await?;
    println!("access_e2e_reads_per_s: {:.0} reads/s", loaded.rate);
    println!(
        "access_e2e_ingest_samples_per_s: {:.0} samples/s",
        loaded.ingest_rate
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "access_e2e_{name}_ms: {:.2} ms",
            quantile(&loaded.latencies, q)
        );
    }
    println!("edge_peak_rss_mb: {:.1} MB", peak_rss_mb());
    edge2.node.shutdown().await;

    // ...and again with anonymous probes (a lab broker), to show what the checks cost.
    let edge3 = edge(dir.path(), SAMPLE, &seed, BrokerAuth::Anonymous, &[], &[]).await?;
    edge3
        .node
        .park
        .clone()
        .context("the edge has no park service")?
        .directory_loaded()
        .await?;
    let prober = Prober::connect(&edge3, &answers, false).await?;
    let anonymous = under_load(&edge3.node, &prober, &read, seconds, 2_000_000_000).await?;
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        println!(
            "access_e2e_anonymous_{name}_ms: {:.2} ms",
            quantile(&anonymous.latencies, q)
        );
    }
    println!(
        "access_e2e_unanswered: {} reads",
        missing_light + missing_one + loaded.missing + anonymous.missing
    );
    println!("fsync_p99_ms: {:.2} ms", fsync_p99_ms(dir.path())?);
    edge3.node.shutdown().await;
    Ok(())
}

/// What [`under_load`] measured.
struct Loaded {
    rate: f64,
    ingest_rate: f64,
    latencies: Vec<f64>,
    missing: usize,
}

/// 2,000 reads/s while telemetry flows into the same store at 50,000 samples/s.
async fn under_load(
    node: &EdgeNode,
    prober: &Prober,
    read: &impl Fn(u64) -> (String, String, serde_json::Value),
    seconds: u64,
    offset: u64,
) -> anyhow::Result<Loaded> {
    let store = node.store.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let ingest = tokio::spawn(async move {
        let keys: Vec<PointKey> = (0..5000)
            .map(|i| PointKey::new(&format!("meter{:02}", i / 100), &format!("p{:03}", i % 100)))
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * 50_000.0) as u64;
            while sent < due {
                let ts = now_micros();
                let batch: Vec<Sample> = (0..500)
                    .map(|i| {
                        Sample::good(
                            keys[((sent + i) % 5000) as usize].clone(),
                            ts,
                            Value::Float(i as f64),
                        )
                    })
                    .collect();
                store.ingest(batch).await;
                sent += 500;
            }
        }
        sent as f64 / start.elapsed().as_secs_f64()
    });
    let rate = paced(seconds, 2000.0, async |n| {
        let (topic, id, payload) = read(offset + n);
        prober.send(topic, id, payload).await
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ingest_rate = ingest.await?;
    let (latencies, missing) = prober.drain().await;
    Ok(Loaded {
        rate,
        ingest_rate,
        latencies,
        missing,
    })
}

pub async fn parking(seconds: u64) -> anyhow::Result<()> {
    let mut doc = sample_parking(2000, 1)?;
    let snapshot = doc.snapshot()?;
    // The pure fee: random stays of up to three days against the standard tariff.
    let tariff = snapshot
        .tariffs
        .get("standard")
        .context("the sample has a standard tariff")?;
    let mut rng = SampleRng::new(3);
    let mut times = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let entered = SAMPLE_WORKDAY_MORNING + rng.below(86_400) as i64 * 1_000_000;
        let stay = rng.below(3 * 86_400) as i64 * 1_000_000;
        let t = Instant::now();
        let fee = park_model::tariff::parking_fee(tariff, entered, entered + stay, 480)?;
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        std::hint::black_box(fee);
    }
    times.sort_by(f64::total_cmp);
    println!("parking_fee_p99_us: {:.2} us", quantile(&times, 0.99));

    let lanes: Vec<String> = snapshot.lanes.keys().cloned().collect();
    let answers: Vec<String> = lanes
        .iter()
        .map(|l| format!("barrier/{l}/command"))
        .collect();
    let passes: Vec<(String, String)> = snapshot
        .passes
        .values()
        .map(|p| {
            (
                p.plate.clone(),
                p.lot_ids
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "lot-north".into()),
            )
        })
        .collect();
    let saved = doc.save();
    // With the probes' accounts and their ACLs, then anonymously (a lab broker), each on an
    // edge of its own.
    for (auth, name) in [
        (BrokerAuth::Accounts, "parking_e2e"),
        (BrokerAuth::Anonymous, "parking_e2e_anonymous"),
    ] {
        let dir = tempfile::tempdir()?;
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed)?;
        std::fs::write(seed.join("parking.automerge"), &saved)?;
        let bench = edge(dir.path(), SAMPLE, &seed, auth, &[], &lanes).await?;
        let prober = Prober::connect(&bench, &answers, false).await?;
        // Cars enter, and each leaves again 50 reads later, so both decisions are measured.
        let rate = paced(seconds, 50.0, async |n| {
            let (direction, i) = if n % 2 == 0 {
                ("in", n / 2)
            } else {
                ("out", (n / 2).saturating_sub(25))
            };
            let (plate, lot) = &passes[(i as usize) % passes.len()];
            let id = format!("p{n}");
            let payload =
                json!({"plate": plate, "confidence": 0.95, "direction": direction, "id": id});
            prober
                .send(format!("lpr/{lot}-{direction}/plate"), id, payload)
                .await
        })
        .await?;
        let (lat, missing) = prober.drain().await;
        println!("{name}_reads_per_s: {rate:.0} reads/s");
        println!("{name}_p50_ms: {:.2} ms", quantile(&lat, 0.50));
        println!("{name}_p99_ms: {:.2} ms", quantile(&lat, 0.99));
        println!("{name}_unanswered: {missing} reads");
        if auth == BrokerAuth::Anonymous {
            println!("fsync_p99_ms: {:.2} ms", fsync_p99_ms(dir.path())?);
        }
        bench.node.shutdown().await;
    }
    println!("edge_peak_rss_mb: {:.1} MB", peak_rss_mb());
    Ok(())
}
