//! Active/passive VIP failover: the authenticated heartbeat (`wire`), the keys
//! it is accepted under (`keys`), the pure state machine (`fsm`), moving the
//! address (`vip`), what the stats show of it (`status`), and the task that
//! ties them to sockets, timers and the proxy's own health (`run`).

pub mod fsm;
pub mod keys;
pub mod status;
pub mod vip;
pub mod wire;

use crate::config::{HaConfig, Track};
use crate::plane::Plane;
use fsm::{Action, Event, Fsm, FsmConfig, Heard, State};
use keys::{KeyRing, KeyUsed, PreviousUse};
use status::HaStatus;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

// The config checks `node_id` against its own constant, since config does not
// depend on the heartbeat codec: the two must agree.
const _: () = assert!(wire::NODE_ID_LEN == crate::config::NODE_ID_MAX);
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use wire::{Advert, Reject, ReplayGuard, WireState};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("[ha] cannot bind the heartbeat socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("[ha] interface {0:?}: {1}")]
    Interface(String, #[source] std::io::Error),
}

/// Everything the HA task needs that can fail at start.
pub struct Ha {
    cfg: HaConfig,
    sock: UdpSocket,
    index: u32,
    mac: [u8; 6],
    pub status: Arc<HaStatus>,
    /// New `[ha]` sections from reloads.
    reconfig: tokio::sync::watch::Receiver<HaConfig>,
    /// Where reloads send them (the control task keeps a clone).
    pub reconfigure: tokio::sync::watch::Sender<HaConfig>,
    /// Taken over as MASTER from the old process (binary upgrade): start as
    /// MASTER, keeping the VIPs.
    resume_master: bool,
}

impl Ha {
    /// Binds the heartbeat socket (or takes `inherited`, from the old process of
    /// a binary upgrade, which was MASTER if `resume_master`) and looks the
    /// interface up (must run on a runtime).
    pub fn new(
        cfg: HaConfig,
        inherited: Option<std::net::UdpSocket>,
        resume_master: bool,
    ) -> Result<Ha, HaError> {
        let std_sock = match inherited {
            Some(s) => s,
            None => std::net::UdpSocket::bind(cfg.bind).map_err(|source| HaError::Bind {
                addr: cfg.bind,
                source,
            })?,
        };
        std_sock
            .set_nonblocking(true)
            .map_err(|source| HaError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let sock = UdpSocket::from_std(std_sock).map_err(|source| HaError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let index = vip::ifindex(&cfg.interface)
            .map_err(|e| HaError::Interface(cfg.interface.clone(), e))?;
        let mac =
            vip::mac(&cfg.interface).map_err(|e| HaError::Interface(cfg.interface.clone(), e))?;
        let status = Arc::new(HaStatus::new(&cfg));
        let (reconfigure, reconfig) = tokio::sync::watch::channel(cfg.clone());
        Ok(Ha {
            cfg,
            sock,
            index,
            mac,
            status,
            reconfig,
            reconfigure,
            resume_master,
        })
    }

    /// The heartbeat socket's descriptor (a binary upgrade hands it over).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Runs until `stop`; then a MASTER hands over (priority-0 advert) and the VIP
    /// is released before this returns.
    pub async fn run(
        self,
        plane: Arc<Plane>,
        handed_over: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut reconfig = self.reconfig.clone();
        reconfig.mark_unchanged();
        let mut node = Node {
            fsm: Fsm::new(fsm_config(&self.cfg)),
            keys: KeyRing::new(&self.cfg.key),
            previous_use: PreviousUse::default(),
            cfg: self.cfg.clone(),
            index: self.index,
            mac: self.mac,
            boot_id: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            seq: 0,
            start: Instant::now(),
            vip_failed: false,
            faulted: false,
            keep_warned: None,
            ha: &self,
        };
        let mut replay = ReplayGuard::default();
        let mut interval_warned = false;
        // when a peer advertising our node_id was last warned about
        let mut same_id_warned: Option<Instant> = None;
        let mut stale_warned: Option<Instant> = None;
        let peer_ips = |cfg: &HaConfig| -> Vec<IpAddr> {
            cfg.peers.iter().map(|p| p.ip().to_canonical()).collect()
        };
        let mut peers = peer_ips(&node.cfg);
        let check_every = |cfg: &HaConfig| (cfg.advert_interval / 4).max(Duration::from_millis(25));
        let t = node.now();
        let start = if self.resume_master {
            tracing::info!("HA: resuming as MASTER (taken over from the old process)");
            self.status.resumed_master.store(true, Ordering::Relaxed);
            Event::ResumeMaster
        } else {
            Event::Start
        };
        let actions = node.fsm.handle(t, start);
        node.exec(actions).await;
        let mut check = tokio::time::interval(check_every(&node.cfg));
        let mut buf = [0u8; 512];
        loop {
            let wake = node
                .fsm
                .next_wakeup()
                .map(|ms| tokio::time::Instant::from_std(node.start + Duration::from_millis(ms)));
            let sleep = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    if handed_over.is_cancelled() {
                        // A new process took over (binary upgrade): it holds the
                        // VIPs and advertises; leave without a word.
                        break;
                    }
                    let t = node.now();
                    let actions = node.fsm.handle(t, Event::Shutdown);
                    node.exec(actions).await;
                    break;
                }
                Ok(()) = reconfig.changed() => {
                    let new = reconfig.borrow_and_update().clone();
                    node.reconfigure(new).await;
                    peers = peer_ips(&node.cfg);
                    check = tokio::time::interval(check_every(&node.cfg));
                    interval_warned = false;
                }
                r = node.ha.sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    if !peers.contains(&from.ip().to_canonical()) {
                        node.ha.status.drop_count(Reject::UnknownPeer);
                        continue;
                    }
                    let master_down = 4 * node.cfg.advert_interval.as_millis() as u64;
                    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                    let now_ms = node.now();
                    match node.keys.open(&buf[..n], from.ip(), node.cfg.bind.ip(), now_ms)
                        .and_then(|(a, key)| replay.accept_at(&a, now_ms, master_down, wall, 300_000).map(|_| (a, key)))
                    {
                        Ok((a, key)) => {
                            node.ha.status.adverts_received.fetch_add(1, Ordering::Relaxed);
                            let ours = node.cfg.advert_interval.as_millis() as u32;
                            if a.interval_ms != ours && !interval_warned {
                                interval_warned = true;
                                tracing::warn!(peer = %a.node_id, theirs_ms = a.interval_ms, ours_ms = ours, "the peer advertises at another interval: a takeover waits on the longer one");
                            }
                            let before = node.ha.status.heard(&a.node_id, a.priority, key);
                            // logged when it changes (a first advert under the
                            // signing key is the usual case, not news)
                            match (before, key) {
                                (None, Some(KeyUsed::Current)) => {}
                                (b, Some(k)) if b != Some(k) => {
                                    tracing::info!(peer = %a.node_id, key = k.label(), "the peer's heartbeats are verified with another of this node's keys");
                                }
                                _ => {}
                            }
                            node.note_key(key);
                            // only masters advertise; others' adverts (e.g. a
                            // FAULT node's priority 0) still count as "leaving"
                            if a.node_id == node.cfg.node_id && same_id_warned.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                                same_id_warned = Some(Instant::now());
                                tracing::error!(peer = %from.ip(), node_id = %a.node_id, "a peer advertises this node's node_id: give each node its own; meanwhile the greater address wins ties");
                            }
                            let wins_tie = from.ip().to_canonical() > node.cfg.bind.ip().to_canonical();
                            let heard = Heard { node_id: a.node_id, priority: if a.state == WireState::Master { a.priority } else { 0 }, interval_ms: u64::from(a.interval_ms), wins_tie };
                            let t = node.now();
                            let actions = node.fsm.handle(t, Event::Advert(heard));
                            node.exec(actions).await;
                        }
                        Err(Reject::Stale) => {
                            node.ha.status.drop_count(Reject::Stale);
                            // authentic (the tag checked), but dated too far
                            // from this clock to tell from a replay: while the
                            // clocks disagree, neither node hears the other
                            if stale_warned.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                                stale_warned = Some(Instant::now());
                                tracing::warn!(%from, "a heartbeat from the peer is dated over 5 minutes from this host's clock and is refused as a possible replay: if the peer is up, both nodes may hold the VIP; sync the clocks (NTP)");
                            }
                        }
                        Err(r) => {
                            node.ha.status.drop_count(r);
                            tracing::debug!(%from, reason = %r, "heartbeat dropped");
                        }
                    }
                }
                _ = sleep => {
                    let t = node.now();
                    let actions = node.fsm.handle(t, Event::Tick);
                    node.exec(actions).await;
                }
                _ = check.tick() => {
                    node.expire_grace();
                    node.forget_key_use();
                    node.follow_interface();
                    let reason = node.fault_reason(&plane);
                    let faulted = reason.is_some();
                    *node.ha.status.fault_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.clone();
                    if faulted != node.faulted {
                        node.faulted = faulted;
                        match &reason {
                            Some(r) => tracing::warn!(reason = %r, "HA fault"),
                            None => tracing::info!("HA fault cleared"),
                        }
                        let t = node.now();
                        let actions = node.fsm.handle(t, Event::Fault(faulted));
                        node.exec(actions).await;
                    }
                    // after the fault check: a node that just faulted (its
                    // link down) does not fight for an address it is leaving
                    node.keep_vips();
                }
            }
        }
    }
}

