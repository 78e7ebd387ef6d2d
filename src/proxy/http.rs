//! HTTP mode, past the fast path: hyper 1.x serves HTTP/1.1 (keep-alive) and
//! rampart's own server (`crate::http2::server`) HTTP/2, h2c or TLS; each request
//! is routed to a pool, balanced to a server and sent over a pooled connection.
//! Bodies stream both ways; nothing is buffered whole. Headers are rewritten in
//! `headers`, bodies and the access-log entry live in `body`, gRPC errors in
//! `grpc`.

use super::body::{closing, plain, ProxyBody, ReqLog, UpstreamBody};
use super::conn::ConnCtx;
use super::grpc::{call_deadline, grpc_code, grpc_error, GrpcCode, DEADLINE_EXCEEDED};
use super::headers::{
    forwarded, grpc_status, is_grpc, is_upgrade_request, keepalive_hint, one_content_length,
    prepare_request, request_host, request_target, set_forwarded, strip_hop_by_hop, wire,
};
use super::lifecycle::{self, Lifecycle};
use super::replay::{buffer_if_small, full, BodyFault, Buffered, Replay};
use super::tunnel::tunnel;
use super::ProxyError;
use super::RequestFault;
use crate::accesslog::End;
use crate::config::Protocol;
use crate::pool::{Pool, Server};
use crate::snapshot::ServerBuilders;
use crate::upstream::{self, ClientBody, Exchange, ReqBody, SendError, UpstreamError};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Serves the rest of an HTTP/1 connection with hyper: `io` replays the bytes
/// the fast path already read. (One of two futures, not one with a branch:
/// an HTTP/2 connection, idle for long, would hold room for hyper's state.)
pub(super) async fn serve_h1<S: super::io::ClientIo>(
    io: super::io::Prefixed<S>,
    ctx: Arc<ConnCtx>,
    builders: &ServerBuilders,
    graceful: CancellationToken,
) {
    let peer = ctx.peer;
    let conn = Arc::clone(&ctx);
    let draining = graceful.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        let draining = draining.clone();
        async move {
            let grpc = is_grpc(req.headers());
            // Boxed: the request's future is large (the whole lifecycle:
            // retries, the upstream exchange, 5.9 KB), and made in its box,
            // not copied there (`crate::boxed`).
            let req = req.map(ClientBody::Hyper);
            let resp = crate::boxed::pin(|| handle(&ctx, req)).await;
            let mut resp = resp?;
            resp = if grpc {
                grpc_error(resp)
            } else {
                error_page(&ctx, resp)
            };
            ctx.responded(resp.status().as_u16());
            if draining.is_cancelled() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                // the client opens its next connection elsewhere (or to the new
                // process); hyper closes this one after the answer
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let io = TokioIo::new(io);
    let result = drive(
        builders.h1.serve_connection(io, svc).with_upgrades(),
        &graceful,
        true,
        |c| c.graceful_shutdown(),
    )
    .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
        // hyper answered a head it could not read (400, 414, 431), or part
        // of one not followed by the rest in time (408), itself
        if let Some(status) = e.server_answer() {
            let fault = match status.as_u16() {
                408 => RequestFault::HeadTimeout,
                414 | 431 => RequestFault::HeadTooLarge,
                _ => RequestFault::MalformedHead,
            };
            conn.refused(fault, status.as_u16(), None, None);
            conn.responded(status.as_u16());
        }
    }
}

/// An HTTP/2 connection, served by `crate::http2::server`: GOAWAY (in-flight
/// streams finish) on `graceful`, or once it has had no stream for the idle
/// timeout. `io` replays the bytes the fast path already read, the client's
/// preface first.
///
/// Not an `async fn`: its future is the server's connection and the two
/// fields the log needs, with no second room for the arguments (1,400 bytes
/// as an `async fn`, 608 for the connection inside it; an idle connection
/// holds this).
pub(super) fn serve_h2<'a, S: super::io::ClientIo + 'a>(
    io: super::io::Prefixed<S>,
    ctx: Arc<ConnCtx>,
    builders: &'a ServerBuilders,
    graceful: CancellationToken,
) -> impl std::future::Future<Output = ()> + 'a {
    let peer = ctx.peer;
    let listener = Arc::clone(ctx.listener_name());
    let svc = move |req: Request<crate::http2::server::RecvBody>| {
        let ctx = Arc::clone(&ctx);
        // Boxed: the request's future is large (the whole lifecycle, 5.9 KB),
        // and the connection holds one per stream. Made in its box, not
        // copied there (`crate::boxed`).
        crate::boxed::pin(move || async move {
            if let Some(m) = req
                .extensions()
                .get::<crate::http2::server::HeaderListTooLarge>()
            {
                // refused for what the client sent, as an HTTP/1 head over
                // its limit is
                let fault = RequestFault::HeadTooLarge;
                ctx.refused(
                    fault,
                    fault.status().as_u16(),
                    // (`-`: a :method or :path over the limit, dropped)
                    Some((
                        if m.method_known {
                            req.method().as_str()
                        } else {
                            "-"
                        },
                        if m.target_known {
                            request_target(&req)
                        } else {
                            "-"
                        },
                    )),
                    None,
                );
                ctx.responded(fault.status().as_u16());
                return error_page(&ctx, plain(fault.status(), fault.text()));
            }
            let grpc = is_grpc(req.headers());
            let Ok(resp) = handle(&ctx, req.map(ClientBody::H2)).await;
            let resp = if grpc {
                grpc_error(resp)
            } else {
                error_page(&ctx, resp)
            };
            ctx.responded(resp.status().as_u16());
            resp
        })
    };
    // (`map`, not an `async` block: awaiting the connection there would copy
    // it into a second slot of the block's future)
    futures_util::FutureExt::map(
        crate::http2::server::serve(io, &builders.h2, svc, graceful),
        move |result| {
            if let Err(e) = result {
                h2_ended(e, peer, &listener);
            }
        },
    )
}

