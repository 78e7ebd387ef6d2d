//! `rampart import haproxy`: every config of the corpus imports (exit 0 or 3,
//! never a crash or a refusal), `rampart check` accepts every result, and the
//! output and the report match the goldens. The corpus is real configs from
//! public repositories, read in place from ../shared/import-corpus (beside the
//! checkout), plus this project's own examples in tests/import/.
//!
//! `UPDATE_GOLDEN=1 cargo test --test import` rewrites the goldens; review the
//! diff before committing it.

mod common;

use common::tls::Pki;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus_dirs(format: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/import-corpus").join(format);
    assert!(
        shared.is_dir(),
        "the import corpus is not beside the checkout: {} (CI puts ../shared there)",
        shared.display()
    );
    vec![shared, root.join("tests/import").join(format)]
}

fn inputs(format: &str) -> Vec<PathBuf> {
    let ext = if format == "haproxy" { "cfg" } else { "conf" };
    let mut files: Vec<PathBuf> = corpus_dirs(format)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// `rampart check` on an imported config. When it refuses only because files
/// the original names are missing (`PATH: cannot read: No such file`), those
/// are replaced by a real test certificate (or CA) and the check is run again,
/// which must then pass. Returns (accepted, the missing files).
fn check_with_stand_ins(toml: &Path, source: &str, pki: &Pki) -> (bool, Vec<String>) {
    let run = |p: &Path| {
        let o = Command::new(rampart_bin())
            .args(["check", "-c"])
            .arg(p)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let cert = pki.server("stand-in", &["stand-in.example"]);
    let mut text = std::fs::read_to_string(toml).unwrap();
    let mut missing: Vec<String> = Vec::new();
    let current = toml.with_extension("stand-in.toml");
    // a file's second error (its key) shows once its first is fixed: a few rounds
    for _ in 0..4 {
        std::fs::write(&current, &text).unwrap();
        let (ok, err) = run(&current);
        if ok {
            return (true, missing);
        }
        let mut this_round = Vec::new();
        for line in err
            .lines()
            .filter(|l| !l.ends_with("configuration is NOT valid"))
        {
            let Some((rest, _)) = line.split_once(": cannot read: No such file") else {
                eprintln!("{line}\n{text}");
                return (false, missing);
            };
            let path = rest.rsplit(": ").next().unwrap_or_default().to_string();
            if !source.contains(path.rsplit('/').next().unwrap_or(&path)) {
                eprintln!("{line}: a missing file the original does not name");
                return (false, missing);
            }
            this_round.push(path);
        }
        for m in this_round {
            // a CA file stands in as the CA; any other file as a certificate with its key
            let is_ca = text.lines().any(|l| {
                let l = l.trim_start();
                l.contains(m.as_str()) && (l.starts_with("client_ca") || l.starts_with("ca "))
            });
            let with = if is_ca { pki.ca() } else { cert.pem.clone() };
            text = text.replace(
                &format!("\"{m}\""),
                &format!("{:?}", with.display().to_string()),
            );
            if !missing.contains(&m) {
                missing.push(m);
            }
        }
    }
    (false, missing)
}

#[test]
fn every_haproxy_config_imports_and_checks_and_matches_its_golden() {
    corpus("haproxy");
}

#[test]
fn every_nginx_config_imports_and_checks_and_matches_its_golden() {
    corpus("nginx");
}

fn corpus(format: &str) {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/import/golden")
        .join(format);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let out_dir = temp_dir("import");
    let mut ranking: BTreeMap<String, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    let inputs = inputs(format);
    assert!(inputs.len() >= 13, "{} inputs", inputs.len());
    let pki = Pki::new("import");
    let mut missing_files: Vec<String> = Vec::new();
    for input in &inputs {
        let name = input.file_name().unwrap().to_str().unwrap();
        let toml = out_dir.join(format!("{name}.toml"));
        let run = Command::new(rampart_bin())
            .args(["import", format, name, "-o"])
            .arg(&toml)
            .current_dir(input.parent().unwrap())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(
            matches!(run.status.code(), Some(0 | 3)),
            "{name}: exit {:?}\n{report}",
            run.status
        );
        let all_mapped = report
            .lines()
            .all(|l| !l.contains(": approximated: ") && !l.contains(": unsupported: "));
        assert_eq!(
            run.status.code() == Some(0),
            all_mapped,
            "{name}: exit status and report disagree"
        );
        // rampart accepts the result, except for files the original names that
        // are not on this machine (certificates): those are listed, then stood
        // in for by real test certificates, and then rampart must accept it
        let source = std::fs::read_to_string(input).unwrap();
        let (ok, missing) = check_with_stand_ins(&toml, &source, &pki);
        assert!(ok, "{name}: rampart check refused the import (see above)");
        if !missing.is_empty() {
            missing_files.push(format!("{name}: {}", missing.join(", ")));
        }
        // the report: one line per directive, a summary last
        let last = report.lines().last().unwrap_or_default();
        assert!(
            last.contains(" directives: ") && last.contains(" mapped, "),
            "{name}: {last}"
        );
        for l in report
            .lines()
            .filter(|l| l.starts_with(&format!("{name}:")))
        {
            let mut parts = l.splitn(4, ": ");
            let (_, fid, directive) = (parts.next(), parts.next(), parts.next());
            if let (Some(fid), Some(d)) = (fid, directive) {
                let keyword = d.split_whitespace().next().unwrap_or("").to_string();
                let e = ranking.entry(keyword).or_default();
                e.0 += 1;
                *e.1.entry(fid.to_string()).or_default() += 1;
            }
        }
        // the goldens
        let got_toml = std::fs::read_to_string(&toml).unwrap();
        let golden_toml = golden_dir.join(format!("{name}.toml"));
        let golden_report = golden_dir.join(format!("{name}.report"));
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&golden_toml, &got_toml).unwrap();
            std::fs::write(&golden_report, &report).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden_toml).unwrap_or_else(|_| {
                panic!(
                    "no golden {} (UPDATE_GOLDEN=1 writes it)",
                    golden_toml.display()
                )
            });
            assert_eq!(got_toml, want, "{name}: the config differs from its golden");
            let want = std::fs::read_to_string(&golden_report).unwrap();
            assert_eq!(report, want, "{name}: the report differs from its golden");
        }
    }
    eprintln!("configs whose files are not here (checked with test certificates in their place):");
    for m in &missing_files {
        eprintln!("  {m}");
    }
    // the directives by how often they appear, and how they fared
    let mut rows: Vec<_> = ranking.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    eprintln!("directive ranking over {} configs:", inputs.len());
    for (k, (n, by)) in rows.iter().take(25) {
        eprintln!("{n:5} {k:28} {by:?}");
    }
}

