//! rampart's HTTP/2 server connection (RFC 9113): one task reads the client's
//! frames, runs each stream's service future and writes the answers, with no
//! task spawned per stream and no channel between them.
//!
//! The state of every stream lives in the connection: flow control both ways,
//! the request body handed to the service ([`RecvBody`]), the response body
//! taken from it. A stream's service future and response body are polled only
//! when their own waker fired (each stream has one), so a connection with many
//! streams does not poll them all on every event.
//!
//! Abuse limits (as hyper and h2 had them, from `[listener.http2]`): streams
//! the client resets before their answer (rapid reset, CVE-2023-44487), streams
//! rampart resets for the client's errors, header blocks larger than the
//! header list limit allows (CONTINUATION floods), header lists over the limit
//! (handed to the service marked [`HeaderListTooLarge`], to answer 431), a write backlog (a client that sends and does not read), responses
//! held by a window the client does not open (`stall_timeout`).

use super::fields;
use super::frame::{self, Head, Reason, MAX_WINDOW};
use super::hpack;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// This side's limits (`[listener.http2]`) and timers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_frame_size: u32,
    /// Streams the client may reset before their answer, net of the streams
    /// it lets finish, before GOAWAY ENHANCE_YOUR_CALM.
    pub max_pending_accept_reset_streams: usize,
    /// Streams this side may reset for the client's errors before GOAWAY
    /// ENHANCE_YOUR_CALM.
    pub max_local_error_reset_streams: usize,
    /// PING after this long without a frame from the client.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// GOAWAY after this long without a stream.
    pub idle_timeout: Option<Duration>,
    /// Close once responses have been held this long by the client's flow
    /// control, or its socket took no bytes.
    pub stall_timeout: Duration,
}

/// How a connection ended other than by an orderly close.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("sent GOAWAY {reason}: {why}")]
    GoAway { reason: Reason, why: &'static str },
    #[error("the client connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PING acknowledgement within {0:?}")]
    PingTimeout(Duration),
    #[error("the client took no response bytes for {0:?}")]
    Stalled(Duration),
    #[error("the connection did not start with the HTTP/2 preface")]
    Preface,
}

