//! Money in integer fen, and exact amounts that are rounded once.
//!
//! Every figure that leads to a bill line is kept as an exact fraction of a fen ([`Exact`]):
//! areas in hundredths of a square metre times rates in fen, days of a month over the days
//! in it, watt-hours times prices in hundredths of a fen. Fractions add without loss, and
//! a line's amount is its exact sum rounded **once**, to the nearest fen, halves away from
//! zero (四舍五入: 0.5 fen up to 1, −0.5 fen down to −1). No other rounding happens in a
//! line; rates that a contract states in whole fen (its rent schedule) are inputs, not
//! roundings.

/// An amount in fen (1/100 yuan) of the bill's currency.
pub type Fen = i64;

/// What can go wrong in money arithmetic: an amount too large for the types (about 9×10^16
/// yuan), which only absurd input reaches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amount out of range")]
pub struct OutOfRange;

/// An exact amount of fen, `num / den` with `den > 0`, kept in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Exact {
    pub const ZERO: Exact = Exact { num: 0, den: 1 };

    /// A whole number of fen.
    pub fn fen(fen: Fen) -> Exact {
        Exact {
            num: i128::from(fen),
            den: 1,
        }
    }

    /// `num / den` fen. `den` must not be zero.
    pub fn ratio(num: i128, den: i128) -> Result<Exact, OutOfRange> {
        if den == 0 {
            return Err(OutOfRange);
        }
        let (num, den) = if den < 0 {
            (num.checked_neg().ok_or(OutOfRange)?, -den)
        } else {
            (num, den)
        };
        let g = gcd(num, den);
        Ok(Exact {
            num: num / g,
            den: den / g,
        })
    }

    /// The exact sum.
    pub fn plus(self, other: Exact) -> Result<Exact, OutOfRange> {
        let g = gcd(self.den, other.den);
        let left = self.num.checked_mul(other.den / g).ok_or(OutOfRange)?;
        let right = other.num.checked_mul(self.den / g).ok_or(OutOfRange)?;
        let den = (self.den / g).checked_mul(other.den).ok_or(OutOfRange)?;
        Exact::ratio(left.checked_add(right).ok_or(OutOfRange)?, den)
    }

    /// This amount times `num / den`.
    pub fn times(self, num: i128, den: i128) -> Result<Exact, OutOfRange> {
        let a = Exact::ratio(self.num, den)?;
        let b = Exact::ratio(num, self.den)?;
        Exact::ratio(
            a.num.checked_mul(b.num).ok_or(OutOfRange)?,
            a.den.checked_mul(b.den).ok_or(OutOfRange)?,
        )
    }

    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    /// The nearest whole fen, halves away from zero: the one rounding of a line.
    pub fn round(self) -> Result<Fen, OutOfRange> {
        let q = self.num.div_euclid(self.den);
        let r = self.num.rem_euclid(self.den);
        // num = q·den + r with 0 ≤ r < den; round up when r/den > 1/2, or = 1/2 and the
        // amount is positive (a negative half goes down, away from zero).
        let twice = r * 2;
        let up = twice > self.den || (twice == self.den && self.num > 0);
        Fen::try_from(q + i128::from(up)).map_err(|_| OutOfRange)
    }

    /// The amount as a decimal text of fen with up to six places, for explanations
    /// (`"1234.5"`); exact when the fraction ends within six places, else cut after six and
    /// marked `…`.
    pub fn to_text(self) -> String {
        let neg = self.num < 0;
        let n = self.num.abs();
        let whole = n / self.den;
        let mut r = n % self.den;
        let mut text = format!("{}{whole}", if neg { "-" } else { "" });
        if r != 0 {
            text.push('.');
            for _ in 0..6 {
                r *= 10;
                text.push(char::from(b'0' + (r / self.den) as u8));
                r %= self.den;
                if r == 0 {
                    break;
                }
            }
            if r != 0 {
                text.push('…');
            }
        }
        text
    }
}

