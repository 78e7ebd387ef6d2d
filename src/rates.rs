//! Request rates per server and pool, sampled once a second by the control task
//! from the servers' request counters, with a few minutes of history per pool
//! for the stats page's sparklines.

use crate::snapshot::Snapshot;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Request rates, sampled once a second by the control task.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<u64, u64>,
    server: HashMap<u64, f64>,
    history: HashMap<String, VecDeque<f64>>,
}

/// Seconds of history kept for the sparklines.
pub const HISTORY: usize = 180;

impl Rates {
    /// Takes one sample (call every `dt`).
    pub fn sample(&mut self, snap: &Snapshot, dt: Duration) {
        let secs = dt.as_secs_f64().max(0.001);
        let mut seen = HashMap::new();
        for pool in &snap.pools {
            let mut pool_rate = 0.0;
            for s in &pool.servers {
                let total = s.state.traffic.total.load(Ordering::Relaxed);
                let prev = self.last.get(&s.state.uid).copied().unwrap_or(total);
                let r = total.saturating_sub(prev) as f64 / secs;
                pool_rate += r;
                self.server.insert(s.state.uid, r);
                seen.insert(s.state.uid, total);
            }
            let h = self.history.entry(pool.name.to_string()).or_default();
            h.push_back(pool_rate);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        self.server.retain(|uid, _| seen.contains_key(uid));
        self.history
            .retain(|name, _| snap.pools.iter().any(|p| *p.name == **name));
        self.last = seen;
    }
}

impl Rates {
    /// A server's last sampled rate (requests per second; 0 before the first sample).
    pub fn server(&self, uid: u64) -> f64 {
        self.server.get(&uid).copied().unwrap_or(0.0)
    }

    /// A pool's rate history, oldest first.
    pub fn history(&self, pool: &str) -> Option<&VecDeque<f64>> {
        self.history.get(pool)
    }
}
