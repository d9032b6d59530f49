//! Bill runs and bills on the hub.
//!
//! A run of a month plans every billable contract of the park with
//! [`park_model::billing::run::plan`] against the **ledger**, which is the park's bill lines
//! themselves (each bills a charge of a contract over a range of days; a credit line takes
//! days back), and writes the new lines as one draft bill per enterprise, all in one
//! transaction. A second run of the same month finds everything covered and writes nothing;
//! the database refuses a second line for the same contract, charge and first day whatever
//! the code above it does. A bill's body (its lines and total, nothing of when or by whom)
//! is canonical JSON with its SHA-256, so the same inputs give byte-identical bills.
//!
//! A bill is `draft` until finance issues it (its due date then follows from the contracts'
//! due days), then `issued`; issued bills unpaid past their due date and grace carry late
//! fees in later runs. An issued bill is never edited: a correction is a credit line in a
//! later bill.

use std::collections::BTreeMap;

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use park_db::{Connection, OptionalExtension, params};
use park_model::billing::contract::{State as CState, Terms};
use park_model::billing::period::{Days, Month};
use park_model::billing::run::{self, Charge, Entry, Overdue, Pending};
use park_model::identity::Access;
use park_model::identity::Permission::{BillingManage, EnterpriseRead};
use park_model::identity::secret::sha256_hex;
use park_model::time::{LocalTime, Weekday, format_date, parse_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::leasing::{Refusal, store_error};
use crate::store::now_micros;

/// The bills' tables (migration 8).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bill_runs (
    park TEXT NOT NULL,
    month TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    contracts INTEGER NOT NULL,
    bills INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    total_fen INTEGER NOT NULL,
    pending TEXT NOT NULL,
    PRIMARY KEY (park, month, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bills (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    month TEXT NOT NULL,
    state TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_fen INTEGER NOT NULL,
    paid_fen INTEGER NOT NULL,
    issue_day INTEGER,
    due_day INTEGER,
    body TEXT NOT NULL,
    digest TEXT NOT NULL,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bill_lines (
    park TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    contract_id TEXT NOT NULL,
    charge TEXT NOT NULL,
    key TEXT NOT NULL,
    from_day INTEGER NOT NULL,
    to_day INTEGER NOT NULL,
    credit INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (park, bill_id, n),
    UNIQUE (park, contract_id, charge, key, from_day, credit)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bill_runs (
    park TEXT NOT NULL,
    month TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    contracts BIGINT NOT NULL,
    bills BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    total_fen BIGINT NOT NULL,
    pending TEXT NOT NULL,
    PRIMARY KEY (park, month, seq)
);
CREATE TABLE IF NOT EXISTS bills (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    month TEXT NOT NULL,
    state TEXT NOT NULL,
    currency TEXT NOT NULL,
    total_fen BIGINT NOT NULL,
    paid_fen BIGINT NOT NULL,
    issue_day BIGINT,
    due_day BIGINT,
    body TEXT NOT NULL,
    digest TEXT NOT NULL,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS bill_lines (
    park TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    contract_id TEXT NOT NULL,
    charge TEXT NOT NULL,
    key TEXT NOT NULL,
    from_day BIGINT NOT NULL,
    to_day BIGINT NOT NULL,
    credit BIGINT NOT NULL,
    amount_fen BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (park, bill_id, n),
    UNIQUE (park, contract_id, charge, key, from_day, credit)
);
";

/// Payments received (migration 9).
pub const PAYMENTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    method TEXT NOT NULL,
    reference TEXT NOT NULL,
    received_day INTEGER NOT NULL,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (park, id),
    UNIQUE (park, method, reference)
) WITHOUT ROWID;
";

/// The same table on PostgreSQL.
pub const PAYMENTS_PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    method TEXT NOT NULL,
    reference TEXT NOT NULL,
    received_day BIGINT NOT NULL,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (park, id),
    UNIQUE (park, method, reference)
);
";

/// The routes of bill runs and bills.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.post(
        "/api/v1/parks/{park}/bill-runs",
        Allowed(BillingManage),
        start_run,
    )
    .doc(
        doc(
            "billing",
            "Run a month's bills: every contract's new lines, as draft bills per enterprise",
        )
        .body::<RunBody>()
        .returns::<RunView>()
        .describe("Running a month again bills only what was not billed before (usually nothing)."),
    )
    .get(
        "/api/v1/parks/{park}/bill-runs",
        Allowed(BillingManage),
        list_runs,
    )
    .doc(doc("billing", "The park's bill runs, newest first").returns::<RunPage>())
    .get(
        "/api/v1/parks/{park}/bills",
        Allowed(BillingManage),
        list_bills,
    )
    .doc(
        doc("billing", "The park's bills, newest first")
            .query::<BillQuery>()
            .returns::<BillPage>(),
    )
    .get(
        "/api/v1/parks/{park}/bills/{bill}",
        Allowed(BillingManage),
        get_bill,
    )
    .doc(doc("billing", "A bill with its lines and where each came from").returns::<BillView>())
    .post(
        "/api/v1/parks/{park}/bills/{bill}/issue",
        Allowed(BillingManage),
        issue_bill,
    )
    .doc(
        doc(
            "billing",
            "Issue a draft bill: its due date follows from its contracts' due days",
        )
        .body::<IssueBody>()
        .returns::<BillView>(),
    )
    .post(
        "/api/v1/parks/{park}/bills/{bill}/payments",
        Allowed(BillingManage),
        record_payment,
    )
    .doc(
        doc("billing", "Record a payment received for an issued bill")
            .body::<PaymentBody>()
            .returns::<BillView>()
            .describe("The same method and reference twice is a 409 (a payment is recorded once); more than is owed is a 422."),
    )
    .get(
        "/api/v1/parks/{park}/payments",
        Allowed(BillingManage),
        list_payments,
    )
    .doc(
        doc("billing", "Payments received, newest first")
            .query::<PaymentQuery>()
            .returns::<PaymentPage>(),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/bills",
        Allowed(EnterpriseRead),
        list_enterprise_bills,
    )
    .doc(
        doc("billing", "One enterprise's issued bills, with their lines")
            .query::<BillQuery>()
            .returns::<BillPage>(),
    )
}

fn bill_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["draft", "issued", "partly_paid", "paid", "overdue"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The month, `YYYY-MM`.
    #[schema(max_length = 7)]
    month: String,
}

fn methods() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["transfer", "cash", "card", "other"])
}

