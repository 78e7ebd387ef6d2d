//! One request's (or TCP session's) way through its pool, shared by the three
//! front ends (the HTTP/1 fast path, the hyper adapter and TCP):
//!
//! route -> [policy] -> pick and acquire a server -> attempt -> retry on another
//! server, or give up -> log.
//!
//! A front end owns its protocol (how the request is sent, how the answer is read
//! and forwarded, what the client is told); this owns the decisions and their
//! counters: which server, whether a failure or a status sends the request to
//! another server (as the pool's retry settings and budget allow), and which
//! failure the client hears about when no server is left. Traffic policy (request
//! rules, rate limits, priority shedding) belongs between routing and
//! `Lifecycle::new`, once for all three front ends.

use super::ProxyError;
use crate::config::{Balance, HashKey};
use crate::limits::ListenerShared;
use crate::plane::Plane;
use crate::pool::balance::hash_parts;
use crate::pool::breaker::BreakerState;
use crate::pool::circuit::Admit;
use crate::pool::{Pool, Server, ServerGuard};
use crate::rules::Priority;
use crate::rules::{
    is_write, Applied, Outcome, ReadOnly, RequestView, RewrittenView, RuleEdits, Terminal,
};
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http::{HeaderName, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where a tcp connection goes.
pub enum Routed {
    Pool(Arc<Pool>),
    /// No route takes it, and its listener has no pool: closed.
    Nowhere,
    /// Its listener is no longer in the config (a reload): closed.
    Gone,
}

/// Routing: the pool a tcp connection on the listener `listener` (accepted
/// on `bound`) goes to, in the current snapshot, by the server name of its
/// ClientHello (`sni`, a passthrough route's) or else the listener's pool.
#[inline]
pub fn route(
    plane: &Plane,
    listener: &Arc<ListenerShared>,
    bound: SocketAddr,
    sni: Option<&str>,
) -> Routed {
    let snap = plane.snapshot.load();
    let Some(l) = snap.listener_of(listener, bound) else {
        return Routed::Gone;
    };
    match l.router.route(sni, "") {
        None => Routed::Nowhere,
        Some(idx) => snap
            .pools
            .get(idx)
            .map_or(Routed::Gone, |p| Routed::Pool(Arc::clone(p))),
    }
}

/// What a listener's rules and routes decided for an HTTP request.
#[derive(Debug)]
pub enum Decision {
    /// To this pool, with these header edits (None: none matched).
    Pool {
        pool: Arc<Pool>,
        edits: Option<RuleEdits>,
        /// Its class in the pool's queue (rules' `priority`).
        priority: Priority,
        /// The longest body it may send (0: no limit): its rules' or its
        /// listener's `max_request_body`.
        max_body: u64,
    },
    /// Answered by a rule: `deny`.
    Deny { status: StatusCode, body: Bytes },
    /// Answered by a rule: `redirect`, its target rendered for this request.
    Redirect {
        status: StatusCode,
        location: String,
    },
    /// Answered by a rule: `respond`.
    Respond {
        status: StatusCode,
        body: Bytes,
        content_type: http::HeaderValue,
    },
    /// A write while the listener or its pool is read-only.
    ReadOnly {
        status: StatusCode,
        body: Bytes,
        retry_after: u64,
    },
    /// A declared body over the request's `max_request_body` (its rules'
    /// or its listener's): 413, before any limit is charged, as nginx
    /// checks a location's `client_max_body_size` before `limit_req`.
    TooLarge,
    /// Over a rate limit: 429.
    Limited {
        name: String,
        /// `RateLimit-Policy`.
        policy: String,
        /// Seconds until the request would conform (at least 1).
        retry_after: u64,
    },
    /// The listener is not in the current generation (a reload in progress).
    Reconfiguring,
    /// To a pool the asking path does not serve (`stays` said no): decided
    /// again, limits and all, by the path that does. Nothing was charged.
    Elsewhere,
}

/// The longest target a rule's path rewrite may make (`http::Uri`'s limit).
const MAX_REWRITTEN: usize = u16::MAX as usize - 1;

/// The policy point of an HTTP request: the listener's rules in order (a
/// terminal one decides), then its routes and default pool. Rules are part of
/// the listener's generation, read from the same snapshot as the pools.
/// `stays`: whether the asking path serves the pool chosen; if not, the
/// answer is `Elsewhere`, before any rate limit is charged or read-only
/// refusal counted (the other path decides again).
pub fn decide(
    plane: &Plane,
    listener: &Arc<ListenerShared>,
    bound: SocketAddr,
    req: &impl RequestView,
    stays: impl FnOnce(&Pool) -> bool,
) -> Decision {
    let snap = plane.snapshot.load();
    let Some(l) = snap.listener_of(listener, bound) else {
        return Decision::Reconfiguring;
    };
    let (idx, applied, rewritten) = if l.rules.is_empty() {
        (
            l.router.route(req.host(), req.path()),
            Applied::default(),
            None,
        )
    } else {
        match l.rules.evaluate(req) {
            Outcome::Terminal(Terminal::Deny { status, body }, ..) => {
                listener.denied.fetch_add(1, Ordering::Relaxed);
                return Decision::Deny {
                    status: *status,
                    body: body.clone(),
                };
            }
            Outcome::Terminal(Terminal::Redirect { status, to }, _, rw) => {
                listener.redirected.fetch_add(1, Ordering::Relaxed);
                let location = match rw.as_deref() {
                    Some(rw) => to.render(&RewrittenView { inner: req, rw }),
                    None => to.render(req),
                };
                return Decision::Redirect {
                    status: *status,
                    location,
                };
            }
            Outcome::Terminal(
                Terminal::Respond {
                    status,
                    body,
                    content_type,
                },
                ..,
            ) => {
                listener.responded.fetch_add(1, Ordering::Relaxed);
                return Decision::Respond {
                    status: *status,
                    body: body.clone(),
                    content_type: content_type.clone(),
                };
            }
            Outcome::Terminal(Terminal::Pool(i), a, rw) => (Some(*i), a, rw),
            Outcome::Continue(a, rw) => {
                let path = rw.as_deref().map_or(req.path(), |w| w.path.as_str());
                (l.router.route(req.host(), path), a, rw)
            }
        }
    };
    // (the `http` crate holds no longer target, and hyper's path would have
    // to send the client's: both paths refuse it alike)
    if rewritten
        .as_ref()
        .is_some_and(|w| w.target.len() > MAX_REWRITTEN)
    {
        return Decision::Deny {
            status: StatusCode::URI_TOO_LONG,
            body: Bytes::from_static(b"414 URI Too Long\n"),
        };
    }
    // (an http listener always has a pool: the config requires it)
    let Some(pool) = idx.and_then(|i| snap.pools.get(i)) else {
        return Decision::Reconfiguring;
    };
    if !stays(pool) {
        return Decision::Elsewhere;
    }
    let max_body = l.rules.max_body(applied).unwrap_or(l.max_request_body);
    if max_body > 0 && req.declared_body() > max_body {
        return Decision::TooLarge;
    }
    // A refused write is not charged to a rate or a quota: read-only first.
    if is_write(applied.writes, req.method()) {
        if let Some((ro, _)) = read_only(&snap, l, pool) {
            listener.read_only_refused.fetch_add(1, Ordering::Relaxed);
            return Decision::ReadOnly {
                status: ro.status,
                body: ro.body.clone(),
                retry_after: ro.retry_after,
            };
        }
    }
    if applied.limits != 0 {
        let now = crate::clock::now_us();
        let mut bits = applied.limits;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(limiter) = snap.rate_limits.get(i) else {
                continue;
            };
            if let Err(over) = limiter.admit(req, now, crate::clock::unix_now) {
                // the limits before this one counted the request, which does
                // not pass: it uses none of them
                let mut before = applied.limits & ((1u64 << i) - 1);
                if before != 0 {
                    let unix = crate::clock::unix_now();
                    while before != 0 {
                        let j = before.trailing_zeros() as usize;
                        before &= before - 1;
                        if let Some(earlier) = snap.rate_limits.get(j) {
                            earlier.refund(req, now, unix);
                        }
                    }
                }
                listener.rate_limited.fetch_add(1, Ordering::Relaxed);
                let by = if over.quota {
                    &limiter.store.refused_quota
                } else {
                    &limiter.store.refused_rate
                };
                by.fetch_add(1, Ordering::Relaxed);
                return Decision::Limited {
                    name: limiter.cfg.name.clone(),
                    policy: crate::ratelimit::policy_header(&limiter.cfg.name, over.q, over.w),
                    retry_after: over.retry_after.as_micros().div_ceil(1_000_000).max(1) as u64,
                };
            }
        }
    }
    Decision::Pool {
        pool: Arc::clone(pool),
        priority: applied.priority.unwrap_or_default(),
        max_body,
        edits: (!applied.is_empty()).then(|| RuleEdits {
            rules: Arc::clone(&l.rules),
            applied,
            target: rewritten.map(|w| w.target.into_boxed_str()),
        }),
    }
}

