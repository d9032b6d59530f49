//! Master data edited on the hub reaching a real edge's decisions over real sync: a card
//! suspended through the hub's API is refused at the building's door once the edge has
//! synced the park's directory, and restored the same way; an enterprise, a person and a
//! card made on the hub open the door; a tariff and a lot changed on the hub set the fee at
//! the exit lane (the times it takes are printed).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Edge, eventually, http_as};
use crate::sync::{Hub, enroll, hub_config};

fn read(edge: &Edge, card: &str) {
    crate::park::read(edge, "d1", card);
}

/// The newest access decision at the edge.
fn last_decision(edge: &Edge) -> Option<Value> {
    let (_, body) = edge.get("/api/v1/events?kind=access.decision&limit=1");
    body["events"]
        .as_array()?
        .first()
        .map(|e| e["body"].clone())
}

/// The status of credential `id` as the edge holds it (its people view).
fn edge_status(edge: &Edge, person: &str, id: &str) -> Option<String> {
    let (status, page) = edge.get(&format!("/api/v1/people?q={person}"));
    if status != 200 {
        eprintln!("people at the edge: {status} {page}");
    }
    page["people"]
        .as_array()?
        .iter()
        .flat_map(|p| p["credentials"].as_array().cloned().unwrap_or_default())
        .find(|c| c["id"] == id)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// A hub holding park `hil`'s documents (with its credential key, so that it can issue
/// cards) and building b1's edge enrolled with it and connected, deciding door `d1` from
/// the same seed (see `park::seed`).
pub(crate) fn hub_and_edge(dir: &std::path::Path) -> (Hub, Edge) {
    // The park's documents: the edge's seed, and the same files as the hub's master data.
    crate::park::seed(&dir.join("seed"));
    let hub_seed = dir.join("hub-seed/hil");
    std::fs::create_dir_all(&hub_seed).unwrap();
    for f in [
        "directory.automerge",
        "building-b1.automerge",
        "parking.automerge",
    ] {
        std::fs::copy(dir.join("seed").join(f), hub_seed.join(f)).unwrap();
    }
    let config = hub_config(dir, 0);
    let mut text = std::fs::read_to_string(&config).unwrap();
    // The park's credential key, the edge's own file, so that the hub can issue cards.
    text.push_str(&format!(
        "[documents]\nseed_dir = \"{}\"\n[documents.credential_keys]\nhil = \"{}\"\n",
        dir.join("hub-seed").display(),
        dir.join("credential.key").display()
    ));
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let (_, identity) = enroll(&config, &hub, dir);
    let edge = Edge::start(
        dir,
        &format!(
            "[business]\nseed_dir = \"{}\"\n[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\n",
            dir.join("seed").display(),
            hub.quic,
            identity.display()
        ),
    );
    eventually("connected to the hub", Duration::from_secs(30), || {
        let (_, s) = edge.get("/api/v1/sync");
        (s["connected"] == true).then_some(())
    });
    (hub, edge)
}

/// A PUT to the hub's API as the park's manager, which must succeed; its answer.
fn hub_put(hub: &Hub, path: &str, body: Value) -> Value {
    let (status, answer) = http_as(&hub.token, "PUT", &format!("{}{path}", hub.api), Some(body));
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

#[test]
fn master_data_edited_on_the_hub_decides_at_a_real_edges_door() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, edge) = hub_and_edge(dir.path());
    read(&edge, "CARD-1");
    let first = eventually("the first decision", Duration::from_secs(10), || {
        last_decision(&edge)
    });
    assert_eq!(first["granted"], true, "{first}");

    // The park's manager suspends the card on the hub.
    let path = format!("{}/api/v1/parks/hil/credentials/c-p1/status", hub.api);
    let (status, body) = http_as(
        &hub.token,
        "POST",
        &path,
        Some(json!({"status": "suspended", "reason": "reported stolen"})),
    );
    assert_eq!(status, 200, "{body}");
    let suspended_at = Instant::now();
    eventually(
        "the suspension at the edge",
        Duration::from_secs(30),
        || (edge_status(&edge, "p1", "c-p1")? == "suspended").then_some(()),
    );
    let took = suspended_at.elapsed();
    read(&edge, "CARD-1");
    let refused = eventually("a refusal at the door", Duration::from_secs(10), || {
        last_decision(&edge).filter(|d| d["granted"] == false)
    });
    assert_eq!(refused["reason"], "credential_suspended", "{refused}");
    println!(
        "master_suspend_to_edge_ms: {} ms (hub API answer to the edge holding the change)",
        took.as_millis()
    );

    // Restored the same way; the door opens again.
    let (status, body) = http_as(
        &hub.token,
        "POST",
        &path,
        Some(json!({"status": "active", "reason": "found in the lobby"})),
    );
    assert_eq!(status, 200, "{body}");
    eventually(
        "the restored card at the edge",
        Duration::from_secs(30),
        || (edge_status(&edge, "p1", "c-p1")? == "active").then_some(()),
    );
    read(&edge, "CARD-1");
    eventually("the door opens again", Duration::from_secs(10), || {
        last_decision(&edge).filter(|d| d["granted"] == true && d != &first)
    });

    // A new enterprise of the park's own staff, a person in the lobby group and a card,
    // all made on the hub: the card opens the building's door.
    let put = |path: &str, body: Value| hub_put(&hub, path, body);
    put(
        "/api/v1/parks/hil/enterprises/facilities",
        json!({"name": "物业服务", "status": "active", "kind": "operator"}),
    );
    put(
        "/api/v1/parks/hil/people/p9",
        json!({"name": "Zhao", "enterprise_id": "facilities", "status": "active", "access_group_ids": ["g1"]}),
    );
    let issued_at = Instant::now();
    put(
        "/api/v1/parks/hil/credentials/c-p9",
        json!({"person_id": "p9", "kind": "card", "value": "CARD-9-NEW"}),
    );
    let opened = eventually(
        "the new card to open the door",
        Duration::from_secs(30),
        || {
            read(&edge, "CARD-9-NEW");
            std::thread::sleep(Duration::from_millis(200));
            last_decision(&edge).filter(|d| d["granted"] == true && d["credential"] == "c-p9")
        },
    );
    println!(
        "master_card_to_door_ms: {} ms (card issued on the hub to a granted read at the edge)",
        issued_at.elapsed().as_millis()
    );
    assert_eq!(opened["person"], "p9", "{opened}");
}

