//! What the HTTP/1.1 fast path needs of a client connection: a plain socket or
//! TLS over one (the accept-time layers hand either). The plain socket keeps its
//! readiness tricks (wait for readable with no buffer held, write without a
//! timer); TLS, whose decrypted bytes may already wait inside rustls, reads and
//! writes through the ordinary async traits.
//!
//! A plain socket (`ClientSocket`) is registered with tokio's reactor only once
//! it has to wait, as HAProxy does: a new connection whose request came with it
//! is read at once, and if it closes after its response (`Connection: close`)
//! it never is, which saves an `epoll_ctl` to add it and another to remove it.

use super::conn::ConnCtx;
use crate::h1::PooledBuf;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Whether an idle connection of this kind can be parked (`park`): a plain
    /// socket. TLS keeps its state in its task.
    const PARKABLE: bool = false;
    /// The plain socket, for parking; Err gives self back.
    fn into_plain(self) -> Result<ClientSocket, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
    /// Ready when a read may find bytes (or the end). A poll, not a future: the
    /// waker goes into the socket's own slot, so an idle connection's future
    /// holds no waiter entry for it.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes what it can of `data` at once, without waiting; Ok(n) with n bytes
    /// taken. WouldBlock counts as 0.
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize>;
    /// As `write_now`, for the connection's last bytes: when all of them are
    /// taken, the connection's end (FIN) goes out in the same segment instead
    /// of in one of its own when the socket is closed. TLS writes as usual.
    fn write_last(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_now(data)
    }
    /// As `write_now`, for bytes that more of the same answer follows at once
    /// (the framing says how many are left): a plain socket may hold them back
    /// (MSG_MORE) to go out with those, in full segments, instead of in a short
    /// one of their own that the client acknowledges. The next write without
    /// it sends them; if none comes, the kernel does within its retransmission
    /// timeout (200 ms or more). TLS writes as usual.
    fn write_more(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_now(data)
    }
    /// `write_now`, `write_more` or `write_last`, as `how` says.
    fn write(&mut self, data: &[u8], how: Write) -> io::Result<usize> {
        match how {
            Write::Now => self.write_now(data),
            Write::More => self.write_more(data),
            Write::Last => self.write_last(data),
        }
    }
    /// Whether `write_two` writes both its parts in one system call, where
    /// they lie (a plain socket: one sendmsg with two iovecs). Where it does
    /// not (TLS, which copies into its records anyway), a caller whose parts
    /// fit one buffer joins them, so that they go out in one record.
    const GATHERS: bool = false;
    /// As `write`, for two parts that go out one after the other (a response
    /// head and the body bytes that came with it); Ok(n) with the first n
    /// bytes of the two taken. Here: the first part as if more followed, then,
    /// if it was all taken, the second.
    fn write_two(&mut self, parts: [&[u8]; 2], how: Write) -> io::Result<usize> {
        let first = self.write(parts[0], Write::More)?;
        if first < parts[0].len() {
            return Ok(first);
        }
        Ok(first + self.write(parts[1], how)?)
    }
    /// Whether everything taken so far is on the wire (TLS may hold records).
    fn flushed(&self) -> bool;
    /// Writes all of `data` and whatever is still held, waiting as needed.
    fn send_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
    /// Whether the socket underneath is registered with the reactor (watching
    /// it for the client closing costs nothing more then).
    fn is_registered(&self) -> bool {
        true
    }
    /// The socket underneath, registered with the reactor, to watch for the
    /// client closing.
    fn socket(&mut self) -> io::Result<&TcpStream>;
    /// The plain socket underneath, registered with the reactor, for bytes
    /// spliced to it (`splice::body`); None when its bytes must go through a
    /// layer of the proxy's own (TLS).
    fn plain_socket(&mut self) -> Option<io::Result<&TcpStream>> {
        None
    }
    /// The address the client reached.
    fn local_addr(&self) -> io::Result<std::net::SocketAddr>;
    /// Before the connection is dropped: TLS says close_notify (a client that
    /// reads to the end must not see a truncation); a plain socket needs nothing.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// The answer being sent broke off (its server failed): the connection
    /// ends without TLS's close_notify, so that a client reading an answer
    /// whose end is the connection's end sees it cut short (RFC 9112 9.8),
    /// not whole. A plain socket can say no more than its FIN.
    fn cut(&mut self) {}
    /// A request is partly in and more of it is awaited, or the connection
    /// goes to hyper: acknowledge what came at once, and what comes next,
    /// instead of after the delayed-ACK timer. Only plain HTTP listeners turn
    /// quick acknowledgements off (`listener`, `quickack`), so only a plain
    /// socket has anything to undo.
    fn ack_now(&self) {}
}

