//! What the data plane shares: the current snapshot, the access log and the
//! global connection limit. Connection handlers and accept loops hold an
//! `Arc<Plane>` and nothing else of the process; the control task stores new
//! snapshots into it.

use crate::accesslog::AccessLog;
use crate::limits::Limit;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Plane {
    /// The current snapshot; the data plane loads it once per request/connection.
    pub snapshot: ArcSwap<Snapshot>,
    pub access_log: AccessLog,
    /// `[global] max_connections`, over all listeners.
    pub limit: Arc<Limit>,
}
