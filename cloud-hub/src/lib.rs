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
//! - [`api`]: `/api/v1`, `/health`, `/ready`, `/metrics`.
//! - [`metrics`]: every `smartpark_hub_*` metric.

pub mod api;
pub mod config;
pub mod enroll;
pub mod metrics;
pub mod store;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sync_protocol::SessionConfig;
use sync_protocol::transport::{HubEndpoint, HubTlsConfig, OperatorCa, RevocationList};

pub use config::{DEFAULT_CONFIG, HubSettings};
pub use enroll::{CreatedToken, create_token, revoke};
pub use store::{BuildingKey, HubStore};
/// The transport, re-exported for the `smartpark` command and tests.
pub use sync_protocol::transport;

/// How often the hub reads the revocation list again (revocations written by
/// `smartpark hub revoke` beside it).
const REVOCATION_POLL: Duration = Duration::from_secs(2);

/// A running hub.
pub struct Hub {
    pub quic_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub store: HubStore,
    pub ca: Arc<OperatorCa>,
    pub registry: Arc<sync::Registry>,
    pub documents: Arc<sync::Documents>,
    pub metrics: Arc<metrics::Metrics>,
    pub revocations: RevocationList,
    endpoint: Arc<HubEndpoint>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        let metrics = Arc::new(metrics::Metrics::default());
        let store = HubStore::open(&settings.db_path(), metrics.clone())?;
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
        let cx = Arc::new(sync::SyncContext {
            store: store.clone(),
            registry: registry.clone(),
            documents: documents.clone(),
            metrics: metrics.clone(),
            session,
            epoch: Instant::now(),
        });
        let listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http_listen))?;
        let api_addr = listener.local_addr()?;
        let router = api::router(api::ApiState {
            store: store.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "The HTTP API stopped.");
            }
        }));
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
        tracing::info!(quic = %quic_addr, api = %api_addr, "Hub listening.");
        Ok(Hub {
            quic_addr,
            api_addr,
            store,
            ca,
            registry,
            documents,
            metrics,
            revocations,
            endpoint,
            tasks,
        })
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
