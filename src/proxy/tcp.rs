//! TCP mode: pick a server, connect within `connect_timeout`, then relay bytes both
//! ways until both directions have closed. A direction that reaches EOF shuts down
//! the write side of the other socket (half-close) while the other direction goes on.
//! A direction that breaks does not end the other one either: a server that sends an
//! error and closes while the client is still uploading (Postgres's FATAL during a
//! COPY) has that error delivered, as HAProxy and nginx do.

use super::splice;
use crate::accesslog::{End, Entry};
use crate::limits::ListenerShared;
use crate::plane::Plane;
use crate::proxy::lifecycle::{self, Lifecycle};
use crate::relaybuf::{Filled, RelayBuf};
use crate::upstream;
use std::any::Any;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long a session one of whose sockets broke waits, once everything for the
/// other socket is passed on with its EOF, for that socket's peer to close too
/// (it is reading what was passed on meanwhile). Closing first, while the peer
/// still sends, would be a reset that throws away what it has not read yet; a
/// peer that neither closes nor stops sending gets that reset after this long
/// (nginx's lingering close, whose `lingering_timeout` is 5 s).
const LINGER: Duration = Duration::from_secs(2);

/// Who a tcp session is for, as the accept-time layers found out.
#[derive(Debug)]
pub struct Session {
    /// The client (its socket's peer, or the one its PROXY header names).
    pub peer: SocketAddr,
    /// The local address the client reached (for the PROXY header we send).
    pub local: SocketAddr,
    /// The server name of its TLS ClientHello (passthrough routing).
    pub sni: Option<String>,
    /// What was read from the client to route by (that ClientHello): the
    /// relay sends it to the server first.
    pub first: Option<First>,
    /// Its TLS, when this listener terminates it (boxed: most sessions have
    /// none, and the session's task holds this).
    pub tls: Option<Box<crate::tls::TlsInfo>>,
}

/// Bytes read from the client before its relay (its ClientHello, read to
/// route by).
#[derive(Debug)]
pub enum First {
    /// In the relay buffer it was read into, which the relay's client
    /// direction starts from.
    Buf(Filled),
    /// Copied out of it while the session may wait in a pool's queue, so that
    /// a queued session holds no 32 KiB buffer (a pool with a connection
    /// limit; HAProxy holds its 16 KiB buffer there).
    Held(Box<[u8]>),
}

impl First {
    fn hold(self) -> First {
        match self {
            First::Buf(read) => First::Held(read.bytes().into()),
            held => held,
        }
    }

    fn into_buf(self) -> Filled {
        match self {
            First::Buf(read) => read,
            // (at most MAX_PEEK bytes, less than a relay buffer)
            First::Held(bytes) => Filled::copied(&bytes),
        }
    }
}

/// Reads and drops what `stream`'s peer has sent and is there to read now, up
/// to `max` bytes, with the system's own reads: not through tokio's readiness,
/// which a socket whose first bytes were read before it was registered
/// (`sni::read_now`) may not have yet (tokio's `try_read` would then read
/// nothing, and closing the socket with bytes unread resets the client).
pub fn drain_now(stream: &TcpStream, max: usize) {
    use std::io::Read;
    let sock = socket2::SockRef::from(stream);
    let mut sink = [0u8; 4096];
    let mut left = max;
    while left > 0 {
        match (&*sock).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads and drops what `client` has sent and is there to read now, up to
/// `max` bytes; never waits for more.
async fn read_what_came<S: AsyncRead + Unpin>(client: &mut S, max: usize) {
    let mut sink = RelayBuf::take();
    let mut left = max;
    while left > 0 {
        let got = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut *client).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(buf.filled().len()),
                // an error or nothing there yet: done
                _ => Poll::Ready(0),
            }
        })
        .await;
        if got == 0 {
            break;
        }
        left = left.saturating_sub(got);
    }
}

