//! `[[pool]]`: one pool's settings, servers, checks, breaker, retries, TLS and
//! policy.

use super::{health, http2, rules, tls};
use crate::config::file::*;
use crate::config::limits::CircuitConfig;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub(super) fn pool(
    pf: &PoolFile,
    at: &KeyPath,
    base: &Path,
    pool_names: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> PoolConfig {
    let hash_key = match (&pf.hash_key, pf.balance) {
        (None, _) => HashKey::ClientIp,
        (Some(k), Balance::Hash) => k.clone(),
        (Some(_), _) => {
            p.add(&at.key("hash_key"), "is only used with balance = \"hash\"");
            HashKey::ClientIp
        }
    };
    for (key, d) in [
        ("connect_timeout", pf.connect_timeout),
        ("server_timeout", pf.server_timeout),
        ("tunnel_timeout", pf.tunnel_timeout),
    ] {
        if d.0.is_zero() {
            p.add(&at.key(key), "must be greater than zero");
        }
    }
    if !pf.servers.is_empty() && pf.servers.iter().all(|s| s.weight == 0) {
        warnings.push(format!(
            "pool {:?}: every server has weight 0, so the pool never serves",
            pf.name
        ));
    }
    if !pf.servers.is_empty() && pf.servers.iter().all(|s| s.backup) {
        warnings.push(format!(
            "pool {:?}: every server is a backup; they are used as normal servers",
            pf.name
        ));
    }
    if pf.servers.is_empty() {
        p.add(at, format!("pool {:?} has no [[pool.server]]", pf.name));
    }
    let mut health = pf
        .health
        .as_ref()
        .and_then(|h| health::health(h, &at.key("health"), p));
    let breaker = &pf.breaker;
    let bat = at.key("breaker");
    if breaker.max_ejected_percent > 100 {
        p.add(&bat.key("max_ejected_percent"), "must be between 0 and 100");
    }
    if breaker.consecutive_failures > 0 && breaker.ejection_time.0.is_zero() {
        p.add(&bat.key("ejection_time"), "must be greater than zero");
    }
    if breaker.max_ejection_time.0 < breaker.ejection_time.0 {
        p.add(
            &bat.key("max_ejection_time"),
            "must not be shorter than ejection_time",
        );
    }
    let mut retry = RetryConfig {
        retries: pf.retries,
        buffer: pf.retry_buffer.0,
        non_idempotent: pf.retry_non_idempotent,
        on_connect_failure: false,
        on_reset: false,
        on_timeout: false,
        on_status: Vec::new(),
        budget_percent: pf.retry_budget_percent,
    };
    if pf.retries > 10 {
        p.add(&at.key("retries"), "must be between 0 and 10");
    }
    // a body within it is held in memory while its request lasts: a few
    // hundred such requests at 64 MiB would already be gigabytes
    if pf.retry_buffer.0 > MAX_RETRY_BUFFER {
        p.add(
            &at.key("retry_buffer"),
            "at most 64MiB (each replayable body up to it is held in memory while its request lasts)",
        );
    }
    if pf.retry_budget_percent > 100 {
        p.add(&at.key("retry_budget_percent"), "must be between 0 and 100");
    }
    for (k, cond) in pf.retry_on.iter().enumerate() {
        match cond.as_str() {
            "connect_failure" => retry.on_connect_failure = true,
            "reset" => retry.on_reset = true,
            "timeout" => retry.on_timeout = true,
            s => match s.parse::<u16>() {
                Ok(code) if (500..=599).contains(&code) => retry.on_status.push(code),
                _ => p.add(
                    &at.index("retry_on", k),
                    format!("unknown retry condition {s:?}: use \"connect_failure\", \"reset\", \"timeout\" or a status from 500 to 599"),
                ),
            },
        }
    }
    let mut servers = Vec::with_capacity(pf.servers.len());
    let mut seen: HashMap<ServerAddr, usize> = HashMap::new();
    // how the API, metrics and CSV address a server: must be unique in the pool
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (j, sf) in pf.servers.iter().enumerate() {
        let id = sf.name.clone().unwrap_or_else(|| sf.address.clone());
        if let Some(first) = ids.insert(id.clone(), j) {
            p.add(
                &at.index("server", j)
                    .key(if sf.name.is_some() { "name" } else { "address" }),
                format!("{id:?} already names server {first} of pool {:?}", pf.name),
            );
        }
    }
    let mut cookie_values: Vec<(std::net::SocketAddr, String)> = Vec::new();
    for (j, sf) in pf.servers.iter().enumerate() {
        let sat = at.index("server", j);
        if sf.weight > MAX_WEIGHT {
            p.add(
                &sat.key("weight"),
                format!("must be between 0 and {MAX_WEIGHT}, got {}", sf.weight),
            );
        }
        match ServerAddr::parse(&sf.address) {
            Ok(address) => {
                if seen.insert(address.clone(), j).is_some() {
                    p.add(
                        &sat.key("address"),
                        format!("{address} is listed twice in pool {:?}", pf.name),
                    );
                }
                if address.is_dns() && sf.name.is_some() {
                    p.add(
                        &sat.key("name"),
                        "a DNS entry has one member per record; members are named by their ip:port",
                    );
                }
                if let Some(v) = &sf.cookie {
                    match (&address, &pf.cookie) {
                        (_, None) => p.add(&sat.key("cookie"), "is only used with [pool.cookie]"),
                        (ServerAddr::Dns(_), _) => p.add(
                            &sat.key("cookie"),
                            "a DNS entry has one member per record: each takes a value of its own, a hash of its address",
                        ),
                        (ServerAddr::Static(a), Some(_)) => {
                            // (several servers may share a value, as in
                            // HAProxy: a backup its normal server's)
                            match cookie_value(v) {
                                Err(why) => p.add(&sat.key("cookie"), why),
                                Ok(()) => cookie_values.push((*a, v.clone())),
                            }
                        }
                    }
                }
                servers.push(ServerConfig {
                    address,
                    name: sf.name.clone(),
                    weight: sf.weight,
                    backup: sf.backup,
                });
            }
            Err(e) => p.add(&sat.key("address"), e),
        }
    }
    let send_proxy = match pf.send_proxy.as_deref() {
        None => None,
        Some("v1") => Some(crate::proxy_protocol::Version::V1),
        Some("v2") => Some(crate::proxy_protocol::Version::V2),
        Some(v) => {
            p.add(
                &at.key("send_proxy"),
                format!("unknown version {v:?}: use \"v1\" or \"v2\""),
            );
            None
        }
    };
    let protocol = match pf.protocol.as_deref() {
        None | Some("http1") | Some("http/1.1") => Protocol::Http1,
        Some("h2") => Protocol::H2,
        Some(v) => {
            p.add(
                &at.key("protocol"),
                format!("unknown protocol {v:?}: use \"http1\" or \"h2\""),
            );
            Protocol::Http1
        }
    };
    if protocol == Protocol::H2 && send_proxy.is_some() {
        p.add(
            &at.key("send_proxy"),
            "is not supported with protocol = \"h2\" (an HTTP/2 connection carries many clients' requests; a PROXY header names one)",
        );
    }
    if protocol != Protocol::H2 && pf.http2.is_some() {
        p.add(&at.key("http2"), "is only used with protocol = \"h2\"");
    }
    if protocol != Protocol::H2
        && pf
            .health
            .as_ref()
            .is_some_and(|h| h.kind == HealthKind::Grpc)
    {
        p.add(
            &at.key("health").key("kind"),
            "\"grpc\" checks speak HTTP/2: the pool needs protocol = \"h2\"",
        );
    }
    // an http check speaks what the servers speak
    if let Some(HealthConfig {
        check: CheckKind::Http { h2, .. },
        ..
    }) = &mut health
    {
        *h2 = protocol == Protocol::H2;
    }
    let http2 = http2::pool(
        pf.http2.as_ref().unwrap_or(&Default::default()),
        &at.key("http2"),
        p,
    );
    let circuit = pf.circuit.as_ref().and_then(|c| {
        let cat = at.key("circuit");
        let before = p.list.len();
        if !(1..=100).contains(&c.failure_rate) {
            p.add(
                &cat.key("failure_rate"),
                "must be a percentage from 1 to 100",
            );
        }
        if c.window.0 < Duration::from_secs(1) {
            p.add(&cat.key("window"), "must be at least 1s");
        }
        if c.min_requests == 0 {
            p.add(&cat.key("min_requests"), "must be at least 1");
        }
        if c.open_for.0.is_zero() {
            p.add(&cat.key("open_for"), "must be greater than zero");
        }
        (p.list.len() == before).then_some(CircuitConfig {
            failure_rate: c.failure_rate,
            window: c.window.0,
            min_requests: c.min_requests,
            open_for: c.open_for.0,
        })
    });
    if pf.shed_after.is_some() && pf.max_connections_per_server == 0 {
        p.add(
            &at.key("shed_after"),
            "shedding needs max_connections_per_server: without a connection limit the pool never saturates, nothing queues and nothing is shed",
        );
    }
    let alpn: &[&[u8]] = match protocol {
        Protocol::H2 => &[b"h2"],
        Protocol::Http1 => &[],
    };
    let tls = pf
        .tls
        .as_ref()
        .and_then(|t| tls::pool(t, &at.key("tls"), base, alpn, p, warnings));
    // a postgres check's TLS, which may verify with [pool.tls]'s CA (not
    // looked at when [pool.tls] was refused: its problems are said already)
    let pg_health = pf
        .health
        .as_ref()
        .filter(|h| h.kind == HealthKind::Postgres && (pf.tls.is_none() || tls.is_some()));
    if let Some(h) = pg_health {
        let pg = health::postgres_ssl(h, tls.as_ref(), &at.key("health"), base, p);
        if let Some(HealthConfig {
            check: CheckKind::Postgres { ssl, .. },
            ..
        }) = &mut health
        {
            *ssl = pg;
        }
    }
    let read_only = rules::read_only(
        &pf.read_only_when,
        pf.read_only_status,
        pf.read_only_message.as_deref(),
        pf.read_only_retry_after.map(|d| d.0),
        at,
        pool_names,
        p,
    );
    let cookie = pf
        .cookie
        .as_ref()
        .and_then(|c| cookie(c, &at.key("cookie"), cookie_values, p));
    PoolConfig {
        cookie,
        tls,
        protocol,
        http2,
        circuit,
        read_only,
        send_proxy,
        splice: pf.splice,
        name: pf.name.clone(),
        balance: pf.balance,
        hash_key,
        connect_timeout: pf.connect_timeout.0,
        server_timeout: pf.server_timeout.0,
        max_connections_per_server: pf.max_connections_per_server,
        queue_timeout: pf.queue_timeout.0,
        shed_after: pf.shed_after.map(|d| d.0),
        max_grpc_timeout: pf.max_grpc_timeout.map(|d| d.0),
        max_idle_per_server: pf.max_idle_per_server,
        keepalive_timeout: pf.keepalive_timeout.0,
        tunnel_timeout: pf.tunnel_timeout.0,
        health,
        breaker: BreakerConfig {
            consecutive_failures: breaker.consecutive_failures,
            ejection_time: breaker.ejection_time.0,
            max_ejection_time: breaker.max_ejection_time.0,
            max_ejected_percent: breaker.max_ejected_percent,
            on_5xx: breaker.on_5xx,
        },
        retry,
        slow_start: pf.slow_start.0,
        servers,
    }
}

/// `[pool.cookie]`: None when it has a problem (reported).
fn cookie(
    c: &CookieFile,
    at: &KeyPath,
    values: Vec<(std::net::SocketAddr, String)>,
    p: &mut Problems<'_>,
) -> Option<std::sync::Arc<CookieConfig>> {
    let before = p.list.len();
    // RFC 6265 4.1.1: a cookie-name is a token
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if c.name.is_empty() || !c.name.bytes().all(tchar) {
        p.add(
            &at.key("name"),
            format!(
                "{:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                c.name
            ),
        );
    }
    // browsers drop a cookie whose name's prefix its attributes break
    if c.name.starts_with("__Host-") && (!c.secure || c.path != "/" || c.domain.is_some()) {
        p.add(
            &at.key("name"),
            "a __Host- cookie needs secure = true, path = \"/\" and no domain (browsers drop it otherwise)",
        );
    } else if c.name.starts_with("__Secure-") && !c.secure {
        p.add(
            &at.key("name"),
            "a __Secure- cookie needs secure = true (browsers drop it otherwise)",
        );
    }
    if c.key.as_deref() == Some("") {
        p.add(&at.key("key"), "must not be empty (leave it out for none)");
    }
    // RFC 6265 4.1.1: an attribute value is any CHAR but a control or ';'
    let av = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';');
    let mut attributes = String::new();
    if !av(&c.path) || !c.path.starts_with('/') {
        p.add(
            &at.key("path"),
            format!("{:?} is not a cookie path (it starts with '/', and has no ';' or control character)", c.path),
        );
    }
    attributes.push_str("; Path=");
    attributes.push_str(&c.path);
    if let Some(d) = &c.domain {
        if !av(d) || d.contains(' ') {
            p.add(&at.key("domain"), format!("{d:?} is not a cookie domain"));
        }
        attributes.push_str("; Domain=");
        attributes.push_str(d);
    }
    if let Some(m) = c.max_age {
        if m.0.as_secs() == 0 || m.0.subsec_nanos() != 0 {
            p.add(
                &at.key("max_age"),
                "must be a whole number of seconds, at least 1s",
            );
        }
        attributes.push_str(&format!("; Max-Age={}", m.0.as_secs()));
    }
    if c.secure {
        attributes.push_str("; Secure");
    }
    if c.httponly {
        attributes.push_str("; HttpOnly");
    }
    if let Some(s) = &c.same_site {
        let v = match s.to_ascii_lowercase().as_str() {
            "strict" => "Strict",
            "lax" => "Lax",
            "none" if !c.secure => {
                p.add(
                    &at.key("same_site"),
                    "\"None\" needs secure = true (browsers refuse a SameSite=None cookie that is not Secure)",
                );
                "None"
            }
            "none" => "None",
            _ => {
                p.add(
                    &at.key("same_site"),
                    format!("unknown value {s:?}: use \"Strict\", \"Lax\" or \"None\""),
                );
                ""
            }
        };
        attributes.push_str("; SameSite=");
        attributes.push_str(v);
    }
    (p.list.len() == before).then(|| {
        std::sync::Arc::new(CookieConfig {
            name: c.name.clone(),
            key: c.key.clone(),
            indirect: c.indirect,
            nocache: c.nocache,
            attributes,
            values,
        })
    })
}

/// Whether `v` can be a cookie's value as written (RFC 6265 4.1.1's
/// cookie-octets, unquoted). Public for the importers, which check a
/// server's value before writing it.
pub fn cookie_value(v: &str) -> Result<(), String> {
    let octet = |b: u8| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e);
    if v.is_empty() || !v.bytes().all(octet) {
        return Err(format!(
            "{v:?} is not a cookie value (printable ASCII without space, '\"', ',', ';' or '\\')"
        ));
    }
    Ok(())
}

/// The largest `retry_buffer`.
const MAX_RETRY_BUFFER: u64 = 64 * 1024 * 1024;
