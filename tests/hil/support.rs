//! What the hardware-in-the-loop tests share: starting the real `smartpark` binary with a
//! config, third-party peers (pymodbus devices, socat, Mosquitto clients), and a small
//! HTTP client for the edge's API. Every process started here is killed when its guard
//! drops, so a failing test leaves nothing running.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has pymodbus: the one `scripts/test` prepared, or `.venv` in the repo.
pub fn python() -> PathBuf {
    match std::env::var_os("SMARTPARK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = repo().join(".venv/bin/python");
            assert!(
                p.exists(),
                "no Python with pymodbus: run the tests through scripts/test, which prepares .venv"
            );
            p
        }
    }
}

/// A child process killed on drop, with its standard output readable line by line.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    /// The first output line starting with `prefix`, waiting up to `within`.
    pub fn wait_line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{} printed no line starting with {prefix:?} (exit status: {status:?})",
                        self.name
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot send SIG{sig} to {}", self.name);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pymodbus device serving the register map described in `tests/hil/peers/modbus_device.py`.
pub fn modbus_tcp_device() -> (Proc, SocketAddr) {
    let mut p = Proc::spawn(
        "pymodbus TCP device",
        Command::new(python())
            .arg(repo().join("tests/hil/peers/modbus_device.py"))
            .args(["--tcp", "127.0.0.1:0"]),
    );
    let line = p.wait_line("READY", Duration::from_secs(30));
    let port: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("bad READY line {line:?}"));
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A running edge node started from the real binary.
pub struct Edge {
    pub proc: Proc,
    pub api: String,
    /// The building's broker (MQTT 3.1.1 and 5).
    pub mqtt: SocketAddr,
    /// Its TLS listener, when the config has one.
    pub mqtt_tls: Option<SocketAddr>,
    pub config: PathBuf,
    /// An API token of the tests' local administrator (see [`Edge::start_with`]).
    pub token: String,
}

/// The local account every HIL edge gets, made with `smartpark edge user add` as an
/// installer would: every permission of a building without needing a second factor.
pub const ADMIN: &str = "hil-admin";
pub const ADMIN_PASSWORD: &str = "hil-tall-cedar-river";

/// `smartpark edge user add` for the node of `config`: a local account with `roles` in
/// its building, as an installer makes one (a running node picks it up within seconds).
pub fn add_local_user(config: &Path, username: &str, roles: &[&str], password: &str) {
    let mut args = vec![
        "edge",
        "user",
        "add",
        "--config",
        config.to_str().unwrap(),
        "--username",
        username,
        "--password-stdin",
    ];
    for r in roles {
        args.extend(["--role", r]);
    }
    let (ok, out) = smartpark(&args, &format!("{password}\n"));
    assert!(ok, "edge user add: {out}");
}

