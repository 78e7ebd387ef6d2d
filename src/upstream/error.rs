//! What can go wrong talking to a backend.

use hyper::Request;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::body::ReqBody;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} sent no response within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    /// A gRPC call's deadline (`grpc-timeout`, under `max_grpc_timeout`)
    /// passed before the answer. `blames`: the server had the whole request
    /// for at least server_timeout on this attempt, and is blamed as for a
    /// timeout (its breaker, the pool's circuit and errors); else the
    /// deadline was the client's hurry, or went on the queue, the connect or
    /// the upload, and blames nobody.
    #[error("{addr} sent no response within the call's deadline ({budget:?}, grpc-timeout)")]
    Deadline {
        addr: SocketAddr,
        budget: Duration,
        blames: bool,
    },
    #[error("{addr} switched protocols (101) for a request that did not ask to")]
    Unexpected101 { addr: SocketAddr },
    #[error("{addr} closed a new connection before the request was sent")]
    ClosedBeforeSend { addr: SocketAddr },
    #[error("{addr} closed or reset the connection before responding: {source}")]
    Reset {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} closed the connection before responding")]
    Closed { addr: SocketAddr },
    /// A kept-alive connection the server closed as the request went out on
    /// it (its idle timeout, shorter than ours): nothing says the request
    /// reached the application, nor that it did not, so one that may not be
    /// replayed fails; but the server did nothing wrong, and its breaker does
    /// not count it.
    #[error("{addr} closed a kept-alive connection as the request was sent on it: {source}")]
    IdleRace {
        addr: SocketAddr,
        #[source]
        source: Box<UpstreamError>,
    },
    #[error("{addr} failed while responding: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} sent an invalid response: {reason}")]
    BadResponse { addr: SocketAddr, reason: String },
    #[error("{addr} did not agree to HTTP/2 (ALPN h2) in the TLS handshake")]
    NoH2 { addr: SocketAddr },
    #[error("{addr} takes no HTTP/2 stream on a new connection (GOAWAY at once, or SETTINGS_MAX_CONCURRENT_STREAMS 0)")]
    H2NoStreams { addr: SocketAddr },
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    H2Handshake {
        addr: SocketAddr,
        #[source]
        source: crate::http2::client::Error,
    },
    #[error("HTTP/2 stream to {addr} failed: {source}")]
    H2 {
        addr: SocketAddr,
        #[source]
        source: crate::http2::client::Error,
    },
    /// Not processed again and again (`source` the last time): sent on three
    /// times, then handed back for another server.
    #[error("{addr} did not process the stream, sent again three times: {source}")]
    H2Refused {
        addr: SocketAddr,
        #[source]
        source: crate::http2::client::Error,
    },
}

/// How soon after a request went out on a kept-alive connection its close or
/// reset is taken for the keep-alive race (the server's close crossed the
/// request: about a round trip) rather than a server that failed while
/// handling it (a crash takes the breaker's count, as with nginx).
pub const RACE_WINDOW: Duration = Duration::from_millis(50);

impl UpstreamError {
    /// Did the failure happen while establishing the connection?
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Handshake { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::ClosedBeforeSend { .. }
                | UpstreamError::NoH2 { .. }
                | UpstreamError::H2NoStreams { .. }
                | UpstreamError::H2Handshake { .. }
        )
    }

    /// The keep-alive race (`IdleRace`): not the server's failure.
    pub fn is_idle_race(&self) -> bool {
        matches!(self, UpstreamError::IdleRace { .. })
    }

    /// An HTTP/2 stream the server did not process: refused (REFUSED_STREAM)
    /// or above its GOAWAY's last stream id (RFC 9113 8.7). The request did
    /// not reach the application, so it may go to another server whatever its
    /// method; and the server, shedding load or shutting down, did not fail.
    pub fn is_unprocessed(&self) -> bool {
        matches!(self, UpstreamError::H2 { source, .. } if source.unprocessed())
            || matches!(self, UpstreamError::H2Refused { .. })
    }

    /// A server that did not process one stream (`is_unprocessed`, not sent
    /// again and again): it shed load or is shutting down, and its breaker
    /// does not count it. One that refused a stream four times in a row
    /// (`H2Refused`) is counted: a server that refuses every stream would
    /// otherwise keep its share of requests, each paying four round trips.
    pub fn spares_server(&self) -> bool {
        matches!(self, UpstreamError::H2 { source, .. } if source.unprocessed())
    }

    /// Was it the client's side that failed (its request body broke off, or
    /// its call's deadline passed)? Then the server is not to blame and the
    /// request is not retried.
    pub fn is_client_fault(&self) -> bool {
        match self {
            UpstreamError::Reset { source, .. } => source.is_user(),
            // the stream was cancelled because the client's body broke off
            UpstreamError::H2 { source, .. } => *source == crate::http2::client::Error::Cancelled,
            // a deadline shorter than server_timeout is the client's own
            // limit: not the server's failure, and no pool's circuit opens
            // for clients in a hurry (never retried: no time is left)
            UpstreamError::Deadline { blames, .. } => !blames,
            _ => false,
        }
    }
}

impl UpstreamError {
    /// The error of an exchange whose answer did not come in time: by the
    /// call's deadline if it has one, else by `server_timeout`. `sent`: when
    /// this attempt's request went out; `progress`: its streaming body's.
    pub(crate) fn no_answer(
        addr: SocketAddr,
        call: Option<super::body::CallDeadline>,
        server_timeout: Duration,
        sent: tokio::time::Instant,
        progress: Option<&super::body::ReqProgress>,
    ) -> UpstreamError {
        match call {
            Some(c) => UpstreamError::Deadline {
                addr,
                budget: c.budget,
                // what the server had of the call: since the upload ended
                blames: match progress {
                    Some(p) => p.since_done().is_some_and(|d| d >= server_timeout),
                    None => sent.elapsed() >= server_timeout,
                },
            },
            None => UpstreamError::Timeout {
                addr,
                timeout: server_timeout,
            },
        }
    }
}

/// A failed `send`: the error, and the request if it was never written to the
/// server (so it can go to another server as it is, streaming body included).
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Box<Request<ReqBody>>>,
}

impl From<UpstreamError> for SendError {
    /// A failure after which nothing is handed back (bytes are sent again by
    /// their owner).
    fn from(error: UpstreamError) -> SendError {
        SendError {
            error,
            unsent: None,
        }
    }
}
