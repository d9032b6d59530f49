//! The hub's HTTP API under `/api/v1`: parks, buildings and edges with their connection
//! state, backlog and data freshness, latest values, history and events; users, their
//! roles and departments; the private fields of the park's people; the audit log; plus
//! `/health`, `/ready` and `/metrics`.
//!
//! Every route is declared once with what it requires ([`routes`]); a route acts at the
//! park or building its path names, at the operator, or (lists) wherever the caller holds
//! the permission, and then shows only the rows the caller may see. The acting user comes
//! from the session or token, never from the body; every change is audited in the same
//! transaction. Errors are JSON `{"code", "message", "details", "traceId"}` as on the edge.
//! Nothing here returns or logs passwords, tokens or keys.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use accounts::auth::manage;
use accounts::http::{
    self, ApiAuth, ApiError, ApiResult, RouteIndex, RouteScope, RouteSpec, Routes, audit_outcome,
};
use accounts::{Auth, Caller};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use park_model::identity::{Access, Grant, Permission, Principal, Scope};
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::metrics::Metrics;
use crate::store::{BuildingKey, HubStore, now_micros, sample_json};
use crate::sync::{Documents, Registry};

#[derive(Clone)]
pub struct ApiState {
    pub store: HubStore,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub documents: Arc<Documents>,
}

impl ApiAuth for ApiState {
    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn routes(&self) -> &RouteIndex {
        static INDEX: OnceLock<RouteIndex> = OnceLock::new();
        INDEX.get_or_init(|| RouteIndex::new(&route_table()))
    }

    fn scope_of(&self, path: &str, params: &[(&str, &str)]) -> RouteScope {
        scope_of(path, params)
    }
}

/// Where a route acts: the park, building or enterprise its path names; a park's list of
/// buildings anywhere within the park; the lists of parks, users and departments wherever
/// the caller holds the permission; the rest at the operator.
pub fn scope_of(path: &str, params: &[(&str, &str)]) -> RouteScope {
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    match (get("park"), get("building"), get("enterprise")) {
        (Some(p), None, None) if path == "/api/v1/parks/{park}/buildings" => {
            RouteScope::Within(p.to_string())
        }
        (Some(p), Some(b), _) => RouteScope::At(Scope::building(p, b)),
        (Some(p), None, Some(e)) => RouteScope::At(Scope::enterprise(p, e)),
        (Some(p), None, None) => RouteScope::At(Scope::park(p)),
        _ if path == "/api/v1/parks"
            || path.starts_with("/api/v1/users")
            || path.starts_with("/api/v1/departments") =>
        {
            RouteScope::Anywhere
        }
        _ => RouteScope::Own,
    }
}

/// Every route of the hub's API with what it requires: the one table.
fn routes() -> Routes<ApiState> {
    use Access::{Allowed, Public};
    use Permission::*;
    http::auth_routes(Routes::default())
        .get("/health", Public, || async {
            Json(json!({"status": "ok"}))
        })
        .get("/ready", Public, ready)
        .get("/metrics", Allowed(TelemetryRead), metrics)
        .get("/api/v1/parks", Allowed(TelemetryRead), list_parks)
        .get(
            "/api/v1/parks/{park}/buildings",
            Allowed(TelemetryRead),
            list_buildings,
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}",
            Allowed(TelemetryRead),
            get_building,
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/points",
            Allowed(TelemetryRead),
            list_points,
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/points/{device}/{point}/history",
            Allowed(TelemetryRead),
            history,
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/events",
            Allowed(EventsRead),
            list_events,
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/audit",
            Allowed(AuditRead),
            building_audit,
        )
        .get(
            "/api/v1/parks/{park}/people/{person}/private",
            Allowed(EnterpriseRead),
            get_private,
        )
        .put(
            "/api/v1/parks/{park}/people/{person}/private",
            Allowed(PersonalRead),
            put_private,
        )
        .get(
            "/api/v1/parks/{park}/enterprises/{enterprise}/people/{person}/private",
            Allowed(EnterpriseRead),
            get_enterprise_private,
        )
        .put(
            "/api/v1/parks/{park}/enterprises/{enterprise}/people/{person}/private",
            Allowed(PersonalRead),
            put_enterprise_private,
        )
        .get("/api/v1/edges", Allowed(EdgesManage), list_edges)
        .get("/api/v1/audit", Allowed(AuditRead), hub_audit)
        .get("/api/v1/users", Allowed(UsersManage), list_users)
        .post("/api/v1/users", Allowed(UsersManage), create_user)
        .get("/api/v1/users/{id}", Allowed(UsersManage), get_user)
        .put(
            "/api/v1/users/{id}/grants",
            Allowed(UsersManage),
            set_grants,
        )
        .post(
            "/api/v1/users/{id}/disable",
            Allowed(UsersManage),
            disable_user,
        )
        .post(
            "/api/v1/users/{id}/enable",
            Allowed(UsersManage),
            enable_user,
        )
        .post(
            "/api/v1/users/{id}/password",
            Allowed(UsersManage),
            reset_password,
        )
        .post(
            "/api/v1/users/{id}/reset-second-factor",
            Allowed(UsersManage),
            reset_second_factor,
        )
        .get(
            "/api/v1/departments",
            Allowed(UsersManage),
            list_departments,
        )
        .post(
            "/api/v1/departments",
            Allowed(UsersManage),
            create_department,
        )
}

