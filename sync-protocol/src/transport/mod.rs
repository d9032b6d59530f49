//! The QUIC transport (feature `transport`): mutual TLS with the operator's CA, enrollment
//! by one-time token, and sync frames over a QUIC stream; and HTTPS for the HTTP APIs of
//! both sides ([`serve_http`]), the IO and TLS home that edge and hub share.
//!
//! This module moves frames and bytes and proves identities. It does not run the sync
//! protocol (the sans-IO sessions do, driven by the caller), route or authenticate HTTP
//! requests, store anything but the PEM files it is pointed at, reconnect by itself (the
//! caller loops, with `device_drivers::Backoff` for exponential delays with jitter), or
//! decide who may enroll (the hub's [`Enroller`]).
//!
//! TLS is rustls with the ring provider only, passed explicitly to every config: nothing
//! here installs or relies on a process-wide default provider.
//!
//! # Edge API
//!
//! - [`enroll`]`(hub, &token, data_dir)`: makes a key and a certificate request locally,
//!   redeems the token at the hub, and saves `edge-key.pem`, `edge-cert.pem` and
//!   `ca-cert.pem` in `data_dir`. The private key never leaves the edge.
//!   [`enroll_with_lan`]`(hub, &token, data_dir, &names)` also gets the LAN API's HTTPS
//!   certificate for `names` (its own key, made here too) and saves `lan-key.pem` and
//!   `lan-cert.pem` (certificate, then CA); [`ServerTls::load_lan`] reads them back.
//! - [`EdgeTlsConfig::load`]`(data_dir)`: those files, checked, with the identity the
//!   certificate names.
//! - [`connect`]`(&config, hub)`: a [`FrameChannel`] once the hub has accepted the
//!   certificate; a refused certificate is an `Err` saying why.
//!
//! # Hub API
//!
//! - [`HubTlsConfig::new`] from the [`OperatorCa`] and a [`RevocationList`].
//! - [`HubEndpoint::bind`] with an [`Enroller`]; [`HubEndpoint::accept`] yields each
//!   accepted sync connection as `(PeerIdentity, FrameChannel)`, the identity read from
//!   the verified certificate.
//!
//! # HTTP APIs, both sides
//!
//! - [`ServerTls`]: a certificate chain and key ([`ServerTls::load`] from files,
//!   [`ServerTls::load_lan`] from enrollment, [`ServerTls::from_certified`] from an
//!   [`OperatorCa::issue_hub_cert`] or a self-signed [`CertifiedKeyPem`] that
//!   [`CertifiedKeyPem::load_or_create_self_signed`] keeps), and
//!   [`ServerTls::trust_pem`], what a client trusts.
//! - [`serve_http`]`(listener, router, Option<ServerTls>, on_handshake_failure)`: HTTPS,
//!   or plain HTTP only on a loopback address; handlers see the peer as
//!   `ConnectInfo<SocketAddr>`; a failed handshake is counted and the server goes on.
//!
//! # On the wire
//!
//! One UDP port serves two ALPN protocols:
//!
//! - `smartpark-sync/1`: mutual TLS 1.3. The hub MUST verify the edge's certificate chain
//!   to the operator's CA, its validity period, its client-auth usage, and that its serial
//!   is not revoked; a failure is a TLS alert (bad, unknown CA, expired, revoked). The edge
//!   MUST verify the hub's certificate against the CA in its data dir, for the name
//!   [`HUB_SERVER_NAME`]. Once the hub has accepted the connection it opens a
//!   unidirectional stream and finishes it empty ("welcome"); only then does the edge
//!   open one bidirectional stream and send sync frames on it, back to back, as the wire
//!   format specifies. The hub answers on the same stream. Application close codes are
//!   [`CloseCode`]s, with a reason for people.
//! - `smartpark-enroll/1`: server authentication only. The edge MUST accept the hub's
//!   certificate only if the chain the hub sends includes a CA certificate whose SHA-256
//!   is the token's fingerprint and the hub's certificate verifies against it. The edge
//!   opens one bidirectional stream, writes the request and finishes: version `1` (u8),
//!   token (string), certificate request (bytes, DER). The hub answers and finishes:
//!   status `0`, certificate (bytes, DER), CA certificate (bytes, DER); or status `1` and a
//!   reason (string). Strings and bytes are varint length-prefixed as in the wire format.
//!   Neither message may exceed 64 KiB.
//!
//!   Version `2` asks for the LAN API's certificate as well: after the certificate
//!   request come the number of LAN names (varint, at most 16), each name (string: a DNS
//!   name or an IP address), and the request for the LAN key (bytes, DER). The hub MUST
//!   refuse names that are not DNS names or usable IP addresses, wildcards, and its own
//!   names (`hub.smartpark` and its configured names). Its answer has one more field after
//!   the CA certificate: the LAN certificate (bytes, DER; empty when it issued none), a
//!   server-authentication certificate for exactly those names. An edge sends version `1`
//!   when it asks for no LAN certificate, so it enrolls with hubs that speak only version
//!   `1`; such a hub refuses version `2` by status `1`, before the token is spent.

