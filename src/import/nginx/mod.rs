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

mod http;
mod server;
mod stream;

use super::nginx_parse::{parse, Directive};
use super::out::{self, list, s, Table};
use super::{Entry, Fidelity, Imported};
use std::collections::HashMap;

/// An nginx duration (`30s`, `1m`, `500ms`, a bare number = seconds) →
/// rampart's.
pub(super) fn duration(v: &str) -> Option<String> {
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

/// A location's kind, in nginx's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LocKind {
    Exact,
    PrefixStop,
    Regex,
    Prefix,
}

#[derive(Debug, Clone)]
pub(super) struct Loc {
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
pub(super) struct Server {
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

pub(super) struct Importer {
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
    pub(super) fn note(&mut self, d: &Directive, f: Fidelity, note: impl Into<String>) {
        self.report.push(Entry {
            line: d.line,
            directive: d.text(),
            fidelity: f,
            note: note.into(),
        });
    }
    pub(super) fn mapped(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Mapped, n)
    }
    pub(super) fn approx(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Approximated, n)
    }
    pub(super) fn unsupported(&mut self, d: &Directive, n: impl Into<String>) {
        self.note(d, Fidelity::Unsupported, n)
    }

    pub(super) fn main_level(&mut self, ds: &[Directive]) {
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

    /// Listeners from the server blocks, grouped by address set and TLS.
    pub(super) fn finish(&mut self) {
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
                    r.matches_everything()
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

pub(super) fn groups_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '*')
}

/// `cert = [...]`: each certificate with its key when the key is a file of
/// its own.
pub(super) fn cert_list(certs: &[String], keys: &[String]) -> String {
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
