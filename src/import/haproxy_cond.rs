//! HAProxy ACLs and `if`/`unless` conditions → the match keys of rampart rules.
//!
//! A condition becomes a list of alternatives (rules with the same action, one
//! per alternative: rampart ANDs a rule's matches, and a list of rules ORs
//! them). Keys starting with `__` are the importer's own markers, resolved
//! before the config is written:
//! - `__tls` = "true"/"false": `ssl_fc`, decided per listener (TLS or plain);
//! - `__rate_gt` (and `__rate_table`): a tracked `http_req_rate` compared
//!   with a number, which becomes a `[[rate_limit]]`;
//! - `__sni_found`: `req.ssl_sni -m found`, a ClientHello with a server name
//!   (its negation is the route `sni = ""`);
//! - `__hello`: `req.ssl_hello_type 1`, a ClientHello is in (what a tcp
//!   frontend that routes by SNI waits for).

use super::out::{list, s, Table};
use std::collections::HashMap;

/// One criterion's alternatives, and whether they are exactly HAProxy's
/// meaning (false: approximated, said in the report).
pub type Alts = Result<(Vec<Table>, bool), String>;

/// Named ACLs: the lines of one name OR together.
pub type Acls = HashMap<String, Alts>;

/// Adds an `acl NAME CRITERION [FLAGS] VALUES` line to the named ACLs.
pub fn add_acl(acls: &mut Acls, name: &str, words: &[String]) {
    let new = criterion(words);
    let merged = match (acls.remove(name), new) {
        (None, n) => n,
        (Some(Ok((mut a, ea))), Ok((b, eb))) => {
            a.extend(b);
            Ok((a, ea && eb))
        }
        (Some(Err(e)), _) | (_, Err(e)) => Err(e),
    };
    acls.insert(name.to_string(), merged);
}

fn regex_escape(v: &str) -> String {
    regex::escape(v)
}

fn one(k: &str, v: String) -> Table {
    let mut t = Table::default();
    t.set(k, v);
    t
}

