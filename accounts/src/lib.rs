//! Who may use the edge's and the hub's APIs, and what they did there: accounts, logins
//! (Argon2id, TOTP, lockout), browser sessions and API tokens ([`auth`]), the checks every
//! request passes and the routes of logging in ([`http`]), and the hash-chained audit log
//! ([`audit`]). Both the edge and the hub keep these in their own SQLite file, with the
//! same tables, so a login works the same on both and an edge holds copies of the hub's
//! accounts.
//!
//! The pure parts (roles, permissions, verifiers, TOTP, the chain's hashing) are in
//! `park_model::identity` and `park_model::audit`; this crate adds storage and HTTP. It
//! knows nothing of buildings, devices or sync: the binaries tell it the scope their API
//! serves, how to write to their store, and (on the edge) to mirror audit records into
//! the events that sync to the hub.

pub mod audit;
pub mod auth;
pub mod csv;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod webapp;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use audit::{Actor, Audit};
pub use auth::{Auth, AuthError, AuthSettings, Caller};
pub use metrics::AuthMetrics;

/// A write to the store, run in a transaction (possibly more than once if the
/// transaction is retried, hence `FnMut`).
pub type WriteOp = Box<dyn FnMut(&park_db::Connection) -> park_db::Result<()> + Send>;

/// How this crate writes to the binary's store: the edge queues the op for its writer
/// thread's next group commit, the hub runs it in an immediate transaction.
pub type Writer =
    Arc<dyn Fn(WriteOp) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
