//! Electricity and water as Chinese parks buy and resell them: time-of-use bands (sharp,
//! peak, flat, valley, deep valley) by season and day type, tiered surcharges on a month's
//! total, and versioned tariff tables so that a past month always prices at the table in
//! force then.
//!
//! Units: consumption is counted in thousandths of the billed unit (Wh of a kWh, litres of
//! a m³) and prices in ten-thousandths of a yuan per unit (0.6532 yuan/kWh is 6532), so a
//! band's amount is `milli × price / 100,000` fen exactly; the line rounds once.
//!
//! Consumption arrives as 15-minute buckets (the hub's counter rollups), each priced at the
//! band in force at its start, under the tariff version in force on its park-local day.
//! Band boundaries are therefore on quarter hours. Missing buckets are estimated by
//! [`fill_gaps`] and stay marked as estimated all the way to the bill.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::money::{Exact, OutOfRange};
use crate::time::{LocalTime, MICROS_PER_MINUTE, Timestamp};

/// What a meter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utility {
    Electricity,
    Water,
}

impl Utility {
    pub fn as_str(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity",
            Utility::Water => "water",
        }
    }

    /// The billed unit.
    pub fn unit(self) -> &'static str {
        match self {
            Utility::Electricity => "kWh",
            Utility::Water => "m³",
        }
    }
}

/// A time-of-use band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Sharp,
    Peak,
    Flat,
    Valley,
    DeepValley,
}

impl Band {
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Sharp => "sharp",
            Band::Peak => "peak",
            Band::Flat => "flat",
            Band::Valley => "valley",
            Band::DeepValley => "deep_valley",
        }
    }
}

/// A band from a minute of the day until the next span's start (the last runs to midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandSpan {
    pub start_minute: u16,
    pub band: Band,
}

/// Months of the year that share a band timetable, one for workdays and one for weekends
/// and holidays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Season {
    pub months: Vec<u32>,
    pub workday: Vec<BandSpan>,
    pub non_workday: Vec<BandSpan>,
}

/// A surcharge per unit on what a month's total consumption has above `above_units`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub above_units: i64,
    pub surcharge_e4: i64,
}

/// A tariff table in force from `valid_from` (a park-local day) until the next version's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub valid_from: i32,
    pub seasons: Vec<Season>,
    /// Price per unit of each band used, in 1/10,000 yuan.
    pub prices: BTreeMap<Band, i64>,
    pub tiers: Vec<Tier>,
}

/// A utility tariff and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UtilityTariff {
    pub utility: Utility,
    pub currency: String,
    pub versions: Vec<Version>,
}

/// What is wrong with a tariff, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TariffError {
    pub field: String,
    pub message: String,
}

fn bad(field: String, message: &str) -> TariffError {
    TariffError {
        field,
        message: message.into(),
    }
}

/// The most a price per unit may be (10,000 yuan).
const MAX_PRICE_E4: i64 = 100_000_000;