#[test]
fn the_kubernetes_postgres_example_maps_its_essentials() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/haproxy/k8s-postgres.cfg");
    let run = Command::new(rampart_bin())
        .args(["import", "haproxy"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let cfg: toml::Value = toml::from_str(&String::from_utf8_lossy(&run.stdout)).unwrap();
    // stats on :8404 became the admin server
    assert_eq!(cfg["admin"]["bind"].as_str(), Some("0.0.0.0:8404"));
    // two tcp listeners to two pools
    let l = cfg["listener"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0]["pool"].as_str(), Some("primary"));
    assert_eq!(l[1]["bind"][0].as_str(), Some("0.0.0.0:5433"));
    // pgsql-check became a postgres check; the template a DNS entry
    let p = cfg["pool"].as_array().unwrap();
    assert_eq!(p[0]["health"]["kind"].as_str(), Some("postgres"));
    assert_eq!(p[0]["health"]["interval"].as_str(), Some("2s"));
    assert_eq!(p[1]["balance"].as_str(), Some("least_conn"));
    assert_eq!(
        p[1]["server"][0]["address"].as_str(),
        Some("pg-replicas.db.svc.cluster.local:5432")
    );
    assert_eq!(cfg["resolver"]["max_ttl"].as_str(), Some("10s"));
    assert_eq!(p[0]["retries"].as_integer(), Some(3));
}

