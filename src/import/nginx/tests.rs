//! The nginx importer on small configs: what each one must (not) become.

use super::{duration, import};
use crate::import::{Entry, Fidelity};

/// The import of an `http` block holding `body`, with an upstream `u`.
fn http(body: &str) -> (toml::Value, Vec<Entry>) {
    run(&format!(
        "events {{}}\nhttp {{\n  upstream u {{ server 10.0.0.1:80; }}\n{body}\n}}\n"
    ))
}

fn run(src: &str) -> (toml::Value, Vec<Entry>) {
    let im = import(src, "test.conf");
    let cfg: toml::Value = toml::from_str(&im.toml).unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
    (cfg, im.report)
}

fn listeners(cfg: &toml::Value) -> Vec<toml::Value> {
    cfg.get("listener")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default()
}

/// The listener whose first bind address is `addr`.
fn on(cfg: &toml::Value, addr: &str) -> toml::Value {
    listeners(cfg)
        .into_iter()
        .find(|l| l["bind"][0].as_str() == Some(addr))
        .unwrap_or_else(|| panic!("no listener on {addr}: {cfg:#?}"))
}

fn rules(l: &toml::Value) -> Vec<toml::Value> {
    l.get("rule")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default()
}

fn str_of<'a>(r: &'a toml::Value, k: &str) -> Option<&'a str> {
    r.get(k).and_then(|v| v.as_str())
}

