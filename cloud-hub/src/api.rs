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
use accounts::openapi::{self, Doc};
use accounts::{Auth, Caller};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use park_db::{OptionalExtension, params};
use park_model::identity::{Access, Grant, Permission, Principal, Scope};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use utoipa::openapi::{RefOr, Schema};

use crate::metrics::Metrics;
use crate::store::{BuildingKey, HubStore, now_micros, sample_json};
use crate::sync::{Documents, Registry};
use crate::views;

#[derive(Clone)]
pub struct ApiState {
    /// Each park's credential key, by park id (those the config names).
    pub credential_keys:
        Arc<std::collections::HashMap<String, park_model::directory::CredentialKey>>,
    pub store: HubStore,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub documents: Arc<Documents>,
    /// The online payment provider, when `[payments]` configures one.
    pub payments: Option<Arc<crate::payments::Provider>>,
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
    let doc = Doc::new;
    crate::notify::routes(crate::leads::routes(crate::payments::routes(crate::energy::routes(crate::billing::routes(crate::leasing::routes(crate::spaces::routes(
        crate::carparks::routes(crate::import::routes(crate::master::routes(
            http::auth_routes(Routes::default()),
        ))),
    )))))))
        .get("/health", Public, || async {
            Json(views::Status {
                status: "ok".into(),
            })
        })
        .doc(doc("hub", "Liveness: the process answers").returns::<views::Status>())
        .get("/ready", Public, ready)
        .doc(doc("hub", "Readiness: the store commits (503 while it does not)").returns::<views::Status>())
        .get("/metrics", Allowed(TelemetryRead), metrics)
        .doc(doc("hub", "Metrics in the Prometheus text format").text())
        .get("/api/v1/openapi.json", Public, openapi)
        .doc(doc("hub", "This document"))
        .get("/api/v1/parks", Allowed(TelemetryRead), list_parks)
        .doc(doc("parks", "The parks where the caller may read telemetry, with their buildings counted").returns::<views::ParkList>())
        .get(
            "/api/v1/parks/{park}/buildings",
            Allowed(TelemetryRead),
            list_buildings,
        )
        .doc(
            doc("parks", "The buildings of a park the caller may read, each with its edge's connection, backlog and freshness")
                .returns::<views::BuildingList>()
                .describe("404 when the caller sees no building of the park."),
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}",
            Allowed(TelemetryRead),
            get_building,
        )
        .doc(doc("parks", "One building with its edge and how far its uploads are stored").returns::<views::BuildingDetail>())
        .get(
            "/api/v1/parks/{park}/buildings/{building}/points",
            Allowed(TelemetryRead),
            list_points,
        )
        .doc(doc("telemetry", "A building's points with their latest samples").returns::<views::PointList>())
        .get(
            "/api/v1/parks/{park}/buildings/{building}/points/{device}/{point}/history",
            Allowed(TelemetryRead),
            history,
        )
        .doc(
            doc("telemetry", "A point's history: raw samples or rollups over a range")
                .query::<HistoryQuery>()
                .returns::<views::HistoryPage>()
                .describe("`auto` picks raw samples up to 2 hours, 1-minute rollups up to 2 days, 15-minute rollups up to 31 days and hourly ones beyond. A range the wrong way round is a 422."),
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/events",
            Allowed(EventsRead),
            list_events,
        )
        .doc(
            doc("telemetry", "A building's uploaded events in the order stored (or newest first with `before`), a page at a time")
                .query::<EventsQuery>()
                .returns::<views::EventList>()
                .describe("Both `after` and `before` is a 422."),
        )
        .get(
            "/api/v1/parks/{park}/buildings/{building}/audit",
            Allowed(AuditRead),
            building_audit,
        )
        .doc(
            doc("audit", "A building's audit log as its edge uploaded it, newest first, with whether its chain holds")
                .query::<AuditQuery>()
                .returns::<views::BuildingAudit>(),
        )
        .get(
            "/api/v1/parks/{park}/people/{person}/private",
            Allowed(EnterpriseRead),
            get_private,
        )
        .doc(doc("people", "A person's phone and ID numbers, masked unless the caller may read personal data in the park").returns::<views::PrivateFields>())
        .put(
            "/api/v1/parks/{park}/people/{person}/private",
            Allowed(PersonalRead),
            put_private,
        )
        .doc(
            doc("people", "Set a person's phone and ID numbers (sealed at rest; audited without the values)")
                .body::<PrivateBody>()
                .returns::<views::PrivateFields>()
                .describe("The park's directory says which enterprise a person is in: `enterpriseId` counts only for a person it does not know yet, and must agree with it otherwise (422). A field left out or null is removed."),
        )
        .get(
            "/api/v1/parks/{park}/enterprises/{enterprise}/people/{person}/private",
            Allowed(EnterpriseRead),
            get_enterprise_private,
        )
        .doc(doc("people", "The same for a person of the enterprise the path names (another enterprise's people are not found)").returns::<views::PrivateFields>())
        .put(
            "/api/v1/parks/{park}/enterprises/{enterprise}/people/{person}/private",
            Allowed(PersonalRead),
            put_enterprise_private,
        )
        .doc(
            doc("people", "Set the phone and ID numbers of a person of the enterprise the path names")
                .body::<PrivateBody>()
                .returns::<views::PrivateFields>()
                .describe("A person the directory files under another enterprise is not found here (404); `enterpriseId`, if given, must be the path's."),
        )
        .get("/api/v1/edges", Allowed(EdgesManage), list_edges)
        .doc(doc("edges", "Every building's edge: certificate, connection, backlog and data freshness").returns::<views::EdgeList>())
        .get(
            "/api/v1/parks/{park}/audit",
            Allowed(AuditRead),
            park_audit,
        )
        .doc(
            doc("audit", "The hub's audit records of a park (master data, imports, personal data), newest first, a page at a time")
                .query::<AuditQuery>()
                .returns::<views::AuditPage>(),
        )
        .get("/api/v1/audit", Allowed(AuditRead), hub_audit)
        .doc(
            doc("audit", "The hub's own audit log, newest first, a page at a time")
                .query::<AuditQuery>()
                .returns::<views::AuditPage>(),
        )
        .get("/api/v1/users", Allowed(UsersManage), list_users)
        .doc(doc("users", "The users the caller may see: those holding a grant the caller could give").returns::<views::UserList>())
        .post("/api/v1/users", Allowed(UsersManage), create_user)
        .doc(
            doc("users", "Make a user with roles the caller could give")
                .body::<NewUser>()
                .returns::<views::UserView>()
                .describe("A grant the caller could not give is refused (403); a malformed grant, a weak password, a username taken or an unknown department is a 422 that names it."),
        )
        .get("/api/v1/users/{id}", Allowed(UsersManage), get_user)
        .doc(doc("users", "One user the caller may see").returns::<views::UserView>())
        .put(
            "/api/v1/users/{id}/grants",
            Allowed(UsersManage),
            set_grants,
        )
        .doc(
            doc("users", "Replace a user's grants (their sessions end)")
                .body::<GrantsBody>()
                .returns::<views::UserView>()
                .describe("Nobody changes their own grants here, nor a user holding a role they could not give (403)."),
        )
        .post(
            "/api/v1/users/{id}/disable",
            Allowed(UsersManage),
            disable_user,
        )
        .doc(doc("users", "Disable a user: their sessions and tokens stop working at once").returns::<views::UserView>())
        .post(
            "/api/v1/users/{id}/enable",
            Allowed(UsersManage),
            enable_user,
        )
        .doc(doc("users", "Enable a disabled user again").returns::<views::UserView>())
        .post(
            "/api/v1/users/{id}/password",
            Allowed(UsersManage),
            reset_password,
        )
        .doc(doc("users", "Set a user's password (their sessions end)").body::<PasswordReset>().returns::<views::UserView>())
        .post(
            "/api/v1/users/{id}/reset-second-factor",
            Allowed(UsersManage),
            reset_second_factor,
        )
        .doc(doc("users", "Remove a user's second factor (a lost phone): they set one up again at their next login").returns::<views::UserView>())
        .get(
            "/api/v1/departments",
            Allowed(UsersManage),
            list_departments,
        )
        .doc(doc("users", "The departments where the caller manages users").returns::<views::DepartmentList>())
        .post(
            "/api/v1/departments",
            Allowed(UsersManage),
            create_department,
        )
        .doc(
            doc("users", "Make a department, the operator's own or a park's")
                .body::<NewDepartment>()
                .returns::<views::DepartmentCreated>()
                .describe("An id already taken or an unknown parent is a 422 that names it."),
        )
}

