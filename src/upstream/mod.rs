//! Connecting to a backend: TCP connect under `connect_timeout`, HTTP/1.1 handshake,
//! and a keep-alive pool of idle connections per server; HTTP/2 pools in `http2`.
//!
//! The idle pool is per worker thread (each worker runs a current-thread runtime, so
//! a connection's tasks never leave the thread that made it): checkout and checkin
//! touch a thread-local `RefCell`, never a lock.

use crate::h1::{self, PooledBuf};
use crate::pool::{Pool, Server, ServerState};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

pub mod http2;

pub type Sender = http1::SendRequest<ReqBody>;

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
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    H2Handshake {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("HTTP/2 stream to {addr} failed: {source}")]
    H2 {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
}

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
                | UpstreamError::H2Handshake { .. }
        )
    }

    /// Was it the client's side that failed (its request body broke off)? Then the
    /// server is not to blame and the request is not retried.
    pub fn is_client_fault(&self) -> bool {
        match self {
            UpstreamError::Reset { source, .. } => source.is_user(),
            // the stream was cancelled because the client's body broke off
            UpstreamError::H2 { source, .. } => {
                source.reason() == Some(h2::Reason::CANCEL) && !source.is_remote()
            }
            _ => false,
        }
    }
}

/// A failed `send`: the error, and the request if it was never written to the
/// server (so it can go to another server as it is, streaming body included).
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Box<Request<ReqBody>>>,
}

/// The body sent to a backend: the client's streaming body, or a buffered copy
/// (for requests that may be replayed on another server; `Full(None)`: no body).
pub enum ReqBody {
    Full(Option<Bytes>),
    Incoming {
        body: Incoming,
        /// The frames read before a server was chosen: the first, and those
        /// that had arrived with it (so that a body malformed within what
        /// came with the head never reaches a server).
        first: std::collections::VecDeque<Frame<Bytes>>,
        /// Set when reading the client's body failed for another reason than
        /// the client going away: [`BODY_MALFORMED`] (a bad chunk) or
        /// [`BODY_STALLED`].
        fault: Option<Arc<std::sync::atomic::AtomicU8>>,
        /// client_timeout: the longest the client may pause inside its body.
        idle: Duration,
        /// Runs while the body has nothing ready: set going by the first
        /// Pending after a frame (not by the frame: a server that stops
        /// reading the body for a while must not count as the client pausing).
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        /// The last poll was Pending: the timer is running.
        waiting: bool,
        /// The server of the current attempt (its byte counter).
        server: Option<Arc<ServerState>>,
        /// This request's byte count, kept only when the access log wants it.
        seen: Option<Arc<AtomicU64>>,
        /// Set once the whole body has been read from the client (streaming bodies).
        progress: Option<Arc<ReqProgress>>,
    },
}

/// [`ReqBody::Incoming`]'s `fault`: the body broke its framing.
pub const BODY_MALFORMED: u8 = 1;
/// [`ReqBody::Incoming`]'s `fault`: the client paused longer than client_timeout.
pub const BODY_STALLED: u8 = 2;

