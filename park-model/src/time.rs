//! Time as the project keeps it (`Timestamp`: integer microseconds since the Unix epoch, UTC)
//! and its conversion to a park's local calendar (date, weekday, minute of the day) through the
//! park's fixed UTC offset.
//!
//! This module reads no clock: every function takes the time as an argument. It knows no time
//! zone database and no daylight saving time: a park has one fixed offset (China: +480 minutes),
//! which is what the documents store.

/// Microseconds since the Unix epoch, UTC. The project's one representation of an instant.
pub type Timestamp = i64;

/// Microseconds in one minute.
pub const MICROS_PER_MINUTE: i64 = 60_000_000;
/// Microseconds in one day of 24 hours.
pub const MICROS_PER_DAY: i64 = 24 * 60 * MICROS_PER_MINUTE;
/// Minutes in one day.
pub const MINUTES_PER_DAY: u16 = 1440;

/// A day of the week, Monday first (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// Monday is 0, Sunday is 6.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The short lowercase name used as a key in documents: `mon` .. `sun`.
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }
}

/// An instant seen on a park's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Days since 1970-01-01 in park-local time (negative before it).
    pub day: i32,
    /// Day of the week of `day`.
    pub weekday: Weekday,
    /// Minutes since local midnight, `0..1440`.
    pub minute_of_day: u16,
}

impl LocalTime {
    /// Converts `at` to the wall clock of a park whose clocks are `utc_offset_minutes` ahead of
    /// UTC. Works for any `i64`: the arithmetic saturates instead of overflowing.
    pub fn at(at: Timestamp, utc_offset_minutes: i32) -> LocalTime {
        let local = at.saturating_add(i64::from(utc_offset_minutes) * MICROS_PER_MINUTE);
        let day = local.div_euclid(MICROS_PER_DAY);
        let micros_of_day = local.rem_euclid(MICROS_PER_DAY);
        // 1970-01-01 was a Thursday (index 3).
        let weekday = Weekday::ALL[(day + 3).rem_euclid(7) as usize];
        LocalTime {
            // i64::MAX microseconds is about 106,000 days: always fits.
            day: day as i32,
            weekday,
            minute_of_day: (micros_of_day / MICROS_PER_MINUTE) as u16,
        }
    }
}

/// Parses a local calendar date `YYYY-MM-DD` into days since 1970-01-01, or `None` when it is
/// not a real date (month 13, February 30, a stray character).
pub fn parse_date(text: &str) -> Option<i32> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = number(0..4)? as i32;
    let month = number(5..7)?;
    let day = number(8..10)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Formats days since 1970-01-01 as `YYYY-MM-DD` (years 0000..=9999).
pub fn format_date(day: i32) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date, or `None` when it is not a real date.
pub fn day_number(year: i32, month: u32, day: u32) -> Option<i32> {
    ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month))
        .then(|| days_from_civil(year, month, day))
}

/// The (year, month, day) of a day number.
pub fn civil_date(day: i32) -> (i32, u32, u32) {
    civil_from_days(day)
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in a month (1 to 12) of a year.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Howard Hinnant's `days_from_civil`: proleptic Gregorian date to days since 1970-01-01.
fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

/// Builds a `Timestamp` from a park-local date and time, for tests, samples and tools.
/// Returns `None` for an invalid date or a time of day out of range.
pub fn local_timestamp(
    date: &str,
    hour: u32,
    minute: u32,
    utc_offset_minutes: i32,
) -> Option<Timestamp> {
    if hour > 23 || minute > 59 {
        return None;
    }
    let day = i64::from(parse_date(date)?);
    let local_minutes = day * 1440 + i64::from(hour * 60 + minute);
    Some((local_minutes - i64::from(utc_offset_minutes)) * MICROS_PER_MINUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_a_thursday_at_eight_in_china() {
        let t = LocalTime::at(0, 480);
        assert_eq!(t.day, 0);
        assert_eq!(t.weekday, Weekday::Thu);
        assert_eq!(t.minute_of_day, 480);
    }

    #[test]
    fn an_instant_before_local_midnight_belongs_to_the_previous_day() {
        // 1969-12-31 23:59 local in a UTC+8 park.
        let at = local_timestamp("1969-12-31", 23, 59, 480).unwrap();
        let t = LocalTime::at(at, 480);
        assert_eq!(t.day, -1);
        assert_eq!(t.weekday, Weekday::Wed);
        assert_eq!(t.minute_of_day, 1439);
    }

    #[test]
    fn dates_round_trip_through_day_numbers() {
        for text in [
            "1970-01-01",
            "2000-02-29",
            "2026-10-01",
            "2100-12-31",
            "1900-03-01",
        ] {
            let day = parse_date(text).unwrap();
            assert_eq!(format_date(day), text);
        }
        assert_eq!(parse_date("2026-10-01"), Some(20_727));
    }

    #[test]
    fn impossible_dates_are_refused() {
        for text in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "2026/01/01",
            "abcd-ef-gh",
        ] {
            assert_eq!(parse_date(text), None, "{text}");
        }
    }

    #[test]
    fn local_timestamps_convert_back_to_the_same_wall_clock() {
        let at = local_timestamp("2026-10-01", 9, 30, 480).unwrap();
        let t = LocalTime::at(at, 480);
        assert_eq!(format_date(t.day), "2026-10-01");
        assert_eq!(t.weekday, Weekday::Thu);
        assert_eq!(t.minute_of_day, 9 * 60 + 30);
    }

    #[test]
    fn extreme_instants_do_not_overflow() {
        let _ = LocalTime::at(i64::MAX, 840);
        let _ = LocalTime::at(i64::MIN, -720);
    }
}
