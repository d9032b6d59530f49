//! `smartpark bench console`: the edge console in Chromium. First against the demo: starts
//! `smartpark demo` on free ports, logs in as its facility engineer, and runs
//! `ui/edge-console/bench/console.mjs` (first screen, JavaScript at first load). Then
//! against a building of 5,000 points (ten MQTT panels of 500 points each, fed by this
//! process through the edge's broker): `ui/edge-console/bench/list.mjs` scrolls the point
//! list end to end and follows the live view while this process publishes 1,000 point
//! updates a second. Both scripts use Playwright with Debian's Chromium and print the
//! figures. Needs `ui/node_modules` (`scripts/build-ui`) and a binary with the console built
//! in.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use edge_node::{EdgeNode, EdgeSettings};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// The repository's `ui/` folder, from the current directory up.
fn ui_dir() -> anyhow::Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        let ui = dir.join("ui/edge-console/bench/console.mjs");
        if ui.exists() {
            return Ok(dir.join("ui"));
        }
        if !dir.pop() {
            anyhow::bail!(
                "run this from the repository: ui/edge-console/bench/console.mjs not found"
            );
        }
    }
}

pub async fn run(runs: u64, seconds: u64) -> anyhow::Result<()> {
    first_screen(runs).await?;
    long_list(seconds).await
}

/// The first screen and the JavaScript it loads, against the demo.
async fn first_screen(runs: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        edge_node::console::is_built(),
        "this binary has no console built in: run scripts/build-ui, then build smartpark again"
    );
    let ui = ui_dir()?;
    anyhow::ensure!(
        ui.join("node_modules/@playwright/test").exists(),
        "ui/node_modules is missing: run scripts/build-ui"
    );
    let data = tempfile::tempdir()?;
    let mut demo = Command::new(std::env::current_exe()?)
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(data.path())
        .arg("--profiles")
        .arg(ui.join("../firmware-configs/profiles"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the demo")?;
    let stdout = demo.stdout.take().context("no demo output")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut api, mut password) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.is_none() || password.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .context("the demo did not print its API and logins in time")?;
        if let Some(rest) = line.strip_prefix("ready api=") {
            api = rest.split_whitespace().next().map(str::to_string);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"engineer") && words.len() > 1 {
            password = Some(words[1].to_string());
        }
    }
    let (api, password) = (api.unwrap_or_default(), password.unwrap_or_default());
    // Let the devices report and the first values commit.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let out = Command::new("node")
        .current_dir(&ui)
        .arg("edge-console/bench/console.mjs")
        .args([
            api.as_str(),
            "engineer",
            password.as_str(),
            &runs.to_string(),
        ])
        .output()
        .context("cannot run node")?;
    let _ = demo.kill();
    let _ = demo.wait();
    anyhow::ensure!(
        out.status.success(),
        "the console benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// Panels in the large building, and points on each: 5,000 points in all.
const PANELS: usize = 10;
const PANEL_POINTS: usize = 500;
/// The live phase's rate, in point updates a second, and how often a message goes out.
const LIVE_RATE: usize = 1_000;
const LIVE_TICK: Duration = Duration::from_millis(100);
/// The points the live phase updates: the first page of the list, which the view follows
/// when it shows the top of the list.
const LIVE_POINTS: usize = 100;
const ENGINEER_PASSWORD: &str = "bench-quiet-harbour-lantern";

/// A device profile of `PANEL_POINTS` numbered points, all in one JSON message per panel.
fn panel_profile() -> String {
    let mut out = String::from(
        "id = \"bench-panel\"\nprotocol = \"mqtt\"\nmanufacturer = \"smartpark\"\nmodel = \"Benchmark panel\"\n\
         description = \"A panel that reports all its points in one JSON message on bench/{device}/state.\"\n\
         source = \"smartpark bench console\"\n\n",
    );
    for i in 0..PANEL_POINTS {
        let _ = write!(
            out,
            "[[point]]\nname = \"p{i:03}\"\nunit = \"kW\"\ntopic = \"bench/{{device}}/state\"\npointer = \"/p{i:03}\"\n\n"
        );
    }
    out
}

/// One message of panel `panel`: points `0..points` at `value` (plus their index).
fn panel_message(points: usize, value: u64) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    for i in 0..points {
        body.insert(format!("p{i:03}"), serde_json::json!(value + i as u64));
    }
    serde_json::Value::Object(body).to_string().into_bytes()
}

