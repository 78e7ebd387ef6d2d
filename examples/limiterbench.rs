//! The cost of one rate-limit check (bench/policy.py): `Limiter::admit` on one
//! key, and on keys drawn from 1,000,000 distinct ones (max_keys 1,000,000, so
//! all are held), nanoseconds per check, single thread, release build. Then
//! one key checked from two threads at once: `key = "all"` (one word, stepped
//! by compare-and-swap) beside a client_ip key of one client (one entry
//! behind a shard's lock, as `key = "all"` was kept before).

use rampart::config::{KeyPart, RateLimitConfig};
use rampart::ratelimit::Limiter;
use rampart::rules::RequestView;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Req(IpAddr);

impl RequestView for Req {
    fn method(&self) -> &str {
        "GET"
    }
    fn host(&self) -> Option<&str> {
        None
    }
    fn target(&self) -> &str {
        "/"
    }
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn src(&self) -> IpAddr {
        self.0
    }
}

fn limiter(max_keys: usize) -> Limiter {
    keyed(vec![KeyPart::ClientIp], max_keys)
}

fn keyed(key: Vec<KeyPart>, max_keys: usize) -> Limiter {
    Limiter::new(
        RateLimitConfig {
            name: "bench".into(),
            key,
            rate: Some((1_000_000_000, Duration::from_secs(1))),
            burst: 1_000_000,
            quota: None,
            max_keys,
            ipv6_prefix: 64,
            tiers: vec![],
        },
        Arc::default(),
        None,
    )
}

fn ip(i: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32 | (i & 0x00ff_ffff)).to_be_bytes())
}

fn main() {
    let n = 5_000_000u64;
    let one = limiter(100_000);
    let req = Req(ip(1));
    let t = Instant::now();
    for i in 0..n {
        let _ = std::hint::black_box(one.admit(&req, i, || 0));
    }
    let per_one = t.elapsed().as_nanos() as f64 / n as f64;

    let many = limiter(1_000_000);
    let reqs: Vec<Req> = (0..1_000_000u32).map(|i| Req(ip(i))).collect();
    for (i, r) in reqs.iter().enumerate() {
        let _ = many.admit(r, i as u64, || 0);
    }
    let held = many.store.len();
    let mut x: u32 = 12345;
    let t = Instant::now();
    for i in 0..n {
        // a cheap pseudo-random walk over the million keys
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let r = &reqs[(x % 1_000_000) as usize];
        let _ = std::hint::black_box(many.admit(r, 1_000_000 + i, || 0));
    }
    let per_many = t.elapsed().as_nanos() as f64 / n as f64;
    println!("one key:                         {per_one:.0} ns per check");
    println!("1,000,000 keys ({held} held): {per_many:.0} ns per check");

    // one key from two threads at once: wall time over every check made
    let two = |l: Limiter| {
        let l = Arc::new(l);
        let t = Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let req = Req(ip(1));
                    for i in 0..n / 2 {
                        let _ = std::hint::black_box(l.admit(&req, i, || 0));
                    }
                })
            })
            .collect();
        for h in threads {
            let _ = h.join();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let all = two(keyed(vec![KeyPart::All], 100_000));
    let locked = two(keyed(vec![KeyPart::ClientIp], 100_000));
    println!("one key, 2 threads, key = \"all\": {all:.0} ns per check");
    println!("one key, 2 threads, one client:  {locked:.0} ns per check (a shard's lock)");
}
