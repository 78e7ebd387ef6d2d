//! haproxy.cfg → rampart. Our own tokenizer: the format is line-based, and
//! the crate that exists (`haproxy-config` 0.4) files unknown sections into the
//! previous proxy, reads `server-template` as a server named "-template",
//! keeps arguments as one string and has no line numbers (see the closing note
//! of the import work).
//!
//! What is mapped is listed in the README (Importing a config); every other
//! directive is reported, with why.

use super::haproxy_cond::{self as cond, Acls};
use super::out::{self, list, s, Table};
use super::{Entry, Fidelity, Imported};
use std::collections::HashMap;

/// One logical line: its number and its words (quotes and escapes resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) no: usize,
    pub(super) words: Vec<String>,
}

/// Splits a line into words: `#` starts a comment outside quotes; "..." and
/// '...' group (no escapes inside single quotes); a backslash escapes the next
/// character elsewhere.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '#') => break,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    Resolvers,
    /// userlist, peers, mailers, cache, program, http-errors, ring, ...
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Section {
    pub(super) kind: Kind,
    pub(super) keyword: String,
    pub(super) name: String,
    pub(super) no: usize,
    pub(super) lines: Vec<Line>,
    /// `frontend NAME ADDR`: the old syntax's address.
    pub(super) bind_in_head: Option<String>,
}

pub(super) fn sections(src: &str) -> (Vec<Section>, Vec<Line>) {
    let mut out: Vec<Section> = Vec::new();
    let mut orphans = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let w = words(raw);
        let Some(first) = w.first() else {
            continue;
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            "resolvers" => Some(Kind::Resolvers),
            "userlist" | "peers" | "mailers" | "cache" | "program" | "http-errors" | "ring"
            | "crt-store" | "traces" | "log-forward" | "fcgi-app" => Some(Kind::Other),
            _ => None,
        };
        let line = Line {
            no: i + 1,
            words: w.clone(),
        };
        match kind {
            Some(kind) => out.push(Section {
                kind,
                keyword: first.clone(),
                name: w.get(1).cloned().unwrap_or_default(),
                no: i + 1,
                lines: Vec::new(),
                bind_in_head: w.get(2).filter(|a| a.contains(':')).cloned(),
            }),
            None => match out.last_mut() {
                Some(sec) => sec.lines.push(line),
                None => orphans.push(line),
            },
        }
    }
    (out, orphans)
}

/// A duration as HAProxy writes it (default unit: milliseconds) → rampart's.
fn duration(v: &str) -> Option<String> {
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        "us" => n.div_ceil(1000),
        _ => return None,
    };
    Some(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// `*:80`, `:80`, `1.2.3.4:80`, `[::]:443`, `ipv4@...` → socket addresses.
pub(super) fn bind_addrs(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in spec.split(',') {
        let a = a.strip_prefix("ipv4@").unwrap_or(a);
        if a.contains('@') {
            return Err(format!(
                "{a:?}: only TCP addresses are supported (no unix@, abns@, fd@)"
            ));
        }
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("{a:?}: no port"))?;
        if port.contains('-') {
            return Err(format!("{a:?}: port ranges are not supported"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("{a:?}: not a port"))?;
        let host = match host {
            "" | "*" | "0.0.0.0" => "0.0.0.0".to_string(),
            "::" | "[::]" => "[::]".to_string(),
            h => h.to_string(),
        };
        let addr = format!("{host}:{port}");
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("{a:?}: rampart listens on IP addresses, not names"));
        }
        out.push(addr);
    }
    Ok(out)
}

/// A `stick-table` line: what a tracked `http_req_rate` limit needs.
#[derive(Debug, Clone)]
struct Stick {
    /// `http_req_rate(PERIOD)`, seconds.
    period: Option<u64>,
    size: Option<u64>,
}

