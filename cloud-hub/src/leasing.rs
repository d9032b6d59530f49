//! Lease contracts on the hub (the park's flow: intent → contract → review → bills →
//! enterprise account): made and edited as drafts, submitted, reviewed by a second user,
//! activated, terminated early or left to expire. The terms and the transitions are
//! checked by [`park_model::billing::contract`]; every transition is audited and kept in
//! the contract's history. Activation writes the lease into the park's directory (so that
//! the enterprise's people open doors for its term, at every edge) and marks its spaces
//! leased; a termination moves the lease's end.
//!
//! Contracts are the hub's own records (SQL, not a synced document): edges need only the
//! lease they produce.

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use park_db::{Connection, OptionalExtension, params};
use park_model::ParkDirectory;
use park_model::billing::contract::{
    Action, CommonShare, Contract, Cycle, EnergyClause, LateFee, LeasedSpace, Rate,
    State as CState, Terms,
};
use park_model::billing::period::Days;
use park_model::directory::{Enterprise, Lease, LeaseStatus, Space, SpaceState};
use park_model::identity::Access;
use park_model::identity::Permission::{EnterpriseRead, LeasingManage};
use park_model::time::{LocalTime, MICROS_PER_DAY, format_date, parse_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::master::{EditError, check_id};
use crate::store::now_micros;

/// The contracts' tables (migration 7).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contracts (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    state TEXT NOT NULL,
    terms TEXT NOT NULL,
    submitted_by TEXT,
    approved_by TEXT,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contract_history (
    park TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (park, contract_id, seq)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contracts (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    state TEXT NOT NULL,
    terms TEXT NOT NULL,
    submitted_by TEXT,
    approved_by TEXT,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS contract_history (
    park TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (park, contract_id, seq)
);
";

/// Which contract a contract renews or changes (migration 11).
pub const SUCCESSION: &str = "
ALTER TABLE contracts ADD COLUMN follows TEXT;
ALTER TABLE contracts ADD COLUMN follow_kind TEXT;
";

/// The routes of contracts.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get(
        "/api/v1/parks/{park}/contracts",
        Allowed(EnterpriseRead),
        list_contracts,
    )
    .doc(
        doc("leasing", "The park's lease contracts, newest first")
            .query::<ContractQuery>()
            .returns::<ContractPage>(),
    )
    .get(
        "/api/v1/parks/{park}/contracts/{contract}",
        Allowed(EnterpriseRead),
        get_contract,
    )
    .doc(
        doc("leasing", "A contract with its rent schedule and its history")
            .returns::<ContractView>(),
    )
    .put(
        "/api/v1/parks/{park}/contracts/{contract}",
        Allowed(LeasingManage),
        put_contract,
    )
    .doc(
        doc("leasing", "Create a contract, or change one still in draft or rejected")
            .body::<ContractBody>()
            .returns::<ContractView>()
            .describe("A term that cannot be is a 422 that names its field."),
    )
    .post(
        "/api/v1/parks/{park}/contracts/{contract}/actions",
        Allowed(LeasingManage),
        act_on_contract,
    )
    .doc(
        doc(
            "leasing",
            "Move a contract on: submit, approve or reject (by another user than the one who submitted), revise, cancel, activate, terminate, expire",
        )
        .body::<ActionBody>()
        .returns::<ContractView>()
        .describe("A transition the contract's state does not allow is a 409 that says why."),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/contracts",
        Allowed(EnterpriseRead),
        list_enterprise_contracts,
    )
    .doc(
        doc("leasing", "One enterprise's own contracts")
            .query::<ContractQuery>()
            .returns::<ContractPage>(),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/contracts/{contract}",
        Allowed(EnterpriseRead),
        get_enterprise_contract,
    )
    .doc(
        doc("leasing", "One of an enterprise's own contracts, with its history")
            .returns::<ContractView>(),
    )
}

fn cycles() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["monthly", "quarterly"])
}

fn shares() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["by_area", "key", "none"])
}

fn states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(park_model::billing::contract::ALL_STATES.map(|s| s.as_str()))
}

fn follow_kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["renewal", "change"])
}

fn actions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of([
        "submit",
        "approve",
        "reject",
        "revise",
        "cancel",
        "activate",
        "terminate",
        "expire",
    ])
}

