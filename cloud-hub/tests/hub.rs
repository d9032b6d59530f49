//! The real hub on 127.0.0.1 with test edges built from `sync_protocol::EdgeSession`, an
//! in-memory outbox and the QUIC transport: enrollment through the hub's database, uploads
//! stored exactly once across a broken connection, two buildings at once, a building that
//! claims to be another, refused certificates and tokens, and the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::ReadDoc as _;
use automerge::sync::SyncDoc as _;
use automerge::transaction::Transactable as _;
use cloud_hub::transport::{
    EdgeKey, EdgeTlsConfig, OperatorCa, TransportError, Validity, connect, enroll,
};
use cloud_hub::{Hub, HubSettings};
use sync_protocol::{
    ConnectionState, EdgeEvent, EdgeIdentity, EdgeOutbox, EdgeSession, EventRecord, Health,
    Quality, RawBatch, RawSample, RawSeries, ReadLimit, RollupBatch, RollupRow, SessionConfig,
    Time, UploadStream, Value,
};

fn session_config() -> SessionConfig {
    SessionConfig {
        heartbeat_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        initial_rto: Duration::from_millis(300),
        max_rto: Duration::from_secs(1),
        window_frames: 8,
        ..SessionConfig::default()
    }
}

async fn start_hub(dir: &std::path::Path) -> Hub {
    let hub = Hub::start_with(HubSettings::for_dir(dir), session_config())
        .await
        .unwrap();
    // The tests read the API as an operator's monitoring token.
    let token = {
        let c = cloud_hub::store::open_db(hub.store.path()).unwrap();
        let actor = accounts::auth::manage::host_actor("test");
        let grants = ["operator_admin@operator".parse().unwrap()];
        accounts::auth::manage::create(
            &c,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            accounts::auth::manage::NewAccount {
                username: "monitor",
                display_name: "Monitoring",
                verifier: accounts::auth::manage::verifier_for(
                    "monitor",
                    "tall-cedar-river-42",
                    park_model::identity::password::Cost::TEST,
                )
                .unwrap(),
                grants: &grants,
                department: None,
            },
        )
        .unwrap();
        accounts::auth::manage::create_token(
            &c,
            &actor,
            accounts::audit::Mirror::None,
            "monitor",
            "tests",
            park_model::identity::PermissionSet::parse(&[
                "telemetry.read",
                "events.read",
                "edges.manage",
                "audit.read",
            ])
            .unwrap(),
            1,
        )
        .unwrap()
    };
    hub.auth.reload().await.unwrap();
    TOKENS.lock().unwrap().insert(hub.api_addr, token);
    hub
}

/// Each test hub's API token, by its API address.
static TOKENS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, String>>,
> = std::sync::LazyLock::new(Default::default);

async fn enroll_edge(
    hub: &Hub,
    park: &str,
    building: &str,
    dir: &std::path::Path,
) -> EdgeTlsConfig {
    let created = cloud_hub::create_token(
        hub.store.path(),
        &hub.ca,
        park,
        building,
        Duration::from_secs(3600),
    )
    .unwrap();
    enroll(hub.quic_addr, &created.token, dir).await.unwrap()
}

/// An outbox in memory: what the edge node's SQLite outbox does, minus the disk.
#[derive(Default)]
struct MemOutbox {
    events: Vec<(u64, EventRecord)>,
    rollups: Vec<(u64, RollupBatch)>,
    raw: Vec<(u64, RawBatch)>,
    acked: [u64; 3],
}

impl MemOutbox {
    fn after<T: Clone>(records: &[(u64, T)], after: u64, limit: ReadLimit) -> Vec<(u64, T)> {
        records
            .iter()
            .filter(|(s, _)| *s > after)
            .take(limit.max_records)
            .cloned()
            .collect()
    }

    fn last(&self, stream: UploadStream) -> u64 {
        match stream {
            UploadStream::Events => self.events.last().map_or(0, |r| r.0),
            UploadStream::Rollups => self.rollups.last().map_or(0, |r| r.0),
            UploadStream::Raw => self.raw.last().map_or(0, |r| r.0),
        }
    }

    fn all_acknowledged(&self) -> bool {
        UploadStream::ALL
            .iter()
            .all(|s| self.acked[*s as usize] >= self.last(*s))
    }
}

