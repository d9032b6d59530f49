//! The two ends of a connection: [`connect`] and [`enroll`] for the edge, [`HubEndpoint`]
//! for the hub, which serves sync and enrollment on one UDP port.
//!
//! It runs no sync session and keeps no database: accepted sync connections are handed to
//! the caller with the identity from the verified certificate, and enrollment requests to
//! the caller's [`Enroller`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::channel::FrameChannel;
use super::pki::{
    CertificateRequest, EdgeKey, Fingerprint, IssuedCertificate, MAX_SERVER_NAMES, PeerIdentity,
    chain_pem, check_server_names, concat_der, hex, pem_of, split_der, write_file,
};
use super::tls::{
    EdgeTlsConfig, HubTlsConfig, PinnedCaVerifier, client_config, edge_paths, lan_paths,
    verify_client_chain, verify_lan_cert,
};
use super::token::EnrollmentToken;
use super::{
    ALPN_ENROLL, ALPN_SYNC, CloseCode, HUB_SERVER_NAME, TransportError, describe_connection_error,
    provider,
};
use crate::wire::{self, Reader};

/// How long a handshake, the hub's welcome, or an enrollment exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest enrollment request or response.
const MAX_ENROLL_MESSAGE: usize = 64 * 1024;
/// Enrollment without a LAN certificate, as the first hubs and edges spoke it.
const ENROLL_VERSION_1: u8 = 1;
/// Enrollment that may also ask for the edge's LAN API certificate.
const ENROLL_VERSION_LAN: u8 = 2;

fn client_endpoint(hub: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let bind: SocketAddr = if hub.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(bind).map_err(|source| TransportError::Bind { addr: bind, source })
}

async fn handshake(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    hub: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect_with(config, hub, HUB_SERVER_NAME)
        .map_err(|e| TransportError::ConnectionLost(format!("cannot connect to {hub}: {e}")))?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => Err(TransportError::Timeout("no answer from the hub")),
        Ok(Err(e)) => Err(describe_connection_error(&e)),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Connects an edge to its hub: mutual TLS with the identity in `config`, then waits for
/// the hub to accept the certificate (its welcome) and opens the frame stream.
///
/// An `Err` says why in words: the hub refused our certificate (unknown CA, expired,
/// revoked: [`TransportError::Refused`]), we refused the hub's
/// ([`TransportError::PeerNotTrusted`]), or the hub could not be reached. Each call uses
/// its own UDP socket; reconnecting is the caller's loop (see the module docs).
pub async fn connect(
    config: &EdgeTlsConfig,
    hub: SocketAddr,
) -> Result<FrameChannel, TransportError> {
    let endpoint = client_endpoint(hub)?;
    let result = async {
        let connection = handshake(&endpoint, config.client_config(), hub).await?;
        // In TLS 1.3 the client finishes its handshake before the server has checked the
        // client's certificate, so the hub's refusal arrives here, not above.
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_uni()).await;
        match welcome {
            Err(_) => {
                return Err(TransportError::Timeout(
                    "the hub did not accept the connection",
                ));
            }
            Ok(Err(e)) => return Err(describe_connection_error(&e)),
            Ok(Ok(_welcome)) => {}
        }
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| describe_connection_error(&e))?;
        Ok(FrameChannel::new(connection, send, recv, None))
    }
    .await;
    match result {
        Ok(channel) => Ok(channel.with_endpoint(endpoint)),
        Err(e) => {
            tracing::warn!(hub = %hub, error = %e, "Could not connect to the hub.");
            Err(e)
        }
    }
}

/// Enrolls an edge: makes a key pair and a certificate request here (the private key
/// never leaves this machine), connects to the hub's enrollment endpoint trusting only a
/// hub whose CA has the token's fingerprint, redeems the token, checks the certificate it
/// gets, and saves key, certificate and CA in `data_dir` (replacing an earlier
/// enrollment). Returns the saved identity, ready for [`connect`].
///
/// This asks for no LAN API certificate (see [`enroll_with_lan`]) and removes one an
/// earlier enrollment saved.
pub async fn enroll(
    hub: SocketAddr,
    token: &EnrollmentToken,
    data_dir: &Path,
) -> Result<EdgeTlsConfig, TransportError> {
    Ok(enroll_with_lan(hub, token, data_dir, &[]).await?.tls)
}

