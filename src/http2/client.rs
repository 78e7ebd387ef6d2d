//! The client side of an HTTP/2 connection: rampart's requests to the servers
//! of a pool with `protocol = "h2"` (gRPC services and the like).
//!
//! Written for the proxy's path, as the server side is. A request's head is
//! encoded from the proxy's `HeaderMap` straight into the connection's write
//! buffer, against the connection's HPACK dynamic table (`EncoderTable`: a
//! field sent before goes as an index, so the server decodes a repeated
//! call's fields without reading a string), and a response's fields are
//! decoded into the `HeaderMap` the proxy hands on. One task per connection
//! reads and writes.
//!
//! No lock, and no atomic operation in this file's share of a request (issue
//! 17: the hot path stays lock-free): a worker is a current-thread
//! runtime, and a connection, its task and its requests never leave the thread
//! that opened it (the pools of src/upstream/http2.rs are per thread). So the
//! connection's state lives in this thread's table of connections, as the idle
//! pools do, and the connection's handles (its task, the requests' futures and
//! bodies) are keys into it with counts that are not atomic. A handle taken to
//! another thread finds nothing there: its stream fails as closed.

use super::fields;
use super::frame::{self, Head, Reason, MAX_WINDOW};
use super::hpack;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The window HTTP/2 starts every stream and the connection with (RFC 9113 6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
/// The frame size this side accepts (its SETTINGS leave the default).
const MAX_FRAME: usize = 16_384;
/// Frames handled in one turn of the connection task before it yields.
const FRAMES_PER_POLL: usize = 64;
/// Frames from the server are not handled while this much waits to be written.
const WRITE_HIGH: usize = 256 * 1024;
/// The payload of the keepalive's PINGs (the handshake's is `rampart\0`).
const KEEPALIVE_PING: &[u8; 8] = b"rampart?";

/// This side's settings for a connection.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a server may send on a stream ahead
    /// of the proxy reading it.
    pub stream_window: u32,
    /// The connection's receive window. Given back as DATA arrives
    /// (`Inner::release_conn`), it bounds what is in flight; what is buffered
    /// is bounded by each stream's window (streams × `stream_window`).
    pub conn_window: u32,
    /// The largest response header list accepted (name, value and 32 octets a
    /// field, as RFC 9113 6.5.2 counts).
    pub max_header_list: u32,
    /// A PING when the server has sent nothing for this long, streams open or
    /// not (None: never) ...
    pub keepalive_interval: Option<Duration>,
    /// ... and the connection ends (`Error::Io(TimedOut)`) when nothing at
    /// all comes from the server within this long after it.
    pub keepalive_timeout: Duration,
}

/// Why a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the server reset the stream ({0})")]
    Reset(Reason),
    /// The server's GOAWAY came with a last stream id below the stream's: the
    /// server did not act on it (RFC 9113 6.8).
    #[error("the server sent GOAWAY ({0}) without processing the stream")]
    GoAway(Reason),
    #[error("the server closed the connection")]
    Closed,
    #[error("the connection failed: {0}")]
    Io(std::io::ErrorKind),
    /// The server broke the protocol; this side ended the connection (or the
    /// stream) with `reason`.
    #[error("the server broke HTTP/2 ({0}): {1}")]
    Protocol(Reason, &'static str),
    /// The request's body broke off: this side cancelled the stream.
    #[error("the request body broke off; the stream was cancelled")]
    Cancelled,
}

impl Error {
    /// Did the server not process the stream, so that it may be sent again
    /// (RFC 9113 8.7)?
    pub fn unprocessed(&self) -> bool {
        matches!(
            self,
            Error::GoAway(_) | Error::Reset(Reason::REFUSED_STREAM)
        )
    }
}

/// This thread's client connections.
struct Table {
    /// (boxed: an entry is large, and moves only as a pointer)
    entries: Vec<Option<Box<Entry>>>,
    free: Vec<u32>,
}

struct Entry {
    /// Unique in the process: a key from another thread's table finds no entry here.
    id: u64,
    /// The handles holding the key: the entry goes with the last.
    refs: u32,
    inner: Inner,
}

thread_local! {
    static TABLE: RefCell<Table> = const {
        RefCell::new(Table {
            entries: Vec::new(),
            free: Vec::new(),
        })
    };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A counted handle on a connection of this thread's table.
///
/// The table is borrowed only within `with`, whose closures run no code but
/// this file's and `Waker::wake` (tokio's schedulers never poll a task from
/// `wake`), so no borrow is ever taken twice; and an entry that goes is
/// dropped after the borrow ends.
struct Handle {
    slot: u32,
    id: u64,
}

impl Handle {
    /// A new entry for `inner`, with one handle on it.
    fn insert(inner: Inner) -> Handle {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Box::new(Entry { id, refs: 1, inner });
        let slot = TABLE.try_with(|t| {
            let mut t = t.borrow_mut();
            match t.free.pop() {
                Some(slot) => {
                    t.entries[slot as usize] = Some(entry);
                    slot
                }
                None => {
                    t.entries.push(Some(entry));
                    (t.entries.len() - 1) as u32
                }
            }
        });
        // (a thread being torn down: a handle on nothing, whose streams fail)
        Handle {
            slot: slot.unwrap_or(u32::MAX),
            id,
        }
    }

    /// Runs `f` on the connection's state; None when it is not in this
    /// thread's table.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
        self.entry(|e| f(&mut e.inner))
    }

    fn entry<R>(&self, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        TABLE
            .try_with(|t| {
                let Ok(mut t) = t.try_borrow_mut() else {
                    debug_assert!(false, "the HTTP/2 client's table borrowed twice");
                    return None;
                };
                match t.entries.get_mut(self.slot as usize) {
                    Some(Some(e)) if e.id == self.id => Some(f(e)),
                    _ => None,
                }
            })
            .ok()
            .flatten()
    }

    /// Another handle on the connection of `e`, this handle's entry (within
    /// `entry`: no second look into the table).
    fn share_in(&self, e: &mut Entry) -> Handle {
        e.refs += 1;
        Handle {
            slot: self.slot,
            id: self.id,
        }
    }

    /// Another handle on the same connection.
    fn share(&self) -> Handle {
        let slot = match self.entry(|e| e.refs += 1) {
            Some(()) => self.slot,
            None => u32::MAX,
        };
        Handle { slot, id: self.id }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let gone = TABLE.try_with(|t| {
            let Ok(mut t) = t.try_borrow_mut() else {
                return None;
            };
            let slot = self.slot as usize;
            let e = t.entries.get_mut(slot)?.as_mut()?;
            if e.id != self.id {
                return None;
            }
            e.refs -= 1;
            if e.refs > 0 {
                return None;
            }
            t.free.push(self.slot);
            t.entries[slot].take()
        });
        // (dropped here, the table no longer borrowed)
        drop(gone);
    }
}

struct Stream {
    id: u32,
    // the request
    /// What the server lets this side send on the stream.
    send_window: i64,
    /// Request body bytes waiting for window.
    out: Bytes,
    /// The body ends after `out` (and `out_trailers`).
    out_end: bool,
    out_trailers: Option<HeaderMap>,
    /// This side has not sent END_STREAM.
    local_open: bool,
    /// The body's pump: woken when `out` was sent, and when the stream ends.
    pump: Option<Waker>,
    // the response
    head: Option<(StatusCode, HeaderMap)>,
    head_seen: bool,
    data: Chunks,
    trailers: Option<HeaderMap>,
    remote_open: bool,
    /// What the server may still send on the stream.
    recv_window: i64,
    /// Taken by the reader and not yet given back to the stream's window.
    unacked: i64,
    /// content-length, and the DATA received.
    expect: Option<u64>,
    received: u64,
    /// A HEAD request: its response has no body whatever its length says.
    head_request: bool,
    error: Option<Error>,
    /// The response future or body reader waiting.
    reader: Option<Waker>,
}

/// DATA received and not read yet, in order: the first chunk without an
/// allocation (an answer's body often comes in one), the others queued.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn push(&mut self, b: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(b);
        } else {
            self.rest.push_back(b);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

impl Stream {
    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.local_open = false;
        self.remote_open = false;
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.pump.take() {
            w.wake();
        }
    }
}

/// Hashes a stream id with one multiplication (the ids in a table are the
/// ones this side chose, so no peer can crowd one bucket).
#[derive(Default)]
struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        // (this side's ids are odd: the low bit says nothing)
        self.0 = ((n >> 1) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A header block being received in HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
}

