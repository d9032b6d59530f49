//! TLS configurations of both sides, built on rustls with the ring provider passed
//! explicitly, and the two verifiers this project adds to rustls' own: the hub's client
//! verifier that also refuses revoked serials, and the enrolling edge's verifier pinned to
//! the CA fingerprint in its token.
//!
//! Certificate checks are rustls-webpki's (chain, validity, key usage); this module adds
//! only the revocation list and the pin, and logs every refusal with its reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use super::pki::{
    Fingerprint, OperatorCa, PeerIdentity, Validity, cert_from_pem, certs_from_pem, key_from_pem,
    read_file,
};
use super::{ALPN_ENROLL, ALPN_SYNC, TransportError, provider};

/// The edge's private key in its data dir (owner-only).
pub const EDGE_KEY_FILE: &str = "edge-key.pem";
/// The edge's certificate in its data dir, followed by the issuing CA's when the operator's
/// root did not issue it itself.
pub const EDGE_CERT_FILE: &str = "edge-cert.pem";
/// The operator's root certificate in the edge's data dir: the one certificate it trusts.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// The private key of the edge's LAN API certificate in its data dir (owner-only).
pub const LAN_KEY_FILE: &str = "lan-key.pem";
/// The edge's LAN API certificate from enrollment, followed by its chain up to and
/// including the operator's root certificate, in its data dir.
pub const LAN_CERT_FILE: &str = "lan-cert.pem";

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// QUIC transport parameters both sides use: the sync session's heartbeats keep a
/// connection busy, so QUIC's own idle timeout only catches a session that stopped.
pub(crate) fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30))
            .unwrap_or(quinn::VarInt::from_u32(30_000).into()),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    // All logical streams share one QUIC stream, and the session lets each have up to its
    // byte window (8 MiB by default) unacknowledged. Windows well above that mean a send
    // never waits on a peer that is busy sending itself, so neither side needs a
    // separate reader task to avoid a deadlock.
    t.stream_receive_window(quinn::VarInt::from_u32(64 << 20));
    t.receive_window(quinn::VarInt::from_u32(128 << 20));
    t.send_window(128 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(4));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(4));
    Arc::new(t)
}

/// An edge's TLS identity: its key and certificate and the operator's CA, from its data
/// dir, ready for [`super::connect`].
#[derive(Clone)]
pub struct EdgeTlsConfig {
    identity: PeerIdentity,
    client: quinn::ClientConfig,
    ca_fingerprint: Fingerprint,
}

impl std::fmt::Debug for EdgeTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTlsConfig")
            .field("identity", &self.identity)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl EdgeTlsConfig {
    /// Reads `edge-key.pem`, `edge-cert.pem` and `ca-cert.pem` from `data_dir` (what
    /// [`super::enroll`] saved). An error names the file and says what is wrong; a
    /// missing file means the edge has not enrolled.
    pub fn load(data_dir: &Path) -> Result<EdgeTlsConfig, TransportError> {
        super::endpoint::finish_renewal(data_dir)?;
        let path = |f: &str| data_dir.join(f);
        for f in [EDGE_KEY_FILE, EDGE_CERT_FILE, CA_CERT_FILE] {
            if !path(f).exists() {
                return Err(TransportError::BadFile {
                    path: path(f),
                    reason: "missing: this edge has not enrolled (run `smartpark edge-enroll`)"
                        .into(),
                });
            }
        }
        Self::from_pem(
            &read_file(&path(EDGE_KEY_FILE))?,
            &read_file(&path(EDGE_CERT_FILE))?,
            &read_file(&path(CA_CERT_FILE))?,
        )
        .map_err(|e| match e {
            TransportError::BadCertificate(reason) | TransportError::Tls(reason) => {
                TransportError::BadFile {
                    path: path(EDGE_CERT_FILE),
                    reason,
                }
            }
            e => e,
        })
    }

    /// The same from PEM texts.
    pub fn from_pem(
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<EdgeTlsConfig, TransportError> {
        let key = key_from_pem(key_pem, Path::new(EDGE_KEY_FILE))?;
        let chain = certs_from_pem(cert_pem, Path::new(EDGE_CERT_FILE))?;
        let ca = cert_from_pem(ca_pem, Path::new(CA_CERT_FILE))?;
        let identity = PeerIdentity::from_certificate(&chain[0])?;
        let ca_fingerprint = Fingerprint::of(&ca);
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(tls_error)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN_SYNC.to_vec()];
        let client = client_config(tls)?;
        Ok(EdgeTlsConfig {
            identity,
            client,
            ca_fingerprint,
        })
    }

    /// The park, building and serial the certificate names.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca_fingerprint
    }

    pub(crate) fn client_config(&self) -> quinn::ClientConfig {
        self.client.clone()
    }
}

pub(crate) fn client_config(
    tls: rustls::ClientConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// The serials the hub refuses, shared between the hub's database and the TLS verifier.
/// A serial added here is refused from the next handshake on.
#[derive(Debug, Clone, Default)]
pub struct RevocationList(Arc<RwLock<HashSet<String>>>);

impl RevocationList {
    pub fn new(serials: impl IntoIterator<Item = String>) -> Self {
        RevocationList(Arc::new(RwLock::new(serials.into_iter().collect())))
    }

    pub fn revoke(&self, serial: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial.to_ascii_lowercase());
    }

    /// Replaces the whole list (after reading it again from the database).
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = serials
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&serial.to_ascii_lowercase())
    }
}

