//! Hostile clients. Each attack runs against a one-thread proxy while a
//! legitimate client keeps opening connections and making requests beside it.
//! Measured for every attack: what the legitimate client got, the proxy's RSS
//! (before, peak, after), its CPU time, its open descriptors and its live tokio
//! tasks; after the attack, descriptors and tasks must come back to where they
//! were. Each attack also asserts what the proxy did to the attacker.
//!
//! The rows are printed and appended to `$CARGO_TARGET_TMPDIR/hostile.md`
//! (`cargo test --test hostile -- --nocapture --test-threads 1` shows them).
//! The attacks run one at a time (a lock), so one's CPU is not another's.

mod common;

use common::tls::Pki;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One attack at a time, over the whole binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A proxy with every listener an attack needs, one backend behind it.
struct Lab {
    p: Proxy,
    /// request_header_timeout and client_timeout 2 s
    web: SocketAddr,
    /// the same, over TLS (h2 by ALPN)
    tls: SocketAddr,
    /// request_header_timeout 60 s: idle connections stay
    idle: SocketAddr,
    /// max_connections = 20
    capped: SocketAddr,
    admin: SocketAddr,
    backend: Backend,
    _pki: Pki,
}

impl Lab {
    async fn start() -> Lab {
        let pki = Pki::new("Hostile CA");
        let site = pki.server("site", &["site.example.com"]);
        let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
        let [web, tls, idle, capped, admin] = [(); 5].map(|_| free_addr("127.0.0.1"));
        let timeouts = "request_header_timeout = \"2s\"\nclient_timeout = \"2s\"\n";
        let cfg = format!(
            "[global]\nthreads = 1\naccess_log = \"text\"\n[admin]\nbind = \"{admin}\"\n\
             [[listener]]\nname = \"web\"\nbind = [\"{web}\"]\nmode = \"http\"\npool = \"api\"\n{timeouts}\
             [[listener]]\nname = \"tls\"\nbind = [\"{tls}\"]\nmode = \"http\"\npool = \"api\"\n{timeouts}\
             \x20 [listener.tls]\n  cert = [{:?}]\n\
             [[listener]]\nname = \"idle\"\nbind = [\"{idle}\"]\nmode = \"http\"\npool = \"api\"\n\
             request_header_timeout = \"60s\"\n\
             [[listener]]\nname = \"capped\"\nbind = [\"{capped}\"]\nmode = \"http\"\npool = \"api\"\n\
             max_connections = 20\n\
             [[pool]]\nname = \"api\"\nserver_timeout = \"3s\"\nretry_buffer = \"16KiB\"\n\
             keepalive_timeout = \"1s\"\n  [[pool.server]]\n  address = \"{}\"\n",
            site.pem.display().to_string(),
            backend.addr
        );
        let p = Proxy::start(&cfg, &[web, tls, idle, capped, admin]).await;
        Lab {
            p,
            web,
            tls,
            idle,
            capped,
            admin,
            backend,
            _pki: pki,
        }
    }

    /// Waits until the backend's connections have closed (but the one or two
    /// the legitimate client's requests may leave pooled).
    async fn backend_connections_closed(&self) {
        let st = &self.backend.stats;
        wait_for(
            Duration::from_secs(10),
            "the backend connections closed",
            || st.connections.load(Ordering::SeqCst) - st.closed.load(Ordering::SeqCst) <= 2,
        )
        .await;
    }

    async fn sample(&self) -> Sample {
        let pid = self.p.pid();
        Sample {
            rss_kib: rss_kib(pid),
            cpu_s: cpu_seconds(pid),
            fds: fd_count(pid),
            tasks: alive_tasks(self.admin).await,
        }
    }

