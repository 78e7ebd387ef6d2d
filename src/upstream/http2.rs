//! HTTP/2 to the servers of a pool with `protocol = "h2"` (h2c with prior
//! knowledge, or h2 negotiated by ALPN over `[pool.tls]`): gRPC services, and
//! any server that prefers one connection to many.
//!
//! Requests are streams multiplexed over few connections: per server and
//! worker thread, a request takes the first connection with room, where room is
//! the lower of `[pool.http2] max_concurrent_streams` and the server's own
//! SETTINGS_MAX_CONCURRENT_STREAMS. Only when none has room is another
//! connection opened, and requests that arrive while it is being opened wait
//! for it rather than each opening their own.
//!
//! A server's GOAWAY drains its connection: streams it accepted finish on it,
//! new requests go to another connection, and a stream it did not process (above
//! GOAWAY's last stream id, or refused with REFUSED_STREAM) is sent again on
//! another connection when its body was kept (RFC 9113 8.7 says it may be,
//! whatever its method); after a REFUSED_STREAM another connection with room
//! is preferred. One still not processed after three resends is handed back
//! as a request never sent, for the lifecycle to take to another server.

use super::body::{answer_due, CallDeadline, ReqBody, GRPC_TIMEOUT};
use super::connect::{connect_tcp, connect_tls, keepalive_floor, tasks};
use super::error::{SendError, UpstreamError};
use crate::http2::client::{self, Connection, RequestHead, SendBody};
use crate::pool::{Pool, Server, ServerState};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The largest response head (and trailers) taken from a server, as HTTP/2
/// counts a header list.
const MAX_RESPONSE_HEADER_LIST: u32 = 64 * 1024;

/// One HTTP/2 connection to a server.
#[derive(Debug)]
pub struct Conn {
    client: Connection,
    /// Streams started on it whose response has not ended.
    active: AtomicUsize,
    /// `clock::now_ms()` when `active` last fell to zero.
    idle_since: AtomicU64,
    /// The `Pool::conn_epoch` it was made under: a pool of another epoch
    /// (a reload changed `[pool.tls]`, `protocol` or `send_proxy`) starts no
    /// stream on it.
    epoch: u64,
}

/// What a connection can take now.
enum Room {
    Yes,
    Full,
    /// Closed, or draining after the server's GOAWAY: no new streams.
    Gone,
}

impl Conn {
    fn room(&self, limit: usize) -> Room {
        // (Gone once the connection's task has ended, however it ended)
        match self.client.room(limit) {
            client::Room::Gone => Room::Gone,
            client::Room::Full => Room::Full,
            // (a stream claimed and not yet started counts too)
            client::Room::Yes if self.active.load(Ordering::Relaxed) < limit => Room::Yes,
            client::Room::Yes => Room::Full,
        }
    }
}

/// A stream's claim on its connection, released when the response ends (or the
/// attempt is abandoned).
#[derive(Debug)]
struct Claim(Arc<Conn>);

impl Claim {
    fn new(conn: Arc<Conn>) -> Claim {
        conn.active.fetch_add(1, Ordering::Relaxed);
        Claim(conn)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .idle_since
                .store(crate::clock::now_ms(), Ordering::Relaxed);
        }
    }
}

/// One server's connections on this thread.
struct Slot {
    state: Arc<ServerState>,
    conns: Vec<Arc<Conn>>,
    /// Connections being opened, and the requests waiting for them.
    connecting: usize,
    waiting: usize,
    opened: Arc<Notify>,
    /// The pool's keepalive_timeout: how long a connection may stay unused.
    keepalive: Duration,
}

thread_local! {
    static CONNS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

fn with_slot<R>(state: &Arc<ServerState>, f: impl FnOnce(&mut Slot) -> R) -> R {
    CONNS.with_borrow_mut(|m| {
        let slot = m.entry(state.uid).or_insert_with(|| Slot {
            state: Arc::clone(state),
            conns: Vec::new(),
            connecting: 0,
            waiting: 0,
            opened: Arc::new(Notify::new()),
            keepalive: Duration::from_secs(60),
        });
        f(slot)
    })
}

/// Decrements a counter of the slot when dropped (a connect or a wait that
/// ended, cancelled or not) and wakes the waiters.
struct SlotCount<'a> {
    state: &'a Arc<ServerState>,
    which: fn(&mut Slot) -> &mut usize,
    wake: bool,
}