/// Formats fen as yuan with two places (`"1234.56"`, `"-0.05"`), for documents and CSV.
pub fn yuan(fen: Fen) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Reads an amount of yuan as banks and people write it (`"12,345.67"`, `"￥1000"`,
/// `"-0.5"`, `"1 000.00"`) into fen, exactly: at most two decimal places, no exponent, no
/// rounding.
pub fn parse_yuan(text: &str) -> Result<Fen, String> {
    let t = text.trim();
    let t = t
        .strip_prefix('￥')
        .or_else(|| t.strip_prefix('¥'))
        .or_else(|| t.strip_prefix("CNY"))
        .unwrap_or(t)
        .trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = t
        .chars()
        .filter(|c| !matches!(c, ',' | ' ' | '_'))
        .collect();
    let (whole, frac) = digits.split_once('.').unwrap_or((&digits, ""));
    let ok = !whole.is_empty()
        && whole.len() <= 15
        && frac.len() <= 2
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty());
    if !ok {
        return Err(format!(
            "{text:?} is not an amount of yuan with at most two decimals"
        ));
    }
    let whole: i64 = whole
        .parse()
        .map_err(|_| format!("{text:?} is out of range"))?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().unwrap_or(0) * 10,
        _ => frac.parse().unwrap_or(0),
    };
    let fen = whole * 100 + frac;
    Ok(if neg { -fen } else { fen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_of_yuan_are_read_exactly() {
        for (text, fen) in [
            ("12,345.67", 1_234_567),
            ("￥1000", 100_000),
            ("¥ 0.5", 50),
            ("-0.05", -5),
            ("+3", 300),
            ("1 000.00", 100_000),
            ("CNY 7.10", 710),
        ] {
            assert_eq!(parse_yuan(text), Ok(fen), "{text}");
        }
        for text in [
            "",
            "1.234",
            "abc",
            "1e5",
            "1.",
            ".5",
            "--1",
            "12.3.4",
            "1234567890123456",
        ] {
            assert!(parse_yuan(text).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn yuan_reads_back_what_it_writes(fen in -1_000_000_000_000i64..1_000_000_000_000) {
            prop_assert_eq!(parse_yuan(&yuan(fen)), Ok(fen));
        }
    }

    #[test]
    fn halves_round_away_from_zero_and_nothing_else_does() {
        let r = |n, d| Exact::ratio(n, d).unwrap().round().unwrap();
        assert_eq!(r(1, 2), 1);
        assert_eq!(r(-1, 2), -1);
        assert_eq!(r(3, 2), 2);
        assert_eq!(r(5, 2), 3);
        assert_eq!(r(-5, 2), -3);
        assert_eq!(r(49, 100), 0);
        assert_eq!(r(51, 100), 1);
        assert_eq!(r(-51, 100), -1);
        assert_eq!(r(10, 1), 10);
    }

    #[test]
    fn text_shows_the_exact_fraction() {
        assert_eq!(Exact::ratio(3, 2).unwrap().to_text(), "1.5");
        assert_eq!(Exact::ratio(-1, 4).unwrap().to_text(), "-0.25");
        assert_eq!(Exact::ratio(1, 3).unwrap().to_text(), "0.333333…");
        assert_eq!(yuan(123_456), "1234.56");
        assert_eq!(yuan(-5), "-0.05");
    }

    proptest! {
        #[test]
        fn sums_of_fractions_are_exact(parts in proptest::collection::vec((-1_000_000i128..1_000_000, 1i128..100), 1..20)) {
            let mut sum = Exact::ZERO;
            for (n, d) in &parts {
                sum = sum.plus(Exact::ratio(*n, *d).unwrap()).unwrap();
            }
            // Multiplying back by the product of the denominators gives an integer identity.
            let l: i128 = parts.iter().map(|p| p.1).fold(1, |a, d| a / gcd(a, d) * d);
            let expected: i128 = parts.iter().map(|(n, d)| n * (l / d)).sum();
            prop_assert_eq!(sum.times(l, 1).unwrap(), Exact::ratio(expected, 1).unwrap());
        }

        #[test]
        fn rounding_is_within_half_a_fen(n in -10_000_000i128..10_000_000, d in 1i128..10_000) {
            let x = Exact::ratio(n, d).unwrap();
            let r = i128::from(x.round().unwrap());
            prop_assert!((r * d - n).abs() * 2 <= d);
        }
    }
}
