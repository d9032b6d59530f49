//! The PostgreSQL side: a connection with its prepared statements, parameters converted
//! to the types the server inferred for them, and columns read back as [`Value`]s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::value::Value;
use crate::{Error, Result};

type BoxError = Box<dyn StdError + Sync + Send>;

thread_local! {
    /// Set on threads where blocking is expected (the pool's and the writer's).
    static BLOCKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as one where blocking calls are expected.
pub fn mark_blocking_thread() {
    BLOCKING.with(|b| b.set(true));
}

/// Runs `f`, which blocks on the client's own runtime: directly on a blocking thread, on
/// a scoped thread of its own when called from an async task (where blocking on another
/// runtime would panic), as setup code and tests do.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if BLOCKING.with(|b| b.get()) || tokio::runtime::Handle::try_current().is_err() {
        f()
    } else {
        std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// A PostgreSQL session and the statements prepared on it.
pub struct PgConn {
    /// `None` only while being dropped.
    client: RefCell<Option<postgres::Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl PgConn {
    /// Connects to `url`. With `sslmode=require` the session is TLS (rustls), the server's
    /// certificate checked against the CA file `sslrootcert=PATH` names and against the
    /// host's name; without it, plain TCP (a server on the same host or a private link).
    pub fn connect(url: &str) -> Result<PgConn> {
        let (url, root_file) = take_param(url, "sslrootcert");
        let tls = url.contains("sslmode=require") || url.contains("sslmode=verify");
        let client = match (tls, root_file) {
            (true, Some(file)) => {
                let tls = MakeRustlsConnect::new(tls_config(&file)?);
                off_runtime(|| postgres::Client::connect(&url, tls))?
            }
            (true, None) => {
                return Err(Error::Conversion(
                    "sslmode=require needs sslrootcert=PATH, the CA certificate (PEM) that signed the server's".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(Error::Conversion(
                    "sslrootcert is given but sslmode=require is not: the connection would not use it".into(),
                ));
            }
            (false, None) => off_runtime(|| postgres::Client::connect(&url, postgres::NoTls))?,
        };
        Ok(PgConn {
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
        })
    }

    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut()
                .expect("the client is there until the connection is dropped")
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let mut guard = self.client();
        let client: &mut postgres::Client = &mut guard;
        let s = off_runtime(|| client.prepare(&placeholders(sql)))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() > 512 {
            cache.clear();
        }
        cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        let stmt = self.statement(sql)?;
        check_count(&stmt, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let mut guard = self.client();
        let client: &mut postgres::Client = &mut guard;
        let n = off_runtime(|| client.execute(&stmt, &refs))?;
        Ok(n as usize)
    }

    pub fn query(&self, sql: &str, params: &[Value]) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let stmt = self.statement(sql)?;
        check_count(&stmt, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let mut guard = self.client();
        let client: &mut postgres::Client = &mut guard;
        let rows = off_runtime(|| client.query(&stmt, &refs))?;
        let names = stmt
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                values.push(row.try_get::<_, Value>(i)?);
            }
            out.push(values);
        }
        Ok((names, out))
    }

    pub fn batch(&self, sql: &str) -> Result<()> {
        let mut guard = self.client();
        let client: &mut postgres::Client = &mut guard;
        off_runtime(|| client.batch_execute(sql))?;
        Ok(())
    }
}

impl Drop for PgConn {
    /// Closing the session blocks on the client's runtime too.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            off_runtime(move || drop(client));
        }
    }
}

