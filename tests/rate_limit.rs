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
rate = "10/s"
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

    // 200 requests, as fast as one client goes: burst + 1 at once, then 10/s.
    // The rate is low enough that however slowly a loaded machine runs the
    // loop (up to ~19 s for the 200), the limiter must refuse some, and
    // GCRA's count is exact whatever the pace: at most burst + 1 + 10/s of
    // the time taken (a limiter that lets all through exceeds it); at least
    // that, less what the first and last round trips cost (here up to 0.7 s).
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
    let expected = 11.0 + secs * 10.0;
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
    assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=10;w=1");
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
        text.replace("rate = \"10/s\"", "rate = \"20/s\""),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        call(&one, &keyed, Some("alice")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // every 429 counted, per listener and per limit, across the reloads
    let by_ip = 200 - passed;
    let by_key = 3;
    let v = p.stats().await;
    assert_eq!(v["listeners"][0]["rate_limited"], by_ip + by_key, "{v}");
    assert_eq!(v["listeners"][0]["denied"], 0, "{v}");
    let (_, m) = admin_get(admin, "/metrics").await;
    for want in [
        format!(
            "rampart_listener_rate_limited_total{{listener=\"web\"}} {}",
            by_ip + by_key
        ),
        format!("rampart_rate_limit_refused_total{{by=\"rate\",limit=\"per-ip\"}} {by_ip}"),
        format!("rampart_rate_limit_refused_total{{by=\"rate\",limit=\"per-key\"}} {by_key}"),
        "rampart_rate_limit_refused_total{by=\"quota\",limit=\"per-key\"} 0".to_string(),
        // clients 127.0.0.1 and 127.0.0.2
        "rampart_rate_limit_keys{kind=\"rate\",limit=\"per-ip\"} 2".to_string(),
    ] {
        assert!(m.contains(&want), "{want}: {m}");
    }
    // HAProxy's dreq
    assert_eq!(
        frontend_csv(admin, "web", 10).await,
        (by_ip + by_key).to_string(),
        "dreq"
    );
}

async fn post_job(c: &Client, listen: SocketAddr, key: &str) -> (StatusCode, hyper::HeaderMap) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{listen}/jobs"))
        .header("x-api-key", key)
        .body(empty())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    (resp.status(), resp.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_of_100_survives_a_reload_and_a_restart() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("quota");
    let state = dir.join("state.json");
    let text = quota_config(listen, admin, backend.addr, Some(&state));
    let p = Proxy::start(&text, &[listen]).await;
    let c = client();
    for i in 0..100 {
        assert_eq!(
            post_job(&c, listen, "free-1").await.0,
            StatusCode::OK,
            "job {i}"
        );
    }
    // the 101st: 429 until the next UTC day
    let (st, h) = post_job(&c, listen, "free-1").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to_midnight = (now / 86_400 + 1) * 86_400 - now;
    assert!(
        ra.abs_diff(to_midnight) <= 2,
        "Retry-After {ra}, midnight in {to_midnight}"
    );
    assert_eq!(h["ratelimit-policy"], "\"jobs\";q=100;w=86400");
    let (_, m) = admin_get(admin, "/metrics").await;
    for want in [
        "rampart_rate_limit_refused_total{by=\"quota\",limit=\"jobs\"} 1",
        "rampart_rate_limit_refused_total{by=\"rate\",limit=\"jobs\"} 0",
        "rampart_rate_limit_keys{kind=\"quota\",limit=\"jobs\"} 1",
    ] {
        assert!(m.contains(want), "{want}: {m}");
    }
    // another key, and other requests, are not counted against it
    assert_eq!(post_job(&c, listen, "free-2").await.0, StatusCode::OK);
    assert_eq!(
        get(&c, &format!("http://{listen}/jobs")).await.0,
        StatusCode::OK
    );
    assert_eq!(backend.requests(), 102);

    // a reload keeps the count
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        post_job(&c, listen, "free-1").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let shown =
        tokio::task::spawn_blocking(move || rampart_cli(admin, &["quota", "show", "free-1"]))
            .await
            .unwrap();
    assert!(
        shown.contains("jobs free-1: 100/100 used, 0 left"),
        "{shown}"
    );

    // so does a restart (the state file is written within a second)
    wait_for(
        std::time::Duration::from_secs(5),
        "quotas in the state file",
        || std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"used\": 100")),
    )
    .await;
    drop(p);
    let _p = Proxy::start(&text, &[listen]).await;
    assert_eq!(
        post_job(&c, listen, "free-1").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(post_job(&c, listen, "free-2").await.0, StatusCode::OK);

    // an operator resets the key
    let out =
        tokio::task::spawn_blocking(move || rampart_cli(admin, &["quota", "reset", "free-1"]))
            .await
            .unwrap();
    assert!(out.contains("free-1: reset in jobs"), "{out}");
    assert_eq!(post_job(&c, listen, "free-1").await.0, StatusCode::OK);
    let (_, list) = admin_get(admin, "/api/quotas?limit=jobs").await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let free1 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == "free-1")
        .unwrap();
    assert_eq!(
        (free1["used"].as_u64(), free1["remaining"].as_u64()),
        (Some(1), Some(99))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_free_pro_and_enterprise() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("tiers");
    std::fs::write(dir.join("free.keys"), "# free plan\nfree-1\nfree-2\n").unwrap();
    let text = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[tier]]
