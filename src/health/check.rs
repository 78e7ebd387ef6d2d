//! One check of one server: TCP (connect, optionally TLS), HTTP/1.1 or HTTP/2
//! (status and optional body), gRPC health, or Postgres (a real client,
//! role-aware, replica lag). It says UP or why not; rise and fall are the
//! check loop's business.

use crate::config::{CheckKind, PgRole};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// Why a check failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckFailure {
    Timeout(Duration),
    Connect(String),
    Status(u16),
    Body,
    Http(String),
    Role {
        want: PgRole,
        replica: bool,
    },
    /// `cut_off`: a replica without a WAL receiver, its lag the time it has
    /// been behind its cluster.
    Lag {
        lag: Duration,
        max: Duration,
        cut_off: bool,
    },
    Postgres(String),
    Grpc(String),
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Timeout(d) => write!(f, "timeout after {d:?}"),
            CheckFailure::Connect(e) => write!(f, "connect failed: {e}"),
            CheckFailure::Status(s) => write!(f, "HTTP status {s}"),
            CheckFailure::Body => write!(f, "response body does not contain the expected text"),
            CheckFailure::Http(e) => write!(f, "HTTP error: {e}"),
            CheckFailure::Role { want, replica } => write!(
                f,
                "role mismatch: want {}, server is a {}",
                match want {
                    PgRole::Primary => "primary",
                    PgRole::Replica => "replica",
                    PgRole::Any => "any",
                },
                if *replica { "replica" } else { "primary" }
            ),
            CheckFailure::Lag {
                lag,
                max,
                cut_off: false,
            } => {
                write!(f, "replica lag {:.1}s exceeds {:?}", lag.as_secs_f64(), max)
            }
            CheckFailure::Lag { lag, max, .. } => write!(
                f,
                "replica without a streaming WAL receiver, behind its cluster for {:.1}s, more than {:?}",
                lag.as_secs_f64(),
                max
            ),
            CheckFailure::Postgres(e) => write!(f, "postgres: {e}"),
            CheckFailure::Grpc(e) => write!(f, "gRPC health: {e}"),
        }
    }
}

type CheckSender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 client connection for one check; its task is aborted however the
/// check ends (timeout included).
async fn http_handshake<S>(
    stream: S,
) -> Result<(CheckSender, tokio_util::task::AbortOnDropHandle<()>), CheckFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| CheckFailure::Http(e.to_string()))?;
    let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = conn.await;
    }));
    Ok((sender, task))
}

/// TLS for the checks of a pool with `[pool.tls]`: the checks see the servers
/// as requests do. A postgres check's is its own (`ssl`), with the name the
/// server is verified under.
pub type CheckTls = (crate::tls::PoolTls, rustls_pki_types::ServerName<'static>);

/// Runs one check against `addr`; `Ok` carries a short description of the
/// success. Over TLS when `tls` is given (tcp: the handshake must
/// succeed, certificate verified; http: the request goes over it). A
/// postgres check goes over TLS as its `ssl` says, asked for inside the
/// protocol; `tls`, if given, is then that TLS and the server's name (the
/// health manager's `check_tls`; without it, the name is the address). With
/// `send_proxy` (the pool's), each check connection starts with a PROXY
/// header, as the pool's connections for traffic do.
/// `pg`: what a postgres check of this server keeps across its checks (the
/// server's check loop has it; a lone first check does not).
pub async fn check_with(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&CheckTls>,
    send_proxy: Option<crate::proxy_protocol::Version>,
    timeout: Duration,
    pg: Option<&mut PgTrack>,
) -> Result<String, CheckFailure> {
    match tokio::time::timeout(timeout, check_inner(kind, addr, tls, send_proxy, pg)).await {
        Ok(r) => r,
        Err(_) => Err(CheckFailure::Timeout(timeout)),
    }
}

/// A check's TCP connection to `addr`. With `send_proxy`, the PROXY header
/// goes first (before any TLS, in the order of the pool's connections for
/// traffic), naming the check's own connection: its local address as the
/// source, the server as the destination (HAProxy sends the header on the
/// checks of a `send-proxy` server too). A server that requires the header
/// (nginx's `listen ... proxy_protocol`) closes a connection without it, so
/// without it no check could pass and every server would be DOWN.
async fn connect(
    addr: SocketAddr,
    send_proxy: Option<crate::proxy_protocol::Version>,
) -> Result<tokio::net::TcpStream, CheckFailure> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| CheckFailure::Connect(e.to_string()))?;
    if let Some(v) = send_proxy {
        let local = stream
            .local_addr()
            .map_err(|e| CheckFailure::Connect(e.to_string()))?;
        let header = crate::proxy_protocol::header(v, local, addr, None);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &header)
            .await
            .map_err(|e| CheckFailure::Connect(format!("cannot send the PROXY header: {e}")))?;
    }
    Ok(stream)
}