fn stick(words: &[String]) -> Stick {
    let mut st = Stick {
        period: None,
        size: None,
    };
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "size" => {
                st.size = words.get(i + 1).and_then(|v| {
                    let (n, mul) = match v.to_ascii_lowercase().chars().last() {
                        Some('k') => (&v[..v.len() - 1], 1_000),
                        Some('m') => (&v[..v.len() - 1], 1_000_000),
                        Some('g') => (&v[..v.len() - 1], 1_000_000_000),
                        _ => (v.as_str(), 1),
                    };
                    n.parse::<u64>().ok().map(|n| n * mul)
                });
                i += 1;
            }
            "store" => {
                for item in words.get(i + 1).map(|v| v.split(',')).into_iter().flatten() {
                    if let Some(p) = item
                        .strip_prefix("http_req_rate(")
                        .and_then(|p| p.strip_suffix(')'))
                    {
                        st.period = duration(p).and_then(|d| secs(&d));
                    }
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    st
}

/// "10s" / "500ms" (as `duration` writes them) → whole seconds.
fn secs(d: &str) -> Option<u64> {
    d.strip_suffix("ms")
        .and_then(|ms| ms.parse::<u64>().ok().map(|ms| ms / 1000))
        .or_else(|| d.strip_suffix('s').and_then(|x| x.parse().ok()))
        .filter(|&n| n > 0)
}

/// N requests per PERIOD seconds as rampart writes a rate, and whether it is
/// exact.
fn rate_text(n: u64, period: u64) -> (String, bool) {
    for (unit, len) in [("s", 1), ("m", 60), ("h", 3600)] {
        if (n * len) % period == 0 && n * len / period > 0 {
            return (format!("{}/{unit}", n * len / period), true);
        }
    }
    (format!("{}/h", (n * 3600).div_ceil(period)), false)
}

/// Settings `defaults` hands down.
#[derive(Debug, Clone, Default)]
struct Defaults {
    mode: Option<String>,
    timeouts: HashMap<String, String>,
    retries: Option<String>,
    httpchk: Option<(String, String)>,
    expect_status: Option<String>,
}

struct Importer {
    cfg: out::Config,
    report: Vec<Entry>,
    defaults: Defaults,
    /// pools by name, and the backends that frontends name
    pool_ix: HashMap<String, usize>,
    /// Pools named by listeners: (listener, rule or None for the default,
    /// pool name, the report entry that said so).
    wanted: Vec<(usize, Option<usize>, String, usize)>,
    /// Each listener's bind addresses so far, with their TLS settings.
    binds: HashMap<usize, Vec<(String, Option<Table>)>>,
    /// `crt-base` / `ca-base` from global.
    crt_base: Option<String>,
    ca_base: Option<String>,
    /// A frontend's `http-request` / `http-response` rules, in order, before
    /// its `use_backend` rules (HAProxy runs them first), each with the report
    /// entry that made it.
    pre_rules: HashMap<usize, Vec<(Table, usize)>>,
    /// A backend's rules: they apply to the requests routed to it.
    pool_rules: HashMap<usize, Vec<(Table, usize)>>,
    /// `crt-store` certificates by how binds name them (`@STORE/ALIAS`):
    /// (certificate, key).
    crt_store: HashMap<String, (String, Option<String>)>,
    /// Stick tables by the section that declares them.
    sticks: HashMap<String, Stick>,
    /// The last `track-sc0 KEY [table T]`: (rate limit key, table).
    track: Option<(String, Option<String>)>,
    /// Listeners whose mode their own section set.
    mode_set: Vec<usize>,
    /// Pools whose backend says `mode http`.
    http_pools: Vec<usize>,
}

impl Importer {
    fn note(&mut self, l: &Line, f: Fidelity, note: impl Into<String>) {
        self.report.push(Entry {
            line: l.no,
            directive: l.words.join(" "),
            fidelity: f,
            note: note.into(),
        });
    }
    fn mapped(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Mapped, note);
    }
    fn approx(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Approximated, note);
    }
    fn unsupported(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Unsupported, note);
    }

    fn global(&mut self, sec: &Section) {
        for l in &sec.lines {
            let w = &l.words;
            match w[0].as_str() {
                "maxconn" if w.len() > 1 => match w[1].parse::<u64>() {
                    Ok(n) => {
                        self.cfg.global.set("max_connections", n.to_string());
                        self.mapped(l, "[global] max_connections");
                    }
                    Err(_) => self.unsupported(l, "not a number"),
                },
                "nbthread" if w.len() > 1 => match w[1].parse::<u64>() {
                    Ok(n) => {
                        self.cfg.global.set("threads", n.to_string());
                        self.mapped(l, "[global] threads");
                    }
                    Err(_) => self.unsupported(l, "not a number"),
                },
                "stats" if w.get(1).map(String::as_str) == Some("socket") => self.approx(
                    l,
                    "the admin API on [admin] bind (HTTP, with the rampart CLI) replaces the stats socket",
                ),
                "daemon" | "master-worker" | "pidfile" | "chroot" | "user" | "group" | "uid"
                | "gid" => self.unsupported(
                    l,
                    "process management: rampart runs in the foreground, under systemd or a container (packaging/rampart.service)",
                ),
                "log" => self.unsupported(
                    l,
                    "rampart logs to stderr and its access log to stdout ([global] access_log); send them on with the service manager",
                ),
                "crt-base" | "ca-base" if w.len() > 1 => {
                    if w[0] == "crt-base" {
                        self.crt_base = Some(w[1].clone());
                    } else {
                        self.ca_base = Some(w[1].clone());
                    }
                    self.mapped(l, "relative certificate paths are completed with it");
                }
                k if k.starts_with("ssl-default") || k.starts_with("tune.ssl") => self.approx(
                    l,
                    "rustls chooses the protocol versions (TLS 1.2 and 1.3) and modern cipher suites itself; [listener.tls] min_version raises the floor",
                ),
                _ => self.unsupported(l, "no rampart equivalent is mapped"),
            }
        }
    }

    fn defaults(&mut self, sec: &Section) {
        for l in &sec.lines {
            let w = &l.words;
            match w[0].as_str() {
                "mode" if w.len() > 1 => {
                    self.defaults.mode = Some(w[1].clone());
                    self.mapped(l, "each listener's mode");
                }
                "timeout" if w.len() > 2 => match (w[1].as_str(), duration(&w[2])) {
                    ("connect" | "server" | "client" | "queue" | "check" | "tunnel", Some(d)) => {
                        self.defaults.timeouts.insert(w[1].clone(), d);
                        self.mapped(l, timeout_key(&w[1]));
                    }
                    (_, None) => self.unsupported(l, "not a duration"),
                    _ => self.unsupported(l, "no rampart equivalent for this timeout"),
                },
                "retries" if w.len() > 1 => {
                    self.defaults.retries = Some(w[1].clone());
                    self.mapped(l, "each pool's retries");
                }
                "option" => self.option(l, None),
                "http-check" => self.http_check(l, None),
                "log" => self.unsupported(l, "rampart logs to stderr and stdout"),
                _ => self.unsupported(l, "no rampart equivalent is mapped"),
            }
        }
    }

    /// `option ...`, in defaults (`pool` None) or a backend.
    fn option(&mut self, l: &Line, pool: Option<usize>) {
        let w = &l.words;
        match w.get(1).map(String::as_str) {
            Some("redispatch") => {
                self.mapped(l, "rampart always retries on another server (pool retries)")
            }
            Some("httpchk") => {
                // option httpchk [METHOD] [URI] [VERSION]
                let (method, path) = match (w.get(2), w.get(3)) {
                    (Some(m), Some(p)) => (m.clone(), p.clone()),
                    (Some(p), None) if p.starts_with('/') => ("GET".into(), p.clone()),
                    (Some(m), None) => (m.clone(), "/".into()),
                    _ => ("OPTIONS".into(), "/".into()),
                };
                match pool {
                    Some(i) => {
                        let h = self.health(i);
                        h.set("kind", s("http"));
                        h.set("path", s(&path));
                        h.set("method", s(&method));
                    }
                    None => self.defaults.httpchk = Some((method, path)),
                }
                self.mapped(l, "[pool.health] kind = \"http\", path and method");
            }
            Some("pgsql-check") => match pool {
                Some(i) => {
                    let user = w
                        .iter()
                        .position(|x| x == "user")
                        .and_then(|p| w.get(p + 1))
                        .cloned()
                        .unwrap_or_else(|| "postgres".into());
                    let h = self.health(i);
                    h.set("kind", s("postgres"));
                    h.set("user", s(&user));
                    self.approx(
                        l,
                        "[pool.health] kind = \"postgres\": rampart logs in and runs a query (HAProxy only reads the startup answer); add role = \"primary\" or \"replica\" for role-aware pools",
                    );
                }
                None => self.unsupported(l, "set it in the backend"),
            },
            Some("httplog" | "tcplog" | "dontlognull" | "log-health-checks" | "httpslog") => self
                .approx(
                    l,
                    "rampart's access log ([global] access_log) has these fields",
                ),
            Some("forwardfor") => self.mapped(l, "rampart always sets X-Forwarded-For"),
            Some(
                "http-server-close"
                | "http-keep-alive"
                | "prefer-last-server"
                | "http-pretend-keepalive",
            ) => self.approx(
                l,
                "rampart keeps connections to servers alive and pools them (max_idle_per_server)",
            ),
            _ => self.unsupported(l, "no rampart equivalent is mapped"),
        }
    }

    /// `http-check expect status N`.
    fn http_check(&mut self, l: &Line, pool: Option<usize>) {
        let w = &l.words;
        match (
            w.get(1).map(String::as_str),
            w.get(2).map(String::as_str),
            w.get(3),
        ) {
            (Some("expect"), Some("status"), Some(st)) => {
                match pool {
                    Some(i) => {
                        self.health(i).set("expect_status", s(st));
                    }
                    None => self.defaults.expect_status = Some(st.clone()),
                }
                self.mapped(l, "[pool.health] expect_status");
            }
            _ => self.unsupported(l, "only http-check expect status is mapped"),
        }
    }

    fn health(&mut self, pool: usize) -> &mut Table {
        self.cfg.pools[pool].health.get_or_insert_with(|| {
            let mut t = Table::default();
            t.set("kind", s("tcp"));
            t
        })
    }

    fn new_pool(&mut self, name: &str) -> usize {
        let mut p = out::Pool::default();
        p.keys.set("name", s(name));
        if let Some(d) = self.defaults.timeouts.get("connect") {
            p.keys.set("connect_timeout", s(d));
        }
        if let Some(d) = self.defaults.timeouts.get("server") {
            p.keys.set("server_timeout", s(d));
        }
        if let Some(d) = self.defaults.timeouts.get("queue") {
            p.keys.set("queue_timeout", s(d));
        }
        if let Some(d) = self.defaults.timeouts.get("tunnel") {
            p.keys.set("tunnel_timeout", s(d));
        }
        if let Some(r) = self
            .defaults
            .retries
            .as_ref()
            .and_then(|r| r.parse::<u32>().ok())
        {
            p.keys.set("retries", r.min(10).to_string());
        }
        self.cfg.pools.push(p);
        let i = self.cfg.pools.len() - 1;
        self.pool_ix.insert(name.to_string(), i);
        i
    }

    fn new_listener(&mut self, name: &str) -> usize {
        let mut l = out::Listener::default();
        l.keys.set("name", s(name));
        let mode = self.defaults.mode.clone().unwrap_or_else(|| "tcp".into());
        l.keys
            .set("mode", s(if mode == "http" { "http" } else { "tcp" }));
        if let Some(d) = self.defaults.timeouts.get("client") {
            l.keys.set("client_timeout", s(d));
        }
        self.cfg.listeners.push(l);
        self.cfg.listeners.len() - 1
    }

    /// A frontend's lines (or a listen section's frontend half).
    fn frontend_line(
        &mut self,
        l: &Line,
        li: usize,
        acls: &mut Acls,
        own_pool: Option<&str>,
    ) -> bool {
        let w = &l.words;
        match w[0].as_str() {
            "bind" if w.len() > 1 => {
                match bind_addrs(&w[1]) {
                    Ok(addrs) => self.bind(l, li, addrs),
                    Err(e) => self.unsupported(l, e),
                }
                true
            }
            "mode" if w.len() > 1 => {
                let m = if w[1] == "http" { "http" } else { "tcp" };
                self.cfg.listeners[li].keys.set("mode", s(m));
                self.mode_set.push(li);
                self.mapped(l, "mode");
                true
            }
            "maxconn" if w.len() > 1 && own_pool.is_none() => {
                if let Ok(n) = w[1].parse::<u64>() {
                    self.cfg.listeners[li]
                        .keys
                        .set("max_connections", n.to_string());
                    self.mapped(l, "the listener's max_connections");
                } else {
                    self.unsupported(l, "not a number");
                }
                true
            }
            "timeout" if w.len() > 2 && w[1] == "client" => {
                match duration(&w[2]) {
                    Some(d) => {
                        self.cfg.listeners[li].keys.set("client_timeout", s(&d));
                        self.mapped(l, "client_timeout");
                    }
                    None => self.unsupported(l, "not a duration"),
                }
                true
            }
            "option" if own_pool.is_none() => {
                self.option(l, None);
                true
            }
            "default_backend" if w.len() > 1 => {
                self.wanted
                    .push((li, None, w[1].clone(), self.report.len()));
                self.mapped(l, "the listener's pool");
                true
            }
            "acl" if w.len() > 2 => {
                self.acl_line(l, acls);
                true
            }
            "use_backend" if w.len() > 3 && (w[2] == "if" || w[2] == "unless") => {
                match cond::condition(&w[3..], w[2] == "unless", acls) {
                    Ok((alts, exact)) => {
                        let n = alts.len();
                        let entry = self.report.len();
                        for rule in alts {
                            let lst = &mut self.cfg.listeners[li];
                            lst.rules.push(rule);
                            let ri = lst.rules.len() - 1;
                            self.wanted.push((li, Some(ri), w[1].clone(), entry));
                        }
                        let note = if n > 1 {
                            format!("a [[listener.rule]] with pool per alternative ({n})")
                        } else {
                            "a [[listener.rule]] with pool".to_string()
                        };
                        if exact {
                            self.mapped(l, note);
                        } else {
                            self.approx(
                                l,
                                format!(
                                    "{note}; the condition is approximated (see the ACL's line)"
                                ),
                            );
                        }
                    }
                    Err(e) => self.unsupported(l, format!("the condition: {e}")),
                }
                true
            }
            "use_backend" if w.len() == 2 => {
                // no condition: every request that gets here
                self.cfg.listeners[li].rules.push(Table::default());
                let ri = self.cfg.listeners[li].rules.len() - 1;
                self.wanted
                    .push((li, Some(ri), w[1].clone(), self.report.len()));
                self.mapped(l, "a [[listener.rule]] with pool and no match");
                true
            }
            "http-request" | "http-response" | "rate-limit" | "tcp-request" => {
                let name = self.cfg.listeners[li]
                    .keys
                    .get("name")
                    .unwrap_or("\"\"")
                    .trim_matches('"')
                    .to_string();
                self.rule_line(l, RuleAt::Listener(li), &name, acls)
            }
            "stick-table" => {
                self.approx(l, STICK_TABLE);
                true
            }
            _ => false,
        }
    }

    /// A backend's lines (or a listen section's backend half).
    fn backend_line(&mut self, l: &Line, pi: usize, acls: &mut Acls) -> bool {
        let w = &l.words;
        match w[0].as_str() {
            "acl" if w.len() > 2 => {
                self.acl_line(l, acls);
                true
            }
            "http-request" | "http-response" | "tcp-request" => {
                let name = self.cfg.pools[pi]
                    .keys
                    .get("name")
                    .unwrap_or("\"\"")
                    .trim_matches('"')
                    .to_string();
                self.rule_line(l, RuleAt::Pool(pi), &name, acls)
            }
            "stick-table" => {
                self.approx(l, STICK_TABLE);
                true
            }
            "balance" if w.len() > 1 => {
                let b = w[1].as_str();
                let (balance, key) = match b {
                    "roundrobin" | "static-rr" => (Some("round_robin"), None),
                    "leastconn" => (Some("least_conn"), None),
                    "first" => (Some("first"), None),
                    "source" => (Some("hash"), Some("client_ip".to_string())),
                    "uri" => (Some("hash"), Some("uri".to_string())),
                    h if h.starts_with("hdr(") && h.ends_with(')') => {
                        (Some("hash"), Some(format!("header:{}", &h[4..h.len() - 1])))
                    }
                    _ => (None, None),
                };
                match balance {
                    Some(bal) => {
                        let p = &mut self.cfg.pools[pi].keys;
                        p.set("balance", s(bal));
                        if let Some(k) = key {
                            p.set("hash_key", s(&k));
                        }
                        if w.len() > 2 {
                            self.approx(
                                l,
                                format!("balance = \"{bal}\" (its options are not imported)"),
                            );
                        } else {
                            self.mapped(l, format!("balance = \"{bal}\""));
                        }
                    }
                    None => self.unsupported(l, "this balance algorithm is not mapped"),
                }
                true
            }
            "server" | "server-template" if w.len() > 2 => {
                self.server(l, pi);
                true
            }
            "option" => {
                self.option(l, Some(pi));
                true
            }
            "http-check" => {
                self.http_check(l, Some(pi));
                true
            }
            "retries" if w.len() > 1 => {
                if let Ok(n) = w[1].parse::<u32>() {
                    self.cfg.pools[pi]
                        .keys
                        .set("retries", n.min(10).to_string());
                    self.mapped(l, "retries");
                } else {
                    self.unsupported(l, "not a number");
                }
                true
            }
            "timeout"
                if w.len() > 2
                    && matches!(
                        w[1].as_str(),
                        "connect" | "server" | "queue" | "tunnel" | "check"
                    ) =>
            {
                match duration(&w[2]) {
                    Some(d) => {
                        match w[1].as_str() {
                            "check" => {
                                self.health(pi).set("timeout", s(&d));
                            }
                            k => self.cfg.pools[pi].keys.set(timeout_key_name(k), s(&d)),
                        }
                        self.mapped(l, timeout_key(&w[1]));
                    }
                    None => self.unsupported(l, "not a duration"),
                }
                true
            }
            _ => false,
        }
    }

    fn server(&mut self, l: &Line, pi: usize) {
        let w = &l.words;
        let template = w[0] == "server-template";
        // server NAME ADDR [params]; server-template PREFIX NUM ADDR [params]
        let (name, addr, params) = if template {
            match (w.get(1), w.get(3)) {
                (Some(n), Some(a)) => (n.clone(), a.clone(), &w[4..]),
                _ => {
                    self.unsupported(l, "server-template PREFIX NUM ADDR expected");
                    return;
                }
            }
        } else {
            (w[1].clone(), w[2].clone(), &w[3..])
        };
        let addr = match addr.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => format!("{h}:{p}"),
            // an SRV name: the records give the ports
            _ if addr.starts_with('_') && !addr.contains(':') => addr.clone(),
            _ => {
                self.unsupported(l, format!("{addr:?}: rampart needs an address with a port"));
                return;
            }
        };
        if let Err(e) = out::address_ok(&addr) {
            self.unsupported(l, e);
            return;
        }
        let mut sv = Table::default();
        sv.set("address", s(&addr));
        let mut notes = Vec::new();
        let by_ip = addr.parse::<std::net::SocketAddr>().is_ok();
        if !template && by_ip {
            sv.set("name", s(&name));
        } else if !template {
            notes.push("a name's members are named by their ip:port, not by the server's name");
        }
        let mut approx = template;
        let mut ssl = false;
        let mut check_ssl = false;
        let mut tls = Table::default();
        let mut i = 0;
        while i < params.len() {
            let p = params[i].as_str();
            let arg = params.get(i + 1);
            match (p, arg) {
                ("check", _) => {
                    self.health(pi);
                }
                ("weight", Some(v)) => {
                    if let Ok(n) = v.parse::<u32>() {
                        sv.set("weight", n.clamp(1, 256).to_string());
                    }
                    i += 1;
                }
                ("backup", _) => sv.set("backup", "true".into()),
                ("inter", Some(v)) => {
                    if let Some(d) = duration(v) {
                        self.health(pi).set("interval", s(&d));
                        notes.push("inter → the pool's health interval");
                    }
                    i += 1;
                }
                ("fall", Some(v)) | ("rise", Some(v)) => {
                    if let Ok(n) = v.parse::<u32>() {
                        self.health(pi).set(p, n.to_string());
                        notes.push("fall/rise → the pool's health check");
                    }
                    i += 1;
                }
                ("maxconn", Some(v)) => {
                    if let Ok(n) = v.parse::<u32>() {
                        self.cfg.pools[pi]
                            .keys
                            .set("max_connections_per_server", n.to_string());
                        approx = true;
                        notes.push("maxconn → the pool's max_connections_per_server, one limit for each of its servers");
                    }
                    i += 1;
                }
                ("send-proxy", _) => self.cfg.pools[pi].keys.set("send_proxy", s("v1")),
                ("send-proxy-v2", _) => self.cfg.pools[pi].keys.set("send_proxy", s("v2")),
                ("resolvers", Some(_)) => {
                    notes
                        .push("resolvers → re-resolved through [resolver] (one member per record)");
                    i += 1;
                }
                ("port", Some(_)) => {
                    approx = true;
                    notes.push("check port: rampart checks the server's own port");
                    i += 1;
                }
                (
                    "resolve-prefer" | "init-addr" | "cookie" | "id" | "slowstart"
                    | "on-marked-down" | "agent-check" | "agent-port" | "agent-inter" | "addr"
                    | "observe" | "error-limit",
                    _,
                ) => {
                    approx = true;
                    notes.push("some server options are not imported");
                    if arg.is_some() && p != "agent-check" {
                        i += 1;
                    }
                }
                ("ssl", _) => ssl = true,
                ("verify", Some(v)) => {
                    if v == "none" {
                        tls.set("verify", "false".into());
                        tls.set("insecure", "true".into());
                    }
                    i += 1;
                }
                ("ca-file", Some(v)) => {
                    tls.set("ca", s(&with_base(&self.ca_base, v)));
                    i += 1;
                }
                ("crt", Some(v)) => {
                    tls.set("cert", s(&with_base(&self.crt_base, v)));
                    i += 1;
                }
                ("sni", Some(v)) => {
                    match v.strip_prefix("str(").and_then(|x| x.strip_suffix(')')) {
                        Some(name) => tls.set("server_name", s(name)),
                        None => {
                            approx = true;
                            notes.push("sni from a sample (e.g. req.hdr(host)) is not imported: rampart sends the server's DNS name");
                        }
                    }
                    i += 1;
                }
                ("alpn", Some(_)) => {
                    approx = true;
                    notes.push("alpn: say protocol = \"h2\" on the pool for HTTP/2 to servers");
                    i += 1;
                }
                ("check-ssl", _) => {
                    check_ssl = true;
                }
                _ => {
                    approx = true;
                    notes.push("some server options are not imported");
                }
            }
            i += 1;
        }
        if ssl {
            match &self.cfg.pools[pi].tls {
                Some(prev) if prev.0 != tls.0 => {
                    approx = true;
                    notes.push("TLS settings are the pool's: the first server's apply to all");
                }
                Some(_) => notes.push("ssl → [pool.tls]"),
                None => {
                    notes.push("ssl → [pool.tls]");
                    self.cfg.pools[pi].tls = Some(tls);
                }
            }
        } else if check_ssl || !tls.0.is_empty() {
            approx = true;
            notes.push("check-ssl and TLS options without ssl: rampart checks servers the way it connects to them (plain here)");
        }
        // in the serving pool's health, an http check inherited from defaults
        if let (Some(h), Some((m, path))) = (
            self.cfg.pools[pi].health.as_mut(),
            self.defaults.httpchk.clone(),
        ) {
            if h.get("kind") == Some("\"tcp\"") {
                h.set("kind", s("http"));
                h.set("path", s(&path));
                h.set("method", s(&m));
            }
        }
        if let (Some(h), Some(st)) = (
            self.cfg.pools[pi].health.as_mut(),
            self.defaults.expect_status.clone(),
        ) {
            if h.get("kind") == Some("\"http\"") && h.get("expect_status").is_none() {
                h.set("expect_status", s(&st));
            }
        }
        self.cfg.pools[pi].servers.push(sv);
        notes.dedup();
        let mut note = if template {
            "a server entry by name: one member per DNS record (the template's count is not a limit)".to_string()
        } else {
            "[[pool.server]]".to_string()
        };
        for n in notes {
            note.push_str("; ");
            note.push_str(n);
        }
        if approx {
            self.approx(l, note);
        } else {
            self.mapped(l, note);
        }
    }

    fn resolvers(&mut self, sec: &Section) {
        for l in &sec.lines {
            let w = &l.words;
            match w[0].as_str() {
                "parse-resolv-conf" => self.mapped(
                    l,
                    "[resolver] reads /etc/resolv.conf when no nameservers are given",
                ),
                "nameserver" if w.len() > 2 => match w[2].parse::<std::net::SocketAddr>() {
                    Ok(a) => {
                        let mut ns: Vec<String> = self
                            .cfg
                            .resolver
                            .get("nameservers")
                            .map(|v| {
                                v.trim_matches(|c| c == '[' || c == ']')
                                    .split(", ")
                                    .map(|x| x.trim_matches('"').to_string())
                                    .filter(|x| !x.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default();
                        ns.push(a.to_string());
                        self.cfg.resolver.set("nameservers", list(&ns));
                        self.mapped(l, "[resolver] nameservers");
                    }
                    Err(_) => self.unsupported(l, "a nameserver must be IP:PORT"),
                },
                "hold" if w.len() > 2 && w[1] == "valid" => match duration(&w[2]) {
                    Some(d) => {
                        self.cfg.resolver.set("max_ttl", s(&d));
                        self.approx(l, "[resolver] max_ttl: rampart re-resolves at the record's TTL, capped by this");
                    }
                    None => self.unsupported(l, "not a duration"),
                },
                "hold" => self.approx(
                    l,
                    "[resolver] hold_on_failure keeps the last answer on errors",
                ),
                "accepted_payload_size" => {
                    self.mapped(l, "rampart's resolver uses EDNS and TCP fallback")
                }
                "timeout" if w.len() > 2 => match duration(&w[2]) {
                    Some(d) => {
                        self.cfg.resolver.set("timeout", s(&d));
                        self.approx(l, "[resolver] timeout");
                    }
                    None => self.unsupported(l, "not a duration"),
                },
                "resolve_retries" => self.approx(l, "rampart's resolver retries by itself"),
                _ => self.unsupported(l, "no rampart equivalent is mapped"),
            }
        }
    }
}

/// `frontend NAME ADDR` / `listen NAME ADDR` (the old syntax) as a bind line.
pub(super) fn old_style_bind(sec: &Section) -> Option<Line> {
    sec.bind_in_head.as_ref().map(|a| Line {
        no: sec.no,
        words: vec!["bind".into(), a.clone()],
    })
}

/// Converts a haproxy.cfg. Never fails: what cannot be mapped is reported.
pub fn import(src: &str, file: &str) -> Imported {
    let (secs, orphans) = sections(src);
    let mut im = Importer {
        cfg: out::Config::default(),
        report: Vec::new(),
        defaults: Defaults::default(),
        pool_ix: HashMap::new(),
        wanted: Vec::new(),
        binds: HashMap::new(),
        mode_set: Vec::new(),
        http_pools: Vec::new(),
        crt_base: None,
        ca_base: None,
        pre_rules: HashMap::new(),
        pool_rules: HashMap::new(),
        sticks: HashMap::new(),
        track: None,
        crt_store: HashMap::new(),
    };
    for sec in secs.iter().filter(|s| s.keyword == "crt-store") {
        let arg = |l: &Line, k: &str| {
            l.words
                .iter()
                .position(|w| w == k)
                .and_then(|p| l.words.get(p + 1))
                .cloned()
        };
        let (mut cb, mut kb) = (None, None);
        for l in &sec.lines {
            match l.words[0].as_str() {
                "crt-base" => cb = l.words.get(1).cloned(),
                "key-base" => kb = l.words.get(1).cloned(),
                "load" => {
                    if let Some(crt) = arg(l, "crt") {
                        let path = with_base(&cb, &crt);
                        let key = arg(l, "key").map(|k| with_base(&kb.clone().or(cb.clone()), &k));
                        let alias = arg(l, "alias").unwrap_or(crt);
                        im.crt_store
                            .insert(format!("@{}/{alias}", sec.name), (path, key));
                    }
                }
                _ => {}
            }
        }
    }
    for sec in &secs {
        if let Some(l) = sec.lines.iter().find(|l| l.words[0] == "stick-table") {
            im.sticks.insert(sec.name.clone(), stick(&l.words));
        }
    }
    im.cfg.header = vec![
        format!("Imported from {file} by `rampart import haproxy`."),
        "Check the report it printed: approximated and unsupported directives are listed there."
            .into(),
    ];
    for l in &orphans {
        im.unsupported(l, "outside any section");
    }
    let mut stats_bind: Option<String> = None;
    for sec in &secs {
        let head = Line {
            no: sec.no,
            words: [sec.keyword.clone(), sec.name.clone()]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect(),
        };
        match sec.kind {
            Kind::Global => {
                im.mapped(&head, "[global]");
                im.global(sec);
            }
            Kind::Defaults => {
                // each defaults section replaces the previous one
                im.defaults = Defaults::default();
                im.mapped(&head, "settings of the listeners and pools that follow");
                im.defaults(sec);
            }
            Kind::Frontend => {
                let li = im.new_listener(&sec.name);
                im.mapped(&head, "a [[listener]]");
                let mut acls = Acls::new();
                for l in old_style_bind(sec).iter().chain(&sec.lines) {
                    if !im.frontend_line(l, li, &mut acls, None) {
                        im.other_line(l);
                    }
                }
            }
            Kind::Backend => {
                let name = im.unique_pool_name(&sec.name);
                let pi = im.new_pool(&name);
                im.mapped(&head, "a [[pool]]");
                let mut acls = Acls::new();
                for l in &sec.lines {
                    if l.words[0] == "mode" {
                        if l.words.get(1).map(String::as_str) == Some("http") {
                            im.http_pools.push(pi);
                        }
                        im.mapped(l, "the listeners that use this pool take its mode");
                    } else if !im.backend_line(l, pi, &mut acls) {
                        im.other_line(l);
                    }
                }
            }
            Kind::Listen => {
                let is_stats = sec.lines.iter().any(|l| l.words[0] == "stats")
                    && !sec.lines.iter().any(|l| l.words[0].starts_with("server"));
                if is_stats {
                    im.mapped(
                        &head,
                        "the admin server ([admin]): stats page, /metrics, API",
                    );
                    for l in &sec.lines {
                        match l.words[0].as_str() {
                            "bind" if l.words.len() > 1 => match bind_addrs(&l.words[1]) {
                                Ok(a) if stats_bind.is_none() => {
                                    stats_bind = a.first().cloned();
                                    im.mapped(l, "[admin] bind");
                                }
                                Ok(_) => im.unsupported(l, "the admin server has one address"),
                                Err(e) => im.unsupported(l, e),
                            },
                            "stats" => im.stats_line(l),
                            "mode" => im.mapped(l, "the admin server speaks HTTP"),
                            _ => im.other_line(l),
                        }
                    }
                    continue;
                }
                let li = im.new_listener(&sec.name);
                let name = im.unique_pool_name(&sec.name);
                let pi = im.new_pool(&name);
                im.wanted.push((li, None, name.clone(), im.report.len()));
                im.mapped(&head, "a [[listener]] and a [[pool]] of the same name");
                let mut acls = Acls::new();
                for l in old_style_bind(sec).iter().chain(&sec.lines) {
                    if l.words[0] == "stats" {
                        im.stats_line(l);
                    } else if !im.frontend_line(l, li, &mut acls, Some(&name))
                        && !im.backend_line(l, pi, &mut acls)
                    {
                        im.other_line(l);
                    }
                }
            }
            Kind::Resolvers => {
                im.mapped(&head, "[resolver]");
                im.resolvers(sec);
            }
            Kind::Other if sec.keyword == "crt-store" => {
                im.mapped(&head, "its certificates, where binds name them (@NAME/...)");
                for l in &sec.lines {
                    match l.words[0].as_str() {
                        "crt-base" | "key-base" => {
                            im.mapped(l, "the folder of its certificates or keys")
                        }
                        "load" => im.mapped(l, "a [listener.tls] cert where a bind names it"),
                        _ => im.unsupported(l, "in a crt-store section"),
                    }
                }
            }
            Kind::Other => {
                im.unsupported(&head, "this section has no rampart equivalent");
                for l in &sec.lines {
                    im.unsupported(l, format!("in a {} section", sec.keyword));
                }
            }
        }
    }
    if let Some(b) = stats_bind {
        im.cfg.admin.set("bind", s(&b));
    }
    im.finish();
    im.cfg.repair(&mut im.report);
    for e in &mut im.report {
        if let Some(v) = env_var(&e.directive) {
            if e.fidelity == Fidelity::Mapped {
                e.fidelity = Fidelity::Approximated;
            }
            e.note.push_str(&format!(
                "; it names the environment variable {v}, kept as text (HAProxy expands it at start): replace it"
            ));
        }
    }
    Imported {
        toml: im.cfg.render(),
        report: im.report,
    }
}

impl Importer {
    fn other_line(&mut self, l: &Line) {
        match l.words[0].as_str() {
            "log" => self.unsupported(l, "rampart logs to stderr and its access log to stdout"),
            "http-request" | "http-response" => self.unsupported(
                l,
                "this action has no rampart rule equivalent (rules deny, redirect, route, edit headers, limit rates)",
            ),
            "tcp-request" | "tcp-response" => self.unsupported(
                l,
                "connection-level rules are not in rampart (tcp listeners route by SNI; limits apply to HTTP requests)",
            ),
            "compression" => self.unsupported(l, "rampart does not compress"),
            "cookie" | "dynamic-cookie-key" | "stick" => {
                self.unsupported(l, "cookie and stick-table persistence are not in rampart: balance = \"hash\" keeps a client on a server")
            }
            _ => self.unsupported(l, "no rampart equivalent is mapped"),
        }
    }

    fn stats_line(&mut self, l: &Line) {
        match l.words.get(1).map(String::as_str) {
            Some("enable" | "uri" | "refresh" | "show-legends" | "show-node") => {
                self.approx(l, "the admin server's stats page is always on, at /stats")
            }
            Some("auth") => self.approx(
                l,
                "set [admin] read_user and read_password_env for the read pages (the password is not imported)",
            ),
            _ => self.unsupported(l, "no rampart equivalent is mapped"),
        }
    }

    fn unique_pool_name(&self, name: &str) -> String {
        let mut n = name.to_string();
        let mut k = 2;
        while self.pool_ix.contains_key(&n) {
            n = format!("{name}-{k}");
            k += 1;
        }
        n
    }

    /// Ties listeners to pools; drops what cannot run (a pool without servers,
    /// a listener without a pool); makes sure the result is a config rampart
    /// runs.
    fn finish(&mut self) {
        let usable = |cfg: &out::Config, ix: &HashMap<String, usize>, name: &str| {
            ix.get(name)
                .filter(|&&i| !cfg.pools[i].servers.is_empty())
                .is_some()
        };
        let wanted = std::mem::take(&mut self.wanted);
        let mut drop_rules: Vec<(usize, usize)> = Vec::new();
        for (li, ri, pool, entry) in wanted {
            if usable(&self.cfg, &self.pool_ix, &pool) {
                // a frontend without its own mode serves its backend's
                let pi = self.pool_ix[&pool];
                if ri.is_none() && !self.mode_set.contains(&li) && self.http_pools.contains(&pi) {
                    self.cfg.listeners[li].keys.set("mode", s("http"));
                }
                match ri {
                    None => self.cfg.listeners[li].keys.set("pool", s(&pool)),
                    Some(r) => self.cfg.listeners[li].rules[r].set("pool", s(&pool)),
                }
            } else {
                if let Some(e) = self.report.get_mut(entry) {
                    e.fidelity = Fidelity::Unsupported;
                    e.note = format!(
                        "backend {pool:?} is not in this file or has no server rampart can use"
                    );
                }
                if let Some(r) = ri {
                    drop_rules.push((li, r));
                }
            }
        }
        drop_rules.sort_unstable();
        for (li, r) in drop_rules.into_iter().rev() {
            self.cfg.listeners[li].rules.remove(r);
        }
        self.assemble_rules();
        // a listener without a default pool takes its first rule's
        for l in &mut self.cfg.listeners {
            if l.keys.get("pool").is_none() {
                if let Some(p) = l.rules.iter().find_map(|r| r.get("pool")) {
                    let p = p.to_string();
                    l.keys.set("pool", p);
                }
            }
        }
        self.split_tls();
        let before = self.cfg.listeners.len();
        self.cfg
            .listeners
            .retain(|l| l.keys.get("pool").is_some() && l.keys.get("bind").is_some());
        let dropped_listeners = before - self.cfg.listeners.len();
        self.cfg.pools.retain(|p| !p.servers.is_empty());
        if dropped_listeners > 0 {
            self.report.push(Entry {
                line: 0,
                directive: "(frontends)".into(),
                fidelity: Fidelity::Unsupported,
                note: format!("{dropped_listeners} frontend(s) left out: no bind rampart can use, or no backend with a server"),
            });
        }
        if self.cfg.placeholder_pool() {
            self.report.push(Entry {
                line: 0,
                directive: "(backends)".into(),
                fidelity: Fidelity::Approximated,
                note: "no backend with a server rampart can use: a placeholder pool \"imported\" (127.0.0.1:8000) keeps the config runnable".into(),
            });
        }
        let http = self.cfg.pools[0]
            .keys
            .get("hash_key")
            .is_some_and(|k| k != "\"client_ip\"")
            || self.defaults.mode.as_deref() == Some("http");
        if self
            .cfg
            .placeholder_listener(if http { "http" } else { "tcp" })
        {
            self.report.push(Entry {
                line: 0,
                directive: "(frontends)".into(),
                fidelity: Fidelity::Approximated,
                note: "no frontend rampart can use: a listener \"imported\" on 127.0.0.1:8080 keeps the config runnable".into(),
            });
        }
    }
}

/// The first `$NAME` / `${NAME}` in a directive.
fn env_var(text: &str) -> Option<String> {
    let i = text.find('$')?;
    let rest = &text[i + 1..];
    let name: String = rest
        .trim_start_matches('{')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && !name.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .then(|| format!("${name}"))
}

/// A path with its `crt-base` / `ca-base`, when it is relative.
fn with_base(base: &Option<String>, path: &str) -> String {
    match base {
        Some(b) if !path.starts_with('/') => format!("{}/{path}", b.trim_end_matches('/')),
        _ => path.to_string(),
    }
}

impl Importer {
    /// `bind ADDR [options]`: addresses, TLS and the PROXY protocol.
    fn bind(&mut self, l: &Line, li: usize, addrs: Vec<String>) {
        let w = &l.words;
        let mut tls: Option<Table> = None;
        let mut certs: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut approx = false;
        let mut unusable: Option<String> = None;
        let mut t = Table::default();
        let mut i = 2;
        while i < w.len() {
            let arg = w.get(i + 1);
            let mut takes_arg = false;
            match (w[i].as_str(), arg) {
                ("ssl", _) => {
                    tls.get_or_insert_with(Table::default);
                }
                ("crt", Some(c)) => {
                    takes_arg = true;
                    if c.ends_with('/') {
                        unusable = Some(format!(
                            "crt {c}: rampart takes certificate files, not a directory: list them in [listener.tls] cert"
                        ));
                    } else if c.starts_with('@') {
                        match self.crt_store.get(c.as_str()) {
                            Some((p, Some(k))) => {
                                certs.push(format!("{{ path = {}, key = {} }}", s(p), s(k)))
                            }
                            Some((p, None)) => certs.push(s(p)),
                            None => {
                                unusable = Some(format!("crt {c}: not in a crt-store of this file"))
                            }
                        }
                    } else {
                        certs.push(s(&with_base(&self.crt_base, c)));
                    }
                }
                ("crt-list", Some(c)) => {
                    takes_arg = true;
                    unusable = Some(format!(
                        "crt-list {c}: not read; list the certificates in [listener.tls] cert"
                    ));
                }
                ("alpn", Some(a)) => {
                    takes_arg = true;
                    let protos: Vec<String> = a.split(',').map(String::from).collect();
                    if protos.iter().all(|p| p == "h2" || p == "http/1.1") {
                        t.set("alpn", list(&protos));
                    } else {
                        approx = true;
                        notes.push(format!("alpn {a}: rampart offers h2 and http/1.1"));
                    }
                }
                ("ca-file", Some(c)) => {
                    takes_arg = true;
                    t.set("client_ca", s(&with_base(&self.ca_base, c)));
                }
                ("verify", Some(v)) => {
                    takes_arg = true;
                    match v.as_str() {
                        "required" => t.set("client_auth", s("required")),
                        "optional" => t.set("client_auth", s("optional")),
                        _ => t.set("__no_client_auth", "true".into()),
                    }
                }
                ("strict-sni", _) => t.set("strict_sni", "true".into()),
                ("no-tls-tickets", _) => t.set("session_tickets", "false".into()),
                ("ssl-min-ver", Some(v)) => {
                    takes_arg = true;
                    match v.as_str() {
                        "TLSv1.3" => t.set("min_version", s("1.3")),
                        "TLSv1.2" => t.set("min_version", s("1.2")),
                        _ => {
                            approx = true;
                            notes.push(format!("ssl-min-ver {v}: rampart's floor is TLS 1.2"));
                        }
                    }
                }
                ("accept-proxy", _) => {
                    self.cfg.listeners[li].keys.set(
                        "proxy_protocol",
                        "{ from = [\"0.0.0.0/0\", \"::/0\"], mode = \"required\" }".into(),
                    );
                    approx = true;
                    notes.push(
                        "accept-proxy → proxy_protocol required; HAProxy believes a PROXY header from any source, rampart only from `from` (here: everyone): narrow it to your load balancers"
                            .into(),
                    );
                }
                (
                    "ciphers" | "ciphersuites" | "curves" | "ecdhe" | "ssl-max-ver" | "npn"
                    | "name" | "process" | "thread" | "backlog" | "interface" | "maxconn" | "level"
                    | "mode" | "user" | "group" | "id" | "nice" | "tcp-ut" | "mss" | "crl-file"
                    | "ca-verify-file" | "ocsp-update",
                    Some(_),
                ) => {
                    takes_arg = true;
                    approx = true;
                    notes.push(format!("{} is not imported", w[i]));
                }
                (o, _) => {
                    approx = true;
                    notes.push(format!("{o} is not imported"));
                }
            }
            if takes_arg {
                i += 1;
            }
            i += 1;
        }
        if tls.is_some() || !certs.is_empty() {
            if let Some(why) = unusable.filter(|_| certs.is_empty()) {
                // serving plain text where TLS was meant would be worse than nothing
                self.unsupported(l, format!("{why}; the bind is left out"));
                return;
            }
            if certs.is_empty() {
                self.unsupported(
                    l,
                    "ssl without crt: no certificate to serve; the bind is left out",
                );
                return;
            }
            if t.get("__no_client_auth").is_some() {
                t.0.retain(|(k, _)| {
                    k != "client_ca" && k != "client_auth" && k != "__no_client_auth"
                });
            }
            let mut tt = Table::default();
            tt.set("cert", format!("[{}]", certs.join(", ")));
            tt.0.extend(t.0);
            tls = Some(tt);
        }
        let n = addrs.len();
        self.binds
            .entry(li)
            .or_default()
            .extend(addrs.into_iter().map(|a| (a, tls.clone())));
        let mut note = if tls.is_some() {
            format!("bind with [listener.tls] ({n} address(es))")
        } else {
            "bind".to_string()
        };
        for n in &notes {
            note.push_str("; ");
            note.push_str(n);
        }
        if approx {
            self.approx(l, note);
        } else {
            self.mapped(l, note);
        }
    }

    /// `http-request ...` / `http-response ...` / `tcp-request content
    /// track-sc0` / `rate-limit sessions`, in a frontend (`listener`) or a
    /// backend (`pool`).
    fn rule_line(&mut self, l: &Line, at: RuleAt, section: &str, acls: &Acls) -> bool {
        let w = &l.words;
        let head = w[0].as_str();
        // the action's words, and the condition's
        let cpos = w.iter().position(|x| x == "if" || x == "unless");
        let (act, cnd) = match cpos {
            Some(p) => (&w[..p], Some((&w[p + 1..], w[p] == "unless"))),
            None => (&w[..], None),
        };
        let alts = match cnd {
            Some((c, neg)) => match cond::condition(c, neg, acls) {
                Ok(a) => a,
                Err(e) => {
                    self.unsupported(l, format!("the condition: {e}"));
                    return true;
                }
            },
            None => (vec![Table::default()], true),
        };
        let (alts, exact) = alts;
        let mut action = Table::default();
        let mut notes: Vec<String> = Vec::new();
        let mut approx = !exact;
        if !exact {
            notes.push("the condition is approximated (see the ACL's line)".into());
        }
        let verb = act.get(1).map(String::as_str).unwrap_or("");
        let rate_alts = alts.iter().any(|a| a.get("__rate_gt").is_some());
        match (head, verb) {
            ("rate-limit", "sessions") => {
                let Some(n) = act
                    .get(2)
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                else {
                    self.unsupported(l, "rate-limit sessions N expected");
                    return true;
                };
                let name = self.rate_limit(&format!("{section}-sessions"), "all", n, 1, None);
                action.set("rate_limit", s(&name));
                approx = true;
                notes.push(format!(
                    "[[rate_limit]] {name:?} (key \"all\", {n}/s) on every request: HAProxy delays new connections past the rate, rampart answers requests past it with 429"
                ));
            }
            ("http-request" | "tcp-request", "track-sc0" | "content") => {
                // tcp-request content track-sc0 KEY; http-request track-sc0 KEY [table T]
                let rest = if verb == "content" {
                    &act[2..]
                } else {
                    &act[1..]
                };
                if rest.first().map(String::as_str) != Some("track-sc0") {
                    self.unsupported(l, "only track-sc0 is mapped");
                    return true;
                }
                let key = match rest.get(1).map(String::as_str) {
                    Some("src") => "client_ip".to_string(),
                    Some("path") => "path".to_string(),
                    Some(k) => {
                        match k
                            .strip_prefix("req.hdr(")
                            .or_else(|| k.strip_prefix("hdr("))
                            .and_then(|h| h.strip_suffix(')'))
                        {
                            Some(h) => format!("header:{}", h.to_ascii_lowercase()),
                            None => {
                                self.unsupported(l, format!("track-sc0 {k}: only src, path and req.hdr(NAME) are mapped"));
                                return true;
                            }
                        }
                    }
                    None => {
                        self.unsupported(l, "track-sc0 KEY expected");
                        return true;
                    }
                };
                let table = rest
                    .iter()
                    .position(|x| x == "table")
                    .and_then(|p| rest.get(p + 1))
                    .cloned()
                    .or_else(|| Some(section.to_string()));
                self.track = Some((key.clone(), table));
                let mut note = format!(
                    "the key ({key}) of the [[rate_limit]] that a rule testing the tracked http_req_rate makes"
                );
                if cnd.is_some() {
                    note.push_str("; its condition is not kept: the limit counts every request the rule applies to");
                }
                self.approx(l, note);
                return true;
            }
            ("http-request", "deny" | "tarpit") if rate_alts => {
                let status = act
                    .iter()
                    .position(|x| x == "deny_status")
                    .and_then(|p| act.get(p + 1))
                    .cloned()
                    .unwrap_or_else(|| "403".into());
                let Some((key, table)) = self.track.clone() else {
                    self.unsupported(l, "a tracked rate without a track-sc0 before it");
                    return true;
                };
                let mut out = Vec::new();
                for a in &alts {
                    let Some(n) = a.get("__rate_gt").and_then(|n| n.parse::<u64>().ok()) else {
                        self.unsupported(l, "a rate test OR another condition is not mapped");
                        return true;
                    };
                    let tname = a
                        .get("__rate_table")
                        .map(|t| t.trim_matches('"').to_string())
                        .or(table.clone())
                        .unwrap_or_else(|| section.to_string());
                    let Some(st) = self.sticks.get(&tname).cloned() else {
                        self.unsupported(
                            l,
                            format!("the stick table {tname:?} is not in this file"),
                        );
                        return true;
                    };
                    let Some(period) = st.period else {
                        self.unsupported(
                            l,
                            format!(
                                "the stick table {tname:?} does not store http_req_rate(PERIOD)"
                            ),
                        );
                        return true;
                    };
                    let name = self.rate_limit(
                        &format!("{tname}-http-req-rate"),
                        &key,
                        n,
                        period,
                        st.size,
                    );
                    let mut r = a.clone();
                    r.0.retain(|(k, _)| !k.starts_with("__rate"));
                    r.set("rate_limit", s(&name));
                    out.push(r);
                }
                let note = format!(
                    "a rule with a [[rate_limit]] (GCRA at the same average rate, a burst of the limit; HAProxy counts a sliding window){}",
                    if status == "429" { String::new() } else { format!("; rampart answers 429, not {status}") }
                );
                let entry = self.report.len();
                self.approx(l, note);
                self.push_rules(at, out, entry);
                return true;
            }
            ("http-request", "deny") => {
                let status = act
                    .iter()
                    .position(|x| x == "deny_status")
                    .and_then(|p| act.get(p + 1))
                    .and_then(|v| v.parse::<u16>().ok())
                    .unwrap_or(403);
                action.set("deny", status.to_string());
                if act.len() > 2 && !act.contains(&"deny_status".to_string()) {
                    approx = true;
                    notes.push("its options are not imported".into());
                }
            }
            ("http-request", "redirect") => {
                let kind = act.get(2).map(String::as_str).unwrap_or("");
                let target = act.get(3).cloned().unwrap_or_default();
                let code = act
                    .iter()
                    .position(|x| x == "code")
                    .and_then(|p| act.get(p + 1))
                    .and_then(|v| v.parse::<u16>().ok())
                    .unwrap_or(302);
                let to = match kind {
                    "location" if !target.contains("%[") => target.clone(),
                    "prefix" if !target.contains("%[") => {
                        format!("{}{{uri}}", target.trim_end_matches('/'))
                    }
                    "scheme" if target == "https" || target == "http" => {
                        format!("{target}://{{host}}{{uri}}")
                    }
                    _ => {
                        self.unsupported(l, "only redirect location|prefix with a fixed text, and scheme http|https, are mapped");
                        return true;
                    }
                };
                if kind == "scheme" {
                    approx = true;
                    notes
                        .push("{host} is the Host without its port; HAProxy keeps the port".into());
                }
                action.set(
                    "redirect",
                    format!("{{ to = {}, status = {code} }}", s(&to)),
                );
                if act.iter().any(|x| {
                    x == "drop-query"
                        || x == "append-slash"
                        || x == "set-cookie"
                        || x == "clear-cookie"
                }) {
                    approx = true;
                    notes.push("drop-query / append-slash / cookies are not imported".into());
                }
            }
            ("http-request" | "http-response", "set-header" | "add-header" | "del-header") => {
                let name = act.get(2).cloned().unwrap_or_default();
                let value = act.get(3).cloned();
                if name.is_empty() {
                    self.unsupported(l, "a header name expected");
                    return true;
                }
                if value
                    .as_deref()
                    .is_some_and(|v| v.contains("%[") || v.contains("%c") || v.contains("%C"))
                {
                    self.unsupported(l, "a value with HAProxy's log-format expressions (%[...]) has no rampart equivalent");
                    return true;
                }
                if let Err(e) = out::header_ok(&name, value.as_deref()) {
                    self.unsupported(l, e);
                    return true;
                }
                let resp = head == "http-response";
                match (verb, value, resp) {
                    ("del-header", _, false) => {
                        action.set("del_header", list(std::slice::from_ref(&name)))
                    }
                    ("del-header", _, true) => {
                        action.set("response_del_header", list(std::slice::from_ref(&name)))
                    }
                    (v, Some(val), false) => action.set(
                        if v == "set-header" {
                            "set_header"
                        } else {
                            "add_header"
                        },
                        format!("{{ {} = {} }}", s(&name), s(&val)),
                    ),
                    ("set-header", Some(val), true) => action.set(
                        "response_set_header",
                        format!("{{ {} = {} }}", s(&name), s(&val)),
                    ),
                    (_, Some(_), true) => {
                        self.unsupported(l, "rampart sets or removes response headers (no add)");
                        return true;
                    }
                    (_, None, _) => {
                        self.unsupported(l, "a value expected");
                        return true;
                    }
                }
            }
            _ => return false,
        }
        let rules: Vec<Table> = alts
            .into_iter()
            .map(|mut a| {
                a.0.extend(action.0.iter().cloned());
                a
            })
            .collect();
        let mut note = format!(
            "a [[listener.rule]]{}",
            if rules.len() > 1 {
                format!(" per alternative ({})", rules.len())
            } else {
                String::new()
            }
        );
        if matches!(at, RuleAt::Pool(_)) {
            note.push_str(", on the requests routed to this backend");
        }
        for n in notes {
            note.push_str("; ");
            note.push_str(&n);
        }
        let entry = self.report.len();
        if approx {
            self.approx(l, note);
        } else {
            self.mapped(l, note);
        }
        self.push_rules(at, rules, entry);
        true
    }

    fn push_rules(&mut self, at: RuleAt, rules: Vec<Table>, entry: usize) {
        let v = match at {
            RuleAt::Listener(li) => self.pre_rules.entry(li).or_default(),
            RuleAt::Pool(pi) => self.pool_rules.entry(pi).or_default(),
        };
        v.extend(rules.into_iter().map(|r| (r, entry)));
    }

    /// A `[[rate_limit]]` (the same one again when it already exists).
    fn rate_limit(
        &mut self,
        base: &str,
        key: &str,
        n: u64,
        period: u64,
        size: Option<u64>,
    ) -> String {
        let (rate, _) = rate_text(n, period);
        let burst = n.saturating_sub(1).to_string();
        for r in &self.cfg.rate_limits {
            if r.get("key") == Some(&s(key))
                && r.get("rate") == Some(&s(&rate))
                && r.get("burst") == Some(&burst)
            {
                if let Some(name) = r.get("name") {
                    return name.trim_matches('"').to_string();
                }
            }
        }
        let mut name = base.to_string();
        let mut k = 2;
        while self
            .cfg
            .rate_limits
            .iter()
            .any(|r| r.get("name") == Some(&s(&name)))
        {
            name = format!("{base}-{k}");
            k += 1;
        }
        let mut t = Table::default();
        t.set("name", s(&name));
        t.set("key", s(key));
        t.set("rate", s(&rate));
        t.set("burst", burst);
        if let Some(sz) = size {
            t.set("max_keys", sz.clamp(1, 10_000_000).to_string());
        }
        self.cfg.rate_limits.push(t);
        name
    }
}

const STICK_TABLE: &str = "a [[rate_limit]] where a rule tests its http_req_rate (size → max_keys); other stored data and stickiness are not imported";

impl Importer {
    /// `acl NAME CRITERION [FLAGS] VALUES`, in a frontend or a backend.
    fn acl_line(&mut self, l: &Line, acls: &mut Acls) {
        let w = &l.words;
        cond::add_acl(acls, &w[1], &w[2..]);
        match acls.get(&w[1]) {
            Some(Ok((_, true))) => self.mapped(l, "rule matches where the ACL is used"),
            Some(Ok((_, false))) => self.approx(
                l,
                "rule matches where the ACL is used; rampart's host match ignores the port and treats hdr_dom as the name or any name under it",
            ),
            Some(Err(e)) => {
                let e = e.clone();
                self.unsupported(l, e)
            }
            None => {}
        }
    }
}

/// Where a section's rules go.
#[derive(Debug, Clone, Copy)]
enum RuleAt {
    Listener(usize),
    Pool(usize),
}

impl Importer {
    /// Each listener's rules in HAProxy's order: its `http-request` rules,
    /// then per `use_backend` rule the rules of the backend it picks (ANDed
    /// with its condition) and the rule itself, then the default backend's.
    fn assemble_rules(&mut self) {
        let pool_rules = std::mem::take(&mut self.pool_rules);
        let rules_of = |pool: &str| -> Vec<(Table, usize)> {
            self.pool_ix
                .get(pool.trim_matches('"'))
                .and_then(|pi| pool_rules.get(pi))
                .cloned()
                .unwrap_or_default()
        };
        let mut failed: Vec<usize> = Vec::new();
        let mut all = Vec::new();
        for li in 0..self.cfg.listeners.len() {
            let mut out: Vec<Table> = Vec::new();
            for (mut r, e) in self.pre_rules.remove(&li).unwrap_or_default() {
                r.set("__entry", e.to_string());
                out.push(r);
            }
            let routes = std::mem::take(&mut self.cfg.listeners[li].rules);
            for route in routes {
                if let Some(pool) = route.get("pool") {
                    let mut m = route.clone();
                    m.0.retain(|(k, _)| k != "pool");
                    for (pr, e) in rules_of(pool) {
                        let merged = if m.0.is_empty() {
                            Some(pr.clone())
                        } else if pr.get("not").is_some() || m.get("not").is_some() {
                            None
                        } else {
                            cond::and(&m, &pr)
                        };
                        match merged {
                            Some(mut r) => {
                                r.set("__entry", e.to_string());
                                out.push(r);
                            }
                            None => failed.push(e),
                        }
                    }
                }
                out.push(route);
            }
            if let Some(pool) = self.cfg.listeners[li].keys.get("pool").map(String::from) {
                for (mut r, e) in rules_of(&pool) {
                    r.set("__entry", e.to_string());
                    out.push(r);
                }
            }
            all.push(out);
        }
        for (li, out) in all.into_iter().enumerate() {
            self.cfg.listeners[li].rules = out;
        }
        for e in failed {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Unsupported;
                en.note = "this backend rule cannot be ANDed with the condition of a use_backend that picks the backend (both test the same key, or one is negated)".into();
            }
        }
    }

    /// Binds become `bind` (and `[listener.tls]`); a frontend with plain and
    /// TLS binds becomes two listeners, as a rampart listener is one or the
    /// other. Rules for `ssl_fc` keep to the side they name; tcp listeners
    /// keep no request rules.
    fn split_tls(&mut self) {
        let mut out = Vec::new();
        let mut dropped_entries: Vec<(usize, &'static str)> = Vec::new();
        let binds = std::mem::take(&mut self.binds);
        for (li, l) in std::mem::take(&mut self.cfg.listeners)
            .into_iter()
            .enumerate()
        {
            let b = binds.get(&li).cloned().unwrap_or_default();
            let plain: Vec<String> = b
                .iter()
                .filter(|(_, t)| t.is_none())
                .map(|(a, _)| a.clone())
                .collect();
            let tls: Vec<String> = b
                .iter()
                .filter(|(_, t)| t.is_some())
                .map(|(a, _)| a.clone())
                .collect();
            let tls_table = b.iter().find_map(|(_, t)| t.clone());
            let mut sides = Vec::new();
            if !plain.is_empty() || tls.is_empty() {
                let mut p = l.clone();
                if !plain.is_empty() {
                    p.keys.set("bind", list(&plain));
                }
                sides.push((p, false));
            }
            if let Some(t) = tls_table {
                let mut p = l.clone();
                if !plain.is_empty() {
                    let name = p
                        .keys
                        .get("name")
                        .unwrap_or("\"\"")
                        .trim_matches('"')
                        .to_string();
                    p.keys.set("name", s(&format!("{name}-tls")));
                }
                p.keys.set("bind", list(&tls));
                p.tls = Some(t);
                sides.push((p, true));
            }
            for (mut p, is_tls) in sides {
                let tcp = p.keys.get("mode") == Some("\"tcp\"");
                let want = if is_tls { "\"true\"" } else { "\"false\"" };
                p.rules.retain(|r| {
                    if tcp {
                        if let Some(e) = r.get("__entry").and_then(|e| e.parse().ok()) {
                            dropped_entries.push((
                                e,
                                "request rules apply to http listeners; this one is tcp",
                            ));
                            return false;
                        }
                    }
                    match r.get("__tls") {
                        Some(v) => v == want,
                        None => true,
                    }
                });
                for r in &mut p.rules {
                    r.0.retain(|(k, _)| !k.starts_with("__"));
                }
                // nothing after a rule that decides every request is reached
                // (HAProxy's `redirect scheme https` on the plain side)
                const MATCHES: [&str; 8] = [
                    "host",
                    "path_prefix",
                    "path",
                    "path_regex",
                    "method",
                    "header",
                    "src",
                    "not",
                ];
                if let Some(cut) = p.rules.iter().position(|r| {
                    !r.0.iter().any(|(k, _)| MATCHES.contains(&k.as_str()))
                        && ["deny", "redirect", "pool"]
                            .iter()
                            .any(|k| r.get(k).is_some())
                }) {
                    p.rules.truncate(cut + 1);
                }
                out.push(p);
            }
        }
        self.cfg.listeners = out;
        for (e, why) in dropped_entries {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Unsupported;
                en.note = why.into();
            }
        }
        self.cfg.drop_unused_rate_limits();
    }
}

fn timeout_key(k: &str) -> &'static str {
    match k {
        "connect" => "each pool's connect_timeout",
        "server" => "each pool's server_timeout",
        "client" => "each listener's client_timeout",
        "queue" => "each pool's queue_timeout",
        "tunnel" => "each pool's tunnel_timeout",
        "check" => "the health check's timeout",
        _ => "",
    }
}

