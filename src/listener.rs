//! Listening sockets (socket2: SO_REUSEADDR, SO_REUSEPORT for one socket per worker,
//! IP_FREEBIND so a passive HA node can bind a VIP it does not hold yet), the accept
//! loop with its connection limits, and the set of bound addresses that a reload
//! reconciles: an address that stays keeps its sockets (no connection is ever
//! refused), a new one is bound before anything else changes, a removed one stops
//! accepting and its connections drain within `shutdown_grace`.

use crate::config::{Config, Mode};
use crate::limits::{ListenerShared, Permits};
use crate::plane::Plane;
use crate::proxy;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The listen(2) backlog of every listening socket.
const BACKLOG: i32 = 4096;

/// Binds a listening TCP socket. Listeners' sockets are SO_REUSEPORT with one
/// worker too (as HAProxy binds them by default; `[global] reuse_port = false`
/// is its `noreuseport`): a reload that moves a listener from an address to the
/// wildcard of its port binds the new socket while the old one still serves,
/// and a binary upgrade to more workers adds sockets to the inherited one. The
/// admin socket is not, and it is bound first: a second proxy started by
/// mistake with the same config fails there, instead of sharing the
/// listeners' connections.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
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
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub listener: String,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// What an accept loop needs besides its socket.
struct AcceptCtx {
    /// The address it accepts on; the snapshot says which listener owns it.
    addr: SocketAddr,
    plane: Arc<Plane>,
    /// This address stops accepting (removed by a reload, or shutdown).
    stop: CancellationToken,
    /// Open HTTP connections finish their requests and close.
    drain: CancellationToken,
    /// What is still open after the grace is cut.
    kill: CancellationToken,
    tracker: TaskTracker,
}