/// Counts and logs how an HTTP/2 connection ended with an error.
fn h2_ended(e: crate::http2::server::ConnError, peer: std::net::SocketAddr, listener: &Arc<str>) {
    match e.goaway() {
        Some(code) => {
            crate::metrics::global()
                .h2_goaway
                .with_label_values(&[listener.as_ref(), code.name()])
                .inc();
            tracing::info!(%peer, %listener, %code, error = %e, "HTTP/2 connection closed with GOAWAY");
        }
        None => match e {
            crate::http2::server::ConnError::Stalled(d) => tracing::info!(
                %peer,
                client_timeout = ?d,
                "HTTP/2 client took no response bytes for client_timeout; connection closed"
            ),
            e => tracing::debug!(%peer, error = %e, "client connection ended with an error"),
        },
    }
}

/// Runs a connection; when `graceful` fires, asks it to finish its in-flight
/// requests and close. `linger` (HTTP/1): first, for `DRAIN_LINGER`, answers go
/// out with `Connection: close` (see serve_h1), so a client that sends its
/// next request now gets an answer rather than a connection closed under it.
async fn drive<C>(
    conn: C,
    graceful: &CancellationToken,
    linger: bool,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = graceful.cancelled() => {
            if linger {
                tokio::select! {
                    r = conn.as_mut() => return r,
                    _ = tokio::time::sleep(super::DRAIN_LINGER) => {}
                }
            }
            shutdown(conn.as_mut());
            conn.await
        }
    }
}

/// What goes to the server: the request as bytes (see `handle`), or as a
/// request for hyper's client. One lives in each request's (boxed) future:
/// boxing the larger variant would cost an allocation and save nothing.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    /// A request head in wire form and its body, read whole: written to the
    /// server together (one `writev`), the body not copied after the head.
    Wire(crate::h1::PooledBuf, Bytes),
    Req(Request<ReqBody>),
    /// The request kept for a replay, sent from where it is kept (to an
    /// HTTP/2 pool: its client encodes the head from a borrowed one, so no
    /// copy is made unless a retry needs one).
    Kept,
}

/// Answers a request whose body was refused (`super::refusal`), counted
/// when that is the client's fault, its log line finished; the connection
/// closes.
fn body_refused(
    ctx: &ConnCtx,
    log: &mut Option<Box<ReqLog>>,
    fault: Option<RequestFault>,
) -> Response<ProxyBody> {
    if let Some(f) = fault {
        ctx.count_fault(f);
    }
    let (status, text, end) = super::refusal(fault);
    if let Some(mut l) = log.take() {
        l.status = status.as_u16();
        l.finish(0, end);
    }
    closing(plain(status, text))
}

