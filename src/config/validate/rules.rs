//! `[[listener.rule]]`: checked and compiled when the config is read, so a bad
//! rule is refused with its key and line named and a running proxy keeps the
//! rules it has.

use crate::config::file::{DenyFile, Replaces, RuleFile};
use crate::config::problems::{KeyPath, Problems};
use crate::router::HostMatch;
use crate::rules::{
    Edits, HeaderCond, HeaderReplace, Match, PathRewrite, Rule, RuleSet, Template, Terminal,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;

/// Fields that frame the message or belong to one hop: rampart writes them.
pub(super) const NOT_EDITABLE: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn header_name(s: &str, at: &KeyPath, p: &mut Problems<'_>) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(n) if NOT_EDITABLE.contains(&n.as_str()) => {
            p.add(
                at,
                format!(
                    "{s:?} frames the message or belongs to one hop: rampart sets it, rules cannot"
                ),
            );
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            p.add(at, format!("{s:?} is not a valid header name"));
            None
        }
    }
}

/// Fields of a request that rampart writes itself: a rule's edit of them
/// would never reach the server.
pub(super) const REQUEST_RAMPARTS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// A request field a rule may not edit (`del`: the edit removes it), and why.
/// Deleting X-Forwarded-For is an edit that stands: the client's chain is
/// dropped before rampart appends the client's address (an edge proxy that
/// trusts no earlier hop).
fn request_only(name: &HeaderName, del: bool) -> Option<&'static str> {
    if del && name == http::header::HOST {
        return Some(
            "an HTTP/1.1 request needs a Host (RFC 9112 3.2): give it another value with set_header instead",
        );
    }
    if del && name.as_str() == "x-forwarded-for" {
        return None;
    }
    REQUEST_RAMPARTS.contains(&name.as_str()).then_some(
        "rampart writes X-Forwarded-For/-Proto/-Host itself (and drops a client's Forwarded): a rule's edit would not reach the server (only deleting X-Forwarded-For does something: it drops the client's chain)",
    )
}

fn header_pairs(
    map: &std::collections::BTreeMap<String, String>,
    at: &KeyPath,
    request: bool,
    p: &mut Problems<'_>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(map.len());
    for (n, v) in map {
        let Some(name) = header_name(n, at, p) else {
            continue;
        };
        if let Some(why) = request.then(|| request_only(&name, false)).flatten() {
            p.add(at, format!("{n:?}: {why}"));
            continue;
        }
        match HeaderValue::from_str(v) {
            Ok(v) => out.push((name, v)),
            Err(_) => p.add(at, format!("{v:?} is not a valid value for {n:?}")),
        }
    }
    out
}

fn header_names(
    list: &[String],
    rule: &KeyPath,
    key: &'static str,
    p: &mut Problems<'_>,
) -> Vec<HeaderName> {
    list.iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let at = rule.index(key, i);
            let name = header_name(n, &at, p)?;
            if key == "del_header" {
                if let Some(why) = request_only(&name, true) {
                    p.add(&at, format!("{n:?}: {why}"));
                    return None;
                }
            }
            Some(name)
        })
        .collect()
}

