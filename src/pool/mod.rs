//! A pool of servers: the members of one snapshot, their long-lived runtime state
//! (`Arc<ServerState>`, which outlives snapshots), the balancer, and the queue that
//! requests wait in when every server is at `max_connections_per_server`.

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod circuit;
pub mod persist;
pub mod priority;
mod server;

pub use server::{AdminState, Carried, CheckReport, Checks, Health, ServerState, Traffic};

use crate::clock;
use crate::config::{Balance, BreakerConfig, HashKey, HealthConfig, PoolConfig, RetryConfig};
use crate::rules::Priority;
use balance::{Balancer, Members};
use breaker::Change;
use budget::RetryBudget;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// `name` from the config, else the address; used in logs and error bodies.
    pub id: Arc<str>,
    pub weight: u32,
    pub backup: bool,
    /// The DNS name this member was found under (None: written in the config).
    pub source: Option<Arc<str>>,
    pub state: Arc<ServerState>,
}

/// A member as the snapshot builder hands it to a pool: static from the config, or
/// found through DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub addr: SocketAddr,
    pub name: Option<String>,
    pub weight: u32,
    pub backup: bool,
    pub source: Option<Arc<str>>,
}

/// Pool-level state shared by all snapshots of the pool.
#[derive(Debug, Default)]
pub struct PoolShared {
    /// Requests waiting for a free server slot, by priority class.
    pub queue: priority::Queue,
    /// Woken when a slot is freed on a server requests are pinned to (their
    /// persistence cookie names it): one per pool, not per server, whose
    /// memory counts at 10,000 members; a waiter for another server of the
    /// pool looks and waits again.
    pub pinned_freed: tokio::sync::Notify,
    /// Requests that ended with an error response (502/503/504) or a failed tcp session.
    pub errors: AtomicU64,
    /// Retries made (each on another server than the failed attempt).
    pub retries: AtomicU64,
    pub budget: RetryBudget,
    pub histograms: PoolHistograms,
    /// The pool-level circuit (`[pool.circuit]`), kept across reloads.
    pub circuit: circuit::Circuit,
    /// DNS answers applied to the members: in place (those that stayed carried
    /// over, `Snapshot::refresh_pool`) and by building the pool anew.
    pub dns_in_place: AtomicU64,
    pub dns_rebuilt: AtomicU64,
    /// The pool of the snapshot in force (the control task sets it before
    /// storing a snapshot): a request waiting in the queue moves to it when it
    /// wakes, so it sees the members DNS or a reload added, and none retired.
    latest: std::sync::Mutex<std::sync::Weak<Pool>>,
}

impl PoolShared {
    /// `pool` is the one in force now.
    pub fn set_latest(&self, pool: &Arc<Pool>) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(pool);
    }

    /// The pool in force, if it is not `than`.
    fn newer(&self, than: &Arc<Pool>) -> Option<Arc<Pool>> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()?;
        (!Arc::ptr_eq(&latest, than)).then_some(latest)
    }
}

impl PoolShared {
    /// A pool's shared state, its histograms labelled with its name.
    pub fn new(pool: &str) -> PoolShared {
        PoolShared {
            histograms: PoolHistograms::new(pool),
            ..Default::default()
        }
    }
}

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Connect times (also the TLS handshake histogram's buckets).
pub const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A pool's two histograms, owned by its `PoolShared` (so they are carried across
/// reloads with it, and dropped with it); `admin::metrics::render` reads them at scrape.
#[derive(Debug, Clone)]
pub struct PoolHistograms {
    pub request_duration: prometheus::Histogram,
    pub connect_time: prometheus::Histogram,
}

impl PoolHistograms {
    pub fn new(pool: &str) -> PoolHistograms {
        let h = |name: &str, help: &str, buckets: &[f64]| {
            let opts = prometheus::HistogramOpts::new(name, help)
                .const_label("pool", pool)
                .buckets(buckets.to_vec());
            // constant names and buckets; only an invalid label value could fail,
            // and then the pool keeps an unlabelled histogram
            prometheus::Histogram::with_opts(opts.clone()).unwrap_or_else(|_| {
                prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help))
                    .unwrap_or_else(|e| unreachable!("constant histogram: {e}"))
            })
        };
        PoolHistograms {
            request_duration: h(
                "rampart_http_request_duration_seconds",
                "Time from request received to response complete, by pool",
                DURATION_BUCKETS,
            ),
            connect_time: h(
                "rampart_backend_connect_seconds",
                "Time to connect to a backend (new connections only), by pool",
                CONNECT_BUCKETS,
            ),
        }
    }
}

