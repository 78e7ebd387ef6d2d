//! The validated configuration: what the user asked for, checked, in the types
//! the runtime is built from.

use super::file::{AccessLogFormat, Balance, HashKey, Mode, OnEmpty, PgRole, Prefer};
use super::limits::{CircuitConfig, RateLimitConfig, StoreConfig};
use crate::router::Route;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A validated configuration, ready to build a runtime snapshot from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub admin: Admin,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    /// `[[rate_limit]]`: rules refer to them by index.
    pub rate_limits: Vec<RateLimitConfig>,
    /// `[rate_limit_store]`: None, limits are local to this process.
    pub rate_limit_store: Option<StoreConfig>,
    pub resolver: ResolverConfig,
    pub ha: Option<HaConfig>,
    /// Things that are allowed but probably not meant; `rampart check` prints them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Worker threads, already resolved (`threads = 0` becomes the core count).
    pub threads: usize,
    /// Listening sockets are SO_REUSEPORT.
    pub reuse_port: bool,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub drain_delay: Duration,
    /// `drain_budget`, and the margin it keeps before a hard stop.
    pub drain_budget: Option<(Duration, Duration)>,
    pub access_log: AccessLogFormat,
    pub state_file: Option<PathBuf>,
    pub watch_config: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: SocketAddr,
    /// `token_env`: the variable that holds the bearer token.
    pub token_env: Option<String>,
    /// `read_auth`: (user, the variable that holds the password).
    pub read_auth_env: Option<(String, String)>,
    /// Bearer token for write endpoints (from `token_env`, filled in by
    /// `config::env`); None: loopback only.
    pub token: Option<String>,
    /// (user, password) for the read pages (the password filled in by `config::env`).
    pub read_auth: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub binds: Vec<SocketAddr>,
    pub mode: Mode,
    /// Index into `Config::pools`: the pool of what no route takes (None:
    /// a tcp listener with routes closes such connections).
    pub pool: Option<usize>,
    /// 0 = only the global limit applies.
    pub max_connections: usize,
    pub request_header_timeout: Duration,
    /// None: idle connections are never parked.
    pub park_idle_after: Option<Duration>,
    pub client_timeout: Duration,
    /// `max_request_body` (None: no limit).
    pub max_request_body: Option<u64>,
    /// `client_ip_header`, lowercase (None: none).
    pub client_ip_header: Option<http::HeaderName>,
    /// `client_ip_from` (None: the connection's client is each request's).
    pub client_ip_from: Option<std::sync::Arc<crate::forwarded::ClientIpFrom>>,
    /// `compression` (None: answers go as the servers sent them).
    pub compression: Option<std::sync::Arc<Compression>>,
    /// `error_pages`, its own over `[global]`'s.
    pub error_pages: std::sync::Arc<ErrorPages>,
    /// Pools are indices into `Config::pools`.
    pub routes: Vec<Route>,
    /// `[[listener.rule]]`, compiled (evaluated before the routes).
    pub rules: std::sync::Arc<crate::rules::RuleSet>,
    /// `read_only_when` (None: only an operator's switch makes it read-only).
    pub read_only: Option<crate::rules::ReadOnly>,
    /// PROXY protocol headers accepted (None: off).
    pub proxy_protocol: Option<crate::proxy_protocol::Accept>,
    /// TLS terminated here.
    pub tls: Option<crate::tls::ListenerTls>,
    /// HTTP/2 server limits.
    pub http2: Http2Config,
}

