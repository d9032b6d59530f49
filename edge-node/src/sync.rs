//! The edge's uplink: one QUIC connection to the hub with the certificate from enrollment,
//! driving the sans-IO [`sync_protocol::EdgeSession`] over the store's outbox, and the park
//! documents' automerge sync.
//!
//! The building never waits for this task: decisions and storage go on while it is
//! disconnected, and it resumes from the hub's durable cursors when the link returns.
//! Reconnects back off exponentially with jitter. A refusal that retrying cannot fix (a
//! revoked or expired certificate, a hub from another operator) is reported and retried
//! slowly, so that a fixed hub is picked up without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accounts::Auth;
use device_drivers::driver::Backoff;
use serde_json::json;
use sync_protocol::transport::{self, EdgeTlsConfig, FrameChannel};
use sync_protocol::{
    DocumentMessage, EdgeEvent, EdgeIdentity, EdgeOutbox, EdgeSession, Health, SessionConfig, Time,
    UploadStream,
};

use crate::outbox::SqliteOutbox;
use crate::park::ParkService;

/// Where the hub is and where this edge's identity lives.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub hub: SocketAddr,
    /// Other hubs sharing the first one's database, tried in turn after a connection fails
    /// or ends (one of them has died, or holds the building still).
    pub other_hubs: Vec<SocketAddr>,
    /// The folder `smartpark edge-enroll` wrote the key, certificate and CA into.
    pub identity_dir: PathBuf,
    /// Raw samples per uploaded raw record (see `outbox.rs`).
    pub raw_block_samples: i64,
}

