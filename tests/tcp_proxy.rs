//! TCP mode over real sockets: relay, half-close, balancing, failures, idle timeout.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_config(listen: SocketAddr, pool_extra: &str, servers: &[SocketAddr]) -> String {
    let admin = free_addr("127.0.0.1");
    let mut s = format!(
        r#"[global]
threads = 2
access_log = "text"
[admin]
bind = "{admin}"
[[listener]]
name = "pg"
bind = ["{listen}"]
mode = "tcp"
pool = "db"
[[pool]]
name = "db"
{pool_extra}
"#
    );
    for a in servers {
        s.push_str(&format!("  [[pool.server]]\n  address = \"{a}\"\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_a_session_with_half_close() {
    let p = half_close_session("").await;
    // 1 MB each way is bulk: once a read fills its 32 KiB buffer, a direction
    // goes through a pipe with splice(2). When that first full read comes
    // depends on how the bytes arrive (on a loaded machine, reads come short
    // and more is copied first: CI once saw 1,868,982 spliced), so the bound
    // is what proves both directions spliced: more than one direction's
    // 1,000,000 bytes.
    let admin = p.admin.unwrap();
    let m = wait_metric(admin, "rampart_tcp_spliced_bytes_total", 1_000_001.0).await;
    let spliced = metric(&m, "rampart_tcp_spliced_bytes_total");
    assert!(
        spliced <= 2_000_000.0,
        "{spliced} bytes spliced of 2,000,000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_off_copies_the_same_session() {
    let p = half_close_session("splice = false").await;
    let m = admin_get(p.admin.unwrap(), "/metrics").await.1;
    // the session ended (its log line is out) and nothing went through a pipe
    assert!(m.contains("rampart_tcp_spliced_bytes_total 0"), "{m}");
}

/// A client sends 1 MB and half-closes; the server echoes it all after EOF. The
/// answer must arrive whole through the proxy; returns once the session is logged.
async fn half_close_session(pool_extra: &str) -> Proxy {
    let (echo, _task) = start_echo_after_eof(free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(&tcp_config(listen, pool_extra, &[echo]), &[listen]).await;
    // The echo server answers only after it sees EOF: the client half-closes and
    // must still read the whole answer through the proxy.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("answer after half-close")
        .unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload);
    wait_for(Duration::from_secs(5), "a tcp access log line", || {
        p.stdout().contains("bytes_in=1000000 bytes_out=1000000")
    })
    .await;
    assert!(p.stdout().contains("listener=pg pool=db"), "{}", p.stdout());
    p
}

/// A server answers the start of a long upload with an error and closes, the
/// rest of the upload unread (so its close is a reset), as Postgres does with a
/// FATAL ErrorResponse during a COPY. The proxy's writes of the upload then
/// fail; the error, which the server sent before its reset, must still reach
/// the client whole, followed by an EOF (HAProxy and nginx deliver it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_last_words_reach_a_client_still_uploading() {
    last_words_session("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_last_words_reach_a_client_still_uploading_without_splice() {
    last_words_session("splice = false").await;
}

async fn last_words_session(pool_extra: &str) {
    let mut last = b"EFATAL: terminating connection due to administrator command".to_vec();
    last.resize(200, b'.');
    let l = common::listen(free_addr("127.0.0.2")).await;
    let server = l.local_addr().unwrap();
    let _task = {
        let last = last.clone();
        // every connection (Proxy::start's readiness probe is one, through
        // the proxy) gets the same treatment; the probe sends nothing
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let last = last.clone();
                tokio::spawn(async move {
                    // the start of the upload (bulk: with splice on, the proxy
                    // splices it)
                    let mut first = vec![0u8; 256 << 10];
                    if s.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let _ = s.write_all(&last).await;
                    // more of the upload waits unread: the close (at the end
                    // of this task) is a reset
                    let _ = s.peek(&mut [0u8; 1]).await;
                });
            }
        })
    };
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(&tcp_config(listen, pool_extra, &[server]), &[listen]).await;
    let (mut rd, mut wr) = TcpStream::connect(listen).await.unwrap().into_split();
    // 16 MiB, more than the sockets between the proxy and the server hold, so the
    // proxy is still writing when the server leaves. The upload is refused or
    // drained after that, either is fine; it ends by shutting the client's side.
    let upload = tokio::spawn(async move {
        let chunk = vec![b'd'; 64 << 10];
        for _ in 0..256 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // to the EOF, or to a reset: what came before it is the point
    let read = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the client's side was left open");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&last),
        "what the client got of the server's last words"
    );
    upload.await.unwrap();
    wait_for(Duration::from_secs(5), "the session's log line", || {
        p.stdout()
            .lines()
            .any(|line| line.contains(" bytes_out=200 ") && line.contains(" end=server_abort"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_balanced_round_robin() {
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let mut tasks = Vec::new();
    let mut servers = Vec::new();
    for (i, host) in ["127.0.0.2", "127.0.0.3"].iter().enumerate() {
        let l = tokio::net::TcpListener::bind((*host, port)).await.unwrap();
        servers.push(l.local_addr().unwrap());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.write_all(format!("server-{i}").as_bytes()).await;
            }
        }));
    }
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &tcp_config(listen, "", &servers).replace("threads = 2", "threads = 1"),
        &[listen],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        seen.push(String::from_utf8(buf).unwrap());
    }
    let t = tally(&seen);
    assert_eq!(
        (t.get("server-0"), t.get("server-1")),
        (Some(&10), Some(&10)),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_closes_the_client_at_once() {
    let dead = free_addr("127.0.0.4");
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &tcp_config(listen, "connect_timeout = \"2s\"", &[dead]),
        &[listen],
    )
    .await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "client left hanging");
    assert!(buf.is_empty());
    assert!(t0.elapsed() < Duration::from_secs(2));
    wait_for(
        Duration::from_secs(5),
        "end=connect_error in the log",
        || p.stdout().contains("end=connect_error"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_after_server_timeout() {
    let l = common::listen(free_addr("127.0.0.2")).await;
    let server = l.local_addr().unwrap();
    // a server that accepts and then says nothing, keeping the socket open
    let _task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        }
    });
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &tcp_config(listen, "server_timeout = \"600ms\"", &[server]),
        &[listen],
    )
    .await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("idle session closed")
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t0.elapsed()
    );
    wait_for(
        Duration::from_secs(5),
        "end=idle_timeout in the log",
        || p.stdout().contains("end=idle_timeout"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_retried_on_another_server() {
    let dead = free_addr("127.0.0.4");
    let (echo, _task) = start_echo_after_eof(free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(
        &tcp_config(listen, "", &[dead, echo]).replace("threads = 2", "threads = 1"),
        &[listen],
    )
    .await;
    // round robin sends every other session to the dead server first
    for i in 0..6u8 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(&[i; 100]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, vec![i; 100], "session {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eligible_server_closes_new_sessions_at_once() {
    let dead = free_addr("127.0.0.4");
    let listen = free_addr("127.0.0.1");
    let extra = "connect_timeout = \"5s\"\n[pool.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n";
    let p = Proxy::start(&tcp_config(listen, extra, &[dead]), &[listen]).await;
    p.wait_server(Duration::from_secs(5), "db", dead, "DOWN")
        .await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    wait_for(Duration::from_secs(5), "end=no_server in the log", || {
        p.stdout().contains("end=no_server")
    })
    .await;
}
