//! The operator's certificate authority and the certificates it issues: a self-signed CA,
//! hub server certificates, edge client certificates that name a park and building, and
//! HTTPS server certificates for an edge's LAN API; and self-signed HTTPS certificates for
//! an edge that is not enrolled yet.
//!
//! The CA that issues can be the operator's root itself, or an issuing CA that the root
//! certified (its key made on the hub, the root's key kept on another machine): then
//! every certificate it issues travels with the issuing CA's certificate, and edges trust
//! the root alone, so the hub's issuing CA can be replaced without touching any edge.
//!
//! It keeps no state beyond the CA's key and certificates, reads and writes only the PEM
//! files it is pointed at (private keys readable by their owner only), and decides nothing
//! about who may enroll (the hub does that).
//!
//! An edge certificate carries its identity twice: the URI subject alternative name
//! `smartpark://park/{park}/building/{building}` (authoritative) and the common name
//! `{park}/{building}` (for people reading the certificate). Serial numbers are 16 random
//! bytes, shown as 32 lowercase hex digits.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use super::TransportError;

/// The server name every hub certificate carries and every edge checks. Trust comes from
/// the operator's CA, which issues this name only to hubs, not from DNS.
pub const HUB_SERVER_NAME: &str = "hub.smartpark";

const EDGE_URI_PREFIX: &str = "smartpark://park/";

/// Ids of parks and buildings: ASCII letters, digits, `-`, `_` and `.`, at most 64 bytes,
/// the same rule as the edge node's config.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A SHA-256 digest of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (to allow for clock skew between hub and edge) for `days` days.
    pub fn days_from_now(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// Who an edge is, read from its verified certificate: never from what the edge says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub park: String,
    pub building: String,
    /// The certificate's serial number in lowercase hex.
    pub serial: String,
    /// The end of the certificate's validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl PeerIdentity {
    /// The identity an edge certificate names; `Err` when it names none or is malformed.
    pub fn from_certificate(der: &[u8]) -> Result<PeerIdentity, TransportError> {
        let bad = |reason: String| TransportError::BadCertificate(reason);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| bad(format!("cannot parse the certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("bad subject alternative names: {e}")))?
            .ok_or_else(|| bad("the certificate names no park and building".into()))?;
        let uri = san
            .value
            .general_names
            .iter()
            .find_map(|n| match n {
                GeneralName::URI(u) if u.starts_with(EDGE_URI_PREFIX) => Some(*u),
                _ => None,
            })
            .ok_or_else(|| bad("the certificate names no park and building".into()))?;
        let (park, building) = parse_edge_uri(uri)
            .ok_or_else(|| bad(format!("the certificate's identity {uri:?} is malformed")))?;
        Ok(PeerIdentity {
            park,
            building,
            serial: hex(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (serial {})",
            self.park, self.building, self.serial
        )
    }
}

fn edge_uri(park: &str, building: &str) -> String {
    format!("{EDGE_URI_PREFIX}{park}/building/{building}")
}

fn parse_edge_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix(EDGE_URI_PREFIX)?;
    let (park, building) = rest.split_once("/building/")?;
    (is_valid_id(park) && is_valid_id(building)).then(|| (park.to_string(), building.to_string()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cert_error(e: rcgen::Error) -> TransportError {
    TransportError::Certificate(e.to_string())
}

fn random_serial() -> Result<SerialNumber, TransportError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TransportError::Certificate("the system random source failed".into()))?;
    // Positive and without a leading zero byte, so that the DER integer is 16 bytes and
    // reads back as the same 32 hex digits.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Sets a certificate's validity. rcgen's time type is not re-exported, so it is reached
/// from rcgen's own date helper.
fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => epoch + d,
        Err(e) => epoch - e.duration(),
    };
    params.not_before = at(validity.not_before);
    params.not_after = at(validity.not_after);
}

/// Reads a file with an error that names it.
pub(crate) fn read_file(path: &Path) -> Result<String, TransportError> {
    std::fs::read_to_string(path).map_err(|source| TransportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file through a temporary file and a rename, so that a crash leaves the old
/// file or the new one, never half of one. `private` files are readable by the owner only.
pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TransportError> {
    let io = |source| TransportError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(contents.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Parses the first certificate of a PEM text.
pub(crate) fn cert_from_pem(
    pem: &str,
    what: &Path,
) -> Result<CertificateDer<'static>, TransportError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TransportError::BadFile {
        path: what.to_path_buf(),
        reason: format!("no certificate in it: {e}"),
    })
}

/// Parses the private key of a PEM text.
pub(crate) fn key_from_pem(
    pem: &str,
    what: &Path,
) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TransportError::BadFile {
        path: what.to_path_buf(),
        reason: format!("no private key in it: {e}"),
    })
}

/// The operator's certificate authority as a hub holds it: the CA that signs every hub and
/// edge certificate, and the root edges trust. Either the root issues itself (one file
/// holding one certificate) or an issuing CA does, whose certificate file holds the issuing
/// CA's certificate, then any between, then the root's; the key is the issuing CA's.
pub struct OperatorCa {
    /// The root: what edges keep as `ca-cert.pem` and enrollment tokens pin.
    root_der: CertificateDer<'static>,
    root_pem: String,
    /// The certificates between what this CA issues and the root, the issuer's first;
    /// empty when the root issues.
    intermediates: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
}

/// The most certificates an operator CA's file, or an issued chain, may hold.
pub const MAX_CHAIN: usize = 4;

impl fmt::Debug for OperatorCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("OperatorCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate with the private key that goes with it, both PEM.
#[derive(Clone)]
pub struct CertifiedKeyPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKeyPem").finish_non_exhaustive()
    }
}

/// An edge certificate the CA issued, and the certificate of the edge's LAN API when
/// enrollment asked for one.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub der: CertificateDer<'static>,
    /// The certificates between the issued ones and the operator's root (the issuing CA's),
    /// which go with them; empty when the root issued them.
    pub chain: Vec<CertificateDer<'static>>,
    pub identity: PeerIdentity,
    /// The HTTPS server certificate for the names of [`EnrollmentRequest::lan`]; `None`
    /// when none was asked for (or the enroller issues none).
    ///
    /// [`EnrollmentRequest::lan`]: super::EnrollmentRequest::lan
    pub lan: Option<CertificateDer<'static>>,
}

