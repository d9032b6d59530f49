//! Energy and water for billing: the park's utility tariffs (versioned: a version in force
//! today or before is never changed, so a past month always prices at its own table) and
//! its meters (a building's counter point mapped to a space, or to the building's common
//! areas, from a day and possibly to a day, so a meter can change hands mid-month).
//!
//! A bill run reads consumption from the hub's 15-minute counter rollups ([`HubMeters`]):
//! a contract's own meters for the days they fed its spaces within its term, and its share
//! of its buildings' common meters (by the area it leases over the area leased that day,
//! or by its stated key). Missing buckets are estimated and marked; a period with no
//! reading at all is left for a later run.

use std::collections::{BTreeMap, HashMap};

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use park_db::{Connection, OptionalExtension, params};
use park_model::billing::contract::{CommonShare, Terms};
use park_model::billing::energy::{
    Band, BandSpan, Bucket, Season, Tier, Usage, Utility, UtilityTariff, Version, fill_gaps,
    quarter_hours,
};
use park_model::billing::period::Days;
use park_model::billing::run::{Metered, Meters};
use park_model::directory::Space;
use park_model::identity::Access;
use park_model::identity::Permission::{BillingManage, EnterpriseRead};
use park_model::time::{MICROS_PER_DAY, format_date, parse_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::leasing::{Refusal, store_error};
use crate::master::check_id;
use crate::store::now_micros;

/// Tariffs and meters (migration 10).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS utility_tariffs (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    tariff TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meters (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    building TEXT NOT NULL,
    point TEXT NOT NULL,
    utility TEXT NOT NULL,
    space_id TEXT,
    from_day INTEGER NOT NULL,
    to_day INTEGER,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS utility_tariffs (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    tariff TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS meters (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    building TEXT NOT NULL,
    point TEXT NOT NULL,
    utility TEXT NOT NULL,
    space_id TEXT,
    from_day BIGINT NOT NULL,
    to_day BIGINT,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
";

/// The routes of tariffs and meters.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get(
        "/api/v1/parks/{park}/utility-tariffs",
        Allowed(EnterpriseRead),
        list_tariffs,
    )
    .doc(doc("billing", "The park's electricity and water tariffs").returns::<UtilityTariffPage>())
    .put(
        "/api/v1/parks/{park}/utility-tariffs/{tariff}",
        Allowed(BillingManage),
        put_tariff,
    )
    .doc(
        doc("billing", "Create a utility tariff, or add versions to one")
            .body::<UtilityTariffBody>()
            .returns::<UtilityTariffView>()
            .describe("A version in force today or before cannot change (a 409): add a later one. A wrong field is a 422 that names it."),
    )
    .get("/api/v1/parks/{park}/meters", Allowed(BillingManage), list_meters)
    .doc(doc("billing", "The park's meters and what each feeds").returns::<MeterPage>())
    .put(
        "/api/v1/parks/{park}/meters/{meter}",
        Allowed(BillingManage),
        put_meter,
    )
    .doc(
        doc("billing", "Map a counter point to a space (or a building's common areas) from a day")
            .body::<MeterBody>()
            .returns::<MeterView>()
            .describe("The same point mapped twice on overlapping days is a 409 naming the other mapping."),
    )
}

fn utilities() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["electricity", "water"])
}

