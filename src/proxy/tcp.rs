//! TCP mode: pick a server, connect within `connect_timeout`, then relay bytes both
//! ways until both directions have closed. A direction that reaches EOF shuts down
//! the write side of the other socket (half-close) while the other direction goes on.

use crate::accesslog::{End, Entry};
use crate::limits::ListenerShared;
use crate::plane::Plane;
use crate::proxy::lifecycle::{self, Lifecycle};
use crate::upstream;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const BUF_SIZE: usize = 32 * 1024;

/// Who a tcp session is for, as the accept-time layers found out.
#[derive(Debug)]
pub struct Session {
    /// The client (its socket's peer, or the one its PROXY header names).
    pub peer: SocketAddr,
    /// The local address the client reached (for the PROXY header we send).
    pub local: SocketAddr,
    /// The server name of its TLS ClientHello (passthrough routing).
    pub sni: Option<String>,
    /// Its TLS, when this listener terminates it.
    pub tls: Option<crate::tls::TlsInfo>,
}

/// Handles one TCP session accepted on `bound` for `listener`.
pub async fn serve<S>(
    mut client: S,
    session: Session,
    plane: Arc<Plane>,
    bound: SocketAddr,
    listener: &Arc<ListenerShared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let peer = session.peer;
    let Some(pool) = lifecycle::route(&plane, listener, bound, session.sni.as_deref(), "") else {
        return;
    };
    let listener_name = &listener.name;
    let log = |server: Option<&str>, connect: Option<Duration>, a: u64, b: u64, end: End| {
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
            total: start.elapsed(),
            end,
            tls: session.tls.as_ref(),
            grpc_status: None,
        })
    };
    // a tcp pool hashes on the client's address (the config allows no other key)
    let key = lifecycle::hash_key(&pool, peer.ip(), "", |_| None);
    // Pick and connect; a failed connect is retried on another server before any
    // byte is relayed.
    let mut lc = Lifecycle::new(Arc::clone(&pool), key, crate::rules::Priority::Normal);
    let (guard, mut backend, connect) = loop {
        let mut guard = match lc.acquire().await {
            Ok(g) => g,
            Err(g) => {
                g.err.count_pool(&pool);
                log(g.server(&pool).map(|s| &*s.id), None, 0, 0, g.err.end());
                return;
            }
        };
        let server = &pool.servers[guard.index()];
        let connect_start = Instant::now();
        match upstream::connect_tcp(server.addr, pool.connect_timeout).await {
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
                    g.err.count_pool(&pool);
                    log(Some(&server.id), None, 0, 0, g.err.end());
                    return;
                }
            }
        }
    };
    let server = guard.server();
    if let Some(v) = pool.send_proxy {
        // who the client is, for a server behind us that reads the PROXY protocol
        let header = crate::proxy_protocol::header(v, peer, session.local, session.tls.as_ref());
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut backend, &header).await {
            tracing::debug!(pool = %pool.name, error = %e, "cannot send the PROXY header");
            let why = format!("cannot send the PROXY header: {e}");
            server.state.traffic.failed(false, &why);
            log(Some(&server.id), Some(connect), 0, 0, End::ServerAbort);
            return;
        }
    }
    let out = match &pool.tls {
        None => relay(&mut client, &mut backend, pool.server_timeout).await,
        Some(tls) => match upstream::connect_tls(&pool, tls, server, backend).await {
            Ok(mut b) => relay(&mut client, &mut b, pool.server_timeout).await,
            Err(e) => {
                server.state.traffic.failed(true, &e);
                let end = match e {
                    upstream::UpstreamError::ConnectTimeout { .. } => End::ConnectTimeout,
                    _ => End::ConnectError,
                };
                log(Some(&server.id), Some(connect), 0, 0, end);
                return;
            }
        },
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

/// The result of a relay: bytes each way and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub a_to_b: u64,
    pub b_to_a: u64,
    /// `Ok` (both sides closed), `ClientAbort` (error on `a`), `ServerAbort` (error
    /// on `b`) or `IdleTimeout`.
    pub end: End,
}

/// One direction of a relay.
struct Half {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    amt: u64,
}

enum Side {
    Reader,
    Writer,
}

impl Half {
    fn new() -> Half {
        Half {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            amt: 0,
        }
    }

    /// Moves bytes from `r` to `w` until `r` would block (or is done). Ready(Ok) once
    /// `r` reached EOF and `w` was shut down.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        progressed: &mut bool,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
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
                        *progressed = true;
                    }
                }
            }
            if self.eof {
                return match Pin::new(&mut *w).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    // The peer may already be gone; the direction is finished either way.
                    Poll::Ready(_) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                };
            }
        }
    }
}

/// Copies `a` -> `b` and `b` -> `a` until both directions reach EOF, an error occurs,
/// or nothing moves for `idle`.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Half::new();
    let mut down = Half::new();
    let mut last = tokio::time::Instant::now();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let end = poll_fn(|cx| {
        let mut progressed = false;
        if !up.done {
            if let Poll::Ready(Err((side, e))) = up.poll_copy(cx, a, b, &mut progressed) {
                tracing::debug!(error = %e, "relay a->b ended");
                return Poll::Ready(match side {
                    Side::Reader => End::ClientAbort,
                    Side::Writer => End::ServerAbort,
                });
            }
        }
        if !down.done {
            if let Poll::Ready(Err((side, e))) = down.poll_copy(cx, b, a, &mut progressed) {
                tracing::debug!(error = %e, "relay b->a ended");
                return Poll::Ready(match side {
                    Side::Reader => End::ServerAbort,
                    Side::Writer => End::ClientAbort,
                });
            }
        }
        if up.done && down.done {
            return Poll::Ready(End::Ok);
        }
        if progressed {
            // The timer is moved lazily: only when it fires do we look at `last`.
            last = tokio::time::Instant::now();
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = last + idle;
            if deadline <= tokio::time::Instant::now() {
                return Poll::Ready(End::IdleTimeout);
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    Relayed {
        a_to_b: up.amt,
        b_to_a: down.amt,
        end,
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
}
