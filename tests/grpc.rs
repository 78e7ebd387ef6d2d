//! HTTP/2 to the servers (`protocol = "h2"`) and gRPC end to end: a real gRPC
//! server and client (Debian's python3-grpcio) through rampart, h2 over TLS on
//! the client side and h2c to the servers; the gRPC health check; streams
//! multiplexed over few connections, up to the server's and the pool's limits;
//! GOAWAY from a server under load, from a frame-level server (python3-h2).

mod common;

use common::tls::{self as t, Pki};
use common::*;
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Python server from tests/h2, killed on drop.
struct PyServer {
    child: Child,
    addr: SocketAddr,
}

impl PyServer {
    async fn start(script: &str, addr: SocketAddr, args: &[&str]) -> PyServer {
        let path = format!("{}/tests/h2/{script}", env!("CARGO_MANIFEST_DIR"));
        let child = Command::new("/usr/bin/python3")
            .arg(&path)
            .arg(addr.port().to_string())
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("/usr/bin/python3 (apt: python3-h2, python3-grpcio)");
        let mut s = PyServer { child, addr };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("{script} exited: {st}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{script} did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A grpcio server named `name`; its health is read from `dir/name.state`.
async fn grpc_server(name: &str, dir: &Path) -> (PyServer, PathBuf) {
    let state = dir.join(format!("{name}.state"));
    let s = PyServer::start(
        "grpc_server.py",
        free_addr("127.0.0.1"),
        &[name, state.to_str().unwrap()],
    )
    .await;
    (s, state)
}

/// gRPC calls by tests/h2/grpc_call.py; one JSON value per call.
async fn grpc(args: Vec<String>) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        let path = format!("{}/tests/h2/grpc_call.py", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("/usr/bin/python3")
            .arg(&path)
            .args(&args)
            .output()
            .expect("/usr/bin/python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            !v.is_empty(),
            "grpc_call.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        v
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn server_health(admin: SocketAddr, pool: &str, id: &str) -> String {
    server_field(admin, pool, id, "health")
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A field of the server `id` of `pool` in `/api/pools/{pool}` (null if none).
async fn server_field(admin: SocketAddr, pool: &str, id: &str, field: &str) -> Value {
    server_by_id(&pool_view(admin, pool).await, id)[field].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_over_tls_to_h2c_servers_with_trailers_and_health() {
    let dir = temp_dir("grpc");
    let (a, a_state) = grpc_server("a", &dir).await;
    let (b, _) = grpc_server("b", &dir).await;
    let pki = Pki::new("grpc");
    let cert = pki.server("site", &["grpc.example.com"]);
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 2\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"grpc\"\n\
           [listener.tls]\n  cert = [\"{}\"]\n\
         [[pool]]\nname = \"grpc\"\nprotocol = \"h2\"\n\
           [pool.health]\n  kind = \"grpc\"\n  interval = \"200ms\"\n  rise = 1\n  fall = 1\n\
           [[pool.server]]\n  address = \"{}\"\n\
           [[pool.server]]\n  address = \"{}\"\n",
        cert.pem.display(),
        a.addr,
        b.addr
    );
    let p = Proxy::start(&config, &[listen]).await;
    for s in [&a, &b] {
        let id = s.addr.to_string();
        wait_until(
            Duration::from_secs(10),
            "servers UP by the gRPC check",
            || async { server_health(admin, "grpc", &id).await == "UP" },
        )
        .await;
    }
    let tls = |more: &[&str]| {
        let mut v = args(&[&listen.to_string()]);
        v.extend(args(more));
        v.extend(args(&[
            "--tls",
            pki.ca().to_str().unwrap(),
            "grpc.example.com",
        ]));
        v
    };

    // unary over TLS (h2 by ALPN) to h2c servers: the answer, and the trailers
    let calls = grpc(tls(&["/test.Echo/Call", "--body", "6869", "--count", "6"])).await;
    let mut served = std::collections::HashSet::new();
    for c in &calls {
        assert_eq!(c["code"], "OK", "{c}");
        let who = c["trailers"]["x-served-by"].as_str().unwrap().to_string();
        assert_eq!(c["reply"], format!("{who}:hi"), "{c}");
        assert_eq!(c["trailers"]["x-trailer"], "yes", "trailers lost: {c}");
        served.insert(who);
    }
    assert_eq!(served.len(), 2, "both servers serve: {calls:?}");

    // server streaming: every message, then the trailers
    let s = grpc(tls(&["/test.Echo/Stream", "--stream", "--body", "07"])).await;
    assert_eq!(s[0]["code"], "OK", "{}", s[0]);
    let msgs: Vec<String> = (0..7).map(|i| format!("msg-{i}")).collect();
    assert_eq!(s[0]["messages"], serde_json::json!(msgs));
    assert_eq!(s[0]["trailers"]["x-count"], "7", "{}", s[0]);

    // a server's own error status passes as it is
    let f = grpc(tls(&["/test.Echo/Fail"])).await;
    assert_eq!(f[0]["code"], "RESOURCE_EXHAUSTED", "{}", f[0]);
    assert_eq!(f[0]["details"], "quota", "{}", f[0]);

    // the access log carries grpc-status: 0 for the calls, 8 for the failure
    wait_for(Duration::from_secs(5), "access log lines", || {
        let out = p.stdout();
        out.contains("path=\"/test.Echo/Fail\" status=200")
            && out.matches("grpc_status=0").count() >= 7
    })
    .await;
    let out = p.stdout();
    assert!(
        out.lines()
            .any(|l| l.contains("/test.Echo/Fail") && l.contains("grpc_status=8")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("/test.Echo/Stream") && l.contains("grpc_status=0")),
        "{out}"
    );

    // the gRPC health check: NOT_SERVING is DOWN, and no call goes there
    std::fs::write(&a_state, "NOT_SERVING").unwrap();
    let a_id = a.addr.to_string();
    wait_until(
        Duration::from_secs(10),
        "a NOT_SERVING server DOWN",
        || async { server_health(admin, "grpc", &a_id).await == "DOWN" },
    )
    .await;
    let calls = grpc(tls(&["/test.Echo/Call", "--body", "6869", "--count", "6"])).await;
    for c in &calls {
        assert_eq!(c["code"], "OK", "{c}");
        assert_eq!(c["trailers"]["x-served-by"], "b", "{c}");
    }
    let check = server_field(admin, "grpc", &a_id, "last_check").await;
    assert!(
        check["detail"]
            .as_str()
            .unwrap_or("")
            .contains("NOT_SERVING"),
        "the reason is shown: {check}"
    );
    std::fs::write(&a_state, "SERVING").unwrap();
    wait_until(Duration::from_secs(10), "SERVING again: UP", || async {
        server_health(admin, "grpc", &a_id).await == "UP"
    })
    .await;

    // with no server left, a gRPC client gets UNAVAILABLE
    drop(a);
    drop(b);
    let gone = grpc(tls(&["/test.Echo/Call"])).await;
    assert_eq!(gone[0]["code"], "UNAVAILABLE", "{}", gone[0]);
}

/// A call of `/test.Echo/Sleep` through `listen` (h2c): the server sleeps
/// `ms` and answers the time left to the deadline it was given; the client's
/// own deadline is 10 s.
async fn sleep_call(listen: SocketAddr, ms: u64) -> Value {
    let body: String = ms.to_string().bytes().map(|b| format!("{b:02x}")).collect();
    let out = grpc(args(&[
        &listen.to_string(),
        "/test.Echo/Sleep",
        "--body",
        &body,
    ]))
    .await;
    out[0].clone()
}

/// The time left that a Sleep call's server read from its grpc-timeout.
fn left_ms(call: &Value) -> u64 {
    let reply = call["reply"].as_str().unwrap_or_else(|| panic!("{call}"));
    let left = reply
        .strip_prefix("left=")
        .unwrap_or_else(|| panic!("{call}"));
    left.parse().unwrap_or_else(|_| panic!("{call}"))
}

/// A gRPC call (`content-type: application/grpc`, `grpc-timeout: 10S`) of
/// `path` through `listen`: over HTTP/2, or over HTTP/1.1 as gRPC-Web sends
/// it (no `te: trailers`). Its response head and how long it took.
async fn timed_call(listen: SocketAddr, path: &str, h2: bool) -> (hyper::HeaderMap, Duration) {
    let c = if h2 { h2c_client() } else { client() };
    let mut req = hyper::Request::post(format!("http://{listen}{path}"))
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "10S");
    if h2 {
        req = req.header("te", "trailers");
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let sent = std::time::Instant::now();
    let resp = c.request(req).await.unwrap();
    let took = sent.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    (resp.headers().clone(), took)
}

/// rampart's own DEADLINE_EXCEEDED, `why` in its message, about 1 s after the
/// call (its cap), where its client would have waited 10 s.
fn deadline_exceeded((h, took): &(hyper::HeaderMap, Duration), why: &str) {
    assert_eq!(h["grpc-status"], "4", "DEADLINE_EXCEEDED: {h:?}");
    let msg = h["grpc-message"].to_str().unwrap();
    assert!(msg.contains("grpc-timeout") && msg.contains(why), "{msg}");
    assert!(
        *took >= Duration::from_millis(900) && *took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// `max_grpc_timeout` (after Envoy's): a gRPC call waits for its answer as
/// long as its `grpc-timeout` says, at most the cap, instead of
/// `server_timeout`, and the server is told the time left. A server that does
/// not answer by then (one that holds every response) has the call
/// cancelled, and its client gets DEADLINE_EXCEEDED from rampart: on an HTTP/2
/// pool, on an HTTP/1.1 pool through hyper's client, for a gRPC-Web call over
/// HTTP/1.1 (which the fast path hands over), and for a call still waiting in
/// the pool's queue. A deadline shorter than `server_timeout` is the client's
/// hurry and blames neither the server nor the pool; one at least as long
/// blames them as a timeout would. Without the key a call waits
/// `server_timeout`, as before, and fails UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_grpc_timeout_is_its_wait_under_max_grpc_timeout() {
    let dir = temp_dir("grpc-deadline");
    let (srv, _) = grpc_server("a", &dir).await;
    let held = h2_backend(100, None).await;
    let h1 = Backend::start("h1", free_addr("127.0.0.1")).await;
    let admin = free_addr("127.0.0.1");
    let cap = "max_grpc_timeout = \"1s\"\n";
    let no_cap = "max_grpc_timeout = \"0s\"\n";
    let one_slot =
        "max_grpc_timeout = \"1s\"\nmax_connections_per_server = 1\nqueue_timeout = \"20s\"\n";
    // (listener and pool name, server, protocol, server_timeout, pool keys)
    let cases = [
        ("plain", srv.addr, "h2", "1s", ""),
        ("uncapped", srv.addr, "h2", "1s", no_cap),
        ("capped", srv.addr, "h2", "30s", cap),
        ("held", held.addr, "h2", "30s", cap),
        ("blamed", held.addr, "h2", "1s", no_cap),
        ("queued", held.addr, "h2", "30s", one_slot),
        ("h1", h1.addr, "http1", "30s", cap),
    ];
    let mut config = format!("[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n");
    let mut at = std::collections::HashMap::new();
    for (name, server, protocol, timeout, keys) in cases {
        let listen = free_addr("127.0.0.1");
        at.insert(name, listen);
        config.push_str(&format!(
            "[[listener]]\nname = \"{name}\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"{name}\"\n\
             [[pool]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nserver_timeout = \"{timeout}\"\n{keys}\
               [[pool.server]]\n  address = \"{server}\"\n"
        ));
    }
    let listens: Vec<SocketAddr> = at.values().copied().collect();
    let _p = Proxy::start(&config, &listens).await;

    // without the key: server_timeout (1 s) ends a call of 1.5 s
    let c = sleep_call(at["plain"], 1500).await;
    assert_eq!(c["code"], "UNAVAILABLE", "{c}");
    // with it: the call's own 10 s, and the server is told the time left
    let c = sleep_call(at["uncapped"], 1500).await;
    assert_eq!(c["code"], "OK", "{c}");
    let left = left_ms(&c);
    assert!((5000..=8600).contains(&left), "{c}");
    // capped at 1 s: the server is told 1 s at most
    let c = sleep_call(at["capped"], 10).await;
    assert_eq!(c["code"], "OK", "{c}");
    assert!(left_ms(&c) <= 1000, "{c}");

    // a server that holds the call past the cap: rampart ends it there, and
    // cancels its stream
    for _ in 0..3 {
        deadline_exceeded(
            &timed_call(at["held"], "/test.Echo/Call", true).await,
            "respond",
        );
    }
    wait_for(Duration::from_secs(5), "the held calls cancelled", || {
        held.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    // an HTTP/1.1 pool (hyper's client), from HTTP/2 and from gRPC-Web
    deadline_exceeded(
        &timed_call(at["h1"], "/slow?ms=3000", true).await,
        "respond",
    );
    deadline_exceeded(
        &timed_call(at["h1"], "/slow?ms=3000", false).await,
        "respond",
    );

    // the cap (1 s) is under server_timeout (30 s): the server is not blamed
    // (no response error, its breaker closed), nor the pool (no error
    // counted), where the plain pool's timeout counted
    let pool = pool_view(admin, "held").await;
    let s = server_by_id(&pool, &held.addr.to_string());
    assert_eq!(
        (
            &s["response_errors"],
            &s["consecutive_failures"],
            &s["breaker"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from("closed")),
        "{s}"
    );
    assert_eq!(pool["errors"], 0, "{pool}");
    assert_eq!(pool_view(admin, "h1").await["errors"], 0);
    assert_eq!(pool_view(admin, "plain").await["errors"], 1);
    // a deadline of 2 s, over server_timeout (1 s): waited for, then blamed
    // on the server as a timeout would be
    let c = hyper::Request::post(format!("http://{}/test.Echo/Call", at["blamed"]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "2S")
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let sent = std::time::Instant::now();
    let resp = h2c_client().request(c).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "4", "{resp:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        sent.elapsed()
    );
    let pool = pool_view(admin, "blamed").await;
    assert_eq!(pool["errors"], 1, "{pool}");
    let s = server_by_id(&pool, &held.addr.to_string());
    assert_eq!(s["response_errors"], 1, "{s}");

    // a call waiting in the queue (the one slot held by a plain request) ends
    // at its deadline there
    let holder = fire(at["queued"], 1).pop().unwrap();
    wait_for(Duration::from_secs(5), "the slot taken", || {
        held.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let queued = timed_call(at["queued"], "/test.Echo/Call", true).await;
    deadline_exceeded(&queued, "before a server was free");
    assert_eq!(held.in_flight.load(Ordering::SeqCst), 1, "never sent");
    held.gate.send_replace(true);
    assert_eq!(holder.await.unwrap().0, StatusCode::OK);
}

/// An HTTP/2 server (hyper; h2c, or h2 over TLS with ALPN) that counts its
/// connections and the streams open on each, and holds every response until
/// the gate opens.
struct H2Backend {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    /// The most streams open at once on any one connection.
    max_per_conn: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stream an `H2Backend` holds: its counts, taken down when it ends.
struct Open([Arc<AtomicUsize>; 2]);

impl Drop for Open {
    fn drop(&mut self) {
        for n in &self.0 {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

async fn h2_backend(max_streams: u32, tls: Option<rustls::ServerConfig>) -> H2Backend {
    let addr = free_addr("127.0.0.1");
    let listener = common::listen(addr).await;
    let conns = Arc::new(AtomicUsize::new(0));
    let max_per_conn = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let acceptor = tls.map(|mut c| {
        c.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let (c2, m2, f2) = (conns.clone(), max_per_conn.clone(), in_flight.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let id = c2.fetch_add(1, Ordering::SeqCst);
            let open = Arc::new(AtomicUsize::new(0));
            let (m, f, g) = (m2.clone(), f2.clone(), gate_rx.clone());
            let svc =
                hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let (open, m, f, mut g) = (open.clone(), m.clone(), f.clone(), g.clone());
                    async move {
                        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        f.fetch_add(1, Ordering::SeqCst);
                        // (counted off when answered, or dropped: a stream the
                        // client reset)
                        let _open = Open([open, f]);
                        let _ =
                            tokio::time::timeout(Duration::from_secs(10), g.wait_for(|o| *o)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!("conn-{id}"))),
                        ))
                    }
                });
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.max_concurrent_streams(max_streams);
            match &acceptor {
                None => {
                    tokio::spawn(async move {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                            .await;
                    });
                }
                Some(acc) => {
                    let acc = acc.clone();
                    tokio::spawn(async move {
                        if let Ok(s) = acc.accept(sock).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                    });
                }
            }
        }
    });
    H2Backend {
        addr,
        conns,
        max_per_conn,
        in_flight,
        gate,
        task,
    }
}

/// `n` concurrent GETs through `listen`, over HTTP/1.1 connections of their own.
fn fire(listen: SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<(StatusCode, String)>> {
    (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let c = client();
                get(&c, &format!("http://{listen}/r{i}")).await
            })
        })
        .collect()
}

async fn multiplexed(max_streams: u32, pool_http2: &str, tls: bool) -> (usize, usize) {
    let pki = Pki::new("h2pool");
    let cert = pki.server("backend", &["backend.example.com"]);
    let b = h2_backend(max_streams, tls.then(|| t::server_config(&cert))).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let tls_cfg = if tls {
        format!(
            "  [pool.tls]\n  ca = \"{}\"\n  server_name = \"backend.example.com\"\n",
            pki.ca().display()
        )
    } else {
        String::new()
    };
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n{pool_http2}{tls_cfg}\
           [[pool.server]]\n  address = \"{}\"\n",
        b.addr
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let n = 12;
    let reqs = fire(listen, n);
    // all twelve reach the server at once (so they are multiplexed), then go
    wait_for(
        Duration::from_secs(10),
        "all requests at the server",
        || b.in_flight.load(Ordering::SeqCst) == n,
    )
    .await;
    b.gate.send_replace(true);
    let mut conns_seen = std::collections::HashSet::new();
    for r in reqs {
        let (st, body) = r.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{body}");
        conns_seen.insert(body);
    }
    let conns = b.conns.load(Ordering::SeqCst);
    assert_eq!(conns_seen.len(), conns, "every connection carried requests");
    (conns, b.max_per_conn.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_pool_multiplexes_streams_over_few_connections() {
    // the server allows 100 streams: twelve requests share one connection
    let (conns, per_conn) = multiplexed(100, "", false).await;
    assert_eq!((conns, per_conn), (1, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_opens_at_the_servers_max_concurrent_streams() {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 4: at least three connections, never
    // more than four streams on one (a stream the server refused is sent again)
    let (conns, per_conn) = multiplexed(4, "", false).await;
    assert!(per_conn <= 4, "{per_conn} streams on one connection");
    assert!((3..=6).contains(&conns), "{conns} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_own_stream_limit_applies_over_h2_with_tls() {
    // [pool.http2] max_concurrent_streams = 3 to a server allowing 100, over
    // TLS with ALPN h2: exactly four connections of three streams
    let (conns, per_conn) =
        multiplexed(100, "  [pool.http2]\n  max_concurrent_streams = 3\n", true).await;
    assert_eq!((conns, per_conn), (4, 3));
}

/// A reload that changes how a pool's connections are made (here `[pool.tls]
/// server_name`) starts a new connection epoch on HTTP/2 too: a stream in
/// flight on the old connection finishes there, the next request opens a new
/// connection under the new settings, and the old one takes no more streams.
/// A reload that changes nothing of that (a weight) keeps the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_how_connections_are_made_moves_h2_streams_to_a_new_one() {
    let pki = Pki::new("h2epoch");
    let cert = pki.server("backend", &["one.example.com", "two.example.com"]);
    let b = h2_backend(100, Some(t::server_config(&cert))).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = |name: &str, weight: u32| {
        format!(
            "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
             [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
             [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n\
               [pool.tls]\n  ca = \"{}\"\n  server_name = \"{name}\"\n\
               [[pool.server]]\n  address = \"{}\"\n  weight = {weight}\n",
            pki.ca().display(),
            b.addr
        )
    };
    let p = Proxy::start(&config("one.example.com", 1), &[listen, admin]).await;
    let reload = |text: String| {
        let path = p.config.clone();
        async move {
            std::fs::write(&path, text).unwrap();
            let (st, body) = admin_post(admin, "/api/reload", "").await;
            assert_eq!(st, StatusCode::OK, "{body}");
        }
    };
    // a stream held open on the first connection
    let first = fire(listen, 1).pop().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the first request at the server",
        || b.in_flight.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);

    reload(config("two.example.com", 1)).await;
    // the next request: a second connection, though the first has room
    let second = fire(listen, 1).pop().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the second request at the server",
        || b.in_flight.load(Ordering::SeqCst) == 2,
    )
    .await;
    assert_eq!(b.conns.load(Ordering::SeqCst), 2);
    b.gate.send_replace(true);
    assert_eq!(first.await.unwrap(), (StatusCode::OK, "conn-0".into()));
    assert_eq!(second.await.unwrap(), (StatusCode::OK, "conn-1".into()));
    // the old connection takes no more streams; the new one does
    for _ in 0..3 {
        assert_eq!(
            get(&client(), &format!("http://{listen}/")).await.1,
            "conn-1"
        );
    }
    // a weight is not how connections are made: the connection stays
    reload(config("two.example.com", 2)).await;
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.1,
        "conn-1"
    );
    assert_eq!(b.conns.load(Ordering::SeqCst), 2);
}

/// A server that takes no stream on a new connection, GOAWAY with its
/// SETTINGS (a server draining while its listener still accepts) or
/// SETTINGS_MAX_CONCURRENT_STREAMS = 0, fails the request as a connection
/// that could not be had, at once; rampart does not drop that connection
/// and open another without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_no_stream_fails_the_request_at_once() {
    for mode in ["0", "none"] {
        let dir = temp_dir("nostreams");
        let stats_file = dir.join("stats.json");
        let server = PyServer::start(
            "goaway_server.py",
            free_addr("127.0.0.1"),
            &[mode, stats_file.to_str().unwrap()],
        )
        .await;
        let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
        let config = format!(
            "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
             [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
             [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\nretries = 1\n\
               [[pool.server]]\n  address = \"{}\"\n",
            server.addr
        );
        let _p = Proxy::start(&config, &[listen]).await;
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            client().get(format!("http://{listen}/x").parse().unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{mode}: no answer within 10 s"))
        .expect("an answer");
        assert!(
            got.status() == StatusCode::BAD_GATEWAY
                || got.status() == StatusCode::SERVICE_UNAVAILABLE,
            "{mode}: {}",
            got.status()
        );
        let stats: Value =
            serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
        let conns = stats["connections"].as_u64().unwrap();
        // the first try and one retry
        assert!((1..=2).contains(&conns), "{mode}: {conns} connections");
        assert_eq!(stats["answered"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_goaway_under_load_loses_no_request() {
    let dir = temp_dir("goaway");
    let stats_file = dir.join("stats.json");
    let server = PyServer::start(
        "goaway_server.py",
        free_addr("127.0.0.1"),
        &["40", stats_file.to_str().unwrap()],
    )
    .await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    // no retries to other servers: only the resend of unprocessed streams helps
    let config = format!(
        "[global]\nthreads = 2\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\nretries = 0\n\
           [[pool.server]]\n  address = \"{}\"\n",
        server.addr
    );
    // the h2 client's and the lifecycle's debug lines, shown if a request is lost
    let p = Proxy::start_logging(
        &config,
        &[listen],
        "info,rampart::upstream=debug,rampart::proxy=debug",
    )
    .await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let (total, workers) = (800usize, 24usize);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, failures) = (next.clone(), failures.clone());
            tokio::spawn(async move {
                let c = client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    // half GETs, half POSTs with a body (not idempotent: sent
                    // again only because the server did not process them)
                    let (method, body) = if i % 2 == 0 {
                        ("GET", String::new())
                    } else {
                        ("POST", format!("body-{i}"))
                    };
                    let req = hyper::Request::builder()
                        .method(method)
                        .uri(format!("http://{listen}/r{i}"))
                        .body(BodyExt::boxed(http_body_util::Full::new(
                            bytes::Bytes::from(body.clone()),
                        )))
                        .unwrap();
                    let want = format!("{method} /r{i} {}", body.len());
                    match c.request(req).await {
                        Ok(resp) => {
                            let st = resp.status();
                            let got = resp.into_body().collect().await.map(|b| b.to_bytes());
                            match got {
                                Ok(b) if st == StatusCode::OK && b == want.as_bytes() => {}
                                other => failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{i}: {st} {other:?}")),
                            }
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{i}: {e}")),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    if !failures.is_empty() {
        for l in p
            .stderr()
            .lines()
            .filter(|l| l.contains("request failed") || l.contains("HTTP/2"))
        {
            eprintln!("{l}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} lost: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // every request answered once (the server writes its counts just after its
    // last answer); connections left with GOAWAY all along, and some streams
    // were not processed (so resending them was needed)
    let read = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    wait_for(Duration::from_secs(5), "the server's final counts", || {
        read()["answered"].as_u64() >= Some(total as u64)
    })
    .await;
    let stats = read();
    assert_eq!(stats["answered"], total as u64, "{stats}");
    assert!(stats["goaways"].as_u64().unwrap() >= 15, "{stats}");
    assert!(stats["unprocessed"].as_u64().unwrap() > 0, "{stats}");
}

/// GET `path` through `listen` on `c`: status, the `x-big` field's length, and
/// the body, or why it broke off.
async fn odd_get(
    c: &Client,
    listen: SocketAddr,
    path: &str,
) -> (StatusCode, usize, Result<String, String>) {
    try_odd_get(c, listen, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// tests/h2/odd_server.py behind a one-thread rampart's `h2` pool, with
/// `pool_keys` added to the pool's table: the server, its stats file, the
/// listener and the proxy.
async fn odd_pool(name: &str, pool_keys: &str) -> (PyServer, PathBuf, SocketAddr, Proxy) {
    odd_pool_and(name, pool_keys, None).await
}

/// `odd_pool` with `other` as the pool's second server.
async fn odd_pool_and(
    name: &str,
    pool_keys: &str,
    other: Option<SocketAddr>,
) -> (PyServer, PathBuf, SocketAddr, Proxy) {
    let stats_file = temp_dir(name).join("stats.json");
    let server = PyServer::start(
        "odd_server.py",
        free_addr("127.0.0.1"),
        &[stats_file.to_str().unwrap()],
    )
    .await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n{pool_keys}\
           [[pool.server]]\n  address = \"{}\"\n{}",
        server.addr,
        other.map_or(String::new(), |a| format!(
            "  [[pool.server]]\n  address = \"{a}\"\n"
        )),
    );
    let p = Proxy::start(&config, &[listen]).await;
    (server, stats_file, listen, p)
}

/// An `odd_pool`'s keys for a retry on the other server, on what the odd
/// server's paths do.
const RETRY_KEYS: &str = "retries = 1\nretry_budget_percent = 100\n\
                          retry_on = [\"connect_failure\", \"reset\", \"503\"]\n";

/// `odd_get`, and an error if no response head came.
async fn try_odd_get(
    c: &Client,
    listen: SocketAddr,
    path: &str,
) -> Result<(StatusCode, usize, Result<String, String>), String> {
    let resp = c
        .get(format!("http://{listen}{path}").parse().unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let big = resp.headers().get("x-big").map_or(0, |v| v.len());
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .map_err(|e| format!("{e:?}"));
    Ok((status, big, body))
}

/// rampart's HTTP/2 client (src/http2/client.rs) against a server that answers
/// in each of the odd ways HTTP/2 allows or forbids (tests/h2/odd_server.py):
/// interim responses, CONTINUATION, padding and trailers are served, and so is
/// an answer reset after its end; a malformed or oversized head, a 101, a reset
/// before the head and a refused stream fail (or are sent again) alone; a body
/// cut short breaks off for the client rather than looking whole; and none of
/// it ends the connection the other streams use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_servers_odd_answers_fail_only_their_own_stream() {
    let (_server, stats_file, listen, _p) = odd_pool("odd", "retries = 0\n").await;
    let stats = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let c = client();
    let ok = |body: &str| (StatusCode::OK, 0, Ok(body.to_string()));
    assert_eq!(odd_get(&c, listen, "/ok").await, ok("ok"));
    assert_eq!(odd_get(&c, listen, "/continue").await, ok("after-100"));
    assert_eq!(
        odd_get(&c, listen, "/big-head").await,
        (StatusCode::OK, 40_000, Ok("big".into()))
    );
    assert_eq!(odd_get(&c, listen, "/padded").await, ok("padded-body"));
    assert_eq!(odd_get(&c, listen, "/trailers").await, ok("t"));
    // a reset after the whole answer (trailers ended it) leaves it whole
    assert_eq!(odd_get(&c, listen, "/reset-after-end").await, ok("whole"));
    for bad in ["/upper", "/huge-head", "/reset-before", "/switch"] {
        let (st, _, _) = odd_get(&c, listen, bad).await;
        assert_eq!(st, StatusCode::BAD_GATEWAY, "{bad}");
    }
    // refused: not processed, so sent again (retries = 0 does not stop that)
    assert_eq!(odd_get(&c, listen, "/refuse/a").await, ok("again"));
    assert_eq!(stats()["refused"], 1);
    // the server's head was out: the answer breaks off for the client (its
    // connection closes, with or without the head), never looks whole
    for cut in ["/reset-after", "/short", "/long"] {
        match try_odd_get(&client(), listen, cut).await {
            Err(_) => {}
            Ok((st, _, body)) => {
                assert_eq!(st, StatusCode::OK, "{cut}");
                assert!(body.is_err(), "{cut}: {body:?}");
            }
        }
    }
    // one connection carried all of it
    let c2 = client();
    assert_eq!(odd_get(&c2, listen, "/ok").await, ok("ok"));
    assert_eq!(stats()["connections"], 1, "{}", stats());
    // a response, then the server closes: the response is whole, and the
    // next request opens another connection
    assert_eq!(
        odd_get(&client(), listen, "/close-after").await,
        ok(&"bye".repeat(60_000))
    );
    assert_eq!(odd_get(&client(), listen, "/ok").await, ok("ok"));
    assert_eq!(stats()["connections"], 2, "{}", stats());
}

/// A hyper HTTP/2 server that answers every request with its own body, with
/// windows of 16 KiB (stream) and 32 KiB (connection).
async fn h2_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let addr = free_addr("127.0.0.1");
    let listener = common::listen(addr).await;
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let svc =
                hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(req.into_body()))
                });
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .initial_stream_window_size(16 * 1024)
                .initial_connection_window_size(32 * 1024)
                .adaptive_window(false);
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Request and response bodies far larger than every flow-control window on
/// the way (the server's 16 KiB, rampart's own 64 KiB to it) come through
/// whole and in order, several at once on one connection: a body kept for a
/// replay (sent whole) and streaming ones, with and without a length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_every_window_cross_an_h2_pool_whole() {
    let (backend, task) = h2_echo().await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n\
           [pool.http2]\n  initial_stream_window_size = 65535\n  initial_connection_window_size = 65535\n\
           [[pool.server]]\n  address = \"{backend}\"\n"
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let body = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    let calls: Vec<_> = [(30_000usize, true), (3_000_000, true), (2_500_000, false)]
        .into_iter()
        .enumerate()
        .map(|(k, (n, sized))| {
            let sent = body(n, k as u8);
            tokio::spawn(async move {
                let req_body = if sized {
                    BodyExt::boxed(http_body_util::Full::new(bytes::Bytes::from(sent.clone())))
                } else {
                    // no length: chunked to rampart, streamed to the server
                    let chunks: Vec<Result<_, std::convert::Infallible>> = sent
                        .chunks(100_000)
                        .map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c))))
                        .collect();
                    BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                        chunks,
                    )))
                };
                let req = hyper::Request::post(format!("http://{listen}/echo"))
                    .body(req_body)
                    .unwrap();
                let resp = client().request(req).await.expect("request");
                let st = resp.status();
                let got = resp.into_body().collect().await.expect("body").to_bytes();
                (n, st, got.len(), got.as_ref() == sent.as_slice())
            })
        })
        .collect();
    for c in calls {
        let (n, st, len, same) = c.await.unwrap();
        assert_eq!((st, len), (StatusCode::OK, n));
        assert!(same, "the {n}-byte body came back changed");
    }
    task.abort();
}

/// An HTTP/2 server (the h2 crate's) whose `/big` answer is 8 MiB sent only
/// as the client's windows allow: each piece is handed to h2 within the send
/// capacity h2 granted, which follows the stream's and the connection's
/// windows, and counted in `sent`. Any other path is answered "small". Its
/// accepted connections are counted in `conns`.
struct WindowedBackend {
    addr: SocketAddr,
    sent: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WindowedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn windowed_backend() -> WindowedBackend {
    const BIG: usize = 8 << 20;
    let addr = free_addr("127.0.0.1");
    let listener = common::listen(addr).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (sent2, conns2) = (sent.clone(), conns.clone());
    let task = tokio::spawn(async move {
        let big = bytes::Bytes::from(vec![b'b'; BIG]);
        while let Ok((sock, _)) = listener.accept().await {
            conns2.fetch_add(1, Ordering::SeqCst);
            let (big, sent) = (big.clone(), sent2.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                // (accept drives the connection: the answers go out meanwhile)
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let (big, sent) = (big.clone(), sent.clone());
                    tokio::spawn(async move {
                        if req.uri().path() != "/big" {
                            let head = hyper::Response::builder()
                                .header("content-length", "5")
                                .body(())
                                .unwrap();
                            if let Ok(mut body) = respond.send_response(head, false) {
                                let _ = body.send_data(bytes::Bytes::from_static(b"small"), true);
                            }
                            return;
                        }
                        let head = hyper::Response::builder()
                            .header("content-length", BIG.to_string())
                            .body(())
                            .unwrap();
                        let Ok(mut tx) = respond.send_response(head, false) else {
                            return;
                        };
                        let mut off = 0;
                        while off < BIG {
                            tx.reserve_capacity((BIG - off).min(64 * 1024));
                            while tx.capacity() == 0 {
                                match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
                                    Some(Ok(_)) => {}
                                    _ => return,
                                }
                            }
                            let n = tx.capacity().min(BIG - off);
                            if tx
                                .send_data(big.slice(off..off + n), off + n == BIG)
                                .is_err()
                            {
                                return;
                            }
                            sent.fetch_add(n, Ordering::SeqCst);
                            off += n;
                        }
                    });
                }
            });
        }
    });
    WindowedBackend {
        addr,
        sent,
        conns,
        task,
    }
}

/// An HTTP/2 client connection to `listen`, its frames written by hand, that
/// asks GET of each of `paths` (streams 1, 3, ...) and reads nothing: its
/// SETTINGS_INITIAL_WINDOW_SIZE is 0 and it never sends WINDOW_UPDATE, so no
/// response DATA may go to it. Held open until dropped.
async fn h2_client_reading_nothing(listen: SocketAddr, paths: &[&str]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS (type 4) on stream 0: SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0
    out.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0x4, 0, 0, 0, 0]);
    let authority = listen.to_string();
    for (k, path) in paths.iter().enumerate() {
        let id = 1 + 2 * k as u32;
        // HPACK: GET and http from the static table, then :path and
        // :authority as literals without indexing (static names 4 and 1)
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, authority.len() as u8]);
        block.extend_from_slice(authority.as_bytes());
        // HEADERS (type 1) with END_STREAM | END_HEADERS (0x1 | 0x4)
        out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[0x1, 0x5]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&block);
    }
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(&out).await.unwrap();
    s
}

/// A client that reads nothing holds up only its own streams on the HTTP/2
/// connection to the server, never the connection's others: rampart gives the
/// connection's window back as DATA arrives (as nghttp2 and Envoy do), and
/// only the stream's as its reader takes it. Here two `/big` answers for a
/// client whose window is 0 fill their 1 MiB stream windows, 2 MiB together:
/// all of the connection's window. Were it given back only as readers take
/// the data, the server could send no DATA on that connection any more, and
/// another client's small answer on it would wait until client_timeout
/// (30 s) closed the first client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_does_not_stall_the_other_streams_of_its_server_connection() {
    let b = windowed_backend().await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n\
           [pool.http2]\n  initial_stream_window_size = 1048576\n\
           initial_connection_window_size = 2097152\n\
           [[pool.server]]\n  address = \"{}\"\n",
        b.addr
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let _stalled = h2_client_reading_nothing(listen, &["/big", "/big"]).await;
    // the server sent all the windows let it: 1 MiB on each stream, the whole
    // connection window (rampart's server takes a frame or so of each, far
    // from the half of a window at which any of it would come back)
    wait_for(
        Duration::from_secs(10),
        "both /big answers at their stream windows",
        || b.sent.load(Ordering::SeqCst) >= 2 << 20,
    )
    .await;
    let (c, url) = (client(), format!("http://{listen}/small"));
    let got = tokio::time::timeout(Duration::from_secs(10), get(&c, &url))
        .await
        .expect("/small stalled behind the streams of a client that reads nothing");
    assert_eq!(got, (StatusCode::OK, "small".to_string()));
    // on the same connection as the stalled streams, not a new one
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
}

/// A request to an HTTP/2 pool that fails after it was sent goes again, from
/// the copy kept for it, to the other server: a PUT (idempotent) with a body
/// reset by one server before any answer (`reset` in retry_on), or answered
/// 503 (in retry_on), is answered by the echo server with the body sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_an_h2_server_fails_is_replayed_whole_on_the_other() {
    let (echo, task) = h2_echo().await;
    let (_odd, stats_file, listen, _p) = odd_pool_and("h2replay", RETRY_KEYS, Some(echo)).await;
    let c = client();
    // round robin: of each two requests one goes to the odd server first
    for i in 0..6 {
        for path in ["/reset-before", "/status-503"] {
            let sent = format!("body {i} for {path}");
            let req = hyper::Request::put(format!("http://{listen}{path}"))
                .body(BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(sent.clone()),
                )))
                .unwrap();
            let resp = c.request(req).await.expect("request");
            let st = resp.status();
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                (st, got.as_ref()),
                (StatusCode::OK, sent.as_bytes()),
                "{path}"
            );
        }
    }
    // the odd server had its turns (and failed each)
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert!(stats["connections"].as_u64() >= Some(1), "{stats}");
    task.abort();
}

/// A request an HTTP/2 server refuses (REFUSED_STREAM) on every try was not
/// processed (RFC 9113 8.7): once the resends on that server are spent, it
/// goes to the other server as a request never sent would, a POST too (not
/// replayed after a failure that may have reached the application), and the
/// refusals do not eject the server that sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_an_h2_server_keeps_refusing_goes_to_the_other() {
    let dir = temp_dir("h2refused");
    let stats_file = dir.join("stats.json");
    let odd = PyServer::start(
        "odd_server.py",
        free_addr("127.0.0.1"),
        &[stats_file.to_str().unwrap()],
    )
    .await;
    let (echo, task) = h2_echo().await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\nretries = 1\nretry_budget_percent = 100\n\
           [[pool.server]]\n  address = \"{}\"\n\
           [[pool.server]]\n  address = \"{echo}\"\n",
        odd.addr
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let c = client();
    // enough requests for the breaker's 5 failures in a row, whichever
    // server round robin gives each first
    for i in 0..12 {
        let sent = format!("body {i}");
        let req = hyper::Request::post(format!("http://{listen}/refuse-always"))
            .body(BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from(sent.clone()),
            )))
            .unwrap();
        let resp = c.request(req).await.expect("request");
        let st = resp.status();
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            (st, got.as_ref()),
            (StatusCode::OK, sent.as_bytes()),
            "POST {i}"
        );
    }
    // the refusing server had its turns: the first try and three resends each
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert!(stats["refused_always"].as_u64() >= Some(4), "{stats}");
    // a stream refused four times in a row counts against the server: one
    // that refuses every stream is ejected, not kept in rotation with each
    // request paying four round trips (a single refusal does not count:
    // `an_h2_servers_odd_answers_fail_only_their_own_stream`)
    let view = pool_view(admin, "h2").await;
    let server = server_by_id(&view, &odd.addr.to_string());
    assert_ne!(server["breaker"], "closed", "{view}");
    task.abort();
}

