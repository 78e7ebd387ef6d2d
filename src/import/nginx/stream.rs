//! The `stream` level: TCP listeners and upstreams.

use super::{cert_list, duration, listen_addr, Importer, Stream};
use crate::import::nginx_parse::Directive;
use crate::import::out::{s, Table};
use crate::import::Entry;
use crate::import::Fidelity;
use std::collections::HashMap;

/// A `map $ssl_preread_server_name $VAR`: the pool for each name, in
/// nginx's precedence, and the pool of any other name.
#[derive(Clone)]
struct SniMap {
    line: usize,
    routes: Vec<(String, String)>,
    /// The pool of its `""` line: a ClientHello without a name (and, as
    /// nginx reads no name there, a listener that does not preread).
    empty: Option<String>,
    default: Option<String>,
}

/// Whether an nginx time is zero.
fn zero(t: &str) -> bool {
    t.trim_end_matches(char::is_alphabetic).parse::<u64>() == Ok(0)
}

/// The source of the maps that route by SNI.
const SNI_VAR: &str = "$ssl_preread_server_name";

impl Importer {
    pub(super) fn stream_level(&mut self, ds: &[Directive]) {
        for d in ds {
            if d.name == "upstream" {
                self.upstream(d, true);
            } else if d.name == "resolver" {
                self.resolver(d);
            }
        }
        // the maps of the server name that a server's proxy_pass names (the
        // others are reported below)
        let named: Vec<String> = ds
            .iter()
            .filter(|d| d.name == "server")
            .flat_map(|d| d.block.iter().flatten())
            .filter(|e| e.name == "proxy_pass")
            .filter_map(|e| e.args.first().cloned())
            .collect();
        let mut maps: HashMap<String, SniMap> = HashMap::new();
        for d in ds {
            if d.name == "map"
                && d.args.len() == 2
                && d.args[0] == SNI_VAR
                && named.contains(&d.args[1])
            {
                let m = self.sni_map(d);
                maps.insert(d.args[1].clone(), m);
            }
        }
        let preread_timeout = ds
            .iter()
            .find(|d| d.name == "preread_timeout")
            .and_then(|d| d.args.first())
            .and_then(|a| duration(a));
        let mut inherited = Table::default();
        for d in ds {
            match d.name.as_str() {
                "upstream" | "resolver" => {}
                "map" if d.args.len() == 2 && maps.contains_key(&d.args[1]) => {}
                "map" if d.args.first().map(String::as_str) == Some(SNI_VAR) => self.unsupported(
                    d,
                    "no server's proxy_pass names its variable (a map of the server name becomes the routes of the listener whose proxy_pass names it)",
                ),
                "preread_timeout" => match &preread_timeout {
                    Some(t) if zero(t) => self.unsupported(
                        d,
                        "0: nginx closes a connection before it reads a ClientHello; rampart needs a time",
                    ),
                    Some(t) => self.mapped(
                        d,
                        format!("the listeners' request_header_timeout ({t}): how long rampart waits for the ClientHello it routes by"),
                    ),
                    None => self.unsupported(d, "not a duration"),
                },
                "server" => {
                    self.mapped(d, "a tcp [[listener]]");
                    let mut binds = Vec::new();
                    let mut pool = None;
                    let mut pool_less = false;
                    let mut name = None;
                    let mut routes = Vec::new();
                    let mut keys = Table::default();
                    if let Some(t) = preread_timeout.as_ref().filter(|t| !zero(t)) {
                        keys.set("request_header_timeout", s(t));
                    }
                    let block = d.block.as_deref().unwrap_or_default();
                    let preread = block
                        .iter()
                        .any(|e| e.name == "ssl_preread" && e.args.first().map(String::as_str) == Some("on"));
                    let ssl = block
                        .iter()
                        .any(|e| e.name == "listen" && e.args.iter().skip(1).any(|a| a == "ssl"));
                    let mut tls = Table::default();
                    let mut certs = (Vec::new(), Vec::new());
                    let mut pp = false;
                    let mut local = inherited.clone();
                    for e in block {
                        let a0 = e.args.first().cloned().unwrap_or_default();
                        match e.name.as_str() {
                            "listen" => match listen_addr(&a0) {
                                Ok(a) => {
                                    binds.push(a);
                                    let opts: Vec<&String> = e.args[1..].iter().collect();
                                    if opts.iter().any(|o| *o == "udp") {
                                        binds.pop();
                                        self.unsupported(e, "UDP is not proxied by rampart");
                                        continue;
                                    }
                                    if opts.iter().any(|o| *o == "proxy_protocol") {
                                        pp = true;
                                    }
                                    if opts.iter().any(|o| *o == "ssl") {
                                        tls.set("__ssl", "true".into());
                                    }
                                    self.mapped(e, "bind");
                                }
                                Err(er) => self.unsupported(e, er),
                            },
                            "proxy_pass" if maps.contains_key(&a0) => {
                                let m = &maps[&a0];
                                name = Some(format!("{}-tcp", a0.trim_start_matches('$')));
                                if preread && !ssl {
                                    if m.routes.is_empty() && m.empty.is_none() && m.default.is_none() {
                                        self.unsupported(
                                            e,
                                            format!("the map on line {} names no pool rampart can use", m.line),
                                        );
                                        continue;
                                    }
                                    pool = m.default.clone();
                                    let route = |sni: &str, p: &str| {
                                        let mut t = Table::default();
                                        t.set("sni", s(sni));
                                        t.set("pool", s(p));
                                        t
                                    };
                                    routes = m.routes.iter().map(|(sni, p)| route(sni, p)).collect();
                                    if let Some(p) = &m.empty {
                                        routes.push(route("", p));
                                    }
                                    let shown = match &m.default {
                                        Some(p) => format!("pool = {p:?}"),
                                        None => "no pool: nginx closes a connection whose name the map lacks (it has no default), and so does rampart".into(),
                                    };
                                    self.mapped(e, format!(
                                        "a [[listener.route]] by sni for each name of the map on line {}, and for any other name, {shown}",
                                        m.line
                                    ));
                                } else {
                                    // nginx reads no ClientHello here: the
                                    // name is empty
                                    let why = if ssl {
                                        "on a listen ... ssl, nginx deciphers first and reads no ClientHello"
                                    } else {
                                        "without ssl_preread on"
                                    };
                                    match m.empty.clone().or_else(|| m.default.clone()) {
                                        Some(p) => {
                                            self.mapped(e, format!(
                                                "pool = {p:?}: {why}, so {SNI_VAR} is empty and the map on line {} gives its \"\" line, else its default",
                                                m.line
                                            ));
                                            pool = Some(p);
                                        }
                                        None => {
                                            self.unsupported(e, format!(
                                                "{why}, so {SNI_VAR} is empty, and the map on line {} has no line for it: nginx closes every connection",
                                                m.line
                                            ));
                                            continue;
                                        }
                                    }
                                }
                                if pool.is_none() {
                                    // a tcp listener with routes and no pool
                                    pool_less = true;
                                }
                            }
                            "proxy_pass" => pool = self.proxy_pass(e, None).map(|(p, _)| p),
                            "preread_timeout" => match duration(&a0) {
                                Some(t) if zero(&t) => self.unsupported(
                                    e,
                                    "0: nginx closes a connection before it reads a ClientHello; rampart needs a time",
                                ),
                                Some(t) => {
                                    keys.set("request_header_timeout", s(&t));
                                    self.mapped(e, "the listener's request_header_timeout: how long rampart waits for the ClientHello it routes by");
                                }
                                None => self.unsupported(e, "not a duration"),
                            },
                            "proxy_timeout" => {
                                match duration(&a0) {
                                    Some(t) => {
                                        local.set("server_timeout", s(&t));
                                        self.mapped(e, "the pool's server_timeout (a tcp session's idle timeout)");
                                    }
                                    None => self.unsupported(e, "not a duration"),
                                }
                            }
                            "proxy_connect_timeout" => match duration(&a0) {
                                Some(t) => {
                                    local.set("connect_timeout", s(&t));
                                    self.mapped(e, "the pool's connect_timeout");
                                }
                                None => self.unsupported(e, "not a duration"),
                            },
                            "proxy_next_upstream" | "proxy_next_upstream_tries" => {
                                self.mapped(e, "rampart retries a failed connect on another server")
                            }
                            "proxy_protocol" if a0 == "on" => {
                                local.set("send_proxy", s("v1"));
                                self.mapped(e, "the pool's send_proxy = \"v1\"");
                            }
                            "ssl_certificate" => {
                                certs.0.push(a0);
                                self.mapped(e, "[listener.tls] cert");
                            }
                            "ssl_certificate_key" => {
                                certs.1.push(a0);
                                self.mapped(e, "[listener.tls] cert's key");
                            }
                            "ssl_preread" if !routes.is_empty() || maps.contains_key(
                                block
                                    .iter()
                                    .find(|p| p.name == "proxy_pass")
                                    .and_then(|p| p.args.first())
                                    .map(String::as_str)
                                    .unwrap_or_default(),
                            ) && preread => self.approx(
                                e,
                                "rampart reads the ClientHello's server name for the listener's routes, and routes what is not TLS as a hello without a name, as nginx does; a TLS record that is not a ClientHello it can read (malformed, or with a name TLS stacks could read apart) is closed, where nginx passes it on with an empty name",
                            ),
                            "ssl_preread" => self.approx(
                                e,
                                "rampart reads the SNI itself for routes with sni (none imported)",
                            ),
                            _ => self.unsupported(e, "no rampart equivalent is mapped"),
                        }
                    }
                    if pool.is_none() && !pool_less {
                        self.report.push(Entry {
                            line: d.line,
                            directive: "server".into(),
                            fidelity: Fidelity::Unsupported,
                            note: "no proxy_pass rampart can use: the listener is left out".into(),
                        });
                        continue;
                    };
                    let mut t = Table::default();
                    if tls.get("__ssl").is_some() {
                        if certs.0.is_empty() {
                            self.report.push(Entry {
                                line: d.line,
                                directive: "server".into(),
                                fidelity: Fidelity::Unsupported,
                                note: "listen ... ssl without an ssl_certificate in this server (stream-level certificates are not imported): the listener is left out".into(),
                            });
                            continue;
                        }
                        t.set("cert", cert_list(&certs.0, &certs.1));
                    }
                    // the server's timeouts and PROXY header are its
                    // sessions', whichever pool its map picks
                    let routed = routes
                        .iter()
                        .filter_map(|r| r.get("pool"))
                        .map(|p| p.trim_matches('"').to_string());
                    let mut named: Vec<String> = Vec::new();
                    for p in pool.iter().cloned().chain(routed) {
                        if !named.contains(&p) {
                            self.pool_settings.push((p.clone(), local.clone()));
                            named.push(p);
                        }
                    }
                    self.streams.push(Stream {
                        name: name.unwrap_or_else(|| {
                            format!("{}-tcp", named.first().map_or("", String::as_str))
                        }),
                        binds,
                        pool,
                        tls: t,
                        proxy_protocol: pp,
                        routes,
                        keys,
                    });
                }
                "proxy_timeout" | "proxy_connect_timeout" => {
                    match d.args.first().and_then(|a| duration(a)) {
                        Some(t) => {
                            let k = if d.name == "proxy_timeout" {
                                "server_timeout"
                            } else {
                                "connect_timeout"
                            };
                            inherited.set(k, s(&t));
                            self.mapped(d, format!("the pools' {k}"));
                        }
                        None => self.unsupported(d, "not a duration"),
                    }
                }
                "log_format" | "access_log" | "error_log" => {
                    self.approx(d, "rampart logs tcp sessions in its access log")
                }
                _ => self.unsupported(d, "no rampart equivalent is mapped"),
            }
        }
    }
}