struct Inner {
    cfg: Config,
    streams: Vec<Stream>,
    /// Where each stream is in `streams` (a connection carries up to a
    /// hundred at once: a scan per frame and per poll would cost more than
    /// the rest of a request's work on it).
    index: HashMap<u32, usize, BuildHasherDefault<IdHash>>,
    /// A request's header block being encoded (kept: one allocation a
    /// connection, not one a request).
    enc: Vec<u8>,
    /// What the server's decoder holds of this side's header blocks: every
    /// block is encoded against it, in the order the blocks are written.
    table: hpack::EncoderTable,
    wbuf: Vec<u8>,
    next_id: u32,
    decoder: hpack::Decoder,
    /// The server's SETTINGS.
    peer_max_streams: u32,
    peer_window: i64,
    peer_max_frame: usize,
    /// The connection's window for what this side sends.
    send_window: i64,
    /// What the server may still send on the connection, and what was
    /// received and not given back yet (`release_conn`).
    recv_window: i64,
    recv_unacked: i64,
    /// The initial window of streams the server sends on: 65,535 until it
    /// acknowledged this side's SETTINGS.
    local_window: i64,
    got_settings: bool,
    /// The PING sent after the preface was answered: the server's first
    /// SETTINGS are in.
    ready: bool,
    ready_waker: Option<Waker>,
    partial: Option<Partial>,
    /// The last stream id of the server's GOAWAY.
    goaway: Option<u32>,
    /// The connection is over, and why.
    ended: Option<Error>,
    /// No handle is left: close once the streams are done.
    released: bool,
    /// A stream may have something to send.
    out_dirty: bool,
    /// A keepalive PING is asked for now (`Connection::probe`).
    probe: bool,
    task: Option<Waker>,
}

impl Inner {
    fn find(&self, id: u32) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn add(&mut self, s: Stream) {
        self.index.insert(s.id, self.streams.len());
        self.streams.push(s);
    }

    fn remove(&mut self, i: usize) -> Stream {
        let s = self.streams.swap_remove(i);
        self.index.remove(&s.id);
        if let Some(moved) = self.streams.get(i) {
            self.index.insert(moved.id, i);
        }
        s
    }

    fn wake_task(&mut self) {
        if let Some(w) = self.task.take() {
            w.wake();
        }
    }

    /// Ends the connection: every stream fails with `e`.
    fn end(&mut self, e: Error) {
        if self.ended.is_none() {
            self.ended = Some(e.clone());
        }
        for s in &mut self.streams {
            if s.remote_open {
                s.fail(e.clone());
            } else {
                // its response is whole: it reads to its end
                s.local_open = false;
                s.wake();
            }
        }
        if let Some(w) = self.ready_waker.take() {
            w.wake();
        }
    }

    /// A connection error of this side's: GOAWAY, and the end.
    fn fatal(&mut self, reason: Reason, why: &'static str) {
        if self.ended.is_none() {
            frame::goaway(&mut self.wbuf, 0, reason);
        }
        self.end(Error::Protocol(reason, why));
    }

    /// A stream error of this side's: RST_STREAM, and the stream fails.
    fn reset(&mut self, i: usize, reason: Reason, why: &'static str) {
        let s = &mut self.streams[i];
        if s.local_open || s.remote_open {
            frame::rst_stream(&mut self.wbuf, s.id, reason);
        }
        s.fail(Error::Protocol(reason, why));
    }

