//! The `http` level: proxy settings and headers, upstreams and their servers
//! (and nginx Plus's `sticky cookie`), `proxy_pass`, resolvers and
//! `limit_req_zone`.

use super::proxied::{redirect_line, Redirect};
use super::{duration, size, Importer};
use crate::import::nginx_parse::Directive;
use crate::import::out::{self, list, s, Table};
use crate::import::Entry;
use crate::import::Fidelity;

impl Importer {
    /// Settings at http (or server) level that locations inherit.
    pub(super) fn proxy_setting(&mut self, d: &Directive, t: &mut Table) -> bool {
        let a0 = d.args.first().cloned().unwrap_or_default();
        match d.name.as_str() {
            "proxy_connect_timeout" | "proxy_read_timeout" => match duration(&a0) {
                Some(v) => {
                    let k = if d.name == "proxy_connect_timeout" {
                        "connect_timeout"
                    } else {
                        "server_timeout"
                    };
                    t.set(k, s(&v));
                    self.mapped(d, format!("the pool's {k}"));
                }
                None => self.unsupported(d, "not a duration"),
            },
            "proxy_send_timeout" => self.approx(
                d,
                "rampart has no write timeout toward servers; server_timeout bounds the exchange",
            ),
            "proxy_next_upstream" => {
                let mut on: Vec<String> = Vec::new();
                let mut approx = false;
                for a in &d.args {
                    match a.as_str() {
                        "error" => {
                            on.push("connect_failure".into());
                            on.push("reset".into());
                        }
                        "timeout" => on.push("timeout".into()),
                        "off" => {}
                        "non_idempotent" => {
                            t.set("retry_non_idempotent", "true".into());
                        }
                        h if h.starts_with("http_") => match h[5..].parse::<u16>() {
                            Ok(c) if (500..=599).contains(&c) => on.push(c.to_string()),
                            _ => approx = true,
                        },
                        _ => approx = true,
                    }
                }
                on.dedup();
                if d.args.iter().any(|a| a == "off") {
                    t.set("retries", "0".into());
                } else {
                    t.set("retry_on", list(&on));
                }
                if approx {
                    self.approx(d, "the pool's retry_on (http_403/404/429 and invalid_header are not retried by rampart)");
                } else {
                    self.mapped(d, "the pool's retry_on");
                }
            }
            "proxy_next_upstream_tries" => match a0.parse::<u32>() {
                Ok(n) => {
                    t.set("retries", n.saturating_sub(1).min(10).to_string());
                    self.mapped(d, "the pool's retries (tries - 1)");
                }
                Err(_) => self.unsupported(d, "not a number"),
            },
            "proxy_http_version" => self.mapped(d, "rampart speaks HTTP/1.1 to servers"),
            "proxy_set_header" => return self.proxy_set_header(d, None),
            _ => return false,
        }
        true
    }