/// Handles one TCP session accepted on `bound` for `listener` at `start`;
/// `timer` is its timer (the connect's, then the relay's idle one).
///
/// A plain fn returning an `async` block, not an `async fn`: an `async fn`'s
/// future keeps its arguments twice (as they came, and moved into its body),
/// and this future is copied a few times as its task is spawned and held for
/// as long as the session lasts.
#[allow(clippy::manual_async_fn)] // (on purpose: see above)
pub fn serve<'a, S>(
    mut client: S,
    mut session: Session,
    plane: Arc<Plane>,
    bound: SocketAddr,
    listener: &'a Arc<ListenerShared>,
    start: Instant,
    mut timer: Pin<&'a mut Sleep>,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    async move {
        let peer = session.peer;
        let listener_name = &listener.name;
        // (a ClientHello without a server name is routed as the empty name: a
        // route `sni = ""` takes it)
        let sni = session.sni.as_deref().unwrap_or("");
        let pool = match lifecycle::route(&plane, listener, bound, Some(sni)) {
            lifecycle::Routed::Pool(p) => p,
            lifecycle::Routed::Gone => return,
            lifecycle::Routed::Nowhere => {
                // no route takes its server name, and the listener has no pool
                listener.denied.fetch_add(1, Ordering::Relaxed);
                plane.access_log.write(&Entry {
                    client: peer,
                    listener: listener_name,
                    pool: "-",
                    server: None,
                    method: None,
                    path: None,
                    status: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    connect: None,
                    total: Some(start.elapsed()),
                    end: End::NoRoute,
                    tls: session.tls.as_deref(),
                    grpc_status: None,
                    sni: session.sni.as_deref(),
                });
                // read whatever else came after the ClientHello before closing,
                // so that the client gets a FIN, not the reset of a socket
                // closed with unread bytes
                match (&mut client as &mut dyn Any).downcast_mut::<TcpStream>() {
                    Some(c) => drain_now(c, 64 * 1024),
                    None => read_what_came(&mut client, 64 * 1024).await,
                }
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
                return;
            }
        };
        let log = |server: Option<&str>, connect: Option<Duration>, a: u64, b: u64, end: End| {
            // (the clock is not read for a log that is off)
            if !plane.access_log.enabled() {
                return;
            }
            plane.access_log.write(&Entry {
                client: peer,
                listener: listener_name,
                pool: &pool.name,
                server,
                method: None,
                path: None,
                status: None,
                bytes_in: a,
                bytes_out: b,
                connect,
                total: Some(start.elapsed()),
                end,
                tls: session.tls.as_deref(),
                grpc_status: None,
                sni: session.sni.as_deref(),
            })
        };
        // a tcp pool hashes on the client's address (the config allows no other key)
        let key = lifecycle::hash_key(&pool, peer.ip(), "", |_| None);
        // Pick and connect; a failed connect is retried on another server before any
        // byte is relayed.
        let mut lc = Lifecycle::new(Arc::clone(&pool), key, crate::rules::Priority::Normal)
            .reached_any_way();
        if pool.max_conn_per_server > 0 {
            // it may wait in the queue: what was read waits without its buffer
            session.first = session.first.take().map(First::hold);
        }
        let (guard, mut backend, connect) = loop {
            let mut guard = match lc.acquire().await {
                Ok(g) => g,
                Err(g) => {
                    g.err.count_pool(&lc.pool);
                    log(g.server(&lc.pool).map(|s| &*s.id), None, 0, 0, g.err.end());
                    return;
                }
            };
            // (the guard's pool: a session that waited in the queue through a
            // change of the pool holds a slot in the pool in force, `lc.pool`)
            let addr = guard.server().addr;
            // (tokio's clock: the timer's, also where a test pauses it)
            let connect_start = tokio::time::Instant::now();
            let within = lc.pool.connect_timeout;
            // (the session's one timer: one entry in the runtime's timer
            // wheel, where the connect and the relay had one each; the relay
            // moves it to a later deadline, which costs the wheel nothing
            // until then)
            let at = connect_start + within;
            match upstream::connect_tcp_by(addr, within, timer.as_mut(), at).await {
                Ok(s) => {
                    guard.success();
                    lc.connected();
                    let took = connect_start.elapsed();
                    pool.shared
                        .histograms
                        .connect_time
                        .observe(took.as_secs_f64());
                    break (guard, s, took);
                }
                Err(e) => {
                    tracing::debug!(pool = %pool.name, error = %e, "tcp connect failed");
                    // Nothing was sent: the session can go to another server as it is.
                    if let Err(g) = lc.failed(&mut guard, e, true, false) {
                        g.err.count_pool(&lc.pool);
                        log(Some(&guard.server().id), None, 0, 0, g.err.end());
                        return;
                    }
                }
            }
        };
        let server = guard.server();
        // the settings of the pool the slot is in
        let pool = &lc.pool;
        if let Some(v) = pool.send_proxy {
            // who the client is, for a server behind us that reads the PROXY protocol
            let header =
                crate::proxy_protocol::header(v, peer, session.local, session.tls.as_deref());
            if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut backend, &header).await {
                tracing::debug!(pool = %pool.name, error = %e, "cannot send the PROXY header");
                let why = format!("cannot send the PROXY header: {e}");
                server.state.traffic.failed(false, &why);
                log(Some(&server.id), Some(connect), 0, 0, End::ServerAbort);
                return;
            }
        }
        let first = session.first.take();
        let idle = pool.server_timeout;
        let out = match &pool.tls {
            // spliced when the client is a plain socket too and the pool allows it
            None => match (&mut client as &mut dyn Any).downcast_mut::<TcpStream>() {
                Some(c) if pool.splice => relay_tcp_from(c, &mut backend, first, idle, timer).await,
                _ => relay_from(&mut client, &mut backend, first, idle, timer).await,
            },
            Some(tls) => {
                match relay_tls(&mut client, first, pool, tls, server, backend, timer).await {
                    Ok(out) => out,
                    Err(e) => {
                        server.state.traffic.failed(true, &e);
                        let end = match e {
                            upstream::UpstreamError::ConnectTimeout { .. } => End::ConnectTimeout,
                            _ => End::ConnectError,
                        };
                        log(Some(&server.id), Some(connect), 0, 0, end);
                        return;
                    }
                }
            }
        };
        server
            .state
            .traffic
            .bytes_in
            .fetch_add(out.a_to_b, Ordering::Relaxed);
        server
            .state
            .traffic
            .bytes_out
            .fetch_add(out.b_to_a, Ordering::Relaxed);
        if out.end == End::ServerAbort {
            let why = "the server reset or broke the session";
            server.state.traffic.failed(false, &why);
        }
        log(
            Some(&server.id),
            Some(connect),
            out.a_to_b,
            out.b_to_a,
            out.end,
        );
    }
}