name = "free"
match = {{ header = "x-api-key", keys_file = "free.keys" }}
quota = "100/day"
[[tier]]
name = "pro"
match = {{ values = ["pro-1"] }}
quota = "10000/day"
[[tier]]
name = "enterprise"
match = {{ values = ["ent-1"] }}
[[rate_limit]]
name = "jobs"
key = "tier"
quota = "5/day"            # requests in no tier
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
  [[listener.rule]]
  method = ["POST"]
  path = "/jobs"
  rate_limit = "jobs"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{}"
"#,
        backend.addr
    );
    // the keys file is found next to the config
    let cfg = dir.join("rampart.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = std::process::Command::new(rampart_bin())
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // run from its own folder (Proxy::start writes the config elsewhere)
    let _child = KillOnDrop(
        std::process::Command::new(rampart_bin())
            .args(["run", "-c"])
            .arg(&cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = client();
    wait_for(std::time::Duration::from_secs(10), "the listener", || {
        std::net::TcpStream::connect(listen).is_ok()
    })
    .await;
    let mut passed = std::collections::HashMap::new();
    for key in ["free-1", "pro-1", "ent-1", "stranger"] {
        let mut n = 0;
        for _ in 0..130 {
            if post_job(&c, listen, key).await.0 == StatusCode::OK {
                n += 1;
            }
        }
        passed.insert(key, n);
    }
    // free: 100/day; pro: 10,000/day; enterprise: unlimited; no tier: the limit's 5
    assert_eq!(passed["free-1"], 100);
    assert_eq!(passed["pro-1"], 130);
    assert_eq!(passed["ent-1"], 130);
    assert_eq!(passed["stranger"], 5);
    // free-2 is in the free tier too, with its own count
    let (st, h) = post_job(&c, listen, "free-2").await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.get("ratelimit-policy").is_none());
    for _ in 0..99 {
        post_job(&c, listen, "free-2").await;
    }
    let (st, h) = post_job(&c, listen, "free-2").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["ratelimit-policy"], "\"jobs\";q=100;w=86400");
    let (_, list) = admin_get(admin, "/api/quotas?key=pro-1").await;
    assert_eq!(list, "[]", "keys are shown with their tier");
    let (_, list) = admin_get(admin, "/api/quotas?key=pro:pro-1").await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        (v[0]["used"].as_u64(), v[0]["quota"].as_u64()),
        (Some(130), Some(10000))
    );
}