/// The route table, for tests and documentation.
pub fn route_table() -> Vec<RouteSpec> {
    routes().specs()
}

pub fn router(state: ApiState) -> Router {
    routes()
        .into_api_router(state.clone())
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

/// The parks where the caller may read telemetry somewhere.
async fn list_parks(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Json_>> {
    let p = &caller.principal;
    let edges: Vec<Json_> = edges_where(&s, "", Vec::new())
        .await?
        .into_iter()
        .filter(|e| building_visible(p, e))
        .collect();
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
        .filter(|park| p.can_somewhere_in(Permission::TelemetryRead, park))
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

/// Whether the caller may read telemetry of the building an edge row is of.
fn building_visible(p: &Principal, edge: &Json_) -> bool {
    match (edge["park"].as_str(), edge["building"].as_str()) {
        (Some(park), Some(b)) => p.can(Permission::TelemetryRead, &Scope::building(park, b)),
        _ => false,
    }
}

/// The buildings of a park whose telemetry the caller may read.
async fn list_buildings(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(park): Path<String>,
) -> ApiResult<Json<Json_>> {
    if !caller
        .principal
        .can_somewhere_in(Permission::TelemetryRead, &park)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the permission telemetry.read in park:{park} or one of its buildings"
            ),
        ));
    }
    let edges: Vec<Json_> = edges_where(&s, "WHERE b.park = ?1", vec![park.clone()])
        .await?
        .into_iter()
        .filter(|e| building_visible(&caller.principal, e))
        .collect();
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
                "SELECT seq, id, ts, body, received FROM events
                 WHERE building_id = ?1 AND seq > ?2 AND coalesce(json_extract(CAST(body AS TEXT), '$.kind'), '') <> 'audit'
                 ORDER BY seq LIMIT ?3",
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
    /// Page backwards: only records before this sequence number.
    before: Option<u64>,
}

fn audit_limit(q: &AuditQuery) -> ApiResult<usize> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    Ok(limit)
}

/// The hub's own audit log, newest first.
async fn hub_audit(
    State(s): State<ApiState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let limit = audit_limit(&q)?;
    let before = q.before;
    let rows = s
        .store
        .read(move |c| accounts::audit::list(c, before, limit))
        .await
        .map_err(ApiError::internal)?;
    let next = rows.last().and_then(|r| r["seq"].as_u64());
    Ok(Json(json!({"entries": rows, "before": next})))
}

