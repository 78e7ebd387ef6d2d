//! `[[rate_limit]]` applied by rules: GCRA per client IP and per header value,
//! 429 with Retry-After and the IETF RateLimit headers, other keys unaffected,
//! state kept across a reload; on the fast path and the hyper path.

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use std::net::SocketAddr;
use std::time::Instant;

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[rate_limit]]
name = "per-ip"
key = "client_ip"
rate = "100/s"
burst = 10
[[rate_limit]]
name = "per-key"
key = ["header:x-api-key", "path"]
rate = "5/m"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
  [[listener.rule]]
  path_prefix = "/api"
  rate_limit = "per-ip"
  [[listener.rule]]
  path_prefix = "/keyed"
  rate_limit = "per-key"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{backend}"
"#
    )
}

/// A client whose connections come from `ip`.
fn client_from(ip: &str) -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_local_address(Some(ip.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(http)
}

async fn call(c: &Client, url: &str, key: Option<&str>) -> (StatusCode, hyper::HeaderMap, String) {
    let mut req = Request::builder().uri(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = c.request(req.body(empty()).unwrap()).await.unwrap();
    let (st, h) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (st, h, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_and_others_do_not() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = config(listen, admin, backend.addr);
    let p = Proxy::start(&text, &[listen]).await;
    let one = client_from("127.0.0.1");
    let url = format!("http://{listen}/api/x");

    // 200 requests, as fast as one client goes: burst + 1 at once, then 100/s
    let start = Instant::now();
    let mut passed = 0u64;
    let mut limited = None;
    for _ in 0..200 {
        let (st, h, body) = call(&one, &url, None).await;
        match st {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => limited = Some((h, body)),
            s => panic!("{s}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = 11.0 + secs * 100.0;
    assert!(
        (passed as f64) <= expected + 2.0 && (passed as f64) >= expected - 7.0,
        "{passed} passed in {secs:.3} s, expected about {expected:.0}"
    );
    assert!(passed < 200, "nothing was limited");
    assert_eq!(
        backend.requests() as u64,
        passed,
        "a limited request reached the backend"
    );
    let (h, body) = limited.unwrap();
    assert_eq!(h["retry-after"], "1");
    assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=100;w=1");
    assert_eq!(h["ratelimit"], "\"per-ip\";r=0;t=1");
    assert_eq!(body, "429 Too Many Requests: rate limit \"per-ip\"\n");

    // another client address has its own budget
    let two = client_from("127.0.0.2");
    for _ in 0..11 {
        assert_eq!(call(&two, &url, None).await.0, StatusCode::OK);
    }
    // paths without a limit are not counted
    assert_eq!(
        call(&one, &format!("http://{listen}/free"), None).await.0,
        StatusCode::OK
    );

    // by header and path: 5/m without burst is one now, then one every 12 s
    let keyed = format!("http://{listen}/keyed/jobs");
    assert_eq!(call(&one, &keyed, Some("alice")).await.0, StatusCode::OK);
    let (st, h, _) = call(&one, &keyed, Some("alice")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((11..=12).contains(&ra), "Retry-After {ra}");
    assert_eq!(h["ratelimit-policy"], "\"per-key\";q=5;w=60");
    assert_eq!(call(&one, &keyed, Some("bob")).await.0, StatusCode::OK);
    assert_eq!(
        call(&one, &format!("http://{listen}/keyed/other"), Some("alice"))
            .await
            .0,
        StatusCode::OK
    );
    // the hyper path (h2c) applies the same limits
    let h2 = h2c_client();
    assert_eq!(
        call(&h2, &keyed, Some("alice")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(&h2, &keyed, Some("carol")).await.0, StatusCode::OK);

    // a reload keeps the counts
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    std::fs::write(
        &p.config,
        text.replace("rate = \"100/s\"", "rate = \"200/s\""),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        call(&one, &keyed, Some("alice")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}
