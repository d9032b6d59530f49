//! The edge and the hub as real processes: enrollment with a one-time token, events
//! uploaded over QUIC with mutual TLS, the hub killed with `kill -9` while the building keeps
//! deciding, and everything arriving once after it returns.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Edge, Proc, edge_binary, eventually, http_as, mosquitto_pub, smartpark, token_for,
};

pub(crate) struct Hub {
    pub(crate) proc: Proc,
    pub(crate) quic: String,
    pub(crate) api: String,
    pub(crate) config: std::path::PathBuf,
    /// A token of the park's manager, for reading the hub's API.
    pub(crate) token: String,
}

const MONITOR: &str = "hil-monitor";
const MONITOR_PASSWORD: &str = "quiet-harbor-lamp-77";

impl Hub {
    pub(crate) fn start(config: &Path) -> Hub {
        let cfg = config.to_str().unwrap();
        let (ok, out) = smartpark(&["hub", "user", "list", "--config", cfg], "");
        if ok && !out.contains(MONITOR) {
            let (ok, out) = smartpark(
                &[
                    "hub",
                    "user",
                    "add",
                    "--config",
                    cfg,
                    "--username",
                    MONITOR,
                    "--grant",
                    "park_manager@park:hil",
                    "--password-stdin",
                ],
                &format!("{MONITOR_PASSWORD}\n"),
            );
            assert!(ok, "hub user add: {out}");
        }
        let mut proc = Proc::spawn(
            "smartpark hub",
            Command::new(edge_binary())
                .args(["hub", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn"),
        );
        let line = proc.wait_line("ready ", Duration::from_secs(30));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        let api = field("api");
        Hub {
            token: token_for(&api, MONITOR, MONITOR_PASSWORD),
            quic: field("quic"),
            api,
            proc,
            config: config.to_path_buf(),
        }
    }

    fn events(&self) -> Vec<Value> {
        let (status, body) = http_as(
            &self.token,
            "GET",
            &format!(
                "{}/api/v1/parks/hil/buildings/b1/events?limit=10000",
                self.api
            ),
            None,
        );
        if status != 200 {
            return Vec::new();
        }
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

pub(crate) fn hub_config(dir: &Path, quic_port: u16) -> std::path::PathBuf {
    let file = dir.join("hub.toml");
    std::fs::write(
        &file,
        format!(
            "[hub]\noperator = \"hil-operator\"\ndata_dir = \"hub-data\"\n[quic]\nlisten = \"127.0.0.1:{quic_port}\"\nserver_names = []\n\
             [http]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[ca]\ncert = \"ca/ca-cert.pem\"\nkey = \"ca/ca-key.pem\"\n\
             [enrollment]\ntoken_ttl_hours = 1\nedge_cert_days = 30\nrenew_before_days = 7\n"
        ),
    )
    .unwrap();
    file
}

/// The operator's root made on "another machine" (`dir/offline`), and the hub's issuing
/// CA certified by it through the commands an operator runs: `hub ca-request` on the hub,
/// `ca sign` where the root's key is, the signed file copied to the hub's `ca.cert`.
/// Returns the root's certificate.
fn offline_root(config: &Path, dir: &Path) -> String {
    let offline = dir.join("offline");
    let (root_cert, root_key) = (offline.join("root-cert.pem"), offline.join("root-key.pem"));
    let run = |args: &[&str]| {
        let (ok, out) = smartpark(args, "");
        assert!(ok, "{args:?}: {out}");
    };
    let path = |p: &Path| p.to_str().unwrap().to_string();
    std::fs::create_dir_all(&offline).unwrap();
    run(&[
        "ca",
        "init",
        "--cert",
        &path(&root_cert),
        "--key",
        &path(&root_key),
        "--operator",
        "hil-operator",
    ]);
    let request = dir.join("hub-ca.csr");
    run(&[
        "hub",
        "ca-request",
        "--config",
        &path(config),
        "--out",
        &path(&request),
    ]);
    let signed = offline.join("hub-ca.pem");
    run(&[
        "ca",
        "sign",
        "--root-cert",
        &path(&root_cert),
        "--root-key",
        &path(&root_key),
        "--request",
        &path(&request),
        "--out",
        &path(&signed),
    ]);
    std::fs::copy(&signed, dir.join("ca").join("ca-cert.pem")).unwrap();
    let root_key = std::fs::read_to_string(&root_key).unwrap();
    let hub_key = std::fs::read_to_string(dir.join("ca").join("ca-key.pem")).unwrap();
    assert_ne!(hub_key, root_key, "the hub holds its issuing CA's key only");
    std::fs::read_to_string(root_cert).unwrap()
}

/// `hub enroll` for building b1, then `edge-enroll` into `dir/identity`; returns the token
/// (now used) and the identity folder.
pub(crate) fn enroll(config: &Path, hub: &Hub, dir: &Path) -> (String, std::path::PathBuf) {
    let out = Command::new(edge_binary())
        .args(["hub", "enroll", "--config"])
        .arg(config)
        .args(["--park", "hil", "--building", "b1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let identity = dir.join("identity");
    // The token travels in a file, never on a command line.
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (ok, out) = edge_enroll(hub, &token_file, &identity, "");
    assert!(ok, "{out}");
    (token, identity)
}

/// `smartpark edge-enroll` with the token from `token_file` (`-`: from `stdin`).
fn edge_enroll(hub: &Hub, token_file: &Path, data_dir: &Path, stdin: &str) -> (bool, String) {
    smartpark(
        &[
            "edge-enroll",
            "--hub",
            &hub.quic,
            "--token-file",
            token_file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        stdin,
    )
}

fn read(edge: &Edge, card: &str) {
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            "door/d1/read",
            "-m",
            &json!({"type": "card", "value": card}).to_string(),
        ],
    );
}

fn edge_event_ids(edge: &Edge) -> BTreeSet<String> {
    let (_, body) = edge.get("/api/v1/events?limit=10000");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_enrolled_edge_uploads_its_events_once_even_when_the_hub_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // The hub's QUIC port must stay the same across its restart: take a free one now.
    let quic_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = hub_config(dir.path(), quic_port);
    // This hub issues from a CA that the operator's offline root certified.
    let root = offline_root(&config, dir.path());
    let mut hub = Hub::start(&config);

    let (token, identity) = enroll(&config, &hub, dir.path());
    assert_eq!(
        std::fs::read_to_string(identity.join("ca-cert.pem")).unwrap(),
        root,
        "the edge trusts the operator's root"
    );
    // The same token a second time, on standard input, is refused.
    let stdin = std::path::Path::new("-");
    let (ok, out) = edge_enroll(
        &hub,
        stdin,
        &dir.path().join("other"),
        &format!("{token}\n"),
    );
    assert!(!ok, "a used token must be refused");
    assert!(out.contains("already used"), "{out}");
    // Tokens are listed by id, never shown again; an unused one can be cancelled.
    let cfg = config.to_str().unwrap();
    let hub_cmd = |args: &[&str]| {
        let mut all = vec!["hub"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", cfg]);
        let (ok, out) = smartpark(&all, "");
        assert!(ok, "{out}");
        out
    };
    let spare = hub_cmd(&["enroll", "--park", "hil", "--building", "b9"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let listed = hub_cmd(&["tokens"]);
    assert!(
        !listed.contains(&token) && !listed.contains(&spare),
        "{listed}"
    );
    assert!(listed.contains("used by"), "{listed}");
    let spare_line = listed.lines().find(|l| l.contains("hil/b9")).unwrap();
    let spare_id = spare_line.split_whitespace().next().unwrap();
    assert!(listed.contains("waiting"), "{listed}");
    assert!(hub_cmd(&["cancel-token", spare_id]).contains("cancelled"));
    let spare_file = dir.path().join("spare-token");
    std::fs::write(&spare_file, &spare).unwrap();
    let (ok, _) = edge_enroll(&hub, &spare_file, &dir.path().join("spare"), "");
    assert!(!ok, "a cancelled token must be refused");

    crate::park::seed(&dir.path().join("seed"));
    let edge = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\n",
            dir.path().join("seed").display(),
            hub.quic,
            identity.display()
        ),
    );
    eventually(
        "the edge connected to the hub",
        Duration::from_secs(30),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["connected"] == true).then_some(())
        },
    );
    for _ in 0..5 {
        read(&edge, "CARD-1");
    }
    eventually("five decisions at the hub", Duration::from_secs(30), || {
        (hub.events().len() >= 5).then_some(())
    });

    // The hub dies; the building goes on deciding, and says truthfully that it is cut off.
    hub.proc.kill9();
    for _ in 0..5 {
        read(&edge, "CARD-2");
    }
    eventually(
        "the edge to notice the hub is gone",
        Duration::from_secs(60),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["connected"] == false).then_some(())
        },
    );
    let (_, s) = edge.get("/api/v1/sync");
    assert!(s["backlog"]["events"].as_u64().unwrap() >= 5, "{s}");
    eventually(
        "ten decisions stored at the edge",
        Duration::from_secs(20),
        || (edge_event_ids(&edge).len() >= 10).then_some(()),
    );

    // It comes back with certificates that last a year, and renews those ending within
    // 60 days: the edge's 30-day certificate is renewed over its sync connection.
    let text = std::fs::read_to_string(&hub.config).unwrap();
    std::fs::write(
        &hub.config,
        text.replace(
            "edge_cert_days = 30\nrenew_before_days = 7",
            "edge_cert_days = 365\nrenew_before_days = 60",
        ),
    )
    .unwrap();
    let old_cert = std::fs::read_to_string(identity.join("edge-cert.pem")).unwrap();
    let hub = Hub::start(&hub.config);
    let want = edge_event_ids(&edge);
    let got = eventually(
        "every edge event at the hub",
        Duration::from_secs(90),
        || {
            let events = hub.events();
            (events.len() >= want.len()).then_some(events)
        },
    );
    let ids: Vec<String> = got
        .iter()
        .map(|e| e["body"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "no event is stored twice");
    assert_eq!(distinct, want, "the hub holds exactly the edge's events");
    eventually("the backlog drained", Duration::from_secs(30), || {
        let (_, s) = edge.get("/api/v1/sync");
        (s["connected"] == true && s["backlog"]["events"] == 0).then_some(())
    });
    // Renewed across the restart: a new certificate in place (its key made on the edge),
    // the old one beside it, and at the hub the renewal and the old one's revocation, once
    // the edge connected with the new one.
    // The hub's own chain is the operator's to read: read here from its database file.
    let db = dir.path().join("hub-data").join("hub.sqlite");
    let actions = eventually("the renewal audited", Duration::from_secs(30), || {
        let out = Command::new(crate::support::python())
            .args([
                "-c",
                "import sqlite3, sys\nc = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\nprint('\\n'.join(r[0] for r in c.execute('SELECT action FROM audit_log')))",
            ])
            .arg(&db)
            .output()
            .unwrap();
        let actions: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        (actions.iter().any(|a| a == "certificate.renewed")
            && actions.iter().any(|a| a == "certificate.revoked"))
        .then_some(actions)
    });
    assert!(actions.iter().any(|a| a == "edge.enrolled"), "{actions:?}");
    let new_cert = std::fs::read_to_string(identity.join("edge-cert.pem")).unwrap();
    assert_ne!(new_cert, old_cert, "the certificate was renewed");
    assert_eq!(
        new_cert.matches("BEGIN CERTIFICATE").count(),
        2,
        "the renewed certificate travels with the issuing CA's"
    );
    assert_eq!(
        std::fs::read_to_string(identity.join("edge-cert.pem.old")).unwrap(),
        old_cert
    );
    eventually(
        "the edge connected with its new certificate",
        Duration::from_secs(30),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["connected"] == true).then_some(())
        },
    );
}

/// A UDP relay between the edge and the hub that the test can cut and heal.
struct Relay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(hub: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering::Relaxed;
        let edge_side = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let hub_side = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        hub_side.connect(hub).unwrap();
        for s in [&edge_side, &hub_side] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let addr = edge_side.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let edge_peer = std::sync::Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
        let (e2, h2) = (
            edge_side.try_clone().unwrap(),
            hub_side.try_clone().unwrap(),
        );
        let (cut2, stop2, peer2) = (cut.clone(), stop.clone(), edge_peer.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop2.load(Relaxed) {
                if let Ok((n, from)) = e2.recv_from(&mut buf) {
                    *peer2.lock().unwrap() = Some(from);
                    if !cut2.load(Relaxed) {
                        let _ = h2.send(&buf[..n]);
                    }
                }
            }
        });
        let (cut3, stop3) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop3.load(Relaxed) {
                if let Ok(n) = hub_side.recv(&mut buf) {
                    let peer = *edge_peer.lock().unwrap();
                    if let (false, Some(peer)) = (cut3.load(Relaxed), peer) {
                        let _ = edge_side.send_to(&buf[..n], peer);
                    }
                }
            }
        });
        Relay { addr, cut, stop }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_cut_link_and_a_killed_edge_still_leave_the_hub_with_every_event_and_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), 0);
    let hub = Hub::start(&config);
    let (_, identity) = enroll(&config, &hub, dir.path());
    let relay = Relay::start(hub.quic.parse().unwrap());
    // A Modbus device keeps producing telemetry through everything; small raw records make
    // the backfill visible within the test.
    let (_device, device_addr) = crate::support::modbus_tcp_device();

    crate::park::seed(&dir.path().join("seed"));
    let mut edge = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\nraw_block_samples = 200\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 50\ntimeout_ms = 1000\n\
             modbus_tcp = {{ address = \"{}\", unit = 1 }}\n",
            dir.path().join("seed").display(),
            relay.addr,
            identity.display(),
            device_addr
        ),
    );
    let connected = |edge: &Edge, want: bool| {
        let (_, s) = edge.get("/api/v1/sync");
        (s["connected"] == want).then_some(())
    };
    eventually(
        "connected through the relay",
        Duration::from_secs(30),
        || connected(&edge, true),
    );

    // The link goes dead for a while: no packet either way. The building keeps deciding, and
    // the edge reports the link down once its heartbeats go unanswered.
    relay.set_cut(true);
    let cut_at = std::time::Instant::now();
    for _ in 0..10 {
        read(&edge, "CARD-1");
    }
    eventually(
        "the edge to see the link is down",
        Duration::from_secs(60),
        || connected(&edge, false),
    );
    // Two minutes without a packet, while the device keeps producing and reconnects fail.
    std::thread::sleep(Duration::from_secs(120).saturating_sub(cut_at.elapsed()));
    let (_, s) = edge.get("/api/v1/sync");
    assert_eq!(s["connected"], false, "still cut off: {s}");
    relay.set_cut(false);
    eventually(
        "reconnected after the link healed",
        Duration::from_secs(90),
        || connected(&edge, true),
    );

    // Now the edge dies mid-stream, with decisions still to upload, and comes back. The
    // broker acknowledges a read before the edge has decided it; the kill comes once all
    // twenty are decided (and so stored).
    for _ in 0..10 {
        read(&edge, "CARD-2");
    }
    eventually(
        "twenty decisions at the edge",
        Duration::from_secs(30),
        || (edge_event_ids(&edge).len() >= 20).then_some(()),
    );
    edge.proc.kill9();
    let edge = Edge::start_with(edge.config.clone());
    let want = edge_event_ids(&edge);
    assert!(want.len() >= 20, "{} events at the edge", want.len());
    let got = eventually(
        "every edge event at the hub",
        Duration::from_secs(90),
        || {
            let events = hub.events();
            (events.len() >= want.len()).then_some(events)
        },
    );
    let ids: Vec<String> = got
        .iter()
        .map(|e| e["body"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "no event is stored twice");
    assert_eq!(distinct, want, "the hub holds exactly the edge's events");

    // Telemetry: every raw sample the hub holds is the edge's, once, and the edge has no
    // sample up to the hub's newest that the hub lacks (raw goes up in whole records).
    let raw = |url: String| -> Vec<i64> {
        let token = if url.starts_with(&hub.api) {
            &hub.token
        } else {
            &edge.token
        };
        let (status, body) = http_as(token, "GET", &url, None);
        assert_eq!(status, 200, "{url}: {body}");
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ts"].as_i64().unwrap())
            .collect()
    };
    // The edge serves raw history 6 hours at a time: the test's samples are all within the
    // last hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let range = format!(
        "resolution=raw&from={}&to={}&limit=100000",
        now - 3_600_000_000,
        now + 3_600_000_000
    );
    let hub_ts = eventually(
        "raw telemetry backfilled at the hub",
        Duration::from_secs(60),
        || {
            let ts = raw(format!(
                "{}/api/v1/parks/hil/buildings/b1/points/dev/voltage/history?{range}",
                hub.api
            ));
            (ts.len() > 50).then_some(ts)
        },
    );
    let hub_set: BTreeSet<i64> = hub_ts.iter().copied().collect();
    assert_eq!(hub_set.len(), hub_ts.len(), "no raw sample is stored twice");
    let newest = *hub_set.last().unwrap();
    let edge_set: BTreeSet<i64> = raw(format!(
        "{}/api/v1/points/dev/voltage/history?{range}",
        edge.api
    ))
    .into_iter()
    .filter(|t| *t <= newest)
    .collect();
    assert_eq!(
        hub_set, edge_set,
        "the hub's raw samples are exactly the edge's, up to the newest it holds"
    );
}

