//! Talking to backends: connecting (`connect`), the idle connections kept per
//! worker (`idle`), request and response bodies (`body`), what can go wrong
//! (`error`), sending through hyper (here) or as bytes on a plain socket (`raw`:
//! the fast path's requests, and bodiless or buffered ones from HTTP/2 clients),
//! and HTTP/2 servers (`http2`).

mod body;
mod connect;
mod error;
pub mod http2;
mod idle;
mod raw;

pub use body::{
    grpc_timeout_value, CallDeadline, ClientBody, ClientBodyError, ReqBody, ReqBodyError,
    ReqProgress, BODY_MALFORMED, BODY_STALLED, BODY_TOO_LARGE, GRPC_TIMEOUT,
};
pub(crate) use connect::is_admin;
pub use connect::{admin_listening, connect_tcp, connect_tcp_by, connect_tls, tasks};
pub use error::{SendError, UpstreamError};
pub use idle::{checkin, checkin_raw, take_idle_raw, Private, Sender, Via};
pub use raw::{send_raw, wire_request, RawBody, RawBodyError, RawExchange};

use crate::pool::{Pool, Server};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use self::body::answer_due;
use self::connect::connect_http;
use self::idle::take_idle;

/// Closes this thread's idle connections (HTTP/1.1 and HTTP/2) that were
/// closed by the server, have outlived their keep-alive timeout, or belong to a
/// member that left its pool. Each worker calls it every second and when members
/// are retired.
pub fn sweep_idle() {
    idle::sweep();
    http2::sweep();
}

