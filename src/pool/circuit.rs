//! The pool-level circuit (`[pool.circuit]`): when the share of failed requests
//! over a sliding window passes `failure_rate` (with at least `min_requests` in
//! the window), the circuit opens and the pool's requests fail fast with 503
//! without touching its servers. After `open_for`, one request is let through as
//! a trial: its success closes the circuit, its failure opens it again.
//!
//! The per-server breaker (breaker.rs) ejects one server after consecutive
//! failures; this one protects the servers as a whole (a database behind every
//! one of them that is overloaded, say) and spares clients the wait.
//!
//! Lock-free: ten buckets of `window / 10` each hold success and failure
//! counts, stamped with the bucket's period; a stale bucket is reset by the
//! first request that lands in it. State lives in the pool's shared state, so it
//! survives reloads.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::config::CircuitConfig;

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The period (now / bucket length) whose counts these are.
    period: AtomicU64,
    ok: AtomicU32,
    failed: AtomicU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The one trial after `open_for`: its outcome decides.
    Trial,
    /// Open: fail fast; the circuit is tried again after this long.
    No {
        retry_after: Duration,
    },
}

#[derive(Debug, Default)]
pub struct Circuit {
    buckets: [Bucket; BUCKETS],
    /// 0 closed, 1 open, 2 half-open.
    state: AtomicU8,
    /// `clock::now_ms()` when it last opened.
    opened_ms: AtomicU64,
    trial: AtomicBool,
    /// Times it opened.
    pub opened_total: AtomicU64,
}

impl Circuit {
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    fn bucket_ms(cfg: &CircuitConfig) -> u64 {
        (cfg.window.as_millis() as u64 / BUCKETS as u64).max(1)
    }

    /// Whether a request starting at `now` may go to the pool.
    pub fn admit(&self, cfg: &CircuitConfig, now: u64) -> Admit {
        match self.state() {
            State::Closed => Admit::Yes,
            State::Open => {
                let open_for = cfg.open_for.as_millis() as u64;
                let since = now.saturating_sub(self.opened_ms.load(Ordering::Acquire));
                if since >= open_for
                    && self
                        .trial
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.state.store(2, Ordering::Release);
                    return Admit::Trial;
                }
                Admit::No {
                    retry_after: Duration::from_millis(open_for.saturating_sub(since).max(1000)),
                }
            }
            State::HalfOpen => {
                // the trial is on its way (or was abandoned: another may go)
                if self
                    .trial
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Admit::Trial;
                }
                Admit::No {
                    retry_after: Duration::from_secs(1),
                }
            }
        }
    }

    /// A trial that ended without an outcome (the client went away): another
    /// request may be the trial.
    pub fn abandon_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// The outcome of a request admitted at `now`; returns true when this
    /// outcome opened the circuit.
    pub fn record(&self, cfg: &CircuitConfig, ok: bool, trial: bool, now: u64) -> bool {
        if trial {
            self.trial.store(false, Ordering::Release);
            if ok {
                self.reset();
                self.state.store(0, Ordering::Release);
                return false;
            }
            self.open(now);
            return true;
        }
        if self.state() != State::Closed {
            // a request admitted before the circuit opened
            return false;
        }
        let period = now / Self::bucket_ms(cfg);
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Ordering::Acquire);
        if seen != period
            && b.period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.ok.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
        }
        if ok {
            b.ok.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        b.failed.fetch_add(1, Ordering::Relaxed);
        let (total, failed) = self.counts(period);
        if total >= u64::from(cfg.min_requests)
            && failed * 100 >= u64::from(cfg.failure_rate) * total
            && self
                .state
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.opened_ms.store(now, Ordering::Release);
            self.opened_total.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// (requests, failures) in the window ending in `period`.
    fn counts(&self, period: u64) -> (u64, u64) {
        let mut total = 0;
        let mut failed = 0;
        for b in &self.buckets {
            let p = b.period.load(Ordering::Acquire);
            if p + (BUCKETS as u64) > period && p <= period {
                let f = u64::from(b.failed.load(Ordering::Relaxed));
                total += u64::from(b.ok.load(Ordering::Relaxed)) + f;
                failed += f;
            }
        }
        (total, failed)
    }

    fn open(&self, now: u64) {
        self.opened_ms.store(now, Ordering::Release);
        if self.state.swap(1, Ordering::AcqRel) != 1 {
            self.opened_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset(&self) {
        for b in &self.buckets {
            b.ok.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: CircuitConfig = CircuitConfig {
        failure_rate: 50,
        window: Duration::from_secs(10),
        min_requests: 20,
        open_for: Duration::from_secs(60),
    };

    #[test]
    fn opens_past_the_rate_with_enough_requests() {
        let c = Circuit::default();
        let t = 1_000_000;
        // 19 failures: under min_requests
        for _ in 0..19 {
            assert!(!c.record(&CFG, false, false, t));
        }
        assert_eq!(c.state(), State::Closed);
        // the 20th: 100% of 20
        assert!(c.record(&CFG, false, false, t));
        assert_eq!(c.state(), State::Open);
        assert_eq!(c.opened_total.load(Ordering::Relaxed), 1);
        assert!(
            matches!(c.admit(&CFG, t + 1000), Admit::No { retry_after } if retry_after == Duration::from_secs(59))
        );
    }

    #[test]
    fn stays_closed_under_the_rate_and_forgets_old_windows() {
        let c = Circuit::default();
        let t = 1_000_000;
        // 40% failures
        for i in 0..100 {
            assert!(!c.record(&CFG, i % 5 < 3, false, t));
        }
        assert_eq!(c.state(), State::Closed);
        // failures long ago do not count: 15 failures (under min_requests),
        // then 15 s later 10 more: with the old ones they would open it
        let c = Circuit::default();
        for _ in 0..15 {
            c.record(&CFG, false, false, t);
        }
        for _ in 0..4 {
            c.record(&CFG, true, false, t);
        }
        for _ in 0..10 {
            assert!(!c.record(&CFG, false, false, t + 15_000));
        }
        assert_eq!(c.state(), State::Closed);
    }

    #[test]
    fn one_trial_after_open_for_decides() {
        let c = Circuit::default();
        let t = 1_000_000;
        for _ in 0..20 {
            c.record(&CFG, false, false, t);
        }
        assert!(matches!(c.admit(&CFG, t + 59_999), Admit::No { .. }));
        assert_eq!(c.admit(&CFG, t + 60_000), Admit::Trial);
        assert_eq!(c.state(), State::HalfOpen);
        // only one trial at a time
        assert!(matches!(c.admit(&CFG, t + 60_001), Admit::No { .. }));
        // it fails: open again, for open_for from now
        assert!(c.record(&CFG, false, true, t + 60_010));
        assert_eq!(c.state(), State::Open);
        assert!(matches!(c.admit(&CFG, t + 61_000), Admit::No { .. }));
        assert_eq!(c.admit(&CFG, t + 120_010), Admit::Trial);
        // an abandoned trial lets another request try
        c.abandon_trial();
        assert_eq!(c.admit(&CFG, t + 120_020), Admit::Trial);
        // success closes, with a fresh window
        assert!(!c.record(&CFG, true, true, t + 120_030));
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.admit(&CFG, t + 120_040), Admit::Yes);
        for _ in 0..19 {
            c.record(&CFG, false, false, t + 120_050);
        }
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.opened_total.load(Ordering::Relaxed), 2);
    }
}
