//! The door controller and plate camera simulators against a real MQTT broker (a Mosquitto
//! of the test's own on a free port, never the machine's own broker): they announce themselves, publish
//! contract payloads, act on the edge's commands, and leave their last will.
//!
//! The test plays the edge's part with a plain MQTT client. Real sleeps are unavoidable here
//! (the broker is a real peer); each wait is bounded.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use device_sim::contract::{
    Direction, DoorRead, DoorState, DoorStateEvent, LanePayment, PlateRead,
};
use device_sim::parking::LotConfig;
use device_sim::{
    DoorConfig, DoorControllerConfig, LaneConfig, PlateCameraConfig, demo_credentials, demo_plates,
    is_valid_plate,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

/// A Mosquitto of the test's own (anonymous clients, no persistence) on a free port of
/// 127.0.0.1, stopped when dropped.
struct Broker {
    addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n\
             log_type error\nset_tcp_nodelay true\n",
            addr.port()
        ),
    )
    .unwrap();
    let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = std::process::Command::new(program)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("mosquitto is missing: scripts/test installs the Debian package");
    // Dropped (and so stopped) if it never listens.
    let broker = Broker {
        addr,
        child,
        _dir: dir,
    };
    for _ in 0..500 {
        if TcpStream::connect(addr).is_ok() {
            return broker;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the test broker did not start on {addr}");
}

/// The edge's side: a client that subscribes to `filters` and hands over what it receives.
struct Edge {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
}

impl Edge {
    async fn connect(addr: SocketAddr, client_id: &str, filters: &[&str]) -> Edge {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_max_packet_size(128 * 1024, 128 * 1024);
        let (client, mut events) = AsyncClient::new(options, 64);
        for filter in filters {
            client.subscribe(*filter, QoS::AtLeastOnce).await.unwrap();
        }
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload.to_vec(), p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Edge { client, received }
    }

    /// The next publish on `topic`, skipping others.
    async fn next_on(&mut self, topic: &str) -> (Vec<u8>, bool) {
        timeout(WAIT, async {
            loop {
                let (t, payload, retain) = self.received.recv().await.unwrap();
                if t == topic {
                    return (payload, retain);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on {topic}"))
    }

    async fn send(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

/// A TCP relay in front of the broker whose connections can be cut, as a broker restart or a
/// network fault would.
struct Relay {
    addr: SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut broker) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
                list.lock().unwrap().push(handle);
            }
        });
        Relay { addr, connections }
    }

    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test]
async fn a_door_controller_publishes_reads_and_opens_on_an_unlock_command() {
    let broker = start_broker();
    let addr = broker.addr;
    let mut edge = Edge::connect(addr, "test-edge", &["door/#"]).await;

    let credentials = demo_credentials(5, 10);
    let mut config = DoorControllerConfig::new(
        &addr.ip().to_string(),
        addr.port(),
        vec![DoorConfig::new("b1-main", 5.0)],
        credentials.clone(),
    );
    // 08:30 at five times a main door's traffic: about one read a second.
    config.start_seconds_of_day = Some(8.5 * 3600.0);
    config.seed = 5;
    let sim = config.build().unwrap();
    let stats = sim.stats();
    let task = tokio::spawn(sim.run());

    let (status, _) = edge.next_on("door/b1-main/status").await;
    assert_eq!(status, b"online");
    let mut late = Edge::connect(addr, "test-late", &["door/+/status"]).await;
    let (status, retained) = late.next_on("door/b1-main/status").await;
    assert_eq!(status, b"online");
    assert!(
        retained,
        "a later subscriber gets the online status as retained"
    );

    let (payload, _) = edge.next_on("door/b1-main/read").await;
    let read: DoorRead = serde_json::from_slice(&payload).unwrap();
    assert!(
        credentials
            .iter()
            .any(|c| c.value == read.value && c.kind == read.kind)
    );
    assert!(read.id.is_some() && read.ts.is_some() && read.reader.is_some());

    edge.send(
        "door/b1-main/command",
        r#"{"command":"unlock","duration_ms":800,"decision":"ev-1"}"#,
    )
    .await;
    let (opened, _) = edge.next_on("door/b1-main/state").await;
    let opened: DoorStateEvent = serde_json::from_slice(&opened).unwrap();
    assert_eq!(opened.state, DoorState::Opened);
    let (closed, _) = edge.next_on("door/b1-main/state").await;
    let closed: DoorStateEvent = serde_json::from_slice(&closed).unwrap();
    assert_eq!(closed.state, DoorState::Closed);
    let open_for_us = closed.ts.unwrap() - opened.ts.unwrap();
    assert!((0..800_000).contains(&open_for_us), "{open_for_us} µs");

    edge.send(
        "door/b1-main/command",
        r#"{"command":"deny","reason":"expired","decision":"ev-2"}"#,
    )
    .await;
    edge.send("door/b1-main/command", "not json").await;
    eventually("the deny and the bad command are counted", || {
        let counts = stats.door("b1-main");
        counts.denies == 1 && counts.invalid_commands == 1
    })
    .await;
    let counts = stats.door("b1-main");
    assert_eq!(counts.unlocks, 1);
    assert!(counts.reads >= 1);

    // The connection drops without a DISCONNECT: the broker publishes the last will.
    task.abort();
    let (status, _) = edge.next_on("door/b1-main/status").await;
    assert_eq!(status, b"offline");
}

#[tokio::test]
async fn a_door_controller_reconnects_after_losing_the_broker_and_obeys_commands_again() {
    let broker = start_broker();
    let relay = Relay::start(broker.addr).await;
    let mut edge = Edge::connect(broker.addr, "test-edge", &["door/#"]).await;
    let config = DoorControllerConfig::new(
        &relay.addr.ip().to_string(),
        relay.addr.port(),
        // A door without traffic of its own: only commands move it.
        vec![DoorConfig::new("b2-side", 0.0)],
        demo_credentials(1, 2),
    );
    let sim = config.build().unwrap();
    let stats = sim.stats();
    let task = tokio::spawn(sim.run());
    let (status, _) = edge.next_on("door/b2-side/status").await;
    assert_eq!(status, b"online");

    relay.cut();
    let (status, _) = edge.next_on("door/b2-side/status").await;
    assert_eq!(status, b"offline", "the broker published the last will");
    let (status, _) = edge.next_on("door/b2-side/status").await;
    assert_eq!(status, b"online", "the controller came back");

    // The subscription was renewed on the new (clean) session.
    let unlock = r#"{"command":"unlock","duration_ms":500,"decision":"ev-after"}"#;
    let opened = timeout(WAIT, async {
        loop {
            edge.send("door/b2-side/command", unlock).await;
            let next = timeout(
                Duration::from_millis(500),
                edge.next_on("door/b2-side/state"),
            )
            .await;
            if let Ok((payload, _)) = next {
                return serde_json::from_slice::<DoorStateEvent>(&payload).unwrap();
            }
        }
    })
    .await
    .expect("the door opens after the reconnect");
    assert_eq!(opened.state, DoorState::Opened);
    assert_eq!(
        stats.door("b2-side").unlocks,
        1,
        "repeats of one decision count once"
    );
    task.abort();
}

#[tokio::test]
async fn plate_camera_lanes_publish_plates_and_pay_the_fee_shown_at_the_exit() {
    let broker = start_broker();
    let addr = broker.addr;
    let mut edge = Edge::connect(addr, "test-edge", &["lpr/#", "lane/+/payment"]).await;

    let lanes = vec![
        LaneConfig::new("p1-in", Direction::In),
        LaneConfig::new("p1-out", Direction::Out),
    ];
    let mut lot = LotConfig::new(lanes, demo_plates(3, 0, 0));
    lot.low_confidence_share = 0.0;
    lot.visitor_scale = 0.1;
    lot.payment_delay = (Duration::from_millis(100), Duration::from_millis(300));
    let mut config = PlateCameraConfig::new(&addr.ip().to_string(), addr.port(), lot);
    // From 10:30, 40 simulated minutes a second: a visitor comes about every 1.3 seconds and
    // stays 0.4 to 6 seconds.
    config.start_seconds_of_day = Some(10.5 * 3600.0);
    config.time_compression = 2400.0;
    config.seed = 3;
    let sim = config.build().unwrap();
    let stats = sim.stats();
    let task = tokio::spawn(sim.run());

    let payment = timeout(Duration::from_secs(60), async {
        let mut sessions = HashMap::new();
        loop {
            let (topic, payload, _) = edge.received.recv().await.unwrap();
            match topic.as_str() {
                "lpr/p1-in/status" | "lpr/p1-out/status" => assert_eq!(payload, b"online"),
                "lpr/p1-in/plate" => {
                    let read: PlateRead = serde_json::from_slice(&payload).unwrap();
                    assert!(is_valid_plate(&read.plate), "{read:?}");
                    assert_eq!(read.direction, Direction::In);
                    let session = format!("s-{}", sessions.len() + 1);
                    sessions.insert(read.plate, session.clone());
                    let open = format!(
                        r#"{{"command":"open","decision":"in-{session}","session":"{session}"}}"#
                    );
                    edge.send("barrier/p1-in/command", &open).await;
                }
                "lpr/p1-out/plate" => {
                    let read: PlateRead = serde_json::from_slice(&payload).unwrap();
                    assert_eq!(read.direction, Direction::Out);
                    assert!(sessions.contains_key(&read.plate), "{read:?} never came in");
                    edge.send(
                        "lane/p1-out/display",
                        &format!(
                            r#"{{"text":"{} ¥8.00","fee_fen":800,"currency":"CNY"}}"#,
                            read.plate
                        ),
                    )
                    .await;
                }
                "lane/p1-out/payment" => {
                    let payment: LanePayment = serde_json::from_slice(&payload).unwrap();
                    assert!(
                        sessions.values().any(|s| *s == payment.session),
                        "{payment:?}"
                    );
                    let open = format!(
                        r#"{{"command":"open","decision":"out-{}","session":"{}"}}"#,
                        payment.session, payment.session
                    );
                    edge.send("barrier/p1-out/command", &open).await;
                    return payment;
                }
                other => panic!("unexpected publish on {other}"),
            }
        }
    })
    .await
    .expect("a visitor came, left and paid within a minute");
    assert_eq!(payment.amount_fen, 800);
    assert_eq!(payment.currency, "CNY");

    eventually("the paying car leaves", || stats.get().exits >= 1).await;
    let counts = stats.get();
    assert!(counts.entries >= 1 && counts.payments >= 1, "{counts:?}");
    assert_eq!(counts.unexpected_opens, 0, "{counts:?}");

    task.abort();
    for _ in 0..2 {
        let (topic, payload, _) = timeout(WAIT, async {
            loop {
                let (topic, payload, retain) = edge.received.recv().await.unwrap();
                if topic.ends_with("/status") {
                    return (topic, payload, retain);
                }
            }
        })
        .await
        .expect("both lanes leave their last will");
        assert_eq!(payload, b"offline", "{topic}");
    }
}