/// What [`enroll_with_lan`] saved.
#[derive(Debug)]
pub struct Enrollment {
    /// The sync identity, ready for [`connect`].
    pub tls: EdgeTlsConfig,
    /// The names of the LAN API certificate saved (`lan-cert.pem`); empty when none was
    /// asked for or the hub issued none (a warning says why).
    pub lan_names: Vec<String>,
}

/// [`enroll`], also asking the hub for an HTTPS certificate for the edge's LAN API naming
/// `lan_names` (DNS names or IP addresses, checked before the hub is contacted). The LAN
/// key is made here too and saved beside the sync identity as `lan-key.pem` (owner-only),
/// with the certificate and the CA as `lan-cert.pem`. With no names, this is [`enroll`].
pub async fn enroll_with_lan(
    hub: SocketAddr,
    token: &EnrollmentToken,
    data_dir: &Path,
    lan_names: &[String],
) -> Result<Enrollment, TransportError> {
    let key = EdgeKey::generate()?;
    let csr = key.certificate_request()?;
    let lan = if lan_names.is_empty() {
        None
    } else {
        let names = check_server_names(lan_names)?;
        let lan_key = EdgeKey::generate()?;
        let lan_csr = lan_key.certificate_request()?;
        Some((names, lan_key, lan_csr))
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(token.ca_fingerprint())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    let endpoint = client_endpoint(hub)?;
    let connection = handshake(&endpoint, client_config(tls)?, hub).await?;
    let exchange = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| describe_connection_error(&e))?;
        let mut request = Vec::new();
        match &lan {
            None => {
                request.push(ENROLL_VERSION_1);
                wire::put_str(&mut request, &token.to_string());
                wire::put_bytes(&mut request, csr.der());
            }
            Some((names, _, lan_csr)) => {
                request.push(ENROLL_VERSION_LAN);
                wire::put_str(&mut request, &token.to_string());
                wire::put_bytes(&mut request, csr.der());
                wire::put_varint(&mut request, names.len() as u64);
                for n in names {
                    wire::put_str(&mut request, n);
                }
                wire::put_bytes(&mut request, lan_csr.der());
            }
        }
        send.write_all(&request)
            .await
            .map_err(|e| TransportError::StreamIo(e.to_string()))?;
        let _ = send.finish();
        recv.read_to_end(MAX_ENROLL_MESSAGE)
            .await
            .map_err(|e| match e {
                quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)) => {
                    describe_connection_error(&e)
                }
                e => TransportError::StreamIo(e.to_string()),
            })
    };
    let response = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Err(_) => Err(TransportError::Timeout(
            "the hub did not answer the enrollment",
        )),
        Ok(r) => r,
    };
    connection.close(
        quinn::VarInt::from_u32(CloseCode::Normal as u32),
        b"enrollment done",
    );
    let (cert, ca, lan_cert) = match parse_response(&response?, lan.is_some()) {
        Err(TransportError::EnrollmentRefused(reason))
            if lan.is_some() && reason.contains("is not supported") =>
        {
            return Err(TransportError::EnrollmentRefused(format!(
                "{reason} (this hub predates LAN certificates: enroll without LAN names, or update the hub)"
            )));
        }
        r => r?,
    };
    if Fingerprint::of(&ca) != token.ca_fingerprint() {
        return Err(TransportError::BadEnrollmentMessage(
            "the hub sent a CA certificate other than the one the token names".into(),
        ));
    }
    if !key.matches(&cert[0]) {
        return Err(TransportError::BadEnrollmentMessage(
            "the hub sent a certificate for another key".into(),
        ));
    }
    verify_client_chain(&cert[0], &cert[1..], &ca)?;
    let identity = PeerIdentity::from_certificate(&cert[0])?;
    // The token is spent by now, so a LAN certificate that is missing or wrong costs only
    // the LAN certificate: the API serves a self-signed one until the next enrollment.
    let lan = match (lan, lan_cert) {
        (None, _) => None,
        (Some(_), None) => {
            tracing::warn!("The hub issued no LAN API certificate.");
            None
        }
        (Some((names, lan_key, _)), Some(lan_cert)) => {
            let checked = if lan_key.matches(&lan_cert[0]) {
                verify_lan_cert(&lan_cert[0], &lan_cert[1..], &ca, &names)
            } else {
                Err(TransportError::BadCertificate(
                    "the LAN certificate is for another key".into(),
                ))
            };
            match checked {
                Ok(()) => Some((names, lan_key, lan_cert)),
                Err(error) => {
                    tracing::warn!(%error, "Refused the LAN API certificate the hub issued.");
                    None
                }
            }
        }
    };
    let [key_path, cert_path, ca_path] = edge_paths(data_dir);
    write_file(&key_path, &key.pem(), true)?;
    write_file(&cert_path, &chain_pem(&cert), false)?;
    write_file(&ca_path, &pem_of("CERTIFICATE", &ca), false)?;
    let [lan_key_path, lan_cert_path] = lan_paths(data_dir);
    let lan_names = match lan {
        Some((names, lan_key, lan_cert)) => {
            write_file(&lan_key_path, &lan_key.pem(), true)?;
            let chain = chain_pem(lan_cert.iter().chain([&ca]));
            write_file(&lan_cert_path, &chain, false)?;
            names
        }
        None => {
            // A LAN certificate of an earlier enrollment may be from another CA or name
            // other addresses: it goes, and the API falls back to a self-signed one.
            for path in [&lan_cert_path, &lan_key_path] {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(TransportError::Io {
                            path: path.clone(),
                            source: e,
                        });
                    }
                    _ => {}
                }
            }
            Vec::new()
        }
    };
    tracing::info!(edge = %identity, dir = %data_dir.display(), lan_names = ?lan_names, "Enrolled with the hub.");
    Ok(Enrollment {
        tls: EdgeTlsConfig::load(data_dir)?,
        lan_names,
    })
}

