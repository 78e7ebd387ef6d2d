//! A pool of servers: the members of one snapshot, their long-lived runtime state
//! (`Arc<ServerState>`, which outlives snapshots), the balancer, and the queue that
//! requests wait in when every server is at `max_connections_per_server`.

pub mod balance;

use crate::config::{Balance, HashKey, PoolConfig};
use balance::{Balancer, Members};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Health as written by the health checker (UP until checks exist for the pool).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up = 0,
    Down = 1,
}

/// Runtime state of one server. Writers: the data plane (counters), health (health).
#[derive(Debug)]
pub struct ServerState {
    /// Process-unique id; keys the per-thread idle connection pools.
    pub uid: u64,
    /// Requests (http) or sessions (tcp) in flight.
    pub active: AtomicU32,
    pub total: AtomicU64,
    /// Bytes client -> server / server -> client.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connect_errors: AtomicU64,
    pub response_errors: AtomicU64,
    health: AtomicU8,
}

impl ServerState {
    pub fn new() -> ServerState {
        ServerState {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            active: AtomicU32::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            response_errors: AtomicU64::new(0),
            health: AtomicU8::new(Health::Up as u8),
        }
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Up,
            _ => Health::Down,
        }
    }

    pub fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Relaxed);
    }

    /// May this server be chosen at all (ignoring its connection limit)?
    pub fn usable(&self) -> bool {
        self.health() == Health::Up
    }

    /// Takes one connection slot if the server is below `max` (0 = unlimited).
    fn try_take(&self, max: u32) -> bool {
        if max == 0 {
            self.active.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a < max).then_some(a + 1)
            })
            .is_ok()
    }
}

impl Default for ServerState {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// `name` from the config, else the address; used in logs and error bodies.
    pub id: Arc<str>,
    pub weight: u32,
    pub state: Arc<ServerState>,
}

/// Pool-level state shared by all snapshots of the pool.
#[derive(Debug, Default)]
pub struct PoolShared {
    /// Requests waiting for a free server slot.
    pub queued: AtomicU32,
    /// Woken when a slot frees up while requests are queued.
    notify: Notify,
    /// Requests that ended with an error response (502/503/504) or a failed tcp session.
    pub errors: AtomicU64,
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    pub max_conn_per_server: u32,
    pub queue_timeout: Duration,
    pub max_idle_per_server: usize,
    pub keepalive_timeout: Duration,
    pub tunnel_timeout: Duration,
    pub servers: Vec<Server>,
    pub shared: Arc<PoolShared>,
    balancer: Balancer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("no server is available")]
    NoServer,
    #[error("timed out in the queue waiting for a free server")]
    QueueTimeout,
}