/// A new HTTP/2 connection to a server is set up within one connect_timeout
/// in all, not one for each step: a server whose TLS handshake and whose
/// SETTINGS each come 0.7 s late (each step within the 1 s timeout, the two
/// together beyond it) fails the request as a connect timeout (502), where
/// with a timeout per step the connection took 1.4 s and the request went
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_h2_connection_is_set_up_within_one_connect_timeout() {
    let pki = Pki::new("h2slow");
    let cert = pki.server("backend", &["backend.example.com"]);
    let mut tls = t::server_config(&cert);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let backend = free_addr("127.0.0.1");
    let listener = common::listen(backend).await;
    let late = Duration::from_millis(700);
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                let Ok(s) = acceptor.accept(sock).await else {
                    return;
                };
                tokio::time::sleep(late).await;
                let svc = hyper::service::service_fn(
                    |_req: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\nconnect_timeout = \"1s\"\nretries = 0\n\
           [pool.tls]\n  ca = \"{}\"\n  server_name = \"backend.example.com\"\n\
           [[pool.server]]\n  address = \"{backend}\"\n",
        pki.ca().display()
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let started = std::time::Instant::now();
    let (st, body) = get(&client(), &format!("http://{listen}/x")).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    task.abort();
}

/// An HTTP/2 server answering with the fields the X-Forwarded-* tests look
/// at, and the length of the body it was sent.
async fn fields_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let addr = free_addr("127.0.0.1");
    let listener = common::listen(addr).await;
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut seen = String::new();
                    for n in [
                        "x-forwarded-for",
                        "x-forwarded-proto",
                        "x-forwarded-host",
                        "x-secret",
                        "keep-alive",
                        "x-kept",
                    ] {
                        let all: Vec<_> = req
                            .headers()
                            .get_all(n)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?"))
                            .collect();
                        seen.push_str(&format!("{n}={}\n", all.join("|")));
                    }
                    let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                    seen.push_str(&format!("body={}\n", body.unwrap_or(usize::MAX)));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(seen)),
                    ))
                },
            );
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
            });
        }
    });
    (addr, task)
}