/// A renewal of this edge's sync certificate, over its sync connection: a new key (made
/// here, never sent) and its certificate request for the hub; then the certificate the hub
/// issued, checked and saved in place of the old pair.
pub struct Renewal {
    key: EdgeKey,
}

/// Marks a renewed key and certificate written in full beside the current pair, so that a
/// crash between the two renames is finished at the next load (see [`finish_renewal`]).
const RENEWAL_READY: &str = "renewal.ready";

impl Renewal {
    /// A new key and the request to send the hub (DER).
    pub fn start() -> Result<(Renewal, Vec<u8>), TransportError> {
        let key = EdgeKey::generate()?;
        let csr = key.certificate_request()?.der().to_vec();
        Ok((Renewal { key }, csr))
    }

    /// Checks the certificate the hub issued, `chain[0]`, with the rest of `chain` (for
    /// this key, up to the operator's root in `data_dir`, naming this edge's park and
    /// building) and puts the new key and certificate in place of the old ones, which stay
    /// beside them as `.old`. The next connection uses the new pair.
    pub fn install(self, data_dir: &Path, chain: &[Der]) -> Result<PeerIdentity, TransportError> {
        let [key_path, cert_path, ca_path] = edge_paths(data_dir);
        let current = EdgeTlsConfig::load(data_dir)?;
        let Some(cert) = chain.first() else {
            return Err(TransportError::BadCertificate(
                "no renewed certificate was sent".into(),
            ));
        };
        if !self.key.matches(cert) {
            return Err(TransportError::BadCertificate(
                "the renewed certificate is for another key".into(),
            ));
        }
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(|source| TransportError::Io {
            path: ca_path.clone(),
            source,
        })?;
        let ca = super::pki::cert_from_pem(&ca_pem, &ca_path)?;
        verify_client_chain(cert, &chain[1..], &ca)?;
        let identity = PeerIdentity::from_certificate(cert)?;
        let was = current.identity();
        if (identity.park.as_str(), identity.building.as_str())
            != (was.park.as_str(), was.building.as_str())
        {
            return Err(TransportError::BadCertificate(format!(
                "the renewed certificate names {}/{}, this edge is {}/{}",
                identity.park, identity.building, was.park, was.building
            )));
        }
        let new = |p: &Path| p.with_extension("pem.new");
        write_file(&new(&key_path), &self.key.pem(), true)?;
        write_file(&new(&cert_path), &chain_pem(chain), false)?;
        write_file(&data_dir.join(RENEWAL_READY), "", false)?;
        for path in [&key_path, &cert_path] {
            let _ = std::fs::copy(path, path.with_extension("pem.old"));
        }
        finish_renewal(data_dir)?;
        tracing::info!(edge = %identity, "Installed the renewed sync certificate.");
        Ok(identity)
    }
}