/// Accepts connections until `stop`; dropping the socket then makes the kernel
/// refuse new connections. Its connections are then cut if they are still open
/// when `kill` fires (a removed address's grace is over).
async fn accept_loop(listener: AsyncFd<mio::net::TcpListener>, ctx: AcceptCtx) {
    // None once `stop` came while a connection in hand waited for its slot:
    // the socket is closed then, not when the slot comes
    let mut listener = Some(listener);
    // This loop's connections, so they can be cut (a future per connection that
    // every wake-up of it polled cost ~460 instructions a request; a JoinSet, a
    // lock and ~770 instructions a connection). Finished ones are pruned when
    // the list has doubled since the last pruning.
    let mut conns: Vec<tokio::task::AbortHandle> = Vec::new();
    let mut prune_at = 64;
    // A parked connection (proxy::park) leaves its finished task in `conns`
    // (or `adopted`, where the tasks of connections served again after parking
    // are), whose memory stays held until it is pruned: within a second of
    // enough parks, whether or not connections keep coming.
    let adopted = Arc::new(proxy::conn::Adopted::default());
    let prune_tick = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(prune_tick);
    // What this loop's HTTP connections share; made again when a reload
    // changes the listener's scheme or client_timeout.
    let mut shared: Option<Arc<proxy::conn::ListenerCtx>> = None;
    // Whether the socket's connections start with delayed acknowledgements
    // (`quickack`), as `prepare` set it for the listener; None until the
    // first connection.
    let mut delaying: Option<bool> = None;
    // After a reload changed that, connections already in the backlog were
    // made with the old setting: the next BACKLOG ones are set one by one.
    let mut set_each: u32 = 0;
    while let Some(socket) = &listener {
        let (stream, peer) = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            r = accept(socket) => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: back off instead of spinning.
                    tracing::warn!(addr = %ctx.addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut prune_tick => {
                prune_tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                // this worker's spare I/O buffers of a past burst go
                crate::h1::trim_spare(crate::clock::now_ms());
                let parks = adopted.parks.load(std::sync::atomic::Ordering::Relaxed);
                // an eighth of the lists finished, at least 64: pruning stays
                // O(1) a park
                if parks >= 64.max((conns.len() + adopted.tasks().len()) / 8) {
                    adopted.parks.store(0, std::sync::atomic::Ordering::Relaxed);
                    let released = prune(&mut conns) + prune(&mut adopted.tasks());
                    prune_at = (conns.len() * 2).max(64);
                    proxy::park::released(released);
                }
                continue;
            }
        };
        // The listener that owns this address now, in the current generation.
        let (ls, mode, builders, scheme, layers) = {
            let snap = ctx.plane.snapshot.load();
            let Some(l) = snap.listener_at(ctx.addr) else {
                continue;
            };
            let layers = Layers {
                pp: l.proxy_protocol.clone(),
                tls: l.tls.clone(),
                sni_hello: l.sni_hello,
            };
            (
                Arc::clone(&l.shared),
                l.mode,
                l.http.clone(),
                l.scheme,
                layers,
            )
        };
        let delay = mode == Mode::Http && layers.is_none();
        if delaying.is_some_and(|d| d != delay) {
            quickack(&socket2::SockRef::from(socket.get_ref()), !delay);
            set_each = BACKLOG as u32;
        }
        delaying = Some(delay);
        if set_each > 0 {
            set_each -= 1;
            quickack(&socket2::SockRef::from(&stream), !delay);
        }
        // Accept first, then wait for a slot: while this loop waits with one
        // connection in hand, the rest stay in the kernel's backlog (not refused),
        // and no slot is held by a loop that has nothing to serve. A connection
        // in hand is served even if the address stops accepting meanwhile
        // (dropping it would reset a client that did nothing wrong): the socket
        // closes at `stop` all the same, and the wait ends at `kill`.
        let free = ls.limit.try_slot().and_then(|local| {
            let global = ctx.plane.limit.try_slot()?;
            Some((global, local))
        });
        let slots = match free {
            Some(s) => Some(s),
            None => {
                let slots = async {
                    let local = ls.limit.take().await;
                    (ctx.plane.limit.take().await, local)
                };
                tokio::pin!(slots);
                loop {
                    tokio::select! {
                        biased;
                        s = &mut slots => break Some(s),
                        _ = ctx.stop.cancelled(), if listener.is_some() => {
                            listener = None;
                            tracing::debug!(addr = %ctx.addr, "stopped accepting; a connection waits for a slot");
                        }
                        _ = ctx.kill.cancelled() => break None,
                    }
                }
            }
        };
        let Some((global, local)) = slots else {
            break;
        };
        let permits = Permits::new(global, local, ls);
        if conns.len() >= prune_at {
            prune(&mut conns);
            prune_at = (conns.len() * 2).max(64);
        }
        match (mode, builders) {
            (Mode::Http, Some(builders)) => {
                let addr = ctx.addr;
                let client_timeout = builders.client_timeout();
                let shared = match &shared {
                    Some(s) if s.proto == scheme && s.client_timeout == client_timeout => {
                        Arc::clone(s)
                    }
                    _ => {
                        let s = Arc::new(proxy::conn::ListenerCtx::new(
                            Arc::clone(&ctx.plane),
                            (addr, scheme),
                            (ctx.tracker.clone(), ctx.kill.clone()),
                            client_timeout,
                            Arc::clone(&adopted),
                        ));
                        shared = Some(Arc::clone(&s));
                        s
                    }
                };
                let http = HttpStart {
                    shared,
                    drain: ctx.drain.clone(),
                    builders,
                    reached: None,
                };
                // Each connection's future is boxed as it is spawned: tokio
                // copies a task's future into its cell and from stage to stage
                // (seven copies a connection), where a box is one allocation
                // (about 500 fewer instructions a connection in the `close`
                // row, bench/RESULTS.md), and no copy (`crate::boxed`).
                let h = if layers.is_none() {
                    // the usual case: the connection's own future, nothing wrapped
                    // around it (a wrapper cost ~1,500 instructions a connection),
                    // its socket registered with the reactor only if it waits
                    let client = proxy::io::ClientSocket::new(stream);
                    ctx.tracker.spawn(http.start_boxed(client, peer, permits))
                } else {
                    ctx.tracker.spawn(crate::boxed::pin(move || async move {
                        let Some(mut stream) = register(stream, peer) else {
                            return;
                        };
                        let Some((peer, reached)) = layers
                            .client(&mut stream, peer, addr, permits.listener())
                            .await
                        else {
                            return;
                        };
                        let http = HttpStart { reached, ..http };
                        match &layers.tls {
                            None => {
                                let client = proxy::io::ClientSocket::from_registered(stream);
                                http.start(client, peer, permits, None).await
                            }
                            Some(tls) => {
                                let name = Arc::clone(&permits.listener().name);
                                // The handshake and the session it makes, boxed:
                                // an idle TLS connection's task holds neither the
                                // handshake's state nor a rustls session inline
                                // (4,598 bytes a task; 888 and a box of 1,216 so)
                                let hs = boxed_handshake(tls, stream, &name, peer);
                                if let Some((s, info)) = hs.await {
                                    http.start(s, peer, permits, Some(info)).await
                                }
                            }
                        }
                    }))
                };
                conns.push(h.abort_handle());
            }
            _ => {
                let session = tcp_session(stream, peer, layers, permits, &ctx);
                let h = ctx.tracker.spawn(session);
                conns.push(h.abort_handle());
            }
        }
    }
    drop(listener);
    tracing::debug!(addr = %ctx.addr, "stopped accepting");
    // The socket is closed; what is still open ends by itself or at `kill`:
    // this loop's tasks, and those of its parked connections served again
    // (while a connection of it lives, parked or not, so does its ListenerCtx).
    conns.retain(|h| !h.is_finished());
    drop(shared);
    if !conns.is_empty() || Arc::strong_count(&adopted) > 1 {
        let kill = ctx.kill;
        tokio::spawn(
            async move {
                kill.cancelled().await;
                for h in conns {
                    h.abort();
                }
                for h in adopted.tasks().drain(..) {
                    h.abort();
                }
            }
            .instrument(tracing::info_span!("connection_reaper", addr = %ctx.addr)),
        );
    }
}

