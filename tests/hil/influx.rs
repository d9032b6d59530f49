//! The hub's telemetry export against VictoriaMetrics (Debian's `victoria-metrics`, through
//! its InfluxDB v2 write API): an edge with a Modbus device uploads to a real hub, which
//! writes every raw sample to the engine; the hub is killed with `kill -9` and the engine
//! restarted while samples flow, and in the end the engine holds exactly the hub's samples,
//! each once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Edge, Proc, eventually, http_as};
use crate::sync::{Hub, enroll, hub_config};

/// A VictoriaMetrics process on `port` keeping its data in `dir`, deduplicating samples of
/// a series to one per millisecond (what makes a resent point count once).
fn victoria_metrics(dir: &Path, port: u16) -> Proc {
    let bin = "/usr/bin/victoria-metrics";
    assert!(
        Path::new(bin).exists(),
        "victoria-metrics is missing: run the tests through scripts/test, which installs Debian's package"
    );
    let proc = Proc::spawn(
        "victoria-metrics",
        Command::new(bin)
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-loggerLevel=ERROR"),
    );
    eventually("VictoriaMetrics answering", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/health"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    });
    proc
}

/// Every sample of field `field` VictoriaMetrics holds, as point → (timestamp in ms,
/// value); every exported sample carries `quality`, a number's samples `value` too.
fn engine_series(port: u16, field: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let base = format!("http://127.0.0.1:{port}");
    ureq::get(&format!("{base}/internal/force_flush"))
        .call()
        .unwrap();
    let text = ureq::post(&format!("{base}/api/v1/export"))
        .send_form([("match[]", format!("smartpark_{field}").as_str())])
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let m = &v["metric"];
        assert_eq!(
            (m["park"].as_str(), m["building"].as_str()),
            (Some("hil"), Some("b1"))
        );
        let key = format!(
            "{}/{}",
            m["device"].as_str().unwrap(),
            m["point"].as_str().unwrap()
        );
        let samples = v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["values"].as_array().unwrap())
            .map(|(t, x)| (t.as_i64().unwrap(), x.as_f64().unwrap()));
        out.entry(key).or_insert_with(Vec::new).extend(samples);
    }
    out
}

/// Every sample's timestamps (ms) by point, from the `quality` field.
fn engine_samples(port: u16) -> BTreeMap<String, Vec<i64>> {
    engine_series(port, "quality")
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(t, _)| t).collect()))
        .collect()
}

