//! The online payment provider's wire format, as WeChat Pay's API v2 has it for merchants:
//! every message is a flat XML document (`<xml><field>value</field>…</xml>`, values usually
//! in CDATA) whose `sign` field is HMAC-SHA256, keyed by the merchant's API key, of the other
//! non-empty fields sorted by name and joined as `a=1&b=2`, with `&key=` and the key appended,
//! in upper-case hex (`sign_type` `HMAC-SHA256`).
//!
//! The hub signs its order requests and checks every notification with [`verify`] before it
//! reads anything else; the provider simulator in `device-sim` signs with [`sign`]. Parsing
//! refuses document types (no entity can be declared, so none expands), nesting, repeated
//! fields and documents over [`MAX_BYTES`].

use std::collections::BTreeMap;

use data_encoding::HEXUPPER;
use quick_xml::events::Event;
use ring::hmac;

use crate::identity::secret::constant_time_eq;

/// A message's fields by name.
pub type Fields = BTreeMap<String, String>;

/// The largest message read.
pub const MAX_BYTES: usize = 64 * 1024;
/// The most fields a message may have.
pub const MAX_FIELDS: usize = 64;
/// The signature's field.
pub const SIGN: &str = "sign";
/// The only signature type accepted.
pub const SIGN_TYPE: &str = "HMAC-SHA256";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message is over {MAX_BYTES} bytes")]
    TooLarge,
    #[error("the message is not the provider's XML: {0}")]
    Malformed(String),
    #[error("the message has no sign field")]
    Unsigned,
    #[error("sign_type {0:?} is not HMAC-SHA256")]
    SignType(String),
    #[error("the signature does not match the message")]
    BadSignature,
}

/// What is signed: the non-empty fields other than `sign`, sorted by name, `k=v` joined by
/// `&`, then `&key=` and the key.
fn signed_text(fields: &Fields, key: &str) -> String {
    let mut text = String::new();
    for (k, v) in fields {
        if k == SIGN || v.is_empty() {
            continue;
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('&');
    }
    text.push_str("key=");
    text.push_str(key);
    text
}

/// The signature of `fields` under the merchant's `key`.
pub fn sign(fields: &Fields, key: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    HEXUPPER.encode(hmac::sign(&k, signed_text(fields, key).as_bytes()).as_ref())
}

/// Adds `sign_type` and `sign` to `fields`.
pub fn signed(mut fields: Fields, key: &str) -> Fields {
    fields.insert("sign_type".into(), SIGN_TYPE.into());
    let s = sign(&fields, key);
    fields.insert(SIGN.into(), s);
    fields
}

/// Checks a message's signature (in time independent of where it differs).
pub fn verify(fields: &Fields, key: &str) -> Result<(), WireError> {
    let given = fields.get(SIGN).ok_or(WireError::Unsigned)?;
    match fields.get("sign_type").map(String::as_str) {
        Some(SIGN_TYPE) => {}
        other => return Err(WireError::SignType(other.unwrap_or("MD5").to_string())),
    }
    let expected = sign(fields, key);
    if constant_time_eq(expected.as_bytes(), given.to_ascii_uppercase().as_bytes()) {
        Ok(())
    } else {
        Err(WireError::BadSignature)
    }
}

/// The message as the provider's XML, each value in CDATA.
pub fn to_xml(fields: &Fields) -> String {
    let mut out = String::from("<xml>");
    for (k, v) in fields {
        out.push('<');
        out.push_str(k);
        out.push_str("><![CDATA[");
        // A CDATA section cannot hold its own end: split it across two.
        out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(k);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

fn field_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads a flat message. Fields' values may be text or CDATA; a field given twice, a nested
/// element, a document type or anything outside `<xml>` is refused.
pub fn from_xml(text: &str) -> Result<Fields, WireError> {
    if text.len() > MAX_BYTES {
        return Err(WireError::TooLarge);
    }
    let bad = |m: String| WireError::Malformed(m);
    let mut reader = quick_xml::Reader::from_str(text);
    let mut fields = Fields::new();
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::Decl(_) | Event::Comment(_) => {}
            Event::DocType(_) => return Err(bad("a document type is not accepted".into())),
            Event::PI(_) => return Err(bad("processing instructions are not accepted".into())),
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                depth += 1;
                match depth {
                    1 if name == "xml" && !seen_root => seen_root = true,
                    1 => return Err(bad(format!("the root is <{name}>, not one <xml>"))),
                    2 if field_name_ok(&name) => current = Some((name, String::new())),
                    2 => return Err(bad(format!("{name:?} is not a field name"))),
                    _ => return Err(bad("fields do not nest".into())),
                }
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_string();
                if depth != 1 || !field_name_ok(&name) {
                    return Err(bad(format!("<{name}/> is out of place")));
                }
                if fields.insert(name.clone(), String::new()).is_some() {
                    return Err(bad(format!("field {name} is given twice")));
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    let (name, value) = current.take().expect("a field is open at depth 2");
                    if fields.len() >= MAX_FIELDS {
                        return Err(bad(format!("more than {MAX_FIELDS} fields")));
                    }
                    if fields.insert(name.clone(), value).is_some() {
                        return Err(bad(format!("field {name} is given twice")));
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match current.as_mut() {
                    Some((_, v)) if depth == 2 => v.push_str(&content),
                    _ if content.trim().is_empty() => {}
                    _ => return Err(bad("text outside a field".into())),
                }
            }
            Event::CData(c) => match current.as_mut() {
                Some((_, v)) if depth == 2 => v.push_str(&c),
                _ => return Err(bad("CDATA outside a field".into())),
            },
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r)
                        .ok_or_else(|| bad(format!("entity &{}; is not defined", &*r)))?
                        .to_string(),
                };
                match current.as_mut() {
                    Some((_, v)) if depth == 2 => v.push_str(&ch),
                    _ => return Err(bad("a reference outside a field".into())),
                }
            }
            Event::Eof => break,
        }
    }
    if !seen_root || depth != 0 {
        return Err(bad("the document is not one complete <xml> element".into()));
    }
    Ok(fields)
}