/// `req`'s bytes to `listen` on a connection of their own, and all that came
/// back until the proxy closed it.
async fn raw_exchange(listen: SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A request to an HTTP/2 pool carries the X-Forwarded-* fields rampart
/// writes: what earlier hops wrote in X-Forwarded-For is kept and the
/// client's own X-Forwarded-Host and -Proto are replaced. Hop-by-hop fields,
/// and those Connection names, do not reach the server. Bodiless, with a body
/// kept for a replay, and with one streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_pool_gets_rampart_s_forwarded_fields_and_no_hop_by_hop_one() {
    let (addr, task) = fields_server().await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n\
           [[pool.server]]\n  address = \"{addr}\"\n"
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let spoof = "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
                 X-Forwarded-For: 203.0.113.9\r\nConnection: x-secret, close\r\n\
                 X-Secret: hop\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n";
    let plain = "Connection: close\r\nX-Kept: yes\r\n";
    let cases = [
        ("GET", spoof, "", "203.0.113.9, 127.0.0.1"),
        ("GET", plain, "", "127.0.0.1"),
        (
            "POST",
            spoof,
            "Content-Length: 5\r\n\r\nhello",
            "203.0.113.9, 127.0.0.1",
        ),
        // chunked: streamed to the server
        (
            "POST",
            spoof,
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "203.0.113.9, 127.0.0.1",
        ),
    ];
    for (method, fields, rest, xff) in cases {
        let rest = if rest.is_empty() { "\r\n" } else { rest };
        let req = format!("{method} /f HTTP/1.1\r\nHost: shop.example\r\n{fields}{rest}");
        let out = raw_exchange(listen, &req).await;
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        let want_body = if method == "POST" { 5 } else { 0 };
        let want = format!(
            "x-forwarded-for={xff}\nx-forwarded-proto=http\nx-forwarded-host=shop.example\n\
             x-secret=\nkeep-alive=\nx-kept=yes\nbody={want_body}\n"
        );
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{method} {fields:?}: {out}"
        );
        assert_eq!(body, want, "{method} {fields:?} {rest:?}");
    }
    task.abort();
}