fn fsm_config(cfg: &HaConfig) -> FsmConfig {
    FsmConfig {
        node_id: cfg.node_id.clone(),
        priority: cfg.priority,
        interval_ms: cfg.advert_interval.as_millis() as u64,
        preempt: cfg.preempt,
        preempt_delay_ms: cfg.preempt_delay.as_millis() as u64,
    }
}

/// A peer last heard within this long is taken to be up and signing as it
/// was, and is warned about when its key stops being accepted; one heard
/// longer ago is a BACKUP keeping quiet, or gone, and says nothing of its key.
const HEARD_LATELY: Duration = Duration::from_secs(60);

struct Node<'a> {
    fsm: Fsm,
    /// The keys heartbeats are signed with and accepted under (a reload
    /// replaces them, keeping the replaced signing key for a grace).
    keys: KeyRing,
    /// Whether the peers still sign with `auth_previous_key_file`'s key.
    previous_use: PreviousUse,
    /// The `[ha]` in force (a reload replaces it); `ha.cfg` is the one it started with.
    cfg: HaConfig,
    /// The interface's index and MAC (a reload may move the VIPs to another).
    index: u32,
    mac: [u8; 6],
    boot_id: u64,
    seq: u64,
    start: Instant,
    vip_failed: bool,
    faulted: bool,
    /// When `keep_vips` last warned that it could not look (once a minute).
    keep_warned: Option<Instant>,
    ha: &'a Ha,
}

