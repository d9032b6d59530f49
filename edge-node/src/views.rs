//! What the LAN API answers, as types: each is serialized as the answer and described in
//! the OpenAPI document by the same derive, so the document cannot drift from the answers
//! (schemathesis checks every answer against it).

use device_drivers::{DeviceStatus, PointKey, Sample};
use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::node::{DeviceEntry, point_source};
use crate::store::Store;

/// The park and building this node serves, and what it reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct Site {
    pub park: String,
    pub building: String,
    /// Devices configured.
    pub devices: usize,
    /// Points of all devices.
    pub points: usize,
    /// The node's clock, microseconds since 1970.
    pub now: i64,
}

/// One committed sample: time (microseconds since 1970), value and quality.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleView {
    pub ts: i64,
    #[schema(schema_with = accounts::openapi::sample_value)]
    pub value: Json,
    /// `good`, `uncertain`, `bad` or `stale`.
    pub quality: String,
    /// Why the quality is not good.
    pub reason: Option<String>,
}

impl From<&Sample> for SampleView {
    fn from(s: &Sample) -> Self {
        SampleView {
            ts: s.ts,
            value: s.value.as_ref().map_or(Json::Null, |v| v.to_json()),
            quality: s.quality.name().to_string(),
            reason: s.quality.reason().map(str::to_string),
        }
    }
}

/// A point with what its profile says of it and its latest committed sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointView {
    /// `device/point`.
    pub key: String,
    pub device: String,
    pub name: String,
    pub unit: Option<String>,
    /// `analog`, `counter`, `binary`, `enum` or `text`.
    pub kind: String,
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Where the value comes from on the device (register, topic, object).
    pub source: String,
    pub latest: Option<SampleView>,
}

impl PointView {
    pub fn new(store: &Store, key: &PointKey, p: &device_drivers::profile::PointSpec) -> Self {
        PointView {
            key: key.as_str().to_string(),
            device: key.device().to_string(),
            name: p.name.to_string(),
            unit: p.unit.as_ref().map(|u| u.to_string()),
            kind: format!("{:?}", p.kind).to_lowercase(),
            writable: p.writable,
            min: p.min,
            max: p.max,
            source: point_source(p),
            latest: store.latest_of(key).as_ref().map(SampleView::from),
        }
    }
}

/// One page of points, in key order, with the total that match.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointPage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub points: Vec<PointView>,
}

/// Whether a device answers, since when, and why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceState {
    /// `online` or `offline`.
    pub state: String,
    pub reason: Option<String>,
    /// Microseconds since 1970.
    pub since: i64,
}

impl DeviceState {
    pub fn new(status: &DeviceStatus, since: i64) -> Self {
        match status {
            DeviceStatus::Online => DeviceState {
                state: "online".into(),
                reason: None,
                since,
            },
            DeviceStatus::Offline { reason } => DeviceState {
                state: "offline".into(),
                reason: Some(reason.to_string()),
                since,
            },
        }
    }
}

/// A device: what it is, how it is read, and whether it answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub id: String,
    pub name: Option<String>,
    /// `modbus-tcp`, `modbus-rtu`, `bacnet-ip` or `mqtt`.
    pub protocol: String,
    pub profile: String,
    pub manufacturer: String,
    pub model: String,
    pub status: DeviceState,
    /// How many points it has.
    pub points: usize,
    pub poll_interval_ms: u64,
}

impl DeviceView {
    pub fn new(d: &DeviceEntry) -> Self {
        let (status, since) = d.status();
        let p = &d.spec.profile;
        DeviceView {
            id: d.spec.id.to_string(),
            name: d.spec.name.as_ref().map(|n| n.to_string()),
            protocol: d.spec.protocol_name().to_string(),
            profile: p.id.to_string(),
            manufacturer: p.manufacturer.to_string(),
            model: p.model.to_string(),
            status: DeviceState::new(&status, since),
            points: p.points.len(),
            poll_interval_ms: d.spec.poll_interval.as_millis() as u64,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// A device with its points.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub point_list: Vec<PointView>,
}

/// Records uploaded to the hub, or waiting, per stream.
#[derive(Debug, Serialize, ToSchema, Default, Clone, Copy)]
pub struct Streams {
    pub events: u64,
    pub rollups: u64,
    pub raw: u64,
}

/// The uplink to the hub.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// Whether this node has a hub at all (a building can run alone).
    pub configured: bool,
    /// Whether the session's heartbeats come back now.
    pub connected: bool,
    /// The hub's address.
    pub hub: Option<String>,
    pub last_error: Option<String>,
    /// Microseconds since 1970.
    pub last_connected_at: Option<i64>,
    /// What the hub has acknowledged (sequence numbers).
    pub acknowledged: Streams,
    /// What is stored here and not yet acknowledged.
    pub backlog: Streams,
}

impl SyncState {
    /// A node with no hub configured.
    pub fn alone() -> Self {
        SyncState {
            configured: false,
            connected: false,
            hub: None,
            last_error: None,
            last_connected_at: None,
            acknowledged: Streams::default(),
            backlog: Streams::default(),
        }
    }
}

/// The store: what it has committed, its size against its disk budget.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreState {
    pub samples_committed: u64,
    pub bytes: u64,
    pub budget_bytes: u64,
    /// Raw samples kept per point key.
    pub raw_samples_per_point: std::collections::HashMap<String, u64>,
    /// Whether the store can commit.
    pub healthy: bool,
}