/// What a history row records: the actions, a draft's edits, and the end of a contract
/// that a renewal or change superseded.
fn history_actions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of([
        "edit",
        "submit",
        "approve",
        "reject",
        "revise",
        "cancel",
        "activate",
        "terminate",
        "expire",
        "supersede",
    ])
}

/// A monthly charge: per square metre of the contract's spaces, or fixed. Exactly one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateBody {
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_m2_month_fen: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixed_month_fen: Option<i64>,
}

/// Park-local dates, both included.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    /// `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    from: String,
    /// `YYYY-MM-DD`, the last day.
    #[schema(max_length = 10)]
    to: String,
}

/// A contract's terms as the API takes and shows them.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractBody {
    #[schema(max_length = 128)]
    enterprise_id: String,
    /// The spaces let; their areas are the spaces' own.
    #[schema(min_items = 1, max_items = 200)]
    space_ids: Vec<String>,
    /// The first day, `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    start: String,
    /// The last day, `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    end: String,
    rent: RateBody,
    #[serde(default)]
    #[schema(max_items = 20)]
    free_rent: Vec<DateRange>,
    /// Rent rise at each anniversary, in basis points (500 is 5 %).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    escalation_bp: u32,
    property_fee: RateBody,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    deposit_fen: i64,
    #[schema(schema_with = cycles)]
    cycle: String,
    /// Days from a bill's issue to its due date.
    #[serde(default = "default_due_days")]
    #[schema(minimum = 0, maximum = 365)]
    due_days: u32,
    /// Late fee per day on what is unpaid, in basis points (5 is 0.05 %).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    late_fee_bp_per_day: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 365)]
    late_fee_grace_days: u32,
    #[serde(default)]
    #[schema(max_length = 128)]
    electricity_tariff: Option<String>,
    #[serde(default)]
    #[schema(max_length = 128)]
    water_tariff: Option<String>,
    /// How the enterprise shares the common areas' energy.
    #[schema(schema_with = shares)]
    common_share: String,
    /// The stated share when `common_share` is `key`, in basis points.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    common_share_bp: Option<u32>,
    #[serde(default = "default_currency")]
    #[schema(max_length = 3)]
    currency: String,
    /// The active contract this one renews (starting the day after it ends) or changes
    /// (replacing it from this one's start); it ends where this one begins once this one
    /// is activated.
    #[serde(default)]
    #[schema(max_length = 128)]
    follows: Option<String>,
    #[serde(default)]
    #[schema(schema_with = follow_kinds)]
    follow_kind: Option<String>,
}

fn default_due_days() -> u32 {
    15
}

