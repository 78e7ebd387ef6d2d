//! Idle HTTP/1.1 connections parked outside their tasks (src/proxy/park.rs,
//! `park_idle_after`): a parked connection is still a connection (counted,
//! served again when its next request comes, under the config of the moment),
//! still bounded by its request_header_timeout, freed when its client goes, and
//! closed when its listener drains.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// common's one-listener config, with `listener_extra` in the listener.
fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    listener_extra: &str,
    backend: SocketAddr,
) -> String {
    let global = "threads = 1\nshutdown_grace = \"30s\"";
    http_config_at(listen, admin, global, "", &[(backend, 1)]).replacen(
        "pool = \"api\"\n",
        &format!("pool = \"api\"\n{listener_extra}\n"),
        1,
    )
}

/// Live tasks on all the proxy's runtimes (`rampart_runtime_alive_tasks`).
async fn alive_tasks(admin: SocketAddr) -> f64 {
    metrics(admin)
        .await
        .lines()
        .filter(|l| l.starts_with("rampart_runtime_alive_tasks{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").await.1
}

async fn parked(admin: SocketAddr) -> f64 {
    metric(&metrics(admin).await, "rampart_connections_parked ")
}

async fn wait_parked(admin: SocketAddr, n: f64) {
    wait_until(WAIT, &format!("{n} connections parked"), || async move {
        parked(admin).await == n
    })
    .await;
}

/// One GET on a keep-alive connection; the response's body.
async fn get_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(s).await
}

async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            if got.len() >= end + len {
                return String::from_utf8_lossy(&got[end..end + len]).into_owned();
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a full response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Reads until the proxy closes the connection; how long that took.
async fn wait_closed(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => t.elapsed(),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
        Err(_) => panic!("not closed within {WAIT:?}"),
    }
}

#[tokio::test]
async fn idle_connections_are_parked_and_served_again() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let b = Backend::start("b", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;
    let tasks_before = alive_tasks(admin).await;

    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(get_on(&mut s, "/").await, "a");
        conns.push(s);
    }
    wait_parked(admin, 20.0).await;
    // parked, they still hold their places under the connection limits, and
    // no task: the worker comes back to as many as before they came (its
    // parker runs from the start; the coarse timer that watched their first
    // requests ends a few ticks after them)
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "rampart_listener_connections{listener=\"web\"}"),
        20.0
    );
    wait_until(
        WAIT,
        "no more tasks than before the connections came",
        || async move { alive_tasks(admin).await <= tasks_before },
    )
    .await;
    assert_eq!(parked(admin).await, 20.0);

    // a parked connection follows a reload, like any other
    std::fs::write(&p.config, config(listen, admin, extra, b.addr)).unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{body}");

    for s in conns.iter_mut() {
        assert_eq!(get_on(s, "/").await, "b");
    }
    // a request head that arrives in pieces on a parked connection
    wait_parked(admin, 20.0).await;
    let s = &mut conns[0];
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    wait_until(WAIT, "the connection served again", || async move {
        parked(admin).await == 19.0
    })
    .await;
    s.write_all(b"st: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(s).await, "b");
    // two requests in one write (pipelined) on a parked connection
    wait_parked(admin, 20.0).await;
    let s = &mut conns[1];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(s).await, "b");
    assert_eq!(read_response(s).await, "b");

    wait_parked(admin, 20.0).await;
    let m = metrics(admin).await;
    assert!(
        metric(&m, "rampart_connections_parked_total ") >= 42.0,
        "{m}"
    );
    assert_eq!(b.requests(), 23);
}

#[tokio::test]
async fn a_connection_is_not_parked_before_its_first_request() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let _p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;
    // silent for three times park_idle_after: its first bytes may still be an
    // HTTP/2 preface, which only a connection's first request may be
    let mut s = TcpStream::connect(listen).await.unwrap();
    let t = Instant::now();
    wait_for(WAIT, "300 ms", || t.elapsed() >= Duration::from_millis(300)).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // the server's SETTINGS frame: type 4 on stream 0
    let mut head = [0u8; 9];
    tokio::time::timeout(WAIT, s.read_exact(&mut head))
        .await
        .expect("an HTTP/2 answer in time")
        .unwrap();
    assert_eq!(head[3], 4, "not a SETTINGS frame: {head:?}");
    let m = metrics(admin).await;
    assert_eq!(metric(&m, "rampart_connections_parked_total "), 0.0, "{m}");
}