/// Runs `smartpark` with `args`, feeding `stdin`; returns its status and output.
pub fn smartpark(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(edge_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("smartpark runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Logs in to an API at `api` and returns the session cookie and CSRF token.
pub fn login(
    api: &str,
    username: &str,
    password: &str,
    code: Option<&str>,
) -> (u16, Value, String, String) {
    let mut body = serde_json::json!({"username": username, "password": password});
    if let Some(c) = code {
        body["code"] = serde_json::json!(c);
    }
    let mut res = agent()
        .post(&format!("{api}/api/v1/auth/login"))
        .send_json(body)
        .unwrap();
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let csrf = json["csrfToken"].as_str().unwrap_or("").to_string();
    (status, json, cookie, csrf)
}

/// An API token for every permission `username` holds, made from a session.
pub fn token_for(api: &str, username: &str, password: &str) -> String {
    let (status, me, cookie, csrf) = login(api, username, password, None);
    assert_eq!(status, 200, "login of {username}: {me}");
    let mut res = agent()
        .post(&format!("{api}/api/v1/auth/tokens"))
        .header("Cookie", &format!("smartpark_session={cookie}"))
        .header("X-CSRF-Token", &csrf)
        .send_json(serde_json::json!({"name": "hil", "permissions": me["user"]["permissions"], "expiresInDays": 1}))
        .unwrap();
    let body: Value = serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap();
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"))
        .to_string()
}

pub fn edge_binary() -> &'static str {
    env!("CARGO_BIN_EXE_smartpark")
}

impl Edge {
    /// Writes a config with `devices` (TOML `[[device]]` tables) and the test profiles, and
    /// starts the node on free ports. The node gets the park's credential key of `dir` (see
    /// [`credential_key`]) in its `[business]` table. Its broker lets anonymous clients in
    /// (a lab), so that the Mosquitto clients of the tests need no account; see
    /// [`Edge::start_with_mqtt`] for a building's broker.
    pub fn start(dir: &Path, devices: &str) -> Edge {
        Self::start_with_mqtt(dir, "allow_anonymous = true\n", devices)
    }

    /// [`Edge::start`] with `mqtt` as the body of the `[mqtt]` table (after its `listen`),
    /// e.g. `[[mqtt.client]]` accounts.
    pub fn start_with_mqtt(dir: &Path, mqtt: &str, devices: &str) -> Edge {
        credential_key(dir);
        let devices = with_credential_key_file(devices);
        let config = dir.join("edge.toml");
        // The node sees the shipped profiles and the test devices' profiles side by side.
        let profiles = dir.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        for src in [
            repo().join("firmware-configs/profiles"),
            repo().join("tests/hil/profiles"),
        ] {
            for e in std::fs::read_dir(src).unwrap() {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "toml") {
                    std::fs::copy(&path, profiles.join(path.file_name().unwrap())).unwrap();
                }
            }
        }
        let text = format!(
            "[node]\npark = \"hil\"\nbuilding = \"b1\"\ndata_dir = \"data\"\nprofiles_dir = \"{profiles}\"\n\n\
             [api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n\n[mqtt]\nlisten = \"127.0.0.1:0\"\n{mqtt}\n{devices}\n",
            profiles = profiles.display(),
        );
        std::fs::write(&config, text).unwrap();
        Self::start_with(config)
    }

    /// Starts the node on an existing config (for restarts).
    pub fn start_with(config: PathBuf) -> Edge {
        let cfg = config.to_str().unwrap();
        let (ok, out) = smartpark(&["edge", "user", "list", "--config", cfg], "");
        if ok && !out.contains(ADMIN) {
            add_local_user(
                &config,
                ADMIN,
                &["facility_engineer", "security_officer", "park_manager"],
                ADMIN_PASSWORD,
            );
        }
        let mut proc = Proc::spawn(
            "smartpark edge",
            Command::new(edge_binary())
                .args(["edge", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info"),
        );
        let line = proc.wait_line("ready ", Duration::from_secs(30));
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        let api = field("api");
        Edge {
            token: token_for(&api, ADMIN, ADMIN_PASSWORD),
            api,
            mqtt: field("mqtt").parse().unwrap(),
            mqtt_tls: field("mqtt_tls").parse().ok(),
            proc,
            config,
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http_as(&self.token, "GET", &format!("{}{path}", self.api), None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        http_as(
            &self.token,
            "POST",
            &format!("{}{path}", self.api),
            Some(body),
        )
    }

    pub fn metrics(&self) -> String {
        let agent = agent();
        let mut res = agent
            .get(&format!("{}/metrics", self.api))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .expect("metrics");
        res.body_mut().read_to_string().unwrap()
    }

    /// One metric's value (the first series that starts with `series`).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The latest sample of a point, as the API shows it.
    pub fn latest(&self, key: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/points/{key}"));
        assert_eq!(status, 200, "GET point {key}: {body}");
        body["latest"].clone()
    }

    pub fn raw_count(&self, key: &str) -> u64 {
        let (_, body) = self.get("/api/v1/store");
        body["rawSamplesPerPoint"][key].as_u64().unwrap_or(0)
    }
}

/// The tests' HTTP client. It does not check the API's certificate: these helpers log in
/// and read over whatever the node serves; `tls.rs` tests the certificates themselves.
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .disable_verification(true)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

pub fn http(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    http_as("", method, url, body)
}

/// A request with an API token (none when `token` is empty).
pub fn http_as(token: &str, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent = agent();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if !token.is_empty() {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let res = match body {
        Some(b) => agent.run(
            req.header("Content-Type", "application/json")
                .body(b.to_string())
                .unwrap(),
        ),
        None if method == "GET" => agent.run(req.body(()).unwrap()),
        None => agent.run(req.body(String::new()).unwrap()),
    };
    let mut res = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The park's credential key of the test edge in `dir` (`dir/credential.key`, made on first
/// use): every edge that decides doors reads one, and seeds digest their credentials under it.
pub fn credential_key(dir: &Path) -> park_model::directory::CredentialKey {
    let file = dir.join("credential.key");
    if file.exists() {
        edge_node::park::read_credential_key_file(&file).unwrap()
    } else {
        edge_node::park::generate_credential_key_file(&file).unwrap()
    }
}

/// A test's config tables with `business.credential_key_file = "credential.key"` added, to the
/// test's own `[business]` table if it has one.
fn with_credential_key_file(tables: &str) -> String {
    const HEADER: &str = "[business]\n";
    const LINE: &str = "credential_key_file = \"credential.key\"\n";
    match tables.find(HEADER) {
        Some(at) => {
            let at = at + HEADER.len();
            format!("{}{LINE}{}", &tables[..at], &tables[at..])
        }
        None => format!("{HEADER}{LINE}\n{tables}"),
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `within`.
pub fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a Mosquitto client command to completion.
pub fn mosquitto_pub(broker: SocketAddr, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            &broker.ip().to_string(),
            "-p",
            &broker.port().to_string(),
        ])
        .args(args)
        .output()
        .expect("mosquitto_pub is missing: scripts/test installs mosquitto-clients");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `mosquitto_sub` (debug output on) that has its SUBACK before `start` returns, so that
/// nothing published after it is missed, however busy the machine.
pub struct MqttSub {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MqttSub {
    /// Subscribes to `topics` with `args` (an account's `-u`/`-P`, a protocol version).
    pub fn start(broker: SocketAddr, args: &[&str], topics: &[&str]) -> MqttSub {
        // Line-buffered: its debug lines (the SUBACK) are not flushed on their own.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                &broker.ip().to_string(),
                "-p",
                &broker.port().to_string(),
            ])
            .args(["-d", "-v", "-q", "1"])
            .args(args);
        for t in topics {
            cmd.args(["-t", t]);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        let out: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    out.lock().unwrap().push(line);
                }
            });
        }
        let sub = MqttSub { child, out };
        eventually("the subscription's SUBACK", Duration::from_secs(20), || {
            sub.lines()
                .iter()
                .any(|l| l.starts_with("Subscribed"))
                .then_some(())
        });
        sub
    }

    pub fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// The messages received, as `topic payload` lines.
    pub fn messages(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed"))
            .collect()
    }
}

impl Drop for MqttSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fuzzes the API at `api` from its own OpenAPI document with schemathesis (every check,
/// 30 examples an operation, one worker: hypothesis under threads has failed inside itself
/// here), with the settings of `config` (in `tests/hil`) and `env` for its placeholders;
/// fails the test with schemathesis's report when it finds a fault, prints it otherwise.
/// Its cache of found failures goes to `dir`, not the checkout.
pub fn schemathesis(dir: &Path, config: &str, api: &str, env: &[(&str, &str)]) {
    let out = Command::new(python().with_file_name("schemathesis"))
        .current_dir(dir)
        .arg("--config-file")
        .arg(repo().join("tests/hil").join(config))
        .arg("run")
        .arg(format!("{api}/api/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--max-examples", "30"])
        .args(["--workers", "1"])
        .args(["--seed", "1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found faults:\n{text}");
    println!("{text}");
}

/// `smartpark hub user add` as an operator runs it, for the hub of `config`: an account with
/// one grant and `password`; returns its id.
pub fn add_hub_user(config: &Path, username: &str, grant: &str, password: &str) -> String {
    let (ok, out) = smartpark(
        &[
            "hub",
            "user",
            "add",
            "--config",
            config.to_str().unwrap(),
            "--username",
            username,
            "--grant",
            grant,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert!(ok, "hub user add {username}: {out}");
    // `created NAME (ID)`
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("created {username} (")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_string()
}

/// Runs a console's Playwright specs (`ui/APP/playwright.config.ts`) in Debian's Chromium
/// with `env`, keeping their screenshots in `target/tmp/APP-e2e`; fails the test with
/// Playwright's report when a spec fails.
pub fn playwright(app: &str, env: &[(&str, &str)]) {
    playwright_specs(app, &[], &format!("{app}-e2e"), env);
}

/// The same for the specs of `app` whose file names match `specs` (all when empty), keeping
/// their screenshots in `target/tmp/OUTPUT`, so that two tests of one app keep theirs apart.
pub fn playwright_specs(app: &str, specs: &[&str], output: &str, env: &[(&str, &str)]) {
    let ui = repo().join("ui");
    assert!(
        ui.join("node_modules/@playwright/test").exists(),
        "ui/node_modules is missing: run the tests through scripts/test, which installs it"
    );
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join(output);
    let _ = std::fs::remove_dir_all(&output);
    let run = Command::new("npx")
        .current_dir(&ui)
        .args(["playwright", "test", "-c"])
        .arg(format!("{app}/playwright.config.ts"))
        .args(specs)
        .envs(env.iter().copied())
        .env("SMARTPARK_E2E_OUTPUT", &output)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "Playwright failed:\n{text}");
    println!("{text}\nscreenshots in {}", output.display());
}
