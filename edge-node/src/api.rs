//! The LAN API under `/api/v1`, plus `/health`, `/ready` and `/metrics`.
//!
//! Every error is JSON of the form `{"code", "message", "details", "traceId"}`; bad input
//! (unknown point, malformed body, out-of-range query) is a 4xx that names what was wrong
//! and is counted, never a panic. Point writes are audited whether they succeed or fail.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use device_drivers::{DeviceStatus, PointKey, Sample, Value, WriteError, WriteRequest, now_micros};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::node::{Devices, device_points, point_source};
use crate::rollup::Level;
use crate::store::{AuditEntry, Store};

#[derive(Clone)]
pub struct ApiState {
    pub park: String,
    pub building: String,
    pub store: Store,
    pub devices: Devices,
    pub metrics: Arc<Metrics>,
    pub park_service: Option<crate::park::ParkService>,
    pub alarms: crate::alarms::Alarms,
    /// The uplink's state, when a hub is configured.
    pub sync: Option<Arc<crate::sync::SyncStatus>>,
}

/// An API error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Json_,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Json_::Null,
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "API request failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed inside the node; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "details": self.details, "traceId": trace_id()});
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), "invalid_body", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

fn trace_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/site", get(site))
        .route("/devices", get(list_devices))
        .route("/devices/{id}", get(get_device))
        .route("/points", get(list_points))
        .route("/points/{device}/{point}", get(get_point))
        .route("/points/{device}/{point}/history", get(history))
        .route("/points/{device}/{point}/write", post(write_point))
        .route("/stream", get(stream))
        .route("/audit", get(audit))
        .route("/events", get(list_events))
        .route("/sync", get(sync_status))
        .route("/doors", get(list_doors))
        .route("/doors/{id}/open", post(open_door))
        .route("/lots", get(list_lots))
        .route("/parking/sessions", get(list_sessions))
        .route("/parking/review", get(list_review))
        .route("/parking/review/{id}", post(resolve_review))
        .route("/credentials", post(put_credential))
        .route("/credentials/{id}/status", post(credential_status))
        .route("/passes", post(put_pass))
        .route("/passes/{id}/status", post(pass_status))
        .route("/store", get(store_stats))
        .route("/alarms", get(list_alarms))
        .route("/alarms/{id}", get(get_alarm))
        .route("/alarms/{id}/acknowledge", post(acknowledge_alarm))
        .route("/alarms/{id}/shelve", post(shelve_alarm))
        .route("/alarms/{id}/unshelve", post(unshelve_alarm))
        .route("/alarms/{id}/comment", post(comment_alarm))
        .route("/rules", get(list_rules))
        .route("/rules/reload", post(reload_rules));
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    s.metrics.http_requests_total.fetch_add(1, Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    if res.status().is_client_error() {
        s.metrics.http_client_errors_total.fetch_add(1, Relaxed);
        s.metrics.invalid_input("http_request");
        tracing::debug!(%method, %path, status = res.status().as_u16(), "Refused an HTTP request.");
    }
    res
}

async fn ready(State(s): State<ApiState>) -> Response {
    match s.store.health() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store is not committing: {reason}"),
        )
        .into_response(),
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let online: Vec<(String, f64)> = s
        .devices
        .values()
        .map(|d| {
            let up = matches!(d.status().0, DeviceStatus::Online);
            (
                format!(
                    "{{device=\"{}\",protocol=\"{}\"}}",
                    d.spec.id,
                    d.spec.protocol_name()
                ),
                if up { 1.0 } else { 0.0 },
            )
        })
        .collect();
    let body = s.metrics.render(&[(
        "smartpark_edge_device_online",
        "Whether a device is online (1) or not (0).",
        online,
    )]);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

async fn site(State(s): State<ApiState>) -> Json<Json_> {
    let points: usize = s
        .devices
        .values()
        .map(|d| d.spec.profile.points.len())
        .sum();
    Json(
        json!({"park": s.park, "building": s.building, "devices": s.devices.len(), "points": points, "now": now_micros()}),
    )
}

fn status_json(status: &DeviceStatus, since: i64) -> Json_ {
    match status {
        DeviceStatus::Online => json!({"state": "online", "since": since}),
        DeviceStatus::Offline { reason } => {
            json!({"state": "offline", "reason": reason.as_ref(), "since": since})
        }
    }
}

