//! Synthetic rule files for benchmarks such as `smartpark bench rules`. Not for sites: the
//! rules watch made-up points with made-up limits.
//!
//! Points are named by [`synthetic_point`]: ten points per device, `bench-17/p3`. Rule `r`
//! watches point `r % points`, and the kinds rotate so that every sample meets a realistic
//! mix:
//!
//! | `r % 10` | rule |
//! |---|---|
//! | 0 to 5 | threshold above 90 with a deadband of 2 and a 5 s on-delay |
//! | 6 | rate of change over 60 s, more than 30 per minute either way |
//! | 7 | stale after 60 s |
//! | 8 | below 5 during office hours (a weekly schedule) |
//! | 9 | bad quality on every point of the device (`bench-17/*`) |
//!
//! Values drawn evenly from 0 to 100 raise about one threshold alarm in ten samples.

use std::fmt::Write as _;

/// The key of the `i`th synthetic point: `bench-{i / 10}/p{i % 10}`.
pub fn synthetic_point(i: usize) -> String {
    format!("bench-{}/p{}", i / 10, i % 10)
}

/// A rule file of `rules` rules over `points` points (at least one), for
/// [`crate::RuleSet::compile`]. See the module documentation for the mix.
pub fn synthetic_rules(rules: usize, points: usize) -> String {
    let points = points.max(1);
    let mut text = String::with_capacity(rules * 120 + 200);
    text.push_str(
        "utc_offset_minutes = 480\n\n[schedules]\noffice-hours = [\"mon-fri 08:00-18:00\"]\n",
    );
    for r in 0..rules {
        let point = synthetic_point(r % points);
        let device = point.split_once('/').map_or(point.as_str(), |(d, _)| d);
        let severity = ["P2", "P2", "P1", "P2", "P0"][r % 5];
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"bench-{r}\"\nseverity = \"{severity}\"\n"
        );
        let _ = match r % 10 {
            0..=5 => writeln!(
                text,
                "points = \"{point}\"\nthreshold = {{ above = 90, deadband = 2 }}\non_delay_s = 5"
            ),
            6 => writeln!(
                text,
                "points = \"{point}\"\nrate = {{ window_s = 60, change_per_minute = 30 }}"
            ),
            7 => writeln!(text, "points = \"{point}\"\nstale = {{ after_s = 60 }}"),
            8 => writeln!(
                text,
                "points = \"{point}\"\nall = [{{ during = \"office-hours\" }}, {{ threshold = {{ below = 5 }} }}]"
            ),
            _ => writeln!(text, "points = \"{device}/*\"\nquality = [\"bad\"]"),
        };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, Outputs, RuleSet, SampleIn};

    #[test]
    fn synthetic_rules_compile_and_watch_the_synthetic_points() {
        let set = RuleSet::compile(&synthetic_rules(1_000, 500), "bench.toml").unwrap();
        assert_eq!(set.len(), 1_000);
        let mut engine = Engine::new(set);
        let mut out = Outputs::new();
        engine.handle_sample(&SampleIn::number(&synthetic_point(3), 0, 95.0), &mut out);
        engine.handle_timeout(5_000_000, &mut out);
        // Point 3 is watched by the threshold rules 3 and 503.
        let raised: Vec<&str> = out.transitions.iter().map(|t| &*t.rule).collect();
        assert_eq!(raised, ["bench-3", "bench-503"]);
    }
}
