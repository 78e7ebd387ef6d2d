//! Serde structs that mirror the TOML file one to one (`deny_unknown_fields`).
//!
//! Leaf values that can be checked on their own (durations, socket addresses, enums)
//! are parsed while deserializing, so their errors carry the span of the offending
//! value. Cross-references (a route naming a pool) are checked in `config::validate`.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: GlobalFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerFile>,
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolFile>,
    /// `[[rate_limit]]`: limits that rules apply (`rate_limit = "name"`).
    #[serde(default, rename = "rate_limit")]
    pub rate_limits: Vec<RateLimitFile>,
    /// `[[tier]]`: who gets which rate and quota under limits with key = "tier".
    #[serde(default, rename = "tier")]
    pub tiers: Vec<TierFile>,
    pub resolver: Option<ResolverFile>,
    pub ha: Option<HaFile>,
    /// `[rate_limit_store]`: limits and quotas shared by several nodes.
    pub rate_limit_store: Option<RateLimitStoreFile>,
}

/// `[rate_limit_store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStoreFile {
    /// "redis" (Valkey speaks the same protocol).
    pub kind: String,
    /// `redis://[:password@]host:port[/db]`
    pub url: String,
    /// How often each node sends its counts and learns the others'.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Dur,
    /// While the store is unreachable, the share of each limit this node
    /// enforces on its own (0.5 for a pair).
    #[serde(default = "default_fallback_share")]
    pub fallback_share: f64,
    /// Prefix of the store's keys (several clusters may share one Redis).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_sync_interval() -> Dur {
    Dur(Duration::from_millis(100))
}
fn default_fallback_share() -> f64 {
    0.5
}
fn default_key_prefix() -> String {
    "rampart:".into()
}

/// `[ha]`: active/passive VIP failover.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    pub interface: String,
    pub vips: Vec<String>,
    pub node_id: String,
    pub priority: u32,
    pub bind: Addr,
    pub peers: Vec<Addr>,
    #[serde(default = "default_advert_interval")]
    pub advert_interval: Dur,
    #[serde(default)]
    pub preempt: bool,
    #[serde(default)]
    pub preempt_delay: Dur,
    /// The key that signs heartbeats (and is tried first on receipt).
    pub auth_key_file: Option<std::path::PathBuf>,
    /// A second key, accepted on receipt but never used to sign: the old key
    /// during a rotation.
    pub auth_previous_key_file: Option<std::path::PathBuf>,
    /// How long after a reload that changed `auth_key_file` the key it
    /// replaced is still accepted ("0s": not at all). Default: 60 s.
    pub auth_key_grace: Option<Dur>,
    /// "hmac-sha256" (the default, needs auth_key_file) or "none".
    pub auth: Option<String>,
    #[serde(default)]
    pub track: Vec<String>,
    pub notify: Option<std::path::PathBuf>,
}

fn default_advert_interval() -> Dur {
    Dur(Duration::from_secs(1))
}

/// `[resolver]`: how server names are re-resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    /// Default: the nameservers of /etc/resolv.conf (with its search domains, ndots).
    pub nameservers: Option<Vec<Addr>>,
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_min_ttl")]
    pub min_ttl: Dur,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Dur,
    #[serde(default = "default_hold_on_failure")]
    pub hold_on_failure: Dur,
    #[serde(default)]
    pub on_empty: OnEmpty,
    #[serde(default)]
    pub prefer: Prefer,
}

impl Default for ResolverFile {
    fn default() -> Self {
        ResolverFile {
            nameservers: None,
            timeout: default_dns_timeout(),
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            hold_on_failure: default_hold_on_failure(),
            on_empty: OnEmpty::default(),
            prefer: Prefer::default(),
        }
    }
}

fn default_dns_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_min_ttl() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_max_ttl() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_hold_on_failure() -> Dur {
    Dur(Duration::from_secs(300))
}

/// What an empty answer (NXDOMAIN, no records) does to a pool that had members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    #[default]
    Keep,
    Clear,
}

