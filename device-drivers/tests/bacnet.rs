//! The BACnet driver and discovery against a bacpypes3 device on a loopback address.
//!
//! Each test has its own device address (127.0.0.2x) and client port (478xx); the device
//! listens on 47808 as every BACnet device does.

mod bacnet_support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use bacnet_support::*;
use device_drivers::bacnet::{self, Command, DiscoverOptions};
use device_drivers::{DeviceStatus, Profile, Quality, Value, WriteError, WriteRequest};
use tokio::sync::{mpsc, oneshot};

/// Every object the test device has, one point each.
const EVERY_OBJECT: &str = r#"
[[point]]
name = "zone_temp"
object_type = "analog-input"
instance = 1
unit = "°C"

[[point]]
name = "outside_temp"
object_type = "analog-input"
instance = 2
unit = "°C"

[[point]]
name = "valve"
object_type = "analog-output"
instance = 1
unit = "%"
writable = true
min = 0
max = 100

[[point]]
name = "setpoint"
object_type = "analog-value"
instance = 1
unit = "°C"
writable = true
min = 10
max = 30

[[point]]
name = "faulty"
object_type = "analog-value"
instance = 2

[[point]]
name = "fan_status"
object_type = "binary-input"
instance = 1
kind = "state"

[[point]]
name = "fan_cmd"
object_type = "binary-output"
instance = 1
kind = "state"
writable = true

[[point]]
name = "occupied"
object_type = "binary-value"
instance = 1
kind = "state"
writable = true

[[point]]
name = "fan_mode"
object_type = "multi-state-input"
instance = 1
kind = "state"

[[point]]
name = "damper_mode"
object_type = "multi-state-output"
instance = 1
kind = "state"
writable = true

[[point]]
name = "occupancy_mode"
object_type = "multi-state-value"
instance = 1
kind = "state"
writable = true

[[point]]
name = "missing"
object_type = "analog-value"
instance = 77
writable = true
"#;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[tokio::test]
async fn discovery_finds_the_device_and_reads_its_object_list_names_and_units() {
    guarded(async {
        let peer = Peer::start(ip(21), 2101, &["--name", "ahu-1", "--points", "30"]);
        // Another device outside the range asked for must not be reported.
        let _other = Peer::start(ip(22), 2199, &[]);
        let network = network(47821, ms(1000));
        let options = DiscoverOptions {
            low: 2100,
            high: 2150,
            wait: Duration::from_secs(2),
            ..DiscoverOptions::default()
        };
        let found = bacnet::discover(&network, &options).await.unwrap();
        assert_eq!(found.len(), 1, "{found:#?}");
        let d = &found[0];
        assert_eq!(d.instance, 2101);
        assert_eq!(d.address, Some(peer.socket()));
        assert_eq!(d.name.as_deref(), Some("ahu-1"));
        assert_eq!(d.vendor_name.as_deref(), Some("smartpark tests"));
        assert_eq!(d.error, None);
        // 11 named objects, the network port and 30 bulk points; the device object is left out.
        assert_eq!(d.objects.len(), 11 + 1 + 30, "{:#?}", d.objects);
        let zone = d
            .objects
            .iter()
            .find(|o| o.type_code == 0 && o.instance == 1)
            .expect("analog-input 1 in the object list");
        assert_eq!(zone.name.as_deref(), Some("zone-temp"));
        assert_eq!(zone.units.as_deref(), Some("°C"));
        let mode = d
            .objects
            .iter()
            .find(|o| o.type_code == 19 && o.instance == 1)
            .unwrap();
        assert_eq!(mode.name.as_deref(), Some("occupancy-mode"));
        assert_eq!(mode.units, None);
        let port = d.objects.iter().find(|o| o.type_code == 56).unwrap();
        assert_eq!(
            port.object_type, None,
            "network ports are listed, not mapped"
        );

        // The draft profile loads as a profile, with a point per mappable object.
        let draft = bacnet::draft_profile(d, "ahu-1-draft");
        let profile = Profile::parse(Path::new("draft.toml"), &draft)
            .unwrap_or_else(|e| panic!("{e}\n{draft}"));
        assert_eq!(profile.points.len(), 11 + 30, "{draft}");
        assert!(profile.point("zone-temp").is_some(), "{draft}");
    })
    .await
}

