//! Priority shedding: a saturated pool serves its queue by priority class
//! (FIFO within a class) and sheds the low classes first.

mod common;

use common::*;
use hyper::{Request, StatusCode};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The class of each request comes from its `x-class` header; `x-pool:
/// ordered` sends it to a pool of one slot and no shedding.
fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"[global]
threads = 2
access_log = "text"
[admin]
bind = "{admin}"

[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
  [[listener.rule]]
  header = {{ name = "x-class", value = "critical" }}
  priority = "critical"
  [[listener.rule]]
  header = {{ name = "x-class", value = "high" }}
  priority = "high"
  [[listener.rule]]
  header = {{ name = "x-class", value = "low" }}
  priority = "low"
  [[listener.rule]]
  header = {{ name = "x-pool", value = "ordered" }}
  pool = "ordered"

[[pool]]
name = "api"
max_connections_per_server = 20
queue_timeout = "10s"
shed_after = "100ms"
  [[pool.server]]
  address = "{backend}"

[[pool]]
name = "ordered"
max_connections_per_server = 1
queue_timeout = "20s"
  [[pool.server]]
  address = "{backend}"
"#
    )
}

fn request(url: &str, class: &str, pool: &str) -> Request<BoxReq> {
    Request::get(url)
        .header("x-class", class)
        .header("x-pool", pool)
        .body(empty())
        .unwrap()
}

/// Requests waiting in `pool`'s queue, by class, from the admin API.
async fn queued(admin: SocketAddr, pool: &str, class: &str) -> u64 {
    let v = pool_view(admin, pool).await;
    v["priority"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == class)
        .map_or(0, |c| c["queued"].as_u64().unwrap())
}

