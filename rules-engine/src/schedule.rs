//! Weekly schedules and daily time windows on the park's wall clock, used by `during`
//! conditions to gate other conditions.
//!
//! A schedule is a list of entries such as `"mon-fri 08:00-18:00"`, `"sat,sun 10:00-14:00"`
//! or `"22:00-06:00"` (no days: every day). A range whose end is not after its start runs
//! past midnight into the next day. Local time is UTC plus the rule set's fixed offset in
//! minutes; there is no time zone database and no daylight saving time, like the rest of
//! the park. This module knows no holidays.

use crate::input::{MICROS_PER_MINUTE, Timestamp};

const MINUTES_PER_DAY: u32 = 1440;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A compiled weekly schedule: sorted, disjoint, non-adjacent minute-of-week intervals
/// `[start, end)`, Monday 00:00 being minute 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub name: String,
    utc_offset_minutes: i32,
    intervals: Vec<(u32, u32)>,
}

impl Schedule {
    /// Compiles the entries of a schedule. The error names the entry and what is wrong.
    pub fn parse(name: &str, entries: &[String], utc_offset_minutes: i32) -> Result<Self, String> {
        let mut raw = Vec::new();
        for entry in entries {
            parse_entry(entry, &mut raw).map_err(|reason| format!("{entry:?}: {reason}"))?;
        }
        raw.sort_unstable();
        let mut intervals: Vec<(u32, u32)> = Vec::with_capacity(raw.len());
        for (start, end) in raw {
            match intervals.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => intervals.push((start, end)),
            }
        }
        Ok(Schedule {
            name: name.to_owned(),
            utc_offset_minutes,
            intervals,
        })
    }

    /// Whether the schedule covers the instant `at`.
    pub fn contains(&self, at: Timestamp) -> bool {
        let (minute, _) = self.minute_of_week(at);
        self.interval_at(minute).is_some()
    }

    /// The next instant after `at` at which [`Schedule::contains`] changes, or `None` when it
    /// never changes (an empty schedule or one that covers the whole week).
    pub fn next_change(&self, at: Timestamp) -> Option<Timestamp> {
        if self.intervals.is_empty() || self.intervals == [(0, MINUTES_PER_WEEK)] {
            return None;
        }
        let (minute, minute_start) = self.minute_of_week(at);
        let boundary = match self.interval_at(minute) {
            Some(i) => {
                let end = self.intervals[i].1;
                // An interval that ends with the week continues when the first one starts
                // with it; the change is at the end of that one.
                if end == MINUTES_PER_WEEK && self.intervals[0].0 == 0 {
                    MINUTES_PER_WEEK + self.intervals[0].1
                } else {
                    end
                }
            }
            None => match self.intervals.iter().find(|(s, _)| *s > minute) {
                Some((s, _)) => *s,
                None => MINUTES_PER_WEEK + self.intervals[0].0,
            },
        };
        let ahead = i64::from(boundary - minute);
        Some(minute_start.saturating_add(ahead * MICROS_PER_MINUTE))
    }

    /// The minute of the week of `at` on the local clock, and the UTC instant at which that
    /// minute began.
    fn minute_of_week(&self, at: Timestamp) -> (u32, Timestamp) {
        let offset = i64::from(self.utc_offset_minutes) * MICROS_PER_MINUTE;
        let local = at.saturating_add(offset);
        let minutes = local.div_euclid(MICROS_PER_MINUTE);
        let minute_start = minutes * MICROS_PER_MINUTE - offset;
        // 1970-01-01 was a Thursday: minute 0 of the epoch is minute 3 * 1440 of its week.
        let of_week =
            (minutes + 3 * i64::from(MINUTES_PER_DAY)).rem_euclid(i64::from(MINUTES_PER_WEEK));
        (of_week as u32, minute_start)
    }

    fn interval_at(&self, minute: u32) -> Option<usize> {
        let i = self.intervals.partition_point(|(s, _)| *s <= minute);
        (i > 0 && minute < self.intervals[i - 1].1).then(|| i - 1)
    }
}

/// Parses one entry `[DAYS ]HH:MM-HH:MM` into minute-of-week intervals.
fn parse_entry(entry: &str, out: &mut Vec<(u32, u32)>) -> Result<(), String> {
    let entry = entry.trim();
    let (days, times) = match entry.rsplit_once(' ') {
        Some((days, times)) => (parse_days(days.trim())?, times),
        None => ([true; 7], entry),
    };
    let (from, to) = times
        .split_once('-')
        .ok_or_else(|| "expected a time range HH:MM-HH:MM".to_owned())?;
    let from = parse_time(from)?;
    let to = parse_time(to)?;
    if from == MINUTES_PER_DAY {
        return Err("a range cannot start at 24:00".to_owned());
    }
    // A range that ends at or before its start runs into the next day; 00:00-24:00 and
    // 08:00-08:00 are both a full day.
    let length = if to > from {
        to - from
    } else {
        to + MINUTES_PER_DAY - from
    };
    for (day, on) in days.iter().enumerate() {
        if !on {
            continue;
        }
        let start = day as u32 * MINUTES_PER_DAY + from;
        let end = start + length;
        if end <= MINUTES_PER_WEEK {
            out.push((start, end));
        } else {
            out.push((start, MINUTES_PER_WEEK));
            out.push((0, end - MINUTES_PER_WEEK));
        }
    }
    Ok(())
}

