//! Money in over the hub's real HTTP API: bills paid online through the simulated payment
//! provider of `device-sim` (which signs and notifies as WeChat Pay's API v2 does), with
//! notifications forged, altered, replayed, early and out of order; an order the provider
//! never notified, asked about; a stale code paid after the bill was paid and the excess
//! refunded by a second user; bank statements matched by reference and by payer, the rest
//! assigned or set aside by a person, a statement imported twice; invoice requests; the
//! day's reconciliation and the ageing of arrears; each enterprise seeing only its own.

mod common;

use std::path::Path;
use std::time::Duration;

use cloud_hub::Hub;
use common::account;
use device_sim::pay_provider::{Merchant, PayProviderSim, deliver, notification};
use park_model::ParkDirectory;
use park_model::billing::provider::{self, from_xml, to_xml};
use park_model::directory::{
    Enterprise, EnterpriseKind, EnterpriseStatus, Space, SpaceKind, SpaceState,
};
use park_model::identity::{Grant, Role, Scope};
use serde_json::{Value, json};

const KEY: &str = "a7f3c9e1b2d84f6a9c0e5b7d3f1a2c4e";

fn merchant() -> Merchant {
    Merchant {
        app_id: "wx2421b1c4370ec43b".into(),
        mch_id: "1900000109".into(),
        key: KEY.into(),
    }
}

/// A park `p1` with two enterprises (named as their banks write them) and two rooms.
fn seed(dir: &Path) {
    let mut d = ParkDirectory::new("p1", 480, 1).unwrap();
    for (id, name) in [("acme", "星河科技有限公司"), ("globex", "Globex Ltd")] {
        d.upsert(&Enterprise {
            id: id.into(),
            name: name.into(),
            status: EnterpriseStatus::Active,
            kind: EnterpriseKind::Tenant,
        })
        .unwrap();
    }
    for id in ["r101", "r102"] {
        d.upsert(&Space {
            id: id.into(),
            building_id: "b1".into(),
            floor: 1,
            area_m2: 100.0,
            name: id.into(),
            kind: SpaceKind::Room,
            state: SpaceState::Vacant,
        })
        .unwrap();
    }
    d.commit("seed", 1);
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    std::fs::write(dir.join("p1/directory.automerge"), d.save()).unwrap();
}

/// Everyone the tests need, by name.
struct People {
    lee: String,
    wang: String,
    zhou: String,
    qian: String,
    acme: String,
    globex: String,
}

/// A hub over the seeded park (paying through `provider` when given), with two park
/// managers, two finance users and each enterprise's admin.
async fn hub(dir: &Path, provider: Option<&str>) -> (Hub, People) {
    hub_with(dir, provider, None).await
}

/// The same, sending notifications through `notifications`.
async fn hub_with(
    dir: &Path,
    provider: Option<&str>,
    notifications: Option<cloud_hub::notify::ChannelSettings>,
) -> (Hub, People) {
    seed(&dir.join("seed"));
    let mut settings = common::settings(dir);
    settings.documents_seed_dir = Some(dir.join("seed"));
    if let Some(url) = provider {
        let key_file = dir.join("payment.key");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        settings.payments = Some(cloud_hub::payments::ProviderSettings {
            url: url.into(),
            app_id: merchant().app_id,
            mch_id: merchant().mch_id,
            key_file,
            notify_url: None,
        });
    }
    settings.notifications = notifications;
    let h = Hub::start(settings).await.unwrap();
    let db = h.store.target().clone();
    let park = |role| [Grant::new(role, Scope::park("p1")).unwrap()];
    let enterprise =
        |e: &str| [Grant::new(Role::EnterpriseAdmin, Scope::enterprise("p1", e)).unwrap()];
    let people = People {
        lee: account(&db, "lee", &park(Role::Leasing)),
        wang: account(&db, "wang", &park(Role::ParkManager)),
        zhou: account(&db, "zhou", &park(Role::Finance)),
        qian: account(&db, "qian", &park(Role::Finance)),
        acme: account(&db, "acme-admin", &enterprise("acme")),
        globex: account(&db, "globex-admin", &enterprise("globex")),
    };
    h.auth.reload().await.unwrap();
    (h, people)
}

fn call(h: &Hub, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    common::call(h.api_addr, Some(token), method, path, body)
}