/// A building's audit log as its edge uploaded it, newest first, with whether its chain
/// holds.
async fn building_audit(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Json_>> {
    let Query(q) = q?;
    let limit = audit_limit(&q)?;
    let bid = building_id(&s, &park, &building).await?;
    let chain = s
        .store
        .read(move |c| crate::audit::edge_chain(c, bid))
        .await
        .map_err(ApiError::internal)?;
    let verdict = match park_model::audit::verify(&chain, None) {
        Ok((n, _)) => json!({"intact": true, "records": n}),
        Err(e) => json!({"intact": false, "break": e.to_string()}),
    };
    let entries: Vec<Json_> = chain
        .iter()
        .rev()
        .filter(|r| q.before.is_none_or(|b| r.record.seq < b))
        .take(limit)
        .map(accounts::audit::record_json)
        .collect();
    let next = entries.last().and_then(|r| r["seq"].as_u64());
    Ok(Json(
        json!({"park": park, "building": building, "chain": verdict, "entries": entries, "before": next}),
    ))
}

/// The enterprise a person of the park's directory belongs to, read from the hub's copy.
fn enterprise_of(s: &ApiState, park: &str, person: &str) -> Option<String> {
    use automerge::ReadDoc as _;
    let doc = s.documents.get(park, "directory")?;
    let (_, people) = doc.get(automerge::ROOT, "people").ok()??;
    let (_, p) = doc.get(&people, person).ok()??;
    match doc.get(&p, "enterprise_id").ok()?? {
        (automerge::Value::Scalar(v), _) => match v.as_ref() {
            automerge::ScalarValue::Str(t) => Some(t.to_string()),
            _ => None,
        },
        (automerge::Value::Object(_), id) => doc.text(&id).ok(),
    }
}

/// A person's stored private fields, with the enterprise they are filed under.
async fn private_row(
    s: &ApiState,
    park: &str,
    person: &str,
) -> ApiResult<Option<crate::people::PrivateRow>> {
    let (pk, pe) = (park.to_string(), person.to_string());
    s.store
        .read(move |c| crate::people::read_private(c, &pk, &pe))
        .await
        .map_err(ApiError::internal)
}

/// The enterprise a person is in: the directory's word, else what their fields were filed
/// under.
async fn person_enterprise(s: &ApiState, park: &str, person: &str) -> ApiResult<Option<String>> {
    if let Some(e) = enterprise_of(s, park, person) {
        return Ok(Some(e));
    }
    Ok(private_row(s, park, person).await?.map(|r| r.enterprise_id))
}

/// A person's phone and ID numbers, masked unless the caller may read personal data in
/// the park.
async fn get_private(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, person)): Path<(String, String)>,
) -> ApiResult<Json<Json_>> {
    let row = private_row(&s, &park, &person).await?.ok_or_else(|| {
        ApiError::not_found(format!("no private fields kept for {park}/{person}"))
    })?;
    let unmasked = caller
        .principal
        .can(Permission::PersonalRead, &Scope::park(&park));
    Ok(Json(crate::people::private_json(
        &s.auth, &park, &person, &row, unmasked,
    )))
}