impl IssuedCertificate {
    /// The edge certificate followed by its chain, PEM.
    pub fn pem(&self) -> String {
        chain_pem(std::iter::once(&self.der).chain(&self.chain))
    }
}

/// Certificates as one PEM text, in order.
pub(crate) fn chain_pem<'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'static>>,
) -> String {
    certs
        .into_iter()
        .map(|c| pem_of("CERTIFICATE", c))
        .collect()
}

/// Every certificate of a PEM text, in order: at least one, at most [`MAX_CHAIN`].
pub(crate) fn certs_from_pem(
    pem: &str,
    what: &Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bad = |reason: String| TransportError::BadFile {
        path: what.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .take(MAX_CHAIN + 1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    match certs.len() {
        0 => Err(bad("no certificate in it".into())),
        n if n > MAX_CHAIN => Err(bad(format!("more than {MAX_CHAIN} certificates in it"))),
        _ => Ok(certs),
    }
}

/// Certificates as one byte string, DER after DER (how enrollment sends a chain).
pub(crate) fn concat_der<'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'static>>,
) -> Vec<u8> {
    certs
        .into_iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// The certificates of [`concat_der`]'s byte string: at least one, at most [`MAX_CHAIN`],
/// each one whole.
pub(crate) fn split_der(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == MAX_CHAIN {
            return Err(format!("more than {MAX_CHAIN} certificates"));
        }
        let (rest, _) = x509_parser::certificate::X509Certificate::from_der(bytes)
            .map_err(|e| format!("certificate {} does not parse: {e}", out.len() + 1))?;
        let used = bytes.len() - rest.len();
        out.push(CertificateDer::from(bytes[..used].to_vec()));
        bytes = rest;
    }
    if out.is_empty() {
        return Err("no certificate".into());
    }
    Ok(out)
}

/// The certificates of a PEM text sent in a message (a renewed certificate and its chain).
pub fn certificate_chain_from_pem(
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    certs_from_pem(pem, Path::new("(message)"))
}

/// A DER certificate as PEM text.
pub fn certificate_pem(der: &[u8]) -> String {
    pem_of("CERTIFICATE", der)
}

/// The parameters every CA certificate here shares: its name and what it may sign.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "smartpark");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A hub's issuing CA key, made where it will be used, and its certificate request for the
/// operator's root: `(key PEM, request PEM)`.
pub fn issuing_ca_request(name: &str) -> Result<(String, String), TransportError> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let csr = ca_params(&format!("smartpark issuing CA {name}"))
        .serialize_request(&key)
        .map_err(cert_error)?;
    let pem = csr.pem().map_err(cert_error)?;
    Ok((key.serialize_pem(), pem))
}