impl Default for PoolHistograms {
    /// A pool built outside a snapshot (unit tests).
    fn default() -> Self {
        PoolHistograms::new("")
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    /// `max_grpc_timeout` (None: `grpc-timeout` not read; zero: no cap).
    pub max_grpc_timeout: Option<Duration>,
    pub max_conn_per_server: u32,
    pub queue_timeout: Duration,
    /// `shed_after`: how long each priority class may wait before it is shed.
    pub shedding: Option<priority::Shedding>,
    /// None: sized by demand (`upstream::idle`).
    pub max_idle_per_server: Option<usize>,
    pub keepalive_timeout: Duration,
    pub tunnel_timeout: Duration,
    pub health: Option<HealthConfig>,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    pub slow_start: Duration,
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// tcp mode: splice(2) bulk data between plain TCP sockets.
    pub splice: bool,
    /// TLS to the servers (`[pool.tls]`).
    pub tls: Option<crate::tls::PoolTls>,
    pub protocol: crate::config::Protocol,
    pub http2: crate::config::PoolHttp2,
    /// `[pool.circuit]`: None, no pool-level circuit.
    pub circuit: Option<crate::config::CircuitConfig>,
    /// `read_only_when` for requests routed here.
    pub read_only: Option<crate::rules::ReadOnly>,
    /// Which settings this pool's backend connections are made under: the
    /// same number across reloads and DNS refreshes while `tls`, `protocol`
    /// and `send_proxy` stay the same, the next one when a reload changes
    /// them ([`Pool::next_conn_epoch`]). Idle connections are kept with the
    /// epoch they were made under and reused only by a pool of that epoch,
    /// so none made under a CA, server name or protocol a reload replaced
    /// carries another request.
    pub conn_epoch: u64,
    /// Each member behind its own `Arc`, so that a DNS refresh builds the next
    /// pool by copying pointers, not members (`Snapshot::refresh_pool`).
    pub servers: Vec<Arc<Server>>,
    pub shared: Arc<PoolShared>,
    balancer: Balancer,
    /// `[pool.cookie]`: each server's value of the cookie.
    pub persist: Option<persist::Persist>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("no server is available")]
    NoServer,
    #[error("timed out in the queue waiting for a free server")]
    QueueTimeout,
    /// The pool is saturated and this request's priority class is shed.
    #[error("shed: the pool is saturated and this request's priority is shed")]
    Shed,
    /// A reload changed how the pool's servers are reached (TLS, the PROXY
    /// header, HTTP/2) while the request waited in its queue: the way it was
    /// to be sent is no longer theirs.
    #[error("the pool's connection settings changed while the request waited")]
    Reconfigured,
}

