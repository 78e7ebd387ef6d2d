//! DNS service discovery: every `NAME:PORT` (A/AAAA) and `_svc._proto.NAME` (SRV)
//! server entry is re-resolved when its answer's TTL runs out, clamped to
//! [min_ttl, max_ttl] with jitter, through hickory-resolver with its cache off.
//! Each answer is the entry's full member set; the applier rebuilds that pool and
//! stores a new snapshot. Survivors keep their state (health, counters, breaker),
//! new members start as the pool's health config says, removed ones are retired:
//! no new requests, idle pooled connections closed at once, in-flight ones finish.

use crate::config::{Config, DnsName, OnEmpty, Prefer, ResolverConfig, ServerAddr};
use crate::snapshot::{Discovered, DnsKey, Found, FoundSet};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A watch's new member set, for the control task to apply.
#[derive(Debug)]
pub struct DnsUpdate {
    pub key: DnsKey,
    pub members: FoundSet,
}

/// Where the watches send their answers (the control task holds the receiver).
pub type DnsTx = tokio::sync::mpsc::UnboundedSender<DnsUpdate>;

/// When each watch resolves first: at start-up after the initial round's TTL; a
/// watch a reload adds, at once.
pub type FirstWait = HashMap<DnsKey, Duration>;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read /etc/resolv.conf: {0}")]
    SystemConfig(String),
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}

/// Why a lookup gave no members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN or no records of the type: a real, empty answer.
    Empty,
    /// Timeout, refused, SERVFAIL...: no answer at all.
    Failed(String),
}

/// A successful answer: the members and how long they are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub found: FoundSet,
    pub ttl: Duration,
    /// One address family's query failed while the other answered: `found`
    /// holds the other family's members only.
    pub partial: Option<Partial>,
}

/// Which families' queries failed in a partial answer (over all of an SRV
/// answer's targets, both may have), and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub v4: bool,
    pub v6: bool,
    pub error: String,
}

impl Partial {
    /// Is `addr` of a family whose query failed?
    pub fn failed(&self, addr: SocketAddr) -> bool {
        if addr.is_ipv6() {
            self.v6
        } else {
            self.v4
        }
    }

    /// Both targets' failures, for an answer made of both.
    fn and(self, other: Option<Partial>) -> Partial {
        match other {
            Some(o) => Partial {
                v4: self.v4 || o.v4,
                v6: self.v6 || o.v6,
                error: self.error,
            },
            None => self,
        }
    }
}

/// What the stats page and API show for one name.
#[derive(Debug, Clone, Default)]
pub struct NameStatus {
    pub pool: String,
    pub name: String,
    pub last_lookup: Option<SystemTime>,
    pub ttl: Option<Duration>,
    /// The last answer, shared with the watch and the control task.
    pub members: FoundSet,
    pub lookups: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_change: Option<SystemTime>,
}

/// Name statuses, keyed by "pool/name". Written by the discovery tasks only.
pub type NameRegistry = Mutex<BTreeMap<String, NameStatus>>;

pub struct Discovery {
    resolver: TokioResolver,
    cfg: ResolverConfig,
    /// resolv.conf's `domain` and `search` names, and its `ndots`: a name is
    /// tried under each here, one query per name, so that a failure is never
    /// hidden behind a later name's NXDOMAIN (hickory's own search goes on to
    /// the next name on any error and returns the last one's).
    search: Vec<Name>,
    ndots: usize,
}

