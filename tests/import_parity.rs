//! Imported configs against the proxies they came from: rampart on what
//! `rampart import` made of an nginx or HAProxy config sends the server
//! what nginx or HAProxy sends it, request for request, the real proxy
//! beside it. Path rewrites (nginx's `proxy_pass` with a URI and `rewrite`,
//! HAProxy's `replace-path` and `set-path`), the client a trusted proxy
//! names (nginx's realip module), gzip, body limits (nginx's
//! `client_max_body_size` at each level), and TLS passthrough routed by the
//! ClientHello's server name (nginx's map of `$ssl_preread_server_name`,
//! HAProxy's `req.ssl_sni`).

mod common;

use common::tls::client_hello;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The target `backend` got for GET `path` through the proxy at `via`.
async fn seen(c: &Client, via: SocketAddr, path: &str, backend: &Backend) -> String {
    backend.stats.last_uri.lock().unwrap().take();
    let (status, body) = get(c, &format!("http://{via}{path}")).await;
    assert_eq!(status, 200, "{via}{path}: {body}");
    let uri = backend.stats.last_uri.lock().unwrap().take();
    uri.unwrap_or_else(|| panic!("{via}{path} did not reach the server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_nginx_rewrites_send_what_nginx_sends() {
    let dir = temp_dir("nginx-rewrites");
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let ng = free_addr("127.0.0.1");
    let conf = nginx_conf(
        &dir,
        &format!(
            "upstream app {{ server {}; }}\n\
               server {{\n    listen {ng};\n\
                 rewrite ^/zpi/(.*)$ /api/$1 last;\n\
                 location /api/ {{ proxy_pass http://app/; }}\n\
                 location = /exact {{ proxy_pass http://app/other; }}\n\
                 location /b/ {{ rewrite ^/b/(?<rest>.*)$ /bee/$rest break; proxy_pass http://app; }}\n\
                 location /both/ {{ rewrite ^/both/x/(.*)$ /y/$1 break; proxy_pass http://app/z/; }}\n\
                 location / {{ proxy_pass http://app; }}\n  }}",
            backend.addr
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    for line in [
        "mapped: proxy_pass http://app/:",
        "mapped: rewrite ^/zpi/(.*)$ /api/$1 last",
        "mapped: rewrite ^/b/(?<rest>.*)$ /bee/$rest break",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    for path in [
        "/api/users/7?x=1&y=%20",
        "/%61pi/q",
        "/api/a%20b",
        "/api/x%2Fy",
        "/api/caf%C3%A9",
        "/api/a!$'()*+,;=:@~-._",
        "/zpi/v?k=v",
        "/exact?q",
        "/b/c/d?e",
        "/both/x/1",
        "/both/w",
        "/plain?x",
    ] {
        let theirs = seen(&c, ng, path, &backend).await;
        let ours = seen(&c, listen, path, &backend).await;
        assert_eq!(ours, theirs, "{path}");
    }
    // (the rewrites did rewrite)
    assert_eq!(seen(&c, listen, "/api/users", &backend).await, "/users");
    assert_eq!(seen(&c, listen, "/both/w", &backend).await, "/z/w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_haproxy_path_rewrites_send_what_haproxy_sends() {
    let dir = temp_dir("haproxy-rewrites");
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let ha = free_addr("127.0.0.1");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend web\n  bind {ha}\n\
               http-request replace-path ^/zpi/(.*)$ /api/\\1\n\
               use_backend api if {{ path_beg /api/ }}\n  default_backend app\n\
             backend api\n  http-request replace-path ^/api(/.*)$ \\1\n  server s1 {b}\n\
             backend app\n  http-request set-path /app%[path]\n  server s1 {b}\n",
            b = backend.addr
        ),
    )
    .unwrap();
    let (toml, listen, report) = imported("haproxy", &cfg, ha);
    assert!(
        report.contains("approximated: http-request replace-path ^/zpi/(.*)$ /api/\\1"),
        "{report}"
    );
    let _haproxy = haproxy(&cfg);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ha, std::time::Duration::from_secs(10)).await;
    let c = client();
    for path in ["/zpi/x?q=1", "/api/y", "/api/a%20b?c", "/other?z", "/"] {
        let theirs = seen(&c, ha, path, &backend).await;
        let ours = seen(&c, listen, path, &backend).await;
        assert_eq!(ours, theirs, "{path}");
    }
    assert_eq!(seen(&c, listen, "/zpi/x", &backend).await, "/x");
    assert_eq!(seen(&c, listen, "/other", &backend).await, "/app/other");
}

/// nginx's `set_real_ip_from`, `real_ip_header X-Forwarded-For` and
/// `real_ip_recursive on`, with `proxy_set_header X-Real-IP $remote_addr`,
/// `$proxy_add_x_forwarded_for` and a location's `deny` of the client's
/// network: the same status, X-Real-IP and X-Forwarded-For from rampart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_realip_names_the_client_nginx_names() {
    let dir = temp_dir("nginx-realip");
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let ng = free_addr("127.0.0.1");
    let conf = nginx_conf(
        &dir,
        &format!(
            "set_real_ip_from 127.0.0.0/8;\n  real_ip_header X-Forwarded-For;\n  real_ip_recursive on;\n\
             upstream app {{ server {}; }}\n\
             server {{\n    listen {ng};\n\
               proxy_set_header X-Real-IP $remote_addr;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               location /adm {{ deny 203.0.113.0/24; allow all; proxy_pass http://app; }}\n\
               location / {{ proxy_pass http://app; }}\n  }}",
            backend.addr
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    assert!(report.contains("mapped: real_ip_recursive on"), "{report}");
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    // (status, X-Real-IP, X-Forwarded-For) for a request with `xff`
    let ask = |via: SocketAddr, path: &'static str, xff: Option<&'static str>| {
        let c = c.clone();
        let backend = &backend;
        async move {
            backend.stats.last_headers.lock().unwrap().take();
            let mut req = hyper::Request::get(format!("http://{via}{path}"));
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            let (resp, _) = send(&c, req.body(empty()).unwrap()).await;
            let h = backend.stats.last_headers.lock().unwrap().take();
            let field = |n: &str| {
                h.as_ref()
                    .and_then(|h| h.get(n))
                    .map(|v| v.to_str().unwrap().to_string())
            };
            (
                resp.status().as_u16(),
                field("x-real-ip"),
                field("x-forwarded-for"),
            )
        }
    };
    for (path, xff) in [
        ("/", Some("198.51.100.7, 127.0.0.9")),
        ("/", Some("198.51.100.7")),
        ("/", Some("unknown, 127.0.0.9")),
        ("/", Some("10.9.9.9, 198.51.100.7")),
        ("/", None),
        ("/adm", Some("203.0.113.9")),
        ("/adm", Some("203.0.113.9, 198.51.100.7")),
    ] {
        let theirs = ask(ng, path, xff).await;
        let ours = ask(listen, path, xff).await;
        assert_eq!(ours, theirs, "{path} {xff:?}");
    }
    // (the trusted proxy's word was taken)
    let (st, real, _) = ask(listen, "/adm", Some("203.0.113.9")).await;
    assert_eq!((st, real), (403, None));
    let (_, real, _) = ask(listen, "/", Some("198.51.100.7, 127.0.0.9")).await;
    assert_eq!(real.as_deref(), Some("198.51.100.7"));
}

/// A server of pages by path: `/json` and `/html` (with an ETag), `/png`.
async fn page_server() -> SocketAddr {
    answering(|req| async move {
        let ctype = match req.uri().path() {
            "/json" => "application/json",
            "/html" => "text/html",
            _ => "image/png",
        };
        let body = "{\"words\": \"again and again\"}\n".repeat(40);
        let mut r = full_answer(body);
        r.headers_mut()
            .insert("content-type", ctype.parse().unwrap());
        r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
        r
    })
    .await
}

/// nginx's `gzip on` with `gzip_types application/json`, imported: the same
/// answers compressed (text/html always, as nginx), the same fields
/// (Content-Encoding, Vary, a weak ETag) and the same bytes once inflated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_gzip_compresses_what_nginx_compresses() {
    use std::io::Write;
    let dir = temp_dir("nginx-gzip");
    let backend = page_server().await;
    let ng = free_addr("127.0.0.1");
    let conf = nginx_conf(
        &dir,
        &format!(
            "gzip on;\n  gzip_types application/json;\n  gzip_vary on;\n  gzip_proxied any;\n\
             upstream app {{ server {backend}; }}\n\
             server {{\n    listen {ng};\n    location / {{ proxy_pass http://app; }}\n  }}"
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    assert!(report.contains("approximated: gzip on"), "{report}");
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let ask = |via: SocketAddr, path: &'static str, ae: Option<&'static str>| {
        let c = c.clone();
        async move {
            let mut req = hyper::Request::get(format!("http://{via}{path}"));
            if let Some(v) = ae {
                req = req.header("accept-encoding", v);
            }
            let (resp, body) = send(&c, req.body(empty()).unwrap()).await;
            let field = |n: &str| {
                resp.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let enc = field("content-encoding");
            let body = if enc.as_deref() == Some("gzip") {
                let mut d = flate2::write::GzDecoder::new(Vec::new());
                d.write_all(&body).unwrap();
                d.finish().unwrap()
            } else {
                body.to_vec()
            };
            (
                resp.status().as_u16(),
                enc,
                field("vary"),
                field("etag"),
                body,
            )
        }
    };
    for (path, ae) in [
        ("/json", Some("gzip, deflate")),
        ("/html", Some("gzip")),
        ("/png", Some("gzip")),
        ("/json", None),
        ("/json", Some("gzip;q=0")),
    ] {
        let theirs = ask(ng, path, ae).await;
        let ours = ask(listen, path, ae).await;
        assert_eq!(ours, theirs, "{path} {ae:?}");
    }
    let (_, enc, _, etag, _) = ask(listen, "/json", Some("gzip")).await;
    assert_eq!(
        (enc.as_deref(), etag.as_deref()),
        (Some("gzip"), Some("W/\"v1\""))
    );
}

/// nginx's `client_max_body_size` at the http level, a server's and
/// locations' own (0 among them: no limit), and a second server that
/// inherits the http level's: rampart on the import refuses (413) and
/// serves what nginx refuses and serves, body size for body size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_body_limits_refuse_what_nginx_refuses() {
    let dir = temp_dir("nginx-body-limits");
    // (a server that reads every body: one that answers first and closes
    // would leave the upload's fate to a race)
    let backend = answering(|req: hyper::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let n = req
            .into_body()
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        full_answer(n.to_string())
    })
    .await;
    let ng = free_addr("127.0.0.1");
    let conf = nginx_conf(
        &dir,
        &format!(
            "upstream app {{ server {}; }}\n\
             client_max_body_size 2k;\n\
             server {{\n    listen {ng} default_server;\n    client_max_body_size 4k;\n\
                 location /upload {{ client_max_body_size 64k; proxy_pass http://app; }}\n\
                 location /small/ {{ client_max_body_size 1k; proxy_pass http://app; }}\n\
                 location /free {{ client_max_body_size 0; proxy_pass http://app; }}\n\
                 location / {{ proxy_pass http://app; }}\n  }}\n\
             server {{\n    listen {ng};\n    server_name other.test;\n\
                 location / {{ proxy_pass http://app; }}\n  }}",
            backend
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    for size in ["2k", "4k", "64k", "1k", "0"] {
        let line = format!("mapped: client_max_body_size {size}:");
        assert!(report.contains(&line), "{line}: {report}");
    }
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let status = |via: SocketAddr, host: &'static str, path: &'static str, n: usize| {
        let c = c.clone();
        async move {
            let req = hyper::Request::post(format!("http://{via}{path}"))
                .header("host", host)
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(vec![7u8; n]),
                )))
                .unwrap();
            c.request(req)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut refused = 0;
    for (host, path, n) in [
        ("x.test", "/other", 4096),
        ("x.test", "/other", 4097),
        ("x.test", "/upload", 65_536),
        ("x.test", "/upload", 65_537),
        ("x.test", "/small/a", 1024),
        ("x.test", "/small/a", 1025),
        ("x.test", "/free", 300_000),
        ("other.test", "/upload", 2048),
        ("other.test", "/upload", 2049),
    ] {
        let theirs = status(ng, host, path, n).await;
        let ours = status(listen, host, path, n).await;
        assert_eq!(ours, theirs, "{host}{path} with {n} bytes");
        assert!(theirs == 200 || theirs == 413, "{host}{path}: {theirs}");
        refused += usize::from(theirs == 413);
    }
    assert_eq!(refused, 4, "each limit was reached");
}

/// What a client got: the status, the Location, Refresh and Server fields,
/// and the body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    location: Option<String>,
    refresh: Option<String>,
    server: Option<String>,
    body: String,
}

/// GET `path` with this Host through the proxy at `via`.
async fn answer(c: &Client, via: SocketAddr, host: &str, path: &str) -> Answer {
    let req = hyper::Request::get(format!("http://{via}{path}"))
        .header("host", host)
        .body(empty())
        .unwrap();
    let (resp, body) = send(c, req).await;
    let field = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: resp.status().as_u16(),
        location: field("location"),
        refresh: field("refresh"),
        server: field("server"),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A server that echoes the Host and target it got, and answers a path
/// under `/go` with a redirect to itself by that Host, as an application
/// behind a proxy that sets Host does.
async fn self_redirecting() -> SocketAddr {
    answering(|req: hyper::Request<hyper::body::Incoming>| async move {
        let host = req
            .headers()
            .get("host")
            .map_or("", |v| v.to_str().unwrap_or(""))
            .to_string();
        let target = req.uri().path_and_query().map_or("", |p| p.as_str());
        let mut r = full_answer(format!("{host} {target}"));
        if req.uri().path().contains("/go") {
            *r.status_mut() = hyper::StatusCode::FOUND;
            r.headers_mut().insert(
                "location",
                format!("http://{host}{target}").parse().unwrap(),
            );
            r.headers_mut().insert(
                "refresh",
                format!("3; URL=http://{host}{target}").parse().unwrap(),
            );
        }
        r.headers_mut().insert("server", "app/1.0".parse().unwrap());
        r
    })
    .await
}

/// An HAProxy config in the shape of a real one (openculinary's in the
/// corpus): a backend picked by the Host's first label (`hdr_beg(host)
/// backups.`), each backend setting the Host its application expects,
/// rewriting the application's absolute redirects back to paths
/// (`http-response replace-header Location http://NAME/(.*) /\1`), and one
/// stripping a prefix with `set-path %[path,regsub(^/api/,/)]`. rampart on
/// the import sends the server what HAProxy sends, and the client what
/// HAProxy sends: status, Location, Server, and the Host and target the
/// server saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_haproxy_host_prefixes_and_location_rewrites_answer_as_haproxy() {
    let dir = temp_dir("haproxy-location");
    let backend = self_redirecting().await;
    let ha = free_addr("127.0.0.1");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend web\n  bind {ha}\n\
               acl backups_request hdr_beg(host) backups.\n\
               use_backend backups if backups_request\n\
               acl api_request path_beg /api\n\
               use_backend api if api_request\n\
               default_backend frontend\n\
               http-response del-header server\n\
             backend api\n  http-request set-header Host api\n\
               http-request set-path %[path,regsub(^/api/,/)]\n  server s {b}\n\
             backend backups\n  http-request set-header Host backups\n\
               http-response replace-header Location http://backups/(.*) /\\1\n  server s {b}\n\
             backend frontend\n  http-request set-header Host frontend\n\
               http-response replace-header Location http://frontend/(.*) /\\1\n  server s {b}\n",
            b = backend
        ),
    )
    .unwrap();
    let (toml, listen, report) = imported("haproxy", &cfg, ha);
    for line in [
        "mapped: acl backups_request hdr_beg(host) backups.",
        "mapped: use_backend backups if backups_request",
        "mapped: http-response replace-header Location http://backups/(.*) /\\1",
        "mapped: http-response replace-header Location http://frontend/(.*) /\\1",
        "approximated: http-request set-path %[path,regsub(^/api/,/)]",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _haproxy = haproxy(&cfg);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ha, std::time::Duration::from_secs(10)).await;
    let c = client();
    let ask = |via, host, path| answer(&c, via, host, path);
    let mut redirects = 0;
    for (host, path) in [
        ("backups.example.com", "/go/list?page=2"),
        ("backups.example.com:8080", "/api/go/x"),
        ("backups.example.com", "/plain"),
        ("backupsx.example.com", "/go/y"),
        ("www.example.com", "/go/z?q"),
        ("www.example.com", "/api/go/a"),
        ("www.example.com", "/api/users/7?x=1"),
        ("www.example.com", "/apix/go"),
        ("backups", "/go/bare"),
        ("www.example.com", "/"),
    ] {
        let theirs = ask(ha, host, path).await;
        let ours = ask(listen, host, path).await;
        assert_eq!(ours, theirs, "{host} {path}");
        if theirs
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with('/'))
        {
            redirects += 1;
        }
    }
    // (the rewrites did rewrite: redirects back to paths, and a prefix gone)
    assert_eq!(redirects, 5);
    let a = ask(listen, "backups.example.com", "/go/list").await;
    assert_eq!(
        (a.location.as_deref(), a.server, a.body.as_str()),
        (Some("/go/list"), None, "backups /go/list")
    );
    let a = ask(listen, "www.example.com", "/api/users/7").await;
    assert_eq!(a.body, "api /users/7");
}

/// nginx's `server_name` wildcards, all kinds, in its order: an exact name
/// (`.NAME`'s bare name among them), then `*.NAME` (longest first), then
/// `NAME.*` (longest first), then the default server: rampart on the import
/// answers each Host from the server nginx picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_server_names_pick_the_server_nginx_picks() {
    let dir = temp_dir("nginx-server-names");
    let ng = free_addr("127.0.0.1");
    let server = |names: &str, answer: &str| {
        format!(
            "server {{\n    listen {ng};\n    server_name {names};\n    location / {{ return 200 \"{answer}\\n\"; }}\n  }}\n  "
        )
    };
    let conf = nginx_conf(
        &dir,
        &[
            format!(
                "server {{\n    listen {ng} default_server;\n    location / {{ return 200 \"default\\n\"; }}\n  }}\n  "
            ),
            server("mail.*", "mail-any"),
            server("mail.example.*", "mail-example-any"),
            server("*.example.com", "any-example-com"),
            server("*.mail.example.com", "any-mail-example-com"),
            server("mail.example.com", "exact"),
            server(".example.org", "dot-example-org"),
            server("example.org", "exact-example-org"),
        ]
        .concat(),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    for line in [
        "mapped: server_name mail.*:",
        "mapped: server_name mail.example.*:",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let ask = |via, host| {
        let c = &c;
        async move {
            let a = answer(c, via, host, "/").await;
            (a.status, a.body)
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for host in [
        "mail.example.com",
        "MAIL.Example.com:8080",
        "x.mail.example.com",
        "www.example.com",
        "mail.example.org",
        "mail.example.co.uk",
        "mail.other.org",
        "mail",
        "mailx.example.org",
        "other.org",
        "example.com",
        "example.org",
        "www.example.org",
    ] {
        let theirs = ask(ng, host).await;
        let ours = ask(listen, host).await;
        assert_eq!(ours, theirs, "{host}");
        seen.insert(theirs.1);
    }
    // (every server answered some Host but the last: nginx takes
    // `.example.org` as the exact name too, and ignores a later server's
    // `example.org` as a conflicting name)
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(!seen.contains("exact-example-org\n"), "{seen:?}");
}

/// nginx's defaults toward a server: without a `proxy_set_header Host` that
/// holds, the server gets proxy_pass's host as its Host (`$proxy_host`),
/// and its redirects to proxy_pass's URL come back to the location
/// (`proxy_redirect default`, Location and Refresh); a location with a
/// `proxy_set_header` of its own inherits none of its server's (Host $host
/// among them); `proxy_redirect off`, a text and a regex of one's own.
/// rampart on the import answers each request as nginx does: status,
/// Location, Refresh, and the Host and target the server saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_nginx_hosts_and_redirects_answer_as_nginx() {
    let dir = temp_dir("nginx-redirects");
    let backend = self_redirecting().await;
    let ng = free_addr("127.0.0.1");
    let conf = nginx_conf(
        &dir,
        &format!(
            "upstream app {{ server {backend}; }}\n\
             server {{\n    listen {ng} default_server;\n\
                 location /plain/ {{ proxy_pass http://app; }}\n\
                 location /hosted/ {{ proxy_set_header Host $host; proxy_pass http://app; }}\n\
                 location /one/ {{ proxy_pass http://app/two/; }}\n\
                 location /direct/ {{ proxy_pass http://{backend}; }}\n\
                 location /off/ {{ proxy_redirect off; proxy_pass http://app; }}\n\
                 location /text/ {{ proxy_redirect http://app/text/ https://www.example.com/t/; proxy_pass http://app; }}\n\
                 location /re/ {{ proxy_redirect ~^http://app/re/(.*)$ /again/$1; proxy_pass http://app; }}\n\
                 location / {{ proxy_set_header Host $proxy_host; proxy_pass http://app; }}\n  }}\n\
             server {{\n    listen {ng};\n    server_name other.test;\n    proxy_set_header Host $host;\n\
                 location / {{ proxy_pass http://app; }}\n\
                 location /own/ {{ proxy_set_header X-Own 1; proxy_pass http://app; }}\n  }}"
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    for line in [
        "mapped: proxy_redirect off:",
        "mapped: proxy_redirect http://app/text/ https://www.example.com/t/:",
        "mapped: proxy_redirect ~^http://app/re/(.*)$ /again/$1:",
        "mapped: proxy_set_header Host $proxy_host:",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let ask = |via, host, path| answer(&c, via, host, path);
    // nginx writes a Location its proxy_redirect rewrote to a path absolute
    // (its absolute_redirect: the request's host and nginx's own port);
    // rampart leaves it a path, which a client resolves to the same URL
    let resolved = |host: &str, mut a: Answer| {
        let base = format!("http://{host}:{}", ng.port());
        if let Some(l) = a.location.as_deref().and_then(|l| l.strip_prefix(&base)) {
            a.location = Some(l.to_string());
        }
        a
    };
    let mut rewritten = 0;
    for (host, path) in [
        ("a.test", "/plain/go/x?q=1"),
        ("a.test", "/plain/list"),
        ("a.test", "/hosted/go/y"),
        ("a.test", "/one/go/z"),
        ("a.test", "/direct/go/d"),
        ("a.test", "/off/go/o"),
        ("a.test", "/text/go/t"),
        ("a.test", "/re/go/r"),
        ("a.test", "/go/root"),
        ("other.test", "/go/s"),
        ("other.test", "/own/go/w"),
    ] {
        let theirs = resolved(host, ask(ng, host, path).await);
        let mut ours = ask(listen, host, path).await;
        // (and each says its own name)
        assert_eq!(ours.server.as_deref(), Some("app/1.0"));
        ours.server = theirs.server.clone();
        assert_eq!(ours, theirs, "{host} {path}");
        if theirs
            .location
            .as_deref()
            .is_some_and(|l| !l.starts_with("http://"))
        {
            rewritten += 1;
        }
    }
    // (the defaults did something: the Host and the redirect rewritten)
    let a = ask(listen, "a.test", "/one/go/z").await;
    assert_eq!(
        (a.body.as_str(), a.location.as_deref(), a.refresh.as_deref()),
        ("app /two/go/z", Some("/one/go/z"), Some("3; URL=/one/go/z"))
    );
    assert!(rewritten >= 6, "{rewritten}");
}

/// A TCP server that reads what a client sends first, answers `name` and
/// closes its side; its address.
async fn naming(name: &'static str) -> SocketAddr {
    let addr = free_addr("127.0.0.1");
    let l = listen(addr).await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    return;
                }
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Who answers `first` sent to `via`: a backend's name, "" where the proxy
/// closed the connection, "<reset>" where it reset it.
async fn who(via: SocketAddr, first: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(via).await.unwrap();
    s.write_all(first).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{via}: neither answered nor closed within 10 s"));
    match r {
        Ok(_) => String::from_utf8_lossy(&got).into_owned(),
        Err(_) => "<reset>".into(),
    }
}

/// What a client sends first: a ClientHello naming `name` (an IP address:
/// none named), or "PLAIN", an HTTP request.
fn first_bytes(name: &str) -> Vec<u8> {
    if name == "PLAIN" {
        b"GET / HTTP/1.0\r\n\r\n".to_vec()
    } else {
        client_hello(name)
    }
}

/// The SNI tests' backends, each answering its name: dflt, pg, org, apps,
/// any, mail, empty.
async fn sni_backends() -> [SocketAddr; 7] {
    let mut out = [free_addr("127.0.0.1"); 7];
    for (o, name) in out
        .iter_mut()
        .zip(["dflt", "pg", "org", "apps", "any", "mail", "empty"])
    {
        *o = naming(name).await;
    }
    out
}

/// Each of [`NAMES`] through each pair (the original's listener, rampart's
/// on its import) reaches the same backend, or is closed by both; every
/// backend answered some name, and some connection was closed (the
/// listener without a default).
async fn same_servers(pairs: [(SocketAddr, SocketAddr); 2]) {
    let mut seen = std::collections::BTreeSet::new();
    for name in NAMES {
        let hello = first_bytes(name);
        for (theirs, ours) in pairs {
            let want = who(theirs, &hello).await;
            assert_eq!(who(ours, &hello).await, want, "{name} ({theirs})");
            seen.insert(want);
        }
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<Vec<_>>(),
        ["", "any", "apps", "dflt", "empty", "mail", "org", "pg"]
    );
}

/// The server names the SNI tests send.
const NAMES: [&str; 13] = [
    "db.example.com",
    "DB.Example.COM",
    "example.org",
    "www.example.org",
    "a.apps.example.com",
    "x.example.com",
    "example.com",
    "mail.foo.net",
    "mail",
    "x.y.z",
    "other.example.net",
    // no server name
    "127.0.0.1",
    // not TLS: routed as no name by all three
    "PLAIN",
];

/// nginx's SNI proxy (`ssl_preread on` and a map of
/// `$ssl_preread_server_name` with `hostnames`: exact names, `.domain`,
/// `*.x` and `mail.*` of different lengths, `""`, a default; and a map
/// without a default): rampart on the import sends each ClientHello to the
/// backend nginx sends it to, and closes what nginx closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_sni_maps_pass_tls_through_to_the_server_nginx_picks() {
    let dir = temp_dir("nginx-sni-map");
    let [dflt, pg, org, apps, any, mail, empty] = sni_backends().await;
    let (ng, ng_strict) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
stream {{
  map $ssl_preread_server_name $name {{
    hostnames;
    default dflt;
    mail.* mail;
    *.example.com any;
    db.example.com pg;
    .example.org org;
    *.apps.example.com apps;
    \"\" empty;
  }}
  map $ssl_preread_server_name $strict {{
    db.example.com pg;
  }}
  upstream dflt {{ server {dflt}; }}
  upstream pg {{ server {pg}; }}
  upstream org {{ server {org}; }}
  upstream apps {{ server {apps}; }}
  upstream any {{ server {any}; }}
  upstream mail {{ server {mail}; }}
  upstream empty {{ server {empty}; }}
  server {{ listen {ng}; ssl_preread on; proxy_pass $name; }}
  server {{ listen {ng_strict}; ssl_preread on; proxy_pass $strict; }}
}}
"
        ),
    )
    .unwrap();
    let (toml, listen, report) = imported("nginx", &conf, ng);
    let strict = free_addr("127.0.0.1");
    let toml = toml.replace(&format!("\"{ng_strict}\""), &format!("\"{strict}\""));
    for line in [
        "mapped: map $ssl_preread_server_name $name:",
        "mapped: .example.org org:",
        "mapped: \"\" empty:",
        "mapped: proxy_pass $strict:",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen, strict]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    wait_listening(ng_strict, std::time::Duration::from_secs(10)).await;
    same_servers([(ng, listen), (ng_strict, strict)]).await;
}

/// HAProxy's SNI routing (`tcp-request inspect-delay`, `content accept if
/// { req_ssl_hello_type 1 }`, use_backend by `req_ssl_sni -i`, `req.ssl_sni
/// -m dom / end / beg`, `!{ req.ssl_sni -m found }`, a default_backend; and a
/// frontend without one, that accepts by a named ACL): rampart on the import sends each ClientHello to
/// the backend HAProxy sends it to, and closes what HAProxy closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_sni_routing_passes_tls_through_to_the_server_haproxy_picks() {
    let dir = temp_dir("haproxy-sni");
    let [dflt, pg, org, apps, any, mail, empty] = sni_backends().await;
    let (ha, ha_strict) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend edge
  bind {ha}
  tcp-request inspect-delay 5s
  tcp-request content accept if {{ req_ssl_hello_type 1 }}
  acl is_db req_ssl_sni -i db.example.com
  acl is_org req.ssl_sni -m dom example.org
  use_backend pg if is_db
  use_backend org if is_org
  use_backend apps if {{ req.ssl_sni -m end .apps.example.com }}
  use_backend any if {{ req.ssl_sni -i -m end .example.com }}
  use_backend mail if {{ req.ssl_sni -m beg mail. }}
  use_backend empty if !{{ req.ssl_sni -m found }}
  default_backend dflt
frontend strict
  bind {ha_strict}
  tcp-request inspect-delay 5s
  acl hello req.ssl_hello_type 1
  tcp-request content accept if hello
  use_backend pg if {{ req_ssl_sni -i db.example.com }}
backend dflt
  server s {dflt}
backend pg
  server s {pg}
backend org
  server s {org}
backend apps
  server s {apps}
backend any
  server s {any}
backend mail
  server s {mail}
backend empty
  server s {empty}
"
        ),
    )
    .unwrap();
    let (toml, listen, report) = imported("haproxy", &cfg, ha);
    let strict = free_addr("127.0.0.1");
    let toml = toml.replace(&format!("\"{ha_strict}\""), &format!("\"{strict}\""));
    for line in [
        "mapped: use_backend pg if is_db: a [[listener.route]] by sni",
        "mapped: use_backend empty if !{ req.ssl_sni -m found }: a [[listener.route]] by sni",
        "approximated: tcp-request inspect-delay 5s:",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let _haproxy = haproxy(&cfg);
    let _proxy = Proxy::start(&toml, &[listen, strict]).await;
    wait_listening(ha, std::time::Duration::from_secs(10)).await;
    wait_listening(ha_strict, std::time::Duration::from_secs(10)).await;
    same_servers([(ha, listen), (ha_strict, strict)]).await;
}

/// An nginx server of 150 proxying locations, imported: each location sets
/// the Host nginx sends (its upstream's name), so each is a rule that edits
/// and ends the request, more than the 64 edit bits of a listener, and the
/// config loads. Every seventh location, asked, sends the server the Host
/// and the path nginx sends, and a location's own `proxy_set_header` stays
/// its own. A
/// location's name without its final slash gets nginx's 301 to it (with the
/// query), before the regex locations, unless a location has that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_nginx_server_of_many_locations_sends_what_nginx_sends() {
    let dir = temp_dir("nginx-many-locations");
    let backend = answering(|req: hyper::Request<hyper::body::Incoming>| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string())
        };
        full_answer(format!(
            "{} host={} loc={}",
            req.uri(),
            h("host"),
            h("x-loc")
        ))
    })
    .await;
    let ng = free_addr("127.0.0.1");
    let mut http = String::new();
    for u in 0..3 {
        http += &format!("upstream up{u} {{ server {backend}; }}\n");
    }
    http += &format!("server {{\n    listen {ng};\n");
    const LOCATIONS: usize = 150;
    for i in 0..LOCATIONS {
        let own = if i % 10 == 7 {
            format!("proxy_set_header X-Loc l{i}; ")
        } else {
            String::new()
        };
        http += &format!(
            "    location /l{i}/ {{ {own}proxy_pass http://up{}; }}\n",
            i % 3
        );
    }
    // (a regex that would take /l1: the redirect comes first; a location
    // named /l2 takes that name from the redirect (and the regex takes it
    // from the location, as for any prefix location), an exact /l3 takes
    // its own; a location that does not pass requests on has no redirect)
    http += "    location ~ ^/l[0-9]+$ { proxy_set_header X-Loc regex; proxy_pass http://up1; }\n\
             location /l2 { proxy_set_header X-Loc l2-bare; proxy_pass http://up2; }\n\
             location = /l3 { proxy_set_header X-Loc l3-exact; proxy_pass http://up2; }\n\
             location /static/ { return 200 \"static\\n\"; }\n\
             location / { proxy_pass http://up0; }\n  }";
    let conf = nginx_conf(&dir, &http);
    let (toml, listen, report) = imported("nginx", &conf, ng);
    // (more rules that edit than a listener has edit bits)
    assert!(toml.matches("set_header").count() > 64, "{toml}");
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let mut paths: Vec<String> = (0..LOCATIONS)
        .step_by(7)
        .map(|i| format!("/l{i}/x?q={i}"))
        .collect();
    paths.extend(
        [
            "/l17/",
            "/l149/y",
            "/l1x",
            "/other",
            "/l1",
            "/l1?a=1&b",
            "/l149",
            "/l2",
            "/l3",
            "/l2x",
            "/l150",
            "/static",
            "/static/",
        ]
        .map(String::from),
    );
    // nginx's Location is absolute (its absolute_redirect), rampart's a path
    let base = format!("http://a.test:{}", ng.port());
    let mut seen = std::collections::HashSet::new();
    let mut redirects = 0;
    for path in &paths {
        let mut theirs = answer(&c, ng, "a.test", path).await;
        let mut ours = answer(&c, listen, "a.test", path).await;
        if let Some(l) = theirs
            .location
            .as_deref()
            .and_then(|l| l.strip_prefix(&base))
        {
            theirs.location = Some(l.to_string());
        }
        if theirs.status == 301 {
            redirects += 1;
            // (each says it its own way)
            theirs.body.clear();
            ours.body.clear();
        }
        theirs.server = None;
        ours.server = None;
        assert_eq!(ours, theirs, "{path}: {report}");
        seen.insert(theirs.body.split(' ').skip(1).collect::<Vec<_>>().join(" "));
    }
    // (the Host differed by location, some had their own field, and the
    // redirects, the regex and the bare names each answered)
    for want in [
        "host=up0 loc=-",
        "host=up1 loc=-",
        "host=up2 loc=-",
        "host=up1 loc=regex",
        "host=up2 loc=l2-bare",
        "host=up2 loc=l3-exact",
    ] {
        assert!(seen.contains(want), "{want}: {seen:?}");
    }
    assert!(seen.iter().any(|s| s.contains("loc=l7")), "{seen:?}");
    assert_eq!(redirects, 3, "{seen:?}");
    let a = answer(&c, listen, "a.test", "/l1?a=1&b").await;
    assert_eq!((a.status, a.location.as_deref()), (301, Some("/l1/?a=1&b")));
}
