//! Telemetry to a time-series engine: every raw sample the hub stores goes, in the order it
//! was stored, to an InfluxDB v2 write API (`POST /api/v2/write`, served by InfluxDB 2.x and
//! by VictoriaMetrics) as line protocol, from a durable cursor of the hub's own.
//!
//! **Nothing lost, nothing twice.** The cursor (`export_cursors`, the last `raw` row sent) is
//! moved only after the engine answered 2xx, so a hub killed at any point sends again from
//! the last acknowledged row: delivery is at least once. A resent point is the same
//! measurement, tags and timestamp as the first, which InfluxDB overwrites by design and
//! VictoriaMetrics collapses with `-dedup.minScrapeInterval=1ms`, so the engine holds each
//! sample once. An engine that is away, slow or refusing the token is retried with backoff;
//! samples wait in the hub meanwhile.
//!
//! **Bad lines.** An engine answering 400 refuses a batch because of lines it cannot take.
//! The batch is halved until the refused lines are alone; those are counted and skipped,
//! the others are written, so one bad sample never holds back the rest.
//!
//! **Why not the `influxdb2` crate** (the design card's choice): its last release (0.5.2,
//! 2024) brings reqwest 0.11, hyper 0.14 and OpenSSL, or with its `rustls` feature a second,
//! older rustls; the write API is one HTTP POST of text, which ureq (already used here) does
//! with the hub's own rustls and ring.
//!
//! The series: measurement `smartpark` (configurable), tags `park`, `building`, `device`
//! and `point`, fields `value` (numbers; booleans as 1 and 0), `text` (text values) and
//! `quality` (0 good, 1 uncertain, 2 bad, 3 stale), timestamps in microseconds.
//! VictoriaMetrics names them `smartpark_value`, `smartpark_quality`…

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use park_db::OptionalExtension as _;
use park_db::ValueRef;

use crate::metrics::Metrics;
use crate::store::{HubStore, VK_BOOL, VK_FLOAT, VK_INT, VK_TEXT, stored_float, stored_int};

/// The cursor's name in `export_cursors`.
const CURSOR: &str = "influx";
/// The longest wait between tries while the engine is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and how the hub writes telemetry (`[influx]` in its config).
#[derive(Debug, Clone)]
pub struct InfluxSettings {
    /// The engine's base URL, `http://host:8086` (InfluxDB) or `http://host:8428`
    /// (VictoriaMetrics).
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// A file holding the API token (`Authorization: Token …`), read at start so that the
    /// token is never in the config or a log; none for an engine without authentication.
    pub token_file: Option<PathBuf>,
    /// Certificates (PEM) to trust for an `https://` URL instead of the public roots.
    pub ca_file: Option<PathBuf>,
    pub measurement: String,
    /// Samples per request.
    pub batch_samples: usize,
}

/// The samples stored after `after` (a `raw` row id), at most `limit`, in the order they
/// were stored, as line protocol; with the last row id they cover.
pub fn read_batch(
    c: &park_db::Connection,
    measurement: &str,
    after: i64,
    limit: usize,
) -> park_db::Result<Option<(i64, Vec<String>)>> {
    let mut stmt = c.prepare_cached(
        "SELECT r.rowid, b.park, b.building, p.point, r.ts, r.value, r.q
         FROM raw r JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id
         WHERE r.rowid > ?1 ORDER BY r.rowid LIMIT ?2",
    )?;
    let mut rows = stmt.query(park_db::params![after, limit as i64])?;
    let mut lines = Vec::new();
    let mut last = None;
    while let Some(r) = rows.next()? {
        last = Some(r.get::<_, i64>(0)?);
        let point: String = r.get(3)?;
        let (device, name) = point.split_once('/').unwrap_or(("", point.as_str()));
        lines.push(line(
            measurement,
            &[
                ("park", &r.get::<_, String>(1)?),
                ("building", &r.get::<_, String>(2)?),
                ("device", device),
                ("point", name),
            ],
            r.get_ref(5)?,
            r.get(6)?,
            r.get(4)?,
        ));
    }
    Ok(last.map(|l| (l, lines)))
}

