//! Role-aware Postgres health checks against a real primary and streaming replica
//! (Debian's postgresql; `scripts/test.sh` installs it). The clusters live in a temp
//! directory on loopback ports and are removed afterwards.

mod common;

use common::tls::{Issued, Pki};
use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The newest installed PostgreSQL's bin directory.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/test.sh, which installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("no PostgreSQL bin directory with initdb")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (the server
/// refuses to run as root).
fn pg(tool: &str, args: &[&str]) -> std::process::Output {
    let bin = pg_bin().join(tool);
    let mut cmd = if common::netns::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A primary and a streaming replica; both stopped and removed on drop.
struct Clusters {
    dir: PathBuf,
    primary: SocketAddr,
    replica: SocketAddr,
}

impl Clusters {
    fn data(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A `[[pool]]` of both nodes, checked as `role` every 300 ms, rise and
    /// fall 1; `health`: more `[pool.health]` keys.
    fn pool(&self, name: &str, role: &str, health: &str) -> String {
        format!(
            "[[pool]]\nname = \"{name}\"\n  [pool.health]\n  kind = \"postgres\"\n  user = \"postgres\"\n  role = \"{role}\"\n  interval = \"300ms\"\n  timeout = \"250ms\"\n  rise = 1\n  fall = 1\n{health}  [[pool.server]]\n  address = \"{}\"\n  [[pool.server]]\n  address = \"{}\"\n",
            self.primary, self.replica
        )
    }

    fn start() -> Clusters {
        let dir = temp_dir("pg");
        chown_postgres(&[dir.as_path()]);
        let primary = free_addr("127.0.0.1");
        let replica = free_addr("127.0.0.1");
        let c = Clusters {
            dir,
            primary,
            replica,
        };
        let p = c.data("primary");
        pg(
            "initdb",
            &[
                "-D",
                &p,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        append(
            &c.dir.join("primary/postgresql.conf"),
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n",
                primary.port(),
                c.dir.display()
            ),
        );
        pg(
            "pg_ctl",
            &["-D", &p, "-l", &c.data("primary.log"), "-w", "start"],
        );
        let r = c.data("replica");
        pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port().to_string(),
                "-U",
                "postgres",
                "-D",
                &r,
                "-R",
                "-X",
                "stream",
            ],
        );
        append(
            &c.dir.join("replica/postgresql.conf"),
            &format!("port = {}\n", replica.port()),
        );
        pg(
            "pg_ctl",
            &["-D", &r, "-l", &c.data("replica.log"), "-w", "start"],
        );
        c
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Stops the server of data directory `d`, if it runs (for a drop: errors
/// are not looked at).
fn pg_stop(d: &str) {
    if Path::new(d).join("postmaster.pid").exists() {
        let bin = pg_bin().join("pg_ctl");
        let mut cmd = if common::netns::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let _ = cmd.args(["-D", d, "-m", "immediate", "stop"]).output();
    }
}

/// `chown postgres:postgres` of `paths` (recursively) when we are root: the
/// server runs as `postgres` and must own its files.
fn chown_postgres(paths: &[&Path]) {
    if common::netns::is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .args(paths)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        for name in ["primary", "replica"] {
            pg_stop(&self.data(name));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A lone PostgreSQL server that takes the `postgres` user over TLS only, as
/// managed Postgres and hardened installs do: `ssl = on` with `cert`, and
/// pg_hba.conf's one line for it on 127.0.0.1 is `hostssl` (SCRAM, with
/// `password`). One more role, `plain`, is taken without TLS only
/// (`hostnossl`, trust), so that a session over TLS that the server refuses
/// after the handshake can be seen tried again without. Stopped and removed
/// on drop.
struct TlsOnly {
    dir: PathBuf,
    addr: SocketAddr,
}

impl TlsOnly {
    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn start(cert: &Issued, password: &str) -> TlsOnly {
        let s = TlsOnly {
            dir: temp_dir("pg-tls"),
            addr: free_addr("127.0.0.1"),
        };
        let pwfile = s.dir.join("pwfile");
        std::fs::write(&pwfile, password).unwrap();
        chown_postgres(&[s.dir.as_path()]);
        let data = s.data();
        pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // the certificate and its key, which the server reads only when the
        // key is its own and no one else's
        let (crt, key) = (s.dir.join("data/server.crt"), s.dir.join("data/server.key"));
        std::fs::copy(&cert.crt, &crt).unwrap();
        std::fs::copy(&cert.key, &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown_postgres(&[crt.as_path(), key.as_path()]);
        append(
            &s.dir.join("data/postgresql.conf"),
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                s.addr.port(),
                s.dir.display()
            ),
        );
        // no `host` line: `postgres` without TLS finds no entry
        std::fs::write(
            s.dir.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all postgres 127.0.0.1/32 scram-sha-256\nhostnossl all plain 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let log = s.dir.join("server.log").display().to_string();
        pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "start"]);
        let (socket, port) = (s.dir.display().to_string(), s.addr.port().to_string());
        pg(
            "psql",
            &[
                "-X",
                "-h",
                &socket,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "CREATE ROLE plain LOGIN",
            ],
        );
        s
    }
}

impl Drop for TlsOnly {
    fn drop(&mut self) {
        pg_stop(&self.data());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `SELECT pg_is_in_recovery()` through `addr` (a rampart listener), on a new connection.
async fn in_recovery(addr: SocketAddr) -> Result<bool, String> {
    Ok(try_sql(addr, "SELECT pg_is_in_recovery()")
        .await?
        .as_deref()
        == Some("t"))
}

/// Runs `sql` on the server at `addr` as postgres: the first column of the
/// first row it returns, as text, if any.
async fn try_sql(addr: SocketAddr, sql: &str) -> Result<Option<String>, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let rows = client.simple_query(sql).await.map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    Ok(rows?.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

/// `try_sql`, which must succeed.
async fn sql(addr: SocketAddr, sql: &str) -> Option<String> {
    try_sql(addr, sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_listeners_follow_roles_through_a_promotion() {
    let pgs = tokio::task::spawn_blocking(Clusters::start).await.unwrap();
    let l_primary = free_addr("127.0.0.1");
    let l_replica = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    // interval 500 ms, fall 2: the bound after a promotion is fall*interval+interval
    let health = |role: &str| {
        format!(
            "[pool.health]\nkind = \"postgres\"\nuser = \"postgres\"\ndatabase = \"postgres\"\nrole = \"{role}\"\ninterval = \"500ms\"\nfast_interval = \"500ms\"\ntimeout = \"400ms\"\nrise = 1\nfall = 2\n"
        )
    };
    let servers = format!(
        "  [[pool.server]]\n  address = \"{}\"\n  [[pool.server]]\n  address = \"{}\"\n",
        pgs.primary, pgs.replica
    );
    let cfg = format!(
        r#"[global]
threads = 1
access_log = "off"
[admin]
bind = "{admin}"
[[listener]]
name = "pg-rw"
bind = ["{l_primary}"]
mode = "tcp"
pool = "primary"
[[listener]]
name = "pg-ro"
bind = ["{l_replica}"]
mode = "tcp"
pool = "replica"
[[pool]]
name = "primary"
balance = "round_robin"
connect_timeout = "1s"
{}{servers}
[[pool]]
name = "replica"
balance = "round_robin"
connect_timeout = "1s"
{}{servers}"#,
        health("primary"),
        health("replica")
    );
    let p = Proxy::start(&cfg, &[l_primary, l_replica]).await;
    // each node is UP in its role's pool and refused in the other's (the two
    // checks of a node finish in either order: wait for all four results)
    for pool in ["primary", "replica"] {
        let v = p
            .wait_pool(
                Duration::from_secs(10),
                pool,
                "one node UP, the other refused",
                |v| count_status(v, "UP") == 1 && count_status(v, "DOWN") == 1,
            )
            .await;
        let refused = v["servers"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| s["status"] == "DOWN"))
            .map(|s| s["last_check"]["detail"].to_string())
            .unwrap_or_default();
        assert!(refused.contains("role mismatch"), "{pool}: {v}");
    }
    // round robin over both nodes, yet every session lands on the right role
    for _ in 0..6 {
        assert_eq!(in_recovery(l_primary).await, Ok(false));
        assert_eq!(in_recovery(l_replica).await, Ok(true));
    }

    // the primary dies; the replica is promoted
    let (d_primary, d_replica) = (pgs.data("primary"), pgs.data("replica"));
    tokio::task::spawn_blocking(move || {
        pg("pg_ctl", &["-D", &d_primary, "-m", "immediate", "stop"]);
        pg("pg_ctl", &["-D", &d_replica, "-w", "promote"]);
    })
    .await
    .unwrap();
    // the primary pool switches to the promoted node within a few checks
    // (fall * interval + interval = 1.5 s, plus jitter and a check's own
    // time); the deadline leaves room for a loaded machine, and a pool that
    // does not follow the roles never gets there
    let (old, promoted) = (pgs.primary, pgs.replica);
    p.wait_pool(
        Duration::from_secs(15),
        "primary",
        "the promoted node UP, the stopped primary DOWN",
        |v| server_in(v, promoted)["status"] == "UP" && server_in(v, old)["status"] == "DOWN",
    )
    .await;
    // the primary listener serves the promoted node, and keeps doing so
    for _ in 0..4 {
        assert_eq!(in_recovery(l_primary).await, Ok(false));
    }
    // DOWN so far: each node in the pool of the other role (2), then the old primary;
    // now the promoted node leaves the replica pool
    p.wait_pool(Duration::from_secs(5), "replica", "no replica left", |v| {
        count_status(v, "UP") == 0
    })
    .await;
    assert!(
        in_recovery(l_replica).await.is_err(),
        "no replica is left to serve reads"
    );
}

/// Read-only degradation driven by the role-aware checks of a real primary: it
/// stops, the primary pool empties, job submissions get the configured 503
/// while reads go on; it starts again, writes flow within the health interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_pause_while_the_real_primary_is_stopped() {
    let pgs = tokio::task::spawn_blocking(Clusters::start).await.unwrap();
    let api = Backend::start("api", free_addr("127.0.0.1")).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        r#"[global]
threads = 1
[admin]
bind = "{admin}"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
read_only_when = ["pool:pg-primary"]
read_only_message = "System is under heavy load, job submission temporarily disabled"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{}"
{}"#,
        api.addr,
        pgs.pool("pg-primary", "primary", "")
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    let post = || {
        let c = c.clone();
        async move {
            let req = hyper::Request::builder()
                .method("POST")
                .uri(format!("http://{listen}/jobs"))
                .body(empty())
                .unwrap();
            let resp = c.request(req).await.unwrap();
            let st = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (st, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let eligible = |admin| async move {
        pool_view(admin, "pg-primary").await["eligible"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(15), "the primary UP", || async {
        eligible(admin).await == 1
    })
    .await;
    assert_eq!(post().await, (hyper::StatusCode::OK, "api".to_string()));

    // the primary stops: the replica is no primary, so the pool is empty
    let d = pgs.data("primary");
    tokio::task::spawn_blocking(move || pg("pg_ctl", &["-D", &d, "-m", "immediate", "stop"]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, body) = post().await;
        if st == hyper::StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                body,
                "System is under heavy load, job submission temporarily disabled\n"
            );
            break;
        }
        assert_eq!(st, hyper::StatusCode::OK);
        assert!(Instant::now() < deadline, "writes were never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(eligible(admin).await, 0);
    // reads go on
    assert_eq!(get(&c, &format!("http://{listen}/jobs/1")).await.1, "api");

    // it starts again: writes flow within the health interval
    let (d, log) = (pgs.data("primary"), pgs.data("primary.log"));
    tokio::task::spawn_blocking(move || pg("pg_ctl", &["-D", &d, "-l", &log, "-w", "start"]))
        .await
        .unwrap();
    wait_until(Duration::from_secs(15), "writes back", || async {
        post().await.0 == hyper::StatusCode::OK
    })
    .await;
}

/// A server that takes `postgres` over TLS only (`hostssl`), checked with
/// each `ssl` mode: without TLS it is DOWN for want of a pg_hba.conf entry;
/// by default (prefer, libpq's), with require, with verify-ca against the CA
/// of its certificate, and with verify-full against it under the name the
/// certificate is for, it is UP (SCRAM over TLS, without channel binding).
/// Against another CA (verify-full or verify-ca), or with verify-full under
/// a name the certificate is not for, it is DOWN with the reason. And a role
/// the server takes without TLS only (`hostnossl`) is UP with prefer (the
/// session the server refused over TLS is tried again without, as libpq
/// does) and DOWN with require.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_server_is_checked_over_tls_as_ssl_says() {
    let (pki, other) = (Pki::new("PG Test CA"), Pki::new("PG Other CA"));
    // for the name db.test only: reached at 127.0.0.1, verify-full must be
    // told the name ([pool.tls] server_name), verify-ca does not look at it
    let cert = pki.server("db", &["db.test"]);
    let server = tokio::task::spawn_blocking(move || TlsOnly::start(&cert, "s3cret"))
        .await
        .unwrap();
    let (ca, other_ca) = (
        pki.ca().display().to_string(),
        other.ca().display().to_string(),
    );
    // (pool, its health keys, more of its keys)
    let pools = [
        ("off", "ssl = \"disable\"".to_string(), String::new()),
        ("prefer", String::new(), String::new()),
        ("require", "ssl = \"require\"".to_string(), String::new()),
        (
            "verify_ca",
            format!("ssl = \"verify-ca\"\nca = \"{ca}\""),
            String::new(),
        ),
        (
            "verify_full",
            "ssl = \"verify-full\"".to_string(),
            format!("[pool.tls]\nca = \"{ca}\"\nserver_name = \"db.test\"\n"),
        ),
        (
            "wrong_name",
            format!("ssl = \"verify-full\"\nca = \"{ca}\""),
            String::new(),
        ),
        (
            "wrong_ca",
            format!("ssl = \"verify-full\"\nca = \"{other_ca}\""),
            String::new(),
        ),
        (
            "wrong_ca_verify_ca",
            format!("ssl = \"verify-ca\"\nca = \"{other_ca}\""),
            String::new(),
        ),
        (
            "plain_prefer",
            "user = \"plain\"".to_string(),
            String::new(),
        ),
        (
            "plain_require",
            "user = \"plain\"\nssl = \"require\"".to_string(),
            String::new(),
        ),
        // verifying modes never fall back to plain text either, though the
        // certificate verifies and plain text would be let in
        (
            "plain_verify_full",
            "user = \"plain\"\nssl = \"verify-full\"".to_string(),
            format!("[pool.tls]\nca = \"{ca}\"\nserver_name = \"db.test\"\n"),
        ),
        (
            "plain_verify_ca",
            format!("user = \"plain\"\nssl = \"verify-ca\"\nca = \"{ca}\""),
            String::new(),
        ),
    ];
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let mut cfg = format!(
        "[global]\nthreads = 1\naccess_log = \"off\"\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"pg\"\nbind = [\"{listen}\"]\nmode = \"tcp\"\npool = \"prefer\"\n"
    );
    for (name, health, more) in &pools {
        cfg.push_str(&format!(
            "[[pool]]\nname = \"{name}\"\nconnect_timeout = \"1s\"\n[pool.health]\nkind = \"postgres\"\npassword_env = \"PG_TLS_TEST_PASSWORD\"\ninterval = \"300ms\"\ntimeout = \"3s\"\nrise = 1\nfall = 1\n{health}\n{more}  [[pool.server]]\n  address = \"{}\"\n",
            server.addr
        ));
    }
    let p = Proxy::start_env(
        &cfg,
        &[listen],
        "info",
        &[("PG_TLS_TEST_PASSWORD", "s3cret")],
    )
    .await;
    let addr = server.addr;
    for (pool, want, says) in [
        ("off", "DOWN", "no pg_hba.conf entry"),
        ("prefer", "UP", "primary"),
        ("require", "UP", "primary"),
        ("verify_ca", "UP", "primary"),
        ("verify_full", "UP", "primary"),
        ("wrong_name", "DOWN", "not valid for name"),
        ("wrong_ca", "DOWN", "UnknownIssuer"),
        ("wrong_ca_verify_ca", "DOWN", "UnknownIssuer"),
        ("plain_prefer", "UP", "primary"),
        ("plain_require", "DOWN", "no pg_hba.conf entry"),
        ("plain_verify_full", "DOWN", "no pg_hba.conf entry"),
        ("plain_verify_ca", "DOWN", "no pg_hba.conf entry"),
    ] {
        let v = p
            .wait_pool(Duration::from_secs(15), pool, want, |v| {
                server_in(v, addr)["status"] == want
            })
            .await;
        let detail = server_in(&v, addr)["last_check"]["detail"].to_string();
        assert!(detail.contains(says), "{pool}: {detail}");
        if pool != "plain_prefer" {
            // only prefer tries plain text after TLS
            assert!(!detail.contains("without TLS"), "{pool}: {detail}");
        }
    }
    // every check that got in ended its session as a client does (Terminate,
    // and close_notify over TLS): the server logs no broken connection for
    // checks every 300 ms
    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
    let broken: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unexpected EOF") || l.contains("could not receive data"))
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");
}

/// A replica cut off from its primary (its WAL receiver stopped: a network
/// partition, a replication slot gone) has replayed all it received, and
/// read a lag of 0 for ever while the primary took writes it never got. It
/// is now held to `max_replica_lag` by the time it has been behind its
/// cluster, which the check of the primary shows, and back UP once it
/// streams and catches up. When the primary itself is down, nothing shows
/// the cluster going on: the replica, cut off too, keeps serving reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_its_primary_is_behind_while_the_primary_goes_on() {
    let pgs = tokio::task::spawn_blocking(Clusters::start).await.unwrap();
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        r#"[global]
threads = 1
access_log = "off"
[admin]
bind = "{admin}"
[[listener]]
name = "pg-ro"
bind = ["{listen}"]
mode = "tcp"
pool = "replica"
{}"#,
        pgs.pool(
            "replica",
            "replica",
            "  max_replica_lag = \"2s\"\n  fast_interval = \"300ms\"\n"
        )
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    let replica = pgs.replica;
    let detail = |v: &serde_json::Value| server_in(v, replica)["last_check"]["detail"].to_string();
    p.wait_pool(Duration::from_secs(15), "replica", "the replica UP", |v| {
        server_in(v, replica)["status"] == "UP"
    })
    .await;

    // cut off: no primary_conninfo, no WAL receiver (pg_basebackup -R wrote
    // it with ALTER SYSTEM's file: kept to put back)
    let conninfo = sql(replica, "SHOW primary_conninfo").await.unwrap();
    assert!(conninfo.contains("port="), "{conninfo}");
    sql(replica, "ALTER SYSTEM SET primary_conninfo = ''").await;
    sql(replica, "SELECT pg_reload_conf()").await;
    wait_until(Duration::from_secs(15), "the WAL receiver gone", || async {
        sql(replica, "SELECT count(*) FROM pg_stat_wal_receiver")
            .await
            .as_deref()
            == Some("0")
    })
    .await;
    // the primary goes on without it
    sql(
        pgs.primary,
        "CREATE TABLE cut_off (x int); INSERT INTO cut_off VALUES (1)",
    )
    .await;
    let v = p
        .wait_pool(
            Duration::from_secs(15),
            "replica",
            "the cut-off replica DOWN",
            |v| server_in(v, replica)["status"] == "DOWN",
        )
        .await;
    assert!(
        detail(&v).contains("without a streaming WAL receiver, behind its cluster"),
        "{v}"
    );

    // streaming again, it catches up and is UP
    let back = format!(
        "ALTER SYSTEM SET primary_conninfo = '{}'",
        conninfo.replace('\'', "''")
    );
    sql(replica, &back).await;
    sql(replica, "SELECT pg_reload_conf()").await;
    let v = p
        .wait_pool(
            Duration::from_secs(20),
            "replica",
            "the replica back UP",
            |v| server_in(v, replica)["status"] == "UP",
        )
        .await;
    assert!(detail(&v).contains("replica, lag"), "{v}");

    // the primary dies: the replica is cut off too, and nothing is known to
    // be newer than what it has, so it stays UP through check after check
    let d = pgs.data("primary");
    tokio::task::spawn_blocking(move || pg("pg_ctl", &["-D", &d, "-m", "immediate", "stop"]))
        .await
        .unwrap();
    let v = p
        .wait_pool(
            Duration::from_secs(15),
            "replica",
            "the replica cut off",
            |v| detail(v).contains("no check sees its cluster now"),
        )
        .await;
    assert_eq!(server_in(&v, replica)["status"], "UP", "{v}");
    let series = |result: &str| {
        format!("rampart_server_health_checks_total{{pool=\"replica\",result=\"{result}\",server=\"{replica}\"}}")
    };
    let m = admin_get(admin, "/metrics").await.1;
    let (ok, failed) = (metric(&m, &series("ok")), metric(&m, &series("failed")));
    let m = wait_metric(admin, &series("ok"), ok + 10.0).await;
    assert_eq!(
        metric(&m, &series("failed")),
        failed,
        "a check failed since"
    );
    assert_eq!(p.server_status("replica", replica).await, "UP");
    assert_eq!(in_recovery(listen).await, Ok(true), "reads go on");
}