/// `[listener.http2]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Config {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_frame_size: u32,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    /// None: no pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// None: never.
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    pub max_connections_per_server: u32,
    pub queue_timeout: Duration,
    /// `shed_after`: priority shedding (None: every class waits up to queue_timeout).
    pub shed_after: Option<Duration>,
    /// `max_grpc_timeout` (None: `grpc-timeout` not read; zero: no cap).
    pub max_grpc_timeout: Option<Duration>,
    /// None: sized by demand (`upstream::idle`).
    pub max_idle_per_server: Option<usize>,
    pub keepalive_timeout: Duration,
    pub tunnel_timeout: Duration,
    pub health: Option<HealthConfig>,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    pub slow_start: Duration,
    pub servers: Vec<ServerConfig>,
    /// A PROXY protocol header first on every server connection.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// tcp mode: splice(2) bulk data between plain TCP sockets.
    pub splice: bool,
    /// TLS to the servers.
    pub tls: Option<crate::tls::PoolTls>,
    /// What the servers speak.
    pub protocol: Protocol,
    /// The HTTP/2 client's settings (protocol = "h2").
    pub http2: PoolHttp2,
    /// `[pool.circuit]`: the pool-level circuit (None: off).
    pub circuit: Option<CircuitConfig>,
    /// `read_only_when` for requests routed here (None: off).
    pub read_only: Option<crate::rules::ReadOnly>,
    /// `[pool.cookie]`: persistence by a cookie (None: off).
    pub cookie: Option<std::sync::Arc<CookieConfig>>,
}

/// `[pool.cookie]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub name: String,
    /// Hashed into each server's value (None: the address alone).
    pub key: Option<String>,
    /// Taken out of the requests the servers get.
    pub indirect: bool,
    /// `Cache-Control: private` on a response that sets it.
    pub nocache: bool,
    /// What follows the value in `Set-Cookie` (`; Path=/; HttpOnly`).
    pub attributes: String,
    /// The values written for static servers (`[[pool.server]] cookie`).
    pub values: Vec<(SocketAddr, String)>,
}

/// What a pool's servers speak (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2: h2c with prior knowledge, or h2 by ALPN over `[pool.tls]`.
    H2,
}

/// `[pool.http2]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHttp2 {
    pub max_concurrent_streams: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    /// PING a connection silent this long (None: no PINGs) ...
    pub keepalive_interval: Option<Duration>,
    /// ... and end it when nothing comes back within this long.
    pub keepalive_timeout: Duration,
}

/// The shared keys, or no authentication at all (`auth = "none"`).
#[derive(Clone, PartialEq, Eq)]
pub enum HaKey {
    Hmac {
        /// `auth_key_file`: signs every heartbeat, and is tried first on receipt.
        key: Vec<u8>,
        /// `auth_previous_key_file`: also accepted on receipt, never used to
        /// sign (a key rotation: the peer may still sign with it).
        previous: Option<Vec<u8>>,
    },
    None,
}

impl std::fmt::Debug for HaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaKey::Hmac { previous: None, .. } => f.write_str("HaKey::Hmac(..)"),
            HaKey::Hmac {
                previous: Some(_), ..
            } => f.write_str("HaKey::Hmac(.., previous: ..)"),
            HaKey::None => f.write_str("HaKey::None"),
        }
    }
}

impl HaKey {
    /// The HMAC key that signs, None for `auth = "none"`.
    pub fn hmac(&self) -> Option<&[u8]> {
        match self {
            HaKey::Hmac { key, .. } => Some(key),
            HaKey::None => None,
        }
    }

    /// The key that is also accepted (`auth_previous_key_file`), if any.
    pub fn previous(&self) -> Option<&[u8]> {
        match self {
            HaKey::Hmac { previous, .. } => previous.as_deref(),
            HaKey::None => None,
        }
    }
}

/// `[ha] auth_key_grace`'s default: how long after a reload that changed
/// `auth_key_file` the key it replaced is still accepted.
pub const AUTH_KEY_GRACE: Duration = Duration::from_secs(60);

/// The longest `[ha] auth_key_grace`: a grace is for reloading the nodes one
/// after the other, and whoever holds the replaced key can forge heartbeats
/// meanwhile.
pub const AUTH_KEY_GRACE_MAX: Duration = Duration::from_secs(3600);

/// The longest `node_id`: the heartbeat carries it in a fixed field of this size
/// (`ha::wire::NODE_ID_LEN`, checked equal there).
pub const NODE_ID_MAX: usize = 32;

