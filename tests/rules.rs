//! `[[listener.rule]]`: a table of cases (each match type and action, `not`,
//! order, redirects with {host}/{uri}, header edits on requests and responses,
//! `[[listener.route]]` still working after the rules), each run on the
//! HTTP/1.1 fast path and on the hyper path (h2c), against real backends.

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use std::net::SocketAddr;

/// The listener "web" with pools "a" (its default) and "b", and `rules`
/// (`[[listener.rule]]` and `[[listener.route]]` tables) on it.
fn config_with_rules(
    listen: SocketAddr,
    admin: SocketAddr,
    a: SocketAddr,
    b: SocketAddr,
    rules: &str,
) -> String {
    format!(
        r#"[global]
threads = 1
access_log = "text"
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "a"
{rules}
[[pool]]
name = "a"
  [[pool.server]]
  address = "{a}"
[[pool]]
name = "b"
  [[pool.server]]
  address = "{b}"
"#
    )
}

fn config(listen: SocketAddr, admin: SocketAddr, a: SocketAddr, b: SocketAddr) -> String {
    config_with_rules(listen, admin, a, b, RULES)
}

const RULES: &str = r#"  # 0: edits for every request
  [[listener.rule]]
  set_header = { "x-env" = "prod" }
  add_header = { "x-tag" = "rule0" }
  del_header = ["x-drop"]
  response_set_header = { "x-rule" = "yes" }
  # 1: /admin from these sources (the tests' client is 127.0.0.1)
  [[listener.rule]]
  path_prefix = "/admin"
  src = ["127.0.0.0/8", "10.0.0.0/8"]
  deny = { status = 403, body = "admin is internal\n" }
  # 2: an old name redirects, path and query kept
  [[listener.rule]]
  host = "old.example.com"
  redirect = { to = "https://new.example.com{uri}", status = 301 }
  # 3: exact path
  [[listener.rule]]
  path = "/exact"
  pool = "b"
  # 4: /users answers do without rule 0's x-rule (a later rule's edit wins)
  [[listener.rule]]
  path_prefix = "/users"
  response_del_header = ["x-rule"]
  # 5: regex
  [[listener.rule]]
  path_regex = "^/users/[0-9]+$"
  pool = "b"
  # 6: method and a missing header
  [[listener.rule]]
  method = ["DELETE"]
  header = { name = "x-api-key", present = false }
  deny = 401
  # 7: a header value; its edit applies only to what it matches
  [[listener.rule]]
  header = { name = "x-canary", value = "1" }
  set_header = { "x-canary-seen" = "true" }
  pool = "b"
  # 8: wildcard host
  [[listener.rule]]
  host = "*.internal.example"
  pool = "b"
  # 9: not inverts the whole match: any method but these is refused
  [[listener.rule]]
  method = ["GET", "HEAD", "DELETE"]
  not = true
  deny = 405
  # 10, 11, 12: answers of the proxy's own: a health check, a maintenance page, no content
  [[listener.rule]]
  path = "/healthz"
  respond = { body = "ok\n" }
  [[listener.rule]]
  path_prefix = "/maint"
  respond = { status = 503, body = "{\"down\": true}", content_type = "application/json" }
  [[listener.rule]]
  path = "/nocontent"
  respond = { status = 204 }
  # the old syntax: a route, evaluated after the rules
  [[listener.route]]
  path_prefix = "/b/"
  pool = "b"
"#;

struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    host: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// The body (a backend's name, or the rule's text), or the Location.
    expect: &'static str,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { what: "default pool", method: "GET", path: "/", host: None, headers: &[], status: 200, expect: "a" },
    Case { what: "deny by path and src", method: "GET", path: "/admin/x", host: None, headers: &[], status: 403, expect: "admin is internal\n" },
    Case { what: "not: another method", method: "PATCH", path: "/", host: None, headers: &[], status: 405, expect: "405 Method Not Allowed\n" },
    Case { what: "not: a listed method", method: "HEAD", path: "/", host: None, headers: &[], status: 200, expect: "" },
    Case { what: "respond", method: "GET", path: "/healthz", host: None, headers: &[], status: 200, expect: "ok\n" },
    Case { what: "respond to HEAD", method: "HEAD", path: "/healthz", host: None, headers: &[], status: 200, expect: "" },
    Case { what: "respond with a status", method: "GET", path: "/maint/x", host: None, headers: &[], status: 503, expect: "{\"down\": true}" },
    Case { what: "respond 204", method: "GET", path: "/nocontent", host: None, headers: &[], status: 204, expect: "" },
    Case { what: "redirect with {uri}", method: "GET", path: "/p?q=1", host: Some("old.example.com"), headers: &[], status: 301, expect: "https://new.example.com/p?q=1" },
    Case { what: "exact path", method: "GET", path: "/exact", host: None, headers: &[], status: 200, expect: "b" },
    Case { what: "exact path, longer", method: "GET", path: "/exact/more", host: None, headers: &[], status: 200, expect: "a" },
    Case { what: "exact path, query ignored", method: "GET", path: "/exact?x=1", host: None, headers: &[], status: 200, expect: "b" },
    Case { what: "regex", method: "GET", path: "/users/42", host: None, headers: &[], status: 200, expect: "b" },
    Case { what: "regex, no match", method: "GET", path: "/users/x", host: None, headers: &[], status: 200, expect: "a" },
    Case { what: "method + missing header", method: "DELETE", path: "/thing", host: None, headers: &[], status: 401, expect: "401 Unauthorized\n" },
    Case { what: "method + header present", method: "DELETE", path: "/thing", host: None, headers: &[("x-api-key", "k")], status: 200, expect: "a" },
    Case { what: "other method", method: "GET", path: "/thing", host: None, headers: &[], status: 200, expect: "a" },
    Case { what: "header value", method: "GET", path: "/", host: None, headers: &[("x-canary", "1")], status: 200, expect: "b" },
    Case { what: "header value, other", method: "GET", path: "/", host: None, headers: &[("x-canary", "2")], status: 200, expect: "a" },
    Case { what: "wildcard host", method: "GET", path: "/", host: Some("db.internal.example"), headers: &[], status: 200, expect: "b" },
    Case { what: "route after rules", method: "GET", path: "/b/x", host: None, headers: &[], status: 200, expect: "b" },
    // a rule matches the path however it is spelt (decoded, resolved, as
    // nginx matches its locations), and the host with the root's dot
    Case { what: "deny, %-encoded", method: "GET", path: "/%61dmin/x", host: None, headers: &[], status: 403, expect: "admin is internal\n" },
    Case { what: "dot-dot towards a denied path", method: "GET", path: "/b/../admin/x", host: None, headers: &[], status: 400, expect: "400 Bad Request\n" },
    Case { what: "dot-dot away from a denied path", method: "GET", path: "/admin/../b/x", host: None, headers: &[], status: 400, expect: "400 Bad Request\n" },
    Case { what: "Tomcat's dot-dot", method: "GET", path: "/b/..;/admin/x", host: None, headers: &[], status: 400, expect: "400 Bad Request\n" },
    Case { what: "dot segment", method: "GET", path: "/./admin/x", host: None, headers: &[], status: 403, expect: "admin is internal\n" },
    Case { what: "deny, repeated slash", method: "GET", path: "//admin/x", host: None, headers: &[], status: 403, expect: "admin is internal\n" },
    Case { what: "route, encoded", method: "GET", path: "/%62/x", host: None, headers: &[], status: 200, expect: "b" },
    Case { what: "above the root", method: "GET", path: "/b/..%2f..%2fadmin", host: None, headers: &[], status: 400, expect: "400 Bad Request\n" },
    Case { what: "bad escape", method: "GET", path: "/b/%zz", host: None, headers: &[], status: 400, expect: "400 Bad Request\n" },
    Case { what: "host with the root's dot", method: "GET", path: "/p", host: Some("old.example.com."), headers: &[], status: 301, expect: "https://new.example.com/p" },
    Case { what: "earlier rule wins over route", method: "GET", path: "/b/x", host: Some("old.example.com"), headers: &[], status: 301, expect: "https://new.example.com/b/x" },
];