/// `CRITERION [-i] [-m METHOD] [--] VALUE...` → alternatives.
pub fn criterion(words: &[String]) -> Alts {
    let Some((crit, rest)) = words.split_first() else {
        return Err("an empty condition".into());
    };
    let mut ignore_case = false;
    let mut method: Option<String> = None;
    let mut vals: Vec<String> = Vec::new();
    let mut i = 0;
    let mut flags_done = false;
    while i < rest.len() {
        let w = &rest[i];
        if !flags_done && w.starts_with('-') && w.len() > 1 {
            match w.as_str() {
                "-i" => ignore_case = true,
                "-m" => {
                    method = rest.get(i + 1).cloned();
                    i += 1;
                }
                "--" => flags_done = true,
                "-f" | "-M" => {
                    return Err(format!(
                        "{crit} {w}: ACL values from a file are not imported"
                    ))
                }
                "-n" => {}
                other => return Err(format!("the ACL flag {other} is not mapped")),
            }
        } else {
            flags_done = true;
            vals.push(w.clone());
        }
        i += 1;
    }
    let crit_l = crit.to_ascii_lowercase();
    // name(arg) → (name, arg)
    let (base, arg) = match crit_l.split_once('(') {
        Some((b, a)) => (b.to_string(), a.trim_end_matches(')').to_string()),
        None => (crit_l.clone(), String::new()),
    };
    // (`req.ssl_sni` and `req_ssl_sni` are HAProxy's; `ssl_sni` is not)
    let had_req = base.starts_with("req.");
    let base = base.strip_prefix("req.").unwrap_or(&base).to_string();
    // the match method: a suffix (path_beg) or -m
    let (fetch, suffix) = match base.rsplit_once('_') {
        Some((f, m))
            if matches!(
                m,
                "beg" | "end" | "dom" | "reg" | "sub" | "dir" | "len" | "cnt"
            ) =>
        {
            (f.to_string(), Some(m.to_string()))
        }
        _ => (base.clone(), None),
    };
    let how = method.or(suffix).unwrap_or_else(|| "str".into());
    match (fetch.as_str(), arg.as_str()) {
        ("ssl_fc", _) => Ok((vec![one("__tls", "\"true\"".into())], true)),
        ("always_true" | "true", _) => Ok((vec![Table::default()], true)),
        ("sc_http_req_rate" | "sc0_http_req_rate" | "src_http_req_rate", _) => {
            // sc_http_req_rate(0[,table]) gt N
            match (vals.first().map(String::as_str), vals.get(1)) {
                (Some("gt"), Some(n)) | (Some("ge"), Some(n)) => {
                    let n: u64 = n
                        .parse()
                        .map_err(|_| format!("{crit}: not a number: {n}"))?;
                    let n = if vals[0] == "ge" {
                        n.saturating_sub(1)
                    } else {
                        n
                    };
                    let mut t = one("__rate_gt", n.to_string());
                    if let Some((_, table)) = arg.split_once(',') {
                        t.set("__rate_table", s(table.trim()));
                    }
                    Ok((vec![t], true))
                }
                _ => Err(format!("{crit}: only \"gt N\" is mapped")),
            }
        }
        ("hdr" | "hdr_val", "host") => host_alts("host", &how, &vals, crit),
        // the server name of a ClientHello a tcp listener passes through
        ("req_ssl_sni", "") | ("ssl_sni", "") if fetch == "req_ssl_sni" || had_req => {
            if how == "found" {
                Ok((vec![one("__sni_found", "true".into())], true))
            } else {
                // HAProxy compares the text as sent unless -i; rampart
                // without case
                host_alts("sni", &how, &vals, crit).map(|(a, e)| (a, e && ignore_case))
            }
        }
        ("req_ssl_hello_type", "") | ("ssl_hello_type", "")
            if (fetch == "req_ssl_hello_type" || had_req) && vals == ["1"] =>
        {
            Ok((vec![one("__hello", "true".into())], true))
        }
        ("path", "") => path_alts(&how, &vals, ignore_case, crit),
        ("method", "") => {
            if how != "str" {
                return Err(format!("{crit} -m {how} is not mapped"));
            }
            if vals.is_empty() {
                return Err("method without values".into());
            }
            let ms: Vec<String> = vals.iter().map(|m| m.to_ascii_uppercase()).collect();
            Ok((vec![one("method", list(&ms))], true))
        }
        ("src", "") => {
            if vals.is_empty() {
                return Err("src without values".into());
            }
            for v in &vals {
                let ok = match v.split_once('/') {
                    Some((a, p)) => {
                        a.parse::<std::net::IpAddr>().is_ok() && p.parse::<u8>().is_ok()
                    }
                    None => v.parse::<std::net::IpAddr>().is_ok(),
                };
                if !ok {
                    return Err(format!("src {v}: not an address or CIDR"));
                }
            }
            Ok((vec![one("src", list(&vals))], true))
        }
        ("hdr", name) if !name.is_empty() => {
            let name = name.split(',').next().unwrap_or(name);
            match how.as_str() {
                "found" => Ok((
                    vec![one(
                        "header",
                        format!("{{ name = {}, present = true }}", s(name)),
                    )],
                    true,
                )),
                "str" if !vals.is_empty() => Ok((
                    vals.iter()
                        .map(|v| {
                            one(
                                "header",
                                format!("{{ name = {}, value = {} }}", s(name), s(v)),
                            )
                        })
                        .collect(),
                    // rampart compares the first value exactly
                    !ignore_case,
                )),
                _ => Err(format!("{crit} -m {how} is not mapped")),
            }
        }
        _ => Err(format!("the ACL criterion {crit} is not mapped")),
    }
}

/// Host (or SNI: `key`) patterns of an ACL's values.
fn host_alts(key: &str, how: &str, vals: &[String], crit: &str) -> Alts {
    if vals.is_empty() {
        return Err(format!("{crit} without values"));
    }
    let mut out = Vec::new();
    let mut exact = true;
    for v in vals {
        // HAProxy compares the whole header, port included; rampart's host
        // match ignores the port
        let (host, had_port) = match v.rsplit_once(':') {
            Some((h, p)) if key == "host" && p.parse::<u16>().is_ok() && !h.contains(':') => {
                (h.to_string(), true)
            }
            _ => (v.clone(), false),
        };
        if had_port {
            exact = false;
        }
        match how {
            "str" => out.push(one(key, s(&host))),
            "end" if host.starts_with('.') && host.len() > 1 => {
                out.push(one(key, s(&format!("*{host}"))))
            }
            "dom" => {
                // a dot-delimited part: the name itself, or any name under it
                exact = false;
                out.push(one(key, s(&host)));
                out.push(one(key, s(&format!("*.{host}"))));
            }
            // "mail." starts every name under it: "mail.*", as nginx writes it
            "beg"
                if host.ends_with('.')
                    && crate::router::HostMatch::parse(&format!("{host}*")).is_ok() =>
            {
                out.push(one(key, s(&format!("{host}*"))))
            }
            "reg" | "beg" | "end" | "sub" => {
                return Err(format!(
                "{crit} -m {how}: rampart matches {key}s exactly, by \"*.domain\" or by \"name.*\""
            ))
            }
            other => return Err(format!("{crit} -m {other} is not mapped")),
        }
    }
    Ok((out, exact))
}

