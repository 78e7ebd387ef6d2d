//! A node's link to the shared `[rate_limit_store]`: whether it is up (and so
//! whether limits are shared or each node enforces its share), and what the
//! node admitted for each key since the last sync (`Pend`). The request path
//! writes these; the sync task (`sync`) reads and clears them.

use crate::config::StoreConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The node's link to the store: what the data plane reads (whether to fall
/// back) and what operators see. Kept across reloads while the store's
/// settings stay the same.
#[derive(Debug)]
pub struct Link {
    pub cfg: StoreConfig,
    /// False once a sync failed, until one succeeds.
    up: AtomicBool,
    pub syncs_ok: AtomicU64,
    pub syncs_failed: AtomicU64,
    /// Times the node fell back to local-only limits.
    pub fallbacks: AtomicU64,
    /// Keys sent in the last successful sync.
    pub last_batch: AtomicU64,
    /// Requests for keys past `max_keys` of their limit: enforced on this node,
    /// not shared.
    pub untracked: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Link {
    pub fn new(cfg: StoreConfig) -> Link {
        Link {
            cfg,
            // until a sync says otherwise: a node that starts while Redis is
            // down enforces full limits for at most one interval
            up: AtomicBool::new(true),
            syncs_ok: AtomicU64::new(0),
            syncs_failed: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            last_batch: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The share of a limit this node enforces alone: all of it while the
    /// store is up (the sync shares it), `fallback_share` while it is not.
    pub fn share(&self) -> f64 {
        if self.is_up() {
            1.0
        } else {
            self.cfg.fallback_share
        }
    }

    pub(super) fn went_down(&self, why: String) {
        self.syncs_failed.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(store = %self.cfg.shown_url(), error = %why, share = self.cfg.fallback_share, "rate limit store unreachable: limits fall back to local-only, this node enforcing its share");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    pub(super) fn came_up(&self, keys: usize) {
        self.syncs_ok.fetch_add(1, Ordering::Relaxed);
        self.last_batch.store(keys as u64, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(store = %self.cfg.shown_url(), "rate limit store reachable again: limits are shared");
        }
    }
}

/// What a node admitted for one key since the last sync, and how it counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pend {
    /// Admitted under the rate, with T (ns) of the rate that applied, the
    /// first of them at `first` (µs, `now_us`).
    pub rate_n: u32,
    pub t_ns: u64,
    pub first: u64,
    /// Counted against the quota, in the window `q_window` of `q_len` seconds.
    pub quota_n: u32,
    pub q_len: u64,
    pub q_window: u64,
    /// The last request for the key (µs, `now_us`).
    pub touched: u64,
    /// When it was last put in a batch (µs).
    pub taken: u64,
}
