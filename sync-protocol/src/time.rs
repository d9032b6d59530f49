//! `Time`: the instant the caller passes into every `handle_*` and `poll_*` call.
//!
//! This module reads no clock. A `Time` is whatever monotonic microsecond count the caller
//! keeps (the edge node passes UTC microseconds since the Unix epoch, the test harness a
//! virtual clock starting at zero); the sessions only compare instants and add durations.

use std::ops::Add;
use std::time::Duration;

/// An instant in microseconds on the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    /// The origin of the caller's clock.
    pub const ZERO: Time = Time(0);

    pub const fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    pub const fn from_millis(millis: u64) -> Time {
        Time(millis.saturating_mul(1_000))
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this instant is; zero when it is not later.
    pub fn saturating_duration_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// Saturates at the end of time rather than wrapping, so that a huge configured timeout
    /// means "never" instead of "at once".
    fn add(self, rhs: Duration) -> Time {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_huge_duration_saturates_instead_of_wrapping() {
        let t = Time::from_micros(u64::MAX - 1) + Duration::from_secs(10);
        assert_eq!(t.as_micros(), u64::MAX);
        assert_eq!(
            Time::from_millis(2) + Duration::from_millis(3),
            Time::from_micros(5_000)
        );
    }

    #[test]
    fn duration_since_a_later_instant_is_zero() {
        let a = Time::from_micros(10);
        let b = Time::from_micros(30);
        assert_eq!(b.saturating_duration_since(a), Duration::from_micros(20));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
    }
}