/// Puts a renewed key and certificate that were written in full in place (both renames are
/// idempotent, so a crash anywhere in between is finished here).
pub(crate) fn finish_renewal(data_dir: &Path) -> Result<(), TransportError> {
    let ready = data_dir.join(RENEWAL_READY);
    if !ready.exists() {
        return Ok(());
    }
    let [key_path, cert_path, _] = edge_paths(data_dir);
    for path in [&key_path, &cert_path] {
        let new = path.with_extension("pem.new");
        if new.exists() {
            std::fs::rename(&new, path).map_err(|source| TransportError::Io {
                path: new.clone(),
                source,
            })?;
        }
    }
    std::fs::remove_file(&ready).map_err(|source| TransportError::Io {
        path: ready.clone(),
        source,
    })
}

fn bad_message(e: crate::DecodeError) -> TransportError {
    TransportError::BadEnrollmentMessage(e.to_string())
}

/// A certificate from an enrollment answer.
type Der = CertificateDer<'static>;

/// A certificate and its chain from an enrollment answer, the certificate first.
type Chain = Vec<Der>;

/// The hub's answer: certificate with chain, root and, when `with_lan` (a version 2
/// request), the LAN certificate with chain (`None` when the hub sent none).
fn parse_response(
    bytes: &[u8],
    with_lan: bool,
) -> Result<(Chain, Der, Option<Chain>), TransportError> {
    let mut r = Reader::new(bytes);
    let chain = |what: &str, bytes: &[u8]| {
        split_der(bytes).map_err(|e| TransportError::BadEnrollmentMessage(format!("{what}: {e}")))
    };
    match r.u8("enrollment status").map_err(bad_message)? {
        0 => {
            let cert = chain(
                "certificate",
                r.len_prefixed("certificate").map_err(bad_message)?,
            )?;
            let ca = r
                .len_prefixed("CA certificate")
                .map_err(bad_message)?
                .to_vec();
            let lan = if with_lan {
                let lan = r.len_prefixed("LAN certificate").map_err(bad_message)?;
                if lan.is_empty() {
                    None
                } else {
                    Some(chain("LAN certificate", lan)?)
                }
            } else {
                None
            };
            r.finish("enrollment response").map_err(bad_message)?;
            Ok((cert, ca.into(), lan))
        }
        1 => Err(TransportError::EnrollmentRefused(
            r.string("refusal reason").map_err(bad_message)?,
        )),
        s => Err(TransportError::BadEnrollmentMessage(format!(
            "unknown enrollment status {s}"
        ))),
    }
}

/// A boxed future of an enrollment decision.
pub type EnrollFuture<'a> =
    Pin<Box<dyn Future<Output = Result<IssuedCertificate, String>> + Send + 'a>>;

/// An enrollment request whose certificate requests have valid signatures and whose token
/// names this hub's CA. Whether the token is known, unused and unexpired is the
/// [`Enroller`]'s to decide.
#[derive(Debug)]
pub struct EnrollmentRequest {
    pub token: EnrollmentToken,
    pub csr: CertificateRequest,
    pub remote: SocketAddr,
    /// The LAN API certificate the edge asks for, if any.
    pub lan: Option<LanRequest>,
}

/// An edge's request for the HTTPS certificate of its LAN API: its names, already checked
/// ([`super::check_server_names`], and none of the hub's own), and the request for the
/// key the edge made for it.
#[derive(Debug)]
pub struct LanRequest {
    pub names: Vec<String>,
    pub csr: CertificateRequest,
}

/// The hub's decision on enrollment requests: redeem the token (once), issue the
/// certificates for the building it was made for with
/// [`super::OperatorCa::issue_for_enrollment`] (the edge certificate, and the LAN
/// certificate when the request asks for one), record the edge. An `Err` is a refusal;
/// its text goes to the edge and the log, so it must not contain the token.
pub trait Enroller: Send + Sync + 'static {
    fn enroll(&self, request: EnrollmentRequest) -> EnrollFuture<'_>;
}

/// The hub's QUIC endpoint: sync connections and enrollment on one UDP port.
#[derive(Debug)]
pub struct HubEndpoint {
    endpoint: quinn::Endpoint,
    accepted: tokio::sync::Mutex<mpsc::Receiver<(PeerIdentity, FrameChannel)>>,
    local_addr: SocketAddr,
}