/// The next connection: accepted non-blocking (accept4 with SOCK_NONBLOCK,
/// one system call), not registered with the reactor.
async fn accept(
    listener: &AsyncFd<mio::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        // WouldBlock clears the readiness and waits again
        if let Ok(r) = ready.try_io(|l| l.get_ref().accept()) {
            return r.map(|(s, peer)| (s.into(), peer));
        }
    }
}

/// A socket registered with the reactor, for the layers and modes that read
/// it through tokio from the start; None: it could not be (closed).
fn register(stream: std::net::TcpStream, peer: SocketAddr) -> Option<tokio::net::TcpStream> {
    match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot register a connection; closed");
            None
        }
    }
}

/// Sets whether a socket (a listening one: the connections it accepts from
/// now on) acknowledges a new connection's first bytes at once, Linux's
/// default, or delays the acknowledgement so that it travels with the answer,
/// as HAProxy does on its HTTP frontends: one segment fewer for every new
/// connection (bench/RESULTS.md). Plain HTTP listeners delay (the client
/// speaks first and is answered soon); TCP listeners, and those with TLS or
/// the PROXY protocol in front, whose first bytes may be a handshake step or a
/// header that the client does not follow at once, do not. The fast path asks
/// for an acknowledgement at once while a request is only partly in, and when
/// it hands a connection to hyper (`ClientIo::ack_now`). Best effort: a socket
/// that refuses keeps the default.
fn quickack(sock: &socket2::SockRef<'_>, on: bool) {
    if let Err(e) = sock.set_tcp_quickack(on) {
        tracing::debug!(error = %e, "TCP_QUICKACK not set");
    }
}

/// Drops the handles of finished tasks; how many.
fn prune(handles: &mut Vec<tokio::task::AbortHandle>) -> usize {
    let before = handles.len();
    handles.retain(|h| !h.is_finished());
    before - handles.len()
}

