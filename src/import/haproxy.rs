//! haproxy.cfg → rampart. Our own tokenizer: the format is line-based, and
//! the crate that exists (`haproxy-config` 0.4) files unknown sections into the
//! previous proxy, reads `server-template` as a server named "-template",
//! keeps arguments as one string and has no line numbers (see the closing note
//! of the import work).
//!
//! What is mapped is listed in the README (Importing a config); every other
//! directive is reported, with why.

use super::out::{self, list, s, Table};
use super::{Entry, Fidelity, Imported};
use std::collections::HashMap;

/// One logical line: its number and its words (quotes and escapes resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    no: usize,
    words: Vec<String>,
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
enum Kind {
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
struct Section {
    kind: Kind,
    keyword: String,
    name: String,
    no: usize,
    lines: Vec<Line>,
    /// `frontend NAME ADDR`: the old syntax's address.
    bind_in_head: Option<String>,
}

fn sections(src: &str) -> (Vec<Section>, Vec<Line>) {
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
fn bind_addrs(spec: &str) -> Result<Vec<String>, String> {
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
    /// Each listener's bind addresses so far.
    binds: HashMap<usize, Vec<String>>,
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
                k if k.starts_with("ssl-default") || k.starts_with("tune.ssl") || k == "ca-base" || k == "crt-base" => {
                    self.unsupported(l, "TLS defaults are not imported yet")
                }
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
        acls: &mut HashMap<String, Vec<(String, String)>>,
        own_pool: Option<&str>,
    ) -> bool {
        let w = &l.words;
        match w[0].as_str() {
            "bind" if w.len() > 1 => {
                match bind_addrs(&w[1]) {
                    Ok(addrs) => {
                        let all = self.binds.entry(li).or_default();
                        all.extend(addrs);
                        let all = list(all);
                        self.cfg.listeners[li].keys.set("bind", all);
                        let extra: Vec<&String> = w[2..].iter().collect();
                        if extra.is_empty() {
                            self.mapped(l, "bind");
                        } else if extra.iter().any(|x| *x == "ssl" || *x == "crt") {
                            self.unsupported(l, "TLS on binds is not imported yet: the listener is plain; add [listener.tls] by hand");
                        } else if extra.iter().any(|x| *x == "accept-proxy") {
                            self.cfg.listeners[li]
                                .keys
                                .set("proxy_protocol", s("accept"));
                            self.mapped(l, "bind, and proxy_protocol = \"accept\"");
                        } else {
                            self.approx(l, "bind (its options are not imported)");
                        }
                    }
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
                let criterion = w[2].as_str();
                let vals: Vec<String> = w[3..]
                    .iter()
                    .filter(|v| !v.starts_with('-'))
                    .cloned()
                    .collect();
                let cond = match criterion {
                    "hdr(host)" | "hdr_dom(host)" | "req.hdr(host)" | "hdr(Host)" => Some("host"),
                    "path_beg" | "path" if vals.iter().any(|v| !v.starts_with('/')) => None,
                    "path_beg" => Some("path_prefix"),
                    "path" => Some("path"),
                    _ => None,
                };
                match (cond, vals.len()) {
                    (Some(c), 1) => {
                        acls.entry(w[1].clone())
                            .or_default()
                            .push((c.to_string(), vals[0].clone()));
                        self.mapped(l, format!("a rule match ({c}) where the ACL is used"));
                    }
                    (Some(_), _) => {
                        self.unsupported(l, "an ACL with several values is not mapped yet")
                    }
                    (None, _) => {
                        self.unsupported(l, format!("the ACL criterion {criterion} is not mapped"))
                    }
                }
                true
            }
            "use_backend" if w.len() > 3 && (w[2] == "if") => {
                let cond = &w[3..];
                let mut rule = Table::default();
                let ok = match cond {
                    [one] => match acls.get(one) {
                        Some(parts) if parts.len() == 1 => {
                            let (k, v) = &parts[0];
                            rule.set(k, s(v));
                            true
                        }
                        _ => false,
                    },
                    [open, crit, rest @ ..]
                        if open == "{" && rest.last().map(String::as_str) == Some("}") =>
                    {
                        let vals: Vec<&String> = rest[..rest.len() - 1]
                            .iter()
                            .filter(|v| !v.starts_with('-'))
                            .collect();
                        match (crit.as_str(), vals.as_slice()) {
                            ("hdr(host)" | "hdr_dom(host)" | "req.hdr(host)", [v]) => {
                                rule.set("host", s(v));
                                true
                            }
                            ("path_beg", [v]) if v.starts_with('/') => {
                                rule.set("path_prefix", s(v));
                                true
                            }
                            ("path", [v]) if v.starts_with('/') => {
                                rule.set("path", s(v));
                                true
                            }
                            _ => false,
                        }
                    }
                    _ => false,
                };
                if ok {
                    let lst = &mut self.cfg.listeners[li];
                    lst.rules.push(rule);
                    let ri = lst.rules.len() - 1;
                    self.wanted
                        .push((li, Some(ri), w[1].clone(), self.report.len()));
                    self.mapped(l, "a [[listener.rule]] with pool");
                } else {
                    self.unsupported(
                        l,
                        "only one ACL (host, path_beg or path, one value) is mapped",
                    );
                }
                true
            }
            _ => false,
        }
    }

    /// A backend's lines (or a listen section's backend half).
    fn backend_line(&mut self, l: &Line, pi: usize) -> bool {
        let w = &l.words;
        match w[0].as_str() {
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
            _ => {
                self.unsupported(l, format!("{addr:?}: rampart needs an address with a port"));
                return;
            }
        };
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
                        notes.push("maxconn → the pool's max_connections_per_server");
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
                ("ssl" | "verify" | "ca-file" | "crt" | "sni" | "alpn" | "check-ssl", _) => {
                    approx = true;
                    notes.push("TLS to servers is not imported yet");
                    if !matches!(p, "ssl" | "check-ssl") {
                        i += 1;
                    }
                }
                _ => {
                    approx = true;
                    notes.push("some server options are not imported");
                }
            }
            i += 1;
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
fn old_style_bind(sec: &Section) -> Option<Line> {
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
    };
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
                let mut acls = HashMap::new();
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
                for l in &sec.lines {
                    if l.words[0] == "mode" {
                        if l.words.get(1).map(String::as_str) == Some("http") {
                            im.http_pools.push(pi);
                        }
                        im.mapped(l, "the listeners that use this pool take its mode");
                    } else if !im.backend_line(l, pi) {
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
                let mut acls = HashMap::new();
                for l in old_style_bind(sec).iter().chain(&sec.lines) {
                    if l.words[0] == "stats" {
                        im.stats_line(l);
                    } else if !im.frontend_line(l, li, &mut acls, Some(&name))
                        && !im.backend_line(l, pi)
                    {
                        im.other_line(l);
                    }
                }
            }
            Kind::Resolvers => {
                im.mapped(&head, "[resolver]");
                im.resolvers(sec);
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
    Imported {
        toml: im.cfg.render(),
        report: im.report,
    }
}

impl Importer {
    fn other_line(&mut self, l: &Line) {
        match l.words[0].as_str() {
            "log" => self.unsupported(l, "rampart logs to stderr and its access log to stdout"),
            "http-request" | "http-response" | "tcp-request" | "tcp-response" => {
                self.unsupported(l, "rules are not imported yet: write [[listener.rule]] by hand")
            }
            "compression" => self.unsupported(l, "rampart does not compress"),
            "cookie" | "dynamic-cookie-key" | "stick-table" | "stick" => {
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
        // a listener without a default pool takes its first rule's
        for l in &mut self.cfg.listeners {
            if l.keys.get("pool").is_none() {
                if let Some(p) = l.rules.iter().find_map(|r| r.get("pool")) {
                    let p = p.to_string();
                    l.keys.set("pool", p);
                }
            }
        }
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
        if self.cfg.pools.is_empty() {
            let mut p = out::Pool::default();
            p.keys.set("name", s("imported"));
            let mut sv = Table::default();
            sv.set("address", s("127.0.0.1:8000"));
            p.servers.push(sv);
            self.cfg.pools.push(p);
            self.report.push(Entry {
                line: 0,
                directive: "(backends)".into(),
                fidelity: Fidelity::Approximated,
                note: "no backend with a server rampart can use: a placeholder pool \"imported\" (127.0.0.1:8000) keeps the config runnable".into(),
            });
        }
        if self.cfg.listeners.is_empty() {
            let mut l = out::Listener::default();
            let pool = self.cfg.pools[0]
                .keys
                .get("name")
                .unwrap_or("\"imported\"")
                .to_string();
            l.keys.set("name", s("imported"));
            l.keys.set("bind", list(&["127.0.0.1:8080".to_string()]));
            let http = self.cfg.pools[0]
                .keys
                .get("hash_key")
                .is_some_and(|k| k != "\"client_ip\"")
                || self.defaults.mode.as_deref() == Some("http");
            l.keys.set("mode", s(if http { "http" } else { "tcp" }));
            l.keys.set("pool", pool);
            self.cfg.listeners.push(l);
            self.report.push(Entry {
                line: 0,
                directive: "(frontends)".into(),
                fidelity: Fidelity::Approximated,
                note: "no frontend rampart can use: a listener \"imported\" on 127.0.0.1:8080 keeps the config runnable".into(),
            });
        }
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