impl ClientIo for ClientSocket {
    const PARKABLE: bool = true;
    const GATHERS: bool = true;
    fn write_two(&mut self, parts: [&[u8]; 2], how: Write) -> io::Result<usize> {
        let flags = match how {
            Write::Now => libc::MSG_NOSIGNAL,
            Write::More | Write::Last => libc::MSG_MORE | libc::MSG_NOSIGNAL,
        };
        let sock = self.sock_ref()?;
        let iov = [io::IoSlice::new(parts[0]), io::IoSlice::new(parts[1])];
        let n = match retry(|| sock.send_vectored_with_flags(&iov, flags)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if how == Write::Last && n == parts[0].len() + parts[1].len() {
            if let Err(e) = sock.shutdown(std::net::Shutdown::Write) {
                // closing the socket sends what is held, and the FIN
                tracing::trace!(error = %e, "shutdown after the last write");
            }
        }
        Ok(n)
    }
    fn ack_now(&self) {
        let r = match self.sock_ref() {
            Ok(s) => s.set_tcp_quickack(true),
            // closed: nothing to acknowledge
            Err(_) => Ok(()),
        };
        if let Err(e) = r {
            tracing::trace!(error = %e, "TCP_QUICKACK not set");
        }
    }
    fn into_plain(self) -> Result<ClientSocket, Self> {
        Ok(self)
    }
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The first wait of a connection not registered yet: its request has
        // likely come with it, so it is read at once (a first read that finds
        // nothing says WouldBlock: `poll_read`). A later wait registers it
        // first, so that no buffer is held while it waits.
        if let Sock::Raw(_, true) = self.sock {
            return Poll::Ready(Ok(()));
        }
        match self.register() {
            Ok(s) => s.poll_read_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        let r = match &mut self.sock {
            Sock::Reg(s) => s.try_write(data),
            Sock::Raw(s, _) => retry(|| io::Write::write(&mut &*s, data)),
            Sock::Gone => return Err(gone()),
        };
        match r {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn write_more(&mut self, data: &[u8]) -> io::Result<usize> {
        self.send_more(data)
    }
    fn write_last(&mut self, data: &[u8]) -> io::Result<usize> {
        // held back (MSG_MORE) until the shutdown sends them with the FIN;
        // whatever is not taken here goes out through `send_all`, which
        // pushes it all
        let n = self.send_more(data)?;
        if n == data.len() {
            if let Err(e) = self.sock_ref()?.shutdown(std::net::Shutdown::Write) {
                // closing the socket sends what is held, and the FIN
                tracing::trace!(error = %e, "shutdown after the last write");
            }
        }
        Ok(n)
    }
    fn flushed(&self) -> bool {
        true
    }
    fn send_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        tokio::io::AsyncWriteExt::write_all(self, data)
    }
    fn is_registered(&self) -> bool {
        matches!(self.sock, Sock::Reg(_))
    }
    fn socket(&mut self) -> io::Result<&TcpStream> {
        self.register().map(|s| &*s)
    }
    fn plain_socket(&mut self) -> Option<io::Result<&TcpStream>> {
        Some(self.socket())
    }
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.sock {
            Sock::Reg(s) => s.local_addr(),
            Sock::Raw(s, _) => s.local_addr(),
            Sock::Gone => Err(gone()),
        }
    }
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// How a write to the client ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// sent at once
    Now,
    /// more of the same answer follows at once (`ClientIo::write_more`)
    More,
    /// the connection's last bytes (`ClientIo::write_last`)
    Last,
}

/// A plain client socket, registered with tokio's reactor only once it has to
/// wait: a read or a write that would block, or a watch for the client
/// closing (`ClientIo::socket`).
pub struct ClientSocket {
    sock: Sock,
}

enum Sock {
    /// Not registered (non-blocking); whether it has not been read yet (its
    /// first wait reads at once: `poll_readable`; a first read that finds
    /// nothing fails with WouldBlock instead of waiting: `poll_read`). Kept in the variant, not beside
    /// it, so that a `ClientSocket` is no larger than a tokio `TcpStream` (the
    /// fast path's future holds one for every connection).
    Raw(std::net::TcpStream, bool),
    Reg(TcpStream),
    /// Registering failed; the socket is closed.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the client socket could not be registered",
    )
}

