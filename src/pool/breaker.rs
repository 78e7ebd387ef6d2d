//! The per-server circuit breaker (passive health): CLOSED, OPEN (ejected) for an
//! ejection time that doubles on each failed trial, HALF-OPEN (one trial request).
//!
//! State lives in atomics so the data plane reads it without locking; the clock is
//! passed in (milliseconds on a monotonic clock), so the logic is tested without time.

use crate::config::BreakerConfig;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// A transition worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Ejected for this many milliseconds.
    Opened {
        for_ms: u64,
    },
    Closed,
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    open_until: AtomicU64,
    /// Failed trials in a row; the ejection time is doubled this many times.
    repeats: AtomicU32,
    /// Times this server was ejected (for stats).
    pub ejections: AtomicU64,
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// May a request be sent to this server now? (An OPEN breaker whose time is up
    /// admits one trial; `try_begin` decides who gets it.)
    pub fn admits(&self, now: u64) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => now >= self.open_until.load(Ordering::Acquire),
            BreakerState::HalfOpen => false,
        }
    }

    /// Called once a request is committed to this server. Returns `Some(trial)`
    /// when it may go (trial = it is the HALF-OPEN probe), `None` if it lost the
    /// race for the single trial.
    pub fn try_begin(&self, now: u64) -> Option<bool> {
        match self.state() {
            BreakerState::Closed => Some(false),
            BreakerState::HalfOpen => None,
            BreakerState::Open => {
                if now < self.open_until.load(Ordering::Acquire) {
                    return None;
                }
                self.state
                    .compare_exchange(
                        BreakerState::Open as u8,
                        BreakerState::HalfOpen as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .ok()
                    .map(|_| true)
            }
        }
    }

    pub fn on_success(&self, trial: bool) -> Option<Change> {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if trial
            && self
                .state
                .compare_exchange(
                    BreakerState::HalfOpen as u8,
                    BreakerState::Closed as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.repeats.store(0, Ordering::Relaxed);
            return Some(Change::Closed);
        }
        None
    }

    /// Records a failure. `may_eject` is asked before a CLOSED breaker opens (the
    /// pool's `max_ejected_percent`); it is not asked when a trial fails.
    pub fn on_failure(
        &self,
        cfg: &BreakerConfig,
        now: u64,
        trial: bool,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Change> {
        if cfg.consecutive_failures == 0 {
            return None;
        }
        if trial {
            // (a reset by an active check may have closed the breaker meanwhile)
            if self.state() != BreakerState::HalfOpen {
                return None;
            }
            let repeats = self.repeats.load(Ordering::Acquire) + 1;
            let for_ms = ejection_ms(cfg, repeats);
            self.open_until
                .store(now.saturating_add(for_ms), Ordering::Release);
            if self
                .state
                .compare_exchange(
                    BreakerState::HalfOpen as u8,
                    BreakerState::Open as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                self.repeats.store(repeats, Ordering::Release);
                self.ejections.fetch_add(1, Ordering::Relaxed);
                return Some(Change::Opened { for_ms });
            }
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n < cfg.consecutive_failures || self.state() != BreakerState::Closed || !may_eject() {
            return None;
        }
        let for_ms = ejection_ms(cfg, 0);
        self.open_until
            .store(now.saturating_add(for_ms), Ordering::Release);
        if self
            .state
            .compare_exchange(
                BreakerState::Closed as u8,
                BreakerState::Open as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            return Some(Change::Opened { for_ms });
        }
        None
    }

    /// An active health check found the server healthy again: forget past failures.
    pub fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.repeats.store(0, Ordering::Relaxed);
        self.state
            .store(BreakerState::Closed as u8, Ordering::Release);
    }

    /// A trial that ended without an outcome (the client went away): let the next
    /// request be the trial.
    /// The breaker as another process takes it over (binary upgrade): state,
    /// failures in a row, open-until (on the system-wide monotonic clock),
    /// repeats, ejections. A trial in flight counts as open.
    pub fn carry(&self) -> [u64; 5] {
        let state = match self.state() {
            BreakerState::Closed => 0,
            _ => 1,
        };
        [
            state,
            u64::from(self.failures.load(Ordering::Acquire)),
            self.open_until.load(Ordering::Acquire),
            u64::from(self.repeats.load(Ordering::Acquire)),
            self.ejections.load(Ordering::Relaxed),
        ]
    }

    /// Takes over what `carry` gave (a fresh breaker only).
    pub fn adopt(&self, c: [u64; 5]) {
        let [state, failures, open_until, repeats, ejections] = c;
        self.failures
            .store(failures.min(u64::from(u32::MAX)) as u32, Ordering::Release);
        self.open_until.store(open_until, Ordering::Release);
        self.repeats
            .store(repeats.min(u64::from(u32::MAX)) as u32, Ordering::Release);
        self.ejections.store(ejections, Ordering::Relaxed);
        let s = if state == 0 {
            BreakerState::Closed
        } else {
            BreakerState::Open
        };
        self.state.store(s as u8, Ordering::Release);
    }

    pub fn abandon_trial(&self) {
        let _ = self.state.compare_exchange(
            BreakerState::HalfOpen as u8,
            BreakerState::Open as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// ejection_time * 2^repeats, capped at max_ejection_time.
pub fn ejection_ms(cfg: &BreakerConfig, repeats: u32) -> u64 {
    let base = cfg.ejection_time.as_millis() as u64;
    let max = cfg.max_ejection_time.as_millis() as u64;
    // (a shift drops the bits it pushes out: 5 h << 40 wrapped to a short time)
    base.saturating_mul(1u64 << repeats.min(40)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            max_ejected_percent: 50,
            on_5xx: false,
        }
    }

    /// A long ejection time doubled many times is the cap, not what the
    /// bits left over from a shift say.
    #[test]
    fn ejection_time_saturates_at_the_cap() {
        // 2^34 ms (199 days): shifted by 30, every bit falls off the end
        let base = 1u64 << 34;
        let cap = 365 * 24 * 3600 * 1000;
        let cfg = BreakerConfig {
            ejection_time: Duration::from_millis(base),
            max_ejection_time: Duration::from_millis(cap),
            ..cfg()
        };
        for repeats in [0, 1, 20, 30, 40, 41, u32::MAX] {
            let ms = ejection_ms(&cfg, repeats);
            assert!(ms >= base && ms <= cap, "{repeats}: {ms}");
        }
        assert_eq!(ejection_ms(&cfg, 30), cap);
    }

    #[test]
    fn opens_after_n_consecutive_failures_only() {
        let b = Breaker::default();
        let c = cfg();
        assert_eq!(b.on_failure(&c, 0, false, || true), None);
        assert_eq!(b.on_failure(&c, 0, false, || true), None);
        b.on_success(false); // a success resets the count
        assert_eq!(b.on_failure(&c, 0, false, || true), None);
        assert_eq!(b.on_failure(&c, 0, false, || true), None);
        assert_eq!(
            b.on_failure(&c, 1000, false, || true),
            Some(Change::Opened { for_ms: 10_000 })
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admits(1000));
        assert!(!b.admits(10_999));
        assert!(b.admits(11_000));
    }

    #[test]
    fn half_open_admits_one_trial_and_closes_on_success() {
        let b = Breaker::default();
        let c = cfg();
        for _ in 0..3 {
            b.on_failure(&c, 0, false, || true);
        }
        assert_eq!(b.try_begin(5_000), None, "still ejected");
        assert_eq!(
            b.try_begin(10_000),
            Some(true),
            "the first request after the ejection is the trial"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_begin(10_001), None, "only one trial at a time");
        assert!(!b.admits(10_001));
        assert_eq!(b.on_success(true), Some(Change::Closed));
        assert_eq!(b.try_begin(10_002), Some(false));
    }

    #[test]
    fn failed_trials_double_the_ejection_up_to_the_max() {
        let b = Breaker::default();
        let c = cfg();
        for _ in 0..3 {
            b.on_failure(&c, 0, false, || true);
        }
        let mut now = 10_000;
        for expect in [20_000, 35_000, 35_000] {
            assert_eq!(b.try_begin(now), Some(true));
            assert_eq!(
                b.on_failure(&c, now, true, || unreachable!()),
                Some(Change::Opened { for_ms: expect })
            );
            assert!(!b.admits(now + expect - 1));
            now += expect;
        }
        // a successful trial resets the doubling
        assert_eq!(b.try_begin(now), Some(true));
        b.on_success(true);
        for _ in 0..3 {
            b.on_failure(&c, now, false, || true);
        }
        assert!(b.admits(now + 10_000));
        assert_eq!(b.ejections.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn max_ejected_guard_and_off_switch() {
        let b = Breaker::default();
        let c = cfg();
        for _ in 0..10 {
            assert_eq!(b.on_failure(&c, 0, false, || false), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let off = BreakerConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        for _ in 0..10 {
            assert_eq!(b.on_failure(&off, 0, false, || true), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_trial_failing_after_a_health_reset_does_not_double_the_next_ejection() {
        let b = Breaker::default();
        let c = cfg();
        for _ in 0..3 {
            b.on_failure(&c, 0, false, || true);
        }
        assert_eq!(b.try_begin(10_000), Some(true));
        b.reset(); // an active check found the server healthy
        assert_eq!(b.on_failure(&c, 10_001, true, || true), None);
        for _ in 0..3 {
            b.on_failure(&c, 20_000, false, || true);
        }
        assert!(
            b.admits(30_000),
            "the first ejection after a reset lasts ejection_time, not twice"
        );
    }

    #[test]
    fn abandoned_trial_lets_the_next_request_try() {
        let b = Breaker::default();
        let c = cfg();
        for _ in 0..3 {
            b.on_failure(&c, 0, false, || true);
        }
        assert_eq!(b.try_begin(10_000), Some(true));
        b.abandon_trial();
        assert_eq!(b.try_begin(10_001), Some(true));
    }
}