fn default_currency() -> String {
    "CNY".into()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[schema(schema_with = actions)]
    action: String,
    /// Why (a rejection, a termination).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
    /// A termination's last day, `YYYY-MM-DD`.
    #[serde(default)]
    #[schema(max_length = 10)]
    last_day: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractQuery {
    /// Only contracts in this state.
    #[param(schema_with = states)]
    state: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub at: i64,
    pub actor: String,
    #[schema(schema_with = history_actions)]
    pub action: String,
    #[schema(schema_with = states)]
    pub state: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContractView {
    pub id: String,
    pub enterprise_id: String,
    #[schema(schema_with = states)]
    pub state: String,
    pub terms: ContractBody,
    /// The area let, m² with two decimals.
    pub area_m2: String,
    /// The monthly rent of each contract year, in fen.
    pub rent_schedule_fen: Vec<i64>,
    pub submitted_by: Option<String>,
    pub approved_by: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
    /// Every transition, oldest first (only when one contract is asked for).
    pub history: Vec<HistoryView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContractPage {
    pub total: usize,
    pub offset: usize,
    pub contracts: Vec<ContractView>,
}

fn day_of(field: &str, text: &str) -> Result<i32, EditError> {
    parse_date(text)
        .ok_or_else(|| EditError::field(field, format!("{text:?} is not a date YYYY-MM-DD")))
}

fn rate_of(field: &str, r: &RateBody) -> Result<Rate, EditError> {
    match (r.per_m2_month_fen, r.fixed_month_fen) {
        (Some(fen), None) => Ok(Rate::PerM2Month { fen }),
        (None, Some(fen)) => Ok(Rate::FixedMonth { fen }),
        _ => Err(EditError::field(
            field,
            "give exactly one of per_m2_month_fen and fixed_month_fen",
        )),
    }
}

fn rate_body(r: Rate) -> RateBody {
    match r {
        Rate::PerM2Month { fen } => RateBody {
            per_m2_month_fen: Some(fen),
            fixed_month_fen: None,
        },
        Rate::FixedMonth { fen } => RateBody {
            per_m2_month_fen: None,
            fixed_month_fen: Some(fen),
        },
    }
}

/// The terms a body states, with the spaces' areas from the park's directory; refusals
/// name the field.
fn terms_of(b: &ContractBody, d: &ParkDirectory) -> Result<Terms, EditError> {
    check_id("enterprise_id", &b.enterprise_id)?;
    if d.get::<Enterprise>(&b.enterprise_id)?.is_none() {
        return Err(EditError::field(
            "enterprise_id",
            format!("no enterprise {} in this park", b.enterprise_id),
        ));
    }
    let mut spaces = Vec::new();
    for (i, id) in b.space_ids.iter().enumerate() {
        let field = format!("space_ids[{i}]");
        check_id(&field, id)?;
        let Some(space) = d.get::<Space>(id)? else {
            return Err(EditError::field(
                &field,
                format!("no space {id} in this park"),
            ));
        };
        spaces.push(LeasedSpace {
            space_id: id.clone(),
            // Areas are stated with at most two decimals: this is that figure, not a
            // rounding of money.
            area_centi_m2: (space.area_m2 * 100.0).round() as i64,
        });
    }
    let start = day_of("start", &b.start)?;
    let last = day_of("end", &b.end)?;
    let mut free_rent = Vec::new();
    for (i, r) in b.free_rent.iter().enumerate() {
        let from = day_of(&format!("free_rent[{i}].from"), &r.from)?;
        let to = day_of(&format!("free_rent[{i}].to"), &r.to)?;
        free_rent.push(Days::new(from, to + 1));
    }
    let common_share = match b.common_share.as_str() {
        "by_area" => CommonShare::ByArea,
        "none" => CommonShare::None,
        "key" => CommonShare::Key {
            bp: b.common_share_bp.ok_or_else(|| {
                EditError::field("common_share_bp", "a key share needs its basis points")
            })?,
        },
        other => {
            return Err(EditError::field(
                "common_share",
                format!("{other:?} is not one of by_area, key, none"),
            ));
        }
    };
    let cycle = match b.cycle.as_str() {
        "monthly" => Cycle::Monthly,
        "quarterly" => Cycle::Quarterly,
        other => {
            return Err(EditError::field(
                "cycle",
                format!("{other:?} is not one of monthly, quarterly"),
            ));
        }
    };
    for (field, tariff) in [
        ("electricity_tariff", &b.electricity_tariff),
        ("water_tariff", &b.water_tariff),
    ] {
        if let Some(t) = tariff {
            check_id(field, t)?;
        }
    }
    let terms = Terms {
        enterprise_id: b.enterprise_id.clone(),
        spaces,
        term: Days::new(start, last + 1),
        rent: rate_of("rent", &b.rent)?,
        free_rent,
        escalation_bp: b.escalation_bp,
        property_fee: rate_of("property_fee", &b.property_fee)?,
        deposit_fen: b.deposit_fen,
        cycle,
        due_days: b.due_days,
        late_fee: LateFee {
            bp_per_day: b.late_fee_bp_per_day,
            grace_days: b.late_fee_grace_days,
        },
        energy: EnergyClause {
            electricity_tariff: b.electricity_tariff.clone(),
            water_tariff: b.water_tariff.clone(),
            common_share,
        },
        currency: b.currency.clone(),
    };
    terms
        .validate()
        .map_err(|e| EditError::field(&e.field, e.message))?;
    Ok(terms)
}

fn body_of(t: &Terms, follows: &Option<(String, String)>) -> ContractBody {
    let (common_share, common_share_bp) = match t.energy.common_share {
        CommonShare::ByArea => ("by_area", None),
        CommonShare::None => ("none", None),
        CommonShare::Key { bp } => ("key", Some(bp)),
    };
    ContractBody {
        enterprise_id: t.enterprise_id.clone(),
        space_ids: t.spaces.iter().map(|s| s.space_id.clone()).collect(),
        start: format_date(t.term.from),
        end: format_date(t.term.to - 1),
        rent: rate_body(t.rent),
        free_rent: t
            .free_rent
            .iter()
            .map(|r| DateRange {
                from: format_date(r.from),
                to: format_date(r.to - 1),
            })
            .collect(),
        escalation_bp: t.escalation_bp,
        property_fee: rate_body(t.property_fee),
        deposit_fen: t.deposit_fen,
        cycle: match t.cycle {
            Cycle::Monthly => "monthly",
            Cycle::Quarterly => "quarterly",
        }
        .into(),
        due_days: t.due_days,
        late_fee_bp_per_day: t.late_fee.bp_per_day,
        late_fee_grace_days: t.late_fee.grace_days,
        electricity_tariff: t.energy.electricity_tariff.clone(),
        water_tariff: t.energy.water_tariff.clone(),
        common_share: common_share.into(),
        common_share_bp,
        currency: t.currency.clone(),
        follows: follows.as_ref().map(|f| f.0.clone()),
        follow_kind: follows.as_ref().map(|f| f.1.clone()),
    }
}

/// A contract as stored.
struct Row {
    id: String,
    contract: Contract,
    /// The contract it renews or changes, and which.
    follows: Option<(String, String)>,
    created: i64,
    created_by: String,
    updated: i64,
    updated_by: String,
}

const COLUMNS: &str = "id, state, terms, submitted_by, approved_by, created, created_by, updated, updated_by, follows, follow_kind";

fn row(r: &park_db::Row) -> park_db::Result<Row> {
    let state: String = r.get(1)?;
    let terms: String = r.get(2)?;
    let bad = |what: String| park_db::Error::Conversion(what);
    Ok(Row {
        id: r.get(0)?,
        contract: Contract {
            state: CState::parse(&state).ok_or_else(|| bad(format!("contract state {state:?}")))?,
            terms: serde_json::from_str(&terms).map_err(|e| bad(format!("contract terms: {e}")))?,
            submitted_by: r.get(3)?,
            approved_by: r.get(4)?,
        },
        created: r.get(5)?,
        created_by: r.get(6)?,
        updated: r.get(7)?,
        updated_by: r.get(8)?,
        follows: match (
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
        ) {
            (Some(f), Some(k)) => Some((f, k)),
            _ => None,
        },
    })
}

fn load(c: &Connection, park: &str, id: &str) -> park_db::Result<Option<Row>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM contracts WHERE park = ?1 AND id = ?2"),
        params![park, id],
        row,
    )
    .optional()
}

fn history(c: &Connection, park: &str, id: &str) -> park_db::Result<Vec<HistoryView>> {
    c.query_all(
        "SELECT at, actor, action, state, detail FROM contract_history WHERE park = ?1 AND contract_id = ?2 ORDER BY seq",
        params![park, id],
        |r| {
            let detail: String = r.get(4)?;
            Ok(HistoryView {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                state: r.get(3)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        },
    )
}

fn record_history(
    c: &Connection,
    park: &str,
    id: &str,
    actor: &str,
    action: &str,
    state: CState,
    detail: &serde_json::Value,
) -> park_db::Result<()> {
    c.execute(
        "INSERT INTO contract_history (park, contract_id, seq, at, actor, action, state, detail)
         SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4, ?5, ?6, ?7 FROM contract_history WHERE park = ?1 AND contract_id = ?2",
        params![park, id, now_micros(), actor, action, state.as_str(), detail.to_string()],
    )?;
    Ok(())
}

fn view(r: Row, history: Vec<HistoryView>) -> ContractView {
    let t = &r.contract.terms;
    let area = t.area_centi_m2();
    ContractView {
        enterprise_id: t.enterprise_id.clone(),
        state: r.contract.state.as_str().into(),
        terms: body_of(t, &r.follows),
        area_m2: format!("{}.{:02}", area / 100, area % 100),
        rent_schedule_fen: t.rent_schedule().unwrap_or_default(),
        submitted_by: r.contract.submitted_by.clone(),
        approved_by: r.contract.approved_by.clone(),
        created_at: r.created,
        created_by: r.created_by,
        updated_at: r.updated,
        updated_by: r.updated_by,
        id: r.id,
        history,
    }
}

/// A store transaction's failure as the API answers it: a [`Refusal`] as itself, a
/// database error as a 500, anything else (a broken rule) as a 422.
pub(crate) fn store_error(e: anyhow::Error) -> ApiError {
    if e.downcast_ref::<park_db::Error>().is_some() {
        ApiError::internal(e)
    } else if let Some(api) = e.downcast_ref::<Refusal>() {
        ApiError::new(api.0, api.1, api.2.clone())
    } else {
        ApiError::invalid(format!("{e:#}"))
    }
}

/// A refusal from inside a store transaction: its status, code and message.
#[derive(Debug)]
pub(crate) struct Refusal(pub StatusCode, pub &'static str, pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.2)
    }
}

impl std::error::Error for Refusal {}

async fn page(
    s: &ApiState,
    park: String,
    enterprise: Option<String>,
    q: ContractQuery,
) -> ApiResult<Json<ContractPage>> {
    let state = match &q.state {
        Some(text) => Some(
            CState::parse(text)
                .ok_or_else(|| {
                    ApiError::invalid(format!("state: {text:?} is not a contract state"))
                })?
                .as_str(),
        ),
        None => None,
    };
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: from 1 to 500"));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM contracts WHERE park = ?1");
    let mut values = vec![park_db::Value::Text(park)];
    for (column, value) in [
        ("enterprise_id", enterprise),
        ("state", state.map(str::to_string)),
    ] {
        if let Some(v) = value {
            values.push(park_db::Value::Text(v));
            sql.push_str(&format!(" AND {column} = ?{}", values.len()));
        }
    }
    sql.push_str(" ORDER BY created DESC, id");
    let rows = s
        .store
        .read(move |c| c.query_all(&sql, park_db::params_from_iter(values), row))
        .await
        .map_err(ApiError::internal)?;
    let total = rows.len();
    Ok(Json(ContractPage {
        total,
        offset,
        contracts: rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|r| view(r, Vec::new()))
            .collect(),
    }))
}

