//! Crash safety of `[global] state_file`: a process killed in the middle of a
//! write, a corrupted file, and a full disk (a small tmpfs the test mounts).

mod common;

use common::*;
use hyper::StatusCode;
use rampart::statefile::{self, StateFile};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    state: &Path,
    a: &Backend,
    b: &Backend,
) -> String {
    http_config_at(
        listen,
        admin,
        &format!("threads = 1\nstate_file = \"{}\"", state.display()),
        "",
        &[(a.addr, 1), (b.addr, 1)],
    )
}

fn weight_in(st: &StateFile, addr: std::net::SocketAddr) -> Option<u32> {
    st.servers
        .iter()
        .find(|s| s.address == addr.to_string())
        .and_then(|s| s.weight)
}

async fn server_json(admin: std::net::SocketAddr, addr: std::net::SocketAddr) -> Value {
    let pool = pool_view(admin, "api").await;
    let s = server_in(&pool, addr).clone();
    assert!(!s.is_null(), "{addr} not in {pool}");
    s
}

/// Re-weights a server; false once the proxy is gone (no panic: the kill test
/// writes until the process dies).
async fn set_weight(admin: std::net::SocketAddr, addr: std::net::SocketAddr, w: u32) -> bool {
    let req = hyper::Request::post(format!("http://{admin}/api/pools/api/servers/{addr}"))
        .header("content-type", "application/json")
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from(format!("{{\"weight\":{w}}}")),
        )))
        .unwrap();
    matches!(client().request(req).await, Ok(r) if r.status() == StatusCode::OK)
}