/// Whether a listener refuses writes now, and why: switched by an operator,
/// or a pool of its `read_only_when`, or of the `read_only_when` of a pool it
/// routes to, has no eligible server. (The control task watches this: the
/// switch is logged, counted and notified there.)
pub fn listener_read_only(
    snap: &crate::snapshot::Snapshot,
    l: &crate::snapshot::ListenerRuntime,
) -> Option<String> {
    let routed = l
        .rules
        .pools()
        .chain(l.router.routes.iter().map(|r| r.pool))
        .chain(l.router.default_pool);
    let mut seen = Vec::new();
    for i in routed {
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        if let Some((_, why)) = snap.pools.get(i).and_then(|p| read_only(snap, l, p)) {
            return Some(why.to_string());
        }
    }
    None
}

/// Whether writes are refused for a request to `pool` on the listener `l`, with
/// the answer and why: an operator's switch, or a pool of `read_only_when` (the
/// listener's, then the pool's) with no eligible server.
fn read_only<'a>(
    snap: &'a crate::snapshot::Snapshot,
    l: &'a crate::snapshot::ListenerRuntime,
    pool: &'a Pool,
) -> Option<(&'a ReadOnly, Why<'a>)> {
    static MANUAL: std::sync::OnceLock<ReadOnly> = std::sync::OnceLock::new();
    if l.shared.manual_read_only.load(Ordering::Relaxed) {
        let ro = l
            .read_only
            .as_deref()
            .unwrap_or_else(|| MANUAL.get_or_init(ReadOnly::manual));
        return Some((ro, Why::Operator));
    }
    let empty = |ro: &ReadOnly| {
        ro.when.iter().find_map(|&i| {
            snap.pools
                .get(i)
                .filter(|p| !has_eligible(p))
                .map(|p| Why::Empty(&p.name))
        })
    };
    for ro in [l.read_only.as_deref(), pool.read_only.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(why) = empty(ro) {
            return Some((ro, why));
        }
    }
    None
}

