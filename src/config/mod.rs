//! Configuration: `load(path)` reads TOML into the serde structs of `file`, then
//! validates them into the runtime types below. Every error names the file, the line
//! and the key (`listener[0].route[1].pool`) and says what is wrong.

pub mod file;
mod limits;
mod rules;
mod tls;

use crate::router::{HostMatch, Route};
pub use file::{AccessLogFormat, Balance, HashKey, Mode, OnEmpty, PgRole, Prefer};
use file::{FileConfig, HealthFile, HealthKind, InitialState};
pub use limits::{CircuitConfig, KeyPart, RateLimitConfig, StoreConfig, Tier};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// Bearer token for write endpoints (from `token_env`); None: loopback only.
    pub token: Option<String>,
    /// (user, password) for the read pages.
    pub read_auth: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub binds: Vec<SocketAddr>,
    pub mode: Mode,
    /// Index into `Config::pools`.
    pub pool: usize,
    /// 0 = only the global limit applies.
    pub max_connections: usize,
    pub request_header_timeout: Duration,
    pub client_timeout: Duration,
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

/// The largest flow-control window (RFC 9113 6.9.1).
const WINDOW_MAX: u64 = (1 << 31) - 1;

/// `v` within `lo..=hi`, or a problem named `at.key` (and `v` clamped into it).
fn bounded(
    at: &KeyPath,
    p: &mut Problems<'_>,
    key: &'static str,
    v: u64,
    lo: u64,
    hi: u64,
    what: &str,
) -> u32 {
    if v < lo || v > hi {
        p.add(
            &at.key(key),
            format!("must be between {lo} and {hi} {what}"),
        );
    }
    v.clamp(lo, hi) as u32
}

/// Checks `[pool.http2]` against RFC 9113's bounds.
fn validate_pool_http2(h: &file::PoolHttp2File, at: &KeyPath, p: &mut Problems<'_>) -> PoolHttp2 {
    let mut check = |key: &'static str, v: u64, lo: u64, hi: u64, what: &str| {
        bounded(at, p, key, v, lo, hi, what)
    };
    PoolHttp2 {
        max_concurrent_streams: check(
            "max_concurrent_streams",
            u64::from(h.max_concurrent_streams),
            1,
            100_000,
            "",
        ),
        initial_stream_window_size: check(
            "initial_stream_window_size",
            h.initial_stream_window_size.0,
            1,
            WINDOW_MAX,
            "bytes (RFC 9113 6.9.2)",
        ),
        initial_connection_window_size: check(
            "initial_connection_window_size",
            h.initial_connection_window_size.0,
            65_535,
            WINDOW_MAX,
            "bytes (RFC 9113 6.9.2)",
        ),
    }
}

/// Checks `[listener.http2]` against RFC 9113's bounds.
fn validate_http2(h: &file::Http2File, at: &KeyPath, p: &mut Problems<'_>) -> Http2Config {
    let mut check = |key: &'static str, v: u64, lo: u64, hi: u64, what: &str| {
        bounded(at, p, key, v, lo, hi, what)
    };
    let max_concurrent_streams = check(
        "max_concurrent_streams",
        u64::from(h.max_concurrent_streams),
        1,
        u64::from(u32::MAX),
        "",
    );
    let max_header_list_size = check(
        "max_header_list_size",
        h.max_header_list_size.0,
        1024,
        16 << 20,
        "bytes",
    );
    let initial_stream_window_size = check(
        "initial_stream_window_size",
        h.initial_stream_window_size.0,
        1,
        WINDOW_MAX,
        "bytes (RFC 9113 6.9.2)",
    );
    let initial_connection_window_size = check(
        "initial_connection_window_size",
        h.initial_connection_window_size.0,
        65_535,
        WINDOW_MAX,
        "bytes (RFC 9113 6.9.2)",
    );
    let max_frame_size = check(
        "max_frame_size",
        h.max_frame_size.0,
        16_384,
        16_777_215,
        "bytes (RFC 9113 6.5.2)",
    );
    let opt = |d: Duration| (!d.is_zero()).then_some(d);
    Http2Config {
        max_concurrent_streams,
        max_header_list_size,
        initial_stream_window_size,
        initial_connection_window_size,
        max_frame_size,
        max_pending_accept_reset_streams: h.max_pending_accept_reset_streams,
        max_local_error_reset_streams: h.max_local_error_reset_streams,
        keepalive_interval: opt(h.keepalive_interval.0),
        keepalive_timeout: h.keepalive_timeout.0,
        idle_timeout: opt(h.idle_timeout.0),
    }
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
    pub max_idle_per_server: usize,
    pub keepalive_timeout: Duration,
    pub tunnel_timeout: Duration,
    pub health: Option<HealthConfig>,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    pub slow_start: Duration,
    pub servers: Vec<ServerConfig>,
    /// A PROXY protocol header first on every server connection.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
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
}

/// The shared key, or no authentication at all (`auth = "none"`).
#[derive(Clone, PartialEq, Eq)]
pub enum HaKey {
    Hmac(Vec<u8>),
    None,
}

impl std::fmt::Debug for HaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaKey::Hmac(_) => f.write_str("HaKey::Hmac(..)"),
            HaKey::None => f.write_str("HaKey::None"),
        }
    }
}

impl HaKey {
    /// The HMAC key, None for `auth = "none"`.
    pub fn hmac(&self) -> Option<&[u8]> {
        match self {
            HaKey::Hmac(k) => Some(k),
            HaKey::None => None,
        }
    }
}

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

/// One thing wrong with a config: where (line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string_in(file));
    }
    out
}