/// A rule's `rewrite_prefix` or `rewrite_path`, checked.
fn rewrite(f: &RuleFile, rat: &KeyPath, p: &mut Problems<'_>) -> Option<PathRewrite> {
    // the new path is written as rules match paths (decoded) and encoded
    // when sent; the query is the client's
    let text = |at: &KeyPath, v: &str, p: &mut Problems<'_>| {
        if let Some(c) = v
            .chars()
            .find(|c| matches!(c, '?' | '#' | '%') || c.is_control())
        {
            p.add(
                at,
                format!(
                    "{c:?} in {v:?}: write the path decoded (rampart encodes it for the server); the query stays the client's"
                ),
            );
            return false;
        }
        true
    };
    match (&f.rewrite_prefix, &f.rewrite_path) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            p.add(rat, "give rewrite_prefix or rewrite_path, not both");
            None
        }
        (Some(to), None) => {
            let at = rat.key("rewrite_prefix");
            if f.path_prefix.is_none() && f.path.is_none() {
                p.add(
                    &at,
                    "replaces the rule's path_prefix (or path): give one, or use rewrite_path",
                );
                return None;
            }
            if f.not {
                p.add(
                    &at,
                    "a rule with not = true matches paths without its prefix: there is nothing to replace",
                );
                return None;
            }
            if !to.starts_with('/') {
                p.add(&at, format!("must start with '/', got {to:?}"));
                return None;
            }
            text(&at, to, p).then(|| PathRewrite::Prefix(to.clone()))
        }
        (None, Some(w)) => {
            let at = rat.key("rewrite_path");
            let re = match regex::Regex::new(&w.regex) {
                Ok(r) => r,
                Err(e) => {
                    p.add(&at.key("regex"), format!("invalid regex: {e}"));
                    return None;
                }
            };
            let to_at = at.key("to");
            if !text(&to_at, &w.to, p) {
                return None;
            }
            if let Err(e) = capture_refs(&re, &w.to) {
                p.add(&to_at, e);
                return None;
            }
            Some(PathRewrite::Regex {
                re,
                to: w.to.clone(),
            })
        }
    }
}

/// A rule's `response_replace_header`, checked.
fn replaces(f: &RuleFile, rat: &KeyPath, p: &mut Problems<'_>) -> Vec<HeaderReplace> {
    let one = matches!(f.response_replace_header, Replaces::One(_));
    let mut out = Vec::new();
    for (i, r) in f.response_replace_header.as_slice().iter().enumerate() {
        let at = if one {
            rat.key("response_replace_header")
        } else {
            rat.index("response_replace_header", i)
        };
        let Some(name) = header_name(&r.name, &at.key("name"), p) else {
            continue;
        };
        let re = match regex::Regex::new(&r.regex) {
            Ok(re) => re,
            Err(e) => {
                p.add(&at.key("regex"), format!("invalid regex: {e}"));
                continue;
            }
        };
        if let Some(c) = r.to.chars().find(|c| c.is_control() && *c != '\t') {
            p.add(
                &at.key("to"),
                format!(
                    "{c:?} in {:?}: a field value holds no control characters",
                    r.to
                ),
            );
            continue;
        }
        if let Err(e) = capture_refs(&re, &r.to) {
            p.add(&at.key("to"), e);
            continue;
        }
        out.push(HeaderReplace {
            name,
            re,
            to: r.to.clone(),
        });
    }
    out
}

/// Checks the `$1`, `${name}` references of a replacement against the
/// regex's groups: the `regex` crate writes an unknown one as nothing, and
/// reads `$1a` as the group named `1a`.
fn capture_refs(re: &regex::Regex, to: &str) -> Result<(), String> {
    let b = to.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let (name, next, braced) = match b.get(i + 1) {
            Some(b'$') => {
                i += 2;
                continue;
            }
            Some(b'{') => match to[i + 2..].find('}') {
                Some(j) => (&to[i + 2..i + 2 + j], i + 3 + j, true),
                None => return Err(format!("unclosed '${{' in {to:?}")),
            },
            _ => {
                let n = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (&to[i + 1..i + 1 + n], i + 1 + n, false)
            }
        };
        if name.is_empty() {
            return Err(format!(
                "a '$' without a group in {to:?}: write $$ for a '$'"
            ));
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|g| g == name),
        };
        if !known {
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            return Err(if !braced && digits > 0 && digits < name.len() {
                format!(
                    "${name} in {to:?} is read as the group named {name:?}: write ${{{}}}{}",
                    &name[..digits],
                    &name[digits..]
                )
            } else {
                format!("${name} in {to:?}: the regex has no such group")
            });
        }
        i = next;
    }
    Ok(())
}