/// Whether a pool of `read_only_when` has an eligible server: one that could
/// take traffic now, or one whose breaker is HALF-OPEN (its single trial
/// request in flight). A trial is not a failure: counted out, a pool of one
/// server would switch read-only mode on for the length of every trial, and
/// off again.
fn has_eligible(p: &Pool) -> bool {
    p.has_candidate(&[])
        || (0..p.servers.len()).any(|i| {
            p.in_service(i) && p.servers[i].state.breaker.state() == BreakerState::HalfOpen
        })
}

/// Why writes are refused (formatted only where it is logged, not per request).
#[derive(Debug, Clone, Copy)]
enum Why<'a> {
    Operator,
    /// A pool of `read_only_when` has no eligible server.
    Empty(&'a str),
}

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Operator => f.write_str("switched by an operator"),
            Why::Empty(pool) => write!(f, "pool {pool:?} has no eligible server"),
        }
    }
}

/// The balancing key of a request (0 unless the pool balances by hash).
pub fn hash_key<'a>(
    pool: &Pool,
    ip: IpAddr,
    target: &str,
    header: impl FnOnce(&HeaderName) -> Option<&'a [u8]>,
) -> u64 {
    if pool.balance != Balance::Hash {
        return 0;
    }
    match &pool.hash_key {
        HashKey::ClientIp => hash_ip(ip),
        HashKey::Uri => hash_parts(&[target.as_bytes()]),
        HashKey::Header(h) => match header(h) {
            Some(v) => hash_parts(&[v]),
            None => hash_ip(ip),
        },
    }
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash_parts(&[&v4.octets()]),
        IpAddr::V6(v6) => hash_parts(&[&v6.octets()]),
    }
}