/// How a recorded payment came: the manual methods, or through the online provider.
fn all_methods() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["transfer", "cash", "card", "other", "wechat_pay"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount_fen: i64,
    #[schema(schema_with = methods)]
    method: String,
    /// The bank's or the receipt's reference: a method and reference are recorded once.
    #[schema(min_length = 1, max_length = 128)]
    reference: String,
    /// The day it was received, `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    received_date: String,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentQuery {
    /// Only this bill's.
    #[param(min_length = 1, max_length = 128)]
    bill: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub bill_id: String,
    pub enterprise_id: String,
    pub amount_fen: i64,
    #[schema(schema_with = all_methods)]
    pub method: String,
    pub reference: String,
    pub received_date: String,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    pub payments: Vec<PaymentView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// The issue date, `YYYY-MM-DD`; today when left out.
    #[serde(default)]
    #[schema(max_length = 10)]
    date: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillQuery {
    /// Only this month's, `YYYY-MM`.
    #[param(max_length = 7)]
    month: Option<String>,
    #[param(schema_with = bill_states)]
    state: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A charge left for a later run, and why.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingView {
    pub contract_id: String,
    pub charge: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub month: String,
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub contracts: i64,
    /// The bills the run made (listed only in the run's own answer; see the month's bills).
    pub bills: Vec<String>,
    /// How many bills the run made.
    pub bill_count: i64,
    pub lines: i64,
    pub total_fen: i64,
    pub pending: Vec<PendingView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineView {
    pub n: i64,
    pub contract_id: String,
    pub charge: String,
    pub key: String,
    /// The first day billed, `YYYY-MM-DD`.
    pub from: String,
    /// The last day billed.
    pub to: String,
    pub credit: bool,
    pub amount_fen: i64,
    /// Some of the consumption behind it is estimated.
    pub estimated: bool,
    /// Where the amount came from.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillView {
    pub id: String,
    pub enterprise_id: String,
    pub month: String,
    #[schema(schema_with = bill_states)]
    pub state: String,
    pub currency: String,
    pub total_fen: i64,
    pub paid_fen: i64,
    pub issue_date: Option<String>,
    pub due_date: Option<String>,
    /// SHA-256 of the bill's canonical body (its lines and total).
    pub digest: String,
    pub lines: Vec<LineView>,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillPage {
    pub total: usize,
    pub offset: usize,
    pub bills: Vec<BillView>,
}

/// What a bill says, canonically: serialized with its fields in this order, it is the
/// same bytes for the same lines.
#[derive(Serialize, Deserialize)]
struct Body {
    id: String,
    park: String,
    enterprise_id: String,
    month: String,
    currency: String,
    lines: Vec<LineView>,
    total_fen: i64,
}

pub(crate) fn refusal(status: StatusCode, code: &'static str, message: String) -> anyhow::Error {
    anyhow::Error::new(Refusal(status, code, message))
}

/// The ledger: every line of the park's bills.
fn ledger(c: &Connection, park: &str) -> park_db::Result<Vec<Entry>> {
    c.query_all(
        "SELECT contract_id, charge, key, from_day, to_day, credit FROM bill_lines WHERE park = ?1",
        params![park],
        |r| {
            let charge: String = r.get(1)?;
            Ok(Entry {
                contract_id: r.get(0)?,
                charge: Charge::parse(&charge)
                    .ok_or_else(|| park_db::Error::Conversion(format!("charge {charge:?}")))?,
                key: r.get(2)?,
                days: Days::new(r.get(3)?, r.get(4)?),
                credit: r.get::<_, i64>(5)? != 0,
            })
        },
    )
}

/// Each contract's share of the issued bills still unpaid after their due date, as the
/// late fee rule needs it: the bill, its due day and the contract's unpaid lines.
fn overdue(
    c: &Connection,
    park: &str,
    first_day: i32,
) -> park_db::Result<BTreeMap<String, Vec<Overdue>>> {
    // Bills past due: unpaid, or paid after their due date (their late days may still be
    // uncharged).
    let rows: Vec<(String, String, i64, i64, i64)> = c.query_all(
        "SELECT l.contract_id, b.id, b.due_day, SUM(l.amount_fen), b.total_fen
         FROM bills b JOIN bill_lines l ON l.park = b.park AND l.bill_id = b.id
         WHERE b.park = ?1 AND b.state IN ('issued', 'partly_paid', 'paid') AND b.due_day < ?2
           AND l.charge <> 'late_fee'
           AND (b.state <> 'paid' OR EXISTS (SELECT 1 FROM payments p
                WHERE p.park = b.park AND p.bill_id = b.id AND p.received_day > b.due_day))
         GROUP BY l.contract_id, b.id, b.due_day, b.total_fen
         ORDER BY b.id, l.contract_id",
        params![park, first_day],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let mut paid: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (bill, day, amount) in c.query_all(
        "SELECT bill_id, received_day, amount_fen FROM payments WHERE park = ?1 ORDER BY bill_id, received_day, id",
        params![park],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
    )? {
        paid.entry(bill).or_default().push((day, amount));
    }
    let mut out: BTreeMap<String, Vec<Overdue>> = BTreeMap::new();
    for (contract, bill, due, share, total) in rows {
        // A payment goes to the bill as a whole: each contract owes its share of what is
        // left, from the day the payment came (by the due day: from the start).
        let owed = |cum: i64| -> i64 {
            if total > 0 {
                ((i128::from(share) * i128::from((total - cum).max(0))) / i128::from(total)) as i64
            } else {
                0
            }
        };
        let payments = paid.get(&bill).map(Vec::as_slice).unwrap_or(&[]);
        let mut cum: i64 = payments
            .iter()
            .filter(|(d, _)| *d <= due)
            .map(|(_, a)| a)
            .sum();
        let mut balances = vec![(due as i32, owed(cum))];
        for (day, amount) in payments.iter().filter(|(d, _)| *d > due) {
            cum += amount;
            balances.push((*day as i32, owed(cum)));
        }
        out.entry(contract).or_default().push(Overdue {
            bill_id: bill,
            due_day: due as i32,
            balances,
        });
    }
    Ok(out)
}

fn is_workday(day: i32) -> bool {
    !matches!(
        LocalTime::at(i64::from(day) * park_model::time::MICROS_PER_DAY, 0).weekday,
        Weekday::Sat | Weekday::Sun
    )
}

/// The park's offset from UTC in minutes, and today on its wall clock.
pub(crate) async fn park_clock(s: &ApiState, park: &str) -> ApiResult<(i32, i32)> {
    let (s2, p2) = (s.clone(), park.to_string());
    let offset = tokio::task::spawn_blocking(move || {
        s2.documents.read_directory(&p2, |d| d.utc_offset_minutes())
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))?
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok((offset, LocalTime::at(now_micros(), offset).day))
}

/// A bill issued and not fully paid after its due date shows as overdue.
fn shown(mut b: BillView, today: i32) -> BillView {
    if matches!(b.state.as_str(), "issued" | "partly_paid")
        && b.due_date
            .as_deref()
            .is_some_and(|d| d < format_date(today).as_str())
    {
        b.state = "overdue".into();
    }
    b
}

async fn start_run(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(park): Path<String>,
    body: Result<Json<RunBody>, JsonRejection>,
) -> ApiResult<Json<RunView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "bill_run",
        &format!("{park}/bill-run/{}", b.month),
        json!({"month": b.month}),
    );
    let result = async {
        let month = Month::parse(&b.month).ok_or_else(|| {
            ApiError::invalid(format!("month: {:?} is not a month YYYY-MM", b.month))
        })?;
        let (offset, _) = park_clock(&s, &park).await?;
        // Which building each space is in (for the common meters' shares).
        let (s2, p2) = (s.clone(), park.clone());
        let buildings = tokio::task::spawn_blocking(move || {
            s2.documents.directory_snapshot(&p2).map(|d| {
                d.map(|d| {
                    d.spaces
                        .values()
                        .map(|sp| (sp.id.clone(), sp.building_id.clone()))
                        .collect::<std::collections::HashMap<_, _>>()
                })
            })
        })
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))?
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        let (p2, by, a2) = (
            park.clone(),
            caller.principal.username.clone(),
            audit.clone(),
        );
        s.store
            .admin(move |tx| run_month(tx, &p2, month, offset, buildings, &by, &a2))
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

/// The run itself, in the caller's transaction.
fn run_month(
    tx: &Connection,
    park: &str,
    month: Month,
    offset: i32,
    buildings: std::collections::HashMap<String, String>,
    by: &str,
    audit: &accounts::Audit,
) -> anyhow::Result<RunView> {
    let contracts: Vec<(String, String, String)> = tx.query_all(
        "SELECT id, state, terms FROM contracts WHERE park = ?1 ORDER BY id",
        params![park],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let ledger = ledger(tx, park)?;
    let overdue = overdue(tx, park, month.first_day())?;
    let tariffs = crate::energy::tariffs(tx, park)?;
    let mut parsed = Vec::new();
    for (id, state, terms) in &contracts {
        let state = CState::parse(state)
            .ok_or_else(|| anyhow::anyhow!("contract {id}: state {state:?}"))?;
        if state.billable() {
            let terms: Terms = serde_json::from_str(terms)?;
            parsed.push((id.clone(), state, terms));
        }
    }
    let leased: Vec<Terms> = parsed.iter().map(|(_, _, t)| t.clone()).collect();
    let mut meters = crate::energy::HubMeters::new(tx, park, offset, buildings, leased)?;
    let cx = run::Context {
        month,
        ledger: &ledger,
        tariffs: &tariffs,
        utc_offset_minutes: offset,
        is_workday: &is_workday,
    };
    // Lines by enterprise, in the order of contracts and their charges.
    let mut by_enterprise: BTreeMap<(String, String), Vec<run::Line>> = BTreeMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut billable = 0i64;
    for (id, state, terms) in &parsed {
        billable += 1;
        let none = Vec::new();
        let plan = run::plan(
            id,
            terms,
            *state,
            overdue.get(id).unwrap_or(&none),
            &mut meters,
            &cx,
        )
        .map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
        pending.extend(plan.pending);
        if !plan.lines.is_empty() {
            by_enterprise
                .entry((terms.enterprise_id.clone(), terms.currency.clone()))
                .or_default()
                .extend(plan.lines);
        }
    }
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM bill_runs WHERE park = ?1 AND month = ?2",
        params![park, month.to_string()],
        |r| r.get(0),
    )?;
    let now = now_micros();
    let mut bill_ids = Vec::new();
    let (mut line_count, mut grand_total) = (0i64, 0i64);
    for ((enterprise, currency), lines) in by_enterprise {
        let n: i64 = tx.query_row(
            "SELECT COUNT(*) FROM bills WHERE park = ?1 AND enterprise_id = ?2 AND month = ?3",
            params![park, enterprise, month.to_string()],
            |r| r.get(0),
        )?;
        let id = format!(
            "{}-{}-{}",
            month.to_string().replace('-', ""),
            enterprise,
            n + 1
        );
        let views: Vec<LineView> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| LineView {
                n: i as i64 + 1,
                contract_id: l.contract_id.clone(),
                charge: l.charge.as_str().into(),
                key: l.key.clone(),
                from: format_date(l.days.from),
                to: format_date(l.days.to - 1),
                credit: l.credit,
                amount_fen: l.amount_fen,
                estimated: l.estimated,
                detail: l.detail.clone(),
            })
            .collect();
        let total = lines
            .iter()
            .try_fold(0i64, |t, l| t.checked_add(l.amount_fen))
            .ok_or_else(|| anyhow::anyhow!("a bill's total is out of range"))?;
        let body = Body {
            id: id.clone(),
            park: park.to_string(),
            enterprise_id: enterprise.clone(),
            month: month.to_string(),
            currency: currency.clone(),
            lines: views,
            total_fen: total,
        };
        let text = serde_json::to_string(&body)?;
        tx.execute(
            "INSERT INTO bills (park, id, enterprise_id, month, state, currency, total_fen, paid_fen, body, digest, created, created_by, updated, updated_by)
             VALUES (?1, ?2, ?3, ?4, 'draft', ?5, ?6, 0, ?7, ?8, ?9, ?10, ?9, ?10)",
            params![park, id, enterprise, month.to_string(), currency, total, text, sha256_hex(text.as_bytes()), now, by],
        )?;
        for (i, l) in lines.iter().enumerate() {
            tx.execute(
                "INSERT INTO bill_lines (park, bill_id, n, contract_id, charge, key, from_day, to_day, credit, amount_fen, estimated, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    park,
                    id,
                    i as i64 + 1,
                    l.contract_id,
                    l.charge.as_str(),
                    l.key,
                    l.days.from,
                    l.days.to,
                    i64::from(l.credit),
                    l.amount_fen,
                    i64::from(l.estimated),
                    l.detail.to_string()
                ],
            )?;
        }
        line_count += lines.len() as i64;
        grand_total += total;
        bill_ids.push(id);
    }
    let pending_views: Vec<PendingView> = pending
        .iter()
        .map(|p| PendingView {
            contract_id: p.contract_id.clone(),
            charge: p.charge.as_str().into(),
            from: format_date(p.days.from),
            to: format_date(p.days.to - 1),
            reason: p.reason.clone(),
        })
        .collect();
    tx.execute(
        "INSERT INTO bill_runs (park, month, seq, at, actor, contracts, bills, lines, total_fen, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            park,
            month.to_string(),
            seq,
            now,
            by,
            billable,
            bill_ids.len() as i64,
            line_count,
            grand_total,
            serde_json::to_string(&pending_views)?
        ],
    )?;
    audit.append(tx)?;
    Ok(RunView {
        month: month.to_string(),
        seq,
        at: now,
        actor: by.to_string(),
        contracts: billable,
        bill_count: bill_ids.len() as i64,
        bills: bill_ids,
        lines: line_count,
        total_fen: grand_total,
        pending: pending_views,
    })
}

