//! haproxy.cfg → rampart. Our own tokenizer: the format is line-based, and
//! the crate that exists (`haproxy-config` 0.4) files unknown sections into the
//! previous proxy, reads `server-template` as a server named "-template",
//! keeps arguments as one string and has no line numbers (see the closing note
//! of the import work).
//!
//! What is mapped is listed in the README (Importing a config); every other
//! directive is reported, with why.

mod cookie;
mod rules;
mod tokens;
mod translate;
#[cfg(test)]
mod translation_tests;

pub(crate) use tokens::{bind_addrs, old_style_bind, sections, Kind};

use super::out::{self, s, Table};
use super::{Entry, Fidelity, Imported};
use std::collections::HashMap;
use tokens::{env_var, stick, with_base, Line, Stick};

/// Settings `defaults` hands down.
#[derive(Debug, Clone, Default)]
struct Defaults {
    mode: Option<String>,
    timeouts: HashMap<String, String>,
    retries: Option<String>,
    httpchk: Option<(String, String)>,
    expect_status: Option<String>,
    /// Its health lines: indices into `Importer::health_lines`.
    health_lines: Vec<usize>,
    /// Its `cookie` and `dynamic-cookie-key` lines.
    cookie: PoolCookie,
    /// Its `errorfile` lines, by status: the listeners that follow have them.
    errorfiles: std::collections::BTreeMap<String, String>,
    /// Its `default-server` options, in order.
    default_server: Vec<String>,
    /// Its `compression` lines.
    compression: Compression,
}

/// `compression algo ...` and `compression type ...` of a section.
#[derive(Debug, Clone, Default, PartialEq)]
struct Compression {
    /// gzip among the algorithms (None: no `algo` line)
    gzip: Option<bool>,
    types: Option<Vec<String>>,
}

impl Compression {
    /// The listener's `compression` value (None: nothing gzipped).
    fn value(&self) -> Option<String> {
        if self.gzip != Some(true) {
            return None;
        }
        // without `compression type`, HAProxy compresses any type
        let types = self.types.clone().unwrap_or_else(|| vec!["*".into()]);
        Some(format!("{{ types = {} }}", out::list(&types)))
    }
}

/// A `cookie NAME insert ...` line, as `[pool.cookie]`.
#[derive(Debug, Clone)]
struct CookieLine {
    table: Table,
    /// `dynamic`: HAProxy gives a server without a value of its own one
    /// hashed from `dynamic-cookie-key` and its address
    dynamic: bool,
}

/// A pool's cookie persistence, settled by `finish`: its `cookie`,
/// `dynamic-cookie-key` and servers' `cookie` lines come in any order.
#[derive(Debug, Clone, Default)]
struct PoolCookie {
    /// whether the backend (or the `defaults` it follows) has a `cookie` line
    seen: bool,
    /// that line, when rampart can do what it says
    line: Option<CookieLine>,
    /// `dynamic-cookie-key`, and its report entry (None: from `defaults`)
    key: Option<(String, Option<usize>)>,
    servers: Vec<ServerCookie>,
}

/// A server of a pool with persistence, as its line set it.
#[derive(Debug, Clone)]
struct ServerCookie {
    /// its index in the pool's servers
    server: usize,
    /// its report entry
    entry: usize,
    /// its `cookie VALUE`
    value: Option<String>,
    /// whether its address is a DNS name (its members take a hash each)
    dns: bool,
}

/// A report entry of a line that sets health checks, and the pools it sets
/// them for: `finish` re-marks it when none of them is checked.
struct HealthLine {
    entry: usize,
    pools: Vec<usize>,
    /// from `defaults` (it holds for the pools that follow)
    defaults: bool,
    /// a server's inter, fall or rise (the rest of its line is the server)
    server: bool,
}