async fn handle(
    ctx: &Arc<ConnCtx>,
    mut req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    if req.method() == Method::CONNECT {
        // A reverse proxy does not open tunnels to arbitrary hosts.
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: CONNECT is not supported\n",
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
        );
        return Ok(r);
    }
    if let Some(refused) = strict_h1(&req) {
        tracing::debug!(peer = %ctx.peer, status = %refused.status(), "refused an ambiguous HTTP/1 request");
        let target = request_target(&req);
        let r = Some((req.method().as_str(), target));
        ctx.refused(
            RequestFault::MalformedHead,
            refused.status().as_u16(),
            r,
            Some(start.elapsed()),
        );
        return Ok(refused);
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        // RFC 9113 8.3.1 (":authority MUST NOT include userinfo"), RFC 9110
        // 4.2.4 (a recipient treats userinfo as an error)
        let r = Some((req.method().as_str(), request_target(&req)));
        ctx.refused(RequestFault::MalformedHead, 400, r, Some(start.elapsed()));
        return Ok(closing(plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the request target carries userinfo\n",
        )));
    }
    // A declared body over the most any rule allows is refused before the
    // rules are read, and one over the request's own limit after them.
    let bound = ctx
        .permits
        .listener()
        .max_request_body
        .load(Ordering::Relaxed);
    if bound > 0 && too_large(&req, bound) {
        return Ok(body_too_large(ctx, &req, start));
    }
    let raw_path = req.uri().path();
    let Some(path) = crate::router::normalize_path(raw_path) else {
        let r = Some((req.method().as_str(), request_target(&req)));
        ctx.refused(RequestFault::MalformedHead, 400, r, Some(start.elapsed()));
        // as the fast path answers it
        let f = RequestFault::MalformedHead;
        return Ok(closing(plain(f.status(), f.text())));
    };
    // (the client a trusted proxy names, with `client_ip_from`)
    let src = ctx.permits.listener().request_client(ctx.peer.ip(), || {
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    });
    let src_text = (src != ctx.peer.ip()).then(|| super::conn::IpText::new(src));
    let client_ip = src_text
        .as_ref()
        .map_or(ctx.peer_ip.as_bytes(), super::conn::IpText::as_bytes);
    let view = View {
        req: &req,
        src,
        path,
        raw_path,
        bare_host: request_host(&req).map(crate::router::strip_port),
    };
    let decision = lifecycle::decide(
        &ctx.shared.plane,
        ctx.permits.listener(),
        ctx.shared.bound,
        &view,
        |_| true,
    );
    let (mut pool, edits, priority) = match decision {
        lifecycle::Decision::Pool {
            pool,
            edits,
            priority,
            max_body,
        } => {
            // (a declared length over it was refused by `decide`)
            if max_body > 0 && !req.body().is_end_stream() {
                req = req.map(|b| ClientBody::capped(b, max_body));
            }
            (pool, edits, priority)
        }
        lifecycle::Decision::TooLarge => return Ok(body_too_large(ctx, &req, start)),
        lifecycle::Decision::Reconfiguring | lifecycle::Decision::Elsewhere => {
            return Ok(reconfiguring())
        }
        d => {
            let target = request_target(&req).to_string();
            return Ok(decided(d, ctx, src, req.method().as_str(), &target, start));
        }
    };
    let rewritten = edits.as_ref().and_then(|e| e.target.as_deref());
    let key = lifecycle::hash_key(
        &pool,
        src,
        rewritten.unwrap_or_else(|| request_target(&req)),
        |h| req.headers().get(h).map(|v| v.as_bytes()),
    );
    let mut log = ctx.shared.plane.access_log.enabled().then(|| {
        Box::new(ReqLog::new(
            ctx,
            src,
            req.method().clone(),
            request_target(&req).to_string(),
            &pool,
            start,
        ))
    });
    let mut lc = Lifecycle::new(Arc::clone(&pool), key, priority);
    // `[pool.cookie]`: the server the request's cookie names (in `pool`)
    // (of several servers sharing its value, the first that takes it)
    let asked = pool.persist.as_ref().and_then(|p| {
        let cookies = req.headers().get_all(header::COOKIE);
        let mut named = p.servers_of(cookies.iter().map(HeaderValue::as_bytes));
        let first = named.next()?;
        let now = crate::clock::now_ms();
        Some(
            std::iter::once(first)
                .chain(named)
                .find(|&i| pool.persists(i, now))
                .unwrap_or(first),
        )
    });
    let asked = asked.map(|i| {
        lc.prefer(i);
        (Arc::clone(&pool), i)
    });
    let h2_pool = pool.protocol == Protocol::H2;
    if let Some(l) = log.as_mut() {
        l.grpc = is_grpc(req.headers());
    }

    let upgrade = is_upgrade_request(&req);
    if upgrade && h2_pool {
        // RFC 8441's extended CONNECT to the servers is not implemented
        let err = ProxyError::UpgradeToH2Pool;
        return Ok(fail(&pool, None, err, log, start));
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // a client that takes trailers gets hyper's client, which passes them on
    let wants_trailers = upstream::http2::wants_trailers(req.headers());
    let te_trailers = h2_pool && wants_trailers;
    // `[listener.compression]` (not for a HEAD, as nginx: its answer has no
    // body to say it of), and whether the client takes gzip
    let gzip = ctx
        .permits
        .listener()
        .compression
        .load_full()
        .filter(|_| req.method() != Method::HEAD)
        .map(|c| {
            // (nor to HTTP/1.0, as nginx and HAProxy: its caches ignore Vary)
            let takes = req.version() >= Version::HTTP_11
                && super::compress::accepts_gzip(
                    req.headers()
                        .get_all(header::ACCEPT_ENCODING)
                        .iter()
                        .map(HeaderValue::as_bytes),
                );
            (c, takes)
        });
    // the answer of a server the request goes to as bytes can go back to an
    // HTTP/2 client with its fields left in the buffer they were read into,
    // when nothing here reads them (gRPC statuses) or adds to them (a
    // persistence cookie, compression); the rules' response edits are made
    // as the fields are encoded (`UpstreamBody::wire_edits`)
    let wire_head =
        req.body().is_h2() && !is_grpc(req.headers()) && pool.persist.is_none() && gzip.is_none();
    let (mut parts, body) = req.into_parts();
    if let Some(p) = pool.persist.as_ref().filter(|p| p.cfg.indirect) {
        crate::pool::persist::strip_from(&mut parts.headers, &p.cfg.name);
    }
    let client_host = prepare_request(&mut parts, upgrade, edits.as_ref());
    // (a reload may change the pool a queued request ends in; the deadline
    // is the one its call was given when it came)
    let call = pool
        .max_grpc_timeout
        .filter(|_| is_grpc(&parts.headers))
        .and_then(|max| call_deadline(&parts.headers, max, start));
    if let Some(c) = call {
        parts.extensions.insert(c);
    }
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }

    // Keep what is needed to send the request again after a failure that may have
    // happened once it was (partly) sent: on another server (retries), or on a new
    // connection when a pooled one turns out to be closed (keep-alive race). To an
    // HTTP/2 pool a small body is kept whatever the method: a stream the server
    // did not process may always be sent again.
    let mut replayable = !upgrade && (parts.method.is_idempotent() || pool.retry.non_idempotent);
    let seen = log.as_ref().map(|l| Arc::clone(&l.bytes_in));
    // set by a streaming body that turns out malformed (none without one)
    let mut fault: Option<Arc<std::sync::atomic::AtomicU8>> = None;
    let buffered = match buffer_if_small(
        body,
        replayable || h2_pool,
        &pool,
        ctx.shared.client_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(why) => {
            // refused for what the client sent, as a body that breaks
            // later is (below); one whose client left is only logged
            let fault = match why {
                BodyFault::Malformed => Some(RequestFault::MalformedBody),
                BodyFault::Stalled => Some(RequestFault::BodyTimeout),
                BodyFault::TooLarge => Some(RequestFault::BodyTooLarge),
                BodyFault::Gone => None,
            };
            return Ok(body_refused(ctx, &mut log, fault));
        }
    };
    // Without a streaming body, to a plain HTTP/1.1 server (not one the client's
    // PROXY header goes to), the request goes as bytes on a socket pooled with
    // the fast path's: no hyper client, no copy kept for a replay (the bytes
    // are sent again). Its response's trailers, if any, are dropped, so a
    // client that said it takes them (`TE: trailers`) is not served this way.
    let raw = !h2_pool
        && !upgrade
        && !wants_trailers
        // (hyper's client and the HTTP/2 one count a call's deadline)
        && call.is_none()
        && pool.tls.is_none()
        && pool.send_proxy.is_none()
        && parts.headers.contains_key(header::HOST)
        && !parts.headers.contains_key(header::TRANSFER_ENCODING);
    // POST, PUT and PATCH say their length even when it is 0 (as `full` does)
    let length = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    let head = parts.method == Method::HEAD;
    // a body sent whole (not streamed through `ReqBody::Incoming`, which counts
    // what it sends): counted for the server it goes to
    let mut whole = 0u64;
    let (mut out, kept) = match buffered {
        Buffered::Bytes(b) if raw => {
            if let Some(l) = &log {
                l.bytes_in.store(b.len() as u64, Ordering::Relaxed);
            }
            whole = b.len() as u64;
            let wire = wire(
                &mut parts,
                ctx,
                client_ip,
                client_host.as_ref().map(Option::as_ref),
                b.len(),
                length || !b.is_empty(),
            );
            crate::http2::fields::recycle(parts.headers);
            (Outgoing::Wire(wire, b), None)
        }
        // a body that came whole with the head (an HTTP/2 client's POST: it
        // is not kept for a replay, so it was not buffered above) goes as
        // bytes too, not through hyper's client
        Buffered::Stream(body, first)
            if raw && body.is_end_stream() && first.iter().all(Frame::is_data) =>
        {
            let b = match first.len() {
                0 => Bytes::new(),
                1 => first
                    .into_iter()
                    .next()
                    .and_then(|f| f.into_data().ok())
                    .unwrap_or_default(),
                _ => {
                    let mut all = BytesMut::new();
                    for f in first {
                        if let Some(d) = f.data_ref() {
                            all.extend_from_slice(d);
                        }
                    }
                    all.freeze()
                }
            };
            if let Some(l) = &log {
                l.bytes_in.store(b.len() as u64, Ordering::Relaxed);
            }
            whole = b.len() as u64;
            // it goes again after a failure as a body kept for a replay would:
            // only within retry_buffer (larger ones are retried on a connect
            // failure only)
            replayable &= whole <= pool.retry.buffer;
            let wire = wire(
                &mut parts,
                ctx,
                client_ip,
                client_host.as_ref().map(Option::as_ref),
                b.len(),
                length || !b.is_empty(),
            );
            crate::http2::fields::recycle(parts.headers);
            (Outgoing::Wire(wire, b), None)
        }
        Buffered::Bytes(b) => {
            let (out, kept) = if h2_pool {
                // (the X-Forwarded-* fields go after the map's, not into it)
                let after = forwarded(&mut parts.headers, ctx, client_ip, client_host);
                (Outgoing::Kept, Replay::keep(parts, b, after))
            } else {
                set_forwarded(&mut parts.headers, ctx, client_ip, client_host);
                let kept = Replay::new(&parts, b.clone());
                let body = full(b, &parts.method, &parts.headers);
                (Outgoing::Req(Request::from_parts(parts, body)), kept)
            };
            if let Some(b) = kept.body() {
                whole = b.len() as u64;
                if let Some(l) = &log {
                    l.bytes_in.store(whole, Ordering::Relaxed);
                }
            }
            (out, Some(kept))
        }
        Buffered::Stream(body, first) => {
            set_forwarded(&mut parts.headers, ctx, client_ip, client_host);
            let body = ReqBody::Incoming {
                fault: (!first.is_empty() || !body.is_end_stream())
                    .then(|| Arc::clone(fault.insert(Arc::default()))),
                idle: ctx.shared.client_timeout,
                timer: None,
                waiting: false,
                progress: (!first.is_empty() || !body.is_end_stream()).then(Arc::default),
                body,
                first,
                server: None,
                seen,
            };
            (Outgoing::Req(Request::from_parts(parts, body)), None)
        }
    };
    let replay = kept.as_ref().filter(|_| replayable);
    let resend_closure = kept.as_ref().map(|r| move || r.request());
    let resend_fn = resend_closure
        .as_ref()
        .map(|f| f as &(dyn Fn() -> Request<ReqBody> + Sync));
    let replay_fn = resend_fn.filter(|_| replayable);
    loop {
        // a call's deadline bounds its wait in the queue too, and a call whose
        // deadline passed meanwhile is not sent
        let acquired = match call {
            None => Some(lc.acquire().await),
            // (boxed: the timer would make every request's future larger)
            Some(c) => Box::pin(tokio::time::timeout_at(c.at, lc.acquire()))
                .await
                .ok()
                .filter(|_| tokio::time::Instant::now() < c.at),
        };
        let mut guard = match acquired {
            Some(Ok(g)) => g,
            Some(Err(g)) => return Ok(fail(&lc.pool, g.server(&lc.pool), g.err, log, start)),
            None => {
                let err = ProxyError::Deadline {
                    budget: call.map_or(std::time::Duration::ZERO, |c| c.budget),
                };
                return Ok(fail(&lc.pool, None, err, log, start));
            }
        };
        // a request that waited in the queue through a change of the pool
        // holds a slot in the pool in force
        if !Arc::ptr_eq(guard.pool(), &pool) {
            pool = Arc::clone(guard.pool());
        }
        let server = &pool.servers[guard.index()];
        let mut progress = None;
        if let Outgoing::Req(req) = &mut out {
            if let ReqBody::Incoming { server: s, .. } = req.body_mut() {
                *s = Some(Arc::clone(&server.state));
            }
            if !req.headers().contains_key(header::HOST) {
                // HTTP/1.0 without Host: name the server, as HTTP/1.1 requires a Host.
                if let Ok(v) = HeaderValue::from_str(&server.addr.to_string()) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
            progress = req.body().progress().cloned();
        }
        let via = upstream::Via {
            private: &ctx.private,
            client: ctx.peer,
            local: ctx.local,
            tls: ctx.tls.as_deref(),
        };
        // what goes again after a failure: the same bytes, or the request
        // hyper handed back (or a copy of it)
        let (sent, wire) = match out {
            Outgoing::Wire(w, b) => {
                let sent =
                    upstream::send_wire(&pool, server, [&w, &b], replayable, head, wire_head).await;
                (sent.map_err(SendError::from), Some((w, b)))
            }
            Outgoing::Req(req) => {
                let via = Some(&via);
                let sent = upstream::send(&pool, server, req, replay_fn, resend_fn, via).await;
                (sent, None)
            }
            Outgoing::Kept => match &kept {
                Some(k) => (
                    upstream::send_kept(&pool, server, k.parts(), k.after(), k.body()).await,
                    None,
                ),
                None => {
                    let g = lc.abandon();
                    return Ok(fail(&lc.pool, g.server(&lc.pool), g.err, log, start));
                }
            },
        };
        match sent {
            Err(SendError { error, unsent }) => {
                let why = fault.as_ref().map_or(0, |f| f.load(Ordering::Relaxed));
                if why != 0 {
                    // the client's body broke the framing, stalled mid-way or
                    // went over max_request_body: what the server got is cut
                    // off, and the client is told why
                    drop(lc.abandon());
                    let fault = match why {
                        upstream::BODY_STALLED => RequestFault::BodyTimeout,
                        upstream::BODY_TOO_LARGE => RequestFault::BodyTooLarge,
                        _ => RequestFault::MalformedBody,
                    };
                    return Ok(body_refused(ctx, &mut log, Some(fault)));
                }
                // bytes that did not reach the server may go anywhere, as may
                // a request hyper did not send
                let resendable = unsent.is_some() || (wire.is_some() && error.is_connect());
                let may_replay = replay.is_some() || (wire.is_some() && replayable);
                if let Err(g) = lc.failed(&mut guard, error, resendable, may_replay) {
                    return Ok(fail(&lc.pool, g.server(&lc.pool), g.err, log, start));
                }
                // a retry needs the request as it was (not sent) or a copy
                out = match (wire, unsent, replay) {
                    (Some((w, b)), _, _) => Outgoing::Wire(w, b),
                    (None, Some(r), _) => Outgoing::Req(*r),
                    (None, None, Some(_)) if h2_pool => Outgoing::Kept,
                    (None, None, Some(rp)) => Outgoing::Req(rp.request()),
                    (None, None, None) => {
                        let g = lc.abandon();
                        return Ok(fail(&lc.pool, g.server(&lc.pool), g.err, log, start));
                    }
                };
            }
            Ok(Exchange {
                mut response,
                sender,
                connect_time,
            }) => {
                if whole > 0 {
                    server
                        .state
                        .traffic
                        .bytes_in
                        .fetch_add(whole, Ordering::Relaxed);
                }
                let status = response.status();
                let may_replay = replay.is_some() || (wire.is_some() && replayable);
                if lc.answered(&mut guard, status.as_u16(), may_replay) {
                    // The response (and its connection, body unread) is dropped.
                    match (wire, replay) {
                        (Some((w, b)), _) => {
                            out = Outgoing::Wire(w, b);
                            continue;
                        }
                        (None, Some(rp)) => {
                            out = if h2_pool {
                                Outgoing::Kept
                            } else {
                                Outgoing::Req(rp.request())
                            };
                            continue;
                        }
                        (None, None) => {}
                    }
                }
                if let Some(l) = log.as_mut() {
                    l.server = Some(Arc::clone(&server.id));
                    l.connect = Some(connect_time);
                    l.status = status.as_u16();
                    if l.grpc {
                        // a trailers-only answer (an error) has it in its headers
                        l.grpc_status = grpc_status(response.headers());
                    }
                }
                if let Some(client_up) = client_upgrade {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        persist_answer(&pool, asked.as_ref(), guard.index(), &mut response);
                        let server_up = hyper::upgrade::on(&mut response);
                        let timeout = pool.tunnel_timeout;
                        ctx.tunnelled.store(true, Ordering::Relaxed);
                        ctx.shared.tracker.spawn(tunnel(
                            Arc::clone(ctx),
                            client_up,
                            server_up,
                            guard,
                            log,
                            timeout,
                        ));
                        let (parts, _) = response.into_parts();
                        return Ok(Response::from_parts(parts, ProxyBody::empty()));
                    }
                }
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    // A switch nobody asked for (or to h2c): the connection is
                    // unusable for HTTP now.
                    let err =
                        ProxyError::Upstream(UpstreamError::Unexpected101 { addr: server.addr });
                    err.count_server(server);
                    return Ok(fail(&pool, Some(server), err, log, start));
                }
                // a response read as bytes came without hop-by-hop fields, and
                // its connection goes back to the pool by itself
                let mut sender = sender;
                let keepalive = if matches!(response.body(), upstream::RespBody::Raw(_)) {
                    pool.keepalive_timeout
                } else {
                    let k = pool.keepalive_for(keepalive_hint(response.headers()));
                    let codings = response.headers().get_all(header::TRANSFER_ENCODING);
                    // (an answer without a body carries its GET's field)
                    let bodiless = head || matches!(status.as_u16(), 204 | 304);
                    if !bodiless
                        && crate::h1::other_codings(codings.iter().map(HeaderValue::as_bytes))
                    {
                        // hyper decoded the chunked framing only, and the
                        // field goes (hop-by-hop): the coded bytes would pass
                        // for the body
                        let err = ProxyError::Upstream(UpstreamError::BadResponse {
                            addr: server.addr,
                            reason: "a transfer coding other than chunked, which rampart does not decode".into(),
                        });
                        err.count_server(server);
                        return Ok(fail(&pool, Some(server), err, log, start));
                    }
                    let h = response.headers_mut();
                    if h.contains_key(header::TRANSFER_ENCODING)
                        && h.contains_key(header::CONTENT_LENGTH)
                    {
                        // hyper read the body by its Transfer-Encoding; the
                        // length is not the body's, and the connection is not
                        // used again (RFC 9112 6.1, 6.3)
                        h.remove(header::CONTENT_LENGTH);
                        sender = None;
                    }
                    strip_hop_by_hop(h);
                    one_content_length(h);
                    k
                };
                if let Some(e) = &edits {
                    e.edit_response(response.headers_mut());
                }
                // (after the rules' edits, which do not undo it)
                persist_answer(&pool, asked.as_ref(), guard.index(), &mut response);
                let level = match &gzip {
                    Some((c, takes))
                        if super::compress::applies(c, response.status(), response.headers()) =>
                    {
                        // (past `MAX_LIVE` answers compressed at once, as sent)
                        match takes.then(super::compress::Slot::take).flatten() {
                            Some(slot) => {
                                super::compress::mark(response.headers_mut());
                                Some((c.level, slot))
                            }
                            None => {
                                super::compress::vary(response.headers_mut());
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let (parts, body) = response.into_parts();
                let body = ProxyBody::Upstream(UpstreamBody {
                    inner: body,
                    sender,
                    guard: Some(guard),
                    log,
                    bytes: 0,
                    failed: false,
                    progress,
                    keepalive,
                    start,
                    idle_timeout: pool.server_timeout,
                    idle: None,
                    private: pool.send_proxy.is_some().then(|| Arc::clone(ctx)),
                    // (the edits' sets went into the map above; a head with
                    // its fields in the map had them all edited there)
                    wire_edits: edits
                        .as_ref()
                        .filter(|e| wire_head && e.edits_response())
                        .map(|e| {
                            Box::new(crate::rules::RuleEdits {
                                rules: Arc::clone(&e.rules),
                                applied: e.applied,
                                target: None,
                            })
                        }),
                });
                let body = match level {
                    Some((l, slot)) => {
                        ProxyBody::Gzip(Box::new(super::body::Gzip::new(body, l, slot)))
                    }
                    None => body,
                };
                return Ok(Response::from_parts(parts, body));
            }
        }
    }
}

/// An answer rampart made itself (a body of its own, an error status) with
/// the listener's page for its status, if it has one (`error_pages`): the
/// page's body and fields (its Content-Type above all) in place of the short
/// text, the answer's own fields (Retry-After, Allow, RateLimit, Connection)
/// kept. A server's answers never come here.
pub(super) fn error_page(ctx: &ConnCtx, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !resp.status().is_client_error() && !resp.status().is_server_error() {
        return resp;
    }
    // (a deny rule's or read-only mode's own text is the operator's: kept,
    // as HAProxy keeps a deny's own content over its errorfile)
    if !matches!(resp.body(), ProxyBody::Full(_)) || resp.extensions().get::<Authored>().is_some() {
        return resp;
    }
    let pages = ctx.permits.listener().error_pages.load();
    let Some(page) = pages.get(resp.status()) else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    // the page's Content-Type, and its Cache-Control if it has one (else the
    // answer's no-store stays); fields the answer has of its own (Retry-After,
    // Allow, RateLimit) are kept; a field the page repeats keeps every line
    parts.headers.remove(header::CONTENT_TYPE);
    if page.headers.iter().any(|(n, _)| n == header::CACHE_CONTROL) {
        parts.headers.remove(header::CACHE_CONTROL);
    }
    let own: Vec<header::HeaderName> = parts.headers.keys().cloned().collect();
    for (name, value) in &page.headers {
        if !own.contains(name) {
            parts.headers.append(name, value.clone());
        }
    }
    Response::from_parts(parts, ProxyBody::Full(Some(page.body.clone())))
}

/// An answer whose text an operator wrote (a deny rule's `body`,
/// `read_only_message`): no error page replaces it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Authored;

/// `[pool.cookie]`: server `i` of `pool` answers a request whose cookie
/// named `asked` (a server of the pool it was decided in, then).
fn persist_answer<B>(
    pool: &crate::pool::Pool,
    asked: Option<&(Arc<crate::pool::Pool>, usize)>,
    i: usize,
    response: &mut Response<B>,
) {
    if let Some(p) = &pool.persist {
        let had = asked.and_then(|(ap, j)| ap.persist.as_ref()?.value(*j));
        p.answer(i, had, response.headers_mut());
    }
}

/// Whether a request declares a body longer than `max` (hyper's
/// Content-Length, an HTTP/2 stream's content-length).
fn too_large(req: &Request<ClientBody>, max: u64) -> bool {
    req.body().size_hint().lower() > max
}

/// 413 to a request that declares a body over its limit: refused before any
/// of it is read (nor `100 Continue` sent); the connection closes rather than
/// read what follows.
fn body_too_large(ctx: &ConnCtx, req: &Request<ClientBody>, start: Instant) -> Response<ProxyBody> {
    let r = Some((req.method().as_str(), request_target(req)));
    let f = RequestFault::BodyTooLarge;
    // (logged with the client `client_ip_from` believes, as the request's
    // answers are)
    let client = ctx.permits.listener().request_client(ctx.peer.ip(), || {
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    });
    ctx.refused_from(client, f, f.status().as_u16(), r, Some(start.elapsed()));
    closing(plain(f.status(), f.text()))
}

/// The answer a rule gave (deny or redirect), logged with `end=rule`, or read-only
/// mode's (`end=read_only`).
pub(super) fn decided(
    d: lifecycle::Decision,
    ctx: &ConnCtx,
    client: std::net::IpAddr,
    method: &str,
    target: &str,
    start: Instant,
) -> Response<ProxyBody> {
    let mut end = End::Rule;
    let resp = match d {
        lifecycle::Decision::Deny { status, body } => {
            // (the default text a deny without a body gets: `403 Forbidden`)
            let default = format!(
                "{} {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let authored = body != default.as_bytes();
            let mut r = Response::new(ProxyBody::Full(Some(body)));
            *r.status_mut() = status;
            if authored {
                r.extensions_mut().insert(Authored);
            }
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        lifecycle::Decision::Respond {
            status,
            body,
            content_type,
        } => {
            // (an empty body ends the answer with its head, HTTP/2's too)
            let mut r = Response::new(if body.is_empty() {
                ProxyBody::empty()
            } else {
                ProxyBody::Full(Some(body))
            });
            *r.status_mut() = status;
            // the operator's own answer: no error page replaces it
            r.extensions_mut().insert(Authored);
            // a 204 or 304 has no content to type (nginx sends none either)
            if !matches!(status.as_u16(), 204 | 304) {
                r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            r
        }
        lifecycle::Decision::Redirect { status, location } => {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = status;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                // a Host or path that cannot be a header value: refuse it
                Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
            }
            r
        }
        lifecycle::Decision::ReadOnly {
            status,
            body,
            retry_after,
        } => {
            let authored = body != crate::rules::DEFAULT_READ_ONLY_MESSAGE.as_bytes();
            let mut r = Response::new(ProxyBody::Full(Some(body)));
            *r.status_mut() = status;
            if authored {
                r.extensions_mut().insert(Authored);
            }
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            end = End::ReadOnly;
            r
        }
        lifecycle::Decision::Limited {
            name,
            policy,
            retry_after,
        } => {
            let mut r = plain(
                StatusCode::TOO_MANY_REQUESTS,
                format!("429 Too Many Requests: rate limit \"{name}\"\n"),
            );
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            if let Ok(v) = HeaderValue::from_str(&policy) {
                h.insert("ratelimit-policy", v);
            }
            // IETF httpapi-ratelimit-headers: none left, reset in t seconds
            if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r=0;t={retry_after}")) {
                h.insert("ratelimit", v);
            }
            end = End::RateLimited;
            r
        }
        lifecycle::Decision::Pool { .. }
        | lifecycle::Decision::TooLarge
        | lifecycle::Decision::Reconfiguring
        | lifecycle::Decision::Elsewhere => reconfiguring(),
    };
    ctx.shared.plane.access_log.write(&crate::accesslog::Entry {
        client: ctx.client_addr(client),
        listener: ctx.listener_name(),
        pool: "-",
        server: None,
        method: Some(method),
        path: Some(target),
        status: Some(resp.status().as_u16()),
        bytes_in: 0,
        bytes_out: 0,
        connect: None,
        total: Some(start.elapsed()),
        end,
        tls: ctx.tls.as_deref(),
        grpc_status: None,
        sni: None,
    });
    resp
}

/// What rules see of a request on the hyper path (path and bare host computed
/// once, not per rule).
struct View<'a> {
    req: &'a Request<ClientBody>,
    src: std::net::IpAddr,
    /// What rules and routes match (`router::normalize_path`).
    path: std::borrow::Cow<'a, str>,
    raw_path: &'a str,
    bare_host: Option<&'a str>,
}

impl crate::rules::RequestView for View<'_> {
    fn method(&self) -> &str {
        self.req.method().as_str()
    }
    fn host(&self) -> Option<&str> {
        request_host(self.req)
    }
    fn target(&self) -> &str {
        request_target(self.req)
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req.headers().get(name).map(|v| v.as_bytes())
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
        self.req.body().size_hint().lower()
    }
}

/// The answer while the listener's routes point nowhere (a reload in progress).
pub(super) fn reconfiguring() -> Response<ProxyBody> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: listener is being reconfigured\n",
    )
}

