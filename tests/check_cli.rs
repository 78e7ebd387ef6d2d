//! `rampart check`: every broken config is refused with its key and line; every
//! example config in config/ is valid.

mod common;

use std::process::Command;
use std::time::Duration;

const BASE: &str = r#"[global]
threads = 1

[admin]
bind = "127.0.0.1:8404"

[[listener]]
name = "web"
bind = ["127.0.0.1:8080"]
mode = "http"
pool = "api"

[[pool]]
name = "api"
  [[pool.server]]
  address = "127.0.0.2:8000"
"#;

fn check(text: &str) -> (bool, String, String) {
    let dir = common::temp_dir("check");
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(common::rampart_bin())
        .args(["check", "-c"])
        .arg(&path)
        // set, but empty: a secret that is no secret
        .env("RAMPART_TEST_EMPTY", "")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_base_config_is_valid() {
    let (ok, stdout, stderr) = check(BASE);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("configuration is valid: 1 listener(s), 1 pool(s), 1 server(s)"),
        "{stdout}"
    );
}

#[test]
fn unreachable_rules_are_reported() {
    let text = BASE.replace(
        "pool = \"api\"\n",
        "pool = \"api\"\n  [[listener.rule]]\n  path = \"/a\"\n  deny = 403\n  [[listener.rule]]\n  redirect = { to = \"https://{host}{uri}\" }\n  [[listener.rule]]\n  path = \"/b\"\n  deny = 404\n",
    );
    let (ok, _, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("listener[0].rule[1]: matches every request and decides it: rule[2] after it is never reached"),
        "{stderr}"
    );
    // an unconditional rule without a terminal action hides nothing
    let text = BASE.replace(
        "pool = \"api\"\n",
        "pool = \"api\"\n  [[listener.rule]]\n  set_header = { \"x-a\" = \"1\" }\n  [[listener.rule]]\n  path = \"/b\"\n  deny = 404\n",
    );
    let (ok, _, stderr) = check(&text);
    assert!(ok && !stderr.contains("never reached"), "{stderr}");
}