impl Pool {
    /// Builds a pool from its config; `old_for` gives the member a previous
    /// snapshot had at an address, whose runtime state is carried over (and
    /// the entry itself, when nothing about it changed; a DNS member keeps its
    /// id, so a pool of 10,000 DNS members does not spend its rebuild
    /// formatting addresses).
    pub fn new<'a>(
        cfg: &PoolConfig,
        shared: Arc<PoolShared>,
        members: Vec<MemberSpec>,
        mut old_for: impl FnMut(SocketAddr) -> Option<&'a Arc<Server>>,
    ) -> Pool {
        let initial = Pool::initial_health(cfg);
        // collected into a Vec of its own size: an in-place `collect` would keep
        // the larger `MemberSpec` buffer (~10 times the pointers' bytes)
        let mut servers: Vec<Arc<Server>> = Vec::with_capacity(members.len());
        servers.extend(members.into_iter().map(|m| {
            let Some(old) = old_for(m.addr) else {
                return Arc::new(Server {
                    id: m
                        .name
                        .map_or_else(|| Arc::from(m.addr.to_string()), Arc::from),
                    addr: m.addr,
                    weight: m.weight,
                    backup: m.backup,
                    source: m.source,
                    state: Arc::new(ServerState::new(initial)),
                });
            };
            let id = match m.name {
                Some(name) if *name == *old.id => Arc::clone(&old.id),
                Some(name) => Arc::from(name),
                None if m.source.is_some() && old.source.is_some() => Arc::clone(&old.id),
                None => {
                    let text = m.addr.to_string();
                    if *text == *old.id {
                        Arc::clone(&old.id)
                    } else {
                        Arc::from(text)
                    }
                }
            };
            let weight = old.state.weight_override().unwrap_or(m.weight);
            if Arc::ptr_eq(&id, &old.id)
                && weight == old.weight
                && m.backup == old.backup
                && m.source == old.source
            {
                return Arc::clone(old);
            }
            Arc::new(Server {
                id,
                addr: m.addr,
                weight,
                backup: m.backup,
                source: m.source,
                state: Arc::clone(&old.state),
            })
        }));
        let balancer = balancer_for(cfg.balance, &servers);
        Pool::assemble(cfg, shared, servers, balancer)
    }

    /// The connection epoch of a pool of config `cfg` that follows `old`
    /// (None: a new pool): `old`'s while the settings a backend connection is
    /// made with (`[pool.tls]`, `protocol`, `send_proxy`) stay the same, the
    /// next one when they change.
    pub fn next_conn_epoch(old: Option<&Pool>, cfg: &PoolConfig) -> u64 {
        match old {
            None => 0,
            Some(o)
                if o.tls == cfg.tls
                    && o.protocol == cfg.protocol
                    && o.send_proxy == cfg.send_proxy =>
            {
                o.conn_epoch
            }
            Some(o) => o.conn_epoch + 1,
        }
    }

    /// This pool, of config `cfg`, with other members (`d` says what
    /// changed): the shared state kept, the balancer carried forward where it
    /// can be ([`Balancer::next`]), else built from the members.
    pub fn with_members(
        &self,
        cfg: &PoolConfig,
        servers: Vec<Arc<Server>>,
        d: &balance::Delta<'_>,
    ) -> Pool {
        let balancer = self
            .balancer
            .next(d)
            .unwrap_or_else(|| balancer_for(cfg.balance, &servers));
        let mut pool = Pool::assemble(cfg, Arc::clone(&self.shared), servers, balancer);
        pool.conn_epoch = self.conn_epoch;
        // the TLS config this pool's connections are made with, kept
        // across reloads that do not change it (see `Snapshot::build_pool`)
        pool.tls.clone_from(&self.tls);
        pool
    }

    fn assemble(
        cfg: &PoolConfig,
        shared: Arc<PoolShared>,
        servers: Vec<Arc<Server>>,
        balancer: Balancer,
    ) -> Pool {
        Pool {
            name: Arc::from(cfg.name.as_str()),
            balance: cfg.balance,
            hash_key: cfg.hash_key.clone(),
            connect_timeout: cfg.connect_timeout,
            server_timeout: cfg.server_timeout,
            max_grpc_timeout: cfg.max_grpc_timeout,
            max_conn_per_server: cfg.max_connections_per_server,
            queue_timeout: cfg.queue_timeout,
            shedding: cfg.shed_after.map(priority::Shedding::from_shed_after),
            max_idle_per_server: cfg.max_idle_per_server,
            keepalive_timeout: cfg.keepalive_timeout,
            tunnel_timeout: cfg.tunnel_timeout,
            health: cfg.health.clone(),
            breaker: cfg.breaker,
            retry: cfg.retry.clone(),
            slow_start: cfg.slow_start,
            send_proxy: cfg.send_proxy,
            splice: cfg.splice,
            tls: cfg.tls.clone(),
            protocol: cfg.protocol,
            http2: cfg.http2,
            circuit: cfg.circuit,
            read_only: cfg.read_only.clone(),
            conn_epoch: 0,
            balancer,
            persist: cfg
                .cookie
                .as_ref()
                .map(|c| persist::Persist::new(c, servers.iter().map(|s| s.addr))),
            servers,
            shared,
        }
    }

    /// How this pool picks (equal when two pools pick alike).
    #[cfg(test)]
    pub(crate) fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The health a new server of this pool starts in.
    pub fn initial_health(cfg: &PoolConfig) -> Health {
        match &cfg.health {
            Some(h) if !h.initial_up => Health::Unknown,
            _ => Health::Up,
        }
    }

    /// Could server `i` take traffic (ignoring its connection limit)?
    #[inline]
    pub fn usable(&self, i: usize, now: u64) -> bool {
        self.in_service(i) && self.servers[i].state.breaker.admits(now)
    }

    /// Is server `i` in service, as far as its weight, health and operator
    /// say (its breaker aside)?
    #[inline]
    pub fn in_service(&self, i: usize) -> bool {
        let s = &self.servers[i];
        s.weight > 0 && s.state.health() == Health::Up && s.state.admin() == AdminState::Ready
    }

    /// Which tier serves now: `Some(false)` if a non-backup server is usable,
    /// `Some(true)` if only backups are, `None` if nothing is.
    fn tier(&self, exclude: &[usize], now: u64) -> Option<bool> {
        let mut backup_ok = false;
        for (i, s) in self.servers.iter().enumerate() {
            if exclude.contains(&i) || !self.usable(i, now) {
                continue;
            }
            if !s.backup {
                return Some(false);
            }
            backup_ok = true;
        }
        backup_ok.then_some(true)
    }

    /// The indices in `to` (a later generation of this pool) of the servers at
    /// `idx` here that it still has (by identity, not address).
    pub fn remap(&self, to: &Pool, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .filter_map(|&i| {
                let uid = self.servers.get(i)?.state.uid;
                to.servers.iter().position(|s| s.state.uid == uid)
            })
            .collect()
    }

    /// Is there a server, not in `exclude`, that could take traffic now?
    pub fn has_candidate(&self, exclude: &[usize]) -> bool {
        self.tier(exclude, clock::now_ms()).is_some()
    }

    /// Number of servers that could take traffic now.
    pub fn eligible_count(&self) -> usize {
        let now = clock::now_ms();
        (0..self.servers.len())
            .filter(|&i| self.usable(i, now))
            .count()
    }

    /// A slot on a server not in `exclude` that is free now (no queueing, and
    /// no look at the queue: the caller decides whether it may go ahead of
    /// waiting requests).
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        key: u64,
        exclude: &[usize],
    ) -> Option<ServerGuard> {
        self.try_acquire_at(key, exclude, clock::now_ms())
    }

    fn try_acquire_at(
        self: &Arc<Self>,
        key: u64,
        exclude: &[usize],
        now: u64,
    ) -> Option<ServerGuard> {
        let backup = self.tier(exclude, now)?;
        let mut view = View {
            pool: self,
            backup,
            exclude,
            now,
            ramp_skip: true,
        };
        // A pick can race with another thread taking the last slot or the breaker's
        // single trial; try again a few times.
        for attempt in 0..4 {
            let i = match self.balancer.pick(&view, key) {
                Some(i) => i,
                // Slow start skips a ramping server's turn at random; when every
                // candidate is ramping, a ramping server still beats a 503.
                None if view.ramp_skip && attempt < 3 => {
                    view.ramp_skip = false;
                    continue;
                }
                None => return None,
            };
            if let Slot::Taken(g) = self.take(i, now) {
                return Some(g);
            }
        }
        None
    }

    /// A slot on server `i`, if it has one free and its breaker lets the
    /// request through (a HALF-OPEN breaker lets one trial).
    fn take(self: &Arc<Self>, i: usize, now: u64) -> Slot {
        let st = &self.servers[i].state;
        if !st.try_take(self.max_conn_per_server) {
            return Slot::Full;
        }
        match st.breaker.try_begin(now) {
            Some(trial) => Slot::Taken(ServerGuard {
                pool: Arc::clone(self),
                idx: i,
                trial,
                reported: false,
            }),
            None => {
                // (another request took the breaker's single trial)
                st.traffic.active.fetch_sub(1, Ordering::AcqRel);
                Slot::Refused
            }
        }
    }

    /// Whether server `i` takes the requests whose persistence cookie names
    /// it: while UP and not in maintenance (a draining server keeps its
    /// persistent clients, as in HAProxy; its weight does not matter), and
    /// while its breaker admits requests.
    pub fn persists(&self, i: usize, now: u64) -> bool {
        self.servers.get(i).is_some_and(|s| {
            let st = &s.state;
            st.health() == Health::Up && st.admin() != AdminState::Maint && st.breaker.admits(now)
        })
    }

    /// A slot on server `i` for a request its cookie sends there.
    fn persist_to(self: &Arc<Self>, i: usize, now: u64) -> Slot {
        if !self.persists(i, now) {
            return Slot::Refused;
        }
        self.take(i, now)
    }

    /// A slot on server `i` for a request its cookie sends there, waiting
    /// for one while the server is full, for at most `queue_timeout`: as
    /// HAProxy queues a persistent request on its server, not in its
    /// backend's queue. It waits apart from the pool's queue (which it does
    /// not slow or shed), and the slots freed on its server are offered to
    /// such waiters first. None when the server cannot take it (now, or
    /// once it went DOWN or into maintenance while it waited): the request is
    /// balanced as any other.
    async fn persistent(self: &Arc<Self>, i: usize) -> Option<Result<ServerGuard, PickError>> {
        let st = &self.servers.get(i)?.state;
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        let mut pinned: Option<Pinned<'_>> = None;
        loop {
            let freed = self.shared.pinned_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.persist_to(i, clock::now_ms()) {
                Slot::Taken(g) => return Some(Ok(g)),
                Slot::Refused => return None,
                Slot::Full => {}
            }
            if self.max_conn_per_server == 0 || self.shared.newer(self).is_some() {
                // (a pool a reload or DNS replaced: the queue's way moves
                // the request to the pool in force)
                return None;
            }
            if pinned.is_none() {
                // counted first, then looked at again: a slot freed between
                // the look above and the count woke nobody
                pinned = Some(Pinned::new(self, st));
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(Err(PickError::QueueTimeout));
            }
            // woken by a slot freed there, and every 250 ms to look at its
            // state again (a server that goes DOWN frees nothing); a last
            // look at the deadline
            let look = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
            let _ = tokio::time::timeout_at(look, freed).await;
        }
    }

    /// Picks a server not in `exclude` and takes a slot on it. When every usable
    /// server is full, waits in the pool's queue, in the class `prio`, for at
    /// most `queue_timeout` (or less, as `shed_after` says for the class). Fails
    /// at once when no server is usable, or when the class is shed.
    pub async fn acquire(
        self: &Arc<Self>,
        key: u64,
        exclude: &[usize],
        prio: Priority,
    ) -> Result<ServerGuard, PickError> {
        self.acquire_in(key, exclude, prio, true, None).await
    }

    /// As `acquire`; `same_way`: a waiter is not moved to a newer pool whose
    /// servers are reached another way (`conn_epoch`), but refused
    /// (`PickError::Reconfigured`): its front end chose how to send it by
    /// this pool (HTTP). TCP sessions decide after, by the pool they get.
    /// `prefer`: the server a request's cookie names (`try_acquire_at`).
    pub async fn acquire_in(
        self: &Arc<Self>,
        key: u64,
        exclude: &[usize],
        prio: Priority,
        same_way: bool,
        prefer: Option<usize>,
    ) -> Result<ServerGuard, PickError> {
        if let Some(i) = prefer.filter(|i| !exclude.contains(i)) {
            if let Some(r) = self.persistent(i).await {
                return r;
            }
        }
        let queue = &self.shared.queue;
        // While requests of its class or a higher one wait, a newcomer queues
        // behind them instead of taking a slot that was freed for a waiter.
        if !queue.must_queue(prio) {
            if let Some(g) = self.try_acquire(key, exclude) {
                // (a pool without a connection limit has no queue to report on:
                // no shared counter is touched for it on the request path)
                if self.max_conn_per_server > 0 {
                    queue.admitted(prio);
                }
                return Ok(g);
            }
        }
        if self.max_conn_per_server == 0 || self.tier(exclude, clock::now_ms()).is_none() {
            return Err(PickError::NoServer);
        }
        let shed_limit = self.shedding.and_then(|s| s.limit(prio));
        if let Some(limit) = shed_limit {
            // it would wait at least as long as the oldest request ahead of it
            let ahead = queue.oldest_wait(prio, tokio::time::Instant::now());
            if limit.is_zero() || ahead.is_some_and(|w| w > limit) {
                queue.count_shed(prio);
                return Err(PickError::Shed);
            }
        }
        let jumped = queue.must_queue(prio);
        let entry = queue.enter(prio);
        let timeout_at = entry.since() + self.queue_timeout;
        let shed_at = shed_limit.map(|l| entry.since() + l);
        let until = shed_at.map_or(timeout_at, |s| s.min(timeout_at));
        // Queued behind others, it does not look for a slot before one is
        // offered to it: a slot freed now was offered to one of them. (First in
        // line, it looks at once: a slot freed while it was entering went to
        // nobody.)
        let mut look = !jumped || entry.first_in_line();
        let mut offered = false;
        // the pool in force once it changed while this request waited, and
        // `exclude` in its indices
        let mut moved: Option<(Arc<Pool>, Vec<usize>)> = None;
        loop {
            let (pool, exclude) = match &moved {
                Some((p, e)) => (p, e.as_slice()),
                None => (self, exclude),
            };
            if look {
                if let Some(g) = pool.try_acquire(key, exclude) {
                    queue.admitted(prio);
                    return Ok(g);
                }
                if pool.tier(exclude, clock::now_ms()).is_none() {
                    return Err(PickError::NoServer);
                }
                // a retry cannot use a slot on a server it tried: another may
                if offered && !exclude.is_empty() && pool.free_slot() {
                    entry.pass_on();
                }
            }
            look = true;
            if tokio::time::timeout_at(until, entry.woken()).await.is_err() {
                if shed_at.is_some_and(|s| s < timeout_at) {
                    queue.count_shed(prio);
                    return Err(PickError::Shed);
                }
                return Err(PickError::QueueTimeout);
            }
            offered = true;
            if let Some(newer) = self.shared.newer(pool) {
                if same_way && newer.conn_epoch != pool.conn_epoch {
                    // its front end chose how to send it (plain bytes, TLS,
                    // a PROXY header, HTTP/2) by this pool: not sent the
                    // old way to servers that now expect another. The slot
                    // it was offered goes to the next waiter.
                    entry.pass_on();
                    return Err(PickError::Reconfigured);
                }
                let exclude = pool.remap(&newer, exclude);
                moved = Some((newer, exclude));
            }
        }
    }

    /// Whether a server of the serving tier has a free slot.
    pub fn free_slot(&self) -> bool {
        let now = clock::now_ms();
        let Some(backup) = self.tier(&[], now) else {
            return false;
        };
        self.servers.iter().enumerate().any(|(i, s)| {
            s.backup == backup
                && self.usable(i, now)
                && s.state.traffic.active.load(Ordering::Acquire) < self.max_conn_per_server
        })
    }

    /// Where server `i` is in its slow start: (time since it came UP, window),
    /// while the window lasts.
    fn ramp(&self, i: usize, now: u64) -> Option<(u64, u64)> {
        let window = self.slow_start.as_millis() as u64;
        if window == 0 {
            return None;
        }
        let since = self.servers[i].state.up_since();
        let elapsed = now.saturating_sub(since);
        (since != 0 && elapsed < window).then_some((elapsed, window))
    }

    /// The weight the balancers give server `i` now (less during slow start).
    pub fn current_weight(&self, i: usize, now: u64) -> u32 {
        let w = self.servers[i].weight;
        match self.ramp(i, now) {
            Some((elapsed, window)) => slow_start_weight(w, elapsed, window),
            None => w,
        }
    }

    /// How long an idle backend connection may be kept: keepalive_timeout, or less
    /// if the server said so (`Keep-Alive: timeout=`).
    pub fn keepalive_for(&self, server_hint: Option<Duration>) -> Duration {
        server_hint.map_or(self.keepalive_timeout, |k| k.min(self.keepalive_timeout))
    }

    /// May one more retry be made? (The pool's retry budget.)
    pub fn retry_allowed(&self) -> bool {
        self.shared.budget.withdraw()
    }

    /// Servers whose breaker is not CLOSED.
    pub fn ejected_count(&self) -> u32 {
        self.servers
            .iter()
            .filter(|s| s.state.breaker.state() != breaker::BreakerState::Closed)
            .count() as u32
    }

    fn max_ejected(&self) -> u32 {
        (self.servers.len() as u64 * u64::from(self.breaker.max_ejected_percent) / 100) as u32
    }
}

