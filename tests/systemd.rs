//! systemd's notify protocol, as systemd speaks it: a unix datagram socket in
//! NOTIFY_SOCKET, READY=1 at start, RELOADING=1 + MONOTONIC_USEC then READY=1
//! around a reload, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 at stop.

mod common;

use common::*;
use hyper::StatusCode;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The next datagram, within `within`.
fn next(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The next datagram that is not a watchdog ping.
fn next_state(sock: &UnixDatagram, pings: &mut usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no state notification");
        let m = next(sock, Duration::from_secs(10));
        if m == "WATCHDOG=1\n" {
            *pings += 1;
        } else {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_watchdog_and_stopping_reach_notify_socket() {
    let dir = temp_dir("sdnotify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = http_config_at(
        listen,
        admin,
        "threads = 1\nshutdown_grace = \"5s\"",
        "",
        &[(backend.addr, 1)],
    );
    let mut p = Proxy::start_env(
        &cfg,
        &[listen, admin],
        "info",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    )
    .await;
    let mut pings = 0;
    let ready = tokio::task::block_in_place(|| next_state(&sock, &mut pings));
    assert_eq!(ready, format!("MAINPID={}\nREADY=1\n", p.pid()));

    // a reload: RELOADING=1 with the monotonic clock, then READY=1
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let reloading = tokio::task::block_in_place(|| next_state(&sock, &mut pings));
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|r| r.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    assert!(
        usec <= now + 1 && now - usec < 10_000_000,
        "MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC now ({now})"
    );
    let again = tokio::task::block_in_place(|| next_state(&sock, &mut pings));
    // (no MAINPID: a reload does not change the main process, and one run by
    // an old process after a handover must not claim it back)
    assert_eq!(again, "READY=1\n");

    // the watchdog pings every 100 ms (half of WATCHDOG_USEC)
    let before = pings;
    while pings < before + 3 {
        let m = tokio::task::block_in_place(|| next(&sock, Duration::from_secs(2)));
        assert_eq!(m, "WATCHDOG=1\n");
        pings += 1;
    }

    // SIGTERM: STOPPING=1, then a clean exit
    p.signal(libc::SIGTERM);
    let stopping = tokio::task::block_in_place(|| next_state(&sock, &mut pings));
    assert_eq!(stopping, "STOPPING=1\n");
    let st = p.wait_exit(Duration::from_secs(10)).await;
    assert!(st.success(), "{st}");
}

/// packaging/rampart.service: systemd accepts it (`systemd-analyze verify`, with
/// the binary's path put in), and what it runs is what rampart offers.
#[test]
fn the_unit_file_verifies_and_runs_real_commands() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/rampart.service"
    ))
    .unwrap();
    let key = |k: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(key("Type"), ["notify"]);
    assert_eq!(
        key("NotifyAccess"),
        ["all"],
        "the upgraded process notifies"
    );
    assert_eq!(key("KillMode"), ["mixed"]);
    // the commands it runs exist, with these arguments
    for cmd in key("ExecStartPre")
        .iter()
        .chain(&key("ExecStart"))
        .chain(&key("ExecReload"))
    {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(args[0], "/usr/bin/rampart", "{cmd}");
        let help = std::process::Command::new(rampart_bin())
            .args(&args[1..2])
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "{cmd}: no such subcommand");
        let text = String::from_utf8_lossy(&help.stdout);
        for a in &args[2..] {
            if let Some(flag) = a.strip_prefix("--") {
                assert!(text.contains(&format!("--{flag}")), "{cmd}: no --{flag}");
            }
        }
    }
    // and the check before the start runs as written, on a real config: its
    // arguments parse (a bare path instead of `-c PATH` failed every start)
    for cmd in key("ExecStartPre") {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rampart.toml");
        let args: Vec<String> = cmd
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("/etc/rampart/rampart.toml", example.to_str().unwrap()))
            .collect();
        let out = std::process::Command::new(rampart_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // the stop timeout covers the default drain (drain_delay 0s + shutdown_grace 30s)
    let stop: u64 = key("TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(stop > 30, "TimeoutStopSec={stop}s");
    // systemd's own check, with the unit pointing at this build
    let dir = temp_dir("unit");
    let path = dir.join("rampart.service");
    std::fs::write(&path, unit.replace("/usr/bin/rampart", rampart_bin())).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
