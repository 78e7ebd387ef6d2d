//! Connecting to a backend: TCP under `connect_timeout`, the PROXY protocol
//! header, TLS, and the HTTP/1.1 handshake whose driver task is tracked.

use crate::pool::{Pool, Server};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

use super::error::UpstreamError;
use super::idle::{Sender, Via};

/// The admin servers' addresses in this process (`admin_listening`), read
/// without a lock by a connect to one of their ports (`ADMIN_PORTS`).
static ADMIN: std::sync::LazyLock<arc_swap::ArcSwap<Vec<SocketAddr>>> =
    std::sync::LazyLock::new(Default::default);

/// The admin servers' ports, one bit each (bit `port % 64` of word `port /
/// 64`): a connect to any other port, which is nearly every connect, is
/// told apart in a few instructions. (Loading `ADMIN` and comparing the
/// addresses took about 240 instructions a connect, 1% of a TLS
/// passthrough connection's count.)
static ADMIN_PORTS: [std::sync::atomic::AtomicU64; 1024] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 1024];

/// The admin server listens on `addr`: no backend connection goes there. The
/// admin API trusts loopback clients, and a connection rampart makes comes
/// from loopback: a pool member that is the admin address (a DNS answer of
/// 127.0.0.1 with an SRV port of 8404, say) would carry any client's
/// request to it as trusted.
pub fn admin_listening(addr: SocketAddr) {
    ADMIN.rcu(|all| {
        let mut all = Vec::clone(all);
        all.push(addr);
        all
    });
    // (after the address: a connect that sees the bit finds the address)
    let port = usize::from(addr.port());
    ADMIN_PORTS[port / 64].fetch_or(1 << (port % 64), std::sync::atomic::Ordering::Release);
}

/// Whether an admin server of this process listens on `port` (at some
/// address).
fn admin_port(port: u16) -> bool {
    let port = usize::from(port);
    ADMIN_PORTS[port / 64].load(std::sync::atomic::Ordering::Acquire) & (1 << (port % 64)) != 0
}

/// Whether `addr` reaches an admin server of this process by loopback.
pub(crate) fn is_admin(addr: SocketAddr) -> bool {
    if !admin_port(addr.port()) {
        return false;
    }
    // (IPv4-mapped forms as the addresses they map: `::ffff:0.0.0.0` reaches
    // 127.0.0.1 too)
    let unspecified = |ip: std::net::IpAddr| ip.to_canonical().is_unspecified();
    let local = |ip: std::net::IpAddr| ip.to_canonical().is_loopback() || unspecified(ip);
    ADMIN.load().iter().any(|a| {
        a.port() == addr.port()
            && (a.ip().to_canonical() == addr.ip().to_canonical()
                || (unspecified(a.ip()) && local(addr.ip()))
                || (local(a.ip()) && unspecified(addr.ip())))
    })
}

/// Connects a TCP socket to `addr` within `timeout`, with TCP_NODELAY set.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let at = tokio::time::Instant::now() + timeout;
    let timer = tokio::time::sleep_until(at);
    tokio::pin!(timer);
    connect_tcp_by(addr, timeout, timer, at).await
}

/// [`connect_tcp`] by `at` (`timeout` after the attempt started) on `timer`,
/// for a caller that goes on using the timer once connected (`clock::by`): a
/// TCP session's relay moves it to its idle deadline.
pub async fn connect_tcp_by(
    addr: SocketAddr,
    timeout: Duration,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    at: tokio::time::Instant,
) -> Result<TcpStream, UpstreamError> {
    if is_admin(addr) {
        return Err(UpstreamError::Connect {
            addr,
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the admin server's address is not a backend",
            ),
        });
    }
    match crate::clock::by(TcpStream::connect(addr), timer, at).await {
        Ok(Ok(s)) => {
            // Best effort: a failure here only costs latency.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Err(_) => Err(UpstreamError::ConnectTimeout { addr, timeout }),
    }
}

/// TCP's own liveness check on a backend socket that stays open for long (an
/// HTTP/2 connection to a server): keepalive probes after 30 s of silence,
/// every 10 s, and TCP_USER_TIMEOUT, so that the connection fails once the
/// server acknowledged nothing for 60 s (probes, or data it never took),
/// not after some 15 minutes of retransmissions. The HTTP/2 keepalive PINGs
/// (`[pool.http2] keepalive_interval`) find a dead connection sooner, also
/// behind a middlebox whose TCP acknowledges for the server; this floor
/// holds when they are off. Best effort, as TCP_NODELAY.
pub fn keepalive_floor(s: &TcpStream) {
    let sock = socket2::SockRef::from(s);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = sock.set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "SO_KEEPALIVE not set on a backend connection");
    }
    if let Err(e) = sock.set_tcp_user_timeout(Some(Duration::from_secs(60))) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set on a backend connection");
    }
}