async fn check_inner(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&CheckTls>,
    send_proxy: Option<crate::proxy_protocol::Version>,
    pg: Option<&mut PgTrack>,
) -> Result<String, CheckFailure> {
    // the admin server is no backend (a member at its address never passes)
    if crate::upstream::is_admin(addr) {
        return Err(CheckFailure::Connect(
            "the admin server's address is not a backend".into(),
        ));
    }
    match kind {
        CheckKind::Tcp => {
            let stream = connect(addr, send_proxy).await?;
            if let Some((tls, name)) = tls {
                tls.connect(name.clone(), stream)
                    .await
                    .map_err(|e| CheckFailure::Connect(format!("TLS: {e}")))?;
                return Ok("TLS handshake ok".into());
            }
            Ok("TCP connect ok".into())
        }
        CheckKind::Http {
            method,
            path,
            host,
            expect_status,
            expect_body,
            h2,
        } => {
            let stream = connect(addr, send_proxy).await?;
            if *h2 {
                let host = host.clone().unwrap_or_else(|| addr.to_string());
                let (status, body) = match tls {
                    None => h2_check(stream, "http", &host, method, path).await?,
                    Some((tls, name)) => {
                        let s = h2_tls(tls, name, stream).await?;
                        h2_check(s, "https", &host, method, path).await?
                    }
                };
                return http_verdict(status, &body, expect_status, expect_body.as_deref());
            }
            let (mut sender, _conn_task) = match tls {
                None => http_handshake(stream).await?,
                Some((tls, name)) => {
                    let s = tls
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| CheckFailure::Connect(format!("TLS: {e}")))?;
                    http_handshake(s).await?
                }
            };
            let host = host.clone().unwrap_or_else(|| addr.to_string());
            let req = http::Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .header(http::header::HOST, host)
                .header(http::header::USER_AGENT, "rampart-health-check")
                .header(http::header::CONNECTION, "close")
                .body(Empty::new())
                .map_err(|e| CheckFailure::Http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| CheckFailure::Http(e.to_string()))?;
            let status = resp.status().as_u16();
            // the body is read only when it is looked at, and only its first
            // 64 KiB (a longer page is checked there, not failed)
            let body = match expect_body {
                Some(_) if http_verdict(status, b"", expect_status, None).is_ok() => {
                    let mut body = resp.into_body();
                    let mut got = Vec::new();
                    while got.len() < 64 * 1024 {
                        match body.frame().await {
                            Some(f) => {
                                let f = f.map_err(|e| CheckFailure::Http(e.to_string()))?;
                                if let Ok(d) = f.into_data() {
                                    got.extend_from_slice(&d);
                                }
                            }
                            None => break,
                        }
                    }
                    got.truncate(64 * 1024);
                    Bytes::from(got)
                }
                _ => Bytes::new(),
            };
            http_verdict(status, &body, expect_status, expect_body.as_deref())
        }
        CheckKind::Grpc { service } => {
            let stream = connect(addr, send_proxy).await?;
            match tls {
                None => grpc_check(stream, "http", &addr.to_string(), service).await,
                Some((tls, name)) => {
                    let s = h2_tls(tls, name, stream).await?;
                    let authority = match name {
                        rustls_pki_types::ServerName::DnsName(n) => n.as_ref().to_string(),
                        _ => addr.to_string(),
                    };
                    grpc_check(s, "https", &authority, service).await
                }
            }
        }
        CheckKind::Postgres {
            user,
            password,
            database,
            role,
            max_replica_lag,
            ssl,
        } => {
            let mut cfg = tokio_postgres::Config::new();
            // (no host, port or connect timeout: the connection is ours, and
            // check_with's timeout covers the whole check)
            cfg.user(user)
                .dbname(database)
                .application_name("rampart-health-check");
            if let Some(p) = password {
                cfg.password(p);
            }
            // TLS as `ssl` says, verifying the name check_tls found for the
            // server (else, called without, its address)
            let ssl = ssl.as_deref().map(|pg| {
                let name = tls.map_or_else(|| pg.tls.name_for(None, addr), |(_, n)| n.clone());
                (pg, name)
            });
            let (client, conn_task) = pg_session(&mut cfg, addr, send_proxy, ssl).await?;
            let verdict = pg_verdict(&client, *role, *max_replica_lag, pg).await;
            // the session ends as a client ends it (Terminate, and over TLS a
            // close_notify), or the server logs an unexpected EOF per check;
            // off the check's clock, so a verdict made is not a timeout
            drop(client);
            tokio::spawn(
                async move {
                    let _ = tokio::time::timeout(Duration::from_millis(500), conn_task).await;
                }
                .instrument(tracing::debug_span!("postgres check end", %addr)),
            );
            verdict
        }
    }
}

