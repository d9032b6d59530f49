//! Accounts, logins, sessions and API tokens, for the hub and for each edge.
//!
//! On the hub, accounts are made and managed there (source `hub`). On an edge, two kinds
//! live side by side: copies of the hub's accounts, pushed by the hub (only those with a
//! role in the building, as Argon2id verifiers, never passwords: `AccountsPush` in
//! `park_model::identity`) and replaced whole on every push, so a user disabled or
//! re-scoped on the hub is refused there after the next sync and their sessions end; and
//! local accounts (source `local`) made on the host with `smartpark edge user add`, for a
//! building that was never connected (break-glass). Logins check the verifier where they
//! happen, so people log in to an edge with the hub unreachable.
//!
//! Everything a request needs is in memory ([`Auth::check`] does one SHA-256 and two hash
//! lookups); SQLite holds the durable copy. Sessions are `HttpOnly`, `SameSite=Strict`
//! cookies holding a random token of which only the SHA-256 is stored; the CSRF token is an
//! HMAC of the session token under this node's secret key, so it is never stored either.
//! API tokens are shown once and stored as SHA-256; each carries a subset of its owner's
//! permissions and an expiry. Secrets that must be read back (TOTP secrets) are sealed
//! with AES-256-GCM under the process's key file (beside the store, never in it).
//!
//! Every login (failed ones too), logout, account and token change is audited in the same
//! transaction as the change.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use park_db::{Connection, OptionalExtension, params};
use park_model::identity::lockout::{Failures, LockoutPolicy};
use park_model::identity::password::{self, Cost};
use park_model::identity::secret::{self, SealKey};
use park_model::identity::web::SessionPolicy;
use park_model::identity::{
    AccountsPush, Grant, Permission, PermissionSet, Principal, Scope, SecondFactor, totp,
};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value as Json, json};

use crate::audit::{Actor, Audit, Mirror};
use crate::metrics::AuthMetrics;
use crate::{WriteOp, Writer, now_micros};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('hub', 'local')),
    verifier TEXT NOT NULL,
    totp TEXT,
    totp_pending TEXT,
    totp_last_step INTEGER,
    recovery TEXT NOT NULL DEFAULT '[]',
    grants TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    failed_at INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    department TEXT,
    created INTEGER,
    created_by TEXT,
    updated INTEGER NOT NULL,
    updated_by TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    client TEXT NOT NULL,
    pending INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL (a username is unique without regard to case).
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('hub', 'local')),
    verifier TEXT NOT NULL,
    totp TEXT,
    totp_pending TEXT,
    totp_last_step BIGINT,
    recovery TEXT NOT NULL DEFAULT '[]',
    grants TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    epoch BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    failed_at BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    department TEXT,
    created BIGINT,
    created_by TEXT,
    updated BIGINT NOT NULL,
    updated_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_username ON accounts (lower(username));
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    client TEXT NOT NULL,
    pending BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
";

/// How an API authenticates; from the edge's `[api]` or the hub's `[http]` config table.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub session: SessionPolicy,
    /// DNS names the API may be reached by (IP addresses and `localhost` always may).
    pub allowed_hosts: Vec<String>,
    /// Origins, besides the API's own, whose pages may write to it.
    pub allowed_origins: Vec<String>,
    /// Set the cookie's `Secure` flag (the API is served over TLS).
    pub secure_cookies: bool,
    /// The Argon2id cost of verifiers made here (local accounts).
    pub cost: Cost,
}

impl AuthSettings {
    /// The settings of an API's `[api]` or `[http]` table, checked: on a bad value, the key
    /// (without its table) and why.
    pub fn checked(
        session_idle_minutes: u32,
        session_absolute_hours: u32,
        allowed_hosts: &[String],
        allowed_origins: &[String],
        secure_cookies: bool,
    ) -> Result<AuthSettings, (&'static str, String)> {
        if session_idle_minutes == 0 || session_idle_minutes > 24 * 60 {
            return Err(("session_idle_minutes", "must be between 1 and 1440".into()));
        }
        if session_absolute_hours == 0 || session_absolute_hours > 24 * 30 {
            return Err(("session_absolute_hours", "must be between 1 and 720".into()));
        }
        if let Some(bad) = allowed_hosts
            .iter()
            .find(|n| n.is_empty() || n.contains(['/', ':', ' ']))
        {
            return Err((
                "allowed_hosts",
                format!("{bad:?} is not a host name (no scheme, port or path)"),
            ));
        }
        if let Some(bad) = allowed_origins
            .iter()
            .find(|o| !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/'))
        {
            return Err((
                "allowed_origins",
                format!("{bad:?} is not an origin such as https://console.example:8443"),
            ));
        }
        Ok(AuthSettings {
            session: SessionPolicy {
                idle: i64::from(session_idle_minutes) * 60_000_000,
                absolute: i64::from(session_absolute_hours) * 3_600_000_000,
            },
            allowed_hosts: allowed_hosts.to_vec(),
            allowed_origins: allowed_origins.to_vec(),
            secure_cookies,
            cost: Cost::DEFAULT,
        })
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            session: SessionPolicy::DEFAULT,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            secure_cookies: false,
            cost: Cost::DEFAULT,
        }
    }
}

/// Why a login or an account operation was refused; the API maps these to answers.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong username or password, or a wrong second factor: deliberately the same answer.
    #[error("the username, password or code is wrong")]
    BadCredentials,
    #[error("this account needs its one-time code (or a recovery code)")]
    SecondFactorRequired,
    #[error("too many failed logins; try again in {0} s")]
    Locked(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Where an account is managed: on the hub, or on one edge's host only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hub,
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hub => "hub",
            Source::Local => "local",
        }
    }
}

#[derive(Debug)]
struct Account {
    id: String,
    username: String,
    /// The username, shared with every request's [`Caller`].
    name: Arc<str>,
    display_name: String,
    source: Source,
    verifier: String,
    /// Sealed TOTP secret.
    totp: Option<String>,
    totp_pending: Option<String>,
    totp_last_step: Option<i64>,
    recovery: Vec<String>,
    grants: Vec<Grant>,
    disabled: bool,
    epoch: i64,
    failures: Failures,
    principal: Arc<Principal>,
}

impl Account {
    fn needs_enrollment(&self) -> bool {
        self.totp.is_none() && park_model::identity::second_factor_required(&self.grants)
    }
}

#[derive(Debug)]
struct Session {
    user_id: String,
    created: i64,
    last_seen: AtomicI64,
    /// Logged in without the second factor the account's roles need: only enrolling one
    /// is allowed.
    pending: bool,
}

#[derive(Debug)]
struct Token {
    id: String,
    user_id: String,
    name: String,
    permissions: PermissionSet,
    created: i64,
    expires: i64,
    principal: Arc<Principal>,
    /// `username (token NAME)`, shared with every request's [`Caller`].
    actor_name: Arc<str>,
}

impl Token {
    /// `account`'s token `name`, acting with `permissions` of what the account holds.
    fn of(
        account: &Account,
        id: String,
        name: String,
        permissions: PermissionSet,
        created: i64,
        expires: i64,
    ) -> Token {
        Token {
            principal: Arc::new(principal_of(
                &account.id,
                &account.username,
                &account.grants,
                Some(permissions),
            )),
            actor_name: Arc::from(format!("{} (token {name})", account.username)),
            id,
            user_id: account.id.clone(),
            name,
            permissions,
            created,
            expires,
        }
    }
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    /// Lowercased username → id.
    by_name: HashMap<String, String>,
    sessions: HashMap<Arc<str>, Session>,
    tokens: HashMap<Arc<str>, Token>,
    hub_generation: u64,
    generation: i64,
}

/// A request's verified caller. Made for every request, so it shares what it can with
/// the account it comes from and allocates nothing.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The username, or `username (token NAME)` for a token.
    pub name: Arc<str>,
    pub client: Option<IpAddr>,
    /// The session's hash when the request came with a session cookie.
    pub session: Option<Arc<str>>,
}

impl Caller {
    /// Who acts, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.principal.user_id.clone(),
            name: self.name.to_string(),
            client: self.client.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }
}