/// The uplink's state as the API shows it.
#[derive(Debug, Default)]
pub struct SyncStatus {
    connected: AtomicBool,
    /// Frame bytes sent to the hub, over all connections.
    bytes_sent: std::sync::atomic::AtomicU64,
    detail: Mutex<SyncDetail>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncDetail {
    hub: Option<String>,
    last_error: Option<String>,
    last_connected_at: Option<i64>,
    acknowledged: [u64; 3],
    written: [u64; 3],
}

impl SyncStatus {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Relaxed)
    }

    /// Per stream (events, rollups, raw): what the hub acknowledged and what was written.
    pub fn cursors(&self) -> ([u64; 3], [u64; 3]) {
        let d = self.detail.lock().unwrap_or_else(|e| e.into_inner());
        (d.acknowledged, d.written)
    }

    pub fn view(&self) -> crate::views::SyncState {
        let d = self
            .detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let backlog = |i: usize| d.written[i].saturating_sub(d.acknowledged[i]);
        let streams = |f: &dyn Fn(usize) -> u64| crate::views::Streams {
            events: f(0),
            rollups: f(1),
            raw: f(2),
        };
        crate::views::SyncState {
            configured: true,
            connected: self.is_connected(),
            hub: d.hub.clone(),
            last_error: d.last_error.clone(),
            last_connected_at: d.last_connected_at,
            acknowledged: streams(&|i| d.acknowledged[i]),
            backlog: streams(&backlog),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SyncDetail)) {
        f(&mut self.detail.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

fn index(s: UploadStream) -> usize {
    match s {
        UploadStream::Events => 0,
        UploadStream::Rollups => 1,
        UploadStream::Raw => 2,
    }
}

/// Runs the uplink over the store's outbox until the task is aborted.
pub async fn run(
    settings: SyncSettings,
    store_path: PathBuf,
    park: Option<ParkService>,
    status: Arc<SyncStatus>,
) {
    run_for(settings, store_path, park, None, status).await
}

/// [`run`], applying the accounts the hub pushes to `auth`.
pub async fn run_for(
    settings: SyncSettings,
    store_path: PathBuf,
    park: Option<ParkService>,
    auth: Option<Auth>,
    status: Arc<SyncStatus>,
) {
    let block = settings.raw_block_samples;
    let open = move || SqliteOutbox::open_with_block(&store_path, block);
    run_inner(settings, open, park, auth, status).await
}

/// Runs the uplink with outboxes made by `open` (one per connection), until aborted.
pub async fn run_with<O: EdgeOutbox>(
    settings: SyncSettings,
    open: impl Fn() -> anyhow::Result<O>,
    park: Option<ParkService>,
    status: Arc<SyncStatus>,
) {
    run_inner(settings, open, park, None, status).await
}

async fn run_inner<O: EdgeOutbox>(
    settings: SyncSettings,
    open: impl Fn() -> anyhow::Result<O>,
    park: Option<ParkService>,
    auth: Option<Auth>,
    status: Arc<SyncStatus>,
) {
    let hubs: Vec<SocketAddr> = std::iter::once(settings.hub)
        .chain(settings.other_hubs.iter().copied())
        .collect();
    // Each attempt goes to the next hub of the list (with one hub, always the same).
    let mut next = 0;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        let hub = hubs[next % hubs.len()];
        next += 1;
        status.update(|d| d.hub = Some(hub.to_string()));
        let result = async {
            let tls = EdgeTlsConfig::load(&settings.identity_dir)?;
            let channel = transport::connect(&tls, hub).await?;
            Ok::<_, transport::TransportError>((tls, channel))
        }
        .await;
        match result {
            Ok((tls, channel)) => {
                backoff.reset();
                let id = tls.identity();
                let identity = EdgeIdentity {
                    edge_id: id.serial.clone(),
                    park: id.park.clone(),
                    building: id.building.clone(),
                };
                tracing::info!(%hub, park = %identity.park, building = %identity.building, "Connected to the hub.");
                let reason = match open() {
                    Ok(mut outbox) => {
                        connection(
                            channel,
                            identity,
                            &settings.identity_dir,
                            &mut outbox,
                            park.as_ref(),
                            auth.as_ref(),
                            &status,
                        )
                        .await
                    }
                    Err(e) => format!("cannot open the outbox: {e:#}"),
                };
                status.connected.store(false, Relaxed);
                tracing::warn!(%hub, %reason, "The hub connection ended.");
                status.update(|d| d.last_error = Some(reason));
            }
            Err(e) => {
                status.update(|d| d.last_error = Some(e.to_string()));
                tracing::warn!(%hub, error = %e, "Cannot sync with the hub.");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection, until it ends; returns why it ended.
async fn connection<O: EdgeOutbox>(
    mut channel: FrameChannel,
    identity: EdgeIdentity,
    identity_dir: &std::path::Path,
    outbox: &mut O,
    park: Option<&ParkService>,
    auth: Option<&Auth>,
    status: &SyncStatus,
) -> String {
    let start = Instant::now();
    let now = || Time::from_micros(start.elapsed().as_micros() as u64);
    let mut session = EdgeSession::new(SessionConfig::default(), identity);
    // Automerge sync states live as long as the connection (the protocol asks for fresh
    // ones after every break).
    let mut doc_states: Vec<(String, automerge::sync::State)> = park
        .map(|p| {
            p.doc_ids()
                .into_iter()
                .map(|d| (d, automerge::sync::State::new()))
                .collect()
        })
        .unwrap_or_default();
    tokio::task::block_in_place(|| session.handle_connected(now(), outbox));
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut counted_bytes = 0;
    let mut health = tokio::time::interval(Duration::from_secs(10));
    let mut renewal: Option<transport::Renewal> = None;
    let mut reconnect_after_send = false;
    loop {
        // Outputs first: frames to send, events to act on.
        if let Some(p) = park {
            for (doc_id, state) in &mut doc_states {
                if let Some(message) = p.generate_sync(doc_id, state) {
                    let _ = session.send_document(DocumentMessage {
                        doc_id: doc_id.clone(),
                        message,
                    });
                }
            }
        }
        loop {
            let frame = tokio::task::block_in_place(|| session.poll_transmit(now(), outbox));
            let Some(frame) = frame else { break };
            if let Err(e) = channel.send(&frame).await {
                return e.to_string();
            }
        }
        if reconnect_after_send {
            // The answer is on its way; the next connection uses the new certificate, and
            // the hub then revokes the old one.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return "the certificate was renewed; connecting again with it".into();
        }
        while let Some(event) = session.poll_event() {
            match event {
                EdgeEvent::Connected { hub_durable } => {
                    status.connected.store(true, Relaxed);
                    status.update(|d| {
                        d.last_error = None;
                        d.last_connected_at = Some(device_drivers::now_micros());
                        d.acknowledged = [hub_durable.events, hub_durable.rollups, hub_durable.raw];
                    });
                }
                EdgeEvent::Acknowledged { stream, through } => {
                    status.update(|d| d.acknowledged[index(stream)] = through)
                }
                EdgeEvent::ConnectionLost { reason } => return reason.to_string(),
                EdgeEvent::RecordsSkipped {
                    stream,
                    from,
                    through,
                } => {
                    tracing::warn!(
                        ?stream,
                        from,
                        through,
                        "Records deleted before upload were reported to the hub as a gap."
                    );
                }
                EdgeEvent::HubBehind {
                    stream,
                    edge_cursor,
                    hub_cursor,
                } => {
                    tracing::warn!(
                        ?stream,
                        edge_cursor,
                        hub_cursor,
                        "The hub holds less than it acknowledged; sending again."
                    );
                }
                EdgeEvent::RecordRejected { stream, seq, error } => {
                    tracing::error!(?stream, seq, %error, "A record too large to send was reported as a gap.");
                }
                EdgeEvent::Document(d) => {
                    if let (Some(p), Some((_, state))) =
                        (park, doc_states.iter_mut().find(|(id, _)| *id == d.doc_id))
                    {
                        if let Err(e) = p.receive_sync(&d.doc_id, state, &d.message).await {
                            tracing::error!(doc = %d.doc_id, error = %e, "A document sync message from the hub could not be applied.");
                        }
                    } else {
                        tracing::debug!(doc = %d.doc_id, "A sync message for a document this edge does not keep.");
                    }
                }
                EdgeEvent::Config(c) => apply_config(auth, &c.body).await,
                EdgeEvent::Command(c) => {
                    let (ok, body, reconnect) = command(&c.body, identity_dir, &mut renewal);
                    let _ = session.send_command_result(sync_protocol::CommandResult {
                        id: c.id,
                        ok,
                        body: body.to_string().into_bytes(),
                    });
                    if reconnect {
                        reconnect_after_send = true;
                    }
                }
            }
        }
        let sent = session.stats().bytes_sent;
        status.bytes_sent.fetch_add(sent - counted_bytes, Relaxed);
        counted_bytes = sent;
        status.update(|d| {
            for s in UploadStream::ALL {
                d.written[index(s)] = outbox.last_written(s);
            }
        });
        let deadline = session.poll_timeout();
        tokio::select! {
            frame = channel.recv() => match frame {
                Ok(Some(bytes)) => tokio::task::block_in_place(|| session.handle_frame(now(), &bytes, outbox)),
                Ok(None) => {
                    session.handle_disconnected(now());
                    return "the hub closed the connection".into();
                }
                Err(e) => {
                    session.handle_disconnected(now());
                    return e.to_string();
                }
            },
            _ = sleep_until(deadline, start) => session.handle_timeout(now()),
            _ = poll.tick() => session.handle_outbox_changed(),
            _ = health.tick() => {
                let d = status.detail.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let backlog = |i: usize| d.written[i].saturating_sub(d.acknowledged[i]);
                let body = json!({"backlog": {"events": backlog(0), "rollups": backlog(1), "raw": backlog(2)}}).to_string();
                let _ = session.send_health(Health { body: body.into_bytes() });
            }
        }
    }
}

/// A command from the hub: `renewCertificate` (answered with a certificate request for a
/// key made here) and `installCertificate` (the certificate the hub issued for it, checked
/// and saved in place of the old one). Returns whether it succeeded, the answer, and
/// whether to connect again (with a new certificate).
fn command(
    body: &[u8],
    identity_dir: &std::path::Path,
    renewal: &mut Option<transport::Renewal>,
) -> (bool, serde_json::Value, bool) {
    use data_encoding::BASE64;
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            false,
            json!({"error": "the command is not a JSON object"}),
            false,
        );
    };
    if body.get("renewCertificate").is_some() {
        return match transport::Renewal::start() {
            Ok((r, csr)) => {
                *renewal = Some(r);
                tracing::info!("The hub asked for a certificate renewal; a new key was made.");
                (
                    true,
                    json!({"certificateRequest": BASE64.encode(&csr)}),
                    false,
                )
            }
            Err(e) => (false, json!({"error": e.to_string()}), false),
        };
    }
    if let Some(pem) = body
        .pointer("/installCertificate/certificate")
        .and_then(|v| v.as_str())
    {
        let Some(r) = renewal.take() else {
            return (
                false,
                json!({"error": "no renewal is under way on this connection"}),
                false,
            );
        };
        let chain = match transport::certificate_chain_from_pem(pem) {
            Ok(c) => c,
            Err(e) => return (false, json!({"error": e.to_string()}), false),
        };
        return match r.install(identity_dir, &chain) {
            Ok(id) => (true, json!({"serial": id.serial}), true),
            Err(e) => {
                tracing::error!(error = %e, "Refused the renewed certificate; the current one stays.");
                (false, json!({"error": e.to_string()}), false)
            }
        };
    }
    tracing::info!("The hub sent a command this edge does not know.");
    (false, json!({"error": "unknown command"}), false)
}

/// A config push: a JSON object whose `accounts` member, when present, is the accounts of
/// this building (`park_model::identity::AccountsPush`). A push that does not parse is
/// refused whole and counted; the accounts already here stay.
async fn apply_config(auth: Option<&Auth>, body: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConfigBody {
        accounts: Option<park_model::identity::AccountsPush>,
    }
    let parsed: ConfigBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "The hub's config push does not parse; it is ignored.");
            return;
        }
    };
    if let (Some(auth), Some(accounts)) = (auth, parsed.accounts) {
        let generation = accounts.generation;
        match auth.apply_hub_accounts(accounts).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(generation, "An older accounts push; ignored."),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "The hub's accounts were not applied.")
            }
        }
    }
}

async fn sleep_until(deadline: Option<Time>, start: Instant) {
    match deadline {
        Some(t) => {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                start + Duration::from_micros(t.as_micros()),
            ))
            .await
        }
        None => std::future::pending().await,
    }
}
