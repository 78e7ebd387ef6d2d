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

/// `line` is in the report as unsupported, its note saying `why`.
fn refused(report: &[Entry], line: &str, why: &str) {
    let e = report
        .iter()
        .find(|e| e.directive == line)
        .unwrap_or_else(|| panic!("no {line:?} in {report:#?}"));
    assert_eq!(e.fidelity, Fidelity::Unsupported, "{line}");
    assert!(e.note.contains(why), "{line}: {}", e.note);
}

/// What the importer wrote from `cfg` (after the defaults), rampart reads.
fn readable(cfg: &str) {
    let im = import(&format!("{DEFAULTS}{cfg}"), "t.cfg");
    crate::config::parse(&im.toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
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

/// `cookie NAME insert ...` is `[pool.cookie]` with each switch as the line
/// has it (HAProxy's are off unless written; rampart's indirect, nocache and
/// httponly are on unless written), before the servers, whose values are
/// their `cookie`: all mapped, and rampart reads it so.
#[test]
fn cookie_insert_and_server_values_are_mapped_exactly() {
    let im = import(
        &format!(
            "{DEFAULTS}frontend f
  bind :80
  default_backend b
backend b
  cookie SERVERID insert indirect nocache
  server s1 10.0.0.1:80 cookie s1
  server s2 10.0.0.2:80 cookie s2
"
        ),
        "test.cfg",
    );
    assert_eq!(im.exit_code(), 0, "{:#?}", im.report);
    for line in [
        "cookie SERVERID insert indirect nocache",
        "server s1 10.0.0.1:80 cookie s1",
        "server s2 10.0.0.2:80 cookie s2",
    ] {
        assert!(reported(&im.report, line, Fidelity::Mapped), "{line}");
    }
    let table = im.toml.find("[pool.cookie]");
    assert!(
        table.is_some() && table < im.toml.find("[[pool.server]]"),
        "{}",
        im.toml
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap();
    let b = pool(&cfg, "b");
    let want: toml::Value = toml::from_str(
        r#"name = "SERVERID"
indirect = true
nocache = true
httponly = false
secure = false"#,
    )
    .unwrap();
    assert_eq!(b["cookie"], want, "{b:#?}");
    let servers = array(&b, "server");
    assert_eq!(servers[0]["cookie"].as_str(), Some("s1"));
    assert_eq!(servers[1]["cookie"].as_str(), Some("s2"));
    let loaded = crate::config::parse(&im.toml, "imported.toml")
        .unwrap_or_else(|e| panic!("{e:?}\n{}", im.toml));
    let c = loaded.pools[0].cookie.as_deref().unwrap();
    assert!(c.indirect && c.nocache, "{c:#?}");
    assert_eq!(c.attributes, "; Path=/");
    assert_eq!(c.values.len(), 2, "{c:#?}");
}

#[test]
fn cookie_insert_alone_turns_off_what_rampart_turns_on() {
    let (cfg, report) = run("backend b
  cookie X insert
  server s1 10.0.0.1:80
");
    let c = &pool(&cfg, "b")["cookie"];
    assert_eq!(c["name"].as_str(), Some("X"));
    for k in ["indirect", "nocache", "httponly", "secure"] {
        assert_eq!(c[k].as_bool(), Some(false), "{k}: {c:#?}");
    }
    assert!(reported(&report, "cookie X insert", Fidelity::Mapped));
    // HAProxy clears the cookie of a server without a value; rampart sets one
    let s1 = report
        .iter()
        .find(|e| e.directive == "server s1 10.0.0.1:80")
        .unwrap();
    assert_eq!(s1.fidelity, Fidelity::Approximated, "{s1:#?}");
    assert!(s1.note.contains("no cookie value"), "{s1:#?}");
}

/// rampart only inserts a cookie of its own: the modes that work on the
/// servers' cookie are not imported, nor the servers' values with them.
#[test]
fn cookie_rewrite_prefix_and_passive_modes_are_unsupported() {
    for mode in ["rewrite", "prefix", ""] {
        let line = format!("cookie JSESSIONID {mode}");
        let (cfg, report) = run(&format!(
            "backend b
  {line}
  server s1 10.0.0.1:80 cookie s1
"
        ));
        let b = pool(&cfg, "b");
        assert!(b.get("cookie").is_none(), "{mode}: {b:#?}");
        assert!(array(&b, "server")[0].get("cookie").is_none(), "{b:#?}");
        assert!(
            reported(&report, line.trim_end(), Fidelity::Unsupported),
            "{mode}: {report:#?}"
        );
        let s1 = report
            .iter()
            .find(|e| e.directive == "server s1 10.0.0.1:80 cookie s1")
            .unwrap();
        assert_eq!(s1.fidelity, Fidelity::Approximated, "{s1:#?}");
        assert!(s1.note.contains("cookie line is not imported"), "{s1:#?}");
    }
}

#[test]
fn dynamic_cookie_key_is_the_cookies_key_before_or_after_it() {
    let (cfg, report) = run("backend b
  dynamic-cookie-key s3cr3t
  cookie SRV insert dynamic indirect
  server s1 10.0.0.1:80
  server s2 10.0.0.2:80
");
    let c = &pool(&cfg, "b")["cookie"];
    assert_eq!(c["key"].as_str(), Some("s3cr3t"), "{c:#?}");
    assert_eq!(c["indirect"].as_bool(), Some(true), "{c:#?}");
    assert!(reported(
        &report,
        "dynamic-cookie-key s3cr3t",
        Fidelity::Mapped
    ));
    // HAProxy's hash is not rampart's: said, but the mapping holds
    let line = report
        .iter()
        .find(|e| e.directive == "cookie SRV insert dynamic indirect")
        .unwrap();
    assert_eq!(line.fidelity, Fidelity::Mapped, "{line:#?}");
    assert!(line.note.contains("balanced anew once"), "{line:#?}");
    // servers without a value take a hash of the key and their address in both
    assert!(
        reported(&report, "server s1 10.0.0.1:80", Fidelity::Mapped),
        "{report:#?}"
    );
    // no cookie line uses it (nor does HAProxy): not imported
    let (cfg, report) = run("backend b
  dynamic-cookie-key s3cr3t
  server s1 10.0.0.1:80
");
    assert!(pool(&cfg, "b").get("cookie").is_none(), "{cfg:#?}");
    assert!(
        reported(&report, "dynamic-cookie-key s3cr3t", Fidelity::Approximated),
        "{report:#?}"
    );
}

#[test]
fn a_cookie_in_defaults_is_each_following_backends_unless_it_has_its_own() {
    let (cfg, _) = run("defaults
  mode http
  cookie D insert nocache
  dynamic-cookie-key k
backend b
  server s1 10.0.0.1:80
backend c
  cookie C insert indirect
  server s1 10.0.0.2:80
");
    let b = &pool(&cfg, "b")["cookie"];
    assert_eq!(b["name"].as_str(), Some("D"), "{b:#?}");
    assert_eq!(b["nocache"].as_bool(), Some(true), "{b:#?}");
    assert_eq!(b["indirect"].as_bool(), Some(false), "{b:#?}");
    assert_eq!(b["key"].as_str(), Some("k"), "{b:#?}");
    let c = &pool(&cfg, "c")["cookie"];
    assert_eq!(c["name"].as_str(), Some("C"), "{c:#?}");
    assert_eq!(c["nocache"].as_bool(), Some(false), "{c:#?}");
    assert_eq!(c["key"].as_str(), Some("k"), "{c:#?}");
}

#[test]
fn a_server_cookie_without_a_cookie_line_is_not_imported() {
    let (cfg, report) = run("backend b
  server s1 10.0.0.1:80 cookie s1
");
    let b = pool(&cfg, "b");
    assert!(b.get("cookie").is_none(), "{b:#?}");
    assert!(array(&b, "server")[0].get("cookie").is_none(), "{b:#?}");
    let s1 = report
        .iter()
        .find(|e| e.directive == "server s1 10.0.0.1:80 cookie s1")
        .unwrap();
    assert_eq!(s1.fidelity, Fidelity::Approximated, "{s1:#?}");
    assert!(s1.note.contains("no cookie line"), "{s1:#?}");
    assert!(!s1.note.contains("→ its value"), "{s1:#?}");
}

/// A value rampart refuses (a DNS entry's, another server's, a broken one)
/// is left out, never the server; the config loads without a repair.
#[test]
fn server_values_rampart_refuses_are_left_out_not_the_servers() {
    let (cfg, report) = run("backend b
  cookie SRV insert indirect nocache
  server s1 10.0.0.1:80 cookie a
  server s2 10.0.0.2:80 cookie a backup
  server s3 app.example:80 cookie c
  server s4 10.0.0.4:80 cookie a,b
");
    let servers = array(&pool(&cfg, "b"), "server");
    assert_eq!(servers.len(), 4, "{servers:#?}");
    // a shared value is kept: rampart lets a backup share its server's
    assert_eq!(servers[0]["cookie"].as_str(), Some("a"));
    assert_eq!(servers[1]["cookie"].as_str(), Some("a"));
    for sv in &servers[2..] {
        assert!(sv.get("cookie").is_none(), "{sv:#?}");
    }
    assert!(
        !report.iter().any(|e| e.directive == "(check)"),
        "{report:#?}"
    );
    let shared = report
        .iter()
        .find(|e| e.directive == "server s2 10.0.0.2:80 cookie a backup")
        .unwrap();
    assert_eq!(shared.fidelity, Fidelity::Mapped, "{shared:#?}");
    for (line, why) in [
        ("server s3 app.example:80 cookie c", "DNS entry"),
        ("server s4 10.0.0.4:80 cookie a,b", "not a cookie value"),
    ] {
        let e = report.iter().find(|e| e.directive == line).unwrap();
        assert_eq!(e.fidelity, Fidelity::Approximated, "{e:#?}");
        assert!(e.note.contains(why), "{e:#?}");
    }
}

#[test]
fn cookie_attributes_rampart_has_and_has_not() {
    let (cfg, report) = run("backend b
  cookie SRV insert httponly secure domain .a.example domain .b.example attr SameSite=Strict maxidle 30m maxlife 8h
  server s1 10.0.0.1:80 cookie s1
");
    let c = &pool(&cfg, "b")["cookie"];
    assert_eq!(c["domain"].as_str(), Some(".a.example"), "{c:#?}");
    assert_eq!(c["same_site"].as_str(), Some("Strict"), "{c:#?}");
    assert_eq!(c["httponly"].as_bool(), Some(true), "{c:#?}");
    assert_eq!(c["secure"].as_bool(), Some(true), "{c:#?}");
    // maxidle and maxlife are not a browser's expiry
    assert!(c.get("max_age").is_none(), "{c:#?}");
    let e = report
        .iter()
        .find(|e| e.directive.starts_with("cookie SRV"))
        .unwrap();
    assert_eq!(e.fidelity, Fidelity::Approximated, "{e:#?}");
    for part in [".b.example", "maxidle", "maxlife"] {
        assert!(e.note.contains(part), "{part}: {e:#?}");
    }
    // SameSite=None without secure: browsers and rampart refuse it
    let (cfg, report) = run("backend b
  cookie SRV insert attr SameSite=None
  server s1 10.0.0.1:80
");
    assert!(pool(&cfg, "b")["cookie"].get("same_site").is_none());
    assert!(reported(
        &report,
        "cookie SRV insert attr SameSite=None",
        Fidelity::Approximated
    ));
}

#[test]
fn stick_points_to_the_cookie_and_a_frontends_cookie_is_ignored() {
    let (cfg, report) = run("frontend f
  bind :80
  cookie F insert
  default_backend b
backend b
  stick on src
  server s1 10.0.0.1:80
");
    assert!(pool(&cfg, "b").get("cookie").is_none(), "{cfg:#?}");
    let stick = report
        .iter()
        .find(|e| e.directive == "stick on src")
        .unwrap();
    assert_eq!(stick.fidelity, Fidelity::Unsupported);
    assert!(stick.note.contains("[pool.cookie]"), "{stick:#?}");
    assert!(reported(&report, "cookie F insert", Fidelity::Approximated));
}

/// `errorfile`: in defaults, the error_pages of each listener that follows
/// (a second defaults section's for the listeners after it); in a frontend,
/// its listener's too; a status that is not an error, unsupported; in a
/// backend, not imported (pages are a listener's); a relative path,
/// approximated (HAProxy reads it from its working directory).
#[test]
fn errorfiles_are_error_pages() {
    let im = import(
        "defaults
  mode http
  errorfile 503 /etc/haproxy/errors/503.http
  errorfile 504 /etc/haproxy/errors/504.http
frontend f
  bind :80
  errorfile 502 /srv/502.http
  errorfile 200 /srv/ok.http
  default_backend b
backend b
  errorfile 500 /srv/500.http
  server s1 10.0.0.1:80
defaults
  mode http
  errorfile 503 errors/other.http
frontend g
  bind :81
  default_backend b
",
        "test.cfg",
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    assert!(cfg
        .get("global")
        .and_then(|g| g.get("error_pages"))
        .is_none());
    let own = &on(&cfg, "0.0.0.0:80")["error_pages"];
    assert_eq!(own["503"].as_str(), Some("/etc/haproxy/errors/503.http"));
    assert_eq!(own["504"].as_str(), Some("/etc/haproxy/errors/504.http"));
    assert_eq!(own["502"].as_str(), Some("/srv/502.http"));
    assert!(own.get("200").is_none(), "{own}");
    // the second defaults section's, alone
    let g = &on(&cfg, "0.0.0.0:81")["error_pages"];
    assert_eq!(g["503"].as_str(), Some("errors/other.http"));
    assert!(g.get("504").is_none(), "{g}");
    assert!(reported(
        &im.report,
        "errorfile 503 errors/other.http",
        Fidelity::Approximated
    ));
    assert!(reported(
        &im.report,
        "errorfile 200 /srv/ok.http",
        Fidelity::Unsupported
    ));
    assert!(reported(
        &im.report,
        "errorfile 500 /srv/500.http",
        Fidelity::Approximated
    ));
    assert!(reported(
        &im.report,
        "errorfile 503 /etc/haproxy/errors/503.http",
        Fidelity::Mapped
    ));
}

/// `http-errors` sections named by `errorfiles` (all their pages, or the
/// codes given), in order with `errorfile` lines (the last for a status
/// wins), and `http-error status N errorfile|file`: the same error_pages.
#[test]
fn http_errors_sections_and_http_error_are_error_pages() {
    let im = import(
        "http-errors site
  errorfile 200 /srv/site/200.http
  errorfile 503 /srv/site/503.http
  errorfile 403 /srv/site/403.http
  errorfile 404 /srv/site/404.http
defaults
  mode http
  errorfiles site 503
frontend f
  bind :80
  errorfile 502 /srv/502.http
  errorfiles site 403 404 429
  http-error status 500 content-type text/html file /srv/500.html
  http-error status 504 content-type application/json file /srv/504.txt
  http-error status 429 errorfile /srv/429.http
  http-error status 400 content-type text/plain string \"bad\"
  errorfiles nowhere
  default_backend b
backend b
  errorfiles site
  server s1 10.0.0.1:80
frontend g
  bind :81
  errorfile 503 /srv/g-503.http
  errorfiles site
  default_backend b
",
        "test.cfg",
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    let f = &on(&cfg, "0.0.0.0:80")["error_pages"];
    let page = |t: &toml::Value, c: &str| t.get(c).and_then(|v| v.as_str()).map(String::from);
    assert_eq!(page(f, "503").as_deref(), Some("/srv/site/503.http"));
    assert_eq!(page(f, "502").as_deref(), Some("/srv/502.http"));
    assert_eq!(page(f, "403").as_deref(), Some("/srv/site/403.http"));
    assert_eq!(page(f, "404").as_deref(), Some("/srv/site/404.http"));
    assert_eq!(page(f, "500").as_deref(), Some("/srv/500.html"));
    assert_eq!(page(f, "504").as_deref(), Some("/srv/504.txt"));
    assert_eq!(page(f, "429").as_deref(), Some("/srv/429.http"));
    assert_eq!(page(f, "400"), None, "{f}");
    // the section's pages come after the frontend's own errorfile: they win
    let g = &on(&cfg, "0.0.0.0:81")["error_pages"];
    assert_eq!(page(g, "503").as_deref(), Some("/srv/site/503.http"));
    // HAProxy's 200 (monitor-uri's) is no error page of rampart's
    assert_eq!(page(g, "200"), None, "{g}");
    for (line, fidelity) in [
        ("http-errors site", Fidelity::Mapped),
        ("errorfile 403 /srv/site/403.http", Fidelity::Mapped),
        ("errorfiles site 503", Fidelity::Mapped),
        // no 429 in the section
        ("errorfiles site 403 404 429", Fidelity::Approximated),
        (
            "http-error status 500 content-type text/html file /srv/500.html",
            Fidelity::Mapped,
        ),
        // served as text/plain by its extension
        (
            "http-error status 504 content-type application/json file /srv/504.txt",
            Fidelity::Approximated,
        ),
        (
            "http-error status 429 errorfile /srv/429.http",
            Fidelity::Mapped,
        ),
        (
            "http-error status 400 content-type text/plain string bad",
            Fidelity::Unsupported,
        ),
        ("errorfiles nowhere", Fidelity::Unsupported),
        // a backend's: pages are a listener's
        ("errorfiles site", Fidelity::Approximated),
    ] {
        assert!(
            reported(&im.report, line, fidelity),
            "{line}: {:#?}",
            im.report
        );
    }
}

/// `http-request return`: a respond rule (status, content-type, a string);
/// without a payload, the status alone (HAProxy's empty answer), with
/// `default-errorfiles` a deny (the proxy's page); a file or a log-format
/// payload is not mapped.
#[test]
fn http_request_return_is_a_respond_rule() {
    let im = import(
        "defaults
  mode http
frontend f
  bind :80
  http-request return status 200 content-type text/plain string \"ok\" if { path /healthz }
  http-request return status 503 content-type application/json string \"{}\" if { path_beg /maint }
  http-request return status 429 default-errorfiles if { path_beg /slow }
  http-request return status 403 content-type text/plain if { path_beg /quiet }
  http-request return if { path /empty }
  http-request return status 200 content-type text/html file /srv/x.html if { path /x }
  http-request return status 200 content-type text/plain lf-string \"%[src]\" if { path /ip }
  default_backend b
backend b
  server s1 10.0.0.1:80
",
        "test.cfg",
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let by_path = |p: &str| {
        rules
            .iter()
            .find(|r| {
                r.get("path")
                    .or(r.get("path_prefix"))
                    .and_then(|v| v.as_str())
                    == Some(p)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no rule for {p}: {rules:#?}"))
    };
    let h = &by_path("/healthz")["respond"];
    assert_eq!(h["status"].as_integer(), Some(200));
    assert_eq!(h["body"].as_str(), Some("ok"));
    assert_eq!(h["content_type"].as_str(), Some("text/plain"));
    let m = &by_path("/maint")["respond"];
    assert_eq!(m["status"].as_integer(), Some(503));
    assert_eq!(m["content_type"].as_str(), Some("application/json"));
    assert_eq!(by_path("/slow")["deny"].as_integer(), Some(429));
    // no payload: the status alone, as HAProxy answers it
    assert_eq!(
        by_path("/quiet")["respond"]["status"].as_integer(),
        Some(403)
    );
    assert!(by_path("/quiet")["respond"].get("content_type").is_none());
    assert_eq!(
        by_path("/empty")["respond"]["status"].as_integer(),
        Some(200)
    );
    assert!(by_path("/empty")["respond"].get("body").is_none());
    for (line, f) in [
        ("http-request return status 200 content-type text/plain string ok if { path /healthz }", Fidelity::Mapped),
        ("http-request return status 200 content-type text/html file /srv/x.html if { path /x }", Fidelity::Unsupported),
        ("http-request return status 200 content-type text/plain lf-string %[src] if { path /ip }", Fidelity::Unsupported),
    ] {
        assert!(reported(&im.report, line, f), "{line}: {:#?}", im.report);
    }
}

/// `default-server` (in defaults and in a backend): its options are each
/// following server's, before its own; `timeout http-request` is the
/// listener's request_header_timeout, `http-keep-alive` approximated.
#[test]
fn default_server_options_and_http_timeouts() {
    let im = import(
        "defaults
  mode http
  timeout http-request 7s
  timeout http-keep-alive 3s
  default-server inter 3s fall 3 rise 2
frontend f
  bind :80
  default_backend b
frontend g
  bind :81
  timeout http-request 4s
  default_backend c
frontend h
  bind :82
  timeout http-request 0
  use_backend e if { path_beg /e }
  default_backend d
backend b
  default-server weight 7
  server s1 10.0.0.1:80 check
  server s2 10.0.0.2:80 check weight 9
backend c
  server s3 10.0.0.3:80 check inter 1s
backend d
  default-server ssl verify none backup disabled
  server s4 10.0.0.4:443
  server s5 10.0.0.5:443 no-backup enabled
backend e
  default-server check
  server s6 10.0.0.6:80 no-check
",
        "test.cfg",
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    assert_eq!(
        on(&cfg, "0.0.0.0:80")["request_header_timeout"].as_str(),
        Some("7s")
    );
    assert_eq!(
        on(&cfg, "0.0.0.0:81")["request_header_timeout"].as_str(),
        Some("4s")
    );
    let pools = array(&cfg, "pool");
    let pool = |n: &str| {
        pools
            .iter()
            .find(|p| p["name"].as_str() == Some(n))
            .cloned()
            .unwrap()
    };
    let b = pool("b");
    assert_eq!(b["health"]["interval"].as_str(), Some("3s"), "{b}");
    assert_eq!(b["health"]["fall"].as_integer(), Some(3));
    assert_eq!(b["health"]["rise"].as_integer(), Some(2));
    let servers = array(&b, "server");
    assert_eq!(servers[0]["weight"].as_integer(), Some(7));
    assert_eq!(servers[1]["weight"].as_integer(), Some(9));
    // the server's own inter wins over the defaults'
    assert_eq!(pool("c")["health"]["interval"].as_str(), Some("1s"));
    assert!(array(&pool("c"), "server")[0].get("weight").is_none());
    assert!(reported(
        &im.report,
        "default-server inter 3s fall 3 rise 2",
        Fidelity::Mapped
    ));
    // a server's no-X (enabled) takes a default's X (disabled) back
    let d = array(&pool("d"), "server");
    assert_eq!(d[0]["backup"].as_bool(), Some(true));
    assert_eq!(d[0]["weight"].as_integer(), Some(0));
    assert!(
        d[1].get("backup").is_none() && d[1].get("weight").is_none(),
        "{d:?}"
    );
    assert!(pool("d").get("tls").is_some());
    assert!(pool("e").get("health").is_none(), "{:?}", pool("e"));
    assert!(reported(
        &im.report,
        "timeout http-keep-alive 3s",
        Fidelity::Approximated
    ));
    assert!(reported(
        &im.report,
        "timeout http-request 4s",
        Fidelity::Mapped
    ));
    // 0: no timeout in HAProxy, none rampart has
    assert!(reported(
        &im.report,
        "timeout http-request 0",
        Fidelity::Unsupported
    ));
    assert_eq!(
        on(&cfg, "0.0.0.0:82")["request_header_timeout"].as_str(),
        Some("7s")
    );
}

/// `http-request set-header X-Real-IP %[src]` in a frontend: its listener's
/// client_ip_header; under a condition, not imported (it is a listener's).
#[test]
fn set_header_of_src_is_the_client_ip_header() {
    let im = import(
        "defaults
  mode http
frontend f
  bind :80
  http-request set-header X-Real-IP %[src]
  default_backend b
frontend g
  bind :81
  http-request set-header X-Client %[src] if { path_beg /api }
  default_backend b
backend b
  server s1 10.0.0.1:80
",
        "test.cfg",
    );
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    assert_eq!(
        on(&cfg, "0.0.0.0:80")["client_ip_header"].as_str(),
        Some("X-Real-IP")
    );
    assert!(on(&cfg, "0.0.0.0:81").get("client_ip_header").is_none());
    assert!(reported(
        &im.report,
        "http-request set-header X-Real-IP %[src]",
        Fidelity::Mapped
    ));
    assert!(reported(
        &im.report,
        "http-request set-header X-Client %[src] if { path_beg /api }",
        Fidelity::Unsupported
    ));
}

#[test]
fn replace_path_and_set_path_rewrite_the_path() {
    let (cfg, report) = run("frontend f
  bind :80
  http-request replace-path ^/zpi/(.*)$ /api/\\1
  http-request set-path /v1%[path] if { path_beg /old }
  http-request set-path /x?y=1 if { path_beg /q }
  http-request set-path %[hdr(host)]%[path] if { path_beg /h }
  http-request replace-path ^/a/(.*)$ /b/\\2 if { path_beg /two }
  use_backend api if { path_beg /api/ }
  default_backend web
backend api
  http-request replace-path ^/api(/.*)$ \\1
  server s1 10.0.0.1:80
backend web
  http-request replace-path ^(.*)$ /web\\1
  http-request replace-path ^(.*)$ /again\\1
  server s2 10.0.0.2:80
");
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let w = |r: &toml::Value| {
        (
            r["rewrite_path"]["regex"].as_str().unwrap().to_string(),
            r["rewrite_path"]["to"].as_str().unwrap().to_string(),
        )
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    // the frontend's, in order, before use_backend (which sees the new path)
    assert_eq!(w(&rules[0]), s("^/zpi/(.*)$", "/api/${1}"));
    assert_eq!(w(&rules[1]), s("^.*$", "/v1${0}"));
    assert_eq!(rules[1]["path_prefix"].as_str(), Some("/old"));
    // a backend's: on the rule that picks it
    let api = rules
        .iter()
        .find(|r| r.get("pool").and_then(|p| p.as_str()) == Some("api"))
        .unwrap();
    assert_eq!(api["path_prefix"].as_str(), Some("/api/"));
    assert_eq!(w(api), s("^/api(/.*)$", "${1}"));
    // the default backend's: a last rule for the requests left
    let last = rules.last().unwrap();
    assert_eq!(last["pool"].as_str(), Some("web"));
    assert_eq!(w(last), s("^(.*)$", "/web${1}"));
    for (line, why) in [
        ("http-request set-path /x?y=1 if { path_beg /q }", "query"),
        (
            "http-request set-path %[hdr(host)]%[path] if { path_beg /h }",
            "other than %[path]",
        ),
        (
            "http-request replace-path ^/a/(.*)$ /b/\\2 if { path_beg /two }",
            "groups",
        ),
        (
            "http-request replace-path ^(.*)$ /again\\1",
            "second path rewrite",
        ),
    ] {
        refused(&report, line, why);
    }
    // what the importer wrote, rampart reads
    readable("frontend f\n  bind :80\n  http-request replace-path ^/zpi/(.*)$ /api/\\1\n  default_backend web\nbackend web\n  http-request set-path /web%[path]\n  server s2 10.0.0.2:80\n");
}

/// `set-path %[path,regsub(REGEX,SUBST[,FLAGS])]` is sed's `s/REGEX/SUBST/`
/// on the path: the rewrite rampart gets gives what sed gives.
#[test]
fn set_path_with_regsub_replaces_the_first_match() {
    let (cfg, report) = run("frontend f
  bind :80
  http-request set-path %[path,regsub(^/api/,/)] if { path_beg /api/ }
  http-request set-path \"%[path,regsub('/v([0-9]+)/','/version\\1/')]\" if { path_beg /x/ }
  http-request set-path %[path,regsub(^/A/,/b/,i)] if { path_beg /c/ }
  http-request set-path %[path,regsub(/a/,/b/,g)] if { path_beg /d/ }
  http-request set-path %[path,regsub(^/a|/b,/c)] if { path_beg /e/ }
  http-request set-path %[path,regsub(^/q/,/x\\\\y/)] if { path_beg /q/ }
  http-request set-path \"%[path,regsub(^/s/,/t\\/u/)]\" if { path_beg /s/ }
  http-request set-path %[path,regsub(/v([0-9]+)/,/w/)] if { path_beg /u/ }
  http-request set-path %[path,regsub(^/h/,/i\\\\\\\\1/)] if { path_beg /h/ }
  http-request set-path %[path,regsub(^/e/,/f\\\\\\\\z/)] if { path_beg /e2/ }
  http-request set-path %[path,regsub(^/k/,/l\\x3fm/)] if { path_beg /k/ }
  default_backend web
backend web
  server s2 10.0.0.2:80
");
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let apply = |r: &toml::Value, path: &str| -> String {
        let re = regex::Regex::new(r["rewrite_path"]["regex"].as_str().unwrap()).unwrap();
        let to = r["rewrite_path"]["to"].as_str().unwrap();
        match re.captures(path) {
            Some(c) => {
                let mut out = String::new();
                c.expand(to, &mut out);
                out
            }
            None => path.to_string(),
        }
    };
    assert_eq!(apply(&rules[0], "/api/users/7"), "/users/7");
    assert_eq!(apply(&rules[0], "/apix/users"), "/apix/users");
    // the first match, wherever it is, its groups kept
    assert_eq!(apply(&rules[1], "/x/v2/a/v3/b"), "/x/version2/a/v3/b");
    assert_eq!(apply(&rules[1], "/x/none"), "/x/none");
    // i: case-insensitive
    assert_eq!(apply(&rules[2], "/a/z"), "/b/z");
    assert_eq!(apply(&rules[2], "/A/z"), "/b/z");
    // (an alternation anchors one side only: `^/a` or `/b` anywhere)
    assert_eq!(apply(&rules[3], "/e/x/b/y"), "/e/x/c/y");
    assert_eq!(apply(&rules[3], "/a/q"), "/c/q");
    // HAProxy's escapes, as HAProxy 2.6 answered them: the file's `\\` is
    // a `\` (its tokenizer), and regsub's `\y` a `y`; `\/` a `/`
    assert_eq!(apply(&rules[4], "/q/1"), "/xy/1");
    assert_eq!(apply(&rules[5], "/s/2"), "/t/u/2");
    // (a path with a decoded newline is rewritten too)
    assert_eq!(apply(&rules[0], "/api/a\nb"), "/a\nb");
    // the file's `\\\\z` is `\\z` to the converter, `\z` to regsub: a `z`
    // (HAProxy 2.6 answered /e/1 with /fz/1); its `\\\\1` is group 1, which
    // `^/h/` does not have (HAProxy: empty; rampart refuses it)
    assert_eq!(apply(&rules[6], "/e/1"), "/fz/1");
    assert_eq!(rules.len(), 7, "{rules:#?}");
    refused(
        &report,
        "http-request set-path %[path,regsub(^/h/,/i\\\\1/)] if { path_beg /h/ }",
        "\\1 is not one of the regex's groups",
    );
    // (the file's `\x3f` is a `?`: HAProxy 2.6 put it in the path, a query
    // to the server)
    refused(
        &report,
        "http-request set-path %[path,regsub(^/k/,/l?m/)] if { path_beg /k/ }",
        "query",
    );
    refused(
        &report,
        "http-request set-path %[path,regsub(/v([0-9]+)/,/w/)] if { path_beg /u/ }",
        "quote the regex",
    );
    refused(
        &report,
        "http-request set-path %[path,regsub(/a/,/b/,g)] if { path_beg /d/ }",
        "anchored",
    );
    readable("frontend f\n  bind :80\n  http-request set-path \"%[path,regsub('/v([0-9]+)/','/version\\1/')]\"\n  default_backend web\nbackend web\n  server s2 10.0.0.2:80\n");
}

/// `http-response replace-header NAME REGEX FMT` is a rule's
/// `response_replace_header`, on the requests its backend gets.
#[test]
fn replace_header_in_a_response_is_a_rules() {
    let (cfg, report) = run("frontend f
  bind :80
  use_backend blog if { path_beg /blog }
  default_backend web
backend blog
  http-response replace-header Location http://blog/(.*) /\\1
  server s1 10.0.0.1:80
backend web
  http-response replace-header Location (.*) %[src]
  http-response replace-header Location x(.*) /\\2
  server s2 10.0.0.2:80
");
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    let r = rules
        .iter()
        .find(|r| r.get("response_replace_header").is_some())
        .unwrap_or_else(|| panic!("{rules:#?}"));
    assert_eq!(r["path_prefix"].as_str(), Some("/blog"));
    let rr = &r["response_replace_header"];
    assert_eq!(rr["name"].as_str(), Some("Location"));
    assert_eq!(rr["regex"].as_str(), Some("http://blog/(.*)"));
    assert_eq!(rr["to"].as_str(), Some("/${1}"));
    for (line, why) in [
        (
            "http-response replace-header Location (.*) %[src]",
            "log-format",
        ),
        ("http-response replace-header Location x(.*) /\\2", "groups"),
    ] {
        refused(&report, line, why);
    }
}

/// HAProxy runs a backend's `http-response` rules before its frontend's,
/// and a `replace-header` rewrites what a `set-header` before it set:
/// where that could matter, the line is approximated; edits of one field in
/// backends that never answer one request together are mapped.
#[test]
fn response_edits_in_haproxys_order_are_approximated_where_it_differs() {
    let (_, report) = run("frontend f
  bind :80
  http-response del-header X-Both
  use_backend a if { path_beg /a }
  default_backend b
backend a
  http-response set-header X-Both 1
  http-response replace-header Location http://a/(.*) /\\1
  server s1 10.0.0.1:80
backend b
  http-response set-header X-Set 1
  http-response replace-header X-Set 1 2
  http-response replace-header Location http://b/(.*) /\\1
  server s2 10.0.0.2:80
");
    let fidelity = |line: &str| {
        report
            .iter()
            .find(|e| e.directive == line)
            .unwrap_or_else(|| panic!("no {line:?} in {report:#?}"))
            .clone()
    };
    for line in [
        "http-response del-header X-Both",
        "http-response set-header X-Both 1",
        "http-response replace-header X-Set 1 2",
    ] {
        assert_eq!(fidelity(line).fidelity, Fidelity::Approximated, "{line}");
    }
    for line in [
        "http-response replace-header Location http://a/(.*) /\\1",
        "http-response replace-header Location http://b/(.*) /\\1",
        "http-response set-header X-Set 1",
    ] {
        assert_eq!(fidelity(line).fidelity, Fidelity::Mapped, "{line}");
    }
    // a listen is a frontend and a backend both
    let (_, report) = run("listen l
  bind :81
  http-response set-header X-L 1
  use_backend c if { path_beg /c }
  server s0 10.0.0.3:80
backend c
  http-response del-header X-L
  server s1 10.0.0.1:80
");
    let e = report
        .iter()
        .find(|e| e.directive == "http-response del-header X-L")
        .unwrap();
    assert_eq!(e.fidelity, Fidelity::Approximated, "{report:#?}");
}

#[test]
fn set_src_from_a_field_is_the_listeners_client_ip_from() {
    let (cfg, report) = run("frontend a
  bind :80
  http-request set-src hdr(x-forwarded-for) if { src 10.0.0.0/8 192.0.2.0/24 }
  default_backend b
frontend c
  bind :81
  http-request set-src req.hdr_ip(X-Real-IP,-1)
  default_backend b
frontend d
  bind :82
  http-request set-src hdr(x-forwarded-for,1)
  http-request set-src hdr(x-forwarded-for) if { path_beg /x }
  default_backend b
backend b
  http-request set-src hdr(x-forwarded-for)
  server s1 10.0.0.1:80
");
    let a = &on(&cfg, "0.0.0.0:80")["client_ip_from"];
    assert_eq!(a["header"].as_str(), Some("x-forwarded-for"));
    assert_eq!(
        a["from"].as_array().unwrap(),
        &vec![
            toml::Value::from("10.0.0.0/8"),
            toml::Value::from("192.0.2.0/24")
        ]
    );
    // without a condition HAProxy believes everyone: said so
    let c = &on(&cfg, "0.0.0.0:81")["client_ip_from"];
    assert_eq!(c["header"].as_str(), Some("X-Real-IP"));
    assert_eq!(c["from"].as_array().unwrap().len(), 2);
    assert!(on(&cfg, "0.0.0.0:82").get("client_ip_from").is_none());
    let fid = |d: &str| {
        report
            .iter()
            .find(|e| e.directive == d)
            .unwrap_or_else(|| panic!("no {d:?}"))
            .fidelity
    };
    assert_eq!(
        fid("http-request set-src hdr(x-forwarded-for) if { src 10.0.0.0/8 192.0.2.0/24 }"),
        Fidelity::Mapped
    );
    assert_eq!(
        fid("http-request set-src req.hdr_ip(X-Real-IP,-1)"),
        Fidelity::Approximated
    );
    for d in [
        "http-request set-src hdr(x-forwarded-for,1)",
        "http-request set-src hdr(x-forwarded-for) if { path_beg /x }",
        "http-request set-src hdr(x-forwarded-for)",
    ] {
        assert_eq!(fid(d), Fidelity::Unsupported, "{d}");
    }
}

/// From a review: a backend's rewrite before its rules that read the path
/// is not moved after them; a set-src after rules that test the client, a
/// second one and one in a tcp frontend are said.
#[test]
fn rewrites_and_set_src_that_rampart_would_order_otherwise_are_said() {
    let (cfg, report) = run("frontend f
  bind :80
  http-request deny if !{ src 10.0.0.0/8 }
  http-request set-src hdr(x-forwarded-for) if { src 10.0.0.0/8 }
  http-request set-src hdr(x-real-ip) if { src 10.0.0.0/8 }
  use_backend api if { path_beg /api/ }
  default_backend web
frontend t
  mode tcp
  bind :81
  http-request set-src hdr(x-forwarded-for)
  default_backend web
backend api
  http-request replace-path ^/api(/.*)$ \\1
  http-request deny if { path_beg /admin }
  server s1 10.0.0.1:80
backend web
  server s2 10.0.0.2:80
");
    let fid = |d: &str| {
        report
            .iter()
            .find(|e| e.directive == d)
            .unwrap_or_else(|| panic!("no {d:?} in {report:#?}"))
            .clone()
    };
    let e = fid("http-request set-src hdr(x-forwarded-for) if { src 10.0.0.0/8 }");
    assert_eq!(e.fidelity, Fidelity::Approximated, "{}", e.note);
    assert!(e.note.contains("rules before this line"), "{}", e.note);
    assert_eq!(
        fid("http-request set-src hdr(x-real-ip) if { src 10.0.0.0/8 }").fidelity,
        Fidelity::Unsupported
    );
    assert_eq!(
        fid("http-request set-src hdr(x-forwarded-for)").fidelity,
        Fidelity::Unsupported
    );
    assert!(on(&cfg, "0.0.0.0:81").get("client_ip_from").is_none());
    let e = fid("http-request replace-path ^/api(/.*)$ \\1");
    assert_eq!(e.fidelity, Fidelity::Unsupported, "{}", e.note);
    let rules = array(&on(&cfg, "0.0.0.0:80"), "rule");
    assert!(
        rules.iter().all(|r| r.get("rewrite_path").is_none()),
        "{rules:#?}"
    );
}

#[test]
fn compression_lines_are_the_listeners_compression() {
    let (cfg, report) = run("defaults web
  mode http
  compression algo gzip
  compression type text/html application/json
frontend a
  bind :80
  default_backend b
frontend c
  bind :81
  compression algo identity
  default_backend b
frontend d
  bind :82
  compression algo deflate gzip
  compression type text/css
  compression type text
  default_backend b
frontend e
  mode tcp
  bind :83
  compression algo gzip
  default_backend b
backend b
  compression algo gzip
  server s1 10.0.0.1:80
");
    let types = |addr: &str| {
        on(&cfg, addr)
            .get("compression")
            .map(|c| c["types"].as_array().unwrap().clone())
    };
    assert_eq!(
        types("0.0.0.0:80").unwrap(),
        ["text/html", "application/json"]
            .map(toml::Value::from)
            .to_vec()
    );
    // HAProxy adds a section's algorithms and types to those it inherited
    assert_eq!(types("0.0.0.0:81"), types("0.0.0.0:80"));
    assert_eq!(
        types("0.0.0.0:82").unwrap(),
        ["text/html", "application/json", "text/css", "text/*"]
            .map(toml::Value::from)
            .to_vec()
    );
    let fid = |d: &str| {
        report
            .iter()
            .filter(|e| e.directive == d)
            .map(|e| e.fidelity)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fid("compression algo deflate gzip"),
        [Fidelity::Approximated]
    );
    assert_eq!(fid("compression type text"), [Fidelity::Mapped]);
    assert!(on(&cfg, "0.0.0.0:83").get("compression").is_none(), "tcp");
    assert_eq!(
        fid("compression algo gzip"),
        [
            Fidelity::Mapped,
            Fidelity::Unsupported,
            Fidelity::Unsupported
        ],
        "defaults', a tcp frontend's, a backend's"
    );
}

/// Two tcp backends, `dflt` and `pg`.
const DFLT_PG: &str = "backend dflt
  mode tcp
  server s 127.0.0.1:9001
backend pg
  mode tcp
  server s 127.0.0.1:9002
";

/// The routes of a listener, as (sni, pool).
fn sni_routes(l: &toml::Value) -> Vec<(String, String)> {
    array(l, "route")
        .iter()
        .map(|r| {
            (
                r["sni"].as_str().unwrap_or("?").to_string(),
                r["pool"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// HAProxy's SNI routing (TLS passthrough): a tcp frontend's `use_backend`
/// lines by `req.ssl_sni` / `req_ssl_sni` become its `[[listener.route]]`s
/// in order (`-m end .x`, `-m beg x.`, `-m dom x`, `!{ req.ssl_sni -m
/// found }` as sni = ""); `tcp-request inspect-delay` is how long rampart
/// waits for the ClientHello; an unconditional use_backend is the pool and
/// ends the list; without a default_backend the listener has no pool; a
/// condition on more than the name, an http frontend and the ssl binds of a
/// frontend keep no route.
#[test]
fn use_backend_by_the_server_name_becomes_a_tcp_listeners_routes() {
    let (cfg, report) = run(&format!(
        "frontend edge
  mode tcp
  bind 127.0.0.1:5443
  bind 127.0.0.1:5446 ssl crt /nonexistent/edge.pem
  tcp-request inspect-delay 5s
  tcp-request content accept if {{ req_ssl_hello_type 1 }}
  acl db req_ssl_sni -i db.example.com
  acl org req.ssl_sni -m dom example.org
  use_backend pg if db
  use_backend org if org
  use_backend apps if {{ req.ssl_sni -m end .apps.example.com }}
  use_backend apps if {{ req.ssl_sni -m beg mail. }}
  use_backend pg if {{ req.ssl_sni -i x.example.com }} {{ src 10.0.0.0/8 }}
  use_backend empty if !{{ req.ssl_sni -m found }}
  default_backend dflt
frontend strict
  mode tcp
  bind 127.0.0.1:5444
  tcp-request inspect-delay 2s
  use_backend pg if {{ req_ssl_sni -i db.example.com }}
frontend catchall
  mode tcp
  bind 127.0.0.1:5445
  use_backend pg if {{ req_ssl_sni -i db.example.com }}
  use_backend apps
  use_backend org if {{ req_ssl_sni -i org.example.com }}
frontend web
  bind 127.0.0.1:8080
  use_backend pg if {{ req_ssl_sni -i db.example.com }}
  default_backend dflt
{DFLT_PG}backend org
  mode tcp
  server s 127.0.0.1:9003
backend apps
  mode tcp
  server s 127.0.0.1:9004
backend empty
  mode tcp
  server s 127.0.0.1:9007
"
    ));
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let edge = on(&cfg, "127.0.0.1:5443");
    assert_eq!(edge["pool"].as_str(), Some("dflt"));
    assert_eq!(edge["request_header_timeout"].as_str(), Some("5s"));
    assert_eq!(
        sni_routes(&edge),
        pairs(&[
            ("db.example.com", "pg"),
            ("example.org", "org"),
            ("*.example.org", "org"),
            ("*.apps.example.com", "apps"),
            ("mail.*", "apps"),
            ("", "empty"),
        ])
    );
    refused(
        &report,
        "use_backend pg if { req.ssl_sni -i x.example.com } { src 10.0.0.0/8 }",
        "the server name alone",
    );
    // the ssl binds decipher first: no route there
    let tls = on(&cfg, "127.0.0.1:5446");
    assert!(sni_routes(&tls).is_empty(), "{tls:#?}");
    assert!(reported(
        &report,
        "tcp-request inspect-delay 5s",
        Fidelity::Approximated
    ));
    assert!(reported(
        &report,
        "tcp-request content accept if { req_ssl_hello_type 1 }",
        Fidelity::Approximated
    ));
    let strict = on(&cfg, "127.0.0.1:5444");
    assert!(strict.get("pool").is_none(), "{strict:#?}");
    assert_eq!(strict["request_header_timeout"].as_str(), Some("2s"));
    assert_eq!(sni_routes(&strict), pairs(&[("db.example.com", "pg")]));
    let catchall = on(&cfg, "127.0.0.1:5445");
    assert_eq!(catchall["pool"].as_str(), Some("apps"));
    assert_eq!(sni_routes(&catchall), pairs(&[("db.example.com", "pg")]));
    refused(
        &report,
        "use_backend org if { req_ssl_sni -i org.example.com }",
        "never reached",
    );
    // an http frontend has no ClientHello to read
    let web = on(&cfg, "127.0.0.1:8080");
    assert!(array(&web, "rule").is_empty(), "{web:#?}");
    assert!(sni_routes(&web).is_empty(), "{web:#?}");
    let e = report
        .iter()
        .find(|e| {
            e.directive == "use_backend pg if { req_ssl_sni -i db.example.com }" && e.line > 30
        })
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(e.fidelity, Fidelity::Unsupported, "{e:?}");
    // rampart reads what it wrote
    let toml = import(
        &format!("{DEFAULTS}frontend strict\n  mode tcp\n  bind 127.0.0.1:5444\n  use_backend pg if {{ req_ssl_sni -i db.example.com }}\nbackend pg\n  mode tcp\n  server s 127.0.0.1:9002\n"),
        "t.cfg",
    )
    .toml;
    let c = crate::config::parse(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(c.listeners[0].pool, None);
}

/// What HAProxy reads of a ClientHello depends on the frontend waiting for
/// it: without an inspect-delay and a content rule that accepts once it is
/// in (by an ACL too), HAProxy routes no name and rampart does, so the
/// routes are approximated. A name test without -i (HAProxy compares the
/// case) is approximated; a negated one, `ssl_sni` (not HAProxy's) and a 0
/// delay are refused.
#[test]
fn sni_routes_say_what_the_frontend_waits_for() {
    let e = |report: &[Entry], line: &str| -> Entry {
        report
            .iter()
            .find(|e| e.directive == line)
            .cloned()
            .unwrap_or_else(|| panic!("no {line:?} in {report:#?}"))
    };
    let (cfg, report) = run(&format!(
        "frontend waits
  mode tcp
  bind 127.0.0.1:5443
  tcp-request inspect-delay 3s
  acl hello req.ssl_hello_type 1
  tcp-request content accept if hello
  use_backend pg if {{ req_ssl_sni -i db.example.com }}
  use_backend pg if {{ req_ssl_sni Mixed.example.com }}
  use_backend pg unless {{ req_ssl_sni -i x.example.com }}
  use_backend pg if {{ ssl_sni -i y.example.com }}
  default_backend dflt
frontend nowait
  mode tcp
  bind 127.0.0.1:5444
  use_backend pg if {{ req.ssl_sni -i db2.example.com }}
  default_backend dflt
frontend zero
  mode tcp
  bind 127.0.0.1:5445
  tcp-request inspect-delay 0
  tcp-request content accept if {{ req_ssl_hello_type 1 }}
  use_backend pg if {{ req.ssl_sni -i db3.example.com }}
  default_backend dflt
{DFLT_PG}"
    ));
    let waits = on(&cfg, "127.0.0.1:5443");
    assert_eq!(waits["request_header_timeout"].as_str(), Some("3s"));
    assert_eq!(
        sni_routes(&waits),
        [
            ("db.example.com".to_string(), "pg".to_string()),
            ("Mixed.example.com".to_string(), "pg".to_string())
        ]
    );
    let f = |line| e(&report, line).fidelity;
    assert_eq!(
        f("use_backend pg if { req_ssl_sni -i db.example.com }"),
        Fidelity::Mapped
    );
    assert_eq!(
        f("tcp-request content accept if hello"),
        Fidelity::Approximated
    );
    assert_eq!(
        f("use_backend pg if { req_ssl_sni Mixed.example.com }"),
        Fidelity::Approximated
    );
    refused(
        &report,
        "use_backend pg unless { req_ssl_sni -i x.example.com }",
        "negated",
    );
    refused(
        &report,
        "use_backend pg if { ssl_sni -i y.example.com }",
        "ssl_sni",
    );
    // no wait: HAProxy sends it all to the default backend
    let nowait = e(
        &report,
        "use_backend pg if { req.ssl_sni -i db2.example.com }",
    );
    assert_eq!(nowait.fidelity, Fidelity::Approximated, "{nowait:?}");
    assert!(nowait.note.contains("does not wait"), "{nowait:?}");
    let zero = e(
        &report,
        "use_backend pg if { req.ssl_sni -i db3.example.com }",
    );
    assert_eq!(zero.fidelity, Fidelity::Approximated, "{zero:?}");
    refused(&report, "tcp-request inspect-delay 0", "0");
    assert!(on(&cfg, "127.0.0.1:5445")
        .get("request_header_timeout")
        .is_none());
}

/// A backend that serves HAProxy's stats page on a frontend's path: its
/// lines say where rampart's page is, and the use_backend line for it why
/// it is left out (not "not in this file").
#[test]
fn a_stats_backend_points_at_the_admin_servers_page() {
    let (cfg, report) = run("frontend fe
  bind 127.0.0.1:8082
  use_backend stat if { path -i /proxy-stats }
  default_backend app
backend stat
  stats enable
  stats uri /proxy-stats
  stats hide-version
backend app
  server s 127.0.0.1:9000
");
    assert!(array(&on(&cfg, "127.0.0.1:8082"), "rule").is_empty());
    refused(
        &report,
        "use_backend stat if { path -i /proxy-stats }",
        "admin server",
    );
    for line in [
        "backend stat",
        "stats uri /proxy-stats",
        "stats hide-version",
    ] {
        assert!(
            reported(&report, line, Fidelity::Approximated),
            "{line}: {report:#?}"
        );
    }
}
