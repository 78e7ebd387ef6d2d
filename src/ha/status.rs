//! What the stats page, `/metrics` and `rampart status` show of HA: the
//! state and its last changes, the counters, the peers heard (with the key
//! each was last heard under), and whether `auth_previous_key_file` is still
//! used.

use super::fsm::State;
use super::keys::KeyUsed;
use super::wire::Reject;
use crate::config::HaConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const REJECTS: [Reject; 8] = [
    Reject::Size,
    Reject::Magic,
    Reject::Version,
    Reject::Malformed,
    Reject::Auth,
    Reject::Replay,
    Reject::Stale,
    Reject::UnknownPeer,
];

/// What the stats page, /metrics and `rampart status` show of HA.
#[derive(Debug)]
pub struct HaStatus {
    pub node_id: String,
    /// A reload may change it.
    priority: AtomicU8,
    state: AtomicU8,
    pub transitions: AtomicU64,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    /// VIPs found missing from the interface while MASTER, and added back.
    pub vips_reinstated: AtomicU64,
    dropped: [AtomicU64; REJECTS.len()],
    /// node id -> its last accepted heartbeat
    peers: Mutex<HashMap<String, Seen>>,
    /// Why the node is in FAULT, if it is.
    pub fault_reason: Mutex<Option<String>>,
    /// The last [`HISTORY`] state changes, oldest first.
    history: Mutex<std::collections::VecDeque<Change>>,
    /// This process took over as MASTER from the process it upgraded.
    pub resumed_master: AtomicBool,
    /// `auth_previous_key_file` is set, and the peers no longer sign with it
    /// (`keys::PreviousUse`).
    previous_key_unused: AtomicBool,
}

/// How many state changes `/stats;json` keeps.
const HISTORY: usize = 32;

/// A peer's last accepted heartbeat.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: SystemTime,
    priority: u8,
    /// The key that verified it: None with `auth = "none"`, or once a reload
    /// (or the end of a grace) no longer accepts that key.
    key: Option<KeyUsed>,
}

/// A peer, as the stats page, `/metrics` and `rampart status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_id: String,
    /// Since its last accepted heartbeat.
    pub ago: Duration,
    pub priority: u8,
    /// The key that verified its last heartbeat: None with `auth = "none"`,
    /// or once the keys in force no longer accept that key.
    pub key: Option<KeyUsed>,
}

/// One state change, as `/stats;json`'s `ha.history` shows it.
#[derive(Debug, Clone, serde::Serialize)]
struct Change {
    at: String,
    from: &'static str,
    to: &'static str,
    /// Why, for a change into FAULT.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

impl HaStatus {
    pub(super) fn new(cfg: &HaConfig) -> HaStatus {
        HaStatus {
            node_id: cfg.node_id.clone(),
            priority: AtomicU8::new(cfg.priority),
            state: AtomicU8::new(0),
            transitions: AtomicU64::new(0),
            adverts_sent: AtomicU64::new(0),
            adverts_received: AtomicU64::new(0),
            vips_reinstated: AtomicU64::new(0),
            dropped: Default::default(),
            peers: Mutex::new(HashMap::new()),
            fault_reason: Mutex::new(None),
            history: Default::default(),
            resumed_master: Default::default(),
            previous_key_unused: Default::default(),
        }
    }

    pub fn priority(&self) -> u8 {
        self.priority.load(Ordering::Relaxed)
    }

    /// A reload's new priority.
    pub(super) fn set_priority(&self, priority: u8) {
        self.priority.store(priority, Ordering::Relaxed);
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            1 => State::Backup,
            2 => State::Master,
            3 => State::Fault,
            _ => State::Init,
        }
    }

    /// Records a change from the state last made known to `to`.
    pub(super) fn changed(&self, to: State, why: Option<String>) -> State {
        let from = self.state();
        self.set_state(to);
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(Change {
            at: crate::clock::rfc3339_now(),
            from: from.as_str(),
            to: to.as_str(),
            why,
        });
        from
    }

