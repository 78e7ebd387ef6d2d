//! Active health checks: one task per server of every pool with `[pool.health]`.
//! A check is TCP (connect), HTTP (status and optional body) or Postgres (a real
//! client, role-aware: primary / replica / any, replica lag). Results go through a
//! rise/fall counter; health changes only after `rise`/`fall` consecutive results,
//! and is logged once when it flips, with the reason.

use crate::clock;
use crate::config::{CheckKind, HealthConfig, PgRole};
use crate::pool::{CheckReport, Health, Pool, ServerState};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consecutive-result counter: the pure core of a health check.
#[derive(Debug, Clone)]
pub struct RiseFall {
    state: Health,
    ok_streak: u32,
    fail_streak: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    pub fn new(initial: Health, rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            state: initial,
            ok_streak: 0,
            fail_streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Feeds one result; returns the new state when it flips. From UNKNOWN the
    /// first result decides.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
        }
        let next = match (self.state, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.ok_streak >= self.rise => Health::Up,
            (Health::Up, false) if self.fail_streak >= self.fall => Health::Down,
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// Is the server between states (so checks run at `fast_interval`)?
    pub fn changing(&self) -> bool {
        match self.state {
            Health::Unknown => true,
            Health::Up => self.fail_streak > 0,
            Health::Down => self.ok_streak > 0,
        }
    }
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckFailure {
    Timeout(Duration),
    Connect(String),
    Status(u16),
    Body,
    Http(String),
    Role { want: PgRole, replica: bool },
    Lag { lag: Duration, max: Duration },
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
            CheckFailure::Lag { lag, max } => {
                write!(f, "replica lag {:.1}s exceeds {:?}", lag.as_secs_f64(), max)
            }
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
/// as requests do.
pub type CheckTls = (crate::tls::PoolTls, rustls_pki_types::ServerName<'static>);

/// Runs one check against `addr`; `Ok` carries a short description of the
/// success. Over TLS when `tls` is given (tcp: the handshake must
/// succeed, certificate verified; http: the request goes over it).
pub async fn check_with(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&CheckTls>,
    timeout: Duration,
) -> Result<String, CheckFailure> {
    match tokio::time::timeout(timeout, check_inner(kind, addr, tls, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(CheckFailure::Timeout(timeout)),
    }
}

async fn check_inner(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&CheckTls>,
    timeout: Duration,
) -> Result<String, CheckFailure> {
    match kind {
        CheckKind::Tcp => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| CheckFailure::Connect(e.to_string()))?;
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
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| CheckFailure::Connect(e.to_string()))?;
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
            // the body is read (at most 64 KiB) only when it is looked at
            let body = match expect_body {
                Some(_) if http_verdict(status, b"", expect_status, None).is_ok() => {
                    http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                        .collect()
                        .await
                        .map_err(|e| CheckFailure::Http(e.to_string()))?
                        .to_bytes()
                }
                _ => Bytes::new(),
            };
            http_verdict(status, &body, expect_status, expect_body.as_deref())
        }
        CheckKind::Grpc { service } => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| CheckFailure::Connect(e.to_string()))?;
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
        } => {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(addr.ip().to_string())
                .port(addr.port())
                .user(user)
                .dbname(database)
                .application_name("rampart-health-check")
                .connect_timeout(timeout);
            if let Some(p) = password {
                cfg.password(p);
            }
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| CheckFailure::Postgres(e.to_string()))?;
            let _conn_task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
            // Lag is 0 on a primary and on a replica that has replayed all it
            // received (an idle primary would otherwise look like growing lag).
            let row = client
                .query_one(
                    "SELECT pg_is_in_recovery(), \
                     CASE WHEN NOT pg_is_in_recovery() THEN 0::float8 \
                          WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                          ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, 0::float8) END",
                    &[],
                )
                .await
                .map_err(|e| CheckFailure::Postgres(e.to_string()));
            let row = row?;
            let replica: bool = row
                .try_get(0)
                .map_err(|e| CheckFailure::Postgres(e.to_string()))?;
            let lag_s: f64 = row
                .try_get(1)
                .map_err(|e| CheckFailure::Postgres(e.to_string()))?;
            // the value comes from the checked server: never trust it to be sane
            let lag = Duration::try_from_secs_f64(lag_s.max(0.0))
                .map_err(|_| CheckFailure::Postgres(format!("nonsensical replica lag {lag_s}")))?;
            match (role, replica) {
                (PgRole::Primary, true) | (PgRole::Replica, false) => {
                    return Err(CheckFailure::Role {
                        want: *role,
                        replica,
                    })
                }
                _ => {}
            }
            if replica && !max_replica_lag.is_zero() && lag > *max_replica_lag {
                return Err(CheckFailure::Lag {
                    lag,
                    max: *max_replica_lag,
                });
            }
            Ok(if replica {
                format!("replica, lag {:.1}s", lag.as_secs_f64())
            } else {
                "primary".into()
            })
        }
    }
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

