//! rampart's HTTP/2 server (src/http2/server.rs) against whatever bytes a
//! client sends: no panic, no hang, the connection ends once the client has
//! closed its side, and what the server wrote is HTTP/2 a client can take:
//! - whole frames, each within the largest SETTINGS_MAX_FRAME_SIZE the client
//!   could have set, the control frames of their fixed lengths;
//! - header blocks that decode, an answer's starting with `:status` and
//!   holding no other pseudo-header, every name lowercase and none
//!   connection-specific (the service's answers carry `Connection` and
//!   `Transfer-Encoding`, which must be left out);
//! - no more DATA than the client's windows could have allowed, on the
//!   connection and on each stream;
//! - no frame on a stream after the server reset it, only WINDOW_UPDATE and
//!   RST_STREAM after its END_STREAM, no DATA before HEADERS, no answer on a
//!   stream the client did not open.
//!
//! The first byte picks the server's settings (small windows, one stream at
//! a time, a small header list limit, a graceful shutdown once the input is
//! in, ...; with bit 6, a second byte picks the timers: a keep-alive ping,
//! the idle timeout, a client that reads nothing until the server has ended);
//! the rest is what the client sends after the preface (with bit 7 set, the
//! preface too).
//! The service checks each request is one an HTTP/1.1 server can be sent
//! (no connection-specific field, `TE: trailers` only, clean values, one
//! content-length and a body that ends at it, an origin-form target), reads
//! its body and answers by its path's last byte: a short body, 150,000 bytes
//! in pieces (past every initial window; on a path of odd length, broken off
//! before the first or after it), the request's body echoed with trailers and
//! an HTTP/1.1 server's fields, or at once with no body.
#![no_main]
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use rampart::http2::frame::{self, Head};
use rampart::http2::hpack::Decoder;
use rampart::http2::server::{serve, HeaderListTooLarge, RecvBody, Settings, WireFields};
use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

/// A response body: pieces, each after a turn of its own (the stream's waker
/// path), then trailers; `wire` adds an HTTP/1.1 server's fields, as the
/// proxy's raw answers do. With `fail`, an error once `sent` pieces are out
/// (a backend that broke off its answer).
struct Answer {
    pieces: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    wire: bool,
    yielded: bool,
    fail: Option<usize>,
    sent: usize,
}

/// The error of a body that broke off.
#[derive(Debug)]
struct BrokenOff;

impl std::fmt::Display for BrokenOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer broke off")
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = BrokenOff;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.yielded && self.pieces.len() > 1 {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        if self.fail == Some(self.sent) {
            return Poll::Ready(Some(Err(BrokenOff)));
        }
        self.sent += 1;
        if let Some(p) = self.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match self.trailers.take() {
            Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.trailers.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.pieces.iter().map(|p| p.len() as u64).sum())
    }
}

impl WireFields for Answer {
    fn wire_fields(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        if self.wire {
            f(b"Content-Type", b"text/plain");
            f(b"X-Backend", b"fuzz");
        }
    }
}

type Service = Pin<Box<dyn Future<Output = Response<Answer>>>>;

