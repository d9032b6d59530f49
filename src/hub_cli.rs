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
    /// Make the hub's issuing CA key (in the config's `ca.key`, owner-only) and write its
    /// certificate request to `--out`, for the operator's root to sign on its own machine
    /// (`smartpark ca sign`); the root's key never comes to the hub.
    CaRequest {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
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

/// The operator's root CA, on a machine other than any hub's.
#[derive(clap::Subcommand)]
pub enum CaAction {
    /// Make the operator's root CA: a key (owner-only) and a self-signed certificate valid
    /// 20 years, for certifying the hubs' issuing CAs. Keep the key off every hub's host.
    Init {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// The operator's name, in the certificate.
        #[arg(long)]
        operator: String,
    },
    /// Certify a hub's issuing CA from the request `smartpark hub ca-request` wrote, and
    /// write that hub's CA file (the issuing CA's certificate, then the root's).
    Sign {
        #[arg(long)]
        root_cert: PathBuf,
        #[arg(long)]
        root_key: PathBuf,
        #[arg(long)]
        request: PathBuf,
        /// The hub it is for, in the certificate.
        #[arg(long, default_value = "hub")]
        name: String,
        #[arg(long, default_value_t = 5 * 365)]
        days: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run_ca(action: CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Init {
            cert,
            key,
            operator,
        } => {
            for path in [&cert, &key] {
                anyhow::ensure!(
                    !path.exists(),
                    "{} exists; not replacing it",
                    path.display()
                );
            }
            let root = OperatorCa::create_root(&operator)?;
            root.save(&cert, &key)?;
            println!(
                "{}: operator root CA {} (key in {}); hubs and edges trust this certificate",
                cert.display(),
                root.fingerprint(),
                key.display()
            );
            Ok(())
        }
        CaAction::Sign {
            root_cert,
            root_key,
            request,
            name,
            days,
            out,
        } => {
            let root = OperatorCa::load(&root_cert, &root_key)?;
            let text = std::fs::read_to_string(&request)
                .with_context(|| format!("cannot read {}", request.display()))?;
            let csr = transport::CertificateRequest::from_pem(&text)
                .with_context(|| format!("{}", request.display()))?;
            anyhow::ensure!(
                (1..=20 * 365).contains(&days),
                "--days must be between 1 and 7300"
            );
            let chain =
                root.certify_issuing_ca(&csr, &name, transport::Validity::days_from_now(days))?;
            std::fs::write(&out, chain)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}: issuing CA of {name}, valid {days} days, certified by root {}; put it at the hub's `ca.cert`",
                out.display(),
                root.fingerprint()
            );
            Ok(())
        }
    }
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
            let created = cloud_hub::create_token(&settings.database, &ca, &park, &building, ttl)?;
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
            let tokens = cloud_hub::list_tokens(&settings.database)?;
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
            let t = cloud_hub::cancel_token(&settings.database, &id)?;
            println!("cancelled {} ({}/{})", t.id, t.park, t.building);
            Ok(())
        }
        (Some(HubAction::CaRequest { config, out }), _) => {
            let settings = HubSettings::load(&config)?;
            for path in [&settings.ca_key, &settings.ca_cert] {
                anyhow::ensure!(
                    !path.exists(),
                    "{} exists: this hub has a CA already (move it away first to replace it)",
                    path.display()
                );
            }
            let (key, request) = transport::issuing_ca_request(&settings.operator)?;
            transport::CertifiedKeyPem {
                cert_pem: request,
                key_pem: key,
            }
            .save(&out, &settings.ca_key)?;
            println!(
                "{}: certificate request of this hub's issuing CA; its key is in {}.\nOn the machine that keeps the operator's root key, run\n  smartpark ca sign --root-cert ROOT_CERT --root-key ROOT_KEY --request {} --out hub-ca.pem\nthen put hub-ca.pem here as {}.",
                out.display(),
                settings.ca_key.display(),
                out.display(),
                settings.ca_cert.display()
            );
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
                cloud_hub::revoke(&settings.database, serial.as_deref(), building, &reason)?;
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
