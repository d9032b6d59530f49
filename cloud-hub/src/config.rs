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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub hub: HubSection,
    pub quic: QuicSection,
    pub http: HttpSection,
    pub ca: CaSection,
    #[serde(default)]
    pub enrollment: EnrollmentSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    pub operator: String,
    pub data_dir: PathBuf,
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
        }
    }
}

/// A checked config: what [`crate::Hub::start`] runs.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub operator: String,
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub server_names: Vec<String>,
    pub http_listen: SocketAddr,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub token_ttl: Duration,
    pub edge_cert_days: u32,
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
        Ok(HubSettings {
            operator: config.hub.operator.clone(),
            data_dir: resolve(&config.hub.data_dir),
            quic_listen: addr("quic.listen", &config.quic.listen)?,
            server_names: config.quic.server_names.clone(),
            http_listen: addr("http.listen", &config.http.listen)?,
            ca_cert: resolve(&config.ca.cert),
            ca_key: resolve(&config.ca.key),
            token_ttl: Duration::from_secs(u64::from(e.token_ttl_hours) * 3600),
            edge_cert_days: e.edge_cert_days,
        })
    }

    /// Settings for tests and the demo: everything under `dir`, ports picked by the system.
    pub fn for_dir(dir: &Path) -> HubSettings {
        HubSettings {
            operator: "test".into(),
            data_dir: dir.join("hub"),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_names: Vec::new(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_cert: dir.join("ca").join("ca-cert.pem"),
            ca_key: dir.join("ca").join("ca-key.pem"),
            token_ttl: Duration::from_secs(24 * 3600),
            edge_cert_days: 365,
        }
    }

    /// The hub's database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hub.sqlite")
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
    fn a_bad_address_names_its_key() {
        let text = DEFAULT_CONFIG.replace("0.0.0.0:4433", "somewhere");
        let err = HubSettings::parse(Path::new("hub.toml"), &text).unwrap_err();
        assert_eq!(err.key, "quic.listen");
        assert!(err.line.is_some());
    }
}