/// The temporary files in `dir` of processes other than `live` (the running
/// proxy's own, there for the instant of a write, is not a leftover).
fn tmp_files(dir: &Path, live: Option<i32>) -> Vec<PathBuf> {
    let own = live.map(|pid| format!(".tmp.{pid}"));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let p = p.to_string_lossy();
                    p.contains(".tmp.") && !own.as_ref().is_some_and(|o| p.ends_with(o.as_str()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// 12 times: a proxy whose admin API re-weights a server as fast as it answers
/// (the control task writes the state file once a second when something changed),
/// killed with SIGKILL at a different point of that second each round. After
/// every kill the file must parse and hold a weight that was really set (or the
/// one restored at start), and the next start must serve, restore exactly that
/// weight, and remove a temporary file a dead process left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_proxy_never_leaves_a_file_that_blocks_or_lies() {
    let (a, b) = two_pods().await;
    let dir = temp_dir("statefile-kill");
    let state = dir.join("state.json");
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = config(listen, admin, &state, &a, &b);
    let c = client();
    let mut restored: Option<u32> = None;
    for round in 0..12u32 {
        let mut p = Proxy::start(&cfg, &[listen, admin]).await;
        assert_eq!(
            server_json(admin, a.addr).await["weight"],
            restored.unwrap_or(1),
            "round {round}: the restored weight is the one in the file"
        );
        assert!(
            tmp_files(&dir, Some(p.pid())).is_empty(),
            "round {round}: a dead process's temporary file was not removed: {:?}",
            tmp_files(&dir, Some(p.pid()))
        );
        let (st, _) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "round {round}: serving after the restart"
        );
        let base = 1000 * (round + 1);
        let writer = tokio::spawn(async move {
            let mut w = base;
            while set_weight(admin, a.addr, w + 1).await {
                w += 1;
            }
            w
        });
        // pacing: the kill lands at a different point of the one-second write cycle
        tokio::time::sleep(Duration::from_millis(u64::from(150 + round * 113))).await;
        p.signal(libc::SIGKILL);
        p.wait_exit(Duration::from_secs(5)).await;
        let last_set = writer.await.unwrap();
        let saved = statefile::load(&state)
            .unwrap_or_else(|e| panic!("round {round}: the state file does not load: {e}"));
        let w = weight_in(&saved, a.addr);
        assert!(
            w == restored || w.is_some_and(|w| (base + 1..=last_set).contains(&w)),
            "round {round}: the file holds weight {w:?}: neither restored ({restored:?}) nor set \
             this round ({}..={last_set})",
            base + 1
        );
        restored = w;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run as a child process by the test below (the env var names the file): writes
/// the state file in a tight loop with the proxy's own `save`, each state carrying
/// its number in a weight, until killed.
#[test]
fn state_writer_child() {
    let Some(path) = std::env::var_os("RAMPART_TEST_STATE_WRITER") else {
        return; // not the child: nothing to do
    };
    let path = PathBuf::from(path);
    for seq in 1u64.. {
        let st = StateFile {
            servers: vec![statefile::SavedServer {
                pool: "api".into(),
                address: "127.0.0.1:1".into(),
                admin: "ready".into(),
                weight: Some(u32::try_from(seq % 1_000_000).unwrap_or(0)),
                health: "UP".into(),
                departed_at: None,
            }],
            ..StateFile::default()
        };
        statefile::save(&path, &st, seq).unwrap();
        if seq == 1 {
            std::fs::write(path.with_extension("started"), b"").unwrap();
        }
    }
}

/// 40 times: a process writing the state file in a tight loop is killed with
/// SIGKILL, mostly in the middle of a write (its temporary file is there). The
/// file must always load, and a start-up must remove the dead writer's
/// temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_write_leaves_the_last_complete_file() {
    let dir = temp_dir("statefile-writer");
    let state = dir.join("state.json");
    let mut mid_write = 0;
    for round in 0..40u32 {
        let _ = std::fs::remove_file(state.with_extension("started"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "state_writer_child", "--test-threads", "1", "-q"])
            .env("RAMPART_TEST_STATE_WRITER", &state)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(10), "the writer's first write", || {
            state.with_extension("started").exists()
        })
        .await;
        // pacing: let it write for a varying while before the kill
        tokio::time::sleep(Duration::from_millis(u64::from(3 + round % 11))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        if !tmp_files(&dir, None).is_empty() {
            mid_write += 1;
        }
        let saved = statefile::load(&state)
            .unwrap_or_else(|e| panic!("round {round}: the state file does not load: {e}"));
        assert!(weight_in(&saved, "127.0.0.1:1".parse().unwrap()).is_some_and(|w| w >= 1));
        // what start-up does: the dead writer's temporary file goes
        statefile::load_at_start(&state).unwrap();
        assert!(
            tmp_files(&dir, None).is_empty(),
            "{:?}",
            tmp_files(&dir, None)
        );
    }
    eprintln!("kills that landed in the middle of a write: {mid_write} of 40");
    assert!(
        mid_write > 0,
        "no kill landed during a write: the test did not test what it says"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state file that does not parse: the proxy starts and serves, the file is
/// moved aside (not overwritten: an operator may want it), and the next change
/// writes a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_state_file_is_moved_aside_and_never_blocks_start() {
    let (a, b) = two_pods().await;
    let dir = temp_dir("statefile-corrupt");
    let state = dir.join("state.json");
    let garbage = "{\"version\": 1, \"servers\": [{\"pool\": \"api\", \"addr";
    std::fs::write(&state, garbage).unwrap();
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(&config(listen, admin, &state, &a, &b), &[listen, admin]).await;
    let c = client();
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 10).await);
    assert_eq!(t.len(), 2, "both servers serve: {t:?}");
    let aside = dir.join("state.json.corrupt");
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), garbage);
    assert!(
        p.stderr().contains("not a rampart state file"),
        "the warning names the problem: {}",
        p.stderr()
    );
    assert!(set_weight(admin, a.addr, 7).await);
    wait_for(Duration::from_secs(5), "a good state file", || {
        statefile::load(&state).is_ok_and(|s| weight_in(&s, a.addr) == Some(7))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Servers that left their pool: the file keeps an entry only while it holds an
/// operator's state, and only for DEPARTED_FOR after the server left. A maint
/// written days ago for an address an unrelated server has now is not restored
/// onto it, and stale entries are not written again (with pod churn, every
/// address ever seen stayed in the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_left_long_ago_are_neither_restored_nor_written_again() {
    let (a, b) = two_pods().await;
    let dir = temp_dir("statefile-departed");
    let state = dir.join("state.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days_ago = now - 3 * 86_400;
    let entry = |addr: &str, admin: &str, departed_at: Option<u64>| statefile::SavedServer {
        pool: "api".into(),
        address: addr.into(),
        admin: admin.into(),
        weight: None,
        health: "UP".into(),
        departed_at,
    };
    let file = StateFile {
        servers: vec![
            // a pod in maintenance that left days ago; `a` has its address now
            entry(&a.addr.to_string(), "maint", Some(days_ago)),
            entry("10.255.0.1:80", "maint", Some(days_ago)),
            // left, with nothing an operator set
            entry("10.255.0.2:80", "ready", None),
            // left a minute ago: kept for its return
            entry("10.255.0.3:80", "drain", Some(now - 60)),
        ],
        ..StateFile::default()
    };
    statefile::save(&state, &file, 0).unwrap();
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let _p = Proxy::start(&config(listen, admin, &state, &a, &b), &[listen, admin]).await;
    assert_eq!(
        server_json(admin, a.addr).await["admin"],
        "ready",
        "an old departed server's maint is not restored onto its address"
    );
    // a change writes the file
    assert!(set_weight(admin, b.addr, 7).await);
    wait_for(Duration::from_secs(5), "the write after the change", || {
        statefile::load(&state).is_ok_and(|s| weight_in(&s, b.addr) == Some(7))
    })
    .await;
    let saved = statefile::load(&state).unwrap();
    let mut entries: Vec<(String, String, Option<u64>)> = saved
        .servers
        .iter()
        .map(|s| (s.address.clone(), s.admin.clone(), s.departed_at))
        .collect();
    entries.sort();
    let mut want = vec![
        (a.addr.to_string(), "ready".to_string(), None),
        (b.addr.to_string(), "ready".to_string(), None),
        (
            "10.255.0.3:80".to_string(),
            "drain".to_string(),
            Some(now - 60),
        ),
    ];
    want.sort();
    assert_eq!(entries, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The state file on a 256 KiB tmpfs that the test then fills: writes fail, are
/// counted in the metrics and shown as failing, the file on disk stays the last
/// complete one, the proxy keeps serving, and once space is back the next change
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_loudly_and_serving_goes_on() {
    if !netns::is_root() {
        panic!("this test mounts a tmpfs: run it as root (CI does)");
    }
    let (a, b) = two_pods().await;
    let mnt = Tmpfs(temp_dir("statefile-full"));
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt.0)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let state = mnt.0.join("state.json");
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let p = Proxy::start(&config(listen, admin, &state, &a, &b), &[listen, admin]).await;
    assert!(set_weight(admin, a.addr, 3).await);
    wait_for(Duration::from_secs(5), "the first write", || {
        statefile::load(&state).is_ok_and(|s| weight_in(&s, a.addr) == Some(3))
    })
    .await;
    // fill the file system
    let filler = mnt.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let errors = |text: &str| metric(text, "rampart_state_file_write_errors_total");
    let (_, m) = admin_get(admin, "/metrics").await;
    assert_eq!(errors(&m), 0.0);
    assert!(
        set_weight(admin, a.addr, 4).await,
        "the admin change itself succeeds"
    );
    wait_metric(admin, "rampart_state_file_write_errors_total", 1.0).await;
    // serving goes on; the live weight is the new one; the file is the last good one
    let c = client();
    let t = tally(&bodies(&c, &format!("http://{listen}/"), 20).await);
    assert_eq!(t.values().sum::<usize>(), 20);
    assert_eq!(server_json(admin, a.addr).await["weight"], 4);
    let on_disk = statefile::load(&state).expect("the last complete file");
    assert_eq!(weight_in(&on_disk, a.addr), Some(3));
    assert!(
        tmp_files(&mnt.0, None).is_empty(),
        "{:?}",
        tmp_files(&mnt.0, None)
    );
    let failing = |want: f64| async move {
        metric(
            &admin_get(admin, "/metrics").await.1,
            "rampart_state_file_failing",
        ) == want
    };
    wait_until(Duration::from_secs(5), "the failing gauge set", || {
        failing(1.0)
    })
    .await;
    // space again: the next change is written
    std::fs::remove_file(&filler).unwrap();
    assert!(set_weight(admin, a.addr, 5).await);
    wait_for(
        Duration::from_secs(5),
        "the write after the disk has room",
        || statefile::load(&state).is_ok_and(|s| weight_in(&s, a.addr) == Some(5)),
    )
    .await;
    wait_until(Duration::from_secs(5), "the failing gauge cleared", || {
        failing(0.0)
    })
    .await;
    drop(p);
}
