//! The cloud hub, first cut: the QUIC endpoint the edges sync with (mutual TLS with the
//! operator's CA, enrollment by one-time token), SQLite storage of everything the edges
//! upload, stored once each, the parks' automerge documents, and the dashboard API.
//!
//! The hub is authoritative for nothing a building needs in order to run. Not yet here:
//! PostgreSQL, InfluxDB, tenants, billing, users and roles (the API has no authentication
//! yet), config and command pushes to edges.
//!
//! - [`config`]: the TOML config and [`HubSettings`].
//! - [`store`]: the SQLite store and the [`sync_protocol::HubSink`] of each building.
//! - [`sync`]: one task per edge connection; the document replicas.
//! - [`enroll`]: tokens, the [`sync_protocol::transport::Enroller`], revocation.
//! - [`api`]: `/api/v1`, `/health`, `/ready`, `/metrics`, served over HTTPS (a certificate
//!   from files or issued from the operator's CA) or plain HTTP on loopback, by
//!   [`transport::serve_http`].
//! - [`metrics`]: every `smartpark_hub_*` metric.

pub mod api;
pub mod audit;
pub mod billing;
pub mod carparks;
pub mod config;
pub mod console;
pub mod energy;
pub mod enroll;
pub mod import;
pub mod influx;
pub mod leads;
pub mod leasing;
pub mod master;
pub mod metrics;
pub mod notify;
pub mod payments;
pub mod people;
pub mod spaces;
pub mod store;
pub mod sync;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sync_protocol::SessionConfig;
use sync_protocol::transport::{
    HubEndpoint, HubTlsConfig, OperatorCa, RevocationList, ServerTls, Validity,
};

pub use config::{DEFAULT_CONFIG, HttpTls, HubSettings};
pub use enroll::{CreatedToken, TokenInfo, cancel_token, create_token, list_tokens, revoke};
pub use store::{BuildingKey, HubStore};
/// The transport, re-exported for the `smartpark` command and tests.
pub use sync_protocol::transport;

/// How often the hub reads the revocation list again (revocations written by
/// `smartpark hub revoke` beside it).
const REVOCATION_POLL: Duration = Duration::from_secs(2);
/// How often queued notifications are sent (and overdue bills and ending contracts looked
/// for).
const NOTIFY_EVERY: Duration = Duration::from_secs(10);

/// A running hub.
pub struct Hub {
    pub quic_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The certificate (PEM) an HTTPS client of the API should trust: the operator's CA
    /// for a certificate issued from it, the last certificate of a configured chain;
    /// `None` for plain HTTP.
    pub api_trust_pem: Option<String>,
    pub store: HubStore,
    pub ca: Arc<OperatorCa>,
    pub registry: Arc<sync::Registry>,
    pub documents: Arc<sync::Documents>,
    pub metrics: Arc<metrics::Metrics>,
    pub revocations: RevocationList,
    /// Users, sessions and tokens of the API.
    pub auth: accounts::Auth,
    _lock: HubLock,
    endpoint: Arc<HubEndpoint>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The hub's hold on its data dir: one running hub at a time, and no key rotation
/// under a running hub (it would keep sealing with the old key).
#[derive(Debug)]
pub struct HubLock(#[allow(dead_code)] std::fs::File);

impl HubLock {
    /// Takes the lock, or says that another process holds it.
    pub fn take(data_dir: &std::path::Path) -> anyhow::Result<HubLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let path = data_dir.join("hub.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.try_lock().map_err(|_| {
            anyhow::anyhow!("another process (a running hub?) holds {}", path.display())
        })?;
        Ok(HubLock(f))
    }
}

/// The accounts of the hub's API, over its database: written in immediate transactions
/// on connections of their own (logins and account changes are rare next to uploads).
async fn open_auth(
    settings: &HubSettings,
    store: &HubStore,
    metrics: &Arc<metrics::Metrics>,
) -> anyhow::Result<accounts::Auth> {
    let writer: accounts::Writer = {
        let store = store.clone();
        Arc::new(move |mut op| {
            let store = store.clone();
            Box::pin(async move { store.admin(move |tx| Ok(op(tx)?)).await })
        })
    };
    accounts::Auth::open(accounts::auth::AuthConfig {
        scope: park_model::identity::Scope::Operator,
        settings: accounts::AuthSettings {
            secure_cookies: settings.http_is_tls(),
            ..settings.auth.clone()
        },
        own: accounts::auth::Source::Hub,
        mirror: accounts::audit::Mirror::None,
        db: settings.database.clone(),
        writer,
        key_file: settings.key_file.clone(),
        metrics: metrics.auth.clone(),
    })
    .await
}