/// The accounts, sessions and tokens of this building's API. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    scope: Scope,
    issuer: String,
    settings: AuthSettings,
    /// Accounts made and managed here (the hub's, or an edge's local ones).
    own: Source,
    /// Whether audit records are also written as events (on an edge).
    mirror: Mirror,
    db: Arc<park_db::Pool>,
    writer: Writer,
    seal: Keyring,
    csrf: hmac::Key,
    rng: SystemRandom,
    state: RwLock<State>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
    dummy_verifier: String,
    metrics: Arc<AuthMetrics>,
    /// The generation of the accounts managed here, announced after every change.
    generation: tokio::sync::watch::Sender<i64>,
    /// Other processes (hubs on one PostgreSQL) write the same store: a session or token
    /// not known here may have been made there (see [`Auth::follow_store`]).
    shared: AtomicBool,
    /// When the accounts were last read again for a credential not known here, and the
    /// connection that reads them then.
    miss: Mutex<(Option<std::time::Instant>, Option<park_db::Handle>)>,
}

/// The most client addresses whose failures are remembered; beyond it the oldest go.
const MAX_ADDRESSES: usize = 10_000;

/// Reads (or creates, 0600) a key file: 32 random bytes as hex.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if path.exists() {
        return read_key(path);
    }
    let k = new_key()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_key(path, &k)?;
    tracing::info!(file = %path.display(), "Created a secret key file; keep it out of backups of the database.");
    Ok(k)
}

/// 32 bytes from the operating system's random source.
pub fn new_key() -> anyhow::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(k)
}

/// A random nonce for sealing.
pub fn nonce() -> anyhow::Result<[u8; secret::NONCE_LEN]> {
    let mut n = [0u8; secret::NONCE_LEN];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(n)
}

/// Writes a key file (0600).
pub fn write_key(path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    write_private(path, &format!("{}\n", data_encoding::HEXLOWER.encode(key)))
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The key file beside a store in `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets.key")
}

fn subkey(key: &[u8; 32], purpose: &str) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, purpose.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn principal_of(
    id: &str,
    username: &str,
    grants: &[Grant],
    restrict: Option<PermissionSet>,
) -> Principal {
    Principal {
        user_id: id.to_string(),
        username: username.to_string(),
        grants: grants.to_vec(),
        restrict,
        second_factor: SecondFactor::Satisfied,
    }
}

/// Reads every account, session and token.
fn load_state(c: &Connection, now: i64, policy: &SessionPolicy) -> park_db::Result<State> {
    let mut st = State::default();
    {
        let mut stmt = c.prepare(
            "SELECT id, username, display_name, source, verifier, totp, totp_pending, totp_last_step,
                    recovery, grants, disabled, epoch, failures, failed_at, locked_until FROM accounts",
        )?;
        let rows = stmt.query_map([], |r| {
            let grants: Vec<Grant> =
                serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default();
            let id: String = r.get(0)?;
            let username: String = r.get(1)?;
            Ok(Account {
                principal: Arc::new(principal_of(&id, &username, &grants, None)),
                name: Arc::from(username.as_str()),
                id,
                username,
                display_name: r.get(2)?,
                source: if r.get::<_, String>(3)? == "hub" {
                    Source::Hub
                } else {
                    Source::Local
                },
                verifier: r.get(4)?,
                totp: r.get(5)?,
                totp_pending: r.get(6)?,
                totp_last_step: r.get(7)?,
                recovery: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                grants,
                disabled: r.get::<_, i64>(10)? != 0,
                epoch: r.get(11)?,
                failures: Failures {
                    count: r.get::<_, i64>(12)? as u32,
                    last: r.get(13)?,
                    locked_until: r.get(14)?,
                },
            })
        })?;
        for a in rows {
            let a = a?;
            st.by_name.insert(a.username.to_lowercase(), a.id.clone());
            st.accounts.insert(a.id.clone(), a);
        }
    }
    {
        let mut stmt =
            c.prepare("SELECT hash, user_id, created, last_seen, pending FROM sessions")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Session {
                    user_id: r.get(1)?,
                    created: r.get(2)?,
                    last_seen: AtomicI64::new(r.get(3)?),
                    pending: r.get::<_, i64>(4)? != 0,
                },
            ))
        })?;
        for s in rows {
            let (hash, s) = s?;
            if policy.alive(s.created, s.last_seen.load(Relaxed), now) {
                st.sessions.insert(Arc::from(hash), s);
            }
        }
    }
    {
        let mut stmt = c.prepare(
            "SELECT id, hash, user_id, name, permissions, created, expires FROM api_tokens",
        )?;
        let rows = stmt.query_map([], |r| {
            let names: Vec<String> =
                serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default();
            Ok((
                r.get::<_, String>(1)?,
                r.get::<_, String>(0)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                PermissionSet::parse(&names).unwrap_or_default(),
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        for t in rows {
            let (hash, id, user_id, name, permissions, created, expires) = t?;
            let Some(a) = st.accounts.get(&user_id) else {
                continue;
            };
            let token = Token::of(a, id, name, permissions, created, expires);
            st.tokens.insert(Arc::from(hash), token);
        }
    }
    let meta = |key: &str| -> park_db::Result<i64> {
        Ok(
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?
                .unwrap_or(0),
        )
    };
    st.hub_generation = meta("auth_hub_generation")? as u64;
    st.generation = meta("accounts_generation")?;
    Ok(st)
}

/// What [`Auth::open`] needs from the binary.
pub struct AuthConfig {
    /// The scope the API serves: a building on an edge, the operator on the hub.
    pub scope: Scope,
    pub settings: AuthSettings,
    /// Accounts managed here: `Hub` on the hub, `Local` on an edge.
    pub own: Source,
    pub mirror: Mirror,
    /// The store's database file (read on connections of this crate's own).
    pub db: park_db::Target,
    pub writer: Writer,
    /// The process's key file, outside the database (see [`Keyring`]).
    pub key_file: PathBuf,
    pub metrics: Arc<AuthMetrics>,
}

/// The AES-256-GCM keys of a process: the current key, which seals, and any other key a
/// value may still be sealed under while a rotation is under way. The key file `F` holds
/// the current key; a rotation writes `F.new`, re-seals every value in one transaction, and
/// only then moves `F` to `F.old` and `F.new` to `F`, so every value opens after a crash at
/// any point.
pub struct Keyring {
    raw: [u8; 32],
    current: SealKey,
    others: Vec<SealKey>,
}

fn seal_key(key: &[u8; 32]) -> SealKey {
    SealKey::new(&subkey(key, "smartpark-seal-v1"))
}

impl Keyring {
    /// Loads the key file (creating it, 0600, when missing) and any rotation leftovers.
    pub fn load(path: &Path) -> anyhow::Result<Keyring> {
        let raw = load_or_create_key(path)?;
        let mut others = Vec::new();
        for suffix in ["new", "old"] {
            let p = path.with_extension(suffix);
            if p.exists() {
                others.push(seal_key(&read_key(&p)?));
            }
        }
        Ok(Keyring {
            current: seal_key(&raw),
            raw,
            others,
        })
    }

    /// A keyring of one key (tests, and the rotation's new key).
    pub fn from_raw(raw: [u8; 32]) -> Keyring {
        Keyring {
            current: seal_key(&raw),
            raw,
            others: Vec::new(),
        }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    pub fn seal(&self, nonce: [u8; secret::NONCE_LEN], aad: &str, plain: &[u8]) -> String {
        self.current.seal(nonce, aad, plain)
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, secret::SecretError> {
        let id = secret::sealed_key_id(sealed).ok_or(secret::SecretError::NotSealed)?;
        std::iter::once(&self.current)
            .chain(&self.others)
            .find(|k| k.id() == id)
            .ok_or_else(|| secret::SecretError::UnknownKey(id.to_string()))?
            .open(aad, sealed)
    }

    fn csrf_key(&self) -> [u8; 32] {
        subkey(&self.raw, "smartpark-csrf-v1")
    }
}

/// Reads a key file: 32 bytes as 64 hex digits.
pub fn read_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{} does not hold a key (64 hex digits)", path.display()))?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&bytes);
    Ok(k)
}

/// Runs `f` on a read connection of `db`'s pool, on a blocking thread.
pub async fn read_db<T: Send + 'static>(
    db: &Arc<park_db::Pool>,
    f: impl FnOnce(&Connection) -> park_db::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    db.run(move |c| f(&c).context("reading the accounts failed"))
        .await
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOk {
    /// The cookie's value: shown to the client once, stored only as its hash.
    pub token: String,
    pub csrf: String,
    pub me: Option<Me>,
    pub expires_at: i64,
}

/// An account as the users list shows it (never a secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub username: String,
    pub display_name: String,
    /// `local` (made on this edge) or `hub`.
    pub source: String,
    /// `role@scope`.
    pub grants: Vec<String>,
    pub disabled: bool,
    /// Whether a second factor is set up.
    pub second_factor: bool,
    /// Sessions open now.
    pub sessions: usize,
    /// Until when wrong passwords keep it locked (microseconds since 1970).
    pub locked_until: Option<i64>,
}

/// A second factor being set up: the secret for the authenticator app, and its
/// `otpauth://` URI (for a QR code). Shown once; confirmed with a code from it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TotpSetup {
    pub secret: String,
    pub uri: String,
}

