//! The building's MQTT broker: a Mosquitto process that the node configures from the site
//! config, starts, watches and restarts, and the node's own links to it.
//!
//! Why Mosquitto and not an embedded broker: devices must be admitted one by one (a password
//! stored as a hash), each may publish and hear only its own topics, nobody may take the
//! edge's client id, and field devices speak MQTT as the standards say (keep-alive 0,
//! persistent sessions, retained status, message expiry). rumqttd has no topic ACLs and
//! refuses keep-alive 0; Mosquitto does all of it, is packaged by every Linux distribution,
//! and is the reference that device makers test against.
//!
//! What the node writes into `DATA_DIR/broker/` at every start (0700, files 0600):
//! `mosquitto.conf`, `devices.passwd` and `devices.acl` (from `[[mqtt.client]]`),
//! `edge.passwd` and `edge.acl` (the node's own account, with a password made at this
//! start), and the socket `edge.sock`. The devices' listener is TCP; the node's links use
//! the Unix socket, which no device can reach. Client ids on the devices' listener are the
//! usernames (`use_username_as_clientid`), and the node's own ids carry a random suffix, so
//! no device can take over the node's session.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::io::AsyncBufReadExt as _;
use tokio::task::JoinHandle;

use crate::config::{MqttClient, MqttSettings};

/// How long a command the node publishes may wait in the broker for a device that is away
/// (MQTT 5 message expiry): a door controller that reconnects within this gets its unlock;
/// one that comes back later does not open on an old decision.
pub const COMMAND_EXPIRY_S: u32 = 10;

/// PBKDF2 iterations of the hashes the node makes (Mosquitto's `$7$` format). Device
/// passwords are random (`smartpark mqtt-credential`), so the count guards against nothing
/// a longer password would not; it is kept low because Mosquitto checks it on its one
/// thread, where every connection waits for it.
pub const HASH_ITERATIONS: u32 = 1_000;
/// Hashes in a site config above this many iterations are refused: one device reconnecting
/// in a loop would otherwise stall every door of the building.
pub const MAX_HASH_ITERATIONS: u32 = 20_000;

/// The username of the node's own links.
pub const EDGE_USER: &str = "smartpark-edge";

/// A password line for Mosquitto's password file: `$7$ITERATIONS$SALT$HASH`, PBKDF2 with
/// HMAC-SHA512 over a 12-byte salt, both in standard base64.
pub fn password_hash(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 12];
    fill_random(&mut salt);
    hash_with_salt(password, &salt, iterations)
}

fn hash_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    let b64 = data_encoding::BASE64;
    format!("$7${iterations}${}${}", b64.encode(salt), b64.encode(&out))
}

/// Whether `hash` is a `$7$` hash as Mosquitto reads it; the reason when it is not.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let [empty, "7", iterations, salt, digest] = parts.as_slice() else {
        return Err(
            "is not a password hash of the form $7$ITERATIONS$SALT$HASH (make one with \
             `smartpark mqtt-credential USERNAME`)"
                .into(),
        );
    };
    if !empty.is_empty() {
        return Err("must start with $7$".into());
    }
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| format!("has {iterations:?} where its iteration count should be"))?;
    if iterations == 0 || iterations > MAX_HASH_ITERATIONS {
        return Err(format!(
            "has {iterations} iterations; at most {MAX_HASH_ITERATIONS} are allowed, because \
             the broker checks a password on the thread every device waits on"
        ));
    }
    let b64 = data_encoding::BASE64;
    if b64.decode(salt.as_bytes()).is_err()
        || b64.decode(digest.as_bytes()).map(|d| d.len()) != Ok(64)
    {
        return Err("has a salt or hash that is not base64 (a SHA-512 hash is 64 bytes)".into());
    }
    Ok(())
}

/// A random password of 128 bits, as the device is given it.
pub fn random_password() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

fn fill_random(b: &mut [u8]) {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), b)
        .expect("the system's random source failed");
}

