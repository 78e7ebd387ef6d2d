//! The control task: the one writer of runtime state after start-up. Its inputs
//! are config reloads (SIGHUP, `POST /api/reload`, the file watch), DNS answers,
//! admin changes and, at start, the state file; each goes through `reconcile`,
//! which diffs what is wanted against what runs: it keeps survivors (by name),
//! starts and stops health checks, DNS watches and listening addresses, retires
//! removed servers and unregisters the metrics of removed pools. It also samples
//! request rates every second and writes the state file when something changed
//! (at most once a second).

use crate::config::{self, Config, ServerAddr};
use crate::discovery::{DnsUpdate, FirstWait, Watches};
use crate::health::HealthManager;
use crate::listener::{BindError, ListenerSet, Prepared};
use crate::pool::{AdminState, Carried, Health, Pool, Server};
use crate::snapshot::Snapshot;
use crate::snapshot::{Discovered, DnsKey, FoundSet};
mod msg;
mod shared;

pub use msg::{ControlMsg, ControlRx, ControlTx, Inbox, ReloadError, ReloadRecord, ReloadStatus};
pub use shared::{Phase, Shared};

use crate::statefile;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// What a reconcile changed, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub pools: Changes,
    pub servers: Changes,
    pub listeners: Changes,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (sign, list) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if list.is_empty() {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{sign}{}", list.join(&format!(" {sign}")))?;
        }
        if first {
            f.write_str("unchanged")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pools.is_empty() && self.servers.is_empty() && self.listeners.is_empty() {
            return f.write_str("no change to pools, servers or listeners");
        }
        write!(
            f,
            "pools: {}; servers: {}; listeners: {}",
            self.pools, self.servers, self.listeners
        )
    }
}

/// The long-lived state the control task owns, keyed by name.
pub struct Control {
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    discovered: Discovered,
    health: HealthManager,
    watches: Watches,
    listeners: ListenerSet,
    /// What the state file held at start: kept for servers that are not members
    /// right now.
    saved: statefile::StateFile,
    /// An operator's drain, maint or weight of DNS members that left their
    /// pool's answer, by (pool, address): given back if they return (a pod
    /// that restarts leaves the headless Service while it is not ready).
    /// Kept for `DEPARTED_FOR` (an address a new, unrelated pod reuses later
    /// starts ready).
    departed: HashMap<(String, std::net::SocketAddr), (AdminState, Option<u32>, Instant)>,
    /// Numbers the state file writes, which finish off this task in any order.
    save_seq: u64,
    dirty: bool,
    /// The names whose answer waits for a round of first checks of its new
    /// members.
    first_checks: HashMap<DnsKey, Round>,
    next_check_seq: u64,
    /// Where those rounds report (the receiver is taken by `run`).
    checked: (
        tokio::sync::mpsc::UnboundedSender<Checked>,
        Option<tokio::sync::mpsc::UnboundedReceiver<Checked>>,
    ),
}

/// How long an operator's state of a DNS member that left its answer is kept
/// for its return (a pod's restart takes seconds to minutes; an address reused
/// by another pod much later starts ready). The state file keeps it as long.
const DEPARTED_FOR: Duration = statefile::DEPARTED_FOR;

/// A round of first checks of the new members of a name's answer.
struct Round {
    /// Which round (one that a reload dropped may still report).
    seq: u64,
    /// The newest answer for the name, published when the round is done.
    latest: FoundSet,
}

/// A round of first checks, done.
struct Checked {
    key: DnsKey,
    seq: u64,
    reports: Vec<(std::net::SocketAddr, crate::pool::CheckReport)>,
}