/// Sends a request already in wire form (`wire_request`'s head, and the body
/// read whole) to a plain HTTP/1.1
/// server on a pooled socket shared with the fast path, or a new one, for a
/// client that hyper serves (HTTP/2 above all): no hyper client dispatch, no
/// connection task. The response body is read from the socket as it is polled.
/// With `wire_head`, the response's fields stay where they were read, for
/// `RespBody::wire_fields`, and its `HeaderMap` is empty (a head with more
/// fields than `WireHead` holds gets its map all the same).
pub async fn send_wire(
    pool: &Pool,
    server: &Server,
    wire: [&[u8]; 2],
    replayable: bool,
    head: bool,
    wire_head: bool,
) -> Result<Exchange, UpstreamError> {
    let timer = crate::clock::timer();
    tokio::pin!(timer);
    let ex = send_raw(pool, server, wire, replayable, timer).await?;
    let connect_time = ex.connect_time;
    let response = raw::into_response(ex, pool, server, head, wire_head)?;
    Ok(Exchange {
        response: response.map(RespBody::Raw),
        sender: None,
        connect_time,
    })
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

/// Sends a request kept for replays to a server of an HTTP/2 pool (`protocol =
/// "h2"`), its head encoded from the kept one rather than from a copy.
pub async fn send_kept(
    pool: &Pool,
    server: &Server,
    parts: &http::request::Parts,
    after: &[(http::HeaderName, http::HeaderValue)],
    body: Option<&Bytes>,
) -> Result<Exchange, SendError> {
    let (response, connect_time) = http2::send_kept(pool, server, parts, after, body).await?;
    Ok(Exchange {
        response: response.map(RespBody::H2),
        sender: None,
        connect_time,
    })
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
        Some(v) => v.private.take(&server.state, pool.conn_epoch),
        None => take_idle(&server.state, pool.conn_epoch),
    };
    if let Some(mut sender) = idle {
        // A pooled connection is ready at once; one that is not (still busy, or
        // half dead) is abandoned rather than waited for.
        let ready = tokio::time::timeout(pool.connect_timeout, sender.ready()).await;
        if matches!(ready, Ok(Ok(()))) {
            let sent = Instant::now();
            match send_on(pool, server, &mut sender, req).await {
                Ok(response) => return Ok(h1_exchange(response, sender, Duration::ZERO)),
                Err(SendFailure::Unsent(r)) => req = *r,
                Err(SendFailure::Failed(error)) => match (replay, &error) {
                    // The server closed the idle connection as we wrote to it (the
                    // keep-alive race): the request never reached the application,
                    // so a replayable one goes again on a new connection.
                    (Some(again), UpstreamError::Reset { source, .. })
                        if keepalive_race(source) =>
                    {
                        req = again();
                    }
                    // ... and one that may not be replayed fails, but not as
                    // the server's fault
                    (None, UpstreamError::Reset { source, .. })
                        if keepalive_race(source) && sent.elapsed() <= error::RACE_WINDOW =>
                    {
                        return Err(SendError {
                            error: UpstreamError::IdleRace {
                                addr: server.addr,
                                source: Box::new(error),
                            },
                            unsent: None,
                        })
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

/// Whether a request on a reused connection failed as one does when the
/// server closed the idle connection as the request was written to it (the
/// keep-alive race): hyper saw the answer cut off before it began, the
/// connection closed, or the request canceled; or the server reset it, which
/// hyper reports as an I/O error (ECONNRESET, EPIPE, ECONNABORTED), as the
/// raw path takes any read error before an answer's first byte. A failure of
/// the request's own body (`is_user`) is not the server's doing.
fn keepalive_race(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || (!e.is_user() && reset(e))
}

/// Whether `e`, or an error in its chain of sources, is the peer's reset of
/// the connection.
fn reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
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
    let mut req = req;
    let call = req.extensions().get::<CallDeadline>().copied();
    if let Some(c) = call {
        // the time left, as the server should count it
        req.headers_mut().insert(GRPC_TIMEOUT, c.header_value());
    }
    // server_timeout counts from the end of the request (an upload may take
    // longer), and bounds how long the server may stop reading it.
    let progress = req.body().progress().cloned();
    let sent = tokio::time::Instant::now();
    let deadline = answer_due(call, progress.as_deref(), timeout);
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
        None => Err(SendFailure::Failed(UpstreamError::no_answer(
            server.addr,
            call,
            timeout,
            sent,
            progress.as_deref(),
        ))),
    }
}

/// A response body from a backend: hyper's (HTTP/1.1) or an HTTP/2 stream's.
#[derive(Debug)]
pub enum RespBody {
    H1(Incoming),
    H2(http2::H2Body),
    /// Read straight from a plain socket (a request sent as bytes); boxed, as
    /// it holds the socket and its buffer.
    Raw(Box<raw::RawBody>),
}

/// Why a response body from a backend broke off.
#[derive(Debug, thiserror::Error)]
pub enum RespBodyError {
    #[error(transparent)]
    H1(#[from] hyper::Error),
    #[error("HTTP/2 stream: {0}")]
    H2(#[from] crate::http2::client::Error),
    #[error(transparent)]
    Raw(#[from] raw::RawBodyError),
}

impl RespBody {
    /// The response's fields that were left in the body's buffer (see
    /// `send_wire`), before the body is first polled; none for the others.
    pub fn wire_fields(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        if let RespBody::Raw(b) = self {
            b.wire_fields(f);
        }
    }
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
            RespBody::Raw(b) => Pin::new(&mut **b)
                .poll_frame(cx)
                .map_err(RespBodyError::Raw),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::H1(b) => b.is_end_stream(),
            RespBody::H2(b) => b.is_end_stream(),
            RespBody::Raw(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::H1(b) => b.size_hint(),
            RespBody::H2(b) => b.size_hint(),
            RespBody::Raw(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reset;
    use std::io::{Error, ErrorKind};

    /// An error wrapping its cause, as hyper's wraps an I/O error.
    #[derive(Debug)]
    struct Wrapped(Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "connection error: {}", self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_reset_anywhere_in_the_chain_is_the_keepalive_race() {
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionAborted,
        ] {
            assert!(reset(&Error::from(kind)), "{kind:?}");
            assert!(reset(&Wrapped(Error::from(kind))), "{kind:?} wrapped");
            assert!(
                reset(&Wrapped(Error::from_raw_os_error(match kind {
                    ErrorKind::ConnectionReset => libc::ECONNRESET,
                    ErrorKind::BrokenPipe => libc::EPIPE,
                    _ => libc::ECONNABORTED,
                }))),
                "{kind:?} from the OS"
            );
        }
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::ConnectionRefused,
            ErrorKind::InvalidData,
            ErrorKind::Other,
        ] {
            assert!(!reset(&Error::from(kind)), "{kind:?}");
            assert!(!reset(&Wrapped(Error::from(kind))), "{kind:?} wrapped");
        }
    }
}
