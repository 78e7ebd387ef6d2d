//! A cheap monotonic clock in milliseconds, for state kept in atomics (breaker
//! deadlines, slow start, idle connection expiry). It reads CLOCK_MONOTONIC_COARSE
//! (a few ms of resolution, no TSC read), which the request path calls several times
//! per request. Logic that uses it takes `now` as an argument, so tests inject their own.

/// Milliseconds on the coarse monotonic clock (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000 + 1
}