/// A client TLS configuration (ring) trusting the certificates in the PEM file `file`.
fn tls_config(file: &str) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |e: String| Error::Conversion(format!("sslrootcert {file}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `url` without its query parameter `name`, and that parameter's value (percent-decoded).
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => {
                value = Some(percent_decode(v));
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_count(stmt: &postgres::Statement, params: &[Value]) -> Result<()> {
    if stmt.params().len() != params.len() {
        return Err(Error::Conversion(format!(
            "the statement takes {} parameters, {} given",
            stmt.params().len(),
            params.len()
        )));
    }
    Ok(())
}

/// SQLite's `?N` and `?` placeholders as PostgreSQL's `$N` (outside quotes).
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut next = 1;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

fn out_of_range(v: i64, ty: &Type) -> BoxError {
    format!("{v} does not fit the parameter's type {ty}").into()
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)
                    .map_err(|_| out_of_range(*i, ty))?
                    .to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)
                    .map_err(|_| out_of_range(*i, ty))?
                    .to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::NUMERIC => Err(format!("{i} bound to a numeric parameter: cast it").into()),
                _ => i.to_string().as_str().to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 if f.fract() == 0.0 => (*f as i64).to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL | Type::NUMERIC => {
                    Err(format!("{f} bound to a parameter of type {ty}").into())
                }
                _ => f.to_string().as_str().to_sql(ty, out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} bound to an integer parameter"))?
                    .to_sql(ty, out),
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("bytes bound to a parameter of type {ty}").into()),
            },
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Value, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::NUMERIC => numeric(raw)?,
            Type::JSONB => Value::Text(String::from_utf8(raw.get(1..).unwrap_or(&[]).to_vec())?),
            _ => Value::Text(String::from_utf8(raw.to_vec())?),
        })
    }

    fn from_sql_null(_ty: &Type) -> std::result::Result<Value, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// A NUMERIC (what PostgreSQL's `sum` of integers answers) as an integer when it is a
/// whole number that fits, as a real otherwise.
fn numeric(raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    let dscale = word(3)?;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut whole: i128 = 0;
    let mut real = 0.0f64;
    let mut exact = dscale == 0;
    for i in 0..ndigits {
        let d = word(4 + i)? as i128;
        let power = weight - i as i32;
        real += d as f64 * 10_000f64.powi(power);
        if power < 0 {
            exact &= d == 0;
        } else {
            whole = whole
                .checked_add(
                    d.checked_mul(10_000i128.checked_pow(power as u32).unwrap_or(0))
                        .unwrap_or(0),
                )
                .unwrap_or(i128::MAX);
        }
    }
    if negative {
        whole = -whole;
        real = -real;
    }
    match i64::try_from(whole) {
        Ok(i) if exact => Ok(Value::Integer(i)),
        _ => Ok(Value::Real(real)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_taken_out_of_the_url() {
        assert_eq!(
            take_param(
                "postgresql://u@h/db?sslmode=require&sslrootcert=%2Fca%20dir%2Fca.pem&x=1",
                "sslrootcert"
            ),
            (
                "postgresql://u@h/db?sslmode=require&x=1".to_string(),
                Some("/ca dir/ca.pem".to_string())
            )
        );
        assert_eq!(
            take_param("postgresql://u@h/db?sslrootcert=ca.pem", "sslrootcert"),
            (
                "postgresql://u@h/db".to_string(),
                Some("ca.pem".to_string())
            )
        );
        assert_eq!(
            take_param("postgresql://u@h/db", "x"),
            ("postgresql://u@h/db".to_string(), None)
        );
    }

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', \"a?\" FROM t WHERE x = ?12 AND y = ?"),
            "SELECT $1, '?2', \"a?\" FROM t WHERE x = $12 AND y = $1"
        );
    }

    #[test]
    fn numerics_read_as_integers_when_whole() {
        // 123456789 = 1*10000^2 + 2345*10000 + 6789
        let mut raw = Vec::new();
        for w in [3i16, 2, 0, 0, 1, 2345, 6789] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), Value::Integer(123_456_789));
        // -1.5 = -(1 + 5000/10000), scale 1
        let mut raw = Vec::new();
        for w in [2i16, 0, 0x4000, 1, 1, 5000] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), Value::Real(-1.5));
    }
}
