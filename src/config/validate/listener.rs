//! `[[listener]]`: one listener's binds, limits, timeouts, routes, rules, TLS,
//! PROXY protocol and read-only mode.

use super::{http2, rules, tls};
use crate::config::file::*;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use crate::router::{HostMatch, Route};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

/// What a listener is checked against: the pools and limits by name, the
/// addresses already bound (by the admin server and earlier listeners), and the
/// pools some listener uses.
pub(super) struct Cx<'a, 'b> {
    pub base: &'a Path,
    /// `[global] error_pages`.
    pub error_pages: &'a ErrorPages,
    pub pool_index: &'a HashMap<&'b str, usize>,
    pub limit_index: &'a HashMap<&'b str, usize>,
    pub pools: &'a [PoolConfig],
    pub bound: &'a mut Vec<(SocketAddr, String)>,
    pub used_pools: &'a mut Vec<bool>,
}

pub(super) fn listener(
    lf: &ListenerFile,
    at: &KeyPath,
    cx: Cx<'_, '_>,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> ListenerConfig {
    let Cx {
        base,
        error_pages,
        pool_index,
        limit_index,
        pools,
        bound,
        used_pools,
    } = cx;
    if lf.max_connections > MAX_CONNECTIONS {
        p.add(
            &at.key("max_connections"),
            format!("must be between 0 (no limit of its own) and {MAX_CONNECTIONS}"),
        );
    }
    if lf.request_header_timeout.0.is_zero() {
        p.add(
            &at.key("request_header_timeout"),
            "must be greater than zero",
        );
    }
    if lf.client_timeout.0.is_zero() {
        p.add(&at.key("client_timeout"), "must be greater than zero");
    }
    if lf.mode == Mode::Tcp && lf.max_request_body.is_some_and(|s| s.0 > 0) {
        warnings.push(format!(
            "{}: a tcp listener has no request body; it does not apply",
            at.key("max_request_body")
        ));
    }
    let client_ip_header = lf.client_ip_header.as_deref().and_then(|n| {
        let at = at.key("client_ip_header");
        let name = match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                p.add(&at, format!("{n:?} is not a field name"));
                return None;
            }
        };
        // fields that frame a message, belong to one hop, or rampart writes
        // (those rules may not edit either), and Host
        let own = |n: &str| {
            super::rules::NOT_EDITABLE.contains(&n)
                || super::rules::REQUEST_RAMPARTS.contains(&n)
                || n == "host"
        };
        if own(name.as_str()) {
            p.add(
                &at,
                format!("{n:?} frames a message, belongs to one hop or is rampart's own X-Forwarded-*: name another field (X-Real-IP)"),
            );
            return None;
        }
        if lf.mode == Mode::Tcp {
            warnings.push(format!("{at}: a tcp listener has no request fields; it does not apply"));
        }
        let subject = lf.tls.as_ref().and_then(|t| t.client_subject_header.as_deref());
        if subject.is_some_and(|s| s.eq_ignore_ascii_case(name.as_str())) {
            p.add(
                &at,
                format!("{n:?} is also tls.client_subject_header: the client's address would replace its certificate's subject"),
            );
            return None;
        }
        Some(name)
    });
    if !lf.park_idle_after.0.is_zero() && lf.park_idle_after.0 >= lf.request_header_timeout.0 {
        warnings.push(format!(
            "{}: not below request_header_timeout, so idle connections close before they would be parked",
            at.key("park_idle_after")
        ));
    }
    if lf.bind.is_empty() {
        p.add(&at.key("bind"), "needs at least one address");
    }
    for (j, addr) in lf.bind.iter().enumerate() {
        if let Some((_, other)) = bound.iter().find(|(b, _)| addresses_clash(*b, addr.0)) {
            p.add(
                &at.index("bind", j),
                format!("{} is already used by {other}", addr.0),
            );
        } else {
            bound.push((addr.0, format!("listener {:?}", lf.name)));
        }
    }
    let pool = match &lf.pool {
        Some(name) => match pool_index.get(name.as_str()) {
            Some(&ix) => Some(ix),
            None => {
                p.add(&at.key("pool"), format!("pool {name:?} is not defined"));
                None
            }
        },
        None if lf.mode == Mode::Tcp && !lf.routes.is_empty() => None,
        None if lf.mode == Mode::Tcp => {
            p.add(
                &at.key("pool"),
                "required: the pool of the listener's connections (a tcp listener with [[listener.route]] sni may go without: then a connection no route takes is closed)",
            );
            None
        }
        None => {
            p.add(
                &at.key("pool"),
                "required: the pool of the requests no route or rule sends elsewhere",
            );
            None
        }
    };
    if let Some(u) = pool.and_then(|pool| used_pools.get_mut(pool)) {
        *u = true;
    }
    // a tcp listener's pools (its own and its routes') hash on the client only
    let tcp_hash = |ix: usize, key: &KeyPath, p: &mut Problems<'_>, w: &mut Vec<String>| {
        if let Some(pc) = pools.get(ix) {
            if pc.cookie.is_some() {
                w.push(format!(
                    "listener {:?} is tcp: pool {:?}'s [pool.cookie] does not apply to it (no cookie in a TCP session)",
                    lf.name, pc.name
                ));
            }
            if pc.balance == Balance::Hash && pc.hash_key != HashKey::ClientIp {
                p.add(
                    key,
                    format!(
                        "pool {:?} hashes on an HTTP field, which a tcp listener does not have; use hash_key = \"client_ip\"",
                        pc.name
                    ),
                );
            }
        }
    };
    if lf.mode == Mode::Tcp {
        if !lf.routes.is_empty() && lf.tls.is_some() {
            p.add(
                &at.index("route", 0),
                "a tcp listener routes by the SNI of TLS it passes through; with [listener.tls] it terminates TLS and has one pool",
            );
        }
        if let Some(pool) = pool {
            tcp_hash(pool, &at.key("pool"), p, warnings);
        }
    }
    let mut routes = Vec::with_capacity(lf.routes.len());
    for (j, rf) in lf.routes.iter().enumerate() {
        let rat = at.index("route", j);
        let (match_key, pattern) = match lf.mode {
            Mode::Http => {
                if rf.sni.is_some() {
                    p.add(
                        &rat.key("sni"),
                        "sni routes are for tcp listeners (TLS passthrough); an http listener routes on host",
                    );
                }
                ("host", &rf.host)
            }
            Mode::Tcp => {
                if rf.host.is_some() || rf.path_prefix.is_some() {
                    p.add(
                        &rat,
                        "a tcp listener routes on sni (the server name of the TLS ClientHello), not host or path_prefix",
                    );
                }
                if rf.sni.is_none() {
                    p.add(
                        &rat.key("sni"),
                        "a tcp listener's route needs sni = \"name\" (or \"*.domain\", \"name.*\", or \"\" for a ClientHello without a name)",
                    );
                }
                ("sni", &rf.sni)
            }
        };
        let host = match pattern {
            None => None,
            // a ClientHello that names no server (the data plane routes it
            // as the empty name)
            Some(h) if h.is_empty() && lf.mode == Mode::Tcp => {
                Some(HostMatch::Exact(String::new()))
            }
            Some(h) => match HostMatch::parse(h) {
                Ok(m) => Some(m),
                Err(e) => {
                    p.add(&rat.key(match_key), e);
                    None
                }
            },
        };
        if let Some(pp) = &rf.path_prefix {
            if !pp.starts_with('/') {
                p.add(
                    &rat.key("path_prefix"),
                    format!("must start with '/', got {pp:?}"),
                );
            }
        }
        if lf.mode == Mode::Http && rf.host.is_none() && rf.path_prefix.is_none() {
            warnings.push(format!(
                "{rat}: a route with neither host nor path_prefix matches every request; later routes are never used"
            ));
        }
        let rpool = match pool_index.get(rf.pool.as_str()) {
            Some(&ix) => ix,
            None => {
                p.add(
                    &rat.key("pool"),
                    format!("pool {:?} is not defined", rf.pool),
                );
                0
            }
        };
        if let Some(u) = used_pools.get_mut(rpool) {
            *u = true;
        }
        if lf.mode == Mode::Tcp && pool_index.contains_key(rf.pool.as_str()) {
            tcp_hash(rpool, &rat.key("pool"), p, warnings);
        }
        routes.push(Route {
            host,
            path_prefix: rf.path_prefix.clone(),
            path: None,
            pool: rpool,
        });
    }
    let proxy_protocol = lf.proxy_protocol.as_ref().and_then(|pp| {
        let ppat = at.key("proxy_protocol");
        // checked whatever the mode: a list written wrong is found now, not
        // when someone switches it on
        let mut from = Vec::new();
        for (k, s) in pp.from.iter().enumerate() {
            match crate::proxy_protocol::Cidr::parse(s) {
                Ok(c) => from.push(c),
                Err(e) => p.add(&ppat.index("from", k), e),
            }
        }
        let mode = match pp.mode.as_str() {
            "required" => crate::proxy_protocol::Mode::Required,
            "optional" => crate::proxy_protocol::Mode::Optional,
            "off" => return None,
            m => {
                p.add(
                    &ppat.key("mode"),
                    format!("unknown mode {m:?}: use \"required\", \"optional\" or \"off\""),
                );
                return None;
            }
        };
        if pp.from.is_empty() {
            p.add(
                &ppat.key("from"),
                "list the load balancers whose PROXY headers are believed, e.g. [\"10.0.0.0/8\"]",
            );
        }
        Some(crate::proxy_protocol::Accept {
            mode,
            from,
            timeout: lf.request_header_timeout.0,
        })
    });
    let client_ip_from = lf.client_ip_from.as_ref().and_then(|c| {
        let cat = at.key("client_ip_from");
        if lf.mode == Mode::Tcp {
            p.add(
                &cat,
                "a tcp listener reads no request fields: take the client from the PROXY protocol (proxy_protocol)",
            );
            return None;
        }
        let mut from = Vec::new();
        for (k, s) in c.from.iter().enumerate() {
            match crate::proxy_protocol::Cidr::parse(s) {
                Ok(c) => from.push(c),
                Err(e) => p.add(&cat.index("from", k), e),
            }
        }
        if c.from.is_empty() {
            p.add(
                &cat.key("from"),
                "list the proxies whose word on the client is believed, e.g. [\"10.0.0.0/8\"] (a client could name any address otherwise)",
            );
        }
        let header = match http::HeaderName::from_bytes(c.header.as_bytes()) {
            Ok(h) if h != http::header::HOST && !super::rules::NOT_EDITABLE.contains(&h.as_str()) => h,
            _ => {
                p.add(
                    &cat.key("header"),
                    format!("{:?} is not a field a proxy names the client in (X-Forwarded-For, X-Real-IP)", c.header),
                );
                return None;
            }
        };
        Some(std::sync::Arc::new(crate::forwarded::ClientIpFrom {
            header,
            from,
            recursive: c.recursive,
        }))
    });
    let compression = lf.compression.as_ref().and_then(|c| {
        let cat = at.key("compression");
        if lf.mode == Mode::Tcp {
            p.add(&cat, "a tcp listener has no answers to compress");
            return None;
        }
        if !(1..=9).contains(&c.level) {
            p.add(&cat.key("level"), format!("{} is not a level: 1 (fastest) to 9", c.level));
        }
        if c.types.is_empty() {
            p.add(&cat.key("types"), "list the media types to compress, e.g. [\"text/html\", \"application/json\"], or [\"*\"]");
        }
        let mut types = Vec::new();
        for (k, t) in c.types.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            if media_type_ok(&t) {
                types.push(t);
            } else {
                p.add(&cat.index("types", k), format!("{t:?} is not a media type (type/subtype, type/* or *)"));
            }
        }
        Some(std::sync::Arc::new(Compression {
            types,
            min_length: c.min_length,
            level: c.level,
        }))
    });
    let tls = lf
        .tls
        .as_ref()
        .and_then(|t| tls::listener(t, lf.mode, &at.key("tls"), base, p, warnings));
    let http2 = http2::listener(&lf.http2, &at.key("http2"), p);
    if lf.mode == Mode::Tcp && !lf.rules.is_empty() {
        p.add(
            &at.index("rule", 0),
            "rules look at HTTP requests: a tcp listener routes with [[listener.route]] sni",
        );
    }
    let rules = if lf.mode == Mode::Http {
        rules::compile(
            &lf.rules,
            at,
            pool_index,
            limit_index,
            used_pools,
            p,
            warnings,
        )
    } else {
        crate::rules::RuleSet::default()
    };
    if lf.mode == Mode::Tcp && !lf.read_only_when.is_empty() {
        p.add(
            &at.key("read_only_when"),
            "read-only mode refuses HTTP writes: it is for http listeners",
        );
    }
    let read_only = rules::read_only(
        &lf.read_only_when,
        lf.read_only_status,
        lf.read_only_message.as_deref(),
        lf.read_only_retry_after.map(|d| d.0),
        at,
        pool_index,
        p,
    );
    ListenerConfig {
        read_only,
        rules: std::sync::Arc::new(rules),
        http2,
        tls,
        name: lf.name.clone(),
        binds: lf.bind.iter().map(|a| a.0).collect(),
        mode: lf.mode,
        pool,
        max_connections: lf.max_connections,
        request_header_timeout: lf.request_header_timeout.0,
        park_idle_after: Some(lf.park_idle_after.0).filter(|d| !d.is_zero()),
        client_timeout: lf.client_timeout.0,
        max_request_body: lf.max_request_body.map(|s| s.0).filter(|&n| n > 0),
        client_ip_header,
        client_ip_from,
        compression,
        error_pages: std::sync::Arc::new(
            super::pages::pages(&lf.error_pages, &at.key("error_pages"), base, p, warnings)
                .over(error_pages),
        ),
        routes,
        proxy_protocol,
    }
}

/// Two listening addresses clash when they are equal, or share a port and family
/// while one of them is the wildcard address.
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}
