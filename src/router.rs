//! Pure routing: (host, path) -> pool index. No I/O, no allocation per request.
//!
//! A few routes are scanned in order. Past [`SCAN_MAX`], a listener's routes are
//! compiled into an index ([`RouteIndex`]): exact hosts and wildcard suffixes
//! and prefixes in hash maps, wildcards and path prefixes by length, so a
//! request costs O(distinct wildcard lengths + distinct prefix lengths), not
//! O(routes). First match wins either way: the
//! index returns the lowest-numbered matching route (a test checks the two
//! against each other).

use crate::bytehash::BuildByteHasher;
use std::collections::HashMap;
use std::sync::Arc;

/// Up to this many routes, a scan is cheaper than the index's hash lookups.
pub const SCAN_MAX: usize = 16;

/// How a route matches the request's host (port and case ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com`, `a.b.example.com`,
    /// not `example.com` itself (as nginx's `*.example.com`).
    Suffix(String),
    /// `mail.*`, stored as `mail.`: matches `mail.example.com`, `mail.a.b`,
    /// not `mail` itself (as nginx's `mail.*`; HAProxy's `hdr_beg(host)
    /// mail.`).
    Prefix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let p = pattern.trim().to_ascii_lowercase();
        // labels of letters, digits, '-' and '_', none empty: ".example.com"
        // (nginx's "the name and its subdomains") or "example.com." could
        // never match (a request's trailing dot is dropped)
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if let Some(rest) = p.strip_prefix("*.") {
            if valid(rest) {
                return Ok(HostMatch::Suffix(format!(".{rest}")));
            }
        } else if let Some(rest) = p.strip_suffix(".*") {
            if valid(rest) {
                return Ok(HostMatch::Prefix(format!("{rest}.")));
            }
        } else if valid(&p) {
            return Ok(HostMatch::Exact(p));
        }
        if p.starts_with('.') {
            return Err(format!(
                "invalid host pattern {pattern:?}: for a name and its subdomains (nginx's \".example.com\"), write two entries: \"example.com\" and \"*.example.com\""
            ));
        }
        Err(format!(
            "invalid host pattern {pattern:?}: write an exact name (\"api.example.com\") or a wildcard (\"*.example.com\", \"mail.*\"), labels of letters, digits, '-' and '_' between single dots"
        ))
    }

    /// `host` must already have its port removed.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        match self {
            HostMatch::Exact(h) => same_name(host, h.as_bytes()),
            HostMatch::Suffix(s) => {
                host.len() > s.len() && same_name(&host[host.len() - s.len()..], s.as_bytes())
            }
            HostMatch::Prefix(s) => {
                host.len() > s.len() && same_name(&host[..s.len()], s.as_bytes())
            }
        }
    }
}

/// Whether two names are the same but for the case of their ASCII letters.
/// The bytes are compared as they are first: names come in lowercase nearly
/// always (a TLS server name is lowercased when it is read), and `==` compares
/// them many bytes at a time, where `eq_ignore_ascii_case` folds each byte
/// (about 120 instructions for `localhost`, 1 in 200 of a TLS passthrough
/// connection's).
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a == b || a.eq_ignore_ascii_case(b)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    /// The whole path: a rule's `path`, in a run of rules (a listener's
    /// routes have none). Not with `path_prefix`.
    pub path: Option<String>,
    pub pool: usize,
}

#[derive(Debug, Clone)]
pub struct Router {
    /// Shared: a new snapshot (a DNS change of some pool) copies no route.
    pub routes: Arc<[Route]>,
    /// None: what no route takes goes nowhere (a tcp listener without a pool).
    pub default_pool: Option<usize>,
    index: Option<Arc<RouteIndex>>,
}

impl PartialEq for Router {
    fn eq(&self, o: &Router) -> bool {
        // the index is a function of the routes
        self.routes == o.routes && self.default_pool == o.default_pool
    }
}

impl Router {
    pub fn new(routes: Vec<Route>, default_pool: Option<usize>) -> Router {
        let index = (routes.len() > SCAN_MAX).then(|| Arc::new(RouteIndex::new(&routes)));
        Router {
            routes: routes.into(),
            default_pool,
            index,
        }
    }

