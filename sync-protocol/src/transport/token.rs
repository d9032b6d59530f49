//! One-time enrollment tokens: what `smartpark hub enroll` prints and `smartpark edge-enroll`
//! takes.
//!
//! A token is `SPK1.{ca}.{secret}`: the SHA-256 fingerprint of the operator's CA
//! certificate (so that a new edge can trust the hub on first contact) and 32 random bytes,
//! each in unpadded base64url. The hub stores only the SHA-256 of the secret, so its
//! database cannot be used to enroll. This module does not decide whether a token is
//! valid, used or expired: the hub's database does.

use std::fmt;

use ring::rand::SecureRandom as _;

use super::TransportError;
use super::pki::Fingerprint;

const PREFIX: &str = "SPK1";

/// An enrollment token. Its `Debug` form hides the secret; its `Display` form is the token
/// itself, to be shown once to the person enrolling and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    ca_fingerprint: Fingerprint,
    secret: [u8; 32],
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}",
            base64url(&self.ca_fingerprint.0),
            base64url(&self.secret)
        )
    }
}

impl EnrollmentToken {
    /// A fresh token for the CA with this fingerprint.
    pub fn generate(ca_fingerprint: Fingerprint) -> Result<EnrollmentToken, TransportError> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| TransportError::Certificate("the system random source failed".into()))?;
        Ok(EnrollmentToken {
            ca_fingerprint,
            secret,
        })
    }

    /// Parses a token as printed; surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<EnrollmentToken, TransportError> {
        let bad = TransportError::BadToken;
        let mut parts = text.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad("it does not start with SPK1."));
        }
        let fingerprint = parts
            .next()
            .and_then(unbase64url)
            .ok_or(bad("the CA fingerprint is not base64url"))?;
        let secret = parts
            .next()
            .and_then(unbase64url)
            .ok_or(bad("the secret is not base64url"))?;
        if parts.next().is_some() {
            return Err(bad("it has more than three parts"));
        }
        Ok(EnrollmentToken {
            ca_fingerprint: Fingerprint(
                fingerprint
                    .try_into()
                    .map_err(|_| bad("the CA fingerprint is not 32 bytes"))?,
            ),
            secret: secret
                .try_into()
                .map_err(|_| bad("the secret is not 32 bytes"))?,
        })
    }

    /// The fingerprint of the CA that the hub's certificate must chain to.
    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca_fingerprint
    }

    /// What the hub stores and looks tokens up by: the SHA-256 of the secret, in hex.
    pub fn secret_hash(&self) -> String {
        Fingerprint::of(&self.secret).to_string()
    }
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (PEM bodies).
pub(crate) fn base64_std(bytes: &[u8]) -> String {
    encode(bytes, STD, true)
}

fn base64url(bytes: &[u8]) -> String {
    encode(bytes, URL, false)
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = URL.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, so that every byte string has one spelling.
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_printed_and_its_debug_form_hides_the_secret() {
        let token = EnrollmentToken::generate(Fingerprint([7; 32])).unwrap();
        let text = token.to_string();
        assert!(text.starts_with("SPK1."), "{text}");
        assert_eq!(
            EnrollmentToken::parse(&format!(" {text}\n")).unwrap(),
            token
        );
        let debug = format!("{token:?}");
        assert!(!debug.contains(text.rsplit('.').next().unwrap()), "{debug}");
        assert_eq!(token.secret_hash().len(), 64);
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let good = EnrollmentToken::generate(Fingerprint([1; 32]))
            .unwrap()
            .to_string();
        for bad in [
            "",
            "SPK2.a.b",
            "SPK1.!!.x",
            &good[..good.len() - 2],
            &format!("{good}.x"),
        ] {
            assert!(
                matches!(
                    EnrollmentToken::parse(bad),
                    Err(TransportError::BadToken(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_matches_the_rfc_4648_examples() {
        for (raw, std, url) in [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_std(raw.as_bytes()), std);
            assert_eq!(base64url(raw.as_bytes()), url);
            assert_eq!(unbase64url(url).unwrap(), raw.as_bytes());
        }
    }
}