/// The X-Forwarded-* fields of a request kept for a replay (they travel
/// beside its map, not in it) reach the server that answers, once each, when
/// the request went to another server first: one that refused the stream on
/// every try (the request is handed back, then sent from a map that holds
/// them) and one that answered 503 (the kept request is sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_h2_request_carries_rampart_s_forwarded_fields_once() {
    let (addr, task) = fields_server().await;
    let (_odd, stats_file, listen, _p) = odd_pool_and("h2xf", RETRY_KEYS, Some(addr)).await;
    // round robin: of each two requests in a row one goes to the odd server
    // first (a retry's pick moves the turn on too)
    // (a POST a server refused was not processed: it goes again; a 503's
    // request goes again if it is idempotent)
    for (method, path) in [("POST", "/refuse-always"), ("PUT", "/status-503")] {
        for i in 0..3 {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: shop.example\r\n\
                 X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\n\
                 Connection: close\r\nContent-Length: 5\r\n\r\nhello"
            );
            let out = raw_exchange(listen, &req).await;
            let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
            assert!(out.starts_with("HTTP/1.1 200"), "{i} {path}: {out}");
            assert_eq!(
                body,
                "x-forwarded-for=203.0.113.9, 127.0.0.1\nx-forwarded-proto=http\n\
                 x-forwarded-host=shop.example\nx-secret=\nkeep-alive=\nx-kept=\nbody=5\n",
                "{i} {path}"
            );
        }
    }
    // the odd server had its turns on both paths
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert!(stats["refused_always"].as_u64() >= Some(1), "{stats}");
    assert!(stats["status_503"].as_u64() >= Some(1), "{stats}");
    task.abort();
}

