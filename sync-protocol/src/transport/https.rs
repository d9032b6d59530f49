//! The HTTP APIs of both sides, the edge's LAN API and the hub's dashboard API, served by
//! one function: HTTPS over rustls (ring provider), or plain HTTP on a loopback address.
//!
//! It serves the axum router it is given and nothing else: it does not route,
//! authenticate or decide which certificate a side uses (their configs do). Either way a
//! handler finds the peer's address as `axum::extract::ConnectInfo<SocketAddr>`, and a
//! TLS handshake that fails (a plain HTTP request on the HTTPS port, a client that refuses
//! the certificate, a port scan) is counted through the caller's callback and never stops
//! the server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use super::pki::{CertifiedKeyPem, key_from_pem, pem_of, read_file, server_names_of};
use super::tls::{LAN_CERT_FILE, LAN_KEY_FILE};
use super::{TransportError, provider};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this the listener stops accepting for a while,
/// so a flood of idle connections costs bounded memory.
const MAX_HANDSHAKES: usize = 256;

/// A server certificate chain with its key, ready to serve HTTPS.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    trust_pem: String,
    leaf: CertificateDer<'static>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM texts: the server's certificate first, then any chain, and its private
    /// key. `Err` when either is missing or malformed, or the key is not the
    /// certificate's.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<ServerTls, TransportError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::BadCertificate(format!("bad PEM: {e}")))?;
        let Some(last) = chain.last() else {
            return Err(TransportError::BadCertificate(
                "no certificate in the PEM text".into(),
            ));
        };
        let trust_pem = pem_of("CERTIFICATE", last);
        let leaf = chain[0].clone();
        let key = key_from_pem(key_pem, Path::new("the private key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        // axum is built for HTTP/1 only here; saying so lets clients skip trying h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            trust_pem,
            leaf,
        })
    }

    /// From a certificate (chain) file and a key file; errors name the file at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerTls, TransportError> {
        let chain = read_file(cert_path)?;
        let key = read_file(key_path)?;
        Self::from_pem(&chain, &key).map_err(|e| match e {
            TransportError::BadFile { reason, .. } => TransportError::BadFile {
                path: key_path.to_path_buf(),
                reason,
            },
            TransportError::BadCertificate(reason) | TransportError::Tls(reason) => {
                TransportError::BadFile {
                    path: cert_path.to_path_buf(),
                    reason,
                }
            }
            e => e,
        })
    }

    pub fn from_certified(c: &CertifiedKeyPem) -> Result<ServerTls, TransportError> {
        Self::from_pem(&c.cert_pem, &c.key_pem)
    }

    /// The LAN API certificate that [`super::enroll_with_lan`] saved in `identity_dir`
    /// (`lan-cert.pem` with `lan-key.pem`); `None` when enrollment saved none.
    pub fn load_lan(identity_dir: &Path) -> Result<Option<ServerTls>, TransportError> {
        let cert = identity_dir.join(LAN_CERT_FILE);
        let key = identity_dir.join(LAN_KEY_FILE);
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        Self::load(&cert, &key).map(Some)
    }

    /// The DNS names and IP addresses the server's certificate names, and the end of its
    /// validity in seconds since the Unix epoch (for warnings: rustls has checked that the
    /// certificate parses).
    pub fn names_and_end(&self) -> (Vec<String>, i64) {
        server_names_of(&self.leaf).unwrap_or_default()
    }

    /// The certificate a client should trust to reach this server, PEM: the last one of
    /// the chain, which is the operator's CA for a certificate it issued and the
    /// certificate itself when it is self-signed.
    pub fn trust_pem(&self) -> &str {
        &self.trust_pem
    }
}

/// Serves `router` on `listener` until the task is dropped: HTTPS with `tls`, or plain
/// HTTP when `tls` is `None`, which is refused unless the listener is on a loopback
/// address. Handlers get the peer's address as `ConnectInfo<SocketAddr>` in both cases.
/// Each failed TLS handshake calls `on_handshake_failure` and is logged at debug level;
/// the server goes on.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<ServerTls>,
    on_handshake_failure: impl Fn() + Send + Sync + 'static,
) -> Result<(), TransportError> {
    let local = listener
        .local_addr()
        .map_err(|e| TransportError::Serve(e.to_string()))?;
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None if !local.ip().is_loopback() => {
            return Err(TransportError::PlainHttpNotLoopback(local));
        }
        None => axum::serve(listener, app).await,
        Some(tls) => {
            let listener = TlsListener::start(listener, local, tls, Arc::new(on_handshake_failure));
            // axum gives `ConnectInfo` for the address of any listener wrapped in `TapIo`;
            // the orphan rule keeps us from saying the same for `TlsListener` itself. The
            // tap is useful in its own right: server-sent events should not wait for
            // Nagle's algorithm.
            let listener = listener.tap_io(|tls: &mut TlsStream<TcpStream>| {
                let _ = tls.get_ref().0.set_nodelay(true);
            });
            axum::serve(listener, app).await
        }
    };
    result.map_err(|e| TransportError::Serve(e.to_string()))
}