    /// `proxy_set_header NAME VALUE`: what rampart does itself, or a rule.
    pub(super) fn proxy_set_header(
        &mut self,
        d: &Directive,
        rules: Option<&mut Vec<Table>>,
    ) -> bool {
        let (Some(name), Some(value)) = (d.args.first(), d.args.get(1)) else {
            self.unsupported(d, "NAME VALUE expected");
            return true;
        };
        if let Err(why) = out::header_ok(name, (!value.contains('$')).then_some(value.as_str())) {
            self.unsupported(d, why);
            return true;
        }
        let lname = name.to_ascii_lowercase();
        match (lname.as_str(), value.as_str()) {
            ("host", "$host" | "$http_host") => self.mapped(d, "rampart passes the client's Host"),
            ("host", "$proxy_host") => self.mapped(
                d,
                "the Host of proxy_pass's URL, as nginx's default: a set_header on the rules that proxy",
            ),
            ("x-forwarded-for", "$proxy_add_x_forwarded_for" | "$remote_addr") => {
                self.mapped(d, "rampart appends the client to X-Forwarded-For")
            }
            ("x-forwarded-proto", "$scheme") => self.mapped(d, "rampart sets X-Forwarded-Proto"),
            ("x-forwarded-host", "$host" | "$http_host") => self.mapped(d, "rampart sets X-Forwarded-Host to the client's Host"),
            ("host", "") => self.unsupported(d, "an HTTP/1.1 request needs a Host: not removed"),
            // (deleting X-Forwarded-For is kept below: it drops a forged chain)
            (n, v) if matches!(n, "x-forwarded-proto" | "x-forwarded-host" | "forwarded")
                || (n == "x-forwarded-for" && !v.is_empty()) => self.approx(
                d,
                "rampart writes X-Forwarded-For/-Proto/-Host itself (https on a TLS listener) and drops a client's Forwarded: left out",
            ),
            ("upgrade", "$http_upgrade") | ("connection", "upgrade" | "Upgrade" | "$connection_upgrade") => {
                self.mapped(d, "rampart passes WebSocket upgrades")
            }
            ("connection", "") | ("connection", "close") => self.mapped(d, "rampart manages connections to servers itself (kept alive)"),
            ("content-length" | "transfer-encoding" | "te" | "trailer" | "keep-alive" | "proxy-connection", _) => {
                self.approx(d, "rampart sets the headers that frame a message or belong to one hop itself")
            }
            (_, "") => {
                let mut r = Table::default();
                r.set("del_header", list(std::slice::from_ref(name)));
                match rules {
                    Some(rs) => {
                        rs.push(r);
                        self.mapped(d, "a [[listener.rule]] del_header (an empty value: not passed)");
                    }
                    None => self.approx(d, "remove it with a [[listener.rule]] del_header (not imported at this level)"),
                }
            }
            (n, "$remote_addr") if n != "host" => match self.client_ip_header.clone() {
                Some(first) if !first.eq_ignore_ascii_case(name) => self.unsupported(
                    d,
                    format!("rampart writes the client's address in one field, client_ip_header ({first}): not in this one too"),
                ),
                _ => {
                    self.client_ip_header.get_or_insert_with(|| name.clone());
                    let note = "client_ip_header of every listener: each request to a server carries the client's address in it (the one a trusted proxy names, with set_real_ip_from), in place of any the client sent";
                    self.mapped(d, note);
                }
            },
            (n, v) if v.strip_prefix("$http_").is_some_and(|h| h.replace('_', "-") == n) => {
                self.mapped(d, "rampart passes the client's field on unchanged")
            }
            (_, v) if v.contains('$') => self.unsupported(
                d,
                "a header value from nginx variables has no rampart equivalent (X-Forwarded-For/-Proto are rampart's)",
            ),
            (_, v) => {
                let mut r = Table::default();
                r.set("set_header", format!("{{ {} = {} }}", s(name), s(v)));
                match rules {
                    Some(rs) => {
                        rs.push(r);
                        self.mapped(d, "a [[listener.rule]] set_header");
                    }
                    None => self.approx(d, "set it with a [[listener.rule]] set_header (not imported at this level)"),
                }
            }
        }
        true
    }

    /// Directives that mean the same wherever they are (http, server,
    /// location): performance switches, compression, logs.
    /// The report of a gzip line of the http or a server level.
    pub(super) fn gzip_line(&mut self, d: &Directive) {
        let a = d.args.first().map(String::as_str).unwrap_or("");
        match (d.name.as_str(), a) {
            ("gzip", "off") => self.mapped(d, "the listener's compression"),
            ("gzip", "on") => self.approx(
                d,
                "the listener's compression; rampart also compresses for requests that came through a proxy (with Via; nginx's gzip_proxied off, its default, does not) and says Vary: Accept-Encoding (nginx's gzip_vary is off by default); HTTP/1.0 requests are not compressed, as nginx's gzip_http_version 1.1",
            ),
            ("gzip_types", _) => {
                let bad: Vec<&String> = d
                    .args
                    .iter()
                    .filter(|t| !out::media_type_ok(&t.to_ascii_lowercase()))
                    .collect();
                if bad.is_empty() {
                    self.mapped(d, "compression.types (with text/html, as nginx always compresses it)")
                } else {
                    self.approx(d, format!("compression.types, without {bad:?}: not media types rampart reads"))
                }
            }
            ("gzip_min_length", v) if super::size(v).is_some() => {
                self.mapped(d, "compression.min_length")
            }
            ("gzip_comp_level", v) if v.parse::<u32>().is_ok_and(|l| (1..=9).contains(&l)) => {
                self.mapped(d, "compression.level")
            }
            ("gzip_vary", "on") => self.mapped(d, "rampart's answers that it would compress say Vary: Accept-Encoding"),
            ("gzip_vary", _) => self.approx(d, "rampart's answers that it would compress say Vary: Accept-Encoding all the same"),
            ("gzip_proxied", "any") => self.mapped(d, "rampart compresses answers to requests that came through proxies too"),
            ("gzip_proxied", _) => self.approx(d, "rampart compresses answers to requests that came through proxies (with Via) whatever their caching fields say, as nginx's gzip_proxied any"),
            ("gzip_disable" | "gzip_buffers" | "gzip_http_version", _) => self.approx(
                d,
                "rampart compresses for every client that accepts gzip (HTTP/1.0 too, whatever its User-Agent) and streams",
            ),
            _ => self.unsupported(d, "a value rampart's compression does not take"),
        }
    }

