//! `kill -9` of the edge during ingest: every sample the API reported stored is still there
//! after a restart, and the store opens cleanly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Edge, eventually, modbus_tcp_device, mosquitto_pub};

fn history(edge: &Edge, key: &str) -> BTreeSet<i64> {
    // Raw history is asked for at most 6 hours at a time: this test's samples are all
    // within the last hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let (from, to) = (now - 3_600_000_000, now + 3_600_000_000);
    let (status, body) = edge.get(&format!(
        "/api/v1/points/{key}/history?resolution=raw&from={from}&to={to}&limit=100000"
    ));
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts"].as_i64().unwrap())
        .collect()
}

#[test]
fn kill_9_during_ingest_loses_nothing_that_was_reported_stored() {
    let (_device, addr) = modbus_tcp_device();
    let dir = tempfile::tempdir().unwrap();
    let devices = format!(
        "[[device]]\nid = \"dev\"\nprofile = \"hil-modbus-device\"\npoll_interval_ms = 20\ntimeout_ms = 1000\n\
         modbus_tcp = {{ address = \"{addr}\", unit = 1 }}\n\n\
         [[device]]\nid = \"env\"\nprofile = \"tasmota-am2301\"\nmqtt = {{ topic_id = \"env\" }}\n"
    );
    let mut edge = Edge::start(dir.path(), &devices);
    eventually("samples flowing", Duration::from_secs(20), || {
        (edge.raw_count("dev/voltage") > 20).then_some(())
    });

    // MQTT publishers keep going while the edge dies.
    let stop = Arc::new(AtomicBool::new(false));
    let broker = edge.mqtt;
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!(
                    r#"{{"AM2301":{{"Temperature":{}.5,"Humidity":40,"DewPoint":5}}}}"#,
                    n % 30
                );
                let _ = std::panic::catch_unwind(|| {
                    mosquitto_pub(
                        broker,
                        &["-q", "1", "-t", "tele/env/SENSOR", "-m", &payload],
                    )
                });
                n += 1;
            }
        })
    };

    // Collect what the API reports as stored, right up to the kill.
    let mut seen_dev = BTreeSet::new();
    let mut seen_env = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        seen_dev.extend(history(&edge, "dev/voltage"));
        seen_env.extend(history(&edge, "env/temperature"));
    }
    seen_dev.extend(history(&edge, "dev/voltage"));
    edge.proc.kill9();
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    assert!(
        seen_dev.len() > 50,
        "too few samples seen before the kill: {}",
        seen_dev.len()
    );
    assert!(!seen_env.is_empty(), "no MQTT samples seen before the kill");

    let edge = Edge::start_with(edge.config.clone());
    let (status, _) = edge.get("/ready");
    assert_eq!(status, 200, "the store must open cleanly after kill -9");
    let after_dev = history(&edge, "dev/voltage");
    let after_env = history(&edge, "env/temperature");
    let lost_dev: Vec<_> = seen_dev.difference(&after_dev).collect();
    let lost_env: Vec<_> = seen_env.difference(&after_env).collect();
    assert!(
        lost_dev.is_empty(),
        "{} reported samples lost: {:?}",
        lost_dev.len(),
        &lost_dev[..lost_dev.len().min(5)]
    );
    assert!(
        lost_env.is_empty(),
        "{} reported MQTT samples lost",
        lost_env.len()
    );
    // And the restarted node goes on storing.
    let n = after_dev.len();
    eventually(
        "ingest resumed after the restart",
        Duration::from_secs(20),
        || (history(&edge, "dev/voltage").len() > n).then_some(()),
    );
}
