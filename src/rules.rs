//! Request rules (`[[listener.rule]]`), compiled once per generation: pure
//! matching and the actions to take, no I/O, and no allocation per request
//! except where a regex or a redirect is written.
//!
//! Rules are evaluated in order. `deny`, `redirect` and `pool` are terminal:
//! the first matching rule with one decides. Header edits apply from every
//! matching rule up to that point, and evaluation goes on past them. When no
//! terminal rule matches, the listener's `[[listener.route]]` entries and then
//! its default pool decide (routes are rules evaluated after all of these).

use crate::proxy_protocol::Cidr;
use crate::router::{strip_port, HostMatch, Route, Router, SCAN_MAX};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::net::IpAddr;
use std::num::NonZeroU16;

/// A request's priority class. Rules set it (`priority = "..."`); the default
/// is `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Low = 0,
    #[default]
    Normal = 1,
    High = 2,
    Critical = 3,
}

/// The number of classes.
pub const CLASSES: usize = 4;

impl Priority {
    /// Highest first: the order in which waiters are served.
    pub const ALL: [Priority; CLASSES] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.name() == s)
    }

    pub(crate) fn ix(self) -> usize {
        self as usize
    }
}

/// What rules look at in a request; the fast path and the hyper path each
/// provide it over their own request type.
pub trait RequestView {
    fn method(&self) -> &str;
    /// The Host as sent (a port is ignored when matching).
    fn host(&self) -> Option<&str>;
    /// The request target: path and query.
    fn target(&self) -> &str;
    /// The first value of a header (`name` lower-case).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The client, after the PROXY protocol.
    fn src(&self) -> IpAddr;

    /// The path rules, routes and limit keys match, without the query string:
    /// the front ends' views give it normalized (`router::normalize_path`:
    /// decoded, dot-segments resolved), so that no spelling of a path passes
    /// a rule written for it.
    fn path(&self) -> &str {
        self.raw_path()
    }

    /// The path as the client sent it, without the query string (what a
    /// redirect's `{path}` copies).
    fn raw_path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The host without its port (views may keep it computed).
    fn bare_host(&self) -> Option<&str> {
        self.host().map(strip_port)
    }

    /// The length of the body the request declares (Content-Length, an
    /// HTTP/2 stream's content-length; 0 when it declares none), checked
    /// against `max_request_body` once the rules have decided.
    fn declared_body(&self) -> u64 {
        0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCond {
    Present(bool),
    Value(Vec<u8>),
}

/// What a rule matches; every part given must match (then `not` inverts).
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub path_regex: Option<regex::Regex>,
    /// Upper-case method names; empty: any.
    pub methods: Vec<String>,
    /// (lower-case name, condition)
    pub header: Option<(String, HeaderCond)>,
    pub src: Vec<Cidr>,
    pub not: bool,
}

impl PartialEq for Match {
    fn eq(&self, o: &Match) -> bool {
        self.host == o.host
            && self.path_prefix == o.path_prefix
            && self.path == o.path
            && self.path_regex.as_ref().map(regex::Regex::as_str)
                == o.path_regex.as_ref().map(regex::Regex::as_str)
            && self.methods == o.methods
            && self.header == o.header
            && self.src == o.src
            && self.not == o.not
    }
}

impl Match {
    /// Matches everything (no condition, not inverted).
    pub fn is_unconditional(&self) -> bool {
        !self.not
            && self.host.is_none()
            && self.path_prefix.is_none()
            && self.path.is_none()
            && self.path_regex.is_none()
            && self.methods.is_empty()
            && self.header.is_none()
            && self.src.is_empty()
    }

    pub fn matches(&self, r: &(impl RequestView + ?Sized)) -> bool {
        self.all(r) != self.not
    }

    fn all(&self, r: &(impl RequestView + ?Sized)) -> bool {
        if let Some(h) = &self.host {
            match r.bare_host() {
                Some(host) if h.matches(host) => {}
                _ => return false,
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == r.method()) {
            return false;
        }
        if let Some(p) = &self.path_prefix {
            if !r.path().starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if r.path() != p {
                return false;
            }
        }
        if let Some((name, cond)) = &self.header {
            let v = r.header(name);
            let ok = match cond {
                HeaderCond::Present(want) => v.is_some() == *want,
                HeaderCond::Value(want) => v == Some(want.as_slice()),
            };
            if !ok {
                return false;
            }
        }
        if !self.src.is_empty() {
            let ip = r.src();
            if !self.src.iter().any(|c| c.contains(ip)) {
                return false;
            }
        }
        if let Some(re) = &self.path_regex {
            if !re.is_match(r.path()) {
                return false;
            }
        }
        true
    }
}

/// A rule whose match is one condition, not inverted (most rules): tested
/// directly, without walking every optional part of the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Only {
    /// Several conditions, or `not`: `Match::matches`.
    #[default]
    General,
    Always,
    Host,
    PathPrefix,
    Path,
    /// The bits of the methods (`method_bit`).
    Methods(u16),
    Header,
    Src,
    /// The first of a long run of rules that test only the host and the
    /// path (its prefix or whole) and end the request (`RuleSet::runs`, by index): the
    /// run is looked up, not walked.
    Run(u32),
}

/// A run of more than [`SCAN_MAX`] consecutive rules, each of which tests
/// nothing but the host and the path's prefix or the whole path (each or
/// the host and one, not negated) and ends the request (`deny`, `redirect`,
/// `respond`, `pool`, with whatever else it does): the first of them that a
/// request matches is the one rule of the run that applies, and `Router`
/// finds it by hash lookups (what an HAProxy config's hundreds of
/// `use_backend ... if { hdr(host) -i ... }` import to, and an nginx
/// server's locations with their slash redirects).
#[derive(Debug, Clone, PartialEq)]
struct Run {
    /// Its first rule.
    start: usize,
    /// Each rule of the run as a route, in order (its `pool` unused).
    routes: Router,
}

impl Run {
    /// The rule after its last.
    fn end(&self) -> usize {
        self.start + self.routes.routes.len()
    }
}

/// The methods rules name most, as bits (0: another method).
fn method_bit(m: &str) -> u16 {
    match m {
        "GET" => 1,
        "HEAD" => 2,
        "POST" => 4,
        "PUT" => 8,
        "DELETE" => 16,
        "PATCH" => 32,
        "OPTIONS" => 64,
        _ => 0,
    }
}

impl Match {
    fn only(&self) -> Only {
        if self.not {
            return Only::General;
        }
        let parts = [
            self.host.is_some(),
            self.path_prefix.is_some(),
            self.path.is_some(),
            self.path_regex.is_some(),
            !self.methods.is_empty(),
            self.header.is_some(),
            !self.src.is_empty(),
        ];
        match parts.iter().filter(|p| **p).count() {
            0 => Only::Always,
            1 if self.host.is_some() => Only::Host,
            1 if self.path_prefix.is_some() => Only::PathPrefix,
            1 if self.path.is_some() => Only::Path,
            1 if self.header.is_some() => Only::Header,
            1 if !self.src.is_empty() => Only::Src,
            1 if !self.methods.is_empty() => {
                let bits: Vec<u16> = self.methods.iter().map(|m| method_bit(m)).collect();
                if bits.contains(&0) {
                    Only::General
                } else {
                    Only::Methods(bits.iter().fold(0, |a, b| a | b))
                }
            }
            _ => Only::General,
        }
    }
}

/// The long runs of rules that are looked up, not walked: marks the first
/// rule of each `Only::Run`.
fn runs(rules: &mut [Rule]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < rules.len() {
        let end = start + rules[start..].iter().take_while(|r| fits_run(r)).count();
        if end - start > SCAN_MAX {
            let routes = rules[start..end]
                .iter()
                .map(|r| Route {
                    host: r.matcher.host.clone(),
                    path_prefix: r.matcher.path_prefix.clone(),
                    path: r.matcher.path.clone(),
                    pool: 0,
                })
                .collect();
            if let Ok(k) = u32::try_from(runs.len()) {
                rules[start].only = Only::Run(k);
                runs.push(Run {
                    start,
                    routes: Router::new(routes, None),
                });
            }
        }
        start = end.max(start + 1);
    }
    runs
}

/// Whether a rule may be in a run: it tests the host, the path's prefix or
/// the whole path (not both), the host and one of those, or nothing; not
/// negated; and ends the request (whatever else it does: edits, a rewrite, a
/// limit). Then the first rule of the run a request matches is the only one
/// of the run that does anything to it.
fn fits_run(r: &Rule) -> bool {
    let m = &r.matcher;
    r.terminal.is_some()
        && !m.not
        && !(m.path.is_some() && m.path_prefix.is_some())
        && m.path_regex.is_none()
        && m.methods.is_empty()
        && m.header.is_none()
        && m.src.is_empty()
}

/// A redirect target with `{host}`, `{path}`, `{query}` and `{uri}` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Host,
    Path,
    Query,
    Uri,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_string()));
            }
            let Some(j) = rest[i..].find('}') else {
                return Err(format!("unclosed '{{' in {s:?}"));
            };
            parts.push(match &rest[i + 1..i + j] {
                "host" => Part::Host,
                "path" => Part::Path,
                "query" => Part::Query,
                "uri" => Part::Uri,
                v => {
                    return Err(format!(
                        "unknown variable {{{v}}} in {s:?}: use {{host}}, {{path}}, {{query}} or {{uri}}"
                    ))
                }
            });
            rest = &rest[i + j + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template(parts))
    }

    /// The target for a request: `{host}` without its port, `{query}` with its
    /// `?` (empty without a query, or with an empty one, as nginx's
    /// `$is_args$args`), `{uri}` the path and query. A target that would
    /// start with `//` or `/\` (a client's path `//evil.example/` in
    /// `{path}` or `{uri}` first) starts with one slash instead: a client
    /// takes the first form for another host's URL, and a redirect must not
    /// send it there (nginx makes such a target absolute, on its own host).
    pub fn render(&self, r: &(impl RequestView + ?Sized)) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Host => out.push_str(r.bare_host().unwrap_or("")),
                Part::Path => out.push_str(r.raw_path()),
                Part::Query => {
                    if let Some((_, q)) = r.target().split_once('?').filter(|(_, q)| !q.is_empty())
                    {
                        out.push('?');
                        out.push_str(q);
                    }
                }
                Part::Uri => out.push_str(r.target()),
            }
        }
        if out.starts_with("//") || out.starts_with("/\\") {
            let rest = out.trim_start_matches(['/', '\\']);
            out = format!("/{rest}");
        }
        out
    }
}

