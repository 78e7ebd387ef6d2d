//! The data plane: the HTTP/1 fast path (`fast_path`), the hyper adapter (`http`)
//! and the L4 relay (`tcp`); the request lifecycle they share (`lifecycle`), a
//! client connection's context (`conn`) and socket (`io`); and the one place
//! where a failure becomes a status code, a counter and a log end state.
//!
//! Inside, dependencies point one way: fast_path -> http -> {body, grpc, headers,
//! conn, io, lifecycle}.

pub mod body;
mod coarse;
mod compress;
pub mod conn;
pub mod fast_path;
mod grpc;
mod headers;
pub mod http;
pub mod io;
pub mod lifecycle;
pub(crate) mod park;
mod replay;
mod splice;
pub mod tcp;
mod tunnel;

use crate::accesslog::End;
use crate::pool::{PickError, Pool, Server};

use crate::upstream::UpstreamError;
use bytes::Bytes;
use hyper::StatusCode;
use std::sync::atomic::Ordering;

/// How long an idle client connection stays open once its listener drains
/// (shutdown, a removed listener, a binary upgrade): a request already on its way
/// is served, with `Connection: close`, instead of meeting a closed connection.
pub const DRAIN_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

pub use crate::accesslog::RequestFault;

/// The answer and log end of a request refused for `fault`, or (None) of one
/// whose client left before its body's end: answered 400 in case it still
/// reads, logged `client_abort`, not counted as its fault.
pub(super) fn refusal(
    fault: Option<RequestFault>,
) -> (::http::StatusCode, &'static str, crate::accesslog::End) {
    match fault {
        Some(f) => (f.status(), f.text(), f.end()),
        None => (
            ::http::StatusCode::BAD_REQUEST,
            "400 Bad Request: the request body could not be read\n",
            crate::accesslog::End::ClientAbort,
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The pool's circuit is open: too many of its requests failed lately.
    #[error("the pool's circuit is open")]
    CircuitOpen { retry_after: std::time::Duration },
    /// A protocol upgrade (WebSocket) asked of a pool whose servers speak HTTP/2.
    #[error("protocol upgrades are not relayed to HTTP/2 servers")]
    UpgradeToH2Pool,
    /// A gRPC call's deadline passed before it had a server (in the queue).
    #[error("the call's deadline ({budget:?}, grpc-timeout) passed before a server was free")]
    Deadline { budget: std::time::Duration },
}

impl ProxyError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Pick(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(
                UpstreamError::Timeout { .. } | UpstreamError::Deadline { .. },
            )
            | ProxyError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpgradeToH2Pool => StatusCode::NOT_IMPLEMENTED,
            ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn end(&self) -> End {
        match self {
            ProxyError::Pick(PickError::NoServer | PickError::Reconfigured) => End::NoServer,
            ProxyError::Pick(PickError::QueueTimeout) => End::QueueTimeout,
            ProxyError::Pick(PickError::Shed) => End::Shed,
            ProxyError::Upstream(UpstreamError::ConnectTimeout { .. }) => End::ConnectTimeout,
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => End::ServerTimeout,
            ProxyError::Upstream(UpstreamError::Deadline { .. }) | ProxyError::Deadline { .. } => {
                End::Deadline
            }
            ProxyError::Upstream(e) if e.is_client_fault() => End::ClientAbort,
            ProxyError::Upstream(e) if e.is_connect() => End::ConnectError,
            ProxyError::Upstream(_) => End::ServerAbort,
            ProxyError::UpgradeToH2Pool => End::Unsupported,
            ProxyError::CircuitOpen { .. } => End::CircuitOpen,
        }
    }

    /// Short words for the plain-text error body.
    fn reason(&self) -> &'static str {
        match self {
            ProxyError::Pick(PickError::NoServer) => "no server is available",
            ProxyError::Pick(PickError::QueueTimeout) => "all servers are busy (queue timeout)",
            ProxyError::Pick(PickError::Shed) => {
                "all servers are busy and requests of this priority are shed"
            }
            ProxyError::Pick(PickError::Reconfigured) => {
                "a reload changed how the servers are reached while the request waited; send it again"
            }
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => {
                "the server did not respond in time"
            }
            ProxyError::Upstream(UpstreamError::Deadline { .. }) => {
                "the server did not respond within the call's deadline (grpc-timeout)"
            }
            ProxyError::Deadline { .. } => {
                "the call's deadline (grpc-timeout) passed before a server was free"
            }
            ProxyError::Upstream(e) if e.is_connect() => "cannot connect to a server",
            ProxyError::Upstream(
                UpstreamError::BadResponse { .. } | UpstreamError::Unexpected101 { .. },
            ) => "the server sent an invalid response",
            ProxyError::Upstream(_) => "the server closed the connection",
            ProxyError::UpgradeToH2Pool => {
                "its servers speak HTTP/2, to which protocol upgrades (WebSocket) are not relayed"
            }
            ProxyError::CircuitOpen { .. } => {
                "too many requests failed lately: the circuit is open, requests fail fast"
            }
        }
    }

    /// The error response body: `503 Service Unavailable: pool "api": no server is available`.
    pub fn body(&self, pool: &str) -> Bytes {
        let st = self.status();
        Bytes::from(format!(
            "{} {}: pool \"{pool}\": {}\n",
            st.as_u16(),
            st.canonical_reason().unwrap_or(""),
            self.reason()
        ))
    }

    /// Counts a failed attempt against the server it was made on.
    pub fn count_server(&self, server: &Server) {
        if let ProxyError::Upstream(e) = self {
            if e.is_client_fault() {
                return;
            }
            server.state.traffic.failed(e.is_connect(), e);
        }
    }

    /// Counts a request (or tcp session) that failed for good against its pool;
    /// not one the client broke (a malformed or stalled body, a client gone).
    pub fn count_pool(&self, pool: &Pool) {
        if matches!(self, ProxyError::Upstream(e) if e.is_client_fault())
            || matches!(self, ProxyError::Deadline { .. })
        {
            return;
        }
        pool.shared.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_client_fault_is_not_the_pools() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let cfg = crate::config::parse_in(
            "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.server]]\naddress = \"127.0.0.1:2\"\n",
            "t.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let pool = &crate::snapshot::Snapshot::build_pool(&cfg.pools[0], &Default::default(), None);
        // the client cancelled its stream (its body broke off): not the pool's fault
        let cancelled = ProxyError::Upstream(UpstreamError::H2 {
            addr,
            source: crate::http2::client::Error::Cancelled,
        });
        cancelled.count_pool(pool);
        assert_eq!(pool.shared.errors.load(Ordering::Relaxed), 0);
        ProxyError::from(PickError::NoServer).count_pool(pool);
        assert_eq!(pool.shared.errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn mapping() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases: Vec<(ProxyError, u16, End)> = vec![
            (PickError::NoServer.into(), 503, End::NoServer),
            (PickError::QueueTimeout.into(), 503, End::QueueTimeout),
            (PickError::Shed.into(), 503, End::Shed),
            (PickError::Reconfigured.into(), 503, End::NoServer),
            (
                UpstreamError::Connect {
                    addr,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                }
                .into(),
                502,
                End::ConnectError,
            ),
            (
                UpstreamError::ConnectTimeout {
                    addr,
                    timeout: Duration::from_secs(1),
                }
                .into(),
                502,
                End::ConnectTimeout,
            ),
            (
                UpstreamError::Timeout {
                    addr,
                    timeout: Duration::from_secs(1),
                }
                .into(),
                504,
                End::ServerTimeout,
            ),
            (
                UpstreamError::Deadline {
                    addr,
                    budget: Duration::from_millis(300),
                    blames: false,
                }
                .into(),
                504,
                End::Deadline,
            ),
            (
                UpstreamError::ClosedBeforeSend { addr }.into(),
                502,
                End::ConnectError,
            ),
        ];
        for (e, status, end) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.end(), end, "{e}");
            let body = e.body("api");
            assert!(std::str::from_utf8(&body).unwrap().contains("pool \"api\""));
        }
    }
}