impl Node<'_> {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Applies a reloaded `[ha]`. Priority, preemption, interval, key, peers,
    /// track and notify take effect at once, and a MASTER keeps its VIPs. A new
    /// interface or VIP set is a controlled release and re-add (on a MASTER: the
    /// old addresses are removed, the new ones added and announced). `node_id`
    /// and `bind` are the node's identity on the wire: they stay until a
    /// restart.
    async fn reconfigure(&mut self, mut new: HaConfig) {
        new.node_id = self.cfg.node_id.clone();
        new.bind = self.cfg.bind;
        if new.interface != self.cfg.interface || new.vips != self.cfg.vips {
            let found =
                vip::ifindex(&new.interface).and_then(|i| Ok((i, vip::mac(&new.interface)?)));
            match found {
                Ok((index, mac)) => {
                    let master = self.fsm.state() == State::Master;
                    tracing::warn!(
                        from = %self.cfg.interface, to = %new.interface,
                        old = ?self.cfg.vips, new = ?new.vips, master,
                        "HA interface or VIPs changed: releasing the old addresses and adding the new ones"
                    );
                    // (decided before self.cfg changes below)
                    let same_interface = new.interface == self.cfg.interface;
                    if master {
                        for &(ip, len) in &self.cfg.vips {
                            let kept = same_interface && new.vips.contains(&(ip, len));
                            if !kept {
                                release(self.index, ip, len);
                            }
                        }
                    }
                    self.index = index;
                    self.mac = mac;
                    let old_vips = std::mem::replace(&mut self.cfg.vips, new.vips.clone());
                    self.cfg.interface = new.interface.clone();
                    if master {
                        for &(ip, len) in &new.vips {
                            if old_vips.contains(&(ip, len)) && same_interface {
                                continue;
                            }
                            if let Err(e) = vip::add(self.index, ip, len) {
                                tracing::error!(vip = %ip, error = %e, "cannot add the VIP");
                            }
                        }
                        self.announce();
                    }
                }
                Err(e) => {
                    tracing::error!(interface = %new.interface, error = %e, "HA reload: the new interface cannot be used; keeping the old interface and VIPs");
                    new.interface = self.cfg.interface.clone();
                    new.vips = self.cfg.vips.clone();
                }
            }
        }
        self.reload_keys(&new);
        self.ha.status.set_priority(new.priority);
        self.fsm.reconfigure(fsm_config(&new));
        tracing::info!(priority = new.priority, peers = ?new.peers, "HA settings reloaded");
        self.cfg = new;
    }

    /// Applies a reload's keys: a changed `auth_key_file` signs from now on,
    /// and the key it replaces is accepted for a grace (`auth_key_grace`).
    /// What is known of the peers is relabelled under the new keys.
    fn reload_keys(&mut self, new: &HaConfig) {
        let now = self.now();
        let grace_ms = new.key_grace.as_millis() as u64;
        let next = self.keys.reloaded(&new.key, grace_ms, now);
        if next == self.keys {
            return;
        }
        let old = std::mem::replace(&mut self.keys, next);
        if !self.keys.same_keys(&old) {
            // what was heard says nothing of whether the new keys are used
            self.previous_use = PreviousUse::default();
            self.ha.status.set_previous_key_unused(false);
        }
        let ring = &self.keys;
        let lost = self.ha.status.relabel_peers(|k| ring.relabel(&old, k, now));
        let new_signing_key = self.keys.signing() != old.signing();
        tracing::info!(
            new_signing_key,
            previous_key = self.keys.has_previous(),
            replaced_key_accepted_secs = self.keys.grace_left(now).div_ceil(1000),
            "HA keys reloaded"
        );
        // (with auth = "none" nothing is verified, and nothing refused for its key)
        let authenticated = self.keys.signing().is_some();
        for (peer, ago) in lost {
            if authenticated && ago < HEARD_LATELY {
                tracing::warn!(%peer, ago_secs = ago.as_secs(), "the peer's last heartbeat was signed with a key this node no longer accepts: its next ones are refused until it signs with auth_key_file's key");
            }
        }
        if new_signing_key && self.fsm.state() == State::Master {
            // (said, not warned: it is also what a rotation in the right order does)
            tracing::info!("this MASTER signs its heartbeats with the new key from now on: a BACKUP that does not accept it yet (as its auth_key_file or auth_previous_key_file) takes over after 3 missed adverts");
        }
    }

    /// Follows which key the peers' heartbeats verify with (`key`, that of
    /// the one just accepted), to say once, and show, when
    /// `auth_previous_key_file` is no longer used.
    fn note_key(&mut self, key: Option<KeyUsed>) {
        if self
            .previous_use
            .heard(&self.keys, key, self.cfg.peers.len())
        {
            tracing::warn!(
                heartbeats = keys::PREVIOUS_UNUSED_AFTER,
                "auth_previous_key_file's key is still accepted but no longer used: the peer's heartbeats have all verified with auth_key_file's key for a while; once the key rotation is over, remove auth_previous_key_file from both nodes and reload"
            );
        }
        let unused = self.previous_use.unused(&self.keys);
        self.ha.status.set_previous_key_unused(unused);
    }

    /// A MASTER hears no heartbeats: what a BACKUP it was heard of the
    /// peer's keys says nothing once it took over (the gauge would say
    /// "unused" for as long as it is MASTER).
    fn forget_key_use(&mut self) {
        if self.fsm.state() == State::Master && self.previous_use.mastering(&self.keys) {
            self.ha.status.set_previous_key_unused(false);
        }
    }

    /// Ends the grace of the key a reload replaced once it is over, and says
    /// whether a peer was still heard under it.
    fn expire_grace(&mut self) {
        let now = self.now();
        if !self.keys.expire(now) {
            return;
        }
        let lost = self
            .ha
            .status
            .relabel_peers(|k| (k != KeyUsed::Grace).then_some(k));
        let behind: Vec<String> = lost
            .into_iter()
            .filter(|(_, ago)| *ago < HEARD_LATELY)
            .map(|(peer, _)| peer)
            .collect();
        if behind.is_empty() {
            tracing::info!("the HA key replaced by the last reload is no longer accepted");
        } else {
            tracing::warn!(peers = ?behind, "the HA key replaced by the last reload is no longer accepted, and these peers still signed with it: their heartbeats are refused from now on (this node, if BACKUP, takes over); give them the new key, or give this node auth_previous_key_file with the old one");
        }
    }

    fn fault_reason(&mut self, plane: &Plane) -> Option<String> {
        let cfg = &self.cfg;
        if !vip::link_up(&cfg.interface) {
            return Some(format!("link {} is down", cfg.interface));
        }
        if self.vip_failed {
            // retried after a master-down interval in BACKUP
            self.vip_failed = false;
            return Some("the VIP could not be added".into());
        }
        for t in &cfg.track {
            match t {
                Track::Ready if !plane.is_ready() => return Some("not ready".into()),
                Track::Pool(name) => {
                    let snap = plane.snapshot.load();
                    if let Some(p) = snap.pool(name) {
                        if p.eligible_count() == 0 {
                            return Some(format!("pool {} has no eligible server", p.name));
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    async fn exec(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(a) = queue.pop_front() {
            match a {
                Action::AddVip => {
                    for &(ip, len) in &self.cfg.vips {
                        if let Err(e) = vip::add(self.index, ip, len) {
                            tracing::error!(vip = %ip, error = %e, "cannot add the VIP");
                            self.vip_failed = true;
                        }
                    }
                    if self.vip_failed {
                        // The takeover cannot complete: the rest of it (advert,
                        // announcements, MASTER) is dropped and the fault's
                        // actions run instead.
                        self.faulted = true;
                        let t = self.now();
                        queue = self.fsm.handle(t, Event::Fault(true)).into();
                    }
                }
                Action::RemoveVip => {
                    for &(ip, len) in &self.cfg.vips {
                        release(self.index, ip, len);
                    }
                }
                Action::SendAdvert { priority } => self.send_advert(priority).await,
                Action::Announce => self.announce(),
                Action::Transition { to, .. } => {
                    // From what was last made known (a takeover dropped above
                    // never showed MASTER).
                    let why = match to {
                        State::Fault if self.vip_failed => {
                            Some("the VIP could not be added".into())
                        }
                        State::Fault => self
                            .ha
                            .status
                            .fault_reason
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone(),
                        _ => None,
                    };
                    let from = self.ha.status.changed(to, why);
                    tracing::info!(from = from.as_str(), to = to.as_str(), node = %self.cfg.node_id, "HA state changed");
                    if let Some(script) = &self.cfg.notify {
                        run_notify(script, &[to.as_str(), &self.cfg.node_id]);
                    }
                }
            }
        }
    }

    /// Follows the interface by its name: one made anew (a network manager
    /// that restarted a bridge, bond or VLAN) has a new index, and the VIP
    /// added, announced or checked by the old one would fail (a takeover
    /// then ends in FAULT) or go nowhere.
    fn follow_interface(&mut self) {
        let Ok(index) = vip::ifindex(&self.cfg.interface) else {
            // gone for now: the link check faults the node meanwhile
            return;
        };
        if index == self.index {
            return;
        }
        match vip::mac(&self.cfg.interface) {
            Ok(mac) => {
                tracing::info!(interface = %self.cfg.interface, index, "the interface was made anew: following it");
                (self.index, self.mac) = (index, mac);
            }
            Err(e) => {
                tracing::debug!(interface = %self.cfg.interface, error = %e, "the interface's address is not readable yet")
            }
        }
    }

    /// While MASTER, puts back a VIP that left the interface without this
    /// node's doing (an `ip addr flush`, a network manager restarted), and
    /// announces it again: otherwise the pair would serve nobody until the
    /// next failover, both nodes believing all is well (keepalived does the
    /// same).
    fn keep_vips(&mut self) {
        if self.fsm.state() != State::Master || self.faulted {
            return;
        }
        let mut back = false;
        for &(ip, len) in &self.cfg.vips {
            match vip::reinstate(self.index, ip, len) {
                Ok(false) => {}
                Ok(true) => {
                    back = true;
                    self.ha
                        .status
                        .vips_reinstated
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(vip = %ip, interface = %self.cfg.interface, "the VIP was removed from the interface by something else; added it back");
                }
                Err(e) => {
                    if self
                        .keep_warned
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                    {
                        self.keep_warned = Some(Instant::now());
                        tracing::warn!(vip = %ip, error = %e, "cannot check that the VIP is on the interface (warned once a minute)");
                    }
                }
            }
        }
        if back {
            self.announce();
        }
    }

    async fn send_advert(&mut self, priority: u8) {
        self.seq += 1;
        let state = match self.fsm.state() {
            State::Master if priority > 0 => WireState::Master,
            State::Fault => WireState::Fault,
            State::Backup => WireState::Backup,
            // a master that is leaving (shutdown or fault) still speaks as master
            _ => WireState::Master,
        };
        let advert = Advert {
            state,
            priority,
            interval_ms: self.cfg.advert_interval.as_millis() as u32,
            node_id: self.cfg.node_id.clone(),
            boot_id: self.boot_id,
            seq: self.seq,
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        };
        for peer in &self.cfg.peers {
            let bytes = advert.encode(self.keys.signing(), self.cfg.bind.ip(), peer.ip());
            match self.ha.sock.send_to(&bytes, peer).await {
                Ok(_) => {
                    self.ha.status.adverts_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(%peer, error = %e, "cannot send a heartbeat"),
            }
        }
    }

    /// Gratuitous ARP / unsolicited NA: 3 at once, again at +1 s and +5 s (ARP caches
    /// ignore updates within their locktime, so one burst is not enough), for as
    /// long as this node is MASTER.
    fn announce(&self) {
        let (index, mac, vips, status) = (
            self.index,
            self.mac,
            self.cfg.vips.clone(),
            Arc::clone(&self.ha.status),
        );
        let span = tracing::info_span!("vip_announce");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                for delay in [0u64, 0, 0, 1000, 5000] {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if status.state() != State::Master {
                        return;
                    }
                    for &(ip, _) in &vips {
                        if let Err(e) = vip::announce(index, mac, ip) {
                            tracing::warn!(vip = %ip, error = %e, "cannot announce the VIP");
                        }
                    }
                }
            },
            span,
        ));
    }
}

/// Runs the `[ha]` notify program with `args` (an HA transition: `STATE
/// NODE_ID`; a listener's read-only switch: `READ_ONLY|READ_WRITE NODE_ID
/// LISTENER [REASON]`), in the background; one still running after 30 s is
/// killed, so a hung program cannot pile up.
pub fn run_notify(program: &std::path::Path, args: &[&str]) {
    match tokio::process::Command::new(program).args(args).spawn() {
        Ok(mut child) => {
            let span = tracing::info_span!("notify", program = %program.display());
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    if tokio::time::timeout(Duration::from_secs(30), child.wait())
                        .await
                        .is_err()
                    {
                        tracing::warn!("notify program still running after 30s; killed");
                        let _ = child.kill().await;
                    }
                },
                span,
            ));
        }
        Err(e) => {
            tracing::error!(program = %program.display(), error = %e, "notify program failed to start")
        }
    }
}

/// Gives up a VIP: first its connections are reset, so their clients are told
/// now rather than by their own timeouts (nothing sent from the VIP leaves this
/// node once it is gone, not even a FIN) and reconnect to the new master; then
/// the address goes.
fn release(index: u32, ip: std::net::IpAddr, len: u8) {
    match vip::reset_connections(ip) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(vip = %ip, connections = n, "connections on the VIP reset before it leaves")
        }
        Err(e) => tracing::warn!(vip = %ip, error = %e, "cannot reset the connections on the VIP"),
    }
    if let Err(e) = vip::remove(index, ip, len) {
        tracing::error!(vip = %ip, error = %e, "cannot remove the VIP");
    }
}