impl Problem {
    fn to_string_in(&self, file: &str) -> String {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => format!("{file}:{l}: {}: {}", self.key, self.message),
            (Some(l), true) => format!("{file}:{l}: {}", self.message),
            (None, false) => format!("{file}: {}: {}", self.key, self.message),
            (None, true) => format!("{file}: {}", self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_in("config"))
    }
}

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
            }
        }
        for p in &self.pools {
            if let Some(t) = &p.tls {
                v.extend(
                    t.ca.as_ref()
                        .filter(|c| c.from_file())
                        .map(|c| c.path.clone()),
                );
                if let Some(c) = &t.cert {
                    v.push(c.path.clone());
                    v.extend(c.key_path.clone());
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_in(&src, &path.display().to_string(), base)
}

/// Parses and validates config text; `file` is only used in messages. Relative
/// paths in it (certificates) are relative to the working directory.
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
    parse_in(src, file, Path::new("."))
}

/// As `parse`, with relative paths relative to `base` (the config file's folder).
pub fn parse_in(src: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    };
    let raw: FileConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        let key = e
            .span()
            .and_then(|s| key_at(src, s.start))
            .unwrap_or_default();
        invalid(vec![Problem {
            line,
            key,
            message: e.message().trim().to_string(),
        }])
    })?;
    validate(raw, src, base).map_err(invalid)
}

/// A path into the TOML document, e.g. `listener[0].route[1].pool`.
#[derive(Debug, Clone, Default)]
struct KeyPath(Vec<Seg>);

#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

impl KeyPath {
    fn key(&self, k: &'static str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        KeyPath(v)
    }
    fn index(&self, k: &'static str, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

struct Problems<'a> {
    src: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn new(src: &'a str) -> Self {
        Problems {
            src,
            doc: toml_edit::Document::parse(src).ok(),
            list: Vec::new(),
        }
    }

    fn add(&mut self, at: &KeyPath, message: impl Into<String>) {
        let line = self
            .doc
            .as_ref()
            .and_then(|d| locate(d, &at.0))
            .map(|off| line_of(self.src, off));
        self.list.push(Problem {
            line,
            key: at.to_string(),
            message: message.into(),
        });
    }
}

/// Byte offset of the deepest part of `path` that exists in the document.
fn locate(doc: &toml_edit::Document<&str>, path: &[Seg]) -> Option<usize> {
    enum Node<'n> {
        Item(&'n toml_edit::Item),
        Table(&'n toml_edit::Table),
        Value(&'n toml_edit::Value),
    }
    let mut node = Node::Table(doc.as_table());
    let mut found: Option<usize> = None;
    for seg in path {
        let next = match (seg, &node) {
            (Seg::Key(k), n) => {
                let table: Option<&dyn toml_edit::TableLike> = match n {
                    Node::Item(i) => i.as_table_like(),
                    Node::Table(t) => Some(*t),
                    Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
                };
                table.and_then(|t| t.get_key_value(k)).map(|(key, item)| {
                    (
                        key.span().or_else(|| item.span()).map(|s| s.start),
                        Node::Item(item),
                    )
                })
            }
            (Seg::Index(i), Node::Item(toml_edit::Item::ArrayOfTables(a))) => a
                .get(*i)
                .map(|t| (t.span().map(|s| s.start), Node::Table(t))),
            (Seg::Index(i), Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a))))
            | (Seg::Index(i), Node::Value(toml_edit::Value::Array(a))) => a
                .get(*i)
                .map(|v| (v.span().map(|s| s.start), Node::Value(v))),
            _ => None,
        };
        match next {
            Some((off, n)) => {
                found = off.or(found);
                node = n;
            }
            None => break,
        }
    }
    found
}

fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The bare key written at the start of the line holding `offset`, if any, so a
/// parse error can name it even when the parser's message does not.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let end = offset.min(src.len());
    let start = src[..end].rfind('\n').map_or(0, |i| i + 1);
    let line = src[start..].lines().next()?;
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'))
    .then(|| k.to_string())
}

