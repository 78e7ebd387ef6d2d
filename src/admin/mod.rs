//! The admin server on `[admin] bind` (default :8404): the stats page (HTML, CSV,
//! JSON), Prometheus metrics, Kubernetes probes and the JSON admin API.
//!
//! Reads are open unless `[admin] read_auth` asks for basic auth (the probes stay
//! open; the admin token, where one is set, reads too). Writes need `Authorization: Bearer <token>` when `[admin] token_env` is
//! set, and otherwise come only from loopback clients.

pub mod body;
pub mod client;
pub mod csv;
pub mod html;
pub mod metrics;
pub mod model;

use crate::config::Config;
use crate::control::ControlMsg;
use crate::control::Shared;
use crate::pool::AdminState;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Resp = Response<Full<Bytes>>;

/// Serves the admin API until `cancel`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    // (the supervisor registered it before anything could connect; an
    // admin server started otherwise, as in tests, registers here)
    if let Ok(addr) = listener.local_addr() {
        crate::upstream::admin_listening(addr);
    }
    // A client opening connections without end waits in the backlog past this,
    // instead of costing a task each.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // connections per client address: one client cannot hold every slot
    // (probes and scrapes from elsewhere would wait behind it)
    let per_peer: Arc<std::sync::Mutex<PeerCounts>> = Arc::default();
    // its connections: counted, and given a moment to finish at the end
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            // after a binary upgrade the new process answers on this socket
            _ = shared.handed_over.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(peer_slot) = PeerSlot::take(&per_peer, peer.ip()) else {
            tracing::debug!(%peer, "admin connection closed: {MAX_PER_PEER} already open from this address");
            continue;
        };
        let shared = Arc::clone(&shared);
        let stop = cancel.clone();
        conns.spawn(async move {
            let _peer_slot = peer_slot;
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(Stalling::new(stream)), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // shutdown: the request in hand is answered, then the connection closes
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    conns.close();
    if tokio::time::timeout(Duration::from_secs(1), conns.wait())
        .await
        .is_err()
    {
        tracing::debug!(
            open = conns.len(),
            "admin connections still open at shutdown"
        );
    }
}

/// Admin connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Admin connections served at once from one client address (an IPv6 /64):
/// a client that
/// opens connections and sends nothing (each held up to the 10 s header
/// timeout) keeps at most these, not every slot.
const MAX_PER_PEER: usize = 32;

/// Open admin connections by client address.
type PeerCounts = std::collections::HashMap<std::net::IpAddr, usize>;

/// One of a client address's admin connections (`MAX_PER_PEER`), given back
/// when dropped.
struct PeerSlot {
    map: Arc<std::sync::Mutex<PeerCounts>>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(map: &Arc<std::sync::Mutex<PeerCounts>>, ip: std::net::IpAddr) -> Option<PeerSlot> {
        // an IPv6 client holds a /64 (RFC 6177): counted as one
        let ip = match ip.to_canonical() {
            std::net::IpAddr::V6(a) => {
                let mut o = a.octets();
                o[8..].fill(0);
                std::net::IpAddr::from(o)
            }
            v4 => v4,
        };
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// How long an answer may wait for a client that reads nothing: past it the
/// connection is closed and its slot freed (256 clients that never read
/// would hold every slot, probes included, without it).
const WRITE_STALL: Duration = Duration::from_secs(10);

/// An admin connection whose writes fail once they make no progress for
/// `WRITE_STALL` (reads are bounded by hyper's header timeout).
struct Stalling {
    io: tokio::net::TcpStream,
    stall: crate::proxy::io::WriteStall,
}

impl Stalling {
    fn new(io: tokio::net::TcpStream) -> Stalling {
        Stalling {
            io,
            stall: crate::proxy::io::WriteStall::new(
                WRITE_STALL,
                "the admin client read nothing for 10 s",
            ),
        }
    }
}

impl tokio::io::AsyncRead for Stalling {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stalling {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        this.stall.check(cx, r)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

async fn route(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    // the config in force now: a reload may change the credentials
    let cfg = shared.config.load_full();
    let cfg = &*cfg;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    // Probes are always open.
    match (method.clone(), path.as_str()) {
        (Method::GET, "/live") => return text(StatusCode::OK, "ok\n"),
        (Method::GET, "/ready") => {
            return if shared.plane.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => {}
    }
    if is_loopback(peer.ip()) {
        if let Some(denied) = check_loopback_host(&req) {
            return denied;
        }
    }
    if method == Method::GET {
        if let Some(denied) = check_read(cfg, &req) {
            return denied;
        }
    } else if method == Method::POST {
        if let Some(denied) = check_write(cfg, peer, &req) {
            return denied;
        }
    } else {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST\n");
    }
    let format = query_param(&query, "format");
    match (method, path.as_str()) {
        (Method::GET, "/") => redirect("/stats"),
        (Method::GET, "/stats") if format.as_deref() == Some("csv") => csv_resp(shared),
        (Method::GET, "/stats") if format.as_deref() == Some("json") => {
            json(StatusCode::OK, &stats(shared))
        }
        (Method::GET, "/stats;csv") => csv_resp(shared),
        (Method::GET, "/stats;json") => json(StatusCode::OK, &stats(shared)),
        (Method::GET, "/stats") => {
            let refresh = query_param(&query, "refresh")
                .and_then(|r| r.parse::<u32>().ok())
                .unwrap_or(5);
            let body = html::render(&stats(shared), refresh);
            respond(StatusCode::OK, "text/html; charset=utf-8", body)
        }
        (Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::admin::metrics::render(shared),
        ),
        (Method::GET, "/api/health/summary") => {
            json(StatusCode::OK, &model::health_summary(&stats(shared)))
        }
        (Method::POST, "/api/health/check") => {
            check_now(shared).await;
            json(StatusCode::OK, &model::health_summary(&stats(shared)))
        }
        (Method::POST, "/api/reload") => reload(shared).await,
        (Method::POST, "/api/upgrade") => upgrade(shared).await,
        (Method::GET, "/api/reload") => json(StatusCode::OK, &model::reload_view(shared)),
        (Method::GET, "/api/pools") => json(StatusCode::OK, &stats(shared).pools),
        (Method::GET, p) if p.starts_with("/api/pools/") => {
            let name = percent_decode(&p["/api/pools/".len()..]);
            match stats(shared).pools.into_iter().find(|x| x.name == name) {
                Some(pool) => json(StatusCode::OK, &pool),
                None => error(StatusCode::NOT_FOUND, &format!("no pool named {name:?}")),
            }
        }
        (Method::POST, p) if p.starts_with("/api/pools/") => {
            let rest = &p["/api/pools/".len()..];
            match rest.split_once("/servers/") {
                Some((pool, server)) => {
                    let (pool, server) = (percent_decode(pool), percent_decode(server));
                    set_server(shared, &pool, &server, req).await
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "write to /api/pools/{pool}/servers/{server}",
                ),
            }
        }
        (Method::GET, "/api/quotas") => {
            let limit = query_param(&query, "limit");
            let key = query_param(&query, "key");
            json(
                StatusCode::OK,
                &quotas(shared, limit.as_deref(), key.as_deref()),
            )
        }
        (Method::POST, "/api/quotas/reset") => reset_quota(shared, req).await,
        (Method::GET, "/api/rate_limit_store") => {
            match shared.plane.snapshot.load().rate_link.as_deref() {
                Some(link) => json(StatusCode::OK, &StoreView::of(link)),
                None => error(StatusCode::NOT_FOUND, "no [rate_limit_store] is configured"),
            }
        }
        (Method::GET, "/api/listeners") => json(StatusCode::OK, &stats(shared).listeners),
        (Method::POST, p) if listener_of_mode_path(p).is_some() => {
            let name = listener_of_mode_path(p)
                .map(percent_decode)
                .unwrap_or_default();
            set_listener_mode(shared, &name, req).await
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    }
}

/// `[rate_limit_store]` as the API shows it.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct StoreView {
    /// The URL, without a password.
    pub url: String,
    /// False while the store cannot be reached (limits are local-only, at
    /// `fallback_share`).
    pub up: bool,
    pub fallback_share: f64,
    pub sync_interval_ms: u64,
    pub syncs_ok: u64,
    pub syncs_failed: u64,
    /// Times this node fell back to local-only limits.
    pub fallbacks: u64,
    /// Keys sent in the last successful sync.
    pub last_batch: u64,
    /// Requests for keys past `max_keys` of their limit (enforced here, not shared).
    pub untracked: u64,
    pub last_error: Option<String>,
}

impl StoreView {
    fn of(l: &crate::ratelimit::Link) -> StoreView {
        use std::sync::atomic::Ordering::Relaxed;
        StoreView {
            url: l.cfg.shown_url(),
            up: l.is_up(),
            fallback_share: l.cfg.fallback_share,
            sync_interval_ms: l.cfg.sync_interval.as_millis() as u64,
            syncs_ok: l.syncs_ok.load(Relaxed),
            syncs_failed: l.syncs_failed.load(Relaxed),
            fallbacks: l.fallbacks.load(Relaxed),
            last_batch: l.last_batch.load(Relaxed),
            untracked: l.untracked.load(Relaxed),
            last_error: l
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// One key's use of one quota, as the API shows it.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct QuotaView {
    pub limit: String,
    pub key: String,
    pub used: u64,
    pub quota: u64,
    pub remaining: u64,
    /// Seconds until the window starts over (UTC).
    pub resets_in: u64,
}

fn quotas(shared: &Shared, limit: Option<&str>, key: Option<&str>) -> Vec<QuotaView> {
    let unix = crate::clock::unix_now();
    let snap = shared.plane.snapshot.load();
    let mut out = Vec::new();
    for l in &snap.rate_limits {
        if limit.is_some_and(|n| n != l.cfg.name) {
            continue;
        }
        let key = key.map(|k| l.operator_key(k));
        for e in l.quotas(key.as_deref(), unix) {
            let quota = l.quota_of(&e);
            let len = e.len.max(1);
            out.push(QuotaView {
                limit: l.cfg.name.clone(),
                used: e.used,
                quota,
                remaining: quota.saturating_sub(e.used),
                resets_in: (unix / len + 1) * len - unix,
                key: e.key,
            });
        }
    }
    out
}

/// `POST /api/quotas/reset` `{"key": "...", "limit": "name"}` (every quota
/// limit without `limit`).
async fn reset_quota(shared: &Shared, req: Request<Incoming>) -> Resp {
    if !is_json(&req) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the change as Content-Type: application/json",
        );
    }
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (key, limit) = match body::quota_reset(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let snap = shared.plane.snapshot.load_full();
    let mut reset = Vec::new();
    let mut store_errors = Vec::new();
    for l in &snap.rate_limits {
        if limit.as_deref().is_some_and(|n| n != l.cfg.name) {
            continue;
        }
        let key = l.operator_key(&key);
        let here = !l.reset_quota(&key).is_empty();
        // shared: the store's count goes too, even if this node never saw the key
        let lens = l.quota_lens();
        if let (Some(link), false) = (&l.link, lens.is_empty()) {
            match crate::ratelimit::sync::reset_shared(link, &l.cfg.name, &key, &lens).await {
                Ok(()) => {
                    if !here {
                        reset.push(l.cfg.name.clone());
                    }
                }
                Err(e) => store_errors.push(format!("{}: {e}", l.cfg.name)),
            }
        }
        if here {
            reset.push(l.cfg.name.clone());
        }
    }
    tracing::info!(key = %key, limits = ?reset, "quota reset by an operator");
    if !store_errors.is_empty() {
        return error(
            StatusCode::BAD_GATEWAY,
            &format!(
                "reset on this node, but not in the shared store (other nodes still count it): {}",
                store_errors.join("; ")
            ),
        );
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "key": key, "reset": reset }),
    )
}

/// `POST /api/listeners/{name}/mode` `{"mode": "read-only"|"normal"}`.
/// Whether a write's body is JSON (a form or text/plain POST, what a page can
/// send without asking, is refused).
/// The most an admin request body may hold, and how long it may take to arrive
/// (a client trickling or stalling its body would otherwise hold its task).
const BODY_LIMIT: usize = 16 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a change's body: 413 past [`BODY_LIMIT`] (read no further), 408 when it
/// has not all come within [`BODY_TIMEOUT`], 400 when the connection breaks.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Resp> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 16 KiB",
        )
    };
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let read = Limited::new(req.into_body(), BODY_LIMIT).collect();
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "cannot read the request body",
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive within 10 s",
        )),
    }
}

fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn set_listener_mode(shared: &Shared, name: &str, req: Request<Incoming>) -> Resp {
    if !is_json(&req) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the change as Content-Type: application/json",
        );
    }
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let read_only = match body::mode_change(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let sent = shared.control.send(ControlMsg::SetListenerMode {
        listener: name.to_string(),
        read_only,
        reply,
    });
    let result = match sent {
        Ok(()) => rx.await.unwrap_or_else(|_| Err("shutting down".into())),
        Err(_) => Err("shutting down".into()),
    };
    if let Err(e) = result {
        return error(StatusCode::NOT_FOUND, &e);
    }
    match stats(shared).listeners.into_iter().find(|l| l.name == name) {
        Some(l) => json(StatusCode::OK, &l),
        None => error(StatusCode::NOT_FOUND, "the listener is gone"),
    }
}

fn stats(shared: &Shared) -> model::Stats {
    model::build(shared, &shared.rates)
}

fn csv_resp(shared: &Shared) -> Resp {
    let body = csv::render(&stats(shared));
    respond(StatusCode::OK, "text/plain; charset=utf-8", body)
}

async fn set_server(
    shared: &Shared,
    pool_name: &str,
    server: &str,
    req: Request<Incoming>,
) -> Resp {
    // JSON only: a form or text/plain POST (what a page can send without asking) is refused
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the change as Content-Type: application/json",
        );
    }
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (state, weight) = match body::server_change(&bytes) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    // The control task makes the change (it is the one writer of server state)
    // and answers once the new weight is in the balancers.
    let (reply, rx) = tokio::sync::oneshot::channel();
    let sent = shared.control.send(ControlMsg::SetServer {
        pool: pool_name.to_string(),
        server: server.to_string(),
        state,
        weight,
        reply,
    });
    let result = match sent {
        Ok(()) => rx.await.unwrap_or_else(|_| Err("shutting down".into())),
        Err(_) => Err("shutting down".into()),
    };
    if let Err(e) = result {
        return error(StatusCode::NOT_FOUND, &e);
    }
    let snap = shared.plane.snapshot.load();
    let Some(id) = snap
        .pool(pool_name)
        .and_then(|p| {
            p.servers
                .iter()
                .find(|s| *s.id == *server || s.addr.to_string() == server)
        })
        .map(|s| s.id.to_string())
    else {
        return error(StatusCode::NOT_FOUND, "the server left the pool");
    };
    drop(snap);
    match stats(shared)
        .pools
        .into_iter()
        .find(|p| p.name == pool_name)
        .and_then(|p| p.servers.into_iter().find(|s| s.id == id))
    {
        Some(view) => json(StatusCode::OK, &view),
        None => error(StatusCode::NOT_FOUND, "the server left the pool"),
    }
}

