//! DNS discovery against a real DNS server: the in-process hickory-server
//! authority here, and Debian's dnsmasq in tests/dnsmasq.rs.

mod common;

use common::dns::{FaultyDns, TestDns};
use common::*;
use hickory_proto::rr::RecordType;
use hyper::StatusCode;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn dns_config(
    listen: SocketAddr,
    dns: SocketAddr,
    resolver_extra: &str,
    pool_extra: &str,
    address: &str,
) -> String {
    let admin = admin_addr_for(listen);
    format!(
        r#"[global]
threads = 2
access_log = "text"
[admin]
bind = "{admin}"
[resolver]
nameservers = ["{dns}"]
timeout = "500ms"
min_ttl = "200ms"
max_ttl = "30s"
{resolver_extra}
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "app"
[[pool]]
name = "app"
connect_timeout = "500ms"
{pool_extra}
  [[pool.server]]
  address = "{address}"
"#
    )
}

/// The admin address used with a given listener: the next port on 127.0.0.9, so
/// a test can find it again (the listener's port is OS-assigned and unique).
fn admin_addr_for(listen: SocketAddr) -> SocketAddr {
    SocketAddr::new(ip("127.0.0.9"), listen.port())
}

/// The pool's state through the admin API.
async fn pool_state(listen: SocketAddr) -> serde_json::Value {
    let (st, body) = get(
        &client(),
        &format!("http://{}/api/pools/app", admin_addr_for(listen)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A proxy whose pool `app` is the DNS name `name` (in `test.`) with the
/// `[pool.health]` (and pool keys) `health`, once its first member is UP; and
/// its listening address.
async fn start_checked(dns: &TestDns, health: &str, name: &str, port: u16) -> (Proxy, SocketAddr) {
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &dns_config(listen, dns.addr, "", health, &format!("{name}.test:{port}")),
        &[listen],
    )
    .await;
    p.wait_pool(Duration::from_secs(5), "app", "the first member UP", |v| {
        count_status(v, "UP") == 1
    })
    .await;
    (p, listen)
}

/// Waits until `addr` is the pool's only member.
async fn wait_only_member(p: &Proxy, addr: SocketAddr) {
    let addr = addr.to_string();
    p.wait_pool(
        Duration::from_secs(5),
        "app",
        "only the new pod left",
        |v| {
            v["servers"]
                .as_array()
                .is_some_and(|ss| ss.len() == 1 && ss[0]["address"] == addr.as_str())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_replacement_is_followed_within_ttl() {
    let mut dns = TestDns::start("test.").await;
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let old = Backend::start("old-pod", SocketAddr::new(ip("127.0.0.2"), port)).await;
    dns.set_ips("app", &[ip("127.0.0.2")], 1).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &dns_config(
            listen,
            dns.addr,
            "",
            "retries = 0",
            &format!("app.test:{port}"),
        ),
        &[listen],
    )
    .await;
    let c = client();
    for _ in 0..10 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "old-pod"));
    }
    // the pod is deleted and recreated with a new IP
    old.kill();
    let new = Backend::start("new-pod", SocketAddr::new(ip("127.0.0.3"), port)).await;
    dns.set_ips("app", &[ip("127.0.0.3")], 1).await;
    let changed = Instant::now();
    let mut first_ok = None;
    while changed.elapsed() < Duration::from_secs(10) {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        if st == StatusCode::OK {
            assert_eq!(
                body, "new-pod",
                "answered from a stale connection to the old pod"
            );
            first_ok.get_or_insert(changed.elapsed());
        } else if first_ok.is_some() {
            panic!("a failure after the switch: {st} {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if first_ok.is_some_and(|t| changed.elapsed() > t + Duration::from_millis(500)) {
            break;
        }
    }
    let took = first_ok.expect("never reached the new pod");
    // TTL 1 s, then a lookup and a request: about 1-2 s; 4 s leaves room for a
    // loaded machine and still fails a proxy that waits for max_ttl (30 s)
    // or never looks the name up again
    assert!(
        took <= Duration::from_secs(4),
        "TTL 1 s + up to 3 s, took {took:?}"
    );
    eprintln!("requests reached the new pod {took:?} after the DNS change");
    assert!(new.requests() > 0);
    wait_only_member(&p, new.addr).await;
    dns.stop().await;
}

/// A rollout: the DNS answer swaps the only pod for one at a new address while
/// the old pod still serves (a terminating pod drains). The new member's first
/// check takes 600 ms; until it passes, the old member keeps taking the
/// requests, so none fails (published at once, the new member would be
/// UNKNOWN and the pool empty for the length of that check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_serves_from_the_old_pod_until_the_new_one_passes_its_first_check() {
    let mut dns = TestDns::start("test.").await;
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let _old = Backend::start("old-pod", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let new = Backend::start("new-pod", SocketAddr::new(ip("127.0.0.3"), port)).await;
    dns.set_ips("app", &[ip("127.0.0.2")], 1).await;
    let health = "retries = 0\n[pool.health]\nkind = \"http\"\npath = \"/slow?ms=600\"\ninterval = \"3s\"\ntimeout = \"2s\"\n";
    let (p, listen) = start_checked(&dns, health, "app", port).await;
    let c = client();
    let (st, body) = get(&c, &format!("http://{listen}/")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "old-pod"));
    dns.set_ips("app", &[ip("127.0.0.3")], 1).await;
    let changed = Instant::now();
    let (mut old_answers, mut first_new) = (0, None);
    while changed.elapsed() < Duration::from_secs(6) {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "{:?} after the DNS change: {body}",
            changed.elapsed()
        );
        match body.as_str() {
            "old-pod" if first_new.is_none() => old_answers += 1,
            "new-pod" => {
                first_new.get_or_insert(changed.elapsed());
            }
            other => panic!("{other:?} after the new pod answered"),
        }
        if first_new.is_some_and(|t| changed.elapsed() > t + Duration::from_millis(300)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = first_new.expect("the new pod never answered");
    eprintln!("{old_answers} requests went to the old pod; the new one answered after {took:?}");
    // after the change, the old pod answered until the new one took over
    assert!(old_answers > 0);
    assert!(new.requests() > 0);
    wait_only_member(&p, new.addr).await;
    dns.stop().await;
}

/// Answers that change faster than a first check answers: every lookup the
/// proxy makes gets an answer with another new address, whose check takes
/// 1.5 s against a TTL of 1 s. One round of checks runs at a time and the
/// newest answer goes out when it ends; were each answer to start the checks
/// over, none would ever be published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_change_faster_than_a_check_are_still_published() {
    let mut dns = TestDns::start("test.").await;
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let port = common_port(&ips);
    let mut pods = Vec::new();
    for (i, a) in ips.iter().enumerate() {
        pods.push(Backend::start(&format!("pod-{i}"), SocketAddr::new(ip(a), port)).await);
    }
    dns.set_ips("app", &[ip(ips[0])], 1).await;
    let health = "[pool.health]\nkind = \"http\"\npath = \"/slow?ms=1500\"\ninterval = \"3s\"\ntimeout = \"3s\"\n";
    let (_p, listen) = start_checked(&dns, health, "app", port).await;
    let admin = admin_addr_for(listen);
    let first = pods[0].addr.to_string();
    let (mut seen, mut answers) = (0.0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // (the name's series may not be there before its first lookup)
        let lookups = metric_or_zero(
            &admin_get(admin, "/metrics").await.1,
            "rampart_dns_lookups_total{",
        );
        if lookups > seen {
            // the next lookup gets another new address
            seen = lookups;
            let next = ips[1 + answers % 3];
            answers += 1;
            dns.set_ips("app", &[ip(ips[0]), ip(next)], 1).await;
        }
        let v = pool_state(listen).await;
        let others = v["servers"].as_array().map_or(0, |ss| {
            ss.iter().filter(|s| s["address"] != first.as_str()).count()
        });
        if others > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {answers} answers, none published: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("published after {answers} answers");
    // the answers did change faster than the first check answered
    assert!(answers >= 3, "{answers} answers");
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_keeps_survivor_state() {
    let dns = TestDns::start("test.").await;
    let port = common_port(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let pods: Vec<Backend> = futures_pods(port).await;
    dns.set_ips("svc", &[ip("127.0.0.2")], 1).await;
    let health = "[pool.health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
    let (p, listen) = start_checked(&dns, health, "svc", port).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    // 1 -> 3 records
    dns.set_ips(
        "svc",
        &[ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4")],
        1,
    )
    .await;
    p.wait_pool(
        Duration::from_secs(5),
        "app",
        "new members checked UP",
        |v| count_status(v, "UP") == 3,
    )
    .await;
    let before: Vec<usize> = pods.iter().map(|b| b.requests()).collect();
    for _ in 0..30 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    let spread: Vec<usize> = pods
        .iter()
        .zip(&before)
        .map(|(b, n)| b.requests() - n)
        .collect();
    assert!(
        spread.iter().all(|&n| n >= 5),
        "traffic did not spread to all 3: {spread:?}"
    );
    // the survivor kept its health: it was never re-checked from UNKNOWN
    let ups: Vec<u64> = pool_state(listen).await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["went_up"].as_u64().unwrap())
        .collect();
    assert_eq!(ups, vec![1, 1, 1], "each member went UP once");
    // the survivor's counters before the scale-in
    let total_of = |pool: &serde_json::Value, addr: &str| {
        pool["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == addr)
            .map(|s| s["total"].as_u64().unwrap())
    };
    let survivor = format!("127.0.0.3:{port}");
    let before_total = total_of(&pool_state(listen).await, &survivor).unwrap();
    assert!(before_total > 0);
    // 3 -> 1
    dns.set_ips("svc", &[ip("127.0.0.3")], 1).await;
    p.wait_pool(Duration::from_secs(5), "app", "members removed", |v| {
        v["servers"].as_array().is_some_and(|ss| ss.len() == 1)
    })
    .await;
    let before: Vec<usize> = pods.iter().map(|b| b.requests()).collect();
    for _ in 0..20 {
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
    }
    let after: Vec<usize> = pods
        .iter()
        .zip(&before)
        .map(|(b, n)| b.requests() - n)
        .collect();
    assert_eq!(after, vec![0, 20, 0], "removed members still get traffic");
    // the pool holds only the survivor, and its counters carried on
    let pool = pool_state(listen).await;
    assert_eq!(pool["servers"].as_array().unwrap().len(), 1);
    assert_eq!(total_of(&pool, &survivor), Some(before_total + 20));
    assert_eq!(pool["servers"][0]["status"], "UP");
    // the survivor did not get a new health-check task from UNKNOWN either
    assert_eq!(pool["servers"][0]["went_up"], 1);
    // both answers were applied in place (the pool was not built anew)
    assert!(
        pool["dns_refreshes_in_place"].as_u64() >= Some(2)
            && pool["dns_refreshes_rebuilt"].as_u64() == Some(0),
        "{pool}"
    );
    // removed members' idle connections were closed at once
    wait_for(
        Duration::from_secs(3),
        "idle connections to removed members closed",
        || {
            [0usize, 2].iter().all(|&i| {
                pods[i].stats.closed.load(Ordering::SeqCst)
                    == pods[i].stats.connections.load(Ordering::SeqCst)
            })
        },
    )
    .await;
}

async fn futures_pods(port: u16) -> Vec<Backend> {
    let mut v = Vec::new();
    for (i, h) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
        v.push(Backend::start(&format!("pod-{i}"), SocketAddr::new(ip(h), port)).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_records_arrive_through_tcp_fallback() {
    let dns = TestDns::start("test.").await;
    let ips: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect();
    dns.set_ips("big", &ips, 30).await;
    // one real backend among them: the first address
    let port = common_port(&["127.1.0.1"]);
    let b = Backend::start("big-0", SocketAddr::new(ips[0], port)).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &dns_config(
            listen,
            dns.addr,
            "",
            "balance = \"first\"",
            &format!("big.test:{port}"),
        ),
        &[listen],
    )
    .await;
    let (st, body) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "big-0"));
    assert!(b.requests() >= 1);
    // 300 members: an answer of 300 A records does not fit in 512 bytes of UDP
    let name = p.stats().await["dns"][0].clone();
    assert_eq!(name["errors"], 0, "it resolved: {name}");
    assert_eq!(
        name["members"].as_array().map(Vec::len),
        Some(300),
        "{name}"
    );
    // ... and the pool has them all, each addressed by its ip:port
    let pool = pool_state(listen).await;
    let servers = pool["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 300);
    assert!(servers
        .iter()
        .all(|s| s["source"] == format!("big.test:{port}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_down_keeps_the_last_members_and_counts_errors() {
    let mut dns = TestDns::start("test.").await;
    let b = Backend::start("pod", free_addr("127.0.0.2")).await;
    dns.set_ips("app", &[b.addr.ip()], 1).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &dns_config(
            listen,
            dns.addr,
            "",
            "",
            &format!("app.test:{}", b.addr.port()),
        ),
        &[listen],
    )
    .await;
    let c = client();
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
    dns.stop().await;
    // the errors are counted where operators look
    let v = p
        .wait_stats(Duration::from_secs(10), "two failed lookups", |v| {
            v["dns"][0]["errors"].as_u64().is_some_and(|e| e >= 2)
        })
        .await;
    assert_eq!(v["dns"][0]["members"].as_array().unwrap().len(), 1);
    assert_eq!(
        pool_state(listen).await["servers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for _ in 0..10 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "pod"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_empty_keep_versus_clear() {
    for (policy, expect) in [
        ("keep", StatusCode::OK),
        ("clear", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let dns = TestDns::start("test.").await;
        let b = Backend::start("pod", free_addr("127.0.0.2")).await;
        dns.set_ips("app", &[b.addr.ip()], 1).await;
        let listen = free_addr("127.0.0.1");
        let cfg = dns_config(
            listen,
            dns.addr,
            &format!("on_empty = \"{policy}\""),
            "",
            &format!("app.test:{}", b.addr.port()),
        );
        let p = Proxy::start(&cfg, &[listen]).await;
        let c = client();
        assert_eq!(
            get(&c, &format!("http://{listen}/")).await.0,
            StatusCode::OK
        );
        let lookups = p.stats().await["dns"][0]["lookups"].as_u64().unwrap_or(0);
        // the name disappears (NXDOMAIN-like: no records)
        dns.set_ips("app", &[], 1).await;
        p.wait_stats(Duration::from_secs(5), "the empty answer handled", |v| {
            let name = &v["dns"][0];
            if policy == "keep" {
                name["lookups"].as_u64().is_some_and(|n| n > lookups)
                    && !name["last_error"].is_null()
            } else {
                name["members"].as_array().is_some_and(Vec::is_empty)
            }
        })
        .await;
        let (st, _) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(st, expect, "on_empty = {policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_missing_at_start_fills_the_pool_when_it_appears() {
    let dns = TestDns::start("test.").await;
    let b = Backend::start("late", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let p = Proxy::start(
        &dns_config(
            listen,
            dns.addr,
            "",
            "",
            &format!("late.test:{}", b.addr.port()),
        ),
        &[listen],
    )
    .await;
    let name = p.stats().await["dns"][0].clone();
    assert!(
        !name["last_error"].is_null() && name["members"].as_array().is_some_and(Vec::is_empty),
        "the name did not resolve at start-up: {name}"
    );
    let c = client();
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    dns.set_ips("late", &[b.addr.ip()], 1).await;
    let t0 = Instant::now();
    loop {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        if st == StatusCode::OK {
            assert_eq!(body, "late");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // with no member of the name to place the new ones after, the pool was
    // built anew
    let pool = pool_state(listen).await;
    assert!(
        pool["dns_refreshes_rebuilt"].as_u64() == Some(1)
            && pool["dns_refreshes_in_place"].as_u64() == Some(0),
        "{pool}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_and_dns_members_mix_and_srv_gives_ports_and_weights() {
    let dns = TestDns::start("test.").await;
    let stat = Backend::start("static", free_addr("127.0.0.2")).await;
    let s1 = Backend::start("srv-1", free_addr("127.0.0.3")).await;
    let s2 = Backend::start("srv-2", free_addr("127.0.0.4")).await;
    dns.set_ips("t1", &[s1.addr.ip()], 5).await;
    dns.set_ips("t2", &[s2.addr.ip()], 5).await;
    // different ports per target, weights 1 and 3
    dns.set_srv(
        "_http._tcp.api",
        &[(10, 1, s1.addr.port(), "t1"), (10, 3, s2.addr.port(), "t2")],
        5,
    )
    .await;
    let listen = free_addr("127.0.0.1");
    let mut cfg = dns_config(listen, dns.addr, "", "", "_http._tcp.api.test");
    cfg.push_str(&format!(
        "  [[pool.server]]\n  address = \"{}\"\n  weight = 2\n",
        stat.addr
    ));
    let _p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    let mut bodies = Vec::new();
    for _ in 0..60 {
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!(st, StatusCode::OK);
        bodies.push(body);
    }
    let t = tally(&bodies);
    // weights srv-1:srv-2:static = 1:3:2 over 60 requests, smooth round robin
    assert_eq!(
        (t.get("srv-1"), t.get("srv-2"), t.get("static")),
        (Some(&10), Some(&30), Some(&20)),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_answers_are_used_and_prefer_picks_the_family() {
    let port = common_port(&["127.0.0.2", "::1"]);
    let v4 = Backend::start("v4", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let v6 = Backend::start("v6", SocketAddr::new(ip("::1"), port)).await;
    for (prefer, want) in [
        ("ipv6", vec!["v6"]),
        ("ipv4", vec!["v4"]),
        ("any", vec!["v4", "v6"]),
    ] {
        let dns = TestDns::start("test.").await;
        dns.set_ips("dual", &[ip("127.0.0.2"), ip("::1")], 30).await;
        let listen = free_addr("127.0.0.1");
        let cfg = dns_config(
            listen,
            dns.addr,
            &format!("prefer = \"{prefer}\""),
            "",
            &format!("dual.test:{port}"),
        );
        let _p = Proxy::start(&cfg, &[listen]).await;
        let c = client();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (st, body) = get(&c, &format!("http://{listen}/")).await;
            assert_eq!(st, StatusCode::OK);
            seen.push(body);
        }
        let mut kinds: Vec<String> = tally(&seen).into_keys().collect();
        kinds.sort();
        assert_eq!(kinds, want, "prefer = {prefer}");
    }
    assert!(v4.requests() > 0 && v6.requests() > 0);
}

/// Pods "v4" on 127.0.0.2 and "v6" on ::1 (one port), both records of
/// `dual.test`, resolved through a `FaultyDns`; a proxy with these `[resolver]`
/// keys whose pool `app` is that name.
async fn dual_behind_faulty_dns(
    resolver_extra: &str,
) -> ([Backend; 2], TestDns, FaultyDns, Proxy, SocketAddr, u16) {
    let port = common_port(&["127.0.0.2", "::1"]);
    let v4 = Backend::start("v4", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let v6 = Backend::start("v6", SocketAddr::new(ip("::1"), port)).await;
    let dns = TestDns::start("test.").await;
    dns.set_ips("dual", &[ip("127.0.0.2"), ip("::1")], 1).await;
    let faulty = FaultyDns::start(dns.addr).await;
    let listen = free_addr("127.0.0.1");
    let cfg = dns_config(
        listen,
        faulty.addr,
        resolver_extra,
        "",
        &format!("dual.test:{port}"),
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    ([v4, v6], dns, faulty, p, listen, port)
}

/// The AAAA query fails (SERVFAIL) while the A query answers: the IPv6 members
/// are kept for hold_on_failure, as on a failed lookup, and then only they are
/// dropped. (hickory's dual-stack lookup returns the A records alone then, which
/// dropped every IPv6 member at once.) A server that fails AAAA queries for a
/// name with no IPv6 members (dnsmasq refuses them) is no error at all:
/// tests/dnsmasq.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_aaaa_query_keeps_the_ipv6_members_for_hold_on_failure() {
    let (_pods, dns, faulty, p, listen, port) =
        dual_behind_faulty_dns("hold_on_failure = \"6s\"").await;
    let count = |n: usize| {
        move |v: &serde_json::Value| v["servers"].as_array().is_some_and(|s| s.len() == n)
    };
    p.wait_pool(Duration::from_secs(5), "app", "both members", count(2))
        .await;
    let before = p.stats().await["dns"][0]["lookups"].as_u64().unwrap_or(0);
    faulty.fail(&[RecordType::AAAA]);
    let failing = Instant::now();
    let v = p
        .wait_stats(
            Duration::from_secs(10),
            "two lookups with AAAA failing",
            |v| {
                v["dns"][0]["lookups"]
                    .as_u64()
                    .is_some_and(|n| n >= before + 2)
            },
        )
        .await;
    let name = &v["dns"][0];
    assert!(
        name["errors"].as_u64().is_some_and(|e| e >= 1),
        "the failed AAAA query is an error: {name}"
    );
    let servers = pool_state(listen).await["servers"].clone();
    assert_eq!(servers.as_array().map(Vec::len), Some(2), "{servers}");
    // an IPv4 scale-out meanwhile is followed, the IPv6 member kept
    dns.set_ips("dual", &[ip("127.0.0.2"), ip("127.0.0.3"), ip("::1")], 1)
        .await;
    p.wait_pool(
        Duration::from_secs(5),
        "app",
        "the new IPv4 member too",
        count(3),
    )
    .await;
    // past hold_on_failure the IPv6 member goes, and the A answer stays
    let v4 = [
        SocketAddr::new(ip("127.0.0.2"), port).to_string(),
        SocketAddr::new(ip("127.0.0.3"), port).to_string(),
    ];
    p.wait_pool(
        Duration::from_secs(10),
        "app",
        "the IPv4 members only",
        |v| {
            v["servers"].as_array().is_some_and(|ss| {
                ss.len() == 2
                    && ss
                        .iter()
                        .all(|s| v4.iter().any(|a| s["address"] == a.as_str()))
            })
        },
    )
    .await;
    assert!(
        failing.elapsed() >= Duration::from_millis(5500),
        "dropped after only {:?}",
        failing.elapsed()
    );
    // AAAA answers again: the IPv6 member is back (after the failures'
    // backoff: up to 32 min_ttl)
    faulty.fail(&[]);
    p.wait_pool(Duration::from_secs(15), "app", "all three again", count(3))
        .await;
}

/// A proxy whose pool `app` is `app.test` (one pod, this TTL), resolved
/// through a `FaultyDns`, with these `[resolver]` keys; once a request passed.
async fn behind_faulty_dns(
    ttl: u32,
    resolver_extra: &str,
) -> (TestDns, FaultyDns, Backend, Proxy, SocketAddr) {
    let dns = TestDns::start("test.").await;
    let faulty = FaultyDns::start(dns.addr).await;
    let b = Backend::start("pod", free_addr("127.0.0.2")).await;
    dns.set_ips("app", &[b.addr.ip()], ttl).await;
    let listen = free_addr("127.0.0.1");
    let cfg = dns_config(
        listen,
        faulty.addr,
        resolver_extra,
        "",
        &format!("app.test:{}", b.addr.port()),
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    assert_eq!(
        get(&client(), &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
    (dns, faulty, b, p, listen)
}

/// prefer = "ipv4": a failed A query is a failed lookup (members kept), not a
/// reason to take the name's AAAA records instead. (hickory's
/// Ipv4thenIpv6 falls through to AAAA on any failure, so one lost packet moved
/// the pool to its IPv6 addresses.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_a_query_does_not_swap_the_pool_to_ipv6() {
    let (_pods, _dns, faulty, p, listen, port) =
        dual_behind_faulty_dns("prefer = \"ipv4\"\nhold_on_failure = \"30s\"").await;
    let v4 = SocketAddr::new(ip("127.0.0.2"), port);
    wait_only_member(&p, v4).await;
    faulty.fail(&[RecordType::A]);
    let errors = p.stats().await["dns"][0]["errors"].as_u64().unwrap_or(0);
    p.wait_stats(Duration::from_secs(10), "two failed A queries", |v| {
        v["dns"][0]["errors"]
            .as_u64()
            .is_some_and(|n| n >= errors + 2)
    })
    .await;
    let servers = pool_state(listen).await["servers"].clone();
    let addrs: Vec<&str> = servers
        .as_array()
        .map(|ss| ss.iter().filter_map(|s| s["address"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(addrs, [v4.to_string()], "{servers}");
    let (st, body) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "v4"));
}

/// hold_on_failure counts from the first failed lookup, not from the last good
/// one: with a TTL longer than hold_on_failure, the first failure comes later
/// than hold_on_failure after the last answer, and used to drop every member
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_on_failure_counts_from_the_first_failure() {
    let (_dns, faulty, _b, p, listen) = behind_faulty_dns(3, "hold_on_failure = \"1s\"").await;
    // the next lookup is about 3 s away; it and the one after fail
    faulty.fail(&[RecordType::A, RecordType::AAAA]);
    let v = p
        .wait_stats(Duration::from_secs(10), "a failed lookup", |v| {
            v["dns"][0]["errors"].as_u64().is_some_and(|n| n >= 1)
        })
        .await;
    let first = Instant::now();
    let lookups = v["dns"][0]["lookups"].as_u64().unwrap_or(0);
    p.wait_stats(Duration::from_secs(10), "a second failed lookup", |v| {
        v["dns"][0]["errors"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    // (the second comes 400 ms after the first: inside hold_on_failure)
    if first.elapsed() < Duration::from_millis(900) {
        let servers = pool_state(listen).await["servers"].clone();
        assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
    } else {
        eprintln!(
            "slow machine: the second failure took {:?}",
            first.elapsed()
        );
    }
    p.wait_pool(Duration::from_secs(10), "app", "members dropped", |v| {
        v["servers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(lookups >= 2, "one good lookup, then failures: {lookups}");
}

/// With on_empty = "keep", an empty answer is still an answer: the resolver
/// works. A kept set is not dropped by the first failed lookup after an empty
/// spell longer than hold_on_failure (it was, when the clock ran from the last
/// answer with records); it is dropped that long after the failures begin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_restarts_the_hold_on_failure_clock() {
    let (dns, faulty, _b, p, listen) =
        behind_faulty_dns(1, "hold_on_failure = \"2s\"\non_empty = \"keep\"").await;
    let c = client();
    // empty answers for longer than hold_on_failure (min_ttl is 200 ms)
    dns.set_ips("app", &[], 1).await;
    let emptied = Instant::now();
    let lookups = p.stats().await["dns"][0]["lookups"].as_u64().unwrap_or(0);
    p.wait_stats(Duration::from_secs(10), "empty answers for 2.5 s", |v| {
        emptied.elapsed() >= Duration::from_millis(2500)
            && v["dns"][0]["lookups"]
                .as_u64()
                .is_some_and(|n| n >= lookups + 3)
    })
    .await;
    // the server fails now: the first two failures keep the members
    faulty.fail(&[RecordType::A, RecordType::AAAA]);
    let failing = Instant::now();
    let errors = p.stats().await["dns"][0]["errors"].as_u64().unwrap_or(0);
    p.wait_stats(Duration::from_secs(10), "two failed lookups", |v| {
        v["dns"][0]["errors"]
            .as_u64()
            .is_some_and(|n| n >= errors + 2)
    })
    .await;
    // (failures come 200 and 400 ms apart: the second is 0.8 s at most after
    // the last empty answer, well inside hold_on_failure)
    if failing.elapsed() < Duration::from_millis(1500) {
        let servers = pool_state(listen).await["servers"].clone();
        assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
        let (st, body) = get(&c, &format!("http://{listen}/")).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "pod"));
    } else {
        eprintln!("slow machine: two lookups took {:?}", failing.elapsed());
    }
    // ... and hold_on_failure after the last answer they are dropped
    p.wait_pool(Duration::from_secs(10), "app", "members dropped", |v| {
        v["servers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(
        failing.elapsed() >= Duration::from_millis(1500),
        "dropped after only {:?}",
        failing.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_dropped_only_after_hold_on_failure() {
    let mut dns = TestDns::start("test.").await;
    let b = Backend::start("pod", free_addr("127.0.0.2")).await;
    dns.set_ips("app", &[b.addr.ip()], 1).await;
    let listen = free_addr("127.0.0.1");
    let cfg = dns_config(
        listen,
        dns.addr,
        "hold_on_failure = \"2s\"",
        "",
        &format!("app.test:{}", b.addr.port()),
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    let c = client();
    assert_eq!(
        get(&c, &format!("http://{listen}/")).await.0,
        StatusCode::OK
    );
    dns.stop().await;
    let stopped = Instant::now();
    p.wait_pool(Duration::from_secs(10), "app", "members dropped", |v| {
        v["servers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "dropped after only {:?}",
        stopped.elapsed()
    );
    // the pool is empty now: 503 at once
    let (st, _) = get(&c, &format!("http://{listen}/")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
}

/// A reload keeps the DNS watches of unchanged entries (members and timers: no
/// lookup because of it) and resolves a new entry at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_unchanged_dns_watches_and_resolve_new_entries_at_once() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 3600).await;
    dns.set_ips("other", &[b.addr.ip()], 3600).await;
    let listen = free_addr("127.0.0.1");
    // TTLs are clamped to max_ttl = 30s: no lookup is due during the test
    let base = dns_config(listen, dns.addr, "", "", &format!("app.test:{port}"));
    let p = Proxy::start(&base, &[listen, admin_addr_for(listen)]).await;
    let admin = admin_addr_for(listen);
    let dns_view = |name: &'static str| async move {
        let (_, body) = get(&client(), &format!("http://{admin}/stats;json")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["dns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"].as_str().unwrap().starts_with(name))
            .cloned()
    };
    let first = dns_view("app.test").await.expect("app.test is watched");
    assert_eq!(first["members"].as_array().unwrap().len(), 2);
    let lookups = first["lookups"].as_u64().unwrap();
    for i in 0..10 {
        // each version changes something else: a pool's connect timeout
        let text = base.replace(
            "connect_timeout = \"500ms\"",
            &format!("connect_timeout = \"{}ms\"", 500 + i),
        );
        std::fs::write(&p.config, text).unwrap();
        let (st, body) = admin_post(admin, "/api/reload", "").await;
        assert_eq!(st, 200, "{body}");
    }
    let after = dns_view("app.test").await.unwrap();
    assert_eq!(
        after["lookups"].as_u64().unwrap(),
        lookups,
        "reloads re-resolved: {after}"
    );
    assert_eq!(after["members"], first["members"]);
    let seen = tally(&bodies(&client(), &format!("http://{listen}/"), 20).await);
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A new entry is resolved at once, not after min_ttl or a TTL.
    let with_other = base.replace(
        "  [[pool.server]]\n",
        &format!("  [[pool.server]]\n  address = \"other.test:{port}\"\n  [[pool.server]]\n"),
    );
    std::fs::write(&p.config, with_other).unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(o) = dns_view("other.test").await {
            if o["lookups"].as_u64().unwrap() >= 1 {
                assert_eq!(o["members"].as_array().unwrap().len(), 1, "{o}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the new entry was not resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reload with other resolver settings restarts every watch; the rows of the
/// entries it drops leave `/stats;json` and their `rampart_dns_*` series leave
/// `/metrics`, and so do all of them after a reload to a config with no DNS
/// entry. Before, a new (or no) resolver emptied the running watches before the
/// stopped ones were collected, and their rows stayed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_that_change_the_resolver_remove_the_rows_of_dropped_names() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip()], 3600).await;
    dns.set_ips("other", &[b.addr.ip()], 3600).await;
    let listen = free_addr("127.0.0.1");
    let admin = admin_addr_for(listen);
    let base = dns_config(listen, dns.addr, "", "", &format!("app.test:{port}"));
    let p = Proxy::start(&base, &[listen, admin]).await;
    let names = || async move {
        let (_, body) = admin_get(admin, "/stats;json").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut names: Vec<String> = v["dns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let dns_series = || async move {
        let (_, m) = admin_get(admin, "/metrics").await;
        m.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with("rampart_dns_"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let reload = |text: String| {
        let path = p.config.clone();
        async move {
            std::fs::write(&path, text).unwrap();
            let (st, body) = admin_post(admin, "/api/reload", "").await;
            assert_eq!(st, 200, "{body}");
        }
    };
    wait_until(Duration::from_secs(5), "app.test watched", || async move {
        names().await.iter().any(|n| n.starts_with("app.test"))
    })
    .await;
    assert!(
        dns_series().await.iter().any(|l| l.contains("app.test")),
        "{:?}",
        dns_series().await
    );
    // another resolver setting, and the pool's name swapped
    let swapped = base
        .replace(
            "timeout = \"500ms\"\nmin_ttl",
            "timeout = \"600ms\"\nmin_ttl",
        )
        .replace(&format!("app.test:{port}"), &format!("other.test:{port}"));
    assert!(swapped.contains("600ms") && swapped.contains("other.test"));
    reload(swapped).await;
    wait_until(
        Duration::from_secs(5),
        "only the new name has a row",
        || async move {
            let after = names().await;
            after.len() == 1 && after[0].starts_with("other.test")
        },
    )
    .await;
    let series = dns_series().await;
    assert!(!series.iter().any(|l| l.contains("app.test")), "{series:?}");
    // no DNS entry left: no rows, no series
    reload(base.replace(&format!("app.test:{port}"), &a.addr.to_string())).await;
    wait_until(Duration::from_secs(5), "no DNS rows", || async move {
        names().await.is_empty()
    })
    .await;
    assert_eq!(dns_series().await, Vec::<String>::new());
    let seen = tally(&bodies(&client(), &format!("http://{listen}/"), 5).await);
    assert_eq!(seen.len(), 1, "the static server serves: {seen:?}");
}

/// A reload that changes a pool's DNS entry (a renamed pool, or a new spelling
/// of the name: here `app.test` to `app.test.`) resolves the new entry before
/// the new config goes live, as a start does. The pool keeps members through
/// the reload even when the DNS server takes 400 ms to answer; before, it had
/// none (503) until the new entry's watch got its first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_dns_entry_serves_through_the_first_lookup() {
    let (_dns, faulty, b, p, listen) = behind_faulty_dns(30, "").await;
    let admin = admin_addr_for(listen);
    faulty
        .delay_ms
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let text = std::fs::read_to_string(&p.config).unwrap();
    let spelled = text.replace(
        &format!("app.test:{}", b.addr.port()),
        &format!("app.test.:{}", b.addr.port()),
    );
    assert_ne!(text, spelled);
    std::fs::write(&p.config, spelled).unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "pod"));
    let servers = pool_state(listen).await["servers"].clone();
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
}

/// Every server is at max_connections_per_server, a request waits in the
/// queue, and DNS adds a pod (a scale-out): the waiting request is served by
/// the new pod. Before, a waiter kept the pool it started with, never saw the
/// new member, and got 503 at queue_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_is_served_by_a_pod_dns_adds() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip()], 1).await;
    let listen = free_addr("127.0.0.1");
    let cfg = dns_config(
        listen,
        dns.addr,
        "",
        "max_connections_per_server = 1\nqueue_timeout = \"8s\"\nserver_timeout = \"30s\"",
        &format!("app.test:{port}"),
    );
    let p = Proxy::start(&cfg, &[listen, admin_addr_for(listen)]).await;
    // the only slot, held for 10 s
    let slow =
        tokio::spawn(
            async move { get(&client(), &format!("http://{listen}/slow?ms=10000")).await },
        );
    p.wait_pool(Duration::from_secs(5), "app", "the slot taken", |v| {
        v["active"].as_u64() == Some(1)
    })
    .await;
    let waiting = tokio::spawn(async move { get(&client(), &format!("http://{listen}/")).await });
    p.wait_pool(Duration::from_secs(5), "app", "a request queued", |v| {
        v["queue"].as_u64() == Some(1)
    })
    .await;
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 1).await;
    let r = waiting.await;
    let (st, body) = r.unwrap_or_else(|e| panic!("{e}: {}", p.stderr()));
    assert_eq!((st, body.as_str()), (StatusCode::OK, "pod-b"));
    slow.abort();
}

/// An operator's maint (and weight) of a DNS member survives the member
/// leaving the answer and coming back, as a pod that restarts leaves a
/// headless Service while it is not ready. Before, it came back ready and took
/// traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_in_maint_that_leaves_the_answer_comes_back_in_maint() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 1).await;
    let listen = free_addr("127.0.0.1");
    let admin = admin_addr_for(listen);
    let cfg = dns_config(listen, dns.addr, "", "", &format!("app.test:{port}"));
    let p = Proxy::start(&cfg, &[listen, admin]).await;
    let b_addr = b.addr.to_string();
    let b_of = |v: &serde_json::Value| {
        v["servers"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| s["address"] == b_addr.as_str()))
            .cloned()
    };
    p.wait_pool(Duration::from_secs(5), "app", "both members", |v| {
        b_of(v).is_some()
    })
    .await;
    let (st, body) = admin_post(
        admin,
        &format!("/api/pools/app/servers/{}", b.addr),
        "{\"state\":\"maint\",\"weight\":7}",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // pod-b leaves the answer, then comes back
    dns.set_ips("app", &[a.addr.ip()], 1).await;
    p.wait_pool(Duration::from_secs(5), "app", "pod-b gone", |v| {
        b_of(v).is_none()
    })
    .await;
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 1).await;
    let v = p
        .wait_pool(Duration::from_secs(5), "app", "pod-b back", |v| {
            b_of(v).is_some()
        })
        .await;
    let back = b_of(&v).unwrap_or_default();
    assert_eq!(back["admin"], "maint", "{back}");
    assert_eq!(back["weight"], 7, "{back}");
    let seen = tally(&bodies(&client(), &format!("http://{listen}/"), 10).await);
    assert_eq!(seen.get("pod-b"), None, "{seen:?}");
}

/// The same across a restart: the state file's maint of a DNS member that is
/// not in the answer at start-up applies when it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_maint_applies_to_a_member_that_appears_after_start() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip()], 1).await;
    let dir = temp_dir("dns-saved-maint");
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        serde_json::json!({
            "version": 1,
            "servers": [{"pool": "app", "address": b.addr.to_string(),
                         "admin": "maint", "weight": null, "health": "UP"}],
        })
        .to_string(),
    )
    .unwrap();
    let listen = free_addr("127.0.0.1");
    let admin = admin_addr_for(listen);
    let cfg = dns_config(listen, dns.addr, "", "", &format!("app.test:{port}")).replace(
        "[global]\n",
        &format!("[global]\nstate_file = \"{}\"\n", state.display()),
    );
    let p = Proxy::start(&cfg, &[listen, admin]).await;
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 1).await;
    let b_addr = b.addr.to_string();
    let v = p
        .wait_pool(Duration::from_secs(5), "app", "pod-b in the answer", |v| {
            v["servers"].as_array().is_some_and(|s| s.len() == 2)
        })
        .await;
    let back = v["servers"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["address"] == b_addr.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(back["admin"], "maint", "{back}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pod DNS adds to a serving pool ramps up over slow_start, as one that
/// comes back UP does (and as HAProxy ramps a server it resolves): it is not
/// handed its full share the moment it appears, cold caches and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_dns_adds_ramps_up_over_slow_start() {
    let dns = TestDns::start("test.").await;
    let (a, b) = two_pods().await;
    let port = a.addr.port();
    dns.set_ips("app", &[a.addr.ip()], 1).await;
    let listen = free_addr("127.0.0.1");
    let cfg = dns_config(
        listen,
        dns.addr,
        "",
        "slow_start = \"60s\"",
        &format!("app.test:{port}"),
    );
    let p = Proxy::start(&cfg, &[listen, admin_addr_for(listen)]).await;
    dns.set_ips("app", &[a.addr.ip(), b.addr.ip()], 1).await;
    p.wait_pool(Duration::from_secs(5), "app", "pod-b in the pool", |v| {
        v["servers"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    // seconds into a 60 s ramp: pod-b's share is a few percent, not half
    let seen = tally(&bodies(&client(), &format!("http://{listen}/"), 60).await);
    let to_b = seen.get("pod-b").copied().unwrap_or(0);
    assert!(to_b < 15, "pod-b took {to_b} of 60 at once: {seen:?}");
}
