//! A `server` block and its `location`s: listeners, host matches, access
//! rules, headers, rate limits, returns and rewrites, in nginx's precedence.

use super::{listen_addr, proxied, size, Importer, Listen, Loc, LocKind, Server};
use crate::import::haproxy_cond::src_complement;
use crate::import::nginx_parse::Directive;
use crate::import::out::{self, list, s, Table};
use crate::import::Entry;
use crate::import::Fidelity;

impl Importer {
    /// A server block. `inherited`: what it takes of the http level's
    /// [listener.tls] settings (client_ca, client_auth), which its own
    /// directives replace. The http level's proxy settings are not here:
    /// `finish` applies them to every pool before the servers' and the
    /// locations' own.
    pub(super) fn server(&mut self, d: &Directive, b: &[Directive], inherited: &Table) {
        // the server's own proxy settings go before its locations' (which win)
        let first_setting = self.pool_settings.len();
        let mut sv = Server {
            line: d.line,
            tls_extra: inherited.clone(),
            ..Server::default()
        };
        self.mapped(
            d,
            "rules of the listener(s) for its addresses, matched by its names",
        );
        // $server_name: the first name of server_name, as written ("" without one)
        self.server_inherit = proxied::Inherit::of(b, false);
        self.server_name = b
            .iter()
            .find(|e| e.name == "server_name")
            .and_then(|e| e.args.first().cloned())
            .unwrap_or_default();
        // the server's own proxy settings, wherever they are in the block
        let mut settings = Table::default();
        // the report entry of its own ssl_client_certificate
        let mut client_ca_entry: Option<usize> = None;
        // ... and of its own ssl_crl
        let mut client_crl_entry: Option<usize> = None;
        let mut access: Vec<&Directive> = Vec::new();
        // a `rewrite ... last|break` read (nginx skips the rewrite lines
        // after it when it matches)
        let mut stopped = false;
        // add_header and proxy_set_header rules of the server itself
        let mut add_headers: Vec<Table> = Vec::new();
        let mut set_headers: Vec<Table> = Vec::new();
        // its own error_page lines (without any, the http level's hold)
        let mut own_pages: Vec<Directive> = Vec::new();
        for e in b {
            let a0 = e.args.first().cloned().unwrap_or_default();
            match e.name.as_str() {
                "listen" => match listen_addr(&a0) {
                    Ok(addr) => {
                        let mut approx = Vec::new();
                        // ssl, default_server, proxy_protocol: of this address
                        let mut ls = Listen {
                            addr,
                            ssl: false,
                            default: false,
                            proxy_protocol: false,
                        };
                        for o in &e.args[1..] {
                            match o.as_str() {
                                "ssl" => ls.ssl = true,
                                "default_server" | "default" => ls.default = true,
                                "http2" => {}
                                "proxy_protocol" => ls.proxy_protocol = true,
                                "reuseport" => {}
                                o => approx.push(o.to_string()),
                            }
                        }
                        sv.binds.push(ls);
                        if approx.is_empty() {
                            self.mapped(
                                e,
                                "bind (and TLS, default_server, proxy_protocol as given)",
                            );
                        } else {
                            self.approx(e, format!("bind; not imported: {}", approx.join(" ")));
                        }
                    }
                    Err(er) => self.unsupported(e, er),
                },
                "http2" => {
                    self.mapped(e, "rampart serves HTTP/2 (h2 by ALPN on TLS, h2c in clear)")
                }
                "server_name" => {
                    let mut approx = false;
                    for n in &e.args {
                        if n.starts_with('~') {
                            approx = true;
                        } else if n == "_" || n.is_empty() || n == "localhost" && e.args.len() == 1
                        {
                            // catch-all names
                            if n != "localhost" {
                                continue;
                            }
                            sv.names.push(n.clone());
                        } else if let Some(d) = n.strip_prefix('.') {
                            sv.names.push(d.to_string());
                            sv.names.push(format!("*.{d}"));
                        } else if n.starts_with("*.") && !n[2..].contains('*')
                            || n.ends_with(".*") && !n[..n.len() - 2].contains('*')
                            || !n.contains('*')
                        {
                            sv.names.push(n.clone());
                        } else {
                            approx = true;
                        }
                    }
                    if approx {
                        self.approx(
                            e,
                            "host matches; regex and mid-name wildcard names are not imported",
                        );
                    } else {
                        self.mapped(e, "host matches of its rules");
                    }
                }
                "ssl_certificate" => {
                    sv.certs.push(a0.clone());
                    self.mapped(e, "[listener.tls] cert");
                }
                "ssl_certificate_key" => {
                    sv.keys.push(a0.clone());
                    self.mapped(e, "[listener.tls] cert's key");
                }
                "ssl_client_certificate" | "ssl_trusted_certificate"
                    if e.name == "ssl_client_certificate" =>
                {
                    sv.tls_extra.set("client_ca", s(&a0));
                    client_ca_entry = Some(self.report.len());
                    self.mapped(e, "[listener.tls] client_ca, with ssl_verify_client on or optional (nginx verifies no client certificate without it)");
                }
                "ssl_crl" => {
                    sv.tls_extra.set("client_crl", s(&a0));
                    client_crl_entry = Some(self.report.len());
                    self.mapped(
                        e,
                        "[listener.tls] client_crl, where client certificates are verified",
                    );
                }
                "ssl_verify_client" => match a0.as_str() {
                    "on" => {
                        sv.tls_extra.set("client_auth", s("required"));
                        self.mapped(e, "[listener.tls] client_auth = \"required\"");
                    }
                    "optional" => {
                        sv.tls_extra.set("client_auth", s("optional"));
                        self.mapped(e, "[listener.tls] client_auth = \"optional\"");
                    }
                    "off" => {
                        // the http level's ssl_verify_client no longer holds
                        sv.tls_extra.0.retain(|(k, _)| k != "client_auth");
                        self.mapped(e, "no client certificates: client_ca is not used");
                    }
                    _ => {
                        sv.tls_extra.0.retain(|(k, _)| k != "client_auth");
                        self.unsupported(
                            e,
                            "a client certificate asked for and not verified (optional_no_ca) is not in rampart: no client certificates",
                        );
                    }
                },
                "ssl_protocols" => {
                    if !e.args.iter().any(|p| p == "TLSv1.2")
                        && e.args.iter().any(|p| p == "TLSv1.3")
                    {
                        sv.tls_extra.set("min_version", s("1.3"));
                        self.mapped(e, "[listener.tls] min_version = \"1.3\"");
                    } else {
                        self.approx(
                            e,
                            "rampart serves TLS 1.2 and 1.3 (older versions are refused)",
                        );
                    }
                }
                "ssl_ciphers"
                | "ssl_prefer_server_ciphers"
                | "ssl_session_cache"
                | "ssl_session_timeout"
                | "ssl_session_tickets"
                | "ssl_dhparam"
                | "ssl_ecdh_curve"
                | "ssl_stapling"
                | "ssl_stapling_verify"
                | "ssl_buffer_size" => self.approx(
                    e,
                    "rustls chooses modern suites; resumption and tickets are on",
                ),
                "location" => {
                    if let Some(l) = self.location(e) {
                        sv.locs.push(l);
                    }
                }
                "return" | "rewrite" => {
                    let entry = self.report.len();
                    let mut rules = Vec::new();
                    self.return_or_rewrite(e, &mut rules);
                    sv.pre.extend(rules);
                    self.after_a_stop(e, entry, &mut stopped);
                }
                "allow" | "deny" => access.push(e),
                "limit_req" => {
                    let mut rules = Vec::new();
                    self.limit_req(e, &mut rules);
                    sv.pre.extend(rules);
                }
                "add_header" => {
                    let mut rules = Vec::new();
                    self.add_header(e, &mut rules);
                    add_headers.extend(rules.iter().cloned());
                    sv.pre.extend(rules);
                }
                "proxy_pass" => {
                    self.unsupported(e, "proxy_pass belongs in a location");
                }
                "root" => {
                    // (mapped if an error page is read from it)
                    sv.root = Some((a0.clone(), self.report.len()));
                    self.unsupported(e, "rampart serves no files: put a file server behind it");
                }
                "error_page" => own_pages.push(e.clone()),
                "client_max_body_size" => match e.args.first().and_then(|a| size(a)) {
                    Some(n) => {
                        // (before the locations: one of theirs is the last word)
                        let mut t = Table::default();
                        t.set("max_request_body", n.to_string());
                        sv.pre.push(t);
                        self.mapped(e, "a rule of this server's requests: their max_request_body, unless a location says its own");
                    }
                    None => self.unsupported(e, "not a size"),
                },
                "index" | "try_files" | "autoindex" => {
                    self.unsupported(e, "rampart serves no files: put a file server behind it")
                }
                _ if sv.real_ip.read(e) => self.real_ip_line(e),
                n if (n == "gzip" || n.starts_with("gzip_")) && n != "gzip_static" => {
                    sv.gzip.read(e);
                    self.gzip_line(e);
                }
                _ if self.common(e) => {}
                _ => {
                    let mut t = Table::default();
                    if e.name == "proxy_set_header" {
                        let mut rules = Vec::new();
                        self.proxy_set_header(e, Some(&mut rules));
                        set_headers.extend(rules.iter().cloned());
                        sv.pre.extend(rules);
                    } else if self.proxy_setting(e, &mut t) {
                        settings.0.extend(t.0);
                    } else {
                        self.unsupported(e, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        // nginx verifies client certificates only with ssl_verify_client on
        // or optional (the server's own, else the http level's); rampart
        // requires them whenever client_ca is given
        if sv.tls_extra.get("client_auth").is_none() && sv.tls_extra.get("client_ca").is_some() {
            sv.tls_extra.0.retain(|(k, _)| k != "client_ca");
            if let Some(i) = client_ca_entry {
                if let Some(en) = self.report.get_mut(i) {
                    en.note = "not imported: no ssl_verify_client on or optional holds for this server (its own or the http level's), so nginx asks for no client certificate; rampart would require one with client_ca".into();
                }
            }
        }
        // a CRL is read only where client certificates are verified
        if sv.tls_extra.get("client_ca").is_none() && sv.tls_extra.get("client_crl").is_some() {
            sv.tls_extra.0.retain(|(k, _)| k != "client_crl");
            if let Some(i) = client_crl_entry {
                if let Some(en) = self.report.get_mut(i) {
                    en.note = "not imported: this server verifies no client certificate (no ssl_client_certificate with ssl_verify_client on or optional), so nginx reads no CRL".into();
                }
            }
        }
        // allow/deny, add_header, proxy_set_header: a location with any of its
        // own inherits none of the server's of that kind. When one has, the
        // server's rules go to the other locations (headers: those that
        // proxy, since rampart's own answers take no header edits) instead of
        // applying to every request.
        let server_access = self.access_rules(&access);
        if sv.locs.iter().any(|l| l.own_add_header) && !add_headers.is_empty() {
            sv.pre.retain(|r| !add_headers.iter().any(|h| h.0 == r.0));
            for l in sv
                .locs
                .iter_mut()
                .filter(|l| !l.own_add_header && l.pool.is_some())
            {
                for (k, h) in add_headers.iter().enumerate() {
                    l.rules.insert(k, h.clone());
                }
            }
        }
        if sv.locs.iter().any(|l| l.own_set_header) && !set_headers.is_empty() {
            sv.pre.retain(|r| !set_headers.iter().any(|h| h.0 == r.0));
            for l in sv
                .locs
                .iter_mut()
                .filter(|l| !l.own_set_header && l.pool.is_some())
            {
                for (k, h) in set_headers.iter().enumerate() {
                    l.rules.insert(k, h.clone());
                }
            }
        }
        if let Some(r) = server_access {
            if sv.locs.iter().any(|l| l.own_access) {
                for l in sv.locs.iter_mut().filter(|l| !l.own_access) {
                    l.rules.insert(0, r.clone());
                }
            } else {
                sv.pre.insert(0, r);
            }
        }
        if sv.binds.is_empty() {
            sv.binds.push(Listen {
                addr: "0.0.0.0:80".into(),
                ssl: false,
                default: false,
                proxy_protocol: false,
            });
            self.report.push(Entry {
                line: d.line,
                directive: "server".into(),
                fidelity: Fidelity::Mapped,
                note: "no listen: nginx's default, *:80".into(),
            });
        }
        self.server_pages(&mut sv, &own_pages);
        // proxy settings of the server apply to the pools its locations use,
        // after the http level's and before the locations' own (nginx: a
        // location's setting wins, and a server's setting holds wherever it
        // is in the block). Each level's entry holds only its own directives.
        let mut at = first_setting;
        for l in &sv.locs {
            if let Some(p) = &l.pool {
                self.pool_settings.insert(at, (p.clone(), settings.clone()));
                at += 1;
            }
        }
        self.servers.push(sv);
    }

    /// `allow` / `deny` lines: first match wins; rampart writes the common
    /// shapes: allows then `deny all`, or denies then (optionally) `allow all`.
    pub(super) fn access_rules(&mut self, access: &[&Directive]) -> Option<Table> {
        if access.is_empty() {
            return None;
        }
        let last_all = access
            .last()
            .is_some_and(|d| d.args.first().map(String::as_str) == Some("all"));
        let body = &access[..access.len() - usize::from(last_all)];
        let allow_then_deny_all = last_all
            && access.last().is_some_and(|d| d.name == "deny")
            && body.iter().all(|d| d.name == "allow");
        let deny_then_allow = body.iter().all(|d| d.name == "deny")
            && (!last_all || access.last().is_some_and(|d| d.name == "allow"));
        if access.iter().all(|d| d.name == "allow") {
            for d in access {
                self.mapped(d, "everyone may: nothing to write");
            }
            return None;
        }
        let nets: Vec<String> = body
            .iter()
            .filter_map(|d| d.args.first().cloned())
            .collect();
        let valid = nets.iter().all(|n| {
            let a = n.split('/').next().unwrap_or("");
            a.parse::<std::net::IpAddr>().is_ok()
        });
        let rule = if !valid {
            None
        } else if allow_then_deny_all {
            src_complement(&nets).ok().map(|rest| {
                let mut t = Table::default();
                if !rest.is_empty() {
                    t.set("src", list(&rest));
                }
                t.set("deny", "403".into());
                t
            })
        } else if deny_then_allow && !nets.is_empty() {
            let mut t = Table::default();
            t.set("src", list(&nets));
            t.set("deny", "403".into());
            Some(t)
        } else {
            None
        };
        for d in access {
            if rule.is_some() {
                self.mapped(d, "a deny = 403 rule on the addresses it leaves out");
            } else {
                self.unsupported(d, "this order of allow and deny is not mapped (allows then deny all, or denies then allow all)");
            }
        }
        rule
    }

    pub(super) fn add_header(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        match (e.args.first(), e.args.get(1)) {
            (Some(n), Some(v)) if !v.contains('$') && out::header_ok(n, Some(v)).is_ok() => {
                let mut r = Table::default();
                r.set("response_set_header", format!("{{ {} = {} }}", s(n), s(v)));
                rules.push(r);
                if e.args.get(2).map(String::as_str) == Some("always") {
                    self.mapped(e, "a response_set_header rule");
                } else {
                    self.approx(e, "a response_set_header rule (nginx adds it to 2xx/3xx answers only, without always)");
                }
            }
            _ => self.unsupported(e, "a value from nginx variables is not mapped"),
        }
    }

    pub(super) fn limit_req(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        let mut zone = None;
        let mut burst = 0u64;
        let mut nodelay = false;
        for a in &e.args {
            if let Some(z) = a.strip_prefix("zone=") {
                zone = Some(z.to_string());
            } else if let Some(b) = a.strip_prefix("burst=") {
                burst = b.parse().unwrap_or(0);
            } else if a == "nodelay" {
                nodelay = true;
            }
        }
        let Some(&zi) = zone.as_ref().and_then(|z| self.zones.get(z)) else {
            self.unsupported(e, "the zone is not defined in this file");
            return;
        };
        let name = zone.unwrap_or_default();
        self.cfg.rate_limits[zi].set("burst", burst.to_string());
        let mut r = Table::default();
        r.set("rate_limit", s(&name));
        rules.push(r);
        let mut note = format!("a rule with rate_limit = {name:?}, burst {burst}; rampart answers 429 (nginx: limit_req_status, 503 by default)");
        if !nodelay && burst > 0 {
            note.push_str("; without nodelay nginx delays requests within the burst, rampart passes them at once");
        }
        self.approx(e, note);
    }

    /// `return` and `rewrite ... redirect|permanent` → deny or redirect rules.
    pub(super) fn return_or_rewrite(&mut self, e: &Directive, rules: &mut Vec<Table>) {
        let server_name = self.server_name.clone();
        let vars = |t: &str| -> Option<String> { redirect_vars(t, &server_name) };
        let mut r = Table::default();
        if e.name == "return" {
            let code: Option<u16> = e.args.first().and_then(|c| c.parse().ok());
            match (code, e.args.get(1)) {
                (Some(c @ (301 | 302 | 303 | 307 | 308)), Some(url)) => match vars(url) {
                    Some(to) => {
                        r.set("redirect", format!("{{ to = {}, status = {c} }}", s(&to)));
                        self.mapped(e, "a redirect rule");
                    }
                    None => {
                        self.unsupported(e, "a target with nginx variables other than $host, $request_uri, $uri, $is_args$args, $server_name is not mapped");
                        return;
                    }
                },
                (None, Some(_)) | (None, None)
                    if e.args.first().is_some_and(|u| u.starts_with("http")) =>
                {
                    match e.args.first().and_then(|u| vars(u)) {
                        Some(to) => {
                            r.set("redirect", format!("{{ to = {}, status = 302 }}", s(&to)));
                            self.mapped(e, "a redirect rule (302)");
                        }
                        None => {
                            self.unsupported(e, "a target with nginx variables is not mapped");
                            return;
                        }
                    }
                }
                (Some(c), body) if (400..=599).contains(&c) => {
                    match body {
                        Some(b) if !b.contains('$') => {
                            r.set("deny", format!("{{ status = {c}, body = {} }}", s(b)))
                        }
                        _ => r.set("deny", c.to_string()),
                    }
                    self.mapped(e, "a deny rule");
                }
                (Some(c), body) if (200..=299).contains(&c) => match body {
                    Some(b) if b.contains('$') => {
                        self.unsupported(e, "a text with nginx variables is not mapped");
                        return;
                    }
                    Some(_) if c == 204 => {
                        self.unsupported(e, "a 204 answer has no body");
                        return;
                    }
                    Some(b) => match self.return_type.clone() {
                        Some(ct) => {
                            r.set(
                                "respond",
                                format!(
                                    "{{ status = {c}, body = {}, content_type = {} }}",
                                    s(b),
                                    s(&ct)
                                ),
                            );
                            self.mapped(e, "a respond rule, with the location's Content-Type");
                        }
                        None => {
                            r.set("respond", format!("{{ status = {c}, body = {} }}", s(b)));
                            self.approx(e, "a respond rule, its Content-Type text/plain (nginx's is the default_type in force or the type of the URI's extension; a location's own default_type or added Content-Type is read)");
                        }
                    },
                    None => {
                        r.set("respond", format!("{{ status = {c} }}"));
                        self.mapped(e, "a respond rule");
                    }
                },
                _ => {
                    self.unsupported(e, "rampart's rules answer 2xx, redirects (3xx with a target) and errors (400-599), not other statuses");
                    return;
                }
            }
        } else {
            // rewrite REGEX REPLACEMENT [flag]
            let (Some(re), Some(rep)) = (e.args.first(), e.args.get(1)) else {
                self.unsupported(e, "rewrite REGEX REPLACEMENT expected");
                return;
            };
            let flag = e.args.get(2).map(String::as_str).unwrap_or("");
            let status = match flag {
                "redirect" => 302,
                "permanent" => 301,
                _ if rep.starts_with("http://") || rep.starts_with("https://") => 302,
                "" | "last" | "break" => {
                    match rewrite_path(re, rep) {
                        Ok(t) => {
                            r.set("rewrite_path", t);
                            self.mapped(e, "a rule's rewrite_path (later rules and the routes see the new path)");
                            rules.push(r);
                        }
                        Err(why) => self.unsupported(e, why),
                    }
                    return;
                }
                _ => {
                    self.unsupported(e, format!("unknown flag {flag:?}"));
                    return;
                }
            };
            if rep.contains("$1") || rep.contains("$2") {
                self.unsupported(
                    e,
                    "a redirect built from the regex's captures is not mapped",
                );
                return;
            }
            let Some(to) = vars(rep) else {
                self.unsupported(e, "a target with nginx variables is not mapped");
                return;
            };
            if regex::Regex::new(re).is_err() {
                self.unsupported(e, "a regex rampart's regex crate refuses");
                return;
            }
            r.set("path_regex", s(re));
            r.set(
                "redirect",
                format!("{{ to = {}, status = {status} }}", s(&to)),
            );
            self.approx(e, "a redirect rule on the path (nginx matches the regex against the URI, and appends the query)");
        }
        rules.push(r);
    }

    /// After the rewrite-module line `d` (its report at `entry`): one that
    /// follows a `rewrite ... last|break` of its level is approximated, as
    /// nginx runs it only when that rewrite did not match, and rampart's
    /// rules always do; `stopped` is set by such a rewrite.
    fn after_a_stop(&mut self, d: &Directive, entry: usize, stopped: &mut bool) {
        if *stopped {
            if let Some(en) = self.report.get_mut(entry) {
                if en.fidelity == Fidelity::Mapped {
                    en.fidelity = Fidelity::Approximated;
                }
                en.note.push_str("; after a rewrite ... last|break: nginx skips it when that rewrite matched, rampart's rule applies");
            }
        }
        *stopped |= d.name == "rewrite"
            && matches!(d.args.get(2).map(String::as_str), Some("last" | "break"));
    }

    pub(super) fn location(&mut self, e: &Directive) -> Option<Loc> {
        let (kind, pat) = match e.args.as_slice() {
            [m, p] if m == "=" => (LocKind::Exact, p.clone()),
            [m, p] if m == "^~" => (LocKind::PrefixStop, p.clone()),
            [m, p] if m == "~" || m == "~*" => (
                LocKind::Regex,
                if m == "~*" {
                    format!("(?i){p}")
                } else {
                    p.clone()
                },
            ),
            [p] if p.starts_with('@') => {
                self.unsupported(
                    e,
                    "named locations (error_page / try_files targets) are not mapped",
                );
                return None;
            }
            [p] => (LocKind::Prefix, p.clone()),
            _ => {
                self.unsupported(e, "location [=|^~|~|~*] PATTERN expected");
                return None;
            }
        };
        let mut m = Table::default();
        match kind {
            LocKind::Exact if pat.starts_with('/') => m.set("path", s(&pat)),
            LocKind::PrefixStop | LocKind::Prefix if pat == "/" => {}
            LocKind::PrefixStop | LocKind::Prefix if pat.starts_with('/') => {
                m.set("path_prefix", s(&pat))
            }
            LocKind::Regex if regex::Regex::new(&pat).is_ok() => m.set("path_regex", s(&pat)),
            _ => {
                self.unsupported(
                    e,
                    "a pattern rampart cannot match (paths start with /; the regex crate's syntax)",
                );
                return None;
            }
        }
        let block = e.block.clone().unwrap_or_default();
        let has = |name: &str| block.iter().any(|d| d.name == name);
        let mut loc = Loc {
            kind,
            m,
            len: pat.len(),
            pat: pat.clone(),
            line: e.line,
            text: e.text(),
            rules: Vec::new(),
            pool: None,
            uri_rewrite: None,
            break_rewrite: None,
            own_access: has("allow") || has("deny"),
            own_add_header: has("add_header"),
            own_set_header: has("proxy_set_header"),
            root: None,
            alias: None,
            max_body: None,
            host_header: None,
            replaces: Vec::new(),
            try_uri: block
                .iter()
                .find(|d| {
                    d.name == "try_files" && d.args.first().map(String::as_str) == Some("$uri")
                })
                .map(|d| d.args.last().filter(|a| *a != "=404").cloned()),
            handler: block
                .iter()
                .find(|d| passes_on(&d.name) || matches!(d.name.as_str(), "return" | "rewrite"))
                .map(|d| d.name.clone()),
            // (an `internal` location answers a client 404 first)
            slash_redirect: kind != LocKind::Regex
                && pat.len() > 1
                && pat.ends_with('/')
                && !has("internal")
                && block.iter().any(|d| passes_on(&d.name)),
        };
        self.mapped(
            e,
            if loc.slash_redirect {
                "rules matching this path, in nginx's order of precedence; its name without the final slash is redirected to it (301), as nginx does where no location has that name"
            } else {
                "rules matching this path, in nginx's order of precedence"
            },
        );
        // the location's own proxy settings: the server's and the http
        // level's go before them (see `server` and `finish`)
        let mut local = Table::default();
        let mut access: Vec<&Directive> = Vec::new();
        // the report entry of the `rewrite ... break` kept
        let mut breaks_at: Option<usize> = None;
        // the report entry of its client_max_body_size
        let mut body_at: Option<usize> = None;
        // a `rewrite ... last|break` read (see `after_a_stop`)
        let mut stopped = false;
        // proxy_pass's URL and its report entry
        let mut pass: Option<(String, usize)> = None;
        // the type of a `return`'s text here (an added field is the last word)
        self.return_type =
            block
                .iter()
                .rev()
                .find_map(|d| match (d.name.as_str(), d.args.as_slice()) {
                    ("default_type", [t]) => Some(t.clone()),
                    ("add_header", [n, v, ..]) if n.eq_ignore_ascii_case("content-type") => {
                        Some(v.clone())
                    }
                    _ => None,
                });
        for d in &block {
            match d.name.as_str() {
                "proxy_pass" => {
                    let prefix = (kind != LocKind::Regex).then_some(pat.as_str());
                    pass = Some((d.args.first().cloned().unwrap_or_default(), self.report.len()));
                    match self.proxy_pass(d, prefix) {
                        Some((pool, uri)) => {
                            loc.pool = Some(pool);
                            loc.uri_rewrite = uri;
                        }
                        None => loc.pool = None,
                    }
                }
                "return" | "rewrite" => {
                    let entry = self.report.len();
                    let mut rules = Vec::new();
                    self.return_or_rewrite(d, &mut rules);
                    let path_rewrite = rules
                        .last()
                        .and_then(|r| r.get("rewrite_path"))
                        .map(str::to_string);
                    if let Some(value) = path_rewrite {
                        rules.pop();
                        let again = "nginx searches the locations again with the new path: rampart's rules after this one (in nginx's order) and the routes see it, not those before it";
                        let note = if d.args.get(2).map(String::as_str) != Some("break") {
                            // `last`, or no flag: a rule of its own
                            let mut r = Table::default();
                            r.set("rewrite_path", value);
                            loc.rules.push(r);
                            Some((Fidelity::Approximated, again.to_string()))
                        } else if loc.break_rewrite.is_some() {
                            Some((Fidelity::Unsupported, "only a location's first rewrite ... break is imported".to_string()))
                        } else {
                            let re = d.args.first().cloned().unwrap_or_default();
                            loc.break_rewrite = Some((value, re));
                            breaks_at = Some(entry);
                            Some((Fidelity::Mapped, "the rewrite_path of the rule that proxies this location's requests".to_string()))
                        };
                        if let (Some((f, n)), Some(en)) = (note, self.report.get_mut(entry)) {
                            en.fidelity = f;
                            en.note = n;
                        }
                        self.after_a_stop(d, entry, &mut stopped);
                        continue;
                    }
                    if kind == LocKind::Regex && rules.iter().any(|r| r.get("path_regex").is_some())
                    {
                        // both regexes would have to match: a rule has one
                        if let Some(en) = self.report.get_mut(entry) {
                            en.fidelity = Fidelity::Unsupported;
                            en.note = "a rewrite inside a regex location: both regexes must match, and a rampart rule has one path_regex; not imported".into();
                        }
                    } else {
                        loc.rules.extend(rules);
                    }
                    self.after_a_stop(d, entry, &mut stopped);
                }
                "allow" | "deny" => access.push(d),
                "limit_req" => self.limit_req(d, &mut loc.rules),
                "add_header" => self.add_header(d, &mut loc.rules),
                "proxy_set_header" => {
                    self.proxy_set_header(d, Some(&mut loc.rules));
                }
                "location" => self.unsupported(d, "nested locations are not mapped"),
                "root" | "alias" => {
                    // (mapped if an error page is read from it)
                    let v = Some((d.args.first().cloned().unwrap_or_default(), self.report.len()));
                    if d.name == "root" {
                        loc.root = v;
                    } else {
                        loc.alias = v;
                    }
                    self.unsupported(d, "rampart serves no files: put a file server behind it");
                }
                "index" | "try_files" | "autoindex" | "expires" => {
                    self.unsupported(d, "rampart serves no files: put a file server behind it")
                }
                "error_page" => self.unsupported(
                    d,
                    "not imported: rampart's error_pages are a listener's, not a path's; put the line in the server block",
                ),
                "client_max_body_size" => match d.args.first().and_then(|a| size(a)) {
                    Some(n) => {
                        loc.max_body = Some(n);
                        body_at = Some(self.report.len());
                        self.mapped(d, "the max_request_body of the rules that proxy this location's requests");
                    }
                    None => self.unsupported(d, "not a size"),
                },
                "proxy_buffering"
                | "proxy_buffers"
                | "proxy_buffer_size"
                | "proxy_busy_buffers_size"
                | "proxy_request_buffering"
                | "proxy_cache"
                | "proxy_cache_valid"
                | "proxy_intercept_errors"
                | "proxy_ssl_server_name"
                | "proxy_ssl_verify"
                | "proxy_ssl_name"
                | "proxy_hide_header"
                | "proxy_pass_header"
                | "proxy_ignore_headers"
                | "proxy_cookie_path" => self.approx(
                    d,
                    "rampart streams without buffering or caching; this is not imported",
                ),
                _ if self.common(d) => {}
                _ => {
                    let mut t = Table::default();
                    if self.proxy_setting(d, &mut t) {
                        local.0.extend(t.0);
                    } else {
                        self.unsupported(d, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        self.return_type = None;
        if let (Some(en), None) = (breaks_at.and_then(|i| self.report.get_mut(i)), &loc.pool) {
            en.fidelity = Fidelity::Unsupported;
            en.note = "a rewrite ... break in a location that does not proxy: rampart has nothing to send the new path to".into();
            loc.break_rewrite = None;
        }
        if let (Some(en), None) = (body_at.and_then(|i| self.report.get_mut(i)), &loc.pool) {
            en.fidelity = Fidelity::Unsupported;
            en.note = "not imported: the location does not proxy to a pool rampart has".into();
        }
        if let Some(r) = self.access_rules(&access) {
            loc.rules.insert(0, r);
        }
        if let (Some(_), Some((url, at))) = (&loc.pool, &pass) {
            self.host_and_redirects(&mut loc, &block, url, *at);
        }
        if let Some(p) = &loc.pool {
            self.pool_settings.push((p.clone(), local));
        }
        Some(loc)
    }

    /// nginx's defaults where no line of the location's, its server's or
    /// the http level's says otherwise: the server gets proxy_pass's host as
    /// its Host (`proxy_set_header Host $proxy_host`), and a redirect of its
    /// to proxy_pass's URL comes back as one to the location
    /// (`proxy_redirect default`). Said on the proxy_pass line (`at`).
    fn host_and_redirects(&mut self, loc: &mut Loc, block: &[Directive], url: &str, at: usize) {
        let held = proxied::Inherit::of(block, false)
            .or(&self.server_inherit)
            .or(&self.http_inherit);
        let mut notes = Vec::new();
        if held.host_unsure {
            notes.push(
                "an include where it is may set proxy_set_header lines: rampart passes the client's Host (nginx sends proxy_pass's host unless the included file sets Host)".into(),
            );
        }
        if held.host != Some(true) {
            if let Some(h) = proxied::proxy_host(url) {
                notes.push(format!(
                    "the server gets Host {h:?}, nginx's default (proxy_set_header Host $proxy_host) where no proxy_set_header Host holds"
                ));
                loc.host_header = Some(h);
            }
        }
        let name = matches!(
            loc.kind,
            LocKind::Exact | LocKind::Prefix | LocKind::PrefixStop
        )
        .then_some(loc.pat.as_str());
        // nginx's implicit `proxy_redirect default` is for servers told
        // their name is proxy_pass's: one that gets the client's Host
        // redirects to that (each rewrite an edit of every answer, and one
        // that keeps HTTP/2 answers off their shortest path)
        if held.redirects.is_some() || loc.host_header.is_some() {
            loc.replaces = proxied::redirect_replaces(held.redirects.as_deref(), url, name);
        }
        if held.redirects.is_none() && !loc.replaces.is_empty() {
            notes.push(
                "a Location or Refresh from it to proxy_pass's URL is rewritten to the location's, nginx's proxy_redirect default".into(),
            );
        }
        if let Some(en) = self.report.get_mut(at) {
            if held.host_unsure {
                en.fidelity = Fidelity::Approximated;
            }
            for n in notes {
                en.note.push_str("; ");
                en.note.push_str(&n);
            }
        }
    }
}

/// Whether a directive hands a location's requests to another server (what
/// gives a location nginx's `auto_redirect`).
fn passes_on(name: &str) -> bool {
    matches!(
        name,
        "proxy_pass" | "fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass"
    )
}

/// `rewrite REGEX REPLACEMENT` (a path, not a redirect) → the value of a
/// rule's `rewrite_path`: nginx's `$1`..`$9` and named captures become
/// `${1}`, `${name}`; other variables, a query (`?`) and encoded bytes are
/// not rampart's (its `to` is a decoded path).
pub(super) fn rewrite_path(re: &str, rep: &str) -> Result<String, String> {
    let Ok(compiled) = regex::Regex::new(re) else {
        return Err("a regex rampart's regex crate refuses".into());
    };
    if let Some(c) = rep.chars().find(|c| matches!(c, '?' | '#' | '%')) {
        return Err(format!(
            "{c:?} in the replacement: rampart rewrites the path only (the query stays the client's), written decoded"
        ));
    }
    let to = proxied::captures_as_rampart(rep, &compiled).map_err(|name| match name.as_str() {
        "{" => "an unclosed ${ in the replacement".to_string(),
        _ => format!(
            "${name} in the replacement is not one of the regex's captures: rampart rewrites from captures only"
        ),
    })?;
    Ok(format!("{{ regex = {}, to = {} }}", s(re), s(&to)))
}

/// A redirect target's nginx variables → rampart's placeholders: `$host`,
/// `$request_uri`, `$uri`, `$is_args$args`, and `$server_name` (the server's
/// first name, as written). Only whole variable names (`$name` or `${name}`)
/// are replaced; None when another variable is there.
pub(super) fn redirect_vars(t: &str, server_name: &str) -> Option<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, mut used) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}')?;
                (&braced[..end], end + 2)
            }
            None => {
                let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match name {
            "request_uri" => out.push_str("{uri}"),
            "host" => out.push_str("{host}"),
            "uri" => out.push_str("{path}"),
            "server_name" if !server_name.contains(['{', '}', '$']) => out.push_str(server_name),
            "is_args"
                if after[used..].starts_with("$args")
                    && !after[used + 5..].starts_with(is_name) =>
            {
                out.push_str("{query}");
                used += 5;
            }
            _ => return None,
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    Some(out)
}
