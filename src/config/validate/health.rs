//! `[pool.health]`: active checks and their thresholds.

use super::tls::load_ca;
use crate::config::file::*;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use crate::tls::{PgSslMode, PgTls, PoolTls};
use std::path::Path;
use std::time::Duration;

pub(super) fn health(h: &HealthFile, at: &KeyPath, p: &mut Problems<'_>) -> Option<HealthConfig> {
    let before = p.list.len();
    if h.interval.0.is_zero() {
        p.add(&at.key("interval"), "must be greater than zero");
    }
    if h.timeout.0.is_zero() {
        p.add(&at.key("timeout"), "must be greater than zero");
    }
    if h.rise == 0 || h.rise > 100 {
        p.add(&at.key("rise"), "must be between 1 and 100");
    }
    if h.fall == 0 || h.fall > 100 {
        p.add(&at.key("fall"), "must be between 1 and 100");
    }
    if let Some(f) = h.fast_interval {
        if f.0.is_zero() {
            p.add(&at.key("fast_interval"), "must be greater than zero");
        }
    }
    let kind_name = match h.kind {
        HealthKind::Tcp => "tcp",
        HealthKind::Http => "http",
        HealthKind::Postgres => "postgres",
        HealthKind::Grpc => "grpc",
    };
    let only = |p: &mut Problems<'_>, key: &'static str, set: bool, kind: &str| {
        if set {
            p.add(
                &at.key(key),
                format!("is only used with kind = \"{kind}\", not \"{kind_name}\""),
            );
        }
    };
    if h.kind != HealthKind::Http {
        only(p, "path", h.path.is_some(), "http");
        only(p, "method", h.method.is_some(), "http");
        only(p, "host", h.host.is_some(), "http");
        only(p, "expect_status", h.expect_status.is_some(), "http");
        only(p, "expect_body", h.expect_body.is_some(), "http");
    }
    if h.kind != HealthKind::Postgres {
        only(p, "user", h.user.is_some(), "postgres");
        only(p, "password_env", h.password_env.is_some(), "postgres");
        only(p, "database", h.database.is_some(), "postgres");
        only(p, "role", h.role.is_some(), "postgres");
        only(
            p,
            "max_replica_lag",
            h.max_replica_lag.is_some(),
            "postgres",
        );
        only(p, "ssl", h.ssl.is_some(), "postgres");
        only(p, "ca", h.ca.is_some(), "postgres");
    }
    if h.kind != HealthKind::Grpc {
        only(p, "service", h.service.is_some(), "grpc");
    }
    let check = match h.kind {
        HealthKind::Tcp => CheckKind::Tcp,
        HealthKind::Http => {
            let method = match &h.method {
                None => http::Method::GET,
                Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => m,
                    Err(_) => {
                        p.add(&at.key("method"), format!("invalid method {m:?}"));
                        http::Method::GET
                    }
                },
            };
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                p.add(
                    &at.key("path"),
                    format!("must be a path starting with '/', got {path:?}"),
                );
            }
            if let Some(host) = &h.host {
                if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
                    p.add(
                        &at.key("host"),
                        format!("invalid Host header value {host:?}"),
                    );
                }
            }
            let expect_status =
                match parse_status_ranges(h.expect_status.as_deref().unwrap_or("200-399")) {
                    Ok(r) => r,
                    Err(e) => {
                        p.add(&at.key("expect_status"), e);
                        Vec::new()
                    }
                };
            CheckKind::Http {
                method,
                path,
                host: h.host.clone(),
                expect_status,
                expect_body: h.expect_body.clone(),
                h2: false,
            }
        }
        HealthKind::Postgres => {
            let password = match &h.password_env {
                None => None,
                Some(var) => match crate::config::env::secret(var) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        p.add(&at.key("password_env"), e);
                        None
                    }
                },
            };
            CheckKind::Postgres {
                user: h.user.clone().unwrap_or_else(|| "postgres".into()),
                password,
                database: h.database.clone().unwrap_or_else(|| "postgres".into()),
                role: h.role.unwrap_or(PgRole::Any),
                max_replica_lag: h.max_replica_lag.map_or(Duration::ZERO, |d| d.0),
                // (postgres_ssl's, once the pool's [pool.tls] is known)
                ssl: None,
            }
        }
        HealthKind::Grpc => {
            let service = h.service.clone().unwrap_or_default();
            if service.len() > 1024 || service.bytes().any(|b| b.is_ascii_control()) {
                p.add(
                    &at.key("service"),
                    "must be a service name of at most 1024 printable characters",
                );
            }
            CheckKind::Grpc { service }
        }
    };
    (p.list.len() == before).then(|| HealthConfig {
        interval: h.interval.0,
        timeout: h.timeout.0,
        rise: h.rise,
        fall: h.fall,
        fast_interval: h.fast_interval.map_or(h.interval.0, |d| d.0),
        initial_up: h.initial == InitialState::Up,
        check,
    })
}

