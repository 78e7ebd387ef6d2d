//! The immutable runtime view the data plane reads: one config generation's
//! listeners (router, timeouts, limits, hyper builders) and pools, built from a
//! `Config` plus the members found through DNS.
//!
//! Identity is by name: a pool's shared state is carried over by pool name, a
//! server's state by (pool name, address), a listener's counters and limit by
//! listener name. Only inside one snapshot do positions mean anything: a route's
//! pool index points into this snapshot's `pools`, which are built in the order of
//! the same `Config` the routes were validated against.

use crate::config::{Config, ListenerConfig, Mode, PoolConfig, ServerAddr};
use crate::limits::ListenerShared;
use crate::pool::{MemberSpec, Pool, PoolShared, ServerState};
use crate::router::Router;
use hyper_util::rt::TokioTimer;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One member found through DNS.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub addr: SocketAddr,
    /// SRV weight mapped to 1..=256 (None for A/AAAA: the entry's weight applies).
    pub weight: Option<u32>,
    /// SRV: a target with a higher (worse) priority than the best one is a backup.
    pub backup: bool,
}

/// A DNS watch's identity: its pool's name and the server entry as written. A
/// reload that reorders pools or servers keeps every watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsKey {
    pub pool: String,
    pub entry: crate::config::DnsName,
}

/// Each DNS server entry -> its current members.
pub type Discovered = HashMap<DnsKey, Vec<Found>>;

#[derive(Debug)]
pub struct Snapshot {
    /// The config generation this snapshot was built from (1 = the config the
    /// process started with; each successful reload adds one).
    pub generation: u64,
    pub listeners: Vec<ListenerRuntime>,
    pub pools: Vec<Arc<Pool>>,
    /// `[[rate_limit]]`, indexed as the rules refer to them; their per-key
    /// state is carried over by name.
    pub rate_limits: Vec<Arc<crate::ratelimit::Limiter>>,
    /// `[rate_limit_store]`: the link the limits share, kept across reloads
    /// while its settings stay the same.
    pub rate_link: Option<Arc<crate::ratelimit::Link>>,
}

/// Everything a connection needs from its listener, for one generation.
#[derive(Debug, Clone)]
pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub binds: Vec<SocketAddr>,
    pub mode: Mode,
    /// The scheme clients use here (X-Forwarded-Proto).
    pub scheme: &'static str,
    pub router: Router,
    /// `[[listener.rule]]`, evaluated before the router (http listeners).
    pub rules: Arc<crate::rules::RuleSet>,
    /// `read_only_when`.
    pub read_only: Option<Arc<crate::rules::ReadOnly>>,
    /// hyper's server builders (HTTP listeners), with this generation's timeouts.
    pub http: Option<Arc<ServerBuilders>>,
    /// Counters and connection limit: they outlive generations.
    pub shared: Arc<ListenerShared>,
    /// PROXY protocol headers accepted before the protocol starts.
    pub proxy_protocol: Option<Arc<crate::proxy_protocol::Accept>>,
    /// TLS terminated here (`[listener.tls]`).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// tcp mode without TLS, with routes: the ClientHello's SNI is peeked (within
    /// this long) and routed on.
    pub sni_peek: Option<std::time::Duration>,
}

