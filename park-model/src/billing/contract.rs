//! Lease contracts: their terms, their rent schedule, and the states a contract passes
//! through (the park's flow: intent → contract → review → bills → enterprise account).
//!
//! States and the actions between them ([`Contract::apply`]):
//!
//! ```text
//! draft ──submit──▶ pending_review ──approve (another user)──▶ approved ──activate──▶ active
//!   ▲                     │                                                      │
//!   └──────revise──── rejected ◀──reject                expire / terminate / supersede
//!                                                                              ▼
//!                                                   expired · terminated · renewed · changed
//! ```
//!
//! A draft and a rejected contract may be withdrawn (`cancelled`). Review needs a user
//! other than the one who submitted; every transition names its actor and is checked here,
//! so that the hub's API and any other caller obey the same rule.

use serde::{Deserialize, Serialize};

use super::money::{Exact, Fen, OutOfRange};
use super::period::{Days, Month, anniversary, subtract};

/// A space the contract lets, with its lettable area in hundredths of a square metre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasedSpace {
    pub space_id: String,
    pub area_centi_m2: i64,
}

/// How a monthly charge is stated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    /// Fen per square metre of the contract's spaces per month.
    PerM2Month { fen: Fen },
    /// Fen per month for the whole contract.
    FixedMonth { fen: Fen },
}

/// When bills for rent and fees are made: every month, or every three months from the
/// contract's first month (each in advance, in the run of the cycle's first month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cycle {
    Monthly,
    Quarterly,
}

impl Cycle {
    pub fn months(self) -> i32 {
        match self {
            Cycle::Monthly => 1,
            Cycle::Quarterly => 3,
        }
    }
}

/// How an enterprise shares the energy of the common areas (lobbies, corridors, lifts) of
/// the buildings its spaces are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CommonShare {
    /// By the area it leases over the area leased in the building in that interval.
    ByArea,
    /// A stated share, in basis points (1/10,000) of the common meters' consumption.
    Key { bp: u32 },
    /// None (the park bears it).
    None,
}

/// The contract's energy and water clauses: which tariffs apply (the meters that feed its
/// spaces are mapped to spaces, with dates, outside the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyClause {
    pub electricity_tariff: Option<String>,
    pub water_tariff: Option<String>,
    pub common_share: CommonShare,
}

/// A late fee on what is unpaid after the due date and a grace period, per day, in basis
/// points of the unpaid amount (5 bp a day is 0.05 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateFee {
    pub bp_per_day: u32,
    pub grace_days: u32,
}

/// What a contract says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    pub enterprise_id: String,
    pub spaces: Vec<LeasedSpace>,
    /// The days it runs: `[start, end)` (its last day is `end - 1`).
    pub term: Days,
    pub rent: Rate,
    /// Rent-free days (fit-out periods), within the term.
    pub free_rent: Vec<Days>,
    /// Rent rise at each anniversary of the start, in basis points of the year before.
    pub escalation_bp: u32,
    pub property_fee: Rate,
    pub deposit_fen: Fen,
    pub cycle: Cycle,
    /// Days from a bill's issue to its due date.
    pub due_days: u32,
    pub late_fee: LateFee,
    pub energy: EnergyClause,
    /// ISO 4217, `CNY` in the park.
    pub currency: String,
}

/// A term that cannot be, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TermsError {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> TermsError {
    TermsError {
        field: field.into(),
        message: message.into(),
    }
}

/// The most any stated figure may be (10^12 fen, ten billion yuan): far beyond any lease,
/// far below what the arithmetic holds.
pub const MAX_FEN: Fen = 1_000_000_000_000;