fn validate(raw: FileConfig, src: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::new(src);
    let mut warnings = Vec::new();
    let root = KeyPath::default();

    // [global]
    let g = &raw.global;
    let gpath = root.key("global");
    if g.threads > 1024 {
        p.add(
            &gpath.key("threads"),
            "must be between 0 (one per core) and 1024",
        );
    }
    if g.max_connections == 0 || g.max_connections > MAX_CONNECTIONS {
        p.add(
            &gpath.key("max_connections"),
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        );
    }
    let threads = match g.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let drain = match drain_split(
        g.drain_budget.map(|d| d.0),
        g.drain_delay.map(|d| d.0),
        g.shutdown_grace.map(|d| d.0),
    ) {
        Ok(d) => d,
        Err((key, e)) => {
            p.add(&gpath.key(key), e);
            DrainSplit::default()
        }
    };
    if let Some(w) = &drain.warning {
        warnings.push(w.clone());
    }

    // [[pool]]
    let mut pool_index: HashMap<&str, usize> = HashMap::new();
    // every pool by name, for keys that name other pools (read_only_when)
    let pool_names: HashMap<&str, usize> = raw
        .pools
        .iter()
        .enumerate()
        .map(|(i, pf)| (pf.name.as_str(), i))
        .collect();
    let mut pools = Vec::with_capacity(raw.pools.len());
    for (i, pf) in raw.pools.iter().enumerate() {
        let at = root.index("pool", i);
        if pf.name.trim().is_empty() {
            p.add(&at.key("name"), "must not be empty");
        } else if pool_index.insert(pf.name.as_str(), i).is_some() {
            p.add(
                &at.key("name"),
                format!("a pool named {:?} is already defined", pf.name),
            );
        }
        let hash_key = match (&pf.hash_key, pf.balance) {
            (None, _) => HashKey::ClientIp,
            (Some(k), Balance::Hash) => k.clone(),
            (Some(_), _) => {
                p.add(&at.key("hash_key"), "is only used with balance = \"hash\"");
                HashKey::ClientIp
            }
        };
        for (key, d) in [
            ("connect_timeout", pf.connect_timeout),
            ("server_timeout", pf.server_timeout),
            ("tunnel_timeout", pf.tunnel_timeout),
        ] {
            if d.0.is_zero() {
                p.add(&at.key(key), "must be greater than zero");
            }
        }
        if !pf.servers.is_empty() && pf.servers.iter().all(|s| s.weight == 0) {
            warnings.push(format!(
                "pool {:?}: every server has weight 0, so the pool never serves",
                pf.name
            ));
        }
        if !pf.servers.is_empty() && pf.servers.iter().all(|s| s.backup) {
            warnings.push(format!(
                "pool {:?}: every server is a backup; they are used as normal servers",
                pf.name
            ));
        }
        if pf.servers.is_empty() {
            p.add(&at, format!("pool {:?} has no [[pool.server]]", pf.name));
        }
        let mut health = pf
            .health
            .as_ref()
            .and_then(|h| validate_health(h, &at.key("health"), &mut p));
        let breaker = &pf.breaker;
        let bat = at.key("breaker");
        if breaker.max_ejected_percent > 100 {
            p.add(&bat.key("max_ejected_percent"), "must be between 0 and 100");
        }
        if breaker.consecutive_failures > 0 && breaker.ejection_time.0.is_zero() {
            p.add(&bat.key("ejection_time"), "must be greater than zero");
        }
        if breaker.max_ejection_time.0 < breaker.ejection_time.0 {
            p.add(
                &bat.key("max_ejection_time"),
                "must not be shorter than ejection_time",
            );
        }
        let mut retry = RetryConfig {
            retries: pf.retries,
            buffer: pf.retry_buffer.0,
            non_idempotent: pf.retry_non_idempotent,
            on_connect_failure: false,
            on_reset: false,
            on_timeout: false,
            on_status: Vec::new(),
            budget_percent: pf.retry_budget_percent,
        };
        if pf.retries > 10 {
            p.add(&at.key("retries"), "must be between 0 and 10");
        }
        if pf.retry_budget_percent > 100 {
            p.add(&at.key("retry_budget_percent"), "must be between 0 and 100");
        }
        for (k, cond) in pf.retry_on.iter().enumerate() {
            match cond.as_str() {
                "connect_failure" => retry.on_connect_failure = true,
                "reset" => retry.on_reset = true,
                "timeout" => retry.on_timeout = true,
                s => match s.parse::<u16>() {
                    Ok(code) if (500..=599).contains(&code) => retry.on_status.push(code),
                    _ => p.add(
                        &at.index("retry_on", k),
                        format!("unknown retry condition {s:?}: use \"connect_failure\", \"reset\", \"timeout\" or a status from 500 to 599"),
                    ),
                },
            }
        }
        let mut servers = Vec::with_capacity(pf.servers.len());
        let mut seen: HashMap<ServerAddr, usize> = HashMap::new();
        // how the API, metrics and CSV address a server: must be unique in the pool
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (j, sf) in pf.servers.iter().enumerate() {
            let id = sf.name.clone().unwrap_or_else(|| sf.address.clone());
            if let Some(first) = ids.insert(id.clone(), j) {
                p.add(
                    &at.index("server", j)
                        .key(if sf.name.is_some() { "name" } else { "address" }),
                    format!("{id:?} already names server {first} of pool {:?}", pf.name),
                );
            }
        }
        for (j, sf) in pf.servers.iter().enumerate() {
            let sat = at.index("server", j);
            if sf.weight > MAX_WEIGHT {
                p.add(
                    &sat.key("weight"),
                    format!("must be between 0 and {MAX_WEIGHT}, got {}", sf.weight),
                );
            }
            match ServerAddr::parse(&sf.address) {
                Ok(address) => {
                    if seen.insert(address.clone(), j).is_some() {
                        p.add(
                            &sat.key("address"),
                            format!("{address} is listed twice in pool {:?}", pf.name),
                        );
                    }
                    if address.is_dns() && sf.name.is_some() {
                        p.add(
                            &sat.key("name"),
                            "a DNS entry has one member per record; members are named by their ip:port",
                        );
                    }
                    servers.push(ServerConfig {
                        address,
                        name: sf.name.clone(),
                        weight: sf.weight,
                        backup: sf.backup,
                    });
                }
                Err(e) => p.add(&sat.key("address"), e),
            }
        }
        let send_proxy = match pf.send_proxy.as_deref() {
            None => None,
            Some("v1") => Some(crate::proxy_protocol::Version::V1),
            Some("v2") => Some(crate::proxy_protocol::Version::V2),
            Some(v) => {
                p.add(
                    &at.key("send_proxy"),
                    format!("unknown version {v:?}: use \"v1\" or \"v2\""),
                );
                None
            }
        };
        let protocol = match pf.protocol.as_deref() {
            None | Some("http1") | Some("http/1.1") => Protocol::Http1,
            Some("h2") => Protocol::H2,
            Some(v) => {
                p.add(
                    &at.key("protocol"),
                    format!("unknown protocol {v:?}: use \"http1\" or \"h2\""),
                );
                Protocol::Http1
            }
        };
        if protocol == Protocol::H2 && send_proxy.is_some() {
            p.add(
                &at.key("send_proxy"),
                "is not supported with protocol = \"h2\" (an HTTP/2 connection carries many clients' requests; a PROXY header names one)",
            );
        }
        if protocol != Protocol::H2 && pf.http2.is_some() {
            p.add(&at.key("http2"), "is only used with protocol = \"h2\"");
        }
        if protocol != Protocol::H2
            && pf
                .health
                .as_ref()
                .is_some_and(|h| h.kind == HealthKind::Grpc)
        {
            p.add(
                &at.key("health").key("kind"),
                "\"grpc\" checks speak HTTP/2: the pool needs protocol = \"h2\"",
            );
        }
        // an http check speaks what the servers speak
        if let Some(HealthConfig {
            check: CheckKind::Http { h2, .. },
            ..
        }) = &mut health
        {
            *h2 = protocol == Protocol::H2;
        }
        let http2 = validate_pool_http2(
            pf.http2.as_ref().unwrap_or(&Default::default()),
            &at.key("http2"),
            &mut p,
        );
        let circuit = pf.circuit.as_ref().and_then(|c| {
            let cat = at.key("circuit");
            let before = p.list.len();
            if !(1..=100).contains(&c.failure_rate) {
                p.add(
                    &cat.key("failure_rate"),
                    "must be a percentage from 1 to 100",
                );
            }
            if c.window.0 < Duration::from_secs(1) {
                p.add(&cat.key("window"), "must be at least 1s");
            }
            if c.min_requests == 0 {
                p.add(&cat.key("min_requests"), "must be at least 1");
            }
            if c.open_for.0.is_zero() {
                p.add(&cat.key("open_for"), "must be greater than zero");
            }
            (p.list.len() == before).then_some(CircuitConfig {
                failure_rate: c.failure_rate,
                window: c.window.0,
                min_requests: c.min_requests,
                open_for: c.open_for.0,
            })
        });
        if pf.shed_after.is_some() && pf.max_connections_per_server == 0 {
            p.add(
                &at.key("shed_after"),
                "shedding needs max_connections_per_server: without a connection limit the pool never saturates, nothing queues and nothing is shed",
            );
        }
        let alpn: &[&[u8]] = match protocol {
            Protocol::H2 => &[b"h2"],
            Protocol::Http1 => &[],
        };
        let tls = pf
            .tls
            .as_ref()
            .and_then(|t| tls::pool(t, &at.key("tls"), base, alpn, &mut p, &mut warnings));
        let read_only = rules::read_only(
            &pf.read_only_when,
            pf.read_only_status,
            pf.read_only_message.as_deref(),
            pf.read_only_retry_after.map(|d| d.0),
            &at,
            &pool_names,
            &mut p,
        );
        pools.push(PoolConfig {
            tls,
            protocol,
            http2,
            circuit,
            read_only,
            send_proxy,
            name: pf.name.clone(),
            balance: pf.balance,
            hash_key,
            connect_timeout: pf.connect_timeout.0,
            server_timeout: pf.server_timeout.0,
            max_connections_per_server: pf.max_connections_per_server,
            queue_timeout: pf.queue_timeout.0,
            shed_after: pf.shed_after.map(|d| d.0),
            max_idle_per_server: pf.max_idle_per_server,
            keepalive_timeout: pf.keepalive_timeout.0,
            tunnel_timeout: pf.tunnel_timeout.0,
            health,
            breaker: BreakerConfig {
                consecutive_failures: breaker.consecutive_failures,
                ejection_time: breaker.ejection_time.0,
                max_ejection_time: breaker.max_ejection_time.0,
                max_ejected_percent: breaker.max_ejected_percent,
                on_5xx: breaker.on_5xx,
            },
            retry,
            slow_start: pf.slow_start.0,
            servers,
        });
    }

    // [[rate_limit]]
    let rate_limits = rules::rate_limits(&raw.rate_limits, &raw.tiers, base, &root, &mut p);
    let limit_index: HashMap<&str, usize> = rate_limits
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();

    // [[listener]]
    if raw.listeners.is_empty() {
        p.add(
            &root.key("listener"),
            "no [[listener]] is defined: nothing would be served",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bound: Vec<(SocketAddr, String)> = vec![(raw.admin.bind.0, "admin.bind".to_string())];
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut used_pools = vec![false; pools.len()];
    for (i, lf) in raw.listeners.iter().enumerate() {
        let at = root.index("listener", i);
        if lf.name.trim().is_empty() {
            p.add(&at.key("name"), "must not be empty");
        } else if names.insert(lf.name.as_str(), i).is_some() {
            p.add(
                &at.key("name"),
                format!("a listener named {:?} is already defined", lf.name),
            );
        }
        if lf.max_connections > MAX_CONNECTIONS {
            p.add(
                &at.key("max_connections"),
                format!("must be between 0 (no limit of its own) and {MAX_CONNECTIONS}"),
            );
        }
        if lf.request_header_timeout.0.is_zero() {
            p.add(
                &at.key("request_header_timeout"),
                "must be greater than zero",
            );
        }
        if lf.client_timeout.0.is_zero() {
            p.add(&at.key("client_timeout"), "must be greater than zero");
        }
        if lf.bind.is_empty() {
            p.add(&at.key("bind"), "needs at least one address");
        }
        for (j, addr) in lf.bind.iter().enumerate() {
            if let Some((_, other)) = bound.iter().find(|(b, _)| addresses_clash(*b, addr.0)) {
                p.add(
                    &at.index("bind", j),
                    format!("{} is already used by {other}", addr.0),
                );
            } else {
                bound.push((addr.0, format!("listener {:?}", lf.name)));
            }
        }
        let pool = match pool_index.get(lf.pool.as_str()) {
            Some(&ix) => ix,
            None => {
                p.add(
                    &at.key("pool"),
                    format!("pool {:?} is not defined", lf.pool),
                );
                0
            }
        };
        if let Some(u) = used_pools.get_mut(pool) {
            *u = true;
        }
        if lf.mode == Mode::Tcp {
            if !lf.routes.is_empty() && lf.tls.is_some() {
                p.add(
                    &at.index("route", 0),
                    "a tcp listener routes by the SNI of TLS it passes through; with [listener.tls] it terminates TLS and has one pool",
                );
            }
            if let Some(pc) = pools.get(pool) {
                if pc.balance == Balance::Hash && pc.hash_key != HashKey::ClientIp {
                    p.add(
                        &at.key("pool"),
                        format!(
                            "pool {:?} hashes on an HTTP field, which a tcp listener does not have; use hash_key = \"client_ip\"",
                            pc.name
                        ),
                    );
                }
            }
        }
        let mut routes = Vec::with_capacity(lf.routes.len());
        for (j, rf) in lf.routes.iter().enumerate() {
            let rat = at.index("route", j);
            let (match_key, pattern) = match lf.mode {
                Mode::Http => {
                    if rf.sni.is_some() {
                        p.add(
                            &rat.key("sni"),
                            "sni routes are for tcp listeners (TLS passthrough); an http listener routes on host",
                        );
                    }
                    ("host", &rf.host)
                }
                Mode::Tcp => {
                    if rf.host.is_some() || rf.path_prefix.is_some() {
                        p.add(
                            &rat,
                            "a tcp listener routes on sni (the server name of the TLS ClientHello), not host or path_prefix",
                        );
                    }
                    if rf.sni.is_none() {
                        p.add(
                            &rat.key("sni"),
                            "a tcp listener's route needs sni = \"name\" (or \"*.domain\")",
                        );
                    }
                    ("sni", &rf.sni)
                }
            };
            let host = match pattern {
                None => None,
                Some(h) => match HostMatch::parse(h) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        p.add(&rat.key(match_key), e);
                        None
                    }
                },
            };
            if let Some(pp) = &rf.path_prefix {
                if !pp.starts_with('/') {
                    p.add(
                        &rat.key("path_prefix"),
                        format!("must start with '/', got {pp:?}"),
                    );
                }
            }
            if lf.mode == Mode::Http && rf.host.is_none() && rf.path_prefix.is_none() {
                warnings.push(format!(
                    "{rat}: a route with neither host nor path_prefix matches every request; later routes are never used"
                ));
            }
            let rpool = match pool_index.get(rf.pool.as_str()) {
                Some(&ix) => ix,
                None => {
                    p.add(
                        &rat.key("pool"),
                        format!("pool {:?} is not defined", rf.pool),
                    );
                    0
                }
            };
            if let Some(u) = used_pools.get_mut(rpool) {
                *u = true;
            }
            routes.push(Route {
                host,
                path_prefix: rf.path_prefix.clone(),
                pool: rpool,
            });
        }
        let proxy_protocol = lf.proxy_protocol.as_ref().and_then(|pp| {
            let ppat = at.key("proxy_protocol");
            let mode = match pp.mode.as_str() {
                "required" => crate::proxy_protocol::Mode::Required,
                "optional" => crate::proxy_protocol::Mode::Optional,
                "off" => return None,
                m => {
                    p.add(
                        &ppat.key("mode"),
                        format!("unknown mode {m:?}: use \"required\", \"optional\" or \"off\""),
                    );
                    return None;
                }
            };
            let mut from = Vec::new();
            for (k, s) in pp.from.iter().enumerate() {
                match crate::proxy_protocol::Cidr::parse(s) {
                    Ok(c) => from.push(c),
                    Err(e) => p.add(&ppat.index("from", k), e),
                }
            }
            if pp.from.is_empty() {
                p.add(
                    &ppat.key("from"),
                    "list the load balancers whose PROXY headers are believed, e.g. [\"10.0.0.0/8\"]",
                );
            }
            Some(crate::proxy_protocol::Accept {
                mode,
                from,
                timeout: lf.request_header_timeout.0,
            })
        });
        let tls = lf
            .tls
            .as_ref()
            .and_then(|t| tls::listener(t, lf.mode, &at.key("tls"), base, &mut p, &mut warnings));
        let http2 = validate_http2(&lf.http2, &at.key("http2"), &mut p);
        if lf.mode == Mode::Tcp && !lf.rules.is_empty() {
            p.add(
                &at.index("rule", 0),
                "rules look at HTTP requests: a tcp listener routes with [[listener.route]] sni",
            );
        }
        let rules = if lf.mode == Mode::Http {
            rules::compile(
                &lf.rules,
                &at,
                &pool_index,
                &limit_index,
                &mut used_pools,
                &mut p,
                &mut warnings,
            )
        } else {
            crate::rules::RuleSet::default()
        };
        if lf.mode == Mode::Tcp && !lf.read_only_when.is_empty() {
            p.add(
                &at.key("read_only_when"),
                "read-only mode refuses HTTP writes: it is for http listeners",
            );
        }
        let read_only = rules::read_only(
            &lf.read_only_when,
            lf.read_only_status,
            lf.read_only_message.as_deref(),
            lf.read_only_retry_after.map(|d| d.0),
            &at,
            &pool_index,
            &mut p,
        );
        listeners.push(ListenerConfig {
            read_only,
            rules: std::sync::Arc::new(rules),
            http2,
            tls,
            name: lf.name.clone(),
            binds: lf.bind.iter().map(|a| a.0).collect(),
            mode: lf.mode,
            pool,
            max_connections: lf.max_connections,
            request_header_timeout: lf.request_header_timeout.0,
            client_timeout: lf.client_timeout.0,
            routes,
            proxy_protocol,
        });
    }
    for (pc, used) in pools.iter().zip(&used_pools) {
        if !used {
            warnings.push(format!("pool {:?} is not used by any listener", pc.name));
        }
    }

    // [admin]
    let aat = root.key("admin");
    let env = |p: &mut Problems<'_>, key: &'static str, var: &str| match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            p.add(
                &aat.key(key),
                format!("environment variable {var:?} is not set (or empty)"),
            );
            None
        }
    };
    let token = raw
        .admin
        .token_env
        .as_deref()
        .and_then(|v| env(&mut p, "token_env", v));
    let read_auth = match raw.admin.read_auth.as_deref() {
        None => None,
        Some(s) => match s.split_once(':') {
            Some((user, var)) if !user.is_empty() && !var.is_empty() => {
                env(&mut p, "read_auth", var).map(|pw| (user.to_string(), pw))
            }
            _ => {
                p.add(
                    &aat.key("read_auth"),
                    format!("write \"user:PASSWORD_ENV\", got {s:?}"),
                );
                None
            }
        },
    };
    let admin = Admin {
        bind: raw.admin.bind.0,
        token,
        read_auth,
    };

    // [resolver]
    let rf = raw.resolver.unwrap_or_default();
    let rat = root.key("resolver");
    for (key, d) in [
        ("timeout", rf.timeout),
        ("min_ttl", rf.min_ttl),
        ("max_ttl", rf.max_ttl),
    ] {
        if d.0.is_zero() {
            p.add(&rat.key(key), "must be greater than zero");
        }
    }
    if rf.max_ttl.0 < rf.min_ttl.0 {
        p.add(&rat.key("max_ttl"), "must not be shorter than min_ttl");
    }
    if let Some(ns) = &rf.nameservers {
        if ns.is_empty() {
            p.add(
                &rat.key("nameservers"),
                "needs at least one address (or leave it out to use /etc/resolv.conf)",
            );
        }
    }
    let resolver = ResolverConfig {
        nameservers: rf.nameservers.map(|v| v.into_iter().map(|a| a.0).collect()),
        timeout: rf.timeout.0,
        min_ttl: rf.min_ttl.0,
        max_ttl: rf.max_ttl.0,
        hold_on_failure: rf.hold_on_failure.0,
        on_empty: rf.on_empty,
        prefer: rf.prefer,
    };

    // [ha]
    let ha = raw
        .ha
        .as_ref()
        .and_then(|h| validate_ha(h, &root.key("ha"), base, &pool_index, &mut p, &mut warnings));

    // [rate_limit_store]
    let rate_limit_store = raw
        .rate_limit_store
        .as_ref()
        .and_then(|f| rules::rate_limit_store(f, &root.key("rate_limit_store"), &mut p));

    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(Config {
        ha,
        rate_limit_store,
        resolver,
        global: Global {
            threads,
            max_connections: g.max_connections,
            shutdown_grace: drain.shutdown_grace,
            drain_delay: drain.drain_delay,
            drain_budget: drain.budget,
            access_log: g.access_log,
            state_file: g.state_file.clone(),
            watch_config: g.watch_config,
        },
        admin,
        listeners,
        pools,
        rate_limits,
        warnings,
    })
}