    /// The report of a realip line of the http or a server level.
    pub(super) fn real_ip_line(&mut self, d: &Directive) {
        let a = d.args.first().map(String::as_str).unwrap_or("");
        match (d.name.as_str(), a) {
            ("set_real_ip_from", n) => match crate::proxy_protocol::Cidr::parse(n) {
                Ok(_) => self.mapped(d, "client_ip_from.from of the listener(s)"),
                Err(_) if n == "unix:" => {
                    self.unsupported(d, "rampart listens on no UNIX socket")
                }
                Err(e) => self.unsupported(d, e),
            },
            ("real_ip_header", "proxy_protocol") => self.approx(
                d,
                "the PROXY protocol's address: rampart's listener takes it with proxy_protocol (listen ... proxy_protocol), from the addresses in its `from`",
            ),
            ("real_ip_header", h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                self.mapped(d, "client_ip_from.header of the listener(s)")
            }
            ("real_ip_header", _) => self.unsupported(d, "not a field name"),
            ("real_ip_recursive", "on" | "off") => {
                self.mapped(d, "client_ip_from.recursive of the listener(s)")
            }
            _ => self.unsupported(d, "on or off expected"),
        }
    }

    pub(super) fn common(&mut self, d: &Directive) -> bool {
        match d.name.as_str() {
            "sendfile" | "tcp_nopush" | "tcp_nodelay" | "server_tokens" | "types_hash_max_size"
            | "server_names_hash_bucket_size" | "default_type" | "charset" | "types"
            | "aio" | "directio" | "open_file_cache" | "reset_timedout_connection" => {
                self.mapped(d, "nothing to set in rampart")
            }
            "brotli" | "gunzip" | "gzip_static" => {
                self.unsupported(d, "rampart compresses with gzip only, servers' answers only")
            }
            n if n.starts_with("gzip") => self.unsupported(
                d,
                "not imported here: rampart's compression is a listener's (from the http and server levels)",
            ),
            "keepalive_timeout" | "keepalive_requests" => self.approx(
                d,
                "rampart closes idle client connections after request_header_timeout",
            ),
            "access_log" | "log_format" | "error_log" | "log_not_found" | "open_log_file_cache" => {
                self.approx(d, "rampart's access log ([global] access_log = text or json) and stderr")
            }
            "include" => self.unsupported(d, "includes are not followed: import the included file on its own"),
            "client_body_buffer_size" | "large_client_header_buffers"
            | "client_header_buffer_size" | "client_body_timeout" => {
                self.approx(d, "rampart streams bodies; its header limits are its own")
            }
            "set_real_ip_from" | "real_ip_header" | "real_ip_recursive" => self.unsupported(
                d,
                "not imported here: rampart's client_ip_from is a listener's (from the http and server levels)",
            ),
            "limit_req_status" => {
                if d.args.first().map(String::as_str) == Some("429") {
                    self.mapped(d, "rampart answers 429 to requests over a limit")
                } else {
                    self.approx(d, "rampart answers 429 to requests over a limit")
                }
            }
            "limit_req_log_level" | "limit_req_dry_run" => self.approx(d, "rampart counts limited requests in rampart_rate_limited_total and logs end=rate_limited"),
            "proxy_redirect" => match redirect_line(d) {
                Ok(Redirect::Off) => self.mapped(
                    d,
                    "no rewrite of servers' Location and Refresh where it holds (rampart's default)",
                ),
                Ok(Redirect::Default) => self.mapped(
                    d,
                    "response_replace_header on Location and Refresh: proxy_pass's URL becomes the location's path",
                ),
                Ok(_) => self.mapped(
                    d,
                    "response_replace_header on Location (and Refresh) of the rules that proxy where it holds",
                ),
                Err(why) => self.unsupported(d, why),
            },
            "if" => self.unsupported(d, "if blocks are not mapped: write [[listener.rule]] matches by hand"),
            // the WebSocket idiom: `map $http_upgrade $connection_upgrade {
            // default upgrade; '' close; }` for `proxy_set_header Connection`
            "map" if d.args.first().map(String::as_str) == Some("$http_upgrade")
                && d.block.as_deref().is_some_and(|b| {
                    !b.is_empty()
                        && b.iter().all(|e| {
                            matches!(e.name.as_str(), "default" | "")
                                && matches!(
                                    e.args.as_slice(),
                                    [v] if matches!(v.as_str(), "upgrade" | "close" | "keep-alive" | "")
                                )
                        })
                }) =>
            {
                self.mapped(
                    d,
                    "the Connection of a WebSocket upgrade: rampart passes upgrades itself, and manages its connections to servers (kept alive)",
                )
            }
            "set" | "map" => self.unsupported(d, "nginx variables have no rampart equivalent"),
            "more_set_headers" | "more_clear_headers" | "expires" | "etag" | "if_modified_since" => {
                self.unsupported(d, "no rampart equivalent is mapped")
            }
            _ => return false,
        }
        true
    }