/// The same for a person of the enterprise the path names (an enterprise's own admin):
/// another enterprise's people are not found here.
async fn get_enterprise_private(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise, person)): Path<(String, String, String)>,
) -> ApiResult<Json<Json_>> {
    let not_here = || ApiError::not_found(format!("no person {person} in enterprise {enterprise}"));
    if person_enterprise(&s, &park, &person).await?.as_deref() != Some(enterprise.as_str()) {
        return Err(not_here());
    }
    let row = private_row(&s, &park, &person)
        .await?
        .ok_or_else(not_here)?;
    let unmasked = caller.principal.can(
        Permission::PersonalRead,
        &Scope::enterprise(&park, &enterprise),
    );
    Ok(Json(crate::people::private_json(
        &s.auth, &park, &person, &row, unmasked,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrivateBody {
    /// The person's enterprise, for a person the hub's directory does not know yet.
    enterprise_id: Option<String>,
    /// `null` removes the field.
    phone: Option<String>,
    id_number: Option<String>,
}

/// Sets a person's private fields, sealed, filed under `enterprise`; audited without the
/// values.
async fn store_private(
    s: &ApiState,
    caller: &Caller,
    park: &str,
    person: &str,
    enterprise: &str,
    b: &PrivateBody,
) -> ApiResult<()> {
    if let Some(p) = &b.phone
        && !crate::people::valid_phone(p)
    {
        return Err(ApiError::invalid(
            "phone takes 5 to 20 digits, spaces, '+' or '-'",
        ));
    }
    if let Some(p) = &b.id_number
        && !crate::people::valid_id_number(p)
    {
        return Err(ApiError::invalid(
            "idNumber takes 6 to 32 letters or digits",
        ));
    }
    let seal = |field: &str, v: &Option<String>| {
        v.as_ref().map(|t| {
            s.auth
                .seal_value(&crate::people::aad(park, person, field), t.as_bytes())
        })
    };
    let (phone, id_number) = (seal("phone", &b.phone), seal("id_number", &b.id_number));
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "person_private_set",
            &format!("{park}/{person}"),
            json!({"enterprise": enterprise, "phone": b.phone.is_some(), "idNumber": b.id_number.is_some()}),
        )
        .unmirrored();
    let (pk, pe, ent, by) = (
        park.to_string(),
        person.to_string(),
        enterprise.to_string(),
        caller.name.to_string(),
    );
    let a2 = audit.clone();
    let result = s
        .store
        .admin(move |tx| {
            let now = now_micros();
            tx.execute(
                "INSERT INTO person_private (park, person_id, enterprise_id, phone, id_number, created, created_by, updated, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?7)
                 ON CONFLICT (park, person_id) DO UPDATE SET enterprise_id = excluded.enterprise_id, phone = excluded.phone,
                    id_number = excluded.id_number, updated = excluded.updated, updated_by = excluded.updated_by",
                params![pk, pe, ent, phone, id_number, now, by],
            )?;
            a2.append(tx)?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal);
    audit_outcome(&s.auth, audit, result).await
}

/// Sets a person's private fields as the park (its managers).
async fn put_private(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, person)): Path<(String, String)>,
    body: Result<Json<PrivateBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    // The directory says which enterprise a person is in; a claim in the body counts only
    // for people it does not know yet.
    let known = person_enterprise(&s, &park, &person).await?;
    let enterprise = match (&known, &b.enterprise_id) {
        (Some(k), Some(claimed)) if k != claimed => {
            return Err(ApiError::invalid(format!(
                "enterpriseId {claimed:?} is not the person's enterprise ({k:?})"
            )));
        }
        (Some(k), _) => k.clone(),
        (None, Some(c)) if park_model::identity::valid_username(c) => c.clone(),
        (None, _) => {
            return Err(ApiError::invalid(
                "the directory does not know this person: give enterpriseId",
            ));
        }
    };
    store_private(&s, &caller, &park, &person, &enterprise, &b).await?;
    get_private(State(s), Extension(caller), Path((park, person))).await
}

/// Sets the private fields of a person of the enterprise the path names.
async fn put_enterprise_private(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise, person)): Path<(String, String, String)>,
    body: Result<Json<PrivateBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    if b.enterprise_id.as_ref().is_some_and(|e| *e != enterprise) {
        return Err(ApiError::invalid(
            "enterpriseId must be the enterprise of the path",
        ));
    }
    match person_enterprise(&s, &park, &person).await? {
        Some(e) if e != enterprise => {
            return Err(ApiError::not_found(format!(
                "no person {person} in enterprise {enterprise}"
            )));
        }
        _ => {}
    }
    store_private(&s, &caller, &park, &person, &enterprise, &b).await?;
    get_enterprise_private(
        State(s),
        Extension(caller),
        Path((park, enterprise, person)),
    )
    .await
}

/// The users the caller may see: those holding a grant the caller could give.
fn visible_user(p: &Principal, user: &Json_) -> bool {
    let grants: Vec<Grant> = serde_json::from_value(user["grants"].clone()).unwrap_or_default();
    grants.iter().any(|g| p.may_grant(g)) || user["id"] == p.user_id.as_str()
}

fn user_grants(user: &Json_) -> Vec<Grant> {
    serde_json::from_value(user["grants"].clone()).unwrap_or_default()
}

async fn all_users(s: &ApiState) -> ApiResult<Vec<Json_>> {
    s.store.read(manage::list).await.map_err(ApiError::internal)
}

async fn list_users(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Json_>> {
    let users: Vec<Json_> = all_users(&s)
        .await?
        .into_iter()
        .filter(|u| visible_user(&caller.principal, u))
        .map(|mut u| {
            u["manageable"] = json!(caller.principal.may_manage(&user_grants(&u)));
            u
        })
        .collect();
    Ok(Json(json!({"users": users})))
}

/// A user the caller may see, or 404 (never telling whether others exist).
async fn visible(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<Json_> {
    all_users(s)
        .await?
        .into_iter()
        .find(|u| u["id"] == id && visible_user(&caller.principal, u))
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

/// A user the caller may change: every grant it holds is one the caller could give, and
/// it is not the caller (nobody changes their own roles or locks themselves out).
async fn manageable(s: &ApiState, caller: &Caller, id: &str, action: &str) -> ApiResult<Json_> {
    let checked = async {
        let u = visible(s, caller, id).await?;
        if id == caller.principal.user_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you cannot change your own account here; ask another administrator",
            ));
        }
        if !caller.principal.may_manage(&user_grants(&u)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this user holds roles you could not give; only someone who could may change them",
            ));
        }
        Ok(u)
    }
    .await;
    let audit = s
        .auth
        .audit(&caller.actor(), action, id, json!({}))
        .unmirrored();
    audit_outcome(&s.auth, audit, checked).await
}