async fn list_contracts(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ContractQuery>, QueryRejection>,
) -> ApiResult<Json<ContractPage>> {
    let Query(q) = q?;
    page(&s, park, None, q).await
}

async fn list_enterprise_contracts(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
    q: Result<Query<ContractQuery>, QueryRejection>,
) -> ApiResult<Json<ContractPage>> {
    let Query(q) = q?;
    page(&s, park, Some(enterprise), q).await
}

async fn get_contract(
    State(s): State<ApiState>,
    Path((park, id)): Path<(String, String)>,
) -> ApiResult<Json<ContractView>> {
    contract_of(&s, park, id, None).await
}

async fn get_enterprise_contract(
    State(s): State<ApiState>,
    Path((park, enterprise, id)): Path<(String, String, String)>,
) -> ApiResult<Json<ContractView>> {
    contract_of(&s, park, id, Some(enterprise)).await
}

/// A contract with its history; with `enterprise`, only that enterprise's.
async fn contract_of(
    s: &ApiState,
    park: String,
    id: String,
    enterprise: Option<String>,
) -> ApiResult<Json<ContractView>> {
    let (p2, i2) = (park.clone(), id.clone());
    let found = s
        .store
        .read(move |c| {
            Ok(match load(c, &p2, &i2)? {
                Some(r) => Some((r, history(c, &p2, &i2)?)),
                None => None,
            })
        })
        .await
        .map_err(ApiError::internal)?;
    let (r, h) = found
        .filter(|(r, _)| {
            enterprise
                .as_ref()
                .is_none_or(|e| *e == r.contract.terms.enterprise_id)
        })
        .ok_or_else(|| ApiError::not_found(format!("no contract {id} in park {park}")))?;
    Ok(Json(view(r, h)))
}

