//! `[listener.http2]` and `[pool.http2]` against RFC 9113's bounds.

use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use std::time::Duration;

/// The largest flow-control window (RFC 9113 6.9.1).
const WINDOW_MAX: u64 = (1 << 31) - 1;
/// The shortest `[pool.http2] keepalive_interval`: a PING a second is already
/// more than a server needs to show it is there.
const KEEPALIVE_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// `v` within `lo..=hi`, or a problem named `at.key` (and `v` clamped into it).
fn bounded(
    at: &KeyPath,
    p: &mut Problems<'_>,
    key: &'static str,
    v: u64,
    lo: u64,
    hi: u64,
    what: &str,
) -> u32 {
    if v < lo || v > hi {
        p.add(
            &at.key(key),
            format!("must be between {lo} and {hi} {what}"),
        );
    }
    v.clamp(lo, hi) as u32
}

/// Checks `[pool.http2]` against RFC 9113's bounds.
pub(super) fn pool(
    h: &crate::config::file::PoolHttp2File,
    at: &KeyPath,
    p: &mut Problems<'_>,
) -> PoolHttp2 {
    let interval = h.keepalive_interval.0;
    if !interval.is_zero() && interval < KEEPALIVE_INTERVAL_MIN {
        p.add(
            &at.key("keepalive_interval"),
            "must be at least 1s (or \"0s\": no keepalive PINGs)",
        );
    }
    if !interval.is_zero() && h.keepalive_timeout.0.is_zero() {
        // a PING that must be answered in no time would end every connection
        p.add(
            &at.key("keepalive_timeout"),
            "must be more than 0 when keepalive_interval is set",
        );
    }
    let mut check = |key: &'static str, v: u64, lo: u64, hi: u64, what: &str| {
        bounded(at, p, key, v, lo, hi, what)
    };
    PoolHttp2 {
        max_concurrent_streams: check(
            "max_concurrent_streams",
            u64::from(h.max_concurrent_streams),
            1,
            100_000,
            "",
        ),
        initial_stream_window_size: check(
            "initial_stream_window_size",
            h.initial_stream_window_size.0,
            1,
            WINDOW_MAX,
            "bytes (RFC 9113 6.9.2)",
        ),
        initial_connection_window_size: check(
            "initial_connection_window_size",
            h.initial_connection_window_size.0,
            65_535,
            WINDOW_MAX,
            "bytes (RFC 9113 6.9.2)",
        ),
        keepalive_interval: (!interval.is_zero()).then_some(interval),
        keepalive_timeout: h.keepalive_timeout.0,
    }
}

/// Checks `[listener.http2]` against RFC 9113's bounds.
pub(super) fn listener(
    h: &crate::config::file::Http2File,
    at: &KeyPath,
    p: &mut Problems<'_>,
) -> Http2Config {
    let mut check = |key: &'static str, v: u64, lo: u64, hi: u64, what: &str| {
        bounded(at, p, key, v, lo, hi, what)
    };
    let max_concurrent_streams = check(
        "max_concurrent_streams",
        u64::from(h.max_concurrent_streams),
        1,
        u64::from(u32::MAX),
        "",
    );
    let max_header_list_size = check(
        "max_header_list_size",
        h.max_header_list_size.0,
        1024,
        16 << 20,
        "bytes",
    );
    let initial_stream_window_size = check(
        "initial_stream_window_size",
        h.initial_stream_window_size.0,
        1,
        WINDOW_MAX,
        "bytes (RFC 9113 6.9.2)",
    );
    let initial_connection_window_size = check(
        "initial_connection_window_size",
        h.initial_connection_window_size.0,
        65_535,
        WINDOW_MAX,
        "bytes (RFC 9113 6.9.2)",
    );
    let max_frame_size = check(
        "max_frame_size",
        h.max_frame_size.0,
        16_384,
        16_777_215,
        "bytes (RFC 9113 6.5.2)",
    );
    let opt = |d: Duration| (!d.is_zero()).then_some(d);
    if !h.keepalive_interval.0.is_zero() && h.keepalive_timeout.0.is_zero() {
        // a PING that must be answered in no time closes every idle connection
        p.add(
            &at.key("keepalive_timeout"),
            "must be more than 0 when keepalive_interval is set".to_string(),
        );
    }
    Http2Config {
        max_concurrent_streams,
        max_header_list_size,
        initial_stream_window_size,
        initial_connection_window_size,
        max_frame_size,
        max_pending_accept_reset_streams: h.max_pending_accept_reset_streams,
        max_local_error_reset_streams: h.max_local_error_reset_streams,
        keepalive_interval: opt(h.keepalive_interval.0),
        keepalive_timeout: h.keepalive_timeout.0,
        idle_timeout: opt(h.idle_timeout.0),
    }
}
