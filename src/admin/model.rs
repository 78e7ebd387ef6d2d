//! One view of the running proxy, built from the snapshot and the atomics; the HTML
//! page, the CSV, the JSON, the API and `rampart status` all render this.

use crate::admin::metrics::server_status;
use crate::clock;
use crate::clock::rfc3339_now;
use crate::config::Balance;
use crate::control::Shared;
use crate::pool::Pool;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub version: String,
    /// The serving process (a binary upgrade changes it).
    #[serde(default)]
    pub pid: u32,
    pub now: String,
    pub uptime_secs: u64,
    pub config_file: Option<String>,
    pub started_at: String,
    pub ready: bool,
    /// starting, running, draining (a stop asked for, still serving), closing.
    #[serde(default)]
    pub phase: String,
    pub ha: Option<serde_json::Value>,
    /// The config generation and what the last reload did.
    #[serde(default)]
    pub config: ConfigView,
    pub listeners: Vec<ListenerView>,
    pub pools: Vec<PoolView>,
    pub dns: Vec<DnsView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigView {
    pub generation: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload: Option<crate::control::ReloadRecord>,
    /// What SIGTERM does, in the running config.
    #[serde(default)]
    pub shutdown: ShutdownView,
}

/// The stop sequence: /ready says 503 at once; everything is served for
/// `propagation_secs` (`drain_delay`) while endpoints notice; then listeners
/// close and connections get `connections_secs` (`shutdown_grace`) to finish.
/// With `drain_budget`, the two are its split, and `margin_secs` is what it
/// keeps before a hard stop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShutdownView {
    pub propagation_secs: f64,
    pub connections_secs: f64,
    pub budget_secs: Option<f64>,
    pub margin_secs: Option<f64>,
}

