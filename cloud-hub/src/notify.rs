//! Notifications to enterprises: a bill issued, a payment received, a bill overdue, a
//! contract about to end. Each is written to the **outbox** in the same transaction as the
//! act it tells of (or by the daily scan for overdue bills and ending contracts), once per
//! event and recipient (the table is unique on them), rendered in the recipient's language
//! (zh-CN or en). A sender drains the outbox through a [`Channel`]: email over SMTP, or
//! printing what it would send (the demo). A message that cannot be sent is tried again
//! later, at growing intervals, and marked failed after [`MAX_ATTEMPTS`]; with several
//! hubs on one database only the one holding the job's lease sends.
//!
//! Recipients are each enterprise's notification contacts, kept by its admin (or finance).

use std::sync::Arc;
use std::time::Duration;

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use park_db::{Connection, params};
use park_model::billing::money::yuan;
use park_model::identity::Access;
use park_model::identity::Permission::{BillingManage, EnterpriseBilling, EnterpriseRead};
use park_model::identity::secret::sha256_hex;
use park_model::time::{LocalTime, format_date};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::leasing::store_error;
use crate::store::{HubStore, now_micros};

/// A message is given up after this many failed tries.
pub const MAX_ATTEMPTS: i64 = 10;

/// Contacts and the outbox (migration 14).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notification_contacts (
    park TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    email TEXT NOT NULL,
    locale TEXT NOT NULL,
    updated INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, enterprise_id, email)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    email TEXT NOT NULL,
    locale TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    next_try INTEGER NOT NULL,
    created INTEGER NOT NULL,
    sent INTEGER,
    PRIMARY KEY (park, id),
    UNIQUE (park, kind, reference, email)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_try);
";

/// The same tables on PostgreSQL.
pub const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notification_contacts (
    park TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    email TEXT NOT NULL,
    locale TEXT NOT NULL,
    updated BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (park, enterprise_id, email)
);
CREATE TABLE IF NOT EXISTS notifications (
    park TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    enterprise_id TEXT NOT NULL,
    email TEXT NOT NULL,
    locale TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    next_try BIGINT NOT NULL,
    created BIGINT NOT NULL,
    sent BIGINT,
    PRIMARY KEY (park, id),
    UNIQUE (park, kind, reference, email)
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_try);
";

