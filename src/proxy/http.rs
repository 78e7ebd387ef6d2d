//! HTTP mode: hyper 1.x serves HTTP/1.1 (keep-alive) and h2c (prior knowledge) to
//! clients; each request is routed to a pool, balanced to a server and sent over a
//! pooled HTTP/1.1 connection. Bodies stream both ways; nothing is buffered whole.

use super::ProxyError;
use crate::accesslog::{End, Entry};
use crate::config::Balance;
use crate::config::HashKey;
use crate::pool::balance::hash_parts;
use crate::pool::{Pool, Server, ServerGuard};
use crate::upstream::{self, Exchange, ReqBody, SendError, Sender, UpstreamError};
use crate::Shared;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1 and the de-facto Keep-Alive/Proxy-Connection).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Per client connection: what every request on it shares.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: usize,
    pub listener_name: Arc<str>,
    pub peer: SocketAddr,
    /// The client's IP, rendered once for X-Forwarded-For.
    peer_ip: HeaderValue,
    /// Upgraded tunnels outlive their HTTP connection; shutdown waits for them here.
    tracker: TaskTracker,
}

impl ConnCtx {
    pub fn new(
        shared: Arc<Shared>,
        listener: usize,
        listener_name: Arc<str>,
        peer: SocketAddr,
        tracker: TaskTracker,
    ) -> ConnCtx {
        let ip = peer.ip().to_canonical().to_string();
        ConnCtx {
            shared,
            listener,
            listener_name,
            peer,
            peer_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            tracker,
        }
    }
}

/// The hyper server builder for one listener.
pub fn server_builder(request_header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_header_timeout)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new());
    b
}

/// Serves one client connection until it closes, or until `graceful` is cancelled,
/// after which in-flight requests finish and the connection closes.
pub async fn serve(
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: CancellationToken,
) {
    let peer = ctx.peer;
    let svc = service_fn(move |req| handle(Arc::clone(&ctx), req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

async fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let Some(pool) = route(&ctx, &req) else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: listener is being reconfigured\n",
        ));
    };
    let key = if pool.balance == Balance::Hash {
        hash_key(&pool.hash_key, &req, ctx.peer.ip())
    } else {
        0
    };
    let mut log = ctx
        .shared
        .access_log
        .enabled()
        .then(|| Box::new(ReqLog::new(&ctx, &req, &pool, start)));
    pool.shared.budget.deposit(pool.retry.budget_percent);

    let upgrade = is_upgrade_request(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_request(&mut parts, &ctx, upgrade);

    // Keep what is needed to send the request again to another server after a
    // failure that may have happened once it was (partly) sent.
    let replayable = pool.retry.retries > 0
        && !upgrade
        && (parts.method.is_idempotent() || pool.retry.non_idempotent);
    let seen = log.as_ref().map(|l| Arc::clone(&l.bytes_in));
    let (body, replay) = match buffer_if_small(body, replayable, &pool).await {
        Ok(Buffered::Bytes(b)) => (ReqBody::Full(Some(b.clone())), Some(Replay::new(&parts, b))),
        Ok(Buffered::Stream(body)) => (
            ReqBody::Incoming {
                body,
                server: Arc::clone(&pool.servers[0].state),
                seen,
            },
            None,
        ),
        Err(()) => {
            if let Some(l) = log.take() {
                l.finish(0, End::ClientAbort);
            }
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request body could not be read\n",
            ));
        }
    };
    if let (ReqBody::Full(Some(b)), Some(l)) = (&body, &log) {
        l.bytes_in.store(b.len() as u64, Ordering::Relaxed);
    }
    let mut req = Request::from_parts(parts, body);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_err: Option<(ProxyError, usize)> = None;

    loop {
        let mut guard = match pool.acquire(key, &tried).await {
            Ok(g) => g,
            Err(e) => {
                // After a failed attempt, the client hears about that failure.
                return Ok(match last_err {
                    Some((err, idx)) => fail(&pool, Some(&pool.servers[idx]), err, log),
                    None => fail(&pool, None, e.into(), log),
                });
            }
        };
        let idx = guard.index();
        let server = &pool.servers[idx];
        server.state.total.fetch_add(1, Ordering::Relaxed);
        if let ReqBody::Incoming { server: s, .. } = req.body_mut() {
            *s = Arc::clone(&server.state);
        }
        let attempts_left = tried.len() < pool.retry.retries as usize;
        match upstream::send(&pool, server, req).await {
            Err(SendError { error, unsent }) => {
                let client_fault = error.is_client_fault();
                if !client_fault {
                    guard.failure();
                }
                let r = &pool.retry;
                let again = attempts_left
                    && !client_fault
                    && match &error {
                        e if e.is_connect() => {
                            r.on_connect_failure && (unsent.is_some() || replay.is_some())
                        }
                        UpstreamError::Timeout { .. } => r.on_timeout && replay.is_some(),
                        _ => r.on_reset && (unsent.is_some() || replay.is_some()),
                    }
                    && pool.retry_allowed();
                let err = ProxyError::Upstream(error);
                err.count_server(server);
                if !again {
                    return Ok(fail(&pool, Some(server), err, log));
                }
                tracing::debug!(pool = %pool.name, server = %server.id, error = %err, "retrying on another server");
                note_retry(&pool, server, &mut tried, idx);
                req = match (unsent, &replay) {
                    (Some(r), _) => *r,
                    (None, Some(rp)) => rp.request(),
                    (None, None) => return Ok(fail(&pool, Some(server), err, log)),
                };
                last_err = Some((err, idx));
            }
            Ok(Exchange {
                mut response,
                sender,
                connect_time,
            }) => {
                let status = response.status();
                let counts_as_failure = status.is_server_error() && pool.breaker.on_5xx;
                if counts_as_failure {
                    guard.failure();
                } else {
                    guard.success();
                }
                if let Some(rp) = &replay {
                    if attempts_left
                        && pool.retry.on_status.contains(&status.as_u16())
                        && pool.retry_allowed()
                    {
                        // The response (and its connection, body unread) is dropped.
                        server.state.response_errors.fetch_add(1, Ordering::Relaxed);
                        note_retry(&pool, server, &mut tried, idx);
                        req = rp.request();
                        continue;
                    }
                }
                if let Some(l) = log.as_mut() {
                    l.server = Some(Arc::clone(&server.id));
                    l.connect = Some(connect_time);
                    l.status = status.as_u16();
                }
                if let Some(client_up) = client_upgrade {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        let server_up = hyper::upgrade::on(&mut response);
                        let timeout = pool.tunnel_timeout;
                        ctx.tracker
                            .spawn(tunnel(client_up, server_up, guard, log, timeout));
                        let (parts, _) = response.into_parts();
                        return Ok(Response::from_parts(parts, ProxyBody::empty()));
                    }
                }
                strip_hop_by_hop(response.headers_mut());
                let (parts, body) = response.into_parts();
                return Ok(Response::from_parts(
                    parts,
                    ProxyBody::Upstream(UpstreamBody {
                        inner: body,
                        sender: Some(sender),
                        guard: Some(guard),
                        log,
                        bytes: 0,
                        failed: false,
                    }),
                ));
            }
        }
    }
}

