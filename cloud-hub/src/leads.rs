//! Leads (招商线索): the first step of the park's contract flow (intent → contract → review
//! → bills → enterprise account). A lead is a company that may rent: who to talk to, how
//! much space it needs and from when, what it can pay; each contact with it is a follow-up
//! with the next one's date. Its states:
//!
//! `new` → (a follow-up) `following` → (spaces chosen) `intent` → (`convert`) `converted`,
//! and from any of the first three `lost`, with the reason (a lost lead can be reopened).
//!
//! Converting makes the company an enterprise of the park's directory (a tenant, with no
//! lease yet, so its people open no door until a contract is activated); its contract is
//! then drafted for that enterprise. The contact's phone number is sealed at rest like a
//! person's and shown whole only to the lead's owner and to those who may read personal
//! data.

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use park_db::{Connection, OptionalExtension, params};
use park_model::directory::{Enterprise, EnterpriseKind, EnterpriseStatus, Space, SpaceState};
use park_model::identity::Permission::{LeasingManage, PersonalRead};
use park_model::identity::secret::mask_phone;
use park_model::identity::{Access, Scope};
use park_model::time::{format_date, parse_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::billing::{park_clock, refusal};
use crate::leasing::store_error;
use crate::master::{EditError, check_id};
use crate::store::now_micros;

/// Leads and their follow-ups (migration 13).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leads (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    phone TEXT,
    source TEXT NOT NULL,
    need_area_centi_m2 INTEGER NOT NULL,
    need_from INTEGER,
    budget_fen_per_m2_month INTEGER,
    space_ids TEXT NOT NULL,
    state TEXT NOT NULL,
    lost_reason TEXT NOT NULL,
    enterprise_id TEXT,
    next_day INTEGER,
    owner TEXT NOT NULL,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lead_followups (
    park TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    note TEXT NOT NULL,
    next_day INTEGER,
    PRIMARY KEY (park, lead_id, seq)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leads (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    company TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    phone TEXT,
    source TEXT NOT NULL,
    need_area_centi_m2 BIGINT NOT NULL,
    need_from BIGINT,
    budget_fen_per_m2_month BIGINT,
    space_ids TEXT NOT NULL,
    state TEXT NOT NULL,
    lost_reason TEXT NOT NULL,
    enterprise_id TEXT,
    next_day BIGINT,
    owner TEXT NOT NULL,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS lead_followups (
    park TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    note TEXT NOT NULL,
    next_day BIGINT,
    PRIMARY KEY (park, lead_id, seq)
);
";

/// The associated data a lead's phone number is sealed with.
pub fn phone_aad(park: &str, lead: &str) -> String {
    format!("lead:{park}/{lead}:phone")
}

const SOURCES: [&str; 6] = ["visit", "call", "referral", "online", "event", "other"];
const KINDS: [&str; 5] = ["call", "visit", "meeting", "message", "other"];
const STATES: [&str; 5] = ["new", "following", "intent", "converted", "lost"];

fn sources() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(SOURCES)
}

fn kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(KINDS)
}

fn states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(STATES)
}

fn actions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["intent", "lose", "reopen", "convert"])
}

