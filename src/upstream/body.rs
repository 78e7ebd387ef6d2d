//! Request bodies on their way to a backend (`ReqBody`: counted, timed for the
//! client's pauses, replayable when buffered) and response bodies from one.

use crate::pool::ServerState;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// `grpc-timeout`.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// A gRPC call's deadline, from its `grpc-timeout` under the pool's
/// `max_grpc_timeout`: a request extension. Its exchange waits for the answer
/// until `at`, instead of `server_timeout`, and each attempt tells the server
/// the time left.
#[derive(Clone, Copy, Debug)]
pub struct CallDeadline {
    pub at: tokio::time::Instant,
    /// The timeout it was given (what the error says).
    pub budget: Duration,
}

impl CallDeadline {
    /// The time left, as a `grpc-timeout` value: milliseconds rounded up (at
    /// least 1) while they fit in 8 digits, else seconds, minutes or hours.
    pub fn header_value(&self) -> http::HeaderValue {
        let left = self
            .at
            .saturating_duration_since(tokio::time::Instant::now());
        grpc_timeout_value(left)
    }
}

/// `d` as a `grpc-timeout` value (gRPC over HTTP/2: at most 8 digits and a
/// unit).
pub fn grpc_timeout_value(d: Duration) -> http::HeaderValue {
    const MAX: u128 = 99_999_999;
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    let v = if ms <= MAX {
        format!("{ms}m")
    } else if u128::from(d.as_secs()) <= MAX {
        format!("{}S", d.as_secs())
    } else if u128::from(d.as_secs() / 60) <= MAX {
        format!("{}M", d.as_secs() / 60)
    } else {
        format!("{}H", (d.as_secs() / 3600).min(99_999_999))
    };
    http::HeaderValue::from_str(&v).unwrap_or(http::HeaderValue::from_static("99999999H"))
}

/// Resolves when an exchange has waited too long for its answer: at the call's
/// deadline if it has one, else after `server_timeout` as
/// `ReqProgress::server_deadline` counts it.
pub(crate) async fn answer_due(
    call: Option<CallDeadline>,
    progress: Option<&ReqProgress>,
    server_timeout: Duration,
) {
    match call {
        Some(c) => tokio::time::sleep_until(c.at).await,
        None => ReqProgress::server_deadline(progress, server_timeout).await,
    }
}

/// A client's request body: from hyper (HTTP/1.1), or from rampart's own
/// HTTP/2 server.
pub enum ClientBody {
    Hyper(Incoming),
    H2(crate::http2::server::RecvBody),
    /// A body under the listener's `max_request_body`: how many more bytes
    /// it may bring (`ClientBody::capped`).
    Capped(Box<ClientBody>, u64),
}

/// Why a client's body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    H2(#[from] crate::http2::server::RecvError),
    #[error("the request body is longer than its max_request_body")]
    TooLarge,
}

impl ClientBody {
    /// `body`, refused once it brings more than `limit` bytes.
    pub fn capped(body: ClientBody, limit: u64) -> ClientBody {
        ClientBody::Capped(Box::new(body), limit)
    }

    /// From an HTTP/2 client (through a cap or not).
    pub fn is_h2(&self) -> bool {
        match self {
            ClientBody::H2(_) => true,
            ClientBody::Hyper(_) => false,
            ClientBody::Capped(b, _) => b.is_h2(),
        }
    }
}