/// The hub's export as its database holds it: (samples acknowledged by the engine, samples
/// waiting), read beside the running hub.
fn export_state(db: &Path) -> Option<(i64, i64)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    let after = cloud_hub::influx::cursor(&park_db::Connection::sqlite(&c)).ok()?;
    let newest: i64 = c
        .query_row("SELECT coalesce(max(rowid), 0) FROM raw", [], |r| r.get(0))
        .ok()?;
    Some((after, newest - after))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn victoria_metrics_gets_every_sample_once_across_a_killed_hub_and_a_restarted_engine() {
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let vm_data = dir.path().join("vm");
    let mut vm = victoria_metrics(&vm_data, vm_port);

    // A fixed QUIC port, so that the edge finds the hub again after its restart.
    let config = hub_config(dir.path(), free_udp_port());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[influx]\nurl = \"http://127.0.0.1:{vm_port}\"\nbatch_samples = 500\n"
    ));
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("hub-data/hub.sqlite");
    let mut hub = Hub::start(&config);
    let (_, identity) = enroll(&config, &hub, dir.path());
    let (device, device_addr) = crate::support::modbus_tcp_device();
    let mut edge = Edge::start(
        dir.path(),
        &format!(
            "[sync]\nhub = \"{}\"\nidentity_dir = \"{}\"\nraw_block_samples = 200\n\n\
             [[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 50\ntimeout_ms = 1000\n\
             modbus_tcp = {{ address = \"{}\", unit = 1 }}\n",
            hub.quic,
            identity.display(),
            device_addr
        ),
    );
    let acknowledged = |at_least: i64| {
        export_state(&db)
            .filter(|(done, _)| *done >= at_least)
            .map(|(done, _)| done)
    };
    let first = eventually(
        "samples written to the engine",
        Duration::from_secs(60),
        || acknowledged(500),
    );

    // The hub dies mid-export and comes back on the same database: it goes on from its
    // cursor, and the edge reconnects on its own.
    hub.proc.kill9();
    hub = Hub::start(&config);
    let second = eventually(
        "samples written after the hub's restart",
        Duration::from_secs(60),
        || acknowledged(first + 500),
    );

    // The engine goes away for a while (a graceful stop, as an upgrade does) and returns;
    // the hub keeps the samples meanwhile and goes on where the engine left off.
    vm.signal("TERM");
    let _ = vm.child.wait();
    std::thread::sleep(Duration::from_secs(5));
    vm = victoria_metrics(&vm_data, vm_port);
    eventually(
        "samples written after the engine's restart",
        Duration::from_secs(60),
        || acknowledged(second + 500),
    );

    // The device and then the edge stop, so the hub's samples are final; once the hub's
    // backlog to the engine is empty, the two agree sample for sample.
    drop(device);
    std::thread::sleep(Duration::from_secs(5));
    edge.proc.kill9();
    eventually(
        "the hub's backlog to the engine to empty",
        Duration::from_secs(120),
        || (export_state(&db)?.1 == 0).then_some(()),
    );
    let (_, points) = http_as(
        &hub.token,
        "GET",
        &format!("{}/api/v1/parks/hil/buildings/b1/points", hub.api),
        None,
    );
    let names: Vec<String> = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["point"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "dev/voltage"), "{points}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut hub_samples: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    // The numbers among them, as (ms, value): the engine must hold the values too.
    let mut hub_numbers: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for name in &names {
        let (status, body) = http_as(
            &hub.token,
            "GET",
            &format!(
                "{}/api/v1/parks/hil/buildings/b1/points/{name}/history?resolution=raw&from={}&to={}&limit=100000",
                hub.api,
                now - 3_600_000_000,
                now + 60_000_000
            ),
            None,
        );
        assert_eq!(status, 200, "{name}: {body}");
        let rows = body["rows"].as_array().unwrap();
        let ts: Vec<i64> = rows
            .iter()
            .map(|r| r["ts"].as_i64().unwrap() / 1000)
            .collect();
        let numbers: BTreeMap<i64, f64> = rows
            .iter()
            .filter_map(|r| Some((r["ts"].as_i64()? / 1000, r["value"].as_f64()?)))
            .collect();
        if !numbers.is_empty() {
            hub_numbers.insert(name.clone(), numbers);
        }
        if !ts.is_empty() {
            hub_samples.insert(name.clone(), ts);
        }
    }
    let engine = eventually(
        "the engine to hold as many samples as the hub",
        Duration::from_secs(60),
        || {
            let e = engine_samples(vm_port);
            let n: usize = e.values().map(Vec::len).sum();
            let want: usize = hub_samples.values().map(Vec::len).sum();
            (n >= want).then_some(e)
        },
    );
    let total: usize = hub_samples.values().map(Vec::len).sum();
    assert!(total > 1000, "only {total} samples went through");
    for (name, ts) in &hub_samples {
        let hub_set: BTreeSet<i64> = ts.iter().copied().collect();
        let got = engine.get(name).cloned().unwrap_or_default();
        let engine_set: BTreeSet<i64> = got.iter().copied().collect();
        assert_eq!(
            got.len(),
            engine_set.len(),
            "{name}: a sample is in the engine twice"
        );
        assert_eq!(
            engine_set, hub_set,
            "{name}: the engine holds exactly the hub's samples"
        );
    }
    assert_eq!(
        engine.keys().collect::<BTreeSet<_>>(),
        hub_samples.keys().collect::<BTreeSet<_>>()
    );
    // And every number with its value, as the hub stored it.
    assert!(hub_numbers.contains_key("dev/voltage"), "{hub_numbers:?}");
    let values = engine_series(vm_port, "value");
    for (name, numbers) in &hub_numbers {
        let got: BTreeMap<i64, f64> = values
            .get(name)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert_eq!(&got, numbers, "{name}: the engine's values are the hub's");
    }
    drop(vm);
}
