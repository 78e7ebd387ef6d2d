//! VIP failover between two real rampart nodes, in network namespaces the test
//! creates and removes: a bridge (in hub mode, so a rogue can capture), node A
//! (192.0.2.1), node B (192.0.2.2), a client (192.0.2.10), a backend (192.0.2.20,
//! Python's http.server) and a rogue (192.0.2.66). The VIP is 192.0.2.100.

mod common;

use common::netns::{ip, is_root, Netns};
use common::*;
use rampart::ha::wire::{Advert, WireState};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "192.0.2.100";

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) on this thread only, with a valid netns fd.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// A blocking HTTP/1.0 GET; the body, or None on any failure.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return None;
    }
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

struct Node {
    ns: Netns,
    child: Option<Child>,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
}

struct Lab {
    sw: Netns,
    a: Node,
    b: Node,
    client: Netns,
    _backend: Netns,
    backend_proc: Child,
    rogue: Netns,
    dir: std::path::PathBuf,
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "link", "show", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("link/ether ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

impl Lab {
    fn new(tag: &str, interval: &str) -> Lab {
        Lab::with_extra_vip(tag, interval, None)
    }

    /// A lab whose nodes also hold `extra_vip` (ADDR/PREFIX).
    fn with_extra_vip(tag: &str, interval: &str, extra_vip: Option<&str>) -> Lab {
        let extra = extra_vip.map_or(String::new(), |v| format!(", \"{v}\""));
        assert!(
            is_root(),
            "HA tests need root to create network namespaces (CI runs as root)"
        );
        let id = format!("{}{}", tag, std::process::id() % 10_000);
        let sw = Netns::new(&format!("rha-sw-{id}"));
        ip(&[
            "-n",
            &sw.name,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "ageing_time",
            "0",
        ]);
        ip(&["-n", &sw.name, "link", "set", "br0", "up"]);
        let host = |role: &str, addr: &str| {
            let ns = Netns::new(&format!("rha-{role}-{id}"));
            let port = format!("p{role}");
            ip(&[
                "link", "add", "eth0", "netns", &ns.name, "type", "veth", "peer", "name", &port,
                "netns", &sw.name,
            ]);
            ip(&["-n", &sw.name, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns.name, "addr", "add", addr, "dev", "eth0"]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
            ns
        };
        let na = host("a", "192.0.2.1/24");
        let nb = host("b", "192.0.2.2/24");
        let client = host("c", "192.0.2.10/24");
        let backend = host("be", "192.0.2.20/24");
        let rogue = host("r", "192.0.2.66/24");
        let dir = temp_dir(&format!("ha-{tag}"));
        std::fs::write(dir.join("index.html"), "backend-ok\n").unwrap();
        let backend_proc = backend
            .cmd("python3")
            .args([
                "-m",
                "http.server",
                "8000",
                "--bind",
                "192.0.2.20",
                "--directory",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the backend");
        let key: Vec<u8> = (0..40).map(|_| fastrand::alphanumeric() as u8).collect();
        std::fs::write(dir.join("ha.key"), &key).unwrap();
        let node = |ns: Netns, name: &str, me: &str, peer: &str, prio: u32| {
            let cfg = dir.join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    r#"[global]
threads = 1
access_log = "off"
shutdown_grace = "2s"
[admin]
bind = "127.0.0.1:8404"
[[listener]]
name = "vip"
bind = ["{VIP}:8080"]
mode = "http"
pool = "be"
[[pool]]
name = "be"
connect_timeout = "1s"
  [pool.health]
  kind = "tcp"
  interval = "200ms"
  timeout = "150ms"
  rise = 1
  fall = 1
  [[pool.server]]
  address = "192.0.2.20:8000"
[ha]
interface = "eth0"
vips = ["{VIP}/24"{extra}]
node_id = "{name}"
priority = {prio}
bind = "{me}:5405"
peers = ["{peer}:5405"]
advert_interval = "{interval}"
auth_key_file = "{key}"
track = ["pool:be"]
"#,
                    key = dir.join("ha.key").display()
                ),
            )
            .unwrap();
            Node {
                ns,
                child: None,
                log: dir.join(format!("{name}.log")),
                cfg,
            }
        };
        let a = node(na, "node-a", "192.0.2.1", "192.0.2.2", 150);
        let b = node(nb, "node-b", "192.0.2.2", "192.0.2.1", 100);
        let lab = Lab {
            sw,
            a,
            b,
            client,
            _backend: backend,
            backend_proc,
            rogue,
            dir,
        };
        // the backend answers from the client's side
        let c = lab.client.name.clone();
        wait_until(Duration::from_secs(10), "the backend", move || {
            let c = c.clone();
            in_ns(&c, || {
                http_get(
                    "192.0.2.20:8000".parse().unwrap(),
                    "/",
                    Duration::from_millis(500),
                )
                .is_some()
            })
        });
        lab
    }

    fn start(&mut self, which: char) {
        let n = if which == 'a' {
            &mut self.a
        } else {
            &mut self.b
        };
        let child =
            n.ns.cmd(rampart_bin())
                .args(["run", "-c"])
                .arg(&n.cfg)
                .env("RAMPART_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&n.log)
                        .unwrap(),
                ))
                .spawn()
                .unwrap();
        n.child = Some(child);
    }

    fn node(&mut self, which: char) -> &mut Node {
        if which == 'a' {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    fn signal(&mut self, which: char, sig: i32) {
        let n = self.node(which);
        let pid = n.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    }

    fn wait_exit(&mut self, which: char) {
        if let Some(mut c) = self.node(which).child.take() {
            let _ = c.wait();
        }
    }

    /// Bridge port isolation between the two nodes (each still reaches the client).
    fn isolate_nodes(&self, on: bool) {
        for port in ["pa", "pb"] {
            let out = Command::new("bridge")
                .args([
                    "-n",
                    &self.sw.name,
                    "link",
                    "set",
                    "dev",
                    port,
                    "isolated",
                    if on { "on" } else { "off" },
                ])
                .output()
                .expect("bridge (iproute2) is not installed");
            assert!(
                out.status.success(),
                "bridge isolated {on}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn has_vip(&self, which: char) -> bool {
        self.has_addr(which, VIP)
    }

    fn log(&self, which: char) -> String {
        let n = if which == 'a' { &self.a } else { &self.b };
        std::fs::read_to_string(&n.log).unwrap_or_default()
    }

    /// The node's /stats;json, fetched inside its namespace.
    fn stats(&self, which: char) -> serde_json::Value {
        stats_in(&self.node_ref(which).ns.name)
    }

    fn ha_state(&self, which: char) -> String {
        self.stats(which)["ha"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    fn client_get_vip(&self) -> Option<String> {
        in_ns(&self.client.name, || {
            http_get(
                format!("{VIP}:8080").parse().unwrap(),
                "/",
                Duration::from_millis(400),
            )
        })
    }

    fn client_arp_mac(&self) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.client.name, "neigh", "show", VIP])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("lladdr ")
            .nth(1)
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
    }

    fn both_up(&mut self) {
        self.start('a');
        self.start('b');
        wait_until(Duration::from_secs(15), "one master, one backup", || {
            let (sa, sb) = (self.ha_state('a'), self.ha_state('b'));
            sa == "MASTER" && sb == "BACKUP"
        });
        assert!(
            self.has_vip('a') && !self.has_vip('b'),
            "the VIP is on the higher-priority node only"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&mut self.a, &mut self.b] {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = self.backend_proc.kill();
        let _ = self.backend_proc.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = &self.sw;
    }
}

fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client sending a request every 50 ms; returns when a request succeeds after
/// `since`, with the time it took.
fn first_success_after(lab: &Lab, since: Instant, within: Duration) -> Duration {
    loop {
        if lab.client_get_vip().as_deref() == Some("backend-ok\n") {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "the client was not served through the VIP within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9_takeover(tag: &str, interval: &str, interval_ms: u64) {
    let mut lab = Lab::new(tag, interval);
    lab.both_up();
    assert_eq!(lab.client_get_vip().as_deref(), Some("backend-ok\n"));
    let mac_a = mac_of(&lab.a.ns.name, "eth0");
    let mac_b = mac_of(&lab.b.ns.name, "eth0");
    assert_eq!(lab.client_arp_mac().as_deref(), Some(mac_a.as_str()));

    lab.signal('a', libc::SIGKILL);
    let killed = Instant::now();
    lab.wait_exit('a');
    // node B has priority 100: skew = (256 - 100) * interval / 256; master-down
    // is 3 intervals + skew. The 3 s on top are for a loaded CI machine: the
    // client's 50 ms polls (each a thread in the namespace, 400 ms timeout),
    // the VIP's addition and the gratuitous ARP, a delayed timer.
    let skew = (256 - 100) * interval_ms / 256;
    let bound = Duration::from_millis(3 * interval_ms + skew + 3000);
    let took = first_success_after(&lab, killed, bound + Duration::from_secs(2));
    eprintln!(
        "kill -9 at {interval}: client served through node B after {took:?} (bound {bound:?})"
    );
    assert!(took <= bound, "{took:?} > {bound:?}");
    assert!(lab.has_vip('b'));
    // the client's ARP entry follows the gratuitous ARP
    wait_until(
        Duration::from_secs(3),
        "the client's ARP entry to move to node B",
        || lab.client_arp_mac().as_deref() == Some(mac_b.as_str()),
    );
}

#[test]
fn kill9_master_failover_at_250ms() {
    kill9_takeover("k", "250ms", 250);
}

#[test]
fn kill9_master_failover_at_default_1s() {
    kill9_takeover("d", "1s", 1000);
}

#[test]
fn sigterm_handover_within_one_interval_and_rogue_adverts_are_dropped() {
    // 1 s adverts: the priority-0 handover (node B's skew, 609 ms) and the
    // master-down timeout (3 intervals + skew, 3.6 s) are far enough apart to
    // be told apart on a loaded machine
    let mut lab = Lab::new("t", "1s");
    lab.both_up();

    // --- a rogue (forging node A's address) tries to take over node B ---
    let stats_before = lab.stats('b')["ha"].clone();
    let before = stats_before["dropped"].clone();
    let count = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let captured = capture_advert(&lab);
    let rogue = lab.rogue.name.clone();
    let mac_b = mac_of(&lab.b.ns.name, "eth0");
    in_ns(&rogue, move || {
        // A master leaving (priority 0): accepted, it would make B take over
        // within the skew time (about 600 ms at this interval).
        let forged = Advert {
            state: WireState::Master,
            priority: 0,
            interval_ms: 1000,
            node_id: "node-a".into(),
            boot_id: u64::MAX / 2,
            seq: u64::MAX / 2,
            timestamp_ms: 0,
        };
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        // unsigned
        inject_udp(&mac_b, a, b, &forged.encode(None, a, b));
        // signed with the wrong key
        inject_udp(&mac_b, a, b, &forged.encode(Some(&[9u8; 32][..]), a, b));
        // a genuine advert, captured on the wire, sent again
        raw_send(&captured);
        // a datagram from an address that is no peer (a port scan, a probe)
        let stranger: IpAddr = "192.0.2.77".parse().unwrap();
        inject_udp(&mac_b, stranger, b, b"hello");
    });
    wait_until(Duration::from_secs(5), "the drops counted", || {
        let d = lab.stats('b')["ha"]["dropped"].clone();
        count(&d, "auth") >= count(&before, "auth") + 2
            && count(&d, "replay") > count(&before, "replay")
            && count(&d, "unknown_peer") > count(&before, "unknown_peer")
    });
    // Two more genuine adverts from A (2 s) outlast the takeover a forged
    // leaving advert would have caused.
    let received = count(&lab.stats('b')["ha"], "adverts_received");
    wait_until(Duration::from_secs(10), "two more genuine adverts", || {
        count(&lab.stats('b')["ha"], "adverts_received") >= received + 2
    });
    let after = lab.stats('b')["ha"].clone();
    assert_eq!(
        lab.ha_state('b'),
        "BACKUP",
        "a forged advert changed node B's state"
    );
    assert_eq!(
        count(&after, "transitions"),
        count(&stats_before, "transitions"),
        "node B changed state in between: {after}"
    );
    assert!(lab.has_vip('a') && !lab.has_vip('b'));

    // a client connection to the VIP, open on the master when it stops
    let held = in_ns(&lab.client.name, || {
        let s = TcpStream::connect_timeout(
            &format!("{VIP}:8080").parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });

    // --- SIGTERM the master: its priority-0 advert makes the peer take over
    // after only its skew (609 ms), well before master-down (3.6 s after
    // A's last advert, so at least 2.6 s after the signal) ---
    lab.signal('a', libc::SIGTERM);
    let t0 = Instant::now();
    wait_until(Duration::from_secs(10), "node B to hold the VIP", || {
        lab.has_vip('b')
    });
    let took = t0.elapsed();
    eprintln!("SIGTERM at 1s: node B held the VIP after {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "takeover took {took:?}: not the priority-0 handover (skew 609 ms) but \
         the master-down timeout (2.6-3.6 s after the last advert)?"
    );
    lab.wait_exit('a');
    assert!(!lab.has_vip('a'), "the stopping master released the VIP");
    assert_eq!(lab.client_get_vip().as_deref(), Some("backend-ok\n"));
    // the connection was reset before the VIP left, not left to the client's
    // timeout (a FIN sent after the VIP is gone never reaches it)
    let mut held = held;
    let r = held.read(&mut [0u8; 64]);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the held connection: {r:?}"
    );
}

#[test]
fn an_empty_tracked_pool_faults_the_master_and_the_peer_takes_over() {
    let mut lab = Lab::new("f", "250ms");
    lab.both_up();
    // node A's only backend goes into maintenance: pool "be" has no eligible server
    let out = lab
        .a
        .ns
        .cmd(rampart_bin())
        .args([
            "server",
            "maint",
            "be",
            "192.0.2.20:8000",
            "--admin",
            "http://127.0.0.1:8404",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    wait_until(Duration::from_secs(5), "A FAULT and B MASTER", || {
        lab.ha_state('a') == "FAULT" && lab.has_vip('b')
    });
    eprintln!(
        "tracked pool emptied: node B held the VIP after {:?}",
        t0.elapsed()
    );
    assert!(!lab.has_vip('a'), "FAULT never holds the VIP");
    assert_eq!(lab.client_get_vip().as_deref(), Some("backend-ok\n"));
    assert!(lab.stats('a')["ha"]["fault"]
        .as_str()
        .unwrap_or("")
        .contains("no eligible server"));
}

#[test]
fn a_vip_removed_from_the_master_by_something_else_is_put_back() {
    // `ip addr flush`, or a network manager that restarts, takes the VIP off
    // the master: both nodes would go on believing all is well while nobody
    // answers on it. The master puts it back (and announces it again).
    let mut lab = Lab::new("k", "250ms");
    lab.both_up();
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.a.ns.name,
            "addr",
            "del",
            &format!("{VIP}/24"),
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    wait_until(Duration::from_secs(5), "the VIP back on node A", || {
        lab.has_vip('a')
    });
    eprintln!("the VIP was back on node A after {:?}", t0.elapsed());
    let stats = lab.stats('a');
    assert_eq!(stats["ha"]["state"], "MASTER");
    assert!(
        stats["ha"]["vips_reinstated"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(!lab.has_vip('b'), "the backup did not take it");
    wait_until(Duration::from_secs(5), "served through the VIP", || {
        lab.client_get_vip().as_deref() == Some("backend-ok\n")
    });
}

/// An interface made anew (a network manager that restarted it: same name,
/// new index) is followed: node A, whose eth0 is deleted and created again
/// while it is MASTER, either keeps the VIP on the new eth0 or, having
/// faulted meanwhile, takes it again when B dies. With the old index it
/// could do neither (a takeover ended in FAULT: "the VIP could not be
/// added").
#[test]
fn an_interface_made_anew_is_followed() {
    let mut lab = Lab::new("i", "250ms");
    lab.both_up();
    let (a, sw) = (lab.a.ns.name.clone(), lab.sw.name.clone());
    ip(&["-n", &a, "link", "del", "eth0"]);
    ip(&[
        "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "pa", "netns", &sw,
    ]);
    ip(&["-n", &sw, "link", "set", "pa", "master", "br0", "up"]);
    ip(&["-n", &a, "addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    ip(&["-n", &a, "link", "set", "eth0", "up"]);
    wait_until(Duration::from_secs(10), "one master again", || {
        let (sa, sb) = (lab.ha_state('a'), lab.ha_state('b'));
        (sa == "MASTER" && lab.has_vip('a') && sb == "BACKUP")
            || (sb == "MASTER" && lab.has_vip('b') && sa == "BACKUP")
    });
    if lab.ha_state('b') == "MASTER" {
        lab.signal('b', libc::SIGKILL);
        lab.wait_exit('b');
    }
    wait_until(
        Duration::from_secs(10),
        "node A MASTER on the new eth0",
        || lab.ha_state('a') == "MASTER" && lab.has_vip('a'),
    );
    wait_until(Duration::from_secs(5), "served through the VIP", || {
        lab.client_get_vip().as_deref() == Some("backend-ok\n")
    });
}

#[test]
fn split_brain_heals_to_exactly_one_master() {
    let mut lab = Lab::new("s", "250ms");
    lab.both_up();
    // cut the link between the nodes (isolated bridge ports cannot talk to each
    // other; both still reach the client)
    lab.isolate_nodes(true);
    wait_until(Duration::from_secs(5), "split brain: two masters", || {
        lab.has_vip('a') && lab.has_vip('b')
    });
    // heal
    lab.isolate_nodes(false);
    wait_until(Duration::from_secs(5), "exactly one master", || {
        lab.has_vip('a') != lab.has_vip('b')
    });
    // and it stays that way, with the client served
    for _ in 0..10 {
        assert!(
            lab.has_vip('a') && !lab.has_vip('b'),
            "the higher priority keeps the VIP"
        );
        assert_eq!(lab.client_get_vip().as_deref(), Some("backend-ok\n"));
    }
    assert_eq!(
        (lab.ha_state('a').as_str(), lab.ha_state('b').as_str()),
        ("MASTER", "BACKUP")
    );
    let mac_a = mac_of(&lab.a.ns.name, "eth0");
    wait_until(
        Duration::from_secs(7),
        "the client's ARP entry on node A",
        || lab.client_arp_mac().as_deref() == Some(mac_a.as_str()),
    );
    let b = lab.stats('b');
    assert!(
        changes(&b).contains(&("MASTER".into(), "BACKUP".into())),
        "{b}"
    );
}

/// A node's HA state changes, oldest first, as (from, to).
fn changes(stats: &serde_json::Value) -> Vec<(String, String)> {
    stats["ha"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("from"), s("to"))
        })
        .collect()
}

/// Captures one genuine heartbeat A -> B off the wire (the bridge floods it to the
/// rogue's port), as a whole Ethernet frame.
fn capture_advert(lab: &Lab) -> Vec<u8> {
    let rogue = lab.rogue.name.clone();
    in_ns(&rogue, || {
        let fd = packet_socket();
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no heartbeat captured");
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let f = &buf[..n as usize];
            // IPv4, UDP, 192.0.2.1 -> 192.0.2.2, dst port 5405
            if f.len() > 42
                && f[12..14] == [0x08, 0x00]
                && f[23] == 17
                && f[26..30] == [192, 0, 2, 1]
                && f[30..34] == [192, 0, 2, 2]
                && f[36..38] == 5405u16.to_be_bytes()
            {
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                let mut frame = f.to_vec();
                // veth offloads the UDP checksum: the copy seen here may carry a
                // partial one. Zero means "none" on IPv4; the payload is untouched.
                frame[40] = 0;
                frame[41] = 0;
                return frame;
            }
        }
    })
}

/// An AF_PACKET socket for IPv4 frames in the current namespace (the caller closes it).
fn packet_socket() -> i32 {
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the callers close the fd.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// Sends a whole Ethernet frame out of this namespace's eth0.
fn raw_send(frame: &[u8]) {
    let proto = (libc::ETH_P_IP as u16).to_be();
    let fd = packet_socket();
    let index = rampart::ha::vip::ifindex("eth0").unwrap();
    // SAFETY: sockaddr_ll is plain data.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = index as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and address valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(n as usize, frame.len());
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
}

/// Forges a UDP datagram from `src` to `dst`:5405 with `payload`, as a raw frame.
fn inject_udp(dst_mac: &str, src: IpAddr, dst: IpAddr, payload: &[u8]) {
    let mac: Vec<u8> = dst_mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let me = rampart::ha::vip::mac("eth0").unwrap();
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("v4 only")
    };
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::new();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&me);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut iph = vec![
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    iph.extend_from_slice(&s.octets());
    iph.extend_from_slice(&d.octets());
    let mut sum: u32 = iph
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    iph[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&5405u16.to_be_bytes());
    f.extend_from_slice(&5405u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
    f.extend_from_slice(payload);
    raw_send(&f);
}

#[test]
fn a_vip_that_cannot_be_added_faults_the_node_which_never_claims_master() {
    // Both nodes also carry an IPv6 VIP, and node B's interface refuses IPv6
    // addresses: when A dies, B's takeover fails at adding the VIPs.
    let mut lab = Lab::with_extra_vip("v", "250ms", Some("2001:db8::100/64"));
    let refuse_v6 = "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6";
    let ok = Command::new("ip")
        .args(["netns", "exec", &lab.b.ns.name, "sh", "-c", refuse_v6])
        .status()
        .unwrap();
    assert!(ok.success());
    lab.both_up();
    lab.signal('a', libc::SIGKILL);
    lab.wait_exit('a');
    wait_until(Duration::from_secs(10), "node B in FAULT", || {
        lab.ha_state('b') == "FAULT"
    });
    let b = lab.stats('b');
    let history = &b["ha"]["history"];
    assert!(
        !changes(&b).iter().any(|(_, to)| to == "MASTER"),
        "node B announced MASTER without the VIP: {history:#}"
    );
    let fault = history
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["from"] == "BACKUP" && c["to"] == "FAULT");
    assert!(
        fault.is_some_and(|c| c["why"] == "the VIP could not be added"),
        "{history:#}"
    );
}

/// Watches node A's VIP and the client's requests through it, until finished.
struct VipWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, u32, u32, u32)>,
}

impl VipWatch {
    fn start(lab: &Lab) -> VipWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ns, client, s) = (
            lab.a.ns.name.clone(),
            lab.client.name.clone(),
            std::sync::Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            let (mut looks, mut missing, mut served, mut failed) = (0, 0, 0, 0);
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new("ip")
                    .args(["-n", &ns, "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .unwrap();
                looks += 1;
                if !String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/")) {
                    missing += 1;
                }
                let got = in_ns(&client, || {
                    http_get(
                        format!("{VIP}:8080").parse().unwrap(),
                        "/",
                        Duration::from_millis(400),
                    )
                });
                if got.as_deref() == Some("backend-ok\n") {
                    served += 1;
                } else {
                    failed += 1;
                }
            }
            (looks, missing, served, failed)
        });
        VipWatch { stop, thread }
    }

    /// Stops watching; the VIP never left node A and every request was served.
    fn finish(self, during: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (looks, missing, served, failed) = self.thread.join().unwrap();
        eprintln!("during {during}: VIP looked at {looks} times, missing {missing}; client served {served}, failed {failed}");
        assert_eq!(missing, 0, "the MASTER lost its VIP during {during}");
        assert_eq!(failed, 0, "the client was not served during {during}");
        assert!(served > 3, "{served}");
    }
}

impl Lab {
    /// Rewrites node `which`'s config file with `edit` and sends it SIGHUP; waits
    /// until its config generation is `generation`.
    fn reload_with(&mut self, which: char, generation: u64, edit: impl FnOnce(String) -> String) {
        let path = self.node(which).cfg.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        self.signal(which, libc::SIGHUP);
        wait_until(Duration::from_secs(5), "the reload", || {
            self.stats(which)["config"]["generation"] == generation
        });
        let last = &self.stats(which)["config"]["last_reload"];
        assert_eq!(last["ok"], true, "{last}");
    }

    fn has_addr(&self, which: char, addr: &str) -> bool {
        let ns = if which == 'a' {
            &self.a.ns.name
        } else {
            &self.b.ns.name
        };
        let out = Command::new("ip")
            .args(["-n", ns, "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}/"))
    }
}

#[test]
fn reloading_ha_keeps_the_vip_on_the_master_and_re_adds_a_changed_vip_set() {
    let mut lab = Lab::new("r", "250ms");
    lab.both_up();
    const EXTRA: &str = "192.0.2.101";
    let watch = VipWatch::start(&lab);
    let transitions = lab.stats('a')["ha"]["transitions"].as_u64().unwrap();
    // 1. priority, notify and the advert interval change: A stays MASTER.
    let notify = lab.dir.join("notify.sh");
    std::fs::write(
        &notify,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> {}\n",
            lab.dir.join("notified").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&notify, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    lab.reload_with('a', 2, |t| {
        t.replace("priority = 150", "priority = 140").replace(
            "track = [",
            &format!("notify = \"{}\"\ntrack = [", notify.display()),
        )
    });
    assert_eq!(lab.stats('a')["ha"]["priority"], 140);
    assert_eq!(lab.ha_state('a'), "MASTER");
    // 2. a VIP is added: a controlled re-add on the MASTER, the first VIP stays.
    lab.reload_with('a', 3, |t| {
        t.replace(
            &format!("\"{VIP}/24\""),
            &format!("\"{VIP}/24\", \"{EXTRA}/24\""),
        )
    });
    wait_until(Duration::from_secs(3), "the added VIP on A", || {
        lab.has_addr('a', EXTRA)
    });
    assert!(lab
        .log('a')
        .contains("HA interface or VIPs changed: releasing the old addresses"));
    // 3. and removed again
    lab.reload_with('a', 4, |t| t.replace(&format!(", \"{EXTRA}/24\""), ""));
    wait_until(
        Duration::from_secs(3),
        "the removed VIP gone from A",
        || !lab.has_addr('a', EXTRA),
    );
    watch.finish("reloads");
    assert_eq!(lab.ha_state('a'), "MASTER");
    assert_eq!(
        lab.stats('a')["ha"]["transitions"].as_u64().unwrap(),
        transitions,
        "A changed state"
    );
    assert!(!lab.has_vip('b'));
    // 4. the VIPs move to another interface: released from eth0, added there
    let ns_a = lab.a.ns.name.clone();
    // (a veth pair inside A's namespace: this kernel may lack dummy links)
    ip(&[
        "-n", &ns_a, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
    ]);
    ip(&["-n", &ns_a, "link", "set", "eth1p", "up"]);
    ip(&["-n", &ns_a, "link", "set", "eth1", "up"]);
    lab.reload_with('a', 5, |t| {
        t.replace("interface = \"eth0\"", "interface = \"eth1\"")
    });
    let on = |dev: &str| {
        let out = Command::new("ip")
            .args(["-n", &ns_a, "-4", "addr", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
    };
    wait_until(Duration::from_secs(3), "the VIP on eth1", || on("eth1"));
    assert!(!on("eth0"), "the VIP is still on eth0");
    assert_eq!(lab.ha_state('a'), "MASTER");
    // The reloaded notify script is the one that runs at the next transition.
    lab.signal('a', libc::SIGTERM);
    lab.wait_exit('a');
    let file = lab.dir.join("notified");
    wait_until(
        Duration::from_secs(5),
        "the reloaded notify script to run",
        || {
            std::fs::read_to_string(&file)
                .unwrap_or_default()
                .contains("node-a")
        },
    );
}

#[test]
fn a_binary_upgrade_of_the_master_keeps_the_vip_and_the_peer_stays_backup() {
    let mut lab = Lab::new("u", "250ms");
    lab.both_up();
    // A tracks its own readiness too (config/ha.toml does): the new process
    // is ready at once, with the health it took over, not after a first
    // round of checks of its own (before, it went to FAULT and gave the VIP
    // away)
    lab.reload_with('a', 2, |t| {
        t.replace("track = [\"pool:be\"]", "track = [\"pool:be\", \"ready\"]")
    });
    let b_transitions = lab.stats('b')["ha"]["transitions"].as_u64().unwrap();
    let old_pid = lab.stats('a')["pid"].as_u64().unwrap();
    let watch = VipWatch::start(&lab);
    let out = lab
        .a
        .ns
        .cmd(rampart_bin())
        .args(["upgrade", "--admin", "http://127.0.0.1:8404"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log('a')
    );
    // the old process drains and exits 0
    let mut old = lab.a.child.take().unwrap();
    assert!(old.wait().unwrap().success(), "{}", lab.log('a'));
    // the new process advertises: B hears four more adverts (a full master-down
    // interval) and stays BACKUP
    let heard = lab.stats('b')["ha"]["adverts_received"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(5),
        "adverts from the new process",
        || lab.stats('b')["ha"]["adverts_received"].as_u64().unwrap() >= heard + 4,
    );
    watch.finish("a binary upgrade of the MASTER");
    let a = lab.stats('a');
    assert_ne!(a["pid"].as_u64().unwrap(), old_pid);
    assert_eq!(a["ha"]["state"], "MASTER", "{a}");
    assert_eq!(lab.ha_state('b'), "BACKUP");
    assert_eq!(
        lab.stats('b')["ha"]["transitions"].as_u64().unwrap(),
        b_transitions,
        "the peer changed state"
    );
    assert_eq!(a["ha"]["resumed_master"], true, "{a}");
}

#[test]
fn a_listeners_read_only_switch_runs_the_notify_program() {
    let mut lab = Lab::new("ro", "250ms");
    let notify = lab.dir.join("notify.sh");
    let file = lab.dir.join("notified");
    std::fs::write(
        &notify,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&notify, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = lab.a.cfg.clone();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "track = [",
        &format!("notify = \"{}\"\ntrack = [", notify.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    lab.both_up();
    let notified = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_until(Duration::from_secs(5), "MASTER notified", || {
        notified().contains("MASTER node-a")
    });
    // an operator switches the VIP's listener to read-only, then back
    let mode = |m: &str| {
        let out = lab
            .a
            .ns
            .cmd(rampart_bin())
            .args(["mode", m, "vip", "--admin", "http://127.0.0.1:8404"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mode("read-only");
    wait_until(Duration::from_secs(5), "READ_ONLY notified", || {
        notified().contains("READ_ONLY node-a vip switched by an operator")
    });
    mode("normal");
    wait_until(Duration::from_secs(5), "READ_WRITE notified", || {
        notified().contains("READ_WRITE node-a vip")
    });
    assert_eq!(
        lab.stats('a')["listeners"][0]["read_only"],
        false,
        "{}",
        lab.stats('a')
    );
}

/// Node `ns`'s /stats;json (null when it does not answer).
fn stats_in(ns: &str) -> serde_json::Value {
    let body = in_ns(ns, || {
        http_get(
            "127.0.0.1:8404".parse().unwrap(),
            "/stats;json",
            Duration::from_secs(2),
        )
    });
    serde_json::from_str(&body.unwrap_or_else(|| "null".into())).unwrap()
}

/// Watches both nodes' HA states, and whether node B holds the VIP, until
/// finished: for as long as it looks, A is MASTER and B is BACKUP without it.
struct PairWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, u32, Vec<String>)>,
}

impl PairWatch {
    fn start(lab: &Lab) -> PairWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, b, s) = (
            lab.a.ns.name.clone(),
            lab.b.ns.name.clone(),
            std::sync::Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            let (mut looks, mut unknown, mut wrong) = (0, 0, Vec::new());
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let state = |ns: &str| {
                    stats_in(ns)["ha"]["state"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string()
                };
                let (sa, sb) = (state(&a), state(&b));
                let out = Command::new("ip")
                    .args(["-n", &b, "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .unwrap();
                let vip_on_b = String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"));
                looks += 1;
                // a node that did not answer in time tells nothing
                if sa == "?" || sb == "?" {
                    unknown += 1;
                }
                let fine = (sa == "MASTER" || sa == "?") && (sb == "BACKUP" || sb == "?");
                if !fine || vip_on_b {
                    wrong.push(format!("A {sa}, B {sb}, the VIP on B: {vip_on_b}"));
                }
            }
            (looks, unknown, wrong)
        });
        PairWatch { stop, thread }
    }

    fn finish(self, during: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (looks, unknown, wrong) = self.thread.join().unwrap();
        eprintln!("during {during}: both states looked at {looks} times ({unknown} without an answer), wrong {}", wrong.len());
        assert!(wrong.is_empty(), "during {during}: {wrong:#?}");
        assert!(looks > unknown + 3, "{looks} looks, {unknown} unanswered");
    }
}

/// The key node B's last heartbeat from node A verified with ("current",
/// "previous", "grace"; "?" for none).
fn key_b_heard_a_with(lab: &Lab) -> String {
    let b = lab.stats('b');
    b["ha"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == "node-a")
        .and_then(|p| p["key"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// `previous_key_unused` in node `which`'s `/stats;json` (None when it does
/// not answer).
fn previous_key_unused(lab: &Lab, which: char) -> Option<bool> {
    lab.stats(which)["ha"]["previous_key_unused"].as_bool()
}

impl Lab {
    /// Waits until node B has accepted `n` more heartbeats from A than now:
    /// at 250 ms, 4 of them (1 s) outlast B's master-down time (0.9 s).
    fn b_hears(&self, n: u64, what: &str) {
        let heard = |lab: &Lab| {
            lab.stats('b')["ha"]["adverts_received"]
                .as_u64()
                .unwrap_or(0)
        };
        let from = heard(self);
        wait_until(Duration::from_secs(5), what, || heard(self) >= from + n);
    }

    /// Node `which`'s /metrics.
    fn metrics(&self, which: char) -> String {
        let ns = self.node_ref(which).ns.name.clone();
        in_ns(&ns, || {
            http_get(
                "127.0.0.1:8404".parse().unwrap(),
                "/metrics",
                Duration::from_secs(2),
            )
        })
        .unwrap_or_default()
    }

    fn node_ref(&self, which: char) -> &Node {
        if which == 'a' {
            &self.a
        } else {
            &self.b
        }
    }
}

/// The pair's key rotated by reload, one node after the other (the BACKUP
/// first), as the README says: first with `auth_previous_key_file`, then by a
/// plain change of `auth_key_file` within the grace. Node B never stops
/// hearing node A: no heartbeat is refused, no node changes state, and the
/// pair never has two MASTERs. Once A signs with the new key, B tells that
/// the previous one is no longer used.
#[test]
fn the_heartbeat_key_is_rotated_by_reload_without_a_failover() {
    let mut lab = Lab::new("kr", "250ms");
    lab.both_up();
    let old = lab.dir.join("ha.key");
    let new = lab.dir.join("ha-2.key");
    let key: Vec<u8> = (0..40).map(|_| fastrand::alphanumeric() as u8).collect();
    std::fs::write(&new, &key).unwrap();
    let line = |k: &std::path::Path| format!("auth_key_file = \"{}\"", k.display());
    let previous = |k: &std::path::Path| format!("\nauth_previous_key_file = \"{}\"", k.display());
    let transitions = |lab: &Lab| {
        let of = |which: char| lab.stats(which)["ha"]["transitions"].as_u64().unwrap();
        (of('a'), of('b'))
    };
    let before = transitions(&lab);
    let auth_drops = |lab: &Lab| {
        lab.stats('b')["ha"]["dropped"]["auth"]
            .as_u64()
            .unwrap_or(0)
    };
    let b_auth_drops = auth_drops(&lab);
    // B hears A under the key it signs with
    lab.b_hears(2, "heartbeats from A");
    assert_eq!(key_b_heard_a_with(&lab), "current");
    let watch = PairWatch::start(&lab);

    // 1. both sign with the new key and accept the old one: B first
    let rotate = |t: String| t.replace(&line(&old), &format!("{}{}", line(&new), previous(&old)));
    lab.reload_with('b', 2, rotate);
    // A still signs with the old key: B hears it under the previous one,
    // for longer than its master-down time
    lab.b_hears(4, "A's heartbeats under the previous key");
    assert_eq!(key_b_heard_a_with(&lab), "previous");
    assert_eq!(previous_key_unused(&lab, 'b'), Some(false));
    lab.reload_with('a', 2, rotate);
    wait_until(
        Duration::from_secs(5),
        "A's heartbeats under the new key",
        || key_b_heard_a_with(&lab) == "current",
    );
    lab.b_hears(4, "A's heartbeats under the new key");
    let m = lab.metrics('b');
    assert!(
        m.lines().any(|l| l.starts_with("rampart_ha_peer_key{")
            && l.contains("peer=\"node-a\"")
            && l.contains("key=\"current\"")
            && l.ends_with(" 1")),
        "{m}"
    );
    assert!(
        lab.log('b')
            .contains("verified with another of this node's keys"),
        "B logs the change of key: {}",
        lab.log('b')
    );
    // once A's heartbeats have all verified with the new key, 60 in a row
    // (15 s at 250 ms), B says the previous key is no longer used; A, the
    // MASTER, hears none and does not
    let gauge = "\nrampart_ha_previous_key_unused 1\n";
    let shown = || lab.metrics('b').contains(gauge);
    wait_until(
        Duration::from_secs(30),
        "B to show the previous key unused",
        shown,
    );
    assert_eq!(previous_key_unused(&lab, 'b'), Some(true));
    wait_until(
        Duration::from_secs(5),
        "B's warning that the previous key is unused",
        || lab.log('b').contains("still accepted but no longer used"),
    );
    assert_eq!(previous_key_unused(&lab, 'a'), Some(false));

    // 2. the previous key goes
    let retire = |t: String| t.replace(&previous(&old), "");
    lab.reload_with('b', 3, retire);
    lab.reload_with('a', 3, retire);
    lab.b_hears(4, "A's heartbeats after the previous key went");
    assert_eq!(key_b_heard_a_with(&lab), "current");
    wait_until(
        Duration::from_secs(5),
        "B to show no previous key unused once it has none",
        || previous_key_unused(&lab, 'b') == Some(false),
    );

    // 3. a plain change back to the first key, B first, within the grace
    let back = |t: String| t.replace(&line(&new), &line(&old));
    lab.reload_with('b', 4, back);
    lab.b_hears(4, "A's heartbeats under the key in grace");
    assert_eq!(key_b_heard_a_with(&lab), "grace");
    lab.reload_with('a', 4, back);
    wait_until(
        Duration::from_secs(5),
        "A's heartbeats under the key B signs with",
        || key_b_heard_a_with(&lab) == "current",
    );
    lab.b_hears(4, "A's heartbeats after the plain change");

    watch.finish("the key rotations");
    assert_eq!(
        transitions(&lab),
        before,
        "a node changed state: A {}, B {}",
        lab.stats('a')["ha"]["history"],
        lab.stats('b')["ha"]["history"]
    );
    assert_eq!(auth_drops(&lab), b_auth_drops, "B refused a heartbeat");
    assert!(lab.has_vip('a') && !lab.has_vip('b'));
}