#[test]
fn broken_configs_name_key_and_line() {
    // (what, edit of BASE, key that must be named, line that must be named)
    let cases: &[(&str, &str, &str, &str, u32)] = &[
        ("unknown key", "threads = 1", "threads = 1\nthreadz = 4", "threadz", 3),
        ("bad duration", "threads = 1", "threads = 1\nshutdown_grace = \"30 seconds\"", "shutdown_grace", 3),
        ("bad listen address", "bind = [\"127.0.0.1:8080\"]", "bind = [\"127.0.0.1:80800\"]", "bind", 9),
        ("unknown mode", "mode = \"http\"", "mode = \"udp\"", "mode", 10),
        ("unknown balance", "name = \"api\"\n", "name = \"api\"\nbalance = \"fastest\"\n", "balance", 15),
        ("pool that does not exist", "pool = \"api\"", "pool = \"apii\"", "listener[0].pool", 11),
        (
            "route to a pool that does not exist",
            "pool = \"api\"\n",
            "pool = \"api\"\n  [[listener.route]]\n  path_prefix = \"/v1\"\n  pool = \"v1\"\n",
            "listener[0].route[0].pool",
            14,
        ),
        (
            "two listeners on one address",
            "[[pool]]",
            "[[listener]]\nname = \"web2\"\nbind = [\"127.0.0.1:8080\"]\nmode = \"tcp\"\npool = \"api\"\n\n[[pool]]",
            "listener[1].bind[0]",
            15,
        ),
        (
            "listener on the admin address",
            "bind = [\"127.0.0.1:8080\"]",
            "bind = [\"127.0.0.1:8404\"]",
            "listener[0].bind[0]",
            9,
        ),
        ("weight out of range", "address = \"127.0.0.2:8000\"", "address = \"127.0.0.2:8000\"\n  weight = 300", "pool[0].server[0].weight", 17),
        ("server address without port", "address = \"127.0.0.2:8000\"", "address = \"127.0.0.2\"", "pool[0].server[0].address", 16),
        ("missing key", "mode = \"http\"\n", "", "mode", 7),
        ("duplicate pool", "  address = \"127.0.0.2:8000\"\n", "  address = \"127.0.0.2:8000\"\n[[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"127.0.0.3:8000\"\n", "pool[1].name", 18),
        ("hash_key without hash balance", "name = \"api\"\n", "name = \"api\"\nhash_key = \"uri\"\n", "pool[0].hash_key", 15),
        ("bad hash_key", "name = \"api\"\n", "name = \"api\"\nbalance = \"hash\"\nhash_key = \"cookie\"\n", "hash_key", 16),
        ("zero connect timeout", "name = \"api\"\n", "name = \"api\"\nconnect_timeout = \"0s\"\n", "pool[0].connect_timeout", 15),
        ("zero client timeout", "pool = \"api\"\n", "pool = \"api\"\nclient_timeout = \"0s\"\n", "listener[0].client_timeout", 12),
        ("route in tcp mode", "mode = \"http\"\npool = \"api\"\n", "mode = \"tcp\"\npool = \"api\"\n  [[listener.route]]\n  pool = \"api\"\n", "listener[0].route[0]", 12),
        ("bad route host", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.route]]\n  host = \"http://x\"\n  pool = \"api\"\n", "listener[0].route[0].host", 13),
        ("path_prefix without slash", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.route]]\n  path_prefix = \"v1\"\n  pool = \"api\"\n", "listener[0].route[0].path_prefix", 13),
        ("not TOML at all", "[global]", "[global", "", 1),
        ("bad rule regex", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path_regex = \"^/a(\"\n  deny = 403\n", "listener[0].rule[0].path_regex", 13),
        ("rule to a pool that does not exist", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path = \"/x\"\n  pool = \"nope\"\n", "listener[0].rule[0].pool", 14),
        ("rule with two terminal actions", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  deny = 403\n  pool = \"api\"\n", "listener[0].rule[0]", 12),
        ("rule that does nothing", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path = \"/x\"\n", "listener[0].rule[0]", 12),
        ("deny with a success status", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  deny = 200\n", "listener[0].rule[0].deny", 13),
        ("client_ip_header that rampart writes", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_header = \"X-Forwarded-For\"\n", "listener[0].client_ip_header", 12),
        ("client_ip_from without from", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_from = { header = \"X-Real-IP\" }\n", "listener[0].client_ip_from.from", 12),
        ("client_ip_from bad network", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_from = { from = [\"10.0.0.0/40\"] }\n", "listener[0].client_ip_from.from[0]", 12),
        ("client_ip_from Host", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_from = { from = [\"10.0.0.0/8\"], header = \"Host\" }\n", "listener[0].client_ip_from.header", 12),
        ("client_ip_from on tcp", "mode = \"http\"\npool = \"api\"\n", "mode = \"tcp\"\npool = \"api\"\nclient_ip_from = { from = [\"10.0.0.0/8\"] }\n", "listener[0].client_ip_from", 12),
        ("client_ip_from misspelt", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_from = { form = [\"10.0.0.0/8\"] }\n", "form", 12),
        ("compression level", "pool = \"api\"\n", "pool = \"api\"\ncompression = { level = 10 }\n", "listener[0].compression.level", 12),
        ("compression type", "pool = \"api\"\n", "pool = \"api\"\ncompression = { types = [\"text/html\", \"html\"] }\n", "listener[0].compression.types[1]", 12),
        ("compression without types", "pool = \"api\"\n", "pool = \"api\"\ncompression = { types = [] }\n", "listener[0].compression.types", 12),
        ("compression on tcp", "mode = \"http\"\npool = \"api\"\n", "mode = \"tcp\"\npool = \"api\"\ncompression = {}\n", "listener[0].compression", 12),
        ("client_ip_header not a name", "pool = \"api\"\n", "pool = \"api\"\nclient_ip_header = \"x real ip\"\n", "listener[0].client_ip_header", 12),
        ("respond with an informational status", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  respond = { status = 101 }\n", "listener[0].rule[0].respond.status", 13),
        ("respond 204 with a body", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  respond = { status = 204, body = \"x\" }\n", "listener[0].rule[0].respond.body", 13),
        ("respond with a bad content type", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  respond = { content_type = \"text/plain\\n\" }\n", "listener[0].rule[0].respond.content_type", 13),
        ("respond and a pool", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  respond = { body = \"ok\" }\n  pool = \"api\"\n", "listener[0].rule[0]", 12),
        ("rewrite_prefix without a prefix", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_prefix = \"/\"\n", "listener[0].rule[0].rewrite_prefix", 13),
        ("rewrite_prefix without a slash", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path_prefix = \"/api/\"\n  rewrite_prefix = \"v2/\"\n", "listener[0].rule[0].rewrite_prefix", 14),
        ("rewrite_prefix on a not rule", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path_prefix = \"/api/\"\n  not = true\n  rewrite_prefix = \"/\"\n", "listener[0].rule[0].rewrite_prefix", 15),
        ("rewrite_prefix with a query", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path_prefix = \"/api/\"\n  rewrite_prefix = \"/x?a=1\"\n", "listener[0].rule[0].rewrite_prefix", 14),
        ("rewrite_path bad regex", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_path = { regex = \"^/a(\", to = \"/\" }\n", "listener[0].rule[0].rewrite_path.regex", 13),
        ("rewrite_path unknown group", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_path = { regex = \"^/a/(.*)\", to = \"/b/$2\" }\n", "listener[0].rule[0].rewrite_path.to", 13),
        ("rewrite_path group run into text", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_path = { regex = \"^/a/(.*)\", to = \"/b/$1x\" }\n", "listener[0].rule[0].rewrite_path.to", 13),
        ("rewrite_path encoded", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_path = { regex = \"^/a/(.*)\", to = \"/b%20/$1\" }\n", "listener[0].rule[0].rewrite_path.to", 13),
        ("rewrite_path misspelt", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rewrite_path = { regex = \"^/a\", too = \"/\" }\n", "too", 13),
        ("two path rewrites", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  path_prefix = \"/a\"\n  rewrite_prefix = \"/\"\n  rewrite_path = { regex = \"^/a\", to = \"/\" }\n", "listener[0].rule[0]", 12),
        ("response_replace_header bad regex", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  response_replace_header = { name = \"Location\", regex = \"^http://(\", to = \"/\" }\n", "listener[0].rule[0].response_replace_header.regex", 13),
        ("response_replace_header unknown group", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  response_replace_header = { name = \"Location\", regex = \"^http://a/(.*)$\", to = \"/$2\" }\n", "listener[0].rule[0].response_replace_header.to", 13),
        ("response_replace_header framing field", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  response_replace_header = { name = \"Content-Length\", regex = \"1\", to = \"2\" }\n", "listener[0].rule[0].response_replace_header.name", 13),
        ("response_replace_header second of a list", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  response_replace_header = [\n    { name = \"Location\", regex = \"a\", to = \"b\" },\n    { name = \"x y\", regex = \"a\", to = \"b\" },\n  ]\n", "listener[0].rule[0].response_replace_header[1].name", 15),
        ("response_replace_header misspelt", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  response_replace_header = { name = \"Location\", regex = \"a\", too = \"b\" }\n", "too", 13),
        ("respond with a misspelt key", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  respond = { stauts = 200 }\n", "stauts", 13),
        ("redirect status", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  redirect = { to = \"https://{host}/\", status = 200 }\n", "listener[0].rule[0].redirect.status", 13),
        ("redirect variable", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  redirect = { to = \"https://{hots}/\" }\n", "listener[0].rule[0].redirect.to", 13),
        ("rule deletes Host", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  del_header = [\"host\"]\n", "listener[0].rule[0].del_header[0]", 13),
        ("rule deletes X-Forwarded-Proto", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  del_header = [\"x-forwarded-proto\"]\n", "listener[0].rule[0].del_header[0]", 13),
        ("rule sets X-Forwarded-Proto", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  set_header = { \"x-forwarded-proto\" = \"https\" }\n", "listener[0].rule[0].set_header", 13),
        ("rule edits a framing header", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  set_header = { \"content-length\" = \"1\" }\n", "listener[0].rule[0].set_header", 13),
        ("rule source that is not a network", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  src = [\"10.0.0.0/33\"]\n  deny = 403\n", "listener[0].rule[0].src[0]", 13),
        ("unknown priority", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  priority = \"urgent\"\n", "listener[0].rule[0].priority", 13),
        ("shed_after without a connection limit", "name = \"api\"\n", "name = \"api\"\nshed_after = \"50ms\"\n", "pool[0].shed_after", 15),
        ("rate limit store url", "[[pool]]", "[rate_limit_store]\nkind = \"redis\"\nurl = \"http://127.0.0.1:6379\"\n\n[[pool]]", "rate_limit_store.url", 15),
        ("rate limit store share", "[[pool]]", "[rate_limit_store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nfallback_share = 1.5\n\n[[pool]]", "rate_limit_store.fallback_share", 16),
        ("circuit failure rate", "name = \"api\"\n", "name = \"api\"\n[pool.circuit]\nfailure_rate = 0\n", "pool[0].circuit.failure_rate", 16),
        ("circuit window", "name = \"api\"\n", "name = \"api\"\n[pool.circuit]\nwindow = \"100ms\"\n", "pool[0].circuit.window", 16),
        ("read_only_when naming no pool", "pool = \"api\"\n", "pool = \"api\"\nread_only_when = [\"pool:pg\"]\n", "listener[0].read_only_when[0]", 12),
        ("read_only_when without pool:", "pool = \"api\"\n", "pool = \"api\"\nread_only_when = [\"api\"]\n", "listener[0].read_only_when[0]", 12),
        ("read_only_status without read_only_when", "pool = \"api\"\n", "pool = \"api\"\nread_only_status = 503\n", "listener[0].read_only_status", 12),
        ("rule naming no rate limit", "pool = \"api\"\n", "pool = \"api\"\n  [[listener.rule]]\n  rate_limit = \"nope\"\n", "listener[0].rule[0].rate_limit", 13),
        ("bad rate", "[[pool]]", "[[rate_limit]]\nname = \"x\"\nrate = \"100 per second\"\n\n[[pool]]", "rate_limit[0].rate", 15),
        ("bad rate key", "[[pool]]", "[[rate_limit]]\nname = \"x\"\nkey = \"cookie\"\nrate = \"1/s\"\n\n[[pool]]", "rate_limit[0].key", 15),
        ("rate limit without rate or quota", "[[pool]]", "[[rate_limit]]\nname = \"x\"\n\n[[pool]]", "rate_limit[0]", 13),
        ("bad quota", "[[pool]]", "[[rate_limit]]\nname = \"x\"\nquota = \"100/week\"\n\n[[pool]]", "rate_limit[0].quota", 15),
        ("rules on a tcp listener", "mode = \"http\"\npool = \"api\"\n", "mode = \"tcp\"\npool = \"api\"\n  [[listener.rule]]\n  deny = 403\n", "listener[0].rule[0]", 12),
        (
            "health key of another kind",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"tcp\"\npath = \"/x\"\n",
            "pool[0].health.path",
            17,
        ),
        ("unknown retry condition", "name = \"api\"\n", "name = \"api\"\nretry_on = [\"sometimes\"]\n", "pool[0].retry_on[0]", 15),
        (
            "password variable not set",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"postgres\"\npassword_env = \"RAMPART_TEST_SURELY_UNSET\"\n",
            "pool[0].health.password_env",
            17,
        ),
        (
            "password variable empty",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"postgres\"\npassword_env = \"RAMPART_TEST_EMPTY\"\n",
            "pool[0].health.password_env",
            17,
        ),
        (
            "unknown postgres ssl mode",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"postgres\"\nssl = \"sometimes\"\n",
            "pool[0].health.ssl",
            17,
        ),
        (
            "postgres verify-full without a CA",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"postgres\"\nssl = \"verify-full\"\n",
            "pool[0].health.ssl",
            17,
        ),
        (
            "bad expect_status",
            "name = \"api\"\n",
            "name = \"api\"\n[pool.health]\nkind = \"http\"\nexpect_status = \"2xx\"\n",
            "pool[0].health.expect_status",
            17,
        ),
        ("SRV name with a port", "address = \"127.0.0.2:8000\"", "address = \"_http._tcp.api.test:80\"", "pool[0].server[0].address", 16),
        ("name without a port", "address = \"127.0.0.2:8000\"", "address = \"api.test\"", "pool[0].server[0].address", 16),
        (
            "name on a DNS entry",
            "address = \"127.0.0.2:8000\"",
            "address = \"api.test:8000\"\n  name = \"x\"",
            "pool[0].server[0].name",
            17,
        ),
        ("unknown resolver key", "[admin]", "[resolver]\nnameserver = [\"127.0.0.1:53\"]\n\n[admin]", "nameserver", 5),
        ("bad on_empty", "[admin]", "[resolver]\non_empty = \"drop\"\n\n[admin]", "on_empty", 5),
        (
            "ha without a key",
            "[admin]",
            "[ha]\ninterface = \"eth0\"\nvips = [\"192.0.2.100/24\"]\nnode_id = \"a\"\npriority = 100\nbind = \"192.0.2.1:5405\"\npeers = [\"192.0.2.2:5405\"]\n\n[admin]",
            "ha",
            4,
        ),
        (
            "ha priority out of range",
            "[admin]",
            "[ha]\ninterface = \"eth0\"\nvips = [\"192.0.2.100/24\"]\nnode_id = \"a\"\npriority = 255\nbind = \"192.0.2.1:5405\"\npeers = [\"192.0.2.2:5405\"]\nauth = \"none\"\n\n[admin]",
            "ha.priority",
            8,
        ),
        (
            "ha bad vip",
            "[admin]",
            "[ha]\ninterface = \"eth0\"\nvips = [\"192.0.2.100\"]\nnode_id = \"a\"\npriority = 100\nbind = \"192.0.2.1:5405\"\npeers = [\"192.0.2.2:5405\"]\nauth = \"none\"\n\n[admin]",
            "ha.vips[0]",
            6,
        ),
        (
            "ha track of a missing pool",
            "[admin]",
            "[ha]\ninterface = \"eth0\"\nvips = [\"192.0.2.100/24\"]\nnode_id = \"a\"\npriority = 100\nbind = \"192.0.2.1:5405\"\npeers = [\"192.0.2.2:5405\"]\nauth = \"none\"\ntrack = [\"pool:nope\"]\n\n[admin]",
            "ha.track[0]",
            12,
        ),
        (
            "two servers with one name",
            "  address = \"127.0.0.2:8000\"\n",
            "  address = \"127.0.0.2:8000\"\n  name = \"web\"\n  [[pool.server]]\n  address = \"127.0.0.3:8000\"\n  name = \"web\"\n",
            "pool[0].server[1].name",
            20,
        ),
        (
            "ha bind on a wildcard",
            "[admin]",
            "[ha]\ninterface = \"eth0\"\nvips = [\"192.0.2.100/24\"]\nnode_id = \"a\"\npriority = 100\nbind = \"0.0.0.0:5405\"\npeers = [\"192.0.2.2:5405\"]\nauth = \"none\"\n\n[admin]",
            "ha.bind",
            9,
        ),
        ("bad retry_buffer", "name = \"api\"\n", "name = \"api\"\nretry_buffer = \"lots\"\n", "retry_buffer", 15),
        ("retry_buffer too large", "name = \"api\"\n", "name = \"api\"\nretry_buffer = \"4096MiB\"\n", "pool[0].retry_buffer", 15),
        ("burst without rate", "[[pool]]", "[[rate_limit]]\nname = \"x\"\nquota = \"100/day\"\nburst = 5\n\n[[pool]]", "rate_limit[0].burst", 16),
        ("breaker percent", "name = \"api\"\n", "name = \"api\"\n[pool.breaker]\nmax_ejected_percent = 150\n", "pool[0].breaker.max_ejected_percent", 16),
    ];
    for (what, from, to, key, line) in cases {
        assert!(BASE.contains(from), "case {what:?}: BASE lacks {from:?}");
        let text = BASE.replacen(from, to, 1);
        let (ok, _stdout, stderr) = check(&text);
        assert!(!ok, "case {what:?} was accepted:\n{text}");
        assert!(
            stderr.contains(key),
            "case {what:?}: stderr does not name {key:?}:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("t.toml:{line}:")),
            "case {what:?}: stderr does not name line {line}:\n{stderr}"
        );
        assert!(stderr.contains("configuration is NOT valid"), "{stderr}");
    }
}

#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let out = Command::new(common::rampart_bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // and through the library
        rampart::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(n >= 2, "config/ should hold example configs, found {n}");
}

#[test]
fn run_refuses_a_broken_config_with_exit_code_1() {
    let dir = common::temp_dir("run-broken");
    let path = dir.join("t.toml");
    std::fs::write(
        &path,
        BASE.replace("pool = \"api\"\n\n", "pool = \"nope\"\n\n"),
    )
    .unwrap();
    // (a run that starts after all would never exit: killed at the deadline)
    let out = common::output_within(
        Command::new(common::rampart_bin())
            .args(["run", "-c"])
            .arg(&path),
        Duration::from_secs(30),
        "rampart run with a broken config",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool \"nope\" is not defined"));
}

#[test]
fn run_reports_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = common::temp_dir("run-inuse");
    let path = dir.join("t.toml");
    std::fs::write(&path, BASE.replace("127.0.0.1:8080", &addr.to_string())).unwrap();
    let out = common::output_within(
        Command::new(common::rampart_bin())
            .args(["run", "-c"])
            .arg(&path),
        Duration::from_secs(30),
        "rampart run on an address in use",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener \"web\": cannot listen on") && err.contains(&addr.to_string()),
        "{err}"
    );
}

/// `rampart quota reset` without a KEY is a usage error: on stderr, exit 2 (as
/// clap's own), and nothing asked of the admin API (unreachable here). Before,
/// it printed to stdout and exited 0, which a script takes for a reset.
#[test]
fn quota_reset_without_a_key_is_a_usage_error() {
    let out = Command::new(common::rampart_bin())
        .args(["quota", "reset", "--admin", "http://127.0.0.1:1"])
        .env_remove("RAMPART_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("KEY") && !stderr.contains("cannot reach"),
        "{stderr}"
    );
}