/// Document changes another hub sharing the database stored: every second, each document
/// whose version moved is read from the database and merged into this hub's replica (which
/// tells this hub's edges of the park).
async fn follow_documents(store: HubStore, documents: Arc<sync::Documents>) {
    let mut seen: std::collections::HashMap<(String, String), i64> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let versions = store
            .read(|c| {
                c.query_all("SELECT park, doc_id, version FROM doc_versions", [], |r| {
                    Ok((
                        (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        r.get::<_, i64>(2)?,
                    ))
                })
            })
            .await;
        let versions = match versions {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read the document versions.");
                continue;
            }
        };
        for ((park, doc_id), version) in versions {
            if seen.get(&(park.clone(), doc_id.clone())) == Some(&version) {
                continue;
            }
            let (p, d) = (park.clone(), doc_id.clone());
            let parts = match store.read(move |c| sync::stored_parts(c, &p, &d)).await {
                Ok(parts) => parts,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "Cannot read a stored document.");
                    continue;
                }
            };
            let (docs, p, d) = (documents.clone(), park.clone(), doc_id.clone());
            let merged = tokio::task::spawn_blocking(move || {
                let parts: Vec<Vec<u8>> = parts.into_iter().map(|(_, b)| b).collect();
                docs.merge_stored(&p, &d, &parts)
            })
            .await;
            match merged {
                Ok(Ok(changed)) => {
                    if changed {
                        tracing::debug!(%park, doc = %doc_id, "Merged a document change another hub stored.");
                    }
                    seen.insert((park, doc_id), version);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%park, doc = %doc_id, error = %format!("{e:#}"), "A stored document does not merge.")
                }
                Err(e) => tracing::warn!(error = %e, "The document merge task failed."),
            }
        }
    }
}

/// Merges the seed documents under `dir` (one folder per park) into the hub's replicas.
fn import_seed(
    documents: &sync::Documents,
    store: &HubStore,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let parks = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the seed folder {}", dir.display()))?;
    for park in parks {
        let park = park?;
        if !park.file_type()?.is_dir() {
            continue;
        }
        let park_id = park.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(park.path())? {
            let path = file?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".automerge") else {
                continue;
            };
            let doc_id = match stem.strip_prefix("building-") {
                Some(b) => format!("building/{b}"),
                None => stem.to_string(),
            };
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let changed = documents
                .import(store, &park_id, &doc_id, &bytes)
                .with_context(|| format!("cannot import {}", path.display()))?;
            tracing::info!(park = %park_id, doc = %doc_id, changed, "Imported a seed document.");
        }
    }
    Ok(())
}

impl Hub {
    /// Opens the store, loads (or creates) the CA, issues the hub's server certificate,
    /// and starts listening. Returns once both listeners are bound.
    pub async fn start(settings: HubSettings) -> anyhow::Result<Hub> {
        Self::start_with(settings, SessionConfig::default()).await
    }