async fn run(
    c: &Client,
    h2: bool,
    listen: SocketAddr,
    case: &Case,
) -> (StatusCode, String, hyper::HeaderMap) {
    // HTTP/1.1: the Host field; HTTP/2: the :authority (which RFC 9113 8.3.1
    // makes the target's host), on a connection of its own to the listener
    let raw_h2 = h2 && case.host.is_some();
    let c = (!raw_h2).then_some(c);
    let authority = match (c, case.host) {
        (None, Some(h)) => h.to_string(),
        _ => listen.to_string(),
    };
    let mut req = Request::builder()
        .method(case.method)
        .uri(format!("http://{authority}{}", case.path));
    if let (Some(_), Some(h)) = (c, case.host) {
        req = req.header("host", h);
    }
    for (n, v) in case.headers {
        req = req.header(*n, *v);
    }
    let req = req.body(empty()).unwrap();
    let resp = match c {
        Some(c) => c.request(req).await.unwrap(),
        None => h2_request(listen, req).await,
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_and_act_on_the_fast_path_and_the_hyper_path() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let b = Backend::start("b", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(&config(listen, admin, a.addr, b.addr), &[listen]).await;
    for (path, c, h2) in [
        ("fast path (HTTP/1.1)", client(), false),
        ("hyper path (h2c)", h2c_client(), true),
    ] {
        for case in CASES {
            let (st, body, headers) = run(&c, h2, listen, case).await;
            let got = if (300..400).contains(&st.as_u16()) {
                headers
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            } else {
                body
            };
            assert_eq!(
                (st.as_u16(), got.as_str()),
                (case.status, case.expect),
                "{path}: {}",
                case.what
            );
            if case.status == 204 {
                // no content: no length, no type (RFC 9110 8.6)
                assert!(
                    headers.get("content-length").is_none()
                        && headers.get("content-type").is_none(),
                    "{path}: {headers:?}"
                );
            } else if case.what.starts_with("respond") {
                let ctype = if case.status == 503 {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                assert_eq!(headers["content-type"], ctype, "{path}: {}", case.what);
                if case.method == "HEAD" && !h2 {
                    // the length of what a GET gets
                    assert_eq!(headers["content-length"], "3", "{path}: {}", case.what);
                }
            }
            if st == StatusCode::OK {
                // rule 0's response edit applies to every proxied answer, but
                // those to /users, where a later rule removes it
                // (and those rampart gave itself)
                let want: Option<&[u8]> = (!case.path.starts_with("/users")
                    && !case.what.starts_with("respond"))
                .then_some(b"yes");
                assert_eq!(
                    headers.get("x-rule").map(|v| v.as_bytes()),
                    want,
                    "{path}: {}",
                    case.what
                );
            }
        }
        // request edits, as the backend saw them: set replaces what the
        // client sent, add adds, del removes; rule 7's only where it matched
        let req = Request::builder()
            .uri(format!("http://{listen}/seen"))
            .header("x-env", "dev")
            .header("x-drop", "secret")
            .header("x-keep", "1")
            .body(empty())
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = a.stats.last_headers.lock().unwrap().clone().unwrap();
        let all = |n: &str| -> Vec<String> {
            seen.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(all("x-env"), vec!["prod"], "{path}");
        assert_eq!(all("x-tag"), vec!["rule0"], "{path}");
        assert!(all("x-drop").is_empty(), "{path}");
        assert_eq!(all("x-keep"), vec!["1"], "{path}");
        assert!(all("x-canary-seen").is_empty(), "{path}");
        // X-Forwarded-* stay rampart's
        assert_eq!(all("x-forwarded-for"), vec!["127.0.0.1"], "{path}");
        let req = Request::builder()
            .uri(format!("http://{listen}/"))
            .header("x-canary", "1")
            .body(empty())
            .unwrap();
        assert_eq!(c.request(req).await.unwrap().status(), StatusCode::OK);
        let seen = b.stats.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(seen["x-canary-seen"], "true", "{path}");
        assert_eq!(seen["x-env"], "prod", "{path}");
    }
    // answers by rules are logged, with end=rule
    wait_for(std::time::Duration::from_secs(5), "log lines", || {
        p.stdout().contains("path=\"/admin/x\" status=403")
    })
    .await;
    let out = p.stdout();
    assert!(
        out.lines()
            .any(|l| l.contains("path=\"/admin/x\" status=403") && l.contains("end=rule")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("path=\"/p?q=1\" status=301") && l.contains("end=rule")),
        "{out}"
    );
    // no request that a rule answered reached a backend
    let reached = a.stats.last_uri.lock().unwrap().clone().unwrap_or_default();
    assert!(!reached.contains("/admin"), "{reached}");
    // and each is counted on the listener, on both paths: the denied ones
    // also as HAProxy's dreq
    let denied = 2 * CASES
        .iter()
        .filter(|c| matches!(c.status, 401 | 403 | 405))
        .count();
    let redirected = 2 * CASES.iter().filter(|c| c.status == 301).count();
    let responded = 2 * CASES
        .iter()
        .filter(|c| c.what.starts_with("respond"))
        .count();
    let v = p.stats().await;
    assert_eq!(v["listeners"][0]["denied"], denied, "{v}");
    assert_eq!(v["listeners"][0]["redirected"], redirected, "{v}");
    assert_eq!(v["listeners"][0]["responded"], responded, "{v}");
    let (_, m) = admin_get(admin, "/metrics").await;
    for want in [
        format!("rampart_listener_denied_total{{listener=\"web\"}} {denied}"),
        format!("rampart_listener_redirected_total{{listener=\"web\"}} {redirected}"),
        format!("rampart_listener_responded_total{{listener=\"web\"}} {responded}"),
    ] {
        assert!(m.contains(&want), "{want}: {m}");
    }
    assert_eq!(
        frontend_csv(admin, "web", 10).await,
        denied.to_string(),
        "dreq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_with_the_listener() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let b = Backend::start("b", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = config(listen, admin, a.addr, b.addr);
    let p = Proxy::start(&text, &[listen]).await;
    let c = client();
    assert_eq!(get(&c, &format!("http://{listen}/exact")).await.1, "b");
    // rule 3 now sends /exact to a: applied by a reload, no restart
    std::fs::write(
        &p.config,
        text.replace(
            "path = \"/exact\"\n  pool = \"b\"",
            "path = \"/exact\"\n  pool = \"a\"",
        ),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(get(&c, &format!("http://{listen}/exact")).await.1, "a");
    // a bad rule is refused, named, and the running rules stay
    std::fs::write(
        &p.config,
        text.replace(
            "path_regex = \"^/users/[0-9]+$\"",
            "path_regex = \"^/users/[0-9+$\"",
        ),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_ne!(st, StatusCode::OK);
    assert!(body.contains("listener[0].rule[5].path_regex"), "{body}");
    assert_eq!(get(&c, &format!("http://{listen}/exact")).await.1, "a");
    assert_eq!(get(&c, &format!("http://{listen}/users/7")).await.1, "b");
}

/// X-Forwarded-Host is the Host the client sent, on both paths, whatever a
/// rule sets Host to (hyper's path took the rewritten one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_host_is_the_clients_host_whatever_a_rule_sets() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"a\"\n  [[listener.rule]]\n  path_prefix = \"/set\"\n  set_header = {{ host = \"internal\" }}\n[[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{}\"\n",
        a.addr
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    for what in ["fast path", "hyper path (h2c)"] {
        for (path, host) in [("/set", "internal"), ("/other", "shop.example")] {
            let status = if what == "fast path" {
                let req = Request::get(format!("http://{listen}{path}"))
                    .header("host", "shop.example")
                    .body(empty())
                    .unwrap();
                send(&client(), req).await.0.status()
            } else {
                // the :authority is the request's host in HTTP/2
                let req = Request::get(format!("http://shop.example{path}"))
                    .body(empty())
                    .unwrap();
                h2_request(listen, req).await.status()
            };
            assert_eq!(status, StatusCode::OK, "{what} {path}");
            let h = a.stats.last_headers.lock().unwrap().clone().unwrap();
            assert_eq!(
                h.get("x-forwarded-host").map(|v| v.to_str().unwrap()),
                Some("shop.example"),
                "{what} {path}: {h:?}"
            );
            assert_eq!(h["host"], host, "{what} {path}");
        }
    }
    // an HTTP/1.0 request without Host (hyper's path): a rule's Host is not
    // passed off as the client's
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(b"GET /set HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.0 200") || got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        let h = a.stats.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(h["host"], "internal");
        assert!(h.get("x-forwarded-host").is_none(), "{h:?}");
    }
}

/// `del_header = ["x-forwarded-for"]` drops a client's chain before rampart
/// appends the client's own address, on both paths (an edge proxy that
/// trusts no earlier hop): the server sees only the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_x_forwarded_for_drops_a_forged_chain() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"a\"\n  [[listener.rule]]\n  del_header = [\"x-forwarded-for\"]\n[[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{}\"\n",
        a.addr
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    for (what, c) in [("fast path", client()), ("hyper path (h2c)", h2c_client())] {
        let req = Request::get(format!("http://{listen}/"))
            .header("x-forwarded-for", "6.6.6.6")
            .body(empty())
            .unwrap();
        let (resp, _) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        let h = a.stats.last_headers.lock().unwrap().clone().unwrap();
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["127.0.0.1"], "{what}");
    }
}

/// A server (h2c among others) that answers every request with `answer`'s
/// text.
async fn h2_server(answer: fn(&Request<hyper::body::Incoming>) -> String) -> SocketAddr {
    answering(move |req| async move { full_answer(answer(&req)) }).await
}

/// The values of a request's `x-real-ip` fields (`x_real_ip` too, which CGI
/// servers read the same), joined by ",".
fn real_ips(req: &Request<hyper::body::Incoming>) -> String {
    let seen: Vec<&str> = req
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str().replace('_', "-") == "x-real-ip")
        .map(|(_, v)| v.to_str().unwrap_or("?"))
        .collect();
    seen.join(",")
}

/// `client_ip_header = "X-Real-IP"` (nginx's `proxy_set_header X-Real-IP
/// $remote_addr`): every request to a server carries the client's address
/// in it, once, whatever the client sent in that field or a rule set: on
/// the fast path, hyper's (a chunked upload), HTTP/2 to an HTTP/1.1 pool,
/// and to an HTTP/2 pool; a reload turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ip_header_carries_the_client_and_never_a_forged_value() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let h2 = h2_server(real_ips).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"a\"\nclient_ip_header = \"X-Real-IP\"\n\
           [[listener.rule]]\n  path_prefix = \"/h2\"\n  pool = \"h2\"\n\
           [[listener.rule]]\n  path_prefix = \"/set\"\n  set_header = {{ \"x-real-ip\" = \"7.7.7.7\" }}\n\
         [[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{}\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n  [[pool.server]]\n  address = \"{h2}\"\n",
        a.addr
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    // (`X_Real_IP` is the same variable to CGI, WSGI and Rack servers)
    let seen = || -> Vec<String> {
        let h = a.stats.last_headers.lock().unwrap().clone().unwrap();
        h.iter()
            .filter(|(n, _)| n.as_str().replace('_', "-") == "x-real-ip")
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .collect()
    };
    for (what, c) in [("fast path", client()), ("HTTP/2 client", h2c_client())] {
        for path in ["/", "/set"] {
            let req = Request::get(format!("http://{listen}{path}"))
                .header("x-real-ip", "6.6.6.6")
                .header("X-Real-IP", "5.5.5.5")
                .header("X_Real_IP", "4.4.4.4")
                .body(empty())
                .unwrap();
            let (resp, _) = send(&c, req).await;
            assert_eq!(resp.status(), StatusCode::OK, "{what} {path}");
            assert_eq!(seen(), ["127.0.0.1"], "{what} {path}");
        }
        // to an HTTP/2 pool
        let req = Request::get(format!("http://{listen}/h2"))
            .header("x-real-ip", "6.6.6.6")
            .header("x_real_ip", "4.4.4.4")
            .body(empty())
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what} h2");
        assert_eq!(&body[..], b"127.0.0.1", "{what} h2");
    }
    // a chunked upload, which goes to hyper's path
    let req = Request::post(format!("http://{listen}/up"))
        .header("x-real-ip", "6.6.6.6")
        .header("x_real_ip", "4.4.4.4")
        .body(chunked(b"abc"))
        .unwrap();
    let (resp, _) = send(&client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(seen(), ["127.0.0.1"], "chunked");
    // a reload without it: the client's field passes again, on a connection
    // opened before it too
    let open = client();
    let (resp, _) = send(
        &open,
        Request::get(format!("http://{listen}/"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    std::fs::write(
        &p.config,
        cfg.replace("client_ip_header = \"X-Real-IP\"\n", ""),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    for c in [open, client()] {
        let req = Request::get(format!("http://{listen}/"))
            .header("x-real-ip", "6.6.6.6")
            .body(empty())
            .unwrap();
        send(&c, req).await;
        assert_eq!(seen(), ["6.6.6.6"]);
    }
}

/// `rewrite_prefix` (nginx's `proxy_pass http://b/;` in `location /api/`)
/// and `rewrite_path` (HAProxy's `replace-path`, nginx's `rewrite`): the
/// server gets the new path with the client's query, on the fast path,
/// hyper's (a chunked upload), from an HTTP/2 client and to an HTTP/2 pool;
/// later rules and the routes match the new path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_rewrite_the_path_the_server_gets() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let b = Backend::start("b", free_addr("127.0.0.1")).await;
    let h2 = h2_server(|req| {
        let t = req.uri().path_and_query().map_or("", |p| p.as_str());
        t.to_string()
    })
    .await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"a\"\n\
           [[listener.rule]]\n  path_prefix = \"/api/\"\n  rewrite_prefix = \"/\"\n  pool = \"a\"\n\
           [[listener.rule]]\n  path = \"/h2\"\n  rewrite_prefix = \"/v2/root\"\n  pool = \"h2\"\n\
           [[listener.rule]]\n  rewrite_path = {{ regex = \"^/zpi/(?P<rest>.*)$\", to = \"/r/${{rest}}\" }}\n\
           [[listener.rule]]\n  path_prefix = \"/r/admin/\"\n  pool = \"b\"\n\
           [[listener.rule]]\n  path_prefix = \"/dd\"\n  rewrite_prefix = \"/\"\n\
           [[listener.rule]]\n  path = \"/secret\"\n  deny = 403\n\
           [[listener.rule]]\n  rewrite_path = {{ regex = \"^/dup/(.*)$\", to = \"/${{1}}/${{1}}\" }}\n\
           [[listener.route]]\n  path_prefix = \"/r/b/\"\n  pool = \"b\"\n\
         [[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{}\"\n\
         [[pool]]\nname = \"b\"\n  [[pool.server]]\n  address = \"{}\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n  [[pool.server]]\n  address = \"{h2}\"\n",
        a.addr, b.addr
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    let last = |s: &Backend| s.stats.last_uri.lock().unwrap().take();
    for (what, c) in [("fast path", client()), ("HTTP/2 client", h2c_client())] {
        for (sent, who, want) in [
            ("/api/users/7?x=1&y=%20", &a, "/users/7?x=1&y=%20"),
            // matched decoded, sent encoded (nginx's proxy_pass with a URI)
            ("/%61pi/a%20b%3Fc?q", &a, "/a%20b%3Fc?q"),
            ("/zpi/admin/1?k", &b, "/r/admin/1?k"),
            ("/zpi/b/2", &b, "/r/b/2"),
            ("/zpi/other", &a, "/r/other"),
            ("/plain?x", &a, "/plain?x"),
        ] {
            let req = Request::get(format!("http://{listen}{sent}"))
                .body(empty())
                .unwrap();
            let (resp, _) = send(&c, req).await;
            assert_eq!(resp.status(), StatusCode::OK, "{what} {sent}");
            assert_eq!(last(who).as_deref(), Some(want), "{what} {sent}");
        }
        let req = Request::get(format!("http://{listen}/h2?q=1"))
            .body(empty())
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what} h2");
        assert_eq!(&body[..], b"/v2/root?q=1", "{what} h2");
    }
    // a chunked upload, which goes to hyper's path
    let req = Request::post(format!("http://{listen}/api/up?z"))
        .body(chunked(b"abc"))
        .unwrap();
    let (resp, _) = send(&client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(last(&a).as_deref(), Some("/up?z"), "chunked");
    // a `..` a rewrite makes is resolved before the rules after it look:
    // `/dd../secret` is `/secret` to them (and would be to the server)
    for c in [client(), h2c_client()] {
        let (resp, _) = send(
            &c,
            Request::get(format!("http://{listen}/dd../secret"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let (resp, _) = send(
            &c,
            Request::get(format!("http://{listen}/dd//x/./y"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(last(&a).as_deref(), Some("/x/y"));
    }
    // a target longer than a server can be sent: 414 on both paths
    let long = format!("/dup/{}", "a".repeat(34_000));
    for (what, body) in [("fast path", empty()), ("chunked", chunked(b"x"))] {
        let req = Request::post(format!("http://{listen}{long}"))
            .body(body)
            .unwrap();
        let (resp, _) = send(&client(), req).await;
        assert_eq!(resp.status(), StatusCode::URI_TOO_LONG, "{what}");
    }
    let (resp, _) = send(
        &client(),
        Request::get(format!("http://{listen}/dup/x"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(last(&a).as_deref(), Some("/x/x"));
    // a fragment is no request's: `/secret#x` is /secret to the rules, as to
    // a server that drops it (it went past them on the fast path)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(b"GET /secret#x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 403"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// `[listener.client_ip_from]` (nginx's `set_real_ip_from` and
/// `real_ip_header`): behind a trusted proxy, a request's client is the one
/// the proxy names in X-Forwarded-For, for the rules' `src`, the
/// `client_ip_header` and X-Forwarded-For's last entry, on the fast path,
/// hyper's and HTTP/2; from anyone else the field is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_no_one_else_does() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let (trusting, wary, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let listener = |name: &str, bind: SocketAddr, from: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nbind = [\"{bind}\"]\nmode = \"http\"\npool = \"a\"\nclient_ip_header = \"X-Real-IP\"\n\
             client_ip_from = {{ from = [\"{from}\"], recursive = true }}\n\
               [[listener.rule]]\n  src = [\"203.0.113.0/24\"]\n  deny = 403\n"
        )
    };
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n{}{}\
         [[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{}\"\n",
        listener("trusting", trusting, "127.0.0.0/8"),
        listener("wary", wary, "10.0.0.0/8"),
        a.addr
    );
    let _p = Proxy::start(&cfg, &[trusting, wary]).await;
    let seen = |name: &str| -> String {
        let h = a.stats.last_headers.lock().unwrap().clone().unwrap();
        let v: Vec<&str> = h
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        v.join(" | ")
    };
    let get = |at: SocketAddr, xff: &'static str, chunked_body: bool| {
        let b = Request::builder()
            .method(if chunked_body { "POST" } else { "GET" })
            .uri(format!("http://{at}/"))
            .header("x-forwarded-for", xff);
        b.body(if chunked_body { chunked(b"x") } else { empty() })
            .unwrap()
    };
    for (what, c, chunked_body) in [
        ("fast path", client(), false),
        ("hyper's path", client(), true),
        ("HTTP/2", h2c_client(), false),
    ] {
        // the client the trusted proxy names is the one rules see
        let (resp, _) = send(&c, get(trusting, "203.0.113.9", chunked_body)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
        // recursive: past the trusted proxies at the end
        let (resp, _) = send(&c, get(trusting, "198.51.100.7, 127.0.0.9", chunked_body)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        assert_eq!(seen("x-real-ip"), "198.51.100.7", "{what}");
        assert_eq!(
            seen("x-forwarded-for"),
            "198.51.100.7, 127.0.0.9, 198.51.100.7",
            "{what}"
        );
        // an untrusted peer names no one
        let (resp, _) = send(&c, get(wary, "203.0.113.9", chunked_body)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        assert_eq!(seen("x-real-ip"), "127.0.0.1", "{what}");
        assert_eq!(seen("x-forwarded-for"), "203.0.113.9, 127.0.0.1", "{what}");
    }
}

/// `response_replace_header` (HAProxy's `http-response replace-header`,
/// nginx's `proxy_redirect`): every line of the server's field that the
/// regex matches becomes the replacement, whole, on the fast path, hyper's
/// (a chunked upload) and to an HTTP/2 client; lines it does not match, a
/// rule's own `response_set_header` and the answers of requests the rule
/// does not match stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_rewrites_the_servers_redirects() {
    let app = answering(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let mut r = full_answer("moved");
        *r.status_mut() = StatusCode::FOUND;
        let h = r.headers_mut();
        h.insert(
            "location",
            format!("http://app.internal{path}").parse().unwrap(),
        );
        h.append(
            "link",
            "<http://app.internal/a.css>; rel=preload".parse().unwrap(),
        );
        h.append(
            "link",
            "<https://cdn.example/b.js>; rel=preload".parse().unwrap(),
        );
        h.append(
            "link",
            "<http://app.internal/c.js>; rel=preload".parse().unwrap(),
        );
        h.insert("x-other", "http://app.internal/keep".parse().unwrap());
        h.insert("x-gone", "1".parse().unwrap());
        if path.ends_with("/many") {
            // more fields than an HTTP/2 answer keeps in its buffer
            for i in 0..20 {
                h.insert(
                    hyper::header::HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
                    "pad".parse().unwrap(),
                );
            }
        }
        h.insert("x-set", "from the server".parse().unwrap());
        h.insert(
            "x-bytes",
            hyper::header::HeaderValue::from_bytes(b"http://app.internal/\xff").unwrap(),
        );
        r
    })
    .await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"app\"\n\
           [[listener.rule]]\n  path_prefix = \"/app/\"\n  \
             response_replace_header = {{ name = \"Location\", regex = \"^http://app\\\\.internal/(.*)$\", to = \"https://www.example.com/app/$1\" }}\n\
           [[listener.rule]]\n  path_prefix = \"/app/\"\n  \
             response_set_header = {{ \"x-set\" = \"http://app.internal/set\" }}\n  \
             response_del_header = [\"x-gone\"]\n  \
             response_replace_header = [\n    \
               {{ name = \"link\", regex = \"^<http://app\\\\.internal(/[^>]*)>(.*)$\", to = \"<${{1}}>$2\" }},\n    \
               {{ name = \"x-set\", regex = \"app\", to = \"rewritten\" }},\n    \
               {{ name = \"x-bytes\", regex = \"app\", to = \"rewritten\" }},\n    \
               {{ name = \"x-other\", regex = \"^http://app\\\\.internal/(.*)$\", to = \"http://b/$1\" }},\n    \
               {{ name = \"x-other\", regex = \"^http://b/(.*)$\", to = \"/c/$1\" }},\n    \
               {{ name = \"x-other\", regex = \"^http://app\\\\.internal/keep$\", to = \"/not-this\" }},\n  ]\n\
           [[listener.rule]]\n  path_prefix = \"/app/twice/\"\n  \
             response_replace_header = {{ name = \"location\", regex = \"^https://www\\\\.example\\\\.com(/.*)$\", to = \"$1\" }}\n\
         [[pool]]\nname = \"app\"\n  [[pool.server]]\n  address = \"{app}\"\n"
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    let fields = |resp: &hyper::Response<()>, n: &str| -> Vec<String> {
        resp.headers()
            .get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let b = |s: &str| s.to_string();
    let upload: Option<&'static [u8]> = Some(b"abc");
    for (what, c, body) in [
        ("fast path", client(), None),
        ("chunked upload", client(), upload),
        ("HTTP/2 client", h2c_client(), None),
    ] {
        let req = |path: &str| {
            let r = Request::post(format!("http://{listen}{path}"));
            r.body(body.map_or_else(empty, chunked)).unwrap()
        };
        let (resp, _) = send(&c, req("/app/list?p=2")).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{what}");
        assert_eq!(
            fields(&resp, "location"),
            [b("https://www.example.com/app/app/list")],
            "{what}"
        );
        assert_eq!(
            fields(&resp, "link"),
            [
                b("</a.css>; rel=preload"),
                b("<https://cdn.example/b.js>; rel=preload"),
                b("</c.js>; rel=preload"),
            ],
            "{what}"
        );
        // the first of a list that matches a line rewrites it, once
        assert_eq!(fields(&resp, "x-other"), [b("http://b/keep")], "{what}");
        // a server's line a rule deletes, or sets (in its place)
        assert!(fields(&resp, "x-gone").is_empty(), "{what}");
        // a rule's own value, a value that is not UTF-8: as they were
        assert_eq!(
            fields(&resp, "x-set"),
            [b("http://app.internal/set")],
            "{what}"
        );
        assert_eq!(
            fields(&resp, "x-bytes"),
            [b("http://app.internal/\u{FFFD}")],
            "{what}"
        );
        // the same with more fields than an HTTP/2 answer keeps in its
        // buffer (edited in a map instead)
        let (resp, _) = send(&c, req("/app/many")).await;
        assert_eq!(
            fields(&resp, "location"),
            [b("https://www.example.com/app/app/many")],
            "{what}"
        );
        assert!(fields(&resp, "x-gone").is_empty(), "{what}");
        assert_eq!(
            fields(&resp, "x-set"),
            [b("http://app.internal/set")],
            "{what}"
        );
        assert_eq!(fields(&resp, "x-pad-19"), [b("pad")], "{what}");
        assert_eq!(fields(&resp, "link").len(), 3, "{what}");
        assert_eq!(fields(&resp, "date").len(), 1, "{what}");
        // a later rule's replace works on the earlier one's result
        let (resp, _) = send(&c, req("/app/twice/x")).await;
        assert_eq!(fields(&resp, "location"), [b("/app/app/twice/x")], "{what}");
        // a request the rules do not match keeps the server's answer
        let (resp, _) = send(&c, req("/other")).await;
        assert_eq!(
            fields(&resp, "location"),
            [b("http://app.internal/other")],
            "{what}"
        );
        assert_eq!(fields(&resp, "link").len(), 3, "{what}");
        assert!(
            fields(&resp, "link")[0].starts_with("<http://app.internal/"),
            "{what}"
        );
    }
}

/// Forty rules of one host each (those with a pool edit the request too),
/// then an edit, then twenty of one path prefix each (each run looked up,
/// not walked: src/rules.rs `Only::Run`), answer on the fast path and the
/// hyper path as the rules say in order:
/// the first of a run that matches, across runs, a host with a port, in
/// upper case, with the root's dot, and a request no rule matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_runs_of_host_and_prefix_rules_pick_what_the_first_match_says() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let b = Backend::start("b", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let mut rules = String::new();
    for i in 0..40 {
        // every third host is refused, the rest go to b; h5 twice, the
        // first (b) decides
        // (the pool rules edit what they send on: a run's rule does all it
        // says)
        let (host, action) = match i {
            39 => (5, "deny = 403".to_string()),
            i if i % 3 == 0 => (i, "deny = 403".to_string()),
            i => (
                i,
                format!("pool = \"b\"\n  set_header = {{ \"x-host-rule\" = \"h{i}\" }}"),
            ),
        };
        rules += &format!("  [[listener.rule]]\n  host = \"h{host}.example.com\"\n  {action}\n");
    }
    rules += "  [[listener.rule]]\n  set_header = { \"x-run\" = \"2\" }\n";
    for i in 0..20 {
        let action = if i == 7 { "deny = 404" } else { "pool = \"b\"" };
        rules += &format!("  [[listener.rule]]\n  path_prefix = \"/p{i}/\"\n  {action}\n");
    }
    let cfg = config_with_rules(listen, admin, a.addr, b.addr, &rules);
    let p = Proxy::start(&cfg, &[listen]).await;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        Case { what: "a host of the run", method: "GET", path: "/", host: Some("h7.example.com"), headers: &[], status: 200, expect: "b" },
        Case { what: "a refused host", method: "GET", path: "/", host: Some("h9.example.com"), headers: &[], status: 403, expect: "403 Forbidden\n" },
        Case { what: "the first of two rules for a host", method: "GET", path: "/", host: Some("h5.example.com"), headers: &[], status: 200, expect: "b" },
        Case { what: "upper case, a port", method: "GET", path: "/", host: Some("H38.Example.COM:8080"), headers: &[], status: 200, expect: "b" },
        Case { what: "the root's dot", method: "GET", path: "/", host: Some("h0.example.com."), headers: &[], status: 403, expect: "403 Forbidden\n" },
        Case { what: "no host of the run, a prefix of the next", method: "GET", path: "/p12/x", host: Some("zz.example.com"), headers: &[], status: 200, expect: "b" },
        Case { what: "a host before a prefix", method: "GET", path: "/p7/x", host: Some("h3.example.com"), headers: &[], status: 403, expect: "403 Forbidden\n" },
        Case { what: "a refused prefix", method: "GET", path: "/p7/x", host: None, headers: &[], status: 404, expect: "404 Not Found\n" },
        Case { what: "no rule", method: "GET", path: "/p77/x", host: Some("h40.example.com"), headers: &[], status: 200, expect: "a" },
    ];
    for (path, c, h2) in [
        ("fast path (HTTP/1.1)", client(), false),
        ("hyper path (h2c)", h2c_client(), true),
    ] {
        for case in cases {
            let (st, body, _) = run(&c, h2, listen, case).await;
            assert_eq!(
                (st.as_u16(), body.as_str()),
                (case.status, case.expect),
                "{path}: {}",
                case.what
            );
        }
    }
    // the edit between the runs applied to what got past the first
    let seen = b.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("x-run").map(|v| v.as_bytes()), Some(&b"2"[..]));
    assert!(seen.get("x-host-rule").is_none());
    // and a rule of the first run, its own edit, not the later one's
    let case = Case {
        what: "an edit in a run",
        method: "GET",
        path: "/",
        host: Some("h37.example.com"),
        headers: &[],
        status: 200,
        expect: "b",
    };
    let (st, _, _) = run(&client(), false, listen, &case).await;
    assert_eq!(st, StatusCode::OK);
    let seen = b.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.get("x-host-rule").map(|v| v.as_bytes()),
        Some(&b"h37"[..])
    );
    assert!(seen.get("x-run").is_none());
    drop(p);
}