/// What a Mosquitto instance is started from.
struct Files {
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    pid: PathBuf,
}

/// The ACL lines of one device's account, named `prefix` + its username.
fn acl_for(client: &MqttClient, prefix: &str, out: &mut String) {
    let _ = writeln!(out, "user {prefix}{}", client.username);
    for t in &client.publish {
        let _ = writeln!(out, "topic write {t}");
    }
    for t in &client.subscribe {
        let _ = writeln!(out, "topic read {t}");
    }
    out.push('\n');
}

/// The devices' ACL file: each account its own topics; anonymous clients (a lab) may
/// publish every device topic and read everything, but never what only the node sends.
fn devices_acl(settings: &MqttSettings, device_topics: &[String]) -> String {
    let mut out =
        String::from("# Written by the smartpark edge at every start; edits are lost.\n\n");
    if settings.allow_anonymous {
        out.push_str("# Anonymous clients (mqtt.allow_anonymous = true).\ntopic read #\n");
        for t in device_topics {
            let _ = writeln!(out, "topic write {t}");
        }
        out.push('\n');
    }
    for c in &settings.clients {
        acl_for(c, "", &mut out);
    }
    out
}

/// The TLS listener's ACL file: the same accounts, named as their certificates name them
/// (`PARK/BUILDING/USERNAME`); no anonymous clients.
fn tls_acl(settings: &MqttSettings, prefix: &str) -> String {
    let mut out =
        String::from("# Written by the smartpark edge at every start; edits are lost.\n\n");
    for c in &settings.clients {
        acl_for(c, prefix, &mut out);
    }
    out
}

/// The topics devices may publish at all, whoever they are: the field contract's inbound
/// topics and every MQTT device's telemetry.
pub fn inbound_topics(telemetry: &[String]) -> Vec<String> {
    let mut t: Vec<String> = crate::field::SUBSCRIPTIONS
        .iter()
        .map(|s| s.to_string())
        .chain(telemetry.iter().cloned())
        .collect();
    t.sort();
    t.dedup();
    t
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The user Mosquitto runs as: the node's own. Started as root, Mosquitto would otherwise
/// switch to a `mosquitto` user that cannot read the node's private files.
fn current_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| "root".into())
}