/// Which address families a name's answer contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// IPv4 answers, IPv6 only if there are none.
    Ipv4,
    /// IPv6 answers, IPv4 only if there are none.
    Ipv6,
    /// Both.
    #[default]
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalFile {
    #[serde(default)]
    pub threads: usize,
    #[serde(default = "default_global_max_conn")]
    pub max_connections: usize,
    /// How long connections may finish after listeners close (default 30s, or
    /// the connection-drain part of `drain_budget`).
    pub shutdown_grace: Option<Dur>,
    /// After SIGTERM, /ready says 503 but everything is served for this long
    /// (default 0s, or the propagation part of `drain_budget`).
    pub drain_delay: Option<Dur>,
    /// One number for the whole stop (Kubernetes' terminationGracePeriodSeconds):
    /// split into the propagation wait, the connection drain and a margin.
    pub drain_budget: Option<Dur>,
    #[serde(default)]
    pub access_log: AccessLogFormat,
    /// Admin states, weights and last known health are kept here across restarts.
    pub state_file: Option<std::path::PathBuf>,
    /// Reload when the config file (or the directory it is in) changes.
    #[serde(default)]
    pub watch_config: bool,
    /// Listening sockets are SO_REUSEPORT (HAProxy's default; `false` is its
    /// `noreuseport`: one worker thread only).
    #[serde(default = "default_true")]
    pub reuse_port: bool,
    /// Every HTTP listener's `error_pages`, unless it has its own for a status.
    #[serde(default)]
    pub error_pages: std::collections::BTreeMap<String, String>,
}

impl Default for GlobalFile {
    fn default() -> Self {
        GlobalFile {
            threads: 0,
            max_connections: default_global_max_conn(),
            shutdown_grace: None,
            drain_delay: None,
            drain_budget: None,
            access_log: AccessLogFormat::default(),
            state_file: None,
            watch_config: false,
            reuse_port: true,
            error_pages: Default::default(),
        }
    }
}

fn default_global_max_conn() -> usize {
    20_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_bind")]
    pub bind: Addr,
    /// The environment variable holding the bearer token for write endpoints.
    pub token_env: Option<String>,
    /// "user:PASSWORD_ENV": basic auth for the read pages (not /live, /ready).
    pub read_auth: Option<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            bind: default_admin_bind(),
            token_env: None,
            read_auth: None,
        }
    }
}