async fn wait_queued(admin: SocketAddr, pool: &str, class: &str, n: u64) {
    let what = format!("{pool}: {n} {class} waiting");
    wait_until(Duration::from_secs(10), &what, || async {
        queued(admin, pool, class).await == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_slot_goes_to_the_highest_class_first_come_first_served() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let _p = Proxy::start(&config(listen, admin, backend.addr), &[listen, admin]).await;
    let c = client();
    // one slot, held by a slow request
    let hold = {
        let c = c.clone();
        let url = format!("http://{listen}/slow?ms=1500&n=hold");
        tokio::spawn(async move { send(&c, request(&url, "normal", "ordered")).await })
    };
    wait_for(Duration::from_secs(5), "the slot taken", || {
        backend.stats.uris.lock().unwrap().len() == 1
    })
    .await;
    // queue, one at a time so their order is known: low, low, normal, critical,
    // low, critical, high
    let order = [
        ("low", "l0"),
        ("low", "l1"),
        ("normal", "n0"),
        ("critical", "c0"),
        ("low", "l2"),
        ("critical", "c1"),
        ("high", "h0"),
    ];
    let mut waiting = Vec::new();
    let mut per_class = std::collections::HashMap::<&str, u64>::new();
    for (class, n) in order {
        let c = c.clone();
        let url = format!("http://{listen}/slow?ms=20&n={n}");
        waiting.push(tokio::spawn(async move {
            send(&c, request(&url, class, "ordered")).await
        }));
        let k = per_class.entry(class).or_default();
        *k += 1;
        wait_queued(admin, "ordered", class, *k).await;
    }
    let (r, _) = hold.await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for w in waiting {
        let (r, _) = w.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let served: Vec<String> = backend
        .stats
        .uris
        .lock()
        .unwrap()
        .iter()
        .map(|u| u.rsplit('=').next().unwrap().to_string())
        .collect();
    // highest class first; within a class, first come first served
    assert_eq!(served, ["hold", "c0", "c1", "h0", "n0", "l0", "l1", "l2"]);
}

#[derive(Default)]
struct Tally {
    ok: usize,
    shed: usize,
    other: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_overloaded_low_is_shed_first_and_critical_gets_through() {
    let backend = Backend::start("b", free_addr("127.0.0.2")).await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let p = Proxy::start(&config(listen, admin, backend.addr), &[listen, admin]).await;
    // 20 slots, 60 clients that each send the next request when the last ends:
    // 10 critical, 20 normal and 30 low
    let until = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for (class, n) in [("critical", 10), ("normal", 20), ("low", 30)] {
        for _ in 0..n {
            let c = client();
            let url = format!("http://{listen}/slow?ms=100");
            workers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut shed_answer = None;
                while Instant::now() < until {
                    let (r, body) = send(&c, request(&url, class, "api")).await;
                    match r.status() {
                        StatusCode::OK => t.ok += 1,
                        StatusCode::SERVICE_UNAVAILABLE => {
                            t.shed += 1;
                            shed_answer.get_or_insert((r.headers().clone(), body));
                            // a client backs off a little before it tries again
                            // (pacing the load, not waiting for anything)
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => t.other += 1,
                    }
                }
                (class, t, shed_answer)
            }));
        }
    }
    let mut by = std::collections::HashMap::<&str, Tally>::new();
    let mut shed_answer = None;
    for w in workers {
        let (class, t, answer) = w.await.unwrap();
        let e = by.entry(class).or_default();
        e.ok += t.ok;
        e.shed += t.shed;
        e.other += t.other;
        if answer.is_some() {
            shed_answer = answer;
        }
    }
    let report = by
        .iter()
        .map(|(k, t)| format!("{k}: {} ok, {} shed, {} other", t.ok, t.shed, t.other))
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("{report}");
    let (crit, normal, low) = (&by["critical"], &by["normal"], &by["low"]);
    assert_eq!(crit.other + normal.other + low.other, 0, "{report}");
    // at least 99% of critical requests succeed (in fact all: critical is never shed)
    let crit_total = crit.ok + crit.shed;
    assert!(crit_total > 100, "{report}");
    assert!(crit.ok * 100 >= crit_total * 99, "{report}");
    // low is shed first: more of it than of normal, which outranks it
    let rate = |t: &Tally| t.shed as f64 / (t.ok + t.shed).max(1) as f64;
    assert!(low.shed > 0, "{report}");
    assert!(rate(low) > rate(normal), "{report}");
    assert!(rate(normal) >= rate(crit), "{report}");
    // the pool never had more than its 20 slots in use
    assert!(
        backend
            .stats
            .max_active
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 20,
        "{report}"
    );
    // a shed request is told to come back, and why
    let (headers, body) = shed_answer.expect("a shed answer");
    assert_eq!(headers["retry-after"], "1");
    assert!(String::from_utf8_lossy(&body).contains("shed"), "{body:?}");
    // counted by class in /metrics, and logged
    let m = admin_get(admin, "/metrics").await.1;
    let shed_metric = |class: &str| {
        metric(
            &m,
            &format!("rampart_pool_shed_total{{pool=\"api\",priority=\"{class}\"}}"),
        )
    };
    assert_eq!(
        shed_metric("low"),
        low.shed as f64,
        "{}",
        m.lines()
            .filter(|l| l.contains("priority"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(shed_metric("critical"), 0.0);
    assert!(
        metric(
            &m,
            "rampart_pool_admitted_total{pool=\"api\",priority=\"critical\"}"
        ) >= crit.ok as f64
    );
    // and on the stats page
    let page = admin_get(admin, "/stats").await.1;
    let line = page
        .split("<p class=\"prio\">")
        .nth(1)
        .expect("a queue-by-priority line on the stats page");
    assert!(
        line.contains(&format!("<b>low</b> 0 waiting, {} admitted", low.ok)),
        "{line}"
    );
    wait_for(Duration::from_secs(5), "end=shed in the access log", || {
        p.stdout().contains("end=shed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_coming_back_serves_the_queue_at_once() {
    // One slot per server; of two servers one is DOWN, so one request holds
    // the pool and the next waits. When the other server comes back UP, the
    // waiting request is served there at once, not when the slot frees.
    let up = Backend::start("up", free_addr("127.0.0.2")).await;
    let back = Backend::start("back", free_addr("127.0.0.3")).await;
    back.stats
        .health_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = http_config_at(
        listen,
        admin,
        "threads = 1",
        "max_connections_per_server = 1\nqueue_timeout = \"20s\"\n  [pool.health]\n  kind = \"http\"\n  path = \"/health\"\n  interval = \"100ms\"\n  rise = 1\n  fall = 1",
        &[(up.addr, 1), (back.addr, 1)],
    );
    let _p = Proxy::start(&text, &[listen, admin]).await;
    let healthy = |n: usize| async move {
        let (_, body) = admin_get(admin, "/api/pools/api").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["eligible"].as_u64() == Some(n as u64)
    };
    wait_until(Duration::from_secs(10), "one server UP alone", || {
        healthy(1)
    })
    .await;
    let c = client();
    let slow = {
        let c = c.clone();
        let url = format!("http://{listen}/slow?ms=10000");
        tokio::spawn(async move { get(&c, &url).await })
    };
    wait_for(Duration::from_secs(5), "the slot taken", || {
        up.requests() == 1
    })
    .await;
    let queued = {
        let c = c.clone();
        let url = format!("http://{listen}/");
        tokio::spawn(async move { get(&c, &url).await })
    };
    wait_queued(admin, "api", "normal", 1).await;
    back.stats
        .health_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let (st, body) = queued.await.unwrap();
    assert_eq!((st, body.as_str()), (StatusCode::OK, "back"));
    assert!(!slow.is_finished(), "served only once the slot was freed");
    slow.abort();
}