impl Drop for SlotCount<'_> {
    fn drop(&mut self) {
        let notify = with_slot(self.state, |s| {
            let n = (self.which)(s);
            *n = n.saturating_sub(1);
            Arc::clone(&s.opened)
        });
        if self.wake {
            notify.notify_waiters();
        }
    }
}

/// Closes this thread's connections that are closed or draining, idle longer
/// than the pool's keepalive_timeout, to servers that left their pool, or made
/// under settings a reload replaced (called with the HTTP/1.1 sweep, every
/// second). A connection dropped here with streams still open ends when they do.
pub fn sweep() {
    let now = crate::clock::now_ms();
    CONNS.with_borrow_mut(|m| {
        m.retain(|_, slot| {
            if slot.state.is_retired() {
                return false;
            }
            let keepalive = slot.keepalive.as_millis() as u64;
            let epoch = slot.state.conn_epoch();
            slot.conns.retain(|c| {
                c.epoch >= epoch
                    && c.client.room(usize::MAX) != client::Room::Gone
                    && (c.active.load(Ordering::Relaxed) > 0
                        || c.idle_since.load(Ordering::Relaxed) + keepalive > now)
            });
            !slot.conns.is_empty() || slot.connecting > 0 || slot.waiting > 0
        })
    });
}

enum Step {
    Use(Claim),
    Wait(Arc<Notify>),
    Connect,
}

/// A connection with room for one more stream (claimed), opening one if none
/// has room; the time spent connecting is returned when this request waited for it.
/// `avoid` (a connection that just refused a stream) is taken only when no
/// other connection has room.
async fn claim(
    pool: &Pool,
    server: &Server,
    avoid: Option<&Weak<Conn>>,
) -> Result<(Claim, Duration), UpstreamError> {
    let limit = pool.http2.max_concurrent_streams as usize;
    let epoch = pool.conn_epoch;
    let state = &server.state;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + pool.connect_timeout;
    // waited for a connection being opened: that time is this request's connect time
    let mut waited = false;
    loop {
        let step = with_slot(state, |slot| {
            slot.keepalive = pool.keepalive_timeout;
            let mut found = None;
            let mut avoided = None;
            slot.conns.retain(|c| {
                // made under other settings: an older connection takes no
                // more streams (it ends with those it has), a newer one is
                // left to the pool in force (this request holds the pool of
                // a snapshot before a reload)
                if c.epoch != epoch {
                    return c.epoch > epoch;
                }
                match c.room(limit) {
                    Room::Gone => false,
                    Room::Full => true,
                    Room::Yes => {
                        if avoid.is_some_and(|a| std::ptr::eq(a.as_ptr(), Arc::as_ptr(c))) {
                            avoided = Some(Arc::clone(c));
                        } else if found.is_none() {
                            found = Some(Arc::clone(c));
                        }
                        true
                    }
                }
            });
            if let Some(c) = found.or(avoided) {
                return Step::Use(Claim::new(c));
            }
            // a connection being opened takes `limit` streams: wait for it
            if slot.waiting < slot.connecting * limit {
                slot.waiting += 1;
                return Step::Wait(Arc::clone(&slot.opened));
            }
            slot.connecting += 1;
            Step::Connect
        });
        match step {
            Step::Use(c) => {
                let t = if waited {
                    started.elapsed()
                } else {
                    Duration::ZERO
                };
                return Ok((c, t));
            }
            Step::Wait(opened) => {
                waited = true;
                let _count = SlotCount {
                    state,
                    which: |s| &mut s.waiting,
                    wake: false,
                };
                let notified = opened.notified();
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err(UpstreamError::ConnectTimeout {
                        addr: server.addr,
                        timeout: pool.connect_timeout,
                    });
                }
            }
            Step::Connect => {
                let _count = SlotCount {
                    state,
                    which: |s| &mut s.connecting,
                    wake: true,
                };
                // boxed: the connect future (TCP, TLS, the h2 handshake) is
                // large and rare; inline, every request's future would carry it
                let conn = Box::pin(connect(pool, server)).await?;
                let elapsed = started.elapsed();
                pool.shared
                    .histograms
                    .connect_time
                    .observe(elapsed.as_secs_f64());
                let claim = Claim::new(Arc::clone(&conn));
                with_slot(state, |slot| slot.conns.push(conn));
                return Ok((claim, elapsed));
            }
        }
    }
}

