//! Rate limits (`[[rate_limit]]`, applied by the rule action `rate_limit`): GCRA
//! (the generic cell rate algorithm) per key, decided in this process (and
//! shared with other nodes in the background by `sync`, with a store).
//!
//! Each key keeps one number, its theoretical arrival time (TAT). A request at
//! `now` conforms when `now >= TAT - burst * T` (T = 1 / rate); it then moves TAT
//! to `max(TAT, now) + T`. So `burst + 1` requests may come at once, then one
//! every T. A key whose TAT has passed holds no state worth keeping (a new key
//! behaves the same), so a full shard drops those first; if every key of a small
//! sample (8 entries, not a scan: a flood of new keys costs O(1) each) is still
//! live, the one with the lowest TAT goes, which can only give that key a fresh
//! budget. Memory is therefore at most `max_keys` entries (16 bytes each plus
//! the hash table's overhead), whatever the number of distinct keys; with a
//! shared store, the counts waiting for the next sync are bounded the same way.

mod link;
pub mod sync;

pub use link::Link;

use crate::rules::RequestView;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{KeyPart, RateLimitConfig, Tier};

impl RateLimitConfig {
    /// T, the time one request "costs", in nanoseconds, rounded up: the rate
    /// allowed is never above the one configured. (In whole microseconds,
    /// rounded down, 300000/s was T = 3 µs, which allowed 333333/s.)
    fn interval_ns((n, per): (u64, Duration)) -> u64 {
        // (no u128 arithmetic on the request path: as_nanos() is u128)
        let per_ns = per
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(per.subsec_nanos()));
        per_ns.div_ceil(n.max(1)).max(1)
    }
}

/// `RateLimit-Policy` (IETF httpapi-ratelimit-headers): `"name";q=100;w=1`.
pub fn policy_header(name: &str, q: u64, w: u64) -> String {
    format!("\"{name}\";q={q};w={w}")
}

/// One key's quota: the window it counts in and the requests used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaEntry {
    /// The key as text (for operators: `rampart quota show`).
    pub key: String,
    /// The window's number (UTC seconds / window length).
    pub window: u64,
    /// The window's length in seconds (a tier's may differ from another's).
    pub len: u64,
    pub used: u64,
    /// The global count at the last sync with `[rate_limit_store]`; None: the
    /// store has not confirmed this count (a new entry, or one restored from
    /// the state file or a handover: its count seeds the store's).
    pub synced: Option<u64>,
    /// A count restored from the state file or a handover, which the store may
    /// not have: until the first sync, the store's count is raised to it.
    pub seed: u64,
}

const SHARDS: usize = 16;

/// FNV-1a's offset basis (64 bits): a key's hash before its first byte.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a (64 bits): `h` with `bytes` fed in.
#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Keys are already hashes (FNV-1a): the table uses them as they are instead
/// of hashing them again with SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // the shard is chosen by the low bits: mix them out of the way
        self.0 = v.rotate_right(4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Table<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The per-key state of one limit, kept across reloads by its name.
#[derive(Debug)]
pub struct Store {
    shards: Vec<Mutex<Table<u64>>>,
    /// The TAT of the one key of a limit keyed by nothing (`key = "all"`,
    /// without tiers; 0: none yet). Every request of every worker counts
    /// against that key, so it is one word updated by compare-and-swap, not an
    /// entry behind a shard's lock that every worker would queue on. (The
    /// rate only: such a limit's quota is counted in `quotas`, under its
    /// shard's lock, and with `[rate_limit_store]` what each request adds for
    /// the next sync is noted in `pending`, under its shard's lock.)
    one: AtomicU64,
    quotas: Vec<Mutex<Table<QuotaEntry>>>,
    /// With `[rate_limit_store]`: what this node admitted per key since the
    /// last sync.
    pending: Vec<Mutex<Table<link::Pend>>>,
    /// Quota counts changed since the state file was last written.
    pub quotas_changed: std::sync::atomic::AtomicBool,
    /// Requests refused by the rate, and by the quota (kept across reloads
    /// with the rest of the store, by the limit's name).
    pub refused_rate: std::sync::atomic::AtomicU64,
    pub refused_quota: std::sync::atomic::AtomicU64,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
            one: AtomicU64::new(0),
            quotas: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
            pending: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
            quotas_changed: Default::default(),
            refused_rate: Default::default(),
            refused_quota: Default::default(),
        }
    }
}

impl Store {
    /// Keys held now in the shards (see [`Limiter::rate_keys`]).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Quota keys held now (each in its current or a past window).
    pub fn quota_len(&self) -> usize {
        self.quotas
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// A limit in force: its settings and its (shared, lasting) store.
#[derive(Debug)]
pub struct Limiter {
    pub cfg: RateLimitConfig,
    pub store: Arc<Store>,
    /// `[rate_limit_store]`: the limit is shared with other nodes.
    pub link: Option<Arc<link::Link>>,
    /// Keyed by nothing (`key = "all"`, no tiers): the key every request
    /// has. Its rate is kept in [`Store::one`], without a lock.
    one: Option<u64>,
    /// T of the limit's own rate (`interval_ns`), worked out once: the
    /// division is not on every request's path. (`cfg` is not changed after
    /// `new`: a reload makes a new Limiter, keeping the Store.)
    t0: u64,
}

/// What applies to a request under a limit (`Limiter::applies`): its key,
/// rate, burst, quota and tier with the header value that put it there.
type Applies<'a> = (
    u64,
    Option<(u64, Duration)>,
    u64,
    Option<(u64, Duration)>,
    Option<(&'a Tier, &'a [u8])>,
);

/// Why a request was limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// When the request would conform.
    pub retry_after: Duration,
    /// By the quota (else by the rate).
    pub quota: bool,
    /// The policy that refused it: q requests per w seconds.
    pub q: u64,
    pub w: u64,
}

impl Limiter {
    pub fn new(cfg: RateLimitConfig, store: Arc<Store>, link: Option<Arc<link::Link>>) -> Limiter {
        let one = (cfg.tiers.is_empty() && cfg.key.iter().all(|k| *k == KeyPart::All)).then(|| {
            // what `key` gives every request: each part feeds nothing, then 0xff
            cfg.key.iter().fold(FNV_OFFSET, |h, _| fnv(h, &[0xff]))
        });
        let t0 = cfg.rate.map_or(0, RateLimitConfig::interval_ns);
        Limiter {
            cfg,
            store,
            link,
            one,
            t0,
        }
    }

