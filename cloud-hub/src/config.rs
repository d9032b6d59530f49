//! The hub's config file: TOML with unknown keys refused, checked into [`HubSettings`]
//! with errors that name the file, the line, the key and the reason.
//!
//! The default config is embedded ([`DEFAULT_CONFIG`]) and printed by `smartpark hub
//! generate-config`; relative paths are relative to the file's own folder. Parsing reuses
//! `device_drivers::config`, which is pure parsing shared by every smartpark config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use device_drivers::config::{ConfigError, parse_toml, read_text};
use serde::Deserialize;

/// The config that `smartpark hub generate-config` prints.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// `[notifications]`: email through an SMTP server, or `print = true` (the demo).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSection {
    #[serde(default)]
    pub print: bool,
    pub smtp_host: Option<String>,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// `implicit` (SMTPS, port 465), `starttls` (587) or `none` (a relay on this host).
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The sender, such as `园区财务 <finance@park.example.com>`.
    pub from: Option<String>,
}

fn default_smtp_port() -> u16 {
    465
}

fn default_smtp_tls() -> String {
    "implicit".into()
}

/// `[payments]`: the merchant account at the online payment provider (WeChat Pay's API v2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    /// The provider's API, such as `https://api.mch.weixin.qq.com`.
    pub url: String,
    pub app_id: String,
    pub mch_id: String,
    /// The merchant's API key, alone in a file (chmod 600).
    pub key_file: PathBuf,
    /// Where the provider sends notifications (the hub's public address); the hub's own
    /// listening address when left out.
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub hub: HubSection,
    pub quic: QuicSection,
    pub http: HttpSection,
    pub ca: CaSection,
    #[serde(default)]
    pub enrollment: EnrollmentSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub documents: DocumentsSection,
    pub influx: Option<InfluxSection>,
    /// The online payment provider's merchant account.
    pub payments: Option<PaymentsSection>,
    /// How enterprises are told of bills, payments and contracts' ends.
    pub notifications: Option<NotificationsSection>,
    #[serde(default)]
    pub database: DatabaseSection,
}

/// Where the hub keeps its data: SQLite in `data_dir` unless a PostgreSQL server is named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgresql://user@host:port/database` (a password belongs in `url_file`).
    pub url: Option<String>,
    /// A file holding the connection string, kept out of the config (0600).
    pub url_file: Option<PathBuf>,
}

/// Telemetry to an InfluxDB v2 write API (InfluxDB 2.x, or VictoriaMetrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSection {
    pub url: String,
    #[serde(default = "default_influx_name")]
    pub org: String,
    #[serde(default = "default_influx_bucket")]
    pub bucket: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_influx_name")]
    pub measurement: String,
    #[serde(default = "default_influx_batch")]
    pub batch_samples: usize,
}

fn default_influx_name() -> String {
    "smartpark".into()
}

fn default_influx_bucket() -> String {
    "telemetry".into()
}

fn default_influx_batch() -> usize {
    5000
}

/// The park documents the hub starts from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsSection {
    /// A folder with one folder per park, each holding any of `directory.automerge`,
    /// `parking.automerge` and `building-ID.automerge`, merged into the hub's documents at
    /// every start (merging the same file again changes nothing).
    pub seed_dir: Option<PathBuf>,
    /// Each park's credential key file (the one its edges read), by park id: the hub
    /// digests the card numbers, QR values and PINs it is given with it.
    #[serde(default)]
    pub credential_keys: std::collections::BTreeMap<String, PathBuf>,
}

/// How long the hub keeps what is personal data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Access and parking logs uploaded by the edges.
    #[serde(default = "default_log_days")]
    pub log_days: u32,
}

fn default_log_days() -> u32 {
    180
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            log_days: default_log_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    pub operator: String,
    pub data_dir: PathBuf,
    /// The key that seals personal data and second-factor secrets in the database; kept
    /// outside it. Created (0600) on first start when missing.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
}