/// A tcp listener's session, from the accepted socket on: the accept-time
/// layers, then the relay. Boxed, as an HTTP connection's future is (tokio
/// copies an unboxed future seven times as it spawns and ends its task), and
/// kept small, as it is held for as long as the session lasts: the rarer
/// layers' state, a TLS handshake and the session it makes, is boxed apart
/// when it is needed.
fn tcp_session(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    layers: Layers,
    permits: Permits,
    ctx: &AcceptCtx,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send + 'static>> {
    let plane = Arc::clone(&ctx.plane);
    let addr = ctx.addr;
    // (made in its box, not copied there: `crate::boxed`)
    crate::boxed::pin(move || async move {
        let start = std::time::Instant::now();
        // the session's one timer: the hello's wait, the connect's, then the
        // relay's idle timeout (`proxy::tcp::serve`)
        let timer = crate::clock::timer();
        tokio::pin!(timer);
        // A ClientHello to route by that has come already is read before the
        // socket is registered (after a PROXY header, it is read after that).
        let early = match (layers.sni_hello, &layers.pp) {
            (Some(_), None) => match crate::tls::sni::read_now(&stream) {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(%addr, %peer, error = %e, "connection closed: no TLS ClientHello to route on");
                    return;
                }
            },
            _ => None,
        };
        // (as the HTTP branch of `accept_loop` does: the two steps in a
        // helper's future of their own cost ~300 instructions a connection)
        let Some(mut stream) = register(stream, peer) else {
            return;
        };
        let Some((peer, reached)) = layers
            .client(&mut stream, peer, addr, permits.listener())
            .await
        else {
            return;
        };
        let local = match reached {
            Some(a) => a,
            // a wildcard bind: the address this client reached (one system
            // call, only for such listeners, as for HTTP)
            None if addr.ip().is_unspecified() => stream.local_addr().unwrap_or(addr),
            None => addr,
        };
        // (a tcp listener that routes TLS it passes through by its server name)
        let hello = match layers.sni_hello {
            None => None,
            Some(within) => {
                match crate::tls::sni::read_hello_by(&mut stream, within, early, timer.as_mut())
                    .await
                {
                    Ok(hello) => Some(hello),
                    Err(e) => {
                        tracing::debug!(%addr, %peer, error = %e, "connection closed: no TLS ClientHello to route on");
                        close_read(&stream);
                        return;
                    }
                }
            }
        };
        let (sni, first) = match hello {
            Some(h) => (h.name, Some(proxy::tcp::First::Buf(h.read))),
            None => (None, None),
        };
        let session = proxy::tcp::Session {
            peer,
            local,
            sni,
            first,
            tls: None,
        };
        let listener = permits.listener();
        match &layers.tls {
            None => proxy::tcp::serve(stream, session, plane, addr, listener, start, timer).await,
            Some(tls) => {
                let at = (addr, start);
                tls_tcp_session(tls, stream, session, plane, at, listener, timer).await
            }
        }
        drop(permits);
    })
}

/// A tcp session over TLS this listener ends: the handshake, then the relay
/// of what it carries. Boxed where it is made (as `boxed_handshake` is), so
/// that the tasks of the sessions without TLS hold no room for it.
fn tls_tcp_session<'a>(
    tls: &'a crate::tls::ServerTls,
    stream: tokio::net::TcpStream,
    mut session: proxy::tcp::Session,
    plane: Arc<crate::plane::Plane>,
    (addr, start): (SocketAddr, std::time::Instant),
    listener: &'a Arc<ListenerShared>,
    timer: std::pin::Pin<&'a mut tokio::time::Sleep>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send + 'a>> {
    crate::boxed::pin(move || async move {
        let Some((s, info)) = handshake(tls, stream, &listener.name, session.peer).await else {
            return;
        };
        session.tls = Some(Box::new(info));
        proxy::tcp::serve(s, session, plane, addr, listener, start, timer).await
    })
}

/// What an HTTP connection is started with.
struct HttpStart {
    shared: Arc<proxy::conn::ListenerCtx>,
    drain: CancellationToken,
    builders: Arc<crate::snapshot::ServerBuilders>,
    /// The address the client reached, as its PROXY header names it.
    reached: Option<SocketAddr>,
}

impl HttpStart {
    fn start<S: proxy::io::ClientIo>(
        self,
        stream: S,
        peer: SocketAddr,
        permits: Permits,
        tls: Option<crate::tls::TlsInfo>,
    ) -> impl std::future::Future<Output = ()> {
        let (conn, builders, drain) = self.context(&stream, peer, permits, tls);
        proxy::fast_path::serve(stream, conn, builders, drain)
    }