    /// First matching route wins, else the default pool (None: none).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.first(host.map(strip_port), path)
            .map_or(self.default_pool, |i| Some(self.routes[i].pool))
    }

    /// The first route (its place in `routes`) that `host`, already without
    /// its port (`strip_port`'s), and `path` match. A listener's rules look up
    /// their long runs of host and path rules with it.
    pub fn first(&self, host: Option<&str>, path: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => match ix.lookup(host, path.as_bytes()) {
                Some(found) => found,
                None => self.scan(host, path),
            },
            None => self.scan(host, path),
        }
    }

    /// The first matching route, in order (`host` without its port).
    fn scan(&self, host: Option<&str>, path: &str) -> Option<usize> {
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(m) = &r.host {
                match host {
                    Some(h) if m.matches(h) => {}
                    _ => continue,
                }
            }
            if let Some(prefix) = &r.path_prefix {
                if !path.starts_with(prefix.as_str()) {
                    continue;
                }
            }
            if r.path.as_ref().is_some_and(|p| p != path) {
                continue;
            }
            return Some(i);
        }
        None
    }
}

/// The index's maps, by bytes (lowercase hosts, paths).
/// Its keys are the config's hosts and paths, which no client adds to, so no
/// client can crowd a bucket; a host or path a client makes to collide with a
/// key costs only its own lookup's comparisons (looked up once per pattern
/// length). SipHash (std's, for maps whose keys come from the network) cost
/// about 190 instructions a lookup of a short path.
type Map<V> = HashMap<Box<[u8]>, V, BuildByteHasher>;

/// Many routes, compiled: route numbers by exact host, by wildcard suffix, and
/// those without a host; within each, by path prefix.
#[derive(Debug, Default)]
struct RouteIndex {
    /// "api.example.com" (lowercase) -> its routes
    exact: Map<Group>,
    /// ".example.com" (from "*.example.com", lowercase) -> its routes
    suffix: Map<Group>,
    /// "mail." (from "mail.*", lowercase) -> its routes
    prefix: Map<Group>,
    /// The distinct lengths of `suffix`'s and `prefix`'s keys, ascending: a
    /// host is looked up at those lengths only (where a dot is in place),
    /// not at each of its dots, so that a host of a hundred labels costs no
    /// hundred lookups.
    suffix_lens: Vec<usize>,
    prefix_lens: Vec<usize>,
    /// Routes without a host.
    any: Group,
}

/// Routes with the same host match: the first without a path prefix, the
/// first with each prefix, and the first with each whole path.
#[derive(Debug, Default)]
struct Group {
    bare: Option<usize>,
    prefixes: Map<usize>,
    paths: Map<usize>,
    /// The distinct lengths of `prefixes`, ascending.
    lengths: Vec<usize>,
}

/// The longest host the index looks up (a DNS name has at most 253 bytes);
/// longer ones are scanned.
const HOST_MAX: usize = 255;

impl Group {
    fn add(&mut self, i: usize, prefix: Option<&str>, path: Option<&str>) {
        // (a whole path comes without a prefix: `fits_run`)
        debug_assert!(prefix.is_none() || path.is_none());
        match (prefix, path) {
            (_, Some(p)) => {
                self.paths.entry(p.as_bytes().into()).or_insert(i);
            }
            (None, None) => {
                self.bare.get_or_insert(i);
            }
            (Some(p), None) => {
                self.prefixes.entry(p.as_bytes().into()).or_insert(i);
                if let Err(at) = self.lengths.binary_search(&p.len()) {
                    self.lengths.insert(at, p.len());
                }
            }
        }
    }

    /// The first of this group's routes that `path` matches.
    fn first(&self, path: &[u8]) -> Option<usize> {
        let mut best = self.bare;
        if !self.paths.is_empty() {
            best = earliest(best, self.paths.get(path).copied());
        }
        for &len in &self.lengths {
            if len > path.len() {
                break;
            }
            if let Some(&i) = self.prefixes.get(&path[..len]) {
                best = earliest(best, Some(i));
            }
        }
        best
    }
}