impl UtilityTariff {
    /// Checks the table: versions in order of their days, each month in exactly one season,
    /// timetables starting at midnight on quarter hours in order, a price for every band
    /// used, tiers rising.
    pub fn validate(&self) -> Result<(), TariffError> {
        if self.versions.is_empty() {
            return Err(bad("versions".into(), "a tariff has at least one version"));
        }
        for (i, pair) in self.versions.windows(2).enumerate() {
            if pair[1].valid_from <= pair[0].valid_from {
                return Err(bad(
                    format!("versions[{}].valid_from", i + 1),
                    "versions must start on later days, in order",
                ));
            }
        }
        for (v, version) in self.versions.iter().enumerate() {
            let at = |rest: &str| format!("versions[{v}].{rest}");
            let mut months = [0u8; 12];
            for (s, season) in version.seasons.iter().enumerate() {
                for m in &season.months {
                    if !(1..=12).contains(m) {
                        return Err(bad(
                            at(&format!("seasons[{s}].months")),
                            "months are 1 to 12",
                        ));
                    }
                    months[*m as usize - 1] += 1;
                }
                for (name, spans) in [
                    ("workday", &season.workday),
                    ("non_workday", &season.non_workday),
                ] {
                    let field = at(&format!("seasons[{s}].{name}"));
                    if spans.first().map(|s| s.start_minute) != Some(0) {
                        return Err(bad(field, "a timetable starts at minute 0"));
                    }
                    if spans
                        .windows(2)
                        .any(|w| w[1].start_minute <= w[0].start_minute)
                        || spans
                            .iter()
                            .any(|s| s.start_minute >= 1440 || s.start_minute % 15 != 0)
                    {
                        return Err(bad(
                            field,
                            "band starts are quarter hours of the day (0 to 1425), in order",
                        ));
                    }
                    for span in spans {
                        if !version.prices.contains_key(&span.band) {
                            return Err(bad(
                                at(&format!("prices.{}", span.band.as_str())),
                                "a band used has no price",
                            ));
                        }
                    }
                }
            }
            if let Some(m) = months.iter().position(|n| *n != 1) {
                return Err(bad(
                    at("seasons"),
                    &format!("month {} must be in exactly one season", m + 1),
                ));
            }
            for (band, price) in &version.prices {
                if !(0..=MAX_PRICE_E4).contains(price) {
                    return Err(bad(
                        at(&format!("prices.{}", band.as_str())),
                        "a price is from 0 to 10,000 yuan a unit",
                    ));
                }
            }
            for (t, pair) in version.tiers.windows(2).enumerate() {
                if pair[1].above_units <= pair[0].above_units {
                    return Err(bad(
                        at(&format!("tiers[{}]", t + 1)),
                        "tiers rise, in order",
                    ));
                }
            }
            for (t, tier) in version.tiers.iter().enumerate() {
                if tier.above_units < 0 || !(0..=MAX_PRICE_E4).contains(&tier.surcharge_e4) {
                    return Err(bad(
                        at(&format!("tiers[{t}]")),
                        "a tier is above 0 units with a price from 0",
                    ));
                }
            }
        }
        if self.currency.len() != 3 {
            return Err(bad("currency".into(), "an ISO 4217 code such as CNY"));
        }
        Ok(())
    }

    /// The version in force on `day`, if any.
    pub fn version_on(&self, day: i32) -> Option<(usize, &Version)> {
        self.versions
            .iter()
            .enumerate()
            .rev()
            .find(|(_, v)| v.valid_from <= day)
    }
}

impl Version {
    /// The band in force at a local time on a workday or not.
    pub fn band_at(&self, month: u32, minute_of_day: u16, workday: bool) -> Option<Band> {
        let season = self.seasons.iter().find(|s| s.months.contains(&month))?;
        let spans = if workday {
            &season.workday
        } else {
            &season.non_workday
        };
        spans
            .iter()
            .rev()
            .find(|s| s.start_minute <= minute_of_day)
            .map(|s| s.band)
    }
}

/// One 15-minute bucket of consumption, in thousandths of the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub start: Timestamp,
    pub milli: i64,
    pub estimated: bool,
}

/// What a bucket of the hub's rollups says: measured consumption, or nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Measured(i64),
    Missing,
}

