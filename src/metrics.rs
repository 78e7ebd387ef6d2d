//! The process-wide metrics that are not kept in a pool's or server's atomics:
//! TLS handshakes, HTTP/2 GOAWAYs (written by the data plane) and state-file
//! write errors. Everything else is counted where it lives (per-server and
//! per-pool atomics, `pool::PoolHistograms`) and turned into metric families at
//! scrape time by `admin::metrics`, which is where every family is named.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::OnceLock;

pub struct Metrics {
    pub registry: Registry,
    /// TLS handshakes on listeners, by listener, version and result.
    pub tls_handshakes: IntCounterVec,
    pub tls_handshake_duration: HistogramVec,
    /// Failed TLS handshakes by listener and reason.
    pub tls_failures: IntCounterVec,
    /// HTTP/2 connections rampart ended with GOAWAY for a client's error.
    pub h2_goaway: IntCounterVec,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Failed writes of the state file since start (a full disk, a read-only mount),
/// counted by `statefile`: a state file that silently stopped being written shows.
pub static STATE_FILE_WRITE_ERRORS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Bytes tcp sessions moved with splice(2), without copying them (counted as a
/// session ends).
pub static TCP_SPLICED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes of HTTP response bodies moved with splice(2) (counted as a response ends).
pub static HTTP_SPLICED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The last write of the state file failed (set and cleared by `statefile`).
pub static STATE_FILE_FAILING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The process's metrics (one registry per process, like the crate's default).
pub fn global() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let tls_handshake_duration = HistogramVec::new(
            HistogramOpts::new(
                "rampart_tls_handshake_duration_seconds",
                "Time to complete a TLS handshake with a client, by listener",
            )
            .buckets(crate::pool::CONNECT_BUCKETS.to_vec()),
            &["listener"],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        for c in [&tls_handshake_duration] {
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::error!(error = %e, "cannot register a metric");
            }
        }
        let tls_handshakes = counter(
            "rampart_tls_handshakes_total",
            "TLS handshakes with clients, by listener, protocol version and result (ok, failed)",
            &["listener", "version", "result"],
        );
        let tls_failures = counter(
            "rampart_tls_handshake_failures_total",
            "Failed TLS handshakes with clients, by listener and reason",
            &["listener", "reason"],
        );
        let h2_goaway = counter(
            "rampart_http2_goaway_total",
            "HTTP/2 client connections rampart closed with GOAWAY for a protocol error or abuse, by listener and error code (ENHANCE_YOUR_CALM: rapid reset and the like)",
            &["listener", "code"],
        );
        for c in [&tls_handshakes, &tls_failures, &h2_goaway] {
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::error!(error = %e, "cannot register a metric");
            }
        }
        Metrics {
            registry,
            tls_handshakes,
            tls_handshake_duration,
            tls_failures,
            h2_goaway,
        }
    })
}

/// The metric definitions above are constants; they cannot be invalid.
#[cold]
pub(crate) fn unreachable_metric(e: prometheus::Error) -> ! {
    panic!("invalid metric definition: {e}")
}

/// An unregistered family (the scrape builds these from atomics).
pub(crate) fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| crate::metrics::unreachable_metric(e))
}
pub(crate) fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| crate::metrics::unreachable_metric(e))
}
