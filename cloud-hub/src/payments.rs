//! Money beyond manual receipts: bills paid online through the payment provider, bank
//! statements matched to bills, refunds decided by a second user, invoice requests, and the
//! reports finance closes a day with (reconciliation, ageing of arrears).
//!
//! **Online payment.** The hub opens an order for what a bill owes at the provider
//! (`/pay/unifiedorder`, signed with the merchant's key: [`park_model::billing::provider`])
//! and shows its `code_url` for the payer to scan. The provider then notifies
//! `POST /api/v1/payment-notices/wechat`, a public route whose caller is the provider, proven
//! by the message's signature, checked before anything else is read. A notification is
//! applied once: the payment's reference is the provider's transaction id, which the
//! database holds unique, so a replay or the provider's own retries are acknowledged and
//! change nothing; notifications of different orders apply in whatever order they come; one
//! for an order the hub does not know yet is answered `FAIL`, which makes the provider send
//! it again later. Money that arrives for a bill already paid is recorded (it is real) and
//! shows as a difference in the reconciliation until it is refunded. Finance can also ask
//! the provider about an order whose notification never came.
//!
//! **Bank statements** (CSV, with the column names banks export in Chinese or English) are
//! matched line by line ([`park_model::billing::reconcile`]); matched credits become
//! payments with the bank's transaction reference, the rest wait for a person to assign or
//! set aside. A statement imported twice adds nothing.
//!
//! **Refunds** are asked by one finance user and approved or rejected by another.
//! **Invoice requests** come from an enterprise's admin for its own bills and are issued
//! (with the invoice's number) or rejected by finance.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use accounts::{Actor, Caller};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use park_db::{Connection, OptionalExtension, params};
use park_model::billing::contract::MAX_FEN;
use park_model::billing::money::parse_yuan;
use park_model::billing::provider::{self, Fields, answer, fields, from_xml, signed, to_xml};
use park_model::billing::reconcile::{self, Ageing, Credit, Match, OpenBill};
use park_model::identity::Access;
use park_model::identity::Permission::{BillingManage, EnterpriseBilling, EnterpriseRead};
use park_model::time::{format_date, parse_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::billing::{Excess, PaymentPage, Received, apply_payment, park_clock, refusal, settle};
use crate::leasing::store_error;
use crate::store::now_micros;

/// The method recorded for payments made through the provider.
pub const PROVIDER_METHOD: &str = "wechat_pay";
/// The largest bank statement taken in one request.
pub const MAX_STATEMENT_BYTES: usize = 32 * 1024 * 1024;
/// The most lines a statement may have.
pub const MAX_STATEMENT_LINES: usize = 200_000;

/// Orders, bank lines, refunds and invoice requests (migration 12).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pay_orders (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    state TEXT NOT NULL,
    code_url TEXT NOT NULL,
    note TEXT NOT NULL,
    transaction_id TEXT,
    payment_id TEXT,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS pay_orders_by_id ON pay_orders (id);
CREATE TABLE IF NOT EXISTS bank_lines (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    statement TEXT NOT NULL,
    value_day INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    payer TEXT NOT NULL,
    account_tail TEXT NOT NULL,
    memo TEXT NOT NULL,
    state TEXT NOT NULL,
    how TEXT NOT NULL,
    reason TEXT NOT NULL,
    bill_id TEXT,
    payment_id TEXT,
    imported INTEGER NOT NULL,
    imported_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refunds (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    reference TEXT NOT NULL,
    note TEXT NOT NULL,
    requested INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    decided INTEGER,
    decided_day INTEGER,
    decided_by TEXT,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS invoice_requests (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    tax_number TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    state TEXT NOT NULL,
    invoice_number TEXT NOT NULL,
    note TEXT NOT NULL,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
) WITHOUT ROWID;
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pay_orders (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    state TEXT NOT NULL,
    code_url TEXT NOT NULL,
    note TEXT NOT NULL,
    transaction_id TEXT,
    payment_id TEXT,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS pay_orders_by_id ON pay_orders (id);
CREATE TABLE IF NOT EXISTS bank_lines (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    statement TEXT NOT NULL,
    value_day BIGINT NOT NULL,
    amount_fen BIGINT NOT NULL,
    payer TEXT NOT NULL,
    account_tail TEXT NOT NULL,
    memo TEXT NOT NULL,
    state TEXT NOT NULL,
    how TEXT NOT NULL,
    reason TEXT NOT NULL,
    bill_id TEXT,
    payment_id TEXT,
    imported BIGINT NOT NULL,
    imported_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS refunds (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    reference TEXT NOT NULL,
    note TEXT NOT NULL,
    requested BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    decided BIGINT,
    decided_day BIGINT,
    decided_by TEXT,
    PRIMARY KEY (park, id)
);
CREATE TABLE IF NOT EXISTS invoice_requests (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    bill_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    tax_number TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    state TEXT NOT NULL,
    invoice_number TEXT NOT NULL,
    note TEXT NOT NULL,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, id)
);
";

// ---------------------------------------------------------------------------------------
// The provider.

/// The merchant's account at the payment provider (`[payments]` in the hub's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// The provider's API, such as `https://api.mch.weixin.qq.com`.
    pub url: String,
    pub app_id: String,
    pub mch_id: String,
    /// The merchant's API key, alone in a file readable by the hub's user only.
    pub key_file: PathBuf,
    /// Where the provider sends its notifications; the hub's own address when left out.
    pub notify_url: Option<String>,
}

/// The provider as the hub talks to it.
pub struct Provider {
    pub settings: ProviderSettings,
    key: String,
    pub notify_url: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("url", &self.settings.url)
            .field("mch_id", &self.settings.mch_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Reads the key; `api` is the hub's own address for a notify URL left out.
    pub fn load(settings: ProviderSettings, api: std::net::SocketAddr) -> anyhow::Result<Provider> {
        use anyhow::Context;
        let text = std::fs::read_to_string(&settings.key_file).with_context(|| {
            format!(
                "cannot read the payment key file {}",
                settings.key_file.display()
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(&settings.key_file)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %settings.key_file.display(), "The payment key file can be read by other users than its owner: chmod 600 it.");
            }
        }
        let key = text.trim().to_string();
        if key.len() < 16 {
            anyhow::bail!(
                "the payment key in {} is shorter than 16 characters",
                settings.key_file.display()
            );
        }
        let notify_url = settings
            .notify_url
            .clone()
            .unwrap_or_else(|| format!("http://{api}/api/v1/payment-notices/wechat"));
        Ok(Provider {
            settings,
            key,
            notify_url,
        })
    }

    /// A signed request to the provider; its answer, checked: signed by the same key when
    /// it succeeded, `result_code` SUCCESS.
    fn call(&self, path: &str, mut f: Fields) -> Result<Fields, String> {
        f.insert("appid".into(), self.settings.app_id.clone());
        f.insert("mch_id".into(), self.settings.mch_id.clone());
        f.insert("nonce_str".into(), nonce());
        let body = to_xml(&signed(f, &self.key));
        let url = format!("{}{path}", self.settings.url.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(&url)
            .header("content-type", "text/xml; charset=utf-8")
            .send(body)
            .map_err(|e| format!("the payment provider cannot be reached: {e}"))?;
        let text = response
            .body_mut()
            .with_config()
            .limit(provider::MAX_BYTES as u64)
            .read_to_string()
            .map_err(|e| format!("the payment provider's answer cannot be read: {e}"))?;
        let answer = from_xml(&text).map_err(|e| format!("the payment provider answered: {e}"))?;
        if answer.get("return_code").map(String::as_str) != Some("SUCCESS") {
            return Err(format!(
                "the payment provider refused: {}",
                answer.get("return_msg").map(String::as_str).unwrap_or("")
            ));
        }
        provider::verify(&answer, &self.key)
            .map_err(|e| format!("the payment provider's answer is not signed by it: {e}"))?;
        if answer.get("result_code").map(String::as_str) != Some("SUCCESS") {
            return Err(format!(
                "the payment provider refused: {} {}",
                answer.get("err_code").map(String::as_str).unwrap_or(""),
                answer.get("err_code_des").map(String::as_str).unwrap_or("")
            ));
        }
        Ok(answer)
    }
}

fn nonce() -> String {
    (0..32)
        .map(|_| char::from(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[fastrand::usize(0..36)]))
        .collect()
}

/// A new order number: `SP`, the time in microseconds and 64 random bits, 32 characters
/// as the provider allows them (not a secret: the notification's signature is what counts).
fn order_number() -> String {
    format!(
        "SP{:014X}{:016X}",
        now_micros() & 0xFF_FFFF_FFFF_FFFF,
        fastrand::u64(..)
    )
}

// ---------------------------------------------------------------------------------------
// Routes.

/// The routes of online payment, bank statements, refunds, invoices and the reports.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::{Allowed, Public};
    let doc = Doc::new;
    r.post(
        "/api/v1/parks/{park}/bills/{bill}/pay-orders",
        Allowed(BillingManage),
        open_order,
    )
    .doc(
        doc("payments", "Open an order at the payment provider for what a bill owes")
            .returns::<PayOrderView>()
            .describe("The same bill and amount again gives back the order still open. 409 when no provider is configured or the bill owes nothing; 502 when the provider refuses."),
    )
    .post(
        "/api/v1/parks/{park}/enterprises/{enterprise}/bills/{bill}/pay-orders",
        Allowed(EnterpriseBilling),
        open_enterprise_order,
    )
    .doc(
        doc("payments", "Pay one of the enterprise's own issued bills online: an order and its code")
            .returns::<PayOrderView>(),
    )
    .get(
        "/api/v1/parks/{park}/pay-orders",
        Allowed(BillingManage),
        list_orders,
    )
    .doc(doc("payments", "Orders at the payment provider, newest first").query::<OrderQuery>().returns::<PayOrderPage>())
    .post(
        "/api/v1/parks/{park}/pay-orders/{order}/query",
        Allowed(BillingManage),
        query_order,
    )
    .doc(
        doc("payments", "Ask the provider about an order whose notification has not come; a paid one is recorded once")
            .returns::<PayOrderView>(),
    )
    .post("/api/v1/payment-notices/wechat", Public, notice)
    .doc(
        doc("payments", "The payment provider's signed notification of a paid order")
            .xml()
            .describe("Checked by its signature under the merchant's key before anything else. Answered SUCCESS once applied or already applied, FAIL (and the provider sends it again later) otherwise; a body that is not the provider's XML is a 422, and a hub with no provider answers 404."),
    )
    .post(
        "/api/v1/parks/{park}/bank-statements",
        Allowed(BillingManage),
        import_statement,
    )
    .body_limit(MAX_STATEMENT_BYTES)
    .doc(
        doc("payments", "Import a bank statement (CSV) and match its credits to bills")
            .body::<StatementBody>()
            .returns::<StatementView>()
            .describe("A line whose bank reference was imported before is skipped. A row that cannot be read is a 422 naming the row and column, and nothing is imported."),
    )
    .get(
        "/api/v1/parks/{park}/bank-lines",
        Allowed(BillingManage),
        list_bank_lines,
    )
    .doc(doc("payments", "Imported bank lines, newest first").query::<BankLineQuery>().returns::<BankLinePage>())
    .post(
        "/api/v1/parks/{park}/bank-lines/{line}/assign",
        Allowed(BillingManage),
        assign_bank_line,
    )
    .doc(doc("payments", "Record an unmatched bank credit as a payment of a bill").body::<AssignBody>().returns::<BankLineView>())
    .post(
        "/api/v1/parks/{park}/bank-lines/{line}/ignore",
        Allowed(BillingManage),
        ignore_bank_line,
    )
    .doc(doc("payments", "Set an unmatched bank credit aside, with the reason").body::<ReasonBody>().returns::<BankLineView>())
    .post(
        "/api/v1/parks/{park}/payments/{payment}/refunds",
        Allowed(BillingManage),
        request_refund,
    )
    .doc(
        doc("payments", "Ask to refund (part of) a payment; another user decides")
            .body::<RefundBody>()
            .returns::<RefundView>(),
    )
    .get("/api/v1/parks/{park}/refunds", Allowed(BillingManage), list_refunds)
    .doc(doc("payments", "Refunds, newest first").query::<RefundQuery>().returns::<RefundPage>())
    .post(
        "/api/v1/parks/{park}/refunds/{refund}/decide",
        Allowed(BillingManage),
        decide_refund,
    )
    .doc(
        doc("payments", "Approve (with the transfer's reference) or reject a refund: not by the user who asked")
            .body::<RefundDecision>()
            .returns::<RefundView>(),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/payments",
        Allowed(EnterpriseRead),
        list_enterprise_payments,
    )
    .doc(doc("payments", "One enterprise's own payments").returns::<PaymentPage>())
    .post(
        "/api/v1/parks/{park}/enterprises/{enterprise}/invoice-requests",
        Allowed(EnterpriseBilling),
        request_invoice,
    )
    .doc(
        doc("invoices", "Ask for an invoice of one of the enterprise's issued bills")
            .body::<InvoiceBody>()
            .returns::<InvoiceView>()
            .describe("The invoices asked of a bill never add up to more than its total."),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/invoice-requests",
        Allowed(EnterpriseRead),
        list_enterprise_invoices,
    )
    .doc(doc("invoices", "One enterprise's own invoice requests").returns::<InvoicePage>())
    .get(
        "/api/v1/parks/{park}/invoice-requests",
        Allowed(BillingManage),
        list_invoices,
    )
    .doc(doc("invoices", "The park's invoice requests, newest first").query::<InvoiceQuery>().returns::<InvoicePage>())
    .post(
        "/api/v1/parks/{park}/invoice-requests/{request}/decide",
        Allowed(BillingManage),
        decide_invoice,
    )
    .doc(doc("invoices", "Record an invoice issued (its number) or reject the request").body::<InvoiceDecision>().returns::<InvoiceView>())
    .get(
        "/api/v1/parks/{park}/reconciliation",
        Allowed(BillingManage),
        reconciliation,
    )
    .doc(
        doc("reports", "A day's reconciliation: issued, received, refunded, receivable, overdue and every difference")
            .query::<DayQuery>()
            .returns::<ReconciliationView>(),
    )
    .get("/api/v1/parks/{park}/ageing", Allowed(BillingManage), ageing)
    .doc(
        doc("reports", "Arrears by enterprise and by days past due, as of a day")
            .query::<DayQuery>()
            .returns::<AgeingView>(),
    )
}

// ---------------------------------------------------------------------------------------
// Online payment.

fn order_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["open", "paid", "failed"])
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PayOrderView {
    /// The order's number at the provider.
    pub id: String,
    pub bill_id: String,
    pub enterprise_id: String,
    pub amount_fen: i64,
    #[schema(schema_with = order_states)]
    pub state: String,
    /// What the payer scans (a `weixin://` link, shown as a QR code).
    pub code_url: String,
    /// Why the order failed, when it did.
    pub note: String,
    pub transaction_id: Option<String>,
    pub payment_id: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PayOrderPage {
    pub orders: Vec<PayOrderView>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// Only this bill's.
    #[param(min_length = 1, max_length = 128)]
    bill: Option<String>,
}

const ORDER_COLUMNS: &str = "id, bill_id, enterprise_id, amount_fen, state, code_url, note, transaction_id, payment_id, created, created_by";

fn order_row(r: &park_db::Row) -> park_db::Result<PayOrderView> {
    Ok(PayOrderView {
        id: r.get(0)?,
        bill_id: r.get(1)?,
        enterprise_id: r.get(2)?,
        amount_fen: r.get(3)?,
        state: r.get(4)?,
        code_url: r.get(5)?,
        note: r.get(6)?,
        transaction_id: r.get(7)?,
        payment_id: r.get(8)?,
        created_at: r.get(9)?,
        created_by: r.get(10)?,
    })
}

fn provider_of(s: &ApiState) -> ApiResult<Arc<Provider>> {
    s.payments.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no payment provider is configured on this hub ([payments] in its config)",
        )
    })
}

async fn open_order(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, bill)): Path<(String, String)>,
) -> ApiResult<Json<PayOrderView>> {
    open(s, caller, park, bill, None).await
}

