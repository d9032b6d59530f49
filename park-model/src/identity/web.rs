//! The checks a browser-facing API makes on every request, as pure functions of header
//! values: the Host it was sent to (DNS rebinding), the Origin of a write (cross-site
//! requests), the session cookie, the CSRF token, and the session's idle and absolute
//! expiry.

use super::secret::constant_time_eq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "smartpark_session";
/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The host part of a `Host` header or an origin's authority, lowercased, without the port.
fn host_only(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request sent with this `Host` header is for us. An IP address is always fine:
/// DNS rebinding needs a name that the attacker's DNS points at us, and a browser sends that
/// name. Names are accepted only when configured (and `localhost`).
pub fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 clients and some tools send none; no browser does.
        return true;
    };
    let h = host_only(host);
    if h.is_empty() {
        return false;
    }
    if h.parse::<std::net::IpAddr>().is_ok() || h == "localhost" {
        return true;
    }
    names.iter().any(|n| n.eq_ignore_ascii_case(&h))
}

/// Whether a request's `Origin` may act here: none (not from a browser page), the same
/// origin as the Host it was sent to, or one configured. `null` (sandboxed frames, files)
/// never may.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, extra: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim();
    if origin.eq_ignore_ascii_case("null") {
        return false;
    }
    if extra.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    host.is_some_and(|h| {
        h.trim()
            .eq_ignore_ascii_case(authority.trim_end_matches('/'))
    })
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value for a session: HttpOnly, SameSite=Strict, for the whole site,
/// `Secure` when served over TLS. `max_age` in seconds; 0 deletes it.
pub fn session_cookie(value: &str, secure: bool, max_age: i64) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.max(0),
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the CSRF token a write carries is the session's.
pub fn csrf_ok(sent: Option<&str>, expected: &str) -> bool {
    sent.is_some_and(|s| constant_time_eq(s.trim().as_bytes(), expected.as_bytes()))
}

/// A bearer token from an `Authorization` header.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// How long sessions live, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Ended after this long without a request.
    pub idle: i64,
    /// Ended this long after login, whatever happens.
    pub absolute: i64,
}

impl SessionPolicy {
    pub const DEFAULT: SessionPolicy = SessionPolicy {
        idle: 30 * 60 * 1_000_000,
        absolute: 12 * 3600 * 1_000_000,
    };

    /// Whether a session created at `created` and last used at `last_seen` still holds at
    /// `now`.
    pub fn alive(&self, created: i64, last_seen: i64, now: i64) -> bool {
        now < created.saturating_add(self.absolute) && now < last_seen.saturating_add(self.idle)
    }

    /// When the session ends if nothing else happens.
    pub fn ends_at(&self, created: i64, last_seen: i64) -> i64 {
        created
            .saturating_add(self.absolute)
            .min(last_seen.saturating_add(self.idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_localhost_or_configured_names() {
        let names = vec!["edge-b1.park.example".to_string()];
        for ok in [
            "192.168.1.20:8443",
            "192.168.1.20",
            "[fe80::1]:8443",
            "localhost:8080",
            "EDGE-B1.park.example:443",
            "edge-b1.park.example.",
        ] {
            assert!(host_allowed(Some(ok), &names), "{ok}");
        }
        for bad in ["attacker.example:8080", "edge-b1.park.example.evil.com", ""] {
            assert!(!host_allowed(Some(bad), &names), "{bad}");
        }
    }

    #[test]
    fn origins_must_match_the_host_or_be_configured() {
        let host = Some("192.168.1.20:8443");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("https://192.168.1.20:8443"), host, &[]));
        assert!(!origin_allowed(
            Some("https://192.168.1.20:8444"),
            host,
            &[]
        ));
        assert!(!origin_allowed(Some("https://attacker.example"), host, &[]));
        assert!(!origin_allowed(Some("null"), host, &[]));
        let extra = vec!["https://console.park.example".to_string()];
        assert!(origin_allowed(
            Some("https://console.park.example"),
            host,
            &extra
        ));
    }

    #[test]
    fn cookies_and_bearers_are_read_exactly() {
        let h = "a=1; smartpark_session=abc; smartpark_sessionx=zzz";
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie("x=1", SESSION_COOKIE), None);
        assert_eq!(bearer("Bearer spt_x"), Some("spt_x"));
        assert_eq!(bearer("bearer  spt_x "), Some("spt_x"));
        assert_eq!(bearer("Basic abc"), None);
        let c = session_cookie("v", true, 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(!session_cookie("v", false, 60).contains("Secure"));
        assert!(csrf_ok(Some("t1"), "t1"));
        assert!(!csrf_ok(Some("t2"), "t1"));
        assert!(!csrf_ok(None, "t1"));
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let p = SessionPolicy {
            idle: 10,
            absolute: 100,
        };
        assert!(p.alive(0, 0, 9));
        assert!(!p.alive(0, 0, 10));
        assert!(p.alive(0, 95, 99));
        assert!(!p.alive(0, 95, 100));
        assert_eq!(p.ends_at(0, 95), 100);
    }
}