/// The park's directory read for a check, or 404 when the hub holds none.
fn with_directory<T>(
    s: &ApiState,
    park: &str,
    read: impl FnOnce(&ParkDirectory) -> T,
) -> ApiResult<T> {
    s.documents
        .read_directory(park, read)
        .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))
}

async fn put_contract(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<ContractBody>, JsonRejection>,
) -> ApiResult<Json<ContractView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "contract_put",
        &format!("{park}/contract/{id}"),
        json!({"enterprise": b.enterprise_id, "spaces": b.space_ids, "start": b.start, "end": b.end}),
    );
    let result = async {
        check_id("id", &id)?;
        let (s2, p2, b2) = (s.clone(), park.clone(), b.clone());
        let terms = tokio::task::spawn_blocking(move || with_directory(&s2, &p2, |d| terms_of(&b2, d)))
            .await
            .map_err(|e| ApiError::internal(e.into()))???;
        let follows = match (&b.follows, b.follow_kind.as_deref()) {
            (None, None) => None,
            (Some(f), Some(kind @ ("renewal" | "change"))) => {
                check_id("follows", f)?;
                if *f == id {
                    return Err(ApiError::invalid("follows: a contract cannot follow itself"));
                }
                Some((f.clone(), kind.to_string()))
            }
            (Some(_), _) => {
                return Err(ApiError::invalid("follow_kind: renewal or change, with follows"));
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid("follows: name the contract this one follows"));
            }
        };
        let (by, a2, p2, i2) = (caller.principal.username.clone(), audit.clone(), park.clone(), id.clone());
        s.store
            .admin(move |tx| {
                if let Some((f, kind)) = &follows {
                    check_follows(tx, &p2, f, kind, &terms)?;
                }
                let (follows, kind) = (follows.as_ref().map(|f| &f.0), follows.as_ref().map(|f| &f.1));
                let now = now_micros();
                let json = serde_json::to_string(&terms)?;
                let n = match load(tx, &p2, &i2)? {
                    None => tx.execute(
                        "INSERT INTO contracts (park, id, enterprise_id, state, terms, created, created_by, updated, updated_by, follows, follow_kind)
                         VALUES (?1, ?2, ?3, 'draft', ?4, ?5, ?6, ?5, ?6, ?7, ?8)",
                        params![p2, i2, terms.enterprise_id, json, now, by, follows, kind],
                    )?,
                    Some(r) if r.contract.state.editable() => tx.execute(
                        "UPDATE contracts SET enterprise_id = ?3, terms = ?4, updated = ?5, updated_by = ?6, follows = ?8, follow_kind = ?9
                         WHERE park = ?1 AND id = ?2 AND state = ?7",
                        params![p2, i2, terms.enterprise_id, json, now, by, r.contract.state.as_str(), follows, kind],
                    )?,
                    Some(r) => {
                        return Err(Refusal(
                            StatusCode::CONFLICT,
                            "conflict",
                            format!(
                                "a contract that is {} cannot be changed; terminate it, or make a new one that follows it",
                                r.contract.state.as_str()
                            ),
                        )
                        .into());
                    }
                };
                anyhow::ensure!(n == 1, "the contract changed meanwhile; try again");
                record_history(tx, &p2, &i2, &by, "edit", CState::Draft, &json!({}))?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        Ok(())
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    get_contract(State(s), Path((park, id))).await
}

/// The park-local day now in a park `offset` minutes ahead of UTC.
fn today(offset: i32) -> i32 {
    LocalTime::at(now_micros(), offset).day
}

/// The instant a park-local day begins.
fn day_start(day: i32, offset: i32) -> i64 {
    i64::from(day) * MICROS_PER_DAY - i64::from(offset) * 60_000_000
}

async fn act_on_contract(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult<Json<ContractView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "contract_action",
        &format!("{park}/contract/{id}"),
        json!({"action": b.action, "reason": b.reason, "last_day": b.last_day}),
    );
    let result = act(&s, &caller, &park, &id, &b, audit.clone()).await;
    audit_outcome(&s.auth, audit, result).await?;
    get_contract(State(s), Path((park, id))).await
}