/// This side's HTTP/2 settings for a pool's connections.
fn config(pool: &Pool) -> client::Config {
    client::Config {
        stream_window: pool.http2.initial_stream_window_size,
        conn_window: pool.http2.initial_connection_window_size,
        max_header_list: MAX_RESPONSE_HEADER_LIST,
        keepalive_interval: pool.http2.keepalive_interval,
        keepalive_timeout: pool.http2.keepalive_timeout,
    }
}

/// Opens a connection: TCP, TLS with ALPN h2 if the pool has `[pool.tls]`,
/// then the HTTP/2 preface and the server's SETTINGS, all within one
/// connect_timeout (the requests waiting for the connection have that one
/// deadline too: each step under a connect_timeout of its own could take
/// three).
async fn connect(pool: &Pool, server: &Server) -> Result<Arc<Conn>, UpstreamError> {
    let addr = server.addr;
    let timeout = pool.connect_timeout;
    let client = match tokio::time::timeout(timeout, setup(pool, server)).await {
        Ok(c) => c?,
        // (a connection's task already started ends as its handle goes)
        Err(_) => return Err(UpstreamError::ConnectTimeout { addr, timeout }),
    };
    Ok(Arc::new(Conn {
        client,
        active: AtomicUsize::new(0),
        idle_since: AtomicU64::new(crate::clock::now_ms()),
        epoch: pool.conn_epoch,
    }))
}

/// `connect`'s steps, which its one timeout bounds together (the TCP connect
/// and the TLS handshake keep timeouts of their own, never shorter than what
/// is left of it, and give the same ConnectTimeout).
async fn setup(pool: &Pool, server: &Server) -> Result<Connection, UpstreamError> {
    let addr = server.addr;
    let stream = connect_tcp(addr, pool.connect_timeout).await?;
    // (an HTTP/2 connection stays open for long, and carries many requests)
    keepalive_floor(&stream);
    match &pool.tls {
        None => handshake(pool, server, stream).await,
        Some(tls) => {
            let s = connect_tls(pool, tls, server, stream).await?;
            if s.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(UpstreamError::NoH2 { addr });
            }
            handshake(pool, server, s).await
        }
    }
}

async fn handshake<S>(pool: &Pool, server: &Server, io: S) -> Result<Connection, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = server.addr;
    let (client, task) = Connection::new(io, config(pool));
    tasks().spawn(async move {
        match task.await {
            Ok(()) => {}
            // the keepalive (or TCP's) found it dead: its streams failed
            Err(e @ client::Error::Io(std::io::ErrorKind::TimedOut)) => {
                tracing::warn!(%addr, error = %e, "HTTP/2 connection to the server timed out; closed");
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "HTTP/2 connection to the server ended with an error");
            }
        }
    });
    // The server's preface is its SETTINGS, and it answers the PING sent
    // after this side's: once the PONG is in, its SETTINGS_MAX_CONCURRENT_STREAMS
    // is known, and no stream is sent beyond it to be refused (one round
    // trip, once per connection), within `connect`'s timeout.
    if let Err(source) = client.ready().await {
        return Err(UpstreamError::H2Handshake { addr, source });
    }
    // a server that already sent GOAWAY, or allows no stream at all, takes
    // none on this connection: a failed connect (counted, retried on another
    // server), not a connection to drop and open again without end
    match client.room(1) {
        client::Room::Yes => Ok(client),
        client::Room::Full | client::Room::Gone => Err(UpstreamError::H2NoStreams { addr }),
    }
}

/// A request body as the HTTP/2 client takes it.
fn to_send(mut body: ReqBody) -> SendBody<ReqBody> {
    match &mut body {
        b if b.is_end_stream() => SendBody::Empty,
        // a body already in memory (kept for resending) goes whole, without
        // a task of its own
        ReqBody::Full(data @ Some(_)) => data.take().map_or(SendBody::Empty, SendBody::Whole),
        _ => SendBody::Stream(body),
    }
}

fn from_send(body: SendBody<ReqBody>) -> ReqBody {
    match body {
        SendBody::Empty => ReqBody::Full(None),
        SendBody::Whole(d) => ReqBody::Full(Some(d)),
        SendBody::Stream(b) => b,
    }
}

