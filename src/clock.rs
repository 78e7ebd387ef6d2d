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

/// `fut`'s output, or None if `timer` (set by the caller) ends first: as
/// `tokio::time::timeout`, `fut` polled first, with a timer the caller keeps
/// (a TCP session's one timer goes on from its hello's and connect's waits to
/// its relay's idle timeout).
pub async fn by<F: std::future::Future>(
    fut: F,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Option<F::Output> {
    use std::future::Future;
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
    })
    .await
}

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