impl Terms {
    /// Checks the terms; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), TermsError> {
        if self.enterprise_id.trim().is_empty() {
            return Err(invalid("enterprise_id", "is empty"));
        }
        if self.spaces.is_empty() {
            return Err(invalid("spaces", "a contract lets at least one space"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.spaces.iter().enumerate() {
            if s.space_id.trim().is_empty() {
                return Err(invalid(&format!("spaces[{i}].space_id"), "is empty"));
            }
            if !seen.insert(&s.space_id) {
                return Err(invalid(
                    &format!("spaces[{i}].space_id"),
                    format!("{} is let twice", s.space_id),
                ));
            }
            if !(1..=100_000_000).contains(&s.area_centi_m2) {
                return Err(invalid(
                    &format!("spaces[{i}].area_m2"),
                    "must be more than 0 and at most 1,000,000 m²",
                ));
            }
        }
        if self.term.is_empty() {
            return Err(invalid("end", "must not be before the start"));
        }
        if self.term.len() > 366 * 30 {
            return Err(invalid("end", "a term is at most 30 years"));
        }
        for (field, rate) in [("rent", self.rent), ("property_fee", self.property_fee)] {
            let fen = match rate {
                Rate::PerM2Month { fen } | Rate::FixedMonth { fen } => fen,
            };
            if !(0..=MAX_FEN).contains(&fen) {
                return Err(invalid(field, "must be from 0 to 10^12 fen"));
            }
        }
        for (i, f) in self.free_rent.iter().enumerate() {
            if f.is_empty() || f.intersect(self.term) != *f {
                return Err(invalid(
                    &format!("free_rent[{i}]"),
                    "must be a non-empty range within the term",
                ));
            }
        }
        if self.escalation_bp > 10_000 {
            return Err(invalid("escalation_bp", "at most 10000 (100 % a year)"));
        }
        if !(0..=MAX_FEN).contains(&self.deposit_fen) {
            return Err(invalid("deposit_fen", "must be from 0 to 10^12 fen"));
        }
        if self.due_days > 365 {
            return Err(invalid("due_days", "at most 365"));
        }
        if self.late_fee.bp_per_day > 100 {
            return Err(invalid("late_fee.bp_per_day", "at most 100 (1 % a day)"));
        }
        if self.late_fee.grace_days > 365 {
            return Err(invalid("late_fee.grace_days", "at most 365"));
        }
        if let CommonShare::Key { bp } = self.energy.common_share
            && bp > 10_000
        {
            return Err(invalid("energy.common_share", "a key is at most 10000 bp"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("currency", "an ISO 4217 code such as CNY"));
        }
        Ok(())
    }

    /// The area let, in hundredths of a square metre.
    pub fn area_centi_m2(&self) -> i64 {
        self.spaces.iter().map(|s| s.area_centi_m2).sum()
    }

    /// The exact monthly amount of `rate` for this contract's area.
    pub fn monthly(&self, rate: Rate) -> Result<Exact, OutOfRange> {
        match rate {
            Rate::FixedMonth { fen } => Ok(Exact::fen(fen)),
            Rate::PerM2Month { fen } => {
                Exact::ratio(i128::from(fen) * i128::from(self.area_centi_m2()), 100)
            }
        }
    }

    /// The rent schedule: the monthly rent of each contract year in whole fen, as the
    /// contract states it. Year 0 is the area times the rate (or the fixed rent), rounded to
    /// the fen; each later year is the year before raised by the escalation, rounded to the
    /// fen (halves away from zero).
    pub fn rent_schedule(&self) -> Result<Vec<Fen>, OutOfRange> {
        let years = self.contract_years().len();
        let mut out = Vec::with_capacity(years);
        let mut monthly = self.monthly(self.rent)?.round()?;
        for _ in 0..years {
            out.push(monthly);
            monthly = Exact::fen(monthly)
                .times(10_000 + i128::from(self.escalation_bp), 10_000)?
                .round()?;
        }
        Ok(out)
    }

    /// The contract years: `[start + k years, start + k+1 years)` cut to the term.
    pub fn contract_years(&self) -> Vec<Days> {
        let mut out = Vec::new();
        let mut k = 0;
        loop {
            let from = anniversary(self.term.from, k);
            if from >= self.term.to {
                break;
            }
            let to = anniversary(self.term.from, k + 1).min(self.term.to);
            out.push(Days::new(from, to));
            k += 1;
        }
        out
    }

    /// The cycle period that starts in `month`, if one does: the months from the contract's
    /// first month in steps of the cycle, cut to the term.
    pub fn cycle_starting_in(&self, month: Month) -> Option<Days> {
        let first = Month::of_day(self.term.from);
        let k = first.until(month);
        let step = self.cycle.months();
        if k < 0 || k % step != 0 {
            return None;
        }
        let period =
            Days::new(month.first_day(), month.plus(step).first_day()).intersect(self.term);
        (!period.is_empty()).then_some(period)
    }

    /// The rent of the days `days` (within one calendar month): for each day of the term
    /// that is not rent-free, that contract year's monthly rent over the days in the month.
    /// Answers the exact amount and its parts.
    pub fn rent_for(&self, days: Days) -> Result<(Exact, Vec<RentPart>), OutOfRange> {
        let month = Month::of_day(days.from);
        let days = days.intersect(month.days()).intersect(self.term);
        let schedule = self.rent_schedule()?;
        let mut total = Exact::ZERO;
        let mut parts = Vec::new();
        for (year, span) in self.contract_years().into_iter().enumerate() {
            let span = span.intersect(days);
            if span.is_empty() {
                continue;
            }
            let charged: i32 = subtract(span, &self.free_rent)
                .iter()
                .map(|d| d.len())
                .sum();
            if charged == 0 {
                continue;
            }
            let monthly = schedule[year];
            total = total.plus(
                Exact::fen(monthly).times(i128::from(charged), i128::from(month.day_count()))?,
            )?;
            parts.push(RentPart {
                year,
                monthly_fen: monthly,
                days: charged,
            });
        }
        Ok((total, parts))
    }

    /// The property fee of `days` (within one calendar month): the monthly fee over the days
    /// in the month, for the days of the term (rent-free days included).
    pub fn property_fee_for(&self, days: Days) -> Result<(Exact, i32), OutOfRange> {
        let month = Month::of_day(days.from);
        let charged = days.intersect(month.days()).intersect(self.term).len();
        let amount = self
            .monthly(self.property_fee)?
            .times(i128::from(charged), i128::from(month.day_count()))?;
        Ok((amount, charged))
    }
}

/// The rent of some days at one contract year's monthly rent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RentPart {
    /// The contract year, from 0.
    pub year: usize,
    pub monthly_fen: Fen,
    pub days: i32,
}

/// Where a contract is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Draft,
    PendingReview,
    Rejected,
    Approved,
    Active,
    Expired,
    Terminated,
    /// Followed by a renewal that is now active.
    Renewed,
    /// Replaced by a changed contract that is now active.
    Changed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::PendingReview => "pending_review",
            State::Rejected => "rejected",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Terminated => "terminated",
            State::Renewed => "renewed",
            State::Changed => "changed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        ALL_STATES.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the contract's terms may still be edited.
    pub fn editable(self) -> bool {
        matches!(self, State::Draft | State::Rejected)
    }

    /// Whether bills are made from it (its days up to its end or termination).
    pub fn billable(self) -> bool {
        matches!(
            self,
            State::Active | State::Expired | State::Terminated | State::Renewed | State::Changed
        )
    }
}

pub const ALL_STATES: [State; 10] = [
    State::Draft,
    State::PendingReview,
    State::Rejected,
    State::Approved,
    State::Active,
    State::Expired,
    State::Terminated,
    State::Renewed,
    State::Changed,
    State::Cancelled,
];

/// What someone does to a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Submit,
    Approve,
    Reject {
        reason: String,
    },
    Revise,
    Cancel,
    Activate,
    /// The term ended (a daily job, or a run seeing the date pass).
    Expire,
    /// Early termination: the contract ends before `last_day + 1`.
    Terminate {
        end: i32,
        reason: String,
    },
    /// The contract that follows it (a renewal, or a change) was activated from `from`.
    Supersede {
        by: String,
        renewal: bool,
        from: i32,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::Reject { .. } => "reject",
            Action::Revise => "revise",
            Action::Cancel => "cancel",
            Action::Activate => "activate",
            Action::Expire => "expire",
            Action::Terminate { .. } => "terminate",
            Action::Supersede { .. } => "supersede",
        }
    }
}