/// What happened, with what the message says.
#[derive(Debug, Clone)]
pub enum Event {
    BillIssued {
        bill: String,
        month: String,
        total_fen: i64,
        due: String,
    },
    PaymentReceived {
        bill: String,
        payment: String,
        amount_fen: i64,
        date: String,
        owed_fen: i64,
    },
    BillOverdue {
        bill: String,
        owed_fen: i64,
        due: String,
    },
    ContractEnding {
        contract: String,
        end: String,
        days_left: i32,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::BillIssued { .. } => "bill_issued",
            Event::PaymentReceived { .. } => "payment_received",
            Event::BillOverdue { .. } => "bill_overdue",
            Event::ContractEnding { .. } => "contract_ending",
        }
    }

    /// What makes the event one: a bill is issued once, a payment received once, a bill
    /// told overdue once, a contract's end told once per end date.
    fn reference(&self) -> String {
        match self {
            Event::BillIssued { bill, .. } | Event::BillOverdue { bill, .. } => bill.clone(),
            Event::PaymentReceived { payment, .. } => payment.clone(),
            Event::ContractEnding { contract, end, .. } => format!("{contract}@{end}"),
        }
    }

    /// The subject and text in `locale` (`zh-CN`, or `en`).
    pub fn render(&self, locale: &str) -> (String, String) {
        let en = locale == "en";
        match self {
            Event::BillIssued {
                bill,
                month,
                total_fen,
                due,
            } => {
                if en {
                    (
                        format!("Bill {bill} for {month}: CNY {}", yuan(*total_fen)),
                        format!(
                            "Your bill {bill} for {month} has been issued.\n\nAmount: CNY {}\nDue: {due}\n\nIts lines and where each comes from are on the park's portal; please write the bill number with your transfer.\n",
                            yuan(*total_fen)
                        ),
                    )
                } else {
                    (
                        format!("{month} 账单 {bill}：{} 元", yuan(*total_fen)),
                        format!(
                            "贵司 {month} 的账单 {bill} 已开出。\n\n金额：{} 元\n付款期限：{due}\n\n账单明细及每项费用的来源请在园区企业门户查看；转账时请在附言中注明账单号。\n",
                            yuan(*total_fen)
                        ),
                    )
                }
            }
            Event::PaymentReceived {
                bill,
                amount_fen,
                date,
                owed_fen,
                ..
            } => {
                if en {
                    (
                        format!(
                            "Payment of CNY {} received for bill {bill}",
                            yuan(*amount_fen)
                        ),
                        format!(
                            "We received CNY {} on {date} for bill {bill}.\nStill owed on the bill: CNY {}.\n",
                            yuan(*amount_fen),
                            yuan(*owed_fen)
                        ),
                    )
                } else {
                    (
                        format!("已收到账单 {bill} 的付款 {} 元", yuan(*amount_fen)),
                        format!(
                            "我们已于 {date} 收到账单 {bill} 的付款 {} 元。\n该账单尚欠：{} 元。\n",
                            yuan(*amount_fen),
                            yuan(*owed_fen)
                        ),
                    )
                }
            }
            Event::BillOverdue {
                bill,
                owed_fen,
                due,
            } => {
                if en {
                    (
                        format!("Bill {bill} is overdue: CNY {} owed", yuan(*owed_fen)),
                        format!(
                            "Bill {bill} was due on {due} and CNY {} is still owed. Late fees follow your contract's terms from the end of its grace days.\n",
                            yuan(*owed_fen)
                        ),
                    )
                } else {
                    (
                        format!("账单 {bill} 已逾期，尚欠 {} 元", yuan(*owed_fen)),
                        format!(
                            "账单 {bill} 的付款期限为 {due}，目前尚欠 {} 元。宽限期满后将按合同约定计收滞纳金。\n",
                            yuan(*owed_fen)
                        ),
                    )
                }
            }
            Event::ContractEnding {
                contract,
                end,
                days_left,
            } => {
                if en {
                    (
                        format!("Contract {contract} ends on {end}"),
                        format!(
                            "Your lease contract {contract} ends on {end}, in {days_left} days. Please contact the park's leasing office about renewing it or moving out.\n"
                        ),
                    )
                } else {
                    (
                        format!("租赁合同 {contract} 将于 {end} 到期"),
                        format!(
                            "贵司的租赁合同 {contract} 将于 {end} 到期（还有 {days_left} 天）。如需续租或办理退租，请联系园区招商部。\n"
                        ),
                    )
                }
            }
        }
    }
}

