//! Property tests of the parking fee rule (see `park_model::tariff`): fees never decrease as a
//! stay grows, never exceed the daily cap per started 24-hour block, round whole periods up,
//! and a lost ticket costs exactly the lost-ticket fee.

use park_model::parking::Tariff;
use park_model::tariff::{lost_ticket_fee, parking_fee};
use park_model::time::{MICROS_PER_DAY, MICROS_PER_MINUTE};
use proptest::prelude::*;

fn tariff() -> impl Strategy<Value = Tariff> {
    (
        0u32..=120,
        1u32..=240,
        0i64..=2000,
        0u16..1440,
        0u16..1440,
        0i64..=2000,
        proptest::option::of(0i64..=20_000),
        0i64..=20_000,
    )
        .prop_map(
            |(free, period, day, night_start, night_end, night, cap, lost)| Tariff {
                id: "t".into(),
                currency: "CNY".into(),
                free_minutes: free,
                period_minutes: period,
                day_rate_fen: day,
                night_start_minute: night_start,
                night_end_minute: night_end,
                night_rate_fen: night,
                daily_cap_fen: cap,
                lost_ticket_fen: lost,
            },
        )
}

/// Entry times over a few years around 2026, to the microsecond.
fn entry() -> impl Strategy<Value = i64> {
    1_700_000_000_000_000i64..1_900_000_000_000_000
}

/// Stays up to ten days, to the microsecond.
fn stay() -> impl Strategy<Value = i64> {
    0i64..10 * MICROS_PER_DAY
}

fn offset() -> impl Strategy<Value = i32> {
    -720i32..=840
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_fee_never_decreases_as_the_stay_grows(
        t in tariff(), entered in entry(), a in stay(), b in stay(), off in offset()
    ) {
        let (short, long) = (a.min(b), a.max(b));
        let f_short = parking_fee(&t, entered, entered + short, off).unwrap();
        let f_long = parking_fee(&t, entered, entered + long, off).unwrap();
        prop_assert!(f_short <= f_long, "{f_short} > {f_long}");
        prop_assert!(f_short >= 0);
    }

    #[test]
    fn a_fee_never_exceeds_the_cap_for_each_started_day(
        t in tariff(), entered in entry(), s in stay(), off in offset()
    ) {
        let fee = parking_fee(&t, entered, entered + s, off).unwrap();
        if let Some(cap) = t.daily_cap_fen {
            let days = (s + MICROS_PER_DAY - 1) / MICROS_PER_DAY;
            prop_assert!(fee <= days * cap, "{fee} > {days} x {cap}");
        }
    }

    #[test]
    fn with_one_rate_and_no_cap_every_started_period_is_charged_in_full(
        mut t in tariff(), entered in entry(), s in stay(), off in offset()
    ) {
        t.night_rate_fen = t.day_rate_fen;
        t.daily_cap_fen = None;
        let fee = parking_fee(&t, entered, entered + s, off).unwrap();
        let free = i64::from(t.free_minutes) * MICROS_PER_MINUTE;
        let period = i64::from(t.period_minutes) * MICROS_PER_MINUTE;
        let expected = if s <= free { 0 } else { (s + period - 1) / period * t.day_rate_fen };
        prop_assert_eq!(fee, expected);
    }

    #[test]
    fn a_stay_within_the_free_minutes_costs_nothing(
        t in tariff(), entered in entry(), off in offset(), fraction in 0.0f64..=1.0
    ) {
        let s = (f64::from(t.free_minutes) * fraction * MICROS_PER_MINUTE as f64) as i64;
        prop_assert_eq!(parking_fee(&t, entered, entered + s, off).unwrap(), 0);
    }

    #[test]
    fn a_lost_ticket_costs_exactly_the_lost_ticket_fee(t in tariff()) {
        prop_assert_eq!(lost_ticket_fee(&t).unwrap(), t.lost_ticket_fen);
    }

    #[test]
    fn the_fee_depends_on_the_wall_clock_only_through_the_night_window(
        mut t in tariff(), entered in entry(), s in stay(), off1 in offset(), off2 in offset()
    ) {
        // Without a night window, the UTC offset cannot matter.
        t.night_end_minute = t.night_start_minute;
        prop_assert_eq!(
            parking_fee(&t, entered, entered + s, off1).unwrap(),
            parking_fee(&t, entered, entered + s, off2).unwrap()
        );
    }
}