fn write_files(
    settings: &MqttSettings,
    dir: &Path,
    (listen, tls_listen): (SocketAddr, Option<SocketAddr>),
    edge_password: &str,
    telemetry: &[String],
) -> anyhow::Result<Files> {
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Mosquitto runs in this folder and reads these paths: absolute, whatever the config said.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("cannot find {}", dir.display()))?;
    let socket = dir.join("edge.sock");
    let _ = std::fs::remove_file(&socket);
    let mut passwd = String::new();
    for c in &settings.clients {
        if let Some(h) = &c.password_hash {
            let _ = writeln!(passwd, "{}:{h}", c.username);
        }
    }
    write_private(&dir.join("devices.passwd"), &passwd)?;
    write_private(
        &dir.join("devices.acl"),
        &devices_acl(settings, &inbound_topics(telemetry)),
    )?;
    write_private(
        &dir.join("edge.passwd"),
        &format!(
            "{EDGE_USER}:{}\n",
            password_hash(edge_password, HASH_ITERATIONS)
        ),
    )?;
    write_private(
        &dir.join("edge.acl"),
        &format!("user {EDGE_USER}\ntopic readwrite #\n"),
    )?;
    let anonymous = settings.allow_anonymous;
    let conf = format!(
        "# Written by the smartpark edge at every start from its config; edits are lost.\n\
         per_listener_settings true\n\
         user {user}\n\
         persistence true\n\
         persistence_location {dir}/\n\
         autosave_interval 30\n\
         log_dest stderr\n\
         log_type error\nlog_type warning\nlog_type notice\n\
         log_timestamp false\n\
         connection_messages true\n\
         set_tcp_nodelay true\n\
         max_packet_size {max_packet}\n\
         max_queued_messages 100000\n\
         \n\
         # The node's own links: a Unix socket no device reaches.\n\
         listener 0 {socket}\n\
         allow_anonymous false\n\
         password_file {dir}/edge.passwd\n\
         acl_file {dir}/edge.acl\n\
         \n\
         # Devices.\n\
         listener {port} {host}\n\
         allow_anonymous {anonymous}\n\
         use_username_as_clientid {by_name}\n\
         password_file {dir}/devices.passwd\n\
         acl_file {dir}/devices.acl\n",
        user = current_user(),
        max_packet = settings.max_payload_bytes + 64 * 1024,
        socket = socket.display(),
        dir = dir.display(),
        port = listen.port(),
        host = listen.ip(),
        // Without usernames, client ids cannot be usernames: a lab gives up that check.
        by_name = !anonymous,
    );
    let mut conf = conf;
    if let (Some(tls), Some(at)) = (&settings.tls, tls_listen) {
        write_private(
            &dir.join("devices-tls.acl"),
            &tls_acl(settings, &tls.name_prefix),
        )?;
        let _ = write!(
            conf,
            "\n# Devices with a certificate from the operator CA, named PARK/BUILDING/USERNAME.\n\
             listener {port} {host}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             cafile {ca}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             use_username_as_clientid true\n\
             allow_anonymous false\n\
             acl_file {dir}/devices-tls.acl\n",
            port = at.port(),
            host = at.ip(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            ca = tls.client_ca.display(),
            dir = dir.display(),
        );
    }
    let conf_path = dir.join("mosquitto.conf");
    write_private(&conf_path, &conf)?;
    Ok(Files {
        dir: dir.to_path_buf(),
        conf: conf_path,
        socket,
        pid: dir.join("mosquitto.pid"),
    })
}

/// A port that was free a moment ago, for a listener configured with port 0: Mosquitto
/// cannot pick one itself.
fn concrete(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot find a free port on {}", addr.ip()))?;
    Ok(l.local_addr()?)
}

/// Counters and state of the broker and the node's links, for `/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    pub running: AtomicBool,
    pub restarts_total: AtomicU64,
    /// Connections the broker refused for a bad username or password, from its log.
    pub refused_connections_total: AtomicU64,
    pub field_link_up: AtomicBool,
    pub telemetry_link_up: AtomicBool,
    /// Times a link of the node to the broker was lost and made again.
    pub link_reconnects_total: AtomicU64,
}

impl BrokerHealth {
    /// Why the broker cannot carry door reads now, if it cannot.
    pub fn down(&self) -> Option<&'static str> {
        if !self.running.load(Relaxed) {
            Some("the MQTT broker is not running")
        } else if !self.field_link_up.load(Relaxed) {
            Some("the node's link to the MQTT broker is down")
        } else {
            None
        }
    }
}

/// A running broker.
pub struct Broker {
    /// Where devices connect.
    pub addr: SocketAddr,
    /// Where devices with a certificate connect, when configured.
    pub tls_addr: Option<SocketAddr>,
    socket: PathBuf,
    password: String,
    pub health: Arc<BrokerHealth>,
    pub task: JoinHandle<()>,
}

