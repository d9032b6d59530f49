//! Two hub processes on one PostgreSQL (`SMARTPARK_HIL_PG_URL`, which `scripts/test` sets;
//! without it the test says so and passes): a real edge syncing telemetry to the first
//! hub, the first hub killed with SIGKILL under load, and the edge carrying on with the
//! second once the first one's lease on the building runs out. Every sample the edge
//! stored reaches the hub's database, each once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Edge, eventually};
use crate::sync::{Hub, enroll, hub_config};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Per point of the building, the hub's raw samples and how many distinct times they hold.
fn hub_samples(db: &park_db::Target) -> BTreeMap<String, (i64, i64)> {
    let handle = park_db::Handle::open(db, park_db::pool::Access::ReadOnly).unwrap();
    handle
        .conn()
        .query_all(
            "SELECT p.point, count(*), count(DISTINCT r.ts) FROM raw r JOIN points p ON p.id = r.point_id
             GROUP BY p.point ORDER BY p.point",
            [],
            |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))),
        )
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn an_edge_moves_to_the_second_hub_when_the_first_is_killed_and_nothing_is_lost_or_doubled() {
    let Ok(server) = std::env::var("SMARTPARK_HIL_PG_URL") else {
        eprintln!("SMARTPARK_HIL_PG_URL is not set: no shared database to fail over on");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = park_db::scratch_schema(&server, &dir.path().display().to_string()).unwrap();
    let park_db::Target::Postgres(url) = &db else {
        unreachable!()
    };
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a_config = hub_config(&a_dir, free_udp_port());
    let mut text = std::fs::read_to_string(&a_config).unwrap();
    text.push_str(&format!("[database]\nurl = \"{url}\"\n"));
    std::fs::write(&a_config, &text).unwrap();
    let mut a = Hub::start(&a_config);
    let (_, identity) = enroll(&a_config, &a, dir.path());

    // The second hub: its own data folder and port, the first one's CA, key and database.
    let b_config = hub_config(&b_dir, free_udp_port());
    let mut text = std::fs::read_to_string(&b_config)
        .unwrap()
        .replace(
            "cert = \"ca/ca-cert.pem\"",
            &format!("cert = \"{}\"", a_dir.join("ca/ca-cert.pem").display()),
        )
        .replace(
            "key = \"ca/ca-key.pem\"",
            &format!("key = \"{}\"", a_dir.join("ca/ca-key.pem").display()),
        )
        .replace(
            "data_dir = \"hub-data\"",
            &format!(
                "data_dir = \"hub-data\"\nkey_file = \"{}\"",
                a_dir.join("secrets/hub.key").display()
            ),
        );
    text.push_str(&format!("[database]\nurl = \"{url}\"\n"));
    std::fs::write(&b_config, &text).unwrap();
    let b = Hub::start(&b_config);

    let (device, device_addr) = crate::support::modbus_tcp_device();
    let edge = Edge::start(
        dir.path(),
        &format!(
            "[sync]\nhub = \"{}\"\nother_hubs = [\"{}\"]\nidentity_dir = \"{}\"\nraw_block_samples = 200\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 50\ntimeout_ms = 1000\n\
             modbus_tcp = {{ address = \"{}\", unit = 1 }}\n",
            a.quic,
            b.quic,
            identity.display(),
            device_addr
        ),
    );
    let stored = |at_least: i64| {
        let n: i64 = hub_samples(&db).values().map(|v| v.0).sum();
        (n >= at_least).then_some(n)
    };
    let before = eventually(
        "samples stored through the first hub",
        Duration::from_secs(60),
        || stored(1000),
    );

    // The first hub dies under load. The second refuses the building while the dead hub's
    // lease stands, then takes it; the edge alternates between the two until it does.
    a.proc.kill9();
    let killed = std::time::Instant::now();
    let building_on_b = || {
        let (status, body) = crate::support::http_as(
            &b.token,
            "GET",
            &format!("{}/api/v1/parks/hil/buildings", b.api),
            None,
        );
        (status == 200
            && body["buildings"]
                .as_array()?
                .iter()
                .any(|x| x["building"] == "b1" && x["connection"]["state"] == "connected"))
        .then_some(())
    };
    eventually(
        "the edge to connect to the second hub",
        Duration::from_secs(90),
        building_on_b,
    );
    println!(
        "hub_failover_s: {:.1} s (kill -9 of the first hub to the building connected to the second)",
        killed.elapsed().as_secs_f64()
    );
    eventually(
        "samples stored through the second hub",
        Duration::from_secs(60),
        || stored(before + 1000),
    );

    // The device stops; once the edge's backlog has reached the hub, the hub holds every
    // sample the edge stored, each once.
    drop(device);
    std::thread::sleep(Duration::from_secs(3));
    let edge_counts = || -> BTreeMap<String, i64> {
        let (_, store) = edge.get("/api/v1/store");
        store["rawSamplesPerPoint"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(p, n)| (p.clone(), n.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    // What the edge holds now must all reach the hub (the edge goes on storing the
    // offline device's bad samples meanwhile, so the hub may hold more by then).
    let edge = edge_counts();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let hub = loop {
        let hub = hub_samples(&db);
        let caught_up = edge
            .iter()
            .all(|(p, n)| hub.get(p).is_some_and(|v| v.0 >= *n));
        if caught_up || std::time::Instant::now() > deadline {
            let rows: BTreeMap<&String, i64> = hub.iter().map(|(p, v)| (p, v.0)).collect();
            assert!(caught_up, "the edge held {edge:?}; the hub holds {rows:?}");
            break hub;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(edge.contains_key("dev/voltage"), "{edge:?}");
    for (p, (rows, distinct)) in &hub {
        assert_eq!(rows, distinct, "{p}: a sample is stored twice");
    }
    let total: i64 = edge.values().sum();
    assert!(
        total > before,
        "{total} samples in all, {before} before the failover"
    );
}
