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
    /// Plain HTTP instead of HTTPS: refused unless `listen` is a loopback address.
    #[serde(default)]
    pub plain_http: bool,
    /// The HTTPS certificate (chain, PEM) and its key from files, instead of the LAN
    /// certificate from enrollment or a self-signed one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// DNS names the API is reached by; IP addresses and `localhost` always work. A request
    /// for any other name is refused (a page on the LAN cannot rebind a name to us).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://console.example`) besides the API's own whose pages may write.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// A browser session ends after this long without a request.
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u32,
    /// ... and this long after login, whatever happens.
    #[serde(default = "default_session_absolute_hours")]
    pub session_absolute_hours: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            plain_http: false,
            tls_cert: None,
            tls_key: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_idle_minutes: default_session_idle_minutes(),
            session_absolute_hours: default_session_absolute_hours(),
        }
    }
}

fn default_session_idle_minutes() -> u32 {
    30
}

fn default_session_absolute_hours() -> u32 {
    12
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
    /// Other hubs sharing the first one's database, `host:port` each: after a connection
    /// fails or ends, the edge tries the next.
    #[serde(default)]
    pub other_hubs: Vec<String>,
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
    /// The park's credential key: a file of 64 hexadecimal characters, the same in every
    /// building of the park. Card numbers, QR values and PINs are stored and matched as
    /// keyed digests under it. Required when `enabled`; read when the edge starts, as a
    /// secret provisioned on the machine (like the enrolled identity), not with the config.
    pub credential_key_file: Option<PathBuf>,
}