/// What each Postgres cluster (known by its system identifier) was seen to
/// have written, and when: by checks of its primary, or of a replica that
/// streams from it, in every pool. A replica without a WAL receiver (cut off
/// from its primary) has replayed all it received, so its own lag reads 0;
/// its lag is, instead, how long the cluster has had WAL that it has not
/// replayed. While no check sees the cluster (its primary down), nothing is
/// known: such a replica is not held to `max_replica_lag`, and serves the
/// reads of read-only mode.
#[derive(Debug, Clone, Default)]
pub struct WalMarks(Arc<std::sync::Mutex<std::collections::HashMap<u64, Cluster>>>);

/// One cluster's history: the positions seen (each with when it was first
/// seen, ms), oldest first, at most [`HISTORY`] of them; and until when what
/// was seen last counts (the looking check's pool's three intervals and its
/// timeout).
#[derive(Debug, Default)]
pub struct Cluster {
    seen: std::collections::VecDeque<(u64, u64)>,
    fresh_until: u64,
}

/// Positions kept per cluster: with a check a second, minutes of history; a
/// replica further behind than the oldest is behind by at least its age.
const HISTORY: usize = 256;

impl WalMarks {
    /// A check that began at `started` saw `cluster` at `lsn` (`primary`: by
    /// its primary, else by a streaming replica), valid until `fresh_until`.
    fn reached(&self, cluster: u64, lsn: u64, primary: bool, started: u64, fresh_until: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(cluster).or_default();
        if primary && c.seen.iter().any(|&(l, first)| l > lsn && first < started) {
            // a primary behind what was seen before its check began: a
            // failover that lost the tail, on a new timeline; the history
            // starts again. (Positions seen since are other checks that
            // ran while this one did.)
            c.seen.clear();
        }
        let pushed = c.seen.back().is_none_or(|&(last, _)| lsn > last);
        if pushed {
            c.seen.push_back((lsn, started));
            if c.seen.len() > HISTORY {
                // every other position goes, the oldest kept: the history
                // keeps its span (dropping the oldest would cap a lag at it)
                let mut i = 0;
                c.seen.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
            }
        }
        // only a primary, or a replica that brings something new, shows the
        // cluster alive (a replica stuck on what it has says nothing)
        if primary || pushed {
            c.fresh_until = c.fresh_until.max(fresh_until);
        }
    }

    /// How long (ms) `cluster` has had WAL past `replayed`: None while no
    /// check sees it.
    fn behind(&self, cluster: u64, replayed: u64, now: u64) -> Option<u64> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.get(&cluster).filter(|c| now <= c.fresh_until)?;
        Some(
            c.seen
                .iter()
                .find(|(lsn, _)| *lsn > replayed)
                .map_or(0, |(_, first)| now.saturating_sub(*first)),
        )
    }
}

/// What the postgres checks of one server share with the others.
#[derive(Debug)]
pub struct PgTrack {
    marks: WalMarks,
    /// How long what this check sees counts (its pool's three intervals and
    /// its timeout).
    fresh: Duration,
    /// The server refused `pg_control_system()` (said once; not asked again).
    refused: bool,
}

impl PgTrack {
    pub fn new(marks: WalMarks, fresh: Duration) -> PgTrack {
        PgTrack {
            marks,
            fresh,
            refused: false,
        }
    }
}