impl ConnError {
    /// The code of the GOAWAY this side sent for the client's error.
    pub fn goaway(&self) -> Option<Reason> {
        match self {
            ConnError::GoAway { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A request body the client stopped: it reset the stream, or the connection
/// ended.
#[derive(Debug, thiserror::Error)]
#[error("the client reset the stream ({0})")]
pub struct RecvError(pub Reason);

/// The connection task's wake-up, lock-free: a stream's waker raises its own
/// flag, then `any`; the first to raise `any` wakes the connection, which
/// lowers `any` and sweeps its streams' flags.
struct Ready {
    any: AtomicBool,
    conn: AtomicWaker,
}

/// A stream's waker (its service future's and response body's), also held by
/// its request body's reader.
struct StreamWake {
    /// Woken since the connection last swept it.
    woken: AtomicBool,
    /// Request body bytes its reader took since the connection last looked
    /// (the windows the client gets back).
    taken: AtomicUsize,
    /// Request body chunks its reader took since the connection last looked
    /// (see `QUEUED_CHUNKS`).
    chunks: AtomicUsize,
    ready: Arc<Ready>,
}

impl StreamWake {
    fn fire(&self) {
        // (AcqRel: what the waker published before is seen by the sweep that
        // lowers the flag)
        if !self.woken.swap(true, Ordering::AcqRel) && !self.ready.any.swap(true, Ordering::AcqRel)
        {
            self.ready.conn.wake();
        }
    }
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.fire();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fire();
    }
}

/// What the connection hands a request body's reader. The end of the body is
/// the sender dropped.
enum Chunk {
    Data(Bytes),
    Trailers(Box<HeaderMap>),
    Reset(Reason),
}

/// A request body's way from the connection to its reader.
enum BodyTx {
    /// The stream's service future is not made yet: what comes waits here. A
    /// body that has ended by then (a small upload, in the same read as its
    /// head) goes to the reader whole, with no channel made.
    Early(SmallVec<[Chunk; 1]>),
    Chan(UnboundedSender<Chunk>),
}

impl BodyTx {
    /// Passes a chunk on; false when the reader is gone.
    fn send(&mut self, c: Chunk) -> bool {
        match self {
            BodyTx::Early(v) => {
                v.push(c);
                true
            }
            BodyTx::Chan(tx) => tx.send(c).is_ok(),
        }
    }

    /// The client ended the body: a channel's sender is dropped (that is the
    /// reader's end of it); what waits for the reader to be made is kept.
    fn ended(self) -> Option<BodyTx> {
        match self {
            BodyTx::Early(_) => Some(self),
            BodyTx::Chan(_) => None,
        }
    }

    /// The body will not end well: its reader (if there is one yet) is told.
    fn reset(self, code: Reason) {
        if let BodyTx::Chan(tx) = self {
            let _ = tx.send(Chunk::Reset(code));
        }
    }
}

/// A request's body as the client sends it in DATA frames.
pub struct RecvBody {
    inner: Option<Source>,
    /// content-length less what was taken
    left: Option<u64>,
    /// The client reset the stream, or the connection ended.
    reset: Option<Reason>,
}

/// Where a `RecvBody` reads from, and who it tells of what it took (the
/// windows), its connection woken.
struct Source {
    from: From,
    wake: Arc<StreamWake>,
}

enum From {
    /// The body, as the connection receives it.
    Chan(UnboundedReceiver<Chunk>),
    /// The body had ended when the reader was made: all of it.
    Whole(smallvec::IntoIter<[Chunk; 1]>),
}

impl RecvBody {
    fn empty() -> RecvBody {
        RecvBody {
            inner: None,
            left: Some(0),
            reset: None,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = RecvError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        if let Some(r) = self.reset {
            return Poll::Ready(Some(Err(RecvError(r))));
        }
        let Some(b) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = match &mut b.from {
            From::Chan(rx) => rx.poll_recv(cx),
            From::Whole(all) => Poll::Ready(all.next()),
        };
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Chunk::Data(c))) => {
                b.wake.taken.fetch_add(c.len(), Ordering::Release);
                b.wake.chunks.fetch_add(1, Ordering::Release);
                b.wake.fire();
                if let Some(l) = self.left.as_mut() {
                    *l = l.saturating_sub(c.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            Poll::Ready(Some(Chunk::Trailers(t))) => Poll::Ready(Some(Ok(Frame::trailers(*t)))),
            Poll::Ready(Some(Chunk::Reset(r))) => {
                self.inner = None;
                self.reset = Some(r);
                Poll::Ready(Some(Err(RecvError(r))))
            }
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            None => self.reset.is_none(),
            // everything sent, and taken
            Some(b) => match &b.from {
                From::Chan(rx) => rx.is_closed() && rx.is_empty(),
                From::Whole(all) => all.as_slice().is_empty(),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// What a stream has sent of its response. The request head is held unboxed:
/// a stream holds it from one read to the next turn, and a box would cost an
/// allocation per request (an idle connection has no streams).
#[allow(clippy::large_enum_variant)]
enum Out<F, B> {
    /// The request, its service future not made yet: that is done at the
    /// stream's first turn, once the frames read with the head are handled.
    Head(Request<()>),
    /// The service future has not answered yet (dropping it cancels the
    /// request).
    Waiting(F),
    /// The head is sent; the body is read as the windows allow.
    Body(B),
    /// Everything is sent.
    Done,
}

struct Stream<F, B> {
    id: u32,
    /// The client may still send on it (no END_STREAM yet).
    remote_open: bool,
    /// Its request body's way to the reader: a channel's sender until the
    /// client ends the body (dropped: the end), or what came before the
    /// reader was made.
    body: Option<BodyTx>,
    /// Handed to the body's reader (or held in `staged`) and not yet given
    /// back to the windows.
    unread: i64,
    /// Data chunks handed to the body's reader and not taken yet.
    queued: usize,
    /// Small DATA payloads held back while the reader has `QUEUED_CHUNKS`
    /// chunks not taken, joined into one chunk (see `Stream::pass_data`).
    staged: BytesMut,
    /// What the client may still send before a WINDOW_UPDATE.
    recv_window: i64,
    /// Taken by the body's reader and not yet given back.
    recv_unacked: i64,
    content_length: Option<u64>,
    received: u64,
    out: Out<F, B>,
    send_window: i64,
    /// Data taken from the response body and not yet sent.
    pending: Bytes,
    /// `pending` ends the body.
    pending_end: bool,
    wake: Arc<StreamWake>,
    /// `wake`'s.
    waker: Waker,
    /// The HEAD method: the response has no body whatever the service says.
    head: bool,
    /// In `Conn::held`.
    held: bool,
}

impl<F, B> Stream<F, B> {
    /// Hands a DATA payload to the body's reader; false when the reader is
    /// gone. A payload under `copy_under` is copied out of the read buffer
    /// (see `COPY_UNDER`), and held back in `staged` while the reader has
    /// `QUEUED_CHUNKS` chunks not taken (or something is staged already: the
    /// order is kept), until the reader takes one or `copy_under` bytes are
    /// staged.
    fn pass_data(&mut self, b: &mut BodyTx, payload: BytesMut, copy_under: usize) -> bool {
        if payload.len() >= copy_under {
            return self.flush_staged(b) && self.send_data(b, payload.freeze());
        }
        if self.staged.is_empty() && self.queued < QUEUED_CHUNKS {
            return self.send_data(b, Bytes::copy_from_slice(&payload));
        }
        self.staged.extend_from_slice(&payload);
        self.staged.len() < copy_under || self.flush_staged(b)
    }

    /// What is staged goes to the reader, as one chunk: before anything that
    /// follows it (more data, the trailers, the end), and once the reader
    /// has taken chunks. False when the reader is gone.
    fn flush_staged(&mut self, b: &mut BodyTx) -> bool {
        if self.staged.is_empty() {
            return true;
        }
        let d = std::mem::take(&mut self.staged).freeze();
        self.send_data(b, d)
    }

    fn send_data(&mut self, b: &mut BodyTx, d: Bytes) -> bool {
        self.queued += 1;
        b.send(Chunk::Data(d))
    }
}

/// A read buffer from the thread's spares (`h1::take_vec`; back through
/// `h1::give_back` with `Vec::from`, which takes the allocation back whole
/// when no `Bytes` of it is left, and copies nothing when it is empty).
/// Through `Bytes`: `BytesMut` has no `From<Vec<u8>>`; this one takes the
/// `Vec`'s allocation as it is.
fn read_buf() -> BytesMut {
    BytesMut::from(Bytes::from(crate::h1::take_vec()))
}

/// A header block being received (HEADERS without END_HEADERS, then
/// CONTINUATIONs).
struct Partial {
    stream: u32,
    end_stream: bool,
    /// The HEADERS frame's priority made the stream depend on itself.
    self_dependent: bool,
    block: Vec<u8>,
    /// CONTINUATION frames so far.
    continuations: usize,
}

/// How many bytes of frames to write before the connection stops reading the
/// client (and taking more from response bodies) until they are written.
const WRITE_HIGH: usize = 64 * 1024;
/// How long a connection without streams keeps the room they had.
const IDLE_ROOM_MS: u64 = 100;
/// How many frames to handle before giving other tasks a turn.
const FRAMES_PER_POLL: usize = 256;
/// The request head's fields, decoded, that a header block may hold at most
/// on top of `max_header_list_size` (a block is compressed: the decoded list
/// is limited; the block itself only needs a sanity bound).
const BLOCK_SLACK: usize = 16 * 1024;
/// DATA payloads shorter than this (or than a quarter of
/// `max_frame_size`, when that is larger) are copied out of the read buffer
/// for the body's reader; longer ones are handed over as slices of it, with
/// no copy. A slice keeps the whole read buffer allocated (16 to 64 KiB, more
/// when `max_frame_size` is raised: it grows to hold a frame) until its reader
/// takes it: 1-byte DATA frames queued unread, each in a read buffer of its
/// own between ignored frames of 16 KiB, would make the windows, which count
/// bytes of data, bound nothing (a 1 MiB window, gigabytes held). 16 KiB is
/// the least SETTINGS_MAX_FRAME_SIZE a client can be held to: a body sent in
/// full frames is never copied, and a slice keeps at most a few times its
/// size.
const COPY_UNDER: usize = 16 * 1024;
/// Chunks a request body's reader may have queued, not taken, before small
/// DATA payloads are held back and joined into one chunk. A chunk costs ~100
/// bytes however small (its allocation, its slot in the channel): a window
/// of 1-byte DATA frames would cost a hundred times the window.
const QUEUED_CHUNKS: usize = 64;
/// How long a connection done with its streams (after its GOAWAY) reads on
/// without a byte from the client, its write side shut down, before it closes
/// (see `Conn::linger`): as long as an HTTP/1 connection lingers when its
/// listener drains (`proxy::DRAIN_LINGER`, a layer above this one).
const LINGER: Duration = Duration::from_secs(1);
/// How many closed streams are remembered (late frames on those this side
/// reset are ignored; HEADERS on the others are stream errors): at least as
/// many as the client may have open (`max_concurrent_streams`, 256 by
/// default), whose late frames may all be on their way when this side
/// resets them at once, and at least `RECENT_CLOSED`, at most
/// `RECENT_CLOSED_MAX` (8 bytes each, looked through one by one).
const RECENT_CLOSED: usize = 128;
const RECENT_CLOSED_MAX: usize = 1024;

/// A response body that may hold its response's fields itself: an HTTP/1.1
/// server's head, read as bytes and left where it was read, goes out as HPACK
/// from there, with no `HeaderMap` made and dropped between (see
/// `upstream::send_wire`).
pub trait WireFields {
    /// Calls `f` with each field the body holds, the name in any case. Called
    /// once, before the body is first polled. By default there are none.
    fn wire_fields(&self, _f: &mut dyn FnMut(&[u8], &[u8])) {}
}

/// Marks a request whose header list was over `max_header_list_size`. Its
/// pseudo-header fields are kept when they came before the limit, and its
/// other fields dropped; the service must answer it (431 Request Header
/// Fields Too Large) and send it nowhere.
#[derive(Debug, Clone, Copy)]
pub struct HeaderListTooLarge {
    /// The request's method is the client's (else `:method` came after the
    /// limit, and the request says GET).
    pub method_known: bool,
    /// The request's target is the client's (else its `:path`, or a
    /// CONNECT's `:authority`, came after the limit, and the request says
    /// `/`).
    pub target_known: bool,
}

/// Serves one HTTP/2 connection; `io` starts with the client's preface.
/// A request marked [`HeaderListTooLarge`] goes to `svc` like any other, to
/// be answered there.
/// `graceful` asks it to GOAWAY, finish its streams and close.
///
/// Not an `async fn`: the future is the connection's state alone, with no
/// second room for the arguments moved into it (744 bytes as an `async fn`
/// in rampart's proxy; an idle connection holds it).
pub fn serve<'a, IO, S, F, B>(
    io: IO,
    cfg: &'a Settings,
    svc: S,
    graceful: CancellationToken,
) -> impl Future<Output = Result<(), ConnError>> + 'a
where
    IO: 'a,
    S: 'a,
    F: 'a,
    B: 'a,
    IO: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RecvBody>) -> F,
    F: Future<Output = Response<B>> + Unpin,
    B: Body<Data = Bytes> + WireFields + Unpin,
    B::Error: std::fmt::Display,
{
    let ready = Arc::new(Ready {
        any: AtomicBool::new(false),
        conn: AtomicWaker::new(),
    });
    let now = crate::clock::now_ms();
    let mut c = Conn {
        io,
        cfg,
        svc,
        rbuf: read_buf(),
        rbuf_pooled: true,
        wbuf: crate::h1::take_vec(),
        wbuf_pooled: true,
        block: Vec::new(),
        wpos: 0,
        unflushed: false,
        decoder: hpack::Decoder::new(4096),
        streams: Vec::new(),
        ready,
        woken: Vec::new(),
        last_id: 0,
        peer_max_frame: 16_384,
        peer_initial_window: 65_535,
        send_window: 65_535,
        recv_window: (cfg.initial_connection_window_size as i64).max(65_535),
        local_window: 65_535,
        recv_unacked: 0,
        partial: None,
        preface: false,
        got_settings: false,
        goaway: None,
        read_closed: false,
        early_resets: 0,
        cancels_left: cfg.max_concurrent_streams,
        cancels_at_ms: now,
        local_resets: 0,
        recent: VecDeque::new(),
        held: VecDeque::new(),
        last_read_ms: now,
        ping_sent_ms: None,
        idle_since_ms: now,
        moved_ms: now,
        timer: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
        timer_at: u64::MAX,
        graceful: Box::pin(graceful.cancelled_owned()),
        closing: None,
    };
    c.start();
    std::future::poll_fn(move |cx| c.poll(cx))
}

struct Conn<'a, IO, S, F, B> {
    io: IO,
    cfg: &'a Settings,
    svc: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// `rbuf` was taken from the thread's spares (and is to go back: the
    /// spares count what is out).
    rbuf_pooled: bool,
    /// `wbuf` was (a frame written while it was given back grows a `Vec`
    /// of its own).
    wbuf_pooled: bool,
    wpos: usize,
    /// A header block being encoded (kept: one allocation per connection,
    /// not one per response head and trailers)
    block: Vec<u8>,
    /// Written and not flushed yet (TLS).
    unflushed: bool,
    decoder: hpack::Decoder,
    streams: Vec<Stream<F, B>>,
    ready: Arc<Ready>,
    /// ids taken from `ready`, to look at
    woken: Vec<u32>,
    /// The highest stream the client opened.
    last_id: u32,
    peer_max_frame: usize,
    peer_initial_window: i64,
    /// The connection's window for what this side sends.
    send_window: i64,
    /// What the client may still send on the connection.
    recv_window: i64,
    /// The initial window of a stream the client sends on: 65,535 until the
    /// client acknowledged this side's SETTINGS.
    local_window: i64,
    /// Received and not yet given back with a WINDOW_UPDATE.
    recv_unacked: i64,
    partial: Option<Partial>,
    preface: bool,
    got_settings: bool,
    /// The last stream id of the GOAWAY sent.
    goaway: Option<u32>,
    read_closed: bool,
    /// Streams the client reset before their service ran, less those it
    /// let finish (rapid reset).
    early_resets: usize,
    /// Resets of streams whose service ran and had not answered yet (the
    /// request was on its way to a server): a bucket of
    /// `max_concurrent_streams`, refilled at that many a second. A client
    /// may cancel all it has in flight at once, and again a second later,
    /// but not hold back its resets a read to dodge `early_resets` at the
    /// rate of a flood; answers give nothing back (they are cheap to get).
    cancels_left: u32,
    /// When `cancels_left` was last refilled.
    cancels_at_ms: u64,
    /// Streams reset for the client's errors.
    local_resets: usize,
    /// Streams closed lately, and whether this side reset them (their late
    /// frames are then ignored).
    recent: VecDeque<(u32, bool)>,
    /// Streams with data held by the connection's window, in the order they
    /// were held, each once (`Stream::held`): served in turn (`serve_held`).
    held: VecDeque<u32>,
    last_read_ms: u64,
    ping_sent_ms: Option<u64>,
    /// When the last stream ended (idle timeout).
    idle_since_ms: u64,
    /// When response bytes last moved to the socket (stall timeout).
    moved_ms: u64,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: u64,
    graceful: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Done with its streams, the client not gone: lingering (see `linger`).
    closing: Option<Closing>,
}

/// A connection lingering (`Conn::linger`).
struct Closing {
    /// Its write side is shut down (FIN, or TLS's close_notify and FIN, sent).
    shut: bool,
    /// When it started lingering.
    since_ms: u64,
    /// When bytes last came from the client.
    heard_ms: u64,
}

impl<IO, S, F, B> Conn<'_, IO, S, F, B> {
    /// `rbuf` and `wbuf` to the thread's spares (each was taken from them).
    fn give_back_buffers(&mut self) {
        let rbuf = std::mem::take(&mut self.rbuf);
        if std::mem::take(&mut self.rbuf_pooled) {
            crate::h1::give_back(Vec::from(rbuf));
        }
        let wbuf = std::mem::take(&mut self.wbuf);
        if std::mem::take(&mut self.wbuf_pooled) {
            crate::h1::give_back(wbuf);
        }
    }
}

impl<IO, S, F, B> Drop for Conn<'_, IO, S, F, B> {
    /// However the connection ends, the readers of its request bodies (on
    /// other tasks: a backend connection's) learn it at once.
    fn drop(&mut self) {
        for s in &mut self.streams {
            if let Some(b) = s.body.take() {
                b.reset(Reason::CANCEL);
            }
        }
        self.give_back_buffers();
    }
}

/// A frame that ends the connection: GOAWAY with this code.
struct Fatal(Reason, &'static str);

impl<IO, S, F, B> Conn<'_, IO, S, F, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RecvBody>) -> F,
    F: Future<Output = Response<B>> + Unpin,
    B: Body<Data = Bytes> + WireFields + Unpin,
    B::Error: std::fmt::Display,
{
    fn start(&mut self) {
        let cfg = self.cfg;
        frame::settings(
            &mut self.wbuf,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (
                    frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    cfg.max_concurrent_streams,
                ),
                (
                    frame::SETTINGS_INITIAL_WINDOW_SIZE,
                    cfg.initial_stream_window_size,
                ),
                (frame::SETTINGS_MAX_FRAME_SIZE, cfg.max_frame_size),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    cfg.max_header_list_size,
                ),
            ],
        );
        let extra = cfg.initial_connection_window_size as i64 - 65_535;
        if extra > 0 {
            frame::window_update(&mut self.wbuf, 0, extra as u32);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.ready.conn.register(cx.waker());
        if self.closing.is_some() {
            return self.linger(cx);
        }
        self.sweep();
        if self.goaway.is_none() && self.graceful.as_mut().poll(cx).is_ready() {
            self.send_goaway(Reason::NO_ERROR);
        }
        let mut rounds = 0;
        loop {
            if rounds == 8 {
                // work is left (the socket took everything and bodies had
                // more): another turn, after the other tasks had theirs
                cx.waker().wake_by_ref();
                break;
            }
            rounds += 1;
            let mut progress = false;
            if !self.read_closed && self.wbuf.len() - self.wpos < WRITE_HIGH {
                match self.poll_read(cx) {
                    Ok(p) => progress |= p,
                    Err(e) => return Poll::Ready(self.fail(cx, e)),
                }
            }
            // the streams whose wakers fired (or new ones): their service
            // futures, their response bodies, and what their request bodies'
            // readers took (window updates)
            self.sweep();
            // (with a write backlog they wait for the socket to take it)
            if !self.woken.is_empty() && self.wbuf.len() - self.wpos < WRITE_HIGH {
                progress = true;
                let mut batch = std::mem::take(&mut self.woken);
                batch.sort_unstable();
                batch.dedup();
                for &id in &batch {
                    self.service(id);
                }
                // (streams put off by the write backlog are in `woken` again)
                batch.clear();
                if self.woken.is_empty() {
                    self.woken = batch;
                }
            }
            // (the connection's window left to streams held by it, by a
            // write backlog that the socket has taken since)
            if !self.held.is_empty()
                && self.send_window > 0
                && self.wbuf.len() - self.wpos < WRITE_HIGH
            {
                progress |= self.serve_held();
            }
            if self.wpos < self.wbuf.len() || self.unflushed {
                match self.poll_write(cx) {
                    Ok(p) => progress |= p,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.finished() {
                return self.close(cx);
            }
            if !progress {
                break;
            }
        }
        if let Err(e) = self.timers(cx) {
            return Poll::Ready(Err(e));
        }
        if self.finished() {
            return self.close(cx);
        }
        self.idle();
        Poll::Pending
    }

    /// A connection with no stream and nothing buffered either way gives its
    /// buffers back to the thread's spares at once (taken again with its
    /// next frames): however many connections were busy a moment before, an
    /// idle one holds no buffer, nor do HAProxy's and nginx's. Given back a
    /// second later, as they were, the buffers of a burst of connections
    /// stayed in the heap between the small allocations of those left idle:
    /// 2,000 idle connections opened at once measured 11.7 to 14.4 KB each, 3 KB
    /// now (bench/RESULTS.md). The room its streams had goes after
    /// `IDLE_ROOM_MS` (see `timers`): taken and freed again with every
    /// stream, it cost h2c 280 instructions a request.
    fn idle(&mut self) {
        if !self.streams.is_empty()
            || !self.rbuf.is_empty()
            || self.wpos < self.wbuf.len()
            || self.unflushed
            || !self.rbuf_pooled && self.wbuf.capacity() == 0
        {
            return;
        }
        self.give_back_buffers();
        self.wpos = 0;
    }

    /// Takes the streams whose wakers fired into `woken`.
    fn sweep(&mut self) {
        if self.ready.any.swap(false, Ordering::AcqRel) {
            for s in &self.streams {
                if s.wake.woken.load(Ordering::Relaxed)
                    && s.wake.woken.swap(false, Ordering::AcqRel)
                {
                    self.woken.push(s.id);
                }
            }
        }
    }

    /// All done: GOAWAY sent (or the client gone) and nothing left in flight.
    fn finished(&self) -> bool {
        let nothing_left =
            self.streams.is_empty() && self.wpos == self.wbuf.len() && !self.unflushed;
        (self.goaway.is_some() || self.read_closed) && nothing_left
    }

    fn close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        if self.read_closed {
            // the client sends nothing more: FIN (and TLS's close_notify) if
            // the socket takes it now; it closes when dropped
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            return Poll::Ready(Ok(()));
        }
        let now = crate::clock::now_ms();
        self.closing = Some(Closing {
            shut: false,
            since_ms: now,
            heard_ms: now,
        });
        // (nothing is read into them, or written, from now on)
        self.give_back_buffers();
        self.linger(cx)
    }

    /// Closes a connection done with its streams, the client still there:
    /// its write side is shut down, and what the client still sends is read
    /// and dropped until its FIN, or until it has sent nothing for `LINGER`
    /// (at most `stall_timeout` in all). A socket closed at once receives
    /// the WINDOW_UPDATEs a client sends as it reads the last answers, and
    /// Linux answers them with a reset: the client loses what it had not
    /// read yet, streams at or below the GOAWAY's last id cut short.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        let Some(mut c) = self.closing.take() else {
            return Poll::Ready(Ok(()));
        };
        if !c.shut {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => c.shut = true,
                // (the client is gone)
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
        }
        let mut buf = [0u8; 2048];
        let mut more = true;
        for _ in 0..32 {
            let mut rb = tokio::io::ReadBuf::new(&mut buf);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                // the client's FIN, or the connection failed: done
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => c.heard_ms = crate::clock::now_ms(),
                Poll::Pending => {
                    more = false;
                    break;
                }
            }
        }
        if more {
            // (the client has sent more: another turn, after the other tasks)
            cx.waker().wake_by_ref();
        }
        let now = crate::clock::now_ms();
        let ms = |d: Duration| d.as_millis() as u64;
        let all = ms(self.cfg.stall_timeout.max(LINGER));
        let due = (c.heard_ms + ms(LINGER)).min(c.since_ms.saturating_add(all));
        if now >= due {
            return Poll::Ready(Ok(()));
        }
        if due != self.timer_at {
            self.timer_at = due;
            let at = tokio::time::Instant::now() + Duration::from_millis(due - now);
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // (the coarse clock may not be there yet: looked at again)
            self.timer_at = u64::MAX;
            cx.waker().wake_by_ref();
        }
        self.closing = Some(c);
        Poll::Pending
    }

    /// Ends the connection for the client's error: GOAWAY, written if the
    /// socket takes it at once.
    fn fail(&mut self, cx: &mut Context<'_>, e: ConnError) -> Result<(), ConnError> {
        if let ConnError::GoAway { reason, .. } = &e {
            // never above a GOAWAY already sent (RFC 9113 6.8): streams the
            // client opened after it were not served
            let last = self.goaway.unwrap_or(self.last_id);
            frame::goaway(&mut self.wbuf, last, *reason);
            let _ = self.poll_write(cx);
        }
        Err(e)
    }

    fn send_goaway(&mut self, reason: Reason) {
        if self.goaway.is_none() {
            self.goaway = Some(self.last_id);
            frame::goaway(&mut self.wbuf, self.last_id, reason);
        }
    }

    /// Reads what the socket has and handles the whole frames in it.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut progress = false;
        // frames already buffered first (a previous turn stopped early)
        let handled = self.handle_frames()?;
        progress |= handled > 0;
        if handled >= FRAMES_PER_POLL {
            cx.waker().wake_by_ref();
            return Ok(true);
        }
        if !self.rbuf_pooled {
            // (given back while idle)
            self.rbuf = read_buf();
            self.rbuf_pooled = true;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            let want = (self.cfg.max_frame_size as usize + 9).min(64 * 1024);
            self.rbuf.reserve(want.max(16 * 1024));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) => {
                self.read_closed = true;
                self.client_gone();
                return Ok(true);
            }
            Poll::Ready(Ok(_)) => {
                self.last_read_ms = crate::clock::now_ms();
                if self.wbuf.capacity() == 0 {
                    // (given back while idle)
                    self.wbuf = crate::h1::take_vec();
                    self.wbuf_pooled = true;
                }
                self.handle_frames()?;
                progress = true;
            }
            Poll::Ready(Err(e)) => return Err(ConnError::Io(e)),
            Poll::Pending => {}
        }
        Ok(progress)
    }

    /// The client closed its side: nothing it asked for can be delivered.
    fn client_gone(&mut self) {
        for s in &mut self.streams {
            if let Some(b) = s.body.take() {
                b.reset(Reason::CANCEL);
            }
        }
        // (their service futures are dropped: the requests are cancelled)
        self.streams.clear();
        self.held.clear();
        self.wbuf.clear();
        self.wpos = 0;
    }

    fn handle_frames(&mut self) -> Result<usize, ConnError> {
        let mut n = 0;
        if !self.preface {
            if self.rbuf.len() < frame::PREFACE.len() {
                if !frame::PREFACE.starts_with(&self.rbuf) {
                    return Err(ConnError::Preface);
                }
                return Ok(0);
            }
            if &self.rbuf[..frame::PREFACE.len()] != frame::PREFACE {
                return Err(ConnError::Preface);
            }
            self.rbuf.advance(frame::PREFACE.len());
            self.preface = true;
        }
        while self.rbuf.len() >= 9 && n < FRAMES_PER_POLL && !self.read_closed {
            let h = Head::parse(&self.rbuf);
            if h.len > self.cfg.max_frame_size as usize {
                return Err(fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "a frame over SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.rbuf.len() < 9 + h.len {
                break;
            }
            let f = self.rbuf.split_to(9 + h.len);
            self.frame(h, f).map_err(|Fatal(r, why)| fatal(r, why))?;
            n += 1;
        }
        Ok(n)
    }

    fn frame(&mut self, h: Head, mut f: BytesMut) -> Result<(), Fatal> {
        if !self.got_settings && h.kind != frame::SETTINGS {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "the first frame is not SETTINGS",
            ));
        }
        if let Some(p) = &self.partial {
            if h.kind != frame::CONTINUATION || h.stream != p.stream {
                return Err(Fatal(
                    Reason::PROTOCOL_ERROR,
                    "a frame other than CONTINUATION inside a header block",
                ));
            }
        }
        let payload = &f[9..];
        match h.kind {
            frame::DATA => {
                f.advance(9);
                self.data(h, f)
            }
            frame::HEADERS => self.headers(h, payload),
            frame::CONTINUATION => self.continuation(h, payload),
            frame::PRIORITY => {
                if h.stream == 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                let closed = h.stream % 2 == 1 && h.stream <= self.last_id;
                if closed && self.find(h.stream).is_none() {
                    // a closed stream (perhaps one this side reset): RFC
                    // 9113 5.1 allows no frame but PRIORITY on it, so
                    // whatever this one holds, no RST_STREAM
                    return Ok(());
                }
                // never opened: RFC 9113 6.4 allows no RST_STREAM on an idle
                // stream (a client may open it later), so a stream error
                // there ends the connection (5.4.1 allows that)
                let idle = h.stream > self.last_id || h.stream % 2 == 0;
                if h.len != 5 {
                    if idle {
                        return Err(Fatal(
                            Reason::FRAME_SIZE_ERROR,
                            "a PRIORITY frame not 5 bytes long on an idle stream",
                        ));
                    }
                    self.reset(h.stream, Reason::FRAME_SIZE_ERROR, true)?;
                    return Ok(());
                }
                let dep = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                if dep == h.stream {
                    if idle {
                        return Err(Fatal(
                            Reason::PROTOCOL_ERROR,
                            "a PRIORITY frame making an idle stream depend on itself",
                        ));
                    }
                    self.reset(h.stream, Reason::PROTOCOL_ERROR, true)?;
                }
                Ok(())
            }
            frame::RST_STREAM => self.rst_stream(h, payload),
            frame::SETTINGS => self.settings(h, payload),
            frame::PUSH_PROMISE => Err(Fatal(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            frame::PING => {
                if h.stream != 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "PING on a stream"));
                }
                if h.len != 8 {
                    return Err(Fatal(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes long"));
                }
                if h.flags & frame::ACK != 0 {
                    self.ping_sent_ms = None;
                } else {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(payload);
                    frame::ping(&mut self.wbuf, true, &p);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if h.stream != 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if h.len < 8 {
                    return Err(Fatal(Reason::FRAME_SIZE_ERROR, "GOAWAY under 8 bytes"));
                }
                // the client opens no more streams; those it has finish
                if self.goaway.is_none() {
                    self.send_goaway(Reason::NO_ERROR);
                }
                Ok(())
            }
            frame::WINDOW_UPDATE => self.window_update(h, payload),
            // unknown frame types are ignored (RFC 9113 4.1)
            _ => Ok(()),
        }
    }

    fn settings(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.stream != 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if h.flags & frame::ACK != 0 {
            if h.len != 0 {
                return Err(Fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS ACK with a payload",
                ));
            }
            // this side's SETTINGS hold from now: until then the client may
            // have sent on the default window of 65,535 (RFC 9113 6.9.2)
            let window = self.cfg.initial_stream_window_size as i64;
            let delta = window - self.local_window;
            self.local_window = window;
            for s in &mut self.streams {
                s.recv_window += delta;
            }
            return Ok(());
        }
        let Some(values) = frame::settings_values(p) else {
            return Err(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        };
        self.got_settings = true;
        // the frame's last SETTINGS_INITIAL_WINDOW_SIZE, applied to the
        // streams once after the loop: one frame with thousands of them costs
        // one pass, not one per value
        let mut initial_window = None;
        for (id, v) in values {
            match id {
                frame::SETTINGS_ENABLE_PUSH if v > 1 => {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH over 1"));
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if v as i64 > MAX_WINDOW {
                        return Err(Fatal(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    initial_window = Some(v as i64);
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&v) {
                        return Err(Fatal(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = v as usize;
                }
                _ => {}
            }
        }
        if let Some(v) = initial_window {
            let delta = v - self.peer_initial_window;
            self.peer_initial_window = v;
            for s in &mut self.streams {
                s.send_window += delta;
                if s.send_window > MAX_WINDOW {
                    return Err(Fatal(
                        Reason::FLOW_CONTROL_ERROR,
                        "a stream's window over 2^31-1",
                    ));
                }
                if delta > 0 && (!s.pending.is_empty() || matches!(s.out, Out::Body(_))) {
                    // a response body held by its window may go on
                    self.woken.push(s.id);
                }
            }
        }
        frame::settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn window_update(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.len != 4 {
            return Err(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes long",
            ));
        }
        let n = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff) as i64;
        if h.stream == 0 {
            if n == 0 {
                return Err(Fatal(Reason::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"));
            }
            self.send_window += n;
            if self.send_window > MAX_WINDOW {
                return Err(Fatal(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection's window over 2^31-1",
                ));
            }
            // the streams held by the window go on, in turn, until it is used
            // up again (a flood of small updates costs a stream or two each,
            // not a pass over them all)
            self.serve_held();
            return Ok(());
        }
        // (an even id is a stream only a server opens, and this one opens
        // none: idle, whatever the last id the client used)
        if h.stream > self.last_id || h.stream % 2 == 0 {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(i) = self.find(h.stream) else {
            return Ok(());
        };
        if n == 0 {
            return self.reset(h.stream, Reason::PROTOCOL_ERROR, true);
        }
        let s = &mut self.streams[i];
        s.send_window += n;
        if s.send_window > MAX_WINDOW {
            return self.reset(h.stream, Reason::FLOW_CONTROL_ERROR, true);
        }
        // only a response body goes on: a stream not answered yet waits for
        // its turn (one whose service is not even made must not be started
        // by this frame, in the middle of its read: a stream the client
        // resets in the same read must never reach a server)
        if !s.pending.is_empty() || matches!(s.out, Out::Body(_)) {
            self.service(h.stream);
        }
        Ok(())
    }

    fn rst_stream(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.stream == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        if h.len != 4 {
            return Err(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 bytes long",
            ));
        }
        // (an even id is a stream only a server opens, and this one opens
        // none: idle, whatever the last id the client used)
        if h.stream > self.last_id || h.stream % 2 == 0 {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let code = Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        if let Some(i) = self.find(h.stream) {
            let s = self.streams.swap_remove(i);
            match s.out {
                // before its service ran (rapid reset, CVE-2023-44487):
                // answers sent take one back (`respond`)
                Out::Head(_) => {
                    self.early_resets += 1;
                    if self.early_resets > self.cfg.max_pending_accept_reset_streams {
                        return Err(Fatal(
                            Reason::ENHANCE_YOUR_CALM,
                            "too many streams reset before their answer",
                        ));
                    }
                }
                // served, not answered: a request cancelled on its way
                Out::Waiting(_) => self.charge_cancel()?,
                Out::Body(_) | Out::Done => {}
            }
            self.drop_stream(s, code);
            self.closed(h.stream, false);
        }
        Ok(())
    }

    /// A request cancelled on its way to a server (its stream reset after
    /// its service ran, before it answered), by the client's RST_STREAM or
    /// by this side's for the client's error (a client that makes the server
    /// reset its streams cancels as surely: MadeYouReset, CVE-2025-8671):
    /// one from `cancels_left`, GOAWAY ENHANCE_YOUR_CALM when none is left.
    fn charge_cancel(&mut self) -> Result<(), Fatal> {
        let cap = self.cfg.max_concurrent_streams;
        let now = crate::clock::now_ms();
        let refill = now.saturating_sub(self.cancels_at_ms) * u64::from(cap) / 1000;
        if refill > 0 {
            self.cancels_left = (u64::from(self.cancels_left) + refill).min(u64::from(cap)) as u32;
            self.cancels_at_ms = now;
        }
        if self.cancels_left == 0 {
            return Err(Fatal(
                Reason::ENHANCE_YOUR_CALM,
                "requests cancelled faster than max_concurrent_streams a second",
            ));
        }
        self.cancels_left -= 1;
        Ok(())
    }

    /// Forgets a stream: its service future is cancelled, its request body
    /// reader told.
    fn drop_stream(&mut self, mut s: Stream<F, B>, code: Reason) {
        if let Some(b) = s.body.take() {
            b.reset(code);
        }
        if s.held {
            // (`held` holds live streams only: no more than there are)
            self.held.retain(|&id| id != s.id);
        }
        if s.unread > 0 {
            // what the reader has not taken (or the connection not counted)
            // comes back to the connection's window now
            self.recv_unacked += s.unread;
            self.give_back_connection_window();
        }
        if self.streams.is_empty() {
            self.idle_since_ms = crate::clock::now_ms();
        }
    }

    fn closed(&mut self, id: u32, reset: bool) {
        let keep =
            (self.cfg.max_concurrent_streams as usize).clamp(RECENT_CLOSED, RECENT_CLOSED_MAX);
        if self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back((id, reset));
    }

    /// Whether `id` closed lately, and if so whether this side reset it. The
    /// latest entry counts: a stream the client reset and this side then reset
    /// for a frame sent on it after is one this side reset (frames on it are
    /// ignored from then on, RFC 9113 5.1 and 5.4.2).
    fn recently_closed(&self, id: u32) -> Option<bool> {
        self.recent
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| *r)
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// A stream error: RST_STREAM and the stream forgotten. `ours`: for the
    /// client's error (counted against `max_local_error_reset_streams`).
    fn reset(&mut self, id: u32, code: Reason, ours: bool) -> Result<(), Fatal> {
        frame::rst_stream(&mut self.wbuf, id, code);
        self.closed(id, true);
        let mut cancelled = false;
        if let Some(i) = self.find(id) {
            let s = self.streams.swap_remove(i);
            // (its request on its way to a server: cancelled)
            cancelled = matches!(s.out, Out::Waiting(_));
            self.drop_stream(s, code);
        }
        if ours {
            self.local_resets += 1;
            if self.local_resets > self.cfg.max_local_error_reset_streams {
                return Err(Fatal(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset for the client's errors",
                ));
            }
            if cancelled {
                self.charge_cancel()?;
            }
        }
        Ok(())
    }

    fn data(&mut self, h: Head, mut payload: BytesMut) -> Result<(), Fatal> {
        if h.stream == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let copy_under = COPY_UNDER.max(self.cfg.max_frame_size as usize / 4);
        // the whole frame counts against the windows, padding included
        let flow = h.len as i64;
        self.recv_window -= flow;
        if self.recv_window < 0 {
            return Err(Fatal(
                Reason::FLOW_CONTROL_ERROR,
                "DATA over the connection's window",
            ));
        }
        if h.flags & frame::PADDED != 0 {
            let pad = *payload.first().ok_or(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "a padded DATA frame without its pad length",
            ))? as usize;
            if pad >= payload.len() {
                return Err(Fatal(
                    Reason::PROTOCOL_ERROR,
                    "DATA padding over its length",
                ));
            }
            payload.advance(1);
            payload.truncate(payload.len() - pad);
        }
        // the connection's window comes back for padding at once, for data
        // when its reader takes it (so what a connection buffers is bounded
        // by its window, whatever its streams' are)
        let padding = flow - payload.len() as i64;
        self.recv_unacked += padding;
        // (an even id is a stream only a server opens, and this one opens
        // none: idle, whatever the last id the client used)
        if h.stream > self.last_id || h.stream % 2 == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let Some(i) = self.find(h.stream) else {
            self.recv_unacked += payload.len() as i64;
            self.give_back_connection_window();
            let ignored = self.goaway.is_some_and(|last| h.stream > last)
                || self.recently_closed(h.stream) == Some(true);
            if !ignored {
                self.reset(h.stream, Reason::STREAM_CLOSED, true)?;
            }
            return Ok(());
        };
        let s = &mut self.streams[i];
        // refused below: the stream is reset, and what the frame took of the
        // connection's window comes back (RFC 9113 6.9)
        let refused = if !s.remote_open {
            Some(Reason::STREAM_CLOSED)
        } else {
            s.recv_window -= flow;
            (s.recv_window < 0).then_some(Reason::FLOW_CONTROL_ERROR)
        };
        let end = h.flags & frame::END_STREAM != 0;
        let refused = refused.or_else(|| {
            s.received += payload.len() as u64;
            let cl = s.content_length?;
            (s.received > cl || (end && s.received != cl)).then_some(Reason::PROTOCOL_ERROR)
        });
        if let Some(code) = refused {
            self.recv_unacked += payload.len() as i64;
            self.give_back_connection_window();
            return self.reset(h.stream, code, true);
        }
        let s = &mut self.streams[i];
        // the stream's window too comes back for padding at once
        s.recv_unacked += padding;
        if end {
            s.remote_open = false;
        }
        if let Some(mut b) = s.body.take() {
            let mut open = !end;
            let mut passed = true;
            if !payload.is_empty() {
                s.unread += payload.len() as i64;
                passed = s.pass_data(&mut b, payload, copy_under);
            }
            // (the end comes after what was held back)
            if passed && end {
                passed = s.flush_staged(&mut b);
            }
            if !passed {
                // the reader is gone: nobody takes what it had either
                self.recv_unacked += s.unread;
                s.unread = 0;
                s.staged = BytesMut::new();
                open = false;
            }
            s.body = if open { Some(b) } else { b.ended() };
        } else {
            // nobody reads it: its window comes back now
            self.recv_unacked += payload.len() as i64;
        }
        if padding > 0 {
            self.woken.push(h.stream);
        }
        self.give_back_connection_window();
        if end {
            self.maybe_done(h.stream);
        }
        Ok(())
    }

    fn give_back_connection_window(&mut self) {
        let half = (self.cfg.initial_connection_window_size as i64 / 2).max(1);
        if self.recv_unacked >= half {
            frame::window_update(&mut self.wbuf, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
    }

    fn headers(&mut self, h: Head, payload: &[u8]) -> Result<(), Fatal> {
        if h.stream == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let mut p = payload;
        let mut pad = 0;
        if h.flags & frame::PADDED != 0 {
            let (&n, rest) = p.split_first().ok_or(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "a padded HEADERS frame without its pad length",
            ))?;
            pad = n as usize;
            p = rest;
        }
        let mut self_dependent = false;
        if h.flags & frame::PRIORITY_FLAG != 0 {
            if p.len() < 5 {
                return Err(Fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            let dep = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
            self_dependent = dep == h.stream;
            p = &p[5..];
        }
        if pad > p.len() {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "HEADERS padding over its length",
            ));
        }
        let block = &p[..p.len() - pad];
        let end_stream = h.flags & frame::END_STREAM != 0;
        if h.flags & frame::END_HEADERS == 0 {
            self.partial = Some(Partial {
                stream: h.stream,
                end_stream,
                self_dependent,
                block: block.to_vec(),
                continuations: 0,
            });
            self.check_partial()?;
            return Ok(());
        }
        self.header_block(h.stream, block, end_stream, self_dependent)
    }

    fn check_partial(&self) -> Result<(), Fatal> {
        if let Some(p) = &self.partial {
            // each CONTINUATION's frame head counts too: empty ones, which
            // never grow the block, still end a flood of them (CVE-2024-27316)
            if p.block.len() + 9 * p.continuations
                > self.cfg.max_header_list_size as usize + BLOCK_SLACK
            {
                return Err(Fatal(
                    Reason::PROTOCOL_ERROR,
                    "a header block larger than the header list limit allows",
                ));
            }
        }
        Ok(())
    }

    fn continuation(&mut self, h: Head, payload: &[u8]) -> Result<(), Fatal> {
        let Some(p) = self.partial.as_mut() else {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS before it",
            ));
        };
        p.block.extend_from_slice(payload);
        p.continuations += 1;
        self.check_partial()?;
        if h.flags & frame::END_HEADERS != 0 {
            if let Some(p) = self.partial.take() {
                return self.header_block(p.stream, &p.block, p.end_stream, p.self_dependent);
            }
        }
        Ok(())
    }

    /// Decodes a header block into a request head (or trailers).
    fn decode(&mut self, block: &[u8], trailers: bool) -> Result<Fields, Fatal> {
        let mut f = Fields::new(self.cfg.max_header_list_size as usize, trailers);
        self.decoder
            .decode(block, |n, v| f.field(n, v))
            .map_err(|_| {
                Fatal(
                    Reason::COMPRESSION_ERROR,
                    "a header block HPACK cannot decode",
                )
            })?;
        Ok(f)
    }

    /// A whole header block. `self_dependent`: its HEADERS frame made the
    /// stream depend on itself (RFC 9113 5.3.1: a stream error, unless the
    /// stream is closed; the block is decoded all the same, the table moves
    /// with it).
    fn header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
        self_dependent: bool,
    ) -> Result<(), Fatal> {
        if id % 2 == 0 {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        if id <= self.last_id {
            // trailers of an open stream, or a closed stream
            let Some(i) = self.find(id) else {
                self.decode(block, true)?;
                if self.goaway.is_some_and(|last| id > last) {
                    return Ok(());
                }
                return match self.recently_closed(id) {
                    Some(true) => Ok(()),
                    Some(false) => self.reset(id, Reason::STREAM_CLOSED, true),
                    // RFC 9113 5.1.1: ids only grow
                    None => Err(Fatal(
                        Reason::PROTOCOL_ERROR,
                        "HEADERS on a stream id lower than one already used",
                    )),
                };
            };
            let f = self.decode(block, true)?;
            if self_dependent {
                return self.reset(id, Reason::PROTOCOL_ERROR, true);
            }
            if !self.streams[i].remote_open {
                return self.reset(id, Reason::STREAM_CLOSED, true);
            }
            if !end_stream {
                return self.reset(id, Reason::PROTOCOL_ERROR, true);
            }
            if f.block.malformed.is_some() || f.block.too_large {
                return self.reset(id, Reason::PROTOCOL_ERROR, true);
            }
            let s = &mut self.streams[i];
            s.remote_open = false;
            if let Some(cl) = s.content_length {
                if s.received != cl {
                    return self.reset(id, Reason::PROTOCOL_ERROR, true);
                }
            }
            if let Some(mut b) = s.body.take() {
                // (after the data held back; a reader gone takes neither)
                s.flush_staged(&mut b);
                b.send(Chunk::Trailers(Box::new(f.block.headers)));
                s.body = b.ended();
            }
            self.maybe_done(id);
            return Ok(());
        }
        self.last_id = id;
        let f = self.decode(block, false)?;
        if self_dependent {
            return self.reset(id, Reason::PROTOCOL_ERROR, true);
        }
        if self.goaway.is_some_and(|last| id > last) {
            // after GOAWAY: not served (the client may send it again elsewhere)
            return Ok(());
        }
        if self.streams.len() >= self.cfg.max_concurrent_streams as usize {
            // over the limit this side set: the client's error, counted as
            // one (each costs a header block's decoding)
            return self.reset(id, Reason::REFUSED_STREAM, true);
        }
        if let Some(why) = f.block.malformed {
            tracing::debug!(stream = id, why, "malformed HTTP/2 request");
            return self.reset(id, Reason::PROTOCOL_ERROR, true);
        }
        let too_large = f.block.too_large;
        // what of the request came before the limit, decided before
        // request() takes the fields (a CONNECT's target is its :authority)
        let mut mark = too_large.then(|| HeaderListTooLarge {
            method_known: f.method.is_some(),
            target_known: if f.method == Some(Method::CONNECT) {
                f.authority.is_some()
            } else {
                f.path.is_some()
            },
        });
        let method = if too_large { f.method.clone() } else { None };
        let (mut req, content_length, head) = match f.request(end_stream) {
            Ok(r) => r,
            Err(why) if too_large => {
                // a pseudo-header came after the limit and was dropped with
                // the rest (a long :path), or one that fitted is malformed
                // (fields after the limit are not checked): the method alone,
                // still answered 431 by the service
                tracing::debug!(
                    stream = id,
                    why,
                    "HTTP/2 request over the header list limit"
                );
                if let Some(m) = mark.as_mut() {
                    // (the request says `/`: not the client's target)
                    m.target_known = false;
                }
                let mut req = Request::new(());
                let head = method == Some(Method::HEAD);
                if let Some(m) = method {
                    *req.method_mut() = m;
                }
                (req, None, head)
            }
            Err(why) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                return self.reset(id, Reason::PROTOCOL_ERROR, true);
            }
        };
        let wake = Arc::new(StreamWake {
            woken: AtomicBool::new(false),
            taken: AtomicUsize::new(0),
            chunks: AtomicUsize::new(0),
            ready: Arc::clone(&self.ready),
        });
        let waker = Waker::from(Arc::clone(&wake));
        let mut s = Stream {
            id,
            remote_open: !end_stream,
            body: (!end_stream).then(|| BodyTx::Early(SmallVec::new())),
            unread: 0,
            queued: 0,
            staged: BytesMut::new(),
            recv_window: self.local_window,
            recv_unacked: 0,
            content_length,
            received: 0,
            out: Out::Done,
            send_window: self.peer_initial_window,
            pending: Bytes::new(),
            pending_end: false,
            wake,
            waker,
            head,
            held: false,
        };
        if too_large {
            // the service answers it (431), where it is counted and logged:
            // the fields that fitted are dropped, the request marked
            req.headers_mut().clear();
            if let Some(mark) = mark {
                req.extensions_mut().insert(mark);
            }
        }
        s.out = Out::Head(req);
        self.streams.push(s);
        // first polled once the frames read with it are handled: a stream
        // the client resets in the same read never reaches a server
        self.woken.push(id);
        Ok(())
    }

    /// A service future answered: the head goes out, the body follows.
    fn respond(&mut self, i: usize, resp: Response<B>) {
        let (parts, body) = resp.into_parts();
        let s = &mut self.streams[i];
        let id = s.id;
        let end = s.head || body.is_end_stream();
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        if block.capacity() == 0 {
            // (given back while idle)
            block.reserve(256);
        }
        hpack::encode_status(&mut block, parts.status.as_u16());
        let mut seen = encode_fields(&mut block, &parts.headers);
        fields::recycle(parts.headers);
        body.wire_fields(&mut |name, value| {
            // an HTTP/1.1 head's fields, the connection's own already left out
            seen.date |= name.eq_ignore_ascii_case(b"date");
            seen.length |= name.eq_ignore_ascii_case(b"content-length");
            hpack::encode_field_lowercase(&mut block, name, value);
        });
        if !seen.date {
            // an answer of rampart's own, or a server's without one: HTTP
            // wants a Date (RFC 9110 6.6.1), as hyper gave it
            hpack::encode_field(&mut block, b"date", &crate::clock::http_date_now());
        }
        if !end && !seen.length {
            // as hyper set it: the length of a body that knows it
            if let Some(n) = body.size_hint().exact() {
                hpack::encode_field(&mut block, b"content-length", n.to_string().as_bytes());
            }
        }
        frame::headers(&mut self.wbuf, id, &block, end, self.peer_max_frame);
        self.block = block;
        if self.early_resets > 0 {
            self.early_resets -= 1;
        }
        s.out = if end { Out::Done } else { Out::Body(body) };
    }

    /// Looks at a stream whose waker fired or whose window grew: takes what
    /// its response body has, as far as the windows allow; gives the client
    /// back the window its request body's reader freed.
    fn service(&mut self, id: u32) {
        let Some(i) = self.find(id) else {
            return;
        };
        // request body: window back for what the reader took
        let s = &mut self.streams[i];
        // (nothing with the reader: nothing to swap, on every bodiless request)
        let taken = if s.unread > 0 {
            (s.wake.taken.swap(0, Ordering::Acquire) as i64).min(s.unread)
        } else {
            0
        };
        s.unread -= taken;
        s.recv_unacked += taken;
        self.recv_unacked += taken;
        if s.queued > 0 {
            let took = s.wake.chunks.swap(0, Ordering::Acquire);
            s.queued = s.queued.saturating_sub(took);
        }
        if !s.staged.is_empty() && s.queued < QUEUED_CHUNKS {
            // the reader took chunks: what was held back goes
            if let Some(mut b) = s.body.take() {
                if s.flush_staged(&mut b) {
                    s.body = Some(b);
                } else {
                    self.recv_unacked += s.unread;
                    s.unread = 0;
                    s.staged = BytesMut::new();
                    s.body = b.ended();
                }
            }
        }
        // given back once half the window is used
        let half = (self.cfg.initial_stream_window_size as i64 / 2).max(1);
        if s.remote_open && s.recv_unacked >= half {
            s.recv_window += s.recv_unacked;
            frame::window_update(&mut self.wbuf, id, s.recv_unacked as u32);
            s.recv_unacked = 0;
        }
        self.give_back_connection_window();
        let waker = self.streams[i].waker.clone();
        let mut cx = Context::from_waker(&waker);
        let s = &mut self.streams[i];
        if let Out::Head(_) = s.out {
            let Out::Head(req) = std::mem::replace(&mut s.out, Out::Done) else {
                return;
            };
            let left = s.content_length;
            let reading = |from| RecvBody {
                inner: Some(Source {
                    from,
                    wake: Arc::clone(&s.wake),
                }),
                left,
                reset: None,
            };
            let body = match s.body.take() {
                // END_STREAM with the head
                None => RecvBody::empty(),
                Some(BodyTx::Early(chunks)) if !s.remote_open => {
                    reading(From::Whole(chunks.into_iter()))
                }
                Some(BodyTx::Early(chunks)) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    for c in chunks {
                        let _ = tx.send(c);
                    }
                    s.body = Some(BodyTx::Chan(tx));
                    reading(From::Chan(rx))
                }
                // (a channel is made with the future, never before it: were
                // one here, the reader would fail rather than see no body)
                Some(BodyTx::Chan(_)) => RecvBody {
                    inner: None,
                    left: None,
                    reset: Some(Reason::INTERNAL_ERROR),
                },
            };
            s.out = Out::Waiting((self.svc)(req.map(|()| body)));
        }
        if let Out::Waiting(fut) = &mut s.out {
            match Pin::new(fut).poll(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(resp) => self.respond(i, resp),
            }
            if matches!(self.streams[i].out, Out::Done) {
                self.maybe_done(id);
                return;
            }
        }
        let max_frame = self.peer_max_frame;
        let s = &mut self.streams[i];
        // a DATA frame sent this turn
        let mut sent = false;
        loop {
            if !s.pending.is_empty() || s.pending_end {
                if sent && !s.pending.is_empty() && !self.held.is_empty() {
                    // others wait for the connection's window: a frame each,
                    // in turn (see `serve_held`)
                    if !s.held {
                        s.held = true;
                        self.held.push_back(id);
                    }
                    return;
                }
                let room = s.send_window.min(self.send_window).max(0) as usize;
                let n = s.pending.len().min(room).min(max_frame);
                if n == 0 && !s.pending.is_empty() {
                    // held by the client's window; by the connection's, in
                    // line for it (its own WINDOW_UPDATE wakes it otherwise)
                    if s.send_window > 0 && !s.held {
                        s.held = true;
                        self.held.push_back(id);
                    }
                    return;
                }
                sent |= n > 0;
                let chunk = s.pending.split_to(n);
                let last = s.pending.is_empty() && s.pending_end;
                frame::head(
                    &mut self.wbuf,
                    n,
                    frame::DATA,
                    if last { frame::END_STREAM } else { 0 },
                    id,
                );
                self.wbuf.extend_from_slice(&chunk);
                s.send_window -= n as i64;
                self.send_window -= n as i64;
                if last {
                    s.pending_end = false;
                    s.out = Out::Done;
                    self.maybe_done(id);
                    return;
                }
                if !s.pending.is_empty() {
                    continue;
                }
            }
            if self.wbuf.len() - self.wpos >= WRITE_HIGH {
                // taken up again once the socket took the backlog
                self.woken.push(id);
                return;
            }
            let Out::Body(body) = &mut s.out else {
                return;
            };
            match Pin::new(body).poll_frame(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        let end = match &s.out {
                            Out::Body(b) => b.is_end_stream(),
                            _ => true,
                        };
                        s.pending = d;
                        s.pending_end = end;
                        if s.pending.is_empty() && !end {
                            continue;
                        }
                    }
                    Err(f) => {
                        let trailers = f.into_trailers().unwrap_or_default();
                        self.block.clear();
                        encode_fields(&mut self.block, &trailers);
                        fields::recycle(trailers);
                        frame::headers(&mut self.wbuf, id, &self.block, true, max_frame);
                        s.out = Out::Done;
                        self.maybe_done(id);
                        return;
                    }
                },
                Poll::Ready(None) => {
                    s.pending_end = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(stream = id, error = %e, "response body failed; stream reset");
                    let _ = self.reset(id, Reason::INTERNAL_ERROR, false);
                    return;
                }
            }
        }
    }

    /// Streams held by the connection's window take a DATA frame each, in
    /// the order they were held (one with more goes back in line), while the
    /// window and the write backlog allow: a large download does not take
    /// the whole window from the answers behind it, as when streams were
    /// served in the order they were opened, each as far as the windows
    /// allowed. True when frames were written.
    fn serve_held(&mut self) -> bool {
        let before = self.wbuf.len();
        while self.send_window > 0 && self.wbuf.len() - self.wpos < WRITE_HIGH {
            let Some(id) = self.held.pop_front() else {
                break;
            };
            let Some(i) = self.find(id) else {
                continue;
            };
            self.streams[i].held = false;
            self.service(id);
        }
        self.wbuf.len() != before
    }

    /// Forgets a stream both sides are done with. One whose response is
    /// complete while the client still sends its body is reset with NO_ERROR
    /// (RFC 9113 8.1): the body is not wanted.
    fn maybe_done(&mut self, id: u32) {
        let Some(i) = self.find(id) else {
            return;
        };
        let s = &self.streams[i];
        if !matches!(s.out, Out::Done) {
            return;
        }
        let reset = s.remote_open;
        if reset {
            frame::rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
        }
        self.closed(id, reset);
        let s = self.streams.swap_remove(i);
        self.drop_stream(s, Reason::NO_ERROR);
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut progress = false;
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(ConnError::Io(e)),
                Poll::Pending => break,
            }
        }
        if progress {
            self.unflushed = true;
            self.moved_ms = crate::clock::now_ms();
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.unflushed {
                // (TLS: what the session holds goes to the socket)
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Err(ConnError::Io(e)),
                    Poll::Pending => {}
                }
            }
        }
        Ok(progress)
    }

    /// Keep-alive pings, the idle timeout and the stall timeout, on one timer.
    fn timers(&mut self, cx: &mut Context<'_>) -> Result<(), ConnError> {
        let now = crate::clock::now_ms();
        let cfg = self.cfg;
        let ms = |d: Duration| d.as_millis() as u64;
        let mut next = u64::MAX;
        if let Some(iv) = cfg.keepalive_interval {
            match self.ping_sent_ms {
                Some(at) => {
                    if now >= at + ms(cfg.keepalive_timeout) {
                        return Err(ConnError::PingTimeout(cfg.keepalive_timeout));
                    }
                    next = next.min(at + ms(cfg.keepalive_timeout));
                }
                None => {
                    let due = self.last_read_ms + ms(iv);
                    if now >= due {
                        frame::ping(&mut self.wbuf, false, b"rampart!");
                        self.ping_sent_ms = Some(now);
                        cx.waker().wake_by_ref();
                        next = next.min(now + ms(cfg.keepalive_timeout));
                    } else {
                        next = next.min(due);
                    }
                }
            }
        }
        if let (Some(idle), None) = (cfg.idle_timeout, self.goaway) {
            if self.streams.is_empty() {
                let due = self.idle_since_ms + ms(idle);
                if now >= due {
                    tracing::debug!("HTTP/2 connection idle; GOAWAY");
                    self.send_goaway(Reason::NO_ERROR);
                    cx.waker().wake_by_ref();
                } else {
                    next = next.min(due);
                }
            }
        }
        if self.streams.is_empty() && self.streams.capacity() > 0 {
            // the room its streams and their header blocks had, kept while
            // requests come one after another, goes once it has had none for
            // a while
            let due = self.idle_since_ms + IDLE_ROOM_MS;
            if now >= due {
                self.streams = Vec::new();
                self.block = Vec::new();
                if self.woken.is_empty() {
                    self.woken = Vec::new();
                }
                self.recent.shrink_to_fit();
                self.held = VecDeque::new();
                self.decoder.shrink();
            } else {
                next = next.min(due);
            }
        }
        let held = self.wpos < self.wbuf.len()
            || self.unflushed
            || self
                .streams
                .iter()
                .any(|s| !s.pending.is_empty() && (s.send_window <= 0 || self.send_window <= 0));
        if held {
            let due = self.moved_ms + ms(cfg.stall_timeout);
            if now >= due {
                return Err(ConnError::Stalled(cfg.stall_timeout));
            }
            next = next.min(due);
        }
        if next != u64::MAX && (next < self.timer_at || self.timer_at <= now) {
            self.timer_at = next;
            let at = tokio::time::Instant::now() + Duration::from_millis(next.saturating_sub(now));
            self.timer.as_mut().reset(at);
        }
        // (a timer not armed again is not polled: it stays elapsed)
        if self.timer_at != u64::MAX && self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = u64::MAX;
            cx.waker().wake_by_ref();
        }
        Ok(())
    }
}

