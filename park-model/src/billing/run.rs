//! Bill runs: what a month's run bills for a contract, given everything billed before.
//!
//! Every line bills a charge of a contract over a range of days, and the **ledger** keeps
//! those ranges ([`Entry`]): a credit line enters its days with the opposite sign. A run
//! bills only days the ledger does not already cover, and credits days the ledger covers
//! that the contract no longer has (an early termination), so running a month again bills
//! nothing, and no sequence of runs bills a day of a charge twice.
//!
//! What the run of month M bills (each line within one calendar month):
//!
//! - **Deposit**, once, when the term has started by the end of M.
//! - **Rent and property fee**, in advance: the days of every cycle period that starts in M
//!   or earlier (a contract activated late catches up).
//! - **Electricity and water**, in arrears: the term's days before M, from the meters that
//!   feed the contract's spaces, and its share of the common meters. A month whose meters
//!   have nothing to go by is left out (and reported), to be billed by a later run; an
//!   estimated figure is marked as such on its line.
//! - **Late fees**, on bills that were unpaid past their due date and grace days, for the
//!   days before M not yet charged, on each day's unpaid balance.
//!
//! Each line is its exact amount rounded once ([`super::money`]), and says where it came
//! from in `detail`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::contract::{CommonShare, Rate, State, Terms};
use super::energy::{self, Usage, Utility, UtilityTariff};
use super::money::{Exact, Fen, OutOfRange};
use super::period::{Days, Month, subtract};
use crate::time::format_date;

/// What a line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charge {
    Deposit,
    Rent,
    PropertyFee,
    Electricity,
    CommonElectricity,
    Water,
    CommonWater,
    LateFee,
}

impl Charge {
    pub const ALL: [Charge; 8] = [
        Charge::Deposit,
        Charge::Rent,
        Charge::PropertyFee,
        Charge::Electricity,
        Charge::CommonElectricity,
        Charge::Water,
        Charge::CommonWater,
        Charge::LateFee,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Charge::Deposit => "deposit",
            Charge::Rent => "rent",
            Charge::PropertyFee => "property_fee",
            Charge::Electricity => "electricity",
            Charge::CommonElectricity => "common_electricity",
            Charge::Water => "water",
            Charge::CommonWater => "common_water",
            Charge::LateFee => "late_fee",
        }
    }

    pub fn parse(text: &str) -> Option<Charge> {
        Charge::ALL.into_iter().find(|c| c.as_str() == text)
    }

    fn utility(self) -> Option<(Utility, bool)> {
        match self {
            Charge::Electricity => Some((Utility::Electricity, false)),
            Charge::CommonElectricity => Some((Utility::Electricity, true)),
            Charge::Water => Some((Utility::Water, false)),
            Charge::CommonWater => Some((Utility::Water, true)),
            _ => None,
        }
    }
}

/// Days of a charge billed (`credit: false`) or credited back, as the ledger keeps them.
/// `key` tells charges of the same kind apart (a late fee's bill); empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub contract_id: String,
    pub charge: Charge,
    pub key: String,
    pub days: Days,
    pub credit: bool,
}

/// A bill line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub contract_id: String,
    pub charge: Charge,
    pub key: String,
    pub days: Days,
    pub amount_fen: Fen,
    pub credit: bool,
    /// Some of the consumption behind it is estimated.
    pub estimated: bool,
    /// Where the amount came from: the clause, rates, days, readings and bands.
    pub detail: Value,
}

impl Line {
    pub fn entry(&self) -> Entry {
        Entry {
            contract_id: self.contract_id.clone(),
            charge: self.charge,
            key: self.key.clone(),
            days: self.days,
            credit: self.credit,
        }
    }
}

/// The days of `charge`/`key` of a contract that the ledger covers: billed days less
/// credited ones.
pub fn covered(ledger: &[Entry], contract_id: &str, charge: Charge, key: &str) -> Vec<Days> {
    let mine = |credit: bool| -> Vec<Days> {
        ledger
            .iter()
            .filter(|e| {
                e.contract_id == contract_id
                    && e.charge == charge
                    && e.key == key
                    && e.credit == credit
            })
            .map(|e| e.days)
            .collect()
    };
    let credits = mine(true);
    let mut out: Vec<Days> = mine(false)
        .into_iter()
        .flat_map(|d| subtract(d, &credits))
        .collect();
    out.sort();
    out
}

