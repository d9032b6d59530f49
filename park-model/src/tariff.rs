//! Parking fees: what a stay costs under a [`Tariff`], in integer fen.
//!
//! The rule, applied by [`parking_fee`]:
//!
//! 1. A stay of at most `free_minutes` is free. A longer stay is charged from entry, free
//!    minutes included.
//! 2. The stay is cut into periods of `period_minutes` from the entry time. **A started period
//!    is charged in full**: a stay of 61 minutes with 30-minute periods is 3 periods. This is
//!    the only rounding, and it is in whole periods; no fraction of a fen ever arises.
//! 3. Each period costs `night_rate_fen` if the park-local time at which it *starts* is inside
//!    the night window `[night_start_minute, night_end_minute)` (wrapping past midnight when
//!    start > end, empty when start == end), else `day_rate_fen`.
//! 4. The stay is also cut into 24-hour blocks from the entry time; each period belongs to the
//!    block in which it starts, and each block is charged at most `daily_cap_fen` (when there is
//!    a cap). So a stay never costs more than `ceil(stay / 24 h) × daily_cap_fen`.
//! 5. A stay whose entry time is unknown (lost ticket, no entry record) costs `lost_ticket_fen`,
//!    whatever its length: [`lost_ticket_fee`].
//! 6. An exit at or before the entry (a clock stepped back) costs nothing.
//!
//! Consequences that the property tests check: the fee never decreases as the stay grows, and
//! never exceeds the cap bound.
//!
//! This module does no IO and reads no clock; it knows nothing of passes (see [`crate::gate`]).

use crate::document::Entity;
use crate::parking::Tariff;
use crate::time::{LocalTime, MICROS_PER_DAY, MICROS_PER_MINUTE, Timestamp};

/// Errors of fee computation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    #[error("tariff {id:?} is invalid: {reason}")]
    Invalid { id: String, reason: String },
}

/// Whether a park-local minute of the day falls in the night window.
pub fn in_night_window(minute_of_day: u16, start: u16, end: u16) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Less => start <= minute_of_day && minute_of_day < end,
        std::cmp::Ordering::Greater => minute_of_day >= start || minute_of_day < end,
        std::cmp::Ordering::Equal => false,
    }
}

/// The fee in fen (of `tariff.currency`) for a stay from `entered_at` to `exited_at` in a park
/// `utc_offset_minutes` ahead of UTC. See the module docs for the rule.
pub fn parking_fee(
    tariff: &Tariff,
    entered_at: Timestamp,
    exited_at: Timestamp,
    utc_offset_minutes: i32,
) -> Result<i64, TariffError> {
    tariff.validate().map_err(|reason| TariffError::Invalid {
        id: tariff.id.clone(),
        reason,
    })?;
    if exited_at <= entered_at {
        return Ok(0);
    }
    // i128 so that no stay, however absurd, overflows the arithmetic.
    let stay = i128::from(exited_at) - i128::from(entered_at);
    let free = i128::from(tariff.free_minutes) * i128::from(MICROS_PER_MINUTE);
    if stay <= free {
        return Ok(0);
    }
    let period = i64::from(tariff.period_minutes) * MICROS_PER_MINUTE;
    let periods = div_ceil(stay, i128::from(period));
    let periods = u64::try_from(periods).unwrap_or(u64::MAX);
    let rate_at = |k: u64| -> i64 {
        let start = entered_at.saturating_add((k as i64).saturating_mul(period));
        let minute = LocalTime::at(start, utc_offset_minutes).minute_of_day;
        if in_night_window(minute, tariff.night_start_minute, tariff.night_end_minute) {
            tariff.night_rate_fen
        } else {
            tariff.day_rate_fen
        }
    };
    // Sum of periods `first..first + count`, all in one block, capped.
    let block_sum = |first: u64, count: u64| -> i64 {
        let mut sum: i64 = 0;
        for k in first..first + count {
            sum = sum.saturating_add(rate_at(k));
            if let Some(cap) = tariff.daily_cap_fen
                && sum >= cap
            {
                return cap;
            }
        }
        sum
    };
    if MICROS_PER_DAY % period == 0 {
        // Every full block starts at the same local time of day and has the same periods,
        // so one full block's sum serves for all of them.
        let per_block = (MICROS_PER_DAY / period) as u64;
        let full_blocks = periods / per_block;
        let rest = periods % per_block;
        let full = if full_blocks > 0 {
            block_sum(0, per_block).saturating_mul(i64::try_from(full_blocks).unwrap_or(i64::MAX))
        } else {
            0
        };
        return Ok(full.saturating_add(block_sum(full_blocks * per_block, rest)));
    }
    let mut total: i64 = 0;
    let mut k: u64 = 0;
    while k < periods {
        let block = (i128::from(k) * i128::from(period)) / i128::from(MICROS_PER_DAY);
        // The first period starting in the next block.
        let next = div_ceil((block + 1) * i128::from(MICROS_PER_DAY), i128::from(period));
        let end = u64::try_from(next).unwrap_or(u64::MAX).min(periods);
        total = total.saturating_add(block_sum(k, end - k));
        k = end;
    }
    Ok(total)
}