/// `op` again while it is interrupted by a signal.
fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl ClientSocket {
    /// A socket just accepted (non-blocking, not registered).
    pub fn new(sock: std::net::TcpStream) -> ClientSocket {
        ClientSocket {
            sock: Sock::Raw(sock, true),
        }
    }

    /// A socket already registered (one an accept-time layer has read from).
    pub fn from_registered(sock: TcpStream) -> ClientSocket {
        ClientSocket {
            sock: Sock::Reg(sock),
        }
    }

    /// The socket out of the reactor, for parking.
    /// The socket, registered or not, for calls tokio does not make.
    fn sock_ref(&self) -> io::Result<socket2::SockRef<'_>> {
        match &self.sock {
            Sock::Reg(s) => Ok(socket2::SockRef::from(s)),
            Sock::Raw(s, _) => Ok(socket2::SockRef::from(s)),
            Sock::Gone => Err(gone()),
        }
    }

    /// Writes what the socket takes of `data` at once, with MSG_MORE (the
    /// kernel holds a short segment back for the next write, `write_more`);
    /// WouldBlock counts as 0. MSG_NOSIGNAL as std's own writes: a client that
    /// has reset is an error here, never a SIGPIPE.
    fn send_more(&self, data: &[u8]) -> io::Result<usize> {
        let sock = self.sock_ref()?;
        match retry(|| sock.send_with_flags(data, libc::MSG_MORE | libc::MSG_NOSIGNAL)) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self.sock {
            Sock::Raw(s, _) => Ok(s),
            Sock::Reg(s) => s.into_std(),
            Sock::Gone => Err(gone()),
        }
    }

    /// Registers the socket with the reactor if it is not yet.
    fn register(&mut self) -> io::Result<&mut TcpStream> {
        if let Sock::Raw(..) = self.sock {
            if let Sock::Raw(s, _) = std::mem::replace(&mut self.sock, Sock::Gone) {
                // on failure the socket is dropped (closed) and stays Gone
                self.sock = Sock::Reg(TcpStream::from_std(s)?);
            }
        }
        match &mut self.sock {
            Sock::Reg(s) => Ok(s),
            _ => Err(gone()),
        }
    }
}

