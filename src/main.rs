//! The `smartpark` command: runs an edge node, the demo, benchmarks, simulated devices, and
//! prints or checks configuration. Only this binary installs tracing and owns the runtime.

mod bench;
mod bench_auth;
mod bench_bacnet;
mod bench_billing;
mod bench_console;
mod bench_hub;
mod bench_park;
mod bench_rules;
mod bench_sync;
mod demo;
mod demo_park;
mod demo_users;
mod hub_cli;
mod users_cli;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use edge_node::{EdgeNode, EdgeSettings};

#[derive(Parser)]
#[command(
    name = "smartpark",
    version,
    about = "Edge-first runtime for smart industrial and science parks"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge node of one building (`--config FILE`), or manage its local
    /// accounts (`user add|list|disable|enable|grant|passwd|reset-second-factor`).
    Edge(users_cli::EdgeArgs),
    /// Print the default edge config, with comments, to standard output.
    GenerateConfig,
    /// Check an edge config file and its device profiles; print what is wrong, if anything.
    CheckConfig { file: PathBuf },
    /// Make the park's credential key file (`business.credential_key_file`), readable by its
    /// owner only; copy the same file to every building of the park. An existing file is kept.
    CredentialKey { file: PathBuf },
    /// Make a device's account on the building's broker: a random password for the device
    /// (printed once) and the `[[mqtt.client]]` lines for the edge config, with its hash.
    MqttCredential {
        /// The device's username (also its MQTT client id).
        username: String,
    },
    /// Issue a device's certificate for the building broker's TLS listener from the operator
    /// CA (on the host that keeps the CA's key): DIR/DEVICE-cert.pem and DIR/DEVICE-key.pem,
    /// named PARK/BUILDING/DEVICE, so that it is that account in that building only.
    DeviceCert {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        #[arg(long)]
        park: String,
        #[arg(long)]
        building: String,
        /// The device's account (`[[mqtt.client]]` username).
        #[arg(long)]
        device: String,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a demo: simulated devices and an edge node, with the URLs printed.
    Demo {
        /// Where the demo keeps its data; a fresh temporary folder when left out.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The device profiles folder.
        #[arg(long, default_value = "firmware-configs/profiles")]
        profiles: PathBuf,
        /// Preferred port of the edge console; a free one is taken if it is in use.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Run a benchmark and print its figures as `name: value unit` lines.
    Bench {
        #[arg(value_enum)]
        name: bench::BenchName,
        /// How long each measured phase runs, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Credentials in the sample park (access).
        #[arg(long, default_value_t = 100_000)]
        credentials: usize,
    },
    /// Run the cloud hub (`--config FILE`), or manage it: generate-config, enroll, revoke.
    Hub(hub_cli::HubArgs),
    /// The operator's root CA, kept off the hubs' hosts: `ca init`, `ca sign`.
    Ca {
        #[command(subcommand)]
        action: hub_cli::CaAction,
    },
    /// Enroll this building's edge with the hub: make keys, redeem a token, save the
    /// certificates (sync, and the LAN API's for `--lan-name`).
    EdgeEnroll(hub_cli::EdgeEnrollArgs),
    /// Check audit logs: `audit verify --data-dir DIR`.
    Audit(users_cli::AuditArgs),
    /// Run a simulated device.
    Sim {
        #[command(subcommand)]
        device: SimDevice,
    },
}

#[derive(Subcommand)]
enum SimDevice {
    /// A Modbus TCP three-phase energy meter (Eastron SDM630 register map).
    EnergyMeter {
        /// Address to listen on; port 0 picks a free one (printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A BACnet/IP air-handling unit controller (the objects of the generic-bacnet-ahu
    /// profile).
    BacnetAhu {
        /// IPv4 address to answer on, with its UDP port; port 0 picks a free one (printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The device instance.
        #[arg(long, default_value_t = 1001)]
        instance: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// An MQTT temperature and humidity sensor (Tasmota telemetry).
    MqttSensor {
        /// Broker as host:port.
        #[arg(long)]
        broker: String,
        #[arg(long)]
        topic_id: String,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Edge(users_cli::EdgeArgs {
            action: Some(users_cli::EdgeAction::User { action }),
            ..
        }) => users_cli::edge_users(action),
        Command::Edge(users_cli::EdgeArgs { config: None, .. }) => {
            anyhow::bail!(
                "give --config FILE to run the edge node, or a command such as `user add`"
            )
        }
        Command::Edge(users_cli::EdgeArgs {
            config: Some(config),
            ..
        }) => {
            let settings = EdgeSettings::load(&config)?;
            let node = EdgeNode::start(settings).await?;
            print_endpoints(&node);
            wait_for_stop().await;
            tracing::info!("Stopping: committing what is queued.");
            node.shutdown().await;
            Ok(())
        }
        Command::GenerateConfig => {
            print!("{}", edge_node::DEFAULT_CONFIG);
            Ok(())
        }
        Command::CredentialKey { file } => {
            let key = edge_node::park::generate_credential_key_file(&file)?;
            println!(
                "{}: credential key {} written; copy this file to every building of the park",
                file.display(),
                key.id()
            );
            Ok(())
        }
        Command::DeviceCert {
            ca_cert,
            ca_key,
            park,
            building,
            device,
            days,
            out,
        } => {
            let ca = sync_protocol::transport::OperatorCa::load(&ca_cert, &ca_key)?;
            let issued = ca.issue_device_cert(
                &park,
                &building,
                &device,
                sync_protocol::transport::Validity::days_from_now(days),
            )?;
            std::fs::create_dir_all(&out)?;
            let (cert, key) = (
                out.join(format!("{device}-cert.pem")),
                out.join(format!("{device}-key.pem")),
            );
            issued.save(&cert, &key)?;
            println!(
                "{}: certificate for {park}/{building}/{device}, valid {days} days; key in {}",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::MqttCredential { username } => {
            anyhow::ensure!(
                device_drivers::profile::is_name(&username)
                    && !username.starts_with(edge_node::broker::EDGE_USER),
                "{username:?} is not a valid username (letters, digits, '-', '_', '.'; not \
                 starting with {:?})",
                edge_node::broker::EDGE_USER
            );
            let password = edge_node::broker::random_password();
            let hash =
                edge_node::broker::password_hash(&password, edge_node::broker::HASH_ITERATIONS);
            println!("# The device logs in as {username:?} with the password {password}");
            println!("# (shown once; the edge keeps only its hash). Add to the edge config, with");
            println!("# what the device is: device = \"ID\", doors = [...] or lanes = [...]:");
            println!("[[mqtt.client]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"");
            Ok(())
        }
        Command::CheckConfig { file } => {
            let s = EdgeSettings::load(&file)?;
            println!(
                "{}: ok ({} devices, {} points, {} profiles)",
                file.display(),
                s.devices.len(),
                s.devices
                    .iter()
                    .map(|d| d.profile.points.len())
                    .sum::<usize>(),
                s.profiles.len()
            );
            Ok(())
        }
        Command::Demo {
            data_dir,
            profiles,
            port,
        } => demo::run(data_dir, profiles, port).await,
        Command::Bench {
            name,
            seconds,
            credentials,
        } => bench::run(name, seconds, credentials).await,
        Command::Hub(args) => hub_cli::run_hub(args).await,
        Command::Audit(users_cli::AuditArgs {
            action: users_cli::AuditAction::Verify { data_dir },
        }) => {
            if users_cli::verify(&data_dir)? {
                Ok(())
            } else {
                anyhow::bail!("an audit chain is broken (see above)")
            }
        }
        Command::EdgeEnroll(args) => hub_cli::edge_enroll(args).await,
        Command::Ca { action } => hub_cli::run_ca(action),
        Command::Sim { device } => match device {
            SimDevice::EnergyMeter { listen, seed } => {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                println!("ready modbus={}", listener.local_addr()?);
                device_sim::serve_energy_meter(listener, seed).await
            }
            SimDevice::BacnetAhu {
                listen,
                instance,
                seed,
            } => {
                let address: std::net::SocketAddrV4 = listen
                    .parse()
                    .with_context(|| format!("--listen {listen:?} must be an IPv4 address:port"))?;
                let ahu = device_sim::BacnetAhuSim::new(instance, seed)
                    .bind(address)
                    .await?;
                println!("ready bacnet={} instance={instance}", ahu.local_addr());
                ahu.run().await
            }
            SimDevice::MqttSensor {
                broker,
                topic_id,
                interval_ms,
                seed,
            } => {
                let (host, port) = broker
                    .rsplit_once(':')
                    .context("--broker must be host:port")?;
                let port: u16 = port.parse().context("--broker must be host:port")?;
                let mut sensor = device_sim::MqttSensorSim::new(
                    host,
                    port,
                    &topic_id,
                    std::time::Duration::from_millis(interval_ms),
                    seed,
                );
                // The broker account's password, when the broker asks for one (its
                // username is `sim_TOPIC_ID`); an environment variable, so that it is
                // never on a command line.
                if let Ok(p) = std::env::var("SMARTPARK_MQTT_PASSWORD") {
                    sensor = sensor.with_password(&p);
                }
                sensor.run().await
            }
        },
    }
}

/// One line that scripts and tests can read, then the same for people.
pub(crate) fn print_endpoints(node: &EdgeNode) {
    let mqtt =
        |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    println!(
        "ready api={} mqtt={} mqtt_tls={}",
        node.api_url(),
        mqtt(node.mqtt),
        mqtt(node.mqtt_tls)
    );
}

pub(crate) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
