//! Wiring of the edge node: the store, the device drivers (one task per device or serial
//! bus), the embedded MQTT broker and its device mapping, and the LAN API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use device_drivers::mqtt::{MqttDevices, MqttInput};
use device_drivers::profile::PointSource;
use device_drivers::{
    Connection, DeviceSpec, DeviceStatus, DriverOutput, PointKey, Sample, Timestamp, WriteRequest,
    now_micros,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alarms::Alarms;
use crate::config::EdgeSettings;
use crate::field::FieldMessage;
use crate::metrics::Metrics;
use crate::park::ParkService;
use crate::store::{PointInfo, Store, StoreConfig};

/// One device as the node tracks it.
pub struct DeviceEntry {
    pub spec: DeviceSpec,
    status: Mutex<(DeviceStatus, Timestamp)>,
    writes: Option<mpsc::Sender<WriteRequest>>,
}

impl DeviceEntry {
    pub fn status(&self) -> (DeviceStatus, Timestamp) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn writer(&self) -> Option<&mpsc::Sender<WriteRequest>> {
        self.writes.as_ref()
    }
}

/// All devices of the building, by id.
pub type Devices = Arc<BTreeMap<String, DeviceEntry>>;

/// What drivers talk to: samples go to the store, status changes to the device table.
#[derive(Clone)]
struct NodeOutput {
    store: Store,
    devices: Devices,
    alarms: Alarms,
}

impl DriverOutput for NodeOutput {
    /// Rules first, in line, then the store.
    async fn samples(&self, batch: Vec<Sample>) {
        self.alarms.evaluate(&batch).await;
        self.store.ingest(batch).await;
    }

    fn status(&self, device: &str, status: DeviceStatus) {
        set_status(&self.devices, device, status);
    }
}

fn set_status(devices: &Devices, device: &str, status: DeviceStatus) {
    let Some(entry) = devices.get(device) else {
        return;
    };
    let mut s = entry.status.lock().unwrap_or_else(|e| e.into_inner());
    if s.0 != status {
        match &status {
            DeviceStatus::Online => tracing::info!(device, "Device online."),
            DeviceStatus::Offline { reason } => tracing::warn!(device, %reason, "Device offline."),
        }
        *s = (status, now_micros());
    }
}

/// A running edge node.
pub struct EdgeNode {
    pub settings: EdgeSettings,
    pub api_addr: SocketAddr,
    /// The certificate (PEM) an HTTPS client of the API should trust; `None` for plain HTTP.
    api_trust_pem: Option<String>,
    /// Where devices connect to the building's broker (MQTT 3.1.1 and 5).
    pub mqtt: Option<SocketAddr>,
    /// Where devices with a certificate connect, when configured.
    pub mqtt_tls: Option<SocketAddr>,
    pub store: Store,
    pub devices: Devices,
    /// Doors and barriers, when this node decides them.
    pub park: Option<ParkService>,
    pub alarms: Alarms,
    /// Accounts, sessions and tokens of the LAN API.
    pub auth: accounts::Auth,
    /// What the LAN API serves from (for benchmarks that serve it again).
    pub api_state: crate::api::ApiState,
    tasks: Vec<JoinHandle<()>>,
}

impl EdgeNode {
    /// Opens the store, starts every device, the broker and the API. Returns once all are
    /// listening.
    pub async fn start(settings: EdgeSettings) -> anyhow::Result<EdgeNode> {
        let metrics = Arc::new(Metrics::default());
        let points: Vec<PointInfo> = settings
            .devices
            .iter()
            .flat_map(|d| {
                d.profile.points.iter().map(|p| PointInfo {
                    key: PointKey::new(&d.id, &p.name),
                    unit: p.unit.clone(),
                    kind: p.kind,
                    wrap: p.counter_wrap(),
                })
            })
            .collect();
        let store_config = StoreConfig {
            raw_retention_days: settings.storage.raw_retention_days,
            minute_rollup_retention_days: settings.storage.minute_rollup_retention_days,
            rollup_retention_days: settings.storage.rollup_retention_days,
            log_retention_days: settings.storage.log_retention_days,
            budget_bytes: settings.storage.disk_budget_mb * 1024 * 1024,
            max_batch_samples: settings.storage.max_batch_samples,
            ..StoreConfig::new(settings.data_dir.join("edge.sqlite"))
        };
        let store = {
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || Store::open(store_config, &points, metrics))
                .await??
        };

        let mut write_rx = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for spec in &settings.devices {
            let writable = spec.profile.points.iter().any(|p| p.writable)
                && !matches!(spec.connection, Connection::Mqtt { .. });
            let writes = writable.then(|| {
                let (tx, rx) = mpsc::channel(16);
                write_rx.insert(spec.id.clone(), rx);
                tx
            });
            entries.insert(
                spec.id.clone(),
                DeviceEntry {
                    spec: spec.clone(),
                    status: Mutex::new((
                        DeviceStatus::Offline {
                            reason: "not yet connected".into(),
                        },
                        now_micros(),
                    )),
                    writes,
                },
            );
        }
        let devices: Devices = Arc::new(entries);
        let point_keys: Vec<String> = settings
            .devices
            .iter()
            .flat_map(|d| {
                d.profile
                    .points
                    .iter()
                    .map(|p| format!("{}/{}", d.id, p.name))
            })
            .collect();
        let (alarms, alarm_actions) = Alarms::open(
            store.clone(),
            metrics.clone(),
            settings.rules_file.clone(),
            &point_keys,
        )
        .await?;
        let output = NodeOutput {
            store: store.clone(),
            devices: devices.clone(),
            alarms: alarms.clone(),
        };
        let mut tasks = Vec::new();

        let mut rtu_buses: BTreeMap<String, Vec<(DeviceSpec, mpsc::Receiver<WriteRequest>)>> =
            BTreeMap::new();
        // BACnet devices share one local UDP port (one `Network`) per configured port.
        let mut bacnet_networks = BTreeMap::new();
        for (network, specs) in device_drivers::bacnet::plan_networks(&settings.devices)
            .map_err(|e| anyhow::anyhow!("BACnet devices: {e}"))?
        {
            for s in specs {
                bacnet_networks.insert(s.id.clone(), network.clone());
            }
        }
        for spec in &settings.devices {
            let rx = write_rx
                .remove(&spec.id)
                .unwrap_or_else(|| mpsc::channel(1).1);
            // The drivers open their own spans, per device or per serial port.
            match &spec.connection {
                Connection::ModbusTcp { .. } => {
                    let fut =
                        device_drivers::modbus::run_tcp_device(spec.clone(), output.clone(), rx);
                    tasks.push(tokio::spawn(fut));
                }
                Connection::ModbusRtu(line) => rtu_buses
                    .entry(line.port.clone())
                    .or_default()
                    .push((spec.clone(), rx)),
                Connection::Mqtt { .. } => {}
                Connection::Bacnet(_) => {
                    let network = bacnet_networks
                        .get(&spec.id)
                        .cloned()
                        .context("a BACnet device without a network")?;
                    let fut = device_drivers::bacnet::run_device(
                        spec.clone(),
                        network,
                        output.clone(),
                        rx,
                    );
                    tasks.push(tokio::spawn(fut));
                }
            }
        }
        for bus in rtu_buses.into_values() {
            let fut = device_drivers::modbus::run_rtu_bus(bus, output.clone());
            tasks.push(tokio::spawn(fut));
        }

        let (broker, park_service, publisher) = match &settings.mqtt {
            Some(m) => {
                let mapping = Arc::new(Mutex::new(MqttDevices::new(&settings.devices)));
                let telemetry = mapping.lock().unwrap_or_else(|e| e.into_inner()).topics();
                let broker = crate::broker::Broker::start(
                    m,
                    &settings.data_dir,
                    &telemetry,
                    metrics.broker.clone(),
                )
                .await?;
                let field_topics: Vec<String> = if settings.business.is_some() {
                    crate::field::SUBSCRIPTIONS
                        .iter()
                        .map(|t| t.to_string())
                        .collect()
                } else {
                    Vec::new()
                };
                let (field_tx, mut field_rx) = mpsc::channel::<FieldMessage>(1024);
                // Door and lane messages arrive on a link of their own, so that a flood of
                // telemetry never stands in front of a door read.
                let (client, task) = crate::broker::link(
                    &broker,
                    crate::broker::LinkKind::Field,
                    field_topics,
                    field_handler(field_tx, metrics.clone()),
                );
                tasks.push(task);
                let publisher = crate::broker::Publisher::new(client, broker.health.clone());
                let park_service = match &settings.business {
                    Some(b) => {
                        let mut service = ParkService::open(
                            store.clone(),
                            b.clone(),
                            Some(publisher.clone()),
                            metrics.clone(),
                        )
                        .await?;
                        service.set_alarms(alarms.clone());
                        let s2 = service.clone();
                        tasks.push(tokio::spawn(async move {
                            while let Some(m) = field_rx.recv().await {
                                s2.handle(m).await;
                            }
                        }));
                        Some(service)
                    }
                    None => None,
                };
                if !telemetry.is_empty() {
                    let (_client, task) = crate::broker::link(
                        &broker,
                        crate::broker::LinkKind::Telemetry,
                        telemetry,
                        telemetry_handler(mapping.clone(), output.clone(), metrics.clone()),
                    );
                    tasks.push(task);
                }
                tasks.push(stale_points(mapping, output.clone()));
                (Some(broker), park_service, Some(publisher))
            }
            None => (None, None, None),
        };
        let mqtt_addr = broker.as_ref().map(|b| b.addr);
        let mqtt_tls_addr = broker.as_ref().and_then(|b| b.tls_addr);
        let broker_health = broker.as_ref().map(|b| b.health.clone());
        if let Some(b) = broker {
            tasks.push(b.task);
        }

        tasks.push(tokio::spawn(crate::alarms::run_actions(
            alarm_actions,
            crate::alarms::ActionTargets {
                devices: devices.clone(),
                publisher,
            },
            store.clone(),
            metrics.clone(),
        )));
        tasks.push(tokio::spawn(crate::alarms::run_webhooks(
            store.clone(),
            metrics.clone(),
        )));
        tasks.push(tokio::spawn(alarms.clone().run()));

        let writer: accounts::Writer = {
            let store = store.clone();
            Arc::new(move |op| {
                let store = store.clone();
                Box::pin(async move { store.write(crate::store::account_op(op)).await })
            })
        };
        let auth = accounts::Auth::open(accounts::auth::AuthConfig {
            scope: park_model::identity::Scope::building(&settings.park, &settings.building),
            settings: accounts::AuthSettings {
                secure_cookies: settings.api_tls,
                ..settings.auth.clone()
            },
            own: accounts::auth::Source::Local,
            mirror: accounts::audit::Mirror::Events,
            db: park_db::Target::Sqlite(settings.data_dir.join("edge.sqlite")),
            writer,
            key_file: accounts::auth::key_path(&settings.data_dir),
            metrics: metrics.auth.clone(),
        })
        .await?;
        tasks.push(tokio::spawn(auth.clone().run_housekeeping()));
        let sync_status = Arc::new(crate::sync::SyncStatus::default());
        if let Some(sync) = &settings.sync {
            let fut = crate::sync::run_for(
                sync.clone(),
                settings.data_dir.join("edge.sqlite"),
                park_service.clone(),
                Some(auth.clone()),
                sync_status.clone(),
            );
            tasks.push(tokio::spawn(tracing::Instrument::instrument(
                fut,
                tracing::info_span!("hub", hub = %sync.hub),
            )));
        }

        let api_tls = api_tls(&settings)?;
        let api_trust_pem = api_tls.as_ref().map(|t| t.trust_pem().to_string());
        let listener = tokio::net::TcpListener::bind(settings.api_listen)
            .await
            .with_context(|| format!("cannot listen on {} for the API", settings.api_listen))?;
        let api_addr = listener.local_addr()?;
        let api_metrics = metrics.clone();
        let state = crate::api::ApiState::new(crate::api::ApiParts {
            park: settings.park.clone(),
            building: settings.building.clone(),
            store: store.clone(),
            devices: devices.clone(),
            metrics,
            park_service: park_service.clone(),
            alarms: alarms.clone(),
            sync: settings.sync.is_some().then(|| sync_status.clone()),
            auth: auth.clone(),
            broker: broker_health,
        });
        let api_state = state.clone();
        let app = crate::api::router(state);
        let failed = move || {
            let failures = &api_metrics.tls_handshake_failures_total;
            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        tasks.push(tokio::spawn(async move {
            // Handlers get the peer's address as `ConnectInfo<SocketAddr>` either way.
            let served = sync_protocol::transport::serve_http(listener, app, api_tls, failed).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "The API server stopped.");
            }
        }));
        Ok(EdgeNode {
            api_trust_pem,
            auth,
            api_state,
            park: park_service,
            alarms,
            settings,
            api_addr,
            mqtt: mqtt_addr,
            mqtt_tls: mqtt_tls_addr,
            store,
            devices,
            tasks,
        })
    }

    /// The certificate (PEM) an HTTPS client of the API should trust: the operator's CA
    /// for the certificate enrollment issued, the self-signed certificate itself, or the
    /// last certificate of a configured chain. `None` when the API is plain HTTP.
    pub fn api_trust_pem(&self) -> Option<&str> {
        self.api_trust_pem.as_deref()
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

    /// Stops the drivers and the API, then waits until every sample already handed to the
    /// store is committed.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.store.flush().await;
    }
}

