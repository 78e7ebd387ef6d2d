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
use crate::pool::balance::{Delta, GONE};
use crate::pool::{MemberSpec, Pool, PoolShared, Server, ServerState};
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
pub type Discovered = HashMap<DnsKey, FoundSet>;

/// The members of one DNS answer, sorted by address, one per address: what a
/// refresh merges against the last answer. Shared, not copied, by the watch
/// that found them, the control task and the admin API's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundSet(Arc<Vec<Found>>);

impl FoundSet {
    /// Sorts by address and keeps the first member of each address (a no-op,
    /// bar one pass, for what `Discovery::resolve` returns).
    pub fn new(mut found: Vec<Found>) -> FoundSet {
        if !found.windows(2).all(|w| w[0].addr < w[1].addr) {
            found.sort();
            found.dedup_by(|a, b| a.addr == b.addr);
        }
        FoundSet(Arc::new(found))
    }
}

impl From<Vec<Found>> for FoundSet {
    fn from(found: Vec<Found>) -> FoundSet {
        FoundSet::new(found)
    }
}

impl std::ops::Deref for FoundSet {
    type Target = [Found];
    fn deref(&self) -> &[Found] {
        &self.0
    }
}

/// What a DNS refresh did to a pool: see [`Snapshot::refresh_pool`].
pub struct Refreshed {
    pub pool: Pool,
    /// Members that are new.
    pub added: Vec<Arc<Server>>,
    /// Members that left (their state is not in the new pool).
    pub removed: Vec<Arc<Server>>,
    /// The members that stayed were carried over (false: the pool was built
    /// anew).
    pub in_place: bool,
}

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
    /// `max_request_body` (0: no limit), unless a rule says otherwise.
    pub max_request_body: u64,
    /// hyper's server builders (HTTP listeners), with this generation's timeouts.
    pub http: Option<Arc<ServerBuilders>>,
    /// Counters and connection limit: they outlive generations.
    pub shared: Arc<ListenerShared>,
    /// PROXY protocol headers accepted before the protocol starts.
    pub proxy_protocol: Option<Arc<crate::proxy_protocol::Accept>>,
    /// TLS terminated here (`[listener.tls]`).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// tcp mode without TLS, with routes: the ClientHello is read (within this
    /// long) and routed by its SNI.
    pub sni_hello: Option<std::time::Duration>,
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
        let listeners: Vec<ListenerRuntime> = cfg
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
        let old_members: HashMap<SocketAddr, &Arc<Server>> = old
            .map(|o| o.servers.iter().map(|s| (s.addr, s)).collect())
            .unwrap_or_default();
        let shared = old.map_or_else(
            || Arc::new(PoolShared::new(&pc.name)),
            |o| Arc::clone(&o.shared),
        );
        let conn_epoch = Pool::next_conn_epoch(old.map(|o| &**o), pc);
        let mut pool = Pool::new(pc, shared, members(pc, discovered), |addr| {
            old_members.get(&addr).copied()
        });
        pool.conn_epoch = conn_epoch;
        if let Some(o) = old.filter(|o| o.conn_epoch == conn_epoch) {
            // backend connections are made as before: with the TLS config
            // they were made with, whose verifier their sessions resume
            // under (rustls resumes a session only with the verifier it
            // was made by, and a reload builds a new one)
            pool.tls.clone_from(&o.tls);
        }
        pool
    }

    /// Pool `old` after the answer for `key` changed from `before` to the one
    /// `discovered` now holds: the pool [`Snapshot::build_pool`] would build,
    /// with the same members in the same order and the same states.
    ///
    /// When only this entry's own members change (no other entry of the pool
    /// names an address that came or went, so no member changes hands), the
    /// members that stay are carried over as they are: the new pool costs one
    /// pointer copy per member, and allocations, new states and balancer work
    /// in proportion to the change (`Balancer::next`). Otherwise it is built
    /// anew.
    pub fn refresh_pool(
        pc: &PoolConfig,
        discovered: &Discovered,
        old: &Arc<Pool>,
        key: &DnsKey,
        before: &FoundSet,
    ) -> Refreshed {
        let none = FoundSet::default();
        let after = discovered.get(key).unwrap_or(&none);
        refresh_in_place(pc, discovered, old, key, before, after).unwrap_or_else(|| {
            let pool = Self::build_pool(pc, discovered, Some(old));
            let (added, removed) = member_changes(old, &pool);
            Refreshed {
                pool,
                added,
                removed,
                in_place: false,
            }
        })
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
        let slot = shared.slot.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(l) = self
            .listeners
            .get(slot)
            .filter(|l| Arc::ptr_eq(&l.shared, shared))
        {
            return Some(l);
        }
        self.listeners
            .iter()
            .find(|l| Arc::ptr_eq(&l.shared, shared))
            .or_else(|| self.listener_at(bound))
    }

    /// Tells each listener its place in this snapshot, where `listener_of`
    /// looks first: for the snapshot about to be published (control's
    /// apply; `with_pool` keeps the places). A connection still on the
    /// previous snapshot, where a listener had another place, finds it by
    /// the walk.
    pub fn place_listeners(&self) {
        for (i, l) in self.listeners.iter().enumerate() {
            l.shared.slot.store(i, std::sync::atomic::Ordering::Relaxed);
        }
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
    let max_body = l.max_request_body.unwrap_or(0);
    shared.max_request_body.store(
        l.rules.max_body_bound(max_body),
        std::sync::atomic::Ordering::Relaxed,
    );
    shared.error_pages.store(Arc::clone(&l.error_pages));
    shared
        .client_ip_header
        .set(l.client_ip_header.clone().map(Arc::new));
    shared.client_ip_from.set(l.client_ip_from.clone());
    shared.compression.set(l.compression.clone());
    ListenerRuntime {
        name: Arc::from(l.name.as_str()),
        binds: l.binds.clone(),
        mode: l.mode,
        scheme: if l.tls.is_some() { "https" } else { "http" },
        router: Router::new(l.routes.clone(), l.pool),
        rules: Arc::clone(&l.rules),
        read_only: l.read_only.clone().map(Arc::new),
        max_request_body: max_body,
        http: (l.mode == Mode::Http).then(|| {
            Arc::new(server_builders(
                (l.request_header_timeout, l.park_idle_after),
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
        sni_hello: (l.mode == Mode::Tcp && l.tls.is_none() && !l.routes.is_empty())
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

/// Members added and removed between two builds of a pool (by state).
pub fn member_changes(old: &Pool, new: &Pool) -> (Vec<Arc<Server>>, Vec<Arc<Server>>) {
    // the members of `a` whose state `b` does not hold
    let only_in = |a: &Pool, b: &Pool| -> Vec<Arc<Server>> {
        let uids: HashSet<u64> = b.servers.iter().map(|s| s.state.uid).collect();
        a.servers
            .iter()
            .filter(|s| !uids.contains(&s.state.uid))
            .cloned()
            .collect()
    };
    (only_in(new, old), only_in(old, new))
}

/// The members that came (new, or with another weight or backup flag) and the
/// addresses that went (gone, or changed) between two answers: one merge, no
/// allocation beyond the change.
pub fn answer_changes<'a>(
    before: &FoundSet,
    after: &'a FoundSet,
) -> (Vec<&'a Found>, Vec<SocketAddr>) {
    let (mut came, mut went) = (Vec::new(), Vec::new());
    let (mut b, mut a) = (before.iter().peekable(), after.iter().peekable());
    loop {
        match (b.peek(), a.peek()) {
            (Some(x), Some(y)) if x.addr == y.addr => {
                if x != y {
                    went.push(x.addr);
                    came.push(*y);
                }
                b.next();
                a.next();
            }
            (Some(x), Some(y)) if x.addr < y.addr => {
                went.push(x.addr);
                b.next();
            }
            (_, Some(y)) => {
                came.push(*y);
                a.next();
            }
            (Some(x), None) => {
                went.push(x.addr);
                b.next();
            }
            (None, None) => break,
        }
    }
    (came, went)
}

/// [`Snapshot::refresh_pool`] where the change is confined to entry `key`'s
/// members; None where it is not (or the pool holds none of them yet, so where
/// new ones go is not known without a rebuild).
fn refresh_in_place(
    pc: &PoolConfig,
    discovered: &Discovered,
    old: &Arc<Pool>,
    key: &DnsKey,
    before: &FoundSet,
    after: &FoundSet,
) -> Option<Refreshed> {
    let mut entries = pc
        .servers
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(&s.address, ServerAddr::Dns(d) if *d == key.entry));
    let (at, spec) = entries.next()?;
    // (the config check refuses a name written twice in a pool; should one
    // slip through, its members are not one run)
    if entries.next().is_some() {
        return None;
    }
    let (came, went) = answer_changes(before, after);
    // an address another entry also names would change hands (the first entry
    // naming an address owns it)
    enum Other<'a> {
        Static(SocketAddr),
        Dns(Option<&'a FoundSet>),
    }
    let others: Vec<Other> = pc
        .servers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != at)
        .map(|(_, s)| match &s.address {
            ServerAddr::Static(x) => Other::Static(*x),
            ServerAddr::Dns(d) => Other::Dns(discovered.get(&dns_key(pc, d))),
        })
        .collect();
    let elsewhere = |a: SocketAddr| {
        others.iter().any(|o| match o {
            Other::Static(x) => *x == a,
            Other::Dns(found) => {
                found.is_some_and(|f| f.binary_search_by(|f| f.addr.cmp(&a)).is_ok())
            }
        })
    };
    if came
        .iter()
        .map(|f| f.addr)
        .chain(went.iter().copied())
        .any(elsewhere)
    {
        return None;
    }
    let name = key.entry.to_string();
    let source: Arc<str> = Arc::from(name.as_str());
    let initial = Pool::initial_health(pc);
    let spec_of = |f: &Found| {
        (
            f.weight
                .map_or(spec.weight, |w| w.min(crate::config::MAX_WEIGHT)),
            spec.backup || f.backup,
        )
    };
    // this entry's members: one run, sorted by address (`members`), after
    // those of the entries before it
    let mine = |s: &Server| s.source.as_deref() == Some(name.as_str());
    let start = old.servers.iter().position(|s| mine(s))?;
    let len = old.servers[start..].partition_point(|s| mine(s));
    let run = &old.servers[start..start + len];
    let hash = old.balance == crate::config::Balance::Hash;
    let mut next = Next {
        servers: Vec::with_capacity(old.servers.len() + came.len()),
        moved: Vec::with_capacity(if hash { old.servers.len() } else { 0 }),
        hash,
        fresh: Vec::new(),
        gone: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
    };
    next.keep(&old.servers[..start]);
    // the members that stay are copied a slice at a time, between the
    // addresses that changed
    let mut at = 0;
    let mut came = came.into_iter().peekable();
    let mut went = went.into_iter().peekable();
    loop {
        let a = match (came.peek(), went.peek()) {
            (Some(c), Some(&w)) => c.addr.min(w),
            (Some(c), None) => c.addr,
            (None, Some(&w)) => w,
            (None, None) => break,
        };
        let to = at + run[at..].partition_point(|s| s.addr < a);
        next.keep(&run[at..to]);
        at = to;
        let old_member = went
            .next_if_eq(&a)
            .map(|_| run.get(at).filter(|s| s.addr == a));
        let new_member = came.next_if(|f| f.addr == a);
        let (weight, backup) = match new_member {
            Some(f) => spec_of(f),
            None => (0, false),
        };
        match (old_member, new_member) {
            // went, but was not among this entry's members
            (Some(None), _) => return None,
            (Some(Some(s)), found) => {
                at += 1;
                next.gone.push(s.weight);
                if hash {
                    next.moved.push(GONE);
                }
                match found {
                    // the same member with another weight or backup flag
                    Some(_) => {
                        let weight = s.state.weight_override().unwrap_or(weight);
                        next.push_fresh(Arc::new(Server {
                            weight,
                            backup,
                            id: Arc::clone(&s.id),
                            source: s.source.clone(),
                            state: Arc::clone(&s.state),
                            addr: s.addr,
                        }));
                    }
                    None => next.removed.push(Arc::clone(s)),
                }
            }
            (None, Some(f)) => {
                let s = Arc::new(Server {
                    addr: f.addr,
                    id: Arc::from(f.addr.to_string()),
                    weight,
                    backup,
                    source: Some(Arc::clone(&source)),
                    state: Arc::new(ServerState::new(initial)),
                });
                next.added.push(Arc::clone(&s));
                next.push_fresh(s);
            }
            // cannot be: `a` is the address of one of them
            (None, None) => return None,
        }
    }
    next.keep(&run[at..]);
    next.keep(&old.servers[start + len..]);
    let Next {
        servers,
        moved,
        fresh,
        gone,
        added,
        removed,
        ..
    } = next;
    let len = servers.len();
    let pool = old.with_members(
        pc,
        servers,
        &Delta {
            len,
            fresh: &fresh,
            gone: &gone,
            moved: &moved,
        },
    );
    Some(Refreshed {
        pool,
        added,
        removed,
        in_place: true,
    })
}

/// The members of a pool being refreshed, as [`refresh_in_place`] builds them.
struct Next {
    servers: Vec<Arc<Server>>,
    /// The hash balancer's: each old member's new index, or `GONE`.
    moved: Vec<u32>,
    hash: bool,
    fresh: Vec<(u32, u32, SocketAddr)>,
    gone: Vec<u32>,
    added: Vec<Arc<Server>>,
    removed: Vec<Arc<Server>>,
}

impl Next {
    /// Old members that stay as they are.
    fn keep(&mut self, old: &[Arc<Server>]) {
        if self.hash {
            let at = self.servers.len() as u32;
            self.moved.extend((0..old.len() as u32).map(|i| at + i));
        }
        self.servers.extend_from_slice(old);
    }

    /// A member that is new, or has a new weight or backup flag.
    fn push_fresh(&mut self, s: Arc<Server>) {
        self.fresh
            .push((self.servers.len() as u32, s.weight, s.addr));
        self.servers.push(s);
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
                    .map_or(&[][..], |a| &a[..])
                {
                    if seen.insert(f.addr) {
                        out.push(MemberSpec {
                            addr: f.addr,
                            name: None,
                            // an SRV record's weight replaces the entry's (the
                            // records split the traffic among their targets),
                            // but an entry of weight 0 takes none, whatever
                            // its records say
                            weight: match (s.weight, f.weight) {
                                (0, _) => 0,
                                (w, None) => w,
                                (_, Some(w)) => w.min(crate::config::MAX_WEIGHT),
                            },
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
    pub(crate) h2: crate::http2::server::Settings,
    /// Also bounds how long a new connection may stay silent.
    pub(crate) header_timeout: Duration,
    /// The longest a write to the client may wait (the client not reading).
    pub(crate) client_timeout: Duration,
    /// HTTP/1.1: an idle connection is parked after this long (`proxy::park`).
    pub(crate) park_after: Option<Duration>,
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
    (request_header_timeout, park_after): (Duration, Option<Duration>),
    client_timeout: Duration,
    h2cfg: &crate::config::Http2Config,
) -> ServerBuilders {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(request_header_timeout)
        // the fast path's limit: a connection that went to hyper (a chunked
        // upload, Expect) does not take heads six times larger than one that
        // did not
        .max_header_size(crate::h1::MAX_HEAD)
        .keep_alive(true);
    // rampart's own HTTP/2 server, every limit from `[listener.http2]`
    let h2 = crate::http2::server::Settings {
        max_concurrent_streams: h2cfg.max_concurrent_streams,
        max_header_list_size: h2cfg.max_header_list_size,
        initial_stream_window_size: h2cfg.initial_stream_window_size,
        initial_connection_window_size: h2cfg.initial_connection_window_size,
        max_frame_size: h2cfg.max_frame_size,
        // rapid reset (CVE-2023-44487): streams the client resets before they
        // are answered; past the limit, GOAWAY ENHANCE_YOUR_CALM
        max_pending_accept_reset_streams: h2cfg.max_pending_accept_reset_streams,
        // streams rampart had to reset for the client's errors (CVE-2024-27316 kin)
        max_local_error_reset_streams: h2cfg.max_local_error_reset_streams,
        // Dead peers are found by pings; an h2 connection has no header timer.
        keepalive_interval: h2cfg.keepalive_interval,
        keepalive_timeout: h2cfg.keepalive_timeout,
        idle_timeout: h2cfg.idle_timeout,
        stall_timeout: client_timeout,
    };
    ServerBuilders {
        h1,
        h2,
        header_timeout: request_header_timeout,
        client_timeout,
        park_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 1, 0, i], 8000))
    }

    /// A random answer over 40 addresses, as the resolver gives it (sorted,
    /// one per address); `srv`: with SRV weights and backups.
    fn answer(srv: bool) -> Vec<Found> {
        (0..40u8)
            .filter(|_| fastrand::u8(..3) > 0)
            .map(|i| Found {
                addr: addr(i),
                weight: (srv && fastrand::bool()).then(|| fastrand::u32(1..4)),
                backup: srv && fastrand::u8(..8) == 0,
            })
            .collect()
    }

    /// `a` changed a little: some members gone, some new, some reweighted.
    fn changed(a: &[Found], srv: bool) -> Vec<Found> {
        let mut out: Vec<Found> = a
            .iter()
            .filter(|_| fastrand::u8(..8) > 0)
            .cloned()
            .collect();
        for f in &mut out {
            if srv && fastrand::u8(..8) == 0 {
                f.weight = Some(fastrand::u32(1..4));
            }
            if srv && fastrand::u8(..16) == 0 {
                f.backup = !f.backup;
            }
        }
        // now and then the name goes empty (on_empty = "clear")
        if fastrand::u8(..25) == 0 {
            out.clear();
        }
        for _ in 0..fastrand::usize(..3) {
            let i = fastrand::u8(..40);
            if !out.iter().any(|f| f.addr == addr(i)) {
                out.push(Found {
                    addr: addr(i),
                    weight: None,
                    backup: false,
                });
            }
        }
        out.sort();
        out
    }

    /// Same members, in the same order, with the same ids, weights, flags and
    /// sources, the same states where `old` had the member (new ones: a new
    /// state each, in the pool's initial health), and the same balancer.
    fn assert_same(old: &Pool, a: &Pool, b: &Pool, why: &str) {
        let view = |p: &Pool| -> Vec<_> {
            p.servers
                .iter()
                .map(|s| {
                    let kept = old.servers.iter().any(|o| Arc::ptr_eq(&o.state, &s.state));
                    let state = kept.then_some(s.state.uid);
                    (
                        s.addr,
                        s.id.clone(),
                        s.weight,
                        s.backup,
                        s.source.clone(),
                        state,
                        s.state.health(),
                    )
                })
                .collect()
        };
        assert_eq!(view(a), view(b), "{why}");
        assert!(a.balancer() == b.balancer(), "{why}: balancers differ");
    }

    /// An SRV record's weight replaces its entry's, except that an entry of
    /// weight 0 (taken out of traffic in the config) stays out.
    #[test]
    fn srv_weights_replace_the_entrys_but_not_a_zero() {
        for (entry, want) in [(3, 7), (0, 0)] {
            let text = format!(
                "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n\
                 [[pool]]\nname = \"p\"\n\
                 [[pool.server]]\naddress = \"_http._tcp.svc.test\"\nweight = {entry}\n"
            );
            let cfg = crate::config::parse(&text, "t.toml").unwrap();
            let pc = &cfg.pools[0];
            let ServerAddr::Dns(d) = &pc.servers[0].address else {
                unreachable!()
            };
            let mut found = Discovered::new();
            found.insert(
                dns_key(pc, d),
                vec![Found {
                    addr: SocketAddr::from(([127, 3, 0, 1], 8000)),
                    weight: Some(7),
                    backup: false,
                }]
                .into(),
            );
            let m = members(pc, &found);
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].weight, want, "entry weight {entry}");
        }
    }

    /// A pool's connection epoch stays through reloads that keep how its
    /// backend connections are made, and moves on when one changes
    /// `send_proxy` or `protocol` (or `[pool.tls]`), the member's state kept.
    #[test]
    fn the_connection_epoch_moves_only_when_connections_are_made_otherwise() {
        let text = |pool_extra: &str, weight: u32| {
            format!(
                "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n\
                 [[pool]]\nname = \"p\"\n{pool_extra}\n\
                 [[pool.server]]\naddress = \"127.2.0.1:80\"\nweight = {weight}\n"
            )
        };
        let build = |text: String, old: Option<&Arc<Pool>>| {
            let cfg = crate::config::parse(&text, "t.toml").unwrap();
            Arc::new(Snapshot::build_pool(&cfg.pools[0], &Discovered::new(), old))
        };
        let p0 = build(text("", 1), None);
        assert_eq!(p0.conn_epoch, 0);
        let p1 = build(text("", 2), Some(&p0));
        assert_eq!(p1.conn_epoch, 0, "a weight is not how connections are made");
        let p2 = build(text("send_proxy = \"v1\"", 2), Some(&p1));
        assert_eq!(p2.conn_epoch, 1);
        let p3 = build(text("send_proxy = \"v1\"", 2), Some(&p2));
        assert_eq!(p3.conn_epoch, 1);
        let p4 = build(text("protocol = \"h2\"", 2), Some(&p3));
        assert_eq!(p4.conn_epoch, 2);
        for (a, b) in [(&p0, &p1), (&p1, &p2), (&p2, &p3), (&p3, &p4)] {
            assert!(Arc::ptr_eq(&a.servers[0].state, &b.servers[0].state));
        }
    }

    #[test]
    fn a_refresh_in_place_builds_what_a_rebuild_builds() {
        for balance in ["round_robin", "least_conn", "random_two", "hash", "first"] {
            for (srv, alone) in [(false, false), (true, false), (false, true), (true, true)] {
                // the name alone (equal weights without SRV), or: a static
                // member before the name, another after it, and a second name
                // that shares no address with the first
                let mut text = format!(
                    "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n\
                     [[pool]]\nname = \"p\"\nbalance = \"{balance}\"\n\
                     [[pool.server]]\naddress = \"svc.test:8000\"\nweight = 2\n"
                );
                if !alone {
                    text = text.replace(
                        "[[pool.server]]",
                        "[[pool.server]]\naddress = \"127.2.0.1:80\"\nweight = 0\n[[pool.server]]",
                    ) + "[[pool.server]]\naddress = \"other.test:8000\"\nbackup = true\n\
                         [[pool.server]]\naddress = \"127.2.0.2:80\"\n";
                }
                let cfg = crate::config::parse(&text, "t.toml").unwrap();
                let pc = &cfg.pools[0];
                let key_of = |name: &str| {
                    let d = match ServerAddr::parse(name) {
                        Ok(ServerAddr::Dns(d)) => d,
                        _ => unreachable!(),
                    };
                    dns_key(pc, &d)
                };
                let (svc, other) = (key_of("svc.test:8000"), key_of("other.test:8000"));
                let mut d = Discovered::new();
                d.insert(svc.clone(), answer(srv).into());
                let far = |i: u8| SocketAddr::from(([127, 3, 0, i], 8000));
                d.insert(
                    other.clone(),
                    vec![Found {
                        addr: far(1),
                        weight: None,
                        backup: false,
                    }]
                    .into(),
                );
                let mut pool = Arc::new(Snapshot::build_pool(pc, &d, None));
                let mut in_place = 0usize;
                // refreshes `key` to `next`, checks it against a rebuild, and
                // says whether it was made in place
                let refresh = |d: &mut Discovered,
                               pool: &mut Arc<Pool>,
                               key: &DnsKey,
                               next: Vec<Found>,
                               why: &str| {
                    let before = d.insert(key.clone(), next.into()).unwrap_or_default();
                    let r = Snapshot::refresh_pool(pc, d, pool, key, &before);
                    let full = Snapshot::build_pool(pc, d, Some(pool));
                    assert_same(pool, &r.pool, &full, why);
                    let (added, removed) = member_changes(pool, &full);
                    let addrs = |v: &[Arc<Server>]| {
                        let mut a: Vec<SocketAddr> = v.iter().map(|s| s.addr).collect();
                        a.sort();
                        a
                    };
                    assert_eq!(addrs(&r.added), addrs(&added), "{why}");
                    assert_eq!(addrs(&r.removed), addrs(&removed), "{why}");
                    *pool = Arc::new(r.pool);
                    r.in_place
                };
                let one = |a: SocketAddr| {
                    vec![Found {
                        addr: a,
                        weight: None,
                        backup: false,
                    }]
                };
                for round in 0..200 {
                    let why = format!("{balance} srv={srv} round {round}");
                    // now and then the other name takes one of svc's
                    // addresses, or svc takes a static one: it changes hands
                    let shared = !alone && fastrand::u8(..10) == 0;
                    if shared {
                        refresh(
                            &mut d,
                            &mut pool,
                            &other,
                            one(addr(fastrand::u8(..40))),
                            &why,
                        );
                    }
                    let mut next = changed(&d[&svc], srv);
                    if !alone && fastrand::u8(..20) == 0 {
                        next.push(Found {
                            addr: "127.2.0.2:80".parse().unwrap(),
                            weight: None,
                            backup: false,
                        });
                        next.sort();
                        next.dedup();
                    }
                    in_place += usize::from(refresh(&mut d, &mut pool, &svc, next, &why));
                    if shared {
                        refresh(&mut d, &mut pool, &other, one(far(1)), &why);
                    }
                    // an operator's weight for a member: the control task
                    // rebuilds the pool at once (`rebuild_pool`). Not when
                    // the name is alone: there, equal weights stay equal
                    if !alone && !pool.servers.is_empty() && fastrand::u8(..10) == 0 {
                        let s = &pool.servers[fastrand::usize(..pool.servers.len())];
                        s.state.set_weight_override(Some(fastrand::u32(1..5)));
                        pool = Arc::new(Snapshot::build_pool(pc, &d, Some(&pool)));
                    }
                }
                // most changes are confined to the name: they are made in place
                assert!(
                    in_place > 120,
                    "{balance} srv={srv}: {in_place} of 200 in place"
                );
            }
        }
    }

    /// A request finds its listener at the place the snapshot published last
    /// gave it (`place_listeners`), without walking those before it; a
    /// connection still on an older snapshot, where the listener had another
    /// place, finds it too, as does one whose listener was renamed (by the
    /// address it came in on).
    #[test]
    fn a_listener_is_found_at_its_place_and_by_the_walk() {
        let config = |names: &[&str]| {
            let mut text = String::from("[admin]\nbind = \"127.0.0.1:18404\"\n");
            for (i, n) in names.iter().enumerate() {
                text += &format!(
                    "[[listener]]\nname = \"{n}\"\nbind = [\"127.0.0.1:{}\"]\nmode = \"http\"\npool = \"p\"\n",
                    18100 + i
                );
            }
            text += "[[pool]]\nname = \"p\"\n  [[pool.server]]\n  address = \"127.0.0.2:80\"\n";
            crate::config::parse(&text, "t.toml").unwrap()
        };
        let bound = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let first = Snapshot::build(&config(&["a", "b", "c"]), None, &Default::default(), 1);
        first.place_listeners();
        for (i, l) in first.listeners.iter().enumerate() {
            assert_eq!(l.shared.slot.load(std::sync::atomic::Ordering::Relaxed), i);
            let found = first
                .listener_of(&l.shared, bound(18100 + i as u16))
                .unwrap();
            assert!(Arc::ptr_eq(&found.shared, &l.shared));
        }
        // "a" gone: "c" moves from 2 to 1, and keeps its state
        let c = Arc::clone(&first.listeners[2].shared);
        let second = Snapshot::build(&config(&["b", "c"]), Some(&first), &Default::default(), 2);
        // (built, not yet published: "c" is still at 2, and found)
        assert_eq!(c.slot.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(Arc::ptr_eq(
            &second.listener_of(&c, bound(18101)).unwrap().shared,
            &c
        ));
        second.place_listeners();
        assert_eq!(c.slot.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(Arc::ptr_eq(
            &second.listener_of(&c, bound(18101)).unwrap().shared,
            &c
        ));
        // the older snapshot: the hint points at "b", the walk finds "c"
        assert_eq!(&*first.listener_of(&c, bound(18102)).unwrap().name, "c");
        // renamed ("b" is now "d", on the same address): found by the address
        let b = Arc::clone(&second.listeners[0].shared);
        let third = Snapshot::build(&config(&["d", "c"]), Some(&second), &Default::default(), 3);
        third.place_listeners();
        assert_eq!(&*third.listener_of(&b, bound(18100)).unwrap().name, "d");
    }
}