/// A terminal action.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    Deny {
        status: StatusCode,
        body: Bytes,
    },
    Redirect {
        status: StatusCode,
        to: Template,
    },
    /// An answer of the operator's own (`respond`).
    Respond {
        status: StatusCode,
        body: Bytes,
        content_type: http::HeaderValue,
    },
    /// Index into the generation's pools.
    Pool(usize),
}

/// A rule's edit of the path the server gets (the query stays as sent). It
/// works on the path the rules match (`RequestView::path`: decoded, dot
/// segments resolved), as nginx's `proxy_pass` with a URI does; the result is
/// percent-encoded where a path needs it (`Rewritten`).
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// `rewrite_prefix = "/v2/"`: the rule's `path_prefix` (or `path`) is
    /// replaced with this.
    Prefix(String),
    /// `rewrite_path = { regex, to }`: a path `regex` matches becomes `to`,
    /// its `$1`, `${name}` filled from the match (`$$` is a `$`): the whole
    /// path, as nginx's `rewrite` and HAProxy's `replace-path` write it.
    Regex { re: regex::Regex, to: String },
}

impl PartialEq for PathRewrite {
    fn eq(&self, o: &PathRewrite) -> bool {
        match (self, o) {
            (PathRewrite::Prefix(a), PathRewrite::Prefix(b)) => a == b,
            (PathRewrite::Regex { re: a, to: x }, PathRewrite::Regex { re: b, to: y }) => {
                a.as_str() == b.as_str() && x == y
            }
            _ => false,
        }
    }
}

impl PathRewrite {
    /// The new path for `path` under a rule matching `m`; None: unchanged
    /// (the prefix is not there, or the regex does not match).
    pub fn apply(&self, m: &Match, path: &str) -> Option<String> {
        // `*` and authorities are not paths; a path that was not UTF-8
        // once decoded is held with U+FFFD in place of its bytes, which the
        // server must not get for them
        if !path.starts_with('/') || path.contains('\u{FFFD}') {
            return None;
        }
        let new = match self {
            PathRewrite::Prefix(to) => {
                let from = m.path_prefix.as_deref().or(m.path.as_deref())?;
                let rest = path.strip_prefix(from)?;
                let mut out = String::with_capacity(to.len() + rest.len());
                out.push_str(to);
                out.push_str(rest);
                out
            }
            PathRewrite::Regex { re, to } => {
                let caps = re.captures(path)?;
                let mut out = String::with_capacity(to.len() + path.len());
                caps.expand(to, &mut out);
                out
            }
        };
        Some(tidy(&new))
    }
}

/// A rewritten path as `router::normalize_path` leaves a client's: a leading
/// `/`, repeated slashes merged, `.` segments dropped and `..` (or Tomcat's
/// `..;`) resolved, so that the rules after the rewrite and the server see
/// one path (`/api../x` under `path_prefix = "/api"` and `rewrite_prefix =
/// "/"` is `/x`, not `/../x`, and `//host/x` is not read as an authority).
fn tidy(path: &str) -> String {
    let clean = path.starts_with('/')
        && !path
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.'));
    if clean {
        return path.to_string();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            s if s == ".." || s.starts_with("..;") => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let folder = matches!(path.rsplit('/').next(), Some("" | "." | ".."));
    let mut out = String::with_capacity(path.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if folder || out.is_empty() {
        out.push('/');
    }
    out
}

/// A request's path as rules rewrote it: `path` as rules match it (decoded),
/// `target` as the server gets it (encoded, the client's query after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub path: String,
    pub target: String,
    /// The length of the path in `target`.
    path_len: usize,
}

impl Rewritten {
    /// `path` (decoded) with the query of `target` (the client's).
    pub fn new(path: String, target: &str) -> Rewritten {
        let mut out = String::with_capacity(path.len() + 8);
        encode_path(&path, &mut out);
        let path_len = out.len();
        if let Some((_, q)) = target.split_once('?') {
            out.push('?');
            out.push_str(q);
        }
        Rewritten {
            path,
            target: out,
            path_len,
        }
    }
}

/// Appends `path`, percent-encoding every byte RFC 3986's path does not
/// allow as it is (`%`, `?`, `#`, spaces, controls, non-ASCII: nginx's
/// escaping of a URI it rewrote).
pub fn encode_path(path: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// A request seen through a rewrite: later rules, the routes and a
/// redirect's template see the new path.
pub struct RewrittenView<'a, V: ?Sized> {
    pub inner: &'a V,
    pub rw: &'a Rewritten,
}

impl<V: RequestView + ?Sized> RequestView for RewrittenView<'_, V> {
    fn method(&self) -> &str {
        self.inner.method()
    }
    fn host(&self) -> Option<&str> {
        self.inner.host()
    }
    fn target(&self) -> &str {
        &self.rw.target
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.inner.header(name)
    }
    fn src(&self) -> IpAddr {
        self.inner.src()
    }
    fn path(&self) -> &str {
        &self.rw.path
    }
    fn raw_path(&self) -> &str {
        &self.rw.target[..self.rw.path_len]
    }
    fn bare_host(&self) -> Option<&str> {
        self.inner.bare_host()
    }
    fn declared_body(&self) -> u64 {
        self.inner.declared_body()
    }
}

/// A header line an edit writes.
type Line = (HeaderName, HeaderValue);

/// What the response edits make of one line of a server's head.
#[derive(Debug, PartialEq)]
pub enum ServerLine {
    AsSent,
    Dropped,
    Rewritten(HeaderValue),
}

/// Header edits, applied in this order: delete, set (replace), add (append).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edits {
    pub del: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub response_del: Vec<HeaderName>,
    pub response_set: Vec<(HeaderName, HeaderValue)>,
    /// `response_replace_header`: values of a server's field rewritten by a
    /// regex (before any rule's deletes and sets, which they never rewrite).
    pub response_replace: Vec<HeaderReplace>,
    /// `rewrite_prefix` or `rewrite_path`: the path the server gets.
    pub rewrite: Option<PathRewrite>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.rewrite.is_none()
            && self.del.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
            && !self.edits_response()
    }

    fn edits_response(&self) -> bool {
        !self.response_del.is_empty()
            || !self.response_set.is_empty()
            || !self.response_replace.is_empty()
    }
}

/// `response_replace_header = { name, regex, to }`: every line of `name` from
/// the server whose value `regex` matches becomes `to`, its `$1` or `${name}`
/// filled from the match (HAProxy's `http-response replace-header`; nginx's
/// `proxy_redirect` is one on `Location` and `Refresh`). The whole value is
/// replaced, as HAProxy does; a value that is not UTF-8 is left as it is.
/// Of one rule's list, the first entry that names a field and matches a
/// line rewrites that line; the rules apply one after another.
#[derive(Debug, Clone)]
pub struct HeaderReplace {
    pub name: HeaderName,
    pub re: regex::Regex,
    pub to: String,
}