/// The alarms, most urgent first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmList {
    #[schema(value_type = Vec<rules_engine::Alarm>)]
    pub alarms: Json,
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
    pub count: u64,
    /// Consumption within the bucket (counters).
    pub delta: f64,
    /// Samples without a usable value.
    pub bad: u64,
}

/// A row of a history: a raw sample, or a rollup bucket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HistoryRow {
    Raw(SampleView),
    Rollup(RollupRow),
}

/// A point's history over a range at a resolution.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub point: String,
    pub from: i64,
    pub to: i64,
    /// `raw`, `1m`, `15m` or `1h`.
    pub resolution: String,
    pub rows: Vec<HistoryRow>,
}

/// A write done: the value the device read back after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteAnswer {
    pub point: String,
    #[schema(schema_with = accounts::openapi::sample_value)]
    pub value: Json,
    /// Always true: an unverified write is an error, not an answer.
    pub verified: bool,
}

/// A door's last reported state (`open`, `closed`, `forced`, `held`...) and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoorState {
    pub state: String,
    pub ts: i64,
}

/// The last decision at a door.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoorDecision {
    pub granted: bool,
    /// The reason code (`granted`, `unknown_credential`, `outside_schedule`...).
    pub reason: String,
    pub ts: i64,
}

/// A door of this building: its settings from the building's document and what its
/// controller last said.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoorView {
    pub id: String,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub anti_passback: Option<bool>,
    /// Whether its controller is connected to the building's broker; unknown until it has
    /// spoken.
    pub online: Option<bool>,
    pub state: Option<DoorState>,
    pub last_decision: Option<DoorDecision>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DoorList {
    pub doors: Vec<DoorView>,
}

/// A camera lane of a lot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaneView {
    pub id: String,
    /// `entry` or `exit`.
    pub direction: String,
    /// Whether its camera is connected; unknown until it has spoken.
    pub camera_online: Option<bool>,
}

/// A car park lot with its live occupancy.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotView {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub occupied: u32,
    pub free: u32,
    pub lanes: Vec<LaneView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LotList {
    pub lots: Vec<LotView>,
}

/// How a car came in.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    /// `monthly`, `allowance` or `visitor`.
    pub kind: String,
    pub pass: Option<String>,
    pub enterprise: Option<String>,
}

/// A car inside now, with what it owes (integer fen).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkingSessionView {
    pub id: String,
    pub plate: String,
    pub lot: String,
    pub entry_lane: String,
    pub entered_at: i64,
    pub entry: EntryView,
    pub fee_due_fen: Option<i64>,
    pub paid_fen: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkingSessionList {
    pub sessions: Vec<ParkingSessionView>,
}

/// A plate read the camera was not sure of, waiting for a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewItem {
    pub id: String,
    pub lane: String,
    pub plate: String,
    /// 0 to 1.
    pub confidence: f64,
    /// `in` or `out`.
    pub direction: Option<String>,
    /// The camera's reference to the image of the read.
    pub image: Option<String>,
    pub ts: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewQueue {
    pub waiting: Vec<ReviewItem>,
}

/// A stored event (a door decision, a barrier, an alarm transition...), with its place in
/// the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub id: String,
    pub ts: i64,
    /// `access.decision`, `parking.exit`, `alarm.raised`...
    pub kind: String,
    /// The door, lane or point it is about.
    pub subject: String,
    /// What the kind says, as stored.
    #[schema(value_type = Object)]
    pub body: Json,
}

/// A page of the event log, newest first; `before` asks for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub before: Option<i64>,
}

/// A page of the audit log, newest first, each record with its hashes in the chain;
/// `before` asks for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<Json>,
    pub before: Option<u64>,
}

/// The rule file loaded again: how many rules run now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    pub reloaded: bool,
    pub rules: usize,
}

/// The accounts that may log in at this building.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<accounts::auth::AccountView>,
}

/// An entity named by its id and its name.
#[derive(Debug, Serialize, ToSchema)]
pub struct Named {
    pub id: String,
    /// Empty when the directory no longer holds it.
    pub name: String,
}

/// A credential as people may see it: never its value, only its kind and the last
/// characters of a card or plate that tell it apart (`••••A1B2`; a PIN shows none).
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    #[schema(schema_with = accounts::openapi::schemas::credential_kinds)]
    pub kind: String,
    pub masked: String,
    #[schema(schema_with = accounts::openapi::schemas::credential_statuses)]
    pub status: String,
    /// Microseconds since 1970; none for always.
    pub valid_from: Option<i64>,
    pub valid_to: Option<i64>,
}

/// A person of the park's directory as this building holds it, with their enterprise,
/// access groups and credentials (masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    pub id: String,
    pub name: String,
    pub enterprise: Named,
    #[schema(schema_with = accounts::openapi::schemas::person_statuses)]
    pub status: String,
    pub access_groups: Vec<Named>,
    pub credentials: Vec<CredentialView>,
}

/// One page of people, in id order, with the total that match.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeoplePage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub people: Vec<PersonView>,
}

/// A credential issued: its id and the characters of it people will see.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialIssued {
    pub credential: String,
    pub suffix: String,
}

/// A credential's new status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialStatusSet {
    pub credential: String,
    #[schema(schema_with = accounts::openapi::schemas::credential_statuses)]
    pub status: String,
}

/// A parking pass issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassIssued {
    pub pass: String,
}

/// A parking pass's new status.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassStatusSet {
    pub pass: String,
    #[schema(schema_with = accounts::openapi::schemas::pass_statuses)]
    pub status: String,
}