/// A car park's tariff made on the hub charges at the building's exit lane: a new tariff
/// and the lot switched to it through the hub's API; once the edge has synced, a visitor
/// who came in 50 minutes earlier is shown two started half hours at the new rate at the
/// exit lane (the time the change takes to reach the edge is printed).
#[test]
fn a_tariff_made_on_the_hub_sets_the_fee_at_the_exit_lane() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, edge) = hub_and_edge(dir.path());
    let put = |path: &str, body: Value| hub_put(&hub, path, body);
    // A tariff the API refuses names its field.
    let (status, answer) = http_as(
        &hub.token,
        "PUT",
        &format!("{}/api/v1/parks/hil/tariffs/bad", hub.api),
        Some(
            json!({"currency": "CNY", "free_minutes": 0, "period_minutes": 30, "day_rate_fen": 800,
            "night_start_minute": 1440, "night_end_minute": 0, "night_rate_fen": 0, "lost_ticket_fen": 0}),
        ),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("night_start_minute"),
        "{answer}"
    );

    let entered = device_drivers::now_micros() - 50 * 60_000_000;
    crate::park::plate(&edge, "a-in", "湘A77777", "in", 0.95, entered);
    let changed_at = Instant::now();
    put(
        "/api/v1/parks/hil/tariffs/peak",
        json!({"currency": "CNY", "free_minutes": 0, "period_minutes": 30, "day_rate_fen": 800,
            "night_start_minute": 0, "night_end_minute": 0, "night_rate_fen": 800,
            "daily_cap_fen": null, "lost_ticket_fen": 9000}),
    );
    let lot = put(
        "/api/v1/parks/hil/lots/lot-a",
        json!({"name": "Lot A", "capacity": 12, "tariff_id": "peak"}),
    );
    assert_eq!(lot["tariff_id"], "peak");
    assert!(lot["meta"]["updated_by"].is_string(), "{lot}");
    // The edge has both changes once it shows the lot's new capacity (the lot's change
    // comes after the tariff's in the same document, and changes apply in order).
    eventually(
        "the changed lot at the edge",
        Duration::from_secs(30),
        || {
            let (_, lots) = edge.get("/api/v1/lots");
            (lots["lots"][0]["capacity"] == 12).then_some(())
        },
    );
    println!(
        "master_tariff_to_lane_ms: {} ms (tariff and lot changed on the hub to the lot changed at the edge)",
        changed_at.elapsed().as_millis()
    );
    let display = crate::park::Sub::start(edge.mqtt, "lane/a-out/display");
    crate::park::plate(
        &edge,
        "a-out",
        "湘A77777",
        "out",
        0.93,
        device_drivers::now_micros(),
    );
    // Two started half hours at 8 yuan (the seed's tariff would charge one started hour at 5).
    let shown = display.collect(1);
    assert_eq!(shown[0].1["fee_fen"], 1600, "{shown:?}");
}

/// A weekly schedule made on the hub decides at the door: the lobby's group put on a
/// schedule with no open hours shuts the door to its cards once the edge has synced, and
/// back on the seed's round-the-clock schedule opens it again.
#[test]
fn a_schedule_made_on_the_hub_shuts_the_door_outside_its_hours() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, edge) = hub_and_edge(dir.path());
    let put = |path: &str, body: Value| hub_put(&hub, path, body);
    put(
        "/api/v1/parks/hil/schedules/closed",
        json!({"name": "Closed", "weekdays": [[], [], [], [], [], [], []]}),
    );
    let group =
        |schedule: &str| json!({"name": "Lobby", "door_ids": ["d1"], "schedule_id": schedule});
    put("/api/v1/parks/hil/access-groups/g1", group("closed"));
    let denied = eventually(
        "the door shut by the schedule",
        Duration::from_secs(30),
        || {
            read(&edge, "CARD-1");
            std::thread::sleep(Duration::from_millis(200));
            last_decision(&edge).filter(|d| d["granted"] == false)
        },
    );
    assert_eq!(denied["reason"], "outside_schedule", "{denied}");
    put("/api/v1/parks/hil/access-groups/g1", group("always"));
    eventually("the door open again", Duration::from_secs(30), || {
        read(&edge, "CARD-1");
        std::thread::sleep(Duration::from_millis(200));
        last_decision(&edge).filter(|d| d["granted"] == true)
    });
}
