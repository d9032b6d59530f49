//! The real hub on 127.0.0.1 with test edges built from `sync_protocol::EdgeSession`, an
//! in-memory outbox and the QUIC transport: enrollment through the hub's database, uploads
//! stored exactly once across a broken connection, two buildings at once, a building that
//! claims to be another, refused certificates and tokens, and the API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::ReadDoc as _;
use automerge::sync::SyncDoc as _;
use automerge::transaction::Transactable as _;
use cloud_hub::Hub;
use cloud_hub::transport::{
    EdgeKey, EdgeTlsConfig, OperatorCa, TransportError, Validity, connect, enroll,
};
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
    let hub = Hub::start_with(common::settings(dir), session_config())
        .await
        .unwrap();
    // The tests read the API as an operator's monitoring token.
    let token = {
        let handle = cloud_hub::store::open_db(hub.store.target()).unwrap();
        let c = handle.conn();
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
        hub.store.target(),
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
    /// The automerge documents this edge syncs, with their sync states for this connection.
    docs: Vec<(String, automerge::Automerge, automerge::sync::State)>,
    /// Document messages sent as they are once connected (what a compromised edge crafts).
    raw_documents: Vec<sync_protocol::DocumentMessage>,
}

enum Stop {
    /// Run until everything is acknowledged.
    Drained,
    /// Drop the connection, without a close, after this many upload frames.
    CutAfter(usize),
    /// Run until no document message has arrived for this long.
    Settled(Duration),
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
            docs: Vec::new(),
            raw_documents: Vec::new(),
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
        let mut last_heard = Instant::now();
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
                    for (id, doc, state) in &mut self.docs {
                        *state = automerge::sync::State::new();
                        if let Some(m) = doc.generate_sync_message(state) {
                            let _ = self.session.send_document(sync_protocol::DocumentMessage {
                                doc_id: id.clone(),
                                message: m.encode(),
                            });
                        }
                    }
                    for m in self.raw_documents.drain(..) {
                        let _ = self.session.send_document(m);
                    }
                }
                if let EdgeEvent::Document(_) = &e {
                    last_heard = Instant::now();
                }
                if let EdgeEvent::Document(d) = &e
                    && let Some((id, doc, state)) =
                        self.docs.iter_mut().find(|(id, _, _)| *id == d.doc_id)
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
            if let Stop::Settled(quiet) = stop
                && self.session.state() == ConnectionState::Connected
                && last_heard.elapsed() >= quiet
            {
                // Gone without a close, like a cut: the next run is a new connection.
                drop(channel);
                self.session.handle_disconnected(self.now());
                while let Some(e) = self.session.poll_event() {
                    self.events.push(e);
                }
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
                _ = tokio::time::sleep(wait.min(Duration::from_millis(100))) => self.session.handle_timeout(self.now()),
            }
        }
    }
}

/// The one value a query of the hub's database gives.
async fn scalar<T: park_db::FromSql + Send + 'static>(hub: &Hub, sql: &'static str) -> T {
    hub.store
        .read(move |c| c.query_row(sql, [], |r| r.get(0)))
        .await
        .unwrap()
}

async fn count(hub: &Hub, sql: &'static str, park: &str, building: &str) -> i64 {
    let (p, b) = (park.to_string(), building.to_string());
    hub.store
        .read(move |c| c.query_row(sql, pair(&p, &b), |r| r.get(0)))
        .await
        .unwrap()
}

fn pair<'a>(p: &'a str, b: &'a str) -> [&'a str; 2] {
    [p, b]
}