    pub(super) fn http_level(&mut self, ds: &[Directive]) {
        // proxy settings and listener keys (`__`) of the http level: every
        // pool's and listener's, before a server's or a location's own
        let mut inherited = Table::default();
        // the [listener.tls] settings each server inherits unless it sets its
        // own (nginx merges them wherever they are in the block)
        let mut server_tls = Table::default();
        // upstreams and zones first: servers name them
        for d in ds {
            match d.name.as_str() {
                "upstream" => self.upstream(d, false),
                "limit_req_zone" => self.limit_req_zone(d),
                "resolver" => self.resolver(d),
                // read by each server without error_page lines of its own;
                // reported by `finish`
                "error_page" => self.http_pages.push(d.clone()),
                "set_real_ip_from" | "real_ip_header" | "real_ip_recursive" => {
                    let mut r = std::mem::take(&mut self.http_real_ip);
                    r.read(d);
                    self.http_real_ip = r;
                    self.real_ip_line(d);
                }
                n if n.starts_with("gzip_") && !matches!(n, "gzip_static") || n == "gzip" => {
                    let mut g = std::mem::take(&mut self.http_gzip);
                    g.read(d);
                    self.http_gzip = g;
                    self.gzip_line(d);
                }
                "root" => {
                    self.http_root = d.args.first().cloned();
                    self.http_root_line = Some(d.clone());
                }
                "ssl_client_certificate" => {
                    if let Some(ca) = d.args.first() {
                        server_tls.set("client_ca", s(ca));
                    }
                }
                "ssl_crl" => {
                    if let Some(crl) = d.args.first() {
                        server_tls.set("client_crl", s(crl));
                    }
                }
                "ssl_verify_client" => match d.args.first().map(String::as_str) {
                    Some("on") => server_tls.set("client_auth", s("required")),
                    Some("optional") => server_tls.set("client_auth", s("optional")),
                    // off, optional_no_ca: no client certificate is verified
                    _ => server_tls.0.retain(|(k, _)| k != "client_auth"),
                },
                _ => {}
            }
        }
        for d in ds {
            match d.name.as_str() {
                "upstream" | "limit_req_zone" | "resolver" | "error_page" | "root" | "set_real_ip_from"
                | "real_ip_header" | "real_ip_recursive" => {}
                n if n.starts_with("gzip_") && !matches!(n, "gzip_static") || n == "gzip" => {}
                "server" => {
                    let b = d.block.clone().unwrap_or_default();
                    self.server(d, &b, &server_tls);
                }
                "ssl_client_certificate" => self.mapped(
                    d,
                    "[listener.tls] client_ca of each server block without its own, where ssl_verify_client is on or optional (nginx verifies no client certificate without it)",
                ),
                "ssl_crl" => self.mapped(
                    d,
                    "[listener.tls] client_crl of each server block without its own, where client certificates are verified",
                ),
                "ssl_verify_client" => match d.args.first().map(String::as_str) {
                    Some(v @ ("on" | "optional")) => self.mapped(
                        d,
                        format!(
                            "[listener.tls] client_auth = \"{}\" of each server block without its own ssl_verify_client",
                            if v == "on" { "required" } else { "optional" }
                        ),
                    ),
                    Some("off") => self.mapped(d, "no client certificates: client_ca is not used"),
                    _ => self.unsupported(
                        d,
                        "a client certificate asked for and not verified (optional_no_ca) is not in rampart: no client certificates",
                    ),
                },
                "resolver_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        self.cfg.resolver.set("timeout", s(&t));
                        self.mapped(d, "[resolver] timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "client_header_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        inherited.set("__request_header_timeout", s(&t));
                        self.mapped(d, "the listener's request_header_timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "client_max_body_size" => match d.args.first().and_then(|a| size(a)) {
                    // (a server's or a location's own is a rule's)
                    Some(n) => {
                        inherited.set("__max_request_body", n.to_string());
                        self.mapped(d, "the listener's max_request_body (413 over it)");
                    }
                    None => self.unsupported(d, "not a size"),
                },
                "send_timeout" => match d.args.first().and_then(|a| duration(a)) {
                    Some(t) => {
                        inherited.set("__client_timeout", s(&t));
                        self.mapped(d, "the listener's client_timeout");
                    }
                    None => self.unsupported(d, "not a duration"),
                },
                "ssl_protocols" | "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_session_cache"
                | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_dhparam" | "ssl_ecdh_curve" | "ssl_stapling"
                | "ssl_stapling_verify" => self.approx(d, "rustls chooses versions (TLS 1.2, 1.3) and modern suites; resumption and tickets are on"),
                _ => {
                    if !self.common(d) && !self.proxy_setting(d, &mut inherited) {
                        self.unsupported(d, "no rampart equivalent is mapped");
                    }
                }
            }
        }
        if !inherited.0.is_empty() {
            self.pool_settings.push(("*".into(), inherited));
        }
    }

    pub(super) fn resolver(&mut self, d: &Directive) {
        let mut ns: Vec<String> = Vec::new();
        let mut approx = false;
        for a in &d.args {
            if let Some(v) = a.strip_prefix("valid=") {
                if let Some(t) = duration(v) {
                    self.cfg.resolver.set("max_ttl", s(&t));
                }
            } else if a.starts_with("ipv6=")
                || a.starts_with("ipv4=")
                || a.starts_with("status_zone=")
            {
                approx = true;
            } else {
                let addr = if a.parse::<std::net::IpAddr>().is_ok() {
                    let ip: std::net::IpAddr =
                        a.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
                    std::net::SocketAddr::new(ip, 53).to_string()
                } else {
                    a.trim_matches(|c| c == '[' || c == ']').to_string()
                };
                match addr.parse::<std::net::SocketAddr>() {
                    Ok(sa) => ns.push(sa.to_string()),
                    Err(_) => {
                        self.unsupported(d, format!("{a}: rampart's nameservers are IP addresses"));
                        return;
                    }
                }
            }
        }
        if !ns.is_empty() {
            self.cfg.resolver.set("nameservers", list(&ns));
        }
        let note = "[resolver] nameservers; valid= → max_ttl (rampart re-resolves at the record's TTL, capped by it)";
        if approx {
            self.approx(d, format!("{note}; ipv4=/ipv6= are not imported"));
        } else {
            self.mapped(d, note);
        }
    }

    pub(super) fn limit_req_zone(&mut self, d: &Directive) {
        let key = d.args.first().cloned().unwrap_or_default();
        let mut zone = None;
        let mut size = None;
        let mut rate = None;
        for a in &d.args[1.min(d.args.len())..] {
            if let Some(z) = a.strip_prefix("zone=") {
                let (n, sz) = z.split_once(':').unwrap_or((z, ""));
                zone = Some(n.to_string());
                size = sz
                    .strip_suffix(['m', 'M'])
                    .and_then(|m| m.parse::<u64>().ok());
            } else if let Some(r) = a.strip_prefix("rate=") {
                rate = r
                    .strip_suffix("r/s")
                    .map(|n| format!("{n}/s"))
                    .or_else(|| r.strip_suffix("r/m").map(|n| format!("{n}/m")));
            }
        }
        let k = match key.as_str() {
            "$binary_remote_addr" | "$remote_addr" => Some("client_ip".to_string()),
            "$uri" | "$request_uri" => Some("path".to_string()),
            "$server_name" | "$host" => Some("all".to_string()),
            h if h.starts_with("$http_") => Some(format!("header:{}", h[6..].replace('_', "-"))),
            _ => None,
        };
        let (Some(zone), Some(rate), Some(k)) = (zone, rate, k) else {
            self.unsupported(d, "limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m with a client, URI, host or header key is mapped");
            return;
        };
        let mut t = Table::default();
        t.set("name", s(&zone));
        t.set("key", s(&k));
        t.set("rate", s(&rate));
        t.set("burst", "0".into());
        if k == "client_ip" {
            // nginx counts each IPv6 address apart; rampart's default is a /64
            t.set("ipv6_prefix", "128".into());
        }
        if let Some(mb) = size {
            // nginx: about 16,000 states per megabyte
            t.set(
                "max_keys",
                mb.saturating_mul(16_000).clamp(1, 10_000_000).to_string(),
            );
        }
        self.cfg.rate_limits.push(t);
        self.zones
            .insert(zone.clone(), self.cfg.rate_limits.len() - 1);
        let exact = k != "all" || key == "$server_name";
        let mut note = format!("[[rate_limit]] {zone:?} (key {k}, {rate}; the zone's size → max_keys at nginx's 16,000 per MB)");
        if k == "client_ip" {
            note.push_str("; ipv6_prefix = 128 counts each IPv6 address apart, as nginx does (64 would count a client's whole /64 as one)");
        }
        if !exact {
            note.push_str("; $host is counted as one key for the listener");
        }
        if exact {
            self.mapped(d, note);
        } else {
            self.approx(d, note);
        }
    }

    pub(super) fn upstream(&mut self, d: &Directive, stream: bool) {
        let Some(name) = d.args.first().cloned() else {
            self.unsupported(d, "upstream NAME expected");
            return;
        };
        if !self.upstream_names.contains(&name) {
            self.upstream_names.push(name.clone());
        }
        let mut p = out::Pool::default();
        p.keys.set("name", s(&name));
        self.mapped(d, "a [[pool]]");
        for e in d.block.iter().flatten() {
            let a0 = e.args.first().map(String::as_str).unwrap_or("");
            match e.name.as_str() {
                "server" => self.upstream_server(e, &mut p),
                "least_conn" => {
                    p.keys.set("balance", s("least_conn"));
                    self.mapped(e, "balance = \"least_conn\"");
                }
                "ip_hash" => {
                    p.keys.set("balance", s("hash"));
                    p.keys.set("hash_key", s("client_ip"));
                    self.approx(e, "balance = \"hash\" on the client address (nginx hashes an IPv4 client's /24, rampart the whole address)");
                }
                "hash" => {
                    let key = match a0 {
                        "$remote_addr" | "$binary_remote_addr" => Some("client_ip".to_string()),
                        "$request_uri" | "$uri" => Some("uri".to_string()),
                        h if h.starts_with("$http_") => {
                            Some(format!("header:{}", h[6..].replace('_', "-")))
                        }
                        _ => None,
                    };
                    match key {
                        Some(k) => {
                            p.keys.set("balance", s("hash"));
                            p.keys.set("hash_key", s(&k));
                            if e.args.iter().any(|a| a == "consistent") {
                                self.mapped(e, "balance = \"hash\" (consistent)");
                            } else {
                                self.approx(
                                    e,
                                    "balance = \"hash\": rampart's hash is always consistent",
                                );
                            }
                        }
                        None => self.unsupported(
                            e,
                            "hash on this key is not mapped (client, URI or a header)",
                        ),
                    }
                }
                "random" => {
                    p.keys.set("balance", s("random_two"));
                    if e.args.iter().any(|a| a == "two") {
                        self.mapped(e, "balance = \"random_two\"");
                    } else {
                        self.approx(
                            e,
                            "balance = \"random_two\" (the power of two choices, not plain random)",
                        );
                    }
                }
                "keepalive" => match a0.parse::<u32>() {
                    Ok(n) => {
                        p.keys.set("max_idle_per_server", n.to_string());
                        self.approx(e, "max_idle_per_server: per server and worker thread (nginx: for the whole upstream, per worker)");
                    }
                    Err(_) => self.unsupported(e, "not a number"),
                },
                "keepalive_timeout" => match duration(a0) {
                    Some(t) => {
                        p.keys.set("keepalive_timeout", s(&t));
                        self.mapped(e, "keepalive_timeout");
                    }
                    None => self.unsupported(e, "not a duration"),
                },
                "keepalive_requests" | "keepalive_time" => self.approx(
                    e,
                    "rampart keeps a server connection until keepalive_timeout",
                ),
                "zone" => self.mapped(e, "rampart's pool state is shared by every thread already"),
                "resolver" => self.resolver(e),
                "sticky" => self.sticky(e, &mut p, stream),
                _ => self.unsupported(e, "no rampart equivalent is mapped"),
            }
        }
        if stream && p.keys.get("hash_key").is_some_and(|k| k != "\"client_ip\"") {
            p.keys.set("hash_key", s("client_ip"));
        }
        if p.servers.is_empty() {
            self.report.push(Entry {
                line: d.line,
                directive: d.text(),
                fidelity: Fidelity::Unsupported,
                note: "no server rampart can use: the pool is left out".into(),
            });
            return;
        }
        self.cfg.pools.push(p);
        self.pool_ix.insert(name, self.cfg.pools.len() - 1);
    }

    pub(super) fn upstream_server(&mut self, e: &Directive, p: &mut out::Pool) {
        let Some(addr) = e.args.first() else {
            self.unsupported(e, "server ADDRESS expected");
            return;
        };
        if addr.starts_with("unix:") {
            self.unsupported(e, "unix sockets are not supported");
            return;
        }
        let addr = if addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.ends_with(':'))
        {
            addr.clone()
        } else {
            format!("{addr}:80")
        };
        if let Err(why) = out::address_ok(&addr) {
            self.unsupported(e, why);
            return;
        }
        let mut sv = Table::default();
        sv.set("address", s(&addr));
        let by_name = addr.parse::<std::net::SocketAddr>().is_err();
        let mut notes: Vec<&str> = Vec::new();
        let mut approx = false;
        let mut resolve = false;
        for a in &e.args[1..] {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            match k {
                "weight" => {
                    // nginx: 1 and up; rampart: up to 256
                    if let Ok(n) = v.parse::<u32>() {
                        sv.set("weight", n.clamp(1, 256).to_string());
                        if n > 256 {
                            approx = true;
                            notes.push("a weight over 256 is 256 in rampart: the servers' shares differ from nginx's");
                        }
                    }
                }
                "backup" => sv.set("backup", "true".into()),
                "down" => {
                    self.approx(e, "a server marked down is left out");
                    return;
                }
                "resolve" => resolve = true,
                "max_conns" => {
                    if let Ok(n) = v.parse::<u32>() {
                        p.keys.set("max_connections_per_server", n.to_string());
                        approx = true;
                        notes.push("max_conns → the pool's max_connections_per_server, one limit for each of its servers");
                    }
                }
                "max_fails" => {
                    if let Ok(n) = v.parse::<u32>() {
                        let b = p
                            .keys
                            .get("__breaker")
                            .map(String::from)
                            .unwrap_or_default();
                        let _ = b;
                        p.keys.set("__max_fails", n.to_string());
                        approx = true;
                        notes.push("max_fails → [pool.breaker] consecutive_failures (nginx counts failures within fail_timeout)");
                    }
                }
                "fail_timeout" => {
                    if let Some(t) = duration(v).filter(|t| t != "0s") {
                        p.keys.set("__fail_timeout", s(&t));
                        notes.push("fail_timeout → [pool.breaker] ejection_time");
                    }
                }
                "slow_start" => {
                    if let Some(t) = duration(v) {
                        p.keys.set("slow_start", s(&t));
                        notes.push("slow_start");
                    }
                }
                _ => {
                    approx = true;
                    notes.push("some server options are not imported");
                }
            }
        }
        if by_name && !resolve {
            approx = true;
            notes.push("nginx resolves this name once at start; rampart re-resolves it at its TTL (the stale-IP fix)");
        } else if by_name {
            notes.push("resolve → one member per DNS record, re-resolved at the TTL");
        }
        p.servers.push(sv);
        let mut note = "[[pool.server]]".to_string();
        for n in notes {
            note.push_str("; ");
            note.push_str(n);
        }
        if approx {
            self.approx(e, note);
        } else {
            self.mapped(e, note);
        }
    }