/// The keep-alive race: neither the server's nor the pool's failure.
fn err_is_idle_race(e: &ProxyError) -> bool {
    matches!(e, ProxyError::Upstream(u) if u.is_idle_race())
}

/// Where one request stands in its pool.
pub struct Lifecycle {
    pub pool: Arc<Pool>,
    key: u64,
    /// Servers already tried (by index in `pool`).
    tried: Vec<usize>,
    /// The last failed attempt: what the client hears if no server is left.
    /// (The server is None when it left the pool while the request waited.)
    last: Option<(ProxyError, Option<usize>)>,
    /// Its class in the pool's queue.
    priority: Priority,
    /// The pool circuit's say on this request: None before the first acquire,
    /// and again once its outcome is recorded.
    circuit: Option<Admit>,
    /// The slot a retry on a status goes to: taken before the answer that
    /// sent it there was dropped, handed out by the next `acquire`.
    next: Option<ServerGuard>,
    /// A wait in the queue may end in a pool whose servers are reached
    /// another way (TCP, which decides how after it has its slot).
    any_way: bool,
    /// The server the request's cookie names (`[pool.cookie]`), asked first
    /// by the first attempt; a retry goes elsewhere.
    prefer: Option<usize>,
}

impl Drop for Lifecycle {
    /// A circuit trial that ended without an outcome (the client went away)
    /// lets another request be the trial.
    fn drop(&mut self) {
        if self.circuit == Some(Admit::Trial) {
            self.pool.shared.circuit.abandon_trial();
        }
    }
}

/// The request ends without a usable answer: the error to answer with, and the
/// server of the last attempt, if one was made.
pub struct GiveUp {
    pub err: ProxyError,
    server: Option<usize>,
}

impl GiveUp {
    pub fn server<'a>(&self, pool: &'a Pool) -> Option<&'a Server> {
        self.server.and_then(|i| pool.servers.get(i).map(|s| &**s))
    }
}

impl Lifecycle {
    /// Starts a request routed to `pool`; `key` is its balancing key (0 unless
    /// the pool balances by hash). The request earns the pool's retry budget its
    /// share. `priority`: its class in the pool's queue.
    pub fn new(pool: Arc<Pool>, key: u64, priority: Priority) -> Lifecycle {
        pool.shared.budget.deposit(pool.retry.budget_percent);
        Lifecycle {
            pool,
            key,
            tried: Vec::new(),
            last: None,
            priority,
            circuit: None,
            next: None,
            any_way: false,
            prefer: None,
        }
    }

    /// The first attempt goes to server `i` (of this pool) while it can take
    /// it: the server the request's persistence cookie names.
    pub fn prefer(&mut self, i: usize) {
        self.prefer = Some(i);
    }

    /// For a front end that decides how to reach the server only once it has
    /// its slot (TCP): a request that waited through a reload that changed
    /// that is served by the new pool, not refused.
    pub fn reached_any_way(mut self) -> Lifecycle {
        self.any_way = true;
        self
    }

    /// The request's outcome, for the pool's circuit (once per request).
    fn outcome(&mut self, ok: bool) {
        let (Some(cfg), Some(admit)) = (&self.pool.circuit, self.circuit.take()) else {
            return;
        };
        let trial = admit == Admit::Trial;
        if self
            .pool
            .shared
            .circuit
            .record(cfg, ok, trial, crate::clock::now_ms())
        {
            tracing::warn!(pool = %self.pool.name, trial, "the pool's circuit opened: its requests fail fast");
        } else if trial && ok {
            tracing::info!(pool = %self.pool.name, "the pool's circuit closed: a trial request succeeded");
        }
    }