fn path_alts(how: &str, vals: &[String], ignore_case: bool, crit: &str) -> Alts {
    if vals.is_empty() {
        return Err(format!("{crit} without values"));
    }
    let ci = if ignore_case { "(?i)" } else { "" };
    let mut out = Vec::new();
    for v in vals {
        let t = match how {
            "str" if !ignore_case && v.starts_with('/') => one("path", s(v)),
            "beg" if !ignore_case && v.starts_with('/') => one("path_prefix", s(v)),
            "str" => one("path_regex", s(&format!("{ci}^{}$", regex_escape(v)))),
            "beg" => one("path_regex", s(&format!("{ci}^{}", regex_escape(v)))),
            "end" => one("path_regex", s(&format!("{ci}{}$", regex_escape(v)))),
            "sub" => one("path_regex", s(&format!("{ci}{}", regex_escape(v)))),
            "dir" => one(
                "path_regex",
                s(&format!(
                    "{ci}(^|/){}(/|$)",
                    regex_escape(v.trim_matches('/'))
                )),
            ),
            "reg" => {
                if regex::Regex::new(v).is_err() {
                    return Err(format!("{v:?}: a regex rampart's regex crate refuses"));
                }
                one("path_regex", s(&format!("{ci}{v}")))
            }
            other => return Err(format!("{crit} -m {other} is not mapped")),
        };
        out.push(t);
    }
    Ok((out, true))
}

/// AND of two match tables; None when both test the same key differently.
pub fn and(a: &Table, b: &Table) -> Option<Table> {
    let mut out = a.clone();
    for (k, v) in &b.0 {
        match a.get(k) {
            Some(x) if x != v => return None,
            _ => out.set(k, v.clone()),
        }
    }
    Some(out)
}

/// A condition's words (after `if` / `unless`) → alternatives. `negate` is
/// `unless`.
pub fn condition(words: &[String], negate: bool, acls: &Acls) -> Alts {
    // split on || / or
    let mut groups: Vec<&[String]> = Vec::new();
    let mut start = 0;
    for (i, w) in words.iter().enumerate() {
        if w == "||" || w == "or" {
            groups.push(&words[start..i]);
            start = i + 1;
        }
    }
    groups.push(&words[start..]);
    let mut alts: Vec<Table> = Vec::new();
    let mut exact = true;
    for g in groups {
        let (a, e) = conjunction(g, acls)?;
        exact &= e;
        alts.extend(a);
    }
    if !negate {
        return Ok((alts, exact));
    }
    // unless: the negation of one alternative
    match alts.as_slice() {
        [one] => negated(one).map(|t| (vec![t], exact)),
        _ => Err("unless over several alternatives cannot be written as rampart rules".into()),
    }
}

fn negated(t: &Table) -> Result<Table, String> {
    if let [(k, v)] = t.0.as_slice() {
        if k == "src" {
            // not in these networks = in the networks that cover the rest,
            // which ANDs with other matches (`not` would invert the whole rule)
            let items: Vec<String> = v
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|x| x.trim_matches('"').to_string())
                .collect();
            let rest = src_complement(&items)?;
            if rest.is_empty() {
                return Err("a condition that never matches".into());
            }
            return Ok(one("src", list(&rest)));
        }
    }
    match t.0.as_slice() {
        // no server name in the ClientHello
        [(k, _)] if k == "__sni_found" => Ok(one("sni", s(""))),
        [(k, v)] if k == "__tls" => {
            let flip = if v == "\"true\"" {
                "\"false\""
            } else {
                "\"true\""
            };
            Ok(one("__tls", flip.into()))
        }
        _ if t.0.iter().any(|(k, _)| k.starts_with("__") || k == "not") => {
            Err("this negation cannot be written as a rampart rule".into())
        }
        [] => Err("a condition that never matches".into()),
        _ => {
            let mut n = t.clone();
            n.set("not", "true".into());
            Ok(n)
        }
    }
}

