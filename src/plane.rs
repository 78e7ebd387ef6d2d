//! What the data plane shares: the current snapshot, the access log and the
//! global connection limit. Connection handlers and accept loops hold an
//! `Arc<Plane>` and nothing else of the process; the control task stores new
//! snapshots into it.

use crate::accesslog::AccessLog;
use crate::limits::Limit;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug)]
pub struct Plane {
    /// The current snapshot; the data plane loads it once per request/connection.
    pub snapshot: ArcSwap<Snapshot>,
    pub access_log: AccessLog,
    /// `[global] max_connections`, over all listeners.
    pub limit: Arc<Limit>,
    /// True once listeners accept; false again during the SIGTERM drain.
    pub ready: AtomicBool,
    /// Set once every health-checked server has had its first check.
    pub first_round_done: AtomicBool,
}

impl Plane {
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
        let snap = self.snapshot.load();
        let done = snap.pools.iter().all(|p| {
            p.health.is_none()
                || p.servers.iter().all(|s| {
                    // servers in maintenance are not checked: do not wait for them
                    s.state.admin() == crate::pool::AdminState::Maint
                        || s.state.checks.last.load().is_some()
                })
        });
        if done {
            self.first_round_done.store(true, Ordering::Release);
        }
        done
    }
}