const EVENTS: &str = "SELECT count(*) FROM events e JOIN buildings b ON b.id = e.building_id WHERE b.park = ?1 AND b.building = ?2";
const DISTINCT_EVENTS: &str = "SELECT count(DISTINCT e.id) FROM events e JOIN buildings b ON b.id = e.building_id WHERE b.park = ?1 AND b.building = ?2";
const RAW: &str = "SELECT count(*) FROM raw r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id WHERE b.park = ?1 AND b.building = ?2";
const DISTINCT_RAW: &str = "SELECT count(*) FROM (SELECT DISTINCT r.point_id, r.ts FROM raw r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id WHERE b.park = ?1 AND b.building = ?2) d";
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
        hub.store.target(),
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
        cloud_hub::create_token(hub.store.target(), &hub.ca, "park-1", "b-3", Duration::ZERO)
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
        cloud_hub::revoke(hub.store.target(), None, Some(("park-1", "b-1")), "test").unwrap();
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
async fn enrolling_a_building_again_revokes_its_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let old = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("old")).await;
    drop(connect(&old, hub.quic_addr).await.unwrap());
    // The building's edge is replaced (lost, stolen, rebuilt): enrolled again.
    let new = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("new")).await;
    assert_ne!(old.identity().serial, new.identity().serial);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&old, hub.quic_addr).await {
            Err(e) if e.to_string().contains("revoked") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the old certificate still connects: {:?}",
                    other.map(drop)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(connect(&new, hub.quic_addr).await.unwrap());
    // Audited: the enrollment, with the certificate it revoked.
    hub.store.flush().await;
    let detail: String = scalar(
        &hub,
        "SELECT detail FROM audit_log WHERE action = 'edge.enrolled' ORDER BY seq DESC LIMIT 1",
    )
    .await;
    assert!(detail.contains("\"revoked\":1"), "{detail}");
}