/// Why a client's request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReqBodyError {
    #[error(transparent)]
    Client(#[from] hyper::Error),
    #[error("the client sent no body bytes for client_timeout ({0:?})")]
    Stalled(Duration),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ReqBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReqBodyError>>> {
        match self.get_mut() {
            ReqBody::Incoming {
                body,
                first,
                fault,
                idle,
                timer,
                waiting,
                server,
                seen,
                progress,
            } => {
                let r = match first.pop_front() {
                    Some(f) => Poll::Ready(Some(Ok(f))),
                    None => Pin::new(&mut *body).poll_frame(cx),
                };
                if r.is_pending() {
                    let limit = *idle;
                    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if !std::mem::replace(waiting, true) {
                        t.as_mut().reset(tokio::time::Instant::now() + limit);
                    }
                    if std::future::Future::poll(t.as_mut(), cx).is_ready() {
                        if let Some(f) = fault {
                            f.store(BODY_STALLED, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(ReqBodyError::Stalled(limit))));
                    }
                    return Poll::Pending;
                }
                *waiting = false;
                match &r {
                    Poll::Ready(Some(Err(e))) if !e.is_incomplete_message() => {
                        if let Some(f) = fault {
                            f.store(BODY_MALFORMED, Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            if let Some(server) = server {
                                server.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                            if let Some(s) = seen {
                                s.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                        }
                        if body.is_end_stream() {
                            if let Some(p) = progress {
                                p.set_done();
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(p) = progress {
                            p.set_done();
                        }
                    }
                    _ => {}
                }
                r.map(|o| o.map(|x| x.map_err(ReqBodyError::Client)))
            }
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming { body, first, .. } => first.is_empty() && body.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming { body, first, .. } => {
                let ahead: u64 = first
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                let mut h = body.size_hint();
                if ahead > 0 {
                    // the upper bound first: a lower bound above it panics
                    if let Some(u) = h.upper() {
                        h.set_upper(u.saturating_add(ahead));
                    }
                    h.set_lower(h.lower().saturating_add(ahead));
                }
                h
            }
            ReqBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ReqBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

impl ReqBody {
    /// The progress tracker of a streaming body, if any.
    pub fn progress(&self) -> Option<&Arc<ReqProgress>> {
        match self {
            ReqBody::Incoming { progress, .. } => progress.as_ref(),
            _ => None,
        }
    }
}

/// Whether a streaming request body has been sent completely. A backend may answer
/// before it has read the whole upload; its connection must not be reused until
/// the upload is done, and `server_timeout` starts counting only then.
#[derive(Debug, Default)]
pub struct ReqProgress {
    done: AtomicBool,
    notify: Notify,
}

impl ReqProgress {
    pub fn set_done(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_done() {
                return;
            }
            n.await;
        }
    }
}

struct Idle<C> {
    conn: C,
    /// `clock::now_ms()` when this connection has been idle for its keep-alive timeout.
    expires: u64,
}

/// One server's idle connections on this thread: hyper's (requests with bodies,
/// upgrades, HTTP/2 clients) and plain sockets (the HTTP/1.1 fast path, proxy/fast_path.rs).
struct IdleList {
    state: Arc<ServerState>,
    conns: Vec<Idle<Sender>>,
    raw: Vec<Idle<TcpStream>>,
}

thread_local! {
    static IDLE: RefCell<HashMap<u64, IdleList>> = RefCell::new(HashMap::new());
}

fn take_idle(server: &ServerState) -> Option<Sender> {
    IDLE.with_borrow_mut(|m| {
        let list = &mut m.get_mut(&server.uid)?.conns;
        let now = crate::clock::now_ms();
        while let Some(c) = list.pop() {
            if !c.conn.is_closed() && c.expires > now {
                return Some(c.conn);
            }
        }
        None
    })
}

/// An idle plain connection to `server`, if this thread has one that looks alive.
pub fn take_idle_raw(server: &ServerState) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|m| {
        let list = &mut m.get_mut(&server.uid)?.raw;
        let now = crate::clock::now_ms();
        while let Some(c) = list.pop() {
            if c.expires > now && raw_is_open(&c.conn) {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Whether an idle socket is still open, without a system call in the usual case:
/// the reactor has flagged it readable only if the server closed it (or sent
/// something it should not have); then one read tells which. A close that the
/// reactor has not seen yet is the keep-alive race, handled by the caller's replay.
fn raw_is_open(s: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match s.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Puts an idle connection in this thread's pool, dropping the oldest when full.
fn park<C>(
    state: &Arc<ServerState>,
    max_idle: usize,
    keepalive: Duration,
    conn: C,
    list: impl FnOnce(&mut IdleList) -> &mut Vec<Idle<C>>,
) {
    if max_idle == 0 || keepalive.is_zero() || state.is_retired() {
        return;
    }
    IDLE.with_borrow_mut(|m| {
        let entry = m.entry(state.uid).or_insert_with(|| IdleList {
            state: Arc::clone(state),
            conns: Vec::new(),
            raw: Vec::new(),
        });
        let list = list(entry);
        if list.len() >= max_idle {
            // keep the most recently used ones: drop the oldest
            list.remove(0);
        }
        list.push(Idle {
            conn,
            expires: crate::clock::now_ms() + keepalive.as_millis() as u64,
        });
    });
}

/// Returns a plain connection whose last response was read completely.
pub fn checkin_raw(state: &Arc<ServerState>, max_idle: usize, keepalive: Duration, s: TcpStream) {
    park(state, max_idle, keepalive, s, |l| &mut l.raw);
}

/// Returns a connection whose last response was read completely to this thread's pool.
pub fn checkin(state: &Arc<ServerState>, max_idle: usize, keepalive: Duration, sender: Sender) {
    if !sender.is_closed() {
        park(state, max_idle, keepalive, sender, |l| &mut l.conns);
    }
}

/// Closes this thread's idle connections that were closed by the server, have
/// outlived their keep-alive timeout, or belong to a member that left its pool.
/// Each worker calls it every second and when members are retired.
pub fn sweep_idle() {
    let now = crate::clock::now_ms();
    IDLE.with_borrow_mut(|m| {
        m.retain(|_, list| {
            if list.state.is_retired() {
                return false;
            }
            list.conns
                .retain(|c| !c.conn.is_closed() && c.expires > now);
            list.raw.retain(|c| c.expires > now && raw_is_open(&c.conn));
            !list.conns.is_empty() || !list.raw.is_empty()
        })
    });
    http2::sweep();
}

/// Backend connections private to one client connection: those of pools that
/// send the PROXY protocol, whose header names that client, so no other client
/// may ever use them (HAProxy makes such connections private too). At most one
/// idle connection per server is kept.
#[derive(Debug, Default)]
pub struct Private {
    idle: std::sync::Mutex<Vec<(u64, Sender)>>,
}

impl Private {
    fn take(&self, server: &ServerState) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle.iter().position(|(uid, _)| *uid == server.uid)?;
        let (_, s) = idle.swap_remove(i);
        (!s.is_closed()).then_some(s)
    }

    /// Keeps a connection whose last response was read completely.
    pub fn put(&self, server: &ServerState, sender: Sender) {
        if sender.is_closed() || server.is_retired() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(uid, _)| *uid != server.uid);
        idle.push((server.uid, sender));
    }
}

/// Who a request is for, for pools that send the PROXY protocol: the client it
/// names, and where that client's private connections are kept.
pub struct Via<'a> {
    pub private: &'a Private,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: Option<&'a crate::tls::TlsInfo>,
}

/// Connects a TCP socket to `addr` within `timeout`, with TCP_NODELAY set.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Best effort: a failure here only costs latency.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Err(_) => Err(UpstreamError::ConnectTimeout { addr, timeout }),
    }
}

async fn connect_http(
    pool: &Pool,
    server: &Server,
    via: Option<&Via<'_>>,
) -> Result<Sender, UpstreamError> {
    let timeout = pool.connect_timeout;
    let mut stream = connect_tcp(server.addr, timeout).await?;
    if let (Some(v), Some(via)) = (pool.send_proxy, via) {
        let header = crate::proxy_protocol::header(v, via.client, via.local, via.tls);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &header)
            .await
            .map_err(|source| UpstreamError::Connect {
                addr: server.addr,
                source,
            })?;
    }
    match &pool.tls {
        None => handshake_http(server, stream).await,
        Some(tls) => {
            let stream = connect_tls(pool, tls, server, stream).await?;
            handshake_http(server, stream).await
        }
    }
}

/// The TLS handshake on a new connection to a server, within connect_timeout.
/// A certificate that does not verify is an error, logged with its reason.
pub async fn connect_tls(
    pool: &Pool,
    tls: &crate::tls::PoolTls,
    server: &Server,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let name = tls.name_for(server.source.as_deref(), server.addr);
    let addr = server.addr;
    match tokio::time::timeout(pool.connect_timeout, tls.connect(name.clone(), stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => {
            tracing::warn!(pool = %pool.name, server = %server.id, name = %name.to_str(), error = %source, "TLS handshake with the server failed");
            Err(UpstreamError::Tls { addr, source })
        }
        Err(_) => Err(UpstreamError::ConnectTimeout {
            addr,
            timeout: pool.connect_timeout,
        }),
    }
}

async fn handshake_http<S>(server: &Server, stream: S) -> Result<Sender, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Flattened writes (no writev) on both sides, with the server builder in
    // proxy/http.rs: +2.5-3.5% keep-alive req/s in alternating runs (either side
    // alone: no change). Large bodies still stream, bounded by hyper's buffer.
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake {
            addr: server.addr,
            source,
        })?;
    let addr = server.addr;
    tasks().spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// The tasks that drive backend connections (HTTP/1.1 and HTTP/2) and stream
/// request bodies to HTTP/2 servers. Each ends by itself with its connection or
/// body; they are tracked so that shutdown can count what is still open.
pub fn tasks() -> &'static tokio_util::task::TaskTracker {
    static TASKS: std::sync::OnceLock<tokio_util::task::TaskTracker> = std::sync::OnceLock::new();
    TASKS.get_or_init(tokio_util::task::TaskTracker::new)
}

/// A response body from a backend: hyper's (HTTP/1.1) or an HTTP/2 stream's.
#[derive(Debug)]
pub enum RespBody {
    H1(Incoming),
    H2(http2::H2Body),
}

/// Why a response body from a backend broke off.
#[derive(Debug, thiserror::Error)]
pub enum RespBodyError {
    #[error(transparent)]
    H1(#[from] hyper::Error),
    #[error("HTTP/2 stream: {0}")]
    H2(#[from] h2::Error),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = RespBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RespBodyError>>> {
        match self.get_mut() {
            RespBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(RespBodyError::H1),
            RespBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(RespBodyError::H2),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::H1(b) => b.is_end_stream(),
            RespBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::H1(b) => b.size_hint(),
            RespBody::H2(b) => b.size_hint(),
        }
    }
}

/// A response from a backend and the connection it came on.
pub struct Exchange {
    pub response: Response<RespBody>,
    /// The HTTP/1.1 connection, to pool again once the body has been read
    /// (an HTTP/2 stream releases its connection by itself).
    pub sender: Option<Sender>,
    /// Time spent connecting (zero when a pooled connection was reused).
    pub connect_time: Duration,
}

fn h1_exchange(response: Response<Incoming>, sender: Sender, connect_time: Duration) -> Exchange {
    Exchange {
        response: response.map(RespBody::H1),
        sender: Some(sender),
        connect_time,
    }
}

/// Sends `req` to `server`, reusing an idle pooled connection when there is one.
///
/// If a reused connection turns out to have been closed by the server before the
/// request was written (the keep-alive race), the request is sent again on a new
/// connection: hyper hands back a request it did not send. A request that could not
/// be sent at all comes back in the error. `resend` rebuilds a request whose body
/// was kept, for an HTTP/2 stream the server did not process.
pub async fn send(
    pool: &Pool,
    server: &Server,
    req: Request<ReqBody>,
    replay: Option<&(dyn Fn() -> Request<ReqBody> + Sync)>,
    resend: Option<&(dyn Fn() -> Request<ReqBody> + Sync)>,
    via: Option<&Via<'_>>,
) -> Result<Exchange, SendError> {
    if pool.protocol == crate::config::Protocol::H2 {
        let (response, connect_time) = http2::send(pool, server, req, resend).await?;
        return Ok(Exchange {
            response: response.map(RespBody::H2),
            sender: None,
            connect_time,
        });
    }
    let mut req = req;
    // a pool that sends the PROXY protocol uses the client's private connections
    let private = via.filter(|_| pool.send_proxy.is_some());
    let idle = match private {
        Some(v) => v.private.take(&server.state),
        None => take_idle(&server.state),
    };
    if let Some(mut sender) = idle {
        // A pooled connection is ready at once; one that is not (still busy, or
        // half dead) is abandoned rather than waited for.
        let ready = tokio::time::timeout(pool.connect_timeout, sender.ready()).await;
        if matches!(ready, Ok(Ok(()))) {
            match send_on(pool, server, &mut sender, req).await {
                Ok(response) => return Ok(h1_exchange(response, sender, Duration::ZERO)),
                Err(SendFailure::Unsent(r)) => req = *r,
                Err(SendFailure::Failed(error)) => match (replay, &error) {
                    // The server closed the idle connection as we wrote to it (the
                    // keep-alive race): the request never reached the application,
                    // so a replayable one goes again on a new connection.
                    (Some(again), UpstreamError::Reset { source, .. })
                        if source.is_incomplete_message()
                            || source.is_canceled()
                            || source.is_closed() =>
                    {
                        req = again();
                    }
                    _ => {
                        return Err(SendError {
                            error,
                            unsent: None,
                        })
                    }
                },
            }
        }
    }
    let started = Instant::now();
    // boxed: the connect future (TCP, TLS, the HTTP/1.1 handshake) is large,
    // and inline every request's future would carry (and copy) it
    let mut sender = match Box::pin(connect_http(pool, server, private)).await {
        Ok(s) => s,
        Err(error) => {
            return Err(SendError {
                error,
                unsent: Some(Box::new(req)),
            })
        }
    };
    let connect_time = started.elapsed();
    pool.shared
        .histograms
        .connect_time
        .observe(connect_time.as_secs_f64());
    match send_on(pool, server, &mut sender, req).await {
        Ok(response) => Ok(h1_exchange(response, sender, connect_time)),
        Err(SendFailure::Unsent(r)) => Err(SendError {
            error: UpstreamError::ClosedBeforeSend { addr: server.addr },
            unsent: Some(r),
        }),
        Err(SendFailure::Failed(error)) => Err(SendError {
            error,
            unsent: None,
        }),
    }
}

enum SendFailure {
    Unsent(Box<Request<ReqBody>>),
    Failed(UpstreamError),
}

async fn send_on(
    pool: &Pool,
    server: &Server,
    sender: &mut Sender,
    req: Request<ReqBody>,
) -> Result<Response<Incoming>, SendFailure> {
    let timeout = pool.server_timeout;
    // server_timeout counts from the end of the request: an upload may take longer.
    let progress = req.body().progress().cloned();
    let deadline = async {
        if let Some(p) = &progress {
            p.wait().await;
        }
        tokio::time::sleep(timeout).await;
    };
    let result = tokio::select! {
        r = sender.try_send_request(req) => Some(r),
        _ = deadline => None,
    };
    match result {
        Some(Ok(resp)) => Ok(resp),
        Some(Err(mut e)) => match e.take_message() {
            Some(req) => Err(SendFailure::Unsent(Box::new(req))),
            None => Err(SendFailure::Failed(UpstreamError::Reset {
                addr: server.addr,
                source: e.into_error(),
            })),
        },
        None => Err(SendFailure::Failed(UpstreamError::Timeout {
            addr: server.addr,
            timeout,
        })),
    }
}

/// What an attempt on the HTTP/1.1 fast path got: the connection, and the bytes read
/// from it, which start with a complete (final, non-1xx) response head.
pub struct RawExchange {
    pub stream: TcpStream,
    pub buf: PooledBuf,
    /// Time spent connecting (zero when a pooled connection was reused).
    pub connect_time: Duration,
}

enum RawFailure {
    /// Not even the start of the request was written.
    Unsent,
    /// The server closed or reset the connection before sending a byte.
    NoAnswer(UpstreamError),
    Failed(UpstreamError),
}

/// Sends a complete, bodiless request (`req`, already in wire form) to `server` on a
/// pooled plain connection or a new one, and reads the response head.
///
/// A pooled connection that the server closed meanwhile (the keep-alive race) is
/// replaced by a new one: at once when the request could not be written, and when
/// the server closed without answering if the request may be replayed.
pub async fn send_raw(
    pool: &Pool,
    server: &Server,
    req: &[u8],
    replayable: bool,
) -> Result<RawExchange, UpstreamError> {
    if let Some(mut stream) = take_idle_raw(&server.state) {
        match exchange_raw(&mut stream, server.addr, req, pool.server_timeout).await {
            Ok(buf) => {
                return Ok(RawExchange {
                    stream,
                    buf,
                    connect_time: Duration::ZERO,
                })
            }
            Err(RawFailure::Unsent) => {}
            Err(RawFailure::NoAnswer(_)) if replayable => {}
            Err(RawFailure::NoAnswer(e) | RawFailure::Failed(e)) => return Err(e),
        }
    }
    let started = Instant::now();
    let mut stream = connect_tcp(server.addr, pool.connect_timeout).await?;
    let connect_time = started.elapsed();
    pool.shared
        .histograms
        .connect_time
        .observe(connect_time.as_secs_f64());
    match exchange_raw(&mut stream, server.addr, req, pool.server_timeout).await {
        Ok(buf) => Ok(RawExchange {
            stream,
            buf,
            connect_time,
        }),
        Err(RawFailure::Unsent) => Err(UpstreamError::ClosedBeforeSend { addr: server.addr }),
        Err(RawFailure::NoAnswer(e) | RawFailure::Failed(e)) => Err(e),
    }
}

async fn exchange_raw(
    s: &mut TcpStream,
    addr: SocketAddr,
    req: &[u8],
    timeout: Duration,
) -> Result<PooledBuf, RawFailure> {
    let exchange = async {
        let n = s.write(req).await.map_err(|_| RawFailure::Unsent)?;
        if n == 0 {
            return Err(RawFailure::Unsent);
        }
        if n < req.len() {
            s.write_all(&req[n..])
                .await
                .map_err(|source| RawFailure::NoAnswer(UpstreamError::Io { addr, source }))?;
        }
        let mut buf = PooledBuf::take();
        read_response_head(s, &mut buf, addr).await?;
        Ok(buf)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(RawFailure::Failed(UpstreamError::Timeout { addr, timeout })),
    }
}

/// Reads until `buf` starts with a complete final response head; interim 1xx
/// responses (100 Continue, 103 Early Hints) are skipped. 101 is left to the caller.
async fn read_response_head(
    s: &mut TcpStream,
    buf: &mut PooledBuf,
    addr: SocketAddr,
) -> Result<(), RawFailure> {
    let mut answered = false;
    let mut scanned = 0;
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= h1::MAX_HEAD {
                return Err(RawFailure::Failed(UpstreamError::BadResponse {
                    addr,
                    reason: "response head too large".into(),
                }));
            }
            buf.reserve(h1::BUF_SIZE);
        }
        let n = match s.read_buf(&mut **buf).await {
            Ok(n) => n,
            Err(source) if !answered => {
                return Err(RawFailure::NoAnswer(UpstreamError::Io { addr, source }))
            }
            Err(source) => return Err(RawFailure::Failed(UpstreamError::Io { addr, source })),
        };
        if n == 0 {
            return Err(if answered {
                RawFailure::Failed(UpstreamError::BadResponse {
                    addr,
                    reason: "connection closed inside the response head".into(),
                })
            } else {
                RawFailure::NoAnswer(UpstreamError::Closed { addr })
            });
        }
        answered = true;
        while let Some(end) = h1::head_end(buf, scanned) {
            if !h1::is_interim(&buf[..end]) {
                return Ok(());
            }
            buf.drain(..end);
            scanned = 0;
        }
        scanned = buf.len().saturating_sub(3);
    }
}