async fn list_runs(
    State(s): State<ApiState>,
    Path(park): Path<String>,
) -> ApiResult<Json<RunPage>> {
    let runs = s
        .store
        .read(move |c| {
            c.query_all(
                "SELECT month, seq, at, actor, contracts, bills, lines, total_fen, pending FROM bill_runs
                 WHERE park = ?1 ORDER BY at DESC, month DESC, seq DESC LIMIT 200",
                params![park],
                |r| {
                    let pending: String = r.get(8)?;
                    Ok(RunView {
                        month: r.get(0)?,
                        seq: r.get(1)?,
                        at: r.get(2)?,
                        actor: r.get(3)?,
                        contracts: r.get(4)?,
                        bills: Vec::new(),
                        bill_count: r.get(5)?,
                        lines: r.get(6)?,
                        total_fen: r.get(7)?,
                        pending: serde_json::from_str(&pending).unwrap_or_default(),
                    })
                },
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(RunPage { runs }))
}

const BILL_COLUMNS: &str = "id, enterprise_id, month, state, currency, total_fen, paid_fen, issue_day, due_day, body, digest, created, created_by";

fn bill_row(r: &park_db::Row) -> park_db::Result<BillView> {
    let body: String = r.get(9)?;
    let body: Body = serde_json::from_str(&body)
        .map_err(|e| park_db::Error::Conversion(format!("bill body: {e}")))?;
    let day = |i: usize| -> park_db::Result<Option<String>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|d| format_date(d as i32)))
    };
    Ok(BillView {
        id: r.get(0)?,
        enterprise_id: r.get(1)?,
        month: r.get(2)?,
        state: r.get(3)?,
        currency: r.get(4)?,
        total_fen: r.get(5)?,
        paid_fen: r.get(6)?,
        issue_date: day(7)?,
        due_date: day(8)?,
        digest: r.get(10)?,
        lines: body.lines,
        created_at: r.get(11)?,
        created_by: r.get(12)?,
    })
}

