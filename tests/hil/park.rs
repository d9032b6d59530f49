//! Doors and barriers decided at the edge with no uplink: a door controller played by
//! `mosquitto_pub`, commands observed with `mosquitto_sub`, documents seeded from files.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use park_model::building::{Door, DoorDirection, DoorStatus};
use park_model::directory::{
    AccessGroup, Credential, CredentialKind, Enterprise, EnterpriseKind, EnterpriseStatus,
    Interval, Lease, LeaseStatus, Person, PersonStatus, Week, WeeklySchedule,
};
use park_model::parking::{BlockedPlate, Lane, LaneDirection, Lot, Tariff};
use park_model::{BuildingDoc, ParkDirectory, ParkingDoc};
use serde_json::{Value, json};

use crate::support::{Edge, MqttSub, eventually, mosquitto_pub};

const DAY: i64 = 86_400_000_000;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A park with two enterprises (one whose lease ended yesterday), a person in each with a
/// card, and door `d1` open to both around the clock; a car park with a lot, two lanes and a
/// tariff. `dir` is the `seed` folder of an edge's folder, whose credential key digests the
/// cards (see `support::credential_key`).
pub fn seed(dir: &Path) {
    let key =
        crate::support::credential_key(dir.parent().expect("seed is inside the edge's folder"));
    let now = now_us();
    let mut d = ParkDirectory::new("hil", 480, now - 30 * DAY).unwrap();
    d.upsert(&WeeklySchedule {
        id: "always".into(),
        name: "Always".into(),
        weekdays: Week::every_day(&[Interval {
            start_minute: 0,
            end_minute: 1440,
        }]),
        holiday_calendar_id: None,
        allow_on_holidays: true,
    })
    .unwrap();
    d.upsert(&AccessGroup {
        id: "g1".into(),
        name: "Lobby".into(),
        door_ids: vec!["d1".into()],
        schedule_id: Some("always".into()),
    })
    .unwrap();
    for (e, lease_end) in [("e1", now + 300 * DAY), ("e2", now - DAY)] {
        d.upsert(&Enterprise {
            id: e.into(),
            name: format!("Enterprise {e}"),
            status: EnterpriseStatus::Active,
            kind: EnterpriseKind::Tenant,
        })
        .unwrap();
        d.upsert(&Lease {
            id: format!("lease-{e}"),
            enterprise_id: e.into(),
            space_ids: vec![],
            valid_from: now - 365 * DAY,
            valid_to: lease_end,
            status: LeaseStatus::Active,
            monthly_rent_fen: 1_000_000,
            property_fee_fen: 50_000,
            currency: "CNY".into(),
        })
        .unwrap();
    }
    for (p, e, card) in [("p1", "e1", "CARD-1"), ("p2", "e2", "CARD-2")] {
        d.upsert(&Person {
            id: p.into(),
            name: p.into(),
            enterprise_id: e.into(),
            status: PersonStatus::Active,
            access_group_ids: vec!["g1".into()],
        })
        .unwrap();
        d.upsert(
            &Credential::from_secret(&key, &format!("c-{p}"), p, CredentialKind::Card, card)
                .unwrap(),
        )
        .unwrap();
    }
    d.commit("seed", now);
    let mut b = BuildingDoc::new("hil", "b1", now).unwrap();
    b.upsert(&Door {
        id: "d1".into(),
        name: "Lobby".into(),
        building_id: "b1".into(),
        anti_passback: false,
        direction: DoorDirection::Both,
        area_id: None,
        unlock_duration_ms: 4000,
        status: DoorStatus::Enabled,
    })
    .unwrap();
    b.commit("seed", now);
    let mut p = ParkingDoc::new("hil", 480, now).unwrap();
    p.upsert(&Tariff {
        id: "std".into(),
        currency: "CNY".into(),
        free_minutes: 15,
        period_minutes: 60,
        day_rate_fen: 500,
        night_start_minute: 22 * 60,
        night_end_minute: 7 * 60,
        // The same rate by night, so that a fee does not depend on the hour the tests run
        // (day and night rates are the tariff's own unit tests).
        night_rate_fen: 500,
        daily_cap_fen: Some(4000),
        lost_ticket_fen: 8000,
    })
    .unwrap();
    p.upsert(&Lot {
        id: "lot-a".into(),
        name: "Lot A".into(),
        capacity: 10,
        tariff_id: Some("std".into()),
    })
    .unwrap();
    for (lane, dir) in [("a-in", LaneDirection::In), ("a-out", LaneDirection::Out)] {
        p.upsert(&Lane {
            id: lane.into(),
            lot_id: "lot-a".into(),
            direction: dir,
            name: lane.into(),
        })
        .unwrap();
    }
    p.upsert(&BlockedPlate {
        id: "湘B66666".into(),
        reason: "unpaid fees".into(),
    })
    .unwrap();
    p.commit("seed", now);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("directory.automerge"), d.save()).unwrap();
    std::fs::write(dir.join("building-b1.automerge"), b.save()).unwrap();
    std::fs::write(dir.join("parking.automerge"), p.save()).unwrap();
}