/// What a postgres check's session says of the server: its role and lag,
/// against what the check wants.
///
/// A replica whose WAL receiver streams: its lag is 0 when it has replayed
/// all it received (an idle primary would otherwise look like growing lag),
/// else the age of the last transaction it replayed. One whose receiver does
/// not (cut off, or fed from the archive): how long its cluster has had WAL
/// it has not replayed (`pg`'s marks); 0 while nothing is known of the
/// cluster.
async fn pg_verdict(
    client: &tokio_postgres::Client,
    role: PgRole,
    max_replica_lag: Duration,
    pg: Option<&mut PgTrack>,
) -> Result<String, CheckFailure> {
    let started = crate::clock::now_ms();
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN NOT pg_is_in_recovery() THEN 0::float8 \
                  WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                  ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, 0::float8) END, \
             COALESCE((SELECT COALESCE(status = 'streaming', true) FROM pg_stat_wal_receiver), false), \
             (CASE WHEN pg_is_in_recovery() \
                   THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), '0/0') \
                   ELSE pg_current_wal_flush_lsn() END - '0/0'::pg_lsn)::float8, \
             (COALESCE(pg_last_wal_replay_lsn(), '0/0') - '0/0'::pg_lsn)::float8",
            &[],
        )
        .await
        .map_err(|e| CheckFailure::Postgres(pg_error(&e)));
    let row = row?;
    let col = |e: tokio_postgres::Error| CheckFailure::Postgres(pg_error(&e));
    let replica: bool = row.try_get(0).map_err(col)?;
    let lag_s: f64 = row.try_get(1).map_err(col)?;
    // its WAL receiver streams (a user without pg_read_all_stats sees that
    // one runs, not its state)
    let receiving: bool = row.try_get(2).map_err(col)?;
    // (positions in bytes, exact as f64 below 2^53: 8 PiB of WAL)
    let reached = row.try_get::<_, f64>(3).map_err(col)?.max(0.0) as u64;
    let replayed = row.try_get::<_, f64>(4).map_err(col)?.max(0.0) as u64;
    // the value comes from the checked server: never trust it to be sane
    let mut lag = Duration::try_from_secs_f64(lag_s.max(0.0))
        .map_err(|_| CheckFailure::Postgres(format!("nonsensical replica lag {lag_s}")))?;
    // (None: not tracked; Some(None): cut off, nothing known of its cluster)
    let mut cut_off: Option<Option<u64>> = None;
    if let Some(pg) = pg.filter(|pg| !pg.refused) {
        // which cluster: asked apart, and not an error when refused (a
        // hardened server may revoke pg_control_system() from PUBLIC)
        let cluster = match client
            .query_one("SELECT system_identifier FROM pg_control_system()", &[])
            .await
        {
            // (a u64 the server keeps in an int8: its bits)
            Ok(r) => r.try_get::<_, i64>(0).ok().map(|id| id as u64),
            Err(e) => {
                pg.refused = true;
                tracing::warn!(error = %pg_error(&e), "pg_control_system() refused: this server's replicas are judged by their own lag only (one cut off from its primary reads 0); grant the check's user EXECUTE on it");
                None
            }
        };
        if let Some(cluster) = cluster {
            let now = crate::clock::now_ms();
            if !replica || receiving {
                let fresh = u64::try_from(pg.fresh.as_millis()).unwrap_or(u64::MAX);
                // (the check began before its first query: `started`)
                pg.marks.reached(
                    cluster,
                    reached,
                    !replica,
                    started,
                    now.saturating_add(fresh),
                );
            } else {
                let behind = pg.marks.behind(cluster, replayed, now);
                if let Some(ms) = behind {
                    lag = Duration::from_millis(ms);
                } else {
                    lag = Duration::ZERO;
                }
                cut_off = Some(behind);
            }
        }
    }
    match (role, replica) {
        (PgRole::Primary, true) | (PgRole::Replica, false) => {
            return Err(CheckFailure::Role {
                want: role,
                replica,
            })
        }
        _ => {}
    }
    if replica && !max_replica_lag.is_zero() && lag > max_replica_lag {
        return Err(CheckFailure::Lag {
            lag,
            max: max_replica_lag,
            cut_off: cut_off.is_some(),
        });
    }
    Ok(match (replica, cut_off) {
        (false, _) => "primary".into(),
        (true, Some(Some(_))) => format!(
            "replica, no streaming WAL receiver: behind its cluster for {:.1}s",
            lag.as_secs_f64()
        ),
        (true, Some(None)) => {
            "replica, no streaming WAL receiver: no check sees its cluster now (its primary down?)"
                .into()
        }
        (true, None) => format!("replica, lag {:.1}s", lag.as_secs_f64()),
    })
}