    /// Keys whose rate state is held now: the shards', or the one word of a
    /// limit keyed by nothing. (A store kept across a reload that changed
    /// the key may hold both; only the form in use is counted, and the other
    /// is kept for a reload back.)
    pub fn rate_keys(&self) -> usize {
        if self.one.is_some() {
            usize::from(self.store.one.load(Ordering::Relaxed) != 0)
        } else {
            self.store.len()
        }
    }

    /// Notes a request admitted under the rate (T = `t_ns`) at `now` (µs),
    /// for the next sync.
    #[inline]
    fn note_rate(&self, key: u64, now: u64, t_ns: u64) {
        if self.link.is_some() {
            self.note(key, now, |p| {
                if p.rate_n == 0 {
                    p.first = now;
                }
                // (kept through a long outage of the store: saturates)
                p.rate_n = p.rate_n.saturating_add(1);
                p.t_ns = t_ns;
            });
        }
    }

    /// Notes what was admitted for `key`, for the next sync (shared limits).
    /// At most `max_keys` keys are tracked (like the limiter's own state): a
    /// key past that is enforced here but not shared, and counted.
    fn note(&self, key: u64, now: u64, f: impl FnOnce(&mut link::Pend)) {
        let mut m = self.store.pending[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&key) && m.len() >= (self.cfg.max_keys / SHARDS).max(1) {
            if let Some(link) = &self.link {
                link.untracked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        let p = m.entry(key).or_default();
        p.touched = now;
        f(p);
    }

    /// An IPv6 client's network under this limit: its first `ipv6_prefix`
    /// bits (the address itself at 128).
    #[inline]
    fn v6_net(&self, a: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
        let bits = u32::from(self.cfg.ipv6_prefix.clamp(1, 128));
        std::net::Ipv6Addr::from(u128::from(a) & (u128::MAX << (128 - bits)))
    }

    /// The key of a request under this limit: FNV-1a over its parts, stable
    /// across processes and builds (quota counts are saved by it).
    pub fn key(&self, r: &impl RequestView) -> u64 {
        let mut h = FNV_OFFSET;
        for part in &self.cfg.key {
            h = fnv(self.key_part(h, part, r), &[0xff]);
        }
        h
    }

    /// `h` with one part of a request's key fed in. Not inlined: where its
    /// match was the loop's body, the compiler loaded every part's input
    /// (the client's bytes, the path) ahead of the loop, about 45
    /// instructions a key whatever its parts.
    #[inline(never)]
    fn key_part(&self, h: u64, part: &KeyPart, r: &impl RequestView) -> u64 {
        match part {
            // (an IPv4 client on a dual-stack listener, `::ffff:1.2.3.4`,
            // is `1.2.3.4`: fnv_v6 sees to that, off the IPv4 path)
            KeyPart::ClientIp => match r.src() {
                std::net::IpAddr::V4(a) => fnv(h, &a.octets()),
                std::net::IpAddr::V6(a) => self.fnv_v6(h, a),
            },
            KeyPart::Header(n) => fnv(h, r.header(n).unwrap_or(b"")),
            KeyPart::Path => fnv(h, r.path().as_bytes()),
            KeyPart::Tier | KeyPart::All => h,
        }
    }

    /// `key`'s part for an IPv6 client: its network, and the prefix length
    /// (an IPv4-mapped address's part is the IPv4 address's, as
    /// `IpAddr::to_canonical` has it). Not inlined: where it was, the
    /// compiler worked out the network, its bytes and the mapped address for
    /// every key before it knew the client's address family, about 180
    /// instructions a check for an IPv4 client.
    #[inline(never)]
    fn fnv_v6(&self, h: u64, a: std::net::Ipv6Addr) -> u64 {
        if let Some(v4) = a.to_ipv4_mapped() {
            return fnv(h, &v4.octets());
        }
        let h = fnv(h, &self.v6_net(a).octets());
        // the network is not the address of the same bits (2001:db8::/64 is
        // not 2001:db8::), nor a /48 a /64
        if self.cfg.ipv6_prefix < 128 {
            fnv(h, &[self.cfg.ipv6_prefix])
        } else {
            h
        }
    }

    /// The key of a request as text (for quotas, which operators look up).
    /// Kept per quota entry as `bounded_key` makes it.
    pub fn key_text(&self, r: &impl RequestView) -> String {
        let mut out = String::new();
        for (i, part) in self.cfg.key.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            match part {
                // as the key's hash has it: an IPv4 client on a dual-stack
                // listener (`::ffff:1.2.3.4`) is `1.2.3.4`, as on 0.0.0.0
                KeyPart::ClientIp => match r.src().to_canonical() {
                    std::net::IpAddr::V6(a) if self.cfg.ipv6_prefix < 128 => {
                        use std::fmt::Write;
                        let _ = write!(out, "{}/{}", self.v6_net(a), self.cfg.ipv6_prefix);
                    }
                    a => out.push_str(&a.to_string()),
                },
                KeyPart::Header(n) => {
                    out.push_str(&String::from_utf8_lossy(r.header(n).unwrap_or(b"")))
                }
                KeyPart::Path => out.push_str(r.path()),
                KeyPart::Tier => out.push('-'),
                KeyPart::All => out.push('*'),
            }
        }
        out
    }

    /// The key text an operator's `key` stands for under this limit: an IPv6
    /// address where the key has the client's IP is the network it is
    /// counted under (`2001:db8:0:7::1` is `2001:db8:0:7::/64`), so that
    /// `rampart quota show` and `reset` find a client by any of its
    /// addresses; an IPv4-mapped one is its IPv4 address, as requests are
    /// keyed. Anything else is as given.
    pub fn operator_key(&self, key: &str) -> String {
        if self.cfg.ipv6_prefix >= 128 || !self.cfg.key.contains(&KeyPart::ClientIp) {
            return key.to_owned();
        }
        let parts: Vec<&str> = key.split('|').collect();
        if parts.len() != self.cfg.key.len() {
            return key.to_owned();
        }
        let parts: Vec<String> = parts
            .iter()
            .zip(&self.cfg.key)
            .map(
                |(text, part)| match (part, text.parse::<std::net::Ipv6Addr>()) {
                    // (an IPv4 client on a dual-stack listener is its IPv4 address)
                    (KeyPart::ClientIp, Ok(a)) => match a.to_ipv4_mapped() {
                        Some(v4) => v4.to_string(),
                        None => format!("{}/{}", self.v6_net(a), self.cfg.ipv6_prefix),
                    },
                    _ => (*text).to_owned(),
                },
            )
            .collect();
        parts.join("|")
    }

    /// Whether a request conforms to this limit: its rate (GCRA, `now` in µs)
    /// and its quota (`unix` seconds); counted by both if so. With tiers, the
    /// request's tier gives the rate and the quota, and the key is the tier and
    /// its header's value; a request in no tier is limited as the limit says,
    /// by its other key parts.
    /// `unix` is only read when a quota applies.
    pub fn admit(
        &self,
        r: &impl RequestView,
        now: u64,
        unix: impl FnOnce() -> u64,
    ) -> Result<(), Limited> {
        if self.cfg.tiers.is_empty() && self.cfg.quota.is_none() {
            // a rate alone (most limits): no tier to look up, no quota, and
            // none of `applies`' answer to pass about
            return match self.cfg.rate {
                Some(rate) => self.check_at(self.key(r), rate, self.t0, self.cfg.burst, now),
                None => Ok(()),
            };
        }
        let (key, rate, burst, quota, tier) = self.applies(r);
        let text = || match tier {
            Some((t, v)) => format!("{}:{}", t.name, String::from_utf8_lossy(v)),
            None => self.key_text(r),
        };
        let unix = quota.map(|_| unix()).unwrap_or(0);
        if let Some(q) = quota {
            self.quota_check(key, q, text, unix, false)?;
        }
        if let Some(rate) = rate {
            self.check(key, rate, burst, now)?;
        }
        if let Some(q) = quota {
            if let Err(over) = self.quota_check(key, q, text, unix, true) {
                // used up since the first look (by another request): this
                // one passed the rate, which it gives back
                if let Some(rate) = rate {
                    self.uncheck(key, rate, now);
                }
                return Err(over);
            }
        }
        Ok(())
    }

    /// Gives back what `admit` (at `now` µs, `unix` seconds) counted for a
    /// request that was then refused all the same (by a later limit of its
    /// rules): a refused request uses none of a rate or a quota. Not on the
    /// way of a request that passes.
    pub fn refund(&self, r: &impl RequestView, now: u64, unix: u64) {
        let (key, rate, _, quota, _) = self.applies(r);
        if let Some(rate) = rate {
            self.uncheck(key, rate, now);
        }
        if let Some(q) = quota {
            self.quota_uncount(key, q, unix);
        }
    }

    /// What applies to a request: its key, rate, burst and quota, and its
    /// tier (with the header value that put it there), if any.
    #[inline]
    fn applies<'a>(&'a self, r: &'a impl RequestView) -> Applies<'a> {
        let tier = if self.cfg.tiers.is_empty() {
            None
        } else {
            self.cfg.tiers.iter().find_map(|t| {
                let v = r.header(&t.header)?;
                t.values.contains(v).then_some((t, v))
            })
        };
        match tier {
            Some((t, v)) => {
                let h = fnv(fnv(fnv(FNV_OFFSET, t.name.as_bytes()), &[0xff]), v);
                (h, t.rate, t.burst, t.quota, tier)
            }
            None => (
                self.key(r),
                self.cfg.rate,
                self.cfg.burst,
                self.cfg.quota,
                None,
            ),
        }
    }

    /// `key`'s use of the quota `(limit, window)` at `unix`: Err when used up;
    /// counts one when `count`.
    fn quota_check(
        &self,
        key: u64,
        (limit, window): (u64, Duration),
        text: impl FnOnce() -> String,
        unix: u64,
        count: bool,
    ) -> Result<(), Limited> {
        let len = window.as_secs().max(1);
        let current = unix / len;
        let shard = &self.store.quotas[(key % SHARDS as u64) as usize];
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        let entry = m.get(&key).filter(|e| e.window == current);
        let used = entry.map_or(0, |e| e.used);
        let limit = match &self.link {
            Some(link) => quota_limit(limit, entry, link.share()),
            None => limit,
        };
        if used >= limit {
            return Err(Limited {
                retry_after: Duration::from_secs((current + 1) * len - unix),
                quota: true,
                q: limit,
                w: len,
            });
        }
        if !m.contains_key(&key) {
            // (made at the first look; made again at the count if another
            // key's took its place in between)
            let per_shard = (self.cfg.max_keys / SHARDS).max(1);
            if m.len() >= per_shard {
                evict_quota(&mut m, unix);
            }
            m.insert(
                key,
                QuotaEntry {
                    key: bounded_key(text()),
                    window: current,
                    len,
                    used: 0,
                    synced: None,
                    seed: 0,
                },
            );
        }
        if !count {
            return Ok(());
        }
        if let Some(e) = m.get_mut(&key) {
            if e.window != current {
                e.window = current;
                e.used = 0;
                e.synced = None;
                e.seed = 0;
            }
            e.len = len;
            e.used += 1;
            self.store
                .quotas_changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Noted as pending for the next sync before the quota table is let
        // go: a sync applying its answer (`sync::apply`, which sets the count
        // to the store's plus what is pending, under this lock) then sees
        // the request either in the count it replaces or in what is pending,
        // never in neither (it was lost for one interval, and one request
        // past the quota could pass). The locks nest quotas, then pending,
        // everywhere.
        if self.link.is_some() {
            self.note(key, crate::clock::now_us(), |p| {
                if p.q_window != current {
                    p.quota_n = 0;
                }
                p.quota_n = p.quota_n.saturating_add(1);
                (p.q_len, p.q_window) = (len, current);
            });
        }
        drop(m);
        Ok(())
    }

    /// Takes back one request counted by `quota_check` at `unix`, in the
    /// table and in what is pending for the store (unless a sync sent it
    /// already: the store's count then keeps it until the window ends).
    fn quota_uncount(&self, key: u64, (_, window): (u64, Duration), unix: u64) {
        let len = window.as_secs().max(1);
        let current = unix / len;
        let shard = (key % SHARDS as u64) as usize;
        let mut m = self.store.quotas[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(e) = m.get_mut(&key).filter(|e| e.window == current) else {
            return;
        };
        e.used = e.used.saturating_sub(1);
        self.store
            .quotas_changed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // under the quota table's lock, as it was counted (see quota_check)
        if self.link.is_some() {
            let mut pending = self.store.pending[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pending.get_mut(&key).filter(|p| p.q_window == current) {
                p.quota_n = p.quota_n.saturating_sub(1);
            }
        }
        drop(m);
    }

    /// Quota entries (all, or those whose key text is `key`), in their current
    /// window.
    pub fn quotas(&self, key: Option<&str>, unix: u64) -> Vec<QuotaEntry> {
        let key = key.map(|k| bounded_key(k.to_owned()));
        let mut out = Vec::new();
        for shard in &self.store.quotas {
            let m = shard.lock().unwrap_or_else(|e| e.into_inner());
            for e in m.values() {
                if key.as_deref().is_none_or(|k| k == e.key) {
                    let mut e = e.clone();
                    let current = unix / e.len.max(1);
                    if e.window != current {
                        e.used = 0;
                        e.window = current;
                    }
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The window lengths (seconds) of this limit's quotas: its own, its tiers'.
    pub fn quota_lens(&self) -> Vec<u64> {
        let mut lens: Vec<u64> = self
            .cfg
            .quota
            .iter()
            .chain(self.cfg.tiers.iter().filter_map(|t| t.quota.as_ref()))
            .map(|(_, w)| w.as_secs().max(1))
            .collect();
        lens.sort_unstable();
        lens.dedup();
        lens
    }

    /// The quota (requests) an entry's key has: its tier's, else the limit's.
    pub fn quota_of(&self, e: &QuotaEntry) -> u64 {
        let tier = e
            .key
            .split_once(':')
            .and_then(|(t, _)| self.cfg.tiers.iter().find(|x| x.name == t));
        tier.and_then(|t| t.quota)
            .or(self.cfg.quota)
            .map_or(0, |(q, _)| q)
    }

    /// Forgets the quota use of the key whose text is `key`: the (key hash,
    /// window) of each entry forgotten.
    pub fn reset_quota(&self, key: &str) -> Vec<(u64, u64)> {
        let key = bounded_key(key.to_owned());
        let key = key.as_str();
        let mut gone = Vec::new();
        for (i, shard) in self.store.quotas.iter().enumerate() {
            let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|&h, e| {
                let keep = e.key != key;
                if !keep {
                    gone.push((h, e.window));
                }
                keep
            });
            drop(m);
            // nothing of it is left to send either
            let mut p = self.store.pending[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (h, _) in &gone {
                if let Some(pend) = p.get_mut(h) {
                    pend.quota_n = 0;
                }
            }
        }
        if !gone.is_empty() {
            self.store
                .quotas_changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        gone
    }

    /// Puts saved quota use back (state file, handover), keyed as requests
    /// would be; a count already there for the same window is kept if higher,
    /// one for a later window is kept as it is.
    ///
    /// Not added: a binary upgrade restores the state file, then the old
    /// process's fresher counts, which include the file's. And not replaced
    /// by an ended window's: this process counted in the new one (a restart
    /// or handover just after the window turned), and those counts go on.
    pub fn restore_quota(&self, hash: u64, mut e: QuotaEntry) {
        // (an entry a version before bounded keys saved keeps them too)
        e.key = bounded_key(std::mem::take(&mut e.key));
        let shard = &self.store.quotas[(hash % SHARDS as u64) as usize];
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(&hash) {
            Some(old) if old.window > e.window => {}
            Some(old) if old.window == e.window => {
                old.used = old.used.max(e.used);
                old.seed = old.seed.max(e.used);
            }
            _ => {
                m.insert(hash, QuotaEntry { seed: e.used, ..e });
            }
        }
    }

    /// Every quota entry with its key hash (state file).
    pub fn quota_entries(&self) -> Vec<(u64, QuotaEntry)> {
        let mut out = Vec::new();
        for shard in &self.store.quotas {
            let m = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(m.iter().map(|(k, e)| (*k, e.clone())));
        }
        out
    }

    /// Whether a request with `key` at `now_us` conforms to `rate` with
    /// `burst`; counts it if so. (TATs are kept in nanoseconds, as T is.)
    pub fn check(
        &self,
        key: u64,
        rate: (u64, Duration),
        burst: u64,
        now_us: u64,
    ) -> Result<(), Limited> {
        self.check_at(key, rate, RateLimitConfig::interval_ns(rate), burst, now_us)
    }

    /// `check` with `rate`'s T already worked out (`t0`).
    fn check_at(
        &self,
        key: u64,
        rate: (u64, Duration),
        t0: u64,
        burst: u64,
        now_us: u64,
    ) -> Result<(), Limited> {
        let now = now_us.saturating_mul(1000);
        // alone (the shared store unreachable), a node takes its share of the rate
        let t = match &self.link {
            Some(link) if !link.is_up() => (t0 as f64 / link.share()) as u64,
            _ => t0,
        };
        let tau = t.saturating_mul(burst);
        let over = |tat: u64| Limited {
            retry_after: Duration::from_nanos(tat.saturating_sub(tau).saturating_sub(now)),
            quota: false,
            q: rate.0,
            w: rate.1.as_secs().max(1),
        };
        if self.one.is_some() {
            // the same GCRA step as below, on the one word (a new key's TAT
            // starts at now, as 0.max(now) does). Relaxed: the word is all
            // the state there is; no other memory is published with it.
            let stepped = self
                .store
                .one
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    let tat = v.max(now);
                    (now.saturating_add(tau) >= tat).then(|| tat.saturating_add(t))
                });
            return match stepped {
                Ok(_) => {
                    self.note_rate(key, now_us, t0);
                    Ok(())
                }
                Err(v) => Err(over(v.max(now))),
            };
        }
        let shard = &self.store.shards[(key % SHARDS as u64) as usize];
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        // a known key: one lookup
        if let Some(v) = m.get_mut(&key) {
            let tat = (*v).max(now);
            if now.saturating_add(tau) < tat {
                return Err(over(tat));
            }
            *v = tat.saturating_add(t);
            drop(m);
            self.note_rate(key, now_us, t0);
            return Ok(());
        }
        let per_shard = (self.cfg.max_keys / SHARDS).max(1);
        if m.len() >= per_shard {
            // full: of a small sample, drop the keys whose TAT has passed, or
            // else the one with the lowest TAT
            let mut expired = [0u64; 8];
            let mut n = 0;
            let mut lowest: Option<(u64, u64)> = None;
            for (&k, &v) in m.iter().take(8) {
                if v <= now {
                    expired[n] = k;
                    n += 1;
                } else if lowest.is_none_or(|(_, lv)| v < lv) {
                    lowest = Some((k, v));
                }
            }
            if n > 0 {
                for k in &expired[..n] {
                    m.remove(k);
                }
            } else if let Some((k, _)) = lowest {
                m.remove(&k);
            }
        }
        // a new key's TAT starts at now: it conforms (burst >= 0)
        m.insert(key, now.saturating_add(t));
        drop(m);
        self.note_rate(key, now_us, t0);
        Ok(())
    }

    /// Takes back one request that `check` admitted for `key` at `now_us`
    /// (its TAT moves back by T, not before then), and from what is pending
    /// for the store.
    fn uncheck(&self, key: u64, rate: (u64, Duration), now_us: u64) {
        let now = now_us.saturating_mul(1000);
        let t0 = RateLimitConfig::interval_ns(rate);
        let t = match &self.link {
            Some(link) if !link.is_up() => (t0 as f64 / link.share()) as u64,
            _ => t0,
        };
        let shard = (key % SHARDS as u64) as usize;
        if self.one.is_some() {
            let _ = self
                .store
                .one
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    (v != 0).then(|| v.saturating_sub(t).max(now))
                });
        } else {
            let mut m = self.store.shards[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(v) = m.get_mut(&key) {
                *v = v.saturating_sub(t).max(now);
            }
        }
        if self.link.is_some() {
            let mut pending = self.store.pending[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pending.get_mut(&key) {
                p.rate_n = p.rate_n.saturating_sub(1);
            }
        }
    }
}

/// Makes room in a full quota shard: of a small sample (8 entries, not a
/// scan, so a flood of new keys costs O(1) each), the entries of ended windows
/// go, or else the one that used the least of its quota. A flood of keys used
/// once each then takes the place of its own kind, not of a key that has used
/// much of its quota, which an eviction would give a fresh one (as the oldest
/// or first entry did).
fn evict_quota(m: &mut Table<QuotaEntry>, unix: u64) {
    let mut ended = [0u64; 8];
    let mut n = 0;
    let mut least: Option<(u64, u64)> = None;
    for (&k, e) in m.iter().take(8) {
        if e.window != unix / e.len.max(1) {
            ended[n] = k;
            n += 1;
        } else if least.is_none_or(|(_, used)| e.used < used) {
            least = Some((k, e.used));
        }
    }
    if n > 0 {
        for k in &ended[..n] {
            m.remove(k);
        }
    } else if let Some((k, _)) = least {
        m.remove(&k);
    }
}

/// How many requests a quota entry may have used on this node now: all of
/// the quota while the store is up; while it is down, what was used at the
/// last sync plus this node's share of the rest.
pub(crate) fn quota_limit(limit: u64, e: Option<&QuotaEntry>, share: f64) -> u64 {
    if share >= 1.0 {
        return limit;
    }
    let synced = e.and_then(|e| e.synced).unwrap_or(0).min(limit);
    synced + ((limit - synced) as f64 * share).floor() as u64
}

/// Longest key text a quota entry keeps whole.
const MAX_KEY_TEXT: usize = 128;

/// A quota key's text as kept, shown and shared: a longer one (a header value
/// of kilobytes, sent to fill memory) becomes its first 96 bytes, `…#` and a
/// 64-bit hash of the whole, the same on every node and for the operator's
/// full text alike, as HAProxy's `type string len N` keeps string keys short.
pub fn bounded_key(text: String) -> String {
    if text.len() <= MAX_KEY_TEXT {
        return text;
    }
    let mut cut = 96;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    // (stable across runs and builds: the text names the key in Redis and in
    // the state file)
    let h = crate::pool::balance::hash_parts(&[text.as_bytes()]);
    format!("{}…#{h:016x}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_alone_takes_its_share_of_what_is_left() {
        let e = QuotaEntry {
            key: "k".into(),
            window: 0,
            len: 86_400,
            used: 70,
            synced: Some(60),
            seed: 0,
        };
        assert_eq!(quota_limit(100, Some(&e), 1.0), 100);
        // 40 left at the last sync: half of them for this node
        assert_eq!(quota_limit(100, Some(&e), 0.5), 80);
        assert_eq!(quota_limit(100, None, 0.5), 50);
    }

    fn limiter(rate: u64, burst: u64, max_keys: usize) -> Limiter {
        Limiter::new(
            RateLimitConfig {
                name: "t".into(),
                key: vec![KeyPart::ClientIp],
                rate: Some((rate, Duration::from_secs(1))),
                burst,
                quota: None,
                max_keys,
                ipv6_prefix: 64,
                tiers: vec![],
            },
            Arc::default(),
            None,
        )
    }

    #[test]
    fn gcra_allows_burst_then_the_rate() {
        const R: (u64, Duration) = (100, Duration::from_secs(1));
        let l = limiter(100, 10, 1000);
        let t0 = 1_000_000;
        // burst + 1 at once
        for i in 0..11 {
            assert!(l.check(1, R, 10, t0).is_ok(), "request {i}");
        }
        let e = l.check(1, R, 10, t0).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(10));
        // one more every 10 ms
        assert!(l.check(1, R, 10, t0 + 9_999).is_err());
        assert!(l.check(1, R, 10, t0 + 10_000).is_ok());
        assert!(l.check(1, R, 10, t0 + 10_000).is_err());
        // over one second at a steady 200/s, about 100 pass
        let mut ok = 0;
        for i in 0..200 {
            if l.check(2, R, 10, t0 + i * 5_000).is_ok() {
                ok += 1;
            }
        }
        assert!((105..=112).contains(&ok), "{ok}");
        // another key is not affected
        assert!(l.check(3, R, 10, t0).is_ok());
    }

    /// High rates are kept, not rounded up: T in whole microseconds, rounded
    /// down, made 300000/s allow 333333/s and 700000/s allow 1000000/s.
    #[test]
    fn a_high_rate_allows_no_more_than_configured() {
        for (n, per) in [(300_000, 1), (700_000, 1), (1_000_000_000, 1), (7, 60)] {
            let t = RateLimitConfig::interval_ns((n, Duration::from_secs(per)));
            let allowed = per as f64 * 1e9 / t as f64;
            assert!(allowed <= n as f64, "{n}/{per}s: T {t} ns allows {allowed}");
            assert!(allowed >= n as f64 * 0.999, "{n}/{per}s: {allowed}");
        }
        // one request every microsecond for a second, with a burst of 10 (with
        // none, arrivals on whole microseconds lose T's fraction at each
        // pass, as any GCRA does): the rate is what passes, not more
        for rate in [300_000u64, 700_000] {
            let l = limiter(rate, 10, 1000);
            let r = (rate, Duration::from_secs(1));
            let t0: u64 = 1_000_000;
            let ok = (0..1_000_000u64)
                .filter(|i| l.check(1, r, 10, t0 + *i).is_ok())
                .count() as u64;
            assert!(
                (rate - rate / 500..=rate + 11).contains(&ok),
                "{rate}/s: {ok} passed in a second"
            );
        }
    }

    struct Req(&'static str);
    impl RequestView for Req {
        fn method(&self) -> &str {
            "POST"
        }
        fn host(&self) -> Option<&str> {
            None
        }
        fn target(&self) -> &str {
            "/jobs"
        }
        fn header(&self, _: &str) -> Option<&[u8]> {
            Some(self.0.as_bytes())
        }
        fn src(&self) -> std::net::IpAddr {
            std::net::IpAddr::from([10, 0, 0, 1])
        }
    }

    #[test]
    fn key_all_is_one_count_for_every_request() {
        let mut cfg = limiter(1, 1, 10).cfg.clone();
        cfg.key = vec![KeyPart::All];
        let l = Limiter::new(cfg, Arc::default(), None);
        // different header values, one key; a client-ip key would differ too
        assert_eq!(l.key(&Req("a")), l.key(&Req("b")));
        assert_eq!(l.key_text(&Req("a")), "*");
        let by_header = {
            let mut c = limiter(1, 1, 10).cfg.clone();
            c.key = vec![KeyPart::Header("x".into())];
            Limiter::new(c, Arc::default(), None)
        };
        assert_ne!(by_header.key(&Req("a")), by_header.key(&Req("b")));
    }

    /// A limit keyed by nothing is one word that the workers step by
    /// compare-and-swap, not an entry behind a shard's lock: from four
    /// threads at one instant exactly burst + 1 pass (no step lost, none
    /// counted twice), no shard holds an entry, and a refund gives one back.
    #[test]
    fn key_all_is_one_word_counted_exactly_across_threads() {
        let mut cfg = limiter(1, 999, 10).cfg.clone();
        cfg.key = vec![KeyPart::All];
        let l = Arc::new(Limiter::new(cfg.clone(), Arc::default(), None));
        let now = 5_000_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| l.admit(&Req("x"), now, || 0).is_ok())
                        .count()
                })
            })
            .collect();
        let passed: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(l.one, Some(l.key(&Req("x"))));
        assert_eq!(passed, 1000);
        let in_shards = |l: &Limiter| {
            l.store
                .shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>()
        };
        assert_eq!(in_shards(&l), 0);
        assert_eq!(l.rate_keys(), 1);
        // T is 1 s: the TAT is now + 1000 s, a burst of 999 s back from it
        let e = l.admit(&Req("x"), now, || 0).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(1));
        l.refund(&Req("x"), now, 0);
        assert!(l.admit(&Req("x"), now, || 0).is_ok());
        assert!(l.admit(&Req("x"), now, || 0).is_err());
        // a second later, one more
        assert!(l.admit(&Req("x"), now + 1_000_000, || 0).is_ok());

        // keyed by something besides: entries in the shards, which are what
        // count when the limit's store is kept across a reload that keys it so
        cfg.key = vec![KeyPart::All, KeyPart::Path];
        let by_path = Limiter::new(cfg, Arc::clone(&l.store), None);
        assert!(by_path.admit(&Req("x"), now, || 0).is_ok());
        assert_eq!(in_shards(&by_path), 1);
        assert_eq!(by_path.rate_keys(), 1);
    }

    /// An IPv4 client on a dual-stack listener (`::ffff:1.2.3.4`) is the same
    /// key, by its hash and by its text, as on a listener bound to 0.0.0.0: a
    /// shared quota is one count in the store (its name is the text), and an
    /// operator finds it as `1.2.3.4`.
    #[test]
    fn a_v4_mapped_client_is_keyed_as_its_v4_address() {
        let mut cfg = daily_quota(10).cfg.clone();
        cfg.key = vec![KeyPart::ClientIp];
        let l = Limiter::new(cfg, Arc::default(), None);
        let v4 = Src("1.2.3.4".parse().unwrap());
        let mapped = Src("::ffff:1.2.3.4".parse().unwrap());
        assert_eq!(l.key(&mapped), l.key(&v4));
        assert_eq!(l.key_text(&mapped), l.key_text(&v4));
        assert_eq!(l.key_text(&mapped), "1.2.3.4");
        let noon = 1_795_953_600 + 12 * 3600;
        assert!(l.admit(&mapped, 0, || noon).is_ok());
        assert!(l.admit(&v4, 0, || noon).is_ok());
        let q = l.quotas(Some("1.2.3.4"), noon);
        assert_eq!(q.first().map(|e| e.used), Some(2), "{q:?}");
        // a real IPv6 client is its /64: one budget for every address of it
        let v6 = Src("2001:db8:0:7::1".parse().unwrap());
        let same_net = Src("2001:db8:0:7:a:b:c:d".parse().unwrap());
        let next_net = Src("2001:db8:0:8::1".parse().unwrap());
        assert_eq!(l.key_text(&v6), "2001:db8:0:7::/64");
        assert_eq!(l.key(&v6), l.key(&same_net));
        assert_ne!(l.key(&v6), l.key(&next_net));
        assert!(l.admit(&v6, 0, || noon).is_ok());
        assert!(l.admit(&same_net, 0, || noon).is_ok());
        let q = l.quotas(Some("2001:db8:0:7::/64"), noon);
        assert_eq!(q.first().map(|e| e.used), Some(2), "{q:?}");
        // an operator finds it by any address of it, as by its network
        for text in [
            "2001:db8:0:7::1",
            "2001:db8:0:7:ffff::9",
            "2001:db8:0:7::/64",
        ] {
            assert_eq!(l.operator_key(text), "2001:db8:0:7::/64", "{text}");
        }
        assert_eq!(l.operator_key("1.2.3.4"), "1.2.3.4");
        assert_eq!(l.operator_key("::ffff:1.2.3.4"), "1.2.3.4");
        // ipv6_prefix = 128: each address on its own, as nginx counts
        let mut cfg = l.cfg.clone();
        cfg.ipv6_prefix = 128;
        let each = Limiter::new(cfg, Arc::default(), None);
        assert_eq!(each.key_text(&v6), "2001:db8:0:7::1");
        assert_ne!(each.key(&v6), each.key(&same_net));
        assert_eq!(each.key(&mapped), l.key(&mapped), "IPv4 is as it was");
        // a network and the address of its bits are two keys
        let net_address = Src("2001:db8:0:7::".parse().unwrap());
        assert_ne!(l.key(&v6), each.key(&net_address));
    }

    /// Keys hash as they did when counts were saved by them.
    #[test]
    fn keys_hash_as_they_were_saved() {
        // Quota counts are saved (state file, shared store) by these hashes:
        // FNV-1a over each part's bytes and a 0xff after each, whatever the
        // code that computes them (worked out apart from it)
        let l = limiter(1, 2, 1000);
        assert_eq!(l.key(&Req("x")), 0x638c_f082_0a41_bd49); // 10.0.0.1
        let v6: std::net::Ipv6Addr = "2001:db8:0:7::1".parse().unwrap();
        assert_eq!(l.key(&Src(v6.into())), 0xcb01_7c2e_a6a3_cd4f); // its /64
        let mut cfg = l.cfg.clone();
        cfg.key = vec![KeyPart::All];
        assert_eq!(
            Limiter::new(cfg.clone(), Arc::default(), None).one,
            Some(0xaf64_724c_8602_eb6e)
        );
        cfg.key = vec![KeyPart::Tier];
        cfg.tiers = vec![Tier {
            name: "gold".into(),
            header: "x-plan".into(),
            values: [b"k1".to_vec()].into_iter().collect(),
            rate: Some((1, Duration::from_secs(1))),
            burst: 0,
            quota: None,
        }];
        let tiered = Limiter::new(cfg, Arc::default(), None);
        assert_eq!(tiered.applies(&Req("k1")).0, 0x608b_b5f7_53da_bc84);
        // an IPv4 client on a dual-stack listener is the IPv4 client
        let mapped: std::net::Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(l.key(&Src(mapped.into())), 0x638c_f082_0a41_bd49);
        // parts in order: the client and the path ("/jobs"), a header ("x")
        // and the client
        let mut cfg = l.cfg.clone();
        cfg.key = vec![KeyPart::ClientIp, KeyPart::Path];
        let by_path = Limiter::new(cfg.clone(), Arc::default(), None);
        assert_eq!(by_path.key(&Req("x")), 0x87a8_d4bc_39f5_a287);
        cfg.key = vec![KeyPart::Header("x-api-key".into()), KeyPart::ClientIp];
        let by_header = Limiter::new(cfg, Arc::default(), None);
        assert_eq!(by_header.key(&Req("x")), 0xff15_1c49_ada0_883e);
    }

    /// Rotating through the addresses of one /64 gets no fresh budget.
    #[test]
    fn an_ipv6_client_cannot_take_a_fresh_rate_from_each_address_of_its_64() {
        // 1/s, burst 2: three requests at once pass, the fourth does not
        let l = limiter(1, 2, 1000);
        let base = u128::from("2001:db8:0:7::".parse::<std::net::Ipv6Addr>().unwrap());
        let admitted = (1..=100u128)
            .filter(|i| {
                let a = std::net::Ipv6Addr::from(base | i);
                l.admit(&Src(a.into()), 1_000_000, || 0).is_ok()
            })
            .count();
        assert_eq!(admitted, 3);
        // another /64 has its own budget
        assert!(l
            .admit(&Src("2001:db8:0:8::1".parse().unwrap()), 1_000_000, || 0)
            .is_ok());
    }

    /// A request from a client address, with nothing else to key on.
    struct Src(std::net::IpAddr);

    impl RequestView for Src {
        fn method(&self) -> &str {
            "GET"
        }
        fn host(&self) -> Option<&str> {
            None
        }
        fn target(&self) -> &str {
            "/"
        }
        fn header(&self, _: &str) -> Option<&[u8]> {
            None
        }
        fn src(&self) -> std::net::IpAddr {
            self.0
        }
    }

    /// A quota of `n` a day per `x-api-key`.
    fn daily_quota(n: u64) -> Limiter {
        Limiter::new(
            RateLimitConfig {
                name: "jobs".into(),
                key: vec![KeyPart::Header("x-api-key".into())],
                rate: None,
                burst: 0,
                quota: Some((n, Duration::from_secs(86_400))),
                max_keys: 1000,
                ipv6_prefix: 64,
                tiers: vec![],
            },
            Arc::default(),
            None,
        )
    }

    #[test]
    fn a_daily_quota_counts_per_utc_day() {
        let l = daily_quota(3);
        // 2026-11-30 12:00 UTC
        let noon = 1_795_953_600 + 12 * 3600;
        let midnight = (noon / 86_400 + 1) * 86_400;
        for _ in 0..3 {
            assert!(l.admit(&Req("free-1"), 0, || noon).is_ok());
        }
        let e = l.admit(&Req("free-1"), 0, || noon).unwrap_err();
        assert!(e.quota);
        assert_eq!(e.retry_after, Duration::from_secs(midnight - noon));
        // another key has its own
        assert!(l.admit(&Req("free-2"), 0, || noon).is_ok());
        let q = l.quotas(Some("free-1"), noon);
        assert_eq!((q.len(), q[0].used), (1, 3));
        // the next UTC day starts over
        assert!(l.admit(&Req("free-1"), 0, || midnight).is_ok());
        assert_eq!(l.quotas(Some("free-1"), midnight)[0].used, 1);
        // an operator's reset
        for _ in 0..2 {
            assert!(l.admit(&Req("free-1"), 0, || midnight).is_ok());
        }
        assert!(l.admit(&Req("free-1"), 0, || midnight).is_err());
        assert!(!l.reset_quota("free-1").is_empty());
        assert!(l.admit(&Req("free-1"), 0, || midnight).is_ok());
        assert!(l.reset_quota("nobody").is_empty());
    }

    /// A request a later limit refused is given back (`refund`): the rate and
    /// the quota are as if it had not come, and so is what the next sync
    /// would send to the shared store.
    #[test]
    fn a_refund_gives_back_the_rate_the_quota_and_what_is_pending() {
        let mut cfg = daily_quota(100).cfg.clone();
        cfg.rate = Some((1, Duration::from_secs(60)));
        let store = crate::config::StoreConfig {
            url: "redis://127.0.0.1:1".into(),
            client: redis::Client::open("redis://127.0.0.1:1").unwrap(),
            sync_interval: Duration::from_millis(20),
            fallback_share: 0.5,
            key_prefix: "t".into(),
        };
        let l = Limiter::new(cfg, Arc::default(), Some(Arc::new(Link::new(store))));
        let noon = 1_795_953_600 + 12 * 3600;
        let t0 = 1_000_000;
        let key = l.key(&Req("k"));
        let pending = |l: &Limiter| {
            let p = l.store.pending[(key % SHARDS as u64) as usize]
                .lock()
                .unwrap()
                .get(&key)
                .copied()
                .unwrap_or_default();
            (p.rate_n, p.quota_n)
        };
        assert!(l.admit(&Req("k"), t0, || noon).is_ok());
        assert_eq!(l.quotas(Some("k"), noon)[0].used, 1);
        assert_eq!(pending(&l), (1, 1));
        // one a minute, no burst: the next is refused
        assert!(l.admit(&Req("k"), t0 + 1, || noon).is_err());
        // the first, refused by a later limit, is given back
        l.refund(&Req("k"), t0, noon);
        assert_eq!(l.quotas(Some("k"), noon)[0].used, 0);
        assert_eq!(pending(&l), (0, 0));
        // its rate too: one passes now, and only one
        assert!(l.admit(&Req("k"), t0 + 2, || noon).is_ok());
        assert!(l.admit(&Req("k"), t0 + 3, || noon).is_err());
        assert_eq!(l.quotas(Some("k"), noon)[0].used, 1);
        assert_eq!(pending(&l), (1, 1));
    }

    /// While the shared store is unreachable, what a key was admitted stays
    /// pending (each failed sync gives it back): a count at its maximum stays
    /// there, where `+= 1` wrapped to zero (or panicked, in a debug build).
    #[test]
    fn pending_counts_saturate_through_a_long_outage() {
        let mut cfg = daily_quota(100).cfg.clone();
        cfg.rate = Some((1000, Duration::from_secs(1)));
        cfg.burst = 10;
        let store = crate::config::StoreConfig {
            url: "redis://127.0.0.1:1".into(),
            client: redis::Client::open("redis://127.0.0.1:1").unwrap(),
            sync_interval: Duration::from_millis(20),
            fallback_share: 0.5,
            key_prefix: "t".into(),
        };
        let l = Limiter::new(cfg, Arc::default(), Some(Arc::new(Link::new(store))));
        let noon = 1_795_953_600 + 12 * 3600;
        let key = l.key(&Req("k"));
        let shard = (key % SHARDS as u64) as usize;
        l.store.pending[shard].lock().unwrap().insert(
            key,
            link::Pend {
                rate_n: u32::MAX,
                t_ns: 1_000_000,
                first: 1,
                quota_n: u32::MAX,
                q_len: 86_400,
                q_window: noon / 86_400,
                touched: 1,
                taken: 0,
            },
        );
        assert!(l.admit(&Req("k"), 1_000_000, || noon).is_ok());
        let p = l.store.pending[shard].lock().unwrap()[&key];
        assert_eq!((p.rate_n, p.quota_n), (u32::MAX, u32::MAX));
    }

    /// A count restored (state file, handover) for a window that has ended
    /// does not replace the one this process keeps for the new window: it was
    /// put in its place, and the new window's requests were forgotten.
    #[test]
    fn a_restored_count_of_an_ended_window_keeps_the_new_ones() {
        let l = daily_quota(100);
        let noon = 1_795_953_600 + 12 * 3600;
        let midnight = (noon / 86_400 + 1) * 86_400;
        let key = l.key(&Req("k"));
        let saved = |window: u64, used: u64| QuotaEntry {
            key: "k".into(),
            window,
            len: 86_400,
            used,
            synced: None,
            seed: 0,
        };
        let used = || l.quotas(Some("k"), midnight).first().map(|e| e.used);
        for _ in 0..3 {
            assert!(l.admit(&Req("k"), 0, || midnight).is_ok());
        }
        // saved just before midnight, restored just after
        l.restore_quota(key, saved(noon / 86_400, 90));
        assert_eq!(used(), Some(3));
        assert!(l.admit(&Req("k"), 0, || midnight).is_ok());
        assert_eq!(used(), Some(4));
        // of the same window: the higher count (the old process's counts
        // come twice in an upgrade, in the state file and the handover)
        l.restore_quota(key, saved(midnight / 86_400, 10));
        assert_eq!(used(), Some(10));
        l.restore_quota(key, saved(midnight / 86_400, 5));
        assert_eq!(used(), Some(10));
    }

    /// A key of kilobytes (a header value) is kept as 96 bytes and a hash:
    /// two such keys stay apart, and the operator's full text finds its own.
    #[test]
    fn a_long_key_is_kept_short_and_still_found() {
        let l = daily_quota(1);
        let noon = 1_795_953_600 + 12 * 3600;
        let long: &'static str = Box::leak("k".repeat(60_000).into_boxed_str());
        let other: &'static str = Box::leak(format!("{}x", "k".repeat(59_999)).into_boxed_str());
        assert!(l.admit(&Req(long), 0, || noon).is_ok());
        assert!(l.admit(&Req(long), 0, || noon).is_err());
        assert!(l.admit(&Req(other), 0, || noon).is_ok());
        let all = l.quotas(None, noon);
        assert_eq!(all.len(), 2);
        assert!(
            all.iter().all(|e| e.key.len() <= MAX_KEY_TEXT + 20),
            "{:?}",
            all[0].key
        );
        assert_ne!(all[0].key, all[1].key);
        let mine = l.quotas(Some(long), noon);
        assert_eq!((mine.len(), mine[0].used), (1, 1));
        assert_eq!(l.reset_quota(long).len(), 1);
        assert!(l.admit(&Req(long), 0, || noon).is_ok());
        assert_eq!(bounded_key("short".into()), "short");
        // one restored from a state file an older version wrote, whole
        let other_hash = l.key(&Req(other));
        l.reset_quota(other);
        l.restore_quota(
            other_hash,
            QuotaEntry {
                key: other.to_owned(),
                window: noon / 86_400,
                len: 86_400,
                used: 1,
                synced: None,
                seed: 0,
            },
        );
        let restored = l.quotas(Some(other), noon);
        assert_eq!(restored.len(), 1);
        assert!(restored[0].key.len() <= MAX_KEY_TEXT + 20);
    }

    /// A full quota table makes room from the keys that used the least: a
    /// flood of new keys, each used once, does not wipe the count of a key
    /// that used most of its quota (evicting it gave it a fresh one).
    #[test]
    fn a_flood_of_new_keys_does_not_reset_a_used_quota() {
        let mut cfg = daily_quota(100).cfg;
        cfg.max_keys = 8 * SHARDS;
        let l = Limiter::new(cfg, Arc::default(), None);
        let q = (100, Duration::from_secs(86_400));
        let noon = 1_795_953_600 + 12 * 3600;
        // keys of one shard (the victim is key 0)
        let admit = |k: u64| {
            l.quota_check(k * SHARDS as u64, q, || format!("k{k}"), noon, false)?;
            l.quota_check(k * SHARDS as u64, q, || format!("k{k}"), noon, true)
        };
        for _ in 0..90 {
            assert!(admit(0).is_ok());
        }
        for k in 1..20_000 {
            assert!(admit(k).is_ok());
            assert!(l.store.quota_len() <= 8, "{} keys", l.store.quota_len());
        }
        assert_eq!(l.quotas(Some("k0"), noon)[0].used, 90);
        for _ in 0..10 {
            assert!(admit(0).is_ok());
        }
        assert!(admit(0).is_err(), "the quota of 100 was used up");
    }

    #[test]
    fn a_million_keys_stay_bounded() {
        let l = limiter(10, 5, 100_000);
        let t0 = 1_000_000;
        for k in 0..1_000_000u64 {
            // all live (each just made a request): eviction by sampling
            assert!(l
                .check(
                    k.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    (10, Duration::from_secs(1)),
                    5,
                    t0 + k
                )
                .is_ok());
        }
        let n = l.store.len();
        assert!(n <= 100_000, "{n} keys held");
        assert!(n >= 90_000, "{n} keys held");
    }
}
