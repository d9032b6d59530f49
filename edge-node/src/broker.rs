//! The building's embedded MQTT broker (rumqttd), for door controllers, cameras and
//! sensors, with MQTT 3.1.1 and MQTT 5 on separate listeners.
//!
//! rumqttd starts its own runtimes and blocks, so it runs on a thread of its own; the node
//! talks to it through an in-process link. It has no shutdown: it ends with the process.
//!
//! rumqttd leaves Nagle's algorithm on for the connections it accepts and has no setting for
//! it. A door controller that publishes a read on its one connection gets the broker's PUBACK,
//! and the unlock command that follows a millisecond later then waits, behind that unacknowledged
//! PUBACK, for the controller's delayed ACK: 20 to 40 ms on every unlock. [`NoDelay`] therefore
//! switches TCP_NODELAY on for every connection accepted on the broker's ports, from a thread
//! that looks for new ones every 50 ms.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::MqttSettings;

/// A started broker: the addresses it listens on and the node's two links to it.
pub struct Started {
    pub v4: SocketAddr,
    pub v5: SocketAddr,
    /// Subscribes to device topics and receives what devices publish.
    pub field: (LinkTx, LinkRx),
    /// Publishes the edge's commands; see [`Publisher`].
    pub commands: (LinkTx, LinkRx),
}

/// Starts the broker.
pub fn start(settings: &MqttSettings) -> anyhow::Result<Started> {
    let v4 = concrete(settings.listen_v4)?;
    let v5 = concrete(settings.listen_v5)?;
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: settings.max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 2000,
            max_outgoing_packet_count: 200,
            // Segments hold messages per filter in memory; a building's traffic is small,
            // so small segments keep the broker's memory bounded.
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server("v4", v4))])),
        v5: Some(HashMap::from([("1".to_string(), server("v5", v5))])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let field = broker
        .link("smartpark-edge")
        .context("cannot link to the MQTT broker")?;
    let commands = broker
        .link("smartpark-edge-commands")
        .context("cannot link to the MQTT broker")?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "The MQTT broker stopped.");
            }
        })
        .context("cannot start the MQTT broker thread")?;
    wait_listening(v4, false)?;
    wait_listening(v5, true)?;
    NoDelay::spawn(vec![v4.port(), v5.port()]);
    Ok(Started {
        v4,
        v5,
        field,
        commands,
    })
}

/// Sets TCP_NODELAY on the connections that another part of this process (the broker)
/// accepted on `ports`: they are found by inode in `/proc/net/tcp{,6}` and `/proc/self/fd`,
/// and reached through a duplicate of their descriptor (`pidfd_getfd` on this process), which
/// shares the socket and so its options.
pub struct NoDelay {
    ports: Vec<u16>,
    pidfd: std::os::fd::OwnedFd,
    done: std::collections::HashSet<u64>,
}

impl NoDelay {
    pub fn new(ports: Vec<u16>) -> std::io::Result<NoDelay> {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )?;
        Ok(NoDelay {
            ports,
            pidfd,
            done: Default::default(),
        })
    }

    fn spawn(ports: Vec<u16>) {
        let mut this = match NoDelay::new(ports) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot switch Nagle off for MQTT connections; commands may wait for delayed ACKs.");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("mqtt-nodelay".into())
            .spawn(move || {
                loop {
                    if let Err(e) = this.sweep() {
                        tracing::warn!(error = %e, "Cannot switch Nagle off for MQTT connections; commands may wait for delayed ACKs.");
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Cannot start the MQTT no-delay thread.");
        }
    }

    /// One pass: switches Nagle off on the connections accepted since the last pass and
    /// returns how many.
    pub fn sweep(&mut self) -> std::io::Result<usize> {
        let accepted = accepted_inodes(&self.ports);
        self.done.retain(|i| accepted.contains(i));
        let mut switched = 0;
        if accepted.len() == self.done.len() {
            return Ok(0);
        }
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let Ok(entry) = entry else { continue };
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok())
            else {
                continue;
            };
            if !accepted.contains(&inode) || self.done.contains(&inode) {
                continue;
            }
            // The descriptor may have been closed and reused since it was listed: set the
            // option only if the duplicate is still the same socket.
            let Ok(dup) = rustix::process::pidfd_getfd(
                &self.pidfd,
                fd,
                rustix::process::PidfdGetfdFlags::empty(),
            ) else {
                continue;
            };
            let same = rustix::fs::fstat(&dup).is_ok_and(|st| st.st_ino == inode);
            if same && rustix::net::sockopt::set_tcp_nodelay(&dup, true).is_ok() {
                switched += 1;
            }
            self.done.insert(inode);
        }
        Ok(switched)
    }
}