/// Splits ranges at month boundaries.
fn by_month(ranges: &[Days]) -> Vec<Days> {
    let mut out = Vec::new();
    for r in ranges {
        let mut from = r.from;
        while from < r.to {
            let end = Month::of_day(from).plus(1).first_day().min(r.to);
            out.push(Days::new(from, end));
            from = end;
        }
    }
    out
}

/// The consumption behind an energy line, as the hub reads it from its rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct Metered {
    /// 15-minute buckets, estimated ones marked.
    pub usage: Vec<Usage>,
    /// The meters and their readings, for the line's explanation.
    pub meters: Value,
}

/// Where a run finds consumption: the contract's own meters (`common: false`) or its share
/// of the common meters, over `days`. `Ok(None)`: nothing to go by yet.
pub trait Meters {
    fn usage(
        &mut self,
        contract_id: &str,
        terms: &Terms,
        utility: Utility,
        common: bool,
        days: Days,
    ) -> Result<Option<Metered>, String>;
}

/// A bill of the contract that was not fully paid by its due date: its unpaid balance from
/// each day on (a payment on day d lowers the balance from d).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub bill_id: String,
    pub due_day: i32,
    /// (day, unpaid from that day), in order of days; the first at or before the due day.
    pub balances: Vec<(i32, Fen)>,
}

/// Why a run could not bill a contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("contract {contract}: {message}")]
    Contract { contract: String, message: String },
}

/// A charge a run left for later, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub contract_id: String,
    pub charge: Charge,
    pub days: Days,
    pub reason: String,
}

/// What the run bills for one contract.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub lines: Vec<Line>,
    pub pending: Vec<Pending>,
}

/// Everything a run needs besides the contract.
pub struct Context<'a> {
    pub month: Month,
    pub ledger: &'a [Entry],
    pub tariffs: &'a BTreeMap<String, UtilityTariff>,
    pub utc_offset_minutes: i32,
    /// Whether a park-local day is a workday (not a weekend or one of the park's holidays).
    pub is_workday: &'a dyn Fn(i32) -> bool,
}

fn rate_json(rate: Rate) -> Value {
    match rate {
        Rate::PerM2Month { fen } => json!({"per_m2_month_fen": fen}),
        Rate::FixedMonth { fen } => json!({"fixed_month_fen": fen}),
    }
}

fn area_text(centi: i64) -> String {
    format!("{}.{:02}", centi / 100, centi % 100)
}

