//! The park's car parks, edited on the hub: tariffs, lots, lanes, passes and enterprise
//! allowances in the park's parking document, which every edge with a lane decides from.
//! Each edit is checked (refusals name the field), made as one change
//! ([`Documents::edit_document`]), audited, stored before it is answered, and synced to
//! the edges; who made and changed each record is kept in `master_meta`, as for the
//! directory ([`crate::master`]).

use std::collections::BTreeMap;

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use park_model::document::Entity;
use park_model::identity::Access;
use park_model::identity::Permission::{
    CredentialsEdit, EnterpriseRead, MasterDataEdit, TelemetryRead,
};
use park_model::parking::{
    Allowance, Lane, LaneDirection, Lot, Parking, ParkingSchema, Pass, PassKind, PassStatus,
    Tariff, normalize_plate,
};
use park_model::{ParkingDoc, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::master::{
    EditError, ListQuery, RecordMeta, check_id, check_name, edit_record, exists, matches, page_of,
    parse,
};
use crate::store::HubStore;
use crate::sync::Documents;

const PARKING: &str = park_model::ownership::PARKING;

/// The routes of the park's car parks.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get("/api/v1/parks/{park}/tariffs", Allowed(TelemetryRead), list_tariffs)
        .doc(doc("car parks", "The park's parking tariffs, a page at a time").query::<ListQuery>().returns::<TariffPage>())
        .put("/api/v1/parks/{park}/tariffs/{tariff}", Allowed(MasterDataEdit), put_tariff)
        .doc(
            doc("car parks", "Create or change a tariff (amounts in integer fen)")
                .describe("A lot charges by its tariff from the next exit its edge decides after syncing the change.")
                .body::<TariffBody>()
                .returns::<TariffView>(),
        )
        .get("/api/v1/parks/{park}/lots", Allowed(TelemetryRead), list_lots)
        .doc(doc("car parks", "The park's car parks, a page at a time").query::<ListQuery>().returns::<LotPage>())
        .put("/api/v1/parks/{park}/lots/{lot}", Allowed(MasterDataEdit), put_lot)
        .doc(doc("car parks", "Create or change a car park: its capacity and tariff").body::<LotBody>().returns::<LotView>())
        .get("/api/v1/parks/{park}/lanes", Allowed(TelemetryRead), list_lanes)
        .doc(
            doc("car parks", "The park's lanes, a page at a time")
                .describe("`of` names a lot.")
                .query::<ListQuery>()
                .returns::<LanePage>(),
        )
        .put("/api/v1/parks/{park}/lanes/{lane}", Allowed(MasterDataEdit), put_lane)
        .doc(doc("car parks", "Create or change a lane of a car park").body::<LaneBody>().returns::<LaneView>())
        .get("/api/v1/parks/{park}/passes", Allowed(CredentialsEdit), list_passes)
        .doc(
            doc("car parks", "The park's parking passes, a page at a time")
                .describe("`of` names an enterprise.")
                .query::<ListQuery>()
                .returns::<PassPage>(),
        )
        .put("/api/v1/parks/{park}/passes/{pass}", Allowed(CredentialsEdit), put_pass)
        .doc(
            doc("car parks", "Create, change or suspend a parking pass")
                .describe("The plate is kept normalized (upper case, no spaces or separators).")
                .body::<PassBody>()
                .returns::<PassView>(),
        )
        .get("/api/v1/parks/{park}/allowances", Allowed(TelemetryRead), list_allowances)
        .doc(
            doc("car parks", "The enterprises' parking allowances, a page at a time")
                .describe("`of` names an enterprise.")
                .query::<ListQuery>()
                .returns::<AllowancePage>(),
        )
        .put("/api/v1/parks/{park}/allowances/{allowance}", Allowed(MasterDataEdit), put_allowance)
        .doc(
            doc("car parks", "Create or change how many cars of an enterprise may park at once in a lot")
                .body::<AllowanceBody>()
                .returns::<AllowanceView>(),
        )
        .get(
            "/api/v1/parks/{park}/enterprises/{enterprise}/passes",
            Allowed(EnterpriseRead),
            list_enterprise_passes,
        )
        .doc(
            doc("enterprise", "The parking passes of the enterprise the path names, a page at a time")
                .describe("`of` is ignored: the path names the enterprise.")
                .query::<ListQuery>()
                .returns::<PassPage>(),
        )
}