/// Each enterprise's active contract from 1 March 2026 (acme: 5,000 yuan of rent and 600
/// of fees a month; globex: 3,000 and 400), March billed and issued on 5 March (due on the
/// 20th); the bills' ids, acme's first.
fn march_bills(h: &Hub, p: &People) -> [String; 2] {
    for (id, enterprise, space, rent, fee) in [
        ("k1", "acme", "r101", 500_000, 60_000),
        ("k2", "globex", "r102", 300_000, 40_000),
    ] {
        let body = json!({
            "enterprise_id": enterprise,
            "space_ids": [space],
            "start": "2026-03-01",
            "end": "2028-02-29",
            "rent": {"fixed_month_fen": rent},
            "property_fee": {"fixed_month_fen": fee},
            "cycle": "monthly",
            "due_days": 15,
            "common_share": "none"
        });
        let (st, v) = call(
            h,
            &p.lee,
            "PUT",
            &format!("/api/v1/parks/p1/contracts/{id}"),
            Some(body),
        );
        assert_eq!(st, 200, "{v}");
        // The leasing officer drafts and activates; a park manager reviews.
        for (who, action) in [
            (&p.lee, "submit"),
            (&p.wang, "approve"),
            (&p.lee, "activate"),
        ] {
            let (st, v) = call(
                h,
                who,
                "POST",
                &format!("/api/v1/parks/p1/contracts/{id}/actions"),
                Some(json!({"action": action})),
            );
            assert_eq!(st, 200, "{action}: {v}");
        }
    }
    let (st, run) = call(
        h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-03"})),
    );
    assert_eq!(st, 200, "{run}");
    let ids = ["202603-acme-1".to_string(), "202603-globex-1".to_string()];
    assert_eq!(run["bills"], json!(ids), "{run}");
    for id in &ids {
        let (st, v) = call(
            h,
            &p.zhou,
            "POST",
            &format!("/api/v1/parks/p1/bills/{id}/issue"),
            Some(json!({"date": "2026-03-05"})),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["due_date"], "2026-03-20", "{v}");
    }
    ids
}

