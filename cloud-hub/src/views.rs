//! What the hub's API answers, as types: each is serialized as the answer and described in
//! the OpenAPI document by the same derive, so the document cannot drift from the answers
//! (schemathesis checks every answer against it). Field names are the ones the dashboard
//! and the tests have always read.

use accounts::openapi::one_of;
use park_model::identity::Grant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

/// `{"status": "ok"}` from `/health`, `{"status": "ready"}` from `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(schema_with = statuses)]
    pub status: String,
}

fn statuses() -> RefOr<Schema> {
    one_of(["ok", "ready"])
}

/// A park where the caller may read telemetry, with how many of its buildings they see and
/// how many of those are connected now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkSummary {
    pub park: String,
    pub buildings: usize,
    pub edges_connected: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkList {
    pub parks: Vec<ParkSummary>,
}

/// The certificate a building's edge connects with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    /// None until the building has enrolled.
    pub serial: Option<String>,
    /// Microseconds since 1970.
    pub enrolled_at: Option<i64>,
    pub not_after: Option<i64>,
    /// Whether the operator revoked it (the edge can no longer connect with it).
    pub revoked: bool,
}

fn connection_states() -> RefOr<Schema> {
    one_of(["connected", "disconnected", "never_connected"])
}

/// The building's alarms as its edge last uploaded their transitions.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmCounts {
    /// Active now, acknowledged or not.
    pub active: i64,
    /// Waiting for a person: active or cleared, not yet acknowledged.
    pub unacknowledged: i64,
    /// Active with the most urgent severity (P0).
    pub critical: i64,
}

/// The edge's connection: live while a session runs, else what the hub last recorded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    #[schema(schema_with = connection_states)]
    pub state: String,
    /// When the state began, microseconds since 1970.
    pub since: Option<i64>,
    /// The last frame heard from the edge.
    pub last_seen: Option<i64>,
    /// The edge's address as the hub saw it.
    pub remote: Option<String>,
    pub last_error: Option<String>,
}

/// What the edge last reported it holds and has not uploaded yet, per stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacklogView {
    pub events: Option<i64>,
    pub rollups: Option<i64>,
    pub raw: Option<i64>,
    /// When the edge reported it, microseconds since 1970.
    pub reported_at: Option<i64>,
}

/// The newest event and sample the hub holds from the building (microseconds since 1970).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreshnessView {
    pub newest_event: Option<i64>,
    pub newest_sample: Option<i64>,
}

/// A building and its edge: certificate, connection, backlog and data freshness.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeView {
    pub park: String,
    pub building: String,
    /// The id the edge gave itself, once it has connected.
    pub edge_id: Option<String>,
    pub certificate: CertificateView,
    pub connection: ConnectionView,
    pub backlog: BacklogView,
    pub freshness: FreshnessView,
    pub alarms: AlarmCounts,
}

/// Every building's edge, with the hub's clock to judge the times by.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeList {
    pub edges: Vec<EdgeView>,
    /// Microseconds since 1970.
    pub now: i64,
}

/// The buildings of a park the caller may read telemetry of.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildingList {
    pub park: String,
    pub buildings: Vec<EdgeView>,
}

/// How far the hub has stored each upload stream of a building for good (sequence numbers).
#[derive(Debug, Serialize, ToSchema)]
pub struct DurableCursors {
    pub events: u64,
    pub rollups: u64,
    pub raw: u64,
}

/// One building with its edge and how far its uploads are stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildingDetail {
    pub building: EdgeView,
    pub durable_cursors: DurableCursors,
}

/// One sample as uploaded: time (microseconds since 1970), value and quality.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleView {
    pub ts: i64,
    #[schema(schema_with = accounts::openapi::sample_value)]
    pub value: serde_json::Value,
    #[schema(schema_with = accounts::openapi::schemas::qualities)]
    pub quality: String,
    /// Why the quality is not good.
    pub reason: Option<String>,
}

impl SampleView {
    /// From the store's JSON of a sample (`store::sample_json`), which decodes the stored
    /// value and quality.
    pub fn from_json(mut v: serde_json::Value) -> SampleView {
        SampleView {
            ts: v["ts"].as_i64().unwrap_or_default(),
            value: v["value"].take(),
            quality: v["quality"].as_str().unwrap_or("stale").to_string(),
            reason: v["reason"].as_str().map(str::to_string),
        }
    }
}

