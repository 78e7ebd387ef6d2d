//! HTTP mode over real sockets: balancing, streaming, errors, headers, h2c, upgrades.

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_evenly() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "balance = \"round_robin\"",
            &[(a.addr, 1), (b.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let t = tally(&bodies(&client(), &format!("http://{listen}/"), 100).await);
    assert_eq!(t.get("pod-a"), Some(&50), "{t:?}");
    assert_eq!(t.get("pod-b"), Some(&50), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_three() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(listen, "", &[(a.addr, 1), (b.addr, 3)]),
        &[listen],
    )
    .await;
    let t = tally(&bodies(&client(), &format!("http://{listen}/"), 100).await);
    assert_eq!(
        (t.get("pod-a"), t.get("pod-b")),
        (Some(&25), Some(&75)),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_the_busy_server() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "balance = \"least_conn\"",
            &[(a.addr, 1), (b.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let c = client();
    let slow_url = format!("http://{listen}/slow?ms=3000");
    let slow_client = c.clone();
    let slow = tokio::spawn(async move { get(&slow_client, &slow_url).await });
    wait_for(
        Duration::from_secs(5),
        "the slow request to reach a backend",
        || a.stats.active.load(Ordering::SeqCst) + b.stats.active.load(Ordering::SeqCst) == 1,
    )
    .await;
    let idle = if a.stats.active.load(Ordering::SeqCst) == 1 {
        "pod-b"
    } else {
        "pod-a"
    };
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 10).await);
    assert_eq!(
        t.get(idle),
        Some(&10),
        "all new requests go to the idle server: {t:?}"
    );
    let (st, _) = slow.await.unwrap();
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_up_and_down_stream_without_buffering() {
    let backend = Backend::start("big", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let c = client();
    // warm up: buffers, the pooled connection, the runtime
    for _ in 0..3 {
        let (_, body) = send(
            &c,
            Request::post(format!("http://{listen}/upload"))
                .body(BodyExt::boxed(Pattern::new(256 * 1024)))
                .unwrap(),
        )
        .await;
        assert!(body.starts_with(b"262144 "));
        let (resp, body) = send(
            &c,
            Request::get(format!("http://{listen}/big?bytes=262144"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!((resp.status(), body.len()), (StatusCode::OK, 262_144));
    }
    let before = p.peak_rss_kib();

    const TEN_MIB: u64 = 10 * 1024 * 1024;
    let (resp, body) = send(
        &c,
        Request::post(format!("http://{listen}/upload"))
            .body(BodyExt::boxed(Pattern::new(TEN_MIB)))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{TEN_MIB} {}", Pattern::checksum(TEN_MIB))
    );

    let resp = c
        .get(
            format!("http://{listen}/big?bytes={TEN_MIB}")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
            sum = d.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
    }
    assert_eq!((n, sum), (TEN_MIB, Pattern::checksum(TEN_MIB)));

    let growth_kib = p.peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS before {before} KiB, growth {growth_kib} KiB");
    assert!(
        growth_kib < 4 * 1024,
        "peak RSS grew by {growth_kib} KiB while streaming 2 x 10 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_gives_502_fast() {
    // nothing listens there: connection refused
    let dead = free_addr("127.0.0.4");
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &http_config(listen, "connect_timeout = \"2s\"", &[(dead, 1)]),
        &[listen],
    )
    .await;
    let t0 = Instant::now();
    let (st, body) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY);
    assert!(body.contains("pool \"api\""), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    wait_for(
        Duration::from_secs(5),
        "an access log line with end=connect_error",
        || p.stdout().contains("status=502") && p.stdout().contains("end=connect_error"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_gives_502_after_connect_timeout() {
    // A listener that never accepts, with its accept queue full: further SYNs are
    // dropped and a connect hangs until the proxy's connect_timeout.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&free_addr("127.0.0.5").into()).unwrap();
    sock.listen(0).unwrap();
    let black_hole: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(black_hole)).await
        {
            fillers.push(s);
        }
    }
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(listen, "connect_timeout = \"700ms\"", &[(black_hole, 1)]),
        &[listen],
    )
    .await;
    let t0 = Instant::now();
    let (st, body) = get(&client(), &format!("http://{listen}/")).await;
    let took = t0.elapsed();
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        took >= Duration::from_millis(650),
        "gave up before connect_timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_queues_then_503_after_queue_timeout() {
    let backend = Backend::start("one", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "max_connections_per_server = 1\nqueue_timeout = \"500ms\"",
            &[(backend.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let c = client();
    let slow_c = c.clone();
    let slow =
        tokio::spawn(async move { get(&slow_c, &format!("http://{listen}/slow?ms=4000")).await });
    wait_for(Duration::from_secs(5), "the slow request in flight", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let t0 = Instant::now();
    let resp = c
        .get(format!("http://{listen}/").parse().unwrap())
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(
        took < Duration::from_millis(3500),
        "answered before the slow one ended? {took:?}"
    );
    assert_eq!(
        backend.requests(),
        1,
        "the queued request never reached the backend"
    );
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    // with the slot free again, requests are served
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_request_is_served_when_a_slot_frees() {
    let backend = Backend::start("one", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "max_connections_per_server = 1\nqueue_timeout = \"10s\"",
            &[(backend.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let c = client();
    let slow_c = c.clone();
    let slow =
        tokio::spawn(async move { get(&slow_c, &format!("http://{listen}/slow?ms=500")).await });
    wait_for(Duration::from_secs(5), "the slow request in flight", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let (st, _) = get(&c, &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    assert_eq!(backend.requests(), 2);
    // the second request waited for the slot instead of going alongside
    assert_eq!(backend.stats.max_active.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_response_gives_504_after_server_timeout() {
    let backend = Backend::start("slow", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(listen, "server_timeout = \"400ms\"", &[(backend.addr, 1)]),
        &[listen],
    )
    .await;
    let t0 = Instant::now();
    let (st, body) = get(&client(), &format!("http://{listen}/slow?ms=3000")).await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(t0.elapsed() >= Duration::from_millis(350));
}

/// A server that reads a request's head and then stops reading its upload (a
/// lock, a GC pause) gets server_timeout, as an answer that does not come
/// does: 504, and the server's slot freed. Before, the upload hung for ever
/// (hyper stops polling a body it cannot flush, so no timer ran), holding the
/// server's slot and, were it a breaker's trial, the server out of rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_an_upload_gets_server_timeout() {
    let sink = tokio::net::TcpListener::bind(free_addr("127.0.0.2"))
        .await
        .unwrap();
    let backend = sink.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut buf).await.unwrap_or(0) == 0 {
                return s;
            }
            head.push(buf[0]);
        }
        // ... and reads no more, holding the connection open
        s
    });
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "server_timeout = \"1s\"\nretries = 0",
            &[(backend, 1)],
        ),
        &[listen],
    )
    .await;
    let size: usize = 256 << 20;
    let s = TcpStream::connect(listen).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'u'; 64 << 10];
        for _ in 0..size / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no answer after {:?} ({other:?}): {:?}",
                t0.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    writer.abort();
    drop(held);
}

/// The other side of the same timer: a client that pauses its upload for
/// longer than server_timeout (within client_timeout) is not the server's
/// fault; the server reads all it is given, and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pausing_its_upload_past_server_timeout_is_still_served() {
    let backend = Backend::start("up", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "server_timeout = \"500ms\"\nretry_buffer = \"1KiB\"",
            &[(backend.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    let half = vec![b'u'; 100_000];
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&half).await.unwrap();
    // a pause of three server_timeouts, the client's doing
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(&half).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("200000 ") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_hop_by_hop() {
    let backend = Backend::start("h", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    // hyper's path (h2c) drops a client's Forwarded too, as the fast path does
    let req = Request::get(format!("http://{listen}/x?y=1"))
        .header("forwarded", "for=192.0.2.1;host=evil.example;proto=https")
        .body(empty())
        .unwrap();
    let (resp, _) = send(&h2c_client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert_eq!(h["x-forwarded-proto"], "http");
    let req = Request::get(format!("http://{listen}/x?y=1"))
        .header("host", "shop.example.com")
        .header("forwarded", "for=192.0.2.1;host=evil.example;proto=https")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let (resp, _) = send(&client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["host"], "shop.example.com");
    assert_eq!(h["x-end-to-end"], "kept");
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert!(
        !h.contains_key("x-secret"),
        "a header named by Connection is hop-by-hop"
    );
    assert!(!h.contains_key("te"));
    assert_eq!(
        backend.stats.last_uri.lock().unwrap().as_deref(),
        Some("/x?y=1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_kept_alive_and_reused() {
    let backend = Backend::start("ka", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let c = client();
    for _ in 0..30 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(backend.requests(), 30);
    assert_eq!(
        backend.stats.connections.load(Ordering::SeqCst),
        1,
        "sequential requests share one backend connection"
    );
}

/// A scripted HTTP/1.1 backend: the response to each request is chosen by its
/// path, written as raw bytes (any framing), on connections it counts.
async fn framing_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = listen(free_addr("127.0.0.1")).await;
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 8192];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    got.drain(..end + 4);
                    let mut line = head.split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
                    let (resp, close): (Vec<u8>, bool) = match path {
                        "/chunked" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: x-hop\r\nx-hop: 1\r\nx-end: 2\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(), false),
                        "/length" if method == "HEAD" => (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n".to_vec(), false),
                        "/length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nkeep-alive: timeout=30\r\n\r\nhello world".to_vec(), false),
                        "/interim" => (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
                        "/nocontent" => (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(), false),
                        "/big" => {
                            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
                            r.extend_from_slice(&big);
                            (r, false)
                        }
                        "/close" => (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end".to_vec(), true),
                        "/gzip-coded" if method == "HEAD" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_vec(), false),
                        "/gzip-coded" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), false),
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ncut short".to_vec(), true),
                    };
                    // in pieces, so the body also arrives apart from its head
                    for piece in resp.chunks(4096) {
                        if s.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// An HTTP/2 client's request to an HTTP/1.1 server goes as bytes on a pooled
/// socket and its response comes back decoded, whatever the framing: chunked
/// (extensions dropped, and trailers unless the client takes them), a length,
/// or until the server closes.
/// Hop-by-hop fields and those Connection names stay behind; a connection whose
/// response ended where its framing said is used again; a body cut short
/// reaches the client as an error, not as a complete body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_get_http11_responses_of_every_framing() {
    let (backend, conns) = framing_backend().await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend, 1)]), &[listen]).await;
    let c = h2c_client();
    let url = |p: &str| format!("http://{listen}{p}");
    let req = |m: &str, p: &str| {
        Request::builder()
            .method(m)
            .uri(url(p))
            .body(empty())
            .unwrap()
    };
    for _ in 0..3 {
        let (r, body) = send(&c, req("GET", "/chunked")).await;
        assert_eq!(
            (r.status(), &body[..]),
            (StatusCode::OK, &b"hello, world"[..])
        );
        let h = r.headers();
        assert!(
            h.get("transfer-encoding").is_none() && h.get("x-hop").is_none(),
            "{h:?}"
        );
        assert_eq!(h["x-end"], "2");
        let (r, body) = send(&c, req("GET", "/length")).await;
        assert_eq!(&body[..], b"hello world");
        assert_eq!(r.headers()["content-length"], "11");
        assert!(r.headers().get("keep-alive").is_none());
        let (r, body) = send(&c, req("HEAD", "/length")).await;
        assert_eq!((r.status(), body.len()), (StatusCode::OK, 0));
        assert_eq!(r.headers()["content-length"], "11");
        let (r, body) = send(&c, req("GET", "/nocontent")).await;
        assert_eq!((r.status(), body.len()), (StatusCode::NO_CONTENT, 0));
        let (r, body) = send(&c, req("GET", "/interim")).await;
        assert_eq!((r.status(), &body[..]), (StatusCode::OK, &b"ok"[..]));
        let (_, body) = send(&c, req("GET", "/big")).await;
        assert_eq!(body.len(), 300_000);
        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "every response ended where its framing said: one backend connection"
    );
    // a client that takes trailers gets them (through hyper's client, on a
    // connection of its own), and an answer that ended in its trailers gives
    // that connection back: the second one is sent on it
    for _ in 0..2 {
        let mut r = req("GET", "/chunked");
        r.headers_mut().insert("te", "trailers".parse().unwrap());
        let got = c
            .request(r)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let trailers = got.trailers().cloned().unwrap_or_default();
        assert_eq!(&got.to_bytes()[..], b"hello, world");
        assert_eq!(
            trailers.get("x-trailer").map(|v| v.as_bytes()),
            Some(&b"t"[..])
        );
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "a response whose trailers went to the client ended its exchange"
    );
    let (r, body) = send(&c, req("GET", "/close")).await;
    assert_eq!(
        (r.status(), &body[..]),
        (StatusCode::OK, &b"until the end"[..])
    );
    // a body cut short must not look complete: the stream is reset, after the
    // head or, when the close comes with it, before the head went out
    let got = match c.request(req("GET", "/short")).await {
        Ok(resp) => resp
            .into_body()
            .collect()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        Err(e) => Err(format!("{e:?}")),
    };
    assert!(
        got.is_err(),
        "a body cut short must not look complete: {got:?}"
    );
    // the closed connections were not pooled: the next request opens another
    let before = conns.load(Ordering::SeqCst);
    let (_, body) = send(&c, req("GET", "/length")).await;
    assert_eq!(&body[..], b"hello world");
    assert_eq!(conns.load(Ordering::SeqCst), before + 1);
    // a transfer coding other than chunked: rampart decodes the chunked
    // framing only, and an HTTP/2 answer has no Transfer-Encoding to say the
    // rest: 502, not coded bytes passed off as the body. An HTTP/1.1 client
    // on the fast path gets the field as it came.
    let (r, _) = send(&c, req("GET", "/gzip-coded")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    // a HEAD's answer carries the field its GET would, and no body: passed
    let (r, body) = send(&c, req("HEAD", "/gzip-coded")).await;
    assert_eq!((r.status(), body.len()), (StatusCode::OK, 0));
    let (r, body) = send(&client(), req("GET", "/gzip-coded")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["transfer-encoding"], "gzip, chunked");
    assert_eq!(&body[..], b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_reach_http11_backends() {
    let backend = Backend::start("h2", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let c = h2c_client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            get(&c, &format!("http://{listen}/slow?ms=50&i={i}")).await
        }));
    }
    for t in tasks {
        let (st, body) = t.await.unwrap();
        assert_eq!((st, body.as_str()), (StatusCode::OK, "h2"));
    }
    assert_eq!(
        *backend.stats.last_version.lock().unwrap(),
        Some(hyper::Version::HTTP_11)
    );
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(
        h["host"],
        listen.to_string().as_str(),
        "the :authority becomes the Host header"
    );
    assert!(backend
        .stats
        .last_uri
        .lock()
        .unwrap()
        .as_deref()
        .unwrap()
        .starts_with("/slow?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path() {
    let default = Backend::start("default", free_addr("127.0.0.2")).await;
    let v1 = Backend::start("v1", free_addr("127.0.0.3")).await;
    let wild = Backend::start("wild", free_addr("127.0.0.4")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        r#"[admin]
bind = "{admin}"
[global]
threads = 1
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "default"
  [[listener.route]]
  host = "api.example.com"
  path_prefix = "/v1"
  pool = "v1"
  [[listener.route]]
  host = "*.example.com"
  pool = "wild"
[[pool]]
name = "default"
  [[pool.server]]
  address = "{}"
[[pool]]
name = "v1"
  [[pool.server]]
  address = "{}"
[[pool]]
name = "wild"
  [[pool.server]]
  address = "{}"
"#,
        default.addr, v1.addr, wild.addr
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    for (host, path, want) in [
        ("api.example.com", "/v1/users", "v1"),
        ("API.example.com:80", "/v1", "v1"),
        ("api.example.com", "/v2", "wild"),
        ("www.example.com", "/v1", "wild"),
        ("example.com", "/v1", "default"),
        ("other.org", "/", "default"),
    ] {
        let req = Request::get(format!("http://{listen}{path}"))
            .header("host", host)
            .body(empty())
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(String::from_utf8_lossy(&body), want, "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_tunnelled() {
    let backend = Backend::start("ws", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let mut s = open_echo_tunnel(listen).await;
    for msg in [&b"ping"[..], b"second message", &[0u8, 255, 10, 13]] {
        echo_roundtrip(&mut s, msg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "pool = \"api\"\n\n[[pool]]",
        "pool = \"api\"\nrequest_header_timeout = \"500ms\"\n\n[[pool]]",
    );
    assert!(cfg.contains("request_header_timeout"));
    let _p = Proxy::start(&cfg, &[listen]).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    // the proxy must close the connection; read_to_end returns then
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "connection still open 5 s after a partial header"
    );
    assert!(t0.elapsed() >= Duration::from_millis(400));
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_keeps_excess_connections_waiting_not_refused() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)])
        .replace("threads = 1", "threads = 1\nmax_connections = 1");
    excess_connections_wait(&cfg, listen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_limit_keeps_excess_connections_waiting_not_refused() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "pool = \"api\"\n\n[[pool]]",
        "pool = \"api\"\nmax_connections = 1\n\n[[pool]]",
    );
    assert!(cfg.contains("max_connections = 1"));
    excess_connections_wait(&cfg, listen).await;
}

/// With a limit of one connection, a second connection is accepted by the kernel but
/// served only once the first closes.
async fn excess_connections_wait(cfg: &str, listen: SocketAddr) {
    let _p = Proxy::start(cfg, &[]).await;
    // wait for the listener without using up the single slot for long
    wait_listening(listen, Duration::from_secs(10)).await;
    let mut first = TcpStream::connect(listen).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    // the second connection completes its TCP handshake (backlog) but is not served
    let mut second = TcpStream::connect(listen)
        .await
        .expect("excess connections wait; they are not refused");
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), second.read_to_end(&mut got)).await;
    assert!(
        early.is_err(),
        "served beyond max_connections: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut got))
        .await
        .expect("served after the first closed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// Waits until `addr` accepts, closing each probe connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_line_per_request() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)])
        .replace("access_log = \"text\"", "access_log = \"json\"");
    let p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    let (resp, _) = send(
        &c,
        Request::post(format!("http://{listen}/upload"))
            .body(http_body_util::BodyExt::boxed(Pattern::new(1000)))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    get(&c, &format!("http://{listen}/status?code=404")).await;
    get(&c, &format!("http://{listen}/slow?ms=200")).await;
    wait_for(Duration::from_secs(5), "three access log lines", || {
        p.stdout().lines().count() >= 3
    })
    .await;
    let lines: Vec<serde_json::Value> = p
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let l = lines
        .iter()
        .find(|l| l["path"] == "/status?code=404")
        .expect("line for the 404");
    assert_eq!(l["status"], 404);
    assert_eq!(l["pool"], "api");
    assert_eq!(l["listener"], "web");
    assert_eq!(l["server"], backend.addr.to_string());
    assert_eq!(l["end"], "ok");
    // the request's time: a number, at least what the server took
    let total = l["total_ms"].as_f64().unwrap();
    assert!(total.is_finite() && total >= 0.0, "{l}");
    let slow = lines
        .iter()
        .find(|l| l["path"] == "/slow?ms=200")
        .expect("line for the slow request");
    assert!(slow["total_ms"].as_f64().unwrap() >= 190.0, "{slow}");
    let up = lines
        .iter()
        .find(|l| l["path"] == "/upload")
        .expect("line for the upload");
    assert_eq!(
        (up["method"].as_str(), up["bytes_in"].as_u64()),
        (Some("POST"), Some(1000))
    );
    assert_eq!(
        up["bytes_out"].as_u64(),
        Some(format!("1000 {}", Pattern::checksum(1000)).len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_backend() {
    let backend = Backend::start("v6", free_addr("::1")).await;
    let v4 = free_addr("127.0.0.1");
    let v6 = free_addr("::1");
    let cfg = http_config(v4, "", &[(backend.addr, 1)]).replace(
        &format!("bind = [\"{v4}\"]"),
        &format!("bind = [\"{v4}\", \"{v6}\"]"),
    );
    assert!(cfg.contains(&v6.to_string()));
    let _p = Proxy::start(&cfg, &[v4, v6]).await;
    let c = client();
    for url in [format!("http://{v4}/"), format!("http://{v6}/")] {
        let (st, body) = get(&c, &url).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "v6"), "{url}");
    }
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "::1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_connections_are_closed_after_keepalive_timeout() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "keepalive_timeout = \"300ms\"",
            &[(backend.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let c = client();
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
    assert_eq!(backend.stats.connections.load(Ordering::SeqCst), 1);
    // the proxy closes its idle connection to the backend by itself
    wait_for(
        Duration::from_secs(5),
        "the idle backend connection to close",
        || backend.stats.closed.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
    assert_eq!(backend.stats.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_after_the_header_timeout() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let cfg = http_config(listen, "", &[(backend.addr, 1)]).replace(
        "pool = \"api\"\n\n[[pool]]",
        "pool = \"api\"\nrequest_header_timeout = \"500ms\"\n\n[[pool]]",
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    // nothing at all, and half of the HTTP/2 preface: both are cut off
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            r.is_ok(),
            "a silent connection ({first:?}) is still open after 5 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_method_is_refused() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_cookies_are_joined_and_xff_lines_merged() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let req = Request::get(format!("http://{listen}/"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-forwarded-for", "203.0.113.1")
        .header("x-forwarded-for", "203.0.113.2")
        .body(empty())
        .unwrap();
    let (resp, _) = send(&h2c_client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    let cookies: Vec<_> = h.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
    assert_eq!(h["x-forwarded-for"], "203.0.113.1, 203.0.113.2, 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_an_upload_is_not_reused() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(
            listen,
            "connect_timeout = \"5s\"\nretries = 0",
            &[(backend.addr, 1)],
        ),
        &[listen],
    )
    .await;
    let c = client();
    // The client keeps sending an upload the backend already answered (413).
    let (tx, body) = ChannelBody::new();
    let req = Request::post(format!("http://{listen}/reject"))
        .header("content-length", "10000000")
        .body(BodyExt::boxed(body))
        .unwrap();
    let uploader = tokio::spawn(async move {
        for _ in 0..5 {
            if tx.send(bytes::Bytes::from(vec![b'x'; 1000])).await.is_err() {
                break;
            }
        }
        // ... and then stalls, keeping the request unfinished
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tx);
    });
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(resp);
    // The next request must not wait behind the unfinished upload.
    let t0 = Instant::now();
    let (st, _) = get(&c, &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "waited {:?} for a busy connection",
        t0.elapsed()
    );
    uploader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_stale_pooled_connection_is_replayed() {
    let be = start_one_shot_backend(free_addr("127.0.0.2"), "").await;
    let listen = free_addr("127.0.0.1");
    // retries = 0: the replay on a fresh connection is not a retry on another server
    let _p = Proxy::start(
        &http_config(listen, "retries = 0", &[(be.addr, 1)]),
        &[listen],
    )
    .await;
    let c = client();
    for i in 0..4 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::OK, "first"),
            "request {i}"
        );
    }
    // Requests 2-4 each met the pooled connection the backend then refused, and
    // were replayed on a new one.
    assert_eq!(be.refused.load(Ordering::SeqCst), 3);
    assert_eq!(be.conns.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_keep_alive_timeout_is_honoured() {
    // The backend allows 1 s idle: with a second of margin, nothing is pooled, so
    // every request opens a new connection and never meets a closing one.
    let be = start_one_shot_backend(free_addr("127.0.0.2"), "keep-alive: timeout=1\r\n").await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &http_config(listen, "retries = 0", &[(be.addr, 1)]),
        &[listen],
    )
    .await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(be.conns.load(Ordering::SeqCst), 3);
    // no request met a connection the backend was closing (it was never pooled)
    assert_eq!(be.refused.load(Ordering::SeqCst), 0);
}

/// X-Forwarded-* come from one rewriter on both paths: a client's own
/// X-Forwarded-Host and -Proto never reach the backend, with or without a Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_forwarded_host_and_proto_never_reach_the_backend_on_either_path() {
    let backend = Backend::start("h", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let spoof = "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n";
    // (what is sent, which path takes it, the X-Forwarded-Host the backend must see)
    let cases = [
        // HTTP/1.0 without Host: hyper's path; the backend gets no X-Forwarded-Host
        (format!("GET /a HTTP/1.0\r\n{spoof}\r\n"), "hyper, HTTP/1.0, no Host", None),
        // a bodiless HTTP/1.1 request: the fast path
        (
            format!("GET /b HTTP/1.1\r\nHost: shop.example\r\n{spoof}Connection: close\r\n\r\n"),
            "fast path",
            Some("shop.example"),
        ),
        // a request with a body: hyper's path
        (
            format!("POST /c HTTP/1.1\r\nHost: shop.example\r\n{spoof}Content-Length: 2\r\nConnection: close\r\n\r\nhi"),
            "hyper, with a body",
            Some("shop.example"),
        ),
    ];
    for (req, path, want_host) in cases {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1."), "{path}");
        assert!(
            String::from_utf8_lossy(&out).contains(" 200 "),
            "{path}: {}",
            String::from_utf8_lossy(&out)
        );
        let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(
            h.get("x-forwarded-host").map(|v| v.to_str().unwrap()),
            want_host,
            "{path}"
        );
        assert_eq!(
            h.get_all("x-forwarded-host").iter().count(),
            usize::from(want_host.is_some()),
            "{path}"
        );
        assert_eq!(h["x-forwarded-proto"], "http", "{path}");
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1, "{path}");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{path}");
    }
}

/// A request that hyper's path serves (its body is past the 16 KiB the fast
/// path reads with a head) gets a long answer whole and in order, sized or
/// chunked by the server: read from the server into buffers it is split from
/// (not copied out of), and written to the client where it lies (writev), a
/// short answer behind its head in one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_fast_path_gets_a_long_answer_whole_and_in_order() {
    let backend = Backend::start("big", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend.addr, 1)]), &[listen]).await;
    let c = client();
    for (n, chunked) in [(3 * 1024 * 1024 + 7, 0), (3 * 1024 * 1024 + 7, 1), (10, 1)] {
        let req = Request::post(format!("http://{listen}/big?bytes={n}&chunked={chunked}"))
            .body(BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from(vec![b'u'; 20 * 1024]),
            )))
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body.len(), n, "chunked={chunked}");
        assert!(
            body.iter().enumerate().all(|(k, &b)| b == (k % 251) as u8),
            "{n} bytes, chunked={chunked}: not the backend's pattern in order"
        );
    }
}

/// Reads from `c` until a response head is in; all that was read.
async fn read_head(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A server that answers a connection's first request, kept alive, and closes
/// the connection `after` the next one comes.
async fn closes_the_next_request(after: Duration) -> SocketAddr {
    let sink = tokio::net::TcpListener::bind(free_addr("127.0.0.2"))
        .await
        .unwrap();
    let backend = sink.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(after).await;
            });
        }
    });
    backend
}

/// The keep-alive race: a server closes a kept-alive connection just as a
/// request goes out on it (its idle timeout is shorter than ours). A request
/// that may not be replayed (a POST) fails with 502, as nothing says it did not
/// reach the application; but the server did nothing wrong, and its breaker
/// (here ejecting at the first failure) does not count it. Before, each such
/// race counted as a failure, and a burst after a server's idle sweep ejected a
/// healthy server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keepalive_race_is_not_held_against_the_server() {
    let backend = closes_the_next_request(Duration::ZERO).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &http_config(
            listen,
            "[pool.breaker]\nconsecutive_failures = 1\nmax_ejected_percent = 100",
            &[(backend, 1)],
        ),
        &[listen],
    )
    .await;
    // a short body (the fast path) and a chunked one (hyper's client, whose
    // idle connections are its own): each after a request of its path
    let short = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let chunked =
        "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for (first, post) in [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", short),
        (chunked, chunked),
    ] {
        let mut c = TcpStream::connect(listen).await.unwrap();
        // the first request leaves a kept-alive connection in the pool
        c.write_all(first.as_bytes()).await.unwrap();
        let answer = read_head(&mut c).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // the POST goes out on it, and the server closes it
        c.write_all(post.as_bytes()).await.unwrap();
        let second = read_head(&mut c).await;
        assert!(second.starts_with("HTTP/1.1 502"), "{second}");
        let v = p
            .wait_pool(Duration::from_secs(5), "api", "the 502 counted", |v| {
                v["servers"][0]["response_errors"].as_u64() >= Some(1)
            })
            .await;
        let server = &v["servers"][0];
        assert_eq!(server["breaker"], "closed", "{server}");
        assert_eq!(server["ejections"], 0, "{server}");
        // and the server still takes requests
        let (st, body) = get(&client(), &format!("http://{listen}/")).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "ok"), "{post}");
    }
}

/// ... but a server that takes the request and fails while handling it (here,
/// closes 300 ms later: a crash) is the server's failure, counted by its
/// breaker as nginx counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_after_taking_a_request_is_counted() {
    let backend = closes_the_next_request(Duration::from_millis(300)).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &http_config(
            listen,
            "[pool.breaker]\nconsecutive_failures = 1\nmax_ejected_percent = 100",
            &[(backend, 1)],
        ),
        &[listen],
    )
    .await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut c).await.starts_with("HTTP/1.1 200"));
    c.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let second = read_head(&mut c).await;
    assert!(second.starts_with("HTTP/1.1 502"), "{second}");
    let v = p
        .wait_pool(Duration::from_secs(5), "api", "the server ejected", |v| {
            v["servers"][0]["ejections"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(v["servers"][0]["breaker"], "open", "{v}");
}

/// An upload that ends in trailers is complete when its trailers are sent:
/// hyper's client does not poll a body past them, so waiting for the end
/// after them would drop each backend connection (an HTTP/1.1 client on
/// hyper's path, here a compressing listener's, and an HTTP/2 client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_ending_in_trailers_keeps_its_backend_connection() {
    let (backend, conns) = answering_counted(|req: Request<hyper::body::Incoming>| async move {
        let got = req.into_body().collect().await.unwrap();
        let sum = got
            .trailers()
            .and_then(|t| t.get("x-sum"))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = format!("{} bytes, x-sum {sum:?}", got.to_bytes().len());
        hyper::Response::new(
            http_body_util::Full::new(bytes::Bytes::from(text))
                .map_err(|e| match e {})
                .boxed(),
        )
    })
    .await;
    let listen = free_addr("127.0.0.1");
    let config = http_config(listen, "", &[(backend, 1)]).replace(
        "pool = \"api\"\n",
        "pool = \"api\"\ncompression = { types = [\"text/html\"] }\n",
    );
    let _p = Proxy::start(&config, &[listen]).await;
    for i in 0..3 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.ends_with("5 bytes, x-sum \"5\""), "{got}");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "HTTP/1.1 upload {i}");
    }
    let c = h2c_client();
    for i in 0..3 {
        let req = Request::post(format!("http://{listen}/up"))
            .header("trailer", "x-sum")
            .body(WithTrailers(Some(bytes::Bytes::from_static(b"hello")), true).boxed())
            .unwrap();
        let (r, body) = send(&c, req).await;
        assert_eq!(
            (r.status(), &body[..]),
            (StatusCode::OK, &b"5 bytes, x-sum \"5\""[..])
        );
        assert_eq!(conns.load(Ordering::SeqCst), 1, "HTTP/2 upload {i}");
    }
    // with a declared length, the server is sent the length and not the
    // trailers (HTTP/1.1 has none after a length), and its connection is
    // kept all the same: the upload ended with its last byte
    for i in 0..3 {
        // (long enough to stream, not to go whole as bytes)
        let req = Request::post(format!("http://{listen}/up"))
            .header("trailer", "x-sum")
            .header("content-length", "100000")
            .body(WithTrailers(Some(bytes::Bytes::from(vec![b'h'; 100_000])), true).boxed())
            .unwrap();
        let (r, body) = send(&c, req).await;
        assert_eq!(
            (r.status(), &body[..12]),
            (StatusCode::OK, &b"100000 bytes"[..])
        );
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "HTTP/2 upload of a length {i}"
        );
    }
}