/// What the field link does with each publish: a door or lane message goes to the park
/// service; a bad one is refused and counted.
fn field_handler(
    field: mpsc::Sender<FieldMessage>,
    metrics: Arc<Metrics>,
) -> impl FnMut(
    crate::broker::Received,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
+ Send
+ 'static {
    move |r| {
        let field = field.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            metrics.mqtt_messages_total.fetch_add(1, Relaxed);
            match crate::field::parse(&r.topic, &r.payload, now_micros()) {
                Ok(Some(m)) => {
                    if field.send(m).await.is_err() {
                        tracing::error!("The door and lane service has stopped.");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics.invalid_input("mqtt_payload");
                    tracing::warn!(topic = %e.topic, reason = %e.reason, "Refused an MQTT message.");
                }
            }
        })
    }
}

/// What the telemetry link does with each publish: samples and status of MQTT devices.
fn telemetry_handler(
    mapping: Arc<Mutex<MqttDevices>>,
    output: NodeOutput,
    metrics: Arc<Metrics>,
) -> impl FnMut(
    crate::broker::Received,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
+ Send
+ 'static {
    move |r| {
        metrics.mqtt_messages_total.fetch_add(1, Relaxed);
        let result = mapping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle_publish(&r.topic, &r.payload, now_micros());
        let output = output.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            match result {
                Ok(MqttInput::Samples(s)) => {
                    if let Some(first) = s.first() {
                        output.status(first.point.device(), DeviceStatus::Online);
                    }
                    // Waits while the store is behind; the broker queues meanwhile.
                    output.samples(s).await
                }
                Ok(MqttInput::Status { device, online }) => {
                    let status = if online {
                        DeviceStatus::Online
                    } else {
                        DeviceStatus::Offline {
                            reason: "last will or status topic".into(),
                        }
                    };
                    output.status(&device, status);
                }
                Ok(MqttInput::Unmapped) => {
                    metrics.mqtt_unmapped_messages_total.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    metrics.invalid_input("mqtt_payload");
                    tracing::warn!(topic = %e.topic, reason = %e.reason, "Refused an MQTT payload.");
                }
            }
        })
    }
}

