//! The QUIC transport on its own, over real sockets on 127.0.0.1 with real rustls: mutual
//! TLS, refusals of foreign, expired and revoked certificates, and enrollment tokens that
//! work once. The hub side here is the transport's `HubEndpoint` with an in-memory
//! enroller; `hub.rs` tests the same against the real hub and its database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cloud_hub::transport::{
    CertificateRequest, EdgeKey, EdgeTlsConfig, EnrollFuture, Enroller, EnrollmentRequest,
    EnrollmentToken, Fingerprint, HubEndpoint, HubTlsConfig, LAN_KEY_FILE, OperatorCa,
    RevocationList, ServerTls, TransportError, Validity, connect, enroll, enroll_with_lan,
    issuing_ca_request,
};

/// Tokens by secret hash: (park, building, expired, used).
#[derive(Default)]
struct MemEnroller {
    ca: Option<Arc<OperatorCa>>,
    tokens: Mutex<HashMap<String, (String, String, bool, bool)>>,
}

impl Enroller for MemEnroller {
    fn enroll(&self, request: EnrollmentRequest) -> EnrollFuture<'_> {
        Box::pin(async move {
            let mut tokens = self.tokens.lock().unwrap();
            let Some((park, building, expired, used)) =
                tokens.get_mut(&request.token.secret_hash())
            else {
                return Err("unknown enrollment token".into());
            };
            if *used {
                return Err("this enrollment token was already used".into());
            }
            if *expired {
                return Err("this enrollment token has expired".into());
            }
            *used = true;
            let ca = self.ca.as_ref().unwrap();
            ca.issue_for_enrollment(&request, park, building, Validity::days_from_now(30))
                .map_err(|e| e.to_string())
        })
    }
}

struct TestHub {
    ca: Arc<OperatorCa>,
    endpoint: HubEndpoint,
    revocations: RevocationList,
    enroller: Arc<MemEnroller>,
}

fn start_hub() -> TestHub {
    start_hub_named(&[])
}

/// A hub whose own certificate also names `names`.
fn start_hub_named(names: &[String]) -> TestHub {
    start_hub_with(Arc::new(OperatorCa::create("test").unwrap()), names)
}

/// An issuing CA for one hub, certified by `root` from a request made "on the hub".
fn issuing_ca(root: &OperatorCa, hub: &str) -> OperatorCa {
    let (key, request) = issuing_ca_request("test").unwrap();
    let csr = CertificateRequest::from_pem(&request).unwrap();
    let file = root
        .certify_issuing_ca(&csr, hub, Validity::days_from_now(365))
        .unwrap();
    OperatorCa::from_pem(&file, &key).unwrap()
}

fn start_hub_with(ca: Arc<OperatorCa>, names: &[String]) -> TestHub {
    let revocations = RevocationList::default();
    let tls = HubTlsConfig::new(&ca, names, revocations.clone()).unwrap();
    let enroller = Arc::new(MemEnroller {
        ca: Some(ca.clone()),
        tokens: Mutex::default(),
    });
    let endpoint =
        HubEndpoint::bind("127.0.0.1:0".parse().unwrap(), &tls, enroller.clone()).unwrap();
    TestHub {
        ca,
        endpoint,
        revocations,
        enroller,
    }
}

impl TestHub {
    fn token(&self, park: &str, building: &str, expired: bool) -> EnrollmentToken {
        let token = EnrollmentToken::generate(self.ca.fingerprint()).unwrap();
        self.enroller.tokens.lock().unwrap().insert(
            token.secret_hash(),
            (park.into(), building.into(), expired, false),
        );
        token
    }

    /// The next accepted connection, or `None` after `wait`.
    async fn accepted(
        &self,
        wait: Duration,
    ) -> Option<(
        cloud_hub::transport::PeerIdentity,
        cloud_hub::transport::FrameChannel,
    )> {
        tokio::time::timeout(wait, self.endpoint.accept())
            .await
            .ok()
            .flatten()
    }
}

/// An edge identity issued directly by `ca`, bypassing enrollment.
fn edge_config(
    ca: &OperatorCa,
    trust: &OperatorCa,
    building: &str,
    validity: Validity,
) -> EdgeTlsConfig {
    let key = EdgeKey::generate().unwrap();
    let issued = ca
        .issue_edge_cert(
            &key.certificate_request().unwrap(),
            "park-1",
            building,
            validity,
        )
        .unwrap();
    EdgeTlsConfig::from_pem(&key.pem(), &issued.pem(), trust.cert_pem()).unwrap()
}