// ---- what the API takes and gives ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TariffBody {
    /// ISO 4217, three capital letters (`CNY`).
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 0, maximum = 10080)]
    free_minutes: u32,
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 1, maximum = 1440)]
    period_minutes: u32,
    #[serde(deserialize_with = "accounts::openapi::whole::i64")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    day_rate_fen: i64,
    /// Park-local minute of the day the night window starts (0 to 1439); equal to the end
    /// for no night window.
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 0, maximum = 1439)]
    night_start_minute: u32,
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 0, maximum = 1439)]
    night_end_minute: u32,
    #[serde(deserialize_with = "accounts::openapi::whole::i64")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    night_rate_fen: i64,
    /// Most charged per 24 hours from entry; none for no cap.
    #[serde(default, deserialize_with = "accounts::openapi::whole::opt_i64")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    daily_cap_fen: Option<i64>,
    #[serde(deserialize_with = "accounts::openapi::whole::i64")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    lost_ticket_fen: i64,
}

/// A tariff: every amount in integer fen.
#[derive(Debug, Serialize, ToSchema)]
pub struct TariffView {
    pub id: String,
    pub currency: String,
    pub free_minutes: u32,
    pub period_minutes: u32,
    pub day_rate_fen: i64,
    pub night_start_minute: u16,
    pub night_end_minute: u16,
    pub night_rate_fen: i64,
    pub daily_cap_fen: Option<i64>,
    pub lost_ticket_fen: i64,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TariffPage {
    pub total: usize,
    pub offset: usize,
    pub tariffs: Vec<TariffView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotBody {
    #[schema(max_length = 200)]
    name: String,
    /// Places for visitors and everyone else (passes and allowances have theirs reserved).
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 0, maximum = 100_000)]
    capacity: u32,
    /// A tariff of the park; none when exits that owe a fee need an attendant.
    #[schema(max_length = 128)]
    tariff_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LotView {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub tariff_id: Option<String>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LotPage {
    pub total: usize,
    pub offset: usize,
    pub lots: Vec<LotView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaneBody {
    #[schema(max_length = 128)]
    lot_id: String,
    #[schema(schema_with = directions)]
    direction: String,
    #[schema(max_length = 200)]
    name: String,
}

fn directions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["in", "out"])
}

fn pass_kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["monthly", "enterprise_allowance", "visitor"])
}