fn answer(req: Request<RecvBody>) -> Service {
    Box::pin(async move {
        let mut resp = Response::new(Answer {
            pieces: VecDeque::new(),
            trailers: None,
            wire: false,
            yielded: false,
            fail: None,
            sent: 0,
        });
        // hop-by-hop fields an HTTP/1.1 server could send: never on HTTP/2
        let h = resp.headers_mut();
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        if req.extensions().get::<HeaderListTooLarge>().is_some() {
            assert!(
                req.headers().is_empty(),
                "a list over the limit kept fields"
            );
            *resp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            return resp;
        }
        let length = well_formed(&req);
        let mode = req.uri().path().bytes().last().unwrap_or(0) % 4;
        let path_len = req.uri().path().len();
        if mode == 3 {
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return resp;
        }
        let mut body = req.into_body();
        let mut got = Vec::new();
        let mut total = 0u64;
        let ended = loop {
            match body.frame().await {
                None => break true,
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        total += d.len() as u64;
                        let room = (1usize << 20).saturating_sub(got.len());
                        got.extend_from_slice(&d[..d.len().min(room)]);
                    } else if let Some(t) = f.trailers_ref() {
                        fields_well_formed(t);
                    }
                }
                Some(Err(_)) => break false,
            }
        };
        if let (true, Some(n)) = (ended, length) {
            // RFC 9113 8.1.1: else malformed (what an HTTP/1.1 server would
            // take as a request boundary)
            assert_eq!(
                total, n,
                "a body that ended at other than its content-length"
            );
        }
        let a = resp.body_mut();
        match mode {
            0 => a.pieces.push_back(Bytes::from_static(b"ok")),
            1 => {
                for _ in 0..3 {
                    a.pieces.push_back(Bytes::from(vec![b'x'; 50_000]));
                }
                // (and on a path of odd length, broken off: before any piece
                // where its length is 1 modulo 4, after the first where 3)
                a.fail = (path_len % 2 == 1).then_some(path_len % 4 / 2);
            }
            _ => {
                a.pieces.push_back(Bytes::from(got));
                let mut t = HeaderMap::new();
                t.insert("grpc-status", HeaderValue::from_static("0"));
                a.trailers = Some(t);
                a.wire = true;
            }
        }
        resp
    })
}

/// What the server may hand its service, which sends it on as HTTP/1.1
/// (RFC 9113 8.2 and 8.3): no connection-specific field, a `TE` of
/// `trailers` only, values without edge whitespace or CR, LF or NUL, one
/// content-length of digits, a path in origin form (or `*` for OPTIONS) but
/// for CONNECT. The content-length, if any.
fn well_formed(req: &Request<RecvBody>) -> Option<u64> {
    fields_well_formed(req.headers());
    if let Some(te) = req.headers().get(http::header::TE) {
        assert_eq!(te.as_bytes(), b"trailers", "a TE other than trailers");
    }
    let uri = req.uri();
    if req.method() != http::Method::CONNECT {
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
        assert!(
            target.starts_with('/') || (target == "*" && req.method() == http::Method::OPTIONS),
            "a request target {target:?}"
        );
    }
    let mut lengths = req.headers().get_all(http::header::CONTENT_LENGTH).iter();
    let n = lengths.next().map(|v| {
        let s = std::str::from_utf8(v.as_bytes()).expect("a content-length of text");
        assert!(
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
            "a content-length {s:?}"
        );
        s.parse::<u64>().expect("a content-length that fits")
    });
    assert!(lengths.next().is_none(), "two content-lengths");
    n
}

fn fields_well_formed(h: &HeaderMap) {
    for (name, value) in h {
        assert!(
            !matches!(
                name.as_str(),
                "connection" | "transfer-encoding" | "keep-alive" | "upgrade" | "proxy-connection"
            ),
            "a connection-specific field reached the service: {name}"
        );
        let v = value.as_bytes();
        assert!(
            !v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'),
            "a value with NUL, CR or LF"
        );
        assert!(
            !matches!(v.first(), Some(b' ' | b'\t')) && !matches!(v.last(), Some(b' ' | b'\t')),
            "a value with whitespace at an end: {name}"
        );
    }
}

fn settings(pick: u8, timers: u8) -> Settings {
    let ms = Duration::from_millis;
    Settings {
        // (3: 100, and the connection is asked to shut down gracefully)
        max_concurrent_streams: [100, 1, 2, 100][usize::from(pick & 3)],
        max_header_list_size: if pick & 4 != 0 { 256 } else { 16 * 1024 },
        initial_stream_window_size: if pick & 8 != 0 { 16 } else { 65_535 },
        initial_connection_window_size: if pick & 16 != 0 { 1 << 20 } else { 65_535 },
        max_frame_size: 16_384,
        max_pending_accept_reset_streams: if pick & 32 != 0 { 2 } else { 20 },
        max_local_error_reset_streams: if pick & 32 != 0 { 2 } else { 20 },
        keepalive_interval: (timers & 1 != 0).then(|| ms(2)),
        keepalive_timeout: ms(2),
        // (only with the timers' turn: the rest runs the same every time)
        idle_timeout: (timers & 2 != 0).then(|| ms(2)),
        stall_timeout: ms(5),
    }
}