#[tokio::test]
async fn mutual_tls_connects_and_the_hub_sees_the_building_its_certificate_names() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let token = hub.token("park-1", "b-7", false);
    let config = enroll(hub.endpoint.local_addr(), &token, dir.path())
        .await
        .unwrap();
    assert_eq!(config.identity().building, "b-7");
    // What enrollment saved is what a restarted edge loads.
    let loaded = EdgeTlsConfig::load(dir.path()).unwrap();
    assert_eq!(loaded.identity(), config.identity());

    // The hub sees a connection once the edge has sent its first frame (hello, normally).
    let mut edge = connect(&loaded, hub.endpoint.local_addr()).await.unwrap();
    let hello = sync_protocol::Message::Heartbeat.encode(0).unwrap();
    edge.send(&hello).await.unwrap();
    let (identity, mut hub_side) = hub.accepted(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (identity.park.as_str(), identity.building.as_str()),
        ("park-1", "b-7")
    );
    assert_eq!(identity.serial, config.identity().serial);
    assert_eq!(hub_side.recv().await.unwrap(), Some(hello.clone()));
    let big = sync_protocol::Message::Health(sync_protocol::Health {
        body: vec![3; 3_000_000],
    })
    .encode(1)
    .unwrap();
    let (sent, received) = tokio::join!(hub_side.send(&big), edge.recv());
    sent.unwrap();
    assert_eq!(received.unwrap(), Some(big));
}

