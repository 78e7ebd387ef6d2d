//! `Shared`: the state of one running proxy that outlives config generations
//! (the current config, reload history, DNS status, HA status, rates, the
//! sockets a binary upgrade hands over). The control task is its writer.

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Where the process is in its life: on the stats page and in `/stats;json`,
/// so that an operator or a test can see it without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Binding, restoring, starting tasks.
    Starting = 0,
    /// Every listener accepts.
    Running = 1,
    /// A stop was asked for: still serving for `drain_delay`, `/ready` says 503.
    Draining = 2,
    /// Listeners closed; in-flight work finishes within `shutdown_grace`.
    Closing = 3,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Closing => "closing",
        }
    }
}

/// What the background tasks of one running proxy share: the control task writes
/// it, the admin server reads it. The data plane holds only `plane`.
#[derive(Debug)]
pub struct Shared {
    /// What the data plane shares: the snapshot, the access log, the global
    /// connection limit.
    pub plane: std::sync::Arc<crate::plane::Plane>,
    pub started: Instant,
    /// A `Phase`, written by the supervisor.
    pub phase: AtomicU8,
    /// What DNS discovery knows of each name.
    pub dns: std::sync::Arc<crate::discovery::NameRegistry>,
    /// Woken when members leave their pool, or a reload changes how their
    /// connections are made, so every worker closes their idle connections
    /// at once.
    pub retired: tokio::sync::Notify,
    /// The config file: re-read by a reload, shown on the stats page.
    pub config_path: Option<std::path::PathBuf>,
    /// The config now in force (the admin server's auth, shutdown timings). The
    /// data plane reads the snapshot, never this.
    pub config: ArcSwap<crate::config::Config>,
    /// What the last reloads did.
    pub reloads: std::sync::Mutex<super::msg::ReloadStatus>,
    /// The admin and HA sockets (address, descriptor), for a binary upgrade.
    pub admin_socket: std::sync::OnceLock<(std::net::SocketAddr, std::os::fd::RawFd)>,
    pub ha_socket: std::sync::OnceLock<(std::net::SocketAddr, std::os::fd::RawFd)>,
    /// Cancelled once a new process (binary upgrade) serves: this one stops
    /// accepting at once and drains.
    pub handed_over: tokio_util::sync::CancellationToken,
    /// To the control task (pool rebuilds, state file).
    pub control: super::msg::ControlTx,
    /// Request rates, sampled by the control task.
    pub rates: std::sync::Mutex<crate::rates::Rates>,
    /// HA status, when `[ha]` is configured.
    pub ha: std::sync::OnceLock<std::sync::Arc<crate::ha::status::HaStatus>>,
    /// Where a reload sends a new `[ha]` to the running HA task.
    pub ha_reconfigure: std::sync::OnceLock<tokio::sync::watch::Sender<crate::config::HaConfig>>,
    /// The runtimes (control first, then the workers), named, for their task
    /// counts in the metrics: a leak of tasks shows there.
    pub runtimes: std::sync::OnceLock<Vec<(String, tokio::runtime::Handle)>>,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// The HA state for the stats header (None until HA is configured).
    pub fn ha_status(&self) -> Option<serde_json::Value> {
        self.ha.get().map(|h| h.to_json())
    }
}
