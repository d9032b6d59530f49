//! `smartpark bench bacnet`: full scans of a 2,000-point BACnet/IP device, and how long the
//! device takes to answer a Who-Is. The device is the bacpypes3 test peer
//! (`tests/hil/peers/bacnet_device.py`) on 127.0.0.2 and a UDP port the OS had free, run by
//! the repository's Python venv; the client is the driver's own `scan_once`, on a local
//! port the OS picks.
//!
//! A scan is timed from the first ReadPropertyMultiple to the last sample: finding the
//! device and reading its name are left out, as they happen once per connection. It does
//! not measure COV, writes or a device on a real network.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use device_drivers::bacnet::{self, DiscoverOptions, Network};
use device_drivers::device::{BacnetLink, BacnetPort};
use device_drivers::{Connection, DeviceSpec, Profile, Quality, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::bench::quantile;

const POINTS: usize = 2000;
/// The first scan is the cold one; the figures come from the others.
const WARM_SCANS: usize = 5;
const WHO_IS_ROUNDS: usize = 5;
const DEVICE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const INSTANCE: u32 = 2000;
const APDU_TIMEOUT: Duration = Duration::from_secs(2);
const PEER: &str = "tests/hil/peers/bacnet_device.py";

pub async fn run() -> anyhow::Result<()> {
    let (root, python) = find_python()?;
    let port = free_udp_port()?;
    let device = SocketAddrV4::new(DEVICE_ADDRESS, port);
    let mut peer = Peer::start(&root, &python, device).await?;
    let network = Network::new(
        BacnetPort {
            local: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            broadcast: SocketAddrV4::new(Ipv4Addr::new(127, 255, 255, 255), port),
            bbmd: None,
        },
        APDU_TIMEOUT,
    );

    // Who-Is for the device's instance, sent the way discovery sends it, until its I-Am
    // arrives. The first round also opens the local port.
    let options = DiscoverOptions {
        low: INSTANCE,
        high: INSTANCE,
        wait: Duration::from_secs(5),
        stop_after: Some(1),
        read_objects: false,
        ..DiscoverOptions::default()
    };
    let mut who_is_ms = Vec::with_capacity(WHO_IS_ROUNDS + 1);
    for _ in 0..=WHO_IS_ROUNDS {
        let started = Instant::now();
        let found = bacnet::discover(&network, &options)
            .await
            .context("Who-Is failed")?;
        let took = started.elapsed();
        match found.first() {
            Some(d) if d.address == Some(device) => {}
            Some(d) => bail!(
                "device {INSTANCE} answered from {:?}, not {device}",
                d.address
            ),
            None => bail!(
                "device {INSTANCE} at {device} did not answer a Who-Is within {:?}",
                options.wait
            ),
        }
        who_is_ms.push(took.as_secs_f64() * 1000.0);
    }

    let spec = DeviceSpec {
        id: "bench-bacnet".into(),
        name: None,
        profile: bulk_profile()?,
        poll_interval: Duration::from_secs(60),
        timeout: APDU_TIMEOUT,
        inter_request_delay: Duration::ZERO,
        connection: Connection::Bacnet(BacnetLink {
            instance: INSTANCE,
            address: Some(device),
            port: network.port().clone(),
            max_in_flight: 1,
        }),
    };
    let mut scans_s = Vec::with_capacity(WARM_SCANS + 1);
    for _ in 0..=WARM_SCANS {
        let (samples, took) = bacnet::scan_once(&spec, &network)
            .await
            .with_context(|| format!("scanning device {INSTANCE} at {device} failed"))?;
        check_scan(&samples)?;
        scans_s.push(took.as_secs_f64());
    }
    peer.stop().await;

    let cold_who_is = who_is_ms[0];
    let mut warm_who_is = who_is_ms[1..].to_vec();
    warm_who_is.sort_by(f64::total_cmp);
    let cold = scans_s[0];
    let mut warm = scans_s[1..].to_vec();
    warm.sort_by(f64::total_cmp);
    let median = quantile(&warm, 0.5);
    println!("bacnet_points: {POINTS} points");
    println!("bacnet_discovery_cold_ms: {cold_who_is:.2} ms");
    println!("bacnet_discovery_ms: {:.2} ms", quantile(&warm_who_is, 0.5));
    println!("bacnet_scan_cold_s: {cold:.3} s");
    println!("bacnet_scan_2000_points_s: {median:.3} s");
    println!("bacnet_scan_max_s: {:.3} s", quantile(&warm, 1.0));
    println!(
        "bacnet_points_per_s: {:.0} points/s",
        POINTS as f64 / median
    );
    Ok(())
}

/// The repository root and the Python to run the peer with: `SMARTPARK_PYTHON` when set,
/// otherwise `.venv/bin/python` of the first folder holding the peer script, looking from
/// the current directory up, then from the executable's folder up (so that
/// `target/release/smartpark` finds the checkout it was built in). Checks that it has
/// bacpypes3.
fn find_python() -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut starts = vec![std::env::current_dir().context("no current directory")?];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    let root = starts
        .iter()
        .flat_map(|s| s.ancestors())
        .find(|d| d.join(PEER).is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "bench bacnet runs the test device {PEER} of the smartpark repository and found \
                 none above the current directory or the executable: run it from the checkout"
            )
        })?;
    let python = match std::env::var_os("SMARTPARK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => root.join(".venv/bin/python"),
    };
    let setup = "run ./scripts/test once (it creates .venv), or `python3 -m venv .venv && \
                 .venv/bin/pip install -r tests/hil/requirements.txt` in the repository root";
    if !python.exists() {
        bail!(
            "bench bacnet needs a Python with bacpypes3 and found none at {}: {setup}",
            python.display()
        );
    }
    let check = std::process::Command::new(&python)
        .args(["-c", "import bacpypes3"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !check.status.success() {
        bail!(
            "{} cannot import bacpypes3 ({}): {setup}",
            python.display(),
            String::from_utf8_lossy(&check.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        );
    }
    Ok((root, python))
}

/// A UDP port free on every local address just now, for the device to listen on.
fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("cannot bind a UDP port")?;
    Ok(socket.local_addr()?.port())
}

/// The bacpypes3 device, killed when dropped.
struct Peer {
    child: tokio::process::Child,
}

impl Peer {
    async fn start(root: &Path, python: &Path, at: SocketAddrV4) -> anyhow::Result<Peer> {
        let mut child = tokio::process::Command::new(python)
            .arg(root.join(PEER))
            .args(["--address", &at.ip().to_string()])
            .args(["--port", &at.port().to_string()])
            .args(["--instance", &INSTANCE.to_string()])
            .args(["--points", &POINTS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", python.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("READY") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => Ok(Peer { child }),
            Ok(Ok(false)) => bail!(
                "the bacpypes3 device exited before it was ready ({})",
                child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string())
            ),
            Ok(Err(e)) => Err(e).context("cannot read the bacpypes3 device's output"),
            Err(_) => bail!("the bacpypes3 device at {at} was not ready within 60 s"),
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Analog inputs 1000 to 2999 of the peer, one point each.
fn bulk_profile() -> anyhow::Result<Arc<Profile>> {
    let mut text = String::from(
        "id = \"bench-bacnet\"\nprotocol = \"bacnet\"\nmanufacturer = \"smartpark tests\"\n\
         model = \"bacnet_device.py\"\nsource = \"smartpark bench bacnet\"\n",
    );
    for i in 0..POINTS {
        text.push_str(&format!(
            "[[point]]\nname = \"pt-{i}\"\nobject_type = \"analog-input\"\ninstance = {}\n",
            1000 + i
        ));
    }
    Ok(Arc::new(Profile::parse(
        Path::new("bench-bacnet.toml"),
        &text,
    )?))
}

/// A scan counts only if every point came back good with the value the peer serves.
fn check_scan(samples: &[device_drivers::Sample]) -> anyhow::Result<()> {
    if samples.len() != POINTS {
        bail!("the scan returned {} samples, not {POINTS}", samples.len());
    }
    for s in samples {
        let i: u32 = s
            .point
            .point()
            .strip_prefix("pt-")
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("the scan returned a sample of {}", s.point))?;
        // Point i is analog input 1000 + i, whose present value is i * 0.25.
        let expected = Value::Float(f64::from(i) * 0.25);
        if s.quality != Quality::Good || s.value.as_ref() != Some(&expected) {
            bail!(
                "point {} read as {:?} ({:?}), not {expected}",
                s.point,
                s.value,
                s.quality
            );
        }
    }
    Ok(())
}
