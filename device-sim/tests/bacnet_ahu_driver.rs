//! Reads the simulated BACnet AHU with the project's own driver and the
//! `firmware-configs/profiles/generic-bacnet-ahu.toml` profile, over real UDP on loopback:
//! every point of the profile is served and plausible, the supply air setpoint takes a write
//! at priority 8 and falls back to its relinquish default, and the supply air temperature is
//! pushed by COV as it drifts to the new setpoint.
//!
//! Each test has its own loopback address (127.0.0.6x) and a port the OS had free; the
//! driver's side binds an ephemeral port, so nothing here needs 47808.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use device_drivers::bacnet::{self, Command, Network};
use device_drivers::device::{BacnetLink, BacnetPort};
use device_drivers::{
    Connection, DeviceSpec, DeviceStatus, DriverOutput, Profile, Quality, Sample, Value,
};
use device_sim::{BacnetAhu, BacnetAhuSim};
use tokio::sync::{mpsc, oneshot};

const TIMEOUT: Duration = Duration::from_secs(2);

async fn start_ahu(ip: Ipv4Addr, instance: u32, compression: f64) -> SocketAddrV4 {
    let ahu: BacnetAhu = BacnetAhuSim::new(instance, 7)
        .tick(Duration::from_millis(50))
        .time_compression(compression)
        .bind(SocketAddrV4::new(ip, 0))
        .await
        .expect("the simulated AHU binds a loopback address");
    let address = ahu.local_addr();
    assert_eq!(address.ip(), &ip);
    assert_ne!(address.port(), 0);
    tokio::spawn(ahu.run());
    address
}

fn spec(id: &str, instance: u32, address: SocketAddrV4, poll_interval: Duration) -> DeviceSpec {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firmware-configs/profiles/generic-bacnet-ahu.toml");
    let profile = Profile::read(&file).expect("the AHU profile loads");
    DeviceSpec {
        id: id.into(),
        name: None,
        profile: Arc::new(profile),
        poll_interval,
        timeout: TIMEOUT,
        inter_request_delay: Duration::ZERO,
        connection: Connection::Bacnet(BacnetLink {
            instance,
            address: Some(address),
            port: BacnetPort {
                local: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                broadcast: SocketAddrV4::new(Ipv4Addr::new(127, 255, 255, 255), address.port()),
                bbmd: None,
            },
            max_in_flight: 1,
        }),
    }
}

fn network(spec: &DeviceSpec) -> Network {
    let Connection::Bacnet(link) = &spec.connection else {
        unreachable!("a BACnet spec")
    };
    Network::new(link.port.clone(), TIMEOUT)
}

#[derive(Clone)]
struct Collect(mpsc::UnboundedSender<Sample>);

impl DriverOutput for Collect {
    async fn samples(&self, batch: Vec<Sample>) {
        for sample in batch {
            let _ = self.0.send(sample);
        }
    }
    fn status(&self, _: &str, _: DeviceStatus) {}
}

#[tokio::test]
async fn a_scan_with_the_ahu_profile_reads_every_point_good_and_plausible() {
    let address = start_ahu(Ipv4Addr::new(127, 0, 0, 61), 3101, 1.0).await;
    let spec = spec("ahu-1", 3101, address, Duration::from_secs(60));
    let (samples, _) = bacnet::scan_once(&spec, &network(&spec))
        .await
        .expect("the simulated AHU answers a scan");
    assert_eq!(samples.len(), spec.profile.points.len());
    let values: HashMap<&str, &Value> = samples
        .iter()
        .map(|s| {
            assert_eq!(s.quality, Quality::Good, "{s:?}");
            (
                s.point.point(),
                s.value.as_ref().expect("a good sample has a value"),
            )
        })
        .collect();
    let float = |name: &str| match values[name] {
        Value::Float(x) => *x,
        other => panic!("{name} = {other:?}, not a float"),
    };
    // The profile's plausible ranges hold (a value outside would be uncertain, not good);
    // these are tighter: what a running unit on a mild day shows.
    let supply = float("supply_air_temp");
    assert!((11.0..=16.0).contains(&supply), "supply_air_temp {supply}");
    let ret = float("return_air_temp");
    assert!((20.0..=27.0).contains(&ret), "return_air_temp {ret}");
    assert!(float("outside_air_temp") > -40.0);
    assert!((200.0..=300.0).contains(&float("supply_air_static_pressure")));
    assert!(float("outside_airflow") >= 1_000.0);
    assert!((400.0..=1_500.0).contains(&float("return_air_co2")));
    assert_eq!(float("supply_air_temp_setpoint"), 13.0);
    assert_eq!(float("supply_air_static_pressure_setpoint"), 250.0);
    assert_eq!(values["supply_fan_start"], &Value::Bool(true));
    assert_eq!(values["supply_fan_status"], &Value::Bool(true));
    assert_eq!(values["freeze_stat"], &Value::Bool(false));
    assert_eq!(values["enable"], &Value::Bool(true));
    assert_eq!(values["occupancy_mode"], &Value::Int(1));
    assert!(
        matches!(values["operating_mode"], Value::Int(1..=4)),
        "{:?}",
        values["operating_mode"]
    );
}

