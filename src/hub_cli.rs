//! The `smartpark hub ...` and `smartpark edge-enroll` commands: command-line glue around
//! `cloud_hub` and the sync transport. It holds no logic of its own beyond reading
//! arguments and printing results.

use std::path::PathBuf;

use anyhow::Context as _;
use cloud_hub::transport::{self, EnrollmentToken, OperatorCa};
use cloud_hub::{Hub, HubSettings};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubArgs {
    /// Run the hub with this config file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    action: Option<HubAction>,
}

#[derive(clap::Subcommand)]
enum HubAction {
    /// Print the default hub config, with comments, to standard output.
    GenerateConfig,
    /// The hub's users: add, list, disable, enable, grant, passwd, reset-second-factor.
    User {
        #[command(subcommand)]
        action: crate::users_cli::UserAction,
    },
    /// Re-seal phone and ID numbers and second-factor secrets under a new key (the hub
    /// must be stopped).
    RotateKey {
        #[arg(long)]
        config: PathBuf,
    },
    /// Make a one-time enrollment token for a building's edge and print it.
    Enroll {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        park: String,
        #[arg(long)]
        building: String,
        /// How long the token stays valid; the config's `enrollment.token_ttl_hours` when
        /// left out.
        #[arg(long)]
        ttl_hours: Option<u32>,
    },
    /// List the enrollment tokens (their ids, buildings, expiry and state; never the
    /// tokens themselves).
    Tokens {
        #[arg(long)]
        config: PathBuf,
    },
    /// Cancel an unused enrollment token by its id (from `smartpark hub tokens`).
    CancelToken {
        #[arg(long)]
        config: PathBuf,
        id: String,
    },
    /// Revoke an edge certificate: by serial, or the current one of a building. A running
    /// hub refuses it within seconds.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, conflicts_with_all = ["park", "building"])]
        serial: Option<String>,
        #[arg(long, requires = "building")]
        park: Option<String>,
        #[arg(long, requires = "park")]
        building: Option<String>,
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
}

#[derive(clap::Args)]
pub struct EdgeEnrollArgs {
    /// The hub's QUIC address, host:port.
    #[arg(long)]
    hub: String,
    /// A file holding the token that `smartpark hub enroll` printed, or `-` to read it from
    /// standard input. Never on the command line, where other users of the host see it.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The edge's data dir; the key, certificate and CA are saved there.
    #[arg(long)]
    data_dir: PathBuf,
    /// A DNS name or IP address the LAN API is reached by (repeatable): the hub issues
    /// the API's HTTPS certificate for these names. Without any, the API serves a
    /// self-signed certificate naming the address it listens on.
    #[arg(long = "lan-name", value_name = "NAME_OR_IP")]
    lan_names: Vec<String>,
}