/// Plans the lines of `contract_id` for the run of `cx.month`.
pub fn plan(
    contract_id: &str,
    terms: &Terms,
    state: State,
    overdue: &[Overdue],
    meters: &mut dyn Meters,
    cx: &Context<'_>,
) -> Result<Plan, RunError> {
    let err = |message: String| RunError::Contract {
        contract: contract_id.to_string(),
        message,
    };
    let oor = |_: OutOfRange| err("an amount is out of range".into());
    let mut plan = Plan::default();
    if !state.billable() {
        return Ok(plan);
    }
    let month = cx.month;
    let end_of_run = month.plus(1).first_day();
    let line = |charge: Charge,
                key: &str,
                days: Days,
                amount: Exact,
                credit: bool,
                estimated: bool,
                detail: Value| {
        amount.round().map(|fen| Line {
            contract_id: contract_id.to_string(),
            charge,
            key: key.to_string(),
            days,
            amount_fen: if credit { -fen } else { fen },
            credit,
            estimated,
            detail,
        })
    };

    // Deposit: once.
    if terms.term.from < end_of_run && terms.deposit_fen > 0 {
        let days = Days::new(terms.term.from, terms.term.from + 1);
        if covered(cx.ledger, contract_id, Charge::Deposit, "").is_empty() {
            plan.lines.push(
                line(
                    Charge::Deposit,
                    "",
                    days,
                    Exact::fen(terms.deposit_fen),
                    false,
                    false,
                    json!({"clause": "deposit", "deposit_fen": terms.deposit_fen}),
                )
                .map_err(oor)?,
            );
        }
    }

    // Rent and property fee, in advance, by cycle.
    let first = Month::of_day(terms.term.from);
    let mut wanted = Vec::new();
    let mut m = first;
    while m <= month {
        if let Some(p) = terms.cycle_starting_in(m) {
            wanted.push(p);
        }
        m = m.plus(1);
    }
    for charge in [Charge::Rent, Charge::PropertyFee] {
        let have = covered(cx.ledger, contract_id, charge, "");
        let mut to_bill: Vec<Days> = Vec::new();
        for w in &wanted {
            to_bill.extend(subtract(*w, &have));
        }
        for days in by_month(&to_bill) {
            let (amount, detail) = fee_line(terms, charge, days).map_err(oor)?;
            plan.lines
                .push(line(charge, "", days, amount, false, false, detail).map_err(oor)?);
        }
        // Days billed that the term no longer has (an early termination): credited.
        let over: Vec<Days> = have
            .iter()
            .flat_map(|h| subtract(*h, &[terms.term]))
            .collect();
        if !over.is_empty() {
            let mut before = terms.clone();
            before.term.to = over.iter().map(|d| d.to).max().unwrap_or(terms.term.to);
            for days in by_month(&over) {
                let (amount, mut detail) = fee_line(&before, charge, days).map_err(oor)?;
                detail["credit_for"] = json!("days after the contract's end");
                detail["contract_end"] = json!(format_date(terms.term.to - 1));
                plan.lines
                    .push(line(charge, "", days, amount, true, false, detail).map_err(oor)?);
            }
        }
    }

    // Energy and water, in arrears.
    let arrears = Days::new(terms.term.from, terms.term.to.min(month.first_day()));
    for charge in [
        Charge::Electricity,
        Charge::CommonElectricity,
        Charge::Water,
        Charge::CommonWater,
    ] {
        let (utility, common) = charge.utility().expect("an energy charge");
        let tariff_id = match utility {
            Utility::Electricity => &terms.energy.electricity_tariff,
            Utility::Water => &terms.energy.water_tariff,
        };
        let Some(tariff_id) = tariff_id else { continue };
        if common && terms.energy.common_share == CommonShare::None {
            continue;
        }
        if arrears.is_empty() {
            continue;
        }
        let have = covered(cx.ledger, contract_id, charge, "");
        let Some(tariff) = cx.tariffs.get(tariff_id) else {
            // Billed once the park has the tariff the contract names.
            for days in by_month(&subtract(arrears, &have)) {
                plan.pending.push(Pending {
                    contract_id: contract_id.to_string(),
                    charge,
                    days,
                    reason: format!("the park has no tariff {tariff_id}"),
                });
            }
            continue;
        };
        for days in by_month(&subtract(arrears, &have)) {
            let metered = meters
                .usage(contract_id, terms, utility, common, days)
                .map_err(err)?;
            let Some(metered) = metered else {
                plan.pending.push(Pending {
                    contract_id: contract_id.to_string(),
                    charge,
                    days,
                    reason: "no readings to go by yet".into(),
                });
                continue;
            };
            let priced =
                energy::price(tariff, &metered.usage, cx.utc_offset_minutes, cx.is_workday)
                    .map_err(|e| err(format!("{tariff_id}: {e}")))?;
            let detail = json!({
                "clause": charge.as_str(),
                "tariff": tariff_id,
                "unit": utility.unit(),
                "consumption_milli": priced.total_milli,
                "estimated_milli": priced.estimated_milli,
                "bands": priced.bands.iter().map(|b| json!({
                    "version_from": format_date(tariff.versions[b.version].valid_from),
                    "band": b.band.as_str(),
                    "milli": b.milli,
                    "estimated_milli": b.estimated_milli,
                    "price_e4": b.price_e4,
                })).collect::<Vec<_>>(),
                "tiers": priced.tiers.iter().map(|(above, units, e4)| json!({
                    "above_units": above, "units": units.to_text(), "surcharge_e4": e4,
                })).collect::<Vec<_>>(),
                "meters": metered.meters,
                "exact_fen": priced.amount.to_text(),
            });
            plan.lines.push(
                line(
                    charge,
                    "",
                    days,
                    priced.amount,
                    false,
                    priced.estimated_milli > 0,
                    detail,
                )
                .map_err(oor)?,
            );
        }
    }

    // Late fees on what was overdue, up to the run's month.
    if terms.late_fee.bp_per_day > 0 {
        for o in overdue {
            let from = o.due_day + 1 + terms.late_fee.grace_days as i32;
            let charged = Days::new(from, month.first_day());
            if charged.is_empty() {
                continue;
            }
            let have = covered(cx.ledger, contract_id, Charge::LateFee, &o.bill_id);
            for days in subtract(charged, &have) {
                let mut sum: i128 = 0;
                for d in days.from..days.to {
                    let balance = o
                        .balances
                        .iter()
                        .rev()
                        .find(|(day, _)| *day <= d)
                        .map_or(0, |(_, b)| *b);
                    sum += i128::from(balance.max(0));
                }
                let amount = Exact::ratio(sum * i128::from(terms.late_fee.bp_per_day), 10_000)
                    .map_err(oor)?;
                if amount.is_zero() {
                    continue;
                }
                let detail = json!({
                    "clause": "late_fee",
                    "bill": o.bill_id,
                    "due": format_date(o.due_day),
                    "grace_days": terms.late_fee.grace_days,
                    "bp_per_day": terms.late_fee.bp_per_day,
                    "days": days.len(),
                    "balance_days_fen": sum.to_string(),
                    "exact_fen": amount.to_text(),
                });
                plan.lines.push(
                    line(
                        Charge::LateFee,
                        &o.bill_id,
                        days,
                        amount,
                        false,
                        false,
                        detail,
                    )
                    .map_err(oor)?,
                );
            }
        }
    }
    Ok(plan)
}