#[tokio::test]
async fn the_setpoint_written_at_priority_8_is_read_back_pulls_the_supply_air_and_relinquishes() {
    // Two simulated minutes per real second: the supply air (a five-minute lag) moves by
    // COV increments within a few seconds.
    let address = start_ahu(Ipv4Addr::new(127, 0, 0, 62), 3102, 120.0).await;
    // Polled once an hour: every sample after the first read is a write's read-back or a
    // COV notification.
    let spec = spec("ahu-2", 3102, address, Duration::from_secs(3600));
    let network = network(&spec);
    let (tx, mut samples) = mpsc::unbounded_channel();
    let (commands, writes) = mpsc::channel::<Command>(4);
    let driver = tokio::spawn(bacnet::run_device(spec, network, Collect(tx), writes));

    let first_supply = loop {
        let s = tokio::time::timeout(Duration::from_secs(10), samples.recv())
            .await
            .expect("the first read arrives")
            .expect("the driver runs");
        if s.point.point() == "supply_air_temp" {
            assert_eq!(s.quality, Quality::Good, "{s:?}");
            break s.value.and_then(|v| v.as_f64()).unwrap();
        }
    };
    assert!((12.0..=14.0).contains(&first_supply), "{first_supply}");

    let write = |value: Option<Value>| {
        let commands = commands.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            commands
                .send(Command {
                    point: "supply_air_temp_setpoint".into(),
                    value,
                    priority: Some(8),
                    reply,
                })
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), answer)
                .await
                .expect("the write is answered")
                .unwrap()
        }
    };
    assert_eq!(
        write(Some(Value::Float(18.5))).await,
        Ok(Value::Float(18.5))
    );

    // The supply air climbs towards 18.5 °C, pushed by COV (the poll is an hour away).
    let pushed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = samples.recv().await.expect("the driver runs");
            if s.point.point() == "supply_air_temp"
                && let Some(v) = s.value.as_ref().and_then(Value::as_f64)
                && v > first_supply + 1.0
            {
                assert_eq!(s.quality, Quality::Good, "{s:?}");
                break v;
            }
        }
    })
    .await
    .expect("COV notifications of the supply air as it warms");
    assert!(pushed < 19.0, "{pushed}");

    // Relinquishing priority 8 brings back the relinquish default.
    assert_eq!(write(None).await, Ok(Value::Float(13.0)));
    driver.abort();
}

#[tokio::test]
async fn port_zero_gets_a_free_port_and_two_units_can_share_one_on_different_addresses() {
    let first = BacnetAhuSim::new(3103, 1)
        .bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 63), 0))
        .await
        .unwrap();
    let port = first.local_addr().port();
    let second = BacnetAhuSim::new(3104, 2)
        .bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 64), port))
        .await
        .expect("another address may use the same port");
    assert_eq!(second.local_addr().port(), port);
    for (ahu, instance) in [(first, 3103), (second, 3104)] {
        let address = ahu.local_addr();
        tokio::spawn(ahu.run());
        let spec = spec("ahu", instance, address, Duration::from_secs(60));
        let (samples, _) = bacnet::scan_once(&spec, &network(&spec))
            .await
            .unwrap_or_else(|e| panic!("device {instance} at {address}: {e}"));
        assert!(
            samples.iter().all(|s| s.quality == Quality::Good),
            "{samples:?}"
        );
    }
}