    /// Gives back the connection's window for a DATA frame of `n` bytes (its
    /// padding included) as soon as it is received, whether it went into a
    /// stream's buffer, to a stream this side is done with, or nowhere
    /// (once half the window is used: one WINDOW_UPDATE for many frames).
    ///
    /// Not when a reader takes it, as nghttp2 and Envoy do not: a stream whose
    /// client does not read (a slow client, or one whose own window toward
    /// rampart is 0) would otherwise keep what it holds out of the window
    /// the connection's other streams share, and a few such streams would stop
    /// the server from sending DATA on any stream of the connection. What a
    /// stream may hold unread is bounded by its own window, which comes back
    /// only as its reader takes the data (`release_stream`); so what a
    /// connection buffers is at most its streams times the stream window
    /// (`[pool.http2] max_concurrent_streams` × `initial_stream_window_size`),
    /// and the connection's window bounds only what is in flight.
    fn release_conn(&mut self, n: i64) {
        self.recv_unacked += n;
        if self.recv_unacked >= (self.cfg.conn_window as i64 / 2).max(1) {
            frame::window_update(&mut self.wbuf, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
    }

    /// Gives back stream `i`'s window for `n` bytes its reader took (or its
    /// padding, which no reader takes), once half of it is used. The
    /// connection's window for them came back when they were received.
    fn release_stream(&mut self, i: usize, n: i64) {
        let half = (self.local_window / 2).max(1);
        let s = &mut self.streams[i];
        s.unacked += n;
        if s.remote_open && s.unacked >= half {
            frame::window_update(&mut self.wbuf, s.id, s.unacked as u32);
            s.recv_window += s.unacked;
            s.unacked = 0;
        }
    }

    /// A stream's response future or body went: the stream is forgotten, and
    /// reset if either side had not ended it.
    fn forget(&mut self, id: u32) {
        let Some(i) = self.find(id) else {
            return;
        };
        let s = self.remove(i);
        if (s.local_open || s.remote_open) && self.ended.is_none() {
            frame::rst_stream(&mut self.wbuf, id, Reason::CANCEL);
        }
        if let Some(w) = s.pump {
            w.wake();
        }
        // (what it held unread had its connection window given back when it
        // came: nothing to give back here)
        self.wake_task();
    }

    // ---- frames from the server ----

    fn frame(&mut self, h: Head, mut f: BytesMut) {
        if !self.got_settings && h.kind != frame::SETTINGS {
            return self.fatal(Reason::PROTOCOL_ERROR, "the first frame is not SETTINGS");
        }
        if let Some(p) = &self.partial {
            if h.kind != frame::CONTINUATION || h.stream != p.stream {
                return self.fatal(
                    Reason::PROTOCOL_ERROR,
                    "a frame other than CONTINUATION inside a header block",
                );
            }
        }
        f.advance(9);
        match h.kind {
            frame::DATA => self.data(h, f),
            frame::HEADERS => self.headers(h, &f),
            frame::CONTINUATION => self.continuation(h, &f),
            frame::RST_STREAM => self.rst_stream(h, &f),
            frame::SETTINGS => self.settings(h, &f),
            frame::PUSH_PROMISE => self.fatal(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE, which this side disabled",
            ),
            frame::PING => {
                if h.stream != 0 || h.len != 8 {
                    return self.fatal(Reason::PROTOCOL_ERROR, "a PING on a stream or not 8 bytes");
                }
                if h.flags & frame::ACK != 0 {
                    self.ready = true;
                    if let Some(w) = self.ready_waker.take() {
                        w.wake();
                    }
                } else {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&f);
                    frame::ping(&mut self.wbuf, true, &p);
                }
            }
            frame::GOAWAY => self.goaway(h, &f),
            frame::WINDOW_UPDATE => self.window_update(h, &f),
            // PRIORITY and unknown frame types are ignored (RFC 9113 5.3.2, 4.1)
            _ => {}
        }
    }

    fn settings(&mut self, h: Head, p: &[u8]) {
        if h.stream != 0 {
            return self.fatal(Reason::PROTOCOL_ERROR, "SETTINGS on a stream");
        }
        if h.flags & frame::ACK != 0 {
            if h.len != 0 {
                return self.fatal(Reason::FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload");
            }
            // this side's window holds from now (it was 65,535 until then)
            let delta = self.cfg.stream_window as i64 - self.local_window;
            self.local_window = self.cfg.stream_window as i64;
            for s in &mut self.streams {
                s.recv_window += delta;
            }
            return;
        }
        let Some(values) = frame::settings_values(p) else {
            return self.fatal(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            );
        };
        self.got_settings = true;
        for (id, v) in values {
            match id {
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_streams = v,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if v as i64 > MAX_WINDOW {
                        return self.fatal(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        );
                    }
                    let delta = v as i64 - self.peer_window;
                    self.peer_window = v as i64;
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return self.fatal(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream's window over 2^31-1",
                            );
                        }
                    }
                    self.out_dirty = true;
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&v) {
                        return self.fatal(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        );
                    }
                    self.peer_max_frame = v as usize;
                }
                // RFC 9113 6.5.2: a server MUST NOT send 1, and a client
                // treats it as a connection error
                frame::SETTINGS_ENABLE_PUSH if v != 0 => {
                    return self.fatal(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH other than 0 from a server",
                    );
                }
                // the dynamic table this side's encoder may use
                frame::SETTINGS_HEADER_TABLE_SIZE => self.table.set_limit(v),
                _ => {}
            }
        }
        frame::settings_ack(&mut self.wbuf);
    }

    fn window_update(&mut self, h: Head, p: &[u8]) {
        if h.len != 4 {
            return self.fatal(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes long");
        }
        let n = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff) as i64;
        if h.stream == 0 {
            if n == 0 {
                return self.fatal(Reason::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0");
            }
            self.send_window += n;
            if self.send_window > MAX_WINDOW {
                return self.fatal(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection's window over 2^31-1",
                );
            }
            self.out_dirty = true;
            return;
        }
        let Some(i) = self.find(h.stream) else {
            return;
        };
        if n == 0 {
            return self.reset(i, Reason::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0");
        }
        let s = &mut self.streams[i];
        s.send_window += n;
        if s.send_window > MAX_WINDOW {
            return self.reset(
                i,
                Reason::FLOW_CONTROL_ERROR,
                "a stream's window over 2^31-1",
            );
        }
        self.out_dirty = true;
    }

    fn rst_stream(&mut self, h: Head, p: &[u8]) {
        if h.stream == 0 || h.len != 4 {
            return self.fatal(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on stream 0 or not 4 bytes",
            );
        }
        let reason = Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        let Some(i) = self.find(h.stream) else {
            return;
        };
        let s = &mut self.streams[i];
        if !s.remote_open && s.error.is_none() {
            // the response is whole: whatever the code, the server wants no
            // more of the request body (RFC 9113 8.1), and the answer stands
            s.local_open = false;
            s.out = Bytes::new();
            s.wake();
            return;
        }
        s.fail(Error::Reset(reason));
    }

    fn goaway(&mut self, h: Head, p: &[u8]) {
        if h.stream != 0 || h.len < 8 {
            return self.fatal(
                Reason::PROTOCOL_ERROR,
                "GOAWAY on a stream or under 8 bytes",
            );
        }
        let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
        let reason = Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        let last = self.goaway.map_or(last, |l| l.min(last));
        self.goaway = Some(last);
        for s in &mut self.streams {
            // (a stream whose response is whole cannot have been unprocessed)
            if s.id > last && s.remote_open {
                s.fail(Error::GoAway(reason));
            }
        }
        if reason != Reason::NO_ERROR {
            tracing::debug!(%reason, last, "the server sent GOAWAY with an error");
        }
    }

    fn data(&mut self, h: Head, mut payload: BytesMut) {
        if h.stream == 0 {
            return self.fatal(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        let len = h.len as i64;
        if len > self.recv_window {
            return self.fatal(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            );
        }
        self.recv_window -= len;
        if h.flags & frame::PADDED != 0 {
            let Some(&pad) = payload.first() else {
                return self.fatal(Reason::PROTOCOL_ERROR, "PADDED DATA without its length");
            };
            if pad as usize + 1 > payload.len() {
                return self.fatal(Reason::PROTOCOL_ERROR, "padding longer than the frame");
            }
            payload.advance(1);
            payload.truncate(payload.len() - pad as usize);
        }
        // padding counts against the windows, and is given back at once
        let padding = len - payload.len() as i64;
        let Some(i) = self.find(h.stream) else {
            if h.stream >= self.next_id || h.stream % 2 == 0 {
                return self.fatal(Reason::PROTOCOL_ERROR, "DATA on a stream not opened");
            }
            // a stream this side is done with (or reset): nobody reads it
            return self.release_conn(len);
        };
        // the connection's window comes back for the whole frame now, whatever
        // becomes of it on its stream: a stream's unread data is bounded by
        // the stream's window, not held out of the one all streams share
        // (`release_conn`)
        self.release_conn(len);
        let s = &mut self.streams[i];
        if !s.remote_open {
            return self.reset(i, Reason::STREAM_CLOSED, "DATA after the response's end");
        }
        if !s.head_seen {
            return self.reset(i, Reason::PROTOCOL_ERROR, "DATA before the response head");
        }
        if len > s.recv_window {
            return self.reset(
                i,
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the stream's window",
            );
        }
        s.recv_window -= len;
        s.received += payload.len() as u64;
        if s.expect.is_some_and(|n| s.received > n) {
            // more than the content-length (or a body on HEAD, 204, 304):
            // none of this frame reaches the reader, which gets the error
            // after what came before it; a malformed answer is not passed
            // on (RFC 9113 8.1.1), so a client reading that length never
            // sees it whole
            return self.reset(
                i,
                Reason::PROTOCOL_ERROR,
                "a body longer than its content-length",
            );
        }
        let end = h.flags & frame::END_STREAM != 0;
        let short = end && s.expect.is_some_and(|n| s.received != n);
        if !payload.is_empty() {
            // a small payload is copied out of the read buffer: a slice would
            // keep the whole buffer (16 KiB or more) allocated until a client
            // that may read slowly takes it, and the stream's window, which
            // counts bytes of data, would bound nothing (a server sending
            // 1-byte frames: a 256 KiB window pinning gigabytes)
            s.data.push(if payload.len() < COPY_UNDER {
                Bytes::copy_from_slice(&payload)
            } else {
                payload.freeze()
            });
        }
        if end {
            s.remote_open = false;
        }
        s.wake();
        if padding > 0 {
            self.release_stream(i, padding);
        }
        if short {
            self.reset(
                i,
                Reason::PROTOCOL_ERROR,
                "a body shorter than its content-length",
            );
        }
    }

    fn headers(&mut self, h: Head, p: &[u8]) {
        if h.stream == 0 {
            return self.fatal(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        let mut p = p;
        if h.flags & frame::PADDED != 0 {
            let Some((&pad, rest)) = p.split_first() else {
                return self.fatal(Reason::PROTOCOL_ERROR, "PADDED HEADERS without its length");
            };
            if pad as usize > rest.len() {
                return self.fatal(Reason::PROTOCOL_ERROR, "padding longer than the frame");
            }
            p = &rest[..rest.len() - pad as usize];
        }
        if h.flags & frame::PRIORITY_FLAG != 0 {
            if p.len() < 5 {
                return self.fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                );
            }
            p = &p[5..];
        }
        let end_stream = h.flags & frame::END_STREAM != 0;
        if h.flags & frame::END_HEADERS != 0 {
            return self.header_block(h.stream, p, end_stream);
        }
        self.partial = Some(Partial {
            stream: h.stream,
            block: p.to_vec(),
            end_stream,
        });
    }

    fn continuation(&mut self, h: Head, p: &[u8]) {
        let Some(mut part) = self.partial.take() else {
            return self.fatal(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION outside a header block",
            );
        };
        part.block.extend_from_slice(p);
        // a block may be compressed, but not beyond reason
        if part.block.len() > 2 * self.cfg.max_header_list as usize + MAX_FRAME {
            return self.fatal(Reason::ENHANCE_YOUR_CALM, "a header block without end");
        }
        if h.flags & frame::END_HEADERS != 0 {
            return self.header_block(part.stream, &part.block, part.end_stream);
        }
        self.partial = Some(part);
    }

    fn header_block(&mut self, id: u32, block: &[u8], end_stream: bool) {
        if id % 2 == 0 || id >= self.next_id {
            return self.fatal(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a stream this side did not open",
            );
        }
        let i = self.find(id);
        let trailers = i.is_some_and(|i| self.streams[i].head_seen);
        let mut f = Fields::new(self.cfg.max_header_list as usize, trailers);
        if self.decoder.decode(block, |n, v| f.field(n, v)).is_err() {
            return self.fatal(
                Reason::COMPRESSION_ERROR,
                "a header block HPACK cannot decode",
            );
        }
        // (a stream this side is done with: decoded for the table's sake only)
        let Some(i) = i else {
            return;
        };
        if !self.streams[i].remote_open {
            return self.reset(i, Reason::STREAM_CLOSED, "HEADERS after the response's end");
        }
        if let Some(why) = f.block.malformed {
            return self.reset(i, Reason::PROTOCOL_ERROR, why);
        }
        if f.block.too_large {
            return self.reset(
                i,
                Reason::PROTOCOL_ERROR,
                "a response head over the size limit",
            );
        }
        let s = &mut self.streams[i];
        if trailers {
            if !end_stream {
                return self.reset(i, Reason::PROTOCOL_ERROR, "trailers without END_STREAM");
            }
            if s.expect.is_some_and(|n| s.received != n) {
                return self.reset(
                    i,
                    Reason::PROTOCOL_ERROR,
                    "a body shorter than its content-length",
                );
            }
            s.trailers = Some(f.block.headers);
            s.remote_open = false;
            s.wake();
            return;
        }
        let Some(status) = f.status else {
            return self.reset(i, Reason::PROTOCOL_ERROR, "a response without :status");
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // no protocol switch in HTTP/2 (RFC 9113 8.6)
            return self.reset(i, Reason::PROTOCOL_ERROR, "101 in HTTP/2");
        }
        if status.is_informational() {
            if end_stream {
                return self.reset(
                    i,
                    Reason::PROTOCOL_ERROR,
                    "an interim response that ends the stream",
                );
            }
            // 100 Continue and the like: the final answer follows
            return;
        }
        let bodiless = s.head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // a body where none may be (HEAD, 204, 304) resets the stream, as a
        // body longer than its content-length does
        s.expect = if bodiless {
            Some(0)
        } else {
            f.block.content_length
        };
        if end_stream && s.expect.is_some_and(|n| n > 0) {
            return self.reset(
                i,
                Reason::PROTOCOL_ERROR,
                "a content-length over 0 and no body",
            );
        }
        s.head = Some((status, f.block.headers));
        s.head_seen = true;
        if end_stream {
            s.remote_open = false;
        }
        s.wake();
    }

    // ---- what this side sends ----

    /// Writes the streams' request bodies as far as the windows allow.
    fn send_out(&mut self) {
        if !self.out_dirty {
            return;
        }
        self.out_dirty = false;
        let max = self.peer_max_frame;
        for s in &mut self.streams {
            if !s.local_open {
                continue;
            }
            while !s.out.is_empty() {
                let n = (s.out.len() as i64)
                    .min(s.send_window)
                    .min(self.send_window)
                    .min(max as i64);
                if n <= 0 {
                    break;
                }
                let chunk = s.out.split_to(n as usize);
                let last = s.out.is_empty() && s.out_end && s.out_trailers.is_none();
                frame::head(
                    &mut self.wbuf,
                    chunk.len(),
                    frame::DATA,
                    if last { frame::END_STREAM } else { 0 },
                    s.id,
                );
                self.wbuf.extend_from_slice(&chunk);
                s.send_window -= n;
                self.send_window -= n;
                if last {
                    s.local_open = false;
                }
            }
            if s.out.is_empty() && s.local_open && s.out_end {
                match s.out_trailers.take() {
                    Some(t) => {
                        let mut block = Vec::with_capacity(64);
                        self.table.begin(&mut block);
                        encode_fields(&mut block, &t);
                        frame::headers(&mut self.wbuf, s.id, &block, true, max);
                    }
                    None => frame::head(&mut self.wbuf, 0, frame::DATA, frame::END_STREAM, s.id),
                }
                s.local_open = false;
            }
            if s.out.is_empty() {
                if let Some(w) = s.pump.take() {
                    w.wake();
                }
            }
        }
    }
}

/// A request's head, as the proxy made it.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    pub authority: &'a [u8],
    pub path: &'a [u8],
    /// Host is left out (`authority` replaces it), and the fields HTTP/2 does
    /// not carry.
    pub headers: &'a HeaderMap,
    /// Fields that go after `headers`' (the proxy's X-Forwarded-*), as they are.
    pub after: &'a [(HeaderName, HeaderValue)],
}

/// Appends a request head's header block, against the connection's table:
/// the method and scheme from the static table, the rest indexed once sent
/// (but for a path with a query, and the fields `EncoderTable::header`
/// leaves out), so that a server decodes a repeated call's fields as indexes.
fn encode_request(block: &mut Vec<u8>, table: &mut hpack::EncoderTable, r: &RequestHead<'_>) {
    table.begin(block);
    match *r.method {
        Method::GET => block.push(0x82),
        Method::POST => block.push(0x83),
        ref m => {
            hpack::encode_integer(block, 0, 4, 2);
            hpack::encode_string(block, m.as_str().as_bytes());
        }
    }
    block.push(if r.scheme == "https" { 0x87 } else { 0x86 });
    table.field(block, b":authority", Some(1), r.authority, true);
    if r.path == b"/" {
        block.push(0x84);
    } else {
        // (a query: likely another each time)
        let index = !r.path.contains(&b'?');
        table.field(block, b":path", Some(4), r.path, index);
    }
    for (name, value) in r.headers {
        if name == header::HOST
            || fields::is_connection_specific(name)
            || (name == header::TE && value.as_bytes() != b"trailers")
        {
            continue;
        }
        table.header(block, name, value);
    }
    for (name, value) in r.after {
        table.header(block, name, value);
    }
}

/// Appends trailers' header block (after `EncoderTable::begin`): literals,
/// which leave the table as it is.
fn encode_fields(block: &mut Vec<u8>, h: &HeaderMap) {
    for (name, value) in h {
        if !fields::is_connection_specific(name) {
            hpack::encode_header(block, name, value);
        }
    }
}

/// A response's (or trailers') fields as they are decoded.
struct Fields {
    status: Option<StatusCode>,
    block: fields::Block,
}

impl Fields {
    fn new(limit: usize, trailers: bool) -> Fields {
        Fields {
            status: None,
            block: fields::Block::new(limit, trailers, 0),
        }
    }

    fn field(&mut self, name: hpack::Name<'_>, val: hpack::Value<'_>) {
        let value = val.bytes();
        if !self.block.count(name.bytes, value) {
            return;
        }
        if name.bytes.first() == Some(&b':') {
            let b = &self.block;
            if name.bytes != b":status" || b.trailers || b.regular_seen || self.status.is_some() {
                return self.block.bad("a pseudo-header out of place");
            }
            match StatusCode::from_bytes(value) {
                Ok(s) => self.status = Some(s),
                Err(_) => self.block.bad("an invalid :status"),
            }
            return;
        }
        self.block.regular(name, val, |_, _| None);
    }
}

/// A handle on a connection: its streams are opened through it. The connection
/// closes (GOAWAY, then the socket) once no handle is left and its streams
/// are done.
pub struct Connection {
    h: Handle,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http2::client::Connection")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.h.with(|inner| {
            inner.released = true;
            inner.wake_task();
        });
    }
}