fn timeout_key_name(k: &str) -> &'static str {
    match k {
        "connect" => "connect_timeout",
        "server" => "server_timeout",
        "queue" => "queue_timeout",
        _ => "tunnel_timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_haproxy_quoting() {
        assert_eq!(
            words("  server a 1.2.3.4:80 check # c"),
            ["server", "a", "1.2.3.4:80", "check"]
        );
        assert_eq!(
            words(r#"http-request set-header X "a b\"c""#),
            ["http-request", "set-header", "X", "a b\"c"]
        );
        assert_eq!(
            words("acl x path_beg '/a#b'"),
            ["acl", "x", "path_beg", "/a#b"]
        );
        assert_eq!(words(r"bind a\ b"), ["bind", "a b"]);
        assert!(words("   # only a comment").is_empty());
    }

    #[test]
    fn durations_and_binds() {
        assert_eq!(duration("5000").as_deref(), Some("5s"));
        assert_eq!(duration("30m").as_deref(), Some("1800s"));
        assert_eq!(duration("250ms").as_deref(), Some("250ms"));
        assert_eq!(duration("soon"), None);
        assert_eq!(
            bind_addrs("*:80,:81").unwrap(),
            ["0.0.0.0:80", "0.0.0.0:81"]
        );
        assert_eq!(bind_addrs("[::]:443").unwrap(), ["[::]:443"]);
        assert!(bind_addrs("unix@/run/x.sock").is_err());
        assert!(bind_addrs("example.com:80").is_err());
    }
}