/// Compiles a listener's rules; `pools` maps pool names to their index (and
/// marks the ones used).
#[allow(clippy::too_many_arguments)]
pub(super) fn compile(
    files: &[RuleFile],
    at: &KeyPath,
    pool_index: &HashMap<&str, usize>,
    limit_index: &HashMap<&str, usize>,
    used_pools: &mut [bool],
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> RuleSet {
    let before = p.list.len();
    let mut rules = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let rat = at.index("rule", i);
        let mut m = Match {
            not: f.not,
            ..Default::default()
        };
        if let Some(h) = &f.host {
            match HostMatch::parse(h) {
                Ok(h) => m.host = Some(h),
                Err(e) => p.add(&rat.key("host"), e),
            }
        }
        for (key, v) in [("path_prefix", &f.path_prefix), ("path", &f.path)] {
            if let Some(v) = v {
                if !v.starts_with('/') {
                    p.add(&rat.key(key), format!("must start with '/', got {v:?}"));
                }
            }
        }
        m.path_prefix = f.path_prefix.clone();
        m.path = f.path.clone();
        if let Some(re) = &f.path_regex {
            match regex::Regex::new(re) {
                Ok(r) => m.path_regex = Some(r),
                Err(e) => p.add(&rat.key("path_regex"), format!("invalid regex: {e}")),
            }
        }
        for (j, meth) in f.method.iter().enumerate() {
            let up = meth.to_ascii_uppercase();
            if http::Method::from_bytes(up.as_bytes()).is_err() {
                p.add(
                    &rat.index("method", j),
                    format!("{meth:?} is not an HTTP method"),
                );
            }
            m.methods.push(up);
        }
        if let Some(h) = &f.header {
            let hat = rat.key("header");
            let cond = match (&h.present, &h.value) {
                (Some(_), Some(_)) => {
                    p.add(&hat, "give present or value, not both");
                    None
                }
                (Some(b), None) => Some(HeaderCond::Present(*b)),
                (None, Some(v)) => Some(HeaderCond::Value(v.as_bytes().to_vec())),
                (None, None) => Some(HeaderCond::Present(true)),
            };
            match HeaderName::from_bytes(h.name.as_bytes()) {
                Ok(n) => m.header = cond.map(|c| (n.as_str().to_string(), c)),
                Err(_) => p.add(
                    &hat.key("name"),
                    format!("{:?} is not a valid header name", h.name),
                ),
            }
        }
        for (j, c) in f.src.iter().enumerate() {
            match crate::proxy_protocol::Cidr::parse(c) {
                Ok(c) => m.src.push(c),
                Err(e) => p.add(&rat.index("src", j), e),
            }
        }

        let mut terminals = Vec::new();
        if let Some(d) = &f.deny {
            let (status, body) = match d {
                DenyFile::Status(s) => (*s, None),
                DenyFile::Full(f) => (f.status, f.body.clone()),
            };
            match StatusCode::from_u16(status) {
                Ok(st) if (400..=599).contains(&status) => {
                    let body = body.unwrap_or_else(|| {
                        format!("{} {}\n", status, st.canonical_reason().unwrap_or(""))
                    });
                    terminals.push(Terminal::Deny {
                        status: st,
                        body: Bytes::from(body),
                    });
                }
                _ => p.add(
                    &rat.key("deny"),
                    format!("{status} is not an error status (400 to 599)"),
                ),
            }
        }
        if let Some(r) = &f.redirect {
            let rdat = rat.key("redirect");
            if ![301, 302, 303, 307, 308].contains(&r.status) {
                p.add(
                    &rdat.key("status"),
                    format!(
                        "{} is not a redirect status: use 301, 302, 303, 307 or 308",
                        r.status
                    ),
                );
            }
            match Template::parse(&r.to) {
                Ok(t) => terminals.push(Terminal::Redirect {
                    status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND),
                    to: t,
                }),
                Err(e) => p.add(&rdat.key("to"), e),
            }
        }
        if let Some(r) = &f.respond {
            let at = rat.key("respond");
            let status = match StatusCode::from_u16(r.status) {
                Ok(st) if (200..=599).contains(&r.status) => Some(st),
                _ => {
                    p.add(
                        &at.key("status"),
                        format!("{} is not a status to answer with (200 to 599)", r.status),
                    );
                    None
                }
            };
            if matches!(r.status, 204 | 304) && !r.body.is_empty() {
                p.add(
                    &at.key("body"),
                    format!("a {} answer has no body", r.status),
                );
            }
            let ctype = r
                .content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            let content_type = match http::HeaderValue::from_str(ctype) {
                Ok(v) if !ctype.is_empty() => Some(v),
                _ => {
                    p.add(
                        &at.key("content_type"),
                        format!("{ctype:?} is not a Content-Type value"),
                    );
                    None
                }
            };
            if let (Some(status), Some(content_type)) = (status, content_type) {
                terminals.push(Terminal::Respond {
                    status,
                    body: Bytes::from(r.body.clone()),
                    content_type,
                });
            }
        }
        if let Some(name) = &f.pool {
            match pool_index.get(name.as_str()) {
                Some(&ix) => {
                    if let Some(u) = used_pools.get_mut(ix) {
                        *u = true;
                    }
                    terminals.push(Terminal::Pool(ix));
                }
                None => p.add(&rat.key("pool"), format!("pool {name:?} is not defined")),
            }
        }
        let set_count = [
            f.deny.is_some(),
            f.redirect.is_some(),
            f.respond.is_some(),
            f.pool.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set_count > 1 {
            p.add(
                &rat,
                "deny, redirect, respond and pool each decide the request: a rule has at most one of them",
            );
        }
        let edits = Edits {
            del: header_names(&f.del_header, &rat, "del_header", p),
            set: header_pairs(&f.set_header, &rat.key("set_header"), true, p),
            add: header_pairs(&f.add_header, &rat.key("add_header"), true, p),
            response_del: header_names(&f.response_del_header, &rat, "response_del_header", p),
            response_set: header_pairs(
                &f.response_set_header,
                &rat.key("response_set_header"),
                false,
                p,
            ),
            response_replace: replaces(f, &rat, p),
            rewrite: rewrite(f, &rat, p),
        };
        let rate_limit = f.rate_limit.as_ref().and_then(|n| {
            let ix = limit_index.get(n.as_str()).copied();
            if ix.is_none() {
                p.add(
                    &rat.key("rate_limit"),
                    format!("no [[rate_limit]] is named {n:?}"),
                );
            }
            ix
        });
        let priority = f.priority.as_deref().and_then(|v| {
            let pr = crate::rules::Priority::parse(v);
            if pr.is_none() {
                p.add(
                    &rat.key("priority"),
                    format!(
                        "unknown priority {v:?}: use \"critical\", \"high\", \"normal\" or \"low\""
                    ),
                );
            }
            pr
        });
        if set_count == 0
            && f.priority.is_none()
            && f.max_request_body.is_none()
            && f.writes.is_none()
            && f.rate_limit.is_none()
            && f.del_header.is_empty()
            && f.set_header.is_empty()
            && f.add_header.is_empty()
            && f.response_del_header.is_empty()
            && f.response_set_header.is_empty()
            && f.response_replace_header.as_slice().is_empty()
            && f.rewrite_prefix.is_none()
            && f.rewrite_path.is_none()
        {
            p.add(
                &rat,
                "the rule does nothing: give deny, redirect, respond, pool, rate_limit, priority, max_request_body, writes, a header edit or a path rewrite",
            );
        }
        let mut rule = Rule::new(m, terminals.into_iter().next(), edits);
        rule.writes = f.writes;
        rule.rate_limit = rate_limit;
        rule.priority = priority;
        rule.max_body = f.max_request_body.map(|s| s.0);
        rules.push(rule);
    }
    if p.list.len() > before {
        return RuleSet::default();
    }
    match RuleSet::new(rules) {
        Ok(set) => {
            if let Some((i, dead)) = set.unreachable() {
                let later = if dead.len() == 1 {
                    format!("rule[{}] after it is", dead.start)
                } else {
                    format!("rules [{}] to [{}] after it are", dead.start, dead.end - 1)
                };
                warnings.push(format!(
                    "{}: matches every request and decides it: {later} never reached (nor are the routes)",
                    at.index("rule", i),
                ));
            }
            set
        }
        Err(too_many) => {
            p.add(at, too_many.to_string());
            RuleSet::default()
        }
    }
}