/// The routes of leads.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get("/api/v1/parks/{park}/leads", Allowed(LeasingManage), list_leads)
        .doc(
            doc("leasing", "The park's leads, those due for a follow-up first")
                .query::<LeadQuery>()
                .returns::<LeadPage>(),
        )
        .get("/api/v1/parks/{park}/leads/{lead}", Allowed(LeasingManage), get_lead)
        .doc(doc("leasing", "A lead with its follow-ups").returns::<LeadView>())
        .put("/api/v1/parks/{park}/leads/{lead}", Allowed(LeasingManage), put_lead)
        .doc(
            doc("leasing", "Create a lead, or change one still open")
                .body::<LeadBody>()
                .returns::<LeadView>()
                .describe("A field that cannot be is a 422 that names it; a converted or lost lead is a 409."),
        )
        .post(
            "/api/v1/parks/{park}/leads/{lead}/follow-ups",
            Allowed(LeasingManage),
            follow_up,
        )
        .doc(
            doc("leasing", "Record a contact with the lead and when the next one is due")
                .body::<FollowUpBody>()
                .returns::<LeadView>(),
        )
        .post(
            "/api/v1/parks/{park}/leads/{lead}/actions",
            Allowed(LeasingManage),
            act_on_lead,
        )
        .doc(
            doc("leasing", "Move a lead on: intent (spaces chosen), lose (with the reason), reopen, convert (the company becomes an enterprise of the park)")
                .body::<LeadAction>()
                .returns::<LeadView>()
                .describe("A move the lead's state does not allow is a 409 that says why."),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    #[schema(min_length = 1, max_length = 200)]
    company: String,
    #[schema(min_length = 1, max_length = 100)]
    contact_name: String,
    /// The contact's phone number (sealed at rest); left out, the one stored is kept.
    #[serde(default)]
    #[schema(max_length = 20)]
    phone: Option<String>,
    #[schema(schema_with = sources)]
    source: String,
    /// Space needed, in hundredths of a square metre.
    #[schema(minimum = 0, maximum = 100_000_000)]
    need_area_centi_m2: i64,
    /// From when, `YYYY-MM-DD`.
    #[serde(default)]
    #[schema(max_length = 10)]
    need_from: Option<String>,
    /// What it can pay, fen per m² and month.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000_000)]
    budget_fen_per_m2_month: Option<i64>,
    /// The spaces it is interested in.
    #[serde(default)]
    #[schema(max_items = 200)]
    space_ids: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUpBody {
    #[schema(schema_with = kinds)]
    kind: String,
    #[schema(min_length = 1, max_length = 2000)]
    note: String,
    /// When to follow up next, `YYYY-MM-DD`.
    #[serde(default)]
    #[schema(max_length = 10)]
    next_date: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadAction {
    #[schema(schema_with = actions)]
    action: String,
    /// Why the lead is lost (to lose it).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
    /// The id the company gets as an enterprise of the park (to convert it).
    #[serde(default)]
    #[schema(max_length = 128)]
    enterprise_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadQuery {
    #[param(schema_with = states)]
    state: Option<String>,
    /// Part of the company's or the contact's name.
    #[param(max_length = 100)]
    q: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FollowUpView {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    #[schema(schema_with = kinds)]
    pub kind: String,
    pub note: String,
    pub next_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeadView {
    pub id: String,
    pub company: String,
    pub contact_name: String,
    /// Masked (`138****5678`) unless the caller owns the lead or may read personal data.
    pub phone: Option<String>,
    pub phone_masked: bool,
    #[schema(schema_with = sources)]
    pub source: String,
    pub need_area_centi_m2: i64,
    pub need_from: Option<String>,
    pub budget_fen_per_m2_month: Option<i64>,
    pub space_ids: Vec<String>,
    #[schema(schema_with = states)]
    pub state: String,
    pub lost_reason: String,
    /// The enterprise it became.
    pub enterprise_id: Option<String>,
    /// When the next follow-up is due.
    pub next_date: Option<String>,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub updated_by: String,
    /// Its follow-ups, oldest first (in a lead's own answer; empty in lists).
    pub follow_ups: Vec<FollowUpView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeadPage {
    pub total: usize,
    pub offset: usize,
    pub leads: Vec<LeadView>,
}

struct Row {
    view: LeadView,
    sealed_phone: Option<String>,
}

const COLUMNS: &str = "id, company, contact_name, phone, source, need_area_centi_m2, need_from, budget_fen_per_m2_month, space_ids, state, lost_reason, enterprise_id, next_day, owner, created, updated, updated_by";

fn row(r: &park_db::Row) -> park_db::Result<Row> {
    let day = |i: usize| -> park_db::Result<Option<String>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|d| format_date(d as i32)))
    };
    let spaces: String = r.get(8)?;
    Ok(Row {
        sealed_phone: r.get(3)?,
        view: LeadView {
            id: r.get(0)?,
            company: r.get(1)?,
            contact_name: r.get(2)?,
            phone: None,
            phone_masked: true,
            source: r.get(4)?,
            need_area_centi_m2: r.get(5)?,
            need_from: day(6)?,
            budget_fen_per_m2_month: r.get(7)?,
            space_ids: serde_json::from_str(&spaces).unwrap_or_default(),
            state: r.get(9)?,
            lost_reason: r.get(10)?,
            enterprise_id: r.get(11)?,
            next_date: day(12)?,
            owner: r.get(13)?,
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
            updated_by: r.get(16)?,
            follow_ups: Vec::new(),
        },
    })
}

/// The view a caller gets: the phone whole for the owner and personal-data readers.
fn shown(s: &ApiState, caller: &Caller, park: &str, r: Row) -> LeadView {
    let mut v = r.view;
    let whole = v.owner == caller.principal.username
        || caller
            .principal
            .permissions_at(&Scope::park(park))
            .contains(PersonalRead);
    v.phone = r.sealed_phone.map(|sealed| {
        match s.auth.open_sealed(&phone_aad(park, &v.id), &sealed) {
            Ok(plain) => {
                let text = String::from_utf8_lossy(&plain).into_owned();
                if whole { text } else { mask_phone(&text) }
            }
            Err(e) => {
                tracing::error!(%park, lead = %v.id, error = %e, "A lead's sealed phone does not open.");
                "(unreadable)".into()
            }
        }
    });
    v.phone_masked = !whole;
    v
}

fn read(c: &Connection, park: &str, id: &str) -> park_db::Result<Option<Row>> {
    let found = c
        .query_row(
            &format!("SELECT {COLUMNS} FROM leads WHERE park = ?1 AND id = ?2"),
            params![park, id],
            row,
        )
        .optional()?;
    let Some(mut found) = found else {
        return Ok(None);
    };
    found.view.follow_ups = c.query_all(
        "SELECT seq, at, actor, kind, note, next_day FROM lead_followups WHERE park = ?1 AND lead_id = ?2 ORDER BY seq",
        params![park, id],
        |r| {
            Ok(FollowUpView {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                kind: r.get(3)?,
                note: r.get(4)?,
                next_date: r.get::<_, Option<i64>>(5)?.map(|d| format_date(d as i32)),
            })
        },
    )?;
    Ok(Some(found))
}

async fn answer(s: &ApiState, caller: &Caller, park: &str, id: &str) -> ApiResult<Json<LeadView>> {
    let (p2, i2) = (park.to_string(), id.to_string());
    let found = s
        .store
        .read(move |c| read(c, &p2, &i2))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no lead {id} in park {park}")))?;
    Ok(Json(shown(s, caller, park, found)))
}

async fn get_lead(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
) -> ApiResult<Json<LeadView>> {
    answer(&s, &caller, &park, &id).await
}

async fn list_leads(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(park): Path<String>,
    q: Result<Query<LeadQuery>, QueryRejection>,
) -> ApiResult<Json<LeadPage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: from 1 to 500"));
    }
    if let Some(st) = &q.state
        && !STATES.contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not a lead's state"
        )));
    }
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 100) {
        return Err(ApiError::bad_request("q: at most 100 characters"));
    }
    let offset = q.offset.unwrap_or(0);
    let p2 = park.clone();
    let rows = s
        .store
        .read(move |c| {
            c.query_all(
                &format!(
                    "SELECT {COLUMNS} FROM leads WHERE park = ?1 AND (state = ?2 OR ?3 = 1)
                     ORDER BY CASE WHEN next_day IS NULL THEN 1 ELSE 0 END, next_day, updated DESC, id"
                ),
                params![p2, q.state.clone().unwrap_or_default(), i64::from(q.state.is_none())],
                row,
            )
        })
        .await
        .map_err(ApiError::internal)?;
    let needle = q.q.as_deref().map(str::to_lowercase);
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| {
            needle.as_deref().is_none_or(|n| {
                r.view.company.to_lowercase().contains(n)
                    || r.view.contact_name.to_lowercase().contains(n)
            })
        })
        .collect();
    Ok(Json(LeadPage {
        total: rows.len(),
        offset,
        leads: rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|r| shown(&s, &caller, &park, r))
            .collect(),
    }))
}

