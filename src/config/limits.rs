//! The validated forms of `[[rate_limit]]`, `[[tier]]`, `[rate_limit_store]` and
//! `[pool.circuit]`: what the user asked for. `ratelimit` and `pool::circuit` run them.

use std::time::Duration;

/// What a limit is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    /// A request header's first value (lower-case name); absent: empty.
    Header(String),
    Path,
    /// The request's `[[tier]]` (by its header's value): the tier's rate and
    /// quota apply instead of the limit's.
    Tier,
    /// One count for every request the limit applies to (HAProxy's
    /// `rate-limit sessions`, nginx's `limit_req_zone $server_name`).
    All,
}

/// `[[tier]]`, validated: who is in it (a header's value) and its rate and quota
/// (none: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    /// Lower-case header name.
    pub header: String,
    pub values: std::collections::HashSet<Vec<u8>>,
    pub rate: Option<(u64, Duration)>,
    pub burst: u64,
    pub quota: Option<(u64, Duration)>,
}

/// `[[rate_limit]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    pub key: Vec<KeyPart>,
    /// (requests, per): the GCRA rate.
    pub rate: Option<(u64, Duration)>,
    pub burst: u64,
    /// (requests, window): a quota per fixed UTC window (a day or an hour).
    pub quota: Option<(u64, Duration)>,
    pub max_keys: usize,
    /// The bits of an IPv6 client's address its `client_ip` key is (1 to 128).
    pub ipv6_prefix: u8,
    /// With `key = "tier"`: the tiers, matched in order.
    pub tiers: Vec<Tier>,
}

/// `[rate_limit_store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub client: redis::Client,
    pub sync_interval: Duration,
    pub fallback_share: f64,
    pub key_prefix: String,
}

impl PartialEq for StoreConfig {
    fn eq(&self, o: &StoreConfig) -> bool {
        self.url == o.url
            && self.sync_interval == o.sync_interval
            && self.fallback_share == o.fallback_share
            && self.key_prefix == o.key_prefix
    }
}

impl StoreConfig {
    /// The URL without its password, for logs and the admin API.
    pub fn shown_url(&self) -> String {
        let info = self.client.get_connection_info();
        let addr = info.addr().to_string();
        format!("redis://{addr}/{}", info.redis_settings().db())
    }
}

/// `[pool.circuit]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Percent of failed requests that opens the circuit (1..=100).
    pub failure_rate: u32,
    pub window: Duration,
    pub min_requests: u32,
    pub open_for: Duration,
}