/// A transition refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a contract that is {state} cannot be {action}d")]
    NotFrom {
        state: &'static str,
        action: &'static str,
    },
    #[error("the user who submitted a contract cannot review it; another user must")]
    SameReviewer,
    #[error("{0}")]
    Invalid(String),
}

/// A contract's state and who moved it there, as the transition check needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub state: State,
    pub terms: Terms,
    /// Who submitted it for review (the reviewer must be someone else).
    pub submitted_by: Option<String>,
    pub approved_by: Option<String>,
}

impl Contract {
    pub fn draft(terms: Terms) -> Contract {
        Contract {
            state: State::Draft,
            terms,
            submitted_by: None,
            approved_by: None,
        }
    }

    /// Applies `action` by `actor` on `today` (a park-local day), or says why not. A
    /// termination moves the term's end; everything else changes the state and who.
    pub fn apply(
        &mut self,
        action: &Action,
        actor: &str,
        today: i32,
    ) -> Result<(), TransitionError> {
        let not = |s: State| TransitionError::NotFrom {
            state: s.as_str(),
            action: action.name(),
        };
        let next = match (self.state, action) {
            (State::Draft, Action::Submit) => {
                self.terms
                    .validate()
                    .map_err(|e| TransitionError::Invalid(e.to_string()))?;
                self.submitted_by = Some(actor.to_string());
                State::PendingReview
            }
            (State::PendingReview, Action::Approve | Action::Reject { .. }) => {
                if self.submitted_by.as_deref() == Some(actor) {
                    return Err(TransitionError::SameReviewer);
                }
                if let Action::Reject { reason } = action {
                    if reason.trim().is_empty() {
                        return Err(TransitionError::Invalid(
                            "a rejection needs a reason".into(),
                        ));
                    }
                    State::Rejected
                } else {
                    self.approved_by = Some(actor.to_string());
                    State::Approved
                }
            }
            (State::Rejected, Action::Revise) => {
                self.submitted_by = None;
                State::Draft
            }
            (State::Draft | State::Rejected | State::Approved, Action::Cancel) => State::Cancelled,
            (State::Approved, Action::Activate) => {
                if today >= self.terms.term.to {
                    return Err(TransitionError::Invalid(
                        "the contract's term has already ended".into(),
                    ));
                }
                State::Active
            }
            (State::Active, Action::Expire) => {
                if today < self.terms.term.to {
                    return Err(TransitionError::Invalid(
                        "the term has not ended yet".into(),
                    ));
                }
                State::Expired
            }
            (State::Active, Action::Terminate { end, reason }) => {
                if reason.trim().is_empty() {
                    return Err(TransitionError::Invalid(
                        "a termination needs a reason".into(),
                    ));
                }
                if *end <= self.terms.term.from || *end > self.terms.term.to {
                    return Err(TransitionError::Invalid(
                        "the end must fall after the start and no later than the term's end".into(),
                    ));
                }
                // Free-rent days after the end stay in the terms: a credit for days billed
                // in advance is worked out as they were billed.
                self.terms.term.to = *end;
                State::Terminated
            }
            (State::Active, Action::Supersede { renewal, from, .. }) => {
                if *from <= self.terms.term.from {
                    return Err(TransitionError::Invalid(
                        "the following contract must start after this one starts".into(),
                    ));
                }
                self.terms.term.to = self.terms.term.to.min(*from);
                if *renewal {
                    State::Renewed
                } else {
                    State::Changed
                }
            }
            (s, _) => return Err(not(s)),
        };
        self.state = next;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::parse_date;

    pub(crate) fn day(text: &str) -> i32 {
        parse_date(text).unwrap()
    }

    pub(crate) fn terms() -> Terms {
        Terms {
            enterprise_id: "e1".into(),
            spaces: vec![LeasedSpace {
                space_id: "r101".into(),
                area_centi_m2: 12_050,
            }],
            term: Days::new(day("2026-01-15"), day("2029-01-15")),
            rent: Rate::PerM2Month { fen: 8_000 },
            free_rent: vec![Days::new(day("2026-01-15"), day("2026-02-15"))],
            escalation_bp: 500,
            property_fee: Rate::PerM2Month { fen: 1_200 },
            deposit_fen: 2_000_000,
            cycle: Cycle::Monthly,
            due_days: 15,
            late_fee: LateFee {
                bp_per_day: 5,
                grace_days: 10,
            },
            energy: EnergyClause {
                electricity_tariff: Some("power".into()),
                water_tariff: None,
                common_share: CommonShare::ByArea,
            },
            currency: "CNY".into(),
        }
    }

    #[test]
    fn the_rent_schedule_rises_each_year_in_whole_fen() {
        // 120.50 m² at 80 yuan: 9,640 yuan; then +5 % a year, rounded each year.
        assert_eq!(
            terms().rent_schedule().unwrap(),
            vec![964_000, 1_012_200, 1_062_810]
        );
    }

    #[test]
    fn a_month_with_free_days_and_an_anniversary_is_charged_by_its_days() {
        let t = terms();
        // February 2026: 14 free days, then 14 charged days of 28.
        let feb = Month::parse("2026-02").unwrap().days();
        let (amount, parts) = t.rent_for(feb).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.year, p.monthly_fen, p.days))
                .collect::<Vec<_>>(),
            vec![(0, 964_000, 14)]
        );
        assert_eq!(amount.round().unwrap(), 482_000);
        // January 2027: 14 days of year 0, 17 days of year 1, over 31.
        let jan = Month::parse("2027-01").unwrap().days();
        let (amount, parts) = t.rent_for(jan).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.year, p.monthly_fen, p.days))
                .collect::<Vec<_>>(),
            vec![(0, 964_000, 14), (1, 1_012_200, 17)]
        );
        // (964000·14 + 1012200·17) / 31 = 30,703,400 / 31 = 990,432.258… → 990,432.
        assert_eq!(amount.round().unwrap(), 990_432);
        // The property fee counts the free days.
        let (fee, days) = t
            .property_fee_for(Month::parse("2026-01").unwrap().days())
            .unwrap();
        assert_eq!(days, 17);
        // 120.50 × 12 yuan = 1,446 yuan a month; 17/31 of it.
        assert_eq!(fee.round().unwrap(), 79_297);
    }

    #[test]
    fn quarterly_cycles_start_every_third_month_from_the_first() {
        let mut t = terms();
        t.cycle = Cycle::Quarterly;
        let jan = Month::parse("2026-01").unwrap();
        assert_eq!(
            t.cycle_starting_in(jan),
            Some(Days::new(day("2026-01-15"), day("2026-04-01")))
        );
        assert_eq!(t.cycle_starting_in(jan.plus(1)), None);
        assert_eq!(
            t.cycle_starting_in(jan.plus(3)),
            Some(Days::new(day("2026-04-01"), day("2026-07-01")))
        );
        assert_eq!(t.cycle_starting_in(jan.plus(-3)), None);
        // The last cycle ends with the term.
        assert_eq!(
            t.cycle_starting_in(Month::parse("2029-01").unwrap()),
            Some(Days::new(day("2029-01-01"), day("2029-01-15")))
        );
    }

    #[test]
    fn review_needs_a_second_user_and_states_follow_the_flow() {
        let mut c = Contract::draft(terms());
        let today = day("2026-01-10");
        assert!(c.apply(&Action::Activate, "lee", today).is_err());
        c.apply(&Action::Submit, "lee", today).unwrap();
        assert_eq!(
            c.apply(&Action::Approve, "lee", today),
            Err(TransitionError::SameReviewer)
        );
        c.apply(
            &Action::Reject {
                reason: "rate".into(),
            },
            "wang",
            today,
        )
        .unwrap();
        assert_eq!(c.state, State::Rejected);
        c.apply(&Action::Revise, "lee", today).unwrap();
        c.apply(&Action::Submit, "lee", today).unwrap();
        c.apply(&Action::Approve, "wang", today).unwrap();
        c.apply(&Action::Activate, "lee", today).unwrap();
        assert_eq!(c.state, State::Active);
        assert!(c.apply(&Action::Expire, "system", today).is_err());
        let end = day("2027-06-01");
        c.apply(
            &Action::Terminate {
                end,
                reason: "moving out".into(),
            },
            "lee",
            today,
        )
        .unwrap();
        assert_eq!((c.state, c.terms.term.to), (State::Terminated, end));
        assert!(matches!(
            c.apply(&Action::Submit, "lee", today),
            Err(TransitionError::NotFrom {
                state: "terminated",
                ..
            })
        ));
    }

    #[test]
    fn terms_errors_name_the_field() {
        let mut t = terms();
        t.spaces[0].area_centi_m2 = 0;
        assert_eq!(t.validate().unwrap_err().field, "spaces[0].area_m2");
        let mut t = terms();
        t.free_rent
            .push(Days::new(day("2025-12-01"), day("2026-01-20")));
        assert_eq!(t.validate().unwrap_err().field, "free_rent[1]");
        let mut t = terms();
        t.currency = "rmb".into();
        assert_eq!(t.validate().unwrap_err().field, "currency");
    }
}
