//! A backend exchange as bytes on a pooled plain socket: the request written
//! whole, the response head read back. The fast path copies the rest to its
//! client itself; for a client hyper serves (HTTP/2), `into_response` makes an
//! `http::Response` whose body (`RawBody`) is read and decoded as it is polled.

use crate::forwarded::{self, XForwarded};
use crate::h1::{self, BodyProgress, PooledBuf};
use crate::pool::{Pool, Server, ServerState};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::connect::connect_tcp;
use super::error::UpstreamError;
use super::idle::take_idle_raw;

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

/// Sends a complete request (`req`: in wire form, in two parts written as one,
/// as a head and the body that was read whole, so the body is not copied after
/// the head) to `server` on a pooled plain connection or a new one, and reads
/// the response head.
///
/// A pooled connection that the server closed meanwhile (the keep-alive race) is
/// replaced by a new one: at once when the request could not be written, and when
/// the server closed without answering if the request may be replayed.
pub async fn send_raw(
    pool: &Pool,
    server: &Server,
    req: [&[u8]; 2],
    replayable: bool,
    mut timer: Pin<&mut Sleep>,
) -> Result<RawExchange, UpstreamError> {
    if let Some(mut stream) = take_idle_raw(&server.state, pool.conn_epoch) {
        let sent = Instant::now();
        let timeout = pool.server_timeout;
        match exchange_raw(&mut stream, server.addr, req, timeout, timer.as_mut()).await {
            Ok(buf) => {
                return Ok(RawExchange {
                    stream,
                    buf,
                    connect_time: Duration::ZERO,
                })
            }
            Err(RawFailure::Unsent) => {}
            Err(RawFailure::NoAnswer(_)) if replayable => {}
            Err(RawFailure::NoAnswer(e)) if sent.elapsed() <= super::error::RACE_WINDOW => {
                return Err(UpstreamError::IdleRace {
                    addr: server.addr,
                    source: Box::new(e),
                })
            }
            Err(RawFailure::NoAnswer(e)) => return Err(e),
            Err(RawFailure::Failed(e)) => return Err(e),
        }
    }
    let started = Instant::now();
    let mut stream = connect_tcp(server.addr, pool.connect_timeout).await?;
    let connect_time = started.elapsed();
    pool.shared
        .histograms
        .connect_time
        .observe(connect_time.as_secs_f64());
    match exchange_raw(&mut stream, server.addr, req, pool.server_timeout, timer).await {
        Ok(buf) => Ok(RawExchange {
            stream,
            buf,
            connect_time,
        }),
        Err(RawFailure::Unsent) => Err(UpstreamError::ClosedBeforeSend { addr: server.addr }),
        Err(RawFailure::NoAnswer(e) | RawFailure::Failed(e)) => Err(e),
    }
}

/// The request written and the response head read within `timeout`, on
/// `timer` (`clock::by`: a fast-path connection's, for its requests one
/// after another).
async fn exchange_raw(
    s: &mut TcpStream,
    addr: SocketAddr,
    req: [&[u8]; 2],
    timeout: Duration,
    timer: Pin<&mut Sleep>,
) -> Result<PooledBuf, RawFailure> {
    let exchange = async {
        let mut n = s
            .write_vectored(&req.map(IoSlice::new))
            .await
            .map_err(|_| RawFailure::Unsent)?;
        if n == 0 {
            return Err(RawFailure::Unsent);
        }
        // what the first write left of each part
        for part in req {
            let sent = n.min(part.len());
            n -= sent;
            if sent < part.len() {
                s.write_all(&part[sent..])
                    .await
                    .map_err(|source| RawFailure::NoAnswer(UpstreamError::Io { addr, source }))?;
            }
        }
        let mut buf = PooledBuf::take();
        read_response_head(s, &mut buf, addr).await?;
        Ok(buf)
    };
    let at = tokio::time::Instant::now() + timeout;
    crate::clock::by(exchange, timer, at)
        .await
        .unwrap_or_else(|_| Err(RawFailure::Failed(UpstreamError::Timeout { addr, timeout })))
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
        // bytes taken off the front (empty lines, interim answers): let go of
        // in one drain, however many a read brought
        let mut skip = 0;
        let whole = loop {
            let blank = h1::empty_lines(&buf[skip..]);
            if blank > 0 {
                skip += blank;
                scanned = 0;
            }
            let Some(end) = h1::head_end(&buf[skip..], scanned) else {
                break false;
            };
            if !h1::is_interim(&buf[skip..skip + end]) {
                break true;
            }
            skip += end;
            scanned = 0;
        };
        if skip > 0 {
            buf.drain(..skip);
        }
        if whole {
            return Ok(());
        }
        scanned = buf.len().saturating_sub(3);
    }
}

