//! The nginx original, rewritten to run beside rampart on loopback for the
//! comparison: every listening address and server moved to this run's ports, the
//! lines the import reported unsupported left out.

use crate::import::nginx::listen_addr;
use crate::import::nginx_parse::{parse, Directive};

/// The original moved to the local world for `--verify` (see `verify`).
pub(super) fn rewrite(
    src: &str,
    unsupported: &std::collections::HashSet<usize>,
    local: &mut super::local::Local,
) -> String {
    let Ok(ds) = parse(src) else {
        return String::new();
    };
    let upstreams: Vec<String> = {
        fn collect(ds: &[Directive], out: &mut Vec<String>) {
            for d in ds {
                if d.name == "upstream" {
                    if let Some(n) = d.args.first() {
                        out.push(n.clone());
                    }
                } else if let Some(b) = &d.block {
                    collect(b, out);
                }
            }
        }
        let mut v = Vec::new();
        collect(&ds, &mut v);
        v
    };
    // what the import could not use, and what the local world has no use for
    // (`sticky` is nginx Plus's: the nginx of the comparison refuses it, and
    // with one backend per pool it cannot change which pool answers)
    const DROP: [&str; 31] = [
        "include",
        "resolver",
        "resolver_timeout",
        "ssl_client_certificate",
        "ssl_trusted_certificate",
        "ssl_verify_client",
        "ssl_verify_depth",
        "ssl_dhparam",
        "ssl_stapling",
        "ssl_stapling_verify",
        "ssl_stapling_file",
        "limit_req",
        "limit_req_zone",
        "limit_conn",
        "limit_conn_zone",
        "access_log",
        "error_log",
        "proxy_cache_path",
        "proxy_cache",
        "proxy_cache_valid",
        "proxy_cache_use_stale",
        "user",
        "pid",
        "daemon",
        "load_module",
        "error_page",
        "proxy_ssl_certificate",
        "proxy_ssl_certificate_key",
        "proxy_ssl_trusted_certificate",
        "status_zone",
        "sticky",
    ];
    const KEEP: [&str; 6] = ["map", "geo", "set", "split_clients", "log_format", "types"];
    fn walk(
        ds: &[Directive],
        ctx: &str,
        unsupported: &std::collections::HashSet<usize>,
        local: &mut super::local::Local,
        upstreams: &[String],
    ) -> Vec<Directive> {
        let mut out = Vec::new();
        for d in ds {
            if DROP.contains(&d.name.as_str())
                || d.name.starts_with("proxy_ssl")
                // `http2 on` is nginx 1.25's; HTTP/1.1 requests do not need it
                || d.name == "http2"
                || (unsupported.contains(&d.line) && !KEEP.contains(&d.name.as_str()))
                || (ctx == "main" && d.name.starts_with("worker_") && d.name != "worker_processes")
            {
                continue;
            }
            let mut d = d.clone();
            match d.name.as_str() {
                "listen" => {
                    let Some(a) = d.args.first().and_then(|a| listen_addr(a).ok()) else {
                        continue;
                    };
                    let port = local.original_port(&a);
                    let mut args = vec![format!("{}:{port}", local.ip)];
                    for o in &d.args[1..] {
                        if matches!(o.as_str(), "ssl" | "default_server" | "default" | "udp") {
                            args.push(o.clone());
                        }
                    }
                    d.args = args;
                }
                "ssl_certificate" => d.args = vec![local.cert.display().to_string()],
                "ssl_certificate_key" => d.args = vec![local.key.display().to_string()],
                "proxy_pass" => {
                    let url = d.args.first().cloned().unwrap_or_default();
                    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
                    let (host, path) = match rest.find('/') {
                        Some(i) => (&rest[..i], &rest[i..]),
                        None => (rest, ""),
                    };
                    if !upstreams.iter().any(|u| u == host) && !host.contains('$') {
                        let port = local.pool_port(&host.replace(':', "-"));
                        d.args = vec![if ctx == "stream_server" {
                            format!("{}:{port}", local.ip)
                        } else {
                            format!("http://{}:{port}{path}", local.ip)
                        }];
                    } else if url.starts_with("https://") {
                        d.args = vec![url.replacen("https://", "http://", 1)];
                    }
                }
                _ => {}
            }
            if let Some(b) = &d.block {
                let inner = match (ctx, d.name.as_str()) {
                    (_, "upstream") => {
                        let name = d.args.first().cloned().unwrap_or_default();
                        let port = local.pool_port(&name);
                        let mut kept: Vec<Directive> =
                            walk(b, "upstream", unsupported, local, upstreams)
                                .into_iter()
                                .filter(|x| {
                                    x.name != "server" && x.name != "zone" && x.name != "resolver"
                                })
                                .collect();
                        kept.insert(0, dir("server", &[&format!("{}:{port}", local.ip)]));
                        kept
                    }
                    ("stream", "server") => walk(b, "stream_server", unsupported, local, upstreams),
                    (_, "server") => {
                        let mut inner = walk(b, "server", unsupported, local, upstreams);
                        // a TLS server without a certificate (the import left
                        // it out) still has to load
                        let ssl = inner
                            .iter()
                            .any(|x| x.name == "listen" && x.args.iter().any(|a| a == "ssl"));
                        if ssl && !inner.iter().any(|x| x.name == "ssl_certificate") {
                            inner
                                .push(dir("ssl_certificate", &[&local.cert.display().to_string()]));
                            inner.push(dir(
                                "ssl_certificate_key",
                                &[&local.key.display().to_string()],
                            ));
                        }
                        inner
                    }
                    (_, n) => walk(b, n, unsupported, local, upstreams),
                };
                d.block = Some(inner);
            }
            out.push(d);
        }
        out
    }
    let is_stream_server = |d: &Directive| {
        d.name == "server"
            && d.block.as_ref().is_some_and(|b| {
                b.iter().any(|e| e.name == "proxy_pass") && !b.iter().any(|e| e.name == "location")
            })
    };
    // a conf.d snippet: its http (and stream) parts wrapped as nginx.conf has them
    let mut main = Vec::new();
    let mut http = Vec::new();
    let mut stream = Vec::new();
    for d in &ds {
        match d.name.as_str() {
            "http" | "stream" | "events" | "worker_processes" | "user" | "pid" | "error_log"
            | "daemon" | "include" | "load_module" | "pcre_jit" => main.push(d.clone()),
            _ if d.name.starts_with("worker_") => main.push(d.clone()),
            _ if is_stream_server(d) => stream.push(d.clone()),
            "upstream"
                if ds.iter().any(|s| {
                    is_stream_server(s)
                        && s.block
                            .iter()
                            .flatten()
                            .any(|e| e.name == "proxy_pass" && e.args.first() == d.args.first())
                }) =>
            {
                stream.push(d.clone())
            }
            _ => http.push(d.clone()),
        }
    }
    let block = |name: &str, b: Vec<Directive>| Directive {
        line: 0,
        name: name.into(),
        args: vec![],
        block: Some(b),
    };
    if !http.is_empty() {
        main.push(block("http", http));
    }
    if !stream.is_empty() {
        main.push(block("stream", stream));
    }
    let mut w = walk(&main, "main", unsupported, local, &upstreams);
    w.retain(|d| d.name != "worker_processes");
    if !w.iter().any(|d| d.name == "events") {
        w.insert(0, block("events", vec![]));
    }
    let dirs = local.dir.display().to_string();
    let mut head = vec![
        dir("worker_processes", &["1"]),
        dir("daemon", &["off"]),
        dir("master_process", &["off"]),
        dir("pid", &[&format!("{dirs}/nginx.pid")]),
        dir("error_log", &[&format!("{dirs}/error.log")]),
    ];
    for d in &mut w {
        if d.name == "http" {
            if let Some(b) = &mut d.block {
                for (k, sub) in [
                    ("client_body_temp_path", "body"),
                    ("proxy_temp_path", "proxy"),
                    ("fastcgi_temp_path", "fastcgi"),
                    ("uwsgi_temp_path", "uwsgi"),
                    ("scgi_temp_path", "scgi"),
                ] {
                    b.insert(0, dir(k, &[&format!("{dirs}/{sub}")]));
                }
                b.insert(0, dir("access_log", &["off"]));
            }
        }
    }
    // Debian builds the stream module as a dynamic one
    let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
    if w.iter().any(|d| d.name == "stream") && std::path::Path::new(module).exists() {
        head.insert(0, dir("load_module", &[module]));
    }
    head.extend(w);
    let mut out = String::new();
    render(&head, 0, &mut out);
    out
}

/// An argument as nginx reads it back.
fn quote(a: &str) -> String {
    if !a.is_empty()
        && !a.contains(|c: char| {
            c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#' | '"' | '\'')
        })
    {
        return a.to_string();
    }
    let mut q = String::from("\"");
    for c in a.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn render(ds: &[Directive], depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    for d in ds {
        out.push_str(&pad);
        // a directive's name is a word like the others (`'' close;` in a map)
        out.push_str(&quote(&d.name));
        for a in &d.args {
            out.push(' ');
            out.push_str(&quote(a));
        }
        match &d.block {
            Some(b) => {
                out.push_str(" {\n");
                render(b, depth + 1, out);
                out.push_str(&pad);
                out.push_str("}\n");
            }
            None => out.push_str(";\n"),
        }
    }
}

fn dir(name: &str, args: &[&str]) -> Directive {
    Directive {
        line: 0,
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        block: None,
    }
}