/// The TLS handshake with the server, then the relay through it; boxed where
/// it is made (a plain fn: an `async` block's `Box::pin` still leaves room for
/// what it boxes), so that neither the handshake's state nor a rustls session
/// take room in the task of every session, most of which speak no TLS to their
/// server.
fn relay_tls<'a, S>(
    client: &'a mut S,
    first: Option<First>,
    pool: &'a crate::pool::Pool,
    tls: &'a crate::tls::PoolTls,
    server: &'a crate::pool::Server,
    backend: TcpStream,
    timer: Pin<&'a mut Sleep>,
) -> Pin<Box<impl Future<Output = Result<Relayed, upstream::UpstreamError>> + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    crate::boxed::pin(move || async move {
        let mut b = upstream::connect_tls(pool, tls, server, backend).await?;
        Ok(relay_from(client, &mut b, first, pool.server_timeout, timer).await)
    })
}

/// The result of a relay: bytes each way and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub a_to_b: u64,
    pub b_to_a: u64,
    /// Of those, the bytes moved with splice(2).
    pub spliced: u64,
    /// `Ok` (both sides closed), `ClientAbort` (error on `a`), `ServerAbort` (error
    /// on `b`) or `IdleTimeout`. The first error decides, even when the other
    /// direction then went on and finished.
    pub end: End,
}

/// One direction of a relay.
struct Half {
    /// Copy mode's buffer (empty once the direction splices).
    buf: RelayBuf,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    /// Its writer broke: what its reader still sends is read and dropped
    /// ([`Half::poll_discard`]), until that reader's EOF.
    sink: bool,
    amt: u64,
    /// Bytes written since the writer was last flushed: a TLS writer may hold
    /// what it took (rustls's buffer, when the socket would block) until then.
    need_flush: bool,
    /// Splice mode: the pipe the bytes go through, and how many it holds.
    pipe: Option<splice::Pipe>,
    held: usize,
    /// No pipe could be had (out of descriptors, or splice refused): copy.
    no_pipe: bool,
    /// Of `amt`, the bytes that went through the pipe.
    spliced: u64,
    /// The other direction read its reader to its EOF and is done (set before
    /// each step): once this one is at EOF too the session closes both
    /// sockets, so a plain socket's writer needs no shutdown first (its close
    /// sends the FIN: nothing is left unread in it). HAProxy and nginx make
    /// no such shutdown either; a TLS writer still sends its close_notify.
    close_follows: bool,
}

/// How a copy ended when it may hand over to splice.
enum Copied {
    /// EOF reached and passed on.
    Done,
    /// A read filled the whole buffer and the buffer is written out: bulk data,
    /// worth a pipe.
    Bulk,
}

enum Side {
    Reader,
    Writer,
}

impl Half {
    fn new() -> Half {
        Half::with(First::Buf(Filled::empty()))
    }

    /// A direction whose reader was read before: what was read is what it
    /// writes first.
    fn with(first: First) -> Half {
        let (buf, len) = first.into_buf().into_parts();
        Half {
            buf,
            pos: 0,
            cap: len,
            eof: false,
            done: false,
            sink: false,
            amt: 0,
            need_flush: false,
            pipe: None,
            held: 0,
            no_pipe: false,
            close_follows: false,
            spliced: 0,
        }
    }

