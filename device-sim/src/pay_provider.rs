//! A simulated online payment provider that speaks WeChat Pay's API v2 to its merchant (the
//! hub): `POST /pay/unifiedorder` opens an order and answers a `code_url` for the payer to
//! scan, `POST /pay/orderquery` and `POST /pay/closeorder` as the provider has them, every
//! request and answer signed with the merchant's key ([`park_model::billing::provider`]).
//! When a payer pays (`POST /sim/pay`, the simulator's stand-in for a phone scanning the
//! code) the provider notifies the order's `notify_url` with a signed message and sends it
//! again on its retry schedule until the merchant answers `SUCCESS`, as the real one does;
//! so a merchant sees the same notification more than once, and notifications of different
//! orders in any order.
//!
//! `GET /sim/orders` lists the orders with their state, for the demo and tests. Nothing
//! here reaches an outside service.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use park_model::billing::provider::{self, Fields, answer, fields, from_xml, signed, to_xml};
use serde::{Deserialize, Serialize};

/// The merchant as the provider knows it.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub app_id: String,
    pub mch_id: String,
    /// The API key both sides sign with.
    pub key: String,
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Notpay,
    Success,
    Closed,
}

impl TradeState {
    fn as_str(self) -> &'static str {
        match self {
            TradeState::Notpay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Closed => "CLOSED",
        }
    }
}

/// An order at the provider.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub out_trade_no: String,
    pub total_fee: i64,
    pub body: String,
    pub notify_url: String,
    pub state: TradeState,
    pub transaction_id: Option<String>,
    /// `yyyyMMddHHmmss`, China time.
    pub time_end: Option<String>,
    /// Notifications sent, and whether the merchant has answered `SUCCESS`.
    pub notifications_sent: u32,
    pub acknowledged: bool,
}

struct Inner {
    merchant: Merchant,
    orders: BTreeMap<String, Order>,
    next_transaction: u64,
    /// Whether paying sends the notification (tests turn it off to deliver notifications
    /// themselves, in the order they choose).
    notifying: bool,
}

/// The provider: its state and its retry schedule.
#[derive(Clone)]
pub struct PayProviderSim {
    inner: Arc<Mutex<Inner>>,
    /// The waits before each notification after the first; WeChat Pay's own is 15 s, 15 s,
    /// 30 s, 3 min, 10 min, 20 min, 30 min, 30 min, 30 min, 60 min, 3 h, 3 h, 3 h, 6 h, 6 h.
    retries: Arc<Vec<Duration>>,
}

/// WeChat Pay's retry schedule for notifications.
pub fn provider_retries() -> Vec<Duration> {
    [
        15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

/// The time as the provider writes it: `yyyyMMddHHmmss` in China time (UTC+8).
fn china_time_now() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let t = park_model::time::LocalTime::at(micros, 8 * 60);
    let (y, m, d) = park_model::time::civil_date(t.day);
    let secs = (micros.rem_euclid(60_000_000)) / 1_000_000;
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{secs:02}",
        t.minute_of_day / 60,
        t.minute_of_day % 60
    )
}

fn nonce() -> String {
    (0..32)
        .map(|_| {
            let c = fastrand::u8(0..36);
            if c < 10 {
                (b'0' + c) as char
            } else {
                (b'A' + c - 10) as char
            }
        })
        .collect()
}

/// The notification the provider sends for a paid order, signed under the merchant's key.
pub fn notification(merchant: &Merchant, order: &Order) -> Fields {
    signed(
        fields([
            ("return_code", "SUCCESS".into()),
            ("appid", merchant.app_id.clone()),
            ("mch_id", merchant.mch_id.clone()),
            ("nonce_str", nonce()),
            ("result_code", "SUCCESS".into()),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            ("trade_type", "NATIVE".into()),
            ("bank_type", "CMC".into()),
            ("fee_type", "CNY".into()),
            ("total_fee", order.total_fee.to_string()),
            ("cash_fee", order.total_fee.to_string()),
            (
                "transaction_id",
                order.transaction_id.clone().unwrap_or_default(),
            ),
            ("out_trade_no", order.out_trade_no.clone()),
            ("time_end", order.time_end.clone().unwrap_or_default()),
        ]),
        &merchant.key,
    )
}