/// The hub's TLS side: its server certificate issued by the operator's CA, and the client
/// verification of edges.
#[derive(Clone)]
pub struct HubTlsConfig {
    server: quinn::ServerConfig,
    ca_der: CertificateDer<'static>,
    revocations: RevocationList,
    /// The names of the hub's own certificate, lowercase: no edge may get a LAN
    /// certificate for them.
    names: Vec<String>,
}

impl std::fmt::Debug for HubTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTlsConfig").finish_non_exhaustive()
    }
}

impl HubTlsConfig {
    /// Issues the hub a fresh server certificate from `ca` (valid two years, for
    /// [`super::HUB_SERVER_NAME`] and `extra_names`) and requires edges to present
    /// certificates that chain to the same root and are not in `revocations`.
    pub fn new(
        ca: &OperatorCa,
        extra_names: &[String],
        revocations: RevocationList,
    ) -> Result<HubTlsConfig, TransportError> {
        let issued = ca.issue_hub_cert(extra_names, Validity::days_from_now(2 * 365))?;
        let mut chain = certs_from_pem(&issued.cert_pem, Path::new("the hub certificate"))?;
        // The root goes with the chain so that an enrolling edge can check it against the
        // fingerprint in its token.
        chain.push(ca.cert_der().clone());
        let key = key_from_pem(&issued.key_pem, Path::new("the hub key"))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).map_err(tls_error)?;
        let roots = Arc::new(roots);
        // Client certificates are optional at the TLS level because enrollment connections
        // have none; a sync connection without one is refused right after the handshake.
        // A certificate that is presented is always verified in full.
        let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(tls_error)?;
        let verifier = Arc::new(RevocationAwareVerifier {
            inner: webpki,
            revocations: revocations.clone(),
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN_SYNC.to_vec(), ALPN_ENROLL.to_vec()];
        tls.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_error)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport_config());
        let names = std::iter::once(super::HUB_SERVER_NAME.to_string())
            .chain(extra_names.iter().map(|n| n.trim().to_ascii_lowercase()))
            .collect();
        Ok(HubTlsConfig {
            server,
            ca_der: ca.cert_der().clone(),
            revocations,
            names,
        })
    }

    /// The names the hub's certificate carries (lowercase), which edges may not have.
    pub(crate) fn own_names(&self) -> &[String] {
        &self.names
    }

    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    pub(crate) fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    pub(crate) fn server_config(&self) -> quinn::ServerConfig {
        self.server.clone()
    }
}

/// Who a certificate claims to be, for a log line about refusing it (not trusted).
fn claimed(der: &CertificateDer<'_>) -> String {
    match PeerIdentity::from_certificate(der) {
        Ok(id) => id.to_string(),
        Err(_) => "a certificate without a smartpark identity".into(),
    }
}

/// rustls-webpki's client verification, plus the hub's revocation list.
#[derive(Debug)]
struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: RevocationList,
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(error) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(edge = %claimed(end_entity), %error, "Refused an edge certificate.");
            return Err(error);
        }
        let identity = PeerIdentity::from_certificate(end_entity).map_err(|e| {
            tracing::warn!(error = %e, "Refused an edge certificate without a park and building.");
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        })?;
        if self.revocations.is_revoked(&identity.serial) {
            tracing::warn!(edge = %identity, "Refused a revoked edge certificate.");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The enrolling edge's verifier: the hub's chain must include the root whose fingerprint
/// the token carries, and the hub's certificate must verify up to that root.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    pub(crate) fingerprint: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCaVerifier {
    pub(crate) fn new(fingerprint: Fingerprint) -> Self {
        PinnedCaVerifier {
            fingerprint,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| Fingerprint::of(c) == self.fingerprint)
        else {
            tracing::warn!(
                expected = %self.fingerprint,
                "The hub's certificate authority is not the one the enrollment token names."
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks that `cert` chains to `ca` as a client certificate, now, through
/// `intermediates` (what an edge does with the certificate enrollment gave it before
/// saving it).
pub(crate) fn verify_client_chain(
    cert: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
) -> Result<(), TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(tls_error)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(tls_error)?;
    verifier
        .verify_client_cert(cert, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            TransportError::BadCertificate(format!("the issued certificate does not verify: {e}"))
        })
}

/// Checks that `cert` chains to `ca` (through `intermediates`) as a server certificate
/// valid now for every one of `names` (what an edge does with the LAN certificate enrollment gave it before saving
/// it).
pub(crate) fn verify_lan_cert(
    cert: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
    names: &[String],
) -> Result<(), TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(tls_error)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(tls_error)?;
    for name in names {
        let server_name = ServerName::try_from(name.as_str())
            .map_err(|e| TransportError::BadCertificate(format!("{name:?}: {e}")))?;
        verifier
            .verify_server_cert(cert, intermediates, &server_name, &[], UnixTime::now())
            .map_err(|e| {
                TransportError::BadCertificate(format!(
                    "the issued LAN certificate does not verify for {name}: {e}"
                ))
            })?;
    }
    Ok(())
}

/// Where the edge's files go in its data dir.
pub(crate) fn edge_paths(data_dir: &Path) -> [PathBuf; 3] {
    [EDGE_KEY_FILE, EDGE_CERT_FILE, CA_CERT_FILE].map(|f| data_dir.join(f))
}

/// Where the edge's LAN API key and certificate go in its data dir.
pub(crate) fn lan_paths(data_dir: &Path) -> [PathBuf; 2] {
    [LAN_KEY_FILE, LAN_CERT_FILE].map(|f| data_dir.join(f))
}