pub async fn run_hub(args: HubArgs) -> anyhow::Result<()> {
    match (args.action, args.config) {
        (Some(HubAction::GenerateConfig), _) => {
            print!("{}", cloud_hub::DEFAULT_CONFIG);
            Ok(())
        }
        (Some(HubAction::User { action }), _) => crate::users_cli::hub_users(action),
        (Some(HubAction::RotateKey { config }), _) => crate::users_cli::rotate_key(&config),
        (
            Some(HubAction::Enroll {
                config,
                park,
                building,
                ttl_hours,
            }),
            _,
        ) => {
            let settings = HubSettings::load(&config)?;
            let (ca, created) = OperatorCa::load_or_create(
                &settings.ca_cert,
                &settings.ca_key,
                &settings.operator,
            )?;
            if created {
                eprintln!(
                    "Created a new operator CA at {}.",
                    settings.ca_cert.display()
                );
            }
            let ttl = match ttl_hours {
                Some(h) if h == 0 || h > 720 => {
                    anyhow::bail!("--ttl-hours must be between 1 and 720")
                }
                Some(h) => std::time::Duration::from_secs(u64::from(h) * 3600),
                None => settings.token_ttl,
            };
            let created = cloud_hub::create_token(&settings.db_path(), &ca, &park, &building, ttl)?;
            // The token alone on standard output, for scripts; guidance on standard error.
            println!("{}", created.token);
            eprintln!(
                "One-time token for {park}/{building}, valid for {} h. On the edge, save it in a file only you can read, then run:\n  smartpark edge-enroll --hub HUB_HOST:{} --token-file TOKEN_FILE --data-dir DIR\n(or pipe it in with --token-file -)",
                ttl.as_secs() / 3600,
                settings.quic_listen.port()
            );
            Ok(())
        }
        (Some(HubAction::Tokens { config }), _) => {
            let settings = HubSettings::load(&config)?;
            let tokens = cloud_hub::list_tokens(&settings.db_path())?;
            println!("id            building             expires (UTC)        state");
            for t in tokens {
                println!(
                    "{:<13} {:<20} {:<20} {}",
                    t.id,
                    format!("{}/{}", t.park, t.building),
                    utc(t.expires),
                    t.state
                );
            }
            Ok(())
        }
        (Some(HubAction::CancelToken { config, id }), _) => {
            let settings = HubSettings::load(&config)?;
            let t = cloud_hub::cancel_token(&settings.db_path(), &id)?;
            println!("cancelled {} ({}/{})", t.id, t.park, t.building);
            Ok(())
        }
        (
            Some(HubAction::Revoke {
                config,
                serial,
                park,
                building,
                reason,
            }),
            _,
        ) => {
            let settings = HubSettings::load(&config)?;
            let building = park.as_deref().zip(building.as_deref());
            let serials =
                cloud_hub::revoke(&settings.db_path(), serial.as_deref(), building, &reason)?;
            for s in serials {
                println!("revoked {s}");
            }
            Ok(())
        }
        (None, Some(config)) => {
            let settings = HubSettings::load(&config)?;
            let hub = Hub::start(settings).await?;
            println!("ready quic={} api={}", hub.quic_addr, hub.api_url());
            crate::wait_for_stop().await;
            tracing::info!("Stopping the hub.");
            hub.shutdown().await;
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "say `smartpark hub --config FILE`, or one of its subcommands (see --help)"
        ),
    }
}

/// A UTC time for people, from microseconds since the Unix epoch.
fn utc(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let day = park_model::time::format_date(secs.div_euclid(86_400) as i32);
    let rest = secs.rem_euclid(86_400);
    format!("{day} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

/// Reads an enrollment token from a file, or from standard input for `-`.
fn read_token(path: &std::path::Path) -> anyhow::Result<EnrollmentToken> {
    use std::io::Read as _;
    let mut text = String::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut text)
            .context("cannot read the token from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(4096).read_to_string(&mut text))
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
    }
    EnrollmentToken::parse(text.trim())
        .with_context(|| format!("{} does not hold an enrollment token", path.display()))
}

pub async fn edge_enroll(args: EdgeEnrollArgs) -> anyhow::Result<()> {
    let token = read_token(&args.token_file)?;
    let hub = tokio::net::lookup_host(&args.hub)
        .await
        .with_context(|| format!("cannot resolve the hub address {:?}", args.hub))?
        .next()
        .with_context(|| format!("the hub address {:?} resolves to nothing", args.hub))?;
    let enrolled = transport::enroll_with_lan(hub, &token, &args.data_dir, &args.lan_names)
        .await
        .with_context(|| format!("cannot enroll with the hub at {hub}"))?;
    let id = enrolled.tls.identity();
    println!(
        "enrolled park={} building={} serial={} data_dir={} lan_names={}",
        id.park,
        id.building,
        id.serial,
        args.data_dir.display(),
        enrolled.lan_names.join(",")
    );
    if !args.lan_names.is_empty() && enrolled.lan_names.is_empty() {
        eprintln!(
            "The hub issued no LAN API certificate (see the warning above); the API will serve a self-signed one."
        );
    }
    Ok(())
}
