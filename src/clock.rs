//! Clocks and time formats: the leaf every layer may read the time from.
//!
//! A cheap monotonic clock in milliseconds, for state kept in atomics (breaker
//! deadlines, slow start, idle connection expiry). It reads CLOCK_MONOTONIC_COARSE
//! (a few ms of resolution, no TSC read), which the request path calls several times
//! per request. Logic that uses it takes `now` as an argument, so tests inject their own.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `fut`'s output, or [`TimedOut`] at `at`: `tokio::time::timeout_at` with a
/// timer the caller keeps ([`timer`]), so that one timer serves a
/// connection's waits one after the other (a TCP session's hello, connect
/// and relay; an HTTP/1.1 connection's requests and their servers' answers)
/// where each wait made, put in the runtime's timer wheel and took out a
/// timer of its own.
///
/// As with `timeout_at`, `fut` is polled first, and the timer only once
/// `fut` has to wait. The timer is moved lazily: set for later than `at`,
/// it is brought forward; set for earlier (the last wait's deadline), it is
/// left to fire then, and set for `at` when it does. A connection that
/// serves a request every few milliseconds moves its timer about once a
/// deadline, not twice a request.
pub async fn by<F: std::future::Future>(
    fut: F,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    at: tokio::time::Instant,
) -> Result<F::Output, TimedOut> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        while fired(timer.as_mut(), cx) {
            if timer.deadline() >= at {
                return Poll::Ready(Err(TimedOut));
            }
            // an earlier wait's deadline passed: now this one's
            timer.as_mut().reset(at);
        }
        Poll::Pending
    })
    .await
}

/// Whether `timer` fired, polled outside the task's coop budget (as
/// `tokio::time::timeout` polls its delay once its future spent the budget):
/// a poll the budget cut short would neither say it fired nor keep the
/// task's waker, and a peer that keeps a task busy (a server streaming blank
/// lines, a relay moving bulk) would never be timed out.
pub fn fired(
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    cx: &mut std::task::Context<'_>,
) -> bool {
    use std::future::Future;
    std::pin::Pin::new(&mut tokio::task::unconstrained(timer))
        .poll(cx)
        .is_ready()
}

/// A timer for [`by`], not yet set for any wait (for a century after the
/// process started: no clock read for each), and not in the runtime's wheel
/// until a wait has to be timed.
pub fn timer() -> tokio::time::Sleep {
    static UNSET: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let never = UNSET.get_or_init(|| {
        tokio::time::Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600)
    });
    tokio::time::sleep_until(*never)
}

/// [`by`]'s deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Seconds since the Unix epoch (quota windows are UTC).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Microseconds on the monotonic clock (CLOCK_MONOTONIC: since boot, never 0).
/// Read directly: `Instant::elapsed().as_micros()` costs a u128 division.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000 + 1
}

/// The current UTC time as `2026-11-21T07:50:01.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// A UTC time as `2026-11-21T07:50:01.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// A UTC time that displays (and serializes) as `2026-11-21T07:50:01.123Z`,
/// written straight into a log line.
pub struct Rfc3339(pub SystemTime);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Year, month (1-12) and day of a count of days since 1970-01-01 (Howard
/// Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The current time as an HTTP date (RFC 9110 5.6.7, IMF-fixdate:
/// `Sun, 06 Nov 1994 08:49:37 GMT`), written once a second per thread.
pub fn http_date_now() -> [u8; 29] {
    thread_local! {
        static CACHE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = unix_now();
    CACHE.with(|c| {
        let (at, text) = c.get();
        if at == now {
            return text;
        }
        let text = http_date(now);
        c.set((now, text));
        text
    })
}

/// A time (seconds since the epoch) as an HTTP date.
pub fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[days.rem_euclid(7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, v: u64| {
        out[at] = b'0' + (v / 10 % 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 5, d as u64);
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    let y = y.clamp(0, 9999) as u64;
    two(&mut out, 12, y / 100);
    two(&mut out, 14, y % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem % 3600 / 60);
    two(&mut out, 23, rem % 60);
    out
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_epoch.as_secs();
        let rem = secs % 86_400;
        let (y, m, d) = civil((secs / 86_400) as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            since_epoch.subsec_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// `by` times a wait out at its own deadline, whatever the timer was set
    /// for before: brought forward from a later one, and from an earlier one
    /// set again when that one fires (not timed out there).
    #[tokio::test(start_paused = true)]
    async fn by_times_out_at_its_deadline_whatever_the_timer_was_set_for() {
        let t0 = tokio::time::Instant::now();
        let timer = timer();
        tokio::pin!(timer);
        let never = std::future::pending::<()>;
        // set a year ahead: brought forward to 2 s
        let at = t0 + Duration::from_secs(2);
        assert_eq!(by(never(), timer.as_mut(), at).await, Err(TimedOut));
        assert_eq!(tokio::time::Instant::now(), at);
        // left at 5 s by a wait that ended first ...
        let early = tokio::time::Instant::now() + Duration::from_secs(3);
        assert_eq!(by(async { 7 }, timer.as_mut(), early).await, Ok(7));
        let ready = std::future::ready(());
        assert_eq!(by(ready, timer.as_mut(), early).await, Ok(()));
        let quick = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(by(quick, timer.as_mut(), early).await, Ok(()));
        // ... it fires there, under a wait of 10 s, which goes on to its end
        let at = tokio::time::Instant::now() + Duration::from_secs(10);
        assert_eq!(by(never(), timer.as_mut(), at).await, Err(TimedOut));
        assert_eq!(tokio::time::Instant::now(), at);
        // what ends before its deadline is not timed out
        let at = tokio::time::Instant::now() + Duration::from_secs(1);
        let slow = tokio::time::sleep(Duration::from_millis(999));
        assert_eq!(by(slow, timer.as_mut(), at).await, Ok(()));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_246_201_123)),
            "2026-11-21T07:30:01.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn http_dates() {
        // RFC 9110 5.6.7's example, the epoch, a leap day, the year's last second
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(1_798_761_599), b"Thu, 31 Dec 2026 23:59:59 GMT");
        let now = http_date_now();
        assert!(now.ends_with(b" GMT") && now[3] == b',', "{now:?}");
    }
}
