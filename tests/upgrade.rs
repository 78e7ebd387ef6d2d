//! Binary upgrade (`rampart upgrade`): a new process takes the listening sockets
//! and the runtime state over; the old one drains and exits 0. Real binary, real
//! sockets, continuous load.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Listener "web" to pool "api" of `servers` (HTTP health checks); with `tcp`
/// (listen, echo server), a TCP listener too.
fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    servers: &[SocketAddr],
    tcp: Option<(SocketAddr, SocketAddr)>,
) -> String {
    let global = "threads = 2\nshutdown_grace = \"5s\"\naccess_log = \"off\"\n";
    let health = "  [pool.health]\n  kind = \"http\"\n  path = \"/health\"\n  interval = \"300ms\"\n  rise = 2\n  fall = 1";
    let servers: Vec<(SocketAddr, u32)> = servers.iter().map(|a| (*a, 1)).collect();
    let mut s = http_config_at(listen, admin, global, health, &servers);
    if let Some((listen, echo)) = tcp {
        s.push_str(&format!(
            "\n[[listener]]\nname = \"tcp\"\nbind = [\"{listen}\"]\nmode = \"tcp\"\npool = \"echo\"\n\n[[pool]]\nname = \"echo\"\n  [[pool.server]]\n  address = \"{echo}\"\n"
        ));
    }
    s
}