/// A request that the fast path hands to hyper because of its pool (TLS to
/// the servers, here) is charged once, not once on each path: with 5 a
/// minute and no burst, the first request passes (each on a new connection,
/// so each the fast path's first, handed on) and the next is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_handed_to_hyper_for_its_pool_is_charged_once() {
    use common::tls::{self as t, Key, Pki};
    let pki = Pki::new("Limit CA");
    let cert = pki.issue("api", "api.internal", &["api.internal"], Key::Ecdsa, 30);
    let backend = t::tls_backend("secure-pod", &cert, false).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let tls = format!(
        "  [pool.tls]\n  ca = {:?}\n  server_name = \"api.internal\"\n",
        pki.ca().display().to_string()
    );
    let text = config(listen, admin, backend.addr).replace(
        "name = \"api\"\n  [[pool.server]]",
        &format!("name = \"api\"\n{tls}  [[pool.server]]"),
    );
    assert!(text.contains("[pool.tls]"), "{text}");
    let _p = Proxy::start(&text, &[listen]).await;
    let url = format!("http://{listen}/keyed/jobs");
    let (st, _, body) = call(&client(), &url, Some("alice")).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _, _) = call(&client(), &url, Some("alice")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let (_, m) = admin_get(admin, "/metrics").await;
    let want = "rampart_rate_limit_refused_total{by=\"rate\",limit=\"per-key\"} 1";
    assert!(m.contains(want), "{want}: {m}");
}

/// A request refused by one limit is not charged to another it passed first:
/// with a daily quota defined before a per-IP rate, a client bursting over
/// its rate spends its quota only on what got through (each limit counted a
/// request as it passed it, and a later 429 kept the charge: 20 used for 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_a_later_limit_uses_no_quota() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[rate_limit]]
name = "jobs-free"
key = "header:x-api-key"
quota = "100/day"
[[rate_limit]]
name = "per-ip"
key = "client_ip"
rate = "1/m"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
  [[listener.rule]]
  method = ["POST"]
  path = "/jobs"
  rate_limit = "jobs-free"
  [[listener.rule]]
  path_prefix = "/"
  rate_limit = "per-ip"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{}"
"#,
        backend.addr
    );
    let _p = Proxy::start(&text, &[listen]).await;
    let c = client();
    let mut passed = 0u64;
    for _ in 0..20 {
        let (st, h) = post_job(&c, listen, "free-1").await;
        match st {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=1;w=60")
            }
            s => panic!("{s}"),
        }
    }
    // one a minute, no burst: the first passes
    assert_eq!(passed, 1);
    assert_eq!(backend.requests() as u64, passed);
    let (_, list) = admin_get(admin, "/api/quotas?limit=jobs-free&key=free-1").await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["used"].as_u64(), Some(passed), "{v}");
    assert_eq!(v[0]["remaining"].as_u64(), Some(100 - passed), "{v}");
}

/// An IPv6 client is counted under its /64, and an operator finds and
/// resets it by its own address: `rampart quota show ::1` shows `::/64`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_clients_quota_is_found_by_its_address() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("::1"), free_addr("127.0.0.1"));
    let text = quota_config(listen, admin, backend.addr, None)
        .replace("key = \"header:x-api-key\"", "key = \"client_ip\"");
    let _p = Proxy::start(&text, &[listen]).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(post_job(&c, listen, "-").await.0, StatusCode::OK);
    }
    let show = |key: &'static str| {
        tokio::task::spawn_blocking(move || rampart_cli(admin, &["quota", "show", key]))
    };
    for key in ["::1", "::/64"] {
        let shown = show(key).await.unwrap();
        assert!(shown.contains("jobs ::/64: 3/100 used"), "{key}: {shown}");
    }
    let out = tokio::task::spawn_blocking(move || rampart_cli(admin, &["quota", "reset", "::1"]))
        .await
        .unwrap();
    assert!(out.contains("::1: reset in jobs"), "{out}");
    let (_, list) = admin_get(admin, "/api/quotas?limit=jobs").await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|q| q["used"] == 0),
        "{list}"
    );
}