/// Re-reads the config file and applies it; 200 with what changed, or 422 with
/// every problem (file, line, key) and nothing changed.
async fn reload(shared: &Shared) -> Resp {
    match crate::control::request_reload(&shared.control, "api").await {
        Some(r) if r.ok => json(StatusCode::OK, &r),
        Some(r) => json(StatusCode::UNPROCESSABLE_ENTITY, &r),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

/// Starts the new binary and hands over to it: 200 `{"pid": N}` once it serves
/// (this process then drains and exits), or 500 with why (this one keeps
/// serving).
async fn upgrade(shared: &Shared) -> Resp {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let sent = shared.control.send(ControlMsg::Upgrade {
        trigger: "api",
        reply: Some(reply),
    });
    let r = match sent {
        Ok(()) => rx.await.unwrap_or_else(|_| Err("shutting down".into())),
        Err(_) => Err("shutting down".into()),
    };
    match r {
        Ok(pid) => json(StatusCode::OK, &serde_json::json!({ "pid": pid })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Asks every health task to check now and waits (bounded) for the results.
async fn check_now(shared: &Shared) {
    let t0 = SystemTime::now();
    let snap = shared.plane.snapshot.load_full();
    let mut wait = Duration::ZERO;
    for p in &snap.pools {
        if let Some(h) = &p.health {
            wait = wait.max(h.timeout);
            for s in &p.servers {
                s.state.checks.now.notify_one();
            }
        }
    }
    let deadline = tokio::time::Instant::now() + wait + Duration::from_secs(1);
    loop {
        let done = snap.pools.iter().filter(|p| p.health.is_some()).all(|p| {
            p.servers.iter().all(|s| {
                s.state.admin() == AdminState::Maint
                    || s.state
                        .checks
                        .last
                        .load()
                        .as_ref()
                        .is_some_and(|c| c.at >= t0)
            })
        });
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// A request from loopback must name this host as loopback: an IP address,
/// `localhost`, the machine's host name or another single label. A page from
/// elsewhere in a browser on this host (or behind `ssh -L`) can make its own
/// name resolve to 127.0.0.1 (DNS rebinding); its requests then pass as
/// same-origin and as loopback, trusted for writes without a token, but
/// carry its name as Host.
fn check_loopback_host(req: &Request<Incoming>) -> Option<Resp> {
    // (none: not a browser's request, which always names its host)
    let host = req.headers().get(header::HOST)?;
    let Ok(host) = host.to_str() else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "a Host that is not ASCII: refused",
        ));
    };
    // the name without its port (an IPv6 literal keeps its brackets)
    let name = match host.rsplit_once(':') {
        Some((n, port))
            if !n.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') =>
        {
            n
        }
        _ => host,
    };
    let literal = name.parse::<IpAddr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<IpAddr>().is_ok());
    // a single label (`x`, a short host name) is no name on the internet,
    // where a rebinding page's name must resolve
    let local = !name.contains('.')
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || std::fs::read_to_string("/proc/sys/kernel/hostname")
            .is_ok_and(|h| !h.trim().is_empty() && h.trim().eq_ignore_ascii_case(name));
    if literal || local {
        return None;
    }
    Some(error(
        StatusCode::FORBIDDEN,
        &format!(
            "Host {host:?} is not a name of this host for a loopback client \
             (use an IP address or localhost): refused, as DNS rebinding would send it"
        ),
    ))
}

fn check_write(cfg: &Config, peer: SocketAddr, req: &Request<Incoming>) -> Option<Resp> {
    // A browser page on this host may POST here (loopback is trusted without a
    // token); browsers send Origin on such requests, scripts and the CLI do not.
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|o| o == host);
        if !same {
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross-origin writes are refused",
            ));
        }
    }
    match &cfg.admin.token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                None
            } else {
                Some(error(
                    StatusCode::UNAUTHORIZED,
                    "a valid \"Authorization: Bearer <token>\" is required",
                ))
            }
        }
        None if is_loopback(peer.ip()) => None,
        None => Some(error(
            StatusCode::FORBIDDEN,
            "writes are accepted only from loopback clients unless [admin] token_env is set",
        )),
    }
}