/// Starts a stream on a claimed connection: the request head now (encoded
/// from `parts`, which stay the caller's), the body as the server's windows
/// allow. The body comes back if the connection turned out to be draining.
// (the body handed back is large, and rare: moving it out is what it is for)
#[allow(clippy::result_large_err)]
fn start(
    claim: &Claim,
    pool: &Pool,
    server: &Server,
    parts: &http::request::Parts,
    after: &[(HeaderName, HeaderValue)],
    call: Option<CallDeadline>,
    body: SendBody<ReqBody>,
) -> Result<client::ResponseFuture, SendBody<ReqBody>> {
    // a call with a deadline tells the server the time left (the head is
    // encoded from the request kept for replays: a copy of its fields)
    let timed;
    let headers = match call {
        Some(c) => {
            let mut h = parts.headers.clone();
            h.insert(GRPC_TIMEOUT, c.header_value());
            timed = h;
            &timed
        }
        None => &parts.headers,
    };
    // :authority from Host (which it replaces), else the server's address
    let addr_text;
    let authority = match parts.headers.get(http::header::HOST) {
        Some(h) => h.as_bytes(),
        None => {
            addr_text = server.addr.to_string();
            addr_text.as_bytes()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(&b"/"[..], |p| p.as_str().as_bytes());
    let head = RequestHead {
        method: &parts.method,
        scheme: if pool.tls.is_some() { "https" } else { "http" },
        authority,
        path,
        headers,
        after,
    };
    let (response, pump) = claim.0.client.send(&head, body)?;
    if let Some(p) = pump {
        tasks().spawn(p);
    }
    Ok(response)
}

/// Sends `req` to `server` over HTTP/2. `again` rebuilds the request when its
/// body was kept: a stream the server did not process is sent again on another
/// connection (up to three times).
pub async fn send(
    pool: &Pool,
    server: &Server,
    req: Request<ReqBody>,
    again: Option<&(dyn Fn() -> Request<ReqBody> + Sync)>,
) -> Result<(Response<H2Body>, Duration), SendError> {
    let (parts, body) = req.into_parts();
    let progress = body.progress().cloned();
    let mut again = || again.map(|a| to_send(a().into_body()));
    match exchange(
        pool,
        server,
        &parts,
        &[],
        to_send(body),
        progress,
        &mut again,
    )
    .await
    {
        Ok(r) => Ok(r),
        Err((error, unsent)) => Err(SendError {
            error,
            unsent: unsent.map(|b| Box::new(Request::from_parts(parts, from_send(b)))),
        }),
    }
}

/// `send` for a request kept for replays (its body in memory): the head is
/// encoded from the kept one, not from a copy of it, with `after`'s fields
/// after its map's.
pub async fn send_kept(
    pool: &Pool,
    server: &Server,
    parts: &http::request::Parts,
    after: &[(HeaderName, HeaderValue)],
    body: Option<&Bytes>,
) -> Result<(Response<H2Body>, Duration), SendError> {
    let whole = || body.map_or(SendBody::Empty, |b| SendBody::Whole(b.clone()));
    let mut again = || Some(whole());
    match exchange(pool, server, parts, after, whole(), None, &mut again).await {
        Ok(r) => Ok(r),
        Err((error, unsent)) => Err(SendError {
            error,
            unsent: unsent.map(|b| {
                // (a request handed back has every field in its map)
                let mut parts = parts.clone();
                for (n, v) in after {
                    parts.headers.append(n.clone(), v.clone());
                }
                Box::new(Request::from_parts(parts, from_send(b)))
            }),
        }),
    }
}

/// The exchange on a stream of a connection with room. A failure comes with
/// the body when nothing was sent (no connection could be had), or when the
/// server did not process the stream (RFC 9113 8.7) on the last of the tries
/// here: the lifecycle may then send it to another server as it would a
/// request never sent. A stream the server did not process goes again, up to
/// three times, with the body `again` gives, if any.
async fn exchange(
    pool: &Pool,
    server: &Server,
    parts: &http::request::Parts,
    after: &[(HeaderName, HeaderValue)],
    body: SendBody<ReqBody>,
    progress: Option<Arc<super::body::ReqProgress>>,
    again: &mut (dyn FnMut() -> Option<SendBody<ReqBody>> + Send),
) -> Result<(Response<H2Body>, Duration), (UpstreamError, Option<SendBody<ReqBody>>)> {
    let addr = server.addr;
    let mut body = body;
    let mut connect_time = Duration::ZERO;
    let mut resent = 0;
    let mut drained = 0;
    let call = parts.extensions.get::<CallDeadline>().copied();
    // the connection that refused the last try (REFUSED_STREAM): the next
    // goes to another one with room, if there is one
    let mut refused_on: Option<Weak<Conn>> = None;
    loop {
        let claim = match claim(pool, server, refused_on.as_ref()).await {
            Ok((c, t)) => {
                connect_time += t;
                c
            }
            Err(error) => return Err((error, Some(body))),
        };
        let response = match start(&claim, pool, server, parts, after, call, body) {
            // draining since it was claimed: another connection (a few
            // times: a server that drains every connection at once fails)
            Err(b) if drained < 3 => {
                drained += 1;
                body = b;
                continue;
            }
            Err(b) => return Err((UpstreamError::H2NoStreams { addr }, Some(b))),
            Ok(f) => f,
        };
        // server_timeout counts from the end of the request, and bounds how
        // long the server may take none of it, as over HTTP/1.1 (a gRPC
        // call's deadline instead, if it has one)
        let timeout = pool.server_timeout;
        let sent = tokio::time::Instant::now();
        let deadline = answer_due(call, progress.as_deref(), timeout);
        let result = tokio::select! {
            r = response => Some(r),
            _ = deadline => None,
        };
        let error = match result {
            Some(Ok(resp)) => {
                let (mut parts, recv) = resp.into_parts();
                parts.version = http::Version::HTTP_11;
                let body = H2Body {
                    recv,
                    _claim: claim,
                };
                return Ok((Response::from_parts(parts, body), connect_time));
            }
            Some(Err(e)) if e.unprocessed() => match again() {
                Some(b) if resent < 3 => {
                    tracing::debug!(%addr, error = %e, "the server did not process the stream: sent again");
                    resent += 1;
                    // (unprocessed and reset: REFUSED_STREAM)
                    if matches!(e, client::Error::Reset(_)) {
                        refused_on = Some(Arc::downgrade(&claim.0));
                    }
                    body = b;
                    continue;
                }
                // still not processed after the resends here: handed back
                // as never sent, so that another server may have it
                Some(b) => {
                    tracing::debug!(%addr, error = %e, "the server did not process the stream again: handed back");
                    return Err((UpstreamError::H2Refused { addr, source: e }, Some(b)));
                }
                None => UpstreamError::H2 { addr, source: e },
            },
            Some(Err(source)) => UpstreamError::H2 { addr, source },
            None => {
                let e = UpstreamError::no_answer(addr, call, timeout, sent, progress.as_deref());
                // the connection may be the one that is gone (its flow
                // dropped on the way): a keepalive PING now rather than after
                // keepalive_interval, so that the requests after this one
                // do not go there too (a call's deadline that blames nobody
                // says nothing of the connection)
                if !e.is_client_fault() {
                    claim.0.client.probe();
                }
                e
            }
        };
        return Err((error, None));
    }
}

/// A response body from an HTTP/2 server: its DATA, then its trailers. Each
/// chunk handed on is released to its stream's flow-control window (the
/// connection's window came back as the chunk arrived).
#[derive(Debug)]
pub struct H2Body {
    recv: client::RecvBody,
    _claim: Claim,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = client::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, client::Error>>> {
        Pin::new(&mut self.recv).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Whether a request asked for trailers (`TE: trailers`), which gRPC servers
/// may require.
pub fn wants_trailers(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::TE).iter().any(|v| {
        let v = v.as_bytes();
        // (gRPC's exactly, most often)
        v == b"trailers"
            || v.split(|&b| b == b',').any(|t| {
                t.split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"trailers")
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_found_in_any_of_its_spellings() {
        let wants = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::TE, http::HeaderValue::from_str(v).unwrap());
            }
            wants_trailers(&h)
        };
        assert!(wants(&["trailers"]));
        assert!(wants(&["gzip, trailers"]));
        assert!(wants(&["TRAILERS;q=0.5"]));
        assert!(wants(&["gzip", " trailers "]));
        assert!(!wants(&[]));
        assert!(!wants(&["gzip"]));
        assert!(!wants(&["trailersx"]));
    }
}