/// `[ha]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    pub interface: String,
    /// (address, prefix length)
    pub vips: Vec<(std::net::IpAddr, u8)>,
    pub node_id: String,
    pub priority: u8,
    pub bind: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub key: HaKey,
    /// `auth_key_grace`: how long after a reload that changed the signing key
    /// the key it replaced is still accepted (zero: not at all).
    pub key_grace: Duration,
    pub track: Vec<Track>,
    pub notify: Option<PathBuf>,
}

/// What an HA node watches; a failure puts it in FAULT (and releases the VIP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Track {
    /// The proxy's own readiness (/ready).
    Ready,
    /// A pool with at least one eligible server (by name).
    Pool(String),
}

/// `[resolver]`, with defaults when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverConfig {
    /// None: /etc/resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    pub timeout: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub hold_on_failure: Duration,
    pub on_empty: OnEmpty,
    pub prefer: Prefer,
}

/// Where a server entry's members come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// `127.0.0.2:8000`: one member.
    Static(SocketAddr),
    /// A name DNS discovery resolves, again at each TTL.
    Dns(DnsName),
}

/// A server entry that DNS discovery resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsName {
    /// `backend.default.svc.cluster.local:8000`: one member per A/AAAA record.
    Host { host: String, port: u16 },
    /// `_http._tcp.api.default.svc.cluster.local`: one member per SRV target.
    Srv { name: String },
}

impl ServerAddr {
    /// Parses a `[[pool.server]] address`.
    pub fn parse(s: &str) -> Result<ServerAddr, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(format!("invalid port 0 in {s:?}"));
            }
            return Ok(ServerAddr::Static(a));
        }
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if s.starts_with('_') {
            let name = s.trim_end_matches('.');
            if s.contains(':') {
                return Err(format!(
                    "{s:?}: an SRV name (leading underscore) takes no port: the SRV records give it"
                ));
            }
            if !valid_name(name) {
                return Err(format!("{s:?} is not a valid DNS name"));
            }
            return Ok(ServerAddr::Dns(DnsName::Srv {
                name: s.to_string(),
            }));
        }
        match s.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("invalid port in {s:?}: write NAME:PORT or IP:PORT"))?;
                if port == 0 {
                    return Err(format!("invalid port 0 in {s:?}"));
                }
                if !valid_name(host.trim_end_matches('.')) || host.parse::<std::net::IpAddr>().is_ok() {
                    return Err(format!("{s:?} is neither IP:PORT nor NAME:PORT"));
                }
                Ok(ServerAddr::Dns(DnsName::Host {
                    host: host.to_string(),
                    port,
                }))
            }
            None => Err(format!(
                "invalid address {s:?}: write IP:PORT (\"127.0.0.2:8000\", \"[::1]:8000\"), NAME:PORT, or an SRV name (\"_http._tcp.api.example.com\")"
            )),
        }
    }

    pub fn is_dns(&self) -> bool {
        matches!(self, ServerAddr::Dns(_))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Static(a) => write!(f, "{a}"),
            ServerAddr::Dns(n) => n.fmt(f),
        }
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsName::Host { host, port } => write!(f, "{host}:{port}"),
            DnsName::Srv { name } => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub address: ServerAddr,
    pub name: Option<String>,
    pub weight: u32,
    pub backup: bool,
}

/// Active health checking of every server of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Interval while a server is changing state (and before its first result).
    pub fast_interval: Duration,
    /// Servers start UP instead of UNKNOWN (no traffic until the first success).
    pub initial_up: bool,
    pub check: CheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Tcp,
    Http {
        method: http::Method,
        path: String,
        host: Option<String>,
        expect_status: Vec<(u16, u16)>,
        expect_body: Option<String>,
        /// Over HTTP/2 (the pool's protocol is "h2").
        h2: bool,
    },
    Postgres {
        user: String,
        password: Option<String>,
        database: String,
        role: PgRole,
        max_replica_lag: Duration,
        /// TLS (`ssl`, libpq's sslmode); None: `disable`. Boxed: the CA and
        /// CRL it keeps would make every check kind this large.
        ssl: Option<Box<crate::tls::PgTls>>,
    },
    /// grpc.health.v1.Health/Check over HTTP/2; SERVING is up.
    Grpc {
        service: String,
    },
}

