//! Password verifiers (Argon2id, in the PHC string format) and the password policy.
//!
//! A verifier is `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH` with SALT and HASH in base64 without
//! padding, so that any Argon2 implementation can check it. The salt is an argument: the
//! caller draws it from the operating system's random source. Verifying reads the cost from
//! the verifier, within [`MAX_MEMORY_KIB`] and [`MAX_ITERATIONS`], so a verifier that a
//! compromised peer sends cannot make a login take unbounded memory or time.

use argon2::{Algorithm, Argon2, Params, Version};
use data_encoding::BASE64_NOPAD;

/// The cost of new verifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Cost {
    /// OWASP's first recommended Argon2id setting (19 MiB, 2 passes, 1 lane): about 25 ms
    /// on one core of the 2-core reference machine, small enough for an edge box to check a
    /// shift change's logins at once, and about 50,000 times the work of one SHA-256 per guess.
    pub const DEFAULT: Cost = Cost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// The cheapest cost Argon2 accepts; for tests only, where hashing is not what is tested.
    pub const TEST: Cost = Cost {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 8;
const HASH_LEN: usize = 32;
pub const SALT_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the stored verifier is malformed: {0}")]
    BadVerifier(&'static str),
    #[error("argon2 refused the parameters: {0}")]
    Argon2(String),
}

fn argon2(cost: Cost) -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        Some(HASH_LEN),
    )
    .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A verifier for `password` with `salt` at `cost`.
pub fn hash(password: &str, salt: &[u8; SALT_LEN], cost: Cost) -> Result<String, PasswordError> {
    let mut out = [0u8; HASH_LEN];
    argon2(cost)?
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        BASE64_NOPAD.encode(salt),
        BASE64_NOPAD.encode(&out)
    ))
}

/// A parsed verifier.
struct Parsed {
    cost: Cost,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse(verifier: &str) -> Result<Parsed, PasswordError> {
    let bad = PasswordError::BadVerifier;
    let mut parts = verifier.split('$');
    if parts.next() != Some("") || parts.next() != Some("argon2id") {
        return Err(bad("not an argon2id verifier"));
    }
    if parts.next() != Some("v=19") {
        return Err(bad("not argon2 version 19"));
    }
    let params = parts.next().ok_or(bad("no parameters"))?;
    let mut cost = Cost {
        memory_kib: 0,
        iterations: 0,
        parallelism: 0,
    };
    for kv in params.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or(bad("a parameter without a value"))?;
        let v: u32 = v.parse().map_err(|_| bad("a parameter is not a number"))?;
        match k {
            "m" => cost.memory_kib = v,
            "t" => cost.iterations = v,
            "p" => cost.parallelism = v,
            _ => return Err(bad("an unknown parameter")),
        }
    }
    if cost.memory_kib > MAX_MEMORY_KIB
        || cost.iterations == 0
        || cost.iterations > MAX_ITERATIONS
        || cost.parallelism == 0
        || cost.parallelism > MAX_PARALLELISM
    {
        return Err(bad("parameters out of the accepted range"));
    }
    let decode = |s: Option<&str>, what| {
        s.and_then(|s| BASE64_NOPAD.decode(s.as_bytes()).ok())
            .ok_or(bad(what))
    };
    let salt = decode(parts.next(), "a bad salt")?;
    let hash = decode(parts.next(), "a bad hash")?;
    if parts.next().is_some() || !(8..=64).contains(&salt.len()) || hash.len() != HASH_LEN {
        return Err(bad("bad lengths"));
    }
    Ok(Parsed { cost, salt, hash })
}

/// Whether `password` matches `verifier`; `Err` only when the verifier itself is bad.
pub fn verify(password: &str, verifier: &str) -> Result<bool, PasswordError> {
    let p = parse(verifier)?;
    let mut out = [0u8; HASH_LEN];
    argon2(p.cost)?
        .hash_password_into(password.as_bytes(), &p.salt, &mut out)
        .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Ok(super::secret::constant_time_eq(&out, &p.hash))
}