impl ClientSocket {
    /// A write: straight to the socket while it is not registered; through
    /// the reactor once it is, or once the socket is full.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        raw: impl Fn(&std::net::TcpStream) -> io::Result<usize>,
        reg: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let Sock::Raw(s, _) = &self.sock {
            match retry(|| raw(s)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
        match self.register() {
            Ok(s) => reg(Pin::new(s), cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Sock::Raw(s, fresh) = &mut this.sock {
            let first = std::mem::take(fresh);
            let sock = socket2::SockRef::from(&*s);
            // SAFETY: `unfilled_mut` must not be used to de-initialize bytes;
            // recv(2) only writes to the buffer, and only its first n bytes,
            // which are then marked initialized and filled (tests/lazy_socket
            // checks the bytes read this way, and the fast path's tests
            // every request).
            match retry(|| sock.recv(unsafe { buf.unfilled_mut() })) {
                Ok(n) => {
                    // SAFETY: recv(2) initialized the first n bytes of
                    // `unfilled_mut()` (see above)
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // a new connection's first read found nothing: said as
                // WouldBlock, so that the fast path lets its buffer go before
                // it waits (a connection that sends nothing holds none)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && first => {
                    return Poll::Ready(Err(e));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        match this.register() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(
            cx,
            |mut s| io::Write::write(&mut s, data),
            |s, cx| s.poll_write(cx, data),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(
            cx,
            |mut s| io::Write::write_vectored(&mut s, bufs),
            |s, cx| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().sock {
            Sock::Reg(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Raw(s, _) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Sock::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A TLS client, boxed: the connection's future holds a pointer, not the
/// rustls session (1,216 bytes, which it took room for twice).
impl ClientIo for Box<TlsStream<TcpStream>> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // rustls may hold decrypted bytes (or the client's close_notify) the
        // socket's readiness knows nothing of: it wants no read then. Else
        // the socket's readiness: an idle TLS connection waits without a
        // buffer, as a plain one does (it held 16 KiB while it waited).
        let (tcp, tls) = self.get_ref();
        if !tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        tcp.poll_read_ready(cx)
    }
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut n = 0;
        while n < data.len() {
            match Pin::new(&mut *self).poll_write(&mut cx, &data[n..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(k)) => n += k,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        match Pin::new(&mut *self).poll_flush(&mut cx) {
            Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }
    fn flushed(&self) -> bool {
        !self.get_ref().1.wants_write()
    }
    async fn send_all<'a>(&'a mut self, data: &'a [u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.write_all(data).await?;
        self.flush().await
    }
    fn socket(&mut self) -> io::Result<&TcpStream> {
        Ok(self.get_ref().0)
    }
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.get_ref().0.local_addr()
    }
    async fn close(&mut self) {
        use tokio::io::AsyncWriteExt;
        // bounded: a client that reads nothing does not hold the task
        let _ = tokio::time::timeout(CLOSE_WITHIN, self.shutdown()).await;
    }
    fn cut(&mut self) {
        // the socket's write side ends here: the close_notify that `close`
        // then tries cannot follow what was sent
        let _ = socket2::SockRef::from(self.get_ref().0).shutdown(std::net::Shutdown::Write);
    }
}

/// How long a closing TLS connection may take to get its close_notify out.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A client socket whose first bytes were already read by the fast path: reads
/// return those first, then go to the socket. A write that makes no progress for
/// `client_timeout` fails (hyper then closes the connection), except once the
/// connection is a tunnel, whose own idle timeout governs.
pub struct Prefixed<S> {
    pre: Option<PooledBuf>,
    pos: usize,
    io: S,
    ctx: Arc<ConnCtx>,
    stall: WriteStall,
}

/// A limit on how long writes may make no progress: armed when one has to
/// wait, dropped when one goes through.
pub struct WriteStall {
    limit: Duration,
    what: &'static str,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteStall {
    /// `what`: the error's text once `limit` passes.
    pub fn new(limit: Duration, what: &'static str) -> WriteStall {
        WriteStall {
            limit,
            what,
            stalled: None,
        }
    }

    /// After a write attempt: a stall longer than the limit becomes an error.
    pub fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if std::future::Future::poll(stalled.as_mut(), cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, self.what)));
        }
        r
    }
}

impl<S: ClientIo> Prefixed<S> {
    /// `pre`: the bytes already read (None: nothing).
    pub fn new(
        pre: Option<PooledBuf>,
        io: S,
        ctx: Arc<ConnCtx>,
        client_timeout: Duration,
    ) -> Prefixed<S> {
        Prefixed {
            pre,
            pos: 0,
            io,
            ctx,
            stall: WriteStall::new(client_timeout, "the client read nothing for client_timeout"),
        }
    }

    /// After a write attempt: a stall longer than client_timeout becomes an
    /// error, unless the connection is a tunnel now.
    fn check_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_pending() && self.ctx.tunnelled.load(Ordering::Relaxed) {
            return r;
        }
        self.stall.check(cx, r)
    }
}

impl<S: ClientIo> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(pre) = &this.pre {
            let rest = &pre[this.pos..];
            if !rest.is_empty() {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
        }
        this.pre = None;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: ClientIo> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check_stall(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check_stall(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS connection over loopback: rampart's side (a `TlsStream` as the
    /// listener makes it) and a rustls client that trusts its self-signed
    /// certificate (`tls::cert::self_signed`).
    async fn tls_pair() -> (
        Box<TlsStream<TcpStream>>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let dir = std::env::temp_dir().join(format!("rampart-io-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = crate::tls::cert::self_signed(&dir, "io.test").unwrap();
        let cert = CertificateDer::from_pem_file(c).unwrap();
        let key = PrivateKeyDer::from_pem_file(k).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let provider = crate::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("io.test").unwrap(), tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = l.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server))
                .accept(tcp)
                .await
                .unwrap()
        };
        let (c, s) = tokio::join!(connect, accept);
        (Box::new(s), c)
    }

    /// `poll_readable` says a read may find bytes, within 10 s.
    async fn readable(s: &mut Box<TlsStream<TcpStream>>) {
        let readable = std::future::poll_fn(|cx| s.poll_readable(cx));
        tokio::time::timeout(Duration::from_secs(10), readable)
            .await
            .expect("never readable")
            .unwrap();
    }

    /// `poll_readable` says no read would find bytes now (the socket's
    /// readiness was cleared by the last read, a short one, as tokio does).
    fn waits(s: &mut Box<TlsStream<TcpStream>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        s.poll_readable(&mut cx).is_pending()
    }

    /// An idle TLS connection waits for its socket, holding no buffer (the
    /// fast path takes one only once this says a read may find bytes): it
    /// used to say so at once and read with 16 KiB held while it waited.
    /// Bytes rustls already decrypted and the client's close_notify wake it
    /// as bytes on the socket do.
    #[tokio::test]
    async fn an_idle_tls_connection_waits_for_its_socket() {
        let (mut s, mut c) = tls_pair().await;
        assert!(waits(&mut s), "nothing was sent: no read may find bytes");
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        readable(&mut s).await;
        // part of it read: rustls holds the rest, which the socket's
        // readiness knows nothing of
        let mut part = [0u8; 4];
        s.read_exact(&mut part).await.unwrap();
        assert_eq!(&part, b"GET ");
        assert!(!waits(&mut s), "rustls holds bytes: a read finds them");
        let mut rest = [0u8; 14];
        s.read_exact(&mut rest).await.unwrap();
        assert!(waits(&mut s), "all read: no read may find bytes");
        // the client's close: its close_notify, then the end
        c.shutdown().await.unwrap();
        readable(&mut s).await;
        assert_eq!(s.read(&mut part).await.unwrap(), 0);
    }
}