/// The row id after which export goes on: the stored cursor, or the start when the table
/// was emptied and begun again below it.
pub fn cursor(c: &park_db::Connection) -> park_db::Result<i64> {
    let stored: i64 = c
        .query_row(
            "SELECT position FROM export_cursors WHERE name = ?1",
            [CURSOR],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let newest: i64 = c.query_row("SELECT coalesce(max(rowid), 0) FROM raw", [], |r| r.get(0))?;
    Ok(if newest < stored { 0 } else { stored })
}

/// Samples stored but not yet acknowledged by the engine.
fn backlog(c: &park_db::Connection, after: i64) -> park_db::Result<i64> {
    c.query_row(
        "SELECT coalesce(max(rowid), 0) - ?1 FROM raw",
        [after],
        |r| r.get(0),
    )
}

/// One line of line protocol. Values are typed as stored (`q >> 4`, the store's `VK_*`
/// codes); a sample without a value carries its quality alone.
fn line(measurement: &str, tags: &[(&str, &str)], value: ValueRef<'_>, q: i64, ts: i64) -> String {
    let mut out = String::with_capacity(128);
    escape(&mut out, measurement, &[',', ' ']);
    for (k, v) in tags {
        if v.is_empty() {
            continue;
        }
        out.push(',');
        escape(&mut out, k, &[',', '=', ' ']);
        out.push('=');
        escape(&mut out, v, &[',', '=', ' ']);
    }
    out.push(' ');
    match (q >> 4, value) {
        (VK_BOOL, v) => {
            if let Some(i) = stored_int(v) {
                out.push_str(if i != 0 { "value=1.0," } else { "value=0.0," });
            }
        }
        // One type per field: every number goes as a float.
        (VK_INT, v) => {
            if let Some(i) = stored_int(v) {
                let _ = write!(out, "value={:?},", i as f64);
            }
        }
        (VK_FLOAT, v) => {
            if let Some(f) = stored_float(v).filter(|f| f.is_finite()) {
                let _ = write!(out, "value={f:?},");
            }
        }
        (VK_TEXT, ValueRef::Text(t)) => {
            out.push_str("text=\"");
            for ch in String::from_utf8_lossy(t).chars() {
                match ch {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(ch);
                    }
                    '\n' | '\r' => out.push(' '),
                    c => out.push(c),
                }
            }
            out.push_str("\",");
        }
        _ => {}
    }
    let _ = write!(out, "quality={}i {ts}", q & 0xf);
    out
}

