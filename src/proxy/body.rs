//! Bodies on their way to the client (`ProxyBody`: rampart's own, or a
//! backend's as `UpstreamBody`, counted, timed and logged as it streams) and
//! the request's access-log entry (`ReqLog`), written when the body ends.

use super::conn::ConnCtx;
use super::headers::grpc_status;
use crate::accesslog::{End, Entry};
use crate::plane::Plane;
use crate::pool::{Pool, ServerGuard};
use crate::upstream::{self, RespBody, Sender};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

/// What one request's access log line needs, gathered as the request goes.
pub(super) struct ReqLog {
    ctx_plane: Arc<Plane>,
    client: SocketAddr,
    listener: Arc<str>,
    pool: Arc<str>,
    pub(super) server: Option<Arc<str>>,
    method: Method,
    path: String,
    pub(super) status: u16,
    pub(super) connect: Option<Duration>,
    start: Instant,
    /// Request body bytes sent to the server, counted by `ReqBody`.
    pub(super) bytes_in: Arc<AtomicU64>,
    written: bool,
    tls: Option<Arc<crate::tls::TlsInfo>>,
    /// A gRPC call, and its status once known.
    pub(super) grpc: bool,
    pub(super) grpc_status: Option<u32>,
}

impl ReqLog {
    /// `client`: the request's (`ListenerShared::request_client`).
    pub(super) fn new(
        ctx: &ConnCtx,
        client: std::net::IpAddr,
        method: Method,
        path: String,
        pool: &Pool,
        start: Instant,
    ) -> ReqLog {
        ReqLog {
            ctx_plane: Arc::clone(&ctx.shared.plane),
            client: ctx.client_addr(client),
            listener: Arc::clone(ctx.listener_name()),
            pool: Arc::clone(&pool.name),
            server: None,
            method,
            path,
            status: 0,
            connect: None,
            start,
            bytes_in: Arc::default(),
            written: false,
            tls: ctx.tls.clone(),
            grpc: false,
            grpc_status: None,
        }
    }

    pub(super) fn finish(&mut self, bytes_out: u64, end: End) {
        self.written = true;
        self.ctx_plane.access_log.write(&Entry {
            client: self.client,
            listener: &self.listener,
            pool: &self.pool,
            server: self.server.as_deref(),
            method: Some(self.method.as_str()),
            path: Some(&self.path),
            status: Some(self.status),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            connect: self.connect,
            total: Some(self.start.elapsed()),
            end,
            tls: self.tls.as_deref(),
            grpc_status: self.grpc_status,
            sni: None,
        });
    }
}

impl Drop for ReqLog {
    /// A request dropped before it ended (the client went away while it was queued,
    /// connecting or waiting for the response) still gets its line.
    fn drop(&mut self) {
        if !self.written {
            self.finish(0, End::ClientAbort);
        }
    }
}

/// A response body as sent to the client.
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
    /// A server's answer gzipped on its way (`[listener.compression]`).
    Gzip(Box<Gzip>),
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

/// Why a response body sent to a client broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] upstream::RespBodyError),
    #[error("the server paused longer than server_timeout ({0:?}) inside the response body")]
    Idle(Duration),
    #[error("compressing the response body: {0}")]
    Compress(std::io::Error),
}

use crate::rules::ServerLine;