async fn bills(
    s: &ApiState,
    park: String,
    enterprise: Option<String>,
    q: BillQuery,
) -> ApiResult<Json<BillPage>> {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: from 1 to 500"));
    }
    let mut sql = format!("SELECT {BILL_COLUMNS} FROM bills WHERE park = ?1");
    let mut values = vec![park_db::Value::Text(park.clone())];
    if let Some(m) = &q.month
        && Month::parse(m).is_none()
    {
        return Err(ApiError::invalid(format!(
            "month: {m:?} is not a month YYYY-MM"
        )));
    }
    if let Some(st) = &q.state
        && !["draft", "issued", "partly_paid", "paid", "overdue"].contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not a bill state"
        )));
    }
    let enterprise_view = enterprise.is_some();
    let (_, today) = park_clock(s, &park).await?;
    // Overdue is issued or partly paid past the due date: a state shown, not stored.
    let shown_state = q.state.clone();
    let stored_state = match shown_state.as_deref() {
        Some("overdue") => None,
        _ => q.state,
    };
    match shown_state.as_deref() {
        Some("overdue") => {
            values.push(park_db::Value::Integer(i64::from(today)));
            sql.push_str(&format!(
                " AND state IN ('issued', 'partly_paid') AND due_day < ?{}",
                values.len()
            ));
        }
        Some("issued" | "partly_paid") => {
            values.push(park_db::Value::Integer(i64::from(today)));
            sql.push_str(&format!(" AND due_day >= ?{}", values.len()));
        }
        _ => {}
    }
    for (column, value) in [
        ("enterprise_id", enterprise),
        ("month", q.month),
        ("state", stored_state),
    ] {
        if let Some(v) = value {
            values.push(park_db::Value::Text(v));
            sql.push_str(&format!(" AND {column} = ?{}", values.len()));
        }
    }
    if enterprise_view {
        // Drafts are finance's own until issued.
        sql.push_str(" AND state <> 'draft'");
    }
    sql.push_str(" ORDER BY month DESC, id");
    let rows = s
        .store
        .read(move |c| c.query_all(&sql, park_db::params_from_iter(values), bill_row))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(BillPage {
        total: rows.len(),
        offset,
        bills: rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|b| shown(b, today))
            .collect(),
    }))
}

