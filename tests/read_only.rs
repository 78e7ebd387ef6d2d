//! Read-only degradation: while the primary pool (of `read_only_when`) has no
//! eligible server, writes get the configured answer and reads keep going to the
//! replicas; when it comes back, writes flow again. And the operator's switch
//! (`rampart mode read-only|normal`), which survives a reload and a restart.

mod common;

use common::*;
use hyper::{Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    primary: SocketAddr,
    replica: SocketAddr,
    state: &std::path::Path,
) -> String {
    format!(
        r#"[global]
threads = 1
access_log = "text"
state_file = "{}"
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "primary"
read_only_when = ["pool:primary"]
read_only_message = "System is under heavy load, job submission temporarily disabled"
read_only_retry_after = "20s"
  [[listener.rule]]          # reads go to the replicas
  method = ["GET", "HEAD"]
  pool = "replicas"
  [[listener.rule]]          # a POST that only reads
  path = "/search"
  writes = false
  pool = "replicas"
[[pool]]
name = "primary"
  [pool.health]
  kind = "http"
  path = "/health"
  interval = "200ms"
  rise = 1
  fall = 1
  [[pool.server]]
  address = "{primary}"
[[pool]]
name = "replicas"
  [[pool.server]]
  address = "{replica}"
"#,
        state.display()
    )
}

async fn send(c: &Client, method: &str, url: &str) -> (StatusCode, String, hyper::HeaderMap) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(empty())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let (st, h) = (resp.status(), resp.headers().clone());
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (st, String::from_utf8_lossy(&body).into_owned(), h)
}