impl Control {
    /// Applies the first config: binds its listeners, builds generation 1 (with
    /// the state file's states restored before anything serves or is checked),
    /// starts health checks, DNS watches and accept loops.
    #[allow(clippy::too_many_arguments)] // the start-up pieces, passed once
    pub fn start(
        shared: Arc<Shared>,
        cfg: Config,
        discovered: Discovered,
        first_wait: FirstWait,
        health: HealthManager,
        watches: Watches,
        mut listeners: ListenerSet,
        (saved, carried): (
            Option<statefile::StateFile>,
            Vec<(String, std::net::SocketAddr, Carried)>,
        ),
    ) -> Result<Control, BindError> {
        let prepared = listeners.prepare(&cfg)?;
        let mut c = Control {
            shared,
            cfg: Arc::new(cfg),
            discovered,
            health,
            watches,
            listeners,
            saved: statefile::StateFile::default(),
            departed: HashMap::new(),
            save_seq: 0,
            dirty: false,
            first_checks: HashMap::new(),
            next_check_seq: 0,
            checked: {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, Some(rx))
            },
        };
        let cfg = Arc::clone(&c.cfg);
        let disc = c.watches.current();
        // Restored and carried states are in place before any check runs or any
        // connection is accepted.
        c.reconcile(cfg, prepared, disc, &first_wait, (saved, &carried));
        Ok(c)
    }

    pub async fn run(mut self, mut inbox: Inbox, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let (_, checked) = &mut self.checked;
        let Some(mut checked) = checked.take() else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let dt = last_tick.elapsed();
                    last_tick = Instant::now();
                    let shared = Arc::clone(&self.shared);
                    shared.rates.lock().unwrap_or_else(|e| e.into_inner()).sample(&shared.plane.snapshot.load(), dt);
                    // quota counts change with traffic: written at most once a second
                    if self
                        .shared
                        .plane.snapshot
                        .load()
                        .rate_limits
                        .iter()
                        .any(|l| l.store.quotas_changed.swap(false, std::sync::atomic::Ordering::Relaxed))
                    {
                        self.dirty = true;
                    }
                    if self.dirty && !self.shared.handed_over.is_cancelled() {
                        self.dirty = false;
                        self.save_state(false);
                    }
                }
                msg = inbox.msgs.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg).await;
                }
                Some(update) = inbox.dns.recv() => self.apply_dns(update),
                Some(c) = checked.recv() => self.apply_checked(c),
                _ = inbox.health_flipped.notified() => self.dirty = true,
            }
            // after every change it hears of (health, DNS, an operator, a
            // reload), and every second for what it does not (breakers)
            self.watch_read_only();
            // capacity may have grown (a server back, more servers, a higher
            // limit): queued requests look again, not one per released slot
            for p in &self.shared.plane.snapshot.load().pools {
                if p.shared.queue.waiting() > 0 && p.free_slot() {
                    p.shared.queue.wake_all();
                }
            }
        }
        if self.dirty && !self.shared.handed_over.is_cancelled() {
            // at shutdown, write it before returning (after a handover the new
            // process owns the file: a stale last word would overwrite its state)
            self.save_state(true);
        }
        self.health.stop_all();
    }

    /// Each listener's read-only state, from the current snapshot: a switch
    /// either way is logged, counted, and run through the `[ha]` notify
    /// program (`PROGRAM READ_ONLY|READ_WRITE NODE_ID LISTENER [REASON]`).
    fn watch_read_only(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        // before every server has had its first check, pools look empty: no
        // switch to speak of yet; after a handover, the new process speaks
        if !self.shared.plane.first_round() || self.shared.handed_over.is_cancelled() {
            return;
        }
        let snap = self.shared.plane.snapshot.load();
        for l in &snap.listeners {
            let why = crate::proxy::lifecycle::listener_read_only(&snap, l);
            let now = why.is_some();
            if l.shared.read_only_now.swap(now, Relaxed) == now {
                continue;
            }
            l.shared.read_only_switches.fetch_add(1, Relaxed);
            let why = why.unwrap_or_default();
            if now {
                tracing::warn!(listener = %l.name, reason = %why, "read-only: writes are refused");
            } else {
                tracing::info!(listener = %l.name, "read-only mode over: writes flow again");
            }
            let cfg = self.shared.config.load();
            if let Some(ha) = &cfg.ha {
                if let Some(program) = &ha.notify {
                    let state = if now { "READ_ONLY" } else { "READ_WRITE" };
                    let mut args = vec![state, ha.node_id.as_str(), &*l.name];
                    if now {
                        args.push(&why);
                    }
                    crate::ha::run_notify(program, &args);
                }
            }
        }
    }

    /// New members for a DNS server entry. Members new to a pool whose servers
    /// start UNKNOWN (`[pool.health]`, `initial = "unknown"`) are checked once
    /// before the answer is published, so the members they replace (a rollout:
    /// a pod at a new address for one that goes) keep serving until the new
    /// ones have a verdict, instead of a pool with nothing usable for the
    /// length of a check.
    ///
    /// One round of checks per name at a time: an answer that comes while one
    /// runs waits for it and is published with its verdicts (a new address it
    /// did not check starts UNKNOWN). So answers that change faster than a
    /// check answers (a dead new address takes the whole `timeout`) never hold
    /// the name's members back for longer than one round.
    fn apply_dns(&mut self, DnsUpdate { key, members }: DnsUpdate) {
        if !self.watches.is_running(&key) {
            // an answer of a watch a reload just stopped
            return;
        }
        if let Some(round) = self.first_checks.get_mut(&key) {
            round.latest = members;
            return;
        }
        let fresh = self.unchecked_members(&key, &members);
        if fresh.is_empty() {
            self.publish_dns(key, members, Vec::new());
            return;
        }
        let cur = self.shared.plane.snapshot.load_full();
        let Some(pool) = cur.pool(&key.pool) else {
            return;
        };
        self.next_check_seq += 1;
        let seq = self.next_check_seq;
        self.first_checks.insert(
            key.clone(),
            Round {
                seq,
                latest: members,
            },
        );
        tracing::info!(pool = %pool.name, name = %key.entry, new = ?fresh, "new members: checked once before they take traffic");
        let tx = self.checked.0.clone();
        let source = key.entry.to_string();
        self.health
            .first_checks(pool, &source, fresh, move |reports| {
                let _ = tx.send(Checked { key, seq, reports });
            });
    }

    /// The addresses of `members` that `key`'s pool does not have yet, if the
    /// pool's new servers wait for a first check before taking traffic.
    fn unchecked_members(&self, key: &DnsKey, members: &FoundSet) -> Vec<std::net::SocketAddr> {
        let snap = self.shared.plane.snapshot.load();
        let Some(pool) = snap.pool(&key.pool) else {
            return Vec::new();
        };
        if pool.health.as_ref().is_none_or(|h| h.initial_up) {
            return Vec::new();
        }
        let none = FoundSet::default();
        let before = self.discovered.get(key).unwrap_or(&none);
        let (came, _) = crate::snapshot::answer_changes(before, members);
        if came.is_empty() {
            return Vec::new();
        }
        let have: HashSet<std::net::SocketAddr> = pool.servers.iter().map(|s| s.addr).collect();
        came.iter()
            .map(|f| f.addr)
            .filter(|a| !have.contains(a))
            .collect()
    }

    /// A round of first checks is done: the newest answer for its name is
    /// published, its new members starting from the round's verdicts.
    fn apply_checked(&mut self, c: Checked) {
        // (a round of a name that a reload took away, or took away and added
        // back, has no entry, or another one)
        if self.first_checks.get(&c.key).map(|r| r.seq) != Some(c.seq) {
            return;
        }
        let Some(round) = self.first_checks.remove(&c.key) else {
            return;
        };
        if !self.watches.is_running(&c.key) {
            return;
        }
        self.publish_dns(c.key, round.latest, c.reports);
    }

    /// Publishes a DNS answer; the new members with a report in `checked` start
    /// from its verdict.
    fn publish_dns(
        &mut self,
        key: DnsKey,
        members: FoundSet,
        checked: Vec<(std::net::SocketAddr, crate::pool::CheckReport)>,
    ) {
        let before = self.discovered.insert(key.clone(), members);
        let cur = self.shared.plane.snapshot.load_full();
        let Some(old) = cur.pool(&key.pool) else {
            return;
        };
        let Some(pc) = self.cfg.pools.iter().find(|p| p.name == key.pool) else {
            return;
        };
        // the refresh costs what changed (plus a pointer per member), not a
        // rebuild of the pool, its balancer and every member's health task
        let r =
            Snapshot::refresh_pool(pc, &self.discovered, old, &key, &before.unwrap_or_default());
        let counter = if r.in_place {
            &old.shared.dns_in_place
        } else {
            &old.shared.dns_rebuilt
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let new_pool = Arc::new(r.pool);
        // members that left take the operator's say with them, and get it back
        // if they return (before anything can pick them)
        self.departed
            .retain(|_, (_, _, at)| at.elapsed() < DEPARTED_FOR);
        for s in &r.removed {
            let (admin, weight) = (s.state.admin(), s.state.weight_override());
            if admin != AdminState::Ready || weight.is_some() {
                self.departed
                    .insert((key.pool.clone(), s.addr), (admin, weight, Instant::now()));
            }
        }
        for (addr, report) in checked {
            if let Some(s) = r.added.iter().find(|s| s.addr == addr) {
                self.health.seed(&new_pool, s, report);
            }
        }
        // after the first checks' verdicts: maintenance sets its UNKNOWN over them
        let mut reweighted = false;
        let now = crate::clock::now_ms();
        for s in &r.added {
            // a member that joins a serving pool ramps up (slow_start)
            s.state.ramp_from_next_up(now);
            if let Some((admin, weight, _)) = self.departed.remove(&(key.pool.clone(), s.addr)) {
                s.state.set_admin(admin, new_pool.health.is_some());
                if weight.is_some() {
                    s.state.set_weight_override(weight);
                    reweighted = true;
                }
                tracing::info!(pool = %key.pool, server = %s.id, admin = admin.as_str(), ?weight, "a member back in the answer keeps the operator's state");
            }
        }
        new_pool.shared.set_latest(&new_pool);
        self.shared
            .plane
            .snapshot
            .store(Arc::new(cur.with_pool(Arc::clone(&new_pool))));
        self.members_changed(&new_pool, &r.added, &r.removed);
        self.health.members_changed(&new_pool, &r.added, &r.removed);
        if reweighted {
            // an override reaches the balancer with a rebuild
            self.rebuild_pool(&key.pool);
        }
        self.dirty = true;
    }

    /// Retires the members that left `pool` (every worker closes their idle
    /// connections at once) and logs the change.
    fn members_changed(&self, pool: &Pool, added: &[Arc<Server>], removed: &[Arc<Server>]) {
        for s in removed {
            s.state.retire();
        }
        if !removed.is_empty() {
            self.shared.retired.notify_waiters();
        }
        if !added.is_empty() || !removed.is_empty() {
            let added: Vec<String> = added.iter().map(|s| s.addr.to_string()).collect();
            let removed: Vec<String> = removed.iter().map(|s| s.addr.to_string()).collect();
            tracing::info!(pool = %pool.name, ?added, ?removed, "pool members changed");
        }
    }

    async fn handle(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Reload { trigger, reply } => {
                let r = self.reload(trigger).await;
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
            }
            ControlMsg::Upgrade { trigger, reply } => {
                let r = self.upgrade(trigger).await.map_err(|e| e.to_string());
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
            }
            ControlMsg::SetServer {
                pool,
                server,
                state,
                weight,
                reply,
            } => {
                let _ = reply.send(self.set_server(&pool, &server, state, weight));
            }
            ControlMsg::SetListenerMode {
                listener,
                read_only,
                reply,
            } => {
                let _ = reply.send(self.set_listener_mode(&listener, read_only));
            }
        }
    }

    /// Switches a listener's manual read-only mode; kept across reloads (the
    /// listener's shared state outlives generations) and restarts (state file).
    fn set_listener_mode(&mut self, name: &str, read_only: bool) -> Result<(), String> {
        let snap = self.shared.plane.snapshot.load();
        let Some(l) = snap.listeners.iter().find(|l| *l.name == *name) else {
            return Err(format!("no listener named {name:?}"));
        };
        if l.mode != crate::config::Mode::Http {
            return Err(format!(
                "listener {name:?} is a tcp listener: read-only mode refuses HTTP writes"
            ));
        }
        let was = l
            .shared
            .manual_read_only
            .swap(read_only, std::sync::atomic::Ordering::Relaxed);
        if was != read_only {
            if read_only {
                tracing::warn!(listener = %name, "switched to read-only by an operator: writes are refused");
            } else {
                tracing::info!(listener = %name, "switched back to normal by an operator");
            }
            self.dirty = true;
        }
        Ok(())
    }

    /// Starts the new binary and hands the sockets and the state over. Once it
    /// serves, this process stops accepting and drains (`handed_over`).
    async fn upgrade(
        &mut self,
        trigger: &'static str,
    ) -> Result<u32, crate::upgrade::UpgradeError> {
        if self.shared.handed_over.is_cancelled() {
            return Err(crate::upgrade::UpgradeError::Busy);
        }
        if self.stopping() {
            return Err(crate::upgrade::UpgradeError::Stopping);
        }
        tracing::info!(trigger, "binary upgrade: starting the new process");
        let mut handover = crate::upgrade::Handover::default();
        let mut fds = Vec::new();
        for (addr, f) in self.listeners.fds() {
            handover.listeners.push((addr, f.len()));
            fds.extend(f);
        }
        if let Some(&(addr, fd)) = self.shared.admin_socket.get() {
            handover.admin = Some(addr);
            fds.push(fd);
        }
        if let Some(&(addr, fd)) = self.shared.ha_socket.get() {
            let master = self
                .shared
                .ha
                .get()
                .is_some_and(|h| h.state() == crate::ha::fsm::State::Master);
            handover.ha = Some((addr, master));
            fds.push(fd);
        }
        // Copies of the descriptors, this process's own for as long as the
        // handover takes: an accept loop closes its socket at shutdown, and its
        // number could name another file by the time it is sent.
        let fds: Vec<std::os::fd::OwnedFd> = fds
            .into_iter()
            .map(|fd| {
                // SAFETY: `fd` is open now. The listener sockets are closed by a
                // reload (which runs on this task, so not meanwhile) or at
                // shutdown, after the phase leaves Running: checked below,
                // after the copies, so a copy of a closing socket is not sent.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
            })
            .collect::<Result<_, _>>()?;
        if self.stopping() {
            return Err(crate::upgrade::UpgradeError::Stopping);
        }
        let snap = self.shared.plane.snapshot.load_full();
        for p in &snap.pools {
            for s in &p.servers {
                handover
                    .servers
                    .push((p.name.to_string(), s.addr, s.state.carry()));
            }
        }
        let shared = Arc::clone(&self.shared);
        let fresh = move |h: &mut crate::upgrade::Handover| {
            h.quotas = statefile::capture(&shared.plane.snapshot.load()).quotas;
        };
        match crate::upgrade::hand_over(handover, fds, fresh).await {
            Ok(pid) => {
                tracing::info!(
                    pid,
                    "the new process serves; this one stops accepting and drains"
                );
                self.shared.handed_over.cancel();
                Ok(pid)
            }
            Err(e) => {
                tracing::error!(error = %e, "binary upgrade failed; this process keeps serving");
                Err(e)
            }
        }
    }

    /// An operator change to one server, through the server's own API.
    fn set_server(
        &mut self,
        pool_name: &str,
        server: &str,
        state: Option<AdminState>,
        weight: Option<u32>,
    ) -> Result<(), String> {
        let snap = self.shared.plane.snapshot.load_full();
        let pool = snap
            .pool(pool_name)
            .ok_or_else(|| format!("no pool named {pool_name:?}"))?;
        let s = pool
            .servers
            .iter()
            .find(|s| *s.id == *server || s.addr.to_string() == server)
            .ok_or_else(|| {
                format!("pool {pool_name:?} has no server {server:?} (use its name, or ip:port)")
            })?;
        if let Some(a) = state {
            if s.state.set_admin(a, pool.health.is_some()) {
                tracing::info!(pool = %pool.name, server = %s.id, state = a.as_str(), "admin state changed");
            }
        }
        if let Some(w) = weight {
            s.state.set_weight_override(Some(w));
            tracing::info!(pool = %pool.name, server = %s.id, weight = w, "weight changed");
            self.rebuild_pool(pool_name);
        }
        self.dirty = true;
        Ok(())
    }

    /// A stop was asked for: draining or closing.
    fn stopping(&self) -> bool {
        matches!(self.shared.phase(), Phase::Draining | Phase::Closing)
    }

    /// Re-reads the config file, validates it as `rampart check` does, and
    /// applies it. On any error nothing changes.
    async fn reload(&mut self, trigger: &'static str) -> ReloadRecord {
        // (a stopping process says nothing: it is no longer the service's
        // main process, or is about to stop being one)
        let serving = !self.shared.handed_over.is_cancelled() && !self.stopping();
        if serving {
            crate::sdnotify::reloading();
        }
        let record = self.reload_inner(trigger).await;
        // (a stop may have begun while the reload waited for DNS)
        if serving && !self.shared.handed_over.is_cancelled() && !self.stopping() {
            crate::sdnotify::reloaded();
        }
        record
    }

    async fn reload_inner(&mut self, trigger: &'static str) -> ReloadRecord {
        let t0 = Instant::now();
        let at = SystemTime::now();
        self.listeners.settle().await;
        let result = self.try_reload().await;
        let millis = t0.elapsed().as_secs_f64() * 1000.0;
        let generation = self.shared.plane.snapshot.load().generation;
        let record = |ok, summary: String, errors, warnings| ReloadRecord {
            at,
            time: crate::clock::rfc3339(at),
            trigger: trigger.to_string(),
            ok,
            generation,
            summary,
            errors,
            warnings,
            millis,
        };
        let mut st = self
            .shared
            .reloads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((diff, warnings)) => {
                st.ok += 1;
                let summary = diff.to_string();
                for w in &warnings {
                    tracing::warn!(trigger, "reload: {w}");
                }
                tracing::info!(trigger, generation, ms = format!("{millis:.1}"), %summary, "config reloaded");
                let r = record(true, summary, Vec::new(), warnings);
                st.last = Some(r.clone());
                r
            }
            Err(e) => {
                st.failed += 1;
                let errors = e.lines();
                tracing::error!(trigger, error = %e, "reload refused; the running config keeps serving");
                let summary = errors.first().cloned().unwrap_or_default();
                let r = record(false, summary, errors, Vec::new());
                st.last = Some(r.clone());
                r
            }
        }
    }

    async fn try_reload(&mut self) -> Result<(Diff, Vec<String>), ReloadError> {
        // A process that handed its sockets to a new one, or is stopping, does
        // not take a new config: it would bind new addresses in a process about
        // to exit (a file watch's reload, a SIGHUP meant for the new process)
        if self.shared.handed_over.is_cancelled() {
            return Err(ReloadError::Stopping(
                "this process has handed over to a new one (binary upgrade)",
            ));
        }
        if self.stopping() {
            return Err(ReloadError::Stopping("this process is shutting down"));
        }
        let path = self.shared.config_path.clone().ok_or(ReloadError::NoFile)?;
        let new = config::load(&path)?;
        // Everything that can fail comes first; after it, nothing can.
        let disc = self.watches.resolver_for(&new)?;
        if let (Some(o), Some(n)) = (&self.cfg.ha, &new.ha) {
            if o.interface != n.interface {
                crate::ha::vip::ifindex(&n.interface)
                    .map_err(|e| ReloadError::HaInterface(n.interface.clone(), e))?;
            }
        }
        let prepared = self.listeners.prepare(&new)?;
        // The DNS entries the new config adds (a new pool, a renamed one, a new
        // address text for the same name) are resolved once before it goes
        // live, as at start-up (after everything that can fail): else their pools would have no members (503,
        // the old members retired) until their watches' first answers.
        let added: Vec<DnsKey> = crate::discovery::targets(&new)
            .into_iter()
            .filter(|k| !self.watches.is_running(k) && !self.discovered.contains_key(k))
            .collect();
        let (found, first_wait) = match (&disc, added.is_empty()) {
            (Some(d), false) => crate::discovery::resolve_once(d, added, &self.shared.dns).await,
            _ => Default::default(),
        };
        // a stop (or a handover) may have begun during that wait: the sockets
        // bound for the new config are closed, nothing changes
        if self.shared.handed_over.is_cancelled() || self.stopping() {
            return Err(ReloadError::Stopping(
                "this process began to stop during the reload",
            ));
        }
        // the new config's own warnings (an exposed admin address...), and
        // what only a restart applies
        let mut warnings = new.warnings.clone();
        warnings.extend(restart_only(&self.cfg, &new));
        self.discovered.extend(found);
        let diff = self.reconcile(Arc::new(new), prepared, disc, &first_wait, (None, &[]));
        Ok((diff, warnings))
    }

    /// Makes the running state that of `new`. Survivors keep their state; what
    /// left is stopped, retired or unregistered; what is new is started.
    fn reconcile(
        &mut self,
        new: Arc<Config>,
        prepared: Prepared,
        disc: Option<Arc<crate::discovery::Discovery>>,
        first_wait: &FirstWait,
        (restore, carried): (
            Option<statefile::StateFile>,
            &[(String, std::net::SocketAddr, Carried)],
        ),
    ) -> Diff {
        let old_cfg = Arc::clone(&self.cfg);
        let cur = self.shared.plane.snapshot.load_full();
        let starting = cur.generation == 0;
        // The config wins where its own line for a server changed: a new weight
        // in the file replaces an operator's override (HAProxy's state-file
        // dilemma, decided for the file).
        if !starting {
            self.clear_overrides_of_changed_weights(&old_cfg, &new, &cur);
        }
        let wanted: HashSet<DnsKey> = crate::discovery::targets(&new).into_iter().collect();
        self.departed
            .retain(|(pool, _), _| wanted.iter().any(|k| k.pool == *pool));
        self.discovered.retain(|k, _| wanted.contains(k));
        self.first_checks.retain(|k, _| wanted.contains(k));

        let mut snap = Snapshot::build(&new, Some(&cur), &self.discovered, cur.generation + 1);
        if let Some(saved) = restore {
            let n = statefile::restore(&snap, &saved);
            if n > 0 {
                tracing::info!(servers = n, "restored server states from the state file");
            }
            // the operator's say on members not in their answer now, for when
            // they are (for what is left of DEPARTED_FOR since they left, not a
            // fresh window at every start)
            let unix = crate::clock::unix_now();
            for a in statefile::absent_operator_states(&snap, &saved, unix) {
                let left = Instant::now()
                    .checked_sub(a.away)
                    .unwrap_or_else(Instant::now);
                self.departed
                    .insert((a.pool, a.addr), (a.admin, a.weight, left));
            }
            // rebuild so restored weights reach the balancers
            snap = Snapshot::build(&new, Some(&snap), &self.discovered, snap.generation);
            self.saved = saved;
        }
        if !carried.is_empty() {
            // a binary upgrade: the old process's state wins over the state file
            adopt(&snap, carried);
            snap = Snapshot::build(&new, Some(&snap), &self.discovered, snap.generation);
        }
        let diff = diff(&old_cfg, &new, &cur, &snap, starting);
        let snap = Arc::new(snap);
        for p in &snap.pools {
            p.shared.set_latest(p);
        }
        snap.place_listeners();
        self.shared.plane.snapshot.store(Arc::clone(&snap));
        self.shared.config.store(Arc::clone(&new));
        self.shared.plane.limit.set_max(new.global.max_connections);
        if let (Some(tx), Some(ha)) = (self.shared.ha_reconfigure.get(), &new.ha) {
            if old_cfg.ha.as_ref() != Some(ha) {
                let _ = tx.send(ha.clone());
            }
        }

        // Servers that left: out of every snapshot now; retire them.
        let keep: HashSet<u64> = snap
            .pools
            .iter()
            .flat_map(|p| p.servers.iter().map(|s| s.state.uid))
            .collect();
        let mut retired = 0;
        for p in &cur.pools {
            for s in &p.servers {
                if !keep.contains(&s.state.uid) {
                    s.state.retire();
                    retired += 1;
                }
            }
            // A pool that lost its health checks: its servers are UP (as in a
            // pool that never had any).
            if p.health.is_some() {
                if let Some(np) = snap.pool(&p.name).filter(|np| np.health.is_none()) {
                    for s in &np.servers {
                        s.state.set_health(Health::Up, crate::clock::now_ms());
                    }
                }
            }
        }
        // Pools whose backend connections are made otherwise now (another
        // `[pool.tls]`, `protocol` or `send_proxy`): their members' idle
        // connections, made the old way, are not reused (the new pool's
        // epoch differs) and every worker closes them at once.
        let mut reconnect = false;
        for p in &snap.pools {
            if cur
                .pool(&p.name)
                .is_some_and(|o| o.conn_epoch != p.conn_epoch)
            {
                for s in &p.servers {
                    reconnect |= s.state.advance_conn_epoch(p.conn_epoch);
                }
            }
        }
        if retired > 0 || reconnect {
            self.shared.retired.notify_waiters();
        }
        self.health.sync(&snap.pools);
        self.watches.sync(&new, disc, &self.discovered, first_wait);
        let grace = new.global.shutdown_grace;
        self.listeners
            .commit(prepared, &new, &self.shared.plane, grace);
        self.cfg = new;
        self.dirty = true;
        diff
    }

    /// Clears the operator weight of every member whose config line's weight
    /// changed (same pool, same entry).
    fn clear_overrides_of_changed_weights(&self, old: &Config, new: &Config, cur: &Snapshot) {
        for np in &new.pools {
            let Some(op) = old.pools.iter().find(|p| p.name == np.name) else {
                continue;
            };
            let Some(pool) = cur.pool(&np.name) else {
                continue;
            };
            for ns in &np.servers {
                let Some(os) = op.servers.iter().find(|s| s.address == ns.address) else {
                    continue;
                };
                if os.weight == ns.weight {
                    continue;
                }
                let from_entry = |s: &crate::pool::Server| match &ns.address {
                    ServerAddr::Static(a) => s.addr == *a && s.source.is_none(),
                    dns => s.source.as_deref() == Some(dns.to_string().as_str()),
                };
                for s in pool.servers.iter().filter(|s| from_entry(s)) {
                    if s.state.weight_override().is_some() {
                        tracing::info!(pool = %pool.name, server = %s.id, weight = ns.weight, "the config's new weight replaces the operator's");
                        s.state.set_weight_override(None);
                    }
                }
            }
        }
    }

    /// Rebuilds one pool from the config and the current DNS answers, stores the
    /// new snapshot, and retires members that left (their idle connections are
    /// closed by every worker at once).
    fn rebuild_pool(&mut self, name: &str) {
        let cur = self.shared.plane.snapshot.load_full();
        let Some(old) = cur.pool(name) else { return };
        let Some(pc) = self.cfg.pools.iter().find(|p| p.name == name) else {
            return;
        };
        let new_pool = Arc::new(Snapshot::build_pool(pc, &self.discovered, Some(old)));
        let (added, removed) = crate::snapshot::member_changes(old, &new_pool);
        new_pool.shared.set_latest(&new_pool);
        self.shared
            .plane
            .snapshot
            .store(Arc::new(cur.with_pool(Arc::clone(&new_pool))));
        self.members_changed(&new_pool, &added, &removed);
    }

    /// Writes the state file off this runtime (fsync can take a while, and the HA
    /// heartbeat runs here too).
    fn save_state(&mut self, now: bool) {
        let Some(path) = self.cfg.global.state_file.clone() else {
            return;
        };
        let state = statefile::capture_merged(&self.shared.plane.snapshot.load(), &self.saved);
        self.saved = state.clone();
        self.save_seq += 1;
        let seq = self.save_seq;
        let write = move || statefile::save_logged(&path, &state, seq);
        if now {
            write();
        } else {
            let span = tracing::info_span!("state_file_write", seq);
            tokio::task::spawn_blocking(move || span.in_scope(write));
        }
    }
}