impl Snapshot {
    /// A snapshot with nothing in it (before the first config is applied).
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            listeners: Vec::new(),
            pools: Vec::new(),
            rate_limits: Vec::new(),
            rate_link: None,
        }
    }

    /// Builds generation `generation` of `cfg`; the state of pools, servers and
    /// listeners that also exist in `prev` (by name) is kept.
    pub fn build(
        cfg: &Config,
        prev: Option<&Snapshot>,
        discovered: &Discovered,
        generation: u64,
    ) -> Snapshot {
        let pools = cfg
            .pools
            .iter()
            .map(|pc| {
                let old = prev.and_then(|p| p.pool(&pc.name));
                Arc::new(Self::build_pool(pc, discovered, old))
            })
            .collect();
        let listeners = cfg
            .listeners
            .iter()
            .map(|l| {
                let old = prev.and_then(|p| p.listeners.iter().find(|o| *o.name == *l.name));
                listener_runtime(l, old.map(|o| &o.shared))
            })
            .collect();
        let rate_link = cfg.rate_limit_store.as_ref().map(|sc| {
            prev.and_then(|p| p.rate_link.as_ref())
                .filter(|l| l.cfg == *sc)
                .map_or_else(
                    || Arc::new(crate::ratelimit::Link::new(sc.clone())),
                    Arc::clone,
                )
        });
        let rate_limits = cfg
            .rate_limits
            .iter()
            .map(|rc| {
                let store = prev
                    .and_then(|p| p.rate_limits.iter().find(|l| l.cfg.name == rc.name))
                    .map_or_else(Arc::default, |l| Arc::clone(&l.store));
                Arc::new(crate::ratelimit::Limiter::new(
                    rc.clone(),
                    store,
                    rate_link.clone(),
                ))
            })
            .collect();
        Snapshot {
            generation,
            listeners,
            pools,
            rate_limits,
            rate_link,
        }
    }

    /// Builds pool `pc` from its config entries and the members found for its DNS
    /// entries, carrying over the state of members `old` already had.
    pub fn build_pool(pc: &PoolConfig, discovered: &Discovered, old: Option<&Arc<Pool>>) -> Pool {
        let old_states: HashMap<SocketAddr, &crate::pool::Server> = old
            .map(|o| o.servers.iter().map(|s| (s.addr, s)).collect())
            .unwrap_or_default();
        let shared = old.map_or_else(
            || Arc::new(PoolShared::new(&pc.name)),
            |o| Arc::clone(&o.shared),
        );
        let initial = Pool::initial_health(pc);
        Pool::new(
            pc,
            shared,
            members(pc, discovered),
            |addr| match old_states.get(&addr) {
                Some(s) => (
                    Arc::clone(&s.state),
                    s.source.is_some().then(|| Arc::clone(&s.id)),
                ),
                None => (Arc::new(ServerState::new(initial)), None),
            },
        )
    }

    /// This snapshot with the pool of the same name replaced (same generation).
    pub fn with_pool(&self, pool: Arc<Pool>) -> Snapshot {
        let mut pools = self.pools.clone();
        if let Some(slot) = pools.iter_mut().find(|p| p.name == pool.name) {
            *slot = pool;
        }
        Snapshot {
            generation: self.generation,
            listeners: self.listeners.clone(),
            rate_limits: self.rate_limits.clone(),
            rate_link: self.rate_link.clone(),
            pools,
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| *p.name == *name)
    }

    /// The listener a connection belongs to: the one it was accepted for (same
    /// long-lived state), else the one that now owns the address it came in on
    /// (a renamed listener).
    #[inline]
    pub fn listener_of(
        &self,
        shared: &Arc<ListenerShared>,
        bound: SocketAddr,
    ) -> Option<&ListenerRuntime> {
        self.listeners
            .iter()
            .find(|l| Arc::ptr_eq(&l.shared, shared))
            .or_else(|| self.listener_at(bound))
    }

    /// The listener bound to `addr` in this generation.
    pub fn listener_at(&self, addr: SocketAddr) -> Option<&ListenerRuntime> {
        self.listeners.iter().find(|l| l.binds.contains(&addr))
    }
}

fn listener_runtime(l: &ListenerConfig, old: Option<&Arc<ListenerShared>>) -> ListenerRuntime {
    let shared = match old {
        Some(s) => Arc::clone(s),
        None => Arc::new(ListenerShared::new(&l.name)),
    };
    shared.limit.set_max(l.max_connections);
    ListenerRuntime {
        name: Arc::from(l.name.as_str()),
        binds: l.binds.clone(),
        mode: l.mode,
        scheme: if l.tls.is_some() { "https" } else { "http" },
        router: Router::new(l.routes.clone(), l.pool),
        rules: Arc::clone(&l.rules),
        read_only: l.read_only.clone().map(Arc::new),
        http: (l.mode == Mode::Http).then(|| {
            Arc::new(server_builders(
                l.request_header_timeout,
                l.client_timeout,
                &l.http2,
            ))
        }),
        shared,
        proxy_protocol: l.proxy_protocol.clone().map(Arc::new),
        tls: l
            .tls
            .as_ref()
            .map(|t| Arc::new(crate::tls::ServerTls::new(t))),
        sni_peek: (l.mode == Mode::Tcp && l.tls.is_none() && !l.routes.is_empty())
            .then_some(l.request_header_timeout),
    }
}