    /// Moves bytes from `r` to `w` until `r` would block (or is done). Ready(Done)
    /// once `r` reached EOF and `w` was shut down (`plain`: a plain socket,
    /// not shut down when the close follows); with `to_bulk`, Ready(Bulk) when
    /// a read filled the buffer and it is written out.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        progressed: &mut bool,
        (to_bulk, plain): (bool, bool),
    ) -> Poll<Result<Copied, (Side, io::Error)>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.sink {
            ready!(self.poll_discard(cx, r));
            return Poll::Ready(Ok(Copied::Done));
        }
        loop {
            if to_bulk && self.pos == self.cap && self.cap == self.buf.len() && !self.eof {
                return Poll::Ready(Ok(Copied::Bulk));
            }
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // nothing more to write for now: what the writer took
                        // must go out, or a TLS peer waits for bytes rustls
                        // holds while this side waits for its answer (tokio's
                        // copy does the same)
                        if self.need_flush {
                            match Pin::new(&mut *w).poll_flush(cx) {
                                Poll::Ready(Ok(())) => self.need_flush = false,
                                Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Writer, e))),
                                Poll::Pending => {}
                            }
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Reader, e))),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            *progressed = true;
                        }
                    }
                }
            }
            while self.pos < self.cap {
                match Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.cap]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Writer, e))),
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((Side::Writer, io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        self.amt += n as u64;
                        self.need_flush = true;
                        *progressed = true;
                    }
                }
            }
            if self.eof {
                if plain && self.close_follows {
                    self.done = true;
                    return Poll::Ready(Ok(Copied::Done));
                }
                return match Pin::new(&mut *w).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    // The peer may already be gone; the direction is finished either way.
                    Poll::Ready(_) => {
                        self.done = true;
                        Poll::Ready(Ok(Copied::Done))
                    }
                };
            }
        }
    }

    /// A direction between two plain sockets: copies until it sees bulk data,
    /// then splices (zero-copy) for the rest of the session.
    fn poll_tcp(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut TcpStream,
        w: &mut TcpStream,
        progressed: &mut bool,
    ) -> Poll<Result<(), (Side, io::Error)>> {
        if self.sink {
            ready!(self.poll_discard(cx, r));
            return Poll::Ready(Ok(()));
        }
        loop {
            let Some(pipe) = &self.pipe else {
                match ready!(self.poll_copy(cx, r, w, progressed, (!self.no_pipe, true)))? {
                    Copied::Done => return Poll::Ready(Ok(())),
                    Copied::Bulk => match splice::Pipe::new() {
                        Ok(p) => {
                            self.pipe = Some(p);
                            // the buffer is written out; splice mode needs none
                            self.buf = RelayBuf::none();
                            (self.pos, self.cap) = (0, 0);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "no pipe to splice through; copying");
                            self.no_pipe = true;
                        }
                    },
                }
                continue;
            };
            if self.held == 0 && !self.eof {
                if let Err(e) = ready!(r.poll_read_ready(cx)) {
                    return Poll::Ready(Err((Side::Reader, e)));
                }
                // The pipe is empty, so WouldBlock is about `r`: try_io clears its
                // readiness and the next poll_read_ready waits for more.
                match r.try_io(Interest::READABLE, || pipe.fill_from(&*r)) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.held = n;
                        *progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if splice::refused(&e) => {
                        // splice is not supported here; nothing is held, so the
                        // direction goes on copying without losing a byte
                        tracing::debug!(error = %e, "splice refused; copying");
                        self.pipe = None;
                        self.no_pipe = true;
                        self.buf = RelayBuf::take();
                    }
                    Err(e) => return Poll::Ready(Err((Side::Reader, e))),
                }
                continue;
            }
            while self.held > 0 {
                if let Err(e) = ready!(w.poll_write_ready(cx)) {
                    return Poll::Ready(Err((Side::Writer, e)));
                }
                match w.try_io(Interest::WRITABLE, || pipe.drain_to(&*w, self.held)) {
                    Ok(0) => {
                        return Poll::Ready(Err((Side::Writer, io::ErrorKind::WriteZero.into())))
                    }
                    Ok(n) => {
                        self.held -= n;
                        self.amt += n as u64;
                        self.spliced += n as u64;
                        *progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err((Side::Writer, e))),
                }
            }
            if !self.eof {
                continue;
            }
            // all passed on, and `r` is at EOF: pass the EOF on (by the
            // close, when that follows)
            if self.close_follows {
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            return match Pin::new(&mut *w).poll_shutdown(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => {
                    self.done = true;
                    Poll::Ready(Ok(()))
                }
            };
        }
    }

    /// A direction whose writer broke: reads what `r` still sends and drops it,
    /// until `r`'s EOF (or error). `r` is the socket the other direction still
    /// writes to, and a socket closed with unread bytes is reset, which throws
    /// away whatever it had not sent yet: the server's last message, on its way
    /// to a client that keeps uploading. Kept drained, it closes with a FIN.
    /// The dropped bytes are neither counted nor progress (they keep no session
    /// alive).
    fn poll_discard<R>(&mut self, cx: &mut Context<'_>, r: &mut R) -> Poll<()>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        if self.eof {
            // its reader is at EOF already: nothing is left to keep drained
            self.done = true;
            return Poll::Ready(());
        }
        if self.buf.is_empty() {
            // It was splicing: what its pipe holds was for the writer that
            // broke, and reads need a buffer again (once, off the hot path).
            self.pipe = None;
            self.held = 0;
            self.buf = RelayBuf::take();
        }
        (self.pos, self.cap) = (0, 0);
        loop {
            let mut rb = ReadBuf::new(&mut self.buf);
            match ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)) {
                Ok(()) if !rb.filled().is_empty() => {}
                // EOF, or the reader broke too: nothing is left to keep drained
                _ => {
                    self.done = true;
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Copies `a` -> `b` and `b` -> `a` until both directions reach EOF or nothing moves
/// for `idle`. An error ends only its own direction (see `drive`).
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let timer = crate::clock::timer();
    tokio::pin!(timer);
    relay_from(a, b, None, idle, timer).await
}

/// [`relay`], sending `first` (bytes read from `a` before) to `b` first, with
/// `timer` as its idle timer (see [`drive`]).
fn relay_from<'a, A, B>(
    a: &'a mut A,
    b: &'a mut B,
    first: Option<First>,
    idle: Duration,
    timer: Pin<&'a mut Sleep>,
) -> impl Future<Output = Relayed> + 'a
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    drive(idle, first, timer, move |h, up, cx, progressed| {
        let copied = if up {
            h.poll_copy(cx, a, b, progressed, (false, false))
        } else {
            h.poll_copy(cx, b, a, progressed, (false, false))
        };
        copied.map_ok(|_| ())
    })
}

/// [`relay`] between two plain sockets: a direction that carries bulk data
/// switches to splice(2), so its bytes no longer pass through user space.
pub async fn relay_tcp(a: &mut TcpStream, b: &mut TcpStream, idle: Duration) -> Relayed {
    let timer = crate::clock::timer();
    tokio::pin!(timer);
    relay_tcp_from(a, b, None, idle, timer).await
}

/// [`relay_tcp`], sending `first` (bytes read from `a` before) to `b` first,
/// with `timer` as its idle timer (see [`drive`]).
fn relay_tcp_from<'a>(
    a: &'a mut TcpStream,
    b: &'a mut TcpStream,
    first: Option<First>,
    idle: Duration,
    timer: Pin<&'a mut Sleep>,
) -> impl Future<Output = Relayed> + 'a {
    drive(idle, first, timer, move |h, up, cx, progressed| {
        if up {
            h.poll_tcp(cx, a, b, progressed)
        } else {
            h.poll_tcp(cx, b, a, progressed)
        }
    })
}

