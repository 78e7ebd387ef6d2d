//! `error_pages` (HAProxy's `errorfile`): rampart's own error answers carry
//! the page of their status, a HAProxy errorfile (a whole HTTP response) or a
//! plain file, on the fast path, hyper's and HTTP/2; a server's own errors
//! and gRPC calls' statuses are left alone; a reload reads the files again;
//! a file that cannot be read refuses the config, naming the key.

mod common;

use common::*;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::path::Path;

const ERRORFILE_503: &str = "HTTP/1.0 503 Service Unavailable\nCache-Control: no-cache\nConnection: close\nContent-Type: text/html\n\n<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, dir: &Path) -> String {
    // a closed port (502), a pool that never serves (503), the backend
    let closed = free_addr("127.0.0.1");
    format!(
        "[global]\nthreads = 1\nerror_pages = {{ \"503\" = \"{}\", \"403\" = \"{}\" }}\n\
         [admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"api\"\n\
         error_pages = {{ \"502\" = \"{}\" }}\n\
           [[listener.rule]]\n  path_prefix = \"/secret\"\n  deny = {{ status = 403, body = \"ours to keep\\n\" }}\n\
           [[listener.rule]]\n  path_prefix = \"/private\"\n  deny = 403\n\
           [[listener.rule]]\n  path_prefix = \"/maint\"\n  respond = {{ status = 503, body = \"planned\\n\" }}\n\
           [[listener.route]]\n  path_prefix = \"/down\"\n  pool = \"down\"\n\
           [[listener.route]]\n  path_prefix = \"/none\"\n  pool = \"none\"\n\
         [[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"{backend}\"\n\
         [[pool]]\nname = \"down\"\nretries = 0\n  [[pool.server]]\n  address = \"{closed}\"\n\
         [[pool]]\nname = \"none\"\n  [[pool.server]]\n  address = \"{backend}\"\n  weight = 0\n",
        dir.join("503.http").display(),
        dir.join("403.json").display(),
        dir.join("502.html").display(),
    )
}