impl crate::http2::server::WireFields for ProxyBody {
    fn wire_fields(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        let ProxyBody::Upstream(u) = self else {
            return;
        };
        let Some(e) = u.wire_edits.as_deref() else {
            return u.inner.wire_fields(f);
        };
        // as the fast path edits the lines it copies (`RespHead::write_client`)
        u.inner
            .wire_fields(&mut |name, value| match e.server_line(name, value) {
                ServerLine::Dropped => {}
                ServerLine::Rewritten(v) => f(name, v.as_bytes()),
                ServerLine::AsSent => f(name, value),
            });
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(o) => Poll::Ready(o.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Gzip(g) => Pin::new(g.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.inner.is_end_stream(),
            ProxyBody::Full(o) => o.is_none(),
            ProxyBody::Gzip(g) => g.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.inner.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Gzip(g) => g.size_hint(),
        }
    }
}

/// A backend's response body on its way to the client. When it has been read to the
/// end, the backend connection goes back to the idle pool; if the client goes away
/// first, the connection (which still has unread data) is closed.
pub struct UpstreamBody {
    pub(super) inner: RespBody,
    pub(super) sender: Option<Sender>,
    pub(super) guard: Option<ServerGuard>,
    pub(super) log: Option<Box<ReqLog>>,
    pub(super) bytes: u64,
    pub(super) failed: bool,
    /// The request's upload, if it was streamed: the connection is reusable only
    /// once it has been sent completely.
    pub(super) progress: Option<Arc<upstream::ReqProgress>>,
    /// How long the connection may stay idle in the pool.
    pub(super) keepalive: Duration,
    /// When the request arrived (for the duration histogram).
    pub(super) start: Instant,
    /// server_timeout: the longest pause allowed inside the body.
    pub(super) idle_timeout: Duration,
    /// Armed the first time the body has nothing ready (a response that comes
    /// whole never needs a timer), pushed back on every frame.
    pub(super) idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The client connection whose private connection this is (send_proxy).
    pub(super) private: Option<Arc<ConnCtx>>,
    /// The response edits of the request's rules, for a head whose fields
    /// stay in the body's buffer (`WireFields`): the lines they delete or
    /// set are left out there, those they rewrite rewritten (the lines they
    /// set are in the response's `HeaderMap`).
    pub(super) wire_edits: Option<Box<crate::rules::RuleEdits>>,
}

impl UpstreamBody {
    /// The server's side of the body failed: counted against it, logged as
    /// server_abort.
    fn broke_off(&mut self) {
        self.failed = true;
        if let Some(g) = &self.guard {
            g.server()
                .state
                .traffic
                .response_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        self.finish(false);
    }

    fn finish(&mut self, complete: bool) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        guard
            .pool()
            .shared
            .histograms
            .request_duration
            .observe(self.start.elapsed().as_secs_f64());
        let upload_done = self.progress.as_ref().is_none_or(|p| p.is_done());
        if complete && upload_done {
            if let Some(sender) = self.sender.take() {
                // (kept with the epoch of the pool it was sent for)
                let (state, pool) = (&guard.server().state, guard.pool());
                match &self.private {
                    Some(ctx) => ctx.private.put(state, pool.conn_epoch, sender),
                    None => upstream::checkin(
                        state,
                        pool.conn_epoch,
                        pool.max_idle_per_server,
                        self.keepalive,
                        sender,
                    ),
                }
            }
        } else {
            self.sender = None;
        }
        if let Some(mut l) = self.log.take() {
            let end = if complete {
                End::Ok
            } else if self.failed {
                End::ServerAbort
            } else {
                End::ClientAbort
            };
            l.finish(self.bytes, end);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let timeout = this.idle_timeout;
        if polled.is_pending() {
            let idle = this
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if std::future::Future::poll(idle.as_mut(), cx).is_ready() {
                this.broke_off();
                return Poll::Ready(Some(Err(BodyError::Idle(timeout))));
            }
            return Poll::Pending;
        }
        if let Some(idle) = &mut this.idle {
            idle.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let (Some(t), Some(l)) = (frame.trailers_ref(), this.log.as_mut()) {
                    if l.grpc {
                        l.grpc_status = grpc_status(t);
                    }
                }
                if let (Some(d), Some(g)) = (frame.data_ref(), &this.guard) {
                    this.bytes += d.len() as u64;
                    g.server()
                        .state
                        .traffic
                        .bytes_out
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                // Trailers are a body's last frame, and a sender need not poll
                // past them (hyper's HTTP/2 server does not): the exchange is
                // complete now, else its connection would be dropped with the
                // body and the request logged as the client's abort.
                if frame.is_trailers() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.broke_off();
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                this.finish(true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let complete = !self.failed && self.inner.is_end_stream();
        self.finish(complete);
    }
}

pub(super) fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(Some(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A response after which the connection closes (a request whose framing
/// cannot be trusted leaves nothing on the connection worth reading).
pub(super) fn closing(mut r: Response<ProxyBody>) -> Response<ProxyBody> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A server's answer gzipped as it comes (`[listener.compression]`; which
/// answers: `compress::applies`): each part the server sends goes on
/// compressed at once (a sync flush), so a slow or endless answer is not
/// held back.
pub struct Gzip {
    inner: ProxyBody,
    /// The compressor, made at the first part (an answer that waits holds
    /// none); None once the stream has ended.
    z: Option<Lazy>,
    level: u32,
    /// Its place among the answers compressed at once (`compress::Slot`).
    _slot: super::compress::Slot,
    /// Trailers that came after the last data, sent after the gzip end.
    pending: Option<Frame<Bytes>>,
}

enum Lazy {
    Waiting,
    Running(super::compress::Deflate),
}

impl Gzip {
    pub fn new(inner: ProxyBody, level: u32, slot: super::compress::Slot) -> Gzip {
        Gzip {
            inner,
            z: Some(Lazy::Waiting),
            level,
            _slot: slot,
            pending: None,
        }
    }
}

fn data(out: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
}

impl Body for Gzip {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(f) = this.pending.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        loop {
            if this.z.is_none() {
                return Poll::Ready(None);
            }
            let (bytes, finish) = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if d.is_empty() => continue,
                    Ok(d) => (d, false),
                    Err(trailers) => {
                        this.pending = Some(trailers);
                        (Bytes::new(), true)
                    }
                },
                Some(Err(e)) => {
                    this.z = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => (Bytes::new(), true),
            };
            if matches!(this.z, Some(Lazy::Waiting)) {
                this.z = Some(Lazy::Running(super::compress::Deflate::new(this.level)));
            }
            let Some(Lazy::Running(z)) = this.z.as_mut() else {
                return Poll::Ready(None);
            };
            let out = z.feed(&bytes, finish);
            if finish {
                this.z = None;
            }
            match out {
                Ok(out) if !out.is_empty() => return data(out),
                Ok(_) if finish => return Poll::Ready(this.pending.take().map(Ok)),
                Ok(_) => {}
                Err(e) => {
                    this.z = None;
                    this.pending = None;
                    return Poll::Ready(Some(Err(BodyError::Compress(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.z.is_none() && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