async fn list_bills(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<BillQuery>, QueryRejection>,
) -> ApiResult<Json<BillPage>> {
    bills(&s, park, None, q?.0).await
}

async fn list_enterprise_bills(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
    q: Result<Query<BillQuery>, QueryRejection>,
) -> ApiResult<Json<BillPage>> {
    bills(&s, park, Some(enterprise), q?.0).await
}

async fn get_bill(
    State(s): State<ApiState>,
    Path((park, id)): Path<(String, String)>,
) -> ApiResult<Json<BillView>> {
    let (_, today) = park_clock(&s, &park).await?;
    let (p2, i2) = (park.clone(), id.clone());
    s.store
        .read(move |c| {
            c.query_row(
                &format!("SELECT {BILL_COLUMNS} FROM bills WHERE park = ?1 AND id = ?2"),
                params![p2, i2],
                bill_row,
            )
            .optional()
        })
        .await
        .map_err(ApiError::internal)?
        .map(|b| Json(shown(b, today)))
        .ok_or_else(|| ApiError::not_found(format!("no bill {id} in park {park}")))
}

async fn issue_bill(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<IssueBody>, JsonRejection>,
) -> ApiResult<Json<BillView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "bill_issue",
        &format!("{park}/bill/{id}"),
        json!({"date": b.date}),
    );
    let result = async {
        let (_, today) = park_clock(&s, &park).await?;
        let day = match &b.date {
            Some(text) => parse_date(text)
                .ok_or_else(|| ApiError::invalid(format!("date: {text:?} is not a date YYYY-MM-DD")))?,
            None => today,
        };
        let (p2, i2, by, a2) = (park.clone(), id.clone(), caller.principal.username.clone(), audit.clone());
        s.store
            .admin(move |tx| {
                let state: Option<String> = tx
                    .query_row(
                        "SELECT state FROM bills WHERE park = ?1 AND id = ?2",
                        params![p2, i2],
                        |r| r.get(0),
                    )
                    .optional()?;
                match state.as_deref() {
                    None => return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no bill {i2} in park {p2}"))),
                    Some("draft") => {}
                    Some(other) => {
                        return Err(refusal(
                            StatusCode::CONFLICT,
                            "conflict",
                            format!("a bill that is {other} cannot be issued again"),
                        ));
                    }
                }
                // The shortest due days among the bill's contracts.
                let terms: Vec<String> = tx.query_all(
                    "SELECT DISTINCT c.terms FROM bill_lines l JOIN contracts c ON c.park = l.park AND c.id = l.contract_id
                     WHERE l.park = ?1 AND l.bill_id = ?2",
                    params![p2, i2],
                    |r| r.get(0),
                )?;
                let mut due_days = u32::MAX;
                for t in &terms {
                    let t: Terms = serde_json::from_str(t)?;
                    due_days = due_days.min(t.due_days);
                }
                let due_days = if due_days == u32::MAX { 0 } else { due_days };
                tx.execute(
                    "UPDATE bills SET state = 'issued', issue_day = ?3, due_day = ?4, updated = ?5, updated_by = ?6
                     WHERE park = ?1 AND id = ?2 AND state = 'draft'",
                    params![p2, i2, day, day + due_days as i32, now_micros(), by],
                )?;
                let (enterprise, month, total): (String, String, i64) = tx.query_row(
                    "SELECT enterprise_id, month, total_fen FROM bills WHERE park = ?1 AND id = ?2",
                    params![p2, i2],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                crate::notify::enqueue(
                    tx,
                    &p2,
                    &enterprise,
                    &crate::notify::Event::BillIssued {
                        bill: i2.clone(),
                        month,
                        total_fen: total,
                        due: format_date(day + due_days as i32),
                    },
                )?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    get_bill(State(s), Path((park, id))).await
}

async fn record_payment(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, bill)): Path<(String, String)>,
    body: Result<Json<PaymentBody>, JsonRejection>,
) -> ApiResult<Json<BillView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "payment_record",
        &format!("{park}/bill/{bill}"),
        json!({"amount_fen": b.amount_fen, "method": b.method, "reference": b.reference, "received_date": b.received_date}),
    );
    let result = async {
        if !(1..=park_model::billing::contract::MAX_FEN).contains(&b.amount_fen) {
            return Err(ApiError::invalid("amount_fen: from 1 to 10^12"));
        }
        if !["transfer", "cash", "card", "other"].contains(&b.method.as_str()) {
            return Err(ApiError::invalid(format!(
                "method: {:?} is not one of transfer, cash, card, other",
                b.method
            )));
        }
        let reference = b.reference.trim().to_string();
        if reference.is_empty() || reference.chars().count() > 128 {
            return Err(ApiError::invalid("reference: 1 to 128 characters"));
        }
        let day = parse_date(&b.received_date).ok_or_else(|| {
            ApiError::invalid(format!(
                "received_date: {:?} is not a date YYYY-MM-DD",
                b.received_date
            ))
        })?;
        let (p2, i2, by, a2) = (
            park.clone(),
            bill.clone(),
            caller.principal.username.clone(),
            audit.clone(),
        );
        let received = Received {
            amount_fen: b.amount_fen,
            method: b.method.clone(),
            reference,
            day,
            excess: Excess::Refuse,
        };
        s.store
            .admin(move |tx| {
                apply_payment(tx, &p2, &i2, &received, &by)?;
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    get_bill(State(s), Path((park, bill))).await
}

/// What to do with money received beyond what a bill owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excess {
    /// Refuse the payment (a receipt typed by a person: it is a mistake).
    Refuse,
    /// Record it whole (the money has arrived, from a provider or a bank): the bill is paid
    /// and the excess shows in the reconciliation until it is refunded.
    Keep,
}

/// A payment to record.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub amount_fen: i64,
    pub method: String,
    pub reference: String,
    pub day: i32,
    pub excess: Excess,
}