/// The key of a pool's DNS server entry.
pub fn dns_key(pc: &PoolConfig, entry: &crate::config::DnsName) -> DnsKey {
    DnsKey {
        pool: pc.name.clone(),
        entry: entry.clone(),
    }
}

/// The members of pool `pc`: static entries as written, DNS entries as last found.
/// An address reachable through two entries is one member (the first wins).
pub fn members(pc: &PoolConfig, discovered: &Discovered) -> Vec<MemberSpec> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &pc.servers {
        match &s.address {
            ServerAddr::Static(a) => {
                if seen.insert(*a) {
                    out.push(MemberSpec {
                        addr: *a,
                        name: s.name.clone(),
                        weight: s.weight,
                        backup: s.backup,
                        source: None,
                    });
                }
            }
            ServerAddr::Dns(dns) => {
                let source: Arc<str> = Arc::from(dns.to_string());
                for f in discovered
                    .get(&dns_key(pc, dns))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    if seen.insert(f.addr) {
                        out.push(MemberSpec {
                            addr: f.addr,
                            name: None,
                            // an SRV weight scales the entry's weight
                            weight: f
                                .weight
                                .map_or(s.weight, |w| w.min(crate::config::MAX_WEIGHT)),
                            backup: s.backup || f.backup,
                            source: Some(Arc::clone(&source)),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The hyper server builders of one listener.
pub struct ServerBuilders {
    pub(crate) h1: hyper::server::conn::http1::Builder,
    pub(crate) h2: hyper::server::conn::http2::Builder<StreamExecutor>,
    /// Also bounds how long a new connection may stay silent.
    pub(crate) header_timeout: Duration,
    /// The longest a write to the client may wait (the client not reading).
    pub(crate) client_timeout: Duration,
    /// HTTP/2: GOAWAY after this long without a new request.
    pub(crate) h2_idle: Option<Duration>,
}

impl ServerBuilders {
    /// The listener's client_timeout.
    pub fn client_timeout(&self) -> Duration {
        self.client_timeout
    }
}

impl std::fmt::Debug for ServerBuilders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilders")
            .field("header_timeout", &self.header_timeout)
            .field("client_timeout", &self.client_timeout)
            .finish_non_exhaustive()
    }
}

pub fn server_builders(
    request_header_timeout: Duration,
    client_timeout: Duration,
    h2cfg: &crate::config::Http2Config,
) -> ServerBuilders {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(request_header_timeout)
        // flattened writes, as on the backend side (upstream)
        .writev(false)
        .keep_alive(true);
    // Every HTTP/2 limit set on purpose (`[listener.http2]`), rather than left to
    // library defaults that may change under us.
    let mut h2 = hyper::server::conn::http2::Builder::new(StreamExecutor);
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(h2cfg.max_concurrent_streams)
        .max_header_list_size(h2cfg.max_header_list_size)
        .initial_stream_window_size(h2cfg.initial_stream_window_size)
        .initial_connection_window_size(h2cfg.initial_connection_window_size)
        .max_frame_size(h2cfg.max_frame_size)
        // rapid reset (CVE-2023-44487): streams the client resets before they
        // are served; past the limit, GOAWAY ENHANCE_YOUR_CALM
        .max_pending_accept_reset_streams(h2cfg.max_pending_accept_reset_streams)
        // streams rampart had to reset for the client's errors (CVE-2024-27316 kin)
        .max_local_error_reset_streams(h2cfg.max_local_error_reset_streams)
        // Dead peers are found by pings; an h2 connection has no header timer.
        .keep_alive_interval(h2cfg.keepalive_interval)
        .keep_alive_timeout(h2cfg.keepalive_timeout);
    ServerBuilders {
        h1,
        h2,
        header_timeout: request_header_timeout,
        client_timeout,
        h2_idle: h2cfg.idle_timeout,
    }
}

/// Spawns the task hyper runs for each HTTP/2 client stream on a tracker, so
/// that they are counted (shutdown reports them) like connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        stream_tasks().spawn(fut);
    }
}

/// hyper's HTTP/2 stream tasks (see `StreamExecutor`).
pub fn stream_tasks() -> &'static tokio_util::task::TaskTracker {
    static TASKS: std::sync::OnceLock<tokio_util::task::TaskTracker> = std::sync::OnceLock::new();
    TASKS.get_or_init(tokio_util::task::TaskTracker::new)
}