/// Loopback: the stats page, the metrics and the API (quota keys among
/// them) are for this host unless `bind` says otherwise, as HAProxy serves no
/// stats until told where.
fn default_admin_bind() -> Addr {
    Addr(SocketAddr::from(([127, 0, 0, 1], 8404)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Off,
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub bind: Vec<Addr>,
    pub mode: Mode,
    /// The pool of requests no route takes; a tcp listener with routes may
    /// have none (connections no route takes are closed).
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub max_connections: usize,
    /// HTTP: the whole request header must arrive within this long; it also bounds
    /// how long an idle keep-alive connection waits for its next request.
    #[serde(default = "default_header_timeout")]
    pub request_header_timeout: Dur,
    /// HTTP: the longest a client may leave response bytes unread before its
    /// connection is closed (slow readers hold a backend connection).
    #[serde(default = "default_client_timeout")]
    pub client_timeout: Dur,
    /// HTTP/1.1: a keep-alive connection idle this long after a request leaves
    /// its task and waits in its worker's parker: about 450 bytes of RSS where
    /// a task holds about 1,500 (`0s`: never; TLS connections never park).
    #[serde(default = "default_park_idle_after")]
    pub park_idle_after: Dur,
    /// HTTP: a request body longer than this is refused with 413 (nginx's
    /// `client_max_body_size`); unset or 0: no limit.
    pub max_request_body: Option<Size>,
    /// HTTP: the field each request to a server carries the client's address
    /// in (`X-Real-IP`), replacing any the client sent.
    pub client_ip_header: Option<String>,
    /// HTTP: `{ "503" = "errors/503.http" }`, the pages of rampart's own
    /// error answers, over `[global] error_pages`.
    #[serde(default)]
    pub error_pages: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteFile>,
    /// `[[listener.rule]]`: matched in order, before the routes (http listeners).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    /// Read-only mode: `["pool:pg-primary"]`, writes refused while one of these
    /// pools has no eligible server.
    #[serde(default)]
    pub read_only_when: Vec<String>,
    pub read_only_status: Option<u16>,
    pub read_only_message: Option<String>,
    pub read_only_retry_after: Option<Dur>,
    /// `{ from = ["10.0.0.0/8"], mode = "required" }`: accept PROXY protocol
    /// headers (v1 and v2) from these sources.
    pub proxy_protocol: Option<ProxyProtocolFile>,
    /// HTTP: `{ from = ["10.0.0.0/8"], header = "X-Forwarded-For" }`: the
    /// client of a request from these proxies is the one they name (nginx's
    /// realip module).
    pub client_ip_from: Option<ClientIpFromFile>,
    /// HTTP: `{ types = ["text/html", "application/json"], min_length = 20,
    /// level = 1 }`: servers' answers gzipped for clients that accept it.
    pub compression: Option<CompressionFile>,
    /// TLS terminated on this listener.
    pub tls: Option<ListenerTlsFile>,
    /// HTTP/2 limits (h2c and h2 over TLS).
    #[serde(default)]
    pub http2: Http2File,
}

/// `[listener.http2]`: the HTTP/2 server's limits, set on purpose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2File {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: Size,
    pub initial_stream_window_size: Size,
    pub initial_connection_window_size: Size,
    pub max_frame_size: Size,
    /// Streams the client reset before they were accepted (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams rampart had to reset for the client's protocol errors.
    pub max_local_error_reset_streams: usize,
    /// PING when the connection has been silent this long ("0s": never).
    pub keepalive_interval: Dur,
    /// ... and close it when the PING is not answered within this long.
    pub keepalive_timeout: Dur,
    /// GOAWAY to a connection that has started no request for this long ("0s": never).
    pub idle_timeout: Dur,
}

impl Default for Http2File {
    fn default() -> Self {
        Http2File {
            max_concurrent_streams: 256,
            max_header_list_size: Size(64 * 1024),
            initial_stream_window_size: Size(1024 * 1024),
            initial_connection_window_size: Size(1024 * 1024),
            max_frame_size: Size(16 * 1024),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keepalive_interval: Dur(Duration::from_secs(30)),
            keepalive_timeout: Dur(Duration::from_secs(20)),
            idle_timeout: Dur(Duration::from_secs(180)),
        }
    }
}

/// `[[tier]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: TierMatchFile,
    /// None: no rate limit (with no quota either: unlimited).
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: u64,
    pub quota: Option<String>,
}

/// A tier's members: a header whose value is one of `values` or a line of
/// `keys_file` (one key per line; `#` comments).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierMatchFile {
    #[serde(default = "default_tier_header")]
    pub header: String,
    #[serde(default)]
    pub values: Vec<String>,
    pub keys_file: Option<String>,
}

fn default_tier_header() -> String {
    "x-api-key".into()
}

/// `[[rate_limit]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub name: String,
    /// "client_ip", "header:NAME", "path", or a list of them (a combination).
    #[serde(default = "default_rl_key")]
    pub key: OneOrMany,
    /// "100/s", "6000/m", "100000/h".
    pub rate: Option<String>,
    /// "100/day" (UTC days) or "1000/h" (UTC hours): requests per fixed window.
    pub quota: Option<String>,
    /// Requests allowed at once above the steady rate.
    #[serde(default)]
    pub burst: u64,
    /// Keys tracked at most (memory bound).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// The `client_ip` key of an IPv6 client: its first this many bits (a
    /// client holds a whole /64, and could take a fresh budget from each of
    /// its addresses); 128 counts each address apart, as nginx does.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_ipv6_prefix() -> u8 {
    64
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a key (\"client_ip\", \"header:NAME\", \"path\", ...) or a list of them"
)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_rl_key() -> OneOrMany {
    OneOrMany::One("client_ip".into())
}
fn default_max_keys() -> usize {
    100_000
}

/// `[pool.circuit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFile {
    /// Percent of failed requests in the window that opens the circuit.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: u32,
    #[serde(default = "default_circuit_window")]
    pub window: Dur,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
}

fn default_failure_rate() -> u32 {
    50
}
fn default_circuit_window() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_min_requests() -> u32 {
    20
}
fn default_open_for() -> Dur {
    Dur(Duration::from_secs(60))
}

