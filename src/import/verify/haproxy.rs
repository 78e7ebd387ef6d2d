//! The haproxy original, rewritten to run beside rampart on loopback for the
//! comparison: every listening address and server moved to this run's ports, the
//! lines the import reported unsupported left out.

use crate::import::haproxy::{bind_addrs, old_style_bind, sections, Kind};

/// The original moved to the local world for `--verify` (see `verify`):
/// binds to loopback ports, every backend's servers to its local backend,
/// certificates to the test certificate; health checks, TLS to servers, the
/// PROXY protocol, rate limits, logs and the global section's process
/// settings taken out, and every line the import reported unsupported.
pub(super) fn rewrite(
    src: &str,
    unsupported: &std::collections::HashSet<usize>,
    local: &mut super::local::Local,
) -> String {
    let (secs, _) = sections(src);
    let raw: Vec<&str> = src.lines().collect();
    let mut out = String::from("global\n    maxconn 4000\n\n");
    for sec in &secs {
        let is_stats = sec.kind == Kind::Listen
            && sec.lines.iter().any(|l| l.words[0] == "stats")
            && !sec.lines.iter().any(|l| l.words[0].starts_with("server"));
        if matches!(sec.kind, Kind::Global | Kind::Resolvers | Kind::Other) || is_stats {
            continue;
        }
        out.push_str(&format!("{} {}\n", sec.keyword, sec.name));
        let head_bind = old_style_bind(sec);
        // the pool a backend's servers go to: the section's own name
        let pool = sec.name.clone();
        for l in head_bind.iter().chain(&sec.lines) {
            if unsupported.contains(&l.no) && l.no != sec.no {
                continue;
            }
            let w = &l.words;
            let has = |k: &str| w.iter().any(|x| x == k);
            match w[0].as_str() {
                "bind" if w.len() > 1 => {
                    let Ok(addrs) = bind_addrs(&w[1]) else {
                        continue;
                    };
                    let ssl = has("ssl") || has("crt");
                    for a in addrs {
                        let port = local.original_port(&a);
                        let mut line = format!("    bind {}:{port}", local.ip);
                        if ssl {
                            line.push_str(&format!(" ssl crt {}", local.pem.display()));
                            if let Some(p) = w.iter().position(|x| x == "alpn") {
                                if let Some(v) = w.get(p + 1) {
                                    line.push_str(&format!(" alpn {v}"));
                                }
                            }
                        }
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
                "server" | "server-template" if w.len() > 2 => {
                    let port = local.pool_port(&pool);
                    out.push_str(&format!("    server {} {}:{port}\n", w[1], local.ip));
                }
                "option"
                    if matches!(
                        w.get(1).map(String::as_str),
                        Some(
                            "httpchk"
                                | "pgsql-check"
                                | "mysql-check"
                                | "redis-check"
                                | "ssl-hello-chk"
                                | "tcp-check"
                                | "ldap-check"
                                | "smtpchk"
                        )
                    ) => {}
                "http-check" | "tcp-check" | "log" | "errorfile" | "stats" | "default-server"
                | "stick-table" | "rate-limit" | "tcp-request" | "email-alert"
                | "external-check" => {}
                "http-request"
                    if w.iter()
                        .any(|x| x.starts_with("track-sc") || x.contains("http_req_rate")) => {}
                _ => {
                    if let Some(r) = raw.get(l.no - 1) {
                        out.push_str(r);
                        out.push('\n');
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}
