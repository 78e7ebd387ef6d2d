//! `rampart import haproxy`: every config of the corpus imports (exit 0 or 3,
//! never a crash or a refusal), `rampart check` accepts every result, and the
//! output and the report match the goldens. The corpus is real configs from
//! public repositories, read in place from ../shared/import-corpus (beside the
//! checkout), plus this project's own examples in tests/import/.
//!
//! `UPDATE_GOLDEN=1 cargo test --test import` rewrites the goldens; review the
//! diff before committing it.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/import-corpus/haproxy");
    assert!(
        shared.is_dir(),
        "the import corpus is not beside the checkout: {} (CI puts ../shared there)",
        shared.display()
    );
    vec![shared, root.join("tests/import/haproxy")]
}

fn inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = corpus_dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_haproxy_config_imports_and_checks_and_matches_its_golden() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/golden/haproxy");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let out_dir = temp_dir("import");
    let mut ranking: BTreeMap<String, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    let inputs = inputs();
    assert!(inputs.len() >= 13, "{} inputs", inputs.len());
    for input in &inputs {
        let name = input.file_name().unwrap().to_str().unwrap();
        let toml = out_dir.join(format!("{name}.toml"));
        let run = Command::new(rampart_bin())
            .args(["import", "haproxy", name, "-o"])
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
        // rampart accepts the result
        let check = Command::new(rampart_bin())
            .args(["check", "-c"])
            .arg(&toml)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: rampart check refused the import:\n{}\n{}",
            String::from_utf8_lossy(&check.stderr),
            std::fs::read_to_string(&toml).unwrap()
        );
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
