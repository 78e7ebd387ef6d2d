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
mod pages;
mod proxied;
mod server;
mod stream;
#[cfg(test)]
mod tests;

use super::nginx_parse::{parse, Directive};
use super::out::{self, list, s, Table};
use super::{Entry, Fidelity, Imported};
use proxied::Inherit;
use std::collections::HashMap;

/// An nginx duration (`30s`, `1m`, `500ms`, a bare number = seconds) →
/// rampart's.
pub(super) fn duration(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    // a value too large for milliseconds in a u64 is not a duration
    let ms = match unit {
        "" | "s" => n.checked_mul(1000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return None,
    }?;
    Some(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// Whether a directive anywhere in `ds`, blocks included, is one `f` accepts.
fn any_directive(ds: &[Directive], f: &impl Fn(&Directive) -> bool) -> bool {
    ds.iter()
        .any(|d| f(d) || d.block.as_deref().is_some_and(|b| any_directive(b, f)))
}

/// An nginx size (`client_max_body_size 10m`: bytes, k, m or g, either case)
/// → a number of bytes.
pub(super) fn size(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
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

/// The rules that send a location's requests to its pool `p`, with its
/// path rewrites: a `rewrite ... break` that matches decides the path (nginx
/// then ignores `proxy_pass`'s URI part), else the URI part replaces the
/// location's prefix.
fn pool_rules(loc: &Loc, p: &str) -> Vec<Table> {
    let mut m = loc.m.clone();
    if m.0.is_empty() && loc.uri_rewrite.is_some() {
        // `location /`: its prefix is the one replaced
        m.set("path_prefix", s("/"));
    }
    let mut out = Vec::new();
    if let Some((value, re)) = &loc.break_rewrite {
        let mut t = m.clone();
        if loc.uri_rewrite.is_some() && t.get("path_regex").is_none() {
            // (only where it matches: elsewhere the URI part applies)
            t.set("path_regex", s(re));
        }
        t.set("rewrite_path", value.clone());
        t.set("pool", s(p));
        out.push(t);
    }
    if loc.break_rewrite.is_none() || loc.uri_rewrite.is_some() {
        let mut t = m;
        if let Some(u) = &loc.uri_rewrite {
            t.set("rewrite_prefix", s(u));
        }
        t.set("pool", s(p));
        out.push(t);
    }
    for t in &mut out {
        if let Some(n) = loc.max_body {
            t.set("max_request_body", n.to_string());
        }
        if let Some(h) = &loc.host_header {
            t.set("set_header", format!("{{ \"Host\" = {} }}", s(h)));
        }
        match loc.replaces.as_slice() {
            [] => {}
            [one] => t.set("response_replace_header", one.clone()),
            many => t.set("response_replace_header", format!("[{}]", many.join(", "))),
        }
    }
    out
}

#[derive(Debug, Clone)]
pub(super) struct Loc {
    kind: LocKind,
    /// the match keys
    m: Table,
    /// prefix length, for longest-first
    len: usize,
    /// the pattern as written (without its modifier)
    pat: String,
    /// the `location` line, for the report
    line: usize,
    text: String,
    /// rules (match keys + actions), in order
    rules: Vec<Table>,
    /// the pool this location proxies to
    pool: Option<String>,
    /// `proxy_pass`'s URI part, which replaces the location's prefix
    uri_rewrite: Option<String>,
    /// `rewrite REGEX REPLACEMENT break`: (the `rewrite_path` value, the
    /// regex), on the rule that proxies
    break_rewrite: Option<(String, String)>,
    /// whether it has allow/deny, add_header, proxy_set_header of its own
    /// (nginx then inherits none of the server's of that kind)
    own_access: bool,
    own_add_header: bool,
    own_set_header: bool,
    /// its `root` and `alias` (the value, and the line's report entry), read
    /// for error pages
    root: Option<(String, usize)>,
    alias: Option<(String, usize)>,
    /// `try_files $uri ... FALLBACK`: a file at the path is served before
    /// anything else; the fallback (when not `=404`) serves the rest
    try_uri: Option<Option<String>>,
    /// its own `client_max_body_size`, on the rules that proxy it
    max_body: Option<u64>,
    /// the Host nginx sends its server (`$proxy_host`) where no
    /// `proxy_set_header Host` holds, on the rules that proxy it
    host_header: Option<String>,
    /// `response_replace_header` entries of the `proxy_redirect` lines that
    /// hold (nginx's default where none do), on the rules that proxy it
    replaces: Vec<String>,
    /// what hands its requests to something else (`proxy_pass`,
    /// `fastcgi_pass`, `return`, ...), mapped or not
    handler: Option<String>,
    /// nginx answers its name without the final slash with a 301 to the
    /// name (a prefix or exact name ending in `/`, in a location that
    /// passes requests on: its `auto_redirect`)
    slash_redirect: bool,
}

/// The redirects nginx makes of locations with `slash_redirect`: a request
/// for `/app` gets a 301 to `/app/` (with the query), unless a location is
/// named `/app` itself (exact or prefix; nginx's tree finds it first). nginx
/// decides this before it tries its regex locations: these are exact
/// locations of their own, ordered with the others.
fn slash_redirects(locs: &[Loc]) -> Vec<Loc> {
    let mut out: Vec<Loc> = Vec::new();
    for l in locs.iter().filter(|l| l.slash_redirect) {
        let name = &l.pat[..l.pat.len() - 1];
        let named = |o: &Loc| o.kind != LocKind::Regex && o.pat == name;
        if locs.iter().any(named) || out.iter().any(named) {
            continue;
        }
        let mut m = Table::default();
        m.set("path", s(name));
        let mut r = Table::default();
        r.set(
            "redirect",
            format!(
                "{{ to = {}, status = 301 }}",
                s(&format!("{}{{query}}", escape_path(&l.pat)))
            ),
        );
        out.push(Loc {
            kind: LocKind::Exact,
            m,
            len: name.len(),
            pat: name.to_string(),
            rules: vec![r],
            pool: None,
            uri_rewrite: None,
            break_rewrite: None,
            own_access: false,
            own_add_header: false,
            own_set_header: false,
            root: None,
            alias: None,
            try_uri: None,
            max_body: None,
            host_header: None,
            replaces: Vec::new(),
            handler: None,
            slash_redirect: false,
            line: l.line,
            text: l.text.clone(),
        });
    }
    out
}

/// A path as a URL's: every byte outside RFC 3986's unreserved characters,
/// sub-delims, `:`, `@`, `/`, `[` and `]` percent-encoded. nginx escapes a
/// location's name for its redirect with a shorter list; this one is a
/// superset (`{` and `}` among it, which the redirect's template would
/// read), and gives a client the same URL.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/[]".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `listen` of a server block.
#[derive(Debug, Clone)]
pub(super) struct Listen {
    addr: String,
    ssl: bool,
    default: bool,
    proxy_protocol: bool,
}

/// A server block, mapped.
#[derive(Debug, Clone, Default)]
pub(super) struct Server {
    /// the `server` line
    line: usize,
    binds: Vec<Listen>,
    names: Vec<String>,
    certs: Vec<String>,
    keys: Vec<String>,
    tls_extra: Table,
    /// rules for the whole server (before its locations)
    pre: Vec<Table>,
    locs: Vec<Loc>,
    /// its `root` (the value, and the line's report entry)
    root: Option<(String, usize)>,
    /// its error pages, resolved: (status, file), the first line's for each
    pages: Vec<(String, String)>,
    /// its own realip lines (each inherits from `http` apart)
    real_ip: RealIp,
    /// its own gzip lines (each inherits from `http` apart)
    gzip: Gzip,
}

/// nginx's gzip module at one level: each line None where not written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Gzip {
    on: Option<bool>,
    types: Option<Vec<String>>,
    min_length: Option<u64>,
    level: Option<u32>,
}

impl Gzip {
    /// Reads one gzip line into `self`; false when it is not one it keeps.
    fn read(&mut self, d: &Directive) -> bool {
        let a = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "gzip" => self.on = Some(a == "on"),
            "gzip_types" => {
                // (a type rampart would refuse is left out, and said)
                self.types = Some(
                    d.args
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        // (nginx reads `*` alone as any type; `text/*` is
                        // a name to it, not a pattern)
                        .filter(|t| out::media_type_ok(t) && (t == "*" || !t.contains('*')))
                        .collect(),
                )
            }
            "gzip_min_length" => self.min_length = size(a),
            "gzip_comp_level" => self.level = a.parse().ok().filter(|l| (1..=9).contains(l)),
            _ => return false,
        }
        true
    }

    fn over(&self, outer: &Gzip) -> Gzip {
        Gzip {
            on: self.on.or(outer.on),
            types: self.types.clone().or_else(|| outer.types.clone()),
            min_length: self.min_length.or(outer.min_length),
            level: self.level.or(outer.level),
        }
    }

    /// The listener's `compression` value (None: gzip off).
    fn compression(&self) -> Option<String> {
        if self.on != Some(true) {
            return None;
        }
        // nginx always compresses text/html (its default list)
        let mut types = vec!["text/html".to_string()];
        for t in self.types.iter().flatten() {
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        Some(format!(
            "{{ types = {}, min_length = {}, level = {} }}",
            list(&types),
            self.min_length.unwrap_or(20),
            self.level.unwrap_or(1)
        ))
    }
}

/// nginx's realip module at one level: `set_real_ip_from` (the networks),
/// `real_ip_header`, `real_ip_recursive`, each None where not written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RealIp {
    from: Option<Vec<String>>,
    header: Option<String>,
    recursive: Option<bool>,
}

impl RealIp {
    /// Reads one realip line into `self`; false when it is not one.
    fn read(&mut self, d: &Directive) -> bool {
        let a = d.args.first().cloned().unwrap_or_default();
        // (a value rampart would refuse is reported, not kept)
        match d.name.as_str() {
            "set_real_ip_from" => {
                let list = self.from.get_or_insert_with(Vec::new);
                if crate::proxy_protocol::Cidr::parse(&a).is_ok() {
                    list.push(a);
                }
            }
            "real_ip_header" => {
                let ok = a == "proxy_protocol"
                    || ::http::HeaderName::from_bytes(a.as_bytes())
                        .is_ok_and(|h| h != ::http::header::HOST);
                if ok {
                    self.header = Some(a);
                }
            }
            "real_ip_recursive" => self.recursive = Some(a == "on"),
            _ => return false,
        }
        true
    }

    /// This level's, each line nginx inherits from `outer` where not set.
    fn over(&self, outer: &RealIp) -> RealIp {
        RealIp {
            from: self.from.clone().or_else(|| outer.from.clone()),
            header: self.header.clone().or_else(|| outer.header.clone()),
            recursive: self.recursive.or(outer.recursive),
        }
    }

    /// The listener's `client_ip_from` value (None: nothing trusted, or the
    /// PROXY protocol's address, which `proxy_protocol` gives).
    fn client_ip_from(&self) -> Option<String> {
        let from = self.from.as_ref().filter(|f| !f.is_empty())?;
        // nginx's default field is X-Real-IP
        let header = self.header.as_deref().unwrap_or("X-Real-IP");
        if header == "proxy_protocol" {
            return None;
        }
        let mut t = format!("{{ from = {}, header = {}", list(from), s(header));
        if self.recursive == Some(true) {
            t.push_str(", recursive = true");
        }
        t.push_str(" }");
        Some(t)
    }
}

/// A stream `server`, a tcp listener.
pub(super) struct Stream {
    pub binds: Vec<String>,
    /// Its name.
    pub name: String,
    /// Its default pool (what `proxy_pass` names, or its map's default;
    /// None: a map without a default, whose other names are closed).
    pub pool: Option<String>,
    /// `[listener.tls]`, when it terminates TLS.
    pub tls: Table,
    pub proxy_protocol: bool,
    /// `[[listener.route]]` by SNI, from a map of `$ssl_preread_server_name`.
    pub routes: Vec<Table>,
    /// The listener's own keys (request_header_timeout).
    pub keys: Table,
}

pub(super) struct Importer {
    cfg: out::Config,
    report: Vec<Entry>,
    pool_ix: HashMap<String, usize>,
    /// limit_req_zone NAME → its rate limit's index
    zones: HashMap<String, usize>,
    servers: Vec<Server>,
    /// stream servers, each a tcp listener
    streams: Vec<Stream>,
    /// proxy settings that nginx inherits down to locations: timeouts and retries
    pool_settings: Vec<(String, Table)>,
    /// every `upstream` name of the file, those left out included
    upstream_names: Vec<String>,
    /// `$server_name` in the server block being read: its first name
    server_name: String,
    /// the http level's and the server's being read `proxy_set_header` Host
    /// and `proxy_redirect` lines
    http_inherit: Inherit,
    server_inherit: Inherit,
    /// the http level's error_page lines and `root` (value and line), which
    /// a server without error_page lines of its own resolves
    http_pages: Vec<Directive>,
    http_root: Option<String>,
    http_root_line: Option<Directive>,
    /// whether a server's page was read from the http level's root
    http_root_used: bool,
    /// the report of each http-level error_page line (by its index in
    /// `http_pages`), from the first server that resolved it
    http_page_notes: std::collections::BTreeMap<usize, Entry>,
    /// the Content-Type of a `return` with a text in the location being
    /// read: its `default_type`, or an `add_header Content-Type`
    return_type: Option<String>,
    /// `proxy_set_header NAME $remote_addr` somewhere (X-Real-IP): every
    /// listener's client_ip_header
    client_ip_header: Option<String>,
    /// the http level's realip lines
    http_real_ip: RealIp,
    /// the http level's gzip lines
    http_gzip: Gzip,
    /// `proxy_intercept_errors on` somewhere: nginx then serves its pages in
    /// place of servers' own error answers too
    intercept_errors: bool,
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
    /// Reports that server `i` has its own `what` where listener `name`
    /// (`key`, a listener's) has its default server's.
    pub(super) fn not_the_listeners(&mut self, i: usize, what: &str, key: &str, name: &str) {
        self.report.push(Entry {
            line: self.servers[i].line,
            directive: "server".into(),
            fidelity: Fidelity::Approximated,
            note: format!(
                "its {what} differ from the default server's: {key} a listener's, and listener {name:?} has the default server's"
            ),
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
        // (a conf.d snippet's top level is its http level)
        self.http_inherit = Inherit::of(ds, true);
        // conf.d snippets: their upstreams, zones and resolvers first, as
        // http does, since servers name them wherever they are in the file
        for d in ds {
            if matches!(
                d.name.as_str(),
                "upstream" | "limit_req_zone" | "resolver" | "error_page" | "root"
            ) {
                self.http_level(std::slice::from_ref(d));
            }
        }
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
                    self.http_inherit = Inherit::of(&b, true);
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
                "upstream" | "limit_req_zone" | "resolver" | "error_page" | "root" => {}
                // conf.d snippets: what http holds, at the top
                "server" | "map" | "log_format"
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
            // the http level's first: a server's or a location's own win
            let http_level = settings.iter().filter(|(n, _)| n == "*");
            let own = settings.iter().filter(|(n, _)| *n == name);
            for (_, t) in http_level.chain(own) {
                for (k, v) in &t.0 {
                    if !k.starts_with("__") {
                        p.keys.set(k, v.clone());
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
        self.report_http_pages();
        // locations nginx orders in a way rampart's rules cannot (said once)
        for sv in &self.servers {
            if !sv.locs.iter().any(|l| l.kind == LocKind::Regex) {
                continue;
            }
            for loc in &sv.locs {
                if let Some(stop) = stop_above(loc, &sv.locs) {
                    self.report.push(Entry {
                        line: loc.line,
                        directive: loc.text.clone(),
                        fidelity: Fidelity::Approximated,
                        note: format!(
                            "placed with the ^~ location {:?} it extends, before the regex locations: nginx takes this longer prefix over that one, but tries the regexes first for its paths",
                            stop.pat
                        ),
                    });
                }
            }
        }
        // the servers of each address, in file order (nginx: ssl and
        // proxy_protocol on one listen of an address hold for every server
        // there; its default server is the one marked default_server there,
        // else its first)
        let mut addrs: Vec<AddrServers> = Vec::new();
        for (i, sv) in self.servers.iter().enumerate() {
            for b in &sv.binds {
                let k = match addrs.iter().position(|a| a.addr == b.addr) {
                    Some(k) => k,
                    None => {
                        addrs.push(AddrServers {
                            addr: b.addr.clone(),
                            ssl: false,
                            proxy_protocol: false,
                            members: Vec::new(),
                            default: None,
                        });
                        addrs.len() - 1
                    }
                };
                let a = &mut addrs[k];
                a.ssl |= b.ssl;
                a.proxy_protocol |= b.proxy_protocol;
                if !a.members.contains(&i) {
                    a.members.push(i);
                }
                if b.default && a.default.is_none() {
                    a.default = Some(i);
                }
            }
        }
        // addresses with the same servers, default server and protocols share
        // a listener
        let mut groups: Vec<Group> = Vec::new();
        for a in addrs {
            let def = a.default.unwrap_or(a.members[0]);
            match groups.iter_mut().find(|g| {
                g.ssl == a.ssl
                    && g.proxy_protocol == a.proxy_protocol
                    && g.members == a.members
                    && g.default == def
            }) {
                Some(g) => g.binds.push(a.addr),
                None => groups.push(Group {
                    binds: vec![a.addr],
                    ssl: a.ssl,
                    proxy_protocol: a.proxy_protocol,
                    members: a.members,
                    default: def,
                }),
            }
        }
        let mut unnamed_reported: Vec<usize> = Vec::new();
        for (gi, g) in groups.into_iter().enumerate() {
            let Group {
                mut binds,
                ssl: tls,
                proxy_protocol: pp,
                members,
                default: def,
            } = g;
            binds.sort();
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
            let name = self.cfg.unused_listener_name(&name);
            l.keys.set("name", s(&name));
            l.keys.set("bind", list(&binds));
            l.keys.set("mode", s("http"));
            for (k, v) in &http_settings.0 {
                l.keys.set(k, v.clone());
            }
            if let Some(h) = &self.client_ip_header {
                l.keys.set("client_ip_header", s(h));
            }
            // the default server's realip settings (each server's own over
            // the http level's)
            let real_ip = |i: usize| self.servers[i].real_ip.over(&self.http_real_ip);
            let ours = real_ip(def);
            if let Some(v) = ours.client_ip_from() {
                l.keys.set("client_ip_from", v);
                if pp {
                    self.report.push(Entry {
                        line: self.servers[def].line,
                        directive: "(listen proxy_protocol with set_real_ip_from)".into(),
                        fidelity: Fidelity::Approximated,
                        note: "nginx trusts the field when the connection's own peer (the balancer that sent the PROXY header) is in set_real_ip_from; rampart, when the address the PROXY header names is: list those in client_ip_from.from".into(),
                    });
                }
            }
            let differ: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| i != def && real_ip(i) != ours)
                .collect();
            for i in differ {
                self.not_the_listeners(i, "realip settings", "client_ip_from is", &name);
            }
            // and its gzip settings
            let gzip = |i: usize| self.servers[i].gzip.over(&self.http_gzip);
            let ours = gzip(def);
            if let Some(v) = ours.compression() {
                l.keys.set("compression", v);
            }
            let differ: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| i != def && gzip(i).compression() != ours.compression())
                .collect();
            for i in differ {
                self.not_the_listeners(i, "gzip settings", "compression is", &name);
            }
            if let Some(pages) = self.listener_pages(def, &members, &name) {
                l.keys.set("error_pages", pages);
            }
            if pp {
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
                    // every server of the listener is lost: each is said, at its line
                    for &i in &members {
                        self.report.push(Entry {
                            line: self.servers[i].line,
                            directive: "server".into(),
                            fidelity: Fidelity::Unsupported,
                            note: format!(
                                "listener {name:?} ({}): ssl without ssl_certificate; left out",
                                binds.join(", ")
                            ),
                        });
                    }
                    continue;
                }
                let mut t = Table::default();
                t.set("cert", cert_list(&certs, &keys));
                for (k, v) in extra.0 {
                    t.set(&k, v);
                }
                l.tls = Some(t);
            }
            // which server a Host reaches, in nginx's order: exact names, then
            // wildcards *.NAME (longest first), then NAME.* (longest first),
            // then the default server for every other Host. The default
            // server's own names go first too when another server's wildcard
            // could take them.
            let wildcard = |n: &str| n.starts_with("*.") || n.ends_with(".*");
            let wildcards = members
                .iter()
                .any(|&i| i != def && self.servers[i].names.iter().any(|n| wildcard(n)));
            let mut pairs: Vec<(usize, Option<String>)> = Vec::new();
            for &i in &members {
                let names = self.servers[i].names.clone();
                if i == def {
                    if wildcards {
                        pairs.extend(names.into_iter().map(|n| (i, Some(n))));
                    }
                } else if names.is_empty() {
                    // `server_name _`, "", none, or only regexes: nginx sends it
                    // no Host rampart can name; it must not catch every Host
                    if !unnamed_reported.contains(&i) {
                        unnamed_reported.push(i);
                        self.report.push(Entry {
                            line: self.servers[i].line,
                            directive: "server".into(),
                            fidelity: Fidelity::Unsupported,
                            note: format!(
                                "not the default server of {} and no name rampart matches (server_name _, \"\", none, or only regexes): its rules are left out",
                                binds.join(", ")
                            ),
                        });
                    }
                } else {
                    pairs.extend(names.into_iter().map(|n| (i, Some(n))));
                }
            }
            pairs.sort_by_key(|(_, h)| match h {
                Some(n) if n.starts_with("*.") => (1u8, usize::MAX - n.len()),
                Some(n) if n.ends_with(".*") => (2u8, usize::MAX - n.len()),
                _ => (0u8, 0usize),
            });
            pairs.push((def, None));
            let mut default_pool: Option<String> = None;
            for (i, h) in &pairs {
                let i = *i;
                let sv = &self.servers[i];
                let mut locs = sv.locs.clone();
                locs.extend(slash_redirects(&sv.locs));
                let locs = ordered_locs(&locs);
                // nginx answers 404 to what no location of the server matches;
                // a named server's requests never reach another server's rules
                let has_root = sv
                    .locs
                    .iter()
                    .any(|l| l.m.0.is_empty() && l.kind != LocKind::Exact);
                let ends_in_terminal = sv.pre.iter().any(|r| {
                    r.matches_everything()
                        && ["deny", "redirect", "respond"]
                            .iter()
                            .any(|k| r.get(k).is_some())
                });
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
                        // the location's match and the rule's own (a rewrite's
                        // regex) must both hold
                        let mut t = loc.m.clone();
                        t.0.extend(
                            r.0.iter()
                                .filter(|(k, _)| {
                                    k != "path_regex" || loc.m.get("path_regex").is_none()
                                })
                                .cloned(),
                        );
                        l.rules.push(with_host(&t));
                    }
                    let rewrites = loc.uri_rewrite.is_some() || loc.break_rewrite.is_some();
                    if let Some(p) = &loc.pool {
                        if h.is_none()
                            && i == def
                            && loc.m.0.is_empty()
                            && !rewrites
                            && loc.max_body.is_none()
                            && loc.host_header.is_none()
                            && loc.replaces.is_empty()
                        {
                            default_pool = Some(p.clone());
                        } else {
                            for t in pool_rules(loc, p) {
                                l.rules.push(with_host(&t));
                            }
                        }
                    } else if loc.rules.iter().all(|r| {
                        ["deny", "redirect", "respond"]
                            .iter()
                            .all(|k| r.get(k).is_none())
                    }) {
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
        for st in std::mem::take(&mut self.streams) {
            if st.binds.is_empty() {
                continue;
            }
            let mut l = out::Listener::default();
            // (two servers of one pool or one map: names of their own)
            let name = self.cfg.unused_listener_name(&st.name);
            l.keys.set("name", s(&name));
            l.keys.set("bind", list(&st.binds));
            l.keys.set("mode", s("tcp"));
            if let Some(p) = &st.pool {
                l.keys.set("pool", s(p));
            }
            for (k, v) in st.keys.0 {
                l.keys.set(&k, v);
            }
            if st.proxy_protocol {
                l.keys.set(
                    "proxy_protocol",
                    "{ from = [\"0.0.0.0/0\", \"::/0\"], mode = \"required\" }".into(),
                );
            }
            if !st.tls.0.is_empty() {
                l.tls = Some(st.tls);
            }
            l.routes = st.routes;
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

/// The servers that listen on one address.
struct AddrServers {
    addr: String,
    ssl: bool,
    proxy_protocol: bool,
    members: Vec<usize>,
    default: Option<usize>,
}

/// Addresses with the same servers: one listener.
struct Group {
    binds: Vec<String>,
    ssl: bool,
    proxy_protocol: bool,
    members: Vec<usize>,
    default: usize,
}

/// The `^~` location that a longer plain prefix location extends: nginx
/// takes the longest prefix first, so the longer one wins for its paths.
fn stop_above<'a>(loc: &Loc, locs: &'a [Loc]) -> Option<&'a Loc> {
    if loc.kind != LocKind::Prefix {
        return None;
    }
    locs.iter().find(|s| {
        s.kind == LocKind::PrefixStop
            && s.pat.len() < loc.pat.len()
            && loc.pat.starts_with(s.pat.as_str())
    })
}

/// A server's locations in the order of rampart's rules: exact, `^~`
/// prefixes (with the longer plain prefixes that extend one of them),
/// regexes in file order, prefixes; prefixes longest first.
fn ordered_locs(locs: &[Loc]) -> Vec<Loc> {
    let tier = |l: &Loc| {
        if stop_above(l, locs).is_some() {
            LocKind::PrefixStop
        } else {
            l.kind
        }
    };
    let mut out = locs.to_vec();
    out.sort_by(|a, b| {
        let ta = tier(a);
        ta.cmp(&tier(b)).then_with(|| match ta {
            LocKind::PrefixStop | LocKind::Prefix => b.len.cmp(&a.len),
            _ => std::cmp::Ordering::Equal,
        })
    });
    out
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
        upstream_names: Vec::new(),
        server_name: String::new(),
        http_inherit: Inherit::default(),
        server_inherit: Inherit::default(),
        http_pages: Vec::new(),
        http_root: None,
        http_root_line: None,
        http_root_used: false,
        http_page_notes: std::collections::BTreeMap::new(),
        intercept_errors: false,
        return_type: None,
        client_ip_header: None,
        http_real_ip: RealIp::default(),
        http_gzip: Gzip::default(),
    };
    im.cfg.header = vec![
        format!("Imported from {file} by `rampart import nginx`."),
        "Check the report it printed: approximated and unsupported directives are listed there."
            .into(),
    ];
    match parse(src) {
        Ok(ds) => {
            im.intercept_errors = any_directive(&ds, &|d| {
                d.name == "proxy_intercept_errors"
                    && d.args.first().map(String::as_str) == Some("on")
            });
            im.main_level(&ds)
        }
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