    /// A TCP session is connected: a success for the pool's circuit.
    pub fn connected(&mut self) {
        self.outcome(true);
    }

    /// A slot on the next server to try (a server not tried yet), counted as a
    /// request to it; or, when none is left, the failure the client hears about:
    /// the last attempt's, else why no server could be picked.
    pub async fn acquire(&mut self) -> Result<ServerGuard, GiveUp> {
        if let Some(g) = self.next.take() {
            // a retry on a status: its slot was taken when it was decided
            g.server()
                .state
                .traffic
                .total
                .fetch_add(1, Ordering::Relaxed);
            return Ok(g);
        }
        if let (Some(cfg), true) = (&self.pool.circuit, self.tried.is_empty()) {
            // the first attempt asks the circuit; an open one fails fast
            match self.pool.shared.circuit.admit(cfg, crate::clock::now_ms()) {
                Admit::No { retry_after } => {
                    return Err(GiveUp {
                        err: ProxyError::CircuitOpen { retry_after },
                        server: None,
                    })
                }
                a => self.circuit = Some(a),
            }
        }
        match self
            .pool
            .acquire_in(
                self.key,
                &self.tried,
                self.priority,
                !self.any_way,
                self.prefer.take(),
            )
            .await
        {
            Ok(g) => {
                if !Arc::ptr_eq(g.pool(), &self.pool) {
                    // it waited in the queue through a change of the pool:
                    // what it tried is in the new pool's indices from now on
                    let new = Arc::clone(g.pool());
                    self.tried = self.pool.remap(&new, &self.tried);
                    let pool = &self.pool;
                    self.last = self.last.take().map(|(err, i)| {
                        let i = i.and_then(|i| pool.remap(&new, &[i]).first().copied());
                        (err, i)
                    });
                    self.pool = new;
                }
                g.server()
                    .state
                    .traffic
                    .total
                    .fetch_add(1, Ordering::Relaxed);
                Ok(g)
            }
            Err(pick) => Err(match self.last.take() {
                Some((err, server)) => {
                    self.outcome(false);
                    GiveUp { err, server }
                }
                None => GiveUp {
                    err: pick.into(),
                    server: None,
                },
            }),
        }
    }

    /// Gives up after a retry was decided but cannot be made: the client hears
    /// about the last failed attempt.
    pub fn abandon(&mut self) -> GiveUp {
        match self.last.take() {
            Some((err, server)) => GiveUp { err, server },
            None => GiveUp {
                err: crate::pool::PickError::NoServer.into(),
                server: None,
            },
        }
    }

    fn attempts_left(&self) -> bool {
        self.tried.len() < self.pool.retry.retries as usize
    }

    /// An attempt failed: it is reported to the server's breaker (unless the
    /// client's body broke off, or the server did nothing wrong: the keep-alive
    /// race, an HTTP/2 stream it did not process) and counted. Ok: try another
    /// server (the retry is counted). Err: give up with this failure.
    /// `resendable`: nothing was sent, or nothing processed, so the request can
    /// go again as it is; `replayable`: a copy was kept.
    pub fn failed(
        &mut self,
        guard: &mut ServerGuard,
        error: UpstreamError,
        resendable: bool,
        replayable: bool,
    ) -> Result<(), GiveUp> {
        let idx = guard.index();
        let client_fault = error.is_client_fault();
        // (a server that refuses a stream or drains with GOAWAY sheds load or
        // shuts down: its breaker does not eject it for that, unless it
        // refused the same stream four times; the pool's circuit still
        // counts a request that got no answer)
        if !client_fault && !error.is_idle_race() && !error.spares_server() {
            guard.failure();
        }
        // (the budget is asked last: a retry that cannot be made spends nothing)
        let again = self.attempts_left()
            && !client_fault
            && may_retry(&self.pool, &error, resendable, replayable)
            && self.another_server(idx)
            && self.pool.retry_allowed();
        let err = ProxyError::Upstream(error);
        err.count_server(&self.pool.servers[idx]);
        if !again {
            if !client_fault && !err_is_idle_race(&err) {
                self.outcome(false);
            }
            return Err(GiveUp {
                err,
                server: Some(idx),
            });
        }
        tracing::debug!(pool = %self.pool.name, server = %self.pool.servers[idx].id, error = %err, "retrying on another server");
        self.note_retry(idx);
        self.last = Some((err, Some(idx)));
        Ok(())
    }