fn default_key_file() -> PathBuf {
    PathBuf::from("secrets/hub.key")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicSection {
    pub listen: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: String,
    /// Plain HTTP instead of HTTPS: refused unless `listen` is a loopback address.
    #[serde(default)]
    pub plain_http: bool,
    /// The HTTPS certificate (chain, PEM) and its key, from files.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The hub issues its HTTPS certificate itself from the operator's CA.
    #[serde(default)]
    pub issue_from_ca: bool,
    /// DNS names the API is reached by; IP addresses and `localhost` always work.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins besides the API's own whose pages may write.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u32,
    #[serde(default = "default_session_absolute_hours")]
    pub session_absolute_hours: u32,
}

fn default_session_idle_minutes() -> u32 {
    30
}

fn default_session_absolute_hours() -> u32 {
    12
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSection {
    #[serde(default = "default_token_ttl_hours")]
    pub token_ttl_hours: u32,
    #[serde(default = "default_edge_cert_days")]
    pub edge_cert_days: u32,
    /// An edge whose certificate ends within this many days is given a new one over its
    /// sync connection; a third of `edge_cert_days`, at most 30, when left out.
    pub renew_before_days: Option<u32>,
}

fn default_token_ttl_hours() -> u32 {
    24
}

fn default_edge_cert_days() -> u32 {
    365
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        EnrollmentSection {
            token_ttl_hours: default_token_ttl_hours(),
            edge_cert_days: default_edge_cert_days(),
            renew_before_days: None,
        }
    }
}

/// How the HTTP API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP, on a loopback address only.
    Plain,
    /// HTTPS with a certificate chain and key from these files.
    Files { cert: PathBuf, key: PathBuf },
    /// HTTPS with a certificate the hub issues itself from the operator's CA at every
    /// start, naming `server_names` and the listen address when it is a specific IP.
    IssueFromCa,
}

/// A checked config: what [`crate::Hub::start`] runs.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub operator: String,
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub server_names: Vec<String>,
    pub http_listen: SocketAddr,
    pub http_tls: HttpTls,
    /// How the API authenticates its callers.
    pub auth: accounts::AuthSettings,
    /// The key file of personal data and second-factor secrets.
    pub key_file: PathBuf,
    /// How long access and parking logs are kept, in days.
    pub log_retention_days: u32,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub token_ttl: Duration,
    pub edge_cert_days: u32,
    /// Edges whose certificate ends sooner than this are given a new one when they connect.
    pub renew_before: Duration,
    /// Park documents merged in at start (`[documents] seed_dir`).
    pub documents_seed_dir: Option<PathBuf>,
    /// Each park's credential key file, by park id (`[documents.credential_keys]`).
    pub credential_keys: std::collections::BTreeMap<String, PathBuf>,
    /// Where telemetry goes besides the hub's own store (`[influx]`).
    pub influx: Option<crate::influx::InfluxSettings>,
    /// The hub's database (`[database]`): SQLite in `data_dir` by default.
    pub database: park_db::Target,
    /// The online payment provider (`[payments]`).
    pub payments: Option<crate::payments::ProviderSettings>,
    /// How notifications leave the hub (`[notifications]`); none are sent without it.
    pub notifications: Option<crate::notify::ChannelSettings>,
}

impl HubSettings {
    /// Reads and checks a config file.
    pub fn load(file: &Path) -> Result<HubSettings, ConfigError> {
        let text = read_text(file)?;
        Self::parse(file, &text)
    }