fn fatal(reason: Reason, why: &'static str) -> ConnError {
    ConnError::GoAway { reason, why }
}

/// Response and trailer fields as HPACK, without the fields HTTP/2 forbids.
/// Returns whether there was a Date.
fn encode_fields(block: &mut Vec<u8>, headers: &HeaderMap) -> Seen {
    let mut seen = Seen::default();
    for (name, value) in headers {
        if fields::is_connection_specific(name) {
            continue;
        }
        seen.date |= name == header::DATE;
        let sensitive = value.is_sensitive();
        let mut value = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            // HTTP/2 allows one field with one number (RFC 9113 8.1.1): of a
            // length an HTTP/1.1 server repeated with one value (a list, or
            // several fields; hyper accepts them if they agree), the first
            if seen.length {
                continue;
            }
            seen.length = true;
            value = crate::h1::first_value(value);
        }
        hpack::encode_field_as(block, sensitive, name.as_str().as_bytes(), value);
    }
    seen
}

/// Fields `encode_fields` found (and the answer must otherwise get).
#[derive(Default)]
struct Seen {
    date: bool,
    length: bool,
}

/// A request head (or trailers) as decoded.
struct Fields {
    method: Option<Method>,
    scheme: Option<http::uri::Scheme>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    block: fields::Block,
}