    /// Runs `attack` with the legitimate client beside it; the row of figures.
    /// Asserts the legitimate client was served throughout and, afterwards,
    /// that descriptors and tasks came back to their baseline.
    async fn run<T, F: std::future::Future<Output = T>>(&self, name: &str, attack: F) -> (T, Row) {
        let before = self.sample().await;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(before.rss_kib));
        let sampler = {
            let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak), self.p.pid());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    // pacing: a sample every 20 ms
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let legit = {
            let (web, stop) = (self.web, Arc::clone(&stop));
            tokio::task::spawn_blocking(move || legit_client(web, stop))
        };
        let t0 = Instant::now();
        let out = attack.await;
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let legit = legit.await.unwrap();
        sampler.await.unwrap();
        let during = self.sample().await;
        assert!(
            legit.failed.is_empty() && legit.ok > 0,
            "{name}: the legitimate client was not served: {} ok, failures {:?}\n\
             the proxy's log of the legitimate client's failed requests:\n{}",
            legit.ok,
            legit.failed,
            self.p
                .stdout()
                .lines()
                .filter(|l| l.contains("/legit") && !l.contains("status=200"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // everything the attack held is released
        let deadline = Instant::now() + Duration::from_secs(20);
        let after = loop {
            let s = self.sample().await;
            if (s.fds <= before.fds + 2 && s.tasks <= before.tasks + 1) || Instant::now() > deadline
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let row = Row {
            name: name.to_string(),
            took,
            legit_ok: legit.ok,
            legit_worst: legit.worst,
            rss_before: before.rss_kib,
            rss_peak: peak.load(Ordering::Relaxed).max(during.rss_kib),
            rss_after: after.rss_kib,
            cpu: during.cpu_s - before.cpu_s,
            fds: (before.fds, after.fds),
            tasks: (before.tasks, after.tasks),
        };
        row.print();
        assert!(
            after.fds <= before.fds + 2,
            "{name}: descriptors {} -> {}",
            before.fds,
            after.fds
        );
        assert!(
            after.tasks <= before.tasks + 1,
            "{name}: live tasks {} -> {}",
            before.tasks,
            after.tasks
        );
        (out, row)
    }
}

struct Sample {
    rss_kib: u64,
    cpu_s: f64,
    fds: usize,
    tasks: u64,
}

struct Row {
    name: String,
    took: Duration,
    legit_ok: usize,
    legit_worst: Duration,
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    cpu: f64,
    fds: (usize, usize),
    tasks: (u64, u64),
}

impl Row {
    fn print(&self) {
        let line = format!(
            "| {} | {:.1} s | {} ok, worst {} ms | {:.1} / {:.1} / {:.1} MiB | {:.2} s | {} → {} | {} → {} |",
            self.name,
            self.took.as_secs_f64(),
            self.legit_ok,
            self.legit_worst.as_millis(),
            self.rss_before as f64 / 1024.0,
            self.rss_peak as f64 / 1024.0,
            self.rss_after as f64 / 1024.0,
            self.cpu,
            self.fds.0,
            self.fds.1,
            self.tasks.0,
            self.tasks.1,
        );
        eprintln!("{line}");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile.md");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
    }
}

struct Legit {
    ok: usize,
    failed: Vec<String>,
    worst: Duration,
}

/// Until `stop`: a GET on a new connection every 50 ms, each allowed 5 s. Plain
/// blocking sockets on a thread of its own, so that what the attack costs this
/// test's runtime (its backend, its attackers) does not delay it.
fn legit_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> Legit {
    use std::io::{Read, Write};
    let mut l = Legit {
        ok: 0,
        failed: Vec::new(),
        worst: Duration::ZERO,
    };
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let r = (|| {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /legit HTTP/1.1\r\nHost: legit\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        })();
        let at = format!(
            "at {:.2} s, after {} ms: ",
            began.elapsed().as_secs_f64(),
            t.elapsed().as_millis()
        );
        match r {
            Ok(b) if b.starts_with(b"HTTP/1.1 200") && b.ends_with(b"pod") => l.ok += 1,
            Ok(b) => l
                .failed
                .push(at + &String::from_utf8_lossy(&b[..b.len().min(80)])),
            Err(e) => l.failed.push(at + &e),
        }
        l.worst = l.worst.max(t.elapsed());
        // pacing: one request every 50 ms
        std::thread::sleep(Duration::from_millis(50));
    }
    l
}

/// Live tasks on all the proxy's runtimes (`rampart_runtime_alive_tasks`).
async fn alive_tasks(admin: SocketAddr) -> u64 {
    let (_, m) = admin_get(admin, "/metrics").await;
    let lines: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with("rampart_runtime_alive_tasks{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!lines.is_empty(), "no rampart_runtime_alive_tasks in {m}");
    lines.iter().sum()
}

/// Raises this process's descriptor limit to its hard limit (the proxy, a
/// child, inherits it); the limit now.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// Reads until the peer closes (or resets), at most `within`; what came, and
/// whether the peer ended it in time.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, false),
        }
    }
}