/// The CIDRs that cover every address (IPv4 and IPv6) outside `nets`.
pub fn src_complement(nets: &[String]) -> Result<Vec<String>, String> {
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for n in nets {
        let (a, p) = match n.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (n.as_str(), None),
        };
        let ip: std::net::IpAddr = a.parse().map_err(|_| format!("{n}: not an address"))?;
        let (bits, x, set) = match ip {
            std::net::IpAddr::V4(a) => (32u32, u128::from(u32::from(a)), &mut v4),
            std::net::IpAddr::V6(a) => (128u32, u128::from(a), &mut v6),
        };
        let plen: u32 = match p {
            Some(p) => p.parse().map_err(|_| format!("{n}: not a prefix length"))?,
            None => bits,
        };
        if plen > bits {
            return Err(format!("{n}: prefix too long"));
        }
        let size: u128 = if bits - plen == 128 {
            u128::MAX
        } else {
            (1u128 << (bits - plen)) - 1
        };
        let start = x & !size;
        set.push((start, start.saturating_add(size)));
    }
    let mut out = Vec::new();
    for (bits, mut set) in [(32u32, v4), (128u32, v6)] {
        let max: u128 = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        set.sort_unstable();
        let mut gaps = Vec::new();
        let mut next: Option<u128> = Some(0);
        for (a, b) in set {
            if let Some(n) = next {
                if a > n {
                    gaps.push((n, a - 1));
                }
                if b >= n {
                    next = b.checked_add(1).filter(|&x| x <= max);
                }
            }
        }
        if let Some(n) = next {
            gaps.push((n, max));
        }
        for (mut a, b) in gaps {
            // the largest aligned blocks from a to b
            loop {
                let mut size_bits = if a == 0 {
                    bits
                } else {
                    a.trailing_zeros().min(bits)
                };
                while size_bits > 0 {
                    let last = if size_bits == 128 {
                        u128::MAX
                    } else {
                        a + ((1u128 << size_bits) - 1)
                    };
                    if last <= b {
                        break;
                    }
                    size_bits -= 1;
                }
                let text = if bits == 32 {
                    std::net::Ipv4Addr::from(a as u32).to_string()
                } else {
                    std::net::Ipv6Addr::from(a).to_string()
                };
                out.push(format!("{text}/{}", bits - size_bits));
                let last = if size_bits == 128 {
                    u128::MAX
                } else {
                    a + ((1u128 << size_bits) - 1)
                };
                if last >= b {
                    break;
                }
                a = last + 1;
            }
        }
    }
    Ok(out)
}

