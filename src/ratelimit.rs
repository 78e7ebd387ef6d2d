//! Rate limits (`[[rate_limit]]`, applied by the rule action `rate_limit`): GCRA
//! (the generic cell rate algorithm) per key, local to this process.
//!
//! Each key keeps one number, its theoretical arrival time (TAT). A request at
//! `now` conforms when `now >= TAT - burst * T` (T = 1 / rate); it then moves TAT
//! to `max(TAT, now) + T`. So `burst + 1` requests may come at once, then one
//! every T. A key whose TAT has passed holds no state worth keeping (a new key
//! behaves the same), so a full shard drops those first; if every key of a small
//! sample (8 entries, not a scan: a flood of new keys costs O(1) each) is still
//! live, the one with the lowest TAT goes, which can only give that key a fresh
//! budget. Memory is therefore at most `max_keys` entries (16 bytes each plus
//! the hash table's overhead), whatever the number of distinct keys.

use crate::rules::RequestView;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a limit is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    /// A request header's first value (lower-case name); absent: empty.
    Header(String),
    Path,
}

/// `[[rate_limit]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    pub key: Vec<KeyPart>,
    /// Requests per `per`.
    pub rate: u64,
    pub per: Duration,
    pub burst: u64,
    pub max_keys: usize,
}

impl RateLimitConfig {
    /// T, the time one request "costs", in microseconds.
    fn interval_us(&self) -> u64 {
        (self.per.as_micros() as u64 / self.rate.max(1)).max(1)
    }

    /// `RateLimit-Policy` (IETF httpapi-ratelimit-headers): `"name";q=100;w=1`.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.rate,
            self.per.as_secs().max(1)
        )
    }
}

const SHARDS: usize = 16;

/// The per-key state of one limit, kept across reloads by its name.
#[derive(Debug)]
pub struct Store {
    shards: Vec<Mutex<HashMap<u64, u64>>>,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Store {
    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A limit in force: its settings and its (shared, lasting) store.
#[derive(Debug)]
pub struct Limiter {
    pub cfg: RateLimitConfig,
    pub store: Arc<Store>,
}

/// Why a request was limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// When the request would conform.
    pub retry_after: Duration,
}

/// Microseconds on a monotonic clock (the process's own epoch).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

impl Limiter {
    pub fn new(cfg: RateLimitConfig, store: Arc<Store>) -> Limiter {
        Limiter { cfg, store }
    }

    /// The key of a request under this limit.
    pub fn key(&self, r: &impl RequestView) -> u64 {
        // SipHash with fixed keys: the same request maps to the same key in
        // every worker thread
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for part in &self.cfg.key {
            match part {
                KeyPart::ClientIp => r.src().hash(&mut h),
                KeyPart::Header(n) => r.header(n).unwrap_or(b"").hash(&mut h),
                KeyPart::Path => r.path().hash(&mut h),
            }
            0xffu8.hash(&mut h);
        }
        h.finish()
    }

    /// Whether a request with `key` at `now` (µs) conforms; counts it if so.
    pub fn check(&self, key: u64, now: u64) -> Result<(), Limited> {
        let t = self.cfg.interval_us();
        let tau = t.saturating_mul(self.cfg.burst);
        let shard = &self.store.shards[(key % SHARDS as u64) as usize];
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = m.get(&key).copied().unwrap_or(now).max(now);
        if now + tau < tat {
            return Err(Limited {
                retry_after: Duration::from_micros(tat - tau - now),
            });
        }
        let per_shard = (self.cfg.max_keys / SHARDS).max(1);
        if m.len() >= per_shard && !m.contains_key(&key) {
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
        m.insert(key, tat + t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u64, burst: u64, max_keys: usize) -> Limiter {
        Limiter::new(
            RateLimitConfig {
                name: "t".into(),
                key: vec![KeyPart::ClientIp],
                rate,
                per: Duration::from_secs(1),
                burst,
                max_keys,
            },
            Arc::default(),
        )
    }

    #[test]
    fn gcra_allows_burst_then_the_rate() {
        let l = limiter(100, 10, 1000);
        let t0 = 1_000_000;
        // burst + 1 at once
        for i in 0..11 {
            assert!(l.check(1, t0).is_ok(), "request {i}");
        }
        let e = l.check(1, t0).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(10));
        // one more every 10 ms
        assert!(l.check(1, t0 + 9_999).is_err());
        assert!(l.check(1, t0 + 10_000).is_ok());
        assert!(l.check(1, t0 + 10_000).is_err());
        // over one second at a steady 200/s, about 100 pass
        let mut ok = 0;
        for i in 0..200 {
            if l.check(2, t0 + i * 5_000).is_ok() {
                ok += 1;
            }
        }
        assert!((105..=112).contains(&ok), "{ok}");
        // another key is not affected
        assert!(l.check(3, t0).is_ok());
    }

    #[test]
    fn a_million_keys_stay_bounded() {
        let l = limiter(10, 5, 100_000);
        let t0 = 1_000_000;
        for k in 0..1_000_000u64 {
            // all live (each just made a request): eviction by sampling
            assert!(l
                .check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), t0 + k)
                .is_ok());
        }
        let n = l.store.len();
        assert!(n <= 100_000, "{n} keys held");
        assert!(n >= 90_000, "{n} keys held");
    }
}