    /// `start`, boxed: made in its box (`crate::boxed`), the connection's
    /// context made first (the making of the future must not unwind, which
    /// an allocation may: LLVM copies it then).
    fn start_boxed<S: proxy::io::ClientIo>(
        self,
        stream: S,
        peer: SocketAddr,
        permits: Permits,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = ()>>> {
        let (conn, builders, drain) = self.context(&stream, peer, permits, None);
        crate::boxed::pin(|| proxy::fast_path::serve(stream, conn, builders, drain))
    }

    /// The connection's context, and what its future is made with.
    fn context<S: proxy::io::ClientIo>(
        self,
        stream: &S,
        peer: SocketAddr,
        permits: Permits,
        tls: Option<crate::tls::TlsInfo>,
    ) -> (
        Arc<proxy::conn::ConnCtx>,
        Arc<crate::snapshot::ServerBuilders>,
        CancellationToken,
    ) {
        let wildcard = self.shared.bound.ip().is_unspecified();
        let mut conn = proxy::conn::ConnCtx::new(self.shared, peer, permits);
        if let Some(info) = tls {
            conn = conn.with_tls(info);
        }
        if let Some(reached) = self.reached {
            conn.local = reached;
        } else if wildcard {
            // a wildcard bind: the address this client reached (one system call,
            // only for such listeners)
            if let Ok(local) = stream.local_addr() {
                conn.local = local;
            }
        }
        (Arc::new(conn), self.builders, self.drain)
    }
}

/// The accept-time layers of a listener, between accept and the protocol:
/// the PROXY header, then TLS (or, on a tcp listener that routes TLS it passes
/// through, the ClientHello read to route by).
struct Layers {
    pp: Option<Arc<crate::proxy_protocol::Accept>>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    sni_hello: Option<Duration>,
}

impl Layers {
    fn is_none(&self) -> bool {
        self.pp.is_none() && self.tls.is_none() && self.sni_hello.is_none()
    }

    /// The client a new connection stands for: its peer, or the one its PROXY
    /// header names (where the listener accepts them), and the address that
    /// client reached when the header names it. None: refused (a header from
    /// an untrusted source, a missing or malformed one); the connection is
    /// closed.
    async fn client(
        &self,
        stream: &mut tokio::net::TcpStream,
        peer: SocketAddr,
        addr: SocketAddr,
        listener: &ListenerShared,
    ) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let Some(pp) = &self.pp else {
            return Some((peer, None));
        };
        // Boxed: its header buffer (1 KiB) would otherwise take room in the
        // connection's task for as long as the connection lasts
        match crate::boxed::pin(|| crate::proxy_protocol::accept(stream, peer, pp)).await {
            Ok(client) => Some(client),
            Err(e) => {
                listener.proxy_refused[e.reason()].fetch_add(1, Ordering::Relaxed);
                tracing::info!(%addr, %peer, error = %e, "connection refused: PROXY protocol");
                None
            }
        }
    }
}

/// One bound address: its accept loops (one per worker) and its connections.
struct Bound {
    listener: String,
    /// Its sockets' descriptors (open while its accept loops run).
    fds: Vec<std::os::fd::RawFd>,
    /// Its accept loops; each owns (and closes when it ends) one socket.
    loops: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    drain: CancellationToken,
    kill: CancellationToken,
}

/// Sockets bound for a reload, not serving yet: dropped (closed) if the reload
/// fails later.
pub struct Prepared {
    new: Vec<(SocketAddr, String, Vec<std::net::TcpListener>)>,
}

/// Every bound address of the running proxy, on every worker.
pub struct ListenerSet {
    workers: Vec<tokio::runtime::Handle>,
    bound: HashMap<SocketAddr, Bound>,
    /// Accept loops of removed addresses that may not have closed their socket yet.
    closing: Vec<tokio::task::JoinHandle<()>>,
    /// Sockets taken over from the old process (binary upgrade), by address:
    /// used instead of binding; what the first config does not use is closed.
    inherited: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
    /// Shutdown: every address stops accepting / every connection drains.
    stop_accept: CancellationToken,
    graceful: CancellationToken,
    tracker: TaskTracker,
}

impl ListenerSet {
    pub fn new(
        workers: Vec<tokio::runtime::Handle>,
        (stop_accept, graceful): (CancellationToken, CancellationToken),
        tracker: TaskTracker,
        inherited: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
    ) -> ListenerSet {
        ListenerSet {
            workers,
            bound: HashMap::new(),
            closing: Vec::new(),
            inherited,
            stop_accept,
            graceful,
            tracker,
        }
    }