async fn open_enterprise_order(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise, bill)): Path<(String, String, String)>,
) -> ApiResult<Json<PayOrderView>> {
    open(s, caller, park, bill, Some(enterprise)).await
}

async fn open(
    s: ApiState,
    caller: Caller,
    park: String,
    bill: String,
    enterprise: Option<String>,
) -> ApiResult<Json<PayOrderView>> {
    let audit = s.auth.audit(
        &caller.actor(),
        "pay_order_open",
        &format!("{park}/bill/{bill}"),
        json!({}),
    );
    let result = async {
        let provider = provider_of(&s)?;
        let (p2, b2, by, a2) = (
            park.clone(),
            bill.clone(),
            caller.principal.username.clone(),
            audit.clone(),
        );
        // The order is stored before the provider hears of it, so that a notification that
        // overtakes the provider's answer finds it.
        let (order, fresh) = s
            .store
            .admin(move |tx| {
                let found: Option<(String, String, i64, i64)> = tx
                    .query_row(
                        "SELECT state, enterprise_id, total_fen, paid_fen FROM bills WHERE park = ?1 AND id = ?2",
                        params![p2, b2],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let Some((state, owner, total, paid)) = found else {
                    return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no bill {b2} in park {p2}")));
                };
                if enterprise.as_ref().is_some_and(|e| *e != owner) || (enterprise.is_some() && state == "draft") {
                    return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no bill {b2} of this enterprise")));
                }
                if !matches!(state.as_str(), "issued" | "partly_paid") || total - paid <= 0 {
                    return Err(refusal(StatusCode::CONFLICT, "conflict", format!("bill {b2} is {state} and owes nothing to pay online")));
                }
                let owed = total - paid;
                let open: Option<PayOrderView> = tx
                    .query_row(
                        &format!("SELECT {ORDER_COLUMNS} FROM pay_orders WHERE park = ?1 AND bill_id = ?2 AND state = 'open' AND amount_fen = ?3 AND code_url <> ''"),
                        params![p2, b2, owed],
                        order_row,
                    )
                    .optional()?;
                if let Some(o) = open {
                    return Ok((o, false));
                }
                let id = order_number();
                let now = now_micros();
                tx.execute(
                    "INSERT INTO pay_orders (park, id, bill_id, enterprise_id, amount_fen, state, code_url, note, created, created_by, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'open', '', '', ?6, ?7, ?6)",
                    params![p2, id, b2, owner, owed, now, by],
                )?;
                let mut a = a2;
                a.detail = json!({"order": id, "amount_fen": owed});
                a.append(tx)?;
                Ok((
                    PayOrderView {
                        id,
                        bill_id: b2,
                        enterprise_id: owner,
                        amount_fen: owed,
                        state: "open".into(),
                        code_url: String::new(),
                        note: String::new(),
                        transaction_id: None,
                        payment_id: None,
                        created_at: now,
                        created_by: by,
                    },
                    true,
                ))
            })
            .await
            .map_err(store_error)?;
        if !fresh {
            return Ok(order);
        }
        let request = fields([
            ("body", format!("园区账单 {}", order.bill_id)),
            ("out_trade_no", order.id.clone()),
            ("total_fee", order.amount_fen.to_string()),
            ("fee_type", "CNY".into()),
            ("spbill_create_ip", "127.0.0.1".into()),
            ("notify_url", provider.notify_url.clone()),
            ("trade_type", "NATIVE".into()),
            ("product_id", order.bill_id.clone()),
        ]);
        let p3 = provider.clone();
        let answered = tokio::task::spawn_blocking(move || p3.call("/pay/unifiedorder", request))
            .await
            .map_err(|e| ApiError::internal(e.into()))?;
        let (state, code_url, note) = match &answered {
            Ok(a) => ("open", a.get("code_url").cloned().unwrap_or_default(), String::new()),
            Err(e) => ("failed", String::new(), e.clone()),
        };
        let (p2, id) = (park.clone(), order.id.clone());
        let (c2, n2) = (code_url.clone(), note.clone());
        s.store
            .admin(move |tx| {
                tx.execute(
                    "UPDATE pay_orders SET state = ?3, code_url = ?4, note = ?5, updated = ?6 WHERE park = ?1 AND id = ?2 AND state = 'open'",
                    params![p2, id, state, c2, n2, now_micros()],
                )?;
                Ok(())
            })
            .await
            .map_err(store_error)?;
        if let Err(e) = answered {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "provider", e));
        }
        Ok(PayOrderView {
            code_url,
            ..order
        })
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_orders(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<OrderQuery>, QueryRejection>,
) -> ApiResult<Json<PayOrderPage>> {
    let Query(q) = q?;
    if let Some(b) = &q.bill
        && (b.is_empty() || b.len() > 128)
    {
        return Err(ApiError::bad_request("bill: 1 to 128 characters"));
    }
    let orders = s
        .store
        .read(move |c| {
            c.query_all(
                &format!("SELECT {ORDER_COLUMNS} FROM pay_orders WHERE park = ?1 AND (bill_id = ?2 OR ?3 = 1) ORDER BY created DESC, id LIMIT 1000"),
                params![park, q.bill.clone().unwrap_or_default(), i64::from(q.bill.is_none())],
                order_row,
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(PayOrderPage { orders }))
}

/// What applying a provider's word that an order is paid did.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Recorded,
    AlreadyRecorded,
}

/// Records an order as paid by `transaction` for `amount` on `day`, once.
fn apply_paid_order(
    tx: &Connection,
    order: &str,
    transaction: &str,
    amount: i64,
    day: i32,
    by: &str,
) -> anyhow::Result<(String, String, Applied)> {
    let found: Option<(String, String, i64, String, Option<String>)> = tx
        .query_row(
            "SELECT park, bill_id, amount_fen, state, transaction_id FROM pay_orders WHERE id = ?1",
            params![order],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((park, bill, ordered, state, known)) = found else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no order {order}"),
        ));
    };
    if amount != ordered {
        return Err(refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("total_fee {amount} is not the order's {ordered} fen"),
        ));
    }
    if state == "paid" {
        return if known.as_deref() == Some(transaction) {
            Ok((park, bill, Applied::AlreadyRecorded))
        } else {
            Err(refusal(
                StatusCode::CONFLICT,
                "conflict",
                format!("order {order} is paid by another transaction"),
            ))
        };
    }
    let payment = apply_payment(
        tx,
        &park,
        &bill,
        &Received {
            amount_fen: amount,
            method: PROVIDER_METHOD.into(),
            reference: transaction.to_string(),
            day,
            excess: Excess::Keep,
        },
        by,
    )?;
    tx.execute(
        "UPDATE pay_orders SET state = 'paid', transaction_id = ?2, payment_id = ?3, note = '', updated = ?4 WHERE id = ?1",
        params![order, transaction, payment, now_micros()],
    )?;
    Ok((park, bill, Applied::Recorded))
}

