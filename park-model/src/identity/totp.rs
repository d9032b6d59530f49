//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits, the
//! parameters every authenticator app assumes) and single-use recovery codes.
//!
//! A code is accepted for the current step and one step either side (clock drift), and
//! only for a step later than the last one accepted for the account, so a code seen over
//! someone's shoulder cannot be used again.

use data_encoding::BASE32_NOPAD;
use ring::hmac;

use super::secret;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
pub const SECRET_LEN: usize = 20;

/// The code for `secret` at time step `step` (RFC 4226's dynamic truncation).
pub fn code_at(secret: &[u8], step: i64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &(step as u64).to_be_bytes());
    let mac = tag.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    bin % 10u32.pow(DIGITS)
}

/// The time step of `now` (microseconds since the Unix epoch).
pub fn step_of(now_micros: i64) -> i64 {
    now_micros.div_euclid(1_000_000).div_euclid(STEP_SECONDS)
}

/// The step whose code `code` is, if it is one of now's (±1 step) and later than
/// `last_used`; the caller stores it as the new `last_used`.
pub fn check(secret: &[u8], code: &str, now_micros: i64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step_of(now_micros);
    let mut found = None;
    // Every candidate is computed, whatever matches, so the time taken says nothing.
    for step in [now - 1, now, now + 1] {
        let matches =
            secret::constant_time_eq(&code_at(secret, step).to_be_bytes(), &wanted.to_be_bytes());
        if matches && last_used.is_none_or(|l| step > l) {
            found = Some(step);
        }
    }
    found
}

/// The secret as an authenticator app takes it (base32).
pub fn secret_text(secret: &[u8]) -> String {
    BASE32_NOPAD.encode(secret)
}

pub fn secret_from_text(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect::<String>()
        .to_ascii_uppercase();
    BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

/// The `otpauth://` URI that an authenticator app reads from a QR code.
pub fn provisioning_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let esc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        esc(issuer),
        esc(account),
        secret_text(secret),
        esc(issuer)
    )
}

/// How many recovery codes an account gets; each works once.
pub const RECOVERY_CODES: usize = 10;

/// A recovery code from 10 random bytes: `xxxxx-xxxxx-xxxxx-xxxxx` in lowercase base32.
pub fn recovery_code(random: &[u8; 10]) -> String {
    let s = BASE32_NOPAD.encode(random).to_ascii_lowercase();
    format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

/// A recovery code as it is stored: its SHA-256, whatever the case or dashes it is typed
/// with (the code has 80 random bits, so a plain hash is enough).
pub fn recovery_hash(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    secret::sha256_hex(norm.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238, appendix B: the SHA-1 seed and its 8-digit codes; 6 digits are the last six.
    const SEED: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_test_vectors() {
        for (t, eight) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(code_at(SEED, t / STEP_SECONDS), eight % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn a_code_works_once_and_only_near_its_time() {
        let now = 1_234_567_890_000_000;
        let code = format!("{:06}", code_at(SEED, step_of(now)));
        let step = check(SEED, &code, now, None).expect("accepted");
        assert_eq!(check(SEED, &code, now, Some(step)), None, "replayed");
        // Thirty seconds late is still fine; two minutes is not.
        assert!(check(SEED, &code, now + 30_000_000, None).is_some());
        assert!(check(SEED, &code, now + 120_000_000, None).is_none());
        assert!(check(SEED, "12345", now, None).is_none());
        assert!(check(SEED, "abcdef", now, None).is_none());
    }

    #[test]
    fn secrets_and_uris_are_what_apps_expect() {
        assert_eq!(secret_text(SEED), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            secret_from_text("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            SEED
        );
        let uri = provisioning_uri("smartpark demo", "amy@p1", SEED);
        assert!(
            uri.starts_with("otpauth://totp/smartpark%20demo:amy%40p1?secret=GEZDG"),
            "{uri}"
        );
    }

    #[test]
    fn recovery_codes_hash_the_same_however_typed() {
        let code = recovery_code(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(code.len(), 19);
        assert_eq!(
            recovery_hash(&code),
            recovery_hash(&code.to_uppercase().replace('-', " "))
        );
        assert_ne!(recovery_hash(&code), recovery_hash("aaaa-bbbb-cccc-dddd"));
    }
}