/// The inodes of established TCP connections whose local port is one of `ports`: on a
/// listening port, the connections accepted there.
fn accepted_inodes(ports: &[u16]) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        // Columns: sl, local_address (ADDR:PORT in hex), rem_address, st (01 is ESTABLISHED),
        // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode. The header line
        // never matches: its state column is a name, not 01.
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "01" {
                continue;
            }
            let port = cols[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p))
                && let Ok(inode) = cols[9].parse::<u64>()
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// rumqttd cannot report the port it bound, so port 0 is resolved here: the port is taken
/// from the OS and released just before the broker binds it. A port in use is reported by
/// name instead of letting the broker thread fail quietly.
fn concrete(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} for MQTT (is another broker running there?)")
    })?;
    Ok(l.local_addr()?)
}

/// Waits until the broker answers a real MQTT connect on `addr` (3.1.1, or 5 when `v5`). A
/// bare TCP probe would make the broker log a failed client, and a bind probe could take the
/// port from under it.
fn wait_listening(addr: SocketAddr, v5: bool) -> anyhow::Result<()> {
    for _ in 0..500 {
        // Where the kernel's socket table can be read, it says so without touching the
        // broker at all (rumqttd logs even a polite disconnect as an error).
        let listening = match listening_in_proc(addr.port()) {
            Some(found) => found,
            None => mqtt_probe(addr, v5).is_ok(),
        };
        if listening {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!("the MQTT broker did not start listening on {addr}")
}

/// Whether a socket listens on `port` per `/proc/net/tcp{,6}`; `None` where those files do
/// not exist.
fn listening_in_proc(port: u16) -> Option<bool> {
    let mut any_file = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        any_file = true;
        let want = format!(":{port:04X}");
        // Columns: sl, local_address (ADDR:PORT in hex), rem_address, st (0A is LISTEN).
        // The header line never matches: its columns are names, not hex.
        let found = text.lines().any(|l| {
            let mut cols = l.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let state = cols.nth(1).unwrap_or("");
            local.ends_with(&want) && state == "0A"
        });
        if found {
            return Some(true);
        }
    }
    any_file.then_some(false)
}

fn mqtt_probe(addr: SocketAddr, v5: bool) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(1);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    // CONNECT with protocol name MQTT, clean session, keep-alive 60 s, client id "smartpark-probe".
    let id = b"smartpark-probe";
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        if v5 { 5 } else { 4 },
        0x02,
        0,
        60,
    ];
    if v5 {
        body.push(0); // No properties.
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet)?;
    let mut ack = [0u8; 2];
    s.read_exact(&mut ack)?;
    if ack[0] != 0x20 {
        return Err(std::io::Error::other("not a CONNACK"));
    }
    let mut rest = vec![0u8; ack[1] as usize];
    s.read_exact(&mut rest)?;
    // Disconnect politely and wait for the broker to close, so that nobody sees a reset.
    s.write_all(&[0xE0, 0x00])?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut sink = [0u8; 16];
    while s.read(&mut sink)? > 0 {}
    Ok(())
}

/// Publishes the edge's own commands (unlock, barrier, display) into the building broker
/// with QoS 1, over an in-process link of its own: no loopback socket and no client task sit
/// between a decision and the router. The broker then delivers each command at the QoS the
/// device subscribed with.
///
/// rumqttd's link publishes only at QoS 0 through its helpers, so the QoS 1 packet is built
/// here and handed to the link whole. The link hands it to the router's channel, which holds
/// 1,000 events; when that is full, [`Publisher::publish`] waits for the router to take one.
#[derive(Clone)]
pub struct Publisher {
    link: std::sync::Arc<std::sync::Mutex<PublisherLink>>,
}

struct PublisherLink {
    tx: LinkTx,
    pkid: u16,
}