/// Whether a verifier was made at a lower cost than `cost` (rehash at the next login).
pub fn needs_rehash(verifier: &str, cost: Cost) -> bool {
    parse(verifier).map_or(true, |p| p.cost != cost)
}

/// A verifier that matches no password, to spend the same time on an unknown user as on a
/// known one (so that timing does not tell which usernames exist).
pub fn dummy_verifier(cost: Cost) -> String {
    hash("\u{0}no such user\u{0}", &[0x5a; SALT_LEN], cost).unwrap_or_default()
}

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;

/// Passwords that are long enough and still guessed first. Lowercased.
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "password1234",
    "password12345",
    "passw0rd1234",
    "qwertyuiop12",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "iloveyou1234",
    "administrator",
    "admin1234567",
    "welcome12345",
    "changeme1234",
    "letmein12345",
    "abcdefghijkl",
    "abc123456789",
    "woaini1314520",
    "aa123456789a",
    "smartpark123",
    "smartpark2026",
];

/// Why a new password is refused; `None` when it is acceptable. The policy follows NIST SP
/// 800-63B: length rather than character classes, no well-known passwords, nothing made of
/// the username, no long runs of one character.
pub fn policy_violation(password: &str, username: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Some(format!(
            "a password needs at least {MIN_LENGTH} characters (this one has {chars})"
        ));
    }
    if password.len() > MAX_LENGTH {
        return Some(format!("a password takes at most {MAX_LENGTH} bytes"));
    }
    if password.chars().any(char::is_control) {
        return Some("a password must not contain control characters".into());
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Some("this password is among the most commonly used; choose another".into());
    }
    let user = username.to_lowercase();
    if !user.is_empty() && lower.contains(&user) {
        return Some("a password must not contain the username".into());
    }
    let distinct: std::collections::BTreeSet<char> = password.chars().collect();
    if distinct.len() < 5 {
        return Some("a password needs at least 5 different characters".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_and_only_it() {
        let v = hash("correct horse battery", &[7; SALT_LEN], Cost::TEST).unwrap();
        assert!(v.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{v}");
        assert!(verify("correct horse battery", &v).unwrap());
        assert!(!verify("correct horse batterY", &v).unwrap());
        assert!(!needs_rehash(&v, Cost::TEST));
        assert!(needs_rehash(&v, Cost::DEFAULT));
    }

    #[test]
    fn the_default_cost_is_what_the_verifier_says() {
        let v = hash("pw", &[1; SALT_LEN], Cost::DEFAULT).unwrap();
        assert!(v.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{v}");
    }

    #[test]
    fn a_known_argon2id_vector_verifies() {
        // RFC 9106's parameters are not PHC-encodable (secret and associated data), so this
        // checks against a verifier made by the reference `argon2` command line:
        // echo -n password | argon2 somesalt -id -t 2 -m 16 -p 1 -l 32
        let v = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(verify("password", v).unwrap());
        assert!(!verify("Password", v).unwrap());
    }

    #[test]
    fn verifiers_from_a_peer_are_bounded() {
        for v in [
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=64,t=100000,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2i$v=19$m=64,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$m=64,t=2,p=1,x=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "",
            "plain",
        ] {
            assert!(verify("password", v).is_err(), "{v}");
        }
    }

    #[test]
    fn the_policy_names_what_is_wrong() {
        assert!(policy_violation("short", "amy").unwrap().contains("12"));
        assert!(
            policy_violation("Password1234", "amy")
                .unwrap()
                .contains("commonly")
        );
        assert!(
            policy_violation("amy-the-engineer", "amy")
                .unwrap()
                .contains("username")
        );
        assert!(
            policy_violation("aaaaaaaaaaaaaaaab", "x")
                .unwrap()
                .contains("different")
        );
        assert!(policy_violation("tall-cedar-river-42", "amy").is_none());
        assert!(policy_violation(&"x1y2z3".repeat(30), "amy").is_some());
        assert!(
            policy_violation("与君初相识犹如故人归", "amy")
                .unwrap()
                .contains("12")
        );
        assert!(policy_violation("与君初相识犹如故人归来兮", "amy").is_none());
    }
}
