//! HTTP/2 limits set on purpose (`[listener.http2]`) and the abuse they stop,
//! probed at the frame level by tests/h2/probe.py (Python's h2, hyperframe and
//! hpack from Debian's python3-h2) over h2c and h2 over TLS.

mod common;

use common::tls::{self as t, Pki};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const NO_ERROR: u64 = 0x0;

/// Runs tests/h2/SCRIPT with Debian's python3 (python3-h2 and python3-grpcio,
/// installed by scripts/test.sh); one JSON value per line of its output.
fn python(script: &str, args: &[&str]) -> Vec<Value> {
    let path = format!("{}/tests/h2/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("/usr/bin/python3 (apt: python3-h2, python3-grpcio)");
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: {e}: {l}")))
        .collect();
    assert!(
        !values.is_empty(),
        "{script} {args:?}: no output; {}",
        String::from_utf8_lossy(&out.stderr)
    );
    values
}

/// Runs one probe against `addr` (h2c); its JSON answer.
fn probe(what: &str, addr: SocketAddr, arg: &str) -> Value {
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    python("probe.py", &[what, &ip, &port, arg]).remove(0)
}

/// A backend ("pod") and a one-thread rampart before it, with `http2` as its
/// listener's `[listener.http2]`: the backend, the listener, the admin
/// address, the proxy.
async fn proxied(http2: &str) -> (Backend, SocketAddr, SocketAddr, Proxy) {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(&config(listen, admin, backend.addr, http2), &[listen]).await;
    (backend, listen, admin, p)
}

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, http2: &str) -> String {
    format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"api\"\n  [listener.http2]\n{http2}\n[[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"{backend}\"\n"
    )
}

