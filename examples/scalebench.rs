//! How rampart's costs grow with the size of its config (bench/scale.py), in
//! process, single thread, release build, on the real types: a config is parsed,
//! a snapshot built, and then
//!
//! - `pick BALANCE N ITERS`: ITERS picks (and releases) of a server in a pool
//!   of N, through `Pool::acquire` as a request does; prints ns per pick. Under
//!   callgrind, two ITERS give the instructions of one pick.
//! - `routes KIND N ITERS`: N routes on a listener (KIND: host, wildcard,
//!   prefix), a request that matches the last one; prints ns per routing.
//! - `dns N [BALANCE]`: a pool with one DNS name of N members; one member
//!   leaves and another comes. Prints the time and the bytes allocated by what
//!   the watch does with the answer (compare, diff, share), by what the control
//!   task does with it (`Snapshot::refresh_pool`, the new snapshot), and, for
//!   comparison, by building the pool anew from it.
//! - `memory BALANCE N`: the bytes a snapshot holds for a pool of N servers,
//!   per server.
//! - `sizes`: the bytes of the future an HTTP client connection's task runs
//!   (what every idle keep-alive connection holds, with tokio's task header).
//! - `config POOLS SERVERS`: a config of POOLS pools of SERVERS servers behind as
//!   many host routes: the time to parse and check it, to build its snapshot,
//!   and to build the next one from it (what a reload does in between).
//!
//! Every figure is printed as one line `key value`.