/// A request with a session cookie and its CSRF token, as the browser console sends it.
fn with_session(
    api: &str,
    cookie: &str,
    csrf: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{api}{path}");
    let mut res = if method == "GET" {
        agent
            .get(&url)
            .header("Cookie", &format!("smartpark_session={cookie}"))
            .call()
    } else {
        agent
            .post(&url)
            .header("Cookie", &format!("smartpark_session={cookie}"))
            .header("X-CSRF-Token", csrf)
            .send_json(body)
    }
    .unwrap();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn an_engineer_logs_in_to_the_edge_with_the_hub_gone_and_is_refused_one_sync_after_being_disabled()
{
    let dir = tempfile::tempdir().unwrap();
    let quic_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = hub_config(dir.path(), quic_port);
    let cfg = config.to_str().unwrap();
    // The engineer exists only on the hub, with a role in this building.
    let (ok, out) = smartpark(
        &[
            "hub",
            "user",
            "add",
            "--config",
            cfg,
            "--username",
            "eng",
            "--grant",
            "facility_engineer@building:hil/b1",
            "--password-stdin",
        ],
        "brisk-maple-window-31\n",
    );
    assert!(ok, "{out}");
    let mut hub = Hub::start(&config);
    let (_, identity) = enroll(&config, &hub, dir.path());
    let relay = Relay::start(hub.quic.parse().unwrap());
    crate::park::seed(&dir.path().join("seed"));
    let edge = Edge::start(
        dir.path(),
        &format!(
            "[business]\nseed_dir = \"{}\"\n[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\n",
            dir.path().join("seed").display(),
            relay.addr,
            identity.display()
        ),
    );
    let login = |code: u16| {
        let (status, body, cookie, csrf) =
            crate::support::login(&edge.api, "eng", "brisk-maple-window-31", None);
        (status == code).then_some((body, cookie, csrf))
    };
    eventually(
        "the hub's account reached the edge",
        Duration::from_secs(30),
        || login(200),
    );

    // The hub is gone: the engineer still logs in at the building and opens the lobby.
    hub.proc.kill9();
    let (me, cookie, csrf) = login(200).expect("a login with the hub down");
    assert_eq!(me["user"]["source"], "hub", "{me}");
    let (status, body) = with_session(
        &edge.api,
        &cookie,
        &csrf,
        "POST",
        "/api/v1/doors/d1/open",
        json!({"reason": "delivery"}),
    );
    assert_eq!(status, 200, "{body}");
    // ...but no more than the role allows.
    let (status, _) = with_session(&edge.api, &cookie, &csrf, "GET", "/api/v1/users", json!({}));
    assert_eq!(status, 403);
    let (_, audit) = edge.get("/api/v1/audit?limit=100");
    let open = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "door_manual_open")
        .cloned()
        .expect("the manual open is audited");
    assert_eq!(
        (open["actor"].as_str(), open["outcome"].as_str()),
        (Some("eng"), Some("ok"))
    );

    // The hub returns; then the link is cut, and the engineer is disabled on the hub.
    let hub = Hub::start(&hub.config);
    eventually("connected again", Duration::from_secs(60), || {
        let (_, s) = edge.get("/api/v1/sync");
        (s["connected"] == true).then_some(())
    });
    relay.set_cut(true);
    eventually(
        "the edge sees the link down",
        Duration::from_secs(60),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["connected"] == false).then_some(())
        },
    );
    let (ok, out) = smartpark(
        &[
            "hub",
            "user",
            "disable",
            "--config",
            cfg,
            "--username",
            "eng",
        ],
        "",
    );
    assert!(ok, "{out}");
    let (_, cookie, csrf) = login(200).expect("offline, the edge cannot know yet");
    // The link returns: within one sync the edge refuses the engineer and ends the session.
    let healed = std::time::Instant::now();
    relay.set_cut(false);
    eventually(
        "the engineer refused at the edge",
        Duration::from_secs(60),
        || login(401),
    );
    let (status, _) = with_session(&edge.api, &cookie, &csrf, "GET", "/api/v1/doors", json!({}));
    assert_eq!(status, 401, "the session ended with the account");
    eprintln!(
        "figure: edge_refuses_disabled_user_after_reconnect_ms {}",
        healed.elapsed().as_millis()
    );

    // Both chains hold: the edge's, and its copy at the hub with the hub's own.
    eventually(
        "the edge's audit records at the hub",
        Duration::from_secs(60),
        || {
            let (_, s) = edge.get("/api/v1/sync");
            (s["backlog"]["events"] == 0).then_some(())
        },
    );
    let (status, chain) = http_as(
        &hub.token,
        "GET",
        &format!("{}/api/v1/parks/hil/buildings/b1/audit?limit=1000", hub.api),
        None,
    );
    assert_eq!(status, 200, "{chain}");
    assert_eq!(chain["chain"]["intact"], true, "{chain}");
    assert!(
        chain["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "door_manual_open" && e["actor"] == "eng"),
        "{chain}"
    );
    let (ok, out) = smartpark(
        &[
            "audit",
            "verify",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        "",
    );
    assert!(ok && out.contains("edge: intact"), "{out}");
    let (ok, out) = smartpark(
        &[
            "audit",
            "verify",
            "--data-dir",
            dir.path().join("hub-data").to_str().unwrap(),
        ],
        "",
    );
    assert!(
        ok && out.contains("hub: intact") && out.contains("hil/b1: intact"),
        "{out}"
    );
}