impl Fields {
    fn new(limit: usize, trailers: bool) -> Fields {
        Fields {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            // a request's fields and the X-Forwarded-* added to them fit
            // without growing the map (growing reallocates both its tables)
            block: fields::Block::new(limit, trailers, if trailers { 0 } else { 12 }),
        }
    }

    fn bad(&mut self, why: &'static str) {
        self.block.bad(why);
    }

    fn field(&mut self, name: hpack::Name<'_>, val: hpack::Value<'_>) {
        let value = val.bytes();
        if !self.block.count(name.bytes, value) {
            return;
        }
        if let Some(pseudo) = name.bytes.strip_prefix(b":") {
            if !fields::valid_value(value) {
                return self.bad("a pseudo-header with a forbidden byte or edge whitespace");
            }
            if self.block.regular_seen || self.block.trailers {
                return self.bad("a pseudo-header after a regular field, or in trailers");
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.bad("a pseudo-header twice");
                    }
                    match Method::from_bytes(value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.bad("an invalid :method"),
                    }
                    return;
                }
                b"scheme" => {
                    if self.scheme.is_some() {
                        return self.bad("a pseudo-header twice");
                    }
                    match http::uri::Scheme::try_from(value) {
                        Ok(s) => self.scheme = Some(s),
                        Err(_) => self.bad("an invalid :scheme"),
                    }
                    return;
                }
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return self.bad("an unknown pseudo-header"),
            };
            if slot.is_some() {
                return self.bad("a pseudo-header twice");
            }
            *slot = Some(val.to_bytes());
            return;
        }
        self.block.regular(name, val, |n, v| {
            (n == header::TE && v != b"trailers").then_some("TE other than \"trailers\"")
        });
    }

    /// The request, its content-length, and whether it is a HEAD.
    fn request(self, end_stream: bool) -> Result<(Request<()>, Option<u64>, bool), &'static str> {
        let method = self.method.ok_or("no :method")?;
        if method == Method::CONNECT {
            // RFC 9113 8.5: only :method and :authority
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
        } else if self.scheme.is_none() {
            return Err("no :scheme");
        }
        let path = match (&self.path, method == Method::CONNECT) {
            (Some(p), false) if p.is_empty() => return Err("an empty :path"),
            // RFC 9113 8.3.1: the target's path and query (origin form), or
            // `*` for OPTIONS. Sent on as an HTTP/1.1 request line, any other
            // target ("admin", "?q") is one the proxy's routes and rules did
            // not see as the server may read it.
            (Some(p), false)
                if !(p.starts_with(b"/") || (p == &b"*"[..] && method == Method::OPTIONS)) =>
            {
                return Err("a :path neither in origin form nor * for OPTIONS");
            }
            (None, false) => return Err("no :path"),
            (p, _) => p.clone(),
        };
        if end_stream && self.block.content_length.is_some_and(|n| n > 0) {
            return Err("a content-length over 0 and no body");
        }
        let mut headers = self.block.headers;
        // (one lookup for both questions)
        let (has_host, two_hosts) = {
            let mut hosts = headers.get_all(header::HOST).iter();
            (hosts.next().is_some(), hosts.next().is_some())
        };
        if two_hosts {
            // routes and rules would see the first, a server may take the
            // last (RFC 9110 7.2: 400 in HTTP/1.1; nginx refuses it too)
            return Err("more than one host field");
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.scheme;
        if let Some(a) = self.authority {
            let authority = http::uri::Authority::from_maybe_shared(a.clone())
                .map_err(|_| "an invalid :authority")?;
            // Host from :authority (RFC 9113 8.3.1), sharing its bytes: what
            // an intermediary sends on, made here where the bytes are at hand
            if !has_host {
                if let Ok(v) = HeaderValue::from_maybe_shared(a) {
                    // (a map already full is a list over the limit: its
                    // fields are dropped for the 431)
                    let _ = headers.try_insert(header::HOST, v);
                }
            }
            parts.authority = Some(authority);
        }
        if let Some(p) = path {
            parts.path_and_query = Some(
                http::uri::PathAndQuery::from_maybe_shared(p).map_err(|_| "an invalid :path")?,
            );
        }
        if parts.scheme.is_some() && parts.authority.is_none() {
            // a URI with a scheme needs an authority: take the path alone
            parts.scheme = None;
        }
        let uri = Uri::from_parts(parts).map_err(|_| "an invalid request target")?;
        let head = method == Method::HEAD;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = headers;
        Ok((req, self.block.content_length, head))
    }
}