#[tokio::test]
async fn a_device_without_an_address_is_found_by_its_instance() {
    guarded(async {
        let peer = Peer::start(ip(23), 2301, &[]);
        let mut spec = device(
            "found",
            profile(EVERY_OBJECT),
            &peer,
            47823,
            ms(60_000),
            ms(1000),
        );
        if let device_drivers::Connection::Bacnet(link) = &mut spec.connection {
            link.address = None;
        }
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel::<WriteRequest>(1);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47823, ms(1000)), out, rx));
        let s = events.sample_of("zone_temp").await;
        assert_eq!(s.value, Some(Value::Float(21.5)), "{s:?}");
        driver.abort();
    })
    .await
}

#[tokio::test]
async fn every_object_kind_reads_with_its_type_and_quality() {
    guarded(async {
        let peer = Peer::start(ip(24), 2401, &[]);
        let spec = device(
            "ahu",
            profile(EVERY_OBJECT),
            &peer,
            47824,
            ms(60_000),
            ms(1000),
        );
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel::<WriteRequest>(1);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47824, ms(1000)), out, rx));
        let status = events
            .until(|e| match e {
                Event::Status(_, s) => Some(s.clone()),
                _ => None,
            })
            .await;
        assert_eq!(status, DeviceStatus::Online);
        let batch = events.batch_with(&["zone_temp", "missing"]).await;
        assert_eq!(batch.len(), 12, "one sample per point: {batch:#?}");
        let value = |name: &str| batch[name].value.clone();
        assert_eq!(value("zone_temp"), Some(Value::Float(21.5)));
        assert_eq!(value("outside_temp"), Some(Value::Float(8.25)));
        assert_eq!(value("valve"), Some(Value::Float(0.0)));
        assert_eq!(value("setpoint"), Some(Value::Float(22.0)));
        assert_eq!(value("fan_status"), Some(Value::Bool(true)));
        assert_eq!(value("fan_cmd"), Some(Value::Bool(false)));
        assert_eq!(value("occupied"), Some(Value::Bool(false)));
        assert_eq!(value("fan_mode"), Some(Value::Int(2)));
        assert_eq!(value("damper_mode"), Some(Value::Int(1)));
        assert_eq!(value("occupancy_mode"), Some(Value::Int(1)));
        for name in batch
            .keys()
            .filter(|n| !["faulty", "missing"].contains(&n.as_str()))
        {
            assert_eq!(
                batch[name].quality,
                Quality::Good,
                "{name}: {:?}",
                batch[name]
            );
        }
        // A fault flag and a missing object are bad with their reason, never a value.
        assert_eq!(value("faulty"), None);
        assert_eq!(
            batch["faulty"].quality.reason(),
            Some("the device reports a fault (status flag)")
        );
        assert_eq!(value("missing"), None);
        assert_eq!(
            batch["missing"].quality.reason(),
            Some("object/unknown-object")
        );
        driver.abort();
    })
    .await
}