/// Whether a connection takes another stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Yes,
    Full,
    /// Ended, or draining after the server's GOAWAY: no new streams.
    Gone,
}

impl Connection {
    /// Starts a connection on `io`: the preface, this side's SETTINGS, its
    /// connection window and a PING are queued. The returned future is the
    /// connection's task (it ends when the connection does); `ready` waits for
    /// the server's first SETTINGS.
    pub fn new<IO>(io: IO, cfg: Config) -> (Connection, impl Future<Output = Result<(), Error>>)
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut wbuf = Vec::with_capacity(16 * 1024);
        wbuf.extend_from_slice(frame::PREFACE);
        frame::settings(
            &mut wbuf,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, cfg.stream_window),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, cfg.max_header_list),
            ],
        );
        let conn_window = (cfg.conn_window as i64).clamp(DEFAULT_WINDOW, MAX_WINDOW);
        if conn_window > DEFAULT_WINDOW {
            frame::window_update(&mut wbuf, 0, (conn_window - DEFAULT_WINDOW) as u32);
        }
        // answered after the server's SETTINGS: `ready`
        frame::ping(&mut wbuf, false, b"rampart\0");
        let inner = Inner {
            cfg,
            streams: Vec::new(),
            index: HashMap::default(),
            enc: Vec::new(),
            table: hpack::EncoderTable::default(),
            wbuf,
            next_id: 1,
            decoder: hpack::Decoder::new(4096),
            peer_max_streams: u32::MAX,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: conn_window,
            recv_unacked: 0,
            local_window: DEFAULT_WINDOW.max(cfg.stream_window as i64),
            got_settings: false,
            ready: false,
            ready_waker: None,
            partial: None,
            goaway: None,
            ended: None,
            released: false,
            out_dirty: false,
            probe: false,
            task: None,
        };
        let h = Handle::insert(inner);
        let task = drive(io, EndOnDrop(h.share()), cfg);
        (Connection { h }, task)
    }

    /// Waits for the server's first SETTINGS (its stream limit is known then).
    pub async fn ready(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.h
                .with(|inner| {
                    if let Some(e) = &inner.ended {
                        return Poll::Ready(Err(e.clone()));
                    }
                    if inner.ready {
                        return Poll::Ready(Ok(()));
                    }
                    inner.ready_waker = Some(cx.waker().clone());
                    Poll::Pending
                })
                .unwrap_or(Poll::Ready(Err(Error::Closed)))
        })
        .await
    }

    /// A keepalive PING now, not after `keepalive_interval` (a stream on the
    /// connection got no answer in time: the connection may be the one that
    /// is gone), unless one is out already; nothing comes back within
    /// `keepalive_timeout`, and the connection ends. Nothing without a
    /// keepalive.
    pub fn probe(&self) {
        self.h.with(|inner| {
            if inner.cfg.keepalive_interval.is_some() && inner.ended.is_none() {
                inner.probe = true;
                inner.wake_task();
            }
        });
    }

    /// Whether another stream fits, under `limit` and the server's own.
    pub fn room(&self, limit: usize) -> Room {
        self.h
            .with(|inner| {
                if inner.ended.is_some() || inner.goaway.is_some() || inner.next_id > (1 << 31) - 2
                {
                    Room::Gone
                } else if inner.streams.len() < limit.min(inner.peer_max_streams as usize) {
                    Room::Yes
                } else {
                    Room::Full
                }
            })
            .unwrap_or(Room::Gone)
    }

    /// Opens a stream: the head goes out now, the body as the server's windows
    /// allow. A streaming body comes with the future that moves it (`Pump`), for
    /// the caller to run as a task of its own: it may go on after the response
    /// has begun (gRPC streaming). Hands the body back when the connection
    /// takes no new stream.
    pub fn send<B>(
        &self,
        head: &RequestHead<'_>,
        body: SendBody<B>,
    ) -> Result<(ResponseFuture, Option<Pump>), SendBody<B>>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
    {
        // (a streaming body stays out of the table: it is the client's)
        let (eos, mut whole, stream) = match body {
            SendBody::Empty => (true, None, None),
            SendBody::Whole(data) => (false, Some(data), None),
            SendBody::Stream(b) => (false, None, Some(b)),
        };
        let opened = self.h.entry(|e| {
            let inner = &mut e.inner;
            if inner.ended.is_some() || inner.goaway.is_some() || inner.next_id > (1 << 31) - 2 {
                return None;
            }
            let id = inner.next_id;
            inner.next_id += 2;
            let mut block = std::mem::take(&mut inner.enc);
            block.clear();
            encode_request(&mut block, &mut inner.table, head);
            let max = inner.peer_max_frame;
            frame::headers(&mut inner.wbuf, id, &block, eos, max);
            inner.enc = block;
            let mut s = Stream {
                id,
                send_window: inner.peer_window,
                out: Bytes::new(),
                out_end: false,
                out_trailers: None,
                local_open: !eos,
                pump: None,
                head: None,
                head_seen: false,
                data: Chunks::default(),
                trailers: None,
                remote_open: true,
                recv_window: inner.local_window,
                unacked: 0,
                expect: None,
                received: 0,
                head_request: *head.method == Method::HEAD,
                error: None,
                reader: None,
            };
            if let Some(data) = whole.take() {
                s.out = data;
                s.out_end = true;
                inner.out_dirty = true;
            }
            inner.add(s);
            inner.wake_task();
            let pump = stream.is_some().then(|| self.h.share_in(e));
            Some((id, self.h.share_in(e), pump))
        });
        let Some((id, h, pump_h)) = opened.flatten() else {
            return Err(match (whole, stream) {
                (Some(data), _) => SendBody::Whole(data),
                (None, Some(b)) => SendBody::Stream(b),
                (None, None) => SendBody::Empty,
            });
        };
        let pump = match (stream, pump_h) {
            (Some(b), Some(h)) => Some(Box::pin(pump(b, h, id)) as Pump),
            _ => None,
        };
        let response = ResponseFuture { h, id, done: false };
        Ok((response, pump))
    }
}

