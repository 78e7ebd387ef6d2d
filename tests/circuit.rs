//! The pool-level circuit (`[pool.circuit]`): a backend failing 60% of requests
//! opens it within the window; requests then fail fast (503 with Retry-After,
//! never reaching the backend); after `open_for` one trial that succeeds closes it.

mod common;

use common::*;
use hyper::StatusCode;
use std::time::Duration;

async fn circuit_state(admin: std::net::SocketAddr) -> String {
    let v = pool_view(admin, "api").await;
    v["circuit"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pool_opens_its_circuit_fails_fast_and_a_trial_closes_it() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let extra = "retries = 0\n  [pool.circuit]\n  failure_rate = 50\n  window = \"10s\"\n  min_requests = 20\n  open_for = \"10s\"\n";
    let global = "threads = 1\naccess_log = \"text\"\n";
    let p = Proxy::start(
        &http_config_at(listen, admin, global, extra, &[(backend.addr, 1)]),
        &[listen],
    )
    .await;
    let c = client();
    assert_eq!(circuit_state(admin).await, "closed");

    // 60% of requests fail (the server answers 500): the circuit opens within
    // the window, as soon as 20 requests are in
    let mut sent = 0;
    let mut first_503 = None;
    for i in 0..100 {
        let path = if i % 5 < 3 { "/status?code=500" } else { "/" };
        let (st, _) = get(&c, &format!("http://{listen}{path}")).await;
        sent += 1;
        if st == StatusCode::SERVICE_UNAVAILABLE {
            first_503 = Some(i);
            break;
        }
    }
    let opened_at = first_503.expect("the circuit never opened");
    assert!(
        (20..=30).contains(&opened_at),
        "opened after {opened_at} requests"
    );
    assert_eq!(circuit_state(admin).await, "open");
    let reached = backend.requests();
    assert_eq!(reached, sent - 1, "the 503 was rampart's");

    // open: 200 requests fail fast with 503 + Retry-After, none reaches the
    // server (open_for is long enough that even a slow run of this loop
    // stays within it: no trial goes half-open mid-loop)
    for _ in 0..200 {
        let resp = c
            .get(format!("http://{listen}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ra: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // what is left of open_for, in whole seconds (at least 1)
        assert!((1..=10).contains(&ra), "Retry-After {ra}");
    }
    assert_eq!(backend.requests(), reached, "requests reached the server");
    // each is logged as the circuit's answer (that the server saw none of
    // them is what proves they failed fast; no latency bound on a loaded CI)
    wait_for(Duration::from_secs(5), "log lines", || {
        p.stdout().matches("end=circuit_open").count() >= 201
    })
    .await;
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric(&metrics, "rampart_pool_circuit_state{pool=\"api\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "rampart_pool_circuit_opened_total{pool=\"api\"}"),
        1.0
    );

    // after open_for, one trial goes through; it succeeds: closed again
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        if st == StatusCode::OK {
            assert_eq!(body, "pod");
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(std::time::Instant::now() < deadline, "no trial within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(circuit_state(admin).await, "closed");
    for _ in 0..10 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
}