/// What the client's bytes could allow the server at most: the largest frame
/// size, and the windows (the largest initial stream window in force after
/// any of its SETTINGS, the first of which comes before any stream; the sums
/// of the WINDOW_UPDATE increments, per stream and for the connection); and
/// the streams it opened.
#[derive(Default)]
struct Allowed {
    max_frame: usize,
    initial: i64,
    conn: i64,
    streams: HashMap<u32, i64>,
    opened: HashSet<u32>,
}

fn allowed(mut input: &[u8]) -> Allowed {
    let mut a = Allowed {
        max_frame: 16_384,
        initial: i64::MIN,
        conn: 65_535,
        ..Allowed::default()
    };
    let mut initial = 65_535i64;
    while input.len() >= 9 {
        let h = Head::parse(input);
        let Some(p) = input.get(9..9 + h.len) else {
            break;
        };
        if h.kind == frame::SETTINGS && h.flags & frame::ACK == 0 {
            for (id, v) in frame::settings_values(p).into_iter().flatten() {
                match id {
                    frame::SETTINGS_MAX_FRAME_SIZE => {
                        a.max_frame = a.max_frame.max(v as usize);
                    }
                    frame::SETTINGS_INITIAL_WINDOW_SIZE => initial = i64::from(v),
                    _ => {}
                }
            }
            a.initial = a.initial.max(initial);
        }
        if h.kind == frame::HEADERS {
            a.opened.insert(h.stream);
        }
        if h.kind == frame::WINDOW_UPDATE && h.len == 4 {
            let n = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
            if h.stream == 0 {
                a.conn += n;
            } else {
                *a.streams.entry(h.stream).or_default() += n;
            }
        }
        input = &input[9 + h.len..];
    }
    if a.initial == i64::MIN {
        // no SETTINGS: no stream is served
        a.initial = 65_535;
    }
    a
}

