//! The failover demo (scripts/demo-failover.sh --quick) runs to its table: the
//! Kubernetes world from Debian packages (dnsmasq, nginx pods, a PostgreSQL
//! primary with two streaming replicas), the phases through rampart and then
//! through nginx's classic config. The script exits non-zero when a rampart
//! phase has a failed request or never reaches the restored or new target;
//! this test also reads the table itself.

mod common;

use common::*;
use std::process::Command;

#[test]
fn the_failover_demo_runs_clean_through_rampart() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new("bash")
        .arg(root.join("scripts/demo-failover.sh"))
        .arg("--quick")
        .env("RAMPART", rampart_bin())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    let tail: String = out
        .lines()
        .rev()
        .take(14)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    // and the requests that failed through rampart, with their time and phase
    // (the table only counts them)
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("[rampart") && l.contains("ERR"))
        .collect();
    let tail = format!("{tail}\nfailed through rampart: {failed:#?}");
    assert!(run.status.success(), "{tail}\n{err}");
    // the table: every rampart phase ran requests, with no error; the restored
    // replica, the restored pod and the new pod were reached
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("rampart ") || l.starts_with("nginx "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let ours: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == "rampart").collect();
    assert_eq!(ours.len(), 4, "{tail}");
    for r in &ours {
        let requests: usize = r[2].parse().unwrap();
        assert!(requests >= 5, "phase {}: {requests} requests\n{tail}", r[1]);
        assert_eq!(r[3], "0", "phase {}: errors\n{tail}", r[1]);
        if r[1] != "0" {
            assert!(
                r[4].parse::<f64>().is_ok(),
                "phase {}: {}\n{tail}",
                r[1],
                r[4]
            );
        }
    }
    // and the comparison ran: nginx's classic config keeps the stale address
    let c = rows
        .iter()
        .find(|r| r[0] == "nginx" && r[1] == "C")
        .unwrap_or_else(|| panic!("{tail}"));
    eprintln!("{tail}");
    eprintln!("nginx phase C: {} of {} requests failed", c[3], c[2]);
}