/// A body of one data frame and then the trailers `x-sum: 5`, each given
/// when polled (a body streamed, not one of known length).
struct WithTrailers(Option<bytes::Bytes>, bool);

impl hyper::body::Body for WithTrailers {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let frame = match self.0.take() {
            Some(d) => Some(hyper::body::Frame::data(d)),
            None => std::mem::take(&mut self.1).then(|| {
                let mut t = hyper::HeaderMap::new();
                t.insert("x-sum", hyper::header::HeaderValue::from_static("5"));
                hyper::body::Frame::trailers(t)
            }),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// A server that answers an upload before reading it (413 from its own body
/// limit) and closes: the client gets that answer, over HTTP/1.1 (a length
/// and chunked, both on hyper's path) and HTTP/2, as from HAProxy; a long
/// answer too, read on after writing the upload failed. rampart wrote on
/// until the server's close failed the write, and answered 502 with the
/// server's answer unread in the socket (or cut a long one off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_early_answer_to_an_upload_reaches_the_client() {
    const LONG: usize = 100_000;
    let l = listen(free_addr("127.0.0.1")).await;
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if head.starts_with(b"POST /long") {
                    vec![b'x'; LONG]
                } else {
                    b"too large".to_vec()
                };
                if head.starts_with(b"POST /long-late ") {
                    // a server slow to answer: the upload has filled what
                    // the sockets hold by then, and rampart waits to write
                    // when the answer comes (its head is read before the
                    // write fails)
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let mut answer = format!(
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                // (the body left unread: the close resets the connection,
                // and the kernel drops what it has not sent of the answer:
                // the close waits until all of it was taken, as a server
                // whose answer went out before it closed)
                let _ = s.write_all(&answer).await;
                let deadline = Instant::now() + Duration::from_secs(5);
                while unsent(&s) > 0 && Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
            });
        }
    });
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend, 1)]), &[listen]).await;
    const BIG: usize = 8 << 20;
    for (path, want) in [("/up", 9), ("/long", LONG), ("/long-late", LONG)] {
        for chunked in [false, true] {
            let (head, body) = early_answer(listen, path, chunked, BIG).await;
            assert!(
                head.starts_with("HTTP/1.1 413"),
                "{path} chunked {chunked}: {head}"
            );
            assert_eq!(body, want, "{path} chunked {chunked}: {head}");
        }
    }
    let req = Request::post(format!("http://{listen}/up"))
        .body(
            http_body_util::StreamBody::new(futures_util::stream::iter((0..BIG / 0x10000).map(
                |_| {
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(
                        vec![7u8; 0x10000],
                    )))
                },
            )))
            .boxed(),
        )
        .unwrap();
    let resp = h2c_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"too large");
}