async fn command(
    writes: &mpsc::Sender<Command>,
    point: &str,
    value: Option<Value>,
    priority: Option<u8>,
) -> Result<Value, WriteError> {
    let (reply, rx) = oneshot::channel();
    writes
        .send(Command {
            point: point.into(),
            value,
            priority,
            reply,
        })
        .await
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test]
async fn a_write_at_priority_8_reads_back_and_its_relinquish_returns_the_default() {
    guarded(async {
        let peer = Peer::start(ip(25), 2501, &[]);
        let spec = device(
            "vav",
            profile(EVERY_OBJECT),
            &peer,
            47825,
            ms(60_000),
            ms(1000),
        );
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel::<Command>(4);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47825, ms(1000)), out, rx));
        events.sample_of("setpoint").await;

        // The profile's priority (8) for a plain write.
        assert_eq!(
            command(&writes, "setpoint", Some(Value::Float(25.5)), None).await,
            Ok(Value::Float(25.5))
        );
        // A higher priority takes over; relinquishing it falls back to priority 8's value.
        assert_eq!(
            command(&writes, "setpoint", Some(Value::Float(19.0)), Some(5)).await,
            Ok(Value::Float(19.0))
        );
        assert_eq!(
            command(&writes, "setpoint", None, Some(5)).await,
            Ok(Value::Float(25.5))
        );
        // A write below the priority in control is stored but does not take effect.
        assert_eq!(
            command(&writes, "setpoint", Some(Value::Float(12.0)), Some(16)).await,
            Err(WriteError::VerifyFailed {
                written: "12".into(),
                read_back: "25.5 (a priority above 16 may be in control)".into()
            })
        );
        assert_eq!(
            command(&writes, "setpoint", None, Some(16)).await,
            Ok(Value::Float(25.5))
        );
        // Relinquishing priority 8 returns the relinquish default.
        assert_eq!(
            command(&writes, "setpoint", None, None).await,
            Ok(Value::Float(22.0))
        );

        // Binary and multi-state outputs, the same way.
        assert_eq!(
            command(&writes, "fan_cmd", Some(Value::Bool(true)), None).await,
            Ok(Value::Bool(true))
        );
        assert_eq!(
            command(&writes, "fan_cmd", None, None).await,
            Ok(Value::Bool(false))
        );
        assert_eq!(
            command(&writes, "damper_mode", Some(Value::Int(3)), None).await,
            Ok(Value::Int(3))
        );
        assert_eq!(
            command(&writes, "damper_mode", None, None).await,
            Ok(Value::Int(1))
        );
        // A value object without a priority array takes the value as it is.
        assert_eq!(
            command(&writes, "occupancy_mode", Some(Value::Int(3)), None).await,
            Ok(Value::Int(3))
        );

        // Refused before the wire: read-only, out of range, reserved priority, unknown.
        assert_eq!(
            command(&writes, "zone_temp", Some(Value::Float(1.0)), None).await,
            Err(WriteError::NotWritable("zone_temp".into()))
        );
        assert!(matches!(
            command(&writes, "setpoint", Some(Value::Float(45.0)), None).await,
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            command(&writes, "setpoint", Some(Value::Float(20.0)), Some(6)).await,
            Err(WriteError::OutOfRange { .. })
        ));
        assert_eq!(
            command(&writes, "nope", Some(Value::Float(1.0)), None).await,
            Err(WriteError::UnknownPoint("nope".into()))
        );
        // An object the device does not have is refused by the device, with its reason.
        assert_eq!(
            command(&writes, "missing", Some(Value::Float(1.0)), None).await,
            Err(WriteError::Refused("object/unknown-object".into()))
        );
        driver.abort();
    })
    .await
}

#[tokio::test]
async fn plain_write_requests_are_commands_at_the_profile_priority() {
    guarded(async {
        let peer = Peer::start(ip(26), 2601, &[]);
        let spec = device(
            "vav2",
            profile(&format!("[bacnet]\nwrite_priority = 10\n{EVERY_OBJECT}")),
            &peer,
            47826,
            ms(60_000),
            ms(1000),
        );
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel::<WriteRequest>(4);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47826, ms(1000)), out, rx));
        events.sample_of("valve").await;
        let (reply, answer) = oneshot::channel();
        writes
            .send(WriteRequest {
                point: "valve".into(),
                value: Value::Int(40),
                reply,
            })
            .await
            .unwrap();
        assert_eq!(answer.await.unwrap(), Ok(Value::Float(40.0)));
        // The read-back also goes out as a sample.
        let s = events.sample_of("valve").await;
        assert_eq!(s.value, Some(Value::Float(40.0)));
        driver.abort();
    })
    .await
}

#[tokio::test]
async fn cov_notifications_arrive_are_renewed_and_refused_points_are_polled() {
    guarded(async {
        // The device moves zone-temp every 0.25 s and refuses COV on outside-temp.
        let peer = Peer::start(ip(27), 2701, &["--tick", "0.25"]);
        let body = r#"
[bacnet]
cov_lifetime_s = 10

[[point]]
name = "zone_temp"
object_type = "analog-input"
instance = 1
cov = true

[[point]]
name = "outside_temp"
object_type = "analog-input"
instance = 2
cov = true

[[point]]
name = "fan_status"
object_type = "binary-input"
instance = 1
cov = true
"#;
        // Polling once every 2 s: zone-temp changes seen more often than that are pushed.
        let spec = device("ahu", profile(body), &peer, 47827, ms(2000), ms(1000));
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel::<WriteRequest>(1);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47827, ms(1000)), out, rx));
        events
            .batch_with(&["zone_temp", "outside_temp", "fan_status"])
            .await;

        let count = |events: &[Event], point: &str| -> (usize, usize) {
            let samples: Vec<_> = events
                .iter()
                .flat_map(|e| match e {
                    Event::Samples(b) => b.clone(),
                    _ => Vec::new(),
                })
                .filter(|s| s.point.point() == point)
                .collect();
            let mut values: Vec<String> = samples
                .iter()
                .filter_map(|s| s.value.as_ref().map(|v| v.to_string()))
                .collect();
            values.dedup();
            (samples.len(), values.len())
        };
        let window = events.during(Duration::from_secs(4)).await;
        let (_, zone_values) = count(&window, "zone_temp");
        let (_, fan_values) = count(&window, "fan_status");
        let (outside_samples, _) = count(&window, "outside_temp");
        assert!(
            zone_values >= 8,
            "zone-temp changed {zone_values} times in 4 s"
        );
        assert!(
            fan_values >= 8,
            "fan-status changed {fan_values} times in 4 s"
        );
        // Refused, so polled: once per 2 s.
        assert!(
            (1..=3).contains(&outside_samples),
            "outside-temp sampled {outside_samples} times in 4 s"
        );

        // bacpypes3 drops a subscription when its 10 s lifetime ends; notifications that
        // still arrive after that were renewed.
        events.during(Duration::from_secs(8)).await;
        let late = events.during(Duration::from_secs(2)).await;
        let (_, late_values) = count(&late, "zone_temp");
        assert!(
            late_values >= 4,
            "zone-temp changed {late_values} times after renewal"
        );
        driver.abort();
    })
    .await
}