fn bill(h: &Hub, p: &People, id: &str) -> Value {
    let (st, v) = call(
        h,
        &p.zhou,
        "GET",
        &format!("/api/v1/parks/p1/bills/{id}"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v
}

fn metric(h: &Hub, name: &str) -> u64 {
    h.metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("smartpark_hub_{name} "))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Posts a notification as the provider would; whether the hub answered SUCCESS, and why
/// not.
async fn notify(h: &Hub, message: provider::Fields) -> (bool, String) {
    let url = format!("http://{}/api/v1/payment-notices/wechat", h.api_addr);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&url)
            .header("content-type", "text/xml")
            .send(to_xml(&message))
            .unwrap();
        let answer = from_xml(&r.body_mut().read_to_string().unwrap()).unwrap();
        (
            answer["return_code"] == "SUCCESS",
            answer.get("return_msg").cloned().unwrap_or_default(),
        )
    })
    .await
    .unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_are_paid_online_once_whatever_the_provider_sends() {
    let dir = tempfile::tempdir().unwrap();
    let sim = PayProviderSim::new(merchant(), vec![Duration::from_millis(100); 20]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener));
    let (h, p) = hub(dir.path(), Some(&provider_url)).await;
    let [acme_bill, globex_bill] = march_bills(&h, &p);
    let orders = format!("/api/v1/parks/p1/bills/{acme_bill}/pay-orders");

    // An order for what the bill owes, with the code to scan; asked again (by finance or
    // by acme's admin from its own page), the same order.
    let (st, order) = call(&h, &p.zhou, "POST", &orders, None);
    assert_eq!(st, 200, "{order}");
    assert_eq!(order["amount_fen"], 560_000);
    assert!(
        order["code_url"].as_str().unwrap().starts_with("weixin://"),
        "{order}"
    );
    let first = order["id"].as_str().unwrap().to_string();
    assert_eq!(first.len(), 32);
    let (st, again) = call(
        &h,
        &p.acme,
        "POST",
        &format!("/api/v1/parks/p1/enterprises/acme/bills/{acme_bill}/pay-orders"),
        None,
    );
    assert_eq!(
        (st, again["id"].as_str()),
        (200, Some(first.as_str())),
        "{again}"
    );
    // Nobody pays another enterprise's bill from their page, nor finance's routes.
    let (st, _) = call(
        &h,
        &p.globex,
        "POST",
        &format!("/api/v1/parks/p1/enterprises/globex/bills/{acme_bill}/pay-orders"),
        None,
    );
    assert_eq!(st, 404);
    let (st, _) = call(&h, &p.globex, "POST", &orders, None);
    assert_eq!(st, 403);
    assert_eq!(sim.orders().len(), 1);

    // The payer pays; the provider is told to hold its notification for now.
    sim.set_notifying(false);
    sim.pay(&first).unwrap();
    let genuine = sim.notification_of(&first).unwrap();
    // Forged: signed with another key. Altered: the amount changed after signing. Both
    // refused, counted, and nothing recorded.
    let refused_before = metric(&h, "payment_notices_refused_total");
    let forged = provider::signed(
        {
            let mut f = genuine.clone();
            f.remove("sign");
            f
        },
        "not-the-merchant-key-0000000000",
    );
    assert!(!notify(&h, forged).await.0);
    let mut altered = genuine.clone();
    altered.insert("total_fee".into(), "1".into());
    let (ok, why) = notify(&h, altered).await;
    assert!(!ok && why.contains("signature"), "{why}");
    let mut other_merchant = genuine.clone();
    other_merchant.insert("mch_id".into(), "1900000999".into());
    let other_merchant = provider::signed(
        {
            other_merchant.remove("sign");
            other_merchant
        },
        KEY,
    );
    assert!(!notify(&h, other_merchant).await.0);
    assert_eq!(
        metric(&h, "payment_notices_refused_total"),
        refused_before + 3
    );
    assert_eq!(bill(&h, &p, &acme_bill)["paid_fen"], 0);

    // The genuine one, three times (the provider retries): recorded once.
    for _ in 0..3 {
        assert_eq!(notify(&h, genuine.clone()).await, (true, "OK".to_string()));
    }
    let b = bill(&h, &p, &acme_bill);
    assert_eq!(
        (b["state"].as_str(), b["paid_fen"].as_i64()),
        (Some("paid"), Some(560_000)),
        "{b}"
    );
    assert_eq!(metric(&h, "payment_notices_replayed_total"), 2);
    let (_, pays) = call(
        &h,
        &p.zhou,
        "GET",
        &format!("/api/v1/parks/p1/payments?bill={acme_bill}"),
        None,
    );
    let pays = pays["payments"].as_array().unwrap().clone();
    assert_eq!(pays.len(), 1, "{pays:?}");
    assert_eq!(pays[0]["method"], "wechat_pay");
    assert_eq!(pays[0]["reference"], genuine["transaction_id"].as_str());
    // Acme sees the payment; globex does not.
    let (_, own) = call(
        &h,
        &p.acme,
        "GET",
        "/api/v1/parks/p1/enterprises/acme/payments",
        None,
    );
    assert_eq!(own["payments"].as_array().unwrap().len(), 1);
    let (st, _) = call(
        &h,
        &p.globex,
        "GET",
        "/api/v1/parks/p1/enterprises/acme/payments",
        None,
    );
    assert_eq!(st, 403);
    // The audit names the provider as the actor.
    let (_, audit) = call(&h, &p.wang, "GET", "/api/v1/parks/p1/audit?limit=200", None);
    assert!(
        audit.to_string().contains("provider:wechat_pay"),
        "no audit record of the notification: {audit}"
    );

    // Globex: two partial orders whose notifications come in reverse order, and one that
    // arrives before the hub has heard of its order.
    let g_orders = format!("/api/v1/parks/p1/bills/{globex_bill}/pay-orders");
    let (_, a) = call(&h, &p.zhou, "POST", &g_orders, None);
    let a_id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["amount_fen"], 340_000);
    // Before anyone pays a, finance records 100 yuan in cash; the next order is for the
    // rest.
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &format!("/api/v1/parks/p1/bills/{globex_bill}/payments"),
        Some(
            json!({"amount_fen": 10_000, "method": "cash", "reference": "R-0001", "received_date": "2026-03-06"}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let (_, b_order) = call(&h, &p.zhou, "POST", &g_orders, None);
    let b_id = b_order["id"].as_str().unwrap().to_string();
    assert_ne!(a_id, b_id);
    assert_eq!(b_order["amount_fen"], 330_000);
    sim.pay(&b_id).unwrap();
    sim.pay(&a_id).unwrap();
    let (na, nb) = (
        sim.notification_of(&a_id).unwrap(),
        sim.notification_of(&b_id).unwrap(),
    );
    // A notification for an order the hub has never opened is answered FAIL, so the
    // provider sends it again later.
    let mut unknown = nb.clone();
    unknown.insert(
        "out_trade_no".into(),
        "SP0000000000000000000000000000ZZ".into(),
    );
    unknown.remove("sign");
    let unknown = provider::signed(unknown, KEY);
    let (ok, why) = notify(&h, unknown).await;
    assert!(!ok && why.contains("no order"), "{why}");
    assert!(notify(&h, nb).await.0);
    assert_eq!(bill(&h, &p, &globex_bill)["state"], "paid");
    // The stale code paid last: the money is real, so it is recorded, the bill stays paid
    // and the excess is a difference in the reconciliation until it is refunded.
    assert!(notify(&h, na).await.0);
    let b = bill(&h, &p, &globex_bill);
    assert_eq!(
        (b["state"].as_str(), b["paid_fen"].as_i64()),
        (Some("paid"), Some(340_000)),
        "{b}"
    );
    let today = {
        let (_, r) = call(&h, &p.zhou, "GET", "/api/v1/parks/p1/reconciliation", None);
        r["date"].as_str().unwrap().to_string()
    };
    let (st, rec) = call(
        &h,
        &p.zhou,
        "GET",
        &format!("/api/v1/parks/p1/reconciliation?date={today}"),
        None,
    );
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["balanced"], false, "{rec}");
    let over: Vec<&Value> = rec["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "overpaid")
        .collect();
    assert_eq!(over.len(), 1, "{rec}");
    assert_eq!(
        (
            over[0]["reference"].as_str(),
            over[0]["amount_fen"].as_i64()
        ),
        (Some(globex_bill.as_str()), Some(340_000))
    );

    // The refund of the excess: asked by zhou, who cannot approve it; approved by qian.
    let (_, pays) = call(
        &h,
        &p.zhou,
        "GET",
        &format!("/api/v1/parks/p1/payments?bill={globex_bill}"),
        None,
    );
    let payment_of = |method: &str, amount: i64| {
        pays["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["method"] == method && x["amount_fen"] == amount)
            .unwrap_or_else(|| panic!("no {method} payment of {amount}: {pays}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let stale = payment_of("wechat_pay", 340_000);
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &format!("/api/v1/parks/p1/payments/{stale}/refunds"),
        Some(json!({"amount_fen": 340_001, "reason": "paid twice"})),
    );
    assert_eq!(st, 422, "more than the payment: {v}");
    let (st, refund) = call(
        &h,
        &p.zhou,
        "POST",
        &format!("/api/v1/parks/p1/payments/{stale}/refunds"),
        Some(json!({"amount_fen": 340_000, "reason": "paid twice: the old code"})),
    );
    assert_eq!(st, 200, "{refund}");
    let decide = format!(
        "/api/v1/parks/p1/refunds/{}/decide",
        refund["id"].as_str().unwrap()
    );
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &decide,
        Some(json!({"decision": "approve", "reference": "RF-1"})),
    );
    assert_eq!((st, v["code"].as_str()), (403, Some("second_user")), "{v}");
    let (st, v) = call(
        &h,
        &p.qian,
        "POST",
        &decide,
        Some(json!({"decision": "approve"})),
    );
    assert_eq!(st, 422, "approving needs the transfer's reference: {v}");
    let (st, v) = call(
        &h,
        &p.qian,
        "POST",
        &decide,
        Some(json!({"decision": "approve", "reference": "RF-1"})),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("approved")), "{v}");
    let (st, _) = call(
        &h,
        &p.qian,
        "POST",
        &decide,
        Some(json!({"decision": "reject", "note": "no"})),
    );
    assert_eq!(st, 409, "a decided refund stays decided");
    let b = bill(&h, &p, &globex_bill);
    assert_eq!(
        (b["state"].as_str(), b["paid_fen"].as_i64()),
        (Some("paid"), Some(340_000)),
        "{b}"
    );
    let (_, rec) = call(
        &h,
        &p.zhou,
        "GET",
        &format!("/api/v1/parks/p1/reconciliation?date={today}"),
        None,
    );
    assert_eq!(rec["balanced"], true, "{rec}");
    assert_eq!(rec["refunded_fen"], 340_000);
    assert_eq!(rec["receivable_fen"], 0, "{rec}");

    // An order whose notification never comes: finance asks the provider, once or twice.
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &format!(
            "/api/v1/parks/p1/payments/{}/refunds",
            payment_of("cash", 10_000)
        ),
        Some(json!({"amount_fen": 10_000, "reason": "cash returned"})),
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = call(
        &h,
        &p.qian,
        "POST",
        &format!(
            "/api/v1/parks/p1/refunds/{}/decide",
            v["id"].as_str().unwrap()
        ),
        Some(json!({"decision": "approve", "reference": "RF-2"})),
    );
    assert_eq!(v["state"], "approved", "{v}");
    let b = bill(&h, &p, &globex_bill);
    // Partly paid again, and past its due date in March: shown overdue.
    assert_eq!(
        (b["state"].as_str(), b["paid_fen"].as_i64()),
        (Some("overdue"), Some(330_000)),
        "{b}"
    );
    let (_, c) = call(&h, &p.zhou, "POST", &g_orders, None);
    let c_id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["amount_fen"], 10_000);
    sim.pay(&c_id).unwrap();
    for _ in 0..2 {
        let (st, v) = call(
            &h,
            &p.zhou,
            "POST",
            &format!("/api/v1/parks/p1/pay-orders/{c_id}/query"),
            None,
        );
        assert_eq!((st, v["state"].as_str()), (200, Some("paid")), "{v}");
    }
    let b = bill(&h, &p, &globex_bill);
    assert_eq!(
        (b["state"].as_str(), b["paid_fen"].as_i64()),
        (Some("paid"), Some(340_000)),
        "{b}"
    );

    // With the provider notifying on its own: it retries until the hub acknowledges.
    sim.set_notifying(true);
    let (_, r) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bill-runs",
        Some(json!({"month": "2026-04"})),
    );
    assert_eq!(r["bills"].as_array().unwrap().len(), 2, "{r}");
    let (_, v) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bills/202604-acme-1/issue",
        Some(json!({"date": "2026-04-05"})),
    );
    assert_eq!(v["issue_date"], "2026-04-05", "{v}");
    let (_, d) = call(
        &h,
        &p.acme,
        "POST",
        "/api/v1/parks/p1/enterprises/acme/bills/202604-acme-1/pay-orders",
        None,
    );
    let d_id = d["id"].as_str().unwrap().to_string();
    sim.pay(&d_id).unwrap();
    eventually(
        "the April bill paid by the provider's own notification",
        || bill(&h, &p, "202604-acme-1")["state"] == "paid",
    )
    .await;
    eventually("the provider's notification acknowledged", || {
        sim.orders()
            .iter()
            .any(|o| o.out_trade_no == d_id && o.acknowledged)
    })
    .await;
    // Delivered by the provider once more, it changes nothing.
    let url = format!("http://{}/api/v1/payment-notices/wechat", h.api_addr);
    let n = notification(
        &merchant(),
        &sim.orders()
            .into_iter()
            .find(|o| o.out_trade_no == d_id)
            .unwrap(),
    );
    assert!(
        tokio::task::spawn_blocking(move || deliver(&url, &n))
            .await
            .unwrap()
    );
    let (_, pays) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/payments?bill=202604-acme-1",
        None,
    );
    assert_eq!(pays["payments"].as_array().unwrap().len(), 1, "{pays}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_statements_invoices_and_the_reports_close_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let (h, p) = hub(dir.path(), None).await;
    let [acme_bill, globex_bill] = march_bills(&h, &p);
    // Without a provider, nobody can pay online.
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &format!("/api/v1/parks/p1/bills/{acme_bill}/pay-orders"),
        None,
    );
    assert_eq!(st, 409, "{v}");
    // A hub with no provider takes no notification; a body that is not the provider's XML
    // is not one either.
    let url = format!("http://{}/api/v1/payment-notices/wechat", h.api_addr);
    let post = |body: String| {
        let url = url.clone();
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            agent.post(&url).send(body).unwrap().status().as_u16()
        }
    };
    let signed = to_xml(&provider::signed(
        provider::fields([("return_code", "SUCCESS".into())]),
        KEY,
    ));
    assert_eq!(
        tokio::task::spawn_blocking(post(signed)).await.unwrap(),
        404
    );
    assert_eq!(
        tokio::task::spawn_blocking(post("{\"a\": 1}".into()))
            .await
            .unwrap(),
        422
    );
    assert_eq!(
        tokio::task::spawn_blocking(post(String::new()))
            .await
            .unwrap(),
        422
    );

    let statement = format!(
        "交易日期,交易流水号,对方户名,对方账号,贷方金额,摘要\n\
         2026-03-18,BK0001,星河科技有限公司,6222020200112233445,\"3,000.00\",三月房租 {acme_bill}\n\
         2026-03-18,BK0002,Globex Ltd,6222020200199887766,3400.00,March\n\
         2026-03-19,BK0003,张三,6222020200100001111,1200.00,rent\n\
         2026-03-19,BK0004,某某公司,6222020200100002222,88.00,\n\
         2026-03-19,BK0005,手续费,,-12.50,fee\n"
    );
    let import = |dry: bool| {
        call(
            &h,
            &p.zhou,
            "POST",
            "/api/v1/parks/p1/bank-statements",
            Some(json!({"csv": statement, "name": "icbc-2026-03-19.csv", "dry_run": dry})),
        )
    };
    // A row that cannot be read names itself, and nothing is imported.
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bank-statements",
        Some(json!({"csv": "date,reference,payer,amount\n2026-03-18,X1,a,12.345\n"})),
    );
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("row 2, amount"),
        "{v}"
    );
    let (st, dry) = import(true);
    assert_eq!(st, 200, "{dry}");
    assert_eq!(
        (
            dry["matched"].as_i64(),
            dry["unmatched"].as_i64(),
            dry["debits"].as_i64()
        ),
        (Some(2), Some(2), Some(1)),
        "{dry}"
    );
    assert_eq!(
        bill(&h, &p, &acme_bill)["paid_fen"],
        0,
        "a dry run records nothing"
    );
    let (st, done) = import(false);
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["matched_fen"], 640_000, "{done}");
    let lines = done["lines"].as_array().unwrap();
    let how = |id: &str| {
        lines.iter().find(|l| l["id"] == id).unwrap()["how"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(how("BK0001"), "reference");
    assert_eq!(how("BK0002"), "payer_amount");
    assert_eq!(how("BK0003"), "unmatched");
    // The account numbers are not kept, only their last digits.
    assert_eq!(lines[0]["account_tail"], "3445");
    assert!(!done.to_string().contains("6222020200112233445"));
    // Partly paid (shown overdue: its due date in March is past), and paid.
    assert_eq!(bill(&h, &p, &acme_bill)["state"], "overdue");
    assert_eq!(bill(&h, &p, &globex_bill)["state"], "paid");
    // The same statement again adds nothing.
    let (_, twice) = import(false);
    assert_eq!(
        (twice["duplicates"].as_i64(), twice["credits"].as_i64()),
        (Some(4), Some(0)),
        "{twice}"
    );
    assert_eq!(bill(&h, &p, &acme_bill)["paid_fen"], 300_000);

    // A person settles the two left: one is acme's (its chairman paid), one is not ours.
    let (_, open) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/bank-lines?state=unmatched",
        None,
    );
    assert_eq!(open["total"], 2, "{open}");
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bank-lines/BK0003/assign",
        Some(json!({"bill": acme_bill})),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("assigned")), "{v}");
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bank-lines/BK0003/assign",
        Some(json!({"bill": acme_bill})),
    );
    assert_eq!(st, 409, "{v}");
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        "/api/v1/parks/p1/bank-lines/BK0004/ignore",
        Some(json!({"reason": "not a tenant: returned to the sender"})),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("ignored")), "{v}");
    assert_eq!(bill(&h, &p, &acme_bill)["paid_fen"], 420_000);

    // The reconciliation of the 19th: the bank's credits all recorded or set aside.
    let (st, rec) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/reconciliation?date=2026-03-19",
        None,
    );
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["received_fen"], 120_000, "{rec}");
    assert_eq!(rec["bank_credits_fen"], 120_000, "{rec}");
    assert_eq!(rec["bank_recorded_fen"], 120_000, "{rec}");
    assert_eq!(rec["receivable_fen"], 140_000, "{rec}");
    assert_eq!(rec["overdue_fen"], 0, "{rec}");
    assert_eq!(rec["balanced"], true, "{rec}");
    let (_, rec5) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/reconciliation?date=2026-03-05",
        None,
    );
    assert_eq!(
        (rec5["issued_count"].as_i64(), rec5["issued_fen"].as_i64()),
        (Some(2), Some(900_000)),
        "{rec5}"
    );
    assert_eq!(rec5["receivable_fen"], 900_000, "{rec5}");
    let (st, _) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/reconciliation?date=2026-02-30",
        None,
    );
    assert_eq!(st, 422);
    // Ageing: on 1 May acme's rest is 42 days overdue.
    let (st, age) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/ageing?date=2026-05-01",
        None,
    );
    assert_eq!(st, 200, "{age}");
    assert_eq!(age["enterprises"].as_array().unwrap().len(), 1, "{age}");
    assert_eq!(age["enterprises"][0]["enterprise_name"], "星河科技有限公司");
    assert_eq!(age["enterprises"][0]["days_31_60_fen"], 140_000, "{age}");
    assert_eq!(age["total"]["total_fen"], 140_000);
    // Finance's reports are finance's.
    for path in [
        "/api/v1/parks/p1/ageing",
        "/api/v1/parks/p1/reconciliation",
        "/api/v1/parks/p1/bank-lines",
    ] {
        let (st, _) = call(&h, &p.acme, "GET", path, None);
        assert_eq!(st, 403, "{path}");
    }

    // Invoice requests: acme's admin asks for its own bill; the tax number is checked.
    let invoices = "/api/v1/parks/p1/enterprises/acme/invoice-requests";
    let ask = |token: &str, path: &str, bill: &str, tax: &str, amount: i64| {
        call(
            &h,
            token,
            "POST",
            path,
            Some(
                json!({"bill_id": bill, "kind": "special", "title": "星河科技有限公司", "tax_number": tax, "amount_fen": amount}),
            ),
        )
    };
    let (st, v) = ask(&p.acme, invoices, &acme_bill, "91350100M000100Y44", 560_000);
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("tax_number"),
        "{v}"
    );
    let (st, v) = ask(&p.acme, invoices, &globex_bill, "91350100M000100Y43", 1);
    assert_eq!(st, 404, "another's bill: {v}");
    let (st, v) = ask(&p.acme, invoices, &acme_bill, "91350100M000100Y43", 560_001);
    assert_eq!(st, 422, "more than the bill: {v}");
    let (st, req) = ask(&p.acme, invoices, &acme_bill, "91350100m000100y43", 560_000);
    assert_eq!(
        (st, req["state"].as_str()),
        (200, Some("requested")),
        "{req}"
    );
    assert_eq!(req["tax_number"], "91350100M000100Y43");
    let (st, _) = ask(&p.globex, invoices, &acme_bill, "91350100M000100Y43", 1);
    assert_eq!(st, 403);
    let (st, _) = call(&h, &p.globex, "GET", invoices, None);
    assert_eq!(st, 403);
    let decide = format!(
        "/api/v1/parks/p1/invoice-requests/{}/decide",
        req["id"].as_str().unwrap()
    );
    let (st, _) = call(
        &h,
        &p.zhou,
        "POST",
        &decide,
        Some(json!({"decision": "issue", "invoice_number": "12AB"})),
    );
    assert_eq!(st, 422);
    let (st, v) = call(
        &h,
        &p.zhou,
        "POST",
        &decide,
        Some(json!({"decision": "issue", "invoice_number": "04403260"})),
    );
    assert_eq!((st, v["state"].as_str()), (200, Some("issued")), "{v}");
    let (_, mine) = call(&h, &p.acme, "GET", invoices, None);
    assert_eq!(mine["requests"][0]["invoice_number"], "04403260", "{mine}");
    let (_, all) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/invoice-requests?state=issued",
        None,
    );
    assert_eq!(all["requests"].as_array().unwrap().len(), 1);
}