pub(crate) fn pem_of(label: &str, der: &[u8]) -> String {
    use std::fmt::Write as _;
    let b64 = super::token::base64_std(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

impl OperatorCa {
    /// A new CA with a fresh P-256 key, valid for 20 years, that issues hub and edge
    /// certificates itself (and no CA below it): a hub that keeps its CA's key.
    pub fn create(name: &str) -> Result<OperatorCa, TransportError> {
        Self::create_self_signed(&format!("smartpark operator CA {name}"), 0)
    }

    /// A new root CA with a fresh P-256 key, valid for 20 years, for a machine other than
    /// the hub's: it certifies the hubs' issuing CAs ([`OperatorCa::certify_issuing_ca`]),
    /// which issue everything else.
    pub fn create_root(name: &str) -> Result<OperatorCa, TransportError> {
        Self::create_self_signed(&format!("smartpark operator root CA {name}"), 1)
    }

    fn create_self_signed(common_name: &str, path_len: u8) -> Result<OperatorCa, TransportError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = ca_params(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        set_validity(&mut params, Validity::days_from_now(20 * 365));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(cert_error)?;
        let root_der = cert.der().clone();
        Ok(OperatorCa {
            root_pem: cert.pem(),
            root_der,
            intermediates: Vec::new(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<OperatorCa, TransportError> {
        let cert_pem = read_file(cert_path)?;
        let key_pem = read_file(key_path)?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            TransportError::Certificate(reason) | TransportError::BadFile { reason, .. } => {
                TransportError::BadFile {
                    path: cert_path.to_path_buf(),
                    reason,
                }
            }
            e => e,
        })
    }

    /// The CA from PEM texts: the issuing CA's certificate, then any certificates up to
    /// and including the root (self-signed, last), and the issuing CA's key. A chain is
    /// checked by issuing a certificate from it and verifying that against the root, so a
    /// chain that would not verify at the edges is refused here.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<OperatorCa, TransportError> {
        let bad = |reason: String| TransportError::Certificate(reason);
        let certs = certs_from_pem(cert_pem, Path::new("the CA certificate"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("bad CA key: {e}")))?;
        for (i, der) in certs.iter().enumerate() {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
                .map_err(|e| bad(format!("bad CA certificate {}: {e}", i + 1)))?;
            if !cert.is_ca() {
                return Err(bad(format!(
                    "certificate {} of the CA file is not a CA certificate",
                    i + 1
                )));
            }
            if i == 0 && cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw()
            {
                return Err(bad(
                    "the CA key does not belong to the first certificate of the CA file".into(),
                ));
            }
            if i == certs.len() - 1 && cert.subject().as_raw() != cert.issuer().as_raw() {
                return Err(bad(
                    "the last certificate of the CA file is not a root (self-signed): append the operator's root certificate".into(),
                ));
            }
        }
        let issuer = Issuer::from_ca_cert_der(&certs[0], key).map_err(cert_error)?;
        let (root_der, intermediates) = match certs.split_last() {
            Some((root, between)) => (root.clone(), between.to_vec()),
            None => return Err(bad("no certificate in the CA file".into())),
        };
        let ca = OperatorCa {
            root_pem: pem_of("CERTIFICATE", &root_der),
            root_der,
            intermediates,
            issuer,
        };
        if !ca.intermediates.is_empty() {
            let probe = EdgeKey::generate()?;
            let issued = ca.issue_edge_cert(
                &probe.certificate_request()?,
                "chain-check",
                "chain-check",
                Validity::days_from_now(1),
            )?;
            super::tls::verify_client_chain(&issued.der, &issued.chain, &ca.root_der).map_err(
                |e| {
                    bad(format!(
                        "the CA file's chain does not verify up to its root: {e}"
                    ))
                },
            )?;
        }
        Ok(ca)
    }

    /// Writes the certificates (issuer first, root last) and (owner-only) the key.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TransportError> {
        write_file(key_path, &self.issuer.key().serialize_pem(), true)?;
        write_file(
            cert_path,
            &chain_pem(self.intermediates.iter().chain([&self.root_der])),
            false,
        )
    }

    /// Loads the CA, or creates and saves a new one when neither file exists. Returns
    /// whether it was created. One file without the other is an error, not a new CA.
    pub fn load_or_create(
        cert_path: &Path,
        key_path: &Path,
        name: &str,
    ) -> Result<(OperatorCa, bool), TransportError> {
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => {
                let ca = Self::create(name)?;
                ca.save(cert_path, key_path)?;
                Ok((ca, true))
            }
            (true, true) => Ok((Self::load(cert_path, key_path)?, false)),
            (true, false) => Err(TransportError::BadFile {
                path: key_path.to_path_buf(),
                reason: "the CA certificate exists but its key does not".into(),
            }),
            (false, true) => Err(TransportError::BadFile {
                path: cert_path.to_path_buf(),
                reason: format!(
                    "the CA key exists but its certificate does not: after `smartpark hub ca-request`, have the root sign the request (`smartpark ca sign`) and put what it wrote here, with the root's certificate last (key: {})",
                    key_path.display()
                ),
            }),
        }
    }

    /// The operator's root certificate, which edges trust.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.root_pem
    }

    /// The certificates between what this CA issues and the root (empty when the root
    /// issues); they go with every certificate it issues.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Whether the key held here is the root's (rather than an issuing CA's).
    pub fn holds_root_key(&self) -> bool {
        self.intermediates.is_empty()
    }

    /// The SHA-256 of the root certificate; enrollment tokens carry it.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.root_der)
    }

    /// Certifies a hub's issuing CA from its request ([`issuing_ca_request`]): a CA
    /// certificate for the request's key that may issue end certificates only, valid
    /// `validity`. Returns the CA file for that hub: the new certificate, then this CA's
    /// chain, root last. Only a root made to certify CAs ([`OperatorCa::create_root`])
    /// can do this.
    pub fn certify_issuing_ca(
        &self,
        csr: &CertificateRequest,
        name: &str,
        validity: Validity,
    ) -> Result<String, TransportError> {
        if !self.holds_root_key() {
            return Err(TransportError::Certificate(
                "an issuing CA cannot certify another CA: sign with the operator's root".into(),
            ));
        }
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(&self.root_der)
            .map_err(|e| TransportError::Certificate(format!("bad root certificate: {e}")))?;
        if let Ok(Some(bc)) = root.basic_constraints()
            && bc.value.path_len_constraint == Some(0)
        {
            return Err(TransportError::Certificate(
                "this CA was made to issue end certificates only (path length 0); make a root for issuing CAs with `smartpark ca init`".into(),
            ));
        }
        let mut params = ca_params(&format!("smartpark issuing CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, validity);
        let cert = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(cert_error)?;
        Ok(chain_pem([cert.der(), &self.root_der]))
    }

    /// A server certificate for a hub with a fresh key. It names [`HUB_SERVER_NAME`] and
    /// `extra_names` (DNS names or IP addresses).
    pub fn issue_hub_cert(
        &self,
        extra_names: &[String],
        validity: Validity,
    ) -> Result<CertifiedKeyPem, TransportError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut names = vec![HUB_SERVER_NAME.to_string()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(cert_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "smartpark hub");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(CertifiedKeyPem {
            cert_pem: chain_pem(std::iter::once(cert.der()).chain(&self.intermediates)),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate with a fresh key for a field device, named
    /// `PARK/BUILDING/DEVICE`: the building's broker takes it as that device's account there
    /// and nowhere else.
    pub fn issue_device_cert(
        &self,
        park: &str,
        building: &str,
        device: &str,
        validity: Validity,
    ) -> Result<CertifiedKeyPem, TransportError> {
        if !is_valid_id(park) || !is_valid_id(building) || !is_valid_id(device) {
            return Err(TransportError::Certificate(format!(
                "{park:?}/{building:?}/{device:?} is not a valid park, building and device (letters, digits, '-', '_', '.')"
            )));
        }
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{park}/{building}/{device}"));
        dn.push(DnType::OrganizationName, "smartpark device");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(CertifiedKeyPem {
            cert_pem: chain_pem(std::iter::once(cert.der()).chain(&self.intermediates)),
            key_pem: key.serialize_pem(),
        })
    }

    /// An edge certificate for the public key of a certificate signing request. Only the
    /// key is taken from the request (its signature proves the edge holds the private key);
    /// names, usages and validity are the CA's choice.
    pub fn issue_edge_cert(
        &self,
        csr: &CertificateRequest,
        park: &str,
        building: &str,
        validity: Validity,
    ) -> Result<IssuedCertificate, TransportError> {
        if !is_valid_id(park) || !is_valid_id(building) {
            return Err(TransportError::Certificate(format!(
                "{park:?}/{building:?} is not a valid park and building (letters, digits, '-', '_', '.')"
            )));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{park}/{building}"));
        dn.push(DnType::OrganizationName, "smartpark edge");
        params.distinguished_name = dn;
        let uri =
            rcgen::string::Ia5String::try_from(edge_uri(park, building)).map_err(cert_error)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, validity);
        let cert = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(cert_error)?;
        let der = cert.der().clone();
        let identity = PeerIdentity::from_certificate(&der)?;
        Ok(IssuedCertificate {
            der,
            chain: self.intermediates.clone(),
            identity,
            lan: None,
        })
    }

    /// What an enrollment gets: the edge certificate of [`OperatorCa::issue_edge_cert`]
    /// and, when the request asks for one, the certificate of the edge's LAN API from
    /// [`OperatorCa::issue_lan_cert`], both with `validity`.
    pub fn issue_for_enrollment(
        &self,
        request: &super::EnrollmentRequest,
        park: &str,
        building: &str,
        validity: Validity,
    ) -> Result<IssuedCertificate, TransportError> {
        let mut issued = self.issue_edge_cert(&request.csr, park, building, validity)?;
        if let Some(lan) = &request.lan {
            issued.lan = Some(self.issue_lan_cert(&lan.csr, park, building, &lan.names, validity)?);
        }
        Ok(issued)
    }

    /// An HTTPS server certificate for an edge's LAN API, for the public key of `csr` (the
    /// edge made the key and keeps it), naming `names` (DNS names or IP addresses, checked
    /// with [`check_server_names`]). It is for server authentication only: it names no
    /// park and building and cannot stand in for the edge's sync certificate, nor can the
    /// sync certificate serve HTTPS.
    pub fn issue_lan_cert(
        &self,
        csr: &CertificateRequest,
        park: &str,
        building: &str,
        names: &[String],
        validity: Validity,
    ) -> Result<CertificateDer<'static>, TransportError> {
        let mut params = server_params(names, &format!("{park}/{building} LAN API"), validity)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(cert_error)?;
        Ok(cert.der().clone())
    }
}

/// The most names one server certificate may carry.
pub const MAX_SERVER_NAMES: usize = 16;

/// Checks and normalises the names of a server certificate: each a DNS name (no
/// wildcards) or an IP address that a client can connect to, at most
/// [`MAX_SERVER_NAMES`], never [`HUB_SERVER_NAME`] (a certificate with that name and
/// server authentication would let its holder pose as the hub to edges). Returns them
/// lowercase, IP addresses in their canonical form, without duplicates, in order.
pub fn check_server_names(names: &[String]) -> Result<Vec<String>, TransportError> {
    let bad = |reason: String| TransportError::Certificate(reason);
    if names.is_empty() {
        return Err(bad("a server certificate needs at least one name".into()));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let normal = match name.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                return Err(bad(format!(
                    "{name} is not an address a client can connect to"
                )));
            }
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let lower = name.to_ascii_lowercase();
                if rustls::pki_types::DnsName::try_from(lower.as_str()).is_err() {
                    return Err(bad(format!(
                        "{name:?} is neither a DNS name nor an IP address"
                    )));
                }
                if lower.trim_end_matches('.') == HUB_SERVER_NAME {
                    return Err(bad(format!("{HUB_SERVER_NAME} is reserved for the hub")));
                }
                lower
            }
        };
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    if out.len() > MAX_SERVER_NAMES {
        return Err(bad(format!(
            "{} names; a server certificate carries at most {MAX_SERVER_NAMES}",
            out.len()
        )));
    }
    Ok(out)
}

/// The parameters every HTTPS server certificate shares: checked names, server
/// authentication only, a random serial.
fn server_params(
    names: &[String],
    common_name: &str,
    validity: Validity,
) -> Result<CertificateParams, TransportError> {
    let names = check_server_names(names)?;
    let mut params = CertificateParams::new(names).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "smartpark");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, validity);
    Ok(params)
}