#[tokio::test]
async fn an_edge_certificate_from_another_ca_is_refused_on_both_sides() {
    let hub = start_hub();
    let other = OperatorCa::create("other").unwrap();
    // Trusts the hub's CA, but its own certificate comes from another CA.
    let config = edge_config(&other, &hub.ca, "b-1", Validity::days_from_now(1));
    let err = connect(&config, hub.endpoint.local_addr())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err}");
    assert!(err.to_string().contains("not issued by"), "{err}");
    assert!(hub.accepted(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn an_expired_edge_certificate_is_refused() {
    let hub = start_hub();
    let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    let validity = Validity {
        not_before: long_ago,
        not_after: long_ago + Duration::from_secs(86_400),
    };
    let config = edge_config(&hub.ca, &hub.ca, "b-1", validity);
    let err = connect(&config, hub.endpoint.local_addr())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(hub.accepted(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_revoked_edge_certificate_is_refused() {
    let hub = start_hub();
    let config = edge_config(&hub.ca, &hub.ca, "b-1", Validity::days_from_now(1));
    hub.revocations.revoke(&config.identity().serial);
    let err = connect(&config, hub.endpoint.local_addr())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    assert!(hub.accepted(Duration::from_millis(500)).await.is_none());
    // Another edge of the same CA still gets in.
    let fine = edge_config(&hub.ca, &hub.ca, "b-2", Validity::days_from_now(1));
    let mut edge = connect(&fine, hub.endpoint.local_addr()).await.unwrap();
    edge.send(&sync_protocol::Message::Heartbeat.encode(0).unwrap())
        .await
        .unwrap();
    let accepted = hub.accepted(Duration::from_secs(10)).await.unwrap();
    assert_eq!(accepted.0.building, "b-2");
}

#[tokio::test]
async fn an_edge_does_not_trust_a_hub_from_another_ca() {
    let hub = start_hub();
    let other = OperatorCa::create("other").unwrap();
    // A valid certificate of the hub's CA, but the edge trusts only `other`.
    let config = edge_config(&hub.ca, &other, "b-1", Validity::days_from_now(1));
    let err = connect(&config, hub.endpoint.local_addr())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::PeerNotTrusted(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not issued by our certificate authority"),
        "{err}"
    );
}

#[tokio::test]
async fn an_enrollment_token_works_once() {
    let hub = start_hub();
    let token = hub.token("park-1", "b-1", false);
    let dir = tempfile::tempdir().unwrap();
    enroll(hub.endpoint.local_addr(), &token, dir.path())
        .await
        .unwrap();
    let again = tempfile::tempdir().unwrap();
    let err = enroll(hub.endpoint.local_addr(), &token, again.path())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::EnrollmentRefused(_)), "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
    assert!(
        !again.path().join("edge-key.pem").exists(),
        "nothing is saved on refusal"
    );
}

#[tokio::test]
async fn an_expired_or_unknown_enrollment_token_is_refused() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let expired = hub.token("park-1", "b-1", true);
    let err = enroll(hub.endpoint.local_addr(), &expired, dir.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let unknown = EnrollmentToken::generate(hub.ca.fingerprint()).unwrap();
    let err = enroll(hub.endpoint.local_addr(), &unknown, dir.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown enrollment token"),
        "{err}"
    );
}

#[tokio::test]
async fn enrollment_trusts_only_the_hub_whose_ca_the_token_names() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let foreign = EnrollmentToken::generate(Fingerprint([9; 32])).unwrap();
    let err = enroll(hub.endpoint.local_addr(), &foreign, dir.path())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::PeerNotTrusted(_)), "{err}");
}

#[tokio::test]
async fn enrollment_issues_a_lan_certificate_for_the_names_asked_and_never_the_hubs_own() {
    let hub = start_hub_named(&["hub.example".into()]);
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["127.0.0.1".to_string(), "B1.example".to_string()];
    let enrolled = enroll_with_lan(
        hub.endpoint.local_addr(),
        &hub.token("park-1", "b-1", false),
        dir.path(),
        &names,
    )
    .await
    .unwrap();
    assert_eq!(enrolled.lan_names, ["127.0.0.1", "b1.example"]);
    assert_eq!(enrolled.tls.identity().building, "b-1");
    let lan = ServerTls::load_lan(dir.path()).unwrap().unwrap();
    assert_eq!(lan.trust_pem(), hub.ca.cert_pem());
    assert_eq!(lan.names_and_end().0, enrolled.lan_names);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = std::fs::metadata(dir.path().join(LAN_KEY_FILE)).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    // The hub's own names are refused before the token is spent.
    let token = hub.token("park-1", "b-2", false);
    let other = tempfile::tempdir().unwrap();
    let err = enroll_with_lan(
        hub.endpoint.local_addr(),
        &token,
        other.path(),
        &["hub.example".into()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("the hub's own name"), "{err}");
    let err = enroll_with_lan(
        hub.endpoint.local_addr(),
        &token,
        other.path(),
        &["hub.smartpark".into()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("reserved for the hub"), "{err}");
    enroll(hub.endpoint.local_addr(), &token, other.path())
        .await
        .unwrap();
    assert!(ServerTls::load_lan(other.path()).unwrap().is_none());

    // Enrolling again without LAN names takes the old LAN certificate away.
    enroll(
        hub.endpoint.local_addr(),
        &hub.token("park-1", "b-1", false),
        dir.path(),
    )
    .await
    .unwrap();
    assert!(ServerTls::load_lan(dir.path()).unwrap().is_none());
    assert!(!dir.path().join(LAN_KEY_FILE).exists());
}

/// The operator's root stays on another machine: the hub holds an issuing CA that the
/// root certified. Edges enroll pinning the root, keep the root alone as their trust, and
/// send the issuing CA's certificate with their own; an edge enrolled by a second hub
/// under the same root (another issuing CA) connects to the first as well, and one from
/// another root does not.
#[tokio::test]
async fn a_hub_with_an_issuing_ca_enrolls_and_connects_edges_that_trust_only_the_root() {
    let root = OperatorCa::create_root("op").unwrap();
    let hub = start_hub_with(Arc::new(issuing_ca(&root, "hub-1")), &[]);
    assert!(!hub.ca.holds_root_key());
    let dir = tempfile::tempdir().unwrap();
    let token = hub.token("park-1", "b-1", false);
    assert_eq!(token.ca_fingerprint(), root.fingerprint());
    let enrolled = enroll_with_lan(
        hub.endpoint.local_addr(),
        &token,
        dir.path(),
        &["127.0.0.1".to_string()],
    )
    .await
    .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let count = |pem: &str| pem.matches("BEGIN CERTIFICATE").count();
    assert_eq!(
        read("ca-cert.pem"),
        root.cert_pem(),
        "the edge trusts the root"
    );
    assert_eq!(
        count(&read("edge-cert.pem")),
        2,
        "certificate and issuing CA"
    );
    assert_eq!(
        count(&read("lan-cert.pem")),
        3,
        "certificate, issuing CA, root"
    );
    let lan = ServerTls::load_lan(dir.path()).unwrap().unwrap();
    assert_eq!(lan.trust_pem(), root.cert_pem());

    let mut edge = connect(&enrolled.tls, hub.endpoint.local_addr())
        .await
        .unwrap();
    edge.send(&sync_protocol::Message::Heartbeat.encode(0).unwrap())
        .await
        .unwrap();
    let (identity, _) = hub.accepted(Duration::from_secs(10)).await.unwrap();
    assert_eq!(identity.serial, enrolled.tls.identity().serial);

    // A second hub's issuing CA under the same root: its edges are this hub's edges too.
    let second = issuing_ca(&root, "hub-2");
    let moved = edge_config(&second, &root, "b-2", Validity::days_from_now(1));
    let mut edge = connect(&moved, hub.endpoint.local_addr()).await.unwrap();
    edge.send(&sync_protocol::Message::Heartbeat.encode(0).unwrap())
        .await
        .unwrap();
    let (identity, _) = hub.accepted(Duration::from_secs(10)).await.unwrap();
    assert_eq!(identity.building, "b-2");

    // Another root's issuing CA is refused.
    let foreign_root = OperatorCa::create_root("other").unwrap();
    let foreign = edge_config(
        &issuing_ca(&foreign_root, "hub-x"),
        &root,
        "b-3",
        Validity::days_from_now(1),
    );
    assert!(connect(&foreign, hub.endpoint.local_addr()).await.is_err());
    assert!(hub.accepted(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn an_edge_without_enrollment_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = EdgeTlsConfig::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("has not enrolled"), "{err}");
}