/// The config generation and the reload counters (`GET /api/reload`).
pub fn reload_view(shared: &Shared) -> ConfigView {
    let r = shared.reloads.lock().unwrap_or_else(|e| e.into_inner());
    let g = &shared.config.load().global;
    ConfigView {
        generation: shared.plane.snapshot.load().generation,
        reloads_ok: r.ok,
        reloads_failed: r.failed,
        last_reload: r.last.clone(),
        shutdown: ShutdownView {
            propagation_secs: g.drain_delay.as_secs_f64(),
            connections_secs: g.shutdown_grace.as_secs_f64(),
            budget_secs: g.drain_budget.map(|(b, _)| b.as_secs_f64()),
            margin_secs: g.drain_budget.map(|(_, m)| m.as_secs_f64()),
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerView {
    pub name: String,
    pub mode: String,
    pub pool: String,
    pub active: u64,
    pub total: u64,
    /// Switched to read-only by an operator.
    #[serde(default)]
    pub read_only_manual: bool,
    /// Refusing writes now (by hand, or the last write it saw was refused
    /// because a pool of read_only_when had no server).
    #[serde(default)]
    pub read_only: bool,
    /// Writes refused in read-only mode.
    #[serde(default)]
    pub read_only_refused: u64,
    /// Connections refused for their PROXY header, by reason (malformed,
    /// untrusted, missing, timeout, closed); empty where the listener takes none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub proxy_protocol_refused: std::collections::BTreeMap<String, u64>,
    /// Responses its clients got (HTTP; the servers' and the proxy's own),
    /// by status class; empty for a TCP listener.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Requests answered by a `deny` rule; a tcp listener's connections no
    /// route took (a listener without a pool).
    #[serde(default)]
    pub denied: u64,
    /// Requests answered by a `redirect` rule.
    #[serde(default)]
    pub redirected: u64,
    /// Requests answered by a `respond` rule.
    #[serde(default)]
    pub responded: u64,
    /// Requests refused by a rate limit or quota (429).
    #[serde(default)]
    pub rate_limited: u64,
    /// Requests refused for what the client sent (answered 400, 431 or 408
    /// by the proxy itself), by reason (malformed_head, head_too_large,
    /// head_timeout, malformed_body, body_timeout); empty for a TCP listener.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub request_errors: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub balance: String,
    pub servers: Vec<ServerView>,
    pub eligible: usize,
    pub queue: u32,
    /// The queue by priority class, highest first; empty for a pool without
    /// `max_connections_per_server` (nothing ever queues there).
    #[serde(default)]
    pub priority: Vec<ClassView>,
    pub active: u64,
    pub requests_total: u64,
    /// Requests per second over the last second.
    pub rate: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub response_errors: u64,
    /// Requests that failed for good.
    pub errors: u64,
    pub retries: u64,
    /// DNS answers applied to the members in place, and by building the pool
    /// anew (see `Snapshot::refresh_pool`).
    #[serde(default)]
    pub dns_refreshes_in_place: u64,
    #[serde(default)]
    pub dns_refreshes_rebuilt: u64,
    pub health_checked: bool,
    /// The pool-level circuit: "closed", "open", "half_open"; absent without
    /// `[pool.circuit]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub circuit: Option<String>,
    /// Requests per second, one sample a second, oldest first.
    pub history: Vec<f64>,
}

/// One priority class of a pool's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassView {
    pub class: String,
    /// Waiting now.
    pub queued: u32,
    /// Got a server slot (immediately or after waiting).
    pub admitted: u64,
    /// Answered 503 because the pool was saturated (`shed_after`).
    pub shed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    pub ok: bool,
    pub detail: String,
    pub duration_ms: f64,
    pub age_secs: f64,
    pub at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerView {
    /// How the API addresses it: `name` from the config, else `ip:port`.
    pub id: String,
    pub address: String,
    /// "static" or the DNS name it was found under.
    pub source: String,
    /// UP, DOWN, UNKNOWN, DRAIN, MAINT, EJECTED, BACKUP.
    pub status: String,
    pub status_secs: u64,
    pub health: String,
    pub admin: String,
    pub breaker: String,
    pub backup: bool,
    pub weight: u32,
    /// The weight now, lower while slow start ramps it up.
    pub effective_weight: u32,
    pub active: u32,
    pub max_active: u32,
    /// Requests waiting for this server in particular: their persistence
    /// cookie names it and it is full (HAProxy's qcur of a server).
    #[serde(default)]
    pub queued: u32,
    /// max_connections_per_server (0 = no limit).
    pub limit: u32,
    pub total: u64,
    pub rate: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub response_errors: u64,
    pub retries: u64,
    /// Its HTTP responses by status class (1xx to 5xx, other); HAProxy's
    /// hrsp_*.
    #[serde(default)]
    pub responses: std::collections::BTreeMap<String, u64>,
    pub checks_failed: u64,
    pub consecutive_failures: u32,
    pub went_down: u64,
    /// Flips to UP, from UNKNOWN or DOWN.
    #[serde(default)]
    pub went_up: u64,
    pub downtime_secs: u64,
    pub ejections: u64,
    pub last_check: Option<CheckView>,
    /// The last failed connect or response here (traffic, not checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsView {
    pub pool: String,
    pub name: String,
    pub members: Vec<String>,
    pub ttl_secs: Option<f64>,
    pub last_lookup: Option<String>,
    pub last_change: Option<String>,
    pub lookups: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

pub fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
        Balance::RandomTwo => "random_two",
        Balance::Hash => "hash",
        Balance::First => "first",
    }
}

/// Builds the view. `rates` may be empty (first second).
pub fn build(shared: &Shared, rates: &Mutex<crate::rates::Rates>) -> Stats {
    let now = clock::now_ms();
    let snap = shared.plane.snapshot.load();
    let rates = rates.lock().unwrap_or_else(|e| e.into_inner());
    let pools: Vec<PoolView> = snap
        .pools
        .iter()
        .map(|p| pool_view(p, now, &rates))
        .collect();
    let listeners = snap
        .listeners
        .iter()
        .map(|l| (l, &l.shared))
        .map(|(l, st)| ListenerView {
            name: l.name.to_string(),
            mode: format!("{:?}", l.mode).to_lowercase(),
            // "-": a tcp listener without a pool (what no route takes is closed)
            pool: l
                .router
                .default_pool
                .and_then(|i| snap.pools.get(i))
                .map_or_else(|| "-".to_string(), |p| p.name.to_string()),
            active: st.active.load(Ordering::Relaxed),
            total: st.total.load(Ordering::Relaxed),
            read_only_manual: st.manual_read_only.load(Ordering::Relaxed),
            read_only: st.manual_read_only.load(Ordering::Relaxed)
                || st.read_only_now.load(Ordering::Relaxed),
            read_only_refused: st.read_only_refused.load(Ordering::Relaxed),
            proxy_protocol_refused: match l.proxy_protocol {
                None => Default::default(),
                Some(_) => crate::proxy_protocol::PpError::REASONS
                    .iter()
                    .zip(&st.proxy_refused)
                    .map(|(r, n)| (r.to_string(), n.load(Ordering::Relaxed)))
                    .collect(),
            },
            responses: match l.mode {
                crate::config::Mode::Http => st.responses.by_class(),
                _ => Default::default(),
            },
            denied: st.denied.load(Ordering::Relaxed),
            redirected: st.redirected.load(Ordering::Relaxed),
            responded: st.responded.load(Ordering::Relaxed),
            rate_limited: st.rate_limited.load(Ordering::Relaxed),
            request_errors: match l.mode {
                crate::config::Mode::Http => crate::accesslog::RequestFault::REASONS
                    .iter()
                    .zip(&st.request_errors)
                    .map(|(r, n)| (r.to_string(), n.load(Ordering::Relaxed)))
                    .collect(),
                _ => Default::default(),
            },
        })
        .collect();
    let dns = shared
        .dns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|d| DnsView {
            pool: d.pool.clone(),
            name: d.name.clone(),
            members: d.members.iter().map(|m| m.addr.to_string()).collect(),
            ttl_secs: d.ttl.map(|t| t.as_secs_f64()),
            last_lookup: d.last_lookup.map(crate::clock::rfc3339),
            last_change: d.last_change.map(crate::clock::rfc3339),
            lookups: d.lookups,
            errors: d.errors,
            last_error: d.last_error.clone(),
        })
        .collect();
    Stats {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        now: rfc3339_now(),
        uptime_secs: shared.started.elapsed().as_secs(),
        config_file: shared.config_path.as_ref().map(|p| p.display().to_string()),
        started_at: crate::clock::rfc3339(SystemTime::now() - shared.started.elapsed()),
        ready: shared.plane.is_ready(),
        phase: shared.phase().as_str().to_string(),
        ha: shared.ha_status(),
        config: reload_view(shared),
        listeners,
        pools,
        dns,
    }
}

fn pool_view(p: &Pool, now: u64, rates: &crate::rates::Rates) -> PoolView {
    let servers: Vec<ServerView> = (0..p.servers.len())
        .map(|i| server_view(p, i, now, rates))
        .collect();
    let sum = |f: fn(&ServerView) -> u64| servers.iter().map(f).sum::<u64>();
    PoolView {
        name: p.name.to_string(),
        balance: balance_name(p.balance).to_string(),
        eligible: p.eligible_count(),
        queue: p.shared.queue.waiting(),
        priority: if p.max_conn_per_server == 0 {
            Vec::new()
        } else {
            crate::rules::Priority::ALL
                .iter()
                .map(|&c| {
                    let st = p.shared.queue.stats(c);
                    ClassView {
                        class: c.name().to_string(),
                        queued: st.queued,
                        admitted: st.admitted,
                        shed: st.shed,
                    }
                })
                .collect()
        },
        active: servers.iter().map(|s| u64::from(s.active)).sum(),
        requests_total: sum(|s| s.total),
        rate: servers.iter().map(|s| s.rate).sum(),
        bytes_in: sum(|s| s.bytes_in),
        bytes_out: sum(|s| s.bytes_out),
        connect_errors: sum(|s| s.connect_errors),
        response_errors: sum(|s| s.response_errors),
        errors: p.shared.errors.load(Ordering::Relaxed),
        retries: p.shared.retries.load(Ordering::Relaxed),
        dns_refreshes_in_place: p.shared.dns_in_place.load(Ordering::Relaxed),
        dns_refreshes_rebuilt: p.shared.dns_rebuilt.load(Ordering::Relaxed),
        health_checked: p.health.is_some(),
        circuit: p
            .circuit
            .map(|_| p.shared.circuit.state().as_str().to_string()),
        history: rates
            .history(&p.name)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default(),
        servers,
    }
}

fn server_view(p: &Pool, i: usize, now: u64, rates: &crate::rates::Rates) -> ServerView {
    let s = &p.servers[i];
    let st = &s.state;
    let effective = p.current_weight(i, now);
    let last_check = st.checks.last.load_full().map(|c| CheckView {
        ok: c.ok,
        detail: c.detail.clone(),
        duration_ms: c.duration.as_secs_f64() * 1000.0,
        age_secs: c.at.elapsed().unwrap_or_default().as_secs_f64(),
        at: c
            .at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    });
    ServerView {
        id: s.id.to_string(),
        address: s.addr.to_string(),
        source: s.source.as_deref().unwrap_or("static").to_string(),
        status: server_status(p, i, now).to_string(),
        status_secs: now.saturating_sub(st.status_since.load(Ordering::Relaxed)) / 1000,
        health: st.health().as_str().to_string(),
        admin: st.admin().as_str().to_string(),
        breaker: match st.breaker.state() {
            crate::pool::breaker::BreakerState::Closed => "closed",
            crate::pool::breaker::BreakerState::Open => "open",
            crate::pool::breaker::BreakerState::HalfOpen => "half-open",
        }
        .to_string(),
        backup: s.backup,
        weight: s.weight,
        effective_weight: effective,
        active: st.traffic.active.load(Ordering::Relaxed),
        max_active: st.traffic.max_active.load(Ordering::Relaxed),
        queued: st.traffic.pinned.load(Ordering::Relaxed),
        limit: p.max_conn_per_server,
        total: st.traffic.total.load(Ordering::Relaxed),
        rate: rates.server(st.uid),
        bytes_in: st.traffic.bytes_in.load(Ordering::Relaxed),
        bytes_out: st.traffic.bytes_out.load(Ordering::Relaxed),
        connect_errors: st.traffic.connect_errors.load(Ordering::Relaxed),
        response_errors: st.traffic.response_errors.load(Ordering::Relaxed),
        retries: st.traffic.retries.load(Ordering::Relaxed),
        responses: st.traffic.responses.by_class(),
        checks_failed: st.checks.failed.load(Ordering::Relaxed),
        consecutive_failures: st.checks.fail_streak.load(Ordering::Relaxed),
        went_down: st.went_down.load(Ordering::Relaxed),
        went_up: st.went_up.load(Ordering::Relaxed),
        downtime_secs: st.downtime(now).as_secs(),
        ejections: st.breaker.ejections.load(Ordering::Relaxed),
        last_check,
        last_error: st
            .traffic
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, error)| ErrorView {
                error: error.clone(),
                at: *at,
            }),
    }
}