/// Checks what the server wrote (whole frames; a last one cut short when the
/// client went away is not looked at).
fn check(out: &[u8], client: &[u8]) {
    let allowed = allowed(client);
    let mut rest = out;
    let mut first = true;
    // (the server's encoder never adds to the dynamic table: a decoder
    // without one takes its blocks)
    let mut decoder = Decoder::new(0);
    // a header block being received: its stream, END_STREAM, the bytes
    let mut block: Option<(u32, bool, Vec<u8>)> = None;
    let mut answered: HashMap<u32, bool> = HashMap::new();
    // streams the server ended: true once it reset them, false once it sent
    // END_STREAM (then only WINDOW_UPDATE and RST_STREAM may follow)
    let mut ended: HashMap<u32, bool> = HashMap::new();
    let mut conn_data = 0i64;
    let mut data: HashMap<u32, i64> = HashMap::new();
    // the content-length each answer declared
    let mut declared: HashMap<u32, i64> = HashMap::new();
    // an answer that ends (END_STREAM, not RST_STREAM) after its head ends
    // whole: a body cut short must not pass for a whole one (an answer whose
    // head ends the stream, a HEAD's or a 204, is not looked at)
    let whole = |stream: u32, data: &HashMap<u32, i64>, declared: &HashMap<u32, i64>| {
        let sent = data.get(&stream).copied().unwrap_or(0);
        if let Some(&n) = declared.get(&stream) {
            assert_eq!(
                sent, n,
                "stream {stream} ended after {sent} of its {n} bytes"
            );
        }
    };
    while rest.len() >= 9 {
        let h = Head::parse(rest);
        let Some(p) = rest.get(9..9 + h.len) else {
            break;
        };
        rest = &rest[9 + h.len..];
        assert!(h.len <= allowed.max_frame, "a frame of {} bytes", h.len);
        if first {
            assert!(
                h.kind == frame::SETTINGS && h.flags & frame::ACK == 0,
                "the server's preface is not SETTINGS"
            );
            first = false;
        }
        // a header block is not interleaved with other frames (RFC 9113 6.10)
        if let Some((stream, _, _)) = &block {
            assert!(
                h.kind == frame::CONTINUATION && h.stream == *stream,
                "a header block interrupted"
            );
        }
        if h.stream != 0 {
            match ended.get(&h.stream) {
                Some(true) => panic!("a frame on stream {} after its RST_STREAM", h.stream),
                Some(false) => assert!(
                    matches!(h.kind, frame::WINDOW_UPDATE | frame::RST_STREAM),
                    "a frame of type {} on stream {} after its END_STREAM",
                    h.kind,
                    h.stream
                ),
                None => {}
            }
            if matches!(h.kind, frame::HEADERS | frame::DATA | frame::WINDOW_UPDATE) {
                assert!(
                    allowed.opened.contains(&h.stream),
                    "a frame of type {} on stream {}, which the client did not open",
                    h.kind,
                    h.stream
                );
            }
        }
        match h.kind {
            frame::SETTINGS => {
                assert_eq!(h.stream, 0);
                assert_eq!(h.len % 6, 0);
                if h.flags & frame::ACK != 0 {
                    assert_eq!(h.len, 0);
                }
            }
            frame::PING => assert!(h.len == 8 && h.stream == 0),
            frame::GOAWAY => assert!(h.len >= 8 && h.stream == 0),
            frame::RST_STREAM => {
                assert!(h.len == 4 && h.stream != 0);
                ended.insert(h.stream, true);
            }
            frame::WINDOW_UPDATE => {
                assert_eq!(h.len, 4);
                let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                assert!(n > 0, "a WINDOW_UPDATE of 0");
            }
            frame::DATA => {
                assert!(h.stream % 2 == 1, "DATA on stream {}", h.stream);
                assert!(answered.contains_key(&h.stream), "DATA before HEADERS");
                assert_eq!(h.flags & frame::PADDED, 0);
                conn_data += h.len as i64;
                *data.entry(h.stream).or_default() += h.len as i64;
                if h.flags & frame::END_STREAM != 0 {
                    ended.insert(h.stream, false);
                    whole(h.stream, &data, &declared);
                }
            }
            frame::HEADERS | frame::CONTINUATION => {
                assert!(h.stream % 2 == 1, "a header block on stream {}", h.stream);
                let (end, mut b) = match block.take() {
                    Some((_, end, b)) => (end, b),
                    None => {
                        assert_eq!(h.kind, frame::HEADERS, "CONTINUATION without HEADERS");
                        assert_eq!(h.flags & (frame::PADDED | frame::PRIORITY_FLAG), 0);
                        (h.flags & frame::END_STREAM != 0, Vec::new())
                    }
                };
                b.extend_from_slice(p);
                if h.flags & frame::END_HEADERS == 0 {
                    block = Some((h.stream, end, b));
                    continue;
                }
                if end {
                    ended.insert(h.stream, false);
                }
                let trailers = answered.insert(h.stream, true).is_some();
                let mut names: Vec<Vec<u8>> = Vec::new();
                let mut length = None;
                decoder
                    .decode(&b, |n, v| {
                        if n.bytes == b"content-length" {
                            length = std::str::from_utf8(v.bytes())
                                .ok()
                                .and_then(|s| s.parse::<i64>().ok());
                        }
                        names.push(n.bytes.to_vec());
                    })
                    .expect("a header block the server wrote does not decode");
                if let (Some(n), false) = (length, trailers) {
                    declared.insert(h.stream, n);
                }
                if end && trailers {
                    whole(h.stream, &data, &declared);
                }
                let pseudo = names.iter().filter(|n| n.starts_with(b":")).count();
                if trailers {
                    assert_eq!(pseudo, 0, "a pseudo-header in trailers");
                } else {
                    assert_eq!(names.first().map(Vec::as_slice), Some(&b":status"[..]));
                    assert_eq!(pseudo, 1, "pseudo-headers other than :status");
                }
                for n in &names {
                    assert!(
                        !n.iter().any(u8::is_ascii_uppercase),
                        "a name with capitals: {:?}",
                        String::from_utf8_lossy(n)
                    );
                    assert!(
                        !matches!(
                            n.as_slice(),
                            b"connection"
                                | b"transfer-encoding"
                                | b"keep-alive"
                                | b"upgrade"
                                | b"proxy-connection"
                        ),
                        "a connection-specific field: {:?}",
                        String::from_utf8_lossy(n)
                    );
                }
            }
            frame::PUSH_PROMISE => panic!("PUSH_PROMISE from the server"),
            _ => {}
        }
    }
    assert!(
        conn_data <= allowed.conn,
        "{conn_data} DATA bytes on a connection window of at most {}",
        allowed.conn
    );
    for (id, sent) in data {
        let window = allowed.initial + allowed.streams.get(&id).copied().unwrap_or(0);
        assert!(
            sent <= window,
            "{sent} DATA bytes on stream {id}, whose window was at most {window}"
        );
    }
}

