//! The edge node's metrics, all defined here so they can be found in one place, and their
//! Prometheus text rendering.
//!
//! Counters end in `_total`; units are in the names. Everything is a plain atomic so that
//! the hot path (ingest) pays one relaxed add per batch.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A latency histogram with fixed exponential buckets, in microseconds: eight buckets per
/// doubling from 10 µs to about 3 minutes, so a quantile is known within 10 %.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<u64>,
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        let bounds: Vec<u64> = (0..=8 * 24)
            .map(|i| (10.0 * 2f64.powf(i as f64 / 8.0)).round() as u64)
            .collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe_us(&self, us: u64) {
        self.observe_n_us(us, 1);
    }

    /// Records `n` observations of the same value (a batch that shared one commit).
    pub fn observe_n_us(&self, us: u64, n: u64) {
        let i = self.bounds.partition_point(|&b| b < us);
        self.counts[i].fetch_add(n, Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Relaxed);
        self.count.fetch_add(n, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The upper bound of the bucket holding quantile `q`, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= want {
                return self.bounds.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match self.bounds.get(i) {
                // Every doubling is enough for Prometheus; the finer buckets serve quantiles.
                Some(_) if i % 8 != 0 => {}
                Some(b) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        *b as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// A gauge family computed by the caller: name, help, and `(labels, value)` series.
pub type ExtraGauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

#[derive(Debug, Default)]
pub struct Metrics {
    pub samples_received_total: AtomicU64,
    pub samples_committed_total: AtomicU64,
    pub samples_bad_quality_total: AtomicU64,
    pub commits_total: AtomicU64,
    pub commit_errors_total: AtomicU64,
    pub commit_latency: Histogram,
    pub rollup_rows_written_total: AtomicU64,
    pub raw_rows_deleted_retention_total: AtomicU64,
    pub raw_rows_deleted_budget_total: AtomicU64,
    pub rollup_rows_deleted_budget_total: AtomicU64,
    pub counter_resets_total: AtomicU64,
    pub counter_wraps_total: AtomicU64,
    pub store_bytes: AtomicU64,
    pub store_budget_bytes: AtomicU64,
    pub writer_queue_batches: AtomicU64,
    /// Ops queued for the writer and not yet taken by it; a commit of samples stops early
    /// to let them in (see `store::Writer::commit`).
    pub writer_queue_ops: AtomicU64,
    pub mqtt_messages_total: AtomicU64,
    pub mqtt_unmapped_messages_total: AtomicU64,
    pub point_writes_total: AtomicU64,
    pub access_granted_total: AtomicU64,
    pub access_denied_total: AtomicU64,
    /// Door, barrier and display commands handed to the broker after their decision was
    /// stored, and those that were not sent (the decision's write failed, or the broker
    /// refused the command).
    pub commands_published_total: AtomicU64,
    pub commands_not_sent_total: AtomicU64,
    /// Field messages naming a door or lane this building does not have: refused.
    pub field_unknown_target_total: AtomicU64,
    /// Door reads repeated within the window (`field::REPEAT_WINDOW_*`): answered once.
    pub door_reads_repeated_total: AtomicU64,
    /// Payments whose id was already counted: recorded once.
    pub payments_repeated_total: AtomicU64,
    /// Payments in another currency than the fee's, or at another lane than the exit's:
    /// recorded, not counted towards the fee.
    pub payments_refused_total: AtomicU64,
    /// Low-confidence plate reads turned away because the review queue was full.
    pub review_queue_full_total: AtomicU64,
    /// Decisions whose write failed: their presence and parking changes were undone.
    pub decisions_undone_total: AtomicU64,
    pub point_write_failures_total: AtomicU64,
    pub http_requests_total: AtomicU64,
    pub http_client_errors_total: AtomicU64,
    /// TLS handshakes on the LAN API that failed; the server goes on.
    pub tls_handshake_failures_total: AtomicU64,
    pub rules_samples_total: AtomicU64,
    pub alarm_transitions_total: AtomicU64,
    pub rules_reloads_total: AtomicU64,
    pub rules_reload_errors_total: AtomicU64,
    pub rule_actions_total: AtomicU64,
    pub rule_action_failures_total: AtomicU64,
    pub webhook_outbox_due: AtomicU64,
    pub webhooks_delivered_total: AtomicU64,
    pub webhook_failures_total: AtomicU64,
    /// At the last start: time until doors could be decided, whether that came from the
    /// directory's row copy, and time until the directory document itself had loaded.
    pub directory_decide_ready_ms: AtomicU64,
    pub directory_from_copy: AtomicU64,
    pub directory_document_ready_ms: AtomicU64,
    /// Credential values and phone numbers found in clear in the park directory and
    /// rewritten as digests or deleted (`park::report_clear_values`).
    pub directory_clear_values_total: AtomicU64,
    /// Logins, refusals and sessions of the LAN API.
    pub auth: std::sync::Arc<accounts::AuthMetrics>,
    /// The building's broker and the node's links to it.
    pub broker: std::sync::Arc<crate::broker::BrokerHealth>,
    /// Invalid input by kind (`mqtt_payload`, `http_body`, ...), counted where it is refused.
    invalid_input: Mutex<Vec<(String, u64)>>,
}

impl Metrics {
    pub fn invalid_input(&self, kind: &str) {
        let mut v = self.invalid_input.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => v.push((kind.to_string(), 1)),
        }
    }

    pub fn invalid_input_count(&self, kind: &str) -> u64 {
        let v = self.invalid_input.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .find(|(k, _)| k == kind)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// Renders everything in the Prometheus text format; `extra` adds gauges computed by
    /// the caller (device states, for instance).
    pub fn render(&self, extra: &[ExtraGauge<'_>]) -> String {
        let mut out = String::with_capacity(4096);
        let counters: &[(&str, &AtomicU64, &str)] = &[
            (
                "smartpark_edge_access_granted_total",
                &self.access_granted_total,
                "Door access decisions that granted entry.",
            ),
            (
                "smartpark_edge_access_denied_total",
                &self.access_denied_total,
                "Door access decisions that denied entry.",
            ),
            (
                "smartpark_edge_commands_published_total",
                &self.commands_published_total,
                "Door, barrier and display commands handed to the broker once their decision was stored.",
            ),
            (
                "smartpark_edge_commands_not_sent_total",
                &self.commands_not_sent_total,
                "Commands not sent: their decision could not be stored, or the broker refused them.",
            ),
            (
                "smartpark_edge_field_unknown_target_total",
                &self.field_unknown_target_total,
                "Door and lane messages naming a door or lane this building does not have (refused, no command).",
            ),
            (
                "smartpark_edge_door_reads_repeated_total",
                &self.door_reads_repeated_total,
                "Door reads repeated within the documented window, answered once.",
            ),
            (
                "smartpark_edge_payments_repeated_total",
                &self.payments_repeated_total,
                "Lane payments whose id was already counted (recorded and counted once).",
            ),
            (
                "smartpark_edge_payments_refused_total",
                &self.payments_refused_total,
                "Lane payments in another currency than the fee or at another lane than the exit (recorded, not counted).",
            ),
            (
                "smartpark_edge_review_queue_full_total",
                &self.review_queue_full_total,
                "Low-confidence plate reads turned away because the review queue was full.",
            ),
            (
                "smartpark_edge_decisions_undone_total",
                &self.decisions_undone_total,
                "Door and lane decisions whose write failed; their presence and parking changes were undone.",
            ),
            (
                "smartpark_edge_samples_received_total",
                &self.samples_received_total,
                "Samples handed to the store by drivers.",
            ),
            (
                "smartpark_edge_samples_committed_total",
                &self.samples_committed_total,
                "Samples durably committed to SQLite.",
            ),
            (
                "smartpark_edge_samples_bad_quality_total",
                &self.samples_bad_quality_total,
                "Committed samples with bad or stale quality.",
            ),
            (
                "smartpark_edge_commits_total",
                &self.commits_total,
                "SQLite transactions committed by the writer.",
            ),
            (
                "smartpark_edge_commit_errors_total",
                &self.commit_errors_total,
                "Writer transactions that failed and were retried.",
            ),
            (
                "smartpark_edge_rollup_rows_written_total",
                &self.rollup_rows_written_total,
                "Rollup rows written (1 min, 15 min, 1 h).",
            ),
            (
                "smartpark_edge_raw_rows_deleted_retention_total",
                &self.raw_rows_deleted_retention_total,
                "Raw samples deleted because they passed the retention period.",
            ),
            (
                "smartpark_edge_raw_rows_deleted_budget_total",
                &self.raw_rows_deleted_budget_total,
                "Raw samples deleted early to keep within the disk budget.",
            ),
            (
                "smartpark_edge_rollup_rows_deleted_budget_total",
                &self.rollup_rows_deleted_budget_total,
                "1-minute rollups deleted to keep within the disk budget once no raw telemetry was left to delete.",
            ),
            (
                "smartpark_edge_counter_resets_total",
                &self.counter_resets_total,
                "Energy counters seen going back to zero (meter reset).",
            ),
            (
                "smartpark_edge_counter_wraps_total",
                &self.counter_wraps_total,
                "Energy counters seen wrapping at their register size.",
            ),
            (
                "smartpark_edge_mqtt_messages_total",
                &self.mqtt_messages_total,
                "MQTT publishes received from building devices.",
            ),
            (
                "smartpark_edge_mqtt_unmapped_messages_total",
                &self.mqtt_unmapped_messages_total,
                "MQTT publishes on topics no device profile maps.",
            ),
            (
                "smartpark_edge_mqtt_broker_restarts_total",
                &self.broker.restarts_total,
                "Times the building's MQTT broker stopped and was started again.",
            ),
            (
                "smartpark_edge_mqtt_refused_connections_total",
                &self.broker.refused_connections_total,
                "MQTT connections the broker refused for a bad or missing username or password.",
            ),
            (
                "smartpark_edge_mqtt_link_reconnects_total",
                &self.broker.link_reconnects_total,
                "Times a link of the node to its broker was lost and made again.",
            ),
            (
                "smartpark_edge_point_writes_total",
                &self.point_writes_total,
                "Point writes requested over the API.",
            ),
            (
                "smartpark_edge_point_write_failures_total",
                &self.point_write_failures_total,
                "Point writes that were refused or failed.",
            ),
            (
                "smartpark_edge_http_requests_total",
                &self.http_requests_total,
                "HTTP requests served.",
            ),
            (
                "smartpark_edge_http_client_errors_total",
                &self.http_client_errors_total,
                "HTTP requests answered with a 4xx status.",
            ),
            (
                "smartpark_edge_tls_handshake_failures_total",
                &self.tls_handshake_failures_total,
                "TLS handshakes on the LAN API that failed (plain HTTP on the HTTPS port, a refused certificate, a timeout).",
            ),
            (
                "smartpark_edge_rules_samples_total",
                &self.rules_samples_total,
                "Samples evaluated by the rules.",
            ),
            (
                "smartpark_edge_alarm_transitions_total",
                &self.alarm_transitions_total,
                "Alarm transitions (raised, cleared, acknowledged, ...), each stored as an event.",
            ),
            (
                "smartpark_edge_rules_reloads_total",
                &self.rules_reloads_total,
                "Rule files reloaded while running.",
            ),
            (
                "smartpark_edge_rules_reload_errors_total",
                &self.rules_reload_errors_total,
                "Rule files refused while running (the running rules stayed).",
            ),
            (
                "smartpark_edge_rule_actions_total",
                &self.rule_actions_total,
                "Actions asked for by rules.",
            ),
            (
                "smartpark_edge_rule_action_failures_total",
                &self.rule_action_failures_total,
                "Actions asked for by rules that failed.",
            ),
            (
                "smartpark_edge_webhook_outbox_due",
                &self.webhook_outbox_due,
                "Webhooks due for delivery at the last look.",
            ),
            (
                "smartpark_edge_webhooks_delivered_total",
                &self.webhooks_delivered_total,
                "Webhooks accepted by their receiver.",
            ),
            (
                "smartpark_edge_webhook_failures_total",
                &self.webhook_failures_total,
                "Webhook attempts that failed (each is retried).",
            ),
            (
                "smartpark_edge_directory_decide_ready_ms",
                &self.directory_decide_ready_ms,
                "At the last start, milliseconds until doors could be decided.",
            ),
            (
                "smartpark_edge_directory_from_copy",
                &self.directory_from_copy,
                "1 if the last start decided from the directory's row copy, 0 if from the document.",
            ),
            (
                "smartpark_edge_directory_document_ready_ms",
                &self.directory_document_ready_ms,
                "At the last start, milliseconds until the directory document had loaded.",
            ),
            (
                "smartpark_edge_directory_clear_values_total",
                &self.directory_clear_values_total,
                "Credential values and phone numbers found in clear in the park directory and rewritten as digests or deleted.",
            ),
            (
                "smartpark_edge_store_bytes",
                &self.store_bytes,
                "Bytes used by the SQLite store (pages in use).",
            ),
            (
                "smartpark_edge_store_budget_bytes",
                &self.store_budget_bytes,
                "The configured disk budget of the store.",
            ),
        ];
        for &(name, v, help) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP smartpark_edge_writer_queue_batches Batches waiting for the writer.\n# TYPE smartpark_edge_writer_queue_batches gauge\nsmartpark_edge_writer_queue_batches {}",
            self.writer_queue_batches.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP smartpark_edge_writer_queue_ops Writes that someone waits on, queued for the writer.\n# TYPE smartpark_edge_writer_queue_ops gauge\nsmartpark_edge_writer_queue_ops {}",
            self.writer_queue_ops.load(Relaxed)
        );
        {
            let v = self.invalid_input.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                out,
                "# HELP smartpark_edge_invalid_input_total Refused external input, by kind.\n# TYPE smartpark_edge_invalid_input_total counter"
            );
            for (kind, n) in v.iter() {
                let _ = writeln!(
                    out,
                    "smartpark_edge_invalid_input_total{{kind=\"{kind}\"}} {n}"
                );
            }
        }
        self.auth.render("smartpark_edge", &mut out);
        device_drivers::metrics::render(&mut out);
        self.commit_latency.render(
            &mut out,
            "smartpark_edge_commit_latency_seconds",
            "Time from a sample batch reaching the store to its durable commit.",
        );
        for (name, help, series) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe_us(120);
        }
        h.observe_us(30_000);
        let p50 = h.quantile_us(0.5);
        assert!((120..=132).contains(&p50), "{p50}");
        assert_eq!(h.quantile_us(0.99), p50);
        let max = h.quantile_us(1.0);
        assert!((30_000..=33_000).contains(&max), "{max}");
    }

    #[test]
    fn rendering_is_prometheus_text() {
        let m = Metrics::default();
        m.samples_committed_total.fetch_add(3, Relaxed);
        m.invalid_input("mqtt_payload");
        let text = m.render(&[(
            "smartpark_edge_device_online",
            "Device state.",
            vec![("{device=\"m1\"}".into(), 1.0)],
        )]);
        assert!(text.contains("smartpark_edge_samples_committed_total 3\n"));
        assert!(text.contains("smartpark_edge_invalid_input_total{kind=\"mqtt_payload\"} 1\n"));
        assert!(text.contains("smartpark_edge_device_online{device=\"m1\"} 1\n"));
        assert!(text.contains("smartpark_edge_commit_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
    }
}