#[tokio::test]
async fn a_device_that_goes_away_goes_bad_and_recovers_when_it_returns() {
    guarded(async {
        let mut peer = Peer::start(ip(28), 2801, &[]);
        let body = r#"
[[point]]
name = "zone_temp"
object_type = "analog-input"
instance = 1

[[point]]
name = "fan_status"
object_type = "binary-input"
instance = 1
cov = true

[[point]]
name = "setpoint"
object_type = "analog-value"
instance = 1
writable = true
"#;
        let spec = device("vav", profile(body), &peer, 47828, ms(300), ms(300));
        let (out, mut events) = collector();
        let (writes, rx) = mpsc::channel::<Command>(1);
        let driver = tokio::spawn(bacnet::run_device(spec, network(47828, ms(300)), out, rx));
        let s = events.sample_of("zone_temp").await;
        assert_eq!(s.quality, Quality::Good);

        peer.kill();
        let status = events
            .until(|e| match e {
                Event::Status(_, s @ DeviceStatus::Offline { .. }) => Some(s.clone()),
                _ => None,
            })
            .await;
        let DeviceStatus::Offline { reason } = status else {
            unreachable!()
        };
        assert!(reason.contains("no answer"), "{reason}");
        // Every point goes bad, the pushed one too, without a value.
        let batch = events
            .batch_with(&["zone_temp", "fan_status", "setpoint"])
            .await;
        for s in batch.values() {
            assert_eq!(s.quality.name(), "bad", "{s:?}");
            assert_eq!(s.value, None);
        }
        // Writes are refused at once while the device is down.
        assert!(matches!(
            command(&writes, "setpoint", Some(Value::Float(20.0)), None).await,
            Err(WriteError::Offline(_))
        ));

        peer.restart();
        events
            .until(|e| matches!(e, Event::Status(_, DeviceStatus::Online)).then_some(()))
            .await;
        let batch = events
            .batch_with(&["zone_temp", "fan_status", "setpoint"])
            .await;
        assert_eq!(batch["zone_temp"].value, Some(Value::Float(21.5)));
        assert_eq!(batch["fan_status"].value, Some(Value::Bool(true)));
        assert!(batch.values().all(|s| s.quality == Quality::Good));
        driver.abort();
    })
    .await
}

/// The 2,000-point scan that `smartpark bench bacnet` measures, checked for completeness.
#[tokio::test]
async fn a_2000_point_device_scans_completely() {
    guarded(async {
        let peer = Peer::start(ip(29), 2901, &["--points", "2000"]);
        let mut body = String::new();
        for i in 0..2000 {
            body.push_str(&format!(
                "[[point]]\nname = \"pt-{i}\"\nobject_type = \"analog-input\"\ninstance = {}\n",
                1000 + i
            ));
        }
        let spec = device("big", profile(&body), &peer, 47829, ms(60_000), ms(2000));
        let network = network(47829, ms(2000));
        let (samples, took) = bacnet::scan_once(&spec, &network).await.unwrap();
        assert_eq!(samples.len(), 2000);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.quality, Quality::Good, "{s:?}");
            assert_eq!(s.value, Some(Value::Float(i as f64 * 0.25)), "{s:?}");
        }
        eprintln!("scanned 2000 points in {took:?}");
    })
    .await
}

