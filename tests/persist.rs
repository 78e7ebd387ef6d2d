//! Persistence by a cookie (`[pool.cookie]`, HAProxy's `cookie SRV insert
//! indirect nocache`), through real sockets: the cookie set on the first
//! answer keeps the client on its server, over HTTP/1.1 and h2c; a draining
//! server keeps its clients, one in maintenance gives them up; a persistent
//! request waits for its full server rather than go to a free one. The one
//! race sockets cannot order (a slot kept for such waiters, and the last of
//! them gone before it looked again) is driven on the pool the proxy builds
//! from the same config, one step at a time.

mod common;

use common::*;
use hyper::{header, Request, StatusCode};
use rampart::rules::Priority;
use rampart::snapshot::Snapshot;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

/// A config whose pool `api` has `pool_extra` and the servers `(name,
/// address)`.
fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    pool_extra: &str,
    servers: &[(&str, SocketAddr)],
) -> String {
    let mut s = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"api\"\n  [listener.http2]\n[[pool]]\nname = \"api\"\n{pool_extra}\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "  [[pool.server]]\n  address = \"{addr}\"\n  name = \"{name}\"\n"
        ));
    }
    s
}

/// Backends named `names` behind a proxy whose pool has `pool_extra` (its
/// config then `edit`ed): the backends, the proxy's listener and admin
/// addresses, and the proxy.
async fn start(
    names: &[&str],
    pool_extra: &str,
    edit: impl FnOnce(String) -> String,
) -> (Vec<Backend>, SocketAddr, SocketAddr, Proxy) {
    let mut s = Vec::new();
    for n in names {
        s.push(Backend::start(n, free_addr("127.0.0.1")).await);
    }
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let servers: Vec<(&str, SocketAddr)> = s.iter().map(|b| (b.name.as_str(), b.addr)).collect();
    let cfg = edit(config(listen, admin, pool_extra, &servers));
    let p = Proxy::start(&cfg, &[listen]).await;
    (s, listen, admin, p)
}

