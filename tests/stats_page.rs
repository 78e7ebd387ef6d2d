//! The stats page renders in a real browser (Debian's headless Chromium): the DOM
//! it builds has a row per server, and a screenshot is taken.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;

fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is not installed: run scripts/test.sh, which installs it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_page_renders_a_row_per_server_in_chromium() {
    let port = common_port(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let mut backends = Vec::new();
    for (i, h) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
        backends.push(Backend::start(&format!("pod-{i}"), SocketAddr::new(ip(h), port)).await);
    }
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = http_config(
        listen,
        "[pool.health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"500ms\"\n",
        &[],
    );
    cfg = cfg.replace(
        &cfg[cfg.find("[admin]").unwrap()..cfg.find("[[listener]]").unwrap()],
        &format!("[admin]\nbind = \"{admin}\"\n\n"),
    );
    for b in &backends {
        cfg.push_str(&format!("  [[pool.server]]\n  address = \"{}\"\n", b.addr));
    }
    let p = Proxy::start(&cfg, &[listen, admin]).await;
    p.wait_pool(
        std::time::Duration::from_secs(5),
        "api",
        "servers UP",
        |v| count_status(v, "UP") == 3,
    )
    .await;
    backends[2]
        .stats
        .health_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    p.wait_pool(std::time::Duration::from_secs(5), "api", "one DOWN", |v| {
        count_status(v, "DOWN") == 1
    })
    .await;
    let c = client();
    for _ in 0..30 {
        get(&c, &format!("http://{listen}/")).await;
    }

    let profile = temp_dir("chromium");
    let url = format!("http://{admin}/stats?refresh=0");
    let out = chromium(&["--dump-dom", &url], &profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dom.matches("<tr class=\"server").count(), 3, "{dom}");
    for b in &backends {
        assert!(
            dom.contains(&format!("data-server=\"{}\"", b.addr)),
            "no row for {}",
            b.addr
        );
    }
    assert!(dom.contains("class=\"st DOWN\"") && dom.contains("class=\"st UP\""));
    assert!(dom.contains("<polyline"), "the sparkline is drawn");

    let shot = profile.join("stats.png");
    let out = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1500,820",
            &url,
        ],
        &profile,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    if let Ok(dest) = std::env::var("RAMPART_SCREENSHOT") {
        std::fs::copy(&shot, dest).unwrap();
    }
    let _ = std::fs::remove_dir_all(&profile);
}