/// The GOAWAY a probe saw, or else the one rampart counted: a server that gives
/// up closes right after its GOAWAY, and the reset that the client's unread
/// frames then cause can discard the GOAWAY before the client reads it.
async fn goaway_code(r: &Value, admin: SocketAddr, name: &str, before: f64) -> String {
    if let Some(code) = r["goaway"]["code"].as_u64() {
        return match code {
            0 => "NO_ERROR".into(),
            1 => "PROTOCOL_ERROR".into(),
            11 => "ENHANCE_YOUR_CALM".into(),
            c => format!("{c}"),
        };
    }
    assert_eq!(r["closed"], true, "neither GOAWAY nor a close: {r}");
    let line = format!("rampart_http2_goaway_total{{code=\"{name}\",listener=\"web\"}}");
    wait_metric(admin, &line, before + 1.0).await;
    name.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_client_gets_goaway_and_costs_the_proxy_little() {
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(&config(listen, admin, backend.addr, ""), &[listen]).await;
    let before = rss_kib(p.pid());
    let cpu_before = cpu_seconds(p.pid());
    let mut worst = 0u64;
    for round in 0..5 {
        // HEADERS then RST_STREAM(CANCEL), 2,000 times on one connection
        let r = tokio::task::spawn_blocking(move || probe("rapid-reset", listen, "2000"))
            .await
            .unwrap();
        let code = goaway_code(&r, admin, "ENHANCE_YOUR_CALM", round as f64).await;
        assert_eq!(code, "ENHANCE_YOUR_CALM", "{r}");
        assert!(r["sent"].as_u64().unwrap() < 2000, "never stopped: {r}");
        worst = worst.max(rss_kib(p.pid()));
    }
    // bounded: few of the 10,000 streams reached the backend, memory did not grow
    // with them, and an honest client is served right after
    assert!(
        backend.requests() < 1000,
        "{} requests reached the backend",
        backend.requests()
    );
    assert!(
        worst < before + 50 * 1024,
        "RSS {before} KiB -> {worst} KiB"
    );
    // and CPU: the proxy's own time (user + system) for the 10,000 attempted
    // streams stays small (a debug build measures about 0.02 s; serving 10,000
    // streams through to the backend costs the same build over a second)
    let cpu = cpu_seconds(p.pid()) - cpu_before;
    eprintln!("rapid reset: {cpu:.2} s of proxy CPU for 5 x 2,000 streams");
    assert!(cpu < 0.5, "the attack cost the proxy {cpu:.2} s of CPU");
    let c = h2c_client();
    let (st, body) = get(&c, &format!("http://{listen}/")).await;
    assert_eq!((st.as_u16(), body.as_str()), (200, "pod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_and_an_oversized_header_list_are_refused() {
    let (backend, listen, admin, p) = proxied("  max_header_list_size = \"32KiB\"").await;
    // CONTINUATION frames without END_HEADERS, 8 KB each, without end
    let r = tokio::task::spawn_blocking(move || probe("continuation", listen, "5000"))
        .await
        .unwrap();
    assert_eq!(
        goaway_code(&r, admin, "PROTOCOL_ERROR", 0.0).await,
        "PROTOCOL_ERROR",
        "{r}"
    );
    assert!(r["sent"].as_u64().unwrap() < 1000, "{r}");
    // a header list over max_header_list_size: 431, nothing sent on
    let r = tokio::task::spawn_blocking(move || probe("big-headers", listen, "40000"))
        .await
        .unwrap();
    assert_eq!(r["statuses"][0][1], "431", "{r}");
    // counted and logged as a refusal for what the client sent, as an
    // HTTP/1 head over its limit is
    let v = p.stats().await;
    let l = &v["listeners"][0];
    assert_eq!(l["request_errors"]["head_too_large"], 1, "{v}");
    assert_eq!(l["responses"]["4xx"], 1, "{v}");
    wait_for(Duration::from_secs(5), "the 431 line", || {
        p.stdout().lines().any(|l| {
            l.contains("pool=- server=- method=GET path=\"/\" status=431")
                && l.contains("end=bad_request")
        })
    })
    .await;
    // under it: served
    let r = tokio::task::spawn_blocking(move || probe("big-headers", listen, "20000"))
        .await
        .unwrap();
    assert_eq!(r["statuses"][0][1], "200", "{r}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway_after_idle_timeout() {
    let (_backend, listen, _admin, _p) = proxied("  idle_timeout = \"1s\"").await;
    let r = tokio::task::spawn_blocking(move || probe("idle", listen, "10"))
        .await
        .unwrap();
    assert_eq!(r["statuses"][0][1], "200", "{r}");
    assert_eq!(r["goaway"]["code"], NO_ERROR, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_limits_are_checked_when_the_config_is_read() {
    let dir = temp_dir("h2check");
    for (line, key, why) in [
        (
            "max_frame_size = \"1KiB\"",
            "listener[0].http2.max_frame_size",
            "between 16384 and 16777215",
        ),
        (
            "initial_stream_window_size = \"3000MiB\"",
            "listener[0].http2.initial_stream_window_size",
            "between 1 and 2147483647",
        ),
        (
            "max_concurrent_streams = 0",
            "listener[0].http2.max_concurrent_streams",
            "between 1",
        ),
        ("max_streams = 10", "", "unknown field `max_streams`"),
    ] {
        let text = config(
            free_addr("127.0.0.1"),
            free_addr("127.0.0.1"),
            free_addr("127.0.0.1"),
            &format!("  {line}"),
        );
        let path = dir.join("rampart.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(rampart_bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line} accepted");
        assert!(
            err.contains(key) && err.contains(why) && err.contains("rampart.toml:"),
            "{line}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_chosen_by_alpn_and_limited_the_same_way() {
    let pki = Pki::new("H2 CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = config(listen, admin, backend.addr, "  max_concurrent_streams = 7").replace(
        "  [listener.http2]",
        &format!(
            "  [listener.tls]\n  cert = [{:?}]\n  [listener.http2]",
            site.pem.display().to_string()
        ),
    );
    let _p = Proxy::start(&text, &[listen]).await;
    // the SETTINGS rampart sends over TLS carry the configured limits
    let (mut s, seen) = t::connect(
        t::client_config(&pki, &["h2"]),
        listen,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let mut body = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
    s.read_exact(&mut body).await.unwrap();
    let settings: std::collections::HashMap<u16, u32> = body
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert_eq!(
        settings.get(&0x3),
        Some(&7),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert_eq!(
        settings.get(&0x6),
        Some(&(64 * 1024)),
        "SETTINGS_MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    assert_eq!(
        settings.get(&0x4),
        Some(&(1024 * 1024)),
        "SETTINGS_INITIAL_WINDOW_SIZE: {settings:?}"
    );
    drop(s);
    // and a request goes through over h2
    let (s, seen) = t::connect(
        t::client_config(&pki, &["h2"]),
        listen,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        t::get_over_h2(s, "site.example.com", "/").await.unwrap(),
        (200, "pod".into())
    );
}

/// One unary gRPC call through `addr` by Python's grpcio (apt python3-grpcio).
fn grpc_call(addr: SocketAddr, method: &str) -> Value {
    python("grpc_call.py", &[&addr.to_string(), method]).remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_of_a_pool_without_servers_gets_unavailable_not_an_html_503() {
    // a pool whose only server refuses connections, and one whose server is DOWN
    let dead = free_addr("127.0.0.1");
    let (listen, admin, down_l) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    backend
        .stats
        .health_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let text = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"gone\"\n\
         [[listener]]\nname = \"down\"\nbind = [\"{down_l}\"]\nmode = \"http\"\npool = \"down\"\n\
         [[pool]]\nname = \"gone\"\nretries = 0\n  [[pool.server]]\n  address = \"{dead}\"\n\
         [[pool]]\nname = \"down\"\n  [pool.health]\n  kind = \"http\"\n  path = \"/health\"\n  interval = \"200ms\"\n  [[pool.server]]\n  address = \"{}\"\n",
        backend.addr
    );
    let _p = Proxy::start(&text, &[listen, down_l]).await;
    for addr in [listen, down_l] {
        let r = tokio::task::spawn_blocking(move || grpc_call(addr, "/test.Echo/Call"))
            .await
            .unwrap();
        assert_eq!(r["code"], "UNAVAILABLE", "{r}");
        let details = r["details"].as_str().unwrap_or("");
        assert!(details.contains("pool"), "{r}");
    }
    assert_eq!(backend.requests(), 0);
}

fn conformance(addr: SocketAddr, tls_sni: Option<&str>) -> Vec<Value> {
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let mut args = vec![ip.as_str(), port.as_str()];
    args.extend(tls_sni.map(|sni| ["--tls", sni]).into_iter().flatten());
    python("conformance.py", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_conformance_cases_over_h2c_and_tls() {
    let pki = Pki::new("Conformance CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (h2c, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let text = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"h2c\"\nbind = [\"{h2c}\"]\nmode = \"http\"\npool = \"api\"\n\
         [[listener]]\nname = \"tls\"\nbind = [\"{tls}\"]\nmode = \"http\"\npool = \"api\"\n  [listener.tls]\n  cert = [{:?}]\n\
         [[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"{}\"\n",
        site.pem.display().to_string(),
        backend.addr
    );
    let _p = Proxy::start(&text, &[h2c, tls]).await;
    for (what, results) in [
        (
            "h2c",
            tokio::task::spawn_blocking(move || conformance(h2c, None))
                .await
                .unwrap(),
        ),
        (
            "h2 over TLS",
            tokio::task::spawn_blocking(move || conformance(tls, Some("site.example.com")))
                .await
                .unwrap(),
        ),
    ] {
        assert!(results.len() >= 180, "{what}: {} cases", results.len());
        // every case answered with the code RFC 9113 requires (h2 is patched
        // where 0.4.20 said PROTOCOL_ERROR: vendor/h2/PATCHES.md)
        let wrong: Vec<String> = results
            .iter()
            .filter(|r| r["pass"] != true)
            .map(|r| format!("RFC 9113 {}: {}: {r}", r["section"], r["case"]))
            .collect();
        assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
    }
    // conformance.py takes a 4xx for the proxy's refusal of a malformed
    // request; the backend never answered one, so each was the proxy's, and
    // no malformed request reached the backend to be refused there
    let v = pool_view(admin, "api").await;
    let responses = server_in(&v, backend.addr)["responses"]
        .as_object()
        .expect("the backend's responses by class")
        .clone();
    let count = |class: &str| responses.get(class).and_then(Value::as_u64).unwrap_or(0);
    assert!(count("2xx") > 0, "{v}");
    assert_eq!(count("4xx"), 0, "{v}");
}

/// RFC 9113 8.3.1: the :authority is the target's host. A Host field beside it
/// is not used and not forwarded: the server gets the authority as Host. An
/// authority with userinfo is refused (400), nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authority_wins_over_host_and_userinfo_is_refused() {
    let (backend, listen, _admin, _p) = proxied("").await;
    let send = |authority: &'static str| async move {
        let req = hyper::Request::get(format!("http://{authority}/"))
            .header("host", "b.example")
            .body(empty())
            .unwrap();
        h2_request(listen, req).await.status().as_u16()
    };
    assert_eq!(send("a.example").await, 200);
    let seen = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    let hosts: Vec<_> = seen.get_all("host").iter().collect();
    assert_eq!(hosts, ["a.example"], "{seen:?}");
    assert_eq!(send("user:pw@a.example").await, 400);
    assert_eq!(backend.requests(), 1, "the userinfo request was forwarded");
}

/// A GET or DELETE that ends with its HEADERS frame has no body: the server
/// gets no Content-Length for it (an HTTP/1 GET with "Content-Length: 0" is not
/// what the client sent). POST says its length of 0 (RFC 9110 8.6), and a
/// Content-Length the client sent is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodiless_h2_request_reaches_the_server_without_a_body_length() {
    let (backend, listen, _admin, _p) = proxied("").await;
    let stats = &backend.stats;
    let seen = |method: &str, length: Option<&str>| {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{listen}/"));
        if let Some(l) = length {
            req = req.header("content-length", l);
        }
        let req = req.body(empty()).unwrap();
        async move {
            assert_eq!(h2_request(listen, req).await.status(), 200);
            let h = stats.last_headers.lock().unwrap().clone().unwrap();
            (
                h.get("content-length")
                    .map(|v| v.to_str().unwrap().to_string()),
                h.get("transfer-encoding").is_some(),
            )
        }
    };
    for method in ["GET", "DELETE"] {
        assert_eq!(seen(method, None).await, (None, false), "{method}");
        assert_eq!(seen(method, Some("0")).await, (Some("0".into()), false));
    }
    assert_eq!(seen("POST", None).await, (Some("0".into()), false));
}

/// RFC 9113 8.3.1: a `:path` that is neither the target in origin form nor `*`
/// for OPTIONS is malformed. rampart resets such a stream with PROTOCOL_ERROR
/// and sends nothing on: "?q=1" and GET "*" used to go to the server as
/// `GET ?q=1 HTTP/1.1` and `GET * HTTP/1.1`, request lines the proxy's routes
/// and rules had matched as "/" and "*" while the server reads them its own
/// way. (tests/h2/conformance.py counts a 4xx as refused, and a backend's own
/// 400 passed for the proxy's refusal.) The server gets the others' request
/// lines, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_not_in_origin_form_is_reset_and_never_sent_on() {
    use rampart::http2::{frame, hpack};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // a backend that records each request line and answers 200
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&lines);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let line = head.lines().next().unwrap_or("").to_owned();
                        seen.lock().unwrap().push(line);
                        buf.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let _p = Proxy::start(&config(listen, admin, backend, ""), &[listen]).await;
    let mut c = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut out = frame::PREFACE.to_vec();
    frame::settings(&mut out, &[]);
    let cases = [
        (1, "GET", "?q=1"),
        (3, "GET", "*"),
        (5, "GET", "admin/users"),
        (7, "OPTIONS", "*"),
        (9, "GET", "/a?q=1"),
    ];
    for (id, method, path) in cases {
        let mut block = Vec::new();
        for (n, v) in [
            (":method", method),
            (":scheme", "http"),
            (":authority", "a.example"),
            (":path", path),
        ] {
            hpack::encode_field(&mut block, n.as_bytes(), v.as_bytes());
        }
        frame::headers(&mut out, id, &block, true, 16_384);
    }
    c.write_all(&out).await.unwrap();
    // each stream's answer: RST_STREAM's code, or the :status of its HEADERS
    let mut answers = std::collections::BTreeMap::new();
    let mut dec = hpack::Decoder::new(4096);
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while answers.len() < cases.len() {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed with answers {answers:?}");
            got.extend_from_slice(&chunk[..n]);
            while got.len() >= 9 {
                let h = frame::Head::parse(&got);
                let Some(p) = got.get(9..9 + h.len).map(<[u8]>::to_vec) else {
                    break;
                };
                got.drain(..9 + h.len);
                match h.kind {
                    frame::RST_STREAM => {
                        let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        answers.insert(h.stream, format!("reset {code}"));
                    }
                    frame::HEADERS => {
                        let mut status = String::new();
                        dec.decode(&p, |n, v| {
                            if n.bytes == b":status" {
                                status = String::from_utf8_lossy(v.bytes()).into_owned();
                            }
                        })
                        .unwrap();
                        answers.insert(h.stream, status);
                    }
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("not every stream answered");
    let answers: Vec<(u32, &str)> = answers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // PROTOCOL_ERROR is 1
    assert_eq!(
        answers,
        [
            (1, "reset 1"),
            (3, "reset 1"),
            (5, "reset 1"),
            (7, "200"),
            (9, "200")
        ]
    );
    let mut lines = lines.lock().unwrap().clone();
    lines.sort();
    assert_eq!(lines, ["GET /a?q=1 HTTP/1.1", "OPTIONS * HTTP/1.1"]);
}

/// A backend that answers every request on a connection with `head` and a
/// two-byte body.
async fn fixed_backend(head: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(b"ok").await.is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Response heads are encoded without HPACK's dynamic table (as HAProxy and
/// nginx do; vendor/h2, `Encoder::begin_block`): every field, in every response
/// of a connection, decodes to what the server sent, repeated and unknown names
/// and a value longer than a one-byte length included, and the client's
/// dynamic table stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_heads_decode_field_for_field_without_the_dynamic_table() {
    const HEAD: &str = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Custom: abc\r\n\
        Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nCache-Control: no-cache\r\nX-Long: \
        0123456789012345678901234567890123456789012345678901234567890123456789\
        0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n";
    let backend = fixed_backend(HEAD).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let _p = Proxy::start(&config(listen, admin, backend, ""), &[listen]).await;
    let r = probe("heads", listen, "3");
    let responses = r["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3, "{r}");
    let long = "0123456789".repeat(14);
    let mut sizes = Vec::new();
    for resp in responses {
        let fields: Vec<(String, String)> = resp["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{resp}"))
            .iter()
            .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
            .collect();
        let get = |n: &str| -> Vec<&str> {
            fields
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(fields[0], (":status".into(), "201".into()), "{resp}");
        assert_eq!(get("content-length"), ["2"], "{resp}");
        assert_eq!(get("x-custom"), ["abc"], "{resp}");
        assert_eq!(get("set-cookie"), ["a=1", "b=2"], "{resp}");
        assert_eq!(get("cache-control"), ["no-cache"], "{resp}");
        assert_eq!(get("x-long"), [long.as_str()], "{resp}");
        assert_eq!(
            resp["table_entries"], 0,
            "a field went into the dynamic table: {resp}"
        );
        sizes.push(resp["block_bytes"].as_u64().unwrap());
    }
    // nothing indexed, so a repeated response costs what the first did
    assert!(sizes.iter().all(|&s| s == sizes[0]), "{sizes:?}");
}

/// An HTTP/1.1 server's answer to an HTTP/2 client: every end-to-end field
/// arrives, in order, its name lowercased (hyper's client refuses a capital in
/// an HTTP/2 name), and the connection's own fields do not (`Connection`, the
/// fields it names, `Keep-Alive`). Up to 16 fields go from the buffer the head
/// was read into; a head with more gets a `HeaderMap`: both are asked for, on
/// a connection that carries several answers, so each head is read anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_fields_pass_as_sent_from_the_buffer_and_from_a_map() {
    for n in [3, 13, 14, 30] {
        // n custom fields; Date, Content-Length and n: 16 end-to-end fields at 14
        let custom: Vec<(String, String)> = (0..n)
            .map(|i| (format!("X-Field-{i}"), format!("Value {i}")))
            .collect();
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: X-Hop\r\n\
             X-Hop: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n",
        );
        for (k, v) in &custom {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let backend = fixed_backend(Box::leak(head.into_boxed_str())).await;
        let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
        let _p = Proxy::start(&config(listen, admin, backend, ""), &[listen]).await;
        let c = h2c_client();
        for _ in 0..3 {
            let req = hyper::Request::get(format!("http://{listen}/"))
                .header("host", "x")
                .body(empty())
                .unwrap();
            let (resp, body) = send(&c, req).await;
            assert_eq!(resp.status(), 200, "{n} fields");
            assert_eq!(body, "ok", "{n} fields");
            let got: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let mut want = vec![
                (
                    "date".to_string(),
                    "Sun, 06 Nov 1994 08:49:37 GMT".to_string(),
                ),
                ("content-length".to_string(), "2".to_string()),
            ];
            want.extend(custom.iter().map(|(k, v)| (k.to_lowercase(), v.clone())));
            assert_eq!(got, want, "{n} fields");
        }
    }
}

/// Bodies larger than every window, both ways, on many streams of one
/// connection at once: rampart's HTTP/2 server keeps each stream's flow control
/// (a 16 KiB stream window, so the client waits for WINDOW_UPDATEs as it
/// uploads) and the client's (downloads of 1 MiB against its 64 KiB default
/// windows), and no byte is lost or moved to another stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_both_ways_on_concurrent_streams_keep_flow_control() {
    use http_body_util::{BodyExt, Full};
    let (_backend, listen, admin, _p) = proxied(
        "  initial_stream_window_size = \"16KiB\"\n  initial_connection_window_size = \"64KiB\"",
    )
    .await;
    let c = h2c_client();
    // one connection, then every stream on it
    assert_eq!(get(&c, &format!("http://{listen}/")).await.0, 200);
    let accepted = || async {
        let m = admin_get(admin, "/metrics").await.1;
        m.lines()
            .find(|l| {
                l.starts_with("rampart_listener_connections_total{")
                    && l.contains("listener=\"web\"")
            })
            .unwrap_or_else(|| panic!("no connection count in\n{m}"))
            .to_string()
    };
    let before = accepted().await;
    let mut tasks = Vec::new();
    for i in 0..12usize {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                // (every other one sent chunked by the server)
                let n = 1024 * 1024 + i * 1000;
                let chunked = i % 4 / 2;
                let req =
                    hyper::Request::get(format!("http://{listen}/big?bytes={n}&chunked={chunked}"))
                        .body(empty())
                        .unwrap();
                let (resp, body) = send(&c, req).await;
                assert_eq!(resp.status(), 200);
                assert_eq!(body.len(), n, "stream {i}");
                // the backend's pattern (byte k is k % 251), whole and in order
                let sum = body.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
                assert_eq!(sum, Pattern::checksum(n as u64), "stream {i}");
                assert!(body.iter().enumerate().all(|(k, &b)| b == (k % 251) as u8));
            } else {
                let n = 300 * 1024 + i * 777;
                let data: Vec<u8> = (0..n).map(|k| (k % 251) as u8).collect();
                let sum = Pattern::checksum(n as u64);
                let req = hyper::Request::post(format!("http://{listen}/upload"))
                    .body(BodyExt::boxed(Full::new(bytes::Bytes::from(data))))
                    .unwrap();
                let (resp, body) = send(&c, req).await;
                assert_eq!(resp.status(), 200);
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    format!("{n} {sum}"),
                    "stream {i}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // all of it on that connection
    assert_eq!(accepted().await, before);
}

/// rampart's own answers over HTTP/2 carry a Date (RFC 9110 6.6.1), as they
/// did when hyper served HTTP/2; a server's Date is passed on as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_a_date_and_a_server_date_is_kept() {
    let backend = fixed_backend(
        "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let _p = Proxy::start(&config(listen, admin, backend, ""), &[listen]).await;
    let c = h2c_client();
    let get_date = |path: &'static str| {
        let c = c.clone();
        async move {
            let req = hyper::Request::get(format!("http://{listen}{path}"))
                .header("host", "x")
                .body(empty())
                .unwrap();
            let (resp, _) = send(&c, req).await;
            let dates: Vec<String> = resp
                .headers()
                .get_all("date")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            (resp.status().as_u16(), dates)
        }
    };
    assert_eq!(
        get_date("/").await,
        (200, vec!["Sun, 06 Nov 1994 08:49:37 GMT".to_string()])
    );
    // CONNECT is refused by rampart itself: 405, with today's date
    let req = hyper::Request::builder()
        .method("CONNECT")
        .uri(format!("{listen}"))
        .body(empty())
        .unwrap();
    // the system's date(1) to the minute, before and after
    let minute = || {
        let o = std::process::Command::new("date")
            .args(["-u", "+%a, %d %b %Y %H:%M"])
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let before = minute();
    let (resp, body) = send(&c, req).await;
    let body_len = body.len();
    let after = minute();
    assert_eq!(resp.status(), 405);
    // and its length, as hyper gave it (the body knows it)
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        body_len.to_string()
    );
    let date = resp.headers()["date"].to_str().unwrap().to_string();
    assert_eq!(date.len(), 29, "{date}");
    assert!(date.ends_with(" GMT"), "{date}");
    assert!(
        date.starts_with(&before) || date.starts_with(&after),
        "{date}: not {before} or {after}"
    );
}

/// One large download on a client whose windows are wide (hyper's client: 2
/// MiB a stream, 5 MiB the connection), so it sends no WINDOW_UPDATE for a
/// long while: the server must keep writing on its own (a connection task
/// that stopped after its turn's rounds waited for the client's next frame,
/// up to the 30 s keep-alive PING, every 512 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_on_a_wide_window_does_not_wait_for_the_client() {
    let (_backend, listen, _admin, _p) = proxied("").await;
    let c = h2c_client();
    let n = 8 * 1024 * 1024;
    let req = hyper::Request::get(format!("http://{listen}/big?bytes={n}"))
        .body(empty())
        .unwrap();
    // far above what 8 MiB takes on loopback, far below 16 stalls of 30 s
    let (resp, body) = tokio::time::timeout(std::time::Duration::from_secs(60), send(&c, req))
        .await
        .expect("the download stalled");
    assert_eq!(resp.status(), 200);
    assert_eq!(body.len(), n);
    assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
}

/// Padding counts against the windows (RFC 9113 6.1) and carries nothing for
/// the reader, so it must come back to the client at once: an upload whose
/// frames are mostly padding, through a 16 KiB stream window, would otherwise
/// use the window up and stall for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_mostly_of_padding_gets_its_windows_back() {
    let (_backend, listen, _admin, _p) = proxied(
        "  initial_stream_window_size = \"16KiB\"\n  initial_connection_window_size = \"64KiB\"",
    )
    .await;
    // 2,000 frames: 510 KB of window against 200 KB of data, 31 stream windows
    let n = 200_000u64;
    let r = probe("padded-upload", listen, &n.to_string());
    assert_eq!(r["stalled"], false, "the upload stalled: {r}");
    assert_eq!(r["rst"], serde_json::json!([]), "{r}");
    assert_eq!(r["statuses"][0][1], "200", "{r}");
    assert_eq!(r["body"], format!("{n} {}", Pattern::checksum(n)), "{r}");
}

/// DATA that rampart refuses (more than the stream's content-length) still
/// took its share of the connection's window: it must come back with the
/// stream's reset (RFC 9113 6.9), or a client whose streams fail that way uses
/// the connection's window up and its next upload stalls for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_data_gives_the_connection_window_back() {
    let (_backend, listen, _admin, _p) =
        proxied("  initial_connection_window_size = \"64KiB\"").await;
    // 8 streams of 16,000 bytes against a content-length of 10: twice the
    // connection's window; then 20,000 bytes on stream 17
    let r = probe("padded-upload", listen, "20000:8");
    let resets: Vec<(u64, u64)> = r["rst"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x[0].as_u64().unwrap(), x[1].as_u64().unwrap()))
        .collect();
    // PROTOCOL_ERROR (1) on each of them
    assert_eq!(
        resets,
        (0..8).map(|j| (1 + 2 * j, 1)).collect::<Vec<_>>(),
        "{r}"
    );
    assert_eq!(r["stalled"], false, "the upload after them stalled: {r}");
    assert_eq!(r["statuses"], serde_json::json!([[17, "200"]]), "{r}");
    assert_eq!(
        r["body"],
        format!("20000 {}", Pattern::checksum(20_000)),
        "{r}"
    );
}

/// A client that resets a bidirectional stream in the middle of its upload
/// (the backend echoes each piece as it comes, as in gRPC): the backend's
/// exchange ends at once (its connection is dropped, as for an HTTP/1.1
/// client that goes away), and the client's connection serves on. (That the
/// reset reaches the body's reader on another task is the unit tests' part,
/// in src/http2/server.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_mid_upload_ends_the_backends_exchange_at_once() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (backend, listen, _admin, _p) = proxied("").await;
    let r = probe("reset-echo", listen, "3");
    assert_eq!(r["echoed"], 3000, "the answer did not stream: {r}");
    // the next request on the connection was served
    assert_eq!(
        r["statuses"],
        serde_json::json!([[1, "200"], [3, "200"]]),
        "{r}"
    );
    assert_eq!(r["closed"], false, "{r}");
    // the echo's exchange went on its own backend connection, and ended
    wait_for(
        Duration::from_secs(5),
        "the echo's backend connection to end after the client's reset",
        || backend.stats.closed.load(Ordering::SeqCst) >= 1,
    )
    .await;
}

/// A small HTTP/2 upload that arrives whole with its head goes to an HTTP/1.1
/// server as bytes (no hyper client): in one DATA frame or many, with or
/// without the client's content-length, it arrives byte for byte, framed by
/// a content-length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_h2_uploads_arrive_whole_and_framed_by_their_length() {
    use http_body_util::{BodyExt, Full};
    let (backend, listen, admin, _p) = proxied("").await;
    let c = h2c_client();
    for (n, with_length) in [(1000usize, true), (1000, false), (0, true)] {
        let data: Vec<u8> = (0..n).map(|k| (k % 251) as u8).collect();
        let mut req = hyper::Request::post(format!("http://{listen}/upload"));
        if with_length {
            req = req.header("content-length", n.to_string());
        }
        let req = req
            .body(BodyExt::boxed(Full::new(bytes::Bytes::from(data))))
            .unwrap();
        let (resp, body) = send(&c, req).await;
        assert_eq!(resp.status(), 200);
        let sum = Pattern::checksum(n as u64);
        assert_eq!(String::from_utf8_lossy(&body), format!("{n} {sum}"));
        let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(h["content-length"], n.to_string().as_str(), "{h:?}");
        assert!(!h.contains_key("transfer-encoding"), "{h:?}");
    }
    // 50 DATA frames of 100 bytes (and padding), written together
    let r = probe("padded-upload", listen, "5000");
    assert_eq!(r["statuses"][0][1], "200", "{r}");
    assert_eq!(
        r["body"],
        format!("5000 {}", Pattern::checksum(5000)),
        "{r}"
    );
    // and one from an HTTP/1.1 client (served by hyper, not the fast path)
    let req = hyper::Request::post(format!("http://{listen}/upload"))
        .body(BodyExt::boxed(Full::new(bytes::Bytes::from(vec![
            7u8;
            700
        ]))))
        .unwrap();
    let (resp, body) = send(&client(), req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(String::from_utf8_lossy(&body), format!("700 {}", 7 * 700));
    // each body counted once for the server (`rampart_server_bytes_in_total`)
    let pool = pool_view(admin, "api").await;
    let bytes_in = &server_in(&pool, backend.addr)["bytes_in"];
    assert_eq!(bytes_in, 1000 + 1000 + 5000 + 700, "{pool}");
}