/// The relay's loop: both directions (`step(half, a_to_b, ..)`), the idle timer.
///
/// An error ends only the direction it happened in ([`Halves::turn`]); the other
/// one goes on to its EOF, bounded by the idle timeout, so what a peer sent before
/// its socket broke is still delivered. Once only a drain is left, the session
/// waits at most [`LINGER`] for the peer the last bytes went to to close.
///
/// `sleep` is the idle timer, set here to `idle` from now: a timer of the
/// caller's (a TCP session's connect timer, still in the wheel at an earlier
/// deadline, is moved later at no cost there).
#[allow(clippy::manual_async_fn)] // (an `async fn` would keep its arguments twice)
fn drive<'a, F>(
    idle: Duration,
    first: Option<First>,
    mut sleep: Pin<&'a mut Sleep>,
    mut step: F,
) -> impl Future<Output = Relayed> + 'a
where
    F: FnMut(&mut Half, bool, &mut Context<'_>, &mut bool) -> Poll<Result<(), (Side, io::Error)>>
        + 'a,
{
    async move {
        let mut h = Halves {
            up: first.map_or_else(Half::new, Half::with),
            down: Half::new(),
            broke: None,
        };
        // when a lingering session ends at the latest
        let mut linger: Option<tokio::time::Instant> = None;
        let mut last = tokio::time::Instant::now();
        sleep.as_mut().reset(last + idle);
        // the waker the timer was last polled with: it holds it still
        let mut armed: Option<Waker> = None;
        let end = poll_fn(|cx| {
            let mut progressed = false;
            // a drain goes last: a fast uploader being drained would otherwise
            // spend the task's budget before the server's last words are read
            if !h.up.sink {
                h.turn(&mut step, true, cx, &mut progressed);
            }
            h.turn(&mut step, false, cx, &mut progressed);
            if h.up.sink {
                // (also when `down`'s reader broke just now: `up` only drains
                // from now on, and its reads are to be what wakes us)
                h.turn(&mut step, true, cx, &mut progressed);
            }
            let (up, down) = (&h.up, &h.down);
            if up.done && down.done {
                return Poll::Ready(h.broke.unwrap_or(End::Ok));
            }
            if linger.is_none() && (up.done || up.sink) && (down.done || down.sink) {
                // One direction passed everything on with its EOF; the other only
                // drains the socket that went to. Its peer closes once it has read
                // that, or is cut off (reset) after LINGER.
                let until = tokio::time::Instant::now() + LINGER;
                linger = Some(until);
                if until < sleep.deadline() {
                    sleep.as_mut().reset(until);
                    armed = None;
                }
            }
            if progressed {
                // The timer is moved lazily: only when it fires do we look at `last`.
                last = tokio::time::Instant::now();
                // Before its deadline it has not fired, and it holds this
                // task's waker: polling it would only register that again.
                if last < sleep.deadline()
                    && armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                {
                    return Poll::Pending;
                }
            }
            // (polled outside the coop budget: a turn that spent it must
            // still leave the timer holding this task's waker)
            while crate::clock::fired(sleep.as_mut(), cx) {
                let idle_end = last + idle;
                let deadline = linger.map_or(idle_end, |l| l.min(idle_end));
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(h.broke.unwrap_or(End::IdleTimeout));
                }
                sleep.as_mut().reset(deadline);
            }
            if !armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                armed = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        let spliced = h.up.spliced + h.down.spliced;
        if spliced > 0 {
            crate::metrics::TCP_SPLICED_BYTES.fetch_add(spliced, Ordering::Relaxed);
        }
        Relayed {
            a_to_b: h.up.amt,
            b_to_a: h.down.amt,
            spliced,
            end,
        }
    }
}

/// A direction that now only drains its reader (`up`: the client's socket).
/// Only the client's socket is kept drained, so that what was passed on to the
/// client (a server's last error) is not thrown away by a reset when it
/// closes; draining the server's socket for a client that is gone would keep
/// the server streaming into nothing (a killed client's long SELECT) and hold
/// its slot, so that direction just ends, as HAProxy and nginx end it.
fn sink(h: &mut Half, up: bool) {
    if up {
        h.sink = true;
    } else {
        h.done = true;
    }
}

/// Both directions of a relay, and how it broke.
struct Halves {
    /// client -> server (`a` -> `b`)
    up: Half,
    /// server -> client
    down: Half,
    /// The first error: how the session ended, whatever was delivered after it.
    broke: Option<End>,
}

impl Halves {
    /// Polls one direction (`up`, or `down`) until it would block or is done.
    /// An error ends only that direction, and sets what follows on both.
    fn turn<F>(&mut self, step: &mut F, up: bool, cx: &mut Context<'_>, progressed: &mut bool)
    where
        F: FnMut(
            &mut Half,
            bool,
            &mut Context<'_>,
            &mut bool,
        ) -> Poll<Result<(), (Side, io::Error)>>,
    {
        let (this, other) = if up {
            (&mut self.up, &mut self.down)
        } else {
            (&mut self.down, &mut self.up)
        };
        this.close_follows = other.done && other.eof;
        while !this.done {
            let Poll::Ready(Err((side, e))) = step(this, up, cx, progressed) else {
                return;
            };
            // `up` reads the client and writes to the server, `down` the reverse
            let end = match (&side, up) {
                (Side::Reader, true) | (Side::Writer, false) => End::ClientAbort,
                (Side::Reader, false) | (Side::Writer, true) => End::ServerAbort,
            };
            if matches!(side, Side::Reader) && e.kind() == io::ErrorKind::UnexpectedEof {
                // a TLS peer that closed (or half-closed) without close_notify:
                // its EOF, as HAProxy and nginx read it; the answer it waits
                // for still goes to it
                tracing::debug!(up, "a TLS peer closed without close_notify");
                this.eof = true;
                continue;
            }
            tracing::debug!(error = %e, up, end = ?end, "a relay direction broke");
            if self.broke.is_none() {
                self.broke = Some(end);
            }
            match side {
                // Nothing more comes from the reader, and its socket, which the
                // other direction writes to, is gone both ways. What was read is
                // passed on with an EOF (the next step shuts the writer down:
                // after a reset, whether a read says EOF or the error depends
                // only on which call took the socket's error first), and the
                // other direction only drains.
                Side::Reader => {
                    this.eof = true;
                    sink(other, !up);
                }
                // The writer's socket is gone, but its peer may have sent bytes
                // before it went (a server's last error) that wait unread in it:
                // the other direction reads them on to EOF and passes them on.
                // This one only drains.
                Side::Writer => sink(this, up),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let relay =
            tokio::spawn(
                async move { relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(5)).await },
            );
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // after the client's half-close the server can still answer
        server.write_all(b"world!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let r = relay.await.unwrap();
        assert_eq!((r.a_to_b, r.b_to_a, r.end), (5, 6, End::Ok));
    }

    /// A writer that, like tokio-rustls when its socket would block, takes
    /// what it is given and sends it on only when flushed.
    struct FlushToSend<W> {
        inner: W,
        held: Vec<u8>,
    }

    impl<W: AsyncRead + Unpin> AsyncRead for FlushToSend<W> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for FlushToSend<W> {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            while !this.held.is_empty() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
                this.held.drain(..n);
            }
            Pin::new(&mut this.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            ready!(self.as_mut().poll_flush(cx))?;
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// What a writer holds until flushed (rustls's buffer under a TLS
    /// stream) goes out once the reader has nothing more for now: a server
    /// that answers and then waits for the client is not left waiting on
    /// bytes the relay never sent.
    #[tokio::test]
    async fn what_a_writer_holds_is_flushed_when_the_reader_waits() {
        let (mut client, proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let mut proxy_a = FlushToSend {
            inner: proxy_a,
            held: Vec::new(),
        };
        tokio::spawn(
            async move { relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await },
        );
        // the server answers, and waits for the client (no close)
        server.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("the answer stayed in the relay's writer")
            .unwrap();
        assert_eq!(&got, b"hello");
    }

    /// Two connected sockets: (the side a test drives, the side the relay gets).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    #[tokio::test]
    async fn bulk_between_sockets_is_spliced_both_ways_with_half_close() {
        let (mut client, mut proxy_a) = pair().await;
        let (mut proxy_b, mut server) = pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        let up = pattern(3 << 20, 0x55);
        let down = pattern(5 << 20, 0xaa);
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let send_up = async {
            cw.write_all(&up).await.unwrap();
            cw.shutdown().await.unwrap();
        };
        let send_down = async {
            sw.write_all(&down).await.unwrap();
            sw.shutdown().await.unwrap();
        };
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let read_up = sr.read_to_end(&mut got_up);
        let read_down = cr.read_to_end(&mut got_down);
        let (_, _, a, b) = tokio::join!(send_up, send_down, read_up, read_down);
        a.unwrap();
        b.unwrap();
        assert!(got_up == up, "client -> server bytes changed");
        assert!(got_down == down, "server -> client bytes changed");
        let r = relay.await.unwrap();
        assert_eq!((r.a_to_b, r.b_to_a, r.end), (3 << 20, 5 << 20, End::Ok));
        // both directions went bulk early: nearly everything went through pipes
        assert!(r.spliced > 7 << 20, "only {} bytes spliced", r.spliced);
    }

    /// A session whose server answered and closed, and whose client then
    /// closed: the last EOF is passed on by the close that ends the session
    /// (no shutdown first), and each peer still reads all it was sent, then a
    /// FIN, not a reset; with the answer copied and with it spliced.
    #[tokio::test]
    async fn the_last_eof_is_passed_on_by_the_close() {
        for len in [100, 256 * 1024] {
            let (mut client, mut proxy_a) = pair().await;
            let (mut proxy_b, mut server) = pair().await;
            let relay = tokio::spawn(async move {
                relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
            });
            client.write_all(b"request").await.unwrap();
            let mut got = [0u8; 7];
            server.read_exact(&mut got).await.unwrap();
            let answer = pattern(len, 3);
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert!(
                back == answer,
                "{} of {len} bytes, or other bytes",
                back.len()
            );
            client.write_all(b", and goodbye").await.unwrap();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b", and goodbye");
            let r = relay.await.unwrap();
            assert_eq!((r.a_to_b, r.b_to_a, r.end), (20, len as u64, End::Ok));
            assert!(server.take_error().unwrap().is_none());
            assert!(client.take_error().unwrap().is_none());
        }
    }

    /// What was read, copied out while a session may wait in a queue, comes
    /// back whole into a relay buffer.
    #[test]
    fn what_was_read_is_held_without_its_buffer_and_given_back() {
        let held = First::Buf(Filled::copied(b"hello")).hold();
        assert!(
            matches!(&held, First::Held(b) if &b[..] == b"hello"),
            "{held:?}"
        );
        let (buf, len) = held.hold().into_buf().into_parts();
        assert_eq!(
            (&buf[..len], buf.len()),
            (&b"hello"[..], crate::relaybuf::RELAY_BUF)
        );
    }

    /// Bytes read from the client before the relay (its ClientHello, read to
    /// route by) reach the server first, once, and count as the client's; in
    /// both the spliced relay and the copying one.
    #[tokio::test]
    async fn what_was_read_before_the_relay_goes_first() {
        for splicing in [true, false] {
            let (mut client, mut proxy_a) = pair().await;
            let (mut proxy_b, mut server) = pair().await;
            let relay = tokio::spawn(async move {
                let first = Some(First::Buf(Filled::copied(b"hello")));
                let idle = Duration::from_secs(30);
                let timer = tokio::time::sleep(idle);
                tokio::pin!(timer);
                if splicing {
                    relay_tcp_from(&mut proxy_a, &mut proxy_b, first, idle, timer).await
                } else {
                    relay_from(&mut proxy_a, &mut proxy_b, first, idle, timer).await
                }
            });
            client.write_all(b", then more").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello, then more");
            server.shutdown().await.unwrap();
            let r = relay.await.unwrap();
            assert_eq!((r.a_to_b, r.b_to_a, r.end), (16, 0, End::Ok));
        }
    }

    #[tokio::test]
    async fn small_exchanges_are_copied_without_a_pipe() {
        let (mut client, mut proxy_a) = pair().await;
        let (mut proxy_b, mut server) = pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        let mut buf = [0u8; 5];
        for _ in 0..20 {
            client.write_all(b"query").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"query");
            server.write_all(b"reply").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"reply");
        }
        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
        let r = relay.await.unwrap();
        assert_eq!(
            (r.a_to_b, r.b_to_a, r.spliced, r.end),
            (100, 100, 0, End::Ok)
        );
    }

    #[tokio::test]
    async fn a_reset_while_splicing_ends_the_session_as_the_servers_fault() {
        let (mut client, mut proxy_a) = pair().await;
        let (mut proxy_b, server) = pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        // bulk upwards so the direction splices, then the server resets (linger 0)
        let data = pattern(1 << 20, 1);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&data).await;
            let _ = client.write_all(&data).await;
            // the client closes once it has sent it all: the relay, which
            // drains what it sends after the reset, ends then, not after LINGER
            drop(client);
        });
        let mut server = server;
        let mut first = vec![0u8; 256 << 10];
        server.read_exact(&mut first).await.unwrap();
        // linger 0: the close is a reset (a loopback close does not block)
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        let r = relay.await.unwrap();
        assert_eq!(r.end, End::ServerAbort);
        assert!(r.spliced > 0, "the direction never spliced");
        writer.await.unwrap();
    }

    /// What a server sends before it leaves: an error it answers the start of a
    /// long upload with (Postgres's FATAL during a COPY).
    fn last_words() -> Vec<u8> {
        let mut m = b"EFATAL: terminating connection due to administrator command".to_vec();
        m.resize(200, b'.');
        m
    }

    /// The server answers the start of a long upload with its last words and
    /// closes with the rest unread, which is a reset. The relay's next write of
    /// the upload fails; the last words, which came before the reset, must
    /// still reach the client whole, followed by an EOF. On this one thread the
    /// reset is in before the relay runs again, so the relay meets the failed
    /// write and the unread words at once: it must read the words all the same.
    async fn last_words_after_a_broken_upload(splicing: bool) {
        let (client, mut proxy_a) = pair().await;
        let (mut proxy_b, mut server) = pair().await;
        let relay = tokio::spawn(async move {
            let idle = Duration::from_secs(30);
            if splicing {
                relay_tcp(&mut proxy_a, &mut proxy_b, idle).await
            } else {
                relay(&mut proxy_a, &mut proxy_b, idle).await
            }
        });
        let (mut cr, mut cw) = client.into_split();
        // more than the sockets between the relay and the server hold, so the
        // relay is still writing when the server leaves
        let upload = tokio::spawn(async move {
            // refused, or drained by the relay after the reset: either way it ends
            let _ = cw.write_all(&pattern(16 << 20, 7)).await;
            // dropping `cw` shuts the client's side down, which ends the drain
        });
        let mut first = vec![0u8; 256 << 10];
        server.read_exact(&mut first).await.unwrap();
        server.write_all(&last_words()).await.unwrap();
        // more of the upload waits unread: the close is a reset
        server.peek(&mut [0u8; 1]).await.unwrap();
        drop(server);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), cr.read_to_end(&mut got))
            .await
            .expect("the client's side was left open")
            .expect("a reset instead of the server's last words and an EOF");
        assert_eq!(got, last_words());
        upload.await.unwrap();
        let r = relay.await.unwrap();
        assert_eq!((r.b_to_a, r.end), (200, End::ServerAbort));
    }

    #[tokio::test]
    async fn a_servers_last_words_reach_the_client_after_a_broken_upload() {
        last_words_after_a_broken_upload(false).await;
    }

    #[tokio::test]
    async fn a_servers_last_words_reach_the_client_after_a_broken_spliced_upload() {
        last_words_after_a_broken_upload(true).await;
    }

    /// The mirror image: the client sends its last bytes and resets while the
    /// server, silent, keeps the session open. The bytes reach the server with
    /// an EOF, and the session ends without waiting for the idle timeout.
    #[tokio::test]
    async fn a_clients_last_bytes_reach_a_silent_server_after_its_reset() {
        let (client, mut proxy_a) = pair().await;
        let (mut proxy_b, mut server) = pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        let mut client = client;
        client.write_all(b"bye").await.unwrap();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut got))
            .await
            .expect("the server's side was left open")
            .unwrap();
        assert_eq!(got, b"bye");
        // the server closes on the EOF, as servers do: the relay's drain ends
        drop(server);
        let r = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the relay waited for the idle timeout")
            .unwrap();
        assert_eq!((r.a_to_b, r.end), (3, End::ClientAbort));
    }

    /// A client gone in the middle of a long answer: the session ends at
    /// once, and the server's socket is closed rather than read into nothing
    /// for LINGER (a killed client's long SELECT goes on streaming otherwise).
    #[tokio::test(start_paused = true)]
    async fn a_client_gone_mid_answer_ends_the_session_at_once() {
        let (client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let t0 = tokio::time::Instant::now();
        let relay = tokio::spawn(async move {
            relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        // the server streams until its socket is closed (paced, so that the
        // paused clock can move while it does)
        let streaming = tokio::spawn(async move {
            let chunk = [b'r'; 512];
            while server.write_all(&chunk).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut client = client;
        let mut first = [0u8; 512];
        client.read_exact(&mut first).await.unwrap();
        drop(client);
        let r = relay.await.unwrap();
        assert_eq!(r.end, End::ClientAbort);
        assert!(t0.elapsed() < LINGER, "{:?}", t0.elapsed());
        // the server learns at once too: its writes fail
        streaming.await.unwrap();
        assert!(t0.elapsed() < LINGER, "{:?}", t0.elapsed());
    }

    /// A client that keeps uploading to a server that has gone: what the
    /// server said is delivered, and the session ends LINGER after that,
    /// not at the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_after_linger() {
        let (client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let t0 = tokio::time::Instant::now();
        let relay = tokio::spawn(async move {
            relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await
        });
        server.write_all(b"bye").await.unwrap();
        drop(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        // (paced, so that the paused clock can move: a peer always ready
        // would keep the runtime busy)
        let uploading = tokio::spawn(async move {
            while cw.write_all(&[b'u'; 256]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut got = Vec::new();
        let _ = cr.read_to_end(&mut got).await;
        assert_eq!(got, b"bye");
        let r = relay.await.unwrap();
        assert_eq!(r.end, End::ServerAbort);
        let took = t0.elapsed();
        assert!(
            (LINGER..Duration::from_secs(30)).contains(&took),
            "{took:?}"
        );
        uploading.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_without_traffic() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let t0 = tokio::time::Instant::now();
        let relay = tokio::spawn(async move {
            relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(10)).await
        });
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        let r = relay.await.unwrap();
        assert_eq!(r.end, End::IdleTimeout);
        // 3 writes 6 s apart kept it alive; it died 10 s after the last one
        assert_eq!(t0.elapsed(), Duration::from_secs(28));
    }

    /// The relay polls its idle timer only when it may have fired: a poll that
    /// moved bytes before the deadline leaves it alone. One that moves bytes
    /// at the deadline, when the timer fired, must still poll it (it is set
    /// again from that traffic), or the timer's wake-up is lost and an idle
    /// session is never ended.
    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_with_traffic_is_set_again_not_lost() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let idle = Duration::from_secs(10);
        let moving = Arc::new(AtomicBool::new(false));
        let m = Arc::clone(&moving);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        let relay = drive(idle, None, timer, move |_, _, _, progressed| {
            *progressed |= m.load(Ordering::SeqCst);
            Poll::Pending
        });
        tokio::pin!(relay);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let t0 = tokio::time::Instant::now();
        assert!(relay.as_mut().poll(&mut cx).is_pending());
        // traffic before the deadline: the timer is left as it is
        moving.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(relay.as_mut().poll(&mut cx).is_pending());
        // the deadline (the first traffic's, 10 s): the timer fires
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the timer did not fire");
        // bytes moved in the poll it woke: idle from now
        assert!(relay.as_mut().poll(&mut cx).is_pending());
        moving.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            2,
            "the timer was not set again"
        );
        match relay.as_mut().poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.end, End::IdleTimeout),
            Poll::Pending => panic!("not ended after 10 s without traffic"),
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(20));
    }

    /// A turn that moves bulk spends the task's coop budget; the idle timer
    /// is polled outside it, so that it holds the task's waker all the same.
    /// Polled within it, a first turn that spent the budget left the timer
    /// without a waker, every later turn moved bytes and left the timer
    /// alone, and the session outlived its idle timeout for good.
    #[tokio::test(start_paused = true)]
    async fn a_turn_that_spends_the_budget_still_arms_the_idle_timer() {
        // (sizes whose last turn ends waiting for the socket, not on the
        // budget, which would make the task poll itself once more)
        for big in [(1 << 20) + 1000, (2 << 20) + 5000, (3 << 20) + 12345] {
            a_bulk_session_ends_at_the_idle_timeout(big).await;
        }
    }

    async fn a_bulk_session_ends_at_the_idle_timeout(big: usize) {
        let (mut client, mut proxy_a) = tokio::io::duplex(big);
        let (mut proxy_b, mut server) = tokio::io::duplex(big);
        // more than a budget's worth of reads and writes in the first turn
        client.write_all(&vec![7u8; big]).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let relay = tokio::spawn(async move {
            relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(10)).await
        });
        let mut got = vec![0u8; big];
        server.read_exact(&mut got).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(60), relay)
            .await
            .expect("the idle timeout never fired")
            .unwrap();
        assert_eq!(r.end, End::IdleTimeout);
        assert_eq!(r.a_to_b, big as u64);
        assert_eq!(t0.elapsed(), Duration::from_secs(10), "{big} bytes");
        drop(client);
    }
}