/// The future that moves a streaming request body onto its stream.
pub type Pump = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A request's body, as `send` takes it.
pub enum SendBody<B> {
    /// None: END_STREAM with the head.
    Empty,
    /// In memory (kept for a replay): sent as the windows allow, without a
    /// task of its own.
    Whole(Bytes),
    /// Read from the client as it comes.
    Stream(B),
}

/// Moves a streaming request body onto its stream, one chunk at a time: the
/// next is read from the client once the server's window took the last.
async fn pump<B>(mut body: B, h: Handle, id: u32)
where
    B: Body<Data = Bytes> + Unpin,
{
    loop {
        let frame = poll_fn(|cx| {
            // woken when the window took `out`, and when the stream ends or
            // goes while the client's body is awaited (the body is then
            // dropped, not held until the client sends more)
            let wait = h.with(|inner| {
                let i = inner.find(id)?;
                let s = &mut inner.streams[i];
                if !s.local_open || s.error.is_some() {
                    return None;
                }
                if !s.pump.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.pump = Some(cx.waker().clone());
                }
                Some(!s.out.is_empty())
            });
            match wait.flatten() {
                None => Poll::Ready(None),
                Some(true) => Poll::Pending,
                Some(false) => Pin::new(&mut body).poll_frame(cx).map(Some),
            }
        })
        .await;
        let Some(frame) = frame else {
            return;
        };
        // (what is the client's, its body's end and its error, is looked at
        // and dropped outside the table's borrow)
        let (out, trailers, end) = match frame {
            None => (None, None, true),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => (Some(d), None, body.is_end_stream()),
                Err(f) => (None, f.into_trailers().ok(), true),
            },
            Some(Err(_)) => {
                // the client's body broke off: so does the stream
                h.with(|inner| {
                    let Some(i) = inner.find(id) else {
                        return;
                    };
                    let s = &inner.streams[i];
                    if s.local_open || s.remote_open {
                        frame::rst_stream(&mut inner.wbuf, id, Reason::CANCEL);
                    }
                    inner.streams[i].fail(Error::Cancelled);
                    inner.wake_task();
                });
                return;
            }
        };
        let go_on = h.with(|inner| {
            let i = inner.find(id)?;
            let s = &mut inner.streams[i];
            if let Some(d) = out {
                s.out = d;
            }
            s.out_trailers = trailers;
            s.out_end = end;
            inner.out_dirty = true;
            inner.wake_task();
            (!end).then_some(())
        });
        if go_on.flatten().is_none() {
            return;
        }
    }
}

/// A stream's response head, when it comes.
pub struct ResponseFuture {
    h: Handle,
    id: u32,
    done: bool,
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<RecvBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        let h = &self.h;
        let head = h.entry(|e| {
            let Some(i) = e.inner.find(id) else {
                return Poll::Ready(Err(Error::Closed));
            };
            let s = &mut e.inner.streams[i];
            if let Some((status, headers)) = s.head.take() {
                let body = RecvBody {
                    h: h.share_in(e),
                    id,
                    done: false,
                };
                let mut resp = http::Response::new(body);
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                return Poll::Ready(Ok(resp));
            }
            if let Some(e) = &s.error {
                return Poll::Ready(Err(e.clone()));
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        });
        let resp = ready!(head.unwrap_or(Poll::Ready(Err(Error::Closed))))?;
        self.done = true;
        Poll::Ready(Ok(resp))
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if !self.done {
            self.h.with(|inner| inner.forget(self.id));
        }
    }
}

/// A response body: its DATA, then its trailers. What is taken is given back
/// to the stream's window (the connection's came back as it arrived).
pub struct RecvBody {
    h: Handle,
    id: u32,
    done: bool,
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http2::client::RecvBody({})", self.id)
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let id = self.id;
        let next = self.h.with(|inner| {
            let Some(i) = inner.find(id) else {
                return Poll::Ready(Some(Err(Error::Closed)));
            };
            let s = &mut inner.streams[i];
            if let Some(d) = s.data.pop() {
                inner.release_stream(i, d.len() as i64);
                if !inner.wbuf.is_empty() {
                    inner.wake_task();
                }
                return Poll::Ready(Some(Ok(Frame::data(d))));
            }
            if let Some(e) = &s.error {
                return Poll::Ready(Some(Err(e.clone())));
            }
            if !s.remote_open {
                return Poll::Ready(s.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        });
        let next = next.unwrap_or(Poll::Ready(Some(Err(Error::Closed))));
        match &next {
            Poll::Ready(None) => self.done = true,
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => self.done = true,
            _ => {}
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || self
                .h
                .with(|inner| {
                    inner.find(self.id).is_some_and(|i| {
                        let s = &inner.streams[i];
                        !s.remote_open
                            && s.data.is_empty()
                            && s.trailers.is_none()
                            && s.error.is_none()
                    })
                })
                .unwrap_or(false)
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        self.h.with(|inner| inner.forget(self.id));
    }
}

/// DATA payloads shorter than this are copied out of the read buffer for
/// the response body's reader (`Inner::data`); longer ones are slices of it,
/// which keep at most four times their size allocated.
const COPY_UNDER: usize = 4 * 1024;

/// Whether `rbuf` holds a whole frame.
fn whole_frame(rbuf: &[u8]) -> bool {
    rbuf.len() >= 9 && rbuf.len() >= 9 + Head::parse(rbuf).len
}

/// The task's handle: ends the connection for its streams, however the task
/// ends (an abort at shutdown, or a drop before it ran, included), so that
/// none waits for frames that will not come.
struct EndOnDrop(Handle);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.with(|inner| inner.end(Error::Closed));
    }
}