impl PartialEq for HeaderReplace {
    fn eq(&self, o: &HeaderReplace) -> bool {
        self.name == o.name && self.re.as_str() == o.re.as_str() && self.to == o.to
    }
}

/// The value the first of `list` that names `name` and matches `value`
/// makes of it (one rule's list is tried in order, as nginx tries its
/// `proxy_redirect` lines); None: none does.
fn first_replace(list: &[HeaderReplace], name: &[u8], value: &[u8]) -> Option<HeaderValue> {
    list.iter()
        .filter(|r| name.eq_ignore_ascii_case(r.name.as_str().as_bytes()))
        .find_map(|r| r.apply(value))
}

impl HeaderReplace {
    /// The new value for `value`; None: unchanged (not UTF-8, no match, or a
    /// result that is not a field value).
    pub fn apply(&self, value: &[u8]) -> Option<HeaderValue> {
        let text = std::str::from_utf8(value).ok()?;
        let caps = self.re.captures(text)?;
        let mut out = String::with_capacity(self.to.len() + text.len());
        caps.expand(&self.to, &mut out);
        // (UTF-8 beyond ASCII is a field value's obs-text; a control
        // character is not, and leaves the line as it was)
        HeaderValue::from_bytes(out.trim_matches([' ', '\t']).as_bytes()).ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub matcher: Match,
    pub terminal: Option<Terminal>,
    pub edits: Edits,
    /// `writes = true|false`: the request is (not) a write, for read-only mode.
    pub writes: Option<bool>,
    /// `rate_limit = "name"`: index of a `[[rate_limit]]`.
    pub rate_limit: Option<usize>,
    /// `priority = "..."`: the request's class in its pool's queue.
    pub priority: Option<Priority>,
    /// `max_request_body`: the longest body allowed (0: no limit).
    pub max_body: Option<u64>,
    /// Its place among the rules with `max_request_body` (set by
    /// `RuleSet::new`): what `Applied` keeps, two bytes where the limit
    /// would take sixteen (every idle connection's future holds one).
    body_slot: Option<u16>,
    /// Where a request that it matches notes its edits (set by
    /// `RuleSet::new`).
    edit: EditMark,
    /// How its match is tested (set by `RuleSet::new`).
    only: Only,
}

/// Rules with header edits that do not end the request, per listener: their
/// matches are kept in a u64. Those that end it need no bit: a request has
/// one such rule at most, the last of those it matched.
pub const MAX_EDIT_RULES: usize = 64;
/// Rules with header edits that end the request, per listener: one of them
/// is kept in two bytes.
pub const MAX_LAST_EDIT_RULES: usize = u16::MAX as usize;

/// Where a rule's edits are noted in `Applied`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EditMark {
    #[default]
    None,
    /// A rule that may be followed by others: its bit of `Applied::bits`.
    Bit(u8),
    /// A rule that ends the request: `Applied::last`.
    Last(NonZeroU16),
}
/// `[[rate_limit]]` entries: the ones a request is subject to are a u64 too.
pub const MAX_RATE_LIMITS: usize = 64;

impl Rule {
    /// What this rule, matching, adds to what the rules before it applied:
    /// its edits' bit, and its say on writes, the limits, the priority and
    /// the body's limit.
    #[inline(always)]
    fn note(&self, applied: &mut Applied) {
        match self.edit {
            EditMark::None => {}
            EditMark::Bit(bit) => applied.bits |= 1 << bit,
            EditMark::Last(slot) => applied.last = Some(slot),
        }
        if self.writes.is_some() {
            applied.writes = self.writes;
        }
        if let Some(i) = self.rate_limit {
            applied.limits |= 1 << i;
        }
        if self.priority.is_some() {
            applied.priority = self.priority;
        }
        if self.body_slot.is_some() {
            applied.max_body = self.body_slot;
        }
    }

    pub fn new(matcher: Match, terminal: Option<Terminal>, edits: Edits) -> Rule {
        Rule {
            matcher,
            terminal,
            edits,
            writes: None,
            rate_limit: None,
            priority: None,
            max_body: None,
            body_slot: None,
            edit: EditMark::None,
            only: Only::General,
        }
    }
}

/// A listener's rules, compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// The `max_request_body` of each rule with one, by its `body_slot`.
    body_limits: Vec<u64>,
    /// The rule (its index) of each edit bit, in rule order: a request's
    /// edits are found by its bits, not by a walk over every rule (they are
    /// read for each field of an answer that rules edit).
    edit_rules: Vec<u32>,
    /// The rule (its index) of each `EditMark::Last` slot, from slot 1 on.
    last_edit_rules: Vec<u32>,
    /// The long runs of rules that are looked up, not walked (`Only::Run`).
    runs: Vec<Run>,
}

/// More rules of a kind than a listener may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    #[error(
        "more than {MAX_EDIT_RULES} rules that do not end the request (no pool, deny, redirect or respond) edit headers or the path on this listener; merge some"
    )]
    Edits,
    #[error(
        "more than {MAX_LAST_EDIT_RULES} rules that end the request edit headers or the path on this listener; merge some"
    )]
    LastEdits,
    #[error("more than {MAX_BODY_RULES} rules set max_request_body on this listener; merge some")]
    BodyLimits,
}

/// Rules with `max_request_body` per listener.
pub const MAX_BODY_RULES: usize = u16::MAX as usize + 1;

/// What the non-terminal actions of the matching rules say about one request:
/// whose header edits apply (by their bit), and whether it is a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The rules with `EditMark::Bit` that matched, by bit.
    bits: u64,
    /// The rule with `EditMark::Last` that ended the request, by slot: it
    /// is after every rule of `bits`, so its edits are applied last.
    last: Option<NonZeroU16>,
    /// Set by the last matching rule with `writes`; None: by its method.
    pub writes: Option<bool>,
    /// The rate limits (by index) of the matching rules.
    pub limits: u64,
    /// Set by the last matching rule with `priority`; None: `normal`.
    pub priority: Option<Priority>,
    /// The `body_slot` of the last matching rule with `max_request_body`;
    /// None: the listener's limit holds (`RuleSet::max_body` reads it).
    pub max_body: Option<u16>,
}

impl Applied {
    /// No header edit applies.
    pub fn is_empty(self) -> bool {
        self.bits == 0 && self.last.is_none()
    }
}

/// Whether a request is a write: as rules said, else any method but the safe
/// ones (GET, HEAD, OPTIONS, TRACE; RFC 9110 9.2.1). Not only POST, PUT, PATCH
/// and DELETE: WebDAV's PROPPATCH, MKCOL, MOVE, COPY and LOCK change things
/// too, and a method rampart does not know may; a read by another method
/// (WebDAV's PROPFIND) is a rule's `writes = false`.
pub fn is_write(writes: Option<bool>, method: &str) -> bool {
    writes.unwrap_or(!matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE"))
}

/// The header edits of the rules that matched one request.
#[derive(Debug, Clone)]
pub struct RuleEdits {
    pub rules: std::sync::Arc<RuleSet>,
    pub applied: Applied,
    /// The target the server gets when a rule rewrote the path (None: the
    /// client's).
    pub target: Option<Box<str>>,
}

impl RuleEdits {
    pub fn edit_request(&self, h: &mut http::HeaderMap) {
        self.rules.edit_request(self.applied, h);
    }

    pub fn edit_response(&self, h: &mut http::HeaderMap) {
        self.rules.edit_response(self.applied, h);
    }

    /// What the response edits make of a line of the server's head.
    pub fn server_line(&self, name: &[u8], value: &[u8]) -> ServerLine {
        self.rules.response_line(self.applied, name, value)
    }

    /// Whether a response edit applies.
    pub fn edits_response(&self) -> bool {
        self.rules.edits(self.applied).any(Edits::edits_response)
    }
}

/// Read-only mode (`read_only_when` on a listener or a pool): while one of the
/// listed pools has no eligible server (or an operator switched it by hand),
/// writes get this answer; reads go on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOnly {
    /// Pools (indices in the generation) whose emptiness makes it read-only.
    pub when: Vec<usize>,
    pub status: StatusCode,
    pub body: Bytes,
    /// Retry-After, in seconds.
    pub retry_after: u64,
}

