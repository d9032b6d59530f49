//! Billing periods: calendar months and half-open ranges of park-local days.
//!
//! A day is a day number (days since 1970-01-01 on the park's wall clock, see
//! [`crate::time`]); a [`Days`] range `[from, to)` includes `from` and excludes `to`, so
//! that ranges that meet do not overlap and a month is `[first day, first day of the next)`.

use crate::time::{civil_date, day_number, days_in_month};

/// A half-open range of park-local days `[from, to)`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Days {
    pub from: i32,
    pub to: i32,
}

impl Days {
    pub fn new(from: i32, to: i32) -> Days {
        Days { from, to }
    }

    pub fn len(self) -> i32 {
        (self.to - self.from).max(0)
    }

    pub fn is_empty(self) -> bool {
        self.to <= self.from
    }

    /// The days in both, possibly empty.
    pub fn intersect(self, other: Days) -> Days {
        Days {
            from: self.from.max(other.from),
            to: self.to.min(other.to),
        }
    }

    pub fn overlaps(self, other: Days) -> bool {
        !self.intersect(other).is_empty()
    }

    pub fn contains(self, day: i32) -> bool {
        self.from <= day && day < self.to
    }
}

/// The parts of `range` that none of `taken` covers, in order.
pub fn subtract(range: Days, taken: &[Days]) -> Vec<Days> {
    let mut cuts: Vec<Days> = taken
        .iter()
        .map(|t| t.intersect(range))
        .filter(|t| !t.is_empty())
        .collect();
    cuts.sort();
    let mut out = Vec::new();
    let mut at = range.from;
    for c in cuts {
        if c.from > at {
            out.push(Days::new(at, c.from));
        }
        at = at.max(c.to);
    }
    if at < range.to {
        out.push(Days::new(at, range.to));
    }
    out
}

/// A calendar month of the park.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Month> {
        let (y, m) = text.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let month = Month {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        (1..=12).contains(&month.month).then_some(month)
    }

    /// The month that holds `day`.
    pub fn of_day(day: i32) -> Month {
        let (year, month, _) = civil_date(day);
        Month { year, month }
    }

    pub fn first_day(self) -> i32 {
        day_number(self.year, self.month, 1).expect("the first of a month is a date")
    }

    pub fn days(self) -> Days {
        Days::new(self.first_day(), self.plus(1).first_day())
    }

    pub fn day_count(self) -> i32 {
        days_in_month(self.year, self.month) as i32
    }

    /// `n` months later (earlier when negative).
    pub fn plus(self, n: i32) -> Month {
        let index = self.year * 12 + self.month as i32 - 1 + n;
        Month {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// Months from `self` to `other` (negative when `other` is earlier).
    pub fn until(self, other: Month) -> i32 {
        (other.year * 12 + other.month as i32) - (self.year * 12 + self.month as i32)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The same day of the month `years` later, or the month's last day when it has no such
/// day (29 February in a common year gives 28 February): contract anniversaries.
pub fn anniversary(day: i32, years: i32) -> i32 {
    let (y, m, d) = civil_date(day);
    let y = y + years;
    let d = d.min(days_in_month(y, m));
    day_number(y, m, d).expect("a clamped day is a date")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_date;

    #[test]
    fn months_know_their_days() {
        let feb = Month::parse("2028-02").unwrap();
        assert_eq!(feb.day_count(), 29);
        assert_eq!(feb.days().len(), 29);
        assert_eq!(feb.plus(11).to_string(), "2029-01");
        assert_eq!(feb.plus(-2).to_string(), "2027-12");
        assert_eq!(feb.until(Month::parse("2029-01").unwrap()), 11);
        assert_eq!(Month::of_day(parse_date("2028-02-29").unwrap()), feb);
        assert!(Month::parse("2028-13").is_none());
        assert!(Month::parse("2028-1").is_none());
    }

    #[test]
    fn subtraction_leaves_the_uncovered_parts() {
        let r = Days::new(0, 30);
        assert_eq!(
            subtract(r, &[Days::new(5, 10), Days::new(8, 12), Days::new(25, 40)]),
            vec![Days::new(0, 5), Days::new(12, 25)]
        );
        assert_eq!(subtract(r, &[]), vec![r]);
        assert!(subtract(r, &[Days::new(-5, 31)]).is_empty());
    }

    #[test]
    fn anniversaries_of_a_leap_day_fall_on_the_last_of_february() {
        let d = parse_date("2028-02-29").unwrap();
        assert_eq!(anniversary(d, 1), parse_date("2029-02-28").unwrap());
        assert_eq!(anniversary(d, 4), parse_date("2032-02-29").unwrap());
    }
}