async fn act(
    s: &ApiState,
    caller: &Caller,
    park: &str,
    id: &str,
    b: &ActionBody,
    audit: accounts::Audit,
) -> ApiResult<()> {
    let (s2, p2) = (s.clone(), park.to_string());
    let offset =
        tokio::task::spawn_blocking(move || with_directory(&s2, &p2, |d| d.utc_offset_minutes()))
            .await
            .map_err(|e| ApiError::internal(e.into()))??
            .map_err(|e| ApiError::invalid(e.to_string()))?;
    let today = today(offset);
    let reason = b.reason.clone().unwrap_or_default();
    let action = match b.action.as_str() {
        "submit" => Action::Submit,
        "approve" => Action::Approve,
        "reject" => Action::Reject { reason },
        "revise" => Action::Revise,
        "cancel" => Action::Cancel,
        "activate" => Action::Activate,
        "expire" => Action::Expire,
        "terminate" => {
            let last = b
                .last_day
                .as_deref()
                .ok_or_else(|| ApiError::invalid("last_day: a termination needs its last day"))?;
            let last = parse_date(last).ok_or_else(|| {
                ApiError::invalid(format!("last_day: {last:?} is not a date YYYY-MM-DD"))
            })?;
            Action::Terminate {
                end: last + 1,
                reason,
            }
        }
        other => {
            return Err(ApiError::invalid(format!(
                "action: {other:?} is not one of submit, approve, reject, revise, cancel, activate, terminate, expire"
            )));
        }
    };
    let (p2, i2, by) = (
        park.to_string(),
        id.to_string(),
        caller.principal.username.clone(),
    );
    let a2 = action.clone();
    // The transition, checked and stored with its history and audit record in one
    // transaction; what it means for the directory follows.
    let (superseded, after) = s
        .store
        .admin(move |tx| {
            let Some(r) = load(tx, &p2, &i2)? else {
                return Err(Refusal(StatusCode::NOT_FOUND, "not_found", format!("no contract {i2} in park {p2}")).into());
            };
            let before = r.contract.clone();
            let mut c = r.contract;
            c.apply(&a2, &by, today).map_err(|e| {
                // The submitter reviewing their own contract has a code of its own, as a
                // refund decided by the one who asked for it.
                let code = if matches!(e, park_model::billing::contract::TransitionError::SameReviewer) {
                    "second_user"
                } else {
                    "conflict"
                };
                Refusal(StatusCode::CONFLICT, code, e.to_string())
            })?;
            let mut superseded = None;
            if a2 == Action::Activate {
                if let Some((f, kind)) = &r.follows {
                    // The contract this one follows ends where this one begins.
                    check_follows(tx, &p2, f, kind, &c.terms)?;
                    let old = load(tx, &p2, f)?.ok_or_else(|| anyhow::anyhow!("contract {f} vanished"))?;
                    let mut oc = old.contract;
                    let was = oc.state;
                    let act = Action::Supersede { by: i2.clone(), renewal: kind == "renewal", from: c.terms.term.from };
                    oc.apply(&act, &by, today).map_err(|e| Refusal(StatusCode::CONFLICT, "conflict", e.to_string()))?;
                    tx.execute(
                        "UPDATE contracts SET state = ?3, terms = ?4, updated = ?5, updated_by = ?6 WHERE park = ?1 AND id = ?2 AND state = ?7",
                        params![p2, f, oc.state.as_str(), serde_json::to_string(&oc.terms)?, now_micros(), by, was.as_str()],
                    )?;
                    record_history(tx, &p2, f, &by, "supersede", oc.state, &json!({"by": i2, "from": format_date(c.terms.term.from)}))?;
                    superseded = Some((f.clone(), oc));
                }
                overlapping(tx, &p2, &i2, &c.terms)?;
            }
            let n = tx.execute(
                "UPDATE contracts SET state = ?3, terms = ?4, submitted_by = ?5, approved_by = ?6, updated = ?7, updated_by = ?8
                 WHERE park = ?1 AND id = ?2 AND state = ?9",
                params![
                    p2,
                    i2,
                    c.state.as_str(),
                    serde_json::to_string(&c.terms)?,
                    c.submitted_by,
                    c.approved_by,
                    now_micros(),
                    by,
                    before.state.as_str()
                ],
            )?;
            anyhow::ensure!(n == 1, "the contract changed meanwhile; try again");
            let detail = match &a2 {
                Action::Reject { reason } => json!({"reason": reason}),
                Action::Terminate { end, reason } => json!({"reason": reason, "last_day": format_date(end - 1)}),
                _ => json!({}),
            };
            record_history(tx, &p2, &i2, &by, a2.name(), c.state, &detail)?;
            audit.append(tx)?;
            Ok((superseded, c))
        })
        .await
        .map_err(store_error)?;
    if let Some((old_id, old)) = &superseded {
        apply_to_directory(s, park, old_id, old, offset, today).await?;
    }
    if matches!(
        action,
        Action::Activate | Action::Terminate { .. } | Action::Expire
    ) {
        apply_to_directory(s, park, id, &after, offset, today).await?;
    }
    Ok(())
}

