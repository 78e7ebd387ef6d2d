//! The PROXY protocol on listeners: behind a real HAProxy (send-proxy and
//! send-proxy-v2), and refusals of untrusted, missing and malformed headers.

mod common;

use common::tls;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(listen: SocketAddr, backend: SocketAddr, pp: &str) -> String {
    http_config(listen, "", &[(backend, 1)]).replace(
        "pool = \"api\"\n\n[[pool]]",
        &format!("pool = \"api\"\nproxy_protocol = {pp}\n\n[[pool]]"),
    )
}

/// Connects from `from` (a loopback address), sends `data`, reads to the end.
async fn exchange(from: &str, to: SocketAddr, parts: &[&[u8]]) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip(from), 0)).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.set_nodelay(true).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // not a wait for anything: two writes a moment apart make two segments
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        s.write_all(p).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A real HAProxy (Debian's) running `config`, its stdout in `log`, killed on
/// drop (and `log`'s folder removed); returns once it listens on every address
/// of `wait_on`.
struct HaProxy(std::process::Child, std::path::PathBuf);

impl HaProxy {
    async fn start(config: &str, log: &std::path::Path, wait_on: &[SocketAddr]) -> HaProxy {
        let cfg = log.with_extension("cfg");
        std::fs::write(&cfg, config).unwrap();
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy is not installed: run scripts/test.sh, which installs it");
        for a in wait_on {
            wait_listening(*a, Duration::from_secs(10)).await;
        }
        HaProxy(child, log.parent().unwrap().to_path_buf())
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_send_proxy_v1_and_v2_the_original_client_is_the_client() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &config(
            listen,
            backend.addr,
            r#"{ from = ["127.0.0.1"], mode = "required" }"#,
        ),
        &[listen],
    )
    .await;
    let (v1, v2) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("haproxy");
    let _haproxy = HaProxy::start(
        &format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend v1\n  bind {v1}\n  default_backend r1\nbackend r1\n  server r {listen} send-proxy\n\
             frontend v2\n  bind {v2}\n  default_backend r2\nbackend r2\n  server r {listen} send-proxy-v2\n"
        ),
        &dir.join("haproxy.log"),
        &[v1, v2],
    )
    .await;
    for (version, front, client) in [("v1", v1, "127.0.0.5"), ("v2", v2, "127.0.0.6")] {
        let out = exchange(client, front, &[GET]).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{version}: {out}");
        let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
        // HAProxy connected from 127.0.0.1; the client it names is the client
        assert_eq!(h["x-forwarded-for"], client, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_missing_and_malformed_headers_are_refused_and_a_split_one_is_read() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let required = free_addr("127.0.0.1");
    let p = Proxy::start(
        &config(
            required,
            backend.addr,
            r#"{ from = ["127.0.0.7"], mode = "required" }"#,
        ),
        &[required],
    )
    .await;
    let header = b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 80\r\n";
    let with_header = [&header[..], GET].concat();
    // a trusted source, the header split across two segments
    let out = exchange("127.0.0.7", required, &[&header[..9], &with_header[9..]]).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "203.0.113.9");
    let before = backend.requests();
    // an untrusted source sending a header: refused, not believed
    assert_eq!(exchange("127.0.0.8", required, &[&with_header]).await, "");
    // a trusted source without a header on a required listener: refused
    assert_eq!(exchange("127.0.0.7", required, &[GET]).await, "");
    // malformed headers: refused
    for bad in [
        &b"PROXY TCP4 300.1.1.1 1.1.1.1 1 2\r\n"[..],
        b"PROXY TCP9 1.1.1.1 1.1.1.1 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c000000000000",
    ] {
        let out = exchange("127.0.0.7", required, &[&[bad, GET].concat()]).await;
        assert_eq!(out, "", "{:?}", String::from_utf8_lossy(bad));
    }
    assert_eq!(
        backend.requests(),
        before,
        "a refused connection reached the backend"
    );
    // each refusal counted by its reason ("closed" also counts the harness's
    // probe that the port listens, so it is not compared)
    let counted = |v: &serde_json::Value| -> Vec<u64> {
        let r = &v["listeners"][0]["proxy_protocol_refused"];
        ["untrusted", "missing", "malformed", "timeout"]
            .iter()
            .map(|k| r[k].as_u64().unwrap_or(u64::MAX))
            .collect()
    };
    p.wait_stats(Duration::from_secs(5), "the refusals counted", |v| {
        counted(v) == [1, 1, 3, 0]
    })
    .await;
    let metrics = wait_metric(
        p.admin.unwrap(),
        "rampart_listener_proxy_protocol_refused_total{listener=\"web\",reason=\"malformed\"}",
        3.0,
    )
    .await;
    assert!(metrics.contains("reason=\"untrusted\"} 1"), "{metrics}");

    // optional: no header from anyone is fine; a trusted header is believed
    let optional = free_addr("127.0.0.1");
    let _p2 = Proxy::start(
        &config(
            optional,
            backend.addr,
            r#"{ from = ["127.0.0.7"], mode = "optional" }"#,
        ),
        &[optional],
    )
    .await;
    assert!(exchange("127.0.0.8", optional, &[GET])
        .await
        .starts_with("HTTP/1.1 200"));
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.8");
    assert!(exchange("127.0.0.7", optional, &[&with_header])
        .await
        .starts_with("HTTP/1.1 200"));
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "203.0.113.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v1_and_v2_in_front_of_haproxy_accept_proxy_which_logs_the_client() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let front = free_addr("127.0.0.1");
    let dir = temp_dir("haproxy-accept");
    let log = dir.join("haproxy.log");
    let _haproxy = HaProxy::start(
        &format!(
            "global\n  maxconn 100\n  log stdout format raw local0\ndefaults\n  mode http\n  log global\n  option httplog\n  option forwardfor\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend fe\n  bind {front} accept-proxy\n  default_backend be\nbackend be\n  server b {}\n",
            backend.addr
        ),
        &log,
        &[front],
    )
    .await;
    let (l1, l2, l3) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let admin = free_addr("127.0.0.1");
    let text = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[listener]]
name = "t1"
bind = ["{l1}"]
mode = "tcp"
pool = "pv1"
[[listener]]
name = "t2"
bind = ["{l2}"]
mode = "tcp"
pool = "pv2"
[[listener]]
name = "t3"
bind = ["{l3}"]
mode = "tcp"
pool = "pv2"
proxy_protocol = {{ from = ["127.0.0.1"], mode = "required" }}
[[pool]]
name = "pv1"
send_proxy = "v1"
  [[pool.server]]
  address = "{front}"
[[pool]]
name = "pv2"
send_proxy = "v2"
  [[pool.server]]
  address = "{front}"
"#
    );
    let _p = Proxy::start(&text, &[l1, l2, l3]).await;
    for (version, listen, client) in [("v1", l1, "127.0.0.5"), ("v2", l2, "127.0.0.6")] {
        let out = exchange(client, listen, &[GET]).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{version}: {out}");
        let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
        // HAProxy saw the client rampart named, not rampart's own address
        assert_eq!(h["x-forwarded-for"], client, "{version}");
    }
    // a tcp listener that accepts the PROXY protocol passes the client it was
    // told about on: HAProxy -> rampart -> HAProxy keeps the original client
    let told = [
        &b"PROXY TCP4 203.0.113.50 198.51.100.1 40000 80\r\n"[..],
        GET,
    ]
    .concat();
    let out = exchange("127.0.0.1", l3, &[&told]).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-for"], "203.0.113.50");
    // ... and logs it
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("127.0.0.5:") && text.contains("127.0.0.6:") {
            break;
        }
        assert!(Instant::now() < deadline, "haproxy's log: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keep-alive HTTP/1.1 connection over TLS from `from` (a loopback address).
async fn tls_keepalive(
    from: &str,
    to: SocketAddr,
    pki: &tls::Pki,
    sni: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip(from), 0)).unwrap();
    let tcp = sock.connect(to).await.unwrap();
    let cfg = std::sync::Arc::new(tls::client_config(pki, &["http/1.1"]));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pool_sending_the_proxy_protocol_keeps_each_clients_connections_private() {
    use http_body_util::BodyExt;
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let front = free_addr("127.0.0.1");
    let dir = temp_dir("haproxy-private");
    let log = dir.join("haproxy.log");
    // HAProxy logs the client it was told about and the SNI (PP2 authority TLV)
    let _haproxy = HaProxy::start(
        &format!(
            "global\n  maxconn 100\n  log stdout format raw local0\ndefaults\n  mode http\n  log global\n  option forwardfor\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend fe\n  bind {front} accept-proxy\n  log-format \"client=%ci authority=%[fc_pp_authority]\"\n  default_backend be\nbackend be\n  server b {}\n",
            backend.addr
        ),
        &log,
        &[front],
    )
    .await;
    let pki = tls::Pki::new("PP CA");
    let site = pki.server("site", &["site.example.com"]);
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{web}\"]\nmode = \"http\"\npool = \"haproxy\"\n  [listener.tls]\n  cert = [{:?}]\n[[pool]]\nname = \"haproxy\"\nsend_proxy = \"v2\"\n  [[pool.server]]\n  address = \"{front}\"\n",
        site.pem.display().to_string()
    );
    let _p = Proxy::start(&text, &[web]).await;
    // two clients on kept-alive connections, their requests interleaved: each
    // reaches HAProxy as itself, every time
    let mut a = tls_keepalive("127.0.0.5", web, &pki, "site.example.com").await;
    let mut b = tls_keepalive("127.0.0.6", web, &pki, "site.example.com").await;
    for round in 0..3 {
        for (tx, client) in [(&mut a, "127.0.0.5"), (&mut b, "127.0.0.6")] {
            tx.ready().await.unwrap();
            let req = hyper::Request::get("/")
                .header("host", "site.example.com")
                .body(http_body_util::Empty::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
            let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
            assert_eq!(h["x-forwarded-for"], client, "round {round}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let n = |c: &str| {
            text.lines()
                .filter(|l| {
                    l.contains(&format!("client={c}")) && l.contains("authority=site.example.com")
                })
                .count()
        };
        if n("127.0.0.5") == 3 && n("127.0.0.6") == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "haproxy's log: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The TLVs of a PROXY v2 header: (type, value).
fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 3 {
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        out.push((b[0], b[3..3 + len].to_vec()));
        b = &b[3 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_terminating_tcp_listener_sends_the_pp2_ssl_tlvs() {
    let pki = tls::Pki::new("TLV CA");
    let site = pki.server("site", &["db.example.com"]);
    let alice = pki.issue("alice", "alice", &[], tls::Key::Ecdsa, 30);
    // a server that reads one PROXY v2 header and hands it back
    let server = common::listen(free_addr("127.0.0.1")).await;
    let backend = server.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        // then the client's bytes, until it leaves: a server that closed at
        // once (its unread bytes make that a reset) would cut the client off
        // without a close_notify, which s_client reports as a failure
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        (head, body)
    });
    let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"tcp\"\npool = \"db\"\n  [listener.tls]\n  cert = [{:?}]\n  client_ca = {:?}\n[[pool]]\nname = \"db\"\nsend_proxy = \"v2\"\n  [[pool.server]]\n  address = \"{backend}\"\n",
        site.pem.display().to_string(),
        pki.ca().display().to_string()
    );
    let _p = Proxy::start(&text, &[edge]).await;
    let (ok, out) = tls::s_client(
        edge,
        &[
            "-servername",
            "db.example.com",
            "-cert",
            alice.crt.to_str().unwrap(),
            "-key",
            alice.key.to_str().unwrap(),
        ],
        b"hello",
    );
    assert!(ok, "{out}");
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[13], 0x11, "TCP over IPv4");
    let tlvs = tlvs(&body[12..]);
    let authority = tlvs
        .iter()
        .find(|(t, _)| *t == 0x02)
        .map(|(_, v)| v.clone());
    assert_eq!(
        authority.as_deref(),
        Some(&b"db.example.com"[..]),
        "{tlvs:?}"
    );
    let ssl = &tlvs
        .iter()
        .find(|(t, _)| *t == 0x20)
        .expect("PP2_TYPE_SSL")
        .1;
    assert_eq!(
        ssl[0] & 0x03,
        0x03,
        "client: SSL and a certificate on the connection"
    );
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
    let sub = self::tlvs(&ssl[5..]);
    let get = |t: u8| {
        sub.iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(get(0x21).as_deref(), Some("TLSv1.3"));
    assert_eq!(get(0x22).as_deref(), Some("alice"));
    assert!(
        get(0x23).is_some_and(|c| c.contains("AES") || c.contains("CHACHA")),
        "{sub:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_wildcard_bind_the_proxy_header_names_the_address_the_client_reached() {
    // a server that reads one PROXY v1 line and answers the request after it
    let server = common::listen(free_addr("127.0.0.1")).await;
    let backend = server.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            buf.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let port = common_port(&["0.0.0.0"]);
    let admin = free_addr("127.0.0.1");
    let text = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"0.0.0.0:{port}\"]\nmode = \"http\"\npool = \"pp\"\n[[pool]]\nname = \"pp\"\nsend_proxy = \"v1\"\n  [[pool.server]]\n  address = \"{backend}\"\n"
    );
    let reach: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _p = Proxy::start(&text, &[reach]).await;
    let out = exchange("127.0.0.7", reach, &[GET]).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let line = tokio::time::timeout(Duration::from_secs(5), got)
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("PROXY TCP4 127.0.0.7 127.0.0.1 ") && line.ends_with(&format!(" {port}")),
        "{line}"
    );
}

/// Reads the PROXY header (v1 TCP4, or v2 PROXY over TCP/IPv4) a connection
/// must start with: the (source, destination) it names, None for a
/// connection that starts with anything else.
async fn read_proxy_header(s: &mut tokio::net::TcpStream) -> Option<(SocketAddr, SocketAddr)> {
    let mut first = [0u8; 6];
    s.read_exact(&mut first).await.ok()?;
    if &first == b"PROXY " {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 107 {
                return None;
            }
            s.read_exact(&mut b).await.ok()?;
            line.push(b[0]);
        }
        let line = String::from_utf8(line).ok()?;
        let f: Vec<&str> = line.trim_end().split(' ').collect();
        if f.len() != 5 || f[0] != "TCP4" {
            return None;
        }
        let src = SocketAddr::new(f[1].parse().ok()?, f[3].parse().ok()?);
        let dst = SocketAddr::new(f[2].parse().ok()?, f[4].parse().ok()?);
        return Some((src, dst));
    }
    let mut rest = [0u8; 10];
    s.read_exact(&mut rest).await.ok()?;
    let head = [&first[..], &rest[..]].concat();
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" || head[12] != 0x21 || head[13] != 0x11 {
        return None;
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len < 12 {
        return None;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    let ip = |b: &[u8]| std::net::IpAddr::from([b[0], b[1], b[2], b[3]]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    Some((
        SocketAddr::new(ip(&body[0..4]), port(&body[8..10])),
        SocketAddr::new(ip(&body[4..8]), port(&body[10..12])),
    ))
}

/// Each connection a server saw: its peer, and the (source, destination) of
/// the PROXY header it started with (None: it had none).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(SocketAddr, Option<(SocketAddr, SocketAddr)>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_a_send_proxy_pool_send_the_header_so_a_server_that_requires_it_is_up() {
    for version in ["v1", "v2"] {
        // like nginx's `listen ... proxy_protocol`: a connection without the
        // header is refused ("broken header"); after it, a request gets 200
        let server = common::listen(free_addr("127.0.0.2")).await;
        let backend = server.local_addr().unwrap();
        let seen: Seen = Default::default();
        let record = std::sync::Arc::clone(&seen);
        let accepting = tokio::spawn(async move {
            while let Ok((mut s, peer)) = server.accept().await {
                let record = std::sync::Arc::clone(&record);
                tokio::spawn(async move {
                    let header = read_proxy_header(&mut s).await;
                    record.lock().unwrap().push((peer, header));
                    if header.is_none() {
                        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                        return;
                    }
                    let mut req = Vec::new();
                    let mut b = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") {
                        if s.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        req.push(b[0]);
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        let listen = free_addr("127.0.0.1");
        let extra = format!(
            "send_proxy = \"{version}\"\n[pool.health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\nfast_interval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n"
        );
        let p = Proxy::start(&http_config(listen, &extra, &[(backend, 1)]), &[listen]).await;
        // (before the fix the checks went without the header: always DOWN)
        p.wait_server(Duration::from_secs(10), "api", backend, "UP")
            .await;
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{version}");
        for (peer, header) in seen {
            // the header names the check's own connection: its source is the
            // check socket's address, its destination the server
            assert_eq!(header, Some((peer, backend)), "{version}");
        }
        accepting.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_received_is_passed_on_with_the_destination_it_names() {
    // HAProxy's accept-proxy then send-proxy: the header sent on names the
    // original client and the address that client reached, not rampart's own
    // listening address (a server behind two tiers logs the real destination)
    for mode in ["http", "tcp"] {
        for version in ["v1", "v2"] {
            let server = common::listen(free_addr("127.0.0.2")).await;
            let backend = server.local_addr().unwrap();
            let got = tokio::spawn(async move {
                let (mut s, _) = server.accept().await.unwrap();
                let header = read_proxy_header(&mut s).await;
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut b).await.is_err() {
                        break;
                    }
                    req.push(b[0]);
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                header
            });
            let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
            let text = format!(
                "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"{mode}\"\npool = \"p\"\nproxy_protocol = {{ from = [\"127.0.0.7\"], mode = \"required\" }}\n[[pool]]\nname = \"p\"\nsend_proxy = \"{version}\"\n  [[pool.server]]\n  address = \"{backend}\"\n"
            );
            let _p = Proxy::start(&text, &[edge]).await;
            let header = b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 8443\r\n";
            let out = exchange("127.0.0.7", edge, &[&[&header[..], GET].concat()]).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{mode} {version}: {out}");
            let seen = tokio::time::timeout(Duration::from_secs(5), got)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                seen,
                Some((
                    "203.0.113.9:40000".parse().unwrap(),
                    "198.51.100.1:8443".parse().unwrap()
                )),
                "{mode} {version}"
            );
        }
    }
}
