//! `smartpark demo`: a hub, two buildings enrolled with it, and simulated devices speaking
//! the real protocols, in one process, with every URL printed. Ctrl-C stops it all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use edge_node::{EdgeNode, EdgeSettings};
use tokio::net::TcpListener;

pub async fn run(data_dir: Option<PathBuf>, profiles: PathBuf, port: u16) -> anyhow::Result<()> {
    let profiles = profiles
        .canonicalize()
        .with_context(|| format!("cannot find the device profiles at {} (run the demo from the repository root, or pass --profiles)", profiles.display()))?;
    let _tmp;
    let data_dir = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("smartpark-demo-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            _tmp = t;
            p
        }
    };

    // Two simulated energy meters, on ports the OS picks, so nothing already running on
    // this machine is in the way.
    let mut meters = Vec::new();
    for seed in [1u64, 2] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = device_sim::serve_energy_meter(listener, seed).await {
                tracing::error!(error = %format!("{e:#}"), "Simulated energy meter stopped.");
            }
        });
        meters.push(addr);
    }
    // An air-handling unit on BACnet/IP, on a loopback address of its own and a UDP port
    // the OS had free: never 47808, which other BACnet software on this machine may hold.
    let ahu = bind_ahu().await?;
    let ahu_addr = ahu.local_addr();
    tokio::spawn(async move {
        if let Err(e) = ahu.run().await {
            tracing::error!(error = %format!("{e:#}"), "Simulated air-handling unit stopped.");
        }
    });
    // The park's documents know the simulated cards and plates.
    let credentials = device_sim::demo_credentials(7, 40);
    let plates = device_sim::demo_plates(7, 30, 2);
    let key = crate::demo_park::credential_key(&data_dir.join("credential.key"))?;
    crate::demo_park::write(
        &data_dir.join("seed-b1"),
        "b1",
        device_drivers::now_micros(),
        &credentials,
        &plates,
        &key,
    )?;
    // The hub holds the park's master data: the same documents, which the edge of b1 also
    // starts from (so it decides before its first sync), merged at the hub's start.
    let hub_seed = data_dir.join("hub-seed");
    let park_seed = hub_seed.join("demo-park");
    std::fs::create_dir_all(&park_seed)?;
    for name in [
        "directory.automerge",
        "building-b1.automerge",
        "parking.automerge",
    ] {
        std::fs::copy(data_dir.join("seed-b1").join(name), park_seed.join(name))
            .with_context(|| format!("cannot copy the seed document {name}"))?;
    }
    // The hub, with its operator CA made on first start, and a one-time enrollment per
    // building, exactly as an operator would do it.
    let hub_dir = data_dir.join("hub");
    // The online payment provider, simulated: it signs and notifies as WeChat Pay's API v2
    // does, with a merchant key made on first start.
    let pay_key_file = data_dir.join("payment.key");
    if !pay_key_file.exists() {
        let key: String = (0..32)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(0..16)]))
            .collect();
        std::fs::write(&pay_key_file, &key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pay_key_file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let merchant = device_sim::Merchant {
        app_id: "wx0000000000demo0".into(),
        mch_id: "1900000001".into(),
        key: std::fs::read_to_string(&pay_key_file)?.trim().to_string(),
    };
    let pay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pay_addr = pay_listener.local_addr()?;
    let pay_sim = device_sim::PayProviderSim::new(
        merchant.clone(),
        device_sim::pay_provider::provider_retries(),
    );
    tokio::spawn(async move {
        if let Err(e) = pay_sim.serve(pay_listener).await {
            tracing::error!(error = %e, "The simulated payment provider stopped.");
        }
    });
    let hub_settings = cloud_hub::HubSettings {
        operator: "demo-operator".into(),
        data_dir: hub_dir.clone(),
        quic_listen: "127.0.0.1:0".parse()?,
        server_names: vec![],
        http_listen: "127.0.0.1:0".parse()?,
        http_tls: cloud_hub::HttpTls::Plain,
        auth: accounts::AuthSettings::default(),
        key_file: hub_dir.join("secrets/hub.key"),
        log_retention_days: 180,
        ca_cert: hub_dir.join("ca/ca-cert.pem"),
        ca_key: hub_dir.join("ca/ca-key.pem"),
        token_ttl: Duration::from_secs(3600),
        edge_cert_days: 30,
        renew_before: Duration::from_secs(10 * 86_400),
        documents_seed_dir: Some(hub_seed),
        credential_keys: [("demo-park".to_string(), data_dir.join("credential.key"))].into(),
        influx: None,
        database: park_db::Target::Sqlite(hub_dir.join("hub.sqlite")),
        payments: Some(cloud_hub::payments::ProviderSettings {
            url: format!("http://{pay_addr}"),
            app_id: merchant.app_id.clone(),
            mch_id: merchant.mch_id.clone(),
            key_file: pay_key_file.clone(),
            notify_url: None,
        }),
        // The demo prints the emails it would send.
        notifications: Some(cloud_hub::notify::ChannelSettings::Print),
    };
    let db = hub_settings.database.clone();
    let hub = cloud_hub::Hub::start(hub_settings).await?;
    // People for every role; the building roles reach b1's edge by sync.
    let logins = crate::demo_users::ensure(&db, &data_dir)?;
    hub.auth.reload().await?;
    for building in ["b1", "b2"] {
        let identity = data_dir.join(format!("identity-{building}"));
        if sync_protocol::transport::EdgeTlsConfig::load(&identity).is_err() {
            let token = cloud_hub::create_token(
                &db,
                &hub.ca,
                "demo-park",
                building,
                Duration::from_secs(3600),
            )?;
            sync_protocol::transport::enroll(hub.quic_addr, &token.token, &identity).await?;
        }
    }

    let api = free_or_any(port).await;
    // Every simulated device logs in to the building's broker with its own account.
    let mqtt_password = edge_node::broker::random_password();
    let config = format!(
        r#"[node]
park = "demo-park"
building = "b1"
data_dir = "{data}"
profiles_dir = "{profiles}"

[api]
listen = "{api}"
# Plain HTTP on loopback, so that a browser opens the demo without a certificate warning.
plain_http = true

[mqtt]
listen = "127.0.0.1:0"
{mqtt_clients}
[storage]
raw_retention_days = 2
minute_rollup_retention_days = 2
rollup_retention_days = 30
disk_budget_mb = 256

[business]
seed_dir = "{seed}"
credential_key_file = "{credential_key}"

[sync]
hub = "{hub}"
identity_dir = "{identity}"

[rules]
file = "{rules}"

[[device]]
id = "main-meter"
name = "Main incomer energy meter"
profile = "eastron-sdm630"
poll_interval_ms = 1000
timeout_ms = 500
modbus_tcp = {{ address = "{m1}", unit = 1 }}

[[device]]
id = "hvac-meter"
name = "HVAC plant energy meter"
profile = "eastron-sdm630"
poll_interval_ms = 1000
timeout_ms = 500
modbus_tcp = {{ address = "{m2}", unit = 1 }}

[[device]]
id = "ahu-1"
name = "Air-handling unit AHU-1"
profile = "generic-bacnet-ahu"
poll_interval_ms = 5000
timeout_ms = 1000
bacnet = {{ instance = {ahu_instance}, address = "{ahu}", local_port = 0 }}

[[device]]
id = "lobby-env"
name = "Lobby temperature and humidity"
profile = "tasmota-am2301"
mqtt = {{ topic_id = "lobby-env" }}

[[device]]
id = "lab-env"
name = "Laboratory temperature and humidity"
profile = "tasmota-am2301"
mqtt = {{ topic_id = "lab-env" }}
"#,
        data = toml_path(&data_dir.join("b1")),
        seed = toml_path(&data_dir.join("seed-b1")),
        credential_key = toml_path(&data_dir.join("credential.key")),
        hub = hub.quic_addr,
        identity = toml_path(&data_dir.join("identity-b1")),
        profiles = toml_path(&profiles),
        rules = toml_path(&profiles.join("../rules/building-b1.toml")),
        m1 = meters[0],
        m2 = meters[1],
        ahu = ahu_addr,
        ahu_instance = AHU_INSTANCE,
        mqtt_clients = mqtt_accounts(&mqtt_password),
    );
    let file = data_dir.join("b1.toml");
    std::fs::write(&file, config).with_context(|| format!("cannot write {}", file.display()))?;
    let node = EdgeNode::start(EdgeSettings::load(&file)?).await?;

    // A second building: telemetry only (its doors are not in this demo), its own broker.
    let meter = TcpListener::bind("127.0.0.1:0").await?;
    let b2_meter = meter.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = device_sim::serve_energy_meter(meter, 3).await {
            tracing::error!(error = %format!("{e:#}"), "Simulated energy meter stopped.");
        }
    });
    let b2_file = data_dir.join("b2.toml");
    std::fs::write(
        &b2_file,
        format!(
            "[node]\npark = \"demo-park\"\nbuilding = \"b2\"\ndata_dir = \"{data}\"\nprofiles_dir = \"{profiles}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[mqtt]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\nraw_retention_days = 2\nminute_rollup_retention_days = 2\nrollup_retention_days = 30\ndisk_budget_mb = 256\n\
             [business]\nenabled = false\n[sync]\nhub = \"{hub}\"\nidentity_dir = \"{identity}\"\n\n\
             [[device]]\nid = \"main-meter\"\nname = \"Building 2 incomer\"\nprofile = \"eastron-sdm630\"\npoll_interval_ms = 1000\ntimeout_ms = 500\n\
             modbus_tcp = {{ address = \"{meter}\", unit = 1 }}\n",
            data = toml_path(&data_dir.join("b2")),
            profiles = toml_path(&profiles),
            hub = hub.quic_addr,
            identity = toml_path(&data_dir.join("identity-b2")),
            meter = b2_meter,
        ),
    )?;
    let node_b2 = EdgeNode::start(EdgeSettings::load(&b2_file)?).await?;
    let broker = node.mqtt.context("the demo needs the MQTT broker")?;
    for (i, topic) in ["lobby-env", "lab-env"].into_iter().enumerate() {
        let sensor = device_sim::MqttSensorSim::new(
            &broker.ip().to_string(),
            broker.port(),
            topic,
            Duration::from_secs(2),
            10 + i as u64,
        )
        .with_password(&mqtt_password);
        tokio::spawn(async move {
            if let Err(e) = sensor.run().await {
                tracing::error!(error = %format!("{e:#}"), "Simulated MQTT sensor stopped.");
            }
        });
    }

    // Door controllers and plate cameras, with a day compressed into an hour so that the
    // demo shows the morning peak and the evening outflow while someone watches.
    let host = broker.ip().to_string();
    let doors = crate::demo_park::DOORS
        .iter()
        .enumerate()
        .map(|(i, d)| device_sim::DoorConfig::new(d, if i == 0 { 1.0 } else { 0.3 }))
        .collect();
    let mut door_config =
        device_sim::DoorControllerConfig::new(&host, broker.port(), doors, credentials);
    door_config.seed = 7;
    door_config.utc_offset_s = 8 * 3600;
    door_config.time_compression = 24.0;
    door_config.mqtt_password = Some(mqtt_password.clone());
    let door_sim = door_config.build()?;
    tokio::spawn(async move {
        if let Err(e) = door_sim.run().await {
            tracing::error!(error = %format!("{e:#}"), "Simulated door controllers stopped.");
        }
    });
    let lanes = crate::demo_park::LANES
        .iter()
        .map(|(id, d)| {
            device_sim::LaneConfig::new(
                id,
                if *d == park_model::parking::LaneDirection::In {
                    device_sim::Direction::In
                } else {
                    device_sim::Direction::Out
                },
            )
        })
        .collect();
    let mut lot_config = device_sim::PlateCameraConfig::new(
        &host,
        broker.port(),
        device_sim::LotConfig::new(lanes, plates),
    );
    lot_config.seed = 7;
    lot_config.utc_offset_s = 8 * 3600;
    lot_config.time_compression = 24.0;
    lot_config.mqtt_password = Some(mqtt_password.clone());
    let lot_sim = lot_config.build()?;
    tokio::spawn(async move {
        if let Err(e) = lot_sim.run().await {
            tracing::error!(error = %format!("{e:#}"), "Simulated plate cameras stopped.");
        }
    });

    crate::print_endpoints(&node);
    let a = node.api_addr;
    println!();
    println!(
        "smartpark demo: building b1 of demo-park, with 2 simulated Modbus TCP energy meters, a BACnet/IP air-handling unit, 2 MQTT sensors, 3 door controllers and a car park with 2 camera lanes (a simulated day passes in an hour)."
    );
    println!("  Edge console:   http://{a}/   (log in with a login below)");
    println!("  Devices:        http://{a}/api/v1/devices");
    println!("  Latest values:  http://{a}/api/v1/points");
    println!("  History:        http://{a}/api/v1/points/main-meter/power_total/history");
    println!("  Live stream:    http://{a}/api/v1/stream");
    println!("  Doors:          http://{a}/api/v1/doors");
    println!("  Access log:     http://{a}/api/v1/events?kind=access");
    println!("  Car park:       http://{a}/api/v1/lots");
    println!("  Parking log:    http://{a}/api/v1/events?kind=parking");
    println!("  Plate reviews:  http://{a}/api/v1/parking/review");
    println!("  Alarms:         http://{a}/api/v1/alarms");
    println!("  Rules:          http://{a}/api/v1/rules");
    println!("  Metrics:        http://{a}/metrics");
    println!("  API document:   http://{a}/api/v1/openapi.json");
    println!(
        "  MQTT broker:    {broker} (MQTT 3.1.1 and 5; each simulated device has its own account)"
    );
    println!(
        "  Energy meters:  Modbus TCP at {} and {}",
        meters[0], meters[1]
    );
    println!("  Air handler:    BACnet/IP device {AHU_INSTANCE} at {ahu_addr}");
    println!(
        "  Building b2:    http://{}/api/v1/points (a metered building without doors)",
        node_b2.api_addr
    );
    println!(
        "  Hub console:    http://{}/   (the park manager's console; log in with a login below)",
        hub.api_addr
    );
    println!(
        "  Hub API:        http://{}/api/v1/parks/demo-park/buildings (QUIC for edges at {})",
        hub.api_addr, hub.quic_addr
    );
    println!("  Uplink state:   http://{a}/api/v1/sync");
    println!(
        "  Payments:       simulated WeChat Pay at http://{pay_addr} (POST /sim/pay {{\"out_trade_no\": ...}} pays an order; GET /sim/orders lists them)"
    );
    println!("  Data:           {}", data_dir.display());
    if port != 0 && a.port() != port {
        println!(
            "  (port {port} was in use, so the console took {})",
            a.port()
        );
    }
    println!();
    println!("  Logins (every API needs one; POST /api/v1/auth/login with username and password):");
    for l in &logins {
        println!(
            "    {:<11} {:<20} {:<44} {}",
            l.username, l.password, l.grant, l.about
        );
    }
    println!(
        "    (kept in {})",
        data_dir.join("demo-logins.txt").display()
    );
    println!("Press Ctrl-C to stop.");
    crate::wait_for_stop().await;
    println!("Stopping the demo.");
    node.shutdown().await;
    node_b2.shutdown().await;
    hub.shutdown().await;
    Ok(())
}