fn device_json(d: &crate::node::DeviceEntry) -> Json_ {
    let (status, since) = d.status();
    let p = &d.spec.profile;
    json!({
        "id": d.spec.id,
        "name": d.spec.name,
        "protocol": d.spec.protocol_name(),
        "profile": p.id,
        "manufacturer": p.manufacturer,
        "model": p.model,
        "status": status_json(&status, since),
        "points": p.points.len(),
        "pollIntervalMs": d.spec.poll_interval.as_millis() as u64,
    })
}

async fn list_devices(State(s): State<ApiState>) -> Json<Json_> {
    Json(json!({"devices": s.devices.values().map(device_json).collect::<Vec<_>>()}))
}

async fn get_device(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Json_>> {
    let d = s
        .devices
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device {id:?}")))?;
    let mut body = device_json(d);
    let points: Vec<Json_> = device_points(&d.spec)
        .map(|(key, p)| point_json(&s.store, &key, p))
        .collect();
    body["pointList"] = Json_::Array(points);
    Ok(Json(body))
}

pub fn sample_json(s: &Sample) -> Json_ {
    json!({
        "ts": s.ts,
        "value": s.value.as_ref().map(Value::to_json),
        "quality": s.quality.name(),
        "reason": s.quality.reason(),
    })
}

fn point_json(store: &Store, key: &PointKey, p: &device_drivers::profile::PointSpec) -> Json_ {
    let latest = store.latest_of(key);
    json!({
        "key": key.as_str(),
        "device": key.device(),
        "name": p.name,
        "unit": p.unit,
        "kind": format!("{:?}", p.kind).to_lowercase(),
        "writable": p.writable,
        "min": p.min,
        "max": p.max,
        "source": point_source(p),
        "latest": latest.as_ref().map(sample_json),
    })
}

async fn list_points(State(s): State<ApiState>) -> Json<Json_> {
    let points: Vec<Json_> = s
        .devices
        .values()
        .flat_map(|d| {
            device_points(&d.spec)
                .map(|(k, p)| point_json(&s.store, &k, p))
                .collect::<Vec<_>>()
        })
        .collect();
    Json(json!({"points": points}))
}

fn find_point<'a>(
    s: &'a ApiState,
    device: &str,
    point: &str,
) -> ApiResult<(
    PointKey,
    &'a device_drivers::profile::PointSpec,
    &'a crate::node::DeviceEntry,
)> {
    let d = s
        .devices
        .get(device)
        .ok_or_else(|| ApiError::not_found(format!("no device {device:?}")))?;
    let p =
        d.spec.profile.point(point).ok_or_else(|| {
            ApiError::not_found(format!("device {device:?} has no point {point:?}"))
        })?;
    Ok((PointKey::new(device, point), p, d))
}