/// MQTT points not heard from within their profile's time become stale, once a second.
fn stale_points(mapping: Arc<Mutex<MqttDevices>>, output: NodeOutput) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let (stale, changes) = mapping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .poll_timeouts(now_micros());
            for c in changes {
                let status = if c.online {
                    DeviceStatus::Online
                } else {
                    DeviceStatus::Offline { reason: c.reason }
                };
                output.status(&c.device, status);
            }
            output.samples(stale).await;
        }
    })
}

/// The points of a device with their profile facts, in profile order.
pub fn device_points(
    spec: &DeviceSpec,
) -> impl Iterator<Item = (PointKey, &device_drivers::profile::PointSpec)> {
    spec.profile
        .points
        .iter()
        .map(move |p| (PointKey::new(&spec.id, &p.name), p))
}

/// Whether a point is read from a register or from a topic, for display.
pub fn point_source(p: &device_drivers::profile::PointSpec) -> String {
    match &p.source {
        PointSource::Modbus(m) => {
            format!("{:?} {} {:?}", m.table, m.address, m.data_type).to_lowercase()
        }
        PointSource::Mqtt(m) => format!("{} {}", m.topic, m.pointer),
        PointSource::Bacnet(b) => format!("{} {}", b.object_type, b.instance),
    }
}

