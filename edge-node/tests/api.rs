//! The LAN API against hostile and malformed requests, and its live stream, on a node with
//! no devices (samples are handed to the store directly).

use std::path::Path;
use std::time::Duration;

use device_drivers::{PointKey, Sample, Value, now_micros};
use edge_node::{EdgeNode, EdgeSettings};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn node(dir: &Path) -> EdgeNode {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let text = format!(
        "[node]\npark = \"p\"\nbuilding = \"b\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nenabled = false\n[business]\nenabled = false\n\n\
         [[device]]\nid = \"env\"\nprofile = \"tasmota-am2301\"\nmqtt = {{ topic_id = \"env\" }}\n",
        profiles.display()
    );
    let file = dir.join("edge.toml");
    std::fs::write(&file, &text).unwrap();
    EdgeNode::start(EdgeSettings::load(&file).unwrap())
        .await
        .unwrap()
}

/// Sends raw bytes and returns the status code and the body.
async fn raw(node: &EdgeNode, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn request(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn error_body(body: &str) -> Json {
    let j: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    for field in ["code", "message", "traceId"] {
        assert!(j[field].is_string(), "error without {field}: {j}");
    }
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_json_errors_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let json = "application/json";
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"value\": ",
            ),
            400,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"valu\": 1}",
            ),
            422,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                "text/plain",
                b"{\"value\": 1}",
            ),
            415,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                &vec![b' '; 100_000],
            ),
            413,
            "invalid_body",
        ),
        (
            request(
                "POST",
                "/api/v1/points/env/temperature/write",
                json,
                b"{\"value\": 1}",
            ),
            409,
            "not_writable",
        ),
        (
            request("GET", "/api/v1/points/env/nothing", "", b""),
            404,
            "not_found",
        ),
        (
            request("GET", "/api/v1/points/..%2F..%2Fetc/passwd", "", b""),
            404,
            "not_found",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?from=abc",
                "",
                b"",
            ),
            400,
            "invalid_query",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?from=10&to=5",
                "",
                b"",
            ),
            400,
            "bad_request",
        ),
        (
            request(
                "GET",
                "/api/v1/points/env/temperature/history?resolution=5s",
                "",
                b"",
            ),
            400,
            "bad_request",
        ),
        (
            request("GET", "/api/v1/stream?points=no-slash", "", b""),
            400,
            "bad_request",
        ),
        (request("GET", "/no/such/route", "", b""), 404, "not_found"),
    ];
    let n = cases.len() as u64;
    for (req, status, code) in cases {
        let (got, body) = raw(&node, &req).await;
        assert_eq!(
            got,
            status,
            "{}: {body}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
        assert_eq!(error_body(&body)["code"], code, "{body}");
    }
    // Garbage that is not HTTP at all is dropped without harming the server.
    let (got, _) = raw(&node, b"\x16\x03\x01\x00\xa5 not http at all\r\n\r\n").await;
    assert_ne!(got, 200);
    let (status, body) = raw(&node, &request("GET", "/health", "", b"")).await;
    assert_eq!(status, 200, "{body}");
    let m = &node.store.metrics();
    assert!(
        m.http_client_errors_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= n
    );
    assert!(m.invalid_input_count("http_request") >= n);
    let (_, metrics) = raw(&node, &request("GET", "/metrics", "", b"")).await;
    assert!(metrics.contains("smartpark_edge_invalid_input_total{kind=\"http_request\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_sends_committed_samples_of_the_chosen_points() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut s = TcpStream::connect(node.api_addr).await.unwrap();
    s.write_all(b"GET /api/v1/stream?points=env/temperature HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Wait for the headers so that the subscription exists before samples arrive.
    while !seen.contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let ts = now_micros();
    node.store
        .ingest(vec![
            Sample::good(PointKey::new("env", "humidity"), ts, Value::Float(40.0)),
            Sample::good(PointKey::new("env", "temperature"), ts, Value::Float(21.5)),
        ])
        .await;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = seen.lines().find(|l| l.starts_with("data: [")) {
                return line.to_string();
            }
        }
    })
    .await
    .expect("a samples event");
    let items: Json = serde_json::from_str(line_data(&found)).unwrap();
    assert_eq!(
        items.as_array().unwrap().len(),
        1,
        "only the chosen point: {items}"
    );
    assert_eq!(items[0]["point"], "env/temperature");
    assert_eq!(items[0]["value"], 21.5);
    assert!(seen.contains("event: samples"));
}

fn line_data(line: &str) -> &str {
    line.strip_prefix("data: ").unwrap()
}