/// A field sent "never indexed" (RFC 7541 6.2.3: a sensitive value, such as
/// a token) is sent on the same way, both ways through an `h2` pool, as an
/// intermediary must: a client's Authorization reaches the server so, and a
/// server's field so marked reaches the client so. Plain fields stay plain.
/// Client and server are python3-h2, which tell the representations apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_indexed_field_is_sent_on_never_indexed_both_ways() {
    let (_server, _, listen, p) = odd_pool("never", "").await;
    let probe = format!("{}/tests/h2/probe.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("/usr/bin/python3")
        .args([
            &probe,
            "never",
            "127.0.0.1",
            &listen.port().to_string(),
            "/never",
        ])
        .output()
        .expect("/usr/bin/python3 (apt: python3-h2)");
    let line = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "probe: {e}: {line}; {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // a whole answer (not one the probe stopped waiting for)
    assert_eq!(got["ended"], true, "{got}; {}", p.stderr());
    assert_eq!(got["status"], "200", "{got}");
    // the server saw the client's Authorization "never indexed", x-plain not
    assert_eq!(got["body"], "authorization", "{got}");
    // and the client the server's x-answer-secret, x-answer-plain not
    assert_eq!(
        got["never"],
        serde_json::json!(["x-answer-secret"]),
        "{got}"
    );
}

