//! Connecting to a backend: TCP connect under `connect_timeout`, HTTP/1.1 handshake,
//! and a keep-alive pool of idle connections per server.
//!
//! The idle pool is per worker thread (each worker runs a current-thread runtime, so
//! a connection's tasks never leave the thread that made it): checkout and checkin
//! touch a thread-local `RefCell`, never a lock.

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
use tokio::net::TcpStream;
use tokio::sync::Notify;

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
}

impl UpstreamError {
    /// Did the failure happen while establishing the connection?
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Handshake { .. }
                | UpstreamError::ClosedBeforeSend { .. }
        )
    }

    /// Was it the client's side that failed (its request body broke off)? Then the
    /// server is not to blame and the request is not retried.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, UpstreamError::Reset { source, .. } if source.is_user())
    }
}

/// A failed `send`: the error, and the request if it was never written to the
/// server (so it can go to another server as it is, streaming body included).
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Box<Request<ReqBody>>>,
}

/// The body sent to a backend: the client's streaming body, a buffered copy (for
/// requests that may be replayed on another server), or nothing.
pub enum ReqBody {
    Full(Option<Bytes>),
    Incoming {
        body: Incoming,
        /// The server of the current attempt (its byte counter).
        server: Option<Arc<ServerState>>,
        /// This request's byte count, kept only when the access log wants it.
        seen: Option<Arc<AtomicU64>>,
        /// Set once the whole body has been read from the client (streaming bodies).
        progress: Option<Arc<ReqProgress>>,
    },
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Incoming {
                body,
                server,
                seen,
                progress,
            } => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                match &r {
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
                r
            }
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming { body, .. } => body.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming { body, .. } => body.size_hint(),
            ReqBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ReqBody::Full(None) | ReqBody::Empty => SizeHint::with_exact(0),
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

    async fn wait(&self) {
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

struct Idle {
    sender: Sender,
    /// `clock::now_ms()` when this connection has been idle for its keep-alive timeout.
    expires: u64,
}

/// One server's idle connections on this thread.
struct IdleList {
    state: Arc<ServerState>,
    conns: Vec<Idle>,
}

thread_local! {
    static IDLE: RefCell<HashMap<u64, IdleList>> = RefCell::new(HashMap::new());
}

fn take_idle(server: &ServerState) -> Option<Sender> {
    IDLE.with_borrow_mut(|m| {
        let list = &mut m.get_mut(&server.uid)?.conns;
        let now = crate::clock::now_ms();
        while let Some(c) = list.pop() {
            if !c.sender.is_closed() && c.expires > now {
                return Some(c.sender);
            }
        }
        None
    })
}

/// Returns a connection whose last response was read completely to this thread's pool.
pub fn checkin(state: &Arc<ServerState>, max_idle: usize, keepalive: Duration, sender: Sender) {
    if max_idle == 0
        || keepalive.is_zero()
        || sender.is_closed()
        || state.retired.load(Ordering::Acquire)
    {
        return;
    }
    IDLE.with_borrow_mut(|m| {
        let list = &mut m
            .entry(state.uid)
            .or_insert_with(|| IdleList {
                state: Arc::clone(state),
                conns: Vec::new(),
            })
            .conns;
        if list.len() >= max_idle {
            // keep the most recently used ones: drop the oldest
            list.remove(0);
        }
        list.push(Idle {
            sender,
            expires: crate::clock::now_ms() + keepalive.as_millis() as u64,
        });
    });
}

/// Closes this thread's idle connections that were closed by the server, have
/// outlived their keep-alive timeout, or belong to a member that left its pool.
/// Each worker calls it every second and when members are retired.
pub fn sweep_idle() {
    let now = crate::clock::now_ms();
    IDLE.with_borrow_mut(|m| {
        m.retain(|_, list| {
            if list.state.retired.load(Ordering::Acquire) {
                return false;
            }
            list.conns
                .retain(|c| !c.sender.is_closed() && c.expires > now);
            !list.conns.is_empty()
        })
    });
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

async fn connect_http(server: &Server, timeout: Duration) -> Result<Sender, UpstreamError> {
    let stream = connect_tcp(server.addr, timeout).await?;
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
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// A response from a backend and the connection it came on.
pub struct Exchange {
    pub response: Response<Incoming>,
    pub sender: Sender,
    /// Time spent connecting (zero when a pooled connection was reused).
    pub connect_time: Duration,
}

/// Sends `req` to `server`, reusing an idle pooled connection when there is one.
///
/// If a reused connection turns out to have been closed by the server before the
/// request was written (the keep-alive race), the request is sent again on a new
/// connection: hyper hands back a request it did not send. A request that could not
/// be sent at all comes back in the error.
pub async fn send(
    pool: &Pool,
    server: &Server,
    req: Request<ReqBody>,
    replay: Option<&(dyn Fn() -> Request<ReqBody> + Sync)>,
) -> Result<Exchange, SendError> {
    let mut req = req;
    if let Some(mut sender) = take_idle(&server.state) {
        // A pooled connection is ready at once; one that is not (still busy, or
        // half dead) is abandoned rather than waited for.
        let ready = tokio::time::timeout(pool.connect_timeout, sender.ready()).await;
        if matches!(ready, Ok(Ok(()))) {
            match send_on(pool, server, &mut sender, req).await {
                Ok(response) => {
                    return Ok(Exchange {
                        response,
                        sender,
                        connect_time: Duration::ZERO,
                    })
                }
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
    let mut sender = match connect_http(server, pool.connect_timeout).await {
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
        Ok(response) => Ok(Exchange {
            response,
            sender,
            connect_time,
        }),
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
