//! Reloading the config of a running proxy (SIGHUP, `POST /api/reload`, `rampart
//! reload`, the file watch): what survives, what changes, what a bad config does,
//! and that listeners never refuse a connection. Real binary, real sockets.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A config: listener "web" on `listen` to pool "api" of `servers` (address,
/// weight), plus whatever `extra` adds at the end (pools, listeners).
fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    api_extra: &str,
    servers: &[(SocketAddr, u32)],
    extra: &str,
) -> String {
    let global = "threads = 2\nshutdown_grace = \"5s\"\naccess_log = \"off\"\n";
    http_config_at(listen, admin, global, api_extra, servers) + extra
}

/// A listener `name` on `bind` with a pool of its own (also `name`) of `server`.
fn listener_with_pool(name: &str, bind: SocketAddr, mode: &str, server: SocketAddr) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nbind = [\"{bind}\"]\nmode = \"{mode}\"\npool = \"{name}\"\n\n[[pool]]\nname = \"{name}\"\n  [[pool.server]]\n  address = \"{server}\"\n"
    )
}

async fn reload_api(admin: SocketAddr) -> (hyper::StatusCode, Value) {
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    (
        st,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

async fn generation(admin: SocketAddr) -> u64 {
    admin_stats(admin).await["config"]["generation"]
        .as_u64()
        .unwrap()
}

/// The stats view of one server.
fn server<'a>(s: &'a Value, pool: &str, addr: SocketAddr) -> &'a Value {
    let v = server_in(pool_in(s, pool), addr);
    assert!(!v.is_null(), "no server {pool}/{addr} in {s}");
    v
}