/// How a stop's time is spent: the wait for endpoints to notice /ready's 503
/// (`drain_delay`), the connection drain (`shutdown_grace`), and, with a
/// `drain_budget`, the margin kept before the hard stop.
#[derive(Debug, Clone, PartialEq)]
struct DrainSplit {
    drain_delay: Duration,
    shutdown_grace: Duration,
    budget: Option<(Duration, Duration)>,
    warning: Option<String>,
}

impl Default for DrainSplit {
    fn default() -> DrainSplit {
        DrainSplit {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            budget: None,
            warning: None,
        }
    }
}

/// Splits `drain_budget`: a tenth (at least 1 s, at most half) is kept as a
/// margin before the hard stop, a fifth (at most 10 s) waits for endpoints to
/// notice, the rest drains connections. An explicit `drain_delay` or
/// `shutdown_grace` takes its part; the other gets what is left. Err: (key, why).
fn drain_split(
    budget: Option<Duration>,
    delay: Option<Duration>,
    grace: Option<Duration>,
) -> Result<DrainSplit, (&'static str, String)> {
    let Some(b) = budget else {
        let d = DrainSplit::default();
        return Ok(DrainSplit {
            drain_delay: delay.unwrap_or(d.drain_delay),
            shutdown_grace: grace.unwrap_or(d.shutdown_grace),
            ..d
        });
    };
    if b < Duration::from_secs(2) {
        return Err(("drain_budget", "must be at least 2s".into()));
    }
    let margin = (b / 10).max(Duration::from_secs(1)).min(b / 2);
    let usable = b - margin;
    let delay = delay.unwrap_or_else(|| (b / 5).min(Duration::from_secs(10)));
    let grace = match grace {
        Some(g) => g,
        None if delay < usable => usable - delay,
        None => {
            return Err((
                "drain_delay",
                format!(
                    "{delay:?} leaves nothing of drain_budget ({b:?}, of which {margin:?} is kept before the hard stop) for connections to finish"
                ),
            ))
        }
    };
    let warning = (delay + grace > usable).then(|| {
        format!(
            "global: drain_delay ({delay:?}) + shutdown_grace ({grace:?}) exceed drain_budget ({b:?}) less its {margin:?} margin: the stop can run into the hard kill"
        )
    });
    Ok(DrainSplit {
        drain_delay: delay,
        shutdown_grace: grace,
        budget: Some((b, margin)),
        warning,
    })
}

