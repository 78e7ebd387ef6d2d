//! The PROXY protocol on listeners: behind a real HAProxy (send-proxy and
//! send-proxy-v2), and refusals of untrusted, missing and malformed headers.

mod common;

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
        let deadline = Instant::now() + Duration::from_secs(10);
        for a in wait_on {
            while tokio::net::TcpStream::connect(a).await.is_err() {
                assert!(Instant::now() < deadline, "haproxy did not listen on {a}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = p.stderr();
        if log.contains("not a trusted source")
            && log.contains("required on this listener")
            && log.contains("malformed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "refusals not in the log: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