/// Records a payment of an issued bill, once per method and reference, and settles the
/// bill; the payment's id.
pub(crate) fn apply_payment(
    tx: &Connection,
    park: &str,
    bill: &str,
    p: &Received,
    by: &str,
) -> anyhow::Result<String> {
    let found: Option<(String, String, i64, i64)> = tx
        .query_row(
            "SELECT state, enterprise_id, total_fen, paid_fen FROM bills WHERE park = ?1 AND id = ?2",
            params![park, bill],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((state, enterprise, total, paid)) = found else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no bill {bill} in park {park}"),
        ));
    };
    let takes = match p.excess {
        Excess::Refuse => matches!(state.as_str(), "issued" | "partly_paid"),
        Excess::Keep => matches!(state.as_str(), "issued" | "partly_paid" | "paid"),
    };
    if !takes {
        return Err(refusal(
            StatusCode::CONFLICT,
            "conflict",
            format!("a bill that is {state} takes no payment"),
        ));
    }
    let earlier: Option<String> = tx
        .query_row(
            "SELECT id FROM payments WHERE park = ?1 AND method = ?2 AND reference = ?3",
            params![park, p.method, p.reference],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = earlier {
        return Err(refusal(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "this {} reference is already recorded, as payment {id}",
                p.method
            ),
        ));
    }
    if p.excess == Excess::Refuse && p.amount_fen > total - paid {
        return Err(refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "amount_fen: {} is more than the {} fen owed",
                p.amount_fen,
                total - paid
            ),
        ));
    }
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM payments WHERE park = ?1 AND bill_id = ?2",
        params![park, bill],
        |r| r.get(0),
    )?;
    let id = format!("{bill}-p{}", n + 1);
    tx.execute(
        "INSERT INTO payments (park, id, bill_id, enterprise_id, amount_fen, method, reference, received_day, created, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![park, id, bill, enterprise, p.amount_fen, p.method, p.reference, p.day, now_micros(), by],
    )?;
    settle(tx, park, bill, by)?;
    let (total, paid): (i64, i64) = tx.query_row(
        "SELECT total_fen, paid_fen FROM bills WHERE park = ?1 AND id = ?2",
        params![park, bill],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    crate::notify::enqueue(
        tx,
        park,
        &enterprise,
        &crate::notify::Event::PaymentReceived {
            bill: bill.to_string(),
            payment: id.clone(),
            amount_fen: p.amount_fen,
            date: format_date(p.day),
            owed_fen: (total - paid).max(0),
        },
    )?;
    Ok(id)
}