/// Sends GETs to `url` one after another until stopped; counts successes and
/// keeps every failure (anything but 200).
struct Load {
    ok: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(url: String) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (Arc::clone(&ok), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let c = client();
            let mut errors = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match try_get(&c, &url).await {
                    Ok(200) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            errors
        });
        Load { ok, stop, task }
    }

    /// Waits until `n` more requests succeeded (the proxy serves right now).
    async fn passes(&self, n: u64) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        let ok = Arc::clone(&self.ok);
        wait_for(Duration::from_secs(10), "requests to pass", || {
            ok.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.task.await.unwrap();
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

async fn try_get(c: &Client, url: &str) -> Result<u16, String> {
    let resp = c
        .get(url.parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_with_its_key_and_the_old_one_keeps_serving() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let good = config(listen, admin, "", &[(a.addr, 1)], "");
    let p = Proxy::start(&good, &[listen, admin]).await;
    assert_eq!(generation(admin).await, 1);
    let load = Load::start(format!("http://{listen}/"));
    load.passes(20).await;

    let in_use = a.addr; // a backend listens there: binding it fails
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an unknown key",
            good.replace("threads = 2", "threads = 2\nthreadz = 2"),
            "threadz",
        ),
        (
            "a bad duration",
            good.replace(
                "name = \"api\"\n",
                "name = \"api\"\nconnect_timeout = \"5 parsecs\"\n",
            ),
            "rampart.toml:17: connect_timeout",
        ),
        (
            "a listener's pool that does not exist",
            good.replace("pool = \"api\"", "pool = \"nope\""),
            "listener[0].pool",
        ),
        (
            "a TOML syntax error",
            good.replace("[[pool]]", "[[pool]"),
            "rampart.toml:",
        ),
        (
            "an address that cannot be bound",
            config(listen,
                admin,
                "",
                &[(a.addr, 1)],
                &format!("\n[[listener]]\nname = \"taken\"\nbind = [\"{in_use}\"]\nmode = \"http\"\npool = \"api\"\n"),
            ),
            "listener \"taken\": cannot listen on",
        ),
    ];
    for (what, text, key) in &cases {
        std::fs::write(&p.config, text).unwrap();
        let (st, r) = reload_api(admin).await;
        assert_eq!(st, 422, "{what}: {r}");
        assert_eq!(r["ok"], false, "{what}");
        let errors: Vec<&str> = r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let errors = errors.join("\n");
        assert!(errors.contains(key), "{what}: {key:?} not in {errors}");
        assert_eq!(r["generation"], 1, "{what}");
        // the CLI says the same and exits 1
        let out = std::process::Command::new(rampart_bin())
            .args(["reload", "--admin", &format!("http://{admin}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{what}: {err}");
        assert!(err.contains("generation 1 keeps serving"), "{err}");
        load.passes(5).await;
    }
    // SIGHUP with a bad file: counted as failed, nothing changes.
    let failed_before = admin_stats(admin).await["config"]["reloads_failed"]
        .as_u64()
        .unwrap();
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = admin_stats(admin).await;
        if s["config"]["reloads_failed"].as_u64().unwrap() > failed_before {
            assert_eq!(s["config"]["last_reload"]["trigger"], "SIGHUP");
            assert_eq!(s["config"]["generation"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP was not handled: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("rampart_config_reloads_total{result=\"failed\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("rampart_config_generation 1"), "{metrics}");
    // The ones refused never took effect: the traffic went to a all along.
    assert_eq!(b.requests(), 0);

    // A good file then applies: the pool now has b instead of a.
    std::fs::write(&p.config, config(listen, admin, "", &[(b.addr, 1)], "")).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["generation"], 2);
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("+api/{}", b.addr)),
        "{r}"
    );
    let before_b = b.requests();
    load.passes(20).await;
    assert!(b.requests() >= before_b + 20);
    let (ok, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "failed requests around reloads: {errors:?}"
    );
    assert!(ok > 50);
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("rampart_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("rampart_config_generation 2"), "{metrics}");
    assert!(metrics.contains("rampart_config_last_reload_timestamp_seconds"));
    // rampart status says it too
    let out = std::process::Command::new(rampart_bin())
        .args(["status", "--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config generation 2"), "{text}");
    assert!(
        text.contains("last reload") && text.contains("(api)"),
        "{text}"
    );
    // and the stats page header
    let (_, page) = admin_get(admin, "/stats").await;
    assert!(page.contains("id=\"generation\">2<"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_drained_servers_stay_so_through_20_reloads() {
    let port = common_port(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let a = Backend::start("a", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let b = Backend::start("b", SocketAddr::new(ip("127.0.0.3"), port)).await;
    let c = Backend::start("c", SocketAddr::new(ip("127.0.0.4"), port)).await;
    // b fails its health checks from the start
    b.stats.health_status.store(503, Ordering::SeqCst);
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let version = |i: usize| {
        // the versions differ in a's weight, the health interval (health tasks
        // restart) and a pool that comes and goes
        let health = format!(
            "  [pool.health]\n  interval = \"{}ms\"\n  fast_interval = \"100ms\"\n  rise = 2\n  fall = 1\n  kind = \"http\"\n  path = \"/health\"\n",
            if i % 2 == 0 { 200 } else { 300 }
        );
        let extra = if i % 2 == 1 {
            format!(
                "\n[[pool]]\nname = \"extra\"\n  [[pool.server]]\n  address = \"{}\"\n",
                a.addr
            )
        } else {
            String::new()
        };
        config(
            listen,
            admin,
            &health,
            &[(a.addr, 1 + (i as u32 % 2)), (b.addr, 1), (c.addr, 1)],
            &extra,
        )
    };
    let p = Proxy::start(&version(0), &[listen, admin]).await;
    let up_then = Instant::now() + Duration::from_secs(10);
    loop {
        let s = admin_stats(admin).await;
        if server(&s, "api", a.addr)["status"] == "UP"
            && server(&s, "api", b.addr)["status"] == "DOWN"
            && server(&s, "api", c.addr)["status"] == "UP"
        {
            break;
        }
        assert!(Instant::now() < up_then, "checks did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = admin_post(
        admin,
        &format!("/api/pools/api/servers/{}", c.addr),
        r#"{"state":"drain"}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let load = Load::start(format!("http://{listen}/"));
    load.passes(20).await;
    let mut last_total = 0;
    let mut last_checks = 0;
    for i in 1..=20 {
        std::fs::write(&p.config, version(i)).unwrap();
        let (st, r) = reload_api(admin).await;
        assert_eq!(st, 200, "reload {i}: {r}");
        assert_eq!(r["generation"], 1 + i as u64);
        let s = admin_stats(admin).await;
        assert_eq!(server(&s, "api", b.addr)["status"], "DOWN", "reload {i}");
        assert_eq!(server(&s, "api", c.addr)["status"], "DRAIN", "reload {i}");
        let sa = server(&s, "api", a.addr);
        assert_eq!(sa["weight"], 1 + (i as u64 % 2), "reload {i}: {sa}");
        // counters only grow
        let total = sa["total"].as_u64().unwrap();
        let checks = server(&s, "api", b.addr)["checks_failed"].as_u64().unwrap();
        assert!(
            total >= last_total && checks >= last_checks,
            "reload {i}: {s}"
        );
        (last_total, last_checks) = (total, checks);
        load.passes(10).await;
    }
    let (ok, errors) = load.finish().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok >= 220);
    assert_eq!(b.requests(), 0, "the DOWN server took requests");
    assert_eq!(c.requests(), 0, "the drained server took requests");
    assert!(b.stats.health_checks.load(Ordering::SeqCst) > 0);
    drop(p);
}

/// A GET of 1.5 s through `addr`, once `backend` has it in hand.
async fn slow_in_flight(
    addr: SocketAddr,
    backend: &Backend,
) -> tokio::task::JoinHandle<(hyper::StatusCode, String)> {
    let slow =
        tokio::spawn(async move { get(&client(), &format!("http://{addr}/slow?ms=1500")).await });
    wait_for(Duration::from_secs(5), "the slow request to arrive", || {
        backend.stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_moves_drains_the_old_address_and_serves_the_new_one() {
    let (a, _b) = two_pods().await;
    let old = free_addr("127.0.0.1");
    let new = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let p = Proxy::start(&config(old, admin, "", &[(a.addr, 1)], ""), &[old, admin]).await;
    // A kept-alive connection on the old address, with a request in flight.
    let slow = slow_in_flight(old, &a).await;
    std::fs::write(&p.config, config(new, admin, "", &[(a.addr, 1)], "")).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    assert!(r["summary"].as_str().unwrap().contains("~web"), "{r}");
    // the new address serves at once
    assert_eq!(get(&client(), &format!("http://{new}/")).await.0, 200);
    // the old one accepts no more connections
    wait_until(Duration::from_secs(5), "the old address closed", || async {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    // ... while its request in flight finishes
    assert_eq!(slow.await.unwrap(), (hyper::StatusCode::OK, "pod-a".into()));
    let s = admin_stats(admin).await;
    assert_eq!(s["listeners"][0]["name"], "web");
}

/// With one worker thread too, a listener moved from an address to the wildcard
/// address of the same port is bound while the old socket still serves its
/// request (listeners are SO_REUSEPORT, as HAProxy's are by default), where the
/// reload was refused before ("cannot listen on 0.0.0.0:P: address in use").
/// Traffic stays on loopback: the wildcard socket is reached at 127.0.0.1 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moved_to_the_wildcard_of_its_port_is_bound_with_one_thread() {
    let (a, _b) = two_pods().await;
    let port = common_port(&["0.0.0.0", "127.0.0.1"]);
    let old: SocketAddr = ([127, 0, 0, 1], port).into();
    let wild: SocketAddr = ([0, 0, 0, 0], port).into();
    let admin = free_addr("127.0.0.1");
    let text = |listen: SocketAddr| {
        let global = "threads = 1\nshutdown_grace = \"5s\"\naccess_log = \"off\"\n";
        http_config_at(listen, admin, global, "", &[(a.addr, 1)])
    };
    let p = Proxy::start(&text(old), &[old, admin]).await;
    let slow = slow_in_flight(old, &a).await;
    std::fs::write(&p.config, text(wild)).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(generation(admin).await, 2);
    // the request in flight on the old socket finishes ...
    assert_eq!(slow.await.unwrap(), (hyper::StatusCode::OK, "pod-a".into()));
    // ... and the port serves through the wildcard socket, at 127.0.0.1 and
    // at 127.0.0.2, which the old socket did not listen on
    for host in ["127.0.0.1", "127.0.0.2"] {
        assert_eq!(
            get(&client(), &format!("http://{host}:{port}/")).await.0,
            200,
            "{host}"
        );
    }
}

/// Listeners share their port (SO_REUSEPORT, with one thread too) but the
/// admin socket does not, and it is bound first: a second proxy started with
/// the same config fails to start, naming the admin address, and takes none of
/// the first one's traffic. Another socket may share the listener's port
/// (SO_REUSEPORT too), unless `reuse_port = false` (HAProxy's `noreuseport`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_the_same_config_does_not_start() {
    let (a, _b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = config(listen, admin, "", &[(a.addr, 1)], "").replace("threads = 2", "threads = 1");
    // another socket on the listener's port, SO_REUSEPORT
    let shared = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&listen.into()).map(|()| s)
    };
    let p = Proxy::start(&text, &[listen, admin]).await;
    assert!(shared().is_ok(), "SO_REUSEPORT with one thread");
    let out = output_within(
        std::process::Command::new(rampart_bin())
            .args(["run", "-c"])
            .arg(&p.config),
        Duration::from_secs(30),
        "a second rampart run",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener \"admin\": cannot listen on") && err.contains(&admin.to_string()),
        "{err}"
    );
    assert_eq!(get(&client(), &format!("http://{listen}/")).await.0, 200);
    drop(p);
    // reuse_port = false: the port is the proxy's alone
    let off = text.replace("threads = 1", "threads = 1\nreuse_port = false");
    let p = Proxy::start(&off, &[listen, admin]).await;
    let e = shared().map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    assert_eq!(get(&client(), &format!("http://{listen}/")).await.0, 200);
    // a reload that turns it on says that bound addresses keep their sockets
    std::fs::write(&p.config, &text).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    let said = r["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .is_some_and(|w| w.contains("global.reuse_port changed"))
    });
    assert!(said, "{r}");
    let e = shared().map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_listener_never_refuses_a_connection_across_20_reloads() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let other = free_addr("127.0.0.1");
    let version = |i: usize| {
        // every other version adds a tcp listener with its own pool
        let extra = if i % 2 == 1 {
            listener_with_pool("other", other, "tcp", b.addr)
        } else {
            String::new()
        };
        config(listen, admin, "", &[(a.addr, 1)], &extra)
    };
    let p = Proxy::start(&version(0), &[listen, admin]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let knocker = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                match tokio::net::TcpStream::connect(listen).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                    Err(e) => panic!("connect: {e}"),
                }
            }
            (ok, refused)
        })
    };
    for i in 1..=20 {
        std::fs::write(&p.config, version(i)).unwrap();
        let (st, r) = reload_api(admin).await;
        assert_eq!(st, 200, "{r}");
        if i % 2 == 1 {
            // the added TCP listener serves
            let mut s = tokio::net::TcpStream::connect(other).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.ends_with("pod-b"), "{out}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, refused) = knocker.await.unwrap();
    assert_eq!(
        refused, 0,
        "connections refused during reloads ({ok} accepted)"
    );
    assert!(ok > 100, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_picked_up_by_watch_config() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = |server: SocketAddr| {
        config(listen, admin, "", &[(server, 1)], "").replace(
            "access_log = \"off\"",
            "access_log = \"off\"\nwatch_config = true",
        )
    };
    // What the kubelet lays out: rampart.toml -> ..data/rampart.toml,
    // ..data -> ..v1; an update writes ..v2 and renames a new ..data over the old.
    let dir = temp_dir("configmap");
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/rampart.toml"), text(a.addr)).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rampart.toml", dir.join("rampart.toml")).unwrap();
    let _child = KillOnDrop(
        std::process::Command::new(rampart_bin())
            .args(["run", "-c"])
            .arg(dir.join("rampart.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "pod-a served", || async {
        get_maybe(&format!("http://{listen}/")).await.as_deref() == Some("pod-a")
    })
    .await;
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/rampart.toml"), text(b.addr)).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = admin_stats(admin).await;
        if s["config"]["generation"] == 2 {
            assert_eq!(s["config"]["last_reload"]["trigger"], "file watch");
            break;
        }
        assert!(Instant::now() < deadline, "the swap was not picked up: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.1,
        "pod-b"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /api/reload`: the generation and what the last reload did.
async fn reloads(admin: SocketAddr) -> Value {
    let (st, body) = admin_get(admin, "/api/reload").await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until the file watch has reloaded the config to generation `g`;
/// `GET /api/reload` then.
async fn wait_watched(admin: SocketAddr, g: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reloads(admin).await;
        if r["generation"].as_u64() >= Some(g) {
            assert_eq!(r["last_reload"]["ok"], true, "{r}");
            assert_eq!(r["last_reload"]["trigger"], "file watch", "{r}");
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the file watch did not reload to generation {g}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config with `watch_config = true` whose pool "api" (of one server that
/// is never asked) has `[pool.tls] ca = ca`, and `weight`.
fn watched_config(listen: SocketAddr, admin: SocketAddr, ca: &str, weight: u32) -> String {
    let tls = format!("  [pool.tls]\n  ca = {ca:?}\n");
    let server = SocketAddr::from(([127, 0, 0, 1], 9));
    config(listen, admin, &tls, &[(server, weight)], "").replace(
        "access_log = \"off\"",
        "access_log = \"off\"\nwatch_config = true",
    )
}

/// An edit that names another CA file and removes the one the config in force
/// names: the watch sees the old file missing and applies the edit all the
/// same (the config no longer names it), and the edits after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_applies_an_edit_that_removes_the_file_the_old_config_named() {
    let pki = common::tls::Pki::new("Watch renamed CA");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let files = temp_dir("watch-renamed");
    let old_ca = files.join("old-ca.pem").display().to_string();
    let new_ca = files.join("new-ca.pem").display().to_string();
    std::fs::copy(pki.ca(), &old_ca).unwrap();
    let text = watched_config(listen, admin, &old_ca, 1);
    let p = Proxy::start(&text, &[listen, admin]).await;
    assert_eq!(generation(admin).await, 1);
    std::fs::copy(pki.ca(), &new_ca).unwrap();
    std::fs::write(&p.config, watched_config(listen, admin, &new_ca, 1)).unwrap();
    std::fs::remove_file(&old_ca).unwrap();
    wait_watched(admin, 2).await;
    // the next edit is applied too
    std::fs::write(&p.config, watched_config(listen, admin, &new_ca, 2)).unwrap();
    let r = wait_watched(admin, 3).await;
    assert_eq!(r["reloads_failed"], 0, "{r}");
    let _ = std::fs::remove_dir_all(&files);
}

/// A config that names a file before it is there (a ConfigMap updated before
/// the Secret it refers to) is refused, not read again while nothing
/// changes, and applied by the file watch once the file appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_applies_a_refused_config_once_the_file_it_names_appears() {
    let pki = common::tls::Pki::new("Watch later CA");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let first = pki.ca().display().to_string();
    let text = watched_config(listen, admin, &first, 1);
    let p = Proxy::start(&text, &[listen, admin]).await;
    // relative to the config file's folder
    std::fs::write(&p.config, watched_config(listen, admin, "later-ca.pem", 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = reloads(admin).await;
        if r["reloads_failed"] == 1 {
            break r;
        }
        assert!(Instant::now() < deadline, "the edit was not read: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r["last_reload"]["trigger"], "file watch", "{r}");
    assert!(
        r["last_reload"]["errors"]
            .to_string()
            .contains("later-ca.pem"),
        "{r}"
    );
    assert_eq!(r["generation"], 1, "{r}");
    // not read again while nothing changes (the watch looks twice a second)
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let r = reloads(admin).await;
        assert_eq!(r["reloads_failed"], 1, "read again: {r}");
        assert_eq!(r["generation"], 1, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the file appears (written whole, then renamed into place)
    let dir = p.config.parent().unwrap();
    std::fs::copy(pki.ca(), dir.join("later-ca.pem.tmp")).unwrap();
    std::fs::rename(dir.join("later-ca.pem.tmp"), dir.join("later-ca.pem")).unwrap();
    let r = wait_watched(admin, 2).await;
    assert_eq!(r["reloads_failed"], 1, "{r}");
}

async fn get_maybe(url: &str) -> Option<String> {
    let resp = client().get(url.parse().ok()?).await.ok()?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_keep_memory_and_fds_flat_and_forget_removed_pools() {
    let (a, b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let extra_listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let version = |i: usize| {
        let extra = if i % 2 == 1 {
            listener_with_pool("extra", extra_listen, "http", b.addr)
        } else {
            String::new()
        };
        config(listen, admin, "", &[(a.addr, 1 + (i as u32 % 3))], &extra)
    };
    let p = Proxy::start(&version(0), &[listen, admin]).await;
    let c = client();
    let reload = |i: usize| {
        std::fs::write(&p.config, version(i)).unwrap();
        async move {
            let (st, r) = reload_api(admin).await;
            assert_eq!(st, 200, "reload {i}: {r}");
        }
    };
    // Warm up: every kind of state exists once (pool, listener, histograms).
    for i in 1..=100 {
        reload(i).await;
        if i % 2 == 1 {
            assert_eq!(get(&c, &format!("http://{extra_listen}/")).await.1, "pod-b");
        }
        assert_eq!(get(&c, &format!("http://{listen}/")).await.0, 200);
    }
    let (rss0, fds0) = (rss_kib(p.pid()), fd_count(p.pid()));
    let n: usize = std::env::var("RELOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 101..=100 + n {
        reload(i).await;
        if i % 2 == 1 {
            assert_eq!(get(&c, &format!("http://{extra_listen}/")).await.1, "pod-b");
        }
    }
    assert_eq!(generation(admin).await, 1 + 100 + n as u64);
    // ended on an even version: the extra pool and listener are gone
    let (rss1, fds1) = (rss_kib(p.pid()), fd_count(p.pid()));
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        !metrics.contains("pool=\"extra\""),
        "metrics of the removed pool are still exported"
    );
    assert!(metrics.contains("pool=\"api\""));
    // the idle client connections to the extra listener are closed by now
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut fds1 = fds1;
    while fds1 > fds0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fds1 = fd_count(p.pid());
    }
    eprintln!("after {n} reloads: RSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}");
    assert!(
        rss1 <= rss0 + rss0 / 10,
        "RSS grew more than 10%: {rss0} -> {rss1} KiB"
    );
    // at most the baseline: that one may still count a connection on its way
    // out (the client's to the extra listener, removed by the last warm-up
    // reload), while a leak of one fd per reload (or per two) ends far above
    assert!(fds1 <= fds0, "fd count grew: {fds0} -> {fds1}");
}

/// A GET on a kept-alive connection: the body (Content-Length framing).
async fn kept_get(s: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: w\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the kept-alive connection closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body[..len].to_string();
            }
        }
    }
}

/// A raw HTTP/1.1 exchange on a new connection (`Connection: close`): the status.
async fn one_shot(addr: SocketAddr, req: &[u8]) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(req).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.starts_with("HTTP/1.1 200") {
        true => Ok(text),
        false => Err(text),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request_and_keep_untouched_pools_connections() {
    use tokio::io::AsyncWriteExt;
    let port = common_port(&["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    let a = Backend::start("a", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let b = Backend::start("b", SocketAddr::new(ip("127.0.0.3"), port)).await;
    let stable = Backend::start("stable", SocketAddr::new(ip("127.0.0.4"), port)).await;
    let extra = Backend::start("extra", SocketAddr::new(ip("127.0.0.5"), port)).await;
    let echo = start_echo(SocketAddr::new(ip("127.0.0.4"), 0)).await;
    let web = free_addr("127.0.0.1");
    let tcp = free_addr("127.0.0.1");
    let side = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    // The two versions differ in: a pool added and removed ("extra"), a
    // server's weight (b), a route (/x), a listener added and removed ("side"),
    // and the health intervals of "api". "stable" and "echo" are untouched.
    let version = |odd: bool| {
        let mut s = format!(
            r#"[global]
threads = 2
shutdown_grace = "5s"
access_log = "off"

[admin]
bind = "{admin}"

[[listener]]
name = "web"
bind = ["{web}"]
mode = "http"
pool = "api"
  [[listener.route]]
  host = "stable.test"
  pool = "stable"
{route}
[[listener]]
name = "tcp"
bind = ["{tcp}"]
mode = "tcp"
pool = "echo"

[[pool]]
name = "api"
  [pool.health]
  kind = "http"
  path = "/health"
  interval = "{interval}"
  [[pool.server]]
  address = "{a}"
  [[pool.server]]
  address = "{b}"
  weight = {wb}

[[pool]]
name = "stable"
  [[pool.server]]
  address = "{stable}"

[[pool]]
name = "echo"
  [[pool.server]]
  address = "{echo}"
"#,
            route = if odd {
                "  [[listener.route]]\n  path_prefix = \"/x\"\n  pool = \"extra\"\n"
            } else {
                ""
            },
            interval = if odd { "300ms" } else { "200ms" },
            wb = if odd { 3 } else { 1 },
            a = a.addr,
            b = b.addr,
            stable = stable.addr,
        );
        if odd {
            s.push_str(&format!(
                "\n[[pool]]\nname = \"extra\"\n  [[pool.server]]\n  address = \"{}\"\n\n[[listener]]\nname = \"side\"\nbind = [\"{side}\"]\nmode = \"http\"\npool = \"extra\"\n",
                extra.addr
            ));
        }
        s
    };
    let p = Proxy::start(&version(false), &[web, tcp, admin]).await;
    wait_for(Duration::from_secs(10), "api servers UP", || {
        a.stats.health_checks.load(Ordering::SeqCst) > 0
            && b.stats.health_checks.load(Ordering::SeqCst) > 0
    })
    .await;
    let mut ready = false;
    for _ in 0..200 {
        if get_maybe(&format!("http://{web}/")).await.as_deref() == Some("a")
            || get_maybe(&format!("http://{web}/")).await.as_deref() == Some("b")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "api never served");

    let stop = Arc::new(AtomicBool::new(false));
    // 1. keep-alive GETs (two clients)
    let keepalive = [
        Load::start(format!("http://{web}/")),
        Load::start(format!("http://{web}/")),
    ];
    // 2. keep-alive GETs to the untouched pool, one connection
    let to_stable = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let req = hyper::Request::get(format!("http://{web}/"))
                    .header("host", "stable.test")
                    .body(empty())
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        // a body cut short is a failure, not a success
                        match http_body_util::BodyExt::collect(r.into_body()).await {
                            Ok(_) => ok += 1,
                            Err(e) => errors.push(format!("body: {e:?}")),
                        }
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            (ok, errors)
        })
    };
    // 3. a new connection per request
    let fresh = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match one_shot(
                    web,
                    b"GET / HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n",
                )
                .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e),
                }
            }
            (ok, errors)
        })
    };
    // 4. POSTs with 100 KB bodies
    let posts = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut errors) = (0u64, Vec::new());
            let n = 100_000u64;
            while !stop.load(Ordering::SeqCst) {
                let req = hyper::Request::post(format!("http://{web}/upload"))
                    .body(http_body_util::BodyExt::boxed(Pattern::new(n)))
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let body = http_body_util::BodyExt::collect(r.into_body())
                            .await
                            .map(|b| b.to_bytes());
                        match body {
                            Ok(b) if b == format!("{n} {}", Pattern::checksum(n)) => ok += 1,
                            other => errors.push(format!("{other:?}")),
                        }
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            (ok, errors)
        })
    };
    // 5. one long download, read a third before, a third during and the rest
    //    after the reloads
    let size: u64 = 24 << 20;
    let (phase_tx, mut phase_rx) = tokio::sync::watch::channel(0u8);
    let download = tokio::spawn(async move {
        let resp = client()
            .get(format!("http://{web}/big?bytes={size}").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
            let d = f.unwrap().into_data().unwrap();
            sum = d.iter().fold(sum, |s, &x| s.wrapping_add(u64::from(x)));
            n += d.len() as u64;
            let phase = u64::from(*phase_rx.borrow());
            if n >= size / 3 * (phase + 1) && phase < 2 {
                let _ = phase_rx.changed().await;
            }
        }
        (n, sum)
    });
    // 6. a WebSocket-style tunnel and 7. a TCP-mode session
    let mut tunnel = open_echo_tunnel(web).await;
    let mut session = tokio::net::TcpStream::connect(tcp).await.unwrap();
    echo_roundtrip(&mut tunnel, b"hello").await;
    echo_roundtrip(&mut session, b"hello").await;
    for l in &keepalive {
        l.passes(20).await;
    }
    let stable_conns = stable.stats.connections.load(Ordering::SeqCst);

    // one kept-alive connection: its next request follows the new routes
    let mut kept = tokio::net::TcpStream::connect(web).await.unwrap();
    for i in 1..=50u64 {
        if i == 25 {
            phase_tx.send(1).unwrap();
        }
        std::fs::write(&p.config, version(i % 2 == 1)).unwrap();
        let (st, r) = reload_api(admin).await;
        assert_eq!(st, 200, "reload {i}: {r}");
        assert_eq!(r["generation"], 1 + i);
        echo_roundtrip(&mut tunnel, format!("tunnel {i}").as_bytes()).await;
        echo_roundtrip(&mut session, format!("session {i}").as_bytes()).await;
        if i % 2 == 1 {
            assert_eq!(get(&client(), &format!("http://{side}/")).await.1, "extra");
            assert_eq!(get(&client(), &format!("http://{web}/x")).await.1, "extra");
        }
        let body = kept_get(&mut kept, "/x").await;
        if i % 2 == 1 {
            assert_eq!(body, "extra", "reload {i}");
        } else {
            assert!(body == "a" || body == "b", "reload {i}: {body}");
        }
        for l in &keepalive {
            l.passes(5).await;
        }
    }
    phase_tx.send(2).unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    let mut total = 0;
    for l in keepalive {
        let (ok, errors) = l.finish().await;
        total += ok;
        failures.extend(errors);
    }
    for (what, t) in [("stable", to_stable), ("fresh", fresh), ("posts", posts)] {
        let (ok, errors) = t.await.unwrap();
        assert!(ok > 0, "{what}: no request passed");
        total += ok;
        failures.extend(errors.into_iter().map(|e| format!("{what}: {e}")));
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(download.await.unwrap(), (size, Pattern::checksum(size)));
    echo_roundtrip(&mut tunnel, b"bye").await;
    echo_roundtrip(&mut session, b"bye").await;
    session.shutdown().await.unwrap();
    // The untouched pool kept its one pooled connection through 50 reloads.
    assert_eq!(
        stable.stats.connections.load(Ordering::SeqCst),
        stable_conns,
        "the stable pool's backend saw new connections"
    );
    assert!(stable_conns <= 2, "{stable_conns}");
    // The last version has no "extra" pool: its server was retired and the idle
    // connections to it are closed.
    wait_for(
        Duration::from_secs(5),
        "idle connections to the removed server closed",
        || {
            extra.stats.closed.load(Ordering::SeqCst)
                == extra.stats.connections.load(Ordering::SeqCst)
        },
    )
    .await;
    assert!(extra.stats.connections.load(Ordering::SeqCst) > 0);
    eprintln!("{total} requests, none failed, across 50 reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_connection_limit_applies_at_once_and_cuts_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, _b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = |max: usize| {
        config(listen, admin, "", &[(a.addr, 1)], "").replace(
            "threads = 2",
            &format!("threads = 2\nmax_connections = {max}"),
        )
    };
    let p = Proxy::start(&text(100), &[listen, admin]).await;
    async fn ask(s: &mut tokio::net::TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with("pod-a") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        ask(&mut s).await;
        open.push(s);
    }
    std::fs::write(&p.config, text(2)).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    // the five established connections go on being served
    for s in &mut open {
        assert!(ask(s).await.starts_with("HTTP/1.1 200"));
    }
    // a new one waits in the backlog while 5 >= 2 are open ...
    let mut late = tokio::net::TcpStream::connect(listen).await.unwrap();
    late.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), late.read(&mut buf))
            .await
            .is_err(),
        "served beyond the lowered limit"
    );
    // ... and is served once enough of them have closed
    open.truncate(1);
    let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf))
        .await
        .expect("not served after connections closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_addresss_tunnel_outlives_the_reload_until_its_grace_is_over() {
    use tokio::io::AsyncReadExt;
    let (a, _b) = two_pods().await;
    let old = free_addr("127.0.0.1");
    let new = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = |bind: SocketAddr| {
        config(bind, admin, "", &[(a.addr, 1)], "")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"")
    };
    let p = Proxy::start(&text(old), &[old, admin]).await;
    let mut tunnel = open_echo_tunnel(old).await;
    echo_roundtrip(&mut tunnel, b"before").await;
    std::fs::write(&p.config, text(new)).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    let t0 = Instant::now();
    // draining does not cut it ...
    echo_roundtrip(&mut tunnel, b"during the grace").await;
    // ... the end of the grace does
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), tunnel.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel was not closed: {r:?}"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut before the grace: {took:?}"
    );
    eprintln!("tunnel on the removed address closed {took:?} after the reload (grace 1s)");
}

/// A removed address whose accept loop holds a connection waiting for a slot
/// (every slot taken) still closes its socket at the reload: new clients are
/// refused, not queued in a backlog nobody will accept from (they were, until
/// the slot freed, which a tunnel may not do for the whole grace). The
/// connection in hand is served once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_address_closes_while_a_connection_waits_for_a_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, _b) = two_pods().await;
    let old = free_addr("127.0.0.1");
    let new = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = |bind: SocketAddr| {
        config(bind, admin, "", &[(a.addr, 1)], "")
            .replace("threads = 2", "threads = 1\nmax_connections = 1")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"60s\"")
    };
    let p = Proxy::start(&text(old), &[old, admin]).await;
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    // the only slot, held by a tunnel (which a removed address's drain does
    // not close: it lasts until the grace is over)
    let mut holder = open_echo_tunnel(old).await;
    echo_roundtrip(&mut holder, b"held").await;
    let mut buf = [0u8; 256];
    // the next one is accepted and waits for the slot
    let mut late = tokio::net::TcpStream::connect(old).await.unwrap();
    late.write_all(get).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), late.read(&mut buf))
            .await
            .is_err(),
        "served beyond max_connections"
    );
    std::fs::write(&p.config, text(new)).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(old).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            r => assert!(
                Instant::now() < deadline,
                "the removed address still accepts: {r:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the connection in hand is served when the slot frees
    drop(holder);
    let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf))
        .await
        .expect("the waiting connection was not served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

/// A reload reports the new config's own warnings (as `rampart check` and a
/// start do), not only what needs a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reports_the_new_configs_warnings() {
    let (a, _b) = two_pods().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = config(listen, admin, "", &[(a.addr, 1)], "");
    let p = Proxy::start(&text, &[listen, admin]).await;
    let spare = format!(
        "{text}\n[[pool]]\nname = \"spare\"\n  [[pool.server]]\n  address = \"{}\"\n",
        a.addr
    );
    std::fs::write(&p.config, spare).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    let said = |w: &Value| {
        w.as_str()
            .is_some_and(|w| w.contains("\"spare\" is not used by any listener"))
    };
    assert!(
        r["warnings"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(said)),
        "{r}"
    );
}

/// A reload that gives a pool checks, or changes what they ask, judges each
/// carried server by the first check of the new kind: the old verdict
/// answered another question (a replica a TCP check found UP is not a
/// primary), and with rise/fall it would stand for several intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_what_is_checked_judges_by_the_first_new_check() {
    let good = Backend::start("good", free_addr("127.0.0.1")).await;
    let sick = Backend::start("sick", free_addr("127.0.0.1")).await;
    sick.stats.health_status.store(500, Ordering::SeqCst);
    // nothing listens here
    let dead = free_addr("127.0.0.1");
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let servers = [(good.addr, 1), (sick.addr, 1), (dead, 1)];
    // an hour between checks, three to flip: only a decisive first check
    // changes anything within the test
    let slow = "interval = \"1h\"\nfast_interval = \"1h\"\nrise = 3\nfall = 3\n";
    let p = Proxy::start(&config(listen, admin, "", &servers, ""), &[listen]).await;
    for a in [good.addr, sick.addr, dead] {
        p.wait_server(Duration::from_secs(5), "api", a, "UP").await;
    }
    // checks added: the dead server is DOWN at once
    let tcp = format!("[pool.health]\nkind = \"tcp\"\n{slow}");
    std::fs::write(&p.config, config(listen, admin, &tcp, &servers, "")).unwrap();
    assert_eq!(reload_api(admin).await.0, 200);
    p.wait_server(Duration::from_secs(5), "api", dead, "DOWN")
        .await;
    // the others' first check confirmed them
    wait_until(Duration::from_secs(5), "the first TCP checks", || async {
        good.stats.connections.load(Ordering::SeqCst) >= 1
            && sick.stats.connections.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(p.server_status("api", good.addr).await, "UP");
    assert_eq!(p.server_status("api", sick.addr).await, "UP");
    // another question (HTTP): the sick server is DOWN at once
    let http = format!("[pool.health]\nkind = \"http\"\npath = \"/health\"\n{slow}");
    std::fs::write(&p.config, config(listen, admin, &http, &servers, "")).unwrap();
    assert_eq!(reload_api(admin).await.0, 200);
    p.wait_server(Duration::from_secs(5), "api", sick.addr, "DOWN")
        .await;
    wait_until(Duration::from_secs(5), "the first HTTP check", || async {
        good.stats.health_checks.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(p.server_status("api", good.addr).await, "UP");
    assert_eq!(p.server_status("api", dead).await, "DOWN");
}

/// Two reloads in a row (a config tool that writes twice): the first changes
/// what is checked, the second only the interval, before the first new check
/// has answered. The decision of that first check is not lost: a server that
/// does not answer the new question is DOWN as soon as it fails, not after
/// `fall` checks an hour apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reload_before_the_first_new_check_keeps_its_decision() {
    // accepts connections (the kernel's backlog) and never answers
    let mute = listen(free_addr("127.0.0.1")).await;
    let mute_addr = mute.local_addr().unwrap();
    let (listen_at, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let servers = [(mute_addr, 1)];
    let health = |kind: &str, interval: &str| {
        format!(
            "[pool.health]\nkind = \"{kind}\"\npath = \"/health\"\ntimeout = \"2s\"\ninterval = \"{interval}\"\nfast_interval = \"1h\"\nrise = 3\nfall = 3\n"
        )
        .replace("path = \"/health\"\n", if kind == "http" { "path = \"/health\"\n" } else { "" })
    };
    let p = Proxy::start(
        &config(listen_at, admin, &health("tcp", "1h"), &servers, ""),
        &[listen_at],
    )
    .await;
    p.wait_server(Duration::from_secs(5), "api", mute_addr, "UP")
        .await;
    // another question, then at once only another interval
    for h in [health("http", "1h"), health("http", "2h")] {
        std::fs::write(&p.config, config(listen_at, admin, &h, &servers, "")).unwrap();
        assert_eq!(reload_api(admin).await.0, 200);
    }
    // the first HTTP check times out after 2 s: DOWN then
    p.wait_server(Duration::from_secs(8), "api", mute_addr, "DOWN")
        .await;
    drop(mute);
}

/// A request that waits for a slot through a reload that changes how the
/// pool's servers are reached (here `protocol`, HTTP/1.1 to HTTP/2) is not
/// sent the way its front end chose before the reload (HTTP/1.1 bytes to a
/// pool now of HTTP/2 servers), nor moved: it is answered 503 and may be sent
/// again. So for a request of the HTTP/1.1 fast path and for one of an
/// HTTP/2 client (hyper's side). The request that held the slot is served
/// the old way; the next one goes over HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_through_a_change_of_protocol_is_refused_not_sent_the_old_way() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Response, StatusCode, Version};
    let seen: Arc<std::sync::Mutex<Vec<(String, Version)>>> = Arc::default();
    let (release, held) = tokio::sync::watch::channel(false);
    let (s, h) = (Arc::clone(&seen), held.clone());
    // a server of both protocols (as many are): which arrived how
    let srv = answering(move |req| {
        let (seen, mut held) = (Arc::clone(&s), h.clone());
        async move {
            let path = req.uri().path().to_string();
            seen.lock().unwrap().push((path.clone(), req.version()));
            if path == "/slow" {
                let _ = held.wait_for(|r| *r).await;
            }
            Response::new(BodyExt::boxed(Full::new(Bytes::from(format!(
                "{:?}",
                req.version()
            )))))
        }
    })
    .await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let text = |protocol: &str| {
        let extra = format!(
            "protocol = \"{protocol}\"\nmax_connections_per_server = 1\nqueue_timeout = \"20s\"\n"
        );
        config(listen, admin, &extra, &[(srv, 1)], "")
    };
    let p = Proxy::start(&text("http1"), &[listen, admin]).await;
    let url = |path: &str| format!("http://{listen}{path}");
    // the only slot, held
    let slow = tokio::spawn(get_owned(client(), url("/slow")));
    p.wait_pool(Duration::from_secs(5), "api", "the slot taken", |v| {
        v["active"].as_u64() == Some(1)
    })
    .await;
    // an HTTP/1.1 request (the fast path) and an HTTP/2 one wait for it
    let fast = tokio::spawn(get_owned(client(), url("/fast")));
    p.wait_pool(Duration::from_secs(5), "api", "one request queued", |v| {
        v["queue"].as_u64() == Some(1)
    })
    .await;
    let h2 = tokio::spawn(get_owned(h2c_client(), url("/h2")));
    p.wait_pool(Duration::from_secs(5), "api", "two requests queued", |v| {
        v["queue"].as_u64() == Some(2)
    })
    .await;
    std::fs::write(&p.config, text("h2")).unwrap();
    let (st, r) = reload_api(admin).await;
    assert_eq!(st, 200, "{r}");
    release.send(true).unwrap();
    assert_eq!(
        slow.await.unwrap(),
        (StatusCode::OK, "HTTP/1.1".to_string())
    );
    for (what, waiting) in [("fast path", fast), ("HTTP/2 client", h2)] {
        let (st, body) = waiting.await.unwrap();
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    }
    // what reached the server: the slot's holder only, over HTTP/1.1
    assert_eq!(
        *seen.lock().unwrap(),
        [("/slow".to_string(), Version::HTTP_11)]
    );
    // the pool in force is served over HTTP/2, from both front ends
    for c in [client(), h2c_client()] {
        assert_eq!(
            get(&c, &url("/next")).await,
            (StatusCode::OK, "HTTP/2.0".to_string())
        );
    }
    // and the two refusals were counted as such, not as the server's
    let pool = pool_view(admin, "api").await;
    let s = server_by_id(&pool, &srv.to_string());
    assert_eq!(s["response_errors"], 0, "{pool}");
    assert_eq!(s["connect_errors"], 0, "{pool}");
}

async fn get_owned(c: Client, url: String) -> (hyper::StatusCode, String) {
    get(&c, &url).await
}
