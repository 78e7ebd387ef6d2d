//! Configuration: `load(path)` reads TOML into the serde structs of `file`,
//! `validate` checks them section by section into the runtime types of `model`,
//! and `env` fills in the secrets the config names by environment variable.
//! Every error names the file, the line and the key (`listener[0].route[1].pool`)
//! and says what is wrong.

mod env;
pub mod file;
mod limits;
mod model;
mod problems;
mod validate;

pub use file::{AccessLogFormat, Balance, HashKey, Mode, OnEmpty, PgRole, Prefer};
pub use limits::{CircuitConfig, KeyPart, RateLimitConfig, StoreConfig, Tier};
pub use model::*;
pub use problems::{ConfigError, Problem};
pub use validate::{cookie_value, parse_status_ranges};

use file::FileConfig;
use problems::{key_at, line_of};
use std::path::Path;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_in(&src, &path.display().to_string(), base)
}

/// Parses and validates config text; `file` is only used in messages. Relative
/// paths in it (certificates) are relative to the working directory.
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
    parse_in(src, file, Path::new("."))
}

/// As `parse`, with relative paths relative to `base` (the config file's folder).
pub fn parse_in(src: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    };
    let raw: FileConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        let key = e
            .span()
            .and_then(|s| key_at(src, s.start))
            .unwrap_or_default();
        invalid(vec![Problem {
            line,
            key,
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut cfg = validate::validate(raw, src, base).map_err(invalid)?;
    env::resolve(&mut cfg, src).map_err(invalid)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
[global]
threads = 1

[admin]
bind = "127.0.0.1:8404"

[[listener]]
name = "web"
bind = ["127.0.0.1:8080"]
mode = "http"
pool = "api"
  [[listener.route]]
  host = "*.example.com"
  path_prefix = "/v1"
  pool = "api"

[[pool]]
name = "api"
  [[pool.server]]
  address = "127.0.0.2:8000"
"#;

    /// `reuse_port = false` (HAProxy's `noreuseport`) is for one worker
    /// thread: more share each port by SO_REUSEPORT.
    #[test]
    fn reuse_port_off_needs_one_thread() {
        let off = GOOD.replace("threads = 1", "threads = 1\nreuse_port = false");
        assert!(!parse(&off, "t.toml").unwrap().global.reuse_port);
        assert!(parse(GOOD, "t.toml").unwrap().global.reuse_port);
        let p = problem(&off.replace("threads = 1", "threads = 2"));
        assert_eq!(p.key, "global.reuse_port", "{p:?}");
        assert!(p.message.contains("threads = 1"), "{p:?}");
    }

    /// `max_request_body`: a size (0: none); on a tcp listener, a warning.
    #[test]
    fn max_request_body_is_a_size_for_http_listeners() {
        let with = |v: &str| {
            GOOD.replace(
                "mode = \"http\"\n",
                &format!("mode = \"http\"\nmax_request_body = {v}\n"),
            )
        };
        assert_eq!(
            parse(&with("\"10MiB\""), "t.toml").unwrap().listeners[0].max_request_body,
            Some(10 << 20)
        );
        assert_eq!(
            parse(&with("0"), "t.toml").unwrap().listeners[0].max_request_body,
            None
        );
        assert_eq!(
            parse(GOOD, "t.toml").unwrap().listeners[0].max_request_body,
            None
        );
        let p = problem(&with("\"ten\""));
        assert!(p.key.contains("max_request_body"), "{p:?}");
        let tcp = with("\"1MiB\"")
            .replace("mode = \"http\"", "mode = \"tcp\"")
            .replace("  [[listener.route]]\n  host = \"*.example.com\"\n  path_prefix = \"/v1\"\n  pool = \"api\"\n", "");
        let c = parse(&tcp, "t.toml").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("max_request_body") && w.contains("tcp")),
            "{:?}",
            c.warnings
        );
    }

    /// A rule's `max_request_body` replaces the listener's for the requests
    /// it matches; the listener's bound (checked before the rules are read)
    /// is the most any request may send.
    #[test]
    fn a_rules_max_request_body_is_a_size_and_raises_the_bound() {
        let with = |listener: &str, rules: &[&str]| {
            let rules: String = rules
                .iter()
                .map(|v| {
                    format!(
                        "  [[listener.rule]]\n  path_prefix = \"/up\"\n  max_request_body = {v}\n"
                    )
                })
                .collect();
            GOOD.replace(
                "mode = \"http\"\n",
                &format!("mode = \"http\"\nmax_request_body = {listener}\n"),
            )
            .replace("\n[[pool]]", &format!("{rules}\n[[pool]]"))
        };
        let bound = |src: &str| {
            let c = parse(src, "t.toml").unwrap();
            let l = &c.listeners[0];
            l.rules.max_body_bound(l.max_request_body.unwrap_or(0))
        };
        assert_eq!(bound(&with("\"1KiB\"", &[])), 1024);
        assert_eq!(bound(&with("\"1KiB\"", &["\"1MiB\"", "10"])), 1 << 20);
        assert_eq!(bound(&with("\"1MiB\"", &["10"])), 1 << 20);
        assert_eq!(bound(&with("\"1KiB\"", &["0"])), 0);
        assert_eq!(bound(&with("0", &["\"1MiB\""])), 0);
        let bad = with("0", &["\"big\""]);
        let p = problem(&bad);
        let line = bad
            .lines()
            .position(|l| l.contains("\"big\""))
            .map(|i| i + 1);
        assert!(
            p.key.contains("max_request_body") && p.line == line,
            "{p:?}"
        );
    }

    /// A listener may have 64 rules that edit and go on; rules that edit
    /// and end the request (an nginx import's locations) are not counted
    /// among them.
    #[test]
    fn rules_that_edit_are_limited_only_where_they_go_on() {
        let with = |n: usize, end: &str| {
            let rules: String = (0..n)
                .map(|i| {
                    format!(
                        "  [[listener.rule]]\n  path_prefix = \"/r{i}/\"\n  set_header = {{ \"x-r\" = \"{i}\" }}\n{end}"
                    )
                })
                .collect();
            GOOD.replace("\n[[pool]]", &format!("{rules}\n[[pool]]"))
        };
        assert!(parse(&with(64, ""), "t.toml").is_ok());
        let c = parse(&with(300, "  pool = \"api\"\n"), "t.toml").unwrap();
        assert!(!c.listeners[0].rules.is_empty());
        let p = problem(&with(65, ""));
        assert!(
            p.key.contains("listener") && p.message.contains("more than 64") && p.line.is_some(),
            "{p:?}"
        );
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.listeners[0].binds[0].port(), 8080);
        assert_eq!(c.pools[0].servers[0].weight, 1);
        assert_eq!(c.global.shutdown_grace, Duration::from_secs(30));
    }

    /// Without `[admin]` the admin server is this host's alone; a bind other
    /// hosts reach, without read_auth, is warned about.
    #[test]
    fn the_admin_server_is_loopback_unless_bound_elsewhere_and_warned_about() {
        let c = parse(
            &GOOD.replace("[admin]\nbind = \"127.0.0.1:8404\"\n", ""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.admin.bind, "127.0.0.1:8404".parse().unwrap());
        assert!(
            !c.warnings.iter().any(|w| w.contains("[admin]")),
            "{:?}",
            c.warnings
        );
        let open = GOOD.replace("127.0.0.1:8404", "0.0.0.0:8404");
        let c = parse(&open, "t.toml").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("[admin] bind") && w.contains("read_auth")),
            "{:?}",
            c.warnings
        );
        let guarded = open.replace(
            "bind = \"0.0.0.0:8404\"",
            "bind = \"0.0.0.0:8404\"\nread_auth = \"ops:PATH\"",
        );
        let c = parse(&guarded, "t.toml").unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.contains("[admin]")),
            "{:?}",
            c.warnings
        );
    }

    fn problem(src: &str) -> Problem {
        match parse(src, "t.toml") {
            Err(ConfigError::Invalid { problems, .. }) => problems[0].clone(),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    /// A listener's client_ca = "system" would authenticate any publicly
    /// issued client certificate: refused, naming the key (a pool's ca may
    /// be the OS store).
    #[test]
    fn client_ca_system_is_refused() {
        let src = GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\n  [listener.tls]\n  cert = [\"missing.pem\"]\n  client_ca = \"system\"\n  [[listener.route]]",
        );
        let Err(ConfigError::Invalid { problems, .. }) = parse(&src, "t.toml") else {
            panic!("expected an invalid config");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.key == "listener[0].tls.client_ca"
                    && p.message.contains("publicly issued")),
            "{problems:?}"
        );
    }

    /// An IPv6 prefix that is no prefix is refused, naming the key; the
    /// default is a client's /64.
    #[test]
    fn a_rate_limits_ipv6_prefix_is_1_to_128() {
        let with = |extra: &str| {
            format!("{GOOD}\n[[rate_limit]]\nname = \"per-ip\"\nrate = \"10/s\"\n{extra}\n")
        };
        let cfg = parse(&with(""), "t.toml").expect("valid");
        assert_eq!(cfg.rate_limits[0].ipv6_prefix, 64);
        for bad in ["ipv6_prefix = 0", "ipv6_prefix = 129"] {
            let Err(ConfigError::Invalid { problems, .. }) = parse(&with(bad), "t.toml") else {
                panic!("{bad}: expected an invalid config");
            };
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == "rate_limit[0].ipv6_prefix" && p.message.contains("1 to 128")),
                "{bad}: {problems:?}"
            );
        }
    }

    /// `[pool.cookie]`: its attributes as `Set-Cookie` writes them, and every
    /// value that would make a broken cookie refused with its key.
    #[test]
    fn a_pool_cookie_is_checked() {
        let with = |cookie: &str, server: &str| {
            GOOD.replace(
                "  [[pool.server]]\n  address = \"127.0.0.2:8000\"\n",
                &format!("  [pool.cookie]\n{cookie}\n  [[pool.server]]\n  address = \"127.0.0.2:8000\"\n{server}\n  [[pool.server]]\n  address = \"127.0.0.3:8000\"\n  cookie = \"b\"\n"),
            )
        };
        let cfg = parse(
            &with(
                "name = \"SRV\"\nsecure = true\ndomain = \"example.com\"\nmax_age = \"1h\"\nsame_site = \"none\"",
                "cookie = \"a\"",
            ),
            "t.toml",
        )
        .expect("valid");
        let c = cfg.pools[0].cookie.as_ref().unwrap();
        assert_eq!(
            c.attributes,
            "; Path=/; Domain=example.com; Max-Age=3600; Secure; HttpOnly; SameSite=None"
        );
        assert_eq!(c.values.len(), 2);
        assert!(c.indirect && c.nocache);
        for (cookie, server, key, why) in [
            (
                "name = \"S RV\"",
                "",
                "pool[0].cookie.name",
                "not a cookie name",
            ),
            (
                "name = \"\"",
                "",
                "pool[0].cookie.name",
                "not a cookie name",
            ),
            (
                "name = \"S\"\npath = \"/a;b\"",
                "",
                "pool[0].cookie.path",
                "not a cookie path",
            ),
            (
                "name = \"S\"\npath = \"a\"",
                "",
                "pool[0].cookie.path",
                "not a cookie path",
            ),
            (
                "name = \"S\"\ndomain = \"a b\"",
                "",
                "pool[0].cookie.domain",
                "not a cookie domain",
            ),
            (
                "name = \"S\"\nmax_age = \"1500ms\"",
                "",
                "pool[0].cookie.max_age",
                "whole number",
            ),
            (
                "name = \"S\"\nsame_site = \"None\"",
                "",
                "pool[0].cookie.same_site",
                "secure = true",
            ),
            (
                "name = \"S\"\nsame_site = \"loose\"",
                "",
                "pool[0].cookie.same_site",
                "unknown value",
            ),
            (
                "name = \"S\"\nkey = \"\"",
                "",
                "pool[0].cookie.key",
                "must not be empty",
            ),
            (
                "name = \"S\"",
                "cookie = \"a;b\"",
                "pool[0].server[0].cookie",
                "not a cookie value",
            ),
            (
                "name = \"__Host-S\"\nsecure = true\ndomain = \"a.example\"",
                "",
                "pool[0].cookie.name",
                "__Host-",
            ),
            (
                "name = \"__Secure-S\"",
                "",
                "pool[0].cookie.name",
                "__Secure-",
            ),
        ] {
            assert_refused(&with(cookie, server), Path::new("."), key, why);
        }
        // servers may share a value (HAProxy: a backup its normal server's)
        let shared = parse(&with("name = \"S\"", "cookie = \"b\""), "t.toml").expect("valid");
        assert_eq!(shared.pools[0].cookie.as_ref().unwrap().values.len(), 2);
        // a tcp listener has no cookie: said, not refused (HAProxy ignores it too)
        let tcp = with("name = \"S\"", "").replace("mode = \"http\"", "mode = \"tcp\"").replace(
            "  [[listener.route]]\n  host = \"*.example.com\"\n  path_prefix = \"/v1\"\n  pool = \"api\"\n",
            "",
        );
        let c = parse(&tcp, "t.toml").expect("valid");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("[pool.cookie] does not apply")),
            "{:?}",
            c.warnings
        );
        // a server's value needs [pool.cookie], and a DNS entry has none
        let no_cookie = GOOD.replace(
            "address = \"127.0.0.2:8000\"\n",
            "address = \"127.0.0.2:8000\"\n  cookie = \"a\"\n",
        );
        assert_refused(
            &no_cookie,
            Path::new("."),
            "pool[0].server[0].cookie",
            "[pool.cookie]",
        );
        let dns = with("name = \"S\"", "").replace(
            "address = \"127.0.0.3:8000\"",
            "address = \"api.example.com:8000\"",
        );
        assert_refused(&dns, Path::new("."), "pool[0].server[1].cookie", "DNS");
    }

    /// A tcp listener's SNI route to a pool hashing on an HTTP field: every
    /// session would hash the same empty text onto one server.
    #[test]
    fn a_tcp_routes_pool_hashing_on_http_is_refused() {
        let src = r#"
[[listener]]
name = "tls"
bind = ["127.0.0.1:8443"]
mode = "tcp"
pool = "a"
  [[listener.route]]
  sni = "b.example.com"
  pool = "b"

[[pool]]
name = "a"
  [[pool.server]]
  address = "127.0.0.2:8000"

[[pool]]
name = "b"
balance = "hash"
hash_key = "uri"
  [[pool.server]]
  address = "127.0.0.2:8001"
"#;
        let p = problem(src);
        assert_eq!(p.key, "listener[0].route[0].pool");
        assert!(p.message.contains("client_ip"), "{}", p.message);
    }

    /// A tcp listener with SNI routes may go without a pool (what no route
    /// takes is closed), and route a ClientHello without a name (`sni =
    /// ""`); any other listener without a pool is refused, naming the key.
    #[test]
    fn only_a_tcp_listener_with_routes_goes_without_a_pool() {
        let tcp = |routes: &str| {
            format!(
                "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:8443\"]\nmode = \"tcp\"\n{routes}\n[[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"127.0.0.2:8000\"\n"
            )
        };
        let cfg = parse(
            &tcp("  [[listener.route]]\n  sni = \"db.example.com\"\n  pool = \"a\"\n  [[listener.route]]\n  sni = \"\"\n  pool = \"a\"\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.listeners[0].pool, None);
        assert_eq!(
            cfg.listeners[0].routes[1].host,
            Some(crate::router::HostMatch::Exact(String::new()))
        );
        let p = problem(&tcp(""));
        assert_eq!(p.key, "listener[0].pool");
        assert!(p.message.contains("required"), "{}", p.message);
        let p = problem(&GOOD.replacen("pool = \"api\"\n", "", 1));
        assert_eq!(p.key, "listener[0].pool");
        assert!(p.message.contains("required"), "{}", p.message);
        // an http listener's host is never empty
        let p = problem(&GOOD.replacen("host = \"", "host = \"\"\n#", 1));
        assert!(p.key.ends_with(".host"), "{}", p.key);
    }

    #[test]
    fn proxy_protocol_networks_are_checked_when_off() {
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\nproxy_protocol = { from = [\"10.0.0.0/40\"], mode = \"off\" }\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].proxy_protocol.from[0]");
    }

    #[test]
    fn a_burst_without_a_rate_is_refused() {
        let p = problem(&format!(
            "{GOOD}\n[[rate_limit]]\nname = \"daily\"\nquota = \"100/day\"\nburst = 50\n"
        ));
        assert_eq!(p.key, "rate_limit[0].burst");
        assert!(p.message.contains("only with rate"), "{}", p.message);
        assert!(parse(
            &format!("{GOOD}\n[[rate_limit]]\nname = \"x\"\nrate = \"10/s\"\nburst = 5\n"),
            "t.toml"
        )
        .is_ok());
    }

    /// GOOD with an `[ha]` section for node "a" on lo, ending with `rest`
    /// (its `auth` keys, say).
    fn with_ha(rest: &str) -> String {
        format!(
            "{GOOD}\n[ha]\ninterface = \"lo\"\nvips = [\"192.0.2.100/24\"]\nnode_id = \"a\"\npriority = 100\nbind = \"127.0.0.1:5405\"\npeers = [\"127.0.0.2:5405\"]\n{rest}\n"
        )
    }

    /// A folder of heartbeat keys for `tag`'s test: new.key (40 bytes, and a
    /// final newline that is not part of the key), old.key (32 bytes) and
    /// short.key (31: too short). Returns it with new.key's and old.key's keys.
    fn ha_key_dir(tag: &str) -> (std::path::PathBuf, String, String) {
        let dir = std::env::temp_dir().join(format!("rampart-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (new, old) = ("n".repeat(40), "o".repeat(32));
        std::fs::write(dir.join("new.key"), format!("{new}\n")).unwrap();
        std::fs::write(dir.join("old.key"), &old).unwrap();
        std::fs::write(dir.join("short.key"), "s".repeat(31)).unwrap();
        (dir, new, old)
    }

    /// Asserts that `src`, read beside `base`, is refused with a problem
    /// naming `key` whose message says `why`.
    fn assert_refused(src: &str, base: &Path, key: &str, why: &str) {
        match parse_in(src, "rampart.toml", base) {
            Err(ConfigError::Invalid { problems, .. }) => assert!(
                problems
                    .iter()
                    .any(|p| p.key == key && p.message.contains(why)),
                "no {key} problem saying {why:?}: {problems:?}"
            ),
            other => panic!("{key}, {why:?}: expected an invalid config, got {other:?}"),
        }
    }

    /// [ha] notify is found beside the config file (as auth_key_file), and
    /// must be an executable.
    #[test]
    fn the_notify_program_is_relative_to_the_config_and_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rampart-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hook = dir.join("hook.sh");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("plain.txt"), "x").unwrap();
        let cfg = |notify: &str| with_ha(&format!("auth = \"none\"\nnotify = \"{notify}\""));
        let c = parse_in(&cfg("hook.sh"), "rampart.toml", &dir).unwrap();
        assert_eq!(c.ha.unwrap().notify.as_deref(), Some(hook.as_path()));
        // a config given without a folder ("-c rampart.toml"): the program
        // is named by its absolute path, never looked up in PATH (tests run
        // in the crate's folder)
        let rel = format!("target/rampart-notify-{}.sh", std::process::id());
        std::fs::write(&rel, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&rel, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = parse_in(&cfg(&rel), "rampart.toml", Path::new("")).unwrap();
        let got = c.ha.unwrap().notify.unwrap();
        let _ = std::fs::remove_file(&rel);
        assert!(got.is_absolute(), "{got:?}");
        assert!(got.ends_with(&rel), "{got:?}");
        for (bad, why) in [
            ("plain.txt", "not an executable"),
            ("nope.sh", "does not exist"),
        ] {
            assert_refused(&cfg(bad), &dir, "ha.notify", why);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `[ha] auth_previous_key_file` is read and checked as `auth_key_file`
    /// is, a problem naming it, and has no place beside `auth = "none"`.
    #[test]
    fn the_previous_ha_key_is_checked_like_the_key() {
        let (dir, new, old) = ha_key_dir("hakeys");
        let c = parse_in(
            &with_ha("auth_key_file = \"new.key\"\nauth_previous_key_file = \"old.key\""),
            "rampart.toml",
            &dir,
        )
        .unwrap();
        let key = c.ha.unwrap().key;
        assert_eq!(key.hmac(), Some(new.as_bytes()));
        assert_eq!(key.previous(), Some(old.as_bytes()));
        assert!(!format!("{key:?}").contains("nnnn"), "{key:?}");
        let c = parse_in(
            &with_ha("auth_key_file = \"new.key\""),
            "rampart.toml",
            &dir,
        )
        .unwrap();
        assert_eq!(c.ha.unwrap().key.previous(), None);
        for (auth, why) in [
            (
                "auth_key_file = \"new.key\"\nauth_previous_key_file = \"short.key\"",
                "short.key: the key must be at least 32 bytes, it has 31",
            ),
            (
                "auth_key_file = \"new.key\"\nauth_previous_key_file = \"nope.key\"",
                "cannot read nope.key",
            ),
            (
                "auth = \"none\"\nauth_previous_key_file = \"old.key\"",
                "auth = \"none\"",
            ),
        ] {
            assert_refused(&with_ha(auth), &dir, "ha.auth_previous_key_file", why);
        }
        // the same key twice is allowed, with a warning
        let c = parse_in(
            &with_ha("auth_key_file = \"new.key\"\nauth_previous_key_file = \"new.key\""),
            "rampart.toml",
            &dir,
        )
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("the same key")),
            "{:?}",
            c.warnings
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `[ha] auth_key_grace`: 60 s unless set, "0s" for none, at most an
    /// hour; a problem names it, and it has no place beside `auth = "none"`.
    #[test]
    fn the_ha_key_grace_is_checked() {
        let (dir, _, _) = ha_key_dir("hagrace");
        let signed = |grace: &str| with_ha(&format!("auth_key_file = \"new.key\"\n{grace}"));
        for (grace, secs) in [
            ("", 60),
            ("auth_key_grace = \"0s\"", 0),
            ("auth_key_grace = \"1m30s\"", 90),
            ("auth_key_grace = \"1h\"", 3600),
        ] {
            let c = parse_in(&signed(grace), "rampart.toml", &dir).unwrap();
            assert_eq!(
                c.ha.unwrap().key_grace,
                Duration::from_secs(secs),
                "{grace}"
            );
        }
        // a bad duration is refused as the file is read, naming the key on
        // its line
        let bad = signed("auth_key_grace = \"a minute\"");
        assert_refused(&bad, &dir, "auth_key_grace", "invalid duration");
        assert_refused(
            &signed("auth_key_grace = \"61m\""),
            &dir,
            "ha.auth_key_grace",
            "must be at most 3600s",
        );
        assert_refused(
            &with_ha("auth = \"none\"\nauth_key_grace = \"0s\""),
            &dir,
            "ha.auth_key_grace",
            "auth = \"none\"",
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_route_pool_names_key_and_line() {
        let p = problem(&GOOD.replace(
            "  pool = \"api\"\n\n[[pool]]",
            "  pool = \"nope\"\n\n[[pool]]",
        ));
        assert_eq!(p.key, "listener[0].route[0].pool");
        assert_eq!(p.line, Some(16));
        assert!(p.message.contains("nope"));
    }

    #[test]
    fn unknown_key_has_line() {
        let p = problem(&GOOD.replace("threads = 1", "threads = 1\nthreadz = 2"));
        assert_eq!(p.line, Some(4));
        assert!(p.message.contains("threadz"), "{}", p.message);
    }

    #[test]
    fn h2_pool_keys_are_checked() {
        let pool = |extra: &str| {
            GOOD.replace(
                "name = \"api\"\n  [[pool.server]]",
                &format!("name = \"api\"\n{extra}\n  [[pool.server]]"),
            )
        };
        let c = parse(
            &pool("protocol = \"h2\"\n[pool.http2]\nmax_concurrent_streams = 8\n[pool.health]\nkind = \"grpc\"\nservice = \"api.v1\""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pools[0].protocol, Protocol::H2);
        assert_eq!(c.pools[0].http2.max_concurrent_streams, 8);
        assert_eq!(c.pools[0].http2.initial_stream_window_size, 256 << 10);
        // no keepalive PINGs to the servers by default (gRPC servers refuse
        // frequent ones)
        assert_eq!(c.pools[0].http2.keepalive_interval, None);
        assert_eq!(c.pools[0].http2.keepalive_timeout, Duration::from_secs(5));
        assert!(matches!(
            &c.pools[0].health.as_ref().unwrap().check,
            CheckKind::Grpc { service } if service == "api.v1"
        ));
        let p = problem(&pool("protocol = \"h3\""));
        assert_eq!(p.key, "pool[0].protocol");
        assert!(p.message.contains("\"http1\" or \"h2\""), "{}", p.message);
        let p = problem(&pool("protocol = \"h2\"\nsend_proxy = \"v2\""));
        assert_eq!(p.key, "pool[0].send_proxy");
        let p = problem(&pool("[pool.http2]\nmax_concurrent_streams = 8"));
        assert_eq!(p.key, "pool[0].http2");
        assert!(p.message.contains("protocol = \"h2\""), "{}", p.message);
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\nmax_concurrent_streams = 0",
        ));
        assert_eq!(p.key, "pool[0].http2.max_concurrent_streams");
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\ninitial_stream_window_size = 3000000000",
        ));
        assert_eq!(p.key, "pool[0].http2.initial_stream_window_size");
        assert!(p.message.contains("6.9.2"), "{}", p.message);
        // keepalive PINGs: "0s" turns them off; too often, or a PING that
        // must be answered in no time, is refused by name
        let c = parse(
            &pool("protocol = \"h2\"\n[pool.http2]\nkeepalive_interval = \"0s\"\nkeepalive_timeout = \"0s\""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pools[0].http2.keepalive_interval, None);
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\nkeepalive_interval = \"500ms\"",
        ));
        assert_eq!(p.key, "pool[0].http2.keepalive_interval");
        assert!(p.message.contains("1s"), "{}", p.message);
        let p = problem(&pool(
            "protocol = \"h2\"\n[pool.http2]\nkeepalive_interval = \"2s\"\nkeepalive_timeout = \"0s\"",
        ));
        assert_eq!(p.key, "pool[0].http2.keepalive_timeout");
        let p = problem(&pool("[pool.health]\nkind = \"grpc\""));
        assert_eq!(p.key, "pool[0].health.kind");
        let p = problem(&pool("[pool.health]\nkind = \"http\"\nservice = \"x\""));
        assert_eq!(p.key, "pool[0].health.service");
    }

    /// Values that were accepted and then failed at run time, or were read
    /// as something else.
    #[test]
    fn values_that_would_fail_at_run_time_are_refused() {
        // a static server on port 0 (a NAME:0 was refused already)
        let p = problem(&GOOD.replace("127.0.0.2:8000", "127.0.0.2:0"));
        assert_eq!(p.key, "pool[0].server[0].address");
        assert!(p.message.contains("port 0"), "{}", p.message);
        // an h2 PING answered in no time would close every idle connection
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\n[listener.http2]\nkeepalive_interval = \"10s\"\nkeepalive_timeout = \"0s\"\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].http2.keepalive_timeout");
        // a misspelt deny key is not a default body
        let rule = |deny: &str| {
            GOOD.replace(
                "  pool = \"api\"\n\n[[pool]]",
                &format!("  pool = \"api\"\n  [[listener.rule]]\n  path_prefix = \"/x\"\n  deny = {deny}\n\n[[pool]]"),
            )
        };
        parse(&rule("{ status = 403, body = \"no\" }"), "t.toml").unwrap();
        let p = problem(&rule("{ status = 403, bdy = \"no\" }"));
        assert_eq!(p.line, Some(19), "{p:?}");
        assert!(p.key.contains("deny"), "{p:?}");
        assert!(p.message.contains("`status` and `body` only"), "{p:?}");
        // the other values of more than one shape say which shapes they take
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\n  [listener.tls]\n  cert = [{ path = \"a.pem\", kye = \"a.key\" }]\n  [[listener.route]]",
        ));
        assert!(p.key.contains("cert"), "{p:?}");
        assert!(p.message.contains("`path` and `key` only"), "{p:?}");
        let p = problem(&GOOD.replace(
            "name = \"api\"\n  [[pool.server]]",
            "name = \"api\"\nretry_buffer = 1.5\n  [[pool.server]]",
        ));
        assert!(p.key.contains("retry_buffer"), "{p:?}");
        assert!(p.message.contains("a size"), "{p:?}");
        let p = problem(&format!(
            "{GOOD}\n[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nkey = 5\n"
        ));
        assert!(p.key.contains("key"), "{p:?}");
        assert!(p.message.contains("a list of them"), "{p:?}");
    }

    #[test]
    fn proxy_protocol_keys_are_checked() {
        let p = problem(&GOOD.replace(
            "name = \"api\"\n  [[pool.server]]",
            "name = \"api\"\nsend_proxy = \"v3\"\n  [[pool.server]]",
        ));
        assert_eq!(p.key, "pool[0].send_proxy");
        assert!(p.message.contains("\"v1\" or \"v2\""), "{}", p.message);
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\nproxy_protocol = { from = [\"10.0.0.0/40\"] }\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].proxy_protocol.from[0]");
        let p = problem(&GOOD.replace(
            "pool = \"api\"\n  [[listener.route]]",
            "pool = \"api\"\nproxy_protocol = { mode = \"optional\" }\n  [[listener.route]]",
        ));
        assert_eq!(p.key, "listener[0].proxy_protocol.from");
        let c = parse(
            &GOOD.replace(
                "pool = \"api\"\n  [[listener.route]]",
                "pool = \"api\"\nproxy_protocol = { from = [\"10.0.0.0/8\"], mode = \"off\" }\n  [[listener.route]]",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.listeners[0].proxy_protocol.is_none());
    }

    /// A postgres check's TLS (`ssl`, libpq's sslmode): `prefer` by default,
    /// a CA for the modes that verify (its own `ca`, relative to the config's
    /// folder, else `[pool.tls]`'s), and every wrong setting refused by its key.
    #[test]
    fn postgres_check_ssl_is_checked() {
        use crate::tls::PgSslMode;
        let dir = std::env::temp_dir().join(format!("rampart-pg-ssl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // cert.pem: a self-signed certificate, as good a CA file as any here
        crate::tls::cert::self_signed(&dir, "db.test").unwrap();
        let pool = |health: &str, more: &str| {
            GOOD.replace(
                "name = \"api\"\n  [[pool.server]]",
                &format!(
                    "name = \"api\"\n[pool.health]\nkind = \"postgres\"\n{health}\n{more}\n  [[pool.server]]"
                ),
            )
        };
        let ssl = |src: &str| match parse_in(src, "t.toml", &dir) {
            Ok(c) => match &c.pools[0].health.as_ref().unwrap().check {
                CheckKind::Postgres { ssl, .. } => ssl.clone(),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        };
        let s = ssl(&pool("", "")).expect("prefer by default");
        assert_eq!(s.mode, PgSslMode::Prefer);
        assert!(s.tls.ca.is_none());
        assert!(ssl(&pool("ssl = \"disable\"", "")).is_none());
        let s = ssl(&pool("ssl = \"require\"", "")).unwrap();
        assert_eq!(s.mode, PgSslMode::Require);
        assert!(s.tls.ca.is_none());
        // its own CA
        let own = pool("ssl = \"verify-full\"\nca = \"cert.pem\"", "");
        let s = ssl(&own).unwrap();
        assert_eq!(s.mode, PgSslMode::VerifyFull);
        assert_eq!(s.tls.ca.as_ref().unwrap().path, dir.join("cert.pem"));
        // a change to it is a reason to reload
        let c = parse_in(&own, "t.toml", &dir).unwrap();
        assert!(c.tls_files().contains(&dir.join("cert.pem")));
        // [pool.tls]'s CA and name
        let s = ssl(&pool(
            "ssl = \"verify-ca\"",
            "[pool.tls]\nca = \"cert.pem\"\nserver_name = \"db.test\"",
        ))
        .unwrap();
        assert_eq!(s.mode, PgSslMode::VerifyCa);
        assert!(s.tls.ca.is_some());
        assert_eq!(s.tls.server_name.as_deref(), Some("db.test"));
        for (health, more, key, says) in [
            (
                "ssl = \"sometimes\"",
                "",
                "pool[0].health.ssl",
                "\"verify-full\"",
            ),
            ("ssl = \"allow\"", "", "pool[0].health.ssl", "\"prefer\""),
            ("ssl = \"verify-full\"", "", "pool[0].health.ssl", "give ca"),
            (
                "ssl = \"verify-ca\"",
                "[pool.tls]\nverify = false\ninsecure = true",
                "pool[0].health.ssl",
                "give ca",
            ),
            (
                "ssl = \"require\"\nca = \"cert.pem\"",
                "",
                "pool[0].health.ca",
                "only used with ssl = \"verify-ca\" or \"verify-full\"",
            ),
            (
                "ca = \"cert.pem\"",
                "",
                "pool[0].health.ca",
                "not \"prefer\"",
            ),
            (
                "ssl = \"verify-full\"\nca = \"missing.pem\"",
                "",
                "pool[0].health.ca",
                "missing.pem",
            ),
            // any publicly issued certificate for any name would pass (libpq
            // refuses it as well): given, or from a [pool.tls] without a ca
            (
                "ssl = \"verify-ca\"\nca = \"system\"",
                "",
                "pool[0].health.ssl",
                "OS trust store",
            ),
            (
                "ssl = \"verify-ca\"",
                "[pool.tls]\nserver_name = \"db.test\"",
                "pool[0].health.ssl",
                "OS trust store",
            ),
        ] {
            let p = match parse_in(&pool(health, more), "t.toml", &dir) {
                Err(ConfigError::Invalid { problems, .. }) => problems[0].clone(),
                other => panic!("{health}: expected an invalid config, got {other:?}"),
            };
            assert_eq!(p.key, key, "{health}: {p:?}");
            assert!(p.message.contains(says), "{health}: {p:?}");
        }
        // keys of postgres checks only
        let p = problem(&GOOD.replace(
            "name = \"api\"\n  [[pool.server]]",
            "name = \"api\"\n[pool.health]\nkind = \"tcp\"\nssl = \"require\"\n  [[pool.server]]",
        ));
        assert_eq!(p.key, "pool[0].health.ssl");
        assert!(p.message.contains("kind = \"postgres\""), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_duration_has_line_and_key() {
        let p = problem(&GOOD.replace("threads = 1", "threads = 1\ndrain_delay = \"5 parsecs\""));
        assert_eq!(p.line, Some(4));
        assert_eq!(p.key, "drain_delay");
    }
}