async fn get_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let mut u = visible(&s, &caller, &id).await?;
    u["manageable"] = json!(caller.principal.may_manage(&user_grants(&u)));
    Ok(Json(u))
}

fn parse_grants(p: &Principal, list: &[String]) -> ApiResult<Vec<Grant>> {
    if list.is_empty() || list.len() > 64 {
        return Err(ApiError::invalid(
            "grants takes 1 to 64 entries such as facility_engineer@building:p1/b1",
        ));
    }
    let mut grants = Vec::new();
    for g in list {
        let grant: Grant = g
            .parse()
            .map_err(|e: park_model::identity::IdentityError| {
                ApiError::invalid(format!("grants: {e}"))
            })?;
        if !p.may_grant(&grant) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "you may not grant {grant}: it needs users.manage there and every permission of the role"
                ),
            ));
        }
        grants.push(grant);
    }
    grants.sort();
    grants.dedup();
    Ok(grants)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewUser {
    username: String,
    display_name: String,
    password: String,
    grants: Vec<String>,
    department: Option<String>,
}

/// Runs an account change in an immediate transaction, audits a refusal, and reads the
/// accounts again so the change applies at once (and reaches the edges).
async fn account_change<T: Send + 'static>(
    s: &ApiState,
    audit: accounts::Audit,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let result = s.store.admin(f).await.map_err(|e| {
        // Refusals of the rules in `manage` are the caller's mistakes; the store's are ours.
        let text = format!("{e:#}");
        if e.downcast_ref::<rusqlite::Error>().is_some() {
            ApiError::internal(e)
        } else {
            ApiError::invalid(text)
        }
    });
    let out = audit_outcome(&s.auth, audit, result).await?;
    s.auth.reload().await.map_err(ApiError::internal)?;
    Ok(out)
}

async fn create_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "user_create",
            &b.username,
            json!({"grants": b.grants}),
        )
        .unmirrored();
    let prepared = async {
        let grants = parse_grants(&caller.principal, &b.grants)?;
        if let Some(d) = &b.department {
            let d2 = d.clone();
            let exists = s
                .store
                .read(move |c| {
                    c.query_row("SELECT 1 FROM departments WHERE id = ?1", [&d2], |_| Ok(()))
                        .optional()
                })
                .await
                .map_err(ApiError::internal)?;
            if exists.is_none() {
                return Err(ApiError::invalid(format!(
                    "department: no department {d:?}"
                )));
            }
        }
        let cost = s.auth.settings().cost;
        let (username, password) = (b.username.clone(), b.password.clone());
        let verifier =
            tokio::task::spawn_blocking(move || manage::verifier_for(&username, &password, cost))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| ApiError::invalid(format!("password: {e}")))?;
        Ok((grants, verifier))
    }
    .await;
    let (grants, verifier) = audit_outcome(&s.auth, audit.clone(), prepared).await?;
    let actor = caller.actor();
    let id = account_change(&s, audit, move |tx| {
        manage::create(
            tx,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            manage::NewAccount {
                username: &b.username,
                display_name: &b.display_name,
                verifier,
                grants: &grants,
                department: b.department.as_deref(),
            },
        )
    })
    .await?;
    get_user(State(s), Extension(caller), Path(id)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    grants: Vec<String>,
}

async fn set_grants(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<GrantsBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let audit = s
        .auth
        .audit(&caller.actor(), "user_grants", &id, json!({"to": b.grants}))
        .unmirrored();
    manageable(&s, &caller, &id, "user_grants").await?;
    let grants = audit_outcome(
        &s.auth,
        audit.clone(),
        parse_grants(&caller.principal, &b.grants),
    )
    .await?;
    let (actor, id2) = (caller.actor(), id.clone());
    account_change(&s, audit, move |tx| {
        manage::set_grants(
            tx,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            &id2,
            &grants,
        )
    })
    .await?;
    get_user(State(s), Extension(caller), Path(id)).await
}

async fn set_disabled(
    s: ApiState,
    caller: Caller,
    id: String,
    disabled: bool,
) -> ApiResult<Json<Json_>> {
    let action = if disabled {
        "user_disable"
    } else {
        "user_enable"
    };
    let u = manageable(&s, &caller, &id, action).await?;
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            action,
            u["username"].as_str().unwrap_or(""),
            json!({"id": id}),
        )
        .unmirrored();
    let (actor, id2) = (caller.actor(), id.clone());
    account_change(&s, audit, move |tx| {
        manage::set_disabled(
            tx,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            &id2,
            disabled,
        )
    })
    .await?;
    get_user(State(s), Extension(caller), Path(id)).await
}