/// Fills the missing buckets of a run of consecutive buckets: a gap with a measured bucket
/// on both sides gets what the meter's counter says it measured across the gap (`across`,
/// when the hub knows the readings on both sides; else the mean of its neighbours), spread
/// evenly in whole thousandths with the remainder on the first buckets; a gap at an end
/// gets the mean of the measured buckets, or `fallback` (the mean of an earlier period)
/// when none was measured. Answers `None` when nothing was measured and there is no
/// fallback: such a period cannot be billed yet. Every filled bucket is marked estimated.
pub fn fill_gaps(
    starts: &[Timestamp],
    buckets: &[Bucket],
    across: impl Fn(usize, usize) -> Option<i64>,
    fallback: Option<i64>,
) -> Option<Vec<Usage>> {
    let measured: Vec<i64> = buckets
        .iter()
        .filter_map(|b| match b {
            Bucket::Measured(m) => Some(*m),
            Bucket::Missing => None,
        })
        .collect();
    let mean = if measured.is_empty() {
        fallback?
    } else {
        measured.iter().sum::<i64>() / measured.len() as i64
    };
    let mut out: Vec<Usage> = starts
        .iter()
        .zip(buckets)
        .map(|(start, b)| Usage {
            start: *start,
            milli: match b {
                Bucket::Measured(m) => *m,
                Bucket::Missing => mean,
            },
            estimated: *b == Bucket::Missing,
        })
        .collect();
    // Interior gaps: spread what the counter measured across them.
    let mut i = 0;
    while i < buckets.len() {
        if buckets[i] != Bucket::Missing {
            i += 1;
            continue;
        }
        let from = i;
        while i < buckets.len() && buckets[i] == Bucket::Missing {
            i += 1;
        }
        if from == 0 || i == buckets.len() {
            continue;
        }
        if let Some(total) = across(from, i) {
            let n = (i - from) as i64;
            let total = total.max(0);
            for (k, u) in out[from..i].iter_mut().enumerate() {
                u.milli = total / n + i64::from((k as i64) < total % n);
            }
        }
    }
    Some(out)
}

/// Consumption priced in one band under one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandCharge {
    pub version: usize,
    pub band: Band,
    pub milli: i64,
    pub estimated_milli: i64,
    pub price_e4: i64,
}

/// The price of a period's consumption before its one rounding, and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub amount: Exact,
    pub bands: Vec<BandCharge>,
    /// (tier threshold in units, units above it, surcharge per unit).
    pub tiers: Vec<(i64, Exact, i64)>,
    pub total_milli: i64,
    pub estimated_milli: i64,
}

/// Prices `usage` under `tariff` in a park `utc_offset_minutes` ahead of UTC, where
/// `is_workday` tells the day type of a local day (weekends and the park's holidays are
/// not). Tiers apply to the total under the version in force on the last bucket's day.
/// Errors when a bucket falls before the first version or in a month no season covers
/// (a tariff that validated has none).
pub fn price(
    tariff: &UtilityTariff,
    usage: &[Usage],
    utc_offset_minutes: i32,
    is_workday: impl Fn(i32) -> bool,
) -> Result<Priced, PriceError> {
    let mut bands: BTreeMap<(usize, Band), BandCharge> = BTreeMap::new();
    let mut total_milli = 0i64;
    let mut estimated_milli = 0i64;
    let mut last_version = None;
    for u in usage {
        let local = LocalTime::at(u.start, utc_offset_minutes);
        let (vi, version) = tariff
            .version_on(local.day)
            .ok_or(PriceError::NoVersion(local.day))?;
        let (_, month, _) = crate::time::civil_date(local.day);
        let band = version
            .band_at(month, local.minute_of_day, is_workday(local.day))
            .ok_or(PriceError::NoSeason(month))?;
        let price_e4 = version
            .prices
            .get(&band)
            .copied()
            .ok_or(PriceError::NoPrice(band))?;
        let entry = bands.entry((vi, band)).or_insert(BandCharge {
            version: vi,
            band,
            milli: 0,
            estimated_milli: 0,
            price_e4,
        });
        entry.milli = entry
            .milli
            .checked_add(u.milli)
            .ok_or(PriceError::OutOfRange)?;
        total_milli = total_milli
            .checked_add(u.milli)
            .ok_or(PriceError::OutOfRange)?;
        if u.estimated {
            entry.estimated_milli += u.milli;
            estimated_milli += u.milli;
        }
        last_version = Some(vi);
    }
    let mut amount = Exact::ZERO;
    for b in bands.values() {
        amount = amount.plus(Exact::ratio(
            i128::from(b.milli) * i128::from(b.price_e4),
            100_000,
        )?)?;
    }
    let mut tiers = Vec::new();
    if let Some(vi) = last_version {
        for t in &tariff.versions[vi].tiers {
            let above = i128::from(total_milli) - i128::from(t.above_units) * 1000;
            if above > 0 {
                let part = Exact::ratio(above * i128::from(t.surcharge_e4), 100_000)?;
                amount = amount.plus(part)?;
                tiers.push((t.above_units, Exact::ratio(above, 1000)?, t.surcharge_e4));
            }
        }
    }
    Ok(Priced {
        amount,
        bands: bands.into_values().collect(),
        tiers,
        total_milli,
        estimated_milli,
    })
}

