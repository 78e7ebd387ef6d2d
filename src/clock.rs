//! A cheap monotonic clock in milliseconds since the process started, for state kept
//! in atomics (breaker deadlines, slow start). Logic that uses it takes `now` as an
//! argument, so tests inject their own.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}