fn start(dir: &Path) -> Edge {
    seed(&dir.join("seed"));
    Edge::start(
        dir,
        &format!(
            "[business]\nseed_dir = \"{}\"\n",
            dir.join("seed").display()
        ),
    )
}

/// A `mosquitto_sub` of `topic` (anonymous: the tests' broker is in lab mode).
pub(crate) struct Sub(MqttSub);

impl Sub {
    pub(crate) fn start(broker: SocketAddr, topic: &str) -> Sub {
        Sub(MqttSub::start(broker, &[], &[topic]))
    }

    /// Waits for at least `at_least` messages and returns their topics and JSON payloads.
    pub(crate) fn collect(self, at_least: usize) -> Vec<(String, Value)> {
        eventually(
            &format!("{at_least} commands"),
            Duration::from_secs(20),
            || {
                let v: Vec<(String, Value)> = self
                    .0
                    .messages()
                    .iter()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(t, p)| {
                        (
                            t.to_string(),
                            serde_json::from_str(p).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                (v.len() >= at_least).then_some(v)
            },
        )
    }
}

pub(crate) fn read(edge: &Edge, door: &str, card: &str) {
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            &format!("door/{door}/read"),
            "-m",
            &json!({"type": "card", "value": card, "reader": "in"}).to_string(),
        ],
    );
}

fn access_events(edge: &Edge) -> Vec<Value> {
    let (_, body) = edge.get("/api/v1/events?kind=access&limit=100");
    body["events"].as_array().unwrap().clone()
}