mod channel;
mod endpoint;
mod https;
mod pki;
mod tls;
mod token;

use thiserror::Error;

pub use channel::{ChannelCloser, FrameChannel, FrameReader};
pub use endpoint::{
    EnrollFuture, Enroller, Enrollment, EnrollmentRequest, HubEndpoint, LanRequest, Renewal,
    connect, enroll, enroll_with_lan,
};
pub use https::{ServerTls, serve_http};
pub use pki::{
    CertificateRequest, CertifiedKeyPem, EdgeKey, Fingerprint, HUB_SERVER_NAME, IssuedCertificate,
    MAX_CHAIN, MAX_SERVER_NAMES, OperatorCa, PeerIdentity, Validity, certificate_chain_from_pem,
    certificate_pem, check_server_names, is_valid_id, issuing_ca_request, self_signed_server_cert,
    server_names_of,
};
pub use tls::{
    CA_CERT_FILE, EDGE_CERT_FILE, EDGE_KEY_FILE, EdgeTlsConfig, HubTlsConfig, LAN_CERT_FILE,
    LAN_KEY_FILE, RevocationList,
};
pub use token::EnrollmentToken;

/// The ALPN protocol of sync connections.
pub const ALPN_SYNC: &[u8] = b"smartpark-sync/1";
/// The ALPN protocol of enrollment connections.
pub const ALPN_ENROLL: &[u8] = b"smartpark-enroll/1";

/// Application close codes of sync connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// The session ended normally.
    Normal = 0,
    /// The hub refused the edge (no certificate, revoked meanwhile, wrong ALPN use).
    Refused = 1,
    /// A newer connection of the same building took over.
    Replaced = 2,
    /// The hub or edge is shutting down.
    ShuttingDown = 3,
    /// The sync session ended the connection (protocol violation, idle timeout).
    SessionEnded = 4,
}

/// What went wrong in the transport. Each message is meant for the log as it is.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("certificate error: {0}")]
    Certificate(String),
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("tls configuration failed: {0}")]
    Tls(String),
    #[error("cannot open a QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The peer refused us: a TLS alert about our certificate, or an application refusal.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// We refused the peer's certificate during the handshake.
    #[error("the peer's certificate was refused: {0}")]
    PeerNotTrusted(String),
    #[error("the connection was closed by the peer: {0}")]
    ClosedByPeer(String),
    #[error("the connection was lost: {0}")]
    ConnectionLost(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("bad frame from the peer: {0}")]
    Frame(crate::DecodeError),
    #[error("stream error: {0}")]
    StreamIo(String),
    #[error("bad enrollment token: {0}")]
    BadToken(&'static str),
    #[error("enrollment refused by the hub: {0}")]
    EnrollmentRefused(String),
    #[error("bad enrollment message: {0}")]
    BadEnrollmentMessage(String),
    #[error("plain HTTP is served only on a loopback address, not on {0}")]
    PlainHttpNotLoopback(std::net::SocketAddr),
    #[error("the HTTP server stopped: {0}")]
    Serve(String),
}

