//! The LAN API over HTTPS, in process: which certificate the node serves (configured
//! files, the LAN certificate from enrollment, or a self-signed one kept across restarts),
//! checked by a rustls client that trusts only what `EdgeNode::api_trust_pem` names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_node::{EdgeNode, EdgeSettings};
use sync_protocol::transport::{
    CertifiedKeyPem, EdgeKey, LAN_CERT_FILE, LAN_KEY_FILE, OperatorCa, Validity, certificate_pem,
    self_signed_server_cert,
};

/// Starts a node with no devices whose `[api]` table has `api` after its `listen` line,
/// and `extra` tables at the end.
async fn node(dir: &Path, api: &str, extra: &str) -> EdgeNode {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let text = format!(
        "[node]\npark = \"p\"\nbuilding = \"b\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\n{api}\n[mqtt]\nenabled = false\n[business]\nenabled = false\n{extra}\n",
        profiles.display()
    );
    let file = dir.join("edge.toml");
    std::fs::write(&file, &text).unwrap();
    EdgeNode::start(EdgeSettings::load(&file).unwrap())
        .await
        .unwrap()
}

/// GET `url` trusting only `trust` (PEM), on a blocking thread; the status or the error.
async fn get(url: String, trust: String) -> Result<u16, String> {
    tokio::task::spawn_blocking(move || {
        let cert = ureq::tls::Certificate::from_pem(trust.as_bytes()).map_err(|e| e.to_string())?;
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

async fn plain_get(url: String) -> Result<u16, String> {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenrolled_node_serves_https_with_a_self_signed_certificate_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), "", "").await;
    assert!(n.settings.api_tls);
    let url = n.api_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let trust = n.api_trust_pem().unwrap().to_string();
    assert_eq!(get(format!("{url}/health"), trust.clone()).await, Ok(200));
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = url.replacen("https://", "http://", 1);
    assert!(plain_get(format!("{plain}/health")).await.is_err());
    // A client that trusts another certificate refuses this one.
    let stranger = self_signed_server_cert(&["127.0.0.1".into()], Validity::days_from_now(1))
        .unwrap()
        .cert_pem;
    assert!(get(format!("{url}/health"), stranger).await.is_err());
    n.shutdown().await;

    let again = node(dir.path(), "", "").await;
    assert_eq!(again.api_trust_pem(), Some(trust.as_str()));
    assert_eq!(
        get(format!("{}/health", again.api_url()), trust).await,
        Ok(200)
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_node_serves_the_lan_certificate_from_the_operator_ca() {
    let dir = tempfile::tempdir().unwrap();
    // What `edge-enroll --lan-name 127.0.0.1` leaves in the identity dir.
    let ca = OperatorCa::create("test").unwrap();
    let key = EdgeKey::generate().unwrap();
    let lan = ca
        .issue_lan_cert(
            &key.certificate_request().unwrap(),
            "p",
            "b",
            &["127.0.0.1".into()],
            Validity::days_from_now(30),
        )
        .unwrap();
    let identity = dir.path().join("identity");
    let chain = certificate_pem(&lan) + ca.cert_pem();
    CertifiedKeyPem {
        cert_pem: chain,
        key_pem: key.pem(),
    }
    .save(&identity.join(LAN_CERT_FILE), &identity.join(LAN_KEY_FILE))
    .unwrap();
    let sync = format!(
        "[sync]\nhub = \"127.0.0.1:9\"\nidentity_dir = \"{}\"\n",
        identity.display()
    );
    let n = node(dir.path(), "", &sync).await;
    assert_eq!(n.api_trust_pem(), Some(ca.cert_pem()));
    let health = format!("{}/health", n.api_url());
    assert_eq!(
        get(health.clone(), ca.cert_pem().to_string()).await,
        Ok(200)
    );
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_certificate_files_come_first_and_plain_http_is_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let issued = self_signed_server_cert(
        &["127.0.0.1".into(), "edge.example".into()],
        Validity::days_from_now(30),
    )
    .unwrap();
    let (cert, key) = (dir.path().join("api.pem"), dir.path().join("api.key"));
    issued.save(&cert, &key).unwrap();
    let api = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let n = node(dir.path(), &api, "").await;
    assert_eq!(n.api_trust_pem(), Some(issued.cert_pem.as_str()));
    let health = format!("{}/health", n.api_url());
    assert_eq!(get(health, issued.cert_pem.clone()).await, Ok(200));
    n.shutdown().await;

    let plain = node(dir.path(), "plain_http = true", "").await;
    assert!(!plain.settings.api_tls);
    assert_eq!(plain.api_trust_pem(), None);
    let url = plain.api_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(plain_get(format!("{url}/health")).await, Ok(200));
    plain.shutdown().await;
}