/// The index of the first rule `f` accepts.
fn pos(rs: &[toml::Value], f: impl Fn(&toml::Value) -> bool) -> usize {
    rs.iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such rule in {rs:#?}"))
}

#[test]
fn ssl_is_a_property_of_each_listen_address() {
    let (cfg, _) = http(
        "server { listen 80; listen 443 ssl; server_name a.example;
           ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
           location / { proxy_pass http://u; } }",
    );
    assert_eq!(listeners(&cfg).len(), 2, "{cfg:#?}");
    assert!(on(&cfg, "0.0.0.0:80").get("tls").is_none());
    assert!(on(&cfg, "0.0.0.0:443").get("tls").is_some());
}

#[test]
fn a_server_that_shares_only_some_addresses_keeps_its_rules() {
    let (cfg, _) = http(
        "server { listen 80; listen 8080; server_name a.example; location / { proxy_pass http://u; } }
         server { listen 80; server_name b.example; location / { return 403; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    pos(&rs, |r| {
        str_of(r, "host") == Some("b.example")
            && r.get("deny").and_then(|d| d.as_integer()) == Some(403)
    });
    // :8080 is server a's alone
    assert!(!rules(&on(&cfg, "0.0.0.0:8080"))
        .iter()
        .any(|r| str_of(r, "host") == Some("b.example")));
}

#[test]
fn a_server_without_a_usable_name_catches_no_host() {
    let (cfg, report) = http(
        "server { listen 80 default_server; server_name a.example; location / { proxy_pass http://u; } }
         server { listen 80; server_name _; location / { return 403; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    assert!(!rs.iter().any(|r| r.get("deny").is_some()), "{rs:#?}");
    assert!(
        report
            .iter()
            .any(|e| e.directive == "server" && e.fidelity == Fidelity::Unsupported),
        "{report:#?}"
    );
}

#[test]
fn exact_server_names_come_before_wildcards() {
    let (cfg, _) = http(
        "server { listen 80; server_name default.example; location / { proxy_pass http://u; } }
         server { listen 80; server_name *.example.com; location / { return 403; } }
         server { listen 80; server_name api.example.com; location / { return 302 http://api.example.net/; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let exact = pos(&rs, |r| str_of(r, "host") == Some("api.example.com"));
    let wildcard = pos(&rs, |r| str_of(r, "host") == Some("*.example.com"));
    assert!(exact < wildcard, "{rs:#?}");
}

/// nginx's order: exact names, `*.NAME` longest first, `NAME.*` longest
/// first, then the default server.
#[test]
fn trailing_wildcard_server_names_come_after_leading_ones() {
    let (cfg, report) = http(
        "server { listen 80; server_name default.example; location / { proxy_pass http://u; } }
         server { listen 80; server_name mail.*; location / { return 403; } }
         server { listen 80; server_name mail.example.* *.example.com; location / { return 404; } }
         server { listen 80; server_name mail.example.com; location / { return 410; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let at = |h: &str| pos(&rs, |r| str_of(r, "host") == Some(h));
    let order = [
        at("mail.example.com"),
        at("*.example.com"),
        at("mail.example.*"),
        at("mail.*"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?} {rs:#?}");
    assert!(report
        .iter()
        .any(|e| e.directive == "server_name mail.*" && e.fidelity == Fidelity::Mapped));
}

#[test]
fn the_longest_prefix_wins_over_a_shorter_caret_tilde_one() {
    let (cfg, report) = http(
        "server { listen 80;
           location ^~ /api/ { return 403; }
           location /api/v2/ { proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let v2 = pos(&rs, |r| str_of(r, "path_prefix") == Some("/api/v2/"));
    let api = pos(&rs, |r| str_of(r, "path_prefix") == Some("/api/"));
    assert!(v2 < api, "{rs:#?}");
    assert!(!report
        .iter()
        .any(|e| e.directive == "location /api/v2/" && e.fidelity != Fidelity::Mapped));
    // with a regex location, nginx would try it first for /api/v2/...: said
    let (_, report) = http(
        r"server { listen 80;
           location ^~ /api/ { return 403; }
           location /api/v2/ { proxy_pass http://u; }
           location ~ \.php$ { return 404; } }",
    );
    assert!(
        report
            .iter()
            .any(|e| e.directive == "location /api/v2/" && e.fidelity == Fidelity::Approximated),
        "{report:#?}"
    );
}

#[test]
fn a_locations_own_proxy_settings_win_over_the_http_levels() {
    let (cfg, _) = run("events {}
         http {
           proxy_read_timeout 10s;
           upstream u { server 10.0.0.1:80; }
           server { listen 80; location / { proxy_read_timeout 99s; proxy_pass http://u; } }
         }");
    assert_eq!(cfg["pool"][0]["server_timeout"].as_str(), Some("99s"));
}

#[test]
fn a_rewrite_keeps_its_locations_prefix() {
    let (cfg, report) = http(
        r"server { listen 80;
           location /old/ { rewrite ^ https://new.example/ permanent; }
           location / { proxy_pass http://u; }
           location ~ ^/x { rewrite ^/x/a$ https://new.example/a permanent; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let r = &rs[pos(&rs, |r| r.get("redirect").is_some())];
    assert_eq!(str_of(r, "path_prefix"), Some("/old/"), "{r:#?}");
    assert_eq!(str_of(r, "path_regex"), Some("^"));
    // in a regex location, two regexes: not imported, and said
    assert_eq!(
        rs.iter().filter(|r| r.get("redirect").is_some()).count(),
        1,
        "{rs:#?}"
    );
    assert!(report
        .iter()
        .any(|e| e.directive.starts_with("rewrite ^/x/a$") && e.fidelity == Fidelity::Unsupported));
}

#[test]
fn a_locations_own_access_rules_replace_the_servers() {
    let (cfg, _) = http(
        "server { listen 80;
           allow 10.0.0.0/8; deny all;
           location /public/ { allow all; proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let public = pos(&rs, |r| str_of(r, "path_prefix") == Some("/public/"));
    let deny = pos(&rs, |r| r.get("deny").is_some());
    assert!(public < deny, "{rs:#?}");
}

#[test]
fn a_locations_own_add_header_replaces_the_servers() {
    let (cfg, _) = http(
        "server { listen 80;
           add_header X-A a always;
           location /own/ { add_header X-B b always; proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let own = pos(&rs, |r| {
        str_of(r, "path_prefix") == Some("/own/") && r.get("pool").is_some()
    });
    let xa = pos(&rs, |r| {
        r.get("response_set_header")
            .is_some_and(|h| h.get("X-A").is_some())
    });
    assert!(own < xa, "{rs:#?}");
}

#[test]
fn server_name_is_the_first_name_and_other_variables_are_refused() {
    let (cfg, report) = http(
        "server { listen 80; server_name www.example.com example.com;
           return 301 https://$server_name$request_uri; }
         server { listen 8080; return 301 https://$hostname/; }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    assert_eq!(
        rs[0]["redirect"]["to"].as_str(),
        Some("https://www.example.com{uri}")
    );
    assert!(!rules(&on(&cfg, "0.0.0.0:8080"))
        .iter()
        .any(|r| r.get("redirect").is_some()));
    assert!(report
        .iter()
        .any(|e| e.directive == "return 301 https://$hostname/"
            && e.fidelity == Fidelity::Unsupported));
    assert_eq!(
        super::server::redirect_vars("$scheme://$host$is_args$args", "x"),
        None
    );
    assert_eq!(
        super::server::redirect_vars("https://${host}/a$is_args$args", "x").as_deref(),
        Some("https://{host}/a{query}")
    );
}

#[test]
fn a_weight_over_256_is_reported() {
    let (cfg, report) = run("events {}
         http {
           upstream w { server 10.0.0.1:80 weight=1000; server 10.0.0.2:80; }
           server { listen 80; location / { proxy_pass http://w; } }
         }");
    assert_eq!(
        cfg["pool"][0]["server"][0]["weight"].as_integer(),
        Some(256)
    );
    assert!(report
        .iter()
        .any(|e| e.directive.contains("weight=1000") && e.fidelity == Fidelity::Approximated));
}

#[test]
fn proxy_pass_to_an_upstream_left_out_is_not_a_host_name() {
    let (cfg, report) = run("events {}
         http {
           upstream sock { server unix:/run/app.sock; }
           server { listen 80; location / { proxy_pass http://sock; } }
         }");
    let pools = cfg["pool"].as_array().unwrap();
    assert!(
        !pools
            .iter()
            .any(|p| p["server"][0]["address"].as_str() == Some("sock:80")),
        "{pools:#?}"
    );
    assert!(report
        .iter()
        .any(|e| e.directive == "proxy_pass http://sock" && e.fidelity == Fidelity::Unsupported));
}

#[test]
fn a_client_ca_without_ssl_verify_client_verifies_nothing() {
    let (cfg, report) = http(
        "server { listen 443 ssl; ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
           ssl_client_certificate /nonexistent/ca.pem; location / { proxy_pass http://u; } }
         server { listen 8443 ssl; ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
           ssl_client_certificate /nonexistent/ca.pem; ssl_verify_client optional;
           location / { proxy_pass http://u; } }",
    );
    let l443 = on(&cfg, "0.0.0.0:443");
    let plain = &l443["tls"];
    assert!(plain.get("client_ca").is_none(), "{plain:#?}");
    let l8443 = on(&cfg, "0.0.0.0:8443");
    let optional = &l8443["tls"];
    assert_eq!(optional["client_ca"].as_str(), Some("/nonexistent/ca.pem"));
    assert_eq!(optional["client_auth"].as_str(), Some("optional"));
    // the CA left out is said so, not reported as a client_ca
    assert!(
        report.iter().any(
            |e| e.directive == "ssl_client_certificate /nonexistent/ca.pem"
                && e.note.starts_with("not imported")
        ),
        "{report:#?}"
    );
}

#[test]
fn ssl_verify_client_and_ssl_client_certificate_of_http_hold_in_its_servers() {
    let (cfg, report) = run("events {}
         http {
           ssl_verify_client on;
           upstream u { server 10.0.0.1:80; }
           server { listen 443 ssl; ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
             ssl_client_certificate /nonexistent/ca.pem; ssl_crl /nonexistent/crl.pem;
             location / { proxy_pass http://u; } }
           server { listen 8443 ssl; ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
             location / { proxy_pass http://u; } }
           server { listen 9443 ssl; ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
             ssl_verify_client off; location / { proxy_pass http://u; } }
           ssl_client_certificate /nonexistent/http-ca.pem;
           ssl_crl /nonexistent/http-crl.pem;
         }");
    // the server's own CA, verified as the http level says
    let l443 = on(&cfg, "0.0.0.0:443");
    let own = &l443["tls"];
    assert_eq!(
        own["client_ca"].as_str(),
        Some("/nonexistent/ca.pem"),
        "{own:#?}"
    );
    assert_eq!(own["client_auth"].as_str(), Some("required"));
    assert_eq!(own["client_crl"].as_str(), Some("/nonexistent/crl.pem"));
    // the http level's CA, written after the server blocks: nginx merges it all the same
    let l8443 = on(&cfg, "0.0.0.0:8443");
    let inherited = &l8443["tls"];
    assert_eq!(
        inherited["client_ca"].as_str(),
        Some("/nonexistent/http-ca.pem"),
        "{inherited:#?}"
    );
    assert_eq!(inherited["client_auth"].as_str(), Some("required"));
    assert_eq!(
        inherited["client_crl"].as_str(),
        Some("/nonexistent/http-crl.pem")
    );
    // a server's own ssl_verify_client off wins
    let l9443 = on(&cfg, "0.0.0.0:9443");
    let off = &l9443["tls"];
    assert!(off.get("client_ca").is_none(), "{off:#?}");
    assert!(off.get("client_auth").is_none(), "{off:#?}");
    assert!(off.get("client_crl").is_none(), "{off:#?}");
    assert!(
        report
            .iter()
            .any(|e| e.directive == "ssl_verify_client on" && e.fidelity == Fidelity::Mapped),
        "{report:#?}"
    );
}

#[test]
fn a_servers_proxy_settings_win_over_the_http_levels_wherever_they_are() {
    for server in [
        "proxy_read_timeout 120s; location / { proxy_pass http://u; }",
        "location / { proxy_pass http://u; } proxy_read_timeout 120s;",
    ] {
        let (cfg, _) = run(&format!(
            "events {{}}
             http {{
               proxy_read_timeout 60s;
               upstream u {{ server 10.0.0.1:80; }}
               server {{ listen 80; {server} }}
             }}"
        ));
        assert_eq!(
            cfg["pool"][0]["server_timeout"].as_str(),
            Some("120s"),
            "{server}"
        );
    }
    // and a location's own wins over both
    let (cfg, _) = run("events {}
         http {
           proxy_read_timeout 60s;
           upstream u { server 10.0.0.1:80; }
           server { listen 80;
             location / { proxy_read_timeout 99s; proxy_pass http://u; }
             proxy_read_timeout 120s; }
         }");
    assert_eq!(cfg["pool"][0]["server_timeout"].as_str(), Some("99s"));
}

#[test]
fn a_stream_tls_server_without_a_certificate_is_reported() {
    let (_, report) = run(
        "stream { upstream pg { server 10.0.0.1:5432; } server { listen 5433 ssl; proxy_pass pg; } }",
    );
    assert!(
        report
            .iter()
            .any(|e| e.fidelity == Fidelity::Unsupported && e.note.contains("ssl_certificate")),
        "{report:#?}"
    );
}

#[test]
fn huge_numbers_are_refused_not_overflowed() {
    assert_eq!(duration("99999999999999999s"), None);
    assert_eq!(duration("2m").as_deref(), Some("120s"));
    let (_, report) = run("events {}
         http {
           proxy_read_timeout 99999999999999999s;
           limit_req_zone $binary_remote_addr zone=z:99999999999999999m rate=1r/s;
           upstream u { server 10.0.0.1:80; }
           server { listen 80; location / { limit_req zone=z; proxy_pass http://u; } }
         }");
    assert!(report
        .iter()
        .any(|e| e.directive.starts_with("proxy_read_timeout")
            && e.fidelity == Fidelity::Unsupported));
}

/// nginx Plus's `sticky cookie` is the upstream's `[pool.cookie]`: nginx
/// passes the cookie on and adds no Cache-Control (indirect and nocache off),
/// and sets HttpOnly only when told (rampart's default is on).
#[test]
fn sticky_cookie_is_the_pools_cookie() {
    let (cfg, report) = run("events {}
         http {
           upstream u {
             server 10.0.0.1:80;
             server 10.0.0.2:80;
             sticky cookie srv_id expires=1h domain=.example.com path=/ httponly secure samesite=lax;
           }
           server { listen 80; location / { proxy_pass http://u; } }
         }");
    let want: toml::Value = toml::from_str(
        r#"name = "srv_id"
indirect = false
nocache = false
httponly = true
secure = true
max_age = "3600s"
domain = ".example.com"
path = "/"
same_site = "Lax""#,
    )
    .unwrap();
    assert_eq!(cfg["pool"][0]["cookie"], want, "{cfg:#?}");
    let e = report
        .iter()
        .find(|e| e.directive.starts_with("sticky cookie"))
        .unwrap();
    assert_eq!(e.fidelity, Fidelity::Mapped, "{e:#?}");
    // rampart's loader took it as it is
    assert!(
        !report.iter().any(|e| e.directive == "(check)"),
        "{report:#?}"
    );
    // expires=max: what nginx sends as max-age for `expires max`
    let (cfg, _) = run("events {}
         http {
           upstream u { server 10.0.0.1:80; sticky cookie s expires=max; }
           server { listen 80; location / { proxy_pass http://u; } }
         }");
    let c = &cfg["pool"][0]["cookie"];
    assert_eq!(c["max_age"].as_str(), Some("315360000s"), "{c:#?}");
    assert_eq!(c["httponly"].as_bool(), Some(false), "{c:#?}");
}

#[test]
fn sticky_route_and_learn_are_unsupported() {
    let (cfg, report) = run("events {}
         http {
           upstream u { server 10.0.0.1:80 route=a; sticky route $route_cookie $route_uri; }
           upstream v {
             server 10.0.0.2:80;
             sticky learn create=$upstream_cookie_sid lookup=$cookie_sid zone=sessions:1m;
           }
           server { listen 80;
             location /v/ { proxy_pass http://v; }
             location / { proxy_pass http://u; } }
         }");
    for p in cfg["pool"].as_array().unwrap() {
        assert!(p.get("cookie").is_none(), "{p:#?}");
    }
    for d in ["sticky route", "sticky learn"] {
        assert!(
            report
                .iter()
                .any(|e| e.directive.starts_with(d) && e.fidelity == Fidelity::Unsupported),
            "{d}: {report:#?}"
        );
    }
}

/// `client_max_body_size` at the http level is each listener's
/// `max_request_body` (in bytes); a server's own is a rule before its
/// locations', and a location's own is on the rules that proxy it (the
/// last matching rule with one decides, as nginx's innermost level does).
#[test]
fn body_limits_are_the_listeners_a_servers_and_a_locations() {
    let server = "server { listen 80; location / { proxy_pass http://u; } }";
    let (cfg, report) = http(&format!("  client_max_body_size 10m;\n  {server}"));
    let l = on(&cfg, "0.0.0.0:80");
    assert_eq!(l["max_request_body"].as_integer(), Some(10 << 20));
    assert!(rules(&l)
        .iter()
        .all(|r| r.get("max_request_body").is_none()));
    assert!(report
        .iter()
        .any(|e| e.directive == "client_max_body_size 10m" && e.fidelity == Fidelity::Mapped));
    let (cfg, report) = http(
        "  client_max_body_size 1m;\n  server { listen 80; client_max_body_size 2m;\n    location /up { client_max_body_size 0; proxy_pass http://u; }\n    location / { client_max_body_size 1k; proxy_pass http://u; }\n    location /api { proxy_pass http://u; } }",
    );
    let l = on(&cfg, "0.0.0.0:80");
    assert_eq!(l["max_request_body"].as_integer(), Some(1 << 20));
    let limit = |r: &toml::Value| r.get("max_request_body").and_then(|v| v.as_integer());
    let rs = rules(&l);
    // the server's, first and for every request of it
    let server_rule = rs.iter().position(|r| limit(r) == Some(2 << 20));
    assert_eq!(server_rule, Some(0), "{rs:#?}");
    assert!(str_of(&rs[0], "path_prefix").is_none() && str_of(&rs[0], "pool").is_none());
    // each location's on the rule that proxies it; /api has none of its own
    let of = |prefix: &str| {
        rs.iter()
            .find(|r| str_of(r, "path_prefix") == Some(prefix) && r.get("pool").is_some())
            .unwrap_or_else(|| panic!("no rule for {prefix}: {rs:#?}"))
    };
    assert_eq!(limit(of("/up")), Some(0));
    assert_eq!(limit(of("/api")), None);
    // `location /` with a limit of its own is a rule, not the default pool
    let root = rs
        .iter()
        .find(|r| r.get("path_prefix").is_none() && r.get("pool").is_some())
        .unwrap_or_else(|| panic!("no rule for /: {rs:#?}"));
    assert_eq!(limit(root), Some(1 << 10));
    for d in [
        "client_max_body_size 1m",
        "client_max_body_size 2m",
        "client_max_body_size 0",
        "client_max_body_size 1k",
    ] {
        assert!(
            report
                .iter()
                .any(|e| e.directive == d && e.fidelity == Fidelity::Mapped),
            "{d}: {report:#?}"
        );
    }
    // and the result is a config rampart takes
    let im = import(
        "events {}\nhttp { upstream u { server 10.0.0.1:80; }\n server { listen 80; client_max_body_size 2m; location /up { client_max_body_size 0; proxy_pass http://u; } location / { proxy_pass http://u; } } }\n",
        "test.conf",
    );
    crate::config::parse(&im.toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
}

/// The pages of a listener: status → file.
fn pages(l: &toml::Value) -> Vec<(String, String)> {
    l.get("error_pages")
        .and_then(|p| p.as_table())
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn entry<'a>(report: &'a [Entry], directive: &str) -> &'a Entry {
    report
        .iter()
        .find(|e| e.directive == directive)
        .unwrap_or_else(|| panic!("no {directive:?} in {report:#?}"))
}

/// `error_page CODE ... URI`: the file nginx serves for the URI (the
/// location it reaches, its root or alias, else the server's or the http
/// level's root) is the listener's page for each status.
#[test]
fn error_page_uris_become_the_files_of_the_listeners_error_pages() {
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    // nginx's own default: a location with its root
    let (cfg, report) = http(
        "server { listen 80;
           error_page 500 502 503 504 /50x.html;
           location / { proxy_pass http://u; }
           location = /50x.html { root /usr/share/nginx/html; } }",
    );
    let f = "/usr/share/nginx/html/50x.html";
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:80")),
        vec![p("500", f), p("502", f), p("503", f), p("504", f)]
    );
    assert_eq!(
        entry(&report, "error_page 500 502 503 504 /50x.html").fidelity,
        Fidelity::Mapped
    );
    assert_eq!(
        entry(&report, "root /usr/share/nginx/html").fidelity,
        Fidelity::Mapped
    );
    // the http level's, with the http level's root; an alias; a prefix location
    let (cfg, report) = http(
        "  root /srv/www;\n  error_page 404 /errors/404.html;\n  error_page 502 /502.json;\n
         server { listen 80; location / { proxy_pass http://u; } location /errors/ { alias /srv/pages/; } location = /502.json { internal; } }
         server { listen 81; location / { proxy_pass http://u; } error_page 503 /maint.html; root /srv/81; location = /maint.html { } }",
    );
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:80")),
        vec![
            p("404", "/srv/pages/404.html"),
            p("502", "/srv/www/502.json")
        ]
    );
    // a server with its own lines inherits none of the http level's
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:81")),
        vec![p("503", "/srv/81/maint.html")]
    );
    assert_eq!(entry(&report, "root /srv/www").fidelity, Fidelity::Mapped);
    assert_eq!(
        entry(&report, "alias /srv/pages/").fidelity,
        Fidelity::Mapped
    );
    // a URI that reaches a location that proxies is not a file
    let (_, report2) = http(
        "  error_page 502 /502.json;\n  server { listen 80; root /srv; location / { proxy_pass http://u; } }",
    );
    assert!(entry(&report2, "error_page 502 /502.json")
        .note
        .contains("proxies"));
    // what is not a file, or changes the status: not imported
    for (line, why) in [
        ("error_page 404 =200 /empty.gif", "=CODE"),
        ("error_page 502 @fallback", "named location"),
        ("error_page 503 https://status.example/", "redirect"),
        ("error_page 502 /api/down", "proxies"),
    ] {
        let (cfg, report) = http(&format!(
            "server {{ listen 80; {line}; root /srv; location / {{ proxy_pass http://u; }} }}"
        ));
        assert!(pages(&on(&cfg, "0.0.0.0:80")).is_empty(), "{line}");
        let e = entry(&report, line);
        assert_eq!(e.fidelity, Fidelity::Unsupported, "{line}");
        assert!(e.note.contains(why), "{line}: {}", e.note);
        // a root no page reads serves nothing in rampart
        assert_eq!(entry(&report, "root /srv").fidelity, Fidelity::Unsupported);
    }
    // no root: nginx's relative html, which rampart cannot find
    let (cfg, report) = http(
        "server { listen 80; error_page 502 /50x.html; location /api/ { proxy_pass http://u; } }",
    );
    assert!(pages(&on(&cfg, "0.0.0.0:80")).is_empty());
    let e = entry(&report, "error_page 502 /50x.html");
    assert_eq!(e.fidelity, Fidelity::Unsupported);
    assert!(e.note.contains("relative"), "{}", e.note);
    // intercepted errors, said
    let (cfg, report) = http(
        "server { listen 80; root /srv; error_page 502 /50x.html; proxy_intercept_errors on;
           location /api/ { proxy_pass http://u; } }",
    );
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:80")),
        vec![p("502", "/srv/50x.html")]
    );
    let e = entry(&report, "error_page 502 /50x.html");
    assert_eq!(e.fidelity, Fidelity::Approximated);
    assert!(e.note.contains("proxy_intercept_errors"), "{}", e.note);
    // two servers of one listener with different pages: the default server's
    let (cfg, report) = http(
        "server { listen 80; server_name a.example; error_page 502 /a.html; root /a; location /api { proxy_pass http://u; } }
         server { listen 80; server_name b.example; error_page 502 /b.html; root /b; location /api { proxy_pass http://u; } }",
    );
    assert_eq!(pages(&on(&cfg, "0.0.0.0:80")), vec![p("502", "/a/a.html")]);
    assert!(report.iter().any(|e| e.fidelity == Fidelity::Approximated
        && e.note.contains("differ from the default server's")));
    // a conf.d snippet (no http block): the top level is the http level
    let (cfg, _) = run(
        "upstream u { server 10.0.0.1:80; }\nerror_page 503 /503.html;\nroot /srv;\nserver { listen 80; location /api/ { proxy_pass http://u; } }\n",
    );
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:80")),
        vec![p("503", "/srv/503.html")]
    );
}

/// A page under a location that serves files first (`try_files $uri
/// @proxy`, as Mastodon's nginx.conf has it) is the file.
#[test]
fn an_error_page_under_try_files_is_the_file() {
    let (cfg, report) = http(
        "server { listen 80; root /srv/public; error_page 500 502 /500.html;
           location / { try_files $uri @proxy; }
           location @proxy { proxy_pass http://u; } }",
    );
    assert_eq!(
        pages(&on(&cfg, "0.0.0.0:80")),
        vec![
            ("500".to_string(), "/srv/public/500.html".to_string()),
            ("502".to_string(), "/srv/public/500.html".to_string())
        ]
    );
    let e = entry(&report, "error_page 500 502 /500.html");
    assert!(
        e.note.contains("@proxy when the file is missing"),
        "{}",
        e.note
    );
    // a URI that a script handler answers (Laravel's `error_page 404
    // /index.php`) is no file to serve: its source would be the page
    let (cfg, report) = http(
        "server { listen 80; root /srv/app/public; error_page 404 /index.php;
           location ~ \\.php$ { try_files $uri =404; fastcgi_pass 127.0.0.1:9000; }
           location /api/ { proxy_pass http://u; } }",
    );
    assert!(pages(&on(&cfg, "0.0.0.0:80")).is_empty());
    let e = entry(&report, "error_page 404 /index.php");
    assert_eq!(e.fidelity, Fidelity::Unsupported);
    assert!(e.note.contains("fastcgi_pass"), "{}", e.note);
}

/// `return 200 "text"` (a health answer of nginx's own) and `return 204`:
/// respond rules; a location answered so gets no "not imported" rule.
#[test]
fn return_of_a_success_status_is_a_respond_rule() {
    let (cfg, report) = http(
        "server { listen 80;
           location = /healthz { return 200 \"ok\\n\"; }
           location = /ping { return 204; }
           location = /ip { return 200 $remote_addr; }
           location = /t { default_type application/json; return 200 '{}'; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let h = &rs[pos(&rs, |r| str_of(r, "path") == Some("/healthz"))];
    assert_eq!(h["respond"]["status"].as_integer(), Some(200));
    assert_eq!(h["respond"]["body"].as_str(), Some("ok\n"));
    let j = &rs[pos(&rs, |r| str_of(r, "path") == Some("/t"))];
    assert_eq!(
        j["respond"]["content_type"].as_str(),
        Some("application/json")
    );
    let p = &rs[pos(&rs, |r| str_of(r, "path") == Some("/ping"))];
    assert_eq!(p["respond"]["status"].as_integer(), Some(204));
    assert!(!rs.iter().any(
        |r| matches!(str_of(r, "path"), Some("/healthz" | "/ping")) && r.get("deny").is_some()
    ));
    for (line, f) in [
        ("return 204", Fidelity::Mapped),
        ("return 200 \"ok\\n\"", Fidelity::Approximated),
        ("return 200 $remote_addr", Fidelity::Unsupported),
        ("return 200 {}", Fidelity::Mapped),
    ] {
        assert_eq!(entry(&report, line).fidelity, f, "{line}");
    }
}

/// `proxy_set_header Authorization $http_authorization`: the client's own
/// field, which rampart passes on anyway.
#[test]
fn a_header_set_to_its_own_value_is_passed_on() {
    let (_, report) = http(
        "server { listen 80; location / { proxy_set_header Authorization $http_authorization; proxy_set_header X-Api-Key $http_x_api_key; proxy_set_header X-Other $http_x_api_key; proxy_pass http://u; } }",
    );
    for (line, f) in [
        (
            "proxy_set_header Authorization $http_authorization",
            Fidelity::Mapped,
        ),
        (
            "proxy_set_header X-Api-Key $http_x_api_key",
            Fidelity::Mapped,
        ),
        (
            "proxy_set_header X-Other $http_x_api_key",
            Fidelity::Unsupported,
        ),
    ] {
        assert_eq!(entry(&report, line).fidelity, f, "{line}");
    }
}

/// `proxy_set_header X-Real-IP $remote_addr`: the listeners' client_ip_header.
#[test]
fn x_real_ip_from_remote_addr_is_the_client_ip_header() {
    let (cfg, report) = http(
        "server { listen 80; location / { proxy_set_header X-Real-IP $remote_addr; proxy_pass http://u; } }",
    );
    assert_eq!(
        str_of(&on(&cfg, "0.0.0.0:80"), "client_ip_header"),
        Some("X-Real-IP")
    );
    assert_eq!(
        entry(&report, "proxy_set_header X-Real-IP $remote_addr").fidelity,
        Fidelity::Mapped
    );
}

#[test]
fn proxy_pass_with_a_uri_replaces_the_locations_prefix() {
    let (cfg, report) = http(
        "server { listen 80;
           location /api/ { proxy_pass http://u/; }
           location = /exact { proxy_pass http://u/other; }
           location /same/ { proxy_pass http://u/same/; }
           location /q/ { proxy_pass http://u/x?a=1; }
           location / { proxy_pass http://u/app/; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let api = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/api/"))];
    assert_eq!(str_of(api, "rewrite_prefix"), Some("/"), "{api:#?}");
    assert_eq!(str_of(api, "pool"), Some("u"));
    let exact = &rs[pos(&rs, |r| str_of(r, "path") == Some("/exact"))];
    assert_eq!(str_of(exact, "rewrite_prefix"), Some("/other"));
    let same = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/same/"))];
    assert_eq!(
        same.get("rewrite_prefix"),
        None,
        "the same URI: nothing to do"
    );
    let q = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/q/"))];
    assert_eq!(q.get("rewrite_prefix"), None, "a query: not imported");
    assert_eq!(
        entry(&report, "proxy_pass http://u/x?a=1").fidelity,
        Fidelity::Approximated
    );
    // `location /` with a URI: a rule with the prefix "/", not the default pool
    let root = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/"))];
    assert_eq!(str_of(root, "rewrite_prefix"), Some("/app/"));
    assert_eq!(
        entry(&report, "proxy_pass http://u/").fidelity,
        Fidelity::Mapped
    );
}

#[test]
fn rewrites_of_the_path_become_rewrite_path() {
    let (cfg, report) = http(
        r"server { listen 80;
           rewrite ^/zpi/(.*)$ /api/$1 last;
           location /a/ { rewrite ^/a/(?<rest>.*)$ /b/$rest break; proxy_pass http://u; }
           location /both/ { rewrite ^/both/x/(.*)$ /y/$1a break; proxy_pass http://u/z/; }
           location /again/ { rewrite ^/again/(.*)$ /a/$1 last; }
           location /nopass/ { rewrite ^(.*)$ /n$1 break; }
           location /args/ { rewrite ^(.*)$ /n$1?x=1 break; proxy_pass http://u; }
           location /var/ { rewrite ^(.*)$ /$host$1 break; proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let to = |r: &toml::Value| {
        let w = &r["rewrite_path"];
        (
            w["regex"].as_str().unwrap().to_string(),
            w["to"].as_str().unwrap().to_string(),
        )
    };
    // the server's, before every location's rules
    assert_eq!(
        to(&rs[0]),
        ("^/zpi/(.*)$".to_string(), "/api/${1}".to_string())
    );
    assert_eq!(rs[0].get("pool"), None);
    assert_eq!(
        entry(&report, "rewrite ^/zpi/(.*)$ /api/$1 last").fidelity,
        Fidelity::Mapped
    );
    // break: on the rule that proxies
    let a = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/a/"))];
    assert_eq!(to(a).1, "/b/${rest}");
    assert_eq!(str_of(a, "pool"), Some("u"));
    // break and a URI part: the rewrite where its regex matches, else the URI
    let both: Vec<_> = rs
        .iter()
        .filter(|r| str_of(r, "path_prefix") == Some("/both/"))
        .collect();
    assert_eq!(both.len(), 2, "{both:#?}");
    assert_eq!(str_of(both[0], "path_regex"), Some("^/both/x/(.*)$"));
    assert_eq!(to(both[0]).1, "/y/${1}a", "nginx's $1a is $1 and a");
    assert_eq!(str_of(both[1], "rewrite_prefix"), Some("/z/"));
    // last: a rule of its own, approximated
    let again = &rs[pos(&rs, |r| str_of(r, "path_prefix") == Some("/again/"))];
    assert_eq!(to(again).1, "/a/${1}");
    assert_eq!(again.get("pool"), None);
    assert_eq!(
        entry(&report, "rewrite ^/again/(.*)$ /a/$1 last").fidelity,
        Fidelity::Approximated
    );
    for (line, why) in [
        ("rewrite ^(.*)$ /n$1 break", "does not proxy"),
        ("rewrite ^(.*)$ /n$1?x=1 break", "the query"),
        (
            "rewrite ^(.*)$ /$host$1 break",
            "not one of the regex's captures",
        ),
    ] {
        let e = entry(&report, line);
        assert_eq!(e.fidelity, Fidelity::Unsupported, "{line}");
        assert!(e.note.contains(why), "{line}: {}", e.note);
    }
    // what the importer wrote, rampart reads
    let im = import(
        "events {}\nhttp {\n upstream u { server 10.0.0.1:80; }\n server { listen 80; rewrite ^/zpi/(.*)$ /api/$1 last; location /both/ { rewrite ^/both/x/(.*)$ /y/$1a break; proxy_pass http://u/z/; } location / { proxy_pass http://u; } }\n}\n",
        "t.conf",
    );
    crate::config::parse(&im.toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
}

/// nginx's realip module: `set_real_ip_from`, `real_ip_header` and
/// `real_ip_recursive` of the http level and a server's own (each inherited
/// apart) are the listener's `client_ip_from`, the default server's.
#[test]
fn realip_lines_become_the_listeners_client_ip_from() {
    let (cfg, report) = http(
        "set_real_ip_from 10.0.0.0/8;
         set_real_ip_from 2001:db8::/32;
         real_ip_header X-Forwarded-For;
         server { listen 80; real_ip_recursive on; location / { proxy_pass http://u; } }
         server { listen 81; set_real_ip_from 192.0.2.1; location / { set_real_ip_from 192.0.2.2; proxy_pass http://u; } }
         server { listen 82; real_ip_header proxy_protocol; location / { proxy_pass http://u; } }
         server { listen 83; server_name other; set_real_ip_from 192.0.2.9; location / { proxy_pass http://u; } }
         server { listen 83 default_server; location / { proxy_pass http://u; } }",
    );
    let from = |addr: &str| on(&cfg, addr).get("client_ip_from").cloned();
    let a = from("0.0.0.0:80").expect("the http level's");
    assert_eq!(
        a["from"].as_array().unwrap(),
        &vec![
            toml::Value::from("10.0.0.0/8"),
            toml::Value::from("2001:db8::/32")
        ]
    );
    assert_eq!(a["header"].as_str(), Some("X-Forwarded-For"));
    assert_eq!(a["recursive"].as_bool(), Some(true));
    // a server's own list replaces the http level's; the field is inherited
    let b = from("0.0.0.0:81").unwrap();
    assert_eq!(
        b["from"].as_array().unwrap(),
        &vec![toml::Value::from("192.0.2.1")]
    );
    assert_eq!(b["header"].as_str(), Some("X-Forwarded-For"));
    assert!(b.get("recursive").is_none());
    assert_eq!(
        entry(&report, "set_real_ip_from 192.0.2.2").fidelity,
        Fidelity::Unsupported,
        "a location's own"
    );
    // the PROXY protocol's address is the listener's proxy_protocol
    assert!(from("0.0.0.0:82").is_none());
    assert_eq!(
        entry(&report, "real_ip_header proxy_protocol").fidelity,
        Fidelity::Approximated
    );
    // the default server's for a listener of several, the other said so
    let d = from("0.0.0.0:83").unwrap();
    assert_eq!(d["from"][0].as_str(), Some("10.0.0.0/8"));
    assert!(report
        .iter()
        .any(|e| e.directive == "server" && e.note.contains("realip settings differ")));
    assert_eq!(
        entry(&report, "set_real_ip_from 10.0.0.0/8").fidelity,
        Fidelity::Mapped
    );
    assert_eq!(
        entry(&report, "real_ip_recursive on").fidelity,
        Fidelity::Mapped
    );
}

/// From a review: what follows a `rewrite ... last|break` is skipped by
/// nginx when that rewrite matched (approximated); realip values rampart
/// would refuse are not kept (the import loads); the PROXY protocol beside
/// realip is said to differ.
#[test]
fn what_nginx_would_skip_or_refuse_is_said() {
    let (cfg, report) = http(
        r"set_real_ip_from unix:;
         set_real_ip_from lb.internal;
         set_real_ip_from 10.0.0.0/8;
         real_ip_header X-Forwarded-For;
         server { listen 80 proxy_protocol;
           rewrite ^/a/(.*)$ /b/$1 break;
           rewrite ^/b/(.*)$ /c/$1 break;
           location /x/ { rewrite ^/x/(.*)$ /y/$1 break; return 403; proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    assert_eq!(
        entry(&report, "rewrite ^/a/(.*)$ /b/$1 break").fidelity,
        Fidelity::Mapped
    );
    for d in ["rewrite ^/b/(.*)$ /c/$1 break", "return 403"] {
        let e = entry(&report, d);
        assert_eq!(e.fidelity, Fidelity::Approximated, "{d}");
        assert!(e.note.contains("nginx skips it"), "{d}: {}", e.note);
    }
    let l = on(&cfg, "0.0.0.0:80");
    assert_eq!(
        l["client_ip_from"]["from"].as_array().unwrap(),
        &vec![toml::Value::from("10.0.0.0/8")]
    );
    assert_eq!(
        entry(&report, "set_real_ip_from unix:").fidelity,
        Fidelity::Unsupported
    );
    assert_eq!(
        entry(&report, "(listen proxy_protocol with set_real_ip_from)").fidelity,
        Fidelity::Approximated
    );
    let im = import(
        "events {}\nhttp {\n set_real_ip_from lb.internal;\n set_real_ip_from 10.0.0.0/8;\n upstream u { server 10.0.0.1:80; }\n server { listen 80; location / { proxy_pass http://u; } }\n}\n",
        "t.conf",
    );
    crate::config::parse(&im.toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{}", im.toml));
}

/// nginx's `gzip` lines of the http level and a server's own are the
/// listener's `compression` (text/html always among the types, as nginx
/// compresses it whatever gzip_types says); a location's are not imported.
#[test]
fn gzip_lines_become_the_listeners_compression() {
    let (cfg, report) = http(
        "gzip on;
         gzip_types application/json text/css bogus;
         gzip_min_length 1k;
         gzip_comp_level 6;
         gzip_proxied expired;
         server { listen 80; location / { proxy_pass http://u; } }
         server { listen 81; gzip off; location / { proxy_pass http://u; } }
         server { listen 82; gzip_types *; location / { gzip off; proxy_pass http://u; } }",
    );
    let c = on(&cfg, "0.0.0.0:80")["compression"].clone();
    assert_eq!(
        c["types"].as_array().unwrap(),
        &["text/html", "application/json", "text/css"]
            .map(toml::Value::from)
            .to_vec()
    );
    assert_eq!(c["min_length"].as_integer(), Some(1024));
    assert_eq!(c["level"].as_integer(), Some(6));
    assert!(on(&cfg, "0.0.0.0:81").get("compression").is_none());
    let c = on(&cfg, "0.0.0.0:82")["compression"].clone();
    assert_eq!(c["types"][1].as_str(), Some("*"));
    assert_eq!(entry(&report, "gzip on").fidelity, Fidelity::Approximated);
    for (d, f) in [
        (
            "gzip_types application/json text/css bogus",
            Fidelity::Approximated,
        ),
        ("gzip_proxied expired", Fidelity::Approximated),
        ("gzip off", Fidelity::Mapped),
    ] {
        assert_eq!(entry(&report, d).fidelity, f, "{d}");
    }
    assert!(report
        .iter()
        .any(|e| e.directive == "gzip off" && e.fidelity == Fidelity::Unsupported));
}

/// An include is not followed: where one may set proxy_set_header lines
/// (Debian's `proxy_params` sets `Host $http_host`), the client's Host is
/// passed and the line says why; an include of MIME types, or of server
/// files at the http level, sets none.
#[test]
fn an_include_that_may_set_the_host_leaves_the_clients() {
    let (cfg, report) = http(
        "  include mime.types;\n  include /etc/nginx/conf.d/*.conf;\n\
         server { listen 80;\n\
           location /p/ { include proxy_params; proxy_pass http://u; }\n\
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let host_of = |prefix: Option<&str>| {
        rs.iter()
            .find(|r| str_of(r, "pool").is_some() && str_of(r, "path_prefix") == prefix)
            .and_then(|r| r.get("set_header"))
            .and_then(|h| h.get("Host"))
            .and_then(|h| h.as_str())
            .map(String::from)
    };
    assert_eq!(host_of(Some("/p/")), None, "{rs:#?}");
    assert_eq!(host_of(None).as_deref(), Some("u"), "{rs:#?}");
    let e = report
        .iter()
        .filter(|e| e.directive == "proxy_pass http://u")
        .map(|e| (e.fidelity, e.note.contains("include")))
        .collect::<Vec<_>>();
    assert_eq!(
        e,
        [(Fidelity::Approximated, true), (Fidelity::Mapped, false)],
        "{report:#?}"
    );
}

/// The routes of a listener, as (sni, pool).
fn routes(l: &toml::Value) -> Vec<(String, String)> {
    l.get("route")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                str_of(r, "sni").unwrap_or("?").to_string(),
                str_of(r, "pool").unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// nginx's SNI proxy: a map of `$ssl_preread_server_name` that a stream
/// server's `proxy_pass` names becomes that tcp listener's routes, in
/// nginx's precedence (exact names as listed, then `*.x` and `x.*` longest
/// first); `default` is the listener's pool, `""` a ClientHello without a
/// name; a regex line and a mask without `hostnames` are refused; without a
/// default the listener has no pool; without `ssl_preread on` the map gives
/// its default.
#[test]
fn a_map_of_the_server_name_becomes_the_listeners_sni_routes() {
    let (cfg, report) = run("stream {
           preread_timeout 7s;
           upstream dflt { server 127.0.0.1:9001; }
           upstream pg { server 127.0.0.1:9002; }
           upstream apps { server 127.0.0.1:9003; }
           map $ssl_preread_server_name $name {
             hostnames;
             default dflt;
             mail.* pg;
             *.example.com apps;
             .example.org pg;
             *.apps.example.com pg;
             ~^x\\. pg;
             db.example.com pg;
             \"\" apps;
             raw.example.net 127.0.0.1:9009;
             bad..name pg;
             DB.example.com apps;
             *.example.org apps;
             dot.example.net. apps;
           }
           map $ssl_preread_server_name $strict {
             db.example.com pg;
             *.example.com apps;
           }
           server { listen 127.0.0.1:4443; ssl_preread on; proxy_pass $name; }
           server { listen 127.0.0.1:4444; proxy_pass $strict; ssl_preread on; preread_timeout 2s; }
           server { listen 127.0.0.1:4445; proxy_pass $name; }
           server { listen 127.0.0.1:4447 ssl; ssl_preread on; proxy_pass $strict;
             ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem; }
           server { listen 127.0.0.1:4448 ssl; ssl_preread on; proxy_pass $name;
             ssl_certificate /nonexistent/c.pem; ssl_certificate_key /nonexistent/k.pem;
             preread_timeout 0; }
         }");
    let l = on(&cfg, "127.0.0.1:4443");
    assert_eq!(str_of(&l, "mode"), Some("tcp"));
    assert_eq!(str_of(&l, "pool"), Some("dflt"));
    assert_eq!(str_of(&l, "request_header_timeout"), Some("7s"));
    let want: Vec<(String, String)> = [
        ("example.org", "pg"),
        ("db.example.com", "pg"),
        ("raw.example.net", "127.0.0.1-9009"),
        ("*.apps.example.com", "pg"),
        ("*.example.com", "apps"),
        ("*.example.org", "pg"),
        ("mail.*", "pg"),
        ("", "apps"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(routes(&l), want);
    for (line, f) in [
        ("map $ssl_preread_server_name $name", Fidelity::Mapped),
        ("\"\" apps", Fidelity::Mapped),
        ("~^x\\. pg", Fidelity::Unsupported),
        ("bad..name pg", Fidelity::Unsupported),
        ("*.example.com apps", Fidelity::Mapped),
        ("proxy_pass $name", Fidelity::Mapped),
        // nginx refuses a second line for a name, and never looks a name
        // up with its trailing dot
        ("DB.example.com apps", Fidelity::Unsupported),
        ("*.example.org apps", Fidelity::Unsupported),
        ("dot.example.net. apps", Fidelity::Unsupported),
        // on a listen ... ssl, nginx reads no ClientHello: nothing to route
        ("proxy_pass $strict", Fidelity::Unsupported),
        ("preread_timeout 0", Fidelity::Unsupported),
    ] {
        assert!(
            report
                .iter()
                .any(|e| e.directive == line && e.fidelity == f),
            "{line}: {report:#?}"
        );
    }
    // without a default: no pool, and without hostnames a mask is text
    let strict = on(&cfg, "127.0.0.1:4444");
    assert!(strict.get("pool").is_none(), "{strict:#?}");
    assert_eq!(str_of(&strict, "request_header_timeout"), Some("2s"));
    assert_eq!(
        routes(&strict),
        [("db.example.com".to_string(), "pg".to_string())]
    );
    assert!(report.iter().any(|e| e.directive == "*.example.com apps"
        && e.fidelity == Fidelity::Unsupported
        && e.note.contains("hostnames")));
    // no ssl_preread: the name is empty, the map's "" line
    let plain = on(&cfg, "127.0.0.1:4445");
    assert_eq!(str_of(&plain, "pool"), Some("apps"));
    assert!(routes(&plain).is_empty());
    let deciphered = on(&cfg, "127.0.0.1:4448");
    assert_eq!(str_of(&deciphered, "pool"), Some("apps"));
    assert!(routes(&deciphered).is_empty());
    // (its own 0 is refused: the stream level's)
    assert_eq!(str_of(&deciphered, "request_header_timeout"), Some("7s"));
    assert!(listeners(&cfg)
        .iter()
        .all(|l| l["bind"][0].as_str() != Some("127.0.0.1:4447")));
    // and rampart runs what it wrote
    let toml = import(
        "stream { upstream pg { server 127.0.0.1:9002; }
           map $ssl_preread_server_name $n { db.example.com pg; }
           server { listen 127.0.0.1:4446; ssl_preread on; proxy_pass $n; } }",
        "t.conf",
    )
    .toml;
    let c = crate::config::parse(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(c.listeners[0].pool, None);
}

/// The WebSocket idiom's map (`default upgrade; '' close;` for `proxy_set_header
/// Connection`) is what rampart does itself; another map of $http_upgrade
/// is not.
#[test]
fn the_websocket_connection_map_is_what_rampart_does() {
    let (_, report) = http(
        "map $http_upgrade $connection_upgrade { default upgrade; '' close; }
         map $http_upgrade $other { default upgrade; websocket x; }
         server { listen 80; location / { proxy_pass http://u;
           proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; } }",
    );
    for (line, f) in [
        ("map $http_upgrade $connection_upgrade", Fidelity::Mapped),
        ("map $http_upgrade $other", Fidelity::Unsupported),
        (
            "proxy_set_header Connection $connection_upgrade",
            Fidelity::Mapped,
        ),
    ] {
        assert!(
            report
                .iter()
                .any(|e| e.directive == line && e.fidelity == f),
            "{line}: {report:#?}"
        );
    }
}

/// nginx's 301 from a location's name without its final slash: for a
/// location that passes requests on, not for one that is `internal` (a
/// client gets 404 there first) nor one a location of that name takes; the
/// name escaped as nginx escapes it (`[` and `]` as they are), the braces
/// too (the redirect's template would read them).
#[test]
fn a_slash_redirect_for_each_location_that_passes_requests_on() {
    let (cfg, _) = http(
        "server { listen 80;
           location /app/ { proxy_pass http://u; }
           location /in/ { internal; proxy_pass http://u; }
           location /kept/ { return 200 \"x\"; }
           location /named/ { proxy_pass http://u; }
           location = /named { return 204; }
           location ^~ /a[1]/ { proxy_pass http://u; }
           location \"/b c{d}/\" { proxy_pass http://u; }
           location / { proxy_pass http://u; } }",
    );
    let rs = rules(&on(&cfg, "0.0.0.0:80"));
    let redirects: Vec<(&str, &str)> = rs
        .iter()
        .filter_map(|r| {
            let to = r.get("redirect")?.get("to")?.as_str()?;
            Some((str_of(r, "path")?, to))
        })
        .collect();
    assert_eq!(
        redirects,
        [
            ("/app", "/app/{query}"),
            ("/a[1]", "/a[1]/{query}"),
            ("/b c{d}", "/b%20c%7Bd%7D/{query}"),
        ],
        "{rs:#?}"
    );
}
