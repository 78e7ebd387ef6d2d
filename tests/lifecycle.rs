//! Process lifecycle: graceful shutdown on SIGTERM.

mod common;

use common::*;
use hyper::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
            // refused; or reset, when the connection was in the listener's
            // backlog at the moment it closed (the kernel resets those)
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ),
                    "{e}"
                );
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
    p.wait_phase(Duration::from_secs(5), "draining").await;
    // during the drain delay new connections and requests are still served
    let (st, _) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::OK);
    // a second signal skips the rest of the drain
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
}

/// A stopping process refuses reloads and upgrades: a file watch or a SIGHUP
/// during the drain would bind new addresses in a process about to exit (and,
/// after a binary upgrade, tell systemd the old process is the main one
/// again); an upgrade would hand over sockets that the stop is closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_or_upgrade_during_the_drain_is_refused_and_changes_nothing() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let added = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "shutdown_grace = \"10s\"",
        "shutdown_grace = \"10s\"\ndrain_delay = \"20s\"",
    );
    let mut p = Proxy::start(&cfg, &[listen]).await;
    let generation = p.stats().await["config"]["generation"].as_u64();
    p.signal(libc::SIGTERM);
    p.wait_phase(Duration::from_secs(5), "draining").await;
    // a config with a second listener arrives during the drain
    let more = format!(
        "{cfg}\n[[listener]]\nname = \"more\"\nbind = [\"{added}\"]\nmode = \"http\"\npool = \"api\"\n"
    );
    std::fs::write(&p.config, more).unwrap();
    let (st, body) = admin_post(p.admin.unwrap(), "/api/reload", "").await;
    let r: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_ne!(r["ok"], true, "reloaded while stopping: {st} {body}");
    assert!(body.contains("shutting down"), "{st} {body}");
    assert_eq!(p.stats().await["config"]["generation"].as_u64(), generation);
    assert!(
        tokio::net::TcpStream::connect(added).await.is_err(),
        "the stopping process bound the new address"
    );
    let (st, body) = admin_post(p.admin.unwrap(), "/api/upgrade", "").await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_balances_between_its_two_backends() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut child = KillOnDrop(
        Command::new(rampart_bin())
            .args([
                "demo",
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout.take().unwrap();
    // read the banner on a thread; the demo prints it once it accepts connections
    let banner = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    });
    wait_for(Duration::from_secs(15), "the demo banner", || {
        banner.is_finished()
    })
    .await;
    let banner = banner.join().unwrap();
    assert!(banner.contains(&format!("http://{listen}/")), "{banner}");
    let c = client();
    let mut names = Vec::new();
    for _ in 0..4 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(st, StatusCode::OK);
        names.push(
            body.split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(names, ["backend-1", "backend-2", "backend-1", "backend-2"]);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, Duration::from_secs(10), "demo, on SIGTERM,").await;
    assert!(status.success());
}

#[test]
fn version_flag() {
    let out = std::process::Command::new(rampart_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    // the version, and the TLS provider it was built with
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "rampart {} (TLS: rustls with {})",
            env!("CARGO_PKG_VERSION"),
            // the package's features apply to its tests too
            if cfg!(feature = "aws-lc") {
                "aws-lc-rs"
            } else {
                "ring"
            }
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_open_tunnels() {
    let backend = Backend::start("ws", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let mut p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let mut tunnel = open_echo_tunnel(listen).await;
    echo_roundtrip(&mut tunnel, b"before").await;
    p.signal(libc::SIGTERM);
    p.wait_phase(Duration::from_secs(5), "closing").await;
    // the tunnel keeps working through the shutdown grace period
    echo_roundtrip(&mut tunnel, b"during shutdown").await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a tunnel still open"
    );
    drop(tunnel);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(
        p.stderr().contains("all connections finished"),
        "{}",
        p.stderr()
    );
}

/// One request on a new connection: whether it got a 200.
async fn fresh_get(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_budget_flips_readiness_first_serves_through_propagation_and_ends_within_budget() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    // 15 s: 3 s for endpoints to notice, 10.5 s for connections, 1.5 s of
    // margin (a propagation wait long enough to be told apart from a stop
    // that closes the listeners at once, even on a loaded machine)
    let cfg = http_config_at(
        listen,
        admin,
        "threads = 1\ndrain_budget = \"15s\"",
        "",
        &[(backend.addr, 1)],
    );
    let mut p = Proxy::start(&cfg, &[listen, admin]).await;
    let stats = p.stats().await;
    let split = &stats["config"]["shutdown"];
    assert_eq!(
        [
            &split["budget_secs"],
            &split["propagation_secs"],
            &split["connections_secs"],
            &split["margin_secs"]
        ],
        [15.0, 3.0, 10.5, 1.5],
        "{stats}"
    );
    wait_until(Duration::from_secs(10), "ready", || async {
        admin_get(admin, "/ready").await.0 == StatusCode::OK
    })
    .await;
    // in flight across the stop, past the propagation wait: a slow request
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &format!("http://{listen}/slow?ms=5000")).await }
    });
    wait_for(Duration::from_secs(5), "the slow request in flight", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    // steady load: a new connection per request, as new clients would come,
    // until `stop`
    let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (results, stop) = (Arc::clone(&results), Arc::clone(&stop));
        async move {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let ok = fresh_get(listen).await;
                results.lock().unwrap().push((sent, ok));
            }
        }
    });
    wait_for(Duration::from_secs(5), "load before the stop", || {
        results.lock().unwrap().len() >= 5
    })
    .await;
    p.signal(libc::SIGTERM);
    let t0 = Instant::now();
    // readiness goes 503 first, within the propagation wait
    wait_until(Duration::from_secs(3), "/ready 503", || async {
        admin_get(admin, "/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // after the propagation wait (3 s), new connections are turned away (the
    // listeners are closed): once they are, every new request fails
    wait_for(
        Duration::from_secs(10),
        "listeners closed after the propagation wait",
        || {
            results
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(sent, ok)| *sent > t0 + Duration::from_secs(3) && !ok)
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let results = results.lock().unwrap().clone();
    // no request failed during the propagation wait (3 s after SIGTERM): those
    // sent in its first 2 s all succeeded
    let during: Vec<bool> = results
        .iter()
        .filter(|(sent, _)| *sent < t0 + Duration::from_secs(2))
        .map(|(_, ok)| *ok)
        .collect();
    assert!(during.len() > 10, "{} requests", during.len());
    assert!(
        during.iter().all(|ok| *ok),
        "a request failed while endpoints were still noticing"
    );
    let (st, body) = slow.await.unwrap();
    assert_eq!((st, body.as_str()), (StatusCode::OK, "b"));
    // the process is gone within the budget
    let status = p.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}