/// A self-signed HTTPS server certificate with a fresh P-256 key, naming `names` (see
/// [`check_server_names`]): what an edge serves before it is enrolled. A client trusts it
/// by pinning the certificate itself.
pub fn self_signed_server_cert(
    names: &[String],
    validity: Validity,
) -> Result<CertifiedKeyPem, TransportError> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let params = server_params(names, "smartpark self-signed", validity)?;
    let cert = params.self_signed(&key).map_err(cert_error)?;
    Ok(CertifiedKeyPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl CertifiedKeyPem {
    /// Writes the key (readable by the owner only) and the certificate, each through a
    /// temporary file and a rename.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TransportError> {
        write_file(key_path, &self.key_pem, true)?;
        write_file(cert_path, &self.cert_pem, false)
    }

    /// Reads a certificate (chain) and its key; checks only that both hold PEM of the right
    /// kind (whether they belong together is checked when a TLS config is built).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKeyPem, TransportError> {
        let cert_pem = read_file(cert_path)?;
        let key_pem = read_file(key_path)?;
        cert_from_pem(&cert_pem, cert_path)?;
        key_from_pem(&key_pem, key_path)?;
        Ok(CertifiedKeyPem { cert_pem, key_pem })
    }

    /// The self-signed server certificate at these paths when it names every one of
    /// `names` and stays valid for at least 30 more days; otherwise a new one, valid
    /// `days`, saved there. Returns whether it was created. Reusing it across restarts
    /// keeps clients that pinned it working.
    pub fn load_or_create_self_signed(
        cert_path: &Path,
        key_path: &Path,
        names: &[String],
        days: u32,
    ) -> Result<(CertifiedKeyPem, bool), TransportError> {
        let wanted = check_server_names(names)?;
        if cert_path.exists() && key_path.exists() {
            match CertifiedKeyPem::load(cert_path, key_path) {
                Ok(existing) => match existing.reusable_for(&wanted) {
                    Ok(()) => return Ok((existing, false)),
                    Err(reason) => tracing::info!(
                        cert = %cert_path.display(),
                        %reason,
                        "Replacing the self-signed certificate."
                    ),
                },
                Err(e) => tracing::warn!(
                    error = %e,
                    "Replacing an unreadable self-signed certificate."
                ),
            }
        }
        let created = self_signed_server_cert(&wanted, Validity::days_from_now(days))?;
        created.save(cert_path, key_path)?;
        Ok((created, true))
    }

    /// `Ok` when the first certificate names all of `wanted` and is valid for 30 more days.
    fn reusable_for(&self, wanted: &[String]) -> Result<(), String> {
        let der =
            cert_from_pem(&self.cert_pem, Path::new("certificate")).map_err(|e| e.to_string())?;
        let (names, not_after) = server_names_of(&der)?;
        if let Some(missing) = wanted.iter().find(|w| !names.contains(w)) {
            return Err(format!("it does not name {missing}"));
        }
        let soon = SystemTime::now() + Duration::from_secs(30 * 86_400);
        let soon = soon
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if not_after < soon {
            return Err("it expires within 30 days".into());
        }
        Ok(())
    }
}

