//! nginx.conf → rampart. The syntax is read by `nginx_parse` (our own: the
//! crates that exist fail the corpus, see the README); this module maps what
//! the directives mean.
//!
//! nginx picks a `server` block by the listen address and then the Host
//! (`server_name`), and inside it a `location` by exact match, then the
//! longest prefix (`^~` stops there), then regexes in order, then the longest
//! prefix. rampart has one listener per address set and rules in order, so
//! each address set becomes a listener, each server block's names become
//! `host` matches, and its locations become rules in nginx's order of
//! precedence: exact, `^~` prefixes (longest first), regexes, prefixes
//! (longest first).

use super::haproxy_cond::src_complement;
use super::nginx_parse::{parse, Directive};
use super::out::{self, list, s, Table};
use super::{Entry, Fidelity, Imported};
use std::collections::HashMap;

/// An nginx duration (`30s`, `1m`, `500ms`, a bare number = seconds) →
/// rampart's.
fn duration(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "" | "s" => n * 1000,
        "ms" => n,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return None,
    };
    Some(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// A `listen` address → a socket address, and its options.
pub(super) fn listen_addr(a: &str) -> Result<String, String> {
    if a.starts_with("unix:") {
        return Err("unix sockets are not supported".into());
    }
    let (host, port) = if let Ok(p) = a.parse::<u16>() {
        ("0.0.0.0".to_string(), p)
    } else if let Some((h, p)) = a.rsplit_once(':') {
        let p: u16 = p.parse().map_err(|_| format!("{a:?}: not a port"))?;
        let h = match h {
            "*" | "" => "0.0.0.0".to_string(),
            h => h.to_string(),
        };
        (h, p)
    } else {
        // an address without a port: nginx's default, 80
        (a.to_string(), 80)
    };
    let addr = format!("{host}:{port}");
    addr.parse::<std::net::SocketAddr>()
        .map_err(|_| format!("{a:?}: rampart listens on IP addresses, not names"))?;
    Ok(addr)
}

/// The match keys of a rule.
const MATCH_KEYS: [&str; 8] = [
    "host",
    "path_prefix",
    "path",
    "path_regex",
    "method",
    "header",
    "src",
    "not",
];

/// A location's kind, in nginx's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LocKind {
    Exact,
    PrefixStop,
    Regex,
    Prefix,
}

#[derive(Debug, Clone)]
struct Loc {
    kind: LocKind,
    /// the match keys
    m: Table,
    /// prefix length, for longest-first
    len: usize,
    /// rules (match keys + actions), in order
    rules: Vec<Table>,
    /// the pool this location proxies to
    pool: Option<String>,
}

/// A server block, mapped.
#[derive(Debug, Clone, Default)]
struct Server {
    binds: Vec<String>,
    tls: bool,
    default: bool,
    names: Vec<String>,
    certs: Vec<String>,
    keys: Vec<String>,
    tls_extra: Table,
    proxy_protocol: bool,
    /// rules for the whole server (before its locations)
    pre: Vec<Table>,
    locs: Vec<Loc>,
}

struct Importer {
    cfg: out::Config,
    report: Vec<Entry>,
    pool_ix: HashMap<String, usize>,
    /// limit_req_zone NAME → its rate limit's index
    zones: HashMap<String, usize>,
    servers: Vec<Server>,
    /// stream servers: (binds, pool, tls certs, proxy_protocol, line)
    streams: Vec<(Vec<String>, String, Table, bool)>,
    /// proxy settings that nginx inherits down to locations: timeouts and retries
    pool_settings: Vec<(String, Table)>,
}

