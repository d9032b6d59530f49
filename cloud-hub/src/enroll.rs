//! Enrollment and revocation: one-time tokens (stored hashed, with an expiry), the hub's
//! [`Enroller`] that redeems them and issues edge certificates, and revoking an edge's
//! certificate.
//!
//! Tokens are printed once and never stored or logged in clear. These functions are used
//! both by the running hub and by `smartpark hub enroll|revoke` beside it (SQLite
//! serialises the two).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use park_db::{OptionalExtension, params};
use sync_protocol::transport::{
    EnrollFuture, Enroller, EnrollmentRequest, EnrollmentToken, OperatorCa, Validity, is_valid_id,
};

use crate::metrics::Metrics;
use crate::store::{HubStore, admin_transaction, building_id, now_micros};

/// A token made by [`create_token`].
#[derive(Debug)]
pub struct CreatedToken {
    pub token: EnrollmentToken,
    /// When it stops working, microseconds since the Unix epoch.
    pub expires: i64,
}

/// Makes a one-time token for `park`/`building`, valid for `ttl`, and stores its hash.
pub fn create_token(
    db: &park_db::Target,
    ca: &OperatorCa,
    park: &str,
    building: &str,
    ttl: Duration,
) -> anyhow::Result<CreatedToken> {
    for (what, v) in [("park", park), ("building", building)] {
        anyhow::ensure!(
            is_valid_id(v),
            "{what} {v:?} is not a valid id (letters, digits, '-', '_', '.', at most 64)"
        );
    }
    let token = EnrollmentToken::generate(ca.fingerprint())?;
    let now = now_micros();
    let expires = now + ttl.as_micros() as i64;
    let hash = token.secret_hash();
    admin_transaction(db, |tx| {
        let bid = building_id(tx, park, building)?;
        tx.execute(
            "INSERT INTO tokens (hash, building_id, created, expires) VALUES (?1, ?2, ?3, ?4)",
            params![hash, bid, now, expires],
        )?;
        audit(
            tx,
            "enrollment.token_created",
            &format!("{park}/{building}"),
            serde_json::json!({"token": token_id(&hash), "expires": expires}),
        )?;
        Ok(())
    })
    .context("cannot store the enrollment token")?;
    tracing::info!(
        park,
        building,
        expires_in_s = ttl.as_secs(),
        "Created an enrollment token."
    );
    Ok(CreatedToken { token, expires })
}

/// A token's id in listings: the start of its hash (never the token itself).
pub fn token_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// An act on enrollment, in the hub's audit chain, by whoever runs the command on the host.
fn audit(
    tx: &park_db::Connection<'_>,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let actor = accounts::auth::manage::host_actor(action);
    accounts::Audit::new(&actor, action, target, detail)
        .unmirrored()
        .append(tx)?;
    Ok(())
}

/// One enrollment token as listed: never the token, only its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub park: String,
    pub building: String,
    pub created: i64,
    pub expires: i64,
    /// `waiting`, `used` (with the serial it got) or `expired`.
    pub state: String,
}