    /// Checks a config's text; `file` names it in errors and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<HubSettings, ConfigError> {
        let config: HubConfig = parse_toml(file, text)?;
        let invalid = |key: &str, reason: String| ConfigError::invalid(file, text, key, reason);
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse().map_err(|_| {
                let mut e = invalid(key, format!("{v:?} is not an address like 0.0.0.0:4433"));
                // Both sections have a `listen` key; the value itself may be unambiguous.
                e.line = e.line.or_else(|| line_of_value(text, v));
                e
            })
        };
        if config.hub.operator.trim().is_empty() {
            return Err(invalid("hub.operator", "must not be empty".into()));
        }
        let e = &config.enrollment;
        if e.token_ttl_hours == 0 || e.token_ttl_hours > 24 * 30 {
            return Err(invalid(
                "enrollment.token_ttl_hours",
                "must be between 1 and 720 hours".into(),
            ));
        }
        if e.edge_cert_days == 0 || e.edge_cert_days > 3650 {
            return Err(invalid(
                "enrollment.edge_cert_days",
                "must be between 1 and 3650 days".into(),
            ));
        }
        let renew_before_days = e
            .renew_before_days
            .unwrap_or_else(|| (e.edge_cert_days / 3).clamp(1, 30));
        if renew_before_days == 0 || renew_before_days >= e.edge_cert_days {
            return Err(invalid(
                "enrollment.renew_before_days",
                format!(
                    "must be at least 1 and less than edge_cert_days ({})",
                    e.edge_cert_days
                ),
            ));
        }
        if config.retention.log_days == 0 || config.retention.log_days > 3650 {
            return Err(invalid(
                "retention.log_days",
                "must be between 1 and 3650".into(),
            ));
        }
        let influx = match &config.influx {
            None => None,
            Some(i) => {
                let scheme_ok = i.url.starts_with("http://") || i.url.starts_with("https://");
                if !scheme_ok || i.url.contains(['?', '#', ' ']) {
                    return Err(invalid(
                        "influx.url",
                        format!("{:?} is not a base URL like http://127.0.0.1:8086", i.url),
                    ));
                }
                if i.batch_samples == 0 || i.batch_samples > 100_000 {
                    return Err(invalid(
                        "influx.batch_samples",
                        "must be between 1 and 100000".into(),
                    ));
                }
                let measurement_ok = !i.measurement.is_empty()
                    && i.measurement
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !measurement_ok {
                    return Err(invalid(
                        "influx.measurement",
                        "must be letters, digits and underscores".into(),
                    ));
                }
                if i.org.trim().is_empty() || i.bucket.trim().is_empty() {
                    return Err(invalid(
                        "influx.bucket",
                        "org and bucket must not be empty".into(),
                    ));
                }
                Some(crate::influx::InfluxSettings {
                    url: i.url.clone(),
                    org: i.org.clone(),
                    bucket: i.bucket.clone(),
                    token_file: i.token_file.as_deref().map(resolve),
                    ca_file: i.ca_file.as_deref().map(resolve),
                    measurement: i.measurement.clone(),
                    batch_samples: i.batch_samples,
                })
            }
        };
        let data_dir = resolve(&config.hub.data_dir);
        let database = match (&config.database.url, &config.database.url_file) {
            (None, None) => park_db::Target::Sqlite(data_dir.join("hub.sqlite")),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "database.url_file",
                    "give url or url_file, not both".into(),
                ));
            }
            (url, file) => {
                let url = match (url, file) {
                    (Some(u), _) => u.trim().to_string(),
                    (None, Some(f)) => std::fs::read_to_string(resolve(f))
                        .map_err(|e| {
                            invalid(
                                "database.url_file",
                                format!("cannot read {}: {e}", resolve(f).display()),
                            )
                        })?
                        .trim()
                        .to_string(),
                    (None, None) => unreachable!("matched above"),
                };
                match park_db::Target::parse(&url) {
                    t @ park_db::Target::Postgres(_) => t,
                    park_db::Target::Sqlite(_) => {
                        return Err(invalid(
                            if file.is_some() { "database.url_file" } else { "database.url" },
                            "must be a postgresql:// connection string (SQLite is the default and needs none)".into(),
                        ));
                    }
                }
            }
        };
        let http_listen = addr("http.listen", &config.http.listen)?;
        let http_tls = http_tls(&config.http, http_listen, file, text, &resolve)?;
        let h = &config.http;
        let auth = accounts::AuthSettings::checked(
            h.session_idle_minutes,
            h.session_absolute_hours,
            &h.allowed_hosts,
            &h.allowed_origins,
            // Over HTTPS the session cookie must never travel in clear.
            http_tls != HttpTls::Plain,
        )
        .map_err(|(key, reason)| invalid(&format!("http.{key}"), reason))?;
        let payments = match &config.payments {
            None => None,
            Some(p) => {
                let base_url = |v: &str| {
                    (v.starts_with("http://") || v.starts_with("https://"))
                        && !v.contains(['?', '#', ' '])
                };
                if !base_url(&p.url) {
                    return Err(invalid(
                        "payments.url",
                        format!(
                            "{:?} is not a base URL like https://api.mch.weixin.qq.com",
                            p.url
                        ),
                    ));
                }
                if let Some(n) = &p.notify_url
                    && !base_url(n)
                {
                    return Err(invalid(
                        "payments.notify_url",
                        format!(
                            "{n:?} is not a URL like https://hub.example.com/api/v1/payment-notices/wechat"
                        ),
                    ));
                }
                if p.app_id.trim().is_empty() || p.mch_id.trim().is_empty() {
                    return Err(invalid(
                        "payments.mch_id",
                        "app_id and mch_id must not be empty".into(),
                    ));
                }
                Some(crate::payments::ProviderSettings {
                    url: p.url.clone(),
                    app_id: p.app_id.clone(),
                    mch_id: p.mch_id.clone(),
                    key_file: resolve(&p.key_file),
                    notify_url: p.notify_url.clone(),
                })
            }
        };
        let notifications = match &config.notifications {
            None => None,
            Some(n) if n.print => Some(crate::notify::ChannelSettings::Print),
            Some(n) => {
                let Some(host) = n.smtp_host.clone().filter(|h| !h.trim().is_empty()) else {
                    return Err(invalid(
                        "notifications.smtp_host",
                        "name the SMTP server, or set print = true".into(),
                    ));
                };
                if !["implicit", "starttls", "none"].contains(&n.tls.as_str()) {
                    return Err(invalid(
                        "notifications.tls",
                        format!("{:?} is not implicit, starttls or none", n.tls),
                    ));
                }
                let Some(from) = n.from.clone().filter(|f| f.contains('@')) else {
                    return Err(invalid(
                        "notifications.from",
                        "the sender's address, such as \"Park <finance@park.example.com>\"".into(),
                    ));
                };
                Some(crate::notify::ChannelSettings::Smtp {
                    host,
                    port: n.smtp_port,
                    tls: n.tls.clone(),
                    username: n.username.clone(),
                    password_file: n.password_file.as_deref().map(resolve),
                    from,
                })
            }
        };
        Ok(HubSettings {
            operator: config.hub.operator.clone(),
            data_dir,
            quic_listen: addr("quic.listen", &config.quic.listen)?,
            server_names: config.quic.server_names.clone(),
            http_listen,
            http_tls,
            auth,
            key_file: resolve(&config.hub.key_file),
            log_retention_days: config.retention.log_days,
            ca_cert: resolve(&config.ca.cert),
            ca_key: resolve(&config.ca.key),
            token_ttl: Duration::from_secs(u64::from(e.token_ttl_hours) * 3600),
            edge_cert_days: e.edge_cert_days,
            renew_before: Duration::from_secs(u64::from(renew_before_days) * 86_400),
            documents_seed_dir: config.documents.seed_dir.as_deref().map(resolve),
            credential_keys: config
                .documents
                .credential_keys
                .iter()
                .map(|(park, file)| (park.clone(), resolve(file)))
                .collect(),
            influx,
            database,
            payments,
            notifications,
        })
    }

    /// Settings for tests and the demo: everything under `dir`, ports picked by the system,
    /// plain HTTP on loopback.
    pub fn for_dir(dir: &Path) -> HubSettings {
        HubSettings {
            operator: "test".into(),
            data_dir: dir.join("hub"),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_names: Vec::new(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_tls: HttpTls::Plain,
            auth: accounts::AuthSettings::default(),
            key_file: dir.join("secrets").join("hub.key"),
            log_retention_days: 180,
            ca_cert: dir.join("ca").join("ca-cert.pem"),
            ca_key: dir.join("ca").join("ca-key.pem"),
            token_ttl: Duration::from_secs(24 * 3600),
            edge_cert_days: 365,
            renew_before: Duration::from_secs(30 * 86_400),
            documents_seed_dir: None,
            credential_keys: Default::default(),
            influx: None,
            database: park_db::Target::Sqlite(dir.join("hub").join("hub.sqlite")),
            payments: None,
            notifications: None,
        }
    }

    /// Whether the HTTP API is served over TLS (cookies get the `Secure` flag).
    pub fn http_is_tls(&self) -> bool {
        self.http_tls != HttpTls::Plain
    }
}

