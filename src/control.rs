//! The control task: the one writer of snapshots after start-up. DNS answers and
//! admin weight changes rebuild a pool through it; it samples request rates every
//! second and writes the state file when something changed (at most once a second).

use crate::config::Config;
use crate::discovery::{Discovered, Found};
use crate::health::HealthManager;
use crate::snapshot::Snapshot;
use crate::{statefile, Shared};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub enum ControlMsg {
    /// New members for (pool, server entry).
    Dns((usize, usize), Vec<Found>),
    /// Rebuild pool `i` (a weight changed).
    Rebuild(usize),
    /// Something the state file records changed.
    Dirty,
}

pub type ControlTx = mpsc::UnboundedSender<ControlMsg>;
pub type ControlRx = mpsc::UnboundedReceiver<ControlMsg>;

pub async fn run(
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    mut discovered: Discovered,
    mut health: HealthManager,
    // what the state file held at start: kept for servers that are not members
    // right now
    mut saved: statefile::StateFile,
    mut rx: ControlRx,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let dt = last_tick.elapsed();
                last_tick = Instant::now();
                shared.rates.lock().unwrap_or_else(|e| e.into_inner()).sample(&shared, dt);
                if dirty {
                    dirty = false;
                    save_state(&shared, &cfg, &mut saved, false);
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    ControlMsg::Dns(key, found) => {
                        discovered.insert(key, found);
                        apply(&shared, &cfg, &discovered, key.0);
                        health.sync(&shared.snapshot.load().pools);
                        dirty = true;
                    }
                    ControlMsg::Rebuild(pi) => {
                        apply(&shared, &cfg, &discovered, pi);
                        dirty = true;
                    }
                    ControlMsg::Dirty => dirty = true,
                }
            }
        }
    }
    if dirty {
        // at shutdown, write it before returning
        save_state(&shared, &cfg, &mut saved, true);
    }
    health.stop_all();
}

/// Writes the state file off this runtime (fsync can take a while, and the HA
/// heartbeat runs here too).
fn save_state(shared: &Shared, cfg: &Config, saved: &mut statefile::StateFile, now: bool) {
    let Some(path) = cfg.global.state_file.clone() else {
        return;
    };
    let state = statefile::capture_merged(&shared.snapshot.load(), saved);
    *saved = state.clone();
    let write = move || {
        if let Err(e) = statefile::save(&path, &state) {
            tracing::error!(error = %e, "cannot write the state file");
        }
    };
    if now {
        write();
    } else {
        tokio::task::spawn_blocking(write);
    }
}

/// Rebuilds pool `pi` from the config and the current answers, stores the new
/// snapshot, and retires members that left (their idle connections are closed by
/// every worker at once).
pub fn apply(shared: &Shared, cfg: &Config, discovered: &Discovered, pi: usize) {
    let cur = shared.snapshot.load_full();
    let Some(old) = cur.pools.get(pi) else { return };
    let Some(pc) = cfg.pools.get(pi) else { return };
    let new_pool = Arc::new(Snapshot::build_pool(pc, pi, discovered, Some(old)));
    let keep: HashSet<u64> = new_pool.servers.iter().map(|s| s.state.uid).collect();
    let retired: Vec<_> = old
        .servers
        .iter()
        .filter(|s| !keep.contains(&s.state.uid))
        .collect();
    let added: Vec<String> = new_pool
        .servers
        .iter()
        .filter(|s| !old.servers.iter().any(|o| o.state.uid == s.state.uid))
        .map(|s| s.addr.to_string())
        .collect();
    shared.snapshot.store(Arc::new(cur.with_pool(pi, new_pool)));
    for s in &retired {
        s.state.retired.store(true, Ordering::Release);
    }
    if !retired.is_empty() {
        shared.retired.notify_waiters();
    }
    if !added.is_empty() || !retired.is_empty() {
        tracing::info!(
            pool = %pc.name,
            added = ?added,
            removed = ?retired.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>(),
            "pool members changed"
        );
    }
}
