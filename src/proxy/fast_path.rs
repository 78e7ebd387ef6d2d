//! The HTTP/1.1 fast path: a client connection is served by one task that parses
//! each request head, writes it to a pooled plain backend socket, and copies the
//! response back, head rewritten and body passed through as it came. Nothing is
//! spawned, no channel is crossed and no `HeaderMap` is built (crate::h1 does the
//! parsing and rewriting).
//!
//! It takes HTTP/1.1 requests without a body or with a short one of a plain
//! Content-Length (`INLINE_BODY`, read whole with the head): GET, HEAD, DELETE,
//! API POSTs and the like, most of a typical load. The first request it does
//! not take (a chunked or longer body, an upgrade, `Expect`, HTTP/1.0, an
//! HTTP/2 preface) hands the connection to hyper for the
//! rest of its life, with the bytes already read replayed in front
//! ((`io::Prefixed`); http.rs serves it from there with the same routing, retries
//! and accounting.

use super::body::{plain, ProxyBody, ReqLog};
use super::conn::ConnCtx;
use super::http;
use super::io::Prefixed;
use super::io::{ClientIo, ClientSocket, Write};
use super::lifecycle::{self, Decision, Lifecycle};
use super::splice::{self, Spliced};
use super::RequestFault;
use crate::accesslog::End;
use crate::h1::{self, BodyProgress, Framing, HeadError, PooledBuf};
use crate::pool::{Pool, ServerGuard};
use crate::rules::{RequestView, RuleEdits};
use crate::snapshot::ServerBuilders;
use crate::upstream::{self, RawExchange, UpstreamError};
use ::http::{Method, Response};
use bytes::Bytes;
use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a complete request head (or connection preface) calls for.
enum Step {
    /// An HTTP/2 connection preface (prior knowledge).
    H2,
    /// A request the fast path does not take.
    Fallback(&'static str),
    /// A request refused for what the client sent: answer and close (and
    /// log how long it was awaited).
    Reject(RequestFault, Option<Duration>),
    /// The client closed before its body's end (after this long): it left,
    /// as on hyper's path: answered 400 in case it still reads, logged
    /// `client_abort`, not counted as its fault.
    Left(Option<Duration>),
    /// A request answered by the proxy itself.
    Answer {
        len: usize,
        resp: Box<Response<ProxyBody>>,
        head: bool,
        close: bool,
    },
    Proxy(Prepared),
}

/// A request ready to go to its pool.
struct Prepared {
    /// Length of its head and body in the client buffer.
    len: usize,
    /// Length of its body (sent with the head, in `wire`; at most
    /// `INLINE_BODY`: u32 keeps the connection's future small).
    body: u32,
    pool: Arc<Pool>,
    key: u64,
    priority: crate::rules::Priority,
    replayable: bool,
    head: bool,
    close: bool,
    log: Option<Box<ReqLog>>,
    /// The request as the backend gets it.
    wire: PooledBuf,
    start: Instant,
    /// The header edits of the rules that matched (the response's apply later).
    edits: Option<RuleEdits>,
}

/// What rules see of a request on the fast path (path and bare host computed
/// once, not per rule).
struct View<'a, 'b> {
    r: &'a h1::ReqHead<'b>,
    src: std::net::IpAddr,
    /// What rules and routes match (`router::normalize_path`).
    path: std::borrow::Cow<'a, str>,
    raw_path: &'a str,
    bare_host: Option<&'a str>,
}

impl RequestView for View<'_, '_> {
    fn method(&self) -> &str {
        self.r.method
    }
    fn host(&self) -> Option<&str> {
        self.r.host
    }
    fn target(&self) -> &str {
        self.r.target
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.r.header(name)
    }
    fn src(&self) -> std::net::IpAddr {
        self.src
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn raw_path(&self) -> &str {
        self.raw_path
    }
    fn bare_host(&self) -> Option<&str> {
        self.bare_host
    }
    fn declared_body(&self) -> u64 {
        self.r.body
    }
}

/// Serves one HTTP client connection until it closes, or until `graceful` is
/// cancelled, after which in-flight requests finish and the connection closes.
/// HTTP/1.1 requests start here; the connection is handed to hyper
/// (`http::serve_h2`, `http::serve_h1`) for HTTP/2 and for requests the fast
/// path does not take.
///
/// A connection that was parked (`park`) is served again from here too, its
/// request head due when it was due before (`ConnCtx::resumed`).
pub async fn serve<S: ClientIo>(
    mut client: S,
    ctx: Arc<ConnCtx>,
    builders: Arc<ServerBuilders>,
    graceful: CancellationToken,
) {
    // Bytes read from the client and not consumed yet. None while there are none,
    // so an idle connection holds no buffer.
    let mut buf: Option<PooledBuf> = None;
    let mut first = true;
    // Whether this task has served a request: only then may it park (a new
    // connection's first request may be an HTTP/2 preface, and a parked one
    // comes back as one that had a request; one served again after parking
    // waits for its request as a task, or its first wait, whose readiness
    // is not known yet, would park it again at once).
    let mut served = false;
    // Cleared when this connection cannot be parked (see `park`).
    let mut parkable = S::PARKABLE;
    // The connection's one timer, for its waits for a request and its
    // servers' answers, one after the other (`clock::by`): a timer each
    // was made, put in the runtime's wheel and taken out again twice a
    // request.
    let timer = crate::clock::timer();
    tokio::pin!(timer);
    loop {
        // The request head must be complete within request_header_timeout of
        // the end of the previous response (hyper's rule as well, which also
        // bounds keep-alive idleness). A parked connection served again: when
        // it was due before it was parked.
        let now = tokio::time::Instant::now();
        let mut deadline = match ctx.resumed() {
            Some(left) => {
                first = false;
                now + left
            }
            None => now + builders.header_timeout,
        };
        let mut lingering = false;
        // Whether this request's first bytes were acknowledged at once
        // (`ClientIo::ack_now`).
        let mut acked = false;
        // When the head is in and its body is awaited: the length of both.
        // Each wait for the body is bounded by client_timeout (a pause, not a
        // rate, as on hyper's path for a body it streams).
        // (u32: a future as small as can be; a head and a short body are far
        // below 4 GiB)
        let mut body_wait: Option<NonZeroU32> = None;
        // Milliseconds this request had been awaited when `deadline` was last
        // set for its body (the log of a refusal: a u32, not an Instant, keeps
        // the future small).
        let mut waited_ms: u32 = 0;
        let step = loop {
            if let Some(b) = buf.as_deref().filter(|b| !b.is_empty()) {
                // whether `deadline` is set for the body already (or the head's)
                let for_body = body_wait.is_some();
                let start = &b[..b.len().min(H2_PREFACE.len())];
                // (over TLS only where ALPN chose h2: a listener whose alpn
                // leaves h2 out serves HTTP/1.1 alone)
                if first
                    && H2_PREFACE.starts_with(start)
                    && ctx.tls.as_ref().is_none_or(|t| t.alpn_h2)
                {
                    if start.len() == H2_PREFACE.len() {
                        break Step::H2;
                    }
                } else if body_wait.is_none_or(|whole| b.len() >= whole.get() as usize) {
                    // (the head is parsed again only once its body is all in)
                    if let Some(mut s) = prepare(&ctx, b, &mut body_wait) {
                        if let Step::Reject(_, total) = &mut s {
                            // a head refused: `deadline` is still the head's
                            // (unless a drain shortened it: then not known)
                            *total =
                                (!lingering).then(|| since_set(deadline, builders.header_timeout));
                        }
                        break s;
                    }
                }
                if body_wait.is_some() {
                    // read on, for client_timeout from now
                    let set = if for_body {
                        builders.client_timeout
                    } else {
                        builders.header_timeout
                    };
                    let ms = since_set(deadline, set).as_millis();
                    waited_ms = waited_ms.saturating_add(u32::try_from(ms).unwrap_or(u32::MAX));
                    deadline = tokio::time::Instant::now() + builders.client_timeout;
                }
            }
            if buf
                .as_deref()
                .is_some_and(|b| b.iter().all(|&c| c == b'\r' || c == b'\n'))
            {
                // blank lines between requests (RFC 9112 2.2: ignored, as
                // hyper does): an idle connection, holding no buffer
                buf = None;
            }
            let idle = buf.is_none();
            if !idle && !acked {
                // Part of a request is in and the rest is awaited. The listener
                // delays acknowledgements, so that a request's is carried by its
                // answer (`listener`, `quickack`); a client that holds its next
                // bytes until these are acknowledged (Nagle's algorithm) must
                // not wait for the delayed-ACK timer (40 ms) for it.
                client.ack_now();
                acked = true;
            }
            // Wait for readability with no buffer held, then read. Both steps
            // are under the shutdown check: readiness can be stale (a read
            // then finds nothing and waits), and an idle connection must still
            // close at once on shutdown.
            let read = async {
                std::future::poll_fn(|cx| client.poll_readable(cx)).await?;
                let b = buf.get_or_insert_with(PooledBuf::take);
                if b.len() == b.capacity() {
                    b.reserve(h1::BUF_SIZE);
                }
                // read_buf (unlike try_read) clears the readiness after a short
                // read, so the next wait does not start with a read that finds
                // nothing.
                client.read_buf(&mut **b).await
            };
            // an idle connection is parked after park_idle_after
            let park = idle && !lingering && parkable && served;
            let wake = park_at(&builders, deadline)
                .filter(|_| park)
                .unwrap_or(deadline);
            tokio::select! {
                biased;
                _ = graceful.cancelled(), if idle && !lingering => {
                    // Draining: a request that is on its way is still served
                    // (its answer says Connection: close); an idle connection
                    // closes after a short linger.
                    lingering = true;
                    deadline = deadline.min(tokio::time::Instant::now() + super::DRAIN_LINGER);
                    continue;
                }
                r = crate::clock::by(read, timer.as_mut(), wake) => match r {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        // a new connection's request has not come yet: it
                        // waits registered, and without a buffer
                        consume(&mut buf, 0);
                        continue;
                    }
                    Ok(r) if body_wait.is_some() && r.as_ref().map_or_else(client_left, |n| *n == 0) => {
                        // (not known when a drain's linger set the deadline)
                        let total = (!lingering).then(|| {
                            Duration::from_millis(u64::from(waited_ms))
                                + since_set(deadline, builders.client_timeout)
                        });
                        break Step::Left(total);
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(_)) => {}
                    Err(_) if park && park_at(&builders, deadline).is_some() => {
                        // idle for park_idle_after: the task ends here, the
                        // connection waits in the worker's parker
                        let Some(parker) = super::park::parker_for(&ctx, &graceful, serve_again)
                        else {
                            // served on as it is, and not offered again
                            tracing::trace!(peer = %ctx.peer, "idle connection not parked");
                            parkable = false;
                            continue;
                        };
                        match client.into_plain() {
                            Ok(plain) => {
                                parker.park(plain, ctx, builders, graceful, deadline);
                                return;
                            }
                            Err(back) => {
                                client = back;
                                parkable = false;
                                continue;
                            }
                        }
                    }
                    Err(_) if body_wait.is_some() => {
                        // as hyper's path answers a body that paused this long
                        tracing::debug!(peer = %ctx.peer, "request body paused for client_timeout");
                        let total = Duration::from_millis(u64::from(waited_ms))
                            + builders.client_timeout;
                        break Step::Reject(RequestFault::BodyTimeout, Some(total));
                    }
                    Err(_) if !idle && !lingering => {
                        // part of a head: answered, as HAProxy does
                        tracing::debug!(peer = %ctx.peer, "no complete request head in time");
                        let total = since_set(deadline, builders.header_timeout);
                        break Step::Reject(RequestFault::HeadTimeout, Some(total));
                    }
                    Err(_) => {
                        // nothing came (a browser's spare connection, or the
                        // keep-alive's end), or a drain's linger is over:
                        // closed without a word, as hyper does
                        tracing::debug!(peer = %ctx.peer, "no request in time; closed");
                        return;
                    }
                },
            }
        };
        first = false;
        served = true;
        let keep = match step {
            Step::H2 | Step::Fallback(_) => {
                if let Step::Fallback(why) = step {
                    tracing::trace!(peer = %ctx.peer, why, "request handed to hyper");
                }
                if !acked {
                    // hyper serves the connection from here on, bodies included:
                    // it gets Linux's acknowledgements back
                    client.ack_now();
                }
                let h2 = matches!(step, Step::H2);
                let io = Prefixed::new(
                    buf.take(),
                    client,
                    Arc::clone(&ctx),
                    builders.client_timeout,
                );
                // Boxed, as is `proxy` below: this task's own future then stays
                // small, which is what an idle connection costs.
                // (through `crate::boxed`: hyper's HTTP/1 connection is made in
                // its box; the HTTP/2 server's making allocates, so it is still
                // copied there, once a connection)
                if h2 {
                    crate::boxed::pin(|| http::serve_h2(io, ctx, &builders, graceful)).await;
                } else {
                    crate::boxed::pin(|| http::serve_h1(io, ctx, &builders, graceful)).await;
                }
                return;
            }
            // the proxy's own answers are boxed too: a response inline would
            // make every idle connection's future as big as one
            Step::Reject(fault, total) => {
                let read = buf.as_deref().map(|b| &b[..]);
                crate::boxed::pin(|| {
                    refuse(&mut client, &ctx, Some(fault), read, total, &builders)
                })
                .await;
                return;
            }
            Step::Left(total) => {
                let read = buf.as_deref().map(|b| &b[..]);
                crate::boxed::pin(|| refuse(&mut client, &ctx, None, read, total, &builders)).await;
                return;
            }
            Step::Answer {
                len,
                resp,
                head,
                close,
            } => {
                consume(&mut buf, len);
                let close = close || graceful.is_cancelled();
                ctx.responded(resp.status().as_u16());
                let resp = http::error_page(&ctx, *resp);
                crate::boxed::pin(|| {
                    respond(&mut client, resp, head, close, builders.client_timeout)
                })
                .await
            }
            Step::Proxy(p) => {
                consume(&mut buf, p.len);
                // (made in its box, not copied there: `crate::boxed`; 1.9 KB
                // a request)
                crate::boxed::pin(|| {
                    let timeout = builders.client_timeout;
                    proxy(&mut client, p, &ctx, &graceful, timeout, timer.as_mut())
                })
                .await
            }
        };
        if !keep {
            client.close().await;
            return;
        }
    }
}

/// Makes the current worker's parker of idle connections (`park`); called
/// once as each worker starts.
pub fn start_parker() {
    super::park::start(serve_again);
}

/// A parked connection, served again in a task of its own (`park::ServeAgain`).
fn serve_again(
    stream: std::net::TcpStream,
    ctx: Arc<ConnCtx>,
    builders: Arc<ServerBuilders>,
    graceful: CancellationToken,
) -> tokio::task::AbortHandle {
    let tracker = ctx.shared.tracker.clone();
    // (boxed, as `accept_loop`'s connections are: tokio copies an unboxed
    // future from stage to stage of its task)
    tracker
        .spawn(crate::boxed::pin(|| {
            serve(ClientSocket::new(stream), ctx, builders, graceful)
        }))
        .abort_handle()
}

/// When a connection idle since its last response (its request head due by
/// `deadline`) is parked: None, not before it is closed.
fn park_at(b: &ServerBuilders, deadline: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let since = deadline.checked_sub(b.header_timeout)?;
    b.park_after.map(|p| since + p).filter(|t| *t < deadline)
}

/// Answers a request refused for what the client sent (`fault`), logs and
/// counts it, and closes the connection; with no fault, a client that left
/// before its body's end (`Step::Left`), answered and logged as hyper's path
/// does (`super::refusal`). `buf`: what was read of it.
async fn refuse<S: ClientIo>(
    client: &mut S,
    ctx: &ConnCtx,
    fault: Option<RequestFault>,
    buf: Option<&[u8]>,
    total: Option<Duration>,
    builders: &ServerBuilders,
) {
    let (status, text, end) = super::refusal(fault);
    // a body that stopped coming, or whose client left, had a head: its
    // method and target are logged
    let mut slots = h1::header_slots();
    let head = match (fault, buf) {
        (None | Some(RequestFault::BodyTimeout | RequestFault::BodyTooLarge), Some(b)) => {
            h1::parse_request(b, &mut slots).ok().flatten()
        }
        _ => None,
    };
    let req = head.as_ref().map(|r| (r.method, r.target));
    // (logged with the client `client_ip_from` believes, when the head
    // that names it was read)
    let src = head.as_ref().map_or(ctx.peer.ip(), |r| {
        ctx.permits
            .listener()
            .request_client(ctx.peer.ip(), || r.fields())
    });
    match fault {
        Some(f) => ctx.refused_from(src, f, status.as_u16(), req, total),
        None => ctx.unserved_from(src, end, status.as_u16(), req, total),
    }
    ctx.responded(status.as_u16());
    respond(
        client,
        http::error_page(ctx, plain(status, text)),
        false,
        true,
        builders.client_timeout,
    )
    .await;
    if fault == Some(RequestFault::BodyTooLarge) {
        linger(client).await;
    }
    client.close().await;
}

/// After a refusal that leaves the request's body unread (413): what the
/// client goes on sending is read and dropped, until it stops (its end, or
/// a second without a byte), for at most 5 s and 16 MiB. Closing a socket
/// with unread bytes resets the connection, and a reset can reach the
/// client before it read the answer (nginx's lingering close).
async fn linger<S: ClientIo>(client: &mut S) {
    let mut buf = vec![0u8; 16 * 1024];
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut left: usize = 16 << 20;
    while left > 0 {
        let wait = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(wait, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Whether a read error is the client leaving (a reset, a TLS session that
/// broke), rather than this side failing to wait for it (`NotConnected`:
/// the socket could not be registered).
fn client_left(e: &io::Error) -> bool {
    e.kind() != io::ErrorKind::NotConnected
}

/// How long ago `deadline` was set, `set` ahead of then.
fn since_set(deadline: tokio::time::Instant, set: Duration) -> Duration {
    deadline
        .checked_sub(set)
        .map_or(Duration::ZERO, |t| t.elapsed())
}

fn consume(buf: &mut Option<PooledBuf>, len: usize) {
    if let Some(b) = buf {
        let n = len.min(b.len());
        b.drain(..n);
        if b.is_empty() {
            *buf = None;
        }
    }
}

/// Parses the request at the start of `b` and, when the fast path takes it,
/// routes it and writes it in the form the backend gets. `None`: the head is not
/// complete yet, or its body is not (`body_wait` then says where it ends).
fn prepare(ctx: &ConnCtx, b: &[u8], body_wait: &mut Option<NonZeroU32>) -> Option<Step> {
    let mut slots = h1::header_slots();
    let r = match h1::parse_request(b, &mut slots) {
        Ok(None) => return None,
        Ok(Some(r)) => r,
        // (how long it was awaited: set by the caller)
        Err(HeadError::TooLarge) => return Some(Step::Reject(RequestFault::HeadTooLarge, None)),
        Err(HeadError::Invalid(_)) => return Some(Step::Reject(RequestFault::MalformedHead, None)),
    };
    // A declared body over max_request_body (the most any rule allows) is
    // refused here, before any of it is read (with `Expect: 100-continue`,
    // hyper's path does it, without a 100); what the client goes on sending
    // is read and dropped before the close (`linger`).
    // (not for a head hyper's path refuses or answers otherwise: Expect,
    // Transfer-Encoding, Upgrade, a missing Host)
    let plain_head = matches!(
        r.fallback,
        None | Some("HTTP/1.0" | "absolute-form or asterisk target")
    );
    if r.body > 0 && plain_head {
        let max = ctx
            .permits
            .listener()
            .max_request_body
            .load(Ordering::Relaxed);
        if max > 0 && r.body > max {
            return Some(Step::Reject(RequestFault::BodyTooLarge, None));
        }
    }
    if let Some(why) = r.fallback {
        return Some(Step::Fallback(why));
    }
    // the answer may be gzipped, or say it varies by Accept-Encoding: hyper's
    // path streams it through the encoder (a HEAD's is left as it is)
    if r.method != "HEAD" && ctx.permits.listener().compression.is_set() {
        return Some(Step::Fallback("compression"));
    }
    if ctx.tls.as_ref().is_some_and(|t| t.subject_header.is_some()) {
        // hyper's path writes (and strips) the client certificate header
        return Some(Step::Fallback("client certificate header"));
    }
    // A short body is read whole before the request goes on, as part of it;
    // a longer one streams through hyper's path.
    if r.body > INLINE_BODY {
        return Some(Step::Fallback("request body longer than 16 KiB"));
    }
    let whole = r.len + r.body as usize;
    if b.len() < whole {
        // (whole > b.len() >= 0, and at most MAX_HEAD + INLINE_BODY)
        *body_wait = u32::try_from(whole).ok().and_then(NonZeroU32::new);
        return None;
    }
    let start = Instant::now();
    let raw_path = r.path();
    let Some(path) = crate::router::normalize_path(raw_path) else {
        return Some(Step::Reject(RequestFault::MalformedHead, None));
    };
    // (the client a trusted proxy names, with `client_ip_from`)
    let src = ctx
        .permits
        .listener()
        .request_client(ctx.peer.ip(), || r.fields());
    let view = View {
        r: &r,
        src,
        path,
        raw_path,
        bare_host: r.host.map(crate::router::strip_port),
    };
    let answer = |resp: Response<ProxyBody>| {
        Some(Step::Answer {
            len: whole,
            resp: Box::new(resp),
            head: r.method == "HEAD",
            close: r.close(),
        })
    };
    // TLS to the servers, connections private to one client (they carry its
    // PROXY header), HTTP/2 servers and persistence cookies are the other path's: this one shares
    // plain HTTP/1.1 sockets. Decided before any limit is charged: the other
    // path decides again.
    // Persistence by a cookie reads and edits fields this path passes as
    // they are: hyper's path serves those pools too.
    // A gRPC call (gRPC-Web, over HTTP/1.1) is the other path's too: its
    // errors are gRPC statuses, and its deadline may be read there.
    if r.grpc {
        return Some(Step::Fallback("a gRPC call"));
    }
    let plain_pool = |p: &Pool| {
        p.tls.is_none()
            && p.send_proxy.is_none()
            && p.protocol != crate::config::Protocol::H2
            && p.persist.is_none()
    };
    let (pool, edits, priority) = match lifecycle::decide(
        &ctx.shared.plane,
        ctx.permits.listener(),
        ctx.shared.bound,
        &view,
        plain_pool,
    ) {
        // (a body over the limit the rules set: the listener's was checked
        // before the body was read)
        Decision::TooLarge => return Some(Step::Reject(RequestFault::BodyTooLarge, None)),
        Decision::Pool {
            pool,
            edits,
            priority,
            ..
        } => (pool, edits, priority),
        Decision::Elsewhere => {
            return Some(Step::Fallback(
                "TLS, PROXY protocol, HTTP/2 or a persistence cookie to the server",
            ))
        }
        Decision::Reconfiguring => return answer(http::reconfiguring()),
        d @ (Decision::Deny { .. }
        | Decision::Redirect { .. }
        | Decision::Respond { .. }
        | Decision::ReadOnly { .. }
        | Decision::Limited { .. }) => {
            return answer(http::decided(d, ctx, src, r.method, r.target, start))
        }
    };
    // (the balancing key is the target the server gets, as HAProxy's
    // `balance uri` after a `set-path`)
    let target = edits.as_ref().and_then(|e| e.target.as_deref());
    let key = lifecycle::hash_key(&pool, src, target.unwrap_or(r.target), |h| {
        r.header(h.as_str())
    });
    let log = ctx.shared.plane.access_log.enabled().then(|| {
        // httparse accepted the method as a token, which is all Method needs.
        let method = Method::from_bytes(r.method.as_bytes()).unwrap_or_default();
        Box::new(ReqLog::new(
            ctx,
            src,
            method,
            r.target.to_string(),
            &pool,
            start,
        ))
    });
    let mut wire = PooledBuf::take();
    let real_ip = ctx.permits.listener().client_ip_header.load();
    let src_text = (src != ctx.peer.ip()).then(|| super::conn::IpText::new(src));
    r.write_upstream(
        src_text
            .as_ref()
            .map_or(ctx.peer_ip.as_bytes(), super::conn::IpText::as_bytes),
        ctx.shared.proto,
        real_ip.get(),
        edits.as_ref(),
        &mut wire,
    );
    wire.extend_from_slice(&b[r.len..whole]);
    if let Some(l) = log.as_ref() {
        l.bytes_in.store(r.body, Ordering::Relaxed);
    }
    Some(Step::Proxy(Prepared {
        edits,
        len: whole,
        body: r.body as u32,
        // a body longer than retry_buffer is not sent twice, as on hyper's path
        replayable: (r.idempotent() || pool.retry.non_idempotent) && r.body <= pool.retry.buffer,
        head: r.method == "HEAD",
        close: r.close(),
        pool,
        key,
        priority,
        log,
        wire,
        start,
    }))
}

/// The start of a backend's answer, ready for the client.
struct RespStart {
    /// Length of the backend's head in the response buffer.
    len: usize,
    status: u16,
    reusable: bool,
    keepalive: Option<Duration>,
    close_client: bool,
    /// The head as the client gets it.
    head: PooledBuf,
    /// The body's framing (`Close`: until the server closes), having taken
    /// the bytes read with the head.
    body: BodyProgress,
    /// Of those bytes, how many belong to the body, and whether it is
    /// complete after them (`BodyProgress::feed`).
    first: (usize, bool),
}

fn read_response_start(
    buf: &[u8],
    addr: std::net::SocketAddr,
    head_request: bool,
    close: bool,
    edits: Option<&RuleEdits>,
) -> Result<RespStart, UpstreamError> {
    let mut slots = h1::header_slots();
    let bad = |reason: String| UpstreamError::BadResponse { addr, reason };
    match h1::parse_response(buf, &mut slots, head_request) {
        Ok(Some(r)) if r.status == 101 => Err(UpstreamError::Unexpected101 { addr }),
        Ok(Some(r)) => {
            // A body whose framing is broken in the bytes read with its head
            // is refused before anything reaches the client, as an invalid
            // head is: the client gets a 502 (or a retry), not a cut answer.
            let mut body = BodyProgress::new(r.framing);
            let first = body.feed(&buf[r.len..]).map_err(|e| bad(e.to_string()))?;
            let close_client = close || r.framing == Framing::Close;
            let mut head = PooledBuf::take();
            r.write_client(close_client, edits, &mut head);
            Ok(RespStart {
                len: r.len,
                status: r.status,
                reusable: r.reusable,
                keepalive: r.keepalive,
                close_client,
                head,
                body,
                first,
            })
        }
        Ok(None) => Err(bad("incomplete response head".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The longest request body the fast path takes (read whole with its head);
/// longer ones go to hyper's path, which streams them. On hyper's path a
/// keep-alive POST of 1 KiB cost 1.16x HAProxy's CPU a request and 32,671
/// instructions (15,813 here; bench/RESULTS.md); one of 64 KiB, 1.03x its CPU
/// (one round, a session script), so above this size the fixed cost matters
/// less than the copies.
const INLINE_BODY: u64 = h1::BUF_SIZE as u64;

/// A response body with at least this much left, once a read has filled the
/// buffer, is spliced to a plain client: below it, the pipe's own system calls
/// (pipe2, fcntl, two closes) cost more than the copies they save.
const SPLICE_MIN: u64 = 64 * 1024;

/// Sends one request to its pool (retrying on other servers as configured) and
/// the answer to the client. Returns whether the client connection stays open.
///
/// While it waits for a server slot and for the response head, a client that
/// closes its connection abandons the request (as on the hyper path): its slot is
/// freed, the backend connection dropped and the access log says client_abort.
async fn proxy<S: ClientIo>(
    client: &mut S,
    p: Prepared,
    ctx: &ConnCtx,
    graceful: &CancellationToken,
    client_timeout: Duration,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> bool {
    let Prepared {
        mut pool,
        key,
        priority,
        replayable,
        head,
        close,
        mut log,
        wire,
        start,
        edits,
        body,
        ..
    } = p;
    // Decided when the answer is written: a shutdown that starts while the
    // request is in flight still gets `Connection: close` to the client.
    let closing = || close || graceful.is_cancelled();
    let mut lc = Lifecycle::new(Arc::clone(&pool), key, priority);
    loop {
        let acquired = tokio::select! {
            biased;
            g = lc.acquire() => g,
            () = client_gone(&mut *client) => return false,
        };
        let mut guard = match acquired {
            Ok(g) => g,
            Err(g) => {
                let resp = http::fail(&lc.pool, g.server(&lc.pool), g.err, log, start);
                let resp = http::error_page(ctx, resp);
                ctx.responded(resp.status().as_u16());
                return respond(client, resp, head, closing(), client_timeout).await;
            }
        };
        // a request that waited in the queue through a change of the pool
        // holds a slot in the pool in force
        if !Arc::ptr_eq(guard.pool(), &pool) {
            pool = Arc::clone(guard.pool());
        }
        let server = &pool.servers[guard.index()];
        let sent = tokio::select! {
            biased;
            r = upstream::send_raw(&pool, server, [&wire, &[]], replayable, timer.as_mut()) => r,
            () = client_gone(&mut *client) => return false,
        };
        // An invalid response head (or a body broken in the bytes read with
        // it) counts, and is retried, as a reset would be.
        let exchange = sent.and_then(|ex| {
            let resp = read_response_start(&ex.buf, server.addr, head, closing(), edits.as_ref())?;
            Ok((ex, resp))
        });
        let (ex, resp) = match exchange {
            Ok(r) => r,
            Err(error) => {
                // Nothing was sent after a connect failure: any request can go again.
                let resendable = error.is_connect();
                if let Err(g) = lc.failed(&mut guard, error, resendable, replayable) {
                    let resp = http::fail(&lc.pool, g.server(&lc.pool), g.err, log, start);
                    let resp = http::error_page(ctx, resp);
                    ctx.responded(resp.status().as_u16());
                    return respond(client, resp, head, closing(), client_timeout).await;
                }
                continue;
            }
        };
        if body > 0 {
            let traffic = &server.state.traffic;
            traffic
                .bytes_in
                .fetch_add(u64::from(body), Ordering::Relaxed);
        }
        let status = resp.status;
        if lc.answered(&mut guard, status, replayable) {
            // The response (and its connection, body unread) is dropped.
            continue;
        }
        ctx.responded(status);
        if let Some(l) = log.as_mut() {
            l.server = Some(Arc::clone(&server.id));
            l.connect = Some(ex.connect_time);
            l.status = status;
        }
        let keepalive = pool.keepalive_for(resp.keepalive);
        let timeouts = (keepalive, client_timeout);
        return forward(client, ex, resp, guard, log, start, timeouts).await;
    }
}

/// Copies the response to the client: the head, then the body as it comes, until
/// its framing says it is complete. The backend connection goes back to the pool
/// only if the body ended exactly where its framing said.
async fn forward<S: ClientIo>(
    client: &mut S,
    ex: RawExchange,
    resp: RespStart,
    guard: ServerGuard,
    log: Option<Box<ReqLog>>,
    start: Instant,
    (keepalive, client_timeout): (Duration, Duration),
) -> bool {
    let RawExchange {
        stream: mut backend,
        buf: mut rbuf,
        ..
    } = ex;
    let pool = guard.pool();
    let server = guard.server();
    let mut body = resp.body;
    let mut first = Some(resp.first);
    let mut head = Some(resp.head);
    let mut from = resp.len;
    let mut sent: u64 = 0;
    // Bytes after the end of the body: the connection is out of step; not reused.
    let mut clean = true;
    // Of `sent`, the bytes spliced; and whether splicing may be tried (the
    // pool's `splice`, until splice is refused).
    let mut spliced: u64 = 0;
    let mut splice_ok = pool.splice;
    let end = loop {
        let data = &rbuf[from..];
        let fed = match first.take() {
            Some(f) => Ok(f),
            None => body.feed(data),
        };
        let (n, complete) = match fed {
            Ok(r) => r,
            Err(_) => break End::ServerAbort,
        };
        clean &= n == data.len();
        let limit = client_timeout;
        let how = Write::of(&body, complete, resp.close_client);
        // The body bytes that came with the head go out with it: gathered
        // from where they lie by a plain socket; joined behind the head for
        // TLS, into one record, when they fit its buffer.
        let written = match head.take() {
            Some(mut h) if !S::GATHERS && h.len() + n <= h.capacity() => {
                h.extend_from_slice(&data[..n]);
                send_client(client, &h, limit, how).await
            }
            Some(h) => send_client_two(client, [&h, &data[..n]], limit, how).await,
            None => send_client(client, &data[..n], limit, how).await,
        };
        sent += n as u64;
        if written.is_err() {
            break End::ClientAbort;
        }
        if complete {
            break End::Ok;
        }
        // A long body between two plain sockets: once a read has filled the
        // buffer, the rest goes through a pipe (splice), as tcp mode's bulk does,
        // and not through this buffer.
        if splice_ok && rbuf.len() == rbuf.capacity() {
            let left = match body {
                BodyProgress::Length(l) if l >= SPLICE_MIN => Some(Some(l)),
                BodyProgress::Close => Some(None),
                _ => None,
            };
            if let (Some(left), Some(Ok(to))) = (left, client.plain_socket()) {
                // boxed: a future held only while splicing does not make every
                // connection's future larger
                let (how, moved) = crate::boxed::pin(|| {
                    splice::body(&backend, to, left, pool.server_timeout, client_timeout)
                })
                .await;
                sent += moved;
                spliced += moved;
                match how {
                    Spliced::Done => {
                        if resp.close_client {
                            // the connection's end goes out now, as after
                            // `write_last`, not when the socket is dropped
                            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
                        }
                        break End::Ok;
                    }
                    Spliced::ServerFailed => break End::ServerAbort,
                    Spliced::ClientFailed => break End::ClientAbort,
                    Spliced::Refused => {
                        splice_ok = false;
                        if let BodyProgress::Length(l) = &mut body {
                            *l -= moved;
                        }
                    }
                }
            }
        }
        rbuf.clear();
        from = 0;
        match tokio::time::timeout(pool.server_timeout, backend.read_buf(&mut *rbuf)).await {
            Ok(Ok(0)) if matches!(body, BodyProgress::Close) => break End::Ok,
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break End::ServerAbort,
            Ok(Ok(_)) => {}
        }
    };
    if end == End::ServerAbort {
        // (the connection then closes: `forward` says not to keep it)
        client.cut();
    }
    let st = &server.state;
    st.traffic.bytes_out.fetch_add(sent, Ordering::Relaxed);
    if spliced > 0 {
        crate::metrics::HTTP_SPLICED_BYTES.fetch_add(spliced, Ordering::Relaxed);
    }
    pool.shared
        .histograms
        .request_duration
        .observe(start.elapsed().as_secs_f64());
    if end == End::ServerAbort {
        st.traffic.response_errors.fetch_add(1, Ordering::Relaxed);
    }
    if end == End::Ok && clean && resp.reusable {
        upstream::checkin_raw(
            st,
            pool.conn_epoch,
            pool.max_idle_per_server,
            keepalive,
            backend,
        );
    }
    if let Some(mut l) = log {
        l.finish(sent, end);
    }
    end == End::Ok && !resp.close_client
}

/// Resolves when the client closes (or resets) its connection while its request
/// is in flight. Bytes it sent meanwhile (a pipelined request) are left where
/// they are; then this never resolves and the request simply goes on.
///
/// A client socket not yet registered with the reactor (a new connection whose
/// request came with it) is watched only once the request has been in flight
/// for one to two ticks of the worker's coarse timer (100 to 200 ms): a
/// request answered sooner, the usual case, never makes it register (an
/// `epoll_ctl` to add it and one to remove it) just to be watched.
async fn client_gone<S: ClientIo>(client: &mut S) {
    if !client.is_registered() {
        super::coarse::wait().await;
    }
    let Ok(client) = client.socket() else {
        return;
    };
    // No system call until the socket is flagged readable.
    if client.readable().await.is_err() {
        return;
    }
    match client.peek(&mut [0u8; 1]).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

impl Write {
    /// How bytes of a response body go out, once `body` has taken them.
    fn of(body: &BodyProgress, complete: bool, close_client: bool) -> Write {
        match body {
            // the connection's last bytes: its end goes with them
            _ if complete && close_client => Write::Last,
            // the framing says more of this body follows: these bytes may
            // wait for it, to go out together
            BodyProgress::Length(l) if *l > 0 => Write::More,
            // complete, or a stream (chunked, or until the server closes)
            // whose next bytes may be far off
            _ => Write::Now,
        }
    }
}

/// Writes to the client, as `how` says. A client that accepts nothing for
/// `limit` is given up on; the timer is armed only when the socket cannot take
/// everything at once.
async fn send_client<S: ClientIo>(
    client: &mut S,
    data: &[u8],
    limit: Duration,
    how: Write,
) -> io::Result<()> {
    let n = client.write(data, how)?;
    if n == data.len() && client.flushed() {
        return Ok(());
    }
    match tokio::time::timeout(limit, client.send_all(&data[n..])).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// As `send_client`, for two parts, the first before the second
/// (`ClientIo::write_two`): a plain socket takes both in one system call.
async fn send_client_two<S: ClientIo>(
    client: &mut S,
    parts: [&[u8]; 2],
    limit: Duration,
    how: Write,
) -> io::Result<()> {
    let n = client.write_two(parts, how)?;
    let [a, b] = parts;
    if n == a.len() + b.len() && client.flushed() {
        return Ok(());
    }
    let (a, b) = match a.get(n..) {
        Some(rest) => (rest, b),
        None => (&[][..], &b[n - a.len()..]),
    };
    let rest = async {
        if !a.is_empty() {
            client.send_all(a).await?;
        }
        client.send_all(b).await
    };
    match tokio::time::timeout(limit, rest).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes a response made by the proxy (no body for HEAD). Returns whether the
/// connection stays open.
async fn respond<S: ClientIo>(
    client: &mut S,
    resp: Response<ProxyBody>,
    head: bool,
    close: bool,
    limit: Duration,
) -> bool {
    let mut out = PooledBuf::take();
    serialize(resp, head, close, &mut out);
    let how = if close { Write::Last } else { Write::Now };
    send_client(client, &out, limit, how).await.is_ok() && !close
}

fn serialize(resp: Response<ProxyBody>, head: bool, close: bool, out: &mut Vec<u8>) {
    let (parts, body) = resp.into_parts();
    let body = match body {
        ProxyBody::Full(Some(b)) => b,
        _ => Bytes::new(),
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in &parts.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // (a 204 or 304 has no body and says no length: RFC 9110 8.6)
    if !matches!(parts.status.as_u16(), 204 | 304) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::StatusCode;

    /// The size of what `f` returns, without calling it.
    fn size_of_return<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle keep-alive connection holds its task's future, sized by its
    /// largest state: a response or a request kept inline (not boxed) makes every
    /// connection pay for it. Release builds: 536 bytes (`examples/scalebench
    /// sizes`; 528 before short request bodies took this path, 568 with their
    /// 408 answer inline); 832 with the proxy's own responses inline, 664 with
    /// a waiter for readability. Tests run debug builds, whose layout differs:
    /// 552 bytes there, 848 with a response inline; this bound is theirs.
    /// The connection's one timer (`clock::by`) added 136 (a tokio `Sleep`,
    /// 112, and the deadline a wait keeps): about 500 instructions a request
    /// less, for connections that hold a task (an idle one is parked after
    /// `park_idle_after` and holds none).
    #[test]
    fn an_idle_connection_future_stays_small() {
        let size = size_of_return(serve::<ClientSocket>);
        assert!(size <= DEBUG_BOUND, "serve's future is {size} bytes");
    }
    const DEBUG_BOUND: usize = 712;

    #[test]
    fn only_bytes_of_a_known_length_with_more_to_come_are_held_back() {
        let chunked = BodyProgress::new(Framing::Chunked);
        let cases = [
            (BodyProgress::Length(100), false, false, Write::More),
            (BodyProgress::Length(100), false, true, Write::More),
            (BodyProgress::Length(0), true, false, Write::Now),
            (BodyProgress::Length(0), true, true, Write::Last),
            // streams: their next bytes may be far off
            (chunked, false, false, Write::Now),
            (BodyProgress::Close, false, true, Write::Now),
        ];
        for (body, complete, close, want) in cases {
            assert_eq!(
                Write::of(&body, complete, close),
                want,
                "{complete} {close}"
            );
        }
    }

    #[test]
    fn proxy_made_responses_are_serialized() {
        let mut out = Vec::new();
        let resp = plain(StatusCode::BAD_GATEWAY, "oops\n");
        serialize(resp, false, true, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{s}");
        assert!(
            s.contains("content-type: text/plain; charset=utf-8\r\n"),
            "{s}"
        );
        assert!(
            s.ends_with("content-length: 5\r\nconnection: close\r\n\r\noops\n"),
            "{s}"
        );
        // HEAD: the same head, no body
        let mut out = Vec::new();
        serialize(
            plain(StatusCode::BAD_GATEWAY, "oops\n"),
            true,
            false,
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("content-length: 5\r\n\r\n"), "{s}");
    }
}
