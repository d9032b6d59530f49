//! `smartpark edge user ...`, `smartpark hub user ...`, `smartpark hub rotate-key` and
//! `smartpark audit verify`: account management and audit checks on the host, on the
//! store's file, beside a running process or not (a running one picks changes up within
//! seconds). Every change is audited as made on the host.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use anyhow::Context as _;
use park_model::identity::{Grant, Role, Scope};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EdgeArgs {
    /// Run the edge node with this config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<EdgeAction>,
}

#[derive(clap::Subcommand)]
pub enum EdgeAction {
    /// The building's local accounts (break-glass administrators for a building that
    /// was never connected, or that has lost its hub).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(clap::Subcommand)]
pub enum UserAction {
    /// Add an account. Its password is read from standard input with --password-stdin,
    /// or made up and printed once.
    Add {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        /// A role at a scope, ROLE@SCOPE (repeatable), such as
        /// facility_engineer@building:demo-park/b1.
        #[arg(long = "grant", value_name = "ROLE@SCOPE")]
        grants: Vec<String>,
        /// On an edge: a role at its own building (repeatable), such as operator_admin.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// The department (hub only).
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Disable an account: its sessions and tokens stop working at once.
    Disable {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// Replace an account's grants (its sessions end).
    Grant {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long = "grant", value_name = "ROLE@SCOPE", required = true)]
        grants: Vec<String>,
    },
    /// Set an account's password (read from standard input with --password-stdin, or made
    /// up and printed once); its sessions end and any lockout is lifted.
    Passwd {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make an API token for an account (a metrics scraper's, an integration's), with some
    /// of the account's permissions; printed once, on standard output.
    Token {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: String,
        /// A permission such as telemetry.read (repeatable).
        #[arg(long = "permission", value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Remove an account's second factor (a lost phone): it sets one up again at its next
    /// login if its roles need one.
    ResetSecondFactor {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: AuditAction,
}

#[derive(clap::Subcommand)]
pub enum AuditAction {
    /// Check the audit log's hash chain (an edge's data dir, or a hub's, where every
    /// building's uploaded chain is checked too) and name the first record altered,
    /// deleted or moved. Exits with 1 when a chain is broken.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Where an account change is made: the store file, whose accounts it keeps, the scope
/// `--role` grants at, and whether audit records travel as events.
struct Target {
    db: park_db::Target,
    own: Source,
    scope: Scope,
    mirror: Mirror,
    cost: park_model::identity::password::Cost,
}

fn edge_target(config: &Path) -> anyhow::Result<Target> {
    let s = edge_node::EdgeSettings::load(config)?;
    Ok(Target {
        db: park_db::Target::Sqlite(s.data_dir.join("edge.sqlite")),
        own: Source::Local,
        scope: Scope::building(&s.park, &s.building),
        mirror: Mirror::Events,
        cost: s.auth.cost,
    })
}

fn hub_target(config: &Path) -> anyhow::Result<Target> {
    let s = cloud_hub::HubSettings::load(config)?;
    Ok(Target {
        db: s.database.clone(),
        own: Source::Hub,
        scope: Scope::Operator,
        mirror: Mirror::None,
        cost: s.auth.cost,
    })
}

fn open(t: &Target) -> anyhow::Result<park_db::Handle> {
    match (t.own, &t.db) {
        (Source::Local, park_db::Target::Sqlite(path)) => Ok(park_db::Handle::Sqlite(
            edge_node::store::open_for_admin(path)?,
        )),
        (Source::Local, other) => {
            anyhow::bail!("an edge keeps its accounts in SQLite, not {other}")
        }
        (Source::Hub, db) => cloud_hub::store::open_db(db),
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// A password made up for someone: 120 random bits in base32, grouped for reading aloud.
fn made_up_password() -> anyhow::Result<String> {
    let key = accounts::auth::new_key()?;
    let text = data_encoding::BASE32_NOPAD
        .encode(&key[..15])
        .to_lowercase();
    Ok(format!(
        "{}-{}-{}-{}",
        &text[0..6],
        &text[6..12],
        &text[12..18],
        &text[18..24]
    ))
}

fn password(stdin: bool) -> anyhow::Result<(String, bool)> {
    if stdin {
        Ok((read_password()?, false))
    } else {
        Ok((made_up_password()?, true))
    }
}

fn id_of(c: &park_db::Connection, username: &str) -> anyhow::Result<String> {
    Ok(manage::find(c, username)?
        .with_context(|| format!("no account {username:?}"))?
        .0)
}

/// In an immediate transaction: an account change with its audit record.
fn change<T>(
    t: &Target,
    f: impl FnOnce(&park_db::Connection<'_>, &accounts::Actor) -> anyhow::Result<T>,
    command: &str,
) -> anyhow::Result<T> {
    let handle = open(t)?;
    let c = handle.conn();
    let tx = c.transaction()?;
    let out = f(&tx, &manage::host_actor(command))?;
    tx.commit()?;
    Ok(out)
}

fn users(t: Target, action: UserAction, command: &str) -> anyhow::Result<()> {
    match action {
        UserAction::Add {
            username,
            display_name,
            grants,
            roles,
            department,
            password_stdin,
            ..
        } => {
            let mut list: Vec<Grant> =
                grants.iter().map(|g| g.parse()).collect::<Result<_, _>>()?;
            for r in &roles {
                let role: Role = r.parse()?;
                list.push(Grant::new(role, t.scope.clone())?);
            }
            anyhow::ensure!(
                !list.is_empty(),
                "give the account at least one --grant ROLE@SCOPE (or --role ROLE on an edge)"
            );
            if t.own == Source::Local {
                for g in &list {
                    anyhow::ensure!(
                        g.scope.covers(&t.scope),
                        "{g} does not reach this building ({}): a local account works here only",
                        t.scope
                    );
                }
            }
            let (pw, shown) = password(password_stdin)?;
            let verifier = manage::verifier_for(&username, &pw, t.cost)?;
            let display = display_name.unwrap_or_else(|| username.clone());
            let id = change(
                &t,
                |tx, actor| {
                    manage::create(
                        tx,
                        actor,
                        t.mirror,
                        t.own,
                        manage::NewAccount {
                            username: &username,
                            display_name: &display,
                            verifier,
                            grants: &list,
                            department: department.as_deref(),
                        },
                    )
                },
                command,
            )?;
            println!("created {username} ({id})");
            if shown {
                println!("password: {pw}");
                eprintln!(
                    "The password is shown this once; it is stored only as an Argon2id verifier."
                );
            }
            if park_model::identity::second_factor_required(&list) {
                eprintln!("Its roles need a second factor: it sets one up at its first login.");
            }
            Ok(())
        }
        UserAction::List { .. } => {
            let handle = open(&t)?;
            for u in manage::list(&handle.conn())? {
                let grants: Vec<String> = u["grants"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}{}",
                    u["username"].as_str().unwrap_or(""),
                    u["source"].as_str().unwrap_or(""),
                    grants.join(" "),
                    if u["disabled"] == true {
                        "disabled"
                    } else {
                        "enabled"
                    },
                    if u["secondFactor"] == true {
                        ", totp"
                    } else {
                        ""
                    },
                );
            }
            Ok(())
        }
        UserAction::Disable { ref username, .. } | UserAction::Enable { ref username, .. } => {
            let disabled = matches!(action, UserAction::Disable { .. });
            change(
                &t,
                |tx, actor| {
                    let id = id_of(tx, username)?;
                    manage::set_disabled(tx, actor, t.mirror, t.own, &id, disabled)
                },
                command,
            )?;
            println!(
                "{} {username}",
                if disabled { "disabled" } else { "enabled" }
            );
            Ok(())
        }
        UserAction::Grant {
            username, grants, ..
        } => {
            let list: Vec<Grant> = grants.iter().map(|g| g.parse()).collect::<Result<_, _>>()?;
            change(
                &t,
                |tx, actor| {
                    let id = id_of(tx, &username)?;
                    manage::set_grants(tx, actor, t.mirror, t.own, &id, &list)
                },
                command,
            )?;
            println!("{username}: {}", grants.join(" "));
            Ok(())
        }
        UserAction::Passwd {
            username,
            password_stdin,
            ..
        } => {
            let (pw, shown) = password(password_stdin)?;
            let verifier = manage::verifier_for(&username, &pw, t.cost)?;
            change(
                &t,
                |tx, actor| {
                    let id = id_of(tx, &username)?;
                    manage::set_verifier(tx, actor, t.mirror, t.own, &id, &verifier)
                },
                command,
            )?;
            println!("password set for {username}");
            if shown {
                println!("password: {pw}");
            }
            Ok(())
        }
        UserAction::Token {
            username,
            name,
            permissions,
            days,
            ..
        } => {
            let set = park_model::identity::PermissionSet::parse(&permissions)?;
            let token = change(
                &t,
                |tx, actor| manage::create_token(tx, actor, t.mirror, &username, &name, set, days),
                command,
            )?;
            println!("{token}");
            eprintln!(
                "The token is shown this once; only its hash is stored. It ends in {days} days."
            );
            Ok(())
        }
        UserAction::ResetSecondFactor { username, .. } => {
            change(
                &t,
                |tx, actor| {
                    let id = id_of(tx, &username)?;
                    manage::reset_second_factor(tx, actor, t.mirror, t.own, &id)
                },
                command,
            )?;
            println!("second factor removed from {username}");
            Ok(())
        }
    }
}

fn config_of(action: &UserAction) -> &Path {
    match action {
        UserAction::Add { config, .. }
        | UserAction::List { config }
        | UserAction::Disable { config, .. }
        | UserAction::Enable { config, .. }
        | UserAction::Grant { config, .. }
        | UserAction::Passwd { config, .. }
        | UserAction::Token { config, .. }
        | UserAction::ResetSecondFactor { config, .. } => config,
    }
}

pub fn edge_users(action: UserAction) -> anyhow::Result<()> {
    let t = edge_target(config_of(&action))?;
    users(t, action, "edge user")
}

pub fn hub_users(action: UserAction) -> anyhow::Result<()> {
    let t = hub_target(config_of(&action))?;
    users(t, action, "hub user")
}

/// Re-seals the hub's personal data and second-factor secrets under a new key. The hub
/// must be stopped: a running hub holds the old key.
pub fn rotate_key(config: &Path) -> anyhow::Result<()> {
    let s = cloud_hub::HubSettings::load(config)?;
    let _lock =
        cloud_hub::HubLock::take(&s.data_dir).context("stop the hub before rotating its key")?;
    let (n, id) = cloud_hub::people::rotate_key(&s.database, &s.key_file)?;
    println!(
        "re-sealed {n} values under key {id}; {} holds the new key",
        s.key_file.display()
    );
    Ok(())
}

/// Verifies the audit chains under a data dir; `Ok(false)` when one is broken.
pub fn verify(data_dir: &Path) -> anyhow::Result<bool> {
    let edge = data_dir.join("edge.sqlite");
    let hub = data_dir.join("hub.sqlite");
    let mut intact = true;
    let mut report = |name: &str, result: Result<u64, park_model::audit::ChainBreak>| match result {
        Ok(n) => println!("{name}: intact ({n} records)"),
        Err(e) => {
            intact = false;
            println!("{name}: BROKEN: {e}");
        }
    };
    if edge.exists() {
        let r = accounts::audit::verify_store(&edge)?;
        report("edge", r.map(|v| v.records));
    } else if hub.exists() {
        for c in cloud_hub::audit::verify_all(&hub)? {
            report(&c.name, c.result);
        }
    } else {
        anyhow::bail!(
            "{} holds neither an edge store (edge.sqlite) nor a hub database (hub.sqlite)",
            data_dir.display()
        );
    }
    Ok(intact)
}
