//! The HAProxy importer on small configs: what each one must (not) become.

use super::import;
use super::tokens::{duration, rate_text, stick, words};
use crate::import::{Entry, Fidelity};

const DEFAULTS: &str = "defaults
  mode http
  timeout connect 1s
  timeout client 1s
  timeout server 1s
";

/// The import of `body` after an http `defaults` section.
fn run(body: &str) -> (toml::Value, Vec<Entry>) {
    let im = import(&format!("{DEFAULTS}{body}"), "test.cfg");
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    (cfg, im.report)
}

fn array(v: &toml::Value, k: &str) -> Vec<toml::Value> {
    v.get(k)
        .and_then(|x| x.as_array())
        .cloned()
        .unwrap_or_default()
}

/// The listener whose first bind address is `addr`.
fn on(cfg: &toml::Value, addr: &str) -> toml::Value {
    array(cfg, "listener")
        .into_iter()
        .find(|l| l["bind"][0].as_str() == Some(addr))
        .unwrap_or_else(|| panic!("no listener on {addr}: {cfg:#?}"))
}

fn pool(cfg: &toml::Value, name: &str) -> toml::Value {
    array(cfg, "pool")
        .into_iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no pool {name}: {cfg:#?}"))
}

fn reported(report: &[Entry], directive: &str, f: Fidelity) -> bool {
    report
        .iter()
        .any(|e| e.directive == directive && e.fidelity == f)
}

const BACKEND_B: &str = "backend b
  server s1 10.0.0.1:80
";

#[test]
fn tls_binds_with_different_certificates_are_listeners_of_their_own() {
    let (cfg, _) = run(&format!(
        "frontend f
  bind :443 ssl crt /nonexistent/a.pem
  bind :8443 ssl crt /nonexistent/b.pem
  default_backend b
{BACKEND_B}"
    ));
    assert_eq!(array(&cfg, "listener").len(), 2, "{cfg:#?}");
    assert_eq!(
        on(&cfg, "0.0.0.0:443")["tls"]["cert"][0].as_str(),
        Some("/nonexistent/a.pem")
    );
    assert_eq!(
        on(&cfg, "0.0.0.0:8443")["tls"]["cert"][0].as_str(),
        Some("/nonexistent/b.pem")
    );
}

#[test]
fn a_ca_file_without_verify_asks_for_no_client_certificate() {
    let (cfg, _) = run(&format!(
        "frontend f
  bind :443 ssl crt /nonexistent/a.pem ca-file /nonexistent/ca.pem crl-file /nonexistent/crl.pem
  bind :8443 ssl crt /nonexistent/a.pem ca-file /nonexistent/ca.pem verify optional crl-file crl.pem
  default_backend b
{BACKEND_B}"
    ));
    let l443 = on(&cfg, "0.0.0.0:443");
    assert!(l443["tls"].get("client_ca").is_none(), "{l443:#?}");
    assert!(l443["tls"].get("client_crl").is_none(), "{l443:#?}");
    assert!(l443["tls"].get("client_auth").is_none(), "{l443:#?}");
    let l8443 = on(&cfg, "0.0.0.0:8443");
    assert_eq!(
        l8443["tls"]["client_ca"].as_str(),
        Some("/nonexistent/ca.pem")
    );
    assert_eq!(l8443["tls"]["client_auth"].as_str(), Some("optional"));
    assert_eq!(l8443["tls"]["client_crl"].as_str(), Some("crl.pem"));
}

#[test]
fn a_servers_crl_file_is_its_pools_crl_where_it_verifies() {
    let (cfg, _) = run("global
  ca-base /etc/ssl/ca
frontend f
  bind :80
  default_backend b
backend b
  server s1 10.0.0.1:443 ssl verify required ca-file ca.pem crl-file crl.pem
backend c
  server s1 10.0.0.2:443 ssl verify none crl-file crl.pem
");
    let pools = array(&cfg, "pool");
    let b = pools
        .iter()
        .find(|p| p["name"].as_str() == Some("b"))
        .unwrap();
    assert_eq!(
        b["tls"]["crl"].as_str(),
        Some("/etc/ssl/ca/crl.pem"),
        "{b:#?}"
    );
    assert_eq!(
        b["tls"]["ca"].as_str(),
        Some("/etc/ssl/ca/ca.pem"),
        "{b:#?}"
    );
    // HAProxy reads no CRL where it verifies nothing; rampart refuses one there
    let c = pools
        .iter()
        .find(|p| p["name"].as_str() == Some("c"))
        .unwrap();
    assert!(c["tls"].get("crl").is_none(), "{c:#?}");
}

#[test]
fn crt_without_ssl_is_plain_text() {
    let (cfg, report) = run(&format!(
        "frontend f
  bind :8080 crt /nonexistent/a.pem
  default_backend b
{BACKEND_B}"
    ));
    assert!(on(&cfg, "0.0.0.0:8080").get("tls").is_none(), "{cfg:#?}");
    assert!(reported(
        &report,
        "bind :8080 crt /nonexistent/a.pem",
        Fidelity::Approximated
    ));
}

#[test]
fn servers_that_differ_on_ssl_are_not_all_made_tls() {
    let (cfg, report) = run("backend b
  server s1 10.0.0.1:443 ssl verify none
  server s2 10.0.0.2:80
");
    let b = pool(&cfg, "b");
    let servers = array(&b, "server");
    assert_eq!(servers.len(), 1, "{b:#?}");
    assert_eq!(servers[0]["address"].as_str(), Some("10.0.0.1:443"));
    assert!(reported(
        &report,
        "server s2 10.0.0.2:80",
        Fidelity::Unsupported
    ));
}

#[test]
fn weight_0_and_disabled_take_no_traffic() {
    let (cfg, _) = run("backend b
  server s1 10.0.0.1:80 weight 0
  server s2 10.0.0.2:80 disabled
  server s3 10.0.0.3:80 weight 300
  server s4 10.0.0.4:80
");
    let servers = array(&pool(&cfg, "b"), "server");
    assert_eq!(servers[0]["weight"].as_integer(), Some(0));
    assert_eq!(servers[1]["weight"].as_integer(), Some(0));
    assert_eq!(servers[2]["weight"].as_integer(), Some(256));
    assert!(servers[3].get("weight").is_none());
}

#[test]
fn only_servers_with_check_are_checked() {
    let (cfg, _) = run("defaults
  mode http
  timeout connect 1s
  timeout client 1s
  timeout server 1s
  timeout check 7s
backend b
  option httpchk GET /h
  timeout check 3s
  server s1 10.0.0.1:80 inter 2s fall 3
backend c
  server s1 10.0.0.1:80 check
");
    assert!(pool(&cfg, "b").get("health").is_none(), "{cfg:#?}");
    assert_eq!(pool(&cfg, "c")["health"]["timeout"].as_str(), Some("7s"));
}

#[test]
fn health_settings_of_backends_without_check_are_not_reported_as_mapped() {
    let (_, report) = run("defaults
  mode http
  timeout connect 1s
  timeout client 1s
  timeout server 1s
  timeout check 7s
  option httpchk GET /d
backend b
  option httpchk GET /h
  http-check expect status 200
  timeout check 3s
  server s1 10.0.0.1:80 inter 2s fall 3
defaults
  mode http
  timeout check 5s
backend c
  timeout check 4s
  server s1 10.0.0.1:80 check inter 2s
backend d
  server s1 10.0.0.2:80
");
    // b has no server with check: HAProxy checks nothing there, nor does rampart
    for line in [
        "timeout check 7s",
        "option httpchk GET /d",
        "option httpchk GET /h",
        "http-check expect status 200",
        "timeout check 3s",
        "server s1 10.0.0.1:80 inter 2s fall 3",
    ] {
        assert!(
            reported(&report, line, Fidelity::Approximated),
            "{line}: {report:#?}"
        );
    }
    let s1 = report
        .iter()
        .find(|e| e.directive == "server s1 10.0.0.1:80 inter 2s fall 3")
        .unwrap();
    assert!(!s1.note.contains("→ the pool's health"), "{s1:#?}");
    assert!(s1.note.contains("`check`"), "{s1:#?}");
    // c is checked: its lines, and the defaults it follows, hold
    for line in [
        "timeout check 5s",
        "timeout check 4s",
        "server s1 10.0.0.1:80 check inter 2s",
    ] {
        assert!(
            reported(&report, line, Fidelity::Mapped),
            "{line}: {report:#?}"
        );
    }
}

#[test]
fn option_httpchk_in_a_frontend_is_ignored_as_haproxy_ignores_it() {
    let (cfg, report) = run("frontend f
  bind :80
  option httpchk GET /x
  default_backend b
backend b
  server s1 10.0.0.1:80 check
");
    let b = pool(&cfg, "b");
    assert_eq!(b["health"]["kind"].as_str(), Some("tcp"), "{b:#?}");
    assert!(reported(
        &report,
        "option httpchk GET /x",
        Fidelity::Approximated
    ));
}

#[test]
fn log_format_in_a_header_value_is_refused_and_percent_percent_is_one() {
    let (cfg, report) = run(&format!(
        "frontend f
  bind :80
  http-request set-header X-Host %H
  http-response set-header X-P 100%%
  default_backend b
{BACKEND_B}"
    ));
    assert!(reported(
        &report,
        "http-request set-header X-Host %H",
        Fidelity::Unsupported
    ));
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    assert!(
        !rules.iter().any(|r| r.get("set_header").is_some()),
        "{rules:#?}"
    );
    assert!(
        rules.iter().any(|r| r
            .get("response_set_header")
            .and_then(|h| h.get("X-P"))
            .and_then(|v| v.as_str())
            == Some("100%")),
        "{rules:#?}"
    );
    assert_eq!(
        super::rules::log_format_literal("a%%b").as_deref(),
        Some("a%b")
    );
    assert_eq!(super::rules::log_format_literal("%[src]"), None);
    assert_eq!(super::rules::log_format_literal("50%"), None);
}

#[test]
fn acl_lines_after_the_rule_that_uses_the_name_count() {
    let (cfg, _) = run("frontend f
  bind :80
  acl a path_beg /a
  use_backend b if a
  acl a path_beg /c
  default_backend d
backend b
  server s1 10.0.0.1:80
backend d
  server s1 10.0.0.2:80
");
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let to_b: Vec<&str> = rules
        .iter()
        .filter(|r| r.get("pool").and_then(|p| p.as_str()) == Some("b"))
        .filter_map(|r| r.get("path_prefix").and_then(|p| p.as_str()))
        .collect();
    assert_eq!(to_b, ["/a", "/c"], "{rules:#?}");
}

#[test]
fn huge_numbers_are_refused_not_overflowed() {
    assert_eq!(duration("99999999999999999d"), None);
    assert_eq!(duration("2m").as_deref(), Some("120s"));
    assert_eq!(rate_text(u64::MAX, 7), None);
    assert_eq!(rate_text(50, 10), Some(("5/s".to_string(), true)));
    let st = stick(&words("stick-table type ip size 18446744073709552k"));
    assert_eq!(st.size, None);
    let (_, report) = run(&format!(
        "frontend f
  bind :80
  timeout client 99999999999999999d
  default_backend b
{BACKEND_B}"
    ));
    assert!(reported(
        &report,
        "timeout client 99999999999999999d",
        Fidelity::Unsupported
    ));
}

/// X-Forwarded-* that rampart writes: setting one is left out (approximated),
/// deleting X-Forwarded-For is kept (it drops a client's forged chain), and
/// other X-Forwarded- names are ordinary headers.
#[test]
fn forwarded_headers_rampart_writes_are_left_out_and_a_delete_of_xff_is_kept() {
    let (cfg, report) = run(&format!(
        "frontend f
  bind :80
  http-request set-header X-Forwarded-Proto https
  http-request del-header X-Forwarded-For
  http-request set-header X-Forwarded-Port 443
  default_backend b
{BACKEND_B}"
    ));
    assert!(reported(
        &report,
        "http-request set-header X-Forwarded-Proto https",
        Fidelity::Approximated
    ));
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let has = |key: &str, name: &str| {
        rules.iter().any(|r| match r.get(key) {
            Some(toml::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(name)),
            Some(toml::Value::Table(t)) => t.contains_key(name),
            _ => false,
        })
    };
    assert!(!has("set_header", "X-Forwarded-Proto"), "{rules:#?}");
    assert!(has("del_header", "X-Forwarded-For"), "{rules:#?}");
    assert!(has("set_header", "X-Forwarded-Port"), "{rules:#?}");
}

#[test]
fn a_tracked_source_keeps_haproxys_ipv6_granularity() {
    let frontend = |track: &str| {
        run(&format!(
            "frontend f
  bind :80
  stick-table type ipv6 size 100k expire 30s store http_req_rate(10s)
  http-request track-sc0 {track}
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 50 }}
  default_backend b
{BACKEND_B}"
        ))
    };
    // src: each IPv6 address apart, as HAProxy counts
    let (cfg, _) = frontend("src");
    let rl = &array(&cfg, "rate_limit")[0];
    assert_eq!(rl["key"].as_str(), Some("client_ip"), "{rl:#?}");
    assert_eq!(rl["ipv6_prefix"].as_integer(), Some(128), "{rl:#?}");
    // src,ipmask(32,64): a /64 per IPv6 client
    let (cfg, _) = frontend("src,ipmask(32,64)");
    let rl = &array(&cfg, "rate_limit")[0];
    assert_eq!(rl["key"].as_str(), Some("client_ip"), "{rl:#?}");
    assert_eq!(rl["ipv6_prefix"].as_integer(), Some(64), "{rl:#?}");
    // an IPv4 mask rampart cannot keep: not mapped
    let (cfg, report) = frontend("src,ipmask(24,64)");
    assert!(array(&cfg, "rate_limit").is_empty(), "{cfg:#?}");
    assert!(
        report
            .iter()
            .any(|e| e.directive.contains("ipmask(24,64)") && e.fidelity == Fidelity::Unsupported),
        "{report:#?}"
    );
}