/// Writes `text` with a backslash before each of `special`; line breaks, which no line may
/// hold, become spaces (escaped).
fn escape(out: &mut String, text: &str, special: &[char]) {
    for ch in text.chars() {
        let ch = if ch == '\n' || ch == '\r' { ' ' } else { ch };
        if special.contains(&ch) || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
}

/// What the engine said to a request.
#[derive(Debug, PartialEq)]
enum Answer {
    Written,
    /// 400: lines it cannot take.
    Refused(String),
    /// Anything else: try again later.
    Failed(String),
}

struct Engine {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl Engine {
    fn new(s: &InfluxSettings) -> anyhow::Result<Engine> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some(file) = &s.ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("cannot read influx.ca_file {}", file.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            anyhow::ensure!(
                !certs.is_empty(),
                "influx.ca_file {} holds no certificate",
                file.display()
            );
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        let token = match &s.token_file {
            None => None,
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read influx.token_file {}", file.display()))?;
                let token = text.trim().to_string();
                anyhow::ensure!(
                    !token.is_empty() && !token.contains(['\r', '\n']),
                    "influx.token_file {} must hold one token on one line",
                    file.display()
                );
                Some(token)
            }
        };
        let base = s.url.trim_end_matches('/');
        let query = |v: &str| {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        Ok(Engine {
            agent: config.build().new_agent(),
            url: format!(
                "{base}/api/v2/write?org={}&bucket={}&precision=us",
                query(&s.org),
                query(&s.bucket)
            ),
            token,
        })
    }

    /// Posts lines (blocking).
    fn write(&self, lines: &[String]) -> Answer {
        let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8");
        if let Some(t) = &self.token {
            request = request.header("Authorization", &format!("Token {t}"));
        }
        match request.send(body) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                if (200..300).contains(&status) {
                    return Answer::Written;
                }
                let text = r
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                if status == 400 {
                    Answer::Refused(text)
                } else {
                    Answer::Failed(format!("HTTP {status}: {text}"))
                }
            }
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    /// Writes `lines`, halving a refused batch until the refused lines are alone, which are
    /// skipped. Returns how many lines were skipped, or why the engine cannot be written
    /// now.
    fn write_all(&self, lines: &[String]) -> Result<u64, String> {
        match self.write(lines) {
            Answer::Written => Ok(0),
            Answer::Failed(why) => Err(why),
            Answer::Refused(why) if lines.len() == 1 => {
                tracing::warn!(line = %lines[0], reason = %why, "The time-series engine refused a sample; skipped.");
                Ok(1)
            }
            Answer::Refused(_) => {
                let (a, b) = lines.split_at(lines.len() / 2);
                Ok(self.write_all(a)? + self.write_all(b)?)
            }
        }
    }
}

/// Runs the export until the task is dropped: reads a batch after the cursor, writes it,
/// moves the cursor; waits for new commits when there is nothing left.
/// Exports while this hub holds the export's lease (hubs sharing a database export once).
pub async fn run(store: HubStore, settings: InfluxSettings, metrics: Arc<Metrics>, hub_id: String) {
    let engine = match Engine::new(&settings) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Telemetry export to the time-series engine cannot start.");
            return;
        }
    };
    let mut commits = store.subscribe_commits();
    let mut backoff = Duration::from_millis(500);
    let (measurement, limit) = (settings.measurement.clone(), settings.batch_samples.max(1));
    let mut lease_checked: Option<std::time::Instant> = None;
    loop {
        if lease_checked.is_none_or(|t| t.elapsed() >= crate::store::LEASE_RENEWAL) {
            match store.take_lease("job/influx-export".into(), &hub_id).await {
                Ok(true) => lease_checked = Some(std::time::Instant::now()),
                Ok(false) => {
                    lease_checked = None;
                    tokio::time::sleep(crate::store::LEASE_RENEWAL).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "Cannot take the export's lease; trying again.");
                    lease_checked = None;
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        let m = measurement.clone();
        let read = store
            .read(move |c| {
                let after = cursor(c)?;
                let pending = backlog(c, after)?;
                Ok((after, pending, read_batch(c, &m, after, limit)?))
            })
            .await;
        let (after, pending, batch) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read telemetry to export; trying again.");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        metrics
            .influx_backlog_samples
            .store(pending.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
        let Some((last, lines)) = batch else {
            // Nothing after the cursor: wait for the next commit (or a minute, in case a
            // commit came between the read and the wait).
            let _ = tokio::time::timeout(Duration::from_secs(60), commits.changed()).await;
            continue;
        };
        let full = lines.len() == limit;
        let count = lines.len() as u64;
        let e = engine.clone();
        let written = tokio::task::spawn_blocking(move || e.write_all(&lines))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match written {
            Ok(skipped) => {
                let moved = store
                    .admin(move |tx| {
                        tx.execute(
                            "INSERT INTO export_cursors (name, position) VALUES (?1, ?2)
                             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                            park_db::params![CURSOR, last],
                        )?;
                        Ok(())
                    })
                    .await;
                if let Err(e) = moved {
                    // Written but not recorded: sent again next time, which the engine
                    // takes as the same points.
                    tracing::warn!(error = %format!("{e:#}"), after, "Cannot record the export cursor; the batch will be sent again.");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Metrics::add(&metrics.influx_samples_written_total, count - skipped);
                Metrics::add(&metrics.influx_samples_refused_total, skipped);
                Metrics::add(&metrics.influx_requests_total, 1);
                backoff = Duration::from_millis(500);
                if !full {
                    let _ = tokio::time::timeout(Duration::from_secs(1), commits.changed()).await;
                }
            }
            Err(why) => {
                Metrics::add(&metrics.influx_errors_total, 1);
                tracing::warn!(reason = %why, retry_in_ms = backoff.as_millis() as u64, "The time-series engine cannot be written; samples wait in the hub.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_names_and_type_values() {
        use sync_protocol::Value;
        // Each value as the store keeps it (`encode_value`), then as the engine gets it.
        let stored = |v: Option<Value>, quality: i64| {
            let (value, kind) = crate::store::encode_value(&v);
            (value, (kind << 4) | quality)
        };
        let tags = [
            ("park", "p 1"),
            ("building", "b,1"),
            ("device", "m=1"),
            ("point", "kw"),
        ];
        let line_of = |v: Option<Value>, quality: i64, tags: &[(&str, &str)]| {
            let (value, q) = stored(v, quality);
            line("smartpark", tags, value.as_ref(), q, 5)
        };
        assert_eq!(
            line_of(Some(Value::Float(1.5)), 0, &tags),
            r"smartpark,park=p\ 1,building=b\,1,device=m\=1,point=kw value=1.5,quality=0i 5"
        );
        // One type per field: integers, whole floats and booleans all go as floats.
        assert_eq!(
            line_of(Some(Value::Int(7)), 1, &tags[3..]),
            "smartpark,point=kw value=7.0,quality=1i 5"
        );
        assert_eq!(
            line_of(Some(Value::Float(3.0)), 0, &tags[3..]),
            "smartpark,point=kw value=3.0,quality=0i 5"
        );
        assert_eq!(
            line_of(Some(Value::Bool(true)), 0, &tags[3..]),
            "smartpark,point=kw value=1.0,quality=0i 5"
        );
        assert_eq!(
            line_of(Some(Value::Text("say \"hi\"\n".into())), 0, &tags[3..]),
            r#"smartpark,point=kw text="say \"hi\" ",quality=0i 5"#
        );
        // A bad sample without a value still tells its quality.
        assert_eq!(
            line_of(None, 2, &tags[3..]),
            "smartpark,point=kw quality=2i 5"
        );
        // A value that is not finite is left out, its quality kept.
        assert_eq!(
            line_of(Some(Value::Float(f64::NAN)), 2, &tags[3..]),
            "smartpark,point=kw quality=2i 5"
        );
    }
}