/// The OpenAPI document of this API, built once from [`routes`].
pub fn openapi_document() -> &'static Json_ {
    static DOC: OnceLock<Json_> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = routes().openapi(
            "smartpark hub API",
            env!("CARGO_PKG_VERSION"),
            "The operator's API over every park: buildings and their edges, telemetry and events uploaded by the edges, audit logs, users, departments and the private fields of the parks' people. Every route but login, health and this document needs a session or an API token, and the permission it names (x-permission) at the park, building or enterprise its path names, at the operator for the rest; lists show only the rows the caller may see.",
        );
        serde_json::to_value(&doc).unwrap_or_else(|e| json!({"error": e.to_string()}))
    })
}

async fn openapi() -> Json<&'static Json_> {
    Json(openapi_document())
}

/// The routes that have no documentation (a test keeps this empty).
pub fn undocumented_routes() -> Vec<RouteSpec> {
    routes().undocumented()
}

/// The route table, for tests and documentation.
pub fn route_table() -> Vec<RouteSpec> {
    routes().specs()
}

pub fn router(state: ApiState) -> Router {
    routes()
        .into_api_router_with(state.clone(), crate::console::serve)
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
        Ok(()) => Json(views::Status {
            status: "ready".into(),
        })
        .into_response(),
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
    e.newest_event_ts, e.newest_sample_ts, (SELECT 1 FROM revocations r WHERE r.serial = e.serial),
    (SELECT count(*) FROM alarms a WHERE a.building_id = e.building_id AND a.state IN ('active_unacked', 'active_acked')),
    (SELECT count(*) FROM alarms a WHERE a.building_id = e.building_id AND a.state IN ('active_unacked', 'cleared_unacked')),
    (SELECT count(*) FROM alarms a WHERE a.building_id = e.building_id AND a.state IN ('active_unacked', 'active_acked') AND a.severity = 'P0')";

/// An edge row as the API shows it, with the live connection (if any) overriding what was
/// stored.
fn edge_view(r: &park_db::Row, registry: &Registry) -> park_db::Result<views::EdgeView> {
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
    let edge_id = live
        .as_ref()
        .and_then(|l| l.edge_id.lock().ok().and_then(|g| g.clone()))
        .or(r.get::<_, Option<String>>(3)?);
    Ok(views::EdgeView {
        park: key.park,
        building: key.building,
        edge_id,
        certificate: views::CertificateView {
            serial: r.get(2)?,
            enrolled_at: r.get(4)?,
            not_after: r.get(5)?,
            revoked: r.get::<_, Option<i64>>(17)?.is_some(),
        },
        connection: views::ConnectionView {
            state,
            since,
            last_seen,
            remote,
            last_error: r.get(9)?,
        },
        backlog: views::BacklogView {
            events: r.get(12)?,
            rollups: r.get(13)?,
            raw: r.get(14)?,
            reported_at: r.get(11)?,
        },
        freshness: views::FreshnessView {
            newest_event: r.get(15)?,
            newest_sample: r.get(16)?,
        },
        alarms: views::AlarmCounts {
            active: r.get(18)?,
            unacknowledged: r.get(19)?,
            critical: r.get(20)?,
        },
    })
}

async fn edges_where(
    s: &ApiState,
    filter: &'static str,
    args: Vec<String>,
) -> ApiResult<Vec<views::EdgeView>> {
    let registry = s.registry.clone();
    s.store
        .read(move |c| {
            let sql = format!(
                "SELECT {EDGE_COLUMNS} FROM edges e JOIN buildings b ON b.id = e.building_id {filter} ORDER BY b.park, b.building"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(park_db::params_from_iter(args), |r| edge_view(r, &registry))?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)
}

async fn list_edges(State(s): State<ApiState>) -> ApiResult<Json<views::EdgeList>> {
    let edges = edges_where(&s, "", Vec::new()).await?;
    Ok(Json(views::EdgeList {
        edges,
        now: now_micros(),
    }))
}

/// The parks where the caller may read telemetry somewhere.
async fn list_parks(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<views::ParkList>> {
    let p = &caller.principal;
    let edges: Vec<views::EdgeView> = edges_where(&s, "", Vec::new())
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
    let parks = parks
        .into_iter()
        .filter(|park| p.can_somewhere_in(Permission::TelemetryRead, park))
        .map(|park| {
            let of_park: Vec<&views::EdgeView> = edges.iter().filter(|e| e.park == park).collect();
            let connected = of_park
                .iter()
                .filter(|e| e.connection.state == "connected")
                .count();
            views::ParkSummary {
                park,
                buildings: of_park.len(),
                edges_connected: connected,
            }
        })
        .collect();
    Ok(Json(views::ParkList { parks }))
}

/// Whether the caller may read telemetry of the building an edge row is of.
fn building_visible(p: &Principal, edge: &views::EdgeView) -> bool {
    p.can(
        Permission::TelemetryRead,
        &Scope::building(&edge.park, &edge.building),
    )
}

/// The buildings of a park whose telemetry the caller may read.
async fn list_buildings(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(park): Path<String>,
) -> ApiResult<Json<views::BuildingList>> {
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
    let buildings: Vec<views::EdgeView> = edges_where(&s, "WHERE b.park = ?1", vec![park.clone()])
        .await?
        .into_iter()
        .filter(|e| building_visible(&caller.principal, e))
        .collect();
    if buildings.is_empty() {
        return Err(ApiError::not_found(format!("no park {park:?}")));
    }
    Ok(Json(views::BuildingList { park, buildings }))
}

async fn get_building(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
) -> ApiResult<Json<views::BuildingDetail>> {
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
    let durable_cursors = views::DurableCursors {
        events: s.store.durable(&key, sync_protocol::UploadStream::Events),
        rollups: s.store.durable(&key, sync_protocol::UploadStream::Rollups),
        raw: s.store.durable(&key, sync_protocol::UploadStream::Raw),
    };
    Ok(Json(views::BuildingDetail {
        building: edge,
        durable_cursors,
    }))
}

async fn building_id(s: &ApiState, park: &str, building: &str) -> ApiResult<i64> {
    s.store
        .existing_building_id(&BuildingKey::new(park, building))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no building {park}/{building}")))
}

async fn list_points(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
) -> ApiResult<Json<views::PointList>> {
    let bid = building_id(&s, &park, &building).await?;
    let points = s
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT p.point, l.ts, l.value, l.q, l.reason FROM points p LEFT JOIN latest l ON l.point_id = p.id
                 WHERE p.building_id = ?1 ORDER BY p.point",
            )?;
            let rows = stmt.query_map([bid], |r| {
                let latest = match r.get::<_, Option<i64>>(1)? {
                    Some(ts) => Some(views::SampleView::from_json(sample_json(
                        ts,
                        r.get_ref(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))),
                    None => None,
                };
                Ok(views::PointLatest {
                    point: r.get(0)?,
                    latest,
                })
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(views::PointList {
        park,
        building,
        points,
    }))
}

/// The latest time a query may name: the end of the year 9999, the last a four-digit
/// year names, in microseconds since 1970. Any range a person means fits below it, and no
/// arithmetic on times within it overflows.
const MAX_TIME: i64 = 253_402_300_799_999_999;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Microseconds since 1970; defaults to one hour before `to`.
    #[param(minimum = 0, maximum = 253_402_300_799_999_999_i64)]
    from: Option<i64>,
    /// Microseconds since 1970; defaults to now.
    #[param(minimum = 0, maximum = 253_402_300_799_999_999_i64)]
    to: Option<i64>,
    /// `raw`, `1m`, `15m`, `1h` or `auto` (the default).
    #[param(schema_with = history_resolutions)]
    resolution: Option<String>,
    /// At most 100000; 10000 when left out.
    #[param(minimum = 1, maximum = 100_000)]
    limit: Option<usize>,
}

fn history_resolutions() -> RefOr<Schema> {
    openapi::one_of(["raw", "1m", "15m", "1h", "auto"])
}

async fn history(
    State(s): State<ApiState>,
    Path((park, building, device, point)): Path<(String, String, String, String)>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<views::HistoryPage>> {
    let Query(q) = q?;
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if let Some(t) = t
            && !(0..=MAX_TIME).contains(&t)
        {
            return Err(ApiError::bad_request(format!(
                "{name} must be microseconds since 1970 (0 to {MAX_TIME}), not {t}"
            )));
        }
    }
    let limit = q.limit.unwrap_or(10_000);
    if limit == 0 || limit > 100_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 100000"));
    }
    let bid = building_id(&s, &park, &building).await?;
    let to = q.to.unwrap_or_else(now_micros);
    let from = q.from.unwrap_or(to - 3_600_000_000);
    if from >= to {
        return Err(ApiError::invalid(format!(
            "from ({from}) must be before to ({to})"
        )));
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
    let rows: Option<Vec<views::HistoryRow>> = s
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
                    let sample = sample_json(r.get(0)?, r.get_ref(1)?, r.get(2)?, r.get(3)?);
                    Ok(views::HistoryRow::Raw(views::SampleView::from_json(sample)))
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
                    Ok(views::HistoryRow::Rollup(views::RollupRow {
                        bucket: r.get(0)?,
                        min: r.get(1)?,
                        max: r.get(2)?,
                        avg,
                        last: r.get(5)?,
                        count,
                        delta: r.get(6)?,
                        bad: r.get(7)?,
                    }))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            Ok(Some(rows))
        })
        .await
        .map_err(ApiError::internal)?;
    let rows =
        rows.ok_or_else(|| ApiError::not_found(format!("no point {key} in {park}/{building}")))?;
    Ok(Json(views::HistoryPage {
        park,
        building,
        point: key,
        from,
        to,
        resolution: resolution.to_string(),
        rows,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events with sequence numbers above this one (0, the default: from the first).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Newest first instead: events with sequence numbers below this one (not with
    /// `after`); a number above the last sequence number reads from the newest.
    #[param(minimum = 0)]
    before: Option<i64>,
    /// At most 10000; 100 when left out.
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<usize>,
}

async fn list_events(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<views::EventList>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let after = sequence("after", q.after)?.unwrap_or(0) as i64;
    let before = sequence("before", q.before)?.map(|b| b as i64);
    if before.is_some() && q.after.is_some() {
        return Err(ApiError::invalid("give after or before, not both"));
    }
    let bid = building_id(&s, &park, &building).await?;
    let events = s
        .store
        .read(move |c| {
            let (order, bound) = match before {
                Some(b) => ("seq < ?2 ORDER BY seq DESC", b),
                None => ("seq > ?2 ORDER BY seq", after),
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT seq, id, ts, body, received FROM events
                 WHERE building_id = ?1 AND coalesce({kind}, '') <> 'audit'
                 AND {order} LIMIT ?3",
                kind = crate::store::event_kind(c.dialect())
            ))?;
            let rows = stmt.query_map(params![bid, bound, limit as i64], |r| {
                let id: Vec<u8> = r.get(1)?;
                let body: Vec<u8> = r.get(3)?;
                // Event bodies are opaque to the protocol; the edge sends JSON.
                let body = match std::str::from_utf8(&body) {
                    Ok(t) => serde_json::from_str(t).unwrap_or_else(|_| json!(t)),
                    Err(_) => Json_::Null,
                };
                Ok(views::EventView {
                    seq: r.get(0)?,
                    id: uuid_text(&id),
                    ts: r.get(2)?,
                    body,
                    received: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(views::EventList {
        park,
        building,
        events,
    }))
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// At most 10000; 100 when left out.
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<usize>,
    /// Page backwards: only records before this sequence number.
    #[param(minimum = 0)]
    before: Option<i64>,
}

/// A sequence number a query names: 0 or more (they are SQLite integers, so the type
/// bounds them above).
fn sequence(name: &str, n: Option<i64>) -> ApiResult<Option<u64>> {
    match n {
        Some(n) if n < 0 => Err(ApiError::bad_request(format!(
            "{name} must be a sequence number (0 or more), not {n}"
        ))),
        n => Ok(n.map(|n| n as u64)),
    }
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
) -> ApiResult<Json<views::AuditPage>> {
    audit_page(&s, q?.0, None).await
}

/// The hub's own audit records of one park: those whose target lies in it (`park/...`).
async fn park_audit(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<views::AuditPage>> {
    audit_page(&s, q?.0, Some(park)).await
}

async fn audit_page(
    s: &ApiState,
    q: AuditQuery,
    park: Option<String>,
) -> ApiResult<Json<views::AuditPage>> {
    let limit = audit_limit(&q)?;
    let before = sequence("before", q.before)?;
    let entries = s
        .store
        .read(move |c| match &park {
            Some(p) => accounts::audit::list_within(c, p, before, limit),
            None => accounts::audit::list(c, before, limit),
        })
        .await
        .map_err(ApiError::internal)?;
    let before = entries.last().and_then(|r| r["seq"].as_u64());
    Ok(Json(views::AuditPage { entries, before }))
}

/// A building's audit log as its edge uploaded it, newest first, with whether its chain
/// holds.
async fn building_audit(
    State(s): State<ApiState>,
    Path((park, building)): Path<(String, String)>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<views::BuildingAudit>> {
    let Query(q) = q?;
    let limit = audit_limit(&q)?;
    let before = sequence("before", q.before)?;
    let bid = building_id(&s, &park, &building).await?;
    let chain = s
        .store
        .read(move |c| crate::audit::edge_chain(c, bid))
        .await
        .map_err(ApiError::internal)?;
    let verdict = match park_model::audit::verify(&chain, None) {
        Ok((n, _)) => views::ChainVerdict {
            intact: true,
            records: Some(n),
            broken_at: None,
        },
        Err(e) => views::ChainVerdict {
            intact: false,
            records: None,
            broken_at: Some(e.to_string()),
        },
    };
    let entries: Vec<Json_> = chain
        .iter()
        .rev()
        .filter(|r| before.is_none_or(|b| r.record.seq < b))
        .take(limit)
        .map(accounts::audit::record_json)
        .collect();
    let next = entries.last().and_then(|r| r["seq"].as_u64());
    Ok(Json(views::BuildingAudit {
        park,
        building,
        chain: verdict,
        entries,
        before: next,
    }))
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
) -> ApiResult<Json<views::PrivateFields>> {
    let row = private_row(&s, &park, &person).await?.ok_or_else(|| {
        ApiError::not_found(format!("no private fields kept for {park}/{person}"))
    })?;
    let unmasked = caller
        .principal
        .can(Permission::PersonalRead, &Scope::park(&park));
    Ok(Json(crate::people::private_view(
        &s.auth, &park, &person, &row, unmasked,
    )))
}

/// The same for a person of the enterprise the path names (an enterprise's own admin):
/// another enterprise's people are not found here.
async fn get_enterprise_private(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise, person)): Path<(String, String, String)>,
) -> ApiResult<Json<views::PrivateFields>> {
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
    Ok(Json(crate::people::private_view(
        &s.auth, &park, &person, &row, unmasked,
    )))
}

/// A person's private fields, replaced as a whole: a field left out or `null` is removed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrivateBody {
    /// The person's enterprise, for a person the hub's directory does not know yet.
    #[schema(pattern = "^[A-Za-z0-9._@-]{2,64}$")]
    enterprise_id: Option<String>,
    /// 5 to 20 digits, spaces, `+` or `-`.
    #[schema(pattern = "^[0-9 +-]{5,20}$")]
    phone: Option<String>,
    /// An ID card or passport number: 6 to 32 letters or digits.
    #[schema(pattern = "^[A-Za-z0-9]{6,32}$")]
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
) -> ApiResult<Json<views::PrivateFields>> {
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
        (None, Some(c)) => {
            return Err(ApiError::invalid(format!(
                "enterpriseId {c:?} is not an enterprise id (2 to 64 letters, digits, '.', '_', '-' or '@')"
            )));
        }
        (None, None) => {
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
) -> ApiResult<Json<views::PrivateFields>> {
    let Json(b) = body?;
    // An enterprise's people are filed under its id: a name no enterprise can have names
    // none.
    if !park_model::identity::valid_username(&enterprise) {
        return Err(ApiError::not_found(format!(
            "no enterprise {enterprise:?} in park {park}"
        )));
    }
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
fn visible_user(p: &Principal, user: &views::UserView) -> bool {
    user.grants().iter().any(|g| p.may_grant(g)) || user.id == p.user_id
}

async fn all_users(s: &ApiState) -> ApiResult<Vec<views::UserView>> {
    let rows = s
        .store
        .read(manage::list)
        .await
        .map_err(ApiError::internal)?;
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(row)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("an account row: {e}")))
        })
        .collect()
}

/// A user as the caller sees it: with whether the caller may change it.
fn as_seen_by(caller: &Caller, mut u: views::UserView) -> views::UserView {
    u.manageable = caller.principal.may_manage(&u.grants());
    u
}

async fn list_users(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<views::UserList>> {
    let users = all_users(&s)
        .await?
        .into_iter()
        .filter(|u| visible_user(&caller.principal, u))
        .map(|u| as_seen_by(&caller, u))
        .collect();
    Ok(Json(views::UserList { users }))
}

/// A user the caller may see, or 404 (never telling whether others exist).
async fn visible(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<views::UserView> {
    all_users(s)
        .await?
        .into_iter()
        .find(|u| u.id == id && visible_user(&caller.principal, u))
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

/// A user the caller may change: every grant it holds is one the caller could give, and
/// it is not the caller (nobody changes their own roles or locks themselves out).
async fn manageable(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> ApiResult<views::UserView> {
    let checked = async {
        let u = visible(s, caller, id).await?;
        if id == caller.principal.user_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you cannot change your own account here; ask another administrator",
            ));
        }
        if !caller.principal.may_manage(&u.grants()) {
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
) -> ApiResult<Json<views::UserView>> {
    let u = visible(&s, &caller, &id).await?;
    Ok(Json(as_seen_by(&caller, u)))
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

/// A user to make. The password is checked against the password policy (length, common
/// passwords, the username in it); each grant is `role@scope`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9._@-]{2,64}$")]
    username: String,
    /// At most 200 bytes of UTF-8, not only spaces.
    #[schema(min_length = 1, max_length = 200)]
    display_name: String,
    /// 12 to 128 characters, none of them control characters (the password policy also
    /// refuses common passwords, the username within it and fewer than 5 different
    /// characters).
    #[schema(
        min_length = 12,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    password: String,
    #[schema(schema_with = grant_list)]
    grants: Vec<String>,
    /// The id of a department the user belongs to.
    #[schema(pattern = "^[A-Za-z0-9._@-]{2,64}$")]
    department: Option<String>,
}

/// 1 to 64 grants, each `role@scope`: an enterprise's roles at an enterprise
/// (`enterprise:P/E`), the others at the operator, a park or a building (`operator`,
/// `park:P`, `building:P/B`), as `Grant` parses them.
fn grant_list() -> RefOr<Schema> {
    use park_model::identity::Role;
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let (of_enterprises, others): (Vec<Role>, Vec<Role>) = Role::ALL
        .into_iter()
        .partition(|r| r.fits(&Scope::enterprise("p", "e")));
    let names = |roles: &[Role]| {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    const ID: &str = "[A-Za-z0-9._-]{1,64}";
    let grant = format!(
        "^(({})@(operator|park:{ID}|building:{ID}/{ID})|({})@enterprise:{ID}/{ID})$",
        names(&others),
        names(&of_enterprises),
    );
    RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(grant)),
            )
            .min_items(Some(1))
            .max_items(Some(64))
            .build(),
    ))
}

/// Runs an account change in an immediate transaction, audits a refusal, and reads the
/// accounts again so the change applies at once (and reaches the edges).
async fn account_change<T: Send + 'static>(
    s: &ApiState,
    audit: accounts::Audit,
    f: impl FnOnce(&park_db::Connection<'_>) -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let result = s.store.admin(f).await.map_err(|e| {
        // Refusals of the rules in `manage` are the caller's mistakes; the store's are ours.
        let text = format!("{e:#}");
        if e.downcast_ref::<park_db::Error>().is_some() {
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
) -> ApiResult<Json<views::UserView>> {
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

/// A user's new grants, replacing all they hold.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    #[schema(schema_with = grant_list)]
    grants: Vec<String>,
}

async fn set_grants(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<GrantsBody>, JsonRejection>,
) -> ApiResult<Json<views::UserView>> {
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
) -> ApiResult<Json<views::UserView>> {
    let action = if disabled {
        "user_disable"
    } else {
        "user_enable"
    };
    let u = manageable(&s, &caller, &id, action).await?;
    let audit = s
        .auth
        .audit(&caller.actor(), action, &u.username, json!({"id": id}))
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
) -> ApiResult<Json<views::UserView>> {
    set_disabled(s, caller, id, true).await
}

async fn enable_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::UserView>> {
    set_disabled(s, caller, id, false).await
}

/// A user's new password, checked against the password policy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordReset {
    /// 12 to 128 characters, none of them control characters.
    #[schema(
        min_length = 12,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    password: String,
}

async fn reset_password(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<PasswordReset>, JsonRejection>,
) -> ApiResult<Json<views::UserView>> {
    let Json(b) = body?;
    let u = manageable(&s, &caller, &id, "password_reset").await?;
    let username = u.username.clone();
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
) -> ApiResult<Json<views::UserView>> {
    let u = manageable(&s, &caller, &id, "second_factor_reset").await?;
    let audit = s
        .auth
        .audit(
            &caller.actor(),
            "second_factor_reset",
            &u.username,
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
) -> ApiResult<Json<views::DepartmentList>> {
    let rows: Vec<views::Department> = s
        .store
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, park, parent_id, created, created_by, updated, updated_by FROM departments ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(views::Department {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    park: r.get(2)?,
                    parent: r.get(3)?,
                    created: r.get(4)?,
                    created_by: r.get(5)?,
                    updated: r.get(6)?,
                    updated_by: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
        .map_err(ApiError::internal)?;
    let p = &caller.principal;
    let departments = rows
        .into_iter()
        .filter(|d| match &d.park {
            Some(park) => p.can_somewhere_in(Permission::UsersManage, park),
            None => p.can(Permission::UsersManage, &Scope::Operator),
        })
        .collect();
    Ok(Json(views::DepartmentList { departments }))
}

/// A department to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDepartment {
    #[schema(pattern = "^[A-Za-z0-9._@-]{2,64}$")]
    id: String,
    /// Not only spaces.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The park the department belongs to; none for the operator's own.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    park: Option<String>,
    /// The id of the department it is part of.
    #[schema(pattern = "^[A-Za-z0-9._@-]{2,64}$")]
    parent: Option<String>,
}

async fn create_department(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewDepartment>, JsonRejection>,
) -> ApiResult<Json<views::DepartmentCreated>> {
    let Json(b) = body?;
    if !park_model::identity::valid_username(&b.id) {
        return Err(ApiError::invalid(
            "id takes 2 to 64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    if b.name.trim().is_empty() || b.name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name must be 1 to 200 characters, not only spaces",
        ));
    }
    if let Some(p) = &b.park
        && !sync_protocol::transport::is_valid_id(p)
    {
        return Err(ApiError::invalid(format!(
            "park {p:?} is not a park id (1 to 64 letters, digits, '.', '_' or '-')"
        )));
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
            "INSERT INTO departments (id, name, park, parent_id, created, created_by, updated, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6)
             ON CONFLICT DO NOTHING",
            params![b.id, b.name, b.park, b.parent, now, by],
        )?;
        anyhow::ensure!(n == 1, "id: there is already a department {:?}", b.id);
        a2.append(tx)?;
        Ok(())
    })
    .await?;
    Ok(Json(views::DepartmentCreated { id }))
}
