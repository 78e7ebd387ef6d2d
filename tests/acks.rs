//! What a new connection costs its client on the wire, read from the client's
//! own TCP_INFO: on a plain HTTP listener the answer carries the
//! acknowledgement of the request (the listener delays it, as HAProxy's HTTP
//! frontends do) and, on a connection that closes, its end (FIN); a TCP
//! listener keeps Linux's immediate acknowledgement. A request that comes in
//! pieces, or whose body is still to come (it goes to hyper), is acknowledged
//! at once, never by the delayed-ACK timer: counted by the kernel (TcpExt
//! DelayedACKs) in a network namespace of the test's own. So is a connection
//! that waited in the accept backlog while a reload turned its HTTP listener
//! into a TCP one.

mod common;

use common::netns::{is_root, Netns};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// From a socket's `struct tcp_info` (linux/tcp.h, read as bytes: the libc
/// crate's struct stops before these fields).
struct TcpInfo {
    /// tcpi_unacked: segments sent and not acknowledged yet
    unacked: u32,
    /// tcpi_segs_in: segments received, SYN-ACK included
    segs_in: u32,
    /// tcpi_data_segs_in: those of them that carried data
    data_segs_in: u32,
}

impl TcpInfo {
    fn of(s: &impl AsRawFd) -> TcpInfo {
        let mut buf = [0u8; 232];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `buf`, which
        // outlives the call, and sets `len` to what it wrote.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        assert!(len >= 156, "a kernel with tcpi_data_segs_in (Linux 4.6)");
        let u = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        TcpInfo {
            unacked: u(24),
            segs_in: u(140),
            data_segs_in: u(152),
        }
    }

    /// Segments without data: the SYN-ACK, bare acknowledgements, a FIN alone.
    fn bare_in(&self) -> u32 {
        self.segs_in - self.data_segs_in
    }
}

/// A backend answering every request head (and its Content-Length body) with
/// `200` and the body's length, on keep-alive connections: blocking, so that
/// it can run on a thread inside a network namespace.
fn backend(l: std::net::TcpListener) {
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                while got.len() < end + 4 + length {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                got.drain(..end + 4 + length);
                let body = format!("body {length}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads one response with a Content-Length body (and nothing after it).
fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if body.len() >= length {
                return text;
            }
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before the response was whole: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A new connection to `addr` that sends `req` in one segment (TCP_NODELAY).
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The fewest bare segments (no data) that 5 new connections to `addr` received
/// by the time `exchange` is done with each. The fewest: on a busy machine the
/// 40 ms delayed-ACK timer may fire before an answer is ready, which adds one;
/// five times in a row it does not.
async fn fewest_bare(addr: SocketAddr, exchange: fn(&mut TcpStream)) -> u32 {
    tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|_| {
                let mut s = connect(addr);
                exchange(&mut s);
                TcpInfo::of(&s).bare_in()
            })
            .min()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_carries_the_requests_ack_and_the_connections_end() {
    let be = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let be_addr = be.local_addr().unwrap();
    std::thread::spawn(move || backend(be));
    let echo = start_echo(free_addr("127.0.0.1")).await;
    let (web, raw, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let config = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{web}"]
mode = "http"
pool = "api"
[[listener]]
name = "raw"
bind = ["{raw}"]
mode = "tcp"
pool = "echo"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{be_addr}"
[[pool]]
name = "echo"
  [[pool.server]]
  address = "{echo}"
"#
    );
    let _p = Proxy::start(&config, &[web, raw, admin]).await;

    // Connection: close: the SYN-ACK is the only bare segment; the request's
    // ACK comes with the answer, and the FIN with its last bytes (Linux's
    // defaults: an ACK of its own for the request and a FIN of its own, 3).
    let close = fewest_bare(web, |s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let all = String::from_utf8_lossy(&all);
        assert!(all.starts_with("HTTP/1.1 200 "), "{all}");
        assert!(all.ends_with("\r\n\r\nbody 0"), "{all}");
        assert!(
            all.to_ascii_lowercase().contains("connection: close"),
            "{all}"
        );
    })
    .await;
    assert_eq!(close, 1, "bare segments received before the end");

    // keep-alive: the first answer carries the request's ACK, and the
    // connection stays open for the next request
    let keep = fewest_bare(web, |s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let r = read_response(s);
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("body 0"),
            "{r}"
        );
    })
    .await;
    assert_eq!(keep, 1, "bare segments received with the first answer");

    // a TCP listener acknowledges at once, as Linux does by default: its
    // client may send more before it is answered (or be answered never)
    let tcp = fewest_bare(raw, |s| {
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    })
    .await;
    assert_eq!(tcp, 2, "the SYN-ACK and the ACK of the first bytes");
}