/// A GET of `/` with these `Cookie` fields: (status, the server that
/// answered, its `Set-Cookie` and `Cache-Control` fields).
async fn get_with(
    c: &Client,
    listen: SocketAddr,
    path: &str,
    cookies: &[&str],
) -> (StatusCode, String, Vec<String>, Vec<String>) {
    let mut req = Request::get(format!("http://{listen}{path}"));
    for v in cookies {
        req = req.header(header::COOKIE, *v);
    }
    let (resp, body) = send(c, req.body(empty()).unwrap()).await;
    let all = |name| {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    (
        resp.status(),
        String::from_utf8_lossy(&body).into_owned(),
        all(header::SET_COOKIE),
        all(header::CACHE_CONTROL),
    )
}

/// `get_with` with one `Cookie` field, in a task of its own.
fn in_flight(
    c: &Client,
    listen: SocketAddr,
    path: &'static str,
    cookie: &str,
) -> tokio::task::JoinHandle<(StatusCode, String, Vec<String>, Vec<String>)> {
    let (c, cookie) = (c.clone(), cookie.to_string());
    tokio::spawn(async move { get_with(&c, listen, path, &[&cookie]).await })
}

/// `f` polled once, in this task: its output if it was ready.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match Pin::new(&mut *f).poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// The value a `Set-Cookie: SRV=...; ...` gives.
fn value(set_cookie: &[String]) -> String {
    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    let v = set_cookie[0].strip_prefix("SRV=").expect("SRV=");
    v.split(';').next().unwrap().to_string()
}

/// The `Cookie` field the backend got last.
fn cookie_seen(b: &Backend) -> Option<String> {
    let h = b.stats.last_headers.lock().unwrap().clone()?;
    let all: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (!all.is_empty()).then(|| all.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_keeps_a_client_on_its_server() {
    let (s, listen, _, _p) = start(
        &["s1", "s2", "s3"],
        "  [pool.cookie]\n  name = \"SRV\"\n",
        |c| c,
    )
    .await;
    let by_name = |n: &str| s.iter().find(|b| b.name == n).unwrap();

    for c in [client(), h2c_client()] {
        // without the cookie: round robin, and each answer sets it
        let mut values = std::collections::HashMap::new();
        for _ in 0..3 {
            let (st, server, set, cache) = get_with(&c, listen, "/", &[]).await;
            assert_eq!(st, StatusCode::OK);
            assert!(set[0].ends_with("; Path=/; HttpOnly"), "{set:?}");
            assert_eq!(cache, ["private"]);
            values.insert(server, value(&set));
        }
        assert_eq!(values.len(), 3, "round robin: {values:?}");
        // with it: the same server every time, the cookie not set again, and
        // the server never sees it (the client's other cookies it does)
        let v1 = values["s1"].clone();
        for _ in 0..9 {
            let cookie = format!("a=1; SRV={v1}; b=2");
            let (st, server, set, cache) = get_with(&c, listen, "/", &[&cookie]).await;
            assert_eq!((st, server.as_str()), (StatusCode::OK, "s1"));
            assert!(set.is_empty() && cache.is_empty(), "{set:?} {cache:?}");
            assert_eq!(cookie_seen(by_name("s1")).as_deref(), Some("a=1; b=2"));
        }
        // alone in its field, it leaves no Cookie field behind
        let (_, server, _, _) = get_with(&c, listen, "/", &[&format!("SRV={v1}")]).await;
        assert_eq!(server, "s1");
        assert_eq!(cookie_seen(by_name("s1")), None);
        // a value no server has: balanced, and set to the server's
        let (_, server, set, _) = get_with(&c, listen, "/", &["SRV=0123456789abcdef"]).await;
        assert_eq!(value(&set), values[&server]);
        // a server's own cookie of the name goes (rampart owns it, as
        // HAProxy's insert does); its other cookies stay
        let (_, server, set, _) = get_with(&c, listen, "/set-cookie", &[]).await;
        assert_eq!(
            set,
            [
                "session=abc".to_string(),
                format!("SRV={}; Path=/; HttpOnly", values[&server])
            ]
        );
        let cookie = format!("SRV={v1}");
        let (_, server, set, _) = get_with(&c, listen, "/set-cookie", &[&cookie]).await;
        assert_eq!(
            (server.as_str(), set),
            ("s1", vec!["session=abc".to_string()])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_keeps_its_clients_and_one_in_maintenance_gives_them_up() {
    // s2's value is written in the config (HAProxy's `cookie web2`)
    let (_s, listen, admin, _p) = start(
        &["s1", "s2"],
        "  [pool.cookie]\n  name = \"SRV\"\n  nocache = false\n  httponly = false\n",
        |c| c.replace("name = \"s2\"\n", "name = \"s2\"\n  cookie = \"web2\"\n"),
    )
    .await;
    let c = client();
    let on_s2 = ["SRV=web2"];

    let (_, server, _, _) = get_with(&c, listen, "/", &on_s2).await;
    assert_eq!(server, "s2");
    rampart_cli(admin, &["server", "drain", "api", "s2"]);
    for _ in 0..6 {
        // new clients go to s1 alone; s2's own stay with it
        let (_, server, set, cache) = get_with(&c, listen, "/", &[]).await;
        assert_eq!(server, "s1");
        assert!(!set[0].contains("HttpOnly") && cache.is_empty(), "{set:?}");
        let (_, server, set, _) = get_with(&c, listen, "/", &on_s2).await;
        assert_eq!(server, "s2");
        assert!(set.is_empty());
    }
    rampart_cli(admin, &["server", "maint", "api", "s2"]);
    let (_, server, set, _) = get_with(&c, listen, "/", &on_s2).await;
    assert_eq!(server, "s1");
    let v1 = value(&set);
    assert_ne!(v1, "web2");
    // and the new value keeps it on s1 once s2 is back
    rampart_cli(admin, &["server", "ready", "api", "s2"]);
    for _ in 0..4 {
        let (_, server, set, _) = get_with(&c, listen, "/", &[&format!("SRV={v1}")]).await;
        assert_eq!(server, "s1");
        assert!(set.is_empty());
    }
    let (_, server, _, _) = get_with(&c, listen, "/", &on_s2).await;
    assert_eq!(server, "s2");
}

/// Under `max_connections_per_server`, a request whose cookie names a full
/// server waits in the queue for it, as HAProxy queues it on its server,
/// while a free server is there: a session's requests are not spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_request_waits_for_its_full_server() {
    let (s, listen, admin, p) = start(
        &["s1", "s2"],
        "max_connections_per_server = 1\nqueue_timeout = \"10s\"\nshed_after = \"50ms\"\n  [pool.cookie]\n  name = \"SRV\"\n",
        |c| c,
    )
    .await;
    let c = client();
    // s1's value, from an answer of s1
    let v1 = loop {
        let (_, server, set, _) = get_with(&c, listen, "/", &[]).await;
        if server == "s1" {
            break value(&set);
        }
    };
    let cookie = format!("SRV={v1}");
    let slow = in_flight(&c, listen, "/slow?ms=1500", &cookie);
    wait_for(
        Duration::from_secs(5),
        "s1 busy with the slow request",
        || s[0].stats.active.load(Ordering::SeqCst) == 1,
    )
    .await;
    let before = s[1].requests();
    let (st, server, set, _) = get_with(&c, listen, "/", &[&cookie]).await;
    assert_eq!((st, server.as_str()), (StatusCode::OK, "s1"));
    assert!(set.is_empty());
    assert_eq!(slow.await.unwrap().1, "s1");
    // it waited: s2 was free all along, and s1 never had two at once
    assert_eq!(s[1].requests(), before, "s2 got the persistent request");
    assert_eq!(s[0].stats.max_active.load(Ordering::SeqCst), 1);

    // while one waits for s1, others are not held up: a request without the
    // cookie goes to s2 at once (the waiter is not in the pool's queue, in
    // which it made every newcomer queue and, with shed_after, shed)
    let slow = in_flight(&c, listen, "/slow?ms=3000", &cookie);
    wait_for(Duration::from_secs(5), "s1 busy again", || {
        s[0].stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let waiter = in_flight(&c, listen, "/", &cookie);
    let s1 = s[0].addr;
    p.wait_pool(
        Duration::from_secs(5),
        "api",
        "one request queued on s1",
        |v| server_in(v, s1)["queued"] == 1,
    )
    .await;
    let (st, server, _, _) = get_with(&c, listen, "/", &[]).await;
    assert_eq!((st, server.as_str()), (StatusCode::OK, "s2"));
    assert_eq!(
        s[0].stats.active.load(Ordering::SeqCst),
        1,
        "s1's slow request ended first"
    );
    assert_eq!(waiter.await.unwrap().1, "s1");
    assert_eq!(slow.await.unwrap().1, "s1");

    // a draining s1, full, with s2 out: its persistent request waits for it
    // (s1 counts as no server in service, yet it takes its own clients)
    rampart_cli(admin, &["server", "maint", "api", "s2"]);
    rampart_cli(admin, &["server", "drain", "api", "s1"]);
    let slow = in_flight(&c, listen, "/slow?ms=500", &cookie);
    wait_for(Duration::from_secs(5), "s1 busy, draining", || {
        s[0].stats.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let (st, server, _, _) = get_with(&c, listen, "/", &[&cookie]).await;
    assert_eq!((st, server.as_str()), (StatusCode::OK, "s1"));
    assert_eq!(slow.await.unwrap().1, "s1");
}

/// A slot freed on a server that requests wait for by their cookie is kept
/// for them: the pool's queue is offered it, but no waiter there takes it.
/// When the last of them leaves without taking it (its client gone before
/// its request looked again), the queue is woken, and a request waiting
/// there takes the slot at once, rather than at the next release elsewhere
/// or at its `queue_timeout`.
///
/// Through sockets this is a race a test cannot order: the slot must be
/// freed after the pinned request's client went but before its connection
/// noticed, and the queue's waiter must look in between. The proxy notices
/// a client's close or reset before it polls that client's request again
/// (hyper's HTTP/1 dispatcher reads first; rampart's HTTP/2 connection reads
/// before it runs the streams woken): a client that left before the release
/// left with its server full, the ordinary release's case, and one still
/// there takes the slot. So the pool the proxy builds from this config is
/// driven here, its requests polled one step at a time, as their
/// connections' tasks would poll them.
#[tokio::test(start_paused = true)]
async fn the_last_pinned_waiter_to_leave_hands_its_free_slot_to_the_queue() {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = rampart::config::parse(
        &config(
            at(8080),
            at(9090),
            "max_connections_per_server = 1\nqueue_timeout = \"20s\"\n  [pool.cookie]\n  name = \"SRV\"\n",
            &[("s1", at(10001)), ("s2", at(10002))],
        ),
        "persist.toml",
    )
    .expect("config");
    let pool = std::sync::Arc::new(Snapshot::build_pool(
        &cfg.pools[0],
        &Default::default(),
        None,
    ));
    let id = |i: usize| pool.servers[i].id.to_string();
    let traffic = |i: usize| &pool.servers[i].state.traffic;
    // the server a request carrying s1's cookie asks for, found as the
    // proxy finds it
    let persist = pool.persist.as_ref().expect("[pool.cookie]");
    let cookie = format!("a=1; SRV={}", persist.value(0).expect("s1's value"));
    let s1 = persist
        .servers_of([cookie.as_bytes()].into_iter())
        .next()
        .expect("the cookie names a server");
    assert_eq!(id(s1), "s1");
    let normal = Priority::Normal;

    // s1 and s2 full
    let on_s1 = pool
        .acquire_in(0, &[], normal, true, Some(s1))
        .await
        .expect("s1 free");
    assert_eq!(id(on_s1.index()), "s1");
    let on_s2 = pool.acquire(0, &[], normal).await.expect("s2 free");
    assert_eq!(id(on_s2.index()), "s2");
    // a request with s1's cookie waits for s1 ...
    let mut pinned = Box::pin(pool.acquire_in(0, &[], normal, true, Some(s1)));
    assert!(poll_once(&mut pinned).await.is_none(), "s1 took two");
    assert_eq!(traffic(s1).pinned.load(Ordering::SeqCst), 1);
    // ... and one without a cookie in the pool's queue
    let mut queued = Box::pin(pool.acquire(0, &[], normal));
    assert!(poll_once(&mut queued).await.is_none(), "a server took two");
    assert_eq!(pool.shared.queue.waiting(), 1);

    // s1's slot is freed: the queue's waiter, offered it, looks first and
    // leaves it to the request pinned to s1
    drop(on_s1);
    assert!(
        poll_once(&mut queued).await.is_none(),
        "the queue's waiter took the slot kept for s1's own"
    );
    assert_eq!(traffic(s1).active.load(Ordering::SeqCst), 0);
    assert_eq!(traffic(s1).pinned.load(Ordering::SeqCst), 1);
    // whose client goes away before its request looks again
    drop(pinned);
    assert_eq!(traffic(s1).pinned.load(Ordering::SeqCst), 0);

    // the queue's waiter takes s1's slot now: not at s2's release, which
    // does not come, nor at its queue_timeout (the clock is paused: unwoken,
    // it would see these 5 seconds pass at once)
    let served = tokio::time::timeout(Duration::from_secs(5), &mut queued)
        .await
        .expect("the queue was not woken for s1's free slot")
        .expect("a slot");
    assert_eq!(id(served.index()), "s1");
    assert_eq!(pool.shared.queue.waiting(), 0);
    drop(on_s2);
}