/// `ceil(a / b)` for `a >= 0`, `b > 0`.
fn div_ceil(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

/// The fee for a stay whose entry time is unknown.
pub fn lost_ticket_fee(tariff: &Tariff) -> Result<i64, TariffError> {
    tariff.validate().map_err(|reason| TariffError::Invalid {
        id: tariff.id.clone(),
        reason,
    })?;
    Ok(tariff.lost_ticket_fen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::local_timestamp;

    const OFFSET: i32 = 480;

    /// 15 free minutes, 30-minute periods, 3 yuan by day, 1 yuan at night (22:00-07:00),
    /// 30 yuan a day at most, 60 yuan for a lost ticket.
    pub(crate) fn standard() -> Tariff {
        Tariff {
            id: "std".into(),
            currency: "CNY".into(),
            free_minutes: 15,
            period_minutes: 30,
            day_rate_fen: 300,
            night_start_minute: 22 * 60,
            night_end_minute: 7 * 60,
            night_rate_fen: 100,
            daily_cap_fen: Some(3000),
            lost_ticket_fen: 6000,
        }
    }

    fn at(h: u32, m: u32) -> Timestamp {
        local_timestamp("2026-10-08", h, m, OFFSET).unwrap()
    }

    fn fee(t: &Tariff, from: Timestamp, minutes: i64) -> i64 {
        parking_fee(t, from, from + minutes * MICROS_PER_MINUTE, OFFSET).unwrap()
    }

    #[test]
    fn a_stay_within_the_free_minutes_is_free_and_a_longer_one_is_charged_from_entry() {
        let t = standard();
        assert_eq!(fee(&t, at(10, 0), 0), 0);
        assert_eq!(fee(&t, at(10, 0), 15), 0);
        assert_eq!(fee(&t, at(10, 0), 16), 300);
        assert_eq!(fee(&t, at(10, 0), 30), 300);
        assert_eq!(
            fee(&t, at(10, 0), 31),
            600,
            "a started period is charged in full"
        );
        assert_eq!(fee(&t, at(10, 0), 61), 900);
    }

    #[test]
    fn periods_are_priced_by_the_local_time_at_which_they_start() {
        let t = standard();
        // 21:00 → 23:00: two day periods (21:00, 21:30), two night periods (22:00, 22:30).
        assert_eq!(fee(&t, at(21, 0), 120), 300 * 2 + 100 * 2);
        // 21:45 → 22:15: the period starting 21:45 is a day period.
        assert_eq!(fee(&t, at(21, 45), 30), 300);
        // 06:50 → 07:50: periods at 06:50 (night) and 07:20 (day).
        assert_eq!(fee(&t, at(6, 50), 60), 100 + 300);
    }

    #[test]
    fn each_24_hour_block_from_entry_is_capped() {
        let t = standard();
        // One full day from 10:00 is 30 day and 18 night periods (108 yuan), capped at 30.
        assert_eq!(fee(&t, at(10, 0), 24 * 60), 3000);
        // A day and an hour: a capped block plus 2 day periods at 10:00 and 10:30.
        assert_eq!(fee(&t, at(10, 0), 25 * 60), 3000 + 600);
        assert_eq!(fee(&t, at(10, 0), 3 * 24 * 60), 9000);
    }

    #[test]
    fn without_a_cap_every_period_is_charged() {
        let mut t = standard();
        t.daily_cap_fen = None;
        // 10:00 to 10:00: 30 day periods (10:00-22:00, 07:00-10:00) and 18 night periods.
        assert_eq!(fee(&t, at(10, 0), 24 * 60), 30 * 300 + 18 * 100);
    }

    #[test]
    fn periods_that_do_not_divide_a_day_are_assigned_to_the_block_they_start_in() {
        let mut t = standard();
        // 29 hours from 10:00 in 7-hour periods: 10:00, 17:00, 00:00 (night), 07:00 in the
        // first block, 14:00 the next day in the second.
        t.period_minutes = 7 * 60;
        t.daily_cap_fen = None;
        assert_eq!(fee(&t, at(10, 0), 29 * 60), 300 + 300 + 100 + 300 + 300);
        t.daily_cap_fen = Some(800);
        assert_eq!(fee(&t, at(10, 0), 29 * 60), 800 + 300);
    }

    #[test]
    fn a_lost_ticket_costs_the_flat_fee_and_a_backwards_clock_costs_nothing() {
        let t = standard();
        assert_eq!(lost_ticket_fee(&t).unwrap(), 6000);
        assert_eq!(parking_fee(&t, at(10, 0), at(9, 0), OFFSET).unwrap(), 0);
    }

    #[test]
    fn an_invalid_tariff_is_an_error_not_a_price() {
        let mut t = standard();
        t.period_minutes = 0;
        assert_eq!(
            parking_fee(&t, at(10, 0), at(11, 0), OFFSET)
                .unwrap_err()
                .to_string(),
            "tariff \"std\" is invalid: period_minutes must be at least 1"
        );
    }

    #[test]
    fn an_absurdly_long_stay_neither_overflows_nor_takes_long() {
        let t = standard();
        let fee = parking_fee(&t, i64::MIN / 2, i64::MAX / 2, OFFSET).unwrap();
        assert!(fee > 0);
    }

    #[test]
    fn the_night_window_wraps_past_midnight() {
        assert!(in_night_window(23 * 60, 22 * 60, 7 * 60));
        assert!(in_night_window(0, 22 * 60, 7 * 60));
        assert!(!in_night_window(7 * 60, 22 * 60, 7 * 60));
        assert!(in_night_window(60, 0, 6 * 60));
        assert!(!in_night_window(60, 0, 0));
    }
}