/// The `[http]` table's choice of plain HTTP or a certificate, checked: exactly one
/// source of certificate, and plain HTTP only on loopback.
fn http_tls(
    http: &HttpSection,
    listen: SocketAddr,
    file: &Path,
    text: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<HttpTls, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::invalid(file, text, key, reason);
    let files = http.tls_cert.is_some() || http.tls_key.is_some();
    if http.plain_http {
        if files || http.issue_from_ca {
            return Err(invalid(
                "http.plain_http",
                "plain HTTP takes no certificate: remove tls_cert, tls_key and issue_from_ca, or plain_http".into(),
            ));
        }
        if !listen.ip().is_loopback() {
            return Err(invalid(
                "http.plain_http",
                format!(
                    "plain HTTP is allowed only on a loopback address and {listen} is not one: remove plain_http and give the API a certificate"
                ),
            ));
        }
        return Ok(HttpTls::Plain);
    }
    match (&http.tls_cert, &http.tls_key) {
        (Some(_), Some(_)) if http.issue_from_ca => Err(invalid(
            "http.issue_from_ca",
            "say either tls_cert and tls_key, or issue_from_ca, not both".into(),
        )),
        (Some(cert), Some(key)) => {
            let (cert, key) = (resolve(cert), resolve(key));
            if let Err(e) = sync_protocol::transport::ServerTls::load(&cert, &key) {
                return Err(invalid("http.tls_cert", e.to_string()));
            }
            Ok(HttpTls::Files { cert, key })
        }
        (Some(_), None) => Err(invalid(
            "http.tls_cert",
            "needs tls_key, the certificate's private key".into(),
        )),
        (None, Some(_)) => Err(invalid(
            "http.tls_key",
            "needs tls_cert, the certificate it belongs to".into(),
        )),
        (None, None) if http.issue_from_ca => Ok(HttpTls::IssueFromCa),
        (None, None) => {
            let mut e = invalid(
                "http",
                "the API needs a certificate: issue_from_ca = true, or tls_cert and tls_key; or plain_http = true on a loopback address".into(),
            );
            e.line = text
                .lines()
                .position(|l| l.trim() == "[http]")
                .map(|i| i + 1);
            Err(e)
        }
    }
}