impl ClientBodyError {
    /// The client went away (or reset its stream) mid-body, rather than
    /// breaking its framing. hyper's HTTP/1 decoder reports broken framing
    /// (a bad chunk size, chunk data not ended by CRLF) as an `io::Error` of
    /// kind `InvalidInput` or `InvalidData`; an end of input before the body's
    /// end (`UnexpectedEof`), a reset and any other I/O error are the client
    /// leaving, as HAProxy counts them (a client abort, not a bad request),
    /// and so is a TLS session that broke (a corrupt record, an alert).
    /// An HTTP/2 stream whose body breaks its content-length is reset by the
    /// server itself; what reaches a reader is the stream gone.
    pub fn is_incomplete(&self) -> bool {
        match self {
            ClientBodyError::Hyper(e) => {
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    if let Some(io) = c.downcast_ref::<std::io::Error>() {
                        if io
                            .get_ref()
                            .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
                        {
                            // a TLS session that broke (tokio-rustls reports
                            // every rustls error as InvalidData): gone
                            return true;
                        }
                        return !matches!(
                            io.kind(),
                            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                        );
                    }
                    cause = c.source();
                }
                true
            }
            ClientBodyError::H2(_) => true,
            ClientBodyError::TooLarge => false,
        }
    }

    /// Over the listener's `max_request_body`.
    pub fn is_too_large(&self) -> bool {
        matches!(self, ClientBodyError::TooLarge)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::from),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::from),
            ClientBody::Capped(b, left) => {
                let r = Pin::new(&mut **b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r {
                    let n = f.data_ref().map_or(0, |d| d.len() as u64);
                    match left.checked_sub(n) {
                        Some(l) => *left = l,
                        None => {
                            // (and stays over it: a later frame is refused too)
                            *left = 0;
                            return Poll::Ready(Some(Err(ClientBodyError::TooLarge)));
                        }
                    }
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
            ClientBody::Capped(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
            ClientBody::Capped(b, _) => b.size_hint(),
        }
    }
}

/// The body sent to a backend: the client's streaming body, or a buffered copy
/// (for requests that may be replayed on another server; `Full(None)`: no body).
pub enum ReqBody {
    Full(Option<Bytes>),
    Incoming {
        body: ClientBody,
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
/// [`ReqBody::Incoming`]'s `fault`: the body went over max_request_body.
pub const BODY_TOO_LARGE: u8 = 3;

/// Why a client's request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReqBodyError {
    #[error(transparent)]
    Client(#[from] ClientBodyError),
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
                if let Some(p) = progress {
                    p.pulled(r.is_pending());
                }
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
                    Poll::Ready(Some(Err(e))) if !e.is_incomplete() => {
                        if let Some(f) = fault {
                            let why = if e.is_too_large() {
                                BODY_TOO_LARGE
                            } else {
                                BODY_MALFORMED
                            };
                            f.store(why, Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            if let Some(server) = server {
                                server
                                    .traffic
                                    .bytes_in
                                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                            if let Some(s) = seen {
                                s.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                        }
                        // (trailers are the last frame, though an HTTP/1.1
                        // body does not say it has ended until polled again;
                        // and a body of a declared length has been sent whole
                        // with its last byte: hyper's client writes no
                        // trailers after a length, nor asks for them)
                        if f.is_trailers()
                            || body.is_end_stream()
                            || body.size_hint().exact() == Some(0)
                        {
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

impl Drop for ReqBody {
    fn drop(&mut self) {
        // Given up before its end by what sent it (hyper's client, once
        // writing to a server that answered early and closed failed): from
        // now on it is the server's turn, bounded by `server_timeout`, not
        // the client's that may never come.
        if let ReqBody::Incoming {
            progress: Some(p), ..
        } = self
        {
            if !p.is_done() {
                p.pulled(false);
            }
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
    /// When the sending side last asked the body for a frame (clock::now_ms).
    pulled_at: AtomicU64,
    /// That ask found nothing: the client is the one to send (client_timeout
    /// bounds its pause), not the server the one not reading.
    client_turn: AtomicBool,
}

impl ReqProgress {
    /// How long since the upload ended (the last ask for a frame), if it has.
    pub(crate) fn since_done(&self) -> Option<Duration> {
        self.is_done().then(|| {
            let at = self.pulled_at.load(Ordering::Relaxed);
            Duration::from_millis(crate::clock::now_ms().saturating_sub(at))
        })
    }

    /// The sending side asked for a frame; `pending`: the client had none.
    fn pulled(&self, pending: bool) {
        self.pulled_at
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.client_turn.store(pending, Ordering::Relaxed);
    }

    /// Resolves `timeout` after the upload is done, or once the server has not
    /// taken any of it for `timeout` while the client had some to give: the
    /// server stopped reading (a lock, a GC pause, an h2 window never opened),
    /// which nothing else notices, as the body is then not even polled
    /// (HAProxy's `timeout server` is an inactivity timeout both ways).
    pub(crate) async fn server_deadline(progress: Option<&Self>, timeout: Duration) {
        if let Some(p) = progress {
            let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            // the send starts now (the body may have waited for a server);
            // whose turn it is stays as the body last said
            p.pulled_at.store(crate::clock::now_ms(), Ordering::Relaxed);
            loop {
                if p.is_done() {
                    break;
                }
                let idle =
                    crate::clock::now_ms().saturating_sub(p.pulled_at.load(Ordering::Relaxed));
                let client_turn = p.client_turn.load(Ordering::Relaxed);
                if !client_turn && idle >= limit {
                    return;
                }
                let wait = if client_turn { limit } else { limit - idle };
                tokio::select! {
                    _ = p.wait() => break,
                    _ = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
                }
            }
        }
        tokio::time::sleep(timeout).await;
    }

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