/// The request head as an HTTP/1.1 server gets it on a plain socket: `parts`
/// as `proxy::headers::prepare_request` left them (origin-form target, Host
/// set, hop-by-hop fields gone, cookies on one line), for a body of `body`
/// bytes, already read whole, which is written after it (`send_raw`).
/// `length`: say the body's length when the fields do not (a body, or a
/// method that has one even when empty). X-Forwarded-* are `xf`'s, not the
/// client's.
pub fn wire_request(
    parts: &http::request::Parts,
    body: usize,
    length: bool,
    xf: &XForwarded<'_>,
) -> PooledBuf {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = PooledBuf::take();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if forwarded::incoming(name.as_str().as_bytes()) != forwarded::Incoming::Other
            || forwarded::replaced_by(xf.real_ip, name.as_str().as_bytes())
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if length && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    xf.write_wire(&mut out);
    out.extend_from_slice(b"\r\n");
    out
}

/// The response head of a raw exchange as an `http::Response` (for a client
/// served by rampart's HTTP/2 server or by hyper), its body read from the
/// connection as it comes and decoded from its HTTP/1.1 framing. With
/// `wire_head`, its fields stay in the body's buffer (`WireHead`).
pub(super) fn into_response(
    ex: RawExchange,
    pool: &Pool,
    server: &Server,
    head_request: bool,
    wire_head: bool,
) -> Result<Response<Box<RawBody>>, UpstreamError> {
    let addr = server.addr;
    let bad = |reason: String| UpstreamError::BadResponse { addr, reason };
    let mut buf = HeadBuf::Pooled(ex.buf);
    if !wire_head {
        // the head's values go into a `HeaderMap`: they will share the buffer
        // they were read into (with the body's first bytes, which go on from
        // it too) rather than take an allocation each
        buf.share();
    }
    let mut slots = h1::header_slots();
    let r = match h1::parse_response(&buf, &mut slots, head_request) {
        Ok(Some(r)) if r.status == 101 => return Err(UpstreamError::Unexpected101 { addr }),
        Ok(Some(r)) => r,
        Ok(None) => return Err(bad("incomplete response head".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    let status = StatusCode::from_u16(r.status).map_err(|e| bad(e.to_string()))?;
    // (an answer without a body, to HEAD or a 204 or 304, carries its GET's
    // field: nothing is decoded)
    if r.framing != h1::Framing::Empty && r.other_codings() {
        // the body is decoded from its chunked framing only, and its head
        // goes without Transfer-Encoding: the client would take the coded
        // bytes for the body (as a request with such a coding gets 501)
        return Err(bad(
            "a transfer coding other than chunked, which rampart does not decode".into(),
        ));
    }
    let fields = if wire_head {
        WireHead::of(&r, &buf)
    } else {
        None
    };
    let mut headers = HeaderMap::new();
    if fields.is_none() {
        let head = match &buf {
            HeadBuf::Shared(b) => b.clone(),
            // fields the wire form does not hold (more than `WIRE_FIELDS`, or
            // a head of 64 KiB or more): one copy of the head
            HeadBuf::Pooled(b) => Bytes::copy_from_slice(&b[..r.len]),
        };
        // where a value lies in the buffer is where it lies in `head`
        let shared = |v: &[u8]| match offset(v, &buf).filter(|at| at + v.len() <= r.len) {
            Some(at) => head.slice(at..at + v.len()),
            None => Bytes::copy_from_slice(v),
        };
        // a filter's lower bound is 0: its upper bound is the head's field count
        headers.reserve(r.end_to_end().size_hint().1.unwrap_or(0));
        for (name, value) in r.end_to_end() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = shared(value);
            let value = HeaderValue::from_maybe_shared(value).map_err(|e| bad(e.to_string()))?;
            headers.append(name, value);
        }
    }
    let keepalive = pool.keepalive_for(r.keepalive);
    let (from, framing, reusable) = (r.len, r.framing, r.reusable);
    // A chunked body broken in the bytes read with its head is refused here,
    // before the head goes to the client, as an invalid head is: the client
    // gets a 502 (or a retry), not a head and a reset. (Scanned once more as
    // it is polled: only the bytes read with the head, of chunked answers.)
    if let (h1::Framing::Chunked, Some(first)) = (framing, buf.get(from..)) {
        if !first.is_empty() {
            h1::ChunkedScanner::default()
                .feed(first)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    // (boxed where it is made: a response is moved several times)
    let mut body = Box::new(RawBody {
        stream: Some(ex.stream),
        buf: Some(buf),
        more: BytesMut::new(),
        from,
        left: BodyProgress::new(framing),
        done: false,
        checkin: reusable.then(|| {
            (
                Arc::clone(&server.state),
                pool.conn_epoch,
                pool.max_idle_per_server,
                keepalive,
            )
        }),
        fields,
    });
    if matches!(body.left, BodyProgress::Length(0)) {
        body.end();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Where `v` starts in `buf`, if it lies inside it.
fn offset(v: &[u8], buf: &[u8]) -> Option<usize> {
    (v.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|at| at + v.len() <= buf.len())
}

/// The end-to-end fields of a response head, as where they lie in the
/// buffer it was read into: for a client served by rampart's HTTP/2 server,
/// which encodes them from there (`RawBody::wire_fields`), with no
/// `HeaderMap` made and dropped between. Up to `WIRE_FIELDS` fields, in a head
/// of up to 64 KiB - 1 (offsets are u16); a larger head gets a `HeaderMap`.
#[derive(Debug)]
struct WireHead {
    at: [[u16; 4]; WIRE_FIELDS],
    n: u8,
}

const WIRE_FIELDS: usize = 16;

impl WireHead {
    fn of(r: &h1::RespHead<'_>, buf: &[u8]) -> Option<WireHead> {
        let mut w = WireHead {
            at: [[0; 4]; WIRE_FIELDS],
            n: 0,
        };
        let span = |v: &[u8]| -> Option<[u16; 2]> {
            let at = offset(v, buf)?;
            Some([u16::try_from(at).ok()?, u16::try_from(at + v.len()).ok()?])
        };
        for (name, value) in r.end_to_end() {
            let slot = w.at.get_mut(usize::from(w.n))?;
            let [a, b] = span(name.as_bytes())?;
            let [c, d] = span(value)?;
            *slot = [a, b, c, d];
            w.n += 1;
        }
        Some(w)
    }
}

/// A response body read straight from a plain HTTP/1.1 connection: the bytes
/// that came with the head first, then what the socket gives, the framing taken
/// off. At its end the connection goes back to the idle pool, if the server
/// allows it and nothing followed the body.
#[derive(Debug)]
pub struct RawBody {
    stream: Option<TcpStream>,
    /// The buffer the head was read into, with the body's first bytes; let
    /// go once they are taken.
    buf: Option<HeadBuf>,
    /// What is read after them: its data goes on as it is, split off (a
    /// frame's bytes are not copied out of a reused buffer).
    more: BytesMut,
    /// Where the unread bytes in `buf` start.
    from: usize,
    left: BodyProgress,
    done: bool,
    /// The server, the pool's connection epoch and idle cap, and the
    /// keep-alive time, when the connection may carry another request.
    checkin: Option<(Arc<ServerState>, u64, Option<usize>, Duration)>,
    /// The response's fields, when they were left in `buf` (the response's
    /// `HeaderMap` is then empty); gone once `buf` is read into again.
    fields: Option<WireHead>,
}

/// The buffer a response head was read into, with the body's first bytes:
/// pooled, or shared once bytes of it go on as they lie (`Bytes` slices of
/// it, `Bytes::from_owner`; back to the thread's spares when the last of
/// them is dropped).
#[derive(Debug)]
enum HeadBuf {
    Pooled(PooledBuf),
    Shared(Bytes),
}

impl std::ops::Deref for HeadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            HeadBuf::Pooled(b) => b,
            HeadBuf::Shared(b) => b,
        }
    }
}

impl HeadBuf {
    /// The buffer's bytes as `Bytes`, shared from now on.
    fn share(&mut self) -> Bytes {
        let b = match std::mem::replace(self, HeadBuf::Shared(Bytes::new())) {
            HeadBuf::Pooled(p) => Bytes::from_owner(p),
            HeadBuf::Shared(b) => b,
        };
        *self = HeadBuf::Shared(b.clone());
        b
    }
}

/// Body bytes that came with the head go on as a slice of its buffer from
/// this many on; fewer are copied while the buffer is not shared yet, which
/// costs less than sharing it (an allocation, and reference counts) and lets
/// it go back sooner. Once it is shared (a head whose values went into a
/// `HeaderMap`, or a longer run before), every run is a slice.
const SHARE_MIN: usize = 1024;

/// Why a response body read from a plain HTTP/1.1 connection broke off.
#[derive(Debug, thiserror::Error)]
pub enum RawBodyError {
    #[error("reading the response body: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Chunked(#[from] h1::ChunkError),
    #[error("the server closed the connection inside the response body")]
    Closed,
}

impl RawBody {
    /// Calls `f` with each field of the response head left in the buffer
    /// (see `WireHead`), name as the server wrote it and value. Before the
    /// body is first polled only: the buffer is reused for the body then, and
    /// nothing is called.
    pub fn wire_fields(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        let Some(w) = &self.fields else {
            return;
        };
        let Some(buf) = &self.buf else {
            return;
        };
        for [a, b, c, d] in &w.at[..usize::from(w.n)] {
            let name = buf.get(usize::from(*a)..usize::from(*b));
            let value = buf.get(usize::from(*c)..usize::from(*d));
            if let (Some(name), Some(value)) = (name, value) {
                f(name, value);
            }
        }
    }

    /// Nothing more comes: the connection is closed, not pooled.
    fn stop(&mut self) {
        self.done = true;
        self.stream = None;
    }

    /// The body is complete: the connection goes back to the pool when reusable.
    fn end(&mut self) {
        self.done = true;
        let stream = self.stream.take();
        // bytes after the end of the body: the connection is out of step
        if self.from < self.buf.as_ref().map_or(0, |b| b.len()) || !self.more.is_empty() {
            return;
        }
        if let (Some(s), Some((state, epoch, max_idle, keepalive))) = (stream, self.checkin.take())
        {
            super::idle::checkin_raw(&state, epoch, max_idle, keepalive, s);
        }
    }

    /// The next piece of the body from the bytes that came with the head: the
    /// data (possibly empty) and whether the body is complete after it.
    fn take_buffered(&mut self) -> Result<(Bytes, bool), RawBodyError> {
        let Some(buf) = &mut self.buf else {
            return Ok((Bytes::new(), false));
        };
        let from = self.from;
        let (n, piece, complete) = piece(&mut self.left, &buf[from..])?;
        let data = match piece {
            Piece::Span(r) if r.len() < SHARE_MIN && matches!(buf, HeadBuf::Pooled(_)) => {
                Bytes::copy_from_slice(&buf[from + r.start..from + r.end])
            }
            Piece::Span(r) => buf.share().slice(from + r.start..from + r.end),
            Piece::Joined(v) => Bytes::from(v),
        };
        self.from += n;
        Ok((data, complete))
    }

    /// The same from the bytes read after them, split off without a copy.
    fn take_more(&mut self) -> Result<(Bytes, bool), RawBodyError> {
        let (n, piece, complete) = piece(&mut self.left, &self.more)?;
        let taken = self.more.split_to(n).freeze();
        let data = match piece {
            Piece::Span(r) => taken.slice(r),
            Piece::Joined(v) => Bytes::from(v),
        };
        Ok((data, complete))
    }
}

/// Where a piece of a body lies in the bytes it was read from.
enum Piece {
    /// One run of them.
    Span(std::ops::Range<usize>),
    /// Several (chunks), joined.
    Joined(Vec<u8>),
}

/// Takes the body's framing off the start of `data`: how many bytes of it
/// were used, the data in them, and whether the body is complete after them.
fn piece(left: &mut BodyProgress, data: &[u8]) -> Result<(usize, Piece, bool), RawBodyError> {
    match left {
        BodyProgress::Chunked(s) => {
            let mut piece = Piece::Span(0..0);
            let end = s.decode(data, |d| {
                let at = offset(d, data).unwrap_or(0);
                match &mut piece {
                    Piece::Span(r) if r.start == r.end => *r = at..at + d.len(),
                    Piece::Span(r) => {
                        let mut v = Vec::with_capacity(r.len() + d.len());
                        v.extend_from_slice(&data[r.clone()]);
                        v.extend_from_slice(d);
                        piece = Piece::Joined(v);
                    }
                    Piece::Joined(v) => v.extend_from_slice(d),
                }
            })?;
            Ok((end.unwrap_or(data.len()), piece, end.is_some()))
        }
        left => {
            let (n, complete) = left.feed(data)?;
            Ok((n, Piece::Span(0..n), complete))
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = RawBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RawBodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let buffered = this.from < this.buf.as_ref().map_or(0, |b| b.len());
            if buffered || !this.more.is_empty() {
                let taken = if buffered {
                    this.take_buffered()
                } else {
                    this.take_more()
                };
                let (data, complete) = match taken {
                    Ok(r) => r,
                    Err(e) => {
                        this.stop();
                        return Poll::Ready(Some(Err(e)));
                    }
                };
                if complete {
                    this.end();
                }
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
            }
            let Some(s) = &this.stream else {
                return Poll::Ready(None);
            };
            // the head's buffer is all taken: it goes back, with the fields
            // that were left in it
            this.buf = None;
            this.fields = None;
            if this.more.capacity() - this.more.len() < h1::BUF_SIZE / 4 {
                // the room of frames already written is used again
                this.more.reserve(h1::BUF_SIZE);
            }
            let read = match s.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => s.try_read_buf(&mut this.more),
                Poll::Ready(Err(e)) => Err(e),
            };
            match read {
                // a body that ends when the server closes has ended
                Ok(0) if matches!(this.left, BodyProgress::Close) => {
                    this.stop();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.stop();
                    return Poll::Ready(Some(Err(RawBodyError::Closed)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.stop();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match &self.left {
            BodyProgress::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::Framing;

    /// A server that streams interim answers without end: the exchange still
    /// ends at its timeout. (Its reads here do not spend the task's coop budget, which
    /// `clock::fired` is for: `a_turn_that_spends_the_budget_still_arms_the_idle_timer`
    /// in proxy::tcp shows that.)
    #[tokio::test]
    async fn a_server_streaming_interim_answers_is_timed_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = l.accept().unwrap();
            let chunk = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        let timeout = Duration::from_millis(300);
        let timer = crate::clock::timer();
        tokio::pin!(timer);
        let req = [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], &[]];
        let ex = exchange_raw(&mut s, addr, req, timeout, timer.as_mut());
        let r = tokio::time::timeout(Duration::from_secs(20), ex)
            .await
            .expect("never timed out");
        assert!(
            matches!(r, Err(RawFailure::Failed(UpstreamError::Timeout { .. }))),
            "not a timeout"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(s);
        server.join().unwrap();
    }

    /// What `piece` takes from each of `reads` in turn (as `RawBody` does
    /// with what each read gives), as (bytes used, data, complete).
    fn pieces(framing: Framing, reads: &[&[u8]]) -> Vec<(usize, Vec<u8>, bool)> {
        let mut left = BodyProgress::new(framing);
        reads
            .iter()
            .map(|data| {
                let (n, p, complete) = piece(&mut left, data).unwrap();
                let bytes = match p {
                    Piece::Span(r) => data[r].to_vec(),
                    Piece::Joined(v) => v,
                };
                (n, bytes, complete)
            })
            .collect()
    }

    /// A body whose first `body.len()` bytes came after a 4-byte head in
    /// one pooled buffer, its length said.
    fn buffered(body: &[u8]) -> RawBody {
        let mut buf = PooledBuf::take();
        buf.extend_from_slice(b"HEAD");
        buf.extend_from_slice(body);
        RawBody {
            stream: None,
            buf: Some(HeadBuf::Pooled(buf)),
            more: BytesMut::new(),
            from: 4,
            left: BodyProgress::new(Framing::Length(body.len() as u64)),
            done: false,
            checkin: None,
            fields: None,
        }
    }

    /// Whether `data` lies inside `b`'s bytes.
    fn inside(data: &[u8], b: &RawBody) -> bool {
        let buf = b.buf.as_deref().unwrap_or_default();
        offset(data, buf).is_some()
    }

    #[test]
    fn long_body_bytes_read_with_the_head_go_on_from_its_buffer_and_short_ones_are_copied() {
        let out = h1::spare_out();
        // long: a slice of the head's buffer, which stays out while the
        // slice lives and goes back to the spares when it is dropped
        let long: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut b = buffered(&long);
        let (data, complete) = b.take_buffered().unwrap();
        assert!(complete);
        assert_eq!(&data[..], &long[..]);
        assert!(inside(&data, &b), "the long body was copied");
        drop(b);
        assert_eq!(h1::spare_out(), out + 1, "the slice holds the buffer");
        drop(data);
        assert_eq!(h1::spare_out(), out, "the buffer went back");
        // short: copied, and the buffer goes back with the body
        let mut b = buffered(b"hello");
        let (data, complete) = b.take_buffered().unwrap();
        assert!(complete);
        assert_eq!(&data[..], b"hello");
        assert!(!inside(&data, &b), "a short body is copied");
        drop(b);
        assert_eq!(h1::spare_out(), out);
    }

    #[test]
    fn a_piece_is_one_span_of_what_was_read_unless_chunks_must_be_joined() {
        // a known length: the span up to it, and no further
        assert_eq!(
            pieces(Framing::Length(5), &[b"abc", b"deXY"]),
            [(3, b"abc".to_vec(), false), (2, b"de".to_vec(), true)]
        );
        // until close: all of it
        assert_eq!(
            pieces(Framing::Close, &[b"abc"]),
            [(3, b"abc".to_vec(), false)]
        );
        // one chunk's data, across reads: spans, the framing left out
        assert_eq!(
            pieces(Framing::Chunked, &[b"6\r\nabc", b"def\r\n0\r\n\r\n"]),
            [(6, b"abc".to_vec(), false), (10, b"def".to_vec(), true)]
        );
        // two chunks and a third begun in one read: joined, in order
        assert_eq!(
            pieces(
                Framing::Chunked,
                &[
                    b"2\r\nab\r\n3;x=y\r\ncde\r\n4\r\nfg",
                    b"hi\r\n0\r\n\r\nNEXT"
                ]
            ),
            [(24, b"abcdefg".to_vec(), false), (9, b"hi".to_vec(), true)]
        );
    }
}