/// A connection's liveness check (`Config::keepalive_interval`): a PING
/// when the server has sent nothing for the interval, and the connection
/// taken for dead when nothing then comes within `keepalive_timeout`. Any
/// bytes from the server count, not only the PING's ACK (a server busy
/// sending responses is there, and may answer a PING behind them).
///
/// A connection whose flow a NAT, a conntrack table or a firewall dropped,
/// to a server that is well (its health checks open connections of their
/// own, and pass), would otherwise stay the first with room: every request
/// put on it would wait server_timeout, until TCP gave up on the writes
/// (about 15 minutes). So the PINGs go whether or not streams are open, as
/// Envoy's `connection_keepalive` does: an idle connection found dead is
/// gone before a request is put on it.
///
/// The arithmetic only; the task arms its timer for what `tick` says.
#[derive(Debug)]
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    /// When the server last sent something.
    heard: Instant,
    /// When the PING not answered yet was sent.
    ping: Option<Instant>,
}

/// What the keepalive wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Nothing before then.
    Until(Instant),
    /// A PING now; then nothing before the instant given.
    Ping(Instant),
    /// The PING went unanswered: the connection is dead.
    Dead,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration, now: Instant) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            heard: now,
            ping: None,
        }
    }

    /// The server sent something: it is there.
    fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.ping = None;
    }

    /// What is due at `now`. `probe`: a PING now, however lately the server
    /// was heard from, unless one is out already.
    fn tick(&mut self, now: Instant, probe: bool) -> Tick {
        if let Some(sent) = self.ping {
            let due = sent + self.timeout;
            return if now >= due {
                Tick::Dead
            } else {
                Tick::Until(due)
            };
        }
        let due = self.heard + self.interval;
        if probe || now >= due {
            self.ping = Some(now);
            return Tick::Ping(now + self.timeout);
        }
        Tick::Until(due)
    }
}