/// How long a self-signed API certificate is made valid for; it is replaced 30 days
/// before it ends, or when it no longer names the listen address.
const SELF_SIGNED_DAYS: u32 = 5 * 365;

/// The LAN API's certificate, in order: the configured files; the LAN certificate that
/// enrollment saved in the identity dir; a self-signed one kept in `data_dir/tls`. `None`
/// for plain HTTP (which the config allows only on loopback).
fn api_tls(settings: &EdgeSettings) -> anyhow::Result<Option<sync_protocol::transport::ServerTls>> {
    use sync_protocol::transport::{CertifiedKeyPem, ServerTls};
    if !settings.api_tls {
        return Ok(None);
    }
    if let Some((cert, key)) = &settings.api_tls_files {
        let tls = ServerTls::load(cert, key)
            .with_context(|| format!("cannot load the API certificate {}", cert.display()))?;
        tracing::info!(cert = %cert.display(), "The API serves HTTPS with the configured certificate.");
        return Ok(Some(tls));
    }
    let listen_ip = settings.api_listen.ip();
    if let Some(sync) = &settings.sync {
        match ServerTls::load_lan(&sync.identity_dir) {
            Ok(Some(tls)) => {
                let (names, not_after) = tls.names_and_end();
                if !listen_ip.is_unspecified() && !names.contains(&listen_ip.to_string()) {
                    tracing::warn!(?names, listen = %listen_ip, "The LAN certificate from enrollment does not name the address the API listens on.");
                }
                if not_after < device_drivers::now_micros() / 1_000_000 + 30 * 86_400 {
                    tracing::warn!(
                        ?names,
                        "The LAN certificate from enrollment ends within 30 days: enroll this edge again."
                    );
                }
                tracing::info!(
                    ?names,
                    "The API serves HTTPS with the LAN certificate from enrollment."
                );
                return Ok(Some(tls));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "Cannot use the LAN certificate from enrollment; serving a self-signed one.")
            }
        }
    }
    // Loopback names always, so the node itself and a tunnel reach it; the listen address
    // when it is a specific one.
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen_ip.is_unspecified() {
        names.push(listen_ip.to_string());
    }
    let dir = settings.data_dir.join("tls");
    let (cert, key) = (dir.join("api-cert.pem"), dir.join("api-key.pem"));
    let (pem, created) =
        CertifiedKeyPem::load_or_create_self_signed(&cert, &key, &names, SELF_SIGNED_DAYS)
            .context("cannot make the API's self-signed certificate")?;
    if created {
        tracing::info!(cert = %cert.display(), ?names, "Made a self-signed certificate for the API.");
    }
    Ok(Some(ServerTls::from_certified(&pem)?))
}