impl Broker {
    /// Writes the broker's files, starts Mosquitto, and waits until it listens. `telemetry`
    /// lists the MQTT devices' topics (for a lab's anonymous clients).
    pub async fn start(
        settings: &MqttSettings,
        data_dir: &Path,
        telemetry: &[String],
        health: Arc<BrokerHealth>,
    ) -> anyhow::Result<Broker> {
        let dir = data_dir.join("broker");
        kill_stale(&dir.join("mosquitto.pid"), &dir.join("mosquitto.conf"));
        let password = random_password();
        // A port picked for port 0 may be taken before Mosquitto binds it: try again.
        let mut tries = 0;
        let any_port_zero = settings.listen.port() == 0
            || settings.tls.as_ref().is_some_and(|t| t.listen.port() == 0);
        let (addr, tls_addr, files, child) = loop {
            let addr = concrete(settings.listen)?;
            let tls_addr = match &settings.tls {
                Some(t) => Some(concrete(t.listen)?),
                None => None,
            };
            let files = write_files(settings, &dir, (addr, tls_addr), &password, telemetry)?;
            match spawn(settings, &files).await {
                Ok(child) => match wait_listening(child, addr, tls_addr, &files.socket).await {
                    Ok(child) => break (addr, tls_addr, files, child),
                    Err(e) if any_port_zero && tries < 3 => {
                        tries += 1;
                        tracing::debug!(error = %format!("{e:#}"), "The broker did not start; another port is tried.");
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        };
        health.running.store(true, Relaxed);
        let task = tokio::spawn(supervise(settings.clone(), files, child, health.clone()));
        Ok(Broker {
            addr,
            tls_addr,
            socket: dir.join("edge.sock"),
            password,
            health,
            task,
        })
    }

    /// Options for one of the node's links (`name` is part of its client id).
    fn options(&self, name: &str) -> MqttOptions {
        let mut suffix = [0u8; 8];
        fill_random(&mut suffix);
        let id = format!(
            "{EDGE_USER}-{name}-{}",
            data_encoding::HEXLOWER.encode(&suffix)
        );
        let mut o = MqttOptions::new(id, self.socket.to_string_lossy(), 0);
        o.set_transport(rumqttc::Transport::unix());
        o.set_credentials(EDGE_USER, self.password.clone());
        o.set_keep_alive(Duration::from_secs(10));
        o.set_clean_start(true);
        o.set_max_packet_size(Some(16 << 20));
        o
    }
}

/// Kills a broker that an earlier run of this node left behind (a node killed with -9 does
/// not stop its child): it would hold the port and the socket.
fn kill_stale(pid_file: &Path, conf: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .any(|a| Path::new(a) == conf)
        })
        .unwrap_or(false);
    if ours && let Some(p) = rustix::process::Pid::from_raw(pid) {
        tracing::warn!(
            pid,
            "A broker left by an earlier run of this node is stopped."
        );
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

async fn spawn(settings: &MqttSettings, files: &Files) -> anyhow::Result<tokio::process::Child> {
    // `setpriv --pdeathsig` makes the kernel stop the broker when the node dies, however it
    // dies; without it (not Linux's util-linux), `kill_stale` cleans up at the next start.
    let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
        let mut c = tokio::process::Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"])
            .arg(&settings.mosquitto);
        c
    } else {
        tokio::process::Command::new(&settings.mosquitto)
    };
    cmd.arg("-c")
        .arg(&files.conf)
        .current_dir(&files.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the MQTT broker {} (install the Debian package `mosquitto`, or set \
             mqtt.mosquitto to its path)",
            settings.mosquitto.display()
        )
    })?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&files.pid, pid.to_string());
    }
    Ok(child)
}

/// Waits until the broker accepts connections on both listeners; fails with what it said
/// when it exits first.
async fn wait_listening(
    mut child: tokio::process::Child,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    socket: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let local = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        } else {
            a
        }
    };
    let connect_to = local(addr);
    for _ in 0..500 {
        if let Some(status) = child.try_wait()? {
            let mut said = String::new();
            if let Some(err) = child.stderr.take() {
                let mut lines = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    said.push_str(&l);
                    said.push('\n');
                }
            }
            anyhow::bail!(
                "the MQTT broker exited at start ({status}) listening on {addr}: {}",
                said.trim()
            );
        }
        let tcp = tokio::net::TcpStream::connect(connect_to).await.is_ok();
        let tls = match tls_addr {
            Some(a) => tokio::net::TcpStream::connect(local(a)).await.is_ok(),
            None => true,
        };
        let unix = tokio::net::UnixStream::connect(socket).await.is_ok();
        if tcp && tls && unix {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the MQTT broker did not listen on {addr} within 5 s")
}

