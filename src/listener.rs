//! Listening sockets (socket2: SO_REUSEADDR, SO_REUSEPORT for one socket per worker,
//! IP_FREEBIND so a passive HA node can bind a VIP it does not hold yet) and the
//! accept loop with its connection limits.

use crate::config::Mode;
use crate::proxy;
use crate::Shared;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds a listening TCP socket.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        // Best effort, as for IPv4 below.
        let _ = socket.set_freebind_v6(true);
    } else {
        // Lets a listener bind an address (a VIP) not yet on this host. Best effort:
        // without it, binding a local address still works.
        let _ = socket.set_freebind_v4(true);
    }
    // Accepted sockets inherit TCP_NODELAY from the listening one (Linux): no
    // system call per connection for it.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Connection limits: all listeners together, and this listener.
#[derive(Clone)]
pub struct Limits {
    pub global: Arc<Semaphore>,
    pub local: Option<Arc<Semaphore>>,
}

/// One connection's slots under the limits, released when dropped.
#[derive(Debug)]
pub struct Permits {
    _global: OwnedSemaphorePermit,
    _local: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// Waits for a free slot under both limits.
    async fn acquire(&self) -> Option<Permits> {
        let local = match &self.local {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.ok()?),
            None => None,
        };
        let global = Arc::clone(&self.global).acquire_owned().await.ok()?;
        Some(Permits {
            _global: global,
            _local: local,
        })
    }
}

/// What an accept loop needs besides its socket.
pub struct AcceptCtx {
    pub listener: usize,
    pub name: Arc<str>,
    pub mode: Mode,
    pub shared: Arc<Shared>,
    pub limits: Limits,
    /// Cancelled when the listener must stop accepting (end of the drain delay).
    pub stop_accept: CancellationToken,
    /// Cancelled when open HTTP connections must finish their requests and close.
    pub graceful: CancellationToken,
    pub tracker: TaskTracker,
    pub http: Option<Arc<proxy::http::ServerBuilders>>,
}

/// Accepts connections until `stop_accept`; dropping the socket then makes the
/// kernel refuse new connections.
pub async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = ctx.stop_accept.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: back off instead of spinning.
                    tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Accept first, then wait for a slot: while this loop waits with one
        // connection in hand, the rest stay in the kernel's backlog (not refused),
        // and no slot is held by a loop that has nothing to serve.
        let permits = tokio::select! {
            biased;
            _ = ctx.stop_accept.cancelled() => break,
            p = ctx.limits.acquire() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let count = crate::ConnCount::new(&ctx.shared, ctx.listener);
        match ctx.mode {
            Mode::Http => {
                let Some(builders) = &ctx.http else { break };
                let conn = Arc::new(proxy::http::ConnCtx::new(
                    Arc::clone(&ctx.shared),
                    ctx.listener,
                    Arc::clone(&ctx.name),
                    peer,
                    ctx.tracker.clone(),
                    (permits, count),
                ));
                let builders = Arc::clone(builders);
                let graceful = ctx.graceful.clone();
                ctx.tracker
                    .spawn(proxy::http::serve(stream, conn, builders, graceful));
            }
            Mode::Tcp => {
                let shared = Arc::clone(&ctx.shared);
                let idx = ctx.listener;
                ctx.tracker.spawn(async move {
                    proxy::tcp::serve(stream, peer, shared, idx).await;
                    drop((permits, count));
                });
            }
        }
    }
    tracing::debug!(listener = %ctx.name, "stopped accepting");
}