/// The exact rent or property fee of `days` (one month's) and its explanation.
fn fee_line(terms: &Terms, charge: Charge, days: Days) -> Result<(Exact, Value), OutOfRange> {
    let month = Month::of_day(days.from);
    let area = area_text(terms.area_centi_m2());
    Ok(match charge {
        Charge::Rent => {
            let (amount, parts) = terms.rent_for(days)?;
            let charged: i32 = parts.iter().map(|p| p.days).sum();
            (
                amount,
                json!({
                    "clause": "rent",
                    "rate": rate_json(terms.rent),
                    "area_m2": area,
                    "escalation_bp": terms.escalation_bp,
                    "from": format_date(days.from),
                    "to": format_date(days.to - 1),
                    "days_in_month": month.day_count(),
                    "free_days": days.intersect(terms.term).len() - charged,
                    "parts": parts.iter().map(|p| json!({
                        "contract_year": p.year + 1, "monthly_fen": p.monthly_fen, "days": p.days,
                    })).collect::<Vec<_>>(),
                    "exact_fen": amount.to_text(),
                }),
            )
        }
        _ => {
            let (amount, charged) = terms.property_fee_for(days)?;
            (
                amount,
                json!({
                    "clause": "property_fee",
                    "rate": rate_json(terms.property_fee),
                    "area_m2": area,
                    "from": format_date(days.from),
                    "to": format_date(days.to - 1),
                    "days_in_month": month.day_count(),
                    "days": charged,
                    "exact_fen": amount.to_text(),
                }),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::contract::tests::{day, terms};
    use crate::billing::contract::{Action, Contract};
    use crate::billing::energy::tests::power;
    use proptest::prelude::*;

    /// Meters that measured a steady 1 kWh per quarter hour, or nothing.
    struct Steady(bool);

    impl Meters for Steady {
        fn usage(
            &mut self,
            _: &str,
            _: &Terms,
            _: Utility,
            common: bool,
            days: Days,
        ) -> Result<Option<Metered>, String> {
            if !self.0 {
                return Ok(None);
            }
            let from = crate::time::local_timestamp(&format_date(days.from), 0, 0, 480).unwrap();
            let to = crate::time::local_timestamp(&format_date(days.to), 0, 0, 480).unwrap();
            let per = if common { 100 } else { 1000 };
            Ok(Some(Metered {
                usage: energy::quarter_hours(from, to)
                    .into_iter()
                    .map(|start| Usage {
                        start,
                        milli: per,
                        estimated: false,
                    })
                    .collect(),
                meters: json!([]),
            }))
        }
    }

    fn run(t: &Terms, state: State, month: Month, ledger: &mut Vec<Entry>, metered: bool) -> Plan {
        let tariffs = BTreeMap::from([("power".to_string(), power())]);
        let workday = |d: i32| {
            crate::time::LocalTime::at(i64::from(d) * crate::time::MICROS_PER_DAY, 0)
                .weekday
                .index()
                < 5
        };
        let cx = Context {
            month,
            ledger,
            tariffs: &tariffs,
            utc_offset_minutes: 480,
            is_workday: &workday,
        };
        let plan = plan("k1", t, state, &[], &mut Steady(metered), &cx).unwrap();
        ledger.extend(plan.lines.iter().map(Line::entry));
        plan
    }

    #[test]
    fn a_second_run_of_a_month_bills_nothing() {
        let t = terms();
        let mut ledger = Vec::new();
        let feb = Month::parse("2026-02").unwrap();
        let first = run(&t, State::Active, feb, &mut ledger, true);
        let charges: Vec<_> = first
            .lines
            .iter()
            .map(|l| (l.charge, format_date(l.days.from)))
            .collect();
        assert_eq!(
            charges,
            vec![
                (Charge::Deposit, "2026-01-15".into()),
                (Charge::Rent, "2026-01-15".into()),
                (Charge::Rent, "2026-02-01".into()),
                (Charge::PropertyFee, "2026-01-15".into()),
                (Charge::PropertyFee, "2026-02-01".into()),
                (Charge::Electricity, "2026-01-15".into()),
                (Charge::CommonElectricity, "2026-01-15".into()),
            ]
        );
        // January was wholly rent-free.
        assert_eq!(first.lines[1].amount_fen, 0);
        assert_eq!(first.lines[2].amount_fen, 482_000);
        assert!(
            run(&t, State::Active, feb, &mut ledger, true)
                .lines
                .is_empty()
        );
    }

    #[test]
    fn months_without_readings_wait_and_are_billed_once_readings_come() {
        let t = terms();
        let mut ledger = Vec::new();
        let mar = Month::parse("2026-03").unwrap();
        let plan = run(&t, State::Active, mar, &mut ledger, false);
        assert!(plan.lines.iter().all(|l| l.charge.utility().is_none()));
        assert_eq!(plan.pending.len(), 4, "{:?}", plan.pending);
        let later = run(&t, State::Active, mar, &mut ledger, true);
        assert_eq!(later.lines.len(), 4);
        assert!(later.lines.iter().all(|l| l.charge.utility().is_some()));
    }

    #[test]
    fn an_early_termination_credits_the_days_billed_in_advance() {
        let mut c = Contract::draft(terms());
        c.state = State::Active;
        let mut ledger = Vec::new();
        let mar = Month::parse("2026-03").unwrap();
        run(&c.terms, c.state, mar, &mut ledger, true);
        c.apply(
            &Action::Terminate {
                end: day("2026-03-21"),
                reason: "moving out".into(),
            },
            "lee",
            day("2026-03-10"),
        )
        .unwrap();
        let plan = run(&c.terms, c.state, mar, &mut ledger, true);
        let credits: Vec<_> = plan
            .lines
            .iter()
            .map(|l| (l.charge, l.credit, format_date(l.days.from), l.days.len()))
            .collect();
        assert_eq!(
            credits,
            vec![
                (Charge::Rent, true, "2026-03-21".into(), 11),
                (Charge::PropertyFee, true, "2026-03-21".into(), 11)
            ]
        );
        // 11 of 31 days of 9,640 yuan: 3,420.65 yuan back.
        assert_eq!(plan.lines[0].amount_fen, -342_065);
        assert!(
            run(&c.terms, c.state, mar, &mut ledger, true)
                .lines
                .is_empty()
        );
    }

    #[test]
    fn late_fees_accrue_on_each_days_balance_once() {
        let t = terms();
        let tariffs = BTreeMap::new();
        let workday = |_: i32| true;
        let mut ledger = Vec::new();
        let o = Overdue {
            bill_id: "B1".into(),
            due_day: day("2026-03-15"),
            // 10,000 yuan unpaid; half paid on 3 April.
            balances: vec![(day("2026-03-01"), 1_000_000), (day("2026-04-03"), 500_000)],
        };
        for month in ["2026-04", "2026-05", "2026-05"] {
            let cx = Context {
                month: Month::parse(month).unwrap(),
                ledger: &ledger,
                tariffs: &tariffs,
                utc_offset_minutes: 480,
                is_workday: &workday,
            };
            let mut no_energy = t.clone();
            no_energy.energy.electricity_tariff = None;
            let plan = plan(
                "k1",
                &no_energy,
                State::Active,
                std::slice::from_ref(&o),
                &mut Steady(false),
                &cx,
            )
            .unwrap();
            let fees: Vec<&Line> = plan
                .lines
                .iter()
                .filter(|l| l.charge == Charge::LateFee)
                .collect();
            match month {
                // Grace ends after the 25th: 26 to 31 March, 6 days × 10,000 yuan × 0.05 %.
                "2026-04" => assert_eq!(
                    fees.iter().map(|l| l.amount_fen).collect::<Vec<_>>(),
                    vec![3_000]
                ),
                _ if ledger
                    .iter()
                    .any(|e| e.charge == Charge::LateFee && e.days.to == day("2026-05-01")) =>
                {
                    assert!(fees.is_empty())
                }
                // April: 2 days at 10,000 and 28 at 5,000 yuan.
                _ => assert_eq!(
                    fees.iter().map(|l| l.amount_fen).collect::<Vec<_>>(),
                    vec![1_000 + 7_000]
                ),
            }
            ledger.extend(plan.lines.iter().map(Line::entry));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever months are run, in whatever order and however often, with a termination
        /// somewhere along the way, no day of any charge is covered twice, and the days
        /// covered are exactly the term's days that the runs reached.
        #[test]
        fn no_day_is_billed_twice(months in proptest::collection::vec(0i32..40, 1..25), end_at in 0usize..25, end_day in 40i32..1000) {
            let mut c = Contract::draft(terms());
            c.state = State::Active;
            let start = Month::parse("2026-01").unwrap();
            let mut ledger: Vec<Entry> = Vec::new();
            let mut latest = start.plus(-1);
            for (i, m) in months.iter().enumerate() {
                if i == end_at {
                    let end = c.terms.term.from + end_day;
                    let _ = c.apply(&Action::Terminate { end, reason: "x".into() }, "lee", end);
                }
                let month = start.plus(*m);
                latest = latest.max(month);
                let plan = run(&c.terms, c.state, month, &mut ledger, true);
                for l in &plan.lines {
                    prop_assert_eq!(l.amount_fen.signum() * if l.credit { -1 } else { 1 } >= 0, true);
                }
            }
            for charge in Charge::ALL {
                let cov = covered(&ledger, "k1", charge, "");
                for pair in cov.windows(2) {
                    prop_assert!(pair[0].to <= pair[1].from, "{charge:?} covers a day twice: {cov:?}");
                }
                // Positive entries never overlap each other.
                let mut billed: Vec<Days> = ledger.iter().filter(|e| e.charge == charge && !e.credit).map(|e| e.days).collect();
                billed.sort();
                for pair in billed.windows(2) {
                    prop_assert!(pair[0].to <= pair[1].from, "{charge:?} billed twice: {billed:?}");
                }
                if charge == Charge::Rent || charge == Charge::PropertyFee {
                    // Covered = the term's days in cycle periods that started by the latest run.
                    let reach = latest.plus(1).first_day();
                    let expected = Days::new(c.terms.term.from, c.terms.term.to.min(reach));
                    let total: i32 = cov.iter().map(|d| d.len()).sum();
                    prop_assert_eq!(total, expected.len().max(0));
                }
            }
        }
    }
}