    /// nginx Plus's `sticky cookie NAME [expires=] [domain=] [path=]
    /// [httponly] [secure] [samesite=]` as `[pool.cookie]`. nginx neither takes
    /// the cookie out of the requests it passes nor adds Cache-Control, so
    /// `indirect` and `nocache` are off; `sticky route` and `sticky learn`
    /// follow what the servers say, and are not imported.
    pub(super) fn sticky(&mut self, e: &Directive, p: &mut out::Pool, stream: bool) {
        let why = match e.args.first().map(String::as_str) {
            _ if stream => Some("sticky is an http upstream's: a stream has no cookies"),
            Some("cookie") => None,
            Some("route") => Some(
                "sticky route sends a client to the server a variable names (a route the servers wrote in a cookie or the URI); rampart's persistence is a cookie of its own ([pool.cookie], as sticky cookie)",
            ),
            Some("learn") => Some(
                "sticky learn follows a session cookie the servers set, remembered in a shared zone; rampart's persistence is a cookie of its own ([pool.cookie], as sticky cookie)",
            ),
            _ => Some("sticky cookie|route|learn expected"),
        };
        if let Some(why) = why {
            self.unsupported(e, why);
            return;
        }
        let Some(name) = e.args.get(1) else {
            self.unsupported(e, "sticky cookie NAME expected");
            return;
        };
        let mut t = out::cookie(name);
        let mut notes: Vec<String> = Vec::new();
        let mut approx = false;
        for a in &e.args[2..] {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            match k {
                // what nginx's `expires max` sends as max-age: 10 years
                "expires" if v == "max" => {
                    t.set("max_age", s("315360000s"));
                    notes.push(
                        "expires=max → max_age = \"315360000s\", 10 years (nginx Plus: until 31 Dec 2037)".into(),
                    );
                }
                "expires" => match max_age(v) {
                    Some(d) => t.set("max_age", s(&d)),
                    None => {
                        approx = true;
                        notes.push(format!(
                            "expires={v}: not a whole number of seconds: left out (a session cookie)"
                        ));
                    }
                },
                "domain" | "path" if !v.is_empty() => t.set(k, s(v)),
                "httponly" | "secure" => t.set(k, "true".into()),
                "samesite" => match out::same_site(v) {
                    Some(x) => t.set("same_site", s(x)),
                    None => {
                        approx = true;
                        notes.push(format!("samesite={v}: not imported (strict, lax or none)"));
                    }
                },
                _ => {
                    approx = true;
                    notes.push(format!("{a}: not imported"));
                }
            }
        }
        if let Some(n) = out::lone_same_site_none(&mut t) {
            approx = true;
            notes.push(n.into());
        }
        p.cookie = Some(t);
        let mut note = "[pool.cookie] with indirect = false and nocache = false (nginx passes the cookie on and adds no Cache-Control); nginx Plus's values (a hash of each address) are not rampart's: clients that hold one are balanced anew once".to_string();
        for n in notes {
            note.push_str("; ");
            note.push_str(&n);
        }
        if approx {
            self.approx(e, note);
        } else {
            self.mapped(e, note);
        }
    }