/// Sends one notification; whether the merchant answered `SUCCESS`.
pub fn deliver(url: &str, message: &Fields) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let sent = agent
        .post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .send(to_xml(message));
    match sent {
        Ok(mut response) => response
            .body_mut()
            .read_to_string()
            .ok()
            .and_then(|text| from_xml(&text).ok())
            .is_some_and(|f| f.get("return_code").map(String::as_str) == Some("SUCCESS")),
        Err(_) => false,
    }
}

impl PayProviderSim {
    pub fn new(merchant: Merchant, retries: Vec<Duration>) -> PayProviderSim {
        PayProviderSim {
            inner: Arc::new(Mutex::new(Inner {
                merchant,
                orders: BTreeMap::new(),
                next_transaction: 1,
                notifying: true,
            })),
            retries: Arc::new(retries),
        }
    }

    pub fn merchant(&self) -> Merchant {
        self.lock().merchant.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops (or resumes) sending notifications when orders are paid.
    pub fn set_notifying(&self, on: bool) {
        self.lock().notifying = on;
    }

    /// The notification of a paid order, as the provider would send it now.
    pub fn notification_of(&self, out_trade_no: &str) -> Option<Fields> {
        let inner = self.lock();
        let order = inner.orders.get(out_trade_no)?;
        (order.state == TradeState::Success).then(|| notification(&inner.merchant, order))
    }

    /// The orders, by the merchant's order number.
    pub fn orders(&self) -> Vec<Order> {
        self.lock().orders.values().cloned().collect()
    }

    /// The payer pays an open order: it becomes `SUCCESS` and its notification starts on
    /// its way (on the caller's runtime). Paying a paid order changes nothing.
    pub fn pay(&self, out_trade_no: &str) -> Result<Order, String> {
        let (order, notifying) = {
            let mut inner = self.lock();
            let n = inner.next_transaction;
            let order = inner
                .orders
                .get_mut(out_trade_no)
                .ok_or_else(|| format!("no order {out_trade_no}"))?;
            match order.state {
                TradeState::Success => return Ok(order.clone()),
                TradeState::Closed => return Err(format!("order {out_trade_no} is closed")),
                TradeState::Notpay => {}
            }
            order.state = TradeState::Success;
            order.transaction_id = Some(format!("42000{n:023}"));
            order.time_end = Some(china_time_now());
            let order = order.clone();
            inner.next_transaction += 1;
            (order, inner.notifying)
        };
        if !notifying {
            return Ok(order);
        }
        let sim = self.clone();
        let number = order.out_trade_no.clone();
        tokio::spawn(async move { sim.notify_until_acknowledged(&number).await });
        Ok(order)
    }

    /// Sends an order's notification now and again on the retry schedule until the
    /// merchant acknowledges it.
    async fn notify_until_acknowledged(&self, out_trade_no: &str) {
        let waits = std::iter::once(Duration::ZERO).chain(self.retries.iter().copied());
        for wait in waits {
            tokio::time::sleep(wait).await;
            let (url, message) = {
                let inner = self.lock();
                let Some(order) = inner.orders.get(out_trade_no) else {
                    return;
                };
                (
                    order.notify_url.clone(),
                    notification(&inner.merchant, order),
                )
            };
            let acknowledged = tokio::task::spawn_blocking(move || deliver(&url, &message))
                .await
                .unwrap_or(false);
            let mut inner = self.lock();
            if let Some(order) = inner.orders.get_mut(out_trade_no) {
                order.notifications_sent += 1;
                order.acknowledged |= acknowledged;
            }
            if acknowledged {
                return;
            }
        }
        tracing::warn!(
            out_trade_no,
            "The merchant never acknowledged the notification."
        );
    }

    /// The provider's HTTP API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/pay/unifiedorder", post(unified_order))
            .route("/pay/orderquery", post(order_query))
            .route("/pay/closeorder", post(close_order))
            .route("/sim/pay", post(sim_pay))
            .route("/sim/orders", get(sim_orders))
            .with_state(self.clone())
    }

    /// Serves the provider on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// A signed answer: `return_code` SUCCESS and the business result.
    fn reply(&self, result: Result<Fields, (&str, String)>) -> (StatusCode, String) {
        let inner = self.lock();
        let mut f = fields([
            ("return_code", "SUCCESS".into()),
            ("return_msg", "OK".into()),
            ("appid", inner.merchant.app_id.clone()),
            ("mch_id", inner.merchant.mch_id.clone()),
            ("nonce_str", nonce()),
        ]);
        match result {
            Ok(more) => {
                f.insert("result_code".into(), "SUCCESS".into());
                f.extend(more);
            }
            Err((code, message)) => {
                f.insert("result_code".into(), "FAIL".into());
                f.insert("err_code".into(), code.into());
                f.insert("err_code_des".into(), message);
            }
        }
        (StatusCode::OK, to_xml(&signed(f, &inner.merchant.key)))
    }