/// Who is logged in, as `GET /api/v1/auth/me` answers.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: String,
    pub username: String,
    pub display_name: String,
    /// `local` (made on this edge) or `hub`.
    pub source: String,
    /// `role@scope`, such as `facility_engineer@building:park-1/b1`.
    pub grants: Vec<String>,
    /// What the caller may do here (none until a required second factor is set up).
    pub permissions: Vec<String>,
    /// `none`, `enabled`, or `enrollment_required` (the role needs one; only the account
    /// routes work until it is set up).
    pub second_factor: String,
    /// Where this API acts (`building:park-1/b1`, `operator`).
    pub scope: String,
    /// The session's CSRF token, for writes (a session caller only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// `token` when the caller came with an API token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl Auth {
    /// Loads accounts, sessions and tokens from the store and the node's key from
    /// `data_dir`.
    pub async fn open(config: AuthConfig) -> anyhow::Result<Auth> {
        let keys = Keyring::load(&config.key_file)?;
        let policy = config.settings.session;
        let db = park_db::Pool::new(config.db.clone(), park_db::pool::Access::ReadOnly, 4);
        let state = read_db(&db, move |c| load_state(c, now_micros(), &policy))
            .await
            .context("cannot read the accounts")?;
        let cost = config.settings.cost;
        let dummy_verifier = tokio::task::spawn_blocking(move || password::dummy_verifier(cost))
            .await
            .context("cannot prepare the login check")?;
        let issuer = match &config.scope {
            Scope::Building { park, building } => format!("smartpark {park}/{building}"),
            Scope::Operator => "smartpark".to_string(),
            other => format!("smartpark {other}"),
        };
        let (generation, _) = tokio::sync::watch::channel(state.generation);
        Ok(Auth {
            inner: Arc::new(Inner {
                scope: config.scope,
                issuer,
                csrf: hmac::Key::new(hmac::HMAC_SHA256, &keys.csrf_key()),
                seal: keys,
                rng: SystemRandom::new(),
                settings: config.settings,
                own: config.own,
                mirror: config.mirror,
                db,
                writer: config.writer,
                state: RwLock::new(state),
                addresses: Mutex::new(HashMap::new()),
                dummy_verifier,
                metrics: config.metrics,
                generation,
                shared: AtomicBool::new(false),
                miss: Mutex::new((None, None)),
            }),
        })
    }

    /// An audit record of an act here, mirrored to events where this store does that.
    pub fn audit(&self, actor: &Actor, action: &str, target: &str, detail: Json) -> Audit {
        let mut a = Audit::new(actor, action, target, detail);
        a.mirror = self.inner.mirror;
        a
    }

    async fn write_op(&self, op: WriteOp) -> anyhow::Result<()> {
        (self.inner.writer)(op).await
    }

    /// Records an act that writes nothing else.
    pub async fn record(&self, audit: Audit) -> anyhow::Result<()> {
        self.write_op(audit.op()).await
    }

    async fn read_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> park_db::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        read_db(&self.inner.db, f).await
    }

    /// The generation of the accounts managed here; changes after every account change.
    pub fn subscribe_generation(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.generation.subscribe()
    }

    pub fn metrics(&self) -> &Arc<AuthMetrics> {
        &self.inner.metrics
    }

    /// Seals a value under this process's key (personal data on the hub).
    pub fn seal_value(&self, aad: &str, plain: &[u8]) -> String {
        self.inner
            .seal
            .seal(self.random::<{ secret::NONCE_LEN }>(), aad, plain)
    }

    /// Opens a value sealed by [`Self::seal_value`] (under this key or one being rotated).
    pub fn open_sealed(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, secret::SecretError> {
        self.inner.seal.open(aad, sealed)
    }

    /// The accounts managed here that hold a role reaching `scope`, as an edge of that
    /// scope gets them: enabled accounts only, with only the grants that reach it, and
    /// their TOTP secrets opened (the edge seals them under its own key).
    pub fn accounts_for(&self, scope: &Scope) -> AccountsPush {
        let st = self.read();
        let mut accounts: Vec<park_model::identity::EdgeAccount> = st
            .accounts
            .values()
            .filter(|a| a.source == self.inner.own && !a.disabled)
            .filter_map(|a| {
                let grants: Vec<Grant> = a
                    .grants
                    .iter()
                    .filter(|g| g.scope.covers(scope))
                    .cloned()
                    .collect();
                if grants.is_empty() {
                    return None;
                }
                let totp_secret = a.totp.as_ref().and_then(|sealed| {
                    match self.inner.seal.open(&format!("totp:{}", a.id), sealed) {
                        Ok(bytes) => Some(totp::secret_text(&bytes)),
                        Err(e) => {
                            tracing::error!(user = %a.username, error = %e, "A TOTP secret does not open; the account goes to edges without it and cannot log in there.");
                            None
                        }
                    }
                });
                // An account whose second factor cannot be sent must not become one
                // without it at the edge.
                if a.totp.is_some() && totp_secret.is_none() {
                    return None;
                }
                Some(park_model::identity::EdgeAccount {
                    id: a.id.clone(),
                    username: a.username.clone(),
                    display_name: a.display_name.clone(),
                    verifier: a.verifier.clone(),
                    totp_secret,
                    recovery_hashes: a.recovery.clone(),
                    grants,
                    epoch: a.epoch,
                })
            })
            .collect();
        accounts.sort_by(|a, b| a.username.cmp(&b.username));
        AccountsPush {
            generation: st.generation.max(0) as u64,
            accounts,
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.inner.scope
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        // The OS random source does not fail on Linux once the system has booted; if it
        // ever did, a zero token would be a disaster, so stop the process instead.
        self.inner
            .rng
            .fill(&mut b)
            .expect("the system's random source failed");
        b
    }

    /// The CSRF token that goes with a session token.
    pub fn csrf_for(&self, session_token: &str) -> String {
        let tag = hmac::sign(&self.inner.csrf, session_token.as_bytes());
        data_encoding::BASE64URL_NOPAD.encode(&tag.as_ref()[..24])
    }

    /// The caller of a request with a session cookie `cookie` or a bearer token `bearer`
    /// (the bearer wins). `None` when neither is valid now. Updates the session's idle
    /// clock. On a store shared with other processes, a credential not known here makes
    /// the accounts be read again first (at most twice a second).
    pub fn check(
        &self,
        cookie: Option<&str>,
        bearer: Option<&str>,
        client: Option<IpAddr>,
        now: i64,
    ) -> Option<Caller> {
        if let Some(c) = self.check_known(cookie, bearer, client, now) {
            return Some(c);
        }
        if self.inner.shared.load(Relaxed)
            && (cookie.is_some() || bearer.is_some())
            && self.reload_for_miss(now)
        {
            return self.check_known(cookie, bearer, client, now);
        }
        None
    }

    /// Reads the accounts again on a connection of this process's own, unless that was
    /// done within the last half second. Answers whether it was done.
    fn reload_for_miss(&self, now: i64) -> bool {
        let mut miss = self.inner.miss.lock().unwrap_or_else(|e| e.into_inner());
        if miss
            .0
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return false;
        }
        miss.0 = Some(std::time::Instant::now());
        if miss.1.is_none() {
            miss.1 = park_db::Handle::open(self.inner.db.target(), park_db::pool::Access::ReadOnly)
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "Cannot read the shared accounts."))
                .ok();
        }
        let Some(handle) = &miss.1 else {
            return false;
        };
        let policy = self.inner.settings.session;
        match load_state(&handle.conn(), now, &policy) {
            Ok(fresh) => {
                drop(miss);
                self.install(fresh);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the shared accounts.");
                miss.1 = None;
                false
            }
        }
    }

    /// Follows what other processes sharing the store (hubs on one PostgreSQL) change:
    /// reads the accounts again every `every`, and checks credentials not known here
    /// against the store. A session ended on another hub ends here within `every`.
    pub fn follow_store(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.inner.shared.store(true, Relaxed);
        let auth = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if let Err(e) = auth.reload().await {
                    tracing::warn!(error = %format!("{e:#}"), "Cannot read the shared accounts.");
                }
            }
        })
    }

    fn check_known(
        &self,
        cookie: Option<&str>,
        bearer: Option<&str>,
        client: Option<IpAddr>,
        now: i64,
    ) -> Option<Caller> {
        let st = self.read();
        let mut buf = [0u8; 64];
        if let Some(t) = bearer {
            let tok = st.tokens.get(secret::token_hash_into(t, &mut buf))?;
            if tok.expires <= now {
                return None;
            }
            let account = st.accounts.get(&tok.user_id)?;
            if account.disabled {
                return None;
            }
            return Some(Caller {
                name: tok.actor_name.clone(),
                client,
                principal: tok.principal.clone(),
                session: None,
            });
        }
        let token = cookie?;
        let (hash, session) = st
            .sessions
            .get_key_value(secret::token_hash_into(token, &mut buf))?;
        let policy = &self.inner.settings.session;
        if !policy.alive(session.created, session.last_seen.load(Relaxed), now) {
            return None;
        }
        let account = st.accounts.get(&session.user_id)?;
        if account.disabled {
            return None;
        }
        session.last_seen.fetch_max(now, Relaxed);
        let principal = if session.pending {
            let mut p = (*account.principal).clone();
            p.second_factor = SecondFactor::EnrollmentRequired;
            Arc::new(p)
        } else {
            account.principal.clone()
        };
        Some(Caller {
            name: account.name.clone(),
            client,
            principal,
            session: Some(hash.clone()),
        })
    }

    fn address_locked(&self, ip: Option<IpAddr>, now: i64) -> Option<i64> {
        let ip = ip?;
        let map = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&ip).and_then(|f| f.locked(now))
    }

    fn address_failed(&self, ip: Option<IpAddr>, now: i64) {
        let Some(ip) = ip else { return };
        let mut map = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES
            && !map.contains_key(&ip)
            && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.entry(ip)
            .or_default()
            .fail(&LockoutPolicy::ADDRESS, now);
    }

    /// Logs a user in: the password, then the second factor if the account has one. Failed
    /// attempts count against the account and the client address, with a growing lockout.
    pub async fn login(
        &self,
        username: &str,
        password_text: &str,
        code: Option<&str>,
        recovery_code: Option<&str>,
        client: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginOk, AuthError> {
        let now = now_micros();
        let m = &self.inner.metrics;
        let actor = Actor {
            user_id: String::new(),
            name: username.chars().take(64).collect(),
            client: client.to_string(),
        };
        if let Some(until) = self.address_locked(ip, now) {
            m.logins_locked_total.fetch_add(1, Relaxed);
            self.audit_refusal(&actor, "login", "refused: this address is locked out")
                .await;
            return Err(AuthError::Locked((until - now + 999_999) / 1_000_000));
        }
        let found = {
            let st = self.read();
            st.by_name
                .get(&username.to_lowercase())
                .and_then(|id| st.accounts.get(id))
                .map(|a| {
                    (
                        a.id.clone(),
                        a.verifier.clone(),
                        a.disabled,
                        a.failures.locked(now),
                    )
                })
        };
        if let Some((_, _, _, Some(until))) = &found {
            m.logins_locked_total.fetch_add(1, Relaxed);
            self.audit_refusal(&actor, "login", "refused: the account is locked out")
                .await;
            return Err(AuthError::Locked((until - now + 999_999) / 1_000_000));
        }
        // An unknown or disabled user costs the same hashing as a known one.
        let verifier = match &found {
            Some((_, v, false, _)) => v.clone(),
            _ => self.inner.dummy_verifier.clone(),
        };
        let pw = password_text.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &verifier))
            .await
            .map_err(|e| AuthError::Store(e.into()))?;
        let Some((user_id, _, false, None)) = found else {
            return Err(self.failed(None, &actor, ip, now).await);
        };
        let actor = Actor {
            user_id: user_id.clone(),
            ..actor
        };
        match ok {
            Ok(true) => {}
            Ok(false) => return Err(self.failed(Some(&user_id), &actor, ip, now).await),
            Err(e) => {
                tracing::error!(user = %actor.name, error = %e, "An account's verifier is malformed.");
                return Err(self.failed(Some(&user_id), &actor, ip, now).await);
            }
        }
        // The second factor.
        let (totp_sealed, last_step, recovery, needs_enrollment) = {
            let st = self.read();
            let a = st.accounts.get(&user_id).ok_or(AuthError::BadCredentials)?;
            (
                a.totp.clone(),
                a.totp_last_step,
                a.recovery.clone(),
                a.needs_enrollment(),
            )
        };
        let mut used_step = None;
        let mut used_recovery = None;
        if let Some(sealed) = &totp_sealed {
            match (code, recovery_code) {
                (Some(code), _) => {
                    let secret = self
                        .inner
                        .seal
                        .open(&format!("totp:{user_id}"), sealed)
                        .map_err(|e| AuthError::Store(anyhow::anyhow!("a TOTP secret: {e}")))?;
                    match totp::check(&secret, code, now, last_step) {
                        Some(step) => used_step = Some(step),
                        None => return Err(self.failed(Some(&user_id), &actor, ip, now).await),
                    }
                }
                (None, Some(rc)) => {
                    let h = totp::recovery_hash(rc);
                    if recovery
                        .iter()
                        .any(|r| secret::constant_time_eq(r.as_bytes(), h.as_bytes()))
                    {
                        used_recovery = Some(h);
                    } else {
                        return Err(self.failed(Some(&user_id), &actor, ip, now).await);
                    }
                }
                (None, None) => return Err(AuthError::SecondFactorRequired),
            }
        }
        let token = secret::token("sps_", &self.random::<32>());
        let hash = secret::token_hash(&token);
        let pending = needs_enrollment;
        let audit = self.audit(
            &actor,
            "login",
            &actor.name,
            json!({"secondFactor": if used_step.is_some() { "totp" } else if used_recovery.is_some() { "recovery_code" } else if pending { "enrollment_required" } else { "none" }}),
        );
        let (uid, h2, client_s) = (user_id.clone(), hash.clone(), client.to_string());
        let rec = used_recovery.clone();
        self
            .write_op(Box::new(move |c| {
                c.execute(
                    "INSERT INTO sessions (hash, user_id, created, last_seen, client, pending) VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
                    params![h2, uid, now, client_s, pending as i64],
                )?;
                c.execute(
                    "UPDATE accounts SET failures = 0, locked_until = 0, totp_last_step = coalesce(?2, totp_last_step) WHERE id = ?1",
                    params![uid, used_step],
                )?;
                if let Some(r) = &rec {
                    remove_recovery(c, &uid, r)?;
                }
                audit.append(c)
            }))
            .await?;
        {
            let mut st = self.write();
            if let Some(a) = st.accounts.get_mut(&user_id) {
                a.failures = Failures::default();
                if used_step.is_some() {
                    a.totp_last_step = used_step;
                }
                if let Some(r) = &used_recovery {
                    a.recovery.retain(|x| x != r);
                }
            }
            st.sessions.insert(
                Arc::from(hash),
                Session {
                    user_id: user_id.clone(),
                    created: now,
                    last_seen: AtomicI64::new(now),
                    pending,
                },
            );
        }
        m.logins_total.fetch_add(1, Relaxed);
        let me = self.me_of(&user_id, pending);
        Ok(LoginOk {
            csrf: self.csrf_for(&token),
            token,
            me,
            expires_at: self.inner.settings.session.ends_at(now, now),
        })
    }

    /// Counts a failed login, audits it, and says what to answer.
    async fn failed(
        &self,
        user_id: Option<&str>,
        actor: &Actor,
        ip: Option<IpAddr>,
        now: i64,
    ) -> AuthError {
        self.inner
            .metrics
            .login_failures_total
            .fetch_add(1, Relaxed);
        self.address_failed(ip, now);
        let mut failures = None;
        if let Some(id) = user_id {
            let mut st = self.write();
            if let Some(a) = st.accounts.get_mut(id) {
                a.failures.fail(&LockoutPolicy::ACCOUNT, now);
                failures = Some(a.failures);
            }
        }
        let audit = self
            .audit(actor, "login", &actor.name, json!({}))
            .with_outcome("refused: wrong username, password or code");
        let id = user_id.map(str::to_string);
        let result = self
            .write_op(Box::new(move |c| {
                if let (Some(id), Some(f)) = (&id, failures) {
                    c.execute(
                        "UPDATE accounts SET failures = ?2, failed_at = ?3, locked_until = ?4 WHERE id = ?1",
                        params![id, f.count, f.last, f.locked_until],
                    )?;
                }
                audit.append(c)
            }))
            .await;
        if let Err(e) = result {
            return AuthError::Store(e);
        }
        AuthError::BadCredentials
    }

    async fn audit_refusal(&self, actor: &Actor, action: &str, outcome: &str) {
        let a = self
            .audit(actor, action, &actor.name, json!({}))
            .with_outcome(outcome);
        if let Err(e) = self.record(a).await {
            tracing::error!(error = %format!("{e:#}"), "A refused login could not be audited.");
        }
    }

    /// What a principal may do through this API: at an edge, in its building; at the hub,
    /// wherever its grants reach.
    pub fn permissions_here(&self, p: &Principal) -> PermissionSet {
        match self.inner.scope {
            Scope::Operator => p.permissions_anywhere(),
            ref here => p.permissions_at(here),
        }
    }

    /// The caller's account as the API shows it.
    pub fn me_of(&self, user_id: &str, pending: bool) -> Option<Me> {
        let st = self.read();
        let a = st.accounts.get(user_id)?;
        let perms = if pending {
            PermissionSet::EMPTY
        } else {
            self.permissions_here(&a.principal)
        };
        Some(Me {
            id: a.id.clone(),
            username: a.username.clone(),
            display_name: a.display_name.clone(),
            source: a.source.as_str().to_string(),
            grants: a.grants.iter().map(|g| g.to_string()).collect(),
            permissions: perms.names().into_iter().map(str::to_string).collect(),
            second_factor: if pending {
                "enrollment_required"
            } else if a.totp.is_some() {
                "enabled"
            } else {
                "none"
            }
            .to_string(),
            scope: self.inner.scope.to_string(),
            csrf_token: None,
            via: None,
        })
    }

    /// Ends one session.
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        let Some(hash) = caller.session.clone() else {
            return Err(AuthError::Invalid(
                "logging out needs a session cookie, not a token".into(),
            ));
        };
        let audit = self.audit(&caller.actor(), "logout", &caller.name, json!({}));
        let h = hash.clone();
        self.write_op(Box::new(move |c| {
            c.execute("DELETE FROM sessions WHERE hash = ?1", [&h])?;
            audit.append(c)
        }))
        .await?;
        self.write().sessions.remove(&hash);
        Ok(())
    }

    /// Ends every session of the caller's account at this edge.
    pub async fn logout_all(&self, caller: &Caller) -> Result<usize, AuthError> {
        let uid = caller.principal.user_id.clone();
        let n = self
            .read()
            .sessions
            .values()
            .filter(|s| s.user_id == uid)
            .count();
        let audit = self.audit(
            &caller.actor(),
            "logout_everywhere",
            &caller.name,
            json!({"sessions": n}),
        );
        let u = uid.clone();
        let own = self.inner.own;
        self.write_op(Box::new(move |c| {
            c.execute("DELETE FROM sessions WHERE user_id = ?1", [&u])?;
            // The epoch travels to the edges with the account: their sessions of it
            // end at their next sync.
            c.execute(
                "UPDATE accounts SET epoch = epoch + 1 WHERE id = ?1 AND source = ?2",
                params![u, own.as_str()],
            )?;
            manage::bump(c)?;
            audit.append(c)
        }))
        .await?;
        self.write().sessions.retain(|_, s| s.user_id != uid);
        Ok(n)
    }

    fn local_account(&self, user_id: &str) -> Result<(), AuthError> {
        let st = self.read();
        let a = st
            .accounts
            .get(user_id)
            .ok_or_else(|| AuthError::NotFound("no such account".into()))?;
        if a.source != self.inner.own {
            return Err(AuthError::Conflict(
                "this account is kept on the hub: change its password and second factor there"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Changes a local account's password (the current one is checked); its other
    /// sessions end.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let uid = caller.principal.user_id.clone();
        self.local_account(&uid)?;
        let (verifier, username) = {
            let st = self.read();
            let a = st.accounts.get(&uid).ok_or(AuthError::BadCredentials)?;
            (a.verifier.clone(), a.username.clone())
        };
        if let Some(why) = password::policy_violation(new, &username) {
            return Err(AuthError::Invalid(why));
        }
        let cur = current.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&cur, &verifier))
            .await
            .map_err(|e| AuthError::Store(e.into()))?;
        if !matches!(ok, Ok(true)) {
            return Err(self
                .failed(Some(&uid), &caller.actor(), None, now_micros())
                .await);
        }
        let salt = self.random::<{ password::SALT_LEN }>();
        let (new_pw, cost) = (new.to_string(), self.inner.settings.cost);
        let verifier = tokio::task::spawn_blocking(move || password::hash(&new_pw, &salt, cost))
            .await
            .map_err(|e| AuthError::Store(e.into()))?
            .map_err(|e| AuthError::Store(e.into()))?;
        let keep = caller.session.as_deref().unwrap_or_default().to_string();
        let audit = self.audit(&caller.actor(), "password_change", &username, json!({}));
        let (u, v, k) = (uid.clone(), verifier.clone(), keep.clone());
        self.write_op(Box::new(move |c| {
            c.execute(
                "UPDATE accounts SET verifier = ?2, updated = ?3 WHERE id = ?1",
                params![u, v, now_micros()],
            )?;
            c.execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND hash <> ?2",
                [&u, &k],
            )?;
            manage::bump(c)?;
            audit.append(c)
        }))
        .await?;
        let mut st = self.write();
        if let Some(a) = st.accounts.get_mut(&uid) {
            a.verifier = verifier;
        }
        st.sessions.retain(|h, s| s.user_id != uid || **h == *keep);
        Ok(())
    }

    /// Starts setting up TOTP on a local account: a new secret, returned once, kept sealed
    /// until a code from it confirms it.
    pub async fn totp_setup(&self, caller: &Caller) -> Result<TotpSetup, AuthError> {
        let uid = caller.principal.user_id.clone();
        self.local_account(&uid)?;
        let secret_bytes = self.random::<{ totp::SECRET_LEN }>();
        let sealed = self.inner.seal.seal(
            self.random::<{ secret::NONCE_LEN }>(),
            &format!("totp:{uid}"),
            &secret_bytes,
        );
        let audit = self.audit(&caller.actor(), "totp_setup", &caller.name, json!({}));
        let u = uid.clone();
        let s2 = sealed.clone();
        self.write_op(Box::new(move |c| {
            c.execute(
                "UPDATE accounts SET totp_pending = ?2 WHERE id = ?1",
                [&u, &s2],
            )?;
            audit.append(c)
        }))
        .await?;
        if let Some(a) = self.write().accounts.get_mut(&uid) {
            a.totp_pending = Some(sealed);
        }
        Ok(TotpSetup {
            secret: totp::secret_text(&secret_bytes),
            uri: totp::provisioning_uri(&self.inner.issuer, &caller.name, &secret_bytes),
        })
    }

    /// Confirms a pending TOTP secret with a code from it; returns the recovery codes,
    /// once. A session that was waiting for a second factor becomes a full one.
    pub async fn totp_confirm(
        &self,
        caller: &Caller,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let uid = caller.principal.user_id.clone();
        self.local_account(&uid)?;
        let pending = self
            .read()
            .accounts
            .get(&uid)
            .and_then(|a| a.totp_pending.clone())
            .ok_or_else(|| AuthError::Invalid("start with POST /api/v1/auth/totp/setup".into()))?;
        let secret_bytes = self
            .inner
            .seal
            .open(&format!("totp:{uid}"), &pending)
            .map_err(|e| AuthError::Store(anyhow::anyhow!("a TOTP secret: {e}")))?;
        let now = now_micros();
        let step = totp::check(&secret_bytes, code, now, None).ok_or_else(|| {
            AuthError::Invalid(
                "the code does not match the new secret; check the phone's clock".into(),
            )
        })?;
        let codes: Vec<String> = (0..totp::RECOVERY_CODES)
            .map(|_| totp::recovery_code(&self.random::<10>()))
            .collect();
        let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_hash(c)).collect();
        let recovery = serde_json::to_string(&hashes).unwrap_or_default();
        let audit = self.audit(&caller.actor(), "totp_enable", &caller.name, json!({}));
        let (u, session) = (uid.clone(), caller.session.clone().unwrap_or_default());
        self
            .write_op(Box::new(move |c| {
                c.execute(
                    "UPDATE accounts SET totp = totp_pending, totp_pending = NULL, totp_last_step = ?2, recovery = ?3 WHERE id = ?1",
                    params![u, step, recovery],
                )?;
                c.execute("UPDATE sessions SET pending = 0 WHERE hash = ?1", [&session])?;
                manage::bump(c)?;
                audit.append(c)
            }))
            .await?;
        let mut st = self.write();
        if let Some(a) = st.accounts.get_mut(&uid) {
            a.totp = a.totp_pending.take();
            a.totp_last_step = Some(step);
            a.recovery = hashes;
        }
        if let Some(s) = caller.session.as_ref().and_then(|h| st.sessions.get_mut(h)) {
            s.pending = false;
        }
        Ok(codes)
    }

    /// Creates an API token for the caller with at most the caller's permissions here.
    pub async fn create_token(
        &self,
        caller: &Caller,
        name: &str,
        permissions: PermissionSet,
        days: u32,
    ) -> Result<Json, AuthError> {
        if caller.session.is_none() {
            return Err(AuthError::Invalid(
                "tokens are made from a session, not from another token".into(),
            ));
        }
        if name.trim().is_empty() || name.len() > 100 {
            return Err(AuthError::Invalid(
                "name must be 1 to 100 characters".into(),
            ));
        }
        if !(1..=365).contains(&days) {
            return Err(AuthError::Invalid(
                "expiresInDays must be between 1 and 365".into(),
            ));
        }
        if permissions.is_empty() {
            return Err(AuthError::Invalid(
                "a token needs at least one permission".into(),
            ));
        }
        let held = caller.principal.permissions_anywhere();
        if !permissions.is_subset_of(held) {
            let extra: Vec<&str> = permissions
                .iter()
                .filter(|p| !held.contains(*p))
                .map(Permission::as_str)
                .collect();
            return Err(AuthError::Invalid(format!(
                "a token cannot carry permissions its owner does not hold here: {}",
                extra.join(", ")
            )));
        }
        let now = now_micros();
        let token = secret::token("spt_", &self.random::<32>());
        let hash = secret::token_hash(&token);
        let id = uuid::Uuid::now_v7().to_string();
        let expires = now + i64::from(days) * 86_400_000_000;
        let audit = self.audit(
            &caller.actor(),
            "token_create",
            &id,
            json!({"name": name, "permissions": permissions.names(), "expires": expires}),
        );
        let (i, h, u, n, p) = (
            id.clone(),
            hash.clone(),
            caller.principal.user_id.clone(),
            name.to_string(),
            serde_json::to_string(&permissions.names()).unwrap_or_default(),
        );
        self.write_op(Box::new(move |c| {
            manage::insert_token(c, &i, &h, &u, &n, &p, now, expires)?;
            audit.append(c)
        }))
        .await?;
        let mut st = self.write();
        if let Some(a) = st.accounts.get(&caller.principal.user_id) {
            let token = Token::of(a, id.clone(), name.to_string(), permissions, now, expires);
            st.tokens.insert(Arc::from(hash), token);
        }
        Ok(
            json!({"id": id, "token": token, "name": name, "permissions": permissions.names(), "expires": expires}),
        )
    }

    /// The caller's tokens (never their secrets).
    pub fn tokens_of(&self, user_id: &str) -> Json {
        let st = self.read();
        let mut list: Vec<&Token> = st
            .tokens
            .values()
            .filter(|t| t.user_id == user_id)
            .collect();
        list.sort_by_key(|t| t.created);
        Json::Array(
            list.iter()
                .map(|t| json!({"id": t.id, "name": t.name, "permissions": t.permissions.names(), "created": t.created, "expires": t.expires}))
                .collect(),
        )
    }

    /// Revokes one of the caller's tokens.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<(), AuthError> {
        let hash = {
            let st = self.read();
            st.tokens
                .iter()
                .find(|(_, t)| t.id == id && t.user_id == caller.principal.user_id)
                .map(|(h, _)| h.clone())
                .ok_or_else(|| AuthError::NotFound(format!("no token {id} of yours")))?
        };
        let audit = self.audit(&caller.actor(), "token_revoke", id, json!({}));
        let h = hash.clone();
        self.write_op(Box::new(move |c| {
            c.execute("DELETE FROM api_tokens WHERE hash = ?1", [&h])?;
            audit.append(c)
        }))
        .await?;
        self.write().tokens.remove(&hash);
        Ok(())
    }

    /// The accounts that may log in here, for people who manage users.
    /// The accounts that may log in here, by username, with their sessions and lockout.
    pub fn accounts(&self) -> Vec<AccountView> {
        let st = self.read();
        let mut list: Vec<&Account> = st.accounts.values().collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        let now = now_micros();
        list.iter()
            .map(|a| AccountView {
                id: a.id.clone(),
                username: a.username.clone(),
                display_name: a.display_name.clone(),
                source: a.source.as_str().to_string(),
                grants: a.grants.iter().map(|g| g.to_string()).collect(),
                disabled: a.disabled,
                second_factor: a.totp.is_some(),
                sessions: st.sessions.values().filter(|s| s.user_id == a.id).count(),
                locked_until: a.failures.locked(now),
            })
            .collect()
    }

    /// The hub generation of accounts this edge has.
    pub fn hub_generation(&self) -> u64 {
        self.read().hub_generation
    }

    /// Replaces the hub's accounts with a push from the hub. Accounts no longer in it
    /// (disabled on the hub, or without a role here any more) are removed with their
    /// sessions and tokens; an account whose password, grants or epoch changed loses its
    /// sessions. A push older than the one applied is ignored.
    pub async fn apply_hub_accounts(&self, push: AccountsPush) -> anyhow::Result<bool> {
        if push.generation <= self.hub_generation() {
            return Ok(false);
        }
        push.validate()
            .map_err(|e| anyhow::anyhow!("the hub's accounts were refused: {e}"))?;
        let now = now_micros();
        let (removed, ended, skipped) = {
            let st = self.read();
            let incoming: HashSet<&str> = push.accounts.iter().map(|a| a.id.as_str()).collect();
            let removed: Vec<String> = st
                .accounts
                .values()
                .filter(|a| a.source == Source::Hub && !incoming.contains(a.id.as_str()))
                .map(|a| a.id.clone())
                .collect();
            let mut ended: Vec<String> = removed.clone();
            let mut skipped = Vec::new();
            for a in &push.accounts {
                match st.accounts.get(&a.id) {
                    Some(old) if old.source == Source::Local => skipped.push(a.username.clone()),
                    Some(old) => {
                        if old.verifier != a.verifier
                            || old.epoch != a.epoch
                            || old.grants != a.grants
                        {
                            ended.push(a.id.clone());
                        }
                    }
                    None => {
                        let clash = st
                            .by_name
                            .get(&a.username.to_lowercase())
                            .and_then(|id| st.accounts.get(id))
                            .is_some_and(|o| o.source == Source::Local || o.id != a.id);
                        if clash {
                            skipped.push(a.username.clone());
                        }
                    }
                }
            }
            (removed, ended, skipped)
        };
        if !skipped.is_empty() {
            tracing::error!(usernames = ?skipped, "Hub accounts share a username with a local account here; the local accounts stay and these are not applied.");
        }
        let mut rows = Vec::new();
        for a in &push.accounts {
            if skipped.contains(&a.username) {
                continue;
            }
            let totp = match &a.totp_secret {
                Some(t) => {
                    let bytes = totp::secret_from_text(t).unwrap_or_default();
                    Some(self.inner.seal.seal(
                        self.random::<{ secret::NONCE_LEN }>(),
                        &format!("totp:{}", a.id),
                        &bytes,
                    ))
                }
                None => None,
            };
            rows.push((a.clone(), totp));
        }
        let audit = self.audit(
            &Actor::system("hub"),
            "accounts_sync",
            &self.inner.scope.to_string(),
            json!({"generation": push.generation, "accounts": rows.len(), "removed": removed.len(), "sessionsEnded": ended.len(), "skipped": skipped}),
        );
        let generation = push.generation;
        let (removed2, ended2) = (removed.clone(), ended.clone());
        self
            .write_op(Box::new(move |c| {
                for (a, totp) in &rows {
                    let grants = serde_json::to_string(&a.grants).unwrap_or_default();
                    let recovery = serde_json::to_string(&a.recovery_hashes).unwrap_or_default();
                    c.prepare_cached(
                        "INSERT INTO accounts (id, username, display_name, source, verifier, totp, recovery, grants, disabled, epoch, updated)
                         VALUES (?1, ?2, ?3, 'hub', ?4, ?5, ?6, ?7, 0, ?8, ?9)
                         ON CONFLICT (id) DO UPDATE SET username = excluded.username, display_name = excluded.display_name,
                            verifier = excluded.verifier, totp = excluded.totp, recovery = excluded.recovery,
                            grants = excluded.grants, disabled = 0, epoch = excluded.epoch, updated = excluded.updated
                         WHERE source = 'hub'",
                    )?
                    .execute(params![a.id, a.username, a.display_name, a.verifier, totp, recovery, grants, a.epoch, now])?;
                }
                for id in &removed2 {
                    c.execute("DELETE FROM accounts WHERE id = ?1 AND source = 'hub'", [id])?;
                    c.execute("DELETE FROM api_tokens WHERE user_id = ?1", [id])?;
                }
                for id in &ended2 {
                    c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
                }
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('auth_hub_generation', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [generation as i64],
                )?;
                audit.append(c)
            }))
            .await?;
        self.reload().await?;
        tracing::info!(
            generation,
            removed = removed.len(),
            sessions_ended = ended.len(),
            "Applied the hub's accounts."
        );
        Ok(true)
    }

    /// Reads everything again from the store (after an account change by the host's
    /// command line, or a push), keeping the idle clocks of live sessions.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let policy = self.inner.settings.session;
        let fresh = self
            .read_db(move |c| load_state(c, now_micros(), &policy))
            .await?;
        self.install(fresh);
        Ok(())
    }

    /// Puts accounts read from the store in place, keeping the idle clocks of live
    /// sessions and the failure counts of this process.
    fn install(&self, fresh: State) {
        let mut st = self.write();
        for (hash, s) in &fresh.sessions {
            if let Some(old) = st.sessions.get(hash) {
                s.last_seen.fetch_max(old.last_seen.load(Relaxed), Relaxed);
            }
        }
        let failures: HashMap<String, Failures> = st
            .accounts
            .iter()
            .map(|(id, a)| (id.clone(), a.failures))
            .collect();
        *st = fresh;
        let generation = st.generation;
        for (id, f) in failures {
            if let Some(a) = st.accounts.get_mut(&id)
                && f.last > a.failures.last
            {
                a.failures = f;
            }
        }
        drop(st);
        self.inner.generation.send_if_modified(|g| {
            let changed = *g != generation;
            *g = generation;
            changed
        });
    }

    /// Keeps sessions' idle clocks on disk, forgets expired sessions and tokens, and picks
    /// up accounts changed on the host. Runs until the node stops.
    pub async fn run_housekeeping(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            let generation = self
                .read_db(|c| {
                    c.query_row(
                        "SELECT value FROM meta WHERE key = 'accounts_generation'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                })
                .await;
            if let Ok(g) = generation {
                let g = g.unwrap_or(0);
                if g != self.read().generation {
                    tracing::info!("Accounts changed on the host; reading them again.");
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %format!("{e:#}"), "Cannot read the accounts again.");
                    }
                }
            }
            if n.is_multiple_of(30) {
                self.persist_and_prune().await;
            }
            self.inner
                .metrics
                .sessions_active
                .store(self.read().sessions.len() as u64, Relaxed);
        }
    }

    async fn persist_and_prune(&self) {
        let now = now_micros();
        let policy = self.inner.settings.session;
        let (seen, dead, expired_tokens) = {
            let st = self.read();
            let seen: Vec<(String, i64)> = st
                .sessions
                .iter()
                .map(|(h, s)| (h.to_string(), s.last_seen.load(Relaxed)))
                .collect();
            let dead: Vec<String> = st
                .sessions
                .iter()
                .filter(|(_, s)| !policy.alive(s.created, s.last_seen.load(Relaxed), now))
                .map(|(h, _)| h.to_string())
                .collect();
            let expired: Vec<String> = st
                .tokens
                .iter()
                .filter(|(_, t)| t.expires <= now)
                .map(|(h, _)| h.to_string())
                .collect();
            (seen, dead, expired)
        };
        let (d2, e2) = (dead.clone(), expired_tokens.clone());
        let result = self
            .write_op(Box::new(move |c| {
                for (h, t) in &seen {
                    c.prepare_cached(
                        "UPDATE sessions SET last_seen = CASE WHEN last_seen > ?2 THEN last_seen ELSE ?2 END WHERE hash = ?1",
                    )?
                    .execute(params![h, t])?;
                }
                for h in &d2 {
                    c.execute("DELETE FROM sessions WHERE hash = ?1", [h])?;
                }
                for h in &e2 {
                    c.execute("DELETE FROM api_tokens WHERE hash = ?1", [h])?;
                }
                Ok(())
            }))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "Cannot keep the sessions' clocks.");
            return;
        }
        let mut st = self.write();
        for h in dead {
            st.sessions.remove(h.as_str());
        }
        for h in expired_tokens {
            st.tokens.remove(h.as_str());
        }
    }
}