/// A TCP relay in front of a server: it passes bytes both ways until
/// `blackhole`, when every connection it carries at that moment stops passing
/// anything either way and neither of its sockets closes (a flow a NAT or a
/// firewall dropped, the server itself well). Connections made after that
/// pass as before.
struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections numbered below this pass nothing.
    cut: tokio::sync::watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let addr = free_addr("127.0.0.1");
        let listener = common::listen(addr).await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let (cut, cut_rx) = tokio::sync::watch::channel(0usize);
        let n = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                let i = n.fetch_add(1, Ordering::SeqCst);
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                tokio::spawn(relay_pipe(down_r, up_w, i, cut_rx.clone()));
                tokio::spawn(relay_pipe(up_r, down_w, i, cut_rx.clone()));
            }
        });
        Relay {
            addr,
            accepted,
            cut,
            task,
        }
    }

    /// The connections carried now pass nothing more, either way.
    fn blackhole(&self) {
        self.cut.send_replace(self.accepted.load(Ordering::SeqCst));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction of the relay's connection `i`: what `from` reads goes to
/// `to` until the connection is cut; then nothing, both sockets held open
/// (until the test's runtime drops the task).
async fn relay_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    i: usize,
    mut cut: tokio::sync::watch::Receiver<usize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(n) if n > 0 => n,
                _ => return,
            },
            _ = cut.wait_for(|c| i < *c) => break,
        };
        // (what was read as the cut came is not passed on)
        let cut_now = i < *cut.borrow();
        if cut_now {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // blackholed: `from` and `to` stay open, and nothing passes
    std::future::pending::<()>().await;
}

