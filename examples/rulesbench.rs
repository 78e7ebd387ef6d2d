//! The cost of evaluating a listener's rules (bench/policy.py): the rules of
//! the listener named "policy" in the config given (the policy bench's 20: 18
//! that the request does not match, 2 that apply rate limits) on a request like
//! the bench's, nanoseconds per evaluation, single thread, release build. Under
//! callgrind (`RULESBENCH_N=10000`) it shows where the instructions of rule
//! evaluation go.
//!
//!   rulesbench CONFIG

use rampart::rules::{Outcome, RequestView};
use std::net::IpAddr;
use std::time::Instant;

/// A request as h2load sends it.
struct Req {
    headers: [(&'static str, &'static [u8]); 3],
}

impl RequestView for Req {
    fn method(&self) -> &str {
        "GET"
    }
    fn host(&self) -> Option<&str> {
        Some("127.0.0.1:19502")
    }
    fn target(&self) -> &str {
        "/"
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
    fn src(&self) -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
    fn path(&self) -> &str {
        "/"
    }
    fn bare_host(&self) -> Option<&str> {
        Some("127.0.0.1")
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: rulesbench CONFIG");
    let cfg = rampart::config::load(std::path::Path::new(&path)).expect("the bench config");
    let rules = &cfg
        .listeners
        .iter()
        .find(|l| l.name == "policy")
        .expect("a listener named \"policy\"")
        .rules;
    let req = Req {
        headers: [
            ("host", b"127.0.0.1:19502"),
            ("user-agent", b"h2load nghttp2/1.52.0"),
            ("accept", b"*/*"),
        ],
    };
    let n: u64 = std::env::var("RULESBENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let mut limits = 0u64;
    let t = Instant::now();
    for _ in 0..n {
        match std::hint::black_box(rules).evaluate(std::hint::black_box(&req)) {
            Outcome::Continue(a, _) => limits += a.limits,
            Outcome::Terminal(..) => panic!("no rule decides this request"),
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(limits, 3 * n, "both rate-limit rules matched");
    println!("20 rules: {ns:>6.0} ns per evaluation");
}
