//! One simulated device's MQTT connection (MQTT 3.1.1, plain TCP, clean session): a status
//! topic that is `online` (retained) at every connect and `offline` (retained) as the last
//! will, subscriptions renewed at every connect, reconnects with backoff for as long as it
//! runs, and incoming publishes handed over on a channel.
//!
//! The device's logic publishes through [`Link`] and reads from the channel; the
//! [`LinkDriver`] future must be polled alongside it (it spawns nothing). A publish made while
//! the broker is away is refused rather than queued, as a device with no buffer would lose it;
//! the caller counts it. Clean sessions mean that commands sent while the device was away are
//! not delivered late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::contract::{MAX_PAYLOAD_BYTES, OFFLINE, ONLINE};

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// A publish received on one of the link's subscriptions.
#[derive(Clone, Debug)]
pub(crate) struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Where a link connects and what it announces and listens to.
pub(crate) struct LinkConfig {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub status_topic: String,
    pub subscriptions: Vec<String>,
    /// The broker account's password; its username is the client id.
    pub password: Option<String>,
}

/// The publishing side of a link.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
}

impl Link {
    /// A link and the driver that runs its connection; received publishes go to `incoming`.
    pub fn new(config: LinkConfig, incoming: mpsc::Sender<Incoming>) -> (Link, LinkDriver) {
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024)
            .set_last_will(LastWill::new(
                &config.status_topic,
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(p) = &config.password {
            options.set_credentials(&config.client_id, p);
        }
        let (client, events) = AsyncClient::new(options, 64);
        let connected = Arc::new(AtomicBool::new(false));
        let link = Link {
            client: client.clone(),
            connected: connected.clone(),
        };
        let driver = LinkDriver {
            client,
            events,
            config,
            connected,
            incoming,
        };
        (link, driver)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Queues a QoS 1 publish. Returns false, having sent nothing, while the broker is away or
    /// the queue is full.
    pub fn publish(&self, topic: String, payload: String) -> bool {
        self.is_connected()
            && self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_ok()
    }
}

/// Runs a link's connection; see [`Link::new`].
pub(crate) struct LinkDriver {
    client: AsyncClient,
    events: EventLoop,
    config: LinkConfig,
    connected: Arc<AtomicBool>,
    incoming: mpsc::Sender<Incoming>,
}

impl LinkDriver {
    /// Connects and reconnects until the receiver of incoming publishes is dropped.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut reconnect_delay = Duration::from_millis(200);
        let mut ever_connected = false;
        loop {
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(
                        host = %self.config.host,
                        port = self.config.port,
                        "Connected to the MQTT broker."
                    );
                    self.connected.store(true, Ordering::Relaxed);
                    ever_connected = true;
                    reconnect_delay = Duration::from_millis(200);
                    // The event loop is this task, so these must not wait for queue space.
                    if let Err(error) = self.client.try_publish(
                        &self.config.status_topic,
                        QoS::AtLeastOnce,
                        true,
                        ONLINE,
                    ) {
                        warn!(%error, "Cannot queue the online status.");
                    }
                    for topic in &self.config.subscriptions {
                        if let Err(error) = self.client.try_subscribe(topic, QoS::AtLeastOnce) {
                            warn!(%topic, %error, "Cannot queue a subscription.");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let incoming = Incoming {
                        topic: publish.topic,
                        payload: publish.payload.to_vec(),
                    };
                    if self.incoming.send(incoming).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    if self.connected.swap(false, Ordering::Relaxed) {
                        warn!(%error, "Lost the MQTT broker; reconnecting.");
                    } else if ever_connected {
                        debug!(%error, ?reconnect_delay, "MQTT broker still away; retrying.");
                    } else {
                        debug!(%error, ?reconnect_delay, "MQTT broker not reachable; retrying.");
                    }
                    // Polling again reconnects; the pause keeps a dead broker from being hammered.
                    tokio::time::sleep(reconnect_delay).await;
                    reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
                }
            }
        }
    }
}
