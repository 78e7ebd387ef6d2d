//! What the HTTP/1.1 fast path needs of a client connection: a plain socket or
//! TLS over one (the accept-time layers hand either). The plain socket keeps its
//! readiness tricks (wait for readable with no buffer held, write without a
//! timer); TLS, whose decrypted bytes may already wait inside rustls, reads and
//! writes through the ordinary async traits.

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
    fn into_plain(self) -> Result<TcpStream, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
    /// Ready when a read may find bytes (or the end). A poll, not a future: the
    /// waker goes into the socket's own slot, so an idle connection's future
    /// holds no waiter entry for it.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes what it can of `data` at once, without waiting; Ok(n) with n bytes
    /// taken. WouldBlock counts as 0.
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize>;
    /// Whether everything taken so far is on the wire (TLS may hold records).
    fn flushed(&self) -> bool;
    /// Writes all of `data` and whatever is still held, waiting as needed.
    fn send_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
    /// The socket underneath, to watch for the client closing.
    fn socket(&self) -> &TcpStream;
    /// Before the connection is dropped: TLS says close_notify (a client that
    /// reads to the end must not see a truncation); a plain socket needs nothing.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

impl ClientIo for TcpStream {
    const PARKABLE: bool = true;
    fn into_plain(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.try_write(data) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
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
    fn socket(&self) -> &TcpStream {
        self
    }
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

impl ClientIo for TlsStream<TcpStream> {
    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // rustls may hold decrypted bytes the socket's readiness knows nothing of
        Poll::Ready(Ok(()))
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
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
    async fn close(&mut self) {
        use tokio::io::AsyncWriteExt;
        // bounded: a client that reads nothing does not hold the task
        let _ = tokio::time::timeout(CLOSE_WITHIN, self.shutdown()).await;
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
    client_timeout: Duration,
    /// Armed when a write has to wait; dropped when one makes progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
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
            client_timeout,
            stalled: None,
        }
    }

    /// After a write attempt: a stall longer than client_timeout becomes an error.
    fn check_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        if self.ctx.tunnelled.load(Ordering::Relaxed) {
            return r;
        }
        let limit = self.client_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if std::future::Future::poll(stalled.as_mut(), cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for client_timeout",
            )));
        }
        r
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
