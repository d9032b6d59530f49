//! The drivers' counters, all defined here so they can be found in one place.
//!
//! They are process-wide: drivers are futures that the node runs, and a node is one process.
//! The node renders them with its own metrics ([`render`]); this module does not serve them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A Prometheus counter.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.value.fetch_add(n, Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }
}

/// Frames with a good CRC received on a Modbus RTU line that did not answer the request
/// outstanding (another unit's, another function's, or of the wrong length): late replies.
pub static MODBUS_RTU_FRAMES_DISCARDED_TOTAL: Counter = Counter::new(
    "smartpark_edge_modbus_rtu_frames_discarded_total",
    "Frames on Modbus RTU lines that did not answer the outstanding request, discarded.",
);

/// Bytes received on a Modbus RTU line that were not part of an answer: torn or corrupted
/// frames, and whatever arrived while the line settled or before a request.
pub static MODBUS_RTU_BYTES_DISCARDED_TOTAL: Counter = Counter::new(
    "smartpark_edge_modbus_rtu_bytes_discarded_total",
    "Bytes on Modbus RTU lines that were not part of an answer, discarded.",
);

const ALL: [&Counter; 2] = [
    &MODBUS_RTU_FRAMES_DISCARDED_TOTAL,
    &MODBUS_RTU_BYTES_DISCARDED_TOTAL,
];

/// Appends every counter in the Prometheus text format.
pub fn render(out: &mut String) {
    for c in ALL {
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}",
            c.name,
            c.help,
            c.get()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let mut out = String::new();
        render(&mut out);
        assert!(
            out.contains("# TYPE smartpark_edge_modbus_rtu_frames_discarded_total counter\n"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("smartpark_edge_modbus_rtu_bytes_discarded_total ")),
            "{out}"
        );
    }
}
