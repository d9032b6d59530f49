//! The LAN API under `/api/v1`, plus `/health`, `/ready` and `/metrics`.
//!
//! Every route is declared once, with what it requires of its caller, in [`routes`]: the
//! router is built from that table and every request is checked against it (a route that
//! is not in it is refused to everyone). A request carries a session cookie (with the CSRF
//! token on writes) or an API token; the acting user comes from there, never from the body.
//! Every request's `Host` must name this node and every write's `Origin` must be its own
//! (no DNS rebinding, no cross-site writes).
//!
//! Every error is JSON of the form `{"code", "message", "details", "traceId"}`; bad input
//! (unknown point, malformed body, out-of-range query) is a 4xx that names what was wrong
//! and is counted, never a panic. Every act is audited with its outcome, in the same
//! transaction as the change it makes where it makes one.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use accounts::http::{
    self, ApiAuth, ApiError, ApiResult, RouteIndex, RouteScope, RouteSpec, Routes, audit_outcome,
};
use accounts::openapi::{self, Doc};
use accounts::{Audit, Auth, Caller};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use device_drivers::{DeviceStatus, PointKey, Sample, Value, WriteError, WriteRequest, now_micros};
use futures_util::Stream;
use park_model::identity::{Access, Permission};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use tokio::sync::oneshot;
use utoipa::openapi::{RefOr, Schema};

use crate::metrics::Metrics;
use crate::node::{Devices, device_points};
use crate::rollup::Level;
use crate::store::Store;
use crate::views;

/// What the API serves from: one allocation shared by every request (each middleware
/// and handler gets a clone of the state, so a clone must cost one reference count).
#[derive(Clone)]
pub struct ApiState(Arc<ApiParts>);

impl ApiState {
    pub fn new(parts: ApiParts) -> ApiState {
        ApiState(Arc::new(parts))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiParts;
    fn deref(&self) -> &ApiParts {
        &self.0
    }
}

pub struct ApiParts {
    pub park: String,
    pub building: String,
    pub store: Store,
    pub devices: Devices,
    pub metrics: Arc<Metrics>,
    pub park_service: Option<crate::park::ParkService>,
    pub alarms: crate::alarms::Alarms,
    /// The uplink's state, when a hub is configured.
    pub sync: Option<Arc<crate::sync::SyncStatus>>,
    pub auth: Auth,
    /// The building's broker, when it runs one.
    pub broker: Option<Arc<crate::broker::BrokerHealth>>,
}

impl ApiAuth for ApiState {
    fn auth(&self) -> &Auth {
        &self.auth
    }

    fn routes(&self) -> &RouteIndex {
        static INDEX: OnceLock<RouteIndex> = OnceLock::new();
        INDEX.get_or_init(|| RouteIndex::new(&route_table()))
    }