#[test]
fn doors_open_for_valid_cards_and_stay_shut_for_an_ended_lease_with_no_uplink_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(dir.path());
    let sub = Sub::start(edge.mqtt, "door/d1/command");
    read(&edge, "d1", "CARD-1");
    read(&edge, "d1", "CARD-2");
    read(&edge, "d1", "NOBODY");
    let commands = sub.collect(3);
    // Each command is counted once it is handed to the broker, none as not sent.
    eventually("three commands counted", Duration::from_secs(10), || {
        (edge.metric("smartpark_edge_commands_published_total") == 3.0).then_some(())
    });
    assert_eq!(edge.metric("smartpark_edge_commands_not_sent_total"), 0.0);
    assert_eq!(commands[0].1["command"], "unlock", "{commands:?}");
    assert_eq!(commands[0].1["duration_ms"], 4000);
    assert_eq!(commands[1].1["command"], "deny");
    assert_eq!(commands[1].1["reason"], "no_active_lease");
    assert_eq!(commands[2].1["reason"], "unknown_credential");
    // Every command names a decision that is already stored.
    let events = access_events(&edge);
    for (_, c) in &commands {
        let id = c["decision"].as_str().unwrap();
        assert!(
            events.iter().any(|e| e["id"] == id),
            "decision {id} is not in the event log"
        );
    }
    let granted = events
        .iter()
        .find(|e| e["id"] == commands[0].1["decision"])
        .unwrap();
    assert_eq!(granted["body"]["person"], "p1");

    // A local edit: the engineer suspends p1's card.
    let (status, body) = edge.post(
        "/api/v1/credentials/c-p1/status",
        json!({"status": "suspended", "reason": "reported stolen"}),
    );
    assert_eq!(status, 200, "{body}");

    // The directory's row copy matches the stored document, edit included (both are written
    // in one transaction), so the restart decides from it.
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("data/edge.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    eventually("the directory's row copy", Duration::from_secs(10), || {
        db.query_row(
            "SELECT cache_version = version FROM doc_versions WHERE doc_id = 'directory'",
            [],
            |r| r.get::<_, bool>(0),
        )
        .ok()
        .filter(|matches| *matches)
    });
    drop(db);

    // kill -9 and restart: decisions, the edit and the audit log are all still there.
    edge.proc.kill9();
    let edge = Edge::start_with(edge.config.clone());
    assert_eq!(edge.metric("smartpark_edge_directory_from_copy"), 1.0);
    assert_eq!(access_events(&edge).len(), 3);
    let sub = Sub::start(edge.mqtt, "door/d1/command");
    read(&edge, "d1", "CARD-1");
    let after = sub.collect(1);
    assert_eq!(after[0].1["command"], "deny");
    assert_eq!(after[0].1["reason"], "credential_suspended");
    let (_, audit) = edge.get("/api/v1/audit");
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| {
        e["action"] == "credential_status"
            && e["actor"]
                .as_str()
                .unwrap_or("")
                .starts_with(crate::support::ADMIN)
    }));

    // A manual open with a reason is recorded and sent.
    let sub = Sub::start(edge.mqtt, "door/d1/command");
    let (status, body) = edge.post("/api/v1/doors/d1/open", json!({"reason": "delivery"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(sub.collect(1)[0].1["command"], "unlock");
    let (status, _) = edge.post("/api/v1/doors/nope/open", json!({"reason": "x"}));
    assert_eq!(status, 404);
}

pub fn plate(edge: &Edge, lane: &str, plate: &str, direction: &str, confidence: f64, ts: i64) {
    let payload = json!({"plate": plate, "confidence": confidence, "direction": direction, "ts": ts, "image": "snap/1.jpg"});
    mosquitto_pub(
        edge.mqtt,
        &[
            "-q",
            "1",
            "-t",
            &format!("lpr/{lane}/plate"),
            "-m",
            &payload.to_string(),
        ],
    );
}

#[test]
fn barriers_admit_charge_and_release_a_visitor_and_hold_a_blocked_plate_offline() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path());
    let sub = Sub::start(edge.mqtt, "barrier/+/command");
    // A visitor who came in 2 h 50 min ago (the camera stamps its reads): three started hours.
    let entered = now_us() - 170 * 60_000_000;
    plate(&edge, "a-in", "湘A12345", "in", 0.95, entered);
    plate(&edge, "a-in", "湘B66666", "in", 0.97, now_us());
    let entry = sub.collect(2);
    assert_eq!(entry[0].1["command"], "open", "{entry:?}");
    assert_eq!(entry[1].1["command"], "hold");
    assert_eq!(entry[1].1["reason"], "plate_blocked");
    let (_, lots) = edge.get("/api/v1/lots");
    assert_eq!(lots["lots"][0]["occupied"], 1);

    // At the exit: the fee is shown, the car waits, pays, and the barrier opens.
    let display = Sub::start(edge.mqtt, "lane/a-out/display");
    let barrier = Sub::start(edge.mqtt, "barrier/a-out/command");
    plate(&edge, "a-out", "湘A12345", "out", 0.93, now_us());
    let shown = display.collect(1);
    let fee = shown[0].1["fee_fen"].as_i64().unwrap();
    assert_eq!(fee, 1500, "3 started hours at 5 yuan: {shown:?}");
    let session = shown[0].1["session"].as_str().unwrap().to_string();
    let publish = |topic: &str, body: &Value| {
        mosquitto_pub(
            edge.mqtt,
            &["-q", "1", "-t", topic, "-m", &body.to_string()],
        );
    };
    // Paid in another currency, and at the entry lane: recorded, not counted.
    publish(
        "lane/a-out/payment",
        &json!({"session": session, "amount_fen": fee, "currency": "USD", "method": "card", "id": "pay-usd"}),
    );
    publish(
        "lane/a-in/payment",
        &json!({"session": session, "amount_fen": fee, "currency": "CNY", "method": "qr", "id": "pay-elsewhere"}),
    );
    // A lane this building does not have: refused, and nothing is sent to it.
    let ghost = Sub::start(edge.mqtt, "barrier/ghost/command");
    publish(
        "lane/ghost/payment",
        &json!({"session": session, "amount_fen": fee, "currency": "CNY", "method": "qr", "id": "pay-ghost"}),
    );
    plate(&edge, "ghost", "湘A12345", "out", 0.99, now_us());
    eventually(
        "the refused payments counted",
        Duration::from_secs(10),
        || {
            (edge.metric("smartpark_edge_payments_refused_total") == 2.0
                && edge.metric("smartpark_edge_field_unknown_target_total") == 2.0)
                .then_some(())
        },
    );
    let pay = json!({"session": session, "amount_fen": fee, "currency": "CNY", "method": "qr", "id": "pay-1"});
    publish("lane/a-out/payment", &pay);
    // The same payment again (a terminal that resent it) is counted once.
    publish("lane/a-out/payment", &pay);
    let opened = barrier.collect(2);
    assert_eq!(opened[0].1["command"], "hold");
    assert_eq!(opened[1].1["command"], "open");
    let (_, lots) = edge.get("/api/v1/lots");
    assert_eq!(lots["lots"][0]["occupied"], 0);
    eventually(
        "the resent payment counted",
        Duration::from_secs(10),
        || (edge.metric("smartpark_edge_payments_repeated_total") == 1.0).then_some(()),
    );
    let (_, payments) = edge.get("/api/v1/events?kind=parking.payment");
    let payments = payments["events"].as_array().unwrap().clone();
    assert_eq!(
        payments.len(),
        3,
        "each payment is logged once, the refused ones as not counted: {payments:?}"
    );
    let counted: Vec<bool> = payments
        .iter()
        .map(|e| e["body"]["counted"].as_bool().unwrap())
        .collect();
    assert_eq!(counted.iter().filter(|c| **c).count(), 1, "{payments:?}");
    let (_, exits) = edge.get("/api/v1/events?kind=parking.exit");
    assert_eq!(
        exits["events"].as_array().unwrap().len(),
        1,
        "the car left once"
    );
    assert!(
        ghost.0.messages().is_empty(),
        "a command went to a lane that does not exist"
    );

    // A plate the camera is unsure of waits for a person, who admits it.
    let barrier = Sub::start(edge.mqtt, "barrier/a-in/command");
    plate(&edge, "a-in", "湘A7777?", "in", 0.41, now_us());
    let waiting = eventually(
        "the read in the review queue",
        Duration::from_secs(10),
        || {
            let (_, q) = edge.get("/api/v1/parking/review");
            q["waiting"].as_array().filter(|w| !w.is_empty()).cloned()
        },
    );
    let id = waiting[0]["id"].as_str().unwrap();
    let (status, body) = edge.post(
        &format!("/api/v1/parking/review/{id}"),
        json!({"admit": true, "plate": "湘A77770"}),
    );
    assert_eq!(status, 200, "{body}");
    let opened = barrier.collect(1);
    assert_eq!(opened[0].1["command"], "open");
    let (_, sessions) = edge.get("/api/v1/parking/sessions");
    assert_eq!(sessions["sessions"][0]["plate"], "湘A77770");
}