use rampart::pool::Pool;
use rampart::rules::Priority;
use rampart::snapshot::{dns_key, Discovered, Found, FoundSet, Snapshot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts the bytes live and the bytes ever allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: as above; `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The address of member `i`: 127.1.x.y, never connected to.
fn member(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(IpAddr::V4(ip), 8000)
}

fn pool_config(balance: &str, n: usize) -> String {
    let mut s = format!(
        "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\nbalance = \"{balance}\"\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "  [[pool.server]]\n  address = \"{}\"\n",
            member(i)
        ));
    }
    s
}

fn snapshot(text: &str, discovered: &Discovered) -> Snapshot {
    let cfg = rampart::config::parse(text, "scalebench.toml").unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(&cfg, None, discovered, 1)
}

fn pick(balance: &str, n: usize, iters: usize) {
    let snap = snapshot(&pool_config(balance, n), &Discovered::default());
    let pool: &Arc<Pool> = &snap.pools[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(async {
        for k in 0..iters as u64 {
            // a hash pool's key varies as the requests' would
            let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let g = pool.acquire(key, &[], Priority::Normal).await;
            assert!(g.is_ok(), "no server picked");
        }
    });
    println!(
        "pick_ns {:.1}",
        t.elapsed().as_nanos() as f64 / iters as f64
    );
}

fn routes(kind: &str, n: usize, iters: usize) {
    let mut s = String::from(
        "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n",
    );
    for i in 0..n {
        s.push_str("  [[listener.route]]\n");
        match kind {
            "host" => s.push_str(&format!("  host = \"h{i}.example.com\"\n")),
            "wildcard" => s.push_str(&format!("  host = \"*.h{i}.example.com\"\n")),
            "prefix" => s.push_str(&format!("  path_prefix = \"/api/v{i}/\"\n")),
            other => panic!("unknown route kind {other}"),
        }
        s.push_str("  pool = \"q\"\n");
    }
    s.push_str("[[pool]]\nname = \"p\"\n  [[pool.server]]\n  address = \"127.0.0.1:9\"\n");
    s.push_str("[[pool]]\nname = \"q\"\n  [[pool.server]]\n  address = \"127.0.0.1:9\"\n");
    let snap = snapshot(&s, &Discovered::default());
    let router = &snap.listeners[0].router;
    let last = n - 1;
    let (host, path) = match kind {
        "host" => (format!("h{last}.example.com"), "/index.html".to_string()),
        "wildcard" => (
            format!("www.h{last}.example.com"),
            "/index.html".to_string(),
        ),
        _ => (
            "api.example.com".to_string(),
            format!("/api/v{last}/users/42"),
        ),
    };
    let want = router.route(Some(&host), &path);
    assert_eq!(want, Some(1), "the request must match the last route");
    let t = Instant::now();
    let mut sum = 0;
    for _ in 0..iters {
        sum += router
            .route(
                Some(std::hint::black_box(&host)),
                std::hint::black_box(&path),
            )
            .unwrap_or(0);
    }
    assert_eq!(sum, iters);
    println!(
        "route_ns {:.1}",
        t.elapsed().as_nanos() as f64 / iters as f64
    );
}

fn dns(n: usize, balance: &str) {
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\nbalance = \"{balance}\"\n  [[pool.server]]\n  address = \"svc.example:8000\"\n"
    );
    let cfg = rampart::config::parse(&text, "scalebench.toml").unwrap_or_else(|e| panic!("{e}"));
    let pc = &cfg.pools[0];
    let rampart::config::ServerAddr::Dns(name) = &pc.servers[0].address else {
        panic!("the server must be a DNS name");
    };
    let key = dns_key(pc, name);
    // the members but `skip`, sorted by address as the resolver gives them
    let found = |skip: usize| -> Vec<Found> {
        (0..=n)
            .filter(|&i| i != skip)
            .map(|i| Found {
                addr: member(i),
                weight: None,
                backup: false,
            })
            .collect()
    };
    let mut discovered = Discovered::new();
    discovered.insert(key.clone(), found(n).into());
    let snap = Snapshot::build(&cfg, None, &discovered, 1);
    let before = discovered[&key].clone();
    let old = &snap.pools[0];
    // each step five times, from the same state: the fastest run, and the
    // bytes it allocated (the same every time)
    let measure = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let (a0, t) = (ALLOCATED.load(Ordering::Relaxed), Instant::now());
                f();
                (t.elapsed(), ALLOCATED.load(Ordering::Relaxed) - a0)
            })
            .min()
            .unwrap_or_default()
    };
    // one member leaves, another comes: the resolver's records, then what
    // `Discovery::resolve` and the watch do with them (rampart::discovery)
    let mut new = FoundSet::default();
    let (answer_took, answer_allocated) = (0..5)
        .map(|_| {
            // the records' own allocation is the resolver's, not counted
            let records = found(0);
            let (a0, t) = (ALLOCATED.load(Ordering::Relaxed), Instant::now());
            let set = FoundSet::new(records);
            assert!(set != before);
            let changed = rampart::discovery::diff(&before, &set);
            let took = (t.elapsed(), ALLOCATED.load(Ordering::Relaxed) - a0);
            assert_eq!((changed.0.len(), changed.1.len()), (1, 1));
            new = set;
            took
        })
        .min()
        .unwrap_or_default();
    discovered.insert(key.clone(), new);
    // what the control task does with it (Control::apply_dns)
    let (took, allocated) = measure(&mut || {
        let r = Snapshot::refresh_pool(pc, &discovered, old, &key, &before);
        assert_eq!((r.added.len(), r.removed.len(), r.in_place), (1, 1, true));
        let next = snap.with_pool(Arc::new(r.pool));
        assert_eq!(next.pools[0].servers.len(), n);
    });
    // for comparison: the pool built anew from the same answer
    let (full_took, full_allocated) = measure(&mut || {
        let full = Snapshot::build_pool(pc, &discovered, Some(old));
        assert_eq!(full.servers.len(), n);
    });
    println!("answer_us {:.1}", answer_took.as_nanos() as f64 / 1000.0);
    println!("answer_allocated_bytes {answer_allocated}");
    println!("refresh_us {:.1}", took.as_nanos() as f64 / 1000.0);
    println!("refresh_allocated_bytes {allocated}");
    println!("rebuild_us {:.1}", full_took.as_nanos() as f64 / 1000.0);
    println!("rebuild_allocated_bytes {full_allocated}");
}

fn memory(balance: &str, n: usize) {
    let text = pool_config(balance, n);
    let cfg = rampart::config::parse(&text, "scalebench.toml").unwrap_or_else(|e| panic!("{e}"));
    let live = LIVE.load(Ordering::Relaxed);
    let snap = Snapshot::build(&cfg, None, &Discovered::default(), 1);
    let held = LIVE.load(Ordering::Relaxed) - live;
    println!("snapshot_bytes {held}");
    println!("bytes_per_server {:.0}", held as f64 / n as f64);
    drop(snap);
}

fn config(pools: usize, servers: usize) {
    let mut s = String::from(
        "[[listener]]\nname = \"l\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\npool = \"p0\"\n",
    );
    for p in 0..pools {
        s.push_str(&format!(
            "  [[listener.route]]\n  host = \"h{p}.example.com\"\n  pool = \"p{p}\"\n"
        ));
    }
    for p in 0..pools {
        s.push_str(&format!("[[pool]]\nname = \"p{p}\"\n"));
        for k in 0..servers {
            s.push_str(&format!(
                "  [[pool.server]]\n  address = \"{}\"\n",
                member(p * servers + k)
            ));
        }
    }
    let t = Instant::now();
    let cfg = rampart::config::parse(&s, "scalebench.toml").unwrap_or_else(|e| panic!("{e}"));
    println!("parse_ms {:.2}", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let first = Snapshot::build(&cfg, None, &Discovered::default(), 1);
    println!("build_ms {:.2}", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let next = Snapshot::build(&cfg, Some(&first), &Discovered::default(), 2);
    println!("rebuild_ms {:.2}", t.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(next.pools.len(), pools);
}

/// The size of what `f` returns, without calling it.
fn size_of_return<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

fn sizes() {
    use rampart::proxy::fast_path::serve;
    println!(
        "serve_tcp_bytes {}",
        size_of_return(serve::<rampart::proxy::io::ClientSocket>)
    );
    println!(
        "serve_tls_bytes {}",
        size_of_return(serve::<Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let num = |i: usize| -> usize {
        arg(i)
            .parse()
            .unwrap_or_else(|_| panic!("argument {i}: a number"))
    };
    match arg(0) {
        "pick" => pick(arg(1), num(2), num(3)),
        "routes" => routes(arg(1), num(2), num(3)),
        "dns" => dns(num(1), args.get(2).map_or("round_robin", String::as_str)),
        "memory" => memory(arg(1), num(2)),
        "config" => config(num(1), num(2)),
        "sizes" => sizes(),
        _ => {
            eprintln!(
                "usage: scalebench pick BALANCE N ITERS | routes KIND N ITERS | dns N [BALANCE] | memory BALANCE N | config POOLS SERVERS | sizes"
            );
            std::process::exit(2);
        }
    }
}