async fn health(admin: SocketAddr, pool: &str) -> String {
    let v = pool_view(admin, pool).await;
    v["servers"][0]["health"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_pause_while_the_primary_is_down_and_reads_go_on() {
    let primary = Backend::start("primary", free_addr("127.0.0.1")).await;
    let replica = Backend::start("replica", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("ro");
    let _p = Proxy::start(
        &config(
            listen,
            admin,
            primary.addr,
            replica.addr,
            &dir.join("state.json"),
        ),
        &[listen],
    )
    .await;
    wait_until(Duration::from_secs(10), "primary UP", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    let c = client();
    let url = |p: &str| format!("http://{listen}{p}");
    assert_eq!(send(&c, "POST", &url("/jobs")).await.1, "primary");
    assert_eq!(send(&c, "GET", &url("/jobs/1")).await.1, "replica");

    // the primary's health fails: writes get the configured answer
    primary.stats.health_status.store(503, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "primary DOWN", || async {
        health(admin, "primary").await == "DOWN"
    })
    .await;
    // the listener is read-only before any write comes: the switch is made
    // (logged, counted, notified) when the pool empties, not by a request
    wait_until(Duration::from_secs(5), "the listener read-only", || async {
        let l = admin_get(admin, "/api/listeners").await.1;
        serde_json::from_str::<Value>(&l).unwrap()[0]["read_only"] == true
    })
    .await;
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric(
            &metrics,
            "rampart_listener_read_only_switches_total{listener=\"web\"}"
        ),
        1.0
    );
    let before = primary.requests();
    // every method but GET, HEAD, OPTIONS and TRACE is a write: WebDAV's and
    // those rampart does not know too
    let writes = [
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "PROPPATCH",
        "MKCOL",
        "MOVE",
        "COPY",
        "LOCK",
        "PURGE",
    ];
    for m in writes {
        let (st, body, h) = send(&c, m, &url("/jobs")).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{m}");
        assert_eq!(
            body, "System is under heavy load, job submission temporarily disabled\n",
            "{m}"
        );
        assert_eq!(h["retry-after"], "20", "{m}");
    }
    assert_eq!(primary.requests(), before, "a write reached the primary");
    // reads go on, and a POST a rule calls a read too
    let (st, body, _) = send(&c, "GET", &url("/jobs/1")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "replica"));
    let (st, body, _) = send(&c, "POST", &url("/search")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "replica"));
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric(&metrics, "rampart_listener_read_only{listener=\"web\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "rampart_listener_read_only_refused_total{listener=\"web\"}"
        ),
        writes.len() as f64
    );
    let (_, listeners) = admin_get(admin, "/api/listeners").await;
    let v: Value = serde_json::from_str(&listeners).unwrap();
    assert_eq!(v[0]["read_only"], true, "{v}");
    assert_eq!(v[0]["read_only_manual"], false, "{v}");

    // the primary is back: writes flow again within the health interval
    primary.stats.health_status.store(200, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "primary UP again", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    let (st, body, _) = send(&c, "POST", &url("/jobs")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "primary"));
    wait_until(
        Duration::from_secs(5),
        "the listener back to normal",
        || async {
            let l = admin_get(admin, "/api/listeners").await.1;
            serde_json::from_str::<Value>(&l).unwrap()[0]["read_only"] == false
        },
    )
    .await;
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric(&metrics, "rampart_listener_read_only{listener=\"web\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "rampart_listener_read_only_switches_total{listener=\"web\"}"
        ),
        2.0
    );
}

fn cli_mode(admin: SocketAddr, mode: &str) -> String {
    rampart_cli(admin, &["mode", mode, "web"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_switch_survives_a_reload_and_a_restart() {
    let primary = Backend::start("primary", free_addr("127.0.0.1")).await;
    let replica = Backend::start("replica", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("ro-switch");
    let state = dir.join("state.json");
    let text = config(listen, admin, primary.addr, replica.addr, &state);
    let p = Proxy::start(&text, &[listen]).await;
    wait_until(Duration::from_secs(10), "primary UP", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    let c = client();
    let url = |p: &str| format!("http://{listen}{p}");
    assert_eq!(send(&c, "POST", &url("/jobs")).await.0, StatusCode::OK);

    let out = tokio::task::spawn_blocking(move || cli_mode(admin, "read-only"))
        .await
        .unwrap();
    assert!(out.contains("web: read-only"), "{out}");
    let (st, _, _) = send(&c, "POST", &url("/jobs")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&c, "GET", &url("/")).await.1, "replica");
    assert!(p.stderr().contains("switched to read-only by an operator"));

    // a reload keeps it
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        send(&c, "POST", &url("/jobs")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // a restart keeps it (the state file is written within a second)
    wait_for(Duration::from_secs(5), "the state file", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("read-only"))
    })
    .await;
    drop(p);
    let _p = Proxy::start(&text, &[listen]).await;
    wait_until(Duration::from_secs(10), "primary UP", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    assert_eq!(
        send(&c, "POST", &url("/jobs")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // restored from the state file, as the operator left it
    let listeners: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/api/listeners").await.1).unwrap();
    assert_eq!(listeners[0]["read_only_manual"], true, "{listeners}");

    // and back to normal
    let out = tokio::task::spawn_blocking(move || cli_mode(admin, "normal"))
        .await
        .unwrap();
    assert!(out.contains("web: normal"), "{out}");
    let (st, body, _) = send(&c, "POST", &url("/jobs")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "primary"));
}

/// A one-server primary whose breaker is HALF-OPEN (its trial request in
/// flight) is not an empty pool: writes are not refused with the read-only
/// answer while the trial runs (read-only mode would otherwise switch on for
/// the length of every trial, and off again once it succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breakers_trial_does_not_make_the_listener_read_only() {
    let primary = Backend::start("primary", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = format!(
        r#"[global]
threads = 1
access_log = "text"
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "primary"
read_only_when = ["pool:primary"]
read_only_message = "writes are paused"
[[pool]]
name = "primary"
  [pool.breaker]
  consecutive_failures = 1
  ejection_time = "200ms"
  max_ejected_percent = 100
  on_5xx = true
  [[pool.server]]
  address = "{primary}"
"#,
        primary = primary.addr
    );
    let _p = Proxy::start(&text, &[listen]).await;
    let c = client();
    let url = |p: &str| format!("http://{listen}{p}");
    let breaker = || async {
        pool_view(admin, "primary").await["servers"][0]["breaker"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // a 500 opens the breaker (on_5xx, one failure)
    let (st, _, _) = send(&c, "GET", &url("/status?code=500")).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(breaker().await, "open");
    // once ejection_time is up, a GET is the trial; it is held at the server
    // (until then a GET is answered 503 at once, and another is sent)
    let trial = loop {
        let c2 = c.clone();
        let u = url("/slow?ms=3000");
        let t = tokio::spawn(async move { send(&c2, "GET", &u).await });
        wait_for(
            Duration::from_secs(5),
            "a GET at the server or answered",
            || primary.stats.active.load(Ordering::SeqCst) == 1 || t.is_finished(),
        )
        .await;
        if primary.stats.active.load(Ordering::SeqCst) == 1 {
            break t;
        }
        let (st, _, _) = t.await.unwrap();
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "before the trial");
    };
    assert_eq!(breaker().await, "half-open");
    // a write meanwhile is not refused as in read-only mode (the server is
    // busy with its trial: no server takes it now)
    let (st, body, _) = send(&c, "POST", &url("/jobs")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.contains("writes are paused"), "{body}");
    let l: Value = serde_json::from_str(&admin_get(admin, "/api/listeners").await.1).unwrap();
    assert_eq!(l[0]["read_only_refused"], 0, "{l}");
    // the trial succeeds, the breaker closes, writes reach the server
    let (st, body, _) = trial.await.unwrap();
    assert_eq!((st, body.as_str()), (StatusCode::OK, "primary"));
    assert_eq!(breaker().await, "closed");
    let (st, body, _) = send(&c, "POST", &url("/jobs")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "primary"));
}

/// A write refused because the listener is read-only uses none of its quota:
/// a client retrying while the primary is down keeps its budget for when it
/// is back (the read-only answer came after the limits, which had counted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_read_only_uses_no_quota() {
    let primary = Backend::start("primary", free_addr("127.0.0.1")).await;
    let replica = Backend::start("replica", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("ro-quota");
    let text = config(
        listen,
        admin,
        primary.addr,
        replica.addr,
        &dir.join("state.json"),
    )
    .replace(
        "[[listener]]\n",
        "[[rate_limit]]\nname = \"jobs\"\nkey = \"client_ip\"\nquota = \"100/day\"\n[[listener]]\n",
    )
    .replace(
        "  [[listener.rule]]          # reads go to the replicas",
        "  [[listener.rule]]\n  method = [\"POST\"]\n  path = \"/jobs\"\n  rate_limit = \"jobs\"\n  [[listener.rule]]          # reads go to the replicas",
    );
    assert!(text.contains("rate_limit = \"jobs\""), "{text}");
    let _p = Proxy::start(&text, &[listen]).await;
    wait_until(Duration::from_secs(10), "primary UP", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    let c = client();
    let url = format!("http://{listen}/jobs");
    let used = || async {
        let (_, list) = admin_get(admin, "/api/quotas?limit=jobs").await;
        let v: Value = serde_json::from_str(&list).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["used"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(send(&c, "POST", &url).await.0, StatusCode::OK);
    assert_eq!(used().await, 1);

    primary.stats.health_status.store(503, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "primary DOWN", || async {
        health(admin, "primary").await == "DOWN"
    })
    .await;
    for _ in 0..5 {
        let (st, body, _) = send(&c, "POST", &url).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    let l: Value = serde_json::from_str(&admin_get(admin, "/api/listeners").await.1).unwrap();
    assert_eq!(l[0]["read_only_refused"], 5, "{l}");
    assert_eq!(used().await, 1, "a refused write used the quota");

    // back: the next write is the second counted
    primary.stats.health_status.store(200, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "primary UP again", || async {
        health(admin, "primary").await == "UP"
    })
    .await;
    let (st, body, _) = send(&c, "POST", &url).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "primary"));
    assert_eq!(used().await, 2);
}