impl EdgeOutbox for MemOutbox {
    fn events_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, EventRecord)> {
        Self::after(&self.events, after, limit)
    }
    fn rollups_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RollupBatch)> {
        Self::after(&self.rollups, after, limit)
    }
    fn raw_after(&mut self, after: u64, limit: ReadLimit) -> Vec<(u64, RawBatch)> {
        Self::after(&self.raw, after, limit)
    }
    fn last_written(&self, stream: UploadStream) -> u64 {
        self.last(stream)
    }
    fn acknowledged_cursor(&self, stream: UploadStream) -> u64 {
        self.acked[stream as usize]
    }
    fn acknowledged(&mut self, stream: UploadStream, through: u64) {
        let a = &mut self.acked[stream as usize];
        *a = (*a).max(through);
    }
}

/// A building's data: `n` events, `n` rollup batches of 3 rows, `n` raw batches of
/// 2 points by 50 samples.
fn outbox(n: u64) -> MemOutbox {
    let mut o = MemOutbox::default();
    let base = 1_795_000_000_000_000i64;
    for seq in 1..=n {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&((base / 1000) as u64 + seq).to_be_bytes()[2..]);
        id[6] = 0x70;
        id[15] = seq as u8;
        o.events.push((
            seq,
            EventRecord {
                id,
                body: format!("{{\"kind\":\"door\",\"n\":{seq}}}").into_bytes(),
            },
        ));
        o.rollups.push((
            seq,
            RollupBatch {
                rows: (0..3)
                    .map(|p| RollupRow {
                        point: format!("meter/p{p}"),
                        period_s: 60,
                        bucket: base + seq as i64 * 60_000_000,
                        count: 60,
                        bad: 0,
                        min: 1.0,
                        max: 2.0,
                        sum: 90.0,
                        last: seq as f64,
                        last_ts: base + seq as i64 * 60_000_000 + 59_000_000,
                        delta: 0.0,
                    })
                    .collect(),
            },
        ));
        o.raw.push((
            seq,
            RawBatch {
                series: (0..2)
                    .map(|p| RawSeries {
                        point: format!("ahu/t{p}"),
                        samples: (0..50)
                            .map(|i| RawSample {
                                ts: base + (seq as i64 * 50 + i) * 1_000_000,
                                value: Some(Value::Float(20.0 + i as f64 / 10.0)),
                                quality: Quality::Good,
                            })
                            .collect(),
                    })
                    .collect(),
            },
        ));
    }
    o
}

/// A test edge: its session, outbox and TLS identity.
struct TestEdge {
    session: EdgeSession,
    outbox: MemOutbox,
    tls: EdgeTlsConfig,
    epoch: Instant,
    events: Vec<EdgeEvent>,
    /// One automerge document this edge syncs, with its sync state for this connection.
    doc: Option<(String, automerge::Automerge, automerge::sync::State)>,
}