async fn disable_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    set_disabled(s, caller, id, true).await
}

async fn enable_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    set_disabled(s, caller, id, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordReset {
    password: String,
}

async fn reset_password(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<PasswordReset>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let u = manageable(&s, &caller, &id, "password_reset").await?;
    let username = u["username"].as_str().unwrap_or("").to_string();
    let cost = s.auth.settings().cost;
    let name2 = username.clone();
    let verifier =
        tokio::task::spawn_blocking(move || manage::verifier_for(&name2, &b.password, cost))
            .await
            .map_err(|e| ApiError::internal(e.into()))?
            .map_err(|e| ApiError::invalid(format!("password: {e}")))?;
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "password_reset",
            &username,
            json!({"id": id}),
        )
        .unmirrored();
    let (actor, id2) = (caller.actor(), id.clone());
    account_change(&s, audit, move |tx| {
        manage::set_verifier(
            tx,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            &id2,
            &verifier,
        )
    })
    .await?;
    get_user(State(s), Extension(caller), Path(id)).await
}

async fn reset_second_factor(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let u = manageable(&s, &caller, &id, "second_factor_reset").await?;
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "second_factor_reset",
            u["username"].as_str().unwrap_or(""),
            json!({"id": id}),
        )
        .unmirrored();
    let (actor, id2) = (caller.actor(), id.clone());
    account_change(&s, audit, move |tx| {
        manage::reset_second_factor(
            tx,
            &actor,
            accounts::audit::Mirror::None,
            accounts::auth::Source::Hub,
            &id2,
        )
    })
    .await?;
    get_user(State(s), Extension(caller), Path(id)).await
}

async fn list_departments(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Json_>> {
    let rows: Vec<Json_> = s
        .store
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, park, parent_id, created, created_by, updated, updated_by FROM departments ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(json!({
                    "id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?,
                    "park": r.get::<_, Option<String>>(2)?, "parent": r.get::<_, Option<String>>(3)?,
                    "created": r.get::<_, i64>(4)?, "createdBy": r.get::<_, String>(5)?,
                    "updated": r.get::<_, i64>(6)?, "updatedBy": r.get::<_, String>(7)?,
                }))
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    let p = &caller.principal;
    let rows = rows
        .into_iter()
        .filter(|d| match d["park"].as_str() {
            Some(park) => p.can_somewhere_in(Permission::UsersManage, park),
            None => p.can(Permission::UsersManage, &Scope::Operator),
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({"departments": rows})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDepartment {
    id: String,
    name: String,
    /// The park the department belongs to; none for the operator's own.
    park: Option<String>,
    parent: Option<String>,
}

async fn create_department(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewDepartment>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    if !park_model::identity::valid_username(&b.id) {
        return Err(ApiError::invalid(
            "id takes 2 to 64 letters, digits, '.', '_', '-'",
        ));
    }
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(ApiError::invalid("name must be 1 to 200 characters"));
    }
    let at = match &b.park {
        Some(p) => Scope::park(p),
        None => Scope::Operator,
    };
    if !caller.principal.can(Permission::UsersManage, &at) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the permission users.manage in {at}"),
        ));
    }
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "department_create",
            &b.id,
            json!({"name": b.name, "park": b.park, "parent": b.parent}),
        )
        .unmirrored();
    let (by, a2) = (caller.name.to_string(), audit.clone());
    let id = b.id.clone();
    account_change(&s, audit, move |tx| {
        if let Some(parent) = &b.parent {
            let found: Option<i64> = tx
                .query_row("SELECT 1 FROM departments WHERE id = ?1", [parent], |r| r.get(0))
                .optional()?;
            anyhow::ensure!(found.is_some(), "parent: no department {parent:?}");
        }
        let now = now_micros();
        let n = tx.execute(
            "INSERT OR IGNORE INTO departments (id, name, park, parent_id, created, created_by, updated, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6)",
            params![b.id, b.name, b.park, b.parent, now, by],
        )?;
        anyhow::ensure!(n == 1, "id: there is already a department {:?}", b.id);
        a2.append(tx)?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"id": id})))
}
