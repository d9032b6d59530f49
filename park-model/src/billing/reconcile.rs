//! Matching a bank statement's credits to the bills they pay, and the ageing of arrears.
//!
//! A credit is matched, in this order: **by reference**, when its memo names an open bill
//! (the bill's id, as the bill asks payers to write it) and does not pay more than the bill
//! still owes; **by payer and amount**, when the payer's name is an enterprise's name and
//! exactly one of that enterprise's open bills owes exactly the amount. Anything else (no
//! reference, two candidate bills, more than owed, a payer nobody knows) is left for a
//! person, with the reason. Lines are taken in the statement's order, and each match
//! lowers what the bill owes for the lines after it, so two transfers for one bill are both
//! matched and a third that would overpay is not.

use std::collections::{BTreeMap, HashMap};

use super::money::Fen;

/// A credit line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub amount_fen: Fen,
    pub payer: String,
    pub memo: String,
}

/// A bill that can still be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBill {
    pub id: String,
    pub enterprise_id: String,
    pub owed_fen: Fen,
}

/// How a credit was matched, or why it was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Its memo names the bill.
    Reference(String),
    /// Its payer is the bill's enterprise and the amount is what the bill owes.
    PayerAmount(String),
    Unmatched(String),
}

impl Match {
    pub fn bill(&self) -> Option<&str> {
        match self {
            Match::Reference(b) | Match::PayerAmount(b) => Some(b),
            Match::Unmatched(_) => None,
        }
    }

    pub fn how(&self) -> &'static str {
        match self {
            Match::Reference(_) => "reference",
            Match::PayerAmount(_) => "payer_amount",
            Match::Unmatched(_) => "unmatched",
        }
    }
}

/// A name as payers write it: no spaces, full-width brackets as half-width, case folded.
pub fn normalized_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '（' => '(',
            '）' => ')',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of a memo that could be a bill id: runs of letters, digits, `-` and `_`.
fn memo_tokens(memo: &str) -> impl Iterator<Item = &str> {
    memo.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|t| t.len() >= 3)
}

/// Matches `credits` in order against `bills`; `names` maps each enterprise's id to its
/// name.
pub fn match_credits(
    credits: &[Credit],
    bills: &[OpenBill],
    names: &BTreeMap<String, String>,
) -> Vec<Match> {
    let mut owed: HashMap<&str, Fen> = bills.iter().map(|b| (b.id.as_str(), b.owed_fen)).collect();
    let by_id: HashMap<&str, &OpenBill> = bills.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut enterprise_by_name: HashMap<String, Vec<&str>> = HashMap::new();
    for (id, name) in names {
        enterprise_by_name
            .entry(normalized_name(name))
            .or_default()
            .push(id);
    }
    let mut bills_of: HashMap<&str, Vec<&OpenBill>> = HashMap::new();
    for b in bills {
        bills_of
            .entry(b.enterprise_id.as_str())
            .or_default()
            .push(b);
    }
    let mut out = Vec::with_capacity(credits.len());
    for c in credits {
        if c.amount_fen <= 0 {
            out.push(Match::Unmatched("not a credit".into()));
            continue;
        }
        let named: Vec<&str> = memo_tokens(&c.memo)
            .filter(|t| by_id.contains_key(t))
            .collect();
        let m = match named.as_slice() {
            [bill] => {
                let left = owed[bill];
                if c.amount_fen <= left {
                    Match::Reference(bill.to_string())
                } else {
                    Match::Unmatched(format!(
                        "the memo names bill {bill}, which owes {left} fen, less than the amount"
                    ))
                }
            }
            [_, _, ..] => Match::Unmatched("the memo names more than one bill".into()),
            [] => {
                let enterprises = enterprise_by_name
                    .get(&normalized_name(&c.payer))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                match enterprises {
                    [] => Match::Unmatched(
                        "no bill is named and the payer is not an enterprise of the park".into(),
                    ),
                    [_, _, ..] => {
                        Match::Unmatched("several enterprises have the payer's name".into())
                    }
                    [e] => {
                        let exact: Vec<&str> = bills_of
                            .get(e)
                            .into_iter()
                            .flatten()
                            .filter(|b| owed[b.id.as_str()] == c.amount_fen)
                            .map(|b| b.id.as_str())
                            .collect();
                        match exact.as_slice() {
                            [bill] => Match::PayerAmount(bill.to_string()),
                            [] => Match::Unmatched(format!(
                                "no open bill of {e} owes exactly this amount"
                            )),
                            _ => Match::Unmatched(format!(
                                "several open bills of {e} owe this amount"
                            )),
                        }
                    }
                }
            }
        };
        if let Some(bill) = m.bill() {
            let bill = by_id[bill].id.as_str();
            *owed.get_mut(bill).expect("a matched bill is open") -= c.amount_fen;
        }
        out.push(m);
    }
    out
}

/// Arrears by how long they are overdue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ageing {
    /// Owed and not yet due.
    pub not_due_fen: Fen,
    pub days_1_30_fen: Fen,
    pub days_31_60_fen: Fen,
    pub days_61_90_fen: Fen,
    pub over_90_fen: Fen,
}