/// A listener that yields connections whose TLS handshake has finished. Handshakes run in
/// tasks of their own, so a slow or silent client delays nobody else.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        local: SocketAddr,
        tls: ServerTls,
        on_failure: Arc<dyn Fn() + Send + Sync>,
    ) -> TlsListener {
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        let limit = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "Cannot accept an HTTPS connection.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Ok(Err(error)) => {
                            on_failure();
                            tracing::debug!(%remote, %error, "A TLS handshake failed.");
                        }
                        Err(_) => {
                            on_failure();
                            tracing::debug!(%remote, "A TLS handshake did not finish in time.");
                        }
                    }
                });
            }
        });
        TlsListener {
            accepted,
            local,
            acceptor: task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accepting task ended, which it does only when the listener is dropped:
            // nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use axum::extract::ConnectInfo;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::transport::pki::{Validity, self_signed_server_cert};

    /// A router whose one route answers with the peer address it was given.
    fn router() -> axum::Router {
        axum::Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        )
    }

    async fn start(
        bind: SocketAddr,
        tls: Option<ServerTls>,
    ) -> (
        SocketAddr,
        Arc<AtomicU64>,
        tokio::task::JoinHandle<Result<(), TransportError>>,
    ) {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failures = Arc::new(AtomicU64::new(0));
        let counted = failures.clone();
        let task = tokio::spawn(serve_http(listener, router(), tls, move || {
            counted.fetch_add(1, Relaxed);
        }));
        (addr, failures, task)
    }

    const GET_PEER: &[u8] = b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    /// GET /peer over TLS trusting only `trust_pem`, checking the name `name`; returns the
    /// client's own address and the whole response.
    async fn get_peer_tls(
        addr: SocketAddr,
        trust_pem: &str,
        name: &str,
    ) -> std::io::Result<(SocketAddr, String)> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(trust_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let local = tcp.local_addr()?;
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(GET_PEER).await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok((local, out))
    }

    fn self_signed(names: &[&str]) -> ServerTls {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = self_signed_server_cert(&names, Validity::days_from_now(30)).unwrap();
        ServerTls::from_certified(&c).unwrap()
    }

    #[tokio::test]
    async fn https_serves_the_router_and_handlers_see_the_peer_address() {
        let tls = self_signed(&["127.0.0.1", "localhost"]);
        let trust = tls.trust_pem().to_string();
        let (addr, failures, _task) = start("127.0.0.1:0".parse().unwrap(), Some(tls)).await;
        let (local, response) = get_peer_tls(addr, &trust, "127.0.0.1").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&local.to_string()), "{response}");
        let (_, response) = get_peer_tls(addr, &trust, "localhost").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(failures.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn failed_handshakes_are_counted_and_the_server_goes_on() {
        let tls = self_signed(&["127.0.0.1"]);
        let trust = tls.trust_pem().to_string();
        let (addr, failures, _task) = start("127.0.0.1:0".parse().unwrap(), Some(tls)).await;
        // Plain HTTP on the HTTPS port gets no HTTP answer.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(GET_PEER).await.unwrap();
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        assert!(
            !out.starts_with(b"HTTP/"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // A client that checks another name refuses the certificate.
        assert!(get_peer_tls(addr, &trust, "10.9.9.9").await.is_err());
        // A client that trusts another certificate refuses it too.
        let stranger = self_signed(&["127.0.0.1"]);
        assert!(
            get_peer_tls(addr, stranger.trust_pem(), "127.0.0.1")
                .await
                .is_err()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while failures.load(Relaxed) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failures.load(Relaxed), 3);
        let (_, response) = get_peer_tls(addr, &trust, "127.0.0.1").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    #[tokio::test]
    async fn plain_http_is_served_on_loopback_with_the_peer_address() {
        let (addr, _, _task) = start("127.0.0.1:0".parse().unwrap(), None).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(GET_PEER).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with(&local.to_string()), "{out}");
    }

    #[tokio::test]
    async fn plain_http_is_refused_off_loopback() {
        let (_, _, task) = start("0.0.0.0:0".parse().unwrap(), None).await;
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(TransportError::PlainHttpNotLoopback(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let names = vec!["localhost".to_string()];
        let a = self_signed_server_cert(&names, Validity::days_from_now(1)).unwrap();
        let b = self_signed_server_cert(&names, Validity::days_from_now(1)).unwrap();
        assert!(ServerTls::from_pem(&a.cert_pem, &b.key_pem).is_err());
        assert!(ServerTls::from_pem("", &a.key_pem).is_err());
        assert!(ServerTls::from_pem(&a.cert_pem, "").is_err());
    }
}