/// A balancer built from scratch for `servers` (ring points placed by address:
/// only the hash balancer has a ring).
fn balancer_for(balance: Balance, servers: &[Arc<Server>]) -> Balancer {
    let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
    let ids: Vec<String> = match balance {
        Balance::Hash => servers.iter().map(|s| s.addr.to_string()).collect(),
        _ => Vec::new(),
    };
    Balancer::new(balance, &weights, &ids)
}

/// ejection_time-style slow start: weight grows linearly from ~0 to `weight` over
/// `window` after the server came back UP (never below 1 so it gets some traffic).
fn slow_start_weight(weight: u32, elapsed_ms: u64, window_ms: u64) -> u32 {
    if window_ms == 0 || elapsed_ms >= window_ms || weight == 0 {
        return weight;
    }
    ((u64::from(weight) * elapsed_ms / window_ms) as u32).max(1)
}

/// The members a pick may choose from: one tier (backup or not), minus servers
/// already tried for this request.
struct View<'a> {
    pool: &'a Pool,
    backup: bool,
    exclude: &'a [usize],
    now: u64,
    /// Let round robin skip a ramping server's turn (slow start).
    ramp_skip: bool,
}

impl Members for View<'_> {
    fn len(&self) -> usize {
        self.pool.servers.len()
    }
    fn eligible(&self, i: usize) -> bool {
        let p = self.pool;
        let s = &p.servers[i];
        if s.backup != self.backup
            || self.exclude.contains(&i)
            || !p.usable(i, self.now)
            || (p.max_conn_per_server > 0
                && (s.state.traffic.active.load(Ordering::Acquire) >= p.max_conn_per_server
                    || (p.persist.is_some() && s.state.traffic.pinned.load(Ordering::Acquire) > 0)))
        {
            return false;
        }
        // Round robin walks a fixed schedule: a ramping server takes its turn with
        // probability elapsed/window. (least_conn and random_two use `weight`.)
        if p.balance == Balance::RoundRobin && self.ramp_skip {
            if let Some((elapsed, window)) = p.ramp(i, self.now) {
                return fastrand::u64(..window) < elapsed.max(1);
            }
        }
        true
    }
    fn weight(&self, i: usize) -> u32 {
        self.pool.current_weight(i, self.now)
    }
    fn active(&self, i: usize) -> u32 {
        self.pool.servers[i]
            .state
            .traffic
            .active
            .load(Ordering::Relaxed)
    }
}