impl Pool {
    /// Builds a pool from its config; `state_for` supplies the runtime state of each
    /// server (carried over from a previous snapshot, or new).
    pub fn new(
        cfg: &PoolConfig,
        shared: Arc<PoolShared>,
        mut state_for: impl FnMut(SocketAddr) -> Arc<ServerState>,
    ) -> Pool {
        let servers: Vec<Server> = cfg
            .servers
            .iter()
            .map(|s| Server {
                addr: s.address,
                id: Arc::from(s.name.clone().unwrap_or_else(|| s.address.to_string())),
                weight: s.weight,
                state: state_for(s.address),
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let ids: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
        Pool {
            name: Arc::from(cfg.name.as_str()),
            balance: cfg.balance,
            hash_key: cfg.hash_key.clone(),
            connect_timeout: cfg.connect_timeout,
            server_timeout: cfg.server_timeout,
            max_conn_per_server: cfg.max_connections_per_server,
            queue_timeout: cfg.queue_timeout,
            max_idle_per_server: cfg.max_idle_per_server,
            keepalive_timeout: cfg.keepalive_timeout,
            tunnel_timeout: cfg.tunnel_timeout,
            balancer: Balancer::new(cfg.balance, &weights, &ids),
            servers,
            shared,
        }
    }

    /// Does any server exist that could serve, were it not at its connection limit?
    pub fn any_usable(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.weight > 0 && s.state.usable())
    }

    fn try_acquire(self: &Arc<Self>, key: u64) -> Option<ServerGuard> {
        // A pick can race with another thread taking the last slot; try again a few times.
        for _ in 0..4 {
            let i = self.balancer.pick(&**self, key)?;
            if self.servers[i].state.try_take(self.max_conn_per_server) {
                return Some(ServerGuard {
                    pool: Arc::clone(self),
                    idx: i,
                });
            }
        }
        None
    }

    /// Picks a server and takes a slot on it. When every usable server is full, waits
    /// in the pool's queue for at most `queue_timeout`.
    pub async fn acquire(self: &Arc<Self>, key: u64) -> Result<ServerGuard, PickError> {
        if let Some(g) = self.try_acquire(key) {
            return Ok(g);
        }
        if self.max_conn_per_server == 0 || !self.any_usable() {
            return Err(PickError::NoServer);
        }
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        let _queued = QueuedGuard(&self.shared);
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(g) = self.try_acquire(key) {
                return Ok(g);
            }
            if !self.any_usable() {
                return Err(PickError::NoServer);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(PickError::QueueTimeout);
            }
        }
    }
}

struct QueuedGuard<'a>(&'a PoolShared);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Members for Pool {
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn eligible(&self, i: usize) -> bool {
        let s = &self.servers[i].state;
        s.usable()
            && (self.max_conn_per_server == 0
                || s.active.load(Ordering::Acquire) < self.max_conn_per_server)
    }
    fn weight(&self, i: usize) -> u32 {
        self.servers[i].weight
    }
    fn active(&self, i: usize) -> u32 {
        self.servers[i].state.active.load(Ordering::Relaxed)
    }
}

/// One taken slot on a server; released (and a queued request woken) on drop.
#[derive(Debug)]
pub struct ServerGuard {
    pool: Arc<Pool>,
    idx: usize,
}

impl ServerGuard {
    pub fn server(&self) -> &Server {
        &self.pool.servers[self.idx]
    }
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.server().state.active.fetch_sub(1, Ordering::AcqRel);
        if self.pool.max_conn_per_server > 0 && self.pool.shared.queued.load(Ordering::Acquire) > 0
        {
            self.pool.shared.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn pool(max: u32, queue: Duration) -> Arc<Pool> {
        let cfg = PoolConfig {
            name: "p".into(),
            balance: Balance::RoundRobin,
            hash_key: HashKey::ClientIp,
            connect_timeout: Duration::from_secs(1),
            server_timeout: Duration::from_secs(1),
            max_connections_per_server: max,
            queue_timeout: queue,
            max_idle_per_server: 1,
            keepalive_timeout: Duration::from_secs(1),
            tunnel_timeout: Duration::from_secs(1),
            servers: vec![ServerConfig {
                address: "127.0.0.1:1".parse().unwrap(),
                name: None,
                weight: 1,
            }],
        };
        Arc::new(Pool::new(&cfg, Arc::default(), |_| {
            Arc::new(ServerState::new())
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn queue_times_out_then_serves_after_release() {
        let p = pool(1, Duration::from_secs(5));
        let first = p.acquire(0).await.unwrap();
        let t0 = tokio::time::Instant::now();
        assert_eq!(p.acquire(0).await.unwrap_err(), PickError::QueueTimeout);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(p.shared.queued.load(Ordering::Relaxed), 0);
        // a waiter is woken when the slot is released
        let p2 = Arc::clone(&p);
        let waiter = tokio::spawn(async move { p2.acquire(0).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.shared.queued.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn down_pool_fails_at_once() {
        let p = pool(1, Duration::from_secs(60));
        p.servers[0].state.set_health(Health::Down);
        assert_eq!(p.acquire(0).await.unwrap_err(), PickError::NoServer);
    }
}
