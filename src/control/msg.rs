//! What the control task hears (`ControlMsg` from operators and reloads, DNS
//! answers, health flips: its `Inbox`) and what it reports of reloads.

use crate::config;
use crate::discovery::DnsUpdate;
use crate::listener::BindError;
use crate::pool::AdminState;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

pub enum ControlMsg {
    /// Re-read the config file and apply it.
    Reload {
        trigger: &'static str,
        reply: Option<oneshot::Sender<ReloadRecord>>,
    },
    /// Start the new binary and hand over to it (binary upgrade): Ok(its pid).
    Upgrade {
        trigger: &'static str,
        reply: Option<oneshot::Sender<Result<u32, String>>>,
    },
    /// An operator change to one server (admin API).
    SetServer {
        pool: String,
        server: String,
        state: Option<AdminState>,
        weight: Option<u32>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An operator switches a listener to read-only or back (`rampart mode`).
    SetListenerMode {
        listener: String,
        read_only: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

pub type ControlTx = mpsc::UnboundedSender<ControlMsg>;
pub type ControlRx = mpsc::UnboundedReceiver<ControlMsg>;

/// What the control task listens to: operators and reloads (`ControlMsg`), DNS
/// answers, and health flips (written to the state file).
#[derive(Debug)]
pub struct Inbox {
    pub msgs: ControlRx,
    pub dns: mpsc::UnboundedReceiver<DnsUpdate>,
    pub health_flipped: Arc<tokio::sync::Notify>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (the proxy was started without one)")]
    NoFile,
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("{0}")]
    Resolver(#[from] crate::discovery::DiscoveryError),
    #[error("ha.interface: {0:?}: {1}")]
    HaInterface(String, #[source] std::io::Error),
    #[error("{0}: reload the process that serves now")]
    Stopping(&'static str),
}

impl ReloadError {
    /// One line per problem, each naming file, line and key where known.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

/// The outcome of one reload, for the API, the CLI, the stats page and /metrics.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReloadRecord {
    #[serde(skip, default = "epoch")]
    pub at: SystemTime,
    /// RFC 3339 of `at`.
    pub time: String,
    /// What asked for it: "SIGHUP", "api", "file watch".
    pub trigger: String,
    pub ok: bool,
    /// The generation in force afterwards.
    pub generation: u64,
    /// One line: what was added, removed and changed (ok), or the first error.
    pub summary: String,
    /// Every problem found (failed reloads).
    pub errors: Vec<String>,
    /// What the reload could not apply without a restart.
    pub warnings: Vec<String>,
    /// How long it took, trigger to new generation live.
    pub millis: f64,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// Reload counters and the last reload.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub ok: u64,
    pub failed: u64,
    pub last: Option<ReloadRecord>,
}