/// The single place a failed request becomes a response: counted, logged, answered.
pub(super) fn fail(
    pool: &Pool,
    server: Option<&Server>,
    err: ProxyError,
    log: Option<Box<ReqLog>>,
    start: Instant,
) -> Response<ProxyBody> {
    err.count_pool(pool);
    pool.shared
        .histograms
        .request_duration
        .observe(start.elapsed().as_secs_f64());
    let status = err.status();
    // DEADLINE_EXCEEDED for a call's deadline; else gRPC's mapping of the status
    let code = match &err {
        ProxyError::Deadline { .. } | ProxyError::Upstream(UpstreamError::Deadline { .. }) => {
            DEADLINE_EXCEEDED
        }
        _ => grpc_code(status.as_u16()),
    };
    tracing::debug!(pool = %pool.name, error = %err, "request failed");
    if let Some(mut l) = log {
        l.status = status.as_u16();
        if l.grpc {
            l.grpc_status = Some(code);
        }
        if let Some(s) = server {
            l.server = Some(Arc::clone(&s.id));
        }
        l.finish(0, err.end());
    }
    let retry_after = match &err {
        ProxyError::CircuitOpen { retry_after } => Some(retry_after.as_secs().max(1)),
        _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
        _ => None,
    };
    let mut resp = plain(status, err.body(&pool.name));
    if code != grpc_code(status.as_u16()) {
        resp.extensions_mut().insert(GrpcCode(code));
    }
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// RFC 9112's rules for HTTP/1 framing and Host that hyper leaves to its user:
/// a request that two parties could read differently is refused, and its
/// connection closed. HTTP/2 requests have no such fields.
fn strict_h1<B>(req: &Request<B>) -> Option<Response<ProxyBody>> {
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_10 {
        return None;
    }
    let bad = |why: &str| {
        Some(closing(plain(
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request: {why}\n"),
        )))
    };
    let h = req.headers();
    let hosts = h.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return bad("more than one Host field");
    }
    if hosts == 0 && req.version() == Version::HTTP_11 {
        return bad("an HTTP/1.1 request needs a Host field");
    }
    let lengths = h.get_all(header::CONTENT_LENGTH).iter().count();
    let codings: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !codings.is_empty() {
        if lengths > 0 {
            return bad("Content-Length together with Transfer-Encoding");
        }
        if req.version() == Version::HTTP_10 {
            return bad("Transfer-Encoding in an HTTP/1.0 request");
        }
        if codings.len() > 1 {
            return bad("more than one Transfer-Encoding field");
        }
        let v = codings[0].as_bytes();
        let tokens: Vec<&[u8]> = v.split(|&b| b == b',').map(|t| t.trim_ascii()).collect();
        let token_ok = |t: &[u8]| {
            !t.is_empty()
                && t.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        };
        if !tokens.iter().all(|t| token_ok(t)) {
            return bad("a malformed Transfer-Encoding");
        }
        if !tokens
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
        {
            return bad("Transfer-Encoding does not end in chunked");
        }
        if tokens.len() > 1 {
            // passing them on would relabel the body, decoding them is not ours
            return Some(closing(plain(
                StatusCode::NOT_IMPLEMENTED,
                "501 Not Implemented: transfer codings other than chunked are not passed on\n",
            )));
        }
    }
    if lengths > 1 {
        return bad("more than one Content-Length field");
    }
    // RFC 9112 3.2: origin form, absolute form, or `*` for OPTIONS (authority
    // form is CONNECT's, refused before). hyper reads a target such as
    // "admin" or "b.example:80" as an authority alone, which went on as
    // `GET /` with that Host; `GET *` went on as it came.
    let uri = req.uri();
    match (uri.scheme(), uri.authority()) {
        (Some(_), Some(_)) => {}
        (None, None) if uri.path().starts_with('/') => {}
        (None, None) if uri.path() == "*" && req.method() == Method::OPTIONS => {}
        (None, None) if uri.path() == "*" => {
            return bad("`*` as the target of a request other than OPTIONS")
        }
        _ => return bad("a request target neither in origin nor in absolute form"),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderMap;

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
    fn a_content_length_repeated_with_one_value_is_kept_once() {
        let lengths = |h: &HeaderMap| -> Vec<String> {
            h.get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        for values in [&["5, 5"][..], &["5", "5"], &[" 5 ,5"]] {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            h.insert("x-app", HeaderValue::from_static("1"));
            one_content_length(&mut h);
            assert_eq!(lengths(&h), ["5"], "{values:?}");
            assert!(h.contains_key("x-app"));
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        one_content_length(&mut h);
        assert_eq!(lengths(&h), ["7"]);
    }

    #[test]
    fn proxy_made_errors_become_grpc_statuses() {
        for (status, code) in [
            (503, "14"),
            (502, "14"),
            (504, "14"),
            (404, "12"),
            (431, "2"),
        ] {
            let r = grpc_error(plain(
                StatusCode::from_u16(status).unwrap(),
                "503 Service Unavailable: pool \"api\": no server is available\n",
            ));
            assert_eq!(r.status(), StatusCode::OK, "{status}");
            assert_eq!(r.headers()["content-type"], "application/grpc");
            assert_eq!(r.headers()["grpc-status"], code, "{status}");
            assert_eq!(
                r.headers()["grpc-message"],
                "503 Service Unavailable: pool \"api\": no server is available"
            );
            assert!(matches!(r.body(), ProxyBody::Full(None)));
        }
        // not an error: as it is
        let ok = grpc_error(plain(StatusCode::OK, "x"));
        assert_eq!(ok.headers()["content-type"], "text/plain; charset=utf-8");
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