/// Takes over the servers' state from the old process (binary upgrade), by
/// (pool, address).
fn adopt(snap: &Snapshot, carried: &[(String, std::net::SocketAddr, Carried)]) {
    let mut n = 0;
    for (pool, addr, c) in carried {
        if let Some(s) = snap
            .pool(pool)
            .and_then(|p| p.servers.iter().find(|s| s.addr == *addr))
        {
            s.state.adopt(c);
            n += 1;
        }
    }
    tracing::info!(servers = n, "server states taken over from the old process");
}

/// What changed between two generations, by name.
fn diff(old: &Config, new: &Config, cur: &Snapshot, next: &Snapshot, starting: bool) -> Diff {
    let mut d = Diff::default();
    if starting {
        return d;
    }
    fn by_name(c: &Config) -> HashMap<&str, &config::PoolConfig> {
        c.pools.iter().map(|p| (p.name.as_str(), p)).collect()
    }
    let (op, np) = (by_name(old), by_name(new));
    for p in &new.pools {
        match op.get(p.name.as_str()) {
            None => d.pools.added.push(p.name.clone()),
            Some(o) if *o != p => d.pools.changed.push(p.name.clone()),
            _ => {}
        }
    }
    for p in &old.pools {
        if !np.contains_key(p.name.as_str()) {
            d.pools.removed.push(p.name.clone());
        }
    }
    // Servers by (pool, address), as members.
    let members = |s: &Snapshot| -> HashMap<(String, std::net::SocketAddr), u32> {
        s.pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(|s| ((p.name.to_string(), s.addr), s.weight))
            })
            .collect()
    };
    let (om, nm) = (members(cur), members(next));
    let mut keys: Vec<_> = nm
        .keys()
        .chain(om.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    for k in keys {
        let name = format!("{}/{}", k.0, k.1);
        match (om.get(k), nm.get(k)) {
            (None, Some(_)) => d.servers.added.push(name),
            (Some(_), None) => d.servers.removed.push(name),
            (Some(a), Some(b)) if a != b => d.servers.changed.push(name),
            _ => {}
        }
    }
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => d.listeners.added.push(l.name.clone()),
            Some(o) if o != l => d.listeners.changed.push(l.name.clone()),
            _ => {}
        }
    }
    for l in &old.listeners {
        if !new.listeners.iter().any(|n| n.name == l.name) {
            d.listeners.removed.push(l.name.clone());
        }
    }
    d
}

