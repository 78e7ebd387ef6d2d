//! Path rewrites imported from nginx (`proxy_pass` with a URI, `rewrite`)
//! and HAProxy (`replace-path`, `set-path`): rampart on the imported config
//! sends the server the target nginx or HAProxy sends it, request for
//! request, the real proxy beside it.

mod common;

use common::*;
use std::net::SocketAddr;

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