fn remove_recovery(c: &Connection, user_id: &str, hash: &str) -> park_db::Result<()> {
    let text: String = c.query_row(
        "SELECT recovery FROM accounts WHERE id = ?1",
        [user_id],
        |r| r.get(0),
    )?;
    let mut list: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    list.retain(|h| h != hash);
    c.execute(
        "UPDATE accounts SET recovery = ?2 WHERE id = ?1",
        params![user_id, serde_json::to_string(&list).unwrap_or_default()],
    )?;
    Ok(())
}

/// Account management in a transaction of the caller's: the hub's API and command line,
/// and an edge's command line for its local accounts. Each change bumps
/// `accounts_generation` (which a running process watches, and the hub pushes to edges
/// from) and is audited in the same transaction.
pub mod manage {
    use super::*;

    /// A new account.
    pub struct NewAccount<'a> {
        pub username: &'a str,
        pub display_name: &'a str,
        pub verifier: String,
        pub grants: &'a [Grant],
        pub department: Option<&'a str>,
    }

    /// A verifier for a new password, checked against the policy first.
    pub fn verifier_for(username: &str, password_text: &str, cost: Cost) -> anyhow::Result<String> {
        if let Some(why) = password::policy_violation(password_text, username) {
            anyhow::bail!("{why}");
        }
        let mut salt = [0u8; password::SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(password::hash(password_text, &salt, cost)?)
    }

    /// Announces a change of the accounts (or of what is sealed) to running processes.
    pub fn bump(c: &Connection) -> park_db::Result<()> {
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('accounts_generation', 1)
             ON CONFLICT (key) DO UPDATE SET value = meta.value + 1",
            [],
        )?;
        Ok(())
    }

    fn audit(actor: &Actor, mirror: Mirror, action: &str, target: &str, detail: Json) -> Audit {
        let mut a = Audit::new(actor, action, target, detail);
        a.mirror = mirror;
        a
    }

    /// The account of `username`, if there is one.
    pub fn find(
        c: &Connection,
        username: &str,
    ) -> park_db::Result<Option<(String, Source, Vec<Grant>)>> {
        c.query_row(
            "SELECT id, source, grants FROM accounts WHERE lower(username) = lower(?1)",
            [username],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    if r.get::<_, String>(1)? == "hub" {
                        Source::Hub
                    } else {
                        Source::Local
                    },
                    serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                ))
            },
        )
        .optional()
    }

    fn own_account(c: &Connection, id: &str, own: Source) -> anyhow::Result<(String, Vec<Grant>)> {
        let (username, source, grants): (String, String, String) = c
            .query_row(
                "SELECT username, source, grants FROM accounts WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .with_context(|| format!("no account {id}"))?;
        anyhow::ensure!(
            source == own.as_str(),
            "account {username} is kept on the hub; change it there"
        );
        Ok((username, serde_json::from_str(&grants).unwrap_or_default()))
    }

    /// Creates an account; returns its id.
    pub fn create(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        own: Source,
        new: NewAccount<'_>,
    ) -> anyhow::Result<String> {
        anyhow::ensure!(
            park_model::identity::valid_username(new.username),
            "a username takes 2 to 64 letters, digits, '.', '_', '-' or '@'"
        );
        anyhow::ensure!(!new.grants.is_empty(), "an account needs at least one role");
        anyhow::ensure!(
            !new.display_name.trim().is_empty() && new.display_name.len() <= 200,
            "displayName must be 1 to 200 characters"
        );
        anyhow::ensure!(
            find(c, new.username)?.is_none(),
            "there is already an account {:?}",
            new.username
        );
        let id = format!("{}-{}", own.as_str(), uuid::Uuid::now_v7());
        let now = now_micros();
        c.execute(
            "INSERT INTO accounts (id, username, display_name, source, verifier, grants, department, created, created_by, updated, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, ?9)",
            params![
                id,
                new.username,
                new.display_name,
                own.as_str(),
                new.verifier,
                serde_json::to_string(new.grants)?,
                new.department,
                now,
                actor.name
            ],
        )?;
        bump(c)?;
        audit(
            actor,
            mirror,
            "user_create",
            new.username,
            json!({"id": id, "grants": new.grants, "department": new.department}),
        )
        .append(c)?;
        Ok(id)
    }

    /// Disables (sessions and tokens end) or re-enables an account.
    pub fn set_disabled(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        own: Source,
        id: &str,
        disabled: bool,
    ) -> anyhow::Result<()> {
        let (username, _) = own_account(c, id, own)?;
        c.execute(
            "UPDATE accounts SET disabled = ?2, epoch = epoch + ?3, updated = ?4, updated_by = ?5 WHERE id = ?1",
            params![id, disabled as i64, disabled as i64, now_micros(), actor.name],
        )?;
        if disabled {
            c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        }
        bump(c)?;
        let action = if disabled {
            "user_disable"
        } else {
            "user_enable"
        };
        audit(actor, mirror, action, &username, json!({"id": id})).append(c)?;
        Ok(())
    }

    /// Replaces an account's grants (its sessions end: they were made under the old ones).
    pub fn set_grants(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        own: Source,
        id: &str,
        grants: &[Grant],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(!grants.is_empty(), "an account needs at least one role");
        let (username, old) = own_account(c, id, own)?;
        c.execute(
            "UPDATE accounts SET grants = ?2, epoch = epoch + 1, updated = ?3, updated_by = ?4 WHERE id = ?1",
            params![id, serde_json::to_string(grants)?, now_micros(), actor.name],
        )?;
        c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        bump(c)?;
        audit(
            actor,
            mirror,
            "user_grants",
            &username,
            json!({"id": id, "from": old, "to": grants}),
        )
        .append(c)?;
        Ok(())
    }

    /// Sets an account's password (an administrator's reset): its sessions end and a
    /// lockout is lifted.
    pub fn set_verifier(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        own: Source,
        id: &str,
        verifier: &str,
    ) -> anyhow::Result<()> {
        let (username, _) = own_account(c, id, own)?;
        c.execute(
            "UPDATE accounts SET verifier = ?2, failures = 0, locked_until = 0, epoch = epoch + 1, updated = ?3, updated_by = ?4 WHERE id = ?1",
            params![id, verifier, now_micros(), actor.name],
        )?;
        c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        bump(c)?;
        audit(
            actor,
            mirror,
            "password_reset",
            &username,
            json!({"id": id}),
        )
        .append(c)?;
        Ok(())
    }

    /// Removes an account's second factor and recovery codes (a lost phone): it must set
    /// one up again at its next login if its roles need one.
    pub fn reset_second_factor(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        own: Source,
        id: &str,
    ) -> anyhow::Result<()> {
        let (username, _) = own_account(c, id, own)?;
        c.execute(
            "UPDATE accounts SET totp = NULL, totp_pending = NULL, totp_last_step = NULL, recovery = '[]', epoch = epoch + 1, updated = ?2, updated_by = ?3 WHERE id = ?1",
            params![id, now_micros(), actor.name],
        )?;
        c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        bump(c)?;
        audit(
            actor,
            mirror,
            "second_factor_reset",
            &username,
            json!({"id": id}),
        )
        .append(c)?;
        Ok(())
    }

    /// Stores an API token's hash.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_token(
        c: &Connection,
        id: &str,
        hash: &str,
        user_id: &str,
        name: &str,
        permissions: &str,
        created: i64,
        expires: i64,
    ) -> park_db::Result<()> {
        c.execute(
            "INSERT INTO api_tokens (id, hash, user_id, name, permissions, created, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, hash, user_id, name, permissions, created, expires],
        )?;
        Ok(())
    }

    /// Makes an API token for an account on the host (a metrics scraper's, an
    /// integration's): at most the account's permissions, for 1 to 365 days. Returns the
    /// token, which is not stored (only its hash is).
    pub fn create_token(
        c: &Connection,
        actor: &Actor,
        mirror: Mirror,
        username: &str,
        name: &str,
        permissions: PermissionSet,
        days: u32,
    ) -> anyhow::Result<String> {
        anyhow::ensure!((1..=365).contains(&days), "a token lasts 1 to 365 days");
        anyhow::ensure!(
            !permissions.is_empty(),
            "a token needs at least one permission"
        );
        anyhow::ensure!(
            !name.trim().is_empty() && name.len() <= 100,
            "a token's name takes 1 to 100 characters"
        );
        let (id, _, grants) =
            find(c, username)?.with_context(|| format!("no account {username:?}"))?;
        let held = principal_of(&id, username, &grants, None).permissions_anywhere();
        anyhow::ensure!(
            permissions.is_subset_of(held),
            "{username} does not hold {}",
            permissions
                .iter()
                .filter(|p| !held.contains(*p))
                .map(Permission::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        let token = secret::token("spt_", &random);
        let now = now_micros();
        let expires = now + i64::from(days) * 86_400_000_000;
        let token_id = uuid::Uuid::now_v7().to_string();
        insert_token(
            c,
            &token_id,
            &secret::token_hash(&token),
            &id,
            name,
            &serde_json::to_string(&permissions.names())?,
            now,
            expires,
        )?;
        bump(c)?;
        audit(
            actor,
            mirror,
            "token_create",
            &token_id,
            json!({"user": username, "name": name, "permissions": permissions.names(), "expires": expires}),
        )
        .append(c)?;
        Ok(token)
    }

    /// Every account as rows for lists: id, username, display name, source, grants,
    /// disabled, department, whether it has a second factor.
    pub fn list(c: &Connection) -> park_db::Result<Vec<Json>> {
        let mut stmt = c.prepare(
            "SELECT id, username, display_name, source, grants, disabled, department, totp IS NOT NULL, created, created_by, updated, updated_by
             FROM accounts ORDER BY username",
        )?;
        let rows = stmt.query_map([], |r| {
            let grants: Vec<Grant> =
                serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default();
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "username": r.get::<_, String>(1)?,
                "displayName": r.get::<_, String>(2)?,
                "source": r.get::<_, String>(3)?,
                "grants": grants,
                "disabled": r.get::<_, i64>(5)? != 0,
                "department": r.get::<_, Option<String>>(6)?,
                "secondFactor": r.get::<_, bool>(7)?,
                "created": r.get::<_, Option<i64>>(8)?,
                "createdBy": r.get::<_, Option<String>>(9)?,
                "updated": r.get::<_, Option<i64>>(10)?,
                "updatedBy": r.get::<_, Option<String>>(11)?,
            }))
        })?;
        rows.collect()
    }

    /// An actor for changes made on the host's command line.
    pub fn host_actor(command: &str) -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            user_id: String::new(),
            name: format!("host:{user}"),
            client: format!("host ({command})"),
        }
    }
}
