//! Every metric of the hub, defined here so they can be found in one place, and their
//! Prometheus text rendering. Names start with `smartpark_hub_`; counters end in `_total`.
//!
//! Plain atomics, no registry: the hot path (a stored batch) pays a relaxed add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! metrics {
    ($($name:ident: $kind:literal, $help:literal;)*) => {
        /// The hub's counters and gauges.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Logins, refusals and sessions of the API.
            pub auth: std::sync::Arc<accounts::AuthMetrics>,
        }

        impl Metrics {
            /// Prometheus text exposition of every metric.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("smartpark_hub_", stringify!($name));
                    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}\n{name} {}",
                        $help, $kind, self.$name.load(Relaxed));
                )*
                self.auth.render("smartpark_hub", &mut out);
                out
            }
        }
    };
}

metrics! {
    payment_notices_total: "counter", "Payment provider notifications received.";
    payment_notices_refused_total: "counter", "Payment provider notifications refused (unreadable, badly signed, not this merchant's, unknown order, wrong amount).";
    payment_notices_replayed_total: "counter", "Payment provider notifications of payments already recorded (acknowledged, nothing applied).";
    bank_rows_refused_total: "counter", "Bank statement rows refused as unreadable.";
    edges_connected: "gauge", "Edges with a sync session up now.";
    connections_total: "counter", "Sync connections accepted.";
    connections_refused_total: "counter", "Sync connections refused by the hub after TLS (policy, replaced).";
    connections_replaced_total: "counter", "Sync connections closed because a newer one of the same building arrived.";
    connections_elsewhere_total: "counter", "Sync connections refused because another hub holds the building's lease.";
    frames_received_total: "counter", "Sync frames received.";
    bytes_received_total: "counter", "Sync frame bytes received.";
    frames_sent_total: "counter", "Sync frames sent.";
    events_stored_total: "counter", "Events stored (each once).";
    rollup_rows_stored_total: "counter", "Telemetry rollup rows stored.";
    raw_samples_stored_total: "counter", "Raw telemetry samples stored.";
    records_duplicate_total: "counter", "Upload records that arrived again and were already stored.";
    points_refused_total: "counter", "Telemetry series or rollup rows not stored: a point name over 256 bytes, or a building past 200,000 points.";
    records_gap_total: "counter", "Upload sequence numbers the edges reported gone before upload.";
    sink_busy_total: "counter", "Upload records refused because the writer queue was full (resent by the edge).";
    commits_total: "counter", "Store transactions committed.";
    commit_errors_total: "counter", "Store transactions that failed (retried).";
    write_ops_failed_total: "counter", "Queued store writes that failed and were rolled back alone (each a bug to look into).";
    documents_messages_total: "counter", "Automerge sync messages received from edges.";
    documents_changed_total: "counter", "Document changes taken from edges and stored.";
    documents_refused_total: "counter", "Document messages refused because their building may not make what they change (or name a document it may not have); audited.";
    documents_malformed_total: "counter", "Document messages refused as malformed or over a limit (compressed or run-length bombs, Bloom filters).";
    enrollments_total: "counter", "Edges enrolled.";
    certificates_renewed_total: "counter", "Edge certificates renewed over the sync connection and installed by the edge.";
    enrollments_refused_total: "counter", "Enrollment requests refused.";
    protocol_errors_total: "counter", "Sync sessions ended by a protocol violation or an undecodable frame.";
    http_requests_total: "counter", "HTTP API requests.";
    influx_samples_written_total: "counter", "Raw samples the time-series engine acknowledged.";
    influx_samples_refused_total: "counter", "Raw samples the time-series engine refused as malformed (400); skipped.";
    influx_requests_total: "counter", "Write requests the time-series engine acknowledged.";
    influx_errors_total: "counter", "Write requests that failed (engine away, token refused, server error); retried.";
    influx_backlog_samples: "gauge", "Raw samples stored but not yet acknowledged by the time-series engine.";
    http_client_errors_total: "counter", "HTTP API requests answered with a 4xx.";
    tls_handshake_failures_total: "counter", "TLS handshakes on the HTTP API that failed (plain HTTP on the HTTPS port, a refused certificate, a timeout).";
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
