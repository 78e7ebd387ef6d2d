//! The cost of evaluating a listener's rules (bench/policy.py): the 20 rules of
//! the policy bench (18 that the request does not match, 2 that apply rate
//! limits) on a request like the bench's, nanoseconds per evaluation, single
//! thread, release build. Under callgrind (`RULESBENCH_N=10000`) it shows where
//! the instructions of rule evaluation go.

use rampart::rules::{Outcome, RequestView};
use std::net::IpAddr;
use std::time::Instant;

const CONFIG: &str = r#"
[[rate_limit]]
name = "per-ip"
key = "client_ip"
rate = "100000000/s"
burst = 1000
[[rate_limit]]
name = "per-path"
key = ["client_ip", "path"]
rate = "100000000/s"
burst = 1000
[[listener]]
name = "policy"
bind = ["127.0.0.1:1"]
mode = "http"
pool = "be"
  [[listener.rule]]
  path_prefix = "/v0/"
  deny = 403
  [[listener.rule]]
  path_prefix = "/v1/"
  deny = 403
  [[listener.rule]]
  path_prefix = "/v2/"
  deny = 403
  [[listener.rule]]
  path_prefix = "/v3/"
  deny = 403
  [[listener.rule]]
  path_prefix = "/v4/"
  deny = 403
  [[listener.rule]]
  path_prefix = "/v5/"
  deny = 403
  [[listener.rule]]
  host = "h0.example.com"
  deny = 403
  [[listener.rule]]
  host = "h1.example.com"
  deny = 403
  [[listener.rule]]
  host = "h2.example.com"
  deny = 403
  [[listener.rule]]
  host = "h3.example.com"
  deny = 403
  [[listener.rule]]
  path_regex = "^/users/[0-9]+$"
  deny = 403
  [[listener.rule]]
  path = "/admin"
  deny = 403
  [[listener.rule]]
  method = ["DELETE", "PATCH"]
  deny = 405
  [[listener.rule]]
  header = { name = "x-blocked", present = true }
  deny = 403
  [[listener.rule]]
  src = ["10.0.0.0/8"]
  deny = 403
  [[listener.rule]]
  header = { name = "x-canary", value = "1" }
  pool = "be"
  [[listener.rule]]
  path_prefix = "/static/"
  pool = "be"
  [[listener.rule]]
  host = "*.internal.example"
  pool = "be"
  [[listener.rule]]
  path_prefix = "/"
  rate_limit = "per-ip"
  [[listener.rule]]
  method = ["GET"]
  rate_limit = "per-path"

[[pool]]
name = "be"
  [[pool.server]]
  address = "127.0.0.1:2"
"#;

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
    let cfg = rampart::config::parse(CONFIG, "rulesbench.toml").expect("the bench config");
    let rules = &cfg.listeners[0].rules;
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
            Outcome::Continue(a) => limits += a.limits,
            Outcome::Terminal(..) => panic!("no rule decides this request"),
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(limits, 3 * n, "both rate-limit rules matched");
    println!("20 rules: {ns:>6.0} ns per evaluation");
}