    fn set_state(&self, s: State) {
        let v = match s {
            State::Init => 0,
            State::Backup => 1,
            State::Master => 2,
            State::Fault => 3,
        };
        self.state.store(v, Ordering::Release);
    }

    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        REJECTS
            .iter()
            .zip(&self.dropped)
            .map(|(r, c)| (r.label(), c.load(Ordering::Relaxed)))
            .collect()
    }

    pub(super) fn drop_count(&self, r: Reject) {
        if let Some(i) = REJECTS.iter().position(|x| *x == r) {
            self.dropped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `auth_previous_key_file` is set and no longer used: the
    /// peers' heartbeats have verified with `auth_key_file`'s key for a while
    /// (false too while nothing is heard, as on a MASTER).
    pub fn previous_key_unused(&self) -> bool {
        self.previous_key_unused.load(Ordering::Relaxed)
    }

    pub(super) fn set_previous_key_unused(&self, unused: bool) {
        self.previous_key_unused.store(unused, Ordering::Relaxed);
    }

    /// Peers and how long ago each was heard, by node id.
    pub fn peers(&self) -> Vec<Peer> {
        let now = SystemTime::now();
        let mut v: Vec<Peer> = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| Peer {
                node_id: id.clone(),
                ago: now.duration_since(s.at).unwrap_or_default(),
                priority: s.priority,
                key: s.key,
            })
            .collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// Records a peer's accepted heartbeat; returns the key that verified
    /// the one before (None: the first, or under a key no longer accepted).
    pub(super) fn heard(
        &self,
        node_id: &str,
        priority: u8,
        key: Option<KeyUsed>,
    ) -> Option<KeyUsed> {
        let seen = Seen {
            at: SystemTime::now(),
            priority,
            key,
        };
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id.to_string(), seen)
            .and_then(|before| before.key)
    }

    /// Gives each peer's key the name `f` finds for it under the keys now in
    /// force (a reload changed them, or a grace ended). Returns the peers
    /// whose key is no longer accepted at all, with how long ago each was
    /// heard.
    pub(super) fn relabel_peers(
        &self,
        f: impl Fn(KeyUsed) -> Option<KeyUsed>,
    ) -> Vec<(String, Duration)> {
        let now = SystemTime::now();
        let mut lost = Vec::new();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        for (id, s) in peers.iter_mut() {
            if let Some(k) = s.key {
                s.key = f(k);
                if s.key.is_none() {
                    lost.push((id.clone(), now.duration_since(s.at).unwrap_or_default()));
                }
            }
        }
        lost
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state().as_str(),
            "node_id": self.node_id,
            "priority": self.priority(),
            "transitions": self.transitions.load(Ordering::Relaxed),
            "adverts_sent": self.adverts_sent.load(Ordering::Relaxed),
            "adverts_received": self.adverts_received.load(Ordering::Relaxed),
            "vips_reinstated": self.vips_reinstated.load(Ordering::Relaxed),
            "fault": *self.fault_reason.lock().unwrap_or_else(|e| e.into_inner()),
            "resumed_master": self.resumed_master.load(Ordering::Relaxed),
            "previous_key_unused": self.previous_key_unused(),
            "history": *self.history.lock().unwrap_or_else(|e| e.into_inner()),
            "peers": self.peers().into_iter().map(|p| serde_json::json!({
                "node_id": p.node_id, "last_seen_secs": p.ago.as_secs_f64(), "priority": p.priority,
                "key": p.key.map(KeyUsed::label),
            })).collect::<Vec<_>>(),
            "dropped": self.dropped().into_iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> HaStatus {
        HaStatus::new(&HaConfig {
            interface: "lo".into(),
            vips: vec![],
            node_id: "lb-b".into(),
            priority: 100,
            bind: "192.0.2.2:5405".parse().unwrap(),
            peers: vec!["192.0.2.1:5405".parse().unwrap()],
            advert_interval: Duration::from_secs(1),
            preempt: false,
            preempt_delay: Duration::ZERO,
            key: crate::config::HaKey::None,
            key_grace: crate::config::AUTH_KEY_GRACE,
            track: vec![],
            notify: None,
        })
    }

    #[test]
    fn the_key_a_peer_was_heard_under_is_shown_and_follows_the_keys() {
        let s = status();
        assert_eq!(s.heard("lb-a", 150, Some(KeyUsed::Current)), None);
        assert_eq!(
            s.heard("lb-a", 150, Some(KeyUsed::Current)),
            Some(KeyUsed::Current)
        );
        assert_eq!(s.to_json()["peers"][0]["key"], "current");
        // a reload made that key the previous one
        assert!(s.relabel_peers(|_| Some(KeyUsed::Previous)).is_empty());
        assert_eq!(s.peers()[0].key, Some(KeyUsed::Previous));
        // and a later one dropped it
        let lost = s.relabel_peers(|_| None);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, "lb-a");
        assert_eq!(s.to_json()["peers"][0]["key"], serde_json::Value::Null);
        // with auth = "none", nothing is verified and nothing relabelled
        assert_eq!(s.heard("lb-a", 150, None), None);
        assert!(s.relabel_peers(|_| Some(KeyUsed::Current)).is_empty());
        assert_eq!(s.peers()[0].key, None);
    }

    #[test]
    fn whether_the_previous_key_is_unused_is_shown() {
        let s = status();
        assert!(!s.previous_key_unused());
        assert_eq!(s.to_json()["previous_key_unused"], false);
        s.set_previous_key_unused(true);
        assert!(s.previous_key_unused());
        assert_eq!(s.to_json()["previous_key_unused"], true);
        s.set_previous_key_unused(false);
        assert_eq!(s.to_json()["previous_key_unused"], false);
    }
}