    /// Every bound address and its sockets' descriptors (binary upgrade).
    pub fn fds(&self) -> Vec<(SocketAddr, Vec<std::os::fd::RawFd>)> {
        self.bound
            .iter()
            .map(|(a, b)| (*a, b.fds.clone()))
            .collect()
    }

    /// Waits (briefly) until the sockets of removed addresses are closed. With
    /// SO_REUSEPORT a new socket on the same address would otherwise share the
    /// kernel's connections with a closing one, whose queued connections are
    /// reset when it closes.
    pub async fn settle(&mut self) {
        for h in self.closing.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
        }
    }

    /// Binds (one socket per worker) every address of `cfg` that is not bound yet.
    /// Nothing is bound if one fails.
    pub fn prepare(&mut self, cfg: &Config) -> Result<Prepared, BindError> {
        let mut new = Vec::new();
        for l in &cfg.listeners {
            for &addr in &l.binds {
                if self.bound.contains_key(&addr) {
                    continue;
                }
                // connections start with delayed acknowledgements or not
                // (`quickack`): set after listen(), which resets it
                let delay = l.mode == Mode::Http && l.tls.is_none() && l.proxy_protocol.is_none();
                if let Some(mut sockets) = self.inherited.remove(&addr) {
                    tracing::info!(listener = %l.name, %addr, sockets = sockets.len(), "listening on sockets taken over from the old process");
                    // more workers than the old process had: each gets a
                    // socket of its own when the old ones share their port
                    // (SO_REUSEPORT); else the others never accept here
                    let shared = sockets
                        .first()
                        .is_some_and(|s| socket2::SockRef::from(s).reuse_port().unwrap_or(false));
                    if shared && !cfg.global.reuse_port {
                        tracing::warn!(listener = %l.name, %addr, "the sockets taken over from the old process are SO_REUSEPORT, which reuse_port = false does not change: another socket may share the port until a restart");
                    }
                    while sockets.len() < self.workers.len() {
                        if !shared {
                            tracing::warn!(listener = %l.name, %addr, sockets = sockets.len(), workers = self.workers.len(), "fewer inherited sockets than worker threads, and they are not SO_REUSEPORT: the other threads do not accept here until a restart");
                            break;
                        }
                        match bind(addr, true) {
                            Ok(s) => sockets.push(s),
                            Err(e) => {
                                tracing::warn!(listener = %l.name, %addr, error = %e, "cannot add a socket for a new worker thread; the inherited ones serve");
                                break;
                            }
                        }
                    }
                    for s in &sockets {
                        quickack(&socket2::SockRef::from(s), !delay);
                    }
                    new.push((addr, l.name.clone(), sockets));
                    continue;
                }
                let mut sockets = Vec::with_capacity(self.workers.len());
                for _ in 0..self.workers.len() {
                    let s = bind(addr, cfg.global.reuse_port).map_err(|source| BindError {
                        listener: l.name.clone(),
                        addr,
                        source,
                    })?;
                    quickack(&socket2::SockRef::from(&s), !delay);
                    sockets.push(s);
                }
                new.push((addr, l.name.clone(), sockets));
            }
        }
        Ok(Prepared { new })
    }

    /// Starts accepting on the prepared sockets and stops the addresses that `cfg`
    /// no longer has: they stop accepting at once, their connections finish their
    /// in-flight requests and close, and whatever is still open after `grace` is
    /// closed. Call after the snapshot of `cfg` is live.
    pub fn commit(
        &mut self,
        prepared: Prepared,
        cfg: &Config,
        plane: &Arc<Plane>,
        grace: Duration,
    ) {
        let wanted: HashSet<SocketAddr> = cfg
            .listeners
            .iter()
            .flat_map(|l| l.binds.iter().copied())
            .collect();
        let closing = &mut self.closing;
        self.bound.retain(|addr, b| {
            if wanted.contains(addr) {
                return true;
            }
            tracing::info!(listener = %b.listener, %addr, ?grace, "stopped listening; draining its connections");
            b.stop.cancel();
            closing.append(&mut b.loops);
            b.drain.cancel();
            let kill = b.kill.clone();
            tokio::spawn(
                async move {
                    tokio::time::sleep(grace).await;
                    kill.cancel();
                }
                .instrument(tracing::info_span!("drain_grace", %addr)),
            );
            false
        });
        for (addr, name, sockets) in prepared.new {
            use std::os::fd::AsRawFd;
            let mut b = Bound {
                listener: name,
                fds: sockets.iter().map(|s| s.as_raw_fd()).collect(),
                loops: Vec::new(),
                stop: self.stop_accept.child_token(),
                drain: self.graceful.child_token(),
                kill: CancellationToken::new(),
            };
            // inherited sockets may be more or fewer than the workers
            for (sock, worker) in sockets.into_iter().zip(self.workers.iter().cycle()) {
                let ctx = AcceptCtx {
                    addr,
                    plane: Arc::clone(plane),
                    stop: b.stop.clone(),
                    drain: b.drain.clone(),
                    kill: b.kill.clone(),
                    tracker: self.tracker.clone(),
                };
                let span = tracing::info_span!("accept", listener = %b.listener, %addr);
                b.loops.push(
                    worker.spawn(
                        async move {
                            let sock = mio::net::TcpListener::from_std(sock);
                            // SAFETY: the listener owns its descriptor and moves
                            // into the AsyncFd, which owns it until dropped: nothing
                            // else closes or replaces it, and `as_raw_fd` always
                            // gives that one (every test that connects would see
                            // accepts fail otherwise).
                            let l = unsafe {
                                AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
                            };
                            match l.map_err(|e| io::Error::other(e.to_string())) {
                                Ok(l) => accept_loop(l, ctx).await,
                                Err(e) => {
                                    tracing::error!(%addr, error = %e, "cannot register listener")
                                }
                            }
                        }
                        .instrument(span),
                    ),
                );
            }
            let mode = cfg
                .listeners
                .iter()
                .find(|l| l.name == b.listener)
                .map(|l| l.mode);
            tracing::info!(listener = %b.listener, %addr, ?mode, "listening");
            self.bound.insert(addr, b);
        }
        // Taken over but not wanted: closed now.
        self.inherited.clear();
        // A renamed listener keeps the sockets of its addresses.
        for l in &cfg.listeners {
            for addr in &l.binds {
                if let Some(b) = self.bound.get_mut(addr) {
                    if b.listener != l.name {
                        b.listener = l.name.clone();
                    }
                }
            }
        }
    }
}

