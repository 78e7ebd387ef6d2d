//! rampart: a high-availability TCP/HTTP load-balancing proxy.
//!
//! `main.rs` is a thin CLI over the entry points here; tests and benches use them too.

pub mod accesslog;
pub mod clock;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod listener;
pub mod pool;
pub mod proxy;
pub mod router;
pub mod snapshot;
pub mod supervisor;
pub mod upstream;

use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use supervisor::{run, RunError, RunOptions};

/// What every connection handler and background task of one running proxy shares.
#[derive(Debug)]
pub struct Shared {
    /// The current snapshot; the data plane loads it once per request/connection.
    pub snapshot: ArcSwap<snapshot::Snapshot>,
    pub access_log: accesslog::AccessLog,
    /// True once listeners accept; false again during the SIGTERM drain.
    pub ready: AtomicBool,
    pub started: Instant,
    /// What DNS discovery knows of each name.
    pub dns: discovery::NameRegistry,
    /// Woken when members leave their pool, so every worker closes their idle
    /// connections at once.
    pub retired: tokio::sync::Notify,
}
