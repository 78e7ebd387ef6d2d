//! Health checks, retries, the circuit breaker, backup servers: a dead backend is
//! not the client's problem. Real proxy process, real sockets.

mod common;

use common::*;
use hyper::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const FAST_HEALTH: &str = r#"
[pool.health]
kind = "http"
path = "/health"
interval = "200ms"
fast_interval = "100ms"
timeout = "150ms"
rise = 2
fall = 2
"#;

/// pod-a and pod-b, at weight 1 each, behind a proxy on a free loopback
/// port, its pool configured with `extra` as well.
async fn two_pods_behind(extra: &str) -> (Backend, Backend, SocketAddr, Proxy) {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &http_config(listen, extra, &[(a.addr, 1), (b.addr, 1)]),
        &[listen],
    )
    .await;
    (a, b, listen, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_mid_run_fails_no_request_and_it_returns_after_rise() {
    let (_a, b, listen, p) = two_pods_behind(FAST_HEALTH).await;
    let c = client();
    p.wait_pool(Duration::from_secs(5), "api", "both servers UP", |v| {
        count_status(v, "UP") == 2
    })
    .await;

    // 4 clients x 500 requests; pod-b is killed when 500 have been answered.
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, done, failures) = (c.clone(), Arc::clone(&done), Arc::clone(&failures));
        workers.push(tokio::spawn(async move {
            for _ in 0..500 {
                let (st, body) = get(&c, &format!("http://{listen}/")).await;
                if st != StatusCode::OK {
                    failures.lock().unwrap().push(format!("{st} {body}"));
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_for(Duration::from_secs(30), "500 requests", || {
        done.load(Ordering::SeqCst) >= 500
    })
    .await;
    b.kill();
    let b_before = b.requests();
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of 2000 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(b_before > 100, "pod-b served {b_before} before the kill");
    p.wait_server(Duration::from_secs(5), "api", b.addr, "DOWN")
        .await;

    // pod-b comes back (same address, a new process in real life)
    let b2 = Backend::start("pod-b", b.addr).await;
    let t0 = Instant::now();
    p.wait_server(Duration::from_secs(5), "api", b.addr, "UP")
        .await;
    let t_up = t0.elapsed();
    // rise = 2: two successes at least one fast_interval (100 ms, -10% jitter) apart
    assert!(
        t_up >= Duration::from_millis(85),
        "UP after only {t_up:?}: rise ignored?"
    );
    for _ in 0..20 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    assert!(
        b2.requests() >= 5,
        "pod-b got {} of 20 after coming back",
        b2.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_endpoint_takes_the_server_out_within_the_bound() {
    let health = FAST_HEALTH.replace(
        "interval = \"200ms\"\nfast_interval = \"100ms\"",
        "interval = \"300ms\"\nfast_interval = \"300ms\"",
    );
    let (a, b, listen, p) = two_pods_behind(&health).await;
    let c = client();
    p.wait_pool(Duration::from_secs(5), "api", "both servers UP", |v| {
        count_status(v, "UP") == 2
    })
    .await;
    // pod-b is in the rotation before its /health fails
    let before = tally(&bodies(&c, &format!("http://{listen}/"), 10).await);
    assert!(before.get("pod-b").is_some_and(|n| *n > 0), "{before:?}");
    b.stats.health_status.store(500, Ordering::SeqCst);
    // fall (2) * interval (300 ms) + one interval, + 10% jitter each: about
    // 1 s; the deadline leaves room for a loaded machine, and a proxy that
    // ignores the failing checks never gets there
    p.wait_server(Duration::from_secs(10), "api", b.addr, "DOWN")
        .await;
    // DOWN means out of the rotation: no request reaches it any more
    let b_at_down = b.requests();
    for _ in 0..50 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "pod-a"));
    }
    assert_eq!(
        b.requests(),
        b_at_down,
        "pod-b got traffic after it was marked DOWN"
    );
    let v = p.pool("api").await;
    let check = &server_in(&v, b.addr)["last_check"];
    assert_eq!(check["ok"], false, "{v}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap_or("")
            .contains("HTTP status 500"),
        "the reason is shown: {v}"
    );
    assert!(a.requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_trips_the_breaker_and_the_other_serves_everything() {
    let good = Backend::start("good", free_addr("127.0.0.2")).await;
    // accepts TCP, never answers
    let l = common::listen(free_addr("127.0.0.3")).await;
    let hang = l.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        }
    });
    let listen = free_addr("127.0.0.1");
    let extra = "server_timeout = \"300ms\"\n[pool.breaker]\nconsecutive_failures = 3\nejection_time = \"30s\"\n";
    let p = Proxy::start(
        &http_config(listen, extra, &[(good.addr, 1), (hang, 1)]),
        &[listen],
    )
    .await;
    let c = client();
    let mut timeouts = 0;
    let mut last_statuses = Vec::new();
    for _ in 0..40 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        if st == StatusCode::GATEWAY_TIMEOUT {
            timeouts += 1;
        } else {
            assert_eq!((st, body.as_str()), (StatusCode::OK, "good"));
        }
        last_statuses.push(st);
    }
    assert_eq!(
        timeouts, 3,
        "exactly consecutive_failures requests time out before the breaker opens"
    );
    assert!(last_statuses[10..].iter().all(|s| *s == StatusCode::OK));
    let v = p.pool("api").await;
    assert_eq!(
        server_in(&v, hang)["ejections"],
        1,
        "the breaker opened once: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_gives_503_at_once() {
    // Both servers are black holes (SYNs dropped): a connect would hang for the
    // whole connect_timeout. Health checks mark them DOWN first.
    let mut holes = Vec::new();
    let mut fillers = Vec::new();
    for ip in ["127.0.0.4", "127.0.0.5"] {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&free_addr(ip).into()).unwrap();
        sock.listen(0).unwrap();
        let addr: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        holes.push((sock, addr));
    }
    let listen = free_addr("127.0.0.1");
    let extra = "connect_timeout = \"5s\"\n[pool.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n";
    let p = Proxy::start(
        &http_config(listen, extra, &[(holes[0].1, 1), (holes[1].1, 1)]),
        &[listen],
    )
    .await;
    p.wait_pool(Duration::from_secs(5), "api", "both servers DOWN", |v| {
        count_status(v, "DOWN") == 2
    })
    .await;
    let c = client();
    for _ in 0..5 {
        let t0 = Instant::now();
        let resp = c
            .get(format!("http://{listen}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_unknown_and_get_no_traffic_before_their_first_check() {
    let a = Backend::start("a", free_addr("127.0.0.2")).await;
    a.stats.health_status.store(503, Ordering::SeqCst);
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(&http_config(listen, FAST_HEALTH, &[(a.addr, 1)]), &[listen]).await;
    p.wait_server(Duration::from_secs(5), "api", a.addr, "DOWN")
        .await;
    // it went DOWN without ever being UP: from UNKNOWN
    let v = p.pool("api").await;
    let s = server_in(&v, a.addr);
    assert_eq!(
        (s["went_up"].as_u64(), s["went_down"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    let (st, _) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        a.requests(),
        0,
        "a server that never passed a check got traffic"
    );
    assert!(a.stats.health_checks.load(Ordering::SeqCst) >= 1);
    a.stats.health_status.store(200, Ordering::SeqCst);
    p.wait_server(Duration::from_secs(5), "api", a.addr, "UP")
        .await;
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_every_primary_is_down() {
    let primary = Backend::start("primary", free_addr("127.0.0.2")).await;
    let backup = Backend::start("backup", free_addr("127.0.0.3")).await;
    let listen = free_addr("127.0.0.1");
    let mut cfg = http_config(listen, FAST_HEALTH, &[(primary.addr, 1)]);
    cfg.push_str(&format!(
        "  [[pool.server]]\n  address = \"{}\"\n  backup = true\n",
        backup.addr
    ));
    let p = Proxy::start(&cfg, &[listen]).await;
    p.wait_pool(
        Duration::from_secs(5),
        "api",
        "primary and backup UP",
        |v| {
            v["servers"]
                .as_array()
                .is_some_and(|ss| ss.len() == 2 && ss.iter().all(|s| s["health"] == "UP"))
        },
    )
    .await;
    let c = client();
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 20).await);
    assert_eq!(t.get("primary"), Some(&20), "{t:?}");

    primary.kill();
    // the first requests after the kill are retried onto the backup at once
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 20).await);
    assert_eq!(t.get("backup"), Some(&20), "{t:?}");
    p.wait_server(Duration::from_secs(5), "api", primary.addr, "DOWN")
        .await;

    let primary2 = Backend::start("primary", primary.addr).await;
    p.wait_server(Duration::from_secs(5), "api", primary.addr, "UP")
        .await;
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 20).await);
    assert_eq!(t.get("primary"), Some(&20), "{t:?}");
    assert_eq!(primary2.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_a_listed_status_goes_to_another_server_and_respects_methods() {
    let extra = "retry_on = [\"connect_failure\", \"reset\", \"503\"]";
    let (a, b, listen, _p) = two_pods_behind(extra).await;
    let c = client();
    // pod-a answers 503 to /status?code=503 ... and so does pod-b, so after one
    // retry the client sees the 503; each server saw the request once.
    let (st, _) = get(&c, &format!("http://{listen}/status?code=503")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((a.requests(), b.requests()), (1, 1));
    // a POST is not retried (not idempotent)
    let req = hyper::Request::post(format!("http://{listen}/status?code=503"))
        .body(empty())
        .unwrap();
    let (resp, _) = send(&c, req).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.requests() + b.requests(), 3);
}

/// A listed status sends the request to another server only with a slot on
/// it in hand: with the other server's only slot taken, the client gets the
/// server's own answer, not a 503 made up by rampart once the retry (the
/// answer already dropped) timed out in the queue. On the fast path and on
/// hyper's (h2c).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_retry_without_a_free_slot_gives_the_servers_own_answer() {
    let extra = "max_connections_per_server = 1\nqueue_timeout = \"1s\"\nretry_on = [\"503\"]";
    let (a, b, listen, p) = two_pods_behind(extra).await;
    // a slow request holds one server's only slot
    let slow_c = client();
    let slow =
        tokio::spawn(async move { get(&slow_c, &format!("http://{listen}/slow?ms=4000")).await });
    let active = |s: &Backend| s.stats.active.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(5), "the slow request in flight", || {
        active(&a) + active(&b) == 1
    })
    .await;
    let free = if active(&a) == 1 { &b } else { &a };
    for (c, proto) in [(client(), "HTTP/1.1"), (h2c_client(), "h2c")] {
        let (st, body) = get(&c, &format!("http://{listen}/status?code=503")).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{proto}: {body}");
        assert_eq!(body, free.name, "{proto}: the server's answer");
    }
    assert_eq!(p.pool("api").await["retries"], 0);
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    // with both slots free, the listed status goes to the other server
    wait_until(Duration::from_secs(5), "both slots free", || async {
        p.pool("api").await["active"] == 0
    })
    .await;
    let (st, _) = get(&client(), &format!("http://{listen}/status?code=503")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p.pool("api").await["retries"], 1);
}

/// A failure is retried (the retry counted, a token of the budget spent) only
/// when another server could take the request: a pool of one server whose
/// connect fails answers 502 and counts no retry. On the fast path and on
/// hyper's (h2c).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_with_no_other_server_counts_no_retry() {
    let dead = free_addr("127.0.0.4");
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(&http_config(listen, "", &[(dead, 1)]), &[listen]).await;
    for (c, proto) in [(client(), "HTTP/1.1"), (h2c_client(), "h2c")] {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(st, StatusCode::BAD_GATEWAY, "{proto}: {body}");
    }
    let v = p.pool("api").await;
    assert_eq!(v["retries"], 0, "{v}");
    assert_eq!(server_in(&v, dead)["retries"], 0, "{v}");
    assert_eq!(server_in(&v, dead)["total"], 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_after_a_connect_failure_with_its_body() {
    let dead = free_addr("127.0.0.4");
    let live = Backend::start("live", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    // round robin starts at the dead server; its connect fails before any byte is
    // sent, so even a POST with a streaming body can go to the other server
    let _p = Proxy::start(
        &http_config(listen, "", &[(dead, 1), (live.addr, 1)]),
        &[listen],
    )
    .await;
    let c = client();
    for _ in 0..4 {
        let body = http_body_util::BodyExt::boxed(Pattern::new(200_000));
        let req = hyper::Request::post(format!("http://{listen}/upload"))
            .body(body)
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("200000 {}", Pattern::checksum(200_000))
        );
    }
}

/// `retry_buffer` draws the line for bodies whatever way they go to the
/// server: one within it is kept and goes again on a listed status; one over
/// it is not, even when it came whole with its head (an HTTP/2 PUT of 10 KiB
/// goes to an HTTP/1.1 server as bytes) and rampart holds all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_retry_buffer_is_not_replayed_on_a_status_even_when_whole() {
    let extra = "retry_buffer = \"1KiB\"\nretry_on = [\"connect_failure\", \"reset\", \"503\"]";
    let (a, b, listen, _p) = two_pods_behind(extra).await;
    for (c, proto) in [(h2c_client(), "h2c"), (client(), "HTTP/1.1")] {
        for (size, tries) in [(500usize, 2usize), (10 * 1024, 1)] {
            let before = a.requests() + b.requests();
            let req = hyper::Request::put(format!("http://{listen}/status?code=503"))
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(vec![b'x'; size]),
                )))
                .unwrap();
            let (resp, _) = send(&c, req).await;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                a.requests() + b.requests() - before,
                tries,
                "{proto}, a body of {size} bytes"
            );
        }
    }
}