/// What `boxed_handshake` gives: the handshake boxed, its session boxed.
type Handshake<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Option<(
                    Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
                    crate::tls::TlsInfo,
                )>,
            > + Send
            + 'a,
    >,
>;

/// `handshake`, boxed where it is made, and its session boxed. Made in a
/// plain fn: `Box::pin(handshake(..))` in the caller's `async` block still
/// left room for the handshake's 1,616 bytes in that block's future.
fn boxed_handshake<'a>(
    tls: &'a crate::tls::ServerTls,
    stream: tokio::net::TcpStream,
    listener: &'a str,
    peer: SocketAddr,
) -> Handshake<'a> {
    crate::boxed::pin(move || async move {
        let (s, info) = handshake(tls, stream, listener, peer).await?;
        Some((Box::new(s), info))
    })
}

/// The TLS handshake of an accepted connection, counted in the metrics either way.
async fn handshake(
    tls: &crate::tls::ServerTls,
    stream: tokio::net::TcpStream,
    listener: &str,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    crate::tls::TlsInfo,
)> {
    let start = std::time::Instant::now();
    let m = crate::metrics::global();
    match tls.accept(stream, listener, peer).await {
        Ok((s, info)) => {
            m.tls_handshakes
                .with_label_values(&[listener, info.version, "ok"])
                .inc();
            m.tls_handshake_duration
                .with_label_values(&[listener])
                .observe(start.elapsed().as_secs_f64());
            Some((s, info))
        }
        Err(failure) => {
            m.tls_handshakes
                .with_label_values(&[listener, "none", "failed"])
                .inc();
            m.tls_failures
                .with_label_values(&[listener, failure.as_str()])
                .inc();
            None
        }
    }
}

/// Closes a client's connection after reading what it has sent (up to 64
/// KiB), so that it gets a FIN, not the reset of a socket closed with unread
/// bytes (a tcp listener that routes by SNI and got no ClientHello).
fn close_read(stream: &tokio::net::TcpStream) {
    proxy::tcp::drain_now(stream, 64 * 1024);
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}