/// `[pool.http2]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolHttp2File {
    /// Streams rampart runs at once on one connection to a server; another
    /// connection is opened past this, or past the server's own
    /// SETTINGS_MAX_CONCURRENT_STREAMS, whichever is lower.
    pub max_concurrent_streams: u32,
    /// What a server may send on a stream ahead of the client reading it:
    /// what one stream may hold in rampart's memory.
    pub initial_stream_window_size: Size,
    /// The connection's receive window, given back as DATA arrives (not as
    /// clients read, so one slow client cannot stall the connection's other
    /// streams): a connection buffers at most its streams times the stream
    /// window.
    pub initial_connection_window_size: Size,
    /// PING a connection whose server has sent nothing for this long, with
    /// streams open or not ("0s": never). A connection whose flow a NAT or a
    /// firewall dropped would otherwise take requests until TCP gave up on it.
    pub keepalive_interval: Dur,
    /// ... and close it when nothing comes back within this long: its open
    /// streams fail as on a lost connection, the next request opens another.
    pub keepalive_timeout: Dur,
}

impl Default for PoolHttp2File {
    fn default() -> Self {
        PoolHttp2File {
            max_concurrent_streams: 100,
            // what one stream may hold unread: a client that opens many
            // streams and reads none holds at most this much of rampart's
            // memory for each (HAProxy grants 64 KiB)
            initial_stream_window_size: Size(256 * 1024),
            initial_connection_window_size: Size(2 * 1024 * 1024),
            // off: gRPC servers refuse PINGs more often than every 5
            // minutes (too_many_pings); the sockets' TCP keepalive and
            // TCP_USER_TIMEOUT bound a dead connection meanwhile
            keepalive_interval: Dur(Duration::ZERO),
            keepalive_timeout: Dur(Duration::from_secs(5)),
        }
    }
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// PEM files (chain and key in one), or `{ path, key }` pairs; the first is
    /// the default certificate.
    #[serde(default)]
    pub cert: Vec<CertEntry>,
    /// Default: ["h2", "http/1.1"] in http mode, none in tcp mode.
    pub alpn: Option<Vec<String>>,
    #[serde(default = "default_min_version")]
    pub min_version: String,
    pub client_ca: Option<String>,
    /// CRLs (PEM) of client_ca's CAs: revoked client certificates are refused.
    pub client_crl: Option<String>,
    pub client_auth: Option<String>,
    #[serde(default = "default_true")]
    pub session_tickets: bool,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
    /// Refuse clients whose SNI no certificate has, instead of serving the default.
    #[serde(default)]
    pub strict_sni: bool,
    /// Pass the verified client certificate's subject to backends in this header.
    pub client_subject_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a PEM file with chain and key (\"site.pem\") or a table of `path` and `key` only ({ path = \"site.crt\", key = \"site.key\" })"
)]
pub enum CertEntry {
    Path(String),
    Pair(CertPair),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub path: String,
    pub key: Option<String>,
}

fn default_min_version() -> String {
    "1.2".into()
}

fn default_true() -> bool {
    true
}

fn default_handshake_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// `[pool.cookie]`: persistence by a cookie rampart inserts in responses
/// (HAProxy's `cookie NAME insert indirect nocache`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieFile {
    pub name: String,
    /// A secret hashed into each server's value with its address.
    pub key: Option<String>,
    /// The cookie is taken out of requests before they reach the server.
    #[serde(default = "default_true")]
    pub indirect: bool,
    /// A response that sets the cookie gets `Cache-Control: private`.
    #[serde(default = "default_true")]
    pub nocache: bool,
    #[serde(default = "default_true")]
    pub httponly: bool,
    #[serde(default)]
    pub secure: bool,
    pub domain: Option<String>,
    #[serde(default = "default_cookie_path")]
    pub path: String,
    pub max_age: Option<Dur>,
    pub same_site: Option<String>,
}

fn default_cookie_path() -> String {
    "/".into()
}

/// `[pool.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolTlsFile {
    /// A PEM file of CA certificates, or "system".
    pub ca: Option<String>,
    pub server_name: Option<String>,
    /// A client certificate (chain and key, or with `key`).
    pub cert: Option<String>,
    pub key: Option<String>,
    /// CRLs (PEM) of `ca`'s CAs: servers with revoked certificates are refused.
    pub crl: Option<String>,
    #[serde(default = "default_true")]
    pub verify: bool,
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionFile {
    #[serde(default = "default_compression_types")]
    pub types: Vec<String>,
    #[serde(default = "default_compression_min_length")]
    pub min_length: u64,
    #[serde(default = "default_compression_level")]
    pub level: u32,
}