/// Passes the broker's log on and counts refused logins.
fn forward_log(child: &mut tokio::process::Child, health: Arc<BrokerHealth>) {
    let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for s in streams {
        let health = health.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("not authorised") || line.contains("bad user name or password") {
                    health.refused_connections_total.fetch_add(1, Relaxed);
                    tracing::warn!(broker = %line, "The MQTT broker refused a client.");
                } else if line.starts_with("Error") || line.contains("Error:") {
                    tracing::warn!(broker = %line, "MQTT broker");
                } else {
                    tracing::debug!(broker = %line, "MQTT broker");
                }
            }
        });
    }
}

/// Restarts the broker whenever it exits, with a growing pause (reset once it has stayed up
/// a minute), counted.
async fn supervise(
    settings: MqttSettings,
    files: Files,
    mut child: tokio::process::Child,
    health: Arc<BrokerHealth>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        forward_log(&mut child, health.clone());
        let started = std::time::Instant::now();
        let status = child.wait().await;
        health.running.store(false, Relaxed);
        health.restarts_total.fetch_add(1, Relaxed);
        tracing::error!(status = ?status.map(|s| s.to_string()), "The MQTT broker stopped; it is started again.");
        if started.elapsed() > Duration::from_secs(60) {
            pause = Duration::from_millis(100);
        }
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            let _ = std::fs::remove_file(&files.socket);
            match spawn(&settings, &files).await {
                Ok(c) => {
                    child = c;
                    health.running.store(true, Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "The MQTT broker cannot be started again.")
                }
            }
        }
    }
}

/// Which of the node's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Doors and lanes: their reads in, the node's commands out.
    Field,
    /// Telemetry of MQTT devices, apart so that a flood of it never delays a door read.
    Telemetry,
}

impl LinkKind {
    fn name(self) -> &'static str {
        match self {
            LinkKind::Field => "field",
            LinkKind::Telemetry => "telemetry",
        }
    }

    fn flag(self, h: &BrokerHealth) -> &AtomicBool {
        match self {
            LinkKind::Field => &h.field_link_up,
            LinkKind::Telemetry => &h.telemetry_link_up,
        }
    }
}

/// A publish the node received.
pub struct Received {
    pub topic: String,
    pub payload: bytes::Bytes,
}

/// One of the node's links: subscribes to `topics` at every connection, hands each publish
/// to `on_publish` (which may wait: the broker queues meanwhile), and connects again,
/// counted, whenever the connection is lost for any reason (a broker restart, a keep-alive
/// missed while `on_publish` waited, a takeover). Returns the client, for publishing.
pub fn link<F, Fut>(
    broker: &Broker,
    kind: LinkKind,
    topics: Vec<String>,
    mut on_publish: F,
) -> (AsyncClient, JoinHandle<()>)
where
    F: FnMut(Received) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // Room for commands while a connection is being made; a full queue refuses them.
    let (client, eventloop) = AsyncClient::new(broker.options(kind.name()), 1024);
    let health = broker.health.clone();
    let sub = client.clone();
    let task = tokio::spawn(async move {
        run_link(eventloop, kind, topics, sub, health, &mut on_publish).await
    });
    (client, task)
}