/// The server's end of the pipe, watched: the bytes it wrote, and whether its
/// last write found the pipe full (it waits on the client's reading).
struct Watched<IO> {
    io: IO,
    written: Rc<Cell<usize>>,
    blocked: Rc<Cell<bool>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.blocked.set(r.is_pending());
        if let Poll::Ready(Ok(n)) = r {
            self.written.set(self.written.get() + n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut input)) = data.split_first() else {
        return;
    };
    // with bit 6, the timers' turn: the next byte picks them (bit 0 a
    // keep-alive ping, bit 1 the idle timeout, bit 2 a client that reads
    // nothing until the server has ended, through a pipe of 4 KiB, so that
    // the server's writes back up and the stall timeout must end it; what
    // the server wrote is read after)
    let mut timers = 0;
    if pick & 64 != 0 {
        let Some((&t, rest)) = input.split_first() else {
            return;
        };
        (timers, input) = (t, rest);
    }
    let mut client_bytes = Vec::with_capacity(input.len() + frame::PREFACE.len());
    if pick & 128 == 0 {
        client_bytes.extend_from_slice(frame::PREFACE);
    }
    client_bytes.extend_from_slice(input);
    let cfg = settings(pick, timers);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let stalls = timers & 4 != 0;
    let out = rt.block_on(async {
        let (client, server) = tokio::io::duplex(if stalls { 4096 } else { 64 * 1024 });
        let written = Rc::new(Cell::new(0usize));
        let blocked = Rc::new(Cell::new(false));
        let server = Watched {
            io: server,
            written: Rc::clone(&written),
            blocked: Rc::clone(&blocked),
        };
        let (mut rd, mut wr) = tokio::io::split(client);
        // the server's end
        let ended = Rc::new(Cell::new(false));
        let gone = Rc::new(tokio::sync::Notify::new());
        let graceful = CancellationToken::new();
        let conn = {
            let ended = Rc::clone(&ended);
            let gone = Rc::clone(&gone);
            let graceful = graceful.clone();
            async move {
                let _ = serve(server, &cfg, answer, graceful).await;
                ended.set(true);
                gone.notify_one();
            }
        };
        let read = {
            async move {
                if stalls {
                    gone.notified().await;
                }
                let mut out = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                out
            }
        };
        let write = async {
            let _ = wr.write_all(&client_bytes).await;
            if pick & 3 == 3 {
                // a reload or shutdown: GOAWAY with streams in flight
                graceful.cancel();
            }
            // until the server has nothing more to do on what it got: its
            // output unchanged for many turns (everything here is in memory)
            let mut still = 0;
            let mut last = usize::MAX;
            while still < 32 && !ended.get() {
                tokio::task::yield_now().await;
                if written.get() == last {
                    still += 1;
                } else {
                    still = 0;
                    last = written.get();
                }
            }
            // a server whose writes wait on a client that reads nothing, and
            // keeps its side open: only the stall timeout ends it (else the
            // 5 s below)
            while stalls && blocked.get() && !ended.get() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if pick & 64 != 0 && !ended.get() {
                // the timers' turn: keep-alive ping, idle and stall timeouts
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
            let _ = wr.shutdown().await;
        };
        let all = async { tokio::join!(conn, read, write).1 };
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect(
            "the connection did not end within 5 s of the client's end or of a write backing up",
        )
    });
    // (without the preface the server reads no frame)
    let frames = client_bytes.strip_prefix(frame::PREFACE).unwrap_or(&[]);
    check(&out, frames);
});