/// The park of the boundary tests: building b-1 has door d-1 and b-2 door d-2; group g-1
/// opens d-1 and g-2 opens d-2; p-1 and the visitor v-1 are in g-1, p-2 in g-2; p-1 holds
/// card c-1 and p-2 card c-2. Returns the directory and the two buildings' documents.
fn boundary_park() -> [(&'static str, Vec<u8>); 3] {
    use park_model::building::{Door, DoorDirection, DoorStatus};
    use park_model::directory::{
        AccessGroup, Credential, CredentialKey, CredentialKind, Person, PersonStatus,
    };
    let key = CredentialKey::new(&[7; 32]);
    let mut d = park_model::ParkDirectory::new("park-1", 480, 0).unwrap();
    for (g, door) in [("g-1", "d-1"), ("g-2", "d-2")] {
        d.upsert(&AccessGroup {
            id: g.into(),
            name: g.into(),
            door_ids: vec![door.into()],
            schedule_id: None,
        })
        .unwrap();
    }
    for (p, g) in [("p-1", "g-1"), ("v-1", "g-1"), ("p-2", "g-2")] {
        d.upsert(&Person {
            id: p.into(),
            name: p.into(),
            enterprise_id: "ent-1".into(),
            status: PersonStatus::Active,
            access_group_ids: vec![g.into()],
        })
        .unwrap();
    }
    for (c, p) in [("c-1", "p-1"), ("c-2", "p-2")] {
        d.upsert(
            &Credential::from_secret(&key, c, p, CredentialKind::Card, &format!("CARD-{c}"))
                .unwrap(),
        )
        .unwrap();
    }
    d.commit("the park", 0);
    let building = |b: &str, door: &str| {
        let mut doc = park_model::BuildingDoc::new("park-1", b, 0).unwrap();
        doc.upsert(&Door {
            id: door.into(),
            name: door.into(),
            building_id: b.into(),
            anti_passback: false,
            direction: DoorDirection::Both,
            area_id: None,
            unlock_duration_ms: 3000,
            status: DoorStatus::Enabled,
        })
        .unwrap();
        doc.commit("doors", 0);
        doc.save()
    };
    [
        ("directory", d.save()),
        ("building/b-1", building("b-1", "d-1")),
        ("building/b-2", building("b-2", "d-2")),
    ]
}

/// A hub holding the boundary park's documents (its master data), and those documents.
async fn hub_with_park(dir: &std::path::Path) -> (Hub, [(&'static str, Vec<u8>); 3]) {
    let hub = start_hub(dir).await;
    let park = boundary_park();
    for (id, bytes) in &park {
        assert!(
            hub.documents
                .import(&hub.store, "park-1", id, bytes)
                .unwrap()
        );
    }
    (hub, park)
}

/// An edit of an edge's copy of the directory, made through the park model as an edge app
/// would, on top of the copy's history.
fn edit_directory(
    doc: &automerge::Automerge,
    edit: impl FnOnce(&mut park_model::ParkDirectory),
) -> automerge::Automerge {
    let mut d = park_model::ParkDirectory::load(&doc.save()).unwrap();
    edit(&mut d);
    d.commit("edge edit", 1);
    automerge::Automerge::load(&d.save()).unwrap()
}

fn credential_in(
    doc: &automerge::Automerge,
    id: &str,
) -> Option<park_model::directory::Credential> {
    park_model::document::entity_in(doc, id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_building_changes_only_what_it_owns_while_another_keeps_syncing() {
    use park_model::directory::{AccessGroup, Credential, CredentialKind, Person, PersonStatus};
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    for (id, bytes) in boundary_park() {
        assert!(
            hub.documents
                .import(&hub.store, "park-1", id, &bytes)
                .unwrap()
        );
    }
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let b = enroll_edge(&hub, "park-1", "b-2", &dir.path().join("b")).await;
    let hub = Arc::new(hub);
    let settled = Stop::Settled(Duration::from_millis(700));

    // Building 1 gets the directory and its own document, never building 2's.
    let mut edge_a = TestEdge::new(a, "b-1", MemOutbox::default());
    for id in ["directory", "building/b-1"] {
        edge_a
            .docs
            .push((id.into(), automerge::Automerge::new(), Default::default()));
    }
    edge_a
        .run(&hub, Stop::Settled(Duration::from_millis(700)))
        .await
        .unwrap();
    let synced = edge_a.docs[0].1.clone();
    assert_eq!(
        synced.get_heads(),
        hub.documents
            .get("park-1", "directory")
            .unwrap()
            .get_heads()
    );
    let documents_sent: Vec<&str> = edge_a
        .events
        .iter()
        .filter_map(|e| match e {
            EdgeEvent::Document(d) => Some(d.doc_id.as_str()),
            _ => None,
        })
        .collect();
    assert!(documents_sent.contains(&"directory"), "{documents_sent:?}");
    assert!(
        !documents_sent.contains(&"building/b-2"),
        "{documents_sent:?}"
    );

    // Building 2 syncs all along.
    let mut edge_b = TestEdge::new(b, "b-2", MemOutbox::default());
    edge_b.docs.push((
        "directory".into(),
        automerge::Automerge::new(),
        Default::default(),
    ));
    let stop_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task_b = {
        let (hub, stop_b) = (hub.clone(), stop_b.clone());
        tokio::spawn(async move {
            // Connected throughout, reconnecting after each quiet spell.
            while !stop_b.load(std::sync::atomic::Ordering::Relaxed) {
                edge_b
                    .run(&hub, Stop::Settled(Duration::from_millis(300)))
                    .await
                    .unwrap();
            }
            edge_b
        })
    };

    // What a building may do at once, and the hub takes: suspend any card (here building
    // 2's), and give its own visitor a card.
    let key = park_model::directory::CredentialKey::new(&[7; 32]);
    let allowed = edit_directory(&synced, |d| {
        d.suspend_credential("c-2").unwrap();
        d.upsert(
            &Credential::from_secret(&key, "c-v", "v-1", CredentialKind::Qr, "VISIT-1").unwrap(),
        )
        .unwrap();
        d.add_person_to_group("p-2", "g-1").unwrap();
    });
    edge_a.docs[0].1 = allowed.clone();
    edge_a
        .run(&hub, Stop::Settled(Duration::from_millis(700)))
        .await
        .unwrap();
    let at_hub = hub.documents.get("park-1", "directory").unwrap();
    assert_eq!(at_hub.get_heads(), allowed.get_heads());
    assert_eq!(
        credential_in(&at_hub, "c-2").unwrap().status,
        park_model::directory::CredentialStatus::Suspended
    );
    assert!(credential_in(&at_hub, "c-v").is_some());
    let refused_before = hub
        .metrics
        .documents_refused_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused_before, 0);

    // What it may not do: each tried alone, each refused, the hub's copy unchanged.
    type Edit = Box<dyn FnOnce(&mut park_model::ParkDirectory)>;
    let attempts: Vec<(&str, Edit)> = vec![
        (
            "adds person",
            Box::new(|d| {
                d.upsert(&Person {
                    id: "p-evil".into(),
                    name: "Mallory".into(),
                    enterprise_id: "ent-1".into(),
                    status: PersonStatus::Active,
                    access_group_ids: vec!["g-2".into()],
                })
                .unwrap()
            }),
        ),
        (
            "not building b-1's own",
            Box::new(|d| d.add_person_to_group("p-1", "g-2").unwrap()),
        ),
        (
            "changes access group",
            Box::new(|d| {
                d.upsert(&AccessGroup {
                    id: "g-1".into(),
                    name: "g-1".into(),
                    door_ids: vec!["d-1".into(), "d-2".into()],
                    schedule_id: None,
                })
                .unwrap()
            }),
        ),
        (
            "beyond building b-1",
            Box::new(move |d| {
                let c = Credential::from_secret(
                    &park_model::directory::CredentialKey::new(&[7; 32]),
                    "c-x",
                    "p-2",
                    CredentialKind::Card,
                    "CLONED-1",
                )
                .unwrap();
                d.upsert(&c).unwrap()
            }),
        ),
        (
            "beyond building b-1",
            Box::new(|d| d.reactivate_credential("c-2").unwrap()),
        ),
        (
            "root value",
            Box::new(|d| d.set_utc_offset_minutes(0).unwrap()),
        ),
    ];
    let mut expected_refusals = 0;
    for (why, edit) in attempts {
        let attempt = edit_directory(&allowed, edit);
        edge_a.docs[0].1 = attempt;
        edge_a
            .run(&hub, Stop::Settled(Duration::from_millis(700)))
            .await
            .unwrap();
        expected_refusals += 1;
        assert_eq!(
            hub.documents
                .get("park-1", "directory")
                .unwrap()
                .get_heads(),
            allowed.get_heads(),
            "{why}: the hub took it"
        );
        assert!(
            hub.metrics
                .documents_refused_total
                .load(std::sync::atomic::Ordering::Relaxed)
                >= expected_refusals,
            "{why}: not counted"
        );
    }
    // Another building's document, and documents that do not exist.
    let mut theirs = (*hub.documents.get("park-1", "building/b-2").unwrap()).clone();
    let mut tx = theirs.transaction();
    let doors = tx.get(automerge::ROOT, "doors").unwrap().unwrap().1;
    tx.delete(&doors, "d-2").unwrap();
    tx.commit();
    let before_b2 = hub
        .documents
        .get("park-1", "building/b-2")
        .unwrap()
        .get_heads();
    edge_a.docs = vec![("building/b-2".into(), theirs, Default::default())];
    for bogus in ["secrets", "building/../b-2", "building/b-3"] {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "x", 1).unwrap();
        tx.commit();
        edge_a.docs.push((bogus.into(), doc, Default::default()));
    }
    edge_a.run(&hub, settled).await.unwrap();
    expected_refusals += 4;
    assert_eq!(
        hub.documents
            .get("park-1", "building/b-2")
            .unwrap()
            .get_heads(),
        before_b2
    );
    assert!(
        hub.metrics
            .documents_refused_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= expected_refusals
    );
    let mut ids = hub.documents.ids("park-1");
    ids.sort();
    assert_eq!(
        ids,
        ["building/b-1", "building/b-2", "directory"],
        "the hub made no document for what an edge named"
    );

    // Audited, under the building's name.
    hub.store.flush().await;
    let audited: i64 = scalar(&hub, "SELECT count(*) FROM audit_log WHERE action = 'document.refused' AND actor = 'edge:park-1/b-1' AND outcome = 'refused'").await;
    assert!(audited >= 2, "{audited}");

    // Building 2 heard what building 1 was allowed to do, and nothing it was refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.store(true, std::sync::atomic::Ordering::Relaxed);
    let edge_b = task_b.await.unwrap();
    assert_eq!(edge_b.docs[0].1.get_heads(), allowed.get_heads());
    assert!(credential_in(&edge_b.docs[0].1, "c-v").is_some());
    // The stored chunks hold only what was taken: the import, then the allowed edit.
    let stored: i64 = scalar(
        &hub,
        "SELECT count(*) FROM doc_chunks WHERE doc_id = 'directory'",
    )
    .await;
    assert_eq!(stored, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_change_from_one_building_reaches_another_building() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, park) = hub_with_park(dir.path()).await;
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let b = enroll_edge(&hub, "park-1", "b-2", &dir.path().join("b")).await;
    let hub = Arc::new(hub);
    // The edge starts from the same documents as the hub (a seed file, or a first sync).
    let base = automerge::Automerge::load(&park[0].1).unwrap();
    let edited = edit_directory(&base, |d| d.suspend_credential("c-2").unwrap());
    let heads = edited.get_heads();
    let mut edge_a = TestEdge::new(a, "b-1", MemOutbox::default());
    edge_a
        .docs
        .push(("directory".into(), edited, Default::default()));
    let mut edge_b = TestEdge::new(b, "b-2", MemOutbox::default());
    edge_b.docs.push((
        "directory".into(),
        automerge::Automerge::new(),
        Default::default(),
    ));
    edge_a
        .run(&hub, Stop::Settled(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(
        hub.documents
            .get("park-1", "directory")
            .unwrap()
            .get_heads(),
        heads
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        edge_b.run(&hub, Stop::Settled(Duration::from_millis(500))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(edge_b.docs[0].1.get_heads(), heads);
    // The hub stored the change, not only held it in memory.
    hub.store.flush().await;
    let stored: i64 = scalar(&hub, "SELECT count(*) FROM doc_chunks").await;
    assert!(stored >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_sent_without_their_dependencies_restart_the_sync_and_it_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, park) = hub_with_park(dir.path()).await;
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let hub = Arc::new(hub);
    let base = automerge::Automerge::load(&park[0].1).unwrap();
    let once = edit_directory(&base, |d| d.suspend_credential("c-1").unwrap());
    let twice = edit_directory(&once, |d| d.suspend_credential("c-2").unwrap());
    // The second change alone, as a Bloom filter's false positive would make an edge send.
    let last = twice
        .get_changes(&once.get_heads())
        .pop()
        .unwrap()
        .raw_bytes()
        .to_vec();
    let orphan = automerge::sync::Message {
        heads: twice.get_heads(),
        need: vec![],
        have: vec![],
        changes: vec![last].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let mut edge = TestEdge::new(a, "b-1", MemOutbox::default());
    edge.raw_documents = vec![sync_protocol::DocumentMessage {
        doc_id: "directory".into(),
        message: orphan.encode(),
    }];
    edge.docs
        .push(("directory".into(), twice.clone(), Default::default()));
    edge.run(&hub, Stop::Settled(Duration::from_millis(700)))
        .await
        .unwrap();
    assert_eq!(
        hub.documents
            .get("park-1", "directory")
            .unwrap()
            .get_heads(),
        twice.get_heads()
    );
    let m = &hub.metrics;
    assert_eq!(
        m.documents_refused_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        m.documents_malformed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// The peak resident memory of this process (each test runs in a process of its own under
/// the test command's runner).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_bombs_are_refused_with_bounded_memory_and_the_connection_goes_on() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = hub_with_park(dir.path()).await;
    let a = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("a")).await;
    let hub = Arc::new(hub);
    // 256 MiB of zeros in about a quarter of a megabyte, as a compressed change chunk.
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut n = bomb.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            chunk.push(b);
            break;
        }
        chunk.push(b | 0x80);
    }
    chunk.extend(&bomb);
    let deflate = automerge::sync::Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: vec![chunk].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    // A Bloom filter asking for four billion probes per hash.
    let mut probes = vec![
        0x42, 0, 0, 1, 0, 9, 1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff,
    ];
    probes.push(0);
    let rss_before = peak_rss_kib();
    let mut edge = TestEdge::new(a, "b-1", MemOutbox::default());
    // A change that passes the bounds but makes automerge 0.12 panic (found by fuzzing):
    // contained, the copy it broke dropped.
    let panics = include_bytes!(
        "../../fuzz/crashers/automerge_sync/crash-1797547b3fed497ad9b5209a8f9b40043810342a"
    )
    .to_vec();
    assert!(
        sync_protocol::docguard::check_sync_message(
            &panics,
            &sync_protocol::docguard::DocLimits::FROM_EDGE
        )
        .is_ok()
    );
    edge.raw_documents = vec![
        sync_protocol::DocumentMessage {
            doc_id: "directory".into(),
            message: deflate.encode(),
        },
        sync_protocol::DocumentMessage {
            doc_id: "directory".into(),
            message: probes,
        },
    ];
    edge.docs.push((
        "building/b-1".into(),
        automerge::Automerge::new(),
        Default::default(),
    ));
    edge.run(&hub, Stop::Settled(Duration::from_millis(700)))
        .await
        .unwrap();
    let grown_mib = (peak_rss_kib() - rss_before) / 1024;
    assert_eq!(
        hub.metrics
            .documents_malformed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        grown_mib < 64,
        "the hub's peak memory grew by {grown_mib} MiB"
    );
    // Then the message that makes automerge panic (measured apart: the panic's report,
    // not the input, is what costs memory when backtraces are on).
    edge.raw_documents = vec![sync_protocol::DocumentMessage {
        doc_id: "directory".into(),
        message: panics,
    }];
    edge.run(&hub, Stop::Settled(Duration::from_millis(700)))
        .await
        .unwrap();
    assert_eq!(
        hub.metrics
            .documents_malformed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The same connection went on: the building's own document synced after the bombs.
    assert_eq!(
        edge.docs[0].1.get_heads(),
        hub.documents
            .get("park-1", "building/b-1")
            .unwrap()
            .get_heads()
    );
    println!("peak RSS growth while refusing the bombs: {grown_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_a_buildings_alarms_from_their_uploaded_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = enroll_edge(&hub, "park-1", "b-1", &dir.path().join("edge")).await;
    let mut o = outbox(20);
    // Transitions as the edge's rules write them: alarm 7 (P0) raised then cleared, not
    // acknowledged; alarm 9 (P2) raised then acknowledged; alarm 11 (P0) raised.
    let transitions = [
        (3, 7, "raised", "active_unacked", "P0"),
        (5, 9, "raised", "active_unacked", "P2"),
        (8, 9, "acknowledged", "active_acked", "P2"),
        (12, 7, "cleared", "cleared_unacked", "P0"),
        (16, 11, "raised", "active_unacked", "P0"),
    ];
    for (seq, alarm, kind, to, severity) in transitions {
        o.events[seq - 1].1.body = serde_json::to_vec(&serde_json::json!({
            "kind": format!("alarm.{kind}"),
            "subject": "meter/p0",
            "body": {"alarm": alarm, "kind": kind, "to": to, "severity": severity, "ts": seq},
        }))
        .unwrap();
    }
    let mut edge = TestEdge::new(tls, "b-1", o);
    // Cut mid-upload: what is sent again is stored once, and counted once.
    edge.run(&hub, Stop::CutAfter(14)).await.unwrap();
    edge.run(&hub, Stop::Drained).await.unwrap();
    hub.store.flush().await;

    let (_, list) = get_json(&hub, "/api/v1/parks/park-1/buildings").await;
    let alarms = &list["buildings"][0]["alarms"];
    assert_eq!(alarms["active"], 2, "{list}");
    assert_eq!(alarms["unacknowledged"], 2, "{list}");
    assert_eq!(alarms["critical"], 1, "{list}");

    // The events newest first, a page at a time backwards.
    let (_, newest) = get_json(
        &hub,
        "/api/v1/parks/park-1/buildings/b-1/events?before=9999999&limit=3",
    )
    .await;
    let seqs: Vec<i64> = newest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [20, 19, 18], "{newest}");
    let (_, older) = get_json(
        &hub,
        "/api/v1/parks/park-1/buildings/b-1/events?before=18&limit=3",
    )
    .await;
    assert_eq!(older["events"][0]["seq"], 17, "{older}");
    let (status, _) = get_json(
        &hub,
        "/api/v1/parks/park-1/buildings/b-1/events?before=5&after=1",
    )
    .await;
    assert_eq!(status, 422);
    hub.shutdown().await;
}