/// Writes the event's messages to the outbox, one per contact of the enterprise, in the
/// caller's transaction; the number new (an event already told adds nothing).
pub fn enqueue(
    tx: &Connection,
    park: &str,
    enterprise: &str,
    event: &Event,
) -> park_db::Result<usize> {
    let contacts: Vec<(String, String)> = tx.query_all(
        "SELECT email, locale FROM notification_contacts WHERE park = ?1 AND enterprise_id = ?2 ORDER BY email",
        params![park, enterprise],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (kind, reference) = (event.kind(), event.reference());
    let now = now_micros();
    let mut added = 0;
    for (email, locale) in contacts {
        let (subject, body) = event.render(&locale);
        let id = sha256_hex(format!("{kind}\0{reference}\0{email}").as_bytes())[..32].to_string();
        added += tx.execute(
            "INSERT INTO notifications (park, id, kind, reference, enterprise_id, email, locale, subject, body, state, attempts, last_error, next_try, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', 0, '', ?10, ?10)
             ON CONFLICT DO NOTHING",
            params![park, id, kind, reference, enterprise, email, locale, subject, body, now],
        )?;
    }
    Ok(added)
}

/// Overdue bills and contracts ending within 30 days in `park` on `today`, told once.
pub fn scan(tx: &Connection, park: &str, today: i32) -> anyhow::Result<usize> {
    let mut added = 0;
    let overdue: Vec<(String, String, i64, i64)> = tx.query_all(
        "SELECT id, enterprise_id, total_fen - paid_fen, due_day FROM bills
         WHERE park = ?1 AND state IN ('issued', 'partly_paid') AND due_day < ?2 AND total_fen > paid_fen",
        params![park, today],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (bill, enterprise, owed, due) in overdue {
        added += enqueue(
            tx,
            park,
            &enterprise,
            &Event::BillOverdue {
                bill,
                owed_fen: owed,
                due: format_date(due as i32),
            },
        )?;
    }
    let active: Vec<(String, String, String)> = tx.query_all(
        "SELECT id, enterprise_id, terms FROM contracts WHERE park = ?1 AND state = 'active'",
        params![park],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (contract, enterprise, terms) in active {
        let terms: park_model::billing::contract::Terms = serde_json::from_str(&terms)?;
        let last = terms.term.to - 1;
        let left = last - today;
        if (0..=30).contains(&left) {
            added += enqueue(
                tx,
                park,
                &enterprise,
                &Event::ContractEnding {
                    contract,
                    end: format_date(last),
                    days_left: left,
                },
            )?;
        }
    }
    Ok(added)
}

// ---------------------------------------------------------------------------------------
// Sending.

/// How messages leave the hub (`[notifications]` in its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSettings {
    /// Print what would be sent (the demo).
    Print,
    Smtp {
        host: String,
        port: u16,
        /// `implicit` (SMTPS), `starttls`, or `none` (a relay on the host itself only).
        tls: String,
        username: Option<String>,
        password_file: Option<std::path::PathBuf>,
        from: String,
    },
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Where messages go.
pub trait Channel: Send + Sync {
    fn send(&self, m: &Outgoing) -> Result<(), String>;
}

/// Prints each message instead of sending it.
pub struct PrintChannel;

impl Channel for PrintChannel {
    fn send(&self, m: &Outgoing) -> Result<(), String> {
        println!(
            "notification (not sent) to {}\n  subject: {}\n  {}",
            m.to,
            m.subject,
            m.body.trim_end().replace('\n', "\n  ")
        );
        Ok(())
    }
}

/// Email through an SMTP server.
pub struct SmtpChannel {
    transport: lettre::SmtpTransport,
    from: lettre::message::Mailbox,
}

impl SmtpChannel {
    pub fn new(s: &ChannelSettings) -> anyhow::Result<SmtpChannel> {
        use anyhow::Context;
        let ChannelSettings::Smtp {
            host,
            port,
            tls,
            username,
            password_file,
            from,
        } = s
        else {
            anyhow::bail!("not an SMTP channel");
        };
        let mut b = match tls.as_str() {
            "implicit" => lettre::SmtpTransport::relay(host)?,
            "starttls" => lettre::SmtpTransport::starttls_relay(host)?,
            _ => lettre::SmtpTransport::builder_dangerous(host),
        }
        .port(*port)
        .timeout(Some(Duration::from_secs(20)));
        if let Some(user) = username {
            let file = password_file
                .as_ref()
                .context("notifications.password_file is needed with a username")?;
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.trim().to_string(),
            ));
        }
        Ok(SmtpChannel {
            transport: b.build(),
            from: from
                .parse()
                .with_context(|| format!("notifications.from {from:?} is not an address"))?,
        })
    }
}

impl Channel for SmtpChannel {
    fn send(&self, m: &Outgoing) -> Result<(), String> {
        use lettre::Transport;
        let to: lettre::message::Mailbox =
            m.to.parse()
                .map_err(|e| format!("{:?} is not an address: {e}", m.to))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(m.body.clone())
            .map_err(|e| e.to_string())?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Builds the configured channel.
pub fn channel(s: &ChannelSettings) -> anyhow::Result<Arc<dyn Channel>> {
    Ok(match s {
        ChannelSettings::Print => Arc::new(PrintChannel),
        smtp => Arc::new(SmtpChannel::new(smtp)?),
    })
}

/// One round of the sender: the daily scan of every park, then the messages due, sent;
/// the number sent.
pub async fn send_due(
    store: &HubStore,
    channel: Arc<dyn Channel>,
    parks: Vec<(String, i32)>,
) -> anyhow::Result<usize> {
    for (park, offset) in parks {
        let today = LocalTime::at(now_micros(), offset).day;
        store.admin(move |tx| scan(tx, &park, today)).await?;
    }
    let due: Vec<(String, String, String, String, String, i64)> = store
        .read(|c| {
            c.query_all(
                "SELECT park, id, email, subject, body, attempts FROM notifications
                 WHERE state = 'queued' AND next_try <= ?1 ORDER BY next_try, id LIMIT 100",
                params![now_micros()],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
        })
        .await?;
    let mut sent = 0;
    for (park, id, to, subject, body, attempts) in due {
        let ch = channel.clone();
        let outcome = tokio::task::spawn_blocking(move || ch.send(&Outgoing { to, subject, body }))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let now = now_micros();
        match outcome {
            Ok(()) => {
                sent += 1;
                store
                    .admin(move |tx| {
                        tx.execute(
                            "UPDATE notifications SET state = 'sent', attempts = attempts + 1, last_error = '', sent = ?3 WHERE park = ?1 AND id = ?2",
                            params![park, id, now],
                        )?;
                        Ok(())
                    })
                    .await?;
            }
            Err(e) => {
                tracing::warn!(%park, %id, error = %e, "A notification could not be sent; it is tried again later.");
                let attempts = attempts + 1;
                let state = if attempts >= MAX_ATTEMPTS {
                    "failed"
                } else {
                    "queued"
                };
                // 1, 2, 4 … minutes, at most six hours.
                let wait = (60_000_000i64 << attempts.min(9)).min(6 * 3600 * 1_000_000);
                store
                    .admin(move |tx| {
                        tx.execute(
                            "UPDATE notifications SET state = ?3, attempts = ?4, last_error = ?5, next_try = ?6 WHERE park = ?1 AND id = ?2",
                            params![park, id, state, attempts, e.chars().take(500).collect::<String>(), now + wait],
                        )?;
                        Ok(())
                    })
                    .await?;
            }
        }
    }
    Ok(sent)
}

// ---------------------------------------------------------------------------------------
// Routes.

/// The routes of contacts and the outbox.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/notification-contacts",
        Allowed(EnterpriseRead),
        get_contacts,
    )
    .doc(
        doc(
            "notifications",
            "Who an enterprise's bills and notices are sent to",
        )
        .returns::<ContactList>(),
    )
    .put(
        "/api/v1/parks/{park}/enterprises/{enterprise}/notification-contacts",
        Allowed(EnterpriseBilling),
        put_contacts,
    )
    .doc(
        doc(
            "notifications",
            "Replace an enterprise's notification contacts",
        )
        .body::<ContactList>()
        .returns::<ContactList>(),
    )
    .get(
        "/api/v1/parks/{park}/notifications",
        Allowed(BillingManage),
        list_notifications,
    )
    .doc(
        doc(
            "notifications",
            "The outbox: messages queued, sent or failed, newest first",
        )
        .query::<NotificationQuery>()
        .returns::<NotificationPage>(),
    )
}

fn locales() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["zh-CN", "en"])
}