fn bands() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["sharp", "peak", "flat", "valley", "deep_valley"])
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanBody {
    /// Minute of the day the band starts, on a quarter hour.
    #[schema(minimum = 0, maximum = 1425)]
    start_minute: u16,
    #[schema(schema_with = bands)]
    band: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeasonBody {
    #[schema(max_items = 12)]
    months: Vec<u32>,
    #[schema(max_items = 96)]
    workday: Vec<SpanBody>,
    #[schema(max_items = 96)]
    non_workday: Vec<SpanBody>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    /// Whole units (kWh, m³) a month above which the surcharge applies.
    #[schema(minimum = 0)]
    above_units: i64,
    /// Per unit, in 1/10,000 yuan.
    #[schema(minimum = 0, maximum = 100_000_000)]
    surcharge_e4: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    /// The first day it is in force, `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    valid_from: String,
    #[schema(max_items = 12)]
    seasons: Vec<SeasonBody>,
    /// Price per unit of each band used, in 1/10,000 yuan (0.6532 yuan/kWh is 6532).
    #[schema(value_type = Object)]
    prices_e4: BTreeMap<String, i64>,
    #[serde(default)]
    #[schema(max_items = 10)]
    tiers: Vec<TierBody>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UtilityTariffBody {
    #[schema(max_length = 200)]
    name: String,
    #[schema(schema_with = utilities)]
    utility: String,
    #[serde(default = "cny")]
    #[schema(max_length = 3)]
    currency: String,
    #[schema(min_items = 1, max_items = 50)]
    versions: Vec<VersionBody>,
}

fn cny() -> String {
    "CNY".into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UtilityTariffView {
    pub id: String,
    #[serde(flatten)]
    pub tariff: UtilityTariffBody,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UtilityTariffPage {
    pub tariffs: Vec<UtilityTariffView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterBody {
    #[schema(max_length = 128)]
    building_id: String,
    /// The counter point as the edge names it (`device/point`).
    #[schema(max_length = 256)]
    point: String,
    #[schema(schema_with = utilities)]
    utility: String,
    /// The space it feeds; none for the building's common areas.
    #[serde(default)]
    #[schema(max_length = 128)]
    space_id: Option<String>,
    /// The first day, `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    from: String,
    /// The last day, `YYYY-MM-DD`; none while it still feeds it.
    #[serde(default)]
    #[schema(max_length = 10)]
    to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeterView {
    pub id: String,
    pub building_id: String,
    pub point: String,
    #[schema(schema_with = utilities)]
    pub utility: String,
    pub space_id: Option<String>,
    pub from: String,
    pub to: Option<String>,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeterPage {
    pub meters: Vec<MeterView>,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("{field}: {message}"))
}

fn band_of(field: &str, text: &str) -> ApiResult<Band> {
    Ok(match text {
        "sharp" => Band::Sharp,
        "peak" => Band::Peak,
        "flat" => Band::Flat,
        "valley" => Band::Valley,
        "deep_valley" => Band::DeepValley,
        other => return Err(invalid(field, format!("{other:?} is not a band"))),
    })
}

fn utility_of(text: &str) -> ApiResult<Utility> {
    match text {
        "electricity" => Ok(Utility::Electricity),
        "water" => Ok(Utility::Water),
        other => Err(invalid(
            "utility",
            format!("{other:?} is not electricity or water"),
        )),
    }
}

/// The tariff a body states, checked; a refusal names the field.
fn tariff_of(b: &UtilityTariffBody) -> ApiResult<UtilityTariff> {
    if b.name.trim().is_empty() || b.name.chars().count() > 200 {
        return Err(invalid("name", "1 to 200 characters"));
    }
    let mut versions = Vec::new();
    for (v, vb) in b.versions.iter().enumerate() {
        let at = |rest: &str| format!("versions[{v}].{rest}");
        let valid_from = parse_date(&vb.valid_from)
            .ok_or_else(|| invalid(&at("valid_from"), "not a date YYYY-MM-DD"))?;
        let mut seasons = Vec::new();
        for (s, sb) in vb.seasons.iter().enumerate() {
            let spans = |name: &str, list: &[SpanBody]| -> ApiResult<Vec<BandSpan>> {
                list.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        Ok(BandSpan {
                            start_minute: x.start_minute,
                            band: band_of(&at(&format!("seasons[{s}].{name}[{i}].band")), &x.band)?,
                        })
                    })
                    .collect()
            };
            seasons.push(Season {
                months: sb.months.clone(),
                workday: spans("workday", &sb.workday)?,
                non_workday: spans("non_workday", &sb.non_workday)?,
            });
        }
        let mut prices = BTreeMap::new();
        for (band, price) in &vb.prices_e4 {
            prices.insert(band_of(&at(&format!("prices_e4.{band}")), band)?, *price);
        }
        versions.push(Version {
            valid_from,
            seasons,
            prices,
            tiers: vb
                .tiers
                .iter()
                .map(|t| Tier {
                    above_units: t.above_units,
                    surcharge_e4: t.surcharge_e4,
                })
                .collect(),
        });
    }
    let tariff = UtilityTariff {
        utility: utility_of(&b.utility)?,
        currency: b.currency.clone(),
        versions,
    };
    tariff
        .validate()
        .map_err(|e| invalid(&e.field.replace(".prices.", ".prices_e4."), e.message))?;
    Ok(tariff)
}

fn row_tariff(text: &str) -> park_db::Result<(UtilityTariffBody, UtilityTariff)> {
    #[derive(Deserialize)]
    struct Stored {
        body: UtilityTariffBody,
        tariff: UtilityTariff,
    }
    let s: Stored = serde_json::from_str(text)
        .map_err(|e| park_db::Error::Conversion(format!("utility tariff: {e}")))?;
    Ok((s.body, s.tariff))
}

/// The park's tariffs as a run prices with them.
pub(crate) fn tariffs(
    c: &Connection,
    park: &str,
) -> park_db::Result<BTreeMap<String, UtilityTariff>> {
    c.query_all(
        "SELECT id, tariff FROM utility_tariffs WHERE park = ?1",
        params![park],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                row_tariff(&r.get::<_, String>(1)?)?.1,
            ))
        },
    )
    .map(|v| v.into_iter().collect())
}

async fn list_tariffs(
    State(s): State<ApiState>,
    Path(park): Path<String>,
) -> ApiResult<Json<UtilityTariffPage>> {
    let tariffs = s
        .store
        .read(move |c| {
            c.query_all(
                "SELECT id, tariff, updated, updated_by FROM utility_tariffs WHERE park = ?1 ORDER BY id",
                params![park],
                |r| {
                    Ok(UtilityTariffView {
                        id: r.get(0)?,
                        tariff: row_tariff(&r.get::<_, String>(1)?)?.0,
                        updated_at: r.get(2)?,
                        updated_by: r.get(3)?,
                    })
                },
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(UtilityTariffPage { tariffs }))
}

async fn put_tariff(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<UtilityTariffBody>, JsonRejection>,
) -> ApiResult<Json<UtilityTariffView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "utility_tariff_put",
        &format!("{park}/utility-tariff/{id}"),
        json!({"versions": b.versions.iter().map(|v| v.valid_from.clone()).collect::<Vec<_>>()}),
    );
    let result = async {
        check_id("id", &id)?;
        let tariff = tariff_of(&b)?;
        let today = crate::billing::park_clock(&s, &park).await?.1;
        let (p2, i2, by, a2) = (park.clone(), id.clone(), caller.principal.username.clone(), audit.clone());
        let stored = serde_json::to_string(&json!({"body": b, "tariff": tariff}))
            .map_err(|e| ApiError::internal(e.into()))?;
        let name = b.name.clone();
        s.store
            .admin(move |tx| {
                let before: Option<String> = tx
                    .query_row(
                        "SELECT tariff FROM utility_tariffs WHERE park = ?1 AND id = ?2",
                        params![p2, i2],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(before) = before {
                    let (_, old) = row_tariff(&before)?;
                    // A version in force today or before stays as it was.
                    for v in old.versions.iter().filter(|v| v.valid_from <= today) {
                        if !tariff.versions.contains(v) {
                            return Err(Refusal(
                                StatusCode::CONFLICT,
                                "conflict",
                                format!(
                                    "the version from {} is in force or past and cannot change; add a later version",
                                    format_date(v.valid_from)
                                ),
                            )
                            .into());
                        }
                    }
                    if old.utility != tariff.utility {
                        return Err(Refusal(StatusCode::CONFLICT, "conflict", "utility: a tariff's utility does not change".into()).into());
                    }
                }
                tx.execute(
                    "INSERT INTO utility_tariffs (park, id, name, tariff, updated, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (park, id) DO UPDATE SET name = excluded.name, tariff = excluded.tariff,
                     updated = excluded.updated, updated_by = excluded.updated_by",
                    params![p2, i2, name, stored, now_micros(), by],
                )?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    let page = list_tariffs(State(s), Path(park)).await?;
    page.0
        .tariffs
        .into_iter()
        .find(|t| t.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no tariff {id}")))
}

/// A meter's mapping as stored.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    id: String,
    building: String,
    point: String,
    utility: Utility,
    space_id: Option<String>,
    days: Days,
}

fn assignments(c: &Connection, park: &str) -> park_db::Result<Vec<Assignment>> {
    c.query_all(
        "SELECT id, building, point, utility, space_id, from_day, to_day FROM meters WHERE park = ?1 ORDER BY id",
        params![park],
        |r| {
            let utility: String = r.get(3)?;
            Ok(Assignment {
                id: r.get(0)?,
                building: r.get(1)?,
                point: r.get(2)?,
                utility: if utility == "water" {
                    Utility::Water
                } else {
                    Utility::Electricity
                },
                space_id: r.get(4)?,
                days: Days::new(r.get(5)?, r.get::<_, Option<i32>>(6)?.unwrap_or(i32::MAX)),
            })
        },
    )
}

fn meter_view(a: Assignment, updated_at: i64, updated_by: String) -> MeterView {
    MeterView {
        id: a.id,
        building_id: a.building,
        point: a.point,
        utility: a.utility.as_str().into(),
        space_id: a.space_id,
        from: format_date(a.days.from),
        to: (a.days.to != i32::MAX).then(|| format_date(a.days.to - 1)),
        updated_at,
        updated_by,
    }
}

async fn list_meters(
    State(s): State<ApiState>,
    Path(park): Path<String>,
) -> ApiResult<Json<MeterPage>> {
    let meters = s
        .store
        .read(move |c| {
            let list = assignments(c, &park)?;
            let mut out = Vec::new();
            for a in list {
                let (at, by): (i64, String) = c.query_row(
                    "SELECT updated, updated_by FROM meters WHERE park = ?1 AND id = ?2",
                    params![park, a.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                out.push(meter_view(a, at, by));
            }
            Ok(out)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(MeterPage { meters }))
}

async fn put_meter(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<MeterBody>, JsonRejection>,
) -> ApiResult<Json<MeterView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "meter_put",
        &format!("{park}/meter/{id}"),
        json!({"building": b.building_id, "point": b.point, "space": b.space_id, "from": b.from, "to": b.to}),
    );
    let result = async {
        check_id("id", &id)?;
        check_id("building_id", &b.building_id)?;
        if b.point.is_empty() || b.point.len() > 256 {
            return Err(invalid("point", "1 to 256 characters"));
        }
        let utility = utility_of(&b.utility)?;
        let from = parse_date(&b.from).ok_or_else(|| invalid("from", "not a date YYYY-MM-DD"))?;
        let to = match &b.to {
            Some(t) => parse_date(t).ok_or_else(|| invalid("to", "not a date YYYY-MM-DD"))? + 1,
            None => i32::MAX,
        };
        if to <= from {
            return Err(invalid("to", "must not be before from"));
        }
        if let Some(space) = &b.space_id {
            check_id("space_id", space)?;
            let (s2, p2, sp) = (s.clone(), park.clone(), space.clone());
            let found = tokio::task::spawn_blocking(move || {
                s2.documents.read_directory(&p2, |d| d.get::<Space>(&sp))
            })
            .await
            .map_err(|e| ApiError::internal(e.into()))?
            .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))?
            .map_err(|e| ApiError::invalid(e.to_string()))?;
            match found {
                None => return Err(invalid("space_id", format!("no space {space} in this park"))),
                Some(sp) if sp.building_id != b.building_id => {
                    return Err(invalid(
                        "space_id",
                        format!("{space} is in building {}, not {}", sp.building_id, b.building_id),
                    ));
                }
                Some(_) => {}
            }
        }
        let a = Assignment {
            id: id.clone(),
            building: b.building_id.clone(),
            point: b.point.clone(),
            utility,
            space_id: b.space_id.clone(),
            days: Days::new(from, to),
        };
        let (p2, by, a2) = (park.clone(), caller.principal.username.clone(), audit.clone());
        s.store
            .admin(move |tx| {
                for other in assignments(tx, &p2)? {
                    if other.id != a.id
                        && other.building == a.building
                        && other.point == a.point
                        && other.days.overlaps(a.days)
                    {
                        return Err(Refusal(
                            StatusCode::CONFLICT,
                            "conflict",
                            format!(
                                "point {} of {} is meter {} on some of these days; end that mapping first",
                                a.point, a.building, other.id
                            ),
                        )
                        .into());
                    }
                }
                tx.execute(
                    "INSERT INTO meters (park, id, building, point, utility, space_id, from_day, to_day, updated, updated_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (park, id) DO UPDATE SET building = excluded.building, point = excluded.point,
                     utility = excluded.utility, space_id = excluded.space_id, from_day = excluded.from_day,
                     to_day = excluded.to_day, updated = excluded.updated, updated_by = excluded.updated_by",
                    params![
                        p2,
                        a.id,
                        a.building,
                        a.point,
                        a.utility.as_str(),
                        a.space_id,
                        a.days.from,
                        (a.days.to != i32::MAX).then_some(a.days.to),
                        now_micros(),
                        by
                    ],
                )?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    let page = list_meters(State(s), Path(park)).await?;
    page.0
        .meters
        .into_iter()
        .find(|m| m.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no meter {id}")))
}

/// Consumption for a bill run, read from the hub's 15-minute counter rollups in the run's
/// transaction.
pub(crate) struct HubMeters<'a> {
    tx: &'a Connection<'a>,
    park: String,
    offset: i32,
    meters: Vec<Assignment>,
    /// Each space's building.
    buildings: HashMap<String, String>,
    /// Every billable contract's spaces, areas and term, for shares by area.
    leased: Vec<Terms>,
}

impl<'a> HubMeters<'a> {
    pub(crate) fn new(
        tx: &'a Connection<'a>,
        park: &str,
        offset: i32,
        buildings: HashMap<String, String>,
        leased: Vec<Terms>,
    ) -> park_db::Result<HubMeters<'a>> {
        Ok(HubMeters {
            meters: assignments(tx, park)?,
            tx,
            park: park.to_string(),
            offset,
            buildings,
            leased,
        })
    }

    fn day_start(&self, day: i32) -> i64 {
        i64::from(day) * MICROS_PER_DAY - i64::from(self.offset) * 60_000_000
    }

    /// A meter's buckets over `days`, estimated where missing; `None` when it has no
    /// reading at all there.
    fn buckets(
        &self,
        m: &Assignment,
        days: Days,
    ) -> Result<Option<(Vec<Usage>, serde_json::Value)>, String> {
        let (from, to) = (self.day_start(days.from), self.day_start(days.to));
        let rows: Vec<(i64, Option<f64>, i64)> = self
            .tx
            .query_all(
                "SELECT r.bucket, r.delta, r.count FROM rollups r
                 JOIN points p ON p.id = r.point_id JOIN buildings b ON b.id = p.building_id
                 WHERE b.park = ?1 AND b.building = ?2 AND p.point = ?3 AND r.period = 900
                   AND r.bucket >= ?4 AND r.bucket < ?5",
                params![self.park, m.building, m.point, from, to],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| e.to_string())?;
        let measured: HashMap<i64, i64> = rows
            .into_iter()
            .filter_map(|(bucket, delta, count)| {
                let d = delta.filter(|d| d.is_finite() && *d >= 0.0 && count > 0)?;
                // Readings are in the billed unit; a thousandth of it (a Wh, a litre) is the
                // quantity's resolution, not a rounding of money.
                Some((bucket, (d * 1000.0).round() as i64))
            })
            .collect();
        let starts = quarter_hours(from, to);
        let buckets: Vec<Bucket> = starts
            .iter()
            .map(|s| {
                measured
                    .get(s)
                    .map_or(Bucket::Missing, |m| Bucket::Measured(*m))
            })
            .collect();
        let Some(usage) = fill_gaps(&starts, &buckets, |_, _| None, None) else {
            return Ok(None);
        };
        let total: i64 = usage.iter().map(|u| u.milli).sum();
        let estimated: i64 = usage.iter().filter(|u| u.estimated).map(|u| u.milli).sum();
        let explained = json!({
            "meter": m.id, "building": m.building, "point": m.point,
            "from": format_date(days.from), "to": format_date(days.to - 1),
            "buckets": starts.len(), "measured_buckets": measured.len(),
            "consumption_milli": total, "estimated_milli": estimated,
        });
        Ok(Some((usage, explained)))
    }
}

impl Meters for HubMeters<'_> {
    fn usage(
        &mut self,
        _contract_id: &str,
        terms: &Terms,
        utility: Utility,
        common: bool,
        days: Days,
    ) -> Result<Option<Metered>, String> {
        let days = days.intersect(terms.term);
        let mine: Vec<&String> = terms.spaces.iter().map(|s| &s.space_id).collect();
        let my_buildings: Vec<&String> =
            mine.iter().filter_map(|s| self.buildings.get(*s)).collect();
        let mut usage = Vec::new();
        let mut explained = Vec::new();
        let mut found = false;
        for m in self.meters.iter().filter(|m| m.utility == utility) {
            let relevant = match (&m.space_id, common) {
                (Some(space), false) => mine.contains(&space),
                (None, true) => my_buildings.contains(&&m.building),
                _ => false,
            };
            let span = m.days.intersect(days);
            if !relevant || span.is_empty() {
                continue;
            }
            let Some((buckets, mut why)) = self.buckets(m, span)? else {
                return Ok(None);
            };
            found = true;
            if common {
                let share = |day: i32| -> (i128, i128) {
                    match terms.energy.common_share {
                        CommonShare::Key { bp } => (i128::from(bp), 10_000),
                        CommonShare::None => (0, 1),
                        CommonShare::ByArea => {
                            let area_in = |t: &Terms| -> i128 {
                                t.spaces
                                    .iter()
                                    .filter(|s| {
                                        self.buildings.get(&s.space_id) == Some(&m.building)
                                    })
                                    .map(|s| i128::from(s.area_centi_m2))
                                    .sum()
                            };
                            let all: i128 = self
                                .leased
                                .iter()
                                .filter(|t| t.term.contains(day))
                                .map(area_in)
                                .sum();
                            (area_in(terms), all.max(1))
                        }
                    }
                };
                for u in buckets {
                    let day = park_model::time::LocalTime::at(u.start, self.offset).day;
                    let (num, den) = share(day);
                    // A share of a common meter in whole thousandths of the unit, halves up.
                    let milli = ((i128::from(u.milli) * num * 2 + den) / (2 * den)) as i64;
                    usage.push(Usage { milli, ..u });
                }
                why["share"] = json!(match terms.energy.common_share {
                    CommonShare::Key { bp } => format!("{bp} bp"),
                    _ => "by area leased".into(),
                });
            } else {
                usage.extend(buckets);
            }
            explained.push(why);
        }
        if !found {
            return Ok(None);
        }
        Ok(Some(Metered {
            usage,
            meters: serde_json::Value::Array(explained),
        }))
    }
}