    /// A server answered with `status`: reported to its breaker. Returns whether
    /// the request goes to another server instead (the retry then counted): a
    /// status listed in retry_on, attempts and budget left, a copy of the request
    /// kept (`replayable`), and a slot on another server free now, taken here
    /// (the next `acquire` hands it out). Otherwise the client gets this answer,
    /// not a 503 made up after the answer was dropped: the retry does not wait
    /// in the queue, and cannot find its server gone, once the answer is lost.
    pub fn answered(&mut self, guard: &mut ServerGuard, status: u16, replayable: bool) -> bool {
        let idx = guard.index();
        self.pool.servers[idx].state.traffic.responses.count(status);
        if status >= 500 && self.pool.breaker.on_5xx {
            guard.failure();
        } else {
            guard.success();
        }
        let next =
            if replayable && self.attempts_left() && self.pool.retry.on_status.contains(&status) {
                self.slot_elsewhere(idx)
            } else {
                None
            };
        let Some(next) = next else {
            // the answer the client gets: a server error fails the circuit's count
            self.outcome(status < 500);
            return false;
        };
        self.pool.servers[idx]
            .state
            .traffic
            .response_errors
            .fetch_add(1, Ordering::Relaxed);
        self.note_retry(idx);
        self.next = Some(next);
        true
    }

    /// The servers tried, and `idx`: those a retry does not go to.
    fn tried_and(&self, idx: usize) -> Vec<usize> {
        let mut others = self.tried.clone();
        others.push(idx);
        others
    }

    /// Whether a server neither tried nor `idx` could take the request now.
    fn another_server(&self, idx: usize) -> bool {
        self.pool.has_candidate(&self.tried_and(idx))
    }

    /// For a retry on a status: a slot free now on a server neither tried nor
    /// `idx`, if the budget allows the retry (its token is spent only once the
    /// slot is in hand). None when no server is left, when every one is full
    /// or requests of its class or a higher one wait for a slot (the request
    /// does not queue while it holds an answer), or when the budget is spent.
    fn slot_elsewhere(&self, idx: usize) -> Option<ServerGuard> {
        let pool = &self.pool;
        let queue = &pool.shared.queue;
        if queue.must_queue(self.priority) {
            return None;
        }
        let slot = pool.try_acquire(self.key, &self.tried_and(idx))?;
        if !pool.retry_allowed() {
            // dropped: the slot is free again
            return None;
        }
        if pool.max_conn_per_server > 0 {
            queue.admitted(self.priority);
        }
        Some(slot)
    }

    fn note_retry(&mut self, idx: usize) {
        self.pool.servers[idx]
            .state
            .traffic
            .retries
            .fetch_add(1, Ordering::Relaxed);
        self.pool.shared.retries.fetch_add(1, Ordering::Relaxed);
        self.tried.push(idx);
    }
}

/// Whether the pool's retry settings send a failed attempt to another server
/// (whether there is one, and the budget, are asked after).
fn may_retry(pool: &Pool, error: &UpstreamError, resendable: bool, replayable: bool) -> bool {
    let r = &pool.retry;
    match error {
        // nothing reached the application: a failed connect, or an HTTP/2
        // stream the server did not process (RFC 9113 8.7)
        e if e.is_connect() || e.is_unprocessed() => {
            r.on_connect_failure && (resendable || replayable)
        }
        UpstreamError::Timeout { .. } => r.on_timeout && replayable,
        // no time is left for another server
        UpstreamError::Deadline { .. } => false,
        _ => r.on_reset && (resendable || replayable),
    }
}