/// `d` with +-10% jitter, so the checks of many servers do not align.
fn jittered(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    let spread = ms / 10;
    if spread == 0 {
        return d;
    }
    Duration::from_millis(ms - spread + fastrand::u64(..=2 * spread))
}

/// Keeps one check task per member of every pool with `[pool.health]`: members
/// that appear (DNS) get a task, members that leave have theirs stopped. Each
/// task carries a tracing span and writes only its member's health.
pub struct HealthManager {
    /// Server uid -> its task and the settings it runs with.
    tasks: HashMap<
        u64,
        (
            CancellationToken,
            Arc<HealthConfig>,
            Option<crate::tls::PoolTls>,
        ),
    >,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Notified at each health flip (the control task records it in the state file).
    flipped: Arc<tokio::sync::Notify>,
}

impl HealthManager {
    pub fn new(
        cancel: CancellationToken,
        tracker: TaskTracker,
        flipped: Arc<tokio::sync::Notify>,
    ) -> HealthManager {
        HealthManager {
            tasks: HashMap::new(),
            cancel,
            tracker,
            flipped,
        }
    }

    /// Starts and stops check tasks so there is exactly one per current member,
    /// running with its pool's current settings: a member whose pool's `[health]`
    /// changed gets a new task, which starts from the member's current health
    /// (a DOWN server stays DOWN until `rise` checks pass).
    pub fn sync(&mut self, pools: &[Arc<Pool>]) {
        let mut live = HashSet::new();
        for pool in pools {
            let Some(cfg) = &pool.health else { continue };
            let cfg = Arc::new(cfg.clone());
            for s in &pool.servers {
                live.insert(s.state.uid);
                if let Some((token, running, tls)) = self.tasks.get(&s.state.uid) {
                    if **running == *cfg && *tls == pool.tls {
                        continue;
                    }
                    token.cancel();
                }
                let token = self.cancel.child_token();
                self.tasks.insert(
                    s.state.uid,
                    (token.clone(), Arc::clone(&cfg), pool.tls.clone()),
                );
                let span = tracing::info_span!("health", pool = %pool.name, server = %s.id);
                let (addr, state, cfg) = (s.addr, Arc::clone(&s.state), Arc::clone(&cfg));
                let tls = pool.tls.as_ref().map(|t| {
                    let name = t.name_for(s.source.as_deref(), s.addr);
                    (t.clone(), name)
                });
                let flipped = Arc::clone(&self.flipped);
                self.tracker.spawn(tracing::Instrument::instrument(
                    async move {
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = check_loop(addr, tls, state, cfg, flipped) => {}
                        }
                    },
                    span,
                ));
            }
        }
        self.tasks.retain(|uid, (token, _, _)| {
            let keep = live.contains(uid);
            if !keep {
                token.cancel();
            }
            keep
        });
    }

    pub fn stop_all(&mut self) {
        for (_, (t, _, _)) in self.tasks.drain() {
            t.cancel();
        }
    }
}

