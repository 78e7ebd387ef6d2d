//! The container's runtime layout, built without Docker by
//! docker/build-rootfs.sh (a static layout: the binary, its libraries, the
//! rampart user), run with chroot as that user: --version, check, and one
//! request served.

mod common;

use common::*;
use hyper::StatusCode;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_layout_runs_as_its_user_in_a_chroot() {
    let root = temp_dir("rootfs").join("root");
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker/build-rootfs.sh"
    ))
    .arg(rampart_bin())
    .arg(&root)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let in_root = |args: &[&str]| {
        Command::new("chroot")
            .arg("--userspec=10001:10001")
            .arg(&root)
            .arg("/usr/local/bin/rampart")
            .args(args)
            .output()
            .unwrap()
    };
    let v = in_root(&["--version"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("rampart "));
    // the image's own config passes its check inside
    let c = in_root(&["check", "-c", "/etc/rampart/rampart.toml"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));

    // and it serves: a config of the test's, a backend outside
    let backend = Backend::start("outside", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = http_config_at(
        listen,
        admin,
        "threads = 1\nstate_file = \"/var/lib/rampart/state.json\"",
        "",
        &[(backend.addr, 1)],
    );
    std::fs::write(root.join("etc/rampart/test.toml"), cfg).unwrap();
    // (killed on drop: a failed assertion does not leave it running)
    let mut child = KillOnDrop(
        Command::new("chroot")
            .arg("--userspec=10001:10001")
            .arg(&root)
            .args([
                "/usr/local/bin/rampart",
                "run",
                "-c",
                "/etc/rampart/test.toml",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let c = client();
    let served = loop {
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            c.get(format!("http://{listen}/").parse().unwrap()),
        )
        .await
        {
            break r.status();
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("rampart in the chroot exited: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "rampart in the chroot never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(served, StatusCode::OK);
    assert_eq!(backend.requests(), 1);
    // it runs as the rampart user (chroot execs it: the same process)
    let (_, body) = admin_get(admin, "/stats;json").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pid = v["pid"].as_u64().unwrap();
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(pid, u64::from(child.id()));
    assert_eq!(uid.split_whitespace().nth(1), Some("10001"), "{uid}");
    drop(child);
    // (the layout holds a copy of the debug binary: do not leave it behind)
    let _ = std::fs::remove_dir_all(&root);
}
