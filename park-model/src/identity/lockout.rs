//! The growing delay after failed logins. An account (and, separately, a client address)
//! gets a few free failures; each failure after them locks it for twice as long as the one
//! before, up to a ceiling. A success clears an account's count. While locked, a login is
//! refused without its password being checked, so guessing costs the attacker time rather
//! than the server CPU.

/// Microseconds.
pub type Micros = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub free_failures: u32,
    pub first_delay: Micros,
    pub max_delay: Micros,
    /// Failures older than this (since the last one) no longer count.
    pub forget_after: Micros,
}

const SECOND: Micros = 1_000_000;

impl LockoutPolicy {
    /// Per account: five tries, then 30 s, 1 min, 2 min, ... up to an hour.
    pub const ACCOUNT: LockoutPolicy = LockoutPolicy {
        free_failures: 5,
        first_delay: 30 * SECOND,
        max_delay: 3600 * SECOND,
        forget_after: 24 * 3600 * SECOND,
    };

    /// Per client address: more room (a shared office NAT), the same growth.
    pub const ADDRESS: LockoutPolicy = LockoutPolicy {
        free_failures: 20,
        first_delay: 30 * SECOND,
        max_delay: 3600 * SECOND,
        forget_after: 24 * 3600 * SECOND,
    };

    /// The lock that follows failure number `failures` (counting this one).
    pub fn delay_after(&self, failures: u32) -> Option<Micros> {
        let over = failures.checked_sub(self.free_failures)?;
        if over == 0 {
            return None;
        }
        let shift = (over - 1).min(40);
        Some(
            self.first_delay
                .saturating_mul(1i64 << shift)
                .min(self.max_delay),
        )
    }
}

/// The failures of one account or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    pub count: u32,
    pub last: Micros,
    pub locked_until: Micros,
}

impl Failures {
    /// `Some(until)` when a login now must be refused without checking it.
    pub fn locked(&self, now: Micros) -> Option<Micros> {
        (self.locked_until > now).then_some(self.locked_until)
    }

    /// Records a failure at `now`.
    pub fn fail(&mut self, policy: &LockoutPolicy, now: Micros) {
        if now - self.last > policy.forget_after {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        if let Some(d) = policy.delay_after(self.count) {
            self.locked_until = now.saturating_add(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_after_the_free_failures_up_to_the_ceiling() {
        let p = LockoutPolicy::ACCOUNT;
        assert_eq!(p.delay_after(5), None);
        assert_eq!(p.delay_after(6), Some(30 * SECOND));
        assert_eq!(p.delay_after(7), Some(60 * SECOND));
        assert_eq!(p.delay_after(8), Some(120 * SECOND));
        assert_eq!(p.delay_after(100), Some(3600 * SECOND));
        assert_eq!(p.delay_after(u32::MAX), Some(3600 * SECOND));
    }

    #[test]
    fn failures_lock_and_are_forgotten_after_a_quiet_day() {
        let p = LockoutPolicy::ACCOUNT;
        let mut f = Failures::default();
        let t0 = 1_000 * SECOND;
        for i in 0..6 {
            f.fail(&p, t0 + i);
        }
        assert_eq!(f.locked(t0 + 10), Some(t0 + 5 + 30 * SECOND));
        assert_eq!(f.locked(t0 + 31 * SECOND), None);
        f.fail(&p, t0 + 40 * SECOND);
        assert_eq!(f.count, 7);
        assert_eq!(f.locked_until, t0 + 100 * SECOND);
        f.fail(&p, t0 + 3 * 86_400 * SECOND);
        assert_eq!(f.count, 1);
    }
}