fn note_retry(pool: &Pool, server: &Server, tried: &mut Vec<usize>, idx: usize) {
    server.state.retries.fetch_add(1, Ordering::Relaxed);
    pool.shared.retries.fetch_add(1, Ordering::Relaxed);
    tried.push(idx);
}

enum Buffered {
    Bytes(Bytes),
    Stream(Incoming),
}

/// Reads the whole body when the request may be replayed and its size is known and
/// within `retry_buffer`; otherwise leaves it streaming.
async fn buffer_if_small(body: Incoming, replayable: bool, pool: &Pool) -> Result<Buffered, ()> {
    if !replayable {
        return Ok(Buffered::Stream(body));
    }
    if body.is_end_stream() {
        return Ok(Buffered::Bytes(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= pool.retry.buffer => {
            match tokio::time::timeout(pool.server_timeout, body.collect()).await {
                Ok(Ok(c)) => Ok(Buffered::Bytes(c.to_bytes())),
                _ => Err(()),
            }
        }
        _ => Ok(Buffered::Stream(body)),
    }
}

/// A request kept for replay on another server.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    fn new(parts: &Parts, body: Bytes) -> Replay {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body,
        }
    }

    fn request(&self) -> Request<ReqBody> {
        let mut r = Request::new(ReqBody::Full(Some(self.body.clone())));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

fn route(ctx: &ConnCtx, req: &Request<Incoming>) -> Option<Arc<Pool>> {
    let snap = ctx.shared.snapshot.load();
    let listener = snap.listeners.get(ctx.listener)?;
    let idx = listener.router.route(request_host(req), req.uri().path());
    snap.pools.get(idx).cloned()
}

/// The Host header, or the URI's authority (HTTP/2, absolute-form).
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn hash_key<B>(key: &HashKey, req: &Request<B>, ip: IpAddr) -> u64 {
    match key {
        HashKey::ClientIp => hash_ip(ip),
        HashKey::Uri => hash_parts(&[req
            .uri()
            .path_and_query()
            .map_or(b"/".as_slice(), |p| p.as_str().as_bytes())]),
        HashKey::Header(h) => match req.headers().get(h) {
            Some(v) => hash_parts(&[v.as_bytes()]),
            None => hash_ip(ip),
        },
    }
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash_parts(&[&v4.octets()]),
        IpAddr::V6(v6) => hash_parts(&[&v6.octets()]),
    }
}

fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers, including any header the Connection header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// Rewrites a client request into what the backend gets: HTTP/1.1, origin-form URI,
/// no hop-by-hop headers (but the upgrade handshake when tunnelling), X-Forwarded-*.
fn prepare_request(parts: &mut Parts, ctx: &ConnCtx, upgrade: bool) {
    let h = &mut parts.headers;
    let upgrade_value = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(h);
    if let Some(v) = upgrade_value {
        h.insert(header::UPGRADE, v);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    // HTTP/2 and absolute-form requests carry the host in the URI.
    if parts.uri.authority().is_some() {
        if !h.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    h.insert(header::HOST, v);
                }
            }
        }
        parts.uri = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;

    match h.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ctx.peer_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ctx.peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR, ctx.peer_ip.clone());
        }
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(X_FORWARDED_HOST, host);
    }
}

/// The single place a failed request becomes a response: counted, logged, answered.
fn fail(
    pool: &Pool,
    server: Option<&Server>,
    err: ProxyError,
    log: Option<Box<ReqLog>>,
) -> Response<ProxyBody> {
    err.count_pool(pool);
    let status = err.status();
    tracing::debug!(pool = %pool.name, error = %err, "request failed");
    if let Some(mut l) = log {
        l.status = status.as_u16();
        if let Some(s) = server {
            l.server = Some(Arc::clone(&s.id));
        }
        l.finish(0, err.end());
    }
    let mut resp = plain(status, err.body(&pool.name));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
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

/// WebSocket (or any Upgrade) tunnel: copies bytes both ways until both sides close.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    guard: ServerGuard,
    log: Option<Box<ReqLog>>,
    idle: Duration,
) {
    let (c, s) = match tokio::try_join!(client, server) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            if let Some(l) = log {
                l.finish(0, End::ClientAbort);
            }
            return;
        }
    };
    let mut c = TokioIo::new(c);
    let mut s = TokioIo::new(s);
    let out = super::tcp::relay(&mut c, &mut s, idle).await;
    let st = &guard.server().state;
    st.bytes_in.fetch_add(out.a_to_b, Ordering::Relaxed);
    st.bytes_out.fetch_add(out.b_to_a, Ordering::Relaxed);
    if let Some(l) = log {
        let end = match out.end {
            End::Ok => End::Upgraded,
            other => other,
        };
        l.finish(out.b_to_a, end);
    }
    drop(guard);
}

/// What one request's access log line needs, gathered as the request goes.
struct ReqLog {
    ctx_shared: Arc<Shared>,
    client: SocketAddr,
    listener: Arc<str>,
    pool: Arc<str>,
    server: Option<Arc<str>>,
    method: Method,
    path: String,
    status: u16,
    connect: Option<Duration>,
    start: Instant,
    /// Request body bytes sent to the server, counted by `ReqBody`.
    bytes_in: Arc<AtomicU64>,
}

impl ReqLog {
    fn new<B>(ctx: &ConnCtx, req: &Request<B>, pool: &Pool, start: Instant) -> ReqLog {
        ReqLog {
            ctx_shared: Arc::clone(&ctx.shared),
            client: ctx.peer,
            listener: Arc::clone(&ctx.listener_name),
            pool: Arc::clone(&pool.name),
            server: None,
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            status: 0,
            connect: None,
            start,
            bytes_in: Arc::default(),
        }
    }

    fn finish(&self, bytes_out: u64, end: End) {
        self.ctx_shared.access_log.write(&Entry {
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
            total: self.start.elapsed(),
            end,
        });
    }
}

/// A response body as sent to the client.
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(o) => Poll::Ready(o.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.inner.is_end_stream(),
            ProxyBody::Full(o) => o.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.inner.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// A backend's response body on its way to the client. When it has been read to the
/// end, the backend connection goes back to the idle pool; if the client goes away
/// first, the connection (which still has unread data) is closed.
pub struct UpstreamBody {
    inner: Incoming,
    sender: Option<Sender>,
    guard: Option<ServerGuard>,
    log: Option<Box<ReqLog>>,
    bytes: u64,
    failed: bool,
}

impl UpstreamBody {
    fn finish(&mut self, complete: bool) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if complete {
            if let Some(sender) = self.sender.take() {
                let pool = guard.pool();
                upstream::checkin(
                    guard.server().state.uid,
                    pool.max_idle_per_server,
                    pool.keepalive_timeout,
                    sender,
                );
            }
        } else {
            self.sender = None;
        }
        if let Some(l) = self.log.take() {
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(d), Some(g)) = (frame.data_ref(), &this.guard) {
                    this.bytes += d.len() as u64;
                    g.server()
                        .state
                        .bytes_out
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.failed = true;
                if let Some(g) = &this.guard {
                    g.server()
                        .state
                        .response_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                this.finish(false);
                Poll::Ready(Some(Err(e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upgrade_detection() {
        let req = Request::builder()
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade_request(&req));
        let req = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade_request(&req));
    }
}