async fn check_loop(
    addr: SocketAddr,
    tls: Option<CheckTls>,
    state: Arc<ServerState>,
    cfg: Arc<HealthConfig>,
    flipped: Arc<tokio::sync::Notify>,
) {
    let mut rf = RiseFall::new(state.health(), cfg.rise, cfg.fall);
    loop {
        if state.admin() == crate::pool::AdminState::Maint {
            // In maintenance: not checked. Look again at the normal interval.
            tokio::time::sleep(cfg.interval).await;
            continue;
        }
        let started = Instant::now();
        let result = check_with(&cfg.check, addr, tls.as_ref(), cfg.timeout).await;
        {
            use std::sync::atomic::Ordering::Relaxed;
            state.checks.total.fetch_add(1, Relaxed);
            if result.is_err() {
                state.checks.failed.fetch_add(1, Relaxed);
                state.checks.fail_streak.fetch_add(1, Relaxed);
            } else {
                state.checks.fail_streak.store(0, Relaxed);
            }
        }
        let report = CheckReport {
            at: SystemTime::now(),
            duration: started.elapsed(),
            ok: result.is_ok(),
            detail: match &result {
                Ok(s) => s.clone(),
                Err(e) => e.to_string(),
            },
        };
        if rf.state() != state.health() {
            // changed from outside (maintenance resets it to UNKNOWN, a restored state file)
            rf = RiseFall::new(state.health(), cfg.rise, cfg.fall);
        }
        let was = rf.state();
        if let Some(now) = rf.observe(result.is_ok()) {
            state.set_health(now, clock::now_ms());
            flipped.notify_one();
            if now == Health::Up {
                // Proven healthy by an active check: a breaker left open by the
                // failures that took it down would only delay its return.
                state.breaker.reset();
            }
            match now {
                Health::Up => {
                    tracing::info!(from = was.as_str(), to = "UP", check = %report.detail, "server is UP")
                }
                _ => {
                    tracing::warn!(from = was.as_str(), to = now.as_str(), reason = %report.detail, "server is DOWN")
                }
            }
        }
        state.checks.last.store(Some(Arc::new(report)));
        let wait = if rf.changing() {
            cfg.fast_interval
        } else {
            cfg.interval
        };
        tokio::select! {
            _ = tokio::time::sleep(jittered(wait).saturating_sub(started.elapsed().min(wait / 2))) => {}
            _ = state.checks.now.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut rf = RiseFall::new(Health::Up, 2, 3);
        assert_eq!(rf.observe(false), None);
        assert!(rf.changing());
        assert_eq!(rf.observe(false), None);
        assert_eq!(
            rf.observe(true),
            None,
            "a success resets the failure streak"
        );
        assert!(!rf.changing());
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), Some(Health::Down));
        assert_eq!(rf.observe(false), None, "logged once");
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(true), Some(Health::Up));
    }

    #[test]
    fn unknown_is_decided_by_the_first_result() {
        let mut rf = RiseFall::new(Health::Unknown, 3, 3);
        assert!(rf.changing());
        assert_eq!(rf.observe(true), Some(Health::Up));
        let mut rf = RiseFall::new(Health::Unknown, 3, 3);
        assert_eq!(rf.observe(false), Some(Health::Down));
        assert_eq!(rf.observe(true), None);
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

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(3)).as_millis();
            assert!((2700..=3300).contains(&j), "{j}");
        }
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        // nothing listening: refused
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = check_with(&CheckKind::Tcp, dead, None, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(CheckFailure::Connect(_))), "{r:?}");
        // HTTP/1.1 and HTTP/2 (h2c) servers answering 503, then "all ok here"
        for h2 in [false, true] {
            let addr = status_server(h2).await;
            let kind = |body: Option<&str>| CheckKind::Http {
                method: http::Method::GET,
                path: "/health".into(),
                host: None,
                expect_status: vec![(200, 399)],
                expect_body: body.map(String::from),
                h2,
            };
            let t = Duration::from_secs(2);
            assert_eq!(
                check_with(&kind(None), addr, None, t).await,
                Err(CheckFailure::Status(503)),
                "h2: {h2}"
            );
            assert_eq!(
                check_with(&kind(Some("ok")), addr, None, t).await,
                Ok("HTTP 200".into())
            );
            assert_eq!(
                check_with(&kind(Some("nope")), addr, None, t).await,
                Err(CheckFailure::Body)
            );
            assert!(check_with(&CheckKind::Tcp, addr, None, t).await.is_ok());
            // the other protocol's check fails: each speaks what it says
            let other = CheckKind::Http {
                method: http::Method::GET,
                path: "/health".into(),
                host: None,
                expect_status: vec![(200, 399)],
                expect_body: None,
                h2: !h2,
            };
            let r = check_with(&other, addr, None, t).await;
            assert!(matches!(r, Err(CheckFailure::Http(_))), "h2: {h2}: {r:?}");
        }
    }

    /// A server (HTTP/1.1, or h2c) whose first connection gets 503, the next 200.
    async fn status_server(h2: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                let (s, _) = l.accept().await.unwrap();
                n += 1;
                let status = if n == 1 { 503 } else { 200 };
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r =
                        http::Response::new(http_body_util::Full::new(Bytes::from("all ok here")));
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                });
                if h2 {
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(s), svc),
                    );
                } else {
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc),
                    );
                }
            }
        });
        addr
    }
}
