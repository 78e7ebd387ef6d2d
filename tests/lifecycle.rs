//! Process lifecycle: graceful shutdown on SIGTERM.

mod common;

use common::*;
use hyper::StatusCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "shutdown_grace = \"10s\"",
        "shutdown_grace = \"10s\"\ndrain_delay = \"300ms\"",
    );
    let mut p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    let slow_c = c.clone();
    let slow =
        tokio::spawn(async move { get(&slow_c, &format!("http://{listen}/slow?ms=2500")).await });
    wait_for(Duration::from_secs(5), "the slow request in flight", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;

    p.signal(libc::SIGTERM);
    let t_term = Instant::now();
    // After the drain delay the listener closes: new connections are refused while
    // the slow request is still running.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(listen).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                break;
            }
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting 2 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        t_term.elapsed() >= Duration::from_millis(250),
        "stopped accepting before the drain delay"
    );
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited before the in-flight request finished"
    );

    let (st, body) = slow.await.unwrap();
    assert_eq!((st, body.as_str()), (StatusCode::OK, "b"));
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}: {}", p.stderr());
    assert!(
        p.stderr().contains("all connections finished"),
        "{}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_drain_keeps_serving_new_requests() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "shutdown_grace = \"10s\"",
        "shutdown_grace = \"10s\"\ndrain_delay = \"3s\"",
    );
    let mut p = Proxy::start(&cfg, &[listen]).await;
    p.signal(libc::SIGTERM);
    wait_for(Duration::from_secs(5), "the drain to begin", || {
        p.stderr().contains("draining")
    })
    .await;
    // during the drain delay new connections and requests are still served
    let (st, _) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::OK);
    // a second signal skips the rest of the drain
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
}
