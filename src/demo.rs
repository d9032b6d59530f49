//! `smartpark demo`: simulated devices speaking the real protocols, and an edge node
//! reading them, in one process, with every URL printed. Ctrl-C stops it all.

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
    let api = free_or_any(port).await;
    let config = format!(
        r#"[node]
park = "demo-park"
building = "b1"
data_dir = "{data}"
profiles_dir = "{profiles}"

[api]
listen = "{api}"

[mqtt]
listen_v4 = "127.0.0.1:0"
listen_v5 = "127.0.0.1:0"

[storage]
raw_retention_days = 2
disk_budget_mb = 256

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
        profiles = toml_path(&profiles),
        m1 = meters[0],
        m2 = meters[1],
    );
    let file = data_dir.join("b1.toml");
    std::fs::write(&file, config).with_context(|| format!("cannot write {}", file.display()))?;
    let node = EdgeNode::start(EdgeSettings::load(&file)?).await?;
    let broker = node.mqtt_v4.context("the demo needs the MQTT broker")?;
    for (i, topic) in ["lobby-env", "lab-env"].into_iter().enumerate() {
        let host = broker.ip().to_string();
        tokio::spawn(async move {
            if let Err(e) = device_sim::run_mqtt_sensor(
                &host,
                broker.port(),
                topic,
                Duration::from_secs(2),
                10 + i as u64,
            )
            .await
            {
                tracing::error!(error = %format!("{e:#}"), "Simulated MQTT sensor stopped.");
            }
        });
    }

    crate::print_endpoints(&node);
    let a = node.api_addr;
    println!();
    println!(
        "smartpark demo: building b1 of demo-park, with 2 simulated Modbus TCP energy meters and 2 MQTT sensors."
    );
    println!("  Devices:        http://{a}/api/v1/devices");
    println!("  Latest values:  http://{a}/api/v1/points");
    println!("  History:        http://{a}/api/v1/points/main-meter/power_total/history");
    println!("  Live stream:    http://{a}/api/v1/stream");
    println!("  Metrics:        http://{a}/metrics");
    println!(
        "  MQTT broker:    {} (MQTT 3.1.1), {} (MQTT 5)",
        broker,
        node.mqtt_v5.map(|a| a.to_string()).unwrap_or_default()
    );
    println!(
        "  Energy meters:  Modbus TCP at {} and {}",
        meters[0], meters[1]
    );
    println!("  Data:           {}", data_dir.display());
    if port != 0 && a.port() != port {
        println!(
            "  (port {port} was in use, so the console took {})",
            a.port()
        );
    }
    println!("Press Ctrl-C to stop.");
    crate::wait_for_stop().await;
    println!("Stopping the demo.");
    node.shutdown().await;
    Ok(())
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