enum Stop {
    /// Run until everything is acknowledged.
    Drained,
    /// Drop the connection, without a close, after this many upload frames.
    CutAfter(usize),
    /// Run until the document has this key at its root.
    DocHas(&'static str),
}

impl TestEdge {
    fn new(tls: EdgeTlsConfig, building_claimed: &str, outbox: MemOutbox) -> Self {
        let id = tls.identity().clone();
        let identity = EdgeIdentity {
            edge_id: format!("edge-{building_claimed}"),
            park: id.park,
            building: building_claimed.to_string(),
        };
        TestEdge {
            session: EdgeSession::new(session_config(), identity),
            outbox,
            tls,
            epoch: Instant::now(),
            events: Vec::new(),
            doc: None,
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// One connection, driven until `stop` or until it ends. Returns why it ended.
    async fn run(&mut self, hub: &Hub, stop: Stop) -> Result<(), String> {
        let mut channel = connect(&self.tls, hub.quic_addr)
            .await
            .map_err(|e| e.to_string())?;
        self.session.handle_connected(self.now(), &self.outbox);
        let mut uploads = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "the edge did not finish in time");
            while let Some(frame) = self.session.poll_transmit(self.now(), &mut self.outbox) {
                if frame[1] != 0 {
                    uploads += 1;
                }
                channel.send(&frame).await.map_err(|e| e.to_string())?;
                if let Stop::CutAfter(n) = stop
                    && uploads >= n
                {
                    // A hard cut: the transport goes away with frames in flight.
                    drop(channel);
                    self.session.handle_disconnected(self.now());
                    while let Some(e) = self.session.poll_event() {
                        self.events.push(e);
                    }
                    return Ok(());
                }
            }
            while let Some(e) = self.session.poll_event() {
                if let EdgeEvent::ConnectionLost { reason } = &e {
                    return Err(reason.to_string());
                }
                if let EdgeEvent::Connected { .. } = e {
                    let _ = self.session.send_health(Health {
                        body: br#"{"backlog":{"events":5,"rollups":6,"raw":7}}"#.to_vec(),
                    });
                    if let Some((id, doc, state)) = &mut self.doc {
                        *state = automerge::sync::State::new();
                        if let Some(m) = doc.generate_sync_message(state) {
                            let _ = self.session.send_document(sync_protocol::DocumentMessage {
                                doc_id: id.clone(),
                                message: m.encode(),
                            });
                        }
                    }
                }
                if let EdgeEvent::Document(d) = &e
                    && let Some((id, doc, state)) = &mut self.doc
                    && *id == d.doc_id
                {
                    let m = automerge::sync::Message::decode(&d.message).unwrap();
                    doc.receive_sync_message(state, m).unwrap();
                    if let Some(m) = doc.generate_sync_message(state) {
                        let _ = self.session.send_document(sync_protocol::DocumentMessage {
                            doc_id: id.clone(),
                            message: m.encode(),
                        });
                    }
                }
                self.events.push(e);
            }
            if matches!(stop, Stop::Drained)
                && self.session.state() == ConnectionState::Connected
                && self.outbox.all_acknowledged()
            {
                return Ok(());
            }
            if let (Stop::DocHas(key), Some((_, doc, _))) = (&stop, &self.doc)
                && doc.get(automerge::ROOT, *key).unwrap().is_some()
            {
                return Ok(());
            }
            let wait = self
                .session
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.now()))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                frame = channel.recv() => match frame {
                    Ok(Some(f)) => self.session.handle_frame(self.now(), &f, &mut self.outbox),
                    Ok(None) => return Err("the hub finished the stream".into()),
                    Err(e) => {
                        self.session.handle_disconnected(self.now());
                        return Err(e.to_string());
                    }
                },
                _ = tokio::time::sleep(wait) => self.session.handle_timeout(self.now()),
            }
        }
    }
}

async fn count(hub: &Hub, sql: &'static str, park: &str, building: &str) -> i64 {
    let (p, b) = (park.to_string(), building.to_string());
    hub.store
        .read(move |c| c.query_row(sql, rusqlite_params(&p, &b), |r| r.get(0)))
        .await
        .unwrap()
}

fn rusqlite_params<'a>(p: &'a str, b: &'a str) -> [&'a str; 2] {
    [p, b]
}

const EVENTS: &str = "SELECT count(*) FROM events e JOIN buildings b ON b.id = e.building_id WHERE b.park = ?1 AND b.building = ?2";
const DISTINCT_EVENTS: &str = "SELECT count(DISTINCT e.id) FROM events e JOIN buildings b ON b.id = e.building_id WHERE b.park = ?1 AND b.building = ?2";
const RAW: &str = "SELECT count(*) FROM raw r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id WHERE b.park = ?1 AND b.building = ?2";
const DISTINCT_RAW: &str = "SELECT count(*) FROM (SELECT DISTINCT r.point_id, r.ts FROM raw r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id WHERE b.park = ?1 AND b.building = ?2)";
const ROLLUPS: &str = "SELECT count(*) FROM rollups r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id WHERE b.park = ?1 AND b.building = ?2";