/// `GET /api/health/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSummary {
    pub total: usize,
    pub online: usize,
    pub offline: usize,
    pub degraded: usize,
    pub pools: Vec<PoolHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolHealth {
    pub pool: String,
    pub total: usize,
    pub online: usize,
    pub offline: usize,
    pub degraded: usize,
    pub servers: Vec<ServerHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerHealth {
    pub server: String,
    pub address: String,
    pub status: String,
    pub consecutive_failures: u32,
    pub last_check: Option<u64>,
    pub last_check_ok: Option<bool>,
    pub response_time_ms: Option<f64>,
    pub detail: Option<String>,
}

/// online = takes traffic; offline = DOWN, UNKNOWN or MAINT; degraded = healthy but
/// held back (DRAIN, EJECTED).
pub fn health_summary(stats: &Stats) -> HealthSummary {
    let mut pools = Vec::new();
    for p in &stats.pools {
        let mut ph = PoolHealth {
            pool: p.name.clone(),
            total: p.servers.len(),
            online: 0,
            offline: 0,
            degraded: 0,
            servers: Vec::new(),
        };
        for s in &p.servers {
            match s.status.as_str() {
                "UP" | "BACKUP" => ph.online += 1,
                "DRAIN" | "EJECTED" => ph.degraded += 1,
                _ => ph.offline += 1,
            }
            ph.servers.push(ServerHealth {
                server: s.id.clone(),
                address: s.address.clone(),
                status: s.status.clone(),
                consecutive_failures: s.consecutive_failures,
                last_check: s.last_check.as_ref().map(|c| c.at),
                last_check_ok: s.last_check.as_ref().map(|c| c.ok),
                response_time_ms: s.last_check.as_ref().map(|c| c.duration_ms),
                detail: s.last_check.as_ref().map(|c| c.detail.clone()),
            });
        }
        pools.push(ph);
    }
    HealthSummary {
        total: pools.iter().map(|p| p.total).sum(),
        online: pools.iter().map(|p| p.online).sum(),
        offline: pools.iter().map(|p| p.offline).sum(),
        degraded: pools.iter().map(|p| p.degraded).sum(),
        pools,
    }
}