    /// The same with the sync session's timers and windows (tests shorten them).
    pub async fn start_with(settings: HubSettings, session: SessionConfig) -> anyhow::Result<Hub> {
        let (ca, created) =
            OperatorCa::load_or_create(&settings.ca_cert, &settings.ca_key, &settings.operator)?;
        if created {
            tracing::warn!(
                cert = %settings.ca_cert.display(),
                key = %settings.ca_key.display(),
                "Created a new operator CA; keep its key secret and backed up."
            );
        }
        tracing::info!(fingerprint = %ca.fingerprint(), "Operator CA loaded.");
        let ca = Arc::new(ca);
        let lock = HubLock::take(&settings.data_dir)?;
        let metrics = Arc::new(metrics::Metrics::default());
        let store = HubStore::open(&settings.database, metrics.clone())?;
        // This process among the hubs that may share the database (on PostgreSQL).
        let hub_id = format!("hub-{:016x}", fastrand::u64(..));
        let revoked = store.read(enroll::revoked_serials).await?;
        let revocations = RevocationList::new(revoked);
        let tls = HubTlsConfig::new(&ca, &settings.server_names, revocations.clone())?;
        let enroller = Arc::new(enroll::HubEnroller {
            store: store.clone(),
            ca: ca.clone(),
            edge_cert_days: settings.edge_cert_days,
            metrics: metrics.clone(),
        });
        let endpoint = HubEndpoint::bind(settings.quic_listen, &tls, enroller)
            .with_context(|| format!("cannot listen for edges on {}", settings.quic_listen))?;
        let quic_addr = endpoint.local_addr();
        let registry = Arc::new(sync::Registry::default());
        let documents = Arc::new(sync::Documents::load(&store).await?);
        if let Some(dir) = &settings.documents_seed_dir {
            import_seed(&documents, &store, dir)?;
        }
        let auth = open_auth(&settings, &store, &metrics).await?;
        let cx = Arc::new(sync::SyncContext {
            auth: auth.clone(),
            ca: ca.clone(),
            edge_cert_days: settings.edge_cert_days,
            renew_before: settings.renew_before,
            store: store.clone(),
            registry: registry.clone(),
            documents: documents.clone(),
            metrics: metrics.clone(),
            session,
            epoch: Instant::now(),
            hub_id: hub_id.clone(),
        });
        let http_tls = http_tls(&settings, &ca)?;
        let api_trust_pem = http_tls.as_ref().map(|t| t.trust_pem().to_string());
        let listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http_listen))?;
        let api_addr = listener.local_addr()?;
        let mut credential_keys = std::collections::HashMap::new();
        for (park, file) in &settings.credential_keys {
            let (key, loose) = park_model::directory::CredentialKey::read_file(file)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("[documents.credential_keys] {park}"))?;
            if loose {
                tracing::warn!(file = %file.display(), "The credential key file can be read by other users than its owner: chmod 600 it.");
            }
            credential_keys.insert(park.clone(), key);
        }
        let payments = match &settings.payments {
            Some(p) => Some(Arc::new(
                payments::Provider::load(p.clone(), api_addr).context("[payments]")?,
            )),
            None => None,
        };
        let router = api::router(api::ApiState {
            payments,
            credential_keys: Arc::new(credential_keys),
            store: store.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            auth: auth.clone(),
            documents: documents.clone(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(auth.clone().run_housekeeping()));
        {
            let m = metrics.clone();
            let failed = move || metrics::Metrics::add(&m.tls_handshake_failures_total, 1);
            tasks.push(tokio::spawn(async move {
                let served = transport::serve_http(listener, router, http_tls, failed).await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "The HTTP API stopped.");
                }
            }));
        }
        let endpoint = Arc::new(endpoint);
        let accepting = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((identity, channel)) = accepting.accept().await {
                let span = tracing::info_span!("edge", park = %identity.park, building = %identity.building, serial = %identity.serial);
                tokio::spawn(tracing::Instrument::instrument(
                    sync::run_connection(cx.clone(), identity, channel),
                    span,
                ));
            }
        }));
        {
            let (store, revocations, registry) =
                (store.clone(), revocations.clone(), registry.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(REVOCATION_POLL);
                loop {
                    tick.tick().await;
                    match store.read(enroll::revoked_serials).await {
                        Ok(serials) => {
                            revocations.replace(serials);
                            registry.close_revoked(|s| revocations.is_revoked(s));
                        }
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Cannot read the revocation list."),
                    }
                }
            }));
        }
        if store.dialect() == park_db::Dialect::Postgres {
            // Other hubs may share the database: their logins, logouts and account changes
            // apply here within two seconds, and the buildings of a hub that died are
            // marked disconnected once its leases run out.
            tasks.push(auth.follow_store(Duration::from_secs(2)));
            tasks.push(tokio::spawn(follow_documents(
                store.clone(),
                documents.clone(),
            )));
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(store::LEASE_RENEWAL);
                loop {
                    tick.tick().await;
                    match store.sweep_leases().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(buildings = n, "Buildings whose hub stopped renewing their connection are disconnected."),
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Cannot sweep the building leases."),
                    }
                }
            }));
        }
        {
            // Access and parking logs past their retention, every hour.
            let (store, days) = (store.clone(), settings.log_retention_days);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    let cutoff = store::now_micros() - i64::from(days) * 86_400_000_000;
                    let deleted = store
                        .admin(move |tx| {
                            let kind = store::event_kind(tx.dialect());
                            Ok(tx.execute(
                                &format!(
                                    "DELETE FROM events WHERE ts < ?1 AND (
                                       {kind} LIKE 'access.%' OR {kind} LIKE 'parking.%')"
                                ),
                                [cutoff],
                            )?)
                        })
                        .await;
                    match deleted {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "Access and parking logs past their retention deleted."),
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Log retention failed; tried again in an hour."),
                    }
                }
            }));
        }
        if let Some(channel_settings) = settings.notifications.clone() {
            let channel = notify::channel(&channel_settings).context("[notifications]")?;
            let (store, documents, hub_id) = (store.clone(), documents.clone(), hub_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(NOTIFY_EVERY);
                loop {
                    tick.tick().await;
                    // One hub sends for all that share the database.
                    match store.take_lease("job/notifications".into(), &hub_id).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "Cannot take the notification job's lease.");
                            continue;
                        }
                    }
                    let names = store
                        .read(|c| c.query_all("SELECT park FROM contracts UNION SELECT park FROM bills", park_db::params![], |r| r.get::<_, String>(0)))
                        .await
                        .unwrap_or_default();
                    let d2 = documents.clone();
                    let parks: Vec<(String, i32)> = tokio::task::spawn_blocking(move || {
                        names
                            .into_iter()
                            .filter_map(|p| {
                                let offset = d2.read_directory(&p, |d| d.utc_offset_minutes())?.ok()?;
                                Some((p, offset))
                            })
                            .collect()
                    })
                    .await
                    .unwrap_or_default();
                    if let Err(e) = notify::send_due(&store, channel.clone(), parks).await {
                        tracing::warn!(error = %format!("{e:#}"), "The notification round failed; tried again soon.");
                    }
                }
            }));
        }
        if let Some(influx) = settings.influx.clone() {
            tracing::info!(url = %influx.url, bucket = %influx.bucket, "Exporting telemetry to the time-series engine.");
            tasks.push(tokio::spawn(influx::run(
                store.clone(),
                influx,
                metrics.clone(),
                hub_id.clone(),
            )));
        }
        tracing::info!(quic = %quic_addr, api = %api_addr, tls = api_trust_pem.is_some(), "Hub listening.");
        Ok(Hub {
            quic_addr,
            api_addr,
            api_trust_pem,
            store,
            ca,
            registry,
            documents,
            metrics,
            revocations,
            auth,
            _lock: lock,
            endpoint,
            tasks,
        })
    }

    /// The API's base URL, `https://` or `http://` and its address.
    pub fn api_url(&self) -> String {
        let scheme = if self.api_trust_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.api_addr)
    }

    /// Closes every edge connection and the listeners, and waits for queued writes to
    /// commit.
    pub async fn shutdown(self) {
        self.registry.close_all("the hub is shutting down");
        self.endpoint.close();
        for t in &self.tasks {
            t.abort();
        }
        self.store.flush().await;
    }
}

/// The HTTP API's certificate as the config says: none (plain HTTP), from files, or
/// issued now from the operator's CA for the hub's names and its listen address.
fn http_tls(settings: &HubSettings, ca: &OperatorCa) -> anyhow::Result<Option<ServerTls>> {
    match &settings.http_tls {
        HttpTls::Plain => Ok(None),
        HttpTls::Files { cert, key } => Ok(Some(ServerTls::load(cert, key)?)),
        HttpTls::IssueFromCa => {
            let mut names = settings.server_names.clone();
            let ip = settings.http_listen.ip();
            if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
            let issued = ca
                .issue_hub_cert(&names, Validity::days_from_now(2 * 365))
                .context("cannot issue the HTTP API's certificate")?;
            // The root goes with the chain so that a client can be pointed at either.
            let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
            Ok(Some(ServerTls::from_pem(&chain, &issued.key_pem)?))
        }
    }
}