fn pass_statuses() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["active", "suspended"])
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LaneView {
    pub id: String,
    pub lot_id: String,
    #[schema(schema_with = directions)]
    pub direction: String,
    pub name: String,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LanePage {
    pub total: usize,
    pub offset: usize,
    pub lanes: Vec<LaneView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassBody {
    #[schema(min_length = 1, max_length = 32)]
    plate: String,
    #[schema(schema_with = pass_kinds)]
    kind: String,
    /// The lots it is good for (at least one).
    lot_ids: Vec<String>,
    /// Microseconds since 1970.
    #[serde(deserialize_with = "accounts::openapi::whole::i64")]
    #[schema(minimum = 0, maximum = 253_402_300_799_999_999_i64)]
    valid_from: i64,
    #[serde(deserialize_with = "accounts::openapi::whole::i64")]
    #[schema(minimum = 0, maximum = 253_402_300_799_999_999_i64)]
    valid_to: i64,
    #[schema(schema_with = pass_statuses)]
    status: String,
    /// The enterprise whose allowance it uses (required for `enterprise_allowance`) or who
    /// pays for a visitor.
    #[schema(max_length = 128)]
    enterprise_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PassView {
    pub id: String,
    pub plate: String,
    #[schema(schema_with = pass_kinds)]
    pub kind: String,
    pub lot_ids: Vec<String>,
    pub valid_from: i64,
    pub valid_to: i64,
    #[schema(schema_with = pass_statuses)]
    pub status: String,
    pub enterprise_id: Option<String>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PassPage {
    pub total: usize,
    pub offset: usize,
    pub passes: Vec<PassView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowanceBody {
    #[schema(max_length = 128)]
    enterprise_id: String,
    #[schema(max_length = 128)]
    lot_id: String,
    /// Cars of the enterprise parked at once on the allowance.
    #[serde(deserialize_with = "accounts::openapi::whole::u32")]
    #[schema(minimum = 0, maximum = 100_000)]
    quota: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllowanceView {
    pub id: String,
    pub enterprise_id: String,
    pub lot_id: String,
    pub quota: u32,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllowancePage {
    pub total: usize,
    pub offset: usize,
    pub allowances: Vec<AllowanceView>,
}

// ---- reading and writing the parking document ----

/// The park's parking document read whole (it is small), or a 404 when it has none.
async fn parking(s: &ApiState, park: &str) -> ApiResult<Parking> {
    let (documents, park2) = (s.documents.clone(), park.to_string());
    let read = tokio::task::spawn_blocking(move || {
        documents.read_document::<ParkingSchema, _>(&park2, PARKING, |d| d.snapshot())
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    match read {
        None => Err(ApiError::not_found(format!(
            "park {park} has no car parks on this hub"
        ))),
        Some(r) => r.and_then(|r| r).map_err(|e| ApiError::internal(e.into())),
    }
}

/// A page of one of the document's collections.
async fn list<E, V>(
    s: &ApiState,
    park: &str,
    q: Result<Query<ListQuery>, QueryRejection>,
    pick: fn(&Parking) -> &BTreeMap<String, E>,
    keep: impl Fn(&E, &str, Option<&str>) -> bool,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<(usize, usize, Vec<V>)>
where
    E: Entity<Schema = ParkingSchema> + Clone,
{
    let Query(q) = q?;
    let p = parking(s, park).await?;
    page_of(s, park, &q, pick(&p).values(), keep, view).await
}

/// An edit of the park's parking document, made, audited and stored as the directory's are.
async fn put<E, V>(
    s: &ApiState,
    caller: &Caller,
    park: &str,
    id: &str,
    audit: accounts::Audit,
    edit: impl FnOnce(&mut ParkingDoc) -> Result<E, EditError> + Send + 'static,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<Json<V>>
where
    E: Entity<Schema = ParkingSchema> + Send + 'static,
{
    let apply = move |d: &Documents, store: &HubStore, park: &str, message: &str| {
        d.edit_document(store, park, PARKING, message, edit)
    };
    edit_record::<E, V>(s, caller, park, id, audit, apply, view).await
}

fn audit_of(
    s: &ApiState,
    caller: &Caller,
    action: &str,
    park: &str,
    id: &str,
    detail: serde_json::Value,
) -> accounts::Audit {
    s.auth
        .audit(&caller.actor(), action, &format!("{park}/{id}"), detail)
}

/// Refuses an `enterprise_id` the park's directory does not hold.
fn enterprise_known(directory: &Documents, park: &str, id: &str) -> Result<(), EditError> {
    let found = directory
        .read_directory(park, |d| d.get::<park_model::directory::Enterprise>(id))
        .transpose()?
        .flatten()
        .is_some();
    if found {
        Ok(())
    } else {
        Err(EditError::field(
            "enterprise_id",
            format!("no enterprise {id:?} in this park"),
        ))
    }
}

// ---- tariffs ----

fn tariff_view(t: Tariff, meta: RecordMeta) -> TariffView {
    TariffView {
        id: t.id,
        currency: t.currency,
        free_minutes: t.free_minutes,
        period_minutes: t.period_minutes,
        day_rate_fen: t.day_rate_fen,
        night_start_minute: t.night_start_minute,
        night_end_minute: t.night_end_minute,
        night_rate_fen: t.night_rate_fen,
        daily_cap_fen: t.daily_cap_fen,
        lost_ticket_fen: t.lost_ticket_fen,
        meta,
    }
}

async fn list_tariffs(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<TariffPage>> {
    let keep = |t: &Tariff, needle: &str, _: Option<&str>| matches(needle, &t.id, &t.currency);
    let (total, offset, tariffs) = list(&s, &park, q, |p| &p.tariffs, keep, tariff_view).await?;
    Ok(Json(TariffPage {
        total,
        offset,
        tariffs,
    }))
}

/// A minute of the day, as the tariff keeps it.
fn minute(field: &str, m: u32) -> Result<u16, EditError> {
    u16::try_from(m)
        .ok()
        .filter(|m| *m < 1440)
        .ok_or_else(|| EditError::field(field, "must be a minute of the day, 0 to 1439"))
}

fn amount(field: &str, fen: i64) -> Result<i64, EditError> {
    if (0..=100_000_000).contains(&fen) {
        Ok(fen)
    } else {
        Err(EditError::field(field, "must be 0 to 100000000 fen"))
    }
}

async fn put_tariff(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<TariffBody>, JsonRejection>,
) -> ApiResult<Json<TariffView>> {
    let Json(b) = body?;
    let audit = audit_of(
        &s,
        &caller,
        "tariff_put",
        &park,
        &id,
        json!({
            "free": b.free_minutes, "period": b.period_minutes, "day": b.day_rate_fen,
            "night": b.night_rate_fen, "cap": b.daily_cap_fen, "lost": b.lost_ticket_fen,
        }),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkingDoc| {
        if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(EditError::field(
                "currency",
                "must be three capital letters, such as CNY",
            ));
        }
        if b.period_minutes == 0 || b.period_minutes > 1440 {
            return Err(EditError::field("period_minutes", "must be 1 to 1440"));
        }
        if b.free_minutes > 10_080 {
            return Err(EditError::field(
                "free_minutes",
                "must be 0 to 10080 (a week)",
            ));
        }
        let t = Tariff {
            id: id2,
            currency: b.currency,
            free_minutes: b.free_minutes,
            period_minutes: b.period_minutes,
            day_rate_fen: amount("day_rate_fen", b.day_rate_fen)?,
            night_start_minute: minute("night_start_minute", b.night_start_minute)?,
            night_end_minute: minute("night_end_minute", b.night_end_minute)?,
            night_rate_fen: amount("night_rate_fen", b.night_rate_fen)?,
            daily_cap_fen: b
                .daily_cap_fen
                .map(|c| amount("daily_cap_fen", c))
                .transpose()?,
            lost_ticket_fen: amount("lost_ticket_fen", b.lost_ticket_fen)?,
        };
        d.upsert(&t)?;
        Ok(t)
    };
    put(&s, &caller, &park, &id, audit, edit, tariff_view).await
}

// ---- lots and lanes ----

fn lot_view(l: Lot, meta: RecordMeta) -> LotView {
    LotView {
        id: l.id,
        name: l.name,
        capacity: l.capacity,
        tariff_id: l.tariff_id,
        meta,
    }
}

async fn list_lots(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<LotPage>> {
    let keep = |l: &Lot, needle: &str, _: Option<&str>| matches(needle, &l.id, &l.name);
    let (total, offset, lots) = list(&s, &park, q, |p| &p.lots, keep, lot_view).await?;
    Ok(Json(LotPage {
        total,
        offset,
        lots,
    }))
}

async fn put_lot(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<LotBody>, JsonRejection>,
) -> ApiResult<Json<LotView>> {
    let Json(b) = body?;
    let audit = audit_of(
        &s,
        &caller,
        "lot_put",
        &park,
        &id,
        json!({"capacity": b.capacity, "tariff": b.tariff_id}),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkingDoc| {
        if b.capacity > 100_000 {
            return Err(EditError::field("capacity", "must be 0 to 100000"));
        }
        if let Some(t) = &b.tariff_id {
            check_id("tariff_id", t)?;
            exists::<Tariff>(d, "tariff_id", t, "tariff")?;
        }
        let l = Lot {
            id: id2,
            name: check_name("name", &b.name)?,
            capacity: b.capacity,
            tariff_id: b.tariff_id,
        };
        d.upsert(&l)?;
        Ok(l)
    };
    put(&s, &caller, &park, &id, audit, edit, lot_view).await
}

fn lane_view(l: Lane, meta: RecordMeta) -> LaneView {
    LaneView {
        direction: l.direction.as_str().into(),
        id: l.id,
        lot_id: l.lot_id,
        name: l.name,
        meta,
    }
}

async fn list_lanes(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<LanePage>> {
    let keep = |l: &Lane, needle: &str, of: Option<&str>| {
        of.is_none_or(|lot| l.lot_id == lot) && matches(needle, &l.id, &l.name)
    };
    let (total, offset, lanes) = list(&s, &park, q, |p| &p.lanes, keep, lane_view).await?;
    Ok(Json(LanePage {
        total,
        offset,
        lanes,
    }))
}

async fn put_lane(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<LaneBody>, JsonRejection>,
) -> ApiResult<Json<LaneView>> {
    let Json(b) = body?;
    let audit = audit_of(
        &s,
        &caller,
        "lane_put",
        &park,
        &id,
        json!({"lot": b.lot_id, "direction": b.direction}),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkingDoc| {
        check_id("lot_id", &b.lot_id)?;
        exists::<Lot>(d, "lot_id", &b.lot_id, "lot")?;
        let l = Lane {
            id: id2,
            lot_id: b.lot_id,
            direction: parse::<LaneDirection>("direction", &b.direction, &["in", "out"])?,
            name: check_name("name", &b.name)?,
        };
        d.upsert(&l)?;
        Ok(l)
    };
    put(&s, &caller, &park, &id, audit, edit, lane_view).await
}

// ---- passes and allowances ----

fn pass_view(p: Pass, meta: RecordMeta) -> PassView {
    PassView {
        kind: p.kind.as_str().into(),
        status: p.status.as_str().into(),
        id: p.id,
        plate: p.plate,
        lot_ids: p.lot_ids,
        valid_from: p.valid_from,
        valid_to: p.valid_to,
        enterprise_id: p.enterprise_id,
        meta,
    }
}

async fn list_passes(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<PassPage>> {
    let keep = |p: &Pass, needle: &str, of: Option<&str>| {
        of.is_none_or(|e| p.enterprise_id.as_deref() == Some(e)) && matches(needle, &p.id, &p.plate)
    };
    let (total, offset, passes) = list(&s, &park, q, |p| &p.passes, keep, pass_view).await?;
    Ok(Json(PassPage {
        total,
        offset,
        passes,
    }))
}

async fn list_enterprise_passes(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<PassPage>> {
    let keep = move |p: &Pass, needle: &str, _: Option<&str>| {
        p.enterprise_id.as_deref() == Some(enterprise.as_str()) && matches(needle, &p.id, &p.plate)
    };
    let (total, offset, passes) = list(&s, &park, q, |p| &p.passes, keep, pass_view).await?;
    Ok(Json(PassPage {
        total,
        offset,
        passes,
    }))
}

fn time(field: &str, t: i64) -> Result<Timestamp, EditError> {
    if (0..=253_402_300_799_999_999).contains(&t) {
        Ok(t)
    } else {
        Err(EditError::field(
            field,
            "must be microseconds since 1970, before the year 10000",
        ))
    }
}

async fn put_pass(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<PassBody>, JsonRejection>,
) -> ApiResult<Json<PassView>> {
    let Json(b) = body?;
    // The plate is a personal number of sorts: the audit keeps its last characters only.
    let plate = normalize_plate(&b.plate);
    let tail: String = plate
        .chars()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let audit = audit_of(
        &s,
        &caller,
        "pass_put",
        &park,
        &id,
        json!({
            "plate": format!("…{tail}"), "kind": b.kind, "lots": b.lot_ids, "status": b.status,
            "enterprise": b.enterprise_id,
        }),
    );
    let (directory, id2) = (s.documents.clone(), id.clone());
    let park2 = park.clone();
    let edit = move |d: &mut ParkingDoc| {
        if plate.is_empty() || plate.chars().count() > 16 {
            return Err(EditError::field(
                "plate",
                "must be 1 to 16 letters and digits",
            ));
        }
        if b.lot_ids.is_empty() || b.lot_ids.len() > 100 {
            return Err(EditError::field("lot_ids", "must name 1 to 100 lots"));
        }
        for lot in &b.lot_ids {
            check_id("lot_ids", lot)?;
            exists::<Lot>(d, "lot_ids", lot, "lot")?;
        }
        if let Some(e) = &b.enterprise_id {
            check_id("enterprise_id", e)?;
            enterprise_known(&directory, &park2, e)?;
        }
        let (from, to) = (
            time("valid_from", b.valid_from)?,
            time("valid_to", b.valid_to)?,
        );
        if to <= from {
            return Err(EditError::field("valid_to", "must be after valid_from"));
        }
        let p = Pass {
            id: id2,
            plate,
            kind: parse::<PassKind>(
                "kind",
                &b.kind,
                &["monthly", "enterprise_allowance", "visitor"],
            )?,
            lot_ids: b.lot_ids,
            valid_from: from,
            valid_to: to,
            status: parse::<PassStatus>("status", &b.status, &["active", "suspended"])?,
            enterprise_id: b.enterprise_id,
        };
        d.upsert(&p)?;
        Ok(p)
    };
    put(&s, &caller, &park, &id, audit, edit, pass_view).await
}

fn allowance_view(a: Allowance, meta: RecordMeta) -> AllowanceView {
    AllowanceView {
        id: a.id,
        enterprise_id: a.enterprise_id,
        lot_id: a.lot_id,
        quota: a.quota,
        meta,
    }
}

async fn list_allowances(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<AllowancePage>> {
    let keep = |a: &Allowance, needle: &str, of: Option<&str>| {
        of.is_none_or(|e| a.enterprise_id == e) && matches(needle, &a.id, &a.enterprise_id)
    };
    let (total, offset, allowances) =
        list(&s, &park, q, |p| &p.allowances, keep, allowance_view).await?;
    Ok(Json(AllowancePage {
        total,
        offset,
        allowances,
    }))
}

async fn put_allowance(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<AllowanceBody>, JsonRejection>,
) -> ApiResult<Json<AllowanceView>> {
    let Json(b) = body?;
    let audit = audit_of(
        &s,
        &caller,
        "allowance_put",
        &park,
        &id,
        json!({
            "enterprise": b.enterprise_id, "lot": b.lot_id, "quota": b.quota,
        }),
    );
    let (directory, id2, park2) = (s.documents.clone(), id.clone(), park.clone());
    let edit = move |d: &mut ParkingDoc| {
        check_id("lot_id", &b.lot_id)?;
        exists::<Lot>(d, "lot_id", &b.lot_id, "lot")?;
        check_id("enterprise_id", &b.enterprise_id)?;
        enterprise_known(&directory, &park2, &b.enterprise_id)?;
        if b.quota > 100_000 {
            return Err(EditError::field("quota", "must be 0 to 100000"));
        }
        let a = Allowance {
            id: id2,
            enterprise_id: b.enterprise_id,
            lot_id: b.lot_id,
            quota: b.quota,
        };
        d.upsert(&a)?;
        Ok(a)
    };
    put(&s, &caller, &park, &id, audit, edit, allowance_view).await
}