/// The line holding the quoted string `v`, if exactly one does.
fn line_of_value(text: &str, v: &str) -> Option<usize> {
    let quoted = format!("\"{v}\"");
    let mut found = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&quoted));
    let first = found.next()?;
    found.next().is_none().then_some(first.0 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses() {
        let s = HubSettings::parse(Path::new("/etc/smartpark/hub.toml"), DEFAULT_CONFIG).unwrap();
        assert_eq!(s.quic_listen.port(), 4433);
        assert_eq!(s.ca_key, Path::new("/etc/smartpark/ca/ca-key.pem"));
        assert_eq!(s.token_ttl, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn an_unknown_key_is_refused_with_file_line_and_key() {
        let text = DEFAULT_CONFIG.replace("[http]\n", "[http]\nlisten_tls = 1\n");
        let err = HubSettings::parse(Path::new("hub.toml"), &text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("hub.toml:"), "{shown}");
        assert!(shown.contains("listen_tls"), "{shown}");
        assert!(err.line.is_some(), "{shown}");
    }

    #[test]
    fn the_default_config_serves_https_with_a_certificate_from_the_ca() {
        let s = HubSettings::parse(Path::new("hub.toml"), DEFAULT_CONFIG).unwrap();
        assert_eq!(s.http_tls, HttpTls::IssueFromCa);
        assert!(s.http_is_tls());
    }

    #[test]
    fn plain_http_is_allowed_only_on_loopback_and_only_when_asked_for() {
        let plain = DEFAULT_CONFIG.replace("issue_from_ca = true\n", "plain_http = true\n");
        let s = HubSettings::parse(Path::new("hub.toml"), &plain).unwrap();
        assert_eq!(s.http_tls, HttpTls::Plain);
        assert!(!s.http_is_tls());
        let v6 = plain.replace("127.0.0.1:8090", "[::1]:8090");
        assert_eq!(
            HubSettings::parse(Path::new("hub.toml"), &v6)
                .unwrap()
                .http_tls,
            HttpTls::Plain
        );
        let lan = plain.replace("127.0.0.1:8090", "0.0.0.0:8090");
        let err = HubSettings::parse(Path::new("hub.toml"), &lan).unwrap_err();
        assert_eq!(err.key, "http.plain_http");
        let shown = err.to_string();
        assert!(shown.starts_with("hub.toml:"), "{shown}");
        assert!(shown.contains("loopback"), "{shown}");
        let line = plain
            .lines()
            .position(|l| l == "plain_http = true")
            .unwrap()
            + 1;
        assert_eq!(err.line, Some(line));
    }

    #[test]
    fn the_api_needs_exactly_one_source_of_certificate() {
        let none = DEFAULT_CONFIG.replace("issue_from_ca = true\n", "");
        let err = HubSettings::parse(Path::new("hub.toml"), &none).unwrap_err();
        assert_eq!(err.key, "http");
        assert!(err.line.is_some(), "{err}");
        let half = DEFAULT_CONFIG.replace("issue_from_ca = true\n", "tls_cert = \"c.pem\"\n");
        let err = HubSettings::parse(Path::new("hub.toml"), &half).unwrap_err();
        assert_eq!(err.key, "http.tls_cert");
        let both = DEFAULT_CONFIG.replace(
            "issue_from_ca = true\n",
            "issue_from_ca = true\nplain_http = true\n",
        );
        let err = HubSettings::parse(Path::new("hub.toml"), &both).unwrap_err();
        assert_eq!(err.key, "http.plain_http");
        let missing = DEFAULT_CONFIG.replace(
            "issue_from_ca = true\n",
            "tls_cert = \"nowhere/c.pem\"\ntls_key = \"nowhere/k.pem\"\n",
        );
        let err = HubSettings::parse(Path::new("/tmp/hub.toml"), &missing).unwrap_err();
        assert_eq!(err.key, "http.tls_cert");
        assert!(err.reason.contains("nowhere/c.pem"), "{err}");
    }

    #[test]
    fn a_bad_address_names_its_key() {
        let text = DEFAULT_CONFIG.replace("0.0.0.0:4433", "somewhere");
        let err = HubSettings::parse(Path::new("hub.toml"), &text).unwrap_err();
        assert_eq!(err.key, "quic.listen");
        assert!(err.line.is_some());
    }
}