#[cfg(test)]
mod tests {
    //! The request body's handoff to a reader on another task, over a real
    //! loopback connection whose client side writes raw frames.
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

    impl WireFields for Full<Bytes> {}

    #[test]
    fn a_repeated_content_length_is_encoded_once_with_one_number() {
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        h.append("x-app", HeaderValue::from_static("1"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        let mut block = Vec::new();
        let seen = encode_fields(&mut block, &h);
        assert!(seen.length && !seen.date);
        let mut got = Vec::new();
        hpack::Decoder::new(4096)
            .decode(&block, |n, v| {
                got.push((n.bytes.to_vec(), v.to_bytes().to_vec()));
            })
            .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"content-length".to_vec(), b"5".to_vec()),
            (b"x-app".to_vec(), b"1".to_vec()),
        ];
        assert_eq!(got, want);
    }

    fn settings() -> Settings {
        Settings {
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            initial_stream_window_size: 65_535,
            initial_connection_window_size: 65_535,
            max_frame_size: 16_384,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 20,
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: None,
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// What a reader on its own task got from a request body: its data, and
    /// how the body ended.
    #[derive(Debug, PartialEq)]
    struct Read {
        data: Vec<u8>,
        /// Fields of the trailers.
        trailers: usize,
        end: Result<bool, String>,
    }

    /// A server whose one stream's body is read on another task (as a backend
    /// connection's task reads it); the service never answers. The client
    /// sends HEADERS and 5 bytes of DATA, what `with_head` writes, all in one
    /// write, then, once the service has the request, what `after` writes.
    /// The client's socket, and what the reader got.
    async fn serve_one(
        cfg: Settings,
        with_head: impl FnOnce(&mut Vec<u8>),
        after: impl FnOnce(&mut Vec<u8>),
    ) -> (tokio::net::TcpStream, oneshot::Receiver<Read>) {
        let (mut client, server) = connected().await;
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let (started_tx, started) = oneshot::channel();
        let mut started_tx = Some(started_tx);
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let tx = tx.take();
                let mut body = req.into_body();
                if let Some(s) = started_tx.take() {
                    let _ = s.send(());
                }
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut trailers = 0;
                    let end = loop {
                        match body.frame().await {
                            None => break Ok(body.is_end_stream()),
                            Some(Err(e)) => break Err(e.to_string()),
                            Some(Ok(f)) => match f.into_data() {
                                Ok(d) => data.extend_from_slice(&d),
                                Err(f) => trailers += f.into_trailers().map_or(0, |t| t.len()),
                            },
                        }
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(Read {
                            data,
                            trailers,
                            end,
                        });
                    }
                });
                Box::pin(std::future::pending())
            };
            let _ = serve(server, &cfg, svc, CancellationToken::new()).await;
        });
        let (mut out, block) = preface_and_request("POST");
        frame::headers(&mut out, 1, &block, false, 16_384);
        frame::head(&mut out, 5, frame::DATA, 0, 1);
        out.extend_from_slice(b"hello");
        with_head(&mut out);
        client.write_all(&out).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), started)
            .await
            .expect("the service was never called")
            .unwrap();
        let mut out = Vec::new();
        after(&mut out);
        client.write_all(&out).await.unwrap();
        (client, rx)
    }

    /// A loopback connection: the client's end and the server's.
    async fn connected() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        (c, server)
    }

    async fn within(rx: oneshot::Receiver<Read>) -> Read {
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the reader was never told")
            .expect("the reader's task ended")
    }

    /// A client's preface and SETTINGS, and the header block of a request.
    fn preface_and_request(method: &str) -> (Vec<u8>, Vec<u8>) {
        let mut out = frame::PREFACE.to_vec();
        frame::settings(&mut out, &[]);
        (out, request_block(method, "/"))
    }

    /// The header block of a request for `path`.
    fn request_block(method: &str, path: &str) -> Vec<u8> {
        let mut block = Vec::new();
        for (n, v) in [
            (":method", method),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", path),
        ] {
            hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
        }
        block
    }

    /// What `pick` makes of the first frame from the server it takes, within
    /// 10 s.
    async fn first_frame<T>(
        c: &mut tokio::net::TcpStream,
        mut pick: impl FnMut(Head, &[u8]) -> Option<T>,
    ) -> T {
        let read = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut at = 0;
            loop {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the frame looked for");
                got.extend_from_slice(&buf[..n]);
                while got.len() >= at + 9 {
                    let h = Head::parse(&got[at..at + 9]);
                    let Some(p) = got.get(at + 9..at + 9 + h.len) else {
                        break;
                    };
                    let len = h.len;
                    if let Some(t) = pick(h, p) {
                        return t;
                    }
                    at += 9 + len;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no such frame from the server")
    }

    /// A server whose service never answers: the client's socket, and how
    /// many times the service was called.
    async fn serve_never_answering(cfg: Settings) -> (tokio::net::TcpStream, Arc<AtomicUsize>) {
        let (c, server) = connected().await;
        let called = Arc::new(AtomicUsize::new(0));
        let calls = Arc::clone(&called);
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer {
                calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(std::future::pending())
            };
            let _ = serve(server, &cfg, svc, CancellationToken::new()).await;
        });
        (c, called)
    }

    /// A GOAWAY frame's error code.
    fn goaway_code(h: Head, p: &[u8]) -> Option<Reason> {
        (h.kind == frame::GOAWAY).then(|| Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])))
    }

    /// A WINDOW_UPDATE between a stream's HEADERS and its RST_STREAM, in one
    /// read, does not start the stream's service: the reset still counts as
    /// a rapid reset, and past the limit the connection gets GOAWAY
    /// ENHANCE_YOUR_CALM, having called the service for none of them.
    #[tokio::test]
    async fn a_window_update_before_the_reset_does_not_hide_a_rapid_reset() {
        let (mut c, called) = serve_never_answering(settings()).await;
        let (mut out, block) = preface_and_request("GET");
        // settings() allows 20
        for id in (1..60).step_by(2) {
            frame::headers(&mut out, id, &block, true, 16_384);
            frame::window_update(&mut out, id, 1);
            frame::rst_stream(&mut out, id, Reason::CANCEL);
        }
        c.write_all(&out).await.unwrap();
        let code = first_frame(&mut c, goaway_code).await;
        assert_eq!(code, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(called.load(Ordering::SeqCst), 0);
    }

    /// Requests cancelled after their service ran (on their way to a server):
    /// a client may cancel all it has in flight at once (a browser leaving a
    /// page, gRPC deadlines) and go on, but one that holds its resets back a
    /// read to dodge the rapid-reset count, round after round, gets GOAWAY
    /// ENHANCE_YOUR_CALM once it cancels faster than max_concurrent_streams
    /// (here 100) a second.
    #[tokio::test]
    async fn requests_cancelled_in_flight_are_allowed_in_bursts_not_as_a_flood() {
        cancels_in_flight(settings(), |out, id| {
            frame::rst_stream(out, id, Reason::CANCEL)
        })
        .await;
    }

    /// MadeYouReset (CVE-2025-8671): a stream this side resets for the
    /// client's error (here a WINDOW_UPDATE of 0) while its request is on its
    /// way to a server cancels the request as surely as the client's
    /// RST_STREAM, and is charged to the same budget: however many errors the
    /// client is allowed, round after round of them ends in GOAWAY
    /// ENHANCE_YOUR_CALM within a few.
    #[tokio::test]
    async fn streams_reset_for_the_clients_errors_in_flight_count_as_cancels() {
        let cfg = Settings {
            max_local_error_reset_streams: 1_000_000,
            ..settings()
        };
        cancels_in_flight(cfg, |out, id| frame::window_update(out, id, 0)).await;
    }

    /// Rounds of 100 requests served (never answered), then all cancelled
    /// by what `cancel` writes for each: the first round is allowed (a burst
    /// of all a client has in flight), and GOAWAY ENHANCE_YOUR_CALM comes
    /// within 10 (`cfg.max_concurrent_streams` is 100).
    async fn cancels_in_flight(cfg: Settings, cancel: fn(&mut Vec<u8>, u32)) {
        let (mut c, called) = serve_never_answering(cfg).await;
        let (mut out, block) = preface_and_request("GET");
        c.write_all(&out).await.unwrap();
        out.clear();
        let mut next = 1u32;
        // one round: 100 streams served, then all reset; true when the
        // server answered a PING after it without GOAWAY
        let mut round = async |c: &mut tokio::net::TcpStream| -> bool {
            let ids: Vec<u32> = (0..100).map(|k| next + 2 * k).collect();
            next += 200;
            let mut out = Vec::new();
            for &id in &ids {
                frame::headers(&mut out, id, &block, true, 16_384);
            }
            c.write_all(&out).await.unwrap();
            let want = (ids[99] as usize).div_ceil(2);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while called.load(Ordering::SeqCst) < want {
                assert!(tokio::time::Instant::now() < deadline, "not all served");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut out = Vec::new();
            for &id in &ids {
                cancel(&mut out, id);
            }
            frame::ping(&mut out, false, b"fencing!");
            c.write_all(&out).await.unwrap();
            first_frame(c, |h, p| {
                (h.kind == frame::GOAWAY || (h.kind == frame::PING && h.flags & frame::ACK != 0))
                    .then(|| {
                        if h.kind == frame::GOAWAY {
                            assert_eq!(
                                Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])),
                                Reason::ENHANCE_YOUR_CALM
                            );
                        }
                        h.kind == frame::PING
                    })
            })
            .await
        };
        // a burst of all it has in flight: the connection goes on
        assert!(round(&mut c).await, "GOAWAY after one burst of cancels");
        // round after round at once: GOAWAY within a few
        let mut rounds = 1;
        while round(&mut c).await {
            rounds += 1;
            assert!(
                rounds < 10,
                "no GOAWAY after {rounds} rounds of 100 cancels"
            );
        }
    }

    /// Streams opened over SETTINGS_MAX_CONCURRENT_STREAMS are refused and
    /// counted as the client's errors: past the limit, GOAWAY.
    #[tokio::test]
    async fn refused_streams_count_as_the_clients_errors() {
        let (mut c, server) = connected().await;
        let cfg = Settings {
            max_concurrent_streams: 1,
            ..settings()
        };
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer { Box::pin(std::future::pending()) };
            let _ = serve(server, &cfg, svc, CancellationToken::new()).await;
        });
        let (mut out, block) = preface_and_request("GET");
        // one served (never answered), then 30 over the limit of 1;
        // settings() allows 20 resets for the client's errors
        for id in (1..63).step_by(2) {
            frame::headers(&mut out, id, &block, true, 16_384);
        }
        c.write_all(&out).await.unwrap();
        let mut refused = 0;
        let code = first_frame(&mut c, |h, p| {
            if h.kind == frame::RST_STREAM {
                assert_eq!(
                    Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
                    Reason::REFUSED_STREAM
                );
                refused += 1;
            }
            goaway_code(h, p)
        })
        .await;
        assert_eq!(code, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(refused, 21);
    }

    /// A request with two Host fields is malformed: routes and rules would
    /// see the first, a server might take the last. With :authority or
    /// without, it is reset and never served; one Host is served.
    #[tokio::test]
    async fn two_host_fields_are_malformed() {
        let (mut c, server) = connected().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let _ = tx.send(req.uri().path().to_owned());
                Box::pin(std::future::pending())
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, _) = preface_and_request("GET");
        for (id, authority, hosts) in [
            (1, None, &["a.example", "b.example"][..]),
            (3, Some("a.example"), &["a.example", "b.example"][..]),
            (5, None, &["a.example"][..]),
        ] {
            let mut block = Vec::new();
            let path = format!("/{id}");
            let mut fields = vec![(":method", "GET"), (":scheme", "http"), (":path", &path)];
            if let Some(a) = authority {
                fields.push((":authority", a));
            }
            for h in hosts {
                fields.push(("host", h));
            }
            for (n, v) in fields {
                hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
            }
            frame::headers(&mut out, id, &block, true, 16_384);
        }
        c.write_all(&out).await.unwrap();
        assert_eq!(
            resets_before_a_ping(&mut c).await,
            [(1, Reason::PROTOCOL_ERROR), (3, Reason::PROTOCOL_ERROR)]
        );
        let served = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the service was never called")
            .unwrap();
        assert_eq!(served, "/5");
        assert!(
            rx.try_recv().is_err(),
            "a request with two hosts was served"
        );
    }

    /// Empty CONTINUATION frames never grow the header block, but each
    /// counts: a flood of them ends in GOAWAY, not at the idle timeout.
    #[tokio::test]
    async fn a_flood_of_empty_continuations_ends_the_connection() {
        let (mut c, server) = connected().await;
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer { Box::pin(std::future::pending()) };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, block) = preface_and_request("GET");
        let mut head = Vec::new();
        frame::headers(&mut head, 1, &block, true, 16_384);
        // the same frame without END_HEADERS (flags: END_STREAM only)
        head[4] = frame::END_STREAM;
        out.extend_from_slice(&head);
        c.write_all(&out).await.unwrap();
        let reader = tokio::spawn(async move {
            let (mut r, mut w) = c.into_split();
            let writer = tokio::spawn(async move {
                // (16 KiB of list and 16 KiB of slack: 3,641 empty frames)
                let mut out = Vec::new();
                for _ in 0..10_000 {
                    frame::head(&mut out, 0, frame::CONTINUATION, 0, 1);
                }
                let _ = w.write_all(&out).await;
                w
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            drop(writer);
            got
        });
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the connection was never closed")
            .unwrap();
        let mut at = 0;
        let mut goaway = None;
        while got.len() >= at + 9 {
            let h = Head::parse(&got[at..at + 9]);
            let p = &got[at + 9..(at + 9 + h.len).min(got.len())];
            if h.kind == frame::GOAWAY && p.len() >= 8 {
                goaway = Some(Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])));
            }
            at += 9 + h.len;
        }
        assert_eq!(goaway, Some(Reason::PROTOCOL_ERROR));
    }

    /// RFC 9113 6.8: a GOAWAY for an error after a graceful one does not
    /// raise the last stream id to a stream opened after the first, which
    /// was never served.
    #[tokio::test]
    async fn a_later_goaway_keeps_the_first_ones_last_stream() {
        let (mut c, server) = connected().await;
        let stop = CancellationToken::new();
        let graceful = stop.clone();
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer { Box::pin(std::future::pending()) };
            let _ = serve(server, &settings(), svc, graceful).await;
        });
        let (mut out, block) = preface_and_request("GET");
        frame::headers(&mut out, 1, &block, true, 16_384);
        c.write_all(&out).await.unwrap();
        // the stream is open once a PING sent after it is answered
        resets_before_a_ping(&mut c).await;
        stop.cancel();
        let goaway = |h: Head, p: &[u8]| {
            (h.kind == frame::GOAWAY).then(|| {
                (
                    u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                    Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])),
                )
            })
        };
        assert_eq!(first_frame(&mut c, goaway).await, (1, Reason::NO_ERROR));
        let mut out = Vec::new();
        frame::headers(&mut out, 3, &block, true, 16_384);
        // DATA on stream 0: a connection error
        frame::head(&mut out, 1, frame::DATA, 0, 0);
        out.push(0);
        c.write_all(&out).await.unwrap();
        assert_eq!(
            first_frame(&mut c, goaway).await,
            (1, Reason::PROTOCOL_ERROR)
        );
    }

    /// Once its last stream is done after a graceful GOAWAY, a connection
    /// shuts its write side down and reads on until the client's FIN. Here
    /// the client reads a 4 MiB answer slowly (a read a millisecond), sending
    /// WINDOW_UPDATEs as it reads, as browsers do; the drain starts once the
    /// answer's head came, and the server has written it all (the windows
    /// allow all of it at once) long before the client has read it. A socket
    /// closed then would get those WINDOW_UPDATEs and be reset by Linux,
    /// and the client lose what it had not read yet: every byte arrives, and
    /// the GOAWAY, then the server's FIN, and no reset.
    #[tokio::test]
    async fn a_drained_connection_reads_on_until_the_client_has_read_all() {
        const SIZE: usize = 4 << 20;
        const WINDOW: u32 = 8 << 20;
        let (mut c, server) = connected().await;
        let stop = CancellationToken::new();
        let graceful = stop.clone();
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer {
                let body = Bytes::from(vec![7u8; SIZE]);
                Box::pin(std::future::ready(Response::new(Full::new(body))))
            };
            let _ = serve(server, &settings(), svc, graceful).await;
        });
        let mut out = frame::PREFACE.to_vec();
        frame::settings(&mut out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, WINDOW)]);
        frame::window_update(&mut out, 0, WINDOW - 65_535);
        frame::headers(&mut out, 1, &request_block("GET", "/"), true, 16_384);
        c.write_all(&out).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut body, mut ended, mut goaway) = (0, false, None);
        loop {
            let n = match tokio::time::timeout_at(deadline, c.read(&mut buf))
                .await
                .expect("the connection was never closed")
            {
                Ok(n) => n,
                Err(e) => panic!("the connection failed after {body} of {SIZE} bytes: {e}"),
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let mut at = 0;
            let mut updates = Vec::new();
            while let Some(head) = got.get(at..at + 9) {
                let h = Head::parse(head);
                let Some(p) = got.get(at + 9..at + 9 + h.len) else {
                    break;
                };
                match h.kind {
                    frame::HEADERS if h.stream == 1 => stop.cancel(),
                    frame::DATA if h.stream == 1 => {
                        assert!(!ended, "DATA after END_STREAM");
                        body += h.len;
                        ended = h.flags & frame::END_STREAM != 0;
                        if h.len > 0 {
                            frame::window_update(&mut updates, 0, h.len as u32);
                            if !ended {
                                frame::window_update(&mut updates, 1, h.len as u32);
                            }
                        }
                    }
                    frame::GOAWAY => {
                        goaway = Some(Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])));
                    }
                    _ => {}
                }
                at += 9 + h.len;
            }
            got.drain(..at);
            if !updates.is_empty() {
                if let Err(e) = c.write_all(&updates).await {
                    panic!("the connection failed after {body} of {SIZE} bytes: {e}");
                }
            }
            // (a slow client: pacing, not waiting for anything)
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(body, SIZE);
        assert!(ended, "no END_STREAM");
        assert_eq!(goaway, Some(Reason::NO_ERROR));
    }

    /// Streams held by the connection's window share it, a frame each in
    /// turn: with the client's connection window at its default of 65,535
    /// (its streams' at 1 MiB), a small answer opened after a large one ends
    /// while the large one has most of its way to go, where it waited for
    /// the large one's end when streams took the window in the order they
    /// were opened. The client gives the window back frame by frame.
    #[tokio::test]
    async fn streams_held_by_the_connections_window_take_it_in_turn() {
        const BIG: usize = 512 * 1024;
        const SMALL: usize = 20_000;
        let (mut c, server) = connected().await;
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let n = if req.uri().path() == "/big" {
                    BIG
                } else {
                    SMALL
                };
                let body = Full::new(Bytes::from(vec![7u8; n]));
                Box::pin(std::future::ready(Response::new(body)))
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let mut out = frame::PREFACE.to_vec();
        frame::settings(&mut out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]);
        frame::headers(&mut out, 1, &request_block("GET", "/big"), true, 16_384);
        frame::headers(&mut out, 3, &request_block("GET", "/small"), true, 16_384);
        c.write_all(&out).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // DATA received on streams 1 and 3, and whether each ended
        let mut body = [0usize; 2];
        let mut ended = [false; 2];
        while !ended[1] {
            let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
                .await
                .expect("stream 3 never ended")
                .unwrap();
            assert!(n > 0, "closed before stream 3 ended");
            got.extend_from_slice(&buf[..n]);
            let mut at = 0;
            let mut updates = Vec::new();
            while let Some(head) = got.get(at..at + 9) {
                let h = Head::parse(head);
                if got.len() < at + 9 + h.len {
                    break;
                }
                if h.kind == frame::DATA && (h.stream == 1 || h.stream == 3) {
                    let k = (h.stream / 2) as usize;
                    body[k] += h.len;
                    ended[k] |= h.flags & frame::END_STREAM != 0;
                    if h.len > 0 {
                        frame::window_update(&mut updates, 0, h.len as u32);
                    }
                }
                at += 9 + h.len;
            }
            got.drain(..at);
            c.write_all(&updates).await.unwrap();
        }
        assert_eq!(body[1], SMALL);
        assert!(
            !ended[0] && body[0] < BIG / 2,
            "stream 3 ended after {} of stream 1's {BIG} bytes",
            body[0]
        );
    }

    /// A header list over max_header_list_size reaches the service marked,
    /// with its pseudo-header fields and none of the others, and the
    /// service's answer (here 431) goes out on its stream.
    #[tokio::test]
    async fn a_header_list_over_the_limit_reaches_the_service_marked() {
        let (mut c, server) = connected().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let mark = req.extensions().get::<HeaderListTooLarge>().copied();
                let _ = tx.send((
                    mark.map(|m| (m.method_known, m.target_known)),
                    req.method().clone(),
                    req.headers().len(),
                    req.uri().path().to_owned(),
                ));
                let mut r = Response::new(Full::new(Bytes::new()));
                if mark.is_some() {
                    *r.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                }
                Box::pin(std::future::ready(r))
            };
            let cfg = Settings {
                max_header_list_size: 1024,
                ..settings()
            };
            let _ = serve(server, &cfg, svc, CancellationToken::new()).await;
        });
        // stream 1: a field over the limit after the pseudo-headers
        let (mut out, mut block) = preface_and_request("GET");
        hpack::encode_field(&mut block, b"x-big", &[b'b'; 2000]);
        hpack::encode_field(&mut block, b"x-small", b"s");
        frame::headers(&mut out, 1, &block, true, 16_384);
        // stream 3: a :path over the limit, dropped with what follows it
        let mut block = Vec::new();
        let long = format!("/{}", "p".repeat(2000));
        for (n, v) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", long.as_str()),
            (":authority", "a"),
        ] {
            hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
        }
        frame::headers(&mut out, 3, &block, true, 16_384);
        // stream 5: :method after a :path over the limit; stream 7: a
        // CONNECT's :authority over it
        for (id, fields) in [
            (
                5,
                [
                    (":scheme", "http"),
                    (":path", long.as_str()),
                    (":method", "HEAD"),
                ],
            ),
            (
                7,
                [
                    (":method", "CONNECT"),
                    (":authority", long.as_str()),
                    ("x-a", "1"),
                ],
            ),
        ] {
            let mut block = Vec::new();
            for (n, v) in fields {
                hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
            }
            frame::headers(&mut out, id, &block, true, 16_384);
        }
        // stream 9: a :path not in origin form, then a field over the limit:
        // the request says `/`, which is not the client's target
        let mut block = request_block("GET", "?q=1");
        hpack::encode_field(&mut block, b"x-big", &[b'b'; 2000]);
        frame::headers(&mut out, 9, &block, true, 16_384);
        c.write_all(&out).await.unwrap();
        // the answers' heads, in order, through one decoder
        let mut d = hpack::Decoder::new(4096);
        let mut statuses = Vec::new();
        let mut statuses = first_frame(&mut c, |h, p| {
            if h.kind == frame::HEADERS {
                let mut status = Vec::new();
                d.decode(p, |n, v| {
                    if n.bytes == b":status" {
                        status = v.bytes().to_vec();
                    }
                })
                .unwrap();
                statuses.push((h.stream, status));
            }
            (statuses.len() == 5).then(|| std::mem::take(&mut statuses))
        })
        .await;
        statuses.sort();
        let want: Vec<_> = [1, 3, 5, 7, 9].map(|id| (id, b"431".to_vec())).into();
        assert_eq!(statuses, want);
        let mut got = Vec::new();
        for _ in 0..5 {
            let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the service was never called")
                .unwrap();
            got.push(r);
        }
        assert_eq!(
            got,
            [
                (Some((true, true)), Method::GET, 0, "/".to_owned()),
                (Some((true, false)), Method::POST, 0, "/".to_owned()),
                (Some((false, false)), Method::GET, 0, "/".to_owned()),
                (Some((true, false)), Method::CONNECT, 0, String::new()),
                (Some((true, false)), Method::GET, 0, "/".to_owned()),
            ]
        );
    }

    /// RFC 9113 8.3.1: `:path` is the target in origin form, or `*` for
    /// OPTIONS. Any other (found by fuzz/fuzz_targets/http2_server.rs: "?d")
    /// is a malformed request, reset with PROTOCOL_ERROR and never handed to
    /// the service, which would send it on as an HTTP/1.1 request line its
    /// routes and rules did not match as the server reads it.
    #[tokio::test]
    async fn a_path_not_in_origin_form_is_malformed() {
        let (mut c, server) = connected().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let _ = tx.send((req.method().clone(), req.uri().to_string()));
                Box::pin(std::future::ready(Response::new(Full::new(Bytes::new()))))
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, _) = preface_and_request("GET");
        let cases = [
            (1, "GET", "admin/users"),
            (3, "GET", "?q=1"),
            (5, "GET", "*"),
            (7, "OPTIONS", "*x"),
            (9, "OPTIONS", "*"),
            (11, "GET", "/a?q=1"),
        ];
        for (id, method, path) in cases {
            frame::headers(&mut out, id, &request_block(method, path), true, 16_384);
        }
        c.write_all(&out).await.unwrap();
        // each stream's first answer: RST_STREAM's code, or HEADERS
        let mut seen: Vec<(u32, Option<Reason>)> = Vec::new();
        let mut seen = first_frame(&mut c, |h, p| {
            match h.kind {
                frame::RST_STREAM => seen.push((
                    h.stream,
                    Some(Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))),
                )),
                frame::HEADERS => seen.push((h.stream, None)),
                _ => {}
            }
            (seen.len() == cases.len()).then(|| std::mem::take(&mut seen))
        })
        .await;
        seen.sort_by_key(|s| s.0);
        let bad = Some(Reason::PROTOCOL_ERROR);
        assert_eq!(
            seen,
            [
                (1, bad),
                (3, bad),
                (5, bad),
                (7, bad),
                (9, None),
                (11, None)
            ]
        );
        let mut served = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the service was never called")
                .unwrap();
            served.push(r);
        }
        served.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            served,
            [
                (Method::OPTIONS, "http://a*".to_owned()),
                (Method::GET, "http://a/a?q=1".to_owned()),
            ]
        );
        assert!(rx.try_recv().is_err(), "a malformed request was served");
    }

    /// Sends a PING and collects the RST_STREAM frames the server sends
    /// before its answer: those for everything sent before it.
    async fn resets_before_a_ping(c: &mut tokio::net::TcpStream) -> Vec<(u32, Reason)> {
        let mut out = Vec::new();
        frame::ping(&mut out, false, b"fencing!");
        c.write_all(&out).await.unwrap();
        let mut resets = Vec::new();
        first_frame(c, |h, p| {
            if h.kind == frame::RST_STREAM {
                resets.push((
                    h.stream,
                    Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
                ));
            }
            (h.kind == frame::PING).then(|| std::mem::take(&mut resets))
        })
        .await
    }

    /// RFC 9113 5.1: no frame but PRIORITY on a closed stream, and frames on
    /// a stream this side reset are ignored. A malformed PRIORITY (here 4
    /// bytes long, a FRAME_SIZE_ERROR on a live stream) on a stream already
    /// reset (a malformed request) or closed, or a HEADERS that makes a
    /// stream this side reset depend on itself, gets no second RST_STREAM.
    /// On an idle stream it gets none either (6.4): the connection ends with
    /// GOAWAY FRAME_SIZE_ERROR. Found by fuzz/fuzz_targets/http2_server.rs.
    #[tokio::test]
    async fn a_bad_priority_on_a_stream_already_reset_or_closed_is_ignored() {
        let (mut c, server) = connected().await;
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer {
                Box::pin(std::future::ready(Response::new(Full::new(Bytes::new()))))
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, ok) = preface_and_request("GET");
        // stream 1 malformed (reset), stream 3 served and closed, stream 7 idle
        frame::headers(&mut out, 1, &request_block("GET", "?q"), true, 16_384);
        frame::headers(&mut out, 3, &ok, true, 16_384);
        c.write_all(&out).await.unwrap();
        let mut out = Vec::new();
        let bad_priority = |out: &mut Vec<u8>, id| {
            frame::head(out, 4, frame::PRIORITY, 0, id);
            out.extend_from_slice(&[0, 0, 0, 0]);
        };
        // (after stream 3's answer: it is closed)
        first_frame(&mut c, |h, _| {
            (h.kind == frame::HEADERS && h.stream == 3).then_some(())
        })
        .await;
        for id in [1, 3] {
            bad_priority(&mut out, id);
        }
        // HEADERS on stream 1 again, depending on itself (a stream error on
        // a live stream): the stream is one this side reset
        let block = request_block("GET", "/");
        frame::head(
            &mut out,
            5 + block.len(),
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM | frame::PRIORITY_FLAG,
            1,
        );
        out.extend_from_slice(&[0, 0, 0, 1, 16]);
        out.extend_from_slice(&block);
        c.write_all(&out).await.unwrap();
        let resets = resets_before_a_ping(&mut c).await;
        // (stream 1's reset came before stream 3's answer)
        assert_eq!(resets, []);
        // on an idle stream no RST_STREAM either (RFC 9113 6.4): the
        // connection ends
        let mut out = Vec::new();
        bad_priority(&mut out, 7);
        c.write_all(&out).await.unwrap();
        let end = first_frame(&mut c, |h, p| match h.kind {
            frame::RST_STREAM => Some(Err(h.stream)),
            frame::GOAWAY => Some(Ok(Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])))),
            _ => None,
        })
        .await;
        assert_eq!(end, Ok(Reason::FRAME_SIZE_ERROR));
    }

    /// The streams this side reset are remembered as many as the client may
    /// have open (here 300, more than the least kept, 128): a late DATA frame
    /// on the first of 300 streams reset at once is ignored, not answered
    /// with RST_STREAM STREAM_CLOSED and counted as the client's error.
    #[tokio::test]
    async fn as_many_reset_streams_are_remembered_as_may_be_open() {
        let (mut c, server) = connected().await;
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer { Box::pin(std::future::pending()) };
            let cfg = Settings {
                max_concurrent_streams: 300,
                max_local_error_reset_streams: 1_000,
                ..settings()
            };
            let _ = serve(server, &cfg, svc, CancellationToken::new()).await;
        });
        let (mut out, _) = preface_and_request("GET");
        // 300 malformed requests, each reset with PROTOCOL_ERROR
        let bad = request_block("GET", "?q");
        for id in (1..600).step_by(2) {
            frame::headers(&mut out, id, &bad, false, 16_384);
        }
        c.write_all(&out).await.unwrap();
        let resets = resets_before_a_ping(&mut c).await;
        assert_eq!(resets.len(), 300);
        assert!(resets.iter().all(|&(_, r)| r == Reason::PROTOCOL_ERROR));
        let mut out = Vec::new();
        frame::head(&mut out, 1, frame::DATA, frame::END_STREAM, 1);
        out.push(b'!');
        c.write_all(&out).await.unwrap();
        assert_eq!(resets_before_a_ping(&mut c).await, []);
    }

    #[tokio::test]
    async fn a_stream_the_client_reset_is_reset_once_for_frames_sent_on_it_after() {
        let (mut c, server) = connected().await;
        tokio::spawn(async move {
            // (an answer that never comes: the client resets the stream first)
            let svc = move |_: Request<RecvBody>| -> Answer { Box::pin(std::future::pending()) };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, ok) = preface_and_request("GET");
        frame::headers(&mut out, 1, &ok, true, 16_384);
        frame::rst_stream(&mut out, 1, Reason::CANCEL);
        // found by the http2_server fuzz target: the first frame after the
        // client's reset gets RST_STREAM STREAM_CLOSED (RFC 9113 5.1), and each
        // one after that got another, where this side must ignore them (5.4.2)
        frame::headers(&mut out, 1, &ok, true, 16_384);
        frame::headers(&mut out, 1, &ok, true, 16_384);
        frame::head(&mut out, 1, frame::DATA, 0, 1);
        out.push(b'!');
        c.write_all(&out).await.unwrap();
        let resets = resets_before_a_ping(&mut c).await;
        assert_eq!(resets, [(1, Reason::STREAM_CLOSED)]);
    }

    #[tokio::test]
    async fn a_body_ends_for_its_reader_with_the_clients_end_stream() {
        let (_c, rx) = serve_one(
            settings(),
            |_| {},
            |out| {
                frame::head(out, 3, frame::DATA, frame::END_STREAM, 1);
                out.extend_from_slice(b"!!!");
            },
        )
        .await;
        let r = within(rx).await;
        assert_eq!(r.data, b"hello!!!");
        assert_eq!(r.end, Ok(true));
    }

    /// A body that ended in the read that brought its head (here with
    /// trailers) reaches its reader whole, with no channel made: every byte,
    /// the trailers, then its end; and the connection's window comes back
    /// for what the reader took (given back from half the window up: the
    /// window is set to 16 bytes, so 8 bytes taken send a WINDOW_UPDATE).
    /// The channel path would pass it too: this is the whole path's
    /// correctness (that it is taken here was checked by hand, and what it
    /// saves is measured by bench/callgrind.sh's h2c-post row).
    #[tokio::test]
    async fn a_body_that_came_whole_with_its_head_is_read_whole() {
        let cfg = Settings {
            initial_connection_window_size: 16,
            ..settings()
        };
        let (mut c, rx) = serve_one(
            cfg,
            |out| {
                frame::head(out, 3, frame::DATA, 0, 1);
                out.extend_from_slice(b"!!!");
                let mut block = Vec::new();
                hpack::encode_field(&mut block, b"x-sum", b"8");
                frame::headers(out, 1, &block, true, 16_384);
            },
            |_| {},
        )
        .await;
        let r = within(rx).await;
        assert_eq!(r.data, b"hello!!!");
        assert_eq!(r.trailers, 1);
        assert_eq!(r.end, Ok(true));
        // the bytes come back to the connection's window (a WINDOW_UPDATE on
        // stream 0) once the reader took them
        let credited = first_frame(&mut c, |h, p| {
            (h.kind == frame::WINDOW_UPDATE && h.stream == 0)
                .then(|| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        })
        .await;
        assert_eq!(credited, 8);
    }

    /// Small DATA payloads queued for a reader that does not read yet hold
    /// no read buffer: each is copied out of it (a chunk that shared the
    /// buffer would not be unique, or would reach to the buffer's end), and
    /// past `QUEUED_CHUNKS` chunks not taken they are joined into one. Here
    /// 200 1-byte frames, each followed by an ignored frame of 16,000 bytes
    /// (so each lands in a read buffer of its own), come to at most
    /// `QUEUED_CHUNKS` + 1 chunks, in order, none with room for more than a
    /// few hundred bytes.
    #[tokio::test]
    async fn small_data_held_back_goes_to_a_reader_that_catches_up_before_the_end() {
        // a body still open (a gRPC stream, an upload going on): what was
        // held back while the reader lagged reaches it once it takes its
        // queued chunks, not only at 16 KiB or at the end
        let (mut c, server) = connected().await;
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (n_tx, mut n_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let mut reader = Some((go_rx, n_tx));
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let mut body = req.into_body();
                if let Some((go, n)) = reader.take() {
                    tokio::spawn(async move {
                        let _ = go.await;
                        let mut all = Vec::new();
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                all.extend_from_slice(&d);
                                let _ = n.send(all.clone());
                            }
                        }
                    });
                }
                Box::pin(std::future::pending())
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, block) = preface_and_request("POST");
        frame::headers(&mut out, 1, &block, false, 16_384);
        for k in 0..200u32 {
            frame::head(&mut out, 1, frame::DATA, 0, 1);
            out.push(k as u8);
        }
        c.write_all(&out).await.unwrap();
        assert_eq!(resets_before_a_ping(&mut c).await, []);
        go_tx.send(()).unwrap();
        let want: Vec<u8> = (0..200u32).map(|k| k as u8).collect();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let all = n_rx.recv().await.expect("the reader's task ended");
                if all.len() >= want.len() {
                    return all;
                }
            }
        })
        .await
        .expect("what was held back never reached the reader");
        assert_eq!(got, want);
        // and a frame after it, the body still open
        let mut more = Vec::new();
        frame::head(&mut more, 1, frame::DATA, 0, 1);
        more.push(200);
        c.write_all(&more).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), n_rx.recv())
            .await
            .expect("the next frame never reached the reader")
            .expect("the reader's task ended");
        assert_eq!(got.len(), 201);
        assert_eq!(got[200], 200);
    }

    #[tokio::test]
    async fn small_data_frames_queued_unread_hold_no_read_buffer() {
        let (mut c, server) = connected().await;
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (got_tx, got_rx) = oneshot::channel::<Vec<Bytes>>();
        let mut reader = Some((go_rx, got_tx));
        tokio::spawn(async move {
            let svc = move |req: Request<RecvBody>| -> Answer {
                let mut body = req.into_body();
                if let Some((go, got)) = reader.take() {
                    tokio::spawn(async move {
                        // (reads once every frame is queued)
                        let _ = go.await;
                        let mut chunks = Vec::new();
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                chunks.push(d);
                            }
                        }
                        let _ = got.send(chunks);
                    });
                }
                Box::pin(std::future::pending())
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let (mut out, block) = preface_and_request("POST");
        frame::headers(&mut out, 1, &block, false, 16_384);
        for k in 0..200u32 {
            let end = if k == 199 { frame::END_STREAM } else { 0 };
            frame::head(&mut out, 1, frame::DATA, end, 1);
            out.push(k as u8);
            // an unknown frame type: ignored (RFC 9113 4.1)
            frame::head(&mut out, 16_000, 0xfa, 0, 0);
            out.resize(out.len() + 16_000, 0);
        }
        c.write_all(&out).await.unwrap();
        // every frame is handled once a PING sent after them is answered
        assert_eq!(resets_before_a_ping(&mut c).await, []);
        go_tx.send(()).unwrap();
        let chunks = tokio::time::timeout(Duration::from_secs(10), got_rx)
            .await
            .expect("the reader was never done")
            .expect("the reader's task ended");
        let data: Vec<u8> = chunks.iter().flat_map(|d| d.iter().copied()).collect();
        let want: Vec<u8> = (0..200u32).map(|k| k as u8).collect();
        assert_eq!(data, want);
        assert!(
            chunks.len() <= QUEUED_CHUNKS + 1,
            "{} chunks queued for 200 bytes",
            chunks.len()
        );
        for (k, d) in chunks.into_iter().enumerate() {
            let len = d.len();
            let own = d
                .try_into_mut()
                .unwrap_or_else(|_| panic!("chunk {k} shares its allocation"));
            assert!(
                own.capacity() < 1024,
                "chunk {k} of {len} bytes keeps {} bytes allocated",
                own.capacity()
            );
        }
    }

    #[tokio::test]
    async fn a_clients_reset_reaches_a_reader_on_another_task() {
        let (_c, rx) = serve_one(
            settings(),
            |_| {},
            |out| frame::rst_stream(out, 1, Reason::CANCEL),
        )
        .await;
        let r = within(rx).await;
        assert_eq!(r.data, b"hello");
        assert_eq!(
            r.end,
            Err(RecvError(Reason::CANCEL).to_string()),
            "a reset body must fail, not end"
        );
    }

    /// A connection holds its two buffers while it has a stream, and gives
    /// them back to the thread's spares as soon as it has none and nothing
    /// buffered, not a while later: an idle HTTP/2 connection holds no
    /// buffer however many were busy a moment before (bench/h2_idle.py). Its
    /// next request takes them again. (`tokio::test` runs the server's task
    /// on this thread: the spares counted are the ones it uses.)
    #[tokio::test]
    async fn an_idle_connection_gives_its_buffers_back_at_once() {
        let (mut c, server) = connected().await;
        let before = crate::h1::spare_out();
        // an answer goes out when the test adds a permit
        let go = Arc::new(tokio::sync::Semaphore::new(0));
        let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel::<()>();
        let permits = Arc::clone(&go);
        tokio::spawn(async move {
            let svc = move |_: Request<RecvBody>| -> Answer {
                let _ = asked_tx.send(());
                let permits = Arc::clone(&permits);
                Box::pin(async move {
                    permits.acquire().await.unwrap().forget();
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                })
            };
            let _ = serve(server, &settings(), svc, CancellationToken::new()).await;
        });
        let out_now = || crate::h1::spare_out() - before;
        let (mut out, block) = preface_and_request("GET");
        for id in [1u32, 3] {
            frame::headers(&mut out, id, &block, true, 16_384);
            c.write_all(&out).await.unwrap();
            out.clear();
            tokio::time::timeout(Duration::from_secs(10), asked.recv())
                .await
                .expect("the service was never called");
            assert_eq!(
                out_now(),
                2,
                "stream {id} open: the read and write buffers out"
            );
            go.add_permits(1);
            first_frame(&mut c, |h, _| {
                (h.stream == id && h.flags & frame::END_STREAM != 0).then_some(())
            })
            .await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while out_now() != 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "stream {id} done: {} buffers still out",
                    out_now()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[tokio::test]
    async fn the_end_of_the_connection_reaches_a_reader_on_another_task() {
        let (mut c, rx) = serve_one(settings(), |_| {}, |_| {}).await;
        // the client's FIN: the server reads what came before it
        c.shutdown().await.unwrap();
        let r = within(rx).await;
        assert_eq!(r.data, b"hello");
        assert_eq!(r.end, Err(RecvError(Reason::CANCEL).to_string()));
    }
}