/// A body read whole (within `retry_buffer`) goes to an HTTP/1.1 server
/// after its head in one write of two parts, not copied behind the head: each
/// byte arrives in its place, also when the body is far larger than a socket
/// takes at once (the rest is written as the server reads), and again, whole,
/// when a listed status sends the request to the other server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_whole_reaches_the_server_in_order_and_again_on_a_retry() {
    let extra = "retry_buffer = \"8MiB\"\nretry_on = [\"connect_failure\", \"reset\", \"503\"]";
    let (a, b, listen, _p) = two_pods_behind(extra).await;
    for (c, proto) in [(client(), "HTTP/1.1"), (h2c_client(), "h2c")] {
        for size in [1usize, 3000, 4 * 1024 * 1024] {
            // no byte where a shifted copy would have it
            let body: Vec<u8> = (0..size)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
                .collect();
            let want = format!("{size} {:016x}", Fnv1a::of(&body));
            let body = bytes::Bytes::from(body);
            // round robin: of two requests, one at least starts at pod-a,
            // which answers 503 once it has read the body, and goes again to
            // pod-b
            let before = (a.requests(), b.requests());
            for _ in 0..2 {
                let req = hyper::Request::put(format!("http://{listen}/digest?fail=a"))
                    .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                        body.clone(),
                    )))
                    .unwrap();
                let (resp, got) = send(&c, req).await;
                assert_eq!(resp.status(), StatusCode::OK, "{proto}, {size} bytes");
                assert_eq!(String::from_utf8_lossy(&got), want, "{proto}, {size} bytes");
            }
            let (to_a, to_b) = (a.requests() - before.0, b.requests() - before.1);
            assert!(
                to_a >= 1 && to_b == 2,
                "{proto}, {size} bytes: pod-a got {to_a}, pod-b {to_b}"
            );
        }
    }
}