impl Default for BusinessConfig {
    fn default() -> Self {
        BusinessConfig {
            enabled: true,
            seed_dir: None,
            plate_confidence_threshold: default_confidence(),
            utc_offset_minutes: default_utc_offset(),
            credential_key_file: None,
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
    /// Run the building's broker for its devices (Mosquitto, see `broker`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where devices connect (MQTT 3.1.1 and 5); port 0 picks a free port.
    #[serde(default = "default_mqtt_listen")]
    pub listen: String,
    /// Let clients in without a username (a lab): they may publish device topics and read
    /// everything, never send a command. Off, only the accounts below connect.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// The Mosquitto program.
    #[serde(default = "default_mosquitto")]
    pub mosquitto: PathBuf,
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// A TLS listener for devices with a certificate from the operator CA (made with
    /// `smartpark device-cert`), whose name is `PARK/BUILDING/USERNAME`.
    pub listen_tls: Option<String>,
    /// The TLS listener's own certificate and key (PEM files).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The operator CA's certificate (PEM), which devices' certificates must come from.
    pub client_ca: Option<PathBuf>,
    /// The devices' accounts.
    #[serde(default, rename = "client")]
    pub clients: Vec<MqttClientConfig>,
}

/// One device's account on the building's broker: its username (also its client id), the
/// hash of its password, and what it is, from which its topics follow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttClientConfig {
    pub username: String,
    /// `$7$...`, from `smartpark mqtt-credential USERNAME`; none for a device that logs in
    /// with a certificate on `mqtt.listen_tls` only.
    pub password_hash: Option<String>,
    /// An MQTT `[[device]]` whose telemetry this account publishes.
    pub device: Option<String>,
    /// Doors whose controller this is: it publishes their reads, states and status and
    /// receives their commands.
    #[serde(default)]
    pub doors: Vec<String>,
    /// Lanes whose camera, pay terminal, barrier and display this is.
    #[serde(default)]
    pub lanes: Vec<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: default_mqtt_listen(),
            allow_anonymous: false,
            mosquitto: default_mosquitto(),
            max_payload_bytes: default_max_payload(),
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            clients: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_mqtt_listen() -> String {
    "127.0.0.1:1883".into()
}

fn default_mosquitto() -> PathBuf {
    "mosquitto".into()
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
    /// How long access and parking logs are kept.
    #[serde(default = "default_log_days")]
    pub log_retention_days: u32,
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
            log_retention_days: default_log_days(),
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

fn default_log_days() -> u32 {
    180
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
    /// Whether the LAN API is served over TLS (cookies get the `Secure` flag). Plain HTTP
    /// only on a loopback address, and only when the config asks for it.
    pub api_tls: bool,
    /// The API's certificate chain and key from `api.tls_cert` and `api.tls_key`; without
    /// them the node serves enrollment's LAN certificate or a self-signed one.
    pub api_tls_files: Option<(PathBuf, PathBuf)>,
    pub mqtt: Option<MqttSettings>,
    pub storage: StorageConfig,
    /// `None` when doors and barriers are not decided here.
    pub business: Option<crate::park::ParkSettings>,
    /// `None` when the building runs without a hub.
    pub sync: Option<crate::sync::SyncSettings>,
    /// The rule file, checked when the config is loaded.
    pub rules_file: Option<PathBuf>,
    /// How the LAN API authenticates its callers.
    pub auth: accounts::AuthSettings,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    pub devices: Vec<DeviceSpec>,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub listen: SocketAddr,
    pub allow_anonymous: bool,
    pub mosquitto: PathBuf,
    pub max_payload_bytes: usize,
    pub clients: Vec<MqttClient>,
    pub tls: Option<MqttTls>,
}

/// The devices' TLS listener.
#[derive(Debug, Clone)]
pub struct MqttTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// What a device certificate's name starts with here: `PARK/BUILDING/`, so that a
    /// certificate made for another building is nobody here.
    pub name_prefix: String,
}

/// A device's account with the topics it may publish and receive.
#[derive(Debug, Clone)]
pub struct MqttClient {
    pub username: String,
    pub password_hash: Option<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
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

/// The devices' broker accounts, checked, with their topics.
fn mqtt_clients(
    configs: &[MqttClientConfig],
    devices: &[DeviceSpec],
    tls: bool,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<MqttClient>, ConfigError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let key = |k: &str| format!("mqtt.client[{i}].{k}");
        if !is_name(&c.username) {
            return Err(invalid(
                &key("username"),
                format!(
                    "{:?} is not a valid id (letters, digits, '-', '_', '.')",
                    c.username
                ),
            ));
        }
        if c.username.starts_with(crate::broker::EDGE_USER) {
            return Err(invalid(
                &key("username"),
                format!(
                    "names starting with {:?} are the node's own",
                    crate::broker::EDGE_USER
                ),
            ));
        }
        if !names.insert(c.username.as_str()) {
            return Err(invalid(
                &key("username"),
                format!("{:?} has two accounts", c.username),
            ));
        }
        match &c.password_hash {
            Some(h) => crate::broker::check_password_hash(h)
                .map_err(|reason| invalid(&key("password_hash"), format!("the value {reason}")))?,
            None if tls => {}
            None => {
                return Err(invalid(
                    &key("password_hash"),
                    "required, unless the device logs in with a certificate on mqtt.listen_tls"
                        .into(),
                ));
            }
        }
        let (mut publish, mut subscribe) = (Vec::new(), Vec::new());
        if let Some(d) = &c.device {
            let Some(spec) = devices.iter().find(|s| &s.id == d) else {
                return Err(invalid(
                    &key("device"),
                    format!("no [[device]] has the id {d:?}"),
                ));
            };
            let topics = device_drivers::mqtt::MqttDevices::new([spec]).topics();
            if topics.is_empty() {
                return Err(invalid(
                    &key("device"),
                    format!("{d:?} is not an MQTT device"),
                ));
            }
            publish.extend(topics);
        }
        for (list, k) in [(&c.doors, "doors"), (&c.lanes, "lanes")] {
            if let Some(bad) = list.iter().find(|x| !is_name(x)) {
                return Err(invalid(
                    &key(k),
                    format!("{bad:?} is not a valid id (letters, digits, '-', '_', '.')"),
                ));
            }
        }
        for d in &c.doors {
            publish.extend(["read", "state", "status"].map(|t| format!("door/{d}/{t}")));
            subscribe.push(format!("door/{d}/command"));
        }
        for l in &c.lanes {
            publish.extend([
                format!("lpr/{l}/plate"),
                format!("lpr/{l}/status"),
                format!("lane/{l}/payment"),
            ]);
            subscribe.extend([format!("barrier/{l}/command"), format!("lane/{l}/display")]);
        }
        if publish.is_empty() && subscribe.is_empty() {
            return Err(invalid(
                &format!("mqtt.client[{i}]"),
                "an account needs a device, doors or lanes: nothing else may be published".into(),
            ));
        }
        out.push(MqttClient {
            username: c.username.clone(),
            password_hash: c.password_hash.clone(),
            publish,
            subscribe,
        });
    }
    Ok(out)
}

/// The devices' TLS listener, when `listen_tls` asks for one: its certificate, key and
/// the operator CA must be given too.
fn mqtt_tls(
    c: &MqttConfig,
    node: &NodeConfig,
    addr: &dyn Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
    invalid: &dyn Fn(&str, String) -> ConfigError,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<MqttTls>, ConfigError> {
    let Some(listen) = &c.listen_tls else {
        for (k, v) in [
            ("mqtt.tls_cert", &c.tls_cert),
            ("mqtt.tls_key", &c.tls_key),
            ("mqtt.client_ca", &c.client_ca),
        ] {
            if v.is_some() {
                return Err(invalid(k, "is used only with mqtt.listen_tls".into()));
            }
        }
        return Ok(None);
    };
    let file = |k: &str, v: &Option<PathBuf>| -> Result<PathBuf, ConfigError> {
        let p = v
            .as_deref()
            .map(resolve)
            .ok_or_else(|| invalid(k, "required with mqtt.listen_tls".into()))?;
        if !p.is_file() {
            return Err(invalid(
                k,
                format!("{} is not a readable file", p.display()),
            ));
        }
        Ok(p)
    };
    Ok(Some(MqttTls {
        listen: addr("mqtt.listen_tls", listen)?,
        cert: file("mqtt.tls_cert", &c.tls_cert)?,
        key: file("mqtt.tls_key", &c.tls_key)?,
        client_ca: file("mqtt.client_ca", &c.client_ca)?,
        name_prefix: format!("{}/{}/", node.park, node.building),
    }))
}

/// A program named without a path is looked for on PATH and then in the system's program
/// folders (where Debian puts Mosquitto, which is not on a normal user's PATH).
fn find_program(p: &Path) -> PathBuf {
    if p.components().count() > 1 {
        return p.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .unwrap_or_else(|| p.to_path_buf())
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
        let (api_tls, api_tls_files) = api_tls(&self.api, api_listen, file, text, &resolve)?;
        let mqtt = if self.mqtt.enabled {
            if self.mqtt.max_payload_bytes == 0 || self.mqtt.max_payload_bytes > 16 << 20 {
                return Err(invalid(
                    "mqtt.max_payload_bytes",
                    "must be between 1 and 16777216".into(),
                ));
            }
            Some(MqttSettings {
                listen: addr("mqtt.listen", &self.mqtt.listen)?,
                allow_anonymous: self.mqtt.allow_anonymous,
                mosquitto: find_program(&self.mqtt.mosquitto),
                max_payload_bytes: self.mqtt.max_payload_bytes,
                clients: Vec::new(),
                tls: mqtt_tls(&self.mqtt, &self.node, &addr, &invalid, &resolve)?,
            })
        } else {
            None
        };
        let s = &self.storage;
        if s.log_retention_days == 0 || s.log_retention_days > 3650 {
            return Err(invalid(
                "storage.log_retention_days",
                "must be between 1 and 3650".into(),
            ));
        }
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
        let mut mqtt = mqtt;
        if let Some(m) = &mut mqtt {
            m.clients = mqtt_clients(&self.mqtt.clients, &devices, m.tls.is_some(), &invalid)?;
        } else if !self.mqtt.clients.is_empty() {
            return Err(invalid(
                "mqtt.client",
                "accounts need the broker (mqtt.enabled)".into(),
            ));
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
        let credential_key = match (b.enabled, &b.credential_key_file) {
            (false, _) => None,
            (true, None) => {
                return Err(invalid(
                    "business.credential_key_file",
                    "required when business.enabled is true: the park's credential key, the \
                     same file in every building of the park (make one with `smartpark \
                     credential-key FILE`)"
                        .into(),
                ));
            }
            (true, Some(f)) => Some(crate::park::CredentialKeySource::File {
                path: resolve(f),
                setting: invalid("business.credential_key_file", String::new()),
            }),
        };
        let business = credential_key.map(|credential_key| crate::park::ParkSettings {
            park: self.node.park.clone(),
            building: self.node.building.clone(),
            seed_dir: b.seed_dir.as_deref().map(resolve),
            plate_confidence_threshold: b.plate_confidence_threshold,
            utc_offset_minutes: b.utc_offset_minutes,
            credential_key,
            hub_owned: self.sync.is_some(),
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
                let mut other_hubs = Vec::new();
                for (i, h) in c.other_hubs.iter().enumerate() {
                    other_hubs.push(
                        std::net::ToSocketAddrs::to_socket_addrs(&h.as_str())
                            .ok()
                            .and_then(|mut a| a.next())
                            .ok_or_else(|| {
                                invalid(
                                    &format!("sync.other_hubs[{i}]"),
                                    format!("{h:?} is not a reachable host:port"),
                                )
                            })?,
                    );
                }
                Some(crate::sync::SyncSettings {
                    hub,
                    other_hubs,
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
        let api = &self.api;
        let auth = accounts::AuthSettings::checked(
            api.session_idle_minutes,
            api.session_absolute_hours,
            &api.allowed_hosts,
            &api.allowed_origins,
            // Over HTTPS the session cookie must never travel in clear.
            api_tls,
        )
        .map_err(|(key, reason)| invalid(&format!("api.{key}"), reason))?;
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
            api_tls,
            api_tls_files,
            mqtt,
            storage: self.storage,
            business,
            sync,
            rules_file,
            auth,
            profiles,
            devices,
        })
    }
}

/// The `[api]` table's choice of HTTPS or plain HTTP, checked: plain HTTP only on
/// loopback and without certificate files, and a certificate file only with its key.
fn api_tls(
    api: &ApiConfig,
    listen: SocketAddr,
    file: &Path,
    text: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<(bool, Option<(PathBuf, PathBuf)>), ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::invalid(file, text, key, reason);
    if api.plain_http {
        if api.tls_cert.is_some() || api.tls_key.is_some() {
            return Err(invalid(
                "api.plain_http",
                "plain HTTP takes no certificate: remove tls_cert and tls_key, or plain_http"
                    .into(),
            ));
        }
        if !listen.ip().is_loopback() {
            return Err(invalid(
                "api.plain_http",
                format!(
                    "plain HTTP is allowed only on a loopback address and {listen} is not one: remove plain_http to serve HTTPS"
                ),
            ));
        }
        return Ok((false, None));
    }
    match (&api.tls_cert, &api.tls_key) {
        (None, None) => Ok((true, None)),
        (Some(cert), Some(key)) => {
            let (cert, key) = (resolve(cert), resolve(key));
            if let Err(e) = sync_protocol::transport::ServerTls::load(&cert, &key) {
                return Err(invalid("api.tls_cert", e.to_string()));
            }
            Ok((true, Some((cert, key))))
        }
        (Some(_), None) => Err(invalid(
            "api.tls_cert",
            "needs tls_key, the certificate's private key".into(),
        )),
        (None, Some(_)) => Err(invalid(
            "api.tls_key",
            "needs tls_cert, the certificate it belongs to".into(),
        )),
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
    fn plain_http_is_allowed_only_on_loopback_and_only_when_asked_for() {
        let file = repo_root().join("smartpark.toml");
        let https = EdgeSettings::parse(&file, DEFAULT_CONFIG).unwrap();
        assert!(https.api_tls);
        assert!(https.auth.secure_cookies);
        let plain = DEFAULT_CONFIG.replace("plain_http = false", "plain_http = true");
        let loopback = EdgeSettings::parse(&file, &plain).unwrap();
        assert!(!loopback.api_tls);
        assert!(!loopback.auth.secure_cookies);
        let v6 = plain.replace("listen = \"127.0.0.1:8080\"", "listen = \"[::1]:8080\"");
        assert!(!EdgeSettings::parse(&file, &v6).unwrap().api_tls);
        let lan = plain.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
        let err = EdgeSettings::parse(&file, &lan).unwrap_err();
        assert_eq!(err.key, "api.plain_http");
        let line = lan.lines().position(|l| l == "plain_http = true").unwrap() + 1;
        assert_eq!(err.line, Some(line));
        let shown = err.to_string();
        assert!(shown.starts_with(&file.display().to_string()), "{shown}");
        assert!(shown.contains("loopback"), "{shown}");
        // HTTPS is served on any address.
        let https =
            DEFAULT_CONFIG.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
        assert!(EdgeSettings::parse(&file, &https).unwrap().api_tls);
    }

    #[test]
    fn certificate_files_come_in_pairs_that_load() {
        let file = repo_root().join("smartpark.toml");
        let with = |extra: &str| {
            DEFAULT_CONFIG.replace(
                "plain_http = false\n",
                &format!("plain_http = false\n{extra}"),
            )
        };
        let err = EdgeSettings::parse(&file, &with("tls_cert = \"c.pem\"\n")).unwrap_err();
        assert_eq!(err.key, "api.tls_cert");
        let err = EdgeSettings::parse(&file, &with("tls_key = \"k.pem\"\n")).unwrap_err();
        assert_eq!(err.key, "api.tls_key");
        let missing = with("tls_cert = \"nowhere/c.pem\"\ntls_key = \"nowhere/k.pem\"\n");
        let err = EdgeSettings::parse(&file, &missing).unwrap_err();
        assert_eq!(err.key, "api.tls_cert");
        assert!(err.reason.contains("nowhere/c.pem"), "{err}");
        let plain_with_files = with("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
            .replace("plain_http = false", "plain_http = true");
        let err = EdgeSettings::parse(&file, &plain_with_files).unwrap_err();
        assert_eq!(err.key, "api.plain_http");

        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let issued = sync_protocol::transport::self_signed_server_cert(
            &names,
            sync_protocol::transport::Validity::days_from_now(30),
        )
        .unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        issued.save(&cert, &key).unwrap();
        let good = with(&format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        let s = EdgeSettings::parse(&file, &good).unwrap();
        assert!(s.api_tls);
        assert_eq!(s.api_tls_files, Some((cert, key)));
    }

    #[test]
    fn a_bad_address_is_refused() {
        let file = repo_root().join("smartpark.toml");
        let text = DEFAULT_CONFIG.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"");
        let err = EdgeSettings::parse(&file, &text).unwrap_err();
        assert_eq!(err.key, "api.listen");
    }

    #[test]
    fn doors_need_the_parks_credential_key_file_named_in_the_config() {
        let file = repo_root().join("smartpark.toml");
        let without = DEFAULT_CONFIG.replace("credential_key_file = \"credential.key\"\n", "");
        assert_ne!(without, DEFAULT_CONFIG);
        let err = EdgeSettings::parse(&file, &without).unwrap_err();
        assert_eq!(err.key, "business.credential_key_file");
        assert!(err.reason.contains("required"), "{err}");
        // A node that decides no doors needs no key.
        let off = without.replace(
            "with or without the hub.\nenabled = true",
            "with or without the hub.\nenabled = false",
        );
        assert_ne!(off, without);
        assert!(EdgeSettings::parse(&file, &off).unwrap().business.is_none());
    }

    #[test]
    fn a_missing_or_malformed_key_file_is_named_with_the_config_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smartpark.toml");
        let text = DEFAULT_CONFIG.replace(
            "profiles_dir = \"firmware-configs/profiles\"",
            &format!(
                "profiles_dir = \"{}\"",
                repo_root().join("firmware-configs/profiles").display()
            ),
        );
        let line = text
            .lines()
            .position(|l| l.starts_with("credential_key_file"))
            .unwrap()
            + 1;
        let settings = EdgeSettings::parse(&file, &text).unwrap();
        let source = settings.business.unwrap().credential_key;
        // Relative to the config file's folder, and read when the edge starts.
        let key_file = dir.path().join("credential.key");
        let err = source.load().unwrap_err();
        assert_eq!(
            (err.file.as_path(), err.line, err.key.as_str()),
            (file.as_path(), Some(line), "business.credential_key_file")
        );
        assert!(
            err.reason.contains("cannot read") && err.reason.contains(&*key_file.to_string_lossy()),
            "{err}"
        );
        std::fs::write(&key_file, "00112233\n").unwrap();
        let err = source.load().unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!(":{line}: business.credential_key_file: "))
        );
        assert!(err.reason.contains("64 hexadecimal"), "{err}");
        std::fs::remove_file(&key_file).unwrap();
        let made = crate::park::generate_credential_key_file(&key_file).unwrap();
        assert_eq!(source.load().unwrap().id(), made.id());
    }
}