pub(super) async fn connect_http(
    pool: &Pool,
    server: &Server,
    via: Option<&Via<'_>>,
) -> Result<Sender, UpstreamError> {
    let timeout = pool.connect_timeout;
    let mut stream = connect_tcp(server.addr, timeout).await?;
    if let (Some(v), Some(via)) = (pool.send_proxy, via) {
        let header = crate::proxy_protocol::header(v, via.client, via.local, via.tls);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &header)
            .await
            .map_err(|source| UpstreamError::Connect {
                addr: server.addr,
                source,
            })?;
    }
    match &pool.tls {
        None => handshake_http(server, stream).await,
        Some(tls) => {
            let stream = connect_tls(pool, tls, server, stream).await?;
            handshake_http(server, stream).await
        }
    }
}

/// The TLS handshake on a new connection to a server, within connect_timeout.
/// A certificate that does not verify is an error, logged with its reason.
pub async fn connect_tls(
    pool: &Pool,
    tls: &crate::tls::PoolTls,
    server: &Server,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let name = tls.name_for(server.source.as_deref(), server.addr);
    let addr = server.addr;
    match tokio::time::timeout(pool.connect_timeout, tls.connect(name.clone(), stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => {
            tracing::warn!(pool = %pool.name, server = %server.id, name = %name.to_str(), error = %source, "TLS handshake with the server failed");
            Err(UpstreamError::Tls { addr, source })
        }
        Err(_) => Err(UpstreamError::ConnectTimeout {
            addr,
            timeout: pool.connect_timeout,
        }),
    }
}

async fn handshake_http<S>(server: &Server, stream: S) -> Result<Sender, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // writev where the stream has it (a plain socket): a request body's
    // chunks are written where they are, not copied into hyper's buffer
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake {
            addr: server.addr,
            source,
        })?;
    let addr = server.addr;
    tasks().spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// The tasks that drive backend connections (HTTP/1.1 and HTTP/2) and stream
/// request bodies to HTTP/2 servers. Each ends by itself with its connection or
/// body; they are tracked so that shutdown can count what is still open.
pub fn tasks() -> &'static tokio_util::task::TaskTracker {
    static TASKS: std::sync::OnceLock<tokio_util::task::TaskTracker> = std::sync::OnceLock::new();
    TASKS.get_or_init(tokio_util::task::TaskTracker::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose accept queue is full drops the SYN: the connect ends
    /// at its timer's deadline as a connect timeout, not before.
    #[tokio::test]
    async fn a_server_that_does_not_answer_is_a_connect_timeout_at_the_deadline() {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.listen(0).unwrap();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        // connections the server never accepts, until one is not answered
        let mut held = Vec::new();
        loop {
            assert!(held.len() < 64, "the accept queue never filled");
            // (a second: a queue with room answers at once, even on a busy
            // machine)
            match connect_tcp(addr, Duration::from_secs(1)).await {
                Ok(s) => held.push(s),
                Err(UpstreamError::ConnectTimeout { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let within = Duration::from_millis(300);
        let t0 = tokio::time::Instant::now();
        let timer = crate::clock::timer();
        tokio::pin!(timer);
        let r = connect_tcp_by(addr, within, timer.as_mut(), t0 + within).await;
        assert!(
            matches!(r, Err(UpstreamError::ConnectTimeout { timeout, .. }) if timeout == within),
            "{:?}",
            r.err()
        );
        // at the deadline: not before, and not seconds after
        let took = t0.elapsed();
        assert!(took >= within && took < within * 10, "{took:?}");
        assert!(timer.is_elapsed());
    }

    /// The admin address in every form a connect could reach it by, and
    /// nothing else.
    #[test]
    fn the_admin_address_in_every_form_and_no_other() {
        admin_listening("127.0.0.1:18404".parse().unwrap());
        admin_listening("[::]:18405".parse().unwrap());
        for a in [
            "127.0.0.1:18404",
            "[::ffff:127.0.0.1]:18404",
            "0.0.0.0:18404",
            "[::ffff:0.0.0.0]:18404",
            "[::]:18404",
            "127.0.0.1:18405",
            "127.0.0.9:18405",
            "[::1]:18405",
            "[::ffff:0.0.0.0]:18405",
        ] {
            assert!(is_admin(a.parse().unwrap()), "{a}");
        }
        // the port map: each port by its own bit (18403 is in 18404's word)
        assert!(admin_port(18404) && admin_port(18405));
        assert!(!admin_port(18403) && !admin_port(18406) && !admin_port(0));
        for a in [
            "127.0.0.1:18406",
            "10.0.0.1:18404",
            "127.0.0.2:18404",
            "10.0.0.1:18405",
        ] {
            assert!(!is_admin(a.parse().unwrap()), "{a}");
        }
    }
}