/// Status, Content-Type, Retry-After and body of a request through `c`.
async fn ask(c: &Client, method: &str, url: &str) -> (u16, String, Option<String>, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(http_body_util::Empty::new().boxed())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (ctype, retry) = (h("content-type").unwrap_or_default(), h("retry-after"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        ctype,
        retry,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rampart_answers_its_own_errors_with_the_configured_pages() {
    let dir = temp_dir("error-pages");
    std::fs::write(dir.join("503.http"), ERRORFILE_503).unwrap();
    std::fs::write(dir.join("502.html"), "<p>bad gateway, ours</p>").unwrap();
    std::fs::write(dir.join("403.json"), "{\"error\": \"forbidden\"}").unwrap();
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let _p = Proxy::start(&config(listen, admin, backend.addr, &dir), &[listen, admin]).await;

    let page_503 = ERRORFILE_503.split_once("\n\n").unwrap().1;
    for (what, c) in [("HTTP/1.1", client()), ("h2c", h2c_client())] {
        // the global 503 page, from a HAProxy errorfile: its body and fields,
        // the answer's Retry-After kept
        let (st, ctype, retry, body) = ask(&c, "GET", &format!("http://{listen}/none")).await;
        assert_eq!((st, ctype.as_str()), (503, "text/html"), "{what}");
        assert_eq!(body, page_503, "{what}");
        assert_eq!(retry.as_deref(), Some("1"), "{what}");
        // the listener's own 502 page, a plain HTML file
        let (st, ctype, _, body) = ask(&c, "GET", &format!("http://{listen}/down")).await;
        assert_eq!(st, 502, "{what}");
        assert_eq!(ctype, "text/html; charset=utf-8", "{what}");
        assert_eq!(body, "<p>bad gateway, ours</p>", "{what}");
        // a deny rule without a text of its own gets the page; one with its
        // own text keeps it
        let (st, ctype, _, body) = ask(&c, "GET", &format!("http://{listen}/private")).await;
        assert_eq!((st, ctype.as_str()), (403, "application/json"), "{what}");
        assert_eq!(body, "{\"error\": \"forbidden\"}", "{what}");
        let (st, _, _, body) = ask(&c, "GET", &format!("http://{listen}/secret")).await;
        assert_eq!((st, body.as_str()), (403, "ours to keep\n"), "{what}");
        // a respond rule's answer is the operator's own: no page
        let (st, _, _, body) = ask(&c, "GET", &format!("http://{listen}/maint")).await;
        assert_eq!((st, body.as_str()), (503, "planned\n"), "{what}");
        // a HEAD gets the fields, no body
        let (st, ctype, _, body) = ask(&c, "HEAD", &format!("http://{listen}/none")).await;
        assert_eq!(
            (st, ctype.as_str(), body.as_str()),
            (503, "text/html", ""),
            "{what}"
        );
        // a server's own 503 is its own
        let (st, _, _, body) = ask(&c, "GET", &format!("http://{listen}/status?code=503")).await;
        assert_eq!((st, body.as_str()), (503, "a"), "{what}");
    }
    // a gRPC call gets its status, not a page: over HTTP/2, and a gRPC-Web
    // call over HTTP/1.1 (which the fast path hands to hyper's)
    for (c, ctype) in [
        (h2c_client(), "application/grpc"),
        (client(), "application/grpc-web+proto"),
    ] {
        let req = hyper::Request::post(format!("http://{listen}/none"))
            .header("content-type", ctype)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")).boxed())
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "14", "{ctype}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/grpc",
            "{ctype}"
        );
    }

    // a reload reads the files again
    std::fs::write(dir.join("502.html"), "<p>changed</p>").unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{body}");
    let (_, _, _, body) = ask(&client(), "GET", &format!("http://{listen}/down")).await;
    assert_eq!(body, "<p>changed</p>");
    // a page that cannot be read refuses the config, and the old one serves
    std::fs::remove_file(dir.join("502.html")).unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body.contains("listener[0].error_pages") && body.contains("502.html: cannot read"),
        "{body}"
    );
    let (_, _, _, body) = ask(&client(), "GET", &format!("http://{listen}/down")).await;
    assert_eq!(body, "<p>changed</p>");
}

/// nginx's `error_page 502 503 504 /50x.html` with `location = /50x.html {
/// root ...; }`, imported by `rampart import nginx`: with its upstream down,
/// rampart answers what nginx answers, the same file as the body; and its
/// `return 200 "ok\n"` the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_nginx_error_page_is_the_page_nginx_answers() {
    let dir = temp_dir("nginx-error-page");
    let html = dir.join("html");
    std::fs::create_dir_all(&html).unwrap();
    let page = "<html><body><h1>Back in a moment</h1></body></html>\n";
    std::fs::write(html.join("50x.html"), page).unwrap();
    let (closed, ng) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let conf = nginx_conf(
        &dir,
        &format!(
            "upstream app {{ server {closed}; }}\n\
               server {{\n    listen {ng};\n    error_page 502 503 504 /50x.html;\n\
                 location / {{ proxy_pass http://app; }}\n\
                 location = /50x.html {{ root {}; internal; }}\n\
                 location = /healthz {{ default_type text/plain; return 200 \"ok\\n\"; }}\n  }}",
            html.display()
        ),
    );
    let (toml, listen, report) = imported("nginx", &conf, ng);
    assert!(
        report.contains("mapped: error_page 502 503 504 /50x.html"),
        "{report}"
    );
    let _nginx = nginx(&dir, &conf);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ng, std::time::Duration::from_secs(10)).await;
    let c = client();
    let theirs = ask(&c, "GET", &format!("http://{ng}/orders")).await;
    let ours = ask(&c, "GET", &format!("http://{listen}/orders")).await;
    assert_eq!(theirs.0, 502, "{theirs:?}");
    assert_eq!(theirs.3, page);
    assert_eq!(ours.0, theirs.0, "{ours:?}");
    assert_eq!(ours.3, theirs.3);
    assert!(
        ours.1.starts_with("text/html") && theirs.1.starts_with("text/html"),
        "{ours:?} {theirs:?}"
    ); // `return 200 "ok\n"`: a respond rule
    let theirs = ask(&c, "GET", &format!("http://{ng}/healthz")).await;
    let ours = ask(&c, "GET", &format!("http://{listen}/healthz")).await;
    assert_eq!((theirs.0, theirs.3.as_str()), (200, "ok\n"), "{theirs:?}");
    assert_eq!((ours.0, ours.3.as_str()), (200, "ok\n"), "{ours:?}");
    assert!(ours.1.starts_with("text/plain") && theirs.1.starts_with("text/plain"));
}