/// The connection's task: reads frames and handles them, writes what the
/// streams queued, until the connection ends (or its keepalive finds it
/// dead: `Error::Io(TimedOut)`).
async fn drive<IO>(mut io: IO, end: EndOnDrop, cfg: Config) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut opos = 0;
    let mut unflushed = false;
    let mut read_closed = false;
    // the connection is over: what the server sends is not read any more
    let mut stopped = false;
    let mut keepalive = cfg
        .keepalive_interval
        .map(|iv| Keepalive::new(iv, cfg.keepalive_timeout, Instant::now()));
    // something was read since the keepalive last looked
    let mut heard = false;
    // the keepalive's timer (made when first armed), and when it is armed for
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut timer_at: Option<Instant> = None;
    let h = &end.0;
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            // read when no whole frame waits (a server's small frames do not
            // pile up faster than they are handled), and handle them
            if !read_closed && !stopped && !whole_frame(&rbuf) {
                if rbuf.capacity() - rbuf.len() < 4096 {
                    rbuf.reserve(16 * 1024);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut rbuf) {
                    Poll::Ready(Ok(0)) => {
                        read_closed = true;
                        h.with(|inner| inner.end(Error::Closed));
                    }
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        heard = true;
                    }
                    Poll::Ready(Err(e)) => {
                        h.with(|inner| inner.end(Error::Io(e.kind())));
                        return Poll::Ready(Err(Error::Io(e.kind())));
                    }
                    Poll::Pending => {}
                }
            }
            let turn = h.with(|inner| {
                let mut n = 0;
                // (while what is queued to write is under WRITE_HIGH: a server
                // that sends PINGs and reads nothing does not grow it)
                while rbuf.len() >= 9
                    && inner.ended.is_none()
                    && n < FRAMES_PER_POLL
                    && inner.wbuf.len() + (out.len() - opos) < WRITE_HIGH
                {
                    let h = Head::parse(&rbuf);
                    if h.len > MAX_FRAME {
                        inner.fatal(
                            Reason::FRAME_SIZE_ERROR,
                            "a frame over SETTINGS_MAX_FRAME_SIZE",
                        );
                        break;
                    }
                    if rbuf.len() < 9 + h.len {
                        break;
                    }
                    let f = rbuf.split_to(9 + h.len);
                    inner.frame(h, f);
                    n += 1;
                }
                // the keepalive: a PING when the server has been silent, the
                // end when one went unanswered
                let tick = keepalive.as_mut().map(|k| {
                    let now = Instant::now();
                    if std::mem::take(&mut heard) {
                        k.heard(now);
                    }
                    let tick = k.tick(now, std::mem::take(&mut inner.probe));
                    match tick {
                        Tick::Ping(_) => frame::ping(&mut inner.wbuf, false, KEEPALIVE_PING),
                        Tick::Dead => inner.end(Error::Io(std::io::ErrorKind::TimedOut)),
                        Tick::Until(_) => {}
                    }
                    (now, tick)
                });
                inner.send_out();
                if opos == out.len() && !inner.wbuf.is_empty() {
                    out.clear();
                    opos = 0;
                    std::mem::swap(&mut out, &mut inner.wbuf);
                }
                let stopped = inner.ended.is_some();
                let ended = inner.ended.clone();
                let finished = inner.released && inner.streams.is_empty() && ended.is_none();
                if finished && out.len() == opos {
                    // (the last stream the server opened: none)
                    frame::goaway(&mut out, 0, Reason::NO_ERROR);
                    inner.end(Error::Closed);
                }
                if !inner.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    inner.task = Some(cx.waker().clone());
                }
                // more may be buffered: another turn, after other tasks
                (n == FRAMES_PER_POLL, stopped, ended, tick)
            });
            // (the table holds the entry while this task's handle is on it)
            let Some((more, ended_now, ended, tick)) = turn else {
                return Poll::Ready(Err(Error::Closed));
            };
            stopped = ended_now;
            match tick {
                // its streams failed (`end`): the socket goes now, not after
                // what is queued for a peer that reads nothing was written
                Some((_, Tick::Dead)) => {
                    tracing::debug!(
                        timeout = ?cfg.keepalive_timeout,
                        "no answer to a keepalive PING: the HTTP/2 connection is taken for dead"
                    );
                    return Poll::Ready(Err(Error::Io(std::io::ErrorKind::TimedOut)));
                }
                Some((now, Tick::Until(at) | Tick::Ping(at))) => {
                    // (armed again only for an earlier time, or once the
                    // armed one passed: a read does not move the timer, which
                    // wakes the task early and is armed for the later time
                    // then)
                    if timer_at.is_none_or(|t| at < t || t <= now) {
                        timer_at = Some(at);
                        match &mut timer {
                            Some(t) => t.as_mut().reset(at),
                            None => timer = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                    }
                    if let (Some(t), Some(_)) = (&mut timer, timer_at) {
                        if t.as_mut().poll(cx).is_ready() {
                            timer_at = None;
                            cx.waker().wake_by_ref();
                        }
                    }
                }
                None => {}
            }
            // write
            while opos < out.len() {
                match Pin::new(&mut io).poll_write(cx, &out[opos..]) {
                    Poll::Ready(Ok(0)) => {
                        h.with(|inner| inner.end(Error::Closed));
                        return Poll::Ready(Err(Error::Closed));
                    }
                    Poll::Ready(Ok(w)) => {
                        opos += w;
                        unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        h.with(|inner| inner.end(Error::Io(e.kind())));
                        return Poll::Ready(Err(Error::Io(e.kind())));
                    }
                    Poll::Pending => break,
                }
            }
            if unflushed && opos == out.len() {
                match Pin::new(&mut io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(e)) => {
                        h.with(|inner| inner.end(Error::Io(e.kind())));
                        return Poll::Ready(Err(Error::Io(e.kind())));
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(e) = ended.or(read_closed.then_some(Error::Closed)) {
                if opos == out.len() && !unflushed {
                    let _ = Pin::new(&mut io).poll_shutdown(cx);
                    return Poll::Ready(match e {
                        Error::Closed => Ok(()),
                        e => Err(e),
                    });
                }
                if !progress {
                    return Poll::Pending;
                }
                continue;
            }
            if more {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress && (opos < out.len() || h.with(|i| i.wbuf.is_empty()).unwrap_or(true)) {
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use std::time::Duration;

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut d = hpack::Decoder::new(4096);
        let mut v = Vec::new();
        d.decode(block, |n, val| {
            v.push((
                String::from_utf8_lossy(n.bytes).into_owned(),
                String::from_utf8_lossy(val.bytes()).into_owned(),
            ))
        })
        .expect("a block rampart's own decoder reads");
        v
    }

    #[test]
    fn chunks_come_out_in_the_order_they_came_in() {
        let mut c = Chunks::default();
        assert!(c.is_empty() && c.pop().is_none());
        let mut next = 0u32;
        let mut want = 0u32;
        // pushes and pops interleaved every way: one in, two in, one out...
        for round in 0..6 {
            for _ in 0..=round % 3 {
                c.push(Bytes::from(next.to_string()));
                next += 1;
            }
            for _ in 0..round % 2 + 1 {
                if let Some(b) = c.pop() {
                    assert_eq!(b, want.to_string());
                    want += 1;
                }
            }
        }
        while let Some(b) = c.pop() {
            assert_eq!(b, want.to_string());
            want += 1;
        }
        assert_eq!(want, next);
        assert!(c.is_empty());
    }

    #[test]
    fn a_request_head_is_encoded_with_its_pseudo_fields_first_and_without_what_http2_forbids() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append("x-many", HeaderValue::from_static("1"));
        h.append("x-many", HeaderValue::from_static("2"));
        // the proxy's own fields, kept beside the map: after its fields
        let after = [
            (
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_static("192.0.2.1"),
            ),
            (
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static("http"),
            ),
        ];
        let cases = [
            (Method::GET, "http", "/", "GET"),
            (Method::POST, "https", "/a.B/C?x=1", "POST"),
            (Method::from_bytes(b"PURGE").unwrap(), "http", "/p", "PURGE"),
        ];
        for (method, scheme, path, m) in cases {
            let mut block = Vec::new();
            encode_request(
                &mut block,
                &mut hpack::EncoderTable::default(),
                &RequestHead {
                    method: &method,
                    scheme,
                    authority: b"example.com:8080",
                    path: path.as_bytes(),
                    headers: &h,
                    after: &after,
                },
            );
            let fields = decode(&block);
            let want: Vec<(String, String)> = [
                (":method", m),
                (":scheme", scheme),
                (":authority", "example.com:8080"),
                (":path", path),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("x-many", "1"),
                ("x-many", "2"),
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-proto", "http"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            assert_eq!(fields, want);
        }
        // TE other than "trailers" is not sent (RFC 9113 8.2.2)
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        let mut block = Vec::new();
        encode_request(
            &mut block,
            &mut hpack::EncoderTable::default(),
            &RequestHead {
                method: &Method::GET,
                scheme: "http",
                authority: b"a",
                path: b"/",
                headers: &h,
                after: &[],
            },
        );
        assert!(decode(&block).iter().all(|(n, _)| n != "te"));
    }

    fn response(fields: &[(&[u8], &[u8])], trailers: bool) -> Fields {
        let mut f = Fields::new(1024, trailers);
        for (n, v) in fields {
            f.field(hpack::Name::bare(n), hpack::Value::Scratch(v));
        }
        f
    }

    #[test]
    fn a_response_head_is_refused_when_http2_calls_it_malformed() {
        let ok = response(
            &[
                (b":status", b"200"),
                (b"content-length", b"5"),
                (b"x-a", b"b"),
            ],
            false,
        );
        assert_eq!(ok.block.malformed, None);
        assert_eq!(ok.status, Some(StatusCode::OK));
        assert_eq!(ok.block.content_length, Some(5));
        assert_eq!(ok.block.headers.get("x-a").unwrap(), "b");
        type Case<'a> = (&'a [(&'a [u8], &'a [u8])], bool);
        let bad: [Case; 9] = [
            (&[(b":status", b"2000")], false),
            (&[(b":status", b"200"), (b":status", b"200")], false),
            (&[(b"x-a", b"b"), (b":status", b"200")], false),
            (&[(b":status", b"200"), (b":path", b"/")], false),
            (&[(b":status", b"200"), (b"X-Upper", b"1")], false),
            (&[(b":status", b"200"), (b"connection", b"close")], false),
            (&[(b":status", b"200"), (b"x-a", b" edge")], false),
            (
                &[
                    (b":status", b"200"),
                    (b"content-length", b"5"),
                    (b"content-length", b"6"),
                ],
                false,
            ),
            (&[(b":status", b"200")], true),
        ];
        for (fields, trailers) in bad {
            assert!(
                response(fields, trailers).block.malformed.is_some(),
                "{fields:?}"
            );
        }
        // over the limit: too large, not malformed
        let big = vec![b'v'; 2000];
        let f = response(&[(b":status", b"200"), (b"x-big", &big)], false);
        assert!(f.block.too_large && f.block.malformed.is_none());
    }

    #[test]
    fn only_a_stream_the_server_did_not_process_may_be_sent_again() {
        assert!(Error::Reset(Reason::REFUSED_STREAM).unprocessed());
        assert!(Error::GoAway(Reason::NO_ERROR).unprocessed());
        assert!(!Error::Reset(Reason::INTERNAL_ERROR).unprocessed());
        assert!(!Error::Closed.unprocessed());
    }

    const CFG: Config = Config {
        stream_window: 65_535,
        conn_window: 65_535,
        max_header_list: 16 * 1024,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(5),
    };

    /// Entries in this thread's table.
    fn live() -> usize {
        TABLE.with_borrow(|t| t.entries.iter().filter(|e| e.is_some()).count())
    }

    /// An HTTP/2 server (the h2 crate's) on a loopback port: every request is
    /// answered 200 with a body of "hello".
    async fn server() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((_, mut respond))) = conn.accept().await {
                        let resp = http::Response::new(());
                        if let Ok(mut body) = respond.send_response(resp, false) {
                            let _ = body.send_data(Bytes::from_static(b"hello"), true);
                        }
                    }
                });
            }
        });
        addr
    }

    fn get(headers: &HeaderMap) -> RequestHead<'_> {
        RequestHead {
            method: &Method::GET,
            scheme: "http",
            authority: b"test",
            path: b"/",
            headers,
            after: &[],
        }
    }

    #[tokio::test]
    async fn a_connections_state_goes_with_its_last_handle() {
        use http_body_util::BodyExt;
        let addr = server().await;
        let before = live();
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (conn, task) = Connection::new(io, CFG);
        let task = tokio::spawn(task);
        conn.ready().await.unwrap();
        assert_eq!(live(), before + 1);
        let headers = HeaderMap::new();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let Ok((resp, None)) = conn.send(&get(&headers), SendBody::<RecvBody>::Empty) else {
                panic!("the connection took no stream");
            };
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            bodies.push(resp.into_body());
        }
        // the handle, the task and the bodies not yet read hold the entry
        drop(conn);
        let last = bodies.pop().unwrap();
        for b in bodies {
            assert_eq!(b.collect().await.unwrap().to_bytes(), "hello");
        }
        assert_eq!(live(), before + 1);
        // the last stream done, the task says GOAWAY and ends; the entry goes
        assert_eq!(last.collect().await.unwrap().to_bytes(), "hello");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the connection ends once no handle and no stream is left")
            .unwrap()
            .unwrap();
        assert_eq!(live(), before);
    }

    /// Small DATA payloads from a server are copied out of the read buffer:
    /// each chunk owns a small allocation, not a slice that keeps a 16 KiB
    /// buffer alive while a slow client has not taken it.
    #[tokio::test]
    async fn small_data_from_a_server_holds_no_read_buffer() {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = l.accept().await.unwrap();
            let mut conn = h2::server::handshake(sock).await.unwrap();
            tokio::spawn(async move {
                if let Some(Ok((_, mut respond))) = conn.accept().await {
                    let mut body = respond
                        .send_response(http::Response::new(()), false)
                        .unwrap();
                    for k in 0..100u8 {
                        body.send_data(Bytes::from(vec![k]), k == 99).unwrap();
                    }
                }
                while conn.accept().await.is_some() {}
            });
        });
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (conn, task) = Connection::new(io, CFG);
        tokio::spawn(task);
        conn.ready().await.unwrap();
        let headers = HeaderMap::new();
        let Ok((resp, None)) = conn.send(&get(&headers), SendBody::<RecvBody>::Empty) else {
            panic!("the connection took no stream");
        };
        let mut body = resp.await.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            let Ok(d) = f.unwrap().into_data() else {
                continue;
            };
            let len = d.len();
            let own = d
                .try_into_mut()
                .unwrap_or_else(|_| panic!("a chunk of {len} bytes shares the read buffer"));
            assert!(own.capacity() < 1024, "{} bytes kept", own.capacity());
            got.extend_from_slice(&own);
        }
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
    }

    /// RFC 9113 6.5.2: a server's SETTINGS_ENABLE_PUSH = 1 is a connection
    /// error; the connection is never ready.
    #[tokio::test]
    async fn a_server_that_enables_push_breaks_the_protocol() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut out = Vec::new();
            frame::settings(&mut out, &[(frame::SETTINGS_ENABLE_PUSH, 1)]);
            s.write_all(&out).await.unwrap();
            let mut buf = [0u8; 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (conn, task) = Connection::new(io, CFG);
        tokio::spawn(task);
        let r = tokio::time::timeout(Duration::from_secs(10), conn.ready())
            .await
            .expect("neither ready nor failed");
        assert!(
            matches!(r, Err(Error::Protocol(Reason::PROTOCOL_ERROR, _))),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_handle_taken_to_another_thread_finds_nothing_there() {
        let addr = server().await;
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (conn, task) = Connection::new(io, CFG);
        tokio::spawn(task);
        conn.ready().await.unwrap();
        let headers = HeaderMap::new();
        let Ok((resp, _)) = conn.send(&get(&headers), SendBody::<RecvBody>::Empty) else {
            panic!("the connection took no stream");
        };
        let slot = resp.h.slot as usize;
        // another thread, whose table has an entry in the same slot
        let (resp, others) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let others: Vec<_> = (0..=slot)
                    .map(|_| Connection::new(tokio::io::duplex(64).0, CFG))
                    .collect();
                let theirs = &others[slot].0;
                assert_eq!(theirs.h.slot as usize, slot);
                let refs = || theirs.h.entry(|e| (e.refs, e.inner.streams.len()));
                let was = refs();
                let mut resp = Box::pin(resp);
                let got = std::future::poll_fn(|cx| Poll::Ready(resp.as_mut().poll(cx))).await;
                assert!(matches!(got, Poll::Ready(Err(Error::Closed))), "{got:?}");
                drop(resp);
                // neither the poll nor the drop touched this thread's entry
                assert_eq!(refs(), was);
                assert_eq!(theirs.room(1), Room::Yes);
                (got.map(|r| r.map(|_| ())), others.len())
            })
        })
        .join()
        .unwrap();
        assert_eq!(resp, Poll::Ready(Err(Error::Closed)));
        assert!(others > slot);
        // the connection on this thread goes on serving
        let Ok((resp, _)) = conn.send(&get(&headers), SendBody::<RecvBody>::Empty) else {
            panic!("the connection took no stream");
        };
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn the_keepalive_pings_a_silent_server_and_gives_up_on_one_that_stays_silent() {
        let (iv, to) = (Duration::from_secs(10), Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut k = Keepalive::new(iv, to, t0);
        // silent for less than the interval: nothing until it has passed
        assert_eq!(k.tick(at(3), false), Tick::Until(at(10)));
        // whatever the server sends puts the PING off
        k.heard(at(8));
        assert_eq!(k.tick(at(10), false), Tick::Until(at(18)));
        // silent for the interval: a PING, answered within the timeout
        assert_eq!(k.tick(at(18), false), Tick::Ping(at(23)));
        assert_eq!(k.tick(at(20), false), Tick::Until(at(23)));
        k.heard(at(21));
        assert_eq!(k.tick(at(21), false), Tick::Until(at(31)));
        // a PING not answered: dead at the timeout, not before
        assert_eq!(k.tick(at(31), false), Tick::Ping(at(36)));
        assert_eq!(k.tick(at(35), false), Tick::Until(at(36)));
        assert_eq!(k.tick(at(36), false), Tick::Dead);
        // a probe PINGs at once, however lately the server was heard from,
        // and not again while that PING is out
        let mut k = Keepalive::new(iv, to, t0);
        assert_eq!(k.tick(at(1), true), Tick::Ping(at(6)));
        assert_eq!(k.tick(at(2), true), Tick::Until(at(6)));
        assert_eq!(k.tick(at(6), false), Tick::Dead);
    }

    /// The server end of a connection: its SETTINGS, then an ACK for every
    /// PING while `answer` holds (the handshake's included). It reads all
    /// that comes, answers nothing else, and never closes.
    async fn pinged_server(
        mut io: tokio::io::DuplexStream,
        answer: std::sync::Arc<std::sync::atomic::AtomicBool>,
        pings: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = Vec::new();
        frame::settings(&mut out, &[]);
        if io.write_all(&out).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut preface = false;
        loop {
            match io.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            if !preface {
                if buf.len() < frame::PREFACE.len() {
                    continue;
                }
                buf.drain(..frame::PREFACE.len());
                preface = true;
            }
            while whole_frame(&buf) {
                let h = Head::parse(&buf);
                let f: Vec<u8> = buf.drain(..9 + h.len).collect();
                if h.kind != frame::PING || h.flags & frame::ACK != 0 {
                    continue;
                }
                pings.fetch_add(1, Ordering::SeqCst);
                if answer.load(Ordering::SeqCst) {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&f[9..17]);
                    let mut out = Vec::new();
                    frame::ping(&mut out, true, &p);
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// A connection whose server answers its PINGs lives on, idle or not; one
    /// whose server goes silent (its flow dropped on the way) ends within
    /// keepalive_interval and keepalive_timeout, its open stream failed as
    /// timed out and no room left on it. (Paused time: the runtime moves the
    /// clock on whenever every task waits.)
    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_server_goes_silent_ends_after_the_keepalive() {
        let cfg = Config {
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(5),
            ..CFG
        };
        let (conn, task, answer, pings) = pinged_connection(cfg).await;
        // a minute, idle: a PING every 10 s, each answered
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(pings.load(Ordering::SeqCst) >= 5, "{pings:?}");
        assert_eq!(conn.room(1), Room::Yes);
        // the server goes silent, a stream open: it fails within 10 + 5 s
        answer.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let headers = HeaderMap::new();
        let Ok((resp, None)) = conn.send(&get(&headers), SendBody::<RecvBody>::Empty) else {
            panic!("the connection took no stream");
        };
        let got = resp.await;
        assert!(
            matches!(got, Err(Error::Io(std::io::ErrorKind::TimedOut))),
            "{got:?}"
        );
        // (10 + 5 s, and a timer's rounding to the millisecond)
        assert!(
            started.elapsed() < Duration::from_secs(16),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(conn.room(1), Room::Gone);
        assert_eq!(
            task.await.unwrap(),
            Err(Error::Io(std::io::ErrorKind::TimedOut))
        );
    }

    /// A ready connection (`cfg`) to `pinged_server`: the task, whether the
    /// server answers PINGs (it does until told not to), and how many came.
    async fn pinged_connection(
        cfg: Config,
    ) -> (
        Connection,
        tokio::task::JoinHandle<Result<(), Error>>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use std::sync::Arc;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let answer = Arc::new(AtomicBool::new(true));
        let pings = Arc::new(AtomicUsize::new(0));
        tokio::spawn(pinged_server(server, answer.clone(), pings.clone()));
        let (conn, task) = Connection::new(client, cfg);
        let task = tokio::spawn(task);
        conn.ready().await.unwrap();
        (conn, task, answer, pings)
    }

    /// `probe` (a stream timed out) PINGs at once: a silent server's
    /// connection ends within keepalive_timeout, not the interval too.
    #[tokio::test(start_paused = true)]
    async fn a_probe_finds_a_silent_server_within_the_keepalive_timeout() {
        let cfg = Config {
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(5),
            ..CFG
        };
        let (conn, task, answer, pings) = pinged_connection(cfg).await;
        answer.store(false, Ordering::SeqCst);
        let started = Instant::now();
        conn.probe();
        assert_eq!(
            task.await.unwrap(),
            Err(Error::Io(std::io::ErrorKind::TimedOut))
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        // the handshake's PING and the probe's
        assert_eq!(pings.load(Ordering::SeqCst), 2);
        assert_eq!(conn.room(1), Room::Gone);
    }
}
