//! The immutable runtime view the data plane reads: listeners (with their routers)
//! and pools, built from a `Config` plus the members found through DNS. Per-server
//! state lives in `Arc`s that a new snapshot carries over by (pool, address), so a
//! DNS change (or a reload) keeps health, counters and breakers of survivors.

use crate::config::{Config, Mode, PoolConfig, ServerAddr};
use crate::discovery::Discovered;
use crate::pool::{MemberSpec, Pool, PoolShared, ServerState};
use crate::router::Router;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Snapshot {
    pub listeners: Vec<ListenerRuntime>,
    pub pools: Vec<Arc<Pool>>,
}

#[derive(Debug, Clone)]
pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub mode: Mode,
    pub router: Router,
    pub request_header_timeout: Duration,
}

impl Snapshot {
    /// Builds a snapshot; state of pools and servers that also exist in `prev` is kept.
    pub fn build(cfg: &Config, prev: Option<&Snapshot>, discovered: &Discovered) -> Snapshot {
        let pools = cfg
            .pools
            .iter()
            .enumerate()
            .map(|(pi, pc)| {
                let old = prev.and_then(|p| p.pools.iter().find(|o| *o.name == *pc.name));
                Arc::new(Self::build_pool(pc, pi, discovered, old))
            })
            .collect();
        let listeners = cfg
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                name: Arc::from(l.name.as_str()),
                mode: l.mode,
                router: Router {
                    routes: l.routes.clone(),
                    default_pool: l.pool,
                },
                request_header_timeout: l.request_header_timeout,
            })
            .collect();
        Snapshot { listeners, pools }
    }

    /// Builds pool `pi` from its config entries and the members found for its DNS
    /// entries, carrying over the state of members `old` already had.
    pub fn build_pool(
        pc: &PoolConfig,
        pi: usize,
        discovered: &Discovered,
        old: Option<&Arc<Pool>>,
    ) -> Pool {
        let old_states: HashMap<SocketAddr, &Arc<ServerState>> = old
            .map(|o| o.servers.iter().map(|s| (s.addr, &s.state)).collect())
            .unwrap_or_default();
        let shared = old.map_or_else(
            || Arc::new(PoolShared::new(&pc.name)),
            |o| Arc::clone(&o.shared),
        );
        let initial = Pool::initial_health(pc);
        Pool::new(pc, shared, members(pc, pi, discovered), |addr| {
            old_states
                .get(&addr)
                .map_or_else(|| Arc::new(ServerState::new(initial)), |s| Arc::clone(s))
        })
    }

    /// This snapshot with pool `pi` replaced.
    pub fn with_pool(&self, pi: usize, pool: Arc<Pool>) -> Snapshot {
        let mut pools = self.pools.clone();
        if let Some(slot) = pools.get_mut(pi) {
            *slot = pool;
        }
        Snapshot {
            listeners: self.listeners.clone(),
            pools,
        }
    }
}

/// The members of pool `pi`: static entries as written, DNS entries as last found.
/// An address reachable through two entries is one member (the first wins).
pub fn members(pc: &PoolConfig, pi: usize, discovered: &Discovered) -> Vec<MemberSpec> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (si, s) in pc.servers.iter().enumerate() {
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
            dns => {
                let source: Arc<str> = Arc::from(dns.to_string());
                for f in discovered
                    .get(&(pi, si))
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