/// Why consumption could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("no tariff version is in force on day {0}")]
    NoVersion(i32),
    #[error("no season covers month {0}")]
    NoSeason(u32),
    #[error("band {0:?} has no price")]
    NoPrice(Band),
    #[error("amount out of range")]
    OutOfRange,
}

impl From<OutOfRange> for PriceError {
    fn from(_: OutOfRange) -> PriceError {
        PriceError::OutOfRange
    }
}

/// The start of every 15-minute bucket in `[from, to)` (both on quarter hours).
pub fn quarter_hours(from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let step = 15 * MICROS_PER_MINUTE;
    (0..)
        .map(|k| from + k * step)
        .take_while(|t| *t < to)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::{local_timestamp, parse_date};

    /// A two-season commercial tariff in the shape of a provincial table: summer (July,
    /// August) has a sharp band; weekends are flat but for the night valley.
    pub(crate) fn power() -> UtilityTariff {
        let span = |m, band| BandSpan {
            start_minute: m,
            band,
        };
        let weekday = vec![
            span(0, Band::DeepValley),
            span(6 * 60, Band::Valley),
            span(8 * 60, Band::Peak),
            span(12 * 60, Band::Flat),
            span(17 * 60, Band::Peak),
            span(21 * 60, Band::Flat),
            span(23 * 60, Band::Valley),
        ];
        let mut summer_weekday = weekday.clone();
        summer_weekday.insert(5, span(20 * 60, Band::Sharp));
        let weekend = vec![
            span(0, Band::Valley),
            span(8 * 60, Band::Flat),
            span(23 * 60, Band::Valley),
        ];
        let prices = |p: i64| {
            BTreeMap::from([
                (Band::Sharp, p * 2),
                (Band::Peak, p * 17 / 10),
                (Band::Flat, p),
                (Band::Valley, p * 4 / 10),
                (Band::DeepValley, p * 3 / 10),
            ])
        };
        UtilityTariff {
            utility: Utility::Electricity,
            currency: "CNY".into(),
            versions: vec![
                Version {
                    valid_from: parse_date("2026-01-01").unwrap(),
                    seasons: vec![
                        Season {
                            months: vec![7, 8],
                            workday: summer_weekday,
                            non_workday: weekend.clone(),
                        },
                        Season {
                            months: vec![1, 2, 3, 4, 5, 6, 9, 10, 11, 12],
                            workday: weekday,
                            non_workday: weekend,
                        },
                    ],
                    prices: prices(6532),
                    tiers: vec![Tier {
                        above_units: 10_000,
                        surcharge_e4: 300,
                    }],
                },
                Version {
                    valid_from: parse_date("2026-06-01").unwrap(),
                    seasons: vec![Season {
                        months: (1..=12).collect(),
                        workday: vec![span(0, Band::Flat)],
                        non_workday: vec![span(0, Band::Flat)],
                    }],
                    prices: prices(7000),
                    tiers: vec![],
                },
            ],
        }
    }

    fn weekday(day: i32) -> bool {
        LocalTime::at(day as i64 * crate::time::MICROS_PER_DAY, 0)
            .weekday
            .index()
            < 5
    }

    #[test]
    fn buckets_price_at_their_band_and_their_version() {
        let t = power();
        t.validate().unwrap();
        // Tuesday 2026-03-03 09:00 (peak) and 02:00 (deep valley); 2026-06-02 under version 2.
        let at = |d, h| local_timestamp(d, h, 0, 480).unwrap();
        let usage = [
            Usage {
                start: at("2026-03-03", 9),
                milli: 10_000,
                estimated: false,
            },
            Usage {
                start: at("2026-03-03", 2),
                milli: 10_000,
                estimated: true,
            },
            Usage {
                start: at("2026-06-02", 9),
                milli: 1_000,
                estimated: false,
            },
        ];
        let p = price(&t, &usage, 480, weekday).unwrap();
        let bands: Vec<_> = p
            .bands
            .iter()
            .map(|b| (b.version, b.band, b.milli, b.price_e4))
            .collect();
        assert_eq!(
            bands,
            vec![
                (0, Band::Peak, 10_000, 11_104),
                (0, Band::DeepValley, 10_000, 1_959),
                (1, Band::Flat, 1_000, 7_000)
            ]
        );
        // 10 kWh × 1.1104 + 10 kWh × 0.1959 + 1 kWh × 0.7 yuan = 13.763 yuan = 1376.3 fen.
        assert_eq!(p.amount.to_text(), "1376.3");
        assert_eq!(p.amount.round().unwrap(), 1376);
        assert_eq!(p.estimated_milli, 10_000);
    }

    #[test]
    fn tiers_surcharge_what_a_month_has_above_them() {
        let mut t = power();
        t.versions.truncate(1);
        let at = local_timestamp("2026-03-07", 12, 0, 480).unwrap(); // a Saturday: flat
        let p = price(
            &t,
            &[Usage {
                start: at,
                milli: 10_500_000,
                estimated: false,
            }],
            480,
            weekday,
        )
        .unwrap();
        // 10,500 kWh flat at 0.6532, plus 500 kWh above the tier at 0.03.
        assert_eq!(
            p.amount,
            Exact::ratio(10_500 * 6532 + 500 * 300, 100).unwrap()
        );
        assert_eq!(p.tiers.len(), 1);
    }

    #[test]
    fn a_tariff_error_names_its_field() {
        let mut t = power();
        t.versions[0].seasons[0].months = vec![7];
        assert_eq!(t.validate().unwrap_err().field, "versions[0].seasons");
        let mut t = power();
        t.versions[0].seasons[1].workday[1].start_minute = 367;
        assert_eq!(
            t.validate().unwrap_err().field,
            "versions[0].seasons[1].workday"
        );
        let mut t = power();
        t.versions[1].prices.remove(&Band::Flat);
        assert_eq!(t.validate().unwrap_err().field, "versions[1].prices.flat");
    }

    #[test]
    fn gaps_are_filled_from_the_counter_and_marked() {
        let starts: Vec<i64> = (0..6).collect();
        let b = [
            Bucket::Missing,
            Bucket::Measured(100),
            Bucket::Missing,
            Bucket::Missing,
            Bucket::Measured(200),
            Bucket::Missing,
        ];
        let filled = fill_gaps(
            &starts,
            &b,
            |from, to| (from, to).eq(&(2, 4)).then_some(301),
            None,
        )
        .unwrap();
        let milli: Vec<i64> = filled.iter().map(|u| u.milli).collect();
        assert_eq!(milli, vec![150, 100, 151, 150, 200, 150]);
        let estimated: Vec<bool> = filled.iter().map(|u| u.estimated).collect();
        assert_eq!(estimated, vec![true, false, true, true, false, true]);
        // Nothing measured and nothing to go by: not billable yet.
        assert!(fill_gaps(&starts, &[Bucket::Missing; 6], |_, _| None, None).is_none());
        let by_fallback = fill_gaps(&starts, &[Bucket::Missing; 6], |_, _| None, Some(7)).unwrap();
        assert!(by_fallback.iter().all(|u| u.milli == 7 && u.estimated));
    }
}