/// The DNS names (lowercase) and IP addresses a certificate names, and the end of its
/// validity in seconds since the Unix epoch.
pub fn server_names_of(der: &[u8]) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// A certificate signing request whose signature has been checked.
pub struct CertificateRequest {
    params: CertificateSigningRequestParams,
    der: Vec<u8>,
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("bytes", &self.der.len())
            .finish()
    }
}

impl CertificateRequest {
    /// Parses a DER request and checks its signature.
    pub fn from_der(der: &[u8]) -> Result<CertificateRequest, TransportError> {
        let params =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
                .map_err(|e| {
                    TransportError::Certificate(format!("bad certificate request: {e}"))
                })?;
        Ok(CertificateRequest {
            params,
            der: der.to_vec(),
        })
    }

    /// Parses a PEM request (`CERTIFICATE REQUEST`) and checks its signature.
    pub fn from_pem(pem: &str) -> Result<CertificateRequest, TransportError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            TransportError::Certificate(format!("no certificate request in it: {e}"))
        })?;
        Self::from_der(der.as_ref())
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// An edge's private key, made on the edge; it never leaves it.
pub struct EdgeKey {
    key: KeyPair,
}

impl fmt::Debug for EdgeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeKey").finish_non_exhaustive()
    }
}

impl EdgeKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<EdgeKey, TransportError> {
        Ok(EdgeKey {
            key: KeyPair::generate().map_err(cert_error)?,
        })
    }

    /// A certificate signing request for this key (the hub ignores the names in it).
    pub fn certificate_request(&self) -> Result<CertificateRequest, TransportError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "smartpark edge");
        params.distinguished_name = dn;
        let csr = params.serialize_request(&self.key).map_err(cert_error)?;
        CertificateRequest::from_der(csr.der())
    }

    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Whether `cert_der` certifies this key.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        x509_parser::certificate::X509Certificate::from_der(cert_der).is_ok_and(|(_, c)| {
            c.public_key().subject_public_key.data.as_ref() == self.key.public_key_raw()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_certificate_names_its_park_and_building_and_only_the_key_comes_from_the_edge() {
        let ca = OperatorCa::create("test").unwrap();
        let key = EdgeKey::generate().unwrap();
        let csr = key.certificate_request().unwrap();
        let issued = ca
            .issue_edge_cert(&csr, "north", "b-1", Validity::days_from_now(30))
            .unwrap();
        assert_eq!(issued.identity.park, "north");
        assert_eq!(issued.identity.building, "b-1");
        assert_eq!(issued.identity.serial.len(), 32);
        assert!(key.matches(&issued.der));
        assert!(!EdgeKey::generate().unwrap().matches(&issued.der));
    }

    #[test]
    fn a_ca_survives_a_round_trip_through_its_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let (ca, created) = OperatorCa::load_or_create(&cert, &key, "op").unwrap();
        assert!(created);
        let (again, created) = OperatorCa::load_or_create(&cert, &key, "op").unwrap();
        assert!(!created);
        assert_eq!(ca.fingerprint(), again.fingerprint());
        std::fs::remove_file(&key).unwrap();
        assert!(OperatorCa::load_or_create(&cert, &key, "op").is_err());
    }

    #[test]
    fn a_lan_certificate_names_its_addresses_for_server_authentication_only() {
        let ca = OperatorCa::create("test").unwrap();
        let key = EdgeKey::generate().unwrap();
        let names = vec!["10.1.2.3".to_string(), "Edge-B1.example".to_string()];
        let cert = ca
            .issue_lan_cert(
                &key.certificate_request().unwrap(),
                "north",
                "b-1",
                &names,
                Validity::days_from_now(30),
            )
            .unwrap();
        assert!(key.matches(&cert));
        let wanted = vec!["10.1.2.3".to_string(), "edge-b1.example".to_string()];
        super::super::tls::verify_lan_cert(&cert, &[], ca.cert_der(), &wanted).unwrap();
        let (named, _) = server_names_of(&cert).unwrap();
        assert_eq!(named, wanted);
        let other =
            super::super::tls::verify_lan_cert(&cert, &[], ca.cert_der(), &["10.1.2.4".into()]);
        assert!(other.is_err());
        // It cannot stand in for the edge's sync certificate.
        assert!(super::super::tls::verify_client_chain(&cert, &[], ca.cert_der()).is_err());
        assert!(PeerIdentity::from_certificate(&cert).is_err());
        // Nor can the sync certificate serve HTTPS.
        let edge = ca
            .issue_edge_cert(
                &key.certificate_request().unwrap(),
                "north",
                "b-1",
                Validity::days_from_now(30),
            )
            .unwrap();
        let as_server =
            super::super::tls::verify_lan_cert(&edge.der, &[], ca.cert_der(), &["10.1.2.3".into()]);
        assert!(as_server.is_err());
    }

    #[test]
    fn server_names_are_normalised_and_unusable_ones_refused() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_server_names(&names(&["Edge.LOCAL", "edge.local", "::1", "192.168.1.20"]))
                .unwrap(),
            names(&["edge.local", "::1", "192.168.1.20"])
        );
        for bad in [
            "hub.smartpark",
            "HUB.smartpark.",
            "*.example.com",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "",
            "a b",
            "http://x",
        ] {
            assert!(check_server_names(&names(&[bad])).is_err(), "{bad:?}");
        }
        assert!(check_server_names(&[]).is_err());
        let many: Vec<String> = (0..=MAX_SERVER_NAMES)
            .map(|i| format!("e{i}.local"))
            .collect();
        assert!(check_server_names(&many).is_err());
    }

    #[test]
    fn a_self_signed_certificate_is_kept_until_it_lacks_a_wanted_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("tls/cert.pem"),
            dir.path().join("tls/key.pem"),
        );
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (first, created) =
            CertifiedKeyPem::load_or_create_self_signed(&cert, &key, &names, 365).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the key must be readable by its owner only"
            );
        }
        let (again, created) =
            CertifiedKeyPem::load_or_create_self_signed(&cert, &key, &names[..1], 365).unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem, first.cert_pem);
        let more = vec!["localhost".to_string(), "10.0.0.7".to_string()];
        let (other, created) =
            CertifiedKeyPem::load_or_create_self_signed(&cert, &key, &more, 365).unwrap();
        assert!(created);
        assert_ne!(other.cert_pem, first.cert_pem);
        // One that expires within 30 days is replaced too.
        let (soon_cert, soon_key) = (dir.path().join("soon.pem"), dir.path().join("soon.key"));
        for _ in 0..2 {
            let (_, created) =
                CertifiedKeyPem::load_or_create_self_signed(&soon_cert, &soon_key, &more, 20)
                    .unwrap();
            assert!(created);
        }
    }

    #[test]
    fn ids_that_would_break_the_identity_uri_are_refused() {
        let ca = OperatorCa::create("test").unwrap();
        let csr = EdgeKey::generate().unwrap().certificate_request().unwrap();
        for (park, building) in [("a/b", "c"), ("a", ""), ("a", "b c")] {
            assert!(
                ca.issue_edge_cert(&csr, park, building, Validity::days_from_now(1))
                    .is_err()
            );
        }
        assert_eq!(parse_edge_uri("smartpark://park/a/building/b/c"), None);
    }

    /// A root made on one machine certifies the issuing CA a hub made on another from its
    /// request; the hub's CA file holds no root key, and what it issues verifies against
    /// the root alone once its chain goes with it.
    #[test]
    fn an_issuing_ca_certified_by_an_offline_root_issues_certificates_that_verify_against_the_root()
    {
        let root = OperatorCa::create_root("op").unwrap();
        let (key_pem, request_pem) = issuing_ca_request("op").unwrap();
        let csr = CertificateRequest::from_pem(&request_pem).unwrap();
        let file = root
            .certify_issuing_ca(&csr, "hub-1", Validity::days_from_now(365))
            .unwrap();
        let hub_ca = OperatorCa::from_pem(&file, &key_pem).unwrap();
        assert!(!hub_ca.holds_root_key());
        assert_eq!(
            hub_ca.fingerprint(),
            root.fingerprint(),
            "tokens pin the root"
        );
        assert_eq!(hub_ca.cert_der(), root.cert_der());
        assert_eq!(hub_ca.chain().len(), 1);

        let key = EdgeKey::generate().unwrap();
        let issued = hub_ca
            .issue_edge_cert(
                &key.certificate_request().unwrap(),
                "north",
                "b-1",
                Validity::days_from_now(30),
            )
            .unwrap();
        assert_eq!(issued.chain, hub_ca.chain());
        super::super::tls::verify_client_chain(&issued.der, &issued.chain, root.cert_der())
            .unwrap();
        assert!(
            super::super::tls::verify_client_chain(&issued.der, &[], root.cert_der()).is_err(),
            "without the issuing CA's certificate it does not verify"
        );
        // The PEM of an issued certificate carries its chain; a round trip keeps it.
        assert_eq!(
            certs_from_pem(&issued.pem(), Path::new("x")).unwrap().len(),
            2
        );
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        hub_ca.save(&c, &k).unwrap();
        let again = OperatorCa::load(&c, &k).unwrap();
        assert_eq!(again.chain(), hub_ca.chain());
        assert_eq!(again.fingerprint(), root.fingerprint());
        // Enrollment sends a chain DER after DER.
        let bytes = concat_der(std::iter::once(&issued.der).chain(&issued.chain));
        assert_eq!(
            split_der(&bytes).unwrap(),
            [issued.der.clone(), issued.chain[0].clone()]
        );
        assert!(split_der(&bytes[..bytes.len() - 1]).is_err());
        assert!(split_der(&[]).is_err());
    }

    #[test]
    fn a_ca_file_that_is_not_a_chain_up_to_a_root_is_refused_with_the_reason() {
        let root = OperatorCa::create_root("op").unwrap();
        let (key_pem, request_pem) = issuing_ca_request("op").unwrap();
        let csr = CertificateRequest::from_pem(&request_pem).unwrap();
        let file = root
            .certify_issuing_ca(&csr, "hub-1", Validity::days_from_now(365))
            .unwrap();
        let certs = certs_from_pem(&file, Path::new("x")).unwrap();
        // Without the root last.
        let err = OperatorCa::from_pem(&pem_of("CERTIFICATE", &certs[0]), &key_pem).unwrap_err();
        assert!(err.to_string().contains("not a root"), "{err}");
        // With another root.
        let other = OperatorCa::create_root("other").unwrap();
        let wrong = pem_of("CERTIFICATE", &certs[0]) + other.cert_pem();
        let err = OperatorCa::from_pem(&wrong, &key_pem).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // With the root's key in place of the issuing CA's.
        let root_key = root.issuer.key().serialize_pem();
        let err = OperatorCa::from_pem(&file, &root_key).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        // A CA made to issue end certificates only certifies no CA, and an issuing CA
        // certifies none either.
        let flat = OperatorCa::create("flat").unwrap();
        let err = flat
            .certify_issuing_ca(&csr, "hub", Validity::days_from_now(1))
            .unwrap_err();
        assert!(err.to_string().contains("path length 0"), "{err}");
        let hub_ca = OperatorCa::from_pem(&file, &key_pem).unwrap();
        assert!(
            hub_ca
                .certify_issuing_ca(&csr, "hub", Validity::days_from_now(1))
                .is_err()
        );
    }
}