fn first_line(b: &[u8]) -> String {
    let end = b
        .iter()
        .position(|&c| c == b'\r')
        .unwrap_or(b.len().min(60));
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Runs `n` copies of `one` at once; their results.
async fn many<T: Send + 'static, F>(n: usize, one: impl Fn(usize) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(one(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Tallies answers by their first line ("closed" when there was none).
fn answers(results: &[(Vec<u8>, bool)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (b, _) in results {
        let k = if b.is_empty() {
            "closed".to_string()
        } else {
            first_line(b)
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_their_timeouts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let web = lab.web;

    // slowloris: 300 connections trickle a header byte every 200 ms
    let (res, _) = lab
        .run("slowloris, 300 connections", async {
            many(300, move |_| async move {
                let mut s = TcpStream::connect(web).await.unwrap();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
                let trickle = async {
                    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        .iter()
                        .cycle()
                    {
                        // pacing: the attack's own rhythm
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                    }
                };
                let t = Instant::now();
                tokio::time::timeout(Duration::from_secs(15), trickle)
                    .await
                    .ok();
                let (b, closed) = read_until_closed(&mut s, Duration::from_secs(1)).await;
                (b, closed && t.elapsed() < Duration::from_secs(15))
            })
            .await
        })
        .await;
    let cut = res.iter().filter(|(_, closed)| *closed).count();
    eprintln!("  slowloris answers: {:?}", answers(&res));
    assert_eq!(
        cut, 300,
        "every slowloris connection is cut off by request_header_timeout"
    );

    // slow POST: 200 bodies of a declared 1 MB, trickled a byte every 200 ms for
    // 4 s (the trickle itself is not cut: like HAProxy's `timeout client` and
    // nginx's `client_body_timeout`, client_timeout bounds a pause, not a
    // rate), then stalled: each gets 408 once it has paused for client_timeout
    let (res, _) = lab
        .run("slow POST, 200 connections, then stalled", async {
            many(200, move |_| async move {
                let mut s = TcpStream::connect(web).await.unwrap();
                let _ = s
                    .write_all(
                        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
                    )
                    .await;
                for _ in 0..20 {
                    // pacing: the attack's own rhythm
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                }
                let stalled = Instant::now();
                let (b, closed) = read_until_closed(&mut s, Duration::from_secs(15)).await;
                (b, closed && stalled.elapsed() < Duration::from_secs(15))
            })
            .await
        })
        .await;
    let t = answers(&res);
    eprintln!("  slow POST answers: {t:?}");
    assert!(res.iter().all(|(_, ended)| *ended), "{t:?}");
    assert_eq!(t.get("HTTP/1.1 408 Request Timeout"), Some(&200), "{t:?}");
    // each counted as what it was, on its listener (the slowloris's 408 may
    // not reach a client still writing: its next byte meets a closed socket)
    let v = admin_stats(lab.admin).await;
    let l = &v["listeners"][0];
    assert_eq!(l["name"], "web", "{v}");
    assert_eq!(l["request_errors"]["head_timeout"], 300, "{v}");
    assert_eq!(l["request_errors"]["body_timeout"], 200, "{v}");

    // slow reader: 50 downloads of 20 MB, of which the client reads 1 KiB
    let before = lab.backend.stats.connections.load(Ordering::SeqCst);
    let (res, row) = lab
        .run("slow reader, 50 x 20 MB unread", async {
            many(50, move |_| async move {
                let mut s = TcpStream::connect(web).await.unwrap();
                s.write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut head = [0u8; 1024];
                let _ = s.read(&mut head).await;
                // stop reading for well over client_timeout (the attack itself)
                tokio::time::sleep(Duration::from_secs(6)).await;
                let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
                (rest.len(), closed)
            })
            .await
        })
        .await;
    assert!(
        res.iter().all(|(n, closed)| *closed && *n < 20_000_000),
        "every slow reader is cut off: {res:?}"
    );
    // the responses were not buffered for them: 50 x 20 MB would be 1 GB
    assert!(
        row.rss_peak < row.rss_before + 100 * 1024,
        "RSS {} -> {} KiB",
        row.rss_before,
        row.rss_peak
    );
    let conns = lab.backend.stats.connections.load(Ordering::SeqCst) - before;
    assert!(conns >= 50, "{conns}");
    lab.backend_connections_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_cost_memory_in_proportion_and_wait_their_turn() {
    let _one = ONE_AT_A_TIME.lock().await;
    let limit = raise_nofile();
    let lab = Lab::start().await;
    let (idle, capped, admin) = (lab.idle, lab.capped, lab.admin);

    // 10,000 connections that send nothing (fewer if the descriptor limit is low)
    // the proxy and this process each hold one descriptor per connection, each
    // within its own limit
    let n = 10_000.min((limit as usize).saturating_sub(1000));
    let (per_conn, row) = lab
        .run(&format!("{n} idle connections"), async {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n.div_ceil(500) {
                let batch = many(500.min(n - conns.len()), move |_| async move {
                    TcpStream::connect(idle).await.unwrap()
                })
                .await;
                conns.extend(batch);
            }
            let line = "rampart_listener_connections{listener=\"idle\"}";
            wait_metric(admin, line, n as f64).await;
            let rss = rss_kib(lab.p.pid());
            drop(conns);
            rss
        })
        .await;
    let bytes = (per_conn.saturating_sub(row.rss_before)) * 1024 / n as u64;
    eprintln!("  RSS per idle connection: {bytes} bytes ({n} connections)");
    assert!(bytes < 16 * 1024, "{bytes} bytes per idle connection");

    // a flood past the listener's max_connections = 20: the 20 established
    // connections keep being served, the 200 new ones wait, then all succeed
    let ((kept, flood_waited, flood), _) = lab
        .run("flood past max_connections (20 + 200)", async {
            let mut established = Vec::new();
            for _ in 0..20 {
                let mut s = TcpStream::connect(capped).await.unwrap();
                assert!(keepalive_get(&mut s).await, "an established connection");
                established.push(s);
            }
            let flood: Vec<_> = (0..200)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut s = TcpStream::connect(capped).await.unwrap();
                        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .await
                            .unwrap();
                        read_until_closed(&mut s, Duration::from_secs(30)).await
                    })
                })
                .collect();
            // the established connections keep working while the flood waits
            let mut kept = 0;
            for _ in 0..5 {
                for s in &mut established {
                    kept += usize::from(keepalive_get(s).await);
                }
            }
            let waited = flood.iter().all(|t| !t.is_finished());
            drop(established);
            let mut out = Vec::new();
            for t in flood {
                out.push(t.await.unwrap());
            }
            (kept, waited, out)
        })
        .await;
    assert_eq!(kept, 100, "the established connections were served");
    assert!(
        flood_waited,
        "a flood connection was served past max_connections"
    );
    let t = answers(&flood);
    assert_eq!(t.get("HTTP/1.1 200 OK"), Some(&200), "{t:?}");
}

/// One GET on a keep-alive connection; true on a 200 with the whole body.
async fn keepalive_get(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.starts_with(b"HTTP/1.1 200") && buf.ends_with(b"pod") {
                return Some(());
            }
        }
    })
    .await;
    matches!(r, Ok(Some(())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_huge_bodies_are_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let web = lab.web;

    for (name, head) in [
        (
            "oversized heads (70 KB), 200 connections",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            ),
        ),
        (
            "too many headers (200), 200 connections",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..200)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>()
            ),
        ),
    ] {
        let head = Arc::new(head);
        let (res, _) = lab
            .run(name, async {
                many(200, move |_| {
                    let head = Arc::clone(&head);
                    async move {
                        let mut s = TcpStream::connect(web).await.unwrap();
                        let _ = s.write_all(head.as_bytes()).await;
                        read_until_closed(&mut s, Duration::from_secs(10)).await
                    }
                })
                .await
            })
            .await;
        let t = answers(&res);
        eprintln!("  {name}: {t:?}");
        assert_eq!(
            t.get("HTTP/1.1 431 Request Header Fields Too Large"),
            Some(&200),
            "{name}: {t:?}"
        );
    }

    // a 256 MB chunked upload to a pool whose retry_buffer is 16 KiB: streamed,
    // not kept
    const SIZE: u64 = 256 * 1024 * 1024;
    let ((status, body), row) = lab
        .run("a 256 MB chunked body, retry_buffer 16 KiB", async {
            let mut s = TcpStream::connect(web).await.unwrap();
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let chunk: Vec<u8> = (0..65536u64).map(|i| (i % 251) as u8).collect();
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            for _ in 0..SIZE / 65536 {
                s.write_all(&framed).await.unwrap();
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
            let (resp, _) = read_until_closed(&mut s, Duration::from_secs(60)).await;
            let text = String::from_utf8_lossy(&resp).into_owned();
            (first_line(&resp), text.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
        })
        .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let sum: u64 = (0..65536u64).map(|i| i % 251).sum::<u64>() * (SIZE / 65536);
    assert_eq!(body, format!("{SIZE} {sum}"), "the backend got every byte");
    assert!(
        row.rss_peak < row.rss_before + 64 * 1024,
        "the body was held: RSS {} -> {} KiB",
        row.rss_before,
        row.rss_peak
    );
}

/// Runs tests/h2/probe.py; its JSON line.
fn probe(args: &[&str], env: &[(&str, &str)]) -> Value {
    let path = format!("{}/tests/h2/probe.py", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("/usr/bin/python3 (apt: python3-h2)");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "probe {args:?}: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn h2_attacks(tls: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let (addr, what) = if tls {
        (lab.tls, "h2 over TLS")
    } else {
        (lab.web, "h2c")
    };
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let run = |cmd: &'static str, n: &'static str, env: &'static [(&'static str, &'static str)]| {
        let (ip, port) = (ip.clone(), port.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec![cmd, ip.as_str(), port.as_str(), n];
                if tls {
                    args.extend(["--tls", "site.example.com"]);
                }
                probe(&args, env)
            })
            .await
            .unwrap()
        }
    };
    let gave_up = |r: &Value| !r["goaway"].is_null() || r["closed"] == true;

    // rapid reset: HEADERS + RST_STREAM, up to 20,000 times
    let (r, row) = lab
        .run(
            &format!("{what}: rapid reset"),
            run("rapid-reset", "20000", &[]),
        )
        .await;
    assert!(gave_up(&r), "{r}");
    assert!(r["sent"].as_u64().unwrap() < 20000, "never stopped: {r}");
    assert!(row.rss_peak < row.rss_before + 50 * 1024);

    // rapid reset with the resets held back until the requests reached the
    // backend (each would cost a backend request): counted all the same
    let held = || {
        let uris = lab.backend.stats.uris.lock().unwrap();
        uris.iter().filter(|u| u.contains("/slow?ms=5000")).count()
    };
    let before = held();
    let (r, row) = lab
        .run(
            &format!("{what}: rapid reset, resets held back 10 ms"),
            run("rapid-reset-held", "5000", &[]),
        )
        .await;
    let reached = held() - before;
    eprintln!("  rapid reset held back: {r}, {reached} requests reached the backend");
    assert!(gave_up(&r), "{r}");
    assert!(r["sent"].as_u64().unwrap() < 5000, "never stopped: {r}");
    // (a burst of max_concurrent_streams, 256, refilled at 256 a second,
    // and a round of 50 in flight)
    assert!(reached <= 700, "{reached} requests reached the backend");
    assert!(row.rss_peak < row.rss_before + 50 * 1024);

    // CONTINUATION without end
    let (r, row) = lab
        .run(
            &format!("{what}: CONTINUATION flood"),
            run("continuation", "20000", &[]),
        )
        .await;
    assert!(gave_up(&r), "{r}");
    assert!(r["sent"].as_u64().unwrap() < 1000, "{r}");
    assert!(row.rss_peak < row.rss_before + 50 * 1024);

    // SETTINGS and PING floods, nothing read: the proxy stops reading (the
    // client's sends block) or cuts it off; memory stays flat
    for cmd in ["settings-flood", "ping-flood"] {
        let (r, row) = lab
            .run(
                &format!("{what}: {cmd}, 3,000,000 frames"),
                run(cmd, "3000000", &[]),
            )
            .await;
        eprintln!("  {cmd}: {r}");
        assert!(
            r["blocked"] == true || gave_up(&r),
            "{cmd}: 3,000,000 frames taken without pushing back: {r}"
        );
        assert!(
            row.rss_peak < row.rss_before + 50 * 1024,
            "{cmd}: RSS {} -> {}",
            row.rss_before,
            row.rss_peak
        );
    }

    // zero window: 50 streams of 1 MB that the client never lets through
    let conns = lab.backend.stats.connections.load(Ordering::SeqCst);
    let (r, row) = lab
        .run(
            &format!("{what}: zero window, 50 x 1 MB held"),
            run("zero-window", "50", &[("PROBE_HOLD", "12")]),
        )
        .await;
    eprintln!(
        "  zero window: closed {} after {:.1} s, {} DATA bytes",
        r["closed"], r["held"], r["data_bytes"]
    );
    assert_eq!(
        r["closed"], true,
        "held streams are cut off after client_timeout: {r}"
    );
    assert!(r["held"].as_f64().unwrap() < 12.0, "{r}");
    assert!(row.rss_peak < row.rss_before + 100 * 1024);
    assert!(lab.backend.stats.connections.load(Ordering::SeqCst) > conns);
    lab.backend_connections_closed().await;

    // the last stream id: served; a lower one after it: a connection error
    let (r, _) = lab
        .run(
            &format!("{what}: stream id 2^31-1"),
            run("max-stream-id", "_", &[]),
        )
        .await;
    let statuses = r["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2, "{r}");
    assert_eq!(statuses[1][0], 0x7FFF_FFFF_u64, "{r}");
    assert_eq!(statuses[1][1], "200", "{r}");
    assert_eq!(
        r["goaway"]["code"], 1,
        "PROTOCOL_ERROR for the lower id: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_floods_are_bounded() {
    h2_attacks(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_floods_are_bounded() {
    h2_attacks(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_clients_get_clear_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start().await;
    let admin = lab.admin;
    let path = format!("/api/pools/api/servers/{}", lab.backend.addr);
    let path = Arc::new(path);
    let raw = |body: Vec<u8>, declared: Option<usize>| {
        let path = Arc::clone(&path);
        async move {
            let mut s = TcpStream::connect(admin).await.unwrap();
            let len = declared.unwrap_or(body.len());
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            read_until_closed(&mut s, Duration::from_secs(20)).await.0
        }
    };
    let (res, _) = lab
        .run("admin: oversized, malformed, stalled bodies", async {
            let big = raw(vec![b'{'; 10 * 1024 * 1024], None).await;
            let malformed = raw(b"{\"state\": \"drain\", \"weight\": ".to_vec(), None).await;
            let wrong = raw(b"{\"state\": 42}".to_vec(), None).await;
            let nul = raw(b"\x00\x00\xff\xfe".to_vec(), None).await;
            // declares 100 bytes, sends 10, then nothing
            let stalled = raw(b"{\"state\":".to_vec(), Some(100)).await;
            [big, malformed, wrong, nul, stalled].map(|b| {
                let text = String::from_utf8_lossy(&b).into_owned();
                (
                    first_line(&b),
                    text.rsplit("\r\n\r\n").next().unwrap_or("").to_string(),
                )
            })
        })
        .await;
    eprintln!("  admin answers: {res:?}");
    assert_eq!(res[0].0, "HTTP/1.1 413 Payload Too Large", "{res:?}");
    for (i, what) in [(1, "malformed"), (2, "a wrong type"), (3, "binary")] {
        assert_eq!(res[i].0, "HTTP/1.1 400 Bad Request", "{what}: {res:?}");
        assert!(res[i].1.contains("error"), "{what}: {res:?}");
    }
    assert_eq!(res[4].0, "HTTP/1.1 408 Request Timeout", "{res:?}");
    // nothing changed
    let (_, pool) = admin_get(admin, "/api/pools/api").await;
    assert!(!pool.contains("DRAIN") && !pool.contains("MAINT"), "{pool}");
}
