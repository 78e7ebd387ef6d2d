//! Translating binds (with their TLS) and the request rules: `http-request`,
//! `http-response`, `use_backend`, ACLs, stick-table rate limits, and the order
//! HAProxy applies them in.

use super::tokens::{rate_text, with_base, Kind, Line};
use super::Importer;
use crate::import::haproxy_cond::{self as cond, Acls};
use crate::import::out::{self, list, s, Table};
use crate::import::Fidelity;

impl Importer {
    /// `bind ADDR [options]`: addresses, TLS and the PROXY protocol.
    pub(super) fn bind(&mut self, l: &Line, li: usize, addrs: Vec<String>) {
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
                    if protos
                        .iter()
                        .all(|p| matches!(p.as_str(), "h2" | "http/1.1" | "http/1.0"))
                    {
                        t.set("alpn", list(&protos));
                    } else {
                        approx = true;
                        notes.push(format!(
                            "alpn {a}: rampart offers h2, http/1.1 and http/1.0"
                        ));
                    }
                }
                ("ca-file", Some(c)) => {
                    takes_arg = true;
                    t.set("client_ca", s(&with_base(&self.ca_base, c)));
                }
                ("crl-file", Some(c)) => {
                    takes_arg = true;
                    t.set("client_crl", s(&with_base(&self.ca_base, c)));
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
                    | "mode" | "user" | "group" | "id" | "nice" | "tcp-ut" | "mss"
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
        if tls.is_none() && (!certs.is_empty() || unusable.is_some()) {
            // HAProxy serves plain text on a bind without `ssl`, whatever its crt
            approx = true;
            notes.push("crt without ssl: HAProxy serves plain text here, and so does rampart; the certificate is not used".into());
        }
        if tls.is_some() {
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
            // `verify none` is HAProxy's default: a ca-file without `verify
            // optional|required` asks for no client certificate (rampart
            // requires one when client_ca is given without client_auth)
            if t.get("__no_client_auth").is_some() || t.get("client_auth").is_none() {
                t.0.retain(|(k, _)| {
                    k != "client_ca"
                        && k != "client_crl"
                        && k != "client_auth"
                        && k != "__no_client_auth"
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
    pub(super) fn rule_line(&mut self, l: &Line, at: RuleAt, section: &str, acls: &Acls) -> bool {
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
                let Some(name) = self.rate_limit(&format!("{section}-sessions"), "all", n, 1, None)
                else {
                    self.unsupported(l, "a rate too large to count");
                    return true;
                };
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
                    // HAProxy counts each IPv6 address apart
                    Some("src") => "client_ip/128".to_string(),
                    // src,ipmask(32,64): a /64 per IPv6 client
                    Some(k) if ipmask_v6(k).is_some() => {
                        format!("client_ip/{}", ipmask_v6(k).unwrap_or(128))
                    }
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
                let shown = match key.strip_prefix("client_ip/") {
                    Some("128") => {
                        "client_ip, ipv6_prefix = 128: each IPv6 address apart, as HAProxy counts"
                            .to_string()
                    }
                    Some(bits) => format!("client_ip, ipv6_prefix = {bits}"),
                    None => key.clone(),
                };
                let mut note = format!(
                    "the key ({shown}) of the [[rate_limit]] that a rule testing the tracked http_req_rate makes"
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
                    let Some(name) = self.rate_limit(
                        &format!("{tname}-http-req-rate"),
                        &key,
                        n,
                        period,
                        st.size,
                    ) else {
                        self.unsupported(l, "a rate too large to count");
                        return true;
                    };
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
            ("http-request", "return") => {
                // return [status N] [content-type T] [string S] ...
                let mut status = 200u16;
                let mut ctype: Option<String> = None;
                let mut body: Option<String> = None;
                // the proxy's errorfile for the status (else an empty answer)
                let mut errorfiles = false;
                let mut i = 2;
                while i < act.len() {
                    let v = act.get(i + 1);
                    match (act[i].as_str(), v) {
                        ("status", Some(v)) => match v.parse::<u16>() {
                            Ok(n @ 200..=599) => status = n,
                            _ => {
                                self.unsupported(l, "a status from 200 to 599 expected");
                                return true;
                            }
                        },
                        ("content-type", Some(v)) => ctype = Some(v.clone()),
                        ("string", Some(v)) => body = Some(v.clone()),
                        ("default-errorfiles", _) => {
                            errorfiles = true;
                            i += 1;
                            continue;
                        }
                        _ => {
                            self.unsupported(l, "only return with status, content-type and a string is mapped (rampart's respond has a fixed text, without added fields)");
                            return true;
                        }
                    }
                    i += 2;
                }
                match (body, status) {
                    // the proxy's page for an error: rampart's (and its error_pages)
                    (None, 400..=599) if errorfiles => action.set("deny", status.to_string()),
                    (Some(_), 204 | 304) => {
                        self.unsupported(l, "a 204 or 304 answer has no body");
                        return true;
                    }
                    // without a payload HAProxy answers the status alone
                    // (and drops a content-type)
                    (None, _) => action.set("respond", format!("{{ status = {status} }}")),
                    (Some(b), _) => {
                        let mut t = format!("{{ status = {status}, body = {}", s(&b));
                        if let Some(c) = ctype {
                            t.push_str(&format!(", content_type = {}", s(&c)));
                        }
                        t.push_str(" }");
                        action.set("respond", t);
                    }
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
                // a log-format text: only one without expressions is mapped
                let literal = log_format_literal(&target);
                let to = match (kind, literal) {
                    ("location", Some(t)) => t,
                    ("prefix", Some(t)) => format!("{}{{uri}}", t.trim_end_matches('/')),
                    ("scheme", _) if target == "https" || target == "http" => {
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
            ("http-request", "set-src") => {
                let Some(header) = act.get(2).and_then(|v| set_src_field(v)) else {
                    self.unsupported(l, "only set-src hdr(NAME) or hdr_ip(NAME) (the field's last address) is mapped");
                    return true;
                };
                let RuleAt::Listener(li) = at else {
                    self.unsupported(
                        l,
                        "client_ip_from is a listener's: a backend's set-src is not imported",
                    );
                    return true;
                };
                if self.cfg.listeners[li].keys.get("mode") == Some("\"tcp\"") {
                    self.unsupported(l, "request rules apply to http listeners; this one is tcp");
                    return true;
                }
                if self.cfg.listeners[li].keys.get("client_ip_from").is_some() {
                    self.unsupported(
                        l,
                        "a second set-src: client_ip_from is one per listener (the first line's)",
                    );
                    return true;
                }
                // rules before it saw the balancer in HAProxy, the client in
                // rampart (which reads the field before every rule)
                let before = self.pre_rules.get(&li).is_some_and(|rs| {
                    rs.iter()
                        .any(|(r, _)| r.get("src").is_some() || r.get("rate_limit").is_some())
                });
                // whom HAProxy believes: the condition's `src` networks
                let from = match (cnd, alts.as_slice()) {
                    (None, _) => None,
                    (Some(_), [a]) if a.0.len() == 1 && a.get("src").is_some() => {
                        a.get("src").map(String::from)
                    }
                    _ => {
                        self.unsupported(l, "a condition other than `src` networks: client_ip_from believes the proxies in its `from`");
                        return true;
                    }
                };
                let everyone = from.is_none();
                let from = from.unwrap_or_else(|| "[\"0.0.0.0/0\", \"::/0\"]".into());
                self.cfg.listeners[li].keys.set(
                    "client_ip_from",
                    format!("{{ from = {from}, header = {} }}", s(&header)),
                );
                let mut note =
                    "the listener's client_ip_from (the field's last address, from these networks)"
                        .to_string();
                if everyone {
                    note = "the listener's client_ip_from, believing every client as HAProxy does without a condition: narrow `from` to your proxies".into();
                }
                if before {
                    note.push_str("; rules before this line test the client or count it: in HAProxy they saw the proxy's address, in rampart the client it names");
                }
                if everyone || before {
                    self.approx(l, note);
                } else {
                    self.mapped(l, note);
                }
                return true;
            }
            ("http-request", "replace-path" | "set-path") => {
                let rewrite = if verb == "set-path" {
                    act.get(2)
                        .ok_or_else(|| "set-path FMT expected".to_string())
                        .and_then(|f| set_path(f))
                } else {
                    match (act.get(2), act.get(3)) {
                        (Some(re), Some(f)) => replace_path(re, f),
                        _ => Err("replace-path REGEX FMT expected".into()),
                    }
                };
                match rewrite {
                    Ok(v) => action.set("rewrite_path", v),
                    Err(why) => {
                        self.unsupported(l, why);
                        return true;
                    }
                }
                approx = true;
                notes.push("rampart matches the regex against the decoded path (HAProxy, the path as sent), and encodes what it sends".into());
            }
            ("http-response", "replace-header") => {
                let (Some(name), Some(re), Some(fmt)) = (act.get(2), act.get(3), act.get(4)) else {
                    self.unsupported(l, "replace-header NAME REGEX FMT expected");
                    return true;
                };
                if let Err(e) = out::header_ok(name, None) {
                    self.unsupported(l, e);
                    return true;
                }
                self.response_order(l, name, &mut approx, &mut notes);
                match regex_replacement(re, fmt) {
                    Ok(to) => {
                        action.set("response_replace_header", out::replace_entry(name, re, &to))
                    }
                    Err(why) => {
                        self.unsupported(l, why);
                        return true;
                    }
                }
            }
            ("http-request" | "http-response", "set-header" | "add-header" | "del-header") => {
                let name = act.get(2).cloned().unwrap_or_default();
                if name.is_empty() {
                    self.unsupported(l, "a header name expected");
                    return true;
                }
                let lower = name.to_ascii_lowercase();
                if head == "http-request" {
                    let written = matches!(
                        lower.as_str(),
                        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded"
                    );
                    if written && !(verb == "del-header" && lower == "x-forwarded-for") {
                        // what such rules are for (X-Forwarded-Proto https
                        // behind TLS, the client's address) rampart does itself
                        self.approx(
                            l,
                            "rampart writes X-Forwarded-For/-Proto/-Host itself (https on a TLS listener) and drops a client's Forwarded: the rule is left out",
                        );
                        return true;
                    }
                    if verb == "del-header" && lower == "host" {
                        self.unsupported(l, "an HTTP/1.1 request needs a Host");
                        return true;
                    }
                }
                // the client's address in a field of its own (X-Real-IP)
                if head == "http-request"
                    && verb == "set-header"
                    && act.get(3).map(String::as_str) == Some("%[src]")
                    && out::header_ok(&name, None).is_ok()
                    && lower != "host"
                {
                    let conditional = l.words.iter().any(|w| w == "if" || w == "unless");
                    match at {
                        RuleAt::Listener(li) if !conditional => {
                            let keys = &mut self.cfg.listeners[li].keys;
                            match keys.get("client_ip_header").map(|v| v.trim_matches('"').to_string()) {
                                Some(first) if !first.eq_ignore_ascii_case(&name) => self.unsupported(
                                    l,
                                    format!("rampart writes the client's address in one field, client_ip_header ({first}): not in this one too"),
                                ),
                                _ => {
                                    keys.set("client_ip_header", s(&name));
                                    self.mapped(l, "the listener's client_ip_header (the client's address, in place of any the client sent)");
                                }
                            }
                        }
                        _ => self.unsupported(
                            l,
                            "client_ip_header is a whole listener's: set it on the listeners this applies to",
                        ),
                    }
                    return true;
                }
                // a log-format text: `%%` is a `%`, any other `%` an expression
                let value = match act.get(3).map(|v| log_format_literal(v)) {
                    Some(Some(v)) => Some(v),
                    Some(None) => {
                        self.unsupported(l, "a value with HAProxy's log-format expressions (%[...], %ci, %H, ...) has no rampart equivalent");
                        return true;
                    }
                    None => None,
                };
                if let Err(e) = out::header_ok(&name, value.as_deref()) {
                    self.unsupported(l, e);
                    return true;
                }
                let resp = head == "http-response";
                if resp {
                    self.response_order(l, &name, &mut approx, &mut notes);
                }

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

    /// An `http-response` edit of `name` (line `l`) that rampart orders
    /// otherwise: HAProxy runs a backend's response rules before its
    /// frontend's (rampart, the frontend's first, in rule order), and its
    /// `replace-header` rewrites what an earlier `set-header` of its
    /// section set (rampart's, the server's lines only).
    fn response_order(&self, l: &Line, name: &str, approx: &mut bool, notes: &mut Vec<String>) {
        let Some(all) = self.response_fields.get(&name.to_ascii_lowercase()) else {
            return;
        };
        let Some((kind, sec, _, verb)) = all.iter().find(|e| e.2 == l.no) else {
            return;
        };
        // two sections one request can pass through: a frontend (or a
        // listen) and a backend (or a listen), not two of one kind
        let crossed = all.iter().any(|e| {
            e.1 != *sec
                && !(e.0 == Kind::Frontend && *kind == Kind::Frontend)
                && !(e.0 == Kind::Backend && *kind == Kind::Backend)
        });
        let set_first = verb == "replace-header"
            && all.iter().any(|e| {
                e.1 == *sec && e.2 < l.no && matches!(e.3.as_str(), "set-header" | "add-header")
            });
        if crossed {
            *approx = true;
            notes.push(format!("a frontend and a backend both edit {name}: HAProxy runs the backend's response rules first, rampart the frontend's"));
        }
        if set_first {
            *approx = true;
            notes.push(format!("a set-header of {name} before it: HAProxy rewrites the value it set, rampart the server's lines only"));
        }
    }

    pub(super) fn push_rules(&mut self, at: RuleAt, rules: Vec<Table>, entry: usize) {
        let v = match at {
            RuleAt::Listener(li) => self.pre_rules.entry(li).or_default(),
            RuleAt::Pool(pi) => self.pool_rules.entry(pi).or_default(),
        };
        v.extend(rules.into_iter().map(|r| (r, entry)));
    }

    /// A `[[rate_limit]]` (the same one again when it already exists).
    pub(super) fn rate_limit(
        &mut self,
        base: &str,
        key: &str,
        n: u64,
        period: u64,
        size: Option<u64>,
    ) -> Option<String> {
        let (rate, _) = rate_text(n, period)?;
        let burst = n.saturating_sub(1).to_string();
        for r in &self.cfg.rate_limits {
            let (k, bits) = match key.split_once('/') {
                Some((k, b)) => (k, Some(b)),
                None => (key, None),
            };
            if r.get("key") == Some(&s(k))
                && r.get("ipv6_prefix") == bits
                && r.get("rate") == Some(&s(&rate))
                && r.get("burst") == Some(&burst)
            {
                if let Some(name) = r.get("name") {
                    return Some(name.trim_matches('"').to_string());
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
        // "client_ip/N": the client's address, its first N bits for IPv6
        match key.strip_prefix("client_ip/") {
            Some(bits) => {
                t.set("key", s("client_ip"));
                t.set("ipv6_prefix", bits.to_string());
            }
            None => t.set("key", s(key)),
        }
        t.set("rate", s(&rate));
        t.set("burst", burst);
        if let Some(sz) = size {
            t.set("max_keys", sz.clamp(1, 10_000_000).to_string());
        }
        self.cfg.rate_limits.push(t);
        Some(name)
    }
}

/// A log-format text without expressions, as HAProxy sends it: `%%` is a
/// `%`; None when any other `%` starts an expression (`%[...]`, `%ci`, `%H`,
/// `%{+Q}o`, ...).
pub(super) fn log_format_literal(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() != Some('%') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

/// The field of `set-src hdr(NAME)` (`req.hdr`, `hdr_ip`; the last
/// occurrence, HAProxy's default, or `-1`).
fn set_src_field(sample: &str) -> Option<String> {
    let f = sample.strip_prefix("req.").unwrap_or(sample);
    let inner = f
        .strip_prefix("hdr(")
        .or_else(|| f.strip_prefix("hdr_ip("))?
        .strip_suffix(')')?;
    let (name, occ) = match inner.split_once(',') {
        Some((n, o)) => (n, Some(o.trim())),
        None => (inner, None),
    };
    if !matches!(occ, None | Some("-1")) || out::header_ok(name, None).is_err() {
        return None;
    }
    Some(name.to_string())
}

/// `http-request replace-path REGEX FMT` → a rule's `rewrite_path`: `\N`
/// becomes `${N}`; a log-format expression, a query and encoded bytes are
/// not rampart's.
fn replace_path(re: &str, fmt: &str) -> Result<String, String> {
    let to = path_only(regex_replacement(re, fmt)?)?;
    Ok(format!("{{ regex = {}, to = {} }}", s(re), s(&to)))
}

/// A new path as rampart writes it (`to`, its escapes read): one with a
/// query or a fragment is not rampart's, which rewrites the path only.
fn path_only(to: String) -> Result<String, String> {
    if to.contains(['?', '#']) {
        return Err(
            "a query in the format: rampart rewrites the path only (the query stays the client's)"
                .into(),
        );
    }
    Ok(to)
}

/// A replacement of HAProxy's (`replace-path`, `replace-header`) as
/// rampart writes it: `\N` becomes `${N}`, `$` is `$$`; a log-format
/// expression is not rampart's.
fn regex_replacement(re: &str, fmt: &str) -> Result<String, String> {
    let compiled =
        regex::Regex::new(re).map_err(|_| "a regex rampart's regex crate refuses".to_string())?;
    substitution(fmt, |n| {
        (n < compiled.captures_len())
            .then_some(n)
            .ok_or_else(|| format!("\\{n} is not one of the regex's groups"))
    })
}

/// `fmt` read as HAProxy's `exp_replace` reads it, written as rampart's:
/// `\N` as `${group(N)}`, `\\` as a `\`, `\xHH` as that character (ASCII),
/// `\` before anything else as that thing, and each `$` as `$$`.
fn substitution(
    fmt: &str,
    group: impl Fn(usize) -> Result<usize, String>,
) -> Result<String, String> {
    let mut to = String::with_capacity(fmt.len());
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let n = d.to_digit(10).unwrap_or(0) as usize;
                    to.push_str(&format!("${{{}}}", group(n)?));
                }
                Some('x') => {
                    let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(b) if b.is_ascii() && !b.is_ascii_control() => {
                            if b == b'$' {
                                to.push('$');
                            }
                            to.push(char::from(b));
                        }
                        _ => return Err(format!("\\x{hex} in the format is not mapped")),
                    }
                }
                Some('$') => to.push_str("$$"),
                Some(other) => to.push(other),
                None => return Err("a '\\' that ends the format".into()),
            },
            '%' => {
                return Err(
                    "a log-format expression (or '%') in the format: rampart rewrites from the regex's groups only"
                        .into(),
                )
            }
            '$' => to.push_str("$$"),
            c => to.push(c),
        }
    }
    Ok(to)
}

/// `%[path,regsub(REGEX,SUBST[,FLAGS])]`, the whole of a `set-path` format:
/// sed's `s/REGEX/SUBST/`, the first match replaced (with `g`, every one;
/// mapped only where the regex is anchored at the start, so there is one),
/// as a `rewrite_path` of the whole path.
fn regsub_path(fmt: &str) -> Option<Result<String, String>> {
    let args = fmt.strip_prefix("%[path,regsub(")?.strip_suffix(")]")?;
    Some(regsub_rewrite(args))
}

/// A converter's arguments as HAProxy's argument parser reads them: split
/// at commas outside single quotes, each `'...'` taken as written (a regex
/// with a parenthesis must be quoted, else it ends the arguments). A double
/// quote, or a quote that does not close, is not mapped.
fn converter_args(args: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = args.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // outside single quotes, `\\`, `\'` and `\"` are the character
            // (HAProxy 2.6 answers `regsub(^/h/,/i\\\\1/)` in a file with
            // group 1); any other backslash stays, for the regex or the
            // substitution
            '\\' if !quoted && matches!(chars.peek(), Some('\\' | '\'' | '"')) => {
                if let (Some(a), Some(n)) = (out.last_mut(), chars.next()) {
                    a.push(n);
                }
            }
            '\'' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            '"' => return Err("a double-quoted converter argument is not mapped".into()),
            '(' | ')' if !quoted => return Err(
                "a parenthesis outside quotes ends HAProxy's converter arguments: quote the regex ('...')".into(),
            ),
            c => {
                if let Some(a) = out.last_mut() {
                    a.push(c);
                }
            }
        }
    }
    if quoted {
        return Err("a converter argument whose quote does not close".into());
    }
    Ok(out)
}

fn regsub_rewrite(args: &str) -> Result<String, String> {
    let parts = converter_args(args)?;
    let (re, subst, flags) = match parts.as_slice() {
        [re, subst] => (re.as_str(), subst.as_str(), ""),
        [re, subst, flags] => (re.as_str(), subst.as_str(), flags.trim()),
        _ => return Err("regsub(REGEX,SUBST[,FLAGS]) expected".into()),
    };
    if let Some(f) = flags.chars().find(|f| !matches!(f, 'g' | 'i')) {
        return Err(format!("regsub's flag {f:?} is not mapped"));
    }
    // (an alternation may anchor only one side: `^/a|/b`)
    let anchored = re.starts_with('^') && !re.contains('|');
    if flags.contains('g') && !anchored {
        return Err(
            "regsub with g, its regex not anchored at ^: rampart replaces one match".into(),
        );
    }
    let groups = regex::Regex::new(re)
        .map_err(|_| "a regex rampart's regex crate refuses".to_string())?
        .captures_len()
        - 1;
    let ci = if flags.contains('i') { "i" } else { "" };
    // what comes before the match (unless anchored) and after it are groups
    // of their own around the regex's, which move up past the first
    // (`(?s)`: a path may hold a decoded newline, which HAProxy's regsub,
    // with no such wrapping, steps over)
    let shift = usize::from(!anchored);
    let regex = if anchored {
        format!("^(?{ci}:{})((?s:.*))$", &re[1..])
    } else {
        format!("^((?s:.*?))(?{ci}:{re})((?s:.*))$")
    };
    let after = groups + 1 + shift;
    let mut to = if anchored {
        String::new()
    } else {
        "${1}".to_string()
    };
    to.push_str(&substitution(subst, |n| match n {
        0 => Err("\\0 (the whole match) in the substitution is not mapped".into()),
        n if n <= groups => Ok(n + shift),
        n => Err(format!("\\{n} is not one of the regex's groups")),
    })?);
    to.push_str(&format!("${{{after}}}"));
    let to = path_only(to)?;
    regex::Regex::new(&regex).map_err(|_| "a regex rampart's regex crate refuses".to_string())?;
    Ok(format!("{{ regex = {}, to = {} }}", s(&regex), s(&to)))
}

/// `http-request set-path FMT` → a rule's `rewrite_path` of every path: a
/// fixed text, and `%[path]` (the path as it is: `/api%[path]` adds a
/// prefix).
fn set_path(fmt: &str) -> Result<String, String> {
    if let Some(r) = regsub_path(fmt) {
        return r;
    }
    let mut to = String::with_capacity(fmt.len());
    let mut rest = fmt;
    while let Some(i) = rest.find(['%', '$', '?', '#']) {
        to.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("%[path]") {
            to.push_str("${0}");
            rest = r;
        } else if let Some(r) = after.strip_prefix('$') {
            to.push_str("$$");
            rest = r;
        } else if after.starts_with(['?', '#']) {
            return Err(
                "a query in the format: rampart rewrites the path only (the query stays the client's)"
                    .into(),
            );
        } else {
            return Err(
                "a log-format expression other than %[path]: rampart's new path is a fixed text around the old one"
                    .into(),
            );
        }
    }
    to.push_str(rest);
    Ok(format!("{{ regex = {}, to = {} }}", s("^.*$"), s(&to)))
}

pub(super) const STICK_TABLE: &str = "a [[rate_limit]] where a rule tests its http_req_rate (size → max_keys); other stored data and stickiness are not imported";

impl Importer {
    /// `acl NAME CRITERION [FLAGS] VALUES`, in a frontend or a backend: its
    /// report line. The section's ACLs were collected before its rules
    /// (`section_acls`): every line of a name counts, wherever it is.
    pub(super) fn acl_line(&mut self, l: &Line) {
        match cond::criterion(&l.words[2..]) {
            Ok((_, true)) => self.mapped(l, "rule matches where the ACL is used"),
            Ok((_, false)) if l.words[2].to_ascii_lowercase().contains("ssl_sni") => self.approx(
                l,
                "route matches where the ACL is used; rampart compares server names without case (HAProxy with -i) and treats -m dom as the name or any name under it",
            ),
            Ok((_, false)) => self.approx(
                l,
                "rule matches where the ACL is used; rampart's host match ignores the port and treats hdr_dom as the name or any name under it",
            ),
            Err(e) => self.unsupported(l, e),
        }
    }
}

impl Importer {
    /// A section's named ACLs, every line of each name ORed (HAProxy adds a
    /// line to its name's ACL wherever it is, so one after a rule that uses
    /// the name counts for that rule too).
    pub(super) fn section_acls(lines: &[Line]) -> Acls {
        let mut acls = Acls::new();
        for l in lines {
            if l.words.len() > 2 && l.words[0] == "acl" {
                cond::add_acl(&mut acls, &l.words[1], &l.words[2..]);
            }
        }
        acls
    }
}

/// Where a section's rules go.
#[derive(Debug, Clone, Copy)]
pub(super) enum RuleAt {
    Listener(usize),
    Pool(usize),
}

/// A backend's rules, less its path rewrite: HAProxy rewrites after
/// `use_backend` chose the backend, so the rewrite goes on the rule that
/// picks it (before it, the new path would be what that rule matches). One
/// without a condition of its own is taken; others are reported in `failed`.
fn backend_rewrites(
    rules: Vec<(Table, usize)>,
    failed: &mut Vec<(usize, &'static str)>,
) -> (Option<String>, Vec<(Table, usize)>) {
    let mut kept: Option<(String, usize)> = None;
    let mut tested_after = false;
    let mut others = Vec::new();
    for (r, e) in rules {
        let Some(w) = r.get("rewrite_path").map(String::from) else {
            // (a rule after the rewrite that reads the path: HAProxy's sees
            // the new one)
            tested_after |= kept.is_some()
                && ["path", "path_prefix", "path_regex", "redirect"]
                    .iter()
                    .any(|k| r.get(k).is_some());
            others.push((r, e));
            continue;
        };
        if r.0.len() > 1 {
            failed.push((e, "a backend's path rewrite with a condition: rampart puts a backend's rewrite on the rule that picks it, which has one condition"));
        } else if kept.is_some() {
            failed.push((
                e,
                "a backend's second path rewrite: the rule that picks the backend takes one",
            ));
        } else {
            kept = Some((w, e));
        }
    }
    if tested_after {
        if let Some((_, e)) = kept.take() {
            failed.push((e, "a backend's path rewrite before rules that read the path: rampart rewrites on the rule that picks the backend, after the backend's rules, which would see the old path"));
        }
    }
    (kept.map(|(w, _)| w), others)
}

impl Importer {
    /// Each listener's rules in HAProxy's order: its `http-request` rules,
    /// then per `use_backend` rule the rules of the backend it picks (ANDed
    /// with its condition) and the rule itself, then the default backend's.
    pub(super) fn assemble_rules(&mut self) {
        let pool_rules = std::mem::take(&mut self.pool_rules);
        let rules_of = |pool: &str| -> Vec<(Table, usize)> {
            self.pool_ix
                .get(pool.trim_matches('"'))
                .and_then(|pi| pool_rules.get(pi))
                .cloned()
                .unwrap_or_default()
        };
        let mut failed: Vec<(usize, &'static str)> = Vec::new();
        let mut all = Vec::new();
        for li in 0..self.cfg.listeners.len() {
            let mut out: Vec<Table> = Vec::new();
            for (mut r, e) in self.pre_rules.remove(&li).unwrap_or_default() {
                r.set("__entry", e.to_string());
                out.push(r);
            }
            let routes = std::mem::take(&mut self.cfg.listeners[li].rules);
            for mut route in routes {
                if let Some(pool) = route.get("pool").map(String::from) {
                    let mut m = route.clone();
                    m.0.retain(|(k, _)| k != "pool" && k != "__entry");
                    let (rewrites, others) = backend_rewrites(rules_of(&pool), &mut failed);
                    if let Some(w) = rewrites {
                        route.set("rewrite_path", w);
                    }
                    for (pr, e) in others {
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
                            None => failed.push((e, "this backend rule cannot be ANDed with the condition of a use_backend that picks the backend (both test the same key, or one is negated)")),
                        }
                    }
                }
                out.push(route);
            }
            if let Some(pool) = self.cfg.listeners[li].keys.get("pool").map(String::from) {
                let (rewrites, others) = backend_rewrites(rules_of(&pool), &mut failed);
                for (mut r, e) in others {
                    r.set("__entry", e.to_string());
                    out.push(r);
                }
                if let Some(w) = rewrites {
                    // the default backend's requests: every one left
                    let mut r = Table::default();
                    r.set("rewrite_path", w);
                    r.set("pool", pool);
                    out.push(r);
                }
            }
            all.push(out);
        }
        for (li, out) in all.into_iter().enumerate() {
            self.cfg.listeners[li].rules = out;
        }
        for (e, why) in failed {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Unsupported;
                en.note = why.into();
            }
        }
    }

    /// A tcp listener's `use_backend` lines by `req.ssl_sni` become its
    /// `[[listener.route]]`s, in order: an unconditional one is its pool (what
    /// follows it is never reached); without a pool, a connection no route
    /// takes is closed, as HAProxy closes it without a `default_backend`. The
    /// `tcp-request` lines that wait for the ClientHello set how long
    /// (request_header_timeout).
    pub(super) fn sni_routes(&mut self) {
        let mut notes: Vec<(usize, Fidelity, String)> = Vec::new();
        for l in &mut self.cfg.listeners {
            if l.keys.get("mode") != Some("\"tcp\"") {
                continue;
            }
            let mut kept = Vec::new();
            let mut decided = false;
            for r in std::mem::take(&mut l.rules) {
                let entry = r.get("__entry").and_then(|e| e.parse::<usize>().ok());
                let by_sni = r.get("sni").is_some() || r.get("__sni_found").is_some();
                let only_sni =
                    r.0.iter()
                        .all(|(k, _)| matches!(k.as_str(), "sni" | "pool" | "__entry"));
                let unconditional = r.0.iter().all(|(k, _)| k == "pool" || k == "__entry");
                if r.get("pool").is_none() || !(by_sni || unconditional) {
                    // not a use_backend rampart routes a tcp listener by
                    // (split_tls reports it)
                    kept.push(r);
                    continue;
                }
                if decided {
                    if let Some(e) = entry {
                        notes.push((e, Fidelity::Unsupported, "never reached: a use_backend without a condition before it takes every connection".into()));
                    }
                } else if unconditional {
                    l.keys
                        .set("pool", r.get("pool").unwrap_or_default().to_string());
                    decided = true;
                    if let Some(e) = entry {
                        notes.push((
                            e,
                            Fidelity::Mapped,
                            "the listener's pool: every connection no route before it takes".into(),
                        ));
                    }
                } else if only_sni {
                    if let Some(en) = entry.and_then(|e| self.report.get_mut(e)) {
                        en.note = en.note.replace(
                            "a [[listener.rule]] with pool",
                            "a [[listener.route]] by sni",
                        );
                    }
                    l.routes.push(r);
                } else if let Some(e) = entry {
                    let why = if r.get("not").is_some() {
                        "a negated server-name test (unless, !): rampart's tcp routes take the names they list"
                    } else if r.get("__sni_found").is_some() {
                        "any server name at all: rampart's tcp routes take the names they list"
                    } else {
                        "a route by req.ssl_sni tests the server name alone: rampart's tcp routes test nothing else"
                    };
                    notes.push((e, Fidelity::Unsupported, why.into()));
                }
            }
            l.rules = kept;
        }
        for (e, f, note) in notes {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = f;
                en.note = note;
            }
        }
        // HAProxy reads a ClientHello only where a frontend waits for one:
        // an inspect-delay and a content rule that accepts once it is in
        let waits = |li: usize, hello: bool| {
            self.sni_waits.iter().any(|(l, d, _)| {
                *l == li
                    && match d {
                        None => hello,
                        Some(Some(d)) => !hello && !super::tokens::zero(d),
                        Some(None) => false,
                    }
            })
        };
        let mut unread = Vec::new();
        for (li, l) in self.cfg.listeners.iter().enumerate() {
            let read = waits(li, true) && waits(li, false);
            if !l.routes.is_empty() && !read {
                unread.extend(
                    l.routes
                        .iter()
                        .filter_map(|r| r.get("__entry").and_then(|e| e.parse::<usize>().ok())),
                );
            }
        }
        for e in unread {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Approximated;
                en.note.push_str("; the frontend does not wait for the ClientHello (tcp-request inspect-delay, and content accept if { req_ssl_hello_type 1 }), so HAProxy reads no name and sends every connection to its default backend, where rampart routes by the name");
            }
        }
        // what the frontends wait for before they route
        for (li, delay, e) in std::mem::take(&mut self.sni_waits) {
            let routes = self
                .cfg
                .listeners
                .get(li)
                .is_some_and(|l| !l.routes.is_empty());
            let Some(en) = self.report.get_mut(e) else {
                continue;
            };
            match (routes, delay) {
                (true, Some(Some(d))) if super::tokens::zero(&d) => {
                    en.note = "0: HAProxy then reads no ClientHello; rampart needs a time".into()
                }
                (true, Some(Some(d))) => {
                    self.cfg.listeners[li]
                        .keys
                        .set("request_header_timeout", s(&d));
                    en.fidelity = Fidelity::Approximated;
                    en.note = "request_header_timeout: how long rampart waits for the whole ClientHello it routes by; past it, rampart closes the connection where HAProxy routes what it has (to the default backend)".into();
                }
                (true, Some(None)) => en.note = "not a duration".into(),
                (true, None) => {
                    en.fidelity = Fidelity::Approximated;
                    en.note = "rampart routes once the whole ClientHello is in, as this waits for; what is not TLS is routed at once as a hello without a name, as HAProxy routes it; a TLS record that is not a ClientHello rampart can read is closed, where HAProxy passes it on".into();
                }
                (false, _) => en.note = "connection-level rules are not in rampart; a tcp listener waits for the ClientHello only to route by its server name (use_backend if { req.ssl_sni ... })".into(),
            }
        }
    }

    /// Binds become `bind` (and `[listener.tls]`); a frontend with plain and
    /// TLS binds becomes two listeners, as a rampart listener is one or the
    /// other. Rules for `ssl_fc` keep to the side they name; tcp listeners
    /// keep no request rules.
    pub(super) fn split_tls(&mut self) {
        let mut out = Vec::new();
        let mut dropped_entries: Vec<(usize, &'static str)> = Vec::new();
        // routes the plain binds keep and the ssl ones cannot
        let mut half_kept: Vec<usize> = Vec::new();
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
            // TLS binds by their TLS settings: binds with different
            // certificates or client verification are listeners of their own
            let mut tls_groups: Vec<(Table, Vec<String>)> = Vec::new();
            for (a, t) in &b {
                if let Some(t) = t {
                    match tls_groups.iter_mut().find(|g| g.0 .0 == t.0) {
                        Some(g) => g.1.push(a.clone()),
                        None => tls_groups.push((t.clone(), vec![a.clone()])),
                    }
                }
            }
            let mut sides = Vec::new();
            if !plain.is_empty() || tls_groups.is_empty() {
                let mut p = l.clone();
                if !plain.is_empty() {
                    p.keys.set("bind", list(&plain));
                }
                sides.push((p, false));
            }
            for (k, (t, addrs)) in tls_groups.into_iter().enumerate() {
                let mut p = l.clone();
                let suffix = match (plain.is_empty(), k) {
                    (true, 0) => String::new(),
                    (true, k) => format!("-{}", k + 1),
                    (false, 0) => "-tls".to_string(),
                    (false, k) => format!("-tls-{}", k + 1),
                };
                if !suffix.is_empty() {
                    let name = p
                        .keys
                        .get("name")
                        .unwrap_or("\"\"")
                        .trim_matches('"')
                        .to_string();
                    p.keys.set("name", s(&format!("{name}{suffix}")));
                }
                p.keys.set("bind", list(&addrs));
                p.tls = Some(t);
                sides.push((p, true));
            }
            for (mut p, is_tls) in sides {
                let tcp = p.keys.get("mode") == Some("\"tcp\"");
                if tcp {
                    // (a `mode tcp` after the set-src line)
                    p.keys
                        .0
                        .retain(|(k, _)| k != "client_ip_from" && k != "compression");
                }
                if is_tls {
                    // HAProxy deciphers a bind with ssl before the rules:
                    // req.ssl_sni sees no ClientHello there
                    for r in std::mem::take(&mut p.routes) {
                        if let Some(e) = r.get("__entry").and_then(|e| e.parse().ok()) {
                            if plain.is_empty() {
                                dropped_entries.push((
                                    e,
                                    "on a bind with ssl, HAProxy deciphers first, so req.ssl_sni sees no ClientHello",
                                ));
                            } else {
                                half_kept.push(e);
                            }
                        }
                    }
                }
                for r in &mut p.routes {
                    r.0.retain(|(k, _)| !k.starts_with("__"));
                }
                let want = if is_tls { "\"true\"" } else { "\"false\"" };
                p.rules.retain(|r| {
                    if !tcp
                        && ["sni", "__sni_found", "__hello"]
                            .iter()
                            .any(|k| r.get(k).is_some())
                    {
                        if let Some(e) = r.get("__entry").and_then(|e| e.parse().ok()) {
                            dropped_entries.push((
                                e,
                                "req.ssl_sni routes a tcp listener by the ClientHello it passes through; this one is http",
                            ));
                        }
                        return false;
                    }
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
                if let Some(cut) = p.rules.iter().position(|r| {
                    r.matches_everything()
                        && ["deny", "redirect", "respond", "pool"]
                            .iter()
                            .any(|k| r.get(k).is_some())
                }) {
                    p.rules.truncate(cut + 1);
                }
                out.push(p);
            }
        }
        self.cfg.listeners = out;
        for e in half_kept {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Approximated;
                en.note.push_str("; on the frontend's plain binds only: HAProxy deciphers a bind with ssl first, so req.ssl_sni sees no ClientHello there");
            }
        }
        for (e, why) in dropped_entries {
            if let Some(en) = self.report.get_mut(e) {
                en.fidelity = Fidelity::Unsupported;
                en.note = why.into();
            }
        }
        self.cfg.drop_unused_rate_limits();
    }
}

/// `src,ipmask(32,N)`: the IPv6 prefix N (1 to 128) of a key that keeps
/// whole IPv4 addresses; None for any other sample.
fn ipmask_v6(k: &str) -> Option<u8> {
    let args = k.strip_prefix("src,ipmask(")?.strip_suffix(')')?;
    let (v4, v6) = args.split_once(',')?;
    let v6: u8 = v6.trim().parse().ok()?;
    (v4.trim() == "32" && (1..=128).contains(&v6)).then_some(v6)
}