struct HubShared {
    ca_der: CertificateDer<'static>,
    enroller: Arc<dyn Enroller>,
    tls: HubTlsConfig,
    accepted: mpsc::Sender<(PeerIdentity, FrameChannel)>,
}

impl HubEndpoint {
    /// Listens on `addr` (port 0 picks a free one; see [`HubEndpoint::local_addr`]).
    pub fn bind(
        addr: SocketAddr,
        tls: &HubTlsConfig,
        enroller: Arc<dyn Enroller>,
    ) -> Result<HubEndpoint, TransportError> {
        let endpoint = quinn::Endpoint::server(tls.server_config(), addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;
        let (tx, rx) = mpsc::channel(64);
        let shared = Arc::new(HubShared {
            ca_der: tls.ca_der().clone(),
            enroller,
            tls: tls.clone(),
            accepted: tx,
        });
        let ep = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let remote = incoming.remote_address();
                let span = tracing::info_span!("peer", %remote);
                tokio::spawn(handle_incoming(incoming, shared.clone()).instrument(span));
            }
        });
        Ok(HubEndpoint {
            endpoint,
            accepted: tokio::sync::Mutex::new(rx),
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next accepted sync connection, with the identity its verified certificate
    /// names; `None` once the endpoint is closed. A connection comes out once the edge has
    /// sent its first frame (QUIC shows a stream to the peer only when data flows), which
    /// a sync edge does at once: hello. Handshakes run concurrently in tasks
    /// of their own, so a slow peer delays nobody.
    pub async fn accept(&self) -> Option<(PeerIdentity, FrameChannel)> {
        self.accepted.lock().await.recv().await
    }

    /// Closes every connection with "shutting down" and stops listening.
    pub fn close(&self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::ShuttingDown as u32),
            b"the hub is shutting down",
        );
    }
}

async fn handle_incoming(incoming: quinn::Incoming, shared: Arc<HubShared>) {
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "Dropped an incoming connection.");
            return;
        }
    };
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => {
            tracing::info!("Dropped a connection whose handshake did not finish in time.");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(reason = %describe_connection_error(&e), "Refused a connection.");
            return;
        }
        Ok(Ok(c)) => c,
    };
    let alpn = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    match alpn.as_deref() {
        Some(ALPN_SYNC) => accept_sync(connection, &shared).await,
        Some(ALPN_ENROLL) => serve_enrollment(connection, &shared).await,
        _ => refuse(&connection, "no supported application protocol"),
    }
}

fn refuse(connection: &quinn::Connection, reason: &str) {
    tracing::warn!(reason, "Refused a connection.");
    connection.close(
        quinn::VarInt::from_u32(CloseCode::Refused as u32),
        reason.as_bytes(),
    );
}

async fn accept_sync(connection: quinn::Connection, shared: &HubShared) {
    let cert = connection
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next());
    let Some(cert) = cert else {
        refuse(
            &connection,
            "a client certificate is required for sync; enroll this edge first",
        );
        return;
    };
    let identity = match PeerIdentity::from_certificate(&cert) {
        Ok(id) => id,
        Err(e) => {
            refuse(
                &connection,
                &format!("the certificate names no building: {e}"),
            );
            return;
        }
    };
    // TLS already refused revoked serials; a revocation during the handshake lands here.
    if shared.tls.revocations().is_revoked(&identity.serial) {
        refuse(
            &connection,
            &format!("certificate {} is revoked", identity.serial),
        );
        return;
    }
    let span = tracing::info_span!("edge", park = %identity.park, building = %identity.building);
    let welcome = async {
        let mut uni = connection.open_uni().await?;
        let _ = uni.finish();
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| quinn::ConnectionError::TimedOut)?
    }
    .instrument(span.clone());
    match welcome.await {
        Ok((send, recv)) => {
            let _enter = span.enter();
            tracing::debug!(serial = %identity.serial, "Accepted a sync connection.");
            let channel = FrameChannel::new(connection, send, recv, None);
            if shared.accepted.send((identity, channel)).await.is_err() {
                tracing::debug!("The hub stopped accepting connections.");
            }
        }
        Err(e) => {
            let _enter = span.enter();
            tracing::info!(reason = %describe_connection_error(&e), "The edge left before opening its stream.");
        }
    }
}