fn default_compression_types() -> Vec<String> {
    [
        "text/html",
        "text/plain",
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}

fn default_compression_min_length() -> u64 {
    20
}

fn default_compression_level() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpFromFile {
    #[serde(default)]
    pub from: Vec<String>,
    #[serde(default = "default_client_ip_from_header")]
    pub header: String,
    #[serde(default)]
    pub recursive: bool,
}

fn default_client_ip_from_header() -> String {
    "X-Forwarded-For".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolFile {
    #[serde(default)]
    pub from: Vec<String>,
    #[serde(default = "default_pp_mode")]
    pub mode: String,
}

fn default_pp_mode() -> String {
    "required".into()
}

fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_park_idle_after() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_client_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    /// tcp mode: the server name of the client's TLS ClientHello (passthrough).
    pub sni: Option<String>,
    pub path_prefix: Option<String>,
    pub pool: String,
}

/// `[[listener.rule]]`: what it matches (all given parts, ANDed; `not` inverts)
/// and what it does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub path_regex: Option<String>,
    #[serde(default)]
    pub method: Vec<String>,
    pub header: Option<HeaderMatchFile>,
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub not: bool,
    /// `deny = 403`, or `deny = { status = 403, body = "..." }`
    pub deny: Option<DenyFile>,
    pub redirect: Option<RedirectFile>,
    /// `respond = { status = 200, body = "ok\n", content_type = "..." }`:
    /// rampart answers itself (HAProxy's `http-request return`, nginx's
    /// `return 200 "..."`).
    pub respond: Option<RespondFile>,
    pub pool: Option<String>,
    #[serde(default)]
    pub set_header: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub add_header: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub del_header: Vec<String>,
    #[serde(default)]
    pub response_set_header: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub response_del_header: Vec<String>,
    /// `response_replace_header = { name = "Location", regex = "^http://app/(.*)$",
    /// to = "/$1" }` (or a list of them): HAProxy's `http-response
    /// replace-header`, nginx's `proxy_redirect`.
    #[serde(default)]
    pub response_replace_header: Replaces,
    /// `rewrite_prefix = "/"`: the rule's `path_prefix` (or `path`) is
    /// replaced with this in the path the server gets (nginx's `proxy_pass`
    /// with a URI).
    pub rewrite_prefix: Option<String>,
    /// `rewrite_path = { regex = "^/old/(.*)", to = "/new/$1" }` (HAProxy's
    /// `replace-path`, nginx's `rewrite ... break`).
    pub rewrite_path: Option<RewritePathFile>,
    /// The request is (true) or is not (false) a write, for read-only mode;
    /// unset: POST, PUT, PATCH and DELETE are.
    pub writes: Option<bool>,
    /// A `[[rate_limit]]` by name that the request must conform to.
    pub rate_limit: Option<String>,
    /// The request's priority class: "critical", "high", "normal" or "low".
    pub priority: Option<String>,
    /// The longest request body allowed (0: no limit), in place of the
    /// listener's `max_request_body` (nginx's `client_max_body_size` in a
    /// location).
    pub max_request_body: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchFile {
    pub name: String,
    pub present: Option<bool>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a status (deny = 403) or a table of `status` and `body` only (deny = { status = 403, body = \"...\" })"
)]
pub enum DenyFile {
    Status(u16),
    Full(DenyFull),
}

/// `deny = { status = 403, body = "..." }`: a misspelt key is an error, not
/// a default body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyFull {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewritePathFile {
    pub regex: String,
    pub to: String,
}

/// One `{ name, regex, to }` or a list of them.
#[derive(Debug)]
pub enum Replaces {
    One(ReplaceHeaderFile),
    Many(Vec<ReplaceHeaderFile>),
}

// (by hand, not `untagged`: a misspelt key inside is then named as such)
impl<'de> Deserialize<'de> for Replaces {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Replaces;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{ name = \"Location\", regex = \"^http://app/(.*)$\", to = \"/$1\" }, or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Replaces, A::Error> {
                ReplaceHeaderFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(Replaces::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<Replaces, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(Replaces::Many)
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for Replaces {
    fn default() -> Replaces {
        Replaces::Many(Vec::new())
    }
}

impl Replaces {
    pub fn as_slice(&self) -> &[ReplaceHeaderFile] {
        match self {
            Replaces::One(r) => std::slice::from_ref(r),
            Replaces::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceHeaderFile {
    pub name: String,
    pub regex: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondFile {
    #[serde(default = "default_respond_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    pub content_type: Option<String>,
}

fn default_respond_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    pub to: String,
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    302
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    RandomTwo,
    Hash,
    First,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub name: String,
    #[serde(default)]
    pub balance: Balance,
    pub hash_key: Option<HashKey>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_server_timeout")]
    pub server_timeout: Dur,
    #[serde(default)]
    pub max_connections_per_server: u32,
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Dur,
    /// Priority shedding: a saturated pool sheds `low` requests that waited this
    /// long in its queue (`normal` after 4x, `high` after 16x, `critical` never).
    pub shed_after: Option<Dur>,
    /// Set: a gRPC call's `grpc-timeout`, at most this (0s: no cap), is how
    /// long it waits for its answer, instead of `server_timeout` (Envoy's
    /// `max_grpc_timeout`). Unset: `grpc-timeout` is passed on, not read.
    pub max_grpc_timeout: Option<Dur>,
    /// Idle keep-alive connections to one server kept per worker thread. Unset:
    /// as many as the server's peak of concurrent requests (at least 32, at
    /// most 1,024), so that a burst of responses never closes connections the
    /// next burst needs; idle ones still close after `keepalive_timeout`. 0
    /// keeps none.
    #[serde(default)]
    pub max_idle_per_server: Option<usize>,
    /// An idle pooled backend connection is closed after this long.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: Dur,
    /// Idle timeout of an upgraded (WebSocket) connection.
    #[serde(default = "default_tunnel_timeout")]
    pub tunnel_timeout: Dur,
    /// Active health checks; without them servers are UP.
    pub health: Option<HealthFile>,
    /// Passive checks: the per-server circuit breaker.
    #[serde(default)]
    pub breaker: BreakerFile,
    /// The pool-level circuit: fail fast while too many requests fail.
    pub circuit: Option<CircuitFile>,
    /// How many times a failed request is retried, each time on another server.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Request bodies up to this size are kept so the request can be replayed.
    #[serde(default = "default_retry_buffer")]
    pub retry_buffer: Size,
    #[serde(default)]
    pub retry_non_idempotent: bool,
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// Retries may add at most this percentage to the pool's request rate.
    #[serde(default = "default_retry_budget")]
    pub retry_budget_percent: u32,
    /// A server that comes back UP ramps its weight from ~0 to full over this long.
    #[serde(default)]
    pub slow_start: Dur,
    /// "v1" or "v2": send a PROXY protocol header first on every connection to
    /// a server (from http listeners those connections are private to one client).
    pub send_proxy: Option<String>,
    /// tcp mode: move bytes with splice(2) through a kernel pipe, without
    /// copying them through the proxy, once a session carries bulk data and both
    /// sides are plain TCP (HAProxy's `option splice-auto`). Default: true.
    #[serde(default = "default_true")]
    pub splice: bool,
    /// TLS to the servers.
    pub tls: Option<PoolTlsFile>,
    /// Read-only mode for the requests routed to this pool.
    #[serde(default)]
    pub read_only_when: Vec<String>,
    pub read_only_status: Option<u16>,
    pub read_only_message: Option<String>,
    pub read_only_retry_after: Option<Dur>,
    /// What the servers speak: "http1" (HTTP/1.1, the default) or "h2" (HTTP/2:
    /// h2c, or h2 negotiated by ALPN with `[pool.tls]`), for gRPC services.
    pub protocol: Option<String>,
    /// `[pool.http2]`: the HTTP/2 client's settings (with protocol = "h2").
    pub http2: Option<PoolHttp2File>,
    /// `[pool.cookie]`: a client stays on the server a cookie names.
    pub cookie: Option<CookieFile>,
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerFile>,
}

fn default_retries() -> u32 {
    2
}
fn default_retry_buffer() -> Size {
    Size(64 * 1024)
}
fn default_retry_on() -> Vec<String> {
    vec!["connect_failure".into(), "reset".into()]
}
fn default_retry_budget() -> u32 {
    20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Tcp,
    Http,
    Postgres,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgRole {
    Primary,
    Replica,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    #[default]
    Unknown,
    Up,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub kind: HealthKind,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_rise_fall")]
    pub rise: u32,
    #[serde(default = "default_rise_fall")]
    pub fall: u32,
    pub fast_interval: Option<Dur>,
    #[serde(default)]
    pub initial: InitialState,
    // http
    pub path: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<String>,
    pub expect_body: Option<String>,
    // postgres
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub database: Option<String>,
    pub role: Option<PgRole>,
    pub max_replica_lag: Option<Dur>,
    /// TLS, as libpq's `sslmode`: "disable", "prefer" (the default),
    /// "require", "verify-ca" or "verify-full".
    pub ssl: Option<String>,
    /// CA certificates (PEM, or "system") for ssl = "verify-ca" and
    /// "verify-full"; unset: `[pool.tls]`'s.
    pub ca: Option<String>,
    // grpc
    /// The service asked about in grpc.health.v1.Health/Check ("": the server).
    pub service: Option<String>,
}

fn default_check_interval() -> Dur {
    Dur(Duration::from_secs(3))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_rise_fall() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Consecutive failures that open the breaker; 0 turns it off.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_ejection_time")]
    pub ejection_time: Dur,
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Dur,
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
    /// Count 5xx responses as failures too.
    #[serde(default)]
    pub on_5xx: bool,
}

impl Default for BreakerFile {
    fn default() -> Self {
        BreakerFile {
            consecutive_failures: default_consecutive_failures(),
            ejection_time: default_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejected_percent: default_max_ejected_percent(),
            on_5xx: false,
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_ejection_time() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_max_ejection_time() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_max_ejected_percent() -> u32 {
    50
}

/// A size in bytes: 65536, "64KiB", "1MiB", "512B", "64k".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a size: a whole number of bytes (65536) or text with a unit (\"64KiB\", \"1MiB\")"
        )]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    let bad = || format!("invalid size {s:?}: write e.g. 65536, \"64KiB\" or \"1MiB\"");
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" | "KB" | "kB" => 1024,
        "m" | "M" | "MiB" | "MB" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_server_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_queue_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_tunnel_timeout() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_keepalive_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub address: String,
    pub name: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Used only when no non-backup server of the pool is available.
    #[serde(default)]
    pub backup: bool,
    /// With `[pool.cookie]`: this server's value of the cookie (HAProxy's
    /// `cookie` on a server); else a hash of its address.
    pub cookie: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// A duration written as a string: "500ms", "2s", "1m", "1h", "1m30s"; "0" or "0s" is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Longer durations are refused: deadlines computed from them must not overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses "1h", "2m", "30s", "250ms", "10us" and sums like "1m30s".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration: write e.g. \"2s\", \"500ms\", \"1m\"".into());
    }
    let bad = || {
        format!("invalid duration {s:?}: write a number with a unit (ms, s, m, h), e.g. \"2s\", \"500ms\", \"1m30s\"")
    };
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(n)),
            "ms" => Some(Duration::from_millis(n)),
            "us" => Some(Duration::from_micros(n)),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    if total > MAX_DURATION {
        return Err(format!("duration {s:?} is too long: at most 365 days"));
    }
    Ok(total)
}

/// A socket address such as "127.0.0.1:8080" or "[::1]:8080".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<SocketAddr>().map(Addr).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid address {s:?}: write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
            ))
        })
    }
}

/// `hash_key`: "client_ip", "uri" or "header:NAME".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    Header(http::HeaderName),
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "client_ip" => Ok(HashKey::ClientIp),
            "uri" => Ok(HashKey::Uri),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| serde::de::Error::custom(format!("invalid header name {name:?}"))),
                None => Err(serde::de::Error::custom(format!(
                    "invalid hash_key {s:?}: expected \"client_ip\", \"uri\" or \"header:NAME\""
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1GiB").is_err() && parse_size("x").is_err());
        for bad in [
            "",
            "2",
            "s",
            "2x",
            "-1s",
            "1.5s",
            "99999999999999999999s",
            "9000h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
