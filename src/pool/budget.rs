//! Retry budget: retries may add at most `percent`% to a pool's request rate. A token
//! bucket in one atomic: each request deposits percent/100 of a token, each retry
//! takes one. It starts (and is capped) at a small reserve so a quiet pool can still
//! retry a few requests.

use std::sync::atomic::{AtomicI64, Ordering};

const MILLI: i64 = 1000;
/// Tokens available at start and at most.
const RESERVE: i64 = 10 * MILLI;

#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            milli_tokens: AtomicI64::new(RESERVE),
        }
    }
}

impl RetryBudget {
    /// One request was made.
    pub fn deposit(&self, percent: u32) {
        // Full in steady state: then this is a plain load, no write to a shared line.
        if self.milli_tokens.load(Ordering::Relaxed) < RESERVE {
            let add = i64::from(percent) * MILLI / 100;
            let _ = self
                .milli_tokens
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                    Some((t + add).min(RESERVE))
                });
        }
    }

    /// May one retry be made now? Takes a token if so.
    pub fn withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                (t >= MILLI).then_some(t - MILLI)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_limited_to_the_percentage() {
        let b = RetryBudget::default();
        // the reserve
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
        // 100 requests at 20% earn 20 retries
        for _ in 0..100 {
            b.deposit(20);
        }
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        assert_eq!(n, 10, "capped at the reserve");
        for _ in 0..25 {
            b.deposit(20);
        }
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 5);
        // 0% allows nothing beyond the reserve
        let z = RetryBudget::default();
        for _ in 0..10 {
            z.withdraw();
        }
        for _ in 0..1000 {
            z.deposit(0);
        }
        assert!(!z.withdraw());
    }
}