/// A point of a building with its latest sample, if any arrived.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointLatest {
    /// `device/point`.
    pub point: String,
    pub latest: Option<SampleView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointList {
    pub park: String,
    pub building: String,
    pub points: Vec<PointLatest>,
}

/// One bucket of a rollup: the statistics of the samples in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollupRow {
    /// The bucket's start, microseconds since 1970.
    pub bucket: i64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub last: Option<f64>,
    pub count: i64,
    /// Consumption within the bucket (counters).
    pub delta: Option<f64>,
    /// Samples without a usable value.
    pub bad: i64,
}

/// A row of a history: a raw sample, or a rollup bucket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HistoryRow {
    Raw(SampleView),
    Rollup(RollupRow),
}

fn resolutions() -> RefOr<Schema> {
    one_of(["raw", "1m", "15m", "1h"])
}

/// A point's history over a range at a resolution.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub park: String,
    pub building: String,
    /// `device/point`.
    pub point: String,
    pub from: i64,
    pub to: i64,
    /// The resolution used (`auto` resolved).
    #[schema(schema_with = resolutions)]
    pub resolution: String,
    pub rows: Vec<HistoryRow>,
}

/// An event a building uploaded, with its place in the building's log at the hub.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub id: String,
    /// When it happened (microseconds since 1970), from its id when the id is a UUIDv7.
    pub ts: Option<i64>,
    /// What the edge sent: a JSON object as edges write them. A body that is not JSON is
    /// shown as its text, one that is not UTF-8 as null (the protocol does not look
    /// inside bodies, so the hub keeps whatever arrived).
    pub body: serde_json::Value,
    /// When the hub stored it, microseconds since 1970.
    pub received: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub park: String,
    pub building: String,
    pub events: Vec<EventView>,
}

/// A page of an audit log, newest first, each record with its hashes in the chain;
/// `before` asks for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    pub before: Option<u64>,
}

/// Whether a building's uploaded audit chain holds: how many records it has, or where it
/// breaks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainVerdict {
    pub intact: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// The first record altered, deleted or moved.
    #[serde(rename = "break", skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<String>,
}

/// A page of a building's audit log as its edge uploaded it, with the chain's verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildingAudit {
    pub park: String,
    pub building: String,
    pub chain: ChainVerdict,
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    pub before: Option<u64>,
}

/// A person's private fields: masked (`138****5678`) unless the caller may read personal
/// data there.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivateFields {
    pub park: String,
    pub person: String,
    /// The enterprise the fields are filed under.
    pub enterprise: String,
    pub phone: Option<String>,
    pub id_number: Option<String>,
    pub masked: bool,
    /// Microseconds since 1970.
    pub updated: i64,
    pub updated_by: String,
}

fn sources() -> RefOr<Schema> {
    one_of(["local", "hub"])
}

/// An account of the hub as the users pages show it (never a secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub display_name: String,
    #[schema(schema_with = sources)]
    pub source: String,
    /// `role@scope`.
    pub grants: Vec<String>,
    pub disabled: bool,
    pub department: Option<String>,
    /// Whether a second factor is set up.
    pub second_factor: bool,
    /// Microseconds since 1970, and by whom; none for accounts older than the record.
    pub created: Option<i64>,
    pub created_by: Option<String>,
    pub updated: Option<i64>,
    pub updated_by: Option<String>,
    /// Whether the caller may change it (every grant it holds is one the caller could give).
    /// Always sent; the stored rows it is read from lack it.
    #[serde(default)]
    #[schema(required = true)]
    pub manageable: bool,
}

impl UserView {
    /// The grants it holds (a grant stored in a form no longer understood holds nothing).
    pub fn grants(&self) -> Vec<Grant> {
        self.grants.iter().filter_map(|g| g.parse().ok()).collect()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// A department users belong to: the operator's own (no park) or a park's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Department {
    pub id: String,
    pub name: String,
    pub park: Option<String>,
    /// The department it is part of.
    pub parent: Option<String>,
    /// Microseconds since 1970.
    pub created: i64,
    pub created_by: String,
    pub updated: i64,
    pub updated_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentList {
    pub departments: Vec<Department>,
}

/// A department made: its id.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentCreated {
    pub id: String,
}