/// Sets a bill's paid amount and state from its payments less its approved refunds: paid
/// as far as its total, partly paid, or issued again when a refund takes everything back.
pub(crate) fn settle(tx: &Connection, park: &str, bill: &str, by: &str) -> anyhow::Result<()> {
    let (total, received, refunded): (i64, i64, i64) = tx.query_row(
        "SELECT b.total_fen,
                (SELECT COALESCE(SUM(p.amount_fen), 0) FROM payments p WHERE p.park = b.park AND p.bill_id = b.id),
                (SELECT COALESCE(SUM(f.amount_fen), 0) FROM refunds f WHERE f.park = b.park AND f.bill_id = b.id AND f.state = 'approved')
         FROM bills b WHERE b.park = ?1 AND b.id = ?2",
        params![park, bill],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let paid = (received - refunded).clamp(0, total.max(0));
    let state = if paid >= total {
        "paid"
    } else if paid > 0 {
        "partly_paid"
    } else {
        "issued"
    };
    tx.execute(
        "UPDATE bills SET paid_fen = ?3, state = ?4, updated = ?5, updated_by = ?6
         WHERE park = ?1 AND id = ?2 AND state IN ('issued', 'partly_paid', 'paid')",
        params![park, bill, paid, state, now_micros(), by],
    )?;
    Ok(())
}

async fn list_payments(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<PaymentQuery>, QueryRejection>,
) -> ApiResult<Json<PaymentPage>> {
    let Query(q) = q?;
    payments_of(&s, park, q.bill, None).await
}

/// Payments received, newest first: of a bill, of an enterprise, or all the park's.
pub(crate) async fn payments_of(
    s: &ApiState,
    park: String,
    bill: Option<String>,
    enterprise: Option<String>,
) -> ApiResult<Json<PaymentPage>> {
    if let Some(bill) = &bill
        && (bill.is_empty() || bill.len() > 128)
    {
        return Err(ApiError::bad_request("bill: 1 to 128 characters"));
    }
    let payments = s
        .store
        .read(move |c| {
            c.query_all(
                "SELECT id, bill_id, enterprise_id, amount_fen, method, reference, received_day, created, created_by
                 FROM payments WHERE park = ?1 AND (bill_id = ?2 OR ?3 = 1) AND (enterprise_id = ?4 OR ?5 = 1)
                 ORDER BY created DESC, id LIMIT 1000",
                params![
                    park,
                    bill.clone().unwrap_or_default(),
                    i64::from(bill.is_none()),
                    enterprise.clone().unwrap_or_default(),
                    i64::from(enterprise.is_none())
                ],
                |r| {
                    Ok(PaymentView {
                        id: r.get(0)?,
                        bill_id: r.get(1)?,
                        enterprise_id: r.get(2)?,
                        amount_fen: r.get(3)?,
                        method: r.get(4)?,
                        reference: r.get(5)?,
                        received_date: format_date(r.get::<_, i64>(6)? as i32),
                        created_at: r.get(7)?,
                        created_by: r.get(8)?,
                    })
                },
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(PaymentPage { payments }))
}