/// Checks what a renewal or change says it follows: an active contract of the same
/// enterprise, renewed from the day after its end, or changed from a day within its term.
fn check_follows(
    tx: &Connection,
    park: &str,
    follows: &str,
    kind: &str,
    terms: &Terms,
) -> anyhow::Result<()> {
    let bad = |m: String| -> anyhow::Error {
        Refusal(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m).into()
    };
    let Some(old) = load(tx, park, follows)? else {
        return Err(bad(format!("follows: no contract {follows} in this park")));
    };
    if old.contract.state != CState::Active {
        return Err(bad(format!(
            "follows: contract {follows} is {}, not active",
            old.contract.state.as_str()
        )));
    }
    if old.contract.terms.enterprise_id != terms.enterprise_id {
        return Err(bad(format!(
            "follows: contract {follows} is another enterprise's"
        )));
    }
    let old_term = old.contract.terms.term;
    match kind {
        "renewal" if terms.term.from != old_term.to => Err(bad(format!(
            "start: a renewal starts the day after {follows} ends, {}",
            format_date(old_term.to)
        ))),
        "change" if terms.term.from <= old_term.from || terms.term.from >= old_term.to => {
            Err(bad(format!(
                "start: a change starts within {follows}'s term, after {}",
                format_date(old_term.from)
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses an activation whose spaces another active contract lets on overlapping days.
fn overlapping(tx: &Connection, park: &str, id: &str, terms: &Terms) -> anyhow::Result<()> {
    let others = tx.query_all(
        &format!(
            "SELECT {COLUMNS} FROM contracts WHERE park = ?1 AND id <> ?2 AND state = 'active'"
        ),
        params![park, id],
        row,
    )?;
    for o in others {
        if !o.contract.terms.term.overlaps(terms.term) {
            continue;
        }
        if let Some(space) = terms.spaces.iter().find(|s| {
            o.contract
                .terms
                .spaces
                .iter()
                .any(|t| t.space_id == s.space_id)
        }) {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "space {} is let by contract {} on some of these days",
                    space.space_id, o.id
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// What a contract's activation, termination or expiry means for the park's directory:
/// the lease the edges decide from, and the spaces' state.
async fn apply_to_directory(
    s: &ApiState,
    park: &str,
    id: &str,
    after: &Contract,
    offset: i32,
    today: i32,
) -> ApiResult<()> {
    let t = after.terms.clone();
    let state = after.state;
    let schedule = t.rent_schedule().unwrap_or_default();
    let property = t
        .monthly(t.property_fee)
        .and_then(|m| m.round())
        .unwrap_or_default();
    let lease = Lease {
        id: id.to_string(),
        enterprise_id: t.enterprise_id.clone(),
        space_ids: t.spaces.iter().map(|s| s.space_id.clone()).collect(),
        valid_from: day_start(t.term.from, offset),
        valid_to: day_start(t.term.to, offset),
        status: LeaseStatus::Active,
        monthly_rent_fen: schedule.first().copied().unwrap_or(0),
        property_fee_fen: property,
        currency: t.currency.clone(),
    };
    let space_state = if state == CState::Active {
        SpaceState::Leased
    } else if t.term.to <= today + 1 {
        SpaceState::Vacant
    } else {
        // A termination that takes effect later: the spaces stay leased until then.
        SpaceState::Leased
    };
    let (documents, store, p2) = (s.documents.clone(), s.store.clone(), park.to_string());
    let message = format!("hub: contract {id} {}", state.as_str());
    let done = tokio::task::spawn_blocking(move || {
        documents.edit_directory(&store, &p2, &message, |d| {
            d.upsert(&lease)?;
            for sp in &lease.space_ids {
                d.update::<Space>(sp, |x| x.state = space_state)?;
            }
            Ok::<_, EditError>(())
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    match done {
        None => {
            return Err(ApiError::not_found(format!(
                "park {park} has no directory on this hub"
            )));
        }
        Some(r) => r?,
    }
    s.store.flush().await;
    Ok(())
}