/// A connection to a server whose flow is dropped on the way (a NAT's or a
/// firewall's table lost it; the server is well, and new connections reach
/// it) is found dead by the keepalive PINGs and closed, and the next requests
/// go over a new connection within seconds. Without the PINGs the dead
/// connection stayed the first with room: each request on it waited
/// server_timeout (30 s), and TCP never failed it (the relay's end of it
/// acknowledges all that comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_flow_is_dropped_is_found_dead_by_the_keepalive() {
    // an HTTP/2 server answering with the number of the connection it came on
    let backend = free_addr("127.0.0.1");
    let listener = common::listen(backend).await;
    let server = tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((sock, _)) = listener.accept().await {
            let id = next;
            next += 1;
            let svc = hyper::service::service_fn(
                move |_req: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(format!("conn-{id}"))),
                    ))
                },
            );
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
            });
        }
    });
    let relay = Relay::start(backend).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let config = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
         [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\nserver_timeout = \"30s\"\n\
           [pool.http2]\n  keepalive_interval = \"1s\"\n  keepalive_timeout = \"1s\"\n\
           [[pool.server]]\n  address = \"{}\"\n",
        relay.addr
    );
    let _p = Proxy::start(&config, &[listen]).await;
    let url = format!("http://{listen}/x");
    assert_eq!(
        get(&client(), &url).await,
        (StatusCode::OK, "conn-0".to_string())
    );
    relay.blackhole();
    let cut = std::time::Instant::now();
    // requests until one is answered, each given 4 s (one on the dead
    // connection waits for server_timeout): the keepalive PINGs the silent
    // connection 1 s after its last frame and gives up on it 1 s later, so
    // a request soon after that goes over a new connection
    let mut tries = Vec::new();
    let body = loop {
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "no answer within 10 s of the cut: {tries:?}"
        );
        match tokio::time::timeout(Duration::from_secs(4), try_get(&url)).await {
            Ok(Ok((StatusCode::OK, body))) => break body,
            other => tries.push(format!("{:?}: {other:?}", cut.elapsed())),
        }
        // (the request on the dead connection fails as it is found dead: the
        // next a little later, not in a busy loop)
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "{:?}: {tries:?}",
        cut.elapsed()
    );
    // over a second connection, which the relay passes as any other
    assert_eq!(body, "conn-1", "{tries:?}");
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2, "{tries:?}");
    server.abort();
}