fn check_read(cfg: &Config, req: &Request<Incoming>) -> Option<Resp> {
    let (user, pass) = cfg.admin.read_auth.as_ref()?;
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let basic = auth
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(base64_decode)
        .is_some_and(|cred| constant_time_eq(&cred, format!("{user}:{pass}").as_bytes()));
    // the admin token's holder can write, so it may read too (the CLI sends it)
    let bearer = match (
        &cfg.admin.token,
        auth.and_then(|v| v.strip_prefix("Bearer ")),
    ) {
        (Some(token), Some(given)) => constant_time_eq(given.as_bytes(), token.as_bytes()),
        _ => false,
    };
    if basic || bearer {
        return None;
    }
    let msg = if cfg.admin.token.is_some() {
        "authentication required: basic auth ([admin] read_auth) or \
         \"Authorization: Bearer <token>\" with the admin token"
    } else {
        "authentication required: basic auth ([admin] read_auth)"
    };
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"rampart\""),
    );
    Some(r)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The (encoded) listener name of `/api/listeners/{name}/mode`. (Cut with
/// prefix and suffix, which cannot overlap: `/api/listeners/mode` has both,
/// overlapping, and sliced between them panicked.)
fn listener_of_mode_path(p: &str) -> Option<&str> {
    p.strip_prefix("/api/listeners/")?.strip_suffix("/mode")
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response with a body of the given content type.
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    respond(status, "text/plain; charset=utf-8", body)
}

fn redirect(to: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec_pretty(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    respond(status, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json(status, &serde_json::json!({ "error": msg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address holds at most MAX_PER_PEER slots; an IPv6 /64 is one
    /// address; a slot dropped is given back.
    #[test]
    fn peer_slots_per_address_and_per_ipv6_64() {
        let map: Arc<std::sync::Mutex<PeerCounts>> = Arc::default();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mut held: Vec<PeerSlot> = (0..MAX_PER_PEER)
            .map(|k| PeerSlot::take(&map, ip(&format!("2001:db8::{:x}", k + 1))).unwrap())
            .collect();
        assert!(PeerSlot::take(&map, ip("2001:db8::ffff:1")).is_none());
        assert!(PeerSlot::take(&map, ip("2001:db8:0:1::1")).is_some());
        assert!(PeerSlot::take(&map, ip("192.0.2.1")).is_some());
        held.pop();
        assert!(PeerSlot::take(&map, ip("2001:db8::1")).is_some());
        drop(held);
        assert!(map.lock().unwrap().is_empty());
    }

    #[test]
    fn helpers() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
        assert_eq!(percent_decode("127.0.0.1%3A80"), "127.0.0.1:80");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%é%"), "%é%");
        assert_eq!(
            query_param("a=1&refresh=10", "refresh").as_deref(),
            Some("10")
        );
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert_eq!(
            listener_of_mode_path("/api/listeners/web/mode"),
            Some("web")
        );
        assert_eq!(listener_of_mode_path("/api/listeners//mode"), Some(""));
        assert_eq!(listener_of_mode_path("/api/listeners/mode"), None);
        assert_eq!(listener_of_mode_path("/api/listeners/web"), None);
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }
}