/// Builds fields from pairs.
pub fn fields<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The answer a merchant gives a notification: `SUCCESS` stops the provider's retries,
/// anything else makes it send the notification again later.
pub fn answer(success: bool, message: &str) -> String {
    to_xml(&fields([
        (
            "return_code",
            if success { "SUCCESS" } else { "FAIL" }.into(),
        ),
        ("return_msg", message.to_string()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Fields {
        fields([
            ("appid", "wx0000000000000001".into()),
            ("mch_id", "1900000109".into()),
            ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into()),
            ("out_trade_no", "20261208-e1-1".into()),
            ("total_fee", "12345".into()),
            ("body", "园区账单 <2026-11>".into()),
            ("attach", String::new()),
        ])
    }

    #[test]
    fn the_signed_text_is_sorted_skips_empty_values_and_ends_with_the_key() {
        assert_eq!(
            signed_text(&order(), "K"),
            "appid=wx0000000000000001&body=园区账单 <2026-11>&mch_id=1900000109&nonce_str=5K8264ILTKCH16CQ2502SI8ZNMTM67VS&out_trade_no=20261208-e1-1&total_fee=12345&key=K"
        );
    }

    #[test]
    fn a_signature_checks_only_under_its_key_and_for_its_fields() {
        let m = signed(order(), "merchant-key");
        assert_eq!(m["sign"].len(), 64);
        assert_eq!(verify(&m, "merchant-key"), Ok(()));
        assert_eq!(verify(&m, "another-key"), Err(WireError::BadSignature));
        let mut changed = m.clone();
        changed.insert("total_fee".into(), "1".into());
        assert_eq!(
            verify(&changed, "merchant-key"),
            Err(WireError::BadSignature)
        );
        let mut unsigned = m.clone();
        unsigned.remove("sign");
        assert_eq!(verify(&unsigned, "merchant-key"), Err(WireError::Unsigned));
        let mut md5 = m.clone();
        md5.insert("sign_type".into(), "MD5".into());
        assert!(matches!(
            verify(&md5, "merchant-key"),
            Err(WireError::SignType(_))
        ));
        // Hex case does not matter to the provider's merchants.
        let mut lower = m;
        let s = lower["sign"].to_ascii_lowercase();
        lower.insert("sign".into(), s);
        assert_eq!(verify(&lower, "merchant-key"), Ok(()));
    }

    #[test]
    fn messages_go_through_xml_unchanged() {
        let mut m = signed(order(), "k");
        m.insert("detail".into(), "a]]>b & <c>".into());
        let text = to_xml(&m);
        assert_eq!(from_xml(&text).unwrap(), m);
        let plain = "<?xml version=\"1.0\"?>\n<xml>\n  <return_code>SUCCESS</return_code>\n  <n>1 &lt; 2 &#x4E2D;</n><e/></xml>";
        let f = from_xml(plain).unwrap();
        assert_eq!(f["return_code"], "SUCCESS");
        assert_eq!(f["n"], "1 < 2 中");
        assert_eq!(f["e"], "");
    }

    #[test]
    fn hostile_or_broken_documents_are_refused() {
        for text in [
            "",
            "<xml>",
            "<xml><a>1</a>",
            "<root><a>1</a></root>",
            "<xml><a><b>1</b></a></xml>",
            "<xml><a>1</a><a>2</a></xml>",
            "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><a>&e;</a></xml>",
            "<xml><a>&e;</a></xml>",
            "<xml>text<a>1</a></xml>",
            "<xml><a>1</a></xml><xml></xml>",
            "<xml><bad-name>1</bad-name></xml>",
        ] {
            assert!(from_xml(text).is_err(), "accepted {text:?}");
        }
        let huge = format!("<xml><a>{}</a></xml>", "x".repeat(MAX_BYTES));
        assert_eq!(from_xml(&huge), Err(WireError::TooLarge));
        let many: String = (0..=MAX_FIELDS)
            .map(|i| format!("<f{i}>1</f{i}>"))
            .collect();
        assert!(from_xml(&format!("<xml>{many}</xml>")).is_err());
    }

    #[test]
    fn the_answer_tells_the_provider_to_stop_or_retry() {
        assert_eq!(
            from_xml(&answer(true, "OK")).unwrap()["return_code"],
            "SUCCESS"
        );
        assert_eq!(
            from_xml(&answer(false, "unknown order")).unwrap()["return_code"],
            "FAIL"
        );
    }
}
