//! The hub's HTTP API under `/api/v1` (parks, buildings, edges with their connection
//! state, backlog and data freshness, latest values, history, events), plus `/health`,
//! `/ready` and `/metrics`.
//!
//! Errors are JSON `{"code", "message", "details", "traceId"}` as on the edge. There is no
//! authentication yet (users and roles come later): serve it on a trusted network only.
//! Nothing here returns or logs tokens or keys.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::metrics::Metrics;
use crate::store::{BuildingKey, HubStore, now_micros, sample_json};
use crate::sync::Registry;

#[derive(Clone)]
pub struct ApiState {
    pub store: HubStore,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
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
            "the request failed inside the hub; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "details": Json_::Null, "traceId": format!("{:016x}", fastrand::u64(..))});
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/parks", get(list_parks))
        .route("/parks/{park}/buildings", get(list_buildings))
        .route("/parks/{park}/buildings/{building}", get(get_building))
        .route(
            "/parks/{park}/buildings/{building}/points",
            get(list_points),
        )
        .route(
            "/parks/{park}/buildings/{building}/points/{device}/{point}/history",
            get(history),
        )
        .route(
            "/parks/{park}/buildings/{building}/events",
            get(list_events),
        )
        .route("/edges", get(list_edges));
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
    Metrics::add(&s.metrics.http_requests_total, 1);
    let res = next.run(req).await;
    if res.status().is_client_error() {
        Metrics::add(&s.metrics.http_client_errors_total, 1);
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
    s.metrics
        .edges_connected
        .store(s.registry.len() as u64, Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

const EDGE_COLUMNS: &str = "b.park, b.building, e.serial, e.edge_id, e.enrolled_at, e.cert_not_after, e.state, e.state_since,
    e.last_seen, e.last_error, e.remote, e.health_at, e.backlog_events, e.backlog_rollups, e.backlog_raw,
    e.newest_event_ts, e.newest_sample_ts, (SELECT 1 FROM revocations r WHERE r.serial = e.serial)";

/// An edge row as JSON, with the live connection (if any) overriding what was stored.
fn edge_json(r: &rusqlite::Row<'_>, registry: &Registry) -> rusqlite::Result<Json_> {
    let key = BuildingKey {
        park: r.get(0)?,
        building: r.get(1)?,
    };
    let live = registry.get(&key);
    let stored_state: String = r.get(6)?;
    let (state, since, last_seen, remote) = match &live {
        Some(l) => (
            "connected".to_string(),
            Some(l.connected_since),
            Some(l.last_seen.load(Relaxed)),
            Some(l.remote.clone()),
        ),
        // The hub's own record says connected only while a task runs; without one the
        // building is not connected, whatever was last written.
        None => (
            if stored_state == "never_connected" {
                stored_state
            } else {
                "disconnected".into()
            },
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, Option<String>>(10)?,
        ),
    };
    Ok(json!({
        "park": key.park,
        "building": key.building,
        "edgeId": live.as_ref().and_then(|l| l.edge_id.lock().ok().and_then(|g| g.clone())).or(r.get::<_, Option<String>>(3)?),
        "certificate": {
            "serial": r.get::<_, Option<String>>(2)?,
            "enrolledAt": r.get::<_, Option<i64>>(4)?,
            "notAfter": r.get::<_, Option<i64>>(5)?,
            "revoked": r.get::<_, Option<i64>>(17)?.is_some(),
        },
        "connection": {
            "state": state,
            "since": since,
            "lastSeen": last_seen,
            "remote": remote,
            "lastError": r.get::<_, Option<String>>(9)?,
        },
        "backlog": {
            "events": r.get::<_, Option<i64>>(12)?,
            "rollups": r.get::<_, Option<i64>>(13)?,
            "raw": r.get::<_, Option<i64>>(14)?,
            "reportedAt": r.get::<_, Option<i64>>(11)?,
        },
        "freshness": {
            "newestEvent": r.get::<_, Option<i64>>(15)?,
            "newestSample": r.get::<_, Option<i64>>(16)?,
        },
    }))
}

async fn edges_where(
    s: &ApiState,
    filter: &'static str,
    args: Vec<String>,
) -> ApiResult<Vec<Json_>> {
    let registry = s.registry.clone();
    s.store
        .read(move |c| {
            let sql = format!(
                "SELECT {EDGE_COLUMNS} FROM edges e JOIN buildings b ON b.id = e.building_id {filter} ORDER BY b.park, b.building"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| edge_json(r, &registry))?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)
}

async fn list_edges(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    let edges = edges_where(&s, "", Vec::new()).await?;
    Ok(Json(json!({"edges": edges, "now": now_micros()})))
}

async fn list_parks(State(s): State<ApiState>) -> ApiResult<Json<Json_>> {
    let edges = edges_where(&s, "", Vec::new()).await?;
    let parks: Vec<String> = s
        .store
        .read(|c| {
            let mut stmt = c.prepare("SELECT park FROM parks ORDER BY park")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    let parks: Vec<Json_> = parks
        .into_iter()
        .map(|park| {
            let of_park: Vec<&Json_> = edges
                .iter()
                .filter(|e| e["park"] == park.as_str())
                .collect();
            let connected = of_park
                .iter()
                .filter(|e| e["connection"]["state"] == "connected")
                .count();
            json!({"park": park, "buildings": of_park.len(), "edgesConnected": connected})
        })
        .collect();
    Ok(Json(json!({"parks": parks})))
}

async fn list_buildings(
    State(s): State<ApiState>,
    Path(park): Path<String>,
) -> ApiResult<Json<Json_>> {
    let edges = edges_where(&s, "WHERE b.park = ?1", vec![park.clone()]).await?;
    if edges.is_empty() {
        return Err(ApiError::not_found(format!("no park {park:?}")));
    }
    Ok(Json(json!({"park": park, "buildings": edges})))
}

async fn get_building(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    let mut edges = edges_where(
        &s,
        "WHERE b.park = ?1 AND b.building = ?2",
        vec![park.clone(), building.clone()],
    )
    .await?;
    let edge = edges
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no building {park}/{building}")))?;
    let key = BuildingKey::new(&park, &building);
    let cursors = json!({
        "events": s.store.durable(&key, sync_protocol::UploadStream::Events),
        "rollups": s.store.durable(&key, sync_protocol::UploadStream::Rollups),
        "raw": s.store.durable(&key, sync_protocol::UploadStream::Raw),
    });
    Ok(Json(json!({"building": edge, "durableCursors": cursors})))
}

async fn building_id(s: &ApiState, park: &str, building: &str) -> ApiResult<i64> {
    let (p, b) = (park.to_string(), building.to_string());
    s.store
        .read(move |c| {
            c.query_row(
                "SELECT id FROM buildings WHERE park = ?1 AND building = ?2",
                params![p, b],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no building {park}/{building}")))
}

async fn list_points(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    let bid = building_id(&s, &park, &building).await?;
    let points: Vec<Json_> = s
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT p.point, l.ts, l.value, l.q, l.reason FROM points p LEFT JOIN latest l ON l.point_id = p.id
                 WHERE p.building_id = ?1 ORDER BY p.point",
            )?;
            let rows = stmt.query_map([bid], |r| {
                let latest = match r.get::<_, Option<i64>>(1)? {
                    Some(ts) => sample_json(ts, r.get_ref(2)?, r.get(3)?, r.get(4)?),
                    None => Json_::Null,
                };
                Ok(json!({"point": r.get::<_, String>(0)?, "latest": latest}))
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"park": park, "building": building, "points": points}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    from: Option<i64>,
    to: Option<i64>,
    resolution: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(s): State<ApiState>,
    Path((park, building, device, point)): Path<(String, String, String, String)>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let bid = building_id(&s, &park, &building).await?;
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
    let span = to - from;
    let resolution: &'static str = match q.resolution.as_deref().unwrap_or("auto") {
        "auto" if span <= 2 * 3_600_000_000 => "raw",
        "auto" if span <= 2 * 86_400_000_000 => "1m",
        "auto" if span <= 31 * 86_400_000_000 => "15m",
        "auto" => "1h",
        "raw" => "raw",
        "1m" => "1m",
        "15m" => "15m",
        "1h" => "1h",
        other => {
            return Err(ApiError::bad_request(format!(
                "resolution {other:?} is not one of raw, 1m, 15m, 1h, auto"
            )));
        }
    };
    let key = format!("{device}/{point}");
    let point_key = key.clone();
    let rows: Option<Vec<Json_>> = s
        .store
        .read(move |c| {
            let Some(pid) = c
                .query_row(
                    "SELECT id FROM points WHERE building_id = ?1 AND point = ?2",
                    params![bid, point_key],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
            else {
                return Ok(None);
            };
            let rows = if resolution == "raw" {
                let mut stmt = c.prepare(
                    "SELECT ts, value, q, reason FROM raw WHERE point_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![pid, from, to, limit as i64], |r| {
                    Ok(sample_json(r.get(0)?, r.get_ref(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            } else {
                let period: i64 = match resolution {
                    "1m" => 60,
                    "15m" => 900,
                    _ => 3600,
                };
                let start = from - from.rem_euclid(period * 1_000_000);
                let mut stmt = c.prepare(
                    "SELECT bucket, min, max, sum, count, last, delta, bad FROM rollups
                     WHERE point_id = ?1 AND period = ?2 AND bucket >= ?3 AND bucket < ?4 ORDER BY bucket LIMIT ?5",
                )?;
                let rows = stmt.query_map(params![pid, period, start, to, limit as i64], |r| {
                    let sum: Option<f64> = r.get(3)?;
                    let count: i64 = r.get(4)?;
                    let avg = sum.filter(|_| count > 0).map(|s| s / count as f64);
                    Ok(json!({"bucket": r.get::<_, i64>(0)?, "min": r.get::<_, Option<f64>>(1)?, "max": r.get::<_, Option<f64>>(2)?,
                        "avg": avg, "last": r.get::<_, Option<f64>>(5)?, "count": count, "delta": r.get::<_, Option<f64>>(6)?, "bad": r.get::<_, i64>(7)?}))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            Ok(Some(rows))
        })
        .await
        .map_err(ApiError::internal)?;
    let rows =
        rows.ok_or_else(|| ApiError::not_found(format!("no point {key} in {park}/{building}")))?;
    Ok(Json(
        json!({"park": park, "building": building, "point": key, "from": from, "to": to, "resolution": resolution, "rows": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events with sequence numbers above this one.
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_events(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let bid = building_id(&s, &park, &building).await?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let after = q.after.unwrap_or(0) as i64;
    let events: Vec<Json_> = s
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, id, ts, body, received FROM events WHERE building_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![bid, after, limit as i64], |r| {
                let id: Vec<u8> = r.get(1)?;
                let body: Vec<u8> = r.get(3)?;
                // Event bodies are opaque to the protocol; the edge sends JSON.
                let body = match std::str::from_utf8(&body) {
                    Ok(t) => serde_json::from_str(t).unwrap_or_else(|_| json!(t)),
                    Err(_) => Json_::Null,
                };
                Ok(json!({"seq": r.get::<_, i64>(0)?, "id": uuid_text(&id), "ts": r.get::<_, Option<i64>>(2)?, "body": body, "received": r.get::<_, i64>(4)?}))
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"park": park, "building": building, "events": events}),
    ))
}

fn uuid_text(id: &[u8]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