/// One request pinned to a server (`Pool::persistent`), counted in its
/// `pinned` while it waits.
struct Pinned<'a> {
    pool: &'a Pool,
    state: &'a ServerState,
}

impl<'a> Pinned<'a> {
    fn new(pool: &'a Pool, state: &'a ServerState) -> Pinned<'a> {
        state.traffic.pinned.fetch_add(1, Ordering::SeqCst);
        Pinned { pool, state }
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        let t = &self.state.traffic;
        if t.pinned.fetch_sub(1, Ordering::SeqCst) == 1
            && t.active.load(Ordering::SeqCst) < self.pool.max_conn_per_server
        {
            // the last one gone (served elsewhere, timed out, its client
            // left) with a slot free there, which the pool's waiters were
            // not offered while it was pinned: they look again
            self.pool.shared.queue.wake_all();
        }
    }
}

/// What asking a server for a slot found (`Pool::take`).
enum Slot {
    Taken(ServerGuard),
    /// It can take the request, once it has a free slot.
    Full,
    /// It cannot take it now (out of service, or its breaker's trial is
    /// another request's).
    Refused,
}

/// One taken slot on a server; released (and a queued request woken) on drop. The
/// request's outcome is reported through it to the server's breaker.
#[derive(Debug)]
pub struct ServerGuard {
    pool: Arc<Pool>,
    idx: usize,
    /// This request is the breaker's HALF-OPEN trial.
    trial: bool,
    reported: bool,
}