/// A postgres check's session, on a connection of its own as every check's
/// (the PROXY header first, with `send_proxy`), over TLS as `ssl` says (None:
/// `disable`); its connection task is aborted if the check ends before its
/// verdict (a timeout), else given 500 ms to end the session cleanly.
async fn pg_session(
    cfg: &mut tokio_postgres::Config,
    addr: SocketAddr,
    send_proxy: Option<crate::proxy_protocol::Version>,
    ssl: Option<(&crate::tls::PgTls, rustls_pki_types::ServerName<'static>)>,
) -> Result<(tokio_postgres::Client, AbortOnDropHandle<()>), CheckFailure> {
    use tokio_postgres::config::SslMode;
    let Some((pg, name)) = ssl else {
        cfg.ssl_mode(SslMode::Disable);
        return pg_plain(cfg, addr, send_proxy).await;
    };
    let prefer = pg.mode == crate::tls::PgSslMode::Prefer;
    // prefer: an `N` to the SSLRequest goes on without TLS; the other modes
    // end there
    cfg.ssl_mode(if prefer {
        SslMode::Prefer
    } else {
        SslMode::Require
    });
    let agreed = Arc::new(AtomicBool::new(false));
    let stream = connect(addr, send_proxy).await?;
    let over_tls = match cfg
        .connect_raw(stream, pg.connector(name, Arc::clone(&agreed)))
        .await
    {
        Ok((client, conn)) => return Ok((client, run_connection(conn))),
        Err(e) => e,
    };
    // prefer, as libpq: a session the server agreed to have over TLS that
    // failed (a handshake the two sides could not agree on, a pg_hba.conf
    // that takes this client only without TLS) is tried again without
    if !prefer || !agreed.load(Ordering::Relaxed) {
        return Err(CheckFailure::Postgres(pg_error(&over_tls)));
    }
    cfg.ssl_mode(SslMode::Disable);
    pg_plain(cfg, addr, send_proxy)
        .await
        .map_err(|without| match without {
            CheckFailure::Postgres(e) => CheckFailure::Postgres(format!(
                "over TLS: {}; without TLS: {e}",
                pg_error(&over_tls)
            )),
            other => other,
        })
}

/// A postgres check's session without TLS (`cfg` says `disable`).
async fn pg_plain(
    cfg: &tokio_postgres::Config,
    addr: SocketAddr,
    send_proxy: Option<crate::proxy_protocol::Version>,
) -> Result<(tokio_postgres::Client, AbortOnDropHandle<()>), CheckFailure> {
    let stream = connect(addr, send_proxy).await?;
    let (client, conn) = cfg
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(|e| CheckFailure::Postgres(pg_error(&e)))?;
    Ok((client, run_connection(conn)))
}

/// A tokio-postgres error with its causes, on one line ("db error: FATAL: no
/// pg_hba.conf entry for ...", "error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"): its Display names only the kind of error.
fn pg_error(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    // (a server's error may add DETAIL and HINT lines)
    s.replace('\n', " ")
}

/// Runs a postgres check's connection (it carries the client's queries) until
/// the handle is dropped.
fn run_connection<S, T>(conn: tokio_postgres::Connection<S, T>) -> AbortOnDropHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = conn.await;
    }))
}

/// TLS for a check over HTTP/2: the handshake, and ALPN must have chosen h2.
async fn h2_tls(
    tls: &crate::tls::PoolTls,
    name: &rustls_pki_types::ServerName<'static>,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, CheckFailure> {
    let s = tls
        .connect(name.clone(), stream)
        .await
        .map_err(|e| CheckFailure::Connect(format!("TLS: {e}")))?;
    if s.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(CheckFailure::Http(
            "the server did not agree to HTTP/2 (ALPN h2)".into(),
        ));
    }
    Ok(s)
}

