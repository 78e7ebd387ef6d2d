//! The HTTP/1.1 fast path's side of a backend exchange: the request head written
//! to a pooled plain socket, the response head read back as bytes.

use crate::h1::{self, PooledBuf};
use crate::pool::{Pool, Server};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Sends a complete, bodiless request (`req`, already in wire form) to `server` on a
/// pooled plain connection or a new one, and reads the response head.
///
/// A pooled connection that the server closed meanwhile (the keep-alive race) is
/// replaced by a new one: at once when the request could not be written, and when
/// the server closed without answering if the request may be replayed.
pub async fn send_raw(
    pool: &Pool,
    server: &Server,
    req: &[u8],
    replayable: bool,
) -> Result<RawExchange, UpstreamError> {
    if let Some(mut stream) = take_idle_raw(&server.state) {
        match exchange_raw(&mut stream, server.addr, req, pool.server_timeout).await {
            Ok(buf) => {
                return Ok(RawExchange {
                    stream,
                    buf,
                    connect_time: Duration::ZERO,
                })
            }
            Err(RawFailure::Unsent) => {}
            Err(RawFailure::NoAnswer(_)) if replayable => {}
            Err(RawFailure::NoAnswer(e) | RawFailure::Failed(e)) => return Err(e),
        }
    }
    let started = Instant::now();
    let mut stream = connect_tcp(server.addr, pool.connect_timeout).await?;
    let connect_time = started.elapsed();
    pool.shared
        .histograms
        .connect_time
        .observe(connect_time.as_secs_f64());
    match exchange_raw(&mut stream, server.addr, req, pool.server_timeout).await {
        Ok(buf) => Ok(RawExchange {
            stream,
            buf,
            connect_time,
        }),
        Err(RawFailure::Unsent) => Err(UpstreamError::ClosedBeforeSend { addr: server.addr }),
        Err(RawFailure::NoAnswer(e) | RawFailure::Failed(e)) => Err(e),
    }
}

async fn exchange_raw(
    s: &mut TcpStream,
    addr: SocketAddr,
    req: &[u8],
    timeout: Duration,
) -> Result<PooledBuf, RawFailure> {
    let exchange = async {
        let n = s.write(req).await.map_err(|_| RawFailure::Unsent)?;
        if n == 0 {
            return Err(RawFailure::Unsent);
        }
        if n < req.len() {
            s.write_all(&req[n..])
                .await
                .map_err(|source| RawFailure::NoAnswer(UpstreamError::Io { addr, source }))?;
        }
        let mut buf = PooledBuf::take();
        read_response_head(s, &mut buf, addr).await?;
        Ok(buf)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(RawFailure::Failed(UpstreamError::Timeout { addr, timeout })),
    }
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
        while let Some(end) = h1::head_end(buf, scanned) {
            if !h1::is_interim(&buf[..end]) {
                return Ok(());
            }
            buf.drain(..end);
            scanned = 0;
        }
        scanned = buf.len().saturating_sub(3);
    }
}