/// The read-only keys of a listener or a pool: None when `read_only_when` is
/// empty (and no other read-only key may then be given).
#[allow(clippy::too_many_arguments)]
pub(super) fn read_only(
    when: &[String],
    status: Option<u16>,
    message: Option<&str>,
    retry_after: Option<std::time::Duration>,
    at: &KeyPath,
    pool_names: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> Option<crate::rules::ReadOnly> {
    if when.is_empty() {
        for (key, set) in [
            ("read_only_status", status.is_some()),
            ("read_only_message", message.is_some()),
            ("read_only_retry_after", retry_after.is_some()),
        ] {
            if set {
                p.add(&at.key(key), "is only used with read_only_when");
            }
        }
        return None;
    }
    let before = p.list.len();
    let mut pools = Vec::with_capacity(when.len());
    for (i, w) in when.iter().enumerate() {
        match w.strip_prefix("pool:") {
            Some(name) => match pool_names.get(name) {
                Some(&ix) => pools.push(ix),
                None => p.add(
                    &at.index("read_only_when", i),
                    format!("pool {name:?} is not defined"),
                ),
            },
            None => p.add(
                &at.index("read_only_when", i),
                format!(
                    "{w:?}: write \"pool:NAME\" (read-only while that pool has no eligible server)"
                ),
            ),
        }
    }
    let status = match status {
        None => StatusCode::SERVICE_UNAVAILABLE,
        Some(s) => match StatusCode::from_u16(s) {
            Ok(st) if (400..=599).contains(&s) => st,
            _ => {
                p.add(
                    &at.key("read_only_status"),
                    format!("{s} is not an error status (400 to 599)"),
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
        },
    };
    let body = match message {
        Some(m) => {
            let mut m = m.to_string();
            if !m.ends_with('\n') {
                m.push('\n');
            }
            Bytes::from(m)
        }
        None => Bytes::from_static(crate::rules::DEFAULT_READ_ONLY_MESSAGE.as_bytes()),
    };
    (p.list.len() == before).then(|| crate::rules::ReadOnly {
        when: pools,
        status,
        body,
        retry_after: retry_after.map_or(30, |d| d.as_secs().max(1)),
    })
}

/// `[[rate_limit]]` entries, checked.
pub(super) fn rate_limits(
    files: &[crate::config::file::RateLimitFile],
    tier_files: &[crate::config::file::TierFile],
    base: &std::path::Path,
    root: &KeyPath,
    p: &mut Problems<'_>,
) -> Vec<crate::config::limits::RateLimitConfig> {
    use crate::config::limits::{KeyPart, RateLimitConfig};
    let tiers = tiers(tier_files, base, root, p);
    let mut out: Vec<RateLimitConfig> = Vec::with_capacity(files.len());
    if files.len() > crate::rules::MAX_RATE_LIMITS {
        p.add(
            &root.key("rate_limit"),
            format!("at most {} rate limits", crate::rules::MAX_RATE_LIMITS),
        );
    }
    for (i, f) in files.iter().enumerate() {
        let at = root.index("rate_limit", i);
        if f.name.trim().is_empty() {
            p.add(&at.key("name"), "must not be empty");
        } else if out.iter().any(|o| o.name == f.name) {
            p.add(&at.key("name"), format!("{:?} is defined twice", f.name));
        }
        let keys: Vec<&String> = match &f.key {
            crate::config::file::OneOrMany::One(k) => vec![k],
            crate::config::file::OneOrMany::Many(ks) => ks.iter().collect(),
        };
        let mut key = Vec::new();
        for k in keys {
            match k.as_str() {
                "client_ip" => key.push(KeyPart::ClientIp),
                "path" => key.push(KeyPart::Path),
                "all" => key.push(KeyPart::All),
                "tier" => {
                    if tier_files.is_empty() {
                        p.add(&at.key("key"), "\"tier\" needs [[tier]] entries");
                    }
                    key.push(KeyPart::Tier)
                }
                h if h.starts_with("header:") => {
                    match HeaderName::from_bytes(&h.as_bytes()["header:".len()..]) {
                        Ok(n) => key.push(KeyPart::Header(n.as_str().to_string())),
                        Err(_) => p.add(&at.key("key"), format!("{h:?}: not a header name")),
                    }
                }
                other => p.add(
                    &at.key("key"),
                    format!("unknown key {other:?}: use \"client_ip\", \"header:NAME\", \"path\", \"tier\", \"all\" or a list of them"),
                ),
            }
        }
        if key.is_empty() {
            p.add(&at.key("key"), "give at least one key part");
        }
        let parse = |text: &str, units: &[(&str, u64)]| -> Option<(u64, std::time::Duration)> {
            let (n, u) = text.split_once('/')?;
            let n: u64 = n.trim().parse().ok()?;
            let secs = units.iter().find(|(name, _)| *name == u.trim())?.1;
            (n > 0 && n <= 1_000_000_000).then_some((n, std::time::Duration::from_secs(secs)))
        };
        let rate = match &f.rate {
            None => None,
            Some(r) => {
                let v = parse(
                    r,
                    &[
                        ("s", 1),
                        ("sec", 1),
                        ("second", 1),
                        ("m", 60),
                        ("min", 60),
                        ("minute", 60),
                        ("h", 3600),
                        ("hour", 3600),
                    ],
                );
                if v.is_none() {
                    p.add(
                        &at.key("rate"),
                        format!("{r:?}: write requests per second, minute or hour, e.g. \"100/s\", \"6000/m\""),
                    );
                }
                v
            }
        };
        let quota = match &f.quota {
            None => None,
            Some(q) => {
                let v = parse(
                    q,
                    &[("day", 86_400), ("d", 86_400), ("hour", 3600), ("h", 3600)],
                );
                if v.is_none() {
                    p.add(
                        &at.key("quota"),
                        format!("{q:?}: write requests per UTC day or hour, e.g. \"100/day\""),
                    );
                }
                v
            }
        };
        if f.burst > 0 && f.rate.is_none() {
            p.add(&at.key("burst"), BURST_WITHOUT_RATE);
        }
        let tiered = key.contains(&KeyPart::Tier);
        if f.rate.is_none() && f.quota.is_none() && !tiered {
            p.add(&at, "give rate, quota or both");
            continue;
        }
        if f.max_keys < 16 {
            p.add(&at.key("max_keys"), "must be at least 16");
        }
        if !(1..=128).contains(&f.ipv6_prefix) {
            p.add(
                &at.key("ipv6_prefix"),
                "the bits of an IPv6 client address that make its key: 1 to 128 (64: a client's /64; 128: each address)",
            );
        }
        out.push(RateLimitConfig {
            name: f.name.clone(),
            tiers: if tiered { tiers.clone() } else { Vec::new() },
            key,
            rate,
            burst: f.burst,
            quota,
            max_keys: f.max_keys,
            ipv6_prefix: f.ipv6_prefix,
        });
    }
    out
}

/// A burst is what a rate lets through at once; without a rate it would be
/// silently ignored.
const BURST_WITHOUT_RATE: &str =
    "burst is used only with rate (requests at once above the steady rate); give rate, or remove burst (a quota counts every request)";

/// Parses "N/unit" with the given units (seconds each).
fn per(text: &str, units: &[(&str, u64)]) -> Option<(u64, std::time::Duration)> {
    let (n, u) = text.split_once('/')?;
    let n: u64 = n.trim().parse().ok()?;
    let secs = units.iter().find(|(name, _)| *name == u.trim())?.1;
    (n > 0 && n <= 1_000_000_000).then_some((n, std::time::Duration::from_secs(secs)))
}

const RATE_UNITS: &[(&str, u64)] = &[
    ("s", 1),
    ("sec", 1),
    ("second", 1),
    ("m", 60),
    ("min", 60),
    ("minute", 60),
    ("h", 3600),
    ("hour", 3600),
];
const QUOTA_UNITS: &[(&str, u64)] = &[("day", 86_400), ("d", 86_400), ("hour", 3600), ("h", 3600)];

/// `[[tier]]` entries, their key files read (relative to the config's folder).
fn tiers(
    files: &[crate::config::file::TierFile],
    base: &std::path::Path,
    root: &KeyPath,
    p: &mut Problems<'_>,
) -> Vec<crate::config::limits::Tier> {
    let mut out: Vec<crate::config::limits::Tier> = Vec::new();
    for (i, t) in files.iter().enumerate() {
        let at = root.index("tier", i);
        if t.name.trim().is_empty() || t.name.contains(':') {
            p.add(&at.key("name"), "must be a non-empty name without ':'");
        } else if out.iter().any(|o| o.name == t.name) {
            p.add(&at.key("name"), format!("{:?} is defined twice", t.name));
        }
        let mat = at.key("match");
        let header = match HeaderName::from_bytes(t.matcher.header.as_bytes()) {
            Ok(h) => h.as_str().to_string(),
            Err(_) => {
                p.add(
                    &mat.key("header"),
                    format!("{:?} is not a header name", t.matcher.header),
                );
                continue;
            }
        };
        let mut values: std::collections::HashSet<Vec<u8>> = t
            .matcher
            .values
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        if let Some(f) = &t.matcher.keys_file {
            let path = if std::path::Path::new(f).is_absolute() {
                std::path::PathBuf::from(f)
            } else {
                base.join(f)
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => values.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| l.as_bytes().to_vec()),
                ),
                Err(e) => p.add(&mat.key("keys_file"), format!("{}: {e}", path.display())),
            }
        }
        if values.is_empty() && t.matcher.keys_file.is_none() {
            p.add(&mat, "give values or keys_file: who is in the tier");
        }
        let rate = t.rate.as_deref().and_then(|r| {
            let v = per(r, RATE_UNITS);
            if v.is_none() {
                p.add(&at.key("rate"), format!("{r:?}: e.g. \"10/s\", \"600/m\""));
            }
            v
        });
        let quota = t.quota.as_deref().and_then(|q| {
            let v = per(q, QUOTA_UNITS);
            if v.is_none() {
                p.add(&at.key("quota"), format!("{q:?}: e.g. \"100/day\""));
            }
            v
        });
        if t.burst > 0 && t.rate.is_none() {
            p.add(&at.key("burst"), BURST_WITHOUT_RATE);
        }
        out.push(crate::config::limits::Tier {
            name: t.name.clone(),
            header,
            values,
            rate,
            burst: t.burst,
            quota,
        });
    }
    out
}

/// `[rate_limit_store]`, checked (the URL is parsed, nothing is connected).
pub(super) fn rate_limit_store(
    f: &crate::config::file::RateLimitStoreFile,
    at: &KeyPath,
    p: &mut Problems<'_>,
) -> Option<crate::config::limits::StoreConfig> {
    let before = p.list.len();
    if !matches!(f.kind.as_str(), "redis" | "valkey") {
        p.add(
            &at.key("kind"),
            format!("unknown kind {:?}: use \"redis\" (Valkey included)", f.kind),
        );
    }
    let client = match redis::Client::open(f.url.as_str()) {
        Ok(c) => Some(c),
        Err(e) => {
            p.add(
                &at.key("url"),
                format!("{e}: write redis://[:password@]host:port[/db]"),
            );
            None
        }
    };
    let iv = f.sync_interval.0;
    if iv < std::time::Duration::from_millis(10) || iv > std::time::Duration::from_secs(10) {
        p.add(&at.key("sync_interval"), "must be from 10ms to 10s");
    }
    if !(0.01..=1.0).contains(&f.fallback_share) {
        p.add(
            &at.key("fallback_share"),
            "must be from 0.01 to 1 (the share of each limit one node enforces alone)",
        );
    }
    if f.key_prefix.contains(char::is_whitespace) {
        p.add(&at.key("key_prefix"), "must not contain whitespace");
    }
    let client = client?;
    (p.list.len() == before).then(|| crate::config::limits::StoreConfig {
        url: f.url.clone(),
        client,
        sync_interval: iv,
        fallback_share: f.fallback_share,
        key_prefix: f.key_prefix.clone(),
    })
}