/// Bytes written to `s` that its peer has not acknowledged (SIOCOUTQ).
fn unsent(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int into `n`, which outlives
    // the call, on the open socket `s` borrows.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}

/// Uploads `big` bytes to `path` through `listen` (with a length, or
/// chunked) while reading the answer, as a client that stops sending once
/// answered: the answer's head, and how much of its body (by its
/// Content-Length) came before the connection ended or 10 s passed.
async fn early_answer(
    listen: SocketAddr,
    path: &str,
    chunked: bool,
    big: usize,
) -> (String, usize) {
    let mut s = TcpStream::connect(listen).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {big}")
    };
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let upload = tokio::spawn(async move {
        let piece = if chunked {
            let mut c = b"10000\r\n".to_vec();
            c.extend_from_slice(&[7u8; 0x10000]);
            c.extend_from_slice(b"\r\n");
            c
        } else {
            vec![7u8; 0x10000]
        };
        for _ in 0..big / 0x10000 {
            if wr.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let split = |got: &[u8]| {
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(got.len(), |i| i + 4);
        (got[..end].to_vec(), got.len() - end)
    };
    let complete = |got: &[u8]| {
        if !got.windows(4).any(|w| w == b"\r\n\r\n") {
            return false;
        }
        let (head, body) = split_head(got);
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let len = text
            .split("content-length: ")
            .nth(1)
            .and_then(|r| r.split("\r\n").next())
            .and_then(|n| n.trim().parse::<usize>().ok());
        len.is_some_and(|n| body.len() >= n)
    };
    while !complete(&got) {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    upload.abort();
    let (head, body) = split(&got);
    (String::from_utf8_lossy(&head).into_owned(), body)
}