    /// The pool for `proxy_pass URL`: an upstream by name, or a new pool of one
    /// server; and the URI part that replaces the location's prefix
    /// `loc_prefix` (a prefix or exact location's), if any.
    pub(super) fn proxy_pass(
        &mut self,
        d: &Directive,
        loc_prefix: Option<&str>,
    ) -> Option<(String, Option<String>)> {
        let url = d.args.first().cloned().unwrap_or_default();
        let t = match self.target(&url, loc_prefix) {
            Ok(t) => t,
            Err(why) => {
                self.unsupported(d, why);
                return None;
            }
        };
        let mut note = format!("pool = {:?}", t.pool);
        for n in t.notes {
            note.push_str("; ");
            note.push_str(&n);
        }
        if t.approx {
            self.approx(d, note);
        } else {
            self.mapped(d, note);
        }
        Some((t.pool, t.uri))
    }

    /// The pool a `proxy_pass` target (or a stream map's value) names: an
    /// upstream of the file, or a server of its own (a pool made for it).
    pub(super) fn target(&mut self, url: &str, loc_prefix: Option<&str>) -> Result<Target, String> {
        let url = url.to_string();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_string(), r.to_string()),
            None => (String::new(), url.clone()),
        };
        if url.contains('$') {
            return Err("a target built from variables is not mapped: name an upstream".into());
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.clone(), String::new()),
        };
        let mut notes = Vec::new();
        let mut approx = false;
        let mut uri = None;
        if !path.is_empty() && Some(path.as_str()) != loc_prefix {
            if loc_prefix.is_some() && !path.contains(['?', '#', '%']) {
                notes.push(format!(
                    "the URI part {path:?} replaces the location's prefix (rewrite_prefix)"
                ));
                uri = Some(path.clone());
            } else {
                approx = true;
                notes.push(format!(
                    "the URI part {path:?} is not imported (a query, an encoded byte, or a regex location): rampart passes the path unchanged"
                ));
            }
        }
        let name = if self.pool_ix.contains_key(&host) {
            host.clone()
        } else if self.upstream_names.contains(&host) {
            // an upstream of this file that was left out: not a host name
            return Err(format!(
                "the upstream {host:?} has no server rampart can use (see its line)"
            ));
        } else {
            // a server of its own
            let (h, port) = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.to_string()),
                _ => (
                    host.clone(),
                    if scheme == "https" {
                        "443".into()
                    } else {
                        "80".into()
                    },
                ),
            };
            if h.is_empty() {
                return Err("no host in the target".into());
            }
            out::address_ok(&format!("{h}:{port}"))?;
            let name = host.replace(':', "-");
            if !self.pool_ix.contains_key(&name) {
                let mut p = out::Pool::default();
                p.keys.set("name", s(&name));
                let mut sv = Table::default();
                sv.set("address", s(&format!("{h}:{port}")));
                p.servers.push(sv);
                if scheme == "https" {
                    let mut t = Table::default();
                    t.set("ca", s("system"));
                    p.tls = Some(t);
                }
                self.cfg.pools.push(p);
                self.pool_ix.insert(name.clone(), self.cfg.pools.len() - 1);
            }
            if h.parse::<std::net::IpAddr>().is_err() {
                approx = true;
                notes.push(
                    "nginx resolves this name once at start; rampart re-resolves it at its TTL"
                        .into(),
                );
            }
            name
        };
        if scheme == "https" {
            if let Some(&pi) = self.pool_ix.get(&name) {
                self.cfg.pools[pi].tls.get_or_insert_with(Table::default);
            }
        }
        Ok(Target {
            pool: name,
            uri,
            notes,
            approx,
        })
    }
}

/// What a `proxy_pass` target names.
pub(super) struct Target {
    pub pool: String,
    /// The URI part that replaces a location's prefix.
    pub uri: Option<String>,
    /// What the report says of it, and whether it approximates nginx.
    pub notes: Vec<String>,
    pub approx: bool,
}

/// An nginx time as `[pool.cookie] max_age`: whole seconds, at least one.
fn max_age(v: &str) -> Option<String> {
    duration(v).filter(|d| d.as_str() != "0s" && !d.ends_with("ms"))
}