/// The park's spaces and their states, for checking a lead's choice.
async fn spaces(
    s: &ApiState,
    park: &str,
) -> ApiResult<std::collections::HashMap<String, SpaceState>> {
    let (s2, p2) = (s.clone(), park.to_string());
    tokio::task::spawn_blocking(move || {
        s2.documents.directory_snapshot(&p2).map(|d| {
            d.map(|d| {
                d.spaces
                    .values()
                    .map(|sp: &Space| (sp.id.clone(), sp.state))
                    .collect()
            })
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))?
    .map_err(|e| ApiError::invalid(e.to_string()))
}

async fn put_lead(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<LeadBody>, JsonRejection>,
) -> ApiResult<Json<LeadView>> {
    let Json(b) = body?;
    // The phone number is never written to the audit log.
    let audit = s.auth.audit(
        &caller.actor(),
        "lead_put",
        &format!("{park}/lead/{id}"),
        json!({"company": b.company, "source": b.source, "need_area_centi_m2": b.need_area_centi_m2, "space_ids": b.space_ids, "phone_set": b.phone.is_some()}),
    );
    let result = async {
        check_id("id", &id)?;
        let company = b.company.trim().to_string();
        if company.is_empty() || company.chars().count() > 200 {
            return Err(ApiError::invalid("company: 1 to 200 characters"));
        }
        let contact = b.contact_name.trim().to_string();
        if contact.is_empty() || contact.chars().count() > 100 {
            return Err(ApiError::invalid("contact_name: 1 to 100 characters"));
        }
        if let Some(p) = &b.phone
            && !crate::people::valid_phone(p.trim())
        {
            return Err(ApiError::invalid("phone: 5 to 20 digits, spaces, + and -"));
        }
        if !SOURCES.contains(&b.source.as_str()) {
            return Err(ApiError::invalid(format!("source: {:?} is not one of {}", b.source, SOURCES.join(", "))));
        }
        if !(0..=100_000_000).contains(&b.need_area_centi_m2) {
            return Err(ApiError::invalid("need_area_centi_m2: from 0 to 10^8"));
        }
        if b.budget_fen_per_m2_month.is_some_and(|v| !(0..=10_000_000).contains(&v)) {
            return Err(ApiError::invalid("budget_fen_per_m2_month: from 0 to 10^7"));
        }
        let need_from = match &b.need_from {
            Some(t) => Some(parse_date(t).ok_or_else(|| ApiError::invalid(format!("need_from: {t:?} is not a date YYYY-MM-DD")))?),
            None => None,
        };
        if b.space_ids.len() > 200 {
            return Err(ApiError::invalid("space_ids: at most 200"));
        }
        let known = spaces(&s, &park).await?;
        for (i, sp) in b.space_ids.iter().enumerate() {
            if !known.contains_key(sp) {
                return Err(ApiError::invalid(format!("space_ids[{i}]: no space {sp:?} in the park")));
            }
        }
        let sealed = b.phone.as_ref().map(|p| s.auth.seal_value(&phone_aad(&park, &id), p.trim().as_bytes()));
        let (p2, i2, by, a2) = (park.clone(), id.clone(), caller.principal.username.clone(), audit.clone());
        let spaces_json = serde_json::to_string(&b.space_ids).unwrap_or_else(|_| "[]".into());
        let (source, area, budget) = (b.source.clone(), b.need_area_centi_m2, b.budget_fen_per_m2_month);
        s.store
            .admin(move |tx| {
                let state: Option<String> = tx
                    .query_row("SELECT state FROM leads WHERE park = ?1 AND id = ?2", params![p2, i2], |r| r.get(0))
                    .optional()?;
                let now = now_micros();
                match state.as_deref() {
                    None => {
                        tx.execute(
                            "INSERT INTO leads (park, id, company, contact_name, phone, source, need_area_centi_m2, need_from, budget_fen_per_m2_month, space_ids, state, lost_reason, owner, created, created_by, updated, updated_by)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'new', '', ?11, ?12, ?11, ?12, ?11)",
                            params![p2, i2, company, contact, sealed, source, area, need_from, budget, spaces_json, by, now],
                        )?;
                    }
                    Some(st @ ("converted" | "lost")) => {
                        return Err(refusal(StatusCode::CONFLICT, "conflict", format!("lead {i2} is {st}: a closed lead does not change (reopen a lost one first)")));
                    }
                    Some(_) => {
                        tx.execute(
                            "UPDATE leads SET company = ?3, contact_name = ?4, phone = COALESCE(?5, phone), source = ?6, need_area_centi_m2 = ?7, need_from = ?8,
                             budget_fen_per_m2_month = ?9, space_ids = ?10, updated = ?11, updated_by = ?12 WHERE park = ?1 AND id = ?2",
                            params![p2, i2, company, contact, sealed, source, area, need_from, budget, spaces_json, now, by],
                        )?;
                    }
                }
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    answer(&s, &caller, &park, &id).await
}

async fn follow_up(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<FollowUpBody>, JsonRejection>,
) -> ApiResult<Json<LeadView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "lead_follow_up",
        &format!("{park}/lead/{id}"),
        json!({"kind": b.kind, "next_date": b.next_date}),
    );
    let result = async {
        if !KINDS.contains(&b.kind.as_str()) {
            return Err(ApiError::invalid(format!("kind: {:?} is not one of {}", b.kind, KINDS.join(", "))));
        }
        let note = b.note.trim().to_string();
        if note.is_empty() || note.chars().count() > 2000 {
            return Err(ApiError::invalid("note: 1 to 2000 characters"));
        }
        let (_, today) = park_clock(&s, &park).await?;
        let next = match &b.next_date {
            Some(t) => {
                let d = parse_date(t).ok_or_else(|| ApiError::invalid(format!("next_date: {t:?} is not a date YYYY-MM-DD")))?;
                if d < today {
                    return Err(ApiError::invalid(format!("next_date: {t} is in the past")));
                }
                Some(d)
            }
            None => None,
        };
        let (p2, i2, by, a2) = (park.clone(), id.clone(), caller.principal.username.clone(), audit.clone());
        let kind = b.kind.clone();
        s.store
            .admin(move |tx| {
                let state: Option<String> = tx
                    .query_row("SELECT state FROM leads WHERE park = ?1 AND id = ?2", params![p2, i2], |r| r.get(0))
                    .optional()?;
                match state.as_deref() {
                    None => return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no lead {i2} in park {p2}"))),
                    Some("lost") => return Err(refusal(StatusCode::CONFLICT, "conflict", format!("lead {i2} is lost: reopen it first"))),
                    Some(_) => {}
                }
                let seq: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM lead_followups WHERE park = ?1 AND lead_id = ?2",
                    params![p2, i2],
                    |r| r.get(0),
                )?;
                let now = now_micros();
                tx.execute(
                    "INSERT INTO lead_followups (park, lead_id, seq, at, actor, kind, note, next_day) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![p2, i2, seq, now, by, kind, note, next],
                )?;
                tx.execute(
                    "UPDATE leads SET state = CASE WHEN state = 'new' THEN 'following' ELSE state END, next_day = ?3, updated = ?4, updated_by = ?5
                     WHERE park = ?1 AND id = ?2",
                    params![p2, i2, next, now, by],
                )?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    answer(&s, &caller, &park, &id).await
}

async fn act_on_lead(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<LeadAction>, JsonRejection>,
) -> ApiResult<Json<LeadView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "lead_action",
        &format!("{park}/lead/{id}"),
        json!({"action": b.action, "reason": b.reason, "enterprise_id": b.enterprise_id}),
    );
    let result = async {
        let (p2, i2) = (park.clone(), id.clone());
        let found = s
            .store
            .read(move |c| read(c, &p2, &i2))
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no lead {id} in park {park}")))?
            .view;
        if b.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(ApiError::invalid("reason: at most 500 characters"));
        }
        let conflict = |why: String| ApiError::new(StatusCode::CONFLICT, "conflict", why);
        let open = matches!(found.state.as_str(), "new" | "following" | "intent");
        let (to, reason, enterprise) = match b.action.as_str() {
            "intent" => {
                if !open {
                    return Err(conflict(format!("lead {id} is {}: only an open lead shows intent", found.state)));
                }
                if found.space_ids.is_empty() {
                    return Err(ApiError::invalid("space_ids: choose the spaces the company intends to rent first"));
                }
                let known = spaces(&s, &park).await?;
                if let Some(sp) = found.space_ids.iter().find(|sp| known.get(*sp) != Some(&SpaceState::Vacant)) {
                    return Err(conflict(format!("space {sp} is not vacant")));
                }
                ("intent", String::new(), None)
            }
            "lose" => {
                if !open {
                    return Err(conflict(format!("lead {id} is {}: only an open lead is lost", found.state)));
                }
                let reason = b.reason.clone().unwrap_or_default().trim().to_string();
                if reason.is_empty() {
                    return Err(ApiError::invalid("reason: why the lead is lost, 1 to 500 characters"));
                }
                ("lost", reason, None)
            }
            "reopen" => {
                if found.state != "lost" {
                    return Err(conflict(format!("lead {id} is {}, not lost", found.state)));
                }
                ("following", String::new(), None)
            }
            "convert" => {
                if !open {
                    return Err(conflict(format!("lead {id} is {}: only an open lead is converted", found.state)));
                }
                let e = b.enterprise_id.clone().unwrap_or_default();
                check_id("enterprise_id", &e)?;
                // The company joins the directory as a tenant (an existing enterprise of that
                // id must be the same company).
                let (documents, store, p2, message) = (
                    s.documents.clone(),
                    s.store.clone(),
                    park.clone(),
                    format!("hub: lead {id} converted"),
                );
                let (e2, company) = (e.clone(), found.company.clone());
                let done = tokio::task::spawn_blocking(move || {
                    documents.edit_directory(&store, &p2, &message, |d| {
                        match d.get::<Enterprise>(&e2)? {
                            Some(existing) if existing.name != company => Err(EditError::field(
                                "enterprise_id",
                                format!("{e2} is already {:?}, another company", existing.name),
                            )),
                            Some(_) => Ok(()),
                            None => {
                                d.upsert(&Enterprise {
                                    id: e2.clone(),
                                    name: company,
                                    status: EnterpriseStatus::Active,
                                    kind: EnterpriseKind::Tenant,
                                })?;
                                Ok(())
                            }
                        }
                    })
                })
                .await
                .map_err(|e| ApiError::internal(e.into()))?;
                match done {
                    None => return Err(ApiError::not_found(format!("park {park} has no directory on this hub"))),
                    Some(r) => r?,
                }
                s.store.flush().await;
                ("converted", String::new(), Some(e))
            }
            other => return Err(ApiError::invalid(format!("action: {other:?} is not intent, lose, reopen or convert"))),
        };
        let (p2, i2, by, a2, from) = (park.clone(), id.clone(), caller.principal.username.clone(), audit.clone(), found.state.clone());
        s.store
            .admin(move |tx| {
                let changed = tx.execute(
                    "UPDATE leads SET state = ?3, lost_reason = ?4, enterprise_id = COALESCE(?5, enterprise_id), updated = ?6, updated_by = ?7
                     WHERE park = ?1 AND id = ?2 AND state = ?8",
                    params![p2, i2, to, reason, enterprise, now_micros(), by, from],
                )?;
                if changed == 0 {
                    return Err(refusal(StatusCode::CONFLICT, "conflict", format!("lead {i2} changed meanwhile: read it again")));
                }
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    answer(&s, &caller, &park, &id).await
}