/// An http check's request over HTTP/2 (pools with protocol = "h2"): the
/// status and up to 64 KiB of the body.
async fn h2_check<S>(
    io: S,
    scheme: &str,
    authority: &str,
    method: &http::Method,
    path: &str,
) -> Result<(u16, Bytes), CheckFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let h2err = |e: h2::Error| CheckFailure::Http(e.to_string());
    let (send, conn) = h2::client::handshake(io).await.map_err(h2err)?;
    let _conn_task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = http::Request::builder()
        .method(method.clone())
        .uri(format!("{scheme}://{authority}{path}"))
        .header(http::header::USER_AGENT, "rampart-health-check")
        .body(())
        .map_err(|e| CheckFailure::Http(e.to_string()))?;
    let mut send = send.ready().await.map_err(h2err)?;
    let (resp, _) = send.send_request(req, true).map_err(h2err)?;
    let resp = resp.await.map_err(h2err)?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < 64 * 1024 {
        match body.data().await {
            Some(chunk) => {
                let chunk = chunk.map_err(h2err)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    got.truncate(64 * 1024);
    Ok((status, Bytes::from(got)))
}

/// An http check's verdict on a status and body.
fn http_verdict(
    status: u16,
    body: &[u8],
    expect_status: &[(u16, u16)],
    expect_body: Option<&str>,
) -> Result<String, CheckFailure> {
    if !expect_status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&status))
    {
        return Err(CheckFailure::Status(status));
    }
    match expect_body {
        Some(want) if !memchr_find(body, want.as_bytes()) => Err(CheckFailure::Body),
        _ => Ok(format!("HTTP {status}")),
    }
}

/// grpc.health.v1.Health/Check on a new HTTP/2 connection: the server is UP when
/// it answers SERVING for `service` ("" asks about the server as a whole).
async fn grpc_check<S>(
    io: S,
    scheme: &str,
    authority: &str,
    service: &str,
) -> Result<String, CheckFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let h2err = |e: h2::Error| CheckFailure::Grpc(e.to_string());
    let (send, conn) = h2::client::handshake(io).await.map_err(h2err)?;
    let _conn_task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = http::Request::post(format!(
        "{scheme}://{authority}/grpc.health.v1.Health/Check"
    ))
    .header(http::header::CONTENT_TYPE, "application/grpc")
    .header(http::header::TE, "trailers")
    .header(http::header::USER_AGENT, "rampart-health-check")
    .body(())
    .map_err(|e| CheckFailure::Grpc(e.to_string()))?;
    let mut send = send.ready().await.map_err(h2err)?;
    let (resp, mut tx) = send.send_request(req, false).map_err(h2err)?;
    tx.send_data(grpc_health_request(service), true)
        .map_err(h2err)?;
    let resp = resp.await.map_err(h2err)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(CheckFailure::Status(status));
    }
    let (parts, mut body) = resp.into_parts();
    let failed = |h: &http::HeaderMap| -> Option<CheckFailure> {
        let code = h.get("grpc-status")?;
        (code != "0").then(|| {
            let msg = h
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .unwrap_or("");
            CheckFailure::Grpc(format!(
                "grpc-status {} {msg}",
                String::from_utf8_lossy(code.as_bytes())
            ))
        })
    };
    // a trailers-only answer (UNIMPLEMENTED, NOT_FOUND for an unknown service)
    if let Some(f) = failed(&parts.headers) {
        return Err(f);
    }
    let mut msg = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2err)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        msg.extend_from_slice(&chunk);
        if msg.len() > 64 * 1024 {
            return Err(CheckFailure::Grpc("answer larger than 64 KiB".into()));
        }
    }
    let trailers = body.trailers().await.map_err(h2err)?.unwrap_or_default();
    if let Some(f) = failed(&trailers) {
        return Err(f);
    }
    match grpc_serving_status(&msg) {
        Some(1) => Ok("SERVING".into()),
        Some(2) => Err(CheckFailure::Grpc("NOT_SERVING".into())),
        Some(3) => Err(CheckFailure::Grpc("SERVICE_UNKNOWN".into())),
        Some(s) => Err(CheckFailure::Grpc(format!("status {s} (not SERVING)"))),
        None => Err(CheckFailure::Grpc(
            "the answer is not a HealthCheckResponse".into(),
        )),
    }
}