impl TransportError {
    /// Whether retrying cannot help until someone acts (a refused or untrusted
    /// certificate, a refused enrollment): the caller should back off to its longest
    /// delay and say so loudly.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TransportError::Refused(_)
                | TransportError::PeerNotTrusted(_)
                | TransportError::EnrollmentRefused(_)
                | TransportError::BadToken(_)
        )
    }
}

/// The ring crypto provider, the only one this project uses.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// What a TLS alert received from the peer means for us.
fn alert_meaning(alert: u8) -> &'static str {
    match alert {
        40 => "the TLS handshake failed",
        42 => "our certificate was refused",
        43 => "our certificate type is not supported",
        44 => "our certificate is revoked",
        45 => "our certificate has expired or is not yet valid",
        46 => "our certificate was refused",
        48 => "our certificate was not issued by the peer's certificate authority",
        49 => "access denied",
        51 => "the peer could not verify our signature",
        70 => "protocol version not supported",
        80 => "the peer had an internal error",
        116 => "the peer requires a client certificate",
        120 => "no common application protocol (ALPN)",
        _ => "the TLS handshake failed",
    }
}

/// A QUIC connection error, in words, sorted into who refused whom.
pub(crate) fn describe_connection_error(e: &quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match e {
        E::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            let reason = text(&close.reason);
            if (0x100..0x200).contains(&code) {
                let meaning = alert_meaning((code - 0x100) as u8);
                if reason.is_empty() {
                    TransportError::Refused(meaning.to_string())
                } else {
                    TransportError::Refused(format!("{meaning} ({reason})"))
                }
            } else {
                TransportError::ClosedByPeer(close.to_string())
            }
        }
        E::ApplicationClosed(close) => {
            let reason = text(&close.reason);
            let code = close.error_code.into_inner();
            if code == CloseCode::Refused as u64 {
                TransportError::Refused(reason)
            } else {
                let kind = match code {
                    0 => "normal close",
                    2 => "replaced by a newer connection",
                    3 => "shutting down",
                    4 => "session ended",
                    _ => "closed",
                };
                if reason.is_empty() {
                    TransportError::ClosedByPeer(kind.to_string())
                } else {
                    TransportError::ClosedByPeer(format!("{kind}: {reason}"))
                }
            }
        }
        E::TransportError(t) => {
            let code = u64::from(t.code);
            if (0x100..0x200).contains(&code) {
                // Our own TLS stack refused the peer; rustls says why in the reason.
                TransportError::PeerNotTrusted(readable_rustls_reason(&t.reason))
            } else {
                TransportError::ConnectionLost(t.to_string())
            }
        }
        E::TimedOut => TransportError::ConnectionLost("no answer from the peer (timed out)".into()),
        E::Reset => TransportError::ConnectionLost("reset by the peer".into()),
        E::LocallyClosed => TransportError::ConnectionLost("closed by this side".into()),
        E::VersionMismatch => {
            TransportError::ConnectionLost("the peer speaks no QUIC version we do".into())
        }
        E::CidsExhausted => TransportError::ConnectionLost("connection ids exhausted".into()),
    }
}

/// rustls' debug-style certificate errors, in words.
fn readable_rustls_reason(reason: &str) -> String {
    let table = [
        (
            "UnknownIssuer",
            "it was not issued by our certificate authority",
        ),
        ("Expired", "it has expired"),
        ("NotValidYet", "it is not valid yet"),
        ("Revoked", "it is revoked"),
        ("NotValidForName", "it is not valid for the expected name"),
        ("InvalidPurpose", "it is not meant for this use"),
        ("BadSignature", "its signature is invalid"),
        ("BadEncoding", "it is malformed"),
        ("NoCertificatesPresented", "no certificate was presented"),
    ];
    for (needle, words) in table {
        if reason.contains(needle) {
            return format!("{words} ({reason})");
        }
    }
    reason.to_string()
}
