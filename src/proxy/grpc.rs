//! gRPC clients get rampart's own errors as gRPC statuses (trailers-only), and
//! the access log their `grpc-status`.

use super::body::ProxyBody;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use std::time::{Duration, Instant};

use crate::upstream::GRPC_TIMEOUT;

/// A gRPC call's deadline under a pool's `max_grpc_timeout` (`max`; zero: no
/// cap): the call's `grpc-timeout`, at most `max`, counted from `start` (when
/// the request came). Each attempt tells the server the time left
/// (`CallDeadline::header_value`). None for a call without a valid, positive
/// `grpc-timeout`: it waits `server_timeout`, as any request (where Envoy
/// waits for ever, up to the cap).
pub(super) fn call_deadline(
    headers: &HeaderMap,
    max: Duration,
    start: Instant,
) -> Option<crate::upstream::CallDeadline> {
    let asked = parse_timeout(headers.get(GRPC_TIMEOUT)?.as_bytes())?;
    if asked.is_zero() {
        return None;
    }
    let budget = if max.is_zero() { asked } else { asked.min(max) };
    // (99,999,999 hours may be past what a clock holds: then no deadline)
    let at = tokio::time::Instant::from_std(start).checked_add(budget)?;
    Some(crate::upstream::CallDeadline { at, budget })
}

/// `grpc-timeout`: 1 to 8 digits and a unit, H M S m u n (gRPC over HTTP/2).
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC client reads its outcome from `grpc-status`, not the HTTP status: an
/// answer rampart made itself (no server, queue timeout, 502, 504, 431...)
/// becomes a trailers-only gRPC response (HTTP 200, `grpc-status` and
/// `grpc-message`), with the code gRPC's HTTP mapping gives the status
/// (429, 502, 503, 504: UNAVAILABLE). A server's own answers pass as they are.
pub(super) fn grpc_error(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !matches!(resp.body(), ProxyBody::Full(_)) || resp.status() == StatusCode::OK {
        return resp;
    }
    let code = match resp.extensions().get::<GrpcCode>() {
        Some(c) => c.0,
        None => grpc_code(resp.status().as_u16()),
    };
    let message = match resp.body() {
        ProxyBody::Full(Some(b)) => String::from_utf8_lossy(b).trim().to_string(),
        _ => resp.status().to_string(),
    };
    // grpc-message is percent-encoded (gRPC over HTTP/2, "Responses")
    let mut enc = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    let mut out = Response::new(ProxyBody::empty());
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&enc) {
        h.insert("grpc-message", v);
    }
    out
}

/// gRPC's status for a call whose deadline passed.
pub(super) const DEADLINE_EXCEEDED: u32 = 4;

/// The gRPC status of an answer rampart made, where gRPC's mapping of its HTTP
/// status is not it (a response extension, read by `grpc_error`).
#[derive(Clone, Copy, Debug)]
pub(super) struct GrpcCode(pub u32);

/// The gRPC status of an HTTP status rampart answered with (gRPC's HTTP mapping).
pub(super) fn grpc_code(status: u16) -> u32 {
    match status {
        200 => 0,                    // OK
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::grpc_timeout_value;

    #[test]
    fn grpc_timeouts_are_read_and_written() {
        for (v, d) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("30S", Duration::from_secs(30)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("5n", Duration::from_nanos(5)),
        ] {
            assert_eq!(parse_timeout(v.as_bytes()), Some(d), "{v}");
        }
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", " 1S", "1s"] {
            assert_eq!(parse_timeout(bad.as_bytes()), None, "{bad:?}");
        }
        for (d, v) in [
            (Duration::from_millis(1500), "1500m"),
            // rounded up, at least 1 ms
            (Duration::from_micros(1500), "2m"),
            (Duration::from_micros(10), "1m"),
            (Duration::ZERO, "1m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(99_999_999 * 60), "99999999M"),
            (Duration::from_secs(100_000_000 * 60), "1666666H"),
        ] {
            assert_eq!(grpc_timeout_value(d), v, "{d:?}");
        }
    }

    #[test]
    fn a_calls_deadline_is_its_timeout_at_most_the_cap() {
        let start = Instant::now();
        let mut h = HeaderMap::new();
        let at = |d: Duration| tokio::time::Instant::from_std(start) + d;
        let deadline = |h: &HeaderMap, max: Duration| call_deadline(h, max, start);
        // no grpc-timeout, one that cannot be read, or 0: none
        assert!(deadline(&h, Duration::ZERO).is_none());
        for bad in ["soon", "0S", "0n"] {
            h.insert(GRPC_TIMEOUT, HeaderValue::from_static(bad));
            assert!(deadline(&h, Duration::ZERO).is_none(), "{bad}");
        }
        // under the cap (or without one): as asked
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
        let c = deadline(&h, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (c.at, c.budget),
            (at(Duration::from_secs(2)), Duration::from_secs(2))
        );
        assert_eq!(
            deadline(&h, Duration::ZERO).unwrap().budget,
            Duration::from_secs(2)
        );
        // over it: the cap
        let c = deadline(&h, Duration::from_millis(500)).unwrap();
        assert_eq!(
            (c.at, c.budget),
            (at(Duration::from_millis(500)), Duration::from_millis(500))
        );
    }
}