impl Publisher {
    /// Takes the broker's link for commands and drains what the router sends back on it
    /// (its PUBACKs) in a task, so that the router never holds them waiting.
    pub fn new(tx: LinkTx, mut rx: LinkRx) -> (Publisher, tokio::task::JoinHandle<()>) {
        let task = tokio::spawn(async move {
            loop {
                match rx.next().await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "The command link to the MQTT broker closed.");
                        return;
                    }
                }
            }
        });
        let link = PublisherLink { tx, pkid: 0 };
        (
            Publisher {
                link: std::sync::Arc::new(std::sync::Mutex::new(link)),
            },
            task,
        )
    }

    /// Hands a QoS 1 publish to the broker's router. It does not wait on any task, so it may
    /// be called from the store's writer thread right after a decision is durable.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        link.pkid = link.pkid.checked_add(1).unwrap_or(1);
        let packet = qos1_publish(topic, payload, link.pkid)
            .with_context(|| format!("cannot publish to {topic}"))?;
        // `LinkTx::send` is async in name only: it queues the packet and signals the router
        // with a blocking channel send, and has no await point. One poll therefore finishes it.
        let mut sending = std::pin::pin!(link.tx.send(packet));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match sending.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("cannot publish to {topic}: {e}")),
            std::task::Poll::Pending => {
                anyhow::bail!("cannot publish to {topic}: the broker link did not take it at once")
            }
        }
    }
}

/// A QoS 1 PUBLISH as rumqttd's router takes it. rumqttd builds only QoS 0 publishes for
/// in-process links, so the packet is written with rumqttc's MQTT 3.1.1 codec and read back
/// with rumqttd's.
fn qos1_publish(
    topic: &str,
    payload: Vec<u8>,
    pkid: u16,
) -> anyhow::Result<rumqttd::protocol::Packet> {
    use rumqttd::protocol::Protocol as _;
    let mut publish = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload);
    publish.pkid = pkid;
    let mut wire = bytes::BytesMut::new();
    publish
        .write(&mut wire)
        .map_err(|e| anyhow::anyhow!("cannot encode the publish: {e:?}"))?;
    rumqttd::protocol::v4::V4
        .read_mut(&mut wire, usize::MAX)
        .map_err(|e| anyhow::anyhow!("the broker cannot read the publish: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_accepted_on_the_ports_get_nagle_switched_off_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(!accepted.nodelay().unwrap());
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let _elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let (not_ours, _) = other.accept().unwrap();

        let mut sweeper = NoDelay::new(vec![port]).unwrap();
        assert_eq!(sweeper.sweep().unwrap(), 1);
        assert!(accepted.nodelay().unwrap(), "the accepted side is switched");
        assert!(
            !client.nodelay().unwrap(),
            "the client side is not ours to change"
        );
        assert!(!not_ours.nodelay().unwrap(), "another port is left alone");
        assert_eq!(sweeper.sweep().unwrap(), 0, "a connection is switched once");
    }
}

#[cfg(test)]
mod publisher_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_reach_a_qos_1_subscriber_at_qos_1_and_a_qos_0_one_at_qos_0() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let started = start(&MqttSettings {
            listen_v4: any,
            listen_v5: any,
            max_payload_bytes: 64 * 1024,
        })
        .unwrap();
        let (tx, rx) = started.commands;
        let (publisher, _drain) = Publisher::new(tx, rx);

        let subscriber = |id: &str, qos: rumqttc::QoS| {
            let options = rumqttc::MqttOptions::new(id, "127.0.0.1", started.v4.port());
            let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
            let (got_tx, got_rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(e) = events.poll().await {
                    match e {
                        rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                            let _ = got_tx.send(None);
                        }
                        rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                            let _ = got_tx.send(Some(p));
                        }
                        _ => {}
                    }
                }
            });
            (client, got_rx, qos)
        };
        let mut subs = vec![
            subscriber("door-qos1", rumqttc::QoS::AtLeastOnce),
            subscriber("door-qos0", rumqttc::QoS::AtMostOnce),
        ];
        for (client, got, qos) in &mut subs {
            client.subscribe("door/+/command", *qos).await.unwrap();
            assert!(
                got.recv().await.unwrap().is_none(),
                "the SUBACK comes first"
            );
        }
        // The packet ids wrap around u16::MAX to 1, never to 0, which QoS 1 forbids.
        publisher.link.lock().unwrap().pkid = u16::MAX - 1;
        for n in 0..3 {
            publisher
                .publish("door/d-1/command", format!("unlock {n}").into_bytes())
                .unwrap();
        }
        for (_, got, qos) in &mut subs {
            for n in 0..3 {
                let p = tokio::time::timeout(std::time::Duration::from_secs(10), got.recv())
                    .await
                    .expect("the command arrives")
                    .unwrap()
                    .unwrap();
                assert_eq!(p.topic, "door/d-1/command");
                assert_eq!(&p.payload[..], format!("unlock {n}").as_bytes());
                assert_eq!(p.qos, *qos);
            }
        }
        // u16::MAX, then 1 and 2.
        assert_eq!(publisher.link.lock().unwrap().pkid, 2);
    }
}