/// The day of the provider's `time_end` (`yyyyMMddHHmmss`, China time).
fn provider_day(time_end: &str) -> Option<i32> {
    if time_end.len() != 14 || !time_end.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = time_end[0..4].parse().ok()?;
    let m: u32 = time_end[4..6].parse().ok()?;
    let d: u32 = time_end[6..8].parse().ok()?;
    park_model::time::day_number(y, m, d)
}

fn xml_answer(success: bool, message: &str) -> axum::response::Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        answer(success, message),
    )
        .into_response()
}

/// The provider's notification: checked, then applied once.
async fn notice(State(s): State<ApiState>, body: String) -> axum::response::Response {
    let m = &s.metrics;
    m.payment_notices_total.fetch_add(1, Relaxed);
    let refuse = |why: String| {
        s.metrics
            .payment_notices_refused_total
            .fetch_add(1, Relaxed);
        tracing::warn!(reason = %why, "A payment notification was refused.");
        xml_answer(false, &why)
    };
    // Not the provider's XML at all: not a notification (an error, not a protocol answer).
    let f = match from_xml(&body) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            s.metrics
                .payment_notices_refused_total
                .fetch_add(1, Relaxed);
            return ApiError::invalid("the body is an empty message").into_response();
        }
        Err(e) => {
            s.metrics
                .payment_notices_refused_total
                .fetch_add(1, Relaxed);
            return ApiError::invalid(format!("the body is not a provider's message: {e}"))
                .into_response();
        }
    };
    let Some(provider) = s.payments.clone() else {
        s.metrics
            .payment_notices_refused_total
            .fetch_add(1, Relaxed);
        return ApiError::not_found("no payment provider is configured on this hub")
            .into_response();
    };
    if let Err(e) = provider::verify(&f, &provider.key) {
        return refuse(format!("signature: {e}"));
    }
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if get("appid") != provider.settings.app_id || get("mch_id") != provider.settings.mch_id {
        return refuse("appid and mch_id are not this merchant's".into());
    }
    if get("return_code") != "SUCCESS" || get("result_code") != "SUCCESS" {
        // A failed payment: nothing to record, and nothing to send again.
        return xml_answer(true, "OK");
    }
    let (order, transaction) = (
        get("out_trade_no").to_string(),
        get("transaction_id").to_string(),
    );
    let Ok(amount) = get("total_fee").parse::<i64>() else {
        return refuse(format!(
            "total_fee {:?} is not a whole number of fen",
            get("total_fee")
        ));
    };
    let Some(day) = provider_day(get("time_end")) else {
        return refuse(format!(
            "time_end {:?} is not yyyyMMddHHmmss",
            get("time_end")
        ));
    };
    if order.is_empty() || transaction.is_empty() || transaction.len() > 64 {
        return refuse("out_trade_no and transaction_id are required".into());
    }
    let actor = Actor::system(format!("provider:{PROVIDER_METHOD}"));
    let audit = s.auth.audit(
        &actor,
        "payment_notice",
        &format!("pay-order/{order}"),
        json!({"transaction_id": transaction, "total_fee": amount}),
    );
    let (o2, t2) = (order.clone(), transaction.clone());
    let applied = s
        .store
        .admin(move |tx| {
            let (park, bill, applied) = apply_paid_order(tx, &o2, &t2, amount, day, &actor.name)?;
            if applied == Applied::Recorded {
                let mut a = audit;
                a.target = format!("{park}/bill/{bill}");
                a.append(tx)?;
            }
            Ok(applied)
        })
        .await;
    match applied {
        Ok(Applied::Recorded) => xml_answer(true, "OK"),
        Ok(Applied::AlreadyRecorded) => {
            s.metrics
                .payment_notices_replayed_total
                .fetch_add(1, Relaxed);
            xml_answer(true, "OK")
        }
        Err(e) => refuse(format!("{e:#}")),
    }
}

async fn query_order(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, order)): Path<(String, String)>,
) -> ApiResult<Json<PayOrderView>> {
    let audit = s.auth.audit(
        &caller.actor(),
        "pay_order_query",
        &format!("{park}/pay-order/{order}"),
        json!({}),
    );
    let result = async {
        let provider = provider_of(&s)?;
        let (p2, o2) = (park.clone(), order.clone());
        let known = s
            .store
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {ORDER_COLUMNS} FROM pay_orders WHERE park = ?1 AND id = ?2"),
                    params![p2, o2],
                    order_row,
                )
                .optional()
            })
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no order {order} in park {park}")))?;
        if known.state == "paid" {
            return Ok(known);
        }
        let request = fields([("out_trade_no", order.clone())]);
        let answered =
            tokio::task::spawn_blocking(move || provider.call("/pay/orderquery", request))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "provider", e))?;
        let get = |k: &str| answered.get(k).cloned().unwrap_or_default();
        if get("trade_state") == "SUCCESS" {
            let amount: i64 = get("total_fee").parse().unwrap_or(-1);
            let day = provider_day(&get("time_end")).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider",
                    "the provider's time_end is not yyyyMMddHHmmss",
                )
            })?;
            let (o2, t2, by, a2) = (
                order.clone(),
                get("transaction_id"),
                caller.principal.username.clone(),
                audit.clone(),
            );
            s.store
                .admin(move |tx| {
                    let (_, _, applied) = apply_paid_order(tx, &o2, &t2, amount, day, &by)?;
                    if applied == Applied::Recorded {
                        a2.append(tx)?;
                    }
                    Ok(())
                })
                .await
                .map_err(store_error)?;
        }
        let (p2, o2) = (park.clone(), order.clone());
        s.store
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {ORDER_COLUMNS} FROM pay_orders WHERE park = ?1 AND id = ?2"),
                    params![p2, o2],
                    order_row,
                )
            })
            .await
            .map_err(ApiError::internal)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