#[tokio::test]
async fn a_parked_connection_closes_at_its_request_header_timeout() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"6s\"";
    let _p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;

    // idle all the way: closed by the parker
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut s, "/").await, "a");
    let answered = Instant::now();
    wait_parked(admin, 1.0).await;
    wait_closed(&mut s).await;
    let after = answered.elapsed();
    // (the margins: a loaded machine, not the mechanism)
    assert!(
        after >= Duration::from_millis(5500) && after < Duration::from_millis(7500),
        "closed {after:?} after the response (due at 6 s)"
    );
    wait_parked(admin, 0.0).await;

    // part of a head, sent while parked: the head is still due 6 s after the
    // response, not 6 s after the connection woke up
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut s, "/").await, "a");
    let answered = Instant::now();
    wait_parked(admin, 1.0).await;
    wait_for(WAIT, "3 s since the response", || {
        answered.elapsed() >= Duration::from_secs(3)
    })
    .await;
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // answered 408 (part of a head), then closed
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .expect("not closed in time")
        .unwrap();
    let after = answered.elapsed();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{all}");
    assert!(
        after >= Duration::from_millis(5500) && after < Duration::from_millis(7500),
        "closed {after:?} after the response (due at 6 s; a fresh timeout would give 9 s)"
    );
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "rampart_listener_connections{listener=\"web\"}"),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_closes_a_parked_connection_frees_its_place() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra =
        "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"\nmax_connections = 2";
    let _p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;

    let mut one = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut one, "/").await, "a");
    let mut two = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut two, "/").await, "a");
    wait_parked(admin, 2.0).await;
    drop(one);
    drop(two);
    wait_until(
        WAIT,
        "the listener's connections back to 0",
        || async move {
            let m = metrics(admin).await;
            metric(&m, "rampart_listener_connections{listener=\"web\"}") == 0.0
                && metric(&m, "rampart_connections_parked ") == 0.0
        },
    )
    .await;
    // both places are free again: two new connections are served at once
    let mut three = TcpStream::connect(listen).await.unwrap();
    let mut four = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut three, "/").await, "a");
    assert_eq!(get_on(&mut four, "/").await, "a");
}

#[tokio::test]
async fn parking_can_be_turned_off_per_listener() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let on = free_addr("127.0.0.1");
    let off = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[listener]]
name = "off"
bind = ["{off}"]
mode = "http"
pool = "api"
park_idle_after = "0s"
[[listener]]
name = "on"
bind = ["{on}"]
mode = "http"
pool = "api"
park_idle_after = "100ms"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{}"
"#,
        a.addr
    );
    let _p = Proxy::start(&cfg, &[on, off]).await;
    let mut s_on = TcpStream::connect(on).await.unwrap();
    assert_eq!(get_on(&mut s_on, "/").await, "a");
    wait_parked(admin, 1.0).await;
    // the one to "off", idle for five times what parked the other
    let mut s_off = TcpStream::connect(off).await.unwrap();
    assert_eq!(get_on(&mut s_off, "/").await, "a");
    let t = Instant::now();
    wait_for(WAIT, "500 ms", || t.elapsed() >= Duration::from_millis(500)).await;
    let m = metrics(admin).await;
    assert_eq!(metric(&m, "rampart_connections_parked_total "), 1.0, "{m}");
    assert_eq!(get_on(&mut s_off, "/").await, "a");
    assert_eq!(get_on(&mut s_on, "/").await, "a");
}