/// HAProxy's `http-errors` section named by `errorfiles`, and `http-error
/// status N ... file`, imported by `rampart import haproxy`: with its
/// server down, rampart answers what HAProxy answers, from the same files;
/// and its `http-request return` the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_haproxy_http_errors_are_the_pages_haproxy_answers() {
    let dir = temp_dir("haproxy-http-errors");
    let html = "<html><body><h1>No server, sorry</h1></body></html>\n";
    let errorfile = format!(
        "HTTP/1.0 503 Service Unavailable\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n{html}"
    );
    std::fs::write(dir.join("503.http"), &errorfile).unwrap();
    let json = "{\"error\": \"forbidden\"}\n";
    std::fs::write(dir.join("403.json"), json).unwrap();
    let (closed, ha) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\n\
             http-errors site\n  errorfile 503 {}\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n  retries 0\n\
             frontend web\n  bind {ha}\n  errorfiles site\n\
               http-error status 403 content-type application/json file {}\n\
               http-request deny if {{ path_beg /private }}\n\
               http-request return status 200 content-type text/plain string ok if {{ path /healthz }}\n  default_backend app\n\
             backend app\n  server s1 {closed} check inter 200ms fall 1\n",
            dir.join("503.http").display(),
            dir.join("403.json").display(),
        ),
    )
    .unwrap();
    let (toml, listen, report) = imported("haproxy", &cfg, ha);
    assert!(report.contains("mapped: errorfiles site"), "{report}");
    let _haproxy = haproxy(&cfg);
    let _proxy = Proxy::start(&toml, &[listen]).await;
    wait_listening(ha, std::time::Duration::from_secs(10)).await;
    let c = client();
    // both 503 once the check finds the server down (a refused connection
    // to a server thought up is HAProxy's 503 but rampart's 502)
    wait_until(
        std::time::Duration::from_secs(10),
        "both to see the server down",
        || {
            let c = c.clone();
            async move {
                ask(&c, "GET", &format!("http://{ha}/")).await.0 == 503
                    && ask(&c, "GET", &format!("http://{listen}/")).await.0 == 503
            }
        },
    )
    .await;
    for (path, status, body, ctype) in [
        ("/orders", 503, html, "text/html"),
        ("/private/x", 403, json, "application/json"),
        // `http-request return`: a respond rule
        ("/healthz", 200, "ok", "text/plain"),
    ] {
        let theirs = ask(&c, "GET", &format!("http://{ha}{path}")).await;
        let ours = ask(&c, "GET", &format!("http://{listen}{path}")).await;
        assert_eq!((theirs.0, theirs.3.as_str()), (status, body), "{theirs:?}");
        assert_eq!((ours.0, ours.3.as_str()), (status, body), "{ours:?}");
        assert!(
            ours.1.starts_with(ctype) && theirs.1.starts_with(ctype),
            "{path}: {ours:?} {theirs:?}"
        );
    }
}