fn validate_health(h: &HealthFile, at: &KeyPath, p: &mut Problems<'_>) -> Option<HealthConfig> {
    let before = p.list.len();
    if h.interval.0.is_zero() {
        p.add(&at.key("interval"), "must be greater than zero");
    }
    if h.timeout.0.is_zero() {
        p.add(&at.key("timeout"), "must be greater than zero");
    }
    if h.rise == 0 || h.rise > 100 {
        p.add(&at.key("rise"), "must be between 1 and 100");
    }
    if h.fall == 0 || h.fall > 100 {
        p.add(&at.key("fall"), "must be between 1 and 100");
    }
    if let Some(f) = h.fast_interval {
        if f.0.is_zero() {
            p.add(&at.key("fast_interval"), "must be greater than zero");
        }
    }
    let kind_name = match h.kind {
        HealthKind::Tcp => "tcp",
        HealthKind::Http => "http",
        HealthKind::Postgres => "postgres",
        HealthKind::Grpc => "grpc",
    };
    let only = |p: &mut Problems<'_>, key: &'static str, set: bool, kind: &str| {
        if set {
            p.add(
                &at.key(key),
                format!("is only used with kind = \"{kind}\", not \"{kind_name}\""),
            );
        }
    };
    if h.kind != HealthKind::Http {
        only(p, "path", h.path.is_some(), "http");
        only(p, "method", h.method.is_some(), "http");
        only(p, "host", h.host.is_some(), "http");
        only(p, "expect_status", h.expect_status.is_some(), "http");
        only(p, "expect_body", h.expect_body.is_some(), "http");
    }
    if h.kind != HealthKind::Postgres {
        only(p, "user", h.user.is_some(), "postgres");
        only(p, "password_env", h.password_env.is_some(), "postgres");
        only(p, "database", h.database.is_some(), "postgres");
        only(p, "role", h.role.is_some(), "postgres");
        only(
            p,
            "max_replica_lag",
            h.max_replica_lag.is_some(),
            "postgres",
        );
    }
    if h.kind != HealthKind::Grpc {
        only(p, "service", h.service.is_some(), "grpc");
    }
    let check = match h.kind {
        HealthKind::Tcp => CheckKind::Tcp,
        HealthKind::Http => {
            let method = match &h.method {
                None => http::Method::GET,
                Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => m,
                    Err(_) => {
                        p.add(&at.key("method"), format!("invalid method {m:?}"));
                        http::Method::GET
                    }
                },
            };
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                p.add(
                    &at.key("path"),
                    format!("must be a path starting with '/', got {path:?}"),
                );
            }
            if let Some(host) = &h.host {
                if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
                    p.add(
                        &at.key("host"),
                        format!("invalid Host header value {host:?}"),
                    );
                }
            }
            let expect_status =
                match parse_status_ranges(h.expect_status.as_deref().unwrap_or("200-399")) {
                    Ok(r) => r,
                    Err(e) => {
                        p.add(&at.key("expect_status"), e);
                        Vec::new()
                    }
                };
            CheckKind::Http {
                method,
                path,
                host: h.host.clone(),
                expect_status,
                expect_body: h.expect_body.clone(),
                h2: false,
            }
        }
        HealthKind::Postgres => {
            let password = match &h.password_env {
                None => None,
                Some(var) => match std::env::var(var) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        p.add(
                            &at.key("password_env"),
                            format!("environment variable {var:?} is not set"),
                        );
                        None
                    }
                },
            };
            CheckKind::Postgres {
                user: h.user.clone().unwrap_or_else(|| "postgres".into()),
                password,
                database: h.database.clone().unwrap_or_else(|| "postgres".into()),
                role: h.role.unwrap_or(PgRole::Any),
                max_replica_lag: h.max_replica_lag.map_or(Duration::ZERO, |d| d.0),
            }
        }
        HealthKind::Grpc => {
            let service = h.service.clone().unwrap_or_default();
            if service.len() > 1024 || service.bytes().any(|b| b.is_ascii_control()) {
                p.add(
                    &at.key("service"),
                    "must be a service name of at most 1024 printable characters",
                );
            }
            CheckKind::Grpc { service }
        }
    };
    (p.list.len() == before).then(|| HealthConfig {
        interval: h.interval.0,
        timeout: h.timeout.0,
        rise: h.rise,
        fall: h.fall,
        fast_interval: h.fast_interval.map_or(h.interval.0, |d| d.0),
        initial_up: h.initial == InitialState::Up,
        check,
    })
}