impl Importer {
    /// A `map $ssl_preread_server_name $VAR { ... }`, each line reported:
    /// exact names first (as the map lists them), then `*.domain` and
    /// `name.*` patterns, longest first, as nginx looks them up.
    fn sni_map(&mut self, d: &Directive) -> SniMap {
        let block = d.block.as_deref().unwrap_or_default();
        let hostnames = block.iter().any(|e| e.name == "hostnames");
        let mut exact = Vec::new();
        let mut head = Vec::new();
        let mut tail = Vec::new();
        let mut default = None;
        let mut empty = None;
        let mut seen: Vec<String> = Vec::new();
        self.mapped(
            d,
            "the routes of the tcp listener whose proxy_pass names it",
        );
        for e in block {
            let value = match (e.name.as_str(), e.args.as_slice()) {
                ("hostnames", []) => {
                    self.mapped(e, "sni patterns: *.domain, name.* and .domain (the domain and any name under it)");
                    continue;
                }
                ("volatile", []) => {
                    self.mapped(e, "no effect: rampart reads the name once a connection");
                    continue;
                }
                ("include", _) => {
                    self.unsupported(e, "not followed: copy its lines into the map");
                    continue;
                }
                (_, [v]) => v.clone(),
                _ => {
                    self.unsupported(e, "a map line is NAME VALUE");
                    continue;
                }
            };
            let key = e.name.to_ascii_lowercase();
            if key.starts_with('~') {
                self.unsupported(e, "a regex name is not mapped: rampart's sni routes are names, *.domain and name.*");
                continue;
            }
            // a name's routes, checked before its value makes a pool
            let patterns: Option<Vec<String>> = if key == "default" || key.is_empty() {
                None
            } else {
                if key.ends_with('.') {
                    self.unsupported(
                        e,
                        "nginx looks a name up without its trailing dot: this line matches none",
                    );
                    continue;
                }
                let pats = match key.strip_prefix('.') {
                    Some(domain) if hostnames => vec![domain.to_string(), format!("*.{domain}")],
                    _ if !hostnames && (key.contains('*') || key.starts_with('.')) => {
                        self.unsupported(e, "without hostnames, the map compares this as text, which no server name holds");
                        continue;
                    }
                    _ => vec![key.clone()],
                };
                if let Some(Err(why)) = pats
                    .iter()
                    .map(|p| crate::router::HostMatch::parse(p).map(|_| ()))
                    .find(Result::is_err)
                {
                    self.unsupported(e, format!("not an sni route: {why}"));
                    continue;
                }
                if pats.iter().any(|p| seen.contains(p)) {
                    self.unsupported(e, "a name an earlier line has: nginx refuses the config (conflicting parameter)");
                    continue;
                }
                Some(pats)
            };
            let target = match self.target(&value, None) {
                Ok(t) => t,
                Err(why) => {
                    self.unsupported(e, why);
                    continue;
                }
            };
            let fidelity = if target.approx {
                Fidelity::Approximated
            } else {
                Fidelity::Mapped
            };
            let with_notes = |what: String| -> String {
                std::iter::once(what)
                    .chain(target.notes.iter().cloned())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let Some(patterns) = patterns else {
                let note = if key == "default" {
                    format!(
                        "the listener's pool = {:?}: a name no line has",
                        target.pool
                    )
                } else {
                    format!("[[listener.route]] sni = \"\", pool = {:?}: a ClientHello without a server name", target.pool)
                };
                self.note(e, fidelity, with_notes(note));
                if key == "default" {
                    default = Some(target.pool);
                } else {
                    empty = Some(target.pool);
                }
                continue;
            };
            let shown = patterns
                .iter()
                .map(|p| format!("sni = {p:?}"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.note(
                e,
                fidelity,
                with_notes(format!(
                    "[[listener.route]] {shown}, pool = {:?}",
                    target.pool
                )),
            );
            for p in patterns {
                seen.push(p.clone());
                let r = (p, target.pool.clone());
                if r.0.starts_with("*.") {
                    head.push(r);
                } else if r.0.ends_with(".*") {
                    tail.push(r);
                } else {
                    exact.push(r);
                }
            }
        }
        head.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        tail.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        exact.extend(head);
        exact.extend(tail);
        SniMap {
            line: d.line,
            routes: exact,
            empty,
            default,
        }
    }
}
