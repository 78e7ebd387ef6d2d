//! Translating haproxy.cfg's sections: `global`, `defaults`, `option` and
//! `http-check`, frontends and backends line by line, servers and resolvers.

use super::rules::{RuleAt, STICK_TABLE};
use super::tokens::{
    bind_addrs, duration, timeout_key, timeout_key_name, with_base, zero, Line, Section,
    KEEP_ALIVE_NOTE,
};
use super::{Importer, ServerCookie, COOKIE_NOTE, FALL_RISE_NOTE, INTER_NOTE};
use crate::import::haproxy_cond::{self as cond, Acls};
use crate::import::out::{self, list, s, Table};
use crate::import::{Entry, Fidelity};

/// `timeout http-request 0`: HAProxy then waits for ever.
const ZERO_HTTP_REQUEST: &str = "0 is no timeout in HAProxy; rampart's request_header_timeout is above zero (10s unless set): set it by hand";

impl Importer {
    pub(super) fn note(&mut self, l: &Line, f: Fidelity, note: impl Into<String>) {
        self.report.push(Entry {
            line: l.no,
            directive: l.words.join(" "),
            fidelity: f,
            note: note.into(),
        });
    }
    pub(super) fn mapped(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Mapped, note);
    }
    pub(super) fn approx(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Approximated, note);
    }
    pub(super) fn unsupported(&mut self, l: &Line, note: impl Into<String>) {
        self.note(l, Fidelity::Unsupported, note);
    }

    pub(super) fn global(&mut self, sec: &Section) {
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

    pub(super) fn defaults(&mut self, sec: &Section) {
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
                        if w[1] == "check" {
                            self.health_line(None, false);
                        }
                        self.mapped(l, timeout_key(&w[1]));
                    }
                    ("http-request", Some(d)) if zero(&d) => self.unsupported(l, ZERO_HTTP_REQUEST),
                    ("http-request", Some(d)) => {
                        self.defaults.timeouts.insert(w[1].clone(), d);
                        self.mapped(l, "each listener's request_header_timeout");
                    }
                    ("http-keep-alive", Some(_)) => self.approx(l, KEEP_ALIVE_NOTE),
                    (_, None) => self.unsupported(l, "not a duration"),
                    _ => self.unsupported(l, "no rampart equivalent for this timeout"),
                },
                "default-server" => {
                    self.defaults.default_server.extend(w[1..].iter().cloned());
                    self.mapped(l, "the options of each server of the backends that follow, before its own (each server's line reports them)");
                }
                "retries" if w.len() > 1 => {
                    self.defaults.retries = Some(w[1].clone());
                    self.mapped(l, "each pool's retries");
                }
                "option" => self.option(l, None),
                "http-check" => self.http_check(l, None),
                "cookie" => self.cookie_line(l, None),
                "dynamic-cookie-key" => self.dynamic_cookie_key(l, None),
                "errorfile" if w.len() > 2 => self.errorfile(l, None),
                "errorfiles" if w.len() > 1 => self.errorfiles(l, None),
                "compression" => self.compression(l, None),
                "http-error" => self.http_error(l, None),
                "log" => self.unsupported(l, "rampart logs to stderr and stdout"),
                _ => self.unsupported(l, "no rampart equivalent is mapped"),
            }
        }
    }

    /// `option ...`, in defaults (`pool` None) or a backend.
    pub(super) fn option(&mut self, l: &Line, pool: Option<usize>) {
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
                self.health_line(pool, false);
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
                    self.health_line(pool, false);
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
            Some("splice-auto") => self.mapped(
                l,
                "rampart splices bulk tcp-mode data by default (pool splice = true)",
            ),
            Some("splice-request" | "splice-response") => self.approx(
                l,
                "rampart splices a tcp-mode direction once it carries bulk data (pool splice = true), as splice-auto does",
            ),
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
    pub(super) fn http_check(&mut self, l: &Line, pool: Option<usize>) {
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
                self.health_line(pool, false);
                self.mapped(l, "[pool.health] expect_status");
            }
            _ => self.unsupported(l, "only http-check expect status is mapped"),
        }
    }

    pub(super) fn health(&mut self, pool: usize) -> &mut Table {
        self.cfg.pools[pool].health.get_or_insert_with(|| {
            let mut t = Table::default();
            t.set("kind", s("tcp"));
            t
        })
    }

    pub(super) fn new_pool(&mut self, name: &str) -> usize {
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
        // the health lines of defaults hold for it too
        for &k in &self.defaults.health_lines {
            if let Some(h) = self.health_lines.get_mut(k) {
                h.pools.push(i);
            }
        }
        // and its cookie, unless the backend says otherwise
        self.cookies.insert(i, self.defaults.cookie.clone());
        // and its default-server options
        self.default_server
            .insert(i, self.defaults.default_server.clone());
        i
    }

    /// `errorfile CODE FILE`: in defaults (`li` None) the error_pages of
    /// the listeners that follow it, in a frontend or listen section its
    /// listener's. rampart reads the same file (a whole HTTP response) when
    /// it loads the config.
    pub(super) fn errorfile(&mut self, l: &Line, li: Option<usize>) {
        let (code, path) = (&l.words[1], &l.words[2]);
        if !matches!(code.parse::<u16>(), Ok(400..=599)) {
            self.unsupported(l, "not an error status (400 to 599)");
            return;
        }
        self.add_pages(l, li, vec![(code.clone(), path.clone())], None);
    }

    /// `errorfiles NAME [CODE ...]`: the pages of the `http-errors NAME`
    /// section (those of the codes given, else all), as `errorfile` lines
    /// there, in order with them (the last for a status wins).
    pub(super) fn errorfiles(&mut self, l: &Line, li: Option<usize>) {
        let Some(section) = self.http_errors.get(&l.words[1]).cloned() else {
            self.unsupported(l, format!("no http-errors section {:?}", l.words[1]));
            return;
        };
        let codes = &l.words[2..];
        let pages: Vec<(String, String)> = section
            .into_iter()
            .filter(|(c, _)| codes.is_empty() || codes.contains(c))
            .collect();
        let missing: Vec<&String> = codes
            .iter()
            .filter(|c| !pages.iter().any(|(p, _)| p == *c))
            .collect();
        let approx = (!missing.is_empty()).then(|| {
            format!(
                "the section has no page for {}: HAProxy's own answer",
                missing
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        self.add_pages(l, li, pages, approx);
    }

    /// `http-error status CODE [content-type TYPE] errorfile FILE | file
    /// FILE`: a page for CODE, a whole response or a body. An inline
    /// `string`, a log-format body and added `hdr` fields are not in
    /// rampart's pages, which are files.
    pub(super) fn http_error(&mut self, l: &Line, li: Option<usize>) {
        let w = &l.words;
        let arg = |k: &str| w.iter().position(|x| x == k).and_then(|i| w.get(i + 1));
        let code = match (w.get(1).map(String::as_str), w.get(2)) {
            (Some("status"), Some(c)) if matches!(c.parse::<u16>(), Ok(400..=599)) => c.clone(),
            _ => {
                self.unsupported(l, "http-error status CODE (400 to 599) expected");
                return;
            }
        };
        if [
            "string",
            "lf-string",
            "lf-file",
            "hdr",
            "default-errorfiles",
            "errorfiles",
        ]
        .iter()
        .any(|k| w.contains(&k.to_string()))
        {
            self.unsupported(
                l,
                "not imported: rampart's pages are files (errorfile or file), without added fields",
            );
            return;
        }
        let (path, approx) = match (arg("errorfile"), arg("file")) {
            (Some(f), _) => (f.clone(), None),
            (None, Some(f)) => {
                // rampart types a body by its file's extension
                let by_ext = match f.rsplit('.').next() {
                    Some("html" | "htm") => "text/html",
                    Some("json") => "application/json",
                    Some("xml") => "application/xml",
                    _ => "text/plain",
                };
                let given = arg("content-type").map(|t| t.split(';').next().unwrap_or(t).trim());
                let approx = given.filter(|g| !g.eq_ignore_ascii_case(by_ext)).map(|g| {
                    format!("served as {by_ext} (by its extension), not {g}: write it as a whole response (HTTP/1.1 {code} ..., then Content-Type) to keep it")
                });
                (f.clone(), approx)
            }
            (None, None) => {
                self.unsupported(l, "not imported: no errorfile or file: HAProxy's own page");
                return;
            }
        };
        self.add_pages(l, li, vec![(code, path)], approx);
    }

    /// Pages `(status, file)` of line `l`: in defaults (`li` None) the
    /// error_pages of the listeners that follow it, else listener `li`'s.
    fn add_pages(
        &mut self,
        l: &Line,
        li: Option<usize>,
        pages: Vec<(String, String)>,
        approx: Option<String>,
    ) {
        let relative = pages.iter().any(|(_, p)| !p.starts_with('/'));
        let target = match li {
            None => &mut self.defaults.errorfiles,
            Some(i) => self.errorfiles.entry(i).or_default(),
        };
        for (code, path) in pages {
            target.insert(code, path);
        }
        if let Some(i) = li {
            self.set_error_pages(i);
        }
        let mut notes: Vec<String> = approx.into_iter().collect();
        if relative {
            // HAProxy reads it from its working directory (or its
            // `default-path`), rampart from the config file's
            notes.push("a relative path is read from rampart's config file's folder, HAProxy's from its working directory: check it".into());
        }
        let to = if li.is_some() {
            "the listener's error_pages (the same file)"
        } else {
            "the error_pages of the listeners that follow (the same file)"
        };
        if notes.is_empty() {
            self.mapped(l, to);
        } else {
            self.approx(l, format!("{to}; {}", notes.join("; ")));
        }
    }

    /// Writes listener `li`'s `error_pages` from its errorfile lines.
    fn set_error_pages(&mut self, li: usize) {
        let Some(pages) = self.errorfiles.get(&li) else {
            return;
        };
        let table = out::string_table(pages);
        self.cfg.listeners[li].keys.set("error_pages", table);
    }

    pub(super) fn new_listener(&mut self, name: &str) -> usize {
        let mut l = out::Listener::default();
        l.keys.set("name", s(name));
        let mode = self.defaults.mode.clone().unwrap_or_else(|| "tcp".into());
        l.keys
            .set("mode", s(if mode == "http" { "http" } else { "tcp" }));
        if let Some(d) = self.defaults.timeouts.get("client") {
            l.keys.set("client_timeout", s(d));
        }
        if let Some(d) = self.defaults.timeouts.get("http-request") {
            l.keys.set("request_header_timeout", s(d));
        }
        self.cfg.listeners.push(l);
        let li = self.cfg.listeners.len() - 1;
        if !self.defaults.errorfiles.is_empty() {
            self.errorfiles.insert(li, self.defaults.errorfiles.clone());
            self.set_error_pages(li);
        }
        if let Some(v) = self.defaults.compression.value() {
            self.cfg.listeners[li].keys.set("compression", v);
        }
        self.compression
            .insert(li, self.defaults.compression.clone());
        li
    }

    /// `compression algo|type|offload ...`: in defaults (`li` None) the
    /// compression of the listeners that follow, else listener `li`'s.
    fn compression(&mut self, l: &Line, li: Option<usize>) {
        let w = &l.words;
        let mut c = match li {
            None => self.defaults.compression.clone(),
            Some(i) => self.compression.get(&i).cloned().unwrap_or_default(),
        };
        let to = if li.is_some() {
            "the listener's compression"
        } else {
            "the compression of the listeners that follow"
        };
        match w.get(1).map(String::as_str) {
            _ if li.is_some_and(|i| self.cfg.listeners[i].keys.get("mode") == Some("\"tcp\"")) => {
                self.unsupported(l, "a tcp listener has no answers to compress");
                return;
            }
            Some("algo") => {
                // (HAProxy adds to the algorithms a section inherited)
                let algos = &w[2..];
                c.gzip = Some(c.gzip == Some(true) || algos.iter().any(|a| a == "gzip"));
                if algos.iter().any(|a| a != "gzip" && a != "identity") {
                    self.approx(l, format!("{to}: gzip only (deflate and raw-deflate are not rampart's)"));
                } else {
                    self.mapped(l, to);
                }
            }
            Some("type") => {
                // (HAProxy matches a prefix: `text` is every text/ type)
                let types: Vec<String> = w[2..]
                    .iter()
                    .map(|t| t.to_ascii_lowercase())
                    .map(|t| if t.contains('/') { t } else { format!("{t}/*") })
                    .filter(|t| crate::import::out::media_type_ok(t))
                    .collect();
                if types.len() + 2 == w.len() {
                    self.mapped(l, format!("{to}: its types (added to those inherited, as HAProxy)"));
                } else {
                    self.approx(l, format!("{to}: its types, less those that are not media types rampart reads (HAProxy matches a prefix)"));
                }
                // (HAProxy adds to the types a section inherited)
                if !types.is_empty() {
                    let mut all = c.types.take().unwrap_or_default();
                    all.extend(types.into_iter().filter(|t| !all.contains(t)).collect::<Vec<_>>());
                    c.types = Some(all);
                }
            }
            Some("offload") => self.approx(
                l,
                "rampart passes Accept-Encoding on: the servers may compress themselves (rampart leaves an encoded answer as it is)",
            ),
            _ => {
                self.unsupported(l, "compression algo|type|offload expected");
                return;
            }
        }
        match li {
            None => self.defaults.compression = c,
            Some(i) => {
                match c.value() {
                    Some(v) => self.cfg.listeners[i].keys.set("compression", v),
                    None => self.cfg.listeners[i]
                        .keys
                        .0
                        .retain(|(k, _)| k != "compression"),
                }
                self.compression.insert(i, c);
            }
        }
    }

    /// A frontend's lines (or a listen section's frontend half).
    pub(super) fn frontend_line(
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
            "errorfile" if w.len() > 2 => {
                self.errorfile(l, Some(li));
                true
            }
            "compression" => {
                self.compression(l, Some(li));
                true
            }
            "errorfiles" if w.len() > 1 => {
                self.errorfiles(l, Some(li));
                true
            }
            "http-error" => {
                self.http_error(l, Some(li));
                true
            }
            "timeout" if w.len() > 2 && matches!(w[1].as_str(), "client" | "http-request") => {
                let key = if w[1] == "client" {
                    "client_timeout"
                } else {
                    "request_header_timeout"
                };
                match duration(&w[2]) {
                    Some(d) if key == "request_header_timeout" && zero(&d) => {
                        self.unsupported(l, ZERO_HTTP_REQUEST)
                    }
                    Some(d) => {
                        self.cfg.listeners[li].keys.set(key, s(&d));
                        self.mapped(l, key);
                    }
                    None => self.unsupported(l, "not a duration"),
                }
                true
            }
            "timeout" if w.len() > 2 && w[1] == "http-keep-alive" => {
                self.approx(l, KEEP_ALIVE_NOTE);
                true
            }
            // HAProxy ignores a health check in a frontend (no backend
            // capability): it is not the next backends' default either
            "option" if own_pool.is_none() && w.get(1).map(String::as_str) == Some("httpchk") => {
                self.approx(
                    l,
                    "not imported: HAProxy ignores it in a frontend (health checks are a backend's)",
                );
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
                self.acl_line(l);
                true
            }
            "use_backend" if w.len() > 3 && (w[2] == "if" || w[2] == "unless") => {
                match cond::condition(&w[3..], w[2] == "unless", acls) {
                    Ok((alts, exact)) => {
                        let n = alts.len();
                        let entry = self.report.len();
                        for mut rule in alts {
                            // (its line, for what a tcp listener cannot keep)
                            rule.set("__entry", entry.to_string());
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
                let mut rule = Table::default();
                rule.set("__entry", self.report.len().to_string());
                self.cfg.listeners[li].rules.push(rule);
                let ri = self.cfg.listeners[li].rules.len() - 1;
                self.wanted
                    .push((li, Some(ri), w[1].clone(), self.report.len()));
                self.mapped(l, "a [[listener.rule]] with pool and no match");
                true
            }
            // what an SNI-routing frontend waits for (settled in `sni_routes`)
            "tcp-request" if w.len() == 3 && w[1] == "inspect-delay" => {
                self.sni_waits
                    .push((li, Some(duration(&w[2])), self.report.len()));
                self.unsupported(l, "not a duration");
                true
            }
            // `content accept if { req_ssl_hello_type 1 }` (or an ACL of it)
            "tcp-request"
                if w.len() > 4
                    && w[1..4] == ["content", "accept", "if"]
                    && cond::condition(&w[4..], false, acls).is_ok_and(|(alts, _)| {
                        alts.len() == 1
                            && !alts[0].0.is_empty()
                            && alts[0].0.iter().all(|(k, _)| k == "__hello")
                    }) =>
            {
                self.sni_waits.push((li, None, self.report.len()));
                self.unsupported(l, "");
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
    pub(super) fn backend_line(&mut self, l: &Line, pi: usize, acls: &mut Acls) -> bool {
        let w = &l.words;
        match w[0].as_str() {
            "acl" if w.len() > 2 => {
                self.acl_line(l);
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
            "default-server" => {
                self.default_server
                    .entry(pi)
                    .or_default()
                    .extend(w[1..].iter().cloned());
                self.mapped(l, "the options of each server that follows, before its own (each server's line reports them)");
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
            "cookie" => {
                self.cookie_line(l, Some(pi));
                true
            }
            "dynamic-cookie-key" => {
                self.dynamic_cookie_key(l, Some(pi));
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
                                self.health_line(Some(pi), false);
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

    pub(super) fn server(&mut self, l: &Line, pi: usize) {
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
        // default-server's options first: the server's own override them,
        // and its `no-X` (`enabled`) takes a default's X (`disabled`) back
        let own = params;
        // (the switches a server line can turn off; its other `no-` options
        // are TLS tweaks, reported as not imported)
        const SWITCHES: [&str; 6] = [
            "check",
            "ssl",
            "backup",
            "send-proxy",
            "send-proxy-v2",
            "check-ssl",
        ];
        let negation = |o: &String| {
            o == "enabled" || o.strip_prefix("no-").is_some_and(|x| SWITCHES.contains(&x))
        };
        let negated = |w: &String| {
            own.iter().any(|o| {
                o.strip_prefix("no-") == Some(w.as_str()) && SWITCHES.contains(&w.as_str())
                    || (o == "enabled" && w == "disabled")
            })
        };
        let params: Vec<String> = self
            .default_server
            .get(&pi)
            .into_iter()
            .flatten()
            .filter(|w| !negated(w))
            .chain(own.iter().filter(|o| !negation(o)))
            .cloned()
            .collect();
        let params = params.as_slice();
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
        let mut check = false;
        let mut disabled = false;
        let mut check_ssl = false;
        let mut cookie = None;
        let mut tls = Table::default();
        let mut i = 0;
        while i < params.len() {
            let p = params[i].as_str();
            let arg = params.get(i + 1);
            match (p, arg) {
                ("check", _) => {
                    check = true;
                    self.health(pi);
                }
                ("weight", Some(v)) => {
                    // 0..=256 in HAProxy and rampart alike: 0 takes no traffic
                    if let Ok(n) = v.parse::<u32>() {
                        sv.set("weight", n.min(256).to_string());
                    }
                    i += 1;
                }
                ("disabled", _) => disabled = true,
                ("backup", _) => sv.set("backup", "true".into()),
                ("inter", Some(v)) => {
                    if let Some(d) = duration(v) {
                        self.health(pi).set("interval", s(&d));
                        notes.push(INTER_NOTE);
                    }
                    i += 1;
                }
                ("fall", Some(v)) | ("rise", Some(v)) => {
                    if let Ok(n) = v.parse::<u32>() {
                        self.health(pi).set(p, n.to_string());
                        notes.push(FALL_RISE_NOTE);
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
                // settled with the backend's `cookie` line (`settle_cookies`)
                ("cookie", Some(v)) => {
                    cookie = Some(v.clone());
                    notes.push(COOKIE_NOTE);
                    i += 1;
                }
                (
                    "resolve-prefer" | "init-addr" | "id" | "slowstart" | "on-marked-down"
                    | "agent-check" | "agent-port" | "agent-inter" | "addr" | "observe"
                    | "error-limit",
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
                ("crl-file", Some(v)) => {
                    tls.set("crl", s(&with_base(&self.ca_base, v)));
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
        // rampart's TLS to servers is the pool's: a backend whose servers
        // differ on ssl keeps those that agree with its first server
        match self.pool_ssl.get(&pi).copied() {
            Some(first) if first != ssl => {
                self.unsupported(
                    l,
                    format!(
                        "the servers of this backend differ on ssl, and rampart's TLS to servers is the pool's ([pool.tls]): this {} server is left out",
                        if ssl { "TLS" } else { "plain" }
                    ),
                );
                return;
            }
            Some(_) => {}
            None => {
                self.pool_ssl.insert(pi, ssl);
            }
        }
        if check && !self.checked_pools.contains(&pi) {
            self.checked_pools.push(pi);
        }
        if disabled {
            sv.set("weight", "0".into());
            approx = true;
            notes.push("disabled → weight = 0: no traffic (HAProxy also stops checking it; rampart checks it)");
        }
        if tls.get("verify") == Some("false") && tls.get("crl").is_some() {
            // HAProxy reads no CRL where it verifies nothing
            tls.0.retain(|(k, _)| k != "crl");
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
        // `timeout check` from defaults, unless the backend set its own
        if let (Some(h), Some(d)) = (
            self.cfg.pools[pi].health.as_mut(),
            self.defaults.timeouts.get("check").cloned(),
        ) {
            if h.get("timeout").is_none() {
                h.set("timeout", s(&d));
            }
        }
        let server = self.cfg.pools[pi].servers.len();
        self.cfg.pools[pi].servers.push(sv);
        notes.dedup();
        // inter, fall, rise: said to be off by `finish` if no server has check
        let health_params = notes
            .iter()
            .any(|n| *n == INTER_NOTE || *n == FALL_RISE_NOTE);
        let mut note = if template {
            "a server entry by name: one member per DNS record (the template's count is not a limit)".to_string()
        } else {
            "[[pool.server]]".to_string()
        };
        for n in notes {
            note.push_str("; ");
            note.push_str(n);
        }
        if health_params {
            self.health_line(Some(pi), true);
        }
        let entry = self.report.len();
        self.cookies
            .entry(pi)
            .or_default()
            .servers
            .push(ServerCookie {
                server,
                entry,
                value: cookie,
                dns: !by_ip,
            });
        if approx {
            self.approx(l, note);
        } else {
            self.mapped(l, note);
        }
    }

    pub(super) fn resolvers(&mut self, sec: &Section) {
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