impl ServerGuard {
    pub fn server(&self) -> &Server {
        &self.pool.servers[self.idx]
    }
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
    pub fn index(&self) -> usize {
        self.idx
    }

    /// The server answered (for http: with a status the breaker does not count).
    pub fn success(&mut self) {
        self.reported = true;
        if self.server().state.breaker.on_success(self.trial) == Some(Change::Closed) {
            tracing::info!(pool = %self.pool.name, server = %self.server().id, "circuit breaker closed: server back in rotation");
        }
    }

    /// The server failed this request (connect error, reset, timeout, counted 5xx).
    pub fn failure(&mut self) {
        self.reported = true;
        let pool = &self.pool;
        // Two breakers opening at the same instant may both pass this check; the
        // limit can then be exceeded by one for one ejection time.
        let may_eject = || pool.ejected_count() < pool.max_ejected();
        let st = &pool.servers[self.idx].state;
        if let Some(Change::Opened { for_ms }) =
            st.breaker
                .on_failure(&pool.breaker, clock::now_ms(), self.trial, may_eject)
        {
            tracing::warn!(pool = %pool.name, server = %self.server().id, ejected_ms = for_ms, "circuit breaker opened: server ejected");
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let st = &self.pool.servers[self.idx].state;
        if self.trial && !self.reported {
            st.breaker.abandon_trial();
        }
        st.traffic.active.fetch_sub(1, Ordering::SeqCst);
        if self.pool.max_conn_per_server > 0 && st.traffic.pinned.load(Ordering::SeqCst) > 0 {
            // the slot is for the requests whose cookie names this server
            self.pool.shared.pinned_freed.notify_waiters();
        }
        if self.pool.max_conn_per_server > 0 {
            // the freed slot is offered to the first waiter in priority order
            self.pool.shared.queue.wake_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_with(
        max: u32,
        queue: Duration,
        servers: &[(u32, bool)],
        slow_start: Duration,
    ) -> Arc<Pool> {
        let cfg = pool_cfg(max, queue, slow_start);
        let members = servers
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| MemberSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                name: None,
                weight,
                backup,
                source: None,
            })
            .collect();
        Arc::new(Pool::new(&cfg, Arc::default(), members, |_| None))
    }

    fn pool_cfg(max: u32, queue: Duration, slow_start: Duration) -> PoolConfig {
        PoolConfig {
            name: "p".into(),
            balance: Balance::RoundRobin,
            hash_key: HashKey::ClientIp,
            connect_timeout: Duration::from_secs(1),
            server_timeout: Duration::from_secs(1),
            max_connections_per_server: max,
            queue_timeout: queue,
            shed_after: None,
            max_grpc_timeout: None,
            max_idle_per_server: Some(1),
            keepalive_timeout: Duration::from_secs(1),
            tunnel_timeout: Duration::from_secs(1),
            health: None,
            breaker: BreakerConfig {
                consecutive_failures: 2,
                ejection_time: Duration::from_secs(10),
                max_ejection_time: Duration::from_secs(60),
                max_ejected_percent: 50,
                on_5xx: false,
            },
            retry: RetryConfig {
                retries: 2,
                buffer: 1024,
                non_idempotent: false,
                on_connect_failure: true,
                on_reset: true,
                on_timeout: false,
                on_status: vec![],
                budget_percent: 20,
            },
            slow_start,
            servers: Vec::new(),
            send_proxy: None,
            splice: true,
            tls: None,
            protocol: crate::config::Protocol::Http1,
            circuit: None,
            read_only: None,
            cookie: None,
            http2: crate::config::PoolHttp2 {
                max_concurrent_streams: 100,
                initial_stream_window_size: 1 << 20,
                initial_connection_window_size: 2 << 20,
                keepalive_interval: Some(Duration::from_secs(10)),
                keepalive_timeout: Duration::from_secs(5),
            },
        }
    }

    fn pool(max: u32, queue: Duration) -> Arc<Pool> {
        pool_with(max, queue, &[(1, false)], Duration::ZERO)
    }

    #[tokio::test(start_paused = true)]
    async fn queue_times_out_then_serves_after_release() {
        let p = pool(1, Duration::from_secs(5));
        let first = p.acquire(0, &[], Priority::Normal).await.unwrap();
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap_err(),
            PickError::QueueTimeout
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(p.shared.queue.waiting(), 0);
        // a waiter is woken when the slot is released
        let p2 = Arc::clone(&p);
        let waiter =
            tokio::spawn(async move { p2.acquire(0, &[], Priority::Normal).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.shared.queue.waiting(), 1);
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_pool_sheds_by_class() {
        let mut p = pool(1, Duration::from_secs(5));
        Arc::get_mut(&mut p).unwrap().shedding = Some(priority::Shedding::from_shed_after(
            Duration::from_millis(100),
        ));
        let held = p.acquire(0, &[], Priority::Low).await.unwrap();
        // low waits its 100 ms, then is shed; normal would have waited 400 ms
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            p.acquire(0, &[], Priority::Low).await.unwrap_err(),
            PickError::Shed
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        // critical is never shed: it waits until queue_timeout
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            p.acquire(0, &[], Priority::Critical).await.unwrap_err(),
            PickError::QueueTimeout
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        // a newcomer behind a request that already waited past its class's
        // limit is shed at once
        let p2 = Arc::clone(&p);
        let waiting =
            tokio::spawn(async move { p2.acquire(0, &[], Priority::High).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap_err(),
            PickError::Shed
        );
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // ... and the slot, once freed, goes to the high one waiting
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        let q = &p.shared.queue;
        assert_eq!(q.stats(Priority::Low).shed, 1);
        assert_eq!(q.stats(Priority::Normal).shed, 1);
        assert_eq!(q.stats(Priority::Critical).shed, 0);
        assert_eq!(q.stats(Priority::High).admitted, 1);
        assert_eq!(q.stats(Priority::Low).admitted, 1);
    }

    /// A reload of `p` (one server, queue of 60 s): its server carried over,
    /// `changed`: now reached with a PROXY header (another connection
    /// epoch). The new pool is the one in force.
    fn reloaded(p: &Arc<Pool>, changed: bool) -> Arc<Pool> {
        let mut cfg = pool_cfg(1, Duration::from_secs(60), Duration::ZERO);
        if changed {
            cfg.send_proxy = Some(crate::proxy_protocol::Version::V2);
        }
        let members = vec![MemberSpec {
            addr: p.servers[0].addr,
            name: None,
            weight: 1,
            backup: false,
            source: None,
        }];
        let mut next = Pool::new(&cfg, Arc::clone(&p.shared), members, |_| {
            Some(&p.servers[0])
        });
        next.conn_epoch = p.conn_epoch + u64::from(changed);
        let next = Arc::new(next);
        p.shared.set_latest(&next);
        next
    }

    /// A request waiting in the queue through a reload that changed how the
    /// servers are reached (here TLS added) is not moved to the new pool: its
    /// front end chose to send it the old way (plain bytes). 503, never
    /// cleartext to a server that now expects TLS. Through a reload that
    /// keeps the way, it moves and is served.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_moves_to_a_newer_pool_only_if_it_is_reached_the_same_way() {
        for (changed, want) in [(false, Ok(0)), (true, Err(PickError::Reconfigured))] {
            let p = pool(1, Duration::from_secs(60));
            p.shared.set_latest(&p);
            let held = p.acquire(0, &[], Priority::Normal).await.unwrap();
            let c = Arc::clone(&p);
            let waiting = tokio::spawn(async move {
                c.acquire(0, &[], Priority::Normal).await.map(|g| g.index())
            });
            while p.shared.queue.waiting() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _next = reloaded(&p, changed);
            drop(held);
            assert_eq!(waiting.await.unwrap(), want, "changed: {changed}");
        }
    }

    /// The slot offered to a waiter that is refused (`Reconfigured`) goes to
    /// the next waiter, not lost until the queue's timeout; and a front end
    /// that decides how to reach the server after its slot (TCP) is moved to
    /// the new pool, not refused.
    #[tokio::test(start_paused = true)]
    async fn a_refused_waiters_slot_goes_on_and_tcp_follows_the_new_pool() {
        let p = pool(1, Duration::from_secs(60));
        p.shared.set_latest(&p);
        let held = p.acquire(0, &[], Priority::Normal).await.unwrap();
        let spawn = |pool: &Arc<Pool>, same_way: bool| {
            let c = Arc::clone(pool);
            tokio::spawn(async move {
                c.acquire_in(0, &[], Priority::Normal, same_way, None)
                    .await
                    .map(|g| (Arc::as_ptr(g.pool()) as usize, g.index()))
            })
        };
        // an HTTP request and a TCP session wait in the old pool
        let http = spawn(&p, true);
        while p.shared.queue.waiting() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let tcp = spawn(&p, false);
        while p.shared.queue.waiting() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let next = reloaded(&p, true);
        let t0 = tokio::time::Instant::now();
        drop(held);
        assert_eq!(http.await.unwrap(), Err(PickError::Reconfigured));
        // the slot went on at once to the session behind, in the new pool
        assert_eq!(tcp.await.unwrap(), Ok((Arc::as_ptr(&next) as usize, 0)));
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_highest_class_waiting() {
        let p = pool(1, Duration::from_secs(60));
        let held = p.acquire(0, &[], Priority::Normal).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // queued oldest first: low, low, normal, critical, high
        for (n, class) in [
            Priority::Low,
            Priority::Low,
            Priority::Normal,
            Priority::Critical,
            Priority::High,
        ]
        .into_iter()
        .enumerate()
        {
            let (p, order) = (Arc::clone(&p), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let g = p.acquire(0, &[], class).await.unwrap();
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(g);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(p.shared.queue.waiting(), 5);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![3, 4, 2, 0, 1]);
    }

    #[tokio::test]
    async fn down_pool_fails_at_once() {
        let p = pool(1, Duration::from_secs(60));
        p.servers[0].state.set_health(Health::Down, 1);
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap_err(),
            PickError::NoServer
        );
        p.servers[0].state.set_health(Health::Unknown, 1);
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap_err(),
            PickError::NoServer,
            "UNKNOWN gets no traffic"
        );
    }

    #[tokio::test]
    async fn backups_serve_only_when_no_primary_is_usable() {
        let p = pool_with(
            0,
            Duration::from_secs(1),
            &[(1, false), (1, false), (1, true)],
            Duration::ZERO,
        );
        for _ in 0..20 {
            assert_ne!(
                p.acquire(0, &[], Priority::Normal).await.unwrap().index(),
                2
            );
        }
        // a tried (excluded) primary plus a down one: the backup serves
        p.servers[0].state.set_health(Health::Down, 1);
        assert_eq!(
            p.acquire(0, &[1], Priority::Normal).await.unwrap().index(),
            2
        );
        p.servers[1].state.set_health(Health::Down, 1);
        for _ in 0..5 {
            assert_eq!(
                p.acquire(0, &[], Priority::Normal).await.unwrap().index(),
                2
            );
        }
        p.servers[0].state.set_health(Health::Up, 2);
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap().index(),
            0,
            "back to the primary"
        );
    }

    #[tokio::test]
    async fn excluded_servers_are_not_picked_again() {
        let p = pool_with(
            0,
            Duration::from_secs(1),
            &[(1, false), (1, false), (1, false)],
            Duration::ZERO,
        );
        for _ in 0..10 {
            let g = p.acquire(0, &[0, 2], Priority::Normal).await.unwrap();
            assert_eq!(g.index(), 1);
        }
        assert_eq!(
            p.acquire(0, &[0, 1, 2], Priority::Normal)
                .await
                .unwrap_err(),
            PickError::NoServer
        );
    }

    #[tokio::test]
    async fn breaker_ejects_at_most_max_ejected_percent() {
        let p = pool_with(
            0,
            Duration::from_secs(1),
            &[(1, false), (1, false)],
            Duration::ZERO,
        );
        // server 0 fails twice: ejected (1 of 2 = 50%)
        for _ in 0..2 {
            let mut g = p.acquire(0, &[1], Priority::Normal).await.unwrap();
            g.failure();
        }
        assert_eq!(p.ejected_count(), 1);
        for _ in 0..10 {
            assert_eq!(
                p.acquire(0, &[], Priority::Normal).await.unwrap().index(),
                1
            );
        }
        // server 1 fails too, but ejecting it would exceed 50%: it stays in
        for _ in 0..5 {
            let mut g = p.acquire(0, &[], Priority::Normal).await.unwrap();
            g.failure();
        }
        assert_eq!(p.ejected_count(), 1);
        assert_eq!(
            p.acquire(0, &[], Priority::Normal).await.unwrap().index(),
            1
        );
    }

    #[test]
    fn a_pool_of_only_ramping_servers_still_serves() {
        let p = pool_with(
            0,
            Duration::from_secs(1),
            &[(1, false)],
            Duration::from_secs(100),
        );
        let st = &p.servers[0].state;
        st.set_health(Health::Down, 1);
        st.set_health(Health::Up, 50_000);
        // 0.1 s into a 100 s ramp: the random skip would refuse ~99.9% of picks
        for _ in 0..1000 {
            assert!(p.try_acquire_at(0, &[], 50_100).is_some());
        }
    }

    #[test]
    fn slow_start_weights_ramp_linearly() {
        assert_eq!(slow_start_weight(100, 0, 10_000), 1);
        assert_eq!(slow_start_weight(100, 2_500, 10_000), 25);
        assert_eq!(slow_start_weight(100, 5_000, 10_000), 50);
        assert_eq!(slow_start_weight(100, 9_999, 10_000), 99);
        assert_eq!(slow_start_weight(100, 10_000, 10_000), 100);
        assert_eq!(slow_start_weight(1, 100, 10_000), 1, "never below 1");
        assert_eq!(slow_start_weight(7, 100, 0), 7, "no window, no ramp");
    }

    #[test]
    fn a_recovered_server_ramps_up_under_round_robin() {
        let p = pool_with(
            0,
            Duration::from_secs(1),
            &[(1, false), (1, false)],
            Duration::from_secs(100),
        );
        let st = &p.servers[1].state;
        st.set_health(Health::Down, 1);
        st.set_health(Health::Up, 50_000);
        // 10 s into a 100 s window: about 10% of its normal share
        let mut to_ramping = 0;
        for _ in 0..4000 {
            if p.try_acquire_at(0, &[], 60_000).unwrap().index() == 1 {
                to_ramping += 1;
            }
        }
        // ... and its full share once the window is over
        let full = (0..100)
            .filter(|_| p.try_acquire_at(0, &[], 150_000).unwrap().index() == 1)
            .count();
        assert_eq!(full, 50);
        // a full share would be 2000; ~10% of the turns are taken
        assert!((100..=500).contains(&to_ramping), "{to_ramping}");
    }
}