/// The SMTP server of `tests/hil/peers/smtp_sink.py` (aiosmtpd), printing each message it
/// accepts; with the Python that `scripts/test` prepares.
struct SmtpSink {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        use std::io::BufRead;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var_os("SMARTPARK_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo.join(".venv/bin/python"));
        let mut child = std::process::Command::new(&python)
            .arg(repo.join("tests/hil/peers/smtp_sink.py"))
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (run the tests through scripts/test, which prepares .venv): {e}", python.display()));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the SMTP server is ready");
        let port = ready
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{ready}"));
        SmtpSink { child, lines, port }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprises_are_told_by_email_in_their_language_once() {
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let (h, p) = hub_with(
        dir.path(),
        None,
        Some(cloud_hub::notify::ChannelSettings::Smtp {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: "none".into(),
            username: None,
            password_file: None,
            from: "园区财务 <finance@park.example.com>".into(),
        }),
    )
    .await;
    // Acme reads Chinese, globex English; a contact list is checked and an enterprise's
    // own.
    let contacts = |e: &str| format!("/api/v1/parks/p1/enterprises/{e}/notification-contacts");
    let (st, v) = call(
        &h,
        &p.acme,
        "PUT",
        &contacts("acme"),
        Some(json!({"contacts": [{"email": "not an address", "locale": "zh-CN"}]})),
    );
    assert_eq!(st, 422, "{v}");
    let (st, _) = call(
        &h,
        &p.acme,
        "PUT",
        &contacts("acme"),
        Some(json!({"contacts": [{"email": "caiwu@acme.example.cn", "locale": "zh-CN"}]})),
    );
    assert_eq!(st, 200);
    let (st, _) = call(
        &h,
        &p.acme,
        "PUT",
        &contacts("globex"),
        Some(json!({"contacts": []})),
    );
    assert_eq!(st, 403);
    let (st, _) = call(
        &h,
        &p.globex,
        "PUT",
        &contacts("globex"),
        Some(json!({"contacts": [{"email": "ap@globex.example.com", "locale": "en"}]})),
    );
    assert_eq!(st, 200);

    let [acme_bill, globex_bill] = march_bills(&h, &p);
    // Acme pays at once; the rounds of the sender also find both bills past their due date
    // (acme's perhaps before its payment).
    let (st, _) = call(
        &h,
        &p.zhou,
        "POST",
        &format!("/api/v1/parks/p1/bills/{acme_bill}/payments"),
        Some(
            json!({"amount_fen": 560_000, "method": "transfer", "reference": "T-1", "received_date": "2026-03-10"}),
        ),
    );
    assert_eq!(st, 200);
    let mut mails: Vec<Value> = Vec::new();
    while let Ok(line) = smtp.lines.recv_timeout(Duration::from_secs(30)) {
        mails.push(serde_json::from_str(line.strip_prefix("MAIL ").unwrap_or(&line)).unwrap());
    }
    let to = |who: &str| -> Vec<String> {
        let mut v: Vec<String> = mails
            .iter()
            .filter(|m| m["rcpt_tos"] == json!([who]))
            .map(|m| m["subject"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let globex = to("ap@globex.example.com");
    assert_eq!(
        globex,
        vec![
            format!("Bill {globex_bill} for 2026-03: CNY 3400.00"),
            format!("Bill {globex_bill} is overdue: CNY 3400.00 owed"),
        ],
        "each message once: {mails:?}"
    );
    let acme = to("caiwu@acme.example.cn");
    let issued = format!("2026-03 账单 {acme_bill}：5600.00 元");
    let paid = format!("已收到账单 {acme_bill} 的付款 5600.00 元");
    assert!(acme.contains(&issued) && acme.contains(&paid), "{acme:?}");
    assert!(
        acme.len() <= 3,
        "at most an overdue notice besides: {acme:?}"
    );
    let issued_mail = mails
        .iter()
        .find(|m| m["subject"] == issued.as_str())
        .unwrap();
    assert!(
        issued_mail["from"]
            .as_str()
            .unwrap()
            .contains("finance@park.example.com")
    );
    assert!(
        issued_mail["body"]
            .as_str()
            .unwrap()
            .contains("付款期限：2026-03-20"),
        "{issued_mail}"
    );
    let paid_mail = mails
        .iter()
        .find(|m| m["subject"] == paid.as_str())
        .unwrap();
    assert!(
        paid_mail["body"]
            .as_str()
            .unwrap()
            .contains("尚欠：0.00 元"),
        "{paid_mail}"
    );
    let en_mail = mails
        .iter()
        .find(|m| m["rcpt_tos"] == json!(["ap@globex.example.com"]))
        .unwrap();
    assert!(en_mail["body"].as_str().unwrap().is_ascii());
    let sent = mails.len();
    let (_, outbox) = call(
        &h,
        &p.zhou,
        "GET",
        "/api/v1/parks/p1/notifications?state=sent",
        None,
    );
    assert_eq!(
        outbox["notifications"].as_array().unwrap().len(),
        sent,
        "{outbox}"
    );
    let (st, _) = call(&h, &p.acme, "GET", "/api/v1/parks/p1/notifications", None);
    assert_eq!(st, 403);
}