// ---------------------------------------------------------------------------------------
// Bank statements.

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementBody {
    /// The statement as the bank exports it: CSV with a header row naming the columns
    /// (交易日期/date, 交易流水号/reference, 对方户名/payer, 对方账号/account, 贷方金额/amount,
    /// 摘要/memo). Amounts in yuan.
    #[schema(max_length = 33554432)]
    csv: String,
    /// A name for the statement (the file's); the import's time when left out.
    #[serde(default)]
    #[schema(max_length = 128)]
    name: Option<String>,
    /// Match and report without recording anything.
    #[serde(default)]
    dry_run: bool,
}

fn line_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["matched", "unmatched", "assigned", "ignored"])
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BankLineView {
    /// The bank's transaction reference.
    pub id: String,
    pub statement: String,
    pub date: String,
    pub amount_fen: i64,
    pub payer: String,
    /// The payer's account number's last four digits (the rest is not kept).
    pub account_tail: String,
    pub memo: String,
    #[schema(schema_with = line_states)]
    pub state: String,
    /// How it was matched: `reference`, `payer_amount`, `recorded` (a receipt with the
    /// bank's reference was already recorded), `person`, or `unmatched`.
    pub how: String,
    /// Why it is unmatched or set aside.
    pub reason: String,
    pub bill_id: Option<String>,
    pub payment_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatementView {
    pub statement: String,
    pub dry_run: bool,
    /// Rows read.
    pub rows: usize,
    /// Credits new to the hub.
    pub credits: usize,
    pub matched: usize,
    pub matched_fen: i64,
    pub unmatched: usize,
    pub unmatched_fen: i64,
    /// Lines imported before (by their reference), skipped.
    pub duplicates: usize,
    /// Debits and zero lines, not imported.
    pub debits: usize,
    pub lines: Vec<BankLineView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BankLinePage {
    pub total: usize,
    pub offset: usize,
    pub lines: Vec<BankLineView>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankLineQuery {
    #[param(schema_with = line_states)]
    state: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[schema(min_length = 1, max_length = 128)]
    bill: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

/// A statement's row, read.
#[derive(Debug, Clone)]
pub struct StatementRow {
    pub reference: String,
    pub day: i32,
    pub amount_fen: i64,
    pub payer: String,
    pub account_tail: String,
    pub memo: String,
}

/// The columns a statement may name, and the names banks give them.
const STATEMENT_COLUMNS: &[(&str, &[&str])] = &[
    (
        "date",
        &["date", "交易日期", "记账日期", "入账日期", "value_date"],
    ),
    (
        "reference",
        &[
            "reference",
            "交易流水号",
            "流水号",
            "交易参考号",
            "transaction_id",
        ],
    ),
    (
        "payer",
        &["payer", "对方户名", "付款人名称", "付款人", "counterparty"],
    ),
    ("account", &["account", "对方账号", "付款人账号"]),
    (
        "amount",
        &["amount", "贷方金额", "收入金额", "金额", "credit"],
    ),
    ("memo", &["memo", "摘要", "附言", "用途", "remark"]),
];

fn statement_date(text: &str) -> Option<i32> {
    let t = text.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let separators_ok = t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '/' | '.'));
    if !separators_ok || digits.len() != 8 {
        return parse_date(t);
    }
    parse_date(&format!(
        "{}-{}-{}",
        &digits[0..4],
        &digits[4..6],
        &digits[6..8]
    ))
}

/// Reads a statement: every row, or every row's error (`row N, column: what`).
pub fn read_statement(text: &str) -> Result<Vec<StatementRow>, Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![format!("the header row cannot be read: {e}")]),
    };
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().to_lowercase();
        for (column, names) in STATEMENT_COLUMNS {
            if names.contains(&h.as_str()) {
                at.entry(*column).or_insert(i);
            }
        }
    }
    let missing: Vec<&str> = ["date", "reference", "payer", "amount"]
        .into_iter()
        .filter(|c| !at.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Err(vec![format!(
            "the header row has no column for {} (e.g. {})",
            missing.join(", "),
            missing
                .iter()
                .map(|m| STATEMENT_COLUMNS
                    .iter()
                    .find(|(c, _)| c == m)
                    .map(|(_, n)| n[1])
                    .unwrap_or(*m))
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let n = i + 2;
        if rows.len() + errors.len() >= MAX_STATEMENT_LINES {
            errors.push(format!("more than {MAX_STATEMENT_LINES} rows"));
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("row {n}: {e}"));
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = |c: &str| {
            at.get(c)
                .and_then(|i| record.get(*i))
                .unwrap_or("")
                .to_string()
        };
        let mut bad =
            |column: &str, what: String| errors.push(format!("row {n}, {column}: {what}"));
        let reference = cell("reference");
        if reference.is_empty() || reference.chars().count() > 64 {
            bad(
                "reference",
                "the bank's reference, 1 to 64 characters".into(),
            );
            continue;
        }
        let Some(day) = statement_date(&cell("date")) else {
            bad(
                "date",
                format!("{:?} is not a date (YYYY-MM-DD or YYYYMMDD)", cell("date")),
            );
            continue;
        };
        let amount_fen = match parse_yuan(&cell("amount")) {
            Ok(a) if a.abs() <= MAX_FEN => a,
            Ok(_) => {
                bad("amount", "out of range".into());
                continue;
            }
            Err(e) => {
                bad("amount", e);
                continue;
            }
        };
        let payer = cell("payer");
        if payer.chars().count() > 200 {
            bad("payer", "at most 200 characters".into());
            continue;
        }
        let memo: String = cell("memo").chars().take(500).collect();
        // The payer's account number is not kept: its last four digits are enough to
        // tell a person which account it was.
        let account: String = cell("account")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let account_tail = account[account.len().saturating_sub(4)..].to_string();
        if let Some(first) = seen.insert(reference.clone(), n) {
            bad("reference", format!("{reference:?} is also on row {first}"));
            continue;
        }
        rows.push(StatementRow {
            reference,
            day,
            amount_fen,
            payer,
            account_tail,
            memo,
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// The park's enterprises' names, by id.
async fn enterprise_names(s: &ApiState, park: &str) -> ApiResult<BTreeMap<String, String>> {
    let (s2, p2) = (s.clone(), park.to_string());
    tokio::task::spawn_blocking(move || {
        s2.documents.directory_snapshot(&p2).map(|d| {
            d.map(|d| {
                d.enterprises
                    .values()
                    .map(|e| (e.id.clone(), e.name.clone()))
                    .collect::<BTreeMap<_, _>>()
            })
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .ok_or_else(|| ApiError::not_found(format!("park {park} has no directory on this hub")))?
    .map_err(|e| ApiError::invalid(e.to_string()))
}

/// Imports a statement's rows in the caller's transaction: matches the new credits against
/// the park's open bills and records the matched ones as payments.
pub fn import_rows(
    tx: &Connection,
    park: &str,
    statement: &str,
    rows: &[StatementRow],
    names: &BTreeMap<String, String>,
    dry_run: bool,
    by: &str,
) -> anyhow::Result<StatementView> {
    let known: std::collections::HashSet<String> = tx
        .query_all(
            "SELECT id FROM bank_lines WHERE park = ?1",
            params![park],
            |r| r.get(0),
        )?
        .into_iter()
        .collect();
    let recorded: HashMap<String, (String, String)> = tx
        .query_all(
            "SELECT reference, bill_id, id FROM payments WHERE park = ?1 AND method = 'transfer'",
            params![park],
            |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))),
        )?
        .into_iter()
        .collect();
    let bills: Vec<OpenBill> = tx.query_all(
        "SELECT id, enterprise_id, total_fen - paid_fen FROM bills
         WHERE park = ?1 AND state IN ('issued', 'partly_paid') AND total_fen > paid_fen ORDER BY id",
        params![park],
        |r| {
            Ok(OpenBill {
                id: r.get(0)?,
                enterprise_id: r.get(1)?,
                owed_fen: r.get(2)?,
            })
        },
    )?;
    let (mut duplicates, mut debits) = (0, 0);
    let mut fresh: Vec<&StatementRow> = Vec::new();
    for row in rows {
        if known.contains(&row.reference) {
            duplicates += 1;
        } else if row.amount_fen <= 0 {
            debits += 1;
        } else {
            fresh.push(row);
        }
    }
    // Transfers already typed in as receipts with the bank's reference are those payments.
    let (already, to_match): (Vec<&StatementRow>, Vec<&StatementRow>) = fresh
        .into_iter()
        .partition(|r| recorded.contains_key(&r.reference));
    let credits: Vec<Credit> = to_match
        .iter()
        .map(|r| Credit {
            amount_fen: r.amount_fen,
            payer: r.payer.clone(),
            memo: r.memo.clone(),
        })
        .collect();
    let matches = reconcile::match_credits(&credits, &bills, names);
    let now = now_micros();
    let mut view = StatementView {
        statement: statement.to_string(),
        dry_run,
        rows: rows.len(),
        credits: already.len() + to_match.len(),
        matched: 0,
        matched_fen: 0,
        unmatched: 0,
        unmatched_fen: 0,
        duplicates,
        debits,
        lines: Vec::new(),
    };
    let mut lines: Vec<BankLineView> = Vec::with_capacity(view.credits);
    let line = |r: &StatementRow,
                state: &str,
                how: &str,
                reason: String,
                bill: Option<String>,
                payment: Option<String>| BankLineView {
        id: r.reference.clone(),
        statement: statement.to_string(),
        date: format_date(r.day),
        amount_fen: r.amount_fen,
        payer: r.payer.clone(),
        account_tail: r.account_tail.clone(),
        memo: r.memo.clone(),
        state: state.into(),
        how: how.into(),
        reason,
        bill_id: bill,
        payment_id: payment,
    };
    for r in already {
        let (bill, payment) = recorded[&r.reference].clone();
        lines.push(line(
            r,
            "matched",
            "recorded",
            String::new(),
            Some(bill),
            Some(payment),
        ));
    }
    for (r, m) in to_match.into_iter().zip(matches) {
        match m {
            Match::Unmatched(reason) => {
                lines.push(line(r, "unmatched", "unmatched", reason, None, None))
            }
            m => {
                let bill = m.bill().expect("a match names its bill").to_string();
                let payment = if dry_run {
                    None
                } else {
                    Some(apply_payment(
                        tx,
                        park,
                        &bill,
                        &Received {
                            amount_fen: r.amount_fen,
                            method: "transfer".into(),
                            reference: r.reference.clone(),
                            day: r.day,
                            excess: Excess::Refuse,
                        },
                        by,
                    )?)
                };
                lines.push(line(
                    r,
                    "matched",
                    m.how(),
                    String::new(),
                    Some(bill),
                    payment,
                ));
            }
        }
    }
    for l in &lines {
        if l.state == "matched" {
            view.matched += 1;
            view.matched_fen += l.amount_fen;
        } else {
            view.unmatched += 1;
            view.unmatched_fen += l.amount_fen;
        }
    }
    if !dry_run {
        for chunk in lines.chunks(100) {
            let mut sql = String::from(
                "INSERT INTO bank_lines (park, id, statement, value_day, amount_fen, payer, account_tail, memo, state, how, reason, bill_id, payment_id, imported, imported_by, updated, updated_by) VALUES ",
            );
            let mut values: Vec<park_db::Value> = Vec::with_capacity(chunk.len() * 17);
            for (i, l) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 17;
                sql.push('(');
                sql.push_str(
                    &(1..=17)
                        .map(|k| format!("?{}", b + k))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                sql.push(')');
                let day = parse_date(&l.date).unwrap_or(0);
                values.extend([
                    park_db::Value::Text(park.to_string()),
                    park_db::Value::Text(l.id.clone()),
                    park_db::Value::Text(statement.to_string()),
                    park_db::Value::Integer(i64::from(day)),
                    park_db::Value::Integer(l.amount_fen),
                    park_db::Value::Text(l.payer.clone()),
                    park_db::Value::Text(l.account_tail.clone()),
                    park_db::Value::Text(l.memo.clone()),
                    park_db::Value::Text(l.state.clone()),
                    park_db::Value::Text(l.how.clone()),
                    park_db::Value::Text(l.reason.clone()),
                    l.bill_id
                        .clone()
                        .map_or(park_db::Value::Null, park_db::Value::Text),
                    l.payment_id
                        .clone()
                        .map_or(park_db::Value::Null, park_db::Value::Text),
                    park_db::Value::Integer(now),
                    park_db::Value::Text(by.to_string()),
                    park_db::Value::Integer(now),
                    park_db::Value::Text(by.to_string()),
                ]);
            }
            tx.execute(&sql, park_db::params_from_iter(values))?;
        }
    }
    view.lines = lines;
    Ok(view)
}

async fn import_statement(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(park): Path<String>,
    body: Result<Json<StatementBody>, JsonRejection>,
) -> ApiResult<Json<StatementView>> {
    let Json(b) = body?;
    let name = b
        .name
        .clone()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("statement-{}", now_micros() / 1_000_000));
    let audit = s.auth.audit(
        &caller.actor(),
        "bank_statement_import",
        &format!("{park}/bank-statement/{name}"),
        json!({"dry_run": b.dry_run, "bytes": b.csv.len()}),
    );
    let result = async {
        if name.chars().count() > 128 {
            return Err(ApiError::invalid("name: at most 128 characters"));
        }
        let rows = read_statement(&b.csv).map_err(|errors| {
            s.metrics.bank_rows_refused_total.fetch_add(errors.len() as u64, Relaxed);
            ApiError::invalid(format!(
                "the statement was not imported: {}{}",
                errors.iter().take(20).cloned().collect::<Vec<_>>().join("; "),
                if errors.len() > 20 { format!("; and {} more", errors.len() - 20) } else { String::new() }
            ))
        })?;
        let names = enterprise_names(&s, &park).await?;
        let (p2, by, a2, dry) = (park.clone(), caller.principal.username.clone(), audit.clone(), b.dry_run);
        s.store
            .admin(move |tx| {
                let view = import_rows(tx, &p2, &name, &rows, &names, dry, &by)?;
                if !dry {
                    let mut a = a2;
                    a.detail = json!({"rows": view.rows, "matched": view.matched, "matched_fen": view.matched_fen,
                        "unmatched": view.unmatched, "duplicates": view.duplicates});
                    a.append(tx)?;
                }
                Ok(view)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

const LINE_COLUMNS: &str = "id, statement, value_day, amount_fen, payer, account_tail, memo, state, how, reason, bill_id, payment_id";

fn line_row(r: &park_db::Row) -> park_db::Result<BankLineView> {
    Ok(BankLineView {
        id: r.get(0)?,
        statement: r.get(1)?,
        date: format_date(r.get::<_, i64>(2)? as i32),
        amount_fen: r.get(3)?,
        payer: r.get(4)?,
        account_tail: r.get(5)?,
        memo: r.get(6)?,
        state: r.get(7)?,
        how: r.get(8)?,
        reason: r.get(9)?,
        bill_id: r.get(10)?,
        payment_id: r.get(11)?,
    })
}

async fn list_bank_lines(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<BankLineQuery>, QueryRejection>,
) -> ApiResult<Json<BankLinePage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: from 1 to 500"));
    }
    if let Some(st) = &q.state
        && !["matched", "unmatched", "assigned", "ignored"].contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not a bank line's state"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let rows = s
        .store
        .read(move |c| {
            c.query_all(
                &format!("SELECT {LINE_COLUMNS} FROM bank_lines WHERE park = ?1 AND (state = ?2 OR ?3 = 1) ORDER BY value_day DESC, id"),
                params![park, q.state.clone().unwrap_or_default(), i64::from(q.state.is_none())],
                line_row,
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(BankLinePage {
        total: rows.len(),
        offset,
        lines: rows.into_iter().skip(offset).take(limit).collect(),
    }))
}

/// Changes an unmatched line: assigned to a bill (a payment recorded) or set aside.
async fn settle_line(
    s: ApiState,
    caller: Caller,
    park: String,
    line: String,
    assign_to: Option<String>,
    reason: String,
) -> ApiResult<Json<BankLineView>> {
    let (action, detail) = match &assign_to {
        Some(bill) => ("bank_line_assign", json!({"bill": bill})),
        None => ("bank_line_ignore", json!({"reason": reason})),
    };
    let audit = s.auth.audit(
        &caller.actor(),
        action,
        &format!("{park}/bank-line/{line}"),
        detail,
    );
    let result = async {
        if let Some(b) = &assign_to
            && (b.is_empty() || b.len() > 128)
        {
            return Err(ApiError::invalid("bill: 1 to 128 characters"));
        }
        if assign_to.is_none() && (reason.trim().is_empty() || reason.chars().count() > 500) {
            return Err(ApiError::invalid("reason: 1 to 500 characters"));
        }
        let (p2, l2, by, a2) = (park.clone(), line.clone(), caller.principal.username.clone(), audit.clone());
        s.store
            .admin(move |tx| {
                let found: Option<BankLineView> = tx
                    .query_row(
                        &format!("SELECT {LINE_COLUMNS} FROM bank_lines WHERE park = ?1 AND id = ?2"),
                        params![p2, l2],
                        line_row,
                    )
                    .optional()?;
                let Some(found) = found else {
                    return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no bank line {l2} in park {p2}")));
                };
                if found.state != "unmatched" {
                    return Err(refusal(StatusCode::CONFLICT, "conflict", format!("bank line {l2} is {}, not unmatched", found.state)));
                }
                let now = now_micros();
                match assign_to {
                    Some(bill) => {
                        let payment = apply_payment(
                            tx,
                            &p2,
                            &bill,
                            &Received {
                                amount_fen: found.amount_fen,
                                method: "transfer".into(),
                                reference: found.id.clone(),
                                day: parse_date(&found.date).unwrap_or(0),
                                excess: Excess::Keep,
                            },
                            &by,
                        )?;
                        tx.execute(
                            "UPDATE bank_lines SET state = 'assigned', how = 'person', reason = '', bill_id = ?3, payment_id = ?4, updated = ?5, updated_by = ?6 WHERE park = ?1 AND id = ?2",
                            params![p2, l2, bill, payment, now, by],
                        )?;
                    }
                    None => {
                        tx.execute(
                            "UPDATE bank_lines SET state = 'ignored', reason = ?3, updated = ?4, updated_by = ?5 WHERE park = ?1 AND id = ?2",
                            params![p2, l2, reason.trim(), now, by],
                        )?;
                    }
                }
                a2.append(tx)?;
                Ok(tx.query_row(
                    &format!("SELECT {LINE_COLUMNS} FROM bank_lines WHERE park = ?1 AND id = ?2"),
                    params![p2, l2],
                    line_row,
                )?)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn assign_bank_line(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, line)): Path<(String, String)>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> ApiResult<Json<BankLineView>> {
    let Json(b) = body?;
    settle_line(s, caller, park, line, Some(b.bill), String::new()).await
}

async fn ignore_bank_line(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, line)): Path<(String, String)>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<Json<BankLineView>> {
    let Json(b) = body?;
    settle_line(s, caller, park, line, None, b.reason).await
}

// ---------------------------------------------------------------------------------------
// Refunds.

fn refund_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["requested", "approved", "rejected"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount_fen: i64,
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

fn decisions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["approve", "reject"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundDecision {
    #[schema(schema_with = decisions)]
    decision: String,
    /// The refund transfer's reference (required to approve).
    #[serde(default)]
    #[schema(max_length = 128)]
    reference: Option<String>,
    #[serde(default)]
    #[schema(max_length = 500)]
    note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub id: String,
    pub payment_id: String,
    pub bill_id: String,
    pub enterprise_id: String,
    pub amount_fen: i64,
    pub reason: String,
    #[schema(schema_with = refund_states)]
    pub state: String,
    pub reference: String,
    pub note: String,
    pub requested_at: i64,
    pub requested_by: String,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundPage {
    pub refunds: Vec<RefundView>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundQuery {
    #[param(schema_with = refund_states)]
    state: Option<String>,
}

const REFUND_COLUMNS: &str = "id, payment_id, bill_id, enterprise_id, amount_fen, reason, state, reference, note, requested, requested_by, decided, decided_by";

fn refund_row(r: &park_db::Row) -> park_db::Result<RefundView> {
    Ok(RefundView {
        id: r.get(0)?,
        payment_id: r.get(1)?,
        bill_id: r.get(2)?,
        enterprise_id: r.get(3)?,
        amount_fen: r.get(4)?,
        reason: r.get(5)?,
        state: r.get(6)?,
        reference: r.get(7)?,
        note: r.get(8)?,
        requested_at: r.get(9)?,
        requested_by: r.get(10)?,
        decided_at: r.get(11)?,
        decided_by: r.get(12)?,
    })
}

fn read_refund(tx: &Connection, park: &str, id: &str) -> anyhow::Result<RefundView> {
    Ok(tx.query_row(
        &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE park = ?1 AND id = ?2"),
        params![park, id],
        refund_row,
    )?)
}

async fn request_refund(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, payment)): Path<(String, String)>,
    body: Result<Json<RefundBody>, JsonRejection>,
) -> ApiResult<Json<RefundView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "refund_request",
        &format!("{park}/payment/{payment}"),
        json!({"amount_fen": b.amount_fen, "reason": b.reason}),
    );
    let result = async {
        if !(1..=MAX_FEN).contains(&b.amount_fen) {
            return Err(ApiError::invalid("amount_fen: from 1 to 10^12"));
        }
        let reason = b.reason.trim().to_string();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid("reason: 1 to 500 characters"));
        }
        let (p2, pay, by, a2, amount) = (park.clone(), payment.clone(), caller.principal.username.clone(), audit.clone(), b.amount_fen);
        s.store
            .admin(move |tx| {
                let found: Option<(String, String, i64)> = tx
                    .query_row(
                        "SELECT bill_id, enterprise_id, amount_fen FROM payments WHERE park = ?1 AND id = ?2",
                        params![p2, pay],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let Some((bill, enterprise, paid)) = found else {
                    return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no payment {pay} in park {p2}")));
                };
                let (asked, n): (i64, i64) = tx.query_row(
                    "SELECT COALESCE(SUM(amount_fen), 0), COUNT(*) FROM refunds WHERE park = ?1 AND payment_id = ?2 AND state <> 'rejected'",
                    params![p2, pay],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if amount > paid - asked {
                    return Err(refusal(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!("amount_fen: {amount} is more than the {} fen of the payment not yet refunded or asked", paid - asked),
                    ));
                }
                let id = format!("{pay}-r{}", n + 1);
                tx.execute(
                    "INSERT INTO refunds (park, id, payment_id, bill_id, enterprise_id, amount_fen, reason, state, reference, note, requested, requested_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'requested', '', '', ?8, ?9)",
                    params![p2, id, pay, bill, enterprise, amount, reason, now_micros(), by],
                )?;
                a2.append(tx)?;
                read_refund(tx, &p2, &id)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn decide_refund(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, refund)): Path<(String, String)>,
    body: Result<Json<RefundDecision>, JsonRejection>,
) -> ApiResult<Json<RefundView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "refund_decide",
        &format!("{park}/refund/{refund}"),
        json!({"decision": b.decision, "reference": b.reference, "note": b.note}),
    );
    let result = async {
        let approve = match b.decision.as_str() {
            "approve" => true,
            "reject" => false,
            other => return Err(ApiError::invalid(format!("decision: {other:?} is not approve or reject"))),
        };
        let reference = b.reference.clone().unwrap_or_default().trim().to_string();
        if b.reference.as_ref().is_some_and(|r| r.chars().count() > 128) {
            return Err(ApiError::invalid("reference: at most 128 characters"));
        }
        if approve && (reference.is_empty() || reference.chars().count() > 128) {
            return Err(ApiError::invalid("reference: the refund transfer's reference, 1 to 128 characters, to approve"));
        }
        let note = b.note.clone().unwrap_or_default().trim().to_string();
        if note.chars().count() > 500 {
            return Err(ApiError::invalid("note: at most 500 characters"));
        }
        let (_, today) = park_clock(&s, &park).await?;
        let (p2, r2, by, a2) = (park.clone(), refund.clone(), caller.principal.username.clone(), audit.clone());
        s.store
            .admin(move |tx| {
                let found: Option<(String, String, String)> = tx
                    .query_row(
                        "SELECT state, requested_by, bill_id FROM refunds WHERE park = ?1 AND id = ?2",
                        params![p2, r2],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let Some((state, asker, bill)) = found else {
                    return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no refund {r2} in park {p2}")));
                };
                if state != "requested" {
                    return Err(refusal(StatusCode::CONFLICT, "conflict", format!("refund {r2} is already {state}")));
                }
                if asker == by {
                    return Err(refusal(
                        StatusCode::FORBIDDEN,
                        "second_user",
                        format!("refund {r2} was asked by {by}: another user must decide it"),
                    ));
                }
                tx.execute(
                    "UPDATE refunds SET state = ?3, reference = ?4, note = ?5, decided = ?6, decided_day = ?7, decided_by = ?8 WHERE park = ?1 AND id = ?2",
                    params![p2, r2, if approve { "approved" } else { "rejected" }, reference, note, now_micros(), today, by],
                )?;
                if approve {
                    settle(tx, &p2, &bill, &by)?;
                }
                a2.append(tx)?;
                read_refund(tx, &p2, &r2)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_refunds(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<RefundQuery>, QueryRejection>,
) -> ApiResult<Json<RefundPage>> {
    let Query(q) = q?;
    if let Some(st) = &q.state
        && !["requested", "approved", "rejected"].contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not a refund's state"
        )));
    }
    let refunds = s
        .store
        .read(move |c| {
            c.query_all(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE park = ?1 AND (state = ?2 OR ?3 = 1) ORDER BY requested DESC, id LIMIT 1000"),
                params![park, q.state.clone().unwrap_or_default(), i64::from(q.state.is_none())],
                refund_row,
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(RefundPage { refunds }))
}

async fn list_enterprise_payments(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
) -> ApiResult<Json<PaymentPage>> {
    crate::billing::payments_of(&s, park, None, Some(enterprise)).await
}

// ---------------------------------------------------------------------------------------
// Invoice requests.

fn invoice_kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["normal", "special"])
}

fn invoice_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["requested", "issued", "rejected"])
}

fn invoice_decisions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["issue", "reject"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceBody {
    #[schema(min_length = 1, max_length = 128)]
    bill_id: String,
    /// `normal` (普通发票) or `special` (增值税专用发票).
    #[schema(schema_with = invoice_kinds)]
    kind: String,
    /// The buyer's name as it is to be printed.
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// The buyer's unified social credit code (统一社会信用代码), 18 characters.
    #[schema(min_length = 18, max_length = 18)]
    tax_number: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount_fen: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceDecision {
    #[schema(schema_with = invoice_decisions)]
    decision: String,
    /// The invoice's number (8 to 20 digits), to issue.
    #[serde(default)]
    #[schema(max_length = 20)]
    invoice_number: Option<String>,
    #[serde(default)]
    #[schema(max_length = 500)]
    note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: String,
    pub enterprise_id: String,
    pub bill_id: String,
    #[schema(schema_with = invoice_kinds)]
    pub kind: String,
    pub title: String,
    pub tax_number: String,
    pub amount_fen: i64,
    #[schema(schema_with = invoice_states)]
    pub state: String,
    pub invoice_number: String,
    pub note: String,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePage {
    pub requests: Vec<InvoiceView>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    #[param(schema_with = invoice_states)]
    state: Option<String>,
}

/// Whether `code` is a unified social credit code (GB 32100-2015): 18 characters of
/// `0-9A-Z` less I, O, Z, S and V, the last a check character over the other seventeen.
pub fn is_credit_code(code: &str) -> bool {
    const CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    const WEIGHTS: [u32; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let bytes = code.as_bytes();
    if bytes.len() != 18 {
        return false;
    }
    let mut values = [0u32; 18];
    for (i, b) in bytes.iter().enumerate() {
        match CHARS.iter().position(|c| c == b) {
            Some(v) => values[i] = v as u32,
            None => return false,
        }
    }
    let sum: u32 = WEIGHTS.iter().zip(&values).map(|(w, v)| w * v).sum();
    let check = (31 - sum % 31) % 31;
    values[17] == check
}

const INVOICE_COLUMNS: &str = "id, enterprise_id, bill_id, kind, title, tax_number, amount_fen, state, invoice_number, note, created, created_by, updated, updated_by";

fn invoice_row(r: &park_db::Row) -> park_db::Result<InvoiceView> {
    Ok(InvoiceView {
        id: r.get(0)?,
        enterprise_id: r.get(1)?,
        bill_id: r.get(2)?,
        kind: r.get(3)?,
        title: r.get(4)?,
        tax_number: r.get(5)?,
        amount_fen: r.get(6)?,
        state: r.get(7)?,
        invoice_number: r.get(8)?,
        note: r.get(9)?,
        created_at: r.get(10)?,
        created_by: r.get(11)?,
        updated_at: r.get(12)?,
        updated_by: r.get(13)?,
    })
}

fn read_invoice(tx: &Connection, park: &str, id: &str) -> anyhow::Result<InvoiceView> {
    Ok(tx.query_row(
        &format!("SELECT {INVOICE_COLUMNS} FROM invoice_requests WHERE park = ?1 AND id = ?2"),
        params![park, id],
        invoice_row,
    )?)
}

async fn request_invoice(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise)): Path<(String, String)>,
    body: Result<Json<InvoiceBody>, JsonRejection>,
) -> ApiResult<Json<InvoiceView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "invoice_request",
        &format!("{park}/enterprise/{enterprise}/bill/{}", b.bill_id),
        json!({"kind": b.kind, "title": b.title, "tax_number": b.tax_number, "amount_fen": b.amount_fen}),
    );
    let result = async {
        if !["normal", "special"].contains(&b.kind.as_str()) {
            return Err(ApiError::invalid(format!("kind: {:?} is not normal or special", b.kind)));
        }
        let title = b.title.trim().to_string();
        if title.is_empty() || title.chars().count() > 200 {
            return Err(ApiError::invalid("title: 1 to 200 characters"));
        }
        if b.bill_id.is_empty() || b.bill_id.len() > 128 {
            return Err(ApiError::invalid("bill_id: 1 to 128 characters"));
        }
        let tax = b.tax_number.to_ascii_uppercase();
        if !is_credit_code(&tax) {
            return Err(ApiError::invalid(format!(
                "tax_number: {:?} is not a unified social credit code (18 characters with a valid check character)",
                b.tax_number
            )));
        }
        if !(1..=MAX_FEN).contains(&b.amount_fen) {
            return Err(ApiError::invalid("amount_fen: from 1 to 10^12"));
        }
        let (p2, e2, by, a2) = (park.clone(), enterprise.clone(), caller.principal.username.clone(), audit.clone());
        let (bill, kind, amount) = (b.bill_id.clone(), b.kind.clone(), b.amount_fen);
        s.store
            .admin(move |tx| {
                let found: Option<(String, String, i64)> = tx
                    .query_row(
                        "SELECT enterprise_id, state, total_fen FROM bills WHERE park = ?1 AND id = ?2",
                        params![p2, bill],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let total = match found {
                    Some((owner, state, total)) if owner == e2 && state != "draft" => total,
                    _ => return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no issued bill {bill} of enterprise {e2}"))),
                };
                let (asked, n): (i64, i64) = tx.query_row(
                    "SELECT COALESCE(SUM(CASE WHEN state <> 'rejected' THEN amount_fen ELSE 0 END), 0), COUNT(*) FROM invoice_requests WHERE park = ?1 AND bill_id = ?2",
                    params![p2, bill],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if amount > total - asked {
                    return Err(refusal(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!("amount_fen: {amount} is more than the {} fen of the bill not yet invoiced or asked", total - asked),
                    ));
                }
                let id = format!("{bill}-i{}", n + 1);
                let now = now_micros();
                tx.execute(
                    "INSERT INTO invoice_requests (park, id, enterprise_id, bill_id, kind, title, tax_number, amount_fen, state, invoice_number, note, created, created_by, updated, updated_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'requested', '', '', ?9, ?10, ?9, ?10)",
                    params![p2, id, e2, bill, kind, title, tax, amount, now, by],
                )?;
                a2.append(tx)?;
                read_invoice(tx, &p2, &id)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn invoices(
    s: &ApiState,
    park: String,
    enterprise: Option<String>,
    state: Option<String>,
) -> ApiResult<Json<InvoicePage>> {
    if let Some(st) = &state
        && !["requested", "issued", "rejected"].contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not an invoice request's state"
        )));
    }
    let requests = s
        .store
        .read(move |c| {
            c.query_all(
                &format!("SELECT {INVOICE_COLUMNS} FROM invoice_requests WHERE park = ?1 AND (enterprise_id = ?2 OR ?3 = 1) AND (state = ?4 OR ?5 = 1) ORDER BY created DESC, id LIMIT 1000"),
                params![
                    park,
                    enterprise.clone().unwrap_or_default(),
                    i64::from(enterprise.is_none()),
                    state.clone().unwrap_or_default(),
                    i64::from(state.is_none())
                ],
                invoice_row,
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(InvoicePage { requests }))
}

async fn list_invoices(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<InvoiceQuery>, QueryRejection>,
) -> ApiResult<Json<InvoicePage>> {
    let Query(q) = q?;
    invoices(&s, park, None, q.state).await
}

async fn list_enterprise_invoices(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
) -> ApiResult<Json<InvoicePage>> {
    invoices(&s, park, Some(enterprise), None).await
}

async fn decide_invoice(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, request)): Path<(String, String)>,
    body: Result<Json<InvoiceDecision>, JsonRejection>,
) -> ApiResult<Json<InvoiceView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "invoice_decide",
        &format!("{park}/invoice-request/{request}"),
        json!({"decision": b.decision, "invoice_number": b.invoice_number, "note": b.note}),
    );
    let result = async {
        let issue = match b.decision.as_str() {
            "issue" => true,
            "reject" => false,
            other => return Err(ApiError::invalid(format!("decision: {other:?} is not issue or reject"))),
        };
        if b.invoice_number.as_ref().is_some_and(|n| n.len() > 20) {
            return Err(ApiError::invalid("invoice_number: at most 20 digits"));
        }
        let number = b.invoice_number.clone().unwrap_or_default().trim().to_string();
        if (issue && !(8..=20).contains(&number.len())) || !number.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::invalid("invoice_number: 8 to 20 digits, to issue"));
        }
        let note = b.note.clone().unwrap_or_default().trim().to_string();
        if note.chars().count() > 500 || (!issue && note.is_empty()) {
            return Err(ApiError::invalid("note: the reason, 1 to 500 characters, to reject"));
        }
        let (p2, r2, by, a2) = (park.clone(), request.clone(), caller.principal.username.clone(), audit.clone());
        s.store
            .admin(move |tx| {
                let state: Option<String> = tx
                    .query_row(
                        "SELECT state FROM invoice_requests WHERE park = ?1 AND id = ?2",
                        params![p2, r2],
                        |r| r.get(0),
                    )
                    .optional()?;
                match state.as_deref() {
                    None => return Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("no invoice request {r2} in park {p2}"))),
                    Some("requested") => {}
                    Some(other) => return Err(refusal(StatusCode::CONFLICT, "conflict", format!("invoice request {r2} is already {other}"))),
                }
                tx.execute(
                    "UPDATE invoice_requests SET state = ?3, invoice_number = ?4, note = ?5, updated = ?6, updated_by = ?7 WHERE park = ?1 AND id = ?2",
                    params![p2, r2, if issue { "issued" } else { "rejected" }, number, note, now_micros(), by],
                )?;
                a2.append(tx)?;
                read_invoice(tx, &p2, &r2)
            })
            .await
            .map_err(store_error)
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

// ---------------------------------------------------------------------------------------
// Reports.

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayQuery {
    /// The day, `YYYY-MM-DD`; today at the park when left out.
    #[param(max_length = 10)]
    date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MethodTotal {
    pub method: String,
    pub count: i64,
    pub amount_fen: i64,
}

fn difference_kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of([
        "overpaid",
        "unmatched_bank_line",
        "unconfirmed_order",
        "paid_mismatch",
        "refund_waiting",
    ])
}

/// Something finance must look at: money that is not where the books say.
#[derive(Debug, Serialize, ToSchema)]
pub struct Difference {
    #[schema(schema_with = difference_kinds)]
    pub kind: String,
    /// The bill, bank line, order or refund.
    pub reference: String,
    pub amount_fen: i64,
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconciliationView {
    pub date: String,
    /// Bills issued that day.
    pub issued_count: i64,
    pub issued_fen: i64,
    /// Payments received that day, all methods.
    pub received_fen: i64,
    pub received_by_method: Vec<MethodTotal>,
    /// Refunds approved that day.
    pub refunded_fen: i64,
    /// Bank credits of that day, and how much of them is recorded as payments.
    pub bank_credits_fen: i64,
    pub bank_recorded_fen: i64,
    /// Owed at the end of the day on bills issued by then.
    pub receivable_fen: i64,
    /// The part of it past its due date.
    pub overdue_fen: i64,
    pub differences: Vec<Difference>,
    /// Nothing to look at.
    pub balanced: bool,
}

async fn day_of(s: &ApiState, park: &str, q: DayQuery) -> ApiResult<i32> {
    let (_, today) = park_clock(s, park).await?;
    match q.date {
        Some(text) => parse_date(&text)
            .ok_or_else(|| ApiError::invalid(format!("date: {text:?} is not a date YYYY-MM-DD"))),
        None => Ok(today),
    }
}

/// Each bill issued by `day` with what it owes at the end of that day: `(bill, enterprise,
/// due day, total, net received by then)`.
/// A bill's standing: its id, enterprise, due day, total and net received.
type Standing = (String, String, i64, i64, i64);

fn standing(c: &Connection, park: &str, day: i32) -> park_db::Result<Vec<Standing>> {
    c.query_all(
        "SELECT b.id, b.enterprise_id, b.due_day, b.total_fen,
                COALESCE((SELECT SUM(p.amount_fen) FROM payments p WHERE p.park = b.park AND p.bill_id = b.id AND p.received_day <= ?2), 0)
              - COALESCE((SELECT SUM(f.amount_fen) FROM refunds f WHERE f.park = b.park AND f.bill_id = b.id AND f.state = 'approved' AND f.decided_day <= ?2), 0)
         FROM bills b WHERE b.park = ?1 AND b.state <> 'draft' AND b.issue_day <= ?2 ORDER BY b.id",
        params![park, day],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
}

/// The day's reconciliation, in one read.
pub fn reconcile_day(c: &Connection, park: &str, day: i32) -> park_db::Result<ReconciliationView> {
    let (issued_count, issued_fen): (i64, i64) = c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(total_fen), 0) FROM bills WHERE park = ?1 AND state <> 'draft' AND issue_day = ?2",
        params![park, day],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let received_by_method: Vec<MethodTotal> = c.query_all(
        "SELECT method, COUNT(*), SUM(amount_fen) FROM payments WHERE park = ?1 AND received_day = ?2 GROUP BY method ORDER BY method",
        params![park, day],
        |r| Ok(MethodTotal { method: r.get(0)?, count: r.get(1)?, amount_fen: r.get(2)? }),
    )?;
    let received_fen = received_by_method.iter().map(|m| m.amount_fen).sum();
    let refunded_fen: i64 = c.query_row(
        "SELECT COALESCE(SUM(amount_fen), 0) FROM refunds WHERE park = ?1 AND state = 'approved' AND decided_day = ?2",
        params![park, day],
        |r| r.get(0),
    )?;
    let (bank_credits_fen, bank_recorded_fen): (i64, i64) = c.query_row(
        "SELECT COALESCE(SUM(amount_fen), 0), COALESCE(SUM(CASE WHEN payment_id IS NOT NULL THEN amount_fen ELSE 0 END), 0)
         FROM bank_lines WHERE park = ?1 AND value_day = ?2 AND state <> 'ignored'",
        params![park, day],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (mut receivable_fen, mut overdue_fen) = (0i64, 0i64);
    let mut differences = Vec::new();
    for (bill, _, due, total, net) in standing(c, park, day)? {
        let owed = (total - net).max(0);
        receivable_fen += owed;
        if due < i64::from(day) {
            overdue_fen += owed;
        }
        if net > total {
            differences.push(Difference {
                kind: "overpaid".into(),
                reference: bill,
                amount_fen: net - total,
                note: "received more than the bill's total: refund or apply it".into(),
            });
        }
    }
    for (id, amount, payer) in c.query_all(
        "SELECT id, amount_fen, payer FROM bank_lines WHERE park = ?1 AND state = 'unmatched' AND value_day <= ?2 ORDER BY value_day, id",
        params![park, day],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
    )? {
        differences.push(Difference {
            kind: "unmatched_bank_line".into(),
            reference: id,
            amount_fen: amount,
            note: format!("from {payer}: assign it to a bill or set it aside"),
        });
    }
    // Orders opened before the day that the provider has not confirmed: the payer may have
    // paid without the notification arriving (ask the provider).
    let day_start_micros = i64::from(day) * park_model::time::MICROS_PER_DAY;
    for (id, amount) in c.query_all(
        "SELECT id, amount_fen FROM pay_orders WHERE park = ?1 AND state = 'open' AND code_url <> '' AND created < ?2 ORDER BY id",
        params![park, day_start_micros],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )? {
        differences.push(Difference {
            kind: "unconfirmed_order".into(),
            reference: id,
            amount_fen: amount,
            note: "opened before the day and not confirmed by the provider: query it".into(),
        });
    }
    for (id, amount) in c.query_all(
        "SELECT id, amount_fen FROM refunds WHERE park = ?1 AND state = 'requested' ORDER BY id",
        params![park],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )? {
        differences.push(Difference {
            kind: "refund_waiting".into(),
            reference: id,
            amount_fen: amount,
            note: "asked and not yet decided by a second user".into(),
        });
    }
    // The books' own check: each bill's paid amount is its payments less its refunds.
    for (id, stored, expected) in c.query_all(
        "SELECT b.id, b.paid_fen,
                COALESCE((SELECT SUM(p.amount_fen) FROM payments p WHERE p.park = b.park AND p.bill_id = b.id), 0)
              - COALESCE((SELECT SUM(f.amount_fen) FROM refunds f WHERE f.park = b.park AND f.bill_id = b.id AND f.state = 'approved'), 0),
                b.total_fen
         FROM bills b WHERE b.park = ?1 AND b.state <> 'draft'",
        params![park],
        |r| {
            let (id, stored, net, total): (String, i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            Ok((id, stored, net.clamp(0, total.max(0))))
        },
    )? {
        if stored != expected {
            differences.push(Difference {
                kind: "paid_mismatch".into(),
                reference: id,
                amount_fen: stored - expected,
                note: format!("the bill says {stored} fen paid, its payments and refunds {expected}"),
            });
        }
    }
    Ok(ReconciliationView {
        date: format_date(day),
        issued_count,
        issued_fen,
        received_fen,
        received_by_method,
        refunded_fen,
        bank_credits_fen,
        bank_recorded_fen,
        receivable_fen,
        overdue_fen,
        balanced: differences.is_empty(),
        differences,
    })
}

async fn reconciliation(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<DayQuery>, QueryRejection>,
) -> ApiResult<Json<ReconciliationView>> {
    let Query(q) = q?;
    let day = day_of(&s, &park, q).await?;
    Ok(Json(
        s.store
            .read(move |c| reconcile_day(c, &park, day))
            .await
            .map_err(ApiError::internal)?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgeingRow {
    pub enterprise_id: String,
    pub enterprise_name: String,
    pub bills: i64,
    pub not_due_fen: i64,
    pub days_1_30_fen: i64,
    pub days_31_60_fen: i64,
    pub days_61_90_fen: i64,
    pub over_90_fen: i64,
    pub total_fen: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgeingView {
    pub date: String,
    pub enterprises: Vec<AgeingRow>,
    pub total: AgeingRow,
}

fn ageing_row(id: String, name: String, bills: i64, a: &Ageing) -> AgeingRow {
    AgeingRow {
        enterprise_id: id,
        enterprise_name: name,
        bills,
        not_due_fen: a.not_due_fen,
        days_1_30_fen: a.days_1_30_fen,
        days_31_60_fen: a.days_31_60_fen,
        days_61_90_fen: a.days_61_90_fen,
        over_90_fen: a.over_90_fen,
        total_fen: a.total(),
    }
}

async fn ageing(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<DayQuery>, QueryRejection>,
) -> ApiResult<Json<AgeingView>> {
    let Query(q) = q?;
    let day = day_of(&s, &park, q).await?;
    let names = enterprise_names(&s, &park).await?;
    let p2 = park.clone();
    let rows = s
        .store
        .read(move |c| standing(c, &p2, day))
        .await
        .map_err(ApiError::internal)?;
    let mut by: BTreeMap<String, (i64, Ageing)> = BTreeMap::new();
    for (_, enterprise, due, total, net) in rows {
        let owed = (total - net).max(0);
        if owed > 0 {
            let e = by.entry(enterprise).or_default();
            e.0 += 1;
            e.1.add(owed, due as i32, day);
        }
    }
    let mut all = Ageing::default();
    let mut count = 0;
    let mut enterprises: Vec<AgeingRow> = by
        .into_iter()
        .map(|(id, (bills, a))| {
            all.plus(&a);
            count += bills;
            let name = names.get(&id).cloned().unwrap_or_default();
            ageing_row(id, name, bills, &a)
        })
        .collect();
    // The most overdue first.
    enterprises.sort_by(|a, b| {
        (
            b.over_90_fen,
            b.days_61_90_fen,
            b.days_31_60_fen,
            b.days_1_30_fen,
        )
            .cmp(&(
                a.over_90_fen,
                a.days_61_90_fen,
                a.days_31_60_fen,
                a.days_1_30_fen,
            ))
            .then_with(|| a.enterprise_id.cmp(&b.enterprise_id))
    });
    Ok(Json(AgeingView {
        date: format_date(day),
        enterprises,
        total: ageing_row(String::new(), String::new(), count, &all),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes_are_checked_by_their_last_character() {
        // Codes of the standard's form with their check characters computed.
        assert!(is_credit_code("91350100M000100Y43"));
        assert!(!is_credit_code("91350100M000100Y44"));
        assert!(!is_credit_code("91350100M000100Y4"));
        assert!(!is_credit_code("91350100M000100I43"));
    }

    #[test]
    fn statements_are_read_with_their_banks_column_names() {
        let csv = "\u{feff}交易日期,交易流水号,对方户名,对方账号,贷方金额,摘要\n\
                   2026-12-01,B001,星河科技,6222020200112233445,\"12,345.67\",房租 202611-e1-1\n\
                   20261202,B002,Acme,,100,\n";
        let rows = read_statement(csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].amount_fen, 1_234_567);
        assert_eq!(rows[0].account_tail, "3445");
        assert_eq!(rows[1].day, parse_date("2026-12-02").unwrap());
        let bad = read_statement("date,reference,payer,amount\n2026-13-01,B1,x,1\n2026-12-01,B2,x,1.234\n2026-12-01,B3,x,1\n2026-12-02,B3,x,2\n").unwrap_err();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].starts_with("row 2, date"), "{bad:?}");
        assert!(bad[1].starts_with("row 3, amount"), "{bad:?}");
        assert!(bad[2].starts_with("row 5, reference"), "{bad:?}");
        let missing = read_statement("date,payer\n").unwrap_err();
        assert!(missing[0].contains("reference"), "{missing:?}");
    }

    #[test]
    fn the_providers_time_gives_its_day() {
        assert_eq!(provider_day("20261208093015"), parse_date("2026-12-08"));
        assert_eq!(provider_day("2026120809301"), None);
        assert_eq!(provider_day("20261308093015"), None);
    }
}