/// Parses `mon-fri`, `sat,sun`, `mon,wed-fri`, `fri-mon` (wrapping) or `daily`.
fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text == "daily" {
        return Ok([true; 7]);
    }
    for item in text.split(',') {
        let item = item.trim();
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (day_index(a)?, day_index(b)?),
            None => (day_index(item)?, day_index(item)?),
        };
        let mut d = first;
        loop {
            days[d] = true;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn day_index(name: &str) -> Result<usize, String> {
    let lower = name.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| *d == lower).ok_or_else(|| {
        format!("unknown day {name:?}, expected mon, tue, wed, thu, fri, sat, sun or daily")
    })
}

/// Parses `HH:MM` (00:00 to 24:00) into minutes after midnight.
fn parse_time(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a time HH:MM between 00:00 and 24:00");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01 was a Monday; 00:00 UTC.
    const MONDAY: Timestamp = 1_704_067_200_000_000;
    const HOUR: i64 = 60 * MICROS_PER_MINUTE;
    const DAY: i64 = 24 * HOUR;

    fn schedule(entries: &[&str], offset: i32) -> Schedule {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        Schedule::parse("s", &entries, offset).unwrap()
    }

    #[test]
    fn office_hours_cover_weekdays_and_not_weekends() {
        let s = schedule(&["mon-fri 08:00-18:00"], 0);
        assert!(!s.contains(MONDAY + 7 * HOUR));
        assert!(s.contains(MONDAY + 8 * HOUR));
        assert!(s.contains(MONDAY + 4 * DAY + 17 * HOUR + 59 * MICROS_PER_MINUTE));
        assert!(!s.contains(MONDAY + 4 * DAY + 18 * HOUR));
        assert!(!s.contains(MONDAY + 5 * DAY + 10 * HOUR));
    }

    #[test]
    fn the_utc_offset_moves_the_local_clock() {
        // 08:00 in China (+08:00) is 00:00 UTC.
        let s = schedule(&["mon 08:00-09:00"], 480);
        assert!(s.contains(MONDAY));
        assert!(!s.contains(MONDAY + HOUR));
        assert!(!s.contains(MONDAY - MICROS_PER_MINUTE));
    }

    #[test]
    fn a_range_ending_before_it_starts_runs_past_midnight() {
        let s = schedule(&["fri 22:00-06:00"], 0);
        assert!(s.contains(MONDAY + 4 * DAY + 23 * HOUR));
        assert!(s.contains(MONDAY + 5 * DAY + 5 * HOUR));
        assert!(!s.contains(MONDAY + 5 * DAY + 6 * HOUR));
        // Sunday night runs into Monday morning across the end of the week.
        let s = schedule(&["sun 22:00-06:00"], 0);
        assert!(s.contains(MONDAY + 3 * HOUR));
        assert!(s.contains(MONDAY + 6 * DAY + 23 * HOUR));
    }

    #[test]
    fn entries_without_days_apply_every_day() {
        let s = schedule(&["12:00-13:00"], 0);
        for day in 0..7 {
            assert!(s.contains(MONDAY + day * DAY + 12 * HOUR + 30 * MICROS_PER_MINUTE));
            assert!(!s.contains(MONDAY + day * DAY + 13 * HOUR));
        }
    }

    #[test]
    fn next_change_is_the_next_boundary() {
        let s = schedule(&["mon-fri 08:00-18:00"], 0);
        assert_eq!(s.next_change(MONDAY), Some(MONDAY + 8 * HOUR));
        assert_eq!(s.next_change(MONDAY + 8 * HOUR), Some(MONDAY + 18 * HOUR));
        assert_eq!(
            s.next_change(MONDAY + 4 * DAY + 19 * HOUR),
            Some(MONDAY + 7 * DAY + 8 * HOUR)
        );
        let s = schedule(&["sun 22:00-06:00"], 0);
        assert_eq!(
            s.next_change(MONDAY + 6 * DAY + 23 * HOUR),
            Some(MONDAY + 7 * DAY + 6 * HOUR)
        );
    }

    #[test]
    fn next_change_agrees_with_contains_at_every_quarter_hour() {
        let s = schedule(
            &[
                "mon-fri 08:00-12:00",
                "mon-fri 13:00-18:00",
                "sat 22:00-02:00",
            ],
            -300,
        );
        let mut at = MONDAY - DAY;
        while at < MONDAY + 8 * DAY {
            let inside = s.contains(at);
            let next = s.next_change(at).unwrap();
            assert!(next > at);
            assert_eq!(
                s.contains(next - 1),
                inside,
                "just before the change at {next}"
            );
            assert_ne!(s.contains(next), inside, "at the change {next}");
            at += 15 * MICROS_PER_MINUTE;
        }
    }

    #[test]
    fn full_and_empty_schedules_never_change() {
        assert_eq!(schedule(&["00:00-24:00"], 0).next_change(MONDAY), None);
        assert_eq!(schedule(&[], 0).next_change(MONDAY), None);
        assert!(schedule(&["daily 00:00-00:00"], 0).contains(MONDAY + 3 * DAY));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        let bad = |e: &str| Schedule::parse("s", &[e.to_owned()], 0).unwrap_err();
        assert!(
            bad("mon-fri 8-18").contains("HH:MM"),
            "{}",
            bad("mon-fri 8-18")
        );
        assert!(bad("monday 08:00-18:00").contains("unknown day"));
        assert!(bad("mon 08:00-25:00").contains("25:00"));
        assert!(bad("mon 24:00-01:00").contains("24:00"));
        assert!(bad("mon 08:60-09:00").contains("08:60"));
    }
}
