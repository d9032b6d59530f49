//! `smartpark bench console`: the edge console in Chromium against the demo. Starts
//! `smartpark demo` on free ports, logs in as its facility engineer, and runs
//! `ui/edge-console/bench/console.mjs` (Playwright with Debian's Chromium), which prints
//! the figures. Needs `ui/node_modules` (`scripts/build-ui`) and a binary with the console
//! built in.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

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

pub async fn run(runs: u64) -> anyhow::Result<()> {
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