/// TcpExt DelayedACKs of the network namespace of the calling thread: the
/// acknowledgements sent because the delayed-ACK timer fired.
fn delayed_acks() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "DelayedACKs")
        .expect("DelayedACKs in TcpExt");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Waits (polling, with a deadline) until everything `s` sent is acknowledged.
fn wait_acked(s: &TcpStream, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpInfo::of(s).unacked > 0 {
        assert!(Instant::now() < deadline, "{what} never acknowledged");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs rampart with `config` in a network namespace made for the test, and
/// `exchange` on a thread inside it (given rampart's pid); kills rampart and
/// removes the namespace afterwards, then returns what `exchange` returned.
fn in_netns<T: Send + 'static>(
    tag: &str,
    config: &str,
    exchange: impl FnOnce(i32, &std::path::Path) -> T + Send + 'static,
) -> T {
    if !is_root() {
        panic!("this test makes a network namespace: run it as root (CI does)");
    }
    let ns = Netns::new(&format!("rampart-{tag}-{}", std::process::id()));
    let dir = temp_dir(tag);
    let path = dir.join("rampart.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("rampart.log")).unwrap();
    let mut proxy = ns
        .cmd(rampart_bin())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // `ip netns exec` execs rampart: the child's pid is rampart's
    let pid = proxy.id() as i32;
    let netns = format!("/var/run/netns/{}", ns.name);
    let outcome = std::thread::spawn(move || {
        let fd = std::fs::File::open(&netns).unwrap();
        // SAFETY: setns(2) on this thread only, with a valid netns fd; the
        // threads it starts are in the namespace too.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {netns}");
        exchange(pid, &path)
    })
    .join();
    let _ = proxy.kill();
    let _ = proxy.wait();
    drop(ns);
    match outcome {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Waits (polling, with a deadline) until something listens at `addr`.
fn wait_listening_at(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listened at {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_in_pieces_is_acknowledged_at_once() {
    let (web, be, admin): (SocketAddr, SocketAddr, SocketAddr) = (
        "127.0.0.1:18080".parse().unwrap(),
        "127.0.0.1:18081".parse().unwrap(),
        "127.0.0.1:18082".parse().unwrap(),
    );
    let config = http_config_at(web, admin, "threads = 1\n", "", &[(be, 1)]);
    let (piece, head) = in_netns("acks", &config, move |_, _| {
        let l = std::net::TcpListener::bind(be).unwrap();
        std::thread::spawn(move || backend(l));
        wait_listening_at(web);
        // What the delayed-ACK timer sent while `first` waited to be
        // acknowledged, before `rest` completed the request.
        let timer_acks = |first: &[u8], rest: &[u8], body: &str| {
            let before = delayed_acks();
            let mut s = connect(web);
            s.write_all(first).unwrap();
            wait_acked(&s, &String::from_utf8_lossy(first));
            let fired = delayed_acks() - before;
            s.write_all(rest).unwrap();
            let r = read_response(&mut s);
            assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with(body), "{r}");
            fired
        };
        // The fewest of three tries: on a busy machine the proxy may not get
        // to read within the timer's 40 ms once; three times in a row it does.
        let fewest = |first: &[u8], rest: &[u8], body: &str| {
            let mut least = u64::MAX;
            for _ in 0..3 {
                least = least.min(timer_acks(first, rest, body));
                if least == 0 {
                    break;
                }
            }
            least
        };
        // A head in two pieces: the first is acknowledged at once (a client
        // with Nagle's algorithm on holds the second until it is).
        let piece = fewest(b"GET /split HTTP/1.1\r\nHost: a\r\n", b"\r\n", "body 0");
        // A whole head whose body is still to come.
        let head = fewest(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"hello",
            "body 5",
        );
        (piece, head)
    });
    assert_eq!(
        piece, 0,
        "the first piece of a head waited for the delayed-ACK timer"
    );
    assert_eq!(
        head, 0,
        "a head whose body is to come waited for the delayed-ACK timer"
    );
}

/// The config of `a_connection_queued_across_a_reload_to_tcp_acknowledges_at_once`:
/// the listener `web` (one connection at a time) in `mode`, to `pool`.
fn one_at_a_time(
    web: SocketAddr,
    admin: SocketAddr,
    mode: &str,
    pool: &str,
    be: SocketAddr,
    raw: SocketAddr,
) -> String {
    format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{web}"]
mode = "{mode}"
pool = "{pool}"
max_connections = 1
[[pool]]
name = "api"
  [[pool.server]]
  address = "{be}"
[[pool]]
name = "raw"
  [[pool.server]]
  address = "{raw}"
"#
    )
}

/// The sockets a process holds, by inode.
fn sockets(pid: i32) -> std::collections::HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// A connection that was already in the accept backlog when a reload turned
/// its plain HTTP listener into a TCP one was made with delayed ACKs (the
/// listener's setting then); it is served as TCP, so it must acknowledge at
/// once like any TCP listener's connection: rampart sets it when it accepts it.
#[test]
fn a_connection_queued_across_a_reload_to_tcp_acknowledges_at_once() {
    let (web, be, raw, admin): (SocketAddr, SocketAddr, SocketAddr, SocketAddr) = (
        "127.0.0.1:18080".parse().unwrap(),
        "127.0.0.1:18081".parse().unwrap(),
        "127.0.0.1:18083".parse().unwrap(),
        "127.0.0.1:18082".parse().unwrap(),
    );
    let config = one_at_a_time(web, admin, "http", "api", be, raw);
    let fired = in_netns("acks-reload", &config, move |pid, path| {
        let l = std::net::TcpListener::bind(be).unwrap();
        std::thread::spawn(move || backend(l));
        // the TCP backend: says which connections it accepted, answers nothing
        let t = std::net::TcpListener::bind(raw).unwrap();
        let (tx, accepted) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in t.incoming().flatten() {
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        wait_listening_at(admin);
        // (a connection that ends at once: it leaves the slot before `a` is
        // answered)
        wait_listening_at(web);
        // `a` holds the listener's one slot, idle after its answer
        let mut a = connect(web);
        a.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let r = read_response(&mut a);
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        // `b` is accepted and waits for the slot in rampart's hands (one
        // descriptor more); `c` waits in the kernel's backlog, made with the
        // listener's delayed ACKs
        // (a socket rampart did not have before: a count of descriptors
        // would miss it when a probe's socket closes at the same time)
        let before = sockets(pid);
        let b = connect(web);
        let deadline = Instant::now() + Duration::from_secs(10);
        while sockets(pid).is_subset(&before) {
            assert!(Instant::now() < deadline, "rampart never accepted b");
            std::thread::sleep(Duration::from_millis(1));
        }
        let c = connect(web);
        // the reload: the listener becomes TCP (same name, same socket)
        std::fs::write(path, one_at_a_time(web, admin, "tcp", "raw", be, raw)).unwrap();
        let mut api = connect(admin);
        api.write_all(
            b"POST /api/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        api.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        // the slot goes to `b` (served as HTTP, the listener it came to),
        // which ends at once, then to `c`, served as TCP
        drop(b);
        drop(a);
        let to_raw = accepted
            .recv_timeout(Duration::from_secs(10))
            .expect("c reached the TCP backend");
        let before = delayed_acks();
        (&c).write_all(b"ping").unwrap();
        wait_acked(&c, "ping");
        let fired = delayed_acks() - before;
        drop(to_raw);
        fired
    });
    assert_eq!(
        fired, 0,
        "a connection queued across the reload kept the delayed ACKs of the HTTP listener"
    );
}