async fn get_point(
    State(s): State<ApiState>,
    Path((device, point)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    let (key, p, _) = find_point(&s, &device, &point)?;
    Ok(Json(point_json(&s.store, &key, p)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Microseconds since the Unix epoch; defaults to one hour before `to`.
    from: Option<i64>,
    /// Microseconds since the Unix epoch; defaults to now.
    to: Option<i64>,
    /// `raw`, `1m`, `15m`, `1h` or `auto` (the default).
    resolution: Option<String>,
    limit: Option<usize>,
}

/// Picks the finest resolution that keeps a range to a few thousand rows.
fn auto_resolution(span: i64) -> &'static str {
    const HOUR: i64 = 3_600_000_000;
    match span {
        s if s <= 2 * HOUR => "raw",
        s if s <= 48 * HOUR => "1m",
        s if s <= 31 * 24 * HOUR => "15m",
        _ => "1h",
    }
}

async fn history(
    State(s): State<ApiState>,
    Path((device, point)): Path<(String, String)>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let (key, _, _) = find_point(&s, &device, &point)?;
    let to = q.to.unwrap_or_else(now_micros);
    let from = q.from.unwrap_or(to - 3_600_000_000);
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    let limit = q.limit.unwrap_or(10_000);
    if limit == 0 || limit > 100_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 100000"));
    }
    let resolution = match q.resolution.as_deref().unwrap_or("auto") {
        "auto" => auto_resolution(to - from),
        r @ ("raw" | "1m" | "15m" | "1h") => r,
        other => {
            return Err(ApiError::bad_request(format!(
                "resolution {other:?} is not one of raw, 1m, 15m, 1h, auto"
            )));
        }
    };
    let rows: Vec<Json_> = if resolution == "raw" {
        s.store
            .raw_history(&key, from, to, limit)
            .await
            .map_err(ApiError::internal)?
            .iter()
            .map(sample_json)
            .collect()
    } else {
        let level = match resolution {
            "1m" => Level::M1,
            "15m" => Level::M15,
            _ => Level::H1,
        };
        let f = |x: f64| x.is_finite().then_some(x);
        s.store
            .rollup_history(&key, level, level.bucket(from), to, limit)
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|(bucket, a)| {
                json!({"bucket": bucket, "min": f(a.min), "max": f(a.max), "avg": a.avg(), "last": f(a.last), "count": a.count, "delta": a.delta, "bad": a.bad})
            })
            .collect()
    };
    Ok(Json(
        json!({"point": key.as_str(), "from": from, "to": to, "resolution": resolution, "rows": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    value: Json_,
    /// Who asks, for the audit log.
    actor: Option<String>,
    reason: Option<String>,
}

async fn write_point(
    State(s): State<ApiState>,
    Path((device, point)): Path<(String, String)>,
    body: Result<Json<WriteBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(body) = body?;
    let (key, p, d) = find_point(&s, &device, &point)?;
    s.metrics.point_writes_total.fetch_add(1, Relaxed);
    let actor = body.actor.clone().unwrap_or_else(|| "api".into());
    let detail = json!({"value": body.value, "reason": body.reason}).to_string();
    let outcome = do_write(p, d, &body.value).await;
    let outcome_text = match &outcome {
        Ok(v) => format!("ok: read back {v}"),
        Err(e) => format!("refused: {}", e.message),
    };
    let entry = AuditEntry {
        ts: now_micros(),
        actor,
        action: "point_write".into(),
        target: key.as_str().to_string(),
        detail,
        outcome: outcome_text,
    };
    s.store.audit(entry).await.map_err(ApiError::internal)?;
    match outcome {
        Ok(v) => Ok(Json(
            json!({"point": key.as_str(), "value": v.to_json(), "verified": true}),
        )),
        Err(e) => {
            s.metrics.point_write_failures_total.fetch_add(1, Relaxed);
            Err(e)
        }
    }
}

async fn do_write(
    p: &device_drivers::profile::PointSpec,
    d: &crate::node::DeviceEntry,
    value: &Json_,
) -> ApiResult<Value> {
    if !p.writable {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_writable",
            format!("point {} is not writable", p.name),
        ));
    }
    let value = match value {
        Json_::Bool(b) => Value::Bool(*b),
        Json_::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| ApiError::bad_request("value is not a finite number"))?,
            ),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "value must be a number or a boolean, not {other}"
            )));
        }
    };
    let writer = d.writer().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_writable",
            format!("device {} takes no writes", d.spec.id),
        )
    })?;
    let (reply, rx) = oneshot::channel();
    writer
        .send(WriteRequest {
            point: p.name.clone(),
            value,
            reply,
        })
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "driver_stopped",
                "the device driver has stopped",
            )
        })?;
    let result = tokio::time::timeout(d.spec.timeout * 4 + Duration::from_secs(2), rx)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the device did not confirm the write in time",
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "driver_stopped",
                "the device driver has stopped",
            )
        })?;
    result.map_err(|e| {
        let (status, code) = match &e {
            WriteError::UnknownPoint(_) => (StatusCode::NOT_FOUND, "not_found"),
            WriteError::NotWritable(_) => (StatusCode::CONFLICT, "not_writable"),
            WriteError::OutOfRange { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "out_of_range"),
            WriteError::Offline(_) | WriteError::DriverStopped => {
                (StatusCode::SERVICE_UNAVAILABLE, "device_offline")
            }
            WriteError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            WriteError::Refused(_) | WriteError::VerifyFailed { .. } => {
                (StatusCode::BAD_GATEWAY, "device_refused")
            }
        };
        ApiError::new(status, code, e.to_string())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated point keys (`device/point`); all points when left out.
    points: Option<String>,
}

async fn stream(
    State(s): State<ApiState>,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let Query(q) = q?;
    let filter: Option<HashSet<String>> = match q.points {
        None => None,
        Some(list) => {
            let mut set = HashSet::new();
            for k in list.split(',').filter(|k| !k.is_empty()) {
                if PointKey::parse(k).is_none() {
                    return Err(ApiError::bad_request(format!(
                        "{k:?} is not a point key of the form device/point"
                    )));
                }
                set.insert(k.to_string());
            }
            Some(set)
        }
    };
    let mut rx = s.store.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(batch) => {
                    let items: Vec<Json_> = batch
                        .iter()
                        .filter(|x| filter.as_ref().is_none_or(|f| f.contains(x.point.as_str())))
                        .map(|x| {
                            let mut j = sample_json(x);
                            j["point"] = Json_::String(x.point.to_string());
                            j
                        })
                        .collect();
                    if items.is_empty() {
                        continue;
                    }
                    let ev = Event::default()
                        .event("samples")
                        .data(Json_::Array(items).to_string());
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let ev = Event::default()
                        .event("lagged")
                        .data(json!({"skipped_batches": n}).to_string());
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task through a small channel; the task ends when the client leaves.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// A kind (`access.decision`) or a family (`access`, `parking`).
    kind: Option<String>,
    /// A door or lane id.
    subject: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    /// Page backwards: only events older than this sequence number.
    before: Option<i64>,
    limit: Option<usize>,
}

/// Access and parking logs, newest first, with filters.
async fn list_events(
    State(s): State<ApiState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let query = crate::events::EventQuery {
        kind: q.kind,
        subject: q.subject,
        from: q.from,
        to: q.to,
        before_seq: q.before,
        limit,
    };
    let rows = crate::events::query(&s.store, query)
        .await
        .map_err(ApiError::internal)?;
    let next = rows.last().map(|(seq, _)| *seq);
    let events: Vec<Json_> = rows
        .into_iter()
        .map(|(seq, e)| json!({"seq": seq, "id": e.id, "ts": e.ts, "kind": e.kind, "subject": e.subject, "body": e.body}))
        .collect();
    Ok(Json(json!({"events": events, "before": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(
    State(s): State<ApiState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100).min(10_000) as i64;
    let rows = s
        .store
        .read(move |c| {
            let mut stmt = c.prepare("SELECT id, ts, actor, action, target, detail, outcome FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit], |r| {
                Ok(json!({
                    "id": r.get::<_, i64>(0)?, "ts": r.get::<_, i64>(1)?, "actor": r.get::<_, String>(2)?,
                    "action": r.get::<_, String>(3)?, "target": r.get::<_, String>(4)?,
                    "detail": r.get::<_, String>(5)?, "outcome": r.get::<_, String>(6)?,
                }))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"entries": rows})))
}

/// What the store holds: committed totals and raw samples per point. Tests use it to check
/// that nothing reported stored is lost across a crash.
async fn store_stats(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    let counts = s.store.counts().await.map_err(ApiError::internal)?;
    let m = &s.metrics;
    Ok(Json(json!({
        "samplesCommitted": m.samples_committed_total.load(Relaxed),
        "bytes": m.store_bytes.load(Relaxed),
        "budgetBytes": m.store_budget_bytes.load(Relaxed),
        "rawSamplesPerPoint": counts,
        "healthy": s.store.health().is_ok(),
    })))
}

fn park(s: &ApiState) -> ApiResult<&crate::park::ParkService> {
    s.park_service.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node does not decide doors and barriers (business.enabled is off)",
        )
    })
}

impl From<crate::park::ParkError> for ApiError {
    fn from(e: crate::park::ParkError) -> Self {
        match e {
            crate::park::ParkError::NotFound(m) => ApiError::not_found(m),
            crate::park::ParkError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            crate::park::ParkError::Store(e) => ApiError::internal(e),
        }
    }
}

/// Records a facility engineer's action in the audit log, whatever its outcome.
async fn audited<T>(
    s: &ApiState,
    actor: &str,
    action: &str,
    target: &str,
    detail: Json_,
    result: ApiResult<T>,
) -> ApiResult<T> {
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused: {}", e.message),
    };
    let entry = AuditEntry {
        ts: now_micros(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
        outcome,
    };
    s.store.audit(entry).await.map_err(ApiError::internal)?;
    result
}

async fn list_doors(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    Ok(Json(park(&s)?.doors()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualOpen {
    reason: String,
    actor: String,
}

fn need_text(field: &str, v: &str) -> ApiResult<()> {
    if v.trim().is_empty() || v.len() > 500 {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to 500 characters"
        )));
    }
    Ok(())
}

async fn open_door(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ManualOpen>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("reason", &b.reason)?;
    need_text("actor", &b.actor)?;
    let result = match park(&s) {
        Ok(p) => p
            .manual_open(&id, &b.reason, &b.actor)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let out = audited(
        &s,
        &b.actor,
        "door_manual_open",
        &id,
        json!({"reason": b.reason}),
        result,
    )
    .await?;
    Ok(Json(out))
}

async fn list_lots(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    Ok(Json(park(&s)?.lots()))
}

async fn list_sessions(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    Ok(Json(park(&s)?.sessions()))
}

async fn list_review(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    Ok(Json(park(&s)?.review_queue()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Review {
    admit: bool,
    /// The plate as the person reads it, when the camera got it wrong.
    plate: Option<String>,
    actor: String,
}

async fn resolve_review(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<Review>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("actor", &b.actor)?;
    if let Some(p) = &b.plate {
        let n = crate::field::normalize_plate(p);
        if n.is_empty() || n.chars().count() > 12 {
            return Err(ApiError::bad_request(format!("{p:?} is not a plate")));
        }
    }
    let result = match park(&s) {
        Ok(p) => p
            .resolve_review(&id, b.plate.as_deref(), b.admit, &b.actor)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let out = audited(
        &s,
        &b.actor,
        "plate_review",
        &id,
        json!({"admit": b.admit, "plate": b.plate}),
        result,
    )
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    id: String,
    person_id: String,
    kind: String,
    value: String,
    valid_from: Option<i64>,
    valid_to: Option<i64>,
    actor: String,
}

async fn put_credential(
    State(s): State<ApiState>,
    body: Result<Json<NewCredential>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("actor", &b.actor)?;
    let kind = b
        .kind
        .parse::<park_model::directory::CredentialKind>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "kind {:?} is not one of card, qr, pin, plate",
                b.kind
            ))
        })?;
    let c = park_model::directory::Credential {
        id: b.id.clone(),
        person_id: b.person_id.clone(),
        kind,
        value: b.value.clone(),
        status: park_model::directory::CredentialStatus::Active,
        valid_from: b.valid_from,
        valid_to: b.valid_to,
    };
    let result = match park(&s) {
        Ok(p) => p.put_credential(c).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let detail = json!({"person": b.person_id, "kind": b.kind, "validFrom": b.valid_from, "validTo": b.valid_to});
    Ok(Json(
        audited(&s, &b.actor, "credential_put", &b.id, detail, result).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
    actor: String,
    reason: Option<String>,
}

async fn credential_status(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("actor", &b.actor)?;
    let status = b
        .status
        .parse::<park_model::directory::CredentialStatus>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "status {:?} is not one of active, suspended, lost",
                b.status
            ))
        })?;
    let result = match park(&s) {
        Ok(p) => p
            .set_credential_status(&id, status)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(
        audited(
            &s,
            &b.actor,
            "credential_status",
            &id,
            json!({"status": b.status, "reason": b.reason}),
            result,
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPass {
    id: String,
    plate: String,
    kind: String,
    lot_ids: Vec<String>,
    valid_from: i64,
    valid_to: i64,
    enterprise_id: Option<String>,
    actor: String,
}

async fn put_pass(
    State(s): State<ApiState>,
    body: Result<Json<NewPass>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("actor", &b.actor)?;
    let kind = b
        .kind
        .parse::<park_model::parking::PassKind>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "kind {:?} is not one of monthly, enterprise_allowance, visitor",
                b.kind
            ))
        })?;
    let pass = park_model::parking::Pass {
        id: b.id.clone(),
        plate: crate::field::normalize_plate(&b.plate),
        kind,
        lot_ids: b.lot_ids.clone(),
        valid_from: b.valid_from,
        valid_to: b.valid_to,
        status: park_model::parking::PassStatus::Active,
        enterprise_id: b.enterprise_id.clone(),
    };
    let result = match park(&s) {
        Ok(p) => p.put_pass(pass).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let detail =
        json!({"plate": b.plate, "kind": b.kind, "lots": b.lot_ids, "validTo": b.valid_to});
    Ok(Json(
        audited(&s, &b.actor, "pass_put", &b.id, detail, result).await?,
    ))
}

async fn pass_status(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("actor", &b.actor)?;
    let status = b
        .status
        .parse::<park_model::parking::PassStatus>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "status {:?} is not one of active, suspended",
                b.status
            ))
        })?;
    let result = match park(&s) {
        Ok(p) => p.set_pass_status(&id, status).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(
        audited(
            &s,
            &b.actor,
            "pass_status",
            &id,
            json!({"status": b.status, "reason": b.reason}),
            result,
        )
        .await?,
    ))
}