/// Every enrollment token the hub knows, newest first.
pub fn list_tokens(db: &park_db::Target) -> anyhow::Result<Vec<TokenInfo>> {
    let handle = crate::store::open_db(db)?;
    let c = handle.conn();
    let mut stmt = c.prepare(
        "SELECT t.hash, b.park, b.building, t.created, t.expires, t.used_at, t.used_by_serial
         FROM tokens t JOIN buildings b ON b.id = t.building_id ORDER BY t.created DESC",
    )?;
    let now = now_micros();
    let rows = stmt.query_map([], |r| {
        let hash: String = r.get(0)?;
        let expires: i64 = r.get(4)?;
        let used: Option<i64> = r.get(5)?;
        let serial: Option<String> = r.get(6)?;
        Ok(TokenInfo {
            id: token_id(&hash),
            park: r.get(1)?,
            building: r.get(2)?,
            created: r.get(3)?,
            expires,
            state: match (used, serial) {
                (Some(_), Some(s)) => format!("used by {s}"),
                (Some(_), None) => "used".into(),
                _ if expires <= now => "expired".into(),
                _ => "waiting".into(),
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Cancels the unused token whose id (or the start of it, at least 6 characters) is `id`:
/// it can no longer enroll anything.
pub fn cancel_token(db: &park_db::Target, id: &str) -> anyhow::Result<TokenInfo> {
    anyhow::ensure!(
        id.len() >= 6 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a token id is at least 6 hexadecimal digits, as `smartpark hub tokens` lists them"
    );
    let id = id.to_ascii_lowercase();
    let matching: Vec<TokenInfo> = list_tokens(db)?
        .into_iter()
        .filter(|t| t.id.starts_with(&id))
        .collect();
    let token = match &matching[..] {
        [] => anyhow::bail!("no enrollment token has the id {id}"),
        [one] => one.clone(),
        _ => anyhow::bail!(
            "{} tokens start with {id}; give more of the id",
            matching.len()
        ),
    };
    anyhow::ensure!(
        token.state == "waiting" || token.state == "expired",
        "token {} was {} and cannot be cancelled; revoke the certificate instead",
        token.id,
        token.state
    );
    admin_transaction(db, |tx| {
        tx.execute(
            "DELETE FROM tokens WHERE substr(hash, 1, 12) = ?1 AND used_at IS NULL",
            [&token.id],
        )?;
        audit(
            tx,
            "enrollment.token_cancelled",
            &format!("{}/{}", token.park, token.building),
            serde_json::json!({"token": token.id}),
        )
    })?;
    Ok(token)
}

/// Revokes certificates: the one with `serial`, or (with `None`) the current one of
/// `park`/`building`. Returns the serials revoked. A running hub refuses them at the next
/// handshake and closes their live connections within a few seconds.
pub fn revoke(
    db: &park_db::Target,
    serial: Option<&str>,
    building: Option<(&str, &str)>,
    reason: &str,
) -> anyhow::Result<Vec<String>> {
    admin_transaction(db, |tx| {
        let serials: Vec<String> = match (serial, building) {
            (Some(s), _) => vec![s.to_ascii_lowercase()],
            (None, Some((park, building))) => {
                let mut stmt = tx.prepare(
                    "SELECT c.serial FROM certificates c JOIN buildings b ON b.id = c.building_id
                     WHERE b.park = ?1 AND b.building = ?2",
                )?;
                let rows = stmt.query_map(params![park, building], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            }
            (None, None) => {
                anyhow::bail!("say which certificate: a serial, or a park and building")
            }
        };
        anyhow::ensure!(
            !serials.is_empty(),
            "no certificate was ever issued to that building"
        );
        for s in &serials {
            tx.execute(
                "INSERT INTO revocations (serial, revoked_at, reason) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![s, now_micros(), reason],
            )?;
        }
        audit(
            tx,
            "certificate.revoked",
            &building.map_or_else(String::new, |(p, b)| format!("{p}/{b}")),
            serde_json::json!({"serials": serials, "reason": reason}),
        )?;
        Ok(serials)
    })
}

/// Every revoked serial.
pub fn revoked_serials(c: &park_db::Connection) -> park_db::Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT serial FROM revocations")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The hub's enrollment decisions, against its database.
pub struct HubEnroller {
    pub(crate) store: HubStore,
    pub(crate) ca: Arc<OperatorCa>,
    pub(crate) edge_cert_days: u32,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why a token was not redeemed. The texts go to the edge: they say what happened without
/// echoing the token.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("this enrollment token was already used")]
    Used,
    #[error("this enrollment token has expired")]
    Expired,
    #[error("the hub could not enroll this edge: {0}")]
    Internal(String),
}

impl Enroller for HubEnroller {
    fn enroll(&self, request: EnrollmentRequest) -> EnrollFuture<'_> {
        Box::pin(async move {
            let ca = self.ca.clone();
            let days = self.edge_cert_days;
            let hash = request.token.secret_hash();
            let result = self
                .store
                .admin(move |tx| {
                    let row: Option<(i64, String, String, i64, Option<i64>)> = tx
                        .query_row(
                            "SELECT t.building_id, b.park, b.building, t.expires, t.used_at
                             FROM tokens t JOIN buildings b ON b.id = t.building_id WHERE t.hash = ?1",
                            [&hash],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                        )
                        .optional()?;
                    let now = now_micros();
                    let (bid, park, building) = match row {
                        None => return Ok(Err(Refusal::Unknown)),
                        Some((_, _, _, _, Some(_))) => return Ok(Err(Refusal::Used)),
                        Some((_, _, _, expires, None)) if expires <= now => {
                            return Ok(Err(Refusal::Expired));
                        }
                        Some((bid, park, building, _, None)) => (bid, park, building),
                    };
                    let issued = match ca.issue_for_enrollment(
                        &request,
                        &park,
                        &building,
                        Validity::days_from_now(days),
                    ) {
                        Ok(i) => i,
                        Err(e) => return Ok(Err(Refusal::Internal(e.to_string()))),
                    };
                    let serial = &issued.identity.serial;
                    let not_after = issued.identity.not_after.saturating_mul(1_000_000);
                    tx.execute(
                        "UPDATE tokens SET used_at = ?2, used_by_serial = ?3 WHERE hash = ?1",
                        params![hash, now, serial],
                    )?;
                    tx.execute(
                        "INSERT INTO certificates (serial, building_id, issued_at, not_after) VALUES (?1, ?2, ?3, ?4)",
                        params![serial, bid, now, not_after],
                    )?;
                    tx.execute(
                        "UPDATE edges SET serial = ?2, enrolled_at = ?3, cert_not_after = ?4 WHERE building_id = ?1",
                        params![bid, serial, now, not_after],
                    )?;
                    // Enrolling a building again ends its earlier certificates: a lost or
                    // stolen edge is replaced by enrolling the new one.
                    let replaced = tx.execute(
                        "INSERT INTO revocations (serial, revoked_at, reason)
                         SELECT serial, ?2, 'replaced by a new enrollment of the building'
                         FROM certificates WHERE building_id = ?1 AND serial != ?3
                         ON CONFLICT DO NOTHING",
                        params![bid, now, serial],
                    )?;
                    accounts::Audit::new(
                        &accounts::audit::Actor::system("enrollment"),
                        "edge.enrolled",
                        &format!("{park}/{building}"),
                        serde_json::json!({"serial": serial, "token": token_id(&hash), "revoked": replaced}),
                    )
                    .unmirrored()
                    .append(tx)?;
                    Ok(Ok(issued))
                })
                .await;
            let outcome = match result {
                Ok(Ok(issued)) => Ok(issued),
                Ok(Err(refusal)) => Err(refusal.to_string()),
                Err(e) => Err(Refusal::Internal(format!("{e:#}")).to_string()),
            };
            match &outcome {
                Ok(_) => Metrics::add(&self.metrics.enrollments_total, 1),
                Err(_) => Metrics::add(&self.metrics.enrollments_refused_total, 1),
            }
            outcome
        })
    }
}