/// A postgres check's `ssl` and `ca`: None for `disable`, or the TLS it
/// goes with. The default is libpq's, `prefer`: TLS wherever the server
/// offers it, so a server that takes only TLS connections (`hostssl` lines in
/// pg_hba.conf) can be checked without a word in the config, and a server it
/// fails with is checked without TLS as before. The modes that verify
/// certificates need a CA: `ca`, else `[pool.tls]`'s (with its CRL), as
/// libpq refuses verify-full without a root certificate; the name verified is
/// `[pool.tls]`'s `server_name`, else the DNS name the server was found
/// under, else its address (libpq verifies the host it connected to).
pub(super) fn postgres_ssl(
    h: &HealthFile,
    pool_tls: Option<&PoolTls>,
    at: &KeyPath,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<Box<PgTls>> {
    let mode = match h.ssl.as_deref() {
        Some("disable") => None,
        None | Some("prefer") => Some(PgSslMode::Prefer),
        Some("require") => Some(PgSslMode::Require),
        Some("verify-ca") => Some(PgSslMode::VerifyCa),
        Some("verify-full") => Some(PgSslMode::VerifyFull),
        Some(v) => {
            p.add(
                &at.key("ssl"),
                format!("unknown mode {v:?}: use \"disable\", \"prefer\", \"require\", \"verify-ca\" or \"verify-full\" (libpq's sslmode)"),
            );
            return None;
        }
    };
    let verifies = mode.is_some_and(PgSslMode::verifies);
    if h.ca.is_some() && !verifies {
        p.add(
            &at.key("ca"),
            format!(
                "is only used with ssl = \"verify-ca\" or \"verify-full\", not \"{}\" (which verifies no certificate)",
                mode.map_or("disable", PgSslMode::name)
            ),
        );
        return None;
    }
    let mode = mode?;
    let (ca, crl) = if !verifies {
        (None, None)
    } else if let Some(ca) = &h.ca {
        (Some(load_ca(base, ca, true, &at.key("ca"), p)?), None)
    } else if let Some(t) = pool_tls.filter(|t| t.ca.is_some()) {
        (t.ca.clone(), t.crl.clone())
    } else {
        p.add(
            &at.key("ssl"),
            format!(
                "\"{}\" verifies the servers' certificates: give ca (a PEM file of the CA that signs them, or \"system\" for the OS trust store), or a [pool.tls] that verifies",
                mode.name()
            ),
        );
        return None;
    };
    // libpq refuses this too: any publicly issued certificate, for any
    // name, would pass
    if mode == PgSslMode::VerifyCa && ca.as_ref().is_some_and(|c| !c.from_file()) {
        p.add(
            &at.key("ssl"),
            "\"verify-ca\" with the OS trust store (ca = \"system\", or a [pool.tls] without its own ca) accepts any publicly issued certificate for any name: use \"verify-full\", or give the file of the CA that signs your servers' certificates",
        );
        return None;
    }
    let server_name = pool_tls.and_then(|t| t.server_name.clone());
    match PgTls::build(mode, ca, crl, server_name) {
        Ok(t) => Some(Box::new(t)),
        Err(e) => {
            p.add(&at.key("ssl"), e.to_string());
            None
        }
    }
}

/// "200-399", "200", "200,204,300-399" -> inclusive ranges.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || format!("invalid status list {s:?}: write e.g. \"200-399\" or \"200,204\"");
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(bad()),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let r = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if r.0 > r.1 {
            return Err(bad());
        }
        out.push(r);
    }
    Ok(out)
}
