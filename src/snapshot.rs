//! The immutable runtime view the data plane reads: listeners (with their routers)
//! and pools, built from a `Config`. Per-server state lives in `Arc`s that a new
//! snapshot carries over by (pool name, address), so a reload keeps counters and health.

use crate::config::{Config, Mode};
use crate::pool::{Pool, PoolShared, ServerState};
use crate::router::{Route, Router};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Snapshot {
    pub listeners: Vec<ListenerRuntime>,
    pub pools: Vec<Arc<Pool>>,
}

#[derive(Debug)]
pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub mode: Mode,
    pub router: Router,
    pub request_header_timeout: Duration,
}

impl Snapshot {
    /// Builds a snapshot; state of servers and pools that also exist in `prev` is kept.
    pub fn build(cfg: &Config, prev: Option<&Snapshot>) -> Snapshot {
        let mut old_servers: HashMap<(&str, SocketAddr), &Arc<ServerState>> = HashMap::new();
        let mut old_pools: HashMap<&str, &Arc<PoolShared>> = HashMap::new();
        if let Some(p) = prev {
            for pool in &p.pools {
                old_pools.insert(&pool.name, &pool.shared);
                for s in &pool.servers {
                    old_servers.insert((&pool.name, s.addr), &s.state);
                }
            }
        }
        let pools = cfg
            .pools
            .iter()
            .map(|pc| {
                let shared = old_pools
                    .get(pc.name.as_str())
                    .map_or_else(Arc::default, |s| Arc::clone(s));
                let initial = Pool::initial_health(pc);
                Arc::new(Pool::new(pc, shared, |addr| {
                    old_servers
                        .get(&(pc.name.as_str(), addr))
                        .map_or_else(|| Arc::new(ServerState::new(initial)), |s| Arc::clone(s))
                }))
            })
            .collect();
        let listeners = cfg
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                name: Arc::from(l.name.as_str()),
                mode: l.mode,
                router: Router {
                    routes: l
                        .routes
                        .iter()
                        .map(|r| Route {
                            host: r.host.clone(),
                            path_prefix: r.path_prefix.clone(),
                            pool: r.pool,
                        })
                        .collect(),
                    default_pool: l.pool,
                },
                request_header_timeout: l.request_header_timeout,
            })
            .collect();
        Snapshot { listeners, pools }
    }
}