/// What a server's health parameters become, in its report entry.
const INTER_NOTE: &str = "inter → the pool's health interval";
const FALL_RISE_NOTE: &str = "fall/rise → the pool's health check";
/// What a server's `cookie VALUE` becomes, in its report entry.
const COOKIE_NOTE: &str = "cookie → its value of [pool.cookie]";

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
    /// Whether each pool's first server has `ssl` (rampart's TLS to servers
    /// is the pool's).
    pool_ssl: HashMap<usize, bool>,
    /// Pools with a server that has `check`: the others are not checked.
    checked_pools: Vec<usize>,
    /// The lines that set health checks, for `finish` to say which are off.
    health_lines: Vec<HealthLine>,
    /// Each pool's cookie persistence, for `finish` to settle.
    cookies: HashMap<usize, PoolCookie>,
    /// Each listener's `errorfile` lines (its defaults' and its own), by status.
    errorfiles: HashMap<usize, std::collections::BTreeMap<String, String>>,
    /// Each listener's `compression` lines, its defaults' first.
    compression: HashMap<usize, Compression>,
    /// The `http-errors` sections: their `errorfile` lines, by status.
    http_errors: HashMap<String, Vec<(String, String)>>,
    /// Each pool's `default-server` options (its defaults' and its own).
    default_server: HashMap<usize, Vec<String>>,
    /// the `http-response set|add|del|replace-header` lines of the file by
    /// the field they name (lowercase): their section's kind and number,
    /// their line and verb
    response_fields: HashMap<String, Vec<(Kind, usize, usize, String)>>,
    /// A frontend's `tcp-request inspect-delay` (its duration) and `content
    /// accept if { req_ssl_hello_type 1 }` (None) lines, with their report
    /// entries: what a tcp listener routing by SNI waits for.
    sni_waits: Vec<(usize, Option<Option<String>>, usize)>,
    /// Backends that only serve HAProxy's stats page.
    stats_backends: Vec<String>,
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
        pool_ssl: HashMap::new(),
        checked_pools: Vec::new(),
        health_lines: Vec::new(),
        cookies: HashMap::new(),
        errorfiles: HashMap::new(),
        compression: HashMap::new(),
        http_errors: HashMap::new(),
        default_server: HashMap::new(),
        response_fields: HashMap::new(),
        sni_waits: Vec::new(),
        stats_backends: Vec::new(),
    };
    for sec in &secs {
        for l in &sec.lines {
            if let [head, verb, name, ..] = l.words.as_slice() {
                if head == "http-response"
                    && matches!(
                        verb.as_str(),
                        "set-header"
                            | "add-header"
                            | "del-header"
                            | "replace-header"
                            | "replace-value"
                    )
                {
                    im.response_fields
                        .entry(name.to_ascii_lowercase())
                        .or_default()
                        .push((sec.kind, sec.no, l.no, verb.clone()));
                }
            }
        }
    }
    for sec in secs.iter().filter(|s| s.keyword == "http-errors") {
        let pages = im.http_errors.entry(sec.name.clone()).or_default();
        // (an error status: HAProxy's 200, monitor-uri's, is not a page of rampart's)
        for l in sec.lines.iter().filter(|l| {
            l.words[0] == "errorfile"
                && l.words.len() > 2
                && matches!(l.words[1].parse::<u16>(), Ok(400..=599))
        }) {
            pages.retain(|(c, _)| *c != l.words[1]);
            pages.push((l.words[1].clone(), l.words[2].clone()));
        }
    }
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
                let mut acls = Importer::section_acls(&sec.lines);
                for l in old_style_bind(sec).iter().chain(&sec.lines) {
                    if !im.frontend_line(l, li, &mut acls, None) {
                        im.other_line(l);
                    }
                }
            }
            // a backend that serves HAProxy's stats page on the frontends
            // that pick it: rampart's is the admin server's
            Kind::Backend
                if sec.lines.iter().any(|l| l.words[0] == "stats")
                    && !sec.lines.iter().any(|l| l.words[0].starts_with("server")) =>
            {
                im.approx(
                    &head,
                    "a stats backend: rampart serves its stats page on the admin server ([admin] bind, /stats), not on a listener; the frontends' use_backend lines for it are left out",
                );
                im.stats_backends.push(sec.name.clone());
                for l in &sec.lines {
                    match l.words[0].as_str() {
                        "stats" => im.stats_line(l),
                        "mode" => im.mapped(l, "the admin server speaks HTTP"),
                        _ => im.other_line(l),
                    }
                }
            }
            Kind::Backend => {
                let name = im.unique_pool_name(&sec.name);
                let pi = im.new_pool(&name);
                im.mapped(&head, "a [[pool]]");
                let mut acls = Importer::section_acls(&sec.lines);
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
                let mut acls = Importer::section_acls(&sec.lines);
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
            Kind::Other if sec.keyword == "http-errors" => {
                im.mapped(&head, "its pages, where errorfiles names it");
                for l in &sec.lines {
                    match (
                        l.words[0].as_str(),
                        l.words.get(1).map(|c| c.parse::<u16>()),
                    ) {
                        ("errorfile", Some(Ok(400..=599))) if l.words.len() > 2 => im.mapped(
                            l,
                            "a page of the error_pages where errorfiles names the section",
                        ),
                        ("errorfile", _) => {
                            im.unsupported(l, "errorfile CODE (400 to 599) FILE expected")
                        }
                        _ => im.unsupported(l, "in an http-errors section"),
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
    /// The report entry about to be pushed sets health checks: of the pool
    /// `pool`, or (None) of the pools that follow this `defaults` section.
    /// `server`: a server line's inter, fall or rise.
    fn health_line(&mut self, pool: Option<usize>, server: bool) {
        let line = HealthLine {
            entry: self.report.len(),
            pools: pool.into_iter().collect(),
            defaults: pool.is_none(),
            server,
        };
        if pool.is_none() {
            self.defaults.health_lines.push(self.health_lines.len());
        }
        self.health_lines.push(line);
    }

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
            "compression" => self.unsupported(
                l,
                "not imported: rampart's compression is a listener's (a frontend's, or defaults'): put it there",
            ),
            "errorfile" | "errorfiles" | "http-error" => self.approx(
                l,
                "not imported: error_pages are a listener's (or [global]'s): set them on the listeners that use this backend",
            ),
            // a backend's (see `backend_line`): HAProxy warns and ignores it here
            "cookie" | "dynamic-cookie-key" => self.approx(
                l,
                "not imported: HAProxy ignores it outside a backend (persistence is a backend's)",
            ),
            "stick" => self.unsupported(
                l,
                "stick-table persistence is not in rampart: [pool.cookie] keeps a client on its server by a cookie, balance = \"hash\" by its address or a header",
            ),
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
            Some("realm") => self.approx(
                l,
                "the read pages' login is [admin] read_user and read_password_env (HTTP basic, realm rampart's)",
            ),
            Some("hide-version") => self.approx(
                l,
                "rampart's stats page shows its version; put the admin server where only operators reach it",
            ),
            Some("timeout") => self.approx(
                l,
                "the stats socket's idle timeout: rampart's admin API is HTTP, each request its own",
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
        self.settle_cookies();
        // HAProxy checks only servers with `check`: inter, fall, rise,
        // `timeout check`, `option httpchk` and `http-check` alone turn on nothing
        for (i, p) in self.cfg.pools.iter_mut().enumerate() {
            if !self.checked_pools.contains(&i) {
                p.health = None;
            }
        }
        // and the lines that set them for those pools alone are not mapped
        for h in &self.health_lines {
            if h.pools.iter().any(|p| self.checked_pools.contains(p)) {
                continue;
            }
            let Some(e) = self.report.get_mut(h.entry) else {
                continue;
            };
            if e.fidelity == Fidelity::Mapped {
                e.fidelity = Fidelity::Approximated;
            }
            let off = if h.defaults {
                "no server of the backends that follow has `check`: health checks are off, as in HAProxy"
            } else {
                "no server of this backend has `check`: health checks are off, as in HAProxy"
            };
            if h.server {
                e.note = e
                    .note
                    .replace(&format!("; {INTER_NOTE}"), "")
                    .replace(&format!("; {FALL_RISE_NOTE}"), "");
                e.note
                    .push_str(&format!("; inter, fall and rise are not imported: {off}"));
            } else {
                e.note = format!("not imported: {off}");
            }
        }
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
                    e.note = if self.stats_backends.contains(&pool) {
                        format!("backend {pool:?} serves HAProxy's stats page: rampart's is on the admin server ([admin] bind, /stats), not on a listener")
                    } else {
                        format!(
                            "backend {pool:?} is not in this file or has no server rampart can use"
                        )
                    };
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
        self.sni_routes();
        // a listener without a default pool takes its first rule's (a tcp
        // listener with routes closes what they do not take, as HAProxy)
        for l in &mut self.cfg.listeners {
            if l.keys.get("pool").is_none() && l.routes.is_empty() {
                if let Some(p) = l.rules.iter().find_map(|r| r.get("pool")) {
                    let p = p.to_string();
                    l.keys.set("pool", p);
                }
            }
        }
        self.split_tls();
        let before = self.cfg.listeners.len();
        self.cfg.listeners.retain(|l| {
            (l.keys.get("pool").is_some() || !l.routes.is_empty()) && l.keys.get("bind").is_some()
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokens::{duration, words};

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
        // as haproxy 2.6 reads them (checked with `http-request return ...
        // string`): \n a line feed, \x41 a byte, \d kept for a regex, in
        // double quotes and out; none inside single quotes
        assert_eq!(words(r#"s "a\nb\dc\x41\ e""#), ["s", "a\nb\\dcA e"]);
        assert_eq!(words(r"s a\nb\dc\x41\ e"), ["s", "a\nb\\dcA e"]);
        assert_eq!(words(r"s 'a\nb'"), ["s", r"a\nb"]);
        assert_eq!(words(r"s a\x4"), ["s", r"a\x4"]);
        // `\$`: an escape in double quotes only (a regex's literal `$` out)
        assert_eq!(words(r#"s a\$b "a\$b""#), ["s", r"a\$b", "a$b"]);
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