    /// Every route of an edge acts in its building.
    fn scope_of(&self, _path: &str, _params: &[(&str, &str)]) -> RouteScope {
        RouteScope::Own
    }
}

/// Every route of the LAN API with what it requires: the one table.
fn routes() -> Routes<ApiState> {
    use Access::{Allowed, Public};
    use Permission::*;
    let doc = Doc::new;
    http::auth_routes(Routes::default())
        .get("/health", Public, || async {
            Json(json!({"status": "ok"}))
        })
        .doc(doc("node", "Liveness: the process answers"))
        .get("/ready", Public, ready)
        .doc(doc("node", "Readiness: the store, the drivers and the broker are up (503 while not)"))
        .get("/metrics", Allowed(TelemetryRead), metrics)
        .doc(doc("node", "Metrics in the Prometheus text format").text())
        .get("/api/v1/openapi.json", Public, openapi)
        .doc(doc("node", "This document"))
        .get("/api/v1/users", Allowed(UsersManage), list_users)
        .doc(doc("users", "The accounts that may log in here, with their roles in this building").returns::<views::UserList>())
        .get("/api/v1/site", Allowed(TelemetryRead), site)
        .doc(doc("node", "The park, the building and what the node reads").returns::<views::Site>())
        .get("/api/v1/devices", Allowed(TelemetryRead), list_devices)
        .doc(doc("devices", "Every device with its state").returns::<views::DeviceList>())
        .get("/api/v1/devices/{id}", Allowed(TelemetryRead), get_device)
        .doc(doc("devices", "One device with its points").returns::<views::DeviceDetail>())
        .get("/api/v1/points", Allowed(TelemetryRead), list_points)
        .doc(
            doc("points", "The points with their latest values, a page at a time, filtered by device or name")
                .query::<PointsQuery>()
                .returns::<views::PointPage>(),
        )
        .get(
            "/api/v1/points/{device}/{point}",
            Allowed(TelemetryRead),
            get_point,
        )
        .doc(doc("points", "One point with its latest value").returns::<views::PointView>())
        .get(
            "/api/v1/points/{device}/{point}/history",
            Allowed(TelemetryRead),
            history,
        )
        .doc(
            doc("points", "A point's history: raw samples or rollups over a range")
                .query::<HistoryQuery>()
                .returns::<views::HistoryPage>()
                .describe("`auto` picks raw samples up to 2 hours and rollups beyond; ranges and limits are bounded and a value outside them is a 422 that names it."),
        )
        .post(
            "/api/v1/points/{device}/{point}/write",
            Allowed(PointsWrite),
            write_point,
        )
        .doc(
            doc("points", "Write a writable point (a setpoint, a command), checked against its range")
                .body::<WriteBody>()
                .returns::<views::WriteAnswer>(),
        )
        .get("/api/v1/stream", Allowed(TelemetryRead), stream)
        .doc(doc("points", "Live values as server-sent events").query::<StreamQuery>().event_stream())
        .get("/api/v1/audit", Allowed(AuditRead), audit)
        .doc(doc("audit", "The audit log, newest first, a page at a time").query::<AuditQuery>().returns::<views::AuditPage>())
        .get("/api/v1/events/export", Allowed(EventsRead), export_events)
        .doc(
            doc("events", "The event log as a CSV file (at most 50,000 rows, newest first)")
                .query::<EventsExportQuery>()
                .csv(),
        )
        .get("/api/v1/audit/export", Allowed(AuditRead), export_audit)
        .doc(doc("audit", "The audit log as a CSV file (at most 50,000 records, newest first, with their hashes)").csv())
        .get("/api/v1/events", Allowed(EventsRead), list_events)
        .doc(doc("events", "The event log (door decisions, parking, alarms), newest first, a page at a time").query::<EventsQuery>().returns::<views::EventPage>())
        .get("/api/v1/sync", Allowed(TelemetryRead), sync_status)
        .doc(doc("node", "The uplink to the hub: connected, backlog, last acknowledgement").returns::<views::SyncState>())
        .get("/api/v1/doors", Allowed(TelemetryRead), list_doors)
        .doc(doc("doors", "Every door with its state and last decision").returns::<views::DoorList>())
        .post("/api/v1/doors/{id}/open", Allowed(DoorsOpen), open_door)
        .doc(doc("doors", "Open a door now, with a reason (audited)").body::<ManualOpen>())
        .get("/api/v1/lots", Allowed(TelemetryRead), list_lots)
        .doc(doc("parking", "Every car park lot with its occupancy").returns::<views::LotList>())
        .get(
            "/api/v1/parking/sessions",
            Allowed(EventsRead),
            list_sessions,
        )
        .doc(doc("parking", "The open parking sessions").returns::<views::ParkingSessionList>())
        .get("/api/v1/parking/review", Allowed(PlatesReview), list_review)
        .doc(doc("parking", "The plate review queue: reads the camera was not sure of").returns::<views::ReviewQueue>())
        .post(
            "/api/v1/parking/review/{id}",
            Allowed(PlatesReview),
            resolve_review,
        )
        .doc(doc("parking", "Admit (with the plate as read by a person) or reject a queued read").body::<Review>())
        .get("/api/v1/people", Allowed(CredentialsEdit), list_people)
        .doc(doc("doors", "People of the park's directory with their access groups and credentials (masked), a page at a time").query::<PeopleQuery>().returns::<views::PeoplePage>())
        .post(
            "/api/v1/credentials",
            Allowed(CredentialsEdit),
            put_credential,
        )
        .doc(doc("doors", "Issue a credential (a visitor's card) within this building's own access groups").body::<NewCredential>().returns::<views::CredentialIssued>())
        .post(
            "/api/v1/credentials/{id}/status",
            Allowed(CredentialsEdit),
            credential_status,
        )
        .doc(doc("doors", "Suspend, restore or report lost a credential").body::<CredentialStatusChange>().returns::<views::CredentialStatusSet>())
        .post("/api/v1/passes", Allowed(CredentialsEdit), put_pass)
        .doc(doc("parking", "Issue a parking pass").body::<NewPass>().returns::<views::PassIssued>())
        .post(
            "/api/v1/passes/{id}/status",
            Allowed(CredentialsEdit),
            pass_status,
        )
        .doc(doc("parking", "Suspend or restore a parking pass").body::<PassStatusChange>().returns::<views::PassStatusSet>())
        .get("/api/v1/store", Allowed(TelemetryRead), store_stats)
        .doc(doc("node", "The store: what it committed, its size against its disk budget").returns::<views::StoreState>())
        .get("/api/v1/alarms", Allowed(TelemetryRead), list_alarms)
        .doc(doc("alarms", "The alarms, by state, severity, source or rule").query::<AlarmQuery>().returns::<views::AlarmList>())
        .get("/api/v1/alarms/{id}", Allowed(TelemetryRead), get_alarm)
        .doc(doc("alarms", "One alarm with its acknowledgement, shelf and comments").returns::<rules_engine::Alarm>())
        .post(
            "/api/v1/alarms/{id}/acknowledge",
            Allowed(AlarmsAct),
            acknowledge_alarm,
        )
        .doc(doc("alarms", "Acknowledge an alarm, with a comment").body::<AckBody>().returns::<rules_engine::Alarm>())
        .post(
            "/api/v1/alarms/{id}/shelve",
            Allowed(AlarmsAct),
            shelve_alarm,
        )
        .doc(doc("alarms", "Shelve an alarm for a while (at most 7 days)").body::<ShelveBody>().returns::<rules_engine::Alarm>())
        .post(
            "/api/v1/alarms/{id}/unshelve",
            Allowed(AlarmsAct),
            unshelve_alarm,
        )
        .doc(doc("alarms", "Bring a shelved alarm back").returns::<rules_engine::Alarm>())
        .post(
            "/api/v1/alarms/{id}/comment",
            Allowed(AlarmsAct),
            comment_alarm,
        )
        .doc(doc("alarms", "Comment on an alarm").body::<CommentBody>().returns::<rules_engine::Alarm>())
        .get("/api/v1/rules", Allowed(TelemetryRead), list_rules)
        .doc(doc("rules", "The loaded rules, their state and the rule file's last error").returns::<crate::alarms::RulesView>())
        .post("/api/v1/rules/reload", Allowed(RulesEdit), reload_rules)
        .doc(doc("rules", "Load the rule file again (a bad file keeps the running rules)").returns::<views::Reloaded>())
}

/// The OpenAPI document of this API, built once from [`routes`].
pub fn openapi_document() -> &'static Json_ {
    static DOC: OnceLock<Json_> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = routes().openapi(
            "smartpark edge LAN API",
            env!("CARGO_PKG_VERSION"),
            "The building's own API: devices, points, alarms, doors, the car park, rules, events and the audit log. Every route but login, health and this document needs a session or an API token, and the permission it names (x-permission) in this building.",
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

/// The same routes with no authentication at all: never served by a node; `smartpark
/// bench auth` serves it beside the real router to measure what the checks cost.
#[doc(hidden)]
pub fn router_without_auth(state: ApiState) -> Router {
    let (app, _) = routes().into_router();
    app.fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Every request is counted, and every 4xx counted as invalid input.
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

async fn list_users(State(s): State<ApiState>) -> Json<views::UserList> {
    Json(views::UserList {
        users: s.auth.accounts(),
    })
}

async fn ready(State(s): State<ApiState>) -> Response {
    let not_ready = |reason: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
    };
    if let Err(reason) = s.store.health() {
        return not_ready(format!("the store is not committing: {reason}"));
    }
    if let Some(down) = s.broker.as_ref().and_then(|b| b.down()) {
        return not_ready(down.to_string());
    }
    Json(json!({"status": "ready"})).into_response()
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
    let up = |b: &std::sync::atomic::AtomicBool| f64::from(u8::from(b.load(Relaxed)));
    let broker: Vec<(String, f64)> = s
        .broker
        .iter()
        .flat_map(|b| {
            [
                ("{part=\"broker\"}".to_string(), up(&b.running)),
                ("{part=\"field_link\"}".to_string(), up(&b.field_link_up)),
                (
                    "{part=\"telemetry_link\"}".to_string(),
                    up(&b.telemetry_link_up),
                ),
            ]
        })
        .collect();
    let body = s.metrics.render(&[
        (
            "smartpark_edge_device_online",
            "Whether a device is online (1) or not (0).",
            online,
        ),
        (
            "smartpark_edge_mqtt_up",
            "Whether the building's MQTT broker runs and the node's links to it are up (1) or not (0).",
            broker,
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

async fn site(State(s): State<ApiState>) -> Json<views::Site> {
    let points: usize = s
        .devices
        .values()
        .map(|d| d.spec.profile.points.len())
        .sum();
    Json(views::Site {
        park: s.park.clone(),
        building: s.building.clone(),
        devices: s.devices.len(),
        points,
        now: now_micros(),
    })
}

async fn list_devices(State(s): State<ApiState>) -> Json<views::DeviceList> {
    Json(views::DeviceList {
        devices: s.devices.values().map(views::DeviceView::new).collect(),
    })
}

async fn get_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::DeviceDetail>> {
    let d = s
        .devices
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device {id:?}")))?;
    Ok(Json(views::DeviceDetail {
        device: views::DeviceView::new(d),
        point_list: device_points(&d.spec)
            .map(|(key, p)| views::PointView::new(&s.store, &key, p))
            .collect(),
    }))
}

pub fn sample_json(s: &Sample) -> Json_ {
    json!(views::SampleView::from(s))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PointsQuery {
    /// Points whose key contains this (case-insensitive).
    #[param(max_length = 128)]
    q: Option<String>,
    /// Only this device's points.
    #[param(max_length = 128)]
    device: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 1000; 100 when left out.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The points in key order, a page at a time, filtered here: a building's thousands of
/// points never go to the browser at once.
async fn list_points(
    State(s): State<ApiState>,
    q: Result<Query<PointsQuery>, QueryRejection>,
) -> ApiResult<Json<views::PointPage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    for (name, v) in [("q", &q.q), ("device", &q.device)] {
        if v.as_ref().is_some_and(|v| v.chars().count() > 128) {
            return Err(ApiError::bad_request(format!(
                "{name} takes at most 128 characters"
            )));
        }
    }
    let offset = q.offset.unwrap_or(0);
    let needle =
        q.q.as_deref()
            .map(str::to_lowercase)
            .filter(|n| !n.is_empty());
    let mut matching: Vec<(PointKey, &device_drivers::profile::PointSpec)> = s
        .devices
        .values()
        .filter(|d| {
            q.device
                .as_deref()
                .is_none_or(|id| d.spec.id.as_str() == id)
        })
        .flat_map(|d| device_points(&d.spec))
        .filter(|(k, _)| {
            needle
                .as_deref()
                .is_none_or(|n| k.as_str().to_lowercase().contains(n))
        })
        .collect();
    matching.sort_by(|a, b| a.0.cmp(&b.0));
    let total = matching.len();
    let points = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(k, p)| views::PointView::new(&s.store, k, p))
        .collect();
    Ok(Json(views::PointPage {
        total,
        offset,
        limit,
        points,
    }))
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
) -> ApiResult<Json<views::PointView>> {
    let (key, p, _) = find_point(&s, &device, &point)?;
    Ok(Json(views::PointView::new(&s.store, &key, p)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Microseconds since the Unix epoch; defaults to one hour before `to`.
    #[param(minimum = 0, maximum = 7_258_118_400_000_000_i64)]
    from: Option<i64>,
    /// Microseconds since the Unix epoch; defaults to now.
    #[param(minimum = 0, maximum = 7_258_118_400_000_000_i64)]
    to: Option<i64>,
    /// `raw`, `1m`, `15m`, `1h` or `auto` (the default).
    #[param(schema_with = resolutions)]
    resolution: Option<String>,
    #[param(minimum = 1, maximum = 100_000)]
    limit: Option<usize>,
}

/// The latest time a query may name: the year 2200, in microseconds since 1970.
const MAX_TIME: i64 = 7_258_118_400_000_000;

fn resolutions() -> RefOr<Schema> {
    openapi::one_of(["raw", "1m", "15m", "1h", "auto"])
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
) -> ApiResult<Json<views::HistoryPage>> {
    let Query(q) = q?;
    let (key, _, _) = find_point(&s, &device, &point)?;
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if let Some(t) = t
            && !(0..=MAX_TIME).contains(&t)
        {
            return Err(ApiError::invalid(format!(
                "{name} must be microseconds since 1970 (0 to {MAX_TIME}), not {t}"
            )));
        }
    }
    let to = q.to.unwrap_or_else(now_micros);
    let from = q.from.unwrap_or(to.saturating_sub(3_600_000_000));
    if from >= to {
        return Err(ApiError::invalid(format!(
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
    // Raw samples are read through the time index of every point, so one wide raw query
    // would hold a reader (and the WAL) for as long as it scans: ranges are bounded.
    const HOUR: i64 = 3_600_000_000;
    let widest = match resolution {
        "raw" => Some(("raw", 6 * HOUR, "6 hours")),
        "1m" => Some(("1m", 7 * 24 * HOUR, "7 days")),
        _ => None,
    };
    if let Some((r, max, shown)) = widest
        && to - from > max
    {
        return Err(ApiError::invalid(format!(
            "a {r} history covers at most {shown}; ask for a shorter range or a coarser resolution"
        )));
    }
    let rows: Vec<views::HistoryRow> = if resolution == "raw" {
        s.store
            .raw_history(&key, from, to, limit)
            .await
            .map_err(ApiError::internal)?
            .iter()
            .map(|x| views::HistoryRow::Raw(x.into()))
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
                views::HistoryRow::Rollup(views::RollupRow {
                    bucket,
                    min: f(a.min),
                    max: f(a.max),
                    avg: a.avg().and_then(f),
                    last: f(a.last),
                    count: a.count,
                    delta: a.delta,
                    bad: a.bad,
                })
            })
            .collect()
    };
    Ok(Json(views::HistoryPage {
        point: key.as_str().to_string(),
        from,
        to,
        resolution: resolution.to_string(),
        rows,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    #[schema(schema_with = write_value)]
    value: Json_,
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// A written value: a number or a boolean, as the point's type takes it.
fn write_value() -> RefOr<Schema> {
    use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Type};
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .build(),
    ))
}

async fn write_point(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((device, point)): Path<(String, String)>,
    body: Result<Json<WriteBody>, JsonRejection>,
) -> ApiResult<Json<views::WriteAnswer>> {
    let Json(body) = body?;
    let (key, p, d) = find_point(&s, &device, &point)?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::invalid("reason takes at most 500 characters"));
    }
    s.metrics.point_writes_total.fetch_add(1, Relaxed);
    let detail = json!({"value": body.value, "reason": body.reason});
    let outcome = do_write(p, d, &body.value).await;
    let outcome_text = match &outcome {
        Ok(v) => format!("ok: read back {v}"),
        Err(e) => format!("refused: {}", e.message),
    };
    let entry = s
        .auth
        .audit(&caller.actor(), "point_write", key.as_str(), detail)
        .with_outcome(outcome_text);
    s.auth.record(entry).await.map_err(ApiError::internal)?;
    match outcome {
        Ok(v) => Ok(Json(views::WriteAnswer {
            point: key.as_str().to_string(),
            value: v.to_json(),
            verified: true,
        })),
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated point keys (`device/point`); all points when left out.
    #[param(
        pattern = "^[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}(,[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64})*$",
        max_length = 8192
    )]
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
            if list.len() > 8192 {
                return Err(ApiError::invalid("points takes at most 8192 characters"));
            }
            let mut set = HashSet::new();
            for k in list.split(',') {
                let named = k.split_once('/').is_some_and(|(d, p)| {
                    device_drivers::profile::is_name(d) && device_drivers::profile::is_name(p)
                });
                if !named || PointKey::parse(k).is_none() {
                    return Err(ApiError::invalid(format!(
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
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
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<usize>,
}

/// The most rows one CSV export holds; a narrower range gets the rest.
const EXPORT_ROWS: usize = 50_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsExportQuery {
    /// A kind (`access.decision`) or a family (`access`, `parking`).
    #[param(max_length = 128)]
    kind: Option<String>,
    /// A door or lane id.
    #[param(max_length = 128)]
    subject: Option<String>,
    #[param(minimum = 0, maximum = 7_258_118_400_000_000_i64)]
    from: Option<i64>,
    #[param(minimum = 0, maximum = 7_258_118_400_000_000_i64)]
    to: Option<i64>,
}

/// The event log as CSV, newest first, at most [`EXPORT_ROWS`] rows.
async fn export_events(
    State(s): State<ApiState>,
    q: Result<Query<EventsExportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    for (name, v) in [("kind", &q.kind), ("subject", &q.subject)] {
        if v.as_ref().is_some_and(|v| v.chars().count() > 128) {
            return Err(ApiError::bad_request(format!(
                "{name} takes at most 128 characters"
            )));
        }
    }
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if let Some(t) = t
            && !(0..=MAX_TIME).contains(&t)
        {
            return Err(ApiError::bad_request(format!(
                "{name} must be microseconds since 1970 (0 to {MAX_TIME}), not {t}"
            )));
        }
    }
    let rows = crate::events::query(
        &s.store,
        crate::events::EventQuery {
            kind: q.kind,
            subject: q.subject,
            from: q.from,
            to: q.to,
            before_seq: None,
            limit: EXPORT_ROWS,
        },
    )
    .await
    .map_err(ApiError::internal)?;
    let mut out = String::from("seq,time_utc,kind,subject,body\n");
    for (seq, e) in rows {
        let line = [
            seq.to_string(),
            accounts::csv::utc_text(e.ts),
            accounts::csv::field(&e.kind),
            accounts::csv::field(&e.subject),
            accounts::csv::field(&e.body.to_string()),
        ]
        .join(",");
        out.push_str(&line);
        out.push('\n');
    }
    Ok(accounts::csv::download("events.csv", out))
}

/// The audit log as CSV, newest first, at most [`EXPORT_ROWS`] rows, with each record's
/// hash so the copy can be checked against the chain.
async fn export_audit(State(s): State<ApiState>) -> ApiResult<Response> {
    let rows = s
        .store
        .read(move |c| {
            Ok(accounts::audit::list(
                &park_db::Connection::sqlite(c),
                None,
                EXPORT_ROWS,
            )?)
        })
        .await
        .map_err(ApiError::internal)?;
    let mut out = String::from("seq,time_utc,actor,action,target,outcome,detail,hash\n");
    let text = |v: &Json_| match v {
        Json_::String(s) => s.clone(),
        Json_::Null => String::new(),
        other => other.to_string(),
    };
    for r in rows {
        let line = [
            text(&r["seq"]),
            r["ts"]
                .as_i64()
                .map(accounts::csv::utc_text)
                .unwrap_or_default(),
            accounts::csv::field(&text(&r["actor"])),
            accounts::csv::field(&text(&r["action"])),
            accounts::csv::field(&text(&r["target"])),
            accounts::csv::field(&text(&r["outcome"])),
            accounts::csv::field(&text(&r["detail"])),
            text(&r["hash"]),
        ]
        .join(",");
        out.push_str(&line);
        out.push('\n');
    }
    Ok(accounts::csv::download("audit.csv", out))
}

/// Access and parking logs, newest first, with filters.
async fn list_events(
    State(s): State<ApiState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<views::EventPage>> {
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
    let events = rows
        .into_iter()
        .map(|(seq, e)| views::EventView {
            seq,
            id: e.id,
            ts: e.ts,
            kind: e.kind,
            subject: e.subject,
            body: e.body,
        })
        .collect();
    Ok(Json(views::EventPage {
        events,
        before: next,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<usize>,
    /// Page backwards: only records before this sequence number.
    #[param(minimum = 0)]
    before: Option<i64>,
}

/// The audit log, newest first, each record with its place in the chain and its hashes.
async fn audit(
    State(s): State<ApiState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<views::AuditPage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let before = match q.before {
        Some(b) if b < 0 => {
            return Err(ApiError::bad_request(format!(
                "before must be a sequence number (0 or more), not {b}"
            )));
        }
        b => b.map(|b| b as u64),
    };
    let rows = s
        .store
        .read(move |c| {
            Ok(accounts::audit::list(
                &park_db::Connection::sqlite(c),
                before,
                limit,
            )?)
        })
        .await
        .map_err(ApiError::internal)?;
    let next = rows.last().and_then(|r| r["seq"].as_u64());
    Ok(Json(views::AuditPage {
        entries: rows,
        before: next,
    }))
}

/// What the store holds: committed totals and raw samples per point. Tests use it to check
/// that nothing reported stored is lost across a crash.
async fn store_stats(State(s): State<ApiState>) -> ApiResult<Json<views::StoreState>> {
    let counts = s.store.counts().await.map_err(ApiError::internal)?;
    let m = &s.metrics;
    Ok(Json(views::StoreState {
        samples_committed: m.samples_committed_total.load(Relaxed),
        bytes: m.store_bytes.load(Relaxed),
        budget_bytes: m.store_budget_bytes.load(Relaxed),
        raw_samples_per_point: counts,
        healthy: s.store.health().is_ok(),
    }))
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
            crate::park::ParkError::Forbidden(m) => ApiError::new(
                StatusCode::FORBIDDEN,
                "owned_by_hub",
                format!("{m}; make this change on the hub"),
            ),
            crate::park::ParkError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            crate::park::ParkError::Store(e) => ApiError::internal(e),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PeopleQuery {
    /// People whose id or name contains this (case-insensitive).
    #[param(max_length = 128)]
    q: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 200; 50 when left out.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
}

async fn list_people(
    State(s): State<ApiState>,
    q: Result<Query<PeopleQuery>, QueryRejection>,
) -> ApiResult<Json<views::PeoplePage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 200 {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let needle = q.q.unwrap_or_default();
    if needle.chars().count() > 128 {
        return Err(ApiError::bad_request("q takes at most 128 characters"));
    }
    Ok(Json(
        park(&s)?
            .people(&needle, q.offset.unwrap_or(0), limit)
            .await?,
    ))
}

async fn list_doors(State(s): State<ApiState>) -> ApiResult<Json<views::DoorList>> {
    Ok(Json(park(&s)?.doors()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ManualOpen {
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

fn need_text(field: &str, v: &str) -> ApiResult<()> {
    if v.trim().is_empty() || v.chars().count() > 500 {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to 500 characters, not only spaces"
        )));
    }
    Ok(())
}

/// An id or name a body gives: 1 to `max` characters, no control characters.
fn need_id(field: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

async fn open_door(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<ManualOpen>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    need_text("reason", &b.reason)?;
    let audit = s.auth.audit(
        &caller.actor(),
        "door_manual_open",
        &id,
        json!({"reason": b.reason}),
    );
    let result = match park(&s) {
        Ok(p) => p
            .manual_open(&id, &b.reason, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_lots(State(s): State<ApiState>) -> ApiResult<Json<views::LotList>> {
    Ok(Json(park(&s)?.lots()))
}

async fn list_sessions(State(s): State<ApiState>) -> ApiResult<Json<views::ParkingSessionList>> {
    Ok(Json(park(&s)?.sessions()))
}

async fn list_review(State(s): State<ApiState>) -> ApiResult<Json<views::ReviewQueue>> {
    Ok(Json(park(&s)?.review_queue()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Review {
    admit: bool,
    /// The plate as the person reads it, when the camera got it wrong.
    #[schema(min_length = 1, max_length = 32)]
    plate: Option<String>,
}

async fn resolve_review(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Review>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    if let Some(p) = &b.plate {
        let n = crate::field::normalize_plate(p);
        if n.is_empty() || n.chars().count() > 12 {
            return Err(ApiError::invalid(format!("{p:?} is not a plate")));
        }
    }
    let audit = s.auth.audit(
        &caller.actor(),
        "plate_review",
        &id,
        json!({"admit": b.admit, "plate": b.plate}),
    );
    let result = match park(&s) {
        Ok(p) => p
            .resolve_review(&id, b.plate.as_deref(), b.admit, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    id: String,
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    person_id: String,
    #[schema(schema_with = openapi::schemas::credential_kinds)]
    kind: String,
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    value: String,
    #[serde(default, deserialize_with = "openapi::whole::opt_i64")]
    valid_from: Option<i64>,
    #[serde(default, deserialize_with = "openapi::whole::opt_i64")]
    valid_to: Option<i64>,
}

async fn put_credential(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewCredential>, JsonRejection>,
) -> ApiResult<Json<views::CredentialIssued>> {
    let Json(b) = body?;
    need_id("id", &b.id, 128)?;
    need_id("person_id", &b.person_id, 128)?;
    need_id("value", &b.value, 256)?;
    let kind = b
        .kind
        .parse::<park_model::directory::CredentialKind>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "kind {:?} is not one of card, qr, pin, plate",
                b.kind
            ))
        })?;
    let detail = json!({"person": b.person_id, "kind": b.kind, "validFrom": b.valid_from, "validTo": b.valid_to});
    let audit = s
        .auth
        .audit(&caller.actor(), "credential_put", &b.id, detail);
    let c = park_model::directory::RawCredential {
        id: b.id.clone(),
        person_id: b.person_id.clone(),
        kind,
        value: b.value.clone(),
        status: park_model::directory::CredentialStatus::Active,
        valid_from: b.valid_from,
        valid_to: b.valid_to,
    };
    let result = match park(&s) {
        Ok(p) => p
            .put_credential(c, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CredentialStatusChange {
    #[schema(schema_with = openapi::schemas::credential_statuses)]
    status: String,
    #[schema(max_length = 500)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PassStatusChange {
    #[schema(schema_with = openapi::schemas::pass_statuses)]
    status: String,
    #[schema(max_length = 500)]
    reason: Option<String>,
}

async fn credential_status(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<CredentialStatusChange>, JsonRejection>,
) -> ApiResult<Json<views::CredentialStatusSet>> {
    let Json(b) = body?;
    let status = b
        .status
        .parse::<park_model::directory::CredentialStatus>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "status {:?} is not one of active, suspended, lost",
                b.status
            ))
        })?;
    if let Some(r) = &b.reason {
        need_text("reason", r)?;
    }
    let audit = s.auth.audit(
        &caller.actor(),
        "credential_status",
        &id,
        json!({"status": b.status, "reason": b.reason}),
    );
    let result = match park(&s) {
        Ok(p) => p
            .set_credential_status(&id, status, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPass {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    id: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    plate: String,
    #[schema(schema_with = openapi::schemas::pass_kinds)]
    kind: String,
    #[schema(max_items = 64)]
    lot_ids: Vec<String>,
    #[serde(deserialize_with = "openapi::whole::i64")]
    valid_from: i64,
    #[serde(deserialize_with = "openapi::whole::i64")]
    valid_to: i64,
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    enterprise_id: Option<String>,
}

async fn put_pass(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewPass>, JsonRejection>,
) -> ApiResult<Json<views::PassIssued>> {
    let Json(b) = body?;
    need_id("id", &b.id, 128)?;
    need_id("plate", &b.plate, 32)?;
    if b.lot_ids.len() > 64 {
        return Err(ApiError::invalid("a pass names at most 64 lots"));
    }
    for lot in &b.lot_ids {
        need_id("lot_ids[]", lot, 128)?;
    }
    if let Some(e) = &b.enterprise_id {
        need_id("enterprise_id", e, 128)?;
    }
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
    let detail =
        json!({"plate": b.plate, "kind": b.kind, "lots": b.lot_ids, "validTo": b.valid_to});
    let audit = s.auth.audit(&caller.actor(), "pass_put", &b.id, detail);
    let result = match park(&s) {
        Ok(p) => p
            .put_pass(pass, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn pass_status(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<PassStatusChange>, JsonRejection>,
) -> ApiResult<Json<views::PassStatusSet>> {
    let Json(b) = body?;
    let status = b
        .status
        .parse::<park_model::parking::PassStatus>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "status {:?} is not one of active, suspended",
                b.status
            ))
        })?;
    if let Some(r) = &b.reason {
        need_text("reason", r)?;
    }
    let audit = s.auth.audit(
        &caller.actor(),
        "pass_status",
        &id,
        json!({"status": b.status, "reason": b.reason}),
    );
    let result = match park(&s) {
        Ok(p) => p
            .set_pass_status(&id, status, audit.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

/// Whether the hub is connected (truthfully: the session's heartbeats decide), what it has
/// acknowledged, and what is still waiting to go.
async fn sync_status(State(s): State<ApiState>) -> Json<views::SyncState> {
    Json(match &s.sync {
        Some(status) => status.view(),
        None => views::SyncState::alone(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AlarmQuery {
    /// `active_unacked`, `active_acked`, `cleared_unacked`, `normal`.
    #[param(schema_with = alarm_states)]
    state: Option<String>,
    /// `P0`, `P1`, `P2`.
    #[param(schema_with = severities)]
    severity: Option<String>,
    /// Sources starting with this, such as `ahu-1/`.
    source: Option<String>,
    rule: Option<String>,
    /// Also list alarms folded into a storm summary.
    include_folded: Option<bool>,
}

fn alarm_states() -> RefOr<Schema> {
    openapi::one_of(rules_engine::AlarmState::ALL.map(|s| s.name()))
}

fn severities() -> RefOr<Schema> {
    openapi::one_of(rules_engine::Severity::ALL.map(|s| s.name()))
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> ApiResult<T> {
    serde_json::from_value(Json_::String(v.to_string()))
        .map_err(|_| ApiError::bad_request(format!("{what} {v:?} is not known")))
}

async fn list_alarms(
    State(s): State<ApiState>,
    q: Result<Query<AlarmQuery>, QueryRejection>,
) -> ApiResult<Json<views::AlarmList>> {
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
    Ok(Json(views::AlarmList {
        alarms: s.alarms.list(&filter),
    }))
}

/// An alarm's id from a path: one that is not a number names no alarm.
fn alarm_id(id: &str) -> ApiResult<u64> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no alarm {id:?} (alarm ids are numbers)")))
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[schema(max_length = 4000)]
    comment: Option<String>,
}

fn check_comment(c: Option<&str>) -> ApiResult<()> {
    if c.is_some_and(|c| c.len() > 4000) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "a comment takes at most 4000 bytes",
        ));
    }
    Ok(())
}

async fn acknowledge_alarm(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    check_comment(b.comment.as_deref())?;
    let audit = s.auth.audit(
        &caller.actor(),
        "alarm_acknowledge",
        &id.to_string(),
        json!({"comment": b.comment}),
    );
    let result = s
        .alarms
        .acknowledge(id, &caller.name, b.comment.as_deref(), audit.clone())
        .await
        .map_err(ApiError::from);
    audit_outcome(&s.auth, audit, result).await?;
    get_alarm(State(s), Path(id.to_string())).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    /// For how long, in seconds (at most 7 days).
    #[serde(deserialize_with = "openapi::whole::u64")]
    #[schema(minimum = 1, maximum = 604_800)]
    duration_s: u64,
    #[schema(max_length = 4000)]
    reason: Option<String>,
}

async fn shelve_alarm(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
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
    check_comment(b.reason.as_deref())?;
    let until = now_micros() + b.duration_s as i64 * 1_000_000;
    let audit = s.auth.audit(
        &caller.actor(),
        "alarm_shelve",
        &id.to_string(),
        json!({"duration_s": b.duration_s, "reason": b.reason}),
    );
    let result = s
        .alarms
        .shelve(id, until, &caller.name, b.reason.as_deref(), audit.clone())
        .await
        .map_err(ApiError::from);
    audit_outcome(&s.auth, audit, result).await?;
    get_alarm(State(s), Path(id.to_string())).await
}

async fn unshelve_alarm(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let id = alarm_id(&id)?;
    let audit = s.auth.audit(
        &caller.actor(),
        "alarm_unshelve",
        &id.to_string(),
        Json_::Null,
    );
    let result = s
        .alarms
        .unshelve(id, &caller.name, audit.clone())
        .await
        .map_err(ApiError::from);
    audit_outcome(&s.auth, audit, result).await?;
    get_alarm(State(s), Path(id.to_string())).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[schema(min_length = 1, max_length = 4000)]
    text: String,
}

async fn comment_alarm(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<CommentBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let id = alarm_id(&id)?;
    check_comment(Some(&b.text))?;
    let audit = s.auth.audit(
        &caller.actor(),
        "alarm_comment",
        &id.to_string(),
        json!({"text": b.text}),
    );
    let result = s
        .alarms
        .comment(id, &caller.name, &b.text, audit.clone())
        .await
        .map_err(ApiError::from);
    audit_outcome(&s.auth, audit, result).await?;
    get_alarm(State(s), Path(id.to_string())).await
}

async fn list_rules(State(s): State<ApiState>) -> ApiResult<Json<crate::alarms::RulesView>> {
    Ok(Json(s.alarms.rules()))
}

async fn reload_rules(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<views::Reloaded>> {
    let result = match s.alarms.reload().await {
        Ok(n) => Ok(n),
        // The request is fine; the node's rule file (missing or wrong) refuses it.
        Err(message) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "rules_refused",
            message,
        )),
    };
    let audit = s
        .auth
        .audit(&caller.actor(), "rules_reload", "rules", json!({}));
    let n = match result {
        Ok(n) => {
            s.auth
                .record(Audit {
                    detail: json!({"rules": n}),
                    ..audit
                })
                .await
                .map_err(ApiError::internal)?;
            n
        }
        Err(e) => return audit_outcome(&s.auth, audit, Err(e)).await,
    };
    Ok(Json(views::Reloaded {
        reloaded: true,
        rules: n,
    }))
}
