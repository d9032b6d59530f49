//! The edge node's config file: TOML with unknown keys refused, checked into
//! [`EdgeSettings`] with errors that name the file, the line, the key and the reason.
//!
//! The default config is embedded (`DEFAULT_CONFIG`) and printed by `smartpark
//! generate-config`; relative paths in a config are relative to the file's own folder.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use device_drivers::config::{ConfigError, parse_toml};
use device_drivers::profile::{Profile, is_name, load_profiles};
use device_drivers::{DeviceConfig, DeviceSpec};
use serde::Deserialize;

/// The config that `generate-config` prints: a working single-building edge with comments.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    pub node: NodeConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub business: BusinessConfig,
    /// The uplink to the hub; none when the building runs alone.
    pub sync: Option<SyncConfig>,
    /// Rules and alarms; none: no rules.
    pub rules: Option<RulesConfig>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub park: String,
    pub building: String,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Folder of device profiles.
    pub profiles_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` of the LAN API and UI; port 0 picks a free port (the node prints it).
    #[serde(default = "default_api_listen")]
    pub listen: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
        }
    }
}

fn default_api_listen() -> String {
    "127.0.0.1:8080".into()
}

/// The rule file: read at start, and again whenever it changes (a bad file is refused and
/// the running rules stay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub file: PathBuf,
}

/// Where the hub is, and where `smartpark edge-enroll` put this edge's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The hub's QUIC address, `host:port`.
    pub hub: String,
    /// The folder with the key, certificate and CA from enrollment.
    pub identity_dir: PathBuf,
    /// Raw samples per uploaded raw record: larger records compress better, smaller ones
    /// reach the hub sooner (rollups carry the recent past either way).
    #[serde(default = "default_raw_block")]
    pub raw_block_samples: i64,
}

fn default_raw_block() -> i64 {
    crate::outbox::RAW_BLOCK
}

/// Doors, barriers and the park documents they are decided from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessConfig {
    /// Decide at doors and barriers (needs the MQTT broker).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A folder of automerge files merged into the stored documents at start.
    pub seed_dir: Option<PathBuf>,
    /// Plate reads below this confidence wait for a person to confirm them.
    #[serde(default = "default_confidence")]
    pub plate_confidence_threshold: f64,
    /// The park's offset from UTC, used only when the edge has to create the documents.
    #[serde(default = "default_utc_offset")]
    pub utc_offset_minutes: i32,
}

impl Default for BusinessConfig {
    fn default() -> Self {
        BusinessConfig {
            enabled: true,
            seed_dir: None,
            plate_confidence_threshold: default_confidence(),
            utc_offset_minutes: default_utc_offset(),
        }
    }
}

fn default_confidence() -> f64 {
    0.6
}

fn default_utc_offset() -> i32 {
    480
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Run the embedded broker for the building's devices.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// MQTT 3.1.1 listener; port 0 picks a free port.
    #[serde(default = "default_mqtt_v4")]
    pub listen_v4: String,
    /// MQTT 5 listener; port 0 picks a free port.
    #[serde(default = "default_mqtt_v5")]
    pub listen_v5: String,
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen_v4: default_mqtt_v4(),
            listen_v5: default_mqtt_v5(),
            max_payload_bytes: default_max_payload(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_mqtt_v4() -> String {
    "127.0.0.1:1883".into()
}

fn default_mqtt_v5() -> String {
    "127.0.0.1:1884".into()
}

fn default_max_payload() -> usize {
    65536
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_raw_days")]
    pub raw_retention_days: u32,
    /// How long 1-minute rollups are kept.
    #[serde(default = "default_minute_rollup_days")]
    pub minute_rollup_retention_days: u32,
    /// How long 15-minute and hourly rollups are kept.
    #[serde(default = "default_rollup_days")]
    pub rollup_retention_days: u32,
    /// The most disk the store may use; the oldest raw telemetry goes first beyond it.
    #[serde(default = "default_budget")]
    pub disk_budget_mb: u64,
    #[serde(default = "default_max_batch")]
    pub max_batch_samples: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            raw_retention_days: default_raw_days(),
            minute_rollup_retention_days: default_minute_rollup_days(),
            rollup_retention_days: default_rollup_days(),
            disk_budget_mb: default_budget(),
            max_batch_samples: default_max_batch(),
        }
    }
}

fn default_raw_days() -> u32 {
    14
}

fn default_minute_rollup_days() -> u32 {
    31
}

fn default_rollup_days() -> u32 {
    800
}

fn default_budget() -> u64 {
    4096
}

fn default_max_batch() -> usize {
    20_000
}

/// A checked config.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub file: PathBuf,
    pub park: String,
    pub building: String,
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub mqtt: Option<MqttSettings>,
    pub storage: StorageConfig,
    /// `None` when doors and barriers are not decided here.
    pub business: Option<crate::park::ParkSettings>,
    /// `None` when the building runs without a hub.
    pub sync: Option<crate::sync::SyncSettings>,
    /// The rule file, checked when the config is loaded.
    pub rules_file: Option<PathBuf>,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    pub devices: Vec<DeviceSpec>,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub listen_v4: SocketAddr,
    pub listen_v5: SocketAddr,
    pub max_payload_bytes: usize,
}

impl EdgeSettings {
    pub fn load(file: &Path) -> Result<EdgeSettings, ConfigError> {
        let text = device_drivers::config::read_text(file)?;
        Self::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<EdgeSettings, ConfigError> {
        let config: EdgeConfig = parse_toml(file, text)?;
        config.build(file, text)
    }
}

impl EdgeConfig {
    pub fn build(self, file: &Path, text: &str) -> Result<EdgeSettings, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::invalid(file, text, key, reason);
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for (key, v) in [
            ("node.park", &self.node.park),
            ("node.building", &self.node.building),
        ] {
            if !is_name(v) {
                return Err(invalid(
                    key,
                    format!("{v:?} is not a valid id (letters, digits, '-', '_', '.')"),
                ));
            }
        }
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse().map_err(|_| {
                invalid(
                    key,
                    format!("{v:?} is not an address of the form 127.0.0.1:8080"),
                )
            })
        };
        let api_listen = addr("api.listen", &self.api.listen)?;
        let mqtt = if self.mqtt.enabled {
            if self.mqtt.max_payload_bytes == 0 || self.mqtt.max_payload_bytes > 16 << 20 {
                return Err(invalid(
                    "mqtt.max_payload_bytes",
                    "must be between 1 and 16777216".into(),
                ));
            }
            Some(MqttSettings {
                listen_v4: addr("mqtt.listen_v4", &self.mqtt.listen_v4)?,
                listen_v5: addr("mqtt.listen_v5", &self.mqtt.listen_v5)?,
                max_payload_bytes: self.mqtt.max_payload_bytes,
            })
        } else {
            None
        };
        let s = &self.storage;
        if s.raw_retention_days == 0 {
            return Err(invalid(
                "storage.raw_retention_days",
                "must be at least 1".into(),
            ));
        }
        if s.minute_rollup_retention_days < s.raw_retention_days {
            return Err(invalid(
                "storage.minute_rollup_retention_days",
                "1-minute rollups must be kept at least as long as raw samples".into(),
            ));
        }
        if s.rollup_retention_days < s.minute_rollup_retention_days {
            return Err(invalid(
                "storage.rollup_retention_days",
                "15-minute and hourly rollups must be kept at least as long as 1-minute rollups"
                    .into(),
            ));
        }
        if s.disk_budget_mb < 16 {
            return Err(invalid(
                "storage.disk_budget_mb",
                "must be at least 16".into(),
            ));
        }
        if s.max_batch_samples == 0 {
            return Err(invalid(
                "storage.max_batch_samples",
                "must be at least 1".into(),
            ));
        }
        let profiles_dir = resolve(&self.node.profiles_dir);
        let profiles = load_profiles(&profiles_dir)?;
        let mut ids = HashSet::new();
        let mut devices = Vec::with_capacity(self.devices.len());
        for (i, d) in self.devices.into_iter().enumerate() {
            let key = format!("device[{i}]");
            if !ids.insert(d.id.clone()) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("device id {:?} is used twice", d.id),
                ));
            }
            devices.push(d.build(file, text, &key, &profiles)?);
        }
        let b = &self.business;
        if !(0.0..=1.0).contains(&b.plate_confidence_threshold) {
            return Err(invalid(
                "business.plate_confidence_threshold",
                "must be between 0 and 1".into(),
            ));
        }
        if !(-720..=840).contains(&b.utc_offset_minutes) {
            return Err(invalid(
                "business.utc_offset_minutes",
                "must be between -720 and 840".into(),
            ));
        }
        if b.enabled && mqtt.is_none() {
            return Err(invalid(
                "business.enabled",
                "doors and barriers need the MQTT broker (mqtt.enabled)".into(),
            ));
        }
        let business = b.enabled.then(|| crate::park::ParkSettings {
            park: self.node.park.clone(),
            building: self.node.building.clone(),
            seed_dir: b.seed_dir.as_deref().map(resolve),
            plate_confidence_threshold: b.plate_confidence_threshold,
            utc_offset_minutes: b.utc_offset_minutes,
        });
        let sync = match &self.sync {
            None => None,
            Some(c) => {
                let hub = std::net::ToSocketAddrs::to_socket_addrs(&c.hub.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        invalid(
                            "sync.hub",
                            format!("{:?} is not a reachable host:port", c.hub),
                        )
                    })?;
                if !(100..=1_000_000).contains(&c.raw_block_samples) {
                    return Err(invalid(
                        "sync.raw_block_samples",
                        "must be between 100 and 1000000".into(),
                    ));
                }
                Some(crate::sync::SyncSettings {
                    hub,
                    identity_dir: resolve(&c.identity_dir),
                    raw_block_samples: c.raw_block_samples,
                })
            }
        };
        let rules_file = match &self.rules {
            None => None,
            Some(r) => {
                let f = resolve(&r.file);
                let text = std::fs::read_to_string(&f).map_err(|e| {
                    invalid("rules.file", format!("cannot read {}: {e}", f.display()))
                })?;
                if let Err(e) = rules_engine::RuleSet::compile(&text, &f.display().to_string()) {
                    return Err(invalid("rules.file", e.to_string()));
                }
                Some(f)
            }
        };
        // BACnet devices that share a local port must agree on it.
        if let Err(e) = device_drivers::bacnet::plan_networks(&devices) {
            return Err(invalid("device", format!("BACnet devices: {e}")));
        }
        Ok(EdgeSettings {
            file: file.to_path_buf(),
            park: self.node.park,
            building: self.node.building,
            data_dir: resolve(&self.node.data_dir),
            api_listen,
            mqtt,
            storage: self.storage,
            business,
            sync,
            rules_file,
            profiles,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn the_default_config_parses() {
        // The default config names the profiles folder relative to the repository root.
        let file = repo_root().join("smartpark.toml");
        let s = EdgeSettings::parse(&file, DEFAULT_CONFIG).unwrap();
        assert!(!s.devices.is_empty());
    }

    #[test]
    fn every_sample_site_config_parses() {
        let dir = repo_root().join("firmware-configs/sites");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                EdgeSettings::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0, "no site configs in {}", dir.display());
    }

    #[test]
    fn a_wrong_key_is_named_with_its_line() {
        let file = repo_root().join("smartpark.toml");
        let text = DEFAULT_CONFIG.replace("[storage]", "[storage]\nraw_retention_dayz = 3");
        let err = EdgeSettings::parse(&file, &text).unwrap_err();
        assert!(err.reason.contains("raw_retention_dayz"), "{err}");
        assert!(err.line.is_some());
    }

    #[test]
    fn an_unknown_profile_is_refused_naming_the_device() {
        let file = repo_root().join("smartpark.toml");
        let text = DEFAULT_CONFIG.replacen("profile = \"eastron-sdm630\"", "profile = \"nope\"", 1);
        let err = EdgeSettings::parse(&file, &text).unwrap_err();
        assert!(err.key.ends_with(".profile"), "{err}");
        assert!(err.reason.contains("no profile \"nope\""), "{err}");
    }

    #[test]
    fn a_bad_address_is_refused() {
        let file = repo_root().join("smartpark.toml");
        let text = DEFAULT_CONFIG.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"");
        let err = EdgeSettings::parse(&file, &text).unwrap_err();
        assert_eq!(err.key, "api.listen");
    }
}