impl Ageing {
    /// Adds `owed` of a bill due on `due_day`, as of `day`.
    pub fn add(&mut self, owed: Fen, due_day: i32, day: i32) {
        let late = day - due_day;
        let bucket = match late {
            i32::MIN..=0 => &mut self.not_due_fen,
            1..=30 => &mut self.days_1_30_fen,
            31..=60 => &mut self.days_31_60_fen,
            61..=90 => &mut self.days_61_90_fen,
            _ => &mut self.over_90_fen,
        };
        *bucket += owed;
    }

    pub fn total(&self) -> Fen {
        self.not_due_fen
            + self.days_1_30_fen
            + self.days_31_60_fen
            + self.days_61_90_fen
            + self.over_90_fen
    }

    pub fn overdue(&self) -> Fen {
        self.total() - self.not_due_fen
    }

    pub fn plus(&mut self, o: &Ageing) {
        self.not_due_fen += o.not_due_fen;
        self.days_1_30_fen += o.days_1_30_fen;
        self.days_31_60_fen += o.days_31_60_fen;
        self.days_61_90_fen += o.days_61_90_fen;
        self.over_90_fen += o.over_90_fen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bill(id: &str, e: &str, owed: Fen) -> OpenBill {
        OpenBill {
            id: id.into(),
            enterprise_id: e.into(),
            owed_fen: owed,
        }
    }

    fn credit(amount: Fen, payer: &str, memo: &str) -> Credit {
        Credit {
            amount_fen: amount,
            payer: payer.into(),
            memo: memo.into(),
        }
    }

    fn names() -> BTreeMap<String, String> {
        [
            ("e1", "星河科技（深圳）有限公司"),
            ("e2", "Acme Ltd"),
            ("e3", "acme ltd"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn credits_match_by_reference_then_by_payer_and_amount() {
        let bills = [
            bill("202611-e1-1", "e1", 10_000),
            bill("202612-e1-1", "e1", 5_000),
            bill("202611-e2-1", "e2", 700),
        ];
        let got = match_credits(
            &[
                credit(6_000, "someone", "房租 202611-e1-1 partial"),
                credit(4_000, "someone", "202611-e1-1"),
                credit(1, "someone", "202611-e1-1 one more fen"),
                credit(5_000, "星河科技 (深圳) 有限公司", "十二月"),
                credit(5_000, "星河科技(深圳)有限公司", "again"),
                credit(700, "Acme Ltd", ""),
                credit(300, "Nobody", ""),
                credit(-50, "bank", "fee"),
                credit(100, "x", "202611-e1-1 202612-e1-1"),
            ],
            &bills,
            &names(),
        );
        assert_eq!(got[0], Match::Reference("202611-e1-1".into()));
        assert_eq!(got[1], Match::Reference("202611-e1-1".into()));
        assert!(matches!(got[2], Match::Unmatched(_)), "{:?}", got[2]);
        assert_eq!(got[3], Match::PayerAmount("202612-e1-1".into()));
        assert!(
            matches!(got[4], Match::Unmatched(_)),
            "the bill is paid: {:?}",
            got[4]
        );
        // Two enterprises whose names read the same: a person decides.
        assert!(matches!(got[5], Match::Unmatched(_)), "{:?}", got[5]);
        assert!(matches!(got[6], Match::Unmatched(_)));
        assert!(matches!(got[7], Match::Unmatched(_)));
        assert!(matches!(got[8], Match::Unmatched(_)));
    }

    proptest! {
        /// Whatever the statement, no bill is matched for more than it owed.
        #[test]
        fn matches_never_pay_a_bill_more_than_it_owes(
            owed in prop::collection::vec(1i64..5_000, 1..6),
            credits in prop::collection::vec((0usize..8, 1i64..5_000, any::<bool>()), 0..30),
        ) {
            let bills: Vec<OpenBill> = owed.iter().enumerate()
                .map(|(i, o)| bill(&format!("b-{i}"), &format!("e{}", i % 3 + 1), *o)).collect();
            let lines: Vec<Credit> = credits.iter().map(|(i, amount, by_ref)| {
                if *by_ref { credit(*amount, "x", &format!("pay b-{i}")) }
                else { credit(*amount, ["星河科技（深圳）有限公司", "Acme Ltd"][i % 2], "") }
            }).collect();
            let got = match_credits(&lines, &bills, &names());
            prop_assert_eq!(got.len(), lines.len());
            for b in &bills {
                let paid: Fen = got.iter().zip(&lines)
                    .filter(|(m, _)| m.bill() == Some(b.id.as_str()))
                    .map(|(_, c)| c.amount_fen).sum();
                prop_assert!(paid <= b.owed_fen);
            }
        }
    }

    #[test]
    fn arrears_age_by_days_past_due() {
        let mut a = Ageing::default();
        a.add(100, 10, 10);
        a.add(200, 10, 11);
        a.add(300, 10, 40);
        a.add(400, 10, 41);
        a.add(500, 10, 100);
        a.add(600, 10, 101);
        assert_eq!(a.not_due_fen, 100);
        assert_eq!(a.days_1_30_fen, 500);
        assert_eq!(a.days_31_60_fen, 400);
        assert_eq!(a.days_61_90_fen, 500);
        assert_eq!(a.over_90_fen, 600);
        assert_eq!(a.total(), 2100);
        assert_eq!(a.overdue(), 2000);
    }
}