impl Discovery {
    pub fn new(cfg: &ResolverConfig) -> Result<Discovery, DiscoveryError> {
        let (hconf, mut opts) = match &cfg.nameservers {
            Some(list) => {
                let servers = list
                    .iter()
                    .map(|a| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = a.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        // UDP first; a truncated answer is asked again over TCP.
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                (
                    HickoryConfig::from_name_servers(servers),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DiscoveryError::SystemConfig(e.to_string()))?,
        };
        opts.cache_size = 0;
        opts.timeout = cfg.timeout;
        opts.attempts = 1;
        let mut search: Vec<Name> = hconf.domain().into_iter().cloned().collect();
        for n in hconf.search() {
            if !search.contains(n) {
                search.push(n.clone());
            }
        }
        let ndots = opts.ndots;
        let resolver = TokioResolver::builder_with_config(hconf, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DiscoveryError::Build(e.to_string()))?;
        Ok(Discovery {
            resolver,
            cfg: cfg.clone(),
            search,
            ndots,
        })
    }

    /// Resolves one server entry into its full member set.
    pub async fn resolve(&self, name: &DnsName) -> Result<Answer, LookupError> {
        match name {
            DnsName::Host { host, port } => {
                let (ips, ttl, partial) = self.lookup_ips(host).await?;
                let found: Vec<Found> = ips
                    .into_iter()
                    .map(|ip| Found {
                        addr: SocketAddr::new(ip, *port),
                        weight: None,
                        backup: false,
                    })
                    .collect();
                Ok(Answer {
                    found: FoundSet::new(found),
                    ttl,
                    partial,
                })
            }
            DnsName::Srv { name } => {
                let mut answer = Err(LookupError::Empty);
                for n in candidates(name, &self.search, self.ndots)? {
                    answer = self.query(&n, RecordType::SRV).await;
                    if answer != Err(LookupError::Empty) {
                        break;
                    }
                }
                let records = answer?;
                let mut ttl = u32::MAX;
                let mut srvs = Vec::new();
                for (t, data) in &records {
                    if let RData::SRV(srv) = data {
                        ttl = ttl.min(*t);
                        srvs.push(srv.clone());
                    }
                }
                let best = srvs
                    .iter()
                    .map(|s| s.priority)
                    .min()
                    .ok_or(LookupError::Empty)?;
                let mut ttl = Duration::from_secs(u64::from(ttl));
                // the targets' addresses, asked all at once
                let targets = futures_join_all(
                    srvs.iter()
                        .map(|srv| async move {
                            let target = srv.target.to_string();
                            self.lookup_ips(&target).await
                        })
                        .collect(),
                )
                .await;
                let mut found = Vec::new();
                let mut partial: Option<Partial> = None;
                let heaviest = srvs.iter().map(|s| s.weight).max().unwrap_or(0);
                for (srv, addrs) in srvs.iter().zip(targets) {
                    let (ips, t, p) = match addrs {
                        Ok(x) => x,
                        // a target with no address record is left out ...
                        Err(LookupError::Empty) => continue,
                        // ... but a failed lookup fails the whole answer, so the last
                        // good set is kept (hold_on_failure) rather than shrunk
                        Err(e @ LookupError::Failed(_)) => return Err(e),
                    };
                    ttl = ttl.min(t);
                    partial = match (partial, p) {
                        (Some(a), b) => Some(a.and(b)),
                        (None, b) => b,
                    };
                    for ip in ips {
                        found.push(Found {
                            addr: SocketAddr::new(ip, srv.port),
                            weight: Some(srv_weight(srv.weight, heaviest)),
                            backup: srv.priority > best,
                        });
                    }
                }
                if found.is_empty() {
                    return Err(LookupError::Empty);
                }
                Ok(Answer {
                    found: FoundSet::new(found),
                    ttl,
                    partial,
                })
            }
        }
    }

    /// One query, for one fully qualified name: its records with their TTLs.
    /// NXDOMAIN and an answer without records of the type are `Empty`.
    async fn query(&self, name: &Name, t: RecordType) -> Result<Vec<(u32, RData)>, LookupError> {
        let lookup = self
            .resolver
            .lookup(name.clone(), t)
            .await
            .map_err(classify)?;
        // every answer record's TTL counts (a CNAME's too); the data is
        // filtered by its users
        if !lookup.answers().iter().any(|r| r.record_type() == t) {
            return Err(LookupError::Empty);
        }
        Ok(lookup
            .answers()
            .iter()
            .map(|r| (r.ttl, r.data.clone()))
            .collect())
    }

    /// A host's addresses: under the first search name that has any, in the
    /// families `prefer` asks for. A failed query ends the search as a failure;
    /// only a real empty answer goes on to the next name (or family).
    async fn lookup_ips(&self, host: &str) -> Result<Addresses, LookupError> {
        for n in candidates(host, &self.search, self.ndots)? {
            let found = match self.cfg.prefer {
                Prefer::Any => self.lookup_both(&n).await,
                Prefer::Ipv4 => self.first_family(&n, RecordType::A, RecordType::AAAA).await,
                Prefer::Ipv6 => self.first_family(&n, RecordType::AAAA, RecordType::A).await,
            };
            if found != Err(LookupError::Empty) {
                return found;
            }
        }
        Err(LookupError::Empty)
    }

    /// One family's addresses, or the other's when the first has no records
    /// (not when its query failed: that would swap a pool's family on one lost
    /// packet).
    async fn first_family(
        &self,
        name: &Name,
        first: RecordType,
        then: RecordType,
    ) -> Result<Addresses, LookupError> {
        let records = match self.query(name, first).await {
            Err(LookupError::Empty) => self.query(name, then).await?,
            other => other?,
        };
        let (ips, ttl) = self.addresses(&records);
        Ok((ips, ttl, None))
    }

    /// A and AAAA asked at once, each on its own. hickory's dual-stack lookup
    /// hides a failed family behind the other's answer, which would drop every
    /// member of the failed family until the next good answer; here the answer
    /// says which family failed (`Partial`), and the watch keeps that family's
    /// last members for hold_on_failure. A family with no records is just empty.
    async fn lookup_both(&self, name: &Name) -> Result<Addresses, LookupError> {
        let (v4, v6) = tokio::join!(
            self.query(name, RecordType::A),
            self.query(name, RecordType::AAAA)
        );
        let mut records = Vec::new();
        let mut partial: Option<Partial> = None;
        for (is_v6, family) in [(false, v4), (true, v6)] {
            match family {
                Ok(r) => records.extend(r),
                Err(LookupError::Empty) => {}
                Err(LookupError::Failed(error)) => match partial {
                    // both failed: no answer at all
                    Some(_) => return Err(LookupError::Failed(error)),
                    None => {
                        let kind = if is_v6 { "AAAA" } else { "A" };
                        partial = Some(Partial {
                            v4: !is_v6,
                            v6: is_v6,
                            error: format!("{kind} query: {error}"),
                        });
                    }
                },
            }
        }
        if records.is_empty() {
            // one family failed and the other has no records: no answer
            return Err(partial.map_or(LookupError::Empty, |p| LookupError::Failed(p.error)));
        }
        let (ips, ttl) = self.addresses(&records);
        Ok((ips, ttl, partial))
    }

    /// The addresses among `records`, and their shortest TTL.
    fn addresses(&self, records: &[(u32, RData)]) -> (Vec<IpAddr>, Duration) {
        let ips = records
            .iter()
            .filter_map(|(_, d)| match d {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        let ttl = records
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map_or(self.cfg.max_ttl, |t| Duration::from_secs(u64::from(t)));
        (ips, ttl)
    }
}

/// The fully qualified names to ask for `name`, in order, as resolv.conf's
/// search rules say (glibc's and hickory's): a name ending in a dot as it is; a
/// name with more than `ndots` labels as it is first, then under each search
/// domain; a shorter one under each search domain first, then as it is.
fn candidates(name: &str, search: &[Name], ndots: usize) -> Result<Vec<Name>, LookupError> {
    let name = Name::from_str(name)
        .map_err(|e| LookupError::Failed(format!("not a DNS name: {name}: {e}")))?;
    if name.is_fqdn() {
        return Ok(vec![name]);
    }
    let mut raw = name.clone();
    raw.set_fqdn(true);
    let raw_first = usize::from(name.num_labels()) > ndots || name.is_localhost();
    let mut out = Vec::with_capacity(search.len() + 1);
    if raw_first {
        out.push(raw.clone());
    }
    for domain in search {
        if let Ok(n) = name.clone().append_domain(domain) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    if !raw_first && !out.contains(&raw) {
        out.push(raw);
    }
    Ok(out)
}

/// A host's addresses, how long they are valid, and the family whose query
/// failed, if one did.
type Addresses = (Vec<IpAddr>, Duration, Option<Partial>);

fn classify(e: hickory_resolver::net::NetError) -> LookupError {
    if e.is_no_records_found() || e.is_nx_domain() {
        LookupError::Empty
    } else {
        LookupError::Failed(e.to_string())
    }
}

/// SRV weights are 0..=65535; ours are 1..=256 (an SRV weight of 0 still gets a
/// little traffic, as RFC 2782 asks). Weights above 256 are scaled down with
/// the heaviest of the answer, so their ratios hold (1000:100 stays 10:1, not
/// 256:100).
fn srv_weight(w: u16, heaviest: u16) -> u32 {
    let w = u32::from(w);
    let heaviest = u32::from(heaviest);
    if heaviest <= 256 {
        return w.max(1);
    }
    ((w * 256 + heaviest / 2) / heaviest).clamp(1, 256)
}

/// When to look again: the TTL clamped to [min, max], minus up to 10% jitter so the
/// names of a pool do not refresh in lockstep (never later than the TTL says).
pub fn refresh_after(ttl: Duration, min: Duration, max: Duration, jitter: f64) -> Duration {
    let base = ttl.clamp(min, max.max(min));
    let cut = base.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
    base.saturating_sub(cut).max(min)
}

/// Members added and removed between two answers: one merge, no allocation
/// beyond the change.
pub fn diff(old: &FoundSet, new: &FoundSet) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let (came, went) = crate::snapshot::answer_changes(old, new);
    // a member whose weight or backup flag changed both came and went
    let added = came
        .iter()
        .map(|f| f.addr)
        .filter(|a| went.binary_search(a).is_err())
        .collect();
    let removed = went
        .iter()
        .copied()
        .filter(|a| came.binary_search_by(|f| f.addr.cmp(a)).is_err())
        .collect();
    (added, removed)
}

/// Every DNS server entry of the config.
pub fn targets(cfg: &Config) -> Vec<DnsKey> {
    let mut out = Vec::new();
    for p in &cfg.pools {
        for s in &p.servers {
            if let ServerAddr::Dns(name) = &s.address {
                let key = DnsKey {
                    pool: p.name.clone(),
                    entry: name.clone(),
                };
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        }
    }
    out
}

/// Resolves every name once (at start-up, concurrently). A name that does not
/// resolve is not fatal: its entry starts with no members.
pub async fn initial_round(
    disc: &Discovery,
    cfg: &Config,
    registry: &NameRegistry,
) -> (Discovered, FirstWait) {
    resolve_once(disc, targets(cfg), registry).await
}

/// Resolves these entries once, concurrently (at start-up; at a reload, the
/// entries it adds, so that their pools have members when the new config
/// goes live): their members, and when each watch should look again.
pub async fn resolve_once(
    disc: &Discovery,
    keys: Vec<DnsKey>,
    registry: &NameRegistry,
) -> (Discovered, FirstWait) {
    let futs: Vec<_> = keys
        .into_iter()
        .map(|key| async move {
            let r = disc.resolve(&key.entry).await;
            (key, r)
        })
        .collect();
    let results = futures_join_all(futs).await;
    let mut found = Discovered::new();
    let mut waits = FirstWait::new();
    let c = &disc.cfg;
    for (key, r) in results {
        let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        let st = reg
            .entry(status_key(&key.pool, &key.entry))
            .or_insert_with(|| NameStatus {
                pool: key.pool.clone(),
                name: key.entry.to_string(),
                ..Default::default()
            });
        st.lookups += 1;
        st.last_lookup = Some(SystemTime::now());
        match r {
            Ok(a) => {
                tracing::info!(pool = %key.pool, name = %key.entry, members = a.found.len(), ttl = ?a.ttl, "resolved");
                st.ttl = Some(a.ttl);
                let members = a.found;
                st.members = members.clone();
                st.last_change = Some(SystemTime::now());
                let wait = refresh_after(a.ttl, c.min_ttl, c.max_ttl, fastrand::f64());
                waits.insert(key.clone(), wait);
                found.insert(key, members);
            }
            Err(e) => {
                let msg = match &e {
                    LookupError::Empty => "no such name (or no records)".to_string(),
                    LookupError::Failed(m) => m.clone(),
                };
                if matches!(e, LookupError::Failed(_)) {
                    st.errors += 1;
                }
                st.last_error = Some(msg.clone());
                tracing::warn!(pool = %key.pool, name = %key.entry, error = %msg, "name does not resolve yet; its members are added when it does");
                waits.insert(key, c.min_ttl);
            }
        }
    }
    (found, waits)
}

/// Polls futures concurrently to completion, in order (no extra crate).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

pub fn status_key(pool: &str, addr: &DnsName) -> String {
    format!("{pool}/{addr}")
}

/// The running DNS watches, one task per DNS server entry, keyed by `DnsKey`.
/// Owned by the control task: a reload starts the watches of new entries, stops
/// those of removed ones, and leaves the others (members, timers) alone.
pub struct Watches {
    disc: Option<Arc<Discovery>>,
    running: HashMap<DnsKey, CancellationToken>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// What each name resolved to last (the stats page, the admin API).
    registry: Arc<NameRegistry>,
    tx: DnsTx,
}

impl Watches {
    pub fn new(
        disc: Option<Arc<Discovery>>,
        (cancel, tracker): (CancellationToken, TaskTracker),
        registry: Arc<NameRegistry>,
        tx: DnsTx,
    ) -> Watches {
        Watches {
            disc,
            running: HashMap::new(),
            cancel,
            tracker,
            registry,
            tx,
        }
    }

    /// The resolver the watches use now.
    pub fn current(&self) -> Option<Arc<Discovery>> {
        self.disc.clone()
    }

    /// Is a watch running for `key`? (Its answers are applied only then.)
    pub fn is_running(&self, key: &DnsKey) -> bool {
        self.running.contains_key(key)
    }

    /// The resolver for `cfg`: the running one if its settings did not change,
    /// else a new one (built, not installed: a reload that fails later changes
    /// nothing). None when the config has no DNS entries.
    pub fn resolver_for(&self, cfg: &Config) -> Result<Option<Arc<Discovery>>, DiscoveryError> {
        if targets(cfg).is_empty() {
            return Ok(None);
        }
        match &self.disc {
            Some(d) if d.cfg == cfg.resolver => Ok(Some(Arc::clone(d))),
            _ => Discovery::new(&cfg.resolver).map(|d| Some(Arc::new(d))),
        }
    }

    /// Makes the running watches those of `cfg`, resolved through `disc`. A new
    /// resolver restarts every watch (each keeps its members); `first_wait` says
    /// when a started watch resolves first (absent: at once).
    pub fn sync(
        &mut self,
        cfg: &Config,
        disc: Option<Arc<Discovery>>,
        discovered: &Discovered,
        first_wait: &FirstWait,
    ) {
        let same = match (&self.disc, &disc) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            for (_, t) in self.running.drain() {
                t.cancel();
            }
            self.disc = disc;
        }
        let wanted = targets(cfg);
        self.running.retain(|k, t| {
            let keep = wanted.contains(k);
            if !keep {
                t.cancel();
            }
            keep
        });
        // The rows (and `rampart_dns_*` series) of entries no longer wanted go,
        // on both paths: a new resolver drained `running` above, so what is
        // stopped cannot be told from it (a reload that removes the last DNS
        // entry left every row behind).
        {
            let keep: std::collections::HashSet<String> = wanted
                .iter()
                .map(|k| status_key(&k.pool, &k.entry))
                .collect();
            let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            reg.retain(|k, _| keep.contains(k));
        }
        let Some(disc) = &self.disc else {
            return;
        };
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let token = self.cancel.child_token();
            self.running.insert(key.clone(), token.clone());
            let w = Watch {
                last: discovered.get(&key).cloned().unwrap_or_default(),
                first_wait: first_wait.get(&key).copied().unwrap_or(Duration::ZERO),
                key,
                disc: Arc::clone(disc),
                registry: Arc::clone(&self.registry),
                tx: self.tx.clone(),
            };
            let span = tracing::info_span!("dns", pool = %w.key.pool, name = %w.key.entry);
            self.tracker.spawn(tracing::Instrument::instrument(
                async move {
                    tokio::select! {
                        // (first: a stopped watch must not put its row back
                        // after `sync` removed it)
                        biased;
                        _ = token.cancelled() => {}
                        _ = w.run() => {}
                    }
                },
                span,
            ));
        }
    }
}

struct Watch {
    key: DnsKey,
    disc: Arc<Discovery>,
    registry: Arc<NameRegistry>,
    tx: DnsTx,
    last: FoundSet,
    first_wait: Duration,
}

impl Watch {
    async fn run(mut self) {
        let c = self.disc.cfg.clone();
        // when the lookups began to fail (hold_on_failure counts from here)
        let mut failing_since: Option<Instant> = None;
        let mut failures: u32 = 0;
        // the name has no records now (warned about once, not every min_ttl)
        let mut empty = false;
        let mut wait = self.first_wait;
        loop {
            tokio::time::sleep(wait).await;
            // what to publish when failures outlast hold_on_failure: nothing,
            // or the family that still answers
            let mut fallback = FoundSet::default();
            // and until then, with a family failing: the answer of the family
            // that answers (a scale-out is followed), with the failed family's
            // last members kept
            let mut holding: Option<FoundSet> = None;
            let result = match self.disc.resolve(&self.key.entry).await {
                // a family failed that has members now: they are kept, as on
                // a failure
                Ok(a) => match &a.partial {
                    Some(p) if self.last.iter().any(|f| p.failed(f.addr)) => {
                        let error = LookupError::Failed(p.error.clone());
                        let mut merged = a.found.to_vec();
                        merged.extend(self.last.iter().filter(|f| p.failed(f.addr)).cloned());
                        holding = Some(FoundSet::new(merged));
                        fallback = a.found;
                        Err(error)
                    }
                    _ => Ok(a),
                },
                Err(e) => Err(e),
            };
            let mut publish: Option<FoundSet> = None;
            let mut error: Option<String> = None;
            match result {
                Ok(a) => {
                    failures = 0;
                    failing_since = None;
                    empty = false;
                    wait = refresh_after(a.ttl, c.min_ttl, c.max_ttl, fastrand::f64());
                    if a.found != self.last {
                        publish = Some(a.found);
                    }
                    self.update_status(|st| st.ttl = Some(a.ttl));
                }
                Err(LookupError::Empty) => {
                    // a real answer: the resolver works, so a failure after
                    // it starts hold_on_failure afresh, and a kept set is not
                    // dropped by the first failure after a long empty spell
                    failures = 0;
                    failing_since = None;
                    wait = c.min_ttl;
                    if c.on_empty == OnEmpty::Clear && !self.last.is_empty() {
                        publish = Some(FoundSet::default());
                    } else if !self.last.is_empty() && !empty {
                        tracing::warn!(
                            "empty answer; keeping the last members (on_empty = \"keep\")"
                        );
                    }
                    empty = true;
                    error = Some("no such name (or no records)".into());
                }
                Err(LookupError::Failed(e)) => {
                    failures = failures.saturating_add(1);
                    wait = c
                        .min_ttl
                        .saturating_mul(1 << failures.min(5))
                        .min(c.max_ttl);
                    let held = failing_since.get_or_insert_with(Instant::now).elapsed();
                    match held {
                        h if h >= c.hold_on_failure && self.last != fallback => {
                            tracing::warn!(error = %e, held = ?h, kept = fallback.len(), "lookups failing past hold_on_failure; dropping the last members");
                            publish = Some(fallback);
                        }
                        _ => {
                            tracing::warn!(error = %e, failures, "lookup failed; keeping the last members");
                            publish = holding.filter(|h| *h != self.last);
                        }
                    }
                    self.update_status(|st| st.errors += 1);
                    error = Some(e);
                }
            }
            self.update_status(|st| {
                st.lookups += 1;
                st.last_lookup = Some(SystemTime::now());
                if error.is_some() {
                    st.last_error = error.clone();
                }
            });
            if let Some(new) = publish {
                let (added, removed) = diff(&self.last, &new);
                tracing::info!(?added, ?removed, "answer changed");
                self.update_status(|st| {
                    st.members = new.clone();
                    st.last_change = Some(SystemTime::now());
                });
                self.last = new.clone();
                if self
                    .tx
                    .send(DnsUpdate {
                        key: self.key.clone(),
                        members: new,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut NameStatus)) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let st = reg
            .entry(status_key(&self.key.pool, &self.key.entry))
            .or_insert_with(|| NameStatus {
                pool: self.key.pool.clone(),
                name: self.key.entry.to_string(),
                ..Default::default()
            });
        f(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Found {
        Found {
            addr: s.parse().unwrap(),
            weight: None,
            backup: false,
        }
    }

    #[test]
    fn ttl_is_clamped_and_jittered_down_only() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(
            refresh_after(Duration::from_secs(5), min, max, 0.0),
            Duration::from_secs(5)
        );
        assert_eq!(refresh_after(Duration::ZERO, min, max, 0.0), min);
        assert_eq!(refresh_after(Duration::from_secs(3600), min, max, 0.0), max);
        assert_eq!(
            refresh_after(Duration::from_secs(10), min, max, 1.0),
            Duration::from_secs(9)
        );
        for j in [0.0, 0.3, 0.99, 1.0] {
            let r = refresh_after(Duration::from_secs(20), min, max, j);
            assert!(
                r <= Duration::from_secs(20) && r >= Duration::from_secs(18),
                "{r:?}"
            );
        }
        // jitter never takes it below min_ttl
        assert_eq!(refresh_after(Duration::from_secs(1), min, max, 1.0), min);
    }

    #[test]
    fn member_set_diff() {
        // answers in any order, with an address twice: the set sorts them
        let old = FoundSet::new(vec![f("10.0.0.3:80"), f("10.0.0.1:80"), f("10.0.0.2:80")]);
        let mut heavier = f("10.0.0.3:80");
        heavier.weight = Some(5);
        let new = FoundSet::new(vec![
            f("10.0.0.2:80"),
            f("10.0.0.4:80"),
            heavier,
            f("10.0.0.4:80"),
        ]);
        assert_eq!(new.len(), 3);
        let (added, removed) = diff(&old, &new);
        assert_eq!(added, vec!["10.0.0.4:80".parse::<SocketAddr>().unwrap()]);
        assert_eq!(removed, vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap()]);
        assert_eq!(diff(&old, &old), (vec![], vec![]));
        // a new weight is a change of the member, not a member added or removed
        let (came, went) = crate::snapshot::answer_changes(&old, &new);
        let came: Vec<SocketAddr> = came.iter().map(|f| f.addr).collect();
        assert_eq!(
            came,
            [
                "10.0.0.3:80".parse().unwrap(),
                "10.0.0.4:80".parse().unwrap()
            ]
        );
        assert_eq!(
            went,
            [
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.3:80".parse().unwrap()
            ]
        );
    }

    #[test]
    fn search_names_follow_resolv_conf_rules() {
        let n = |s: &str| Name::from_str(s).unwrap();
        let search = [n("ns.svc.cluster.local."), n("svc.cluster.local.")];
        let names = |name: &str, ndots: usize| -> Vec<String> {
            candidates(name, &search, ndots)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // Kubernetes: ndots 5, a short name is tried under the search domains first
        assert_eq!(
            names("api", 5),
            [
                "api.ns.svc.cluster.local.",
                "api.svc.cluster.local.",
                "api."
            ]
        );
        // more labels than ndots: as it is first
        assert_eq!(
            names("api.ns.svc.cluster.local", 4),
            [
                "api.ns.svc.cluster.local.",
                "api.ns.svc.cluster.local.ns.svc.cluster.local.",
                "api.ns.svc.cluster.local.svc.cluster.local."
            ]
        );
        // a trailing dot: only as it is
        assert_eq!(names("api.example.", 5), ["api.example."]);
        assert!(candidates("bad..name", &search, 1).is_err());
    }

    #[test]
    fn srv_weights_map_into_range() {
        assert_eq!(srv_weight(0, 10), 1);
        assert_eq!(srv_weight(10, 10), 10);
        assert_eq!(srv_weight(60000, 60000), 256);
        // above 256 the ratios hold
        assert_eq!(srv_weight(1000, 1000), 256);
        assert_eq!(srv_weight(100, 1000), 26);
        assert_eq!(srv_weight(1, 65535), 1);
        assert_eq!(srv_weight(65535, 65535), 256);
    }
}