fn bulk_profile(count: usize, per_request: u16) -> std::sync::Arc<Profile> {
    let mut body = format!("[bacnet]\nmax_objects_per_request = {per_request}\n");
    for i in 0..count {
        body.push_str(&format!(
            "[[point]]\nname = \"pt-{i}\"\nobject_type = \"analog-input\"\ninstance = {}\n",
            1000 + i
        ));
    }
    profile(&body)
}

#[tokio::test]
async fn large_requests_take_segmented_replies_and_a_stalled_one_shrinks_the_request() {
    guarded(async {
        // A device proposing a segment window of 1: one request for 600 objects, its reply
        // in about ten segments.
        let peer = Peer::start(ip(30), 3001, &["--points", "600", "--window", "1"]);
        let spec = device(
            "seg",
            bulk_profile(600, 600),
            &peer,
            47830,
            ms(60_000),
            ms(500),
        );
        let network = network(47830, ms(500));
        let (samples, _) = bacnet::scan_once(&spec, &network).await.unwrap();
        assert_eq!(samples.len(), 600);
        assert!(samples.iter().all(|s| s.quality == Quality::Good));
        drop(peer);

        // bacpypes3's default window of 2 stalls bacnet-client's segmented receive: the
        // driver halves its requests until the replies fit in one APDU, within the scan.
        let peer = Peer::start(ip(31), 3101, &["--points", "600"]);
        let spec = device(
            "seg2",
            bulk_profile(600, 600),
            &peer,
            47831,
            ms(60_000),
            ms(500),
        );
        let network = super_network(47831);
        let (samples, _) = bacnet::scan_once(&spec, &network).await.unwrap();
        assert_eq!(samples.len(), 600);
        let bad: Vec<_> = samples
            .iter()
            .filter(|s| s.quality != Quality::Good)
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.value, Some(Value::Float(i as f64 * 0.25)));
        }
    })
    .await
}

fn super_network(port: u16) -> device_drivers::bacnet::Network {
    network(port, ms(500))
}

/// One entry of a BBMD's foreign-device table, as Read-Foreign-Device-Table-Ack carries it
/// (Annex J.2.8): the B/IP address, the TTL it registered with and the seconds left,
/// grace period included.
#[derive(Debug, PartialEq)]
struct FdtEntry {
    address: std::net::SocketAddrV4,
    ttl_s: u16,
    remaining_s: u16,
}

/// Asks the BBMD at `bbmd` for its foreign-device table with a Read-Foreign-Device-Table
/// from a socket of its own, as a BACnet operator's tool would.
async fn read_fdt(bbmd: std::net::SocketAddrV4) -> Vec<FdtEntry> {
    let socket = tokio::net::UdpSocket::bind((ip(1), 0)).await.unwrap();
    let mut buf = [0u8; 1500];
    // The request may be lost like any datagram: ask again until an answer comes.
    let len = loop {
        socket
            .send_to(&[0x81, 0x06, 0x00, 0x04], bbmd)
            .await
            .unwrap();
        if let Ok(answer) = tokio::time::timeout(ms(1000), socket.recv(&mut buf)).await {
            break answer.unwrap();
        }
    };
    let ack = &buf[..len];
    assert_eq!(ack[..2], [0x81, 0x07], "not a Read-FDT-Ack: {ack:02x?}");
    assert_eq!(usize::from(u16::from_be_bytes([ack[2], ack[3]])), len);
    ack[4..]
        .chunks(10)
        .map(|e| FdtEntry {
            address: std::net::SocketAddrV4::new(
                Ipv4Addr::new(e[0], e[1], e[2], e[3]),
                u16::from_be_bytes([e[4], e[5]]),
            ),
            ttl_s: u16::from_be_bytes([e[6], e[7]]),
            remaining_s: u16::from_be_bytes([e[8], e[9]]),
        })
        .collect()
}