async fn serve_enrollment(connection: quinn::Connection, shared: &HubShared) {
    let remote = connection.remote_address();
    let exchange = async {
        let (mut send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| describe_connection_error(&e).to_string())?;
        let request = recv
            .read_to_end(MAX_ENROLL_MESSAGE)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        let version = request.first().copied();
        let answer = match parse_request(&request, remote, shared) {
            Err(reason) => Err(reason),
            Ok(request) => shared.enroller.enroll(request).await,
        };
        let mut response = Vec::new();
        let outcome = match answer {
            Ok(issued) => {
                // Each certificate travels with its chain (DER after DER): nothing when
                // the root issued it, the issuing CA's certificate when one did.
                response.push(0);
                wire::put_bytes(
                    &mut response,
                    &concat_der(std::iter::once(&issued.der).chain(&issued.chain)),
                );
                wire::put_bytes(&mut response, &shared.ca_der);
                if version == Some(ENROLL_VERSION_LAN) {
                    let lan = issued.lan.as_ref().map_or_else(Vec::new, |c| {
                        concat_der(std::iter::once(c).chain(&issued.chain))
                    });
                    wire::put_bytes(&mut response, &lan);
                }
                tracing::info!(edge = %issued.identity, lan = issued.lan.is_some(), "Enrolled an edge.");
                Ok(())
            }
            Err(reason) => {
                response.push(1);
                wire::put_str(&mut response, &reason);
                tracing::warn!(%reason, "Refused an enrollment.");
                Err(())
            }
        };
        send.write_all(&response)
            .await
            .map_err(|e| format!("cannot send the answer: {e}"))?;
        let _ = send.finish();
        Ok::<_, String>(outcome)
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Err(_) => refuse(&connection, "the enrollment exchange took too long"),
        Ok(Err(reason)) => tracing::warn!(%reason, "An enrollment exchange failed."),
        Ok(Ok(_)) => {
            // The edge closes once it has the answer; closing first could cut it off.
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.closed()).await;
        }
    }
}

fn parse_request(
    bytes: &[u8],
    remote: SocketAddr,
    shared: &HubShared,
) -> Result<EnrollmentRequest, String> {
    let mut r = Reader::new(bytes);
    let version = r.u8("enrollment version").map_err(|e| e.to_string())?;
    if version != ENROLL_VERSION_1 && version != ENROLL_VERSION_LAN {
        return Err(format!(
            "enrollment version {version} is not supported; this hub speaks {ENROLL_VERSION_1} and {ENROLL_VERSION_LAN}"
        ));
    }
    let token = r.string("token").map_err(|e| e.to_string())?;
    let csr = r
        .len_prefixed("certificate request")
        .map_err(|e| e.to_string())?;
    let lan = if version == ENROLL_VERSION_LAN {
        // Each name takes at least its length byte.
        let n = r.count("LAN names", 1).map_err(|e| e.to_string())?;
        if n > MAX_SERVER_NAMES {
            return Err(format!(
                "{n} LAN names; a LAN certificate carries at most {MAX_SERVER_NAMES}"
            ));
        }
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(r.string("LAN name").map_err(|e| e.to_string())?);
        }
        let lan_csr = r
            .len_prefixed("LAN certificate request")
            .map_err(|e| e.to_string())?;
        (n > 0).then_some((names, lan_csr))
    } else {
        None
    };
    r.finish("enrollment request").map_err(|e| e.to_string())?;
    let token = EnrollmentToken::parse(&token).map_err(|e| e.to_string())?;
    if token.ca_fingerprint() != Fingerprint::of(&shared.ca_der) {
        return Err("the token was made for another certificate authority".into());
    }
    let csr = CertificateRequest::from_der(csr).map_err(|e| e.to_string())?;
    let lan = match lan {
        None => None,
        Some((names, lan_csr)) => {
            let names = check_server_names(&names).map_err(|e| format!("LAN names: {e}"))?;
            if let Some(taken) = names.iter().find(|n| shared.tls.own_names().contains(n)) {
                return Err(format!("LAN names: {taken} is the hub's own name"));
            }
            let csr = CertificateRequest::from_der(lan_csr).map_err(|e| format!("LAN {e}"))?;
            Some(LanRequest { names, csr })
        }
    };
    tracing::debug!(csr = %hex(&Fingerprint::of(csr.der()).0[..8]), lan = ?lan.as_ref().map(|l| &l.names), "Enrollment request.");
    Ok(EnrollmentRequest {
        token,
        csr,
        remote,
        lan,
    })
}