/// The BACnet device instance of the demo's air-handling unit.
const AHU_INSTANCE: u32 = 1001;

/// The simulated AHU on 127.0.0.2, or on 127.0.0.1 where only that loopback address exists
/// (macOS configures no other by default); a free port either way.
async fn bind_ahu() -> anyhow::Result<device_sim::BacnetAhu> {
    let sim = device_sim::BacnetAhuSim::new(AHU_INSTANCE, 4).utc_offset_s(8 * 3600);
    match sim.clone().bind("127.0.0.2:0".parse()?).await {
        Ok(ahu) => Ok(ahu),
        Err(error) => {
            tracing::debug!(error = %format!("{error:#}"), "No 127.0.0.2; the AHU takes 127.0.0.1.");
            sim.bind("127.0.0.1:0".parse()?).await
        }
    }
}

/// The preferred port on loopback if it is free, else one the OS picks.
async fn free_or_any(port: u16) -> SocketAddr {
    let preferred = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// A path as a TOML basic string body.
fn toml_path(p: &std::path::Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// The `[[mqtt.client]]` accounts of b1's simulated devices, all with `password` (each
/// stored as its own salted hash): a controller per door, a camera per lane, two sensors.
fn mqtt_accounts(password: &str) -> String {
    use edge_node::broker::{HASH_ITERATIONS, password_hash};
    let mut out = String::new();
    let mut account = |username: String, what: String| {
        let hash = password_hash(password, HASH_ITERATIONS);
        out.push_str(&format!(
            "[[mqtt.client]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"\n{what}\n\n"
        ));
    };
    for d in crate::demo_park::DOORS {
        account(format!("sim_door_{d}"), format!("doors = [\"{d}\"]"));
    }
    for (l, _) in crate::demo_park::LANES {
        account(format!("sim_lane_{l}"), format!("lanes = [\"{l}\"]"));
    }
    for s in ["lobby-env", "lab-env"] {
        account(format!("sim_{s}"), format!("device = \"{s}\""));
    }
    out
}
