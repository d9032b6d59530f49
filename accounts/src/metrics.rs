//! The counters of logins and request checks, kept by this crate and rendered by each
//! binary under its own prefix (`smartpark_edge_auth_*`, `smartpark_hub_auth_*`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub logins_total: AtomicU64,
    pub login_failures_total: AtomicU64,
    pub logins_locked_total: AtomicU64,
    pub sessions_active: AtomicU64,
    pub unauthenticated_total: AtomicU64,
    pub forbidden_total: AtomicU64,
    pub bad_host_total: AtomicU64,
    pub bad_origin_total: AtomicU64,
    pub csrf_failures_total: AtomicU64,
}

impl AuthMetrics {
    /// Appends the metrics as Prometheus text, each named `{prefix}_auth_...`.
    pub fn render(&self, prefix: &str, out: &mut String) {
        let rows: [(&str, &AtomicU64, &str); 9] = [
            ("logins_total", &self.logins_total, "Successful logins."),
            (
                "login_failures_total",
                &self.login_failures_total,
                "Logins refused for a wrong username, password or code.",
            ),
            (
                "logins_locked_total",
                &self.logins_locked_total,
                "Logins refused unchecked because the account or the address was locked out.",
            ),
            (
                "sessions_active",
                &self.sessions_active,
                "Live browser sessions.",
            ),
            (
                "unauthenticated_total",
                &self.unauthenticated_total,
                "Requests refused for want of a valid session or token (401).",
            ),
            (
                "forbidden_total",
                &self.forbidden_total,
                "Requests refused because the caller lacks the route's permission (403).",
            ),
            (
                "bad_host_total",
                &self.bad_host_total,
                "Requests refused for a Host header that does not name this server (DNS rebinding).",
            ),
            (
                "bad_origin_total",
                &self.bad_origin_total,
                "Writes refused for a foreign Origin.",
            ),
            (
                "csrf_failures_total",
                &self.csrf_failures_total,
                "Cookie-authenticated writes refused for a missing or wrong CSRF token.",
            ),
        ];
        for (name, v, help) in rows {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {prefix}_auth_{name} {help}\n# TYPE {prefix}_auth_{name} {kind}\n{prefix}_auth_{name} {}",
                v.load(Relaxed)
            );
        }
    }
}