    /// Reads and checks a merchant's request: the protocol's own failures are
    /// `return_code` FAIL, unsigned.
    fn request(&self, body: &str) -> Result<Fields, (StatusCode, String)> {
        let fail = |m: String| (StatusCode::OK, answer(false, &m));
        let f = from_xml(body).map_err(|e| fail(e.to_string()))?;
        let inner = self.lock();
        provider::verify(&f, &inner.merchant.key).map_err(|e| fail(format!("签名错误: {e}")))?;
        if f.get("appid") != Some(&inner.merchant.app_id)
            || f.get("mch_id") != Some(&inner.merchant.mch_id)
        {
            return Err(fail("appid and mch_id do not match".into()));
        }
        Ok(f)
    }
}

fn required<'a>(f: &'a Fields, name: &str) -> Result<&'a str, (&'static str, String)> {
    f.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(("PARAM_ERROR", format!("{name} is missing")))
}

async fn unified_order(
    State(sim): State<PayProviderSim>,
    body: String,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let f = sim.request(&body)?;
    let result = (|| {
        let number = required(&f, "out_trade_no")?.to_string();
        if number.len() > 32
            || !number
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
        {
            return Err((
                "PARAM_ERROR",
                "out_trade_no: at most 32 of [A-Za-z0-9_-|*]".into(),
            ));
        }
        let total_fee: i64 = required(&f, "total_fee")?
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or((
                "PARAM_ERROR",
                "total_fee must be a positive whole number of fen".into(),
            ))?;
        let notify_url = required(&f, "notify_url")?.to_string();
        let body = required(&f, "body")?.to_string();
        if required(&f, "trade_type")? != "NATIVE" {
            return Err(("PARAM_ERROR", "only NATIVE orders are simulated".into()));
        }
        let mut inner = sim.lock();
        if let Some(existing) = inner.orders.get(&number) {
            if existing.state == TradeState::Success {
                return Err(("ORDERPAID", "the order is paid".into()));
            }
            if existing.total_fee != total_fee {
                return Err(("OUT_TRADE_NO_USED", "the order number is used".into()));
            }
        } else {
            inner.orders.insert(
                number.clone(),
                Order {
                    out_trade_no: number.clone(),
                    total_fee,
                    body,
                    notify_url,
                    state: TradeState::Notpay,
                    transaction_id: None,
                    time_end: None,
                    notifications_sent: 0,
                    acknowledged: false,
                },
            );
        }
        Ok(fields([
            ("trade_type", "NATIVE".into()),
            ("prepay_id", format!("wx{}", nonce().to_lowercase())),
            ("code_url", format!("weixin://wxpay/bizpayurl?pr={number}")),
        ]))
    })();
    Ok(sim.reply(result))
}

fn order_fields(o: &Order) -> Fields {
    let mut f = fields([
        ("out_trade_no", o.out_trade_no.clone()),
        ("trade_state", o.state.as_str().into()),
        ("total_fee", o.total_fee.to_string()),
    ]);
    if let Some(t) = &o.transaction_id {
        f.insert("transaction_id".into(), t.clone());
    }
    if let Some(t) = &o.time_end {
        f.insert("time_end".into(), t.clone());
    }
    f
}

async fn order_query(
    State(sim): State<PayProviderSim>,
    body: String,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let f = sim.request(&body)?;
    let result = required(&f, "out_trade_no").and_then(|n| {
        sim.lock()
            .orders
            .get(n)
            .map(order_fields)
            .ok_or(("ORDERNOTEXIST", format!("no order {n}")))
    });
    Ok(sim.reply(result))
}

async fn close_order(
    State(sim): State<PayProviderSim>,
    body: String,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let f = sim.request(&body)?;
    let result = required(&f, "out_trade_no").and_then(|n| {
        let mut inner = sim.lock();
        let order = inner
            .orders
            .get_mut(n)
            .ok_or(("ORDERNOTEXIST", format!("no order {n}")))?;
        match order.state {
            TradeState::Success => Err(("ORDERPAID", "the order is paid".into())),
            _ => {
                order.state = TradeState::Closed;
                Ok(Fields::new())
            }
        }
    });
    Ok(sim.reply(result))
}