fn server(s: &Value, addr: SocketAddr) -> &Value {
    let v = server_in(&s["pools"][0], addr);
    assert!(!v.is_null(), "no server {addr} in {s}");
    v
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

struct KillPid(u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process this test started (through an upgrade).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_refuses_nothing_and_carries_health_and_operator_state() {
    let port = common_port(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let a = Backend::start("a", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let b = Backend::start("b", SocketAddr::new(ip("127.0.0.3"), port)).await;
    let c = Backend::start("c", SocketAddr::new(ip("127.0.0.4"), port)).await;
    b.stats.health_status.store(503, Ordering::SeqCst);
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let tcp = free_addr("127.0.0.1");
    let echo = start_echo(SocketAddr::new(ip("127.0.0.4"), 0)).await;
    let mut p = Proxy::start(
        &config(listen, admin, &[a.addr, b.addr, c.addr], Some((tcp, echo))),
        &[listen, admin, tcp],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = admin_stats(admin).await;
        if server(&s, a.addr)["status"] == "UP"
            && server(&s, b.addr)["status"] == "DOWN"
            && server(&s, c.addr)["status"] == "UP"
        {
            break;
        }
        assert!(Instant::now() < deadline, "checks did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = admin_post(
        admin,
        &format!("/api/pools/api/servers/{}", c.addr),
        r#"{"state":"drain","weight":7}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // Load: keep-alive GETs, a new connection per request, POSTs.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for kind in 0..3 {
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut errors = Vec::new();
            let mut refused = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let r = match kind {
                    0 => c
                        .get(format!("http://{listen}/").parse().unwrap())
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| format!("{e:?}")),
                    1 => {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        match tokio::net::TcpStream::connect(listen).await {
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                refused += 1;
                                continue;
                            }
                            Err(e) => Err(e.to_string()),
                            Ok(mut s) => {
                                let _ = s
                                    .write_all(
                                        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                    )
                                    .await;
                                let mut out = Vec::new();
                                match s.read_to_end(&mut out).await {
                                    Ok(_) if out.starts_with(b"HTTP/1.1 200") => Ok(200),
                                    Ok(_) => Err(String::from_utf8_lossy(&out).into_owned()),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                        }
                    }
                    _ => {
                        let req = hyper::Request::post(format!("http://{listen}/upload"))
                            .body(http_body_util::BodyExt::boxed(Pattern::new(50_000)))
                            .unwrap();
                        c.request(req)
                            .await
                            .map(|r| r.status().as_u16())
                            .map_err(|e| format!("{e:?}"))
                    }
                };
                match r {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            (errors, refused)
        }));
    }
    let passed = |n: u64| {
        let ok = Arc::clone(&ok);
        let target = ok.load(Ordering::SeqCst) + n;
        async move {
            wait_for(Duration::from_secs(10), "requests to pass", || {
                ok.load(Ordering::SeqCst) >= target
            })
            .await
        }
    };
    passed(100).await;
    // Long-lived work the old process finishes while it drains: a WebSocket-style
    // tunnel, a TCP session, and a download read partly before and partly after.
    let mut tunnel = open_echo_tunnel(listen).await;
    let mut session = tokio::net::TcpStream::connect(tcp).await.unwrap();
    echo_roundtrip(&mut tunnel, b"before").await;
    echo_roundtrip(&mut session, b"before").await;
    let size: u64 = 16 << 20;
    let (go_on, mut go_rx) = tokio::sync::watch::channel(false);
    let download = tokio::spawn(async move {
        let resp = client()
            .get(format!("http://{listen}/big?bytes={size}").parse().unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
            let d = f.unwrap().into_data().unwrap();
            sum = d.iter().fold(sum, |s, &x| s.wrapping_add(u64::from(x)));
            n += d.len() as u64;
            if n >= size / 4 && !*go_rx.borrow() {
                let _ = go_rx.changed().await;
            }
        }
        (n, sum)
    });
    let before = admin_stats(admin).await;
    let old_pid = before["pid"].as_u64().unwrap() as u32;
    assert_eq!(old_pid, p.pid() as u32);
    let b_checks = server(&before, b.addr)["checks_failed"].as_u64().unwrap();
    let a_total = server(&before, a.addr)["total"].as_u64().unwrap();
    let a_2xx = server(&before, a.addr)["responses"]["2xx"]
        .as_u64()
        .unwrap();
    assert!(a_2xx > 0, "{before}");

    let out = std::process::Command::new(rampart_bin())
        .args(["upgrade", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.stderr()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let new_pid: u32 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _kill = KillPid(new_pid);
    assert_ne!(new_pid, old_pid);
    // the old process still carries what it had, and finishes it
    echo_roundtrip(&mut tunnel, b"after").await;
    echo_roundtrip(&mut session, b"after").await;
    go_on.send(true).unwrap();
    assert_eq!(download.await.unwrap(), (size, Pattern::checksum(size)));
    drop(tunnel);
    drop(session);
    // the old process drains and exits 0
    let st = p.wait_exit(Duration::from_secs(10)).await;
    assert!(st.success(), "old process: {st}: {}", p.stderr());
    assert!(pid_alive(new_pid));
    // The new process serves, with the old one's state: b is DOWN (never UP in
    // between), c drained with its operator weight, counters carried on.
    let after = admin_stats(admin).await;
    assert_eq!(after["pid"], new_pid);
    assert_eq!(server(&after, b.addr)["status"], "DOWN");
    assert!(server(&after, b.addr)["checks_failed"].as_u64().unwrap() >= b_checks);
    assert!(
        server(&after, b.addr)["downtime_secs"].as_u64().unwrap()
            >= server(&before, b.addr)["downtime_secs"].as_u64().unwrap()
    );
    assert_eq!(server(&after, c.addr)["status"], "DRAIN");
    assert_eq!(server(&after, c.addr)["weight"], 7);
    assert!(server(&after, a.addr)["total"].as_u64().unwrap() >= a_total);
    assert!(server(&after, a.addr)["responses"]["2xx"].as_u64().unwrap() >= a_2xx);
    passed(100).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (e, r) = t.await.unwrap();
        failures.extend(e);
        refused += r;
    }
    assert_eq!(refused, 0, "connections refused during the upgrade");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(b.requests(), 0, "the DOWN server took requests");
    assert_eq!(c.requests(), 0, "the drained server took requests");
    eprintln!(
        "upgrade {old_pid} -> {new_pid}: {} requests, none failed or refused",
        ok.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let (a, _b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let p = Proxy::start(&config(listen, admin, &[a.addr], None), &[listen, admin]).await;
    // The new process reads the config file again: a broken one stops it.
    std::fs::write(&p.config, "[[listener]\n").unwrap();
    let out = std::process::Command::new(rampart_bin())
        .args(["upgrade", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited") && err.contains("keeps serving"),
        "{err}"
    );
    assert!(
        p.stderr().contains("binary upgrade failed"),
        "{}",
        p.stderr()
    );
    // still the old process, still serving
    assert_eq!(admin_stats(admin).await["pid"], p.pid() as u32);
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.1,
        "pod-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counts_cross_an_upgrade_without_a_state_file() {
    let backend = Backend::start("a", free_addr("127.0.0.2")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = quota_config(listen, admin, backend.addr, None);
    let mut p = Proxy::start(&text, &[listen, admin]).await;
    let c = client();
    let job = || {
        hyper::Request::post(format!("http://{listen}/jobs"))
            .header("x-api-key", "free-1")
            .body(empty())
            .unwrap()
    };
    for i in 0..100 {
        assert_eq!(send(&c, job()).await.0.status(), 200, "job {i}");
    }
    assert_eq!(send(&c, job()).await.0.status(), 429);
    let out = std::process::Command::new(rampart_bin())
        .args(["upgrade", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", p.stderr());
    let said = String::from_utf8_lossy(&out.stdout);
    let new_pid: u32 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _kill = KillPid(new_pid);
    assert!(p.wait_exit(Duration::from_secs(10)).await.success());
    assert_eq!(admin_stats(admin).await["pid"], new_pid);
    // the new process has the old one's count: the 102nd job is still refused
    let fresh = client();
    assert_eq!(send(&fresh, job()).await.0.status(), 429);
    let (_, q) = admin_get(admin, "/api/quotas?key=free-1").await;
    let v: Value = serde_json::from_str(&q).unwrap();
    assert_eq!(v[0]["used"], 100, "{v}");
}

/// The listening sockets on `addr` (each once, whoever holds it), from
/// /proc/net/tcp.
fn listening_sockets(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
        .count()
}

/// An upgrade whose config asks for more threads gives each new worker a
/// socket of its own on the addresses it takes over (they share their port):
/// before, only the inherited sockets' count of workers accepted there until
/// a restart. From one thread too: its socket is SO_REUSEPORT as well (before,
/// it was not, and the new workers had none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_more_threads_gives_every_worker_a_socket() {
    let (a, _b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = config(listen, admin, &[a.addr], None).replace("threads = 2", "threads = 1");
    let mut p = Proxy::start(&text, &[listen, admin]).await;
    assert_eq!(listening_sockets(listen), 1);
    std::fs::write(&p.config, text.replace("threads = 1", "threads = 4")).unwrap();
    let out = std::process::Command::new(rampart_bin())
        .args(["upgrade", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", p.stderr());
    let said = String::from_utf8_lossy(&out.stdout);
    let new_pid: u32 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _kill = KillPid(new_pid);
    assert!(p.wait_exit(Duration::from_secs(10)).await.success());
    assert_eq!(listening_sockets(listen), 4);
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.1,
        "pod-a"
    );
}

/// Under systemd, WATCHDOG_PID names the main process. The new process of an
/// upgrade becomes the main process: it must not inherit the old one's
/// WATCHDOG_PID (it would take the watchdog for someone else's and never
/// ping, and systemd would kill it WatchdogSec after the old one left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_process_of_an_upgrade_does_not_inherit_watchdog_pid() {
    let backend = Backend::start("a", free_addr("127.0.0.2")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = http_config_at(listen, admin, "threads = 1", "", &[(backend.addr, 1)]);
    let mut p = Proxy::start_env(
        &text,
        &[listen, admin],
        "info",
        &[("WATCHDOG_PID", "1"), ("WATCHDOG_USEC", "30000000")],
    )
    .await;
    let out = std::process::Command::new(rampart_bin())
        .args(["upgrade", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", p.stderr());
    let said = String::from_utf8_lossy(&out.stdout);
    let new_pid: u32 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _kill = KillPid(new_pid);
    let env = std::fs::read(format!("/proc/{new_pid}/environ")).unwrap();
    let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
    assert!(
        vars.iter().any(|v| v.starts_with(b"WATCHDOG_USEC=")),
        "the rest of the environment is passed on"
    );
    assert!(
        !vars.iter().any(|v| v.starts_with(b"WATCHDOG_PID=")),
        "WATCHDOG_PID was passed on"
    );
    assert!(p.wait_exit(Duration::from_secs(10)).await.success());
}
