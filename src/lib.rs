//! rampart: a high-availability TCP/HTTP load-balancing proxy.
//!
//! `main.rs` is a thin CLI over the entry points here; tests and benches use them too.

pub mod accesslog;
pub mod admin;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod discovery;
pub mod forwarded;
pub mod h1;
pub mod ha;
pub mod health;
pub mod import;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod plane;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod reload;
pub mod router;
pub mod rules;
pub mod sdnotify;
pub mod snapshot;
pub mod statefile;
pub mod supervisor;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use supervisor::{run, RunError, RunOptions};

/// What every connection handler and background task of one running proxy shares.
#[derive(Debug)]
pub struct Shared {
    /// What the data plane shares: the snapshot, the access log, the global
    /// connection limit.
    pub plane: std::sync::Arc<plane::Plane>,
    /// True once listeners accept; false again during the SIGTERM drain.
    pub ready: AtomicBool,
    pub started: Instant,
    /// What DNS discovery knows of each name.
    pub dns: discovery::NameRegistry,
    /// Woken when members leave their pool, so every worker closes their idle
    /// connections at once.
    pub retired: tokio::sync::Notify,
    /// Set once every health-checked server has had its first check.
    pub first_round_done: AtomicBool,
    /// The config file: re-read by a reload, shown on the stats page.
    pub config_path: Option<std::path::PathBuf>,
    /// The config now in force (the admin server's auth, shutdown timings). The
    /// data plane reads the snapshot, never this.
    pub config: ArcSwap<config::Config>,
    /// What the last reloads did.
    pub reloads: std::sync::Mutex<control::ReloadStatus>,
    /// The admin and HA sockets (address, descriptor), for a binary upgrade.
    pub admin_socket: std::sync::OnceLock<(std::net::SocketAddr, std::os::fd::RawFd)>,
    pub ha_socket: std::sync::OnceLock<(std::net::SocketAddr, std::os::fd::RawFd)>,
    /// Cancelled once a new process (binary upgrade) serves: this one stops
    /// accepting at once and drains.
    pub handed_over: tokio_util::sync::CancellationToken,
    /// To the control task (pool rebuilds, state file).
    pub control: control::ControlTx,
    /// Request rates, sampled by the control task.
    pub rates: std::sync::Mutex<admin::model::Rates>,
    /// HA status, when `[ha]` is configured.
    pub ha: std::sync::OnceLock<std::sync::Arc<ha::HaStatus>>,
    /// Where a reload sends a new `[ha]` to the running HA task.
    pub ha_reconfigure: std::sync::OnceLock<tokio::sync::watch::Sender<config::HaConfig>>,
    /// The runtimes (control first, then the workers), named, for their task
    /// counts in the metrics: a leak of tasks shows there.
    pub runtimes: std::sync::OnceLock<Vec<(String, tokio::runtime::Handle)>>,
}

impl Shared {
    /// The HA state for the stats header (None until HA is configured).
    pub fn ha_status(&self) -> Option<serde_json::Value> {
        self.ha.get().map(|h| h.to_json())
    }

    /// /ready: listeners accept, not draining, and the first health round is done.
    pub fn is_ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.ready.load(Ordering::Acquire) && self.first_round()
    }

    /// Whether every health-checked server has had its first check (a latch:
    /// members added later, by DNS, do not undo it).
    pub fn first_round(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.first_round_done.load(Ordering::Acquire) {
            return true;
        }
        let snap = self.plane.snapshot.load();
        let done = snap.pools.iter().all(|p| {
            p.health.is_none()
                || p.servers.iter().all(|s| {
                    // servers in maintenance are not checked: do not wait for them
                    s.state.admin() == pool::AdminState::Maint
                        || s.state.last_check.load().is_some()
                })
        });
        if done {
            self.first_round_done.store(true, Ordering::Release);
        }
        done
    }
}