/// A server of hyper's (the h2 crate's HPACK decoder) over h2c that
/// advertises `SETTINGS_HEADER_TABLE_SIZE = table` and answers each request
/// with the fields it decoded (`name: value` lines, in order); and the
/// count of connections it has accepted.
async fn echoing_fields_h2_server(
    table: u32,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let addr = free_addr("127.0.0.1");
    let listener = common::listen(addr).await;
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&conns);
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut text = format!("{}\n", req.uri().path());
                        for (n, v) in req.headers() {
                            text += &format!("{n}: {}\n", v.to_str().unwrap_or("?"));
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(text)),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .header_table_size(table)
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
            });
        }
    });
    (addr, conns, task)
}

/// rampart's requests to an HTTP/2 server index the fields they send in
/// the connection's dynamic table: a server decodes every request as sent,
/// over many requests on one connection, whatever table size the server
/// allows (none; 256 bytes, which holds a few short fields and evicts them
/// in turn; the default), with fields that repeat, change each time, or
/// are too large to add, and credentials (never indexed); the same through
/// HTTP/1.1 and h2c clients. (That fields do go as indexes, and the table
/// size updates, are checked in src/http2/hpack.rs against this side's
/// decoder, the two tables' sizes compared after every block.) On one connection: a
/// block the server could not decode would end the connection (HPACK's
/// COMPRESSION_ERROR), and the request, sent again on a new one, would
/// still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_h2_servers_decode_as_sent_at_every_table_size() {
    for table in [0u32, 256, 4096] {
        let (server, conns, task) = echoing_fields_h2_server(table).await;
        let listen = free_addr("127.0.0.1");
        let config = format!(
            "[global]\nthreads = 1\n\
             [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"h2\"\n\
             [[pool]]\nname = \"h2\"\nprotocol = \"h2\"\n\
               [[pool.server]]\n  address = \"{server}\"\n"
        );
        let _p = Proxy::start(&config, &[listen]).await;
        let big = "b".repeat(2000);
        for (i, c) in [client(), h2c_client()].iter().enumerate() {
            for n in 0..40 {
                let path = if n % 3 == 0 {
                    format!("/svc/Call?n={n}")
                } else {
                    "/svc/Call".into()
                };
                let req = hyper::Request::post(format!("http://{listen}{path}"))
                    .header("x-same", "one value")
                    .header("x-changing", format!("value {n}"))
                    .header("authorization", "Bearer secret")
                    .header("grpc-timeout", format!("{n}m"))
                    .header("x-big", if n % 5 == 0 { big.as_str() } else { "small" })
                    .body(BodyExt::boxed(http_body_util::Full::new(
                        bytes::Bytes::from(format!("{n}")),
                    )))
                    .unwrap();
                let (resp, body) = send(c, req).await;
                assert_eq!(resp.status(), 200, "table {table}, client {i}, request {n}");
                let text = String::from_utf8_lossy(&body).into_owned();
                let path_only = path.split('?').next().unwrap_or_default();
                for want in [
                    format!("{path_only}\n"),
                    "x-same: one value\n".into(),
                    format!("x-changing: value {n}\n"),
                    "authorization: Bearer secret\n".into(),
                    format!("grpc-timeout: {n}m\n"),
                    format!(
                        "x-big: {}\n",
                        if n % 5 == 0 { big.as_str() } else { "small" }
                    ),
                    "x-forwarded-proto: http\n".into(),
                    "x-forwarded-for: 127.0.0.1\n".into(),
                    format!("x-forwarded-host: {listen}\n"),
                ] {
                    assert!(
                        text.contains(&want),
                        "table {table}, client {i}, request {n}: no {want:?} in {text}"
                    );
                }
            }
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "table {table}");
        task.abort();
    }
}