fn conjunction(words: &[String], acls: &Acls) -> Alts {
    let mut acc: Vec<Table> = vec![Table::default()];
    let mut exact = true;
    let mut i = 0;
    let mut terms = 0;
    while i < words.len() {
        let mut w = words[i].as_str();
        let mut neg = false;
        if w == "!" {
            neg = true;
            i += 1;
            w = words.get(i).map(String::as_str).unwrap_or("");
        } else if let Some(rest) = w.strip_prefix('!') {
            neg = true;
            w = rest;
        }
        let (alts, e) = if w == "{" {
            let end = words[i..]
                .iter()
                .position(|x| x == "}")
                .map(|p| i + p)
                .ok_or("an anonymous ACL without its closing }")?;
            let r = criterion(&words[i + 1..end])?;
            i = end;
            r
        } else {
            match acls.get(w) {
                Some(r) => r.clone()?,
                None => return Err(format!("the ACL {w:?} is not defined here")),
            }
        };
        exact &= e;
        let alts = if neg {
            match alts.as_slice() {
                [one] => vec![negated(one)?],
                _ => {
                    return Err(format!(
                        "!{w}: the negation of several values cannot be written as rampart rules"
                    ))
                }
            }
        } else {
            alts
        };
        let mut next = Vec::new();
        for a in &acc {
            for b in &alts {
                // `not` inverts a whole rule: it cannot be ANDed with more
                if terms > 0 && (a.get("not").is_some() || b.get("not").is_some()) {
                    return Err("a negated ACL together with other ACLs cannot be written as one rampart rule".into());
                }
                next.push(and(a, b).ok_or(
                    "two ACLs test the same thing with different values; rampart ANDs one value per key",
                )?);
            }
        }
        acc = next;
        terms += 1;
        i += 1;
    }
    if terms == 0 {
        return Err("an empty condition".into());
    }
    if acc.len() > 32 {
        return Err("more than 32 alternatives".into());
    }
    Ok((acc, exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn criteria_map_to_match_keys() {
        let (a, exact) = criterion(&w("hdr(host) -i api.example.com www.example.com")).unwrap();
        assert!(exact);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].get("host"), Some("\"www.example.com\""));
        let (a, _) = criterion(&w("path_beg /api/")).unwrap();
        assert_eq!(a[0].get("path_prefix"), Some("\"/api/\""));
        let (a, _) = criterion(&w("path_end -i .php")).unwrap();
        assert_eq!(a[0].get("path_regex"), Some("'(?i)\\.php$'"));
        let (a, _) = criterion(&w("hdr_end(host) .example.com")).unwrap();
        assert_eq!(a[0].get("host"), Some("\"*.example.com\""));
        let (a, exact) = criterion(&w("hdr_beg(host) backups.")).unwrap();
        assert_eq!(a[0].get("host"), Some("\"backups.*\""));
        assert!(exact);
        // a prefix that is not whole labels has no rampart pattern
        assert!(criterion(&w("hdr_beg(host) api")).is_err());
        let (a, _) = criterion(&w("method POST put")).unwrap();
        assert_eq!(a[0].get("method"), Some("[\"POST\", \"PUT\"]"));
        let (a, _) = criterion(&w("src 10.0.0.0/8 192.168.1.1")).unwrap();
        assert_eq!(a.len(), 1);
        assert!(criterion(&w("src -f /etc/haproxy/allow.lst")).is_err());
        assert!(criterion(&w("ssl_fc_sni example.com")).is_err());
        let (a, _) = criterion(&w("sc_http_req_rate(0) gt 20")).unwrap();
        assert_eq!(a[0].get("__rate_gt"), Some("20"));
    }

    #[test]
    fn the_complement_of_networks_covers_everything_else_exactly() {
        let nets = vec!["10.0.0.0/8".to_string(), "192.168.0.0/16".to_string()];
        let rest = src_complement(&nets).unwrap();
        let parse = |n: &str| {
            let (a, p) = n.split_once('/').unwrap();
            (
                a.parse::<std::net::IpAddr>().unwrap(),
                p.parse::<u32>().unwrap(),
            )
        };
        let inside = |ip: std::net::IpAddr, set: &[String]| {
            set.iter().any(|n| {
                let (a, p) = parse(n);
                match (a, ip) {
                    (std::net::IpAddr::V4(a), std::net::IpAddr::V4(i)) => {
                        p == 0 || (u32::from(a) >> (32 - p)) == (u32::from(i) >> (32 - p))
                    }
                    (std::net::IpAddr::V6(a), std::net::IpAddr::V6(i)) => {
                        p == 0 || (u128::from(a) >> (128 - p)) == (u128::from(i) >> (128 - p))
                    }
                    _ => false,
                }
            })
        };
        // every address is in exactly one of nets and rest
        for ip in [
            "10.1.2.3",
            "9.255.255.255",
            "11.0.0.0",
            "192.168.5.5",
            "192.167.255.255",
            "192.169.0.0",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_ne!(inside(ip, &nets), inside(ip, &rest), "{ip} in {rest:?}");
        }
        assert!(rest.contains(&"::/0".to_string()));
        assert_eq!(
            src_complement(&["0.0.0.0/0".into(), "::/0".into()]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn conditions_are_alternatives_of_anded_matches() {
        let mut acls = Acls::new();
        add_acl(&mut acls, "api", &w("hdr(host) api.example.com"));
        add_acl(&mut acls, "api", &w("hdr(host) api2.example.com"));
        add_acl(&mut acls, "v1", &w("path_beg /v1"));
        // two hosts (one ACL name, two lines) AND a path: two rules
        let (a, _) = condition(&w("api v1"), false, &acls).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].get("path_prefix"), Some("\"/v1\""));
        // OR
        let (a, _) = condition(&w("v1 || { path_beg /v2 }"), false, &acls).unwrap();
        assert_eq!(a.len(), 2);
        // unless one ACL: not = true
        let (a, _) = condition(&w("v1"), true, &acls).unwrap();
        assert_eq!(a[0].get("not"), Some("true"));
        // unless ssl_fc: a plain-listener marker
        let (a, _) = condition(&w("{ ssl_fc }"), true, &acls).unwrap();
        assert_eq!(a[0].get("__tls"), Some("\"false\""));
        let (a, _) = condition(&w("!{ ssl_fc }"), false, &acls).unwrap();
        assert_eq!(a[0].get("__tls"), Some("\"false\""));
        // what rampart cannot say is refused, with why
        assert!(condition(&w("v1 !api"), false, &acls).is_err());
        // not from these networks: the networks of everyone else, ANDed
        add_acl(&mut acls, "internal", &w("src 10.0.0.0/8 192.168.0.0/16"));
        let (a, _) = condition(&w("{ path_beg /admin } !internal"), false, &acls).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].get("path_prefix"), Some("\"/admin\""));
        assert!(a[0].get("not").is_none());
        assert!(condition(&w("v1 { path_beg /v2 }"), false, &acls).is_err());
        assert!(condition(&w("nope"), false, &acls).is_err());
        assert!(condition(&w("api"), true, &acls).is_err());
    }
}
