//! Support for the BACnet integration tests: a bacpypes3 device (`tests/hil/peers/
//! bacnet_device.py`) started from the repository's Python venv, a `DriverOutput` that
//! collects into a channel, and builders for BACnet device specs.
//!
//! Each test gives its device its own loopback address (127.0.0.x, all of which route to
//! `lo`) and its client its own local port, so tests run in parallel without meeting.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use device_drivers::bacnet::Network;
use device_drivers::device::{BacnetLink, BacnetPort};
use device_drivers::{Connection, DeviceSpec, Profile, Sample};
use tokio::sync::mpsc;

/// Every test runs under this guard so that a regression hangs nothing.
pub const GUARD: Duration = Duration::from_secs(90);

pub async fn guarded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(GUARD, test)
        .await
        .expect("the test did not finish within its guard time")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with bacpypes3: `SMARTPARK_PYTHON` (set by `scripts/test`), or the repository's
/// `.venv`. Its absence fails the test with what to do, rather than skipping it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SMARTPARK_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no Python with bacpypes3 at {}: run the tests through scripts/test, which prepares \
         .venv, or `python3 -m venv .venv && .venv/bin/pip install -r tests/hil/requirements.txt`",
        p.display()
    );
    p
}

/// A bacpypes3 device process, killed (SIGKILL) when dropped.
pub struct Peer {
    child: Child,
    pub address: Ipv4Addr,
    pub instance: u32,
    args: Vec<String>,
    /// What the device printed after READY, a line at a time.
    lines: mpsc::UnboundedReceiver<String>,
}

impl Peer {
    /// Starts a device at `address`:47808 with `instance` and extra arguments of the
    /// script, and waits until it says READY.
    pub fn start(address: Ipv4Addr, instance: u32, extra: &[&str]) -> Peer {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, lines) = spawn(address, instance, &args);
        Peer {
            child,
            address,
            instance,
            args,
            lines,
        }
    }

    /// Skips the lines the device prints until `f` picks one.
    pub async fn line<T>(&mut self, mut f: impl FnMut(&str) -> Option<T>) -> T {
        loop {
            let line = self
                .lines
                .recv()
                .await
                .expect("the bacpypes3 device closed its stdout");
            if let Some(found) = f(&line) {
                return found;
            }
        }
    }

    pub fn socket(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.address, 47808)
    }

    /// Kills the device at once, as a power cut would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the device again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        (self.child, self.lines) = spawn(self.address, self.instance, &self.args);
    }
}

fn spawn(
    address: Ipv4Addr,
    instance: u32,
    extra: &[String],
) -> (Child, mpsc::UnboundedReceiver<String>) {
    let script = repo().join("tests/hil/peers/bacnet_device.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(["--address", &address.to_string()])
        .args(["--instance", &instance.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (lines_tx, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("READY") {
                let _ = tx.send(());
            } else {
                let _ = lines_tx.send(line);
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the bacpypes3 device at {address} did not get ready within 60 s");
    }
    (child, lines)
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network on `local_port` whose broadcasts reach devices on 127/8 port 47808.
pub fn loopback_port(local_port: u16) -> BacnetPort {
    BacnetPort {
        local: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port),
        broadcast: SocketAddrV4::new(Ipv4Addr::new(127, 255, 255, 255), 47808),
        bbmd: None,
    }
}

pub fn network(local_port: u16, timeout: Duration) -> Network {
    Network::new(loopback_port(local_port), timeout)
}

/// A BACnet profile from its `[[point]]` tables (and optional `[bacnet]` table first).
pub fn profile(body: &str) -> Arc<Profile> {
    let text = format!(
        "id = \"t\"\nprotocol = \"bacnet\"\nmanufacturer = \"test\"\nmodel = \"bacnet_device.py\"\n\
         source = \"tests\"\n{body}"
    );
    Arc::new(Profile::parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}")))
}

pub fn device(
    id: &str,
    profile: Arc<Profile>,
    peer: &Peer,
    local_port: u16,
    poll: Duration,
    timeout: Duration,
) -> DeviceSpec {
    DeviceSpec {
        id: id.into(),
        name: None,
        profile,
        poll_interval: poll,
        timeout,
        inter_request_delay: Duration::ZERO,
        connection: Connection::Bacnet(BacnetLink {
            instance: peer.instance,
            address: Some(peer.socket()),
            port: loopback_port(local_port),
            max_in_flight: 1,
        }),
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[path = "../common/collector.rs"]
mod collector;
pub use collector::{Event, Events, collector};

impl Events {
    /// The next sample of `point` (the point's name), skipping everything else.
    pub async fn sample_of(&mut self, point: &str) -> Sample {
        self.until(|e| match e {
            Event::Samples(batch) => batch.iter().find(|s| s.point.point() == point).cloned(),
            _ => None,
        })
        .await
    }

    /// The next batch that holds a sample of every point in `points`, as a map by name.
    pub async fn batch_with(&mut self, points: &[&str]) -> BTreeMap<String, Sample> {
        self.until(|e| match e {
            Event::Samples(batch) => {
                let map: BTreeMap<String, Sample> = batch
                    .iter()
                    .map(|s| (s.point.point().to_string(), s.clone()))
                    .collect();
                points.iter().all(|p| map.contains_key(*p)).then_some(map)
            }
            _ => None,
        })
        .await
    }
}