impl Importer {
    fn note(&mut self, d: &Directive, f: Fidelity, note: impl Into<String>) {
        self.report.push(Entry {
            line: d.line,
            directive: d.text(),
            fidelity: f,
            note: note.into(),
        });
    }
    fn mapped(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Mapped, n)
    }
    fn approx(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Approximated, n)
    }
    fn unsupported(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Unsupported, n)
    }

    fn main_level(&mut self, ds: &[Directive]) {
        for d in ds {
            match d.name.as_str() {
                "worker_processes" => match d.args.first().map(String::as_str) {
                    Some("auto") => {
                        self.cfg.global.set("threads", "0".into());
                        self.mapped(d, "[global] threads = 0 (one per core)");
                    }
                    Some(n) if n.parse::<u32>().is_ok() => {
                        self.cfg.global.set("threads", n.to_string());
                        self.approx(d, "[global] threads: worker threads of one process, not processes");
                    }
                    _ => self.unsupported(d, "a number or auto expected"),
                },
                "events" => {
                    self.mapped(d, "rampart's event loop is tokio's (epoll)");
                    for e in d.block.iter().flatten() {
                        match e.name.as_str() {
                            "worker_connections" => match e.args.first().and_then(|n| n.parse::<u64>().ok()) {
                                Some(n) => {
                                    self.cfg.global.set("max_connections", n.to_string());
                                    self.approx(e, "[global] max_connections: one limit for the process (nginx counts per worker, backend connections included)");
                                }
                                None => self.unsupported(e, "not a number"),
                            },
                            "use" | "multi_accept" | "accept_mutex" => {
                                self.mapped(e, "rampart's event loop is tokio's: nothing to set")
                            }
                            _ => self.unsupported(e, "no rampart equivalent is mapped"),
                        }
                    }
                }
                "http" => {
                    self.mapped(d, "listeners and pools");
                    let b = d.block.clone().unwrap_or_default();
                    self.http_level(&b);
                }
                "stream" => {
                    self.mapped(d, "tcp listeners and pools");
                    let b = d.block.clone().unwrap_or_default();
                    self.stream_level(&b);
                }
                // a stream conf.d snippet: a server that proxies without locations
                "server"
                    if d.block.as_ref().is_some_and(|b| {
                        b.iter().any(|e| e.name == "proxy_pass")
                            && !b.iter().any(|e| e.name == "location")
                    }) =>
                {
                    self.stream_level(std::slice::from_ref(d));
                }
                // conf.d snippets: what http holds, at the top
                "server" | "upstream" | "limit_req_zone" | "resolver" | "map" | "log_format"
                | "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout"
                | "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_set_header"
                | "proxy_http_version" | "keepalive_timeout" | "client_max_body_size"
                | "server_names_hash_bucket_size" | "ssl_protocols" | "ssl_ciphers"
                | "ssl_prefer_server_ciphers" | "ssl_session_cache" | "ssl_session_timeout"
                | "sendfile" | "tcp_nopush" | "tcp_nodelay" | "gzip" | "access_log" => {
                    self.http_level(std::slice::from_ref(d));
                }
                "user" | "pid" | "daemon" | "master_process" | "worker_rlimit_nofile"
                | "worker_cpu_affinity" | "load_module" | "pcre_jit" | "worker_shutdown_timeout" => self.unsupported(
                    d,
                    "process management: rampart runs in the foreground, under systemd or a container (packaging/rampart.service)",
                ),
                "error_log" => self.unsupported(d, "rampart logs to stderr; send it on with the service manager"),
                "include" => self.unsupported(d, "includes are not followed: import the included file on its own"),
                _ => self.unsupported(d, "no rampart equivalent is mapped"),
            }
        }
    }

    /// Settings at http (or server) level that locations inherit.
    fn proxy_setting(&mut self, d: &Directive, t: &mut Table) -> bool {
        let a0 = d.args.first().cloned().unwrap_or_default();
        match d.name.as_str() {
            "proxy_connect_timeout" | "proxy_read_timeout" => match duration(&a0) {
                Some(v) => {
                    let k = if d.name == "proxy_connect_timeout" {
                        "connect_timeout"
                    } else {
                        "server_timeout"
                    };
                    t.set(k, s(&v));
                    self.mapped(d, format!("the pool's {k}"));
                }
                None => self.unsupported(d, "not a duration"),
            },
            "proxy_send_timeout" => self.approx(
                d,
                "rampart has no write timeout toward servers; server_timeout bounds the exchange",
            ),
            "proxy_next_upstream" => {
                let mut on: Vec<String> = Vec::new();
                let mut approx = false;
                for a in &d.args {
                    match a.as_str() {
                        "error" => {
                            on.push("connect_failure".into());
                            on.push("reset".into());
                        }
                        "timeout" => on.push("timeout".into()),
                        "off" => {}
                        "non_idempotent" => {
                            t.set("retry_non_idempotent", "true".into());
                        }
                        h if h.starts_with("http_") => match h[5..].parse::<u16>() {
                            Ok(c) if (500..=599).contains(&c) => on.push(c.to_string()),
                            _ => approx = true,
                        },
                        _ => approx = true,
                    }
                }
                on.dedup();
                if d.args.iter().any(|a| a == "off") {
                    t.set("retries", "0".into());
                } else {
                    t.set("retry_on", list(&on));
                }
                if approx {
                    self.approx(d, "the pool's retry_on (http_403/404/429 and invalid_header are not retried by rampart)");
                } else {
                    self.mapped(d, "the pool's retry_on");
                }
            }
            "proxy_next_upstream_tries" => match a0.parse::<u32>() {
                Ok(n) => {
                    t.set("retries", n.saturating_sub(1).min(10).to_string());
                    self.mapped(d, "the pool's retries (tries - 1)");
                }
                Err(_) => self.unsupported(d, "not a number"),
            },
            "proxy_http_version" => self.mapped(d, "rampart speaks HTTP/1.1 to servers"),
            "proxy_set_header" => return self.proxy_set_header(d, None),
            _ => return false,
        }
        true
    }

    /// `proxy_set_header NAME VALUE`: what rampart does itself, or a rule.
    fn proxy_set_header(&mut self, d: &Directive, rules: Option<&mut Vec<Table>>) -> bool {
        let (Some(name), Some(value)) = (d.args.first(), d.args.get(1)) else {
            self.unsupported(d, "NAME VALUE expected");
            return true;
        };
        if let Err(why) = out::header_ok(name, (!value.contains('$')).then_some(value.as_str())) {
            self.unsupported(d, why);
            return true;
        }
        let lname = name.to_ascii_lowercase();
        match (lname.as_str(), value.as_str()) {
            ("host", "$host" | "$http_host") => self.mapped(d, "rampart passes the client's Host"),
            ("x-forwarded-for", "$proxy_add_x_forwarded_for" | "$remote_addr") => {
                self.mapped(d, "rampart appends the client to X-Forwarded-For")
            }
            ("x-forwarded-proto", "$scheme") => self.mapped(d, "rampart sets X-Forwarded-Proto"),
            ("x-forwarded-host", "$host" | "$http_host") => self.approx(d, "rampart passes Host unchanged; X-Forwarded-Host is not set"),
            ("upgrade", "$http_upgrade") | ("connection", "upgrade" | "Upgrade" | "$connection_upgrade") => {
                self.mapped(d, "rampart passes WebSocket upgrades")
            }
            ("connection", "") | ("connection", "close") => self.mapped(d, "rampart manages connections to servers itself (kept alive)"),
            ("content-length" | "transfer-encoding" | "te" | "trailer" | "keep-alive" | "proxy-connection", _) => {
                self.approx(d, "rampart sets the headers that frame a message or belong to one hop itself")
            }
            (_, "") => {
                let mut r = Table::default();
                r.set("del_header", list(std::slice::from_ref(name)));
                match rules {
                    Some(rs) => {
                        rs.push(r);
                        self.mapped(d, "a [[listener.rule]] del_header (an empty value: not passed)");
                    }
                    None => self.approx(d, "remove it with a [[listener.rule]] del_header (not imported at this level)"),
                }
            }
            (_, v) if v.contains('$') => self.unsupported(
                d,
                "a header value from nginx variables has no rampart equivalent (X-Forwarded-For/-Proto are rampart's)",
            ),
            (_, v) => {
                let mut r = Table::default();
                r.set("set_header", format!("{{ {} = {} }}", s(name), s(v)));
                match rules {
                    Some(rs) => {
                        rs.push(r);
                        self.mapped(d, "a [[listener.rule]] set_header");
                    }
                    None => self.approx(d, "set it with a [[listener.rule]] set_header (not imported at this level)"),
                }
            }
        }
        true
    }

    /// Directives that mean the same wherever they are (http, server,
    /// location): performance switches, compression, logs.
    fn common(&mut self, d: &Directive) -> bool {
        match d.name.as_str() {
            "sendfile" | "tcp_nopush" | "tcp_nodelay" | "server_tokens" | "types_hash_max_size"
            | "server_names_hash_bucket_size" | "default_type" | "charset" | "types"
            | "aio" | "directio" | "open_file_cache" | "reset_timedout_connection" => {
                self.mapped(d, "nothing to set in rampart")
            }
            n if n.starts_with("gzip") || n == "brotli" => {
                self.unsupported(d, "rampart does not compress")
            }
            "keepalive_timeout" | "keepalive_requests" => self.approx(
                d,
                "rampart closes idle client connections after request_header_timeout",
            ),
            "access_log" | "log_format" | "error_log" | "log_not_found" | "open_log_file_cache" => {
                self.approx(d, "rampart's access log ([global] access_log = text or json) and stderr")
            }
            "include" => self.unsupported(d, "includes are not followed: import the included file on its own"),
            "client_max_body_size" | "client_body_buffer_size" | "large_client_header_buffers"
            | "client_header_buffer_size" | "client_body_timeout" => {
                self.approx(d, "rampart streams bodies; its header limits are its own")
            }
            "set_real_ip_from" | "real_ip_header" | "real_ip_recursive" => self.unsupported(
                d,
                "rampart takes the client address from the PROXY protocol (proxy_protocol.from), not from X-Forwarded-For",
            ),
            "limit_req_status" => {
                if d.args.first().map(String::as_str) == Some("429") {
                    self.mapped(d, "rampart answers 429 to requests over a limit")
                } else {
                    self.approx(d, "rampart answers 429 to requests over a limit")
                }
            }
            "limit_req_log_level" | "limit_req_dry_run" => self.approx(d, "rampart counts limited requests in rampart_rate_limited_total and logs end=rate_limited"),
            "if" => self.unsupported(d, "if blocks are not mapped: write [[listener.rule]] matches by hand"),
            "set" | "map" => self.unsupported(d, "nginx variables have no rampart equivalent"),
            "more_set_headers" | "more_clear_headers" | "expires" | "etag" | "if_modified_since" => {
                self.unsupported(d, "no rampart equivalent is mapped")
            }
            _ => return false,
        }
        true
    }

    fn http_level(&mut self, ds: &[Directive]) {
        let mut inherited = Table::default();
        // upstreams and zones first: servers name them
        for d in ds {
            match d.name.as_str() {
                "upstream" => self.upstream(d, false),
                "limit_req_zone" => self.limit_req_zone(d),
                "resolver" => self.resolver(d),
                _ => {}
            }
        }
        for d in ds {
            match d.name.as_str() {
                "upstream" | "limit_req_zone" | "resolver" => {}
                "server" => {
                    let b = d.block.clone().unwrap_or_default();
                    self.server(d, &b, &inherited);
                }
                "resolver_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        self.cfg.resolver.set("timeout", s(&t));
                        self.mapped(d, "[resolver] timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "client_header_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        inherited.set("__request_header_timeout", s(&t));
                        self.mapped(d, "the listener's request_header_timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "send_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        inherited.set("__client_timeout", s(&t));
                        self.mapped(d, "the listener's client_timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "ssl_protocols" | "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_session_cache"
                | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_dhparam" | "ssl_ecdh_curve" | "ssl_stapling"
                | "ssl_stapling_verify" => self.approx(d, "rustls chooses versions (TLS 1.2, 1.3) and modern suites; resumption and tickets are on"),
                _ => {
                    if !self.common(d) && !self.proxy_setting(d, &mut inherited) {
                        self.unsupported(d, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        if !inherited.0.is_empty() {
            self.pool_settings.push(("*".into(), inherited));
        }
    }

    fn resolver(&mut self, d: &Directive) {
        let mut ns: Vec<String> = Vec::new();
        let mut approx = false;
        for a in &d.args {
            if let Some(v) = a.strip_prefix("valid=") {
                if let Some(t) = duration(v) {
                    self.cfg.resolver.set("max_ttl", s(&t));
                }
            } else if a.starts_with("ipv6=")
                || a.starts_with("ipv4=")
                || a.starts_with("status_zone=")
            {
                approx = true;
            } else {
                let addr = if a.parse::<std::net::IpAddr>().is_ok() {
                    let ip: std::net::IpAddr =
                        a.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
                    std::net::SocketAddr::new(ip, 53).to_string()
                } else {
                    a.trim_matches(|c| c == '[' || c == ']').to_string()
                };
                match addr.parse::<std::net::SocketAddr>() {
                    Ok(sa) => ns.push(sa.to_string()),
                    Err(_) => {
                        self.unsupported(d, format!("{a}: rampart's nameservers are IP addresses"));
                        return;
                    }
                }
            }
        }
        if !ns.is_empty() {
            self.cfg.resolver.set("nameservers", list(&ns));
        }
        let note = "[resolver] nameservers; valid= → max_ttl (rampart re-resolves at the record's TTL, capped by it)";
        if approx {
            self.approx(d, format!("{note}; ipv4=/ipv6= are not imported"));
        } else {
            self.mapped(d, note);
        }
    }

    fn limit_req_zone(&mut self, d: &Directive) {
        let key = d.args.first().cloned().unwrap_or_default();
        let mut zone = None;
        let mut size = None;
        let mut rate = None;
        for a in &d.args[1.min(d.args.len())..] {
            if let Some(z) = a.strip_prefix("zone=") {
                let (n, sz) = z.split_once(':').unwrap_or((z, ""));
                zone = Some(n.to_string());
                size = sz
                    .strip_suffix(['m', 'M'])
                    .and_then(|m| m.parse::<u64>().ok());
            } else if let Some(r) = a.strip_prefix("rate=") {
                rate = r
                    .strip_suffix("r/s")
                    .map(|n| format!("{n}/s"))
                    .or_else(|| r.strip_suffix("r/m").map(|n| format!("{n}/m")));
            }
        }
        let k = match key.as_str() {
            "$binary_remote_addr" | "$remote_addr" => Some("client_ip".to_string()),
            "$uri" | "$request_uri" => Some("path".to_string()),
            "$server_name" | "$host" => Some("all".to_string()),
            h if h.starts_with("$http_") => Some(format!("header:{}", h[6..].replace('_', "-"))),
            _ => None,
        };
        let (Some(zone), Some(rate), Some(k)) = (zone, rate, k) else {
            self.unsupported(d, "limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m with a client, URI, host or header key is mapped");
            return;
        };
        let mut t = Table::default();
        t.set("name", s(&zone));
        t.set("key", s(&k));
        t.set("rate", s(&rate));
        t.set("burst", "0".into());
        if let Some(mb) = size {
            // nginx: about 16,000 states per megabyte
            t.set("max_keys", (mb * 16_000).clamp(1, 10_000_000).to_string());
        }
        self.cfg.rate_limits.push(t);
        self.zones
            .insert(zone.clone(), self.cfg.rate_limits.len() - 1);
        let exact = k != "all" || key == "$server_name";
        let mut note = format!("[[rate_limit]] {zone:?} (key {k}, {rate}; the zone's size → max_keys at nginx's 16,000 per MB)");
        if !exact {
            note.push_str("; $host is counted as one key for the listener");
        }
        if exact {
            self.mapped(d, note);
        } else {
            self.approx(d, note);
        }
    }

    fn upstream(&mut self, d: &Directive, stream: bool) {
        let Some(name) = d.args.first().cloned() else {
            self.unsupported(d, "upstream NAME expected");
            return;
        };
        let mut p = out::Pool::default();
        p.keys.set("name", s(&name));
        self.mapped(d, "a [[pool]]");
        for e in d.block.iter().flatten() {
            let a0 = e.args.first().map(String::as_str).unwrap_or("");
            match e.name.as_str() {
                "server" => self.upstream_server(e, &mut p),
                "least_conn" => {
                    p.keys.set("balance", s("least_conn"));
                    self.mapped(e, "balance = \"least_conn\"");
                }
                "ip_hash" => {
                    p.keys.set("balance", s("hash"));
                    p.keys.set("hash_key", s("client_ip"));
                    self.approx(e, "balance = \"hash\" on the client address (nginx hashes an IPv4 client's /24, rampart the whole address)");
                }
                "hash" => {
                    let key = match a0 {
                        "$remote_addr" | "$binary_remote_addr" => Some("client_ip".to_string()),
                        "$request_uri" | "$uri" => Some("uri".to_string()),
                        h if h.starts_with("$http_") => {
                            Some(format!("header:{}", h[6..].replace('_', "-")))
                        }
                        _ => None,
                    };
                    match key {
                        Some(k) => {
                            p.keys.set("balance", s("hash"));
                            p.keys.set("hash_key", s(&k));
                            if e.args.iter().any(|a| a == "consistent") {
                                self.mapped(e, "balance = \"hash\" (consistent)");
                            } else {
                                self.approx(
                                    e,
                                    "balance = \"hash\": rampart's hash is always consistent",
                                );
                            }
                        }
                        None => self.unsupported(
                            e,
                            "hash on this key is not mapped (client, URI or a header)",
                        ),
                    }
                }
                "random" => {
                    p.keys.set("balance", s("random_two"));
                    if e.args.iter().any(|a| a == "two") {
                        self.mapped(e, "balance = \"random_two\"");
                    } else {
                        self.approx(
                            e,
                            "balance = \"random_two\" (the power of two choices, not plain random)",
                        );
                    }
                }
                "keepalive" => match a0.parse::<u32>() {
                    Ok(n) => {
                        p.keys.set("max_idle_per_server", n.to_string());
                        self.approx(e, "max_idle_per_server: per server and worker thread (nginx: for the whole upstream, per worker)");
                    }
                    Err(_) => self.unsupported(e, "not a number"),
                },
                "keepalive_timeout" => match duration(a0) {
                    Some(t) => {
                        p.keys.set("keepalive_timeout", s(&t));
                        self.mapped(e, "keepalive_timeout");
                    }
                    None => self.unsupported(e, "not a duration"),
                },
                "keepalive_requests" | "keepalive_time" => self.approx(
                    e,
                    "rampart keeps a server connection until keepalive_timeout",
                ),
                "zone" => self.mapped(e, "rampart's pool state is shared by every thread already"),
                "resolver" => self.resolver(e),
                _ => self.unsupported(e, "no rampart equivalent is mapped"),
            }
        }
        if stream && p.keys.get("hash_key").is_some_and(|k| k != "\"client_ip\"") {
            p.keys.set("hash_key", s("client_ip"));
        }
        if p.servers.is_empty() {
            self.report.push(Entry {
                line: d.line,
                directive: d.text(),
                fidelity: Fidelity::Unsupported,
                note: "no server rampart can use: the pool is left out".into(),
            });
            return;
        }
        self.cfg.pools.push(p);
        self.pool_ix.insert(name, self.cfg.pools.len() - 1);
    }

    fn upstream_server(&mut self, e: &Directive, p: &mut out::Pool) {
        let Some(addr) = e.args.first() else {
            self.unsupported(e, "server ADDRESS expected");
            return;
        };
        if addr.starts_with("unix:") {
            self.unsupported(e, "unix sockets are not supported");
            return;
        }
        let addr = if addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.ends_with(':'))
        {
            addr.clone()
        } else {
            format!("{addr}:80")
        };
        if let Err(why) = out::address_ok(&addr) {
            self.unsupported(e, why);
            return;
        }
        let mut sv = Table::default();
        sv.set("address", s(&addr));
        let by_name = addr.parse::<std::net::SocketAddr>().is_err();
        let mut notes: Vec<&str> = Vec::new();
        let mut approx = false;
        let mut resolve = false;
        for a in &e.args[1..] {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            match k {
                "weight" => {
                    if let Ok(n) = v.parse::<u32>() {
                        sv.set("weight", n.clamp(1, 256).to_string());
                    }
                }
                "backup" => sv.set("backup", "true".into()),
                "down" => {
                    self.approx(e, "a server marked down is left out");
                    return;
                }
                "resolve" => resolve = true,
                "max_conns" => {
                    if let Ok(n) = v.parse::<u32>() {
                        p.keys.set("max_connections_per_server", n.to_string());
                        approx = true;
                        notes.push("max_conns → the pool's max_connections_per_server, one limit for each of its servers");
                    }
                }
                "max_fails" => {
                    if let Ok(n) = v.parse::<u32>() {
                        let b = p
                            .keys
                            .get("__breaker")
                            .map(String::from)
                            .unwrap_or_default();
                        let _ = b;
                        p.keys.set("__max_fails", n.to_string());
                        approx = true;
                        notes.push("max_fails → [pool.breaker] consecutive_failures (nginx counts failures within fail_timeout)");
                    }
                }
                "fail_timeout" => {
                    if let Some(t) = duration(v).filter(|t| t != "0s") {
                        p.keys.set("__fail_timeout", s(&t));
                        notes.push("fail_timeout → [pool.breaker] ejection_time");
                    }
                }
                "slow_start" => {
                    if let Some(t) = duration(v) {
                        p.keys.set("slow_start", s(&t));
                        notes.push("slow_start");
                    }
                }
                _ => {
                    approx = true;
                    notes.push("some server options are not imported");
                }
            }
        }
        if by_name && !resolve {
            approx = true;
            notes.push("nginx resolves this name once at start; rampart re-resolves it at its TTL (the stale-IP fix)");
        } else if by_name {
            notes.push("resolve → one member per DNS record, re-resolved at the TTL");
        }
        p.servers.push(sv);
        let mut note = "[[pool.server]]".to_string();
        for n in notes {
            note.push_str("; ");
            note.push_str(n);
        }
        if approx {
            self.approx(e, note);
        } else {
            self.mapped(e, note);
        }
    }

    /// The pool for `proxy_pass URL`: an upstream by name, or a new pool of one
    /// server.
    fn proxy_pass(&mut self, d: &Directive, loc_prefix: Option<&str>) -> Option<String> {
        let url = d.args.first().cloned().unwrap_or_default();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_string(), r.to_string()),
            None => (String::new(), url.clone()),
        };
        if url.contains('$') {
            self.unsupported(
                d,
                "a target built from variables is not mapped: name an upstream",
            );
            return None;
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.clone(), String::new()),
        };
        let mut notes = Vec::new();
        let mut approx = false;
        if !path.is_empty() && Some(path.as_str()) != loc_prefix {
            approx = true;
            notes.push(format!(
                "the URI part {path:?} (nginx replaces the location's prefix with it) is not imported: rampart passes the URI unchanged"
            ));
        }
        let name = if self.pool_ix.contains_key(&host) {
            host.clone()
        } else {
            // a server of its own
            let (h, port) = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.to_string()),
                _ => (
                    host.clone(),
                    if scheme == "https" {
                        "443".into()
                    } else {
                        "80".into()
                    },
                ),
            };
            if h.is_empty() {
                self.unsupported(d, "no host in the target");
                return None;
            }
            if let Err(why) = out::address_ok(&format!("{h}:{port}")) {
                self.unsupported(d, why);
                return None;
            }
            let name = host.replace(':', "-");
            if !self.pool_ix.contains_key(&name) {
                let mut p = out::Pool::default();
                p.keys.set("name", s(&name));
                let mut sv = Table::default();
                sv.set("address", s(&format!("{h}:{port}")));
                p.servers.push(sv);
                if scheme == "https" {
                    let mut t = Table::default();
                    t.set("ca", s("system"));
                    p.tls = Some(t);
                }
                self.cfg.pools.push(p);
                self.pool_ix.insert(name.clone(), self.cfg.pools.len() - 1);
            }
            if h.parse::<std::net::IpAddr>().is_err() {
                approx = true;
                notes.push(
                    "nginx resolves this name once at start; rampart re-resolves it at its TTL"
                        .into(),
                );
            }
            name
        };
        if scheme == "https" {
            if let Some(&pi) = self.pool_ix.get(&name) {
                self.cfg.pools[pi].tls.get_or_insert_with(Table::default);
            }
        }
        let mut note = format!("pool = {name:?}");
        for n in notes {
            note.push_str("; ");
            note.push_str(&n);
        }
        if approx {
            self.approx(d, note);
        } else {
            self.mapped(d, note);
        }
        Some(name)
    }

    fn server(&mut self, d: &Directive, b: &[Directive], inherited: &Table) {
        let mut sv = Server::default();
        self.mapped(
            d,
            "rules of the listener(s) for its addresses, matched by its names",
        );
        let mut settings = inherited.clone();
        let mut access: Vec<&Directive> = Vec::new();
        for e in b {
            let a0 = e.args.first().cloned().unwrap_or_default();
            match e.name.as_str() {
                "listen" => match listen_addr(&a0) {
                    Ok(addr) => {
                        let mut approx = Vec::new();
                        for o in &e.args[1..] {
                            match o.as_str() {
                                "ssl" => sv.tls = true,
                                "default_server" | "default" => sv.default = true,
                                "http2" => {}
                                "proxy_protocol" => sv.proxy_protocol = true,
                                "reuseport" => {}
                                o => approx.push(o.to_string()),
                            }
                        }
                        sv.binds.push(addr);
                        if approx.is_empty() {
                            self.mapped(e, "bind (and TLS, default_server, proxy_protocol as given)");
                        } else {
                            self.approx(e, format!("bind; not imported: {}", approx.join(" ")));
                        }
                    }
                    Err(er) => self.unsupported(e, er),
                },
                "http2" => self.mapped(e, "rampart serves HTTP/2 (h2 by ALPN on TLS, h2c in clear)"),
                "server_name" => {
                    let mut approx = false;
                    for n in &e.args {
                        if n.starts_with('~') {
                            approx = true;
                        } else if n == "_" || n.is_empty() || n == "localhost" && e.args.len() == 1 {
                            // catch-all names
                            if n != "localhost" {
                                continue;
                            }
                            sv.names.push(n.clone());
                        } else if let Some(d) = n.strip_prefix('.') {
                            sv.names.push(d.to_string());
                            sv.names.push(format!("*.{d}"));
                        } else if n.starts_with("*.") || !n.contains('*') {
                            sv.names.push(n.clone());
                        } else {
                            approx = true;
                        }
                    }
                    if approx {
                        self.approx(e, "host matches; regex and mid-name wildcard names are not imported");
                    } else {
                        self.mapped(e, "host matches of its rules");
                    }
                }
                "ssl_certificate" => {
                    sv.certs.push(a0.clone());
                    self.mapped(e, "[listener.tls] cert");
                }
                "ssl_certificate_key" => {
                    sv.keys.push(a0.clone());
                    self.mapped(e, "[listener.tls] cert's key");
                }
                "ssl_client_certificate" | "ssl_trusted_certificate" if e.name == "ssl_client_certificate" => {
                    sv.tls_extra.set("client_ca", s(&a0));
                    self.mapped(e, "[listener.tls] client_ca");
                }
                "ssl_verify_client" => {
                    match a0.as_str() {
                        "on" => sv.tls_extra.set("client_auth", s("required")),
                        "optional" => sv.tls_extra.set("client_auth", s("optional")),
                        _ => {}
                    }
                    self.mapped(e, "[listener.tls] client_auth");
                }
                "ssl_protocols" => {
                    if !e.args.iter().any(|p| p == "TLSv1.2") && e.args.iter().any(|p| p == "TLSv1.3") {
                        sv.tls_extra.set("min_version", s("1.3"));
                        self.mapped(e, "[listener.tls] min_version = \"1.3\"");
                    } else {
                        self.approx(e, "rampart serves TLS 1.2 and 1.3 (older versions are refused)");
                    }
                }
                "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_session_cache" | "ssl_session_timeout"
                | "ssl_session_tickets" | "ssl_dhparam" | "ssl_ecdh_curve" | "ssl_stapling" | "ssl_stapling_verify"
                | "ssl_buffer_size" => self.approx(e, "rustls chooses modern suites; resumption and tickets are on"),
                "location" => {
                    if let Some(l) = self.location(e, &mut settings) {
                        sv.locs.push(l);
                    }
                }
                "return" | "rewrite" => {
                    let mut rules = Vec::new();
                    self.return_or_rewrite(e, &mut rules);
                    sv.pre.extend(rules);
                }
                "allow" | "deny" => access.push(e),
                "limit_req" => {
                    let mut rules = Vec::new();
                    self.limit_req(e, &mut rules);
                    sv.pre.extend(rules);
                }
                "add_header" => {
                    let mut rules = Vec::new();
                    self.add_header(e, &mut rules);
                    sv.pre.extend(rules);
                }
                "proxy_pass" => {
                    self.unsupported(e, "proxy_pass belongs in a location");
                }
                "root" | "index" | "try_files" | "autoindex" | "error_page" => {
                    self.unsupported(e, "rampart serves no files and no error pages of its own: put a file server behind it")
                }
                _ if self.common(e) => {}
                _ => {
                    let mut t = Table::default();
                    if e.name == "proxy_set_header" {
                        self.proxy_set_header(e, Some(&mut sv.pre));
                    } else if self.proxy_setting(e, &mut t) {
                        settings.0.extend(t.0);
                    } else {
                        self.unsupported(e, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        if let Some(r) = self.access_rules(&access) {
            sv.pre.insert(0, r);
        }
        if sv.binds.is_empty() {
            sv.binds.push("0.0.0.0:80".into());
            self.report.push(Entry {
                line: d.line,
                directive: "server".into(),
                fidelity: Fidelity::Mapped,
                note: "no listen: nginx's default, *:80".into(),
            });
        }
        // proxy settings of the server apply to the pools its locations use
        for l in &sv.locs {
            if let Some(p) = &l.pool {
                self.pool_settings.push((p.clone(), settings.clone()));
            }
        }
        self.servers.push(sv);
    }

    /// `allow` / `deny` lines: first match wins; rampart writes the common
    /// shapes: allows then `deny all`, or denies then (optionally) `allow all`.
    fn access_rules(&mut self, access: &[&Directive]) -> Option<Table> {
        if access.is_empty() {
            return None;
        }
        let last_all = access
            .last()
            .is_some_and(|d| d.args.first().map(String::as_str) == Some("all"));
        let body = &access[..access.len() - usize::from(last_all)];
        let allow_then_deny_all = last_all
            && access.last().is_some_and(|d| d.name == "deny")
            && body.iter().all(|d| d.name == "allow");
        let deny_then_allow = body.iter().all(|d| d.name == "deny")
            && (!last_all || access.last().is_some_and(|d| d.name == "allow"));
        if access.iter().all(|d| d.name == "allow") {
            for d in access {
                self.mapped(d, "everyone may: nothing to write");
            }
            return None;
        }
        let nets: Vec<String> = body
            .iter()
            .filter_map(|d| d.args.first().cloned())
            .collect();
        let valid = nets.iter().all(|n| {
            let a = n.split('/').next().unwrap_or("");
            a.parse::<std::net::IpAddr>().is_ok()
        });
        let rule = if !valid {
            None
        } else if allow_then_deny_all {
            src_complement(&nets).ok().map(|rest| {
                let mut t = Table::default();
                if !rest.is_empty() {
                    t.set("src", list(&rest));
                }
                t.set("deny", "403".into());
                t
            })
        } else if deny_then_allow && !nets.is_empty() {
            let mut t = Table::default();
            t.set("src", list(&nets));
            t.set("deny", "403".into());
            Some(t)
        } else {
            None
        };
        for d in access {
            if rule.is_some() {
                self.mapped(d, "a deny = 403 rule on the addresses it leaves out");
            } else {
                self.unsupported(d, "this order of allow and deny is not mapped (allows then deny all, or denies then allow all)");
            }
        }
        rule
    }

    fn add_header(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        match (e.args.first(), e.args.get(1)) {
            (Some(n), Some(v)) if !v.contains('$') && out::header_ok(n, Some(v)).is_ok() => {
                let mut r = Table::default();
                r.set("response_set_header", format!("{{ {} = {} }}", s(n), s(v)));
                rules.push(r);
                if e.args.get(2).map(String::as_str) == Some("always") {
                    self.mapped(e, "a response_set_header rule");
                } else {
                    self.approx(e, "a response_set_header rule (nginx adds it to 2xx/3xx answers only, without always)");
                }
            }
            _ => self.unsupported(e, "a value from nginx variables is not mapped"),
        }
    }

    fn limit_req(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        let mut zone = None;
        let mut burst = 0u64;
        let mut nodelay = false;
        for a in &e.args {
            if let Some(z) = a.strip_prefix("zone=") {
                zone = Some(z.to_string());
            } else if let Some(b) = a.strip_prefix("burst=") {
                burst = b.parse().unwrap_or(0);
            } else if a == "nodelay" {
                nodelay = true;
            }
        }
        let Some(&zi) = zone.as_ref().and_then(|z| self.zones.get(z)) else {
            self.unsupported(e, "the zone is not defined in this file");
            return;
        };
        let name = zone.unwrap_or_default();
        self.cfg.rate_limits[zi].set("burst", burst.to_string());
        let mut r = Table::default();
        r.set("rate_limit", s(&name));
        rules.push(r);
        let mut note = format!("a rule with rate_limit = {name:?}, burst {burst}; rampart answers 429 (nginx: limit_req_status, 503 by default)");
        if !nodelay && burst > 0 {
            note.push_str("; without nodelay nginx delays requests within the burst, rampart passes them at once");
        }
        self.approx(e, note);
    }

    /// `return` and `rewrite ... redirect|permanent` → deny or redirect rules.
    fn return_or_rewrite(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        let vars = |t: &str| -> Option<String> {
            let out = t
                .replace("$request_uri", "{uri}")
                .replace("$host", "{host}")
                .replace("$server_name", "{host}")
                .replace("$uri", "{path}")
                .replace("$is_args$args", "{query}");
            (!out.contains('$')).then_some(out)
        };
        let mut r = Table::default();
        if e.name == "return" {
            let code: Option<u16> = e.args.first().and_then(|c| c.parse().ok());
            match (code, e.args.get(1)) {
                (Some(c @ (301 | 302 | 303 | 307 | 308)), Some(url)) => match vars(url) {
                    Some(to) => {
                        r.set("redirect", format!("{{ to = {}, status = {c} }}", s(&to)));
                        self.mapped(e, "a redirect rule");
                    }
                    None => {
                        self.unsupported(e, "a target with nginx variables other than $host, $request_uri, $uri is not mapped");
                        return;
                    }
                },
                (None, Some(_)) | (None, None)
                    if e.args.first().is_some_and(|u| u.starts_with("http")) =>
                {
                    match e.args.first().and_then(|u| vars(u)) {
                        Some(to) => {
                            r.set("redirect", format!("{{ to = {}, status = 302 }}", s(&to)));
                            self.mapped(e, "a redirect rule (302)");
                        }
                        None => {
                            self.unsupported(e, "a target with nginx variables is not mapped");
                            return;
                        }
                    }
                }
                (Some(c), body) if (400..=599).contains(&c) => {
                    match body {
                        Some(b) if !b.contains('$') => {
                            r.set("deny", format!("{{ status = {c}, body = {} }}", s(b)))
                        }
                        _ => r.set("deny", c.to_string()),
                    }
                    self.mapped(e, "a deny rule");
                }
                _ => {
                    self.unsupported(e, "rampart's rules answer redirects and errors (3xx with a target, 400-599), not other statuses");
                    return;
                }
            }
        } else {
            // rewrite REGEX REPLACEMENT [flag]
            let (Some(re), Some(rep)) = (e.args.first(), e.args.get(1)) else {
                self.unsupported(e, "rewrite REGEX REPLACEMENT expected");
                return;
            };
            let flag = e.args.get(2).map(String::as_str).unwrap_or("");
            let status = match flag {
                "redirect" => 302,
                "permanent" => 301,
                _ if rep.starts_with("http://") || rep.starts_with("https://") => 302,
                _ => {
                    self.unsupported(e, "rewriting the URI (last/break) is not in rampart: only redirects are mapped");
                    return;
                }
            };
            if rep.contains("$1") || rep.contains("$2") {
                self.unsupported(
                    e,
                    "a redirect built from the regex's captures is not mapped",
                );
                return;
            }
            let Some(to) = vars(rep) else {
                self.unsupported(e, "a target with nginx variables is not mapped");
                return;
            };
            if regex::Regex::new(re).is_err() {
                self.unsupported(e, "a regex rampart's regex crate refuses");
                return;
            }
            r.set("path_regex", s(re));
            r.set(
                "redirect",
                format!("{{ to = {}, status = {status} }}", s(&to)),
            );
            self.approx(e, "a redirect rule on the path (nginx matches the regex against the URI, and appends the query)");
        }
        rules.push(r);
    }

    fn location(&mut self, e: &Directive, settings: &mut Table) -> Option<Loc> {
        let (kind, pat) = match e.args.as_slice() {
            [m, p] if m == "=" => (LocKind::Exact, p.clone()),
            [m, p] if m == "^~" => (LocKind::PrefixStop, p.clone()),
            [m, p] if m == "~" || m == "~*" => (
                LocKind::Regex,
                if m == "~*" {
                    format!("(?i){p}")
                } else {
                    p.clone()
                },
            ),
            [p] if p.starts_with('@') => {
                self.unsupported(
                    e,
                    "named locations (error_page / try_files targets) are not mapped",
                );
                return None;
            }
            [p] => (LocKind::Prefix, p.clone()),
            _ => {
                self.unsupported(e, "location [=|^~|~|~*] PATTERN expected");
                return None;
            }
        };
        let mut m = Table::default();
        match kind {
            LocKind::Exact if pat.starts_with('/') => m.set("path", s(&pat)),
            LocKind::PrefixStop | LocKind::Prefix if pat == "/" => {}
            LocKind::PrefixStop | LocKind::Prefix if pat.starts_with('/') => {
                m.set("path_prefix", s(&pat))
            }
            LocKind::Regex if regex::Regex::new(&pat).is_ok() => m.set("path_regex", s(&pat)),
            _ => {
                self.unsupported(
                    e,
                    "a pattern rampart cannot match (paths start with /; the regex crate's syntax)",
                );
                return None;
            }
        }
        let mut loc = Loc {
            kind,
            m,
            len: pat.len(),
            rules: Vec::new(),
            pool: None,
        };
        self.mapped(
            e,
            "rules matching this path, in nginx's order of precedence",
        );
        let mut local = settings.clone();
        let mut access: Vec<&Directive> = Vec::new();
        let block = e.block.clone().unwrap_or_default();
        for d in &block {
            match d.name.as_str() {
                "proxy_pass" => {
                    let prefix = (kind != LocKind::Regex).then_some(pat.as_str());
                    loc.pool = self.proxy_pass(d, prefix);
                }
                "return" | "rewrite" => self.return_or_rewrite(d, &mut loc.rules),
                "allow" | "deny" => access.push(d),
                "limit_req" => self.limit_req(d, &mut loc.rules),
                "add_header" => self.add_header(d, &mut loc.rules),
                "proxy_set_header" => {
                    self.proxy_set_header(d, Some(&mut loc.rules));
                }
                "location" => self.unsupported(d, "nested locations are not mapped"),
                "root" | "alias" | "index" | "try_files" | "autoindex" | "expires"
                | "error_page" => {
                    self.unsupported(d, "rampart serves no files: put a file server behind it")
                }
                "proxy_buffering"
                | "proxy_buffers"
                | "proxy_buffer_size"
                | "proxy_busy_buffers_size"
                | "proxy_request_buffering"
                | "proxy_redirect"
                | "proxy_cache"
                | "proxy_cache_valid"
                | "proxy_intercept_errors"
                | "proxy_ssl_server_name"
                | "proxy_ssl_verify"
                | "proxy_ssl_name"
                | "proxy_hide_header"
                | "proxy_pass_header"
                | "proxy_ignore_headers"
                | "proxy_cookie_path" => self.approx(
                    d,
                    "rampart streams without buffering or caching; this is not imported",
                ),
                _ if self.common(d) => {}
                _ => {
                    let mut t = Table::default();
                    if self.proxy_setting(d, &mut t) {
                        local.0.extend(t.0);
                    } else {
                        self.unsupported(d, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        if let Some(r) = self.access_rules(&access) {
            loc.rules.insert(0, r);
        }
        if let Some(p) = &loc.pool {
            self.pool_settings.push((p.clone(), local));
        }
        Some(loc)
    }

    fn stream_level(&mut self, ds: &[Directive]) {
        for d in ds {
            if d.name == "upstream" {
                self.upstream(d, true);
            } else if d.name == "resolver" {
                self.resolver(d);
            }
        }
        let mut inherited = Table::default();
        for d in ds {
            match d.name.as_str() {
                "upstream" | "resolver" => {}
                "server" => {
                    self.mapped(d, "a tcp [[listener]]");
                    let mut binds = Vec::new();
                    let mut pool = None;
                    let mut tls = Table::default();
                    let mut certs = (Vec::new(), Vec::new());
                    let mut pp = false;
                    let mut local = inherited.clone();
                    for e in d.block.iter().flatten() {
                        let a0 = e.args.first().cloned().unwrap_or_default();
                        match e.name.as_str() {
                            "listen" => match listen_addr(&a0) {
                                Ok(a) => {
                                    binds.push(a);
                                    let opts: Vec<&String> = e.args[1..].iter().collect();
                                    if opts.iter().any(|o| *o == "udp") {
                                        binds.pop();
                                        self.unsupported(e, "UDP is not proxied by rampart");
                                        continue;
                                    }
                                    if opts.iter().any(|o| *o == "proxy_protocol") {
                                        pp = true;
                                    }
                                    if opts.iter().any(|o| *o == "ssl") {
                                        tls.set("__ssl", "true".into());
                                    }
                                    self.mapped(e, "bind");
                                }
                                Err(er) => self.unsupported(e, er),
                            },
                            "proxy_pass" => pool = self.proxy_pass(e, None),
                            "proxy_timeout" => {
                                match duration(&a0) {
                                    Some(t) => {
                                        local.set("server_timeout", s(&t));
                                        self.mapped(e, "the pool's server_timeout (a tcp session's idle timeout)");
                                    }
                                    None => self.unsupported(e, "not a duration"),
                                }
                            }
                            "proxy_connect_timeout" => match duration(&a0) {
                                Some(t) => {
                                    local.set("connect_timeout", s(&t));
                                    self.mapped(e, "the pool's connect_timeout");
                                }
                                None => self.unsupported(e, "not a duration"),
                            },
                            "proxy_next_upstream" | "proxy_next_upstream_tries" => {
                                self.mapped(e, "rampart retries a failed connect on another server")
                            }
                            "proxy_protocol" if a0 == "on" => {
                                local.set("send_proxy", s("v1"));
                                self.mapped(e, "the pool's send_proxy = \"v1\"");
                            }
                            "ssl_certificate" => {
                                certs.0.push(a0);
                                self.mapped(e, "[listener.tls] cert");
                            }
                            "ssl_certificate_key" => {
                                certs.1.push(a0);
                                self.mapped(e, "[listener.tls] cert's key");
                            }
                            "ssl_preread" => self.approx(
                                e,
                                "rampart peeks the SNI itself for routes with sni (none imported)",
                            ),
                            _ => self.unsupported(e, "no rampart equivalent is mapped"),
                        }
                    }
                    let Some(pool) = pool else {
                        self.report.push(Entry {
                            line: d.line,
                            directive: "server".into(),
                            fidelity: Fidelity::Unsupported,
                            note: "no proxy_pass rampart can use: the listener is left out".into(),
                        });
                        continue;
                    };
                    let mut t = Table::default();
                    if tls.get("__ssl").is_some() {
                        if certs.0.is_empty() {
                            continue;
                        }
                        t.set("cert", cert_list(&certs.0, &certs.1));
                    }
                    self.pool_settings.push((pool.clone(), local));
                    self.streams.push((binds, pool, t, pp));
                }
                "proxy_timeout" | "proxy_connect_timeout" => {
                    match d.args.first().and_then(|a| duration(a)) {
                        Some(t) => {
                            let k = if d.name == "proxy_timeout" {
                                "server_timeout"
                            } else {
                                "connect_timeout"
                            };
                            inherited.set(k, s(&t));
                            self.mapped(d, format!("the pools' {k}"));
                        }
                        None => self.unsupported(d, "not a duration"),
                    }
                }
                "log_format" | "access_log" | "error_log" => {
                    self.approx(d, "rampart logs tcp sessions in its access log")
                }
                _ => self.unsupported(d, "no rampart equivalent is mapped"),
            }
        }
    }

    /// Listeners from the server blocks, grouped by address set and TLS.
    fn finish(&mut self) {
        // pool settings (timeouts, retries, breaker), the most specific last
        let settings = std::mem::take(&mut self.pool_settings);
        for p in &mut self.cfg.pools {
            let name = p
                .keys
                .get("name")
                .unwrap_or("")
                .trim_matches('"')
                .to_string();
            for (n, t) in &settings {
                if n == "*" || *n == name {
                    for (k, v) in &t.0 {
                        if !k.starts_with("__") {
                            p.keys.set(k, v.clone());
                        }
                    }
                }
            }
            if let Some(n) = p.keys.get("__max_fails").map(String::from) {
                let mut b = Table::default();
                b.set("consecutive_failures", n);
                if let Some(t) = p.keys.get("__fail_timeout") {
                    b.set("ejection_time", t.to_string());
                }
                p.breaker = Some(b);
            } else if let Some(t) = p.keys.get("__fail_timeout").map(String::from) {
                let mut b = Table::default();
                b.set("ejection_time", t);
                p.breaker = Some(b);
            }
            p.keys.0.retain(|(k, _)| !k.starts_with("__"));
        }
        let http_settings: Table = settings
            .iter()
            .filter(|(n, _)| n == "*")
            .flat_map(|(_, t)| t.0.clone())
            .filter(|(k, _)| k.starts_with("__"))
            .fold(Table::default(), |mut a, (k, v)| {
                a.set(k.trim_start_matches("__"), v);
                a
            });
        // group server blocks by (addresses, tls)
        let mut groups: Vec<(Vec<String>, bool, Vec<usize>)> = Vec::new();
        for (i, sv) in self.servers.iter().enumerate() {
            let mut binds = sv.binds.clone();
            binds.sort();
            match groups.iter_mut().find(|g| g.0 == binds && g.1 == sv.tls) {
                Some(g) => g.2.push(i),
                None => groups.push((binds, sv.tls, vec![i])),
            }
        }
        let mut taken: Vec<String> = Vec::new();
        for (gi, (binds, tls, members)) in groups.into_iter().enumerate() {
            let free: Vec<String> = binds
                .iter()
                .filter(|b| !taken.contains(b))
                .cloned()
                .collect();
            if free.len() < binds.len() {
                self.report.push(Entry {
                    line: 0,
                    directive: "(listen)".into(),
                    fidelity: Fidelity::Approximated,
                    note: format!("server blocks that share only some addresses: {} kept on the first listener", binds.len() - free.len()),
                });
            }
            if free.is_empty() {
                continue;
            }
            taken.extend(free.iter().cloned());
            // the default server: the one marked default_server, else the first
            let def = members
                .iter()
                .copied()
                .find(|&i| self.servers[i].default)
                .unwrap_or(members[0]);
            let mut l = out::Listener::default();
            let first_name = self.servers[def].names.first().cloned();
            let name = match first_name {
                Some(n) if groups_name_ok(&n) => format!(
                    "{}{}",
                    n.trim_start_matches("*."),
                    if tls { "-tls" } else { "" }
                ),
                _ => format!("server{}{}", gi + 1, if tls { "-tls" } else { "" }),
            };
            let mut name = name;
            let mut k = 2;
            while self
                .cfg
                .listeners
                .iter()
                .any(|x| x.keys.get("name") == Some(&s(&name)))
            {
                name = format!("{name}-{k}");
                k += 1;
            }
            l.keys.set("name", s(&name));
            l.keys.set("bind", list(&free));
            l.keys.set("mode", s("http"));
            for (k, v) in &http_settings.0 {
                l.keys.set(k, v.clone());
            }
            if members.iter().any(|&i| self.servers[i].proxy_protocol) {
                l.keys.set(
                    "proxy_protocol",
                    "{ from = [\"0.0.0.0/0\", \"::/0\"], mode = \"required\" }".into(),
                );
                self.report.push(Entry {
                    line: 0,
                    directive: "(listen proxy_protocol)".into(),
                    fidelity: Fidelity::Approximated,
                    note: "proxy_protocol = required from everyone: narrow `from` to your load balancers (nginx trusts real client addresses only from set_real_ip_from)".into(),
                });
            }
            if tls {
                let mut certs = Vec::new();
                let mut keys = Vec::new();
                let mut extra = Table::default();
                for &i in std::iter::once(&def).chain(members.iter().filter(|&&i| i != def)) {
                    certs.extend(self.servers[i].certs.clone());
                    keys.extend(self.servers[i].keys.clone());
                    extra.0.extend(self.servers[i].tls_extra.0.clone());
                }
                if certs.is_empty() {
                    self.report.push(Entry {
                        line: 0,
                        directive: "(listen ssl)".into(),
                        fidelity: Fidelity::Unsupported,
                        note: format!("listener {name:?}: ssl without ssl_certificate; left out"),
                    });
                    continue;
                }
                let mut t = Table::default();
                t.set("cert", cert_list(&certs, &keys));
                for (k, v) in extra.0 {
                    t.set(&k, v);
                }
                l.tls = Some(t);
            }
            // rules: named servers first (their host matches), the default last
            let order: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| i != def)
                .chain(std::iter::once(def))
                .collect();
            let mut default_pool: Option<String> = None;
            for i in order {
                let sv = &self.servers[i];
                let hosts: Vec<Option<String>> = if i == def || sv.names.is_empty() {
                    vec![None]
                } else {
                    sv.names.iter().cloned().map(Some).collect()
                };
                let mut locs = sv.locs.clone();
                locs.sort_by(|a, b| {
                    a.kind.cmp(&b.kind).then_with(|| match a.kind {
                        LocKind::PrefixStop | LocKind::Prefix => b.len.cmp(&a.len),
                        _ => std::cmp::Ordering::Equal,
                    })
                });
                // nginx answers 404 to what no location of the server matches;
                // a named server's requests never reach another server's rules
                let has_root = sv
                    .locs
                    .iter()
                    .any(|l| l.m.0.is_empty() && l.kind != LocKind::Exact);
                let ends_in_terminal = sv.pre.iter().any(|r| {
                    r.0.iter().all(|(k, _)| !MATCH_KEYS.contains(&k.as_str()))
                        && (r.get("deny").is_some() || r.get("redirect").is_some())
                });
                for h in &hosts {
                    let with_host = |t: &Table| -> Table {
                        let mut t = t.clone();
                        if let Some(h) = h {
                            t.set("host", s(h));
                        }
                        t
                    };
                    for r in &sv.pre {
                        l.rules.push(with_host(r));
                    }
                    for loc in &locs {
                        for r in &loc.rules {
                            let mut t = loc.m.clone();
                            t.0.extend(
                                r.0.iter()
                                    .filter(|(k, _)| {
                                        k != "path_regex" || loc.m.get("path_regex").is_none()
                                    })
                                    .cloned(),
                            );
                            if r.get("path_regex").is_some()
                                && loc.m.get("path_regex").is_none()
                                && loc
                                    .m
                                    .0
                                    .iter()
                                    .any(|(k, _)| k == "path" || k == "path_prefix")
                            {
                                // rewrite inside a prefix location: the regex decides
                                t.0.retain(|(k, _)| k != "path" && k != "path_prefix");
                            }
                            l.rules.push(with_host(&t));
                        }
                        if let Some(p) = &loc.pool {
                            if h.is_none() && i == def && loc.m.0.is_empty() {
                                default_pool = Some(p.clone());
                            } else {
                                let mut t = loc.m.clone();
                                t.set("pool", s(p));
                                l.rules.push(with_host(&t));
                            }
                        } else if loc
                            .rules
                            .iter()
                            .all(|r| r.get("deny").is_none() && r.get("redirect").is_none())
                        {
                            // a location rampart cannot serve: answer it rather
                            // than let it fall through to another pool
                            let mut t = loc.m.clone();
                            t.set("deny", "{ status = 501, body = \"not imported: this location serves files or rewrites in nginx\\n\" }".into());
                            l.rules.push(with_host(&t));
                        }
                    }
                    if !has_root && !ends_in_terminal {
                        let mut t = Table::default();
                        t.set("deny", "404".into());
                        l.rules.push(with_host(&t));
                    }
                }
            }
            let pool = default_pool.or_else(|| {
                l.rules
                    .iter()
                    .find_map(|r| r.get("pool").map(|p| p.trim_matches('"').to_string()))
            });
            match pool {
                Some(p) => l.keys.set("pool", s(&p)),
                None => {
                    // no pool at all (only redirects, e.g. the http → https server)
                    l.keys.set("pool", s("__first"));
                }
            }
            self.cfg.listeners.push(l);
        }
        for (binds, pool, t, pp) in std::mem::take(&mut self.streams) {
            if binds.is_empty() {
                continue;
            }
            let mut l = out::Listener::default();
            let name = format!("{pool}-tcp");
            l.keys.set("name", s(&name));
            l.keys.set("bind", list(&binds));
            l.keys.set("mode", s("tcp"));
            l.keys.set("pool", s(&pool));
            if pp {
                l.keys.set(
                    "proxy_protocol",
                    "{ from = [\"0.0.0.0/0\", \"::/0\"], mode = \"required\" }".into(),
                );
            }
            if !t.0.is_empty() {
                l.tls = Some(t);
            }
            self.cfg.listeners.push(l);
        }
        self.cfg.drop_unused_rate_limits();
        // a runnable config, always
        if self.cfg.placeholder_pool() {
            self.report.push(Entry {
                line: 0,
                directive: "(upstreams)".into(),
                fidelity: Fidelity::Approximated,
                note: "no upstream rampart can use: a placeholder pool \"imported\" (127.0.0.1:8000) keeps the config runnable".into(),
            });
        }
        let first = self.cfg.pools[0]
            .keys
            .get("name")
            .unwrap_or("\"imported\"")
            .to_string();
        for l in &mut self.cfg.listeners {
            if l.keys.get("pool") == Some("\"__first\"") {
                l.keys.set("pool", first.clone());
            }
        }
        if self.cfg.placeholder_listener("http") {
            self.report.push(Entry {
                line: 0,
                directive: "(servers)".into(),
                fidelity: Fidelity::Approximated,
                note: "no server block rampart can use: a listener \"imported\" on 127.0.0.1:8080 keeps the config runnable".into(),
            });
        }
    }
}

fn groups_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '*')
}

/// `cert = [...]`: each certificate with its key when the key is a file of
/// its own.
fn cert_list(certs: &[String], keys: &[String]) -> String {
    let items: Vec<String> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| match keys.get(i) {
            Some(k) if k != c => format!("{{ path = {}, key = {} }}", s(c), s(k)),
            _ => s(c),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Converts an nginx.conf. Never fails: what cannot be mapped is reported.
pub fn import(src: &str, file: &str) -> Imported {
    let mut im = Importer {
        cfg: out::Config::default(),
        report: Vec::new(),
        pool_ix: HashMap::new(),
        zones: HashMap::new(),
        servers: Vec::new(),
        streams: Vec::new(),
        pool_settings: Vec::new(),
    };
    im.cfg.header = vec![
        format!("Imported from {file} by `rampart import nginx`."),
        "Check the report it printed: approximated and unsupported directives are listed there."
            .into(),
    ];
    match parse(src) {
        Ok(ds) => im.main_level(&ds),
        Err(e) => im.report.push(Entry {
            line: 0,
            directive: "(file)".into(),
            fidelity: Fidelity::Unsupported,
            note: format!("not a well-formed nginx config: {e}; nothing imported"),
        }),
    }
    im.finish();
    im.cfg.repair(&mut im.report);
    // in the order of the file; what the whole file led to (line 0) last
    im.report
        .sort_by_key(|e| if e.line == 0 { usize::MAX } else { e.line });
    Imported {
        toml: im.cfg.render(),
        report: im.report,
    }
}
