//! Wall-clock helpers for the simulators: the current Unix time, the time of day, the
//! `YYYY-MM-DDTHH:MM:SS` form that Tasmota puts in its telemetry, and [`SimClock`], which runs
//! a simulated world faster than the wall clock.
//!
//! Only [`unix_now_s`] reads a clock; everything else is arithmetic on the value it returns,
//! so the simulators' models can be driven by tests at any time they like. There is no time
//! zone database here: a caller that wants local time passes a fixed UTC offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in one day, the period of every daily curve.
pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// The current time as seconds since the Unix epoch, UTC (fractional).
pub fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds since midnight, in `[0, 86400)`, of a Unix time shifted by `utc_offset_s`.
pub fn seconds_of_day(unix_s: f64, utc_offset_s: i32) -> f64 {
    (unix_s + f64::from(utc_offset_s)).rem_euclid(SECONDS_PER_DAY)
}

/// Formats a Unix time (whole seconds, already shifted to the wanted zone) the way Tasmota
/// does in its `Time` field: `2026-11-28T10:00:00`, without a zone suffix.
pub fn format_tasmota_time(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Maps the real time a simulator has been running (its elapsed time, a `Duration` since it
/// started) to the time of its simulated world, which may start at a chosen time of day and
/// run `compression` times faster than the wall clock.
///
/// Pure: the wall time at start is an argument. Traffic patterns (who arrives when, how long
/// a visitor stays) follow the simulated time; physical actions (a door staying unlocked for
/// `duration_ms`, a barrier timeout) take real time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimClock {
    wall_start_unix_s: f64,
    sim_start_unix_s: f64,
    compression: f64,
    utc_offset_s: i32,
    simulated_timestamps: bool,
}

impl SimClock {
    /// A clock that starts at `wall_unix_s`, or, with `start_seconds_of_day`, at that local
    /// time of day on the same local date. `compression` is simulated seconds per real second;
    /// values that are not finite and positive mean 1.
    pub fn new(
        wall_unix_s: f64,
        utc_offset_s: i32,
        start_seconds_of_day: Option<f64>,
        compression: f64,
    ) -> Self {
        let sim_start_unix_s = match start_seconds_of_day {
            Some(start) => {
                let midnight = wall_unix_s - seconds_of_day(wall_unix_s, utc_offset_s);
                midnight + start.rem_euclid(SECONDS_PER_DAY)
            }
            None => wall_unix_s,
        };
        SimClock {
            wall_start_unix_s: wall_unix_s,
            sim_start_unix_s,
            compression: if compression.is_finite() && compression > 0.0 {
                compression
            } else {
                1.0
            },
            utc_offset_s,
            simulated_timestamps: false,
        }
    }

    /// Whether [`SimClock::timestamp_us`] gives the simulated time (`true`) or the wall time
    /// (`false`, the default). With a compression of 1 and no chosen start, the two agree.
    pub fn simulated_timestamps(mut self, simulated: bool) -> Self {
        self.simulated_timestamps = simulated;
        self
    }

    pub fn compression(&self) -> f64 {
        self.compression
    }

    /// The wall time at which the clock started.
    pub fn wall_start_unix_s(&self) -> f64 {
        self.wall_start_unix_s
    }

    pub fn utc_offset_s(&self) -> i32 {
        self.utc_offset_s
    }

    /// The simulated Unix time after `elapsed` of real time.
    pub fn sim_unix_s(&self, elapsed: Duration) -> f64 {
        self.sim_start_unix_s + elapsed.as_secs_f64() * self.compression
    }

    /// The simulated local time of day after `elapsed` of real time.
    pub fn seconds_of_day(&self, elapsed: Duration) -> f64 {
        seconds_of_day(self.sim_unix_s(elapsed), self.utc_offset_s)
    }

    /// The simulated local day, counted from 1970-01-01 (for daily plans).
    pub fn day(&self, elapsed: Duration) -> i64 {
        ((self.sim_unix_s(elapsed) + f64::from(self.utc_offset_s)) / SECONDS_PER_DAY).floor() as i64
    }

    /// The real elapsed time at which the simulated clock reads `sim_unix_s`; zero for a time
    /// before the start.
    pub fn elapsed_at(&self, sim_unix_s: f64) -> Duration {
        let real_s = (sim_unix_s - self.sim_start_unix_s) / self.compression;
        Duration::try_from_secs_f64(real_s.max(0.0)).unwrap_or(Duration::MAX)
    }

    /// The real time that a simulated span takes.
    pub fn to_real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.compression)
    }

    /// The time stamp to put in a payload, in microseconds since the Unix epoch: the wall
    /// time, or the simulated time if so configured.
    pub fn timestamp_us(&self, elapsed: Duration) -> i64 {
        let unix_s = if self.simulated_timestamps {
            self.sim_unix_s(elapsed)
        } else {
            self.wall_start_unix_s + elapsed.as_secs_f64()
        };
        (unix_s * 1e6).round() as i64
    }
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
///
/// Works in 400-year eras shifted to start on 1 March, so that the leap day is the last day
/// of its year and month lengths follow a fixed pattern.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // Days from 0000-03-01 to 1970-01-01.
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasmota_time_has_no_zone_and_zero_padded_fields() {
        assert_eq!(format_tasmota_time(0), "1970-01-01T00:00:00");
        // 2026-11-28 10:00:00 UTC.
        assert_eq!(format_tasmota_time(1_795_860_000), "2026-11-28T10:00:00");
    }

    #[test]
    fn leap_days_and_times_before_1970_format_correctly() {
        // 2024-02-29 23:59:59 UTC.
        assert_eq!(format_tasmota_time(1_709_251_199), "2024-02-29T23:59:59");
        assert_eq!(format_tasmota_time(-1), "1969-12-31T23:59:59");
    }

    #[test]
    fn a_sim_clock_can_start_at_a_local_time_of_day_and_run_faster() {
        // 2026-11-28 10:00:00 UTC is 18:00 in China Standard Time.
        let clock = SimClock::new(1_795_860_000.0, 8 * 3600, Some(7.5 * 3600.0), 60.0);
        assert_eq!(clock.seconds_of_day(Duration::ZERO), 7.5 * 3600.0);
        // One real minute is one simulated hour.
        assert_eq!(clock.seconds_of_day(Duration::from_secs(60)), 8.5 * 3600.0);
        assert_eq!(
            clock.day(Duration::ZERO),
            clock.day(Duration::from_secs(60))
        );
        assert_eq!(
            clock.day(Duration::from_secs(24 * 60)),
            clock.day(Duration::ZERO) + 1
        );
        let at = clock.sim_unix_s(Duration::from_secs(90));
        assert_eq!(clock.elapsed_at(at), Duration::from_secs(90));
        assert_eq!(clock.elapsed_at(at - 1e9), Duration::ZERO);
        assert_eq!(
            clock.to_real(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn sim_clock_timestamps_are_wall_time_unless_asked_otherwise() {
        let clock = SimClock::new(1_000.0, 0, Some(0.0), 10.0);
        assert_eq!(clock.timestamp_us(Duration::from_secs(2)), 1_002_000_000);
        let simulated = clock.simulated_timestamps(true);
        assert_eq!(simulated.timestamp_us(Duration::from_secs(2)), 20_000_000);
    }

    #[test]
    fn a_sim_clock_with_a_nonsense_compression_runs_at_wall_speed() {
        for bad in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert_eq!(SimClock::new(0.0, 0, None, bad).compression(), 1.0);
        }
    }

    #[test]
    fn seconds_of_day_wraps_with_the_offset() {
        assert_eq!(seconds_of_day(86_400.0 + 3600.0, 0), 3600.0);
        assert_eq!(seconds_of_day(3600.0, -7200), 82_800.0);
        assert_eq!(seconds_of_day(0.0, 8 * 3600), 28_800.0);
    }
}