fn validate_ha(
    h: &file::HaFile,
    at: &KeyPath,
    base: &Path,
    pool_index: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<HaConfig> {
    let before = p.list.len();
    if h.interface.is_empty() {
        p.add(&at.key("interface"), "must name a network interface");
    }
    if h.node_id.is_empty() || h.node_id.len() > NODE_ID_MAX || h.node_id.contains('\0') {
        p.add(
            &at.key("node_id"),
            format!("must be 1 to {NODE_ID_MAX} bytes"),
        );
    }
    if !(1..=254).contains(&h.priority) {
        p.add(
            &at.key("priority"),
            format!("must be between 1 and 254, got {}", h.priority),
        );
    }
    if h.vips.is_empty() {
        p.add(
            &at.key("vips"),
            "needs at least one address, e.g. [\"192.0.2.100/24\"]",
        );
    }
    let mut vips = Vec::new();
    for (i, v) in h.vips.iter().enumerate() {
        let parsed = v.split_once('/').and_then(|(a, l)| {
            let ip: std::net::IpAddr = a.parse().ok()?;
            let len: u8 = l.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        });
        match parsed {
            Some(x) => vips.push(x),
            None => p.add(&at.index("vips", i), format!("invalid {v:?}: write ADDRESS/PREFIX, e.g. \"192.0.2.100/24\" or \"2001:db8::100/64\"")),
        }
    }
    if h.peers.is_empty() {
        p.add(&at.key("peers"), "needs at least one peer address");
    }
    // the heartbeat's authentication covers both addresses: each side must know its own
    if h.bind.0.ip().is_unspecified() {
        p.add(
            &at.key("bind"),
            "must be this node's own address, not a wildcard (0.0.0.0 or ::)",
        );
    }
    for (i, peer) in h.peers.iter().enumerate() {
        if peer.0.ip().is_unspecified() {
            p.add(
                &at.index("peers", i),
                "must be the peer's address, not a wildcard",
            );
        }
    }
    if h.advert_interval.0 < Duration::from_millis(10) {
        p.add(&at.key("advert_interval"), "must be at least 10ms");
    }
    let key = match (h.auth.as_deref(), &h.auth_key_file) {
        (Some("none"), _) => {
            warnings.push("[ha] auth = \"none\": heartbeats are not authenticated".into());
            Some(HaKey::None)
        }
        (None | Some("hmac-sha256"), Some(path)) => match std::fs::read(base.join(path)) {
            Ok(mut k) => {
                while k.last().is_some_and(|c| c.is_ascii_whitespace()) {
                    k.pop();
                }
                if k.len() < 32 {
                    p.add(
                        &at.key("auth_key_file"),
                        format!(
                            "{}: the key must be at least 32 bytes, it has {}",
                            path.display(),
                            k.len()
                        ),
                    );
                    None
                } else {
                    Some(HaKey::Hmac(k))
                }
            }
            Err(e) => {
                p.add(
                    &at.key("auth_key_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None | Some("hmac-sha256"), None) => {
            p.add(
                at,
                "auth_key_file is required (or write auth = \"none\" to run unauthenticated)",
            );
            None
        }
        (Some(other), _) => {
            p.add(
                &at.key("auth"),
                format!("unknown auth {other:?}: use \"hmac-sha256\" or \"none\""),
            );
            None
        }
    };
    let mut track = Vec::new();
    for (i, t) in h.track.iter().enumerate() {
        match t.as_str() {
            "ready" => track.push(Track::Ready),
            s => match s.strip_prefix("pool:") {
                Some(name) => match pool_index.get(name) {
                    Some(_) => track.push(Track::Pool(name.to_string())),
                    None => p.add(
                        &at.index("track", i),
                        format!("pool {name:?} is not defined"),
                    ),
                },
                None => p.add(
                    &at.index("track", i),
                    format!("unknown track {s:?}: use \"ready\" or \"pool:NAME\""),
                ),
            },
        }
    }
    if let Some(n) = &h.notify {
        if !n.exists() {
            p.add(&at.key("notify"), format!("{} does not exist", n.display()));
        }
    }
    (p.list.len() == before).then(|| HaConfig {
        interface: h.interface.clone(),
        vips,
        node_id: h.node_id.clone(),
        priority: h.priority as u8,
        bind: h.bind.0,
        peers: h.peers.iter().map(|a| a.0).collect(),
        advert_interval: h.advert_interval.0,
        preempt: h.preempt,
        preempt_delay: h.preempt_delay.0,
        key: key.unwrap_or(HaKey::None),
        track,
        notify: h.notify.clone(),
    })
}

/// "200-399", "200", "200,204,300-399" -> inclusive ranges.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || format!("invalid status list {s:?}: write e.g. \"200-399\" or \"200,204\"");
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(bad()),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let r = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if r.0 > r.1 {
            return Err(bad());
        }
        out.push(r);
    }
    Ok(out)
}

/// Two listening addresses clash when they are equal, or share a port and family
/// while one of them is the wildcard address.
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_budget_splits_by_itself_and_explicit_parts_win() {
        let s = |b: u64, d: Option<u64>, g: Option<u64>| {
            drain_split(
                Some(Duration::from_secs(b)),
                d.map(Duration::from_secs),
                g.map(Duration::from_secs),
            )
        };
        let x = s(30, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace, x.budget),
            (
                Duration::from_secs(6),
                Duration::from_secs(21),
                Some((Duration::from_secs(30), Duration::from_secs(3)))
            )
        );
        // long budgets: the propagation wait stops at 10 s
        let x = s(120, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace),
            (Duration::from_secs(10), Duration::from_secs(98))
        );
        // explicit parts win; the other gets the rest
        let x = s(30, Some(10), None).unwrap();
        assert_eq!(x.shutdown_grace, Duration::from_secs(17));
        let x = s(30, Some(10), Some(60)).unwrap();
        assert!(x.warning.is_some(), "over budget: warned");
        assert_eq!(s(30, Some(27), None).unwrap_err().0, "drain_delay");
        assert_eq!(s(1, None, None).unwrap_err().0, "drain_budget");
        // without a budget, the defaults
        let x = drain_split(None, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace),
            (Duration::ZERO, Duration::from_secs(30))
        );
    }

    const GOOD: &str = r#"
