//! One client connection's context (`ConnCtx`): what every request on it
//! shares, from its accept to its close, whichever way it is served (the fast
//! path, hyper, a tunnel).

use crate::plane::Plane;
use crate::upstream;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Per client connection: what every request on it shares.
pub struct ConnCtx {
    pub plane: Arc<Plane>,
    /// The listening address it was accepted on.
    pub bound: SocketAddr,
    /// The address the client reached: `bound`, or for a wildcard bind the
    /// socket's own (the destination a PROXY header names).
    pub local: SocketAddr,
    /// The scheme clients use on its listener (X-Forwarded-Proto).
    pub proto: &'static str,
    pub peer: SocketAddr,
    /// The client's IP, rendered once for X-Forwarded-For.
    pub(super) peer_ip: HeaderValue,
    /// Upgraded tunnels outlive their HTTP connection; shutdown waits for them here.
    pub(super) tracker: TaskTracker,
    /// Set once the connection became a tunnel: then tunnel_timeout, not
    /// client_timeout, bounds its writes.
    pub(super) tunnelled: std::sync::atomic::AtomicBool,
    /// Cancelled when what is left of a removed address's connections is cut
    /// (its `shutdown_grace` is over): tunnels, which outlive their HTTP
    /// connection's task, end then too.
    pub(super) kill: CancellationToken,
    /// This connection's slots under the connection limits and its place in the
    /// listener's count; a tunnel keeps them.
    pub(super) permits: crate::limits::Permits,
    /// What its TLS negotiated (a TLS listener).
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
    /// Its private backend connections (pools with send_proxy).
    pub(super) private: upstream::Private,
    /// HTTP/2: responses the client's flow control holds back.
    pub(super) h2_stall: H2Stall,
    /// The listener's client_timeout: also the longest pause inside a request
    /// body.
    pub client_timeout: Duration,
}

/// An HTTP/2 client that stops granting flow-control window (a zero window, or
/// WINDOW_UPDATEs that stop) holds its streams' responses, and with them their
/// backend connections and server slots, without a byte that would trip a
/// socket timeout. `waiting` counts the responses that handed hyper a chunk the
/// client's window has not taken yet; `moved_ms` is when any response of the
/// connection last moved. Both waiting and not moving for `client_timeout`: the
/// connection is closed (`drive_h2`), as a slow reader's is on HTTP/1.
#[derive(Debug, Default)]
pub(super) struct H2Stall {
    pub(super) waiting: std::sync::atomic::AtomicU32,
    pub(super) moved_ms: AtomicU64,
}

impl H2Stall {
    /// How long responses have been held without moving (None: none is held).
    pub(super) fn held_for(&self) -> Option<Duration> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = crate::clock::now_ms().saturating_sub(self.moved_ms.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }
}

impl ConnCtx {
    pub fn new(
        plane: Arc<Plane>,
        (bound, proto): (SocketAddr, &'static str),
        peer: SocketAddr,
        (tracker, kill): (TaskTracker, CancellationToken),
        permits: crate::limits::Permits,
    ) -> ConnCtx {
        let ip = peer.ip().to_canonical().to_string();
        ConnCtx {
            plane,
            bound,
            local: bound,
            proto,
            peer,
            peer_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            tracker,
            tunnelled: std::sync::atomic::AtomicBool::new(false),
            permits,
            kill,
            tls: None,
            private: upstream::Private::default(),
            h2_stall: H2Stall::default(),
            client_timeout: Duration::from_secs(30),
        }
    }

    /// The connection came over TLS: X-Forwarded-Proto is https.
    pub fn with_tls(mut self, info: crate::tls::TlsInfo) -> ConnCtx {
        self.proto = "https";
        self.tls = Some(Arc::new(info));
        self
    }

    /// The listener's name (for logs).
    pub fn listener_name(&self) -> &Arc<str> {
        &self.permits.listener().name
    }
}