#[tokio::test]
async fn parked_connections_close_when_the_proxy_stops() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let mut p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(get_on(&mut s, "/").await, "a");
        conns.push(s);
    }
    wait_parked(admin, 5.0).await;
    let t = Instant::now();
    p.signal(libc::SIGTERM);
    for s in conns.iter_mut() {
        wait_closed(s).await;
    }
    let st = p.wait_exit(WAIT).await;
    assert!(st.success(), "{st}");
    // the idle connections' linger, not the 30 s shutdown_grace a connection
    // the drain did not reach would have held the stop for
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_deadline_left_behind_does_not_close_a_later_tenant() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let long = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"2s\"";
    // a second listener whose connection stays parked throughout: the parker
    // is never empty, so it never starts afresh (which would hide a deadline
    // that matched a slot's later tenant)
    let cfg = format!(
        "{}\n[[listener]]\nname = \"long\"\nbind = [\"{long}\"]\nmode = \"http\"\npool = \"api\"\n\
         park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"\n",
        config(listen, admin, extra, a.addr)
    );
    let _p = Proxy::start(&cfg, &[listen, long]).await;
    let mut bystander = TcpStream::connect(long).await.unwrap();
    assert_eq!(get_on(&mut bystander, "/").await, "a");
    wait_parked(admin, 1.0).await;

    // parked with a head due at 2 s, woken at 1 s, parked again: due at 3 s
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut s, "/").await, "a");
    let first = Instant::now();
    wait_parked(admin, 2.0).await;
    wait_for(WAIT, "1 s", || first.elapsed() >= Duration::from_secs(1)).await;
    assert_eq!(get_on(&mut s, "/").await, "a");
    wait_parked(admin, 2.0).await;
    wait_for(WAIT, "2.5 s", || {
        first.elapsed() >= Duration::from_millis(2500)
    })
    .await;
    // its first deadline has passed, and did not close it
    assert_eq!(get_on(&mut s, "/").await, "a");
    drop(s);
    wait_parked(admin, 1.0).await;

    // the same slot, a new tenant: the old one's deadline does not reach it
    let mut one = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut one, "/").await, "a");
    let t = Instant::now();
    wait_parked(admin, 2.0).await;
    // gone at 1 s (its head was due at 2 s); the next is due at 3 s or later
    wait_for(WAIT, "1 s", || t.elapsed() >= Duration::from_secs(1)).await;
    drop(one);
    wait_parked(admin, 1.0).await;
    let mut two = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut two, "/").await, "a");
    wait_parked(admin, 2.0).await;
    wait_for(WAIT, "2.5 s", || t.elapsed() >= Duration::from_millis(2500)).await;
    assert_eq!(get_on(&mut two, "/").await, "a");
    assert_eq!(get_on(&mut bystander, "/").await, "a");
}

#[tokio::test]
async fn many_parked_connections_wake_at_once() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let _p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;
    // more than the parker takes from its epoll in one call (256)
    let n = 600;
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(get_on(&mut s, "/").await, "a");
        conns.push(s);
    }
    wait_parked(admin, n as f64).await;
    for s in conns.iter_mut() {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
    }
    for s in conns.iter_mut() {
        assert_eq!(read_response(s).await, "a");
    }
    assert_eq!(a.requests(), 2 * n);
}

#[tokio::test]
async fn a_request_on_a_parked_connection_during_a_drain_is_served() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let mut p = Proxy::start(&config(listen, admin, extra, a.addr), &[listen]).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(get_on(&mut s, "/").await, "a");
    wait_parked(admin, 1.0).await;
    p.signal(libc::SIGTERM);
    // connections drain from "closing" on
    p.wait_phase(WAIT, "closing").await;
    // within the drain's one-second linger: answered, and told to close
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the answer, then the close, in time")
        .unwrap();
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with('a'), "{text}");
    let st = p.wait_exit(WAIT).await;
    assert!(st.success(), "{st}");
}

#[tokio::test]
async fn each_worker_parks_its_own_and_a_body_after_parking_goes_to_hyper() {
    let a = Backend::start("a", free_addr("127.0.0.1")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let extra = "park_idle_after = \"100ms\"\nrequest_header_timeout = \"60s\"";
    let cfg = config(listen, admin, extra, a.addr).replacen("threads = 1", "threads = 2", 1);
    let _p = Proxy::start(&cfg, &[listen]).await;
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(get_on(&mut s, "/").await, "a");
        conns.push(s);
    }
    wait_parked(admin, 40.0).await;
    // a request with a body is not the fast path's: a connection served again
    // after parking hands over to hyper as any other does
    for s in conns.iter_mut() {
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        assert_eq!(read_response(s).await, "3 294");
        assert_eq!(get_on(s, "/").await, "a");
    }
    assert_eq!(a.requests(), 120);
}
