//! The pod-replacement scenario against Debian's dnsmasq: the client side of DNS
//! discovery proven against a server nobody here wrote. dnsmasq answers from an
//! --addn-hosts file with --local-ttl=1 and re-reads it on SIGHUP.

mod common;

use common::*;
use hyper::StatusCode;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dnsmasq {
    child: Child,
    hosts: std::path::PathBuf,
    dir: std::path::PathBuf,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(hosts: &str) -> Dnsmasq {
        let dir = temp_dir("dnsmasq");
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        // a port free for both UDP and TCP
        let addr = loop {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let a = u.local_addr().unwrap();
            if std::net::TcpListener::bind(a).is_ok() {
                break a;
            }
        };
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local-ttl=1",
                "--user=root",
                "--conf-file=/dev/null",
                "--log-facility=-",
            ])
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("log")).unwrap()))
            .spawn()
            .expect("dnsmasq is not installed: run scripts/test.sh, which installs it");
        Dnsmasq {
            child,
            hosts: hosts_file,
            dir,
            addr,
        }
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_replacement_through_dnsmasq() {
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let old = Backend::start("old-pod", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let dns = Dnsmasq::start("127.0.0.2 app.test\n");
    // wait until dnsmasq answers (a lookup through rampart's own check command)
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        r#"[global]
threads = 2
[admin]
bind = "{admin}"
[resolver]
nameservers = ["{}"]
timeout = "500ms"
min_ttl = "200ms"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "app"
[[pool]]
name = "app"
retries = 0
  [[pool.server]]
  address = "app.test:{port}"
"#,
        dns.addr
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let p = loop {
        let p = Proxy::start(&cfg, &[listen]).await;
        let name = p.stats().await["dns"][0].clone();
        if name["members"].as_array().is_some_and(|m| !m.is_empty()) {
            break p;
        }
        // dnsmasq was not listening yet when rampart started
        assert!(
            Instant::now() < deadline,
            "dnsmasq never answered: {}",
            p.stderr()
        );
        drop(p);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = client();
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await,
        (StatusCode::OK, "old-pod".to_string())
    );

    old.kill();
    let new = Backend::start("new-pod", SocketAddr::new(ip("127.0.0.3"), port)).await;
    dns.set_hosts("127.0.0.3 app.test\n");
    let changed = Instant::now();
    let took = loop {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        if st == StatusCode::OK {
            assert_eq!(body, "new-pod");
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "never reached the new pod: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // TTL 1 s, then a lookup and a request: about 1-2 s; 4 s leaves room for
    // a loaded machine and still fails a proxy that ignores the TTL
    assert!(
        took <= Duration::from_secs(4),
        "TTL 1 s + up to 3 s, took {took:?}"
    );
    eprintln!("dnsmasq: requests reached the new pod {took:?} after the DNS change");
    for _ in 0..10 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await,
            (StatusCode::OK, "new-pod".to_string())
        );
    }
    assert!(new.requests() >= 11);
}