/// A HealthCheckRequest { service } as one gRPC message (uncompressed).
fn grpc_health_request(service: &str) -> Bytes {
    let mut pb = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        pb.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            pb.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        pb.push(n as u8);
        pb.extend_from_slice(service.as_bytes());
    }
    let mut m = Vec::with_capacity(pb.len() + 5);
    m.push(0);
    m.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    m.extend_from_slice(&pb);
    Bytes::from(m)
}

/// The `status` of a HealthCheckResponse in one gRPC message: None if the
/// message is compressed, cut short or not protobuf we can walk.
fn grpc_serving_status(msg: &[u8]) -> Option<u64> {
    let (&flag, rest) = msg.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut pb = rest.get(4..4 + len)?;
    let varint = |b: &mut &[u8]| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, r) = b.split_first()?;
            *b = r;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    // absent status is its default: UNKNOWN (0)
    let mut status = 0;
    while !pb.is_empty() {
        let key = varint(&mut pb)?;
        match key & 7 {
            0 => {
                let v = varint(&mut pb)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let l = varint(&mut pb)? as usize;
                pb = pb.get(l..)?;
            }
            1 => pb = pb.get(8..)?,
            5 => pb = pb.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica without a streaming receiver is behind its cluster for as
    /// long as the cluster has had WAL it has not replayed: one fed from the
    /// archive a segment behind is seconds behind, not for ever; one cut off
    /// is behind since the first position it lacks; nothing is known once
    /// no check sees the cluster; a primary behind what was seen (a failover
    /// that lost the tail) starts the history again.
    #[test]
    fn a_replica_is_behind_its_cluster_since_the_first_position_it_lacks() {
        let m = WalMarks::default();
        let (c, fresh) = (7, 1_000);
        for t in 0..10u64 {
            m.reached(c, 100 * (t + 1), true, t * 500, t * 500 + fresh);
        }
        let now = 4_500;
        // caught up, or at the last position: not behind
        assert_eq!(m.behind(c, 1_000, now), Some(0));
        // fed from the archive a little behind: since that position came
        assert_eq!(m.behind(c, 850, now), Some(500));
        // cut off early on: since the first position after it
        assert_eq!(m.behind(c, 150, now), Some(now - 500));
        // no look for longer than the last one counts: nothing is known
        assert_eq!(m.behind(c, 150, now + fresh + 1), None);
        assert_eq!(m.behind(8, 150, now), None);
        // a streaming replica's position alone does not start it again
        m.reached(c, 400, false, now, now + fresh);
        assert_eq!(m.behind(c, 150, now), Some(now - 500));
        // a primary behind what was seen before its check began: a new
        // history
        m.reached(c, 600, true, 5_000, 5_000 + fresh);
        assert_eq!(m.behind(c, 500, 5_200), Some(200));
        assert_eq!(m.behind(c, 600, 5_200), Some(0));
        // a primary's check that began before a faster one saw more: no
        // failover, the history goes on
        m.reached(c, 700, false, 5_100, 5_100 + fresh);
        m.reached(c, 650, true, 5_050, 5_050 + fresh);
        assert_eq!(m.behind(c, 500, 5_200), Some(200));
        // a replica that brings nothing new does not keep the cluster seen
        m.reached(c, 700, false, 9_000, 9_000 + fresh);
        assert_eq!(m.behind(c, 500, 6_300), None);
        // the history is bounded, and keeps its span: a replica behind from
        // its start stays behind since then
        m.reached(c, 800, true, 10_000, 10_000 + fresh);
        for t in 1..=(HISTORY as u64 * 4) {
            m.reached(c, 800 + t, true, 10_000 + t, 10_000 + t + fresh);
        }
        let now = 10_000 + HISTORY as u64 * 4;
        assert!(m.0.lock().unwrap()[&c].seen.len() <= HISTORY);
        assert_eq!(m.behind(c, 500, now), Some(now - 5_000));
    }

    #[test]
    fn grpc_health_messages() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("api")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'i']
        );
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        // an empty message is the default status, UNKNOWN
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // unknown fields are skipped
        assert_eq!(
            grpc_serving_status(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1]),
            Some(1)
        );
        // compressed, cut short, garbage
        assert_eq!(grpc_serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 9, 0x08, 1]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 1, 0x08]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 1, 0x0f]), None);
        assert_eq!(grpc_serving_status(&[]), None);
    }
}