async fn get_json(hub: &Hub, path: &str) -> (u16, serde_json::Value) {
    let addr = hub.api_addr;
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let token = TOKENS.lock().unwrap().get(&addr).cloned().unwrap_or_default();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        // The API answers with a fixed length, so the body is the JSON itself.
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into())),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_cut_connection_and_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("edge")).await;
    let mut edge = TestEdge::new(tls, "b-1", outbox(40));

    edge.run(&hub, Stop::CutAfter(30)).await.unwrap();
    assert!(!edge.outbox.all_acknowledged(), "the cut came mid-upload");
    // Cut again on the next connection, then let it finish.
    edge.run(&hub, Stop::CutAfter(20)).await.unwrap();
    edge.run(&hub, Stop::Drained).await.unwrap();
    hub.store.flush().await;

    assert_eq!(count(&hub, EVENTS, "park-1", "b-1").await, 40);
    assert_eq!(count(&hub, DISTINCT_EVENTS, "park-1", "b-1").await, 40);
    assert_eq!(count(&hub, RAW, "park-1", "b-1").await, 40 * 2 * 50);
    assert_eq!(
        count(&hub, DISTINCT_RAW, "park-1", "b-1").await,
        40 * 2 * 50
    );
    assert_eq!(count(&hub, ROLLUPS, "park-1", "b-1").await, 40 * 3);

    // The API tells the same story: connected state, backlog from health, freshness.
    let (status, building) = get_json(&hub, "/api/v1/parks/park-1/buildings/b-1").await;
    assert_eq!(status, 200, "{building}");
    assert_eq!(building["durableCursors"]["raw"], 40);
    let (_, edges) = get_json(&hub, "/api/v1/edges").await;
    let e = &edges["edges"][0];
    assert_eq!(e["building"], "b-1");
    assert!(e["freshness"]["newestSample"].as_i64().unwrap() > 0, "{e}");
    assert!(e["freshness"]["newestEvent"].as_i64().unwrap() > 0, "{e}");
    let (_, points) = get_json(&hub, "/api/v1/parks/park-1/buildings/b-1/points").await;
    assert_eq!(points["points"].as_array().unwrap().len(), 5, "{points}");
    let (_, history) = get_json(
        &hub,
        "/api/v1/parks/park-1/buildings/b-1/points/ahu/t0/history?from=0&to=9000000000000000&resolution=raw&limit=100000",
    )
    .await;
    assert_eq!(history["rows"].as_array().unwrap().len(), 40 * 50);
    let (_, events) = get_json(&hub, "/api/v1/parks/park-1/buildings/b-1/events?limit=5").await;
    assert_eq!(events["events"][0]["body"]["kind"], "door", "{events}");
    let (status, err) = get_json(&hub, "/api/v1/parks/nowhere/buildings/x/points").await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "not_found");
    assert!(err["traceId"].is_string());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buildings_sync_at_once_and_each_is_stored_under_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let b = enroll_edge(&hub, "park-1", "b-2", &dir.path().join("b")).await;
    let mut edge_a = TestEdge::new(a, "b-1", outbox(10));
    let mut edge_b = TestEdge::new(b, "b-2", outbox(15));
    let (ra, rb) = tokio::join!(
        edge_a.run(&hub, Stop::Drained),
        edge_b.run(&hub, Stop::Drained)
    );
    ra.unwrap();
    rb.unwrap();
    hub.store.flush().await;
    assert_eq!(count(&hub, EVENTS, "park-1", "b-1").await, 10);
    assert_eq!(count(&hub, EVENTS, "park-1", "b-2").await, 15);
    assert_eq!(count(&hub, RAW, "park-1", "b-2").await, 15 * 100);

    let (_, parks) = get_json(&hub, "/api/v1/parks").await;
    assert_eq!(parks["parks"][0]["buildings"], 2, "{parks}");
    let (_, metrics) = get_json(&hub, "/metrics").await;
    let text = metrics.as_str().unwrap().to_string();
    assert!(
        text.contains("smartpark_hub_events_stored_total 25"),
        "{text}"
    );
    assert!(text.contains("smartpark_hub_enrollments_total 2"), "{text}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_claims_another_building_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = enroll_edge(&hub, "park-1", "b-2", &dir.path().join("edge")).await;
    // Its certificate says b-2; its hello says b-1.
    let mut edge = TestEdge::new(tls, "b-1", outbox(3));
    let err = edge.run(&hub, Stop::Drained).await.unwrap_err();
    assert!(err.contains("certificate names park-1/b-2"), "{err}");
    hub.store.flush().await;
    assert_eq!(count(&hub, EVENTS, "park-1", "b-1").await, 0);
    assert_eq!(count(&hub, EVENTS, "park-1", "b-2").await, 0);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_a_reused_or_expired_token_and_a_foreign_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let created = cloud_hub::create_token(
        hub.store.path(),
        &hub.ca,
        "park-1",
        "b-1",
        Duration::from_secs(60),
    )
    .unwrap();
    enroll(hub.quic_addr, &created.token, &dir.path().join("one"))
        .await
        .unwrap();
    let err = enroll(hub.quic_addr, &created.token, &dir.path().join("two"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    let expired =
        cloud_hub::create_token(hub.store.path(), &hub.ca, "park-1", "b-3", Duration::ZERO)
            .unwrap();
    let err = enroll(hub.quic_addr, &expired.token, &dir.path().join("three"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    let other = OperatorCa::create("other").unwrap();
    let key = EdgeKey::generate().unwrap();
    let issued = other
        .issue_edge_cert(
            &key.certificate_request().unwrap(),
            "park-1",
            "b-1",
            Validity::days_from_now(1),
        )
        .unwrap();
    let foreign = EdgeTlsConfig::from_pem(&key.pem(), &issued.pem(), hub.ca.cert_pem()).unwrap();
    let err = connect(&foreign, hub.quic_addr).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_edge_closes_its_connection_and_refuses_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("edge")).await;
    let hub = Arc::new(hub);
    let mut edge = TestEdge::new(tls.clone(), "b-1", outbox(1));
    edge.run(&hub, Stop::Drained).await.unwrap();
    // Connected and idle; revoke it as `smartpark hub revoke` would, from the database.
    let mut live = TestEdge::new(tls.clone(), "b-1", MemOutbox::default());
    let running = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let out = live.run(&hub, Stop::CutAfter(usize::MAX)).await;
            (out, live)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked =
        cloud_hub::revoke(hub.store.path(), None, Some(("park-1", "b-1")), "test").unwrap();
    assert_eq!(revoked, vec![tls.identity().serial.clone()]);
    let (out, _) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    let err = out.unwrap_err();
    assert!(err.contains("revoked"), "{err}");
    let err = connect(&tls, hub.quic_addr).await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let (_, edges) = get_json(&hub, "/api/v1/edges").await;
    assert_eq!(edges["edges"][0]["certificate"]["revoked"], true, "{edges}");
    assert_eq!(
        edges["edges"][0]["connection"]["state"], "disconnected",
        "{edges}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_change_from_one_building_reaches_the_hub_and_another_building() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let b = enroll_edge(&hub, "park-1", "b-2", &dir.path().join("b")).await;
    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, "name", "Park One").unwrap();
    tx.commit();
    let heads = doc.get_heads();
    let mut edge_a = TestEdge::new(a, "b-1", MemOutbox::default());
    edge_a.doc = Some(("directory".into(), doc, automerge::sync::State::new()));
    let mut edge_b = TestEdge::new(b, "b-2", MemOutbox::default());
    edge_b.doc = Some((
        "directory".into(),
        automerge::Automerge::new(),
        automerge::sync::State::new(),
    ));

    // Edge a connects, then edge b: b learns the change from the hub's replica.
    let hub = Arc::new(hub);
    let task_a = {
        let hub = hub.clone();
        tokio::spawn(async move { edge_a.run(&hub, Stop::CutAfter(usize::MAX)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub
        .documents
        .get("park-1", "directory")
        .is_none_or(|d| d.get_heads() != heads)
    {
        assert!(Instant::now() < deadline, "the hub never got the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        edge_b.run(&hub, Stop::DocHas("name")),
    )
    .await
    .unwrap()
    .unwrap();
    let (_, doc_b, _) = edge_b.doc.as_ref().unwrap();
    assert_eq!(doc_b.get_heads(), heads);
    task_a.abort();
    // The hub stored the change, not only held it in memory.
    hub.store.flush().await;
    let stored: i64 = hub
        .store
        .read(|c| c.query_row("SELECT count(*) FROM doc_chunks", [], |r| r.get(0)))
        .await
        .unwrap();
    assert!(stored >= 1);
}