[global]
threads = 1

[admin]
bind = "127.0.0.1:8404"

[[listener]]
name = "web"
bind = ["127.0.0.1:8080"]
mode = "http"
pool = "api"
  [[listener.route]]
  host = "*.example.com"
  path_prefix = "/v1"
  pool = "api"

[[pool]]
name = "api"
  [[pool.server]]
  address = "127.0.0.2:8000"
"#;

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.listeners[0].binds[0].port(), 8080);
        assert_eq!(c.pools[0].servers[0].weight, 1);
        assert_eq!(c.global.shutdown_grace, Duration::from_secs(30));
    }

    fn problem(src: &str) -> Problem {
        match parse(src, "t.toml") {
            Err(ConfigError::Invalid { problems, .. }) => problems[0].clone(),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn unknown_route_pool_names_key_and_line() {
        let p = problem(&GOOD.replace(
            "  pool = \"api\"\n\n[[pool]]",
            "  pool = \"nope\"\n\n[[pool]]",
        ));
        assert_eq!(p.key, "listener[0].route[0].pool");
        assert_eq!(p.line, Some(16));
        assert!(p.message.contains("nope"));
    }

    #[test]
    fn unknown_key_has_line() {
        let p = problem(&GOOD.replace("threads = 1", "threads = 1\nthreadz = 2"));
        assert_eq!(p.line, Some(4));
        assert!(p.message.contains("threadz"), "{}", p.message);
    }

    #[test]
    fn h2_pool_keys_are_checked() {
        let pool = |extra: &str| {
            GOOD.replace(
                "name = \"api\"\n  [[pool.server]]",
                &format!("name = \"api\"\n{extra}\n  [[pool.server]]"),
            )
        };
        let c = parse(
            &pool("protocol = \"h2\"\n[pool.http2]\nmax_concurrent_streams = 8\n[pool.health]\nkind = \"grpc\"\nservice = \"api.v1\""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pools[0].protocol, Protocol::H2);
        assert_eq!(c.pools[0].http2.max_concurrent_streams, 8);
        assert_eq!(c.pools[0].http2.initial_stream_window_size, 1 << 20);
        assert!(matches!(
            &c.pools[0].health.as_ref().unwrap().check,
            CheckKind::Grpc { service } if service == "api.v1"
        ));
        let p = problem(&pool("protocol = \"h3\""));
        assert_eq!(p.key, "pool[0].protocol");
        assert!(p.message.contains("\"http1\" or \"h2\""), "{}", p.message);
        let p = problem(&pool("protocol = \"h2\"\nsend_proxy = \"v2\""));
        assert_eq!(p.key, "pool[0].send_proxy");
        let p = problem(&pool("[pool.http2]\nmax_concurrent_streams = 8"));
        assert_eq!(p.key, "pool[0].http2");
        assert!(p.message.contains("protocol = \"h2\""), "{}", p.message);
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\nmax_concurrent_streams = 0",
        ));
        assert_eq!(p.key, "pool[0].http2.max_concurrent_streams");
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\ninitial_stream_window_size = 3000000000",
        ));
        assert_eq!(p.key, "pool[0].http2.initial_stream_window_size");
        assert!(p.message.contains("6.9.2"), "{}", p.message);
        let p = problem(&pool("[pool.health]\nkind = \"grpc\""));
        assert_eq!(p.key, "pool[0].health.kind");
        let p = problem(&pool("[pool.health]\nkind = \"http\"\nservice = \"x\""));
        assert_eq!(p.key, "pool[0].health.service");
    }

    #[test]
    fn proxy_protocol_keys_are_checked() {
        let p = problem(&GOOD.replace(
            "name = \"api\"\n  [[pool.server]]",
            "name = \"api\"\nsend_proxy = \"v3\"\n  [[pool.server]]",
        ));
        assert_eq!(p.key, "pool[0].send_proxy");
        assert!(p.message.contains("\"v1\" or \"v2\""), "{}", p.message);
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\nproxy_protocol = { from = [\"10.0.0.0/40\"] }\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].proxy_protocol.from[0]");
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\nproxy_protocol = { mode = \"optional\" }\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].proxy_protocol.from");
        let c = parse(
            &GOOD.replace(
                "pool = \"api\"\n  [[listener.route]]",
                "pool = \"api\"\nproxy_protocol = { from = [\"10.0.0.0/8\"], mode = \"off\" }\n  [[listener.route]]",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.listeners[0].proxy_protocol.is_none());
    }

    #[test]
    fn bad_duration_has_line_and_key() {
        let p = problem(&GOOD.replace("threads = 1", "threads = 1\ndrain_delay = \"5 parsecs\""));
        assert_eq!(p.line, Some(4));
        assert_eq!(p.key, "drain_delay");
    }
}
