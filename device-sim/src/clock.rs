//! Wall-clock helpers for the simulators: the current Unix time, the time of day, and the
//! `YYYY-MM-DDTHH:MM:SS` form that Tasmota puts in its telemetry.
//!
//! Only [`unix_now_s`] reads a clock; everything else is arithmetic on the value it returns,
//! so the simulators' models can be driven by tests at any time they like. There is no time
//! zone database here: a caller that wants local time passes a fixed UTC offset.

use std::time::{SystemTime, UNIX_EPOCH};

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
    fn seconds_of_day_wraps_with_the_offset() {
        assert_eq!(seconds_of_day(86_400.0 + 3600.0, 0), 3600.0);
        assert_eq!(seconds_of_day(3600.0, -7200), 82_800.0);
        assert_eq!(seconds_of_day(0.0, 8 * 3600), 28_800.0);
    }
}