/// Starts an edge with the panels (anonymous MQTT, as a lab) and a facility engineer.
async fn large_edge(dir: &Path) -> anyhow::Result<EdgeNode> {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles)?;
    std::fs::write(profiles.join("bench-panel.toml"), panel_profile())?;
    let mut config = String::from(
        "[node]\npark = \"bench\"\nbuilding = \"b1\"\ndata_dir = \"data\"\nprofiles_dir = \"profiles\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n[business]\nenabled = false\n",
    );
    for p in 0..PANELS {
        let _ = write!(
            config,
            "\n[[device]]\nid = \"panel-{p:02}\"\nname = \"Panel {p}\"\nprofile = \"bench-panel\"\nmqtt = {{ topic_id = \"panel-{p:02}\" }}\n"
        );
    }
    let file = dir.join("edge.toml");
    std::fs::write(&file, config)?;
    let node = EdgeNode::start(EdgeSettings::load(&file)?).await?;
    crate::bench_auth::add_engineer(&node, "engineer", ENGINEER_PASSWORD).await?;
    Ok(node)
}

/// An MQTT client of the edge's broker whose event loop runs on its own.
fn publisher(node: &EdgeNode) -> anyhow::Result<AsyncClient> {
    let broker = node.mqtt.context("the edge has no broker")?;
    let mut options = MqttOptions::new(
        format!("bench-panels-{}", fastrand::u32(..)),
        broker.ip().to_string(),
        broker.port(),
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1_000);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    Ok(client)
}

/// Waits until every point of the building has a value in the store.
async fn wait_for_values(node: &EdgeNode) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = node.store.latest().len();
        if have >= PANELS * PANEL_POINTS {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {have} of {} points have a value after 60 s",
            PANELS * PANEL_POINTS
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The point list and the live view, against the large building.
async fn long_list(seconds: u64) -> anyhow::Result<()> {
    let ui = ui_dir()?;
    let dir = tempfile::tempdir()?;
    let node = large_edge(dir.path()).await?;
    let client = publisher(&node)?;
    for p in 0..PANELS {
        client
            .publish(
                format!("bench/panel-{p:02}/state"),
                QoS::AtLeastOnce,
                false,
                panel_message(PANEL_POINTS, 1_000),
            )
            .await?;
    }
    wait_for_values(&node).await?;

    let url = format!("http://{}", node.api_addr);
    let mut script = tokio::process::Command::new("node")
        .current_dir(&ui)
        .arg("edge-console/bench/list.mjs")
        .args([url.as_str(), "engineer", ENGINEER_PASSWORD])
        .arg(seconds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run node")?;
    let mut to_script = script.stdin.take().context("no stdin")?;
    let mut from_script =
        tokio::io::BufReader::new(script.stdout.take().context("no stdout")?).lines();
    let mut figures = String::new();
    while let Some(line) = from_script.next_line().await? {
        if line == "live" {
            // The page shows the top of the list and follows it: publish LIVE_RATE updates
            // a second to its points for `seconds`, then a last, known value.
            let per_tick = LIVE_RATE * LIVE_TICK.as_millis() as usize / 1000 / LIVE_POINTS;
            let start = Instant::now();
            let mut tick = tokio::time::interval(LIVE_TICK);
            let mut value = 2_000u64;
            let mut sent = 0usize;
            while start.elapsed() < Duration::from_secs(seconds.max(1)) {
                tick.tick().await;
                for _ in 0..per_tick.max(1) {
                    value += 1_000;
                    client
                        .publish(
                            "bench/panel-00/state",
                            QoS::AtMostOnce,
                            false,
                            panel_message(LIVE_POINTS, value),
                        )
                        .await?;
                    sent += LIVE_POINTS;
                }
            }
            let offered = sent as f64 / start.elapsed().as_secs_f64();
            value += 1_000;
            client
                .publish(
                    "bench/panel-00/state",
                    QoS::AtLeastOnce,
                    false,
                    panel_message(LIVE_POINTS, value),
                )
                .await?;
            to_script
                .write_all(format!("done {value} {sent} {offered:.0}\n").as_bytes())
                .await?;
            to_script.flush().await?;
        } else {
            figures.push_str(&line);
            figures.push('\n');
        }
    }
    let out = script.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "the list benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{figures}");
    node.shutdown().await;
    Ok(())
}