#[derive(Deserialize)]
struct PayBody {
    out_trade_no: String,
}

async fn sim_pay(
    State(sim): State<PayProviderSim>,
    Json(b): Json<PayBody>,
) -> Result<Json<Order>, (StatusCode, String)> {
    sim.pay(&b.out_trade_no)
        .map(Json)
        .map_err(|e| (StatusCode::CONFLICT, e))
}

async fn sim_orders(State(sim): State<PayProviderSim>) -> Json<Vec<Order>> {
    Json(sim.orders())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant() -> Merchant {
        Merchant {
            app_id: "wx8888888888888888".into(),
            mch_id: "1900000109".into(),
            key: "192006250b4c09247ec02edce69f6a2d".into(),
        }
    }

    async fn call(url: &str, f: Fields) -> Fields {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || {
            let mut r = ureq::post(&url).send(to_xml(&f)).unwrap();
            from_xml(&r.body_mut().read_to_string().unwrap()).unwrap()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn an_order_is_opened_paid_and_notified_until_acknowledged() {
        let sim = PayProviderSim::new(merchant(), vec![Duration::from_millis(50); 5]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(sim.clone().serve(listener));
        // The merchant: refuses the first two notifications, then acknowledges.
        let seen = Arc::new(Mutex::new(Vec::<Fields>::new()));
        let s2 = seen.clone();
        let merchant_app = Router::new().route(
            "/notify",
            post(move |body: String| {
                let seen = s2.clone();
                async move {
                    let f = from_xml(&body).unwrap();
                    let mut seen = seen.lock().unwrap();
                    seen.push(f);
                    answer(seen.len() > 2, "ok")
                }
            }),
        );
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let notify_url = format!("http://{}/notify", ml.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(ml, merchant_app).await });

        let m = merchant();
        let order = signed(
            fields([
                ("appid", m.app_id.clone()),
                ("mch_id", m.mch_id.clone()),
                ("nonce_str", nonce()),
                ("body", "园区账单".into()),
                ("out_trade_no", "bill-1".into()),
                ("total_fee", "12345".into()),
                ("notify_url", notify_url),
                ("trade_type", "NATIVE".into()),
                ("spbill_create_ip", "127.0.0.1".into()),
            ]),
            &m.key,
        );
        let answer_ = call(&format!("{base}/pay/unifiedorder"), order.clone()).await;
        assert_eq!(answer_["result_code"], "SUCCESS", "{answer_:?}");
        assert!(answer_["code_url"].starts_with("weixin://"));
        provider::verify(&answer_, &m.key).unwrap();
        // A request under another key is refused before anything else.
        let forged = signed(order.clone(), "not-the-key");
        let refused = call(&format!("{base}/pay/unifiedorder"), forged).await;
        assert_eq!(refused["return_code"], "FAIL");

        let paid = sim.pay("bill-1").unwrap();
        assert_eq!(paid.state, TradeState::Success);
        for _ in 0..100 {
            if sim.orders()[0].acknowledged {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let o = &sim.orders()[0];
        assert!(o.acknowledged);
        assert_eq!(o.notifications_sent, 3);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        for n in seen.iter() {
            provider::verify(n, &m.key).unwrap();
            assert_eq!(n["total_fee"], "12345");
            assert_eq!(n["transaction_id"], seen[0]["transaction_id"]);
        }
        // Paying again sends nothing new; a query tells the state.
        sim.pay("bill-1").unwrap();
        let q = signed(
            fields([
                ("appid", m.app_id.clone()),
                ("mch_id", m.mch_id.clone()),
                ("nonce_str", nonce()),
                ("out_trade_no", "bill-1".into()),
            ]),
            &m.key,
        );
        let q = call(&format!("{base}/pay/orderquery"), q).await;
        assert_eq!(q["trade_state"], "SUCCESS");
        assert_eq!(q["transaction_id"], seen[0]["transaction_id"]);
    }

    #[test]
    fn the_time_is_fourteen_digits() {
        let t = china_time_now();
        assert_eq!(t.len(), 14);
        assert!(t.bytes().all(|b| b.is_ascii_digit()));
    }
}