/// Whether the hub is connected (truthfully: the session's heartbeats decide), what it has
/// acknowledged, and what is still waiting to go.
async fn sync_status(State(s): State<ApiState>) -> Json<Json_> {
    Json(match &s.sync {
        Some(status) => status.to_json(),
        None => json!({"configured": false, "connected": false}),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmQuery {
    /// `active_unacked`, `active_acked`, `cleared_unacked`, `normal`.
    state: Option<String>,
    /// `P0`, `P1`, `P2`.
    severity: Option<String>,
    /// Sources starting with this, such as `ahu-1/`.
    source: Option<String>,
    rule: Option<String>,
    /// Also list alarms folded into a storm summary.
    include_folded: Option<bool>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> ApiResult<T> {
    serde_json::from_value(Json_::String(v.to_string()))
        .map_err(|_| ApiError::bad_request(format!("{what} {v:?} is not known")))
}

async fn list_alarms(
    State(s): State<ApiState>,
    q: Result<Query<AlarmQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let filter = rules_engine::AlarmFilter {
        state: q
            .state
            .as_deref()
            .map(|v| parse_enum("state", v))
            .transpose()?,
        severity: q
            .severity
            .as_deref()
            .map(|v| parse_enum("severity", v))
            .transpose()?,
        source_prefix: q.source,
        rule: q.rule,
        include_folded: q.include_folded.unwrap_or(false),
    };
    Ok(Json(json!({"alarms": s.alarms.list(&filter)})))
}

fn alarm_id(id: &str) -> ApiResult<u64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not an alarm id")))
}

async fn get_alarm(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Json_>> {
    let id = alarm_id(&id)?;
    s.alarms
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no alarm {id}")))
}

impl From<crate::alarms::AlarmsError> for ApiError {
    fn from(e: crate::alarms::AlarmsError) -> Self {
        use rules_engine::AlarmError;
        match e {
            crate::alarms::AlarmsError::Alarm(AlarmError::NotFound(id)) => {
                ApiError::not_found(format!("no alarm {}", id.0))
            }
            crate::alarms::AlarmsError::Alarm(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            crate::alarms::AlarmsError::Store(e) => ApiError::internal(e),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    actor: String,
    comment: Option<String>,
}

async fn acknowledge_alarm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    let result = s
        .alarms
        .acknowledge(id, &b.actor, b.comment.as_deref())
        .await
        .map_err(ApiError::from);
    audited(
        &s,
        &b.actor,
        "alarm_acknowledge",
        &id.to_string(),
        json!({"comment": b.comment}),
        result,
    )
    .await?;
    get_alarm(State(s), Path(id.to_string())).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    actor: String,
    /// For how long, in seconds (at most 7 days).
    duration_s: u64,
    reason: Option<String>,
}

async fn shelve_alarm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ShelveBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    if b.duration_s == 0 || b.duration_s > 7 * 86_400 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "duration_s must be between 1 and 604800 (7 days)",
        ));
    }
    let until = now_micros() + b.duration_s as i64 * 1_000_000;
    let result = s
        .alarms
        .shelve(id, until, &b.actor, b.reason.as_deref())
        .await
        .map_err(ApiError::from);
    audited(
        &s,
        &b.actor,
        "alarm_shelve",
        &id.to_string(),
        json!({"duration_s": b.duration_s, "reason": b.reason}),
        result,
    )
    .await?;
    get_alarm(State(s), Path(id.to_string())).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    actor: String,
}

async fn unshelve_alarm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ActorBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    let result = s
        .alarms
        .unshelve(id, &b.actor)
        .await
        .map_err(ApiError::from);
    audited(
        &s,
        &b.actor,
        "alarm_unshelve",
        &id.to_string(),
        Json_::Null,
        result,
    )
    .await?;
    get_alarm(State(s), Path(id.to_string())).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    actor: String,
    text: String,
}

async fn comment_alarm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<CommentBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    if b.text.len() > 4000 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "a comment takes at most 4000 bytes",
        ));
    }
    let result = s
        .alarms
        .comment(id, &b.actor, &b.text)
        .await
        .map_err(ApiError::from);
    audited(
        &s,
        &b.actor,
        "alarm_comment",
        &id.to_string(),
        json!({"text": b.text}),
        result,
    )
    .await?;
    get_alarm(State(s), Path(id.to_string())).await
}

async fn list_rules(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    Ok(Json(s.alarms.rules()))
}

async fn reload_rules(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    match s.alarms.reload().await {
        Ok(n) => Ok(Json(json!({"reloaded": true, "rules": n}))),
        Err(message) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules_refused",
            message,
        )),
    }
}