#[tokio::test]
async fn a_foreign_device_registers_with_its_bbmd_renews_in_time_and_discovers_through_it() {
    guarded(async {
        // The device is its network's BBMD (empty BDT) on 127.0.0.40:47808. On loopback a
        // "subnet" is a port: the device's broadcasts go to 127.255.255.255:47808, the
        // client's to 127.255.255.255:<its own port>, where no device listens.
        let mut peer = Peer::start(ip(40), 4001, &["--bbmd", "--name", "behind-bbmd"]);
        let options = DiscoverOptions {
            low: 4001,
            high: 4001,
            wait: Duration::from_secs(2),
            ..DiscoverOptions::default()
        };
        // Where the device is expected to answer, waiting is cut short by its answer, so a
        // slow machine only makes the test slower.
        let found_by_bbmd = DiscoverOptions {
            wait: Duration::from_secs(30),
            stop_after: Some(1),
            ..options.clone()
        };

        // Without the BBMD, a Who-Is on the client's own broadcast domain finds nothing.
        let own_domain_only = {
            let mut port = loopback_port(47841);
            port.broadcast.set_port(47841);
            bacnet::Network::new(port, ms(1000))
        };
        let found = bacnet::discover(&own_domain_only, &options).await.unwrap();
        assert_eq!(found, Vec::new(), "plain broadcast reached the device");

        // The same kind of port as a site config gives it, registering with the BBMD.
        let text = r#"
id = "fd"
profile = "t"
poll_interval_ms = 500
timeout_ms = 3000
bacnet = { instance = 4001, local_port = 47840, broadcast_address = "127.255.255.255:47840", bbmd = { address = "127.0.0.40:47808", ttl_s = 6 } }
"#;
        let profiles = [(
            "t".to_string(),
            profile("[[point]]\nname = \"zone_temp\"\nobject_type = \"analog-input\"\ninstance = 1\n"),
        )]
        .into();
        let spec = toml::from_str::<device_drivers::DeviceConfig>(text)
            .unwrap()
            .build(Path::new("site.toml"), text, "device[0]", &profiles)
            .unwrap_or_else(|e| panic!("{e}"));
        let networks = bacnet::plan_networks(std::slice::from_ref(&spec)).unwrap();
        let network = networks[0].0.clone();
        assert!(network.port().bbmd.is_some());

        // Its Who-Is goes to the BBMD as Distribute-Broadcast-To-Network, after the
        // registration, and finds the device.
        let found = bacnet::discover(&network, &found_by_bbmd).await.unwrap();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].instance, 4001);
        assert_eq!(found[0].address, Some(peer.socket()));
        assert_eq!(found[0].name.as_deref(), Some("behind-bbmd"));
        // The client sends from 0.0.0.0:47840, which the BBMD sees as 127.0.0.1:47840.
        let me = "127.0.0.1:47840";
        let first = peer
            .line(|l| {
                (l.starts_with("FD-REGISTER ") || l.starts_with("DISTRIBUTE "))
                    .then(|| l.to_string())
            })
            .await;
        assert_eq!(first, format!("FD-REGISTER {me} ttl 6 left new"));
        let from = peer
            .line(|l| l.strip_prefix("DISTRIBUTE ").map(str::to_string))
            .await;
        assert_eq!(from, me);

        // The BBMD's table lists the client, with the TTL it asked for.
        let fdt = read_fdt(peer.socket()).await;
        assert_eq!(fdt.len(), 1, "{fdt:?}");
        assert_eq!(fdt[0].address.to_string(), me);
        assert_eq!(fdt[0].ttl_s, 6);

        // Renewals come while the previous registration's TTL still runs, so the entry
        // never lapses: the BBMD reports how much of the TTL was left at each.
        for _ in 0..3 {
            let line = peer
                .line(|l| {
                    (l.starts_with("FD-REGISTER ") || l.starts_with("FD-EXPIRED "))
                        .then(|| l.to_string())
                })
                .await;
            let left = line
                .strip_prefix(&format!("FD-REGISTER {me} ttl 6 left "))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("not a renewal in time: {line}"));
            assert!(left > 0, "renewed after the TTL ran out: {line}");
        }
        let fdt = read_fdt(peer.socket()).await;
        assert_eq!(fdt.len(), 1, "{fdt:?}");
        assert_eq!(fdt[0].address.to_string(), me);

        // A driver on that network that knows only the instance finds the device through
        // the BBMD too, and reads it.
        let (out, mut events) = collector();
        let (_writes, rx) = mpsc::channel::<WriteRequest>(1);
        let driver = tokio::spawn(bacnet::run_device(spec, network, out, rx));
        // A read that times out on a busy machine is a bad sample and polled again.
        let s = events
            .until(|e| match e {
                Event::Samples(batch) => batch
                    .iter()
                    .find(|s| s.point.point() == "zone_temp" && s.quality == Quality::Good)
                    .cloned(),
                _ => None,
            })
            .await;
        assert_eq!(s.value, Some(Value::Float(21.5)), "{s:?}");
        let from = peer
            .line(|l| l.strip_prefix("DISTRIBUTE ").map(str::to_string))
            .await;
        assert_eq!(from, me);
        driver.abort();
    })
    .await
}
