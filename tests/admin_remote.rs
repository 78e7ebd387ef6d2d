//! Admin writes from a non-loopback client are refused without a token. The client
//! and rampart run in two network namespaces the test creates (veth, 192.0.2.0/24).

mod common;

use common::netns::{is_root, veth, Netns};
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn writes_from_a_non_loopback_client_are_refused_without_a_token() {
    assert!(
        is_root(),
        "this test needs root to create network namespaces (CI runs as root)"
    );
    let tag = format!("{}", std::process::id() % 100_000);
    let srv = Netns::new(&format!("rampart-adm-s{tag}"));
    let cli = Netns::new(&format!("rampart-adm-c{tag}"));
    veth(&srv, "192.0.2.1/24", &cli, "192.0.2.2/24", &tag);

    let dir = temp_dir("admin-remote");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        r#"[global]
threads = 1
[admin]
bind = "0.0.0.0:8404"
[[listener]]
name = "web"
bind = ["127.0.0.1:8080"]
mode = "http"
pool = "api"
[[pool]]
name = "api"
  [[pool.server]]
  address = "127.0.0.1:9"
"#,
    )
    .unwrap();
    let mut rampart = srv
        .cmd(rampart_bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr")).unwrap(),
        ))
        .spawn()
        .unwrap();
    // the CLI as the client, from each side
    let from = |ns: &Netns, admin: &str, args: &[&str]| {
        let out = ns
            .cmd(rampart_bin())
            .args(args)
            .args(["--admin", admin])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while from(&cli, "http://192.0.2.1:8404", &["status"]).0 != Some(0) {
        assert!(
            Instant::now() < deadline,
            "admin not reachable: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // reads are open from anywhere
    let (code, out) = from(&cli, "http://192.0.2.1:8404", &["status"]);
    assert_eq!(code, Some(0), "{out}");
    // a write from 192.0.2.2 is refused
    let (code, out) = from(
        &cli,
        "http://192.0.2.1:8404",
        &["server", "drain", "api", "127.0.0.1:9"],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("403") && out.contains("loopback"), "{out}");
    // the same write from loopback on the server's side is accepted
    let (code, out) = from(
        &srv,
        "http://127.0.0.1:8404",
        &["server", "drain", "api", "127.0.0.1:9"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("DRAIN"), "{out}");
    let _ = rampart.kill();
    let _ = rampart.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