/// Settings a running process cannot change; they apply at the next restart or
/// `rampart upgrade`. Everything else a reload applies.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if old.global.threads != new.global.threads {
        w.push(format!(
            "global.threads changed ({} -> {}): applies at the next restart or upgrade",
            old.global.threads, new.global.threads
        ));
    }
    if old.global.reuse_port != new.global.reuse_port {
        w.push(format!(
            "global.reuse_port changed ({} -> {}): addresses already bound keep their sockets; it applies to those bound from now on, and to all at the next restart",
            old.global.reuse_port, new.global.reuse_port
        ));
    }
    if old.global.access_log != new.global.access_log {
        w.push("global.access_log changed: applies at the next restart or upgrade".into());
    }
    if old.admin.bind != new.admin.bind {
        w.push(format!(
            "admin.bind changed ({} -> {}): applies at the next restart or upgrade",
            old.admin.bind, new.admin.bind
        ));
    }
    match (&old.ha, &new.ha) {
        (Some(o), Some(n)) => {
            if o.node_id != n.node_id {
                w.push("ha.node_id changed: applies at the next restart or upgrade".into());
            }
            if o.bind != n.bind {
                w.push("ha.bind changed: applies at the next restart or upgrade".into());
            }
        }
        (None, Some(_)) => w.push("[ha] added: starts at the next restart or upgrade".into()),
        (Some(_), None) => w.push(
            "[ha] removed: HA keeps running (and holding its VIPs) until the next restart or upgrade"
                .into(),
        ),
        (None, None) => {}
    }
    w
}

/// Asks the control task to reload and waits for the outcome.
pub async fn request_reload(tx: &ControlTx, trigger: &'static str) -> Option<ReloadRecord> {
    let (reply, rx) = oneshot::channel();
    tx.send(ControlMsg::Reload {
        trigger,
        reply: Some(reply),
    })
    .ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_render_on_one_line() {
        let d = Diff {
            pools: Changes {
                added: vec!["new".into()],
                removed: vec![],
                changed: vec!["api".into(), "db".into()],
            },
            servers: Changes::default(),
            listeners: Changes {
                added: vec![],
                removed: vec!["admin2".into()],
                changed: vec![],
            },
        };
        assert_eq!(
            d.to_string(),
            "pools: +new ~api ~db; servers: unchanged; listeners: -admin2"
        );
        assert_eq!(
            Diff::default().to_string(),
            "no change to pools, servers or listeners"
        );
    }
}