impl ReadOnly {
    /// The answer of an operator's switch on a listener without `read_only_when`.
    pub fn manual() -> ReadOnly {
        ReadOnly {
            when: Vec::new(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(DEFAULT_READ_ONLY_MESSAGE.as_bytes()),
            retry_after: 30,
        }
    }
}

pub const DEFAULT_READ_ONLY_MESSAGE: &str =
    "503 Service Unavailable: writes are temporarily disabled (read-only mode)\n";

/// What the rules decided for a request.
#[derive(Debug)]
pub enum Outcome<'r> {
    /// No terminal rule matched: routes and the default pool decide (on the
    /// path as rewritten, if a rule did).
    Continue(Applied, Option<Box<Rewritten>>),
    Terminal(&'r Terminal, Applied, Option<Box<Rewritten>>),
}

impl Outcome<'_> {
    fn rewritten(&mut self) -> &mut Option<Box<Rewritten>> {
        match self {
            Outcome::Continue(_, w) | Outcome::Terminal(_, _, w) => w,
        }
    }
}

impl RuleSet {
    /// Fails when more than `MAX_EDIT_RULES` rules that do not end the
    /// request have header edits, more than `MAX_LAST_EDIT_RULES` that do,
    /// or more than `MAX_BODY_RULES` a `max_request_body`.
    pub fn new(mut rules: Vec<Rule>) -> Result<RuleSet, TooMany> {
        let mut body_limits = Vec::new();
        let mut edit_rules = Vec::new();
        let mut last_edit_rules = Vec::new();
        for (i, r) in rules.iter_mut().enumerate() {
            r.only = r.matcher.only();
            if !r.edits.is_empty() {
                let i = u32::try_from(i).map_err(|_| TooMany::Edits)?;
                if r.terminal.is_some() {
                    // (slot 0 is None's)
                    let slot = u16::try_from(last_edit_rules.len() + 1)
                        .ok()
                        .and_then(NonZeroU16::new)
                        .ok_or(TooMany::LastEdits)?;
                    r.edit = EditMark::Last(slot);
                    last_edit_rules.push(i);
                } else {
                    if edit_rules.len() == MAX_EDIT_RULES {
                        return Err(TooMany::Edits);
                    }
                    r.edit = EditMark::Bit(edit_rules.len() as u8);
                    edit_rules.push(i);
                }
            }
            if let Some(m) = r.max_body {
                let slot = u16::try_from(body_limits.len()).map_err(|_| TooMany::BodyLimits)?;
                r.body_slot = Some(slot);
                body_limits.push(m);
            }
        }
        let runs = runs(&mut rules);
        Ok(RuleSet {
            rules,
            body_limits,
            edit_rules,
            last_edit_rules,
            runs,
        })
    }

    /// The `max_request_body` the rules in `applied` set, if one did.
    pub fn max_body(&self, applied: Applied) -> Option<u64> {
        applied
            .max_body
            .and_then(|slot| self.body_limits.get(usize::from(slot)).copied())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The longest body any request may send when the listener allows
    /// `listener` (0: no limit): the largest the rules' `max_request_body`
    /// allow, if they raise it. A body over it is refused before the rules
    /// are read.
    pub fn max_body_bound(&self, listener: u64) -> u64 {
        self.body_limits.iter().fold(listener, |bound, &m| {
            if bound == 0 || m == 0 {
                0
            } else {
                bound.max(m)
            }
        })
    }

    /// The pools the rules send requests to (`pool = ...`), by index.
    pub fn pools(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules.iter().filter_map(|r| match r.terminal {
            Some(Terminal::Pool(i)) => Some(i),
            _ => None,
        })
    }

    /// The first matching terminal rule, and the edits of every matching rule
    /// up to it.
    pub fn evaluate(&self, r: &(impl RequestView + ?Sized)) -> Outcome<'_> {
        self.evaluate_from(0, r, Applied::default())
    }