/// The per-server circuit breaker (passive checks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// 0 = breaker off.
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejected_percent: u32,
    pub on_5xx: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub retries: u32,
    pub buffer: u64,
    pub non_idempotent: bool,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    /// 5xx statuses that are retried on another server.
    pub on_status: Vec<u16>,
    pub budget_percent: u32,
}

pub const MAX_WEIGHT: u32 = 256;
/// The most connections a limit may allow (far above what one process can hold).
pub const MAX_CONNECTIONS: usize = 10_000_000;

impl Config {
    /// The certificate, key and CA files the config reads (a change to one is a
    /// reason to reload).
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for l in &self.listeners {
            if let Some(t) = &l.tls {
                for c in &t.certs {
                    v.push(c.path.clone());
                    v.extend(c.key_path.clone());
                }
                v.extend(t.client_ca.as_ref().map(|c| c.path.clone()));
                v.extend(t.client_crl.as_ref().map(|c| c.path.clone()));
            }
        }
        for p in &self.pools {
            if let Some(t) = &p.tls {
                v.extend(
                    t.ca.as_ref()
                        .filter(|c| c.from_file())
                        .map(|c| c.path.clone()),
                );
                v.extend(t.crl.as_ref().map(|c| c.path.clone()));
                if let Some(c) = &t.cert {
                    v.push(c.path.clone());
                    v.extend(c.key_path.clone());
                }
            }
            // a postgres check's own `ca` (the rest is [pool.tls]'s, above)
            if let Some(HealthConfig {
                check: CheckKind::Postgres { ssl: Some(s), .. },
                ..
            }) = &p.health
            {
                v.extend(
                    s.tls
                        .ca
                        .as_ref()
                        .filter(|c| c.from_file())
                        .map(|c| c.path.clone()),
                );
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

impl Config {
    /// A one-line summary for `rampart check`.
    pub fn summary(&self) -> String {
        let servers: usize = self.pools.iter().map(|p| p.servers.len()).sum();
        format!(
            "{} listener(s), {} pool(s), {} server(s), {} thread(s)",
            self.listeners.len(),
            self.pools.len(),
            servers,
            self.global.threads
        )
    }
}

/// `[listener.compression]`: servers' answers gzipped for the clients that
/// accept it (nginx's `gzip`, HAProxy's `compression algo gzip`).
#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    /// Media types, lower case: `text/html`, `text/*`, or `*` (any).
    pub types: Vec<String>,
    /// An answer whose Content-Length is below this is sent as it is.
    pub min_length: u64,
    /// zlib's level, 1 (fastest) to 9.
    pub level: u32,
}

/// A media type `compression.types` takes (lower case): `type/subtype`,
/// `type/*` or `*`.
pub fn media_type_ok(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    t == "*"
        || t.split_once('/')
            .is_some_and(|(a, b)| token(a) && (b == "*" || token(b)))
}

/// `error_pages`: what rampart's own error answers carry instead of its short
/// plain-text bodies (HAProxy's `errorfile`), by status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorPages(pub Vec<ErrorPage>);

/// One status's page: the fields it sets and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPage {
    pub status: http::StatusCode,
    /// Content-Type and whatever else the file's head says (not its framing
    /// or hop-by-hop fields, which the answer sets itself).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: bytes::Bytes,
}

impl ErrorPages {
    pub fn get(&self, status: http::StatusCode) -> Option<&ErrorPage> {
        self.0.iter().find(|p| p.status == status)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These, and `base`'s pages for the statuses these have not.
    pub fn over(mut self, base: &ErrorPages) -> ErrorPages {
        for p in &base.0 {
            if self.get(p.status).is_none() {
                self.0.push(p.clone());
            }
        }
        self
    }
}
