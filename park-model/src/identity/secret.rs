//! Secrets at rest and on screen: random tokens and the hashes they are stored as, keyed
//! digests (HMAC-SHA256) for values that must be matched but never kept (card numbers, QR
//! values, PINs), AES-256-GCM sealing for values that must be read back (phone and ID
//! numbers, TOTP secrets), and masking for display.
//!
//! Randomness is an argument: the binaries draw it from the operating system.

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use ring::{aead, digest, hmac};

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(&sha256(bytes))
}

/// A bearer secret (a session's cookie value, an API token, a CSRF token): 32 random bytes
/// as URL-safe base64, with a prefix that says what it is.
pub fn token(prefix: &str, random: &[u8; 32]) -> String {
    format!("{prefix}{}", BASE64URL_NOPAD.encode(random))
}

/// How a bearer secret is stored and looked up: its SHA-256 (the secret has 256 random
/// bits, so a slow hash adds nothing).
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// [`token_hash`] written into `buf`, for lookups on every request without an allocation.
pub fn token_hash_into<'a>(token: &str, buf: &'a mut [u8; 64]) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in sha256(token.as_bytes()).iter().enumerate() {
        buf[2 * i] = HEX[(b >> 4) as usize];
        buf[2 * i + 1] = HEX[(b & 15) as usize];
    }
    std::str::from_utf8(buf).expect("hex digits are ASCII")
}

/// A keyed digest of `value` in `domain` (such as a credential kind): what is stored and
/// matched instead of a card number, QR value or PIN. 128 bits of HMAC-SHA256, URL-safe
/// base64, prefixed `h1:`. Without the key, a stored digest cannot be turned back into the
/// number, nor a guessed number checked against it.
pub fn keyed_digest(key: &[u8], domain: &str, value: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"smartpark-keyed-digest-v1\0");
    ctx.update(domain.as_bytes());
    ctx.update(b"\0");
    ctx.update(value.as_bytes());
    let tag = ctx.sign();
    format!("h1:{}", BASE64URL_NOPAD.encode(&tag.as_ref()[..16]))
}

/// Whether a stored value is already a keyed digest.
pub fn is_keyed_digest(v: &str) -> bool {
    v.len() == 25 && v.starts_with("h1:")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("sealed under key {0}, which is not loaded")]
    UnknownKey(String),
    #[error("the sealed value does not open: altered, or another key")]
    Corrupt,
}

/// An AES-256-GCM key for values at rest. Its id (the first 8 hex digits of the key's
/// SHA-256) is stored with every sealed value, so that a rotation can tell old from new.
pub struct SealKey {
    id: String,
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

pub const NONCE_LEN: usize = 12;

impl SealKey {
    pub fn new(bytes: &[u8; 32]) -> SealKey {
        let id = sha256_hex(bytes)[..8].to_string();
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, bytes).expect("a 32-byte AES-256 key"),
        );
        SealKey { id, key }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `enc1:KEYID:BASE64(nonce ‖ ciphertext ‖ tag)`. `aad` binds the value to where it is
    /// stored (a person's id and the field), so a sealed phone number moved to another row
    /// does not open there. The nonce must never repeat under one key: draw it at random.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &str, plaintext: &[u8]) -> String {
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seals any length the process can hold");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("enc1:{}:{}", self.id, BASE64URL_NOPAD.encode(&out))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let (id, body) = split_sealed(sealed)?;
        if id != self.id {
            return Err(SecretError::UnknownKey(id.to_string()));
        }
        let mut bytes = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| SecretError::Corrupt)?;
        if bytes.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(SecretError::Corrupt);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_bytes()),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SecretError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

fn split_sealed(sealed: &str) -> Result<(&str, &str), SecretError> {
    let rest = sealed.strip_prefix("enc1:").ok_or(SecretError::NotSealed)?;
    rest.split_once(':').ok_or(SecretError::NotSealed)
}

/// The id of the key a value was sealed under.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    split_sealed(sealed).ok().map(|(id, _)| id)
}

/// A phone number for display: the first three and last four digits (`138****5678`),
/// after a leading +86 country code.
pub fn mask_phone(phone: &str) -> String {
    let mut digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() == 13 && digits.starts_with("86") {
        digits.drain(..2);
    }
    if digits.len() < 8 {
        return "*".repeat(digits.len().max(4));
    }
    format!("{}****{}", &digits[..3], &digits[digits.len() - 4..])
}

/// An ID number for display: the first three and last four characters, the rest starred
/// (`110***********1234`).
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().filter(|c| !c.is_whitespace()).collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// The visible end of a secret number (a card's last four characters), for people to tell
/// their cards apart; empty for values too short to show any of safely.
pub fn visible_suffix(value: &str, keep: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < keep * 2 {
        return String::new();
    }
    chars[chars.len() - keep..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let k = SealKey::new(&[9; 32]);
        let other = SealKey::new(&[8; 32]);
        let s = k.seal([1; NONCE_LEN], "person:p-1:phone", b"13812345678");
        assert!(s.starts_with(&format!("enc1:{}:", k.id())), "{s}");
        assert!(!s.contains("1381234"));
        assert_eq!(k.open("person:p-1:phone", &s).unwrap(), b"13812345678");
        assert_eq!(
            k.open("person:p-2:phone", &s),
            Err(SecretError::Corrupt),
            "moved to another row"
        );
        assert!(matches!(
            other.open("person:p-1:phone", &s),
            Err(SecretError::UnknownKey(_))
        ));
        let mut tampered = s.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            k.open("person:p-1:phone", &tampered),
            Err(SecretError::Corrupt)
        );
        assert_eq!(sealed_key_id(&s), Some(k.id()));
        assert_eq!(k.open("x", "13812345678"), Err(SecretError::NotSealed));
    }

    #[test]
    fn masks_keep_the_ends_only() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+86 138 1234 5678"), "138****5678");
        assert_eq!(mask_phone("12345"), "*****");
        assert_eq!(mask_id_number("110101199003071234"), "110***********1234");
        assert_eq!(mask_id_number("12"), "****");
        assert_eq!(visible_suffix("04A1B2C3D4", 4), "C3D4");
        assert_eq!(visible_suffix("1234", 4), "");
    }

    #[test]
    fn keyed_digests_depend_on_key_domain_and_value() {
        let a = keyed_digest(b"k1", "card", "04A1B2C3");
        assert!(is_keyed_digest(&a), "{a}");
        assert_eq!(a, keyed_digest(b"k1", "card", "04A1B2C3"));
        assert_ne!(a, keyed_digest(b"k2", "card", "04A1B2C3"));
        assert_ne!(a, keyed_digest(b"k1", "qr", "04A1B2C3"));
        assert_ne!(a, keyed_digest(b"k1", "card", "04A1B2C4"));
        assert!(!a.contains("04A1B2C3"));
    }

    #[test]
    fn tokens_are_prefixed_and_stored_as_hashes() {
        let t = token("sps_", &[3; 32]);
        assert!(t.starts_with("sps_") && t.len() == 47, "{t}");
        assert_eq!(token_hash(&t).len(), 64);
        assert_eq!(token_hash_into(&t, &mut [0; 64]), token_hash(&t));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
