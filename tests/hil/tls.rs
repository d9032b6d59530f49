//! HTTPS on both HTTP APIs, with the real binaries: the hub serving a certificate it issued
//! from the operator's CA; an edge serving a self-signed certificate before enrollment
//! and, once enrolled with `--lan-name`, one from the operator's CA naming its LAN
//! address; plain HTTP to an HTTPS port getting no answer. The clients are rustls clients
//! that trust exactly one certificate and check the server's name (an IP address here).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Edge, Proc, edge_binary, eventually, repo};

/// GET `url` trusting only the PEM certificate `trust`: the status and body, or the error
/// in words.
fn https_get_body(url: &str, trust: &str) -> Result<(u16, String), String> {
    https_get_as(url, trust, None)
}

/// The same with an API token.
fn https_get_as(url: &str, trust: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let cert = ureq::tls::Certificate::from_pem(trust.as_bytes()).map_err(|e| e.to_string())?;
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let req = agent.get(url);
    let req = match token {
        Some(t) => req.header("Authorization", &format!("Bearer {t}")),
        None => req,
    };
    let mut res = req.call().map_err(|e| e.to_string())?;
    let body = res.body_mut().read_to_string().unwrap_or_default();
    Ok((res.status().as_u16(), body))
}

fn https_get(url: &str, trust: &str) -> Result<u16, String> {
    https_get_body(url, trust).map(|(status, _)| status)
}

/// One metric's value from a Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A plain HTTP GET to an `https://` address: it must not get an HTTP answer.
fn plain_http_fails(https_url: &str) {
    let plain = https_url.replacen("https://", "http://", 1);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let result = agent.get(&plain).call();
    assert!(
        result.is_err(),
        "plain HTTP to the HTTPS port got an answer: {:?}",
        result.map(|r| r.status())
    );
}

fn start_hub(dir: &Path) -> (Proc, String, String) {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        "[hub]\noperator = \"hil-operator\"\ndata_dir = \"hub-data\"\n\
         [quic]\nlisten = \"127.0.0.1:0\"\nserver_names = []\n\
         [http]\nlisten = \"127.0.0.1:0\"\nissue_from_ca = true\n\
         [ca]\ncert = \"ca/ca-cert.pem\"\nkey = \"ca/ca-key.pem\"\n",
    )
    .unwrap();
    // Someone to read the hub's metrics as.
    crate::support::add_hub_user(
        &config,
        "monitor",
        "operator_admin@operator",
        "quiet-harbor-lamp-77",
    );
    let mut proc = Proc::spawn(
        "smartpark hub",
        Command::new(edge_binary())
            .args(["hub", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn"),
    );
    let line = proc.wait_line("ready ", Duration::from_secs(30));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let (quic, api) = (field("quic"), field("api"));
    (proc, quic, api)
}

/// An edge config serving its API over HTTPS on loopback (no `plain_http`), with a
/// `[sync]` table when `sync` is given.
fn edge_config(dir: &Path, sync: Option<(&str, &Path)>) -> std::path::PathBuf {
    let file = dir.join("edge.toml");
    let mut text = format!(
        "[node]\npark = \"hil\"\nbuilding = \"b1\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n\
         [business]\nenabled = false\n",
        repo().join("firmware-configs/profiles").display()
    );
    if let Some((hub, identity)) = sync {
        text.push_str(&format!(
            "[sync]\nhub = \"{hub}\"\nidentity_dir = \"{}\"\n",
            identity.display()
        ));
    }
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn the_hub_and_the_edge_serve_https_with_self_signed_then_operator_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, quic, hub_api) = start_hub(dir.path());
    assert!(hub_api.starts_with("https://127.0.0.1:"), "{hub_api}");
    let ca = std::fs::read_to_string(dir.path().join("ca/ca-cert.pem")).unwrap();

    // The hub's certificate is the operator CA's and names the address it listens on.
    assert_eq!(https_get(&format!("{hub_api}/health"), &ca), Ok(200));
    plain_http_fails(&format!("{hub_api}/health"));

    // Before enrollment: a self-signed certificate, made on first start.
    let config = edge_config(dir.path(), None);
    let edge = Edge::start_with(config.clone());
    assert!(edge.api.starts_with("https://127.0.0.1:"), "{}", edge.api);
    let self_signed = std::fs::read_to_string(dir.path().join("data/tls/api-cert.pem")).unwrap();
    let health = format!("{}/health", edge.api);
    assert_eq!(https_get(&health, &self_signed), Ok(200));
    let refused = https_get(&health, &ca).unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    plain_http_fails(&health);
    drop(edge);

    // The same certificate after a restart, so a client that pinned it still connects.
    let edge = Edge::start_with(config);
    assert_eq!(
        https_get(&format!("{}/health", edge.api), &self_signed),
        Ok(200)
    );
    drop(edge);

    // Enrollment with the LAN address: the hub signs an HTTPS certificate for it.
    let out = Command::new(edge_binary())
        .args(["hub", "enroll", "--config"])
        .arg(dir.path().join("hub.toml"))
        .args(["--park", "hil", "--building", "b1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let identity = dir.path().join("identity");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let out = Command::new(edge_binary())
        .args(["edge-enroll", "--hub", &quic, "--token-file"])
        .arg(&token_file)
        .args(["--lan-name", "127.0.0.1", "--lan-name", "edge-b1.example"])
        .arg("--data-dir")
        .arg(&identity)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lan_names=127.0.0.1,edge-b1.example"),
        "{stdout}"
    );

    // Enrolled: a client that trusts only the operator's CA reaches the edge by its IP.
    let edge = Edge::start_with(edge_config(dir.path(), Some((&quic, &identity))));
    let health = format!("{}/health", edge.api);
    assert_eq!(https_get(&health, &ca), Ok(200));
    let refused = https_get(&health, &self_signed).unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    plain_http_fails(&health);
    // The edge still syncs with the hub: the LAN certificate left its identity alone.
    let hub_metrics = format!("{hub_api}/metrics");
    // An operator's machine token, made on the host (the admin has no second factor yet,
    // so it could not make one from a session).
    let (ok, token) = crate::support::smartpark(
        &[
            "hub",
            "user",
            "token",
            "--config",
            dir.path().join("hub.toml").to_str().unwrap(),
            "--username",
            "monitor",
            "--name",
            "scraper",
            "--permission",
            "telemetry.read",
            "--days",
            "1",
        ],
        "",
    );
    assert!(ok, "{token}");
    let token = token.lines().next().unwrap().trim().to_string();
    assert_eq!(https_get_as(&hub_metrics, &ca, None).map(|r| r.0), Ok(401));
    eventually(
        "the enrolled edge connected to the hub",
        Duration::from_secs(30),
        || {
            let (_, text) = https_get_as(&hub_metrics, &ca, Some(&token)).ok()?;
            (metric(&text, "smartpark_hub_edges_connected") == 1.0).then_some(())
        },
    );
    // The hub counted the plain HTTP request on its HTTPS port and went on serving.
    let (_, text) = https_get_as(&hub_metrics, &ca, Some(&token)).unwrap();
    assert!(
        metric(&text, "smartpark_hub_tls_handshake_failures_total") >= 1.0,
        "{text}"
    );
}