fn notification_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["queued", "sent", "failed"])
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(schema_with = locales)]
    pub locale: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactList {
    #[schema(max_items = 20)]
    pub contacts: Vec<Contact>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    #[param(schema_with = notification_states)]
    state: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    pub kind: String,
    pub reference: String,
    pub enterprise_id: String,
    pub email: String,
    pub locale: String,
    pub subject: String,
    pub body: String,
    #[schema(schema_with = notification_states)]
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub notifications: Vec<NotificationView>,
}

/// An address as mail servers take it: one `@`, no spaces or angle brackets.
fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    (3..=254).contains(&e.len())
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e
            .chars()
            .any(|c| c.is_whitespace() || "<>,;\"'()[]\\".contains(c))
        && e.matches('@').count() == 1
}

async fn contacts(s: &ApiState, park: String, enterprise: String) -> ApiResult<Json<ContactList>> {
    let contacts = s
        .store
        .read(move |c| {
            c.query_all(
                "SELECT email, locale FROM notification_contacts WHERE park = ?1 AND enterprise_id = ?2 ORDER BY email",
                params![park, enterprise],
                |r| Ok(Contact { email: r.get(0)?, locale: r.get(1)? }),
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ContactList { contacts }))
}

async fn get_contacts(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
) -> ApiResult<Json<ContactList>> {
    contacts(&s, park, enterprise).await
}

async fn put_contacts(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, enterprise)): Path<(String, String)>,
    body: Result<Json<ContactList>, JsonRejection>,
) -> ApiResult<Json<ContactList>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "notification_contacts_put",
        &format!("{park}/enterprise/{enterprise}"),
        json!({"contacts": b.contacts.len()}),
    );
    let result = async {
        if b.contacts.len() > 20 {
            return Err(ApiError::invalid("contacts: at most 20"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in b.contacts.iter().enumerate() {
            if !valid_email(c.email.trim()) {
                return Err(ApiError::invalid(format!("contacts[{i}].email: {:?} is not an email address", c.email)));
            }
            if !["zh-CN", "en"].contains(&c.locale.as_str()) {
                return Err(ApiError::invalid(format!("contacts[{i}].locale: {:?} is not zh-CN or en", c.locale)));
            }
            if !seen.insert(c.email.trim().to_lowercase()) {
                return Err(ApiError::invalid(format!("contacts[{i}].email: {} is given twice", c.email)));
            }
        }
        let (p2, e2, by, a2) = (park.clone(), enterprise.clone(), caller.principal.username.clone(), audit.clone());
        let list: Vec<(String, String)> = b.contacts.iter().map(|c| (c.email.trim().to_string(), c.locale.clone())).collect();
        s.store
            .admin(move |tx| {
                tx.execute(
                    "DELETE FROM notification_contacts WHERE park = ?1 AND enterprise_id = ?2",
                    params![p2, e2],
                )?;
                let now = now_micros();
                for (email, locale) in &list {
                    tx.execute(
                        "INSERT INTO notification_contacts (park, enterprise_id, email, locale, updated, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![p2, e2, email, locale, now, by],
                    )?;
                }
                a2.append(tx)?;
                Ok(())
            })
            .await
            .map_err(store_error)
    }
    .await;
    audit_outcome(&s.auth, audit, result).await?;
    contacts(&s, park, enterprise).await
}

async fn list_notifications(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<NotificationQuery>, QueryRejection>,
) -> ApiResult<Json<NotificationPage>> {
    let Query(q) = q?;
    if let Some(st) = &q.state
        && !["queued", "sent", "failed"].contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state: {st:?} is not queued, sent or failed"
        )));
    }
    let notifications = s
        .store
        .read(move |c| {
            c.query_all(
                "SELECT id, kind, reference, enterprise_id, email, locale, subject, body, state, attempts, last_error, created, sent
                 FROM notifications WHERE park = ?1 AND (state = ?2 OR ?3 = 1) ORDER BY created DESC, id LIMIT 500",
                params![park, q.state.clone().unwrap_or_default(), i64::from(q.state.is_none())],
                |r| {
                    Ok(NotificationView {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        reference: r.get(2)?,
                        enterprise_id: r.get(3)?,
                        email: r.get(4)?,
                        locale: r.get(5)?,
                        subject: r.get(6)?,
                        body: r.get(7)?,
                        state: r.get(8)?,
                        attempts: r.get(9)?,
                        last_error: r.get(10)?,
                        created_at: r.get(11)?,
                        sent_at: r.get(12)?,
                    })
                },
            )
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(NotificationPage { notifications }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_in_both_languages() {
        let events = [
            Event::BillIssued {
                bill: "202611-e1-1".into(),
                month: "2026-11".into(),
                total_fen: 1_234_567,
                due: "2026-11-20".into(),
            },
            Event::PaymentReceived {
                bill: "202611-e1-1".into(),
                payment: "p1".into(),
                amount_fen: 100_000,
                date: "2026-11-18".into(),
                owed_fen: 1_134_567,
            },
            Event::BillOverdue {
                bill: "202611-e1-1".into(),
                owed_fen: 5,
                due: "2026-11-20".into(),
            },
            Event::ContractEnding {
                contract: "k1".into(),
                end: "2026-12-31".into(),
                days_left: 23,
            },
        ];
        for e in &events {
            let (zh_s, zh_b) = e.render("zh-CN");
            let (en_s, en_b) = e.render("en");
            assert!(
                zh_s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "{zh_s}"
            );
            assert!(en_s.is_ascii() && en_b.is_ascii(), "{en_s} {en_b}");
            assert_ne!(zh_b, en_b);
        }
        assert!(events[0].render("zh-CN").0.contains("12345.67"));
        assert!(events[3].render("en").1.contains("23 days"));
    }

    #[test]
    fn addresses_are_checked() {
        for ok in ["finance@acme.example.com", "a.b+bills@x.cn"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a@b",
            "no-at.example.com",
            "a@@b.cn",
            "a b@c.cn",
            "<a@b.cn>",
            "a@.cn",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