async fn run_link<F, Fut>(
    mut eventloop: EventLoop,
    kind: LinkKind,
    topics: Vec<String>,
    client: AsyncClient,
    health: Arc<BrokerHealth>,
    on_publish: &mut F,
) where
    F: FnMut(Received) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let up = kind.flag(&health);
    let mut pause = Duration::from_millis(50);
    let mut ever = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                up.store(true, Relaxed);
                pause = Duration::from_millis(50);
                if ever {
                    tracing::info!(
                        link = kind.name(),
                        "The node's link to the MQTT broker is back."
                    );
                }
                ever = true;
                // A clean start: the subscriptions are made again on every connection.
                for t in &topics {
                    if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                        tracing::error!(topic = %t, error = %e, "Cannot subscribe.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                on_publish(Received {
                    topic,
                    payload: p.payload,
                })
                .await;
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                up.store(false, Relaxed);
                tracing::warn!(link = kind.name(), reason = ?d.reason_code, "The MQTT broker closed the node's link; it is made again.");
            }
            Ok(_) => {}
            Err(e) => {
                if up.swap(false, Relaxed) || !ever {
                    tracing::warn!(link = kind.name(), error = %e, "The node's link to the MQTT broker is down; it is made again.");
                }
                if ever {
                    health.link_reconnects_total.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Publishes the node's commands (doors, barriers, displays, rule actions) at QoS 1 with
/// an expiry of [`COMMAND_EXPIRY_S`]. It never waits: it may be called from the store's
/// writer thread right after a decision is durable. While the field link is down a command
/// is refused at once (the decision stays recorded), never held to open a door late.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    health: Arc<BrokerHealth>,
}

impl Publisher {
    pub fn new(client: AsyncClient, health: Arc<BrokerHealth>) -> Publisher {
        Publisher { client, health }
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        if !self.health.field_link_up.load(Relaxed) {
            anyhow::bail!("cannot publish to {topic}: the node's link to the MQTT broker is down");
        }
        let properties = PublishProperties {
            message_expiry_interval: Some(COMMAND_EXPIRY_S),
            ..Default::default()
        };
        self.client
            .try_publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .map_err(|e| anyhow::anyhow!("cannot publish to {topic}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_hash_is_accepted_and_a_malformed_or_costly_one_is_refused_with_its_reason() {
        let h = password_hash("secret", HASH_ITERATIONS);
        assert!(h.starts_with("$7$1000$"), "{h}");
        check_password_hash(&h).unwrap();
        assert!(check_password_hash("secret").unwrap_err().contains("$7$"));
        let slow = hash_with_salt("x", &[0; 12], MAX_HASH_ITERATIONS + 1);
        assert!(check_password_hash(&slow).unwrap_err().contains("at most"));
        assert!(
            check_password_hash("$7$100$@@$@@")
                .unwrap_err()
                .contains("base64")
        );
    }

    #[test]
    fn the_hash_is_pbkdf2_sha512_as_mosquitto_writes_it() {
        // RFC 6070's inputs over HMAC-SHA512 (a published vector), in Mosquitto's layout.
        let h = hash_with_salt("password", b"salt", 1);
        let digest = h.rsplit('$').next().unwrap();
        let bytes = data_encoding::BASE64.decode(digest.as_bytes()).unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&bytes[..8]),
            "867f70cf1ade02cf"
        );
        assert!(h.starts_with("$7$1$c2FsdA==$"));
    }

    #[test]
    fn each_account_gets_only_its_topics_and_anonymous_clients_only_in_a_lab() {
        let client = MqttClient {
            username: "door-ctl-1".into(),
            password_hash: Some(password_hash("x", 1)),
            publish: vec!["door/lobby/read".into()],
            subscribe: vec!["door/lobby/command".into()],
        };
        let mut settings = MqttSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_anonymous: false,
            mosquitto: "mosquitto".into(),
            max_payload_bytes: 65536,
            clients: vec![client],
            tls: None,
        };
        let acl = devices_acl(&settings, &inbound_topics(&["tele/x/SENSOR".into()]));
        assert!(acl.contains(
            "user door-ctl-1\ntopic write door/lobby/read\ntopic read door/lobby/command\n"
        ));
        assert!(!acl.contains("topic read #"));
        settings.allow_anonymous = true;
        let acl = devices_acl(&settings, &inbound_topics(&["tele/x/SENSOR".into()]));
        let anonymous = acl.split("user ").next().unwrap();
        assert!(anonymous.contains("topic write tele/x/SENSOR\n"));
        assert!(anonymous.contains("topic write door/+/read\n"));
        assert!(!anonymous.contains("command"), "{anonymous}");
    }
}
