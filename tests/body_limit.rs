//! `[[listener]] max_request_body` (nginx's `client_max_body_size`): a request
//! body over it is refused with 413, whether its length is declared (refused
//! before any of it is read, no `100 Continue`) or it streams (chunked, or an
//! HTTP/2 stream without content-length: refused once it goes over), on both
//! HTTP/1.1 paths and over HTTP/2; counted as `body_too_large`; a reload
//! changes it for the connections already open. Real sockets, real backend.

mod common;

use common::*;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, max: &str) -> String {
    http_config_at(listen, admin, "threads = 1", "", &[(backend, 1)]).replacen(
        "mode = \"http\"\n",
        &format!("mode = \"http\"\nmax_request_body = \"{max}\"\n"),
        1,
    )
}

/// Sends `head` (and `body`, if any) on a new connection, and reads what comes
/// back until the proxy closes it or `wait` passes.
async fn exchange(listen: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // (a refused body may meet a closed connection: not an error here)
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn post(len: usize, extra: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n{extra}\r\n")
}

/// A chunked body of three chunks of 600 bytes (7 each), and its end.
fn three_chunks() -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..3 {
        body.extend_from_slice(b"258\r\n");
        body.extend_from_slice(&[7u8; 600]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// The listener's count of one refusal reason.
async fn refused(admin: SocketAddr, reason: &str) -> u64 {
    admin_stats(admin).await["listeners"][0]["request_errors"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no request_errors.{reason}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_max_request_body_is_refused_with_413() {
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(
        &config(listen, admin, backend.addr, "1KiB"),
        &[listen, admin],
    )
    .await;

    // at the limit: served (the fast path's short body), the whole body there
    let r = exchange(listen, &post(1024, "Connection: close\r\n"), &[7u8; 1024]).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with(&format!("1024 {}", 7 * 1024)), "{r}");
    let served = backend.stats.requests.load(Ordering::SeqCst);

    // a declared length over it: 413 at once, the connection closed, and the
    // server never asked
    let r = exchange(listen, &post(1025, ""), &[7u8; 1025]).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    assert!(r.contains("max_request_body"), "{r}");
    // ... and a client that sends its whole body (8 MiB, more than the
    // sockets' buffers hold) without waiting can: what it sends after the
    // 413 is read and dropped, not reset, and it reads the 413
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(post(8 << 20, "").as_bytes()).await.unwrap();
    let sent = s.write_all(&vec![7u8; 8 << 20]).await;
    assert!(sent.is_ok(), "the upload was reset: {sent:?}");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // ... with Expect: 100-continue, no 100 first, and the body never sent
    let r = exchange(listen, &post(1 << 20, "Expect: 100-continue\r\n"), b"").await;
    assert!(r.starts_with("HTTP/1.1 413"), "no 100 Continue first: {r}");
    assert!(!r.contains("100 Continue"), "{r}");
    assert_eq!(backend.stats.requests.load(Ordering::SeqCst), served);

    // chunked, going over it on the way: 413, what the server got cut off
    let chunked = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = three_chunks();
    let r = exchange(listen, chunked, &body).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // ... also when it goes over once the server has the request: the
    // first chunk goes on, the server is waiting for the rest, then the rest
    // comes and goes over
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(chunked.as_bytes()).await.unwrap();
    s.write_all(&body[..605 + 2]).await.unwrap();
    wait_for(Duration::from_secs(5), "the upload at the server", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    s.write_all(&body[607..]).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // ... and under it, served
    let small = b"258\r\n".iter().chain(&[7u8; 600]).chain(b"\r\n0\r\n\r\n");
    let small: Vec<u8> = small.copied().collect();
    let r = exchange(
        listen,
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &small,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with(&format!("600 {}", 7 * 600)), "{r}");

    // HTTP/2: a declared length, and a stream without one
    let h2 = h2c_client();
    let url = format!("http://{listen}/upload");
    let full = |n: usize| {
        hyper::Request::post(url.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![7u8; n])).boxed())
            .unwrap()
    };
    let resp = h2.request(full(4096)).await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = h2.request(full(512)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let frames = (0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            7u8;
            600
        ])))
    });
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = hyper::Request::post(url.as_str())
        .body(BodyExt::boxed(streamed))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);

    // counted: the three heads over it, the two chunked bodies, the two
    // HTTP/2 ones
    assert_eq!(refused(admin, "body_too_large").await, 7);
    let (_, m) = admin_get(admin, "/metrics").await;
    assert!(
        m.contains(
            "rampart_listener_request_errors_total{listener=\"web\",reason=\"body_too_large\"} 7"
        ),
        "{m}"
    );

    // a reload raises it, for a connection already open too
    let mut kept = tokio::net::TcpStream::connect(listen).await.unwrap();
    std::fs::write(&p.config, config(listen, admin, backend.addr, "4KiB")).unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{body}");
    kept.write_all(post(2000, "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    kept.write_all(&[7u8; 2000]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// A rule's `max_request_body` (nginx's `client_max_body_size` in a
/// location) replaces the listener's for the requests it matches, higher or
/// lower, or none (0); the last matching rule with one decides, and a rule
/// that answers (deny) comes first. On the fast path (short bodies, read
/// whole before the rules), on hyper's path (longer and chunked bodies), and
/// over HTTP/2; a declared length over the rule's limit is refused before
/// the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_max_request_body_replaces_the_listeners() {
    let backend = Backend::start("a", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    // (the backend reads the body at /upload: the later rules match a field)
    let rule = |m: &str, action: &str| format!("\n  [[listener.rule]]\n  {m}\n  {action}\n");
    let kind = |k: &str| format!("header = {{ name = \"x-kind\", value = \"{k}\" }}");
    let rules = [
        rule("path_prefix = \"/upload\"", "max_request_body = \"1MiB\""),
        rule(&kind("avatar"), "max_request_body = 10"),
        rule(&kind("free"), "max_request_body = 0"),
        rule(&kind("denied"), "deny = 403"),
        rule(
            &kind("limited"),
            "rate_limit = \"once\"\n  max_request_body = 10",
        ),
    ]
    .concat();
    let cfg = config(listen, admin, backend.addr, "1KiB").replacen(
        "pool = \"api\"\n",
        &format!("pool = \"api\"\n{rules}"),
        1,
    ) + "\n[[rate_limit]]\nname = \"once\"\nkey = \"all\"\nrate = \"1/h\"\nburst = 0\n";
    let _p = Proxy::start(&cfg, &[listen, admin]).await;
    let post_to = |path: &str, len: usize, fields: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n{fields}\r\n"
        )
    };
    let served = |r: &str, len: usize| {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with(&format!("{len} {}", 7 * len)), "{r}");
    };

    // the listener's 1 KiB where no rule sets one (the fast path: the rules
    // are read after the short body)
    let r = exchange(listen, &post_to("/other", 2048, ""), &[7u8; 2048]).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // a rule's 1 MiB: a body of 100 KiB (hyper's path) goes through
    let r = exchange(
        listen,
        &post_to("/upload", 100 << 10, ""),
        &[7u8; 100 << 10],
    )
    .await;
    served(&r, 100 << 10);
    // a later rule's 10 bytes: the last match decides
    let avatar = "x-kind: avatar\r\n";
    let r = exchange(listen, &post_to("/upload", 11, avatar), &[7u8; 11]).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let r = exchange(listen, &post_to("/upload", 10, avatar), &[7u8; 10]).await;
    served(&r, 10);
    // over the rule's limit, declared: 413 before the body, no 100 first
    let asked = backend.stats.requests.load(Ordering::SeqCst);
    let expect = post_to("/upload", 2 << 20, "Expect: 100-continue\r\n");
    let r = exchange(listen, &expect, b"").await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(!r.contains("100 Continue"), "{r}");
    assert_eq!(backend.stats.requests.load(Ordering::SeqCst), asked);
    // no limit at all: 3 MiB
    let free = post_to("/upload", 3 << 20, "x-kind: free\r\n");
    served(&exchange(listen, &free, &vec![7u8; 3 << 20]).await, 3 << 20);
    // a rule that answers comes before the limit
    let denied = post_to("/upload", 2 << 20, "x-kind: denied\r\n");
    let r = exchange(listen, &denied, b"").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // a body refused for its length uses none of a rate limit (one request
    // an hour here): as nginx checks a declared length before `limit_req`
    let limited = |n: usize| post_to("/upload", n, "x-kind: limited\r\n");
    for _ in 0..3 {
        let r = exchange(listen, &limited(11), &[7u8; 11]).await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    }
    served(&exchange(listen, &limited(5), &[7u8; 5]).await, 5);
    let r = exchange(listen, &limited(5), &[7u8; 5]).await;
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");

    // chunked (hyper's path, counted as it streams): 1,800 bytes pass under
    // the rule's 1 MiB, not under the listener's 1 KiB
    let body = three_chunks();
    let chunked = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    };
    served(&exchange(listen, &chunked("/upload"), &body).await, 1800);
    let r = exchange(listen, &chunked("/other"), &body).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");

    // HTTP/2
    let h2 = h2c_client();
    let full = |path: &str, n: usize| {
        hyper::Request::post(format!("http://{listen}{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![7u8; n])).boxed())
            .unwrap()
    };
    let resp = h2.request(full("/other", 4096)).await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = h2.request(full("/upload", 4096)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], format!("4096 {}", 7 * 4096).as_bytes());
    assert_eq!(refused(admin, "body_too_large").await, 8);
}