fn earliest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl RouteIndex {
    fn new(routes: &[Route]) -> RouteIndex {
        let mut ix = RouteIndex::default();
        for (i, r) in routes.iter().enumerate() {
            let group = match &r.host {
                None => &mut ix.any,
                Some(HostMatch::Exact(h)) => ix.exact.entry(h.as_bytes().into()).or_default(),
                Some(HostMatch::Suffix(s)) => ix.suffix.entry(s.as_bytes().into()).or_default(),
                Some(HostMatch::Prefix(s)) => ix.prefix.entry(s.as_bytes().into()).or_default(),
            };
            group.add(i, r.path_prefix.as_deref(), r.path.as_deref());
        }
        let lens = |m: &Map<Group>| {
            let mut v: Vec<usize> = m.keys().map(|k| k.len()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        ix.suffix_lens = lens(&ix.suffix);
        ix.prefix_lens = lens(&ix.prefix);
        ix
    }

    /// The first matching route (`Some(None)`: none matches); None when the host
    /// is too long to look up here.
    fn lookup(&self, host: Option<&str>, path: &[u8]) -> Option<Option<usize>> {
        let mut best = self.any.first(path);
        let Some(host) = host else {
            return Some(best);
        };
        // (no host patterns: the host is not read)
        if self.exact.is_empty() && self.suffix.is_empty() && self.prefix.is_empty() {
            return Some(best);
        }
        if host.len() > HOST_MAX {
            return None;
        }
        // the patterns are lowercase; the host is lowered on the stack
        let mut buf = [0u8; HOST_MAX];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        let lower = &*lower;
        if let Some(g) = self.exact.get(lower) {
            best = earliest(best, g.first(path));
        }
        // "*.example.com" matches a host that ends with ".example.com" and
        // is longer: a dot, not the first byte, starts each candidate suffix
        for &len in self
            .suffix_lens
            .iter()
            .take_while(|&&len| len < lower.len())
        {
            let at = lower.len() - len;
            if lower[at] == b'.' {
                if let Some(g) = self.suffix.get(&lower[at..]) {
                    best = earliest(best, g.first(path));
                }
            }
        }
        // "mail.*" matches a host that starts with "mail." and is longer: a
        // dot, not the last byte, ends each candidate prefix
        for &len in self
            .prefix_lens
            .iter()
            .take_while(|&&len| len < lower.len())
        {
            if len > 0 && lower[len - 1] == b'.' {
                if let Some(g) = self.prefix.get(&lower[..len]) {
                    best = earliest(best, g.first(path));
                }
            }
        }
        Some(best)
    }
}

/// "example.com:8080" -> "example.com", "[::1]:80" -> "[::1]", and the
/// fully-qualified "example.com." -> "example.com" (the same name: a host rule
/// must not be passed by writing its name with the root's dot, which servers
/// behind take as the name without it, as nginx does). Byte-wise, from the
/// end: it runs for every request that is routed or matched on its host.
#[inline]
pub fn strip_port(host: &str) -> &str {
    let b = host.as_bytes();
    if b.first() == Some(&b'[') {
        return match b.iter().position(|&c| c == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let name = if i > 0 && b[i - 1] == b':' {
        &host[..i - 1]
    } else {
        host
    };
    match name.strip_suffix('.') {
        Some(n) if !n.is_empty() => n,
        _ => name,
    }
}

/// The path rules and routes match: percent-decoded, its `.` segments
/// dropped and repeated slashes merged, as nginx matches its locations.
/// Without it `/%69nternal` or `//internal` passed a `path_prefix =
/// "/internal"` deny, and reached a server that decodes them itself. (The
/// request is sent on as it came.) A path that needs none of it (the usual
/// one) is returned as it is, not copied. None: a path refused with 400: a
/// `%` not followed by two hex digits, an encoded NUL, or a `..` segment
/// (plain, encoded or Tomcat's `..;`), which the rules and the server could
/// resolve differently. Targets that are not a path (`*`, an authority) are
/// returned as they are.
#[inline]
pub fn normalize_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let plain = !b
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'%' || (c == b'/' && matches!(b.get(i + 1), Some(b'/' | b'.'))));
    if plain {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    normalize_spelt(b)
}

/// `normalize_path` of a path that needs it (`b` starts with `/`).
#[cold]
#[inline(never)]
fn normalize_spelt(b: &[u8]) -> Option<std::borrow::Cow<'static, str>> {
    use std::borrow::Cow;
    let hex = |c: Option<&u8>| c.and_then(|&c| char::from(c).to_digit(16));
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = hex(b.get(i + 1))? * 16 + hex(b.get(i + 2))?;
            if v == 0 {
                return None;
            }
            decoded.push(v as u8);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            // A `..` is refused, not resolved: the server gets the path as
            // it came, and one that does not resolve it (or resolves
            // Tomcat's `..;`) would serve /internal/../x as /internal while
            // the rules saw /x. Clients that follow RFC 3986 (browsers, curl)
            // never send one.
            s if s == b".." || s.starts_with(b"..;") => return None,
            s => segments.push(s),
        }
    }
    // "/a/b/" and "/a/b/." name a folder: the slash stays
    let folder = matches!(decoded.rsplit(|&c| c == b'/').next(), Some(b"" | b"."));
    let mut out = Vec::with_capacity(decoded.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if folder || out.is_empty() {
        out.push(b'/');
    }
    Some(Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            vec![
                Route {
                    host: Some(HostMatch::parse("api.example.com").unwrap()),
                    path_prefix: Some("/v1".into()),
                    path: None,
                    pool: 1,
                },
                Route {
                    host: Some(HostMatch::parse("*.example.com").unwrap()),
                    path_prefix: None,
                    path: None,
                    pool: 2,
                },
                Route {
                    host: None,
                    path_prefix: Some("/static".into()),
                    path: None,
                    pool: 3,
                },
            ],
            Some(0),
        )
    }

    /// The index gives what the scan gives: random route tables (past
    /// SCAN_MAX) from a small vocabulary, so that many routes overlap, and
    /// requests from the same vocabulary. Routes with a whole path (a run
    /// of rules' `path`) among them.
    #[test]
    fn the_index_routes_as_the_scan_does() {
        let hosts = [
            "a.example.com",
            "b.example.com",
            "*.example.com",
            "*.a.example.com",
            "example.com",
            "*.com",
            "x.org",
            "a.*",
            "a.example.*",
            "example.*",
        ];
        let prefixes = ["/", "/v1", "/v1/", "/v2", "/static", "/s"];
        let paths = [
            "/",
            "/v1",
            "/v1/users",
            "/v2x",
            "/static/a.css",
            "/s",
            "",
            "/x",
        ];
        // (longer than the index looks up: scanned)
        let long = format!("{}example.com", "a.".repeat(130));
        let req_hosts = [
            long.as_str(),
            "a.example.com",
            "A.Example.COM:8443",
            "z.a.example.com",
            "b.example.com",
            "example.com",
            "c.com",
            "x.org",
            "y.org",
            ".example.com",
            "A.Example.COM.:8443",
            "a.example.com.",
            "a.",
            "a",
            "example.com.:80",
            "A.b",
        ];
        for round in 0..300 {
            let n = fastrand::usize(SCAN_MAX + 1..80);
            let routes: Vec<Route> = (0..n)
                .map(|k| {
                    // (a prefix, a whole path, or neither)
                    let (path_prefix, path) = match fastrand::u8(..3) {
                        0 => (None, None),
                        1 => (Some(prefixes[fastrand::usize(..prefixes.len())]), None),
                        _ => (None, Some(paths[fastrand::usize(..paths.len())])),
                    };
                    Route {
                        // (every tenth round, no route with a host)
                        host: (round % 10 != 0 && fastrand::bool()).then(|| {
                            HostMatch::parse(hosts[fastrand::usize(..hosts.len())]).unwrap()
                        }),
                        path_prefix: path_prefix.map(str::to_string),
                        path: path.map(str::to_string),
                        pool: k + 1,
                    }
                })
                .collect();
            let r = Router::new(routes, Some(0));
            assert!(r.index.is_some());
            for h in req_hosts.iter().copied().map(Some).chain([None]) {
                for p in paths {
                    let want = r.scan(h.map(strip_port), p).map_or(0, |i| r.routes[i].pool);
                    let want = Some(want);
                    assert_eq!(r.route(h, p), want, "round {round}: {h:?} {p:?}");
                }
            }
        }
    }

    #[test]
    fn first_match_wins() {
        let r = router();
        assert_eq!(r.route(Some("api.example.com"), "/v1/users"), Some(1));
        assert_eq!(r.route(Some("API.Example.com:8080"), "/v1/users"), Some(1));
        assert_eq!(r.route(Some("api.example.com"), "/v2"), Some(2));
        assert_eq!(r.route(Some("www.example.com"), "/static/x"), Some(2));
        assert_eq!(r.route(Some("example.com"), "/static/x"), Some(3));
        assert_eq!(r.route(None, "/static/x"), Some(3));
        assert_eq!(r.route(Some("other.org"), "/"), Some(0));
        assert_eq!(r.route(None, "/"), Some(0));
        // the root's dot names the same host
        assert_eq!(r.route(Some("api.example.com."), "/v1/users"), Some(1));
        assert_eq!(r.route(Some("www.example.com.:8080"), "/"), Some(2));
    }

    #[test]
    fn a_trailing_wildcard_matches_names_that_start_with_it() {
        let m = HostMatch::parse("Mail.*").unwrap();
        assert_eq!(m, HostMatch::Prefix("mail.".into()));
        for (host, want) in [
            ("mail.example.com", true),
            ("MAIL.example.org", true),
            ("mail.x", true),
            ("mail.", false),
            ("mail", false),
            ("email.example.com", false),
            ("x.mail.example.com", false),
        ] {
            assert_eq!(m.matches(host), want, "{host:?}");
        }
        let r = Router::new(
            vec![Route {
                host: Some(m),
                path_prefix: None,
                path: None,
                pool: 1,
            }],
            Some(0),
        );
        assert_eq!(r.route(Some("mail.example.com:8080"), "/"), Some(1));
        assert_eq!(r.route(Some("www.example.com"), "/"), Some(0));
    }

    /// A tcp listener's routes by SNI: without a pool, a name no route has
    /// goes nowhere; the empty name (a ClientHello without one) is an exact
    /// route of its own. The same through the index, past SCAN_MAX.
    #[test]
    fn a_router_without_a_pool_routes_only_what_its_routes_take() {
        for filler in [0, SCAN_MAX + 4] {
            let mut routes: Vec<Route> = (0..filler)
                .map(|k| Route {
                    host: Some(HostMatch::parse(&format!("n{k}.example.net")).unwrap()),
                    path_prefix: None,
                    path: None,
                    pool: 9,
                })
                .collect();
            routes.push(Route {
                host: Some(HostMatch::parse("db.example.com").unwrap()),
                path_prefix: None,
                path: None,
                pool: 1,
            });
            routes.push(Route {
                host: Some(HostMatch::Exact(String::new())),
                path_prefix: None,
                path: None,
                pool: 2,
            });
            let r = Router::new(routes, None);
            assert_eq!(r.index.is_some(), filler > 0);
            assert_eq!(r.route(Some("db.example.com"), ""), Some(1));
            assert_eq!(r.route(Some(""), ""), Some(2));
            assert_eq!(r.route(Some("other.example.com"), ""), None);
            assert_eq!(r.route(None, ""), None);
            if filler > 0 {
                assert_eq!(r.route(Some("n3.example.net"), ""), Some(9));
            }
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b:"), "a.b");
        assert_eq!(strip_port("a1.b2"), "a1.b2");
        assert_eq!(strip_port("1.2.3.4:8080"), "1.2.3.4");
        assert_eq!(strip_port("1.2.3.4"), "1.2.3.4");
        assert_eq!(strip_port(""), "");
        assert_eq!(strip_port("a.b."), "a.b");
        assert_eq!(strip_port("A.b.:8443"), "A.b");
        assert_eq!(strip_port("."), ".");
    }

    #[test]
    fn paths_are_matched_decoded_and_resolved() {
        for (raw, want) in [
            ("/", Some("/")),
            ("/api/v1", Some("/api/v1")),
            ("/static/a.css", Some("/static/a.css")),
            ("/.well-known/x", Some("/.well-known/x")),
            ("/%69nternal/x", Some("/internal/x")),
            ("/%2e%2e/x", None),
            ("/a/%2e%2e/internal", None),
            ("/static/../internal/x", None),
            ("/internal/../x", None),
            ("/x/..;/internal", None),
            ("/x/%2e%2e;/internal", None),
            ("/a/..b/c", Some("/a/..b/c")),
            ("/a/./b", Some("/a/b")),
            ("//internal", Some("/internal")),
            ("/a//b///c", Some("/a/b/c")),
            ("/%2Finternal", Some("/internal")),
            ("/a/b/", Some("/a/b/")),
            ("/a/b/.", Some("/a/b/")),
            ("/a/b/..", None),
            ("/a/..", None),
            ("/..", None),
            ("/a/../../b", None),
            ("/a%zz", None),
            ("/a%4", None),
            ("/a%", None),
            ("/a%00b", None),
            ("/caf%C3%A9", Some("/café")),
            ("/%FF", Some("/\u{FFFD}")),
            ("*", Some("*")),
            ("", Some("")),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), want, "{raw:?}");
        }
        // the usual path is not copied
        assert!(matches!(
            normalize_path("/api/v1/users"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
    }

    #[test]
    fn bad_patterns_refused() {
        for p in [
            "",
            "*.",
            "a b",
            "*foo.com",
            "http://x",
            ".example.com",
            "example.com.",
            "a..b",
            "*..com",
            ".",
            "a.*.*",
            "*.a.*",
            ".*",
            "a*",
            "*",
        ] {
            assert!(HostMatch::parse(p).is_err(), "{p:?}");
        }
    }
}