    /// `evaluate` from the rule `from` on, with what the rules before it
    /// applied. After a rule rewrites the path, the rest see the new one
    /// (HAProxy's `set-path` before `use_backend`, nginx's `rewrite ... last`).
    fn evaluate_from(
        &self,
        from: usize,
        r: &(impl RequestView + ?Sized),
        mut applied: Applied,
    ) -> Outcome<'_> {
        let mut method = None;
        let mut rules = self.rules.iter().enumerate().skip(from);
        while let Some((i, rule)) = rules.next() {
            let m = &rule.matcher;
            let hit = match rule.only {
                Only::Run(k) => {
                    match self.runs.get(k as usize) {
                        Some(run) => {
                            // (only a run's first rule is marked)
                            debug_assert_eq!(i, run.start);
                            // the first of the run that matches is the rule: it
                            // ends the request, after what else it does
                            if let Some((first, t)) = run
                                .routes
                                .first(r.bare_host(), r.path())
                                .and_then(|j| self.rules.get(run.start + j))
                                .and_then(|first| Some(first).zip(first.terminal.as_ref()))
                            {
                                return Self::end_with(first, t, r, applied);
                            }
                            // past the run's other rules (`nth(n)` takes n + 1)
                            if let Some(n) = run.end().checked_sub(i + 2) {
                                rules.nth(n);
                            }
                            continue;
                        }
                        None => m.matches(r),
                    }
                }
                Only::Always => true,
                Only::PathPrefix => r
                    .path()
                    .starts_with(m.path_prefix.as_deref().unwrap_or_default()),
                Only::Path => Some(r.path()) == m.path.as_deref(),
                Only::Host => match (r.bare_host(), &m.host) {
                    (Some(host), Some(h)) => h.matches(host),
                    _ => false,
                },
                Only::Methods(bits) => {
                    bits & *method.get_or_insert_with(|| method_bit(r.method())) != 0
                }
                Only::Header => match &m.header {
                    Some((name, HeaderCond::Present(want))) => r.header(name).is_some() == *want,
                    Some((name, HeaderCond::Value(want))) => {
                        r.header(name) == Some(want.as_slice())
                    }
                    None => false,
                },
                Only::Src => {
                    let ip = r.src();
                    m.src.iter().any(|c| c.contains(ip))
                }
                Only::General => m.matches(r),
            };
            if !hit {
                continue;
            }
            rule.note(&mut applied);
            if let Some(path) = rule
                .edits
                .rewrite
                .as_ref()
                .and_then(|w| w.apply(&rule.matcher, r.path()))
            {
                let rw = Box::new(Rewritten::new(path, r.target()));
                let mut out = match &rule.terminal {
                    Some(t) => Outcome::Terminal(t, applied, None),
                    None => {
                        let view = RewrittenView { inner: r, rw: &rw };
                        self.evaluate_from(i + 1, &view as &dyn RequestView, applied)
                    }
                };
                // (a later rule's rewrite is the last word)
                out.rewritten().get_or_insert(rw);
                return out;
            }
            if let Some(t) = &rule.terminal {
                return Outcome::Terminal(t, applied, None);
            }
        }
        Outcome::Continue(applied, None)
    }

    /// What `evaluate_from` gives for `rule` of a run, which matched first of
    /// its run and ends the request with `t`: as the walk ends with it. Not
    /// inlined: the walk's loop stays as it was without runs.
    #[inline(never)]
    fn end_with<'s>(
        rule: &Rule,
        t: &'s Terminal,
        r: &(impl RequestView + ?Sized),
        mut applied: Applied,
    ) -> Outcome<'s> {
        rule.note(&mut applied);
        let rw = rule
            .edits
            .rewrite
            .as_ref()
            .and_then(|w| w.apply(&rule.matcher, r.path()))
            .map(|path| Box::new(Rewritten::new(path, r.target())));
        Outcome::Terminal(t, applied, rw)
    }

    /// The edits of the rules in `applied`, in rule order: those of the
    /// rule that ended the request last.
    pub fn edits(&self, applied: Applied) -> impl Iterator<Item = &Edits> {
        let mut bits = applied.bits;
        let mut last = applied.last;
        std::iter::from_fn(move || {
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(r) = self
                    .edit_rules
                    .get(b)
                    .and_then(|&i| self.rules.get(i as usize))
                {
                    return Some(&r.edits);
                }
            }
            let slot = usize::from(last.take()?.get()) - 1;
            self.last_edit_rules
                .get(slot)
                .and_then(|&i| self.rules.get(i as usize))
                .map(|r| &r.edits)
        })
    }

    /// Applies the request edits of `applied` to a header map.
    pub fn edit_request(&self, applied: Applied, h: &mut http::HeaderMap) {
        for e in self.edits(applied) {
            for n in &e.del {
                h.remove(n);
            }
            for (n, v) in &e.set {
                h.insert(n.clone(), v.clone());
            }
            for (n, v) in &e.add {
                h.append(n.clone(), v.clone());
            }
        }
    }

    /// Applies the response edits of `applied` to a header map.
    pub fn edit_response(&self, applied: Applied, h: &mut http::HeaderMap) {
        // the server's values first, line by line, as the fast path rewrites
        // them while copying its lines (a rule's set is never rewritten)
        for e in self.edits(applied) {
            if e.response_replace.is_empty() {
                continue;
            }
            for (name, v) in h.iter_mut() {
                if let Some(new) =
                    first_replace(&e.response_replace, name.as_str().as_bytes(), v.as_bytes())
                {
                    *v = new;
                }
            }
        }
        for e in self.edits(applied) {
            for n in &e.response_del {
                h.remove(n);
            }
            for (n, v) in &e.response_set {
                h.insert(n.clone(), v.clone());
            }
        }
    }

    /// Whether a header the client sent is removed or replaced by the request
    /// edits of `applied` (the fast path drops it while copying the head).
    pub fn drops_request_header(&self, applied: Applied, name: &str) -> bool {
        self.edits(applied).any(|e| {
            e.del.iter().any(|n| name.eq_ignore_ascii_case(n.as_str()))
                || e.set
                    .iter()
                    .any(|(n, _)| name.eq_ignore_ascii_case(n.as_str()))
        })
    }

    /// Header lines the request edits of `applied` add (set, then add).
    pub fn request_additions(
        &self,
        applied: Applied,
    ) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.additions(
            applied,
            |e| [&e.set, &e.add],
            |l, n| l.del.contains(n) || l.set.iter().any(|(s, _)| s == n),
        )
    }

    /// The lines `lines` gives each matching rule, less those a later matching
    /// rule removes or replaces (`drops`): what a rewritten head adds, in rule
    /// order, without allocating.
    fn additions(
        &self,
        applied: Applied,
        lines: fn(&Edits) -> [&[Line]; 2],
        drops: fn(&Edits, &HeaderName) -> bool,
    ) -> impl Iterator<Item = &Line> {
        self.edits(applied).enumerate().flat_map(move |(i, e)| {
            let [a, b] = lines(e);
            a.iter()
                .chain(b)
                .filter(move |(n, _)| !self.edits(applied).skip(i + 1).any(|later| drops(later, n)))
        })
    }

    /// A line of the server's `name` as the response edits of `applied`
    /// leave it, in one pass over them: dropped (a rule deletes or sets the
    /// field: the sets are `response_additions`), rewritten by the rules'
    /// `response_replace_header` in rule order, or as sent.
    pub fn response_line(&self, applied: Applied, name: &[u8], value: &[u8]) -> ServerLine {
        let mut new: Option<HeaderValue> = None;
        for e in self.edits(applied) {
            let named = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
            if e.response_del.iter().any(named) || e.response_set.iter().any(|(n, _)| named(n)) {
                return ServerLine::Dropped;
            }
            let now = new.as_ref().map_or(value, HeaderValue::as_bytes);
            if let Some(v) = first_replace(&e.response_replace, name, now) {
                new = Some(v);
            }
        }
        new.map_or(ServerLine::AsSent, ServerLine::Rewritten)
    }

    /// Header lines the response edits of `applied` set.
    pub fn response_additions(
        &self,
        applied: Applied,
    ) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.additions(
            applied,
            |e| [&e.response_set, &[]],
            |l, n| l.response_del.contains(n) || l.response_set.iter().any(|(s, _)| s == n),
        )
    }

    /// Indices of rules no request can reach: those after an unconditional
    /// rule with a terminal action.
    pub fn unreachable(&self) -> Option<(usize, std::ops::Range<usize>)> {
        let i = self
            .rules
            .iter()
            .position(|r| r.terminal.is_some() && r.matcher.is_unconditional())?;
        (i + 1 < self.rules.len()).then(|| (i, i + 1..self.rules.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        method: &'static str,
        host: Option<&'static str>,
        target: &'static str,
        headers: Vec<(&'static str, &'static [u8])>,
        src: IpAddr,
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn host(&self) -> Option<&str> {
            self.host
        }
        fn target(&self) -> &str {
            self.target
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
        fn src(&self) -> IpAddr {
            self.src
        }
    }

    fn req(method: &'static str, host: &'static str, target: &'static str) -> Req {
        Req {
            method,
            host: Some(host),
            target,
            headers: vec![("x-api-key", b"k1")],
            src: "10.1.2.3".parse().unwrap(),
        }
    }

    fn deny(m: Match) -> Rule {
        Rule::new(
            m,
            Some(Terminal::Deny {
                status: StatusCode::FORBIDDEN,
                body: Bytes::new(),
            }),
            Edits::default(),
        )
    }

    #[test]
    fn the_direct_tests_of_one_condition_rules_agree_with_the_general_match() {
        let matches: Vec<Match> = vec![
            Match::default(),
            Match {
                host: Some(HostMatch::parse("*.example.com").unwrap()),
                ..Default::default()
            },
            Match {
                host: Some(HostMatch::parse("api.example.com").unwrap()),
                ..Default::default()
            },
            Match {
                path_prefix: Some("/v1/".into()),
                ..Default::default()
            },
            Match {
                path: Some("/v1/jobs".into()),
                ..Default::default()
            },
            Match {
                methods: vec!["GET".into(), "DELETE".into()],
                ..Default::default()
            },
            Match {
                methods: vec!["PROPFIND".into()],
                ..Default::default()
            },
            Match {
                path_prefix: Some("/v1/".into()),
                not: true,
                ..Default::default()
            },
            Match {
                header: Some(("x-api-key".into(), HeaderCond::Present(true))),
                ..Default::default()
            },
            Match {
                header: Some(("x-api-key".into(), HeaderCond::Value(b"k2".to_vec()))),
                ..Default::default()
            },
            Match {
                src: vec![Cidr::parse("10.0.0.0/8").unwrap()],
                ..Default::default()
            },
        ];
        let kinds: Vec<Only> = matches.iter().map(Match::only).collect();
        assert_eq!(
            kinds,
            [
                Only::Always,
                Only::Host,
                Only::Host,
                Only::PathPrefix,
                Only::Path,
                Only::Methods(1 | 16),
                Only::General,
                Only::General,
                Only::Header,
                Only::Header,
                Only::Src
            ]
        );
        let requests = [
            req("GET", "api.example.com", "/v1/jobs"),
            req("DELETE", "www.example.com:80", "/v1/jobs?x=1"),
            req("POST", "other.org", "/v2/"),
            req("PROPFIND", "api.example.com", "/"),
            Req {
                host: None,
                ..req("get", "x", "/v1/")
            },
        ];
        for (i, m) in matches.iter().enumerate() {
            let set = RuleSet::new(vec![deny(m.clone())]).unwrap();
            for r in &requests {
                let fast = matches!(set.evaluate(r), Outcome::Terminal(..));
                assert_eq!(
                    fast,
                    m.matches(r),
                    "match {i} on {} {:?} {}",
                    r.method,
                    r.host,
                    r.target
                );
            }
        }
    }

    #[test]
    fn each_matcher_and_not() {
        let r = req("POST", "api.example.com:8443", "/v1/jobs?x=1");
        let m = |f: &dyn Fn(&mut Match)| {
            let mut m = Match::default();
            f(&mut m);
            m.matches(&r)
        };
        assert!(m(&|_| {}));
        assert!(m(
            &|m| m.host = Some(HostMatch::parse("api.example.com").unwrap())
        ));
        assert!(m(
            &|m| m.host = Some(HostMatch::parse("*.example.com").unwrap())
        ));
        assert!(!m(
            &|m| m.host = Some(HostMatch::parse("www.example.com").unwrap())
        ));
        assert!(m(&|m| m.path_prefix = Some("/v1/".into())));
        assert!(!m(&|m| m.path_prefix = Some("/v2".into())));
        assert!(m(&|m| m.path = Some("/v1/jobs".into())));
        assert!(!m(&|m| m.path = Some("/v1/jobs?x=1".into())));
        assert!(m(
            &|m| m.path_regex = Some(regex::Regex::new("^/v[0-9]+/jobs$").unwrap())
        ));
        assert!(!m(
            &|m| m.path_regex = Some(regex::Regex::new("^/v[0-9]+$").unwrap())
        ));
        assert!(m(&|m| m.methods = vec!["GET".into(), "POST".into()]));
        assert!(!m(&|m| m.methods = vec!["GET".into()]));
        assert!(m(
            &|m| m.header = Some(("x-api-key".into(), HeaderCond::Present(true)))
        ));
        assert!(!m(
            &|m| m.header = Some(("x-api-key".into(), HeaderCond::Present(false)))
        ));
        assert!(m(
            &|m| m.header = Some(("x-other".into(), HeaderCond::Present(false)))
        ));
        assert!(m(
            &|m| m.header = Some(("x-api-key".into(), HeaderCond::Value(b"k1".to_vec())))
        ));
        assert!(!m(
            &|m| m.header = Some(("x-api-key".into(), HeaderCond::Value(b"k2".to_vec())))
        ));
        assert!(m(&|m| m.src = vec![Cidr::parse("10.0.0.0/8").unwrap()]));
        assert!(!m(&|m| m.src = vec![Cidr::parse("192.168.0.0/16").unwrap()]));
        // ANDed, and inverted by not
        assert!(!m(&|m| {
            m.path_prefix = Some("/v1".into());
            m.methods = vec!["GET".into()];
        }));
        assert!(m(&|m| {
            m.path_prefix = Some("/v1".into());
            m.methods = vec!["GET".into()];
            m.not = true;
        }));
        assert!(!m(&|m| m.not = true));
    }

    #[test]
    fn first_terminal_decides_and_edits_accumulate() {
        let set = |n: &'static str, v: &'static str| Edits {
            set: vec![(HeaderName::from_static(n), HeaderValue::from_static(v))],
            ..Default::default()
        };
        let rules = RuleSet::new(vec![
            Rule::new(Match::default(), None, set("x-a", "1")),
            Rule::new(
                Match {
                    path_prefix: Some("/admin".into()),
                    ..Default::default()
                },
                None,
                set("x-b", "2"),
            ),
            Rule::new(
                Match {
                    path_prefix: Some("/v1".into()),
                    ..Default::default()
                },
                Some(Terminal::Pool(3)),
                set("x-c", "3"),
            ),
            deny(Match::default()),
        ])
        .unwrap();
        let r = req("GET", "a", "/v1/x");
        match rules.evaluate(&r) {
            Outcome::Terminal(Terminal::Pool(3), applied, _) => {
                let mut h = http::HeaderMap::new();
                rules.edit_request(applied, &mut h);
                assert_eq!(h["x-a"], "1");
                assert_eq!(h["x-c"], "3");
                assert!(h.get("x-b").is_none());
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            rules.evaluate(&req("GET", "a", "/other")),
            Outcome::Terminal(Terminal::Deny { .. }, _, _)
        ));
        assert_eq!(rules.unreachable(), None);
        let with_tail = RuleSet::new(vec![deny(Match::default()), deny(Match::default())]).unwrap();
        assert_eq!(with_tail.unreachable(), Some((0, 1..2)));
        // not = true makes a rule conditional: nothing is unreachable
        let inverted = RuleSet::new(vec![
            deny(Match {
                not: true,
                ..Default::default()
            }),
            deny(Match::default()),
        ])
        .unwrap();
        assert_eq!(inverted.unreachable(), None);
    }

    #[test]
    fn later_edits_win_on_the_wire() {
        let rules = RuleSet::new(vec![
            Rule::new(
                Match::default(),
                None,
                Edits {
                    add: vec![(
                        HeaderName::from_static("x-a"),
                        HeaderValue::from_static("1"),
                    )],
                    ..Default::default()
                },
            ),
            Rule::new(
                Match::default(),
                None,
                Edits {
                    del: vec![HeaderName::from_static("x-a")],
                    set: vec![(
                        HeaderName::from_static("x-b"),
                        HeaderValue::from_static("2"),
                    )],
                    ..Default::default()
                },
            ),
        ])
        .unwrap();
        let Outcome::Continue(applied, _) = rules.evaluate(&req("GET", "a", "/")) else {
            panic!()
        };
        let lines: Vec<_> = rules
            .request_additions(applied)
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(lines, vec![("x-b", "2")]);
        assert!(rules.drops_request_header(applied, "X-A"));
        assert!(rules.drops_request_header(applied, "x-b"));
        assert!(!rules.drops_request_header(applied, "x-c"));
        // the same through a HeaderMap
        let mut h = http::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("client"));
        rules.edit_request(applied, &mut h);
        assert!(h.get("x-a").is_none());
        assert_eq!(h["x-b"], "2");
    }

    #[test]
    fn redirect_templates() {
        let t = Template::parse("https://{host}{path}{query}").unwrap();
        assert_eq!(
            t.render(&req("GET", "api.example.com:8080", "/a/b?c=1")),
            "https://api.example.com/a/b?c=1"
        );
        assert_eq!(
            t.render(&req("GET", "api.example.com", "/a")),
            "https://api.example.com/a"
        );
        let t = Template::parse("https://new.example.com{uri}").unwrap();
        assert_eq!(
            t.render(&req("GET", "x", "/p?q")),
            "https://new.example.com/p?q"
        );
        assert!(Template::parse("https://{hots}/").is_err());
        assert!(Template::parse("https://{host").is_err());
        // an empty query gives no `?`, as nginx's $is_args
        let t = Template::parse("/app/{query}").unwrap();
        assert_eq!(t.render(&req("GET", "x", "/app?")), "/app/");
        assert_eq!(t.render(&req("GET", "x", "/app?a")), "/app/?a");
        // a client's path never makes a target on another host
        for (tpl, target, want) in [
            ("{uri}", "//evil.example/x?q", "/evil.example/x?q"),
            ("{path}{query}", "///evil.example", "/evil.example"),
            ("{path}", "/\\evil.example", "/evil.example"),
            ("{path}", "/a//b", "/a//b"),
            ("https://{host}{uri}", "//x", "https://h//x"),
        ] {
            let t = Template::parse(tpl).unwrap();
            assert_eq!(t.render(&req("GET", "h", target)), want, "{tpl} {target}");
        }
    }

    #[test]
    fn a_write_is_any_method_but_the_safe_ones() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(!is_write(None, m), "{m}");
            assert!(is_write(Some(true), m), "{m}: a rule says");
        }
        for m in [
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "PROPPATCH",
            "MKCOL",
            "MOVE",
            "COPY",
            "LOCK",
            "UNLOCK",
            "PURGE",
            "CONNECT",
            "get",
        ] {
            assert!(is_write(None, m), "{m}");
            assert!(!is_write(Some(false), m), "{m}: a rule says");
        }
    }

    /// The last matching rule with `max_request_body` sets the request's;
    /// `Applied` keeps its slot, the set its limit.
    #[test]
    fn the_last_matching_body_limit_decides() {
        let limit = |prefix: Option<&str>, n: u64| {
            let mut r = Rule::new(
                Match {
                    path_prefix: prefix.map(String::from),
                    ..Default::default()
                },
                None,
                Edits::default(),
            );
            r.max_body = Some(n);
            r
        };
        let set = RuleSet::new(vec![
            limit(None, 10),
            limit(Some("/up"), 0),
            limit(Some("/up/x"), 5),
        ])
        .unwrap();
        let of = |target: &'static str| match set.evaluate(&req("POST", "a", target)) {
            Outcome::Continue(a, _) => set.max_body(a),
            Outcome::Terminal(..) => panic!("no terminal rule"),
        };
        assert_eq!(
            (of("/a"), of("/up/a"), of("/up/x")),
            (Some(10), Some(0), Some(5))
        );
        assert_eq!(set.max_body_bound(100), 0);
        assert_eq!(RuleSet::default().max_body(Applied::default()), None);
        let many = (0..=MAX_BODY_RULES as u64)
            .map(|n| limit(None, n))
            .collect();
        assert_eq!(RuleSet::new(many).unwrap_err(), TooMany::BodyLimits);
    }

    #[test]
    fn too_many_edit_rules_refused() {
        let edit = |terminal: Option<Terminal>| {
            Rule::new(
                Match::default(),
                terminal,
                Edits {
                    del: vec![HeaderName::from_static("x")],
                    ..Default::default()
                },
            )
        };
        let go_on = || edit(None);
        let end = || edit(Some(Terminal::Pool(0)));
        assert!(RuleSet::new((0..64).map(|_| go_on()).collect()).is_ok());
        assert_eq!(
            RuleSet::new((0..65).map(|_| go_on()).collect()).unwrap_err(),
            TooMany::Edits
        );
        // rules that end the request take no bit: 64 that go on, and as
        // many as two bytes count that end it
        let both = |ends: usize| {
            RuleSet::new(
                (0..64)
                    .map(|_| go_on())
                    .chain((0..ends).map(|_| end()))
                    .collect(),
            )
        };
        assert!(both(MAX_LAST_EDIT_RULES).is_ok());
        assert_eq!(
            both(MAX_LAST_EDIT_RULES + 1).unwrap_err(),
            TooMany::LastEdits
        );
        // (what a request keeps of them is no larger for it)
        assert!(std::mem::size_of::<Applied>() <= 24);
    }

    /// The edits of the rule that ends a request apply after those of the
    /// rules before it that went on, whichever of many such rules it is,
    /// in request and response edits alike; a request that no rule ends
    /// gets only the others'.
    #[test]
    fn the_edits_of_the_rule_that_ends_a_request_apply_last() {
        let set = |n: &'static str, v: String| Edits {
            set: vec![(
                HeaderName::from_static(n),
                HeaderValue::try_from(v).unwrap(),
            )],
            response_set: vec![(
                HeaderName::from_static("x-r"),
                HeaderValue::from_static("end"),
            )],
            ..Default::default()
        };
        let before = Edits {
            set: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("before"),
            )],
            add: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("before"),
            )],
            response_set: vec![(
                HeaderName::from_static("x-r"),
                HeaderValue::from_static("before"),
            )],
            ..Default::default()
        };
        let hosts: Vec<&'static str> = (0..200)
            .map(|i| &*Box::leak(format!("h{i}.test").into_boxed_str()))
            .collect();
        let mut rules = vec![Rule::new(Match::default(), None, before)];
        for (i, h) in hosts.iter().enumerate() {
            // (the first hundred a run, looked up; then every other with a
            // method too, so that they are walked)
            let m = Match {
                host: Some(HostMatch::parse(h).unwrap()),
                methods: if i >= 100 && i % 2 == 0 {
                    vec!["GET".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            let e = if i % 2 == 0 {
                let mut e = set("x-a", format!("end{i}"));
                e.del.push(HeaderName::from_static("x-b"));
                e
            } else {
                set("x-c", format!("end{i}"))
            };
            rules.push(Rule::new(m, Some(Terminal::Pool(i)), e));
        }
        let rules = RuleSet::new(rules).unwrap();
        assert_eq!(
            rules.runs.first().map(|r| (r.start, r.end())),
            Some((1, 101))
        );
        for (i, h) in hosts.iter().enumerate() {
            let Outcome::Terminal(Terminal::Pool(p), applied, _) =
                rules.evaluate(&req("GET", h, "/"))
            else {
                panic!("{h}")
            };
            assert_eq!(*p, i);
            let mut head = http::HeaderMap::new();
            rules.edit_request(applied, &mut head);
            let lines: Vec<_> = rules
                .request_additions(applied)
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
                .collect();
            if i % 2 == 0 {
                assert_eq!(head["x-a"], format!("end{i}").as_str(), "{h}");
                assert!(head.get("x-b").is_none(), "{h}");
                assert!(rules.drops_request_header(applied, "x-b"));
                assert_eq!(lines, [format!("x-a=end{i}")], "{h}");
            } else {
                assert_eq!(head["x-a"], "before", "{h}");
                assert_eq!(head["x-c"], format!("end{i}").as_str(), "{h}");
                assert_eq!(
                    lines,
                    ["x-a=before", "x-b=before", &format!("x-c=end{i}")],
                    "{h}"
                );
            }
            let mut answer = http::HeaderMap::new();
            rules.edit_response(applied, &mut answer);
            assert_eq!(answer["x-r"], "end", "{h}");
            let sets: Vec<_> = rules
                .response_additions(applied)
                .map(|(_, v)| v.to_str().unwrap())
                .collect();
            assert_eq!(sets, ["end"], "{h}");
        }
        let Outcome::Continue(applied, _) = rules.evaluate(&req("GET", "other", "/")) else {
            panic!()
        };
        let mut head = http::HeaderMap::new();
        rules.edit_request(applied, &mut head);
        assert_eq!(head["x-a"], "before");
        assert!(head.get("x-c").is_none());
    }

    fn rewrite(m: Match, w: PathRewrite, terminal: Option<Terminal>) -> Rule {
        Rule::new(
            m,
            terminal,
            Edits {
                rewrite: Some(w),
                ..Default::default()
            },
        )
    }

    fn prefix(p: &str) -> Match {
        Match {
            path_prefix: Some(p.into()),
            ..Default::default()
        }
    }

    fn target_of(o: &Outcome<'_>) -> Option<String> {
        match o {
            Outcome::Continue(_, w) | Outcome::Terminal(_, _, w) => {
                w.as_ref().map(|w| w.target.clone())
            }
        }
    }

    #[test]
    fn a_prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let set = RuleSet::new(vec![rewrite(
            prefix("/api/"),
            PathRewrite::Prefix("/".into()),
            Some(Terminal::Pool(1)),
        )])
        .unwrap();
        let o = set.evaluate(&req("GET", "a", "/api/users/7?x=1&y"));
        assert!(matches!(o, Outcome::Terminal(Terminal::Pool(1), ..)));
        assert_eq!(target_of(&o).as_deref(), Some("/users/7?x=1&y"));
        // nginx's `location /api { proxy_pass http://b/; }` sends `//x`:
        // rampart merges the slashes, as it matches a client's
        let set = RuleSet::new(vec![rewrite(
            prefix("/api"),
            PathRewrite::Prefix("/".into()),
            None,
        )])
        .unwrap();
        let o = set.evaluate(&req("GET", "a", "/api/x"));
        assert_eq!(target_of(&o).as_deref(), Some("/x"));
        // an exact path is its own prefix
        let exact = Match {
            path: Some("/old".into()),
            ..Default::default()
        };
        let set = RuleSet::new(vec![rewrite(
            exact,
            PathRewrite::Prefix("/new".into()),
            None,
        )])
        .unwrap();
        let o = set.evaluate(&req("GET", "a", "/old?q"));
        assert_eq!(target_of(&o).as_deref(), Some("/new?q"));
        let o = set.evaluate(&req("GET", "a", "/older"));
        assert_eq!(target_of(&o), None, "not matched, not rewritten");
    }

    #[test]
    fn a_rewrite_works_on_the_decoded_path_and_encodes_what_it_sends() {
        struct Norm(Req, &'static str);
        impl RequestView for Norm {
            fn method(&self) -> &str {
                self.0.method()
            }
            fn host(&self) -> Option<&str> {
                self.0.host()
            }
            fn target(&self) -> &str {
                self.0.target()
            }
            fn header(&self, name: &str) -> Option<&[u8]> {
                self.0.header(name)
            }
            fn src(&self) -> IpAddr {
                self.0.src()
            }
            fn path(&self) -> &str {
                self.1
            }
        }
        let set = RuleSet::new(vec![rewrite(
            prefix("/api/"),
            PathRewrite::Prefix("/v2/".into()),
            None,
        )])
        .unwrap();
        // `/%61pi/a%20b%3Fc%25` as the front ends normalize it
        let r = Norm(req("GET", "a", "/%61pi/a%20b%3Fc%25?q=%20"), "/api/a b?c%");
        let o = set.evaluate(&r);
        assert_eq!(target_of(&o).as_deref(), Some("/v2/a%20b%3Fc%25?q=%20"));
        let mut out = String::new();
        encode_path("/é#\u{7f}~!$&'()*+,;=:@", &mut out);
        assert_eq!(out, "/%C3%A9%23%7F~!$&'()*+,;=:@");
    }

    #[test]
    fn later_rules_and_routes_see_the_rewritten_path_and_a_later_rewrite_wins() {
        let re = |r: &str, to: &str| PathRewrite::Regex {
            re: regex::Regex::new(r).unwrap(),
            to: to.into(),
        };
        let set = RuleSet::new(vec![
            rewrite(Match::default(), re("^/zpi/(.*)$", "/api/$1"), None),
            // sees the rewritten path
            rewrite(prefix("/api/"), PathRewrite::Prefix("/v1/".into()), None),
            Rule::new(
                prefix("/v1/admin"),
                Some(Terminal::Pool(2)),
                Edits::default(),
            ),
        ])
        .unwrap();
        let o = set.evaluate(&req("GET", "a", "/zpi/admin/x?k=v"));
        assert!(
            matches!(o, Outcome::Terminal(Terminal::Pool(2), ..)),
            "{o:?}"
        );
        assert_eq!(target_of(&o).as_deref(), Some("/v1/admin/x?k=v"));
        let o = set.evaluate(&req("GET", "a", "/zpi/users"));
        let Outcome::Continue(_, Some(w)) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(
            (w.path.as_str(), w.target.as_str()),
            ("/v1/users", "/v1/users")
        );
        // a regex that does not match leaves the path alone
        let o = set.evaluate(&req("GET", "a", "/other"));
        assert_eq!(target_of(&o), None);
        // a result without a leading slash gets one
        let set =
            RuleSet::new(vec![rewrite(Match::default(), re("^/x/(.*)", "$1"), None)]).unwrap();
        assert_eq!(
            target_of(&set.evaluate(&req("GET", "a", "/x/y"))).as_deref(),
            Some("/y")
        );
        // what a rewrite makes of dots and slashes is resolved, as a
        // client's path is: the server and the later rules see one path
        let set = RuleSet::new(vec![rewrite(
            prefix("/api"),
            PathRewrite::Prefix("/".into()),
            None,
        )])
        .unwrap();
        for (sent, want) in [
            ("/api../secret?q", "/secret?q"),
            ("/api./x", "/x"),
            ("/api/evil.example/x", "/evil.example/x"),
            ("/api..;/x/", "/x/"),
            ("/api", "/"),
        ] {
            assert_eq!(
                target_of(&set.evaluate(&req("GET", "a", sent))).as_deref(),
                Some(want),
                "{sent}"
            );
        }
        // `*` is not a path; nor is a path that was not UTF-8 rewritten
        let set =
            RuleSet::new(vec![rewrite(Match::default(), re("(.*)", "/app$1"), None)]).unwrap();
        assert_eq!(target_of(&set.evaluate(&req("OPTIONS", "a", "*"))), None);
        assert_eq!(
            target_of(&set.evaluate(&req("GET", "a", "/caf\u{FFFD}"))),
            None
        );
        // the whole path becomes `to`, not only the part matched
        let set = RuleSet::new(vec![rewrite(Match::default(), re("/foo", "/bar"), None)]).unwrap();
        assert_eq!(
            target_of(&set.evaluate(&req("GET", "a", "/x/foo/y?q"))).as_deref(),
            Some("/bar?q")
        );
    }

    #[test]
    fn a_redirect_after_a_rewrite_renders_the_new_path() {
        let set = RuleSet::new(vec![
            rewrite(prefix("/old/"), PathRewrite::Prefix("/new/".into()), None),
            Rule::new(
                Match::default(),
                Some(Terminal::Redirect {
                    status: StatusCode::MOVED_PERMANENTLY,
                    to: Template::parse("https://{host}{path}{query}").unwrap(),
                }),
                Edits::default(),
            ),
        ])
        .unwrap();
        let r = req("GET", "a", "/old/p?q");
        let o = set.evaluate(&r);
        let Outcome::Terminal(Terminal::Redirect { to, .. }, _, Some(w)) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(
            to.render(&RewrittenView { inner: &r, rw: w }),
            "https://a/new/p?q"
        );
    }

    /// A long run of rules that test only the host and the path (its prefix
    /// or whole) is looked up (`Only::Run`, by the router's index): every request gets
    /// the rule, the edits and the path that walking the rules in order
    /// gives it, with hosts exact, wildcard, upper-case, with a port or the
    /// root's dot, empty, not ASCII, longer than the index looks up, or
    /// none; runs broken by rules that do not fit (each way a rule can), and
    /// rules in runs that do more than end the request.
    #[test]
    fn runs_of_host_and_path_rules_answer_as_the_walk_does() {
        let hosts = [
            "a.example.com",
            "b.example.com",
            "*.example.com",
            "mail.*",
            "c.test",
            "*.c.test",
            "x.a.example.com",
            "*.com",
            "a.*",
        ];
        // (no "/": it would take every request that reaches its run)
        let prefixes = ["/a", "/a/", "/api/", "/b/c", "/static/", "/zz"];
        let long: &'static str =
            Box::leak(format!("{}a.example.com", "x.".repeat(150)).into_boxed_str());
        let req_hosts = [
            Some("a.example.com"),
            Some("A.Example.COM:8080"),
            Some("x.a.example.com"),
            Some("mail.x.org"),
            Some("c.test."),
            Some("d.c.test"),
            Some("example.com"),
            Some("[::1]:80"),
            Some(""),
            Some("é.example.com"),
            Some(long),
            Some("zz.org"),
            None,
        ];
        let paths = ["/", "/a", "/a/b", "/api/v1", "/static/x", "/b/c/d", "/q"];
        let nope = regex::Regex::new("^/nope$").unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut indexed, mut at_start, mut at_end, mut past) = (0, 0, 0, 0);
        for case in 0..300 {
            let n = 10 + rand(80);
            let mut rules = Vec::new();
            for i in 0..n {
                // (a rule without a condition is rare: it would decide every
                // request that reaches its run)
                let none = rand(40) == 0;
                let host = !none && rand(3) > 0;
                // (a path's prefix, or a whole path, or with a host neither)
                let on_path = !none && (!host || rand(2) > 0);
                let whole = on_path && rand(3) == 0;
                let m = Match {
                    host: host.then(|| HostMatch::parse(hosts[rand(hosts.len())]).unwrap()),
                    path_prefix: (on_path && !whole)
                        .then(|| prefixes[rand(prefixes.len())].to_string()),
                    path: whole.then(|| paths[rand(paths.len())].to_string()),
                    ..Default::default()
                };
                let pool = Some(Terminal::Pool(i));
                let mut rule = Rule::new(m.clone(), pool.clone(), Edits::default());
                match rand(120) {
                    // each way a rule breaks a run: it goes on after an
                    // edit, it has another condition, `not`, it does nothing
                    0 => {
                        rule.terminal = None;
                        rule.edits.set = vec![(
                            HeaderName::from_static("x-seen"),
                            HeaderValue::from_static("1"),
                        )];
                    }
                    // (never the requests' method: in a run, it would match)
                    1 => rule.matcher.methods = vec!["POST".into()],
                    2 => rule.matcher.not = true,
                    3 => rule.terminal = None,
                    // a rewrite that goes on (then the rules after it see
                    // the new path)
                    4 if m.path_prefix.is_some() => {
                        rule.terminal = None;
                        rule.edits.rewrite = Some(PathRewrite::Prefix("/a/".into()));
                    }
                    // conditions a run does not look up (that this traffic
                    // never meets: in a run, the rule would match)
                    11 => rule.matcher.header = Some(("x-none".into(), HeaderCond::Present(true))),
                    12 => rule.matcher.src = vec![Cidr::parse("192.0.2.0/24").unwrap()],
                    // (a prefix and a whole path both: "/q" has none of
                    // the prefixes, so the rule never matches)
                    13 if m.path_prefix.is_some() => rule.matcher.path = Some("/q".into()),
                    14 => rule.matcher.path_regex = Some(nope.clone()),
                    // what a rule that ends the request may do besides, in a
                    // run as well
                    5 => rule.writes = Some(false),
                    6 => rule.rate_limit = Some(0),
                    7 => rule.priority = Some(Priority::High),
                    8 => rule.max_body = Some(10),
                    9 => {
                        rule.edits.set = vec![(
                            HeaderName::from_static("x-end"),
                            HeaderValue::from_static("1"),
                        )]
                    }
                    10 if m.path_prefix.is_some() => {
                        rule.edits.rewrite = Some(PathRewrite::Prefix("/b/".into()));
                    }
                    _ => {}
                }
                rules.push(rule);
            }
            let set = RuleSet::new(rules).unwrap();
            indexed += set.runs.len();
            at_start += set.runs.iter().filter(|r| r.start == 0).count();
            at_end += set.runs.iter().filter(|r| r.end() == n).count();
            let mut walk = set.clone();
            for r in &mut walk.rules {
                r.only = r.matcher.only();
            }
            walk.runs.clear();
            for host in req_hosts {
                for path in paths {
                    let r = Req {
                        method: "GET",
                        host,
                        target: path,
                        headers: vec![],
                        src: "10.1.2.3".parse().unwrap(),
                    };
                    let seen = |o: Outcome<'_>| match o {
                        Outcome::Terminal(t, a, w) => (Some(t.clone()), a, w.map(|w| w.path)),
                        Outcome::Continue(a, w) => (None, a, w.map(|w| w.path)),
                    };
                    let (got, want) = (seen(set.evaluate(&r)), seen(walk.evaluate(&r)));
                    // went past a whole run before what decided it
                    let decided = match &want.0 {
                        Some(Terminal::Pool(i)) => *i,
                        _ => n,
                    };
                    past += usize::from(set.runs.iter().any(|run| run.end() <= decided));
                    assert_eq!(got, want, "case {case}: {host:?} {path}");
                }
            }
        }
        assert!(indexed > 100, "only {indexed} runs were indexed");
        assert!(
            at_start > 10 && at_end > 10,
            "runs at the start {at_start}, at the end {at_end}"
        );
        assert!(past > 500, "only {past} requests went past a run");
    }
}
