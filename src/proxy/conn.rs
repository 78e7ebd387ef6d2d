//! One client connection's context (`ConnCtx`): what every request on it
//! shares, from its accept to its close, whichever way it is served (the fast
//! path, hyper, a tunnel).

use crate::plane::Plane;
use crate::upstream;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every connection accepted by one accept loop shares, while its
/// listener's settings stay the same (the accept loop makes a new one when a
/// reload changes them): one allocation, not these fields in every connection.
pub struct ListenerCtx {
    pub plane: Arc<Plane>,
    /// The listening address it was accepted on.
    pub bound: SocketAddr,
    /// The scheme clients use on its listener (X-Forwarded-Proto).
    pub proto: &'static str,
    /// Upgraded tunnels outlive their HTTP connection; shutdown waits for them here.
    pub(super) tracker: TaskTracker,
    /// Cancelled when what is left of a removed address's connections is cut
    /// (its `shutdown_grace` is over): tunnels, which outlive their HTTP
    /// connection's task, end then too.
    pub(super) kill: CancellationToken,
    /// The listener's client_timeout: also the longest pause inside a request
    /// body.
    pub client_timeout: Duration,
    /// Its accept loop's record of parked connections (`park`).
    pub(super) adopted: Arc<Adopted>,
}

/// What an accept loop keeps of its connections besides its own list of their
/// tasks: a parked connection's task ends (its finished task stays in that list
/// until pruned), and when it is served again, it is in a task the loop did not
/// spawn.
#[derive(Default)]
pub struct Adopted {
    /// Connections parked since the accept loop last pruned its lists.
    pub parks: std::sync::atomic::AtomicUsize,
    /// The tasks of parked connections served again: pruned with the loop's
    /// own, and cut with them when a removed address's grace is over.
    pub tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Adopted {
    /// The tasks, the lock's poisoning notwithstanding (a Vec stays whole).
    pub fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ListenerCtx {
    pub fn new(
        plane: Arc<Plane>,
        (bound, proto): (SocketAddr, &'static str),
        (tracker, kill): (TaskTracker, CancellationToken),
        client_timeout: Duration,
        adopted: Arc<Adopted>,
    ) -> ListenerCtx {
        ListenerCtx {
            plane,
            bound,
            proto,
            tracker,
            kill,
            client_timeout,
            adopted,
        }
    }
}

/// Per client connection: what every request on it shares. An idle
/// connection's memory is mostly this, its task and its socket's registration,
/// so what all of a listener's connections share is behind one `Arc`.
pub struct ConnCtx {
    /// What it shares with the other connections of its listener.
    pub shared: Arc<ListenerCtx>,
    /// The address the client reached: `bound`, or for a wildcard bind the
    /// socket's own (the destination a PROXY header names).
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The client's IP, rendered once for X-Forwarded-For.
    pub(super) peer_ip: IpText,
    /// Set once the connection became a tunnel: then tunnel_timeout, not
    /// client_timeout, bounds its writes.
    pub(super) tunnelled: std::sync::atomic::AtomicBool,
    /// This connection's slots under the connection limits and its place in the
    /// listener's count; a tunnel keeps them.
    pub(super) permits: crate::limits::Permits,
    /// What its TLS negotiated (a TLS listener).
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
    /// Its private backend connections (pools with send_proxy).
    pub(super) private: upstream::Private,
    /// A parked connection served again: 1 + the milliseconds its request
    /// head still had (0: it was not parked). Read and cleared once, by the
    /// fast path's start (kept here, not passed: a parameter would make every
    /// connection's future bigger).
    pub(super) resume_ms: std::sync::atomic::AtomicU32,
}

/// An IP address as text, held inline (an IPv6 address is at most 45 bytes
/// written out, with an embedded IPv4 one): no allocation per connection.
pub(super) struct IpText {
    len: u8,
    buf: [u8; 47],
}

impl IpText {
    pub(super) fn new(ip: std::net::IpAddr) -> IpText {
        use std::io::Write;
        let mut t = IpText {
            len: 0,
            buf: [0; 47],
        };
        let mut w = &mut t.buf[..];
        let room = w.len();
        // at most 45 bytes: always fits
        if write!(w, "{}", ip.to_canonical()).is_ok() {
            t.len = (room - w.len()) as u8;
        }
        t
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl ConnCtx {
    pub fn new(
        shared: Arc<ListenerCtx>,
        peer: SocketAddr,
        permits: crate::limits::Permits,
    ) -> ConnCtx {
        ConnCtx {
            local: shared.bound,
            shared,
            peer,
            peer_ip: IpText::new(peer.ip()),
            tunnelled: std::sync::atomic::AtomicBool::new(false),
            permits,
            tls: None,
            private: upstream::Private::default(),
            resume_ms: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The client of a request as the access log names it: the
    /// connection's, or the address `client_ip_from` believes (port 0: a
    /// proxy's field names no port, as nginx's `$remote_port` then).
    pub(super) fn client_addr(&self, ip: std::net::IpAddr) -> SocketAddr {
        if ip == self.peer.ip() {
            self.peer
        } else {
            SocketAddr::new(ip, 0)
        }
    }

    /// The connection came over TLS (its listener's scheme is https).
    pub fn with_tls(mut self, info: crate::tls::TlsInfo) -> ConnCtx {
        self.tls = Some(Arc::new(info));
        self
    }

    /// Marks a parked connection about to be served again, its next request
    /// head due in `left`.
    /// (u32 milliseconds: a head due more than 49 days later is due then.)
    pub(super) fn resume(&self, left: Duration) {
        let ms = u32::try_from(left.as_millis())
            .unwrap_or(u32::MAX)
            .min(u32::MAX - 1);
        self.resume_ms.store(ms + 1, Ordering::Relaxed);
    }

    /// How long its request head still had when it was parked, once (None: a
    /// new connection, or already read).
    pub(super) fn resumed(&self) -> Option<Duration> {
        // a load, and a store only the once: this runs before every request
        let n = self.resume_ms.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        self.resume_ms.store(0, Ordering::Relaxed);
        Some(Duration::from_millis(u64::from(n - 1)))
    }

    /// The listener's name (for logs).
    pub fn listener_name(&self) -> &Arc<str> {
        &self.permits.listener().name
    }

    /// Counts a response its client got, by status class.
    #[inline]
    pub(super) fn responded(&self, status: u16) {
        self.permits.listener().responses.count(status);
    }

    /// Counts a request refused for what the client sent.
    pub(super) fn count_fault(&self, fault: super::RequestFault) {
        self.permits.listener().request_errors[fault.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused for what the client sent, and logs it (pool
    /// `-`: no pool saw it) with `status` (the fault's, or a more precise one
    /// such as 501 for a transfer coding rampart does not decode). `req`: its
    /// method and target, when its head could be read; `total`: since the
    /// proxy began waiting for it, where known. The answer is counted where
    /// it is written (`responded`).
    pub(super) fn refused(
        &self,
        fault: super::RequestFault,
        status: u16,
        req: Option<(&str, &str)>,
        total: Option<Duration>,
    ) {
        self.refused_from(self.peer.ip(), fault, status, req, total);
    }

    /// `refused`, logged with `client` (the one `client_ip_from` believes,
    /// read from the request's head).
    pub(super) fn refused_from(
        &self,
        client: std::net::IpAddr,
        fault: super::RequestFault,
        status: u16,
        req: Option<(&str, &str)>,
        total: Option<Duration>,
    ) {
        self.count_fault(fault);
        self.unserved_from(client, fault.end(), status, req, total);
    }

    /// Logs a request that no pool saw (pool `-`), as `refused` does, with
    /// its own `end`: a client that left before its request was whole.
    pub(super) fn unserved_from(
        &self,
        client: std::net::IpAddr,
        end: crate::accesslog::End,
        status: u16,
        req: Option<(&str, &str)>,
        total: Option<Duration>,
    ) {
        self.shared
            .plane
            .access_log
            .write(&crate::accesslog::Entry {
                client: self.client_addr(client),
                listener: self.listener_name(),
                pool: "-",
                server: None,
                method: req.map(|r| r.0),
                path: req.map(|r| r.1),
                status: Some(status),
                bytes_in: 0,
                bytes_out: 0,
                connect: None,
                total,
                end,
                tls: self.tls.as_deref(),
                grpc_status: None,
                sni: None,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnCtx, IpText};

    #[test]
    fn an_ip_is_written_out_inline() {
        for (ip, text) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            // an IPv4 client on a dual-stack socket: the IPv4 address
            ("::ffff:10.1.2.3", "10.1.2.3"),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            ("::ffff:1:10.1.2.3", "::ffff:1:a01:203"),
        ] {
            let t = IpText::new(ip.parse().unwrap());
            assert_eq!(t.as_bytes(), text.as_bytes(), "{ip}");
        }
    }

    /// Every idle connection holds one (in an Arc): 280 bytes, and a heap copy
    /// of the client's IP, before the listener's fields went behind one Arc and
    /// the IP inline.
    #[test]
    fn a_connection_context_stays_small() {
        let size = std::mem::size_of::<ConnCtx>();
        assert!(size <= 208, "ConnCtx is {size} bytes");
    }
}