#[test]
fn tls_binds_acls_and_request_rules_map_to_listeners_and_rules() {
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/haproxy/web-tls-rules.cfg");
    let run = Command::new(rampart_bin())
        .args(["import", "haproxy"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let report = String::from_utf8_lossy(&run.stderr);
    let cfg: toml::Value = toml::from_str(&String::from_utf8_lossy(&run.stdout)).unwrap();
    let l = cfg["listener"].as_array().unwrap();
    // `bind :80` and `bind :443 ssl` became a plain and a TLS listener
    assert_eq!(l[0]["bind"][0].as_str(), Some("0.0.0.0:80"));
    assert!(l[0].get("tls").is_none());
    assert_eq!(l[1]["name"].as_str(), Some("web-tls"));
    assert_eq!(
        l[1]["tls"]["cert"][0].as_str(),
        Some("/etc/haproxy/certs/site.pem"),
        "crt-base completes the path"
    );
    assert_eq!(l[1]["tls"]["alpn"][1].as_str(), Some("http/1.1"));
    assert_eq!(l[1]["tls"]["alpn"][2].as_str(), Some("http/1.0"));
    let rules = |i: usize| l[i]["rule"].as_array().unwrap().clone();
    // `redirect scheme https unless { ssl_fc }`: on the plain side, every request
    // (and nothing after it is reachable); not on the TLS side
    let plain = rules(0);
    let last = plain.last().unwrap();
    assert_eq!(last["redirect"]["status"].as_integer(), Some(301));
    assert_eq!(last.as_table().unwrap().len(), 1, "{last:?}");
    assert!(!rules(1).iter().any(|r| r.get("redirect").is_some()));
    // `set-header ... if { ssl_fc }` only on the TLS side
    assert!(rules(1).iter().any(|r| r.get("set_header").is_some()));
    // the ACL with two hosts: two rules to pool api, each after its backend's edit
    let tls = rules(1);
    let api: Vec<&toml::Value> = tls
        .iter()
        .filter(|r| r.get("pool").and_then(|p| p.as_str()) == Some("api"))
        .collect();
    assert_eq!(api.len(), 2);
    assert_eq!(api[1]["host"].as_str(), Some("api2.example.com"));
    let edit = tls
        .iter()
        .position(|r| {
            r.get("set_header")
                .is_some_and(|h| h.get("X-Pool").is_some())
                && r.get("host").and_then(|h| h.as_str()) == Some("api2.example.com")
        })
        .unwrap();
    let route = tls
        .iter()
        .position(|r| {
            r.get("pool").and_then(|p| p.as_str()) == Some("api")
                && r.get("host").and_then(|h| h.as_str()) == Some("api2.example.com")
        })
        .unwrap();
    assert!(edit < route);
    // `{ path_beg /admin } !internal`: everyone outside the two networks
    let deny = tls.iter().find(|r| r.get("deny").is_some()).unwrap();
    assert_eq!(deny["path_prefix"].as_str(), Some("/admin"));
    let src: Vec<&str> = deny["src"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        src.contains(&"11.0.0.0/8") && src.contains(&"::/0") && !src.contains(&"10.0.0.0/8"),
        "{src:?}"
    );
    // the stick table's http_req_rate: 50 per 10 s per client
    let limits = cfg["rate_limit"].as_array().unwrap();
    let rl = limits
        .iter()
        .find(|r| r["key"].as_str() == Some("client_ip"))
        .unwrap();
    assert_eq!(rl["rate"].as_str(), Some("5/s"));
    assert_eq!(rl["burst"].as_integer(), Some(49));
    assert_eq!(rl["max_keys"].as_integer(), Some(100_000));
    // rate-limit sessions: one count for the listener
    assert!(limits
        .iter()
        .any(|r| r["key"].as_str() == Some("all") && r["rate"].as_str() == Some("500/s")));
    assert!(
        report.contains(": approximated: rate-limit sessions 500: "),
        "{report}"
    );
    // accept-proxy, TLS to a server, send-proxy-v2, pgsql-check
    assert_eq!(l[2]["proxy_protocol"]["mode"].as_str(), Some("required"));
    let p = cfg["pool"].as_array().unwrap();
    let st = p
        .iter()
        .find(|p| p["name"].as_str() == Some("static"))
        .unwrap();
    assert_eq!(st["tls"]["server_name"].as_str(), Some("static.internal"));
    assert_eq!(st["tls"]["ca"].as_str(), Some("/etc/haproxy/ca.pem"));
    let pg = p.iter().find(|p| p["name"].as_str() == Some("pg")).unwrap();
    assert_eq!(pg["send_proxy"].as_str(), Some("v2"));
    assert_eq!(pg["health"]["kind"].as_str(), Some("postgres"));
}

#[test]
fn the_nginx_headless_service_example_maps_its_essentials() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/nginx/k8s-headless.conf");
    let run = Command::new(rampart_bin())
        .args(["import", "nginx"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let cfg: toml::Value = toml::from_str(&String::from_utf8_lossy(&run.stdout)).unwrap();
    // the headless Service's name, re-resolved through the cluster DNS
    assert_eq!(
        cfg["resolver"]["nameservers"][0].as_str(),
        Some("10.96.0.10:53")
    );
    assert_eq!(cfg["resolver"]["max_ttl"].as_str(), Some("10s"));
    let pools = cfg["pool"].as_array().unwrap();
    let api = &pools[0];
    assert_eq!(
        api["server"][0]["address"].as_str(),
        Some("api.default.svc.cluster.local:8080")
    );
    assert_eq!(api["balance"].as_str(), Some("least_conn"));
    assert_eq!(api["breaker"]["consecutive_failures"].as_integer(), Some(3));
    // the server block's proxy settings reach the pools its locations use
    assert_eq!(api["connect_timeout"].as_str(), Some("2s"));
    assert_eq!(api["retries"].as_integer(), Some(2));
    assert!(api["retry_on"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some("503")));
    let l = cfg["listener"].as_array().unwrap();
    // :80 only redirects; :443 is TLS with the certificate and its key
    assert_eq!(
        l[0]["rule"][0]["redirect"]["status"].as_integer(),
        Some(301)
    );
    assert_eq!(
        l[1]["tls"]["cert"][0]["key"].as_str(),
        Some("/etc/nginx/tls/tls.key")
    );
    // nginx's location precedence: exact, ^~, regex, then prefixes longest first
    let rules = l[1]["rule"].as_array().unwrap();
    let first_of = |k: &str| rules.iter().position(|r| r.get(k).is_some()).unwrap();
    assert!(first_of("path") < first_of("path_regex"));
    let admin = rules
        .iter()
        .position(|r| r.get("path_prefix").and_then(|p| p.as_str()) == Some("/admin/"))
        .unwrap();
    assert!(admin < first_of("path_regex"));
    // allow 10/8; deny all: everyone else is denied
    assert_eq!(rules[admin]["deny"].as_integer(), Some(403));
    assert!(rules[admin]["src"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some("11.0.0.0/8")));
    // limit_req in location / : the last rule, so /v0/ (its own location) is not limited
    assert_eq!(rules.last().unwrap()["rate_limit"].as_str(), Some("perip"));
    assert_eq!(cfg["rate_limit"][0]["burst"].as_integer(), Some(40));
    // the stream block: a tcp listener
    assert_eq!(l[2]["mode"].as_str(), Some("tcp"));
    assert_eq!(l[2]["pool"].as_str(), Some("pg_primary"));
}

/// rampart's nginx tokenizer reads every config of the corpus as crossplane
/// (NGINX's own parser, from PyPI) does: the same directives, arguments and
/// lines. `scripts/nginx-oracle.py` wrote the expected dumps.
#[test]
fn the_nginx_parser_agrees_with_crossplane_on_the_corpus() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/golden/nginx");
    for input in inputs("nginx") {
        let name = input.file_name().unwrap().to_str().unwrap();
        let src = String::from_utf8_lossy(&std::fs::read(&input).unwrap()).into_owned();
        let ours = rampart::import::nginx_parse::parse(&src)
            .map(|d| crossplane_dump(&d))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = std::fs::read_to_string(golden_dir.join(format!("{name}.parse")))
            .unwrap_or_else(|_| panic!("no crossplane dump for {name} (scripts/nginx-oracle.py)"));
        for (i, (a, b)) in ours.lines().zip(want.lines()).enumerate() {
            assert_eq!(a, b, "{name}: directive {i} differs from crossplane's");
        }
        assert_eq!(
            ours.lines().count(),
            want.lines().count(),
            "{name}: directive count"
        );
    }
}

/// `--verify` on every config of the corpus: the original (haproxy or nginx
/// from apt) and rampart with the result, side by side in front of the same
/// local backends; every request the rules name must get the same pool, status
/// and redirect from both. Configs the original itself cannot load here are
/// listed with why.
#[test]
fn every_converted_config_routes_like_its_original() {
    let mut compared = 0;
    let mut not_run = Vec::new();
    let mut failures = Vec::new();
    for format in ["haproxy", "nginx"] {
        for input in inputs(format) {
            let name = input.file_name().unwrap().to_str().unwrap().to_string();
            let out = temp_dir("verify").join("out.toml");
            let run = Command::new(rampart_bin())
                .args(["import", format])
                .arg(&input)
                .arg("--verify")
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&run.stderr).into_owned();
            let verdict: Vec<&str> = err.lines().filter(|l| l.starts_with("verify:")).collect();
            match run.status.code() {
                Some(0 | 3) => {
                    let summary = verdict.last().copied().unwrap_or_default();
                    let n: usize = summary
                        .trim_start_matches("verify: ")
                        .split(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{name}: {summary}"));
                    eprintln!("{format} {name}: {summary}");
                    compared += n;
                }
                Some(5) => not_run.push(format!("{format} {name}: {}", verdict.join(" "))),
                _ => failures.push(format!("{format} {name}:\n{}", verdict.join("\n"))),
            }
        }
    }
    eprintln!("not compared (the original does not load here):");
    for n in &not_run {
        eprintln!("  {n}");
    }
    assert!(
        failures.is_empty(),
        "requests routed differently:\n{}",
        failures.join("\n")
    );
    assert!(compared >= 200, "only {compared} requests compared");
    assert!(not_run.len() <= 2, "{not_run:#?}");
}

/// The comparison finds what differs: HAProxy's `redirect scheme https` keeps
/// the Host's port, rampart's {host} does not (the import says so, as
/// approximated), and a request with a port in its Host shows it.
#[test]
fn verify_reports_a_request_that_routes_differently() {
    let dir = temp_dir("verify-diff");
    let reqs = dir.join("requests");
    std::fs::write(&reqs, "# a Host with a port\nGET shop.example:8080 /cart\n").unwrap();
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/haproxy/web-tls-rules.cfg");
    let run = Command::new(rampart_bin())
        .args(["import", "haproxy"])
        .arg(&input)
        .arg("--verify")
        .arg("--requests")
        .arg(&reqs)
        .arg("-o")
        .arg(dir.join("out.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{err}");
    let diff: Vec<&str> = err.lines().filter(|l| l.contains("DIFFERS")).collect();
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].contains("location=https://shop.example:8080/cart")
            && diff[0].contains("rampart 301 location=https://shop.example/cart"),
        "{}",
        diff[0]
    );
}

/// The inputs the importers' fuzz targets once crashed on (fuzz/regressions):
/// each imports into a config rampart's loader accepts, but for files that
/// are not there.
#[test]
fn fuzz_regressions_import_into_configs_rampart_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    for (format, dir) in [("haproxy", "import_haproxy"), ("nginx", "import_nginx")] {
        for f in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = f.unwrap().path();
            let src = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let out = if format == "haproxy" {
                rampart::import::haproxy::import(&src, "fuzz.cfg")
            } else {
                rampart::import::nginx::import(&src, "fuzz.conf")
            };
            if let Err(rampart::config::ConfigError::Invalid { problems, .. }) =
                rampart::config::parse_in(&out.toml, "imported.toml", Path::new("/nonexistent"))
            {
                for p in &problems {
                    assert!(
                        p.message.contains("cannot read"),
                        "{}: {p:?}",
                        path.display()
                    );
                }
            }
            n += 1;
        }
    }
    assert!(n >= 4, "{n} regression inputs");
}

/// One line per directive, `name@line|arg|arg...`, blocks flattened in
/// order: the format of crossplane (NGINX's own Python parser) dumps, which
/// this file compares with (scripts/nginx-oracle.py writes them).
/// Control characters are written as the escapes nginx decodes them from
/// (crossplane keeps them escaped).
fn crossplane_dump(ds: &[rampart::import::nginx_parse::Directive]) -> String {
    fn esc(a: &str) -> String {
        a.replace('\n', "\\n")
            .replace('\t', "\\t")
            .replace('\r', "\\r")
    }
    fn go(ds: &[rampart::import::nginx_parse::Directive], out: &mut String) {
        for d in ds {
            let args: Vec<String> = d.args.iter().map(|a| esc(a)).collect();
            out.push_str(&format!("{}@{}|{}\n", d.name, d.line, args.join("|")));
            if let Some(b) = &d.block {
                go(b, out);
            }
        }
    }
    let mut out = String::new();
    go(ds, &mut out);
    out
}
